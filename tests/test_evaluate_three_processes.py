"""``evaluate`` split between 3 processes (gloo), on seeded random datasets, against one process and references.

The ranks split the Parquet row groups (whole CSV files) round-robin (docs/evaluate.md, "Many processes"), so
with 3 processes one rank often reads a single small row group or none, a row group of one row lands next to one
of hundreds, a 0-row file and a file of one row group sit between files of many small ones, and the ids of one
user (one session) lie in row groups read by different processes ("a session's rows may be anywhere in the
files"). Each seed draws such a layout (Parquet, CSV, or both), 1 to 3 binary tasks with or without shared
weights (some tasks given ``weight_name: None``), ``metric_tasks`` or none, 0 to 2 ``by`` columns among a text
column (a value present in the last file alone, so on one process), a float column (NaN and null segments) and an
integer column (null segments), ``on_invalid="skip"`` with invalid rows in one file only (so on one process),
and per-file column types that Arrow unifies (float32 or float64 scores, int8/bool/float labels, int32/int64/uint64
ids, dictionary-encoded text); some seeds also pass the rows as one in-memory ``pyarrow.Table``.

Every rank's result must be one process's (records in the same segment order, row counts, skipped rows, invalid
row tallies and warnings; values up to the last digit of float64 sums added in another order), and one process's
records must be the references written here from the docs alone: scikit-learn's ``roc_auc_score`` and
``average_precision_score``, NE/CTR/calibration in numpy (docs/pointwise.md), GAUC as the mean of the users' AUCs
(docs/auc.md), the ranking names from ``tests/helpers/ranking_reference.py``, segments by a pandas groupby over
the data as written. Refusals (a column of another type, or missing, or invalid rows, in one rank's file only; a
pandas object column whose later slices hold text; an error that is not the data's on one rank) must fail every
rank with one process's message, within a timeout; one ``torchrun --nproc-per-node 3`` run checks the command.

``TMX_EV3_SEEDS=N`` runs N more seeds (a longer hunt, refusals of 1 or 2 spoiled files too); the committed run
checks a few chosen ones (``test_the_chosen_seeds_cover_the_layouts``).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.helpers.ranking_reference import group_rows, reference_values
from torchmetrics_ext.evaluate import InvalidDataError, evaluate

WORLD = 3
ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ne", "auc", "auprc", "ctr", "calibration", "gauc", "ndcg@k", "recall@k", "mrr")
GROUPED = ("gauc",)  # read the user ids
RANKED = ("ndcg", "recall", "mrr")  # read the session ids
EXTRA_SEEDS = int(os.environ.get("TMX_EV3_SEEDS", "0"))
TIMEOUT = 120.0  # a job that hangs (a rank left in a collective) fails the test instead
# random datasets: some segments hold one class on purpose (their values nan, checked against the references)
pytestmark = pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")


@dataclass
class Case:
    """One random dataset (as written: ``frame``, in file order) and the arguments of its run."""

    frame: pd.DataFrame
    files: list[tuple[str, int, int]]  # (name, rows, row group size; 0: CSV)
    styles: list[dict[str, Any]]  # each Parquet file's column types (Arrow unifies them across files)
    tasks: list[str]
    weights: bool
    unweighted: list[str]  # tasks given weight_name None
    metrics: list[str]
    metric_tasks: dict[str, list[str]]
    by: list[str]
    on_invalid: str
    batch_size: int

    def reads(self, metric: str, task: str) -> bool:
        return task in self.metric_tasks.get(metric, self.tasks)

    def task_dicts(self) -> list[dict[str, Any]]:
        out = []
        for t, task in enumerate(self.tasks):
            spec: dict[str, Any] = {"name": task, "prediction_name": f"p{t}", "label_name": f"y{t}"}
            if task in self.unweighted:
                spec["weight_name"] = None
            out.append(spec)
        return out

    def kwargs(self) -> dict[str, Any]:
        return {
            "metric_tasks": self.metric_tasks or None,
            "weights": "w" if self.weights else None,
            "user": "user",
            "session": "session",
            "by": self.by or None,
            "on_invalid": self.on_invalid,
            "batch_size": self.batch_size,
        }


def _layout(rng: np.random.Generator, n: int) -> list[tuple[int, int, str]]:
    """Files as (rows, row group size, format): a 0-row file, one of one row group, many small ones, CSV."""
    kinds = str(rng.choice(["parquet", "csv", "mixed"], p=[0.5, 0.2, 0.3]))
    num_files = int(rng.integers(1, 6))
    cuts = np.sort(rng.choice(np.arange(1, n), num_files - 1, replace=False)) if num_files > 1 else np.array([])
    sizes = np.diff(np.concatenate([[0], cuts, [n]])).astype(int).tolist()
    out = []
    for size in sizes:
        fmt = "csv" if kinds == "csv" or (kinds == "mixed" and rng.random() < 0.5) else "parquet"
        shape = rng.random()
        group = size if shape < 0.3 else int(rng.integers(1, 8)) if shape < 0.6 else int(rng.integers(10, 60))
        out.append((size, max(group, 1), fmt))
    if rng.random() < 0.5:  # a file of no row at all, somewhere
        out.insert(int(rng.integers(0, len(out) + 1)), (0, 1, "parquet"))
    if not any(fmt == "parquet" for *_, fmt in out) and rng.random() < 0.5:
        out.append((0, 1, "parquet"))
    return out


def _draw(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 260))
    num_tasks = int(rng.integers(1, 4))
    tasks = [f"t{t}" for t in range(num_tasks)]
    columns: dict[str, Any] = {}
    for t in range(num_tasks):
        y = (rng.random(n) < rng.uniform(0.15, 0.6)).astype(np.float64)
        columns[f"p{t}"] = np.clip(rng.beta(2, 3, n) + 0.25 * y, 0.0, 1.0)
        columns[f"y{t}"] = y
    w = rng.uniform(0.1, 3.0, n)
    w[rng.random(n) < 0.05] = 0.0
    columns["w"] = w
    num_users = int(rng.integers(2, 20))
    sessions = int(rng.integers(3, 40))
    # ids anywhere in the rows (so in row groups of several processes), or sorted (contiguous runs)
    users = rng.integers(0, num_users, n)
    session = rng.integers(0, sessions, n)
    if rng.random() < 0.3:
        session = np.sort(session)
    columns["user"] = pd.array(users, dtype="Int64")
    columns["session"] = pd.array(session, dtype="Int64")
    columns["g"] = pd.array(rng.choice(["a", "b", "c"], n), dtype=object)
    columns["f"] = rng.choice([0.5, 1.5, -2.0, np.nan], n)
    columns["h"] = pd.array(rng.integers(0, 4, n), dtype="Int64")
    frame = pd.DataFrame(columns)
    files = _layout(rng, n)
    # where each row lands: its file's format; the text value "z" in the last non-empty file alone
    formats = np.concatenate([np.full(size, fmt) for size, _, fmt in files]) if n else np.array([])
    last = max(i for i, (size, *_) in enumerate(files) if size)
    start = sum(size for size, *_ in files[:last])
    frame.loc[start : start + files[last][0] - 1, "g"] = "z"
    if rng.random() < 0.7:  # nulls: a null segment of each column (CSV: the float's only, see below)
        frame.loc[rng.random(n) < 0.08, "g"] = None
        frame.loc[rng.random(n) < 0.08, "f"] = None
        frame.loc[rng.random(n) < 0.08, "h"] = pd.NA
    csv = formats == "csv"
    frame["f"] = frame["f"].astype(object)
    # a CSV file reads NaN text as null and an empty text field as text "": write neither there
    frame.loc[csv & frame["f"].isna(), "f"] = None
    frame.loc[~csv & frame["f"].isna() & (rng.random(n) < 0.5), "f"] = math.nan
    frame.loc[csv & frame["g"].isna(), "g"] = "a"
    # values every stored type holds exactly (float32 scores and weights, as models log them)
    for column in [*(f"p{t}" for t in range(num_tasks)), "w"]:
        frame[column] = frame[column].astype(np.float32).astype(np.float64)
    # the types each file stores (another generator: the layouts above do not depend on it)
    types = np.random.default_rng([seed, 1])
    styles = [
        {
            "score": types.choice(["float64", "float32"]),
            "label": types.choice(["float64", "int8", "bool"]),
            "id": types.choice(["int64", "uint64", "int32"]),
            "h": types.choice(["int64", "int32"]),
            "g": types.choice(["string", "large_string", "dictionary"]),
        }
        for _ in files
    ]
    names = []
    for i, (size, group, fmt) in enumerate(files):
        if size == 0 and types.random() < 0.3:
            fmt = "csv"  # a header-only CSV file
        names.append((f"part-{i:02d}.{fmt}", size, 0 if fmt == "csv" else group))
    weights = bool(rng.integers(2))
    unweighted = [t for t in tasks if weights and rng.random() < 0.25]
    k = int(rng.integers(1, 6))
    pool = [m.replace("@k", f"@{k}") for m in METRICS]
    metrics = [str(m) for m in rng.choice(pool, int(rng.integers(3, 7)), replace=False)]
    metric_tasks: dict[str, list[str]] = {}
    if num_tasks > 1 and rng.random() < 0.4:
        for m in metrics:
            if rng.random() < 0.5:
                metric_tasks[m] = sorted(map(str, rng.choice(tasks, int(rng.integers(1, num_tasks + 1)), False)))
        for task in tasks:  # every task read by some metric
            if not any(task in metric_tasks.get(m, tasks) for m in metrics):
                metric_tasks[metrics[0]] = sorted({*metric_tasks[metrics[0]], task})
    by = [str(b) for b in rng.choice(["g", "f", "h"], int(rng.integers(0, 3)), replace=False)]
    on_invalid = "skip" if rng.random() < 0.6 else "error"
    if on_invalid == "skip":  # invalid rows in one file only: one process reads them
        bad = int(rng.choice([i for i, (size, *_) in enumerate(files) if size]))
        first = sum(size for size, *_ in files[:bad])
        rows = np.arange(first, first + files[bad][0])
        for col in ("p0", f"y{num_tasks - 1}", "w", "user", "session"):
            picked = rows[rng.random(len(rows)) < 0.15]
            frame.loc[picked, col] = pd.NA if col in ("user", "session") else np.nan
    return Case(
        frame=frame,
        files=names,
        styles=styles,
        tasks=tasks,
        weights=weights,
        unweighted=unweighted,
        metrics=metrics,
        metric_tasks=metric_tasks,
        by=by,
        on_invalid=on_invalid,
        batch_size=int(rng.integers(3, 50)),
    )


# ---------------------------------------------------------------------------------------------- the files


def _arrow(frame: pd.DataFrame, style: dict[str, Any]) -> pa.Table:
    """The rows as Arrow columns of the file's types: None is null, a float NaN of ``f`` stays NaN (a segment)."""
    arrays = {}
    for name in frame.columns:
        values = frame[name]
        if name in ("user", "session"):  # ids: one 64-bit pattern whatever the integer type
            arrays[name] = pa.array(values.astype("Int64"), type=pa.int64()).cast(style["id"])
        elif name == "h":
            arrays[name] = pa.array(values.astype("Int64"), type=pa.int64()).cast(style["h"])
        elif name == "g":
            text = pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())
            arrays[name] = text.dictionary_encode() if style["g"] == "dictionary" else text.cast(style["g"])
        elif name == "f":
            arrays[name] = pa.array(values.tolist(), type=pa.float64(), from_pandas=False)
        else:  # predictions, labels, weights: NaN is an invalid (null) row
            column = pa.array(values.to_numpy(np.float64), type=pa.float64(), from_pandas=True)
            kind = style["label"] if name.startswith("y") else style["score"]
            arrays[name] = column.cast(kind) if kind != "bool" else pc.not_equal(column, 0.0)
    return pa.table(arrays)


