"""Property-based check of offline evaluation against references written here.

Hypothesis draws small tables (tied scores, zero and tiny base rates, one class in a segment,
zero and 2**-44 weights, null and NaN ``by`` cells, text, integer and float ``by`` columns,
numbers spelt as a CSV file may spell them, invalid rows with ``on_invalid="skip"``, logits),
splits them over several Parquet and CSV files (empty files, one-row row groups and batches
included; named one by one, or a directory of Hive partitions holding a ``_SUCCESS`` file) and
compares ``evaluate(...)`` on the files, on the in-memory ``pyarrow.Table`` and on the pandas
frame, and the ``torchmetrics-ext evaluate`` command's JSON output (metrics and their options
from a ``--config`` file), with per-segment references computed from the documented
definitions: ``sklearn.metrics.roc_auc_score``/``average_precision_score`` for AUC, AUPRC and
each user's value in GAUC/GAUPRC (``docs/auc.md``: the mean over users holding both classes,
``weight_groups`` and ``average_groups="all"`` as written there; the binned AUC as the AUC of the
bin indices), NE, log loss, CTR, calibration, MSE and accuracy as numpy formulas
(``docs/pointwise.md``), the ranking metrics with the pessimistic tie rule, linear gain and
``log2(rank + 1)`` discount, queries weighted by their largest row weight and
``empty_target_action`` (``docs/ranking.md``). How a file gives a ``by`` column back follows
``docs/evaluate.md`` (``as_read``): a CSV text column keeps the reader's null texts as text, a
number column reads them as the null segment, Hive keys are int32 or text.

20 examples by default (bounded, about 10 s); ``EVALFUZZ_EXAMPLES=800`` runs more of them locally.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from torchmetrics_ext import UndefinedMetricWarning, cli
from torchmetrics_ext.evaluate import evaluate

EPS = 1e-12  # NE's and log loss's default clamp (docs/pointwise.md)
CSV_NULLS = set(pa_csv.ConvertOptions().null_values)
# "NA", "nan" and "" are null texts of the CSV reader; "1" reads as a number there, "007" does not;
# "None", "/home", "a,b" and "'q" are quoted in segment labels
TEXTS = ["fr", "us", "x y", "None", "NA", "nan", "", "1", "007", "/home", "a,b", "'q"]
# numbers as a CSV file may spell them: a CSV-only column of these reads as int64, uint64, float64
# (when exact) or text (docs/evaluate.md), "007", "+1" and " 3" being ids
NUMBER_TEXTS = ["1", "-2", "1.5", "0.1", "-0", "1e3", "18446744073709551615", "9007199254740993", "007", "+1", " 3"]
INTS = [-2, 0, 3, 7, 10]
# dyadic values: exact in float32 and written by a CSV file as the same float64
SCORES = [0.0, 0.0625, 0.25, 0.5, 0.75, 0.9375, 1.0]
LOGITS = [-40.0, -3.0, -0.5, 0.0, 0.5, 2.0, 40.0]
WEIGHTS = [0.0, 0.5, 1.0, 2.0, 3.25, 2.0**-44]  # 2**-44: a base rate below NE's clamp
SCHEMA = pa.schema(
    [
        ("p_click", pa.float64()),
        ("y_click", pa.int64()),
        ("p_like", pa.float64()),
        ("y_like", pa.int64()),
        ("w", pa.float64()),
        ("user", pa.int64()),
        ("session", pa.int64()),
        ("country", pa.string()),
        ("hour", pa.int64()),
        ("bucket", pa.float64()),
    ]
)
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
PARTITIONS = ["3", "10", "-1", "x", "a%2Fb", HIVE_NULL, None]  # None: a file above the partitions
BY = [[], ["country"], ["hour"], ["bucket"], ["country", "hour"], ["hour", "bucket", "country"]]
NAN = "NaN"  # the NaN segment's key (a NaN is no dict key)
BUCKETS = [0.5, -0.0, 0.0, 1.5, math.nan]


# ----------------------------------------------------------------------------- references


def _cross_entropy(p: np.ndarray, y: np.ndarray, logits: bool, eta: float = EPS) -> np.ndarray:
    if logits:  # softplus(z) - y z, unclamped
        return np.log1p(np.exp(-np.abs(p))) + (1 - y) * np.maximum(p, 0) + y * np.maximum(-p, 0)
    q = np.clip(p, eta, 1 - eta)
    return -(y * np.log(q) + (1 - y) * np.log1p(-q))  # log1p: 1 - q keeps every digit of a tiny q


def _curve(score, p: np.ndarray, y: np.ndarray, w: np.ndarray, both: bool = True) -> float:
    """``score`` (roc_auc_score or average_precision_score) of the rows of non-zero weight."""
    keep = w > 0
    if not np.any(y[keep] > 0) or ((both or score is roc_auc_score) and not np.any(y[keep] == 0)):
        return math.nan
    return float(score(y[keep], p[keep], sample_weight=w[keep]))


def _auc(p, y, w):
    return _curve(roc_auc_score, p, y, w)


def _ap(p, y, w):
    return _curve(average_precision_score, p, y, w, both=False)  # positives only: 1


def _grouped(score, frame: pd.DataFrame, pred: str, label: str, by_weight: bool = False, every: bool = False) -> float:
    """Mean over the users holding positive and negative label weight (docs/auc.md).

    ``by_weight``: each user weighted by its total weight (``weight_groups=True``); ``every``:
    every user (``average_groups="all"``), one without both classes counting 0.5 (AUC), or 1
    with positive weight only and 0 without (AP).
    """
    values, sizes = [], []
    for _, rows in frame.groupby("user"):
        uw, uy = rows["w"].to_numpy(), rows[label].to_numpy(np.float64)
        positive, negative = np.sum(uw * uy) > 0, np.sum(uw * (1 - uy)) > 0
        if positive and negative:
            values.append(_curve(score, rows[pred].to_numpy(), uy, uw))
        elif every:
            values.append(0.5 if score is roc_auc_score else float(positive))
        else:
            continue
        sizes.append(uw.sum() if by_weight else 1.0)
    sizes = np.asarray(sizes)
    return float(np.sum(sizes * values) / sizes.sum()) if values and sizes.sum() > 0 else math.nan


def _ranked(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Labels in rank order: score descending, the more relevant last among tied scores."""
    return y[np.lexsort((y, -p))]


