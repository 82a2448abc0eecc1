"""``--by`` keeps its rows in the dtypes read: float32 scores and weights, int8 labels, int32 ids and segment ids.

The rows ``evaluate --by`` keeps until the end were float64/int64 (8 bytes a value), 32 of the ~38 B/row its
peak held above the run without segments at 4M rows. Now each column is kept as the reader gave it and the
segment kernels compute in float64 as before: every segment's value of a float32 Parquet file is checked
here against sklearn and numpy/pandas formulas, and against the same rows written as float64/int64 (the
previous kept dtypes) bit for bit. The peak itself is measured by ``benchmarks/README.md``'s command.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext.evaluate.runner as runner
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.segments import SegmentRows

SEEDS = range(int(os.environ.get("TMX_KEPT_DTYPES_SEEDS", "2")))
TASKS = {"click": ("p", "y"), "like": ("p2", "y2")}
SUMS = ["ne", "log_loss", "calibration", "ctr"]


def _frame(seed: int, n: int = 800) -> pd.DataFrame:
    """float32 scores and weights, int8 labels, int64 ids that fit in int32, a text segment column."""
    rng = np.random.default_rng(seed)
    session = np.sort(rng.integers(0, n // 6, n))
    return pd.DataFrame(
        {
            "p": rng.uniform(0.02, 0.98, n).astype(np.float32),
            "y": (rng.random(n) < 0.35).astype(np.int8),
            "p2": rng.uniform(0.02, 0.98, n).astype(np.float32),
            "y2": (rng.random(n) < 0.5).astype(np.int8),
            "w": rng.uniform(0.25, 3.0, n).astype(np.float32),
            "user": rng.integers(0, n // 20, n).astype(np.int64) + 1000,
            "session": session.astype(np.int64),
            "country": np.array(["de", "fr", "us", "jp", "br"])[rng.integers(0, 5, n)],
            "device": np.array(["ios", "web", "android"])[rng.integers(0, 3, n)],
        }
    )


def _sums_reference(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """NE, log loss, calibration and CTR from their definitions, in float64."""
    log_loss = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w)
    ctr = np.sum(w * y) / np.sum(w)
    entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return {"ne": log_loss / entropy, "log_loss": log_loss, "calibration": np.sum(w * p) / np.sum(w * y), "ctr": ctr}


def _gauc_reference(rows: pd.DataFrame, p: str, y: str) -> float:
    """The mean over users with both labels of each user's weighted AUC (sklearn)."""
    values = [
        roc_auc_score(group[y], group[p].astype(np.float64), sample_weight=group["w"].astype(np.float64))
        for _, group in rows.groupby("user")
        if group[y].nunique() == 2
    ]
    return float(np.mean(values))


def _mrr_reference(rows: pd.DataFrame, p: str, y: str) -> float:
    """Each session with a positive: 1 / rank of its first positive (score descending), weighed by its largest weight."""
    ranked = rows.sort_values(["session", p], ascending=[True, False], kind="stable")
    ranked = ranked.assign(rank=ranked.groupby("session").cumcount() + 1)
    first = ranked[ranked[y] == 1].groupby("session")["rank"].min()
    weight = rows.groupby("session")["w"].max().astype(np.float64).loc[first.index]
    return float(np.sum(weight / first) / np.sum(weight))


