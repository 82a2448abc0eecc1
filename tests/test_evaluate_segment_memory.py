"""``--by`` memory: the temporaries of the per-segment computation stay below one copy of the rows.

An analyst measured ``evaluate --by`` peaking ~100 B per row above the run without segments, against
the 24 B a row of ``ne`` keeps (prediction, label, segment id). Three temporaries made it: every
column's chunks next to their concatenation, a stacked copy of one task's predictions and labels,
and the per-row terms of the sum statistics over every row at once. These tests pin the fixes
(one task's rows are not copied; the sums add bounded pieces of rows) and check the per-segment
values against plain numpy formulas. The peak itself is measured by ``benchmarks/README.md``'s command.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import torchmetrics_ext.evaluate.by_segment as by_segment
import torchmetrics_ext.evaluate.runner as runner
from torchmetrics_ext.evaluate import evaluate


def _table(n: int = 1000, segments: int = 13, seed: int = 0) -> tuple[pa.Table, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data = {
        "p": rng.uniform(0.05, 0.95, n),
        "y": (rng.random(n) < 0.3).astype(np.float64),
        "w": rng.uniform(0.5, 2.0, n),
        "seg": rng.integers(0, segments, n),
    }
    return pa.table(data), data


def _reference(data: dict[str, np.ndarray], seg: int) -> dict[str, float]:
    """NE, log loss, calibration and CTR of one segment's rows, from their definitions."""
    m = data["seg"] == seg
    p, y, w = data["p"][m], data["y"][m], data["w"][m]
    log_loss = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w)
    ctr = np.sum(w * y) / np.sum(w)
    entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return {"ne": log_loss / entropy, "log_loss": log_loss, "calibration": np.sum(w * p) / np.sum(w * y), "ctr": ctr}


@pytest.mark.parametrize("piece", [7, 64, 1 << 20])
def test_sums_in_pieces_are_the_segments_values(monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    """The sum statistics added piece by piece of rows: each segment's value is its rows' formula, the same bits in any pieces."""
    table, data = _table()
    metrics = ["ne", "log_loss", "calibration", "ctr"]
    monkeypatch.setattr(by_segment, "_SUM_ROWS", piece)
    result = evaluate(table, {"t": ("p", "y")}, metrics, weights="w", by=["seg"])
    monkeypatch.setattr(by_segment, "_SUM_ROWS", 1 << 30)  # every row in one piece
    whole = evaluate(table, {"t": ("p", "y")}, metrics, weights="w", by=["seg"])
    for seg in np.unique(data["seg"]).tolist():
        expected = _reference(data, seg)
        for name in metrics:
            key = f"{name}/t/seg={seg}"
            assert result.values[key] == pytest.approx(expected[name], rel=1e-12), key
            assert result.values[key] == whole.values[key], key  # bit for bit


def test_two_tasks_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks (stacked rows), unweighted, pieces smaller than a segment: each task's CTR per segment is its mean label."""
    table, data = _table(n=500, segments=3, seed=1)
    table = table.append_column("y2", pa.array(1.0 - data["y"]))
    monkeypatch.setattr(by_segment, "_SUM_ROWS", 11)
    result = evaluate(table, {"a": ("p", "y"), "b": ("p", "y2")}, ["ctr", "ne"], by=["seg"])
    for seg in range(3):
        m = data["seg"] == seg
        assert result.values[f"ctr/a/seg={seg}"] == pytest.approx(data["y"][m].mean(), rel=1e-12)
        assert result.values[f"ctr/b/seg={seg}"] == pytest.approx(1.0 - data["y"][m].mean(), rel=1e-12)


def test_one_task_rows_are_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """One task's predictions and labels reach the segment kernels as the kept rows themselves (no (1, N) copy)."""
    table, _ = _table(n=200)
    seen: dict[str, object] = {}
    batch_of = runner._Plan.segment_batch

    def spy(self: object, rows: dict, segment: object, num_segments: int) -> object:
        batch = batch_of(self, rows, segment, num_segments)  # type: ignore[arg-type]
        seen["shared"] = [
            batch.preds.untyped_storage().data_ptr() == rows["p"].untyped_storage().data_ptr(),
            batch.target.untyped_storage().data_ptr() == rows["y"].untyped_storage().data_ptr(),
        ]
        return batch

    monkeypatch.setattr(runner._Plan, "segment_batch", spy)
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["seg"])
    assert seen["shared"] == [True, True]
    assert np.isfinite(result.values["ctr/t/seg=0"])


SEGMENT_UNSEEN = "no samples seen in this segment (every row of weight 0 or skipped)"


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_zero_weight_segment_says_so() -> None:
    """A segment whose rows all weigh 0 is named with the segment's reason, not "no update" (said of a metric never fed)."""
    table = pa.table(
        {
            "p": [0.2, 0.7, 0.4, 0.6, 0.3],
            "y": [0.0, 1.0, 1.0, 0.0, 1.0],
            "w": [1.0, 2.0, 0.0, 0.0, 1.0],
            "seg": ["a", "a", "b", "b", "a"],
        }
    )
    result = evaluate(table, {"t": ("p", "y")}, ["ne", "auc"], weights="w", by=["seg"])
    lines = [line for line in result.warnings if "segment" in line and "seg=b" in line]
    assert len(lines) == 2 and all(f": {SEGMENT_UNSEEN}; returning nan." in line for line in lines), result.warnings
    assert not any("no update" in line for line in result.warnings)
    assert np.isnan(result.values["ne/t/seg=b"]) and np.isfinite(result.values["ne/t/seg=a"])