def _ndcg(p, y, k):
    ranked, ideal = _ranked(p, y)[:k], np.sort(y)[::-1][:k]
    discount = 1 / np.log2(np.arange(2, len(ranked) + 2))  # gain y, discount log2(rank + 1)
    return np.sum(ranked * discount) / np.sum(ideal * discount)


def _mrr(p, y, k):
    first = int(np.argmax(_ranked(p, y) > 0)) + 1
    return 1 / first if first <= k else 0.0


def _hits(p, y, k):
    return np.cumsum(_ranked(p, y) > 0)[:k]


RANKING = {
    "ndcg": _ndcg,
    "mrr": _mrr,
    "recall": lambda p, y, k: _hits(p, y, k)[-1] / np.sum(y > 0),
    "precision": lambda p, y, k: _hits(p, y, k)[-1] / k,
    "hit_rate": lambda p, y, k: float(_hits(p, y, k)[-1] > 0),
    "map": lambda p, y, k: (
        np.sum((_hits(p, y, k) / np.arange(1, len(_hits(p, y, k)) + 1))[(_ranked(p, y) > 0)[:k]]) / np.sum(y > 0)
    ),
}


def _per_query(frame: pd.DataFrame, pred: str, label: str, fn, k: int | None, empty: float | None = None) -> float:
    """Mean over the queries with a relevant row, each weighted by its largest row weight.

    A query without a relevant row is left out, or counts ``empty`` (``empty_target_action``).
    """
    total = weight = 0.0
    for _, query in frame.groupby("session"):
        w_q = query["w"].max()
        y = query[label].to_numpy(np.float64)
        if w_q <= 0 or (empty is None and not (y > 0).any()):  # no weight, or skipped
            continue
        value = fn(query[pred].to_numpy(), y, len(y) if k is None else k) if (y > 0).any() else empty
        total += w_q * value
        weight += w_q
    return total / weight if weight > 0 else math.nan


