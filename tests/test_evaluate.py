"""Offline evaluation (``torchmetrics_ext.evaluate`` and ``torchmetrics-ext evaluate``).

References are independent: scikit-learn (AUC, log loss), numpy formulas written here (NE,
calibration, CTR, recall@k, MRR@k) and a pandas groupby for grouped AUC. Segment values are
also checked against the same evaluation run on each segment's rows alone.
"""

from __future__ import annotations

import datetime
import decimal
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from torchmetrics_ext import UndefinedMetricWarning, cli
from torchmetrics_ext.evaluate import InvalidDataError, evaluate, parse_task
from torchmetrics_ext.evaluate.sources import PartitionedSource, open_sources
from torchmetrics_ext.registry import metric_names

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["click=p_click:y_click", "like=p_like:y_like"]
METRICS = ["ne", "log_loss", "calibration", "ctr", "auc", "gauc", "recall@5", "mrr@10"]
KW = {"weights": "w", "user": "user", "session": "session"}
TASK_FLAGS = [flag for task in TASKS for flag in ("--task", task)]


def make_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    affinity = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            # float32 scores, as models log them (AUC keeps float32 scores)
            "p_click": (1 / (1 + np.exp(-(affinity + rng.normal(size=n) - 1)))).astype(np.float32),
            "y_click": (rng.uniform(size=n) < 1 / (1 + np.exp(-(affinity - 1)))).astype(np.int64),
            "p_like": rng.uniform(0.02, 0.98, n).astype(np.float32),
            "y_like": (rng.uniform(size=n) < 0.3).astype(np.int64),
            "w": rng.uniform(0.1, 2.0, n).astype(np.float32).astype(np.float64),  # AUC keeps float32 weights
            "user": rng.integers(0, 60, n),
            "session": np.repeat(np.arange(n // 10), 10)[:n],
            "country": rng.choice(np.array(["fr", "us", "de"], dtype=object), n),
            "dataset": rng.choice(np.array(["a", "b"], dtype=object), n),
        }
    )
    frame.loc[rng.uniform(size=n) < 0.05, "country"] = None  # a null segment is a segment too
    return frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, frame) -> Path:
    """Three Parquet files with several row groups each (a dataset directory)."""
    root = tmp_path_factory.mktemp("dataset")
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, root / f"part-{i}.parquet", row_group_size=257)
    return root


# ----------------------------------------------------------------------------- references


def ne_ref(p, y, w):
    ctr = np.sum(w * y) / np.sum(w)
    return log_loss(y, p, sample_weight=w) / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))


def gauc_ref(p, y, users, w):
    values = [
        roc_auc_score(y[m], p[m], sample_weight=w[m])
        for u in np.unique(users)
        if len(np.unique(y[m := users == u])) == 2
    ]
    return float(np.mean(values))


def query_ref(p, y, sessions, w, k, kind):
    """Weighted (max row weight per query) mean of recall@k or MRR@k over queries with a positive."""
    values, weights = [], []
    for s in np.unique(sessions):
        m = sessions == s
        ranked = y[m][np.argsort(-p[m], kind="stable")]
        if ranked.sum() == 0:
            continue
        if kind == "recall":
            values.append(ranked[:k].sum() / ranked.sum())
        else:
            hits = np.flatnonzero(ranked[:k])
            values.append(1.0 / (hits[0] + 1) if len(hits) else 0.0)
        weights.append(w[m].max())
    return float(np.average(values, weights=weights))


def references(df: pd.DataFrame, task: str) -> dict[str, float]:
    p = df[f"p_{task}"].to_numpy(np.float64)
    y = df[f"y_{task}"].to_numpy(np.float64)
    w = df["w"].to_numpy()
    return {
        "ne": ne_ref(p, y, w),
        "log_loss": log_loss(y, p, sample_weight=w),
        "calibration": np.sum(w * p) / np.sum(w * y),
        "ctr": np.sum(w * y) / np.sum(w),
        "auc": roc_auc_score(y, p, sample_weight=w),
        "gauc": gauc_ref(p, y, df["user"].to_numpy(), w),
        "recall@5": query_ref(p, y, df["session"].to_numpy(), w, 5, "recall"),
        "mrr@10": query_ref(p, y, df["session"].to_numpy(), w, 10, "mrr"),
    }


def assert_close(values: dict[str, float], expected: dict[str, float], rtol: float = 1e-9) -> None:
    assert values.keys() == expected.keys()
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=rtol, abs=1e-12), key


# ----------------------------------------------------------------------------- values


def test_values_equal_independent_references(dataset, frame):
    result = evaluate(dataset, TASKS, METRICS, **KW)
    expected = {f"{m}/{t}": v for t in ("click", "like") for m, v in references(frame, t).items()}
    assert_close({k: result.values[k] for k in expected}, expected)
    assert result.rows_read == len(frame) and result.rows_skipped == 0
    assert [r["rows"] for r in result.records] == [len(frame)] * 2


def test_segments_equal_the_metric_on_each_segments_rows(dataset, frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # every segment of this data is defined: no warning
        result = evaluate(dataset, TASKS, METRICS, by=["country", "dataset"], batch_size=500, **KW)
    keys = {(r["country"], r["dataset"]) for r in result.records if r["segment"] != "all"}
    expected_keys = set(frame.groupby(["country", "dataset"], dropna=False).groups)
    assert keys == {(None if isinstance(c, float) else c, d) for c, d in expected_keys}
    for record in result.records[2:]:
        country, part = record["country"], record["dataset"]
        rows = frame[(frame.country.isna() if country is None else frame.country == country) & (frame.dataset == part)]
        assert record["rows"] == len(rows)
        ref = references(rows, record["task"])
        assert record["auc"] == pytest.approx(ref["auc"], rel=1e-9)
        assert record["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-9)
        alone = evaluate(rows.reset_index(drop=True), TASKS, METRICS, **KW)
        for metric in METRICS:
            assert record[metric] == pytest.approx(alone.values[f"{metric}/{record['task']}"], rel=1e-12), metric
    # overall values are those without segments
    plain = evaluate(dataset, TASKS, METRICS, **KW).values
    assert_close({k: v for k, v in result.values.items() if k.count("/") == 1}, plain, rtol=1e-12)


def pairwise_auc(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Weighted ROC AUC per group of ``keys`` from every (positive, negative) pair, ties counting one half.

    Columns ``p``, ``y``, ``w``; a group without both classes has no pair and is missing.
    """
    pairs = frame[frame.y == 1].merge(frame[frame.y == 0], on=keys, suffixes=("_pos", "_neg"))
    weight = pairs.w_pos * pairs.w_neg
    won = (pairs.p_pos > pairs.p_neg) + 0.5 * (pairs.p_pos == pairs.p_neg)
    return (weight * won).groupby([pairs[k] for k in keys]).sum() / weight.groupby([pairs[k] for k in keys]).sum()


def query_means(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per segment, the mean over queries (``(seg, session)`` pairs) with a positive of recall@k and MRR@k,
    each query weighing its largest row weight. Columns ``p``, ``y``, ``w``, ``seg``, ``session``."""
    query = [frame.seg, frame.session]
    rank = frame.groupby(["seg", "session"]).p.rank(method="first", ascending=False)
    hit = frame.y * (rank <= k)
    per_query = pd.DataFrame(
        {
            "relevant": frame.y.groupby(query).sum(),
            "hits": hit.groupby(query).sum(),
            "first": rank.where(hit > 0).groupby(query).min(),
            "weight": frame.w.groupby(query).max(),
        }
    )
    per_query = per_query[per_query.relevant > 0].reset_index()
    per_query["recall"] = per_query.hits / per_query.relevant
    per_query["mrr"] = (1 / per_query["first"]).fillna(0.0)
    weight = per_query.weight
    return pd.DataFrame(
        {
            m: (per_query[m] * weight).groupby(per_query.seg).sum() / weight.groupby(per_query.seg).sum()
            for m in ("recall", "mrr")
        }
    )


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_thousands_of_segments_equal_a_pandas_groupby_and_sklearn_on_each_segment():
    """Segments computed at once (no module per segment) are each segment's values: sums, AUC from
    every pair, GAUC and ranking against pandas groupbys written here (AUC checked against
    scikit-learn on some segments too; a session split by the segments is one query per segment),
    undefined values nan and counted in one warning line per metric and task."""
    rng = np.random.default_rng(7)
    n, num_segments = 12_000, 2_000
    frame = pd.DataFrame(
        {
            "p_click": rng.uniform(0.01, 0.99, n).astype(np.float32),
            "y_click": (rng.uniform(size=n) < 0.4).astype(np.int64),
            "p_like": rng.uniform(0.01, 0.99, n).astype(np.float32),
            "y_like": (rng.uniform(size=n) < 0.2).astype(np.int64),
            "w": rng.uniform(0.1, 2.0, n).astype(np.float32).astype(np.float64),
            "user": rng.integers(0, 3, n),
            "session": np.repeat(np.arange(n // 4), 4),  # sessions of 4 rows, spread over the segments
            "seg": rng.integers(0, num_segments, n),
        }
    )
    metrics = ["ctr", "calibration", "ne", "auc", "gauc", "recall@2", "mrr@3"]
    result = evaluate(frame, TASKS, metrics, by=["seg"], batch_size=1000, **KW)
    segments = sorted(frame.seg.unique())
    assert [r["seg"] for r in result.records[2:]] == [s for s in segments for _ in TASKS]
    for task in ("click", "like"):
        rows = frame[["w", "user", "session", "seg"]].assign(
            p=frame[f"p_{task}"].astype(np.float64), y=frame[f"y_{task}"]
        )
        p, y, w = rows.p, rows.y, rows.w
        by = (
            pd.DataFrame({"w": w, "wy": w * y, "wp": w * p, "seg": rows.seg})
            .assign(wll=-w * np.where(y > 0, np.log(p), np.log(1 - p)))
            .groupby("seg")
            .sum()
        )
        ctr = by.wy / by.w
        with np.errstate(divide="ignore", invalid="ignore"):  # NE of a single-class segment: undefined
            ne = (by.wll / by.w / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))).where((ctr > 0) & (ctr < 1))
        user_aucs = pairwise_auc(rows, ["seg", "user"])
        expected = pd.DataFrame(
            {
                "rows": rows.groupby("seg").size(),
                "ctr": ctr,
                "calibration": (by.wp / by.wy).where(by.wy > 0),
                "ne": ne,
                "auc": pairwise_auc(rows, ["seg"]),
                "gauc": user_aucs.groupby(level="seg").mean(),
                "recall@2": query_means(rows, 2).recall,
                "mrr@3": query_means(rows, 3).mrr,
            }
        ).reindex(segments)
        got = pd.DataFrame([r for r in result.records[2:] if r["task"] == task]).set_index("seg")
        assert (got.rows == expected.rows).all()
        for name in metrics:
            # defined and undefined segments both (CTR is always defined: no zero weight)
            assert expected[name].notna().sum() > 100 and (name == "ctr" or expected[name].isna().sum() > 10), name
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
        for seg in segments[:40]:  # the pairwise AUC is scikit-learn's
            part = rows[rows.seg == seg]
            if part.y.nunique() == 2:
                assert got.auc[seg] == pytest.approx(roc_auc_score(part.y, part.p, sample_weight=part.w), rel=1e-9)
        # one line per undefined (metric, task): the count of the segments the reference leaves
        # undefined and the first three of them, in segment order
        for name in ("auc", "gauc", "ne"):  # each line names the metric as requested, not its class
            undefined = [f"seg={s}" for s in expected.index[expected[name].isna()]]
            mine = [line for line in result.warnings if line.startswith(f"{name} is undefined for task {task!r} ")]
            assert len(undefined) > 10 and len(mine) == 1, name
            where = f" in {len(undefined):,} of {len(segments):,} segments ({', '.join(undefined[:3])}, ...): "
            assert where in mine[0], (name, mine[0])
    assert len(result.warnings) <= 2 * 5  # a line per (metric, task) with an undefined segment, not per segment


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("from_logits", [False, True])
def test_every_registry_metric_of_a_segment_is_that_of_its_rows_alone(from_logits):
    """Each family's segment kernel (sums, AUC, GAUC, ranking) and the per-segment path of the
    others (xauc, regression_auc) give each segment the value of an evaluation of its rows alone
    (whose values the other tests check against references), logits or not, and the warning lines
    count the segments whose evaluation alone warns."""
    # segmented_ne is the module's NE per segment id: evaluate segments every metric with `by` (refused, below);
    # session_pairwise_auc scores each batch's sessions apart, which evaluate's read batches would split (refused)
    refused = ("segmented_ne", "session_pairwise_auc")
    names = [name.replace("@k", "@3") for name in metric_names() if name not in refused]
    rng = np.random.default_rng(1)
    n = 240
    scores = rng.uniform(-4, 4, (2, n)) if from_logits else rng.uniform(size=(2, n))
    table = pa.table(
        {
            "p": scores[0].astype(np.float32),
            "y": (rng.uniform(size=n) < 0.4).astype(np.float64),
            "q": scores[1].astype(np.float32),
            "z": (rng.uniform(size=n) < 0.05).astype(np.float64),  # segments of one class: undefined values
            "w": rng.uniform(0.1, 2, n).astype(np.float32).astype(np.float64),
            "u": rng.integers(0, 5, n),
            "s": np.repeat(np.arange(n // 6), 6),
            "g": rng.integers(0, 8, n),
            "h": rng.choice(["a", "b"], n),
        }
    )
    tasks = ["a=p:y", "b=q:z"]
    kw = {"weights": "w", "user": "u", "session": "s", "from_logits": from_logits}
    result = evaluate(table, tasks, names, by=["g", "h"], **kw)
    undefined: dict[tuple[str, str, str], list[str]] = {}  # (metrics, task, reason) -> segments, from each alone
    for records in zip(result.records[2::2], result.records[3::2]):
        g, h, segment = records[0]["g"], records[0]["h"], records[0]["segment"]
        rows = np.flatnonzero((table.column("g").to_numpy() == g) & (table.column("h").to_numpy(False) == h))
        alone = evaluate(table.take(rows), tasks, names, **kw)
        for record, expected in zip(records, alone.records):
            assert record["rows"] == expected["rows"] == len(rows)
            for name in names:
                assert record[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15, nan_ok=True), (segment, name)
        for line in alone.warnings:
            what, named, reason = re.fullmatch(r"(.+) undefined for tasks? (.+) over all rows: (.+)", line).groups()
            for task in re.findall(r"'([^']*)'", named):
                undefined.setdefault((what, task, reason), []).append(segment)
    # one line per metric, task and reason: how many segments, the first three ("; " between segments of two columns)
    total = len(result.records) // 2 - 1
    expected = {
        f"{what} undefined for task {task!r} in {len(segments)} of {total} segments "
        f"({'; '.join(segments[:3])}{'; ...' if len(segments) > 3 else ''}): {reason}"
        for (what, task, reason), segments in undefined.items()
    }
    assert set(result.warnings) == expected and len(result.warnings) == len(expected)
    assert sum(len(segments) for segments in undefined.values()) > 10


def pair_refs(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(XAUC, regression AUC) from every pair i < j, weighted w_i w_j; nan where undefined."""
    i, j = np.triu_indices(len(p), 1)
    pair, dp, dy = w[i] * w[j], np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
    xauc = np.sum(pair * (dp == dy)) / np.sum(pair) if np.sum(pair) > 0 else np.nan
    different = pair * (dy != 0)
    won = (dp * dy > 0) + 0.5 * (dp == 0)
    rauc = np.sum(different * won) / np.sum(different) if np.sum(different) > 0 else np.nan
    return float(xauc), float(rauc)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("weighted", [False, True])
def test_pairwise_metrics_of_many_segments_equal_every_pair_counted(weighted):
    """xauc and regression_auc of real-valued labels per segment (195 segments of 1 to 1770 rows,
    padded together by size), against every pair counted in numpy; zero weights are absent rows."""
    rng = np.random.default_rng(5)
    n = 4000
    segment = np.minimum(rng.zipf(1.6, n), 700)  # a few large segments, many of one or two rows
    table = pa.table(
        {
            "p": rng.normal(size=n).round(1),  # ties in predictions
            "y": rng.integers(0, 4, n).astype(np.float64),  # and in labels
            "w": rng.choice([0.0, 0.5, 1.0, 3.0], n),
            "g": segment,
        }
    )
    kw = {"weights": "w"} if weighted else {}
    result = evaluate(table, {"t": ("p", "y")}, ["xauc", "regression_auc"], by=["g"], **kw)
    p, y = table.column("p").to_numpy(), table.column("y").to_numpy()
    w = table.column("w").to_numpy() if weighted else np.ones(n)
    assert len(result.records) - 1 == len(np.unique(segment)) > 100
    for record in result.records[1:]:
        rows = segment == record["g"]
        xauc, rauc = pair_refs(p[rows], y[rows], w[rows])
        assert record["xauc"] == pytest.approx(xauc, rel=1e-12, abs=1e-15, nan_ok=True), record["g"]
        assert record["regression_auc"] == pytest.approx(rauc, rel=1e-12, abs=1e-15, nan_ok=True), record["g"]
    assert any(np.isnan(r["xauc"]) for r in result.records) and any(
        np.isnan(r["regression_auc"]) for r in result.records
    )


def _counting_modules(monkeypatch) -> list[int]:
    """Count the modules ``evaluate`` builds (one per call: one entry each)."""
    from torchmetrics_ext.evaluate import runner

    built: list[int] = []

    class Counted(runner.RecMetricModule):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner, "RecMetricModule", Counted)
    return built


def _segment_table(n: int = 3000, num_segments: int = 400) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "p": rng.uniform(size=n),
            "y": (rng.uniform(size=n) < 0.3).astype(np.int64),
            "u": rng.integers(0, 50, n),
            "s": np.repeat(np.arange(n // 5), 5),
            "g": rng.integers(0, num_segments, n),
        }
    )


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_segments_are_computed_without_a_module_per_segment(monkeypatch):
    """Every registry family has a segment kernel: all segments are computed at once, and the one
    module built is the overall one (before: one more per segment)."""
    built = _counting_modules(monkeypatch)
    metrics = ["ne", "ctr", "mse", "auc", "auprc", "gauc", "ndcg@10", "recall@5", "xauc", "regression_auc"]
    result = evaluate(_segment_table(), {"t": ("p", "y")}, metrics, user="u", session="s", by=["g"])
    assert len(result.records) == 1 + 400 and len(built) == 1


def _without_kernel(*names: str):
    """``by_segment._family`` that leaves the metrics of these classes to the per-segment path."""
    from torchmetrics_ext.evaluate import by_segment

    family = by_segment._family
    return lambda metric: None if type(metric).__name__ in names else family(metric)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_a_metric_without_a_segment_kernel_is_computed_segment_by_segment(monkeypatch):
    """A metric no family computes at once (none of the registry's today) gets a module per
    segment, with the values and warning lines (in the same order) of the kernels."""
    from torchmetrics_ext.evaluate import by_segment

    table = _segment_table(600, 150)
    metrics = ["ne", "xauc", "auc", "ctr", "mrr@5"]
    kernels = evaluate(table, {"t": ("p", "y")}, metrics, session="s", by=["g"])
    built = _counting_modules(monkeypatch)
    monkeypatch.setattr(by_segment, "_family", _without_kernel("XAUC", "NormalizedEntropy"))
    modules = evaluate(table, {"t": ("p", "y")}, metrics, session="s", by=["g"])
    assert len(built) == 1 + 2 * (len(kernels.records) - 1)  # the overall module, one per segment for each of two
    assert modules.warnings == kernels.warnings and len(kernels.warnings) == 4  # ne, xauc, auc, mrr@5
    for got, expected in zip(modules.records, kernels.records, strict=True):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-12, nan_ok=True) if isinstance(value, float) else value)


def test_undefined_segment_values_are_nan_and_reported():
    table = pa.table({"p": [0.2, 0.8, 0.4], "y": [0, 1, 1], "g": ["x", "x", "y"]})
    line = (
        "auc is undefined for task 't' in 1 of 2 segments (g=y): the labels seen hold a single class (or no "
        "weight); returning nan."
    )
    with pytest.warns(UndefinedMetricWarning) as caught:  # raised once, as the line
        result = evaluate(table, {"t": ("p", "y")}, ["auc"], by=["g"])
    assert [str(w.message) for w in caught if w.category is UndefinedMetricWarning] == [line]
    assert result.values["auc/t/g=x"] == 1.0 and np.isnan(result.values["auc/t/g=y"])
    assert result.warnings == [line]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_undefined_segments_are_counted_in_one_line_per_metric_and_task(tmp_path, capsys):
    """Thousands of single-class segments give one warning line per metric and task (counting them and
    naming the first three), in the result and on the command line's stderr, not one per segment;
    the records keep every segment's nan."""
    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, n),
            "y": (rng.uniform(size=n) < 0.3).astype(np.int64),
            "c": rng.integers(0, 3000, n),
        }
    )
    single = frame.groupby("c").y.nunique() < 2  # the reference: segments of one class (AUC and NE undefined)
    names = [f"c={c}" for c in single.index[single]]
    assert len(names) > 1000
    reason = "the labels seen hold a single class (or no weight); returning nan."
    where = f"in {len(names):,} of {len(single):,} segments ({', '.join(names[:3])}, ...)"
    expected = [
        f"auc is undefined for task 't' {where}: {reason}",
        f"ne is undefined for task 't' {where}: {reason}",
    ]
    result = evaluate(frame, {"t": ("p", "y")}, ["ctr", "auc", "ne"], by="c")
    assert result.warnings == expected
    undefined = {r["c"] for r in result.records[1:] if np.isnan(r["auc"]) and np.isnan(r["ne"])}
    assert undefined == set(single.index[single])  # every undefined segment's values are still nan
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--task", "t=p:y", "--metrics", "ctr,auc,ne", "--by", "c"]
    assert cli.main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {line}" for line in expected]


def test_no_python_warning_for_the_weight_key_evaluate_uses_internally(monkeypatch):
    """Every run without `weights` warned "Task 't': `model_out` has no weight column '<no weights>'" (the
    module's first-step check of a misspelt weight_name, for a key evaluate passes on purpose), printed
    by the command line too; the per-segment modules too."""
    from torchmetrics_ext.evaluate import by_segment

    table = pa.table({"p": [0.2, 0.8, 0.4, 0.6], "y": [0, 1, 1, 0], "g": ["x", "x", "y", "y"]})
    monkeypatch.setattr(by_segment, "_family", _without_kernel("XAUC"))  # a module per segment too
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = evaluate(table, {"t": ("p", "y")}, ["ctr", "auc", "xauc"], by="g")
        weighted = evaluate(table.append_column("w", pa.array([1.0, 2.0, 1.0, 1.0])), "t=p:y", ["ctr"], weights="w")
    assert result.values["ctr/t"] == 0.5 and result.values["ctr/t/g=x"] == 0.5
    assert weighted.values["ctr/t"] == pytest.approx(np.average([0, 1, 1, 0], weights=[1, 2, 1, 1]), rel=1e-12)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_json_output_is_strict_json_with_null_for_undefined_values(tmp_path):
    table = pa.table({"p": [0.2, 0.8, 0.4], "y": [0, 1, 1], "g": ["x", "x", "y"]})
    evaluate(table, {"t": ("p", "y")}, ["auc"], by=["g"]).write(str(tmp_path / "out.json"))

    def no_constants(name: str) -> None:  # what a strict parser (JavaScript's JSON.parse, jq, Go) does
        raise ValueError(f"not JSON: {name}")

    payload = json.loads((tmp_path / "out.json").read_text(), parse_constant=no_constants)
    by_segment = {r["segment"]: r["auc"] for r in payload["records"]}
    assert by_segment == {"all": 1.0, "g=x": 1.0, "g=y": None}


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_undefined_value_warnings_name_the_task_and_segment():
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 1], "q": [0.3, 0.6, 0.1, 0.8], "z": [1, 1, 0, 1]})
    table = table.append_column("g", pa.array(["a", "a", "b", "b"]))
    result = evaluate(table, ["click=p:y", "like=q:z"], ["auc"], by=["g"])
    assert result.warnings == [
        "auc is undefined for task 'click' in 1 of 2 segments (g=b): the labels seen hold a single class (or no "
        "weight); returning nan.",
        "auc is undefined for task 'like' in 1 of 2 segments (g=a): the labels seen hold a single class (or no "
        "weight); returning nan.",
    ]
    alone = evaluate(table.slice(2), ["click=p:y", "like=q:z"], ["auc"])
    assert alone.warnings == [
        "auc is undefined for task 'click' over all rows: the labels seen hold a single class (or no weight); "
        "returning nan."
    ]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_undefined_value_warnings_name_the_metric_as_requested(tmp_path, capsys):
    """A line named the metric's class ("NormalizedEntropy is undefined ..."), not the name asked for
    (``--metrics ne``), and two names of one class (an exact and a binned AUC) could not be told apart:
    each line names the name given, over all rows and per segment (kernel or module per segment)."""
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 1], "g": ["a", "a", "b", "b"]})
    single_class = "the labels seen hold a single class (or no weight); returning nan."
    pq.write_table(table.slice(2), tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--predictions", "p", "--labels", "y", "--metrics", "ne"]
    assert cli.main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (  # --labels names the task
        f"warning: ne is undefined for task 'y' over all rows: {single_class}"
    )
    metrics = {"auc_exact": {"metric": "auc"}, "auc_binned": {"metric": "auc", "num_bins": 64}}
    result = evaluate(table, {"t": ("p", "y")}, metrics, by=["g"])
    assert result.warnings == [
        f"{key} is undefined for task 't' in 1 of 2 segments (g=b): {single_class}" for key in metrics
    ]
    alone = evaluate(table.slice(2), {"t": ("p", "y")}, metrics)
    assert alone.warnings == [f"{key} is undefined for task 't' over all rows: {single_class}" for key in metrics]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_undefined_value_warnings_name_every_task_past_ten():
    """Past ten tasks the module's warning lists ten and the count: the line names every undefined task."""
    columns = {**{f"p{i}": [0.2, 0.7, 0.05 * i] for i in range(12)}, "y": [1, 1, 1]}
    tasks = [f"t{i}=p{i}:y" for i in range(12)]
    result = evaluate(pa.table(columns), tasks, ["auc"])
    names = ", ".join(f"'t{i}'" for i in range(12))
    assert result.warnings == [
        f"auc is undefined for tasks {names} over all rows: the labels seen hold a single class (or no weight); "
        "returning nan."
    ]


def test_paths_table_and_frames_agree(dataset, frame, tmp_path):
    csv = tmp_path / "data.csv"
    # float64 text of the float32 scores parses back to the very same numbers
    as_text = frame.astype({"p_click": np.float64, "p_like": np.float64})
    pa_csv.write_csv(pa.Table.from_pandas(as_text, preserve_index=False), csv)
    polars = pytest.importorskip("polars")
    inputs = {
        "directory": dataset,
        "glob": str(dataset / "part-*.parquet"),
        "files": sorted(str(p) for p in dataset.glob("*.parquet")),
        "csv": csv,
        "table": pa.Table.from_pandas(frame, preserve_index=False),
        "pandas": frame,
        "polars": polars.from_pandas(frame),
    }
    results = {name: evaluate(data, TASKS, METRICS, batch_size=700, **KW) for name, data in inputs.items()}
    base = results.pop("directory").values
    for name, result in results.items():
        assert result.values.keys() == base.keys(), name
        for key in base:
            assert result.values[key] == pytest.approx(base[key], rel=1e-12), (name, key)


def test_result_as_dict_and_dataframe(dataset):
    result = evaluate(dataset, {"click": ("p_click", "y_click")}, ["ctr", "auc"], by=["dataset"])
    df = result.to_pandas()
    assert list(df.columns) == ["segment", "dataset", "task", "rows", "ctr", "auc"]
    assert list(df.segment) == ["all", "dataset=a", "dataset=b"]
    assert df.auc.tolist() == [result.values["auc/click"], *(result.values[f"auc/click/dataset={d}"] for d in "ab")]


def test_values_are_built_once_and_follow_changes_to_the_records(monkeypatch):
    """`result.values[key]` in a loop over the keys labels each record once, not once per lookup."""
    from torchmetrics_ext.evaluate import report

    rng = np.random.default_rng(0)
    n, groups = 2_000, 200
    p, y, g = rng.uniform(size=n), rng.integers(0, 2, n), np.arange(n) % groups
    result = evaluate(pa.table({"p": p, "y": y, "g": g}), {"t": ("p", "y")}, ["ctr", "mse"], by=["g"])
    expected = {"ctr/t": y.mean(), "mse/t": np.mean((p - y) ** 2)}  # numpy references, keys written here
    for k in range(groups):
        expected[f"ctr/t/g={k}"] = y[g == k].mean()
        expected[f"mse/t/g={k}"] = np.mean((p[g == k] - y[g == k]) ** 2)
    calls = []
    labels = report.segment_text
    monkeypatch.setattr(report, "segment_text", lambda *a, **k: calls.append(1) or labels(*a, **k))
    got = {key: result.values[key] for key in expected}  # 402 lookups
    assert_close(got, expected)
    assert len(calls) == groups  # one label per segment record, however many lookups
    # reassigning or resizing the records (or the metrics) is seen
    result.records = result.records[:1] + result.records[-1:]
    assert result.values.keys() == {"ctr/t", "mse/t", f"ctr/t/g={groups - 1}", f"mse/t/g={groups - 1}"}
    result.records.pop()
    assert result.values.keys() == {"ctr/t", "mse/t"}
    result.metrics = ("ctr",)
    assert result.values == pytest.approx({"ctr/t": y.mean()}, rel=1e-12)


def test_values_follow_a_record_added_and_another_removed():
    """The cache was keyed on the list's length: one record in, one out, and the old dict came back."""
    p, y, g = np.array([0.1, 0.8, 0.4, 0.7]), np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "c"])
    result = evaluate(pa.table({"p": p, "y": y, "g": g}), {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert result.values.keys() == {"ctr/t", "ctr/t/g=a", "ctr/t/g=b", "ctr/t/g=c"}
    extra = {**result.records[-1], "g": "d", "segment": "g=d", "ctr": 0.25}
    result.records.append(extra)
    del result.records[1]  # g=a
    assert_close(result.values, {"ctr/t": y.mean(), "ctr/t/g=b": 0.0, "ctr/t/g=c": 1.0, "ctr/t/g=d": 0.25})
    result.records[-1] = {**extra, "ctr": 0.5}  # replaced in place: same length, same position
    assert result.values["ctr/t/g=d"] == 0.5


def test_values_costs_no_pass_over_the_records_per_access():
    """Each ``values`` access built a tuple of every record and compared it with the cached one: O(records) per
    lookup, so ``result.values[key]`` over every key was quadratic again. The records (whatever list type the
    field holds, here with its iteration counted) are walked once per change of the list, never per access;
    changes are still seen. Reference: the records' own values, read here."""
    p, y, g = np.array([0.1, 0.8, 0.4, 0.7]), np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "c"])
    result = evaluate(pa.table({"p": p, "y": y, "g": g}), {"t": ("p", "y")}, ["ctr"], by=["g"])
    walks = []

    class Counted(type(result.records)):  # the field's own list type, its iteration counted
        def __iter__(self):
            walks.append(1)
            return super().__iter__()

    result.records = Counted(result.records)
    for _ in range(50):
        assert result.values["ctr/t/g=b"] == 0.0
    assert len(walks) <= 1  # built once: 50 before
    result.records.append({**result.records[-1], "g": "d", "segment": "g=d", "ctr": 0.25})
    for _ in range(50):
        assert result.values["ctr/t/g=d"] == 0.25
    assert len(walks) <= 2
    del result.records[1]  # g=a
    assert set(result.values) == {"ctr/t", "ctr/t/g=b", "ctr/t/g=c", "ctr/t/g=d"}
    # a plain list assigned is the records (equal, and its later changes through the field are seen)
    result.records = [r for r in result.records if r["segment"] != "g=c"]
    assert [r["segment"] for r in result.records] == ["all", "g=b", "g=d"]
    result.records.insert(1, {**result.records[1], "g": "e", "segment": "g=e", "ctr": 1.0})
    assert result.values == {"ctr/t": y.mean(), "ctr/t/g=e": 1.0, "ctr/t/g=b": 0.0, "ctr/t/g=d": 0.25}


def test_ranking_names_share_one_sort_but_equal_their_own_classes(dataset, frame):
    """ndcg@10, recall@5 and mrr (whole list) come from one RankingMetrics; each equals its registry class."""
    import torch

    from torchmetrics_ext.registry import build_metric

    result = evaluate(dataset, {"click": ("p_click", "y_click")}, ["ndcg@10", "recall@5", "mrr"], session="session")
    for name in ("ndcg@10", "recall@5", "mrr"):
        metric = build_metric(name)
        metric.update(
            torch.tensor(frame.p_click.to_numpy(np.float64)),
            torch.tensor(frame.y_click.to_numpy()),
            indexes=torch.tensor(frame.session.to_numpy()),
        )
        assert result.values[f"{name}/click"] == pytest.approx(metric.compute().item(), rel=1e-12)


def ndcg_ref(p, y, sessions, k):
    """Mean NDCG@k (linear gain) over sessions with a relevant row, ties broken as listed (none here)."""
    values = []
    for s in np.unique(sessions):
        m = sessions == s
        ranked = y[m][np.argsort(-p[m], kind="stable")][:k]
        ideal = np.sort(y[m])[::-1][:k]
        discount = 1 / np.log2(np.arange(2, len(ranked) + 2))
        if ideal.sum() > 0:
            values.append(np.sum(ranked * discount) / np.sum(ideal * discount))
    return float(np.mean(values))


def test_two_spellings_of_one_cutoff_each_get_the_value(dataset, frame, capsys):
    """ndcg@10 and ndcg@010 (recall@5, recall@05) are one metric: computed once, each name reports it."""
    p, y, sessions = (frame[c].to_numpy(np.float64) for c in ("p_click", "y_click", "session"))
    names = ["ndcg@10", "ndcg@010", "recall@05", "recall@5"]  # a name given twice as written is refused
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = evaluate(table, {"click": ("p_click", "y_click")}, names, session="session", by=["dataset"])
    assert result.metrics == ("ndcg@10", "ndcg@010", "recall@05", "recall@5")
    ones = np.ones(len(p))
    for record in result.records:
        m = np.ones(len(p), bool) if record["segment"] == "all" else (frame.dataset == record["dataset"]).to_numpy()
        ndcg = ndcg_ref(p[m], y[m], sessions[m], 10)
        recall = query_ref(p[m], y[m], sessions[m], ones[m], 5, "recall")
        assert record["ndcg@10"] == record["ndcg@010"] == pytest.approx(ndcg, rel=1e-12)
        assert record["recall@5"] == record["recall@05"] == pytest.approx(recall, rel=1e-12)
    args = ["evaluate", str(dataset), "--predictions", "p_click", "--labels", "y_click", "--session", "session"]
    assert cli.main([*args, "--metrics", "ndcg@10,ndcg@010", "--no-progress"]) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert header[-2:] == ["ndcg@10", "ndcg@010"]


