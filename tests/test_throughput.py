"""Throughput: examples counted from the inputs, warm-up, a window in seconds, DDP (sum of examples, max time).

Time comes from an injected clock (a list of readings), so every expected rate is written here
from the readings and counts alone: no sleeps, no wall-clock assertions.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning


class Ticks:
    """A fake clock: returns the given readings one per call (picklable, unlike a lambda)."""

    def __init__(self, readings):
        self.readings = list(readings)
        self.calls = 0

    def __call__(self):
        value = self.readings[self.calls]
        self.calls += 1
        return value


def expected_rates(start, times, counts, warmup, window_seconds):
    """The documented definition, written out from the clock readings of each update.

    Updates ``warmup..`` are timed, each over the seconds since the previous reading (``start``,
    the construction's reading, before the first update when ``warmup == 0``); the window takes
    timed updates from the newest back while their seconds fit, at least one.
    """
    intervals = [(times[i] - (times[i - 1] if i else start), counts[i]) for i in range(warmup, len(counts))]
    if not intervals:
        return math.nan, math.nan
    lifetime = sum(n for _, n in intervals) / sum(s for s, _ in intervals)
    kept, seconds = [], 0.0
    for s, n in reversed(intervals):
        if kept and seconds + s > window_seconds:
            break
        kept.append(n)
        seconds += s
    return lifetime, sum(kept) / seconds


def _rates(metric):
    """``(lifetime, window, total)``; ``compute`` warns exactly when the rates are undefined (nan)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    lifetime, window = value["lifetime_throughput"].item(), value["window_throughput"].item()
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert len(undefined) == math.isnan(window) >= math.isnan(lifetime)  # one warning, for both rates
    return lifetime, window, value["total_examples"].item()


@pytest.mark.parametrize(
    "batch, count",
    [
        (torch.zeros(64, 7), 64),
        (torch.zeros(5), 5),
        (128, 128),
        (np.int64(12), 12),
        ({"ids": "not a tensor", "label": torch.zeros(33), "x": torch.zeros(2)}, 33),
        ([torch.zeros(17, 3), torch.zeros(4)], 17),
        ((None, torch.zeros(9)), 9),
        (torch.zeros(0, 3), 0),
        # a Lightning training step's output, {"loss": loss, **model_out}: the 0-dim loss is skipped
        ({"loss": torch.tensor(0.3), "x": torch.zeros(8)}, 8),
        ([torch.tensor(1.0), torch.tensor(2), torch.zeros(6, 2)], 6),
    ],
)
def test_examples_are_counted_from_the_input(batch, count):
    metric = tmx.Throughput(warmup_steps=0, clock=Ticks([0.0, 2.0]))
    metric.update(batch)
    lifetime, window, total = _rates(metric)
    assert total == count
    assert lifetime == window == count / 2.0


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_warmup_and_window_seconds(warmup):
    rng = np.random.default_rng(warmup)
    steps = 25
    start = 10.0
    times = (start + np.cumsum(rng.uniform(0.05, 3.0, size=steps))).tolist()
    counts = rng.integers(1, 500, size=steps).tolist()
    clock = Ticks([start, *times] if warmup == 0 else times)  # warmup 0 reads the clock at construction
    metric = tmx.Throughput(warmup_steps=warmup, window_seconds=4.0, clock=clock)
    for step, n in enumerate(counts):
        metric.update(torch.zeros(n))
        expected = expected_rates(start, times[: step + 1], counts[: step + 1], warmup, 4.0)
        lifetime, window, total = _rates(metric)
        assert total == sum(counts[: step + 1])
        np.testing.assert_allclose([lifetime, window], expected, rtol=1e-12)
        assert math.isnan(lifetime) == (step < warmup)


def test_window_keeps_at_least_the_newest_update():
    metric = tmx.Throughput(warmup_steps=1, window_seconds=1.0, clock=Ticks([0.0, 5.0, 15.0]))
    for n in (10, 20, 30):
        metric.update(n)
    lifetime, window, total = _rates(metric)
    assert (lifetime, window, total) == (50 / 15, 3.0, 60)


def test_steps_that_took_zero_seconds_are_undefined_and_say_so():
    """A coarse clock reads the same before and after a step: the rate over 0 s is nan, and the warning
    says the timed steps took 0 seconds (not that no step was timed)."""
    metric = tmx.Throughput(warmup_steps=0, clock=Ticks([0.0, 0.0]))
    with pytest.warns(UndefinedMetricWarning, match=r"no samples seen \(no update"):
        metric.compute()  # nothing seen yet: the package's one answer for it (docs/policies.md)
    metric.update(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    messages = {str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)}
    assert messages == {
        "Throughput is undefined: its timed steps after warm-up took 0 seconds on the clock "
        "(steps shorter than its resolution); returning nan."
    }
    assert math.isnan(value["lifetime_throughput"].item()) and math.isnan(value["window_throughput"].item())
    assert value["total_examples"].item() == 10


def test_forward_reset_state_dict_pickle():
    readings = [0.0, 1.0, 3.0, 4.0, 4.5]
    metric = tmx.Throughput(warmup_steps=1, window_seconds=2.0, clock=Ticks(readings))
    with pytest.warns(UndefinedMetricWarning):
        value = metric(torch.zeros(10))  # warm-up: no rate yet
    assert value["total_examples"].item() == 10 and math.isnan(value["lifetime_throughput"].item())
    assert metric(torch.zeros(30))["lifetime_throughput"].item() == 30.0  # 30 over 1 s
    metric.update(40)  # 2 s; the 2 s window now holds this update alone
    state = copy.deepcopy(metric.state_dict())
    names = {"examples_warmup1", "elapsed_warmup1", "window_examples_warmup1_window2", "window_elapsed_warmup1_window2"}
    assert {"total_examples"} | names <= set(state)  # non-default settings name the states they change
    clone = pickle.loads(pickle.dumps(metric))

    resumed = tmx.Throughput(warmup_steps=1, window_seconds=2.0, clock=Ticks([100.0, 101.0]))
    resumed.load_state_dict(state)
    resumed.update(7)  # the clock restarts: counted in the total only
    resumed.update(50)  # 1 s
    assert _rates(resumed) == ((30 + 40 + 50) / (1.0 + 2.0 + 1.0), 50 / 1.0, 10 + 30 + 40 + 7 + 50)
    clone.update(50)  # the same clock continues: 3.0 -> 4.0
    assert _rates(clone) == ((30 + 40 + 50) / (1.0 + 2.0 + 1.0), 50 / 1.0, 10 + 30 + 40 + 50)

    metric.reset()
    metric.update(5)  # the warm-up is over: this update only starts the clock again (at 4.0)
    lifetime, window, total = _rates(metric)
    assert total == 5 and math.isnan(lifetime) and math.isnan(window)
    metric.update(9)  # 0.5 s
    assert _rates(metric) == (9 / 0.5, 9 / 0.5, 5 + 9)


@pytest.mark.parametrize(
    "batch, exc, match",
    [
        (-3, ValueError, r"`batch` as an int to be a non-negative int64 \(0 to 2\*\*63 - 1\), got -3"),
        (2**63, ValueError, rf"`batch` as an int to be a non-negative int64 .*, got {2**63}\."),
        (2**70, ValueError, rf"`batch` as an int to be a non-negative int64 .*, got {2**70}\."),
        (np.uint64(2**64 - 1), ValueError, rf"`batch` as an int to be a non-negative int64 .*, got {2**64 - 1}\."),
        (torch.tensor(5), ValueError, r"leading batch dimension, got a 0-dim tensor"),
        # no tensor at all: a wrong type (WrongTypeError, a ValueError too); no tensor with a batch dimension: a value
        ({"a": 1, "b": [2]}, tmx.WrongTypeError, r"`batch` \(dict\) to hold tensors, .*got a dict of int, list"),
        ([0.5, 0.5], tmx.WrongTypeError, r"`batch` \(list\) to hold tensors, .*got a list of float"),
        ([], ValueError, r"`batch` \(list\) to hold a tensor"),
        (
            {"loss": torch.tensor(0.3)},
            ValueError,
            r"`batch` \(dict\) to hold a tensor with a leading batch dimension .*0-dim tensors, such as a loss, "
            r"are skipped",
        ),
        (3.5, TypeError, r"a tensor, an int, or a dict or sequence of tensors, got float"),
        (True, TypeError, r"got bool"),
        ("abc", TypeError, r"got str"),
        (None, TypeError, r"got NoneType"),
    ],
)
def test_bad_batch_changes_nothing(batch, exc, match):
    metric = tmx.Throughput(warmup_steps=0, clock=Ticks([0.0, 1.0, 2.0]))
    metric.update(10)
    before = (copy.deepcopy(metric.metric_state), metric._steps, metric.get_extra_state(), metric._update_count)
    for call in (metric.update, metric.forward):
        with pytest.raises(exc, match=match):
            call(batch)
    after = (metric.metric_state, metric._steps, metric.get_extra_state(), metric._update_count)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]


