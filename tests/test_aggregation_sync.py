"""``MetricsAggregator``'s fused sync under real gloo DDP: values, collectives, fallbacks; ``fused_gather`` in parts.

The values of the fused sync are checked against the path it replaces: the same records in an
aggregator whose handlers carry ``dist_sync_fn=gather_all_tensors`` (so each metric syncs
through TorchMetrics, state by state) must log the same dict, float for float; and against the
documented reference of ``tests/helpers/aggregation_reference.py``. Collectives are counted by
wrapping ``torch.distributed``'s functions, which still run.
"""

from __future__ import annotations

import collections
import copy
import enum
import math
import pickle
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric, SumMetric
from torchmetrics.utilities.distributed import gather_all_tensors

from tests.helpers.aggregation_reference import DIST_VALUES, REAL_VALUES, Reference, assert_logged, ref_logged
from torchmetrics_ext.aggregation import (
    AggregationType,
    CategoricalCount,
    Distribution,
    Max,
    Mean,
    Metric,
    MetricsAggregator,
    Min,
    Sum,
)
from torchmetrics_ext.aggregation.sync import sync_kind
from torchmetrics_ext.utilities.distributed import _parts, fused_gather

A = AggregationType
OWN_SYNC = {  # each metric syncs through TorchMetrics (the path before the fused sync)
    A.SUM: partial(Sum, dist_sync_fn=gather_all_tensors),
    A.MEAN: partial(Mean, dist_sync_fn=gather_all_tensors),
    A.MAX: partial(Max, dist_sync_fn=gather_all_tensors),
    A.MIN: partial(Min, dist_sync_fn=gather_all_tensors),
    A.DISTRIBUTION: partial(Distribution, dist_sync_fn=gather_all_tensors),
    A.CATEGORICAL_COUNT: partial(CategoricalCount, dist_sync_fn=gather_all_tensors),
}
_COUNTED = ("all_gather", "all_gather_object", "barrier", "all_reduce", "broadcast", "reduce", "gather")


