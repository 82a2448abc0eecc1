"""``RecMetricModule`` under random per-metric options, in a random metric order.

The module shares much between its metrics (compute groups, the windows' shared ring, the step's
shared sums, one validation read, the sigmoid rows fed to metrics of real values, the step plan,
per-task ranking copies, ``metric_tasks`` subsets); a metric's options (``from_logits``,
``num_bins``, ``threshold``, ``unit``, ``exponential_gain``, GAUC's averaging) and its place in the
dict decide which of these it takes part in. Each seeded scenario draws registry metrics in a random
order with random options (the same metric under two keys with other options too), random
``metric_tasks``, 1 to 3 tasks (binary heads of probabilities or logits, a regression head), a
random small ``window_size`` (windows wrap), weights with zeros (whole steps of zero weight at
times, or one task's column all zero), random step sizes (empty ones too), and checks every lifetime and window value:

* against references written here: scikit-learn with ``sample_weight`` (``roc_auc_score``,
  ``average_precision_score``, ``log_loss``, ``mean_squared_error``, ``mean_absolute_error``,
  ``r2_score``), numpy formulas of ``docs/pointwise.md`` (NE, calibration, CTR, weighted average,
  the threshold metrics), the binned AUC/AUPRC as the exact curve of the scores' bins
  (``docs/auc.md``), pandas ``groupby`` for GAUC and the segments, ``tests/helpers/ranking_reference``
  for ranking, the pairwise definition of XAUC (``docs/pairwise_auc.md``), and the window rule of
  ``docs/windows.md`` (each metric's skip of a step whose weights are all zero for its tasks included);
* against the same metric alone in a module of its own (its tasks only, the columns it is fed):
  a metric's value does not depend on the others or on its place among them;

at ``compute()`` calls between steps, after a ``state_dict`` round trip into a fresh module built
from the same config in another metric order, and after ``reset()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from tests.helpers.module_steps import build as _module
from tests.helpers.module_steps import feed as _feed
from tests.helpers.module_steps import values as _compute
from tests.helpers.module_steps import weighs_nothing, window_groups
from tests.helpers.ranking_reference import group_rows, reference_values

SEEDS = list(range(60))
NUM_SEGMENTS = 3
# metrics of probabilities (binary heads; `from_logits` as their task's head), of real values (any head;
# `from_logits=True` only on logit heads, which it makes logits), ranking (binary heads, raw scores)
PROBABILITY = [
    "ne",
    "log_loss",
    "auc",
    "auprc",
    "calibration",
    "ctr",
    "accuracy",
    "weighted_precision",
    "weighted_recall",
    "gauc",
    "segmented_ne",
]
REAL = ["mse", "mae", "rmse", "r_squared", "weighted_average", "xauc"]
RANKING = ["ndcg", "recall"]
TWINS = ["auc", "auprc", "log_loss", "accuracy", "ne", "mse", "ndcg", "weighted_recall"]


def _options(rng: np.random.Generator, name: str) -> dict[str, Any]:
    """A registry entry with random options of its class (``from_logits`` is set by the tasks it reads)."""
    if name in ("ndcg", "recall"):
        k = int(rng.integers(1, 4))
        options: dict[str, Any] = {"metric": f"{name}@{k}"}
        if name == "ndcg" and rng.random() < 0.5:
            options["exponential_gain"] = True
        if rng.random() < 0.25:  # a session id in two steps is two queries
            options["queries_complete_per_batch"] = True
        return options
    options = {"metric": name}
    if name in ("auc", "auprc") and rng.random() < 0.5:
        options["num_bins"] = int(rng.choice([16, 50, 100]))
    if name in ("accuracy", "weighted_precision", "weighted_recall") and rng.random() < 0.7:
        options["threshold"] = float(rng.choice([0.25, 0.5, 0.75]))
    if name == "log_loss" and rng.random() < 0.5:
        options["unit"] = "bits"
    if name in ("ne", "log_loss", "segmented_ne") and rng.random() < 0.3:
        options["eta"] = float(rng.choice([1e-3, 1e-6]))
    if name == "gauc":
        if rng.random() < 0.4:
            options["weight_groups"] = True
        if rng.random() < 0.3:
            options["average_groups"] = "all"
        if rng.random() < 0.3:  # a group id in two steps is two groups
            options["groups_complete_per_batch"] = True
    if name == "segmented_ne":
        options["num_segments"] = NUM_SEGMENTS
    return options


def _family(options: dict[str, Any]) -> str:
    stem = options["metric"].partition("@")[0]
    return "probability" if stem in PROBABILITY else "ranking" if stem in RANKING else "real"


def scenario(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([5150, seed])
    num_tasks = int(rng.integers(1, 4))
    kinds = [str(rng.choice(["probability", "logit"])) for _ in range(num_tasks)]
    if num_tasks > 1 and rng.random() < 0.4:
        kinds[int(rng.integers(0, num_tasks))] = "regression"
    every = [f"t{t}" for t in range(num_tasks)]
    binary = [f"t{t}" for t, kind in enumerate(kinds) if kind != "regression"]
    logit_heads = [f"t{t}" for t, kind in enumerate(kinds) if kind == "logit"]
    prob_heads = [f"t{t}" for t, kind in enumerate(kinds) if kind == "probability"]

    names = [str(n) for n in rng.choice(PROBABILITY + REAL + RANKING, size=int(rng.integers(2, 7)), replace=False)]
    if "gauc" in names and "segmented_ne" in names:  # one id column for both: refused (documented)
        names.remove(str(rng.choice(["gauc", "segmented_ne"])))
    drawn = [(n, _options(rng, n)) for n in names]
    if rng.random() < 0.6:  # the same metric under a second key with other options
        twin = str(rng.choice(TWINS))
        drawn.append((f"{twin}_twin", _options(rng, twin)))
        if twin in ("auc", "auprc"):  # one exact, one binned
            drawn[-1][1]["num_bins"] = 100
            for _, o in drawn[:-1]:
                if o["metric"] == twin:
                    o.pop("num_bins", None)
    metrics: dict[str, dict[str, Any]] = {}
    metric_tasks: dict[str, list[str]] = {}
    explicit = rng.random() < 0.5  # a metric reading every task is listed all the same
    for key, options in drawn:
        family = _family(options)
        if family == "probability":  # every task it reads holds logits, or every one probabilities
            heads = [h for h in (logit_heads, prob_heads) if h]
            pool = heads[int(rng.integers(0, len(heads)))] if heads else []
            if pool and pool is logit_heads:
                options["from_logits"] = True
            elif rng.random() < 0.3:
                options["from_logits"] = False  # said explicitly: the default
        elif family == "ranking":
            pool = binary
        else:
            pool = every
            if logit_heads and rng.random() < 0.35:  # makes its tasks logits: it reads logit heads only
                pool = logit_heads
                options["from_logits"] = True
            elif rng.random() < 0.3:
                options["from_logits"] = False  # fed sigmoid(logits) all the same on a task others make logits
        if not pool:
            continue
        chosen = [t for t in pool if rng.random() < 0.7] or [str(rng.choice(pool))]
        metrics[key] = options
        if chosen != every or explicit:
            metric_tasks[key] = [str(t) for t in rng.permutation(chosen)]  # any order
    read = {t for key in metrics for t in metric_tasks.get(key, every)}
    for t in every:  # every task must be read (a task no metric reads is refused): a weighted average of it
        if t not in read:
            metrics.setdefault("wavg_fill", {"metric": "weighted_average"})
            metric_tasks.setdefault("wavg_fill", []).append(t)
    if "wavg_fill" in metric_tasks:
        metric_tasks["wavg_fill"].sort()
    trusted = rng.random() < 0.15  # every metric with validate_args=False: the module reads no value back
    for options in metrics.values():
        if trusted or rng.random() < 0.15:
            options["validate_args"] = False
    module_logits = None  # the module's own option: every metric built for logits (or probabilities)
    if rng.random() < 0.4 and kinds.count("logit") == num_tasks:
        module_logits = True
        for options in metrics.values():
            options.pop("from_logits", None)
    elif rng.random() < 0.4 and not logit_heads:
        module_logits = False
    order = [str(k) for k in rng.permutation(list(metrics))]
    metrics = {k: metrics[k] for k in order}
    weight_names = [str(rng.choice(["w_shared", f"w{t}", "none"], p=[0.4, 0.45, 0.15])) for t in range(num_tasks)]
    tasks = [
        {
            "name": f"t{t}",
            "label_name": f"y{t}",
            "prediction_name": f"p{t}",
            "weight_name": None if weight_names[t] == "none" else weight_names[t],
            "group_id_name": "grp",
            "session_id_name": "sess",
        }
        for t in range(num_tasks)
    ]
    config = {
        "tasks": tasks,
        "metrics": metrics,
        "metric_tasks": metric_tasks,
        "window_size": None if rng.random() < 0.3 else int(rng.integers(3, 25)),
        "throughput": False,
    }
    if module_logits is not None:
        config["from_logits"] = module_logits
    pred_dtype = [str(rng.choice(["float32", "float64", "float16"], p=[0.5, 0.3, 0.2])) for _ in range(num_tasks)]
    label_dtype = [str(rng.choice(["int64", "bool", "float32"])) for _ in range(num_tasks)]

    count = iter(range(1000))

    def step(n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        zero = rng.random() < 0.2  # every weight column all zero
        for t, kind in enumerate(kinds):
            if kind == "regression":
                out[f"p{t}"] = rng.uniform(0.0, 5.0, size=n).astype(np.float32)
                out[f"y{t}"] = np.round(rng.uniform(0.0, 10.0, size=n)).astype(np.float32)
            else:
                p = rng.uniform(0.03, 0.97, size=n)
                if rng.random() < 0.3:
                    p = rng.choice([0.1, 0.5, 0.9], size=n)  # ties
                z = np.log(p) - np.log1p(-p)
                if n and rng.random() < 0.25:  # the ends: probabilities 0 and 1, logits beyond the bins' (-16, 16)
                    ends = rng.random(n) < 0.3
                    p = np.where(ends, rng.choice([0.0, 1e-13, 1.0 - 1e-9, 1.0], size=n), p)
                    z = np.where(ends, rng.choice([-40.0, -20.0, 20.0, 40.0], size=n), z)
                out[f"p{t}"] = (z if kind == "logit" else p).astype(pred_dtype[t])
                out[f"y{t}"] = (rng.random(n) < 0.4).astype(label_dtype[t])
            out[f"w{t}"] = rng.choice([0.0, 0.5, 1.0, 2.0], size=n) if rng.random() < 0.7 else np.ones(n)
        out["w_shared"] = rng.choice([0.0, 1.0, 3.0], size=n) if rng.random() < 0.7 else np.ones(n)
        if zero:
            for key in [k for k in out if k.startswith("w")]:
                out[key] = np.zeros(n)
        elif rng.random() < 0.25:  # one weight column all zero: the metrics reading only its tasks skip the step
            out[str(rng.choice([k for k in out if k.startswith("w")]))] = np.zeros(n)
        out["grp"] = rng.integers(0, NUM_SEGMENTS, size=n)
        out["sess"] = rng.integers(0, 4, size=n)
        out["batch"] = np.full(n, next(count))  # which step a row came from (read by the references only)
        return out

    steps = [step(int(rng.choice([0, 1, 3, 6, 10, 17]))) for _ in range(int(rng.integers(2, 7)))]
    extra = [step(int(rng.choice([0, 2, 5, 9]))) for _ in range(int(rng.integers(1, 4)))]
    computes = sorted({int(i) for i in rng.integers(1, len(steps) + 1, size=2)})  # compute() after these steps
    bad = step(4)  # a NaN prediction, or a negative weight, in one task's column: refused, nothing changes
    bad_task = int(rng.integers(0, num_tasks))
    bad_column = f"p{bad_task}"
    if tasks[bad_task]["weight_name"] is not None and rng.random() < 0.4:
        bad_column = tasks[bad_task]["weight_name"]
        bad[bad_column] = bad[bad_column].copy()
        bad[bad_column][int(rng.integers(0, 4))] = -1.0
    else:
        bad[bad_column][int(rng.integers(0, 4))] = np.nan
    return {
        "config": config,
        "kinds": kinds,
        "steps": steps,
        "extra": extra,
        "computes": computes,
        "bad": (f"t{bad_task}", bad_column, bad),
        "other_order": [str(k) for k in rng.permutation(list(metrics))],
    }


# ----------------------------------------------------------------------------- the module


def _reordered(config: dict[str, Any], order: list[str]) -> dict[str, Any]:
    return {**config, "metrics": {k: config["metrics"][k] for k in order}}


# ----------------------------------------------------------------------------- references


def _tasks_of(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The tasks a metric reads, in the module's task order."""
    listed = config["metric_tasks"].get(key)
    return [task for task in config["tasks"] if listed is None or task["name"] in listed]


