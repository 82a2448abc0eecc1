"""What :class:`~torchmetrics_ext.module.RecMetricModule`'s ``compute()`` reads besides its metrics' own values.

The states each metric sends in the module's one fused gather; the throughput's rates from that
gather (never a cached value: every rank joins the collective); the state metrics' values (a
TorchMetrics metric computed afresh on every rank) as 0-dim tensors; and the one way a value is
written under its key (two values under one key are refused).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from torchmetrics_ext.metrics.base import TaskMetric, _replay, computed_fresh, counted_as_updated, syncs_on_compute
from torchmetrics_ext.utilities.distributed import TypedGather, has_untyped_list_states


def _payload(metric: Metric) -> dict[str, Tensor]:
    """What a metric sends in the fused gather: a task metric's sync states, the throughput's tensor states."""
    if isinstance(metric, TaskMetric):
        return metric.sync_states()
    return {name: getattr(metric, name) for name in metric._reductions}


def _throughput_rates(throughput: Metric, gathered: Mapping[str, list[Tensor]] | None) -> dict[str, Tensor]:
    """The throughput's values from its states in the module's fused gather, or (``None``) this rank's own.

    Every rank computes from the gather it took part in, never from TorchMetrics' cached value
    (a rank with no update since the last ``compute`` would serve its cache and skip the
    collective the others wait in); the metric's own cache is left as it was found. As for the
    module's metrics, no "compute before update" warning: a rank without a step of its own reports
    the others' synced steps, and rates without a timed step are ``nan`` with their own warning.
    """
    state = throughput.__dict__
    to_sync, cached = state["_to_sync"], state["_computed"]
    state["_to_sync"], state["_computed"] = False, None
    try:
        with counted_as_updated([throughput]):
            if gathered is None:
                return throughput.compute()
            replay = _replay(gathered, list(throughput._reductions))
            with throughput.sync_context(dist_sync_fn=replay, distributed_available=lambda: True):
                return throughput.compute()
    finally:
        state["_to_sync"], state["_computed"] = to_sync, cached


def _metric_of(fn: Any) -> Metric | MetricCollection | None:
    """The TorchMetrics metric or collection a state metric is (itself, or its ``compute``); ``None`` if neither."""
    if isinstance(fn, (Metric, MetricCollection)):
        return fn
    bound = inspect.unwrap(fn)  # TorchMetrics' compute wrapper (and ours) keep the bound method as `__wrapped__`
    owner = getattr(bound, "__self__", None)
    if isinstance(owner, (Metric, MetricCollection)) and getattr(bound, "__name__", None) == "compute":
        return owner if fn == owner.compute else None
    return None


def _state_metric_value(fn: Callable[[], Any], sync: bool) -> Any:
    """A state metric's value: ``fn()``, or a TorchMetrics metric's (collection's) ``compute()`` afresh on every rank.

    TorchMetrics' ``compute()`` returns the value it cached at the last one, without syncing, on a
    rank that has not updated since; a rank that has syncs and waits for it in a collective it never
    joins (a hang), and the idle rank reports a value without the others' new samples. Every rank
    computes such a metric (and each metric it wraps) afresh instead, so all join its sync; list
    states of no declared dtype (``BinaryAUROC``'s) sync through
    :class:`~torchmetrics_ext.utilities.distributed.TypedGather`, so a rank that never updated
    (whose empty list TorchMetrics sends as float32) joins the gather of the others' samples. With
    ``sync=False`` (``local_compute``) the metric computes this rank's states, without communication.
    The metrics' own settings and cached values are put back as they were found.
    """
    metric = _metric_of(fn)
    if metric is None:
        return fn()
    tree = [m for m in metric.modules() if isinstance(m, Metric)]  # a wrapper's metrics compute in its compute
    saved = [(m, m.__dict__["_to_sync"], m.__dict__["dist_sync_fn"], m.__dict__["_computed"]) for m in tree]
    try:
        if not sync:  # this rank's own value, whether or not the metrics sync on compute
            for m in tree:
                m.__dict__["_to_sync"], m.__dict__["_computed"] = False, None
            return metric.compute()
        syncing = [m for m in tree if syncs_on_compute(m)]
        for m in syncing:
            m.__dict__["_computed"] = None
            if has_untyped_list_states(m):
                m.__dict__["dist_sync_fn"] = TypedGather(m.dist_sync_fn)
        # a rank without an update of its own computes the others' synced states: no "compute before update"
        with counted_as_updated(syncing):
            return computed_fresh(metric, metric.compute) if isinstance(metric, Metric) else metric.compute()
    finally:
        for m, to_sync, sync_fn, cached in saved:
            m.__dict__["_to_sync"], m.__dict__["dist_sync_fn"] = to_sync, sync_fn
            if not sync:
                m.__dict__["_computed"] = cached


def _put(out: dict[str, Tensor], key: str, value: Tensor) -> None:
    """``out[key] = value`` for a key not given yet: two values under one key would lose one silently."""
    if key in out:
        raise ValueError(
            f"Two values map to the key {key!r}: rename a metric, state metric or task (or use the other key_style)."
        )
    out[key] = value


def _scalar(value: Any, name: str) -> Tensor:
    """A 0-dim tensor: a floating tensor keeps its dtype; Python numbers and integer tensors become float64.

    (``torch.as_tensor(1e-4)`` alone would round a learning rate to float32.) A tensor is copied and
    detached: the value at this ``compute`` (a scheduler updates a tensor learning rate in place, and
    a parameter's norm would carry its autograd graph into the logged dict).
    """
    error = ValueError(f"State metric {name!r} must return a real scalar (or a dict of them), got {value!r}.")
    if isinstance(value, (bool, str, bytes)) or value is None or isinstance(value, Mapping):
        raise error
    try:
        tensor = value.detach().clone() if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise error from None
    if tensor.numel() != 1 or tensor.is_complex():
        raise error
    return tensor.reshape(()).to(torch.float64) if not tensor.is_floating_point() else tensor.reshape(())
