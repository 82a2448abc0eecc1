"""Sum, Mean, Max and Min: one running float64 statistic each, on TorchMetrics' own aggregators.

They subclass :mod:`torchmetrics.aggregation` (``SumMetric``, ``MeanMetric``, ``MaxMetric``,
``MinMetric``) and keep TorchMetrics' states and reductions, with three changes: states are
float64 (counts and sums reach 1e9+), a batch is validated before any state changes
(``validate_args=True``: a non-number, NaN or inf is a ``TypeError``/``ValueError`` and the
metric is left exactly as it was), and an undefined value (mean of zero weight, extreme of no
value) is ``nan`` with an :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`
instead of TorchMetrics' ``nan``/``-inf`` without a word. Batches of plain values fold through
:class:`~torchmetrics_ext.aggregation.base.AggregationMetric`'s ``summarize``/``fold``, summed
exactly with ``math.fsum``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric, SumMetric

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import as_values, exact_sum
from torchmetrics_ext.functional.distribution import _check_finite
from torchmetrics_ext.utilities.warnings import safe_divide, warn_undefined

__all__ = ["ExtremeBatch", "Max", "Mean", "MeanBatch", "Min", "Sum", "SumBatch"]

NanStrategy = Literal["error", "warn", "ignore", "disable"] | float
Values = float | int | Tensor | Sequence[float]
S = TypeVar("S")


class SumBatch(NamedTuple):
    """A batch's sum."""

    total: Tensor | float


class MeanBatch(NamedTuple):
    """A batch's weighted sum and total weight."""

    weighted_sum: Tensor | float
    weight: Tensor | float


class ExtremeBatch(NamedTuple):
    """A batch's maximum (for :class:`Max`) or minimum (for :class:`Min`)."""

    value: Tensor | float