NO_QUERY = "no query counted (no query with a relevant candidate, or all query weights are zero); returning nan."


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_ranking_names_without_a_counted_query_are_nan_and_name_their_task(tmp_path, capsys):
    """Several ranking names share one RankingMetrics per task, whose warning names its keys, not its
    task: the line names the ranking names and the one task that has no counted query."""
    p = np.array([0.2, 0.1, 0.5, 0.4, 0.3, 0.9, 0.6, 0.7])
    click = np.array([1, 0, 0, 1, 1, 0, 0, 0])
    like = np.zeros(8, dtype=np.int64)
    sessions = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    groups = ["a", "a", "a", "a", "b", "b", "c", "c"]
    table = pa.table({"s": p, "click": click, "like": like, "sess": sessions, "g": groups})
    tasks = {"click": ("s", "click"), "like": ("s", "like")}
    result = evaluate(table, tasks, ["ndcg@10", "mrr@10", "auc"], session="sess", by=["g"])
    ones = np.ones(8)
    for key, rows in [("click", slice(None)), ("click/g=a", slice(0, 4)), ("click/g=b", slice(4, 6))]:
        args = (p[rows], click[rows], sessions[rows])
        assert result.values[f"ndcg@10/{key}"] == pytest.approx(ndcg_ref(*args, 10), rel=1e-12)
        assert result.values[f"mrr@10/{key}"] == pytest.approx(query_ref(*args, ones[rows], 10, "mrr"), rel=1e-12)
    assert all(np.isnan(v) for k, v in result.values.items() if "/like" in k or "g=c" in k)
    single_class = "the labels seen hold a single class (or no weight); returning nan."
    assert result.warnings == [
        f"auc is undefined for task 'like' over all rows: {single_class}",
        f"ndcg@10 and mrr@10 are undefined for task 'like' over all rows: {NO_QUERY}",
        f"auc is undefined for task 'click' in 1 of 3 segments (g=c): {single_class}",
        f"auc is undefined for task 'like' in 3 of 3 segments (g=a, g=b, g=c): {single_class}",
        f"ndcg@10 and mrr@10 are undefined for task 'click' in 1 of 3 segments (g=c): {NO_QUERY}",
        f"ndcg@10 and mrr@10 are undefined for task 'like' in 3 of 3 segments (g=a, g=b, g=c): {NO_QUERY}",
    ]
    # one task: no query counted anywhere (the command line exits 0 with nan and one warning line)
    pq.write_table(table.select(["s", "like", "sess"]), tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--predictions", "s", "--labels", "like", "--session", "sess"]
    assert cli.main([*args, "--metrics", "ndcg@10,mrr@10,recall@5", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == f"warning: ndcg@10, mrr@10 and recall@5 are undefined for task 'like' over all rows: {NO_QUERY}\n"
    assert out.splitlines()[-1].split() == ["all", "like", "8", "nan", "nan", "nan"]


# ----------------------------------------------------------------------------- bad input


def write_bad(tmp_path: Path, frame: pd.DataFrame, change) -> Path:
    good = frame.iloc[:400].reset_index(drop=True)
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False), tmp_path / "a.parquet")
    bad = frame.iloc[400:800].reset_index(drop=True).copy()
    bad = change(bad)
    table = pa.Table.from_pandas(bad, preserve_index=False)
    for i, name in enumerate(table.column_names):
        if bad[name].dtype == np.float64:  # keep NaN as NaN (from_pandas would make it null)
            table = table.set_column(i, name, pa.array(bad[name].to_numpy()))
    path = tmp_path / "b.parquet"
    pq.write_table(table, path, row_group_size=100)
    return path


def _nan(rows, column="p_click", value=np.nan):
    def change(df):
        df[column] = df[column].astype(np.float64)
        df.loc[rows, column] = value
        return df

    return change


BAD = {
    "missing column": (
        lambda df: df.drop(columns="y_like"),
        r"b\.parquet: column 'y_like' \(labels of task 'like'\) is missing; found columns \[",
    ),
    "string predictions": (
        lambda df: df.assign(p_click=df.p_click.astype(str)),
        r"b\.parquet: column 'p_click' \(predictions of task 'click'\) has type (large_)?string; expected numbers",
    ),
    "float user ids": (
        lambda df: df.assign(user=df.user * 1.5),
        r"b\.parquet: column 'user' \(user ids\) has type double; expected integer ids",
    ),
    "nan predictions": (
        _nan([7, 250, 399]),
        r"b\.parquet: column 'p_click' \(predictions of task 'click'\) has 3 rows that are NaN or infinite "
        r"\(first at 0-based data row 7\)$",
    ),
    "probabilities above one": (
        _nan([120], value=1.5),
        r"b\.parquet: column 'p_click' .* has 1 row outside \[0, 1\] \(probabilities expected\) \(first at 0-based data row 120\)",
    ),
    "labels not binary": (
        _nan([3, 4], "y_like", 2.0),
        r"column 'y_like' \(labels of task 'like'\) has 2 rows that are not 0 or 1 \(first at 0-based data row 3\)",
    ),
    "negative weights": (
        _nan([300], "w", -1.0),
        r"column 'w' \(weights\) has 1 row that is negative \(first at 0-based data row 300\)",
    ),
    "weights outside float32's range": (  # exact auc/gauc keep weights as float32
        lambda df: df.assign(w=df.w.mask(df.index == 40, 1e-40).mask(df.index == 70, 1e39)),
        r"column 'w' \(weights\) has 2 rows that are non-zero outside float32's range "
        r"\[1\.1754944e-38, 3\.4028235e\+38\] \(exact auc, auprc, gauc and gauprc keep weights as float32; "
        r"rescale the weights\) \(first at 0-based data row 40\)",
    ),
    "null labels": (
        lambda df: df.assign(y_click=df.y_click.astype("Int64").mask(df.index.isin([11, 12]))),
        r"column 'y_click' \(labels of task 'click'\) has 2 rows that are null \(first at 0-based data row 11\)",
    ),
    "null session ids": (
        lambda df: df.assign(session=df.session.astype("Int64").mask(df.index == 99)),
        r"column 'session' \(session ids\) has 1 row that is null \(first at 0-based data row 99\)",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_files_raise_one_clear_error(tmp_path, frame, case):
    change, message = BAD[case]
    write_bad(tmp_path, frame, change)
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, TASKS, METRICS, **KW)


def test_on_invalid_skip_drops_the_rows_and_reports_them(tmp_path, frame):
    write_bad(tmp_path, frame, _nan([7, 250, 399]))
    result = evaluate(tmp_path, TASKS, METRICS, on_invalid="skip", **KW)
    assert result.rows_read == 800 and result.rows_skipped == 3
    [problem] = result.problems
    assert (problem.column, problem.count, problem.first_row) == ("p_click", 3, 7)
    assert "3 invalid rows skipped" in result.summary()
    # the NaN predictions of task click drop their rows for click alone: like keeps every row
    kept = {"click": frame.iloc[:800].drop(index=[400 + 7, 400 + 250, 400 + 399]), "like": frame.iloc[:800]}
    expected = {f"{m}/{t}": v for t in ("click", "like") for m, v in references(kept[t], t).items()}
    assert_close({k: result.values[k] for k in expected}, expected)


def test_logits_without_from_logits_are_told_the_option(tmp_path, capsys):
    """Predictions outside [0, 1] named the column and rows but not --from-logits / from_logits=True."""
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=50), (rng.random(50) < 0.4).astype(np.int64)
    table = pa.table({"logit": z, "y": y})
    hint = r"\(first at 0-based data row \d+\); if the column holds logits, pass --from-logits \(from_logits=True in Python\)$"
    with pytest.raises(
        InvalidDataError, match=r"column 'logit' .* outside \[0, 1\] \(probabilities expected\) " + hint
    ):
        evaluate(table, {"click": ("logit", "y")}, ["auc", "ne"])
    pq.write_table(table, tmp_path / "logits.parquet")
    args = ["evaluate", str(tmp_path / "logits.parquet"), "--predictions", "logit", "--labels", "y", "--no-progress"]
    assert cli.main([*args, "--metrics", "auc"]) == 2
    assert "pass --from-logits" in capsys.readouterr().err
    values = evaluate(table, {"click": ("logit", "y")}, ["auc", "ne"], from_logits=True).values  # following it
    p = 1 / (1 + np.exp(-z))
    assert values["auc/click"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert values["ne/click"] == pytest.approx(log_loss(y, p) / log_loss(y, np.full_like(p, y.mean())), rel=1e-9)


def test_weights_outside_float32s_range_are_invalid_rows_for_exact_auc_only():
    """Exact AUC keeps weights as float32: such rows used to fail the module's update (no file, no skip)."""
    p = np.array([0.1, 0.8, 0.6, 0.3, 0.7, 0.2, 0.9, 0.4])
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    w = np.array([1.0, 1e-40, 1.0, 2.0, 1e39, 0.5, 3.0, 1.0])
    table = pa.table({"p": p, "y": y, "w": w})
    with pytest.raises(InvalidDataError, match=r"<pyarrow.Table>: column 'w' \(weights\) has 2 rows that are non-zero"):
        evaluate(table, {"t": ("p", "y")}, ["auc"], weights="w")
    result = evaluate(table, {"t": ("p", "y")}, ["auc", "ctr"], weights="w", on_invalid="skip")
    keep = (w == 0) | ((w >= np.finfo(np.float32).tiny) & (w <= np.finfo(np.float32).max))
    assert (result.rows_read, result.rows_skipped) == (8, 2)
    assert [(q.column, q.count, q.first_row) for q in result.problems] == [("w", 2, 1)]
    assert "2 invalid rows skipped" in result.summary()
    expected = {
        "auc/t": roc_auc_score(y[keep], p[keep], sample_weight=w[keep]),
        "ctr/t": np.average(y[keep], weights=w[keep]),
    }
    assert_close(result.values, expected)
    # metrics that keep float64 sums take them; zero weights are fine everywhere
    values = evaluate(table, {"t": ("p", "y")}, ["ctr"], weights="w").values
    assert_close(values, {"ctr/t": np.average(y, weights=w)})
    zero = pa.table({"p": p, "y": y, "w": np.where(keep, w, 0.0)})
    assert_close(evaluate(zero, {"t": ("p", "y")}, ["auc"], weights="w").values, {"auc/t": expected["auc/t"]})
    # one invalid row: "1 row that is ...", "1 invalid row skipped"
    one = pa.table({"p": p, "y": y, "w": np.where(w > 1e38, 1.0, w)})
    result = evaluate(one, {"t": ("p", "y")}, ["auc"], weights="w", on_invalid="skip")
    assert "has 1 row that is non-zero outside float32's range" in str(result.problems[0])
    assert result.summary().startswith("8 rows read, 1 invalid row skipped:")


def _unchecked(monkeypatch) -> None:
    """A row checker that knows no reason: what the module refuses reaches its update (a check it misses)."""
    from torchmetrics_ext.evaluate.checks import RowChecker

    monkeypatch.setattr(RowChecker, "_reasons", lambda self, kind, values: [])


def test_a_value_the_row_checks_miss_is_the_documented_error_naming_the_file(tmp_path, monkeypatch, capsys):
    """A ValueError of the module's update used to escape as is: no file, no rows, other ranks crashed."""
    _unchecked(monkeypatch)
    pq.write_table(pa.table({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 0]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.2, 0.4, 1.5, 0.3, 0.6], "y": [0, 1, 1, 0, 1]}), tmp_path / "b.parquet")
    for on_invalid in ("error", "skip"):  # rows a check does not know cannot be skipped: an error either way
        with pytest.raises(
            InvalidDataError, match=r"b\.parquet: 0-based data rows 2 to 3: .*probabilities in \[0, 1\]"
        ):
            evaluate(tmp_path, {"t": ("p", "y")}, ["auc"], batch_size=2, on_invalid=on_invalid)
    args = ["evaluate", str(tmp_path), "--task", "t=p:y", "--metrics", "auc", "--batch-size", "2", "--no-progress"]
    assert cli.main(args) == 2
    assert "error: " in capsys.readouterr().err


def test_a_column_in_two_roles_is_checked_in_each(tmp_path, capsys):
    """A column named twice kept its first role's checks only: float predictions as session ids
    reached the module (a bare TypeError: no file, no role; other ranks crashed in a gather)."""
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.6])
    y = np.array([0, 1, 1, 0, 1, 0])
    u = np.array([1, 1, 1, 2, 2, 2])
    table = pa.table({"p": p, "y": y, "u": u, "q": np.array([0.5, 1.0, 0.25, 0.0, 1.0, 0.5])})
    # ids are integers, predictions/labels/weights numbers: one column cannot be both, refused before reading
    for kw, metric, roles in (
        ({"session": "p"}, "ndcg@3", "session ids and predictions of task 't'"),
        ({"user": "y"}, "gauc", "user ids and labels of task 't'"),
        ({"user": "u", "weights": "u"}, "gauc", "user ids and weights"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"Column {next(iter(kw.values()))!r} cannot be both {roles}")):
            evaluate(tmp_path / "not-read-*.parquet", {"t": ("p", "y")}, [metric], **kw)
    pq.write_table(table, tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--task", "t=p:y", "--metrics", "ndcg@3", "--session", "p"]
    assert cli.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: Column 'p' cannot be both session ids and predictions of task 't'" in err and "Traceback" not in err
    # labels of one task that are the predictions of another get the label checks too, with their role
    message = r"<pyarrow.Table>: column 'q' \(labels of task 's'\) has 3 rows that are not 0 or 1 \(first at 0-based data row 0\)"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(table, {"t": ("q", "y"), "s": ("p", "q")}, ["auc"])
    # weights that are labels: a bool column is no weight; numbers are both, each role checked
    flags = table.set_column(1, "y", pa.array(y.astype(bool)))
    with pytest.raises(InvalidDataError, match=r"column 'y' \(weights\) has type bool; expected numbers"):
        evaluate(flags, {"t": ("p", "y")}, ["ctr"], weights="y")
    values = evaluate(table, {"t": ("p", "q")}, ["ctr", "mse"], weights="q").values
    assert_close(
        values,
        {
            "ctr/t": np.sum(table["q"].to_numpy() ** 2) / np.sum(table["q"].to_numpy()),
            "mse/t": np.average((p - table["q"].to_numpy()) ** 2, weights=table["q"].to_numpy()),
        },
    )
    # a reason two roles share (NaN) counts each row once
    nan = table.set_column(0, "p", pa.array(np.where(np.arange(6) == 4, np.nan, p)))
    with pytest.raises(InvalidDataError, match=r"column 'p' \(predictions of task 't'\) has 1 row that is NaN"):
        evaluate(nan, {"t": ("p", "y")}, ["ctr"], weights="p")
    # one id column as user and session ids: both metrics as with two columns
    values = evaluate(table, {"t": ("p", "y")}, ["gauc", "recall@2"], user="u", session="u").values
    w = np.ones(6)
    assert_close(values, {"gauc/t": gauc_ref(p, y, u, w), "recall@2/t": query_ref(p, y, u, w, 2, "recall")})


def test_a_type_error_of_the_module_is_the_documented_error_naming_the_file(monkeypatch):
    """Only the module's ValueError went through the documented path: its TypeError escaped as is."""
    import torchmetrics_ext.evaluate.runner as runner

    monkeypatch.setattr(runner, "check_schema", lambda *args, **kwargs: None)  # a type the checks miss
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9], "y": [0, 1, 1, 0], "u": [1.0, 1.0, 2.0, 2.0]})
    message = (
        r"<pyarrow.Table>: 0-based data rows 0 to 1: .*model_out\['u'\]`: expected integer ids, got dtype torch.float64"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(table, {"t": ("p", "y")}, ["gauc"], user="u", batch_size=2)


def test_uint64_labels_and_weights_are_read_as_their_values():
    """uint64 columns were viewed as int64 (right for ids): 2**63 and above became negative labels and weights."""
    p = np.array([0.1, 0.8, 0.6, 0.3])
    w = np.array([1, 2**63 + 2**11, 3, 1], dtype=np.uint64)
    y = np.array([0, 1, 2**64 - 2**11, 0], dtype=np.uint64)
    table = pa.table({"p": p, "y": pa.array([0, 1, 1, 0], pa.uint64()), "w": pa.array(w)})
    values = evaluate(table, {"t": ("p", "y")}, ["ctr"], weights="w").values  # weight 2**63: not "negative"
    assert_close(values, {"ctr/t": np.average([0.0, 1, 1, 0], weights=w.astype(np.float64))})
    table = pa.table({"p": p, "y": pa.array(y)})
    values = evaluate(table, {"t": ("p", "y")}, ["mse"]).values  # the label 2**64 - 2**11, not -2**11
    assert_close(values, {"mse/t": np.mean((p - y.astype(np.float64)) ** 2)})


def _recall_at_2_and_gauc_by_key(ids: list[int], p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """recall@2 (numpy: hits in the top 2 over the positives, mean over sessions with a positive) and gauc
    (sklearn, unweighted mean over users with both labels), the rows keyed by the Python ints ``ids``."""
    recalls, aucs = [], []
    for key in dict.fromkeys(ids):
        rows = np.array([i for i, k in enumerate(ids) if k == key])
        ps, ys = p[rows], y[rows]
        if ys.sum() > 0:
            top = np.argsort(-ps, kind="stable")[:2]
            recalls.append(ys[top].sum() / ys.sum())
        if 0 < ys.sum() < len(ys):
            aucs.append(roc_auc_score(ys, ps))
    return {"recall@2/t": float(np.mean(recalls)), "gauc/t": float(np.mean(aucs))}


def _write(table: pa.Table, path: Path, file_format: str) -> None:
    if file_format == "parquet":
        pq.write_table(table, path.with_suffix(".parquet"))
    else:
        pa_csv.write_csv(table, path.with_suffix(".csv"))  # a uint64 column as its decimal text


@pytest.mark.parametrize("unsigned_format", ["parquet", "csv"])
@pytest.mark.parametrize("signed_format", ["parquet", "csv"])
def test_uint64_and_int64_ids_of_one_bit_pattern_are_one_session_and_user(tmp_path, signed_format, unsigned_format):
    """Ids are keys compared by 64-bit pattern (documented): a uint64 file's 2**64 - 1 and 2**63 are the
    sessions (and users) -1 and -2**63 of an int64 file, whether each file is Parquet or CSV (a CSV file's
    uint64 text was refused, so the same data had no report from CSV). --by, whose values are reported,
    compares by value: two typed files are refused, CSV-only text beyond both types stays as written."""
    unsigned = [2**64 - 1, 2**64 - 1, 2**63, 2**63, 7, 7]
    signed = [-1, -1, -(2**63), -(2**63), 7, 5]
    p_a, y_a = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.array([0, 1, 1, 0, 1, 0])
    p_b, y_b = np.array([0.95, 0.85, 0.3, 0.2, 0.65, 0.1]), np.array([1, 0, 1, 0, 0, 1])
    _write(pa.table({"p": p_a, "y": y_a, "s": pa.array(unsigned, pa.uint64())}), tmp_path / "a", unsigned_format)
    _write(pa.table({"p": p_b, "y": y_b, "s": pa.array(signed, pa.int64())}), tmp_path / "b", signed_format)
    p, y = np.concatenate([p_a, p_b]), np.concatenate([y_a, y_b])
    by_pattern = _recall_at_2_and_gauc_by_key([v % 2**64 for v in unsigned + signed], p, y)  # two's complement
    by_value = _recall_at_2_and_gauc_by_key(unsigned + signed, p, y)
    assert by_pattern["recall@2/t"] != pytest.approx(by_value["recall@2/t"])  # the data tells the rules apart
    assert by_pattern["gauc/t"] != pytest.approx(by_value["gauc/t"])
    values = evaluate(tmp_path, {"t": ("p", "y")}, ["recall@2", "gauc"], user="s", session="s").values
    assert_close(values, by_pattern)
    if "parquet" in (signed_format, unsigned_format):  # a typed file: uint64 and int64 values, one type holds neither
        with pytest.raises(InvalidDataError, match=r"column 's' \(--by segment\) has type .*which cannot hold every"):
            evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="s")
    else:  # CSV only: no number type holds every text, so the texts as written are the segments
        result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="s")
        assert {r["s"]: r["rows"] for r in result.records[1:]} == dict(
            pd.Series(map(str, unsigned + signed)).value_counts()
        )


def test_csv_ids_read_as_parquet_reads_them_wherever_and_however_written(tmp_path):
    """One data set's ids, each spelt at random as its uint64 or int64 text (spaces, null texts, batches
    split anywhere), give the report of the Parquet file of its uint64 column, which equals the reference
    grouping rows by the ids' 64-bit patterns (pandas groupby of numpy's two's complement)."""
    rng = np.random.default_rng(3)
    pool = np.array([2**64 - 1, 2**64 - 2, 2**63, 2**63 + 9, 0, 5, 2**63 - 1, 12], dtype=np.uint64)
    n = 400
    ids = rng.choice(pool, n)
    p, y = rng.random(n).round(6), (rng.random(n) < 0.4).astype(np.int64)
    null = rng.random(n) < 0.05
    pq.write_table(pa.table({"p": p, "y": y, "s": pa.array(ids, mask=null)}), tmp_path / "u.parquet")
    signed = ids.view(np.int64)
    texts = np.where(rng.random(n) < 0.5, ids.astype(str), signed.astype(str)).astype(object)
    texts = np.where(rng.random(n) < 0.2, " " + texts + "\t", texts)
    texts[null] = rng.choice(["", "NA", "null"], int(null.sum()))
    lines = [f"{a!r},{b},{c}" for a, b, c in zip(p.tolist(), y.tolist(), texts)]
    (tmp_path / "u.csv").write_text("p,y,s\n" + "\n".join(lines) + "\n")
    # the reference: valid rows grouped by the 64-bit pattern (pandas), numpy recall@2 and sklearn auc per group
    frame = pd.DataFrame({"p": p, "y": y, "key": signed})[~null]
    recalls, aucs = [], []
    for _, part in frame.groupby("key"):
        if part.y.sum() > 0:
            recalls.append(part.y.to_numpy()[np.argsort(-part.p.to_numpy(), kind="stable")[:2]].sum() / part.y.sum())
        if 0 < part.y.sum() < len(part):
            aucs.append(roc_auc_score(part.y, part.p))
    want = {"recall@2/t": float(np.mean(recalls)), "gauc/t": float(np.mean(aucs))}
    for path in (tmp_path / "u.parquet", tmp_path / "u.csv"):
        for batch_size in (7, 1000):
            result = evaluate(
                path,
                {"t": ("p", "y")},
                ["recall@2", "gauc"],
                user="s",
                session="s",
                on_invalid="skip",
                batch_size=batch_size,
            )
            assert result.rows_skipped == int(null.sum())
            assert_close(result.values, want)


_ID_TEXTS = [
    *["5", "007", " 7", "7 ", "\t8", "-0", "0x10", "-9223372036854775808", "9223372036854775807"],
    *["9223372036854775808", "18446744073709551615", '" 9 "', '""', '"NA"', "NA", "null", "nan", "N/A", "#N/A"],
    *["+5", "+0", " NA", "-", "+", "- 5", "5 5", "1e3", "5.0", "-0x10", "18446744073709551616", "true", "u7"],
]


def _reader_id(text: str) -> int | str | None:
    """What the CSV reader makes of ``text`` in a column of ids: int64, else uint64 as its bit pattern, else refused."""
    for dtype in (pa.int64(), pa.uint64()):
        try:
            table = pa_csv.read_csv(
                io.BytesIO(f"id\n{text}\n".encode()), convert_options=pa_csv.ConvertOptions(column_types={"id": dtype})
            )
        except pa.ArrowInvalid:
            continue
        value = table.column(0)[0].as_py()
        if value is None:
            return None
        return value - 2**64 if value >= 2**63 else value  # the int64 of its bit pattern
    return "refused"


@pytest.mark.parametrize("with_", ["int64", "uint64", "negative"])
def test_csv_id_texts_read_as_the_reader_reads_them_without_writing_them_out(with_, monkeypatch):
    """Each id text next to plain ids of either kind (so every path of the conversion is taken) reads as the CSV
    reader itself reads that text as int64 (else uint64, as its bit pattern: the reference), or is refused as it
    refuses it. Only a refused text costs writing the batch's texts out and reading them back: a uint64 id or a
    null text used to cost it for every batch (about 25 ms per 65536 ids)."""
    from torchmetrics_ext.evaluate import checks

    other = {"int64": "12", "uint64": "18446744073709551614", "negative": "-12"}[with_]
    written = []
    read_text_as = checks.read_text_as
    monkeypatch.setattr(checks, "read_text_as", lambda *args: written.append(1) or read_text_as(*args))
    for text in _ID_TEXTS:
        column = pa_csv.read_csv(
            io.BytesIO(f"id\n{other}\n{text}\n{other}\n".encode()),
            convert_options=pa_csv.ConvertOptions(column_types={"id": pa.string()}),
        ).column(0)
        expected, bits = _reader_id(text), _reader_id(other)
        written.clear()
        if expected == "refused":
            with pytest.raises(InvalidDataError, match=f"invalid value {re.escape(repr(text))} at 0-based data row 1"):
                checks.to_numpy(column.combine_chunks(), "id")
            continue
        values, nulls = checks.to_numpy(column.combine_chunks(), "id")
        got = None if nulls is not None and nulls[1] else int(values[1])
        assert (got, int(values[0]), int(values[2])) == (expected, bits, bits), text
        assert not written, text


@pytest.mark.parametrize(
    ("text", "line"), [("18446744073709551616", 3), ("-9223372036854775809", 3), ("1.5", 3), ("-", 3), ("u7", 3)]
)
def test_a_csv_id_of_neither_type_names_the_value_and_its_line(tmp_path, text, line):
    """An id beyond both int64 and uint64 (or no integer) is refused naming the file, column, value and line."""
    (tmp_path / "c.csv").write_text(f"p,y,s\n0.5,1,18446744073709551615\n0.4,0,{text}\n0.3,1,-1\n")
    expected = (
        r"an integer id from -9223372036854775808 to 18446744073709551615 \(a uint64 id is read as its 64-bit "
        r"pattern\)\.$"
        if re.fullmatch(r"-?[0-9]+", text)
        else r"an integer id\. Write integer ids as integers \(5, not 5\.0\)"
        if text == "1.5"
        else r"an integer id\. Number text ids first"
    )
    message = (
        rf"c\.csv: column 's' \(session ids\): invalid value '{re.escape(text)}' at line {line}; expected {expected}"
    )
    for batch_size in (1, 10):
        with pytest.raises(InvalidDataError, match=message):
            evaluate(tmp_path / "c.csv", {"t": ("p", "y")}, ["recall@2"], session="s", batch_size=batch_size)


def test_an_infinite_value_is_one_invalid_reason():
    """An inf prediction was "NaN or infinite" and "outside [0, 1]" too, a -inf weight "negative" too:
    two report lines for one row."""
    p = np.array([0.2, np.inf, 0.6, 0.3, 0.7])
    w = np.array([1.0, 1.0, -np.inf, 2.0, 1.0])
    y = np.array([0, 1, 1, 0, 1])
    table = pa.table({"p": p, "y": y, "w": w})
    result = evaluate(table, {"t": ("p", "y")}, ["auc"], weights="w", on_invalid="skip")
    reasons = [(q.column, q.reason, q.count, q.first_row) for q in result.problems]
    assert reasons == [("p", "that are NaN or infinite", 1, 1), ("w", "that are NaN or infinite", 1, 2)]
    keep = np.isfinite(p) & np.isfinite(w)
    assert_close(result.values, {"auc/t": roc_auc_score(y[keep], p[keep], sample_weight=w[keep])})
    with pytest.raises(InvalidDataError) as err:
        evaluate(table, {"t": ("p", "y")}, ["auc"], weights="w")
    assert str(err.value).count("\n") == 1 and "outside" not in str(err.value) and "negative" not in str(err.value)


def test_a_nan_that_reads_as_null_is_named_as_written(tmp_path):
    """A CSV label written nan (the CSV reader's null text) was reported as "1 row that is null", which
    the file holds nowhere; a pandas NaN too. Each source names its nulls as they are written; an
    Arrow table keeps null and NaN apart, each its own reason."""
    (tmp_path / "n.csv").write_text("p,y\n0.1,nan\n0.2,1\n0.3,\n0.4,NA\n")
    message = (
        r"n\.csv: column 'y' \(labels of task 't'\) has 3 rows that are empty, NA, NaN or null \(first at line 2\); "
        r"if they mark rows without a label"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path / "n.csv", {"t": ("p", "y")}, ["ctr"])
    (tmp_path / "n.csv").write_text("p,y\n0.1,nan\n0.2,1\n")
    message = r"column 'y' \(labels of task 't'\) has 1 row that is empty, NA, NaN or null \(first at line 2\); if "
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path / "n.csv", {"t": ("p", "y")}, ["ctr"])
    frame = pd.DataFrame({"p": [0.1, 0.2], "y": [np.nan, 1.0]})
    message = r"<pandas\.DataFrame>: column 'y' .* has 1 row that is null or NaN \(first at 0-based data row 0\); if "
    with pytest.raises(InvalidDataError, match=message):
        evaluate(frame, {"t": ("p", "y")}, ["ctr"])
    table = pa.table({"p": [0.1, 0.2, 0.3], "y": [np.nan, None, 1.0]})
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], on_invalid="skip")
    assert [(q.reason, q.count, q.first_row) for q in result.problems] == [
        ("that are NaN or infinite", 1, 0),
        ("that are null", 1, 1),
    ]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_columns_without_a_value_are_null_rows_in_every_source(tmp_path):
    """A column of Arrow type null (an all-None pandas object slice, a Parquet column pandas wrote
    from all-None values) is all null rows, as an all-empty CSV column is: the pandas slice crashed
    in fill_null (ArrowInvalid, even with skip), the Parquet file was refused as "type null"."""
    p, y, w = np.array([0.2, 0.7, 0.4, 0.9]), np.array([1, 0, 1, 0]), np.array([1.0, 1.0, 3.0, 2.0])
    for column in ("y", "w", "u"):  # labels, weights, user ids: the first slice of two has no value
        data = {"p": p, "y": y.tolist(), "w": w.tolist(), "u": [1, 1, 2, 2]}
        data[column] = [None, None, *data[column][2:]]
        frame = pd.DataFrame({k: pd.Series(v, dtype=object) if k == column else v for k, v in data.items()})
        metrics = ["ctr", "gauc"]  # gauc reads the user ids (a run whose metrics do not leaves them unread)
        result = evaluate(frame, {"t": ("p", "y")}, metrics, weights="w", user="u", batch_size=2, on_invalid="skip")
        assert (result.rows_skipped, [q.column for q in result.problems]) == (2, [column])
        assert_close({"ctr/t": result.values["ctr/t"]}, {"ctr/t": np.average(y[2:], weights=w[2:])})
        with pytest.raises(
            InvalidDataError,
            match=rf"column '{column}' .* has 2 rows that are null or NaN \(first at 0-based data row 0\)",
        ):
            evaluate(frame, {"t": ("p", "y")}, metrics, weights="w", user="u", batch_size=2)
    frame = pd.DataFrame({"p": p, "y": y, "w": pd.Series([None] * 4, dtype=object)})
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    assert pq.read_schema(tmp_path / "a.parquet").field("w").type == pa.null()
    (tmp_path / "b.csv").write_text("p,y,w\n" + "".join(f"{a},{b},\n" for a, b in zip(p, y)))
    for path, null in (("a.parquet", "null"), ("b.csv", "empty, NA, NaN or null")):
        with pytest.raises(InvalidDataError, match=rf"{path}: column 'w' \(weights\) has 4 rows that are {null} \("):
            evaluate(tmp_path / path, {"t": ("p", "y")}, ["ctr"], weights="w")
        result = evaluate(tmp_path / path, {"t": ("p", "y")}, ["ctr"], weights="w", on_invalid="skip")
        assert (result.rows_read, result.rows_skipped) == (4, 4)


