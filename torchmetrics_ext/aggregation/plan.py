"""One typed step per ``(dataset, name)`` of a batch: what ``MetricsAggregator.update`` applies.

A step is built (and its values checked) before any step is applied, so a rejected batch changes
nothing. There is one step type per kind of handler metric:

* :class:`Fold`: an :class:`~torchmetrics_ext.aggregation.base.AggregationMetric` (every default
  handler) summarized the values itself; applying the step folds that summary in.
* :class:`Update`: any other ``torchmetrics.Metric`` (a registered handler) gets its public
  ``update`` with the values as a float64 1-D tensor, or as the list of categories for
  ``CATEGORICAL_COUNT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric as TorchMetric

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import check_categories, number_tensor
from torchmetrics_ext.aggregation.types import AggregationType

__all__ = ["Fold", "Step", "Update", "plan_step"]


class Fold(NamedTuple):
    """Fold a summary made by the metric's own ``summarize``."""

    metric: AggregationMetric[Any]
    summary: Any

    def apply(self) -> None:
        """Fold the summary into the metric (one update)."""
        self.metric.fold(self.summary)


class Update(NamedTuple):
    """Call a registered handler metric's public ``update`` with checked values."""

    metric: TorchMetric
    values: Tensor | list[Any]

    def apply(self) -> None:
        """Update the metric with the values."""
        self.metric.update(self.values)


Step = Fold | Update


def plan_step(metric: TorchMetric, agg_type: AggregationType, values: Sequence[Any], device: torch.device) -> Step:
    """Check one key's values for ``metric`` and prepare its update; changes nothing.

    Raises:
        TypeError: on a value of the wrong kind (a non-number, a category that is no ``str``/``int``).
        ValueError: on NaN/inf values (or what the metric's ``summarize`` rejects).
    """
    if isinstance(metric, AggregationMetric):
        return Fold(metric, metric.summarize(values))
    if agg_type is AggregationType.CATEGORICAL_COUNT:
        return Update(metric, list(check_categories(values)))
    return Update(metric, number_tensor(values).to(device))