@contextmanager
def counting() -> Iterator[collections.Counter[str]]:
    """Count this process's calls of ``torch.distributed``'s collectives (each still runs)."""
    counts: collections.Counter[str] = collections.Counter()
    originals = {name: getattr(dist, name) for name in _COUNTED}

    def counted(name: str, *args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return originals[name](*args, **kwargs)

    for name in _COUNTED:
        setattr(dist, name, partial(counted, name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def _log_counted(aggregator: MetricsAggregator) -> tuple[dict[str, float], dict[str, int]]:
    """What ``get_metrics_for_logging`` logs, and the collectives that call made."""
    with counting() as counts:
        logged = aggregator.get_metrics_for_logging()
    return logged, dict(counts)


def _fused_then_own(fused: MetricsAggregator, own: MetricsAggregator) -> tuple[dict[str, Any], ...]:
    """``fused``'s logging and its collectives, those of its next call (every rank then holds every key), ``own``'s."""
    logged, counts = _log_counted(fused)
    _, again = _log_counted(fused)
    return logged, own.get_metrics_for_logging(), counts, again


def rank_records(rank: int, keys_per_type: int, seed: int = 0) -> list[Metric]:
    """Records of every type: datasets shared by both ranks and one of this rank's own; one rank's categories."""
    rng = np.random.default_rng([seed, rank])
    records = []
    for i in range(keys_per_type):
        for ds in ("shared", f"rank{rank}"):
            for agg in (A.SUM, A.MEAN, A.MAX, A.MIN):
                records += [Metric(ds, f"{agg.name.lower()}{i}", float(v), agg) for v in rng.choice(REAL_VALUES, 5)]
            # far from 0 and of different magnitudes per rank: each rank's sums are about its own shift
            offset = 1e9 if rank else 3.0
            records += [Metric(ds, f"d{i}", offset + float(v), A.DISTRIBUTION) for v in rng.choice(DIST_VALUES[:14], 6)]
            categories = ["web", 7, "1", f"only{rank}", 2**70][rank:]
            picked = rng.integers(0, len(categories), 5).tolist()
            records += [Metric(ds, f"c{i}", categories[j], A.CATEGORICAL_COUNT) for j in picked]
    return records


def _log_both(rank: int, world: int, keys_per_type: int) -> tuple[dict[str, float], ...]:
    fused, own = MetricsAggregator(), MetricsAggregator()
    for agg_type, factory in OWN_SYNC.items():
        own.register_handler(agg_type, factory)
    records = rank_records(rank, keys_per_type)
    for lo in range(0, len(records), 17):
        fused.update(records[lo : lo + 17])
        own.update(records[lo : lo + 17])
    return _fused_then_own(fused, own)


@pytest.mark.ddp
def test_fused_sync_logs_what_each_metrics_own_sync_logs_and_the_reference(ddp_pool):
    results = ddp_pool.run(_log_both, 2)
    (fused, own, *_), (fused1, own1, *_) = results
    assert fused == fused1 == own == own1  # float for float, same keys in the same order
    assert list(fused) == list(own)
    ref = Reference()
    for rank in range(2):
        for r in rank_records(rank, 2):
            ref.types[r.dataset_name, r.name] = r.agg_type
            ref.values.setdefault((r.dataset_name, r.name), []).append(r.value)
    expected = ref_logged(ref, "train")
    assert expected is not None
    assert_logged(fused, expected)


@pytest.mark.ddp
def test_collectives_per_logging_call_do_not_grow_with_the_keys(ddp_pool):
    few = ddp_pool.run(_log_both, 1)[0][2:]
    many = ddp_pool.run(_log_both, 10)[0][2:]
    # one exchange of keys (all_gather_object), one gather of the shapes, one of the float64 states; the first
    # call, where each rank lacks the other's keys, also exchanges whether their handlers could make them
    assert few == many == ({"all_gather_object": 2, "all_gather": 2}, {"all_gather_object": 1, "all_gather": 2})


TM_HANDLERS = {A.SUM: SumMetric, A.MEAN: MeanMetric, A.MAX: MaxMetric, A.MIN: MinMetric}


def _torchmetrics_handlers(rank: int, world: int) -> tuple[dict[str, float], ...]:
    """TorchMetrics' own aggregation classes as handlers: fused, and each through its own sync."""
    fused, own = MetricsAggregator(), MetricsAggregator()
    for agg_type, cls in TM_HANDLERS.items():
        fused.register_handler(agg_type, cls)
        own.register_handler(agg_type, partial(cls, dist_sync_fn=gather_all_tensors))
    rng = np.random.default_rng([11, rank])
    records = []
    for agg_type in TM_HANDLERS:
        for ds in ("shared", f"rank{rank}"):  # a dataset of each rank's own: the other makes an empty metric
            records += [Metric(ds, agg_type.name.lower(), float(v), agg_type) for v in rng.choice(REAL_VALUES, 4)]
    for aggregator in (fused, own):
        aggregator.update(records)
    return _fused_then_own(fused, own)


@pytest.mark.ddp
def test_torchmetrics_aggregation_classes_as_handlers_join_the_fused_sync(ddp_pool):
    (fused, own, counts, again), (fused1, own1, *_) = ddp_pool.run(_torchmetrics_handlers)
    assert fused == fused1 == own == own1 and list(fused) == list(own)  # float for float (float32 states)
    values: dict[tuple[str, AggregationType], list[float]] = {}
    for rank in range(2):
        rng = np.random.default_rng([11, rank])
        for agg_type in TM_HANDLERS:
            for ds in ("shared", f"rank{rank}"):
                values.setdefault((ds, agg_type), []).extend(float(v) for v in rng.choice(REAL_VALUES, 4))
    reduce = {A.SUM: math.fsum, A.MEAN: statistics.fmean, A.MAX: max, A.MIN: min}
    assert fused.keys() == {f"train_{ds}/{t.name.lower()}" for ds, t in values}
    for (ds, agg_type), seen in values.items():  # TorchMetrics keeps float32 states
        want = reduce[agg_type](np.float32(seen).astype(float).tolist())
        assert math.isclose(fused[f"train_{ds}/{agg_type.name.lower()}"], want, rel_tol=1e-6, abs_tol=1e-6)
    # the keys' exchange, the shapes and one gather of the float32 states (and at the first call, where each rank
    # lacks the other's keys, whether their handlers could make them)
    assert (counts, again) == ({"all_gather_object": 2, "all_gather": 2}, {"all_gather_object": 1, "all_gather": 2})


def _mixed_handlers(rank: int, world: int) -> tuple[dict[str, float], dict[str, int]]:
    aggregator = MetricsAggregator()
    if rank == 1:  # this rank's SUM metrics sync through TorchMetrics: ranks differ, the key syncs that way
        aggregator.register_handler(A.SUM, partial(Sum, dist_sync_fn=gather_all_tensors))
        aggregator.register_handler(A.MAX, SumMetric)  # a wrong handler, but the same states ("sum_value")
    records = [Metric("d", "both", 1.5 + rank, A.SUM), Metric("d", "mean", 2.0 * rank, A.MEAN)]
    records += [Metric("d", f"only{rank}", 4.0, A.SUM)]  # a key the other rank lacks (it makes the metric)
    aggregator.update(records)
    return _log_counted(aggregator)


@pytest.mark.ddp
def test_ranks_whose_handlers_sync_differently_sync_those_keys_through_torchmetrics(ddp_pool):
    (logged, counts), (logged1, _) = ddp_pool.run(_mixed_handlers)
    assert logged == logged1 == {"train_d/both": 4.0, "train_d/mean": 1.0, "train_d/only0": 4.0, "train_d/only1": 4.0}
    # the MEAN key fused; the three SUM keys through TorchMetrics (a barrier and an all-gather each); the keys a
    # rank lacks: one exchange of whether its handlers could make them
    assert counts == {"all_gather_object": 2, "all_gather": 5, "barrier": 3}


def _no_sync_handler(rank: int, world: int) -> dict[str, float]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, partial(Sum, sync_on_compute=False))
    aggregator.update([Metric("d", "local", 10.0 * (rank + 1), A.SUM), Metric("d", "all", 1.0, A.MAX)])
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
def test_a_handler_that_never_syncs_still_logs_its_rank_alone(ddp_pool):
    assert ddp_pool.run(_no_sync_handler) == [
        {"train_d/local": 10.0, "train_d/all": 1.0},
        {"train_d/local": 20.0, "train_d/all": 1.0},
    ]


def _payloads(rank: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(rank)
    return [
        {
            "a": torch.randn(3 + rank + i, generator=gen, dtype=torch.float64),  # sizes differ between ranks
            "b": torch.randint(0, 9, (2, i), generator=gen),
            "c": torch.tensor(float(i + rank), dtype=torch.float64),
        }
        for i in range(6)
    ]


def _gather_in_parts(rank: int, world: int, max_bytes: int | None) -> tuple[list[Any], dict[str, int]]:
    with counting() as counts:
        gathered = fused_gather(_payloads(rank), max_bytes=max_bytes)
    return [{k: [t.tolist() for t in v] for k, v in p.items()} for p in gathered], dict(counts)


@pytest.mark.ddp
def test_fused_gather_in_parts_returns_what_one_gather_returns(ddp_pool):
    whole = ddp_pool.run(_gather_in_parts, None)
    parts = ddp_pool.run(_gather_in_parts, 64)
    sent = [_payloads(r) for r in range(2)]
    for got, _ in [*whole, *parts]:
        for i, payload in enumerate(got):
            assert payload == {k: [sent[r][i][k].tolist() for r in range(2)] for k in payload}
    assert whole[0][1] == {"all_gather": 3}  # shapes, float64, int64
    # 64 bytes for two ranks: 4 elements of 8 bytes per rank and part (a longer tensor alone)
    assert parts[0][1] == parts[1][1] and parts[0][1]["all_gather"] > 10


@given(
    st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=8), min_size=1, max_size=3).filter(
        lambda rows: len({len(r) for r in rows}) == 1
    ),
    st.one_of(st.none(), st.integers(1, 40)),
)
def test_parts_are_consecutive_within_the_limit_and_as_long_as_they_can_be(sizes, limit):
    parts = _parts(sizes, limit)
    assert [m for part in parts for m in part] == list(range(len(sizes[0])))
    for part in parts:
        longest = max(sum(row[m] for m in part) for row in sizes)
        assert limit is None or longest <= limit or len(part) == 1
    for part, after in zip(parts, parts[1:], strict=False):  # greedy: the next member would not have fitted
        longest = max(sum(row[m] for m in [*part, after[0]]) for row in sizes)
        assert limit is not None and longest > limit


def test_counts_laid_out_by_a_union_of_categories():
    metric = CategoricalCount()
    metric.update(["web", 7, "web", "1"])
    union = ["x", "1", 7, "y", "web"]
    assert metric._counts_in(union).tolist() == [0.0, 1.0, 1.0, 0.0, 2.0]
    assert metric._counts_in(["web", 7, "1", "z"]).tolist() == [2.0, 1.0, 1.0, 0.0]  # its own order first
    assert metric.categories == ["web", 7, "1"]  # no state changed
    assert CategoricalCount()._counts_in(["a"]).tolist() == [0.0]
    assert math.isclose(float(metric.counts.sum()), 4.0)


# ------------------------------------------------------------------ subclasses that override compute


class _TenfoldSum(Sum):
    def compute(self) -> torch.Tensor:
        return super().compute() * 10


class _TenfoldMean(Mean):
    def compute(self) -> torch.Tensor:
        return super().compute() * 10


class _ShiftedMax(Max):
    def compute(self) -> torch.Tensor:
        return super().compute() + 1000


class _ShiftedMin(Min):
    def compute(self) -> torch.Tensor:
        return super().compute() - 1000


class _MeanOnly(Distribution):
    def compute(self) -> dict[str, torch.Tensor]:
        return {"avg": super().compute()["mean"]}


SUBCLASSES = {
    A.SUM: _TenfoldSum,
    A.MEAN: _TenfoldMean,
    A.MAX: _ShiftedMax,
    A.MIN: _ShiftedMin,
    A.DISTRIBUTION: _MeanOnly,
}


def _subclass_records(rank: int) -> list[Metric]:
    values = [1.5, 4.0, -2.0] if rank == 0 else [7.25, 0.5]
    return [Metric("d", agg.name.lower(), v, agg) for agg in SUBCLASSES for v in values]


def _subclass_expected(values: list[float]) -> dict[str, float]:
    """The subclasses' own compute, written with numpy."""
    return {
        "train_d/sum": float(np.sum(values)) * 10,
        "train_d/mean": float(np.mean(values)) * 10,
        "train_d/max": float(np.max(values)) + 1000,
        "train_d/min": float(np.min(values)) - 1000,
        "train_d/distribution_stat_avg": float(np.mean(values)),
    }


def _subclass_aggregator(own_sync: bool) -> MetricsAggregator:
    aggregator = MetricsAggregator()
    for agg_type, cls in SUBCLASSES.items():
        aggregator.register_handler(agg_type, partial(cls, dist_sync_fn=gather_all_tensors) if own_sync else cls)
    return aggregator


def test_a_subclass_that_overrides_compute_logs_its_compute():
    aggregator = _subclass_aggregator(own_sync=False)
    aggregator.update(_subclass_records(0))
    logged = aggregator.get_metrics_for_logging()
    expected = _subclass_expected([1.5, 4.0, -2.0])
    assert logged.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(logged[key], value, rel_tol=1e-15), key


def _local_snapshot(aggregator: MetricsAggregator) -> dict[Any, Any]:
    """Every metric's states (copies of their values; the objects of the fused ones), its categories and sync flags.

    TorchMetrics' own sync gives a metric copies of its states back (a registered ``MeanMetric``).
    """
    return {
        key: (
            {
                name: (id(value) if sync_kind(metric, None) else None, value.clone())
                for name, value in metric.metric_state.items()
            },
            metric.categories if isinstance(metric, CategoricalCount) else None,
            (metric._computed, metric._is_synced, metric._update_count, metric._cache),
        )
        for key, (_, _, metric) in aggregator._keys.items()
    }


def _same_snapshot(one: dict[Any, Any], other: dict[Any, Any]) -> bool:
    return one.keys() == other.keys() and all(
        one[key][1:] == other[key][1:]
        and one[key][0].keys() == other[key][0].keys()
        and all(
            a[0] == b[0] and a[1].dtype == b[1].dtype and a[1].shape == b[1].shape and torch.equal(a[1], b[1])
            for a, b in zip(one[key][0].values(), other[key][0].values(), strict=True)
        )
        for key in one
    )


class _Web(str, enum.Enum):
    WEB = "web"


class _One(enum.IntEnum):
    ONE = 1


def _fused_and_own_agree(rank: int, world: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # subclasses that override compute: their compute is logged, fused or through TorchMetrics
    values = []
    for own_sync in (False, True):
        aggregator = _subclass_aggregator(own_sync)
        aggregator.update(_subclass_records(rank))
        values.append(aggregator.get_metrics_for_logging())
    out["subclasses"] = values
    # look-alike categories, a rank without records, a TorchMetrics metric beside fused keys
    records = [Metric("c", "cat", c, A.CATEGORICAL_COUNT) for c in (1, "1", 2**70, _Web.WEB, _One.ONE, "\udcff", "web")]
    records += [Metric("d", "dist", 1e9 + v, A.DISTRIBUTION) for v in range(5)]
    records += [Metric("d", "s", 0.1, A.SUM), Metric("d", "tm", 2.0, A.MEAN)]
    logged, snapshots = [], []
    for own_sync in (False, True):
        aggregator = MetricsAggregator()
        for agg_type, factory in OWN_SYNC.items() if own_sync else ():
            aggregator.register_handler(agg_type, factory)
        aggregator.register_handler(A.MEAN, MeanMetric)
        aggregator.update(records if rank == 0 else [Metric("d", "s", 0.2, A.SUM)])
        first = aggregator.get_metrics_for_logging()
        before = _local_snapshot(aggregator)
        again = aggregator.get_metrics_for_logging()
        snapshots.append(_same_snapshot(before, _local_snapshot(aggregator)))
        copied = copy.deepcopy(aggregator)
        copied.__dict__.pop("_probed")  # as pickled before the probes were kept
        pickled = pickle.loads(pickle.dumps(aggregator))
        logged.append([first, again, copied.get_metrics_for_logging(), pickled.get_metrics_for_logging()])
    out["logged"], out["unchanged"] = logged, snapshots
    return out


@pytest.mark.ddp
def test_fused_logging_equals_torchmetrics_sync_and_leaves_local_states_alone(ddp_pool):
    results = ddp_pool.run(_fused_and_own_agree)
    expected = _subclass_expected([1.5, 4.0, -2.0, 7.25, 0.5])
    for result in results:
        fused, own = result["subclasses"]
        assert fused == own == results[0]["subclasses"][0]
        assert fused.keys() == expected.keys()
        for key, value in expected.items():
            assert math.isclose(fused[key], value, rel_tol=1e-15), key
        assert result["unchanged"] == [True, True]  # a copy or a pickle then logs alike

        fused_logs, own_logs = result["logged"]
        assert all(log == own_logs[0] and list(log) == list(own_logs[0]) for log in fused_logs + own_logs)
        assert fused_logs[0] == results[0]["logged"][0][0]
    logged = results[0]["logged"][0][0]
    assert logged["train_c/cat_count_1(int)"] == 2.0 and logged["train_c/cat_count_1"] == 1.0  # 1, _One.ONE; "1"
    assert logged["train_c/cat_count_web"] == 2.0 and logged["train_c/cat_count_\udcff"] == 1.0
    assert logged[f"train_c/cat_count_{2**70}"] == 1.0
    assert math.isclose(logged["train_d/s"], 0.30000000000000004, rel_tol=0) and logged["train_d/tm"] == 2.0
    assert logged["train_d/dist_stat_mean"] == 1e9 + 2 and logged["train_d/dist_stat_std"] == np.std(range(5), ddof=1)


def _unlike_states(rank: int, world: int) -> list[str]:
    """Ranks whose metrics of one key hold other states: a ValueError on every rank, then logging after a reset."""
    errors = []
    unlike = [
        (A.SUM, Mean),  # another metric for SUM on rank 1: other state names
        (A.MAX, MaxMetric),  # TorchMetrics' float32 state on rank 1, next to Max's float64 one (rank 1 lacks the key)
        (A.DISTRIBUTION, partial(Distribution, relative_accuracy=0.010001)),  # as many buckets, of another sketch
    ]
    for agg_type, handler in unlike:
        aggregator = MetricsAggregator()
        if rank == 1:
            aggregator.register_handler(agg_type, handler)
        aggregator.update([Metric("d", "ok", 1.0, A.MIN)])
        if rank == 0 or agg_type is not A.MAX:
            aggregator.update([Metric("d", "k", 3.0, agg_type)])
        with pytest.raises(ValueError, match="cannot sync together") as err:
            aggregator.get_metrics_for_logging()
        errors.append(str(err.value))
        aggregator.reset()  # every rank: nothing is left waiting, the next logging works
        aggregator.update([Metric("d", "ok", 2.0 + rank, A.MIN)])
        assert aggregator.get_metrics_for_logging() == {"train_d/ok": 2.0}
    return errors


@pytest.mark.ddp
def test_ranks_whose_metrics_of_one_key_hold_other_states_raise_on_every_rank(ddp_pool):
    errors, errors1 = ddp_pool.run(_unlike_states)
    assert errors == errors1
    assert (
        "[sum_value torch.float64/0] on one rank and [mean_value torch.float64/0, weight torch.float64/0]" in errors[0]
    )
    assert "[max_value torch.float64/0] on one rank and [max_value torch.float32/0] on another" in errors[1]
    assert "[bucket_counts torch.float64/1] on one rank and [bucket_counts_acc0p010001 torch.float64/1]" in errors[2]


def _reset_on_one_rank(rank: int, world: int) -> dict[str, float]:
    aggregator = MetricsAggregator()
    aggregator.update(
        [Metric("d", "tokens", 10.0 * (rank + 1), A.SUM), Metric("d", "src", f"r{rank}", A.CATEGORICAL_COUNT)]
    )
    aggregator.get_metrics_for_logging()
    if rank == 0:
        aggregator.reset()  # this rank's keys and states only (the docs: call it on every rank)
    aggregator.update([Metric("d", "tokens", 1.0, A.SUM)] if rank == 1 else [])
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
def test_a_reset_on_one_rank_forgets_that_ranks_records_only(ddp_pool):
    """As documented: a key another rank still holds comes back, empty, on the rank that reset."""
    assert ddp_pool.run(_reset_on_one_rank) == [{"train_d/tokens": 21.0, "train_d/src_count_r1": 1.0}] * 2


def _broken(rank: int) -> Any:
    if rank == 1:
        raise RuntimeError("no such device on this node")
    return Sum()


def _failing_handler(rank: int, world: int) -> list[str]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, partial(_broken, rank))  # makes no metric on rank 1
    aggregator.register_handler(A.MAX, lambda: "not a metric" if rank == 1 else Max())
    messages = []
    for agg_type in (A.SUM, A.MAX):  # a key of rank 0 alone: rank 1 would make its metric when logging
        if rank == 0:
            aggregator.update([Metric("d", agg_type.name.lower(), 1.0, agg_type)])
        try:
            aggregator.get_metrics_for_logging()
        except ValueError as err:
            messages.append(str(err))
        aggregator.reset()
    aggregator.update([Metric("d", "mean", 2.0 + rank, A.MEAN)])  # the broken handlers make nothing here
    messages.append(repr(aggregator.get_metrics_for_logging()))
    return messages


class _Stateful:
    """A handler returning one instance (a user's mistake), or a Sum at its first two calls and a Max after."""

    def __init__(self, mode: str) -> None:
        self.mode, self.calls, self.instance = mode, 0, Sum()

    def __call__(self) -> Any:
        self.calls += 1
        if self.mode == "one instance":
            return self.instance
        return Sum() if self.calls <= 2 else Max()  # its probe's and this rank's own key's: Sum


def _stateful_handler(rank: int, world: int, mode: str) -> list[str]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, _Stateful(mode))
    # rank 1 holds 'a' (the one instance, or the Sum), rank 0 holds 'b' alone: at logging each makes the other's
    aggregator.update([Metric("d", "a" if rank else "b", 1.0 + rank, A.SUM)])
    messages = []
    try:
        aggregator.get_metrics_for_logging()
    except ValueError as err:
        messages.append(str(err))
    messages.append(repr(sorted(aggregator._keys)))  # nothing registered by the failed call
    aggregator.reset()
    aggregator.register_handler(A.SUM, Sum)
    aggregator.update([Metric("d", "c", 3.0, A.SUM)] if rank else [])
    messages.append(repr(aggregator.get_metrics_for_logging()))  # the group is still usable
    return messages