def test_decimal_columns_are_numbers(tmp_path):
    """Decimal predictions, labels and weights (SQL, Spark) were refused as "expected numbers"; the
    same text in a CSV file was read. They are read as their nearest float64."""
    from decimal import Decimal

    p = ["0.25", "0.75", "0.50", "0.10", "0.90"]
    y, w = ["0", "1", "1", "0", "0"], ["1.5", "2.0", "0.5", "1.0", "3.0"]
    table = pa.table(
        {
            "p": pa.array([Decimal(v) for v in p], pa.decimal128(4, 2)),
            "y": pa.array([Decimal(v) for v in y], pa.decimal128(1, 0)),
            "w": pa.array([Decimal(v) for v in w], pa.decimal256(20, 1)),
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("p,y,w\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(p, y, w)))
    pf, yf, wf = (np.array([float(v) for v in column]) for column in (p, y, w))
    expected = {"auc/t": roc_auc_score(yf, pf, sample_weight=wf), "ctr/t": np.average(yf, weights=wf)}
    expected["mse/t"] = np.average((pf - yf) ** 2, weights=wf)
    for data in (table, tmp_path / "a.parquet", tmp_path / "b.csv"):
        assert_close(evaluate(data, {"t": ("p", "y")}, ["auc", "ctr", "mse"], weights="w").values, expected)


def test_integer_predictions_are_scores_from_every_source(tmp_path):
    """Integer prediction columns (0/1 model outputs, counts) read as float64 from Parquet, Arrow, pandas
    and polars as from CSV; out-of-domain integers are invalid rows named with their file."""
    p = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=np.int64)
    y = np.array([0, 1, 0, 0, 1, 1, 0, 1], dtype=np.int64)
    expected = {"mse/t": np.mean((p - y) ** 2), "accuracy/t": np.mean(p == y), "auc/t": roc_auc_score(y, p)}
    frame = pd.DataFrame({"p": p, "y": y})
    frame.to_csv(tmp_path / "x.csv", index=False)
    pq.write_table(pa.table({"p": p, "y": y}), tmp_path / "x.parquet")
    pq.write_table(pa.table({"p": pa.array(p, pa.uint8()), "y": y}), tmp_path / "u8.parquet")
    inputs = [tmp_path / "x.csv", tmp_path / "x.parquet", tmp_path / "u8.parquet", pa.table({"p": p, "y": y}), frame]
    polars = pytest.importorskip("polars")
    inputs.append(polars.from_pandas(frame))
    for data in inputs:
        result = evaluate(data, {"t": ("p", "y")}, ["mse", "accuracy", "auc"], batch_size=3)
        assert_close(result.values, expected)
    counts = pa.table({"p": pa.array([0, 2, 1, 3], pa.int32()), "y": [0, 1, 1, 0]})
    assert evaluate(counts, {"t": ("p", "y")}, ["mse"]).values["mse/t"] == pytest.approx((0 + 1 + 0 + 9) / 4)
    pq.write_table(counts, tmp_path / "counts.parquet")
    message = r"counts\.parquet: column 'p' \(predictions of task 't'\) has 2 rows outside \[0, 1\]"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path / "counts.parquet", {"t": ("p", "y")}, ["mse", "ne"])


def test_pandas_object_columns_are_typed_from_their_values(frame):
    """Object-dtype columns (Python floats, bools, ints; None) are read as pyarrow converts them,
    not refused as "type null" (the type of an empty object column)."""
    part = frame.iloc[:600]
    p, y, w = part.p_click.to_numpy(np.float64), part.y_click.to_numpy(np.float64), part.w.to_numpy()
    objects = pd.DataFrame(
        {
            "p": pd.Series(p.tolist(), dtype=object),
            "y": pd.Series([bool(v) for v in y], dtype=object),
            "w": pd.Series(w.tolist(), dtype=object),
            "user": pd.Series(part.user.tolist(), dtype=object),
            "g": pd.Series([None] * 200 + (part.user.to_numpy()[200:] % 3).tolist(), dtype=object),
        }
    )
    assert all(dtype == np.dtype(object) for dtype in objects.dtypes)
    result = evaluate(
        objects, {"t": ("p", "y")}, ["ctr", "calibration", "gauc"], weights="w", user="user", by=["g"], batch_size=128
    )
    g = np.array([-1] * 200 + (part.user.to_numpy()[200:] % 3).tolist())
    for record in result.records:
        m = np.ones(len(p), bool) if record["segment"] == "all" else g == (-1 if record["g"] is None else record["g"])
        assert record["rows"] == m.sum()
        assert record["ctr"] == pytest.approx(np.sum(w[m] * y[m]) / np.sum(w[m]), rel=1e-12)
        assert record["calibration"] == pytest.approx(np.sum(w[m] * p[m]) / np.sum(w[m] * y[m]), rel=1e-12)
        assert record["gauc"] == pytest.approx(gauc_ref(p[m], y[m], part.user.to_numpy()[m], w[m]), rel=1e-9)
    assert [r["g"] for r in result.records[1:]] == [0, 1, 2, None]
    mixed = objects.assign(p=pd.Series([0.5, "0.5", *p[2:].tolist()], dtype=object))
    message = (
        r"<pandas.DataFrame>: column 'p' mixes value types in this one input, 0-based data rows 0 to 127 \(.*'0.5'"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(mixed, {"t": ("p", "y")}, ["ctr"], batch_size=128)


def test_a_pandas_segment_column_whose_slices_read_as_different_types_says_so():
    """Slices of an object column typed apart (ints, then text) were "types that differ between files",
    naming the one frame twice; a single slice gave pyarrow's bare message."""
    p, y = np.array([0.2, 0.7, 0.4, 0.9]), np.array([0, 1, 1, 0])
    df = pd.DataFrame({"p": p, "y": y, "c": np.array([1, 2, "a", "b"], dtype=object)})
    with pytest.raises(InvalidDataError) as err:
        evaluate(df, {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=2)
    message = str(err.value)
    assert message.startswith(
        "<pandas.DataFrame>: column 'c' (--by segment) mixes value types in this one input: 0-based data rows 2 to 3 read as "
        "string, 0-based data rows 0 to 1 as int64"
    )
    assert "df['c'] = df['c'].astype(\"string\")" in message
    assert message.count("<pandas.DataFrame>") == 1 and "file" not in message
    with pytest.raises(
        InvalidDataError, match=r"column 'c' mixes value types in this one input, 0-based data rows 0 to 3 \("
    ):
        evaluate(df, {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=4)
    # slices whose types unify (int64, double) but whose values do not fit (2**60 is no double)
    big = df.assign(c=np.array([2**60, 2**60 + 1, 0.5, 1.5], dtype=object))
    message = (
        r"column 'c' \(--by segment\) mixes value types in this one input: 0-based data rows 0 to 1 read as int64, "
        r"0-based data rows 2 to 3 as double .*; Arrow reads both as double, which cannot hold every value of "
        r"0-based data rows 0 to 1 \(.*astype"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(big, {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=2)
    # the conversion the message gives works, missing values staying the null segment
    df.loc[1, "c"] = None
    result = evaluate(df.assign(c=df.c.astype("string")), {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=2)
    expected = {"1": [0], "a": [2], "b": [3], None: [1]}
    assert {r["c"]: r["ctr"] for r in result.records[1:]} == {k: float(np.mean(y[v])) for k, v in expected.items()}


def test_a_frame_with_column_labels_that_are_not_strings_is_read_by_their_text():
    """A frame built from a numpy array (columns 0, 1, ...) passed the column check under pyarrow's
    names ("0") and then failed a raw KeyError indexing the frame with them."""
    p, y = np.array([0.1, 0.8, 0.6, 0.3, 0.7]), np.array([0, 1, 1, 0, 0])
    g = np.array([1.5, 1.5, 2.5, 2.5, 2.5])
    frame = pd.DataFrame(np.column_stack([p, y, g]))
    assert list(frame.columns) == [0, 1, 2]
    result = evaluate(frame, {"t": ("0", "1")}, ["auc"], by=["2"], batch_size=2)
    expected = {"auc/t": roc_auc_score(y, p)}
    expected |= {f"auc/t/2={v}": roc_auc_score(y[g == v], p[g == v]) for v in (1.5, 2.5)}
    assert_close(result.values, expected)
    # a label and the text of another one name one column twice: refused when read, as any duplicate
    frame.columns = [0, "0", 2]
    with pytest.raises(InvalidDataError, match=r"column '0' \(predictions of task 't'\) is duplicated"):
        evaluate(frame, {"t": ("0", "2")}, ["auc"])


@pytest.mark.parametrize("value", [2**64 + 1, 2**63 + 5])
def test_a_pandas_object_column_of_ints_beyond_int64_names_the_column_and_the_fix(value):
    """pyarrow converts no Python int beyond int64 from an object column: a raw OverflowError named
    no column, and an unread such column failed too."""
    p, y = [0.2, 0.7, 0.1], [0, 1, 0]
    for u in ([value, 3, 4], [3, 4, value]):  # in the slice typing the column, or a later one
        frame = pd.DataFrame({"p": p, "y": y, "u": pd.Series(u, dtype=object)})
        for kw in ({"by": ["u"]}, {"user": "u"}):
            message = r"<pandas\.DataFrame>: column 'u' holds Python ints beyond int64, .* 0-based data (rows 0 to 1|row 2) \(.*UInt64"
            metrics = ["ctr", "gauc"] if "user" in kw else ["ctr"]  # (user ids no metric reads are not read)
            with pytest.raises(InvalidDataError, match=message):
                evaluate(frame, {"t": ("p", "y")}, metrics, batch_size=2, **kw)
        assert evaluate(frame, {"t": ("p", "y")}, ["ctr"]).values == {"ctr/t": 1 / 3}  # not read: no problem
    if value < 2**64:  # the conversion the message gives
        frame = pd.DataFrame({"p": p, "y": y, "u": pd.Series([value, 3, value], dtype=object).astype("UInt64")})
        result = evaluate(frame, {"t": ("p", "y")}, ["ctr"], by=["u"])
        assert {r["u"]: r["rows"] for r in result.records[1:]} == {3: 1, value: 2}


def test_nan_of_a_pandas_frame_is_its_missing_value_the_null_segment():
    """As documented: pandas stores None in a float column as NaN, so NaN is the null segment there
    (Arrow tables keep NaN apart), and a NaN prediction is a null row."""
    p, y = np.array([0.2, 0.7, 0.4, 0.9, 0.3]), np.array([0, 1, 1, 0, 1])
    g = np.array([1.5, np.nan, 1.5, None, np.nan], dtype=np.float64)
    result = evaluate(pd.DataFrame({"p": p, "y": y, "g": g}), {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert {r["g"]: r["ctr"] for r in result.records[1:]} == {1.5: 0.5, None: float(np.mean(y[[1, 3, 4]]))}
    table = evaluate(pa.table({"p": p, "y": y, "g": g}), {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["segment"] for r in table.records[1:]] == ["g=1.5", "g=nan"]  # pa.table: NaN stays NaN
    message = r"<pandas.DataFrame>: column 'p' \(predictions of task 't'\) has 2 rows that are null or NaN \(first at 0-based data row 0\)"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(pd.DataFrame({"p": np.where(g == 1.5, np.nan, p), "y": y}).iloc[:3], {"t": ("p", "y")}, ["ctr"])


def test_duplicated_column_names_are_one_clear_error(tmp_path, capsys):
    (tmp_path / "dup.csv").write_text("p,y,p,q\n0.1,0,0.5,0.3\n0.9,1,0.5,0.6\n")
    arrays = [pa.array([0.1, 0.9]), pa.array([0, 1]), pa.array([0.5, 0.5]), pa.array([0.3, 0.6])]
    pq.write_table(pa.Table.from_arrays(arrays, names=["p", "y", "p", "q"]), tmp_path / "dup.parquet")
    for name in ("dup.csv", "dup.parquet"):
        path = str(tmp_path / name)
        for by, role in (([], "predictions of task 't'"), (["p"], "--by segment")):
            task = ("q", "y") if by else ("p", "y")  # (a task may not read one column as both: RecTaskInfo)
            with pytest.raises(InvalidDataError, match=rf"{re.escape(name)}: column 'p' \({role}\) is duplicated: 2 "):
                evaluate(path, {"t": task}, ["ctr"], by=by)
        assert cli.main(["evaluate", path, "--predictions", "p", "--labels", "y", "--metrics", "ctr"]) == 2
        err = capsys.readouterr().err
        assert f"error: {path}: column 'p' (predictions of task 'y') is duplicated" in err and "Traceback" not in err
    frame = pd.DataFrame([[0.1, 0, 0.5, 1], [0.9, 1, 0.5, 2]], columns=["p", "y", "p", "q"])
    with pytest.raises(InvalidDataError, match=r"<pandas\.DataFrame>: column 'p' \(predictions of task 't'\) is dup"):
        evaluate(frame, {"t": ("p", "y")}, ["ctr"])
    frame.columns = ["p", "y", "q", "q"]  # a duplicated column that is not read is no problem
    assert evaluate(frame, {"t": ("p", "y")}, ["ctr"]).values == {"ctr/t": 0.5}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.parquet", b"not parquet at all", r"x\.parquet: not a readable Parquet file"),
        ("x.json", b"{}", r"x\.json: unknown format; expected a file ending in"),
        (
            "x.csv",
            b"p_click,y_click\n0.5,abc\n0.2,1\n",
            r"x\.csv: column 'y_click' \(labels of task 'click'\): invalid value 'abc' at line 2; "
            r"expected a number, true or false",
        ),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidDataError, match=message):
        evaluate(path, {"click": ("p_click", "y_click")}, ["ctr"])


def _csv_with_late_types(path: Path, n: int = 150_000) -> pd.DataFrame:
    """A valid CSV whose first megabytes look like integers: weights `1`, users `7`, segments `1`."""
    rng = np.random.default_rng(0)
    late = np.arange(n) >= 130_000  # past the first MiB of text
    frame = pd.DataFrame(
        {
            "p": rng.random(n).round(4),
            "y": rng.integers(0, 2, n),
            "w": np.where(late, "0.5", "1"),
            "user": np.where(late, rng.integers(0, 5, n), 7),
            "g": np.where(late & (rng.random(n) < 0.5), "x", "1"),
        }
    )
    frame.to_csv(path, index=False)
    return pd.read_csv(path, dtype={"g": str})  # pandas reads the whole file: the reference types


@pytest.mark.parametrize("batch_size", [65_536, 1_000])
def test_csv_values_do_not_depend_on_the_block_or_batch_size(tmp_path, batch_size):
    ref = _csv_with_late_types(tmp_path / "a.csv")
    result = evaluate(
        tmp_path / "a.csv",
        {"t": ("p", "y")},
        ["ctr", "gauc"],
        weights="w",
        user="user",
        by=["g"],
        batch_size=batch_size,
    )
    expected = {}
    for key, part in [("t", ref), *((f"t/g={g}", part) for g, part in ref.groupby("g"))]:
        expected[f"ctr/{key}"] = (part.w * part.y).sum() / part.w.sum()
        expected[f"gauc/{key}"] = gauc_ref(
            part.p.to_numpy(), part.y.to_numpy(), part.user.to_numpy(), part.w.to_numpy()
        )
    assert_close({k: result.values[k] for k in expected}, expected)
    assert result.rows_read == len(ref)


@pytest.mark.parametrize("batch_size", [33_554_432, 2**31, 2**63])
def test_any_batch_size_reads_every_source(tmp_path, capsys, batch_size):
    """CSV's block size (64 bytes a row) overflowed pyarrow's int32 from 2**25 rows; every source from 2**63."""
    p, y, g = [0.2, 0.7, 0.4, 0.9, 0.1], [0, 1, 1, 0, 0], ["a", "b", "a", "b", "a"]
    table = pa.table({"p": p, "y": y, "g": g})
    pa_csv.write_csv(table, tmp_path / "a.csv")
    pq.write_table(table, tmp_path / "a.parquet")
    expected = {"auc/t": roc_auc_score(y, p), "ctr/t": np.mean(y), "auc/t/g=a": 1.0, "ctr/t/g=a": 1 / 3}
    expected |= {"auc/t/g=b": 0.0, "ctr/t/g=b": 0.5}
    for data in (str(tmp_path / "a.csv"), str(tmp_path / "a.parquet"), table, table.to_pandas()):
        values = evaluate(data, {"t": ("p", "y")}, ["auc", "ctr"], by=["g"], batch_size=batch_size).values
        assert_close(values, expected)
    args = ["evaluate", str(tmp_path / "a.csv"), "--task", "t=p:y", "--metrics", "ctr", "--batch-size", str(batch_size)]
    assert cli.main([*args, "--no-progress"]) == 0
    assert "5 rows read" in capsys.readouterr().out


@pytest.mark.parametrize("batch_size", [1_000, 65_536])
def test_quoted_line_breaks_in_a_csv_larger_than_a_block(tmp_path, batch_size):
    """RFC 4180 quoted fields with line breaks (an unread comment column) in a file larger than
    one read block (1 MiB at batch size 1,000, 4 MiB at 65,536): read as pandas reads it."""
    n = 100_000 if batch_size == 65_536 else 30_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"p": rng.random(n).round(6), "y": rng.integers(0, 2, n).astype(np.float64)})
    frame["comment"] = 'line a\nline b, "quoted"\nline c'
    path = tmp_path / "comments.csv"
    frame.to_csv(path, index=False)
    assert path.stat().st_size > max(1 << 20, 64 * batch_size)
    expected = pd.read_csv(path)  # the reference reader
    assert len(expected) == n
    result = evaluate(path, {"t": ("p", "y")}, ["ctr", "mse"], batch_size=batch_size)
    assert result.rows_read == n
    assert result.values["ctr/t"] == pytest.approx(expected.y.mean(), rel=1e-12)
    assert result.values["mse/t"] == pytest.approx(np.mean((expected.p - expected.y) ** 2), rel=1e-12)


def test_a_late_bad_csv_value_names_the_file_and_column(tmp_path):
    ref = _csv_with_late_types(tmp_path / "a.csv", n=140_000)
    text = (tmp_path / "a.csv").read_text().rstrip("\n").rsplit("\n", 1)[0]
    (tmp_path / "a.csv").write_text(text + "\n0.5,1,abc,3,x\n")
    assert len(ref) == 140_000
    with pytest.raises(InvalidDataError, match=r"a\.csv: column 'w' \(weights\): invalid value 'abc' at line 140,001;"):
        evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"], weights="w", batch_size=1_000)


@pytest.mark.parametrize(("suffix", "codec"), [("gz", "gzip"), ("bz2", "bz2"), ("zst", "zstd"), ("lz4", "lz4")])
def test_compressed_csv_reads_as_the_plain_file(tmp_path, suffix, codec):
    n = 140_000 if codec == "gzip" else 3_000  # gzip: more than a block of text, with late types
    ref = _csv_with_late_types(tmp_path / "plain.csv", n=n)
    packed = tmp_path / "logs" / f"a.csv.{suffix}"
    packed.parent.mkdir()
    with open(tmp_path / "plain.csv", "rb") as src, pa.CompressedOutputStream(str(packed), codec) as out:
        out.write(src.read())
    args = ({"t": ("p", "y")}, ["ctr", "auc"])
    kw = {"weights": "w", "by": ["g"], "batch_size": 50_000}
    plain = evaluate(tmp_path / "plain.csv", *args, **kw)
    for data in (packed, packed.parent, str(tmp_path / "logs" / "*.csv.*")):  # the file, its directory, a glob
        result = evaluate(data, *args, **kw)
        assert result.records == plain.records and result.rows_read == len(ref)
    expected = (ref.w * ref.y).sum() / ref.w.sum()  # pandas over the plain file
    assert result.values["ctr/t"] == pytest.approx(expected, rel=1e-12)
    assert cli.main(["evaluate", str(packed), "--task", "t=p:y", "--metrics", "ctr", "--no-progress"]) == 0
    (tmp_path / f"bad.csv.{suffix}").write_bytes(packed.read_bytes()[:30])  # cut short
    with pytest.raises(InvalidDataError, match=rf"bad\.csv\.{suffix}: not a readable CSV file"):
        evaluate(tmp_path / f"bad.csv.{suffix}", *args, **kw)


@pytest.mark.parametrize(("suffix", "codec"), [("CSV.GZ", "gzip"), ("Csv.Bz2", "bz2"), ("CSV.ZST", "zstd")])
def test_compressed_csv_suffixes_are_read_in_any_case(tmp_path, suffix, codec):
    """The suffix check lower-cases the name: the codec too (pyarrow's detection is case-sensitive)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"p": rng.uniform(size=200), "y": rng.integers(0, 2, 200)})
    packed = tmp_path / f"DATA.{suffix}"
    with pa.CompressedOutputStream(str(packed), codec) as out:
        out.write(frame.to_csv(index=False).encode())
    result = evaluate(packed, {"t": ("p", "y")}, ["ctr", "auc"])
    assert result.rows_read == len(frame)
    assert result.values["ctr/t"] == pytest.approx(frame.y.mean(), rel=1e-12)
    assert result.values["auc/t"] == pytest.approx(roc_auc_score(frame.y, frame.p), rel=1e-12)


def test_a_csv_header_that_is_not_utf8_is_named(tmp_path):
    """A latin-1 header used to escape as UnicodeDecodeError from the missing-column message."""
    (tmp_path / "a.csv").write_bytes("pr\u00e9d,y\n0.1,0\n0.7,1\n".encode("latin-1"))
    with pytest.raises(InvalidDataError, match=r"a\.csv: column 'p' .* is missing, and the header holds names that"):
        evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"])
    # the columns read are UTF-8: the file reads as before
    (tmp_path / "b.csv").write_bytes("pr\u00e9d,p,y\n0.1,0.1,0\n0.7,0.7,1\n".encode("latin-1"))
    assert evaluate(tmp_path / "b.csv", {"t": ("p", "y")}, ["ctr"]).values == {"ctr/t": 0.5}


def test_hive_partition_keys_are_columns(tmp_path, capsys):
    """The keys of a Hive-partitioned directory (logs/country=FR/hour=3/part-0.parquet) were no columns:
    `--by country` failed. They are now columns of every file below the directory named, typed as
    pyarrow.dataset's hive partitioning types them (int32 if every value is one, else string; the
    default partition null), in Parquet and CSV files alike, usable in any role. The reference is
    a pandas groupby of the data written, with sklearn's AUC and the NE formula."""
    import pyarrow.dataset as ds

    rng = np.random.default_rng(0)
    n = 1200
    frame = pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, n),
            "y": rng.integers(0, 2, n),
            "country": rng.choice(np.array(["FR", "US", "a b/c", None], dtype=object), n),  # URI-encoded, null
            "hour": rng.integers(0, 3, n),
        }
    )
    logs = tmp_path / "logs"
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), logs, partition_cols=["country", "hour"])
    dataset = ds.dataset(logs, format="parquet", partitioning="hive")
    expected_types = {name: dataset.schema.field(name).type for name in ("country", "hour")}
    assert expected_types == {"country": pa.string(), "hour": pa.int32()}
    # a CSV file in one partition: its keys are stored columns too (hour stays int32, not text)
    extra = pd.DataFrame({"p": [0.3, 0.8, 0.6], "y": [0, 1, 1]})
    extra.to_csv(logs / "country=FR" / "hour=1" / "extra.csv", index=False)
    frame = pd.concat([frame, extra.assign(country="FR", hour=1)], ignore_index=True)
    (logs / "_SUCCESS").write_text("")

    def check(result, by):
        assert result.by_types == {name: expected_types[name] for name in by}
        got = {tuple(r[b] for b in by): r for r in result.records if r["segment"] != "all"}
        reference = frame.groupby(by, dropna=False)
        assert len(got) == reference.ngroups
        for key, part in reference:
            key = tuple(None if pd.isna(k) else k.item() if isinstance(k, np.generic) else k for k in key)
            p, y = part["p"].to_numpy(), part["y"].to_numpy()
            assert got[key]["rows"] == len(part)
            assert got[key]["ctr"] == pytest.approx(y.mean(), rel=1e-12)
            assert got[key]["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
            assert got[key]["ne"] == pytest.approx(ne_ref(p, y, np.ones(len(p))), rel=1e-9)

    for by in (["country"], ["country", "hour"], ["hour"]):
        check(evaluate(logs, {"t": ("p", "y")}, ["ctr", "auc", "ne"], by=by), by)
    # a glob: the keys below its literal part; and the command line
    pattern = str(logs / "country=*" / "hour=*" / "*.*")
    check(evaluate(pattern, {"t": ("p", "y")}, ["ctr", "auc", "ne"], by=["country", "hour"]), ["country", "hour"])
    out = tmp_path / "out.json"
    command = ["evaluate", str(logs), "--task", "t=p:y", "--metrics", "ctr", "--by", "hour", "--output", str(out)]
    assert cli.main(command) == 0
    written = {r["hour"]: r["ctr"] for r in json.loads(out.read_text())["records"] if r["segment"] != "all"}
    assert written == pytest.approx(frame.groupby("hour")["y"].mean().to_dict(), rel=1e-12)
    capsys.readouterr()
    # a key in another role: integer hours as user ids (GAUC over the hours)
    result = evaluate(logs, {"t": ("p", "y")}, ["gauc"], user="hour")
    assert result.values["gauc/t"] == pytest.approx(
        gauc_ref(frame.p.to_numpy(), frame.y.to_numpy(), frame.hour.to_numpy(), np.ones(len(frame))), rel=1e-9
    )
    with pytest.raises(InvalidDataError, match=r"column 'country' \(user ids\) has type string; expected integer ids"):
        evaluate(logs, {"t": ("p", "y")}, ["gauc"], user="country")
    # a file named alone has no keys: the message says where they are read from
    leaf = next((logs / "country=FR" / "hour=1").glob("*.parquet"))
    message = (
        r"column 'country' \(--by segment\) is missing; found columns \['p', 'y'\]\. "
        r"'country' is a Hive partition key \(directory 'country=FR'\), which is a column of the files below a "
        r"directory named"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(leaf, {"t": ("p", "y")}, ["ctr"], by=["country"])
    with pytest.raises(InvalidDataError, match=r"column 'w' \(weights\) is missing; found columns \['p', 'y'\]\.$"):
        evaluate(leaf, {"t": ("p", "y")}, ["ctr"], weights="w")  # no such directory: no hint


def test_a_column_that_is_the_dataframes_index_says_reset_index():
    """by="c" on a frame indexed by "c" only said the column is missing: the index (or a level of a
    MultiIndex) of that name is named, with the fix; after df.reset_index() it is a segment column."""
    frame = pd.DataFrame({"p": [0.1, 0.9, 0.4], "y": [0, 1, 1]}, index=pd.Index(["a", "b", "a"], name="c"))
    fix = r"and an index is not a column: pass df\.reset_index\(\) to make it one\.$"
    missing = r"column 'c' \(--by segment\) is missing; found columns \['p', 'y'\]\. "
    with pytest.raises(InvalidDataError, match=missing + r"The DataFrame's index is named 'c', " + fix):
        evaluate(frame, {"t": ("p", "y")}, ["ctr"], by="c")
    levels = frame.set_index(pd.Index([1, 2, 3], name="k"), append=True)
    with pytest.raises(InvalidDataError, match=missing + r"Level 0 of the DataFrame's MultiIndex is named 'c', " + fix):
        evaluate(levels, {"t": ("p", "y")}, ["ctr"], by="c")
    with pytest.raises(
        InvalidDataError, match=r"column 'k' \(user ids\) is missing; .*Level 1 of the DataFrame's Multi"
    ):
        evaluate(levels, {"t": ("p", "y")}, ["gauc"], user="k")
    with pytest.raises(
        InvalidDataError, match=r"column 'q' \(--by segment\) is missing; found columns \['p', 'y'\]\.$"
    ):
        evaluate(frame, {"t": ("p", "y")}, ["ctr"], by="q")  # no index of that name: no hint
    result = evaluate(frame.reset_index(), {"t": ("p", "y")}, ["ctr"], by="c")
    assert result.values["ctr/t/c=a"] == 0.5 and result.values["ctr/t/c=b"] == 1.0


@pytest.mark.parametrize("suffix", [".csv.zst", ".CSV.GZ", ".csv.gz", ".parquet"])
def test_hive_keys_are_typed_from_the_directory_names_alone(tmp_path, suffix):
    """The keys were typed by pyarrow.dataset reading the first file's schema, which it cannot do for
    .csv.zst (no decompression) or .CSV.GZ (case-sensitive suffix): the error was swallowed and every
    key vanished (`--by country` failed as a missing column). The keys are typed from the directory
    names: the reference is pyarrow.dataset's HivePartitioning.discover over the same directories (of
    Parquet files it can read), and pandas for the metric."""
    import pyarrow.dataset as ds

    codecs = {".csv.zst": "zstd", ".CSV.GZ": "gzip", ".csv.gz": "gzip"}
    layout = [  # URI-encoded values, the default partition, int32 and not, a file above the keys
        "country=FR/hour=1/big=7",
        "country=a%20b%2Fc/hour=-3/big=2147483648",
        "country=__HIVE_DEFAULT_PARTITION__/hour=__HIVE_DEFAULT_PARTITION__/big=x",
        "country=FR/hour=2",
        "plain",
    ]
    root, reference_root = tmp_path / "logs", tmp_path / "reference"
    rows = []
    rng = np.random.default_rng(1)
    for directory in layout:
        n = int(rng.integers(40, 60))  # compressed bytes with line breaks (pyarrow.dataset read them as CSV)
        p, y = rng.random(n), rng.integers(0, 2, n).astype(float)
        table = pa.table({"p": p, "y": y})
        (root / directory).mkdir(parents=True)
        (reference_root / directory).mkdir(parents=True)
        pq.write_table(table, reference_root / directory / "part.parquet")
        path = root / directory / f"part{suffix}"
        if suffix == ".parquet":
            pq.write_table(table, path)
        else:
            with pa.CompressedOutputStream(str(path), codecs[suffix]) as stream:
                pa_csv.write_csv(table, stream)
        rows += [(directory, a, b) for a, b in zip(p, y)]
    dataset = ds.dataset(reference_root, format="parquet", partitioning=ds.HivePartitioning.discover())
    fields = list(dataset.partitioning.schema)
    assert [(f.name, f.type) for f in fields] == [("country", pa.string()), ("hour", pa.int32()), ("big", pa.string())]
    expected = {}
    for fragment in dataset.get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        directory = Path(fragment.path).parent.relative_to(reference_root).as_posix()
        expected[directory] = {f.name: pa.scalar(keys.get(f.name), f.type) for f in fields}
    sources = open_sources(root)
    got = {}
    for source in sources:
        directory = Path(source.label).parent.relative_to(root).as_posix()
        got[directory] = dict(source.added()) if isinstance(source, PartitionedSource) else {}
    assert got == expected
    assert all(value.type == expected[d][name].type for d in got for name, value in got[d].items())
    # the keys as segments: the reference is pandas over the rows written
    frame = pd.DataFrame(rows, columns=["directory", "p", "y"])
    frame["country"] = frame.directory.map({d: k["country"].as_py() for d, k in expected.items()})
    result = evaluate(root, {"t": ("p", "y")}, ["ctr"], by=["country"])
    assert result.by_types == {"country": pa.string()}
    values = {r["country"]: (r["rows"], r["ctr"]) for r in result.records if r["segment"] != "all"}
    reference = frame.groupby("country", dropna=False)["y"]
    assert values == {
        (None if pd.isna(k) else k): (n, pytest.approx(m, rel=1e-12))
        for k, n, m in zip(reference.size().index, reference.size(), reference.mean())
    }


def test_a_hive_key_without_values_is_no_column_but_the_others_are(tmp_path):
    """A key whose every value is the default partition has no type (pyarrow.dataset refuses the whole
    dataset): as documented it is no column, but the other keys were dropped with it."""
    for directory in ("z=__HIVE_DEFAULT_PARTITION__/g=1", "z=__HIVE_DEFAULT_PARTITION__/g=2"):
        (tmp_path / directory).mkdir(parents=True)
        pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0.0, 1.0]}), tmp_path / directory / "a.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert {r["g"]: r["rows"] for r in result.records[1:]} == {1: 2, 2: 2}
    with pytest.raises(InvalidDataError, match=r"column 'z' \(--by segment\) is missing"):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["z"])
    (tmp_path / "g=%FF").mkdir()  # not UTF-8 once decoded: said, not dropped
    pq.write_table(pa.table({"p": [0.5], "y": [1.0]}), tmp_path / "g=%FF" / "b.parquet")
    with pytest.raises(InvalidDataError, match=r"partition directory 'g=%FF' is not valid UTF-8 once URI-decoded"):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])


def test_a_column_a_file_holds_is_read_from_the_file_not_its_partition_key(tmp_path):
    """A file holding a column named like a key of its directories keeps its own values (as before the
    keys were columns); a file without it gets the key's."""
    (tmp_path / "g=1").mkdir()
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": [7, 8]}), tmp_path / "g=1" / "a.parquet")
    pq.write_table(pa.table({"p": [0.4, 0.9], "y": [1, 1]}), tmp_path / "g=1" / "b.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert {r["g"]: r["rows"] for r in result.records[1:]} == {1: 2, 7: 1, 8: 1}


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (
            "xyz,1,1",
            r"column 'p' \(predictions of task 't'\): invalid value 'xyz' at line {line}; "
            "expected a number",
        ),
        (
            "0.5,1,zz",
            r"column 'w' \(weights\): invalid value 'zz' at line {line}; expected a number",
        ),
        ("0.5,1,1,7", r"line {line}: CSV parse error: Expected 3 columns, got 4: 0\.5,1,1,7"),
    ],
)
@pytest.mark.parametrize("late", [False, True], ids=["first block", "later block"])
def test_a_bad_csv_row_is_named_in_the_first_block_as_in_later_ones(tmp_path, bad_row, message, late):
    """The reader parses the first block when the file is opened: its errors were 'not a readable CSV file'.

    A value that does not convert is named with its row (the rows before it: ``good``), found only
    once the read has failed.
    """
    rows = 300_000 if late else 3  # later: past the first 1 MiB block
    good = "0.5,1,1\n" * rows
    (tmp_path / "a.csv").write_text(f"p,y,w\n{good}{bad_row}\n0.25,0,1\n")
    with pytest.raises(InvalidDataError) as caught:
        evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"], weights="w", batch_size=1_000)
    assert re.fullmatch(rf".*a\.csv: {message.format(line=f'{rows + 2:,}')}", str(caught.value))
    (tmp_path / "b.csv").write_text("")  # an unreadable file still says so
    with pytest.raises(InvalidDataError, match=r"b\.csv: not a readable CSV file \(Empty CSV file\)"):
        evaluate(tmp_path / "b.csv", {"t": ("p", "y")}, ["ctr"])


@pytest.mark.parametrize(
    ("column", "bad", "message"),
    [
        (
            "y",
            "yes",
            "column 'y' (labels of task 'click'): invalid value 'yes' at line 5; expected a number, true or false",
        ),
        (
            "p",
            "0.3x",
            "column 'p' (predictions of task 'click'): invalid value '0.3x' at line 5; expected a number",
        ),
        (
            "u",
            "u7",
            "column 'u' (user ids): invalid value 'u7' at line 5; expected an integer id. Number "
            "text ids first, e.g. pandas `df[col] = df[col].astype('category').cat.codes`.",
        ),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_cli_names_the_file_column_row_and_value_that_does_not_convert(tmp_path, capsys, column, bad, suffix, message):
    """A stray text in a number column: the command names where it is, not only what the reader found."""
    frame = pd.DataFrame(
        {"p": ["0.1", "0.9", "0.4", "0.3", "0.7"], "y": ["0", "1", "n/a", "1", "0"], "u": list("12345")}
    )
    frame.loc[3, column] = bad  # data row 3 counting from 0: line 5 of the file (the header is line 1)
    path = tmp_path / f"logs{suffix}"
    frame.to_csv(path, index=False)
    args = ["evaluate", str(path), "--task", "click=p:y", "--user", "u", "--metrics", "ctr,gauc", "--no-progress"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err == f"torchmetrics-ext evaluate: error: {path}: {message}\n"


# A file an editor shows as: line 1 the header, lines 2-3 one row (a quoted value holding a line break),
# line 4 blank (no row), line 5 a row, line 6 the row at fault (data row 2, counting from 0).
_LINES_HEAD = ["p,y,c", '0.1,1,"a', 'b"', "", "0.2,0,x"]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (
            "0.3,abc,z",
            "column 'y' (labels of task 't'): invalid value 'abc' at line 6; expected a number, true or false",
        ),
        ("q,1,z", "column 'p' (predictions of task 't'): invalid value 'q' at line 6; expected a number"),
        ("0.3,1", "line 6: CSV parse error: Expected 3 columns, got 2: 0.3,1"),
        ("0.3,1,z,z", "line 6: CSV parse error: Expected 3 columns, got 4: 0.3,1,z,z"),
        ('0.3,1,"z\nz",z', 'line 6: CSV parse error: Expected 3 columns, got 4: 0.3,1,"z\nz",z'),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_bad_csv_row_is_named_by_its_line_as_an_editor_shows_it(tmp_path, capsys, bad_row, message, newline, suffix):
    """Rows were named counting from 0 without the header ("row 2"), and a row of another number of fields
    by its text alone: the line an editor shows is named instead, past multi-line values and blank lines."""
    path = tmp_path / f"x{suffix}"
    text = newline.join([*_LINES_HEAD, bad_row.replace("\n", newline), "0.4,1,w"]) + newline
    # written byte for byte (no CSV writer's quoting), compressed for .csv.gz
    with pa.output_stream(str(path), compression="gzip" if suffix.endswith(".gz") else None) as out:
        out.write(text.encode())
    with pytest.raises(InvalidDataError) as caught:
        evaluate(path, {"t": ("p", "y")}, ["ctr"])
    assert str(caught.value) == f"{path}: {message.replace(chr(10), newline)}"
    assert cli.main(["evaluate", str(path), "--task", "t=p:y", "--metrics", "ctr", "--no-progress"]) == 2
    assert capsys.readouterr().err == f"torchmetrics-ext evaluate: error: {path}: {message.replace(chr(10), newline)}\n"


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("0.3,1", "line 7: CSV parse error: Expected 3 columns, got 2: 0.3,1"),
        (
            "0.3,abc,z",
            "column 'y' (labels of task 't'): invalid value 'abc' at line 7; expected a number, true or false",
        ),
    ],
)
def test_naming_a_bad_quoted_csv_row_leaves_the_csv_field_size_limit_as_it_was(tmp_path, bad_row, message):
    """``csv.field_size_limit`` is process-wide: finding the line of a bad row in a file with quotes raised it
    (for values longer than its default) inside a generator, restored only when the generator was closed. The
    caller's limit (here a non-default one) is back as soon as the lines are found, and a value longer than it
    does not stop the count. Reference: the file's lines numbered by hand (line 6 holds a 200,000-byte value)."""
    import csv

    long_value = "x" * 200_000
    path = tmp_path / "a.csv"
    path.write_text("\n".join([*_LINES_HEAD, f'0.25,1,"{long_value}"', bad_row, "0.4,1,w"]) + "\n")
    previous = csv.field_size_limit(50_000)
    try:
        with pytest.raises(InvalidDataError) as caught:
            evaluate(path, {"t": ("p", "y")}, ["ctr"])
        assert csv.field_size_limit() == 50_000
    finally:
        csv.field_size_limit(previous)
    assert str(caught.value) == f"{path}: {message}"


def test_csv_line_count_restores_the_csv_field_size_limit_when_reading_fails():
    """The limit is restored whatever ends the scan, an error the count does not handle included."""
    import csv

    from torchmetrics_ext.evaluate.lines import first_record_line

    class Failing(io.BytesIO):
        def read(self, *args):
            raise RuntimeError("disk gone")

        def read1(self, *args):
            raise RuntimeError("disk gone")

        def readinto(self, *args):
            raise RuntimeError("disk gone")

    before = csv.field_size_limit()
    with pytest.raises(RuntimeError, match="disk gone"):
        first_record_line(Failing, 3)
    assert csv.field_size_limit() == before


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("last_end", [True, False], ids=["ended", "unended"])
def test_csv_row_lines_count_blank_lines_and_line_ends_across_read_blocks(block, newline, last_end):
    """The quote-free count (numpy, block by block) and the csv-module count (a file with quotes) give each data
    row's line; reference: the file's lines numbered by hand, blank ones skipped, the first non-blank the header."""
    from torchmetrics_ext.evaluate.lines import record_lines

    rows = ["", "p,y", "", "0.1,1", "0.2,0", "", "", "0.3,1", "0.4,0"]
    numbered = [i + 1 for i, text in enumerate(rows) if text][1:]  # lines 4, 5, 8, 9
    expected = {row: (line, line) for row, line in enumerate(numbered)}
    for quoted in (False, True):
        text = newline.join([*rows[:-1], '"0.4",0' if quoted else rows[-1]]) + (newline if last_end else "")
        got = record_lines(lambda text=text: pa.BufferReader(text.encode()), range(6), block=block)
        assert got == expected, quoted
        assert record_lines(lambda text=text: pa.BufferReader(text.encode()), [2], block=block) == {2: expected[2]}


@pytest.mark.parametrize("row", [0, 70_000], ids=["first-block", "later-block"])
def test_a_csv_segment_value_that_is_not_utf8_is_named_by_its_line_with_the_fix(tmp_path, capsys, row):
    """A latin-1 byte in a text --by column failed with Arrow's words alone ("column 'c': CSV conversion
    error to string: invalid UTF8 data"): no line, no remedy. The message now names the line (the header
    is line 1, a quoted value with a line break adds one) and says to save the file as UTF-8."""
    n = 80_000
    lines = [
        f"{(i % 9 + 1) / 10},{i % 2},{'x' if i % 3 else chr(34) + 'two' + chr(10) + 'lines' + chr(34)}"
        for i in range(n)
    ]
    lines[row] = "0.5,1,caf\xe9"  # latin-1 é
    breaks = sum(1 for i in range(row) if i % 3 == 0)  # the quoted values before it span two lines
    path = tmp_path / "l.csv"
    path.write_bytes(("p,y,c\n" + "\n".join(lines) + "\n").encode("latin-1"))
    expected = (
        f"{path}: column 'c' holds text that is not UTF-8 at line {row + 2 + breaks:,} (a file saved as latin-1 or "
        "cp1252?); CSV files are read as UTF-8: save the file as UTF-8."
    )
    with pytest.raises(InvalidDataError) as caught:
        evaluate(path, {"t": ("p", "y")}, ["ctr"], by="c")
    assert str(caught.value) == expected
    args = ["evaluate", str(path), "--task", "t=p:y", "--metrics", "ctr", "--by", "c", "--no-progress"]
    assert cli.main(args) == 2
    assert expected in capsys.readouterr().err


def test_invalid_csv_rows_are_named_by_line_and_parquet_rows_as_0_based_data_rows(tmp_path):
    """Invalid rows (a prediction outside [0, 1]): a CSV file names the first one's line, Parquet its
    0-based data row; ``Problem`` keeps both (``first_row`` 0-based, ``line`` with the header as line 1)."""
    (tmp_path / "a.csv").write_text("\n".join([*_LINES_HEAD, "1.5,1,z", "0.4,1,w", "-1,0,v"]) + "\n")
    expected = "has 2 rows outside [0, 1] (probabilities expected) (first at line 6); if the column holds logits"
    with pytest.raises(InvalidDataError, match=re.escape(f"a.csv: column 'p' (predictions of task 't') {expected}")):
        evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ne"])
    [problem] = evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ne"], on_invalid="skip").problems
    assert (problem.first_row, problem.line, problem.count) == (2, 6, 2)
    pq.write_table(pa.table({"p": [0.1, 0.2, 1.5, 0.4, -1.0], "y": [1, 0, 1, 1, 0]}), tmp_path / "a.parquet")
    with pytest.raises(InvalidDataError, match=re.escape("(first at 0-based data row 2); if the column")):
        evaluate(tmp_path / "a.parquet", {"t": ("p", "y")}, ["ne"])
    [problem] = evaluate(tmp_path / "a.parquet", {"t": ("p", "y")}, ["ne"], on_invalid="skip").problems
    assert (problem.first_row, problem.line) == (2, None)
    [csv_source] = open_sources(str(tmp_path / "a.csv"))
    assert csv_source.where(0, 2) == "lines 2 to 6" and csv_source.where(1) == "line 5"
    assert csv_source.where(9) == "0-based data row 9"  # past the end: no line to name
    [parquet_source] = open_sources(str(tmp_path / "a.parquet"))
    assert parquet_source.where(0, 2) == "0-based data rows 0 to 2" and parquet_source.where(3) == "0-based data row 3"


@pytest.mark.parametrize(
    ("text", "found", "name"),
    [
        ("p;y\n0,1;0\n0,8;1\n", ";", "semicolon"),  # Excel where ',' is the decimal separator: a parse error
        ("p;y\n0.1;0\n0.8;1\n", ";", "semicolon"),  # one column 'p;y': a missing column
        ("p\ty\n0.1\t0\n0.8\t1\n", "\t", "tab"),
        ("p|y\n0.1|0\n0.8|1\n", "|", "pipe"),
    ],
)
def test_a_csv_file_with_another_delimiter_is_named_so(tmp_path, text, found, name):
    """A semicolon- or tab-separated export read as one column said 'p' is missing, found ['p;y']."""
    (tmp_path / "a.csv").write_text(text)
    with pytest.raises(InvalidDataError) as caught:
        evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"])
    hint = (
        f". The header is one column holding {found!r}: the file looks {name}-separated, and CSV files are read "
        f"comma-separated; convert it first (e.g. pandas.read_csv(path, sep={found!r}).to_parquet(...))."
    )
    assert str(caught.value).startswith(f"{tmp_path / 'a.csv'}: ")
    assert str(caught.value).endswith(hint)
    pd.read_csv(tmp_path / "a.csv", sep=found, decimal="," if "0,1" in text else ".").to_parquet(tmp_path / "a.parquet")
    assert evaluate(tmp_path / "a.parquet", {"t": ("p", "y")}, ["ctr"]).values["ctr/t"] == 0.5  # the fix works


@pytest.mark.parametrize("batch_size", [1_000, 65_536])
def test_csv_labels_read_the_same_wherever_their_booleans_are(tmp_path, batch_size):
    """The label type was guessed from the first MiB: `true` after 0/1 labels worked in a small file
    and failed in a large one (and after a first MiB of empty labels)."""
    words = {"1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0, "0.5": 0.5, " 1 ": 1.0, "": np.nan, "NA": np.nan}
    for head in ("1", "0", ""):  # a small file, then the same rows after 1.2 MB of `head`
        for repeat in (4, 200_000):
            labels = [head] * repeat + ["true", "false", "0.5", " 1 ", "1", "NA"]
            p = np.linspace(0.1, 0.9, len(labels))
            path = tmp_path / f"{repeat}.csv"
            path.write_text("p,y\n" + "".join(f"{a},{b}\n" for a, b in zip(p, labels)))
            y = np.array([words[v] for v in labels])
            keep = ~np.isnan(y)
            result = evaluate(path, {"t": ("p", "y")}, ["ctr", "mse"], batch_size=batch_size, on_invalid="skip")
            assert result.rows_skipped == np.count_nonzero(~keep)
            expected = {"ctr/t": np.mean(y[keep]), "mse/t": np.mean((p[keep] - y[keep]) ** 2)}
            assert_close(result.values, expected)
    path.write_text(path.read_text() + "0.5,yes\n")  # invalid wherever it is: named, with its row
    message = r"200000\.csv: column 'y' \(labels of task 't'\): invalid value 'yes' at line 200,008;"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(path, {"t": ("p", "y")}, ["ctr"], batch_size=batch_size, on_invalid="skip")


def test_a_header_only_csv_is_an_empty_file(tmp_path, frame):
    part = frame.iloc[:500]
    pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text(",".join(frame.columns) + "\n")
    args = (TASKS, ["ctr", "auc", "gauc"])
    kw = {"weights": "w", "user": "user", "by": ["dataset"]}
    both = evaluate(tmp_path, *args, **kw)
    expected = {f"{m}/{t}": v for t in ("click", "like") for m, v in references(part, t).items() if m in args[1]}
    assert_close({k: both.values[k] for k in expected}, expected)
    assert both.rows_read == 500
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        alone = evaluate(tmp_path / "b.csv", *args, **kw)
        empty = pa.Table.from_pandas(part.iloc[:0], preserve_index=False)
        pq.write_table(empty, tmp_path / "empty.parquet")
        as_parquet = evaluate(tmp_path / "empty.parquet", *args, **kw)
    assert alone.rows_read == 0

    # the same records; the empty Parquet file's dataset column keeps its stored type, the CSV file's has none
    def plain(records):  # nan (every value of no rows) as None, to compare
        return [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()} for r in records]

    assert plain(alone.records) == plain(as_parquet.records)
    assert as_parquet.by_types["dataset"] == pa.Table.from_pandas(part).schema.field("dataset").type


def test_segment_columns_typed_differently_across_files_name_the_files(tmp_path):
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": ["x", "1"]}), tmp_path / "b.parquet")
    message = r"b\.parquet: column 'g' \(--by segment\) has type string, but in .*a\.parquet it has type int64"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])