def test_a_rejected_count_keeps_the_warmup():
    """A count beyond int64 is refused before the clock is read or a warm-up step is used up."""

    def run(rejected):
        metric = tmx.Throughput(warmup_steps=3, clock=Ticks([float(i) for i in range(5)]))
        metric.update(10)
        if rejected:
            with pytest.raises(ValueError, match=r"`batch` as an int to be a non-negative int64"):
                metric.update(rejected)
        for count in (20, 30, 40):
            metric.update(count)
        return _rates(metric)

    # warm-up ends at the third update (reading 2.0); the fourth adds 40 examples over 1 s
    assert run(None) == (40.0, 40.0, 100.0)
    for rejected in (2**63, 2**70):
        assert run(rejected) == (40.0, 40.0, 100.0)


def test_a_window_of_counts_summing_beyond_int64():
    """Counts near int64's maximum: their sum in the window (a Python int) is stored as a float64, not refused."""
    counts = [2**63 - 1] * 3
    metric = tmx.Throughput(warmup_steps=1, window_seconds=10.0, clock=Ticks([0.0, 1.0, 2.0, 4.0]))
    metric.update(5)
    for count in counts:
        metric.update(count)
    examples = np.sum(np.array(counts, dtype=np.float64))
    assert _rates(metric) == (examples / 4.0, examples / 4.0, 5.0 + examples)


@pytest.mark.parametrize("batch", [-1, "x", torch.tensor(5)])
def test_a_rejected_first_update_is_not_counted(batch):
    """TorchMetrics counts a call before ``update`` runs; a rejected one is taken back (update_called stays False)."""
    metric = tmx.Throughput(warmup_steps=1, clock=Ticks([1.0, 3.0]))  # a rejected batch reads no clock
    with pytest.raises((ValueError, TypeError)):
        metric.update(batch)
    assert metric._update_count == 0 and not metric.update_called
    metric.update(4)
    metric.update(6)  # 6 examples over 2 s after the warm-up step
    assert metric._update_count == 2 and _rates(metric) == (3.0, 3.0, 10.0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"warmup_steps": -1}, ValueError, r"`warmup_steps` to be a non-negative integer, got -1"),
        ({"warmup_steps": 2.0}, ValueError, r"`warmup_steps` .*got 2.0"),
        ({"warmup_steps": True}, ValueError, r"`warmup_steps` .*got True"),
        ({"window_seconds": 0}, ValueError, r"`window_seconds` to be a positive finite number, got 0"),
        ({"window_seconds": math.inf}, ValueError, r"`window_seconds` .*got inf"),
        ({"window_seconds": math.nan}, ValueError, r"`window_seconds` .*got nan"),
        ({"window_seconds": "100"}, ValueError, r"`window_seconds` .*got '100'"),
        ({"clock": 3.0}, TypeError, r"`clock` to be callable, got float"),
        ({"validate_args": "no"}, ValueError, r"`validate_args` to be a bool, got .no."),
        # no task dimension: the same explanation as other such metrics (it said "Unexpected keyword arguments")
        ({"num_tasks": 2}, TypeError, r"Throughput has no task dimension, so it takes no `num_tasks` \(got 2\)"),
        ({"num_tasks": 1}, TypeError, r"Throughput has no task dimension.*once for all tasks"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tmx.Throughput(**kwargs)


@pytest.mark.parametrize("make", [tmx.Throughput, tmx.TowerQPS], ids=["Throughput", "TowerQPS"])
@pytest.mark.parametrize("clock", [3.0, "monotonic", None])
def test_a_clock_that_is_not_callable_is_a_type_error_in_both_rate_metrics(make, clock):
    """One rule for the two rate metrics (TowerQPS raised a ValueError, Throughput a TypeError)."""
    with pytest.raises(TypeError, match=rf"`clock` to be callable, got {type(clock).__name__}"):
        make(clock=clock)


@pytest.mark.parametrize("validate_args", [True, False])
def test_validate_args_is_accepted_like_every_metric(validate_args):
    """DESIGN: every metric takes `validate_args` (it was an "Unexpected keyword" here only).

    A config building all its metrics unvalidated builds this one too; counts come from sizes and
    Python ints (no device read), so the checks run either way and the rates are the same.
    """
    ticks = iter([0.0, 2.0, 3.0])
    metric = tmx.Throughput(warmup_steps=1, clock=lambda: next(ticks), validate_args=validate_args)
    assert metric.validate_args is validate_args
    for batch in (torch.zeros(10), torch.zeros(30), 50):
        metric.update(batch)
    out = metric.compute()
    assert out["total_examples"].item() == 90.0
    assert out["lifetime_throughput"].item() == 80.0 / 3.0  # 30 + 50 examples over 3 s after warm-up
    with pytest.raises(ValueError, match="non-negative"):
        metric.update(-1)  # still refused unvalidated: a count is a Python int, checked for free
    assert metric.compute()["total_examples"].item() == 90.0


def _run(update, now, counts):
    """Feed ``counts`` one per update; update ``i`` ends ``1 + i`` seconds after the previous one."""
    now[0] = 0.0
    for i, n in enumerate(counts):
        now[0] += 1.0 + i
        update(torch.zeros(n))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"warmup_steps": 1}, {"warmup_steps": 3}),
        ({"warmup_steps": 1, "window_seconds": 100.0}, {"warmup_steps": 1, "window_seconds": 3.0}),
        ({"warmup_steps": 0}, {"warmup_steps": 2, "window_seconds": 5.0}),
    ],
)
def test_settings_never_share_a_compute_group(a, b):
    """Warm-up and window change the states, which the first update leaves equal: never one group."""
    now = [0.0]
    counts = [5, 50, 7, 90, 3, 40]
    times = np.cumsum([1.0 + i for i in range(len(counts))]).tolist()
    collection = MetricCollection(
        {"a": tmx.Throughput(clock=lambda: now[0], **a), "b": tmx.Throughput(clock=lambda: now[0], **b)},
        compute_groups=True,
    )
    _run(collection.update, now, counts)
    collection.compute()
    assert len(collection.compute_groups) == 2
    for name, settings in (("a", a), ("b", b)):
        warmup = settings.get("warmup_steps", 100)
        expected = expected_rates(0.0, times, counts, warmup, settings.get("window_seconds", 100.0))
        lifetime, window, total = _rates(collection[name])
        assert total == sum(counts)
        np.testing.assert_allclose([lifetime, window], expected, rtol=1e-12, err_msg=name)


