"""One ``torchmetrics.Metric`` per numeric aggregation type: Sum, Mean, Max, Min, Distribution.

Sum/Mean/Max/Min subclass :mod:`torchmetrics.aggregation` (``SumMetric``, ``MeanMetric``,
``MaxMetric``, ``MinMetric``) and keep TorchMetrics' states and reductions, with three changes:
states are float64 (counts and sums reach 1e9+), a batch is validated before any state changes
(``validate_args=True``: a non-number, NaN or inf is a ``TypeError``/``ValueError`` and the
metric is left exactly as it was), and an undefined value (mean of zero weight, extreme of no
value) is ``nan`` with an :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`
instead of TorchMetrics' ``nan``/``-inf`` without a word. :class:`Distribution` is ours: a
fixed-size, sum-reducible sketch (see :mod:`torchmetrics_ext.functional.distribution`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric, SumMetric

from torchmetrics_ext.functional.distribution import (
    DEFAULT_PERCENTILES,
    SketchSpec,
    _add_to_sketch,
    _check_percentiles,
    _distribution_compute,
    _distribution_update,
)
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.utilities.warnings import safe_divide, warn_undefined

__all__ = ["Distribution", "Max", "Mean", "Min", "Sum"]

NanStrategy = Literal["error", "warn", "ignore", "disable"] | float
Values = float | int | Tensor | Sequence[float]


def _as_values(name: str, value: object) -> Tensor:
    """``value`` (number, sequence of numbers or real tensor) as a tensor, or a clear TypeError."""
    if isinstance(value, Tensor):
        if value.is_complex():
            raise TypeError(f"Expected `{name}` to be a real tensor, got dtype {value.dtype}.")
        return value
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"Expected `{name}` to be a number, a sequence of numbers or a tensor, got {value!r}.")
    try:
        out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"Expected `{name}` to be a number, a sequence of numbers or a tensor, got {type(value).__name__}: {err}"
        ) from None
    return out


def _check_finite(name: str, value: Tensor, allow_nan: bool) -> None:
    if not value.is_floating_point() or value.numel() == 0:
        return
    bad = torch.isinf(value) if allow_nan else ~torch.isfinite(value)
    if bool(bad.any()):
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"Expected `{name}` to hold finite numbers, got {what} values.")


class _ValueAggregation(TaskMetric):
    """Shared plumbing: float64 states, validation of ``value`` (and ``weight``) before any state changes."""

    full_state_update: bool = False
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
        """Float64 values (and weights); TorchMetrics' cast and NaN handling unless it has nothing to do."""
        if (
            weight is None
            and self.nan_strategy == "disable"
            and isinstance(value, Tensor)
            and value.dtype == torch.float64
            and value.device == self.device
        ):
            return value, None  # the aggregator's path: values already checked and cast
        if weight is None:
            return self._cast_and_nan_check_input(value)[0], None  # type: ignore[operator]
        values = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weights = torch.broadcast_to(torch.as_tensor(weight, dtype=self.dtype, device=self.device), values.shape)
        return self._cast_and_nan_check_input(values, weights)  # type: ignore[operator]

    def _validate(self, value: Values, weight: Values | None = None) -> None:
        values = _as_values("value", value)
        _check_finite("value", values, allow_nan=self.nan_strategy != "error")
        if weight is not None:
            weights = _as_values("weight", weight)
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


class Sum(_ValueAggregation, SumMetric):
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
        >>> metric.compute()
        tensor(200., dtype=torch.float64)
    """

    is_differentiable = False  # type: ignore[assignment]
    higher_is_better = None

    def update(self, value: Values) -> None:
        """Add ``value`` (a number or a tensor of any shape)."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value)
        if values.numel():
            self._add_stats(values.sum())

    def _add_stats(self, total: Tensor | float) -> None:
        """Accumulate a batch's sum."""
        self.sum_value.add_(total)


