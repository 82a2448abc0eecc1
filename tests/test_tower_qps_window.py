"""TowerQPS's window of recent seconds (TorchRec's ``window_qps``), per task, shared with Throughput.

Time comes from an injected clock, so every expected value is worked out here from the clock
readings and the counts (by hand in comments, or by the documented rule written in numpy).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.test_throughput import Ticks  # a fake clock of readings (picklable)


def _values(metric):
    return {name: value.tolist() for name, value in metric.compute().items()}


def _run(metric, counts):
    for n in counts:
        metric.update(num_examples=torch.tensor(n))
    return metric


def test_window_by_hand_two_tasks():
    # readings 0, 1, 3, 4, 8 with warmup 1: timed updates 2..5 take 1, 2, 1, 4 s (timeline 0-1, 1-3, 3-4, 4-8)
    metric = tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=5.0, clock=Ticks([0, 1, 3, 4, 8]))
    _run(metric, [[7, 7], [10, 1], [20, 2], [30, 3], [40, 4]])
    # lifetime: (10+20+30+40, 1+2+3+4) / 8 s; window 5 s ends at 8: updates starting at >= 3 (the last two), 5 s
    assert _values(metric) == {
        "lifetime_qps": [100 / 8, 10 / 8],
        "window_qps": [70 / 5, 7 / 5],
        "total_examples": [107.0, 17.0],
    }


def test_one_task_counted_from_preds_gives_scalars_and_the_newest_update_always_fits():
    metric = tmx.TowerQPS(warmup_steps=1, window_seconds=0.5, clock=Ticks([0.0, 2.0, 5.0]))
    for n in (4, 6, 9):
        metric.update(torch.zeros(n))
    values = metric.compute()
    assert all(v.ndim == 0 and v.dtype == torch.float64 for v in values.values())
    # the newest update (3 s) is longer than the window: it is the window alone
    assert {k: v.item() for k, v in values.items()} == {
        "lifetime_qps": 15 / 5,
        "window_qps": 9 / 3,
        "total_examples": 19.0,
    }


def test_nothing_timed_is_zero_as_torchrec():
    metric = tmx.TowerQPS(num_tasks=2, warmup_steps=2, window_seconds=1.0, clock=Ticks([0.0, 1.0]))
    _run(metric, [[3, 4], [5, 6]])
    assert _values(metric) == {"lifetime_qps": [0.0, 0.0], "window_qps": [0.0, 0.0], "total_examples": [8.0, 10.0]}


@pytest.mark.parametrize("seed", range(5))
def test_window_matches_the_documented_rule(seed):
    """Random steps against the rule in numpy: the newest timed updates that started within the window."""
    rng = np.random.default_rng(seed)
    steps, warmup, window, tasks = 30, 3, 2.5, 3
    readings = np.cumsum(rng.uniform(0.0, 1.5, steps))
    counts = rng.integers(0, 50, (steps, tasks))
    metric = tmx.TowerQPS(num_tasks=tasks, warmup_steps=warmup, window_seconds=window, clock=Ticks(readings.tolist()))
    _run(metric, counts.tolist())
    timed = slice(warmup, steps)
    seconds = np.diff(readings)[warmup - 1 :]
    ends = np.cumsum(seconds)
    starts = ends - seconds
    inside = starts >= ends[-1] - window
    inside[-1] = True
    values = metric.compute()
    np.testing.assert_allclose(values["lifetime_qps"].numpy(), counts[timed].sum(0) / seconds.sum(), rtol=1e-12)
    expected_window = counts[timed][inside].sum(0) / (ends[-1] - starts[inside][0])
    np.testing.assert_allclose(values["window_qps"].numpy(), expected_window, rtol=1e-12)
    np.testing.assert_array_equal(values["total_examples"].numpy(), counts.sum(0))


def test_without_a_window_compute_and_checkpoints_are_as_before():
    metric = tmx.TowerQPS(num_tasks=2, warmup_steps=1, clock=Ticks([0.0, 2.0]))
    metric.persistent(True)
    _run(metric, [[1, 1], [10, 4]])
    assert torch.equal(metric.compute(), torch.tensor([5.0, 2.0], dtype=torch.float64))
    assert set(metric.state_dict()) == {"num_examples_warmup1", "seconds_warmup1"}
    assert metric._value_entries() is None


def test_state_dict_round_trip_and_the_loaded_window_leaves_as_one_update():
    source = tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=3.0, clock=Ticks([0, 1, 2]))
    source.persistent(True)
    _run(source, [[9, 9], [10, 20], [30, 40]])  # timed: 1 s and 1 s, both in the window
    saved = copy.deepcopy(source.state_dict())
    assert set(saved) == {
        "num_examples_warmup1",
        "seconds_warmup1",
        "total_examples",
        "window_examples_warmup1_window3",
        "window_elapsed_warmup1_window3",
    }
    metric = tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=3.0, clock=Ticks([100, 102, 103]))
    metric.persistent(True)
    metric.load_state_dict(saved)
    assert (
        _values(metric)
        == _values(source)
        == {
            "lifetime_qps": [20.0, 30.0],
            "window_qps": [20.0, 30.0],
            "total_examples": [49.0, 69.0],
        }
    )
    # after a load the next update only starts the clock again (warm-up 1); then 2 s, then 1 s
    _run(metric, [[1, 1], [4, 4], [6, 6]])
    # timeline: the loaded window (2 s, 40/60 examples) at -2..0, then 0..2, 2..3; window 3 s ends at 3:
    # the loaded block started at -2 < 0 and leaves whole; the window is the last two updates over 3 s
    assert _values(metric) == {
        "lifetime_qps": [50 / 5, 70 / 5],
        "window_qps": [10 / 3, 10 / 3],
        "total_examples": [60.0, 80.0],
    }
    clone = pickle.loads(pickle.dumps(metric))
    assert _values(clone) == _values(metric)


def test_a_checkpoint_written_without_a_window_loads_into_one_with_a_window():
    # what TowerQPS(num_tasks=2, warmup_steps=1).persistent(True) saved before it had a window
    old = {"num_examples_warmup1": torch.tensor([30.0, 60.0], dtype=torch.float64)}
    old["seconds_warmup1"] = torch.tensor([2.0, 2.0], dtype=torch.float64)
    plain = tmx.TowerQPS(num_tasks=2, warmup_steps=1)
    plain.persistent(True)
    plain.load_state_dict(old)
    assert plain.compute().tolist() == [15.0, 30.0]
    windowed = tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=10.0, clock=Ticks([0.0, 1.0]))
    windowed.persistent(True)
    windowed.load_state_dict(old)  # strict: the window states are derived (empty), total from the counted examples
    assert _values(windowed) == {"lifetime_qps": [15.0, 30.0], "window_qps": [0.0, 0.0], "total_examples": [30.0, 60.0]}
    _run(windowed, [[1, 1], [5, 10]])  # warm-up again, then 5/10 examples in 1 s
    assert _values(windowed) == {
        "lifetime_qps": [35 / 3, 70 / 3],
        "window_qps": [5.0, 10.0],
        "total_examples": [36.0, 71.0],
    }


def test_merge_state_joins_the_windows_as_ranks_side_by_side():
    ours = _run(
        tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=2.5, clock=Ticks([0, 1, 2, 3])),
        [[0, 0], [1, 2], [3, 4], [5, 6]],
    )
    theirs = _run(
        tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=2.5, clock=Ticks([0, 2, 4])),
        [[0, 0], [10, 20], [30, 40]],
    )
    as_states = copy.deepcopy(theirs.metric_state)
    twin = copy.deepcopy(ours)
    ours.merge_state(theirs)
    # ours: 0-1, 1-2, 2-3 (the last two fit 2.5 s: 8/10 examples over 2 s); theirs: 0-2, 2-4 placed to end at 3:
    # -1..1 (out), 1..3 (in); the merged window: 1..3, 2 s, examples 3+5+30, 4+6+40
    assert _values(ours) == {
        "lifetime_qps": [49 / 4, 72 / 4],
        "window_qps": [38 / 2, 50 / 2],
        "total_examples": [49.0, 72.0],
    }
    # a dict of states: their window (the last update alone: 2 s, 30/40) as one update, as above
    twin.merge_state(as_states)
    assert _values(twin) == _values(ours)


def test_reset_clears_the_window_and_bad_window_is_refused():
    metric = _run(tmx.TowerQPS(warmup_steps=1, window_seconds=1.0, clock=Ticks([0, 1, 5, 6])), [[2], [3]])
    metric.reset()
    _run(metric, [[4], [5]])  # warm-up again (reading 5), then 5 examples in 1 s
    assert {k: v.item() for k, v in metric.compute().items()} == {
        "lifetime_qps": 5.0,
        "window_qps": 5.0,
        "total_examples": 9.0,
    }
    for bad in (0, -1.0, float("inf"), float("nan"), "3", True):
        with pytest.raises(ValueError, match="`window_seconds`"):
            tmx.TowerQPS(window_seconds=bad)


def test_windowed_still_refuses_it_and_names_its_own_window():
    with pytest.raises(ValueError, match=r"own window.*window_qps"):
        tmx.Windowed(tmx.TowerQPS(window_seconds=5.0), window_size=10)


def test_window_settings_never_share_a_compute_group():
    from torchmetrics import MetricCollection

    collection = MetricCollection(
        {
            "a": tmx.TowerQPS(window_seconds=1.0, warmup_steps=0, clock=Ticks(range(10))),
            "b": tmx.TowerQPS(window_seconds=2.0, warmup_steps=0, clock=Ticks(range(10))),
        },
        compute_groups=True,
    )
    for _ in range(4):
        collection.update(torch.zeros(3))
    values = collection.compute()
    # steps of 1 s, 3 examples each: windows of 1 and 2 updates (the first update only starts the clock)
    assert values["a_window_qps"].item() == 3.0 and values["b_window_qps"].item() == 3.0
    assert all(len(group) == 1 for group in collection.compute_groups.values())


def _ddp_job(rank, world_size):
    readings, counts = {
        0: ([0, 1, 2, 3], [[0, 0], [1, 2], [3, 4], [5, 6]]),
        1: ([0, 2, 6], [[0, 0], [10, 20], [30, 40]]),
    }[rank]
    metric = _run(tmx.TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=3.5, clock=Ticks(readings)), counts)
    return {k: v.tolist() for k, v in metric.compute().items()}


@pytest.mark.ddp
def test_ddp_window_sums_examples_and_takes_the_slowest_window(ddp_pool):
    # rank 0: timed 1 s each (9/12 examples in 3 s, all in the 3.5 s window: 3 s); rank 1: 2 s and 4 s
    # (40/60 in 6 s; window: the newest alone, 4 s, 30/40). Lifetime (9+40)/max(3, 6); window (9+30)/max(3, 4)
    expected = {"lifetime_qps": [49 / 6, 72 / 6], "window_qps": [39 / 4, 52 / 4], "total_examples": [49.0, 72.0]}
    for value in ddp_pool.run(_ddp_job):
        assert value.keys() == expected.keys()
        for name, values in expected.items():
            assert value[name] == pytest.approx(values, rel=1e-12), name


def test_a_tower_qps_pickled_before_the_window_unpickles_and_runs():
    metric = _run(tmx.TowerQPS(num_tasks=2, warmup_steps=1, clock=Ticks([0.0, 1.0, 3.0])), [[1, 1], [4, 2]])
    state = metric.__getstate__()
    for name in ("window_seconds", "_window_names", "_window_from_states", "_recent", "_now", "_recent_examples"):
        state.pop(name, None)  # what an earlier version's pickle held
    old = tmx.TowerQPS.__new__(tmx.TowerQPS)
    old.__setstate__(state)
    old.update(num_examples=torch.tensor([6, 8]))  # 2 s
    assert old.compute().tolist() == [10 / 3, 10 / 3]
    old.reset()
    assert old.compute().tolist() == [0.0, 0.0]


def test_arithmetic_takes_the_rate_without_a_window_and_refuses_the_dict_with_one() -> None:
    ticks = iter([0.0, 2.0, 4.0])
    plain = tmx.TowerQPS(warmup_steps=1, clock=lambda: next(ticks))
    doubled = plain * 2
    for _ in range(3):
        doubled.update(torch.zeros(100))
    assert doubled.compute().item() == 100.0  # 200 examples in 4 s after the warm-up step, twice
    with pytest.raises(TypeError, match=r'TowerQPS.compute\(\) returns a dict.*metric\["lifetime_qps"\]'):
        tmx.TowerQPS(window_seconds=3.0) * 2


def test_merging_several_ranks_is_the_ddp_sum_and_max_of_their_windows():
    """``a.merge_state(b); a.merge_state(c)`` with two tasks: ``window_qps`` is DDP's reduction over the three
    ranks (window examples summed, seconds the longest), each rank's window written out by hand (b's and c's
    newest timed updates, 3 s and 4 s, are longer than the 2 s window: they are their windows)."""
    readings = {"a": [0.0, 1.0, 1.5], "b": [0.0, 0.5, 3.5], "c": [0.0, 0.25, 4.25]}  # one per update
    # the first update of each starts its clock (counted in total_examples only)
    counts = {"a": [[1, 1], [9, 1], [7, 2]], "b": [[1, 1], [2, 2], [4, 6]], "c": [[1, 1], [3, 1], [5, 8]]}
    metrics = {}
    for name, times in readings.items():
        metrics[name] = tmx.TowerQPS(num_tasks=2, warmup_steps=0, window_seconds=2.0, clock=Ticks(times))
        for n in counts[name]:
            metrics[name].update(num_examples=torch.tensor(n))
    metrics["a"].merge_state(metrics["b"])
    metrics["a"].merge_state(dict(metrics["c"].metric_state))
    # a's window: both its updates (1.5 s); b's: its newest (3 s); c's: its newest (4 s)
    expected = (np.array([9 + 7, 1 + 2]) + np.array([4, 6]) + np.array([5, 8])) / 4.0
    np.testing.assert_allclose(metrics["a"].compute()["window_qps"].numpy(), expected, rtol=1e-12)