def reference(frame: pd.DataFrame, pred: str, label: str, k: int, logits: bool) -> dict[str, float]:
    z, y, w = (frame[c].to_numpy(np.float64) for c in (pred, label, "w"))
    p = 1 / (1 + np.exp(-z)) if logits else z
    total, positive = w.sum(), np.sum(w * y)
    negative = np.sum(w * (1 - y))
    ce = np.sum(w * _cross_entropy(z, y, logits))

    def mean(values):
        return np.sum(w * values) / total if total > 0 else math.nan

    ratio = mean(y)

    def ne(eta: float) -> float:
        if not (positive > 0 and negative > 0):
            return math.nan  # one class, or no weight (docs/policies.md)
        # -W [y log c + (1 - y) log(1 - c)] as the sums of each class's weight (W (1 - y) is the
        # negative weight, without the rounding of 1 - y near 1); the base rate clamped in the logs only
        c = min(max(ratio, eta), 1 - eta)
        return np.sum(w * _cross_entropy(z, y, logits, eta)) / -(positive * math.log(c) + negative * math.log1p(-c))

    # binned AUC: 64 bins uniform in the logit over (-16, 16), end bins clipped (docs/auc.md)
    with np.errstate(divide="ignore"):
        position = ((z if logits else np.log(p / (1 - p))) + 16) / 32 * 64
    bins = np.floor(np.clip(position, 0, 63))
    out = {
        "rows": int(np.count_nonzero(w)),  # the rows of non-zero weight (docs/evaluate.md, "Reading the result")
        "ne": ne(EPS),
        "ne_eta": ne(0.01),
        "log_loss": ce / total if total > 0 else math.nan,
        "calibration": np.sum(w * p) / positive if positive > 0 else math.nan,
        "ctr": ratio,
        "weighted_average": mean(p),
        "accuracy": mean((p >= 0.5) == (y > 0)),
        "mse": mean((p - y) ** 2),
        "auc": _auc(z, y, w),
        "auprc": _ap(z, y, w),
        "gauc": _grouped(roc_auc_score, frame, pred, label),
        "gauprc": _grouped(average_precision_score, frame, pred, label),
        "gauc_by_weight": _grouped(roc_auc_score, frame, pred, label, by_weight=True),
        "gauc_all": _grouped(roc_auc_score, frame, pred, label, every=True),
        "gauprc_all": _grouped(average_precision_score, frame, pred, label, every=True),
        "auc_binned": _auc(bins, y, w),
        "ndcg_zero": _per_query(frame, pred, label, _ndcg, k, empty=0.0),
        "mrr_one": _per_query(frame, pred, label, _mrr, None, empty=1.0),
        "ndcg": _per_query(frame, pred, label, _ndcg, None),
        "mrr": _per_query(frame, pred, label, _mrr, None),
    }
    for name, fn in RANKING.items():
        out[f"{name}@{k}"] = _per_query(frame, pred, label, fn, k)
    return out


def _cell(value):
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return None
    return value + 0.0 if isinstance(value, float) else value  # -0.0 is the segment 0.0