def _write(frame: pd.DataFrame, path: str) -> str:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=400)
    return path


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_parquet_segments_match_references(tmp_path: object, seed: int) -> None:
    """Every segment's values of a float32/int8 Parquet file are sklearn's and the formulas' (two tasks, weights)."""
    frame = _frame(seed)
    path = _write(frame, os.path.join(str(tmp_path), "rows.parquet"))
    metrics = [*SUMS, "auc", "gauc", "mrr"]
    result = evaluate(path, TASKS, metrics, weights="w", user="user", session="session", by=["country"])
    for country, rows in frame.groupby("country"):
        w = rows["w"].to_numpy(np.float64)
        for task, (p, y) in TASKS.items():
            expected = _sums_reference(rows[p].to_numpy(np.float64), rows[y].to_numpy(np.float64), w)
            expected["auc"] = roc_auc_score(rows[y], rows[p].astype(np.float64), sample_weight=w)
            expected["gauc"] = _gauc_reference(rows, p, y)
            expected["mrr"] = _mrr_reference(rows, p, y)
            for name, value in expected.items():
                key = f"{name}/{task}/country={country}"
                assert result.values[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_rows_give_the_float64_rows_bits(tmp_path: object, seed: int) -> None:
    """The same values, bit for bit, as the rows written as float64/int64 (the dtypes the rows were kept in before).

    Every family of the segment kernels, and a metric computed segment by segment (binned AUC), under two
    segmentations; logits read by metrics of probabilities (``sigmoid`` in float64, as the module's).
    """
    frame = _frame(seed, n=900)
    wide = frame.astype({c: np.float64 for c in ("p", "y", "p2", "y2", "w")})
    narrow_path = _write(frame, os.path.join(str(tmp_path), "narrow.parquet"))
    wide_path = _write(wide, os.path.join(str(tmp_path), "wide.parquet"))
    metrics = {
        **dict.fromkeys([*SUMS, "auc", "auprc", "gauc", "gauprc", "ndcg@5", "mrr", "mse", "regression_auc", "xauc"]),
        "binned": {"metric": "auc", "num_bins": 50},
    }
    for logits in (False, True):
        options = dict(weights="w", user="user", session="session", by=[["country"], ["country", "device"]])
        if logits:
            options["from_logits"] = True
        narrow = evaluate(narrow_path, TASKS, metrics, **options)
        wide_result = evaluate(wide_path, TASKS, metrics, **options)
        assert narrow.values.keys() == wide_result.values.keys()
        for key, value in wide_result.values.items():
            same = value == narrow.values[key] or (math.isnan(value) and math.isnan(narrow.values[key]))
            assert same, (key, value, narrow.values[key])
        assert narrow.warnings == wide_result.warnings


def test_kept_rows_are_the_dtypes_read(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """The kernels read float32 scores, int8 labels, float32 weights, int32 users and segments; no dense copy."""
    frame = _frame(0, n=600)
    path = _write(frame, os.path.join(str(tmp_path), "rows.parquet"))
    seen: list[tuple[dict, object]] = []
    batch_of = runner._Plan.segment_batch

    def spy(self: object, rows: dict, segment: torch.Tensor, num_segments: int) -> object:
        batch = batch_of(self, rows, segment, num_segments)  # type: ignore[arg-type]
        seen.append(({name: value.dtype for name, value in rows.items()}, batch))
        return batch

    monkeypatch.setattr(runner._Plan, "segment_batch", spy)
    evaluate(path, {"click": ("p", "y")}, ["ne", "gauc"], weights="w", user="user", by=["country"])
    ((dtypes, batch),) = seen
    assert dtypes == {"p": torch.float32, "y": torch.int8, "w": torch.float32, "user": torch.int32}
    assert batch.preds.dtype == torch.float32 and batch.target.dtype == torch.int8  # type: ignore[attr-defined]
    assert batch.segment.dtype == torch.int32  # type: ignore[attr-defined]


def test_segment_ids_are_not_copied_when_every_segment_has_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels are given the kept segment ids themselves; a copy only where some segment lost its rows."""
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9], "y": [0.0, 1.0, 1.0, 0.0], "s": ["a", "b", "a", "c"]})
    given: list[torch.Tensor] = []
    batch_of = runner._Plan.segment_batch

    def spy(self: object, rows: dict, segment: torch.Tensor, num_segments: int) -> object:
        given.append(segment)
        return batch_of(self, rows, segment, num_segments)  # type: ignore[arg-type]

    kept: list[torch.Tensor] = []
    gathered = SegmentRows.gathered

    def keep(self: SegmentRows) -> tuple[dict, list]:
        rows, segments = gathered(self)
        kept.extend(segments)
        return rows, segments

    monkeypatch.setattr(runner._Plan, "segment_batch", spy)
    monkeypatch.setattr(SegmentRows, "gathered", keep)
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["s"])
    assert given[0] is kept[0]
    assert result.values["ctr/t/s=b"] == 1.0
    # with a segment whose every row is skipped (invalid label), the ids are renumbered in their own dtype
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9], "y": [0.0, 1.0, 1.0, 5.0], "s": ["a", "b", "a", "c"]})
    given.clear()
    kept.clear()
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["s"], on_invalid="skip")
    assert given[0] is not kept[0] and given[0].dtype == kept[0].dtype == torch.int32
    assert given[0].tolist() == [0, 1, 0]
    assert result.values["ctr/t/s=a"] == 0.5 and result.values["ctr/t/s=b"] == 1.0


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([torch.float32, torch.float32], torch.float32),
        ([torch.int8, torch.int8], torch.int8),
        ([torch.int8, torch.float32], torch.float32),  # float32 holds every int8
        ([torch.int32, torch.float32], torch.float64),  # float32 does not hold every int32
        ([torch.int32, torch.int64], torch.int64),
        ([torch.float16, torch.float16], torch.float32),  # the sorts take float32
        ([torch.uint8, torch.int8], torch.int16),
        ([torch.float32, torch.float64], torch.float64),
    ],
)
def test_batches_of_several_dtypes_join_in_one_that_holds_them(chunks: list, expected: torch.dtype) -> None:
    """Batches read in different dtypes are joined in the narrowest dtype holding all their values, converted exactly."""
    rows = SegmentRows({"x": torch.float64})
    values = [torch.tensor([1, 2, 3]).to(dtype) for dtype in chunks]
    for value in values:
        rows.append({"x": value}, [torch.zeros(3, dtype=torch.int64)])
    rows.append({"x": torch.zeros(0, dtype=torch.float64)}, [torch.zeros(0, dtype=torch.int64)])  # no row: no say
    rows.number_segments(np.array([0]))
    kept, (segment,) = rows.gathered()
    assert kept["x"].dtype == expected
    assert kept["x"].tolist() == [1, 2, 3] * len(chunks)
    assert segment.dtype == torch.int32


def test_no_rows_keep_the_declared_dtypes() -> None:
    """A column no rank kept a row of is the declared float64/int64 (empty)."""
    rows = SegmentRows({"x": torch.float64, "u": torch.int64})
    rows.number_segments(np.zeros(0, np.int64))
    kept, (segment,) = rows.gathered()
    assert kept["x"].dtype == torch.float64 and kept["u"].dtype == torch.int64 and kept["x"].numel() == 0
    assert segment.numel() == 0
