"""Independent numeric audit of the less-used metrics against references written here from their definitions.

Each reference below is written from the metric's docstring (and TorchRec's definition where it
has one), in numpy/plain Python/scikit-learn, never from the package's kernels. The data is
adversarial on purpose: many tied scores, tiny base rates, one class only, zero-weight rows mixed
in, a task whose weights are all zero, weights near 1e12, tasks with different data, half and
bfloat16 inputs, and random batch splits (``update`` over chunks must equal one ``update``).

``AUDIT_EXAMPLES=400`` runs every property with more examples than the default 25 (the audit ran so).
Where a value differs from TorchRec's or from a naive formula on purpose (documented), the
reference follows the documentation and says so.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, top_k_accuracy_score

import torchmetrics_ext as tmx

SETTINGS = settings(
    max_examples=int(os.environ.get("AUDIT_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# a pool of scores with many ties, exact edges of uniform bins/thresholds and tiny values
TIED = [1e-6, 0.05, 0.1, 0.25, 0.3, 0.3, 0.5, 0.5, 0.5, 0.7, 0.75, 0.9, 1 - 1e-6]
WEIGHTS = [0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 1e12]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _quiet(fn: Callable, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@st.composite
def binary_batches(
    draw: st.DrawFn, max_n: int = 24, tasks: int | None = None, base_rate: bool = True, soft: bool = True
) -> dict:
    """``(T, N)`` probabilities (tied pool or uniform), labels (maybe one class), weights (maybe zero task)."""
    t = draw(st.sampled_from([1, 2, 3])) if tasks is None else tasks
    n = draw(st.integers(2, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["tied", "uniform", "tiny"]))
    if kind == "tied":
        p = rng.choice(TIED, size=(t, n))
    elif kind == "uniform":
        p = rng.uniform(0, 1, size=(t, n))
    else:
        p = 10.0 ** rng.uniform(-7, -1, size=(t, n))
    modes = ["mixed", "ones", "zeros", "rare"] if base_rate else ["mixed"]
    label_mode = draw(st.sampled_from([*modes, "soft"] if soft else modes))
    y = {
        "mixed": (rng.uniform(size=(t, n)) < 0.4).astype(float),
        "ones": np.ones((t, n)),
        "zeros": np.zeros((t, n)),
        "rare": (np.arange(n) == n - 1).astype(float) * np.ones((t, 1)),
        "soft": rng.choice([0.0, 0.25, 0.5, 1.0], size=(t, n)),
    }[label_mode]
    weighted = draw(st.booleans())
    w = rng.choice(WEIGHTS, size=(t, n)) if weighted else None
    if w is not None and t > 1 and draw(st.booleans()):
        w[draw(st.integers(0, t - 1))] = 0.0  # a task with no weight at all
    dtype = draw(st.sampled_from(DTYPES))
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=3))))
    return {"p": p, "y": y, "w": w, "dtype": dtype, "cuts": cuts, "tasks": t}


def _tensors(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray]:
    """Torch inputs and the float64 values the metric actually sees (after the dtype cast)."""
    preds = torch.tensor(case["p"]).to(case["dtype"])
    seen = preds.double().numpy()
    if case["dtype"] != torch.float64:
        # a half cast may round a tiny score to 0 or 1 - 1e-6 to 1: keep probabilities strictly inside
        seen = np.clip(seen, 0.0, 1.0)
    target = torch.tensor(case["y"])
    weights = None if case["w"] is None else torch.tensor(case["w"])
    return preds, target, weights, seen


def _chunks(tensors: Sequence[torch.Tensor | None], cuts: list[int]) -> list[list[torch.Tensor | None]]:
    bounds = [0, *cuts, tensors[0].shape[-1]]
    return [[None if x is None else x[..., a:b] for x in tensors] for a, b in zip(bounds[:-1], bounds[1:])]


def _run_split(make: Callable, tensors: Sequence[torch.Tensor | None], cuts: list[int]):
    """``compute`` after one update and after the split updates; both must agree."""
    one = make()
    _quiet(one.update, *tensors)
    many = make()
    for chunk in _chunks(tensors, cuts):
        _quiet(many.update, *chunk)
    return _quiet(one.compute), _quiet(many.compute)


def _assert_close(actual, expected, rtol: float = 1e-9, atol: float = 1e-12, what: str = "") -> None:
    if isinstance(expected, dict):
        for key in expected:
            _assert_close(actual[key], expected[key], rtol, atol, f"{what}[{key}]")
        return
    a = np.asarray(actual.double().numpy() if isinstance(actual, torch.Tensor) else actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    np.testing.assert_allclose(a, e.reshape(a.shape), rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _w(case: dict) -> np.ndarray:
    return np.ones_like(case["p"]) if case["w"] is None else case["w"]


# ----------------------------------------------------------------------------- Reliability


def ref_reliability(p: np.ndarray, y: np.ndarray, w: np.ndarray, num_bins: int) -> dict:
    """Bin b holds e_b <= p < e_(b+1) for the float edges e_b = b/B (the last bin also p = 1)."""
    edges = [b / num_bins for b in range(num_bins + 1)]  # each correctly rounded, as documented
    idx = np.array([max(b for b in range(num_bins) if x >= edges[b]) if x >= 0 else 0 for x in p])
    weight = np.bincount(idx, weights=w, minlength=num_bins)
    pred = np.bincount(idx, weights=w * p, minlength=num_bins)
    lab = np.bincount(idx, weights=w * y, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = weight <= 0
        return {
            "mean_prediction": np.where(empty, np.nan, pred / np.where(empty, 1, weight)),
            "label_rate": np.where(empty, np.nan, lab / np.where(empty, 1, weight)),
            "weight": weight,
        }


@SETTINGS
@given(case=binary_batches(), num_bins=st.sampled_from([1, 3, 4, 10, 20]))
def test_reliability_matches_exact_bins(case, num_bins):
    preds, target, weights, seen = _tensors(case)
    w = _w(case)
    t = case["tasks"]
    expected = [ref_reliability(seen[i], case["y"][i], w[i], num_bins) for i in range(t)]
    expected = {key: np.stack([e[key] for e in expected]) for key in expected[0]}
    one, many = _run_split(
        lambda: tmx.Reliability(num_tasks=t, num_bins=num_bins), [preds, target, weights], case["cuts"]
    )
    _assert_close(one, expected, rtol=1e-12, what="one update")
    _assert_close(many, expected, rtol=1e-12, what="split updates")


def test_reliability_matches_sklearn_calibration_curve_off_the_edges():
    """Unit weights and no score on a bin edge (sklearn puts an edge score in the lower bin, we in the upper)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(size=5000)
    p = p[np.abs(p * 10 - np.round(p * 10)) > 1e-9]
    y = (rng.uniform(size=p.size) < p**2).astype(float)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    out = tmx.functional.reliability(torch.tensor(p), torch.tensor(y), num_bins=10)
    kept = out["weight"] > 0
    np.testing.assert_allclose(out["label_rate"][kept].numpy(), prob_true, rtol=1e-12)
    np.testing.assert_allclose(out["mean_prediction"][kept].numpy(), prob_pred, rtol=1e-12)


