"""Offline evaluation as a recommender engineer uses it on day one: findings of a review, each against a reference.

References are independent of the package: pandas ``groupby`` for the segments and their row counts,
scikit-learn (``roc_auc_score``, ``log_loss``) and numpy formulas written here for the values.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import evaluate

METRICS = ["ctr", "ne", "auc"]


def _two_tasks() -> pd.DataFrame:
    """Task ``like`` has no label in country ``de`` (all null), and in ``jp`` neither task has a valid row."""
    rng = np.random.default_rng(5)
    n = 240
    country = rng.choice(["de", "fr", "jp", "us"], n)
    frame = pd.DataFrame(
        {
            "p_click": rng.uniform(0.05, 0.95, n),
            "y_click": rng.integers(0, 2, n).astype(np.float64),
            "p_like": rng.uniform(0.05, 0.95, n),
            "y_like": rng.integers(0, 2, n).astype(np.float64),
            "country": country,
        }
    )
    frame.loc[frame.country == "de", "y_like"] = np.nan
    frame.loc[frame.country == "jp", ["y_click", "y_like"]] = np.nan
    return frame


def _reference(rows: pd.DataFrame, task: str) -> dict[str, float]:
    """``rows``, ``ctr``, ``ne`` and ``auc`` of one task over its rows with a label (nan without one)."""
    rows = rows[rows[f"y_{task}"].notna()]
    if rows.empty:
        return {"rows": 0, "ctr": math.nan, "ne": math.nan, "auc": math.nan}
    y, p = rows[f"y_{task}"].to_numpy(), rows[f"p_{task}"].to_numpy()
    ctr = y.mean()
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr)) if 0 < ctr < 1 else math.nan
    auc = roc_auc_score(y, p) if 0 < ctr < 1 else math.nan
    return {"rows": len(rows), "ctr": ctr, "ne": log_loss(y, p, labels=[0, 1]) / entropy, "auc": auc}


def _expected(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    """Every segment of the data (pandas ``groupby`` over all rows) for every task, overall first."""
    out = {}
    for task in ("click", "like"):
        out["all", task] = _reference(frame, task)
        for country, rows in frame.groupby("country"):
            out[f"country={country}", task] = _reference(rows, task)
    return out


def _assert_records(records: list[dict], frame: pd.DataFrame) -> None:
    want = _expected(frame)
    got = {(r["segment"], r["task"]): r for r in records}
    assert set(got) == set(want)
    for key, values in want.items():
        assert got[key]["rows"] == values["rows"], key
        for metric in METRICS:
            value = got[key][metric]
            value = math.nan if value is None else value  # strict JSON: null
            assert value == pytest.approx(values[metric], rel=1e-9, nan_ok=True), (key, metric)


def test_a_segment_whose_rows_were_all_skipped_for_a_task_has_a_record_of_zero_rows(tmp_path):
    """``--on-invalid skip``: a segment left without a valid row for one task (``de``: like's labels all null) or
    for every task (``jp``) had no record for it, so outputs pivoted by segment and task missed cells, and ``jp``,
    read from the data, vanished from the report. Every segment found in the data now has a record per task, with
    ``rows`` 0 and nan values where none of its rows was valid, in the records, ``.values``, the table and the
    ``.json``, ``.csv`` and ``.parquet`` outputs alike, and a warning line per task says so."""
    frame = _two_tasks()
    tasks = ["click=p_click:y_click", "like=p_like:y_like"]
    result = evaluate(frame, tasks, METRICS, by="country", on_invalid="skip")
    _assert_records(result.records, frame)
    assert math.isnan(result.values["ctr/like/country=de"])
    assert math.isnan(result.values["ctr/click/country=jp"])
    assert ["country=jp", "like", "0", "nan", "nan", "nan"] in [
        line.split() for line in result.format_table().splitlines()
    ]
    assert (
        "task 'click' has no valid row in 1 of 4 segments (country=jp): every row there was invalid for it and "
        "skipped; its values there are nan, rows 0."
    ) in result.warnings
    assert any(
        line.startswith("task 'like' has no valid row in 2 of 4 segments (country=de, country=jp)")
        for line in result.warnings
    )

    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    args = ["evaluate", str(path), *[f"--task={t}" for t in tasks], "--metrics", ",".join(METRICS)]
    args += ["--by", "country", "--on-invalid", "skip", "--no-progress"]
    for suffix in ("json", "csv", "parquet"):
        output = tmp_path / f"out.{suffix}"
        assert cli.main([*args, "--output", str(output)]) == 0
        if suffix == "json":
            payload = json.loads(output.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
            records = payload["records"]
        elif suffix == "csv":
            records = pd.read_csv(output).to_dict("records")  # "nan" reads as NaN
        else:
            records = pq.read_table(output).to_pylist()
        _assert_records(records, frame)


def test_every_task_invalid_in_one_segment_keeps_the_segment_with_one_group_of_tasks():
    """Tasks reading the same columns (one module): a segment whose every row is invalid still has its records."""
    frame = _two_tasks()
    result = evaluate(frame, ["click=p_click:y_click"], METRICS, by="country", on_invalid="skip")
    assert [r["segment"] for r in result.records] == ["all", "country=de", "country=fr", "country=jp", "country=us"]
    jp = result.records[3]
    assert jp["rows"] == 0 and all(math.isnan(jp[m]) for m in METRICS)
    assert jp["rows"] == _reference(frame[frame.country == "jp"], "click")["rows"]
