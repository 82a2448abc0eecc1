"""``evaluate()`` from Python raises its notes that qualify its numbers as Python warnings, at the caller's line.

The command line prints every note of ``EvaluationResult.warnings`` as a ``warning:`` line; from Python the
lines sat in the result alone (but for the unread ``weight`` column's), so a notebook call whose rows were
dropped for some metrics, or whose segments were split by stray spaces, reported its numbers without a word.
Each caveat is now a :class:`ResultCaveatWarning` naming the test file as its filename, and each line of undefined
values (per metric, task and reason, counting the segments) the package's :class:`UndefinedMetricWarning`, raised
once the result is complete; purely informational notes (ids no metric reads, ``ignore_index``'s count) stay lines
only, and the command line still says each line once and raises none. References: pandas ``groupby`` and plain
Python for the values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import ResultCaveatWarning, UnreadWeightsWarning, evaluate


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, (ResultCaveatWarning, UndefinedMetricWarning))]


def _only(caught, needle: str):
    mine = [w for w in caught if needle in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    assert mine[0].filename == __file__  # the caller's line, not the package's
    return mine[0]


def test_stray_spaces_and_the_empty_text_in_by_are_caveats_and_the_values_are_pandas():
    frame = pd.DataFrame(
        {"p": [0.2, 0.7, 0.4, 0.9, 0.3, 0.6], "y": [0, 1, 1, 1, 0, 0], "c": ["fr", "fr ", "fr", "", "us", "us"]}
    )
    result, caught = _caught(lambda: evaluate(frame, {"click": ("p", "y")}, ["ctr"], by="c"))
    spaced = _only(caught, "spaces around")
    empty = _only(caught, "empty text")
    assert spaced.category is ResultCaveatWarning and empty.category is ResultCaveatWarning
    assert [str(spaced.message), str(empty.message)] == result.warnings  # the same lines, in the result's order
    expected = frame.groupby("c")["y"].mean()  # "fr" and "fr " apart, "" a value of its own
    assert {r["c"]: r["ctr"] for r in result.records[1:]} == pytest.approx(expected.to_dict(), rel=1e-12)


def test_a_task_left_without_a_valid_row_in_a_segment_is_a_caveat():
    frame = pd.DataFrame(
        {
            "p": [0.2, 0.7, 0.4, 0.9, 0.3, 0.6],
            "y": [0, 1, 1, 1, 0, 0],
            "z": [1.0, 0.0, np.nan, np.nan, 1.0, 0.0],  # no valid label of task "like" for country "de"
            "c": ["fr", "fr", "de", "de", "us", "us"],
        }
    )
    call = lambda: evaluate(  # noqa: E731
        frame, {"click": ("p", "y"), "like": ("p", "z")}, ["ctr"], by="c", on_invalid="skip"
    )
    result, caught = _caught(call)
    note = _only(caught, "has no valid row in 1 of 3 segments (c=de)")
    assert note.category is ResultCaveatWarning and str(note.message) in result.warnings
    like = {r["c"]: (r["rows"], r["ctr"]) for r in result.records if r["task"] == "like" and r["c"] is not None}
    kept = frame.dropna(subset=["z"]).groupby("c")["z"].agg(["size", "mean"])
    assert like["de"][0] == 0 and np.isnan(like["de"][1])
    assert {k: v for k, v in like.items() if k != "de"} == {
        c: (kept.at[c, "size"], kept.at[c, "mean"]) for c in kept.index
    }


def test_graded_labels_skipped_for_the_ranking_names_are_a_caveat():
    table = pa.table({"p": [0.9, 0.7, 0.4, 0.8, 0.3, 0.2], "y": [0, 3, 1, 1, 0, 0], "s": [1, 1, 1, 2, 2, 2]})
    call = lambda: evaluate(table, {"click": ("p", "y")}, ["auc", "ndcg@2"], session="s", on_invalid="skip")  # noqa: E731
    result, caught = _caught(call)
    note = _only(caught, "were skipped for every metric of task 'click'")
    assert note.category is ResultCaveatWarning and result.rows_skipped == 1


def test_from_logits_that_changed_nothing_is_a_caveat():
    table = pa.table({"p": [0.5, 2.0, 3.0], "y": [0.4, 1.5, 3.5]})
    call = lambda: evaluate(  # noqa: E731
        table, {"watch": ("p", "y")}, ["mse"], from_logits=True, metric_tasks={"mse": ["watch"]}
    )
    result, caught = _caught(call)
    note = _only(caught, "changed nothing")
    assert note.category is ResultCaveatWarning
    assert result.values["mse/watch"] == pytest.approx(np.mean((np.array([0.5, 2.0, 3.0]) - [0.4, 1.5, 3.5]) ** 2))


def test_the_unread_weight_column_is_a_caveat_of_its_own_category():
    table = pa.table({"p": [0.2, 0.9, 0.6], "y": [0, 1, 0], "weight": [1.0, 1.0, 3.0]})
    result, caught = _caught(lambda: evaluate(table, {"click": ("p", "y")}, ["ctr"]))
    note = _only(caught, "is in the data but not used")
    assert note.category is UnreadWeightsWarning and issubclass(UnreadWeightsWarning, ResultCaveatWarning)
    assert result.values == {"ctr/click": pytest.approx(1 / 3, rel=1e-12)}


def test_informational_notes_stay_lines_only_and_undefined_values_are_raised_once_per_line():
    table = pa.table({"p": [0.2, 0.9, 0.6, 0.4], "y": [0, 1, 0, 0], "u": [1, 1, 2, 2], "c": ["a", "a", "b", "b"]})
    result, caught = _caught(lambda: evaluate(table, {"click": ("p", "y")}, ["ctr", "auc"], user="u", by="c"))
    # the ids not read: a line only; b's AUC (a single class there, so nan): the package's UndefinedMetricWarning
    undefined = _only(caught, "auc is undefined for task 'click' in 1 of 2 segments (c=b)")
    assert undefined.category is UndefinedMetricWarning and len(caught) == 1
    assert str(undefined.message) in result.warnings
    assert any("user ids 'u' (--user) were not read" in line for line in result.warnings)
    assert np.isnan(result.values["auc/click/c=b"]) and result.values["auc/click/c=a"] == 1.0


def test_undefined_values_are_raised_once_per_metric_task_and_reason_not_per_segment():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"p": rng.random(400), "y": np.zeros(400, dtype=np.int64), "c": rng.integers(0, 50, 400)})
    frame.loc[frame.index[:3], "y"] = 1  # at most 3 segments hold a click: every other one is one class
    result, caught = _caught(lambda: evaluate(frame, {"click": ("p", "y")}, ["ne", "auc"], by="c"))
    single = int((frame.groupby("c")["y"].nunique() == 1).sum())  # pandas: the segments of a single class
    raised = [str(w.message) for w in caught if w.category is UndefinedMetricWarning]
    assert len(raised) == 2 and raised == [line for line in result.warnings if "is undefined" in line]
    assert f"ne is undefined for task 'click' in {single} of 50 segments" in raised[0]
    assert f"auc is undefined for task 'click' in {single} of 50 segments" in raised[1]


def test_an_error_filter_on_undefined_values_raises_after_the_result_is_complete():
    table = pa.table({"p": [0.2, 0.9, 0.6, 0.4], "y": [0, 1, 0, 0], "c": ["a", "a", "b", "b"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        with pytest.raises(UndefinedMetricWarning, match=r"auc is undefined for task 'click' in 1 of 2 segments"):
            evaluate(table, {"click": ("p", "y")}, ["auc"], by="c")
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # the documented way to keep the result
        result = evaluate(table, {"click": ("p", "y")}, ["auc"], by="c")
    assert result.values["auc/click/c=a"] == 1.0 and np.isnan(result.values["auc/click/c=b"])


def test_each_warning_is_raised_once_even_where_two_segmentations_say_the_same_line():
    frame = pd.DataFrame(
        {"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 0], "c": ["fr", "fr ", "fr", "us"], "d": [1, 2, 1, 2]}
    )
    result, caught = _caught(lambda: evaluate(frame, {"click": ("p", "y")}, ["ctr"], by=[["c"], ["c", "d"]]))
    assert [str(w.message) for w in caught] == result.warnings
    assert len(result.warnings) == len(set(result.warnings)) == 1


def test_the_command_line_prints_each_note_once_and_raises_none(tmp_path, capsys):
    frame = pd.DataFrame(
        {"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 0], "c": ["fr", "fr ", "fr", "us"], "weight": [1.0, 2, 3, 4]}
    )
    frame.to_parquet(tmp_path / "d.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["evaluate", str(tmp_path / "d.parquet"), "--task", "click=p:y", "--metrics", "ctr", "--by", "c"])
    assert code == 0
    assert not [w for w in caught if issubclass(w.category, ResultCaveatWarning)]
    err = capsys.readouterr().err
    assert err.count("spaces around") == 1 and err.count("is in the data but not used") == 1