# ----------------------------------------------------------------------------- HindsightTargetPR


def ref_hindsight(p, y, w, target_precision, num_thresholds) -> tuple[float, float, float]:
    thresholds = [j / (num_thresholds - 1) for j in range(num_thresholds)]  # correctly rounded
    total_pos = float(np.sum(w * y))
    chosen = None
    for j, t in enumerate(thresholds):
        on = p >= t
        tp, fp = float(np.sum(w * y * on)), float(np.sum(w * (1 - y) * on))
        if (tp / (tp + fp) if tp + fp > 0 else 0.0) >= target_precision:  # TorchRec: precision 0 where none reaches t
            chosen = j
            break
    j = num_thresholds - 1 if chosen is None else chosen
    on = p >= thresholds[j]
    tp, fp = float(np.sum(w * y * on)), float(np.sum(w * (1 - y) * on))
    precision = tp / (tp + fp) if tp + fp > 0 else math.nan
    recall = tp / total_pos if total_pos > 0 else math.nan
    return thresholds[j], precision, recall


@SETTINGS
@given(
    case=binary_batches(),
    target_precision=st.sampled_from([0.0, 0.3, 0.5, 0.75, 1.0]),
    num_thresholds=st.sampled_from([2, 5, 11, 21, 1000]),
)
def test_hindsight_matches_threshold_scan(case, target_precision, num_thresholds):
    preds, target, weights, seen = _tensors(case)
    w, t = _w(case), case["tasks"]
    refs = np.array([ref_hindsight(seen[i], case["y"][i], w[i], target_precision, num_thresholds) for i in range(t)])
    expected = {"threshold": refs[:, 0], "precision": refs[:, 1], "recall": refs[:, 2]}

    def make():
        return tmx.HindsightTargetPR(num_tasks=t, target_precision=target_precision, num_thresholds=num_thresholds)

    one, many = _run_split(make, [preds, target, weights], case["cuts"])
    _assert_close(one, expected, rtol=1e-9, what="one update")
    _assert_close(many, expected, rtol=1e-9, what="split updates")