def expected(frame: pd.DataFrame, case: dict, by: list[str] | None = None) -> dict[tuple, dict[str, float]]:
    """``{(segment values or "all", task): {metric: value}}`` from the frame's valid rows."""
    tasks, k = case["tasks"], case["k"]
    by = case["by"] if by is None else by
    out = {}
    everything = frame
    # every segment of the data has a record for every task: 0 rows and nan where the task kept none of its rows
    segments = {tuple(_cell(v) for v in row) for row in frame[by].astype(object).to_numpy()} if by else set()
    for task in tasks:  # each task over the rows valid in its own columns (and the weights)
        frame = everything[case["valid_for"][task]]
        cells = frame[by].astype(object).to_numpy()
        keys = [tuple(_cell(v) for v in row) for row in cells] if by else [()] * len(frame)
        groups: dict[tuple, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(key, []).append(position)
        pred, label = f"p_{task}", f"y_{task}"
        out["all", task] = reference(frame, pred, label, k, case["from_logits"])
        if by:
            for key, rows in groups.items():
                out[key, task] = reference(frame.iloc[rows], pred, label, k, case["from_logits"])
            for key in segments - set(groups):
                out[key, task] = {**dict.fromkeys(out["all", task], math.nan), "rows": 0}
    return out


def _csv_type(texts: list[str]):
    """How a CSV-only column of these (non-null) texts reads: ``int``, ``float`` or ``str``."""
    if any(re.search(r"(^|[^0-9.])0[0-9]|\+|^\s|\s$", text) for text in texts):
        return str  # a number spelt as only ids are: text exactly as written
    if all(re.fullmatch(r"-?[0-9]+", text) for text in texts):
        values = [int(text) for text in texts]
        if all(-(2**63) <= v < 2**63 for v in values) or all(0 <= v < 2**64 for v in values):
            return int
    try:
        exact = all(Decimal(repr(float(text))) == Decimal(text) for text in texts)
    except ValueError:
        return str
    return float if exact else str


def as_arrow(case: dict) -> pd.DataFrame:
    """The frame's ``by`` values as Arrow and Parquet keep them: ``bucket``'s NaN is a segment of its own."""
    frame = case["frame"].copy()
    bucket = frame["bucket"].astype(object).to_numpy().copy()
    bucket[np.isnan(frame["bucket"].to_numpy())] = NAN
    bucket[case["bucket_null"]] = None
    frame["bucket"] = bucket
    return frame


def as_pandas(case: dict) -> pd.DataFrame:
    """The frame's ``by`` values as ``evaluate`` reads a pandas frame: NaN is the missing value."""
    return case["frame"]


def as_read(case: dict) -> pd.DataFrame:
    """The frame's ``by`` values as ``docs/evaluate.md`` says the files give them back.

    ``bucket`` is as Arrow holds it in a Parquet file; a CSV file writes its NaN and null cells
    as empty fields, both the null segment. A CSV file writes a null as an empty field. ``hour`` is a number column (a null field is the
    null segment); ``country`` is text (typed as the Parquet files' string where there are any,
    else as text since some value is no number), whose null texts (``""``, ``NA``) stay text;
    where every CSV text of it is an integer as numbers are written or a null text and no Parquet
    file holds it, it reads as int64, the null texts as the null segment.
    """
    frame, formats, parts = as_arrow(case), case["formats"], case["parts"]
    csv_rows = np.concatenate([rows for fmt, rows in zip(formats, parts) if fmt == "csv"] + [np.zeros(0, int)])
    texts = ["" if v is None or v is NAN or pd.isna(v) else v for v in frame["country"].iloc[csv_rows]]
    country = frame["country"].astype(object).to_numpy().copy()
    parse = str if "parquet" in formats else _csv_type([text for text in texts if text not in CSV_NULLS])
    if parse is str:  # text: the null texts are text too
        country[csv_rows] = texts
    else:  # a number column: the null texts are the null segment
        country[csv_rows] = [
            None if text in CSV_NULLS else parse(text) + (0.0 if parse is float else 0) for text in texts
        ]
    frame["country"] = country
    bucket = frame["bucket"].to_numpy().copy()
    bucket[csv_rows[bucket[csv_rows] == NAN]] = None
    frame["bucket"] = bucket
    # Hive keys: URI-decoded, int32 when every value is one, __HIVE_DEFAULT_PARTITION__ (or a
    # file above the partitions) null
    keys = [None if key in (None, HIVE_NULL) else unquote(key) for key in case["hive"] or [None] * len(parts)]
    as_int = all(re.fullmatch(r"-?[0-9]+", key) and -(2**31) <= int(key) < 2**31 for key in keys if key is not None)
    part = np.empty(len(frame), dtype=object)
    for key, rows in zip(keys, parts):
        part[rows] = None if key is None else int(key) if as_int else key
    frame["part"] = part
    return frame


# ----------------------------------------------------------------------------- data


@st.composite
def tables(draw):
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rate = {t: draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])) for t in ("click", "like")}
    distinct = draw(st.booleans())  # tied scores from a short list, or (mostly) distinct ones
    weighted = draw(st.booleans())
    texts = draw(st.sampled_from([TEXTS, NUMBER_TEXTS, NUMBER_TEXTS[:7], NUMBER_TEXTS[:2]]))

    from_logits = draw(st.booleans())

    def scores():
        if from_logits:
            return rng.choice(LOGITS, n) if not distinct else rng.integers(-4096, 4097, n) / 256
        return rng.choice(SCORES, n) if not distinct else rng.integers(0, 1025, n) / 1024

    frame = pd.DataFrame(
        {
            "p_click": scores(),
            "y_click": (rng.uniform(size=n) < rate["click"]).astype(np.int64),
            "p_like": scores(),
            "y_like": (rng.uniform(size=n) < rate["like"]).astype(np.int64),
            "w": rng.choice(WEIGHTS, n) if weighted else np.ones(n),
            "user": rng.integers(-1, 4, n) * draw(st.sampled_from([1, 5_000_000_000])),
            "session": rng.integers(0, 6, n) * draw(st.sampled_from([1, 3_000_000_000])),
            "country": pd.array([None if rng.uniform() < 0.2 else str(v) for v in rng.choice(texts, n)], dtype=object),
            "hour": pd.array([None if rng.uniform() < 0.2 else int(v) for v in rng.choice(INTS, n)], dtype="Int64"),
            "bucket": rng.choice(BUCKETS, n),  # NaN cells; the null ones are `bucket_null`
        }
    )
    bucket_null = rng.uniform(size=n) < 0.15
    valid = np.ones(n, dtype=bool)
    valid_for = {"click": valid, "like": valid}  # the rows each task keeps: an invalid click cell is no like's
    skip = draw(st.booleans())  # invalid cells, skipped with on_invalid="skip"
    if skip:
        bad = rng.uniform(size=n) < 0.2
        kind = rng.integers(0, 4 if weighted else 3, n)
        frame.loc[bad & (kind == 0), "p_click"] = math.nan  # NaN (Arrow), "null or NaN" (pandas), empty (CSV)
        frame.loc[bad & (kind == 1), "p_click"] = math.inf if from_logits else 1.5  # outside [0, 1]
        frame.loc[bad & (kind == 2), "y_click"] = 2  # not a binary label
        frame.loc[bad & (kind == 3), "w"] = -1.0  # a negative weight
        valid = ~bad
        valid_for = {"click": valid, "like": ~(bad & (kind == 3))}
    elif draw(st.booleans()):
        frame["y_click"] = frame["y_click"].astype(bool)  # written True/False in a CSV file
    num_files = draw(st.integers(1, 3))
    cuts = np.sort(rng.integers(0, n + 1, num_files - 1))  # empty files too
    parts = np.split(np.arange(n), cuts)
    formats = [draw(st.sampled_from(["csv", "parquet"])) for _ in parts]
    hive = [draw(st.sampled_from(PARTITIONS)) for _ in parts] if draw(st.booleans()) else None
    by = draw(st.sampled_from(BY))
    return {
        "frame": frame,
        "bucket_null": bucket_null,
        "valid": valid,
        "valid_for": valid_for,
        "from_logits": from_logits,
        "narrow": draw(st.booleans()),
        "hive": hive,
        "file_by": [*by, "part"] if hive and draw(st.booleans()) and set(hive) - {None, HIVE_NULL} else by,
        "on_invalid": "skip" if skip else "error",
        "parts": parts,
        "formats": formats,
        "row_group": draw(st.integers(1, 8)),
        "batch_size": draw(st.integers(1, 16)),
        "by": by,
        "tasks": draw(st.sampled_from([["click"], ["click", "like"]])),
        "weighted": weighted,
        "k": draw(st.integers(1, 4)),
    }


