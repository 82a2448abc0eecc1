"""R²/NMSE/NRMSE at a large common label offset (timestamps, prices in cents, watch time in ms).

The classes' label states are float64 sums of ``w y`` and ``w y^2``, which cancel for labels
``1e8 + N(0, 10)``: ``nan`` (a documented limit). ``label_offset=c`` sums ``w (y - c)`` and
``w (y - c)^2`` instead, one constant for every batch and rank, so the sums still merge by addition.
Checked against scikit-learn's ``r2_score`` (two passes, float64) and NumPy two-pass formulas, over
several batch splits and over gloo ranks of uneven shards.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx

CASES = [(1e6, 1.0), (1.7e9, 3600.0), (1e8, 10.0), (1e9, 1000.0)]


def _data(offset: float, spread: float, dtype: torch.dtype, seed: int = 0, n: int = 6000) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    y = offset + spread * rng.standard_normal(n)
    p = y + 0.3 * spread * rng.standard_normal(n)
    w = rng.uniform(0.5, 2.0, n)
    return tuple(torch.tensor(a, dtype=dtype) for a in (p, y, w))


def _refs(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    """scikit-learn's R², NumPy two-pass NMSE about 1 and about the weighted mean, on the float64 inputs."""
    pn, yn, wn = (a.double().numpy() for a in (p, y, w))
    sse = np.sum(wn * (pn - yn) ** 2)
    mean = np.sum(wn * yn) / np.sum(wn)
    return {
        "r2": r2_score(yn, pn, sample_weight=wn),
        "nmse_one": sse / np.sum(wn * (yn - 1) ** 2),
        "nmse_mean": sse / np.sum(wn * (yn - mean) ** 2),
        "nrmse_mean": np.sqrt(sse / np.sum(wn * (yn - mean) ** 2)),
    }


def _metrics(offset: float) -> dict[str, Any]:
    return {
        "r2": tmx.WeightedR2(label_offset=offset),
        "nmse_one": tmx.WeightedNMSE(label_offset=offset),
        "nmse_mean": tmx.WeightedNMSE(baseline="mean", label_offset=offset),
        "nrmse_mean": tmx.WeightedNRMSE(baseline="mean", label_offset=offset),
    }


