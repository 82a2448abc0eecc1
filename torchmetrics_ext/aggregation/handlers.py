"""The default handler of each aggregation type: the metric class a new ``(dataset, name)`` gets."""

from __future__ import annotations

from collections.abc import Callable

from torchmetrics import Metric as TorchMetric

from torchmetrics_ext.aggregation.categorical import CategoricalCount
from torchmetrics_ext.aggregation.distribution import Distribution
from torchmetrics_ext.aggregation.scalar import Max, Mean, Min, Sum
from torchmetrics_ext.aggregation.types import AggregationType

__all__ = ["DEFAULT_HANDLERS", "MetricFactory"]

MetricFactory = Callable[[], TorchMetric]

DEFAULT_HANDLERS: dict[AggregationType, MetricFactory] = {
    AggregationType.SUM: Sum,
    AggregationType.MEAN: Mean,
    AggregationType.MAX: Max,
    AggregationType.MIN: Min,
    AggregationType.DISTRIBUTION: Distribution,
    AggregationType.CATEGORICAL_COUNT: CategoricalCount,
}