@pytest.mark.ddp
@pytest.mark.parametrize("mode", ["one instance", "another kind"])
def test_a_handler_that_fails_only_when_making_the_metric_is_an_error_on_every_rank(ddp_pool, mode):
    """Its probe succeeded, so only making the missing key's metric fails, on one rank: before, that rank raised
    alone and the other waited in the sync until the process group's timeout."""
    first, second = ddp_pool.run(_stateful_handler, mode)
    assert first[0] == second[0] and first[2] == second[2]
    if mode == "one instance":  # both ranks fail; rank 0's error is told
        assert first[0].startswith("Metric 'a' of dataset 'd' (SUM) is held by another rank, and rank 0, which lacks")
        assert "already in use" in first[0]
    else:  # rank 0 made a Sum for 'b' (its probe made the first), and a Max for 'a'
        assert first[0].startswith("Metric 'a' of dataset 'd' (SUM) is held by another rank, and rank 0, which lacks")
        assert "RuntimeError: it made a Max, which syncs unlike the metric it made before" in first[0]
    assert (first[1], second[1]) == (repr([("d", "b")]), repr([("d", "a")]))  # each rank kept its own key only
    assert first[2] == repr({"train_d/c": 3.0})


class _Calls:
    """A handler making ``makers[i]()`` at its ``i``-th call (the last one after)."""

    def __init__(self, *makers: Any) -> None:
        self.makers, self.calls = makers, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.makers[min(self.calls, len(self.makers)) - 1]()