@pytest.mark.parametrize(("offset", "spread"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batches", [1, 7, 60])
def test_sums_about_the_offset_keep_their_digits(
    offset: float, spread: float, dtype: torch.dtype, batches: int
) -> None:
    p, y, w = _data(offset, spread, dtype)
    want = _refs(p, y, w)
    # an offset near the labels, not at their mean (here 3e-4 of it away): the rounding left is
    # about 1e-16 * (distance to the offset / spread)^2 relative
    metrics = _metrics(offset * 1.0003)
    for pb, yb, wb in zip(p.tensor_split(batches), y.tensor_split(batches), w.tensor_split(batches), strict=True):
        for metric in metrics.values():
            metric.update(pb, yb, wb)
    for name, metric in metrics.items():
        assert float(metric.compute()) == pytest.approx(want[name], rel=1e-8), (name, offset, spread)


def test_without_an_offset_such_labels_lose_the_value() -> None:
    """What the option is for: the sums about 0 have no digit left for 1e8 + N(0, 10)."""
    p, y, w = _data(1e8, 10.0, torch.float64)
    metric = tmx.WeightedR2()
    metric.update(p, y, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isnan(metric.compute())
    offset = tmx.WeightedR2(label_offset=1e8)
    offset.update(p, y, w)
    assert float(offset.compute()) == pytest.approx(_refs(p, y, w)["r2"], rel=1e-12)


def test_an_offset_changes_no_value_of_ordinary_labels() -> None:
    p, y, w = _data(3.0, 2.0, torch.float64)
    for offset in (0.0, 2.5, -40.0):
        for name, metric in _metrics(offset).items():
            metric.update(p, y, w)
            assert float(metric.compute()) == pytest.approx(_refs(p, y, w)[name], rel=1e-12), (name, offset)


def test_states_are_named_after_the_offset_and_groups_stay_apart() -> None:
    plain, shifted = tmx.WeightedR2(), tmx.WeightedR2(label_offset=1e9)
    assert "label_sum" in plain.metric_state and "label_sum" not in shifted.metric_state
    assert any(name.startswith("label_sum_offset_") for name in shifted.metric_state)
    p, y, w = _data(1e9, 1000.0, torch.float64, n=400)
    collection = MetricCollection(
        {"mse": tmx.WeightedMSE(), "r2": tmx.WeightedR2(), "r2_offset": tmx.WeightedR2(label_offset=1e9)}
    )
    collection.update(p, y, w)
    groups = [sorted(g) for g in collection.compute_groups.values()]
    assert ["mse", "r2"] in groups and ["r2_offset"] in groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = collection.compute()
    assert float(got["r2_offset"]) == pytest.approx(_refs(p, y, w)["r2"], rel=1e-9)
    # a checkpoint round trip keeps the offset's states
    again = tmx.WeightedR2(label_offset=1e9)
    again.persistent(True)
    shifted.persistent(True)
    shifted.update(p, y, w)
    again.load_state_dict(shifted.state_dict())
    assert float(again.compute()) == pytest.approx(_refs(p, y, w)["r2"], rel=1e-9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1e9", None])
def test_a_bad_offset_is_refused_naming_it(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="label_offset"):
        tmx.WeightedR2(label_offset=bad)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match="label_offset"):
        tmx.WeightedNMSE(label_offset=bad)  # type: ignore[arg-type]


def _ddp_job(rank: int, world: int, offset: float, spread: float) -> dict[str, float]:
    p, y, w = _data(offset, spread, torch.float64, n=3001)
    cut = 1000  # uneven shards: rank 0 the first 1000 rows in 3 batches, rank 1 the rest in 2
    shard = slice(0, cut) if rank == 0 else slice(cut, None)
    metrics = _metrics(offset)
    for pb, yb, wb in zip(*(a[shard].tensor_split(3 - rank) for a in (p, y, w)), strict=True):
        for metric in metrics.values():
            metric.update(pb, yb, wb)
    return {name: float(metric.compute()) for name, metric in metrics.items()}


@pytest.mark.ddp
@pytest.mark.parametrize(("offset", "spread"), [(1e8, 10.0), (1.7e9, 3600.0)])
def test_gloo_ranks_merge_the_sums_about_the_offset_exactly(ddp_pool: Any, offset: float, spread: float) -> None:
    out = ddp_pool.run(_ddp_job, offset, spread)
    want = _refs(*_data(offset, spread, torch.float64, n=3001))
    for result in out:
        for name, value in want.items():
            assert result[name] == pytest.approx(value, rel=1e-10), (name, result[name], value)


def test_offset_one_keeps_the_constant_one_baseline_for_labels_close_to_one() -> None:
    """Labels 1 ± 1e-7: the baseline error sum w (y - 1)^2 is rounding noise of the sums about 0 (``nan``)."""
    rng = np.random.default_rng(3)
    y = 1 + 1e-7 * rng.standard_normal(4000)
    p = 1 + 1e-7 * rng.standard_normal(4000)
    w = rng.uniform(0.5, 2.0, 4000)
    want = np.sum(w * (p - y) ** 2) / np.sum(w * (y - 1) ** 2)  # NumPy, per-sample terms
    metric = tmx.WeightedNMSE(label_offset=1.0)
    for chunk in np.array_split(np.arange(4000), 9):
        metric.update(*(torch.from_numpy(a[chunk]) for a in (p, y, w)))
    assert float(metric.compute()) == pytest.approx(want, rel=1e-12)
    plain = tmx.WeightedNMSE()
    plain.update(*(torch.from_numpy(a) for a in (p, y, w)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isnan(plain.compute())