def test_checkpoint_saved_before_the_settings_named_the_states_loads():
    """A checkpoint of version 1 holds the plain state names; one of another warm-up or window loads too."""
    metric = tmx.Throughput(warmup_steps=1, window_seconds=2.0, clock=Ticks([0.0, 1.0, 3.0]))
    for n in (10, 30, 40):
        metric.update(n)
    saved = metric.state_dict()
    pristine = copy.deepcopy(saved)  # TorchMetrics loads states by reference: the loads below must not share them
    old = type(saved)((key.split("_warmup")[0], value) for key, value in saved.items())
    old._metadata = copy.deepcopy(saved._metadata)
    old._metadata[""]["version"] = 1  # as written before the names carried the settings
    assert set(old) == {"total_examples", "examples", "elapsed", "window_examples", "window_elapsed", "_extra_state"}
    resumed = tmx.Throughput(warmup_steps=1, window_seconds=2.0, clock=Ticks([10.0, 11.0]))
    resumed.load_state_dict(old)  # strict: every key matched
    resumed.update(7)  # the clock restarts
    resumed.update(50)  # 1 s
    assert _rates(resumed) == ((30 + 40 + 50) / (1.0 + 2.0 + 1.0), 50 / 1.0, 10 + 30 + 40 + 7 + 50)
    # another warm-up or window only decides which later steps are timed: a resumed job keeps its
    # counts and times (a module's own throughput warms up for half its compute interval)
    other = tmx.Throughput(warmup_steps=2, window_seconds=5.0, clock=Ticks([10.0, 11.0]))
    other.load_state_dict(pristine)  # strict: every key matched
    other.update(7)  # the clock restarts
    other.update(50)  # 1 s
    assert _rates(other) == ((30 + 40 + 50) / (1.0 + 2.0 + 1.0), (30 + 40 + 50) / 4.0, 10 + 30 + 40 + 7 + 50)


