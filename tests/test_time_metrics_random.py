"""Seeded random hunt of the time metrics (``Throughput``, ``TowerQPS``) against their documented rules.

The clock is faked: every metric reads one shared "now" (:class:`SharedClock`, which copies and
pickles as a reference to that one now), which the test moves by whole quarters of a second, so
every reading, interval and window boundary is exact in binary floating point and the reference
rates are exact too. Each scenario is a random run of updates (several batch forms, counts of 0,
steps of 0 s), ``forward``, ``compute`` between updates, ``reset``, ``state_dict`` round trips into
a fresh metric, ``copy.deepcopy`` and ``pickle``; after every step the metric's values are compared
with a plain-Python model written from the docstrings:

* Throughput: the first ``warmup_steps`` updates count in ``total_examples`` only and the clock
  starts at the last of them (at construction, and at a reset, with ``warmup_steps=0``); a reset
  after an update ends the warm-up for good (the next update restarts the clock); after a load the
  next update restarts the clock. Lifetime = timed examples / timed seconds; window = the newest
  timed updates whose seconds sum to at most ``window_seconds`` (at least the newest); a rate over
  0 s is nan.
* TowerQPS: the first ``max(warmup_steps, 1)`` updates count in ``total_examples`` only; a reset
  or a load restarts the warm-up; a loaded window is one update of its examples over its seconds;
  a rate over 0 s is 0 (TorchRec's).

Also against the same models: ``merge_state`` of several runs (as metrics or as dicts of states,
then resumed from a checkpoint), a ``MetricCollection`` whose compute groups share the states of two
metrics of one setting, two gloo ranks with their own clocks and uneven (or no) updates (examples
summed, seconds the slowest rank's, windows likewise), a ``RecMetricModule``'s throughput, a
``LightningModule`` logging ``forward``'s values, and refused inputs (the states, their objects, the
steps, the clock and the window untouched).

More seeds: ``TMX_TIME_SEEDS=200 pytest tests/test_time_metrics_random.py``.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx

_SEEDS = int(os.environ.get("TMX_TIME_SEEDS", "12"))
_NOW = [0.0]  # the one clock every metric of a test reads (in each process)


class SharedClock:
    """Reads the test's ``_NOW``: a deepcopy or pickle of a metric reads the same time as the original."""

    def __call__(self) -> float:
        return _NOW[0]


def _tick(rng: np.random.Generator) -> None:
    """Move the clock by 0 to 3 s in quarters (0 s often: steps shorter than a coarse clock's resolution)."""
    _NOW[0] += float(rng.choice([0, 0, 1, 2, 3, 4, 6, 8, 12])) / 4


def _nan_equal(actual: float, expected: float) -> bool:
    return (math.isnan(actual) and math.isnan(expected)) or actual == pytest.approx(expected, rel=1e-12, abs=0)


def _window(updates: list[tuple[float, object]], window_seconds: float) -> tuple[float, object] | None:
    """The newest updates whose seconds sum to at most ``window_seconds``, at least the newest: (seconds, examples)."""
    if not updates:
        return None
    seconds, examples = updates[-1]
    for s, n in reversed(updates[:-1]):
        if seconds + s > window_seconds:
            break
        seconds, examples = seconds + s, examples + n
    return seconds, examples


# ----------------------------------------------------------------------------- Throughput reference


class ThroughputModel:
    """Throughput's docstring, as plain Python."""

    def __init__(self, warmup: int, window_seconds: float) -> None:
        self.warmup, self.window_seconds = warmup, window_seconds
        self.steps = 0
        self.restart()

    def restart(self) -> None:
        self.last = _NOW[0] if self.warmup == 0 else None
        self.total = 0
        self.timed: list[tuple[float, int]] = []  # (seconds, examples) of every timed update since the reset
        self.examples, self.elapsed = 0, 0.0
        self.frozen: tuple[float, int] | None = None  # a loaded window, until the next timed update

    def update(self, n: int) -> None:
        self.steps += 1
        self.total += n
        if self.steps <= self.warmup or self.last is None:
            if self.steps >= self.warmup:
                self.last = _NOW[0]
            return
        seconds, self.last = _NOW[0] - self.last, _NOW[0]
        self.timed.append((seconds, n))
        self.examples += n
        self.elapsed += seconds
        self.frozen = None

    def reset(self) -> None:
        # the warm-up happens once: a reset after any update leaves it behind
        self.steps = max(self.steps, self.warmup) if self.steps else 0
        self.restart()

    def window_state(self) -> tuple[float, int]:
        if self.frozen is not None:
            return self.frozen
        return _window(self.timed, self.window_seconds) or (0.0, 0)

    def values(self) -> tuple[float, float, int]:
        w_seconds, w_examples = self.window_state()
        lifetime = self.examples / self.elapsed if self.elapsed else math.nan
        window = w_examples / w_seconds if w_seconds else math.nan
        return lifetime, window, self.total

    def loaded_into(self, warmup: int, window_seconds: float) -> ThroughputModel:
        """A fresh metric of these settings after ``load_state_dict``: counts, steps and window kept, clock not."""
        out = ThroughputModel(warmup, window_seconds)
        out.steps, out.total, out.examples, out.elapsed = self.steps, self.total, self.examples, self.elapsed
        out.last = None
        if self.frozen is not None:  # its own window is still a loaded one: saved as loaded
            out.timed = list(self.timed)
        else:  # the saved window's updates: the newest that fit its window
            seconds = 0.0
            for s, n in reversed(self.timed):
                if out.timed and seconds + s > self.window_seconds:
                    break
                out.timed.insert(0, (s, n))
                seconds += s
        out.frozen = self.window_state()  # the window states as saved, until the next timed update
        return out


