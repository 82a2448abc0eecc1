"""A Hypothesis state machine drives the ranking metrics and checks every value against a numpy reference.

The reference (``tests/helpers/ranking_reference.py``) is written from ``docs/ranking.md`` alone:
each query ranked by score descending with ties by relevance ascending (the documented tie rule),
the textbook per-query formulas (NDCG with linear or ``2^y - 1`` gain, recall, precision ``/k`` or
``/min(k, n_q)``, MRR, hit rate, MAP normalised by all relevant rows, R-precision, F1), and the
weighted mean over counted queries (a flat query weighs its largest row weight, a padded query its
given weight; ``empty_target_action`` skip/zero/one/error; ``remove_single_length_sessions``). It is
itself checked against ranx on tie-free data below.

The machine builds one metric (any single class, or ``RankingMetrics`` with several metrics and
cutoffs, ``None`` among them), in exact mode or with ``queries_complete_per_batch=True``, with or
without ``padding_value``, alone or in a ``MetricCollection(compute_groups=True)`` next to a second
ranking metric of other settings. What one query is follows the docs: in exact mode flat rows with
the same id are one query whatever batch they came in; with ``queries_complete_per_batch=True``
the rows of one id in one batch; a padded row is always one whole query (its real candidates).

Rules: a flat batch of 0..14 rows (ids of int8/int16/int32/int64/uint8 from a small pool, so
queries span batches, a few huge int64 ids; scores from a tied pool with ``±inf`` and ``±0.0`` or
random normals, in float16/bfloat16/float32/float64; graded or fractional relevance as bool,
uint8, int32, int64, float32 or float64; weights or none; a mask whose dropped rows may hold NaN
and negative relevance, never read) by ``update`` or ``forward`` (its value is the batch's own, the
functional twin's too); a padded ``(Q, L)`` batch (mask and/or ``padding_value`` slots holding NaN);
one to three lists of 256-320 candidates (padded, or flat rows of long queries in any order: the
``torch.topk`` path); an empty batch; ``compute`` (also the functional twin over every flat row kept, in exact mode with
flat rows only); ``reset``; a ``state_dict`` into a fresh metric (the dict or ``torch.save``/
``torch.load(weights_only=True)``); ``merge_state`` of another metric of the same settings (or its
``metric_state`` dict) that saw its own batches; ``clone``/``deepcopy``/pickle (a batch on the copy
leaves the original as it was; the machine goes on with the copy); and a rejected batch (NaN score,
negative or infinite relevance, negative or NaN weight, wrong shapes or dtypes, ``indexes`` missing
or unexpected, flat rows with ``padding_value``, an empty query under ``"error"`` where it raises
at ``update``) that raises and leaves every state as a deep copy taken before.

``STATEFUL_EXAMPLES`` (default 100, about 10 s) sets how many runs Hypothesis tries.
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.helpers.ranking_reference import CLASSES, NAMES, EmptyQueryError, group_rows, reference_values
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf

OPTIONAL_K = ("ndcg", "mrr", "map")  # k=None allowed (the whole list)
NO_K = ("r_precision",)
FUNCTIONS = {
    "ndcg": tmf.ndcg,
    "recall": tmf.recall_at_k,
    "precision": tmf.precision_at_k,
    "mrr": tmf.mrr,
    "hit_rate": tmf.hit_rate,
    "map": tmf.map_at_k,
    "r_precision": tmf.r_precision,
    "f1": tmf.f1_at_k,
}
KS = [1, 2, 3, 5, 10, 100]  # 100: larger than any query
PAD = -10.0
# tied scores, exact in every floating dtype; ±inf and both zeros are real scores (docs/ranking.md)
SCORES = [-math.inf, -2.5, -0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 3.0, math.inf]
PRED_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SIGNED_IDS = [torch.int8, torch.int16, torch.int32, torch.int64]
HUGE_IDS = [2**40, -(2**40)]  # int64 only: a wide id range (the kernel's multi-pass sort)
WEIGHTS = [0.0, 0.5, 1.0, 2.0, 3.0]

STATEFUL = settings(
    max_examples=int(os.environ.get("STATEFUL_EXAMPLES", 100)),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ----------------------------------------------------------------------------------------- settings


def key_of(name: str, k: int | None) -> str:
    return name if k is None else f"{name}@{k}"


@st.composite
def single_specs(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(NAMES), label="metric")
    if name in NO_K:
        k = None
    else:
        choices = [*KS, None] if name in OPTIONAL_K else KS
        k = draw(st.sampled_from(choices), label="k")
    kwargs: dict[str, Any] = {} if name in NO_K else {"k": k}
    if name == "ndcg":
        kwargs["exponential_gain"] = draw(st.booleans(), label="exponential_gain")
        kwargs["report_as_loss"] = draw(st.booleans(), label="report_as_loss")
    if name in ("precision", "f1"):
        kwargs["adaptive_k"] = draw(st.booleans(), label="adaptive_k")
    return {"kind": "single", "name": name, "kwargs": kwargs, "requests": [(name, k)]}


@st.composite
def combined_specs(draw: st.DrawFn) -> dict[str, Any]:
    metrics = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True), label="metrics")
    ks = draw(st.lists(st.sampled_from([1, 2, 3, 5, 100, None]), min_size=1, max_size=3, unique=True), label="ks")
    kwargs = {
        "ks": tuple(ks),
        "metrics": tuple(metrics),
        "exponential_gain": draw(st.booleans(), label="exponential_gain"),
        "adaptive_k": draw(st.booleans(), label="adaptive_k"),
    }
    requests = [
        (name, None) if name in NO_K else (name, k) for name in metrics for k in ([None] if name in NO_K else ks)
    ]
    return {"kind": "combined", "kwargs": kwargs, "requests": requests}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    collection = draw(st.booleans(), label="collection")
    main = draw(single_specs() if collection else st.one_of(single_specs(), combined_specs()), label="main")
    actions = ["skip", "zero", "one"] if collection else ["skip", "zero", "one", "error"]
    shared = {
        "queries_complete_per_batch": draw(st.booleans(), label="complete"),
        "remove_single_length_sessions": draw(st.booleans(), label="no_single"),
        "padding_value": draw(st.sampled_from([None, None, PAD]), label="padding_value"),
    }
    main["kwargs"].update(shared, empty_target_action=draw(st.sampled_from(actions), label="action"))
    specs = {"main": main}
    if collection:  # a second metric of other settings, updated through the same collection
        sibling = draw(single_specs(), label="sibling")
        sibling["kwargs"].update(shared, empty_target_action=draw(st.sampled_from(actions[:3]), label="action2"))
        specs["sibling"] = sibling
    return {"collection": collection, "specs": specs, **shared}


def build_one(spec: Mapping[str, Any]) -> Any:
    if spec["kind"] == "combined":
        return tmx.RankingMetrics(**spec["kwargs"])
    return CLASSES[spec["name"]](**spec["kwargs"])


def build(config: Mapping[str, Any]) -> Any:
    metrics = {name: build_one(spec) for name, spec in config["specs"].items()}
    if config["collection"]:
        return MetricCollection(metrics, compute_groups=True)
    return metrics["main"]


def expected_for(spec: Mapping[str, Any], queries: list[Any]) -> dict[str, float]:
    """The reference's values of one metric over ``queries``; raises EmptyQueryError as "error" does."""
    kw = spec["kwargs"]
    values = reference_values(
        queries,
        spec["requests"],
        exponential_gain=kw.get("exponential_gain", False),
        adaptive_k=kw.get("adaptive_k", False),
        empty_target_action=kw["empty_target_action"],
        remove_single_length_sessions=kw["remove_single_length_sessions"],
    )
    if kw.get("report_as_loss"):
        values = [1.0 - v for v in values]
    return {key_of(*request): v for request, v in zip(spec["requests"], values)}


