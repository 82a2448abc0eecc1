"""``MetricsAggregator`` in 3 spawned gloo ranks, and checkpoints of W ranks resumed on W' ranks.

Seeded scenarios, every rank running the same steps: a dataset every rank sees, a dataset of one
rank only, a rank with no record at all, ranks whose only records are for a dataset the others
never see, DISTRIBUTION over uneven ranks, CATEGORICAL_COUNT categories of one rank only, NaN under
each handler's ``nan_strategy``, and one ``(dataset, name)`` given another type on another rank (the
documented ``ValueError`` on every rank, no hang). Every rank's ``get_metrics_for_logging`` (called
twice, and after ``reset``) must equal the others' and a reference written here in plain Python /
NumPy over every record of every rank (``np.percentile``'s default linear rule within the sketch's
relative accuracy, ``statistics.stdev``, ``collections.Counter``).

Resume (docs/aggregation.md: "Under DDP each rank checkpoints its own (local) states"): each rank's
``state_dict`` goes through ``torch.save``; at 2 -> 3 the old ranks load their own and the new one
starts empty, so the synced values are the uninterrupted run's. At 3 -> 2 and 3 -> 1 the aggregator
has no merge (the docs promise none): the ranks that remain load their own state and the logged
values are those of the records those states hold plus the new ones.

``TMX_AGG3_SEEDS`` (an int) runs more seeds.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.ddp import DDPPool
from torchmetrics_ext.aggregation import (
    AggregationType,
    Max,
    Mean,
    Metric,
    MetricsAggregator,
    Min,
    Sum,
)

pytestmark = pytest.mark.ddp

A = AggregationType
SEEDS = list(range(int(os.environ.get("TMX_AGG3_SEEDS", "3"))))
NUMERIC = (A.SUM, A.MEAN, A.MAX, A.MIN, A.DISTRIBUTION)
CATS = {0: ["web", "book", 1, "1"], 1: ["web", "é", -7], 2: ["web", "only2", 2**40]}
PERCENTILES = (5, 50, 95)
ALPHA = 0.01

Rec = tuple[str, str, Any, str]  # (dataset, name, value, AggregationType name): picklable


@pytest.fixture(scope="module")
def pool3() -> Iterator[DDPPool]:
    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


# ------------------------------------------------------------------------------------ scenarios


def _batches(seed: int, world: int, tag: str = "") -> list[list[list[Rec]]]:
    """``out[rank][step]``: rank 1 sees nothing in some seeds, rank ``world - 1`` only its own dataset."""
    rng = np.random.default_rng([seed, world, len(tag)])
    empty = seed % 2 == 0 and world > 1
    out: list[list[list[Rec]]] = []
    for rank in range(world):
        steps: list[list[Rec]] = []
        for _ in range(int(rng.integers(1, 4))):
            batch: list[Rec] = []
            if empty and rank == 1:
                steps.append(batch)
                continue
            datasets = [f"own{rank}{tag}"] if rank == world - 1 and world > 1 else ["shared", f"own{rank}{tag}"]
            for ds in datasets:
                for agg in NUMERIC:
                    for _ in range(int(rng.integers(0, 6))):
                        value = float(rng.uniform(0.5, 1000.0)) if agg is A.DISTRIBUTION else float(rng.normal(3, 50))
                        if agg is A.SUM and rng.random() < 0.5:
                            value = int(rng.integers(0, 1000))
                        batch.append((ds, f"m_{agg.name.lower()}", value, agg.name))
                for _ in range(int(rng.integers(0, 5))):
                    cats = CATS[rank % 3]
                    batch.append((ds, "src", cats[int(rng.integers(len(cats)))], "CATEGORICAL_COUNT"))
            steps.append(batch)
        out.append(steps)
    return out


def _records(batch: list[Rec]) -> list[Metric]:
    return [Metric(ds, name, value, A[agg]) for ds, name, value, agg in batch]


def _category_key(name: str, category: Any, all_categories: set[Any]) -> str:
    if isinstance(category, int) and str(category) in all_categories:
        return f"{name}_count_{category}(int)"
    return f"{name}_count_{category}"


def _reference(records: list[Rec], prefix: str = "train") -> dict[str, float]:
    """What docs/aggregation.md's Definitions table gives over ``records`` (plain Python, NumPy)."""
    values: dict[tuple[str, str, str], list[Any]] = {}
    for ds, name, value, agg in records:
        values.setdefault((ds, name, agg), []).append(value)
    out: dict[str, float] = {}
    for (ds, name, agg), xs in values.items():
        base = f"{prefix}_{ds}/"
        if agg == "SUM":
            out[base + name] = math.fsum(xs)
        elif agg == "MEAN":
            out[base + name] = math.fsum(xs) / len(xs)
        elif agg == "MAX":
            out[base + name] = max(xs)
        elif agg == "MIN":
            out[base + name] = min(xs)
        elif agg == "DISTRIBUTION":
            out[base + f"{name}_stat_mean"] = statistics.fmean(xs)
            out[base + f"{name}_stat_min"] = min(xs)
            out[base + f"{name}_stat_max"] = max(xs)
            if len(xs) > 1:
                out[base + f"{name}_stat_std"] = statistics.stdev(xs)
            for q in PERCENTILES:
                out[base + f"{name}_stat_p{q:02d}"] = float(np.percentile(np.array(xs, dtype=np.float64), q))
        else:
            texts = {c for c in xs if isinstance(c, str)}
            for category, count in Counter(xs).items():
                out[base + _category_key(name, category, texts)] = float(count)
    return out


