"""``evaluate(..., metric_tasks=...)``: a regression head scored next to binary heads in one run.

Logs with a click head, a like head (both logits) and a watch-time head (seconds) are scored with
AUC on click and like, NE on click, MSE and R² on watch time. Every value is checked against
scikit-learn (``roc_auc_score``, ``log_loss``, ``mean_squared_error``, ``r2_score``, with
``sample_weight``) and NE's formula from ``docs/pointwise.md`` written here, per segment with a
pandas ``groupby``; never against a value of the code under test.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, mean_squared_error, r2_score, roc_auc_score

from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import InvalidDataError, evaluate

TASKS = ["click=logit_click:y_click", "like=logit_like:y_like", "watch_time=pred_watch:watch_seconds"]
COLUMNS = {
    "click": ("logit_click", "y_click"),
    "like": ("logit_like", "y_like"),
    "watch_time": ("pred_watch", "watch_seconds"),
}
METRICS = ["auc", "ne", "mse", "r_squared"]
METRIC_TASKS = {"auc": ["click", "like"], "ne": ["click"], "mse": ["watch_time"], "r_squared": ["watch_time"]}
READS = {"click": ["auc", "ne"], "like": ["auc"], "watch_time": ["mse", "r_squared"]}


def _frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y_click = rng.integers(0, 2, n).astype(np.float64)
    y_like = rng.integers(0, 2, n).astype(np.float64)
    watch = rng.exponential(40.0, n).round(1)
    return pd.DataFrame(
        {
            "logit_click": rng.normal(0, 1.5, n) + y_click,  # logits: mostly outside [0, 1]
            "y_click": y_click,
            "logit_like": rng.normal(0, 2.0, n) + 0.5 * y_like,
            "y_like": y_like,
            "pred_watch": watch * rng.uniform(0.5, 1.5, n) + 5.0,  # seconds, far above 1
            "watch_seconds": watch,
            "w": rng.uniform(0.5, 2.0, n),
            "user": rng.integers(0, 30, n),
            "country": rng.choice(["de", "fr", "us"], n),
        }
    )


def _ne(y: np.ndarray, logits: np.ndarray, w: np.ndarray) -> float:
    """NE of docs/pointwise.md: weighted cross entropy over the entropy of the weighted base rate."""
    p = 1.0 / (1.0 + np.exp(-logits))
    ctr = np.sum(w * y) / np.sum(w)
    entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return float(log_loss(y, p, sample_weight=w, labels=[0, 1]) / entropy)


def _reference(rows: pd.DataFrame, task: str, weighted: bool = True) -> dict[str, float]:
    preds, labels = (rows[c].to_numpy() for c in COLUMNS[task])
    w = rows["w"].to_numpy() if weighted else np.ones(len(rows))
    out: dict[str, float] = {"rows": len(rows)}
    if task in ("click", "like"):
        out["auc"] = float(roc_auc_score(labels, preds, sample_weight=w))  # rank-based: logits as probabilities
    if task == "click":
        out["ne"] = _ne(labels, preds, w)
    if task == "watch_time":
        out["mse"] = float(mean_squared_error(labels, preds, sample_weight=w))
        out["r_squared"] = float(r2_score(labels, preds, sample_weight=w))
    return out


def _check(record: dict, expected: dict[str, float]) -> None:
    where = (record["segment"], record["task"])
    metrics = [m for m in record if m in [*METRICS, "gauc"]]
    assert metrics == [m for m in [*METRICS, "gauc"] if m in expected], where  # only the metrics reading it
    assert record["rows"] == expected["rows"], where
    for metric in metrics:
        rel = 1e-6 if metric in ("auc", "gauc") else 1e-9  # exact AUC keeps float32 weights (documented)
        assert record[metric] == pytest.approx(expected[metric], rel=rel), (where, metric)


def _write(frame: pd.DataFrame, path, fmt: str) -> str:
    target = path / f"logs.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target, row_group_size=150)
    else:
        frame.to_csv(target, index=False)
    return str(target)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_each_metric_scores_its_tasks_against_sklearn(tmp_path, fmt):
    frame = _frame()
    path = _write(frame, tmp_path, fmt)
    result = evaluate(path, TASKS, METRICS, metric_tasks=METRIC_TASKS, weights="w", from_logits=True, batch_size=128)
    assert [r["task"] for r in result.records] == ["click", "like", "watch_time"]
    for record in result.records:
        _check(record, _reference(frame, record["task"]))
    # the flat values hold the (metric, task) pairs that are read, and no other
    assert sorted(result.values) == sorted(f"{m}/{t}" for t, ms in READS.items() for m in ms)
    # the table and the files keep one column per metric: '-' / null where a metric does not read the task
    lines = result.format_table().splitlines()
    assert lines[0].split() == ["segment", "task", "rows", *METRICS]
    assert lines[4].split()[3:] == ["-", "-", f"{result.values['mse/watch_time']:.6f}", lines[4].split()[-1]]
    table = result.to_arrow()
    assert table.column_names == ["segment", "task", "rows", *METRICS]
    assert table.column("mse").to_pylist()[:2] == [None, None]
    result.write(str(tmp_path / "r.json"))
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    assert [sorted(r) for r in records] == [sorted(["segment", "task", "rows", *READS[r["task"]]]) for r in records]


def test_unweighted_values_and_a_single_task_name(tmp_path):
    """A task named alone (``"mse": "watch_time"``) is a list of it; without ``weights`` every row weighs 1."""
    frame = _frame(seed=1)
    mapping = {**METRIC_TASKS, "mse": "watch_time", "r_squared": "watch_time"}
    result = evaluate(frame, TASKS, METRICS, metric_tasks=mapping, from_logits=True)
    for record in result.records:
        _check(record, _reference(frame, record["task"], weighted=False))


@pytest.mark.parametrize("kind", ["numpy", "index", "series", "columns"])
def test_task_lists_as_numpy_arrays_or_pandas_columns(kind):
    """A list of tasks may be a NumPy array, a pandas ``Index`` or ``Series`` (``df.columns[...]``), as ``tasks``,
    ``metrics`` and ``by`` may; a NumPy string alone is one task, as a string is."""
    frame = _frame(seed=10)
    names = pd.DataFrame(columns=["click", "like", "watch_time"]).columns  # a table whose columns name the tasks
    make = {
        "numpy": np.array,
        "index": pd.Index,
        "series": pd.Series,
        "columns": lambda listed: names[names.isin(listed)],
    }[kind]
    mapping = {metric: make(listed) for metric, listed in METRIC_TASKS.items()}
    mapping["r_squared"] = np.str_("watch_time")
    result = evaluate(frame, TASKS, METRICS, metric_tasks=mapping, weights="w", from_logits=True)
    assert sorted(result.values) == sorted(f"{m}/{t}" for t, ms in READS.items() for m in ms)
    for record in result.records:
        _check(record, _reference(frame, record["task"]))


def test_segments_against_pandas_groupby(tmp_path):
    frame = _frame(seed=2)
    path = _write(frame, tmp_path, "parquet")
    result = evaluate(
        path, TASKS, METRICS, metric_tasks=METRIC_TASKS, weights="w", from_logits=True, by="country", batch_size=100
    )
    segments = [r for r in result.records if r["segment"] != "all"]
    expected = [
        {"segment": f"country={country}", "task": task, **_reference(rows, task)}
        for country, rows in frame.groupby("country")
        for task in COLUMNS
    ]
    assert [(r["segment"], r["task"]) for r in segments] == [(e["segment"], e["task"]) for e in expected]
    for record, want in zip(segments, expected):
        assert record["country"] == record["segment"].split("=")[1]
        _check(record, want)
    assert "mse/watch_time/country=fr" in result.values and "auc/watch_time/country=fr" not in result.values


def test_skip_drops_a_nan_watch_time_for_watch_time_alone():
    frame = _frame(seed=3)
    bad = [5, 17, 230]
    frame.loc[bad, "watch_seconds"] = np.nan
    with pytest.raises(InvalidDataError, match="column 'watch_seconds' \\(labels of task 'watch_time'\\) has 3 rows"):
        evaluate(frame, TASKS, METRICS, metric_tasks=METRIC_TASKS, weights="w", from_logits=True)
    result = evaluate(
        frame, TASKS, METRICS, metric_tasks=METRIC_TASKS, weights="w", from_logits=True, on_invalid="skip"
    )
    assert result.rows_skipped == 3
    kept = frame.drop(index=bad)
    for record in result.records:
        rows = kept if record["task"] == "watch_time" else frame  # click and like keep every row
        _check(record, _reference(rows, record["task"]))


def test_regression_labels_are_valid_where_no_binary_metric_reads_them():
    """Watch-time labels (seconds) are no invalid rows: only MSE and R² read them, not AUC's 0/1 rule."""
    frame = _frame(seed=4)
    with pytest.raises(InvalidDataError, match="'watch_seconds' \\(labels of task 'watch_time'\\)"):
        evaluate(frame, TASKS, METRICS, weights="w", from_logits=True)  # every metric on every task: refused
    skipped = evaluate(frame, TASKS, METRICS, metric_tasks=METRIC_TASKS, from_logits=True, on_invalid="skip")
    assert skipped.rows_skipped == 0 and [r["rows"] for r in skipped.records] == [len(frame)] * 3


