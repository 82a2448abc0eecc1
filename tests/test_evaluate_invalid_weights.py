"""``evaluate(..., on_invalid="skip")`` with invalid weights: rows dropped only for the tasks that read them.

References are independent: scikit-learn (AUC, log loss with ``sample_weight``) and numpy/pandas
formulas written here over the rows each task keeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from torchmetrics_ext.evaluate import evaluate

TASKS = [
    {"name": "a", "prediction_name": "p_a", "label_name": "y_a"},  # weighted by `weights`
    {"name": "b", "prediction_name": "p_b", "label_name": "y_b", "weight_name": None},  # reads no weights
]


def _frame(n: int = 400, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "p_a": rng.uniform(0.02, 0.98, n),
            "y_a": rng.integers(0, 2, n),
            "p_b": rng.uniform(0.02, 0.98, n),
            "y_b": rng.integers(0, 2, n),
            "w": rng.uniform(0.5, 3.0, n),
            "country": rng.choice(["de", "fr", "us"], n),
        }
    )
    bad_weight = rng.choice(n, 60, replace=False)
    frame.loc[bad_weight[:20], "w"] = np.nan
    frame.loc[bad_weight[20:40], "w"] = -1.0
    frame.loc[bad_weight[40:], "w"] = np.inf
    frame.loc[frame.country == "us", "w"] = np.nan  # a segment whose every weight is invalid
    frame.loc[[3, 7], "p_a"] = 1.5  # an invalid prediction of task a drops the row for task a alone
    return frame


def _reference(rows: pd.DataFrame, task: str, weights: np.ndarray | None) -> dict[str, float]:
    p, y = rows[f"p_{task}"].to_numpy(), rows[f"y_{task}"].to_numpy()
    w = np.ones(len(rows)) if weights is None else weights
    ctr = float(np.sum(w * y) / np.sum(w))
    entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return {
        "rows": len(rows),
        "ctr": ctr,
        "ne": log_loss(y, p, sample_weight=w, labels=[0, 1]) / entropy,
        "auc": roc_auc_score(y, p, sample_weight=w),
    }


def _kept(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows task ``a`` keeps (its columns and the weights valid) and those task ``b`` keeps (every row: its
    own columns are all valid, and an invalid ``p_a`` or weight is no column of ``b``)."""
    valid = frame.p_a.between(0, 1) & np.isfinite(frame.w) & (frame.w >= 0)
    return frame[valid], frame


def _check(record: dict, expected: dict[str, float]) -> None:
    assert record["rows"] == expected["rows"]
    for metric in ("ctr", "ne", "auc"):
        # exact AUC keeps weights as float32 (documented): its value within float32 rounding
        assert record[metric] == pytest.approx(expected[metric], rel=1e-6 if metric == "auc" else 1e-9), metric


def test_an_invalid_weight_drops_its_row_only_for_the_tasks_that_read_the_weights():
    """A row with a NaN, negative or infinite weight was dropped for every task, also for a task given
    ``weight_name: None`` (which never reads the weights): its values and row count lacked those rows. It is
    dropped for the weighted tasks alone now (and an invalid prediction of ``a`` for ``a`` alone)."""
    frame = _frame()
    kept_a, kept_b = _kept(frame)
    result = evaluate(pa.Table.from_pandas(frame), TASKS, ["ctr", "ne", "auc"], weights="w", on_invalid="skip")
    overall = {r["task"]: r for r in result.records if r["segment"] == "all"}
    _check(overall["a"], _reference(kept_a, "a", kept_a.w.to_numpy()))
    _check(overall["b"], _reference(kept_b, "b", None))
    assert [r["task"] for r in result.records[:2]] == ["a", "b"]  # tasks in the order given
    assert result.rows_read == len(frame)
    assert result.rows_skipped == len(frame) - len(kept_a)  # rows dropped for at least one task
    counts = {(p.column, p.reason): p.count for p in result.problems}  # reported as before: per column and reason
    assert sum(count for (column, _), count in counts.items() if column == "w") == int(
        (~(np.isfinite(frame.w) & frame.w.ge(0))).sum()
    )
    assert counts[("p_a", "outside [0, 1] (probabilities expected)")] == 2


def test_an_invalid_weight_drops_its_row_only_for_the_weighted_tasks_of_each_segment():
    """Per segment too: each task's values and rows over the rows it keeps (pandas groupby); a segment whose
    every weight is invalid (``us``) has a record of its rows for the task without weights, and one of 0 rows
    and nan values for the weighted task (it had none: the segment vanished from that task's report)."""
    frame = _frame(seed=5)
    kept_a, kept_b = _kept(frame)
    result = evaluate(frame, TASKS, ["ctr", "ne", "auc"], weights="w", on_invalid="skip", by="country")
    records = [r for r in result.records if r["segment"] != "all"]
    assert [(r["country"], r["task"]) for r in records] == [
        ("de", "a"),
        ("de", "b"),
        ("fr", "a"),
        ("fr", "b"),
        ("us", "a"),
        ("us", "b"),
    ]
    for record in records:
        if record["task"] == "a" and record["country"] == "us":
            assert record["rows"] == 0 == len(kept_a[kept_a.country == "us"])
            assert all(np.isnan(record[metric]) for metric in ("ctr", "ne", "auc"))
        elif record["task"] == "a":
            rows = kept_a[kept_a.country == record["country"]]
            _check(record, _reference(rows, "a", rows.w.to_numpy()))
        else:
            rows = kept_b[kept_b.country == record["country"]]
            _check(record, _reference(rows, "b", None))


