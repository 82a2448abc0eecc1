"""MetricsAggregator with wrapper handlers (``register_handler(t, lambda: Windowed(inner, window_size=...))``).

What each handler logs, as flat floats, against numpy over the same records (the window written from
``Windowed``'s rule: the newest whole updates whose sizes sum to at most ``window_size``, or the newest
``window_size`` values of one larger update); a batch refused part-way leaves every handler as it was,
the metrics inside a wrapper and its ring included; real 2-process gloo DDP.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from torchmetrics import Metric as TorchMetric

from tests.helpers.handler_metrics import NonNegativeTotal, count_snapshots
from torchmetrics_ext import Windowed
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

A = AggregationType
ALPHA = 0.01  # Distribution's default relative accuracy (its percentiles)
INNER = {A.SUM: Sum, A.MEAN: Mean, A.MAX: Max, A.MIN: Min, A.DISTRIBUTION: Distribution}
NAMES = {A.SUM: "tokens", A.MEAN: "loss", A.MAX: "max_len", A.MIN: "min_len", A.DISTRIBUTION: "seq_len"}


def windowed_aggregator(window_size: int, types=tuple(INNER)) -> MetricsAggregator:
    aggregator = MetricsAggregator()
    for agg_type in types:
        aggregator.register_handler(agg_type, lambda inner=INNER[agg_type]: Windowed(inner(), window_size=window_size))
    return aggregator


def window_of(batches: list[list[float]], size: int) -> list[float]:
    """``Windowed``'s window over one key's updates (oldest first), written from its docstring."""
    kept: list[float] = []
    for batch in reversed(batches):
        if not kept and len(batch) > size:  # the newest update alone is larger: its newest `size` values
            return batch[-size:]
        if len(kept) + len(batch) > size:
            break
        kept = batch + kept
    return kept


def numpy_entries(agg_type: AggregationType, values: list[float]) -> dict[str, float]:
    """What one key logs (suffix -> value), from numpy: the inner metric's definition."""
    v = np.asarray(values, dtype=np.float64)
    if agg_type is A.SUM:
        return {"": float(v.sum())}
    if agg_type is A.MEAN:
        return {"": float(v.mean())}
    if agg_type is A.MAX:
        return {"": float(v.max())}
    if agg_type is A.MIN:
        return {"": float(v.min())}
    out = {"_stat_mean": v.mean(), "_stat_min": v.min(), "_stat_max": v.max()}
    if v.size > 1:
        out["_stat_std"] = v.std(ddof=1)
    out.update({f"_stat_p{q:02d}": p for q, p in zip((5, 50, 95), np.percentile(v, [5, 50, 95]), strict=True)})
    return {k: float(x) for k, x in out.items()}


def expected_logged(updates: dict[tuple[str, str, AggregationType], list[list[float]]], window) -> dict[str, float]:
    """``{logging key: numpy value}``: ``{name}_lifetime{entry}`` and ``{name}_window{entry}`` per key.

    ``window(key, batches)`` gives the key's window values (one process: :func:`window_of`).
    """
    out = {}
    for (ds, name, agg_type), batches in updates.items():
        lifetime = [x for batch in batches for x in batch]
        for part, values in (("lifetime", lifetime), ("window", window((ds, name, agg_type), batches))):
            for entry, value in numpy_entries(agg_type, values).items():
                out[f"train_{ds}/{name}_{part}{entry}"] = value
    return out


def assert_logged(logged: dict[str, float], expected: dict[str, float]) -> None:
    assert set(logged) == set(expected), sorted(set(logged) ^ set(expected))
    assert all(type(value) is float for value in logged.values())  # flat floats, ready for a logger
    for key, value in expected.items():
        rtol = ALPHA if "_stat_p" in key else 1e-12
        np.testing.assert_allclose(logged[key], value, rtol=rtol, err_msg=key)


