"""``MetricsAggregator`` under real gloo DDP in seeded random scenarios, against the documented reference.

Each scenario draws the handlers (the same on every rank: the defaults, a ``Mean`` for SUM,
TorchMetrics' ``MeanMetric`` for MEAN, ``Distribution``\\ s of other percentiles or accuracy) and
a list of steps that every rank runs in the same order:

- ``update``: each rank its own batches over a dataset shared by every rank, a dataset of its own
  and a few names, all six aggregation types, values as Python ints/floats/bools, NumPy scalars
  and tensors (categories as ``str``/``int``, their enum subclasses, NumPy integers and integer
  tensors; categories of one rank only); in some scenarios a rank sees no record at all;
- ``log``: ``get_metrics_for_logging(prefix)`` on every rank (the collective);
- ``checkpoint``: every rank writes its ``state_dict`` through ``torch.save`` and goes on with a
  fresh aggregator (the same handlers) that loaded it;
- ``reset`` on every rank;
- ``reject``: one rank alone gets a batch the docs say is refused (NaN, inf, a string for a number,
  a float category, a type conflict with a key that rank holds, two types for one new key); it
  raises there, the rank catches it and goes on: its state is unchanged and nobody waits.

Every rank must return the same dict (same keys in the same order, same floats), equal to the
single-process reference of ``tests/helpers/aggregation_reference.py`` over all ranks' records
since the last reset (percentiles within the sketch's documented bound), and equal to an
aggregator on the same rank that never checkpointed (resuming is exact). Error paths of the
collective itself (a type clash between ranks, two ranks' metrics logged under one key, a rank
that lets an error end its loop) are deterministic tests at the end.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torchmetrics import Metric as TorchMetric
from torchmetrics.utilities import dim_zero_cat

from tests.helpers.aggregation_reference import (
    CATEGORIES,
    DIST_VALUES,
    EXTREME_VALUES,
    HANDLERS,
    REAL_VALUES,
    SUM_VALUES,
    A,
    Level,
    Reference,
    Source,
    assert_logged,
    assert_same_snapshot,
    build,
    ref_logged,
    snapshot,
)
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

pytestmark = pytest.mark.ddp

WORLD = 2
SEEDS = list(range(20))
NAMES = ("tokens", "len", "src", "loss", "seq")
POOLS = {A.SUM: SUM_VALUES, A.MEAN: REAL_VALUES, A.MAX: EXTREME_VALUES, A.MIN: EXTREME_VALUES}
POOLS[A.DISTRIBUTION] = DIST_VALUES
# one rank's categories next to the shared ones: the union is only known after the sync
RANK_CATEGORIES = (["web", 1, "1", 2**70], ["book", -7, "é", 0])


# ----------------------------------------------------------------------------------------- scenarios


def _value_form(rng: np.random.Generator, raw: Any, agg_type: AggregationType) -> str:
    """A documented form that holds ``raw`` exactly (the record is built from it in the worker)."""
    if agg_type is A.CATEGORICAL_COUNT:
        forms = ["python"] if isinstance(raw, str) or abs(raw) >= 2**63 else ["python", "np_int", "tensor"]
        if raw in {s.value for s in Source} or (not isinstance(raw, str) and raw in {m.value for m in Level}):
            forms.append("enum")
        return str(rng.choice(forms + (["np_str"] if isinstance(raw, str) else [])))
    forms = ["python", "np_float64", "tensor64"]
    if abs(float(raw)) < 3e38 and float(np.float32(raw)) == float(raw):
        forms += ["tensor32", "np_float32"]
    if isinstance(raw, int) and not isinstance(raw, bool):
        forms += ["np_int", "tensor_int"]
    return str(rng.choice(forms))


def make_value(raw: Any, form: str) -> Any:
    """The record value of ``raw`` in ``form`` (see :func:`_value_form`)."""
    if form == "python":
        return raw
    if form == "np_str":
        return np.str_(raw)
    if form == "enum":
        return Source(raw) if isinstance(raw, str) else Level(raw)
    if form == "np_int":
        return np.int64(raw)
    if form == "tensor":
        return torch.tensor(raw)
    if form == "np_float64":
        return np.float64(raw)
    if form == "tensor64":
        return torch.tensor(float(raw), dtype=torch.float64)
    if form == "tensor32":
        return torch.tensor([float(raw)], dtype=torch.float32)
    if form == "np_float32":
        return np.float32(raw)
    return torch.tensor(int(raw))  # tensor_int


def scenario(seed: int, world: int = WORLD) -> dict[str, Any]:
    """Handlers and steps of one seeded scenario; records as ``(dataset, name, raw, type, form)`` tuples."""
    rng = np.random.default_rng([2718, world, seed])
    handlers = {t: str(rng.choice(sorted(options))) for t, options in HANDLERS.items()}
    silent = int(rng.integers(0, world)) if seed % 4 == 0 else None  # a rank without any record
    types: dict[tuple[str, str], AggregationType] = {}  # one type per key over all ranks (until a reset)
    # keys each rank holds: those it updated, and after a log every rank's (a rank creates the keys it lacks)
    held: list[set[tuple[str, str]]] = [set() for _ in range(world)]
    steps: list[tuple[Any, ...]] = []
    for _ in range(int(rng.integers(6, 11))):
        kind = str(rng.choice(["update", "update", "update", "log", "log", "checkpoint", "reset", "reject", "reject"]))
        if kind == "update":
            per_rank = []
            for rank in range(world):
                batches = []
                for _ in range(0 if rank == silent else int(rng.integers(0, 3))):
                    records = []
                    for _ in range(int(rng.integers(0, 10))):
                        ds = str(rng.choice(["shared", f"only{rank}"]))
                        key = (ds, str(rng.choice(NAMES)))
                        agg_type = types.setdefault(key, A(str(rng.choice([t.value for t in A]))))
                        held[rank].add(key)
                        if agg_type is A.CATEGORICAL_COUNT:
                            pool = [*CATEGORIES[:3], *RANK_CATEGORIES[rank % 2]]
                        else:
                            pool = POOLS[agg_type]
                        raw = pool[int(rng.integers(0, len(pool)))]
                        records.append((*key, raw, agg_type.value, _value_form(rng, raw, agg_type)))
                    batches.append(records)
                per_rank.append(batches)
            steps.append(("update", per_rank))
        elif kind == "log":
            held = [set(types) for _ in range(world)]
            steps.append(("log", str(rng.choice(["train", "val", ""]))))
        elif kind == "checkpoint":
            steps.append(("checkpoint",))
        elif kind == "reset":
            types.clear()
            held = [set() for _ in range(world)]
            steps.append(("reset",))
        else:
            rank = int(rng.integers(0, world))
            bad = ["nan", "inf", "string", "float_category", "within"]
            how = "conflict" if held[rank] and rng.random() < 0.5 else str(rng.choice(bad))
            conflict = None
            if how == "conflict":
                key = sorted(held[rank])[int(rng.integers(0, len(held[rank])))]
                other = next(t for t in (A.SUM, A.MAX) if t is not types[key])  # also a key known from a log only
                conflict = (*key, other.value)
            steps.append(("reject", rank, how, conflict))
    steps.append(("log", "train"))
    return {"handlers": handlers, "steps": steps, "silent": silent}


def _records(batch: list[tuple[Any, ...]]) -> list[Metric]:
    return [Metric(ds, name, make_value(raw, form), A(t)) for ds, name, raw, t, form in batch]


def _bad_batch(how: str, conflict: tuple[str, str, str] | None) -> tuple[list[Metric], type[Exception]]:
    good = [Metric("shared", "tokens_ok", 1, A.SUM)]  # a valid record next to the bad one: not applied either
    if how == "nan":
        # MIN: its only handler here (the default) refuses NaN; a MEAN drawn as TorchMetrics' MeanMetric (whose
        # default nan_strategy is "warn") would take it (tests/test_aggregation_nan.py)
        return [*good, Metric("bad", "x", torch.tensor(float("nan")), A.MIN)], ValueError
    if how == "inf":
        return [Metric("bad", "x", np.float64(-np.inf), A.DISTRIBUTION), *good], ValueError
    if how == "string":
        return [*good, Metric("bad", "x", "ten", A.MAX)], TypeError
    if how == "float_category":
        return [*good, Metric("bad", "c", 1.5, A.CATEGORICAL_COUNT)], TypeError
    if how == "within":
        return [*good, Metric("bad", "twice", 1, A.SUM), Metric("bad", "twice", 2, A.MIN)], ValueError
    assert conflict is not None
    return [*good, Metric(conflict[0], conflict[1], 3, A(conflict[2]))], ValueError


def _logged(aggregator: MetricsAggregator, prefix: str) -> list[tuple[str, float]]:
    """The logging dict as a list of items: the ranks must agree on the order as well."""
    return list(aggregator.get_metrics_for_logging(prefix=prefix).items())


def run_scenario(rank: int, world_size: int, seed: int) -> list[Any]:
    """One rank's run of a scenario: what each ``log`` step returned (resumed and uninterrupted) and each rejection."""
    sc = scenario(seed, world_size)
    aggregator, uninterrupted = build(sc["handlers"]), build(sc["handlers"])
    out: list[Any] = []
    for step in sc["steps"]:
        if step[0] == "update":
            for batch in step[1][rank]:
                for agg in (aggregator, uninterrupted):
                    agg.update(_records(batch))
        elif step[0] == "log":
            out.append(("log", _logged(aggregator, step[1]), _logged(uninterrupted, step[1])))
        elif step[0] == "checkpoint":
            buffer = io.BytesIO()
            torch.save(aggregator.state_dict(), buffer)
            buffer.seek(0)
            aggregator = build(sc["handlers"])
            aggregator.load_state_dict(torch.load(buffer, weights_only=True))
        elif step[0] == "reset":
            for agg in (aggregator, uninterrupted):
                agg.reset()
        elif step[0] == "reject" and step[1] == rank:
            bad, error = _bad_batch(step[2], step[3])
            for agg in (aggregator, uninterrupted):
                before = snapshot(agg)
                with pytest.raises(error):
                    agg.update(bad)
                assert_same_snapshot(snapshot(agg), before)  # a rejected batch changes nothing
            out.append(("rejected", rank))
    return out