def test_every_task_reading_the_weights_drops_the_row_as_before():
    """Where every task reads the weights, a row with an invalid weight is dropped for all of them (the invalid
    predictions of ``a`` for ``a`` alone)."""
    frame = _frame(seed=9)
    kept = {"a": _kept(frame)[0], "b": frame[np.isfinite(frame.w) & (frame.w >= 0)]}
    tasks = [{k: v for k, v in task.items() if k != "weight_name"} for task in TASKS]
    result = evaluate(frame, tasks, ["ctr", "auc"], weights="w", on_invalid="skip")
    for record in result.records:
        task = record["task"]
        expected = _reference(kept[task], task, kept[task].w.to_numpy())
        assert record["rows"] == expected["rows"]
        assert record["ctr"] == pytest.approx(expected["ctr"], rel=1e-9)
        assert record["auc"] == pytest.approx(expected["auc"], rel=1e-9)


def _ddp_skip(rank: int, world_size: int, path: str) -> tuple[list[dict], int]:
    import torch.distributed as dist

    result = evaluate(path, TASKS, ["ctr", "ne", "auc"], weights="w", on_invalid="skip", by="country", batch_size=50)
    assert dist.is_initialized()
    return result.records, result.rows_skipped


@pytest.mark.ddp
def test_two_ranks_drop_invalid_weights_per_task_as_one_process(ddp_pool, tmp_path):
    """Row groups split between two ranks: each task's values and rows, overall and per segment, are those of
    the rows it keeps (pandas), on every rank, and ``rows_skipped`` counts every rank's rows once."""
    frame = _frame(seed=21)
    kept_a, kept_b = _kept(frame)
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=50)
    for records, skipped in ddp_pool.run(_ddp_skip, str(path)):
        assert skipped == len(frame) - len(kept_a)
        assert [(r["segment"], r["task"]) for r in records] == [
            ("all", "a"),
            ("all", "b"),
            ("country=de", "a"),
            ("country=de", "b"),
            ("country=fr", "a"),
            ("country=fr", "b"),
            ("country=us", "a"),
            ("country=us", "b"),
        ]
        for record in records:
            kept = kept_a if record["task"] == "a" else kept_b
            rows = kept if record["segment"] == "all" else kept[kept.country == record["country"]]
            if rows.empty:  # us: no valid weight, so no row of task a
                assert record["rows"] == 0 and np.isnan(record["ctr"]), record
                continue
            _check(record, _reference(rows, record["task"], rows.w.to_numpy() if record["task"] == "a" else None))


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("bad_weight", [False, True])
def test_split_tasks_warn_as_one_module(bad_weight):
    """Fed apart, the weighted and unweighted tasks warned group by group: "auc is undefined for task 'a'",
    then "... for task 'b'" (and the segments' lines group by group too), even with no invalid row at all,
    where one module said "auc is undefined for tasks 'a', 'b'". One line per metric and reason, naming
    every task, in metric order; the segments' lines metric by metric, then task by task."""
    n = 40
    frame = pd.DataFrame(
        {
            "p_a": np.linspace(0.1, 0.9, n),
            "y_a": np.ones(n, dtype=np.int64),  # one class: auc and ne undefined for every task
            "p_b": np.linspace(0.9, 0.1, n),
            "y_b": np.ones(n, dtype=np.int64),
            "w": np.full(n, 2.0),
            "country": ["de", "fr"] * (n // 2),
        }
    )
    if bad_weight:
        frame.loc[0, "w"] = np.nan
    result = evaluate(frame, TASKS, ["auc", "ctr", "ne"], weights="w", on_invalid="skip", by="country")
    single = "the labels seen hold a single class (or no weight); returning nan."
    assert result.warnings == [
        f"auc is undefined for tasks 'a', 'b' over all rows: {single}",
        f"ne is undefined for tasks 'a', 'b' over all rows: {single}",
        f"auc is undefined for task 'a' in 2 of 2 segments (country=de, country=fr): {single}",
        f"auc is undefined for task 'b' in 2 of 2 segments (country=de, country=fr): {single}",
        f"ne is undefined for task 'a' in 2 of 2 segments (country=de, country=fr): {single}",
        f"ne is undefined for task 'b' in 2 of 2 segments (country=de, country=fr): {single}",
    ]
    assert [(r["segment"], r["task"], r["rows"]) for r in result.records] == [
        ("all", "a", n - bad_weight),
        ("all", "b", n),
        ("country=de", "a", n // 2 - bad_weight),
        ("country=de", "b", n // 2),
        ("country=fr", "a", n // 2),
        ("country=fr", "b", n // 2),
    ]