def test_segment_types_that_unify_but_do_not_hold_the_values_name_the_files_and_types(tmp_path):
    """int64 above 2**53 next to double (or uint64 above 2**63 next to int64) unify as types, but the
    values do not fit: the message was "types that differ between files", naming no file or type."""
    cases = {
        "int64 and double": (pa.array([2**60, 2**60 + 1], pa.int64()), pa.array([0.5, 1.5]), "int64", "double"),
        "uint64 and int64": (pa.array([2**63 + 1, 3], pa.uint64()), pa.array([-1, 2]), "uint64", "int64"),
    }
    for first, second, first_type, both in cases.values():
        pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "c": first}), tmp_path / "a.parquet")
        pq.write_table(pa.table({"p": [0.4, 0.9], "y": [1, 0], "c": second}), tmp_path / "b.parquet")
        message = (
            rf"a\.parquet: column 'c' \(--by segment\) has type {first_type}, but in .*b\.parquet it has type {both}; "
            rf"Arrow reads both as {both}, which cannot hold every value of .*a\.parquet \(.*not in range.*\)\. "
            r"A segment column needs one type, holding all its values, in every file: write the column with one"
        )
        with pytest.raises(InvalidDataError, match=message):
            evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["c"])
    # uint64 would hold the uint64 file's values, but not the other's negative one: said so
    message = r"\(Integer value 9223372036854775809 not in range.*; nor does uint64, since .*b\.parquet holds the negative value -1: no integer type holds both\)"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["c"])
    # values that fit: one type, every segment its own rows
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "c": [5, 6]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.4, 0.9], "y": [1, 0], "c": [0.5, 1.5]}), tmp_path / "b.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["c"])
    assert {r["c"]: r["ctr"] for r in result.records[1:]} == {0.5: 1.0, 1.5: 0.0, 5.0: 0.0, 6.0: 1.0}


@pytest.mark.parametrize("formats", [("parquet", "parquet"), ("csv", "parquet"), ("parquet", "csv")])
def test_uint64_segments_above_int64_next_to_nonnegative_ints_are_uint64_with_their_values(tmp_path, formats):
    """Arrow unifies uint64 and int64 as int64, so uint64 values above 2**63 next to non-negative int64 values
    were refused, though uint64 holds both: now the column is uint64 and reports the user's values (a CSV
    file's text as its number), each segment's rows as pandas groups the Python ints."""
    rng = np.random.default_rng(5)
    big = [2**64 - 1, 2**63, 2**63 + 17]
    u = rng.choice(np.array([*big, 3, 0], dtype=np.uint64), 60)
    i = rng.choice(np.array([0, 3, 8, 2**62], dtype=np.int64), 50)
    tables = [
        pa.table({"p": rng.random(len(u)).round(6), "y": rng.integers(0, 2, len(u)), "c": pa.array(u)}),
        pa.table({"p": rng.random(len(i)).round(6), "y": rng.integers(0, 2, len(i)), "c": pa.array(i)}),
    ]
    for k, (table, file_format) in enumerate(zip(tables, formats)):
        _write(table, tmp_path / f"f{k}", file_format)
    frame = pd.concat([t.to_pandas() for t in tables])
    frame["c"] = [int(v) for t in tables for v in t.column("c").to_pylist()]  # Python ints: exact values
    want = {key: (len(part), float(part.y.mean())) for key, part in frame.groupby(frame["c"].astype(object))}
    assert any(key > 2**63 - 1 for key in want)
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=16)
    got = {r["c"]: (r["rows"], r["ctr"]) for r in result.records if r["segment"] != "all"}
    assert got.keys() == want.keys()
    for key, (rows, ctr) in want.items():
        assert got[key][0] == rows and got[key][1] == pytest.approx(ctr)
    assert result.to_arrow().schema.field("c").type == pa.uint64()
    assert sorted(result.to_arrow().column("c").drop_null().to_pylist()) == sorted(want)
    # a negative int64 next to uint64 above 2**63: no integer type holds both, refused naming them
    _write(pa.table({"p": [0.5], "y": [1], "c": pa.array([-1], pa.int64())}), tmp_path / "neg", formats[1])
    with pytest.raises(InvalidDataError, match=r"column 'c' \(--by segment\) has type .*cannot hold every value"):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["c"])


def _segment_refs(frame: pd.DataFrame, by: str) -> dict[str, float]:
    """ctr (numpy) and auc (sklearn) over all rows and on each segment's rows, keyed as .values writes them."""
    out: dict[str, float] = {}
    parts = [("", frame), *((f"/{by}={g}", part) for g, part in frame.groupby(by, sort=True))]
    for suffix, part in parts:
        y, p = part.y.to_numpy(np.float64), part.p.to_numpy(np.float64)
        out[f"ctr/t{suffix}"] = float(np.mean(y))
        out[f"auc/t{suffix}"] = roc_auc_score(y, p) if len(np.unique(y)) == 2 else np.nan
    return out


def test_a_file_s_segment_column_type_counts_whatever_its_row_count(tmp_path, monkeypatch):
    """An empty Parquet file whose --by column is double was ignored: beside text files it was accepted
    (no values to clash), beside int64 files the column stayed int64, while a file of one row made it double
    or failed. A file's type now counts whatever its rows (as in Arrow's concat_tables; pandas 2.1 deprecated
    leaving empty frames out of concat's dtype): a clash fails before anything is read, naming the empty file."""
    empty = pa.table({"p": pa.array([], pa.float64()), "y": pa.array([], pa.int64()), "g": pa.array([], pa.float64())})
    pq.write_table(empty, tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.2, 0.7, 0.4], "y": [0, 1, 1], "g": ["x", "y", "x"]}), tmp_path / "b.parquet")
    reads = _count_reads(monkeypatch)
    message = (
        r"b\.parquet: column 'g' \(--by segment\) has type string, but in .*a\.parquet it has type double "
        r"\(the file holds no rows; its types count all the same\)\. A segment column needs one type"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="g")
    assert reads == []  # from the footers alone
    # rows that are all skipped count as rows do: the file's type, not its surviving rows
    pq.write_table(pa.table({"p": [1.5], "y": [1], "g": [0.5]}), tmp_path / "a.parquet")
    with pytest.raises(InvalidDataError, match=r"has type string, but in .*a\.parquet it has type double"):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="g", on_invalid="skip")

    # beside integers: double, as with a file of rows (labels g=1.0), values those of each segment's rows
    frame = pd.DataFrame({"p": [0.2, 0.7, 0.4, 0.9, 0.3], "y": [0, 1, 1, 0, 1], "g": [1, 2, 1, 2, 1]})
    pq.write_table(empty, tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "b.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr", "auc"], by="g")
    assert result.by_types == {"g": pa.float64()}
    assert [r["g"] for r in result.records[1:]] == [1.0, 2.0]
    expected = _segment_refs(frame.assign(g=frame.g.astype(np.float64)), "g")
    assert list(expected) == ["ctr/t", "auc/t", "ctr/t/g=1.0", "auc/t/g=1.0", "ctr/t/g=2.0", "auc/t/g=2.0"]
    assert_close(result.values, expected)

    # a column of Arrow type null (an all-None or empty object column as pandas writes it) has no type
    pq.write_table(empty.set_column(2, "g", pa.array([], pa.null())), tmp_path / "a.parquet")
    assert evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="g").by_types == {"g": pa.int64()}

    # CSV files are typed from their values: a header-only one holds no type; one with values is typed
    # against every typed file, the empty ones included
    (tmp_path / "a.parquet").unlink()
    (tmp_path / "c.csv").write_text("p,y,g\n")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr", "auc"], by="g")
    assert result.by_types == {"g": pa.int64()}
    assert_close(result.values, {k.replace(".0", ""): v for k, v in expected.items()})
    pq.write_table(empty, tmp_path / "a.parquet")
    (tmp_path / "b.parquet").unlink()
    frame.to_csv(tmp_path / "c.csv", index=False)
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr", "auc"], by="g")
    assert result.by_types == {"g": pa.float64()}  # the empty file's double
    assert_close(result.values, expected)
    (tmp_path / "c.csv").write_text("p,y,g\n0.2,0,x\n0.7,1,y\n")
    message = (
        r"a\.parquet: column 'g' \(--by segment\) has type double \(the file holds no rows; its types count all "
        r"the same\), but in .*c\.csv it has type string\. A segment column needs one type in every file\. .*"
        r"it holds 'x', which is no number"
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="g")


@pytest.mark.parametrize(
    ("dtype", "stored", "shown", "fix"),
    [
        (
            pa.time64("ns"),
            [1, 2, 5],
            r"00:00:00\.000000001 and 00:00:00\.000000002 both read in Python as datetime",
            r"text, for example: table\.cast to a schema with pa\.string\(\)",
        ),
        (
            pa.date64(),
            [1, 2, 86_400_000],
            r"1970-01-01 \(stored as 1\) and 1970-01-01 \(stored as 2\) both read",
            r"the stored numbers, for example: table\.cast to a schema with pa\.int64\(\)",
        ),
    ],
)
def test_segment_values_written_alike_are_refused_not_merged_into_one_key(dtype, stored, shown, fix):
    """time64[ns] values a microsecond apart were written from Python's datetime.time (microseconds):
    three segments shared the key g=00:00:00 and .values kept one of them. Such a column is refused."""
    table = pa.table({"p": [0.2, 0.7, 0.4], "y": [0, 1, 1], "g": pa.array(stored, dtype)})
    message = rf"column 'g' \(--by segment\) has type {re.escape(str(dtype))}, and its distinct values {shown}"
    message += r".*two segments would share one key\. Convert the column first to a type that keeps them apart \("
    with pytest.raises(InvalidDataError, match=message + fix):
        evaluate(table, {"t": ("p", "y")}, ["ctr"], by="g")
    # the fix the message names: one segment per value, each its own rows
    fixed = table.set_column(2, "g", table["g"].cast(pa.string() if "text" in fix else pa.int64()))
    result = evaluate(fixed, {"t": ("p", "y")}, ["ctr"], by="g")
    assert len(result.values) == 1 + 3
    assert_close(result.values, {k: v for k, v in _segment_refs(fixed.to_pandas(), "g").items() if "ctr" in k})
    # microseconds are written apart: accepted as they are
    micro = table.set_column(2, "g", pa.array([1, 2, 5], pa.time64("us")))
    result = evaluate(micro, {"t": ("p", "y")}, ["ctr"], by="g")
    assert [r["segment"] for r in result.records[1:]] == [f"g=00:00:00.00000{i}" for i in (1, 2, 5)]


def _first_pair_written_alike(values: pa.Array) -> tuple[int, int] | None:
    """Reference: the first two positions whose Python values write the same text (str of as_py), by brute force."""
    seen: dict[str, int] = {}
    for position, value in enumerate(values.to_pylist()):
        text = "None" if value is None else str(value)
        if seen.setdefault(text, position) != position:
            return seen[text], position
    return None


@pytest.mark.parametrize(
    ("dtype", "unit"),
    [(pa.time64("ns"), 1000), (pa.date64(), 86_400_000), (pa.timestamp("ns"), 1), (pa.timestamp("us", "UTC"), 1)],
)
def test_a_million_distinct_segment_values_are_checked_without_a_loop_and_a_clash_is_still_found(dtype, unit):
    """The check that no two segment values share a key text ran a Python loop over every distinct value
    (seconds for a million timestamps); it now writes out only values stored closer than Python's resolution."""
    from torchmetrics_ext.evaluate.segments import SegmentIndex, _check_texts

    n = 1_000_000
    rng = np.random.default_rng(31)
    # distinct values, each at least one Python step from the next (a day apart: dates within Python's years)
    gaps = rng.integers(1, 2 if pa.types.is_date(dtype) else 4, n) * unit
    stored = np.cumsum(gaps) + (0 if pa.types.is_time(dtype) else -int(gaps.sum()) // 2)  # negatives too
    _check_texts("g", pa.array(stored, pa.int64()).view(dtype), dtype)  # accepted: a million segments
    if unit == 1:  # every stored number is written apart: nothing can clash
        return
    # two values inside one Python step, far down the column: refused, naming that pair
    clash = stored.copy()
    clash[700_000] = clash[700_001] + 1  # the values stay distinct: the next one is a step or more above
    values = pa.array(np.unique(clash), pa.int64()).view(dtype)
    first, second = _first_pair_written_alike(values.slice(690_000, 20_000))
    pair = values.slice(690_000, 20_000).take([first, second])
    with pytest.raises(InvalidDataError, match=re.escape(f"both read in Python as {pair[1].as_py()!r}")) as error:
        SegmentIndex(["g"], pa.table({"g": values}))
    assert str(pair.view(pa.int64())[0]) in str(error.value) or str(pair.cast(pa.string())[0]) in str(error.value)


@pytest.mark.parametrize(
    "dtype",
    [
        pa.time64("ns"),
        pa.time64("us"),
        pa.time32("ms"),
        pa.date64(),
        pa.date32(),
        pa.timestamp("ns"),
        pa.timestamp("ms", "Europe/Paris"),
        pa.duration("ns"),
        pa.duration("s"),
    ],
)
def test_segment_values_written_alike_match_a_brute_force_reference(dtype):
    """Random columns (clustered values, negatives, nulls, times outside a day): the pair refused is the
    brute-force reference's first pair of values whose Python texts are equal, or none is refused."""
    from torchmetrics_ext.evaluate.segments import _check_texts

    rng = np.random.default_rng(sum(map(ord, str(dtype))))  # one seed per type, the same in every run
    bits = dtype.bit_width
    for trial in range(60):
        n = int(rng.integers(1, 40))
        span = int(10 ** rng.integers(0, 9))
        low = -span if trial % 3 == 0 and not pa.types.is_time(dtype) else 0
        if pa.types.is_time(dtype) and trial % 7 == 0:  # outside one day: Python wraps it around
            low = -span
        stored = np.unique(rng.integers(low, span + 1, n) * int(10 ** rng.integers(0, 4)))
        if bits == 32:
            stored = stored[(stored > -(2**31)) & (stored < 2**31)]
        values = pa.array(stored, pa.int64()).cast(pa.int32() if bits == 32 else pa.int64()).view(dtype)
        if trial % 5 == 0:
            values = pa.concat_arrays([values, pa.nulls(1, dtype)])
        try:
            expected = _first_pair_written_alike(values)
        except (ValueError, OverflowError):  # a value Python cannot hold: not a segment anyway
            continue
        if expected is None:
            _check_texts("g", values, dtype)
            continue
        pair = values.take(list(expected))
        with pytest.raises(InvalidDataError, match=re.escape(f"both read in Python as {pair[1].as_py()!r}")):
            _check_texts("g", values, dtype)


@pytest.mark.parametrize(
    "dtype", [pa.decimal128(20, 10), pa.decimal128(9, 0), pa.decimal128(7, -3), pa.decimal256(40, 2), pa.binary(3)]
)
def test_decimal_and_fixed_size_binary_segments_are_checked_without_a_python_loop(dtype, monkeypatch):
    """_check_texts wrote every distinct decimal or fixed-size binary value from Python (0.3 s for 200k
    segments) although such values are always written apart; the brute-force reference agrees that no
    two distinct values of a column write alike, and the check now writes none of them out."""
    from torchmetrics_ext.evaluate import segments

    rng = np.random.default_rng(dtype.bit_width + getattr(dtype, "scale", 0))
    if pa.types.is_decimal(dtype):  # random unscaled integers, negatives and zero, at the column's scale
        digits = min(dtype.precision, 18)
        unscaled = np.unique(rng.integers(-(10**digits) + 1, 10**digits, 20_000))
        values = pa.array([decimal.Decimal(int(u)).scaleb(-dtype.scale) for u in unscaled], dtype)
    else:
        values = pa.array([bytes(b.tolist()) for b in np.unique(rng.integers(0, 256, (20_000, 3)), axis=0)], dtype)
    values = pa.concat_arrays([values, pa.nulls(1, dtype)])
    assert _first_pair_written_alike(values) is None  # the reference: every Python text distinct
    written = []
    monkeypatch.setattr(segments, "_value_text", lambda *a: written.append(a) or str(a[0]))
    segments._check_texts("g", values, dtype)
    assert written == []
    # the segments of such a column: one per value, its rows as pandas groups them
    table = pa.table(
        {"p": rng.random(6).round(3), "y": [0, 1, 1, 0, 1, 0], "g": values.take([0, 5, 0, 5, 9, len(values) - 1])}
    )
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by="g")
    frame = table.to_pandas()
    want = frame.groupby(frame["g"].astype(object).map(str), dropna=False).y.mean().to_dict()
    assert {str(r["g"]): r["ctr"] for r in result.records[1:]} == pytest.approx(want)


@pytest.mark.parametrize("ordered", [False, True])
def test_pandas_categorical_segments_come_in_category_order(ordered):
    """A pandas categorical --by column came out sorted by value; pandas' groupby gives the categories'
    order (observed=True, pandas 3's default: unused categories make no group), nulls last. An unordered Arrow
    dictionary column (a pyarrow.Table, a Parquet file) has no order of its own: sorted by value."""
    rng = np.random.default_rng(7)
    n = 400
    frame = pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, n),
            "y": rng.integers(0, 2, n),
            "size": pd.Categorical(
                rng.choice(["small", "medium", "large", None], n), categories=["small", "unused", "medium", "large"]
            ),
            "tier": pd.Categorical(rng.choice([3, 1, 2], n), categories=[3, 2, 1, 0], ordered=ordered),
            "country": rng.choice(["us", "de", "fr"], n),
        }
    )
    for by in (["size"], ["tier", "size"], ["country", "tier"]):
        result = evaluate(frame, {"t": ("p", "y")}, ["ctr", "auc"], by=by, batch_size=64)
        groups = frame.groupby(by, observed=True, dropna=False, sort=True)
        keys = [key if isinstance(key, tuple) else (key,) for key, _ in groups]
        keys = [tuple(None if v is None or v != v else v for v in key) for key in keys]  # pandas' NaN: None
        assert [tuple(r[b] for b in by) for r in result.records[1:]] == keys, by
        assert "unused" not in {r.get("size") for r in result.records} and 0 not in {
            r.get("tier") for r in result.records
        }
        for (_, part), record in zip(groups, result.records[1:]):
            y, p = part.y.to_numpy(np.float64), part.p.to_numpy()
            assert record["rows"] == len(part)
            assert record["ctr"] == pytest.approx(np.mean(y), rel=1e-12)
            assert record["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by="size")
    assert [r["size"] for r in result.records[1:]] == ["large", "medium", "small", None]


def _declared_order_frame(n=400, seed=17):
    """Rows with a ``tier`` column of a declared order that is not the values' sorted order (``unused``: no row)."""
    rng = np.random.default_rng(seed)
    order = ["mid", "low", "high", "unused"]
    return (
        pd.DataFrame(
            {
                "p": rng.uniform(0.01, 0.99, n),
                "y": rng.integers(0, 2, n),
                "tier": pd.Categorical(rng.choice(["low", "mid", "high", None], n), categories=order, ordered=True),
                "country": rng.choice(["us", "de", "fr"], n),
            }
        ),
        order,
    )


def _check_segments_as_pandas_groups(result, frame, by):
    """The segments, in order, and their values are pandas' ``groupby(observed=True)`` groups (sklearn AUC)."""
    groups = frame.groupby(by, observed=True, dropna=False, sort=True)
    keys = [key if isinstance(key, tuple) else (key,) for key, _ in groups]
    keys = [tuple(None if v is None or v != v else v for v in key) for key in keys]  # pandas' NaN: None
    assert [tuple(r[b] for b in by) for r in result.records[1:]] == keys, by
    for (_, part), record in zip(groups, result.records[1:]):
        y, p = part.y.to_numpy(np.float64), part.p.to_numpy()
        assert record["rows"] == len(part)
        assert record["ctr"] == pytest.approx(np.mean(y), rel=1e-12)
        assert record["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)


def test_ordered_arrow_dictionary_segments_come_in_their_declared_order():
    """An Arrow dictionary column marked ``ordered=True`` (a pyarrow.Table, e.g. from an ordered pandas categorical)
    came out sorted by value; its segments now follow its dictionary's order, as pandas' ``groupby(observed=True)``
    of the ordered categorical does, nulls last. An unordered one, or one whose chunks hold different
    dictionaries (no one declared order), is still sorted by value."""
    frame, order = _declared_order_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.field("tier").type.ordered and table.column("tier").chunk(0).dictionary.to_pylist() == order
    for by in (["tier"], ["country", "tier"], ["tier", "country"]):
        result = evaluate(table, {"t": ("p", "y")}, ["ctr", "auc"], by=by, batch_size=64)
        _check_segments_as_pandas_groups(result, frame, by)
    unordered = table.set_column(2, "tier", table.column("tier").cast(pa.dictionary(pa.int8(), pa.string())))
    result = evaluate(unordered, {"t": ("p", "y")}, ["ctr"], by="tier")
    assert [r["tier"] for r in result.records[1:]] == ["high", "low", "mid", None]
    ordered = pa.dictionary(pa.int8(), pa.string(), ordered=True)
    chunks = [
        pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array(["b", "a"]), ordered=True),
        pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array(["a", "b"]), ordered=True),
    ]
    y = [0, 1, 0, 1]
    mixed = pa.table({"p": [0.2, 0.6, 0.4, 0.8], "y": y, "g": pa.chunked_array(chunks, ordered)})
    result = evaluate(mixed, {"t": ("p", "y")}, ["ctr"], by="g")
    expected = pd.Series(y, dtype=np.float64).groupby(["b", "a", "a", "b"]).mean()  # sorted by value
    assert [(r["g"], r["ctr"]) for r in result.records[1:]] == list(expected.items())


def test_polars_enum_segments_come_in_their_declared_order():
    """A polars ``Enum`` column came out sorted by value; its segments now follow its categories' order (polars'
    own order for it), as pandas groups the same column as an ordered categorical. A polars ``Categorical`` has
    no declared order: sorted by value."""
    pl = pytest.importorskip("polars")
    frame, order = _declared_order_frame(seed=23)
    data = pl.from_pandas(frame.assign(tier=frame.tier.astype(object))).with_columns(
        pl.col("tier").cast(pl.Enum(order))
    )
    for by in (["tier"], ["country", "tier"]):
        result = evaluate(data, {"t": ("p", "y")}, ["ctr", "auc"], by=by, batch_size=64)
        _check_segments_as_pandas_groups(result, frame, by)
    categorical = data.with_columns(pl.col("tier").cast(pl.String).cast(pl.Categorical))
    result = evaluate(categorical, {"t": ("p", "y")}, ["ctr"], by="tier")
    assert [r["tier"] for r in result.records[1:]] == ["high", "low", "mid", None]


def test_to_pandas_gives_categorical_segment_columns_as_the_input_declared_them():
    """``to_pandas()`` gave a categorical ``by`` column as plain values; it is now a pandas Categorical of the
    input's categories (unused ones too) and ``ordered`` flag, as pandas' own ``groupby(observed=True)`` gives it:
    a pandas categorical, an ordered Arrow dictionary and a polars Enum (ordered, as polars converts it)."""
    rng = np.random.default_rng(5)
    n = 300
    frame = pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, n),
            "y": rng.integers(0, 2, n).astype(np.float64),
            "size": pd.Categorical(
                rng.choice(["small", "large", "medium"], n), categories=["small", "medium", "large", "huge"]
            ),
            "tier": pd.Categorical(rng.choice([3, 1, 2], n), categories=[3, 2, 1, 0], ordered=True),
            "country": rng.choice(["us", "de"], n),
        }
    )
    inputs = {"pandas": frame, "table": pa.Table.from_pandas(frame, preserve_index=False)}
    try:
        import polars as pl

        inputs["polars"] = pl.from_pandas(frame.assign(size=frame["size"].astype(object))).with_columns(
            pl.col("size").cast(pl.Enum(list(frame["size"].cat.categories)))
        )
    except ImportError:
        pass
    by = ["tier", "size", "country"]
    for name, data in inputs.items():
        out = evaluate(data, {"t": ("p", "y")}, ["ctr"], by=by).to_pandas()
        grouped = frame
        expected_types = dict(frame.dtypes[by])
        if name == "table":  # an unordered Arrow dictionary declares no order: plain text, as pandas reads it
            assert not isinstance(out["size"].dtype, pd.CategoricalDtype)
            expected_types["size"] = pd.Series(["small"]).dtype
            grouped = frame.astype({"size": expected_types["size"]})
        if name == "polars":  # an Enum is ordered (polars' own to_pandas says so too); polars has no int categorical
            expected_types["size"] = pd.CategoricalDtype(frame["size"].cat.categories, ordered=True)
            expected_types["tier"] = pd.Int64Dtype()
            grouped = frame.astype({"tier": np.int64})
        reference = grouped.groupby(by, observed=True).y.mean().rename("ctr").reset_index().astype(expected_types)
        assert {b: out[b].dtype for b in by} == expected_types, name
        assert out[by].iloc[0].isna().all()  # the overall row
        segments = out.iloc[1:].reset_index(drop=True)
        pd.testing.assert_frame_equal(segments[[*by, "ctr"]], reference, check_exact=False, rtol=1e-12)


def test_numeric_segment_columns_of_csv_files_are_numbers(tmp_path):
    """A CSV --by column whose every value is a number is read as one: it agrees with a Parquet
    file's integers, sorts 2 before 10, and an empty field is its null segment; text stays text."""
    frame = pd.DataFrame({"p": [0.2, 0.7, 0.4, 0.9, 0.3, 0.6], "y": [0, 1, 1, 1, 0, 0], "g": [10, 2, 10, 2, 3, 3]})
    frame.iloc[:3].to_csv(tmp_path / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame.iloc[3:], preserve_index=False), tmp_path / "b.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    by_segment = {r["g"]: r["ctr"] for r in result.records if r["segment"] != "all"}
    assert list(by_segment) == [2, 3, 10]  # numbers, in numeric order
    expected = frame.groupby("g")["y"].mean()
    for g, value in by_segment.items():
        assert value == pytest.approx(expected[g], rel=1e-12)
    (tmp_path / "c.csv").write_text("p,y,g\n0.5,1,\n0.25,0,7\n")
    (tmp_path / "b.parquet").unlink()
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["g"] for r in result.records if r["segment"] != "all"] == [2, 7, 10, None]
    (tmp_path / "d.csv").write_text("p,y,g\n0.5,1,x\n")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["g"] for r in result.records if r["segment"] != "all"] == ["", "10", "2", "7", "x"]


def test_csv_segment_ids_with_leading_zeros_stay_text_as_written(tmp_path, capsys):
    """A CSV --by column of ids written with leading zeros (zip codes) was read as integers: 007 and 7
    became one segment 7, 02134 the segment 2134. Such a column is text, each spelling its own
    segment, labelled as written; the reference is pandas' groupby on the text."""
    (tmp_path / "z.csv").write_text("p,y,c\n0.1,0,007\n0.9,1,7\n0.4,1,02134\n0.6,0,7\n0.2,1,+7\n")
    ref = pd.read_csv(tmp_path / "z.csv", dtype={"c": str}).groupby("c")["y"].agg(["size", "mean"])
    assert len(ref) == 4
    result = evaluate(str(tmp_path / "z.csv"), {"t": ("p", "y")}, ["ctr"], by="c")
    got = {r["c"]: (r["rows"], r["ctr"]) for r in result.records[1:]}
    assert got == {c: (row["size"], row["mean"]) for c, row in ref.iterrows()}
    assert {k for k in result.values if "/c=" in k} == {f"ctr/t/c={c}" for c in ["+7", "007", "02134", "7"]}
    assert result.by_types == {"c": pa.string()}
    args = ["evaluate", str(tmp_path / "z.csv"), "--task", "t=p:y", "--metrics", "ctr", "--by", "c", "--no-progress"]
    assert cli.main(args) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[-4:]] == [
        "c=+7",
        "c=007",
        "c=02134",
        "c=7",
    ]
    # next to a Parquet file's integers: an error naming both types, never a silent merge into 7
    pq.write_table(pa.table({"p": [0.3], "y": [1], "c": [7]}), tmp_path / "b.parquet")
    message = r"z\.csv: column 'c' \(--by segment\) has type string, but in .*b\.parquet it has type int64"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="c")


def test_csv_text_segment_next_to_parquet_integers_says_why_and_what_to_do(tmp_path):
    """A CSV --by column of ids with leading zeros (kept as text) next to a Parquet file's integers failed
    with "has type string" alone: the message now says which value made the CSV column text, the rule,
    and the two fixes; and a fix it names (the column written as text in the Parquet file) runs, matching
    pandas' groupby on the text."""
    (tmp_path / "a.csv").write_text("p,y,shop\n0.2,0,007\n0.7,1,008\n")
    pq.write_table(pa.table({"p": [0.3, 0.9], "y": [0, 1], "shop": [7, 8]}), tmp_path / "b.parquet")
    message = (
        r"b\.parquet: column 'shop' \(--by segment\) has type int64, but in .*a\.csv it has type string\. "
        r"A segment column needs one type in every file\. A CSV column is read as numbers only when its every "
        r"value, in every CSV file, is a plain number; column 'shop' of .*a\.csv: it holds '007', a number spelt "
        r"as only ids are .*kept as text.*write 'shop' as text in every file .*astype\(\"string\"\).*"
        r"or write the CSV values as plain numbers \(7, not 007\)\."
    )
    with pytest.raises(InvalidDataError, match=message):
        evaluate([str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")], {"t": ("p", "y")}, ["ctr"], by="shop")
    # no number at all: said so (' x2', spaced as ids are, is no number spelt as an id either)
    (tmp_path / "c.csv").write_text("p,y,shop\n0.2,0,x1\n0.3,1, x2\n")
    with pytest.raises(InvalidDataError, match=r"column 'shop' of .*c\.csv: it holds 'x1', which is no number") as got:
        evaluate([str(tmp_path / "b.parquet"), str(tmp_path / "c.csv")], {"t": ("p", "y")}, ["ctr"], by="shop")
    assert "spelt as only ids" not in str(got.value)
    frame = pd.read_parquet(tmp_path / "b.parquet")
    frame["shop"] = frame["shop"].astype("string")  # the fix the message names
    frame.to_parquet(tmp_path / "b.parquet")
    result = evaluate([str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")], {"t": ("p", "y")}, ["ctr"], by="shop")
    ref = pd.concat([pd.read_csv(tmp_path / "a.csv", dtype={"shop": str}), frame]).groupby("shop")["y"].mean()
    assert {r["shop"]: r["ctr"] for r in result.records[1:]} == ref.to_dict()


def test_csv_segment_types_follow_the_reader_and_the_typed_files(tmp_path):
    """The type of a CSV --by column is one every CSV file reads as (the reader's own parsing and nulls),
    that of a Parquet file's column when there is one."""
    (tmp_path / "a.csv").write_text("p,y,g\n0.5,1,nan\n0.25,0,1.5\n0.75,1,1.5\n")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    rows = {r["g"]: r["rows"] for r in result.records if r["segment"] != "all"}
    assert rows == {1.5: 2, None: 1}  # "nan" is a null field to the CSV reader: its own (null) segment
    (tmp_path / "a.csv").write_text("p,y,g\n0.5,1,18446744073709551615\n0.25,0,18446744073709551614\n")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["g"] for r in result.records if r["segment"] != "all"] == [2**64 - 2, 2**64 - 1]  # exact (uint64)
    (tmp_path / "a.csv").write_text("p,y,g\n0.5,1,1\n0.25,0,3\n")
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": ["1", "2"]}), tmp_path / "b.parquet")
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    rows = {r["g"]: r["rows"] for r in result.records if r["segment"] != "all"}
    assert rows == {"1": 2, "2": 1, "3": 1}  # the Parquet file's strings: the CSV's digits read as text
    pq.write_table(pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": pa.array([1, 2], pa.int32())}), tmp_path / "b.parquet")
    (tmp_path / "a.csv").write_text("p,y,g\n0.5,1,5000000000\n")  # beyond int32: int64, joined with the int32s
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["g"] for r in result.records if r["segment"] != "all"] == [1, 2, 5000000000]


def _count_reads(monkeypatch) -> list[tuple[str, int, tuple[str, ...] | None]]:
    """Every pass over a file's data: (file name, row group or 0, columns); a CSV header read has columns None."""
    from torchmetrics_ext.evaluate import sources

    reads: list[tuple[str, int, tuple[str, ...] | None]] = []
    csv_open, parquet_read = sources.CsvSource._open, sources.ParquetSource.read

    def counted_open(self, columns, batch_size, types):
        reads.append((os.path.basename(self.label), 0, None if columns is None else tuple(columns)))
        return csv_open(self, columns, batch_size, types)

    def counted_read(self, chunk, columns, batch_size, types=None):
        reads.append((os.path.basename(self.label), chunk.part, tuple(columns)))
        return parquet_read(self, chunk, columns, batch_size, types)

    monkeypatch.setattr(sources.CsvSource, "_open", counted_open)
    monkeypatch.setattr(sources.ParquetSource, "read", counted_read)
    return reads


def _by_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "p": rng.uniform(0.01, 0.99, n).round(6),
            "y": rng.integers(0, 2, n),
            "country": rng.choice(["de", "fr", "us"], n),
            "hour": rng.integers(0, 24, n),
            "price": rng.integers(0, 40, n) / 4,
        }
    )


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("by", [["country"], ["hour"], ["price"], ["country", "hour", "price"]])
def test_by_reads_every_file_once(tmp_path, monkeypatch, by):
    """--by read a CSV file 2-6 times (once per type tried, once to find the segments, once to score)
    and a Parquet file's --by columns twice: now each file is read once, in the scoring pass, with
    the same values. The reference is a pandas groupby (numbers typed as numbers) and sklearn."""
    frame = _by_frame(3000, 1)
    frame.iloc[:1500].to_csv(tmp_path / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame.iloc[1500:], preserve_index=False), tmp_path / "b.parquet", 500)
    reads = _count_reads(monkeypatch)
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr", "ne", "auc"], by=by, batch_size=256)
    data = [r for r in reads if r[2] is not None]  # the CSV header (first block) is read for its names
    columns = ("p", "y", *by)
    assert sorted(data) == [("a.csv", 0, columns)] + [("b.parquet", g, columns) for g in range(3)]
    expected = {}
    for key, part in frame.groupby(by):
        p, y = part["p"].to_numpy(), part["y"].to_numpy()
        both = 0 < y.sum() < len(y)  # NE and AUC are undefined on one class
        values = (y.mean(), ne_ref(p, y, np.ones(len(p))) if both else None, roc_auc_score(y, p) if both else None)
        expected[tuple(k.item() if isinstance(k, np.generic) else k for k in key)] = (len(part), *values)
    got = {tuple(r[b] for b in by): r for r in result.records if r["segment"] != "all"}
    assert list(got) == sorted(expected)  # numbers as numbers, in order
    for key, (rows, ctr, ne, auc) in expected.items():
        assert got[key]["rows"] == rows
        assert got[key]["ctr"] == pytest.approx(ctr, rel=1e-12)
        if auc is not None:
            assert got[key]["ne"] == pytest.approx(ne, rel=1e-9)
            assert got[key]["auc"] == pytest.approx(auc, rel=1e-9)