def test_logits_only_in_the_rows_of_the_heads_that_hold_them():
    """``mse`` (left out of metric_tasks: every task) on click and watch time with logits: sigmoid in click's rows,
    the watch time's seconds as given, overall and per segment."""
    frame = _frame(seed=5)
    mapping = {"auc": ["click"]}  # click holds logits (auc reads it); watch time is read by mse alone
    result = evaluate(frame, TASKS[::2], ["auc", "mse"], metric_tasks=mapping, from_logits=True, by="country")
    frame["p_click"] = 1.0 / (1.0 + np.exp(-frame.logit_click))
    for suffix, rows in [("", frame), *((f"/country={c}", g) for c, g in frame.groupby("country"))]:
        want = mean_squared_error(rows.y_click, rows.p_click)
        assert result.values[f"mse/click{suffix}"] == pytest.approx(want, rel=1e-9)
        want = mean_squared_error(rows.watch_seconds, rows.pred_watch)
        assert result.values[f"mse/watch_time{suffix}"] == pytest.approx(want, rel=1e-9)
        assert f"auc/watch_time{suffix}" not in result.values


def test_from_logits_that_changes_nothing_is_said_once(tmp_path, capsys):
    """With ``metric_tasks`` only heads a metric of probabilities reads hold logits: with none such, the flag does
    nothing, and the result's warnings say so once (the values are those of the columns as given)."""
    frame = _frame(seed=11)
    tasks = TASKS[::2]  # click (logits) and watch time
    mapping = {"mse": ["click", "watch_time"]}  # names every task: the per-task logits rule holds, no sigmoid
    result = evaluate(frame, tasks, ["mse"], metric_tasks=mapping, from_logits=True, by="country")
    notes = [line for line in result.warnings if "from_logits=True (--from-logits) changed nothing" in line]
    assert len(notes) == 1 and "['mse']" in notes[0] and "metric of probabilities" in notes[0], result.warnings
    for suffix, rows in [("", frame), *((f"/country={c}", g) for c, g in frame.groupby("country"))]:
        want = mean_squared_error(rows.y_click, rows.logit_click)  # the logits as given, no sigmoid
        assert result.values[f"mse/click{suffix}"] == pytest.approx(want, rel=1e-9)
    # a metric of probabilities reading a head (auc on click): the flag says click holds logits, no note
    mapping = {"auc": ["click"], "mse": ["watch_time"]}
    result = evaluate(frame, tasks, ["auc", "mse"], metric_tasks=mapping, from_logits=True)
    assert not any("from_logits" in line for line in result.warnings), result.warnings
    # without the flag, or without metric_tasks: nothing to say
    assert evaluate(frame, tasks, ["mse"], metric_tasks={"mse": ["click", "watch_time"]}).warnings == []
    assert evaluate(frame, tasks, ["mse"], from_logits=True).warnings == []
    # the command line prints it on stderr and writes it in the .json output
    path = _write(frame, tmp_path, "parquet")
    flags = ["--task", tasks[0], "--task", tasks[1], "--metrics", "mse", "--from-logits"]
    code, err = _cli(
        capsys, path, *flags, "--metric-tasks", "mse=click,watch_time", "--output", str(tmp_path / "r.json")
    )
    assert code == 0 and err.count("warning: from_logits=True (--from-logits) changed nothing") == 1, err
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == notes