# ----------------------------------------------------------------------------- MultiLabelPrecision


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    t=st.sampled_from([1, 2]),
    n=st.integers(1, 30),
    num_labels=st.sampled_from([1, 3, 9, 62]),
)
def test_multi_label_precision_per_bit(seed, t, n, num_labels):
    rng = np.random.default_rng(seed)
    high = 2**num_labels
    p = [[int(rng.integers(0, high)) for _ in range(n)] for _ in range(t)]
    y = [[int(rng.integers(0, high)) for _ in range(n)] for _ in range(t)]
    w = rng.choice(WEIGHTS, size=(t, n))
    expected = np.full((t, num_labels), np.nan)
    for task in range(t):
        for bit in range(num_labels):
            tp = sum(w[task, i] for i in range(n) if p[task][i] >> bit & 1 and y[task][i] >> bit & 1)
            fp = sum(w[task, i] for i in range(n) if p[task][i] >> bit & 1 and not y[task][i] >> bit & 1)
            if tp + fp > 0:
                expected[task, bit] = tp / (tp + fp)
    metric = tmx.MultiLabelPrecision(num_labels=num_labels, num_tasks=t)
    _quiet(metric.update, torch.tensor(p), torch.tensor(y), torch.tensor(w))
    _assert_close(_quiet(metric.compute), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- session precision / recall


def ref_session(p, y, s, w, k, which, average):
    """Per session: rows of weight 0 are absent; rank = rows scoring strictly higher; top k predicted."""
    tp_all = fp_all = fn_all = 0.0
    values = []
    for sid in np.unique(s):
        rows = (s == sid) & (w > 0)
        ps, ys, ws = p[rows], y[rows], w[rows]
        rank = np.array([np.sum(ps > x) for x in ps], dtype=int)
        on = rank < k
        tp, fp, fn = np.sum(ws * ys * on), np.sum(ws * (1 - ys) * on), np.sum(ws * ys * ~on)
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        denom = tp + fp if which == "precision" else tp + fn
        if denom > 0:
            values.append(tp / denom)
    if average == "micro":
        denom = tp_all + fp_all if which == "precision" else tp_all + fn_all
        return tp_all / denom if denom > 0 else math.nan
    return float(np.mean(values)) if values else math.nan


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    t=st.sampled_from([1, 2]),
    n=st.integers(2, 30),
    k=st.sampled_from([1, 2, 3, 50]),
    which=st.sampled_from(["precision", "recall"]),
    average=st.sampled_from(["session", "micro"]),
    weighted=st.booleans(),
)
def test_session_metrics_match_per_session_loop(seed, t, n, k, which, average, weighted):
    rng = np.random.default_rng(seed)
    p = rng.choice(TIED, size=(t, n))
    y = (rng.uniform(size=(t, n)) < 0.4).astype(float)
    s = np.sort(rng.integers(0, max(1, n // 3), size=n))
    w = rng.choice(WEIGHTS, size=(t, n)) if weighted else np.ones((t, n))
    expected = [ref_session(p[i], y[i], s, w[i], k, which, average) for i in range(t)]
    cls = tmx.SessionPrecisionAtK if which == "precision" else tmx.SessionRecallAtK
    metric = cls(k=k, num_tasks=t, average=average)
    # split only between sessions (a session must lie within one batch)
    starts = [0, *[int(i) for i in np.flatnonzero(np.diff(s)) + 1 if rng.uniform() < 0.5], n]
    for a, b in zip(starts[:-1], starts[1:]):
        _quiet(
            metric.update,
            torch.tensor(p[:, a:b]),
            torch.tensor(y[:, a:b]),
            torch.tensor(s[a:b]),
            torch.tensor(w[:, a:b]) if weighted else None,
        )
    _assert_close(_quiet(metric.compute), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- XAUC / RegressionAUC


def ref_pairs(p, y, w):
    rauc_num = rauc_den = xauc_num = xauc_den = 0.0
    n = len(p)
    for i in range(n):
        for j in range(i + 1, n):
            ww = w[i] * w[j]
            dp, dy = np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
            xauc_den += ww
            xauc_num += ww * (dp == dy)
            if dy != 0:
                rauc_den += ww
                rauc_num += ww * (1.0 if dp == dy else 0.5 if dp == 0 else 0.0)
    return (
        rauc_num / rauc_den if rauc_den > 0 else math.nan,
        xauc_num / xauc_den if xauc_den > 0 else math.nan,
    )


@SETTINGS
@given(case=binary_batches(max_n=20, base_rate=False), graded=st.booleans())
def test_pairwise_auc_matches_pair_loop(case, graded):
    preds, target, weights, seen = _tensors(case)
    y = case["y"]
    if graded:  # watch-time-like labels with ties
        y = np.floor(case["p"] * 4) * (y + 1)
        target = torch.tensor(y)
    preds = preds.float() if case["dtype"] in (torch.float16, torch.bfloat16) else preds
    w, t = _w(case), case["tasks"]
    refs = np.array([ref_pairs(seen[i], y[i], w[i]) for i in range(t)])
    for col, cls in enumerate([tmx.RegressionAUC, tmx.XAUC]):
        one, many = _run_split(lambda cls=cls: cls(num_tasks=t), [preds, target, weights], case["cuts"])
        _assert_close(one, refs[:, col], rtol=1e-12, atol=1e-14, what=cls.__name__)
        _assert_close(many, refs[:, col], rtol=1e-12, atol=1e-14, what=cls.__name__ + " split")


# ----------------------------------------------------------------------------- NE family


ETA = 1e-12


def _ce(p, y, w):
    return -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p)))


def _base_ce(y, w, eta=ETA):
    """NE's normaliser; ``nan`` unless both classes have label weight (the documented policy)."""
    pos, neg = np.sum(w * y), np.sum(w * (1 - y))
    if pos <= 0 or neg <= 0:
        return math.nan
    rate = np.clip(pos / np.sum(w), eta, 1 - eta)
    return -(pos * np.log(rate) + neg * np.log1p(-rate))


def _ratio(num, den):
    return num / den if np.isfinite(den) and den > 0 else math.nan


def ref_ne_positive(p, y, w):
    pc = np.clip(p, ETA, 1 - ETA)
    return _ratio(-np.sum(w * y * np.log(pc)), _base_ce(y, w))


def ref_cali_free(p, y, w):
    total = np.sum(w)
    if total <= 0:
        return math.nan
    pc = np.clip(p, ETA, 1 - ETA)
    # the mean prediction and its complement each from its own sum (1 - mean would lose the digits
    # of a mean near 1), clamped as the predictions are
    mean = np.clip(np.sum(w * p) / total, ETA, 1 - ETA)
    complement = np.clip(np.sum(w * (1 - p)) / total, 1 - (1 - ETA), 1 - ETA)
    return _ratio(_ce(pc, y, w), _constant_ce(mean, complement, y, w))


def _constant_ce(mean: float, complement: float, y, w) -> float:
    """Cross-entropy (nats) of always predicting ``mean``; the log of a value near 1 from its complement."""
    log_mean = np.log1p(-complement) if mean > 0.5 else np.log(mean)
    log_complement = np.log1p(-mean) if complement > 0.5 else np.log(complement)
    pos, neg = np.sum(w * y), np.sum(w * (1 - y))
    return -(pos * log_mean if pos > 0 else 0.0) - (neg * log_complement if neg > 0 else 0.0)


def ref_recal_ne(p, y, w, c):
    q = np.clip(c * p / (c * p + 1 - p), ETA, 1 - ETA)
    return _ratio(_ce(q, y, w), _base_ce(y, w)) if np.sum(w) > 0 else math.nan


def ref_recal_cal(p, y, w, c):
    q = c * p / (c * p + 1 - p)
    return _ratio(np.sum(w * q), np.sum(w * y))


def ref_log_loss(p, y, w, unit):
    total = np.sum(w)
    value = _ce(np.clip(p, ETA, 1 - ETA), y, w) / total if total > 0 else math.nan
    return value / math.log(2) if unit == "bits" else value


NE_FAMILY = {
    "ne_positive": (lambda t: tmx.NEPositive(num_tasks=t), ref_ne_positive),
    "cali_free": (lambda t: tmx.CalibrationFreeNE(num_tasks=t), ref_cali_free),
    "recal_ne": (
        lambda t: tmx.RecalibratedNE(num_tasks=t, recalibration_coefficient=0.25),
        lambda *a: ref_recal_ne(*a, 0.25),
    ),
    "recal_ne_1": (lambda t: tmx.RecalibratedNE(num_tasks=t), lambda *a: ref_recal_ne(*a, 1.0)),
    "recal_cal": (
        lambda t: tmx.RecalibratedCalibration(num_tasks=t, recalibration_coefficient=3.0),
        lambda *a: ref_recal_cal(*a, 3.0),
    ),
    "log_loss_bits": (lambda t: tmx.LogLoss(num_tasks=t, unit="bits"), lambda *a: ref_log_loss(*a, "bits")),
    "log_loss_nats": (lambda t: tmx.LogLoss(num_tasks=t, unit="nats"), lambda *a: ref_log_loss(*a, "nats")),
}


@pytest.mark.parametrize("name", sorted(NE_FAMILY))
@SETTINGS
@given(case=binary_batches())
def test_ne_family_matches_formulas(name, case):
    make, ref = NE_FAMILY[name]
    preds, target, weights, seen = _tensors(case)
    w, t = _w(case), case["tasks"]
    expected = [ref(seen[i], case["y"][i], w[i]) for i in range(t)]
    one, many = _run_split(lambda: make(t), [preds, target, weights], case["cuts"])
    _assert_close(one, expected, rtol=1e-9, what=name)
    _assert_close(many, expected, rtol=1e-9, what=name + " split")


# ----------------------------------------------------------------------------- NMSE / NRMSE


@pytest.mark.parametrize("baseline", ["one", "mean"])
@pytest.mark.parametrize("root", [False, True])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), t=st.sampled_from([1, 2]), n=st.integers(2, 30), weighted=st.booleans())
def test_nmse_baselines(baseline, root, seed, t, n, weighted):
    rng = np.random.default_rng(seed)
    y = rng.choice([0.0, 0.5, 1.0, 2.0, 7.0], size=(t, n))
    p = y + rng.normal(size=(t, n))
    # zero-weight rows mixed in; every other weight of one scale, since the baseline's error comes from
    # float64 label sums (documented: nan below ~1e-6 of the label size, see the 1e12 case below)
    w = (
        rng.choice([0.0, 0.0, 0.5, 1.0, 2.0, 3.0], size=(t, n)) * rng.choice([1.0, 1e12])
        if weighted
        else np.ones((t, n))
    )
    expected = []
    for i in range(t):
        total = np.sum(w[i])
        c = 1.0 if baseline == "one" else (np.sum(w[i] * y[i]) / total if total > 0 else math.nan)
        value = _ratio(np.sum(w[i] * (p[i] - y[i]) ** 2), np.sum(w[i] * (y[i] - c) ** 2))
        expected.append(math.sqrt(value) if root and not math.isnan(value) else value)
    cls = tmx.WeightedNRMSE if root else tmx.WeightedNMSE
    metric = cls(num_tasks=t, baseline=baseline)
    _quiet(metric.update, torch.tensor(p), torch.tensor(y), torch.tensor(w) if weighted else None)
    _assert_close(_quiet(metric.compute), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- counters


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), t=st.sampled_from([1, 2, 3]), n=st.integers(1, 30), count_zero=st.booleans())
def test_num_missing_labels_and_tensor_weighted_average(seed, t, n, count_zero):
    rng = np.random.default_rng(seed)
    y = rng.choice([0.0, 1.0, np.nan], size=(t, n))
    w = rng.choice(WEIGHTS, size=(t, n))
    missing = np.isnan(y)
    expected = missing.sum(-1).astype(float) if count_zero else np.sum(w * missing, -1)
    metric = tmx.NumMissingLabels(num_tasks=t, count_zero_weight=count_zero)
    metric.update(torch.zeros(t, n), torch.tensor(y), torch.tensor(w))
    _assert_close(metric.compute(), expected, rtol=1e-15)

    values = rng.normal(size=(t, n)) * 1e3
    flags = [bool(x) for x in rng.integers(0, 2, size=t)]
    expected = []
    for i in range(t):
        ww = w[i] if flags[i] else np.ones(n)
        expected.append(_ratio(np.sum(ww * values[i]), np.sum(ww)) if np.sum(ww) > 0 else math.nan)
    avg = tmx.TensorWeightedAverage(num_tasks=t, weighted=flags)
    _quiet(avg.update, torch.tensor(values), torch.tensor(w))
    _assert_close(_quiet(avg.compute), expected, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- MulticlassRecallAtK


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    c=st.integers(2, 7),
    k=st.integers(1, 8),
    weighted=st.booleans(),
)
def test_multiclass_recall_pessimistic_ties(seed, n, c, k, weighted):
    rng = np.random.default_rng(seed)
    s = rng.choice([0.0, 0.1, 0.5, 0.5, 1.0], size=(n, c))
    y = rng.integers(0, c, size=n)
    w = rng.choice(WEIGHTS, size=n) if weighted else np.ones(n)
    truth = s[np.arange(n), y]
    rank = (s > truth[:, None]).sum(1) + (s == truth[:, None]).sum(1) - 1
    expected = _ratio(np.sum(w * (rank < k)), np.sum(w))
    metric = tmx.MulticlassRecallAtK(k=k, num_classes=c)
    _quiet(metric.update, torch.tensor(s), torch.tensor(y), torch.tensor(w) if weighted else None)
    _assert_close(_quiet(metric.compute), expected, rtol=1e-12)


