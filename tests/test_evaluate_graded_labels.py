"""evaluate with graded relevance (0..4) and a metric of 0/1 labels in one task (evaluate/graded.py).

The ranking names read the grades; ``auc`` (0/1 labels) and ``ne`` (labels in [0, 1]) cannot. The task is checked
by its strictest rule (docs/evaluate.md, "Invalid rows"), so a grade is an invalid row: ``on_invalid="error"``
refuses the file and ``"skip"`` drops the row for every metric of the task. Both stay; the error line now names the
metrics of each kind and the recipe, and a skipping run warns that the ranking names lost those rows (its NDCG was
ranx's over the 0/1 rows without a word: 0.75 against 0.78 over the grades). The recipe (a 0/1 column of its own for
AUC, ``metric_tasks``) gives ranx's NDCG over the grades and scikit-learn's AUC.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.sources import InvalidDataError


def _logs(seed: int, sessions: int = 12, per: int = 10) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = sessions * per
    grades = rng.integers(0, 5, n)
    grades[::per] = np.maximum(grades[::per], 1)  # every session holds a relevant candidate
    grades[0] = 3
    return pa.table({"p": rng.permutation(n) / n + 0.5 / n, "y": grades, "s": np.arange(n) // per})  # tie-free


def _ranx_ndcg(table: pa.Table, k: int) -> float:
    ranx = pytest.importorskip("ranx")
    frame = table.to_pandas()
    frame = frame[
        frame.groupby("s")["y"].transform("max") > 0
    ]  # ranx scores a session without relevant rows 0: ours skip
    qrels = {f"q{s}": {f"d{i}": int(g) for i, g in rows["y"].items()} for s, rows in frame.groupby("s")}
    run = {f"q{s}": {f"d{i}": float(p) for i, p in rows["p"].items()} for s, rows in frame.groupby("s")}
    return float(ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), f"ndcg@{k}"))


def _recipe(strict: list[str], ranked: list[str], said: str, above_one: list[str] = ()) -> str:
    also = (
        rf" \({re.escape(repr(list(above_one)))} take labels in \[0, 1\], so they refuse only the grades above 1\)"
        if above_one
        else ""
    )
    return (
        rf"if they are graded relevance, which {re.escape(repr(ranked))} read as grades while "
        rf"{re.escape(repr(strict))} take {said} only{also}: score .* on a 0/1 column of their own \(e\.g\. `y > 0`\) .*"
        rf"`metric_tasks=\{{'{strict[0]}': \[<that task>\], '{ranked[0]}': \['click'\]\}}` \(--metric-tasks\)"
    )


@pytest.mark.parametrize(
    ("metrics", "strict", "said", "reason"),
    [
        (["auc", "ndcg@5"], ["auc"], "0/1 labels", "that are not 0 or 1"),
        (["ne", "ndcg@5", "mrr@5"], ["ne"], r"labels in \[0, 1\]", r"outside \[0, 1\]"),
        # rows "not 0 or 1" are refused by auc; ne takes soft labels and refuses only the grades above 1 among them
        (["ne", "auc", "ndcg@5"], ["auc"], "0/1 labels", "that are not 0 or 1"),
        (
            {"auc": {"num_bins": 100}, "ndcg@5": {"exponential_gain": True}},
            ["auc"],
            "0/1 labels",
            "that are not 0 or 1",
        ),
    ],
)
def test_grades_next_to_a_metric_of_binary_labels_are_refused_naming_both_kinds_and_the_recipe(
    metrics, strict, said, reason
):
    table = _logs(0)
    ranked = [name for name in metrics if "@" in name]
    count = int(np.count_nonzero(np.asarray(table["y"]) > 1))
    match = (
        rf"^<pyarrow\.Table>: column 'y' \(labels of task 'click'\) has {count} rows {reason} "
        rf"\(first at 0-based data row 0\); {_recipe(strict, ranked, said)}"
    )
    above_one = [name for name in metrics if name in ("ne",) and "auc" in metrics]
    match = match.replace(_recipe(strict, ranked, said), _recipe(strict, ranked, said, above_one))
    with pytest.raises(InvalidDataError, match=match):
        evaluate(table, {"click": ("p", "y")}, metrics, session="s", batch_size=16)


def test_a_soft_label_is_no_grade_ne_refuses_and_the_message_says_so():
    """NE takes labels in [0, 1]: a 0.5 next to the ranking names is scored, and next to AUC the refusal names AUC
    alone as refusing it (it named NE too). Reference: NE by its formula in numpy."""
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.6])
    y = np.array([0.0, 0.5, 1.0, 0.0, 1.0, 0.5])
    table = pa.table({"p": p, "y": y, "s": np.array([0, 0, 0, 1, 1, 1])})
    result = evaluate(table, {"click": ("p", "y")}, ["ne", "ndcg@2"], session="s")
    ce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    rate = y.mean()
    assert result.values["ne/click"] == pytest.approx(ce / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    with pytest.raises(InvalidDataError) as refused:
        evaluate(table, {"click": ("p", "y")}, ["ne", "auc", "ndcg@2"], session="s")
    message = str(refused.value)
    assert "while ['auc'] take 0/1 labels only (['ne'] take labels in [0, 1], so they refuse only the grades" in message
    assert "['ne', 'auc'] take" not in message and "['auc', 'ne'] take" not in message


def test_skipped_grades_are_warned_of_and_ndcg_is_ranx_over_the_rows_kept():
    table = _logs(1)
    grades = np.asarray(table["y"])
    result = evaluate(table, {"click": ("p", "y")}, ["auc", "ndcg@5"], session="s", on_invalid="skip", batch_size=16)
    count = int(np.count_nonzero(grades > 1))
    assert result.rows_skipped == count
    warning = next(w for w in result.warnings if w.startswith(f"{count} rows of column 'y'"))
    assert re.search(
        r"were skipped for every metric of task 'click', \['ndcg@5'\] included, whose values leave", warning
    )
    assert re.search(_recipe(["auc"], ["ndcg@5"], "0/1 labels"), warning)
    kept = table.filter(pa.array(grades <= 1))
    assert result.values["ndcg@5/click"] == pytest.approx(_ranx_ndcg(kept, 5), abs=1e-9)
    assert result.values["ndcg@5/click"] != pytest.approx(_ranx_ndcg(table, 5), abs=1e-3)  # the grades are lost


def test_binary_labels_and_runs_without_a_ranking_name_are_told_as_before():
    table = _logs(2)
    binary = table.set_column(1, "y", pa.array((np.asarray(table["y"]) > 0).astype(np.int64)))
    result = evaluate(binary, {"click": ("p", "y")}, ["auc", "ndcg@5"], session="s")
    assert set(result.values) == {"auc/click", "ndcg@5/click"} and result.warnings == []
    # no graded recipe without a ranking name, nor the hint of missing labels (grades mark none): the bare line
    told = r"has \d+ rows that are not 0 or 1 \(first at 0-based data row 0\)$"
    with pytest.raises(InvalidDataError, match=told):
        evaluate(table, {"click": ("p", "y")}, ["auc"])
    skipped = evaluate(table, {"click": ("p", "y")}, ["auc"], on_invalid="skip")
    assert skipped.rows_skipped > 0 and skipped.warnings == []
    alone = evaluate(table, {"click": ("p", "y")}, ["ndcg@5"], session="s")  # the ranking names alone take grades
    assert alone.values["ndcg@5/click"] == pytest.approx(_ranx_ndcg(table, 5), abs=1e-9)


@pytest.mark.parametrize("seed", range(2))
def test_the_recipe_gives_ranx_ndcg_on_the_grades_and_sklearn_auc_on_their_binary_column(seed):
    from sklearn.metrics import roc_auc_score

    table = _logs(seed)
    table = table.append_column("clicked", pa.array(np.asarray(table["y"]) > 0))
    result = evaluate(
        table,
        {"click": ("p", "clicked"), "graded": ("p", "y")},
        ["auc", "ndcg@5", "ndcg@10"],
        session="s",
        metric_tasks={"auc": ["click"], "ndcg@5": ["graded"], "ndcg@10": ["graded"]},
        batch_size=16,
    )
    for k in (5, 10):
        assert result.values[f"ndcg@{k}/graded"] == pytest.approx(_ranx_ndcg(table, k), abs=1e-9)
    reference = roc_auc_score(np.asarray(table["clicked"]), np.asarray(table["p"]))
    assert result.values["auc/click"] == pytest.approx(reference, abs=1e-9)