def test_csv_segment_numbers_that_float64_cannot_hold_stay_apart(tmp_path):
    """float64 was taken whenever the reader parsed every value: ids beyond uint64 (or 2**53 + 1 next
    to 0.5) became one float64, merging segments under a label that is in no row. The reference is
    pandas' groupby on the text."""
    ids = ["12345678901234567890123", "12345678901234567890124", "12345678901234567890123", "1.5", str(2**53 + 1)]
    p, y = [0.1, 0.8, 0.6, 0.3, 0.4], [0, 1, 1, 0, 1]
    pd.DataFrame({"p": p, "y": y, "g": ids}).to_csv(tmp_path / "a.csv", index=False)
    ref = pd.read_csv(tmp_path / "a.csv", dtype={"g": str}).groupby("g")["y"].agg(["size", "mean"])
    result = evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"], by=["g"])
    got = {r["g"]: (r["rows"], r["ctr"]) for r in result.records[1:]}
    assert got == {g: (row["size"], row["mean"]) for g, row in ref.iterrows()}  # text: no number merges
    # numbers float64 holds as written (17 significant digits, exponents) are still numbers
    values = [0.1, 0.30000000000000004, 1e-7, 2.0**60, 1e22]
    pd.DataFrame({"p": p, "y": y, "g": values}).to_csv(tmp_path / "a.csv", index=False)
    result = evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"], by=["g"])
    assert [r["g"] for r in result.records[1:]] == sorted(values)
    # next to a Parquet double column: the CSV's 2**53 + 1 is read as an integer, which no double holds
    (tmp_path / "a.csv").write_text(f"p,y,g\n0.1,0,{2**53 + 1}\n")
    pq.write_table(pa.table({"p": [0.8], "y": [1], "g": [float(2**53)]}), tmp_path / "b.parquet")
    message = r"a\.csv: column 'g' \(--by segment\) has type int64, but in .*b\.parquet it has type double"
    with pytest.raises(InvalidDataError, match=message):
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["g"])


def test_float_segments_merge_signed_zeros_and_nan_bit_patterns(tmp_path):
    """-0.0 is the segment 0.0 (as in pandas, numpy and SQL), every NaN bit pattern one NaN segment
    (apart from null, as Arrow keeps them), in a table and across a Parquet and a CSV file."""
    other_nan = np.array([0x7FF8000000000001, 0xFFF8000000000000], dtype=np.uint64).view(np.float64)
    bucket = np.array([np.nan, other_nan[0], other_nan[1], 1.5, 0.0, -0.0, 0.0, -0.0, 2.0, 2.0])
    null = np.arange(len(bucket)) >= 8
    y = np.array([0.0, 1, 0, 0, 0, 1, 1, 1, 1, 0])
    p = np.linspace(0.1, 0.9, len(y))
    # reference: numpy masks (IEEE comparison: 0.0 == -0.0)
    masks = {0.0: (bucket == 0) & ~null, 1.5: (bucket == 1.5) & ~null, "nan": np.isnan(bucket) & ~null, None: null}
    table = pa.table({"p": p, "y": y, "bucket": pa.array(bucket, mask=null)})
    pq.write_table(table.slice(0, 5), tmp_path / "a.parquet")  # the NaNs (CSV text "nan" reads as null)
    pa_csv.write_csv(table.slice(5), tmp_path / "b.csv")  # -0.0 written as text
    for data in (table, tmp_path):
        result = evaluate(data, {"t": ("p", "y")}, ["ctr"], by=["bucket"])
        got = {("nan" if r["bucket"] != r["bucket"] else r["bucket"]): r for r in result.records[1:]}
        assert list(got) == list(masks)  # numbers sorted, then NaN, then null
        for key, mask in masks.items():
            assert got[key]["rows"] == mask.sum()
            assert got[key]["ctr"] == pytest.approx(y[mask].mean(), rel=1e-12)
        assert not np.signbit(got[0.0]["bucket"]) and got[0.0]["segment"] == "bucket=0.0"


def test_float32_segment_labels_are_their_shortest_text_and_records_their_exact_value(tmp_path, capsys):
    """A float32 --by column's 0.1 is labelled ``0.1`` (the text that reads back as that float32, as
    numpy prints it), not its float64 expansion; the records keep the exact value."""
    third = np.float32(1) / np.float32(3)
    bucket = np.array([0.1, 0.1, third, third, 1e-8, 1e-8], dtype=np.float32)
    table = pa.table({"p": np.linspace(0.1, 0.9, 6), "y": [0.0, 1, 0, 1, 0, 1], "bucket": bucket})
    pq.write_table(table, tmp_path / "a.parquet")
    result = evaluate(tmp_path / "a.parquet", {"t": ("p", "y")}, ["ctr"], by=["bucket"])
    expected = sorted({repr(float(b)): str(b) for b in bucket}.items(), key=lambda kv: float(kv[0]))
    labels = [r["segment"] for r in result.records[1:]]
    assert labels == [f"bucket={text}" for _, text in expected] == ["bucket=1e-08", "bucket=0.1", "bucket=0.33333334"]
    assert [r["bucket"] for r in result.records[1:]] == [float(np.float32(v)) for v in (1e-8, 0.1, third)]
    assert set(result.values) == {"ctr/t", *(f"ctr/t/bucket={text}" for _, text in expected)}
    assert (
        cli.main(["evaluate", str(tmp_path / "a.parquet"), "--predictions", "p", "--labels", "y", "--by", "bucket"])
        == 0
    )
    assert "bucket=0.1 " in capsys.readouterr().out


def test_float16_segment_labels_are_their_shortest_text(tmp_path):
    """A float16 --by column's 0.1 was labelled with the float32 text of its value (``0.099975586``): the
    label is now the shortest text that reads back as that float16; the records keep the exact value."""
    values = [0.1, 0.2, 1 / 3, 1e-5]
    bucket = np.repeat(np.array(values, dtype=np.float16), 2)
    y = np.array([0.0, 1, 1, 1, 0, 0, 0, 1])
    table = pa.table({"p": np.linspace(0.1, 0.9, 8), "y": y, "bucket": bucket})
    pq.write_table(table, tmp_path / "a.parquet")
    result = evaluate(tmp_path / "a.parquet", {"t": ("p", "y")}, ["ctr"], by=["bucket"])
    texts = {0.1: "0.1", 0.2: "0.2", 1 / 3: "0.3333", 1e-5: "1e-05"}  # shortest decimals naming each float16
    assert all(np.float16(float(text)) == np.float16(v) for v, text in texts.items())  # they read back
    assert np.float16(0.333) != np.float16(1 / 3)  # and a digit fewer would not
    by_label = {r["segment"]: r for r in result.records[1:]}
    assert set(by_label) == {f"bucket={text}" for text in texts.values()}
    for v, text in texts.items():
        record = by_label[f"bucket={text}"]
        assert record["bucket"] == float(np.float16(v))  # the exact value
        assert record["ctr"] == pytest.approx(y[bucket == np.float16(v)].mean(), rel=1e-12)
    assert set(result.values) == {"ctr/t", *(f"ctr/t/bucket={text}" for text in texts.values())}


@pytest.mark.parametrize("other", ["empty_null_parquet", "all_null_parquet", "header_only_csv", "null_only_csv"])
def test_float16_segment_labels_do_not_depend_on_a_file_without_values(tmp_path, other):
    """An empty Parquet file whose --by column is of type null (pandas writes an empty object column so),
    a file whose column is all null, or a header-only CSV file turned a float16 column's labels
    (and .values keys) from 0.1 into the float32 text 0.099975586 (a CSV file of nulls also made
    the column double: 0.0999755859375): such a file holds no value and agrees with any type."""
    bucket = np.array([0.1, 0.1, 0.2, 0.2, np.nan, 0.5], dtype=np.float16)
    y = np.array([0, 1, 1, 1, 0, 1])
    pq.write_table(pa.table({"p": np.linspace(0.1, 0.9, 6), "y": y, "g": bucket}), tmp_path / "a.parquet")
    if other == "empty_null_parquet":
        empty = {"p": pa.array([], pa.float64()), "y": pa.array([], pa.int64()), "g": pa.array([], pa.null())}
        pq.write_table(pa.table(empty), tmp_path / "b.parquet")
    elif other == "all_null_parquet":
        nulls = {"p": [0.3, 0.6], "y": [1, 0], "g": pa.array([None, None], pa.null())}
        pq.write_table(pa.table(nulls), tmp_path / "b.parquet")
    elif other == "header_only_csv":
        (tmp_path / "b.csv").write_text("p,y,g\n")
    else:
        (tmp_path / "b.csv").write_text("p,y,g\n0.3,1,\n0.6,0,NA\n")
    other_file = next(path for path in tmp_path.iterdir() if path.stem == "b")
    result = evaluate([tmp_path / "a.parquet", other_file], {"t": ("p", "y")}, ["ctr"], by="g")
    # the reference: numpy over the float16 values, labelled with numpy's shortest float16 text
    expected = {"g=" + str(g): float(y[bucket == g].mean()) for g in np.unique(bucket[~np.isnan(bucket)])}
    expected["g=nan"] = float(y[np.isnan(bucket)].mean())
    if other in ("all_null_parquet", "null_only_csv"):  # their two rows: labels 1 and 0
        expected["g=None"] = 0.5
    assert list(expected)[:3] == ["g=0.1", "g=0.2", "g=0.5"]
    assert [r["segment"] for r in result.records[1:]] == list(expected)
    assert [r["ctr"] for r in result.records[1:]] == pytest.approx(list(expected.values()), rel=1e-12)
    assert set(result.values) == {"ctr/t", *(f"ctr/t/{label}" for label in expected)}
    assert result.to_arrow().schema.field("g").type == pa.float16()  # float16 values keep their type


def test_float16_segment_column_keeps_its_type_in_to_arrow_and_outputs(tmp_path):
    """A float16 --by column came out as float32 in to_arrow(), the .parquet output and to_pandas()
    (its values are read as float32, which holds them exactly): it is float16 there, as in the data,
    each value the float16 written, null on the overall rows; a float32 column stays float32."""
    g16 = np.array([0.1, 0.1, 0.5, np.nan, 1 / 3, 0.5], dtype=np.float16)
    y = np.array([0, 1, 1, 0, 1, 1])
    table = pa.table({"p": np.linspace(0.1, 0.9, 6), "y": y, "g": g16, "h": g16.astype(np.float32)})
    pq.write_table(table, tmp_path / "a.parquet")
    for data in (table, tmp_path / "a.parquet"):
        result = evaluate(data, {"t": ("p", "y")}, ["ctr"], by="g")
        arrow = result.to_arrow()
        assert arrow.schema.field("g").type == pa.float16()
        distinct = np.unique(g16[~np.isnan(g16)])  # numpy's sorted distinct float16 values, NaN last
        got = arrow.column("g").to_numpy(zero_copy_only=False)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got[1:], np.append(distinct, np.float16("nan")))
        assert arrow.column("g").null_count == 1  # the overall row
        result.write(str(tmp_path / "out.parquet"))
        written = pq.read_table(tmp_path / "out.parquet")
        assert written.schema.field("g").type == pa.float16()
        np.testing.assert_array_equal(written.column("g").to_numpy(zero_copy_only=False), got)  # NaN too
        assert result.to_pandas()["g"].dtype == np.float16
        other = evaluate(data, {"t": ("p", "y")}, ["ctr"], by="h")
        assert other.to_arrow().schema.field("h").type == pa.float32()


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("row_groups", [0, 1])
def test_an_empty_parquet_file_alone_keeps_its_segment_column_types(tmp_path, row_groups):
    """A Parquet file without rows (no row group, or one of 0 rows) gave its --by columns the type null in
    to_arrow(), the output files and to_pandas() (object): its stored types count whatever its row count,
    as they do next to files with rows, so a day without traffic writes the columns other days write."""
    schema = pa.schema([("p", pa.float64()), ("y", pa.int64()), ("g", pa.int64()), ("h", pa.string())])
    path = tmp_path / "empty.parquet"
    if row_groups:
        pq.write_table(schema.empty_table(), path)
    else:
        pq.ParquetWriter(path, schema).close()
    assert pq.ParquetFile(path).num_row_groups == row_groups
    result = evaluate(path, {"t": ("p", "y")}, ["ctr"], by=["g", "h"])  # ctr nan: no weight
    assert [(r["segment"], r["rows"], r["g"], r["h"]) for r in result.records] == [("all", 0, None, None)]
    expected = {"g": pa.int64(), "h": pa.string()}  # the file's own schema
    assert {name: result.to_arrow().schema.field(name).type for name in expected} == expected
    result.write(tmp_path / "out.parquet")
    assert {name: pq.read_schema(tmp_path / "out.parquet").field(name).type for name in expected} == expected
    assert result.to_pandas()["g"].dtype == pd.Int64Dtype()  # as for a file with rows
    # the same columns over a file with rows and the empty one
    pq.write_table(
        pa.table({"p": [0.2, 0.7], "y": [0, 1], "g": [3, 3], "h": ["x", "x"]}, schema=schema), tmp_path / "a.parquet"
    )
    both = evaluate([path, tmp_path / "a.parquet"], {"t": ("p", "y")}, ["ctr"], by=["g", "h"])
    assert both.to_arrow().schema == result.to_arrow().schema


def test_segment_labels_quote_text_holding_line_breaks_and_tabs(capsys, tmp_path):
    """A --by value holding a line break (a quoted CSV field may) was written raw in the labels, the
    keys and the printed table, whose row then spanned two lines; text that Python does not print as
    itself is now quoted as Python writes it, as text holding a separator is."""
    (tmp_path / "a.csv").write_text('p,y,q\n0.1,0,"c\nd"\n0.9,1,"a\tb"\n0.5,1,x\n0.3,0,"c\nd"\n')
    frame = pd.read_csv(tmp_path / "a.csv")
    expected = frame.groupby("q")["y"].mean()  # pandas: the values themselves
    result = evaluate(tmp_path / "a.csv", {"t": ("p", "y")}, ["ctr"], by="q")
    assert {r["q"]: r["ctr"] for r in result.records[1:]} == expected.to_dict()
    assert [r["segment"] for r in result.records[1:]] == [f"q={value!r}" for value in ("a\tb", "c\nd")] + ["q=x"]
    assert set(result.values) == {"ctr/t", "ctr/t/q='a\\tb'", "ctr/t/q='c\\nd'", "ctr/t/q=x"}
    table = result.format_table().splitlines()
    assert len(table) == 2 + len(result.records)  # a line per record
    assert cli.main(["evaluate", str(tmp_path / "a.csv"), "--task", "t=p:y", "--metrics", "ctr", "--by", "q"]) == 0
    out = capsys.readouterr().out
    assert "q='c\\nd'  " in out and "\nd " not in out


def test_segment_keys_and_labels_are_distinct_for_null_and_look_alike_text():
    """A null is written None; text that could read as another value (the text "None", text holding
    the separators "/" or ",", or starting with a quote) is quoted: no key of .values is lost."""
    pairs = [("None", "x"), (None, "x"), ("a/h=b", "c"), ("a", "b/h=c"), ("u, h=v", "w"), ("u", "v, h=w"), ("'q'", "x")]
    pairs += [("q", "x"), ("", "x")]
    frame = pd.DataFrame(
        {
            "g": pd.Series([g for g, _ in pairs] * 2, dtype=object),
            "h": pd.Series([h for _, h in pairs] * 2, dtype=object),
            "p": np.linspace(0.1, 0.9, 2 * len(pairs)),
            "y": np.r_[np.zeros(len(pairs)), np.ones(len(pairs) - 3), np.zeros(3)],
        }
    )
    groups = frame.groupby(["g", "h"], dropna=False)["y"].mean()  # pandas: None and "None" apart
    expected = {(None if not isinstance(g, str) else g, h): value for (g, h), value in groups.items()}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["g", "h"])
    records = result.records[1:]
    assert len(records) == len(expected) == len(pairs)
    assert len({r["segment"] for r in records}) == len(pairs)  # labels: one per segment
    assert len(result.values) == 1 + len(pairs)  # keys: none lost
    for record in records:
        assert record["ctr"] == pytest.approx(expected[(record["g"], record["h"])], rel=1e-12)
        assert result.values[f"ctr/t{segment_key(record)}"] == record["ctr"]
    assert result.values["ctr/t/g='None'/h=x"] == pytest.approx(expected[("None", "x")], rel=1e-12)
    assert result.values["ctr/t/g=None/h=x"] == pytest.approx(expected[(None, "x")], rel=1e-12)
    assert {"g='a/h=b', h=c", "g=a, h='b/h=c'", "g=\"'q'\", h=x", "g=q, h=x", "g=, h=x"} <= {
        r["segment"] for r in records
    }


def segment_key(record: dict) -> str:
    """The .values suffix of a record, written here from the documented rule."""

    def text(value: object) -> str:
        if value is None:
            return "None"
        if value == "None" or value.startswith(("'", '"')) or "/" in value or "," in value:
            return repr(value)
        return value

    return f"/g={text(record['g'])}/h={text(record['h'])}"


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_a_text_segment_column_typed_null_in_a_file_or_slice_is_its_null_segment(tmp_path, text_type):
    """A file whose text --by column holds only nulls (Arrow type null: pandas writes an all-None
    column so) or a frame slice that does is the null segment, as for any other type."""
    frame = pd.DataFrame(
        {
            "p": [0.1, 0.2, 0.3, 0.9, 0.4, 0.8],
            "y": [0.0, 1, 0, 1, 1, 1],
            "country": pd.Series([None, None, "fr", "us", "us", None], dtype=object),
        }
    )
    groups = frame.groupby("country", dropna=False)["y"].agg(["size", "mean"])
    expected = {(k if isinstance(k, str) else None): (n, m) for k, (n, m) in groups.iterrows()}
    pq.write_table(
        pa.table({"p": frame.p[:2], "y": frame.y[:2], "country": pa.array([None, None], pa.null())}),
        tmp_path / "day1.parquet",
    )
    pq.write_table(
        pa.table({"p": frame.p[2:], "y": frame.y[2:], "country": pa.array(frame.country[2:], text_type)}),
        tmp_path / "day2.parquet",
    )
    for data, batch_size in ((tmp_path, 65_536), (frame, 2)):  # the frame's first slice is all None
        result = evaluate(data, {"t": ("p", "y")}, ["ctr"], by=["country"], batch_size=batch_size)
        got = {r["country"]: (r["rows"], r["ctr"]) for r in result.records[1:]}
        assert list(got) == ["fr", "us", None]
        for key, (rows, ctr) in expected.items():
            assert got[key][0] == rows
            assert got[key][1] == pytest.approx(ctr, rel=1e-12)


def _many_columns(case: str) -> tuple[pd.DataFrame, list[str]]:
    """Segment columns whose distinct counts multiply past 2**63 (one int64 mixed-radix key would wrap)."""
    rng = np.random.default_rng(63)
    if case == "13 random id columns":  # 47 rows: 47**13 combinations, plus text with nulls
        n = 47
        cols = {f"c{j}": rng.integers(0, n, n) for j in range(13)}
        cols["s"] = rng.choice(np.array(["a", "b", None], dtype=object), n)
    else:  # 300 rows, every column a permutation: 300**8 combinations, each row its own segment
        n = 300
        cols = {f"c{j}": rng.permutation(n) for j in range(8)}
    frame = pd.DataFrame({"p": rng.random(n), "y": np.arange(n, dtype=np.float64), **cols})
    return frame, list(cols)


@pytest.mark.parametrize("case", ["13 random id columns", "8 permutation columns"])
def test_many_large_segment_columns_equal_a_pandas_groupby(tmp_path, case):
    """Every row lands in its own combination's segment (label = row number, so a stray row shows),
    in sorted order with nulls last, streamed in small batches over several files as in one table."""
    frame, by = _many_columns(case)
    sizes = [frame[b].nunique(dropna=False) for b in by]
    assert float(np.prod(sizes, dtype=np.float64)) > 2.0**63
    groups = frame.groupby(by, dropna=False, sort=False)
    expected = {
        tuple(None if isinstance(v, float) and np.isnan(v) else v for v in key): (
            len(part),
            part.y.mean(),
            np.mean((part.p - part.y) ** 2),
        )
        for key, part in groups
    }
    order = sorted(expected, key=lambda key: tuple((v is None, v if v is not None else "") for v in key))
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, tmp_path / f"part-{i}.parquet", row_group_size=7)
    inputs = {"table": (pa.Table.from_pandas(frame, preserve_index=False), 65_536), "files": (tmp_path, 5)}
    for name, (data, batch_size) in inputs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            result = evaluate(data, {"t": ("p", "y")}, ["label_average", "mse"], by=by, batch_size=batch_size)
        records = result.records[1:]
        assert [tuple(r[b] for b in by) for r in records] == order, name
        for record in records:
            rows, label_average, mse = expected[tuple(record[b] for b in by)]
            assert record["rows"] == rows, name
            assert record["label_average"] == pytest.approx(label_average, rel=1e-12), name
            assert record["mse"] == pytest.approx(mse, rel=1e-12), name


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_segment_lookups_do_not_grow_with_batches_times_distinct_values(tmp_path, monkeypatch, suffix):
    """Each record batch's segments were looked up (pc.index_in, which hashes every value of its value
    set) against every distinct value of the column, two or three times per batch: a file of many
    batches and many distinct ids took (batches x distinct) time. The lookups now hash each column's
    values a fixed number of times, whatever the number of batches (counted, not timed); the values
    are those of a pandas groupby."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(3)
    n = 4000
    frame = pd.DataFrame({"p": rng.random(n), "y": rng.integers(0, 2, n).astype(float), "c": rng.integers(0, 1500, n)})
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, row_group_size=64)
    index_in = pc.index_in
    hashed = []  # values hashed per call: the size of its value set

    def counted(values, value_set, *args, **kwargs):
        hashed.append(len(value_set))
        return index_in(values, value_set, *args, **kwargs)

    monkeypatch.setattr(pc, "index_in", counted)
    reference = frame.groupby("c")["y"]
    expected = dict(zip(reference.mean().index.tolist(), zip(reference.size().tolist(), reference.mean().tolist())))
    work = {}
    for batch_size in (64, 1_000_000):  # 63 batches, then one
        hashed.clear()
        result = evaluate(path, {"t": ("p", "y")}, ["ctr"], by=["c"], batch_size=batch_size)
        got = {r["c"]: (r["rows"], r["ctr"]) for r in result.records if r["segment"] != "all"}
        assert got == {k: (rows, pytest.approx(ctr, rel=1e-12)) for k, (rows, ctr) in expected.items()}
        work[batch_size] = (len(hashed), sum(hashed))
    assert work[64] == work[1_000_000]
    assert work[64][1] <= 3 * len(expected)  # a few hashes of the distinct values, not one per batch


def test_a_segment_value_or_combination_not_discovered_is_an_error():
    """Ids come from the discovered combinations: a value or combination that appeared later (the
    files changed while reading) is an error, never a neighbour's id; also past a dense step."""
    from torchmetrics_ext.evaluate.segments import SegmentIndex

    rng = np.random.default_rng(1)
    combos = pa.table({f"c{j}": rng.permutation(300) for j in range(8)})  # 300**8 > 2**63: dense steps
    index = SegmentIndex(combos.column_names, combos)
    batch = {name: combos.column(name) for name in combos.column_names}
    expected = np.argsort(np.lexsort([combos.column(n).to_numpy() for n in reversed(combos.column_names)]))
    np.testing.assert_array_equal(index.encode(batch), expected)  # position in lexicographic order
    swapped = {**batch, "c7": pa.array(np.roll(combos.column("c7").to_numpy(), 1))}  # known values, new combinations
    with pytest.raises(InvalidDataError, match="the --by columns hold a combination that was not there"):
        index.encode(swapped)
    with pytest.raises(InvalidDataError, match="column 'c0' \\(--by segment\\) holds a value that was not there"):
        index.encode({**batch, "c0": pa.array(np.full(300, 1000))})


def test_a_directory_skips_hidden_and_underscore_files_and_subdirectories(tmp_path):
    """Below a directory, names starting with "." or "_" are skipped (pyarrow.dataset's rule), for
    subdirectories too (Jupyter checkpoints, Spark's _temporary); the directory named may be hidden."""
    root = tmp_path / "_logs"  # the directory named itself: read whatever its name
    files = {
        "day1.csv": "p,y\n0.1,0\n0.9,1\n",
        "sub/day2.csv": "p,y\n0.2,1\n",
        ".ipynb_checkpoints/day1-checkpoint.csv": "p,y\n0.1,1\n",
        "_temporary/0/part-0.csv": "p,y\n0.1,1\n",
        "sub/.hidden/x.csv": "p,y\n0.1,1\n",
        "_skipped.csv": "p,y\n0.1,1\n",
        ".x.csv": "p,y\n0.1,1\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    expected = pa.concat_tables(pa_csv.read_csv(root / name) for name in ("day1.csv", "sub/day2.csv"))
    result = evaluate(root, {"t": ("p", "y")}, ["ctr"])
    assert result.rows_read == expected.num_rows == 3
    assert result.values["ctr/t"] == pytest.approx(np.mean(expected.column("y").to_numpy()), rel=1e-12)
    # a file or glob named explicitly reads what it names
    assert evaluate(root / "_skipped.csv", {"t": ("p", "y")}, ["ctr"]).rows_read == 1
    assert evaluate(str(root / "_temporary" / "*" / "*.csv"), {"t": ("p", "y")}, ["ctr"]).rows_read == 1
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "_part.csv").write_text("p,y\n0.1,1\n")
    with pytest.raises(
        InvalidDataError, match=re.escape("no Parquet or CSV file (names starting with '.' or '_' are skipped)")
    ):
        evaluate(tmp_path / "only", {"t": ("p", "y")}, ["ctr"])


def test_a_glob_matching_directories_reads_them_as_directories(tmp_path, capsys):
    """`logs/2024-06-*/` (the docs' example) used to be "no such file, directory or glob match"."""
    rng = np.random.default_rng(2)
    parts = {name: pa.table({"p": rng.random(6), "y": rng.integers(0, 2, 6)}) for name in ("a", "b", "c")}
    logs = tmp_path / "logs"
    for name, directory in (("a", "2024-06-01"), ("b", "2024-06-02/hour=3")):
        (logs / directory).mkdir(parents=True)
        pq.write_table(parts[name], logs / directory / f"{name}.parquet")
    pa_csv.write_csv(parts["c"], logs / "2024-06-02" / "c.csv")
    bad = pa.table({"p": [7.0], "y": [1]})  # read, it would fail the run: hidden, never read
    (logs / "2024-06-02" / "_temporary").mkdir()
    pq.write_table(bad, logs / "2024-06-02" / "_temporary" / "x.parquet")
    pq.write_table(bad, logs / "2024-06-01" / ".x.parquet")
    (logs / "_temporary").mkdir()
    pq.write_table(bad, logs / "_temporary" / "x.parquet")
    (logs / "2024-07-01").mkdir()  # matched by some globs, holds nothing
    (logs / "_SUCCESS").write_text("")  # matched by "*", "**": skipped (its name starts with "_")
    every = pa.concat_tables(parts.values())
    y, p = every.column("y").to_numpy(), every.column("p").to_numpy()
    expected = {"ctr/t": np.mean(y), "auc/t": roc_auc_score(y, p)}
    for pattern in ("2024-06-*", "2024-06-*/", "2024-*", "*", "**", "2024-06-0[12]"):
        result = evaluate(str(logs / pattern), {"t": ("p", "y")}, ["ctr", "auc"])
        assert result.rows_read == 18, pattern  # every file once (** matches directories and their files)
        assert_close(result.values, expected)
    args = ["evaluate", str(logs / "2024-06-*") + "/", "--task", "t=p:y", "--metrics", "ctr", "--no-progress"]
    assert cli.main(args) == 0 and "18 rows read" in capsys.readouterr().out
    # a directory whose own name starts with "_" or "." is read when the glob asks for such names
    for pattern in ("_temp*", "*/_temporary", "2024-06-0[2]/_*"):
        assert evaluate(str(logs / pattern), {"t": ("p", "y")}, ["ctr"], on_invalid="skip").rows_read == 1
    with pytest.raises(InvalidDataError, match=r"2024-07-\*: the glob matches 1 path\(s\) but no Parquet or CSV"):
        evaluate(str(logs / "2024-07-*"), {"t": ("p", "y")}, ["ctr"])


def test_a_glob_skips_the_files_of_other_formats_it_matches(tmp_path):
    """`out/*` matching notes.txt (or `out/_*` matching _SUCCESS) aborted the run with "unknown format",
    though the docs said such globs read their matches; a directory skips such files."""
    out = tmp_path / "out"
    (out / "_temporary").mkdir(parents=True)
    part, scratch = pa.table({"p": [0.2, 0.7, 0.4], "y": [0, 1, 1]}), pa.table({"p": [0.9], "y": [0]})
    pq.write_table(part, out / "part-0.parquet")
    pq.write_table(scratch, out / "_temporary" / "x.parquet")
    (out / "_SUCCESS").write_text("")
    (out / "notes.txt").write_text("not a table\n")
    for pattern, table in (("*", part), ("_*", scratch), ("**", part), ("[pn]*", part)):
        result = evaluate(str(out / pattern), {"t": ("p", "y")}, ["ctr"])
        assert result.rows_read == table.num_rows, pattern
        assert result.values["ctr/t"] == pytest.approx(np.mean(table.column("y").to_numpy()), rel=1e-12)
    (out / "_temporary" / "x.parquet").unlink()
    with pytest.raises(InvalidDataError, match=r"_\*: the glob matches 2 path\(s\) but no Parquet or CSV file \(files"):
        evaluate(str(out / "_*"), {"t": ("p", "y")}, ["ctr"])
    with pytest.raises(InvalidDataError, match=r"notes\.txt: unknown format; expected a file ending in"):
        evaluate(out / "notes.txt", {"t": ("p", "y")}, ["ctr"])  # a file named is read, or refused


def test_every_refused_metric_name_is_named_at_once(dataset, capsys):
    """`--metrics ndgc@10,ne,aucc,recall` named only 'ndgc@10': one run per mistake to find them all."""
    names = ["ndgc@10", "ne", "aucc", "recall"]
    with pytest.raises(ValueError) as caught:
        evaluate(dataset, TASKS, names)
    text = str(caught.value)
    assert text.startswith("3 metric names are refused: Unknown metric name 'ndgc@10' (did you mean 'ndcg@10'?); ")
    assert "Unknown metric name 'aucc' (did you mean 'auc'?); Metric name 'recall' needs a cutoff" in text
    assert text.count("; known names: ne, ") == 1 and "'ne'" not in text
    # the command line says the same, with status 2
    code = cli.main(["evaluate", str(dataset), "--task", "t=p_click:y_click", "--metrics", ",".join(names)])
    assert code == 2 and "error: 3 metric names are refused" in capsys.readouterr().err


def test_data_of_a_kind_not_taken_says_how_to_convert_it(dataset):
    """A LazyFrame, a RecordBatch, a dict of columns... were refused only with "got LazyFrame"."""
    import pyarrow.dataset as pa_dataset

    pl = pytest.importorskip("polars")
    table = pa.table({"p_click": [0.1, 0.9], "y_click": [0, 1]})
    files = pa_dataset.dataset(dataset)
    cases = [
        (pl.DataFrame({"p": [0.1]}).lazy(), "got LazyFrame: collect it first (`data.collect()`)."),
        (table.to_batches()[0], "got RecordBatch: make it a table (`pyarrow.Table.from_batches([data])`)."),
        (table.to_reader(), "got RecordBatchReader: read it as a table (`data.read_all()`)."),
        (files, "got FileSystemDataset: pass its files (`data.files`, streamed) or a table (`data.to_table()`)."),
        ({"p_click": [0.1]}, "got dict: build a table from it (`pyarrow.table(data)` or `pandas.DataFrame(data)`)."),
        (np.zeros((2, 2)), "got ndarray: build a table with named columns (`pandas.DataFrame(array, columns=[...])`)."),
    ]
    for data, hint in cases:
        with pytest.raises(TypeError, match=re.escape(hint)):
            evaluate(data, {"click": ("p_click", "y_click")})
    # the advice works: the dataset's files give the values of the directory itself
    expected = evaluate(dataset, TASKS, ["auc"], progress=False).values
    assert evaluate(files.files, TASKS, ["auc"], progress=False).values == expected


@pytest.mark.parametrize(
    ("given", "meant"),
    [("p_clik", "p_click"), ("P_Click", "p_click"), (" p_click ", "p_click"), ("Country", "country")],
)
def test_a_missing_column_names_the_one_it_most_likely_meant(tmp_path, given, meant):
    """In a log table of hundreds of columns the list of found columns hid the one misspelt."""
    columns = {f"feature_{i:03d}": [0.5, 0.5] for i in range(300)}
    table = pa.table({**columns, "p_click": [0.2, 0.7], "y_click": [0, 1], "country": ["fr", "us"]})
    pq.write_table(table, tmp_path / "wide.parquet")
    assert meant in table.column_names and given not in table.column_names
    tasks = {"click": ("p_click", "y_click")}
    if given == "Country":
        call = {"tasks": tasks, "by": [given]}
    else:
        call = {"tasks": {"click": (given, "y_click")}}
    with pytest.raises(InvalidDataError, match=re.escape(f"] (did you mean {meant!r}?).")):
        evaluate(tmp_path / "wide.parquet", metrics=["ctr"], progress=False, **call)
    with pytest.raises(InvalidDataError, match=r"column 'zzz' .* is missing; found columns \[.*\]\.$"):
        evaluate(tmp_path / "wide.parquet", {"click": ("zzz", "y_click")}, ["ctr"])  # nothing close: no guess


def test_a_missing_column_is_never_guessed_as_a_column_read_in_another_role(tmp_path, capsys):
    """No `y_like` column was told "did you mean 'y_click'?", the click task's labels: reading them as the
    like task's would score the click task twice. A column no role reads is still suggested."""
    pq.write_table(pa.table({"p_click": [0.2, 0.7], "y_click": [0, 1], "p_like": [0.4, 0.1]}), tmp_path / "x.parquet")
    tasks = {"click": ("p_click", "y_click"), "like": ("p_like", "y_like")}
    with pytest.raises(
        InvalidDataError, match=r"column 'y_like' \(labels of task 'like'\) is missing; found columns \[.*\]\.$"
    ):
        evaluate(tmp_path / "x.parquet", tasks, ["ctr"], progress=False)
    args = ["evaluate", str(tmp_path / "x.parquet"), "--task", "click=p_click:y_click", "--task", "like=p_like:y_like"]
    assert cli.main([*args, "--no-progress"]) == 2
    assert "did you mean" not in capsys.readouterr().err
    pq.write_table(
        pa.table({"p_click": [0.2, 0.7], "y_click": [0, 1], "p_like": [0.4, 0.1], "y_likes": [1, 0]}),
        tmp_path / "x.parquet",
    )
    with pytest.raises(InvalidDataError, match=re.escape("] (did you mean 'y_likes'?).")):
        evaluate(tmp_path / "x.parquet", tasks, ["ctr"], progress=False)