def as_dict(spec: Mapping[str, Any], value: Any) -> dict[str, float]:
    if spec["kind"] == "combined":
        assert isinstance(value, dict) and list(value) == [key_of(*r) for r in spec["requests"]]
        return {key: float(v) for key, v in value.items()}
    assert isinstance(value, torch.Tensor) and value.shape == () and value.dtype == torch.float64, value
    return {key_of(*spec["requests"][0]): float(value)}


def close(got: Mapping[str, float], want: Mapping[str, float], where: str) -> None:
    assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), f"{where} {key}: {got[key]!r} != {value!r}"


def _flat(value: Any) -> Any:
    """A state in a comparable form (a list state's chunks joined, dtypes kept)."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), str(value.dtype), value.detach().double().flatten().tolist())
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, torch.Tensor) for v in value):
            return ("chunks", [_flat(v) for v in value])
        return [_flat(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _flat(v) for k, v in value.items()}
    return value


def states_of(obj: Any) -> Any:
    if isinstance(obj, MetricCollection):
        return {name: _flat(dict(m.metric_state)) for name, m in obj.items(keep_base=True, copy_state=False)}
    return _flat(dict(obj.metric_state))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# ----------------------------------------------------------------------------------------- batches


class Batch:
    """One batch: the keyword tensors given to the metric and what the reference reads of them."""

    def __init__(self, kwargs: dict[str, Any], rows: list[tuple[Any, float, float, float]], padded: list[Any]):
        self.kwargs = kwargs
        self.rows = rows  # flat rows kept by the mask: (id, score, relevance, weight)
        self.padded = padded  # padded queries: (scores, relevance, weight)

    def queries(self, batch_no: int | None) -> list[Any]:
        """This batch's queries alone (``batch_no`` tags flat ids when queries end with their batch)."""
        return flat_queries([(batch_no, r) for r in self.rows]) + list(self.padded)


