"""``evaluate(..., metric_tasks=...)`` on seeded random configurations, against independent references.

Each seed draws 2 to 4 tasks (binary heads holding probabilities, or logits with ``from_logits=True``;
regression heads in seconds with large values), shared weights or none (some tasks given
``weight_name: None``), null predictions, labels, weights and ids in some rows, 2 to 6 metrics of the
registry each reading a random subset of the tasks it can read (or every task), 0 to 2 ``by`` columns with
null segment values, ``on_invalid`` error or skip, a small ``batch_size`` (record batches crossing segment
and session boundaries), and Parquet, CSV or a DataFrame as the input. Every value of every record is
checked against a reference written here from the docs alone: scikit-learn's ``roc_auc_score``,
``average_precision_score``, ``mean_squared_error``, ``mean_absolute_error`` and ``r2_score`` with
``sample_weight``; NE, calibration and CTR from ``docs/pointwise.md``; GAUC from ``docs/auc.md``; NDCG and
recall from ``tests/helpers/ranking_reference.py`` (``docs/ranking.md``); segments by a pandas ``groupby``;
the rows a task keeps under ``skip`` by the rule of ``docs/evaluate.md`` ("Invalid rows", "Metrics of some
tasks"). A ``RecMetricModule(metric_tasks=...)`` fed the same rows is a second, cross-checking opinion.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

import torchmetrics_ext as tmx
from tests.helpers.ranking_reference import group_rows, reference_values
from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import InvalidDataError, evaluate

PROBABILITY = (
    "ne",
    "log_loss",
    "auc",
    "auprc",
    "calibration",
    "gauc",
)  # metrics of probabilities: their heads hold logits
BINARY_ONLY = (*PROBABILITY, "ctr")  # 0/1 (or [0, 1]) labels
VALUES = ("mse", "mae", "r_squared", "weighted_average")  # any finite value
EXACT_AUC = ("auc", "auprc", "gauc")  # float32 scores and weights kept (docs/auc.md)


@dataclass
class Case:
    """One random configuration and its data."""

    frame: pd.DataFrame
    kinds: dict[str, str]  # task -> "binary" or "regression"
    weighted: dict[str, bool]  # task -> weighted by "w"
    use_weights: bool
    metrics: list[str]
    metric_tasks: dict[str, list[str]]  # metrics left out read every task
    from_logits: bool
    by: list[str]
    on_invalid: str
    batch_size: int
    fmt: str
    nulls: bool
    spec: Any = None  # evaluate's `metrics`: the list of names, or the mapping name -> options
    entries: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> (registry name, options)
    readers: dict[str, list[str]] = field(default_factory=dict)  # task -> the metrics reading it, in order

    def name(self, key: str) -> str:
        """The registry name of metric key ``key``."""
        return self.entries[key][0]

    def reads(self, metric: str, task: str) -> bool:
        return task in self.metric_tasks.get(metric, list(self.kinds))

    def task_dicts(self) -> list[dict[str, Any]]:
        out = []
        for t, task in enumerate(self.kinds):
            spec: dict[str, Any] = {"name": task, "prediction_name": f"p{t}", "label_name": f"y{t}"}
            if self.use_weights and not self.weighted[task]:
                spec["weight_name"] = None
            out.append(spec)
        return out

    def kwargs(self) -> dict[str, Any]:
        return {
            "metric_tasks": self.metric_tasks,
            "weights": "w" if self.use_weights else None,
            "user": "user",
            "session": "session",
            "by": self.by or None,
            "from_logits": self.from_logits,
            "on_invalid": self.on_invalid,
            "batch_size": self.batch_size,
        }


def _draw(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 320))
    from_logits = bool(rng.integers(2))
    num_tasks = int(rng.integers(2, 5))
    kinds = {"t0": "binary"}
    for t in range(1, num_tasks):
        kinds[f"t{t}"] = "regression" if rng.random() < 0.5 else "binary"
    columns: dict[str, Any] = {}
    for t, kind in enumerate(kinds.values()):
        if kind == "binary":
            y = rng.integers(0, 2, n).astype(np.float64)
            p = rng.normal(0.0, 1.5, n) + y if from_logits else np.clip(rng.beta(2, 3, n) + 0.2 * y, 0.0, 1.0)
        else:
            scale = 10.0 ** rng.uniform(2, 5)
            y = rng.exponential(scale, n) * (rng.random(n) > 0.2)  # seconds, exact zeros too
            p = y * rng.uniform(0.5, 1.5, n) + rng.exponential(scale / 4, n)
        columns[f"p{t}"], columns[f"y{t}"] = p, y
    use_weights = bool(rng.integers(2))
    w = rng.uniform(0.2, 3.0, n)
    w[rng.random(n) < 0.05] = 0.0  # zero weights: rows that count for nothing
    columns["w"] = w
    columns["user"] = pd.array(rng.integers(0, 12, n), dtype="Int64")
    columns["session"] = pd.array(rng.integers(0, 40, n), dtype="Int64")
    columns["country"] = pd.array(rng.choice(["de", "fr", "us"], n), dtype=object)
    columns["hour"] = pd.array(rng.integers(0, 4, n), dtype="Int64")
    frame = pd.DataFrame(columns)
    weighted = {task: (not use_weights) or rng.random() < 0.8 for task in kinds}
    # metrics and the tasks each reads; some under keys of their own, with options (a config's mapping)
    k = int(rng.integers(1, 6))
    pool: dict[str, tuple[str, dict[str, Any]]] = {name: (name, {}) for name in (*PROBABILITY, "ctr", *VALUES)}
    pool |= {f"ndcg@{k}": ("ndcg@k", {}), f"recall@{k}": ("recall@k", {})}
    pool |= {
        "ne_eta": ("ne", {"eta": float(rng.choice([1e-3, 0.05]))}),
        "auc_bins": ("auc", {"num_bins": int(rng.choice([7, 50, 1000]))}),
        "cal": ("calibration", {}),
    }
    keys = [str(m) for m in rng.choice(list(pool), int(rng.integers(2, 7)), replace=False)]
    entries = {key: (key if pool[key][0].endswith("@k") else pool[key][0], pool[key][1]) for key in keys}
    plain = all(key == name and not options for key, (name, options) in entries.items())
    binary = [task for task, kind in kinds.items() if kind == "binary"]

    def allowed(key: str) -> list[str]:
        return binary if entries[key][0] in BINARY_ONLY else list(kinds)

    metric_tasks: dict[str, list[str]] = {}
    for key in keys:
        if allowed(key) == list(kinds) and rng.random() < 0.4:
            continue  # left out: every task
        size = int(rng.integers(1, len(allowed(key)) + 1))
        metric_tasks[key] = sorted(map(str, rng.choice(allowed(key), size, replace=False)), key=list(kinds).index)
    if not metric_tasks or rng.random() < 0.7:  # most cases: a metric of some tasks
        key = str(rng.choice(keys))
        metric_tasks[key] = [allowed(key)[0]]
    for task in kinds:  # a task no metric reads is refused: let a metric of values read it
        if not any(task in metric_tasks.get(m, list(kinds)) for m in keys):
            key = next((m for m in keys if entries[m][0] in VALUES), None)
            if key is None:
                key = str(rng.choice(VALUES))
                keys.append(key)
                entries[key] = (key, {})
                metric_tasks[key] = [task]
            else:
                metric_tasks[key] = sorted({*metric_tasks[key], task}, key=list(kinds).index)
    metrics = keys
    if plain and rng.random() < 0.6:
        spec: Any = list(keys)
    else:  # the mapping: None (no options), a registry name, or options naming their entry
        spec = {}
        for key, (name, options) in entries.items():
            if options or key != name:
                spec[key] = {"metric": name, **options} if options or rng.random() < 0.5 else name
            else:
                spec[key] = None
    by = [str(b) for b in rng.choice(["country", "hour"], int(rng.integers(0, 3)), replace=False)]
    fmt = str(rng.choice(["parquet", "csv", "frame"]))
    if fmt != "csv":
        frame.loc[rng.random(n) < 0.05, "country"] = None  # a null segment (a CSV text column has none)
    frame.loc[rng.random(n) < 0.05, "hour"] = pd.NA
    if fmt != "csv" and rng.random() < 0.4:  # narrow dtypes as logged (CSV text of a float32 is another float64)
        for t, kind in enumerate(kinds.values()):
            frame[f"p{t}"] = frame[f"p{t}"].astype(np.float32)
            frame[f"y{t}"] = frame[f"y{t}"].astype("Int8" if kind == "binary" else np.float32)
        frame["w"] = frame["w"].astype(np.float32)
    nulls = rng.random() < 0.6
    if nulls:
        for t in range(num_tasks):
            if rng.random() < 0.5:
                col = f"p{t}" if rng.random() < 0.5 else f"y{t}"
                frame.loc[rng.random(n) < 0.04, col] = np.nan
        for col in ("w", "user", "session"):
            if rng.random() < 0.4:
                frame.loc[rng.random(n) < 0.03, col] = pd.NA if col != "w" else np.nan
    case = Case(
        frame=frame,
        kinds=kinds,
        weighted=weighted,
        use_weights=use_weights,
        metrics=metrics,
        metric_tasks=metric_tasks,
        from_logits=from_logits,
        by=by,
        on_invalid=str(rng.choice(["error", "skip"])),
        batch_size=int(rng.integers(7, 60)),
        fmt=fmt,
        nulls=nulls,
        spec=spec,
        entries=entries,
    )
    case.readers = {task: [m for m in metrics if case.reads(m, task)] for task in kinds}
    return case


# ---------------------------------------------------------------- references, from the docs alone


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _cross_entropy(y: np.ndarray, p: np.ndarray, logits: bool, eta: float) -> np.ndarray:
    """Each row's cross-entropy: from the logit unclamped, else of the probability clamped to [eta, 1 - eta]."""
    if logits:
        return y * np.logaddexp(0.0, -p) + (1 - y) * np.logaddexp(0.0, p)
    q = np.clip(p, eta, 1 - eta)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def _ne(y: np.ndarray, p: np.ndarray, w: np.ndarray, logits: bool, eta: float = 1e-12) -> float:
    """docs/pointwise.md: sum w*CE over -W[ybar log c + (1 - ybar) log(1 - c)], c the clamped base rate."""
    ce = _cross_entropy(y, p, logits, eta)
    total = w.sum()
    if np.sum(w * y) <= 0 or np.sum(w * (1 - y)) <= 0:
        return math.nan  # docs/policies.md: NE while all label weight is on one class
    ybar = np.sum(w * y) / total
    c = min(max(ybar, eta), 1 - eta)
    denominator = -total * (ybar * math.log(c) + (1 - ybar) * math.log(1 - c))
    return float(np.sum(w * ce) / denominator) if denominator > 0 else math.nan


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray, average_precision: bool = False, float32: bool = True) -> float:
    positive, negative = np.sum(w * y), np.sum(w * (1 - y))
    if average_precision and positive > 0 and negative <= 0:
        return 1.0  # docs/auc.md: positives only, precision 1 everywhere (as scikit-learn)
    if positive <= 0 or negative <= 0:
        return math.nan  # AUC of one class; AP without positive label weight
    keep = w > 0  # zero-weight rows are absent rows (docs/auc.md)
    y, s, w = y[keep], s[keep], w[keep]
    if float32:  # the exact modes keep float32 weights (docs/auc.md)
        w = w.astype(np.float32).astype(np.float64)
    if average_precision:
        return float(average_precision_score(y, s, sample_weight=w))
    return float(roc_auc_score(y, s, sample_weight=w))


