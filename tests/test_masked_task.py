"""A task labelled on some rows only: ESMM's conversion head, defined on clicked impressions.

A multi-task ranker logs `click` (every impression), `conversion` (a label on clicked rows only: -1 or
NaN elsewhere), `ctcvr` (click and convert) and a `watch_time` regression head, with importance weights.
The module's route is a weight column of the task's own (weight 0 on unclicked rows, docs/module.md, "A
task labelled on some rows only"); -1 and NaN labels are refused with that recipe. Every value is checked
against references written here: scikit-learn with ``sample_weight`` restricted to each task's valid rows,
NE from numpy's formula, GAUC and segments from pandas ``groupby``, NDCG@10 in plain Python (ties broken
pessimistically, a query weighing its largest row weight, as docs/ranking.md defines them), lifetime and
window, with mixed dtypes (bfloat16 predictions, float16 weights, int64 labels), and ``evaluate`` on the
same rows (one run per weight column, and null labels with ``on_invalid="skip"``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score

import torchmetrics_ext as tmx

pytest.importorskip("pyarrow")
from torchmetrics_ext.evaluate import InvalidDataError, evaluate

N, BATCH, WINDOW = 1200, 100, 500
BINARY = ["click", "conversion", "ctcvr"]
BINARY_METRICS = ["ne", "auc", "calibration", "ctr", "gauc", "ndcg@10"]
VALUE_METRICS = ["mse", "mae", "regression_auc"]
METRIC_TASKS = {m: BINARY for m in BINARY_METRICS} | {m: ["watch_time"] for m in VALUE_METRICS}


def _task(name: str, label: str, pred: str, weight: str) -> tmx.RecTaskInfo:
    return tmx.RecTaskInfo(name, label, pred, weight, group_id_name="user", session_id_name="request")


TASKS = [
    _task("click", "click", "p_click", "w"),
    _task("conversion", "conv", "p_conv", "w_conv"),
    _task("ctcvr", "ctcvr", "p_ctcvr", "w"),
    _task("watch_time", "watch", "p_watch", "w"),
]


def _logs(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=N)
    user = rng.integers(1, 25, N)
    user[:40] = 0  # user 0: never clicks, so no valid conversion row (gauc leaves it out)
    click = (rng.random(N) < 1 / (1 + np.exp(1.0 - x))).astype(np.int64)
    click[user == 0] = 0
    p_cvr = 1 / (1 + np.exp(0.5 - 0.8 * x + rng.normal(0, 0.5, N)))
    converted = (rng.random(N) < p_cvr).astype(np.int64)
    p_click = np.clip(1 / (1 + np.exp(1.0 - x)) + rng.normal(0, 0.05, N), 0.01, 0.99)
    p_conv = np.clip(p_cvr + rng.normal(0, 0.05, N), 0.01, 0.99)
    watch = rng.lognormal(2, 1.2, N) * click  # seconds, heavy tail
    return pd.DataFrame(
        {
            "user": user,
            "request": np.arange(N) // 20,
            "country": rng.choice(["de", "fr", "us"], N),
            "click": click,
            "conv": np.where(click == 1, converted, -1),  # -1: not clicked, no conversion label
            "ctcvr": click * converted,
            "p_click": p_click,
            "p_conv": p_conv,
            "p_ctcvr": p_click * p_conv,
            "watch": watch,
            "p_watch": np.maximum(watch * rng.lognormal(0, 0.5, N) + rng.normal(0, 2, N), 0),
            "w": rng.uniform(0.5, 2.0, N),
        }
    )


# ---- references ------------------------------------------------------------------------------------------------


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    cross_entropy = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w)
    rate = np.sum(w * y) / np.sum(w)
    return cross_entropy / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _gauc(frame: pd.DataFrame) -> float:
    frame = frame[frame.w > 0]
    values = [roc_auc_score(g.y, g.p, sample_weight=g.w) for _, g in frame.groupby("user") if g.y.nunique() == 2]
    return float(np.mean(values))


def _ndcg10(frame: pd.DataFrame) -> float:
    total = weight = 0.0
    for _, g in frame.groupby("request"):
        rows = list(zip(g.p, g.y))
        if not any(y > 0 for _, y in rows):
            continue  # no relevant row: skipped (empty_target_action="skip")
        ranked = sorted(rows, key=lambda row: (-row[0], row[1]))[:10]  # ties: relevant rows last
        dcg = sum(y / math.log2(i + 2) for i, (_, y) in enumerate(ranked))
        ideal = sorted((y for _, y in rows), reverse=True)[:10]
        query_weight = g.w.max()
        total += query_weight * dcg / sum(y / math.log2(i + 2) for i, y in enumerate(ideal))
        weight += query_weight
    return total / weight


def _regression_auc(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    i, j = np.triu_indices(len(y), 1)
    keep = y[i] != y[j]
    i, j = i[keep], j[keep]
    agree = np.sign(p[i] - p[j]) * np.sign(y[i] - y[j])
    pair_weight = w[i] * w[j]
    return float(np.sum(pair_weight * (agree + 1) / 2) / np.sum(pair_weight))


def _binary_references(frame: pd.DataFrame) -> dict[str, float]:
    """``frame`` holds the task's rows p, y, w (weight 0 where it has no label), user and request."""
    p, y, w = frame.p.to_numpy(), frame.y.to_numpy(), frame.w.to_numpy()
    return {
        "ne": _ne(p, y, w),
        "auc": roc_auc_score(y, p, sample_weight=w),
        "calibration": np.sum(w * p) / np.sum(w * y),
        "ctr": np.sum(w * y) / np.sum(w),
        "gauc": _gauc(frame),
        "ndcg@10": _ndcg10(frame),
    }