def _assert_matches(logged: dict[str, float], expected: dict[str, float], what: str) -> None:
    assert sorted(logged) == sorted(expected), (what, sorted(set(logged) ^ set(expected)))
    for key, want in expected.items():
        got = logged[key]
        if math.isnan(want):
            assert math.isnan(got), (what, key, got)
        elif "_stat_p" in key:  # the sketch's bound (positive values in range)
            assert abs(got - want) <= ALPHA * abs(want) + 1e-12, (what, key, got, want)
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (what, key, got, want)


def _assert_same(results: list[dict[str, float]], what: str) -> None:
    first = results[0]
    for rank, other in enumerate(results[1:], 1):
        assert list(other) == list(first), (what, rank)
        for key, value in first.items():
            same = (math.isnan(value) and math.isnan(other[key])) or value == other[key]
            assert same, (what, rank, key, value, other[key])


# --------------------------------------------------------------------------------------- worker jobs


def _log_job(rank: int, world: int, seed: int) -> dict[str, Any]:
    """Every rank its own steps; log twice; reset; log once more (empty); update again and log."""
    steps = _batches(seed, world)[rank]
    agg = MetricsAggregator()
    for batch in steps:
        agg.update(_records(batch))
    first = agg.get_metrics_for_logging(prefix="train")
    second = agg.get_metrics_for_logging(prefix="train")
    agg.reset()
    after_reset = agg.get_metrics_for_logging(prefix="val")
    for batch in _batches(seed + 100, world)[rank]:
        agg.update(_records(batch))
    again = agg.get_metrics_for_logging(prefix="val")
    return {"first": first, "second": second, "after_reset": after_reset, "again": again}


NAN_HANDLERS = {
    A.SUM: lambda: Sum(nan_strategy="ignore"),
    A.MEAN: lambda: Mean(nan_strategy=5.0),
    A.MAX: lambda: Max(nan_strategy="disable"),
    A.MIN: lambda: Min(nan_strategy="warn"),
}
NAN_RECORDS: dict[int, list[Rec]] = {
    0: [("d", "s", 1.0, "SUM"), ("d", "s", math.nan, "SUM"), ("d", "m", 2.0, "MEAN"), ("d", "lo", 3.0, "MIN")],
    1: [("d", "m", math.nan, "MEAN"), ("d", "hi", 7.0, "MAX"), ("d", "lo", math.nan, "MIN"), ("d", "s", 4.0, "SUM")],
    2: [("d", "hi", math.nan, "MAX"), ("d", "m", 8.0, "MEAN"), ("e", "hi", 1.0, "MAX")],
}