def _gauc(rows: pd.DataFrame) -> float:
    """The mean over users holding both classes of each user's AUC (no weights)."""
    values = [
        roc_auc_score(mine.y_click, mine.logit_click) for _, mine in rows.groupby("user") if mine.y_click.nunique() == 2
    ]
    return float(np.mean(values))


def test_gauc_on_click_reads_user_ids_that_watch_time_does_not():
    frame = _frame(seed=6)
    frame["user"] = frame["user"].astype("Int64")
    missing = [3, 40, 41, 500]
    frame.loc[missing, "user"] = pd.NA  # a null user id: invalid for click alone, which gauc reads
    mapping = {"gauc": ["click"], "auc": ["click", "like"], "mse": ["watch_time"]}
    result = evaluate(
        frame, TASKS, ["gauc", "auc", "mse"], metric_tasks=mapping, user="user", from_logits=True, on_invalid="skip"
    )
    by_task = {r["task"]: r for r in result.records}
    kept = frame.drop(index=missing)
    assert by_task["click"]["rows"] == len(kept)
    assert by_task["click"]["gauc"] == pytest.approx(_gauc(kept), rel=1e-6)
    assert by_task["click"]["auc"] == pytest.approx(roc_auc_score(kept.y_click, kept.logit_click), rel=1e-6)
    assert by_task["like"]["rows"] == by_task["watch_time"]["rows"] == len(frame)
    assert by_task["watch_time"]["mse"] == pytest.approx(mean_squared_error(frame.watch_seconds, frame.pred_watch))
    # no user column at all: refused for gauc, whatever the tasks it reads
    with pytest.raises(ValueError, match="Metric 'gauc' averages over users"):
        evaluate(frame, TASKS, ["gauc", "auc", "mse"], metric_tasks=mapping, from_logits=True)