def _task_frame(logs: pd.DataFrame, task: str) -> pd.DataFrame:
    """A binary task's rows as the module reads them: conversion weighs 0 where it has no label."""
    p, y = {"click": ("p_click", "click"), "conversion": ("p_conv", "conv"), "ctcvr": ("p_ctcvr", "ctcvr")}[task]
    w = logs.w * (logs.conv >= 0) if task == "conversion" else logs.w
    return pd.DataFrame({"p": logs[p], "y": logs[y].clip(lower=0), "w": w, "user": logs.user, "request": logs.request})


def _references(logs: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for task in BINARY:
        out |= {f"{m}/{task}": v for m, v in _binary_references(_task_frame(logs, task)).items()}
    p, y, w = logs.p_watch.to_numpy(), logs.watch.to_numpy(), logs.w.to_numpy()
    out["mse/watch_time"] = mean_squared_error(y, p, sample_weight=w)
    out["mae/watch_time"] = mean_absolute_error(y, p, sample_weight=w)
    out["regression_auc/watch_time"] = _regression_auc(p, y, w)
    return out


# ---- the module ------------------------------------------------------------------------------------------------


def _steps(logs: pd.DataFrame, preds: torch.dtype, weights: torch.dtype) -> list[dict[str, torch.Tensor]]:
    steps = []
    for start in range(0, N, BATCH):
        b = logs.iloc[start : start + BATCH]
        conv = torch.tensor(b.conv.to_numpy())
        w = torch.tensor(b.w.to_numpy())
        step = {name: torch.tensor(b[name].to_numpy()).to(preds) for name in ("p_click", "p_conv", "p_ctcvr")}
        step |= {
            "p_watch": torch.tensor(b.p_watch.to_numpy()).to(preds),
            "click": torch.tensor(b.click.to_numpy()),  # int64 labels
            "conv": conv.clamp(min=0),
            "ctcvr": torch.tensor(b.ctcvr.to_numpy()),
            "watch": torch.tensor(b.watch.to_numpy()).float(),
            "w": w.to(weights),
            "w_conv": (w * (conv >= 0)).to(weights),  # the documented recipe: the importance weights kept
            "user": torch.tensor(b.user.to_numpy()),
            "request": torch.tensor(b.request.to_numpy()),
        }
        steps.append(step)
    return steps


def _as_fed(logs: pd.DataFrame, preds: torch.dtype, weights: torch.dtype) -> pd.DataFrame:
    """The logs rounded as the step's dtypes hold them (bfloat16 predictions, float16 weights)."""
    logs = logs.copy()
    for name in ("p_click", "p_conv", "p_ctcvr", "p_watch"):
        logs[name] = torch.tensor(logs[name].to_numpy()).to(preds).double().numpy()
    logs["w"] = torch.tensor(logs.w.to_numpy()).to(weights).double().numpy()
    logs["watch"] = logs.watch.astype(np.float32).astype(np.float64)
    return logs


def _module() -> tmx.RecMetricModule:
    metrics = BINARY_METRICS + VALUE_METRICS
    return tmx.RecMetricModule(TASKS, metrics, metric_tasks=METRIC_TASKS, window_size=WINDOW, throughput=False)


@pytest.mark.parametrize(
    ("preds", "weights"), [(torch.float32, torch.float32), (torch.bfloat16, torch.float16)], ids=["fp32", "bf16-fp16"]
)
def test_every_lifetime_and_window_value_is_that_of_each_tasks_valid_rows(preds, weights):
    logs = _logs(0)
    assert not logs[logs.user == 0].conv.ge(0).any()  # a user without a valid conversion row
    module = _module()
    for step in _steps(logs, preds, weights):
        module.update(step)
    values = {key: value.item() for key, value in module.compute().items()}
    fed = _as_fed(logs, preds, weights)
    # the window: the newest WINDOW impressions, whatever each task's weights (the tasks share one window)
    expected = _references(fed) | {f"{k}/window": v for k, v in _references(fed.iloc[N - WINDOW :]).items()}
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    # the conversion values are not those of every impression: unclicked rows would count as negatives
    assert values["ctr/conversion"] > 1.5 * np.average(fed.conv.clip(lower=0), weights=fed.w)


# ---- refused labels: the recipe --------------------------------------------------------------------------------


def test_nan_labels_are_refused_with_the_weight_zero_recipe_which_gives_the_labelled_rows():
    """NaN marking "no label" was refused with no way out ('got values containing NaN.'), where -1 got the
    weight-0 recipe; now both do, and following it gives the values of the labelled rows alone."""
    logs = _logs(1)
    y = torch.tensor(np.where(logs.conv >= 0, logs.conv, np.nan))
    p, w = torch.tensor(logs.p_conv.to_numpy()), torch.tensor(logs.w.to_numpy())
    task = [tmx.RecTaskInfo("conversion", "y", "p", "w_conv")]
    module = tmx.RecMetricModule(task, ["ne", "auc", "ctr"], throughput=False)
    recipe = r"got values containing NaN\. If NaN marks rows without a label, give them weight 0"
    with pytest.raises(ValueError, match=recipe + r".*`weights = weights \* \(~target\.isnan\(\)\)`"):
        module.update({"p": p, "y": y, "w_conv": w})
    for metric in (tmx.AUC(), tmx.WeightedMSE()):  # standalone metrics say the same, regression ones too
        with pytest.raises(ValueError, match=recipe):
            metric.update(p, y, w)
    module.update({"p": p, "y": y.nan_to_num(0.0), "w_conv": w * ~y.isnan()})  # the recipe, as the message writes it
    values = {key: value.item() for key, value in module.compute().items()}
    kept = logs.conv >= 0
    pk, yk, wk = logs.p_conv[kept].to_numpy(), logs.conv[kept].to_numpy(), logs.w[kept].to_numpy()
    assert values["auc/conversion"] == pytest.approx(roc_auc_score(yk, pk, sample_weight=wk), rel=1e-9)
    assert values["ne/conversion"] == pytest.approx(_ne(pk, yk, wk), rel=1e-9)
    assert values["ctr/conversion"] == pytest.approx(np.average(yk, weights=wk), rel=1e-9)


def test_the_minus_one_recipe_keeps_the_importance_weights():
    """The -1 recipe said `weights = (target >= 0)`, which drops the importance weights of the labelled rows."""
    logs = _logs(2)
    y, p = torch.tensor(logs.conv.to_numpy()), torch.tensor(logs.p_conv.to_numpy())
    w = torch.tensor(logs.w.to_numpy())
    metric = tmx.CTR()
    with pytest.raises(ValueError, match=r"`weights = weights \* \(target >= 0\)`.*ranking metrics still rank"):
        metric.update(p, y, w)
    metric.update(p, y.clamp(min=0), w * (y >= 0))
    kept = logs.conv >= 0
    assert metric.compute().item() == pytest.approx(np.average(logs.conv[kept], weights=logs.w[kept]), rel=1e-12)


# ---- evaluate on the same rows ---------------------------------------------------------------------------------


def test_evaluate_gives_the_module_values_by_either_route_and_its_error_names_the_skip_route():
    logs = _logs(3)
    module = _module()
    for step in _steps(logs, torch.float64, torch.float64):
        module.update(step)
    online = {key: value.item() for key, value in module.compute().items() if not key.endswith("/window")}
    frame = logs.assign(conv0=logs.conv.clip(lower=0), w_conv=logs.w * (logs.conv >= 0))
    frame["conv_null"] = logs.conv.where(logs.conv >= 0)  # NaN where not clicked: a null row for pandas
    ids = {"user": "user", "session": "request", "by": "country", "progress": False}

    # one run per weight column: the module's values, ranking ones included, overall and per country
    weighted = evaluate(frame, ["conversion=p_conv:conv0"], BINARY_METRICS, weights="w_conv", **ids)
    for metric in BINARY_METRICS:
        key = f"{metric}/conversion"
        assert weighted.values[key] == pytest.approx(online[key], rel=1e-9), key
    for country, rows in logs.groupby("country"):
        for metric, value in _binary_references(_task_frame(rows, "conversion")).items():
            # AUC and gauc keep float32 scores (docs/auc.md): 1e-6 against float64 references
            assert weighted.values[f"{metric}/conversion/country={country}"] == pytest.approx(value, rel=1e-6)

    # null labels: refused, naming on_invalid="skip", which leaves them out of the conversion task alone
    tasks = ["click=p_click:click", "conversion=p_conv:conv_null"]
    with pytest.raises(InvalidDataError, match=r"'conv_null' .* null or NaN .*mark rows without a label.*skip"):
        evaluate(frame, tasks, BINARY_METRICS, weights="w", **ids)
    skipped = evaluate(frame, tasks, BINARY_METRICS, weights="w", on_invalid="skip", **ids)
    for metric in BINARY_METRICS:
        assert skipped.values[f"{metric}/click"] == pytest.approx(online[f"{metric}/click"], rel=1e-9)
        if metric != "ndcg@10":
            key = f"{metric}/conversion"
            assert skipped.values[key] == pytest.approx(online[key], rel=1e-9), key
    # the ranking names rank the clicked rows alone there (the module's zero-weight rows stay candidates)
    clicked = _task_frame(logs, "conversion")[logs.conv >= 0]
    assert skipped.values["ndcg@10/conversion"] == pytest.approx(_ndcg10(clicked), rel=1e-9)
    assert skipped.values["ndcg@10/conversion"] != pytest.approx(online["ndcg@10/conversion"], rel=1e-3)


def test_evaluate_refuses_the_modules_per_task_weight_columns_naming_both_routes():
    """The module's task dicts (a conversion task with `weight_name: w_conv`) given to evaluate were refused with
    "'weight_name' takes only None", no word of how to score such a head offline."""
    logs = _logs(4)
    tasks = [
        {"name": "click", "prediction_name": "p_click", "label_name": "click", "weight_name": "w"},
        {"name": "conversion", "prediction_name": "p_conv", "label_name": "conv", "weight_name": "w_conv"},
    ]
    with pytest.raises(ValueError, match=r"takes only None .*one run per weight column.*on_invalid='skip'"):
        evaluate(logs, tasks, ["ne"], weights="w", progress=False)