def test_multiclass_recall_matches_sklearn_without_ties():
    rng = np.random.default_rng(1)
    s, y, w = rng.normal(size=(300, 6)), rng.integers(0, 6, size=300), rng.uniform(0, 3, size=300)
    for k in range(1, 6):
        metric = tmx.MulticlassRecallAtK(k=k, num_classes=6)
        metric.update(torch.tensor(s), torch.tensor(y), torch.tensor(w))
        want = top_k_accuracy_score(y, s, k=k, sample_weight=w, labels=list(range(6)))
        assert metric.compute().item() == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- GroupedAUPRC


@SETTINGS
@given(case=binary_batches(max_n=40, base_rate=False, tasks=1, soft=False), weight_groups=st.booleans())
def test_grouped_auprc_is_mean_of_sklearn_ap(case, weight_groups):
    preds, target, weights, seen = _tensors(case)
    rng = np.random.default_rng(len(case["p"][0]))
    n = case["p"].shape[1]
    g = rng.integers(0, 4, size=n)
    w = _w(case)[0]
    y = case["y"][0]
    values, sizes = [], []
    for gid in np.unique(g):
        rows = (g == gid) & (w > 0)
        if np.sum(w[rows] * y[rows]) > 0 and np.sum(w[rows] * (1 - y[rows])) > 0:
            values.append(average_precision_score(y[rows], seen[0][rows], sample_weight=w[rows]))
            sizes.append(np.sum(w[rows]))
    expected = np.average(values, weights=sizes if weight_groups else None) if values else math.nan
    metric = tmx.GroupedAUPRC(weight_groups=weight_groups)
    for chunk in _chunks([preds[0], target[0], torch.tensor(g), None if weights is None else weights[0]], case["cuts"]):
        _quiet(metric.update, *chunk)
    _assert_close(_quiet(metric.compute), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- MAP / RPrecision / F1AtK


def ref_query(scores, rel, name, k):
    order = np.lexsort((rel, -scores))  # score descending, ties: relevance ascending (pessimistic)
    hits = (rel[order] > 0).astype(float)
    num_rel = hits.sum()
    if num_rel == 0:
        return None
    if name == "map":
        cut = len(hits) if k is None else k
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        return float(np.sum((prec * hits)[:cut]) / num_rel)
    if name == "rprec":
        return float(hits[: int(num_rel)].sum() / num_rel)
    return float(2 * hits[:k].sum() / (k + num_rel))


@pytest.mark.parametrize(
    ("name", "k", "make"),
    [
        ("map", None, lambda: tmx.MAP()),
        ("map", 3, lambda: tmx.MAP(k=3)),
        ("rprec", None, lambda: tmx.RPrecision()),
        ("f1", 2, lambda: tmx.F1AtK(k=2)),
        ("f1", 20, lambda: tmx.F1AtK(k=20)),
    ],
)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), weighted=st.booleans(), dtype=st.sampled_from(DTYPES))
def test_ranking_matches_brute_force_with_ties(name, k, make, seed, n, weighted, dtype):
    rng = np.random.default_rng(seed)
    scores = torch.tensor(rng.choice([0.1, 0.3, 0.3, 0.5, 0.7, 0.9, 0.9], size=n) + rng.normal(size=n) * 1e-3).to(dtype)
    rel = rng.choice([0, 0, 1, 2], size=n)
    q = rng.integers(0, 5, size=n)
    w = rng.choice([0.0, 1.0, 2.0, 1e12], size=n) if weighted else np.ones(n)
    seen = scores.double().numpy()
    num = den = 0.0
    for qid in np.unique(q):
        rows = q == qid
        value = ref_query(seen[rows], rel[rows], name, k)
        wq = float(np.max(w[rows]))
        if value is not None and wq > 0:
            num, den = num + wq * value, den + wq
    expected = num / den if den > 0 else math.nan
    metric = make()
    perm = rng.permutation(n)  # row order and batch split must not matter
    half = n // 2
    for rows in (perm[:half], perm[half:]):
        if rows.size:
            _quiet(
                metric.update,
                scores[rows],
                torch.tensor(rel[rows]),
                torch.tensor(q[rows]),
                weights=torch.tensor(w[rows]) if weighted else None,
            )
    _assert_close(_quiet(metric.compute), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- TowerQPS


class FakeClock:
    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 12), warmup=st.integers(1, 4), t=st.sampled_from([1, 2]))