def test_missing_paths_and_bad_arguments(tmp_path, dataset):
    with pytest.raises(InvalidDataError, match="no such file, directory or glob match"):
        evaluate(tmp_path / "nope-*.parquet", TASKS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidDataError, match="directory holds no Parquet or CSV file"):
        evaluate(tmp_path / "empty", TASKS)
    with pytest.raises(TypeError, match="Expected `data` to be a path"):
        evaluate(42, TASKS)
    with pytest.raises(ValueError, match="Unknown metric name 'nope'; known names: ne, "):
        evaluate(dataset, TASKS, ["nope"])
    with pytest.raises(ValueError, match="'gauc' averages over users: name the user id column"):
        evaluate(dataset, TASKS, ["gauc"])
    with pytest.raises(ValueError, match="'ndcg@10' ranks within sessions: name the session id column"):
        evaluate(dataset, TASKS, ["ndcg@10"])
    with pytest.raises(ValueError, match="Expected a task as NAME=PREDICTIONS:LABELS"):
        parse_task("click=p_click")
    with pytest.raises(ValueError, match="Expected distinct task names"):
        evaluate(dataset, ["a=p_click:y_click", "a=p_like:y_like"])
    with pytest.raises(ValueError, match="Expected `on_invalid` to be one of"):
        evaluate(dataset, TASKS, on_invalid="ignore")
    with pytest.raises(ValueError, match="Expected `batch_size` to be a positive integer"):
        evaluate(dataset, TASKS, batch_size=0)
    with pytest.raises(ValueError, match="cannot be both a segment"):
        evaluate(dataset, TASKS, by=["w"], weights="w")
    with pytest.raises(InvalidDataError, match=r"column 'nope' \(--by segment\) is missing"):
        evaluate(dataset, TASKS, by=["nope"])


def test_natural_arguments_and_exotic_segment_types_get_clear_answers():
    """by=None is no segments (as weights=None is no weights); tasks as (predictions, labels) tuples
    is a TypeError showing the accepted forms; string/binary views are segments like strings; a type
    Arrow cannot group or sort (pandas Period and Interval, ...) is an error naming the column."""
    frame = pd.DataFrame({"p": [0.1, 0.9, 0.4, 0.3], "y": [0.0, 1, 1, 0], "g": ["b", "a", "b", "b"]})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    plain = evaluate(table, {"t": ("p", "y")}, ["ctr"])
    assert evaluate(table, {"t": ("p", "y")}, ["ctr"], by=None).records == plain.records
    assert plain.values == {"ctr/t": frame.y.mean()}
    with pytest.raises(TypeError, match=r"a list holding \('p', 'y'\) \(tuple\); e.g. \{'click'"):
        evaluate(table, [("p", "y")], ["ctr"])
    expected = frame.groupby("g")["y"].mean()
    for view, values in ((pa.string_view(), frame.g.tolist()), (pa.binary_view(), [g.encode() for g in frame.g])):
        viewed = table.set_column(2, "g", pa.array(values, view))
        result = evaluate(viewed, {"t": ("p", "y")}, ["ctr"], by=["g"])
        got = {(r["g"].decode() if isinstance(r["g"], bytes) else r["g"]): r["ctr"] for r in result.records[1:]}
        assert got == pytest.approx(expected.to_dict(), rel=1e-12)
    exotic = {
        "per": pd.Series(pd.period_range("2024-01", periods=4, freq="M")),
        "iv": pd.Series(pd.interval_range(0, 4)),
    }
    for name, column in exotic.items():
        with pytest.raises(InvalidDataError, match=f"column '{name}' \\(--by segment\\) has type extension<"):
            evaluate(frame.assign(**{name: column}), {"t": ("p", "y")}, ["ctr"], by=[name])
    interval = table.append_column("d", pa.array([(1, 2, 3)] * 4, pa.month_day_nano_interval()))
    with pytest.raises(InvalidDataError, match="column 'd' \\(--by segment\\) has type month_day_nano_interval"):
        evaluate(interval, {"t": ("p", "y")}, ["ctr"], by=["d"])


@pytest.mark.parametrize("name", ["task", "rows", "segment", "ctr"])
def test_a_segment_column_named_like_a_record_field_is_rejected(tmp_path, capsys, name):
    """Records hold 'segment', 'task', 'rows' and one field per metric: a --by column of such a name
    would be overwritten in them (and lost from .values), so it is refused before anything is read."""
    table = pa.table({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 0], name: ["a", "a", "b", "b"]})
    message = rf"Segment column '{name}' \(by\) has the name of a field of the result records"
    with pytest.raises(ValueError, match=message):
        evaluate(table, {"click": ("p", "y")}, ["ctr", "auc"], by=[name])
    pq.write_table(table, tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--task", "click=p:y", "--metrics", "ctr,auc", "--by", name]
    assert cli.main([*args, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert re.search(message, err) and "Traceback" not in err and out == ""
    # any other name is a segment column like the others, its values unchanged
    table = table.rename_columns(["p", "y", "kind"])
    result = evaluate(table, {"click": ("p", "y")}, ["ctr"], by=["kind"])
    assert result.values == {"ctr/click": 0.5, "ctr/click/kind=a": 0.5, "ctr/click/kind=b": 0.5}
    assert [(r["segment"], r["kind"], r["task"], r["rows"]) for r in result.records] == [
        ("all", None, "click", 4),
        ("kind=a", "a", "click", 2),
        ("kind=b", "b", "click", 2),
    ]


_IDS_HINT = "Number text ids first, e.g. pandas `df[col] = df[col].astype('category').cat.codes`."


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        (
            "frame",
            {"tasks": {"t": ("p", "y")}, "metrics": "ctr, auc"},
            ValueError,
            "Expected `metrics` to be a non-empty list of metric names, got 'ctr, auc' (as a list: ['ctr', 'auc']).",
        ),
        (
            "frame",
            {"tasks": {"t": ("p", "y")}, "metrics": ""},
            ValueError,
            "Expected `metrics` to be a non-empty list of metric names, got ''.",
        ),
        (
            "frame",
            {"tasks": ("p", "y")},
            ValueError,
            "Tasks 'p' and 'y' read the same columns (predictions 'prediction', labels 'label'), so they would "
            "report the same values; give each task its own prediction or label column (--task "
            "NAME=PREDICTIONS:LABELS); a task given as a plain name reads the default columns 'prediction' and "
            "'label' (as in RecMetricModule.from_config): name each task's columns, {'name': 'p', "
            "'prediction_name': ..., 'label_name': ...} or 'p=PREDICTIONS:LABELS'; for one task reading columns "
            "('p', 'y'): {'task': ('p', 'y')}.",
        ),
        (
            "frame",
            {"tasks": {"t": ("p", "y")}, "metrics": ["gauc"], "user": "u"},
            InvalidDataError,
            f"<pandas.DataFrame>: column 'u' (user ids) has type large_string; expected integer ids. {_IDS_HINT}",
        ),
        (
            "csv",
            {"tasks": {"t": ("p", "y")}, "metrics": ["gauc"], "user": "u"},
            InvalidDataError,
            f"column 'u' (user ids): invalid value 'a' at line 2; expected an integer id. {_IDS_HINT}",
        ),
        (
            [],
            {"tasks": {"t": ("p", "y")}},
            TypeError,
            "Expected `data` to be a path or a non-empty list of paths, got an empty list.",
        ),
    ],
)
def test_first_hour_argument_mistakes_say_what_to_write(tmp_path, data, kwargs, error, message):
    """A string where a list goes, a (predictions, labels) pair as tasks, text user ids: the fix is in the message."""
    frame = pd.DataFrame({"p": [0.1, 0.8, 0.3], "y": [0, 1, 1], "u": ["a", "b", "a"]})
    if data == "frame":
        data = frame
    elif data == "csv":
        frame.to_csv(tmp_path / "a.csv", index=False)
        data = tmp_path / "a.csv"
    with pytest.raises(error) as caught:
        evaluate(data, **kwargs)
    assert str(caught.value).endswith(message)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_a_directory_of_more_parquet_files_than_may_be_open_at_once_is_read(tmp_path):
    """Every Parquet file stayed open from the start of the run to its end, so a directory of more
    files than the open-file limit (Spark writes thousands of part files; the usual limit is 1,024)
    failed with "not a readable Parquet file (... Too many open files)". A file is now open only
    while its footer or a row group is read. Run in a process whose limit is 64, with 150 files."""
    rng = np.random.default_rng(9)
    parts = []
    for i in range(150):
        p = rng.uniform(0.05, 0.95, 20)
        part = pd.DataFrame({"p": p, "y": (rng.uniform(size=20) < p).astype(np.int64), "c": i % 3})
        part.to_parquet(tmp_path / f"part-{i:05d}.parquet", row_group_size=7)
        parts.append(part)
    frame = pd.concat(parts)
    script = (
        "import json, resource, sys\n"
        "from torchmetrics_ext.evaluate import evaluate\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "result = evaluate(sys.argv[1], {'t': ('p', 'y')}, ['ctr', 'auc'], by='c')\n"
        "print(json.dumps(result.values))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    values = json.loads(done.stdout)
    expected = {"ctr/t": frame["y"].mean(), "auc/t": roc_auc_score(frame["y"], frame["p"])}
    for c, part in frame.groupby("c"):
        expected[f"ctr/t/c={c}"] = part["y"].mean()
        expected[f"auc/t/c={c}"] = roc_auc_score(part["y"], part["p"])
    assert values == pytest.approx(expected, rel=1e-9)


def test_a_file_named_by_several_paths_is_read_once(tmp_path, monkeypatch):
    """``evaluate logs/ logs/a.csv`` (or ``a.csv a.csv``) counted the file's rows twice, silently."""
    (tmp_path / "logs").mkdir()
    a = pd.DataFrame({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 1]})
    b = pd.DataFrame({"p": [0.2, 0.9], "y": [0, 0]})
    a.to_csv(tmp_path / "logs" / "a.csv", index=False)
    b.to_parquet(tmp_path / "logs" / "b.parquet")
    monkeypatch.chdir(tmp_path)
    both = pd.concat([a, b])
    for paths in (["logs", "logs/a.csv"], ["logs/a.csv", "./logs/../logs/a.csv", "logs/*"], ["logs/*.csv", "logs"]):
        result = evaluate(paths, {"t": ("p", "y")}, ["ctr", "sum_weights"])
        assert result.rows_read == len(both)
        assert result.values["ctr/t"] == pytest.approx(both.y.mean(), rel=1e-12)
    assert evaluate(["logs/a.csv", "logs/a.csv"], {"t": ("p", "y")}, ["ctr"]).rows_read == len(a)


def test_a_file_reached_through_a_link_is_read_once(tmp_path, monkeypatch):
    """A directory holding ``latest.csv -> part-1.csv`` (a symbolic link, or a hard link) read the file
    twice, silently: its rows counted twice in every value, as a file named by two paths was before."""
    (tmp_path / "logs").mkdir()
    a = pd.DataFrame({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 1], "w": [1.0, 2.0, 0.5, 1.0]})
    b = pd.DataFrame({"p": [0.2, 0.9, 0.4], "y": [0, 0, 1], "w": [3.0, 1.0, 1.0]})
    a.to_csv(tmp_path / "logs" / "part-0.csv", index=False)
    b.to_parquet(tmp_path / "logs" / "part-1.parquet")
    os.symlink("part-1.parquet", tmp_path / "logs" / "latest.parquet")
    os.link(tmp_path / "logs" / "part-0.csv", tmp_path / "logs" / "copy.csv")
    monkeypatch.chdir(tmp_path)
    both = pd.concat([a, b])
    expected_auc = roc_auc_score(both.y, both.p, sample_weight=both.w)
    for paths in ("logs", ["logs/part-1.parquet", "logs/latest.parquet", "logs/part-0.csv"], "logs/*"):
        result = evaluate(paths, {"t": ("p", "y")}, ["ctr", "auc"], weights="w")
        assert result.rows_read == len(both), paths
        assert result.values["ctr/t"] == pytest.approx(np.average(both.y, weights=both.w), rel=1e-12)
        assert result.values["auc/t"] == pytest.approx(expected_auc, rel=1e-6)


def test_by_as_one_column_name_is_that_column(tmp_path):
    """``evaluate(by="country")`` was refused ("one column: by=['country']") while ``by: country`` in
    a config file and ``--by country`` were read as that one column: all three take it now, by one
    rule. The reference is a pandas groupby with numpy formulas and sklearn."""
    frame = make_frame(2000, 3)
    frame["country"] = frame["country"].fillna("none")
    tasks, metrics = {"t": ("p_click", "y_click")}, ["ctr", "ne", "auc"]
    one = evaluate(frame, tasks, metrics, weights="w", by="country")
    listed = evaluate(frame, tasks, metrics, weights="w", by=["country"])
    assert one.by == listed.by == ("country",)
    assert one.records == listed.records
    got = {r["country"]: r for r in one.records if r["segment"] != "all"}
    assert sorted(got) == sorted(frame["country"].unique())
    for country, part in frame.groupby("country"):
        p, y, w = (part[c].to_numpy(np.float64) for c in ("p_click", "y_click", "w"))
        assert got[country]["rows"] == len(part)
        assert got[country]["ctr"] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)
        assert got[country]["ne"] == pytest.approx(ne_ref(p, y, w), rel=1e-9)
        assert got[country]["auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-6)
    # the config file's `by: country` and `--by country` give the same records
    frame.to_parquet(tmp_path / "d.parquet")
    args = ["evaluate", str(tmp_path / "d.parquet"), "--task", "t=p_click:y_click", "--metrics", "ctr,ne,auc"]
    args += ["--weights", "w", "--no-progress"]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"by": "country"}))
    for extra in (["--config", str(config)], ["--by", "country"]):
        out = tmp_path / f"{extra[0][2:]}.json"
        assert cli.main([*args, *extra, "--output", str(out)]) == 0
        records = json.loads(out.read_text())["records"]
        assert {r["segment"]: r["ctr"] for r in records} == pytest.approx({r["segment"]: r["ctr"] for r in one.records})


@pytest.mark.parametrize(
    "by",
    [3, "", [""], ["country", 1], {"country": 1}, b"country", ("country", None)],
    ids=["int", "empty", "empty-item", "int-item", "dict", "bytes", "none-item"],
)
def test_by_that_is_not_column_names_is_refused_naming_it(by):
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1], "country": ["fr", "us"]})
    message = (
        f"Expected `by` to be a column name or a list of column names (non-empty strings), got {by!r} "
        f"({type(by).__name__})."
    )
    with pytest.raises(ValueError) as caught:
        evaluate(table, {"t": ("p", "y")}, ["ctr"], by=by)
    assert str(caught.value) == message


def test_repeated_columns_in_the_arguments_are_named(tmp_path, capsys):
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1], "s": ["a", "b"]})
    with pytest.raises(
        ValueError, match=r"Expected distinct segment columns \(by\), got \['s', 's'\]: 's' is repeated"
    ):
        evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["s", "s"])
    message = r"Tasks 'c' and 'y' read the same columns \(predictions 'p', labels 'y'\), so they would report"
    with pytest.raises(ValueError, match=message):
        evaluate(table, ["c=p:y", "y=p:y"], ["ctr"])
    pq.write_table(table, tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--task", "c=p:y", "--predictions", "p", "--labels", "y"]
    assert cli.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "--task NAME=PREDICTIONS:LABELS" in err
    assert "<no weights>" not in err and "RecTaskInfo" not in err  # the module's internals, not the CLI's terms


# ----------------------------------------------------------------------------- command line


def test_cli_prints_the_table_and_writes_every_output_format(dataset, tmp_path, capsys):
    args = ["evaluate", str(dataset), *TASK_FLAGS, "--metrics", "ne,auc,gauc"]
    args += ["--weights", "w", "--user", "user", "--by", "dataset"]
    for suffix in ("json", "csv", "parquet"):
        assert cli.main([*args, "--output", str(tmp_path / f"out.{suffix}")]) == 0
    out, err = capsys.readouterr()
    assert "3,000 rows read" in out and "dataset=b" in out and "gauc" in out
    assert "evaluate: 3,000 / 3,000 rows (100.0%)" in err  # the progress line: rows out of the metadata total
    payload = json.loads((tmp_path / "out.json").read_text())
    expected = evaluate(dataset, TASKS, ["ne", "auc", "gauc"], weights="w", user="user", by=["dataset"])
    assert payload["records"] == expected.records
    numbers = ["rows", "ne", "auc", "gauc"]
    assert pa_csv.read_csv(tmp_path / "out.csv").select(numbers) == pq.read_table(tmp_path / "out.parquet").select(
        numbers
    )
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 6


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
def test_to_arrow_holds_plain_arrow_columns_and_records_plain_python_values():
    """to_arrow (carried review item): segment columns keep the input's Arrow types, the rest are string,
    int64 and float64 columns, and the records it is built from hold Python scalars, never tensors or numpy."""
    n = 12
    rng = np.random.default_rng(4)
    by_columns = {
        "d": pa.array([decimal.Decimal(i % 2) for i in range(n)], pa.decimal128(3, 1)),
        "day": pa.array([datetime.date(2020, 1, 1 + i % 3) for i in range(n)]),
        "ts": pa.array([i % 2 for i in range(n)], pa.timestamp("us", "UTC")),
        "b": pa.array([bytes([i % 2]) for i in range(n)]),
        "big": pa.array([2**64 - 1 - i % 2 for i in range(n)], pa.uint64()),
        "flag": pa.array([i % 2 == 0 for i in range(n)]),
    }
    table = pa.table({"p": rng.random(n), "y": rng.integers(0, 2, n), "u": rng.integers(0, 3, n), **by_columns})
    metrics = ["ne", "auc", "gauc", "ndcg@3", "recall@2", "ctr"]
    result = evaluate(table, {"t": ("p", "y")}, metrics, user="u", session="u", by=list(by_columns))
    schema = result.to_arrow().schema
    assert {f.name: f.type for f in schema} == {
        "segment": pa.string(),
        **{k: v.type for k, v in by_columns.items()},
        "task": pa.string(),
        "rows": pa.int64(),
        **dict.fromkeys(metrics, pa.float64()),
    }
    plain = (str, int, float, bool, bytes, decimal.Decimal, datetime.date, type(None))
    assert all(type(v) in plain or isinstance(v, datetime.datetime) for r in result.records for v in r.values())


def test_binary_segment_values_reach_every_output_losslessly(tmp_path, capsys):
    """Non-UTF-8 bytes used to fail the .csv output (Arrow refuses them as text) after the run, leaving a header."""
    import ast
    import csv

    keys = [b"a", b"\xff", None, b"a", b"b'q'"]
    fixed = pa.array([(k or b"zz")[:2].ljust(2) for k in keys], pa.binary(2))
    table = pa.table({"p": [0.1, 0.8, 0.6, 0.3, 0.5], "y": [0, 1, 1, 0, 1], "k": pa.array(keys), "f": fixed})
    pq.write_table(table, tmp_path / "in.parquet")
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["k"])
    result.write(str(tmp_path / "out.csv"))
    result.write(str(tmp_path / "out.parquet"))
    result.write(str(tmp_path / "out.json"))
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    written = [ast.literal_eval(r["k"]) if r["k"] else None for r in rows]
    assert written == [None, b"a", b"b'q'", b"\xff", None]  # overall, then the sorted segments (null last)
    assert [float(r["ctr"]) for r in rows] == [0.6, 0.0, 1.0, 1.0, 1.0]
    assert pq.read_table(tmp_path / "out.parquet").column("k").to_pylist() == [None, b"a", b"b'q'", b"\xff", None]
    records = json.loads((tmp_path / "out.json").read_text())["records"]
    assert [r["k"] for r in records] == [None, repr(b"a"), repr(b"b'q'"), repr(b"\xff"), None]
    # fixed-size binary, from the command line
    args = ["evaluate", str(tmp_path / "in.parquet"), "--task", "t=p:y", "--metrics", "ctr", "--by", "k,f"]
    assert cli.main([*args, "--no-progress", "--output", str(tmp_path / "cli.csv")]) == 0
    assert "wrote" in capsys.readouterr().out
    with open(tmp_path / "cli.csv", newline="") as handle:
        assert {ast.literal_eval(r["f"]) for r in csv.DictReader(handle) if r["f"]} == set(fixed.to_pylist())


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import pyarrow.csv

    result = evaluate(pa.table({"p": [0.1, 0.8], "y": [0, 1]}), {"t": ("p", "y")}, ["ctr"])
    (tmp_path / "old.csv").write_text("kept\n")

    def fail(table, path):
        with open(path, "w") as handle:
            handle.write("segment,task\n")  # a header, then the failure
        raise pa.ArrowInvalid("Invalid UTF8 payload")

    monkeypatch.setattr(pyarrow.csv, "write_csv", fail)
    for name in ("new.csv", "old.csv"):
        with pytest.raises(pa.ArrowInvalid):
            result.write(str(tmp_path / name))
    assert sorted(os.listdir(tmp_path)) == ["old.csv"] and (tmp_path / "old.csv").read_text() == "kept\n"


def test_integer_segment_values_of_any_size_reach_every_output(tmp_path, capsys):
    """uint64 ids above 2**63 and int64 ids above 2**53 stay exact in to_arrow (their own type),
    to_pandas (nullable integers) and the .csv/.parquet outputs, from a table and from a CSV file."""
    items = np.array([2**63 + 5, 7, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    users = np.array([2**53 + 1, -3, 2**53 + 1, 2**62], dtype=np.int64)
    y = np.array([0.0, 1, 1, 1])
    table = pa.table({"p": [0.1, 0.2, 0.3, 0.4], "y": y, "item": items, "user": users})
    for by, values in (("item", items), ("user", users)):
        keys = np.unique(values)  # reference: the input's own values, sorted
        result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=[by])
        arrow = result.to_arrow()
        assert arrow.schema.field(by).type == table.schema.field(by).type
        assert arrow.column(by).to_pylist() == [None, *(int(k) for k in keys)]
        assert arrow.column("ctr").to_pylist()[1:] == pytest.approx([y[values == k].mean() for k in keys], rel=1e-12)
        frame = result.to_pandas()
        assert frame[by].isna().tolist() == [True] + [False] * len(keys)
        assert [int(v) for v in frame[by][1:]] == [int(k) for k in keys]
        for suffix in ("csv", "parquet"):
            result.write(str(tmp_path / f"out.{suffix}"))
        assert pq.read_table(tmp_path / "out.parquet").column(by).to_pylist() == arrow.column(by).to_pylist()
        written = pa_csv.read_csv(
            tmp_path / "out.csv", convert_options=pa_csv.ConvertOptions(column_types={by: arrow.schema.field(by).type})
        )
        assert written.column(by).to_pylist() == arrow.column(by).to_pylist()
    pa_csv.write_csv(table, tmp_path / "in.csv")
    args = ["evaluate", str(tmp_path / "in.csv"), "--predictions", "p", "--labels", "y", "--metrics", "ctr"]
    assert cli.main([*args, "--by", "item", "--output", str(tmp_path / "res.parquet"), "--no-progress"]) == 0
    capsys.readouterr()
    written = pq.read_table(tmp_path / "res.parquet")
    assert written.schema.field("item").type == pa.uint64()
    assert written.column("item").to_pylist() == [None, *(int(k) for k in np.unique(items))]


def test_cli_single_task_flags_and_errors(dataset, tmp_path, capsys):
    assert cli.main(["evaluate", str(dataset), "--predictions", "p_click", "--labels", "y_click", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "y_click" in out and err == ""
    assert cli.main(["evaluate", str(dataset), "--task", "click=p_click:nope", "--no-progress"]) == 2
    assert "error: " in capsys.readouterr().err
    for bad in (["--predictions", "p_click"], [], ["--task", "a=p:y", "--batch-size", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["evaluate", str(dataset), *bad])
    with pytest.raises(ValueError, match="Expected an output path ending in"):
        evaluate(dataset, TASKS, ["ctr"]).write(str(tmp_path / "out.txt"))
    # --predictions/--labels take any column name: they were rebuilt into a --task string, which
    # refused a ':' and quoted a NAME=PREDICTIONS:LABELS text the user never typed
    p, y = np.array([0.1, 0.8, 0.6, 0.3]), np.array([0, 1, 1, 0])
    pq.write_table(pa.table({"p:v2": p, "y=click": y}), tmp_path / "x.parquet")
    args = ["evaluate", str(tmp_path / "x.parquet"), "--predictions", "p:v2", "--labels", "y=click"]
    assert cli.main([*args, "--metrics", "ctr,mse", "--output", str(tmp_path / "out.json"), "--no-progress"]) == 0
    [record] = json.loads((tmp_path / "out.json").read_text())["records"]
    assert record["task"] == "y=click"
    assert record["ctr"] == pytest.approx(np.mean(y)) and record["mse"] == pytest.approx(np.mean((p - y) ** 2))


_TASK_FORMAT = "argument --task: Expected a task as NAME=PREDICTIONS:LABELS (e.g. click=p_click:y_click), got "


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--by", ""], "argument --by: expected comma-separated column names, got ''"),
        (["--by", " , "], "argument --by: expected comma-separated column names, got ' , '"),
        (["--metrics", ""], "argument --metrics: expected comma-separated metric names, got ''"),
        (["--metrics", ","], "argument --metrics: expected comma-separated metric names, got ','"),
        (
            ["--metrics", "ne,"],
            "argument --metrics: empty item (position 2 of 2) in 'ne,'; expected comma-separated metric names "
            "without empty items (a trailing or doubled comma?)",
        ),
        (
            ["--metrics", "ne,,auc"],
            "argument --metrics: empty item (position 2 of 3) in 'ne,,auc'; expected comma-separated metric names "
            "without empty items (a trailing or doubled comma?)",
        ),
        (
            ["--metrics", ", ne"],
            "argument --metrics: empty item (position 1 of 2) in ', ne'; expected comma-separated metric names "
            "without empty items (a trailing or doubled comma?)",
        ),
        (
            ["--by", "country,,,device"],
            "argument --by: empty item (positions 2, 3 of 4) in 'country,,,device'; expected comma-separated "
            "column names without empty items (a trailing or doubled comma?)",
        ),
        (["--weights", ""], "argument --weights: expected a column name, got ''"),
        (["--user", ""], "argument --user: expected a column name, got ''"),
        (["--session", ""], "argument --session: expected a column name, got ''"),
        (
            ["--task", "click=:y_click"],
            _TASK_FORMAT + "'click=:y_click': the prediction column between '=' and ':' is empty.",
        ),
        (["--task", "click=p_click:"], _TASK_FORMAT + "'click=p_click:': the label column after ':' is empty."),
        (["--task", "=p_click:y_click"], _TASK_FORMAT + "'=p_click:y_click': the task name before '=' is empty."),
        (["--task", "click:p_click:y_click"], _TASK_FORMAT + "'click:p_click:y_click': no '=' after the task name."),
        (
            ["--task", "click=p_click,y_click"],
            _TASK_FORMAT + "'click=p_click,y_click': no ':' between the prediction and label columns.",
        ),
        (["--task", "click=p:y:z"], _TASK_FORMAT + "'click=p:y:z': more than one ':'."),
        (["--task", ""], _TASK_FORMAT + "'': it is empty."),
    ],
)
def test_cli_refuses_empty_option_values_naming_the_option(dataset, capsys, flags, message):
    """An empty value (an unset shell variable: ``--by "$SEGMENTS"``) is a mistake, not "no segments"."""
    task = [] if flags[0] == "--task" else ["--task", "click=p_click:y_click"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", str(dataset), *task, *flags, "--no-progress"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: torchmetrics-ext evaluate ")  # the subcommand's usage, as argparse's own errors
    assert err.endswith(f"torchmetrics-ext evaluate: error: {message}\n")
    # leaving --by out is still no segments
    assert (
        cli.main(["evaluate", str(dataset), "--task", "click=p_click:y_click", "--metrics", "ctr", "--no-progress"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[-1].startswith("all ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--metrics", "ndcg@10", "--metrics", "ctr"],
            "argument --metrics: given twice ('ndcg@10', then 'ctr'); give the metrics once, comma-separated "
            "(--metrics ne,auc)",
        ),
        (
            ["--predictions", "p_click", "--labels", "y_click", "--predictions", "p_like", "--labels", "y_like"],
            "argument --predictions: given twice ('p_click', then 'p_like'); use --task NAME=PRED:LABEL "
            "(repeatable) for several tasks",
        ),
    ],
)
def test_cli_refuses_a_repeated_list_option(dataset, capsys, flags, message):
    """``--task`` repeats to add a task; ``--metrics`` repeated silently kept the last value only.

    ``--metrics ndcg@10 --metrics ctr`` printed a table of ``ctr`` alone (argparse's last-one-wins), with
    nothing saying the first was dropped. (``--by`` repeated is several segmentations now:
    tests/test_evaluate_several_by.py.)
    """
    task = [] if flags[0] == "--predictions" else ["--task", "click=p_click:y_click"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", str(dataset), *task, *flags, "--no-progress"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing read
    assert err.startswith("usage: torchmetrics-ext evaluate ")
    assert err.endswith(f"torchmetrics-ext evaluate: error: {message}\n")
    # once, comma-separated, every name is computed
    assert cli.main(["evaluate", str(dataset), *TASK_FLAGS, "--metrics", "ctr,mse", "--no-progress"]) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert header[-2:] == ["ctr", "mse"]


BY_EXPECTED = "expected a segment column name, a list of them, or a list of such lists (several segmentations), got"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("out.txt", "Expected an output path ending in .json, .csv or .parquet"),
        ("nodir/out.json", "directory .*nodir' does not exist"),
        (".", "Expected an output path ending in"),
        ("adir.json", "Expected an output file, got the directory"),
    ],
)
def test_cli_rejects_a_bad_output_path_before_reading(dataset, tmp_path, capsys, monkeypatch, output, message):
    (tmp_path / "adir.json").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(dataset), *TASK_FLAGS, "--metrics", "ctr", "--output", output])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""  # nothing read, nothing printed
    # the subcommand's own usage and name (the top-level usage line was printed before)
    assert "torchmetrics-ext evaluate: error: --output: " in err and "Traceback" not in err
    assert err.startswith("usage: torchmetrics-ext evaluate ")
    assert re.search(message, err)
    with pytest.raises(ValueError, match=message):
        evaluate(dataset, TASKS, ["ctr"]).write(output)


def test_cli_writes_the_output_file_when_stdout_is_closed_early(tmp_path):
    """`torchmetrics-ext evaluate ... --output r.json | head` lost the results: the table was printed
    before the file was written, and the reader leaving (BrokenPipeError) ended the run with a
    traceback and no file, after the whole evaluation had run."""
    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame({"p": rng.uniform(0.01, 0.99, n), "y": rng.integers(0, 2, n), "g": rng.integers(0, 600, n)})
    data, output = tmp_path / "data.csv", tmp_path / "result.json"
    frame.to_csv(data, index=False)
    command = [sys.executable, "-m", "torchmetrics_ext", "evaluate", str(data), "--predictions", "p"]
    command += ["--labels", "y", "--metrics", "ctr", "--by", "g", "--no-progress", "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before the table (600 lines, past the pipe's buffer) is printed
    err = process.stderr.read().decode()
    code = process.wait(timeout=300)
    process.stderr.close()
    assert "Traceback" not in err and code == 141, (code, err)  # 128 + SIGPIPE, as a shell reports such a command
    records = json.loads(output.read_text())["records"]
    expected = frame.groupby("g")["y"].agg(["size", "mean"])  # pandas, independent of the package
    assert [r["g"] for r in records[1:]] == expected.index.tolist()
    assert [r["rows"] for r in records[1:]] == expected["size"].tolist()
    assert [r["ctr"] for r in records[1:]] == pytest.approx(expected["mean"].tolist(), rel=1e-12)
    assert records[0]["ctr"] == pytest.approx(frame["y"].mean(), rel=1e-12)


# ----------------------------------------------------------------------------- distributed


def _ddp_evaluate(rank: int, world_size: int, path: str) -> dict[str, float]:
    import torch.distributed as dist

    result = evaluate(path, TASKS, METRICS, by=["country"], batch_size=300, **KW)
    assert dist.is_initialized()
    return result.values | {"rows_read": float(result.rows_read)}


@pytest.mark.ddp
def test_two_ranks_equal_one_process(ddp_pool, dataset, frame):
    single = evaluate(dataset, TASKS, METRICS, by=["country"], batch_size=300, **KW).values
    ranks = ddp_pool.run(_ddp_evaluate, str(dataset))
    for values in ranks:
        assert values.pop("rows_read") == len(frame)
        assert values.keys() == single.keys()
        for key in single:
            assert values[key] == pytest.approx(single[key], rel=1e-10, nan_ok=True), key


def _ddp_segment_warnings(rank: int, world_size: int, path: str) -> tuple[list[str], dict[str, float]]:
    from torchmetrics_ext.evaluate import by_segment

    family = by_segment._family
    by_segment._family = _without_kernel("XAUC")  # as a metric without a segment kernel
    try:
        result = evaluate(path, {"t": ("p", "y")}, ["auc", "xauc"], by=["g"])
    finally:
        by_segment._family = family
    return result.warnings, {key: repr(value) for key, value in result.values.items()}  # nan == nan


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.ddp
def test_segment_warnings_computed_on_any_rank_reach_every_rank(ddp_pool, tmp_path):
    """AUC is computed for every segment at once on every rank; XAUC, made a metric without a
    segment kernel, segment by segment: g=b on rank 1, whose warning must not stay there. Every
    rank has one process's lines (those of the kernels)."""
    table = pa.table({"p": [0.2, 0.7, 0.4, 0.9, 0.5], "y": [0, 1, 1, 1, 1], "g": ["a", "a", "b", "c", "c"]})
    pq.write_table(table, tmp_path / "x.parquet")
    single = evaluate(tmp_path, {"t": ("p", "y")}, ["auc", "xauc"], by=["g"])
    assert [line.split(":")[0] for line in single.warnings] == [
        "auc is undefined for task 't' in 2 of 3 segments (g=b, g=c)",
        "xauc is undefined for task 't' in 1 of 3 segments (g=b)",
    ]
    expected = (single.warnings, {key: repr(value) for key, value in single.values.items()})
    assert ddp_pool.run(_ddp_segment_warnings, str(tmp_path)) == [expected, expected]


def _ddp_reads(rank: int, world_size: int, paths: list[str], by: list[str]) -> list[tuple[dict, list]]:
    out = []
    for path in paths:
        with pytest.MonkeyPatch.context() as monkeypatch:
            reads = _count_reads(monkeypatch)
            result = evaluate(path, {"t": ("p", "y")}, ["ctr", "auc"], by=by, batch_size=200)
        out.append(({key: repr(value) for key, value in result.values.items()}, reads))
    return out


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.ddp
def test_each_rank_reads_only_its_share_with_by(ddp_pool, tmp_path):
    """Every rank read every file's --by columns (to find the segments); now a rank reads only its own
    chunks (round-robin over every file's row groups, whole CSV files), once, and the values are the
    one process's. The CSV files' column types are decided over every rank's text: rank 0's files
    hold only digits, rank 1's an 'x', so both read the column as text, as one process does."""
    frame = _by_frame(2400, 2)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, parquet / f"{i}.parquet", row_group_size=400)  # 3 row groups each
    texts = tmp_path / "csv"
    texts.mkdir()
    frame = frame.assign(code=frame["hour"].astype(str))
    frame.loc[1500, "code"] = "x"  # in c.csv, rank 1's
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        frame.iloc[part].to_csv(texts / f"{'abcd'[i]}.csv", index=False)
    by = ["country", "code"]
    paths = [str(parquet), str(texts)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _count_reads(monkeypatch)  # the same functions as the ranks run
        single = []
        for path, columns in zip(paths, (["country", "hour"], by)):
            result = evaluate(path, {"t": ("p", "y")}, ["ctr", "auc"], by=columns, batch_size=200)
            single.append({key: repr(value) for key, value in result.values.items()})
    ranks = ddp_pool.run(_ddp_reads, paths[:1], ["country", "hour"]), ddp_pool.run(_ddp_reads, paths[1:], by)
    columns = ("p", "y", "country", "hour")
    groups = [("0.parquet", g) for g in range(3)] + [("1.parquet", g) for g in range(3)]
    for rank in range(2):
        values, reads = ranks[0][rank][0]
        assert values == single[0]
        assert reads == [(name, group, columns) for name, group in groups[rank::2]]  # its own row groups, once
        values, reads = ranks[1][rank][0]
        assert values == single[1]
        data = [read for read in reads if read[2] is not None]  # the header of its own files (names)
        assert data == [(name, 0, ("p", "y", *by)) for name in ["a.csv", "b.csv", "c.csv", "d.csv"][rank::2]]
    # the reference: a pandas groupby of the text as written
    expected = frame.groupby(by)["y"].mean()
    records = {
        (r["country"], r["code"]): r["ctr"] for r in evaluate(texts, {"t": ("p", "y")}, ["ctr"], by=by).records[1:]
    }
    assert list(records) == sorted(expected.index)  # text: "10" before "2"
    for key, value in expected.items():
        assert records[key] == pytest.approx(value, rel=1e-12)


def _ddp_bad(rank: int, world_size: int, path: str) -> str:
    try:
        evaluate(path, TASKS, METRICS, **KW)
    except InvalidDataError as err:
        return str(err)
    return "no error"


@pytest.mark.ddp
def test_a_bad_file_on_one_rank_fails_every_rank(ddp_pool, tmp_path, frame):
    write_bad(tmp_path, frame, _nan([7]))
    messages = ddp_pool.run(_ddp_bad, str(tmp_path))
    assert all("b.parquet: column 'p_click'" in m for m in messages)


@pytest.mark.ddp
def test_invalid_rows_split_between_ranks_are_counted_once(ddp_pool, tmp_path, frame):
    """b.parquet's row groups go to both ranks (rows 7 and 250 to one, 399 to the other): one message, full count."""
    write_bad(tmp_path, frame, _nan([7, 250, 399]))
    with pytest.raises(InvalidDataError) as single:
        evaluate(tmp_path, TASKS, METRICS, **KW)
    assert "has 3 rows that are NaN or infinite (first at 0-based data row 7)" in str(single.value)
    assert ddp_pool.run(_ddp_bad, str(tmp_path)) == [str(single.value)] * 2


def _corrupt_second_row_group(path: Path) -> None:
    """Two row groups of 100 rows (p in [0, 1], y alternating); the second's first page header overwritten."""
    table = pa.table({"p_click": np.linspace(0.0, 1.0, 200), "y_click": np.arange(200) % 2})
    pq.write_table(table, path, row_group_size=100, compression="none", use_dictionary=False)
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 6] = b"\xff" * 6  # the footer (and so the row counts) stays readable
    path.write_bytes(bytes(data))