def _write(case: Case, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for (name, size, group), style in zip(case.files, case.styles):
        part = case.frame.iloc[start : start + size]
        start += size
        if name.endswith(".csv"):
            part.to_csv(directory / name, index=False)
        else:
            pq.write_table(_arrow(part, style), directory / name, row_group_size=group)
    return str(directory)


# ---------------------------------------------------------------------------------------------- references


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray, precision: bool = False) -> float:
    positive, negative = np.sum(w * y), np.sum(w * (1 - y))
    if precision and positive > 0 and negative <= 0:
        return 1.0  # docs/auc.md: positives only, precision 1 everywhere (as scikit-learn)
    if positive <= 0 or negative <= 0:
        return math.nan
    keep = w > 0  # zero-weight rows are absent rows
    y, s, w = y[keep], s[keep], w[keep].astype(np.float32).astype(np.float64)  # exact AUC: float32 weights
    score = average_precision_score if precision else roc_auc_score
    return float(score(y, s, sample_weight=w))


def _ne(y: np.ndarray, p: np.ndarray, w: np.ndarray, eta: float = 1e-12) -> float:
    positive, total = np.sum(w * y), np.sum(w)
    if positive <= 0 or np.sum(w * (1 - y)) <= 0:
        return math.nan
    q = np.clip(p, eta, 1 - eta)
    ce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    base = positive / total
    return float(np.sum(w * ce) / (-total * (base * math.log(base) + (1 - base) * math.log(1 - base))))