def test_tower_qps_counts_examples_after_warmup(seed, steps, warmup, t):
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.01, 2.0, size=steps)
    times = np.concatenate([[100.0], 100.0 + np.cumsum(gaps)])[:steps]
    counts = rng.integers(0, 50, size=(steps, t))
    metric = tmx.TowerQPS(num_tasks=t, warmup_steps=warmup, clock=FakeClock(list(times) * 3))
    for step in range(steps):
        metric.update(num_examples=torch.tensor(counts[step], dtype=torch.float64))
    # the first `warmup` updates count nothing; each later one its examples over the time since the previous
    timed = range(warmup, steps)
    seconds = sum(times[i] - times[i - 1] for i in timed)
    examples = counts[list(timed)].sum(0) if len(timed) else np.zeros(t)
    expected = examples / seconds if seconds > 0 else np.zeros(t)
    _assert_close(_quiet(metric.compute), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- from_logits variants


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _ce_logits(z, y, w):
    return -np.sum(w * (y * _log_sigmoid(z) + (1 - y) * _log_sigmoid(-z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


LOGIT_FAMILY = {
    "ne_positive": (
        lambda t: tmx.NEPositive(num_tasks=t, from_logits=True),
        lambda z, y, w: _ratio(-np.sum(w * y * _log_sigmoid(z)), _base_ce(y, w)),
    ),
    "cali_free": (
        lambda t: tmx.CalibrationFreeNE(num_tasks=t, from_logits=True),
        lambda z, y, w: (
            _ratio(_ce_logits(z, y, w), _ce(np.full_like(z, np.sum(w * _sigmoid(z)) / np.sum(w)), y, w))
            if np.sum(w) > 0
            else math.nan
        ),
    ),
    "recal_ne": (
        lambda t: tmx.RecalibratedNE(num_tasks=t, recalibration_coefficient=0.25, from_logits=True),
        lambda z, y, w: _ratio(_ce_logits(z + math.log(0.25), y, w), _base_ce(y, w)),
    ),
    "recal_cal": (
        lambda t: tmx.RecalibratedCalibration(num_tasks=t, recalibration_coefficient=3.0, from_logits=True),
        lambda z, y, w: _ratio(np.sum(w * _sigmoid(z + math.log(3.0))), np.sum(w * y)),
    ),
    "log_loss_bits": (
        lambda t: tmx.LogLoss(num_tasks=t, unit="bits", from_logits=True),
        lambda z, y, w: _ce_logits(z, y, w) / np.sum(w) / math.log(2) if np.sum(w) > 0 else math.nan,
    ),
}


@pytest.mark.parametrize("name", sorted(LOGIT_FAMILY))
@SETTINGS
@given(case=binary_batches(), scale=st.sampled_from([1.0, 30.0]))
def test_ne_family_from_logits_matches_log_sigmoid_formulas(name, case, scale):
    make, ref = LOGIT_FAMILY[name]
    case = {**case, "p": (case["p"] - 0.5) * scale}  # tied logits, some large
    preds, target, weights, _ = _tensors(case)
    seen = preds.double().numpy()
    w, t = _w(case), case["tasks"]
    expected = [ref(seen[i], case["y"][i], w[i]) for i in range(t)]
    one, many = _run_split(lambda: make(t), [preds, target, weights], case["cuts"])
    _assert_close(one, expected, rtol=1e-9, what=name)
    _assert_close(many, expected, rtol=1e-9, what=name + " split")


@SETTINGS
@given(case=binary_batches(), num_thresholds=st.sampled_from([2, 11, 1000]), num_bins=st.sampled_from([1, 7, 10]))
def test_hindsight_and_reliability_from_logits_bin_the_sigmoid(case, num_thresholds, num_bins):
    case = {**case, "p": (case["p"] - 0.5) * 8}
    preds, target, weights, _ = _tensors(case)
    probs = 1 / (1 + np.exp(-preds.double().numpy()))  # the documented rule: binned after the sigmoid
    w, t = _w(case), case["tasks"]
    refs = np.array([ref_hindsight(probs[i], case["y"][i], w[i], 0.5, num_thresholds) for i in range(t)])
    metric = tmx.HindsightTargetPR(num_tasks=t, num_thresholds=num_thresholds, from_logits=True)
    _quiet(metric.update, preds, target, weights)
    _assert_close(_quiet(metric.compute), {"threshold": refs[:, 0], "precision": refs[:, 1], "recall": refs[:, 2]})
    expected = [ref_reliability(probs[i], case["y"][i], w[i], num_bins) for i in range(t)]
    expected = {key: np.stack([e[key] for e in expected]) for key in expected[0]}
    rel = tmx.Reliability(num_tasks=t, num_bins=num_bins, from_logits=True)
    _quiet(rel.update, preds, target, weights)
    _assert_close(_quiet(rel.compute), expected, rtol=1e-12)


@SETTINGS
@given(
    case=binary_batches(max_n=40, tasks=1, soft=False),
    weight_groups=st.booleans(),
    average_groups=st.sampled_from(["defined", "all"]),
    complete=st.booleans(),
)
def test_grouped_auprc_modes_match_sklearn_ap_per_group(case, weight_groups, average_groups, complete):
    preds, target, weights, seen = _tensors(case)
    n = case["p"].shape[1]
    g = np.sort(np.random.default_rng(n).integers(0, 5, size=n))  # sorted: batches may hold whole groups
    w, y = _w(case)[0], case["y"][0]
    values, sizes = [], []
    for gid in np.unique(g):
        rows = (g == gid) & (w > 0)
        pos, neg = np.sum(w[rows] * y[rows]), np.sum(w[rows] * (1 - y[rows]))
        if pos > 0 and neg > 0:
            values.append(average_precision_score(y[rows], seen[0][rows], sample_weight=w[rows]))
        elif average_groups == "all":
            # documented: every group counts here, one of zero-weight rows only too (0, of weight 0
            # under weight_groups), as TorchRec averages over every group
            values.append(1.0 if pos > 0 else 0.0)
        else:
            continue
        sizes.append(pos + neg)
    expected = np.average(values, weights=sizes if weight_groups else None) if values else math.nan
    metric = tmx.GroupedAUPRC(
        weight_groups=weight_groups, average_groups=average_groups, groups_complete_per_batch=complete
    )
    starts = [0, *[int(i) for i in np.flatnonzero(np.diff(g)) + 1], n] if complete else [0, *case["cuts"], n]
    for a, b in zip(starts[:-1], starts[1:]):
        _quiet(
            metric.update,
            preds[0, a:b],
            target[0, a:b],
            torch.tensor(g[a:b]),
            None if weights is None else weights[0, a:b],
        )
    _assert_close(_quiet(metric.compute), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- forward and Windowed


WINDOW_FAMILY = {
    **{
        name: (make, ref)
        for name, (make, ref) in NE_FAMILY.items()
        if name in ("ne_positive", "cali_free", "log_loss_bits")
    },
    "hindsight": (
        lambda t: tmx.HindsightTargetPR(num_tasks=t, num_thresholds=11),
        lambda p, y, w: dict(zip(("threshold", "precision", "recall"), ref_hindsight(p, y, w, 0.5, 11))),
    ),
    "reliability": (lambda t: tmx.Reliability(num_tasks=t, num_bins=4), lambda p, y, w: ref_reliability(p, y, w, 4)),
    "xauc": (lambda t: tmx.XAUC(num_tasks=t), lambda p, y, w: ref_pairs(p, y, w)[1]),
    "rauc": (lambda t: tmx.RegressionAUC(num_tasks=t), lambda p, y, w: ref_pairs(p, y, w)[0]),
}


def _stack(values: list):
    if isinstance(values[0], dict):
        return {key: np.stack([v[key] for v in values]) for key in values[0]}
    return np.array(values)


@pytest.mark.parametrize("name", sorted(WINDOW_FAMILY))
@SETTINGS
@given(case=binary_batches(base_rate=False), window_size=st.integers(1, 12))
def test_forward_and_window_match_the_reference_on_their_rows(name, case, window_size):
    make, ref = WINDOW_FAMILY[name]
    preds, target, weights, seen = _tensors(case)
    w, y, t = _w(case), case["y"], case["tasks"]
    n = seen.shape[1]

    def reference(a: int, b: int):
        return _stack([ref(seen[i, a:b], y[i, a:b], w[i, a:b]) for i in range(t)])

    metric = tmx.Windowed(make(t), window_size=window_size)
    bounds = [0, *case["cuts"], n]
    updates = []  # (first row, size) of each update the window takes
    for a, b in zip(bounds[:-1], bounds[1:]):
        batch = _quiet(metric, preds[:, a:b], target[:, a:b], None if weights is None else weights[:, a:b])
        _assert_close(batch["lifetime"], reference(a, b), rtol=1e-9, what=f"{name} forward [{a}:{b}]")
        # DESIGN: a batch whose weights are all zero changes nothing, so it takes no room in the window
        if b > a and not (case["w"] is not None and np.all(case["w"][:, a:b] == 0)):
            updates.append((a, b - a))
    # the window: the newest whole updates summing to at most window_size, or the newest window_size rows
    # of the newest one; rows of all-zero-weight updates between them add nothing to the reference's sums
    kept, start = 0, n
    for first, size in reversed(updates):
        if kept + size > window_size:
            break
        kept, start = kept + size, first
    if kept == 0:  # (no such update: every row's weight is zero, the same as none)
        start = updates[-1][0] + updates[-1][1] - window_size if updates else 0
    values = _quiet(metric.compute)
    _assert_close(values["lifetime"], reference(0, n), rtol=1e-9, what=f"{name} lifetime")
    _assert_close(values["window"], reference(start, n), rtol=1e-9, what=f"{name} window [{start}:]")


def ref_torchrec_cali_free(p, y, w):
    """TorchRec 1.9's ``cali_free_ne``: NE over the summed log2 bits of predicting the mean prediction.

    The mean is clamped to ``[eta, 1 - eta]`` as the predictions are (documented; TorchRec leaves it
    unclamped, so a mean of exactly 1 or 0, e.g. half-precision scores that all round to 1, gives
    it an infinite denominator: 0, or ``nan`` when one class has no weight).
    """
    pc = np.clip(p, ETA, 1 - ETA)
    total = np.sum(w)
    ne = _ratio(_ce(pc, y, w), _base_ce(y, w))  # the log base cancels in NE
    mean = np.clip(np.sum(w * p) / total, ETA, 1 - ETA)
    complement = np.clip(np.sum(w * (1 - p)) / total, 1 - (1 - ETA), 1 - ETA)
    return ne / (_constant_ce(mean, complement, y, w) / math.log(2))


@SETTINGS
@given(case=binary_batches(base_rate=False))
def test_calibration_free_ne_torchrec_scaling_is_torchrecs_formula(case):
    preds, target, weights, seen = _tensors(case)
    w, t = _w(case), case["tasks"]
    expected = [ref_torchrec_cali_free(seen[i], case["y"][i], w[i]) if np.sum(w[i]) > 0 else math.nan for i in range(t)]
    one, many = _run_split(
        lambda: tmx.CalibrationFreeNE(num_tasks=t, torchrec_scaling=True), [preds, target, weights], case["cuts"]
    )
    _assert_close(one, expected, rtol=1e-9)
    _assert_close(many, expected, rtol=1e-9)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    c=st.integers(2, 6),
    k=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
)
def test_multiclass_recall_of_half_scores_ranks_the_rounded_values(seed, n, c, k, dtype):
    rng = np.random.default_rng(seed)
    scores = torch.tensor(rng.uniform(0, 1, size=(n, c)) * 1.001).to(dtype)  # half rounding makes ties
    s = scores.double().numpy()
    y = rng.integers(0, c, size=n)
    truth = s[np.arange(n), y]
    rank = (s > truth[:, None]).sum(1) + (s == truth[:, None]).sum(1) - 1
    metric = tmx.MulticlassRecallAtK(k=k, num_classes=c)
    metric.update(scores, torch.tensor(y))
    _assert_close(metric.compute(), np.mean(rank < k), rtol=1e-12)


@pytest.mark.parametrize("average", ["session", "micro"])
@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1), n=st.integers(2, 30), k=st.sampled_from([1, 2, 4]), dtype=st.sampled_from(DTYPES)
)
def test_session_metrics_of_half_scores_rank_the_rounded_values(average, seed, n, k, dtype):
    rng = np.random.default_rng(seed)
    scores = torch.tensor(rng.uniform(0, 1, size=n)).to(dtype)
    p = scores.double().numpy()
    y = (rng.uniform(size=n) < 0.5).astype(float)
    s = rng.integers(0, 4, size=n)  # interleaved sessions within one batch
    w = rng.choice(WEIGHTS, size=n)
    for which, cls in (("precision", tmx.SessionPrecisionAtK), ("recall", tmx.SessionRecallAtK)):
        metric = cls(k=k, average=average)
        _quiet(metric.update, scores, torch.tensor(y), torch.tensor(s), torch.tensor(w))
        _assert_close(_quiet(metric.compute), ref_session(p, y, s, w, k, which, average), rtol=1e-12, what=which)


@pytest.mark.parametrize(
    ("name", "k", "make"),
    [
        ("map", None, lambda: tmx.MAP()),
        ("map", 2, lambda: tmx.MAP(k=2)),
        ("rprec", None, lambda: tmx.RPrecision()),
        ("f1", 3, lambda: tmx.F1AtK(k=3)),
        ("f1_adaptive", 3, lambda: tmx.F1AtK(k=3, adaptive_k=True)),
    ],
)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), q=st.integers(1, 6), width=st.integers(1, 7), dtype=st.sampled_from(DTYPES))
def test_padded_ranking_with_mask_matches_brute_force(name, k, make, seed, q, width, dtype):
    rng = np.random.default_rng(seed)
    scores = torch.tensor(rng.choice([-np.inf, -0.0, 0.0, 0.3, 0.3, 0.7, np.inf], size=(q, width))).to(dtype)
    rel = rng.choice([0, 1, 3], size=(q, width))
    mask = rng.uniform(size=(q, width)) < 0.8
    seen = scores.double().numpy()
    values = []
    for i in range(q):
        rows = mask[i]
        if not rows.any():
            continue
        sc, rl = seen[i][rows], rel[i][rows]
        if name == "f1_adaptive":
            order = np.lexsort((rl, -sc))
            hits = (rl[order] > 0).astype(float)
            num_rel = hits.sum()
            if num_rel == 0:
                continue
            prec = hits[:k].sum() / min(k, len(hits))
            rec = hits[:k].sum() / num_rel
            values.append(2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
            continue
        value = ref_query(sc, rl, name, k)
        if value is not None:
            values.append(value)
    expected = float(np.mean(values)) if values else math.nan
    metric = make()
    _quiet(metric.update, scores, torch.tensor(rel), mask=torch.tensor(mask))
    _assert_close(_quiet(metric.compute), expected, rtol=1e-9)


def test_log_loss_equals_sklearn_and_ratios_ignore_weight_scale():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(3)
    p, y, w = (
        rng.uniform(0.01, 0.99, size=(2, 500)),
        (rng.uniform(size=(2, 500)) < 0.3).astype(float),
        rng.uniform(0, 5, size=(2, 500)),
    )
    metric = tmx.LogLoss(num_tasks=2)
    metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(w))
    want = [log_loss(y[i], p[i], sample_weight=w[i], labels=[0, 1]) for i in range(2)]
    _assert_close(metric.compute(), want, rtol=1e-12)
    for name, (make, _) in NE_FAMILY.items():
        values = []
        for scale in (1.0, 1e12, 2.0**-40):
            m = make(2)
            m.update(torch.tensor(p), torch.tensor(y), torch.tensor(w * scale))
            values.append(m.compute())
        _assert_close(values[1], values[0].numpy(), rtol=1e-12, what=name)
        _assert_close(values[2], values[0].numpy(), rtol=1e-12, what=name)