def flat_queries(tagged: list[tuple[Any, tuple[Any, float, float, float]]]) -> list[Any]:
    if not tagged:
        return []
    keys = [(tag, row[0]) for tag, row in tagged]
    scores = np.array([row[1] for _, row in tagged], dtype=np.float64)
    relevance = np.array([row[2] for _, row in tagged], dtype=np.float64)
    weights = np.array([row[3] for _, row in tagged], dtype=np.float64)
    return group_rows(keys, scores, relevance, weights)


def draw_scores(data: st.DataObject, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    n = int(np.prod(shape))
    if data.draw(st.booleans(), label="tied_scores"):
        values = data.draw(st.lists(st.sampled_from(SCORES), min_size=n, max_size=n))
    else:  # distinct in float64; the cast to a narrow dtype ties some
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        values = np.random.default_rng(seed).normal(size=n).tolist()
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)


def draw_relevance(data: st.DataObject, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    kind = data.draw(st.sampled_from(["binary", "graded", "fractional"]), label="relevance")
    pool = {"binary": [0, 0, 1], "graded": [0, 0, 1, 2, 3], "fractional": [0.0, 0.0, 0.5, 1.0, 2.5]}[kind]
    values = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    dtypes = {
        "binary": [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64],
        "graded": [torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64],
        "fractional": [torch.float32, torch.float64],
    }[kind]
    dtype = data.draw(st.sampled_from(dtypes), label="relevance_dtype")
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)


def draw_weights(data: st.DataObject, n: int) -> torch.Tensor | None:
    mode = data.draw(st.sampled_from(["none", "none", "drawn", "zero"]), label="weights")
    if mode == "none":
        return None
    values = [0.0] * n if mode == "zero" else data.draw(st.lists(st.sampled_from(WEIGHTS), min_size=n, max_size=n))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64, torch.int64]), label="weight_dtype")
    if dtype == torch.int64:
        values = [float(int(v)) for v in values]
    return torch.tensor(values, dtype=dtype)


def _unread(tensor: torch.Tensor, drop: torch.Tensor, value: float) -> torch.Tensor:
    """``tensor`` with ``value`` where ``drop`` (rows a mask drops are never read), when its dtype holds it."""
    if tensor.dtype in (torch.bool, torch.uint8) and value < 0:
        return tensor
    return torch.where(drop, torch.tensor(value, dtype=tensor.dtype), tensor)