def _gauc(y: np.ndarray, s: np.ndarray, w: np.ndarray, users: np.ndarray) -> float:
    """docs/auc.md: the mean of each user's AUC over the users holding positive and negative label weight."""
    values = []
    for user in np.unique(users):
        mine = users == user
        value = _auc(y[mine], s[mine], w[mine])
        if not math.isnan(value):
            values.append(value)
    return float(np.mean(values)) if values else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


def _bins(scores: np.ndarray, logits: bool, num_bins: int) -> np.ndarray:
    """docs/auc.md: ``num_bins`` bins uniform in the logit over (-16, 16), scores outside in the end bins."""
    with np.errstate(divide="ignore"):
        z = scores if logits else np.log(scores) - np.log1p(-scores)
    return np.clip(np.floor((z + 16.0) / 32.0 * num_bins), 0, num_bins - 1)


def _value(case: Case, key: str, task: str, rows: pd.DataFrame) -> float:
    metric, options = case.entries[key]
    t = list(case.kinds).index(task)
    s = rows[f"p{t}"].to_numpy(np.float64)
    y = rows[f"y{t}"].to_numpy(np.float64)
    weighted = case.use_weights and case.weighted[task]
    w = rows["w"].to_numpy(np.float64) if weighted else np.ones(len(rows))
    if len(rows) == 0:
        return math.nan
    logits = case.from_logits and any(case.reads(m, task) for m in case.metrics if case.name(m) in PROBABILITY)
    p = _sigmoid(s) if logits else s  # a head read by a metric of probabilities holds logits
    if metric == "ne":
        return _ne(y, s, w, logits, options.get("eta", 1e-12))
    if metric == "log_loss":  # docs/pointwise.md: sum w*CE / W
        return float(_cross_entropy(y, s, logits, 1e-12) @ w / w.sum()) if w.sum() > 0 else math.nan
    if "num_bins" in options:  # ties within a bin: scikit-learn's trapezoid over the bins
        return _auc(y, _bins(s, logits, options["num_bins"]), w, float32=False)
    if metric in ("auc", "auprc"):
        return _auc(y, s, w, metric == "auprc")  # rank-based: logits rank as their probabilities
    if metric == "gauc":
        return _gauc(y, s, w, rows["user"].to_numpy(np.int64))
    if metric == "calibration":
        return _ratio(np.sum(w * p), np.sum(w * y))
    if metric == "ctr":
        return _ratio(np.sum(w * y), np.sum(w))
    if w.sum() == 0:
        return math.nan
    if metric == "weighted_average":
        return float(np.sum(w * p) / w.sum())
    if metric == "mse":
        return float(mean_squared_error(y, p, sample_weight=w))
    if metric == "mae":
        return float(mean_absolute_error(y, p, sample_weight=w))
    if metric == "r_squared":  # constant labels: nan (docs/torchrec_parity.md), where scikit-learn gives 0
        constant = np.ptp(y[w > 0]) == 0
        return math.nan if constant else float(r2_score(y, p, sample_weight=w))
    name, k = key.split("@")
    queries = group_rows(rows["session"].to_numpy(np.int64).tolist(), s, y, w)
    return reference_values(queries, [(name, int(k))])[0]