def test_a_million_rows_of_weight_1e12_at_a_base_rate_of_1e_6():
    """Huge counts: sums near 1e18 and one positive per million, fed in ten chunks."""
    rng = np.random.default_rng(4)
    n = 1_000_000
    p = 10.0 ** rng.uniform(-8, -4, size=n)
    y = np.zeros(n)
    y[rng.integers(0, n)] = 1.0
    w = np.full(n, 1e12)
    w[rng.integers(0, n, size=1000)] = 0.0  # zero-weight rows mixed in
    checks = {**{k: v for k, v in NE_FAMILY.items() if k != "recal_cal"}}
    for name, (make, ref) in checks.items():
        metric = make(1)
        for a in range(0, n, n // 10):
            metric.update(
                torch.tensor(p[a : a + n // 10]), torch.tensor(y[a : a + n // 10]), torch.tensor(w[a : a + n // 10])
            )
        _assert_close(_quiet(metric.compute), ref(p, y, w), rtol=1e-9, what=name)
    metric = tmx.HindsightTargetPR(num_thresholds=1000, target_precision=1e-6)
    metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(w))
    # every score is below 1/999: only threshold 0 is reached by anything
    want = dict(zip(("threshold", "precision", "recall"), ref_hindsight(p, y, w, 1e-6, 1000)))
    _assert_close(_quiet(metric.compute), want, rtol=1e-9)


@pytest.mark.parametrize("num_labels", [9, 62])
def test_multi_label_precision_of_a_large_batch_takes_the_byte_path_and_agrees(num_labels):
    """Over 2**15 (task, sample, label) bits a batch is counted by byte histograms: the same per-bit sums."""
    rng = np.random.default_rng(num_labels)
    t, n = 2, 4000
    p = rng.integers(0, 2**num_labels, size=(t, n), dtype=np.int64)
    y = np.where(rng.uniform(size=(t, n)) < 0.5, p, rng.integers(0, 2**num_labels, size=(t, n), dtype=np.int64))
    w = rng.choice(WEIGHTS, size=(t, n))
    bits = np.arange(num_labels)
    on_p, on_y = (p[..., None] >> bits) & 1, (y[..., None] >> bits) & 1
    tp = np.einsum("tn,tnl->tl", w, (on_p & on_y).astype(float))
    fp = np.einsum("tn,tnl->tl", w, (on_p & (1 - on_y)).astype(float))
    with np.errstate(invalid="ignore"):
        expected = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), np.nan)
    metric = tmx.MultiLabelPrecision(num_labels=num_labels, num_tasks=t)
    for a in range(0, n, 1500):
        _quiet(
            metric.update,
            torch.tensor(p[:, a : a + 1500]),
            torch.tensor(y[:, a : a + 1500]),
            torch.tensor(w[:, a : a + 1500]),
        )
    _assert_close(_quiet(metric.compute), expected, rtol=1e-12)
