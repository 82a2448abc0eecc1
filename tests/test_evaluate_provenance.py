"""What a review reads from ``evaluate``: the compute phase's progress line, and the JSON output's provenance.

The expected values are written from the inputs the test builds (the columns, paths and options it
passes, the segments counted with pandas), never read back from the code under test.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import torchmetrics_ext
from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import evaluate

OLD_KEYS = ["tasks", "metrics", "by", "rows_read", "rows_skipped", "problems", "warnings", "records"]


def _installed_version() -> str:
    try:
        return version("torchmetrics-ext")
    except PackageNotFoundError:  # a source tree run without installing it
        return torchmetrics_ext.__version__


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, rows),
            "y": rng.integers(0, 2, rows),
            "w": rng.uniform(0.5, 2.0, rows),
            "uid": rng.integers(0, 7, rows),
            "country": rng.choice(["fr", "us", "de"], rows),
            "device": rng.choice(["ios", "web"], rows),
        }
    )


def _files(directory: Path) -> tuple[list[Path], pd.DataFrame]:
    directory.mkdir()
    frames = [_frame(40, 1), _frame(25, 2)]
    paths = [directory / "part-0.parquet", directory / "part-1.parquet"]
    for frame, path in zip(frames, paths):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return paths, pd.concat(frames, ignore_index=True)


def _lines(text: str) -> list[str]:
    """The lines up to the compute phase's start (``progress=True`` then shows its steps: left out here)."""
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return [line for line in lines if not re.match(r"evaluate: comput(ing .* \(step \d|ed )", line)]


def test_the_compute_phase_is_announced_once_after_the_last_row_is_read(tmp_path, capsys):
    _, data = _files(tmp_path / "logs")
    argv = ["evaluate", str(tmp_path / "logs"), "--task", "click=p:y", "--metrics", "ne,auc", "--by", "country"]
    assert cli.main(argv) == 0
    lines = _lines(capsys.readouterr().err)
    total = len(data)
    segments = data["country"].nunique()
    computing = [line for line in lines if line.startswith("evaluate: computing")]
    assert computing == [
        f"evaluate: computing 2 metrics of 1 task on the {total} rows read, overall and in {segments} segments..."
    ]
    at = lines.index(computing[0])
    assert re.fullmatch(rf"evaluate: {total} / {total} rows \(100.0%\), [\d,]+ rows/s", lines[at - 1]), lines


def test_several_segmentations_count_every_segment_and_no_by_names_none(tmp_path, capsys):
    _, data = _files(tmp_path / "logs")
    table = pa.Table.from_pandas(data, preserve_index=False)
    evaluate(table, {"a": ("p", "y"), "b": ("w", "y")}, ["ctr"], by=[["country"], ["device", "country"]], progress=True)
    segments = data["country"].nunique() + len(data.groupby(["device", "country"]))
    rows = f"{len(data)} rows read"
    assert _lines(capsys.readouterr().err)[-1] == (
        f"evaluate: computing 1 metric of 2 tasks on the {rows}, overall and in {segments} segments..."
    )
    evaluate(table, {"a": ("p", "y")}, ["ctr"], progress=True)
    assert _lines(capsys.readouterr().err)[-1] == f"evaluate: computing 1 metric of 1 task on the {rows}..."