def _unlike_probe_unfused(rank: int, world: int) -> list[Any]:
    # each rank's own key: a Sum syncing through TorchMetrics (call 1); the probe: a Sum (call 2), which syncs unlike
    # the held one, so neither key joins the fused sync; the other rank's key: a Sum that never syncs (call 3)
    handler = _Calls(partial(Sum, dist_sync_fn=gather_all_tensors), Sum, partial(Sum, sync_on_compute=False), Sum)
    return _own_key_each(rank, handler)  # call 4, at the second logging: a Sum like the probe


def _own_key_each(rank: int, handler: Any) -> list[Any]:
    """Rank 0 holds key 'b' and rank 1 key 'a' (made by ``handler``): the first logging (or its error), the keys
    held after it, the second logging."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, handler)
    aggregator.update([Metric("d", "a" if rank else "b", 1.0 + rank, A.SUM)])
    try:
        first: Any = aggregator.get_metrics_for_logging()
    except ValueError as err:
        first = str(err)
    return [first, sorted(aggregator._keys), aggregator.get_metrics_for_logging()]


@pytest.mark.ddp
def test_a_made_metric_unlike_its_probe_is_an_error_on_every_rank_for_a_key_left_to_torchmetrics(ddp_pool):
    """The made metric was checked against the fused kind only: for a key that syncs through TorchMetrics, a metric
    that never syncs passed, and each rank's gather met the other's key: ranks logged different, wrong values."""
    first, second = ddp_pool.run(_unlike_probe_unfused)
    assert isinstance(first[0], str) and first[0] == second[0]
    assert first[0].startswith("Metric 'a' of dataset 'd' (SUM) is held by another rank, and rank 0, which lacks")
    assert "it made a Sum, which syncs unlike the metric it made before" in first[0]
    assert (first[1], second[1]) == ([("d", "b")], [("d", "a")])  # nothing registered
    assert first[2] == second[2] == {"train_d/b": 1.0, "train_d/a": 2.0}  # rank 0's 1.0, rank 1's 1.0 + 1


@pytest.mark.ddp
def test_a_handler_that_cannot_make_a_missing_keys_metric_on_one_rank_is_an_error_on_every_rank(ddp_pool):
    """Before, that rank raised alone while creating the key, and the other ranks waited in the sync until the
    process group's timeout."""
    first, second = ddp_pool.run(_failing_handler)
    assert first == second
    assert "Metric 'sum' of dataset 'd' (SUM) is held by another rank, and rank 1" in first[0]
    assert "RuntimeError: no such device on this node" in first[0]
    assert "WrongTypeError: The MAX handler returned str, not a torchmetrics.Metric." in first[1]  # a TypeError
    assert first[2] == repr({"train_d/mean": 2.5})