def _ddp_scenarios(rank: int, world_size: int, seeds: list[int]) -> list[list[Any]]:
    return [run_scenario(rank, world_size, seed) for seed in seeds]


def expected_logs(sc: dict[str, Any], world: int) -> list[tuple[str, dict[str, tuple[str, Any]]]]:
    """The reference's logging dict at each ``log`` step, over every rank's records since the last reset."""
    ref = Reference()
    ref.handlers = dict(sc["handlers"])
    out = []
    for step in sc["steps"]:
        if step[0] == "update":
            for rank in range(world):
                for batch in step[1][rank]:
                    for ds, name, raw, t, _ in batch:
                        ref.types[ds, name] = A(t)
                        ref.values.setdefault((ds, name), []).append(raw if A(t) is A.CATEGORICAL_COUNT else float(raw))
        elif step[0] == "log":
            expected = ref_logged(ref, step[1])
            assert expected is not None  # the scenarios' names never clash
            out.append((step[1], expected))
        elif step[0] == "reset":
            ref.reset()
    return out


def check_runs(per_rank: list[list[list[Any]]], seeds: list[int], world: int) -> None:
    for i, seed in enumerate(seeds):
        sc = scenario(seed, world)
        runs = [per_rank[rank][i] for rank in range(world)]
        logs = [[entry for entry in run if entry[0] == "log"] for run in runs]
        expected = expected_logs(sc, world)
        for n, (prefix, want) in enumerate(expected):
            first = logs[0][n][1]
            for rank in range(world):
                _, resumed, uninterrupted = logs[rank][n]
                assert resumed == first, f"seed {seed} log {n}: rank {rank} differs from rank 0"
                assert uninterrupted == first, f"seed {seed} log {n}: rank {rank} differs without checkpoints"
            try:
                assert_logged(dict(first), want)
            except AssertionError as err:
                raise AssertionError(f"seed {seed} log {n} (prefix {prefix!r}): {err}") from None
        rejected = [entry[1] for run in runs for entry in run if entry[0] == "rejected"]
        assert sorted(rejected) == sorted(step[1] for step in sc["steps"] if step[0] == "reject")


