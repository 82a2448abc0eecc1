"""``evaluate(..., on_invalid="skip")``: a row invalid in one task's columns is dropped for that task alone.

A multi-task log often misses one task's label (a conversion label is null on rows without a click);
such a row used to be dropped for every task, so the other tasks were computed on fewer rows.

References are independent: for each task, pandas keeps the rows valid in that task's columns
(predictions, labels, the weights if it reads them), then scikit-learn (``roc_auc_score``,
``log_loss``) and numpy formulas written here give its values, overall and per segment.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from torchmetrics_ext.evaluate import evaluate

TASKS = [
    {"name": "click", "prediction_name": "p_click", "label_name": "y_click"},  # weighted by `w`
    {"name": "conv", "prediction_name": "p_conv", "label_name": "y_conv"},  # weighted by `w`
    {"name": "like", "prediction_name": "p_like", "label_name": "y_like", "weight_name": None},  # no weights
]
WEIGHTED = {"click": True, "conv": True, "like": False}
METRICS = ["ctr", "ne", "auc", "gauc", "ndcg@5"]
KW = {"weights": "w", "user": "user", "session": "session"}


def _frame(n: int = 720, seed: int = 3, invalid: bool = True) -> pd.DataFrame:
    """Three tasks; ``jp`` has no click (so no conversion label at all), ``us`` converts on every click."""
    rng = np.random.default_rng(seed)
    country = rng.choice(["de", "fr", "jp", "us"], n)
    y_click = rng.integers(0, 2, n).astype(np.float64)
    y_click[country == "jp"] = 0.0  # one class: auc undefined for click in jp
    y_conv = np.where(rng.uniform(size=n) < 0.4, 1.0, 0.0)
    y_conv[country == "us"] = 1.0  # one class: auc undefined for conv in us
    frame = pd.DataFrame(
        {
            "p_click": rng.uniform(0.02, 0.98, n),
            "y_click": y_click,
            "p_conv": rng.uniform(0.02, 0.98, n),
            "y_conv": y_conv,
            "p_like": rng.uniform(0.02, 0.98, n),
            "y_like": rng.integers(0, 2, n).astype(np.float64),
            "w": rng.uniform(0.5, 3.0, n),
            "user": rng.integers(0, 25, n),
            "session": rng.integers(0, 80, n),
            "country": country,
        }
    )
    if invalid:
        frame.loc[rng.choice(n, 25, replace=False), "y_click"] = np.nan  # missing click labels
        frame.loc[frame.y_click != 1, "y_conv"] = np.nan  # no conversion label without a click (jp: none at all)
        bad = rng.choice(n, 30, replace=False)
        frame.loc[bad[:15], "p_like"] = 1.5  # predictions outside [0, 1], task like's alone
        frame.loc[bad[15:], "p_like"] = -0.2
        bad = rng.choice(n, 20, replace=False)
        frame.loc[bad[:10], "w"] = np.nan  # invalid weights: click and conv only (like reads none)
        frame.loc[bad[10:], "w"] = -1.0
    return frame


def _kept(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows valid in every column the task reads (pandas): its predictions, labels and weights if weighted."""
    p, y = frame[f"p_{task}"], frame[f"y_{task}"]
    valid = p.between(0, 1) & y.isin([0.0, 1.0])
    if WEIGHTED[task]:
        valid &= np.isfinite(frame.w) & (frame.w >= 0)
    return frame[valid]


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    return float(roc_auc_score(y, p, sample_weight=w)) if 0 < y.sum() < len(y) else math.nan


def _reference(rows: pd.DataFrame, task: str) -> dict[str, float]:
    p, y = rows[f"p_{task}"].to_numpy(), rows[f"y_{task}"].to_numpy()
    w = rows.w.to_numpy() if WEIGHTED[task] else np.ones(len(rows))
    ctr = float(np.sum(w * y) / np.sum(w))
    if 0 < ctr < 1:
        entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
        ne = log_loss(y, p, sample_weight=w, labels=[0, 1]) / entropy
    else:
        ne = math.nan
    # gauc: the mean over users holding both classes of each user's weighted AUC
    users = [_auc(y[rows.user == u], p[rows.user == u], w[rows.user == u]) for u in np.unique(rows.user)]
    users = [value for value in users if not math.isnan(value)]
    # ndcg@5: per session (scores all distinct), weighted by its largest row weight, sessions with a positive
    total = weight = 0.0
    for s in np.unique(rows.session):
        mine = (rows.session == s).to_numpy()
        ys, ws = y[mine][np.argsort(-p[mine])], w[mine].max()
        if ys.sum() == 0:
            continue
        discount = 1 / np.log2(np.arange(2, len(ys) + 2))
        ideal = np.sort(ys)[::-1]
        total += ws * np.sum((ys * discount)[:5]) / np.sum((ideal * discount)[:5])
        weight += ws
    return {
        "rows": len(rows),
        "ctr": ctr,
        "ne": ne,
        "auc": _auc(y, p, w),
        "gauc": float(np.mean(users)) if users else math.nan,
        "ndcg@5": total / weight if weight else math.nan,
    }


def _check(record: dict, expected: dict[str, float]) -> None:
    where = (record["segment"], record["task"])
    assert record["rows"] == expected["rows"], where
    for metric in METRICS:
        want, got = expected[metric], record[metric]
        if math.isnan(want):
            assert math.isnan(got), (where, metric, got)
        else:
            # exact AUC and GAUC keep weights as float32 (documented): within float32 rounding
            rel = 1e-6 if metric in ("auc", "gauc") else 1e-9
            assert got == pytest.approx(want, rel=rel), (where, metric)