def test_no_compute_line_without_progress(tmp_path, capsys):
    _files(tmp_path / "logs")
    argv = ["evaluate", str(tmp_path / "logs"), "--task", "click=p:y", "--metrics", "ctr", "--no-progress"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().err == ""
    evaluate(str(tmp_path / "logs"), {"click": ("p", "y")}, ["ctr"])  # progress is off by default in Python
    assert capsys.readouterr().err == ""


def test_a_run_refused_before_computing_prints_no_compute_line(tmp_path, capsys):
    _files(tmp_path / "logs")
    argv = ["evaluate", str(tmp_path / "logs"), "--task", "click=p:missing", "--metrics", "ctr"]
    assert cli.main(argv) == 2
    assert "computing" not in capsys.readouterr().err


def test_json_output_records_how_the_values_were_made(tmp_path, capsys):
    paths, data = _files(tmp_path / "logs")
    out = tmp_path / "result.json"
    argv = [
        "evaluate",
        str(tmp_path / "logs"),
        "--task",
        "click=p:y",
        "--weights",
        "w",
        "--user",
        "uid",
        "--metrics",
        "ne,gauc",
        "--by",
        "country",
        "--by",
        "device",
        "--on-invalid",
        "skip",
        "--batch-size",
        "16",
        "--no-progress",
        "--output",
        str(out),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    payload = json.loads(out.read_text())
    assert list(payload) == [*OLD_KEYS, "provenance"]  # the keys of before first, unchanged, in their order
    assert payload["by"] == [["country"], ["device"]]
    assert payload["rows_read"] == len(data)
    overall = payload["records"][0]
    assert overall["segment"] == "all" and overall["rows"] == len(data)
    provenance = payload["provenance"]
    assert [Path(p).resolve() for p in provenance.pop("inputs")] == [p.resolve() for p in paths]
    assert provenance == {
        "package": "torchmetrics-ext",
        "version": _installed_version(),
        "tasks": {"click": {"predictions": "p", "labels": "y", "weighted": True}},
        "weights": "w",
        "user": "uid",
        "session": None,
        "by": [["country"], ["device"]],
        "metrics": {"ne": {"name": "ne", "options": {}}, "gauc": {"name": "gauc", "options": {}}},
        "metric_tasks": None,
        "from_logits": False,
        "ignore_index": None,
        "on_invalid": "skip",
        "batch_size": 16,
        "processes": 1,
        "command": ["torchmetrics-ext", *argv],
        "config": None,
    }


def test_json_provenance_of_a_config_file_with_metric_options_and_metric_tasks(tmp_path, capsys):
    _files(tmp_path / "logs")
    out = tmp_path / "result.json"
    config = tmp_path / "eval.json"
    config.write_text(
        json.dumps(
            {
                "paths": [str(tmp_path / "logs" / "*.parquet")],
                "tasks": ["click=p:y", "score=w:y"],
                "metrics": {"binned": {"metric": "auc", "num_bins": 100}, "ctr": None},
                "metric_tasks": {"binned": ["click"]},
                "from_logits": False,
                "output": str(out),
                "progress": False,
            }
        )
    )
    assert cli.main(["evaluate", "--config", str(config)]) == 0
    capsys.readouterr()
    provenance = json.loads(out.read_text())["provenance"]
    assert provenance["config"] == str(config)
    assert provenance["command"] == ["torchmetrics-ext", "evaluate", "--config", str(config)]
    assert provenance["tasks"] == {
        "click": {"predictions": "p", "labels": "y", "weighted": False},  # no `weights` in the config
        "score": {"predictions": "w", "labels": "y", "weighted": False},
    }
    assert provenance["metrics"]["binned"]["name"] == "auc"
    assert provenance["metrics"]["binned"]["options"].get("num_bins") == 100
    assert provenance["metrics"]["ctr"] == {"name": "ctr", "options": {}}
    assert provenance["metric_tasks"] == {"binned": ["click"]}
    assert provenance["by"] == [] and provenance["weights"] is None


def test_python_results_carry_provenance_without_changing_equality(tmp_path):
    paths, data = _files(tmp_path / "logs")
    table = pa.Table.from_pandas(data, preserve_index=False)
    from_table = evaluate(table, {"click": ("p", "y")}, ["ctr"], by="country")
    from_files = evaluate([str(p) for p in paths], {"click": ("p", "y")}, ["ctr"], by="country")
    assert from_table.provenance["inputs"] == ["<pyarrow.Table>"]
    assert [Path(p).resolve() for p in from_files.provenance["inputs"]] == [p.resolve() for p in paths]
    assert from_table == from_files  # the same values: where they were read from is no part of ==
    assert "provenance" not in repr(from_table)
    assert from_table.values["ctr/click"] == pytest.approx(data["y"].mean(), rel=1e-12)
    out = tmp_path / "py.json"
    from_table.write(str(out))
    written = json.loads(out.read_text())["provenance"]
    assert "command" not in written and "config" not in written  # the command line's alone
    assert written["by"] == [["country"]] and written["on_invalid"] == "error" and written["processes"] == 1


@pytest.mark.parametrize(
    ("weights", "unweighted_task", "expected"),
    [
        (None, False, {"click": False, "view": False}),  # no weights column: every row weighs 1 for every task
        ("w", False, {"click": True, "view": True}),
        ("w", True, {"click": True, "view": False}),  # `view` given `weight_name: None`
    ],
)
def test_provenance_says_a_task_is_weighted_only_where_a_weights_column_weights_it(weights, unweighted_task, expected):
    data = _frame(40, seed=3)
    data["y_view"] = 1 - data["y"]
    view = {"name": "view", "prediction_name": "p", "label_name": "y_view"}
    if unweighted_task:
        view["weight_name"] = None
    tasks = [{"name": "click", "prediction_name": "p", "label_name": "y"}, view]
    metrics = {"ctr": {"metric": "ctr"}, "auc": {"metric": "auc"}}
    result = evaluate(data[["p", "y", "y_view", "w"]], tasks, metrics, weights=weights)
    assert {task: entry["weighted"] for task, entry in result.provenance["tasks"].items()} == expected
    # the values agree with what `weighted` says: unweighted means the plain mean of the labels
    for task, weighted in expected.items():
        labels = data["y"] if task == "click" else data["y_view"]
        ctr = np.average(labels, weights=data["w"] if weighted else None)
        assert result.values[f"ctr/{task}"] == pytest.approx(ctr, rel=1e-12, abs=0)