def test_random_scenarios_agree_on_every_rank_with_the_reference(ddp_pool):
    per_rank = ddp_pool.run(_ddp_scenarios, SEEDS, timeout=240)
    check_runs(per_rank, SEEDS, WORLD)


def test_scenarios_cover_what_they_are_for():
    """The seeds hold a silent rank, every step, every type, every value form, categories of one rank only."""
    scenarios = [scenario(seed) for seed in SEEDS]
    assert any(sc["silent"] is not None for sc in scenarios)
    steps = {step[0] for sc in scenarios for step in sc["steps"]}
    assert steps == {"update", "log", "checkpoint", "reset", "reject"}
    assert {step[2] for sc in scenarios for step in sc["steps"] if step[0] == "reject"} >= {"conflict", "nan"}
    records = [r for sc in scenarios for s in sc["steps"] if s[0] == "update" for b in s[1] for x in b for r in x]
    assert {A(r[3]) for r in records} == set(A)
    assert {r[4] for r in records} >= {"python", "np_float64", "tensor64", "tensor32", "np_int", "tensor", "enum"}
    assert {r[0] for r in records} == {"shared", "only0", "only1"}
    assert {h for sc in scenarios for h in sc["handlers"].values()} >= {"mean", "torchmetrics", "fine", "p50_p99.9"}