@pytest.mark.parametrize("values", ["one", "list", "none"])
def test_plot_draws_the_rates(values):
    """The plot shows lifetime and window rates (one point each, or one line each over steps), not the count."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = tmx.Throughput(warmup_steps=0, window_seconds=1.5, clock=Ticks([0.0, 2.0, 3.0, 4.0]))
    steps = [metric(n) for n in (10, 40, 20)]  # 5/s; 50 over 3 s and 40/s; 70 over 4 s and 20/s
    val = {"one": steps[-1], "list": steps, "none": None}[values]
    fig, ax = metric.plot(val)
    try:
        lines = {line.get_label(): line.get_ydata() for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert set(lines) == {"lifetime_throughput", "window_throughput"}
        if values == "list":
            np.testing.assert_allclose(lines["lifetime_throughput"], [5.0, 50 / 3, 70 / 4])
            np.testing.assert_allclose(lines["window_throughput"], [5.0, 40.0, 20.0])
        else:
            np.testing.assert_allclose(lines["lifetime_throughput"], [70 / 4])
            np.testing.assert_allclose(lines["window_throughput"], [20.0])
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match=r"`val` to be a dict returned by Throughput"):
        metric.plot(torch.tensor(1.0))


def _side_by_side_reference(ours, theirs, later, window_seconds):
    """Rates of two runs merged side by side (their last updates end together), then ``later`` updates of ours.

    Each run is ``(clock readings, counts)`` with the first reading at the start (no warm-up). Written
    from the definition: the window holds the updates of both runs that started within the last
    ``window_seconds``, and the newest update of each run at the merge (after it, ours alone).
    """
    (t_a, n_a), (t_b, n_b) = ours, theirs
    shift = t_a[-1] - t_b[-1]
    updates = [(t_a[i], t_a[i + 1], n_a[i], "a") for i in range(len(n_a))]
    updates += [(t_b[i] + shift, t_b[i + 1] + shift, n_b[i], "b") for i in range(len(n_b))]
    newest = {updates[len(n_a) - 1], updates[-1]}
    lifetime_seconds = max(t_a[-1] - t_a[0], t_b[-1] - t_b[0])
    now, out = t_a[-1], []
    for step, (seconds, n) in enumerate([(None, None), *later]):
        if step:
            updates.append((now, now + seconds, n, "a"))
            newest, now, lifetime_seconds = {updates[-1]}, now + seconds, lifetime_seconds + seconds
        kept = [u for u in updates if u[0] >= now - window_seconds or u in newest]
        examples = sum(u[2] for u in updates)
        window = sum(u[2] for u in kept) / (now - min(u[0] for u in kept))
        out.append((examples / lifetime_seconds, window, examples))
    return out


@pytest.mark.parametrize("how", ["metric", "states"])
def test_merge_state_is_two_runs_side_by_side(how):
    """The other's window examples stay in the window after the merge, until later updates push them out.

    ``merge_state`` kept the sum/max of the window states only until this metric's next update,
    which refilled the window from its own recent updates alone (the other's examples vanished).
    A dict of states carries no updates: its window is one update of its examples over its seconds.
    """
    rng = np.random.default_rng(7)
    t_a = np.cumsum(rng.uniform(0.2, 1.5, size=9)).tolist()
    # their window: the last update alone (2.9 s, the one before does not fit), later ones of ours are short
    t_b = (100.0 + np.cumsum([*rng.uniform(0.2, 1.5, size=9), 3.0, 2.9])).tolist()
    n_a, n_b = rng.integers(1, 100, size=8).tolist(), rng.integers(100, 1000, size=10).tolist()
    later = [(float(s), int(n)) for s, n in zip(rng.uniform(0.1, 0.6, size=12), rng.integers(1, 100, size=12))]
    readings = [*t_a, *np.cumsum([t_a[-1], *(s for s, _ in later)])[1:].tolist()]
    ours = tmx.Throughput(warmup_steps=0, window_seconds=4.0, clock=Ticks(readings))
    theirs = tmx.Throughput(warmup_steps=0, window_seconds=4.0, clock=Ticks(t_b))
    for metric, counts in ((ours, n_a), (theirs, n_b)):
        for n in counts:
            metric.update(n)
    if how == "states":  # their window as one update, after one update of all their older examples
        states = theirs.metric_state
        examples = states["window_examples_warmup0_window4"].item()
        seconds = states["window_elapsed_warmup0_window4"].item()
        assert 0 < examples < sum(n_b)  # their window holds some of their updates only
        t_b, n_b = [t_b[0], t_b[-1] - seconds, t_b[-1]], [sum(n_b) - examples, examples]
        ours.merge_state(theirs.metric_state)
    else:
        ours.merge_state(theirs)
    expected = _side_by_side_reference((t_a, n_a), (t_b, n_b), later, 4.0)
    np.testing.assert_allclose(_rates(ours), expected[0], rtol=1e-12)
    for step, (_, n) in enumerate(later, start=1):
        ours.update(n)
        np.testing.assert_allclose(_rates(ours), expected[step], rtol=1e-12, err_msg=f"update {step} after the merge")
        if step == 2:  # the merged window survives a checkpoint
            resumed = tmx.Throughput(warmup_steps=0, window_seconds=4.0, clock=Ticks([0.0, 0.0]))
            resumed.load_state_dict(ours.state_dict())
            assert sorted(resumed.get_extra_state()["recent"]) == sorted(ours.get_extra_state()["recent"])


def test_the_window_holds_the_updates_of_window_seconds_only():
    """The saved window does not grow with the run: one entry per update within ``window_seconds``.

    100k updates of 1 ms with a 0.5 s window: the state_dict after 10k and after 100k updates has about
    the same size, and the rates are the reference's (numpy, from the clock readings).
    """
    rng = np.random.default_rng(3)
    steps = rng.uniform(0.5e-3, 1.5e-3, size=100_000)
    counts = rng.integers(1, 64, size=steps.size)
    readings = np.concatenate([[0.0], np.cumsum(steps)])
    metric = tmx.Throughput(warmup_steps=0, window_seconds=0.5, clock=Ticks(readings.tolist()))
    sizes = []
    for i, n in enumerate(counts.tolist(), start=1):
        metric.update(n)
        if i in (10_000, 100_000):
            buffer = io.BytesIO()
            torch.save(metric.state_dict(), buffer)
            sizes.append(buffer.tell())
            assert len(metric.get_extra_state()["recent"]) <= 0.5 / 0.5e-3 + 1
    assert sizes[1] < 1.1 * sizes[0]  # the same number of updates in the window, give or take a few
    # the newest updates whose seconds sum to at most 0.5 (from the newest back)
    back = np.cumsum(steps[::-1])
    kept = int(np.searchsorted(back, 0.5, side="right"))
    expected = (counts.sum() / readings[-1], counts[-kept:].sum() / back[kept - 1], counts.sum())
    np.testing.assert_allclose(_rates(metric), expected, rtol=1e-9)


def test_a_window_saved_as_seconds_and_examples_loads():
    """Checkpoints written before the window kept a timeline hold ``(seconds, examples)`` per update."""
    metric = tmx.Throughput(warmup_steps=1, window_seconds=2.5, clock=Ticks([0.0, 1.0, 2.0, 3.0, 10.0, 10.5]))
    for n in (5, 10, 20, 40):
        metric.update(n)
    saved = metric.state_dict()
    saved["_extra_state"] = {"steps": 4, "recent": [(1.0, 20), (1.0, 40)]}  # as written before
    metric.load_state_dict(saved)
    metric.update(7)  # the clock restarts
    metric.update(80)  # 0.5 s: the window (2.5 s) holds 1 + 1 + 0.5 s
    assert _rates(metric) == ((10 + 20 + 40 + 80) / 3.5, (20 + 40 + 80) / 2.5, 5 + 10 + 20 + 40 + 7 + 80)


_EXPECTED_EXTRA = (
    "expected what Throughput.get_extra_state saves, a dict {'steps': <whole number >= 0>, "
    "'recent': [(<start>, <end>, <examples>), ...]}"
)


@pytest.mark.parametrize(
    ("extra_state", "described"),
    [
        (7, "got an object of type int"),
        ({"tasks": ["click"], "step": 3}, "got a dict without ['steps', 'recent'] (keys ['step', 'tasks'])"),
        ({"steps": 4}, "got a dict without ['recent'] (keys ['steps'])"),
        ({"steps": None, "recent": []}, "got 'steps': None"),
        ({"steps": -1, "recent": []}, "got 'steps': -1"),
        ({"steps": 2.5, "recent": []}, "got 'steps': 2.5"),
        ({"steps": 4, "recent": 3}, "got 'recent': 3"),
        ({"steps": 4, "recent": [(0.0, 1.0, 5), (1.0, 2.0)]}, "got the update (1.0, 2.0) in 'recent'"),
        ({"steps": 4, "recent": [(0.0, 1.0, "5")]}, "got the update (0.0, 1.0, '5') in 'recent'"),
        ({"steps": 4, "recent": [(0.0, float("nan"), 5)]}, "got the update (0.0, nan, 5) in 'recent'"),
        ({"steps": 4, "recent": [(0.0, 1.0, -5)]}, "got the update (0.0, 1.0, -5) in 'recent'"),
        ({"steps": 4, "recent": ["ab"]}, "got the update 'ab' in 'recent'"),
    ],
)
def test_an_unreadable_extra_state_is_refused_naming_it_and_changes_nothing(extra_state, described):
    """A foreign or hand-edited `_extra_state` raised a bare `KeyError: 'steps'` or a TypeError (after the
    clock had been restarted); it is now a ValueError naming what get_extra_state saves, from
    set_extra_state and (as a load error) from load_state_dict, and the metric is left as it was."""
    metric, twin = (tmx.Throughput(warmup_steps=1, window_seconds=2.5, clock=Ticks([0.0, 1.0, 2.0, 9.0])) for _ in "ab")
    for n in (5, 10, 20):
        metric.update(n)
        twin.update(n)
    before = (copy.deepcopy(metric.metric_state), metric.get_extra_state(), metric._last, metric._now)
    with pytest.raises(ValueError) as caught:
        metric.set_extra_state(extra_state)
    assert str(caught.value).startswith(f"Throughput.set_extra_state: {_EXPECTED_EXTRA}")
    assert described in str(caught.value)
    saved = metric.state_dict()
    saved["_extra_state"] = extra_state
    for strict in (True, False):
        with pytest.raises(RuntimeError) as caught_load:
            metric.load_state_dict(copy.deepcopy(saved), strict=strict)
        assert f"unreadable _extra_state for Throughput: {_EXPECTED_EXTRA}" in str(caught_load.value)
        assert described in str(caught_load.value)
    after = (metric.metric_state, metric.get_extra_state(), metric._last, metric._now)
    assert after[1:] == before[1:]
    assert all(torch.equal(after[0][k], v) for k, v in before[0].items())
    metric.update(40)  # the clock was not restarted: 7 s for 40 examples, as for a twin that saw no load
    twin.update(40)
    assert _rates(metric) == _rates(twin) and _rates(metric)[::2] == ((10 + 20 + 40) / 9.0, 5 + 10 + 20 + 40)


def test_a_whole_float_step_count_or_tensor_counts_still_load():
    """What get_extra_state saves, with its numbers as whole floats or 0-dim tensors, is read as before."""
    metric = tmx.Throughput(warmup_steps=1, window_seconds=2.5, clock=Ticks([0.0, 1.0, 2.0]))
    metric.set_extra_state({"steps": 4.0, "recent": [(torch.tensor(0.0), 1.0, torch.tensor(20)), (1.0, 1.5, 40.0)]})
    assert metric.get_extra_state() == {"steps": 4, "recent": [(0.0, 1.0, 20), (1.0, 1.5, 40)]}


def test_in_a_metric_collection():
    collection = MetricCollection({"throughput": tmx.Throughput(warmup_steps=0, clock=Ticks([0.0, 4.0]))})
    collection.update(torch.zeros(8))
    values = collection.compute()  # TorchMetrics flattens the dict (its keys are unique here)
    assert values["lifetime_throughput"].item() == 2.0 and values["total_examples"].item() == 8


# ----------------------------------------------------------------------------- DDP

# rank -> (clock readings, examples per update); rank 1 may be empty (no update at all)
_PLAN = {
    0: ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [10, 10, 10, 10, 10]),
    1: ([0.0, 2.0, 4.0, 10.0], [30, 30, 30]),
}


def _ddp_job(rank, world_size, empty_rank):
    readings, counts = _PLAN[rank]
    if empty_rank and rank == 1:
        counts = [] if empty_rank is True else counts[:1]  # "warm-up only": one update, never timed
    metric = tmx.Throughput(warmup_steps=1, window_seconds=3.0, clock=Ticks(readings[1:]))
    for n in counts:
        metric.update(torch.zeros(n, 2))
    value = metric.compute()
    return {k: v.item() for k, v in value.items()}


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True, "warm-up only"], ids=["uneven", "empty-rank", "warmup-only-rank"])
def test_ddp_sums_examples_and_takes_the_slowest_time(ddp_pool, empty_rank):
    # rank 0: 40 timed examples over 4 s, window 3 s -> 30 over 3 s; rank 1: 60 over 8 s, window 6 s -> 30 over 6 s
    # (a rank with no timed step: its warm-up examples count in total_examples only)
    if empty_rank:
        total = 50.0 if empty_rank is True else 80.0
        expected = {"lifetime_throughput": 40 / 4.0, "window_throughput": 30 / 3.0, "total_examples": total}
    else:
        expected = {"lifetime_throughput": 100 / 8.0, "window_throughput": 60 / 6.0, "total_examples": 140.0}
    for value in ddp_pool.run(_ddp_job, empty_rank):
        assert value == pytest.approx(expected, rel=1e-12)


def _reset_job(rank, world_size):
    """Only rank 0 has an update before the reset (rank 1 had no batch: a validation dataloader without one of
    its own, say); a compute (a collective) lies between; then both ranks step alike."""
    after = [10.0, 11.0, 13.0, 16.0]  # the clock at each update after the reset
    metric = tmx.Throughput(warmup_steps=3, window_seconds=100.0, clock=Ticks([0.0, *after] if rank == 0 else after))
    if rank == 0:
        metric.update(5)  # a warm-up step
    metric.compute()
    metric.reset()
    for n in (10, 20, 30, 40):
        metric.update(n)
    return {k: v.item() for k, v in metric.compute().items()}


@pytest.mark.ddp
def test_ddp_a_reset_ends_the_warmup_on_every_rank_alike(ddp_pool):
    """The documented rule (a reset after an update ends the warm-up; the next update restarts the clock) holds for
    the ranks together: a rank without an update of its own before the reset ends it too, since the compute before
    the reset counted rank 0's. Each rank then times its updates after the first: 20 + 30 + 40 examples over
    1 + 2 + 3 s (a rank still warming up would count its last update alone, 130 examples over 6 s in all)."""
    timed_examples, seconds = 2 * (20 + 30 + 40), max(16.0 - 10.0, 16.0 - 10.0)
    expected = {
        "lifetime_throughput": timed_examples / seconds,
        "window_throughput": timed_examples / seconds,
        "total_examples": 2 * (10 + 20 + 30 + 40),
    }
    for value in ddp_pool.run(_reset_job):
        assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counts_without_host_sync():
    metric = tmx.Throughput(warmup_steps=1, clock=Ticks([0.0, 2.0, 3.0])).to("cuda")
    batch = {"label": torch.zeros(64, device="cuda")}
    metric.update(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(batch)
        metric.update(torch.zeros(32, 4, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    value = metric.compute()
    assert value["lifetime_throughput"].device.type == "cuda"
    assert {k: v.item() for k, v in value.items()} == {
        "lifetime_throughput": 96 / 3.0,
        "window_throughput": 96 / 3.0,
        "total_examples": 160.0,
    }


@pytest.mark.parametrize(
    "to", [(torch.bfloat16,), (torch.float16,), ("cpu", torch.bfloat16)], ids=["bf16", "fp16", "cpu-bf16"]
)
@pytest.mark.parametrize("kind", ["throughput", "qps"])
def test_a_dtype_cast_keeps_the_float64_counts(kind, to):
    """``.to(dtype)`` (Lightning's "bf16-true"/"16-true" precision) casts no state: the counts stay float64 and
    exact past float16's 2048 and bfloat16's 256, the rates are the clock's."""
    readings = [0.0, 1.0, 3.0, 7.0]
    counts = [1001, 3001, 777, 5003]
    if kind == "throughput":
        metric = tmx.Throughput(warmup_steps=1, window_seconds=4.0, clock=Ticks(readings))
        # updates 2..4 are timed over 7 s; the window (4 s) holds the last one
        expected = {"lifetime_throughput": 8781 / 7.0, "window_throughput": 5003 / 4.0, "total_examples": 9782.0}
    else:
        metric = tmx.TowerQPS(warmup_steps=1, clock=Ticks(readings))
        expected = {"qps": 8781 / 7.0}
    for step, n in enumerate(counts):
        if step == 2:
            before = {k: v.clone() for k, v in metric.metric_state.items()}
            metric = metric.to(*to)
            for key, value in before.items():
                assert metric.metric_state[key].dtype == torch.float64 and torch.equal(metric.metric_state[key], value)
        metric.update(torch.zeros(n))
    value = metric.compute()
    value = value if kind == "throughput" else {"qps": value}
    assert {k: v.dtype for k, v in value.items()} == dict.fromkeys(expected, torch.float64)
    assert {k: v.item() for k, v in value.items()} == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("how", ["set_dtype", "to"])
@pytest.mark.parametrize("kind", ["throughput", "qps-1task", "qps-3task"])
def test_values_after_a_float64_cast_and_compute_twice(kind, how):
    """Cast mid-stream to float64: the rates stay the clock's, and ``compute`` changes no state."""
    readings = [0.0, 1.0, 3.0, 7.0]
    counts = [10, 20, 30, 50]
    num_tasks = 3 if kind == "qps-3task" else 1
    if kind == "throughput":
        metric = tmx.Throughput(warmup_steps=1, window_seconds=4.0, clock=Ticks(readings))
        # updates 2..4 are timed: 100 examples over 7 s; the window (4 s) holds the last one
        expected = {"lifetime_throughput": 100 / 7.0, "window_throughput": 50 / 4.0, "total_examples": 110.0}
    else:
        metric = tmx.TowerQPS(num_tasks=num_tasks, warmup_steps=1, clock=Ticks(readings))  # steps 2..4 counted
        expected = 100 / 7.0 if num_tasks == 1 else [100 / 7.0] * num_tasks
    for step, n in enumerate(counts):
        if step == 2:
            metric = metric.set_dtype(torch.float64) if how == "set_dtype" else metric.to(torch.float64)
        metric.update(torch.zeros(num_tasks, n) if num_tasks > 1 else torch.zeros(n))
    for _ in range(2):
        metric._computed = None
        states = {k: v.clone() for k, v in metric.metric_state.items()}
        value = metric.compute()
        if kind == "throughput":
            assert {k: v.item() for k, v in value.items()} == pytest.approx(expected, rel=1e-12)
        else:
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)
        for key, before in states.items():
            assert torch.equal(metric.metric_state[key], before) and metric.metric_state[key].dtype == before.dtype


def test_a_non_persistent_throughput_saves_and_restores_nothing():
    """persistent(False) left the steps and recent window in the extra state: loaded, the window held
    examples the (unsaved) total never saw and the warm-up was skipped."""
    readings = iter(range(100))
    trained = tmx.Throughput(warmup_steps=3, clock=lambda: next(readings))
    trained.persistent(False)
    for _ in range(6):
        trained.update(1000)
    later = iter([50, 51, 52, 53])
    metric = tmx.Throughput(warmup_steps=3, clock=lambda: next(later))
    metric.persistent(False)
    metric.load_state_dict(trained.state_dict())
    for _ in range(4):
        metric.update(1)
    # by hand: warm-up of 3 updates (the clock starts at the third), then one timed update of 1 example in 1 s
    assert {k: v.item() for k, v in metric.compute().items()} == {
        "lifetime_throughput": 1.0,
        "window_throughput": 1.0,
        "total_examples": 4.0,
    }


def test_tower_qps_warms_up_again_after_a_load():
    """The docstring's promise: after load_state_dict the next warmup_steps updates warm up again."""
    source = tmx.TowerQPS(warmup_steps=1, clock=iter([0.0, 1.0, 2.0]).__next__)
    source.persistent(True)
    for _ in range(3):
        source.update(torch.zeros(10))
    metric = tmx.TowerQPS(warmup_steps=1, clock=iter([0.0, 1.0, 1000.0, 1001.0]).__next__)
    metric.persistent(True)
    for _ in range(2):
        metric.update(torch.zeros(10))
    metric.load_state_dict(source.state_dict())
    metric.update(torch.zeros(10))  # warm-up: the 998 s since the last reading never count
    assert metric.compute().item() == 20 / 2  # by hand: the source's two timed steps of 10 examples, 1 s each
    metric.update(torch.zeros(10))
    assert metric.compute().item() == 30 / 3


@pytest.mark.parametrize("build", [lambda: tmx.Throughput(warmup_steps=0), lambda: tmx.TowerQPS(warmup_steps=1)])
@pytest.mark.parametrize("incoming", ["mapping", "none", "list"])
def test_merge_state_refuses_what_is_neither_a_dict_nor_a_metric(build, incoming):
    """TorchMetrics' type check holds for the rate metrics too (marked ``full_state_update`` to keep
    ``Running`` away): another mapping was added with broadcasting, then refused after the change."""
    import types

    metric = build()
    metric.update(torch.ones(5))
    metric.update(torch.ones(5))
    before = {name: value.clone() for name, value in metric.metric_state.items()}
    other = {
        "mapping": types.MappingProxyType({name: torch.ones(3) for name in before}),
        "none": None,
        "list": [torch.ones(1)],
    }[incoming]
    with pytest.raises(ValueError, match="Expected incoming state to be a dict or an instance of Metric"):
        metric.merge_state(other)
    for name, value in metric.metric_state.items():
        assert torch.equal(value, before[name])


def test_a_task_first_tensor_counts_its_leading_dimension_as_the_docstring_says():
    """The multi-task metrics take ``(T, N)``; Throughput counts a tensor's leading dimension, so the docstring says
    to pass ``N`` or one task's row: 3 tasks of 50 examples counted each way, by hand."""
    doc = " ".join(tmx.Throughput.__doc__.split())
    assert "A task-first ``(T, N)`` tensor, as the multi-task metrics take, counts ``T``" in doc
    labels = torch.zeros(3, 50)
    metric = tmx.Throughput(warmup_steps=0, clock=iter([0.0, 1.0, 2.0, 3.0]).__next__)
    metric.update(labels)
    metric.update(labels[0])
    metric.update(labels.shape[1])
    assert metric.compute()["total_examples"].item() == 3 + 50 + 50


def test_a_reset_restarts_the_clock_without_a_second_warmup():
    """After the warm-up a reset costs one step (the one that starts the clock), not ``warmup_steps`` again."""
    times = [0.0, 1.0, 2.0, 3.0, 50.0, 51.0, 53.0]
    metric = tmx.Throughput(warmup_steps=3, window_seconds=10.0, clock=Ticks(times))
    for n in (10, 10, 10, 20):  # three warm-up steps, then 20 examples over 1 s
        metric.update(n)
    assert _rates(metric) == (20.0, 20.0, 50)
    metric.reset()  # e.g. between two validation epochs: the 47 s gap must not count
    metric.update(7)  # starts the clock at 50.0
    metric.update(4)  # 1 s
    metric.update(6)  # 2 s
    assert _rates(metric) == ((4 + 6) / 3.0, (4 + 6) / 3.0, 7 + 4 + 6)
    assert metric.get_extra_state()["steps"] == 7  # the steps seen, across the reset


def test_a_reset_during_the_warmup_ends_it_and_one_before_any_update_does_not():
    """Validation epochs shorter than the warm-up: the first epoch warms up, each later one has rates from its
    second step (the reset ends the warm-up once any update was seen). A reset before any update is no epoch."""
    metric = tmx.Throughput(warmup_steps=5, clock=Ticks([0.0, 1.0, 10.0, 11.0, 13.0]))
    metric.reset()  # nothing seen yet: the whole warm-up is still to go
    for n in (1, 1):  # the first epoch: two warm-up steps, no rate
        metric.update(n)
    lifetime, window, total = _rates(metric)
    assert total == 2 and math.isnan(lifetime) and math.isnan(window)
    metric.reset()  # the next epoch: its first step starts the clock (10.0)
    for n in (2, 8, 12):  # 1 s, then 2 s
        metric.update(n)
    assert _rates(metric) == (20 / 3.0, 20 / 3.0, 22)
    assert metric.get_extra_state()["steps"] == 8  # the warm-up's 5, ended by the reset, and 3 steps since


def test_a_reset_before_any_update_keeps_the_whole_warmup():
    metric = tmx.Throughput(warmup_steps=2, clock=Ticks([0.0, 1.0, 3.0]))
    metric.reset()
    metric.reset()
    for n in (4, 5, 6):  # two warm-up steps (the clock starts at the second, 1.0), then 6 over 2 s
        metric.update(n)
    assert _rates(metric) == (3.0, 3.0, 15)


def test_with_no_warmup_a_reset_starts_the_clock_itself():
    metric = tmx.Throughput(warmup_steps=0, clock=Ticks([0.0, 1.0, 5.0, 7.0]))  # construction reads 0.0
    metric.update(3)  # 1 s
    metric.reset()  # reads 5.0
    metric.update(10)  # 2 s
    assert _rates(metric) == (5.0, 5.0, 10)


def test_a_run_still_warming_up_says_how_far_and_how_to_shorten_the_warm_up():
    """A run shorter than the warm-up (a first try, a short validation) is told how many warm-up updates it saw
    of how many, and which setting shortens it, in the standalone metric and in a RecMetricModule."""
    metric = tmx.Throughput(warmup_steps=5, clock=Ticks([0.0, 1.0, 2.0]))
    metric.update(4)
    metric.update(4)
    with pytest.warns(UndefinedMetricWarning) as caught:
        value = metric.compute()
    assert [str(w.message) for w in caught] == [
        "Throughput is undefined: no timed step after warm-up: 2 of its 5 warm-up updates seen on this rank "
        "(the clock starts at the last of them); build it with fewer `warmup_steps` (a RecMetricModule's own "
        "throughput warms up for half its `compute_interval_steps`: pass `throughput=Throughput(warmup_steps=...)`, "
        "or `throughput=False` for no throughput keys); returning nan."
    ]
    assert math.isnan(value["lifetime_throughput"]) and value["total_examples"] == 8
    # the module's own throughput: compute_interval_steps=10 warms up for 5 updates, the key names it
    module = tmx.RecMetricModule(["click"], ["ctr"], compute_interval_steps=10, prefix="train/")
    for _ in range(3):
        module.update({"prediction": torch.full((4,), 0.5), "label": torch.tensor([0.0, 1.0, 1.0, 0.0])})
    with pytest.warns(UndefinedMetricWarning, match=r"^train/throughput is undefined: .*3 of its 5 warm-up updates"):
        module.compute()
    # once warmed up (the clock started), the plain reason: the next update is timed
    metric = tmx.Throughput(warmup_steps=2, clock=Ticks([0.0, 1.0]))
    metric.update(1)
    metric.update(1)
    with pytest.warns(UndefinedMetricWarning) as caught:
        metric.compute()
    assert [str(w.message) for w in caught] == ["Throughput is undefined: no timed step after warm-up; returning nan."]


def test_one_warning_per_compute_and_the_window_named_when_alone_undefined():
    """Both rates undefined: one warning. The window alone (its newest step took 0 s, older ones left it): one
    warning naming the window, and the lifetime rate is a number."""
    metric = tmx.Throughput(warmup_steps=1, window_seconds=1.0, clock=Ticks([0.0, 5.0, 5.0]))
    metric.update(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric.compute()
    assert [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)] == [
        "Throughput is undefined: no timed step after warm-up; returning nan."
    ]
    metric.update(10)  # 5 s: falls out of the 1 s window once the next step ends
    metric.update(4)  # 0 s on the clock
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    assert [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)] == [
        "Throughput (window) is undefined: its timed steps after warm-up took 0 seconds on the clock "
        "(steps shorter than its resolution); returning nan."
    ]
    assert value["lifetime_throughput"].item() == 14 / 5.0 and math.isnan(value["window_throughput"].item())