def arrow_table(case: dict) -> pa.Table:
    """The frame as Arrow holds it: ``bucket``'s NaN cells stay NaN, its null cells are null."""
    table = pa.Table.from_pandas(case["frame"].drop(columns="bucket"), schema=SCHEMA.remove(9), preserve_index=False)
    bucket = pa.array(case["frame"]["bucket"].to_numpy(), mask=case["bucket_null"], type=pa.float64())
    table = table.append_column(SCHEMA.field("bucket"), bucket)
    if case["narrow"]:  # as models log them: float32 scores and weights, int8 labels (every value exact)
        for name, dtype in [
            ("p_click", pa.float32()),
            ("p_like", pa.float32()),
            ("w", pa.float32()),
            ("y_like", pa.int8()),
        ]:
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(dtype))
    return table


def write_files(case: dict, root: Path) -> list[str]:
    """The files, named one by one, or (``case["hive"]``) the directory of their Hive partitions."""
    paths = []
    table = arrow_table(case)
    for i, (fmt, rows) in enumerate(zip(case["formats"], case["parts"])):
        part = case["frame"].iloc[rows].copy()
        part.loc[case["bucket_null"][rows], "bucket"] = math.nan  # written as an empty field, as NaN is
        path = root / f"part-{i}.{fmt}"
        if case["hive"]:  # data/part=KEY/part-i.csv, or data/part-i.csv above the partitions
            key = case["hive"][i]
            path = root / "data" / ("" if key is None else f"part={key}") / path.name
            path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pq.write_table(table.take(rows), path, row_group_size=case["row_group"])
        else:
            part.to_csv(path, index=False)
        paths.append(str(path))
    if case["hive"]:
        (root / "data" / "_SUCCESS").touch()  # skipped below a directory
        return [str(root / "data")]
    return paths