# ----------------------------------------------------------------------------------------- three ranks

SEEDS_3 = [0, 1, 2, 3, 4, 5]


def _ddp_three(rank: int, world_size: int, seeds: list[int]) -> tuple[list[list[Any]], list[tuple[str, float]]]:
    """The scenarios over three ranks, then an aggregator over the group of ranks 0 and 1 (rank 2 alone)."""
    runs = [run_scenario(rank, world_size, seed) for seed in seeds]
    pair, alone = dist.new_group([0, 1], backend="gloo"), dist.new_group([2], backend="gloo")
    aggregator = MetricsAggregator(process_group=pair if rank < 2 else alone)
    aggregator.update(_records(SUBGROUP_RECORDS[rank]))
    return runs, _logged(aggregator, "train")


SUBGROUP_RECORDS = [
    [
        ("d", "n", 1, "sum", "python"),
        ("d", "c", "web", "categorical_count", "python"),
        ("d", "x", 2.5, "max", "python"),
    ],
    [("d", "n", 2, "sum", "python"), ("d", "c", 7, "categorical_count", "python"), ("e", "v", 4.0, "mean", "python")],
    [
        ("d", "n", 4, "sum", "python"),
        ("d", "c", "web", "categorical_count", "python"),
        ("d", "q", 1.0, "min", "python"),
    ],
]


@pytest.fixture(scope="module")
def ddp_pool3():
    from tests.helpers.ddp import DDPPool

    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


def test_three_ranks_and_a_process_group_of_two(ddp_pool3):
    """Three ranks agree with the reference; an aggregator given a group of ranks 0 and 1 aggregates over
    those two only (a third rank in a group of its own logs its own records), whatever the default group holds."""
    results = ddp_pool3.run(_ddp_three, SEEDS_3, timeout=240)
    check_runs([runs for runs, _ in results], SEEDS_3, 3)
    pair, alone = [logged for _, logged in results[:2]], results[2][1]
    assert pair[0] == pair[1]
    for logged, ranks in ((pair[0], (0, 1)), (alone, (2,))):
        ref = Reference()
        for rank in ranks:
            for ds, name, raw, t, _ in SUBGROUP_RECORDS[rank]:
                ref.types[ds, name] = A(t)
                ref.values.setdefault((ds, name), []).append(raw)
        expected = ref_logged(ref, "train")
        assert expected is not None
        assert_logged(dict(logged), expected)


# ----------------------------------------------------------------------------------------- error paths and regressions


