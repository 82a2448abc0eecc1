"""MetricsAggregator when a registered handler misbehaves: a rollback that cannot put one handler back, a
``metric_factory`` that raises, and the TorchMetrics ``MaxMetric``/``MinMetric`` handlers updated without a copy.

Every expected value is plain Python (``math.fsum``, ``max``, ``min``) over the records the aggregator accepted.
"""

from __future__ import annotations

import math
import traceback

import numpy as np
import pytest
import torch
from torchmetrics import Metric as TorchMetric
from torchmetrics.aggregation import MaxMetric, MinMetric

from tests.helpers.handler_metrics import NonNegativeTotal, Total, count_snapshots
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

A = AggregationType


class GrowingCounts(TorchMetric):
    """Counts of non-negative integer values, in a buffer grown in place (``resize_``) when a larger value comes.

    A snapshot cannot put it back after a growth: the copy of the old, shorter buffer does not fit the grown one.
    """

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("counts", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values):
        size = int(values.max()) + 1
        if size > self.counts.numel():
            old = self.counts.numel()
            self.counts.resize_(size)
            self.counts[old:] = 0
        self.counts.index_add_(0, values.long(), torch.ones_like(values))

    def compute(self):
        return self.counts.sum()


def rollback_aggregator() -> MetricsAggregator:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, Total)
    aggregator.register_handler(A.MAX, GrowingCounts)
    aggregator.register_handler(A.MIN, NonNegativeTotal)
    return aggregator


def test_a_rollback_that_cannot_put_one_handler_back_puts_back_all_the_others():
    """The rollback of a refused batch stopped at the first handler it could not put back: the handlers before it
    kept the refused values. Now every other handler is put back, and the restore's error propagates (the refusal
    as its context, a note naming the handler). Reference: plain-Python sums of the accepted records."""
    aggregator = rollback_aggregator()
    accepted = [
        [Metric("d", "tokens", 3.0, A.SUM), Metric("d", "lens", 1.0, A.MAX), Metric("d", "guard", 2.0, A.MIN)],
        [Metric("d", "tokens", 5.0, A.SUM), Metric("d", "loss", 0.5, A.MEAN), Metric("d", "guard", 4.0, A.MIN)],
    ]
    for records in accepted:
        aggregator.update(records)
    refused = [
        Metric("d", "tokens", 100.0, A.SUM),  # taken first
        Metric("d", "loss", 9.0, A.MEAN),
        Metric("d", "lens", 9.0, A.MAX),  # grows its buffer: cannot be put back
        Metric("d", "guard", -1.0, A.MIN),  # refused last
    ]
    with pytest.raises(RuntimeError, match="must match the size") as excinfo:
        aggregator.update(refused)
    assert isinstance(excinfo.value.__context__, ValueError)
    assert "NonNegativeTotal takes no negative values" in str(excinfo.value.__context__)
    logged = aggregator.get_metrics_for_logging()
    assert logged["train_d/tokens"] == math.fsum([3.0, 5.0])
    assert logged["train_d/guard"] == math.fsum([2.0, 4.0])
    assert logged["train_d/loss"] == 0.5
    assert "GrowingCounts" in "".join(getattr(excinfo.value, "__notes__", []))
    more = [Metric("d", "tokens", 7.0, A.SUM), Metric("d", "guard", 1.0, A.MIN)]
    aggregator.update(more)
    logged = aggregator.get_metrics_for_logging()
    assert logged["train_d/tokens"] == math.fsum([3.0, 5.0, 7.0])
    assert logged["train_d/guard"] == math.fsum([2.0, 4.0, 1.0])


def test_a_rollback_releases_every_window_ring_even_when_a_restore_fails(monkeypatch):
    """Every snapshot is released after the rollback, also those whose restore raised (a ring stops recording)."""
    from torchmetrics_ext.aggregation import plan

    released = []
    real = plan.snapshot

    def recording(metric, **kwargs):
        restore = real(metric, **kwargs)
        inner = restore.release

        def release():
            released.append(type(metric).__name__)
            inner()

        restore.release = release
        return restore

    monkeypatch.setattr(plan, "snapshot", recording)
    aggregator = rollback_aggregator()
    aggregator.update([Metric("d", "tokens", 1.0, A.SUM), Metric("d", "lens", 1.0, A.MAX)])
    aggregator.update([Metric("d", "guard", 1.0, A.MIN)])
    refused = [Metric("d", "tokens", 1.0, A.SUM), Metric("d", "lens", 8.0, A.MAX), Metric("d", "guard", -1.0, A.MIN)]
    with pytest.raises(RuntimeError):
        aggregator.update(refused)
    assert sorted(released) == ["GrowingCounts", "NonNegativeTotal", "Total"]