def _nan_job(rank: int, world: int) -> dict[str, Any]:
    import warnings

    agg = MetricsAggregator()
    for agg_type, factory in NAN_HANDLERS.items():
        agg.register_handler(agg_type, factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg.update(_records(NAN_RECORDS[rank]))
    refused = {}
    for agg_type in (A.DISTRIBUTION, A.CATEGORICAL_COUNT):  # refuse NaN whatever the handler
        value: Any = math.nan
        try:
            agg.update([Metric("d", f"x_{agg_type.name}", value, agg_type)])
        except (TypeError, ValueError) as err:
            refused[agg_type.name] = type(err).__name__
    return {"logged": agg.get_metrics_for_logging(prefix="train"), "refused": refused}


EDGE_RECORDS: dict[int, list[Rec]] = {
    # rank 0: one DISTRIBUTION value far from the others, the str category "1", a key of NaN only
    0: [
        ("d", "len", 1e9, "DISTRIBUTION"),
        ("d", "src", "1", "CATEGORICAL_COUNT"),
        *[("d", "m", math.nan, "MEAN"), ("d", "s", math.nan, "SUM"), ("d", "lo", math.nan, "MIN")],
    ],
    1: [],  # no record at all
    # rank 2: most values, of both signs (shift 0 there), the int category 1 of rank 2 only
    2: [("d", "len", float(v), "DISTRIBUTION") for v in range(-40, 460, 3)]
    + [("d", "src", 1, "CATEGORICAL_COUNT"), ("d", "src", 1, "CATEGORICAL_COUNT"), ("d", "m", 2.0, "MEAN")],
}


def _edge_job(rank: int, world: int) -> dict[str, float]:
    import warnings

    agg = MetricsAggregator()
    for agg_type in (A.SUM, A.MEAN, A.MIN):
        agg.register_handler(agg_type, _ignoring(agg_type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg.update(_records(EDGE_RECORDS[rank]))
        return agg.get_metrics_for_logging()


def _ignoring(agg_type: AggregationType) -> Any:
    cls = {A.SUM: Sum, A.MEAN: Mean, A.MIN: Min, A.MAX: Max}[agg_type]
    return lambda: cls(nan_strategy="ignore")


WINDOW_K = 4  # every update of a key is WINDOW_K values: a window of 3 * WINDOW_K keeps each rank's last


def _windowed_batches(rank: int) -> list[list[Rec]]:
    rng = np.random.default_rng(rank + 40)
    steps = []
    for _ in range(3 + rank):  # uneven numbers of updates; rank 1 never sees "shared"
        batch: list[Rec] = []
        for ds in ("shared", f"own{rank}"):
            if rank == 1 and ds == "shared":
                continue
            batch += [(ds, "tok", float(rng.uniform(1, 100)), "SUM") for _ in range(WINDOW_K)]
            batch += [(ds, "len", float(rng.uniform(1, 100)) + 1e6 * rank, "DISTRIBUTION") for _ in range(WINDOW_K)]
        steps.append(batch)
    return steps


def _windowed_job(rank: int, world: int, saved: list[bytes] | None = None) -> dict[str, Any]:
    from torchmetrics_ext.aggregation import Distribution
    from torchmetrics_ext.wrappers import Windowed

    def make() -> MetricsAggregator:
        agg = MetricsAggregator()
        agg.register_handler(A.SUM, lambda: Windowed(Sum(), window_size=3 * WINDOW_K))
        agg.register_handler(A.DISTRIBUTION, lambda: Windowed(Distribution(), window_size=3 * WINDOW_K))
        return agg

    agg = make()
    steps = _windowed_batches(rank)
    for batch in steps[:2]:
        agg.update(_records(batch))
    buffer = io.BytesIO()
    torch.save(agg.state_dict(), buffer)
    resumed = make()
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for batch in steps[2:]:
        agg.update(_records(batch))
        resumed.update(_records(batch))
    return {"logged": agg.get_metrics_for_logging(), "resumed": resumed.get_metrics_for_logging()}


SCALE_RECORDS: dict[int, list[tuple[str, float]]] = {
    # magnitudes past 1e146 (scaled sums), offsets of other sizes (other shifts) on other ranks
    0: [("big", 1e200), ("big", 2e200), ("tiny", 1e-200), ("tiny", 3e-200), ("off", 1e9 + 1), ("off", 1e9 + 4)],
    1: [],
    2: [("big", 1.0), ("big", 3.0), ("tiny", 5e-200), ("off", -3e12), ("off", -3e12 + 2), ("mix", 7.0), ("mix", 0.0)],
}


def _scale_job(rank: int, world: int) -> dict[str, float]:
    agg = MetricsAggregator()
    agg.update([Metric("d", name, value, A.DISTRIBUTION) for name, value in SCALE_RECORDS[rank]])
    return agg.get_metrics_for_logging()


def _conflict_job(rank: int, world: int) -> dict[str, Any]:
    """``("d", "x")`` is SUM on rank 0 and MEAN on the last rank: the same ValueError everywhere."""
    agg = MetricsAggregator()
    agg.update([Metric("d", "y", float(rank), A.SUM)])
    if rank == 0:
        agg.update([Metric("d", "x", 1.0, A.SUM)])
    if rank == world - 1:
        agg.update([Metric("d", "x", 2.0, A.MEAN)])
    messages = []
    for _ in range(2):  # raised again at every call until every rank resets
        try:
            agg.get_metrics_for_logging()
            messages.append(None)
        except ValueError as err:
            messages.append(str(err))
    agg.reset()
    agg.update([Metric("d", "x", 3.0, A.MEAN)])
    return {"messages": messages, "after": agg.get_metrics_for_logging()}


def _save_job(rank: int, world: int, seed: int, log_first: bool) -> dict[str, Any]:
    """``log_first``: the state is written after a sync (it must hold this rank's own states only)."""
    agg = MetricsAggregator()
    for batch in _batches(seed, world, "s")[rank]:
        agg.update(_records(batch))
    logged = agg.get_metrics_for_logging() if log_first else None
    buffer = io.BytesIO()
    torch.save(agg.state_dict(), buffer)
    if not log_first:
        logged = agg.get_metrics_for_logging()
    return {"state": buffer.getvalue(), "logged": logged}


def _resume_job(rank: int, world: int, seed: int, saved: list[bytes]) -> dict[str, float]:
    agg = MetricsAggregator()
    if rank < len(saved):
        agg.load_state_dict(torch.load(io.BytesIO(saved[rank]), weights_only=True))
    for batch in _batches(seed, world, "resumed")[rank]:
        agg.update(_records(batch))
    return agg.get_metrics_for_logging()


def _run(pools: dict[int, Any], world: int, fn: Any, *args: Any) -> list[Any]:
    if world == 1:
        return [fn(0, 1, *args)]
    return pools[world].run(fn, *args)


# -------------------------------------------------------------------------------------------- tests


def _flat(steps: list[list[list[Rec]]]) -> list[Rec]:
    return [rec for rank in steps for batch in rank for rec in batch]


@pytest.mark.parametrize("seed", SEEDS)
def test_three_ranks_log_every_ranks_records_on_every_rank(seed, pool3):
    out = pool3.run(_log_job, seed)
    expected = _reference(_flat(_batches(seed, 3)))
    again = _reference(_flat(_batches(seed + 100, 3)), prefix="val")
    for name in ("first", "second", "after_reset", "again"):
        _assert_same([r[name] for r in out], name)
    _assert_matches(out[0]["first"], expected, "first call")
    _assert_matches(out[0]["second"], expected, "second call")
    assert out[0]["after_reset"] == {}
    _assert_matches(out[0]["again"], again, "after reset")


def test_three_ranks_nan_records_follow_each_handlers_nan_strategy(pool3):
    out = pool3.run(_nan_job)
    _assert_same([r["logged"] for r in out], "nan")
    expected = {
        "train_d/s": 1.0 + 4.0,  # "ignore": the NaN record is dropped
        "train_d/lo": 3.0,  # "warn": dropped
        "train_d/m": (2.0 + 5.0 + 8.0) / 3,  # 5.0: the NaN record counts as 5.0
        "train_d/hi": math.nan,  # "disable": kept, logged as nan
        "train_e/hi": 1.0,
    }
    _assert_matches(out[0]["logged"], expected, "nan")
    for rank, result in enumerate(out):
        # a NaN category is a float category: a wrong type (WrongTypeError, a TypeError), as any float category
        assert result["refused"] == {"DISTRIBUTION": "ValueError", "CATEGORICAL_COUNT": "WrongTypeError"}, rank


def test_three_ranks_uneven_and_one_sided_keys(pool3):
    """One value on rank 0 against many on rank 2, nothing on rank 1; NaN-only keys; 1 next to "1"."""
    out = pool3.run(_edge_job)
    _assert_same(out, "edge")
    kept = [r for rank in range(3) for r in EDGE_RECORDS[rank] if not (isinstance(r[2], float) and math.isnan(r[2]))]
    expected = _reference(kept)
    expected["train_d/s"] = 0.0  # the sum of nothing (rank 0 held the key, its only record dropped)
    # a MIN of no value is undefined: left out
    _assert_matches(out[0], expected, "edge")
    assert out[0]["train_d/src_count_1(int)"] == 2.0 and out[0]["train_d/src_count_1"] == 1.0


def test_three_ranks_windowed_handlers_log_lifetime_and_every_ranks_last_update(pool3):
    """``Windowed`` keeps ``window_size // world_size`` samples per rank (docs/windows.md#ddp)."""
    out = pool3.run(_windowed_job)
    _assert_same([r["logged"] for r in out] + [r["resumed"] for r in out], "windowed")
    steps = [_windowed_batches(rank) for rank in range(3)]
    lifetime = _reference([r for rank in steps for b in rank for r in b])
    window = _reference([r for rank in steps for r in rank[-1]])
    expected = {}
    for key, value in lifetime.items():
        base, _, stat = key.partition("_stat_")
        expected[f"{base}_lifetime" + (f"_stat_{stat}" if stat else "")] = value
    for key, value in window.items():
        base, _, stat = key.partition("_stat_")
        expected[f"{base}_window" + (f"_stat_{stat}" if stat else "")] = value
    _assert_matches(out[0]["logged"], expected, "windowed")


def test_three_ranks_distribution_mean_and_std_of_every_scale_and_shift(pool3):
    """Mean/std/min/max exact (``statistics``); the percentiles here lie outside the sketch's range."""
    out = pool3.run(_scale_job)
    _assert_same(out, "scale")
    for name in ("big", "tiny", "off", "mix"):
        xs = [v for rank in SCALE_RECORDS.values() for n, v in rank if n == name]
        got = {stat: out[0][f"train_d/{name}_stat_{stat}"] for stat in ("mean", "std", "min", "max")}
        want = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs), "min": min(xs), "max": max(xs)}
        for stat, value in want.items():
            assert got[stat] == pytest.approx(value, rel=1e-13), (name, stat, got[stat], value)


def test_three_ranks_a_type_conflict_is_the_same_error_on_every_rank(pool3):
    out = pool3.run(_conflict_job)
    for rank, result in enumerate(out):
        assert all(m is not None for m in result["messages"]), (rank, result["messages"])
        assert result["messages"] == out[0]["messages"], rank
        assert "SUM" in result["messages"][0] and "MEAN" in result["messages"][0], result["messages"][0]
        assert result["after"] == {"train_d/x": 3.0}, (rank, result["after"])


RESUMES = [(2, 3, False), (2, 3, True), (3, 2, True), (3, 1, False), (1, 3, True), (3, 3, True)]


@pytest.mark.parametrize(("saved_world", "world", "log_first"), RESUMES)
def test_each_rank_resumes_its_own_state_on_another_number_of_ranks(saved_world, world, log_first, ddp_pool, pool3):
    pools = {2: ddp_pool, 3: pool3}
    seed = 11 * saved_world + world
    saved = _run(pools, saved_world, _save_job, seed, log_first)
    before = _flat(_batches(seed, saved_world, "s"))
    _assert_same([r["logged"] for r in saved], "saved")
    _assert_matches(saved[0]["logged"], _reference(before), "saved")
    out = _run(pools, world, _resume_job, seed, [r["state"] for r in saved])
    _assert_same(out, "resumed")
    kept = _batches(seed, saved_world, "s")[:world]  # the old ranks whose state a new rank loaded
    expected = _reference(_flat(kept) + _flat(_batches(seed, world, "resumed")))
    if log_first:  # the sync made every rank an empty metric of each key: a SUM of nothing logs 0
        for ds, name, _, agg in before:
            if agg == "SUM":
                expected.setdefault(f"train_{ds}/{name}", 0.0)
    _assert_matches(out[0], expected, f"{saved_world} -> {world}")


def test_one_state_loaded_on_every_rank_counts_once_per_rank(pool3):
    """The documented pitfall: a state is one rank's records; loaded on 3 ranks it is counted 3 times."""
    saved = _save_job(0, 1, 5, False)
    out = pool3.run(_resume_job, 5, [saved["state"]] * 3)
    _assert_same(out, "copied")
    before = _flat(_batches(5, 1, "s"))
    expected = _reference(before * 3 + _flat(_batches(5, 3, "resumed")))
    _assert_matches(out[0], expected, "one state on 3 ranks")
