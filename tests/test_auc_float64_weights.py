"""Exact ``AUC``/``AUPRC`` keep weights as float32: the value's error on float64 weights float32 cannot hold.

docs/auc.md ("Ties and weights") promises a relative error of at most ``4 * 2**-24`` (about 2.4e-7) on
the value, of AUC, 1 - AUC and AUPRC alike: each is a weighted mean of non-negative terms whose
weights are products of two sample weights, each rounded to float32 within ``2**-24``. Checked
against scikit-learn on the float64 weights (scores are float32 in both) for weights that float32
cannot hold: ratios of ``1 + 1e-9``, integer counts up to 1e8, 1e-30 next to 1e30, and weights
rounded by just under half a float32 step in the direction that moves the value most.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx

BOUND = 4 * 2.0**-24  # the documented bound (docs/auc.md)
N = 1500


def _below_half_step(base: float, up: bool) -> float:
    """A float64 just inside half a float32 step from ``base``: float32 rounds it to ``base``, losing most."""
    b = np.float32(base)
    step = abs(float(np.nextafter(b, np.float32(np.inf if up else -np.inf))) - float(b))
    return float(b) + (1 if up else -1) * step / 2 * (1 - 1e-6)


def _weights(kind: str, y: np.ndarray, top: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(y)
    if kind == "ratios 1 + 1e-9":
        return 1 + 1e-9 * rng.integers(0, 5, n)
    if kind == "counts up to 1e8":
        return rng.integers(1, 10**8, n).astype(np.float64)
    if kind == "1e-30 next to 1e30":
        return np.where(rng.random(n) < 0.5, 1e-30, 1e30) * (1 + rng.random(n))
    if kind == "log-uniform 1e-30..1e30":
        return np.exp(rng.uniform(np.log(1e-30), np.log(1e30), n))
    # adversarial: the float32 weights of high-scored positives and low-scored negatives lose, the others
    # gain, all by nearly half a step of 1.0 (the largest relative rounding)
    return np.array([_below_half_step(1.0, (label == 1) != high) for label, high in zip(y, top, strict=True)])


def _ours(cls: type, s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    metric = cls()
    metric.update(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(w))
    return float(metric.compute())


@pytest.mark.parametrize(
    "kind",
    ["ratios 1 + 1e-9", "counts up to 1e8", "1e-30 next to 1e30", "log-uniform 1e-30..1e30", "adversarial"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_weights_within_the_documented_bound(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.random(N).astype(np.float32)
    y = (rng.random(N) < 0.4).astype(np.int64)
    w = _weights(kind, y, s > np.median(s), rng)
    auc, ap = roc_auc_score(y, s, sample_weight=w), average_precision_score(y, s, sample_weight=w)
    got_auc, got_ap = _ours(tmx.AUC, s, y, w), _ours(tmx.AUPRC, s, y, w)
    assert abs(got_auc - auc) <= BOUND * min(auc, 1 - auc), (kind, got_auc, auc)
    assert abs(got_ap - ap) <= BOUND * ap, (kind, got_ap, ap)


def test_the_bound_is_reached_within_a_factor_of_two() -> None:
    """A small positive above the only negative, a large one below: AUC = a / (a + b) moves by about 2 steps."""
    s = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    y = np.array([1, 0, 1])
    w = np.array([_below_half_step(1.0, True) * 2.0**-20, 1.0, _below_half_step(1.0, False)])
    auc = roc_auc_score(y, s, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _ours(tmx.AUC, s, y, w)
    assert BOUND / 4 < abs(got - auc) / auc <= BOUND