def _loaded_on_one_rank(rank: int, world: int) -> tuple[list[Any], list[dict[str, int]]]:
    """TorchMetrics' classes as handlers; rank 1 loads a checkpoint of other keys between two logging calls."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, SumMetric)
    aggregator.register_handler(A.MEAN, MeanMetric)
    aggregator.update([Metric("d", "s", 1.0 + rank, A.SUM), Metric("d", "m", 2.0 * rank, A.MEAN)])
    logged, counts = [], []
    for call in range(3):
        if call == 1 and rank == 1:
            saved = MetricsAggregator()
            saved.register_handler(A.MEAN, MeanMetric)
            saved.update([Metric("e", "m", 4.0, A.MEAN), Metric("e", "m", 8.0, A.MEAN)])
            aggregator.load_state_dict(saved.state_dict())  # replaces rank 1's keys: it lacks ('d', 's') and ('d', 'm')
        with counting() as counted:
            logged.append(aggregator.get_metrics_for_logging())
        counts.append(dict(counted))
    return logged, counts


@pytest.mark.ddp
def test_a_checkpoint_loaded_on_one_rank_costs_one_exchange_only_at_the_call_after(ddp_pool):
    """Every rank agrees on the extra exchange (or its absence) and on the values, whichever rank's keys changed."""
    (logged, counts), (logged1, counts1) = ddp_pool.run(_loaded_on_one_rank)
    assert logged == logged1 and counts == counts1
    assert logged[0] == {"train_d/s": 1.0 + 2.0, "train_d/m": (0.0 + 2.0) / 2}
    # rank 1's ('d', *) states are gone; rank 0's are kept; rank 1's loaded MEAN of 4 and 8
    assert logged[1] == logged[2] == {"train_d/s": 1.0, "train_d/m": 0.0, "train_e/m": (4.0 + 8.0) / 2}
    alike = {"all_gather_object": 1, "all_gather": 2}  # keys; shapes and float32 states
    assert counts == [alike, {"all_gather_object": 2, "all_gather": 2}, alike]


