"""A lifetime that restarts (at midnight) while the window goes on: ``reset_lifetime``.

An online training job logs a daily lifetime next to a "last hour" window; the window must not
notice the day boundary. References are computed here: numpy for NE, calibration and CTR,
scikit-learn's ``roc_auc_score`` with ``sample_weight`` for exact AUC and, over the bin each score
falls in (scores on bin centres, so the bin is known without the package), for the binned AUC; the
window is the docs' rule (the newest whole updates whose sizes sum to at most the window, the newest
``window`` samples of a larger one; each DDP rank ``window_size // 2``).

Before ``reset_lifetime`` the only way was ``metric.lifetime.reset()``, which the docs forbid: for
a binned AUC it came back holding the samples still in the window (0.7895 for 0.7766 in the
online-training hunt), since that lifetime is written from the window's sums when read.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

BINS = 64
SEEDS = range(int(os.environ.get("RESET_LIFETIME_SEEDS", "2")))


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    ybar = (w * y).sum() / w.sum()
    return float(ce / (-w.sum() * (ybar * np.log(ybar) + (1 - ybar) * np.log(1 - ybar))))


def _bin_of(p: np.ndarray) -> np.ndarray:
    """The logit bin (uniform over (-16, 16)) of a score on a bin centre."""
    return np.round((np.log(p / (1 - p)) + 16) / 32 * BINS - 0.5)


def _auc(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score  # here: the DDP ranks import this file and need no sklearn

    return float(roc_auc_score(y, scores, sample_weight=w))


REFERENCES = {
    "ne": _ne,
    "calibration": lambda p, y, w: float((w * p).sum() / (w * y).sum()),
    "ctr": lambda p, y, w: float((w * y).sum() / w.sum()),
    "auc": lambda p, y, w: _auc(y, p, w),
    "bauc": lambda p, y, w: _auc(y, _bin_of(p), w),
}
FACTORIES = {
    "ne": tmx.NormalizedEntropy,
    "calibration": tmx.Calibration,
    "ctr": tmx.CTR,
    "auc": tmx.AUC,
    "bauc": lambda: tmx.AUC(num_bins=BINS),
}


def _batch(g: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = 1 / (1 + np.exp(-(-16 + (np.arange(BINS) + 0.5) * 32 / BINS)))
    p = centres[g.integers(BINS // 4, 3 * BINS // 4, n)]  # bin centres, so every bin is known
    y = (g.random(n) < p).astype(np.float64)
    w = g.choice([0.5, 1.0, 2.0], n)
    return p, y, w


def _window(updates: list, share: int) -> list:
    kept: list = []
    total = 0
    for u in reversed([u for u in updates if len(u[0])]):
        n = len(u[0])
        if not kept and n > share:
            return [tuple(a[-share:] for a in u)]
        if total + n > share:
            break
        kept.append(u)
        total += n
    return kept


def _reference(name: str, rows: list) -> float:
    """The value over ``rows``; ``nan`` where one class alone is seen (the package warns there; not compared)."""
    p, y, w = (np.concatenate([r[i] for r in rows]) for i in range(3))
    if name != "ctr" and not 0 < (w * y).sum() < w.sum():
        return float("nan")
    return REFERENCES[name](p, y, w)


def _check(got: float, expected: float, what: str) -> None:
    if not np.isnan(expected):
        assert got == pytest.approx(expected, rel=1e-9), what


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_windowed_reset_lifetime_keeps_the_window(name, seed):
    g = np.random.default_rng(seed)
    window = 300
    metric = tmx.Windowed(FACTORIES[name](), window_size=window)
    updates: list = []
    since = 0  # the first update of the lifetime
    for step in range(90):
        n = int(g.integers(1, 400)) if step % 17 == 5 else int(g.integers(1, 60))  # some larger than the window
        batch = _batch(g, n)
        metric.update(*(torch.tensor(a) for a in batch))
        updates.append(batch)
        if step % 23 == 10:  # midnight: some of the window's updates are older than the new lifetime
            metric.reset_lifetime()
            since = len(updates)
        if step == 57:  # resumed mid-window, after a lifetime reset
            resumed = tmx.Windowed(FACTORIES[name](), window_size=window)
            resumed.load_state_dict(metric.state_dict())
            metric = resumed
        if since == len(updates) or step % 3:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # one class in a small window
            got = metric.compute()
        _check(got["lifetime"].item(), _reference(name, updates[since:]), f"step {step}: lifetime")
        _check(got["window"].item(), _reference(name, _window(updates, window)), f"step {step}: window")


def test_windowed_reset_lifetime_before_any_update_and_twice():
    metric = tmx.Windowed(tmx.AUC(num_bins=BINS), window_size=10)
    metric.reset_lifetime()
    g = np.random.default_rng(5)
    a, b = _batch(g, 6), _batch(g, 3)
    a[1][:2], b[1][:2] = (0, 1), (0, 1)  # both classes in each
    metric.update(*(torch.tensor(x) for x in a))
    metric.reset_lifetime()
    metric.reset_lifetime()
    metric.update(*(torch.tensor(x) for x in b))
    got = metric.compute()
    assert got["lifetime"].item() == pytest.approx(_reference("bauc", [b]), rel=1e-12)
    assert got["window"].item() == pytest.approx(_reference("bauc", [a, b]), rel=1e-12)
    metric.reset()  # everything, as before
    assert metric.lifetime.metric_state["hist"].sum().item() == 0.0
    assert metric.window.metric_state["hist"].sum().item() == 0.0


def _tasks() -> list[tmx.RecTaskInfo]:
    return [tmx.RecTaskInfo("click", label_name="y", prediction_name="p", weight_name="w")]


def _module() -> tmx.RecMetricModule:
    metrics = {"ne": "ne", "calibration": "calibration", "ctr": "ctr", "auc": "auc", "bauc": tmx.AUC(num_bins=BINS)}
    return tmx.RecMetricModule(_tasks(), metrics, window_size=301, compute_interval_steps=5)


def _rank_batch(step: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(1000 * step + rank)
    n = int(g.integers(5, 60)) if rank == 0 else int(g.integers(1, 120))
    if rank == 1 and 9 <= step < 13:
        n = 0  # an idle rank: empty columns
    return _batch(g, n)


STEPS, MIDNIGHT = 30, 12


def _module_job(rank: int, world: int) -> dict[int, dict[str, float]]:
    module = _module()
    logged = {}
    for step in range(STEPS):
        p, y, w = _rank_batch(step, rank)
        module.update({"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.tensor(w)})
        if step == MIDNIGHT:
            module.reset_lifetime()
        if module.should_compute():
            logged[step] = {k: v.item() for k, v in module.compute().items()}
    return logged


@pytest.mark.ddp
def test_module_reset_lifetime_under_ddp_with_an_idle_rank(ddp_pool):
    per_rank = ddp_pool.run(_module_job, timeout=240)
    assert per_rank[0] == per_rank[1]
    for step, got in per_rank[0].items():
        ups = {r: [_rank_batch(s, r) for s in range(step + 1)] for r in range(2)}
        since = MIDNIGHT + 1 if step > MIDNIGHT else 0
        life = [u for r in range(2) for u in ups[r][since:]]
        win = [u for r in range(2) for u in _window(ups[r], 301 // 2)]
        for name in FACTORIES:
            _check(got[f"{name}/click"], _reference(name, life), f"step {step} {name}")
            _check(got[f"{name}/click/window"], _reference(name, win), f"step {step} {name} window")
        # the throughput keeps counting from the job's start
        assert got["throughput/total_examples"] == sum(len(u[0]) for r in range(2) for u in ups[r])


def test_module_reset_lifetime_without_a_window_clears_the_metrics_and_keeps_the_throughput():
    module = tmx.RecMetricModule(_tasks(), {"ctr": "ctr"}, compute_interval_steps=2)
    g = np.random.default_rng(3)
    a, b = _batch(g, 7), _batch(g, 4)
    for p, y, w in (a, b):
        module.update({"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.tensor(w)})
        if p is a[0]:
            module.reset_lifetime()
    got = module.compute()
    assert got["ctr/click"].item() == pytest.approx(_reference("ctr", [b]), rel=1e-12)
    assert got["throughput/total_examples"].item() == 11
    assert module.should_compute()  # the step counter is kept


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_reset_of_the_kept_lifetime_metric_is_reset_lifetime(name, seed):
    """``metric.lifetime.reset()`` through a reference kept to it: the lifetime restarts, the window goes on.

    It used to come back, for a binned AUC, with the samples still in the window (its lifetime
    histogram is written from the window's sums when read): 0.8805 for scikit-learn's 0.8505.
    """
    g = np.random.default_rng(100 + seed)
    window = 300
    metric = tmx.Windowed(FACTORIES[name](), window_size=window)
    life = metric.lifetime  # kept, as a logger or a MetricCollection keeps it
    updates: list = []
    since = 0
    for step in range(60):
        n = int(g.integers(1, 400)) if step % 17 == 5 else int(g.integers(1, 60))
        batch = _batch(g, n)
        metric.update(*(torch.tensor(a) for a in batch))
        updates.append(batch)
        if step % 23 == 10:
            life.reset()
            since = len(updates)
        if step == 40:  # resumed mid-window: the resumed metric's own lifetime, kept again
            resumed = tmx.Windowed(FACTORIES[name](), window_size=window)
            resumed.load_state_dict(metric.state_dict())
            metric, life = resumed, resumed.lifetime
        if since == len(updates) or step % 3:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
            got = metric.compute()
            kept = life.compute()
        _check(got["lifetime"].item(), _reference(name, updates[since:]), f"step {step}: lifetime")
        _check(kept.item(), _reference(name, updates[since:]), f"step {step}: the kept lifetime")
        _check(got["window"].item(), _reference(name, _window(updates, window)), f"step {step}: window")
    # a copy's lifetime is its own: its reset restarts the copy's lifetime and leaves this metric's alone
    twin, extra = copy.deepcopy(metric), _batch(g, 40)
    twin.lifetime.reset()
    twin.update(*(torch.tensor(a) for a in extra))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        got, theirs = metric.compute(), twin.compute()
    _check(theirs["lifetime"].item(), _reference(name, [extra]), "the copy's lifetime")
    _check(theirs["window"].item(), _reference(name, _window([*updates, extra], window)), "the copy's window")
    _check(got["lifetime"].item(), _reference(name, updates[since:]), "the original's lifetime")


def test_a_reset_of_the_metric_given_to_a_windowed_module_restarts_its_lifetime():
    """The metric given to ``RecMetricModule(window_size=...)`` becomes its lifetime: its reset is the lifetime's."""
    bauc = tmx.AUC(num_bins=BINS)
    module = tmx.RecMetricModule(_tasks(), {"bauc": bauc, "ctr": "ctr"}, window_size=301, throughput=False)
    g = np.random.default_rng(7)
    updates = [_batch(g, int(g.integers(20, 80))) for _ in range(12)]
    for i, (p, y, w) in enumerate(updates):
        if i == 7:
            bauc.reset()
        module.update({"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.tensor(w)})
    got = module.compute()
    _check(got["bauc/click"].item(), _reference("bauc", updates[7:]), "lifetime")
    _check(got["bauc/click/window"].item(), _reference("bauc", _window(updates, 301)), "window")
    _check(got["ctr/click"].item(), _reference("ctr", updates), "another metric's lifetime is left alone")