def _kept(case: Case, task: str) -> pd.Series:
    """The rows a task keeps: valid in its predictions, labels, weights (if weighted) and the ids it reads."""
    t = list(case.kinds).index(task)
    frame = case.frame
    keep = frame[f"p{t}"].notna() & frame[f"y{t}"].notna()
    if case.use_weights and case.weighted[task]:
        keep &= frame["w"].notna()
    if any(case.reads(m, task) for m in case.metrics if case.name(m) == "gauc"):
        keep &= frame["user"].notna()
    if any(case.reads(m, task) for m in case.metrics if "@" in m):  # the ranking names
        keep &= frame["session"].notna()
    return keep


def _segments(case: Case) -> list[tuple[tuple[Any, ...], pd.Index]]:
    """Every segment found in the data (over every row) and its rows: a pandas groupby, nulls their own."""
    if not case.by:
        return []
    keys = case.frame[case.by].astype(object).where(case.frame[case.by].notna(), None)
    groups = keys.groupby(case.by if len(case.by) > 1 else case.by[0], dropna=False, sort=False).groups
    return [
        (
            tuple(
                None if isinstance(v, float) and math.isnan(v) else v
                for v in (key if isinstance(key, tuple) else (key,))
            ),
            index,
        )
        for key, index in groups.items()
    ]


