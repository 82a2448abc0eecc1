"""``evaluate()`` from Python warns when the data's ``weight`` column is left unread.

Without ``weights=``, ``evaluate`` weighs every row 1, even where the data holds a ``weight`` column
(a module would weight a task by it). The command line prints a ``warning:`` line saying so; from
Python the same note sat in ``result.warnings`` alone, so a notebook call that forgot ``weights=``
reported unweighted numbers without a word. References: scikit-learn with and without
``sample_weight`` over the same rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import UnreadWeightsWarning, evaluate

N = 400


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    p = rng.uniform(0.02, 0.98, N)
    y = (rng.random(N) < p).astype(np.int64)
    weight = np.where(y == 1, rng.uniform(0.1, 0.5, N), rng.uniform(1.0, 4.0, N))  # weighting moves the values
    return pd.DataFrame({"p": p, "y": y, "weight": weight})


def _refs(frame: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
    w = np.ones(len(frame)) if weights is None else weights
    y, p = frame["y"].to_numpy(), frame["p"].to_numpy()
    return {"ctr/click": float(np.sum(w * y) / np.sum(w)), "auc/click": roc_auc_score(y, p, sample_weight=w)}


def test_the_unread_weight_column_is_a_python_warning_naming_the_fix():
    frame = _frame()
    unweighted, weighted = _refs(frame, None), _refs(frame, frame["weight"].to_numpy())
    assert unweighted["auc/click"] != pytest.approx(weighted["auc/click"], rel=1e-3)  # the data tells them apart
    with pytest.warns(UnreadWeightsWarning, match=r"column 'weight' is in the data but not used") as caught:
        result = evaluate(frame, {"click": ("p", "y")}, ["ctr", "auc"])
    assert result.values == pytest.approx(unweighted, rel=1e-12)
    ours = [w for w in caught if w.category is UnreadWeightsWarning]
    assert len(ours) == 1
    assert str(ours[0].message) == result.warnings[0]  # the same note, also kept in the result
    assert "weights='weight'" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller's line, not the package's


def test_no_warning_when_the_column_is_read_or_absent():
    frame = _frame()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weighted = evaluate(frame, {"click": ("p", "y")}, ["ctr", "auc"], weights="weight")
        absent = evaluate(frame.drop(columns="weight"), {"click": ("p", "y")}, ["ctr", "auc"])
    assert not [w for w in caught if issubclass(w.category, UnreadWeightsWarning)]
    # the exact AUC keeps weights as float32 (docs/evaluate.md, Memory): float64 weights agree to ~1e-7
    assert weighted.values == pytest.approx(_refs(frame, frame["weight"].to_numpy()), rel=1e-6)
    assert absent.values == pytest.approx(_refs(frame, None), rel=1e-12)


def test_the_command_line_prints_the_note_once(tmp_path, capsys):
    frame = _frame()
    frame.to_parquet(tmp_path / "d.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            ["evaluate", str(tmp_path / "d.parquet"), "--task", "click=p:y", "--metrics", "ctr", "--no-progress"]
        )
    assert code == 0
    assert not [w for w in caught if issubclass(w.category, UnreadWeightsWarning)]  # printed as its line instead
    err = capsys.readouterr().err
    assert err.count("column 'weight' is in the data but not used") == 1
    assert err.startswith("warning: column 'weight'")