def test_merge_state_leaves_this_metrics_warm_up_its_own():
    """The other run's steps do not count towards this metric's warm-up, as a DDP sync leaves each rank's own.

    The warm-up is this process's first steps (compilation, caches): a fresh metric that merged a
    warmed-up run still warms up its own first ``warmup_steps`` updates (counted in ``total_examples``
    alone), then times its updates. The reference is the definition: examples after warm-up over the
    longer run's seconds plus this run's timed seconds (window: every update, 100 s long).
    """
    theirs = tmx.Throughput(warmup_steps=2, window_seconds=100.0, clock=Ticks([0.0, 1.0, 2.0, 3.0, 4.0]))
    for _ in range(5):  # warm-up ends at the 2nd reading (1.0); 3 timed updates of 10 over 3 s
        theirs.update(10)
    ours = tmx.Throughput(warmup_steps=2, window_seconds=100.0, clock=Ticks([100.0, 101.0, 103.0]))
    ours.merge_state(theirs)
    assert _rates(ours) == (30 / 3, 30 / 3, 50)
    ours.update(7)  # its own warm-up: counted, not timed
    ours.update(7)  # its last warm-up step: the clock starts at 101
    assert _rates(ours) == (30 / 3, 30 / 3, 64)
    ours.update(7)  # timed: 2 s
    np.testing.assert_allclose(_rates(ours), (37 / 5, 37 / 5, 71), rtol=1e-12)