def _expected(case: Case) -> dict[tuple[tuple[Any, ...] | None, str], dict[str, float]]:
    """(segment values or None for all rows, task) -> {"rows": ..., metric: value} of the metrics reading it."""
    out = {}
    keeps = {task: _kept(case, task) for task in case.kinds}
    parts = [(None, case.frame.index), *_segments(case)]
    for key, index in parts:
        for task in case.kinds:
            rows = case.frame.loc[index][keeps[task].loc[index]]
            # the rows that count: of non-zero weight where the task is weighted (docs/evaluate.md, "Reading the result")
            weighted = case.use_weights and case.weighted[task]
            want: dict[str, float] = {"rows": int((rows["w"] != 0).sum()) if weighted else len(rows)}
            want["kept"] = len(rows)  # every kept row, weight 0 too: the segments an undefined line counts
            for metric in case.readers[task]:
                want[metric] = _value(case, metric, task, rows)
            out[(key, task)] = want
    return out


# ---------------------------------------------------------------- inputs and outputs


def _data(case: Case, tmp_path) -> Any:
    if case.fmt == "frame":
        return case.frame
    table = pa.Table.from_pandas(case.frame, preserve_index=False)
    if case.fmt == "parquet":
        path = tmp_path / "logs.parquet"
        pq.write_table(table, path, row_group_size=int(np.random.default_rng(len(case.frame)).integers(20, 90)))
    else:
        path = tmp_path / "logs.csv"
        case.frame.to_csv(path, index=False)
    return str(path)


def _close(got: Any, want: float, metric: str) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return got is None or (isinstance(got, float) and math.isnan(got))
    rel = 1e-6 if metric in EXACT_AUC else 1e-9  # by key: the exact AUCs keep float32 weights
    return got is not None and got == pytest.approx(want, rel=rel, abs=1e-12)


def _check_records(case: Case, records: list[dict], expected: dict, where: str) -> None:
    segments = [None, *(key for key, _ in _segments(case))]
    assert sorted(((r["segment"] == "all"), r["task"]) for r in records) == sorted(
        (key is None, task) for key in segments for task in case.kinds
    ), where
    for record in records:
        key = None if record["segment"] == "all" else tuple(record[c] for c in case.by)
        want = expected[(key, record["task"])]
        fields = [f for f in record if f not in ("segment", "task", "rows", *case.by)]
        assert fields == case.readers[record["task"]], (where, record)  # the metrics reading it, in order
        assert record["rows"] == want["rows"], (where, record)
        for metric in fields:
            assert _close(record[metric], want[metric], metric), (
                where,
                record["segment"],
                record["task"],
                metric,
                record[metric],
                want[metric],
            )


_UNDEFINED = re.compile(
    r"^(.+?) (?:is|are) undefined for task '(\w+)' (?:in ([\d,]+) of ([\d,]+) segments|over all rows)"
)