# ----------------------------------------------------------------------------- comparison


def _key(record: dict, by: list[str]) -> tuple:
    if record["segment"] == "all":
        return "all"
    values = []
    for column in by:
        value = record[column]
        if isinstance(value, float) and math.isnan(value):
            value = NAN
        elif value is None and f"{column}=nan" in record["segment"]:  # strict JSON: NaN is null
            value = NAN
        values.append(value)
    return tuple(values)


def _text(value) -> str:
    """A segment value as ``docs/evaluate.md`` writes it in a segment label."""
    if value is None:
        return "None"
    if value is NAN:
        return "nan"
    if isinstance(value, str):
        quoted = value == "None" or "/" in value or "," in value or value.startswith(("'", '"'))
        return repr(value) if quoted else value
    return repr(value)


def assert_matches(records: list[dict], want: dict, by: list[str], where: str) -> None:
    got = {(_key(r, by), r["task"]): r for r in records}
    for (key, _), record in got.items():
        label = "all" if key == "all" else ", ".join(f"{c}={_text(v)}" for c, v in zip(by, key))
        assert record["segment"] == label, f"{where}: segment {record['segment']!r}, documented {label!r}"
    assert set(got) == set(want), f"{where}: segments {sorted(map(str, got))} != {sorted(map(str, want))}"
    for key, values in want.items():
        for name, value in values.items():
            actual = got[key][name]
            actual = math.nan if actual is None else actual  # strict JSON writes nan as null
            assert (math.isnan(actual) and math.isnan(value)) or actual == pytest.approx(value, rel=1e-9, abs=1e-12), (
                f"{where}: {name} of {key}: {actual} != reference {value}"
            )


def assert_keys(result, names: list[str], by: list[str]) -> None:
    """``.values`` holds every record's value under ``metric/task[/column=value/...]``: every key its own."""
    keys = {}
    for record in result.records:
        key = _key(record, by)
        suffix = "" if key == "all" else "".join(f"/{c}={_text(v)}" for c, v in zip(by, key))
        for name in names:
            keys[f"{name}/{record['task']}{suffix}"] = record[name]
    assert len(keys) == len(result.records) * len(names)
    assert result.values.keys() == keys.keys()
    for key, value in keys.items():
        assert result.values[key] == value or (math.isnan(value) and math.isnan(result.values[key]))


def _arguments(case: dict, by: list[str] | None = None) -> dict:
    return {
        "weights": "w" if case["weighted"] else None,
        "user": "user",
        "session": "session",
        "by": case["by"] if by is None else by,
        "on_invalid": case["on_invalid"],
        "from_logits": case["from_logits"],
    }


POINTWISE = ["ne", "log_loss", "calibration", "ctr", "weighted_average", "accuracy", "mse"]
CURVES = ["auc", "auprc", "gauc", "gauprc", "ndcg", "mrr"]


def metrics(k: int) -> dict[str, dict | None]:
    """Registry names, and a few under other names with options (the per-segment paths honour them)."""
    names = {name: None for name in [*POINTWISE, *CURVES, *(f"{name}@{k}" for name in RANKING)]}
    return names | {
        "ne_eta": {"metric": "ne", "eta": 0.01},
        "gauc_by_weight": {"metric": "gauc", "weight_groups": True},
        "gauc_all": {"metric": "gauc", "average_groups": "all"},
        "gauprc_all": {"metric": "gauprc", "average_groups": "all"},
        "ndcg_zero": {"metric": f"ndcg@{k}", "empty_target_action": "zero"},
        "mrr_one": {"metric": "mrr", "empty_target_action": "one"},
        "auc_binned": {"metric": "auc", "num_bins": 64},  # no segmented kernel: one module per segment
    }


