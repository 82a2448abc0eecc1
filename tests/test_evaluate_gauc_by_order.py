"""GAUC/GAUPRC ``--by``: the rows are put in ``(segment, user)`` order by one sort, which the kernel reuses.

The per-segment grouped values used to take three whole-array sorts (the users made dense, the
``(segment, user)`` pairs numbered, the pair ids sorted again by the kernel). These tests pin the one
sort (the kernel is handed its order) on the CPU path and on the device path (run on CPU tensors by
``force_device_path``), and check the values: the same bits as the previous route (``_pairs`` and the
kernel's own sort) on the same data and path, and each segment's value against a pandas groupby of
per-user scikit-learn AUC / AP means.
"""

from __future__ import annotations

import functools
import importlib
import os

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext.evaluate.by_segment as by_segment
from torchmetrics_ext import GroupedAUC, GroupedAUPRC
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.by_segment import SegmentBatch
from torchmetrics_ext.utilities.device import force_device_path

grouped = importlib.import_module("torchmetrics_ext.functional.auc.grouped")
SEEDS = range(int(os.environ.get("TMX_GAUC_BY_SEEDS", "3")))


def _data(seed: int, n: int = 600, ids: str = "small") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n)
    if ids == "negative":
        users = users - 20
    elif ids == "hashed":  # a span of ids past 2**62: the users are made dense first
        users = rng.choice(np.array([-(2**63), -(2**62) - 7, 3, 2**62 + 11, 2**63 - 1]), n)
    return {
        "p": np.round(rng.random(n), 1).astype(np.float32),  # ties within users
        "y": (rng.random(n) < 0.4).astype(np.float64),
        "w": np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.5, 2.0, n))
        .astype(np.float32)
        .astype(np.float64),  # the kernel keeps float32 weights
        "user": users,
        "seg": rng.integers(0, 7, n),
        "ds": rng.integers(0, 2, n),
    }


def _batch(data: dict[str, np.ndarray], weighted: bool) -> SegmentBatch:
    return SegmentBatch(
        preds=torch.from_numpy(data["p"]).to(torch.float64).unsqueeze(0),
        target=torch.from_numpy(data["y"]).unsqueeze(0),
        weights=torch.from_numpy(data["w"]) if weighted else None,
        groups=torch.from_numpy(data["user"]),
        sessions=None,
        segment=torch.from_numpy(data["seg"]),
        num_segments=int(data["seg"].max()) + 1,
    )


def _previous(monkeypatch: pytest.MonkeyPatch, metric: object, batch: SegmentBatch) -> torch.Tensor:
    """The values by the route before the change (pair ids from ``_pairs``, the kernel's own sort)."""
    with monkeypatch.context() as m:
        m.setattr(by_segment, "_pair_order", lambda *args: None)
        return by_segment._grouped_curves(metric, batch, batch.preds.to(torch.float32))[None]  # type: ignore[arg-type]


def _pandas(data: dict[str, np.ndarray], kind: str, weighted: bool, by: list[str]) -> dict[tuple, float]:
    """Each segment's mean per-user AUC (or AP) over the users holding both classes, by pandas and sklearn."""
    frame = pd.DataFrame({k: v for k, v in data.items()})
    if not weighted:
        frame["w"] = 1.0
    score = roc_auc_score if kind == "auc" else average_precision_score
    out = {}
    for key, seg in frame.groupby(by):
        values = [
            score(g["y"], g["p"], sample_weight=g["w"])
            for _, g in seg.groupby("user")
            if (g["w"] * g["y"]).sum() > 0 and (g["w"] * (1 - g["y"])).sum() > 0
        ]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


@functools.cache
def _segment_reference(seed: int, ids: str, kind: str, weighted: bool) -> dict[tuple, float]:
    """:func:`_pandas` by segment of ``_data(seed, ids=ids)``, once for both paths."""
    return _pandas(_data(seed, ids=ids), kind, weighted, ["seg"])