def _value(metric: str, rows: pd.DataFrame, t: int, weighted: bool) -> float:
    if len(rows) == 0:
        return math.nan
    p = rows[f"p{t}"].to_numpy(np.float64)
    y = rows[f"y{t}"].to_numpy(np.float64)
    w = rows["w"].to_numpy(np.float64) if weighted else np.ones(len(rows))
    if metric == "ne":
        return _ne(y, p, w)
    if metric in ("auc", "auprc"):
        return _auc(y, p, w, metric == "auprc")
    if metric == "ctr":
        return float(np.sum(w * y) / np.sum(w)) if np.sum(w) > 0 else math.nan
    if metric == "calibration":
        return float(np.sum(w * p) / np.sum(w * y)) if np.sum(w * y) != 0 else math.nan
    if metric == "gauc":  # the mean of the AUCs of the users holding both classes
        users = rows["user"].to_numpy(np.int64)
        values = [_auc(y[users == u], p[users == u], w[users == u]) for u in np.unique(users)]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan
    name, _, k = metric.partition("@")
    queries = group_rows(rows["session"].to_numpy(np.int64).tolist(), p, y, w)
    return reference_values(queries, [(name, int(k) if k else None)])[0]


def _kept(case: Case, task: str) -> pd.Series:
    """The rows a task keeps (docs/evaluate.md, "Invalid rows"): valid in every column it reads."""
    t = case.tasks.index(task)
    frame = case.frame
    keep = frame[f"p{t}"].notna() & frame[f"y{t}"].notna()
    if case.weights and task not in case.unweighted:
        keep &= frame["w"].notna()
    # the ids: without metric_tasks by every task where a metric reads them, else by the tasks it reads
    for column, readers in (("user", GROUPED), ("session", RANKED)):
        mine = [m for m in case.metrics if m.partition("@")[0] in readers]
        if mine and (not case.metric_tasks or any(case.reads(m, task) for m in mine)):
            keep &= frame[column].notna()
    return keep


