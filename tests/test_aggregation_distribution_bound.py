"""DISTRIBUTION's percentiles: the sketch's bound, exactly, and nothing lost by merging ranks.

A percentile is ``np.percentile``'s linear interpolation between the order statistics ``x_lo`` and
``x_hi`` at ranks ``floor(h)`` and ``floor(h) + 1`` (``h = q (n - 1)``), each replaced by its
bucket's representative (exact at ranks 0 and ``n - 1``, clipped to the exact min and max). A
bucket ``(g^(k-1), g^k]`` with ``g = (1 + a) / (1 - a)`` has representative ``2 g^k / (g + 1)``,
within ``a`` of every value in it, so

    |estimate - np.percentile| <= a * ((1 - f) |x_lo| + f |x_hi|)     (f = h - floor(h))

for magnitudes in ``[min_value, max_value]``: a relative error of at most ``a`` (1% by default).
The bound is reached (values at a bucket's edge are off by ``a`` less 1e-9), and merging ranks adds
nothing: the counts are summed exactly, so a merged sketch gives the single-process percentiles bit
for bit (percentiles read only the bucket counts, ``sum``-reduced, and the exact min and max). A gap
such as ``999998.0`` against NumPy's ``999998.4`` (4e-7 relative) is the sketch's resolution, far
inside the bound, not a merge error; ``relative_accuracy`` tightens the bound proportionally.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from torchmetrics_ext.aggregation import Distribution
from torchmetrics_ext.functional.distribution import SketchSpec

PERCENTILES = tuple(range(1, 100))


def _bound(values: np.ndarray, q: float, alpha: float) -> float:
    """``a ((1 - f) |x_lo| + f |x_hi|)`` for ``np.percentile(values, q)`` (linear method)."""
    x = np.sort(values)
    h = q / 100 * (len(x) - 1)
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    f = h - lo
    return alpha * ((1 - f) * abs(x[lo]) + f * abs(x[hi]))


def _edge_values(alpha: float, low_edge: bool) -> np.ndarray:
    """101 values, each just inside an edge of its own bucket, log-spread over [1, 1e6]."""
    spec = SketchSpec(relative_accuracy=alpha)
    keys = np.unique(np.linspace(1, math.log(1e6) / spec.log_gamma, 101).round().astype(int))
    if low_edge:
        return np.exp((keys - 1) * spec.log_gamma) * (1 + 1e-9)
    return np.exp(keys * spec.log_gamma) * (1 - 1e-9)


def _percentiles(metric: Distribution) -> np.ndarray:
    values = metric.compute()
    return np.array([values[f"p{q:02d}"].item() for q in PERCENTILES])


@pytest.mark.parametrize("alpha", [0.01, 0.001])
@pytest.mark.parametrize("low_edge", [True, False])
def test_the_relative_bound_is_alpha_and_is_reached(alpha: float, low_edge: bool) -> None:
    values = _edge_values(alpha, low_edge)
    rng = np.random.default_rng(0)
    values = values[rng.permutation(len(values))]
    metric = Distribution(percentiles=PERCENTILES, relative_accuracy=alpha)
    metric.update(torch.tensor(values))
    got = _percentiles(metric)
    ref = np.percentile(values, PERCENTILES)
    errors = np.abs(got - ref)
    bounds = np.array([_bound(values, q, alpha) for q in PERCENTILES])
    assert np.all(errors <= bounds * (1 + 1e-9))
    relative = errors / np.abs(ref)
    assert relative.max() <= alpha * (1 + 1e-9)
    assert relative.max() >= alpha - 1e-8  # reached (less the 1e-9 inside the edge): the resolution, not slack


@pytest.mark.parametrize("seed", range(3))
def test_merging_ranks_gives_the_single_process_percentiles_bit_for_bit(seed: int) -> None:
    """Token counts and losses split unevenly over 3 'ranks' (merge_state: the sums a DDP sync takes)."""
    rng = np.random.default_rng(seed)
    data = {
        "seq_len": rng.integers(1, 1_000_001, 5000).astype(float),
        "loss": rng.lognormal(0.0, 1.0, 5000),
    }
    for values in data.values():
        whole = Distribution(percentiles=PERCENTILES)
        whole.update(torch.tensor(values))
        cuts = np.sort(rng.choice(np.arange(1, len(values)), 2, replace=False))
        ranks = []
        for part in np.split(values, cuts):
            rank = Distribution(percentiles=PERCENTILES)
            rank.update(torch.tensor(part))
            ranks.append(rank)
        for rank in ranks[1:]:
            ranks[0].merge_state(rank)
        merged, single = _percentiles(ranks[0]), _percentiles(whole)
        assert np.array_equal(merged, single)
        ref = np.percentile(values, PERCENTILES)
        bounds = np.array([_bound(values, q, 0.01) for q in PERCENTILES])
        assert np.all(np.abs(merged - ref) <= bounds * (1 + 1e-9))


def test_values_near_the_max_are_clipped_to_it() -> None:
    """Order statistics in the max's bucket are clipped to the exact max: far inside the bound near 1e6."""
    values = np.arange(999_990, 1_000_001, dtype=float)
    metric = Distribution(percentiles=(80,))
    metric.update(torch.tensor(values))
    got = metric.compute()["p80"].item()
    ref = np.percentile(values, 80)  # 999998.0
    assert abs(got - ref) <= _bound(values, 80, 0.01)
    assert abs(got - ref) / ref <= 1e-5


def _gloo_job(rank: int, world: int) -> list[float]:
    values = np.random.default_rng(7).integers(1, 1_000_001, 3001).astype(float)
    shard = values[:1000] if rank == 0 else values[1000:]  # uneven shards, several updates each
    metric = Distribution(percentiles=PERCENTILES)
    for part in np.array_split(shard, 3 - rank):
        metric.update(torch.tensor(part))
    return _percentiles(metric).tolist()


@pytest.mark.ddp
def test_gloo_ranks_give_the_single_process_percentiles_bit_for_bit(ddp_pool: Any) -> None:
    values = np.random.default_rng(7).integers(1, 1_000_001, 3001).astype(float)
    whole = Distribution(percentiles=PERCENTILES)
    whole.update(torch.tensor(values))
    single = _percentiles(whole)
    ref = np.percentile(values, PERCENTILES)
    bounds = np.array([_bound(values, q, 0.01) for q in PERCENTILES])
    for result in ddp_pool.run(_gloo_job):
        assert np.array_equal(np.array(result), single)
        assert np.all(np.abs(np.array(result) - ref) <= bounds * (1 + 1e-9))
