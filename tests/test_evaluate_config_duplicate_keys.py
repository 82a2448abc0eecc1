"""A key given twice in an ``evaluate`` config file is refused, not silently read as its last value.

JSON (``json.loads``) and YAML (``yaml.safe_load``) both keep the last value of a repeated key: a config
with ``metrics: [ne]`` and, further down, ``metrics: [auc]`` ran AUC alone and said nothing. The expected
key and lines below are read off the text written in each test.
"""

import json

import pytest

from torchmetrics_ext import cli
from torchmetrics_ext.evaluate.config import load_config


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("paths: [d.parquet]\nmetrics: [ne]\nmetrics: [auc]\n", "metrics", (2, 3)),
        ("paths: [d.parquet]\nmetrics:\n  ne: {eta: 1.0e-6}\n  auc:\n  ne:\n", "ne", (3, 5)),
        ("paths: [d.parquet]\nmetrics: {ne: {eta: 1.0e-6}, ne: null}\n", "ne", (2, 2)),
        ("paths: [d.parquet]\ntasks:\n  - {name: click, name: like}\n", "name", (3, 3)),
    ],
)
def test_yaml_duplicate_key_is_refused_naming_key_and_lines(tmp_path, text, key, lines):
    pytest.importorskip("yaml")
    path = _write(tmp_path, "eval.yaml", text)
    with pytest.raises(ValueError, match=f"key '{key}' is given twice") as info:
        load_config(path)
    assert f"first on line {lines[0]}, again on line {lines[1]}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"paths": ["d.parquet"], "metrics": ["ne"], "metrics": ["auc"]}', "metrics"),
        ('{"paths": ["d.parquet"], "metrics": {"ne": {"eta": 1e-6, "eta": 1e-7}}}', "eta"),
    ],
)
def test_json_duplicate_key_is_refused_naming_key(tmp_path, text, key):
    assert json.loads(text)  # plain JSON reads it, keeping the last value
    path = _write(tmp_path, "eval.json", text)
    with pytest.raises(ValueError, match=f"key '{key}' is given twice"):
        load_config(path)


def test_yaml_merge_key_and_anchors_still_read(tmp_path):
    """``<<: *anchor`` overrides on purpose: it is not a repeated key."""
    pytest.importorskip("yaml")
    text = "paths: [d.parquet]\nmetrics:\n  ne: &opts {eta: 1.0e-6}\n  ne_exact: {<<: *opts, metric: ne}\n"
    config = load_config(_write(tmp_path, "eval.yaml", text))
    assert config["metrics"] == {"ne": {"eta": 1e-6}, "ne_exact": {"eta": 1e-6, "metric": "ne"}}


def test_command_line_reports_the_duplicate_as_a_usage_error(tmp_path, capsys):
    pytest.importorskip("yaml")
    path = _write(tmp_path, "eval.yaml", "paths: [d.parquet]\nmetrics: [ne]\nmetrics: [auc]\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--config", path])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "key 'metrics' is given twice" in err and "line 2" in err and "line 3" in err