def _thr_values(metric, forward_value=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metric.compute() if forward_value is None else forward_value
    return (value["lifetime_throughput"].item(), value["window_throughput"].item(), value["total_examples"].item())


def _thr_batch(rng: np.random.Generator, n: int):
    form = int(rng.integers(0, 7))
    if form == 0:
        return n
    if form == 1:
        return np.int64(n)
    if form == 2:
        return torch.zeros(n, 3)
    if form == 3:
        return torch.zeros(n)
    if form == 4:  # a Lightning step's output: the 0-dim loss is skipped
        return {"loss": torch.tensor(0.5), "preds": torch.zeros(n), "labels": torch.zeros(n)}
    if form == 5:
        return [torch.tensor(1.0), torch.zeros(n, 2)]
    return (torch.zeros(n, 4, 2), torch.zeros(1))


def _assert_thr(metric, model, what, forward_value=None):
    actual, expected = _thr_values(metric, forward_value), model.values()
    assert all(_nan_equal(a, e) for a, e in zip(actual, expected, strict=True)), f"{what}: {actual} != {expected}"


def _run_throughput_scenario(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _NOW[0] = float(rng.integers(0, 400)) / 4
    warmup = int(rng.choice([0, 1, 2, 5, 40]))
    window_seconds = float(rng.choice([0.25, 1.0, 2.5, 4.0, 100.0]))
    metric = tmx.Throughput(warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock())
    model = ThroughputModel(warmup, window_seconds)
    log = [f"seed {seed}: warmup {warmup}, window {window_seconds}"]
    for _ in range(int(rng.integers(5, 30))):
        op = rng.choice(["update", "update", "update", "forward", "compute", "reset", "load", "copy"])
        if op in ("update", "forward"):
            _tick(rng)
            n = int(rng.choice([0, 1, 7, 64, 1000]))
            batch = _thr_batch(rng, n)
            log.append(f"{op} {n} at {_NOW[0]}")
            model.update(n)
            if op == "forward":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = metric(batch)
                _assert_thr(metric, model, "\n".join(log), forward_value=out)
            else:
                metric.update(batch)
        elif op == "reset":
            if rng.random() < 0.5:
                _tick(rng)
            log.append(f"reset at {_NOW[0]}")
            metric.reset()
            model.reset()
        elif op == "load":
            other_warmup = int(rng.choice([warmup, 0, 3]))
            other_window = float(rng.choice([window_seconds, window_seconds, 1.0, 50.0]))
            log.append(f"load into warmup {other_warmup}, window {other_window}")
            fresh = tmx.Throughput(warmup_steps=other_warmup, window_seconds=other_window, clock=SharedClock())
            fresh.load_state_dict(copy.deepcopy(metric.state_dict()))
            metric, model = fresh, model.loaded_into(other_warmup, other_window)
        elif op == "copy":
            log.append("copy")
            metric = copy.deepcopy(metric) if rng.random() < 0.5 else pickle.loads(pickle.dumps(metric))
        _assert_thr(metric, model, "\n".join(log))


@pytest.mark.parametrize("seed", range(_SEEDS))
def test_throughput_random_runs_follow_the_documented_rule(seed):
    _run_throughput_scenario(seed)


# ----------------------------------------------------------------------------- TowerQPS reference


class TowerQPSModel:
    """TowerQPS's docstring, as plain Python (per-task counts as numpy float64 arrays)."""

    def __init__(self, tasks: int, warmup: int, window_seconds: float | None) -> None:
        self.tasks, self.warmup, self.window_seconds = tasks, warmup, window_seconds
        self.reset()

    def reset(self) -> None:
        self.steps, self.last = 0, None
        self.total = np.zeros(self.tasks)
        self.examples, self.elapsed = np.zeros(self.tasks), 0.0
        self.timed: list[tuple[float, np.ndarray]] = []  # what the window is chosen from
        self.frozen: tuple[float, np.ndarray] | None = None  # a loaded window, until the next timed update

    def update(self, counts: np.ndarray) -> None:
        self.steps += 1
        self.total = self.total + counts
        if self.steps > max(self.warmup, 1) and self.last is not None:
            seconds = _NOW[0] - self.last
            self.examples = self.examples + counts
            self.elapsed += seconds
            self.timed.append((seconds, counts))
            self.frozen = None
        self.last = _NOW[0]

    def window_state(self) -> tuple[float, np.ndarray]:
        if self.frozen is not None:
            return self.frozen
        return _window(self.timed, self.window_seconds or 0.0) or (0.0, np.zeros(self.tasks))

    def values(self) -> dict[str, list[float]]:
        lifetime = self.examples / self.elapsed if self.elapsed else np.zeros(self.tasks)
        if self.window_seconds is None:
            return {"value": lifetime.tolist()}
        seconds, examples = self.window_state()
        window = examples / seconds if seconds else np.zeros(self.tasks)
        return {"lifetime_qps": lifetime.tolist(), "window_qps": window.tolist(), "total_examples": self.total.tolist()}

    def loaded(self, warmup: int | None = None, window_seconds: float | None = None) -> TowerQPSModel:
        """A fresh metric (of another warm-up or window, given) after ``load_state_dict``: the warm-up again, the
        window saved as one update."""
        out = TowerQPSModel(
            self.tasks, self.warmup if warmup is None else warmup, window_seconds or self.window_seconds
        )
        out.total, out.examples, out.elapsed = self.total.copy(), self.examples.copy(), self.elapsed
        if self.window_seconds is not None:
            seconds, examples = self.window_state()
            out.timed = [(seconds, examples)] if seconds or examples.any() else []
            out.frozen = (seconds, examples)
        return out


def _qps_values(metric, value=None):
    value = metric.compute() if value is None else value
    if isinstance(value, dict):
        return {k: np.atleast_1d(v.numpy()).tolist() for k, v in value.items()}
    return {"value": np.atleast_1d(value.numpy()).tolist()}


def _assert_qps(metric, model, what, value=None):
    actual, expected = _qps_values(metric, value), model.values()
    assert actual.keys() == expected.keys(), what
    for key in actual:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-12, atol=0, err_msg=f"{what}\n{key}")


def _qps_batch(rng: np.random.Generator, tasks: int):
    """``(kwargs for update, counts per task)`` in one of the accepted forms."""
    form = int(rng.integers(0, 6))
    n = int(rng.choice([0, 1, 5, 64]))
    if form == 0:
        return {"preds": torch.zeros(n)} if tasks == 1 else {"preds": torch.zeros(tasks, n)}, np.full(tasks, n)
    if form == 1:
        return {"preds": torch.rand(tasks, n), "target": torch.zeros(tasks, n)}, np.full(tasks, n)
    if form == 2:
        return {"num_examples": torch.tensor(n)}, np.full(tasks, n)
    if form == 5:  # a Python or NumPy int: every task's count
        return {"num_examples": n if rng.random() < 0.5 else np.int64(n)}, np.full(tasks, n)
    counts = rng.choice([0, 1, 3, 40, 1000], size=tasks)
    dtype = torch.int64 if form == 3 else torch.float32
    return {"num_examples": torch.tensor(counts, dtype=dtype)}, counts.astype(np.float64)


def _run_qps_scenario(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _NOW[0] = float(rng.integers(0, 400)) / 4
    tasks = int(rng.choice([1, 3]))
    warmup = int(rng.choice([0, 1, 2, 5, 40]))
    window_seconds = [None, 0.25, 1.0, 2.5, 100.0][int(rng.integers(0, 5))]

    def build():
        metric = tmx.TowerQPS(tasks, warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock())
        return metric.persistent(True) or metric

    metric = build()
    model = TowerQPSModel(tasks, warmup, window_seconds)
    log = [f"seed {seed}: tasks {tasks}, warmup {warmup}, window {window_seconds}"]
    for _ in range(int(rng.integers(5, 30))):
        op = rng.choice(["update", "update", "update", "forward", "compute", "reset", "load", "copy"])
        if op in ("update", "forward"):
            _tick(rng)
            kwargs, counts = _qps_batch(rng, tasks)
            log.append(f"{op} {counts.tolist()} at {_NOW[0]}")
            model.update(counts)
            if op == "forward":
                _assert_qps(metric, model, "\n".join(log), value=metric(**kwargs))
            else:
                metric.update(**kwargs)
        elif op == "reset":
            log.append(f"reset at {_NOW[0]}")
            metric.reset()
            model.reset()
        elif op == "load":
            # another warm-up or window only decides which later steps are timed: the counts load (as Throughput's)
            warmup = int(rng.choice([warmup, warmup, 0, 3]))
            if window_seconds is not None:
                window_seconds = float(rng.choice([window_seconds, window_seconds, 1.0, 50.0]))
            log.append(f"load into warmup {warmup}, window {window_seconds}")
            fresh = build()
            fresh.load_state_dict(copy.deepcopy(metric.state_dict()))  # strict: every key matched
            metric, model = fresh, model.loaded(warmup, window_seconds)
        elif op == "copy":
            log.append("copy")
            metric = copy.deepcopy(metric) if rng.random() < 0.5 else pickle.loads(pickle.dumps(metric))
        _assert_qps(metric, model, "\n".join(log))


@pytest.mark.parametrize("seed", range(_SEEDS))
def test_tower_qps_random_runs_follow_the_documented_rule(seed):
    _run_qps_scenario(seed)


# ----------------------------------------------------------------------------- MetricCollection


@pytest.mark.parametrize("seed", range(max(_SEEDS // 3, 3)))
def test_a_compute_group_counts_each_forward_once(seed):
    """Two rate metrics of one setting share their states in a compute group; ``forward`` wrote them in place.

    ``MetricCollection.forward`` calls every member's ``forward``, each of which added the batch to the
    one shared state: a step taken by ``forward`` was counted once per member (210 examples seen,
    290 reported with two members), for the group's first member too, and stayed in every later value.
    ``update`` (the first member alone) was right. The group's first member is checked after every
    step, every member after an ``update`` (which links the members to its states again).
    """
    rng = np.random.default_rng(1000 + seed)
    _NOW[0] = 10.0
    warmup, window_seconds, tasks = int(rng.choice([0, 1, 3])), float(rng.choice([1.0, 2.5])), 2
    collection = MetricCollection(
        {
            "a": tmx.Throughput(warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock()),
            "b": tmx.Throughput(warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock()),
            "q": tmx.TowerQPS(tasks, warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock()),
            "q2": tmx.TowerQPS(tasks, warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock()),
        },
        compute_groups=True,
    )
    thr, qps = ThroughputModel(warmup, window_seconds), TowerQPSModel(tasks, warmup, window_seconds)
    for step in range(20):
        _tick(rng)
        n = int(rng.choice([0, 3, 50]))
        preds = torch.zeros(tasks, n)
        thr.update(tasks)  # a task-first (T, N) tensor counts T (see Throughput's docstring)
        qps.update(np.full(tasks, n))
        how = "update" if step == 0 or rng.random() < 0.5 else "forward"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a rate over 0 s warns (nan): the values are compared below
            if how == "update":
                collection.update(preds)
            else:
                collection(preds)
        members = ("a", "b", "q", "q2")  # the later members too: they take the first's record with its states
        assert collection.compute_groups == {0: ["a", "b"], 1: ["q", "q2"]}
        held = dict(collection.items(keep_base=True, copy_state=False))  # `collection[name]` unlinks the states
        for name in members:
            metric = held[name]
            if isinstance(metric, tmx.Throughput):
                _assert_thr(metric, thr, f"seed {seed} step {step} ({how}) {name}")
            else:
                _assert_qps(metric, qps, f"seed {seed} step {step} ({how}) {name}")


def _member_values(out: dict, name: str) -> dict:
    """One member's entries of a ``MetricCollection``'s flat forward/compute dict (keys ``{name}_{entry}``)."""
    return {key[len(name) + 1 :]: value for key, value in out.items() if key.startswith(f"{name}_")}


def _collection(warmup, window_seconds, tasks):
    def qps():
        return tmx.TowerQPS(tasks, warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock())

    def thr():
        return tmx.Throughput(warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock())

    members = {"a": thr(), "b": thr(), "c": thr(), "q": qps(), "q2": qps()}
    for metric in members.values():
        metric.persistent(True)
    return MetricCollection(members, compute_groups=True)


@pytest.mark.parametrize("seed", range(max(_SEEDS // 2, 4)))
def test_every_member_of_a_compute_group_forwards_and_saves_as_a_lone_metric(seed):
    """A compute group's ``update`` feeds its first member alone and links the others to its states, not to its
    host record (steps, clock reading, window timeline): a later member's ``forward`` then timed its step from a
    stale reading and kept a stale window (a forward after updates returned another rate than a lone metric's),
    and a collection checkpoint saved that member's stale steps and window. Every member now takes the first
    member's record with its states: each member's forward and compute values equal the documented rule's for the
    calls the collection took, through checkpoints of the collection too."""
    rng = np.random.default_rng(5000 + seed)
    _NOW[0] = 10.0
    warmup, window_seconds, tasks = int(rng.choice([0, 1, 3])), float(rng.choice([1.0, 2.5])), 2
    collection = _collection(warmup, window_seconds, tasks)
    thr, qps = ThroughputModel(warmup, window_seconds), TowerQPSModel(tasks, warmup, window_seconds)
    log = [f"seed {seed}: warmup {warmup}, window {window_seconds}"]
    for step in range(24):
        how = "update" if step == 0 else str(rng.choice(["update", "update", "forward", "forward", "load"]))
        if how == "load":  # the collection's checkpoint into a fresh one: every member's record as saved
            saved = collection.state_dict()
            assert saved["b._extra_state"] == saved["c._extra_state"] == saved["a._extra_state"], "\n".join(log)
            collection = _collection(warmup, window_seconds, tasks)
            collection.load_state_dict(copy.deepcopy(saved))
            thr, qps = thr.loaded_into(warmup, window_seconds), qps.loaded()
            log.append("load")
        else:
            _tick(rng)
            n = int(rng.choice([0, 3, 50]))
            preds = torch.zeros(tasks, n)
            thr.update(tasks)  # a task-first (T, N) tensor counts T (see Throughput's docstring)
            qps.update(np.full(tasks, n))
            log.append(f"{how} {n} at {_NOW[0]}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a rate over 0 s warns (nan): the values are compared below
                out = collection.update(preds) if how == "update" else collection(preds)
            if how == "forward":
                for name, model in (("a", thr), ("b", thr), ("c", thr), ("q", qps), ("q2", qps)):
                    got = _member_values(out, name)
                    assert got, f"{name}: {sorted(out)}"
                    if name.startswith("q"):
                        _assert_qps(None, model, "\n".join([*log, f"forward of {name}"]), value=got)
                    else:
                        _assert_thr(None, model, "\n".join([*log, f"forward of {name}"]), forward_value=got)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = collection.compute()
        for name, model in (("a", thr), ("b", thr), ("c", thr), ("q", qps), ("q2", qps)):
            got = _member_values(values, name)
            if name.startswith("q"):
                _assert_qps(None, model, "\n".join([*log, f"compute of {name}"]), value=got)
            else:
                _assert_thr(None, model, "\n".join([*log, f"compute of {name}"]), forward_value=got)


# ----------------------------------------------------------------------------- merge_state


class SideBySide:
    """``merge_state``'s documented rule: the other's recent updates join this timeline ending with its newest.

    A timeline holds ``[start, end, examples, pinned]`` per timed update; the window keeps those that
    started within ``window_seconds`` of the newest end, and the pinned ones (the newest update of
    each side of a merge, until a later update of this metric); its time runs from the oldest start
    kept to the newest end. Lifetime: examples add, seconds take the longer side's.
    """

    def __init__(self, window_seconds: float, zero) -> None:
        self.window_seconds, self.zero = window_seconds, zero
        self.updates: list[list] = []
        self.now = 0.0
        self.examples, self.elapsed, self.total = zero, 0.0, zero

    def timed(self, seconds: float, n) -> None:
        for u in self.updates:
            u[3] = False
        self.updates.append([self.now, self.now + seconds, n, True])
        self.now += seconds
        self.examples, self.elapsed = self.examples + n, self.elapsed + seconds

    def kept(self) -> list[list]:
        return [u for u in self.updates if u[0] >= self.now - self.window_seconds or u[3]]

    def window(self) -> tuple[float, object]:
        kept = self.kept()
        if not kept:
            return 0.0, self.zero
        return self.now - min(u[0] for u in kept), sum((u[2] for u in kept), self.zero)

    def merge(self, other: SideBySide, as_states: bool) -> None:
        if as_states:  # a dict of states: its window is one update of its examples over its seconds
            seconds, examples = other.window()
            theirs = [[other.now - seconds, other.now, examples, True]] if seconds or np.any(examples) else []
        else:
            theirs = [list(u) for u in other.kept()]
        shift = self.now - other.now
        for u in theirs:
            self.updates.append([u[0] + shift, u[1] + shift, u[2], u[3] or u[1] == other.now])
        self.examples, self.elapsed = self.examples + other.examples, max(self.elapsed, other.elapsed)
        self.total = self.total + other.total


def _timed_run(rng, metric, side, counts_of):
    """A few updates of ``metric`` (warm-up 1: the first starts the clock), mirrored on ``side``; its last reading."""
    last = None
    for _ in range(int(rng.integers(0, 8))):
        _tick(rng)
        kwargs, n = counts_of(rng)
        metric.update(**kwargs)
        side.total = side.total + n
        if last is not None:
            side.timed(_NOW[0] - last, n)
        last = _NOW[0]
    return last


@pytest.mark.parametrize("kind", ["throughput", "qps"])
@pytest.mark.parametrize("seed", range(_SEEDS))
def test_merge_state_random_runs_side_by_side(kind, seed):
    """Two or three runs merged (as metrics or as dicts of states), then more updates of the first one."""
    rng = np.random.default_rng(2000 + seed)
    window_seconds = float(rng.choice([0.5, 1.0, 2.5, 6.0]))
    tasks = 2
    if kind == "throughput":

        def build():  # warm-up 1: the first update starts the clock, as TowerQPS's
            return tmx.Throughput(warmup_steps=1, window_seconds=window_seconds, clock=SharedClock())

        def counts_of(rng):
            n = int(rng.choice([0, 1, 9, 100]))
            return {"batch": n}, n

        zero = 0
    else:

        def build():
            return tmx.TowerQPS(tasks, warmup_steps=1, window_seconds=window_seconds, clock=SharedClock())

        def counts_of(rng):
            n = rng.choice([0, 1, 9, 100], size=tasks).astype(np.float64)
            return {"num_examples": torch.tensor(n)}, n

        zero = np.zeros(tasks)

    def check(metric, side, what):
        seconds, examples = side.window()
        if kind == "throughput":
            lifetime = side.examples / side.elapsed if side.elapsed else math.nan
            window = examples / seconds if seconds else math.nan
            actual, expected = _thr_values(metric), (lifetime, window, side.total)
            assert all(_nan_equal(a, e) for a, e in zip(actual, expected, strict=True)), f"{what}: {actual} {expected}"
        else:
            values = {k: v.numpy() for k, v in metric.compute().items()}
            lifetime = side.examples / side.elapsed if side.elapsed else zero
            window = examples / seconds if seconds else zero
            for key, want in (("lifetime_qps", lifetime), ("window_qps", window), ("total_examples", side.total)):
                np.testing.assert_allclose(values[key], want, rtol=1e-12, atol=0, err_msg=f"{what} {key}")

    ours, side = build(), SideBySide(window_seconds, zero)
    last = _timed_run(rng, ours, side, counts_of)
    for merge in range(int(rng.integers(1, 3))):
        now = _NOW[0]
        _NOW[0] += 1000.0  # another process, another clock (only its intervals count)
        theirs, their_side = build(), SideBySide(window_seconds, zero)
        _timed_run(rng, theirs, their_side, counts_of)
        _NOW[0] = now
        as_states = bool(rng.random() < 0.4)
        ours.merge_state(theirs.metric_state if as_states else theirs)
        side.merge(their_side, as_states)
        check(ours, side, f"seed {seed}: merge {merge} (states: {as_states})")
        if rng.random() < 0.3:  # the merged metric checkpointed, resumed in a fresh one: the clock restarts
            fresh = build()
            fresh.persistent(True)
            ours.persistent(True)
            fresh.load_state_dict(ours.state_dict())
            ours, last = fresh, None
            if kind == "qps":  # its window resumes as one update of its examples over its seconds
                seconds, examples = side.window()
                side.updates = [[side.now - seconds, side.now, examples, True]] if seconds or examples.any() else []
            check(ours, side, f"seed {seed}: merge {merge}, loaded")
        for step in range(int(rng.integers(0, 6))):
            _tick(rng)
            kwargs, n = counts_of(rng)
            ours.update(**kwargs)
            side.total = side.total + n
            if last is not None:
                side.timed(_NOW[0] - last, n)
            last = _NOW[0]
            check(ours, side, f"seed {seed}: merge {merge}, update {step}")


# ----------------------------------------------------------------------------- bad input


def _snapshot(metric):
    kept = ("_steps", "_last", "_last_tick", "_now", "_reading")
    host = {k: copy.deepcopy(v) for k, v in vars(metric).items() if k in kept}
    recent = [(s, e, n.tolist() if torch.is_tensor(n) else n) for s, e, n in metric._recent]
    states = {name: getattr(metric, name) for name in metric._defaults}
    return host, recent, {k: v.clone() for k, v in states.items()}, states


def _assert_untouched(metric, before, what):
    host, recent, values, objects = _snapshot(metric)
    assert (host, recent) == before[:2], what
    assert all(torch.equal(values[k], v) for k, v in before[2].items()), what
    assert all(objects[k] is v for k, v in before[3].items()), f"{what}: a state object was replaced"


_BAD_THROUGHPUT = [
    (-1, ValueError, "non-negative int64"),
    (2**63, ValueError, "non-negative int64"),
    (2.0, TypeError, "got float"),
    (math.nan, TypeError, "got float"),
    (True, TypeError, "got bool"),
    (None, TypeError, "got NoneType"),
    ("64", TypeError, "got str"),
    (torch.tensor(3), ValueError, "0-dim tensor"),
    ({"loss": torch.tensor(0.1)}, ValueError, "hold a tensor with a leading batch dimension"),
    ([], ValueError, "hold a tensor with a leading batch dimension"),
]


@pytest.mark.parametrize("how", ["update", "forward"])
@pytest.mark.parametrize(("batch", "error", "match"), _BAD_THROUGHPUT)
def test_throughput_refuses_bad_counts_and_changes_nothing(batch, error, match, how):
    """Mid-run (warm-up over, a window held): a refused batch leaves the states (the same objects), the clock's
    start, the steps and the window as they were; the run then goes on as a twin's that never saw it."""
    _NOW[0] = 0.0
    metric, twin = (tmx.Throughput(warmup_steps=2, window_seconds=1.5, clock=SharedClock()) for _ in "ab")
    for n in (5, 6, 7, 8):
        _NOW[0] += 0.75
        metric.update(n)
        twin.update(n)
    _NOW[0] += 0.5
    before = _snapshot(metric)
    with pytest.raises(error, match=match):
        metric(batch) if how == "forward" else metric.update(batch)
    _assert_untouched(metric, before, repr(batch))
    metric.update(9)
    twin.update(9)
    assert _thr_values(metric) == _thr_values(twin) == ((7 + 8 + 9) / 2.0, (8 + 9) / 1.25, 35)


_BAD_QPS = [
    ({"num_examples": torch.tensor([1.0, -1.0])}, ValueError, "finite and non-negative"),
    ({"num_examples": torch.tensor([1.0, math.nan])}, ValueError, "finite and non-negative"),
    ({"num_examples": torch.tensor([math.inf, 1.0])}, ValueError, "finite and non-negative"),
    ({"num_examples": torch.tensor(-2)}, ValueError, "finite and non-negative"),
    ({"num_examples": torch.tensor([1, 2, 3])}, ValueError, r"`num_examples` of shape \(2,\) or \(\)"),
    ({"num_examples": torch.tensor([[1, 2]])}, ValueError, r"`num_examples` of shape \(2,\) or \(\)"),
    ({"num_examples": [1, 2]}, TypeError, r"`num_examples` to be an int or a tensor of counts .*, got list"),
    # counts are whole, non-negative and no bools, as Throughput's (a bool tensor was read as 0/1, 2.5 as 2.5)
    ({"num_examples": True}, TypeError, "`num_examples` to be an int or a tensor of counts .*, got bool"),
    ({"num_examples": np.bool_(True)}, TypeError, "got bool"),
    ({"num_examples": torch.tensor([True, False])}, TypeError, "`num_examples` to be counts .* torch.bool"),
    ({"num_examples": torch.tensor(True)}, TypeError, "torch.bool"),
    ({"num_examples": 2.0}, TypeError, "got float"),
    ({"num_examples": torch.tensor(2.5)}, ValueError, "non-negative whole counts, got 2.5"),
    ({"num_examples": torch.tensor([1.0, 0.5])}, ValueError, "non-negative whole counts"),
    ({"num_examples": -1}, ValueError, r"`num_examples` as an int to be a non-negative int64 .*, got -1"),
    ({"num_examples": np.int64(-3)}, ValueError, "non-negative int64"),
    ({"num_examples": 2**63}, ValueError, "non-negative int64"),
    ({"preds": torch.zeros(3, 4)}, ValueError, r"`preds` of shape \(N,\) or \(2, N\)"),
    ({"preds": torch.zeros(2, 3, 4)}, ValueError, r"`preds` of shape \(N,\) or \(2, N\)"),
    ({"preds": torch.zeros(())}, ValueError, r"`preds` of shape \(N,\) or \(2, N\)"),
    ({"preds": [0.5, 0.5]}, TypeError, "`preds` to be a torch.Tensor"),
    ({}, TypeError, "requires `preds` or `num_examples`"),
]


@pytest.mark.parametrize("how", ["update", "forward"])
@pytest.mark.parametrize(("kwargs", "error", "match"), _BAD_QPS)
def test_tower_qps_refuses_bad_counts_and_changes_nothing(kwargs, error, match, how):
    _NOW[0] = 0.0
    metric, twin = (tmx.TowerQPS(2, warmup_steps=2, window_seconds=1.5, clock=SharedClock()) for _ in "ab")
    for n in (5, 6, 7, 8):
        _NOW[0] += 0.75
        metric.update(num_examples=torch.tensor([n, 2 * n]))
        twin.update(num_examples=torch.tensor([n, 2 * n]))
    _NOW[0] += 0.5
    before = _snapshot(metric)
    with pytest.raises(error, match=match):
        metric(**kwargs) if how == "forward" else metric.update(**kwargs)
    _assert_untouched(metric, before, repr(kwargs))
    metric.update(num_examples=torch.tensor([9, 18]))
    twin.update(num_examples=torch.tensor([9, 18]))
    expected = {"lifetime_qps": [12.0, 24.0], "window_qps": [17 / 1.25, 34 / 1.25], "total_examples": [35.0, 70.0]}
    assert _qps_values(metric) == _qps_values(twin) == expected


def test_tower_qps_bool_counts_are_refused_without_validate_args_too():
    """A bool tensor's dtype is host metadata: refused for free with ``validate_args=False`` (no value read)."""
    metric = tmx.TowerQPS(2, warmup_steps=0, validate_args=False, clock=SharedClock())
    before = _snapshot(metric)
    with pytest.raises(TypeError, match=r"torch\.bool"):
        metric.update(num_examples=torch.tensor([True, True]))
    _assert_untouched(metric, before, "bool")
    with pytest.raises(TypeError, match="got bool"):
        metric.update(num_examples=False)
    _assert_untouched(metric, before, "bool")


@pytest.mark.parametrize("form", ["int", "numpy", "tensor", "int tensor per task", "float tensor"])
def test_tower_qps_takes_a_count_as_an_int_as_throughput_does(form):
    """``num_examples=64`` was a TypeError (a tensor only) where Throughput counts an int: both take it now,
    the same count for every task, as a 0-dim tensor gives."""
    _NOW[0] = 0.0
    metric = tmx.TowerQPS(2, warmup_steps=1, window_seconds=2.0, clock=SharedClock())
    for n in (10, 20, 30, 40):
        given = {
            "int": n,
            "numpy": np.int32(n),
            "tensor": torch.tensor(n),
            "int tensor per task": torch.tensor([n, n], dtype=torch.int16),
            "float tensor": torch.tensor([float(n), float(n)]),
        }[form]
        _NOW[0] += 1.5
        metric.update(num_examples=given)
    # by hand: the first update starts the clock; then 20, 30, 40 examples in 1.5 s each; the window (2 s)
    # holds the newest update alone
    expected = {"lifetime_qps": [90 / 4.5] * 2, "window_qps": [40 / 1.5] * 2, "total_examples": [100.0] * 2}
    for key, values in _qps_values(metric).items():
        assert values == pytest.approx(expected[key], rel=1e-12), key


def _bad_clock(kind: str):
    return {"nan": lambda: math.nan, "inf": lambda: math.inf, "-inf": lambda: -math.inf, "str": lambda: "soon"}[kind]


_BAD_CLOCKS = [
    ("nan", ValueError, "`clock` to return a finite number of seconds, got nan"),
    ("inf", ValueError, "`clock` to return a finite number of seconds, got inf"),
    ("-inf", ValueError, "`clock` to return a finite number of seconds"),
    ("backwards", ValueError, r"`clock` never to go backwards .*, got 3.5 after 3.75"),
    ("str", ValueError, "could not convert string to float"),
]


@pytest.mark.parametrize("when", ["timed", "warm-up"])
@pytest.mark.parametrize("how", ["update", "forward"])
@pytest.mark.parametrize("kind", ["throughput", "qps"])
@pytest.mark.parametrize(("reading", "error", "match"), _BAD_CLOCKS)
def test_a_clock_reading_nan_or_going_backwards_is_refused_and_changes_nothing(reading, error, match, kind, how, when):
    """A user clock that read NaN made every later rate NaN (Throughput) or 0 (TowerQPS) without a word, and one
    that went backwards subtracted seconds (12 examples over 3 s read 5 s then 3 s: 2.67/s reported, not 4/s). Both
    metrics now refuse the reading naming `clock`, before anything changes; the run then goes on as a twin's."""
    _NOW[0] = 0.0
    warmup = 2 if when == "timed" else 9

    def build():
        if kind == "throughput":
            return tmx.Throughput(warmup_steps=warmup, window_seconds=1.5, clock=SharedClock())
        return tmx.TowerQPS(2, warmup_steps=warmup, window_seconds=1.5, clock=SharedClock())

    metric, twin = build(), build()
    for n in (5, 6, 7, 8, 9):
        _NOW[0] += 0.75
        metric.update(torch.zeros(n))
        twin.update(torch.zeros(n))
    before = _snapshot(metric)
    if reading == "backwards":
        _NOW[0] -= 0.25
    else:
        metric.clock = _bad_clock(reading)
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a forward's rate over 0 s would warn (nan)
        metric(torch.zeros(4)) if how == "forward" else metric.update(torch.zeros(4))
    _assert_untouched(metric, before, reading)
    metric.clock = twin.clock
    _NOW[0] = 4.5
    metric.update(torch.zeros(10))
    twin.update(torch.zeros(10))
    if kind == "throughput":
        assert all(_nan_equal(a, e) for a, e in zip(_thr_values(metric), _thr_values(twin), strict=True))
        expected = ((7 + 8 + 9 + 10) / 3.0, (9 + 10) / 1.5, 45) if when == "timed" else (math.nan, math.nan, 45)
        assert all(_nan_equal(a, e) for a, e in zip(_thr_values(metric), expected, strict=True))
    else:
        assert _qps_values(metric) == _qps_values(twin)
        lifetime, window = ((7 + 8 + 9 + 10) / 3.0, (9 + 10) / 1.5) if when == "timed" else (0.0, 0.0)
        assert _qps_values(metric) == {
            "lifetime_qps": [lifetime] * 2,
            "window_qps": [window] * 2,
            "total_examples": [45.0] * 2,
        }


@pytest.mark.parametrize("reading", ["nan", "backwards"])
def test_throughput_started_at_construction_or_reset_refuses_a_bad_reading(reading):
    """With ``warmup_steps=0`` the clock is read at construction and at ``reset``: a NaN there is refused too (the
    reset leaves the metric as it was), and a later reading earlier than that start is refused."""
    _NOW[0] = 5.0
    with pytest.raises(ValueError, match="`clock` to return a finite number of seconds, got nan"):
        tmx.Throughput(warmup_steps=0, clock=_bad_clock("nan"))
    metric = tmx.Throughput(warmup_steps=0, window_seconds=10.0, clock=SharedClock())
    _NOW[0] = 6.0
    metric.update(12)
    before = _snapshot(metric)
    if reading == "nan":
        metric.clock = _bad_clock("nan")
        with pytest.raises(ValueError, match="`clock` to return a finite number"):
            metric.reset()
        _assert_untouched(metric, before, reading)
        metric.clock = SharedClock()
    else:
        metric.reset()  # the clock restarts at 6 s
        before = _snapshot(metric)
        _NOW[0] = 5.5
        with pytest.raises(ValueError, match=r"never to go backwards .*, got 5\.5 after 6\.0"):
            metric.update(3)
        _assert_untouched(metric, before, reading)
    _NOW[0] = 8.0
    metric.update(20)
    if reading == "nan":
        assert _thr_values(metric) == ((12 + 20) / 3.0, (12 + 20) / 3.0, 32)  # by hand: 5 s -> 8 s
    else:
        assert _thr_values(metric) == (20 / 2.0, 20 / 2.0, 20)  # by hand: restarted at 6 s


@pytest.mark.parametrize("validate_args", [True, False])
def test_tower_qps_loads_a_checkpoint_of_another_warm_up_or_window_as_throughput_does(validate_args):
    """A checkpoint saved with another ``warmup_steps`` (or ``window_seconds``) failed to load (missing and
    unexpected keys: the settings name the states) where Throughput loads it: both keep the counts now, since
    those settings only decide which later steps are timed (a job resumed with another warm-up)."""
    _NOW[0] = 0.0
    source = tmx.TowerQPS(2, warmup_steps=1, window_seconds=2.0, clock=SharedClock(), validate_args=validate_args)
    source.persistent(True)
    for n in (10, 20, 30, 40):
        source.update(num_examples=torch.tensor([n, 2 * n]))
        _NOW[0] += 1.5
    plain = tmx.TowerQPS(2, warmup_steps=100, clock=SharedClock())  # the default names, no window
    plain.persistent(True)
    plain.update(num_examples=5)
    for warmup, window in ((2, 5.0), (100, 2.0), (0, None), (1, None)):
        resumed = tmx.TowerQPS(2, warmup_steps=warmup, window_seconds=window, clock=SharedClock())
        resumed.persistent(True)
        saved = source.state_dict() if window is not None else plain.state_dict()
        resumed.load_state_dict(copy.deepcopy(saved))  # strict: every key matched
        if window is None:  # the plain checkpoint: no timed step, so no rate
            assert _qps_values(resumed) == {"value": [0.0, 0.0]}
            continue
        # by hand: the source timed 20+30+40 (and twice that) over 3 x 1.5 s; its window (2 s) held the newest
        # update, loaded as one update of 1.5 s; then the warm-up again, then 1 s for 60 examples
        for _ in range(max(warmup, 1)):
            _NOW[0] += 7.0
            resumed.update(num_examples=1)
        _NOW[0] += 1.0
        resumed.update(num_examples=torch.tensor([60, 120]))
        total = 10 + 20 + 30 + 40 + max(warmup, 1) + 60
        window_rate = (40 + 60) / 2.5 if window >= 2.5 else 60 / 1.0
        expected = {
            "lifetime_qps": [(20 + 30 + 40 + 60) / 5.5, 2 * (20 + 30 + 40 + 60) / 5.5],
            "window_qps": [window_rate, 2 * window_rate],
            "total_examples": [total, 2 * total - max(warmup, 1)],
        }
        for key, values in _qps_values(resumed).items():
            assert values == pytest.approx(expected[key], rel=1e-12), (warmup, window, key)


# ----------------------------------------------------------------------------- DDP


def _ddp_plan(seed: int) -> dict:
    """Both ranks' steps: phases of a few updates each (a rank may have none), a compute after each, resets."""
    rng = np.random.default_rng(3000 + seed)
    phases = []
    for _ in range(int(rng.integers(2, 5))):
        steps = {}
        for rank in range(2):
            count = int(rng.choice([0, 0, 1, 2, 4, 6]))
            steps[rank] = [
                (float(rng.choice([0, 1, 2, 3, 5, 8])) / 4, rng.choice([0, 1, 7, 30], size=2).tolist())
                for _ in range(count)
            ]
        phases.append({"steps": steps, "reset": bool(rng.random() < 0.3)})
    return {
        "warmup": int(rng.choice([0, 1, 3])),
        "window": float(rng.choice([0.5, 1.5, 4.0])),
        "start": [float(rng.integers(0, 100)), float(rng.integers(1000, 2000))],  # each rank its own clock
        "phases": phases,
    }


def _ddp_random_job(rank: int, world_size: int, seeds: list[int]) -> list:
    return [_ddp_random_run(rank, seed) for seed in seeds]


def _ddp_random_run(rank: int, seed: int) -> list:
    plan = _ddp_plan(seed)
    _NOW[0] = plan["start"][rank]
    thr = tmx.Throughput(warmup_steps=plan["warmup"], window_seconds=plan["window"], clock=SharedClock())
    qps = tmx.TowerQPS(2, warmup_steps=plan["warmup"], window_seconds=plan["window"], clock=SharedClock())
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nan rates (0 s) and TorchMetrics' compute-before-update on an idle rank
        for phase in plan["phases"]:
            for seconds, counts in phase["steps"][rank]:
                _NOW[0] += seconds
                thr.update(counts[0])
                qps.update(num_examples=torch.tensor(counts))
            out.append((_thr_values(thr), _qps_values(qps)))
            if phase["reset"]:
                _NOW[0] += 0.25
                thr.reset()
                qps.reset()
    return out


def _ddp_expected(plan: dict) -> list:
    """Each rank's models; examples (and window examples) summed over ranks, seconds the longest rank's."""
    _NOW[:] = [0.0]
    thr = [ThroughputModel(plan["warmup"], plan["window"]) for _ in range(2)]
    qps = [TowerQPSModel(2, plan["warmup"], plan["window"]) for _ in range(2)]
    now = list(plan["start"])
    for rank in range(2):  # the readings at construction (warm-up 0: the clock starts there)
        _NOW[0] = now[rank]
        thr[rank].restart()
    out = []
    for phase in plan["phases"]:
        for rank in range(2):
            for seconds, counts in phase["steps"][rank]:
                now[rank] += seconds
                _NOW[0] = now[rank]
                thr[rank].update(counts[0])
                qps[rank].update(np.asarray(counts, dtype=np.float64))
        w_thr = [m.window_state() for m in thr]
        examples, elapsed = sum(m.examples for m in thr), max(m.elapsed for m in thr)
        w_seconds, w_examples = max(s for s, _ in w_thr), sum(n for _, n in w_thr)
        total = sum(m.total for m in thr)
        thr_values = (
            examples / elapsed if elapsed else math.nan,
            w_examples / w_seconds if w_seconds else math.nan,
            total,
        )
        w_qps = [m.window_state() for m in qps]
        q_examples, q_elapsed = sum(m.examples for m in qps), max(m.elapsed for m in qps)
        q_wsec, q_wex = max(s for s, _ in w_qps), sum(n for _, n in w_qps)
        qps_values = {
            "lifetime_qps": (q_examples / q_elapsed if q_elapsed else np.zeros(2)).tolist(),
            "window_qps": (q_wex / q_wsec if q_wsec else np.zeros(2)).tolist(),
            "total_examples": sum(m.total for m in qps).tolist(),
        }
        out.append((thr_values, qps_values))
        if phase["reset"]:
            counted = total > 0  # the compute before the reset counted some rank's examples: warm-up over on all
            for rank in range(2):
                now[rank] += 0.25
                _NOW[0] = now[rank]
                steps = thr[rank].steps
                thr[rank].reset()
                if counted and not steps:
                    thr[rank].steps = plan["warmup"]
                qps[rank].reset()
    return out


@pytest.mark.ddp
def test_ddp_random_runs_sum_examples_and_take_the_slowest_rank(ddp_pool):
    """Two gloo ranks with their own clocks and numbers of updates (none, at times), compute after each phase."""
    seeds = list(range(max(_SEEDS // 4, 3)))
    results = ddp_pool.run(_ddp_random_job, seeds)  # each rank's runs, seed by seed
    for seed, *ranks in zip(seeds, *results, strict=True):
        plan = _ddp_plan(seed)
        expected = _ddp_expected(plan)
        for rank, got in enumerate(ranks):
            for phase, ((thr_got, qps_got), (thr_want, qps_want)) in enumerate(zip(got, expected, strict=True)):
                what = f"seed {seed}, rank {rank}, phase {phase}: {plan}"
                assert all(_nan_equal(a, e) for a, e in zip(thr_got, thr_want, strict=True)), (
                    f"{what}\nThroughput {thr_got} != {thr_want}"
                )
                for key, want in qps_want.items():
                    np.testing.assert_allclose(qps_got[key], want, rtol=1e-12, atol=0, err_msg=f"{what} {key}")


# ----------------------------------------------------------------------------- RecMetricModule


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
@pytest.mark.parametrize("seed", range(max(_SEEDS // 3, 3)))
def test_a_modules_throughput_follows_the_rule(seed, key_style):
    """``RecMetricModule(throughput=Throughput(clock=...))``: its throughput keys are the rule's, through steps
    of several sizes (0 rows too), computes, resets (which clear the throughput but keep the warm-up behind
    it; with TorchRec's keys the throughput keeps counting, as TorchRec's) and checkpoints into a fresh module."""
    rng = np.random.default_rng(4000 + seed)
    _NOW[0] = 50.0
    warmup, window_seconds = int(rng.choice([0, 1, 3])), float(rng.choice([1.0, 2.5, 100.0]))

    def build():
        throughput = tmx.Throughput(warmup_steps=warmup, window_seconds=window_seconds, clock=SharedClock())
        return tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=throughput, key_style=key_style)

    module, model = build(), ThroughputModel(warmup, window_seconds)
    for step in range(int(rng.integers(8, 25))):
        op = rng.choice(["update", "update", "update", "reset", "load"])
        if op == "update":
            _tick(rng)
            n = int(rng.choice([0, 1, 16, 100]))
            module.update({"prediction": torch.full((n,), 0.5), "label": torch.ones(n)})
            model.update(n)
        elif op == "reset":
            module.reset()
            if key_style == "torchmetrics_ext":
                model.reset()
        else:
            fresh = build()
            fresh.load_state_dict(module.state_dict())
            module, model = fresh, model.loaded_into(warmup, window_seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = module.compute()
        key = "throughput/{}" if key_style == "torchmetrics_ext" else "throughput-throughput|{}"
        actual = tuple(
            values[key.format(k)].item() for k in ("lifetime_throughput", "window_throughput", "total_examples")
        )
        expected = model.values()
        assert all(_nan_equal(a, e) for a, e in zip(actual, expected, strict=True)), (
            f"seed {seed} step {step} ({op}): {actual} != {expected}"
        )


# ----------------------------------------------------------------------------- Lightning


def test_lightning_logs_the_rules_rates_and_resumes_them(tmp_path):
    """A ``LightningModule`` holding both metrics logs ``forward``'s values each step (``log_dict``); a module
    restored from the Trainer's checkpoint continues the counts (the clock restarting at its first update and
    TowerQPS warming up again, as the docstrings say)."""
    L = pytest.importorskip("lightning")
    rng = np.random.default_rng(5)
    sizes = rng.choice([1, 4, 16], size=12).tolist()
    ticks = (rng.choice([1, 2, 3, 5], size=12) / 4).tolist()

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)
            self.thr = tmx.Throughput(warmup_steps=2, window_seconds=1.0, clock=SharedClock())
            self.qps = tmx.TowerQPS(2, warmup_steps=2, window_seconds=1.0, clock=SharedClock())
            self.qps.persistent(True)
            self.logged = []

        def training_step(self, batch, batch_idx):
            (x,) = batch
            _NOW[0] += ticks[self.global_step]
            rates = self.thr(x)
            qps = self.qps(preds=torch.zeros(2, x.shape[0]))
            self.log_dict({f"thr/{k}": v for k, v in rates.items()}, on_step=True, batch_size=x.shape[0])
            self.log("qps/window_click", qps["window_qps"][0], on_step=True, batch_size=x.shape[0])
            self.logged.append((tuple(v.item() for v in rates.values()), qps["window_qps"][0].item()))
            return self.linear(x).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def loader(counts):
        batches = [torch.zeros(n, 2) for n in counts]
        return [(b,) for b in batches]  # one batch per step, of its own size

    def trainer(steps):
        return L.Trainer(
            max_steps=steps,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            accelerator="cpu",
        )

    _NOW[0] = 0.0
    thr, qps = ThroughputModel(2, 1.0), TowerQPSModel(2, 2, 1.0)
    first = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = trainer(6)
        run.fit(first, train_dataloaders=torch.utils.data.DataLoader(loader(sizes[:6]), batch_size=None))
    for step, n in enumerate(sizes[:6]):
        _NOW[0] = sum(ticks[: step + 1])
        thr.update(n)
        qps.update(np.full(2, n))
        got_thr, got_qps = first.logged[step]
        assert all(_nan_equal(a, e) for a, e in zip(got_thr, thr.values(), strict=True)), (step, got_thr)
        assert got_qps == pytest.approx(qps.values()["window_qps"][0], rel=1e-12)
    logged = {k: v.item() for k, v in run.logged_metrics.items()}  # what Lightning kept of the last step
    last_thr, last_qps = thr.values(), qps.values()["window_qps"][0]
    expected = {f"thr/{k}": v for k, v in zip(("lifetime_throughput", "window_throughput", "total_examples"), last_thr)}
    assert logged == pytest.approx({**expected, "qps/window_click": last_qps}, rel=1e-6, nan_ok=True)
    path = tmp_path / "run.ckpt"
    run.save_checkpoint(path)
    resumed = Model()
    resumed.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    thr, qps = thr.loaded_into(2, 1.0), qps.loaded()
    _NOW[0] = sum(ticks[:6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(6, 12):  # the resumed module's steps
            _NOW[0] += ticks[step]
            resumed.thr(torch.zeros(sizes[step], 2))
            resumed.qps(preds=torch.zeros(2, sizes[step]))
            thr.update(sizes[step])
            qps.update(np.full(2, sizes[step]))
            _assert_thr(resumed.thr, thr, f"resumed step {step}")
            _assert_qps(resumed.qps, qps, f"resumed step {step}")
