"""``evaluate --by``'s peak beside the rows it keeps: the module's states and the pair key.

The extra peak of ``--by`` over a run without it (``benchmarks/bench_evaluate_by_memory.py``) was
set by the segments' compute, which held the module's states (GAUC's and AUC's every row, read
no more once the overall values are records) beside the kept rows, and by the ``(segment, user)``
pair key made as int64 products of every row before its narrow copy was sorted. These tests pin
both (the states are empty when the segments are computed; the key is written piece by piece in
its narrow type) and check the values against pandas groupbys of scikit-learn AUC / AP per user.
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics import Metric

import torchmetrics_ext.evaluate.by_segment as by_segment
import torchmetrics_ext.evaluate.runner as runner
from torchmetrics_ext.evaluate import evaluate

grouped = importlib.import_module("torchmetrics_ext.functional.auc.grouped")


def _frame(seed: int = 0, n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "p": np.round(rng.random(n), 2),
            "y": (rng.random(n) < 0.35).astype(np.float64),
            "w": rng.uniform(0.5, 2.0, n).astype(np.float32).astype(np.float64),  # the AUC kernels keep float32 weights
            "user": rng.integers(-30, 30, n),
            "seg": rng.integers(0, 5, n),
        }
    )


def _gauc(frame: pd.DataFrame) -> float:
    """The mean over users holding both classes of scikit-learn's weighted ROC AUC."""
    values = [
        roc_auc_score(g["y"], g["p"], sample_weight=g["w"]) for _, g in frame.groupby("user") if g["y"].nunique() == 2
    ]
    return float(np.mean(values))


def _held_rows(module: object) -> int:
    """How many elements the module's list (``cat``) states hold, over all its metrics."""
    held = 0
    for metric in module.modules():  # type: ignore[attr-defined]
        if isinstance(metric, Metric):
            for name, default in metric._defaults.items():
                if isinstance(default, list):
                    held += sum(int(chunk.numel()) for chunk in getattr(metric, name))
    return held


def test_module_states_cleared_before_the_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the segments are computed the module holds no rows; the overall and segment values are sklearn's."""
    frame = _frame()
    held: list[int] = []
    segment_values = runner._Run._segment_values

    def spy(self: runner._Run, metrics: object, batch: object) -> object:
        held.append(_held_rows(self.module))
        return segment_values(self, metrics, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(runner._Run, "_segment_values", spy)
    result = evaluate(frame, {"t": ("p", "y")}, ["gauc", "auc", "ne"], weights="w", user="user", by=["seg"])
    assert held == [0]  # 2 x 900 rows of GAUC and AUC states before
    assert result.values["gauc/t"] == pytest.approx(_gauc(frame), rel=1e-12)
    assert result.values["auc/t"] == pytest.approx(roc_auc_score(frame["y"], frame["p"], sample_weight=frame["w"]))
    for seg, rows in frame.groupby("seg"):
        assert result.values[f"gauc/t/seg={seg}"] == pytest.approx(_gauc(rows), rel=1e-12)
        expected = roc_auc_score(rows["y"], rows["p"], sample_weight=rows["w"])
        assert result.values[f"auc/t/seg={seg}"] == pytest.approx(expected, rel=1e-12)


def test_module_states_cleared_for_every_segmentation_and_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two segmentations, two groups of tasks (``on_invalid="skip"``, other label columns): no module holds rows.

    Every group's overall values are computed before any segment, so no group's states wait beside
    another's segments.
    """
    frame = _frame(1, n=400)
    frame["y2"] = 1.0 - frame["y"]
    frame["ds"] = np.arange(len(frame)) % 3
    held: list[int] = []
    segment_values = runner._Run._segment_values

    def spy(self: runner._Run, metrics: object, batch: object) -> object:
        held.append(sum(_held_rows(module) for module in modules))
        return segment_values(self, metrics, batch)  # type: ignore[arg-type]

    modules: list[object] = []
    make = runner._Plan.module

    def keep(self: runner._Plan, *args: object, **kwargs: object) -> object:
        module = make(self, *args, **kwargs)  # type: ignore[arg-type]
        modules.append(module)
        return module

    monkeypatch.setattr(runner._Run, "_segment_values", spy)
    monkeypatch.setattr(runner._Plan, "module", keep)
    tasks = {"a": ("p", "y"), "b": ("p", "y2")}
    result = evaluate(frame, tasks, ["gauc"], weights="w", user="user", by=[["seg"], ["ds"]], on_invalid="skip")
    assert len(modules) >= 2 and held == [0, 0, 0, 0]  # two groups of tasks, two segmentations each
    flipped = frame.assign(y=frame["y2"])
    assert result.values["gauc/a"] == pytest.approx(_gauc(frame), rel=1e-12)
    assert result.values["gauc/b"] == pytest.approx(_gauc(flipped), rel=1e-12)
    for column in ("seg", "ds"):
        for value, rows in frame.groupby(column):
            assert result.values[f"gauc/a/{column}={value}"] == pytest.approx(_gauc(rows), rel=1e-12)
            assert result.values[f"gauc/b/{column}={value}"] == pytest.approx(_gauc(flipped.loc[rows.index]), rel=1e-12)


@pytest.mark.parametrize("piece", [5, 64, 1 << 18])
@pytest.mark.parametrize(
    ("users_span", "num_segments", "dtype"),
    [(20, 7, torch.uint8), (3000, 7, torch.int16), (10**6, 50, torch.int32), (2**40, 50, torch.int64)],
)
def test_pair_key_in_pieces_of_its_narrow_type(
    monkeypatch: pytest.MonkeyPatch, piece: int, users_span: int, num_segments: int, dtype: torch.dtype
) -> None:
    """The pair key is sorted in the narrowest type holding ``S * span`` pairs, written in pieces; numpy's lexsort order."""
    rng = np.random.default_rng(users_span)
    n = 700
    users = rng.integers(-7, -7 + users_span, n)
    segment = rng.integers(0, num_segments, n)
    segment[0], users[0] = num_segments - 1, -7 + users_span - 1  # the largest key is made
    sorted_types: list[torch.dtype] = []
    sorted_keys = by_segment._sorted_keys_order

    def spy(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sorted_types.append(key.dtype)
        return sorted_keys(key)

    monkeypatch.setattr(by_segment, "_SUM_ROWS", piece)
    monkeypatch.setattr(by_segment, "_sorted_keys_order", spy)
    order = by_segment._pair_order(torch.from_numpy(segment), num_segments, torch.from_numpy(users))
    assert order is not None
    perm, opens, pair_segment = order
    assert sorted_types == [dtype]
    expected = np.lexsort((users, segment))  # stable: by segment, then user, then row
    np.testing.assert_array_equal(perm.numpy(), expected)
    pairs = np.stack([segment[expected], users[expected]])
    first = np.r_[True, (pairs[:, 1:] != pairs[:, :-1]).any(0)]
    np.testing.assert_array_equal(opens.numpy(), first)
    np.testing.assert_array_equal(pair_segment.numpy(), segment[expected][first])