def _holds_logits(config: dict[str, Any], task: str) -> bool:
    """A task's predictions are logits where a metric that reads it is built with ``from_logits=True``."""
    if config.get("from_logits") is not None:
        return bool(config["from_logits"])
    return any(
        options.get("from_logits") and task in [t["name"] for t in _tasks_of(config, key)]
        for key, options in config["metrics"].items()
    )


def _counts_zero_weight_rows(options: dict[str, Any]) -> bool:
    """GAUC counting groups of zero weight: an all-zero-weight step changes it, so its window keeps the step."""
    return options["metric"] == "gauc" and options.get("average_groups") == "all" and not options.get("weight_groups")


def _skipped(config: dict[str, Any], step: dict[str, np.ndarray], key: str, tasks: list[dict[str, Any]]) -> bool:
    """Whether metric ``key``'s window over ``tasks`` skips a step (``docs/windows.md``): no rows, or with a window
    every one of those tasks' weights 0 (the metric's own tasks; one task for a ranking metric's per-task copy)."""
    n = len(step["grp"])
    if n == 0:
        return True
    if config["window_size"] is None or _counts_zero_weight_rows(config["metrics"][key]):
        return False
    if all(o.get("validate_args") is False for o in config["metrics"].values()):
        return False  # the module reads no weight back: the step takes its room
    return weighs_nothing(step, tasks)