def _config(tmp_path, path: str, suffix: str) -> str:
    config = {
        "paths": [path],
        "tasks": [{"name": t, "prediction_name": p, "label_name": y} for t, (p, y) in COLUMNS.items()],
        "metrics": METRICS,
        "metric_tasks": {**METRIC_TASKS, "mse": "watch_time"},
        "weights": "w",
        "by": "country",
        "from_logits": True,
    }
    target = tmp_path / f"eval{suffix}"
    if suffix == ".json":
        target.write_text(json.dumps(config))
    else:
        yaml = pytest.importorskip("yaml")
        target.write_text(yaml.safe_dump(config))
    return str(target)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``torchmetrics-ext evaluate ARGS`` in this process: its exit status and stderr."""
    capsys.readouterr()
    try:
        code = cli.main(["evaluate", "--no-progress", *args])
    except SystemExit as exited:  # the parser's errors
        code = int(exited.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_and_command_line_give_the_python_values(tmp_path, capsys, suffix):
    frame = _frame(seed=7)
    path = _write(frame, tmp_path, "parquet")
    python = evaluate(path, TASKS, METRICS, metric_tasks=METRIC_TASKS, weights="w", by="country", from_logits=True)
    config = _config(tmp_path, path, suffix)
    code, err = _cli(capsys, "--config", config, "--output", str(tmp_path / "config.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "config.json").read_text())["records"] == python.records
    flags = [f"--metric-tasks={m}={','.join(t)}" for m, t in METRIC_TASKS.items()]
    code, err = _cli(
        capsys,
        path,
        *(a for t in TASKS for a in ("--task", t)),
        "--metrics",
        ",".join(METRICS),
        *flags,
        "--weights",
        "w",
        "--by",
        "country",
        "--from-logits",
        "--output",
        str(tmp_path / "cli.json"),
    )
    assert code == 0, err
    assert json.loads((tmp_path / "cli.json").read_text())["records"] == python.records
    # --metric-tasks replaces the file's mapping as a whole; --metrics keeps the file's entries of its metrics
    code, err = _cli(capsys, "--config", config, "--metrics", "auc", "--metric-tasks", "auc=click,like,watch_time")
    assert code == 2 and "labels of task 'watch_time'" in err  # now AUC reads the seconds
    code, err = _cli(capsys, "--config", config, "--metrics", "auc,mse,ne", "--output", str(tmp_path / "some.json"))
    assert code == 0, err
    some = json.loads((tmp_path / "some.json").read_text())["records"]
    assert [{k: v for k, v in r.items() if k != "r_squared"} for r in python.records] == some


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_tasks_no_selected_metric_reads_are_left_out_and_said(tmp_path, capsys, suffix):
    """``--metrics auc,ne`` with a file whose ``metric_tasks`` gives watch time to ``mse`` and ``r_squared`` alone:
    the user asked for AUC and NE, so watch time is left out of the run (it was refused as read by no metric), and
    the warnings name it; the values are sklearn's on the tasks that stay."""
    frame = _frame(seed=12)
    path = _write(frame, tmp_path, "parquet")
    config = _config(tmp_path, path, suffix)
    out = tmp_path / "some.json"
    code, err = _cli(capsys, "--config", config, "--metrics", "auc,ne", "--output", str(out))
    assert code == 0, err
    note = (
        "task 'watch_time' of the config file left out: its metric_tasks gives it to no metric --metrics selects "
        "(auc, ne); add such a metric to --metrics to score it"
    )
    assert err.count(f"warning: {note}") == 1, err
    written = json.loads(out.read_text())
    assert written["tasks"] == ["click", "like"] and written["warnings"][0] == note
    segments = [r for r in written["records"] if r["segment"] != "all"]
    expected = [
        {"segment": f"country={country}", "task": task, **_reference(rows, task)}
        for country, rows in frame.groupby("country")
        for task in ("click", "like")
    ]
    assert [(r["segment"], r["task"]) for r in segments] == [(e["segment"], e["task"]) for e in expected]
    for record, want in zip(segments, expected):
        _check(record, want)
    for record in [r for r in written["records"] if r["segment"] == "all"]:
        _check(record, _reference(frame, record["task"]))
    # two tasks left out: both named
    code, err = _cli(capsys, "--config", config, "--metrics", "ne")
    assert code == 0 and "warning: tasks 'like', 'watch_time' of the config file left out" in err, err
    # a selected metric the file's metric_tasks leaves out reads every task: nothing is left out (and AUC refuses the
    # watch-time seconds, as without --metrics)
    code, err = _cli(capsys, "--config", config, "--metrics", "auc,ne,calibration")
    assert code == 2 and "left out" not in err and "labels of task 'watch_time'" in err, err
    # tasks given on the command line are the user's: one no metric reads is still refused, as from Python
    tasks = [a for task in TASKS for a in ("--task", task)]
    code, err = _cli(capsys, "--config", config, "--metrics", "auc,ne", *tasks)
    assert code == 2 and "Task 'watch_time' is read by no metric" in err, err
    # so is a file's task once --metric-tasks gives the mapping
    code, err = _cli(capsys, "--config", config, "--metrics", "auc", "--metric-tasks", "auc=click")
    assert code == 2 and "is read by no metric" in err, err