class HandlerSetupError(Exception):
    """A user's own error type, raised by the factory."""


def failing_factory():
    raise HandlerSetupError("the handler's config file is missing")


def not_a_metric_factory():
    return {"max": 0.0}


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (failing_factory, HandlerSetupError, "config file is missing"),
        (not_a_metric_factory, TypeError, "returned dict"),
    ],
)
def test_a_failing_metric_factory_names_the_key_it_was_making_and_changes_nothing(factory, error, match):
    """The factory's error did not say which key it was building; now it names the dataset, the name and the
    aggregation type (a note on the factory's own error: its type and traceback kept). The batch changes nothing:
    not the other keys' values, not the set of keys. Reference: plain-Python sums."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.MAX, factory)
    aggregator.update([Metric("alpaca", "tokens", 10.0, A.SUM), Metric("alpaca", "loss", 2.0, A.MEAN)])
    before = aggregator.get_metrics_for_logging()
    batch = [
        Metric("alpaca", "tokens", 20.0, A.SUM),
        Metric("alpaca", "new_sum", 1.0, A.SUM),  # a new key made before the failing one: dropped
        Metric("alpaca", "seq_len", 512.0, A.MAX),
        Metric("alpaca", "loss", 4.0, A.MEAN),
    ]
    with pytest.raises(error, match=match) as excinfo:
        aggregator.update(batch)
    text = "".join(traceback.format_exception(excinfo.value))
    assert "'seq_len' of dataset 'alpaca' (MAX)" in text
    assert "'seq_len' of dataset 'alpaca' (MAX)" in "".join(getattr(excinfo.value, "__notes__", []))
    assert aggregator.get_metrics_for_logging() == before == {"train_alpaca/tokens": 10.0, "train_alpaca/loss": 2.0}
    aggregator.update([Metric("alpaca", "tokens", 5.0, A.SUM), Metric("alpaca", "loss", 4.0, A.MEAN)])
    assert aggregator.get_metrics_for_logging() == {
        "train_alpaca/tokens": math.fsum([10.0, 5.0]),
        "train_alpaca/loss": math.fsum([2.0, 4.0]) / 2,
    }


class NotesTupleError(Exception):
    """A user's error whose ``__notes__`` is a tuple, which ``BaseException.add_note`` refuses to extend."""

    def __init__(self, message):
        super().__init__(message)
        self.__notes__ = ("set by the handler",)


def notes_tuple_factory():
    raise NotesTupleError("the handler's config file is missing")