def flat_batch(data: st.DataObject, n: int | None = None) -> Batch:
    if n is None:
        n = data.draw(st.integers(0, 14), label="n")
    id_dtype = data.draw(st.sampled_from([*SIGNED_IDS, torch.uint8]), label="id_dtype")
    pool = list(range(0, 7)) if id_dtype == torch.uint8 else list(range(-2, 5))
    if id_dtype == torch.int64:
        pool += HUGE_IDS
    ids = torch.tensor(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)), dtype=id_dtype)
    preds = draw_scores(data, (n,), data.draw(st.sampled_from(PRED_DTYPES), label="pred_dtype"))
    target = draw_relevance(data, (n,))
    weights = draw_weights(data, n)
    mask = None
    if n and data.draw(st.booleans(), label="mask"):
        mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=torch.bool)
        if data.draw(st.booleans(), label="garbage_in_dropped_rows"):
            preds, target = _unread(preds, ~mask, math.nan), _unread(target, ~mask, -1.0)
    keep = np.ones(n, dtype=bool) if mask is None else mask.numpy()
    p, y = preds.double().numpy(), target.double().numpy()
    w = np.ones(n) if weights is None else weights.double().numpy()
    rows = [(int(ids[i]), float(p[i]), float(y[i]), float(w[i])) for i in range(n) if keep[i]]
    kwargs = {"preds": preds, "target": target, "indexes": ids, "mask": mask, "weights": weights}
    return Batch(kwargs, rows, [])


def padded_batch(data: st.DataObject, padding_value: float | None) -> Batch:
    q = data.draw(st.integers(1, 4), label="queries")
    width = data.draw(st.integers(1, 6), label="width")
    preds = draw_scores(data, (q, width), data.draw(st.sampled_from(PRED_DTYPES), label="pred_dtype"))
    target = draw_relevance(data, (q, width))
    weights = draw_weights(data, q)
    keep = torch.ones(q, width, dtype=torch.bool)
    mask = None
    if data.draw(st.booleans(), label="mask"):
        mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=q * width, max_size=q * width))).reshape(
            q, width
        )
        keep &= mask
    if padding_value is not None:
        lengths = torch.tensor(data.draw(st.lists(st.integers(0, width), min_size=q, max_size=q)))
        slots = torch.arange(width) >= lengths[:, None]
        preds = preds.masked_fill(slots, padding_value)
        target = target.masked_fill(slots, 0)  # a relevant candidate scored `padding_value` is refused
        keep &= ~slots
    if data.draw(st.booleans(), label="garbage_in_padding"):  # padding is never read: NaN, relevance -1
        if mask is not None:
            preds, target = _unread(preds, ~mask, math.nan), _unread(target, ~mask, -1.0)
        else:
            target = _unread(target, ~keep, -1.0)
    p, y = preds.double().numpy(), target.double().numpy()
    w = np.ones(q) if weights is None else weights.double().numpy()
    k = keep.numpy()
    padded = [(p[i][k[i]], y[i][k[i]], float(w[i])) for i in range(q) if k[i].any()]
    return Batch({"preds": preds, "target": target, "mask": mask, "weights": weights}, [], padded)


# ----------------------------------------------------------------------------------------- the machine