def _check_warnings(case: Case, warnings: list[str], expected: dict) -> None:
    """docs/evaluate.md "Undefined values": one line per metric, task and reason undefined somewhere, counting the
    segments where it is (out of the task's segments with rows), and a line of its own over all rows; none
    for a metric that does not read the task."""
    want: dict[tuple[str, str, bool], tuple[int, int]] = {}
    for (key, task), values in expected.items():
        for metric in case.readers[task]:
            if values["kept"] and math.isnan(values[metric]):
                where = (metric, task, key is None)
                count, _ = want.get(where, (0, 0))
                want[where] = (count + 1, 0)
    for (metric, task, overall), (count, _) in list(want.items()):
        if not overall:
            with_rows = sum(1 for (key, t), v in expected.items() if key is not None and t == task and v["kept"])
            want[(metric, task, overall)] = (count, with_rows)
    got: dict[tuple[str, str, bool], tuple[int, int]] = {}
    for line in warnings:
        found = _UNDEFINED.match(line)
        if found is None:
            continue
        names, task, count, total = found.groups()
        for metric in re.split(r", | and ", names):
            where = (metric, task, count is None)
            if count is None:
                got[where] = (0, 0)
            else:  # one line per metric, task and reason: the counts of its reasons add up
                before = got.get(where, (0, 0))[0]
                got[where] = (before + int(count.replace(",", "")), int(total.replace(",", "")))
    want = {where: (0, 0) if where[2] else value for where, value in want.items()}
    assert got == want, warnings


def _rows_of(table: pa.Table, case: Case) -> list[dict]:
    """An output table's rows as records: a metric not reading the line's task is a null there."""
    out = []
    for row in table.to_pylist():
        unread = [k for k in case.metrics if not case.reads(k, row["task"])]
        assert [row[k] for k in unread] == [None] * len(unread), row  # a null where the metric reads no such task
        out.append({k: v for k, v in row.items() if k not in unread})
    return out


# ---------------------------------------------------------------- the tests


SEEDS = range(48)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
@pytest.mark.parametrize("seed", SEEDS)
def test_random_configuration_against_references(seed, tmp_path):
    case = _draw(seed)
    data = _data(case, tmp_path)
    tasks = case.task_dicts()
    invalid = case.nulls and not all(_kept(case, task).all() for task in case.kinds)
    if invalid and case.on_invalid == "error":
        with pytest.raises(InvalidDataError):
            evaluate(data, tasks, case.spec, **case.kwargs())
        case.on_invalid = "skip"
    result = evaluate(data, tasks, case.spec, **case.kwargs())
    expected = _expected(case)
    _check_records(case, result.records, expected, "records")
    _check_warnings(case, result.warnings, expected)
    # rows dropped for at least one task
    dropped = ~np.logical_and.reduce([_kept(case, task).to_numpy() for task in case.kinds])
    assert result.rows_skipped == int(dropped.sum())
    # the flat values: exactly the (metric, task) pairs read, per segment
    pairs = {tuple(key.split("/")[:2]) for key in result.values}
    assert pairs == {(m, t) for t, ms in case.readers.items() for m in ms}
    # the output files
    result.write(str(tmp_path / "r.json"))
    _check_records(case, json.loads((tmp_path / "r.json").read_text())["records"], expected, "json")
    result.write(str(tmp_path / "r.parquet"))
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column_names[-len(case.metrics) :] == case.metrics
    _check_records(case, _rows_of(table, case), expected, "parquet")
    result.write(str(tmp_path / "r.csv"))
    types = {c: pa.float64() for c in case.metrics} | {"hour": pa.int64(), "country": pa.string()}
    table = pacsv.read_csv(
        tmp_path / "r.csv", convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    )
    _check_records(case, _rows_of(table, case), expected, "csv")
    _check_records(case, _rows_of(result.to_arrow(), case), expected, "to_arrow")
    if not invalid:
        _check_module(case, result.values)


