"""A record's ``rows`` counts the rows that carry weight for its task, overall and in every segment.

A conversion head scored on clicked rows only (ESMM's CVR: ``weights`` 0 on unclicked rows, the click task given
``weight_name: None``) reported ``rows`` 6 where 3 rows weigh anything, and rows of weight 0 next to
``ignore_index`` rows were counted too: the table read as if every impression had a conversion label. ``rows`` is now
the rows valid for the task (not skipped, not left out by ``ignore_index``) whose weight for it is not 0; a task
without weights counts every such row. ``result.rows_read`` stays the raw count of rows read. The references are
pandas ``groupby`` counts over the rows as written (and scikit-learn for the values beside them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext.evaluate import evaluate

TASKS = [
    {"name": "click", "prediction_name": "p", "label_name": "y_click", "weight_name": None},
    {"name": "conv", "prediction_name": "p", "label_name": "y_conv"},
]


def _frame(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "p": rng.random(n),
            "y_click": click,
            "y_conv": click * rng.integers(0, 2, n),
            "w": click * rng.choice([0.5, 1.0, 2.0], n),  # weight 0 on the unclicked rows: the conversion mask
            "c": rng.choice(["de", "fr", "us", "jp"], n),
        }
    )


def _rows(result) -> dict[tuple[str, str], int]:
    return {(r["segment"], r["task"]): r["rows"] for r in result.records}


def _expected(frame: pd.DataFrame, counted: dict[str, pd.Series]) -> dict[tuple[str, str], int]:
    """``counted[task]``: the rows that weigh for the task; their count overall and per segment (pandas)."""
    out = {}
    for task, mask in counted.items():
        out[("all", task)] = int(mask.sum())
        for c, n in frame[mask].groupby("c").size().items():
            out[(f"c={c}", task)] = int(n)
        for c in set(frame["c"]) - set(frame.loc[mask, "c"]):
            out[(f"c={c}", task)] = 0
    return out


@pytest.mark.parametrize("seed", range(3))
def test_a_conversion_task_masked_by_weight_zero_counts_its_weighted_rows(seed):
    frame = _frame(seed)
    result = evaluate(frame, TASKS, ["ctr", "auc"], weights="w", by="c", batch_size=64)
    everything = pd.Series(True, index=frame.index)
    assert _rows(result) == _expected(frame, {"click": everything, "conv": frame["w"] != 0})
    assert result.rows_read == len(frame)
    clicked = frame[frame["w"] != 0]  # the values of the rows counted: the same rows
    want = roc_auc_score(clicked["y_conv"], clicked["p"], sample_weight=clicked["w"])
    assert result.values["auc/conv"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_weight_zero_and_ignore_index_rows_are_both_left_out_of_rows(seed):
    frame = _frame(seed)
    rng = np.random.default_rng([seed, 1])
    frame["y_click"] = np.where(rng.random(len(frame)) < 0.2, -100, frame["y_click"])
    frame["w"] = np.where(rng.random(len(frame)) < 0.3, 0.0, 1.0)
    tasks = [{"name": "click", "prediction_name": "p", "label_name": "y_click"}]
    result = evaluate(frame, tasks, ["ctr"], weights="w", by="c", ignore_index=-100, batch_size=50)
    counted = (frame["y_click"] != -100) & (frame["w"] != 0)
    assert _rows(result) == _expected(frame, {"click": counted})


def test_skipped_rows_and_weight_zero_rows_are_left_out_per_task():
    frame = _frame(7)
    frame["y_conv"] = frame["y_conv"].astype(float).where(frame["y_click"] == 1)  # null where unclicked
    frame.loc[::5, "w"] = 0.0  # and weight 0 on some clicked rows too
    tasks = [
        {"name": "click", "prediction_name": "p", "label_name": "y_click"},
        {"name": "conv", "prediction_name": "p", "label_name": "y_conv"},
    ]
    result = evaluate(frame, tasks, ["ctr"], weights="w", by="c", on_invalid="skip")
    weighted = frame["w"] != 0
    want = _expected(frame, {"click": weighted, "conv": weighted & frame["y_conv"].notna()})
    assert _rows(result) == want


def test_a_segment_of_weight_zero_rows_only_has_rows_zero_and_nan_values():
    table = pa.table(
        {"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 0], "w": [1.0, 2.0, 0.0, 0.0], "c": ["a", "a", "b", "b"]}
    )
    with pytest.warns(UndefinedMetricWarning, match=r"ctr is undefined .* \(c=b\): no samples seen in this segment"):
        result = evaluate(table, {"click": ("p", "y")}, ["ctr"], weights="w", by="c")
    assert [(r["segment"], r["rows"]) for r in result.records] == [("all", 2), ("c=a", 2), ("c=b", 0)]
    assert np.isnan(result.records[2]["ctr"]) and result.records[1]["ctr"] == pytest.approx(2 / 3)
