"""TorchRec's compute formulas, ported to numpy here, against ours metric by metric.

Each ``_tr_*`` function below is written for this test from reading TorchRec's metric files
(``torchrec/metrics/{ne,ne_positive,ne_with_recalibration,calibration,calibration_with_recalibration,
ctr,mse,mae,nmse,weighted_avg,average,accuracy,precision,recall,cali_free_ne,unweighted_ne,
segmented_ne,num_positive_samples,tensor_weighted_avg,multi_label_precision,hindsight_target_pr,
auc,auprc}.py`` of meta-pytorch/torchrec, the 1.9-era files that register the 37 metrics of
``REC_METRICS_MAPPING``): the same eta (1e-12) and clamps, the same zero-weight fallbacks (``0``
where TorchRec guards a division, ``nan`` where it does not), bits for the log loss, TorchRec's
float32 thresholds and float32 AUC inputs. Nothing here calls the package's kernels.

The data is adversarial per task (one ``(T, N)`` batch): tied scores, a task of one class only, a
task whose weights are all zero, a task of positives only, a base rate of 1e-6 and weights of 1e12.
Where TorchRec's formula is defined ours must equal it; where TorchRec returns a fallback (0, 0.5,
1.0 or a huge NE for a single class or no weight) ours is ``nan`` with an ``UndefinedMetricWarning``:
the "undefined values" difference that docs/migration_torchrec.md lists. Every other difference has
a test of its own below that names the documented reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

ETA = 1e-12
NAMES = ("ties", "negatives_only", "zero_weight", "positives_only", "rare", "huge_weights")


def _edge_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(T, N)`` labels, predictions, weights: one task per edge case in ``NAMES``."""
    rng = np.random.default_rng(20261207)
    n = 64
    p = rng.choice([0.05, 0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 1 - 1e-6], size=(len(NAMES), n))
    y = (rng.random((len(NAMES), n)) < 0.4).astype(np.float64)
    w = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], size=(len(NAMES), n))
    y[0, :2], w[0, :2] = (1.0, 0.0), 1.0  # both classes, tied scores throughout
    y[1] = 0.0
    w[2] = 0.0
    y[3] = 1.0
    y[4], w[4] = 0.0, 1e6 / (n - 1)  # one positive of weight 1 among 1e6 of negative weight
    y[4, 7], w[4, 7] = 1.0, 1.0
    w[5] = rng.choice([1e12, 1.0, 0.0], size=n)
    y[5, :2], w[5, :2] = (0.0, 1.0), 1e12
    return y, p, w


