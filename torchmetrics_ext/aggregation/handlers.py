"""Default metrics per aggregation type and the batch checks/statistics of ``MetricsAggregator``.

Everything here is private to :mod:`torchmetrics_ext.aggregation.aggregator`: the default metric
factories (validation off: the aggregator validates whole batches itself), the exact float64
batch statistics of the built-in metrics' fast path, and the error messages of rejected records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import mul
from typing import Any

import torch
from torchmetrics import Metric as TorchMetric

from torchmetrics_ext.aggregation.categorical import CategoricalCount
from torchmetrics_ext.aggregation.metrics import Distribution, Max, Mean, Min, Sum
from torchmetrics_ext.aggregation.types import AggregationType

MetricFactory = Callable[[], TorchMetric]
_FORMAT = "torchmetrics_ext.MetricsAggregator/1"
Key = tuple[str, str]


def _sum() -> TorchMetric:
    return Sum(nan_strategy="disable", validate_args=False)


def _mean() -> TorchMetric:
    return Mean(nan_strategy="disable", validate_args=False)


def _max() -> TorchMetric:
    return Max(nan_strategy="disable", validate_args=False)


def _min() -> TorchMetric:
    return Min(nan_strategy="disable", validate_args=False)


def _distribution() -> TorchMetric:
    return Distribution(validate_args=False)


def _categorical() -> TorchMetric:
    return CategoricalCount(validate_args=False)


# the aggregator validates whole batches itself, so its default metrics skip their own checks
_DEFAULT_FACTORIES: dict[AggregationType, MetricFactory] = {
    AggregationType.SUM: _sum,
    AggregationType.MEAN: _mean,
    AggregationType.MAX: _max,
    AggregationType.MIN: _min,
    AggregationType.DISTRIBUTION: _distribution,
    AggregationType.CATEGORICAL_COUNT: _categorical,
}
_BUILTIN: dict[AggregationType, type] = {
    AggregationType.SUM: Sum,
    AggregationType.MEAN: Mean,
    AggregationType.MAX: Max,
    AggregationType.MIN: Min,
    AggregationType.DISTRIBUTION: Distribution,
    AggregationType.CATEGORICAL_COUNT: CategoricalCount,
}
_JOINERS = {AggregationType.DISTRIBUTION: "_stat_", AggregationType.CATEGORICAL_COUNT: "_count_"}
_SIMPLE = frozenset((AggregationType.SUM, AggregationType.MEAN, AggregationType.MAX, AggregationType.MIN))


def _simple_stats(agg_type: AggregationType, values: list[Any]) -> tuple[float, ...] | None:
    """A batch's SUM/MEAN/MAX/MIN statistic in exact float64 (``math.fsum``); None if a value is bad."""
    try:
        total = math.fsum(values)
        if not math.isfinite(total):
            return None
        if agg_type is AggregationType.SUM:
            return (total,)
        if agg_type is AggregationType.MEAN:
            return (total, float(len(values)))
        return (float(max(values)),) if agg_type is AggregationType.MAX else (float(min(values)),)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None


def _distribution_stats(values: list[Any]) -> tuple[float, ...] | None:
    """count, sum, sum of squares, min, max of a batch in exact float64, or None if a value is bad."""
    try:
        total = math.fsum(values)
        floats = list(map(float, values))
        total_sq = math.fsum(map(mul, floats, floats))
        if not (math.isfinite(total) and math.isfinite(total_sq)):
            return None
        return float(len(floats)), total, total_sq, min(floats), max(floats)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None


def _count_update(metric: TorchMetric) -> None:
    """What TorchMetrics' update wrapper records, for the built-in metrics updated directly."""
    state = metric.__dict__
    state["_computed"] = None
    state["_update_count"] += 1


_CATEGORY_TYPES = frozenset((str, int))
_FIELDS = ("dataset_name", "name", "value", "agg_type")


def _bad_record_message(records: list[Any]) -> str:
    for record in records:
        if not all(hasattr(record, field) for field in _FIELDS):
            return f"Expected every record to be a Metric, got {type(record).__name__}: {record!r}."
        try:
            hash((record.dataset_name, record.name, record.agg_type))
        except TypeError:
            return f"Expected hashable dataset_name, name and agg_type, got {record!r}."
    return "Expected every record to be a Metric."


def _is_category(value: object) -> bool:
    return type(value) is str or type(value) is int or (isinstance(value, (str, int)) and not isinstance(value, bool))


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        return False


def _type_name(agg_type: AggregationType) -> str:
    return agg_type.name if isinstance(agg_type, AggregationType) else repr(agg_type)


def _raise_bad_value(key: Key, agg_type: AggregationType, values: list[Any], tensors: bool = False) -> None:
    """Raise the error for the first bad value of a key (or return if all are fine)."""
    for value in values:
        single = not isinstance(value, (str, bytes)) and _is_number(value)
        if tensors and single:
            try:
                single = torch.tensor([value], dtype=torch.float64).shape == (1,)
            except (TypeError, ValueError, RuntimeError):
                single = False
        if not single:
            error = ValueError if _is_number_like(value) else TypeError
            kind = "a finite number" if error is ValueError or not isinstance(value, (str, bytes)) else "a number"
            raise error(
                f"Metric {key[1]!r} of dataset {key[0]!r} is a {_type_name(agg_type)}: expected {kind}, "
                f"got {value!r} ({type(value).__name__})."
            )
    if not tensors:
        raise ValueError(
            f"Metric {key[1]!r} of dataset {key[0]!r} is a {_type_name(agg_type)}: the batch's sum overflows float64."
        )


def _is_number_like(value: object) -> bool:
    """A number that is NaN or inf (a ValueError rather than a TypeError)."""
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        return False
    return not isinstance(value, (str, bytes))
