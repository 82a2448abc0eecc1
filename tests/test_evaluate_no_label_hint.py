"""The "no label" hint of an invalid label column's refusal: said where the invalid labels may mark a missing label.

``on_invalid="error"`` refuses a label column's invalid rows with a line that may end with the way out for rows
without a label (``--on-invalid skip`` drops them for the tasks reading that column alone). It applies where the
invalid labels are nulls, NaNs or negative marks (-1 on unclicked rows); a grade of 2 or 3 (graded relevance, or a
corrupt click label) marks no missing label, and the line then ends without it. The expectation of each case is
written from the data here (which values are invalid, whether any is null, NaN or negative), not read from the code.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchmetrics_ext.evaluate import InvalidDataError, evaluate

HINT = "if they mark rows without a label"


def _refusal(labels: list, metrics: list[str], **kwargs) -> str:
    n = len(labels)
    table = pa.table({"p": np.linspace(0.1, 0.9, n), "y": pa.array(labels, pa.float64()), "s": [1, 2] * (n // 2)})
    with pytest.raises(InvalidDataError) as err:
        evaluate(table, {"click": ("p", "y")}, metrics, **kwargs)
    return str(err.value)


def _applies(labels: list) -> bool:
    """Whether some invalid label is null, NaN or negative: a mark of a missing label (the reference)."""
    return any(v is None or np.isnan(v) or v < 0 for v in labels if v is None or v not in (0.0, 1.0))


CASES = [
    pytest.param([0, 3, 1, 2, 0, 4], id="grades"),
    pytest.param([0, 2, 1, 2, 0, 1], id="one-grade"),
    pytest.param([0, 0.5, 1, 0.5, 0, 1], id="soft-labels"),
    pytest.param([0, None, 1, 0, None, 1], id="nulls"),
    pytest.param([0, float("nan"), 1, 0, 1, 1], id="nan"),
    pytest.param([0, -1, 1, 2, 3, 1], id="minus-one-among-grades"),
    pytest.param([0, -1, 1, -100, 0, 1], id="two-padding-marks"),
]


@pytest.mark.parametrize("labels", CASES)
def test_the_hint_ends_the_line_where_a_label_may_be_missing(labels):
    message = _refusal(labels, ["auc"])
    assert (HINT in message) is _applies(labels), message


@pytest.mark.parametrize("labels", CASES)
def test_grades_beside_a_ranking_name_get_the_graded_recipe_alone(labels):
    message = _refusal(labels, ["auc", "ndcg@2"], session="s")
    assert (HINT in message) is _applies(labels), message
    if all(v is not None and not np.isnan(v) and v >= 0 for v in labels):  # grades: the graded recipe is said
        assert "if they are graded relevance" in message


def test_a_column_of_grades_and_nulls_gets_the_hint_on_the_null_line_only():
    message = _refusal([0, 2, None, 3, 1, None], ["auc"])
    lines = message.split("\n")
    assert len(lines) == 2, message
    (null_line,) = [line for line in lines if "null" in line]
    (grade_line,) = [line for line in lines if "not 0 or 1" in line]
    assert HINT in null_line and HINT not in grade_line


def test_a_prediction_column_never_gets_it():
    table = pa.table({"p": [0.1, float("nan"), 0.3, 0.4], "y": [0, 1, 1, 0]})
    with pytest.raises(InvalidDataError) as err:
        evaluate(table, {"click": ("p", "y")}, ["auc"])
    assert HINT not in str(err.value)