def _run(metric: Any, y: np.ndarray, p: np.ndarray, w: np.ndarray | None, **update: Any) -> Any:
    weights = None if w is None else torch.tensor(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        metric.update(torch.tensor(p), torch.tensor(y), weights, **update)
        return metric.compute()


# ----------------------------------------------------------------------------- TorchRec's formulas, in numpy


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def wrapped(*args: Any, **kwargs: Any) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapped


def _guarded(zero: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """TorchRec's ``torch.where(den == 0, 0.0, num / den)``."""
    with np.errstate(all="ignore"):
        return np.where(zero, 0.0, num / den)


def _cross_entropy_bits(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    q = np.clip(p, ETA, 1 - ETA)
    return -w * y * np.log2(q) - w * (1 - y) * np.log2(1 - q)


def _entropy_norm(mean: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    m = np.clip(mean, ETA, 1 - ETA)
    return -pos * np.log2(m) - neg * np.log2(1 - m)


@_quiet
def _tr_ne(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    pos, neg = (w * y).sum(-1), (w * (1 - y)).sum(-1)
    mean = pos / np.maximum(w.sum(-1), ETA)
    return _cross_entropy_bits(y, p, w).sum(-1) / _entropy_norm(mean, pos, neg)


@_quiet
def _tr_logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _cross_entropy_bits(y, p, w).sum(-1) / np.maximum((w * y).sum(-1) + (w * (1 - y)).sum(-1), ETA)


@_quiet
def _tr_ne_positive(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    pos, neg = (w * y).sum(-1), (w * (1 - y)).sum(-1)
    mean = pos / np.maximum(w.sum(-1), ETA)
    return (-w * y * np.log2(np.clip(p, ETA, 1 - ETA))).sum(-1) / _entropy_norm(mean, pos, neg)


def _tr_recalibrate(p: np.ndarray, c: float) -> np.ndarray:
    return p / (p + (1.0 - p) / c)


@_quiet
def _tr_cali_free_ne(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    total, pos = w.sum(-1), (w * y).sum(-1)
    mean_p = (w * p).sum(-1) / total
    return _tr_ne(y, p, w) / (-pos * np.log2(mean_p) - (total - pos) * np.log2(1 - mean_p))


def _tr_ctr(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * y).sum(-1), w.sum(-1))


def _tr_calibration(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded((w * y).sum(-1) <= 0, (w * p).sum(-1), (w * y).sum(-1))


def _tr_mse(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * (y - p) ** 2).sum(-1), w.sum(-1))


def _tr_rmse(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.sqrt(_tr_mse(y, p, w))


@_quiet
def _tr_r_squared(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = (w * y * y).sum(-1) - (w * y).sum(-1) ** 2 / w.sum(-1)
    return np.where(total == 0, 1.0, 1.0 - (w * (y - p) ** 2).sum(-1) / total)


def _tr_mae(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * np.abs(y - p)).sum(-1), w.sum(-1))


def _tr_nmse(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    baseline = _tr_mse(y, np.ones_like(p), w)  # its state `const_pred_error_sum`: the prediction 1
    return _guarded(baseline == 0, _tr_mse(y, p, w), baseline)


def _tr_nrmse(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    baseline = _tr_rmse(y, np.ones_like(p), w)
    return _guarded(baseline == 0, _tr_rmse(y, p, w), baseline)


@_quiet
def _tr_weighted_avg(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w * p).sum(-1) / w.sum(-1)  # no guard: 0/0 is nan in TorchRec too


def _tr_label_average(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * y).sum(-1), w.sum(-1))


def _tr_prediction_average(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * p).sum(-1), w.sum(-1))


def _tr_accuracy(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float = 0.5) -> np.ndarray:
    return _guarded(w.sum(-1) == 0, (w * ((p >= t) == y)).sum(-1), w.sum(-1))


def _tr_precision(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float = 0.5) -> np.ndarray:
    tp, fp = (w * (p >= t) * y).sum(-1), (w * (p >= t) * (1 - y)).sum(-1)
    return _guarded(tp + fp == 0, tp, tp + fp)


def _tr_recall(y: np.ndarray, p: np.ndarray, w: np.ndarray, t: float = 0.5) -> np.ndarray:
    tp, fn = (w * (p >= t) * y).sum(-1), (w * (p <= t) * y).sum(-1)  # `<=`: its threshold bug
    return _guarded(tp + fn == 0, tp, tp + fn)


def _tr_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Trapezoids over the cumulative (FP, TP) weight of the rows in sort order (float32 inputs)."""
    out = []
    for yt, pt, wt in zip(y.astype(np.float32), p.astype(np.float32), w.astype(np.float32)):
        order = np.argsort(-pt, kind="stable")
        fp = np.cumsum(wt[order] * (1 - yt[order]), dtype=np.float64)
        tp = np.cumsum(wt[order] * yt[order], dtype=np.float64)
        area = np.sum((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1]) / 2)
        out.append(0.5 if fp[-1] * tp[-1] == 0 else area / fp[-1] / tp[-1])
    return np.array(out)


def _ap_of_points(tp: np.ndarray, fp: np.ndarray) -> float:
    """TorchRec's step integral over thresholds given cumulative TP/FP from the top score down."""
    with np.errstate(all="ignore"):
        precision = np.append((tp / (tp + fp))[::-1], 1.0)
        recall = np.append((tp / tp[-1])[::-1], 0.0)
    precision, recall = np.nan_to_num(precision, nan=1.0), np.nan_to_num(recall, nan=0.0)
    return float(-np.sum((recall[1:] - recall[:-1]) * precision[:-1]))


def _tr_exact_auprc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = []
    for yt, pt, wt in zip(y, p.astype(np.float32), w):
        order = np.argsort(-pt, kind="stable")
        last_of_tie = np.append(np.diff(pt[order]) != 0, True)
        tp = np.cumsum(wt[order] * yt[order])[last_of_tie]
        fp = np.cumsum(wt[order] * (1 - yt[order]))[last_of_tie]
        out.append(_ap_of_points(tp, fp))
    return np.array(out)


def _tr_binned_auprc(y: np.ndarray, p: np.ndarray, w: np.ndarray, num_bins: int = 1000) -> np.ndarray:
    """Lifetime AUPRC: float32 ``p * num_bins`` floored into histograms; no signal is 0.5."""
    bins = np.clip((p.astype(np.float32) * np.float32(num_bins)).astype(np.int64), 0, num_bins - 1)
    out = []
    for yt, bt, wt in zip(y, bins, w):
        pos = np.bincount(bt, weights=wt * yt, minlength=num_bins)
        neg = np.bincount(bt, weights=wt * (1 - yt), minlength=num_bins)
        value = _ap_of_points(np.cumsum(pos[::-1]), np.cumsum(neg[::-1]))
        out.append(0.5 if pos.sum() == 0 or neg.sum() == 0 else value)
    return np.array(out)


def _tr_hindsight(y: np.ndarray, p: np.ndarray, w: np.ndarray, target: float) -> tuple[float, float, float]:
    """One task: 1000 float32 thresholds; the first whose precision reaches the target, else the last."""
    thresholds = np.linspace(0, 1, 1000, dtype=np.float32).astype(np.float64)
    above = p[None, :] >= thresholds[:, None]
    tp, fp = (above * w * y).sum(-1), (above * w * (1 - y)).sum(-1)
    fn = ((p[None, :] <= thresholds[:, None]) * w * y).sum(-1)
    precision = _guarded(tp + fp == 0, tp, tp + fp)
    reached = np.flatnonzero(precision >= target)
    j = int(reached[0]) if reached.size else 999
    return float(thresholds[j]), float(precision[j]), float(_guarded(tp[j] + fn[j] == 0, tp[j], tp[j] + fn[j]))


# ----------------------------------------------------------------------------- pointwise metrics

# name: (ours, TorchRec's port, where TorchRec returns a fallback instead of a value)
_SINGLE_CLASS = ("negatives_only", "zero_weight", "positives_only")
POINTWISE: dict[str, tuple[Callable[[int], Any], Callable[..., np.ndarray], tuple[str, ...]]] = {
    "ne": (tmx.NormalizedEntropy, _tr_ne, _SINGLE_CLASS),
    "logloss": (lambda t: tmx.LogLoss(t, unit="bits"), _tr_logloss, ("zero_weight",)),
    "ne_positive": (tmx.NEPositive, _tr_ne_positive, _SINGLE_CLASS),
    "unweighted_ne": (tmx.NormalizedEntropy, _tr_ne, ("negatives_only", "positives_only")),
    "cali_free_ne": (lambda t: tmx.CalibrationFreeNE(t, torchrec_scaling=True), _tr_cali_free_ne, _SINGLE_CLASS),
    "ctr": (tmx.CTR, _tr_ctr, ("zero_weight",)),
    "calibration": (tmx.Calibration, _tr_calibration, ("negatives_only", "zero_weight")),
    "mse": (tmx.WeightedMSE, _tr_mse, ("zero_weight",)),
    "rmse": (tmx.WeightedRMSE, _tr_rmse, ("zero_weight",)),
    "r_squared": (tmx.WeightedR2, _tr_r_squared, _SINGLE_CLASS),
    "mae": (tmx.WeightedMAE, _tr_mae, ("zero_weight",)),
    "nmse": (tmx.WeightedNMSE, _tr_nmse, ("zero_weight", "positives_only")),
    "nrmse": (tmx.WeightedNRMSE, _tr_nrmse, ("zero_weight", "positives_only")),
    "weighted_avg": (tmx.WeightedAverage, _tr_weighted_avg, ()),
    "label_average": (tmx.LabelAverage, _tr_label_average, ("zero_weight",)),
    "prediction_average": (tmx.WeightedAverage, _tr_prediction_average, ("zero_weight",)),
    "accuracy": (tmx.WeightedAccuracy, _tr_accuracy, ("zero_weight",)),
    "precision": (tmx.WeightedPrecision, _tr_precision, ("zero_weight",)),
    # threshold 0.4 sits on no score, so TorchRec's `p <= t` false negatives are the right ones
    "recall": (
        lambda t: tmx.WeightedRecall(t, threshold=0.4),
        lambda y, p, w: _tr_recall(y, p, w, 0.4),
        _SINGLE_CLASS[:2],
    ),
    "auc": (tmx.AUC, _tr_auc, _SINGLE_CLASS),
    "auprc_window": (tmx.AUPRC, _tr_exact_auprc, ("negatives_only", "zero_weight")),
    "auprc_lifetime": (
        lambda t: tmx.AUPRC(t, num_bins=1000, bin_space="probability"),
        _tr_binned_auprc,
        _SINGLE_CLASS,
    ),
}


def _distinct(p: np.ndarray) -> np.ndarray:
    """The same scores moved apart by less than 1e-4, so that no two rows of a task tie."""
    offsets = np.random.default_rng(1).permutation(p.shape[-1]) / p.shape[-1]
    return p * 0.999 + 1e-4 * offsets


# TorchRec's AUC orders tied scores as its sort leaves them (documented): compared on distinct scores
_UNTIED = ("auc",)
# documented: the AP of positives only is 1 here (every threshold's precision is 1), TorchRec's binned one 0.5
_OURS_INSTEAD = {("auprc_lifetime", "positives_only"): 1.0}


@pytest.mark.parametrize("name", sorted(POINTWISE))
def test_ours_equals_torchrecs_formula_where_defined_and_is_nan_where_torchrec_falls_back(name):
    make, port, fallback = POINTWISE[name]
    y, p, w = _edge_batch()
    p = _distinct(p) if name in _UNTIED else p
    weights = np.ones_like(w) if name == "unweighted_ne" else w
    ours = _run(make(len(NAMES)), y, p, None if name == "unweighted_ne" else w).numpy()
    theirs = port(y, p, weights)
    for i, task in enumerate(NAMES):
        if (name, task) in _OURS_INSTEAD:
            assert ours[i] == _OURS_INSTEAD[name, task], (name, task, ours[i], theirs[i])
        elif task in fallback:
            assert np.isnan(ours[i]), (name, task, ours[i], theirs[i])
        else:
            np.testing.assert_allclose(ours[i], theirs[i], rtol=1e-6, atol=1e-12, err_msg=f"{name} {task}")


def test_auc_equals_torchrecs_trapezoids_without_ties_and_gives_a_tie_half_credit():
    """On tied scores TorchRec's value depends on its sort's order of the tied rows; ours is the half-credit one."""
    y, _, w = _edge_batch()
    distinct = np.random.default_rng(3).permutation(np.linspace(0.01, 0.99, y.shape[1]))[None, :].repeat(len(NAMES), 0)
    ours = _run(tmx.AUC(len(NAMES)), y, distinct, w).numpy()
    np.testing.assert_allclose(ours[0], _tr_auc(y, distinct, w)[0], rtol=1e-6)
    p, ones = np.array([[0.5, 0.5, 0.2]]), np.ones((1, 3))
    positive_first, positive_second = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])
    assert {_tr_auc(positive_first, p, ones)[0], _tr_auc(positive_second, p, ones)[0]} <= {0.5, 1.0}
    assert _run(tmx.AUC(), positive_first, p, ones).item() == pytest.approx(0.75)
    assert _run(tmx.AUC(), positive_second, p, ones).item() == pytest.approx(0.75)


@pytest.mark.parametrize("c", [0.1, 0.5, 2.0])
def test_recalibrated_ne_and_calibration_map_scores_as_torchrec(c):
    y, p, w = _edge_batch()
    q = _tr_recalibrate(p, c)
    ne = _run(tmx.RecalibratedNE(len(NAMES), recalibration_coefficient=c), y, p, w).numpy()
    cal = _run(tmx.RecalibratedCalibration(len(NAMES), recalibration_coefficient=c), y, p, w).numpy()
    for i, task in enumerate(NAMES):
        if task in _SINGLE_CLASS:
            assert np.isnan(ne[i])
        else:
            np.testing.assert_allclose(ne[i], _tr_ne(y, q, w)[i], rtol=1e-6)
        if task not in ("negatives_only", "zero_weight"):
            np.testing.assert_allclose(cal[i], _tr_calibration(y, q, w)[i], rtol=1e-9)


def test_counters_equal_torchrecs_sums():
    y, p, w = _edge_batch()
    np.testing.assert_allclose(_run(tmx.SumWeights(len(NAMES)), y, p, w).numpy(), w.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(_run(tmx.NumPositiveSamples(len(NAMES)), y, p, w).numpy(), (w * y).sum(-1), rtol=1e-12)
    wsp = _run(tmx.WeightedSumPredictions(len(NAMES)), y, p, w).numpy()
    np.testing.assert_allclose(wsp, (w * p).sum(-1), rtol=1e-12)


def test_soft_labels_agree_where_torchrec_and_we_both_take_them():
    """NE, log loss, NE+, calibration-free NE, CTR, calibration, regression errors and averages read soft labels."""
    rng = np.random.default_rng(11)
    y, p, w = rng.random((2, 40)), rng.uniform(0.01, 0.99, (2, 40)), rng.choice([0.0, 1.0, 2.5], (2, 40))
    for name in ("ne", "logloss", "ne_positive", "cali_free_ne", "ctr", "calibration", "mse", "mae", "nmse"):
        make, port, _ = POINTWISE[name]
        np.testing.assert_allclose(_run(make(2), y, p, w).numpy(), port(y, p, w), rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("cls", [tmx.WeightedAccuracy, tmx.WeightedPrecision, tmx.WeightedRecall, tmx.AUC, tmx.AUPRC])
def test_soft_labels_that_torchrec_takes_are_refused_here_naming_the_target(cls):
    """TorchRec's accuracy counts a soft label as wrong, its precision/recall/AUC weight the row by it: refused."""
    with pytest.raises(ValueError, match="`target`"):
        cls().update(torch.tensor([0.2, 0.8]), torch.tensor([0.3, 1.0]))


def test_recall_at_a_score_equal_to_the_threshold_differs_by_torchrecs_bug():
    y, p, w = np.array([[1.0, 1.0, 0.0]]), np.array([[0.5, 0.9, 0.5]]), np.ones((1, 3))
    assert _run(tmx.WeightedRecall(), y, p, w).item() == 1.0
    assert _tr_recall(y, p, w).item() == pytest.approx(2 / 3)  # the 0.5 positive counted as TP and FN


def test_r_squared_of_constant_labels_and_cali_free_ne_of_one_class_are_nan_not_torchrecs_values():
    y, p, w = _edge_batch()
    assert _tr_r_squared(y, p, w)[1] == 1.0 and np.isnan(_run(tmx.WeightedR2(len(NAMES)), y, p, w)[1].item())
    cfne = _tr_cali_free_ne(y, p, w)[[1, 3]]  # TorchRec's huge NE over the bits of the mean prediction
    assert np.all(np.isfinite(cfne)) and np.all(cfne > 0)
    ours = _run(tmx.CalibrationFreeNE(len(NAMES), torchrec_scaling=True), y, p, w)
    assert torch.isnan(ours[[1, 3]]).all()
    unscaled = _run(tmx.CalibrationFreeNE(len(NAMES)), y, p, w)  # our own definition is defined there
    assert torch.isfinite(unscaled[[1, 3]]).all()


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.9])
def test_hindsight_equals_torchrecs_threshold_scan_off_the_threshold_grid(target):
    """Scores off TorchRec's grid (so its `p <= t` false negatives are right); one task, as TorchRec."""
    rng = np.random.default_rng(5)
    grid = np.linspace(0, 1, 1000)
    p = np.clip(grid[rng.integers(0, 999, 200)] + 1 / 1998, 0, 1)  # halfway between thresholds
    y, w = (rng.random(200) < p).astype(np.float64), rng.choice([0.0, 1.0, 3.0], 200)
    ours = _run(tmx.HindsightTargetPR(target_precision=target), y, p, w)
    threshold, precision, recall = _tr_hindsight(y, p, w, target)
    assert ours["threshold"].item() == pytest.approx(threshold, abs=1e-7)  # TorchRec's float32 grid
    assert ours["precision"].item() == pytest.approx(precision, rel=1e-9)
    assert ours["recall"].item() == pytest.approx(recall, rel=1e-9)


def test_multi_label_precision_equals_torchrecs_bit_decoding():
    rng = np.random.default_rng(9)
    preds, labels, w = rng.integers(0, 8, 50), rng.integers(0, 8, 50), rng.choice([0.0, 1.0, 2.0], 50)
    bits = 2 ** np.arange(3)
    pb, lb = (preds[:, None] // bits) % 2, (labels[:, None] // bits) % 2
    tp, fp = (w[:, None] * pb * lb).sum(0), (w[:, None] * pb * (1 - lb)).sum(0)
    metric = tmx.MultiLabelPrecision(3)
    metric.update(torch.tensor(preds), torch.tensor(labels), torch.tensor(w))
    np.testing.assert_allclose(metric.compute().numpy(), _guarded(tp + fp == 0, tp, tp + fp), rtol=1e-12)


def test_tensor_weighted_average_per_task_weighting_as_torchrec():
    rng = np.random.default_rng(2)
    v, w = rng.random((2, 30)), rng.choice([0.0, 1.0, 4.0], (2, 30))
    metric = tmx.TensorWeightedAverage(2, weighted=[True, False])
    metric.update(torch.tensor(v), torch.tensor(w))
    expected = np.array([(v[0] * w[0]).sum() / w[0].sum(), v[1].mean()])  # unweighted: plain mean
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)


def test_segmented_ne_and_logloss_per_group_equal_torchrecs_per_group_formula():
    y, p, w = _edge_batch()
    keep = [0, 5]
    y, p, w = y[keep], p[keep], w[keep]
    groups = np.arange(y.shape[1]) % 3
    ne = tmx.Segmented(tmx.NormalizedEntropy(2), num_segments=3)
    logloss = tmx.Segmented(tmx.LogLoss(2, unit="bits"), num_segments=3)
    for metric in (ne, logloss):
        metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(w), segments=torch.tensor(groups))
    for g in range(3):
        m = groups == g
        np.testing.assert_allclose(ne.compute()[:, g].numpy(), _tr_ne(y[:, m], p[:, m], w[:, m]), rtol=1e-6)
        expected = _tr_logloss(y[:, m], p[:, m], w[:, m])
        np.testing.assert_allclose(logloss.compute()[:, g].numpy(), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- through from_torchrec_config

_C = 0.25  # recalibration_coefficient
# (namespace, TorchRec's metric name, its formula): every key of a RecMetricDef with default arguments but these
_CONFIG_KEYS: list[tuple[str, str, Callable[..., np.ndarray]]] = [
    ("ne", "ne", _tr_ne),
    ("ne", "logloss", _tr_logloss),
    ("ne_positive", "ne_positive", _tr_ne_positive),
    ("recalibrated_ne", "ne", lambda y, p, w: _tr_ne(y, _tr_recalibrate(p, _C), w)),
    ("recalibrated_calibration", "calibration", lambda y, p, w: _tr_calibration(y, _tr_recalibrate(p, _C), w)),
    ("serving_ne", "ne", _tr_ne),
    ("serving_calibration", "calibration", _tr_calibration),
    ("cali_free_ne", "cali_free_ne", _tr_cali_free_ne),
    ("ctr", "ctr", _tr_ctr),
    ("calibration", "calibration", _tr_calibration),
    ("mse", "mse", _tr_mse),
    ("mse", "rmse", _tr_rmse),
    ("mse", "r_squared", _tr_r_squared),
    ("mae", "mae", _tr_mae),
    ("nmse", "nmse", _tr_nmse),
    ("nmse", "nrmse", _tr_nrmse),
    ("weighted_avg", "weighted_avg", _tr_weighted_avg),
    ("average", "label_average", _tr_label_average),
    ("average", "prediction_average", _tr_prediction_average),
    ("accuracy", "accuracy", _tr_accuracy),
    ("precision", "precision", _tr_precision),
    ("sum_weights", "sum_weights", lambda y, p, w: w.sum(-1)),
    ("num_positive_samples", "num_positive_samples", lambda y, p, w: (w * y).sum(-1)),
    ("weighted_sum_predictions", "weighted_sum_predictions", lambda y, p, w: (w * p).sum(-1)),
    ("auc", "auc", _tr_auc),
    ("auprc", "auprc", _tr_binned_auprc),
]
_ARGUMENTS = {
    "ne": {"include_logloss": True},
    "mse": {"include_r_squared": True},
    "recalibrated_ne": {"recalibration_coefficient": _C},
    "recalibrated_calibration": {"recalibration_coefficient": _C},
}


def test_from_torchrec_config_keys_hold_torchrecs_values_lifetime_and_window():
    y, p, w = _edge_batch()
    p = _distinct(p)  # for TorchRec's AUC, whose tied scores count as its sort leaves them
    tasks = [dict(name=n, label_name=f"{n}_y", prediction_name=f"{n}_p", weight_name=f"{n}_w") for n in NAMES]
    indices = list(range(len(NAMES)))
    rec_metrics = {
        namespace: {"rec_task_indices": indices, "window_size": 1000, "arguments": _ARGUMENTS.get(namespace, {})}
        for namespace, _, _ in _CONFIG_KEYS
    }
    module = tmx.RecMetricModule.from_torchrec_config({"rec_tasks": tasks, "rec_metrics": rec_metrics})
    step = {}
    for i, n in enumerate(NAMES):
        step |= {f"{n}_y": torch.tensor(y[i]), f"{n}_p": torch.tensor(p[i]), f"{n}_w": torch.tensor(w[i])}
    module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        values = module.compute()
    undefined = {"negatives_only", "zero_weight", "positives_only"}
    for namespace, name, port in _CONFIG_KEYS:
        theirs = port(y, p, w)
        for i, task in enumerate(NAMES):
            parts = ("window",) if name == "auc" else ("lifetime", "window")
            for part in parts:
                key = f"{namespace}-{task}|{part}_{name}"
                expected = _tr_exact_auprc(y, p, w)[i] if (name, part) == ("auprc", "window") else theirs[i]
                value = values.pop(key).item()
                if (name, task) == ("auprc", "positives_only") and part == "lifetime":
                    assert value == 1.0 and expected == 0.5  # documented: no signal, TorchRec's binned 0.5
                elif np.isnan(value):  # our undefined values: only where TorchRec falls back
                    assert task in undefined, (key, expected)
                else:
                    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-12, err_msg=key)
        if namespace.startswith("serving_"):  # TorchRec's count_nonzero(weights), lifetime only
            for i, task in enumerate(NAMES):
                assert values.pop(f"{namespace}-{task}|total_examples").item() == np.count_nonzero(w[i])
    assert not [key for key in values if "throughput" not in key], values.keys()  # no key TorchRec lacks


# ----------------------------------------------------------------------------- rankings, sessions, classes


def _tr_ndcg_batch(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, sessions: np.ndarray, k: int, exponential: bool, drop_single: bool
) -> tuple[float, int]:
    """One batch of one task: (sum over sessions of max-weight x (1 - NDCG), number of sessions)."""
    total, count = 0.0, 0
    for s in np.unique(sessions):
        m = sessions == s
        if drop_single and m.sum() < 2:
            continue
        cut = min(k, int(m.sum())) if k > 0 else int(m.sum())
        gain = (2.0 ** y[m] - 1.0) if exponential else y[m]
        discount = 1.0 / np.log2(np.arange(2, cut + 2))
        observed = (gain[np.argsort(-p[m], kind="stable")][:cut] * discount).sum()
        ideal = (np.sort(gain)[::-1][:cut] * discount).sum()
        ndcg = observed / (ideal if ideal != 0 else 1e-6)
        total += (1.0 - ndcg) * w[m].max()
        count += 1
    return total, count


@pytest.mark.parametrize(("k", "exponential", "drop_single"), [(-1, False, False), (2, True, False), (3, False, True)])
def test_ndcg_with_torchrecs_options_equals_its_per_batch_sessions(k, exponential, drop_single):
    """Distinct scores (TorchRec's tie order is its sort's); sessions of 1 to 5 rows; some without relevance."""
    rng = np.random.default_rng(17)
    metric = tmx.NDCG(
        k=None if k < 0 else k,
        exponential_gain=exponential,
        report_as_loss=True,
        empty_target_action="zero",
        queries_complete_per_batch=True,
        remove_single_length_sessions=drop_single,
    )
    total, count = 0.0, 0
    for _ in range(3):  # the same session ids again in each batch: new sessions for TorchRec
        sessions = np.repeat(np.arange(6), rng.integers(1, 6, 6))
        n = sessions.size
        y, p = rng.choice([0.0, 0.0, 1.0, 2.0], n), rng.permutation(n) / n + 0.01
        y[sessions == 0] = 0.0
        metric.update(torch.tensor(p), torch.tensor(y), indexes=torch.tensor(sessions))
        batch_total, batch_count = _tr_ndcg_batch(y, p, np.ones(n), sessions, k, exponential, drop_single)
        total, count = total + batch_total, count + batch_count
    assert metric.compute().item() == pytest.approx(total / count, rel=1e-9)


def test_ndcg_session_weight_scaling_is_torchrecs_no_mean_as_documented():
    """TorchRec: sum of max-weight x value over the number of sessions (weights 3 give a loss of 3)."""
    y, p, sessions = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.9, 0.1, 0.8, 0.2]), np.array([0, 0, 1, 1])
    total, count = _tr_ndcg_batch(y, p, np.full(4, 3.0), sessions, -1, False, False)
    loss = 1 - 1 / np.log2(3)
    assert total / count == pytest.approx(3 * loss)  # above 1 for weights 3 in TorchRec
    metric = tmx.NDCG(report_as_loss=True, empty_target_action="zero", queries_complete_per_batch=True)
    metric.update(torch.tensor(p), torch.tensor(y), indexes=torch.tensor(sessions), weights=torch.full((4,), 3.0))
    assert metric.compute().item() == pytest.approx(loss)  # ours: the weighted mean


def _tr_session_counts(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, sessions: np.ndarray, k: int, rank_labels: bool
) -> tuple[float, float, float]:
    """TP, FP, FN of one batch: rank = rows of the session scoring strictly higher; top-k predicted positive."""
    same = sessions[:, None] == sessions[None, :]
    hit = (same & (p[None, :] > p[:, None])).sum(-1) < k
    if rank_labels:  # `run_ranking_of_labels`: the session's top-k labels are its positives
        y = ((same & (y[None, :] > y[:, None])).sum(-1) < k).astype(np.float64)
    return (w * y * hit).sum(), (w * (1 - y) * hit).sum(), (w * y * ~hit).sum()


@pytest.mark.parametrize("rank_labels", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_session_precision_and_recall_micro_equal_torchrecs_pooled_counts_with_positive_weights(k, rank_labels):
    rng = np.random.default_rng(k)
    precision = tmx.SessionPrecisionAtK(k, average="micro", rank_labels=rank_labels)
    recall = tmx.SessionRecallAtK(k, average="micro", rank_labels=rank_labels)
    tp = fp = fn = 0.0
    for _ in range(3):
        sessions = np.repeat(np.arange(5), rng.integers(1, 7, 5))
        n = sessions.size
        y, p, w = (
            rng.choice([0.0, 0.0, 1.0, 3.0], n) if rank_labels else (rng.random(n) < 0.4).astype(float),
            rng.choice([0.2, 0.5, 0.5, 0.8], n),
            rng.choice([0.5, 1.0, 2.0], n),
        )
        for metric in (precision, recall):
            metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(sessions), torch.tensor(w))
        a, b, c = _tr_session_counts(y, p, w, sessions, k, rank_labels)
        tp, fp, fn = tp + a, fp + b, fn + c
    assert precision.compute().item() == pytest.approx(tp / (tp + fp), rel=1e-12)
    assert recall.compute().item() == pytest.approx(tp / (tp + fn), rel=1e-12)


def test_multiclass_recall_at_every_cutoff_equals_torchrecs_vector_without_ties():
    rng = np.random.default_rng(8)
    scores, classes, w = rng.random((40, 5)), rng.integers(0, 5, 40), rng.choice([0.0, 1.0, 2.0], 40)
    order = np.argsort(-scores, axis=-1)
    tp_at_k = np.array([(w * (order[:, : k + 1] == classes[:, None]).any(-1)).sum() for k in range(5)])
    for k in range(1, 6):
        metric = tmx.MulticlassRecallAtK(k=k, num_classes=5)
        metric.update(torch.tensor(scores), torch.tensor(classes), torch.tensor(w))
        assert metric.compute().item() == pytest.approx(tp_at_k[k - 1] / w.sum(), rel=1e-12)


def _tr_xauc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """One batch: weight of the pairs ordered alike by score and label, or tied in both, over all pairs."""
    dp, dy = np.sign(p[:, None] - p[None, :]), np.sign(y[:, None] - y[None, :])
    agree = (dp * dy > 0) | ((dp == 0) & (dy == 0))
    pair_w = np.triu(w[:, None] * w[None, :], 1)
    return float((pair_w * agree).sum() / pair_w.sum()) if pair_w.sum() else 0.0


def _tr_rauc(y: np.ndarray, p: np.ndarray) -> float:
    """Sorted by (score, label): one minus the share of label inversions among all n(n-1)/2 pairs; no weights."""
    labels = y[np.lexsort((y, p))]
    inversions = (np.triu(labels[:, None] > labels[None, :], 1)).sum()
    return 1.0 - inversions / (labels.size * (labels.size - 1) / 2)


def test_xauc_on_one_batch_equals_torchrecs_pair_count_with_ties_and_weights():
    rng = np.random.default_rng(21)
    y, p, w = (
        rng.choice([0.0, 1.0, 2.5, 4.0], 60),
        rng.choice([0.1, 0.2, 0.2, 0.7], 60),
        rng.choice([0.0, 1.0, 3.0], 60),
    )
    assert _run(tmx.XAUC(), y, p, w).item() == pytest.approx(_tr_xauc(y, p, w), rel=1e-12)


def test_rauc_equals_torchrecs_without_ties_and_weights_and_differs_as_documented_with_them():
    rng = np.random.default_rng(22)
    y, p = rng.permutation(50) * 0.5, rng.permutation(50) / 50
    assert _run(tmx.RegressionAUC(), y, p, None).item() == pytest.approx(_tr_rauc(y, p), rel=1e-12)
    y, p = np.array([0.0, 1.0, 1.0, 2.0]), np.array([0.1, 0.3, 0.5, 0.5])  # docs/pairwise_auc.md's example
    assert _tr_rauc(y, p) == 1.0 and _run(tmx.RegressionAUC(), y, p, None).item() == pytest.approx(0.9)


def _tr_grouped(per_group: Callable[..., np.ndarray], y, p, w, groups) -> np.ndarray:
    """TorchRec's grouped AUC/AUPRC: the plain mean over every group id present, whatever its rows."""
    return np.mean([per_group(y[:, groups == g], p[:, groups == g], w[:, groups == g]) for g in np.unique(groups)], 0)


@pytest.mark.parametrize(
    ("cls", "port"), [(tmx.GroupedAUC, _tr_auc), (tmx.GroupedAUPRC, _tr_exact_auprc)], ids=["gauc", "gauprc"]
)
def test_grouped_average_all_equals_torchrecs_mean_over_every_group(cls, port):
    """Groups of one class, of positives only, of zero weight only, and mixed ones (distinct scores)."""
    rng = np.random.default_rng(31)
    groups = np.repeat(np.arange(6), 7)
    y, p, w = (rng.random((2, 42)) < 0.5).astype(float), _distinct(rng.random((2, 42))), rng.choice([1.0, 2.0], (2, 42))
    y[:, groups == 0], y[:, groups == 1] = 0.0, 1.0
    w[:, groups == 2] = 0.0
    metric = cls(2, average_groups="all")
    metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(groups), torch.tensor(w))
    np.testing.assert_allclose(metric.compute().numpy(), _tr_grouped(port, y, p, w, groups), rtol=1e-6)


def test_ndcg_scale_by_weights_tensor_is_an_update_of_the_weighted_scores_and_labels():
    """TorchRec's ``scale_by_weights_tensor``: labels and scores times the weight, no max-weight factor."""
    rng = np.random.default_rng(23)
    sessions = np.repeat(np.arange(5), 4)
    y, p, w = rng.choice([0.0, 1.0, 2.0], 20), rng.permutation(20) / 20 + 0.01, rng.choice([0.5, 1.0, 2.0], 20)
    total, count = _tr_ndcg_batch(w * y, w * p, np.ones(20), sessions, -1, False, False)
    metric = tmx.NDCG(report_as_loss=True, empty_target_action="zero", queries_complete_per_batch=True)
    metric.update(torch.tensor(w * p), torch.tensor(w * y), indexes=torch.tensor(sessions))
    assert metric.compute().item() == pytest.approx(total / count, rel=1e-9)


def test_num_missing_labels_is_torchrecs_weighted_nan_count():
    rng = np.random.default_rng(4)
    y, p, w = rng.choice([0.0, 1.0, np.nan], (2, 30)), rng.random((2, 30)), rng.choice([0.0, 1.0, 2.5], (2, 30))
    expected = np.where(np.isnan(y), w, 0.0).sum(-1)
    np.testing.assert_allclose(_run(tmx.NumMissingLabels(2), y, p, w).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["log_loss", "serving_ae_loss"])
def test_the_two_recmetricenum_members_torchrec_registers_no_class_for_are_refused(name):
    config = {"rec_tasks": [{"name": "t"}], "rec_metrics": {name: {"rec_task_indices": [0]}}}
    with pytest.raises(ValueError, match=f"TorchRec metric '{name}' is not supported"):
        tmx.RecMetricModule.from_torchrec_config(config)