def test_an_unreadable_parquet_row_group_names_the_file_and_row_group(tmp_path, capsys):
    """A corrupt page used to escape as pyarrow's bare OSError (no file named; a traceback from the command)."""
    path = tmp_path / "a.parquet"
    _corrupt_second_row_group(path)
    expected = rf"{re.escape(str(path))}: not a readable Parquet file \(row group 1, 0-based data rows 100 to 199: .*page header"
    with pytest.raises(InvalidDataError, match=expected):
        evaluate(path, {"click": ("p_click", "y_click")}, ["ne"])
    assert cli.main(["evaluate", str(path), "--predictions", "p_click", "--labels", "y_click", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(f"error: {expected}", err) and "Traceback" not in err


def _ddp_unreadable(rank: int, world_size: int, path: str) -> str:
    try:
        evaluate(path, {"click": ("p_click", "y_click")}, ["ne", "auc"])
    except InvalidDataError as err:
        return str(err)
    return "no error"


@pytest.mark.ddp
def test_an_unreadable_row_group_on_one_rank_fails_every_rank(ddp_pool, tmp_path):
    """Row group 1 (rank 1's) cannot be read: rank 1 raised pyarrow's OSError, rank 0 died in all_gather_object."""
    path = tmp_path / "a.parquet"
    _corrupt_second_row_group(path)
    messages = ddp_pool.run(_ddp_unreadable, str(path))
    assert messages[0] == messages[1]
    assert f"{path}: not a readable Parquet file (row group 1, 0-based data rows 100 to 199: " in messages[0]


def _ddp_unchecked(rank: int, world_size: int, path: str) -> str:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _unchecked(monkeypatch)
        try:
            evaluate(path, {"t": ("p", "y")}, ["auc"])
        except InvalidDataError as err:
            return str(err)
    return "no error"


@pytest.mark.ddp
def test_a_value_the_row_checks_miss_on_one_rank_fails_every_rank(ddp_pool, tmp_path):
    """b.parquet (rank 1's) fails the module's update: rank 0 used to die in all_gather_object instead."""
    pq.write_table(pa.table({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 0]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.2, 0.4, 1.5], "y": [0, 1, 1]}), tmp_path / "b.parquet")
    messages = ddp_pool.run(_ddp_unchecked, str(tmp_path))
    assert messages[0] == messages[1] and re.match(
        r".*b\.parquet: 0-based data rows 0 to 2: .*probabilities", messages[0]
    )


def _ddp_unchecked_type(rank: int, world_size: int, path: str) -> str:
    import torchmetrics_ext.evaluate.runner as runner

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(runner, "check_schema", lambda *args, **kwargs: None)  # a type the checks miss
        try:
            evaluate(path, {"t": ("p", "y")}, ["gauc"], user="u")
        except InvalidDataError as err:
            return str(err)
    return "no error"


@pytest.mark.ddp
def test_a_type_the_checks_miss_on_one_rank_fails_every_rank(ddp_pool, tmp_path):
    """b.parquet (rank 1's) holds float user ids: the module's TypeError escaped rank 1, rank 0 died in a gather."""
    pq.write_table(pa.table({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 0], "u": [1, 1, 2, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"p": [0.2, 0.4, 0.5], "y": [0, 1, 1], "u": [3.0, 3.0, 4.0]}), tmp_path / "b.parquet")
    messages = ddp_pool.run(_ddp_unchecked_type, str(tmp_path))
    assert messages[0] == messages[1]
    assert re.match(r".*b\.parquet: 0-based data rows 0 to 2: .*model_out\['u'\]`: expected integer ids", messages[0])


@pytest.mark.ddp
def test_torchrun_command_equals_one_process(dataset, tmp_path):
    out = tmp_path / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "torchmetrics_ext.cli", "evaluate", str(dataset), *TASK_FLAGS]
    command += ["--metrics", "ne,auc,gauc", "--weights", "w", "--user", "user", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("3,000 rows read") == 1  # rank 0 prints
    single = evaluate(dataset, TASKS, ["ne", "auc", "gauc"], weights="w", user="user")
    records = json.loads(out.read_text())["records"]
    for got, expected in zip(records, single.records):
        for key in ("ne", "auc", "gauc"):
            assert got[key] == pytest.approx(expected[key], rel=1e-10)


@pytest.mark.parametrize("metrics", [["ctr"], ["ctr", "mse"], ["ctr", "weighted_sum_predictions"]])
def test_ctr_by_segment_accepts_the_predictions_it_accepts_over_all_rows(metrics):
    """CTR reads no prediction, so a run of metrics that take any finite prediction (raw scores in
    [-1, 2] here) scores it over all rows; with `by` each segment's CTR refused the same rows as
    probabilities outside [0, 1], a bare ValueError raised once every row had been read."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "s": rng.uniform(-1, 2, 90),
            "y": rng.integers(0, 2, 90),
            "w": rng.uniform(0, 2, 90),
            "g": rng.integers(0, 3, 90),
        }
    )
    result = evaluate(frame, {"t": ("s", "y")}, metrics, weights="w", by="g")
    frame["wy"], frame["ws"], frame["se"] = frame.w * frame.y, frame.w * frame.s, frame.w * (frame.s - frame.y) ** 2
    sums = frame.groupby("g")[["w", "wy", "ws", "se"]].sum()
    expected = {
        "ctr": sums.wy / sums.w,
        "mse": sums.se / sums.w,
        "weighted_sum_predictions": sums.ws,
    }
    for record in result.records[1:]:
        for name in metrics:
            assert record[name] == pytest.approx(expected[name][record["g"]], rel=1e-12)
    assert result.values["ctr/t"] == pytest.approx(frame.wy.sum() / frame.w.sum(), rel=1e-12)


def test_logged_logits_are_scored_with_from_logits(tmp_path, capsys):
    """NE/AUC read the logits, MSE reads sigmoid(logits) (the Brier score), CTR the labels: sklearn/numpy."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=300) * 2
    y = (rng.random(300) < 1 / (1 + np.exp(-z))).astype(np.int64)
    p = 1 / (1 + np.exp(-z))
    table = pa.table({"z": z, "y": y})
    values = evaluate(table, {"t": ("z", "y")}, ["ne", "auc", "mse", "ctr"], from_logits=True).values
    expected = {
        "ne/t": log_loss(y, p) / log_loss(y, np.full(300, y.mean())),
        "auc/t": roc_auc_score(y, z),
        "mse/t": np.mean((p - y) ** 2),
        "ctr/t": y.mean(),
    }
    assert_close(values, expected, rtol=1e-9)
    with pytest.raises(InvalidDataError, match="outside"):  # without the flag the logits are bad probabilities
        evaluate(table, {"t": ("z", "y")}, ["ne"])
    pq.write_table(table, tmp_path / "logits.parquet")
    args = ["evaluate", str(tmp_path / "logits.parquet"), "--task", "t=z:y", "--metrics", "ne,auc", "--no-progress"]
    assert cli.main([*args, "--from-logits", "--output", str(tmp_path / "out.json")]) == 0
    record = json.loads((tmp_path / "out.json").read_text())["records"][0]
    np.testing.assert_allclose([record["ne"], record["auc"]], [expected["ne/t"], expected["auc/t"]], rtol=1e-9)


@pytest.mark.parametrize(
    "metrics",
    [
        ["mse", "mae", "weighted_average"],  # no metric with a from_logits option: used to read raw logits
        ["mse", "ctr", "rmse", "r_squared"],
        ["mse", "mae", "weighted_average", "ne"],  # with one: always right
        ["mse", "mrr"],
    ],
)
def test_from_logits_feeds_sigmoid_whatever_metrics_are_asked_for(tmp_path, metrics):
    """--from-logits: metrics without the option read sigmoid(logits) even when no metric has the option."""
    rng = np.random.default_rng(9)
    z = rng.normal(size=200) * 3
    y = (rng.random(200) < 1 / (1 + np.exp(-z))).astype(np.int64)
    w = rng.uniform(0.5, 2.0, 200)
    session = np.repeat(np.arange(40), 5)
    s = 1 / (1 + np.exp(-z))
    sse = np.sum(w * (s - y) ** 2)
    ctr = np.sum(w * y) / np.sum(w)
    expected = {
        "mse": sse / w.sum(),
        "mae": np.sum(w * np.abs(s - y)) / w.sum(),
        "rmse": np.sqrt(sse / w.sum()),
        "weighted_average": np.sum(w * s) / w.sum(),
        "r_squared": 1 - sse / np.sum(w * (y - ctr) ** 2),
        "ctr": ctr,
        "ne": log_loss(y, s, sample_weight=w) / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)),
        # ranking metrics rank the logits: the same order as the probabilities
        "mrr": query_ref(z, y.astype(np.float64), session, w, len(z), "mrr"),
    }
    table = pa.table({"z": z, "y": y, "w": w, "q": session})
    values = evaluate(table, {"t": ("z", "y")}, metrics, weights="w", session="q", from_logits=True).values
    assert_close(values, {f"{m}/t": expected[m] for m in metrics})
    pq.write_table(table, tmp_path / "logits.parquet")
    out = tmp_path / "out.json"
    args = ["evaluate", str(tmp_path / "logits.parquet"), "--task", "t=z:y", "--weights", "w", "--session", "q"]
    args += ["--metrics", ",".join(metrics), "--from-logits", "--no-progress", "--output", str(out)]
    assert cli.main(args) == 0
    record = json.loads(out.read_text())["records"][0]
    assert_close({f"{m}/t": record[m] for m in metrics}, {f"{m}/t": expected[m] for m in metrics})


def test_a_globs_wildcard_matches_a_hidden_name_only_where_its_own_part_starts_so(tmp_path):
    """`out/*/_*` read `out/_scratch/_part` too: `_*` in a later part let `*` match `_scratch`."""
    for directory, label in (("day1", 1.0), ("_scratch", 0.0)):
        (tmp_path / "out" / directory).mkdir(parents=True)
        pq.write_table(pa.table({"p": [0.5], "y": [label]}), tmp_path / "out" / directory / "_part.parquet")
    read = evaluate(str(tmp_path / "out" / "*" / "_*"), {"t": ("p", "y")}, ["ctr"])
    assert read.values["ctr/t"] == 1.0  # day1's row alone (label 1)
    hidden = evaluate(str(tmp_path / "out" / "_*" / "_*"), {"t": ("p", "y")}, ["ctr"])
    assert hidden.values["ctr/t"] == 0.0  # asked for in place: _scratch's row alone


# ----------------------------------------------------------------------------- --config FILE


def _usage_error(capsys, args) -> str:
    """The stderr of a command line refused as a usage error (exit 2, the subcommand's usage first)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: torchmetrics-ext evaluate ")
    return err


def _config_data(tmp_path: Path) -> Path:
    """A small file whose predictions reach 0.02 and 0.98, so an NE clamp of 0.1 changes the value."""
    rng = np.random.default_rng(5)
    n = 240
    p = rng.choice([0.02, 0.3, 0.6, 0.98], n)
    table = pa.table(
        {
            "p": p,
            "y": (rng.uniform(size=n) < p).astype(np.int64),
            "w": rng.uniform(0.5, 2.0, n),
            "c": rng.choice(np.array(["fr", "us"], dtype=object), n),
        }
    )
    path = tmp_path / "scores.parquet"
    pq.write_table(table, path)
    return path


def _ne_eta(p, y, w, eta):
    """NE with predictions and the base rate's logs clamped to [eta, 1 - eta] (numpy reference)."""
    q = np.clip(p, eta, 1 - eta)
    ce = -np.sum(w * (y * np.log(q) + (1 - y) * np.log(1 - q)))
    rate = np.sum(w * y) / np.sum(w)
    c = min(max(rate, eta), 1 - eta)
    return ce / -(np.sum(w) * (rate * np.log(c) + (1 - rate) * np.log(1 - c)))


CONFIG_METRICS = {"ne": {"eta": 0.1}, "auc": None, "auc_binned": {"metric": "auc", "num_bins": 4}, "ctr": {}}


def _records(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["segment"], r["task"]): r for r in json.loads(path.read_text())["records"]}


def test_config_file_matches_the_python_api_the_flags_and_numpy(tmp_path, capsys):
    data = _config_data(tmp_path)
    config = {
        "paths": [data.name],  # relative to the config file's directory
        "tasks": [{"name": "click", "prediction_name": "p", "label_name": "y"}],  # from_config's task dicts
        "metrics": CONFIG_METRICS,
        "weights": "w",
        "by": ["c"],
        "output": "out.json",
        "batch_size": 50,
        "progress": False,
    }
    (tmp_path / "eval.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.json")]) == 0
    got = _records(tmp_path / "out.json")
    api = evaluate(data, {"click": ("p", "y")}, CONFIG_METRICS, weights="w", by=["c"])
    frame = pq.read_table(data).to_pandas()
    for segment, rows in [("all", frame), *((f"c={c}", g) for c, g in frame.groupby("c"))]:
        record = got[(segment, "click")]
        p, y, w = rows["p"].to_numpy(), rows["y"].to_numpy(), rows["w"].to_numpy()
        assert record["ne"] == pytest.approx(_ne_eta(p, y, w, 0.1), rel=1e-9)
        assert record["ne"] != pytest.approx(_ne_eta(p, y, w, 1e-12), rel=1e-3)  # the option took effect
        assert record["auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-9)
        assert record["ctr"] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)
        # four scores, four bins apart on the logit scale or not: binned AUC of tied-in-bin scores <= exact
        assert 0.5 < record["auc_binned"] <= record["auc"] + 1e-12
        suffix = "" if segment == "all" else f"/{segment}"
        for metric in CONFIG_METRICS:
            assert record[metric] == pytest.approx(api.values[f"{metric}/click{suffix}"], rel=1e-12)
    # the option-less metrics as command-line flags: the same values
    flags = ["evaluate", str(data), "--task", "click=p:y", "--metrics", "auc,ctr", "--weights", "w", "--by", "c"]
    assert cli.main([*flags, "--no-progress", "--output", str(tmp_path / "flags.json")]) == 0
    for key, record in _records(tmp_path / "flags.json").items():
        assert record["auc"] == pytest.approx(got[key]["auc"], rel=1e-12)
        assert record["ctr"] == pytest.approx(got[key]["ctr"], rel=1e-12)


@pytest.mark.parametrize("metrics", [["segmented_ne"], {"seg": {"metric": "segmented_ne", "num_segments": 3}}])
def test_segmented_ne_is_refused_pointing_at_by(metrics):
    table = pa.table({"p": np.array([0.2, 0.7]), "y": np.array([0.0, 1.0]), "g": np.array([0, 1])})
    with pytest.raises(ValueError, match=r"evaluate computes every metric per segment itself: ask for 'ne' with by="):
        evaluate(table, ["a=p:y"], metrics)


def test_config_and_python_metrics_take_a_registry_name_as_a_value(tmp_path, capsys):
    """``metrics: {cal: calibration}`` was refused ("Expected the options of metric 'cal' to be a dict") by a
    config file and by ``evaluate(metrics={...})``, as by ``RecMetricModule.from_config``: one path, one rule."""
    data = _config_data(tmp_path)
    metrics = {"cal": "calibration", "area": "auc"}
    config = {
        "paths": [data.name],
        "tasks": [{"name": "click", "prediction_name": "p", "label_name": "y"}],
        "metrics": metrics,
        "weights": "w",
        "output": "out.json",
        "progress": False,
    }
    (tmp_path / "eval.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.json")]) == 0
    record = _records(tmp_path / "out.json")[("all", "click")]
    frame = pq.read_table(data).to_pandas()
    p, y, w = frame["p"].to_numpy(), frame["y"].to_numpy(), frame["w"].to_numpy()
    assert record["cal"] == pytest.approx(np.sum(w * p) / np.sum(w * y), rel=1e-12)
    assert record["area"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-9)
    api = evaluate(data, {"click": ("p", "y")}, metrics, weights="w")
    assert api.values["cal/click"] == pytest.approx(record["cal"], rel=1e-12)
    assert api.values["area/click"] == pytest.approx(record["area"], rel=1e-12)


def test_config_command_line_options_override_the_file(tmp_path, capsys):
    data = _config_data(tmp_path)
    config = {
        "paths": ["missing.parquet"],
        "tasks": ["wrong=nope:nope"],
        "metrics": {"ne": {"eta": 0.1}},
        "by": ["c"],
        "output": "from_file.json",
    }
    (tmp_path / "eval.json").write_text(json.dumps(config))
    out = tmp_path / "from_cli.json"
    args = ["evaluate", "--config", str(tmp_path / "eval.json"), str(data), "--task", "t=p:y", "--no-progress"]
    assert cli.main([*args, "--metrics", "ctr", "--output", str(out)]) == 0
    assert not (tmp_path / "from_file.json").exists()
    payload = json.loads(out.read_text())
    assert payload["metrics"] == ["ctr"] and payload["tasks"] == ["t"] and payload["by"] == ["c"]  # `by` from the file
    y = pq.read_table(data).column("y").to_numpy()
    assert _records(out)[("all", "t")]["ctr"] == pytest.approx(y.mean(), rel=1e-12)  # unweighted: no weights given


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"metric": ["ne"]}, "unknown keys ['metric'] (did you mean 'metrics', 'metric_tasks'?)"),
        ({"batchsize": 10}, "unknown keys ['batchsize'] (did you mean 'batch_size'?)"),
        ({"batch_size": "100"}, "key 'batch_size': expected a positive integer, got '100' (str)"),
        ({"by": ""}, f"key 'by': {BY_EXPECTED} '' (str)"),
        ({"by": 3}, f"key 'by': {BY_EXPECTED} 3 (int)"),
        ({"by": ["c", 1]}, f"key 'by': {BY_EXPECTED} ['c', 1] (list)"),
        ({"by": {"c": 1}}, f"key 'by': {BY_EXPECTED} {{'c': 1}} (dict)"),
        ({"by": []}, f"key 'by': {BY_EXPECTED} [] (list)"),
        (
            {"tasks": ["click", "buy"]},
            "key 'tasks': Tasks 'click' and 'buy' read the same columns (predictions 'prediction', labels 'label')",
        ),
        (
            {"tasks": [{"label_name": "y"}]},
            "key 'tasks': Expected a task dict to hold 'name' (and optionally 'prediction_name', 'label_name') as "
            "non-empty strings, got {'label_name': 'y'}: missing 'name'.",
        ),
        ({"from_logits": "yes"}, "key 'from_logits': expected true or false, got 'yes' (str)"),
        ({"on_invalid": "drop"}, "key 'on_invalid': expected one of ['error', 'skip'], got 'drop' (str)"),
        ({"weights": ""}, "key 'weights': expected a column name, got '' (str)"),
        (
            {"metrics": {"auc": {"num_binz": 4}}},
            "key 'metrics': Metric 'auc': Unexpected keyword arguments: `num_binz`",
        ),
        (
            {"metrics": {"auc": 4}},
            "key 'metrics': Expected metric 'auc' in `metrics` to be a registry name (str) or a dict of its options, "
            "got 4 (int).",
        ),
        (
            {"metrics": {"ne": {"num_tasks": 2}}},
            "key 'metrics': Metric 'ne': `num_tasks` comes from the tasks, not from its options.",
        ),
        ({"tasks": [{"name": "t", "prediction_name": "p", "label_name": "y", "weight_name": "w"}]}, "give `weights`"),
        ([1, 2], "expected a mapping of keys"),
    ],
)
def test_config_errors_name_the_key_and_exit_2(tmp_path, capsys, config, message):
    data = _config_data(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps(config))
    err = _usage_error(capsys, ["evaluate", str(data), "--task", "t=p:y", "--config", str(tmp_path / "bad.json")])
    assert f"--config {tmp_path / 'bad.json'}: " in err and message in err


@pytest.mark.parametrize("from_logits", [False, True])
def test_metric_options_are_built_with_the_modules_logit_rule(tmp_path, capsys, from_logits):
    """Options go through the module's builder: from_logits set where the class takes it, an agreeing option kept.

    One rule for the module and evaluate: ``{"ne": {"eta": ...}}`` is built with evaluate's ``from_logits``,
    an option ``from_logits`` equal to it changes nothing, the other value is refused (from Python and the
    command line, before any data is read), as is ``num_tasks``.
    """
    rng = np.random.default_rng(23)
    n = 400
    z = rng.normal(size=n) * 2
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p).astype(np.int64)
    w = rng.uniform(0.5, 2.0, n)
    table = pa.table({"s": z if from_logits else p, "y": y, "w": w})
    metrics = {
        "ne": {"eta": 1e-9},
        "ne_same": {"metric": "ne", "eta": 1e-9, "from_logits": from_logits},  # agrees: kept
        "ll": {"metric": "log_loss"},
        "auc": {"num_bins": None},
        "mse": {},
    }
    values = evaluate(table, {"t": ("s", "y")}, metrics, weights="w", from_logits=from_logits).values
    rate = np.sum(w * y) / np.sum(w)
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    expected = {
        "ne/t": log_loss(y, p, sample_weight=w) / entropy,
        "ne_same/t": log_loss(y, p, sample_weight=w) / entropy,
        "ll/t": log_loss(y, p, sample_weight=w),
        "auc/t": roc_auc_score(y, p, sample_weight=w),
        "mse/t": np.average((p - y) ** 2, weights=w),  # sigmoid(logits) for a metric without the option
    }
    assert_close(values, expected, rtol=1e-9)
    other = not from_logits
    message = (
        f"Metric 'ne_other' (ne): its option from_logits={other} disagrees with the from_logits={from_logits} of "
        "evaluate and --from-logits (the same predictions cannot be both logits and probabilities): drop the "
        "option, which evaluate sets on every metric it builds, or make the two agree."
    )
    refused = {"ne_other": {"metric": "ne", "from_logits": other}}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate(table, {"t": ("s", "y")}, refused, from_logits=from_logits)
    with pytest.raises(ValueError, match=r"^Metric 'auc': `num_tasks` comes from the tasks, not from its options\.$"):
        evaluate(table, {"t": ("s", "y")}, {"auc": {"num_tasks": 1}}, from_logits=from_logits)
    # the command line: a config's option against --from-logits (or its absence), status 2 and the same message
    pq.write_table(table, tmp_path / "d.parquet")
    (tmp_path / "c.json").write_text(json.dumps({"metrics": refused}))
    args = ["evaluate", str(tmp_path / "d.parquet"), "--task", "t=s:y", "--config", str(tmp_path / "c.json")]
    assert cli.main([*args, "--no-progress", *(["--from-logits"] if from_logits else [])]) == 2
    assert capsys.readouterr().err == f"torchmetrics-ext evaluate: error: {message}\n"


def test_config_tasks_by_name_read_from_configs_default_columns(tmp_path, capsys):
    """`tasks: [click]` means what it means in RecMetricModule.from_config: RecTaskInfo's default columns."""
    rng = np.random.default_rng(11)
    n = 200
    frame = pd.DataFrame({"prediction": rng.uniform(size=n), "p_buy": rng.uniform(size=n)})
    frame["label"] = (rng.uniform(size=n) < frame["prediction"]).astype(np.int64)
    frame["y_buy"] = (rng.uniform(size=n) < frame["p_buy"]).astype(np.int64)
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "d.parquet")
    tasks = ["click", {"name": "buy", "prediction_name": "p_buy", "label_name": "y_buy"}, {"name": "dflt"}]
    # `dflt` reads the same columns as `click`: refused as from_config refuses it, naming both
    (tmp_path / "same.json").write_text(json.dumps({"paths": "d.parquet", "tasks": tasks, "metrics": ["auc"]}))
    err = _usage_error(capsys, ["evaluate", "--config", str(tmp_path / "same.json")])
    assert (
        "key 'tasks': Tasks 'click' and 'dflt' read the same columns (predictions 'prediction', labels 'label')" in err
    )
    tasks[2] = {"name": "half", "label_name": "y_buy"}  # the prediction column by default, the label named
    config = {"paths": "d.parquet", "tasks": tasks, "metrics": ["auc", "ctr"], "output": "o.json", "progress": False}
    (tmp_path / "eval.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.json")]) == 0
    got = _records(tmp_path / "o.json")
    for task, p, y in [("click", "prediction", "label"), ("buy", "p_buy", "y_buy"), ("half", "prediction", "y_buy")]:
        assert got[("all", task)]["auc"] == pytest.approx(roc_auc_score(frame[y], frame[p]), rel=1e-12)
        assert got[("all", task)]["ctr"] == pytest.approx(frame[y].mean(), rel=1e-12)
    # the Python API reads the file's tasks as the file does
    api = evaluate(tmp_path / "d.parquet", "click", ["auc"])
    assert api.values["auc/click"] == pytest.approx(roc_auc_score(frame["label"], frame["prediction"]), rel=1e-12)


def test_tasks_by_name_leave_a_weight_column_unread_and_say_so(tmp_path, capsys):
    """A task named alone reads RecTaskInfo's default prediction and label columns; a module would also
    weight it by a `weight` column present in the step, but evaluate reads only the columns it is told
    (weights come from `weights`, shared by every task: a column added to the logs must not change past
    numbers). That choice is kept and made visible: the values are the unweighted ones (the weighted
    ones differ in this data), and the result (and the command line) note the unread column."""
    rng = np.random.default_rng(5)
    n = 400
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p).astype(np.int64)
    w = np.where(y == 1, rng.uniform(0.1, 0.5, n), rng.uniform(1.0, 4.0, n))  # weighting moves every value
    frame = pd.DataFrame({"prediction": p, "label": y, "weight": w})
    ones = np.ones(n)

    def ref(weights):
        ctr = np.sum(weights * y) / np.sum(weights)
        return {"ctr": ctr, "ne": ne_ref(p, y, weights), "auc": roc_auc_score(y, p, sample_weight=weights)}

    unweighted, weighted = ref(ones), ref(w)
    for key in unweighted:  # the data tells the two apart
        assert unweighted[key] != pytest.approx(weighted[key], rel=1e-3)
    note = (
        "column 'weight' is in the data but not used: task 'click' weighted every row 1 (in RecMetricModule a "
        "task's 'weight' column is its weights: RecTaskInfo's default weight_name), as evaluate takes weights "
        "only from `weights` (--weights), shared by every task; give weights='weight' (--weights weight) to "
        "weight by it"
    )
    metrics = ["ctr", "ne", "auc"]
    # every form of a task: by name, as a dict, and with its columns named (`name=pred:label`, a
    # mapping, a TaskSpec), which used to get no note though the column was left unread alike
    spec = parse_task("click=prediction:label")
    named = ("click=prediction:label", ["click=prediction:label"], {"click": ("prediction", "label")}, [spec])
    for tasks in (["click"], "click", [{"name": "click"}], *named):
        result = evaluate(frame, tasks, metrics)
        assert {m: result.values[f"{m}/click"] for m in metrics} == pytest.approx(unweighted, rel=1e-9)
        assert result.warnings == [note]
    for tasks in (["click"], "click=prediction:label"):
        result = evaluate(frame, tasks, metrics, weights="weight")  # named: every task weighted by it
        assert {m: result.values[f"{m}/click"] for m in metrics} == pytest.approx(weighted, rel=1e-9)
        assert result.warnings == []
    # the column read in another role (a task's labels): not unread, nothing to note
    assert evaluate(frame, {"click": ("weight", "label")}, ["ctr"]).warnings == []
    assert evaluate(frame.drop(columns="weight"), ["click"], metrics).warnings == []  # no such column
    assert evaluate(frame.drop(columns="weight"), "click=prediction:label", metrics).warnings == []
    two = evaluate(frame.assign(p2=p[::-1]), ["click", {"name": "buy", "prediction_name": "p2"}], ["ctr"])
    assert two.warnings == [note.replace("task 'click'", "tasks 'click', 'buy'")]
    # the config file's `tasks: [click]` the same, the note printed as a warning
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "c.json").write_text(json.dumps({"paths": "d.parquet", "tasks": ["click"], "metrics": metrics}))
    out = tmp_path / "o.json"
    assert cli.main(["evaluate", "--config", str(tmp_path / "c.json"), "--no-progress", "--output", str(out)]) == 0
    assert f"warning: {note}\n" in capsys.readouterr().err
    assert {m: _records(out)[("all", "click")][m] for m in metrics} == pytest.approx(unweighted, rel=1e-9)
    # and `--task NAME=PRED:LABEL` on the command line
    args = ["evaluate", str(tmp_path / "d.parquet"), "--task", "click=prediction:label", "--metrics", "ctr"]
    assert cli.main([*args, "--no-progress"]) == 0
    assert f"warning: {note}\n" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make_by",
    [
        lambda frame: np.array(["country", "dataset"]),
        lambda frame: frame.columns[-2:],  # a pandas Index, as `frame.columns[...]` gives
        lambda frame: pd.Series(["country", "dataset"]),
        lambda frame: (name for name in ("country", "dataset")),
    ],
    ids=["numpy", "pandas-index", "pandas-series", "generator"],
)
def test_by_as_any_ordered_collection_of_names_is_those_columns(make_by):
    """`by=np.array([...])` or `by=frame.columns[...]` was refused (only lists and tuples were taken);
    any ordered collection of names is the columns in order. Reference: a pandas groupby with sklearn."""
    frame = make_frame(1500, 4)
    frame["country"] = frame["country"].fillna("none")
    by = make_by(frame)
    result = evaluate(frame, {"t": ("p_click", "y_click")}, ["ctr", "auc"], by=by)
    assert result.by == ("country", "dataset")
    assert all(type(name) is str for name in result.by)
    got = {(r["country"], r["dataset"]): r for r in result.records if r["segment"] != "all"}
    expected = frame.groupby(["country", "dataset"])
    assert sorted(got) == sorted(expected.groups)
    for key, part in expected:
        y, p = part["y_click"].to_numpy(), part["p_click"].to_numpy(np.float64)
        assert got[key]["rows"] == len(part)
        assert got[key]["ctr"] == pytest.approx(y.mean(), rel=1e-12)
        assert got[key]["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)


@pytest.mark.parametrize(
    "metrics", [np.array(["ctr", "auc"]), pd.Index(["ctr", "auc"]), pd.Series(["ctr", "auc"])], ids=type
)
def test_metrics_as_a_numpy_array_or_pandas_index_are_those_names(metrics):
    """`metrics=np.array([...])` failed with numpy's "truth value of an array is ambiguous" (the names
    were tested with `not metrics`); any collection of names is taken, the names as plain str."""
    frame = make_frame(800, 6)
    result = evaluate(frame, {"t": ("p_click", "y_click")}, metrics)
    assert result.metrics == ("ctr", "auc") and all(type(m) is str for m in result.metrics)
    y, p = frame["y_click"].to_numpy(), frame["p_click"].to_numpy(np.float64)
    assert result.values == pytest.approx({"ctr/t": y.mean(), "auc/t": roc_auc_score(y, p)}, rel=1e-9)


@pytest.mark.parametrize(
    "tasks",
    [
        np.array(["click=p_click:y_click", "like=p_like:y_like"]),
        pd.Series(["click=p_click:y_click", "like=p_like:y_like"]),
        {"click": np.array(["p_click", "y_click"]), "like": pd.Index(["p_like", "y_like"])},
    ],
    ids=["numpy", "pandas-series", "numpy-columns"],
)
def test_tasks_as_numpy_or_pandas_collections_are_those_tasks(tasks):
    """Tasks as a numpy array of 'name=pred:label' strings (or a task's columns as an array) were refused
    as "not tasks"; they are read as the list of the same strings. Reference: sklearn per task."""
    frame = make_frame(900, 7)
    result = evaluate(frame, tasks, ["auc"])
    assert result.tasks == ("click", "like") and all(type(t) is str for t in result.tasks)
    for task in ("click", "like"):
        y, p = frame[f"y_{task}"].to_numpy(), frame[f"p_{task}"].to_numpy(np.float64)
        assert result.values[f"auc/{task}"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
    with pytest.raises(ValueError, match=r"^Expected `tasks` as .* got \{'click'\}\.$"):
        evaluate(frame, {"click"}, ["auc"])  # a set: no order, as for `by`


@pytest.mark.parametrize("tasks", [{}, [], ()], ids=repr)
def test_no_tasks_is_refused_naming_what_was_given(tasks):
    """An empty mapping of tasks fell through to the module's "non-empty list of RecTaskInfo ..., got []":
    it names `tasks` in evaluate's terms and the value given, as an empty list does."""
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1]})
    with pytest.raises(ValueError, match=rf"^Expected `tasks` as .* got {re.escape(repr(tasks))}\.$"):
        evaluate(table, tasks, ["ctr"])


@pytest.mark.parametrize("metrics", [3, None, np.array([])], ids=repr)
def test_metrics_that_are_no_names_are_refused_naming_them(metrics):
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1]})
    with pytest.raises(ValueError) as caught:
        evaluate(table, {"t": ("p", "y")}, metrics)
    assert str(caught.value) == f"Expected `metrics` to be a non-empty list of metric names, got {metrics!r}."


@pytest.mark.parametrize(
    "by", [{"country", "dataset"}, np.array([1, 2]), np.array([["country"]])], ids=["a-set", "int-array", "2d-array"]
)
def test_by_without_an_order_or_names_is_refused(by):
    """A set has no column order, numbers are no names: refused as any other `by` that is no names."""
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1], "country": ["fr", "us"], "dataset": ["a", "b"]})
    with pytest.raises(ValueError, match=r"^Expected `by` to be a column name or a list of column names"):
        evaluate(table, {"t": ("p", "y")}, ["ctr"], by=by)


def _comma_frame() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    n = 600
    p = rng.uniform(0.05, 0.95, n)
    return pd.DataFrame(
        {
            "p": p,
            "y": (rng.uniform(size=n) < p).astype(np.int64),
            "a": rng.choice(np.array(["x", "z"], dtype=object), n),
            "b": rng.choice(np.array(["u", "v"], dtype=object), n),
            "a,b": rng.choice(np.array(["k", "m", "q"], dtype=object), n),
        }
    )


def _auc_by(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, float]:
    """Reference: a pandas groupby with sklearn's AUC, keyed by the segment's values."""
    return {
        key if isinstance(key, tuple) else (key,): roc_auc_score(part["y"], part["p"])
        for key, part in frame.groupby(columns if len(columns) > 1 else columns[0])
    }


def _auc_records(records: list[dict], columns: list[str]) -> dict[tuple, float]:
    return {tuple(r[c] for c in columns): r["auc"] for r in records if r["segment"] != "all"}


