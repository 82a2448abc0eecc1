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

``update`` never reads a device value on the host with ``validate_args=False``, and reads once
with validation (:func:`~torchmetrics_ext.utilities.checks.checked_bounds`, shared by the metrics
of a collection that receive the same tensors). TorchMetrics' NaN handling (``if nans.any():``,
then boolean-mask compaction: two host reads per update) is replaced by ``torch.where``: a NaN
row is given weight 0 and a neutral value (``"ignore"``/``"warn"``) or the fill value and weight 1
(a float ``nan_strategy``), the same sums without a read. What needs a read happens only when
validating: ``"error"`` rejects NaN and ``"warn"`` warns from the bounds of that one read. With
``validate_args=False`` nothing is read, so ``"error"`` checks nothing (like ``"disable"``, a NaN
makes the value NaN) and ``"warn"`` drops NaN without a warning (like ``"ignore"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, cast

import torch
from torch import Tensor
from torchmetrics import Metric as TorchMetric
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric, SumMetric
from torchmetrics.utilities.prints import rank_zero_only

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import as_values, check_numbers, exact_sum, plain_numbers
from torchmetrics_ext.metrics.base import TORCHMETRICS_OPTIONS, _tag, one_task, options_error
from torchmetrics_ext.utilities.checks import (
    Bounds,
    as_real,
    as_str,
    broadcast_shape,
    checked_bounds,
    note_weight_bounds,
    observed_range,
)
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, safe_divide, warn_at_user, warn_undefined

__all__ = ["ExtremeBatch", "Max", "Mean", "MeanBatch", "Min", "Sum", "SumBatch", "saved_state_names"]

NanStrategy = Literal["error", "warn", "ignore", "disable"] | float
_NAN_STRATEGIES = ("error", "warn", "ignore", "disable")
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


def _check_nan_strategy(nan_strategy: object) -> NanStrategy:
    """``nan_strategy`` as TorchMetrics takes it: a name, or a float fill value kept as a Python float.

    A fill value may be given as any float setting may (a NumPy float, a 0-dim tensor:
    :func:`~torchmetrics_ext.utilities.checks.as_real`); an integer is refused, as TorchMetrics
    refuses it. Anything else is a ``ValueError`` naming the option (TorchMetrics' own check raised
    ``RuntimeError`` for a tensor with several values).
    """
    name = as_str(nan_strategy)  # a NumPy string (a 0-dim array too) is its Python string
    if name in _NAN_STRATEGIES:
        return cast(NanStrategy, name)
    fill = None if name is not None else as_real(nan_strategy)
    if not isinstance(fill, float):
        raise refusal(
            f"Expected `nan_strategy` to be a float (the value that replaces NaN) or one of {_NAN_STRATEGIES}, "
            f"got {nan_strategy!r}.",
            wrong_type=name is None,
        )
    return fill


class _ValueAggregation(AggregationMetric[S]):
    """Shared plumbing: float64 states, validation of ``value`` (and ``weight``) before any state changes.

    ``update`` reads nothing from the device with ``validate_args=False`` and once with validation
    (see the module docstring for ``nan_strategy`` without validation).
    """

    higher_is_better = None
    nan_strategy: NanStrategy
    state_name: str  # the main state (TorchMetrics' attribute), renamed after the NaN setting
    # no task dimension (one_task); TorchMetrics' aggregators pass `state_name` themselves
    _refused_options: ClassVar[tuple[str, ...]] = ("num_tasks", "state_name")

    def __init__(self, nan_strategy: NanStrategy = "error", *, validate_args: bool = True, **kwargs: Any) -> None:
        num_tasks = one_task(self, kwargs)
        # TorchMetrics' aggregators pass `fn`, `default_value` and `state_name` themselves: one of
        # them given here is an unknown option (not Python's "got multiple values"), told as the
        # metrics tell any other
        unknown = [name for name in kwargs if name not in TORCHMETRICS_OPTIONS]
        if unknown:
            raise options_error(type(self), unknown)
        nan_strategy = _check_nan_strategy(nan_strategy)
        super().__init__(num_tasks, validate_args=validate_args, nan_strategy=nan_strategy, **kwargs)
        self.set_dtype(torch.float64)
        self._name_states_after_settings()

    def _name_states_after_settings(self) -> None:
        """Rename TorchMetrics' states (``sum_value``...) to ``<name>_<how NaN and inf are taken>``.

        :class:`~torchmetrics.MetricCollection` puts metrics whose states have the same names and
        equal values after the first batch into one compute group, whose first member alone
        updates. Under TorchMetrics' names this metric joined TorchMetrics' own ``SumMetric``
        (float32 sums, NaN dropped with a warning) and read its states, or another ``nan_strategy``
        or ``validate_args`` of this class, which takes NaN and inf otherwise; the states carry
        that setting in their names (:func:`_nan_setting`) so only metrics that update alike share
        them. Checkpoints keep TorchMetrics' names both ways (:meth:`state_dict`), and any
        setting's states load and merge into any other's (what the states mean does not depend on it).
        """
        setting = _nan_setting(self.nan_strategy, self._check_inputs)
        self._torchmetrics_names: dict[str, str] = {}  # this metric's state name -> TorchMetrics'
        for theirs in list(self._defaults):
            ours = f"{theirs}_{setting}"
            default, reduce_fx = self._defaults.pop(theirs), self._reductions.pop(theirs)
            persistent = self._persistent.pop(theirs)
            delattr(self, theirs)
            self.add_state(ours, default, reduce_fx, persistent)
            self._load_former_names(ours, _any_setting_of(theirs))
            self._torchmetrics_names[ours] = theirs
        self.state_name = f"{self.state_name}_{setting}"  # TorchMetrics' compute reads getattr(self, state_name)

    @property
    def _renames(self) -> dict[str, str]:
        """This metric's state names -> TorchMetrics' (none for a metric pickled before states were renamed)."""
        return self.__dict__.get("_torchmetrics_names", {})

    def __getattr__(self, name: str) -> Any:
        """A state read under TorchMetrics' name (``Sum().sum_value``, ``Mean().weight``), as on its aggregators.

        Only reached where ordinary lookup fails (never on the update path); anything else is
        ``torch.nn.Module``'s lookup.
        """
        renames = self.__dict__.get("_torchmetrics_names")
        if renames:
            for ours, theirs in renames.items():
                if theirs == name:
                    return getattr(self, ours)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        """A state written under TorchMetrics' name (``metric.sum_value = t``) is written to the renamed state.

        As it is read (:meth:`__getattr__`): a plain attribute of that name would shadow the state for reads
        while the metric kept updating and computing the state itself.
        """
        renames = self.__dict__.get("_torchmetrics_names")
        if renames and name in _TORCHMETRICS_STATE_NAMES:
            name = next((ours for ours, theirs in renames.items() if theirs == name), name)
        super().__setattr__(name, value)

    def state_dict(  # type: ignore[override]  # TorchMetrics' signature
        self, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """TorchMetrics' ``state_dict``, the states under TorchMetrics' names: its aggregators load ours."""
        destination = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for ours, theirs in self._renames.items():
            if prefix + ours in destination:
                destination[prefix + theirs] = destination.pop(prefix + ours)
        return destination

    @property
    def metric_state(self) -> dict[str, list[Tensor] | Tensor]:
        """The states under TorchMetrics' names (``sum_value``...), as :meth:`state_dict` saves them.

        TorchMetrics' ``merge_state`` reads an incoming metric's states here by its own names:
        ``MeanMetric().merge_state(Mean())`` merges this metric's states. In the order of ``_defaults``.
        """
        states, renames = super().metric_state, self._renames
        return {renames.get(name, name): value for name, value in states.items()} if renames else states

    def _own_state_names(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """``states`` named as TorchMetrics or any setting of this class names them, under this metric's names.

        This metric's names are TorchMetrics' own where it was pickled before the states were renamed.
        """
        mapped, renames = dict(states), self._renames
        for ours in self._defaults:
            if ours not in mapped:
                theirs = renames.get(ours, ours)
                found = [name for name in mapped if re.fullmatch(_any_setting_of(theirs), name)]
                if len(found) == 1:
                    mapped[ours] = mapped.pop(found[0])
        return mapped

    def merge_state(self, incoming_state: dict[str, Any] | TorchMetric) -> None:
        """``merge_state`` of a metric of this class of any ``nan_strategy``, or a dict of its or TorchMetrics' states.

        The states' names carry the setting (see :meth:`_name_states_after_settings`); what they hold does not.
        """
        if isinstance(incoming_state, _ValueAggregation) and type(incoming_state) is type(self):
            incoming_state = incoming_state.metric_state
        if isinstance(incoming_state, dict):
            incoming_state = self._own_state_names(incoming_state)
        super().merge_state(incoming_state)

    def _prepare(
        self, value: Values, weight: Values | None = None, dropped: float = 0.0
    ) -> tuple[Tensor, Tensor | None]:
        """Float64 values (and weights) on the metric's device, NaN handled by ``nan_strategy`` without a host read.

        ``"ignore"``/``"warn"``: a row whose value or weight is NaN gets the value ``dropped`` (0 for
        sums, ``-inf``/``inf`` for Max/Min) and weight 0, so it counts as absent; the weights are then
        always returned (``None`` only when none were given and every row counts with weight 1). A float
        strategy: such a row gets that value and weight 1 (TorchMetrics' meaning). ``"error"`` and
        ``"disable"`` change nothing (validation has rejected NaN for ``"error"``; unvalidated, a NaN
        goes through). The caller's tensors are never written.
        """
        values = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weights = None
        if weight is not None:
            weights = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
            if weights.shape != values.shape:
                weights = torch.broadcast_to(weights, values.shape)
        strategy = self.nan_strategy
        if strategy in ("error", "disable"):
            return values, weights
        nan = torch.isnan(values) if weights is None else torch.isnan(values) | torch.isnan(weights)
        if isinstance(strategy, float):
            values = torch.where(nan, strategy, values)
            return values, None if weights is None else torch.where(nan, 1.0, weights)
        values = torch.where(nan, dropped, values)
        return values, (~nan).to(self.dtype) if weights is None else torch.where(nan, 0.0, weights)

    def _validate(self, value: Values, weight: Values | None = None) -> None:
        """Check ``value`` (and ``weight``) with one host read of their bounds (:func:`checked_bounds`).

        Integer values cannot be NaN or inf and are not read. A tensor that holds NaN under a
        ``nan_strategy`` that accepts NaN is read once more without its NaN (``torch.where``), to
        check the rest of it for inf (and, for weights, negative values): a second read for such a
        batch only. ``"warn"`` warns here, so that ``forward`` (which validates once and then
        updates) warns once per batch.
        """
        values = as_values("value", value)
        tensors: list[tuple[str, Tensor | None]] = [("value", values if values.is_floating_point() else None)]
        if weight is not None:
            weights = as_values("weight", weight)
            if broadcast_shape(weights.shape, values.shape) != values.shape:
                raise ValueError(
                    f"Expected `weight` broadcastable to `value` of shape {tuple(values.shape)}, "
                    f"got shape {tuple(weights.shape)}."
                )
            tensors.append(("weight", weights))
        bounds = checked_bounds([tensor for _, tensor in tensors], [False] * len(tensors))
        with_nan = [bool(b) and (math.isnan(b[0]) or math.isnan(b[1])) for b in bounds]
        drops_nan = any(with_nan) and self.nan_strategy in ("ignore", "warn")
        kept: list[Bounds] = []
        if any(with_nan):
            name = tensors[with_nan.index(True)][0]
            if self.nan_strategy == "error":
                raise ValueError(
                    f"Expected `{name}` to hold finite numbers, got values containing NaN "
                    "(nan_strategy='error'; see `nan_strategy` to drop, fill or keep NaN)."
                )
            # the bounds of the values that are not NaN: NaN read as +inf for the minimum and as
            # -inf for the maximum (no value that is not in the data shows in a message)
            rest = [t if nan and t is not None else None for (_, t), nan in zip(tensors, with_nan, strict=True)]
            filled = [
                None if t is None else torch.where(torch.isnan(t), fill, t)
                for fill in (math.inf, -math.inf)
                for t in rest
            ]
            if drops_nan:
                # the weight each row keeps once a NaN value or weight drops it (0; 1 for a kept row of Sum, Max,
                # Min): read with the fills, so that a batch adding nothing is noted as all-zero weight (no window
                # room) without a read of its own
                dropped = torch.isnan(values)
                if weight is not None:
                    dropped = dropped | torch.isnan(weights)
                filled.append((~dropped).to(torch.float64) if weight is None else torch.where(dropped, 0, weights))
            both = checked_bounds(filled, [False] * len(filled))  # one read for both fills
            kept = both[2 * len(rest) :]
            lows, highs = both[: len(rest)], both[len(rest) : 2 * len(rest)]
            again = [(lo[0], hi[1]) if lo and lo[0] <= hi[1] else () for lo, hi in zip(lows, highs, strict=True)]
            bounds = [b2 if nan else b for b, b2, nan in zip(bounds, again, with_nan, strict=True)]
        for (name, _), bound in zip(tensors, bounds, strict=True):
            _check_bounds(name, bound)
        # for a window: weights all zero take no room (no read of their own), unless NaN rows count anyway (a
        # float strategy fills them with weight 1; "disable" keeps a NaN value, which a zero weight cannot cancel);
        # with NaN dropped ("ignore"/"warn"), the weights the rows keep: a batch of dropped rows adds nothing
        if drops_nan:
            note_weight_bounds(kept)
        elif weight is not None and not any(with_nan):
            note_weight_bounds(bounds[-1:])
        if any(with_nan) and self.nan_strategy == "warn" and getattr(rank_zero_only, "rank", 0) == 0:
            # TorchMetrics' text and rank-0 rule, at the user's line (its `rank_zero_warn` names its own file)
            text = "Encountered `nan` values in tensor. Will be removed."
            warn_at_user(text, UserWarning)


# the states of TorchMetrics' aggregators, renamed here (see _ValueAggregation._name_states_after_settings)
_TORCHMETRICS_STATE_NAMES = frozenset({"sum_value", "mean_value", "weight", "max_value", "min_value"})


def _nan_setting(strategy: NanStrategy, validated: bool) -> str:
    """How a metric takes NaN and inf, as a state-name fragment: equal for settings that update alike.

    Validated: ``nanerror``, ``nanwarn``, ``nanignore``, ``nandisable`` or ``nanfill<value>`` (inf refused).
    Unvalidated (``..._unchecked``, inf taken): ``nankeep`` (``"error"``, ``"disable"``), ``nandrop``
    (``"warn"``, ``"ignore"``) or ``nanfill<value>``.
    """
    if isinstance(strategy, float):
        mode = f"nanfill{_tag(strategy)}"
    elif validated:
        mode = f"nan{strategy}"
    else:
        mode = "nankeep" if strategy in ("error", "disable") else "nandrop"
    return mode if validated else f"{mode}_unchecked"


def _any_setting_of(name: str) -> str:
    """The pattern of TorchMetrics' state ``name`` and of its names under any setting (:func:`_nan_setting`)."""
    return rf"{re.escape(name)}(_nan\w+)?"


def saved_state_names(metric: TorchMetric) -> dict[str, str]:
    """``{state: the name checkpoints give it}`` for ``metric``'s states, in their order.

    TorchMetrics' names (``sum_value``...) for :class:`Sum`, :class:`Mean`, :class:`Max` and
    :class:`Min`, whose states carry their NaN setting in memory only; the state's own name otherwise.

    Examples:
        >>> saved_state_names(Mean(nan_strategy="ignore"))
        {'mean_value_nanignore': 'mean_value', 'weight_nanignore': 'weight'}
    """
    renamed = metric._renames if isinstance(metric, _ValueAggregation) else {}
    return {name: renamed.get(name, name) for name in metric._defaults}


def _check_bounds(name: str, bound: Bounds) -> None:
    """Raise ``ValueError`` unless ``value``'s or ``weight``'s bounds are finite (and a weight's non-negative).

    ``()`` (no tensor, an empty or an integer ``value``) has nothing to check.
    """
    if not bound:
        return
    low, high = bound
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"Expected `{name}` to hold finite numbers, got {observed_range(low, high)}.")
    if name == "weight" and low < 0:
        raise ValueError(f"Expected `weight` to be non-negative, got values in [{low:.6g}, {high:.6g}].")


class Sum(_ValueAggregation[SumBatch], SumMetric):
    r"""Running sum :math:`\sum_i x_i` in float64 (TorchMetrics' ``SumMetric`` with checked inputs).

    Args:
        nan_strategy: TorchMetrics' NaN handling (``"error"``, ``"warn"``, ``"ignore"``,
            ``"disable"`` or a fill value). With the default ``"error"`` a NaN is rejected;
            ``"ignore"``/``"warn"`` drop it, a float replaces it, ``"disable"`` keeps it. With
            ``validate_args=False`` nothing is read from the device: ``"error"`` keeps NaN
            (like ``"disable"``) and ``"warn"`` drops it without a warning (like ``"ignore"``).
        validate_args: reject non-numbers and NaN/inf before any state changes (one host read per
            update, shared by the metrics of a collection given the same tensor).
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN (with ``nan_strategy="error"``) or inf values.

    Note:
        State: one float64 scalar, ``sum``-reduced across ranks. The sum of nothing is 0. Under
        ``Windowed``, a validated update whose every value is dropped for NaN (``"ignore"``/``"warn"``)
        adds nothing and takes no window room.

    Examples:
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
        return SumBatch(exact_sum(values))  # a one-element array becomes its element there

    def _fold(self, summary: SumBatch) -> None:
        state: Tensor = getattr(self, self.state_name)
        state.add_(summary.total)


class Mean(_ValueAggregation[MeanBatch], MeanMetric):
    r"""Running weighted mean :math:`\sum_i w_i x_i / \sum_i w_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling, as for :class:`Sum`: the default ``"error"``
            rejects NaN; a row whose value or weight is NaN is dropped (``"ignore"``/``"warn"``),
            filled with weight 1 (a float) or kept (``"disable"``).
        validate_args: reject non-numbers, NaN/inf, negative weights or weights not
            broadcastable to ``value``'s shape (one host read per update).
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` or ``weight`` is not a number, sequence of numbers or real tensor.
        ValueError: on NaN/inf, negative weights or a ``weight`` not broadcastable to ``value``'s shape.

    Note:
        State: two float64 sums (saved as TorchMetrics' ``mean_value`` and ``weight``). The mean of zero
        total weight is ``nan`` with an ``UndefinedMetricWarning``. Under ``Windowed``, a validated update
        that adds nothing (weights all zero; with ``"ignore"``/``"warn"``, every row dropped for NaN or
        weighing zero) takes no window room.

    Examples:
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
        total, weight = self._sums()
        total.add_(summary.weighted_sum)
        weight.add_(summary.weight)

    def _sums(self) -> tuple[Tensor, Tensor]:
        """The weighted sum and the total weight (TorchMetrics' ``mean_value`` and ``weight``, renamed)."""
        return getattr(self, self.state_name), getattr(self, self._weight_state)

    @property
    def _weight_state(self) -> str:
        return next((ours for ours, theirs in self._renames.items() if theirs == "weight"), "weight")

    def compute(self) -> Tensor:
        """Weighted mean of everything seen (``nan`` if the total weight is 0)."""
        return safe_divide(*self._sums(), "Mean", NO_SAMPLES)

    def _logged_value(self) -> Any:
        """:meth:`compute` as a host float: the same float64 division (and ``nan``), without its tensors."""
        total, weight = self._sums()
        if total.dtype != torch.float64 or weight.dtype != torch.float64 or total.ndim or weight.ndim:
            return super()._logged_value()  # states cast with set_dtype divide in their own dtype
        if type(self).compute is not Mean.compute:  # a subclass's own compute is what it logs
            return super()._logged_value()
        num, den = total.item(), weight.item()
        if den == 0 or math.isinf(den) or math.isinf(num):  # safe_divide's nan (an overflowed sum too)
            return math.nan
        return num / den


class _Extreme(_ValueAggregation[ExtremeBatch]):
    """Max and Min: one running extreme of the values, a float64 scalar reduced with ``max``/``min``.

    A subclass says which extreme it keeps; everything else is here.
    """

    _keeps_max: ClassVar[bool]

    def _extreme(self, values: Tensor) -> Tensor:
        return values.max() if self._keeps_max else values.min()

    def update(self, value: Values) -> None:
        """Fold ``value`` (a number or a tensor of any shape) into the extreme."""
        if self._check_inputs:
            self._validate(value)
        values, _ = self._prepare(value, dropped=self._empty)  # a dropped NaN leaves the extreme as it is
        if values.numel():
            self._fold(ExtremeBatch(self._extreme(values)))

    @property
    def _empty(self) -> float:
        """The state's value before any update (TorchMetrics' default): ``-inf`` for Max, ``inf`` for Min."""
        return -math.inf if self._keeps_max else math.inf

    def summarize(self, values: Sequence[Any]) -> ExtremeBatch:
        """The extreme of a batch of plain numbers; raises on a non-number, NaN or inf (never on their sum)."""
        try:
            check_numbers(values)
        except TypeError:  # NumPy refuses float() of a one-element array with dimensions: its element
            values = plain_numbers(values)
            check_numbers(values)
        if not values:
            return ExtremeBatch(self._empty)
        # compared as float64: a float32 tensor or NumPy scalar compares a Python float in its own dtype,
        # where 1 + 2**-30 equals its 1.0
        floats = map(float, values)
        return ExtremeBatch(max(floats) if self._keeps_max else min(floats))

    def _fold(self, summary: ExtremeBatch) -> None:
        state: Tensor = getattr(self, self.state_name)
        if self._keeps_max:
            state.clamp_(min=summary.value)
        else:
            state.clamp_(max=summary.value)

    def compute(self) -> Tensor:
        """The extreme of everything seen (``nan`` if nothing was seen)."""
        value: Tensor = getattr(self, self.state_name)
        empty = value == self._empty
        warn_undefined(empty, type(self).__name__, "no value was seen")
        return torch.where(empty, torch.full_like(value, math.nan), value)

    def _logged_value(self) -> Any:
        """:meth:`compute` as a host float (``nan`` if nothing was seen), without its tensors."""
        value: Tensor = getattr(self, self.state_name)
        if value.ndim or type(self).compute is not _Extreme.compute:  # a subclass's own compute is what it logs
            return super()._logged_value()
        number = value.item()
        return math.nan if number == self._empty else number


def _extreme_doc(name: str, word: str, op: str, empty: str, example: str) -> str:
    """The docstring of :class:`Max` or :class:`Min` (they differ in words only)."""
    return rf"""Running {word} :math:`\{op}_i x_i` in float64.

    Args:
        nan_strategy: TorchMetrics' NaN handling, as for :class:`Sum`; the default ``"error"`` rejects NaN.
        validate_args: reject non-numbers and NaN/inf (one host read per update).
        kwargs: TorchMetrics options.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values.

    Note:
        State: one float64 scalar, ``{op}``-reduced across ranks (an empty rank holds ``{empty}``).
        The {word} of no value is ``nan`` with an ``UndefinedMetricWarning``. Under ``Windowed``, a
        validated update whose every value is dropped for NaN (``"ignore"``/``"warn"``) takes no window room.

    Examples:
        >>> from torchmetrics_ext.aggregation import {name}
        >>> metric = {name}()
        >>> metric.update([3.0, 7.0])
        >>> metric.compute()
        tensor({example}, dtype=torch.float64)
    """


class Max(_Extreme, MaxMetric):  # noqa: D101 (the docstring comes from _extreme_doc)
    __doc__ = _extreme_doc("Max", "maximum", "max", "-inf", "7.")
    is_differentiable = True  # type: ignore[assignment]
    _keeps_max = True


class Min(_Extreme, MinMetric):  # noqa: D101 (the docstring comes from _extreme_doc)
    __doc__ = _extreme_doc("Min", "minimum", "min", "inf", "3.")
    is_differentiable = True  # type: ignore[assignment]
    _keeps_max = False
