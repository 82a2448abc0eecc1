"""Dataset-namespaced aggregation of per-sample records (torchtune's data metrics) on TorchMetrics states.

A :class:`MetricTransform` attaches :class:`Metric` records to each sample inside the data
pipeline; a :class:`MetricsAggregator` folds them into one ``torchmetrics.Metric`` per
``(dataset, name)`` and returns ``{"train_<dataset>/<name>": value}`` for logging, identical on
every rank. The per-type metrics (:class:`Sum`, :class:`Mean`, :class:`Max`, :class:`Min`,
:class:`Distribution`, :class:`CategoricalCount`) are usable on their own; they share the
two-step batch protocol of :class:`AggregationMetric` (``summarize`` then ``fold``) that the
aggregator calls.
"""

from torchmetrics_ext.aggregation.aggregator import MetricsAggregator
from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.categorical import CategoricalCount
from torchmetrics_ext.aggregation.distribution import Distribution
from torchmetrics_ext.aggregation.scalar import Max, Mean, Min, Sum
from torchmetrics_ext.aggregation.transform import DefaultTrainingMetricTransform, MetricTransform
from torchmetrics_ext.aggregation.types import AggregationType, Metric
from torchmetrics_ext.utilities.warnings import SketchRangeWarning

__all__ = [
    "AggregationMetric",
    "AggregationType",
    "CategoricalCount",
    "DefaultTrainingMetricTransform",
    "Distribution",
    "Max",
    "Mean",
    "Metric",
    "MetricTransform",
    "MetricsAggregator",
    "Min",
    "SketchRangeWarning",
    "Sum",
]