def random_updates(seed: int, steps: int, large_at: int | None = None):
    """Per step, a batch of records: each key gets 0 to 9 values (``large_at``: 30 values for every key)."""
    rng = np.random.default_rng(seed)
    steps_out = []
    for step in range(steps):
        records = []
        for agg_type, name in NAMES.items():
            for ds in ("alpaca", "dolly"):
                n = 30 if step == large_at else int(rng.integers(0, 10))
                records += [Metric(ds, name, float(rng.integers(1, 4096)), agg_type) for _ in range(n)]
        steps_out.append(records)
    return steps_out


def fed(steps) -> dict[tuple[str, str, AggregationType], list[list[float]]]:
    """One key's updates as the aggregator makes them: one per step that has values for it, in record order."""
    updates: dict[tuple[str, str, AggregationType], list[list[float]]] = defaultdict(list)
    for records in steps:
        batch: dict[tuple[str, str, AggregationType], list[float]] = defaultdict(list)
        for r in records:
            batch[r.dataset_name, r.name, r.agg_type].append(r.value)
        for key, values in batch.items():
            updates[key].append(values)
    return updates


# ----------------------------------------------------------------------------- what each wrapper logs


@pytest.mark.parametrize("large_at", [None, 7], ids=["small-updates", "an-update-larger-than-the-window"])
def test_windowed_handlers_log_flat_floats_of_the_lifetime_and_the_window(large_at):
    """``Windowed(Distribution())`` made ``get_metrics_for_logging`` raise (its compute is a dict of the lifetime's
    and the window's dicts); now every ``Windowed`` handler logs ``{name}_lifetime...`` and ``{name}_window...``
    (a DISTRIBUTION's ``_stat_`` entries after them), as ``Windowed(Sum())`` logged ``{name}_window``."""
    window_size = 20
    steps = random_updates(3, 12, large_at)
    aggregator = windowed_aggregator(window_size)
    for records in steps:
        aggregator.update(records)
    expected = expected_logged(fed(steps), lambda key, batches: window_of(batches, window_size))
    assert "train_alpaca/seq_len_window_stat_p50" in expected and "train_dolly/tokens_window" in expected
    assert_logged(aggregator.get_metrics_for_logging(), expected)


def test_a_windowed_distribution_next_to_a_metric_named_like_its_entry_is_a_clash():
    """A nested entry's logging key is checked for clashes like any other."""
    aggregator = windowed_aggregator(4, (A.DISTRIBUTION,))
    aggregator.update([Metric("d", "x", 1.0, A.DISTRIBUTION), Metric("d", "x_window_stat_mean", 2.0, A.SUM)])
    with pytest.raises(ValueError, match="'train_d/x_window_stat_mean' from"):
        aggregator.get_metrics_for_logging()