def test_a_throughput_pickled_before_the_reset_rule_of_ranks_resets():
    """Bug: ``reset`` read the flag of the last compute that versions before the DDP reset rule did not keep, so a
    ``Throughput`` pickled by one (a whole model saved with ``torch.save``: a ``RecMetricModule`` holds one) raised
    ``AttributeError`` at its first ``reset`` before any update. It resets as the documented rule says of a reset
    before any update: the whole warm-up is still to go (reference: the documented definition, ``expected_rates``)."""
    times, counts = [1.0, 3.0, 6.0, 10.0], [4, 8, 16, 32]
    metric = tmx.Throughput(warmup_steps=2, window_seconds=100.0, clock=Ticks(times))
    del metric.__dict__["_computed_examples"]  # as such a version pickled it
    old = pickle.loads(pickle.dumps(metric))
    old.reset()
    for n in counts:
        old.update(torch.zeros(n))
    lifetime, window = expected_rates(0.0, times, counts, 2, 100.0)
    assert _rates(old) == pytest.approx((lifetime, window, sum(counts)), rel=1e-12)

    module = tmx.RecMetricModule(["click"], ["ctr"])
    del module.throughput.__dict__["_computed_examples"]
    again = pickle.loads(pickle.dumps(module))
    again.reset()
    assert again.throughput._steps == 0  # nothing counted towards the warm-up yet


