"""A Hypothesis state machine drives `RecMetricModule` and checks every key against references written here.

The machine builds a module of one to three tasks (distinct columns; unweighted, a weight column of
their own, or one shared by several tasks) and a set of registry metrics whose values have cheap
independent references: ``ne``, ``log_loss``, ``calibration``, ``ctr``, ``mse`` (numpy formulas of
``docs/pointwise.md``, NE with the base rate clamped to ``[eta, 1 - eta]`` inside its logs;
``sklearn.metrics.log_loss`` too where the probabilities lie within the clamp), exact ``auc``
(``sklearn.metrics.roc_auc_score`` with ``sample_weight``, scores as float32), a binned ``auc``
(the AUC of the bin indices, ``docs/auc.md``: bins uniform in the logit over ``(-16, 16)``) and
``ndcg@k``/``mrr`` over session ids (a per-query numpy formula, ``docs/ranking.md``: relevant
candidates rank last among tied scores, a query weighs its largest row weight, queries without a
relevant row are skipped). Optionally with ``window_size`` (the window rule of ``docs/windows.md``:
the newest whole updates whose sizes sum to at most the window, the newest ``window_size`` samples
of a larger update; empty updates take no room, nor do all-zero-weight ones unless a ranking metric is held),
``compute_interval_steps``
(``should_compute()`` checked after every rule), the throughput's ``total_examples``, a prefix and
``from_logits=True`` (the values of ``sigmoid(logits)``, NE's cross-entropy unclamped).

Rules: a step of 0..30 samples (tied scores in float16/bfloat16/float32/float64, labels 0/1 as
integers, floats, bool or uint8, soft labels when no AUC reads them, weights drawn, all zero or all
one, in float or integer columns, int32 or int64 session ids), ``compute``/``local_compute`` (every
key, lifetime and ``/window``, against the reference over the recorded history; undefined values
``nan`` with an ``UndefinedMetricWarning`` naming the metric and task exactly where the reference is
undefined), ``reset`` (the history is cleared, the step counter kept), a checkpoint loaded into a
freshly built module (the ``OrderedDict``, a plain ``dict`` or ``torch.save``/``torch.load(weights_only=True)``
through a ``BytesIO``), or into one of another ``window_size`` (the lifetime resumes, the window starts
empty: ``docs/module.md``), an earlier snapshot loaded back into the used module,
``clone(prefix=...)``/``copy.deepcopy``/pickle (a step on the copy leaves the original as it was; the
machine goes on with the copy), and a rejected step (NaN or out-of-range prediction, label 2 or -1,
negative weight, a column of another length, each where the documented domains refuse it) that raises
``ValueError`` and changes nothing: neither a state nor the step count.

``STATEFUL_EXAMPLES`` (default 100, about 10 s) sets how many runs Hypothesis tries.
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sklearn.metrics import log_loss, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext import UndefinedMetricWarning

ETA = 1e-12  # NE's and log loss's default clamp (docs/pointwise.md)
TASK_NAMES = ("click", "buy", "like")
# dyadic scores: exact in float32 (the exact AUC and the ranking metrics compare scores as float32)
SCORES = [0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.9375, 1.0]
LOGITS = [-40.0, -3.0, -0.5, 0.0, 0.5, 2.0, 40.0]  # from_logits=True; the same in float16 and bfloat16
WEIGHTS = [0.0, 0.5, 1.0, 2.0, 3.25]
# the scores are exact in every floating dtype; labels and weights may be bool or integers (docs/policies.md)
PRED_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LABEL_DTYPES = [torch.int64, torch.float32, torch.bool, torch.uint8]
WEIGHT_DTYPES = [torch.float32, torch.float64, torch.int64]
SOFT_LABELS = [0.0, 0.25, 0.5, 1.0]
POINTWISE = ("ne", "log_loss", "calibration", "ctr", "mse")
RANKING = ("ndcg@3", "ndcg", "mrr")
BINNED = "auc_binned"
# the metrics whose inputs make the module refuse a prediction above 1, a label above 1 (docs/pointwise.md,
# docs/auc.md: CTR reads no prediction, MSE takes real values, ranking any score and relevance >= 0)
PROBABILITY_METRICS = {"ne", "log_loss", "calibration", "auc", BINNED}
UNIT_LABEL_METRICS = PROBABILITY_METRICS | {"ctr"}
LOGIT_RANGE = (-16.0, 16.0)  # the binned AUC's default (docs/auc.md)
NUM_BINS = 10

STATEFUL = settings(
    max_examples=int(os.environ.get("STATEFUL_EXAMPLES", 100)),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ----------------------------------------------------------------------------------------- references


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _ce(p: np.ndarray, y: np.ndarray, logits: bool) -> np.ndarray:
    if logits:  # softplus(z) - y z, unclamped
        return np.log1p(np.exp(-np.abs(p))) + (1 - y) * np.maximum(p, 0) + y * np.maximum(-p, 0)
    q = np.clip(p, ETA, 1 - ETA)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def ref_ne(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    total, pos, neg = w.sum(), (w * y).sum(), (w * (1 - y)).sum()
    if pos <= 0 or neg <= 0:
        return math.nan
    c = min(max(pos / total, ETA), 1 - ETA)  # the base rate is clamped with logits too
    return float((w * _ce(p, y, logits)).sum() / -(pos * math.log(c) + neg * math.log(1 - c)))


def ref_log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    if w.sum() <= 0:
        return math.nan
    value = float((w * _ce(p, y, logits)).sum() / w.sum())
    probs = sigmoid(p) if logits else p
    hard = np.isin(y, (0.0, 1.0)).all()
    inside = ((probs[w > 0] >= ETA) & (probs[w > 0] <= 1 - ETA)).all()
    if hard and inside:  # scikit-learn clips to its own epsilon: the same value inside our clamp
        assert value == pytest.approx(log_loss(y, probs, sample_weight=w, labels=[0, 1]), rel=1e-9, abs=1e-15)
    return value


def ref_calibration(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    positive = (w * y).sum()
    return float((w * (sigmoid(p) if logits else p)).sum() / positive) if positive > 0 else math.nan


def ref_ctr(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    return float((w * y).sum() / w.sum()) if w.sum() > 0 else math.nan


def ref_mse(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    probs = sigmoid(p) if logits else p  # metrics of real values are fed sigmoid(logits) (docs/module.md)
    return float((w * (probs - y) ** 2).sum() / w.sum()) if w.sum() > 0 else math.nan


def _auc_of(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    kept = w > 0
    if w[y == 1].sum() <= 0 or w[y == 0].sum() <= 0:
        return math.nan
    return float(roc_auc_score(y[kept], scores[kept], sample_weight=w[kept]))


def ref_auc(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    return _auc_of(p.astype(np.float32), y, w)  # logits rank as their probabilities


def ref_auc_binned(p: np.ndarray, y: np.ndarray, w: np.ndarray, logits: bool) -> float:
    lo, hi = LOGIT_RANGE
    with np.errstate(divide="ignore"):
        logit = p if logits else np.log(p / (1 - p))
    bins = np.clip(np.floor((logit - lo) / (hi - lo) * NUM_BINS), 0, NUM_BINS - 1)
    return _auc_of(bins, y, w)


def ref_ranking(name: str, p: np.ndarray, y: np.ndarray, w: np.ndarray, s: np.ndarray) -> float:
    """NDCG (linear gain) or MRR per query, relevant rows last among ties, weighted by the largest row weight."""
    stem, _, cutoff = name.partition("@")
    total = weighted = 0.0
    for query in np.unique(s):
        rows = s == query
        qp, qy, qw = p[rows].astype(np.float32), y[rows], w[rows]
        if not (qy > 0).any():
            continue  # empty_target_action="skip"
        k = int(cutoff) if cutoff else len(qy)
        ranked = qy[np.lexsort((qy, -qp))]  # by score descending, then relevance ascending
        if stem == "ndcg":
            discounts = 1 / np.log2(np.arange(2, len(qy) + 2))
            dcg = (ranked * discounts)[:k].sum()
            ideal = (np.sort(qy)[::-1] * discounts)[:k].sum()
            value = dcg / ideal
        else:
            first = int(np.flatnonzero(ranked > 0)[0]) + 1
            value = 1 / first if first <= k else 0.0
        total += qw.max()
        weighted += qw.max() * value
    return weighted / total if total > 0 else math.nan


def window_rows(sizes: list[int], window: int) -> list[tuple[int, int]]:
    """The (update, first row) pairs the window keeps (docs/windows.md, one rank)."""
    kept: list[tuple[int, int]] = []
    room = window
    for i in reversed(range(len(sizes))):
        n = sizes[i]
        if n == 0:
            continue  # an empty update takes no room
        if not kept and n > window:
            return [(i, n - window)]  # its newest `window` samples
        if n > room:
            break
        kept.append((i, 0))
        room -= n
    return kept


# ----------------------------------------------------------------------------------------- the machine


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    num_tasks = draw(st.integers(1, 3), label="num_tasks")
    weighting = [draw(st.sampled_from(["none", "own", "shared"]), label=f"weights_{t}") for t in range(num_tasks)]
    names = draw(
        st.lists(st.sampled_from([*POINTWISE, "auc", BINNED, *RANKING]), min_size=1, max_size=5, unique=True),
        label="metrics",
    )
    return {
        "num_tasks": num_tasks,
        "weighting": weighting,
        "metrics": names,
        "window_size": draw(st.one_of(st.none(), st.integers(5, 40)), label="window_size"),
        "compute_interval_steps": draw(st.integers(1, 4), label="compute_interval_steps"),
        "throughput": draw(st.booleans(), label="throughput"),
        "prefix": draw(st.sampled_from(["", "train/"]), label="prefix"),
        "from_logits": draw(st.booleans(), label="from_logits"),
    }


def build(config: Mapping[str, Any], prefix: str) -> tmx.RecMetricModule:
    tasks = []
    for t, mode in enumerate(config["weighting"]):
        name = TASK_NAMES[t]
        weight = {"none": "weight", "own": f"{name}_w", "shared": "w"}[mode]  # nothing feeds "weight": weight 1
        tasks.append(
            tmx.RecTaskInfo(name, f"{name}_label", f"{name}_pred", weight_name=weight, session_id_name="query")
        )
    metrics: dict[str, Any] = {}
    for name in config["metrics"]:
        metrics[name] = {"metric": "auc", "num_bins": NUM_BINS} if name == BINNED else name
    return tmx.RecMetricModule(
        tasks,
        metrics,
        window_size=config["window_size"],
        throughput=config["throughput"],
        compute_interval_steps=config["compute_interval_steps"],
        prefix=prefix,
        from_logits=config["from_logits"],
    )


def _flat(value: Any) -> Any:
    """A state_dict entry in a comparable form (a list state's chunks joined)."""
    if isinstance(value, torch.Tensor):
        return [*value.detach().cpu().double().flatten().tolist(), tuple(value.shape), str(value.dtype)]
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, torch.Tensor) for v in value):
            return _flat(torch.cat([v.flatten() for v in value]))
        return [_flat(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _flat(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


class ModuleMachine(RuleBasedStateMachine):
    """One module, the steps it was given since its last reset, and its step count."""

    def __init__(self) -> None:
        super().__init__()
        self.module: tmx.RecMetricModule | None = None

    @initialize(config=configs())
    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.prefix = config["prefix"]
        self.module = build(config, self.prefix)
        self.history: list[dict[str, np.ndarray]] = []
        self.window_start = 0  # the window holds steps from here on (a resume with another window starts it empty)
        self.steps = 0
        self.snapshot: dict[str, Any] | None = None
        self.examples = 0  # total_examples since the last reset
        self.soft_ok = "auc" not in config["metrics"] and BINNED not in config["metrics"]
        self.changed = True  # since the last compute: a repeated compute() returns its cached values, unwarned

    # ------------------------------------------------------------------------- steps

    def _step(self, data: st.DataObject, n: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
        """A random step: the model output dict and what the reference records of it."""
        config = self.config
        if n is None:
            n = data.draw(st.integers(0, 30), label="n")
        pattern = data.draw(st.sampled_from(["drawn", "zero", "one"]), label="weights") if n else "drawn"
        soft = self.soft_ok and data.draw(st.booleans(), label="soft_labels")
        out: dict[str, torch.Tensor] = {}
        p, y, w = [], [], []
        columns: dict[str, np.ndarray] = {}
        for t, mode in enumerate(config["weighting"]):
            name = TASK_NAMES[t]
            values = LOGITS if config["from_logits"] else SCORES
            preds = np.array(data.draw(st.lists(st.sampled_from(values), min_size=n, max_size=n)), dtype=np.float64)
            labels = np.array(
                data.draw(st.lists(st.sampled_from(SOFT_LABELS if soft else [0.0, 1.0]), min_size=n, max_size=n))
            )
            pred_dtype = data.draw(st.sampled_from(PRED_DTYPES), label="pred_dtype")
            label_dtype = torch.float32 if soft else data.draw(st.sampled_from(LABEL_DTYPES), label="label_dtype")
            out[f"{name}_pred"] = torch.tensor(preds, dtype=pred_dtype)
            out[f"{name}_label"] = torch.tensor(labels, dtype=label_dtype)
            if mode == "none":
                weights = np.ones(n)
            else:
                key = {"own": f"{name}_w", "shared": "w"}[mode]
                if key not in columns:
                    if pattern == "drawn":
                        columns[key] = np.array(data.draw(st.lists(st.sampled_from(WEIGHTS), min_size=n, max_size=n)))
                    else:  # all zero (changes no lifetime value), all one (the module's unweighted kernels)
                        columns[key] = np.full(n, 0.0 if pattern == "zero" else 1.0)
                weights = columns[key]
            p.append(preds)
            y.append(labels)
            w.append(weights)
        for key, weights in columns.items():
            integral = bool((weights == np.round(weights)).all())
            dtype = data.draw(st.sampled_from(WEIGHT_DTYPES if integral else WEIGHT_DTYPES[:2]), label="weight_dtype")
            out[key] = torch.tensor(weights, dtype=dtype)
        sessions = np.array(data.draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n)), dtype=np.int64)
        out["query"] = torch.tensor(sessions, dtype=data.draw(st.sampled_from([torch.int64, torch.int32])))
        record = {"p": np.stack(p), "y": np.stack(y), "w": np.stack(w), "s": sessions, "n": np.array(n)}
        return out, record

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        out, record = self._step(data)
        self.module.update(out)
        self.history.append(record)
        self.steps += 1
        self.examples += int(record["n"])
        self.changed |= self._changes_values(record)

    def _changes_values(self, record: dict[str, np.ndarray]) -> bool:
        """Whether a step may change a value (an empty or all-zero-weight step need not: a compute() since may
        return its cached values, whose warnings were given)."""
        config = self.config
        in_window = (
            int(record["n"]) > 0
            and config["window_size"] is not None
            and (
                any(name in RANKING for name in config["metrics"])  # (rows of weight 0 still rank in the lifetime)
                or any(not self._skipped(record, g) for name in config["metrics"] for g in self._window_groups(name))
            )
        )
        return bool(record["w"].any()) or in_window

    @rule()
    def update_empty(self) -> None:
        out = {key: torch.zeros(0) for key in self._column_names()}
        out["query"] = torch.zeros(0, dtype=torch.int64)
        self.module.update(out)
        self.history.append(self._empty_record())
        self.steps += 1  # changes no value: a compute() since may return its cache, unwarned

    def _column_names(self) -> list[str]:
        names = []
        for t, mode in enumerate(self.config["weighting"]):
            name = TASK_NAMES[t]
            names += [f"{name}_pred", f"{name}_label"]
            if mode != "none":
                names.append({"own": f"{name}_w", "shared": "w"}[mode])
        return sorted(set(names))

    def _empty_record(self) -> dict[str, np.ndarray]:
        tasks = len(self.config["weighting"])
        empty = np.zeros((tasks, 0))
        return {"p": empty, "y": empty, "w": empty, "s": np.zeros(0, dtype=np.int64), "n": np.array(0)}

    @rule(data=st.data())
    def rejected_step(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, 10), label="n")
        out, _ = self._step(data, n)
        weighted = [key for key in out if key == "w" or key.endswith("_w")]
        names = set(self.config["metrics"])
        kinds = ["nan_pred", "long_label", "short_pred"]
        if names & PROBABILITY_METRICS and not self.config["from_logits"]:  # ctr, mse, ranking: any finite score
            kinds.append("pred_above_one")
        if names & UNIT_LABEL_METRICS:  # mse takes any real label, the ranking metrics any relevance >= 0
            kinds.append("label_two")
        if names - {"mse"}:
            kinds.append("negative_label")
        if weighted:
            kinds += ["negative_weight", "long_weight"]
        kind = data.draw(st.sampled_from(kinds), label="bad")
        task = TASK_NAMES[data.draw(st.integers(0, len(self.config["weighting"]) - 1), label="bad_task")]
        row = data.draw(st.integers(0, n - 1), label="bad_row")
        if kind == "nan_pred":
            out[f"{task}_pred"][row] = math.nan
        elif kind == "pred_above_one":
            out[f"{task}_pred"][row] = 1.5
        elif kind in ("label_two", "negative_label"):
            out[f"{task}_label"] = out[f"{task}_label"].double()  # a bool or uint8 column cannot hold them
            out[f"{task}_label"][row] = 2 if kind == "label_two" else -1
        elif kind == "long_label":
            out[f"{task}_label"] = torch.cat([out[f"{task}_label"], out[f"{task}_label"][:1]])
        elif kind == "short_pred":
            out[f"{task}_pred"] = out[f"{task}_pred"][:-1]
        elif kind == "negative_weight":
            out[weighted[0]][row] = -1.0
        else:
            out[weighted[0]] = torch.cat([out[weighted[0]], out[weighted[0]][:1]])
        before = _flat(self.module.state_dict())
        should = self.module.should_compute()
        with pytest.raises(ValueError):
            self.module.update(out)
        assert self.module.should_compute() == should
        after = _flat(self.module.state_dict())
        changed = [k for k in before if not _same(before[k], after.get(k))]
        assert changed == [] and before.keys() == after.keys(), f"a rejected step ({kind}) changed {changed}"

    # ------------------------------------------------------------------------- life cycle

    @rule()
    def reset(self) -> None:
        self.module.reset()
        self.history = []
        self.window_start = 0
        self.examples = 0
        self.changed = True

    @rule(how=st.sampled_from(["state_dict", "plain_dict", "bytes"]))
    def resume_from_checkpoint(self, how: str) -> None:
        state = self.module.state_dict()
        if how == "plain_dict":
            state = dict(state)
        elif how == "bytes":
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            state = torch.load(buffer, weights_only=True)
        fresh = build(self.config, self.prefix)
        fresh.load_state_dict(state)
        self.module = fresh
        self.changed = True

    @rule(how=st.sampled_from(["state_dict", "bytes"]), window=st.one_of(st.none(), st.integers(5, 40)))
    def resume_with_another_window(self, how: str, window: int | None) -> None:
        """docs/module.md: the lifetime resumes (strict), the window starts empty and fills from the next steps."""
        if window == self.config["window_size"]:
            return
        state = self.module.state_dict()
        if how == "bytes":
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            state = torch.load(buffer, weights_only=True)
        self.config = {**self.config, "window_size": window}
        fresh = build(self.config, self.prefix)
        fresh.load_state_dict(state)
        self.module = fresh
        self.window_start = len(self.history)
        self.changed = True

    @rule()
    def take_snapshot(self) -> None:
        self.snapshot = {
            "state": self.module.state_dict(),
            "window_size": self.config["window_size"],
            "history": list(self.history),
            "window_start": self.window_start,
            "steps": self.steps,
            "examples": self.examples,
        }

    @precondition(lambda self: self.snapshot is not None)
    @rule(plain=st.booleans())
    def roll_back_to_snapshot(self, plain: bool) -> None:
        """An earlier checkpoint loaded into this (used) module: its states, windows and step count come back."""
        snap = self.snapshot
        same_window = snap["window_size"] == self.config["window_size"]
        # without its metadata a checkpoint of another window loads its ring as it was saved (docs/windows.md)
        self.module.load_state_dict(dict(snap["state"]) if plain and same_window else snap["state"])
        self.history = list(snap["history"])
        self.steps, self.examples = snap["steps"], snap["examples"]
        self.window_start = snap["window_start"] if same_window else len(self.history)
        self.changed = True

    @rule(how=st.sampled_from(["clone", "deepcopy", "pickle"]), prefix=st.sampled_from(["", "val/"]), data=st.data())
    def continue_on_a_copy(self, how: str, prefix: str, data: st.DataObject) -> None:
        if how == "clone":
            copied = self.module.clone(prefix=prefix)
        elif how == "deepcopy":
            copied = copy.deepcopy(self.module)
        else:
            copied = pickle.loads(pickle.dumps(self.module))
        out, record = self._step(data)
        copied.update(out)
        self.check_values()  # the original is as it was
        self.module = copied
        if how == "clone":
            self.prefix = prefix
        self.history.append(record)
        self.steps += 1
        self.examples += int(record["n"])
        self.changed |= self._changes_values(record)

    # ------------------------------------------------------------------------- checks

    @invariant()
    def should_compute_counts_steps(self) -> None:
        if self.module is not None:
            every = self.config["compute_interval_steps"]
            assert self.module.should_compute() == (self.steps > 0 and self.steps % every == 0)

    @precondition(lambda self: self.module is not None)
    @rule(local=st.booleans())
    def check_values(self, local: bool = False) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = self.module.local_compute() if local else self.module.compute()
        undefined = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
        others = [
            f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, UndefinedMetricWarning)
        ]
        assert [m for m in others if not re.search("compute.*was called before.*update", m)] == []
        expected = self.expected()
        assert set(values) == set(expected) | self.throughput_keys()
        for key, want in expected.items():
            got = values[key]
            assert got.shape == (), key
            got = got.item()
            if math.isnan(want):
                assert math.isnan(got), f"{key}: expected nan (undefined), got {got}"
                if not self.changed:
                    continue
                metric, task, window = self._split(key)
                named = re.compile(
                    rf"^{re.escape(metric)}(?: \([^)]*\))?{' [(]window[)]' if window else ''} is undefined.*'{task}'"
                )
                assert any(named.search(m) for m in undefined), f"{key}: nan without a warning naming it: {undefined}"
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), key
        for message in undefined:  # no warning for a value the reference defines
            if not message.startswith(f"{self.prefix}throughput"):
                assert any(math.isnan(v) for v in expected.values()), message
        if self.config["throughput"]:
            assert values[f"{self.prefix}throughput/total_examples"].item() == self.examples
        self.changed = False

    def _skipped(self, record: dict[str, np.ndarray], tasks: list[int]) -> bool:
        """Whether a metric's window over ``tasks`` skips the step (docs/windows.md, per metric): each of those tasks
        has a weight column, all zero."""
        weighting = self.config["weighting"]
        return int(record["n"]) > 0 and all(weighting[t] != "none" for t in tasks) and not record["w"][tasks].any()

    def _window_groups(self, name: str) -> list[list[int]]:
        """The task lists whose windows metric ``name`` keeps: one per task for a ranking metric (a copy per
        task), else every task (one window)."""
        num_tasks = len(self.config["weighting"])
        return [[t] for t in range(num_tasks)] if name in RANKING else [list(range(num_tasks))]

    def _split(self, key: str) -> tuple[str, str, bool]:
        parts = key.split("/")
        window = parts[-1] == "window"
        if window:
            parts = parts[:-1]
        return "/".join(parts[:-1]), parts[-1], window

    def throughput_keys(self) -> set[str]:
        if not self.config["throughput"]:
            return set()
        return {f"{self.prefix}throughput/{n}" for n in ("lifetime_throughput", "window_throughput", "total_examples")}

    def _parts(self, name: str, tasks: list[int]) -> dict[str, list[tuple[int, int]]]:
        """The (step, first row) spans of a metric's lifetime and, with a window, of its window over ``tasks``."""
        parts = {"": [(i, 0) for i in range(len(self.history))]}
        if self.config["window_size"] is not None:
            sizes = [0 if self._skipped(r, tasks) else int(r["n"]) for r in self.history[self.window_start :]]
            rows = window_rows(sizes, self.config["window_size"])
            parts["/window"] = [(self.window_start + i, start) for i, start in rows]
        return parts

    def expected(self) -> dict[str, float]:
        expected: dict[str, float] = {}
        for name, group in ((n, g) for n in self.config["metrics"] for g in self._window_groups(n)):
            for suffix, rows in self._parts(name, group).items():
                chosen = [self.history[i] for i, _ in rows]
                starts = [start for _, start in rows]
                p = np.concatenate([self._empty_record()["p"], *(r["p"][:, s:] for r, s in zip(chosen, starts))], 1)
                y = np.concatenate([self._empty_record()["y"], *(r["y"][:, s:] for r, s in zip(chosen, starts))], 1)
                w = np.concatenate([self._empty_record()["w"], *(r["w"][:, s:] for r, s in zip(chosen, starts))], 1)
                s = np.concatenate([np.zeros(0, dtype=np.int64), *(r["s"][st_:] for r, st_ in zip(chosen, starts))])
                for t in group:
                    if name in RANKING:
                        value = ref_ranking(name, p[t], y[t], w[t], s)
                    else:
                        reference = {
                            "ne": ref_ne,
                            "log_loss": ref_log_loss,
                            "calibration": ref_calibration,
                            "ctr": ref_ctr,
                            "mse": ref_mse,
                            "auc": ref_auc,
                            BINNED: ref_auc_binned,
                        }[name]
                        value = reference(p[t], y[t], w[t], self.config["from_logits"])
                    expected[f"{self.prefix}{name}/{TASK_NAMES[t]}{suffix}"] = value
        return expected


ModuleMachine.TestCase.settings = STATEFUL
TestModuleMachine = ModuleMachine.TestCase
