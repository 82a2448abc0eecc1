"""One typed step per ``(dataset, name)`` of a batch: what ``MetricsAggregator.update`` applies.

A step is built (and its values checked) before any step is applied, so a rejected batch changes
nothing. There is one step type per kind of handler metric:

* :class:`Fold`: an :class:`~torchmetrics_ext.aggregation.base.AggregationMetric` (every default
  handler) summarized the values itself; applying the step folds that summary in.
* :class:`Update`: any other ``torchmetrics.Metric`` (a registered handler) gets its public
  ``update`` with the values as a float64 1-D tensor, or as the list of categories for
  ``CATEGORICAL_COUNT``. Its ``update`` may still refuse them (the metric's own checks):
  :func:`apply_updates` applies a batch's :class:`Update` steps first and undoes them all on an
  error, before any :class:`Fold` step (which cannot fail) and before the batch's new keys are
  registered. It copies only what an error could need back (see :func:`apply_updates`).

A SUM/MEAN/MAX/MIN batch refused for NaN is an :class:`Update` of the metric's ``update`` too, any
metric's (an :class:`~torchmetrics_ext.aggregation.base.AggregationMetric` included), where the
metric declares a ``nan_strategy`` that takes NaN (:func:`takes_nan`); its values are checked
without their NaN first (:func:`plan_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric as TorchMetric
from torchmetrics.aggregation import MaxMetric, MinMetric

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import check_categories, nan_flags, number_tensor, plain_numbers
from torchmetrics_ext.aggregation.distribution import Distribution
from torchmetrics_ext.aggregation.scalar import Max, Mean, Min, Sum
from torchmetrics_ext.aggregation.types import AggregationType
from torchmetrics_ext.metrics.base import GuardedMetric
from torchmetrics_ext.utilities.snapshot import Restore, snapshot
from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["Fold", "Step", "Update", "apply_updates", "plan_step", "takes_nan"]


class Fold(NamedTuple):
    """Fold a summary made by the metric's own ``summarize``."""

    metric: AggregationMetric[Any]
    summary: Any

    def apply(self) -> None:
        """Fold the summary into the metric (one update)."""
        self.metric.fold(self.summary)


class Update(NamedTuple):
    """Call a handler metric's public ``update`` with checked values.

    ``finite`` is ``False`` for values holding NaN that the metric's own ``nan_strategy`` takes
    (:func:`plan_step`): such an update is never taken for one that cannot refuse.
    """

    metric: TorchMetric
    values: Tensor | list[Any]
    finite: bool = True

    def apply(self) -> None:
        """Update the metric with the values."""
        self.metric.update(self.values)


Step = Fold | Update

# TorchMetrics' aggregations whose update takes every float64 1-D tensor of finite values (see _cannot_refuse)
_TORCHMETRICS_EXTREMES: tuple[type, ...] = (MaxMetric, MinMetric)


# the wrapped metrics whose update takes every float64 1-D tensor of finite values (no other check of
# theirs applies to it: tests/test_aggregation_wrappers.py feeds them every kind of value the aggregator accepts)
_TAKE_ANY_FINITE: tuple[type, ...] = (Sum, Mean, Max, Min, Distribution)


def _cannot_refuse(step: Update) -> bool:
    """Whether ``step.apply()`` cannot raise: ``MaxMetric``/``MinMetric``, or a ``Windowed`` of the package's.

    That is TorchMetrics' ``MaxMetric`` and ``MinMetric``, or a ``Windowed`` around one of this
    package's value aggregations.
    The values of an :class:`Update` that is no ``CATEGORICAL_COUNT`` are a float64 1-D tensor
    of finite numbers (:func:`~torchmetrics_ext.aggregation.checks.number_tensor`, never empty),
    which those metrics' ``update`` and the wrapper take as they are. Exact classes only (a
    subclass may add checks of its own). ``MaxMetric``/``MinMetric`` check only for NaN (none
    here), cast to their dtype and rebind their state (``torch.max``/``torch.min``, no write in
    place, nothing refused in or out of inference mode); their state's device must be the values'
    (another device may raise). The wrapper's other refusals are checked here: an ``update``
    between a manual ``sync`` and ``unsync``, a window smaller than the world.
    """
    metric = step.metric
    if not step.finite:  # NaN left to the metric's nan_strategy: its own checks decide
        return False
    if type(metric) in _TORCHMETRICS_EXTREMES:
        return _plain_extreme(metric, step.values)
    if type(metric) is not Windowed or not isinstance(step.values, Tensor):
        return False
    bound = metric.__dict__.get("update")  # a Windowed binds its own `update` (not TorchMetrics' wrapper)
    if bound is not None and getattr(bound, "__func__", None) is not Windowed.update:
        return False
    modules = metric._modules
    life, window = modules["lifetime"], modules["window"]
    if type(life) not in _TAKE_ANY_FINITE or metric._is_synced or life._is_synced or window._is_synced:  # type: ignore[union-attr]
        return False
    try:
        metric._local_window()
    except ValueError:
        return False
    return True


