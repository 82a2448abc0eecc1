"""How :class:`~torchmetrics_ext.aggregation.MetricsAggregator`'s metrics sync under ``torch.distributed``.

The aggregator's logging first exchanges its keys (one ``all_gather_object``, which also carries
every ``CategoricalCount``'s category names), then gathers the states of all its own metrics at
once through :func:`~torchmetrics_ext.utilities.distributed.fused_gather` (``1 + D``
collectives, ``D`` the number of state dtypes), whatever the number of keys. Each metric then
reduces the gathered states with TorchMetrics' own arithmetic (its ``_sync_dist``, answered from
the gathered states: :meth:`~torchmetrics_ext.TaskMetric.synced_from`), so the values are those of
its own sync. TorchMetrics' own classes whose states are tensors (``SumMetric``, ``MeanMetric``,
...) join too. A metric that cannot join (list states, a ``dist_sync_fn``, process group,
``sync_on_compute`` or ``_sync_dist`` of its own) syncs through TorchMetrics as before, after the
fused gather, in the agreed key order.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric as TorchMetric
from torchmetrics.metric import jit_distributed_available

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.categorical import CategoricalCount, Category, _Counted
from torchmetrics_ext.aggregation.distribution import Distribution
from torchmetrics_ext.metrics.base import TaskMetric, _replay
from torchmetrics_ext.utilities.distributed import fused_gather
from torchmetrics_ext.utilities.warnings import naming_metric

__all__ = [
    "CATEGORIES",
    "STATES",
    "UNSYNCED",
    "Layout",
    "Reported",
    "SyncEntry",
    "reported_percentiles",
    "state_layout",
    "sync_kind",
    "synced_values",
]

STATES = "states"  # gathered state by state, reduced by TorchMetrics' dist_reduce_fx
CATEGORIES = "categories"  # a CategoricalCount: its counts laid out by the ranks' union of categories, summed
UNSYNCED = "unsynced"  # never syncs (`sync_on_compute=False`): each rank computes its own; not in the fused sync
# received bytes per all-gather (every rank's part together): 64 ranks x 1 MiB, e.g. ~25 DISTRIBUTION sketches each
GATHER_BYTES = 64 * 2**20
_STATE_SYNCS = (TaskMetric._sync_dist, Distribution._sync_dist)

SyncEntry = tuple[TorchMetric, str, Sequence[Category] | None]  # (metric, kind, union of categories)
Layout = tuple[tuple[str, str], ...]  # (state name, "dtype/ndim" or "list") per state, in sync order
_LAYOUTS: dict[Layout, Layout] = {}  # one object per layout: a keys' exchange pickles each layout once
Reported = tuple[tuple[float, ...], ...]  # the sorted percentiles of each Distribution in a metric, once each
_REPORTED: dict[Reported, Reported] = {}  # as _LAYOUTS
_UNNAMED = nullcontext()  # an entry without a name: its metric's warnings name it as they do


def state_layout(metric: TorchMetric) -> Layout:
    """``metric``'s states as every rank's metric of one key must hold them to sync together.

    Each state's name (in the order TorchMetrics gathers them) and ``"dtype/ndim"`` (``"list"``
    for a list state): ranks whose metrics of one key differ here cannot sync them, through the
    fused gather or TorchMetrics (which gathers state by state, by position).

    Examples:
        >>> from torchmetrics.aggregation import SumMetric
        >>> from torchmetrics_ext.aggregation import Sum
        >>> state_layout(Sum()), state_layout(SumMetric())
        ((('sum_value', 'torch.float64/0'),), (('sum_value', 'torch.float32/0'),))
    """
    # under the names checkpoints give them: Sum's "sum_value_nanerror" is "sum_value" under any nan_strategy
    layout = tuple(
        (name, "list" if isinstance(value, list) else f"{value.dtype}/{value.ndim}")
        for name, value in metric.metric_state.items()
    )
    return _LAYOUTS.setdefault(layout, layout)


def reported_percentiles(metric: TorchMetric) -> Reported | None:
    """The percentiles ``metric`` logs, sorted, of each :class:`Distribution` in it (a wrapper's too); ``None``: none.

    They are no state, so :func:`state_layout` cannot tell them apart; yet ranks whose metrics of one
    key report other percentiles would each log other keys of the pooled sketch (``p95`` on one
    rank, ``p99.9`` on another). The aggregator's keys' exchange carries them, at no extra
    collective, and refuses a mismatch on every rank. The order is left out: ``(95, 5, 50)`` logs
    the keys ``(5, 50, 95)`` does.

    Examples:
        >>> from torchmetrics_ext import Windowed
        >>> from torchmetrics_ext.aggregation import Distribution, Sum
        >>> reported_percentiles(Distribution(percentiles=(95, 5, 50))), reported_percentiles(Sum())
        (((5.0, 50.0, 95.0),), None)
        >>> reported_percentiles(Windowed(Distribution(percentiles=(50,)), window_size=10))  # lifetime and window
        ((50.0,),)
    """
    if isinstance(metric, Distribution):
        found: Reported = (tuple(sorted(metric.percentiles)),)
    elif not metric._modules:  # no child metric (every other aggregation metric): nothing to walk
        return None
    else:
        found = tuple(
            dict.fromkeys(tuple(sorted(m.percentiles)) for m in metric.modules() if isinstance(m, Distribution))
        )
        if not found:
            return None
    return _REPORTED.setdefault(found, found)


def sync_kind(metric: TorchMetric, group: Any) -> str | None:
    """How ``metric`` takes part in the aggregator's fused sync over ``group``; ``None``: its own TorchMetrics sync.

    :data:`UNSYNCED` for a metric that never syncs (``sync_on_compute=False``): it takes no part in
    any sync, so every rank's metric of a key must be one (or none may be: the syncing ranks would
    wait for the others in their sync).

    Examples:
        >>> from torchmetrics.aggregation import SumMetric
        >>> from torchmetrics_ext.aggregation import CategoricalCount, Distribution, Sum
        >>> from torchmetrics.aggregation import CatMetric, MeanMetric
        >>> [sync_kind(m, None) for m in (Sum(), Distribution(), CategoricalCount(), SumMetric(), MeanMetric())]
        ['states', 'states', 'categories', 'states', 'states']
        >>> sync_kind(Sum(sync_on_compute=False), None)  # never syncs
        'unsynced'
        >>> sync_kind(CatMetric(), None) is None  # a list state: left to TorchMetrics
        True
    """
    if not metric.sync_on_compute:
        return UNSYNCED
    if (
        metric.dist_sync_fn is not None
        or metric.process_group is not group
        or metric.distributed_available_fn is not jit_distributed_available
    ):
        return None
    sync = type(metric)._sync_dist
    if isinstance(metric, CategoricalCount) and sync is CategoricalCount._sync_dist:
        return CATEGORIES if metric._own_compute() else None  # a subclass's compute: after its own sync
    if any(isinstance(default, list) for default in metric._defaults.values()):
        return None
    if sync is TorchMetric._sync_dist or (isinstance(metric, TaskMetric) and sync in _STATE_SYNCS):
        return STATES  # TorchMetrics' own sync (a registered TorchMetrics class), or this package's
    return None


def synced_values(entries: Sequence[SyncEntry], group: Any, names: Sequence[str | None] | None = None) -> list[Any]:
    """Every entry's value synced over ``group``, from one fused gather; every rank must call it alike.

    A ``STATES`` metric's value is its ``compute()`` over the gathered states; a ``CATEGORIES``
    one's is the whole value (categories and summed counts) its own sync would give. ``names``: the
    name each entry's warnings give its metric (:func:`~torchmetrics_ext.utilities.warnings.naming_metric`).
    """
    payloads: list[dict[str, Tensor]] = []
    for metric, kind, union in entries:
        if kind == CATEGORIES and isinstance(metric, CategoricalCount) and union is not None:
            payloads.append({"counts": metric._counts_in(union)})
        elif kind == STATES and isinstance(metric, TaskMetric):
            payloads.append(metric.sync_states())
        elif kind == STATES:  # TorchMetrics' own metric: its tensor states as they are
            payloads.append({name: getattr(metric, name) for name in metric._reductions})
        else:
            raise TypeError(f"{type(metric).__name__} cannot join the fused sync as {kind!r}.")
    gathered = fused_gather(payloads, group, max_bytes=GATHER_BYTES)
    values: list[Any] = []
    for (metric, _, union), states, name in zip(entries, gathered, names or [None] * len(entries), strict=True):
        with _UNNAMED if name is None else naming_metric(name):
            if isinstance(metric, CategoricalCount) and union is not None:
                values.append(_Counted(list(union), torch.stack(states["counts"]).sum(0)))
            elif isinstance(metric, AggregationMetric):
                values.append(_logged_from(metric, states))
            elif isinstance(metric, TaskMetric):
                with metric.synced_from(states):
                    values.append(metric.compute())
            else:
                values.append(_computed_from(metric, states))
    return values


def _computed_from(metric: TorchMetric, gathered: dict[str, list[Tensor]]) -> Any:
    """A TorchMetrics metric's ``compute`` of the ``gathered`` states, reduced by TorchMetrics' own ``_sync_dist``.

    As :func:`_logged_from`: the state attributes are replaced by the reduced tensors for the class's
    ``compute`` (not the instance's wrapper, which would sync again) and the local ones put back.
    """
    local = {name: metric.__dict__[name] for name in metric._reductions}
    try:
        TorchMetric._sync_dist(metric, _replay(gathered, list(metric._reductions)))
        return type(metric).compute(metric)
    finally:
        metric.__dict__.update(local)


def _logged_from(metric: AggregationMetric, gathered: dict[str, list[Tensor]]) -> Any:
    """``metric``'s logged value of the ``gathered`` states, reduced as its own sync reduces them; states kept.

    The metric's ``_sync_dist`` (TorchMetrics' stacking and ``dist_reduce_fx``, after the metric's own
    fixes of the gathered states) replaces the state attributes by new tensors; the local ones are
    put back afterwards untouched, so TorchMetrics' copy of every state and its compute wrapper
    (most of a sync's local cost, ~0.3 ms per metric) are not needed.
    """
    local = {name: metric.__dict__[name] for name in metric._reductions}
    try:
        with metric.synced_from(gathered):
            metric._sync_dist()
            return metric._logged_value()
    finally:
        metric.__dict__.update(local)