def test_windowed_categorical_count_is_refused_at_the_first_update_naming_why():
    """``Windowed`` refuses ``CategoricalCount`` (its counts vector is aligned to first-seen categories): the
    handler's first metric raises that reason out of ``update``, and the batch changes nothing."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.CATEGORICAL_COUNT, lambda: Windowed(CategoricalCount(), window_size=8))
    aggregator.update([Metric("d", "n", 1, A.SUM)])
    with pytest.raises(ValueError, match=r"Windowed cannot wrap CategoricalCount: .*reset it every N steps"):
        aggregator.update([Metric("d", "n", 5, A.SUM), Metric("d", "source", "web", A.CATEGORICAL_COUNT)])
    assert aggregator.get_metrics_for_logging() == {"train_d/n": 1.0}


# ----------------------------------------------------------------------------- a batch refused part-way


def checkpoint(aggregator: MetricsAggregator) -> tuple[list, dict[str, torch.Tensor]]:
    state = aggregator.state_dict()
    return state["metadata"]["metrics"], {k: v.clone() for k, v in state["tensors"].items()}


@pytest.mark.parametrize("refusing", ["plain", "windowed"])
def test_a_batch_refused_after_a_windowed_handler_took_its_values_leaves_it_as_it_was(refusing):
    """The rollback of a refused batch restored the handler's own states only: a ``Windowed`` holds none (its
    lifetime and window metrics and its ring do), so the refused batch's values stayed in its lifetime and
    window, and later windows evicted from a ring that had one update too many. Reference: numpy over the
    accepted records only (the window as ``Windowed`` defines it)."""
    window_size = 6
    aggregator = windowed_aggregator(window_size, (A.SUM, A.MEAN, A.DISTRIBUTION))

    def refusing_handler():
        return NonNegativeTotal() if refusing == "plain" else Windowed(NonNegativeTotal(), window_size=window_size)

    aggregator.register_handler(A.MAX, refusing_handler)
    accepted = [
        [Metric("d", "s", 1.0, A.SUM), Metric("d", "m", 2.0, A.MEAN), Metric("d", "x", 3.0, A.DISTRIBUTION)],
        [Metric("d", "s", v, A.SUM) for v in (4.0, 8.0)] + [Metric("d", "x", v, A.DISTRIBUTION) for v in (5.0, 9.0)],
        [Metric("d", "m", 16.0, A.MEAN), Metric("d", "guard", 1.0, A.MAX)],
    ]
    for records in accepted:
        aggregator.update(records)
    before_logged, before_state = aggregator.get_metrics_for_logging(), checkpoint(aggregator)
    refused = [
        *[Metric("d", "s", v, A.SUM) for v in (32.0, 64.0, 128.0)],  # applied first
        Metric("d", "m", 256.0, A.MEAN),
        *[Metric("d", "x", v, A.DISTRIBUTION) for v in (1.0, 2.0, 3.0, 4.0)],
        Metric("d", "guard", -1.0, A.MAX),  # then refused by the registered metric itself
    ]
    with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
        aggregator.update(refused)
    assert aggregator.get_metrics_for_logging() == before_logged
    metadata, tensors = checkpoint(aggregator)
    assert metadata == before_state[0]
    assert tensors.keys() == before_state[1].keys()
    assert all(torch.equal(tensors[k], before_state[1][k]) for k in tensors), [
        k for k in tensors if not torch.equal(tensors[k], before_state[1][k])
    ]
    more = [
        [Metric("d", "s", v, A.SUM) for v in (2.0, 3.0, 5.0)] + [Metric("d", "x", 7.0, A.DISTRIBUTION)],
        [Metric("d", "s", 11.0, A.SUM), Metric("d", "m", 1.0, A.MEAN), Metric("d", "x", 2.0, A.DISTRIBUTION)],
    ]
    for records in more:  # the ring goes on evicting the updates it really holds
        aggregator.update(records)
    updates = fed(accepted + more)
    guard = updates.pop(("d", "guard", A.MAX))
    expected = expected_logged(updates, lambda key, batches: window_of(batches, window_size))
    logged = aggregator.get_metrics_for_logging()
    guard_keys = [k for k in logged if k.startswith("train_d/guard")]
    assert_logged({k: v for k, v in logged.items() if k not in guard_keys}, expected)
    assert [logged[k] for k in guard_keys] == [math.fsum(b[0] for b in guard)] * len(guard_keys)


@pytest.mark.parametrize("accepted", range(1, 9))
def test_a_refused_batch_leaves_the_window_ring_as_it_was_whatever_its_turn(accepted):
    """The refused batch's update may turn the window's ring (its slots rewritten in place as suffix sums, once per
    turn): after any number of accepted updates, the refused one leaves the ring as it was, and the next updates
    evict exactly what an uninterrupted run evicts. Reference: numpy over the accepted values."""
    window_size = 3
    aggregator = windowed_aggregator(window_size, (A.SUM, A.DISTRIBUTION))
    aggregator.register_handler(A.MAX, NonNegativeTotal)
    aggregator.update([Metric("d", "guard", 0.0, A.MAX)])
    values = [float(2**k) for k in range(accepted + 4)]
    for value in values[:accepted]:
        aggregator.update([Metric("d", "s", value, A.SUM), Metric("d", "x", value, A.DISTRIBUTION)])
    before = checkpoint(aggregator)
    with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
        aggregator.update(
            [Metric("d", "s", 1e6, A.SUM), Metric("d", "x", 1e6, A.DISTRIBUTION), Metric("d", "guard", -1.0, A.MAX)]
        )
    after = checkpoint(aggregator)
    assert after[0] == before[0]
    assert all(torch.equal(after[1][k], before[1][k]) for k in before[1])
    for value in values[accepted:]:
        aggregator.update([Metric("d", "s", value, A.SUM), Metric("d", "x", value, A.DISTRIBUTION)])
    batches = [[v] for v in values]
    expected = expected_logged(
        {("d", "s", A.SUM): batches, ("d", "x", A.DISTRIBUTION): batches},
        lambda key, batches: window_of(batches, window_size),
    )
    logged = aggregator.get_metrics_for_logging()
    assert logged.pop("train_d/guard") == 0.0
    assert_logged(logged, expected)


# ----------------------------------------------------------------------------- DDP (2 gloo ranks)

DDP_WINDOW = 8  # 4 samples kept on each of the 2 ranks


def ddp_steps(rank: int) -> list[list[Metric]]:
    """Each rank its own values, in batches of its own sizes; ``only0`` on rank 0 alone."""
    rng = np.random.default_rng(40 + rank)
    steps = []
    for step in range(6 + 3 * rank):
        records = []
        for agg_type, name in ((A.SUM, "tokens"), (A.DISTRIBUTION, "seq_len")):
            records += [Metric("d", name, float(rng.integers(1, 4096)), agg_type) for _ in range(1 + (step + rank) % 3)]
        if rank == 0 and step % 2:
            records.append(Metric("d", "only0", float(step), A.DISTRIBUTION))
        steps.append(records)
    return steps


def _ddp_windowed(rank: int, world_size: int) -> dict[str, float]:
    aggregator = windowed_aggregator(DDP_WINDOW, (A.SUM, A.DISTRIBUTION))
    for records in ddp_steps(rank):
        aggregator.update(records)
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
def test_ddp_windowed_handlers_log_every_ranks_lifetime_and_window(ddp_pool):
    """Under DDP each rank keeps its share of the window (``window_size // world_size`` samples by the same rule)
    and the wrapper syncs both; every rank logs the same flat floats. Reference: numpy over all ranks' values,
    the window as the union of each rank's own window."""
    results = ddp_pool.run(_ddp_windowed)
    assert results[0] == results[1]
    per_rank = [fed(ddp_steps(rank)) for rank in range(2)]
    updates = {key: [b for rank in per_rank for b in rank.get(key, [])] for key in {k for r in per_rank for k in r}}

    def window(key, batches):
        share = DDP_WINDOW // 2
        return [v for rank in per_rank for v in window_of(rank.get(key, []), share)]

    assert_logged(results[0], expected_logged(updates, window))


class LowerMedian(TorchMetric):
    """A registered metric with a list state (``cat``): the lower median of the values it took."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, values):
        self.values.append(values.to(torch.float64).reshape(-1))

    def compute(self):
        values = torch.cat(self.values) if isinstance(self.values, list) else self.values
        return values.sort().values[(values.numel() - 1) // 2]


def test_refused_batches_leave_list_state_and_torchmetrics_wrapper_handlers_as_they_were():
    """Random batches, about one in three refused part-way (a negative value for the refusing key, anywhere in the
    batch): a ``Windowed`` handler around a list-state metric and TorchMetrics' ``Running`` wrapper (states of its
    own per past update) log what the accepted batches alone give. Reference: plain Python over the accepted
    records (the lower median, the window by ``Windowed``'s rule, ``Running``'s last 3 updates)."""
    from torchmetrics.aggregation import SumMetric
    from torchmetrics.wrappers import Running

    window_size = 5
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.MEAN, lambda: Windowed(LowerMedian(), window_size=window_size))
    aggregator.register_handler(A.SUM, lambda: Running(SumMetric(), window=3))
    aggregator.register_handler(A.MAX, NonNegativeTotal)
    rng = np.random.default_rng(11)
    accepted = [[Metric("d", "med", 50.0, A.MEAN), Metric("d", "run", 1.0, A.SUM)]]
    aggregator.update(accepted[0])
    aggregator.update([Metric("d", "guard", 0.0, A.MAX)])  # its key after theirs: refused after they took values
    for _ in range(40):
        records = [Metric("d", "med", float(rng.integers(0, 100)), A.MEAN) for _ in range(rng.integers(1, 4))]
        records += [Metric("d", "run", float(rng.integers(0, 100)), A.SUM) for _ in range(rng.integers(1, 4))]
        if rng.random() < 0.35:
            records.insert(int(rng.integers(0, len(records) + 1)), Metric("d", "guard", -1.0, A.MAX))
            with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
                aggregator.update(records)
        else:
            aggregator.update(records)
            accepted.append(records)
    updates = fed(accepted)

    def lower_median(values):
        return sorted(values)[(len(values) - 1) // 2]

    med = updates["d", "med", A.MEAN]
    expected = {
        "train_d/guard": 0.0,
        "train_d/med_lifetime": lower_median([v for batch in med for v in batch]),
        "train_d/med_window": lower_median(window_of(med, window_size)),
        "train_d/run": math.fsum(v for batch in updates["d", "run", A.SUM][-3:] for v in batch),
    }
    assert aggregator.get_metrics_for_logging() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- updates that cannot be refused

# every kind of value the aggregator accepts (finite numbers, as float64): extremes, subnormals, signed zeros
ACCEPTED_VALUES = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
]
ACCEPTED_VALUES += [3, True, np.float32(2.5), np.int64(-7), torch.tensor(4.0), 10**300, 2**53 + 1]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")  # std of one value
@pytest.mark.parametrize("agg_type", list(INNER))
def test_windowed_package_aggregations_take_every_value_the_aggregator_accepts(agg_type):
    """``apply_updates`` runs a ``Windowed`` around Sum/Mean/Max/Min/Distribution without a rollback copy, after
    every step that may raise: that needs its update never to refuse what the aggregator accepted. Every accepted
    value alone, then all of them in one batch and as one batch each, and an empty batch (fed directly): none
    raises, and what Max/Min/Sum keep is the plain-Python extreme or value (a lone value) of what they were fed."""
    floats = [float(v) for v in ACCEPTED_VALUES]
    for value, number in zip(ACCEPTED_VALUES, floats, strict=True):
        aggregator = windowed_aggregator(4, (agg_type,))
        aggregator.update([Metric("d", "k", value, agg_type)])
        (windowed,) = aggregator.metrics.values()
        lifetime = windowed.compute()["lifetime"]
        if agg_type is A.DISTRIBUTION:
            assert lifetime["max"].item() == number and lifetime["min"].item() == number
        else:
            assert lifetime.item() == number  # (a sum from 0.0 keeps no sign of zero: 0.0 + -0.0 == 0.0)
    for window_size in (3, 64):
        aggregator = windowed_aggregator(window_size, (agg_type,))
        aggregator.update([Metric("d", "k", v, agg_type) for v in ACCEPTED_VALUES])
        for value in ACCEPTED_VALUES + ACCEPTED_VALUES[::-1]:
            aggregator.update([Metric("d", "k", value, agg_type)])
        (windowed,) = aggregator.metrics.values()
        lifetime = windowed.compute()["lifetime"]
        if agg_type is A.MAX:
            assert lifetime.item() == max(floats)
        elif agg_type is A.MIN:
            assert lifetime.item() == min(floats)
        elif agg_type is A.DISTRIBUTION:
            assert (lifetime["min"].item(), lifetime["max"].item()) == (min(floats), max(floats))
    windowed = Windowed(INNER[agg_type](), window_size=4)
    windowed.update(torch.tensor([2.0], dtype=torch.float64))
    windowed.update(torch.empty(0, dtype=torch.float64))
    if agg_type is not A.DISTRIBUTION:
        assert windowed.compute()["lifetime"].item() == 2.0


def test_a_batch_copies_only_the_handlers_whose_update_may_raise(monkeypatch):
    """A rollback copy per registered handler made a ``Windowed(Sum())`` handler ~4x slower per update. The
    handlers that cannot refuse (a ``Windowed`` around the package's value aggregations) are copied never, and the
    last handler that may refuse not when a refused update leaves it as it was (``Windowed``, the package's
    metrics): only the plain TorchMetrics metrics before it are. A refusal still undoes them all, whatever the
    order of the keys; the keys are logged in record order."""
    copied = count_snapshots(monkeypatch)
    aggregator = windowed_aggregator(4, (A.SUM, A.DISTRIBUTION))
    aggregator.register_handler(A.MAX, NonNegativeTotal)
    aggregator.register_handler(A.MIN, lambda: Windowed(NonNegativeTotal(), window_size=4))
    first = [
        Metric("d", "s", 1.0, A.SUM),
        Metric("d", "g1", 1.0, A.MAX),
        Metric("d", "x", 2.0, A.DISTRIBUTION),
        Metric("d", "g2", 1.0, A.MAX),
        Metric("d", "w", 3.0, A.MIN),
    ]
    aggregator.update(first)  # new keys: nothing to copy
    assert copied == []
    aggregator.update(first)
    assert copied == ["NonNegativeTotal", "NonNegativeTotal"]  # not the Windowed(NonNegativeTotal) run last
    logged = aggregator.get_metrics_for_logging()
    names = [key.split("/")[1].split("_")[0] for key in logged]
    assert list(dict.fromkeys(names)) == ["s", "g1", "x", "g2", "w"]
    before = checkpoint(aggregator)
    for refused_at in ("g1", "g2", "w"):
        refused = [Metric("d", r.name, -1.0 if r.name == refused_at else 5.0, r.agg_type) for r in first]
        with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
            aggregator.update(refused)
        after = checkpoint(aggregator)
        assert after[0] == before[0]
        assert all(torch.equal(after[1][k], before[1][k]) for k in before[1]), refused_at
    assert aggregator.get_metrics_for_logging() == logged
    aggregator.update(first)
    expected = {"s": 3.0, "g1": 3.0, "g2": 3.0}  # three accepted batches of one value each (plain Python)
    logged = aggregator.get_metrics_for_logging()
    assert {k: logged[f"train_d/{k}"] for k in ("g1", "g2")} == {"g1": expected["g1"], "g2": expected["g2"]}
    assert logged["train_d/s_lifetime"] == expected["s"]


@pytest.mark.parametrize("agg_type", [A.SUM, A.DISTRIBUTION])
def test_windowed_package_aggregations_take_values_in_and_out_of_inference_mode(agg_type):
    """The handlers updated without a rollback copy never refuse either when the key was made under
    ``torch.inference_mode`` (Lightning's validation) and updated outside it, or back: no in-place write into an
    inference tensor. Reference: plain Python over the values fed."""
    aggregator = windowed_aggregator(4, (agg_type,))
    fed_values = []
    for mode, value in ((True, 1.0), (False, 2.0), (True, 3.0)):
        with torch.inference_mode(mode):
            for _ in range(6):
                aggregator.update([Metric("d", "k", value, agg_type)])
                fed_values.append(value)
    logged = aggregator.get_metrics_for_logging()
    if agg_type is A.SUM:
        assert logged["train_d/k_lifetime"] == sum(fed_values)
        assert logged["train_d/k_window"] == sum(fed_values[-4:])
    else:
        assert logged["train_d/k_lifetime_stat_max"] == max(fed_values)
        assert logged["train_d/k_window_stat_min"] == min(fed_values[-4:])