def test_a_factory_error_whose_notes_are_no_list_propagates_as_itself():
    """``add_note`` on an error whose ``__notes__`` is no list raised ``TypeError: Cannot add note`` in place of the
    factory's own error (that error only its context). Now the factory's error propagates, its notes untouched,
    and the batch changes nothing. Reference: the error's class and notes as raised; plain-Python sums."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.MAX, notes_tuple_factory)
    aggregator.update([Metric("alpaca", "tokens", 10.0, A.SUM)])
    with pytest.raises(NotesTupleError, match="config file is missing") as excinfo:
        aggregator.update([Metric("alpaca", "tokens", 20.0, A.SUM), Metric("alpaca", "seq_len", 512.0, A.MAX)])
    assert excinfo.value.__notes__ == ("set by the handler",)
    assert aggregator.get_metrics_for_logging() == {"train_alpaca/tokens": 10.0}


@pytest.mark.parametrize("notes", [None, [], ["earlier"], ("a tuple",), "a string", 3])
def test_add_note_never_replaces_the_error(notes):
    """``plan.add_note`` adds the note where ``__notes__`` is absent or a list and leaves any other value alone,
    raising nothing (Python's own ``add_note`` raises ``TypeError`` there). Reference: plain lists."""
    from torchmetrics_ext.aggregation.plan import add_note

    error = ValueError("refused")
    expected = [*(notes or []), "named"] if notes is None or isinstance(notes, list) else notes
    if notes is not None:
        error.__notes__ = notes
    add_note(error, "named")
    if notes is None or isinstance(notes, list):
        assert error.__notes__ == expected
    else:
        assert error.__notes__ is notes


def test_a_failing_metric_factory_at_load_names_the_checkpoint_entry_and_changes_nothing():
    """Loading a checkpoint makes each key's metric with the handler registered now: a factory that fails there
    names the key and its checkpoint entry too, and the aggregator keeps what it held. Reference: plain-Python sums."""
    saved = MetricsAggregator()
    saved.update([Metric("alpaca", "tokens", 3.0, A.SUM), Metric("alpaca", "seq_len", 512.0, A.MAX)])
    aggregator = MetricsAggregator()
    aggregator.update([Metric("dolly", "tokens", 7.0, A.SUM)])
    aggregator.register_handler(A.MAX, failing_factory)
    with pytest.raises(HandlerSetupError, match="config file is missing") as excinfo:
        aggregator.load_state_dict(saved.state_dict())
    notes = "".join(getattr(excinfo.value, "__notes__", []))
    assert "'seq_len' of dataset 'alpaca' (MAX), checkpoint entry 1" in notes
    aggregator.update([Metric("dolly", "tokens", 2.0, A.SUM)])
    assert aggregator.get_metrics_for_logging() == {"train_dolly/tokens": math.fsum([7.0, 2.0])}


def test_torchmetrics_max_and_min_handlers_are_not_copied_and_stay_exact_after_refused_batches(monkeypatch):
    """``MaxMetric``/``MinMetric`` take every value the aggregator accepts (finite float64): their update runs after
    the steps that may refuse, with no rollback copy (~15 us per key). A subclass, which may check more, is still
    copied. Random batches, about one in three refused; reference: Python max/min of the accepted records."""
    copied = count_snapshots(monkeypatch)

    class CheckedMax(MaxMetric):
        pass

    aggregator = MetricsAggregator()
    aggregator.register_handler(A.MAX, MaxMetric)
    aggregator.register_handler(A.MIN, MinMetric)
    aggregator.register_handler(A.SUM, NonNegativeTotal)
    aggregator.register_handler(A.MEAN, CheckedMax)
    rng = np.random.default_rng(5)
    accepted: dict[str, list[float]] = {"hi": [], "lo": [], "guard": [], "sub": []}
    types = {"hi": A.MAX, "lo": A.MIN, "guard": A.SUM, "sub": A.MEAN}
    first = [Metric("d", name, 0.0, agg_type) for name, agg_type in types.items()]
    aggregator.update(first)
    for name in accepted:
        accepted[name].append(0.0)
    copied.clear()
    refusals = 0
    for _ in range(30):
        records = [
            Metric("d", name, float(rng.integers(-4000, 4000)) / 4, agg_type)  # exact in float32
            for name, agg_type in types.items()
            if name != "guard"
            for _ in range(rng.integers(1, 4))
        ]
        refuse = rng.random() < 0.35
        guard = -1.0 if refuse else float(rng.integers(0, 10))
        records.insert(int(rng.integers(0, len(records) + 1)), Metric("d", "guard", guard, A.SUM))
        if refuse:
            refusals += 1
            with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
                aggregator.update(records)
            continue
        aggregator.update(records)
        for record in records:
            accepted[record.name].append(record.value)
    assert refusals > 0
    assert "MaxMetric" not in copied and "MinMetric" not in copied
    assert "CheckedMax" in copied
    logged = aggregator.get_metrics_for_logging()
    assert logged["train_d/hi"] == max(accepted["hi"])
    assert logged["train_d/lo"] == min(accepted["lo"])
    assert logged["train_d/sub"] == max(accepted["sub"])
    assert logged["train_d/guard"] == math.fsum(accepted["guard"])


class CountsAndTotal(TorchMetric):
    """A count buffer grown in place (``resize_``) next to a total added in place, in either attribute order."""

    full_state_update = False

    def __init__(self, counts_first: bool):
        super().__init__()
        names = ("counts", "total") if counts_first else ("total", "counts")
        for name in names:
            size = 3 if name == "counts" else ()
            self.add_state(name, default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values):
        self.total += values.sum()
        self.counts.resize_(int(values.max()) + 1)

    def compute(self):
        return self.total


@pytest.mark.parametrize("counts_first", [True, False])
def test_a_snapshot_puts_back_every_tensor_it_can_when_one_was_resized(counts_first):
    """``restore()`` stopped at the first tensor that could not take its copy back: a state after it kept the
    operation's writes. Now every other tensor is written back before the error is raised. Reference: the plain
    sum of the values taken before the snapshot."""
    from torchmetrics_ext.utilities.snapshot import snapshot

    metric = CountsAndTotal(counts_first)
    metric.update(torch.tensor([1.0, 2.0], dtype=torch.float64))
    restore = snapshot(metric, writes_in_place=True)
    metric.update(torch.tensor([40.0, 9.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="must match the size"):
        restore()
    restore.release()
    assert metric.total.item() == 1.0 + 2.0