# ----------------------------------------------------------------------------------------- three ranks


@pytest.fixture(scope="module")
def ddp_pool3() -> Iterator[Any]:
    from tests.helpers.ddp import DDPPool

    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


def _raising_at(rank: int, failing_rank: int, calls: set[int], factory: Any) -> Any:
    """A handler raising at the given calls on ``failing_rank`` only (its probe is call 1)."""
    count = 0

    def make() -> Any:
        nonlocal count
        count += 1
        if rank == failing_rank and count in calls:
            raise KeyError(f"call {count}")
        return factory()

    return make


THREE_RECORDS = [
    ("d", "c", "x", A.CATEGORICAL_COUNT),
    ("d", "c", 7, A.CATEGORICAL_COUNT),
    ("d", "q", 5.0, A.DISTRIBUTION),
]


def _three_ranks(rank: int, world: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # the default group: rank 0 alone holds a CATEGORICAL_COUNT and a DISTRIBUTION key, ranks 1 and 2 none at all;
    # rank 1's CATEGORICAL_COUNT handler raises at its second call only (the first is its probe)
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.CATEGORICAL_COUNT, _raising_at(rank, 1, {2}, CategoricalCount))
    if rank == 0:
        aggregator.update([Metric(*record) for record in THREE_RECORDS])
    counts = []
    for call in range(4):
        if call == 3 and rank == 2:
            aggregator.reset()  # forgets nothing held: rank 2 makes the keys again, every rank exchanges once more
        with counting() as counted:
            try:
                out[f"logged{call}"] = aggregator.get_metrics_for_logging()
            except ValueError as err:
                out[f"logged{call}"] = str(err)
        counts.append(dict(counted))
        out[f"keys{call}"] = sorted(aggregator._keys)
    out["counts"] = counts
    # a group of ranks 1 and 2 (group ranks 0 and 1): rank 2's SUM handler fails when making rank 1's key, then
    # at every call (its probe too); the message names rank 2, the process's own rank, both times
    pair = dist.new_group([1, 2], backend="gloo")  # every rank creates every group
    if rank == 0:
        return out
    messages = []
    for failing in ({2}, {1, 2, 3}):
        aggregator = MetricsAggregator(process_group=pair)
        aggregator.register_handler(A.SUM, _raising_at(rank, 2, failing, Sum))
        aggregator.update([Metric("d", "x", 1.0, A.SUM)] if rank == 1 else [])
        try:
            aggregator.get_metrics_for_logging()
        except ValueError as err:
            messages.append(str(err))
    # in that group: rank 1's SUM metric never syncs, rank 2's does; the message names ranks 1 and 2
    aggregator = MetricsAggregator(process_group=pair)
    if rank == 1:
        aggregator.register_handler(A.SUM, partial(Sum, sync_on_compute=False))
    aggregator.update([Metric("d", "x", 1.0, A.SUM)])
    try:
        aggregator.get_metrics_for_logging()
    except ValueError as err:
        messages.append(str(err))
    out["pair"] = messages
    return out