def test_config_tasks_left_out_only_where_every_task_named_is_known(tmp_path, capsys):
    """A misspelt task in the file's ``metric_tasks`` leaves nothing out: evaluate names it, with the closest."""
    frame = _frame(seed=13)
    path = _write(frame, tmp_path, "parquet")
    config = tmp_path / "eval.json"
    tasks = [{"name": t, "prediction_name": p, "label_name": y} for t, (p, y) in COLUMNS.items()]
    mapping = {"auc": ["click", "lik"], "mse": ["watch_time"]}
    config.write_text(json.dumps({"paths": [path], "tasks": tasks, "metrics": METRICS, "metric_tasks": mapping}))
    code, err = _cli(capsys, "--config", str(config), "--metrics", "auc")
    assert code == 2 and "names task 'lik', which the module does not have" in err and "left out" not in err, err


REFUSALS = [
    ({"aucc": ["click"]}, "`metric_tasks` names metric 'aucc', which the module does not have \\(did you mean 'auc'"),
    ({"auc": ["clik"]}, "`metric_tasks\\['auc'\\]` names task 'clik', which the module does not have"),
    ({"auc": []}, "`metric_tasks\\['auc'\\]`: expected a non-empty list of task names, got \\[\\]"),
    ({**METRIC_TASKS, "auc": ["click", "like", "click"]}, "names task 'click' more than once"),
    (["auc"], "Expected `metric_tasks` to be a dict of metric name -> list of task names"),
    ({**METRIC_TASKS, "auc": 3}, "expected a non-empty list of task names, got 3"),
    ({**METRIC_TASKS, "auc": ["click"]}, "Task 'like' is read by no metric"),
    # the same refusals for a NumPy array (or pandas Index) of names
    ({**METRIC_TASKS, "auc": np.array([], dtype=str)}, "`metric_tasks\\['auc'\\]`: expected a non-empty list"),
    ({**METRIC_TASKS, "auc": np.array(["click", "like", "click"])}, "names task 'click' more than once"),
    ({**METRIC_TASKS, "auc": pd.Index(["click", "lik"])}, "names task 'lik', which the module does not have"),
    ({**METRIC_TASKS, "auc": np.array([["click", "like"]])}, "`metric_tasks\\['auc'\\]`: expected a non-empty list"),
    ({**METRIC_TASKS, "auc": np.array(["click"])}, "Task 'like' is read by no metric"),
]