class RankingMachine(RuleBasedStateMachine):
    """One ranking metric (or a collection of two) and the batches it was given since its last reset."""

    def __init__(self) -> None:
        super().__init__()
        self.metric: Any = None

    @initialize(config=configs())
    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.metric = build(config)
        self.history: list[tuple[int, Batch]] = []  # (batch number, batch) since the last reset
        self.batch_no = 0
        self.changed = True  # since the last compute: a repeated compute() returns its cached value, unwarned

    # ------------------------------------------------------------------------- references

    def queries(self, history: list[tuple[int, Batch]]) -> list[Any]:
        complete = self.config["queries_complete_per_batch"]
        tagged = [(no if complete else None, row) for no, batch in history for row in batch.rows]
        return flat_queries(tagged) + [q for _, batch in history for q in batch.padded]

    def expected(self, history: list[tuple[int, Batch]]) -> dict[str, dict[str, float]] | None:
        """Each metric's reference values; None where ``empty_target_action="error"`` raises."""
        try:
            return {name: expected_for(spec, self.queries(history)) for name, spec in self.config["specs"].items()}
        except EmptyQueryError:
            return None

    def got(self, value: Any) -> dict[str, dict[str, float]]:
        specs = self.config["specs"]
        if self.config["collection"]:
            return {name: as_dict(spec, value[name]) for name, spec in specs.items()}
        return {"main": as_dict(specs["main"], value)}

    def raises_at_update(self, batch: Batch) -> bool:
        """Whether ``update`` refuses ``batch`` under "error": its padded queries, or all of them when complete."""
        if self.config["specs"]["main"]["kwargs"]["empty_target_action"] != "error":
            return False
        complete = self.config["queries_complete_per_batch"]
        return self.expected([(-1, Batch({}, batch.rows if complete else [], batch.padded))]) is None

    # ------------------------------------------------------------------------- updates

    def _feed(self, batch: Batch, forward: bool) -> None:
        kwargs = {k: v for k, v in batch.kwargs.items() if v is not None}
        mine = [(self.batch_no, batch)]
        before = states_of(self.metric)
        if forward:
            batch_values = self.expected(mine)  # forward's value is the batch's own, queries of other batches aside
            if batch_values is None:
                with pytest.raises(ValueError, match="empty_target_action='error'"):
                    self.metric(**kwargs)
                assert _same(states_of(self.metric), before), "a refused forward changed the state"
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                value = self.metric(**kwargs)
            close_all(self.got(value), batch_values, "forward")
        elif self.raises_at_update(batch):
            with pytest.raises(ValueError, match="empty_target_action='error'"):
                self.metric.update(**kwargs)
            assert _same(states_of(self.metric), before), "a refused update changed the state"
            return
        else:
            self.metric.update(**kwargs)
        self.history.append((self.batch_no, batch))
        self.batch_no += 1
        self.changed = True
        self.check_functional(batch)

    def check_functional(self, batch: Batch) -> None:
        """The functional twin of the main metric over this batch alone gives the batch's reference."""
        spec = self.config["specs"]["main"]
        kw = dict(spec["kwargs"])
        kw.pop("queries_complete_per_batch")
        args = {k: v for k, v in batch.kwargs.items() if v is not None}
        if batch.rows or not batch.padded:
            kw["padding_value"] = None  # flat rows take none (the class refuses them with one)
        want = self.expected([(0, batch)])
        fn = tmf.ranking_metrics if spec["kind"] == "combined" else FUNCTIONS[spec["name"]]
        if not (batch.rows or batch.padded):
            return
        if want is None:
            with pytest.raises(ValueError, match="empty_target_action='error'"):
                fn(**args, **kw)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            close(as_dict(spec, fn(**args, **kw)), want["main"], "functional")

    @precondition(lambda self: self.config["padding_value"] is None)
    @rule(data=st.data(), forward=st.booleans())
    def update_flat(self, data: st.DataObject, forward: bool) -> None:
        self._feed(flat_batch(data), forward)

    @rule(data=st.data(), forward=st.booleans())
    def update_padded(self, data: st.DataObject, forward: bool) -> None:
        self._feed(padded_batch(data, self.config["padding_value"]), forward)

    @precondition(lambda self: len(self.history) < 12)
    @rule(data=st.data(), padded=st.booleans(), forward=st.booleans())
    def update_long_lists(self, data: st.DataObject, padded: bool, forward: bool) -> None:
        """One to three lists of 256-320 candidates: the ``torch.topk`` path (docs/ranking.md, step 9) for small k."""
        padded = padded or self.config["padding_value"] is not None
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        rng = np.random.default_rng(seed)
        q = int(rng.integers(1, 4))
        width = int(rng.integers(256, 321))
        dtype = data.draw(st.sampled_from(PRED_DTYPES), label="pred_dtype")
        tied = rng.choice(np.array(SCORES), size=(q, width))
        preds = torch.tensor(np.where(rng.random((q, width)) < 0.5, tied, rng.normal(size=(q, width)))).to(dtype)
        target = torch.tensor(rng.integers(0, 3, size=(q, width)) * (rng.random((q, width)) < 0.05))
        weights = torch.tensor(rng.choice(WEIGHTS, size=q)) if rng.random() < 0.5 else None
        lengths = rng.integers(1, width + 1, size=q)
        keep = torch.arange(width) < torch.tensor(lengths)[:, None]
        p, y = preds.double().numpy(), target.double().numpy()
        w = np.ones(q) if weights is None else weights.numpy()
        if padded:
            mask = keep
            if self.config["padding_value"] is not None:
                preds, mask = preds.masked_fill(~keep, self.config["padding_value"]), None
                target = target.masked_fill(~keep, 0)  # a relevant candidate scored `padding_value` is refused
            queries = [(p[i][keep[i]], y[i][keep[i]], float(w[i])) for i in range(q)]
            batch = Batch({"preds": preds, "target": target, "mask": mask, "weights": weights}, [], queries)
        else:  # flat rows of a few long queries, ids in any order
            ids = torch.tensor(rng.choice([-3, 7, 2**35], size=q, replace=False)).repeat_interleave(width)
            order = torch.tensor(rng.permutation(q * width))
            rows_kept = keep.reshape(-1)[order]
            row_w = None if weights is None else weights.repeat_interleave(width)[order][rows_kept]
            kwargs = {
                "preds": preds.reshape(-1)[order][rows_kept],
                "target": target.reshape(-1)[order][rows_kept],
                "indexes": ids[order][rows_kept],
                "mask": None,
                "weights": row_w,
            }
            flat_w = np.ones(int(rows_kept.sum())) if row_w is None else row_w.numpy()
            fp, fy, fi = kwargs["preds"].double().numpy(), kwargs["target"].double().numpy(), kwargs["indexes"].numpy()
            rows = [(int(fi[i]), float(fp[i]), float(fy[i]), float(flat_w[i])) for i in range(len(fi))]
            batch = Batch(kwargs, rows, [])
        self._feed(batch, forward)

    @rule(padded=st.booleans())
    def update_empty(self, padded: bool) -> None:
        before = states_of(self.metric)
        if padded or self.config["padding_value"] is not None:  # flat rows with `padding_value` raise, even none
            self.metric.update(torch.zeros(0, 3), torch.zeros(0, 3))
        else:
            self.metric.update(torch.zeros(0), torch.zeros(0), indexes=torch.zeros(0, dtype=torch.int64))
        assert _same(states_of(self.metric), before), "an empty batch changed the state"

    # ------------------------------------------------------------------------- checks

    @rule()
    def check_values(self) -> None:
        want = self.expected(self.history)
        if want is None:
            before = states_of(self.metric)
            with pytest.raises(ValueError, match="empty_target_action='error'"):
                self.metric.compute()
            assert _same(states_of(self.metric), before), "a refused compute changed the state"
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = self.metric.compute()
        undefined = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
        close_all(self.got(value), want, "compute")
        nan_metrics = [name for name, values in want.items() if any(math.isnan(v) for v in values.values())]
        if self.changed:
            assert len(undefined) == len(nan_metrics), f"warnings {undefined} for undefined {nan_metrics}"
        else:
            assert len(undefined) <= len(nan_metrics), undefined
        self.changed = False
        self.check_functional_history(want)

    def check_functional_history(self, want: Mapping[str, Mapping[str, float]]) -> None:
        """Exact mode, flat rows only: the functional twin over every kept row equals compute's reference."""
        if self.config["queries_complete_per_batch"] or any(b.padded for _, b in self.history):
            return
        rows = [row for _, batch in self.history for row in batch.rows]
        if not rows:
            return
        spec = self.config["specs"]["main"]
        kw = {k: v for k, v in spec["kwargs"].items() if k != "queries_complete_per_batch"}
        preds = torch.tensor([r[1] for r in rows], dtype=torch.float64)
        target = torch.tensor([r[2] for r in rows], dtype=torch.float64)
        ids = torch.tensor([r[0] for r in rows], dtype=torch.int64)
        weights = torch.tensor([r[3] for r in rows], dtype=torch.float64)
        fn = tmf.ranking_metrics if spec["kind"] == "combined" else FUNCTIONS[spec["name"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = fn(preds, target, ids, weights=weights, **kw)
        close(as_dict(spec, value), want["main"], "functional over the history")

    # ------------------------------------------------------------------------- life cycle

    @rule()
    def reset(self) -> None:
        self.metric.reset()
        self.history = []
        self.changed = True

    @rule(how=st.sampled_from(["state_dict", "plain_dict", "bytes"]))
    def resume_from_checkpoint(self, how: str) -> None:
        self.metric.persistent(True)
        state = self.metric.state_dict()
        if how == "plain_dict":
            state = dict(state)
        elif how == "bytes":
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            state = torch.load(buffer, weights_only=True)
        fresh = build(self.config)
        fresh.persistent(True)
        fresh.load_state_dict(state)
        self.metric = fresh
        self.changed = True

    @precondition(lambda self: not self.config["collection"])
    @rule(data=st.data(), as_dict_=st.booleans())
    def merge_another(self, data: st.DataObject, as_dict_: bool) -> None:
        other = build(self.config)
        batches = []
        for _ in range(data.draw(st.integers(0, 3), label="other_batches")):
            flat = self.config["padding_value"] is None and data.draw(st.booleans(), label="flat")
            batch = flat_batch(data) if flat else padded_batch(data, self.config["padding_value"])
            if self.raises_at_update(batch):
                continue
            other.update(**{k: v for k, v in batch.kwargs.items() if v is not None})
            batches.append(batch)
        self.metric.merge_state(other.metric_state if as_dict_ else other)
        for batch in batches:
            self.history.append((self.batch_no, batch))
            self.batch_no += 1
        self.changed = True

    @rule(data=st.data(), how=st.sampled_from(["clone", "deepcopy", "pickle"]))
    def continue_on_a_copy(self, data: st.DataObject, how: str) -> None:
        if how == "clone":
            copied = self.metric.clone()
        elif how == "deepcopy":
            copied = copy.deepcopy(self.metric)
        else:
            copied = pickle.loads(pickle.dumps(self.metric))
        original, before = self.metric, states_of(self.metric)
        self.metric = copied
        flat = self.config["padding_value"] is None and data.draw(st.booleans(), label="flat")
        self._feed(flat_batch(data) if flat else padded_batch(data, self.config["padding_value"]), False)
        assert _same(states_of(original), before), f"a batch on a {how} changed the original"

    @rule(data=st.data())
    def rejected_batch(self, data: st.DataObject) -> None:
        padded = self.config["padding_value"] is not None or data.draw(st.booleans(), label="padded")
        batch = (
            padded_batch(data, self.config["padding_value"])
            if padded
            else flat_batch(data, data.draw(st.integers(1, 8)))
        )
        kw = dict(batch.kwargs)
        preds, target = kw["preds"], kw["target"]
        kinds = [
            "nan_pred",
            "negative_target",
            "inf_target",
            "short_target",
            "int_preds",
            "bool_mask_int",
            "wrong_weights",
        ]
        kinds += ["indexes_given", "padded_3d"] if padded else ["float_indexes", "no_indexes"]
        if kw["weights"] is not None:
            kinds += ["negative_weight", "nan_weight"]
        if not padded and self.config["padding_value"] is not None:
            kinds.append("flat_with_padding_value")
        kind = data.draw(st.sampled_from(kinds), label="bad")
        keep = torch.ones(preds.shape, dtype=torch.bool) if kw["mask"] is None else kw["mask"]
        if self.config["padding_value"] is not None and padded:
            keep = keep & (preds != self.config["padding_value"])
        spot = torch.nonzero(keep.reshape(-1))  # a kept entry: padding is never read
        if spot.numel() == 0 and kind in ("nan_pred", "negative_target", "inf_target", "negative_weight", "nan_weight"):
            kind = "short_target"  # nothing is read: a bad value in padding, or in the weight of no query, is taken
        flat_at = int(spot[data.draw(st.integers(0, spot.numel() - 1), label="at")]) if spot.numel() else 0
        row = flat_at // preds.shape[1] if padded else flat_at  # the weight of that entry's query (or row)
        if kind == "nan_pred":
            kw["preds"] = preds.clone().reshape(-1).index_fill_(0, torch.tensor(flat_at), math.nan).reshape(preds.shape)
        elif kind in ("negative_target", "inf_target"):
            t = target.double().reshape(-1).clone()
            t[flat_at] = -1.0 if kind == "negative_target" else math.inf
            kw["target"] = t.reshape(target.shape)
        elif kind == "short_target":
            kw["target"] = target.reshape(-1)[:-1] if target.numel() > 1 else target.reshape(-1).repeat(2)
        elif kind == "int_preds":
            kw["preds"] = torch.zeros(preds.shape, dtype=torch.int64)
        elif kind == "bool_mask_int":
            kw["mask"] = torch.ones(preds.shape, dtype=torch.int64)
        elif kind == "wrong_weights":
            kw["weights"] = torch.ones(preds.shape[0] + 1)
        elif kind == "indexes_given":
            kw["indexes"] = torch.arange(preds.shape[0])
        elif kind == "padded_3d":
            kw["preds"], kw["target"] = preds.unsqueeze(0), target.unsqueeze(0)
        elif kind == "float_indexes":
            kw["indexes"] = kw["indexes"].double()
        elif kind == "no_indexes":
            kw["indexes"] = None
        elif kind == "negative_weight":
            kw["weights"] = kw["weights"].double().index_fill(0, torch.tensor(row), -1.0)
        elif kind == "nan_weight":
            kw["weights"] = kw["weights"].double().index_fill(0, torch.tensor(row), math.nan)
        before = states_of(self.metric)
        with pytest.raises((ValueError, TypeError)):
            self.metric.update(**{k: v for k, v in kw.items() if v is not None})
        assert _same(states_of(self.metric), before), f"a rejected batch ({kind}) changed the state"


def close_all(got: Mapping[str, Mapping[str, float]], want: Mapping[str, Mapping[str, float]], where: str) -> None:
    assert got.keys() == want.keys()
    for name in want:
        close(got[name], want[name], f"{where} {name}")


RankingMachine.TestCase.settings = STATEFUL
TestRankingMachine = RankingMachine.TestCase


# ----------------------------------------------------------------------------------------- the reference itself


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([1, 3, 5, 10]))
def test_reference_agrees_with_ranx_on_tie_free_data(seed: int, k: int) -> None:
    """On distinct scores and integer relevance the reference is ranx's (whose tie order is unspecified)."""
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(seed)
    qrels, run, queries = {}, {}, []
    for q in range(int(rng.integers(1, 6))):
        n = int(rng.integers(1, 9))
        scores = rng.permutation(n).astype(np.float64) + rng.random()
        relevance = rng.integers(0, 4, size=n) * (rng.random(n) < 0.6)
        if not relevance.any():
            relevance[int(rng.integers(0, n))] = 1  # ranx scores a query without qrels 0: we skip it
        qrels[f"q{q}"] = {f"d{i}": int(r) for i, r in enumerate(relevance) if r > 0}
        run[f"q{q}"] = {f"d{i}": float(s) for i, s in enumerate(scores)}
        queries.append((scores, relevance.astype(np.float64), 1.0))
    names = {
        ("ndcg", False): f"ndcg@{k}",
        ("ndcg", True): f"ndcg_burges@{k}",
        ("recall", False): f"recall@{k}",
        ("precision", False): f"precision@{k}",
        ("mrr", False): f"mrr@{k}",
        ("hit_rate", False): f"hit_rate@{k}",
        ("map", False): f"map@{k}",
        ("r_precision", False): "r-precision",
        ("f1", False): f"f1@{k}",
    }
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(names.values()), make_comparable=True)
    for (name, exp), ranx_name in names.items():
        ours = reference_values(queries, [(name, None if name == "r_precision" else k)], exponential_gain=exp)[0]
        assert ours == pytest.approx(theirs[ranx_name], rel=1e-9, abs=1e-12), ranx_name