def _segment_sort_key(value: Any) -> tuple:
    """docs/evaluate.md: numbers in order, text by code point, NaN after the numbers, null last."""
    if value is None or value is pd.NA:
        return (2, 0)
    if isinstance(value, float) and math.isnan(value):
        return (1, 0)
    return (0, value)


def _segments(case: Case) -> list[tuple[tuple[Any, ...], np.ndarray]]:
    """Every segment of the data (pandas' groups, NaN and null apart) in the documented order, with its rows."""
    if not case.by:
        return []
    keys = []
    for name in case.by:
        column = case.frame[name].astype(object).tolist()
        if name == "g":  # text: pandas may hold its nulls as NaN
            keys.append([v if isinstance(v, str) else None for v in column])
            continue
        keys.append(
            [
                "<nan>" if isinstance(v, float) and math.isnan(v) else None if v is None or v is pd.NA else v
                for v in column
            ]
        )
    marked = pd.DataFrame({name: pd.array(values, dtype=object) for name, values in zip(case.by, keys)})
    groups = marked.fillna("<null>").groupby(case.by, sort=False).indices  # pandas keeps NaN and null apart so
    out = []
    for key, rows in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        values = tuple(None if v == "<null>" else math.nan if v == "<nan>" else v for v in key)
        out.append((values, rows))
    return sorted(out, key=lambda item: tuple(_segment_sort_key(v) for v in item[0]))


def _check_against_references(case: Case, records: list[dict]) -> None:
    keeps = {task: _kept(case, task).to_numpy() for task in case.tasks}
    parts = [(None, np.arange(len(case.frame))), *_segments(case)]
    expected = [(key, rows, task) for key, rows in parts for task in case.tasks]
    assert len(records) == len(expected), ([r["segment"] for r in records], [key for key, _ in parts])
    for record, (key, rows, task) in zip(records, expected):
        where = (record["segment"], task, case.files, case.by)
        assert record["task"] == task, where
        if key is None:
            assert record["segment"] == "all", where
        else:
            got = tuple(record[name] for name in case.by)
            assert all(
                (a is None and b is None) or (a == b) or (isinstance(a, float) and math.isnan(a) and b != b)
                for a, b in zip(got, key)
            ), (where, key)
        t = case.tasks.index(task)
        mine = case.frame.iloc[rows][keeps[task][rows]]
        weighted = case.weights and task not in case.unweighted
        # the rows that weigh for the task (docs/evaluate.md, "Reading the result"): weight 0 rows left out
        assert record["rows"] == (int((mine["w"] != 0).sum()) if weighted else len(mine)), where
        for metric in case.metrics:
            if not case.reads(metric, task):
                assert metric not in record, where
                continue
            want, got = _value(metric, mine, t, weighted), record[metric]
            if math.isnan(want):
                assert got is None or math.isnan(got), (where, metric, got)
            else:
                rel = 1e-6 if metric in ("auc", "auprc", "gauc") else 1e-9  # float32 scores and weights
                assert got == pytest.approx(want, rel=rel, abs=1e-12), (where, metric)


# ---------------------------------------------------------------------------------------------- one process's


def _run(case: Case, path: str) -> Any:
    return evaluate(path, case.task_dicts(), case.metrics, **case.kwargs())