@pytest.mark.parametrize(
    ("device_path", "seed"), [(False, seed) for seed in SEEDS] + [(True, seed) for seed in list(SEEDS)[:1]]
)  # the device path on one seed (TMX_GAUC_BY_SEEDS widens the CPU path's)
@pytest.mark.parametrize("ids", ["small", "negative", "hashed"])
@pytest.mark.parametrize("cls", [GroupedAUC, GroupedAUPRC])
@pytest.mark.parametrize("weighted", [False, True])
def test_values_are_the_previous_routes_bits(
    monkeypatch: pytest.MonkeyPatch, seed: int, ids: str, cls: type, weighted: bool, device_path: bool
) -> None:
    """Bit for bit the route of ``_pairs`` and the kernel's sort; the pandas/sklearn per-user mean per segment."""
    data = _data(seed, ids=ids)
    batch = _batch(data, weighted)
    reference = _segment_reference(seed, ids, "auc" if cls is GroupedAUC else "auprc", weighted)
    for options in ({}, {"average_groups": "all"}, {"weight_groups": True}):
        metric = cls(**options)
        with force_device_path(device_path):
            got = by_segment._grouped_curves(metric, batch, batch.preds.to(torch.float32))[None]
            previous = _previous(monkeypatch, metric, batch)
        assert torch.equal(got.isnan(), previous.isnan())
        assert torch.equal(got.nan_to_num(), previous.nan_to_num()), options
        if not options:
            expected = np.array([reference.get((s,), np.nan) for s in range(batch.num_segments)])
            np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [16, 64])
def test_blocks_of_groups_same_bits(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """With blocks of a few rows (groups sorted in many blocks, some alone), still the previous route's bits."""
    monkeypatch.setattr(grouped, "_GROUP_BLOCK", block)
    data = _data(7, n=2000)
    data["user"][:300] = 5  # one user larger than a block, in several segments
    batch = _batch(data, True)
    metric = GroupedAUC()
    got = by_segment._grouped_curves(metric, batch, batch.preds.to(torch.float32))[None]
    assert torch.equal(got, _previous(monkeypatch, metric, batch))
    expected = _pandas(data, "auc", True, ["seg"])
    np.testing.assert_allclose(got[0].numpy(), [expected[(s,)] for s in range(batch.num_segments)], rtol=1e-12)


@pytest.mark.parametrize("device_path", [False, True])
def test_one_sort_of_rows(monkeypatch: pytest.MonkeyPatch, device_path: bool) -> None:
    """The rows are sorted by id once (no ``torch.unique`` of users or pairs, no second id sort in the kernel).

    Every id sort of the package goes through ``_sorted_keys_order``; the device kernel's one other
    sort is of its ``(group, score)`` keys (the CPU kernel's are NumPy's).
    """
    data = _data(1)
    batch = _batch(data, False)
    calls = {"unique": 0, "sorted_keys": 0, "sort": 0}
    unique, sorted_keys, sort = torch.unique, grouped._sorted_keys_order, torch.sort

    def counting_unique(*args: object, **kwargs: object) -> object:
        calls["unique"] += 1
        return unique(*args, **kwargs)

    def counting_sorted_keys(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls["sorted_keys"] += 1
        return sorted_keys(key)

    def counting_sort(*args: object, **kwargs: object) -> object:
        calls["sort"] += 1
        return sort(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(torch, "unique", counting_unique)
    monkeypatch.setattr(torch, "sort", counting_sort)
    monkeypatch.setattr(grouped, "_sorted_keys_order", counting_sorted_keys)
    monkeypatch.setattr(by_segment, "_sorted_keys_order", counting_sorted_keys)
    with force_device_path(device_path):
        by_segment._grouped_curves(GroupedAUC(), batch, batch.preds.to(torch.float32))
    # the id order's one torch.sort, and on the device path the kernel's sort of (group, score) keys
    assert calls == {"unique": 0, "sorted_keys": 1, "sort": 2 if device_path else 1}


def test_evaluate_by_two_columns_is_pandas() -> None:
    """``evaluate(by=[seg, ds], user=...)``: each segment's GAUC is the pandas groupby per-user sklearn mean."""
    data = _data(3, n=800)
    table = pd.DataFrame(data)
    result = evaluate(table, {"t": ("p", "y")}, ["gauc"], weights="w", user="user", by=["seg", "ds"])
    expected = _pandas(data, "auc", True, ["seg", "ds"])
    for (seg, ds), value in expected.items():
        assert result.values[f"gauc/t/seg={seg}/ds={ds}"] == pytest.approx(value, rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("device_path", [False, True])
def test_kernel_order_argument_is_the_kernels_own_sort(device_path: bool) -> None:
    """The kernel handed ``_id_order(groups)`` gives the bits it gives without it (the class's default path)."""
    rng = np.random.default_rng(0)
    groups = torch.from_numpy(rng.integers(-5, 30, 500))
    scores = torch.from_numpy(rng.random((2, 500)).astype(np.float32))
    signed = torch.from_numpy(np.where(rng.random((2, 500)) < 0.4, 1.0, -1.0).astype(np.float32))
    with force_device_path(device_path):
        default = grouped._grouped_stats_and_slots(scores, signed, groups)
        given = grouped._grouped_stats_and_slots(scores, signed, groups, grouped._id_order(groups))
    assert all(torch.equal(a, b) for a, b in zip(default[0], given[0]))
    assert torch.equal(default[1], given[1])