def _window_sums(times, counts, window_seconds):
    """A rank's window (warm-up 0, first reading at construction): its examples and seconds, by the definition."""
    intervals = [(b - a, n) for a, b, n in zip(times, times[1:], counts, strict=False)]
    kept, seconds = 0, 0.0
    for k, (s, n) in enumerate(reversed(intervals)):
        if k and seconds + s > window_seconds:
            break
        kept, seconds = kept + n, seconds + s
    return kept, seconds


@pytest.mark.parametrize("how", ["metric", "states"])
@pytest.mark.parametrize("same", [True, False])
def test_merging_several_ranks_is_the_ddp_sum_and_max_of_their_windows(how, same):
    """``a.merge_state(b); a.merge_state(c)``: the window is DDP's reduction over the three ranks (examples
    summed, seconds the longest), each rank's window taken by the definition. The newest update of a rank
    merged first (longer than the window) was dropped by the next merge, or kept only when the next rank's
    newest update had the same start, end and count."""
    window = 2.0
    runs = {
        "a": ([0.0, 1.0, 1.5], [9, 7]),
        "b": ([0.0, 0.5, 3.5], [2, 4]),  # its newest update (3 s) is longer than the window
        "c": ([0.0, 0.5, 3.5], [2, 4]) if same else ([0.0, 0.25, 4.25], [3, 5]),
    }
    metrics = {}
    for name, (times, counts) in runs.items():
        metrics[name] = tmx.Throughput(warmup_steps=0, window_seconds=window, clock=Ticks(times))
        for n in counts:
            metrics[name].update(n)
    for name in ("b", "c"):
        other = metrics[name]
        metrics["a"].merge_state(other if how == "metric" else dict(other.metric_state))
    sums = [_window_sums(*runs[name], window) for name in runs]
    expected = sum(n for n, _ in sums) / max(s for _, s in sums)
    np.testing.assert_allclose(_rates(metrics["a"])[1], expected, rtol=1e-12)


