"""Values at production scale against exact references computed here (fractions, high-precision decimals).

Small representative datasets *scaled*: labels with a large common offset, base rates of 1e-9 with a total
weight of 1e12, weights of 2**40, predictions within 1e-8 of 0 or 1 in every floating dtype, logits of
±100, and a window of a few thousand updates of weights up to 5e11. Every reference is exact arithmetic
on the inputs as the metric receives them (rounded to their dtype), never a value of the code under test.
``TMX_NUMERICS_SEEDS`` (default 1) runs the seeded cases for more seeds.
"""

from __future__ import annotations

import bisect
import decimal
import math
import os
import warnings
from fractions import Fraction

import pytest
import torch

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as tmf

SEEDS = range(int(os.environ.get("TMX_NUMERICS_SEEDS", "1")))


def _fractions(*tensors: torch.Tensor) -> list[list[Fraction]]:
    return [[Fraction(x) for x in t.double().tolist()] for t in tensors]


def _relative(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


# ----------------------------------------------------------------------------- R², NMSE, NRMSE: label offsets


def _exact_regression(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    """R², NMSE (baseline 1 and mean) of one batch in exact fractions (two passes, as the definitions read)."""
    pf, yf, wf = _fractions(p, y, w)
    total = sum(wf)
    mean = sum(wi * yi for wi, yi in zip(wf, yf)) / total
    sse = sum(wi * (pi - yi) ** 2 for wi, pi, yi in zip(wf, pf, yf))
    about_mean = sum(wi * (yi - mean) ** 2 for wi, yi in zip(wf, yf))
    about_one = sum(wi * (yi - 1) ** 2 for wi, yi in zip(wf, yf))
    return {"r2": float(1 - sse / about_mean), "nmse": float(sse / about_one), "nmse_mean": float(sse / about_mean)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("offset", "spread"), [(1e6, 1.0), (1e9, 1.0), (1e12, 1e3), (-1e9, 1e-2), (1.0, 1e-7)])
def test_regression_functions_keep_their_digits_at_a_large_label_offset(offset, spread, seed):
    """``1e9 + N(0, 1)`` labels (watch time in ms since an epoch, prices): sums of ``w·y`` and ``w·y²`` cancel.

    Before the fix the functions took the baseline error from those sums: R² was off by 5e-5 at an offset
    1e6 times the spread and ``nan`` (with a warning) beyond ~1e7; NMSE with TorchRec's baseline 1 was ``nan``
    for labels within 1e-6 of 1. One batch's sums about the baseline keep every digit.
    """
    gen = torch.Generator().manual_seed(seed)
    n = 200
    y = offset + spread * torch.randn(n, generator=gen, dtype=torch.float64)
    p = y + 0.5 * spread * torch.randn(n, generator=gen, dtype=torch.float64)
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 1e6
    want = _exact_regression(p, y, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no undefined-value warning: the labels do spread
        got = {
            "r2": tmf.weighted_r2(p, y, w).item(),
            "nmse": tmf.weighted_nmse(p, y, w).item(),
            "nmse_mean": tmf.weighted_nmse(p, y, w, baseline="mean").item(),
            "nrmse": tmf.weighted_nrmse(p, y, w).item(),
        }
    for name in ("r2", "nmse", "nmse_mean"):
        assert _relative(got[name], want[name]) < 1e-13, (name, got[name], want[name])
    assert _relative(got["nrmse"], math.sqrt(want["nmse"])) < 1e-13


def test_regression_functions_with_several_tasks_and_one_shared_weight_row():
    """Each task's labels about its own baseline: tasks with offsets 0, 1e8 and -1e10, one ``(N,)`` weight row."""
    gen = torch.Generator().manual_seed(7)
    n = 150
    offsets = torch.tensor([[0.0], [1e8], [-1e10]], dtype=torch.float64)
    y = offsets + torch.randn(3, n, generator=gen, dtype=torch.float64)
    p = y + 0.3 * torch.randn(3, n, generator=gen, dtype=torch.float64)
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    got = tmf.weighted_r2(p, y, w)
    for task in range(3):
        want = _exact_regression(p[task], y[task], w)["r2"]
        assert _relative(got[task].item(), want) < 1e-13, task


def test_regression_function_of_constant_offset_labels_stays_undefined():
    """Labels all equal (1e9 + 0.5) have no spread: ``nan`` with the warning, not rounding noise over 0."""
    y = torch.full((50,), 1e9 + 0.5, dtype=torch.float64)
    p = y + torch.linspace(-1, 1, 50, dtype=torch.float64)
    w = torch.linspace(0.1, 3.0, 50, dtype=torch.float64)
    with pytest.warns(tmx.UndefinedMetricWarning, match="WeightedR2"):
        assert math.isnan(tmf.weighted_r2(p, y, w).item())
    ones = torch.ones(20, dtype=torch.float64)
    with pytest.warns(tmx.UndefinedMetricWarning, match="WeightedNMSE"):
        assert math.isnan(tmf.weighted_nmse(ones * 0.5, ones).item())


# ----------------------------------------------------------------------------- NE and log loss: tiny base rates

decimal.getcontext().prec = 60


def _exact_cross_entropy(p: list[float], y: list[float], w: list[float], eta: float = 1e-12) -> tuple[float, float]:
    """(LogLoss, NE) in 60-digit decimals, predictions clamped to ``[eta, 1 - eta]`` (the bounds as float64 has them).

    NE's normaliser is the documented (TorchRec's) ``-(r log c + (1 - r) log(1 - c))`` of the base rate ``r`` and
    ``c``, ``r`` clamped to the same bounds: the entropy of ``r`` unless ``r`` is within ``eta`` of 0 or 1.
    """
    D = decimal.Decimal
    ce = total = pos = D(0)
    for pi, yi, wi in zip(p, y, w):
        q = D(min(max(pi, eta), 1 - eta))
        ce += D(wi) * -(D(yi) * q.ln() + (1 - D(yi)) * (1 - q).ln())
        total += D(wi)
        pos += D(wi) * D(yi)
    rate = pos / total
    clamped = min(max(rate, D(eta)), D(1 - eta))
    entropy = -(rate * clamped.ln() + (1 - rate) * (1 - clamped).ln())
    return float(ce / total), float(ce / total / entropy)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_ne_and_log_loss_at_a_base_rate_of_1e9_and_a_total_weight_of_1e12(dtype):
    """A click per ~1e9 impressions of weight: relative error within the documented bound (measured ~1e-11).

    Also a base rate of 1e-15, below ``eta``, where the normaliser's clamp (TorchRec's rule) decides the value.
    """
    gen = torch.Generator().manual_seed(11)
    n = 400
    p = (torch.rand(n, generator=gen, dtype=torch.float64) * 4e-9).to(dtype)
    y = torch.zeros(n, dtype=torch.float64)
    y[[5, 77]] = 1.0
    w = torch.full((n,), 2.5e9, dtype=torch.float64)  # a total weight of 1e12
    w[100:200] *= 1e-3
    for positive_weight in (500.0, 5e-4):  # base rates 1e-9 and 1e-15
        w[[5, 77]] = positive_weight
        log_loss, ne = _exact_cross_entropy(p.double().tolist(), y.tolist(), w.tolist())
        metric = tmx.NormalizedEntropy()
        for chunk in range(0, n, 64):
            metric.update(p[chunk : chunk + 64], y[chunk : chunk + 64], w[chunk : chunk + 64])
        # the documented bound of log(1 - p) (functional/pointwise.py): 1.1e-16 nats per unit of label-0 weight,
        # below 1e-8 relative while the log loss is above ~1.1e-8 nats; here 1e-8 at a base rate of 1e-9 and ~1e-4
        # at 1e-15 (float16 predictions of 4e-9 are 0, clamped to eta = 1e-12: the exact NE is 1, ours 1 - 2e-5)
        bound = max(1e-8, 1.1e-16 / log_loss)
        assert _relative(metric.compute().item(), ne) < bound, positive_weight
        assert _relative(tmf.log_loss(p, y, w).item(), log_loss) < bound, positive_weight


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_log_loss_of_predictions_within_1e8_of_0_and_1_and_soft_labels(dtype):
    """The clamp to ``[eta, 1 - eta]`` applies to the predictions as given (rounded to their dtype), in float64.

    Within the bound ``functional/pointwise.py`` documents for ``log(1 - p)``: 1.1e-16 nats per unit of label-0
    weight, relative ``1.1e-16 (1 - base rate) / LogLoss`` (here ~5e-13), plus the rounding of the sums.
    """
    p = torch.tensor([1e-8, 2e-8, 3e-9, 1 - 1e-8, 1 - 2e-8, 0.999999, 0.5], dtype=dtype)
    y = torch.tensor([0.0, 1.0, 1e-9, 1.0, 0.0, 1 - 1e-9, 1 - 1e-12], dtype=torch.float64)
    w = torch.tensor([1e6, 2e6, 3e11, 4e6, 5e6, 6e11, 7.0], dtype=torch.float64)
    log_loss, ne = _exact_cross_entropy(p.double().tolist(), y.tolist(), w.tolist())
    wf, yf = _fractions(w, y)
    negative_share = float(sum(wi * (1 - yi) for wi, yi in zip(wf, yf)) / sum(wf))
    bound = 1.1e-16 * negative_share / log_loss + 1e-14
    assert _relative(tmf.log_loss(p, y, w).item(), log_loss) < bound
    assert _relative(tmf.normalized_entropy(p, y, w).item(), ne) < bound


def test_log_loss_from_logits_up_to_100():
    """``softplus(z) - y·z`` in 60-digit decimals: confident right and wrong logits of ±100 keep their digits."""
    z = torch.tensor([100.0, -100.0, 50.0, -37.0, 40.0, -0.5, 99.9], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.3], dtype=torch.float64)
    w = torch.full((7,), 1e9, dtype=torch.float64)
    D = decimal.Decimal
    terms = [(1 + D(zi).exp()).ln() - D(yi) * D(zi) for zi, yi in zip(z.tolist(), y.tolist())]
    want = float(sum(terms) / len(terms))
    assert _relative(tmf.log_loss(z, y, w, from_logits=True).item(), want) < 1e-14
    # a confident right prediction alone: log1p(e^-100), 3.7e-44, not 0
    tiny = tmf.log_loss(torch.tensor([100.0]), torch.tensor([1.0]), from_logits=True).item()
    assert _relative(tiny, float((1 + D(-100).exp()).ln())) < 1e-14


# ----------------------------------------------------------------------------- CTR, calibration, windows, AUC


def test_ctr_and_calibration_at_a_base_rate_of_1e9_and_a_total_weight_of_1e12():
    gen = torch.Generator().manual_seed(3)
    n = 1000
    p = torch.rand(n, generator=gen, dtype=torch.float64) * 2e-9
    y = torch.zeros(n, dtype=torch.float64)
    y[3] = 1.0
    w = torch.full((n,), 1e9, dtype=torch.float64)
    w[3] = 1e3
    pf, yf, wf = _fractions(p, y, w)
    pos = sum(wi * yi for wi, yi in zip(wf, yf))
    ctr, calibration = tmx.CTR(), tmx.Calibration()
    for chunk in range(0, n, 100):
        batch = (p[chunk : chunk + 100], y[chunk : chunk + 100], w[chunk : chunk + 100])
        ctr.update(*batch)
        calibration.update(*batch)
    assert _relative(ctr.compute().item(), float(pos / sum(wf))) < 1e-14
    assert _relative(calibration.compute().item(), float(sum(wi * pi for wi, pi in zip(wf, pf)) / pos)) < 1e-14


def test_window_of_thousands_of_updates_of_weights_up_to_5e11_has_no_drift():
    """The ring never subtracts: the window's CTR after 3,000 updates equals the exact sum of its last 50."""
    gen = torch.Generator().manual_seed(3)
    metric = tmx.Windowed(tmx.CTR(), window_size=64 * 50)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for _ in range(3000):
        y = (torch.rand(64, generator=gen) < 1e-3).double()
        w = torch.exp(torch.rand(64, generator=gen, dtype=torch.float64) * 27)
        metric.update(torch.rand(64, generator=gen, dtype=torch.float64), y, w)
        kept = [*kept[-49:], (y, w)]
    yf = [Fraction(v) for y, _ in kept for v in y.tolist()]
    wf = [Fraction(v) for _, w in kept for v in w.tolist()]
    want = float(sum(a * b for a, b in zip(yf, wf)) / sum(wf))
    assert _relative(metric.compute()["window"].item(), want) < 1e-14


def _exact_auc(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Weighted ROC AUC with ties counted one half, in fractions."""
    rows = list(zip(p.tolist(), y.tolist(), map(Fraction, w.tolist())))
    negatives = sorted((s, wi) for s, label, wi in rows if label == 0)
    scores = [s for s, _ in negatives]
    below = [Fraction(0)]
    for _, wi in negatives:
        below.append(below[-1] + wi)
    area = Fraction(0)
    for s, label, wi in rows:
        if label == 1:
            lo, hi = bisect.bisect_left(scores, s), bisect.bisect_right(scores, s)
            area += wi * (below[lo] + (below[hi] - below[lo]) / 2)
    positive = sum(wi for _, label, wi in rows if label == 1)
    return float(area / (positive * below[-1]))


def test_exact_auc_with_weights_up_to_2_to_the_40_and_a_tiny_base_rate():
    """Float32-exact weights up to 2**40 (a total past 2**31 many times over) on the negatives, 1 on the positives."""
    gen = torch.Generator().manual_seed(1)
    n = 2000
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < p * 0.01).double()
    y[:3] = 1.0
    w = torch.randint(1, 1 << 20, (n,), generator=gen).double() * 2.0**20
    w[y == 1] = 1.0
    metric = tmx.AUC()
    for chunk in range(0, n, 100):
        metric.update(p[chunk : chunk + 100], y[chunk : chunk + 100], w[chunk : chunk + 100])
    # exact mode compares the scores as float32 (documented): the reference ranks the float32 scores
    want = _exact_auc(p.float().double(), y, w)
    assert _relative(metric.compute().item(), want) < 1e-13