def test_by_with_commas_means_the_same_from_python_a_config_and_the_command_line(tmp_path, capsys):
    """`--by a,b` was two columns while `by="a,b"` (Python, config file) was one column named "a,b".
    One rule now: the column of exactly that name where the data has one, else the comma-separated
    columns (spaces around each dropped); a list names columns as they are."""
    frame = _comma_frame()
    tasks = {"t": ("p", "y")}
    two = _auc_by(frame, ["a", "b"])
    whole = _auc_by(frame, ["a,b"])
    no_whole = frame.drop(columns="a,b")
    for by in ("a,b", "a, b", " a ,b "):  # no column of that name: the two columns
        result = evaluate(no_whole, tasks, ["auc"], by=by)
        assert result.by == ("a", "b")
        assert _auc_records(result.records, ["a", "b"]) == pytest.approx(two, rel=1e-12)
    result = evaluate(frame, tasks, ["auc"], by="a,b")  # the data has the column "a,b": that column
    assert result.by == ("a,b",)
    assert _auc_records(result.records, ["a,b"]) == pytest.approx(whole, rel=1e-12)
    assert evaluate(frame, tasks, ["auc"], by=["a,b"]).by == ("a,b",)  # a list: names as they are
    assert evaluate(frame, tasks, ["auc"], by=["a", "b"]).by == ("a", "b")
    # files: a Parquet file and a CSV file whose quoted header holds the comma
    frame.to_parquet(tmp_path / "d.parquet")
    no_whole.to_parquet(tmp_path / "n.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert '"a,b"' in (tmp_path / "d.csv").read_text().splitlines()[0]
    for name in ("d.parquet", "d.csv"):
        assert evaluate(tmp_path / name, tasks, ["auc"], by="a,b").by == ("a,b",)
    # the command line and a config file read "a,b" the same way
    base = ["evaluate", "--task", "t=p:y", "--metrics", "auc", "--no-progress"]
    for data, columns, expected in (("d.parquet", ["a,b"], whole), ("n.parquet", ["a", "b"], two)):
        out = tmp_path / f"{data}.cli.json"
        assert cli.main([*base, str(tmp_path / data), "--by", "a,b", "--output", str(out)]) == 0
        assert json.loads(out.read_text())["by"] == columns
        assert _auc_records(json.loads(out.read_text())["records"], columns) == pytest.approx(expected, rel=1e-12)
        config = tmp_path / f"{data}.json"
        config.write_text(json.dumps({"paths": data, "tasks": ["t=p:y"], "metrics": ["auc"], "by": "a,b"}))
        out = tmp_path / f"{data}.config.json"
        assert cli.main(["evaluate", "--config", str(config), "--no-progress", "--output", str(out)]) == 0
        assert json.loads(out.read_text())["by"] == columns


def _cli_and_config_by(tmp_path, data: str, by: str) -> tuple[int, list | None]:
    """`--by` and a config file's `by` on `data`: their exit codes must agree; (code, the `by` written)."""
    out = tmp_path / "cli.json"
    base = ["evaluate", "--task", "t=p:y", "--metrics", "ctr", "--no-progress"]
    code = cli.main([*base, data, "--by", by, "--output", str(out)])
    config = tmp_path / "by.json"
    config.write_text(json.dumps({"paths": data, "tasks": ["t=p:y"], "metrics": ["ctr"], "by": by}))
    out2 = tmp_path / "config.json"
    assert cli.main(["evaluate", "--config", str(config), "--no-progress", "--output", str(out2)]) == code
    if code:
        return code, None
    written = json.loads(out.read_text())["by"]
    assert json.loads(out2.read_text())["by"] == written
    return code, written


def test_by_with_spaces_around_it_means_the_same_from_python_a_config_and_the_command_line(tmp_path, capsys):
    """`--by " country"` stripped the spaces while `evaluate(by=" country")` and a config's `by: " country"`
    kept them. One rule now, the commas' rule: the column of exactly that name where the data has one,
    else the stripped name; the values match pandas' groupby on the column chosen."""
    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame(
        {
            "p": rng.uniform(size=n),
            "y": rng.integers(0, 2, n),
            " country": rng.choice(["fr", "us"], n),
            "country": rng.choice(["de", "it", "es"], n),
        }
    )
    frame.to_parquet(tmp_path / "both.parquet")
    frame.drop(columns=" country").to_parquet(tmp_path / "stripped.parquet")
    for data, column in (("both.parquet", " country"), ("stripped.parquet", "country")):
        ref = frame.groupby(column)["y"].mean().to_dict()
        for by in (" country", " country "):
            if by == " country " and column == " country":
                continue  # no column " country ": the stripped name "country"
            result = evaluate(tmp_path / data, {"t": ("p", "y")}, ["ctr"], by=by)
            assert result.by == (column,)
            assert {r[column]: r["ctr"] for r in result.records[1:]} == pytest.approx(ref, rel=1e-12)
            assert _cli_and_config_by(tmp_path, str(tmp_path / data), by) == (0, [column])
    capsys.readouterr()


def test_by_name_held_whole_by_some_files_only_is_refused_as_ambiguous(tmp_path, capsys):
    """A column "a,b" in a later file (not the first) was split into "a" and "b" (the first file's columns
    alone decided): the rule now looks at every file, and a name some files hold whole and others do not
    is an error naming both, from Python, a config file and the command line."""
    pq.write_table(pa.table({"p": [0.3, 0.9], "y": [0, 1], "a": [1, 2], "b": [1, 1]}), tmp_path / "0.parquet")
    two = pa.table({"p": [0.3, 0.9], "y": [0, 1], "a,b": ["x", "y"], "a": [1, 2], "b": [1, 1]})
    pq.write_table(two, tmp_path / "1.parquet")
    message = (
        f"`by` 'a,b' is ambiguous: {tmp_path / '1.parquet'} has a column of exactly that name but "
        f"{tmp_path / '0.parquet'} has none, where it would read as the columns ['a', 'b']. Give the column one "
        "name in every file, or name the columns as a list, which is read as written: by=['a,b'] for the one "
        "column, by=['a', 'b'] for the columns (a config file's `by` list; --config on the command line)."
    )
    with pytest.raises(ValueError) as caught:
        evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="a,b")
    assert str(caught.value) == message
    capsys.readouterr()
    assert _cli_and_config_by(tmp_path, str(tmp_path), "a,b")[0] == 2
    assert capsys.readouterr().err.count(message) == 2
    # a list is read as written: the two columns over both files, as pandas groups them
    frame = pd.concat([pd.read_parquet(tmp_path / f) for f in ("0.parquet", "1.parquet")])
    result = evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by=["a", "b"])
    ref = frame.groupby(["a", "b"])["y"].mean().to_dict()
    assert {(r["a"], r["b"]): r["ctr"] for r in result.records[1:]} == ref
    # every file holding it: the one column
    pq.write_table(two, tmp_path / "0.parquet")
    assert evaluate(tmp_path, {"t": ("p", "y")}, ["ctr"], by="a,b").by == ("a,b",)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([1], "Expected a metric name in {where} to be a registry name (str), got 1 (int)."),
        ({2.0: None}, "Expected a metric name in {where} to be a registry name (str), got 2.0 (float)."),
        (
            {"x": {"metric": 3}},
            "Expected the option 'metric' of metric 'x' in {where} to be a registry name (str), got 3 (int).",
        ),
    ],
)
def test_metric_name_that_is_no_string_is_a_value_error_as_in_from_config(metrics, message):
    """`evaluate` raised TypeError for a metric name that is no string where `RecMetricModule.from_config`
    raises ValueError: both now raise ValueError with the same message, naming where the name came from."""
    from torchmetrics_ext import RecMetricModule

    table = pa.table({"p": [0.1, 0.8], "y": [0, 1]})
    with pytest.raises(ValueError) as caught:
        evaluate(table, {"t": ("p", "y")}, metrics)
    assert str(caught.value) == message.format(where="`metrics`")
    with pytest.raises(ValueError) as caught:
        RecMetricModule.from_config({"tasks": ["t"], "metrics": metrics})
    assert str(caught.value) == message.format(where="config 'metrics'")


@pytest.mark.parametrize(
    ("metrics", "repeated"),
    [
        (["ne", "ne"], ["ne"]),
        (("auc", "ne", "auc", "ctr"), ["auc"]),
        (np.array(["ndcg@10", "ctr", "ctr", "ndcg@10"]), ["ctr", "ndcg@10"]),
        (pd.Index(["ctr", "ctr"]), ["ctr"]),
    ],
)
def test_a_repeated_metric_name_is_refused_as_the_module_refuses_it(tmp_path, capsys, metrics, repeated):
    """`evaluate(metrics=["ne", "ne"])` (and `--metrics ne,ne`) reported the name once without a word, where
    `RecMetricModule` and the HF builders refuse a repeat (most likely a typo for another metric): refused now
    with the module's message, before any data is read (the file below is no CSV a reader accepts)."""
    from torchmetrics_ext import RecMetricModule, RecTaskInfo

    message = f"Expected distinct metric names in `metrics`, got {repeated} more than once."
    with pytest.raises(ValueError) as caught:
        RecMetricModule([RecTaskInfo("t", "y", "p")], [str(m) for m in metrics])
    assert str(caught.value) == message  # the reference: the module's own refusal
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"p,y\n0.5\n\x00\xff,,,\n")
    for data in (broken, pa.table({"p": [0.1, 0.8], "y": [0, 1]})):
        with pytest.raises(ValueError) as caught:
            evaluate(data, {"t": ("p", "y")}, metrics)
        assert str(caught.value) == message
    # a config file's list: the config key named, as for its other refusals
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({"paths": str(broken), "tasks": ["t=p:y"], "metrics": [str(m) for m in metrics]}))
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--config", str(config), "--no-progress"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: --config {config}: key 'metrics': {message}\n")
    # the command line: the parser's error naming --metrics, with or without a config file giving options
    listed = ",".join(str(m) for m in metrics)
    config.write_text(json.dumps({"paths": str(broken), "tasks": ["t=p:y"], "metrics": {"ne": {"eta": 0.1}}}))
    for args in ([str(broken), "--task", "t=p:y"], ["--config", str(config)]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["evaluate", *args, "--metrics", listed, "--no-progress"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.endswith(
            f"error: argument --metrics: Expected distinct metric names in --metrics, got {repeated} more than once.\n"
        )


@pytest.mark.parametrize("by", ["country dataset", "country;dataset", "country | dataset"])
def test_by_columns_separated_otherwise_than_by_commas_get_the_comma_form(tmp_path, capsys, by):
    """`--by "country dataset"` failed as a missing column with no hint: the message now gives the comma form."""
    table = pa.table({"p": [0.1, 0.8], "y": [0, 1], "country": ["fr", "us"], "dataset": ["a", "b"]})
    pq.write_table(table, tmp_path / "d.parquet")
    message = (
        f"{tmp_path / 'd.parquet'}: column {by!r} (--by segment) is missing; found columns "
        "['p', 'y', 'country', 'dataset']. Several segment columns are separated by commas: --by country,dataset "
        "(by=['country', 'dataset'] in Python, a list in a config file)."
    )
    with pytest.raises(InvalidDataError) as caught:
        evaluate(tmp_path / "d.parquet", {"t": ("p", "y")}, ["ctr"], by=by)
    assert str(caught.value) == message
    assert cli.main(["evaluate", str(tmp_path / "d.parquet"), "--task", "t=p:y", "--by", by, "--no-progress"]) == 2
    assert capsys.readouterr().err == f"torchmetrics-ext evaluate: error: {message}\n"
    # a name that is no such list of columns gets no such hint
    with pytest.raises(InvalidDataError, match=r"is missing; found columns \[[^]]*\]\.$"):
        evaluate(tmp_path / "d.parquet", {"t": ("p", "y")}, ["ctr"], by="country region")


def test_by_with_an_empty_item_between_commas_is_refused_naming_it():
    frame = _comma_frame().drop(columns="a,b")
    message = (
        "Expected `by` as a column name or comma-separated column names, got 'a,,b': no column has that name "
        "and item 2 of 3 between its commas is empty (a trailing or doubled comma?)."
    )
    with pytest.raises(ValueError) as caught:
        evaluate(frame, {"t": ("p", "y")}, ["auc"], by="a,,b")
    assert str(caught.value) == message
    # a blank name (no comma) says so, not "item 1 of 1 between its commas"
    with pytest.raises(ValueError) as caught:
        evaluate(frame, {"t": ("p", "y")}, ["auc"], by="  ")
    assert str(caught.value) == (
        "Expected `by` as a column name or comma-separated column names, got '  ': no column has that name and "
        "it holds only spaces."
    )


def test_config_by_one_column_name_is_a_list_of_one(tmp_path, capsys):
    data = _config_data(tmp_path)
    frame = pq.read_table(data).to_pandas()
    for name, by in (("one.json", "c"), ("list.json", ["c"])):
        config = {"paths": data.name, "tasks": ["t=p:y"], "metrics": ["auc"], "by": by, "output": f"{name}.out.json"}
        (tmp_path / name).write_text(json.dumps(config))
        assert cli.main(["evaluate", "--config", str(tmp_path / name), "--no-progress"]) == 0
    got = _records(tmp_path / "one.json.out.json")
    assert got == _records(tmp_path / "list.json.out.json")
    assert sorted(got) == [("all", "t"), ("c=fr", "t"), ("c=us", "t")]
    for c, rows in frame.groupby("c"):
        assert got[(f"c={c}", "t")]["auc"] == pytest.approx(roc_auc_score(rows["y"], rows["p"]), rel=1e-12)


def test_config_command_line_metrics_keep_the_files_options(tmp_path, capsys):
    """`--metrics` selects which metrics run; one the file configures keeps the file's options."""
    data = _config_data(tmp_path)
    w, y, p = (pq.read_table(data).column(c).to_numpy() for c in ("w", "y", "p"))
    config = {
        "paths": data.name,
        "tasks": ["t=p:y"],
        "metrics": {"ne": {"eta": 0.1}, "auc": None, "ne_raw": {"metric": "ne"}},
        "weights": "w",
        "progress": False,
    }
    (tmp_path / "eval.json").write_text(json.dumps(config))
    out = tmp_path / "o.json"
    args = ["evaluate", "--config", str(tmp_path / "eval.json"), "--output", str(out)]
    assert cli.main([*args, "--metrics", "ctr,ne,ne_raw"]) == 0
    record = _records(out)[("all", "t")]
    assert json.loads(out.read_text())["metrics"] == ["ctr", "ne", "ne_raw"]  # as selected; `auc` not run
    assert record["ne"] == pytest.approx(_ne_eta(p, y, w, 0.1), rel=1e-9)  # the file's eta, not the default
    assert record["ne_raw"] == pytest.approx(_ne_eta(p, y, w, 1e-12), rel=1e-6)  # a file key selected by name
    assert record["ctr"] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)  # not in the file: no options
    assert "auc" not in record
    # a file listing names (no options): the command line's names, as before
    (tmp_path / "names.json").write_text(json.dumps({**config, "metrics": ["ne", "auc"]}))
    args = ["evaluate", "--config", str(tmp_path / "names.json"), "--output", str(out), "--metrics", "ne"]
    assert cli.main(args) == 0
    assert _records(out)[("all", "t")]["ne"] == pytest.approx(_ne_eta(p, y, w, 1e-12), rel=1e-6)
    assert "auc" not in _records(out)[("all", "t")]


def test_config_without_data_or_tasks_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"metrics": ["ctr"]}))
    args = ["evaluate", "--config", str(tmp_path / "c.json"), "--task", "t=p:y"]
    assert "name the data: PATH" in _usage_error(capsys, args)
    assert "or `tasks` in --config" in _usage_error(
        capsys, ["evaluate", "x.parquet", "--config", str(tmp_path / "c.json")]
    )
    (tmp_path / "broken.json").write_text("{metrics: [ctr]}")
    args = ["evaluate", "x.parquet", "--task", "t=p:y", "--config", str(tmp_path / "broken.json")]
    assert "not valid JSON" in _usage_error(capsys, args)


def test_config_yaml_gives_the_json_values(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    data = _config_data(tmp_path)
    config = {"paths": str(data), "tasks": ["click=p:y"], "metrics": CONFIG_METRICS, "weights": "w"}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--output", str(tmp_path / "y.json")]) == 0
    (tmp_path / "eval.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.json"), "--output", str(tmp_path / "j.json")]) == 0
    assert _records(tmp_path / "y.json") == _records(tmp_path / "j.json")
    w, y, p = (pq.read_table(data).column(c).to_numpy() for c in ("w", "y", "p"))
    assert _records(tmp_path / "y.json")[("all", "click")]["ne"] == pytest.approx(_ne_eta(p, y, w, 0.1), rel=1e-9)


def test_config_yaml_without_pyyaml_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    (tmp_path / "eval.yml").write_text("metrics: [ctr]\n")
    err = _usage_error(capsys, ["evaluate", "x.parquet", "--task", "t=p:y", "--config", str(tmp_path / "eval.yml")])
    assert "needs PyYAML" in err and "pip install pyyaml" in err


def test_a_task_name_that_is_no_string_is_refused_naming_tasks(tmp_path, capsys):
    """``tasks: {on: [p, y]}`` in a YAML config (YAML reads an unquoted ``on``, ``yes``, ``no`` as a
    boolean) failed with "Expected `RecTaskInfo.name` to be a non-empty string, got True": neither
    the config key nor the cause was named. As a dict entry's name already was, it is refused up
    front, naming `tasks`, with the YAML hint where the name is a boolean."""
    pytest.importorskip("yaml")
    table = pa.table({"p": [0.2, 0.7], "y": [0, 1]})
    for name in (True, 1, ""):
        with pytest.raises(ValueError, match="task names as non-empty strings") as info:
            evaluate(table, {name: ("p", "y")}, ["ctr"])
        assert ("quote" in str(info.value)) == isinstance(name, bool)
    pq.write_table(table, tmp_path / "d.parquet")
    (tmp_path / "eval.yaml").write_text(f"paths: [{tmp_path / 'd.parquet'}]\ntasks: {{on: [p, y]}}\nmetrics: [ctr]\n")
    err = _usage_error(capsys, ["evaluate", "--config", str(tmp_path / "eval.yaml")])
    assert "key 'tasks'" in err and "True" in err and "quote" in err and "RecTaskInfo" not in err


def test_evaluate_metric_options_and_task_dicts_in_the_python_api(tmp_path):
    data = _config_data(tmp_path)
    w, y, p = (pq.read_table(data).column(c).to_numpy() for c in ("w", "y", "p"))
    tasks = [{"name": "click", "prediction_name": "p", "label_name": "y"}]
    result = evaluate(data, tasks, {"ne": {"eta": 0.1}, "ne_default": {"metric": "ne"}}, weights="w")
    assert result.values["ne/click"] == pytest.approx(_ne_eta(p, y, w, 0.1), rel=1e-9)
    assert result.values["ne_default/click"] == pytest.approx(_ne_eta(p, y, w, 1e-12), rel=1e-6)
    with pytest.raises(ValueError, match=r"Metric 'ne': .*eta"):
        evaluate(data, tasks, {"ne": {"eta": 0.7}})
    with pytest.raises(ValueError, match=r"Unknown task fields \['label'\] \(did you mean 'label_name'\?\)"):
        evaluate(data, [{"name": "click", "prediction_name": "p", "label": "y"}], ["ne"])


def _ndcg_at(frame: pd.DataFrame, k: int) -> float:
    """Mean NDCG@k (linear gain) over the sessions with a relevant row, written out with numpy."""
    values = []
    for _, rows in frame.groupby("s"):
        gains = rows["y"].to_numpy()[np.argsort(-rows["p"].to_numpy())][:k]
        ideal = np.sort(rows["y"].to_numpy())[::-1][:k]
        if ideal.sum() > 0:
            discounts = 1 / np.log2(np.arange(2, len(gains) + 2))
            values.append((gains * discounts).sum() / (ideal * discounts[: len(ideal)]).sum())
    return float(np.mean(values))


@pytest.mark.parametrize("by", [None, "country"])
def test_a_metric_key_named_ranking_next_to_ranking_metrics(by):
    """A user's key ``ranking`` is not the key evaluate gives the shared ranking metrics (was ``KeyError``)."""
    rng = np.random.default_rng(3)
    n = 60
    frame = pd.DataFrame(
        {
            "p": rng.random(n),
            "y": (rng.random(n) < 0.4).astype(float),
            "s": np.repeat(np.arange(12), 5),
            "country": np.repeat(["fr", "us"], n // 2),
        }
    )
    metrics = {"ranking": {"metric": "auc"}, "ndcg@10": None}
    result = evaluate(frame, {"t": ("p", "y")}, metrics, session="s", by=by)
    assert result.metrics == ("ranking", "ndcg@10")
    parts = [("all", frame)] + ([] if by is None else list(frame.groupby("country")))  # "all" rows come first
    assert len(result.records) == len(parts)
    for record, (_, part) in zip(result.records, parts):
        assert record["ranking"] == pytest.approx(roc_auc_score(part["y"], part["p"]), abs=1e-12)
        assert record["ndcg@10"] == pytest.approx(_ndcg_at(part, 10), abs=1e-12)


def _run_end_encoded(values: np.ndarray | list, dtype: pa.DataType | None = None) -> pa.Array:
    """``values`` as a run-end encoded Arrow array (one run per stretch of equal values)."""
    plain = pa.array(values, dtype)
    flat = pd.Series(plain.dictionary_decode() if pa.types.is_dictionary(plain.type) else plain, dtype=object)
    ends = np.flatnonzero(np.append(flat.iloc[1:].to_numpy() != flat.iloc[:-1].to_numpy(), True)) + 1
    return pa.RunEndEncodedArray.from_arrays(pa.array(ends, pa.int32()), plain.take(ends - 1))


def test_run_end_encoded_columns_are_read_as_their_values():
    """A ``pyarrow.Table`` whose label, weight, user id or ``by`` column is run-end encoded (``pa.RunEndEncodedArray``,
    as a table of sorted logs compresses them) was refused for its type; such columns are now read as their decoded
    values (slices that cut a run included), giving the values of the same table with plain columns: scikit-learn's
    AUC and pandas' group means over the rows, an ordered dictionary's order kept."""
    rng = np.random.default_rng(41)
    n = 500
    g = np.sort(rng.choice(np.array(["a", "b", "c"], dtype=object), n))
    user = np.repeat(np.arange(50), 10)
    y = np.repeat(rng.integers(0, 2, n // 5), 5)
    w = np.repeat(rng.choice([0.5, 1.0, 2.0], n // 25), 25)
    p = rng.uniform(size=n)
    tier = pa.DictionaryArray.from_arrays(pa.array(np.sort(rng.integers(0, 2, n)), pa.int8()), ["z", "a"], ordered=True)
    table = pa.table(
        {
            "p": p,
            "y": _run_end_encoded(y),
            "w": _run_end_encoded(w),
            "user": _run_end_encoded(user),
            "g": _run_end_encoded(g, pa.string()),
            "tier": _run_end_encoded(tier),
        }
    )
    assert all(pa.types.is_run_end_encoded(table.schema.field(c).type) for c in ("y", "w", "user", "g", "tier"))
    result = evaluate(table, {"t": ("p", "y")}, ["ctr", "auc", "gauc"], weights="w", user="user", by="g", batch_size=37)
    assert result.values["auc/t"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert result.values["gauc/t"] == pytest.approx(gauc_ref(p, y, user, w), abs=1e-12)
    frame = pd.DataFrame({"y": y * w, "w": w, "g": g})
    sums = frame.groupby("g").sum()
    assert [r["g"] for r in result.records[1:]] == ["a", "b", "c"]
    assert [r["ctr"] for r in result.records[1:]] == pytest.approx(list(sums.y / sums.w))
    for r in result.records[1:]:
        rows = g == r["g"]
        assert r["auc"] == pytest.approx(roc_auc_score(y[rows], p[rows], sample_weight=w[rows]), abs=1e-12)
    ordered = evaluate(table, {"t": ("p", "y")}, ["ctr"], by="tier", batch_size=37)
    labels = np.array(["z", "a"])[tier.indices.to_numpy()]
    assert [r["tier"] for r in ordered.records[1:]] == ["z", "a"]  # the dictionary's declared order
    assert [r["ctr"] for r in ordered.records[1:]] == pytest.approx([y[labels == name].mean() for name in ("z", "a")])


def test_run_end_encoded_columns_chunked_apart_with_nulls_and_chunk_dictionaries():
    """Run-end encoded columns whose chunks end at other rows than the plain columns' and than each other's, a
    ``by`` column of dictionaries that differ from chunk to chunk (unordered), and null labels skipped: each slice
    decodes only its rows, whatever chunk boundaries and runs it cuts. Reference: scikit-learn's AUC and pandas'
    group means over the rows whose label is not null."""
    rng = np.random.default_rng(8)
    n = 120
    p = rng.uniform(size=n)
    y = np.repeat(rng.integers(0, 2, n // 4), 4).astype(object)
    y[[5, 6, 7, 61]] = None  # nulls inside runs and a run of its own
    g = np.repeat(rng.choice(np.array(["a", "b", "c"], dtype=object), n // 6), 6)

    def chunked(values, cuts, encode):
        return pa.chunked_array([encode(values[i:j]) for i, j in zip([0, *cuts], [*cuts, n], strict=True)])

    def dictionary_runs(values):  # each chunk its own dictionary, in first-seen order
        codes, uniques = pd.factorize(values)
        return _run_end_encoded(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(list(uniques))))

    table = pa.table(
        {
            "p": chunked(p, [50, 51, 100], pa.array),
            "y": chunked(y, [7, 60, 99], lambda v: _run_end_encoded(list(v), pa.int64())),
            "g": chunked(g, [30, 80], dictionary_runs),
        }
    )
    assert not table["g"].chunk(0).values.dictionary.equals(table["g"].chunk(1).values.dictionary)
    kept = np.array([v is not None for v in y])
    yk, pk, gk = y[kept].astype(int), p[kept], g[kept]
    means = pd.Series(yk).groupby(gk).mean()
    for batch_size in (1, 13, 1000):
        result = evaluate(table, {"t": ("p", "y")}, ["ctr", "auc"], by="g", batch_size=batch_size, on_invalid="skip")
        assert result.values["auc/t"] == pytest.approx(roc_auc_score(yk, pk), abs=1e-12)
        assert [r["g"] for r in result.records[1:]] == list(means.index)
        assert [r["ctr"] for r in result.records[1:]] == pytest.approx(list(means))


@pytest.mark.parametrize("link_day", ["2026-01-01", "2026-01-09"])
def test_a_file_linked_into_another_partition_keeps_the_keys_of_where_it_lies(tmp_path, link_day):
    """A Hive partition holding a symbolic link to another partition's file (``day=2026-01-01/x.parquet ->
    ../day=2026-01-05/part.parquet``) is read once, but its rows took the keys of whichever path sorted first: the
    link's day when it sorted before the file's. They now take the keys of the path without a link below the
    directory named (where the file lies), whatever the names; the reference is pandas over the files' own rows."""
    root = tmp_path / "logs"
    days = {"2026-01-03": [0.1, 0.8, 0.6], "2026-01-05": [0.2, 0.9, 0.4, 0.7]}
    frames = {}
    for day, p in days.items():
        (root / f"day={day}").mkdir(parents=True)
        frames[day] = pd.DataFrame({"p": p, "y": [0, 1] * (len(p) // 2) + [1] * (len(p) % 2)})
        frames[day].to_parquet(root / f"day={day}" / "part.parquet")
    (root / f"day={link_day}").mkdir()
    os.symlink(root / "day=2026-01-05" / "part.parquet", root / f"day={link_day}" / "x.parquet")
    both = pd.concat([f.assign(day=day) for day, f in frames.items()])
    expected = both.groupby("day").y.mean()
    for data in (root, str(root / "day=*" / "*.parquet")):
        result = evaluate(data, {"t": ("p", "y")}, ["ctr"], by="day")
        assert result.rows_read == len(both)
        assert [r["day"] for r in result.records[1:]] == list(expected.index)
        assert [r["ctr"] for r in result.records[1:]] == pytest.approx(list(expected))
    labels = [source.label for source in open_sources(str(root))]
    assert sorted(labels) == sorted(str(root / f"day={day}" / "part.parquet") for day in days)


_FLOAT_IDS = (
    "expected integer ids. Write integer ids as integers (5, not 5.0): floating-point ids are not read as ids, since "
    "a float64 holds integers exactly only up to 2**53; convert them first, e.g. pandas "
    "`df[col] = df[col].astype('Int64')` (missing ids stay null) before writing the file, or pyarrow "
    "`table[col].cast(pa.int64())`."
)


@pytest.mark.parametrize("kind", ["csv", "parquet", "pandas", "arrow"])
def test_float_ids_are_refused_alike_with_the_conversion_to_make(tmp_path, kind):
    """User ids written as floats (``5.0``: a pandas integer column that held NaN) were refused in a CSV file with
    "Number text ids first ... cat.codes" (advice for text ids such as ``u7``) and in a Parquet file or frame with no
    advice at all. Every format now refuses them with the same words saying what to do; done as it says (pandas'
    ``astype('Int64')``), every format gives scikit-learn's per-user AUC mean."""
    rng = np.random.default_rng(5)
    n = 60
    users = rng.integers(0, 6, n).astype(np.float64)
    users[[3, 17]] = np.nan  # why pandas made the column float: missing ids
    frame = pd.DataFrame({"p": rng.uniform(size=n), "y": rng.integers(0, 2, n), "u": users})
    paths = {"csv": tmp_path / "a.csv", "parquet": tmp_path / "a.parquet"}

    def data(frame):
        if kind == "csv":
            frame.to_csv(paths[kind], index=False)  # pandas writes the float ids as 5.0
        elif kind == "parquet":
            frame.to_parquet(paths[kind])
        return paths.get(kind, pa.Table.from_pandas(frame) if kind == "arrow" else frame)

    with pytest.raises(InvalidDataError) as err:
        evaluate(data(frame), {"t": ("p", "y")}, ["gauc"], user="u")
    assert str(err.value).endswith(re.sub(r"^expected integer ids\. ", "", _FLOAT_IDS))
    if kind != "csv":
        assert f"has type double; {_FLOAT_IDS}" in str(err.value)
    fixed = frame.assign(u=frame["u"].astype("Int64"))
    result = evaluate(data(fixed), {"t": ("p", "y")}, ["gauc"], user="u", on_invalid="skip")
    kept = fixed["u"].notna().to_numpy()
    expected = gauc_ref(frame.p.to_numpy()[kept], frame.y.to_numpy()[kept], users[kept], np.ones(kept.sum()))
    assert result.values["gauc/t"] == pytest.approx(expected, abs=1e-12)


def test_without_weights_no_column_is_read_as_weights_whatever_its_name():
    """Without `weights` the module's tasks have no weight column (`weight_name=None`): evaluate passed a
    placeholder key, "<no weights>", which a column of that name (here the labels) then filled as weights."""
    y = [0, 1, 1, 0, 1]
    table = pa.table({"p": [0.2, 0.8, 0.4, 0.6, 0.9], "<no weights>": y})
    result = evaluate(table, {"t": ("p", "<no weights>")}, ["ctr"])
    assert result.values["ctr/t"] == pytest.approx(np.mean(y), rel=1e-12)  # unweighted: 3/5, not sum(y*y)/sum(y)


def test_a_task_dict_with_weight_name_none_has_unit_weights_next_to_weighted_tasks(frame, tmp_path, capsys):
    """`weight_name: None` in a task dict (Python and config file) is RecTaskInfo's: a task without weights.

    It was refused as an unknown field. One run mixes a task weighted by `weights` with one weighted 1,
    overall and per segment (the segments' kernels get a (T, N) weight), against sklearn/numpy over the
    weighted rows for one task and over the unweighted rows for the other; a string is still refused."""
    tasks = [
        {"name": "click", "prediction_name": "p_click", "label_name": "y_click"},
        {"name": "like", "prediction_name": "p_like", "label_name": "y_like", "weight_name": None},
    ]
    unit = frame.assign(w=1.0)
    result = evaluate(frame, tasks, METRICS, by="dataset", **KW)
    expected = {f"{m}/click": v for m, v in references(frame, "click").items()}
    expected |= {f"{m}/like": v for m, v in references(unit, "like").items()}
    for value in ("a", "b"):
        part = frame[frame["dataset"] == value]
        expected |= {f"{m}/click/dataset={value}": v for m, v in references(part, "click").items()}
        expected |= {f"{m}/like/dataset={value}": v for m, v in references(part.assign(w=1.0), "like").items()}
    assert_close(result.values, expected, rtol=1e-6)
    assert references(frame, "like")["ne"] != pytest.approx(expected["ne/like"], rel=1e-3)  # weights matter here
    assert result.warnings == []
    pairwise = evaluate(frame, tasks, ["xauc"], by="dataset", weights="w")  # the padded pair kernel
    for task, data in (("click", frame), ("like", unit)):
        for segment, part in (("", data), ("/dataset=a", data[frame["dataset"] == "a"])):
            p, y, w = (part[c].to_numpy(np.float64) for c in (f"p_{task}", f"y_{task}", "w"))
            assert pairwise.values[f"xauc/{task}{segment}"] == pytest.approx(pair_refs(p, y, w)[0], rel=1e-9)
    # the same from a config file's `weight_name: null`
    path = tmp_path / "logs.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({"tasks": tasks, "metrics": ["ne", "auc"], "weights": "w"}))
    out = tmp_path / "out.json"
    assert cli.main(["evaluate", str(path), "--config", str(config), "--no-progress", "--output", str(out)]) == 0
    records = _records(out)
    assert records[("all", "like")]["ne"] == pytest.approx(expected["ne/like"], rel=1e-9)
    assert records[("all", "click")]["auc"] == pytest.approx(expected["auc/click"], rel=1e-9)
    # every task without weights: `weights` is not read (a missing column is no error), no note either
    only = evaluate(frame.drop(columns="w"), tasks[1:], ["ctr"], weights="w")
    assert only.values["ctr/like"] == pytest.approx(frame["y_like"].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="'weight_name' takes only None") as refused:
        evaluate(frame, [{**tasks[1], "weight_name": "w"}], ["ctr"], weights="w")
    # a field RecTaskInfo knows is not called unknown (it sent users looking for a typo)
    assert str(refused.value).startswith("Task fields ['weight_name']; not per task")


def test_a_directory_follows_linked_subdirectories_once_and_stops_at_cycles(tmp_path):
    """``logs/day=2026-12-01 -> /mnt/...`` (a partition kept elsewhere) was skipped by the walk, silently.
    Linked subdirectories are read now, with their Hive keys from the link's name; a directory reached twice
    (a link to a partition of the tree, a cycle ``loop -> ..``, a link to itself) is read once and ends, and the
    files come in one sorted order whatever the links. The reference is pandas/numpy over each file's own rows."""
    if not hasattr(os, "symlink"):
        pytest.skip("no os.symlink")
    root, mnt = tmp_path / "logs", tmp_path / "mnt"
    rng = np.random.default_rng(3)
    frames = {}
    for day, where in (("2026-12-01", mnt / "day1"), ("2026-12-02", root / "day=2026-12-02")):
        where.mkdir(parents=True)
        frames[day] = pd.DataFrame({"p": rng.uniform(0.05, 0.95, 40), "y": rng.integers(0, 2, 40)})
        frames[day].to_parquet(where / "part.parquet")
    try:
        os.symlink(mnt / "day1", root / "day=2026-12-01", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links unsupported here")
    os.symlink("..", root / "day=2026-12-02" / "loop", target_is_directory=True)  # a cycle to logs
    os.symlink(root / "day=2026-12-02", root / "again", target_is_directory=True)  # a partition reached twice
    os.symlink(".", mnt / "day1" / "self", target_is_directory=True)  # a cycle below the link
    both = pd.concat([f.assign(day=day) for day, f in frames.items()])
    expected = both.groupby("day").y.mean()
    result = evaluate(str(root), {"t": ("p", "y")}, ["ctr"], by="day")
    assert result.rows_read == len(both)
    assert result.values["ctr/t"] == pytest.approx(both.y.mean(), rel=1e-12)
    assert [r["day"] for r in result.records[1:]] == list(expected.index)
    assert [r["ctr"] for r in result.records[1:]] == pytest.approx(list(expected), rel=1e-12)
    labels = [source.label for source in open_sources(str(root))]
    assert labels == [str(root / "day=2026-12-01" / "part.parquet"), str(root / "day=2026-12-02" / "part.parquet")]
    assert [source.label for source in open_sources(str(root))] == labels  # the same order every time


@pytest.mark.parametrize("named", ["day=1", "day=[1]", "day=1/"])
def test_a_link_to_an_ancestor_of_the_directory_named_reads_nothing_outside_it(tmp_path, named):
    """``logs/day=1/loop -> ..`` is a cycle, but its target (``logs``) was not read yet when ``logs/day=1`` (or a glob
    matching it) is named: the walk followed it and read ``logs/day=2`` too, rows the user did not name. A link to
    the directory holding it or to one of that directory's ancestors is a cycle and is skipped wherever the walk
    starts; a link to a sibling partition is still read. Reference: pandas over the files named."""
    if not hasattr(os, "symlink"):
        pytest.skip("no os.symlink")
    root = tmp_path / "logs"
    rng = np.random.default_rng(7)
    frames = {}
    for day, n in (("1", 30), ("2", 50), ("3", 20)):
        (root / f"day={day}").mkdir(parents=True)
        frames[day] = pd.DataFrame({"p": rng.uniform(0.05, 0.95, n), "y": rng.integers(0, 2, n)})
        frames[day].to_parquet(root / f"day={day}" / "part.parquet")
    try:
        os.symlink("..", root / "day=1" / "loop", target_is_directory=True)  # logs: an ancestor
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links unsupported here")
    os.symlink("../..", root / "day=1" / "up", target_is_directory=True)  # tmp_path: an ancestor too
    os.symlink(".", root / "day=1" / "self", target_is_directory=True)  # itself
    os.symlink(root / "day=3", root / "day=1" / "extra", target_is_directory=True)  # a sibling: read
    expected = pd.concat([frames["1"], frames["3"]])
    result = evaluate(str(root / named), {"t": ("p", "y")}, ["ctr"])
    assert result.rows_read == len(expected)
    assert result.values["ctr/t"] == pytest.approx(expected.y.mean(), rel=1e-12)


def test_a_run_refused_before_its_first_row_prints_no_progress_line(tmp_path, capsys):
    """A missing column is refused before any row is read: stderr holds the error alone, not an
    ``evaluate: 0 rows, 0 rows/s`` progress line first; a run that reads rows still ends with one."""
    frame = pd.DataFrame({"p": [0.2, 0.7, 0.6], "y": [0, 1, 1]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "x.parquet")
    assert cli.main(["evaluate", str(tmp_path / "x.parquet"), "--task", "t=p:yy", "--metrics", "ctr"]) == 2
    err = capsys.readouterr().err
    assert "rows/s" not in err
    assert "column 'yy'" in err
    assert cli.main(["evaluate", str(tmp_path / "x.parquet"), "--task", "t=p:y", "--metrics", "ctr"]) == 0
    assert "evaluate: 3 / 3 rows (100.0%)" in capsys.readouterr().err