def _window_groups(config: dict[str, Any], key: str) -> list[list[dict[str, Any]]]:
    """The task lists whose windows metric ``key`` keeps (:func:`window_groups`)."""
    return window_groups(_tasks_of(config, key), _family(config["metrics"][key]) == "ranking")


def _window_rows(
    config: dict[str, Any], steps: list[dict[str, np.ndarray]], key: str, tasks: list[dict[str, Any]]
) -> list[dict[str, np.ndarray]]:
    """The newest whole steps within ``window_size`` samples, or the newest ``window_size`` rows of a larger one."""
    size = config["window_size"]
    taken = [s for s in steps if not _skipped(config, s, key, tasks)]
    if not taken:
        return []
    if len(taken[-1]["grp"]) >= size:
        return [{k: v[len(v) - size :] for k, v in taken[-1].items()}]
    kept: list[dict[str, np.ndarray]] = []
    total = 0
    for s in reversed(taken):
        if total + len(s["grp"]) > size:
            break
        kept.insert(0, s)
        total += len(s["grp"])
    return kept


def _column(steps: list[dict[str, np.ndarray]], key: str | None) -> np.ndarray:
    n = sum(len(s["grp"]) for s in steps)
    if key is None:
        return np.ones(n)
    return np.concatenate([s[key] for s in steps]).astype(np.float64) if steps else np.zeros(0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    if not ((w * y).sum() > 0 and (w * (1 - y)).sum() > 0):
        return math.nan
    return float(roc_auc_score(y, s, sample_weight=w))


def _auprc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    if (w * y).sum() == 0:
        return math.nan
    if (w * (1 - y)).sum() == 0:
        return 1.0
    return float(average_precision_score(y, s, sample_weight=w))


def _bins(logit: np.ndarray, num_bins: int) -> np.ndarray:
    """``docs/auc.md``: bins uniform in the logit over (-16, 16), scores outside in the end bins."""
    return np.clip(np.floor((logit + 16.0) / 32.0 * num_bins), 0, num_bins - 1)


def _cross_entropy(raw: np.ndarray, logits: bool, y: np.ndarray, w: np.ndarray, eta: float) -> float:
    """The mean weighted cross-entropy in nats (``docs/pointwise.md``): of logits in the exact softplus form,
    of probabilities clamped to ``[eta, 1 - eta]`` as scikit-learn scores them."""
    if logits:
        return float((w * (np.logaddexp(0.0, raw) - y * raw)).sum() / w.sum())
    return float(log_loss(y, np.clip(raw, eta, 1.0 - eta), sample_weight=w, labels=[0, 1]))


def _ne(raw: np.ndarray, logits: bool, y: np.ndarray, w: np.ndarray, eta: float) -> float:
    """Cross-entropy over that of the base rate, clamped to ``[eta, 1 - eta]`` inside the logs; one class: nan."""
    if w.sum() == 0:
        return math.nan
    ctr = (w * y).sum() / w.sum()
    if not 0 < ctr < 1:
        return math.nan
    c = min(max(ctr, eta), 1.0 - eta)
    return _cross_entropy(raw, logits, y, w, eta) / -(ctr * np.log(c) + (1 - ctr) * np.log(1 - c))


def _threshold(stem: str, p: np.ndarray, y: np.ndarray, w: np.ndarray, t: float) -> float:
    positive = p >= t
    tp, fp = (w * (positive & (y == 1))).sum(), (w * (positive & (y == 0))).sum()
    fn, tn = (w * (~positive & (y == 1))).sum(), (w * (~positive & (y == 0))).sum()
    num, den = {
        "accuracy": (tp + tn, tp + tn + fp + fn),
        "weighted_precision": (tp, tp + fp),
        "weighted_recall": (tp, tp + fn),
    }[stem]
    return float(num / den) if den > 0 else math.nan


def _xauc(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Every pair of distinct rows weighs ``w_i w_j``; it agrees when the signs of both differences agree."""
    upper = np.triu(np.ones((len(s), len(s)), dtype=bool), k=1)
    pair_w = np.outer(w, w)[upper]
    agree = (np.sign(s[:, None] - s[None, :]) == np.sign(y[:, None] - y[None, :]))[upper]
    return float((pair_w * agree).sum() / pair_w.sum()) if pair_w.sum() > 0 else math.nan


def _gauc(
    s: np.ndarray, y: np.ndarray, w: np.ndarray, grp: np.ndarray, batch: np.ndarray, options: dict[str, Any]
) -> float:
    frame = pd.DataFrame({"s": s, "y": y, "w": w, "g": grp, "b": batch})
    values, weights = [], []
    for _, rows in frame.groupby(["b", "g"] if options.get("groups_complete_per_batch") else "g"):
        value = _auc(rows.y.to_numpy(), rows.s.to_numpy(), rows.w.to_numpy())
        if math.isnan(value):
            if options.get("average_groups") != "all":
                continue
            value = 0.5
        values.append(value)
        weights.append(rows.w.sum() if options.get("weight_groups") else 1.0)
    if not values or sum(weights) == 0:
        return math.nan
    return float(np.dot(values, weights) / sum(weights))


def _value(options: dict[str, Any], raw: np.ndarray, logits: bool, y: np.ndarray, w: np.ndarray, ids: dict) -> Any:
    """One task's reference value; ``raw``: its predictions as given, logits when ``logits``."""
    stem, _, k = options["metric"].partition("@")
    p = _sigmoid(raw) if logits else raw  # what metrics of probabilities and real values read
    eta = options.get("eta", 1e-12)
    if stem in ("ndcg", "recall"):  # ranked as given (the logits' order is the probabilities')
        per_batch = options.get("queries_complete_per_batch", False)
        queries = group_rows(list(zip(ids["batch"], ids["sess"]) if per_batch else ids["sess"]), raw, y, w)
        return reference_values(queries, [(stem, int(k))], exponential_gain=options.get("exponential_gain", False))[0]
    if stem == "xauc":
        return _xauc(raw, y, w)
    exact_scores = raw.astype(np.float32)  # the exact modes rank every score as float32 (docs/auc.md)
    if stem in ("auc", "auprc"):
        bins = options.get("num_bins")
        with np.errstate(divide="ignore"):  # probabilities 0 and 1: logits -inf and inf, in the end bins
            scores = exact_scores if bins is None else _bins(raw if logits else np.log(raw) - np.log(1.0 - raw), bins)
        return (_auc if stem == "auc" else _auprc)(y, scores, w)
    if stem == "gauc":
        return _gauc(exact_scores, y, w, ids["grp"], ids["batch"], options)
    if stem == "segmented_ne":
        g = ids["grp"]
        return {s: _ne(raw[g == s], logits, y[g == s], w[g == s], eta) for s in range(NUM_SEGMENTS)}
    if stem in ("accuracy", "weighted_precision", "weighted_recall"):
        return _threshold(stem, p, y, w, options.get("threshold", 0.5))
    if w.sum() == 0:
        return math.nan
    if stem == "ne":
        return _ne(raw, logits, y, w, eta)
    if stem == "log_loss":
        loss = _cross_entropy(raw, logits, y, w, eta)
        return loss / math.log(2.0) if options.get("unit") == "bits" else loss
    if stem == "calibration":
        return float((w * p).sum() / (w * y).sum()) if (w * y).sum() > 0 else math.nan
    if stem == "ctr":
        return float((w * y).sum() / w.sum())
    if stem == "weighted_average":
        return float((w * p).sum() / w.sum())
    if stem in ("mse", "rmse"):
        mse = float(mean_squared_error(y, p, sample_weight=w))
        return math.sqrt(mse) if stem == "rmse" else mse
    if stem == "mae":
        return float(mean_absolute_error(y, p, sample_weight=w))
    if stem == "r_squared":
        spread = (w * (y - (w * y).sum() / w.sum()) ** 2).sum()
        return float(r2_score(y, p, sample_weight=w)) if spread > 0 else math.nan
    raise KeyError(stem)


def references(config: dict[str, Any], steps: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Every key of the module over ``steps``, in its order (``docs/module.md``): the metrics as given, a
    Segmented metric's segments, the tasks in the module's order, each lifetime value and then its window's."""
    values: dict[tuple[str, int, int, str], Any] = {}  # (metric, segment, task, suffix) -> value
    for key, options in config["metrics"].items():
        tasks = _tasks_of(config, key)
        for group in _window_groups(config, key):
            spans = [("", steps)]
            if config["window_size"] is not None:  # each metric's own window (docs/windows.md: per metric)
                spans.append(("/window", _window_rows(config, steps, key, group)))
            for suffix, rows in spans:
                ids = {column: _column(rows, column) for column in ("grp", "sess", "batch")}
                for task in group:
                    t = tasks.index(task)
                    raw, y, w = (_column(rows, task[c]) for c in ("prediction_name", "label_name", "weight_name"))
                    value = _value(options, raw, _holds_logits(config, task["name"]), y, w, ids)
                    for g, v in value.items() if isinstance(value, dict) else [(-1, value)]:
                        values[key, g, t, suffix] = v
    out: dict[str, Any] = {}
    for key in config["metrics"]:
        tasks = _tasks_of(config, key)
        ordered = sorted((g, t, suffix) for k, g, t, suffix in values if k == key)
        for g, t, suffix in ordered:  # "" sorts before "/window"
            name = key if g < 0 else f"{key}.{g}"
            out[f"{name}/{tasks[t]['name']}{suffix}"] = values[key, g, t, suffix]
    return out


def _close(got: dict[str, float], want: dict[str, Any], where: str) -> None:
    assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-9), f"{where} {key}: {got[key]!r} != {value!r}"


# ----------------------------------------------------------------------------- each metric alone


def _alone(config: dict[str, Any], key: str) -> tuple[dict[str, Any], Any]:
    """A module of ``key`` alone over its tasks, and how to turn a step into the columns it is fed there.

    Where the full module feeds a metric of real values ``sigmoid(logits)`` (a task another metric makes
    logits, the metric built without ``from_logits``), its module alone gets those probabilities.
    """
    options = config["metrics"][key]
    tasks = _tasks_of(config, key)
    fed_sigmoid = [
        task["prediction_name"]
        for task in tasks
        if _holds_logits(config, task["name"])
        and config.get("from_logits") is None
        and not options.get("from_logits")
        and options["metric"] not in ("xauc",)
        and _family(options) == "real"
    ]

    def columns(step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(step)
        for name in fed_sigmoid:
            out[name] = torch.sigmoid(torch.from_numpy(step[name]).double()).numpy()
        return out

    alone = {**config, "tasks": tasks, "metrics": {key: options}, "metric_tasks": {}}
    return alone, columns


def check_alone(config: dict[str, Any], got: dict[str, float], steps: list[dict[str, np.ndarray]], where: str) -> None:
    """Each metric's values equal those of the metric alone (window values where its window keeps the same rows)."""
    for key in config["metrics"]:
        alone, columns = _alone(config, key)
        values = _compute(_feed(_module(alone), [columns(s) for s in steps]))
        same_window = all(
            [_skipped(alone, s, key, group) for s in steps] == [_skipped(config, s, key, group) for s in steps]
            for group in _window_groups(config, key)
        )
        for name, value in values.items():
            if name.endswith("/window") and not same_window:
                continue  # the full module's other tasks' weights keep a step its module alone skips
            assert name in got, f"{where}: {name} of {key} alone is not a key of the module"
            # the same sums up to their rounding: a module whose other tasks are weighted runs the weighted
            # kernels on unit weights, which sum in another order than the unweighted ones the metric runs alone
            same = (math.isnan(value) and math.isnan(got[name])) or got[name] == pytest.approx(
                value, rel=1e-12, abs=1e-15
            )
            assert same, f"{where} {name}: {got[name]!r} in the module, {value!r} alone"


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("seed", SEEDS)
def test_random_options_and_order_match_references_and_each_metric_alone(seed: int) -> None:
    sc = scenario(seed)
    config, steps, extra = sc["config"], sc["steps"], sc["extra"]
    where = f"seed {seed}"
    module = _module(config)
    fed = 0
    for i in sc["computes"]:  # compute() between steps
        _feed(module, steps[fed:i])
        fed = i
        _close(_compute(module), references(config, steps[:i]), f"{where} after {i} steps")
    _feed(module, steps[fed:])
    got = _compute(module)
    _close(got, references(config, steps), where)
    check_alone(config, got, steps, where)
    if not all(o.get("validate_args") is False for o in config["metrics"].values()):
        task, column, bad = sc["bad"]
        with pytest.raises(ValueError, match=f"{column}|{task}"):
            _feed(module, [bad])
        _close(_compute(module), references(config, steps), f"{where} after a rejected step")
    # a checkpoint into a fresh module of the same config with the metrics in another order
    resumed = _module(_reordered(config, sc["other_order"]))
    resumed.load_state_dict(module.state_dict())
    other = _reordered(config, sc["other_order"])  # (its keys in its own order)
    _close(_compute(resumed), references(other, steps), f"{where} loaded in another order")
    _close(_compute(_feed(resumed, extra)), references(other, steps + extra), f"{where} loaded and continued")
    _close(_compute(_feed(module, extra)), references(config, steps + extra), f"{where} continued")
    module.reset()
    _close(_compute(_feed(module, extra)), references(config, extra), f"{where} after reset")


def test_scenarios_cover_the_cases() -> None:
    scenarios = [scenario(seed) for seed in SEEDS]
    configs = [sc["config"] for sc in scenarios]
    assert {len(c["tasks"]) for c in configs} == {1, 2, 3}
    assert any("regression" in sc["kinds"] for sc in scenarios)
    stems = {o["metric"].partition("@")[0] for c in configs for o in c["metrics"].values()}
    assert set(PROBABILITY + REAL + RANKING) <= stems
    options = [o for c in configs for o in c["metrics"].values()]
    for option in (
        "num_bins",
        "threshold",
        "unit",
        "eta",
        "exponential_gain",
        "queries_complete_per_batch",
        "weight_groups",
        "average_groups",
        "groups_complete_per_batch",
    ):
        assert any(option in o for o in options), option
    # a metric of logits and one fed sigmoid(logits) in one module, in both orders
    fed_first = [False, False]
    for c in configs:
        keys = list(c["metrics"])
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                oa, ob = c["metrics"][a], c["metrics"][b]
                if _family(oa) == "real" and not oa.get("from_logits") and ob.get("from_logits"):
                    fed_first[0] = True
                if oa.get("from_logits") and _family(ob) == "real" and not ob.get("from_logits"):
                    fed_first[1] = True
    assert all(fed_first)
    assert any(any(k.endswith("_twin") for k in c["metrics"]) for c in configs)
    assert any(c["metric_tasks"] for c in configs) and any(not c["metric_tasks"] for c in configs)
    assert any(c["window_size"] for c in configs) and any(c["window_size"] is None for c in configs)
    # a compute group led by another metric in the other order (its checkpoint read under another name)
    led = [
        (_module(c).compute_groups, _module(_reordered(c, sc["other_order"])).compute_groups)
        for sc, c in zip(scenarios, configs)
    ]
    assert any({tuple(g) for g in a if len(g) > 1} != {tuple(g) for g in b if len(g) > 1} for a, b in led)
    steps = [s for sc in scenarios for s in sc["steps"]]
    assert any(len(s["grp"]) == 0 for s in steps)
    assert any(
        _skipped(c, s, key, group) and len(s["grp"])
        for sc, c in zip(scenarios, configs)
        for s in sc["steps"]
        for key in c["metrics"]
        for group in _window_groups(c, key)
    )
