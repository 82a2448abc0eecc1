"""``evaluate(ignore_index=...)`` / ``--ignore-index``: rows whose label equals it are left out, per task.

TorchMetrics' classification and retrieval metrics drop the rows whose target equals ``ignore_index`` (``-100``
in Hugging Face code, ``-1`` for unlabelled rows). ``evaluate`` refused such labels as invalid rows; with the
option each task leaves out the rows of its own label column that hold the value (another task, reading another
label column, keeps them), every metric alike, the ranking names treating them as masked candidates. The
references are scikit-learn and numpy on the rows with the label removed, per task, overall and per segment
(pandas ``groupby``), and plain Python MRR over each session's kept rows.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import InvalidDataError, ResultCaveatWarning, evaluate

PAD = -100
METRICS = ["ctr", "ne", "auc", "mrr@3"]
TASKS = {"click": ("p", "y_click"), "like": ("q", "y_like")}


def _frame(seed: int = 3, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p, q = rng.uniform(0.02, 0.98, n), rng.uniform(0.02, 0.98, n)
    frame = pd.DataFrame(
        {
            "p": p,
            "q": q,
            "y_click": (rng.random(n) < p).astype(np.int64),
            "y_like": (rng.random(n) < q).astype(np.int64),
            "session": rng.integers(0, 40, n),
            "country": rng.choice(["de", "fr", "us"], n),
        }
    )
    # padding in different rows of each label column: a row left out for one task counts for the other
    frame.loc[rng.random(n) < 0.25, "y_click"] = PAD
    frame.loc[rng.random(n) < 0.15, "y_like"] = PAD
    return frame


def _mrr(rows: pd.DataFrame, pred: str, label: str, k: int = 3) -> float:
    """Mean over sessions with a relevant row of 1/rank of the first relevant one within the top k (plain Python)."""
    ranks = []
    for _, session in rows.groupby("session"):
        labels = session.sort_values(pred, ascending=False, kind="stable")[label].tolist()
        if not any(labels):
            continue
        first = labels.index(1) + 1
        ranks.append(1.0 / first if first <= k else 0.0)
    return float(np.mean(ranks)) if ranks else math.nan


def _reference(rows: pd.DataFrame, pred: str, label: str) -> dict[str, float]:
    kept = rows[rows[label] != PAD]
    y, p = kept[label].to_numpy(), kept[pred].to_numpy()
    rate = y.mean()
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return {
        "rows": len(kept),
        "ctr": rate,
        "ne": loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)),
        "auc": roc_auc_score(y, p),
        "mrr@3": _mrr(kept, pred, label),
    }


def _check(records: list[dict], frame: pd.DataFrame) -> None:
    for record in records:
        rows = frame if record["segment"] == "all" else frame[frame["country"] == record["country"]]
        expected = _reference(rows, *TASKS[record["task"]])
        for name, value in expected.items():
            assert record[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (record["segment"], record["task"], name)


def test_each_task_leaves_out_its_own_padded_rows_overall_and_per_segment():
    frame = _frame()
    with pytest.raises(InvalidDataError, match=r"column 'y_click' \(labels of task 'click'\) has \d+ rows"):
        evaluate(frame, TASKS, METRICS, session="session")  # without the option: invalid rows
    result = evaluate(frame, TASKS, METRICS, session="session", by="country", ignore_index=PAD, batch_size=50)
    assert len(result.records) == 2 * (1 + 3)
    _check(result.records, frame)
    assert result.rows_skipped == 0 and result.rows_read == len(frame)
    clicks, likes = int((frame["y_click"] == PAD).sum()), int((frame["y_like"] == PAD).sum())
    assert result.warnings[0].startswith(
        f"ignore_index=-100 (--ignore-index) left out {clicks} rows of label column 'y_click' (task 'click'); "
        f"{likes} rows of label column 'y_like' (task 'like')"
    )


def test_the_note_is_a_line_only_and_gauc_reads_the_kept_rows_too():
    frame = _frame(5)
    frame["user"] = frame["session"] % 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(frame, {"click": ("p", "y_click")}, ["gauc"], user="user", ignore_index=PAD)
    assert not [w for w in caught if issubclass(w.category, ResultCaveatWarning)]  # as asked: not a caveat
    kept = frame[frame["y_click"] != PAD]
    aucs = []
    for _, rows in kept.groupby("user"):
        if rows["y_click"].nunique() == 2:
            aucs.append(roc_auc_score(rows["y_click"], rows["p"]))
    assert result.values["gauc/click"] == pytest.approx(np.mean(aucs), rel=1e-9)  # the mean over users of both classes


def test_a_padded_rows_other_columns_are_not_checked_for_the_tasks_leaving_it_out():
    frame = _frame(7, 60)
    row = frame.index[frame["y_click"] == PAD][0]
    frame.loc[row, "p"] = np.nan  # a padded candidate's score may be anything
    result = evaluate(frame, {"click": ("p", "y_click")}, ["ctr", "auc"], ignore_index=PAD)
    kept = frame[frame["y_click"] != PAD]
    assert result.values["auc/click"] == pytest.approx(roc_auc_score(kept["y_click"], kept["p"]), rel=1e-12)
    # another task reading the same scores keeps the row: its NaN score is then invalid, as without the option
    with pytest.raises(InvalidDataError, match=r"column 'p' \(predictions of task 'click'\) has 1 row that is"):
        evaluate(frame, {"click": ("p", "y_click"), "other": ("p", "y_like")}, ["ctr"], ignore_index=PAD)


def test_a_null_label_is_still_invalid_and_minus_one_works_as_a_mark():
    frame = _frame(9, 80).assign(y_click=lambda f: f["y_click"].replace(PAD, -1).astype("float64"))
    frame.loc[frame.index[0], "y_click"] = np.nan
    with pytest.raises(InvalidDataError, match=r"column 'y_click' \(labels of task 'click'\) has 1 row that is null"):
        evaluate(frame, {"click": ("p", "y_click")}, ["ctr"], ignore_index=-1)
    result = evaluate(frame, {"click": ("p", "y_click")}, ["ctr"], ignore_index=-1, on_invalid="skip")
    kept = frame[(frame["y_click"] != -1) & frame["y_click"].notna()]
    assert result.values["ctr/click"] == pytest.approx(kept["y_click"].mean(), rel=1e-12)
    assert result.records[0]["rows"] == len(kept) and result.rows_skipped == 1


def test_a_segment_whose_rows_are_all_padding_for_a_task_has_a_record_of_zero_rows():
    frame = _frame(11, 90)
    frame.loc[frame["country"] == "de", "y_like"] = PAD
    result = evaluate(frame, TASKS, ["ctr"], by="country", ignore_index=PAD)
    de = next(r for r in result.records if r["task"] == "like" and r["country"] == "de")
    assert de["rows"] == 0 and math.isnan(de["ctr"])
    assert any("labelled ignore_index=-100" in line for line in result.warnings)


def test_the_command_line_and_a_config_file_give_the_python_values(tmp_path, capsys):
    frame = _frame(13)
    frame.to_parquet(tmp_path / "d.parquet")
    base = ["evaluate", str(tmp_path / "d.parquet"), "--metrics", ",".join(METRICS), "--session", "session"]
    tasks = ["--task", "click=p:y_click", "--task", "like=q:y_like", "--by", "country", "--no-progress"]
    out = tmp_path / "r.json"
    assert main([*base, *tasks, "--ignore-index", "-100", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ignore_index=-100 (--ignore-index) left out") == 1
    written = json.loads(out.read_text())
    _check(written["records"], frame)
    assert written["provenance"]["ignore_index"] == -100
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"ignore_index": -100, "session": "session", "by": "country"}))
    out2 = tmp_path / "r2.json"
    assert (
        main([*base[:2], "--config", str(config), "--metrics", ",".join(METRICS), *tasks[:4], "--output", str(out2)])
        == 0
    )
    assert json.loads(out2.read_text())["records"] == written["records"]


@pytest.mark.parametrize("text", ["x", "nan", "inf"])
def test_the_command_line_refuses_a_value_that_is_no_finite_number(tmp_path, capsys, text):
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", str(tmp_path / "d.parquet"), "--task", "c=p:y", f"--ignore-index={text}"])
    assert exited.value.code == 2 and "--ignore-index" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "error"), [("-100", TypeError), (True, TypeError), ([-100], TypeError), (float("nan"), ValueError)]
)
def test_python_refuses_a_value_that_is_no_finite_number_naming_the_argument(value, error):
    with pytest.raises(error, match="ignore_index"):
        evaluate(_frame(1, 10), TASKS, ["ctr"], ignore_index=value)


def test_a_config_file_refuses_a_value_that_is_no_number(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"ignore_index": "-100"}))
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "x.parquet", "--config", str(config), "--task", "c=p:y"])
    assert exited.value.code == 2 and "key 'ignore_index': expected a finite number" in capsys.readouterr().err


def test_the_modules_padding_hint_names_the_option_of_evaluate():
    module = tmx.RecMetricModule([tmx.RecTaskInfo("click", session_id_name="s")], ["mrr@3"], throughput=False)
    step = {"prediction": torch.rand(4), "label": torch.tensor([1.0, 0.0, -100.0, -100.0]), "s": torch.zeros(4).long()}
    with pytest.raises(ValueError, match=r"`evaluate` leaves them out itself with `ignore_index=-100`"):
        module.update(step)


@pytest.mark.parametrize("mark", [-100, -1])
@pytest.mark.parametrize("metrics", [["auc"], ["ndcg@2"], ["auc", "ndcg@2"]])
def test_the_refusal_of_padding_labels_names_the_option(mark, metrics):
    frame = _frame(15, 50).assign(y_click=lambda f: f["y_click"].replace(PAD, mark))
    with pytest.raises(InvalidDataError) as refused:
        evaluate(frame, {"click": ("p", "y_click")}, metrics, session="session")
    message = str(refused.value)
    assert f"if {mark} marks padded rows (TorchMetrics' `ignore_index={mark}`), pass ignore_index={mark}" in message
    assert "graded relevance" not in message  # a padding mark is no grade
    result = evaluate(frame, {"click": ("p", "y_click")}, metrics, session="session", ignore_index=mark)
    kept = frame[frame["y_click"] != mark]
    if "auc" in metrics:
        assert result.values["auc/click"] == pytest.approx(roc_auc_score(kept["y_click"], kept["p"]), rel=1e-12)


@pytest.mark.parametrize("others", [[-3], [2], [-100, -1]])
def test_other_invalid_labels_say_nothing_of_padding(others):
    frame = _frame(17, 50)
    frame.loc[frame.index[: len(others)], "y_click"] = others
    with pytest.raises(InvalidDataError) as refused:
        evaluate(frame, {"click": ("p", "y_click")}, ["auc"])
    assert "ignore_index" not in str(refused.value)


def _ddp_ignored(rank: int, world_size: int, path: str) -> tuple[list[dict], list[str]]:
    result = evaluate(path, TASKS, METRICS, session="session", by="country", ignore_index=PAD)
    return result.records, result.warnings


@pytest.mark.ddp
def test_two_ranks_leave_out_the_same_rows_and_count_every_ranks(ddp_pool, tmp_path):
    frame = _frame(19, 160)
    path = tmp_path / "d.parquet"
    frame.to_parquet(path, row_group_size=40)  # four row groups: two per rank
    (records0, warnings0), (records1, warnings1) = ddp_pool.run(_ddp_ignored, str(path))
    assert records0 == records1 and warnings0 == warnings1
    _check(records0, frame)
    clicks = int((frame["y_click"] == PAD).sum())
    assert warnings0[0].startswith(
        f"ignore_index=-100 (--ignore-index) left out {clicks} rows of label column 'y_click'"
    )