@pytest.mark.parametrize(("mapping", "message"), REFUSALS)
def test_refusals_before_any_data_is_read(tmp_path, mapping, message):
    missing = str(tmp_path / "absent.parquet")  # never opened: the arguments are refused first
    with pytest.raises(ValueError, match=message):
        evaluate(missing, TASKS, METRICS, metric_tasks=mapping, from_logits=True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metric-tasks", "auc"], "argument --metric-tasks: expected METRIC=TASK\\[,TASK...\\] .*got 'auc': no '='"),
        (["--metric-tasks", "=click"], "got '=click': no metric before '='"),
        (["--metric-tasks", "auc="], "got 'auc=': no task after '='"),
        (["--metric-tasks", "auc=click,,like"], "argument --metric-tasks: empty item"),
        (["--metric-tasks", "auc=click", "--metric-tasks", "auc=like"], "metric 'auc' given twice"),
    ],
)
def test_command_line_parse_errors_name_the_flag(tmp_path, capsys, flags, message):
    code, err = _cli(capsys, str(tmp_path / "absent.parquet"), "--task", TASKS[0], "--metrics", "auc", *flags)
    assert code == 2
    assert len(re.findall(message, err)) == 1, err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["auc"], "key 'metric_tasks': expected a mapping of metric names to a task name or a list of task names"),
        ({"auc": []}, "key 'metric_tasks': expected a metric name -> a task name or a non-empty list"),
        ({"auc": [1]}, "key 'metric_tasks': expected a metric name"),
    ],
)
def test_config_file_refuses_a_malformed_metric_tasks(tmp_path, capsys, value, message):
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({"paths": ["x.parquet"], "tasks": TASKS, "metrics": METRICS, "metric_tasks": value}))
    code, err = _cli(capsys, "--config", str(config))
    assert code == 2 and message in err, err