def _summary(result: Any) -> dict[str, Any]:
    return {
        "records": result.records,
        "rows_read": result.rows_read,
        "rows_skipped": result.rows_skipped,
        "problems": [str(p) for p in result.problems],
        "warnings": result.warnings,
        "values": list(result.values),  # the keys, in order
        "schema": str(result.to_arrow().schema),  # the segment columns' types
    }


def _table(case: Case) -> pa.Table:
    """The rows as one in-memory ``pyarrow.Table`` (of the first file's types), split by ``batch_size`` slices."""
    return _arrow(case.frame, case.styles[0])


def _ddp_run(rank: int, world_size: int, path: str | None, seed: int) -> dict[str, Any]:
    import torch.distributed as dist

    assert dist.is_initialized() and world_size == WORLD
    case = _draw(seed)
    return _summary(_run(case, path if path is not None else _table(case)))


def _same(got: Any, want: Any, where: str) -> None:
    """Equal, floats up to the last digits of float64 sums added in another order (nan equal to nan)."""
    if isinstance(want, float) and isinstance(got, float):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-10, abs=1e-14), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), (where, got, want)
        for key in want:
            _same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (a, b) in enumerate(zip(got, want)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


@pytest.fixture(scope="module")
def pool3():
    from tests.helpers.ddp import DDPPool

    pool = DDPPool(world_size=WORLD)
    yield pool
    pool.close()


def _check_seed(pool3: Any, tmp_path: Path, seed: int, in_memory: bool) -> None:
    case = _draw(seed)
    path = _write(case, tmp_path / f"seed{seed}")
    single = _run(case, path)
    _check_against_references(case, single.records)
    want = _summary(single)
    for rank, got in enumerate(pool3.run(_ddp_run, path, seed, timeout=TIMEOUT)):
        _same(got, want, f"seed {seed} rank {rank}")
    if in_memory:  # a table in memory: the ranks split its slices of batch_size rows
        single = _run(case, _table(case))
        _check_against_references(case, single.records)
        want = _summary(single)
        for rank, got in enumerate(pool3.run(_ddp_run, None, seed, timeout=TIMEOUT)):
            _same(got, want, f"seed {seed} (table) rank {rank}")


def _spoil(case: Case, path: str, seed: int) -> int:
    """Make 1 or 2 non-empty files bad (NaN predictions, or a missing label column); the first one's index."""
    rng = np.random.default_rng([seed, 2])
    filled = [i for i, (_, size, _) in enumerate(case.files) if size]
    bad = sorted(map(int, rng.choice(filled, min(len(filled), int(rng.integers(1, 3))), replace=False)))
    for i in bad:
        name, size, group = case.files[i]
        file = Path(path) / name
        table = pacsv.read_csv(file) if name.endswith(".csv") else pq.read_table(file)
        if rng.random() < 0.5:
            table = table.drop_columns(["y0"])
        else:
            p0 = table.column("p0").to_numpy(zero_copy_only=False).astype(np.float64)
            p0[int(rng.integers(0, size))] = np.nan
            table = table.set_column(table.schema.get_field_index("p0"), "p0", pa.array(p0, from_pandas=False))
        if name.endswith(".csv"):
            table.to_pandas().to_csv(file, index=False)
        else:
            pq.write_table(table, file, row_group_size=group)
    return bad[0]


def _ddp_refused(rank: int, world_size: int, path: str, seed: int) -> str:
    case = _draw(seed)
    try:
        _run(case, path)
    except InvalidDataError as err:
        return str(err)
    return "no error"


@pytest.mark.ddp
@pytest.mark.skipif(not EXTRA_SEEDS, reason="TMX_EV3_SEEDS=N runs N more seeds")
def test_more_refusal_seeds(pool3, tmp_path):
    """Random layouts with 1 or 2 bad files (``on_invalid="error"``): every rank gives one process's message,
    which names the first bad file of the read order."""
    for seed in range(100, 100 + EXTRA_SEEDS):
        case = _draw(seed)
        if case.on_invalid != "error":
            continue  # its invalid rows are meant to be skipped
        path = _write(case, tmp_path / f"refused{seed}")
        first = _spoil(case, path, seed)
        with pytest.raises(InvalidDataError) as single:
            _run(case, path)
        message = str(single.value)
        assert message.startswith(str(Path(path) / case.files[first][0])), (seed, message)
        assert pool3.run(_ddp_refused, path, seed, timeout=TIMEOUT) == [message] * WORLD, seed


# seeds chosen for their layouts (see test_the_chosen_seeds_cover_the_layouts)
CHOSEN = (4, 5, 16, 23, 34)


def _features(case: Case) -> set[str]:
    """What a case exercises, for the choice of the committed seeds."""
    chunks = sum(-(-size // group) if group and size else 1 for _, size, group in case.files)
    out = {m.partition("@")[0] for m in case.metrics}
    out |= {"csv" for name, *_ in case.files if name.endswith(".csv")}
    out |= {"parquet" for name, *_ in case.files if name.endswith(".parquet")}
    out |= {"empty file" for _, size, _ in case.files if size == 0}
    out |= {"one row group" for _, size, group in case.files if group >= size > 0}
    out |= {"many row groups" for _, size, group in case.files if group and size >= 5 * group}
    out |= {"a rank reads nothing"} if chunks < WORLD else set()
    out |= {"skip"} if case.on_invalid == "skip" else set()
    out |= {"metric_tasks"} if case.metric_tasks else set()
    out |= {"unweighted task"} if case.unweighted else set()
    out |= {f"by {name}" for name in case.by}
    if "f" in case.by and any(isinstance(v, float) and math.isnan(v) for v in case.frame["f"]):
        out.add("NaN segment")
    return out


def test_the_chosen_seeds_cover_the_layouts():
    covered = set().union(*(_features(_draw(seed)) for seed in CHOSEN))
    wanted = {m.partition("@")[0] for m in METRICS} | {"csv", "parquet", "empty file", "one row group"}
    wanted |= {"many row groups", "a rank reads nothing", "skip", "metric_tasks", "unweighted task", "NaN segment"}
    wanted |= {"by g", "by f", "by h"}
    assert wanted <= covered, wanted - covered


@pytest.mark.ddp
@pytest.mark.parametrize("seed", CHOSEN)
def test_three_processes_equal_one_process_and_the_references(pool3, tmp_path, seed):
    _check_seed(pool3, tmp_path, seed, in_memory=seed == CHOSEN[0])


@pytest.mark.ddp
@pytest.mark.skipif(not EXTRA_SEEDS, reason="TMX_EV3_SEEDS=N runs N more seeds")
def test_more_seeds(pool3, tmp_path):
    for seed in range(100, 100 + EXTRA_SEEDS):
        _check_seed(pool3, tmp_path, seed, in_memory=seed % 2 == 0)


# ---------------------------------------------------------------------------------------------- refusals


def _refused_files(directory: Path, kinds: tuple[str, ...]) -> str:
    """One file per kind, each read by one rank (one row group each; files go round-robin to 3 ranks)."""
    directory.mkdir()
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng(i)
        frame = pd.DataFrame(
            {"p": rng.uniform(0.05, 0.95, 12), "y": np.arange(12) % 2, "g": rng.choice(["a", "b"], 12)}
        )
        if kind == "nan":  # invalid rows
            frame.loc[[3, 7], "p"] = np.nan
        elif kind == "missing":  # a column missing from this file alone
            frame = frame.drop(columns="y")
        elif kind == "string":  # predictions of another type in this file alone
            frame["p"] = frame["p"].astype(str)
        elif kind == "int_g":  # a segment column of another type in this file alone
            frame["g"] = rng.integers(0, 3, 12)
        elif kind == "no_g":
            frame = frame.drop(columns="g")
        if kind == "csv_text":  # a CSV value that is no number, in this file alone
            frame["p"] = frame["p"].astype(object)
            frame.loc[5, "p"] = "0.3x"
        if kind.startswith("csv"):
            frame.to_csv(directory / f"part-{i}.csv", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / f"part-{i}.parquet")
    return str(directory)


def _ddp_refusal(rank: int, world_size: int, path: str, by: list[str] | None) -> str:
    try:
        evaluate(path, {"t": ("p", "y")}, ["ne", "auc"], by=by)
    except InvalidDataError as err:
        return str(err)
    return "no error"


REFUSALS = [
    # (each file's kind, by, the files the message names: the first one a process reading in order meets)
    (("ok", "missing", "ok"), None, (1,)),
    (("ok", "ok", "string"), None, (2,)),
    (("ok", "missing", "string"), None, (1,)),  # named both files, rank 1's then rank 2's
    (("ok", "missing", "ok", "string"), None, (1,)),  # named part-3 (rank 0's) before part-1 (rank 1's)
    (("nan", "ok", "missing"), None, (0,)),  # named part-2's missing column, not part-0's invalid rows
    (("ok", "missing", "nan"), None, (1,)),
    (("ok", "nan", "ok", "nan"), None, (1,)),
    (("csv", "csv", "csv_text"), None, (2,)),
    (("csv", "csv_text", "csv", "csv_text"), None, (1,)),
    (("ok", "ok", "no_g"), ["g"], (2,)),
    (("ok", "ok", "int_g"), ["g"], (2, 0)),  # both types named
]


@pytest.mark.ddp
@pytest.mark.parametrize(("kinds", "by", "named"), REFUSALS)
def test_a_refusal_on_some_processes_fails_every_process_with_one_process_s_message(pool3, tmp_path, kinds, by, named):
    """Every rank fails, in time, with the message one process gives: the first error met in the read order.

    Each rank stops at its own first error; the ranks' messages were joined in rank order (two files named,
    a later file first), and a reading error in a later file beat the invalid rows of an earlier one.
    """
    path = _refused_files(tmp_path / "data", kinds)
    with pytest.raises(InvalidDataError) as single:
        evaluate(path, {"t": ("p", "y")}, ["ne", "auc"], by=by)
    message = str(single.value)
    named_files = {f"part-{i}" for i in range(len(kinds)) if f"part-{i}." in message}
    assert named_files == {f"part-{i}" for i in named}, message  # the first file of the read order with a problem
    assert pool3.run(_ddp_refusal, path, by, timeout=TIMEOUT) == [message] * WORLD


# ---------------------------------------------------------------------------------------------- the command


def _strict(value: Any) -> Any:
    """A value as strict JSON holds it (docs/evaluate.md, "Output"): nan is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


@pytest.mark.ddp
def test_torchrun_with_three_processes_equals_one_process(tmp_path):
    """``torchrun --nproc-per-node 3``: per-task weights, ``--metric-tasks``, two ``--by`` columns (a NaN and a null
    segment), ``--on-invalid skip`` with invalid rows in one file, ids spanning every rank's row groups: the output
    file holds one process's records and warnings, and rank 0 alone prints."""
    seed = 5
    case = _draw(seed)
    assert case.unweighted and case.metric_tasks and len(case.by) == 2 and case.on_invalid == "skip"
    path = _write(case, tmp_path / "data")
    single = _run(case, path)
    _check_against_references(case, single.records)
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({"tasks": case.task_dicts(), "metrics": case.metrics}))
    out = tmp_path / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD)]
    command += ["-m", "torchmetrics_ext.cli", "evaluate", path, "--config", str(config), "--no-progress"]
    command += [f"--metric-tasks={metric}={','.join(tasks)}" for metric, tasks in case.metric_tasks.items()]
    command += ["--weights", "w", "--user", "user", "--session", "session", "--by", ",".join(case.by)]
    command += ["--on-invalid", "skip", "--batch-size", str(case.batch_size), "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"{len(case.frame):,} rows read") == 1, done.stdout  # rank 0 prints
    written = json.loads(out.read_text())
    assert written["warnings"] == single.warnings
    got, want = written["records"], _strict(single.records)
    assert [(r["segment"], r["task"], r["rows"]) for r in got] == [(r["segment"], r["task"], r["rows"]) for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-10), (a["segment"], a["task"], key)
            else:
                assert a[key] == value, (a["segment"], a["task"], key)


# ---------------------------------------------------------------------------------------------- object columns


def _object_frame(column: str, late: list[Any]) -> pd.DataFrame:
    """40 rows; ``column`` a pandas object column whose last ``len(late)`` values are of another kind."""
    frame = pd.DataFrame(
        {
            "p": np.linspace(0.05, 0.95, 40),
            "y": np.arange(40) % 2,
            "w": np.linspace(0.5, 2.0, 40),
            "u": np.arange(40) // 4,
        }
    )
    values = frame[column].tolist()
    values[len(values) - len(late) :] = late
    frame[column] = pd.array(values, dtype=object)
    return frame


OBJECT_SLICES = [
    # (column, its later values, the role named)
    ("p", [str(v) for v in np.linspace(0.1, 0.9, 20)], "predictions of task 't'"),
    ("y", ["1", "0"] * 10, "labels of task 't'"),
    ("w", ["2.0"] * 20, "weights"),
    ("u", ["12"] * 20, "user ids"),
]


def _object_run(frame: pd.DataFrame) -> Any:
    return evaluate(frame, {"t": ("p", "y")}, ["ne", "gauc"], weights="w", user="u", batch_size=10)


def _ddp_object(rank: int, world_size: int, column: str, late: list[Any]) -> str:
    try:
        _object_run(_object_frame(column, late))
    except InvalidDataError as err:
        return str(err)
    return "no error"


@pytest.mark.parametrize(("column", "late", "role"), OBJECT_SLICES)
def test_a_pandas_object_column_whose_later_slices_read_as_another_type_is_named(column, late, role):
    """The frame's type of an object column is its first values' (``double``); a later slice of text read as
    text: predictions and weights failed with a bare ``TypeError`` ('<' not supported between 'str' and 'int'),
    and text labels and ids were read as numbers where a column of text is refused."""
    frame = _object_frame(column, late)
    expected = (
        f"<pandas.DataFrame>: column {column!r} ({role}) has type string in 0-based data rows 20 to 29, where its "
        "first values read as another type"
    )
    with pytest.raises(InvalidDataError, match=re.escape(expected)):
        _object_run(frame)
    converted = frame.assign(**{column: frame[column].astype(np.float64 if column != "u" else np.int64)})
    _object_run(converted)  # as the message says: once converted, the column is read


@pytest.mark.ddp
def test_a_pandas_object_slice_of_another_type_on_one_process_fails_every_process(pool3):
    """Batches of 10 rows go round-robin: rank 1 reads rows 10 to 19 (numbers) alone, while ranks 0 and 2 met
    text and raised a bare TypeError; rank 1 waited for them in the ranks' gather until the timeout."""
    column, late, _ = OBJECT_SLICES[0]
    with pytest.raises(InvalidDataError) as single:
        _object_run(_object_frame(column, late))
    assert pool3.run(_ddp_object, column, late, timeout=TIMEOUT) == [str(single.value)] * WORLD


# ---------------------------------------------------------------------------------------------- other data per rank


def _ddp_other_files(rank: int, world_size: int, paths: list[str]) -> str:
    mine = paths if rank == 2 else paths[:-1]  # rank 2 found a file the others did not (written meanwhile)
    try:
        evaluate(mine, {"t": ("p", "y")}, ["ne", "auc"])
    except InvalidDataError as err:
        return str(err)
    return "no error"


@pytest.mark.ddp
def test_processes_that_find_other_files_fail_together_instead_of_a_wrong_result(pool3, tmp_path):
    """The ranks split the chunks of the files each one found: a glob listed while a writer adds a file (or
    arguments that differ) gave rank 2 a fourth file, and the row groups were dealt from other lists, some read
    twice and some never, with no word. Every rank now refuses, saying what differs."""
    path = _refused_files(tmp_path / "data", ("ok", "ok", "ok", "ok"))
    paths = [str(Path(path) / f"part-{i}.parquet") for i in range(4)]
    got = pool3.run(_ddp_other_files, paths, timeout=TIMEOUT)
    assert got[0] == got[1] == got[2], got
    rows = len(pq.read_table(paths[0]))  # every file's
    expected = (
        f"The processes do not read the same data: rank 0 found 3 files (3 chunks, {3 * rows} rows), "
        f"rank 2 found 4 files (4 chunks, {4 * rows} rows). "
    )
    assert got[0].startswith(expected), got[0]


def _ddp_missing_file(rank: int, world_size: int, path: str) -> str:
    mine = path if rank != 2 else str(Path(path) / "gone.parquet")  # not there on rank 2's machine
    try:
        evaluate(mine, {"t": ("p", "y")}, ["ne", "auc"])
    except (InvalidDataError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


@pytest.mark.ddp
def test_a_process_that_cannot_open_its_data_fails_every_process_instead_of_a_hang(pool3, tmp_path):
    """A path missing on rank 2 alone (another machine's disk, a file removed meanwhile): rank 2 raised at once,
    before any gather, and ranks 0 and 1 waited for it in theirs until the process group's timeout."""
    path = _refused_files(tmp_path / "data", ("ok", "ok", "ok"))
    with pytest.raises(ValueError) as single:
        evaluate(str(Path(path) / "gone.parquet"), {"t": ("p", "y")}, ["ne", "auc"])
    got = pool3.run(_ddp_missing_file, path, timeout=TIMEOUT)
    own = f"{type(single.value).__name__}: {single.value}"
    named = f"InvalidDataError: rank 2 failed to open its data: {own}"
    assert got == [named, named, own], got


# ---------------------------------------------------------------------------------------------- last: no hang


def _ddp_unexpected(rank: int, world_size: int, path: str) -> str:
    from torchmetrics_ext.evaluate.checks import RowChecker

    check = RowChecker.check

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if rank == 1:
            raise RuntimeError("injected")
        return check(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(RowChecker, "check", failing)
        try:
            evaluate(path, {"t": ("p", "y")}, ["ne", "auc"])
        except Exception as err:
            return f"{type(err).__name__}: {err}"
    return "no error"


@pytest.mark.ddp
def test_an_unexpected_error_on_one_process_fails_every_process_instead_of_a_hang(pool3, tmp_path):
    """An error that is not the data's (a bug, memory) on rank 1 alone: rank 1 raised it at once, and ranks 0
    and 2 waited in their gather for it until the process group's timeout. Rank 1 now raises its own error
    after the ranks agree, and the others an error naming rank 1, the file and what it raised."""
    path = _refused_files(tmp_path / "data", ("ok", "ok", "ok"))
    got = pool3.run(_ddp_unexpected, path, timeout=TIMEOUT)
    named = f"InvalidDataError: rank 1 failed reading {path}/part-1.parquet: RuntimeError: injected"
    assert got == [named, "RuntimeError: injected", named]
