"""docs/migration_torcheval.md holds up: each recipe gives torcheval's number, each stated difference is real.

torcheval is not a dependency, so its definitions are written out here in numpy from its documentation:
normalized entropy with PyTorch's -100 floor on the logs and the base rate clamped to float64's eps;
AUROC as trapezoids over one point per distinct score (0.5 for one class); AUPRC as the recall steps times
precision at each distinct score; a window of the newest updates (NE) or of the newest samples (AUROC);
click-through rate and weighted calibration as weighted sums; hit rate and reciprocal rank with the rank
of the true class counted as the classes scored strictly higher; throughput as examples over seconds.
The guide's own printed numbers are checked against these formulas too.

``TMX_MIGRATION_SEEDS`` (default 3) sets how many random data sets each comparison draws.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import aggregation as tma
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "migration_torcheval.md").read_text()
SEEDS = range(int(os.environ.get("TMX_MIGRATION_SEEDS", "3")))
EPS = np.finfo(np.float64).eps


# --- torcheval's definitions, in numpy (rows are tasks) ---------------------------------------------------


def tev_ne(preds, target, weights=None, *, logits=False):
    preds, target = np.atleast_2d(preds).astype(np.float64), np.atleast_2d(target).astype(np.float64)
    weights = np.ones_like(preds) if weights is None else np.broadcast_to(weights, preds.shape)
    if logits:
        ce = np.logaddexp(0.0, preds) - target * preds
    else:
        with np.errstate(divide="ignore"):
            ce = -(target * np.maximum(np.log(preds), -100) + (1 - target) * np.maximum(np.log(1 - preds), -100))
    base = np.clip((weights * target).sum(-1) / weights.sum(-1), EPS, 1 - EPS)
    entropy = -base * np.log(base) - (1 - base) * np.log(1 - base)
    return (weights * ce).sum(-1) / weights.sum(-1) / entropy


def tev_auroc(scores, target, weights=None):
    weights = np.ones_like(scores, dtype=np.float64) if weights is None else weights
    order = np.argsort(-scores, kind="stable")
    scores, target, weights = scores[order], target[order].astype(np.float64), weights[order]
    last = np.r_[np.diff(scores) != 0, True]
    tp = np.r_[0.0, np.cumsum(weights * target)[last]]
    fp = np.r_[0.0, np.cumsum(weights * (1 - target))[last]]
    if tp[-1] * fp[-1] == 0:
        return 0.5
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2) / (tp[-1] * fp[-1]))


def tev_auprc(scores, target):
    order = np.argsort(-scores, kind="stable")
    scores, target = scores[order], target[order].astype(np.float64)
    last = np.r_[np.diff(scores) != 0, True]
    tp, fp = np.cumsum(target)[last], np.cumsum(1 - target)[last]
    return float(np.sum(np.diff(np.r_[0.0, tp / tp[-1]]) * tp / (tp + fp)))


def tev_rank(scores, classes):
    """0-based rank of the true class: the classes scored strictly higher."""
    return (scores > scores[np.arange(len(classes)), classes][:, None]).sum(1)


def tev_hit_rate(scores, classes, k):
    return (tev_rank(scores, classes) < (k or scores.shape[1])).astype(np.float64)


def tev_reciprocal_rank(scores, classes, k):
    rank = tev_rank(scores, classes)
    return np.where(rank < (k or scores.shape[1]), 1.0 / (rank + 1), 0.0)


# --- normalized entropy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("from_logits", [True, False])
def test_multi_task_ne_streamed_is_torchevals(seed, from_logits):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 500)) * 2
    y = (rng.random((3, 500)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    w = rng.random((3, 500)) * 3
    preds = z if from_logits else 1 / (1 + np.exp(-z))
    ne = tmx.NormalizedEntropy(num_tasks=3, from_logits=from_logits)
    for start in range(0, 500, 96):
        batch = slice(start, start + 96)
        ne.update(torch.tensor(preds[:, batch]), torch.tensor(y[:, batch]), torch.tensor(w[:, batch]))
    np.testing.assert_allclose(ne.compute().numpy(), tev_ne(preds, y, w, logits=from_logits), rtol=1e-12)
    shared = tmx.NormalizedEntropy(num_tasks=3, from_logits=from_logits)  # (N,) weights: every task's
    shared.update(torch.tensor(preds), torch.tensor(y), torch.tensor(w[0]))
    np.testing.assert_allclose(shared.compute().numpy(), tev_ne(preds, y, w[0], logits=from_logits), rtol=1e-12)


def test_ne_eta_exp_minus_100_is_torchevals_floor_and_the_default_is_not():
    rng = np.random.default_rng(0)
    p = rng.random(40)
    p[:6] = [0.0, 1.0, 1.0, 0.0, 1e-30, 1 - 1e-13]
    y = (rng.random(40) < 0.5).astype(np.float64)
    y[:6] = [1, 0, 1, 0, 1, 0]
    expected = tev_ne(p, y)[0]
    ours = tmx.NormalizedEntropy(eta=math.exp(-100))(torch.tensor(p), torch.tensor(y)).item()
    assert ours == pytest.approx(expected, rel=1e-12)
    default = tmx.NormalizedEntropy()(torch.tensor(p), torch.tensor(y)).item()
    assert abs(default - expected) > 1.0


def test_ne_of_one_class_is_nan_here_and_huge_there():
    p, y = np.array([0.1, 0.2, 0.05]), np.zeros(3)
    assert tev_ne(p, y)[0] > 1e12
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(tmx.NormalizedEntropy()(torch.tensor(p), torch.tensor(y)).item())


# --- AUROC, AUPRC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_auc_and_auprc_with_ties_are_torchevals(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((2, 400)), 1)  # many ties
    y = (rng.random((2, 400)) < scores).astype(np.int64)
    w = rng.integers(1, 5, size=(2, 400)).astype(np.float64)
    auc, weighted, ap = tmx.AUC(num_tasks=2), tmx.AUC(num_tasks=2), tmx.AUPRC(num_tasks=2)
    for start in range(0, 400, 150):
        batch = slice(start, start + 150)
        s, t = torch.tensor(scores[:, batch]), torch.tensor(y[:, batch])
        auc.update(s, t)
        weighted.update(s, t, torch.tensor(w[:, batch]))
        ap.update(s, t)
    np.testing.assert_allclose(auc.compute().numpy(), [tev_auroc(scores[t], y[t]) for t in range(2)], rtol=1e-9)
    np.testing.assert_allclose(
        weighted.compute().numpy(), [tev_auroc(scores[t], y[t], w[t]) for t in range(2)], rtol=1e-9
    )
    np.testing.assert_allclose(ap.compute().numpy(), [tev_auprc(scores[t], y[t]) for t in range(2)], rtol=1e-9)


def test_auc_of_one_class_is_nan_here_and_nan_to_num_gives_torchevals_half():
    scores, y = torch.tensor([[0.1, 0.4, 0.3], [0.2, 0.9, 0.5]]), torch.tensor([[1, 1, 1], [0, 1, 0]])
    auc = tmx.AUC(num_tasks=2)
    auc.update(scores, y)
    with pytest.warns(UndefinedMetricWarning):
        value = auc.compute()
    assert math.isnan(value[0].item())
    expected = [tev_auroc(scores[t].numpy(), y[t].numpy()) for t in range(2)]
    np.testing.assert_allclose(torch.nan_to_num(value, nan=0.5).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_labels_split_into_two_weighted_rows_give_torchevals_auroc(seed):
    rng = np.random.default_rng(seed)
    preds, soft, w = rng.random(200), rng.random(200), rng.random(200) + 0.1
    soft[:20] = np.round(soft[:20])
    with pytest.raises(ValueError, match="target"):
        tmx.AUC()(torch.tensor(preds), torch.tensor(soft))
    p, t, weights = torch.tensor(preds), torch.tensor(soft), torch.tensor(w)
    ours = tmx.AUC()(
        p.repeat(2), torch.cat([torch.ones_like(t), torch.zeros_like(t)]), torch.cat([weights * t, weights * (1 - t)])
    )
    assert ours.item() == pytest.approx(tev_auroc(preds, soft, w), abs=1e-6)  # weights kept as float32 here


# --- windows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_windowed_ne_with_max_updates_is_torchevals_update_window(seed):
    rng = np.random.default_rng(seed)
    updates = 3
    metric = tmx.Windowed(tmx.NormalizedEntropy(num_tasks=2, from_logits=True), window_size=2**62, max_updates=updates)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for size in rng.integers(1, 40, size=9):
        z, y = rng.normal(size=(2, size)), (rng.random((2, size)) < 0.4).astype(np.float64)
        y[:, 0] = 1.0  # both classes in every window
        y[:, -1] = 0.0 if size > 1 else y[:, -1]
        seen.append((z, y))
        metric.update(torch.tensor(z), torch.tensor(y))
        values = metric.compute()
        for name, rows in (("lifetime", seen), ("window", seen[-updates:])):
            z_all, y_all = np.concatenate([r[0] for r in rows], 1), np.concatenate([r[1] for r in rows], 1)
            np.testing.assert_allclose(values[name].numpy(), tev_ne(z_all, y_all, logits=True), rtol=1e-12)


def test_an_update_of_zero_weights_takes_no_window_slot_here_and_one_there():
    first, second = (np.array([0.2, 0.7]), np.array([0.0, 1.0])), (np.array([0.6, 0.4]), np.array([1.0, 0.0]))
    metric = tmx.Windowed(tmx.NormalizedEntropy(), window_size=2**62, max_updates=2)
    for p, y in (first, second):
        metric.update(torch.tensor(p), torch.tensor(y))
    metric.update(torch.tensor([0.6, 0.4]), torch.tensor([1.0, 0.0]), torch.zeros(2))
    both = tev_ne(np.r_[first[0], second[0]], np.r_[first[1], second[1]])[0]
    torcheval_window = tev_ne(*second)[0]  # its two slots: the second update and the zero-weight one
    assert metric.compute()["window"].item() == pytest.approx(both, rel=1e-12)
    assert abs(both - torcheval_window) > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_windowed_auc_is_torchevals_sample_window_only_for_a_batch_size_dividing_it(seed):
    rng = np.random.default_rng(seed)
    window = 24
    for sizes, agrees in (([8] * 7, True), ([5, 9, 7, 10, 6], False)):
        metric = tmx.Windowed(tmx.AUC(), window_size=window)
        scores, labels = [], []
        for size in sizes:
            s, y = rng.random(size), (rng.random(size) < 0.5).astype(np.int64)
            scores.append(s)
            labels.append(y)
            metric.update(torch.tensor(s), torch.tensor(y))
        newest = tev_auroc(np.concatenate(scores)[-window:], np.concatenate(labels)[-window:])
        kept = 0  # the rule here: the newest whole updates that fit
        while kept < len(sizes) and sum(sizes[len(sizes) - kept - 1 :]) <= window:
            kept += 1
        ours = tev_auroc(np.concatenate(scores[-kept:]), np.concatenate(labels[-kept:]))
        assert metric.compute()["window"].item() == pytest.approx(ours, abs=1e-12)
        if agrees:
            assert sum(sizes[-kept:]) == window and ours == pytest.approx(newest, abs=1e-12)
        else:  # 6 + 10 + 7 = 23 samples here, the newest 24 there
            assert sum(sizes[-kept:]) == window - 1


# --- CTR, calibration, hit rate, reciprocal rank, throughput, aggregation -------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ctr_and_weighted_calibration_are_torchevals(seed):
    rng = np.random.default_rng(seed)
    p, clicks, w = rng.random((2, 300)), (rng.random((2, 300)) < 0.3).astype(np.float64), rng.random((2, 300)) * 4
    expected_ctr = (w * clicks).sum(-1) / w.sum(-1)
    average = tmx.WeightedAverage(num_tasks=2)(torch.tensor(clicks), weights=torch.tensor(w))
    ctr = tmx.CTR(num_tasks=2)(torch.tensor(p), torch.tensor(clicks), torch.tensor(w))
    np.testing.assert_allclose(average.numpy(), expected_ctr, rtol=1e-12)
    np.testing.assert_allclose(ctr.numpy(), expected_ctr, rtol=1e-12)
    calibration = tmx.Calibration(num_tasks=2)(torch.tensor(p), torch.tensor(clicks), torch.tensor(w))
    np.testing.assert_allclose(calibration.numpy(), (w * p).sum(-1) / (w * clicks).sum(-1), rtol=1e-12)
    unweighted = tmx.Calibration(num_tasks=2)(torch.tensor(p), torch.tensor(clicks))  # a number as weight cancels
    np.testing.assert_allclose(unweighted.numpy(), (2.5 * p).sum(-1) / (2.5 * clicks).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nextafter_gives_torchevals_hit_rate_and_reciprocal_rank_with_ties(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (120, 6), generator=gen).to(dtype)  # ties everywhere
    classes = torch.randint(0, 6, (120,), generator=gen)
    true = scores.gather(1, classes[:, None])
    optimistic = scores.scatter(1, classes[:, None], torch.nextafter(true, torch.tensor(math.inf, dtype=dtype)))
    relevance = torch.nn.functional.one_hot(classes, 6)
    x, c = scores.numpy(), classes.numpy()
    for k in (1, 3, None):
        hit = tmx.MulticlassRecallAtK(num_classes=6, k=k or 6)(optimistic, classes).item()
        rr = tmx.MRR(k=k)(optimistic, relevance).item()
        assert hit == pytest.approx(tev_hit_rate(x, c, k).mean(), abs=1e-12)
        assert rr == pytest.approx(tev_reciprocal_rank(x, c, k).mean(), abs=1e-12)
        if k != 6 and k is not None:  # without the step, ties count against the true class here
            assert tmx.MulticlassRecallAtK(num_classes=6, k=k)(scores, classes).item() < hit


def test_throughput_fed_torchevals_seconds_gives_its_rate():
    rng = np.random.default_rng(0)
    counts, seconds = rng.integers(1, 500, size=20), rng.random(20) + 0.01
    elapsed = [0.0]
    throughput = tmx.Throughput(warmup_steps=0, clock=lambda: elapsed[0])
    for count, second in zip(counts, seconds):
        elapsed[0] += float(second)
        throughput.update(int(count))
    assert throughput.compute()["lifetime_throughput"].item() == pytest.approx(counts.sum() / seconds.sum(), rel=1e-12)


def test_mean_sum_and_merge_state_one_metric_at_a_time():
    values, weights = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 2.0])
    mean, total = tma.Mean(), tma.Sum()
    mean.update(values, weights)
    mean.update(torch.tensor([4.0]), 0.5)
    total.update(values)
    assert mean.compute().item() == pytest.approx((1 + 6 + 2) / 3.5, rel=1e-12)
    assert total.compute().item() == 6.0
    rng = np.random.default_rng(0)
    parts = [(rng.random(30), (rng.random(30) < 0.5).astype(np.float64)) for _ in range(3)]
    metrics = [tmx.NormalizedEntropy() for _ in parts]
    for metric, (p, y) in zip(metrics, parts):
        metric.update(torch.tensor(p), torch.tensor(y))
    with pytest.raises(ValueError, match="dict or an instance of Metric"):
        metrics[0].merge_state(metrics[1:])  # torcheval's list
    for other in metrics[1:]:
        metrics[0].merge_state(other)
    expected = tev_ne(np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))[0]
    assert metrics[0].compute().item() == pytest.approx(expected, rel=1e-12)


def test_update_returns_none_and_a_number_weight_is_refused_naming_it():
    ctr = tmx.CTR()
    assert ctr.update(torch.tensor([0.2, 0.6]), torch.tensor([0, 1])) is None
    for metric in (tmx.CTR(), tmx.Calibration(), tmx.WeightedAverage()):
        with pytest.raises(TypeError, match="`weights`"):
            metric.update(torch.tensor([0.2, 0.6]), torch.tensor([0.0, 1.0]), 2.0)


# --- the guide's printed numbers are torcheval's ----------------------------------------------------------


def test_the_guides_printed_numbers_are_torchevals_formulas():
    logits = np.array([[-1.0, 0.5, 2.0, -0.3], [0.2, -2.0, 1.0, 0.0]], dtype=np.float32).astype(np.float64)
    labels = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    weights = np.array([[1.0, 2.0, 1.0, 0.5], [1.0, 1.0, 3.0, 1.0]])
    preds = np.array([0.1, 0.4, 0.35, 0.8, 0.35], dtype=np.float32).astype(np.float64)
    target, w = np.array([0, 0, 1, 1, 1]), np.array([1.0, 2.0, 1.0, 0.5, 3.0])
    clicks = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    scores = np.array([[0.3, 0.1, 0.6], [0.5, 0.2, 0.3], [0.2, 0.1, 0.7], [0.3, 0.3, 0.4]], dtype=np.float32)
    classes = np.array([2, 1, 1, 0])
    windowed_p, windowed_y = np.array([0.2, 0.7, 0.6, 0.4, 0.9, 0.3], dtype=np.float32), np.array([0, 1, 1, 0, 1, 1])
    auc_p, auc_y = np.array([0.2, 0.95, 0.6, 0.4, 0.9], dtype=np.float32), np.array([0, 1, 1, 0, 0])
    printed = [
        f"tensor([{tev_ne(logits, labels, weights, logits=True)[0]:.4f}, "
        f"{tev_ne(logits, labels, weights, logits=True)[1]:.4f}], dtype=torch.float64)",
        f"tensor({tev_ne(np.array([0.0, 1.0, 0.3, 1.0]), np.array([0.0, 1.0, 1.0, 0.0]))[0]:.4f}",
        f"tensor({tev_auroc(preds, target, w):.4f}",
        f"tensor({tev_auprc(preds, target):.4f}",
        f"'lifetime': {tev_ne(windowed_p, windowed_y)[0]:.4f}, 'window': {tev_ne(windowed_p[2:], windowed_y[2:])[0]:.4f}",
        f"{tev_auroc(auc_p[1:], auc_y[1:]):.2f} there",  # torcheval's newest 4 samples
        f"tensor({tev_auroc(auc_p[2:], auc_y[2:]):.4f}",  # ours: the second update alone
        f"tensor({(w * clicks).sum() / w.sum():.4f}",
        f"tensor({(w * preds).sum() / (w * target).sum():.4f}",
        f"tensor({tev_hit_rate(scores, classes, 2).mean():.4f}",
        f"tensor({tev_reciprocal_rank(scores, classes, None).mean():.4f}",
        f"tensor({196 / 1.75:.0f}.",
    ]
    missing = [text for text in printed if text not in GUIDE]
    assert not missing, missing
    # the pessimistic hit rate the guide prints first (row 4's true class tied with another: ranked below it)
    pessimistic = (scores >= scores[np.arange(4), classes][:, None]).sum(1) - 1
    assert f"tensor({(pessimistic < 2).mean():.4f}" in GUIDE
    assert re.search(
        r"tmx\.Windowed\(tmx\.NormalizedEntropy\(num_tasks=T\), window_size=2\*\*62, max_updates=M\)", GUIDE
    )


def test_the_guide_is_linked_from_the_index_and_the_nav():
    root = Path(__file__).resolve().parents[1]
    assert "migration_torcheval.md" in (root / "docs" / "index.md").read_text()
    assert "migration_torcheval.md" in (root / "mkdocs.yml").read_text()


# --- windows under DDP: torcheval's per-process windows joined by sync_and_compute --------------------------


def _windows_job(rank: int, world_size: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng([seed, rank])
    updates, samples = 2, 8  # torcheval's max_num_updates and max_num_samples, each rank's
    ne = tmx.Windowed(tmx.NormalizedEntropy(from_logits=True), window_size=2**62, max_updates=updates)
    auc = tmx.Windowed(tmx.AUC(), window_size=samples * world_size)
    seen = []
    for size in [3, 5, 2, 4] if rank == 0 else [4, 4, 4]:
        z, y = rng.normal(size=size), (rng.random(size) < 0.5).astype(np.float64)
        y[0], y[-1] = 1.0, 0.0
        seen.append((z.tolist(), y.tolist()))
        ne.update(torch.tensor(z), torch.tensor(y))
        auc.update(torch.tensor(1 / (1 + np.exp(-z))), torch.tensor(y))
    return {"ne": ne.compute()["window"].item(), "auc": auc.compute()["window"].item(), "seen": seen}


@pytest.mark.ddp
def test_under_ddp_max_updates_is_torchevals_per_rank_window_and_the_sample_window_scales(ddp_pool):
    results = ddp_pool.run(_windows_job, 0)
    assert results[0]["ne"] == results[1]["ne"] and results[0]["auc"] == results[1]["auc"]
    newest_updates = [update for out in results for update in out["seen"][-2:]]  # each rank's newest 2
    z = np.concatenate([np.array(u[0]) for u in newest_updates])
    y = np.concatenate([np.array(u[1]) for u in newest_updates])
    assert results[0]["ne"] == pytest.approx(tev_ne(z, y, logits=True)[0], rel=1e-12)
    # rank 1's batches of 4 divide its share of 8: its newest 8 samples, as torcheval's max_num_samples=8;
    # rank 0 (3, 5, 2, 4) keeps its newest whole updates within 8: 2 + 4 = 6 samples (torcheval: 8)
    kept = [out["seen"][-2:] for out in results]
    scores = np.concatenate([1 / (1 + np.exp(-np.array(u[0]))) for rows in kept for u in rows])
    labels = np.concatenate([np.array(u[1]) for rows in kept for u in rows])
    assert results[0]["auc"] == pytest.approx(tev_auroc(scores, labels), abs=1e-6)