def _plain_extreme(metric: TorchMetric, values: Tensor | list[Any]) -> bool:
    """Whether ``metric`` (an exact ``MaxMetric``/``MinMetric``) runs its own class's update on ``values``' device."""
    if not isinstance(values, Tensor):
        return False
    bound = metric.__dict__.get("update")  # TorchMetrics' wrapper around the bound update, set in __init__
    if getattr(getattr(bound, "__wrapped__", None), "__func__", None) is not type(metric).update:
        return False
    name = getattr(metric, "state_name", None)
    state = metric.__dict__.get(name) if isinstance(name, str) else None
    return isinstance(state, Tensor) and state.device == values.device


def _unchanged_when_refused(metric: TorchMetric) -> bool:
    """Whether ``metric.update`` leaves it as it was when it raises: the package's own metrics promise it.

    :class:`~torchmetrics_ext.wrappers.windowed.Windowed` (its update writes a free slot of its
    ring and the wrapped metric's scratch copy before it changes anything) and
    :class:`~torchmetrics_ext.metrics.base.GuardedMetric`, whose ``update`` is the package's own
    (a subclass defined elsewhere may write its states before its checks).
    """
    if not isinstance(metric, (Windowed, GuardedMetric)):
        return False
    update = getattr(type(metric), "update", None)
    return getattr(update, "__module__", "").startswith("torchmetrics_ext.")


def apply_updates(steps: Sequence[Update], fresh: Sequence[TorchMetric]) -> None:
    """Apply the :class:`Update` steps of a batch, all or nothing.

    A registered metric's ``update`` may still refuse values the aggregator accepted (its own
    checks); then every metric these steps already changed, that one included, is put back as it
    was, and the error propagates. The whole handler is put back
    (:func:`~torchmetrics_ext.utilities.snapshot.snapshot` with ``writes_in_place``): its states,
    update count and cached value, and those of the metrics inside it and its helper objects (a
    ``Windowed``'s lifetime and window metrics and its ring), tensors written in place included.
    A metric that cannot be put back (its update resized a state in place) does not stop the
    others: see :func:`_roll_back` (its error propagates, the refusal as its context).

    Each step updates a metric of its own (one per key), so their order is free: the steps that
    may raise run first, those that cannot (:func:`_cannot_refuse`: TorchMetrics' ``MaxMetric``
    and ``MinMetric``, a ``Windowed`` around ``Sum``, ``Mean``, ``Max``, ``Min`` or
    ``Distribution``) after them, with no copy. The last step that
    may raise needs no copy either when its metric is left as it was by a refused update
    (:func:`_unchanged_when_refused`), nor does a metric of ``fresh`` (a key this batch creates,
    dropped on an error). Only registered metrics that are no
    :class:`~torchmetrics_ext.aggregation.base.AggregationMetric`, or a batch's NaN left to a
    metric's ``nan_strategy``, take this path: the default handlers' :class:`Fold` steps cannot fail
    and copy nothing.
    """
    risky: list[Update] = []
    safe: list[Update] = []
    for step in steps:
        (safe if _cannot_refuse(step) else risky).append(step)
    new = {id(metric) for metric in fresh}
    undo: list[tuple[TorchMetric, Restore]] = []
    last = len(risky) - 1
    try:
        for i, step in enumerate(risky):
            if id(step.metric) not in new and not (i == last and _unchanged_when_refused(step.metric)):
                undo.append((step.metric, snapshot(step.metric, writes_in_place=True)))
            step.apply()
    except BaseException:
        _roll_back(undo)
        raise
    for _, restore in undo:
        restore.release()
    for step in safe:
        step.apply()


def _roll_back(undo: Sequence[tuple[TorchMetric, Restore]]) -> None:
    """Put back every metric of ``undo`` that can be (last changed first), then release every snapshot.

    A restore that raises (a user's metric that resized a state in place, which the copy no longer
    fits) does not stop the others: every other metric is put back and every snapshot released
    (a window ring stops keeping its rewritten buffers) before the first such error propagates, the
    refusal that started the rollback as its ``__context__``, a note naming the metric that may
    still hold part of the refused batch, and one note per further failed restore.
    """
    failed: list[tuple[TorchMetric, BaseException]] = []
    for metric, restore in reversed(undo):
        try:
            restore()
        except Exception as err:
            failed.append((metric, err))
    for metric, restore in undo:
        try:
            restore.release()
        except Exception as err:  # pragma: no cover - the package's rings only drop a record
            failed.append((metric, err))
    if not failed:
        return
    metric, first = failed[0]
    add_note(
        first,
        f"While undoing a refused batch, its {type(metric).__name__} handler could not be put back as it was: it "
        "may hold part of that batch (every handler whose restore did not fail was put back).",
    )
    for other, later in failed[1:]:
        add_note(
            first, f"The {type(other).__name__} handler could not be put back either: {type(later).__name__}: {later}"
        )
    raise first