class Mean(_ValueAggregation, MeanMetric):
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

    is_differentiable = False  # type: ignore[assignment]
    higher_is_better = None

    def update(self, value: Values, weight: Values | None = None) -> None:
        """Add ``value`` with optional ``weight`` (broadcastable to ``value``, default 1)."""
        if self._check_inputs:
            self._validate(value, weight)
        values, weights = self._prepare(value, weight)
        if values.numel() == 0:
            return
        if weights is None:
            self._add_stats(values.sum(), values.numel())
        else:
            self._add_stats((values * weights).sum(), weights.sum())

    def _add_stats(self, weighted_sum: Tensor | float, total_weight: Tensor | float) -> None:
        """Accumulate a batch's weighted sum and total weight."""
        self.mean_value.add_(weighted_sum)
        self.weight.add_(total_weight)

    def compute(self) -> Tensor:
        """Weighted mean of everything seen (``nan`` if the total weight is 0)."""
        return safe_divide(self.mean_value, self.weight, "Mean", "the total weight is zero")


class Max(_ValueAggregation, MaxMetric):
    r"""Running maximum :math:`\max_i x_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling; the default ``"error"`` rejects NaN.
        validate_args: reject non-numbers and NaN/inf.
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values.

    Note:
        State: one float64 scalar, ``max``-reduced across ranks (an empty rank holds ``-inf``).
        The maximum of no value is ``nan`` with an ``UndefinedMetricWarning``.

    Example:
        >>> from torchmetrics_ext.aggregation import Max
        >>> metric = Max()
        >>> metric.update([3.0, 7.0])
        >>> metric.compute()
        tensor(7., dtype=torch.float64)
    """

    is_differentiable = False  # type: ignore[assignment]
    higher_is_better = None

    full_state_update: bool = False

    def update(self, value: Values) -> None:
        """Fold ``value`` (a number or a tensor of any shape) into the maximum."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value)
        if values.numel():
            self._add_stats(values.max())

    def _add_stats(self, batch_max: Tensor | float) -> None:
        """Fold a batch's maximum in."""
        self.max_value.clamp_(min=batch_max)

    def compute(self) -> Tensor:
        """Maximum of everything seen (``nan`` if nothing was seen)."""
        empty = self.max_value == -math.inf
        warn_undefined(empty, "Max", "no value was seen")
        return torch.where(empty, torch.full_like(self.max_value, math.nan), self.max_value)


class Min(_ValueAggregation, MinMetric):
    r"""Running minimum :math:`\min_i x_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling; the default ``"error"`` rejects NaN.
        validate_args: reject non-numbers and NaN/inf.
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values.

    Note:
        State: one float64 scalar, ``min``-reduced across ranks (an empty rank holds ``inf``).
        The minimum of no value is ``nan`` with an ``UndefinedMetricWarning``.

    Example:
        >>> from torchmetrics_ext.aggregation import Min
        >>> metric = Min()
        >>> metric.update([3.0, 7.0])
        >>> metric.compute()
        tensor(3., dtype=torch.float64)
    """

    is_differentiable = False  # type: ignore[assignment]
    higher_is_better = None

    full_state_update: bool = False

    def update(self, value: Values) -> None:
        """Fold ``value`` (a number or a tensor of any shape) into the minimum."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value)
        if values.numel():
            self._add_stats(values.min())

    def _add_stats(self, batch_min: Tensor | float) -> None:
        """Fold a batch's minimum in."""
        self.min_value.clamp_(max=batch_min)

    def compute(self) -> Tensor:
        """Minimum of everything seen (``nan`` if nothing was seen)."""
        empty = self.min_value == math.inf
        warn_undefined(empty, "Min", "no value was seen")
        return torch.where(empty, torch.full_like(self.min_value, math.nan), self.min_value)