@pytest.mark.ddp
def test_three_ranks_agree_on_a_handler_failing_at_its_second_call_and_on_the_rank_they_name(ddp_pool3):
    """Ranks holding no key at all, a handler failing at its second call, a reset on one rank: one more exchange
    exactly where a rank lacks a key, the same error on every rank, nothing registered, then the reference values;
    in a group of ranks 1 and 2 the message named the group's rank 1 for rank 2."""
    results = ddp_pool3.run(_three_ranks, timeout=240)
    ref = Reference()
    for ds, name, value, agg_type in THREE_RECORDS:
        ref.types[ds, name] = agg_type
        ref.values.setdefault((ds, name), []).append(value)
    expected = ref_logged(ref, "train")
    assert expected is not None
    for call in range(4):
        assert results[0][f"logged{call}"] == results[1][f"logged{call}"] == results[2][f"logged{call}"]
    failed = results[0]["logged0"]
    assert failed.startswith("Metric 'c' of dataset 'd' (CATEGORICAL_COUNT) is held by another rank, and rank 1,")
    assert "its handler raised KeyError: 'call 2'" in failed
    assert [r["keys0"] for r in results] == [[("d", "c"), ("d", "q")], [], []]  # nothing registered
    for call in (1, 2, 3):
        assert_logged(results[0][f"logged{call}"], expected)
    assert all(r["keys2"] == [("d", "c"), ("d", "q")] for r in results)
    lacking = {"all_gather_object": 2, "all_gather": 2}  # keys, whether the handlers could make them; shapes, states
    for r in results:
        assert r["counts"] == [{"all_gather_object": 2}, lacking, {"all_gather_object": 1, "all_gather": 2}, lacking]
    assert results[1]["pair"] == results[2]["pair"]
    made, probed, half = results[1]["pair"]
    assert half.startswith("Metric 'x' of dataset 'd': its metric never syncs on rank 1 (`sync_on_compute=False`) "
                           "and syncs on rank 2,")  # fmt: skip
    for message, error in ((made, "KeyError: 'call 2'"), (probed, "KeyError: 'call 1'")):
        assert message.startswith("Metric 'x' of dataset 'd' (SUM) is held by another rank, and rank 2, which lacks")
        assert error in message


def _half_synced(rank: int, world: int) -> list[Any]:
    aggregator = MetricsAggregator()
    if rank == 0:  # this rank's SUM metrics never sync; rank 1's sync (the default)
        aggregator.register_handler(A.SUM, partial(Sum, sync_on_compute=False))
    aggregator.update([Metric("d", "x", 1.0 + rank, A.SUM), Metric("d", "m", 4.0 * rank, A.MAX)])
    out: list[Any] = []
    try:
        out.append(aggregator.get_metrics_for_logging())
    except ValueError as err:
        out.append(str(err))
    aggregator.reset()
    aggregator.register_handler(A.SUM, Sum)  # the same handlers on both ranks: logs the pooled values
    aggregator.update([Metric("d", "x", 1.0 + rank, A.SUM)])
    out.append(aggregator.get_metrics_for_logging())
    return out


