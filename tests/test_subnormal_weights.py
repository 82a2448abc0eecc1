"""Subnormal weights (below float64's smallest normal number, 2.2e-308) are kept as given and lose digits.

Documented in policies.md ("Numerics"): no metric rescales its weights (that would read every batch); each
weighted term ``w·x`` of a sum is then exact only to float64's subnormal spacing, 2**-1074 (about 4.9e-324),
so a sum of such terms has a relative error up to about 2**-1074 over its mean term; rescaling the weights by a
power of two (exact) restores full precision, as no ratio metric depends on the weights' scale. References:
exact fractions of the inputs (``fractions.Fraction``) and ranks written here.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

TINY = 2.0**-1074  # float64's smallest subnormal: the spacing of every subnormal sum
N = 400


def _data() -> tuple[list[float], list[float], list[float]]:
    rng = np.random.default_rng(29)
    p = rng.uniform(0.02, 0.98, N)
    y = (rng.random(N) < p).astype(np.float64)
    base = rng.uniform(0.5, 1.5, N)
    return p.tolist(), y.tolist(), base.tolist()


def _ratio(num: list[Fraction], den: list[Fraction]) -> tuple[float, float]:
    """The exact ratio of two sums, and the relative error bound of their float64 subnormal sums."""
    bound = TINY * len(num) / float(sum(num)) + TINY * len(den) / float(sum(den))
    return float(sum(num) / sum(den)), bound


def _references(p: list[float], y: list[float], w: list[float]) -> dict[str, tuple[float, float]]:
    P, Y, W = ([Fraction(v) for v in column] for column in (p, y, w))
    return {
        "calibration": _ratio([a * b for a, b in zip(W, P)], [a * b for a, b in zip(W, Y)]),
        "mse": _ratio([a * (b - c) ** 2 for a, b, c in zip(W, P, Y)], W),
        "weighted_average": _ratio([a * b for a, b in zip(W, P)], W),
    }


METRICS = {"calibration": tmx.Calibration, "mse": tmx.WeightedMSE, "weighted_average": tmx.WeightedAverage}


@pytest.mark.parametrize("scale", [1e-300, 1e-310, 1e-315, 1e-320])
def test_subnormal_sample_weights_lose_digits_within_the_documented_bound(scale):
    p, y, base = _data()
    w = [b * scale for b in base]
    assert (min(w) < 2.2250738585072014e-308) == (scale < 1e-305)
    references = _references(p, y, w)
    for name, cls in METRICS.items():
        metric = cls()
        args = (torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        if name == "weighted_average":
            metric.update(args[0], weights=torch.tensor(w, dtype=torch.float64))
        else:
            metric.update(*args, torch.tensor(w, dtype=torch.float64))
        want, bound = references[name]
        got = metric.compute().item()
        assert abs(got - want) <= (bound + 1e-15) * abs(want), (name, scale, abs(got - want) / abs(want), bound)
        # the documented remedy: the weights times 2**1000 (exact), the value's own precision
        rescaled = cls()
        big = torch.tensor(w, dtype=torch.float64) * 2.0**1000
        if name == "weighted_average":
            rescaled.update(args[0], weights=big)
        else:
            rescaled.update(*args, big)
        assert rescaled.compute().item() == pytest.approx(want, rel=1e-14), (name, scale)
    if scale == 1e-320:  # digits lost where the documented bound allows it: the limit is real, not hypothetical
        mse = tmx.WeightedMSE()
        mse.update(*(torch.tensor(column, dtype=torch.float64) for column in (p, y, w)))
        assert abs(mse.compute().item() - references["mse"][0]) > 1e-9 * references["mse"][0]


@pytest.mark.parametrize("scale", [1e-310, 1e-318])
def test_subnormal_query_weights_lose_digits_within_the_documented_bound(scale):
    """A ranking metric's weighted mean over queries, sum w_q m_q / sum w_q, with subnormal query weights."""
    rng = np.random.default_rng(31)
    q, length = 60, 8
    scores = rng.normal(size=(q, length))
    relevance = (rng.random((q, length)) < 0.3).astype(np.int64)
    relevance[:, 0] = 1  # every query has a relevant candidate
    weights = (rng.uniform(0.5, 1.5, q) * scale).tolist()
    # Recall@3 per query from its definition: relevant candidates among the 3 highest scores over all relevant
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    recall = [Fraction(int(relevance[i, top[i]].sum()), int(relevance[i].sum())) for i in range(q)]
    W = [Fraction(v) for v in weights]
    want = float(sum(a * b for a, b in zip(W, recall)) / sum(W))
    bound = TINY * q / float(sum(a * b for a, b in zip(W, recall))) + TINY * q / float(sum(W))
    metric = tmx.RecallAtK(k=3)
    metric.update(torch.tensor(scores), torch.tensor(relevance), weights=torch.tensor(weights, dtype=torch.float64))
    got = metric.compute().item()
    assert abs(got - want) <= (bound + 1e-15) * want
    rescaled = tmx.RecallAtK(k=3)
    big = torch.tensor(weights, dtype=torch.float64) * 2.0**1000
    rescaled.update(torch.tensor(scores), torch.tensor(relevance), weights=big)
    assert rescaled.compute().item() == pytest.approx(want, rel=1e-14)
    assert math.isfinite(got)
