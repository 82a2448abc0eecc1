"""``AggregationMetric``: the base of the aggregation metrics and their two-step batch protocol."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from torchmetrics_ext.metrics.base import TaskMetric, refuse_while_synced

__all__ = ["AggregationMetric"]

S = TypeVar("S")


class AggregationMetric(TaskMetric, Generic[S]):
    """A :class:`~torchmetrics_ext.metrics.base.TaskMetric` that folds batches of plain values in two steps.

    ``update`` is TorchMetrics' method for tensors. Batches of plain Python values (the values
    of :class:`~torchmetrics_ext.aggregation.Metric` records) go through two public steps:

    1. ``summary = metric.summarize(values)`` checks the batch and reduces it to the metric's
       sufficient statistics (a small typed tuple ``S``) without touching any state. A bad value
       raises ``TypeError``/``ValueError`` naming it.
    2. ``metric.fold(summary)`` adds the statistics to the states and counts one update, exactly
       as ``update`` would have (``update_count`` grows by one, a cached ``compute`` is dropped).

    ``update`` and ``fold`` change the states through the same ``_fold``, so the two paths
    cannot drift apart. :class:`~torchmetrics_ext.aggregation.MetricsAggregator` summarizes every
    key of a batch before it folds any, so a rejected batch changes nothing, and it calls
    ``fold`` directly (one call per key and batch, without the few microseconds of TorchMetrics'
    update wrapper, which would dominate its update time).

    Subclasses implement :meth:`summarize` and :meth:`_fold` (and ``update`` in terms of
    ``_fold``).

    In a :class:`~torchmetrics_ext.Windowed`, a sample is a row of ``value`` (its first axis, as for
    TorchMetrics' ``SumMetric``/``MeanMetric``); a number or 0-dim value is one sample.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.aggregation import AggregationMetric, Mean
        >>> metric = Mean()
        >>> isinstance(metric, AggregationMetric)
        True
        >>> summary = metric.summarize([1, 2, 4.5])  # checked and reduced; no state changed yet
        >>> summary, metric.update_count
        (MeanBatch(weighted_sum=7.5, weight=3.0), 0)
        >>> metric.summarize([1, "a"])  # a bad batch raises before anything is folded
        Traceback (most recent call last):
        torchmetrics_ext.WrongTypeError: Expected a number, got 'a' (str).
        >>> metric.fold(summary)
        >>> metric.update(torch.tensor([0.5]))  # tensors take TorchMetrics' update
        >>> metric.update_count, metric.compute()  # (1 + 2 + 4.5 + 0.5) / 4
        (2, tensor(2., dtype=torch.float64))
    """

    sample_axis: ClassVar[int] = 0  # rows of `value` (the pointwise metrics' samples are its last axis)

    @abstractmethod
    def summarize(self, values: Sequence[Any]) -> S:
        """Check a batch of plain values and reduce it to sufficient statistics; changes no state."""

    @abstractmethod
    def _fold(self, summary: S) -> None:
        """Add a batch's sufficient statistics to the states (the one place the states change)."""

    def _logged_value(self) -> Any:
        """This rank's value for :class:`~torchmetrics_ext.aggregation.MetricsAggregator`'s logging, as it stands.

        ``compute``'s value without TorchMetrics' wrapper (no sync, no copies, no cache); a subclass may
        return it as host numbers instead of tensors (a ``float``, or a dict of ``float``), the same
        numbers bit for bit, without building the tensors only to read them back; such a shortcut is
        taken only while ``compute`` is the class's own (a further subclass that overrides ``compute``
        logs what its ``compute`` returns).
        """
        return type(self).compute(self)

    def fold(self, summary: S) -> None:
        """Add a batch summary from :meth:`summarize` to the states; counts as one update.

        Raises:
            TorchMetricsUserError: the metric is synced (between ``sync()`` and ``unsync()``), as ``update``.
        """
        refuse_while_synced(self, "fold")
        self._fold(summary)
        state = self.__dict__  # this metric's own counters, set without nn.Module.__setattr__
        state["_update_count"] += 1
        state["_computed"] = None
        if self.compute_on_cpu:
            self._move_list_states_to_cpu()
