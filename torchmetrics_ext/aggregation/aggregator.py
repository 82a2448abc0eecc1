"""``MetricsAggregator``: dataset-namespaced aggregation of per-sample records on TorchMetrics states."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from itertools import chain
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric as TorchMetric

from torchmetrics_ext.aggregation.categorical import CategoricalCount
from torchmetrics_ext.aggregation.handlers import (
    _BUILTIN,
    _CATEGORY_TYPES,
    _DEFAULT_FACTORIES,
    _FORMAT,
    _JOINERS,
    _SIMPLE,
    Key,
    MetricFactory,
    _bad_record_message,
    _count_update,
    _distribution_stats,
    _is_category,
    _raise_bad_value,
    _simple_stats,
    _type_name,
)
from torchmetrics_ext.aggregation.types import AggregationType, Metric
from torchmetrics_ext.functional.distribution import _sketch_index
from torchmetrics_ext.utilities.data import ordered_union
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

__all__ = ["MetricsAggregator"]


class MetricsAggregator:
    r"""Aggregates per-sample :class:`Metric` records per ``(dataset, name)`` into TorchMetrics states.

    Each ``(dataset_name, name)`` gets its own ``torchmetrics.Metric`` (by default
    :class:`Sum`, :class:`Mean`, :class:`Max`, :class:`Min`, :class:`Distribution` or
    :class:`CategoricalCount` for its :class:`AggregationType`), held in the
    :class:`torch.nn.ModuleDict` ``self.metrics``. :meth:`update` groups a batch of records by
    key and makes one tensor update per key. :meth:`get_metrics_for_logging` returns
    ``{f"{prefix}_{dataset}/{name}": float}``; a DISTRIBUTION expands to ``{name}_stat_mean``,
    ``_stat_min``, ``_stat_max``, ``_stat_std``, ``_stat_p05``, ``_stat_p50``, ``_stat_p95`` and a
    CATEGORICAL_COUNT to ``{name}_count_{category}``.

    Under ``torch.distributed`` (any backend), :meth:`get_metrics_for_logging` is a collective:
    every rank must call it. Ranks first exchange their keys (dataset, name, type and, for
    categorical counts, the category names; ``all_gather_object`` of keys only), create the
    metrics they lack, align categories to the union, then sync each metric's tensors through
    TorchMetrics. Every rank returns the same dict, whatever datasets, metrics or categories it
    saw (including none).

    Args:
        process_group: the group to aggregate over (default: the whole world).

    Raises:
        TypeError: from :meth:`update`, on a record that is not a :class:`Metric`, a non-number
            value for SUM/MEAN/MAX/MIN/DISTRIBUTION or a value that is not a ``str``/``int`` for
            CATEGORICAL_COUNT.
        ValueError: from :meth:`update`, on NaN/inf values or a ``(dataset, name)`` reused with
            another aggregation type (the message names both). A rejected batch changes nothing.

    Note:
        Memory: one metric per key; a DISTRIBUTION holds a fixed 38.7 kB sketch, a
        CATEGORICAL_COUNT one float64 per category. Values that are undefined (the ``std`` of a
        single value) are left out of the logging dict, as torchtune does. Nothing here is a
        ``MetricCollection``, so compute groups can never merge two datasets' metrics.

    Example:
        >>> from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
        >>> aggregator = MetricsAggregator()
        >>> batch1_metrics = [
        ...     Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        ...     Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
        ... ]
        >>> batch2_metrics = [
        ...     Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        ...     Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
        ... ]
        >>> aggregator.update(batch1_metrics)
        >>> aggregator.update(batch2_metrics)
        >>> results = aggregator.get_metrics_for_logging(prefix="train")
        >>> results
        {'train_alpaca/tokens_seen': 200.0, 'train_alpaca/avg_tokens_seen': 100.0}
        >>> results == {"train_alpaca/tokens_seen": 200.0, "train_alpaca/avg_tokens_seen": 100.0}
        True
    """

    def __init__(self, process_group: Any | None = None) -> None:
        self.process_group = process_group
        self.metrics = nn.ModuleDict()
        self._factories: dict[AggregationType, MetricFactory] = dict(_DEFAULT_FACTORIES)
        # (dataset, name) -> (aggregation type, name in self.metrics, the metric)
        self._keys: dict[Key, tuple[AggregationType, str, TorchMetric]] = {}
        self._next_id = 0
        self._device = torch.device("cpu")

    # ------------------------------------------------------------------ configuration

    def register_handler(self, agg_type: AggregationType, metric_factory: MetricFactory) -> None:
        """Use ``metric_factory()`` for new keys of ``agg_type``.

        The metric's ``update`` is called once per batch and key with a float64 1-D tensor of the
        values (a list of categories for CATEGORICAL_COUNT); ``compute`` returns a scalar tensor
        or a dict of them (logged as ``{name}_{key}``, ``{name}_stat_{key}`` for DISTRIBUTION and
        ``{name}_count_{key}`` for CATEGORICAL_COUNT).

        Raises:
            TypeError: if ``agg_type`` is not an :class:`AggregationType` or the factory is not callable.
            ValueError: if keys of ``agg_type`` already exist (call :meth:`reset` first).
        """
        if not isinstance(agg_type, AggregationType):
            raise TypeError(f"Expected `agg_type` to be an AggregationType, got {agg_type!r}.")
        if not callable(metric_factory) or isinstance(metric_factory, nn.Module):
            raise TypeError(
                "Expected `metric_factory` to be a callable returning a new torchmetrics.Metric "
                f"(e.g. the class or a lambda), got {type(metric_factory).__name__}."
            )
        used = [key for key, (t, _, _) in self._keys.items() if t is agg_type]
        if used:
            raise ValueError(
                f"Cannot replace the {_type_name(agg_type)} handler: {len(used)} metric(s) already use it "
                f"(e.g. {used[0]}); call reset() first."
            )
        self._factories[agg_type] = metric_factory

    def to(self, device: torch.device | str) -> MetricsAggregator:
        """Move every metric (and the ones created later) to ``device``."""
        self._device = torch.device(device)
        self.metrics.to(self._device)
        return self

    def reset(self) -> None:
        """Forget every ``(dataset, name)`` and its state (registered handlers are kept)."""
        self.metrics = nn.ModuleDict()
        self._keys = {}
        self._next_id = 0

    # ------------------------------------------------------------------ update

    def update(self, records: Iterable[Metric]) -> None:
        """Fold a batch of records in: one tensor update per ``(dataset, name)``.

        The whole batch is validated before any of it is applied; a rejected batch changes nothing.
        """
        records = records if isinstance(records, list) else list(records)
        grouped: defaultdict[tuple[str, str, AggregationType], list[Any]] = defaultdict(list)
        try:
            for record in records:
                grouped[record.dataset_name, record.name, record.agg_type].append(record.value)
        except (AttributeError, TypeError):
            raise TypeError(_bad_record_message(records)) from None
        if not grouped:
            return
        types: dict[Key, AggregationType] = {}
        values: dict[Key, list[Any]] = {}
        for (ds, name, agg_type), group in grouped.items():
            key = (ds, name)
            if key in types:
                raise ValueError(self._conflict(key, types[key], agg_type))
            types[key] = agg_type
            values[key] = group
        plan = self._plan(values, types)
        fresh = {key: self._make(agg_type) for key, agg_type in types.items() if key not in self._keys}
        for key, new_metric in fresh.items():  # only once every handler succeeded
            self._create(key, types[key], new_metric)
        for key, kind, payload in plan:
            metric: Any = self._keys[key][2]
            if kind == "stats":  # built-in SUM/MEAN/MAX/MIN: one in-place op per state
                _count_update(metric)
                metric._add_stats(*payload)
            elif kind == "sketch":  # built-in DISTRIBUTION: exact moments + the values' bucket index
                stats, sketch_values = payload
                _count_update(metric)
                metric._accumulate(*stats, _sketch_index(sketch_values, metric.spec))
            elif kind == "categories" and type(metric) is CategoricalCount:
                _count_update(metric)
                CategoricalCount.update(metric, payload)
            else:  # a registered handler's metric: its public update
                metric.update(payload)

    @staticmethod
    def _conflict(key: Key, old: AggregationType, new: AggregationType) -> str:
        return (
            f"Metric {key[1]!r} of dataset {key[0]!r} is aggregated as {_type_name(old)}; "
            f"it cannot also be aggregated as {_type_name(new)}. Use another metric name."
        )

    def _builtin(self, key: Key, agg_type: AggregationType) -> bool:
        """Whether the key's metric is (or will be) the built-in metric of its type."""
        known = self._keys.get(key)
        if known is not None:
            return type(known[2]) is _BUILTIN[agg_type]
        return self._factories[agg_type] is _DEFAULT_FACTORIES[agg_type]

    def _plan(self, groups: dict[Key, list[Any]], types: dict[Key, AggregationType]) -> list[tuple[Key, str, Any]]:
        """Validate the whole batch and prepare one update per key: ``(key, kind, payload)``."""
        plan: list[tuple[Key, str, Any]] = []
        tensor_keys: list[Key] = []
        for key, agg_type in types.items():
            if not isinstance(agg_type, AggregationType) or agg_type not in self._factories:
                raise ValueError(f"Metric {key[1]!r} of dataset {key[0]!r} has an unknown agg_type {agg_type!r}.")
            known = self._keys.get(key)
            if known is not None and known[0] is not agg_type:
                raise ValueError(self._conflict(key, known[0], agg_type))
            values = groups[key]
            if agg_type is AggregationType.CATEGORICAL_COUNT:
                if not set(map(type, values)) <= _CATEGORY_TYPES:
                    for value in values:
                        if not _is_category(value):
                            raise TypeError(
                                f"Metric {key[1]!r} of dataset {key[0]!r} is a CATEGORICAL_COUNT: "
                                "expected str or "
                                f"int categories, got {value!r} ({type(value).__name__})."
                            )
                plan.append((key, "categories", values))
            elif agg_type in _SIMPLE and self._builtin(key, agg_type):
                stats = _simple_stats(agg_type, values)
                if stats is None:
                    _raise_bad_value(key, agg_type, values)
                plan.append((key, "stats", stats))
            elif agg_type is AggregationType.DISTRIBUTION and self._builtin(key, agg_type):
                stats = _distribution_stats(values)
                if stats is None:
                    _raise_bad_value(key, agg_type, values)
                tensor_keys.append(key)
                plan.append((key, "sketch", stats))
            else:
                tensor_keys.append(key)
                plan.append((key, "tensor", None))
        if tensor_keys:
            flat_values = list(chain.from_iterable(groups[key] for key in tensor_keys))
            try:
                flat = torch.tensor(flat_values, dtype=torch.float64)
                ok = flat.ndim == 1 and bool(torch.isfinite(flat).all())
            except (TypeError, ValueError, RuntimeError):
                ok = False
            if not ok:
                for key in tensor_keys:
                    _raise_bad_value(key, types[key], groups[key], tensors=True)
            tensors = dict(
                zip(
                    tensor_keys,
                    flat.to(self._device).split([len(groups[k]) for k in tensor_keys]),
                    strict=True,
                )
            )
            plan = [
                (
                    key,
                    kind,
                    (payload, tensors[key]) if kind == "sketch" else tensors[key] if kind == "tensor" else payload,
                )
                for key, kind, payload in plan
            ]
        return plan

    def _make(self, agg_type: AggregationType) -> TorchMetric:
        """A new metric from the handler of ``agg_type`` (not registered yet)."""
        metric = self._factories[agg_type]()
        if not isinstance(metric, TorchMetric):
            raise TypeError(
                f"The {_type_name(agg_type)} handler returned {type(metric).__name__}, not a torchmetrics.Metric."
            )
        if self.process_group is not None:
            metric.process_group = self.process_group
        return metric

    def _create(self, key: Key, agg_type: AggregationType, metric: TorchMetric | None = None) -> TorchMetric:
        """Register a metric (a new one from the handler unless given) for ``key``."""
        metric = self._make(agg_type) if metric is None else metric
        name = f"m{self._next_id}"
        self._next_id += 1
        metric = metric.to(self._device)
        self.metrics[name] = metric
        self._keys[key] = (agg_type, name, metric)
        return metric

    # ------------------------------------------------------------------ logging

    def _distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1

    def _agree_on_keys(self) -> None:
        """Exchange keys (and category names) across ranks; create and align what this rank lacks."""
        local = []
        for (ds, name), (agg_type, _, metric) in self._keys.items():
            cats = metric.categories if isinstance(metric, CategoricalCount) else None
            local.append((ds, name, agg_type.value, cats))
        gathered: list[Any] = [None] * dist.get_world_size(self.process_group)
        dist.all_gather_object(gathered, local, group=self.process_group)
        union: dict[Key, AggregationType] = {}
        categories: dict[Key, list[list[Any]]] = {}
        for entries in gathered:
            for ds, name, agg_value, cats in entries:
                key, agg_type = (ds, name), AggregationType(agg_value)
                if key in union and union[key] is not agg_type:
                    raise ValueError(self._conflict(key, union[key], agg_type) + " (the ranks disagree)")
                union[key] = agg_type
                if cats is not None:
                    categories.setdefault(key, []).append(cats)
        for key, agg_type in union.items():
            if key not in self._keys:
                self._create(key, agg_type)
        self._keys = {key: self._keys[key] for key in union}
        for key, lists in categories.items():
            metric = self._keys[key][2]
            if isinstance(metric, CategoricalCount):
                metric._align(ordered_union(lists))

    def get_metrics_for_logging(self, prefix: str = "train") -> dict[str, float]:
        """``{f"{prefix}_{dataset}/{name}": value}`` over everything seen on every rank.

        A collective under ``torch.distributed``: every rank must call it, and every rank gets
        the same dict.
        """
        distributed = self._distributed()
        if distributed:
            self._agree_on_keys()
        out: dict[str, float] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            warnings.filterwarnings("ignore", message=".*compute.*was called before.*update", category=UserWarning)
            for (ds, name), (agg_type, _, metric) in self._keys.items():
                value = self._compute(metric, agg_type, distributed)
                base = f"{prefix}_{ds}/{name}"
                if isinstance(value, dict):
                    joiner = _JOINERS.get(agg_type, "_")
                    items = list(value.items())
                    numbers = torch.stack([v.reshape(()) for _, v in items]).tolist() if items else []
                    for (sub, _), number in zip(items, numbers, strict=True):
                        if not math.isnan(number):
                            out[f"{base}{joiner}{sub}"] = number
                else:
                    number = float(value)
                    if not math.isnan(number):
                        out[base] = number
        return out

    @staticmethod
    def _compute(metric: TorchMetric, agg_type: AggregationType, distributed: bool) -> Any:
        """The metric's value: synced through TorchMetrics under DDP, directly otherwise."""
        if not distributed:
            if type(metric) is _BUILTIN[agg_type]:
                return type(metric).compute(metric)  # no sync to do: skip the wrapper's copies
            return metric.compute()
        metric._computed = None  # a cached value would skip this rank's part of the sync
        categorical = isinstance(metric, CategoricalCount)
        if categorical:
            metric._keys_agreed = True  # categories were agreed on with the keys
        try:
            return metric.compute()
        finally:
            if categorical:
                metric._keys_agreed = False

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint: ``{"metadata": <JSON-serialisable>, "tensors": {name: Tensor}}``.

        ``metadata`` lists every key (dataset, name, aggregation type, update count, state
        layout); ``tensors`` holds each metric's states (list states entry by entry).
        """
        entries, tensors = [], {}
        for i, ((ds, name), (agg_type, _, metric)) in enumerate(self._keys.items()):
            layout: dict[str, int | None] = {}
            for state, value in metric.metric_state.items():
                if isinstance(value, Tensor):
                    layout[state] = None
                    tensors[f"{i}/{state}"] = value.detach().cpu().clone()
                else:
                    layout[state] = len(value)
                    for j, item in enumerate(value):
                        tensors[f"{i}/{state}/{j}"] = item.detach().cpu().clone()
            entries.append(
                {
                    "dataset_name": ds,
                    "name": name,
                    "agg_type": agg_type.value,
                    "update_count": int(metric._update_count),
                    "states": layout,
                }
            )
        return {"metadata": {"format": _FORMAT, "metrics": entries}, "tensors": tensors}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from :meth:`state_dict` (replacing everything held now).

        Raises:
            ValueError: if the checkpoint is not one of this class or does not fit the current handlers.
        """
        metadata = state_dict.get("metadata") if isinstance(state_dict, dict) else None
        if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
            raise ValueError(f"Expected a state dict made by MetricsAggregator.state_dict() (format {_FORMAT!r}).")
        tensors = state_dict["tensors"]
        fresh = MetricsAggregator(self.process_group)
        fresh._factories = self._factories
        fresh._device = self._device
        for i, entry in enumerate(metadata["metrics"]):
            key, agg_type = (entry["dataset_name"], entry["name"]), AggregationType(entry["agg_type"])
            metric = fresh._create(key, agg_type)
            if set(metric.metric_state) != set(entry["states"]):
                raise ValueError(
                    f"Checkpointed states {sorted(entry['states'])} of {key} do not match the "
                    f"{_type_name(agg_type)} "
                    f"handler's states {sorted(metric.metric_state)}."
                )
            for state, length in entry["states"].items():
                if length is None:
                    value: Any = tensors[f"{i}/{state}"].clone().to(self._device)
                else:
                    value = [tensors[f"{i}/{state}/{j}"].clone().to(self._device) for j in range(length)]
                setattr(metric, state, value)
            metric._update_count = int(entry["update_count"])
            metric._computed = None
        self.metrics, self._keys, self._next_id = fresh.metrics, fresh._keys, fresh._next_id