def _check_all(records: list[dict], frame: pd.DataFrame, by: bool) -> None:
    """Every record against its task's kept rows; a segment without rows for a task has a record of 0 rows, nan."""
    want = []
    for task in WEIGHTED:
        want.append(("all", task))
        if by:  # every segment of the data, for every task
            want += [(f"country={c}", task) for c in sorted(set(frame.country))]
    got = {(r["segment"], r["task"]): r for r in records}
    assert set(got) == set(want)
    for (segment, task), record in got.items():
        kept = _kept(frame, task)
        rows = kept if segment == "all" else kept[kept.country == record["country"]]
        if len(rows) == 0:
            assert record["rows"] == 0
            assert all(math.isnan(record[metric]) for metric in METRICS), record
            continue
        _check(record, _reference(rows, task))


def _invalid_anywhere(frame: pd.DataFrame) -> int:
    """The rows dropped for at least one task: invalid in some column read."""
    valid_everywhere = np.ones(len(frame), dtype=bool)
    for task in WEIGHTED:
        valid_everywhere &= frame.index.isin(_kept(frame, task).index)
    return int((~valid_everywhere).sum())


@pytest.mark.parametrize("as_table", [False, True], ids=["pandas", "arrow"])
def test_a_row_invalid_for_one_task_is_dropped_for_that_task_alone(as_table):
    """Null or NaN labels of click and conv, out-of-range predictions of like, invalid weights (click and conv
    read them): each task's values and rows are those of the rows valid in its own columns. They were those of
    the rows valid in every column (conv's missing labels on rows without a click cut like's rows by half)."""
    frame = _frame()
    data = pa.Table.from_pandas(frame, preserve_index=False) if as_table else frame
    result = evaluate(data, TASKS, METRICS, on_invalid="skip", **KW)
    assert [r["task"] for r in result.records] == ["click", "conv", "like"]
    _check_all(result.records, frame, by=False)
    assert result.rows_read == len(frame)
    assert result.rows_skipped == _invalid_anywhere(frame)  # rows dropped for at least one task
    counts = {}
    for problem in result.problems:  # reported as before: per column and reason
        counts[problem.column] = counts.get(problem.column, 0) + problem.count
    assert counts == {
        "y_click": int(frame.y_click.isna().sum()),
        "y_conv": int(frame.y_conv.isna().sum()),
        "p_like": 30,
        "w": 20,
    }


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_per_segment_values_rows_and_undefined_lines_use_each_tasks_rows():
    """``--by``: every task's values and rows per segment are those of its kept rows; ``jp`` (no click, so no
    conversion label) has a record of 0 rows and nan values for conv, said in a line of its own, and conv's
    "in N of M segments" counts its own 3 segments with rows."""
    frame = _frame(seed=8)
    result = evaluate(frame, TASKS, METRICS, on_invalid="skip", by="country", **KW)
    _check_all(result.records, frame, by=True)
    single = "the labels seen hold a single class (or no weight); returning nan."
    assert f"auc is undefined for task 'click' in 1 of 4 segments (country=jp): {single}" in result.warnings
    assert f"auc is undefined for task 'conv' in 1 of 3 segments (country=us): {single}" in result.warnings
    assert (
        "task 'conv' has no valid row in 1 of 4 segments (country=jp): every row there was invalid for it and "
        "skipped; its values there are nan, rows 0."
    ) in result.warnings


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_clean_data_skipping_gives_the_values_of_stopping_at_errors():
    """Without an invalid row the tasks fed apart (one module per group of columns) give what one module
    gives: the same records, rows and warnings (merged as one module's), each against the references."""
    frame = _frame(seed=4, invalid=False)
    results = [evaluate(frame, TASKS, METRICS, on_invalid=mode, by="country", **KW) for mode in ("error", "skip")]
    _check_all(results[1].records, frame, by=True)
    error, skip = results
    assert skip.rows_skipped == 0
    assert skip.warnings == error.warnings
    assert [(r["segment"], r["task"], r["rows"]) for r in skip.records] == [
        (r["segment"], r["task"], r["rows"]) for r in error.records
    ]
    for mine, theirs in zip(skip.records, error.records):
        for metric in METRICS:
            assert mine[metric] == pytest.approx(theirs[metric], rel=1e-12, nan_ok=True)


def _ddp_skip(rank: int, world_size: int, path: str) -> tuple[list[dict], int]:
    import torch.distributed as dist

    result = evaluate(path, TASKS, METRICS, on_invalid="skip", by="country", batch_size=40, **KW)
    assert dist.is_initialized()
    return result.records, result.rows_skipped


@pytest.mark.ddp
def test_two_ranks_drop_invalid_rows_per_task_as_one_process(ddp_pool, tmp_path):
    """Row groups split between two ranks: the groups of tasks come from the arguments, so every rank feeds the
    same modules; each task's values and rows, overall and per segment, are those of its kept rows (pandas)."""
    frame = _frame(seed=13)
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=60)
    for records, skipped in ddp_pool.run(_ddp_skip, str(path)):
        assert skipped == _invalid_anywhere(frame)
        _check_all(records, frame, by=True)