@pytest.mark.ddp
def test_a_key_whose_metric_never_syncs_on_one_rank_only_is_an_error_on_every_rank(ddp_pool):
    """Before, the key left to TorchMetrics' own sync: the rank whose metric syncs waited in its gather for a rank
    that never joined it (or paired it with the next collective)."""
    first, second = ddp_pool.run(_half_synced)
    assert first == second
    assert first[0] == (
        "Metric 'x' of dataset 'd': its metric never syncs on rank 0 (`sync_on_compute=False`) and syncs on rank 1, "
        "which would wait for it in the sync. Register the same handlers on every rank (the ranks agree: every rank "
        "raises this)."
    )
    assert first[1] == {"train_d/x": 3.0}


def _probe_syncs_made_never(rank: int, world: int) -> list[Any]:
    # each rank's own key and the probe: Sums syncing through TorchMetrics (calls 1, 2); the other rank's key: a Sum
    # that never syncs (call 3), which `sync_kind` told apart from the probe's only since UNSYNCED
    synced = partial(Sum, dist_sync_fn=gather_all_tensors)
    return _own_key_each(rank, _Calls(synced, synced, partial(Sum, sync_on_compute=False), synced))


@pytest.mark.ddp
def test_a_made_metric_that_never_syncs_unlike_its_syncing_probe_is_an_error_on_every_rank(ddp_pool):
    first, second = ddp_pool.run(_probe_syncs_made_never)
    assert first[0] == second[0]
    assert "which syncs unlike the metric it made before" in first[0]
    assert (first[1], second[1]) == ([("d", "b")], [("d", "a")])  # nothing registered
    assert first[2] == second[2] == {"train_d/b": 1.0, "train_d/a": 2.0}


class _Shares(CategoricalCount):
    """A user's CategoricalCount whose value is each category's share of the count, not the count."""

    def compute(self) -> dict[Any, torch.Tensor]:
        counts = super().compute()
        total = sum(counts.values())
        return {category: count / total for category, count in counts.items()}


def _shares_records(rank: int) -> list[Metric]:
    picked = ["web", "app", "web", "web"] if rank == 0 else ["app", "tv", "app"]
    return [Metric("d", "src", category, A.CATEGORICAL_COUNT) for category in picked]


def _expected_shares(ranks: list[int]) -> dict[str, float]:
    seen = [r.value for rank in ranks for r in _shares_records(rank)]
    return {f"train_d/src_count_{c}": seen.count(c) / len(seen) for c in dict.fromkeys(seen)}


def test_a_categorical_count_subclass_computes_and_logs_its_own_value():
    """Its compute was never called: TorchMetrics' wrapper was built around the counts, so ``compute()`` and the
    aggregator gave counts."""
    metric = _Shares()
    metric.update(["web", "app", "web", "web"])
    assert {k: float(v) for k, v in metric.compute().items()} == {"web": 0.75, "app": 0.25}
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.CATEGORICAL_COUNT, _Shares)
    aggregator.update(_shares_records(0))
    assert aggregator.get_metrics_for_logging() == _expected_shares([0])


def _shares_ddp(rank: int, world: int) -> tuple[dict[str, float], dict[str, int]]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.CATEGORICAL_COUNT, _Shares)
    aggregator.update([*_shares_records(rank), Metric("d", "n", 1.0, A.SUM)])
    return _log_counted(aggregator)


@pytest.mark.ddp
def test_a_categorical_count_subclass_logs_its_value_of_the_pooled_counts_under_ddp(ddp_pool):
    (logged, counts), (logged1, _) = ddp_pool.run(_shares_ddp)
    expected = {**_expected_shares([0, 1]), "train_d/n": 2.0}
    assert logged == logged1
    assert logged.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(logged[key], value, rel_tol=1e-15), key
    assert counts["all_gather_object"] >= 1  # its own sync (categories' union), after the fused one of the SUM key


_MIXED_CATEGORIES = (["web", "app", "web", 7], ["app", "tv", 7])


def _categorical_mixed_validate_args(rank: int, world: int) -> list[dict[Any, float]]:
    """A CategoricalCount validated on rank 0 only: its own sync, the aggregator's fused sync and TorchMetrics'."""
    seen = _MIXED_CATEGORIES[rank]
    metric = CategoricalCount(validate_args=rank == 0)
    metric.update(seen)
    out = [{k: v.item() for k, v in metric.compute().items()}]
    for own_sync in (False, True):
        aggregator = MetricsAggregator()
        options: dict[str, Any] = {"dist_sync_fn": gather_all_tensors} if own_sync else {}
        aggregator.register_handler(A.CATEGORICAL_COUNT, partial(CategoricalCount, validate_args=rank == 0, **options))
        aggregator.update([Metric("d", "src", c, A.CATEGORICAL_COUNT) for c in seen])
        out.append(aggregator.get_metrics_for_logging())
    return out


@pytest.mark.ddp
def test_categorical_counts_sync_across_ranks_of_either_validate_args(ddp_pool):
    """An unvalidated CategoricalCount names its states ``<name>_unchecked`` in memory: beside a validated one on
    the other rank it still syncs (its own sync, the aggregator's fused one, TorchMetrics' state by state)."""
    expected = collections.Counter(_MIXED_CATEGORIES[0] + _MIXED_CATEGORIES[1])
    for own, fused, torchmetrics_sync in ddp_pool.run(_categorical_mixed_validate_args):
        assert own == {k: float(c) for k, c in expected.items()}
        logged = {f"train_d/src_count_{k}": float(c) for k, c in expected.items()}
        assert fused == torchmetrics_sync == logged