def _check_module(case: Case, values: dict[str, float]) -> None:
    """A RecMetricModule(metric_tasks=...) fed the same rows gives evaluate's overall values (a cross-check)."""
    frame = case.frame
    infos = []
    for t, task in enumerate(case.kinds):
        infos.append(
            tmx.RecTaskInfo(
                task,
                label_name=f"y{t}",
                prediction_name=f"p{t}",
                weight_name="w" if case.use_weights and case.weighted[task] else None,
                group_id_name="user"
                if any(case.reads(m, task) for m in case.metrics if case.name(m) == "gauc")
                else None,
                session_id_name="session" if any(case.reads(m, task) for m in case.metrics if "@" in m) else None,
            )
        )
    metrics = {}
    for key, (name, options) in case.entries.items():
        logits = case.from_logits and name in PROBABILITY  # each metric of probabilities says its heads hold logits
        metrics[key] = {
            "metric": name if "@" not in key else key,
            **options,
            **({"from_logits": True} if logits else {}),
        }
    module = tmx.RecMetricModule(infos, metrics, metric_tasks=case.metric_tasks, throughput=False)
    step = {f"p{t}": torch.tensor(frame[f"p{t}"].to_numpy(np.float64)) for t in range(len(case.kinds))}
    step |= {f"y{t}": torch.tensor(frame[f"y{t}"].to_numpy(np.float64)) for t in range(len(case.kinds))}
    step |= {"w": torch.tensor(frame["w"].to_numpy(np.float64))}
    step |= {c: torch.tensor(frame[c].fillna(-1).to_numpy(np.int64)) for c in ("user", "session")}  # unread nulls
    for start in range(0, len(frame), case.batch_size):
        module.update({k: v[start : start + case.batch_size] for k, v in step.items()})
    online = {key: value.item() for key, value in module.compute().items()}
    overall = {key: value for key, value in values.items() if key.count("/") == 1}
    assert online.keys() == overall.keys()
    for key, value in online.items():
        assert _close(overall[key], value, key.split("/")[0]), (key, overall[key], value)


# ---------------------------------------------------------------- what the random hunt found, pinned