def test_a_merged_metric_merged_again_keeps_each_ranks_newest_update():
    """``b.merge_state(c)`` then ``a.merge_state(b)``: the window is DDP's reduction over a, b and c, with clock
    readings whose shifts round (tenths), each rank's window by the definition."""
    window = 1.0
    runs = {"a": ([0.1, 0.7, 1.3], [9, 7]), "b": ([0.3, 0.4, 2.9], [2, 4]), "c": ([0.7, 0.9, 3.3], [3, 5])}
    metrics = {}
    for name, (times, counts) in runs.items():
        metrics[name] = tmx.Throughput(warmup_steps=0, window_seconds=window, clock=Ticks(times))
        for n in counts:
            metrics[name].update(n)
    metrics["b"].merge_state(metrics["c"])
    metrics["a"].merge_state(metrics["b"])
    sums = [_window_sums(*runs[name], window) for name in runs]
    expected = sum(n for n, _ in sums) / max(s for _, s in sums)
    np.testing.assert_allclose(_rates(metrics["a"])[1], expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["throughput", "qps"])
def test_set_dtype_keeps_the_float64_counts_and_seconds(kind, dtype):
    """``set_dtype(torch.float16)`` cast the counts and seconds: ``total_examples`` stopped at 65,504 (``inf``
    past it, so the rates were ``nan``), a step of 3001 examples added 3000, and the clock's fractions were lost.
    The states are counts and times, not metric values: ``set_dtype`` checks its argument and keeps them float64,
    so the counts are the exact integers and the rates the exact fractions past 65,504 examples."""
    readings = [0.0, 1.25, 3.5, 7.0, 8.0]
    counts = [40001, 30001, 777, 50003, 3001]
    if kind == "throughput":
        metric = tmx.Throughput(warmup_steps=1, window_seconds=1.5, clock=Ticks(readings))
        # updates 2..5 are timed over 8 s; the window (1.5 s) holds the last one (1 s)
        expected = {
            "lifetime_throughput": (30001 + 777 + 50003 + 3001) / 8.0,
            "window_throughput": 3001 / 1.0,
            "total_examples": float(sum(counts)),
        }
    else:
        metric = tmx.TowerQPS(warmup_steps=1, clock=Ticks(readings))  # as Throughput: updates 2..5 over 8 s
        expected = {"qps": (30001 + 777 + 50003 + 3001) / 8.0}
    assert metric.set_dtype(dtype) is metric
    with pytest.raises(TypeError, match="dst_type"):
        metric.set_dtype(torch.int32)
    for n in counts:
        metric.update(torch.zeros(n))
    assert {v.dtype for v in metric.metric_state.values()} == {torch.float64}
    value = metric.compute()
    value = value if kind == "throughput" else {"qps": value}
    assert {k: v.dtype for k, v in value.items()} == dict.fromkeys(expected, torch.float64)
    assert {k: v.item() for k, v in value.items()} == pytest.approx(expected, rel=1e-15)
