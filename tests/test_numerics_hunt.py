"""Numerics at production extremes, each against a reference computed independently in the test.

* Log loss and NE of confident logits (``±100``, ``±1e4``) with soft labels, against 50-digit mpmath.
* NE with soft labels within ``1e-9``..``1e-11`` of 1: the negative label weight summed as ``sum w·(1 - y)``
  where the batch is weighted (also a unit weight vector left unvalidated), and ``N - sum y`` where it is
  not, or where validated weights are all exactly 1 (read as no weights): within the documented bound.
* Binned AUC / AUPRC with scores exactly on the probability bins' edges, at 0 and at 1, against
  scikit-learn on the bins of a NumPy formula.
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as tmf

DIGITS = 50
ETA = 1e-12


def _mp_log_loss_of_logits(z: np.ndarray, y: np.ndarray) -> mpmath.mpf:
    """Mean ``log(1 + e^z) - y z`` over float64 logits and labels, at 50 digits (``log1p(e^-|z|) + ...``)."""
    with mpmath.workdps(DIGITS):
        terms = []
        for a, b in zip(z.tolist(), y.tolist()):
            a, b = mpmath.mpf(a), mpmath.mpf(b)
            # softplus(z) - y z = log1p(e^-|z|) + max(z, 0) - y z, no cancellation at |z| = 1e4
            terms.append(mpmath.log1p(mpmath.exp(-abs(a))) + max(a, 0) - b * a)
        return mpmath.fsum(terms) / len(terms)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_log_loss_and_ne_of_confident_logits_with_soft_labels_match_mpmath(dtype):
    """Logits of ±100 and ±1e4 with soft labels: the exact ``softplus(z) - y z``, no clamp, no cancellation.

    The reference takes the inputs as the metric reads them (cast to ``dtype``, then float64).
    """
    z = torch.tensor([100.0, -100.0, 1e4, -1e4, 40.0, -40.0, 0.0, 3.0], dtype=dtype)
    y = torch.tensor([0.25, 0.75, 0.5, 0.125, 1.0, 0.0, 0.5, 0.0625], dtype=dtype)
    z64, y64 = z.double().numpy(), y.double().numpy()
    expected = _mp_log_loss_of_logits(z64, y64)
    got = tmf.log_loss(z, y, from_logits=True)
    metric = tmx.LogLoss(from_logits=True)
    metric.update(z[:3], y[:3])
    metric.update(z[3:], y[3:])
    for value in (got, metric.compute()):
        with mpmath.workdps(DIGITS):
            assert abs((mpmath.mpf(value.item()) - expected) / expected) <= 1e-15
    # NE over the base rate's entropy (labels' weighted mean, no clamp binds here)
    with mpmath.workdps(DIGITS):
        rate = mpmath.fsum(mpmath.mpf(v) for v in y64.tolist()) / len(y64)
        expected_ne = expected / -(rate * mpmath.log(rate) + (1 - rate) * mpmath.log(1 - rate))
        got_ne = mpmath.mpf(tmf.normalized_entropy(z, y, from_logits=True).item())
        assert abs((got_ne - expected_ne) / expected_ne) <= 1e-15


def _mp_ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> mpmath.mpf:
    """NE of float64 inputs at 50 digits: probabilities clamped to ``[eta, 1 - eta]``, no base-rate clamp binds."""
    with mpmath.workdps(DIGITS):
        q = np.clip(p, ETA, 1 - ETA)
        ce = -mpmath.fsum(
            mpmath.mpf(c)
            * (mpmath.mpf(b) * mpmath.log(mpmath.mpf(a)) + (1 - mpmath.mpf(b)) * mpmath.log(1 - mpmath.mpf(a)))
            for a, b, c in zip(q.tolist(), y.tolist(), w.tolist())
        )
        pos = mpmath.fsum(mpmath.mpf(c) * mpmath.mpf(b) for b, c in zip(y.tolist(), w.tolist()))
        neg = mpmath.fsum(mpmath.mpf(c) * (1 - mpmath.mpf(b)) for b, c in zip(y.tolist(), w.tolist()))
        total = pos + neg
        return ce / -(pos * mpmath.log(pos / total) + neg * mpmath.log(neg / total))


def _relative_error(value: torch.Tensor, expected: mpmath.mpf) -> float:
    with mpmath.workdps(DIGITS):
        return float(abs((mpmath.mpf(value.item()) - expected) / expected))


@pytest.mark.parametrize("gap", [1e-9, 1e-11])
def test_ne_soft_labels_near_1_weighted_keep_their_digits_unweighted_within_the_documented_bound(gap):
    """Soft labels ``1 - gap·u`` (``u`` uniform): the documented split between weighted and unweighted batches.

    Weighted (non-unit weights, or unit weights with ``validate_args=False``, which keeps them): the
    label-0 weight is ``sum w·(1 - y)``, NE within a few float64 roundings of mpmath. Unweighted, and
    validated weights that are all exactly 1 (read as no weights): ``N - sum y``, off by about ``N·1e-16``
    (``NormalizedEntropy``'s Note): NE within ``4 N 2**-53 / sum(1 - y)`` relative.
    """
    rng = np.random.default_rng(0)
    n = 1000
    y = 1 - gap * rng.random(n)
    p = np.clip(y - 0.01 * rng.random(n), 0, 1)
    ones = np.ones(n)
    w = rng.random(n) + 0.5
    P, Y = torch.tensor(p), torch.tensor(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both classes have weight: no undefined warning
        weighted = [
            (tmf.normalized_entropy(P, Y, torch.tensor(w)), _mp_ne(p, y, w)),
            (tmf.normalized_entropy(P, Y, torch.tensor(ones), validate_args=False), _mp_ne(p, y, ones)),
        ]
        metric = tmx.NormalizedEntropy(validate_args=False)
        metric.update(P, Y, torch.tensor(ones))
        weighted.append((metric.compute(), _mp_ne(p, y, ones)))
        for value, expected in weighted:
            assert _relative_error(value, expected) <= 1e-13
        unweighted = tmf.normalized_entropy(P, Y)
        unit = tmf.normalized_entropy(P, Y, torch.tensor(ones))
        metric = tmx.NormalizedEntropy()
        metric.update(P, Y, torch.tensor(ones))
    assert unit.item() == unweighted.item() == metric.compute().item()  # unit weights are no weights
    bound = 4 * n * 2.0**-53 / math.fsum(1 - y)
    assert _relative_error(unweighted, _mp_ne(p, y, ones)) <= bound


@pytest.mark.parametrize("metric", ["auc", "auprc"])
@pytest.mark.parametrize("num_bins", [4, 8, 1000])
def test_binned_probability_bins_at_their_edges_at_0_and_at_1(metric, num_bins):
    """Scores on the bin edges ``k / B``, at 0 and at 1: 0 is bin 0, 1 the last bin (``B - 1``).

    Reference: scikit-learn on the NumPy bins ``clip(floor(float32(p) * B), 0, B - 1)``, the documented rule
    (``docs/auc.md``: the float32 product, as TorchRec's). An edge that float32 holds exactly (``B`` a power of
    two) opens its bin ``k``; at ``B = 1000`` the float32 product puts 5 edges (``0.251``, ...) in bin ``k - 1``.
    """
    rng = np.random.default_rng(num_bins)
    edges = np.arange(num_bins + 1) / num_bins  # 0, 1/B, ..., 1: every edge, both ends included
    scores = np.concatenate([edges, edges, rng.random(200)])
    labels = (rng.random(scores.size) < scores).astype(np.int64)
    labels[: num_bins + 1] = 1
    labels[num_bins + 1 : 2 * num_bins + 2] = 0
    weights = rng.random(scores.size) + 0.1
    bins = np.clip(np.floor(scores.astype(np.float32) * np.float32(num_bins)), 0, num_bins - 1)
    assert bins[num_bins] == num_bins - 1 and bins[0] == 0
    exact_edges = (bins[1:num_bins] == np.arange(1, num_bins)).sum()
    assert exact_edges == (num_bins - 1 if num_bins & (num_bins - 1) == 0 else num_bins - 1 - 5)
    reference = roc_auc_score if metric == "auc" else average_precision_score
    expected = reference(labels, bins, sample_weight=weights)
    fn = tmf.auc if metric == "auc" else tmf.auprc
    cls = tmx.AUC if metric == "auc" else tmx.AUPRC
    args = (torch.tensor(scores), torch.tensor(labels), torch.tensor(weights))
    got = fn(*args, num_bins=num_bins, bin_space="probability")
    state = cls(num_bins=num_bins, bin_space="probability")
    state.update(*(a[:100] for a in args))
    state.update(*(a[100:] for a in args))
    for value in (got, state.compute()):
        assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