class ExactMedian(TorchMetric):
    """A registered metric of TorchMetrics' own kind: a ``cat`` list state of the float64 values it is given."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", [], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor) -> None:
        self.values.append(values)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"p50": torch.quantile(dim_zero_cat(self.values), 0.5)}


MEDIAN_VALUES = ([0.1, 2.0, 3.0, 1e9 + 0.5], [5.0, -7.25])


def _ddp_registered_list_state(rank: int, world_size: int, holder: int) -> list[list[tuple[str, float]]]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.DISTRIBUTION, ExactMedian)
    if rank == holder:
        aggregator.update([Metric("d", "x", v, A.DISTRIBUTION) for v in MEDIAN_VALUES[0]])
    aggregator.update([Metric("d", "n", 1, A.SUM)])
    first = _logged(aggregator, "train")
    aggregator.update([Metric("d", "x", v, A.DISTRIBUTION) for v in MEDIAN_VALUES[1] if rank != holder])
    return [first, _logged(aggregator, "train")]


@pytest.mark.parametrize("holder", [0, 1])
def test_a_registered_list_state_metric_syncs_from_a_rank_without_the_key(ddp_pool, holder):
    """Regression: a rank that lacked the key created the registered metric empty, and TorchMetrics sent its
    empty list state as a float32 placeholder next to the other rank's float64 values: gloo aborted the process
    ("Received data size doesn't match expected size"). Now every rank gets numpy's median of all values."""
    results = ddp_pool.run(_ddp_registered_list_state, holder, timeout=60)
    assert results[0] == results[1]
    first, second = (dict(logged) for logged in results[0])
    assert first == {"train_d/x_stat_p50": float(np.median(MEDIAN_VALUES[0])), "train_d/n": 2.0}
    assert second == {"train_d/x_stat_p50": float(np.median([*MEDIAN_VALUES[0], *MEDIAN_VALUES[1]])), "train_d/n": 2.0}


def _ddp_type_clash(rank: int, world_size: int) -> tuple[list[str], bool, list[tuple[str, float]]]:
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "x", 1.0, A.SUM if rank == 0 else A.MEAN), Metric("d", f"r{rank}", 2.0, A.MAX)])
    before = snapshot(aggregator)
    messages = []
    for _ in range(2):  # raised again on the next call: nobody waits on a rank that went on
        with pytest.raises(ValueError, match="ranks disagree") as err:
            aggregator.get_metrics_for_logging()
        messages.append(str(err.value))
    assert_same_snapshot(snapshot(aggregator), before)
    aggregator.reset()  # on every rank: the way out
    aggregator.update([Metric("d", "x", 3.0 + rank, A.MEAN)])
    return messages, True, _logged(aggregator, "train")


def test_a_type_clash_between_ranks_raises_on_every_rank_until_a_reset(ddp_pool):
    """docs/aggregation.md: a type conflict between ranks raises the same ValueError on every rank (before any
    metric syncs, so nothing changes); it raises at every call until the ranks reset."""
    results = ddp_pool.run(_ddp_type_clash, timeout=60)
    assert results[0][0] == results[1][0]
    assert all("SUM" in m and "MEAN" in m and "'x'" in m for m in results[0][0])
    assert results[0][2] == results[1][2] == [("train_d/x", 3.5)]


def _ddp_logged_key_clash(rank: int, world_size: int) -> list[str]:
    aggregator = MetricsAggregator()
    aggregator.update([Metric("a/b", "c", 1, A.SUM)] if rank == 0 else [Metric("a", "b/c", 5.0, A.MAX)])
    messages = []
    for _ in range(2):
        with pytest.raises(ValueError, match="logged under one key") as err:
            aggregator.get_metrics_for_logging()
        messages.append(str(err.value))
    return messages


def test_two_ranks_metrics_logged_under_one_key_raise_on_every_rank(ddp_pool):
    """``Metric("a/b", "c")`` on one rank and ``Metric("a", "b/c")`` on the other: the ValueError of two metrics
    under one logging key is raised on every rank alike (after every metric synced), call after call."""
    results = ddp_pool.run(_ddp_logged_key_clash, timeout=60)
    assert results[0] == results[1]
    assert "'train_a/b/c'" in results[0][0]
