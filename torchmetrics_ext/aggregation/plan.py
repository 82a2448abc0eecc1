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
  registered.
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
from torchmetrics_ext.utilities.snapshot import Restore, snapshot

__all__ = ["Fold", "Step", "Update", "apply_updates", "plan_step"]


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


def apply_updates(steps: Sequence[Update], fresh: Sequence[TorchMetric]) -> None:
    """Apply the :class:`Update` steps of a batch, all or nothing.

    A registered metric's ``update`` may still refuse values the aggregator accepted (its own
    checks); then every metric these steps already changed, that one included, is put back as it
    was, and the error propagates. The whole handler is put back
    (:func:`~torchmetrics_ext.utilities.snapshot.snapshot` with ``writes_in_place``): its states,
    update count and cached value, and those of the metrics inside it and its helper objects (a
    ``Windowed``'s lifetime and window metrics and its ring), tensors written in place included. A
    metric of ``fresh`` (a key this batch creates, dropped on an error) needs no copy. Only
    registered metrics that are no :class:`~torchmetrics_ext.aggregation.base.AggregationMetric`
    take this path: the default handlers' :class:`Fold` steps cannot fail and copy nothing.
    """
    new = {id(metric) for metric in fresh}
    undo: list[Restore] = []
    try:
        for step in steps:
            if id(step.metric) not in new:
                undo.append(snapshot(step.metric, writes_in_place=True))
            step.apply()
    except BaseException:
        for restore in reversed(undo):
            restore()
        raise
    for restore in undo:
        restore.release()


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