@settings(
    max_examples=int(os.environ.get("EVALFUZZ_EXAMPLES", 20)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
@given(case=tables())
def test_evaluate_matches_references(case):
    frame, by, k, tasks = case["frame"], case["by"], case["k"], case["tasks"]
    spec = {task: (f"p_{task}", f"y_{task}") for task in tasks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = evaluate(arrow_table(case), spec, metrics(k), batch_size=case["batch_size"], **_arguments(case))
        assert_matches(result.records, expected(as_arrow(case), case), by, "table")
        assert_keys(result, list(metrics(k)), by)
        result = evaluate(frame, spec, metrics(k), batch_size=case["batch_size"], **_arguments(case))
        assert_matches(result.records, expected(as_pandas(case), case), by, "pandas")

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            paths = write_files(case, root)
            by = case["file_by"]
            want = expected(as_read(case), case, by)
            result = evaluate(paths, spec, metrics(k), batch_size=case["batch_size"], **_arguments(case, by))
            assert_matches(result.records, want, by, "files")

            config = root / "eval.json"
            config.write_text(json.dumps({"metrics": metrics(k)}))
            args = ["evaluate", *paths, "--config", str(config), "--user", "user", "--session", "session"]
            args += [flag for task in tasks for flag in ("--task", f"{task}=p_{task}:y_{task}")]
            args += ["--weights", "w"] if case["weighted"] else []
            args += ["--by", ",".join(by)] if by else []
            output = root / "out.json"
            args += ["--from-logits"] if case["from_logits"] else []
            args += ["--batch-size", str(case["batch_size"]), "--on-invalid", case["on_invalid"]]
            assert cli.main([*args, "--output", str(output), "--no-progress"]) == 0
            payload = json.loads(output.read_text())
            assert payload["rows_read"] == len(frame)
            assert payload["rows_skipped"] == np.sum(~case["valid"])
            assert_matches(payload["records"], want, by, "cli")


# text built from what segment labels and keys use: the separators "/" and ",", "=", quotes, "None"
_CELL = (
    st.none() | st.sampled_from(["None", "nan", "'None'", "b'a'", "g=a", "/h=a"]) | st.text("ab/,= '\"\\N", max_size=6)
)


@settings(max_examples=int(os.environ.get("EVALFUZZ_EXAMPLES", 20)), deadline=None)
@given(
    rows=st.lists(st.tuples(_CELL, _CELL, st.sampled_from([0.0, 1.0])), min_size=1, max_size=30),
    binary=st.booleans(),
)
def test_every_segment_has_a_key_and_a_label_of_its_own(rows, binary):
    """Two --by columns of text (or bytes) holding the separators, quotes and "None": one record, one
    segment label and one .values key per distinct pair (None apart from "None"), each key written by the
    documented rule (docs/evaluate.md, "Keys and labels"), each value that of the pair's rows."""
    cells = [
        (None if g is None else g.encode() if binary else g, None if h is None else h.encode() if binary else h)
        for g, h, _ in rows
    ]
    dtype = pa.binary() if binary else pa.string()
    table = pa.table(
        {
            "p": np.linspace(0.1, 0.9, len(rows)),
            "y": [y for *_, y in rows],
            "g": pa.array([g for g, _ in cells], dtype),
            "h": pa.array([h for _, h in cells], dtype),
        }
    )
    groups: dict[tuple, list[float]] = {}
    for pair, (*_, y) in zip(cells, rows):
        groups.setdefault(pair, []).append(y)
    result = evaluate(table, {"t": ("p", "y")}, ["ctr"], by=["g", "h"])
    records = result.records[1:]
    assert len(records) == len(groups)
    assert len({r["segment"] for r in records}) == len(groups)
    assert len(result.values) == 1 + len(groups)

    def text(value) -> str:  # as docs/evaluate.md writes a value
        if isinstance(value, str):
            quoted = value == "None" or "/" in value or "," in value or value.startswith(("'", '"'))
            return repr(value) if quoted else value
        return repr(value)  # None, and bytes as their Python literal

    for record in records:
        pair = (record["g"], record["h"])
        assert record["ctr"] == pytest.approx(np.mean(groups[pair]), rel=1e-12)
        assert result.values[f"ctr/t/g={text(pair[0])}/h={text(pair[1])}"] == record["ctr"]
        assert record["segment"] == f"g={text(pair[0])}, h={text(pair[1])}"