def add_note(error: BaseException, note: str) -> None:
    """Append ``note`` to ``error.__notes__`` (what ``add_note`` does on Python 3.11+; not printed on 3.10).

    Never raises, so the error it is told about is the one that propagates: where ``__notes__`` is
    set to something that is no list (a user's error that set it to a tuple), it is left as it is
    and the note dropped, where Python's ``BaseException.add_note`` raises ``TypeError`` instead.
    """
    notes = getattr(error, "__notes__", None)
    if notes is None:
        error.__notes__ = [note]
    elif isinstance(notes, list):
        notes.append(note)


def plan_step(metric: TorchMetric, agg_type: AggregationType, values: Sequence[Any], device: torch.device) -> Step:
    """Check one key's values for ``metric`` and prepare its update; changes nothing.

    A SUM/MEAN/MAX/MIN batch refused for holding NaN is planned again by :func:`_nan_step` where
    the metric takes NaN (:func:`takes_nan`): a batch without NaN never takes that second look.

    Raises:
        TypeError: on a value of the wrong kind (a non-number, a category that is no ``str``/``int``).
        ValueError: on NaN (unless the metric takes NaN) or inf values (or what the metric's ``summarize`` rejects).
    """
    try:
        if isinstance(metric, AggregationMetric):
            return Fold(metric, metric.summarize(values))
        if agg_type is AggregationType.CATEGORICAL_COUNT:
            return Update(metric, list(check_categories(values)))
        return Update(metric, number_tensor(values).to(device))
    except ValueError as error:
        if isinstance(error, TypeError):  # a value of the wrong type (WrongTypeError): no NaN to take
            raise
        step = _nan_step(metric, agg_type, values, device)
        if step is None:
            hint = _windowed_nan_hint(metric, agg_type, values)
            if hint:
                raise ValueError(f"{str(error).rstrip('.')}{hint}") from None
            raise
        return step


# the aggregation types whose records a handler's nan_strategy may take NaN of (DISTRIBUTION and
# CATEGORICAL_COUNT refuse NaN whatever the handler)
_NAN_TYPES = frozenset((AggregationType.SUM, AggregationType.MEAN, AggregationType.MAX, AggregationType.MIN))
_NAN_TAKEN = frozenset(("warn", "ignore", "disable"))


def takes_nan(metric: TorchMetric) -> bool:
    """Whether ``metric`` declares that it takes NaN: its ``nan_strategy`` is not ``"error"``.

    TorchMetrics' aggregation metrics (``MeanMetric``...) and this package's :class:`Sum`,
    :class:`Mean`, :class:`Max` and :class:`Min` hold their ``nan_strategy`` as that attribute:
    ``"warn"``, ``"ignore"``, ``"disable"`` or a float fill value take NaN. A metric without the
    attribute (a wrapper such as ``Windowed``, any other metric) or with ``"error"`` does not.
    """
    strategy = getattr(metric, "nan_strategy", "error")
    if isinstance(strategy, str):
        return strategy in _NAN_TAKEN
    return isinstance(strategy, float)


def _windowed_nan_hint(metric: TorchMetric, agg_type: AggregationType, values: Sequence[Any]) -> str:
    """Why a ``Windowed`` handler around a metric that takes NaN refuses a batch holding NaN (else ``""``).

    Its wrapped metric would drop the NaN records from the lifetime and window values, but the
    window would count each of them as a sample (the update's size), so the window would not be
    the one over the records kept: NaN stays refused rather than giving that window.
    """
    wrapped = metric.lifetime if isinstance(metric, Windowed) else None
    if wrapped is None or agg_type not in _NAN_TYPES or not takes_nan(wrapped):
        return ""
    if not any(nan_flags(plain_numbers(values))):
        return ""
    return (
        f" (a Windowed handler refuses NaN whatever its metric's nan_strategy "
        f"({getattr(wrapped, 'nan_strategy', None)!r}): its window would count each dropped record as a sample; "
        "drop NaN records before the aggregator, or register the metric without Windowed)."
    )


def _nan_step(
    metric: TorchMetric, agg_type: AggregationType, values: Sequence[Any], device: torch.device
) -> Update | None:
    """The update of a batch holding NaN for a metric that takes NaN, or ``None`` where NaN stays refused.

    The values that are not NaN are checked as a batch without NaN would be (the metric's
    ``summarize``, or :func:`number_tensor`: inf, a non-number, an overflowing sum are refused);
    then the metric's public ``update`` gets every value, NaN included, as a float64 1-D tensor,
    and its ``nan_strategy`` drops, fills or keeps them (``"warn"``: one warning of the metric's
    per update).
    """
    if agg_type not in _NAN_TYPES or not takes_nan(metric):
        return None
    values = plain_numbers(values)
    nan = nan_flags(values)
    if not any(nan):
        return None
    kept = [value for value, flag in zip(values, nan, strict=True) if not flag]
    if isinstance(metric, AggregationMetric):
        metric.summarize(kept)  # its own checks of the rest; changes nothing
    else:
        number_tensor(kept)
    return Update(metric, torch.tensor(values, dtype=torch.float64).to(device), finite=False)
