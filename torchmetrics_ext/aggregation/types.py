"""The aggregation types and the per-sample record that data pipelines emit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["AggregationType", "Metric", "MetricValue"]

MetricValue = int | float | str


class AggregationType(Enum):
    """How the values of one ``(dataset, name)`` are combined across samples and ranks.

    * ``SUM``: running total (samples seen, tokens seen).
    * ``MEAN``: running mean of the values.
    * ``MAX`` / ``MIN``: extremes.
    * ``DISTRIBUTION``: lifetime mean, min, max, std and percentiles from a mergeable sketch
      (:class:`~torchmetrics_ext.aggregation.Distribution`).
    * ``CATEGORICAL_COUNT``: how many times each category (a ``str`` or ``int``) was seen.

    Examples:
        >>> AggregationType("sum")
        AggregationType.SUM
    """

    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    DISTRIBUTION = "distribution"
    CATEGORICAL_COUNT = "categorical_count"

    # members are singletons compared by identity: hash them by identity too (a C slot, no
    # Python call), which makes grouping a batch of records by (dataset, name, type) cheap
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


@dataclass(frozen=True, slots=True)
class Metric:
    """One per-sample record: a value for metric ``name`` of dataset ``dataset_name``.

    This is a plain record (not a ``torchmetrics.Metric``): a :class:`MetricTransform` attaches
    a list of them to each sample and a :class:`MetricsAggregator` folds them into
    ``torchmetrics.Metric`` states. It is immutable, hashable and picklable, so it crosses
    DataLoader worker processes unchanged.

    Attributes:
        dataset_name: the dataset namespace, e.g. ``"alpaca"``; logged as ``{prefix}_{dataset_name}``.
            A non-empty string (:meth:`MetricsAggregator.update` refuses ``""``, as
            :meth:`MetricTransform.set_dataset_name` does).
        name: the metric's name within the dataset, e.g. ``"tokens_seen"``; a non-empty string.
        value: a number for SUM/MEAN/MAX/MIN/DISTRIBUTION: a real Python or NumPy number (``bool`` as
            0/1; a complex one is refused), or a one-element real tensor or NumPy array of any shape
            (``torch.tensor([3.0])``, ``np.array([2.0])``); a ``str`` or ``int`` category for
            CATEGORICAL_COUNT (an ``int`` subclass or NumPy integer, or a one-element integer tensor
            or array, is its ``int``;
            ``bool`` and floats are not categories). Anything else (an array of another size, an
            ``int`` too long for Python to write in decimal) is refused by
            :meth:`MetricsAggregator.update` with the record named, before anything changes.
        agg_type: how values are combined.

    Examples:
        >>> Metric("alpaca", "tokens_seen", 100, AggregationType.SUM)
        Metric(dataset_name='alpaca', name='tokens_seen', value=100, agg_type=AggregationType.SUM)
    """

    dataset_name: str
    name: str
    value: MetricValue
    agg_type: AggregationType