# the runs compared across 2 ranks and 1 process: skipped rows, segments, logits and weights together
_DDP_OPTIONS: dict[str, object] = dict(
    metric_tasks=METRIC_TASKS, weights="w", by="country", from_logits=True, on_invalid="skip", batch_size=64
)


def _ddp_metric_tasks(rank: int, world_size: int, path: str) -> dict[str, float]:
    import torch.distributed as dist

    result = evaluate(path, TASKS, METRICS, **_DDP_OPTIONS)
    assert dist.is_initialized()
    return result.values | {"rows_skipped": float(result.rows_skipped)}


@pytest.mark.ddp
def test_two_ranks_equal_one_process(ddp_pool, tmp_path):
    frame = _frame(seed=8)
    frame.loc[[7, 300], "pred_watch"] = np.nan  # dropped for watch_time alone, on each rank's share
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    single = evaluate(str(path), TASKS, METRICS, **_DDP_OPTIONS).values
    for values in ddp_pool.run(_ddp_metric_tasks, str(path)):
        assert values.pop("rows_skipped") == 2
        assert values.keys() == single.keys()
        for key in single:
            assert values[key] == pytest.approx(single[key], rel=1e-10), key
    kept = frame.drop(index=[7, 300])
    assert single["mse/watch_time"] == pytest.approx(
        mean_squared_error(kept.watch_seconds, kept.pred_watch, sample_weight=kept.w), rel=1e-9
    )


@pytest.mark.parametrize("on_invalid", ["error", "skip"])
def test_every_task_as_if_evaluated_alone_with_its_metrics(on_invalid):
    """Ranking names of different tasks (two shared RankingMetrics), a binned AUC (computed segment by segment),
    gauc: each task's records equal a run of that task alone with the metrics reading it (the unchanged path,
    itself checked against sklearn and numpy in tests/test_evaluate.py)."""
    rng = np.random.default_rng(9)
    n = 300
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, 20, n),
            "session": rng.integers(0, 40, n),
            "country": rng.choice(["fr", "us"], n),
            "y_click": rng.integers(0, 2, n).astype(np.float64),
            "p_click": rng.random(n),
            "y_like": rng.integers(0, 2, n).astype(np.float64),
            "p_like": rng.random(n),
            "watch": rng.exponential(30, n),
            "pred_watch": rng.exponential(30, n),
        }
    )
    if on_invalid == "skip":
        frame.loc[[1, 2], "y_like"] = np.nan
    tasks = ["click=p_click:y_click", "like=p_like:y_like", "watch_time=pred_watch:watch"]
    metrics = {"ndcg@10": None, "mrr@10": None, "auc_b": {"metric": "auc", "num_bins": 100}, "mse": None, "gauc": None}
    mapping = {"ndcg@10": ["click"], "mrr@10": ["click", "like"], "auc_b": "like", "mse": "watch_time", "gauc": "like"}
    kw = {"user": "user", "session": "session", "by": "country", "on_invalid": on_invalid}
    result = evaluate(frame, tasks, metrics, metric_tasks=mapping, **kw)
    for t, task in enumerate(("click", "like", "watch_time")):
        read = [m for m in metrics if task in ([mapping[m]] if isinstance(mapping[m], str) else mapping[m])]
        alone = evaluate(frame, [tasks[t]], {m: metrics[m] for m in read}, **kw)
        mine = [r for r in result.records if r["task"] == task]
        assert [list(r) for r in mine] == [list(r) for r in alone.records]  # the same fields, in order
        for record, want in zip(mine, alone.records):
            assert {k: record[k] for k in ("segment", "task", "rows")} == {
                k: want[k] for k in ("segment", "task", "rows")
            }
            assert [record[m] for m in read] == pytest.approx([want[m] for m in read], rel=1e-12, nan_ok=True)
