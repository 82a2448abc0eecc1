"""``evaluate`` reads the user and session ids only where a metric of the run reads them.

A ``user`` (``session``) column given next to metrics that do not average over users (rank within
sessions) used to be read for every task: its null ids failed the run, or with ``on_invalid="skip"``
dropped rows from NE and AUC, and a missing or floating column was refused. References: scikit-learn
and numpy over every row (the ids play no part), pandas for the grouped AUC over the rows with an id.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import InvalidDataError, evaluate

N = 300


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "p": rng.uniform(0.05, 0.95, N),
            "y": (rng.random(N) < 0.3).astype(np.int64),
            "user": pd.array(rng.integers(0, 12, N), dtype="Int64"),
            "session": pd.array(rng.integers(0, 40, N), dtype="Int64"),
        }
    )
    frame.loc[: N // 10 - 1, ["user", "session"]] = pd.NA  # the first tenth without ids
    return frame


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    rate = y.mean()
    return log_loss(y, p) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))


@pytest.mark.parametrize("on_invalid", ["error", "skip"])
@pytest.mark.parametrize("ids", [{"user": "user"}, {"session": "session"}, {"user": "user", "session": "session"}])
def test_ids_no_metric_reads_are_not_read(on_invalid, ids):
    frame = _frame()
    result = evaluate(frame, {"t": ("p", "y")}, ["ne", "auc"], on_invalid=on_invalid, **ids)
    p, y = frame["p"].to_numpy(), frame["y"].to_numpy()
    assert result.rows_read == N and result.rows_skipped == 0
    assert result.values == pytest.approx({"ne/t": _ne(p, y), "auc/t": roc_auc_score(y, p)}, rel=1e-9)
    for role, column in ids.items():
        assert any(f"{role} ids {column!r}" in line and "not read" in line for line in result.warnings), result.warnings


def test_a_missing_or_floating_id_column_no_metric_reads_is_no_error():
    frame = _frame().drop(columns=["session"]).assign(user=lambda f: f["user"].astype(float))
    result = evaluate(frame, {"t": ("p", "y")}, ["ctr"], user="user", session="session")
    assert result.values == pytest.approx({"ctr/t": frame["y"].mean()})
    assert len([line for line in result.warnings if "not read" in line]) == 2


def test_user_ids_read_for_gauc_sessions_not_read_without_a_ranking_metric():
    """``gauc`` reads the user ids (a null one is refused, or with skip drops its row); the session ids, which
    no metric reads, drop nothing."""
    frame = _frame()
    frame.loc[N // 10 : N // 5 - 1, "session"] = pd.NA  # more rows without a session id: not read, kept
    with pytest.raises(InvalidDataError, match="column 'user'"):
        evaluate(frame, {"t": ("p", "y")}, ["ctr", "gauc"], user="user", session="session")
    result = evaluate(frame, {"t": ("p", "y")}, ["ctr", "gauc"], user="user", session="session", on_invalid="skip")
    kept = frame[frame["user"].notna()]
    assert result.rows_skipped == N // 10
    assert result.values["ctr/t"] == pytest.approx(kept["y"].mean())
    per_user = [
        roc_auc_score(g["y"], g["p"]) for _, g in kept.groupby("user") if g["y"].nunique() == 2
    ]  # users of one class have no AUC
    assert result.values["gauc/t"] == pytest.approx(np.mean(per_user), rel=1e-9)
    assert any("session ids 'session'" in line for line in result.warnings)
    assert not any("user ids 'user'" in line and "not read" in line for line in result.warnings)


def test_cli_prints_the_note_and_keeps_the_rows(tmp_path, capsys):
    frame = _frame()
    path = tmp_path / "logs.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "result.json"
    main(["evaluate", str(path), "--task", "t=p:y", "--metrics", "ne", "--user", "user", "--output", str(out)])
    printed = capsys.readouterr()
    assert "user ids 'user' (--user) were not read" in printed.out + printed.err
    payload = json.loads(out.read_text())
    record = payload["records"][0]
    assert record["rows"] == N
    p, y = frame["p"].to_numpy(), frame["y"].to_numpy()
    assert record["ne"] == pytest.approx(_ne(p, y), rel=1e-9)