class Distribution(TaskMetric):
    r"""Lifetime mean, min, max, std and percentiles of a stream of values, mergeable across ranks.

    .. math::
        \bar x = \frac{1}{n}\sum_i x_i,\quad
        s = \sqrt{\tfrac{1}{n-1}\big(\textstyle\sum_i x_i^2 - n\bar x^2\big)},\quad
        P_q = \text{np.percentile}(x, q) \text{ within relative error } \alpha

    Percentiles come from a log-bucket sketch (DDSketch-style, see
    :mod:`torchmetrics_ext.functional.distribution`): a fixed float64 vector of
    :math:`2B + 1` bucket counts, :math:`B = \lceil\log_\gamma \text{max\_value}\rceil -
    \lceil\log_\gamma \text{min\_value}\rceil + 1` per sign plus a zero bucket (4,839 buckets,
    38.7 kB with the defaults), that is summed across batches and ranks, so the percentiles of a DDP run are
    those of all ranks' data, not an average of per-rank percentiles (torchtune's approximation).

    Args:
        percentiles: percentiles in [0, 100] to report, named ``p05``, ``p50``, ``p95``, ...
        relative_accuracy: relative error bound :math:`\alpha` of the percentiles (default 1%).
        min_value: magnitudes below this count as 0 (absolute error below ``min_value``).
        max_value: magnitudes above this fall in the last bucket (no relative bound; estimates
            are still clipped to the exact max).
        validate_args: reject non-numbers and NaN/inf before any state changes.
        kwargs: TorchMetrics options.

    Returns:
        ``compute()`` returns a dict of float64 scalars: ``mean``, ``min``, ``max``, ``std``
        (sample std, ``ddof=1`` as ``torch.std``) and one entry per percentile.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values or invalid sketch arguments.

    Note:
        States: count, sum, sum of squares (``sum``), min (``min``), max (``max``) and the bucket
        counts (``sum``); constant memory, independent of the number of values. Mean and std are
        exact up to float64 rounding; min and max are exact. No value: every output ``nan``; one
        value: ``std`` is ``nan`` (each with an ``UndefinedMetricWarning``).

    Example:
        >>> import torch
        >>> from torchmetrics_ext.aggregation import Distribution
        >>> metric = Distribution()
        >>> metric.update(torch.arange(1, 51))
        >>> metric.update(torch.arange(51, 101))
        >>> {k: round(v.item(), 1) for k, v in metric.compute().items()}  # np.percentile: 5.95, 50.5, 95.05
        {'mean': 50.5, 'min': 1.0, 'max': 100.0, 'std': 29.0, 'p05': 5.9, 'p50': 50.4, 'p95': 94.7}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update: bool = False
    count: Tensor
    total: Tensor
    total_sq: Tensor
    min_value: Tensor
    max_value: Tensor
    bucket_counts: Tensor

    def __init__(
        self,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-9,
        max_value: float = 1e12,
        *,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(1, validate_args=validate_args, **kwargs)
        self.spec = SketchSpec(relative_accuracy, min_value, max_value)
        self.percentiles = _check_percentiles(percentiles)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total_sq", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("min_value", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("max_value", default=torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("bucket_counts", default=torch.zeros(self.spec.size, dtype=torch.float64), dist_reduce_fx="sum")

    def _validate(self, value: Values) -> None:
        _check_finite("value", _as_values("value", value), allow_nan=False)

    def update(self, value: Values) -> None:
        """Add ``value`` (a number, a sequence of numbers or a tensor of any shape)."""
        if self._check_inputs:
            self._validate(value)
        self._add_values(torch.as_tensor(value, dtype=torch.float64, device=self.device).reshape(-1))

    def _add_values(self, values: Tensor) -> None:
        """Accumulate a float64 1-D tensor of checked values."""
        if values.numel() == 0:
            return
        self._accumulate(*_distribution_update(values, self.spec))

    def _accumulate(
        self,
        count: float,
        total: Tensor | float,
        total_sq: Tensor | float,
        vmin: Tensor | float,
        vmax: Tensor | float,
        index: Tensor,
    ) -> None:
        """Fold a batch's sufficient statistics (and the bucket index of each value) into the states."""
        self.count.add_(count)
        self.total.add_(total)
        self.total_sq.add_(total_sq)
        self.min_value.clamp_(max=vmin)
        self.max_value.clamp_(min=vmax)
        _add_to_sketch(self.bucket_counts, index)

    def compute(self) -> dict[str, Tensor]:
        """``{"mean", "min", "max", "std", "p05", "p50", "p95"}`` (per ``percentiles``) of everything seen."""
        return _distribution_compute(
            self.count,
            self.total,
            self.total_sq,
            self.min_value,
            self.max_value,
            self.bucket_counts,
            self.percentiles,
            self.spec,
        )