class _ValueAggregation(AggregationMetric[S]):
    """Shared plumbing: float64 states, validation of ``value`` (and ``weight``) before any state changes."""

    higher_is_better = None
    nan_strategy: NanStrategy

    def __init__(self, nan_strategy: NanStrategy = "error", *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(1, validate_args=validate_args, nan_strategy=nan_strategy, **kwargs)
        self.set_dtype(torch.float64)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> nn.Module:
        # TorchMetrics resets ``self.dtype`` to float32 on ``.to(device)``; inputs are cast to
        # ``self.dtype``, so keep float64 unless the dtype is changed on purpose (``set_dtype``).
        dtype = self._dtype
        this = super()._apply(fn, exclude_state)
        if not self._dtype_convert:
            self._dtype = dtype
        return this

    def _prepare(self, value: Values, weight: Values | None = None) -> tuple[Tensor, Tensor | None]:
        """Float64 values (and weights) after TorchMetrics' cast and NaN handling."""
        if weight is None:
            return self._cast_and_nan_check_input(value)[0], None  # type: ignore[operator]
        values = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weights = torch.broadcast_to(torch.as_tensor(weight, dtype=self.dtype, device=self.device), values.shape)
        return self._cast_and_nan_check_input(values, weights)  # type: ignore[operator]

    def _validate(self, value: Values, weight: Values | None = None) -> None:
        values = as_values("value", value)
        _check_finite("value", values, allow_nan=self.nan_strategy != "error")
        if weight is not None:
            weights = as_values("weight", weight)
            try:
                torch.broadcast_shapes(weights.shape, values.shape)
            except RuntimeError:
                raise ValueError(
                    f"Expected `weight` broadcastable to `value` of shape {tuple(values.shape)}, "
                    f"got shape {tuple(weights.shape)}."
                ) from None
            _check_finite("weight", weights, allow_nan=self.nan_strategy != "error")
            if weights.numel() and bool((weights < 0).any()):
                raise ValueError("Expected `weight` to be non-negative, got negative values.")


class Sum(_ValueAggregation[SumBatch], SumMetric):
    r"""Running sum :math:`\sum_i x_i` in float64 (TorchMetrics' ``SumMetric`` with checked inputs).

    Args:
        nan_strategy: TorchMetrics' NaN handling (``"error"``, ``"warn"``, ``"ignore"``,
            ``"disable"`` or a fill value). With the default ``"error"`` a NaN is rejected.
        validate_args: reject non-numbers and NaN/inf before any state changes.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN (with ``nan_strategy="error"``) or inf values.

    Note:
        State: one float64 scalar, ``sum``-reduced across ranks. The sum of nothing is 0.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.aggregation import Sum
        >>> metric = Sum()
        >>> metric.update(torch.tensor([100, 100]))
        >>> metric.fold(metric.summarize([0.5, 1]))  # a batch of plain values, summed exactly
        >>> metric.compute()
        tensor(201.5000, dtype=torch.float64)
    """

    is_differentiable = True  # type: ignore[assignment]

    def update(self, value: Values) -> None:
        """Add ``value`` (a number or a tensor of any shape)."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value)
        if values.numel():
            self._fold(SumBatch(values.sum()))

    def summarize(self, values: Sequence[Any]) -> SumBatch:
        """The exact (``math.fsum``) sum of a batch of plain numbers; raises on a non-number, NaN or inf."""
        return SumBatch(exact_sum(values))

    def _fold(self, summary: SumBatch) -> None:
        self.sum_value.add_(summary.total)


class Mean(_ValueAggregation[MeanBatch], MeanMetric):
    r"""Running weighted mean :math:`\sum_i w_i x_i / \sum_i w_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling; the default ``"error"`` rejects NaN.
        validate_args: reject non-numbers, NaN/inf, negative or non-broadcastable weights.
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` or ``weight`` is not a number, sequence of numbers or real tensor.
        ValueError: on NaN/inf, negative weights or a ``weight`` not broadcastable to ``value``.

    Note:
        State: two float64 sums (TorchMetrics' ``mean_value`` and ``weight``). The mean of zero
        total weight is ``nan`` with an ``UndefinedMetricWarning``.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.aggregation import Mean
        >>> metric = Mean()
        >>> metric.update(torch.tensor([1.0, 3.0]), weight=torch.tensor([3.0, 1.0]))
        >>> metric.compute()
        tensor(1.5000, dtype=torch.float64)
    """

    is_differentiable = True  # type: ignore[assignment]

    def update(self, value: Values, weight: Values | None = None) -> None:
        """Add ``value`` with optional ``weight`` (broadcastable to ``value``, default 1)."""
        if self._check_inputs:
            self._validate(value, weight)
        values, weights = self._prepare(value, weight)
        if values.numel() == 0:
            return
        if weights is None:
            self._fold(MeanBatch(values.sum(), values.numel()))
        else:
            self._fold(MeanBatch((values * weights).sum(), weights.sum()))

    def summarize(self, values: Sequence[Any]) -> MeanBatch:
        """The exact sum and the count of a batch of plain numbers (weight 1 each)."""
        return MeanBatch(exact_sum(values), float(len(values)))

    def _fold(self, summary: MeanBatch) -> None:
        self.mean_value.add_(summary.weighted_sum)
        self.weight.add_(summary.weight)

    def compute(self) -> Tensor:
        """Weighted mean of everything seen (``nan`` if the total weight is 0)."""
        return safe_divide(self.mean_value, self.weight, "Mean", "the total weight is zero")


class _Extreme(_ValueAggregation[ExtremeBatch]):
    """Max and Min: one running extreme of the values, a float64 scalar reduced with ``max``/``min``.

    A subclass names its TorchMetrics state and says which extreme it keeps; everything else is here.
    """

    _state: ClassVar[str]  # TorchMetrics' state: "max_value" / "min_value"
    _keeps_max: ClassVar[bool]

    def _extreme(self, values: Tensor) -> Tensor:
        return values.max() if self._keeps_max else values.min()

    def update(self, value: Values) -> None:
        """Fold ``value`` (a number or a tensor of any shape) into the extreme."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value)
        if values.numel():
            self._fold(ExtremeBatch(self._extreme(values)))

    @property
    def _empty(self) -> float:
        """The state's value before any update (TorchMetrics' default): ``-inf`` for Max, ``inf`` for Min."""
        return -math.inf if self._keeps_max else math.inf

    def summarize(self, values: Sequence[Any]) -> ExtremeBatch:
        """The extreme of a batch of plain numbers; raises on a non-number, NaN or inf."""
        exact_sum(values)  # checks every value
        if not values:
            return ExtremeBatch(self._empty)
        return ExtremeBatch(float(max(values) if self._keeps_max else min(values)))

    def _fold(self, summary: ExtremeBatch) -> None:
        state: Tensor = getattr(self, self._state)
        if self._keeps_max:
            state.clamp_(min=summary.value)
        else:
            state.clamp_(max=summary.value)

    def compute(self) -> Tensor:
        """The extreme of everything seen (``nan`` if nothing was seen)."""
        value: Tensor = getattr(self, self._state)
        empty = value == self._empty
        warn_undefined(empty, type(self).__name__, "no value was seen")
        return torch.where(empty, torch.full_like(value, math.nan), value)


def _extreme_doc(name: str, word: str, op: str, empty: str, example: str) -> str:
    """The docstring of :class:`Max` or :class:`Min` (they differ in words only)."""
    return rf"""Running {word} :math:`\{op}_i x_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling; the default ``"error"`` rejects NaN.
        validate_args: reject non-numbers and NaN/inf.
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values.

    Note:
        State: one float64 scalar, ``{op}``-reduced across ranks (an empty rank holds ``{empty}``).
        The {word} of no value is ``nan`` with an ``UndefinedMetricWarning``.

    Example:
        >>> from torchmetrics_ext.aggregation import {name}
        >>> metric = {name}()
        >>> metric.update([3.0, 7.0])
        >>> metric.compute()
        tensor({example}, dtype=torch.float64)
    """


class Max(_Extreme, MaxMetric):  # noqa: D101 (the docstring comes from _extreme_doc)
    __doc__ = _extreme_doc("Max", "maximum", "max", "-inf", "7.")
    is_differentiable = True  # type: ignore[assignment]
    _state = "max_value"
    _keeps_max = True


class Min(_Extreme, MinMetric):  # noqa: D101 (the docstring comes from _extreme_doc)
    __doc__ = _extreme_doc("Min", "minimum", "min", "inf", "3.")
    is_differentiable = True  # type: ignore[assignment]
    _state = "min_value"
    _keeps_max = False