def _two_heads(n: int = 240, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    watch = rng.exponential(300.0, n)
    return pd.DataFrame(
        {
            "logit": rng.normal(0.0, 2.0, n) + y,  # a click head's logits
            "y": y,
            "pred_watch": watch * rng.uniform(0.5, 1.5, n),
            "watch": watch,
            "user": pd.array(rng.integers(0, 9, n), dtype="Int64"),
            "session": pd.array(rng.integers(0, 30, n), dtype="Int64"),
        }
    )


TWO_HEADS = ["click=logit:y", "watch_time=pred_watch:watch"]


@pytest.mark.parametrize(
    "mapping",
    [
        {"mse": ["click", "watch_time"], "mae": ["watch_time"]},  # mae reads some tasks
        {"mse": ["click", "watch_time"], "mae": ["click", "watch_time"]},  # every list names every task
        {"mse": ["click", "watch_time"]},
    ],
)
def test_heads_read_by_no_probability_metric_keep_their_values_whatever_the_lists(mapping):
    """``from_logits=True`` with ``metric_tasks``: only heads a metric of probabilities reads hold logits.

    No metric of probabilities here, so both heads keep their values. A mapping whose lists all name
    every task is a ``metric_tasks`` too: it used to be read as none, every head then logits, so
    ``mse/click`` changed (to that of ``sigmoid``) when ``mae`` was given one more task.
    """
    frame = _two_heads()
    frame["country"] = np.random.default_rng(2).choice(["de", "fr"], len(frame))
    metrics = list(mapping)
    result = evaluate(frame, TWO_HEADS, metrics, metric_tasks=mapping, from_logits=True, by="country")
    for suffix, rows in [("", frame), *((f"/country={c}", g) for c, g in frame.groupby("country"))]:
        want = mean_squared_error(rows.y, rows.logit)
        assert result.values[f"mse/click{suffix}"] == pytest.approx(want, rel=1e-12), suffix
        want = mean_squared_error(rows.watch, rows.pred_watch)
        assert result.values[f"mse/watch_time{suffix}"] == pytest.approx(want, rel=1e-12), suffix


@pytest.mark.parametrize("mapping", [{"mse": ["click", "watch_time"]}, {"mse": ["watch_time"], "mae": ["click"]}])
def test_unread_ids_drop_no_row_whatever_the_lists(mapping):
    """With ``metric_tasks`` the user (session) ids are read by the tasks a grouped (ranking) metric reads alone.

    Here none does: a null user or session id drops no row, whether or not the lists name every task.
    """
    frame = _two_heads()
    frame.loc[[3, 50], "user"] = pd.NA
    frame.loc[[7], "session"] = pd.NA
    result = evaluate(
        frame, TWO_HEADS, list(mapping), metric_tasks=mapping, user="user", session="session", on_invalid="skip"
    )
    assert result.rows_skipped == 0
    assert [r["rows"] for r in result.records] == [len(frame)] * 2


def test_mse_reading_logits_probabilities_and_seconds():
    """The documented rule on one run: ``mse`` reads a click head of logits (``auc`` reads it: ``sigmoid``), a like
    head of probabilities and a watch-time head of seconds (only metrics of values read them: as given), overall
    and per segment; a module whose metrics each set ``from_logits`` agrees."""
    rng = np.random.default_rng(21)
    n = 300
    y_click = rng.integers(0, 2, n).astype(np.float64)
    y_like = rng.integers(0, 2, n).astype(np.float64)
    watch = rng.exponential(5000.0, n)
    frame = pd.DataFrame(
        {
            "logit": rng.normal(0.0, 2.0, n) + y_click,
            "y_click": y_click,
            "p_like": rng.uniform(0.0, 1.0, n),
            "y_like": y_like,
            "pred_watch": watch * rng.uniform(0.5, 1.5, n),
            "watch": watch,
            "w": rng.uniform(0.1, 4.0, n),
            "country": rng.choice(["de", "fr", "us"], n),
        }
    )
    tasks = ["click=logit:y_click", "like=p_like:y_like", "watch_time=pred_watch:watch"]
    mapping = {"auc": ["click"], "mae": ["like", "watch_time"]}  # mse (left out) reads all three
    result = evaluate(
        frame,
        tasks,
        ["auc", "mse", "mae"],
        metric_tasks=mapping,
        weights="w",
        from_logits=True,
        by="country",
        batch_size=32,
    )
    frame["p_click"] = _sigmoid(frame["logit"].to_numpy())
    columns = {"click": ("p_click", "y_click"), "like": ("p_like", "y_like"), "watch_time": ("pred_watch", "watch")}
    for suffix, rows in [("", frame), *((f"/country={c}", g) for c, g in frame.groupby("country"))]:
        for task, (pred, label) in columns.items():
            want = mean_squared_error(rows[label], rows[pred], sample_weight=rows.w)
            assert result.values[f"mse/{task}{suffix}"] == pytest.approx(want, rel=1e-10), (task, suffix)
        for task in ("like", "watch_time"):
            pred, label = columns[task]
            want = mean_absolute_error(rows[label], rows[pred], sample_weight=rows.w)
            assert result.values[f"mae/{task}{suffix}"] == pytest.approx(want, rel=1e-10), (task, suffix)
        want = roc_auc_score(rows.y_click, rows.logit, sample_weight=rows.w.astype(np.float32))
        assert result.values[f"auc/click{suffix}"] == pytest.approx(want, rel=1e-6)
    infos = [
        tmx.RecTaskInfo(t, label_name=y, prediction_name=p, weight_name="w")
        for t, (p, y) in {
            "click": ("logit", "y_click"),
            "like": ("p_like", "y_like"),
            "watch_time": ("pred_watch", "watch"),
        }.items()
    ]
    module = tmx.RecMetricModule(
        infos, {"auc": {"from_logits": True}, "mse": None, "mae": None}, metric_tasks=mapping, throughput=False
    )
    module.update({c: torch.tensor(frame[c].to_numpy(np.float64)) for c in frame if c != "country"})
    for key, value in module.compute().items():
        assert result.values[key] == pytest.approx(value.item(), rel=1e-10), key


def _strict(records: list[dict]) -> list[dict]:
    """Records as strict JSON writes them: an undefined value (``nan``) is ``null``."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
def test_command_line_and_config_file_give_the_python_values_on_a_random_case(tmp_path, capsys):
    """One random configuration (a mapping of metrics with options, some tasks unweighted, skip, segments)
    as a ``--config`` file and as flags: the records of the Python call."""
    case = next(
        c
        for c in map(_draw, range(1000))
        if c.fmt == "parquet"
        and isinstance(c.spec, dict)
        and c.by
        and c.use_weights
        and not all(c.weighted.values())
        and c.nulls
    )
    case.on_invalid = "skip"
    path = _data(case, tmp_path)
    python = evaluate(path, case.task_dicts(), case.spec, **case.kwargs())
    _check_records(case, python.records, _expected(case), "python")
    kwargs = case.kwargs()
    config = {"paths": [path], "tasks": case.task_dicts(), "metrics": case.spec, "no": None} | kwargs
    config.pop("no")
    (tmp_path / "eval.json").write_text(json.dumps(config))
    capsys.readouterr()
    code = cli.main(
        ["evaluate", "--no-progress", "--config", str(tmp_path / "eval.json"), "--output", str(tmp_path / "c.json")]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "c.json").read_text())["records"] == _strict(python.records)
    # the flags, with the file giving the tasks (per-task weights) and the metrics' options alone
    (tmp_path / "base.json").write_text(json.dumps({"tasks": case.task_dicts(), "metrics": case.spec}))
    flags = [f"--metric-tasks={m}={','.join(t)}" for m, t in case.metric_tasks.items()]
    flags += ["--weights", "w", "--user", "user", "--session", "session", "--by", ",".join(case.by)]
    flags += ["--on-invalid", "skip", "--batch-size", str(case.batch_size)]
    flags += ["--from-logits"] if case.from_logits else []
    code = cli.main(
        [
            "evaluate",
            "--no-progress",
            "--config",
            str(tmp_path / "base.json"),
            path,
            *flags,
            "--output",
            str(tmp_path / "f.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "f.json").read_text())["records"] == _strict(python.records)


def _ddp_random(rank: int, world_size: int, path: str, seed: int) -> dict[str, float]:
    import torch.distributed as dist

    case = _draw(seed)
    case.on_invalid = "skip"
    result = evaluate(path, case.task_dicts(), case.spec, **case.kwargs())
    assert dist.is_initialized()
    return result.values | {"rows_skipped": float(result.rows_skipped)}


def _ddp_case(case: Case) -> bool:
    """A Parquet case with segments, invalid rows, a grouped or ranking metric and several metrics."""
    grouped = any(case.name(m) == "gauc" or "@" in m for m in case.metrics)
    return case.fmt == "parquet" and bool(case.by) and case.nulls and grouped and len(case.metrics) >= 4


@pytest.mark.ddp
@pytest.mark.parametrize("row_groups", ["several", "one"])  # one: the second rank reads no row
def test_two_ranks_on_a_random_case_equal_the_references(ddp_pool, tmp_path, row_groups):
    seed = next(s for s in range(1000) if _ddp_case(_draw(s)))
    case = _draw(seed)
    case.on_invalid = "skip"
    path = _data(case, tmp_path)
    if row_groups == "one":
        pq.write_table(pq.read_table(path), path, row_group_size=len(case.frame))
    single = evaluate(path, case.task_dicts(), case.spec, **case.kwargs())
    expected = _expected(case)
    _check_records(case, single.records, expected, "one process")
    for values in ddp_pool.run(_ddp_random, path, seed):
        assert values.pop("rows_skipped") == single.rows_skipped
        assert values.keys() == single.values.keys()
        for key, value in single.values.items():
            assert values[key] == pytest.approx(value, rel=1e-10, nan_ok=True), key


def test_one_head_weighted_and_unweighted_as_two_tasks():
    """The same predictions and labels, one task weighted and one given ``weight_name: None``, are two views (as
    ``RecMetricModule`` has them: another weight column): accepted, each against scikit-learn; refused where no
    task is weighted (``weights`` not given), since both would report the same values."""
    frame = _two_heads()
    frame["w"] = np.random.default_rng(5).uniform(0.1, 3.0, len(frame))
    tasks = [
        {"name": "click", "prediction_name": "logit", "label_name": "y"},
        {"name": "click_unweighted", "prediction_name": "logit", "label_name": "y", "weight_name": None},
        {"name": "watch_time", "prediction_name": "pred_watch", "label_name": "watch"},
    ]
    mapping = {"auc": ["click", "click_unweighted"], "mse": ["watch_time"]}
    result = evaluate(frame, tasks, ["auc", "mse"], metric_tasks=mapping, weights="w", from_logits=True)
    weights = frame.w.astype(np.float32)  # the exact AUC keeps float32 weights
    assert result.values["auc/click"] == pytest.approx(roc_auc_score(frame.y, frame.logit, sample_weight=weights))
    assert result.values["auc/click_unweighted"] == pytest.approx(roc_auc_score(frame.y, frame.logit))
    assert result.values["auc/click"] != pytest.approx(result.values["auc/click_unweighted"])
    want = mean_squared_error(frame.watch, frame.pred_watch, sample_weight=frame.w)
    assert result.values["mse/watch_time"] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="Tasks 'click' and 'click_unweighted' read the same columns"):
        evaluate(frame, tasks, ["auc", "mse"], metric_tasks=mapping, from_logits=True)


def test_a_metric_of_values_may_say_from_logits_false_with_metric_tasks():
    """With ``metric_tasks`` and ``from_logits=True`` evaluate builds a metric of values without ``from_logits``
    (the heads a metric of probabilities reads hold logits, and it reads ``sigmoid`` there): an option
    ``from_logits: false`` on it says the same and is taken (it was refused, the message saying evaluate sets the
    option on every metric it builds, which it does not there). On a metric of probabilities it is still refused."""
    frame = _two_heads()
    mapping = {"auc": ["click"], "mse": ["click", "watch_time"]}
    metrics = {"auc": None, "mse": {"from_logits": False}}
    result = evaluate(frame, TWO_HEADS, metrics, metric_tasks=mapping, from_logits=True)
    want = mean_squared_error(frame.y, _sigmoid(frame.logit.to_numpy()))  # click holds logits: auc reads it
    assert result.values["mse/click"] == pytest.approx(want, rel=1e-12)
    want = mean_squared_error(frame.watch, frame.pred_watch)  # watch time: as given
    assert result.values["mse/watch_time"] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="Metric 'auc': its option from_logits=False disagrees"):
        evaluate(frame, TWO_HEADS, {"auc": {"from_logits": False}, "mse": None}, metric_tasks=mapping, from_logits=True)
