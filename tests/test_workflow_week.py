"""A recommender engineer's week, end to end, written from the docs alone.

A three-task model (click: binary; conversion: binary, most rows of weight 0; watch_time:
regression) is scored the way ``docs/module.md``, ``docs/windows.md`` and ``docs/evaluate.md``
describe: modules built with ``RecMetricModule.from_config`` from registry names (NE, AUC, AUPRC,
calibration, CTR, grouped AUC by user, NDCG@10 and recall@5 over sessions, ``segmented_ne`` by
country, MSE and R² on the regression task), a window, the throughput, flat ``log_dict`` keys at
every step; then the same steps under real gloo DDP (2 ranks, uneven batches, one rank's last step
empty), a mid-epoch checkpoint resumed in a fresh module, and offline ``python -m torchmetrics_ext
evaluate`` over Parquet and CSV copies of the same predictions with ``--by country``.

Every value is checked against references computed here: scikit-learn's ``roc_auc_score``,
``average_precision_score`` and ``log_loss`` with ``sample_weight``, numpy formulas for NE,
calibration, CTR, MSE and R², a numpy NDCG/recall written from ``docs/ranking.md``'s formulas, a
pandas groupby for grouped AUC and the country segments, and the docs' window rule (the newest
whole updates whose sizes sum to at most the window, each DDP rank keeping ``window_size // 2``).

What the docs say one module cannot hold (every metric scores every task unless ``metric_tasks`` says
otherwise, and a module reads one group id column) is checked too: without ``metric_tasks`` the regression
task is refused next to binary metrics, and the country segments need a module of their own
(``docs/module.md``, "Tasks and inputs").
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.evaluate import evaluate

WINDOW = 40
COUNTRIES = 3
COUNTRY_NAMES = np.array(["de", "fr", "us"])
BINARY_METRICS = ["ne", "auc", "auprc", "calibration", "ctr", "gauc", "ndcg@10", "recall@5"]
TASK_COLUMNS = {  # task -> (prediction, label, weight or None)
    "click": ("click_pred", "click", None),
    "conversion": ("conv_pred", "conv", "conv_w"),
    "watch_time": ("watch_pred", "watch", None),
}
BINARY_TASKS = ("click", "conversion")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the child processes import this checkout's package and tests, whatever is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}


# ----------------------------------------------------------------------------------------- data
def make_steps(sizes: list[int], seed: int, session_base: int = 0) -> list[dict[str, np.ndarray]]:
    """Steps of a three-task model's output: sessions span steps, most conversion rows weigh 0."""
    rng = np.random.default_rng(seed)
    steps = []
    for index, n in enumerate(sizes):
        click_pred = rng.uniform(0.03, 0.97, n)
        conv_pred = rng.uniform(0.03, 0.97, n)
        watch_pred = rng.uniform(0.0, 1.0, n)
        conv_w = np.where(rng.random(n) < 0.6, 0.0, rng.choice([1.0, 2.0, 0.5], n))
        steps.append(
            {
                "click_pred": click_pred.astype(np.float32),
                "click": (rng.random(n) < click_pred).astype(np.int64),
                "conv_pred": conv_pred.astype(np.float32),
                "conv": (rng.random(n) < conv_pred).astype(np.int64),
                "conv_w": conv_w.astype(np.float32),
                "watch_pred": watch_pred.astype(np.float32),
                "watch": np.clip(watch_pred + rng.normal(0.0, 0.3, n), 0.0, 3.0).astype(np.float32),
                "user": rng.integers(0, 6, n).astype(np.int64),
                # a session id spans this step and the next one
                "session": (session_base + 2 * index + rng.integers(0, 4, n)).astype(np.int64),
                "country": rng.integers(0, COUNTRIES, n).astype(np.int64),
            }
        )
    return steps


def tensors(step: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value.copy()) for key, value in step.items()}


def concat(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([step[key] for step in steps]) for key in steps[0]}


def kept(steps: list[dict[str, np.ndarray]], share: int, weight: str | None = None) -> list[dict[str, np.ndarray]]:
    """The window rule of docs/windows.md: the newest whole updates within ``share`` samples, or the
    newest ``share`` samples of a newest update larger than that; empty updates take no room, nor (for a
    metric of the one task weighted by column ``weight``) updates whose ``weight`` is all zero."""
    out: list[dict[str, np.ndarray]] = []
    room = share
    for step in reversed([s for s in steps if len(s["click"]) and (weight is None or s[weight].any())]):
        n = len(step["click"])
        if not out and n > share:
            return [{key: value[-share:] for key, value in step.items()}]
        if n > room:
            break
        out.insert(0, step)
        room -= n
    return out


# ----------------------------------------------------------------------------------- references
def ne_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    if total == 0:
        return math.nan
    rate = (w * y).sum() / total
    if rate in (0.0, 1.0):
        return math.nan
    cross_entropy = log_loss(y, p, sample_weight=w, labels=[0, 1])
    return float(cross_entropy / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def auc_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray, fn: Any = roc_auc_score) -> float:
    on = w > 0
    if len(np.unique(y[on])) < 2:
        return math.nan
    return float(fn(y[on], p[on], sample_weight=w[on]))


def gauc_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray, users: np.ndarray) -> float:
    frame = pd.DataFrame({"p": p, "y": y, "w": w, "user": users})
    values = [auc_ref(g["p"].to_numpy(), g["y"].to_numpy(), g["w"].to_numpy()) for _, g in frame.groupby("user")]
    values = [v for v in values if not math.isnan(v)]  # the groups holding both classes
    return float(np.mean(values)) if values else math.nan


def ranking_ref(name: str, k: int, p: np.ndarray, y: np.ndarray, w: np.ndarray, sessions: np.ndarray) -> float:
    """docs/ranking.md: per-query value, ranked by score descending (ties: relevance ascending),
    weighted by the query's largest row weight, queries without a relevant row skipped."""
    total = weighted = 0.0
    for session in np.unique(sessions):
        rows = sessions == session
        order = np.lexsort((y[rows], -p[rows].astype(np.float64)))
        rel = y[rows][order].astype(np.float64)
        if not (rel > 0).any():
            continue
        cut = min(k, len(rel))
        if name == "ndcg":
            discount = 1.0 / np.log2(np.arange(2, len(rel) + 2))
            value = (rel * discount)[:cut].sum() / (np.sort(rel)[::-1] * discount)[:cut].sum()
        else:  # recall
            value = (rel[:cut] > 0).sum() / (rel > 0).sum()
        weight = float(w[rows].max())
        total += weight * value
        weighted += weight
    return total / weighted if weighted else math.nan


def binary_refs(rows: dict[str, np.ndarray], suffix: str = "", prefix: str = "train/") -> dict[str, float]:
    out = {}
    for task in BINARY_TASKS:
        pred, label, weight = TASK_COLUMNS[task]
        p, y = rows[pred].astype(np.float64), rows[label]
        w = rows[weight].astype(np.float64) if weight else np.ones(len(p))
        values = {
            "ne": ne_ref(p, y, w),
            "auc": auc_ref(p, y, w),
            "auprc": auc_ref(p, y, w, average_precision_score),
            "calibration": (w * p).sum() / (w * y).sum() if (w * y).sum() else math.nan,
            "ctr": (w * y).sum() / w.sum() if w.sum() else math.nan,
            "gauc": gauc_ref(p, y, w, rows["user"]),
            "ndcg@10": ranking_ref("ndcg", 10, p, y, w, rows["session"]),
            "recall@5": ranking_ref("recall", 5, p, y, w, rows["session"]),
        }
        out.update({f"{prefix}{name}/{task}{suffix}": float(v) for name, v in values.items()})
    return out


def country_refs(rows: dict[str, np.ndarray], suffix: str = "") -> dict[str, float]:
    out = {}
    for task in BINARY_TASKS:
        pred, label, weight = TASK_COLUMNS[task]
        w = rows[weight] if weight else np.ones(len(rows[pred]))
        frame = pd.DataFrame({"p": rows[pred].astype(np.float64), "y": rows[label], "w": w, "c": rows["country"]})
        for country in range(COUNTRIES):
            part = frame[frame["c"] == country]
            out[f"sne.{country}/{task}{suffix}"] = ne_ref(
                part["p"].to_numpy(), part["y"].to_numpy(), part["w"].to_numpy()
            )
    return out


def regression_refs(rows: dict[str, np.ndarray], suffix: str = "") -> dict[str, float]:
    p, y = rows["watch_pred"].astype(np.float64), rows["watch"].astype(np.float64)
    sse = ((p - y) ** 2).sum()
    return {
        f"mse/watch_time{suffix}": sse / len(y),
        f"r_squared/watch_time{suffix}": 1.0 - sse / ((y - y.mean()) ** 2).sum(),
    }


def conversion_window(per_rank: list[list[dict[str, np.ndarray]]], share: int) -> dict[str, np.ndarray]:
    """The rows of the ranking metrics' conversion windows: each ranking metric keeps a copy per task, whose
    window skips the steps where that task's weights are all zero (docs/windows.md: each metric as alone)."""
    steps = [step for steps in per_rank for step in kept(steps, share, weight="conv_w")]
    return concat(steps) if steps else {key: value[:0] for key, value in per_rank[0][0].items()}


def all_refs(
    lifetime_rows: dict[str, np.ndarray],
    window_rows: dict[str, np.ndarray],
    conversion_rows: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every key's reference; ``conversion_rows``: the conversion ranking copies' window (see ``conversion_window``)."""
    out = {**binary_refs(lifetime_rows), **binary_refs(window_rows, "/window")}
    if conversion_rows is not None:
        ranked = binary_refs(conversion_rows, "/window")
        out.update({k: ranked[k] for k in ("train/ndcg@10/conversion/window", "train/recall@5/conversion/window")})
    out.update({**country_refs(lifetime_rows), **country_refs(window_rows, "/window")})
    out.update({**regression_refs(lifetime_rows), **regression_refs(window_rows, "/window")})
    return out


# ------------------------------------------------------------------------------------- modules
def _task(name: str, group: str) -> dict[str, Any]:
    pred, label, weight = TASK_COLUMNS[name]
    task: dict[str, Any] = {"name": name, "prediction_name": pred, "label_name": label, "weight_name": weight}
    task.update({"group_id_name": group, "session_id_name": "session"} if group else {})
    return task


CONFIGS = {  # one module per group id column and label domain (docs/module.md, "Tasks and inputs")
    "binary": {
        "tasks": [_task(t, "user") for t in BINARY_TASKS],
        "metrics": BINARY_METRICS,
        "window_size": WINDOW,
        "compute_interval_steps": 2,
        "prefix": "train/",
    },
    "country": {
        "tasks": [_task(t, "country") for t in BINARY_TASKS],
        "metrics": {"sne": {"metric": "segmented_ne", "num_segments": COUNTRIES}},
        "window_size": WINDOW,
        "throughput": False,
    },
    "regression": {
        "tasks": [_task("watch_time", "")],
        "metrics": ["mse", "r_squared"],
        "window_size": WINDOW,
        "throughput": False,
    },
}


def build() -> dict[str, tmx.RecMetricModule]:
    return {name: tmx.RecMetricModule.from_config(config) for name, config in CONFIGS.items()}


def log_dict(modules: dict[str, tmx.RecMetricModule], local: bool = False) -> dict[str, float]:
    """Every module's ``compute()`` as one flat dict of floats, as ``log_dict`` takes it."""
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined values (a window of one class) are nan + a warning
        for module in modules.values():
            values = module.local_compute() if local else module.compute()
            for key, value in values.items():
                assert isinstance(value, torch.Tensor) and value.ndim == 0, key
                assert key not in out, key
                out[key] = value.item()
    return out


def feed(modules: dict[str, tmx.RecMetricModule], step: dict[str, np.ndarray]) -> None:
    columns = tensors(step)
    for module in modules.values():
        module.update(columns)


def timeless(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if not k.endswith("_throughput")}


def assert_close(got: dict[str, float], want: dict[str, float], where: str, rtol: float = 1e-9) -> None:
    missing = sorted(set(want) - set(got))
    assert not missing, f"{where}: keys missing {missing}"
    bad = {
        key: (got[key], value)
        for key, value in want.items()
        if not (math.isnan(value) and math.isnan(got[key]))
        and not math.isclose(got[key], value, rel_tol=rtol, abs_tol=1e-12)
    }
    assert not bad, f"{where}: {bad}"


SIZES = [12, 17, 9, 0, 23, 15, 11, 30, 8, 14, 6, 19]


# --------------------------------------------------------------------------------- one process
def test_one_process_every_step_equals_the_references():
    steps = make_steps(SIZES, seed=1)
    modules = build()
    keys = None
    for index in range(len(steps)):
        feed(modules, steps[index])
        if not any(len(s["click"]) for s in steps[: index + 1]):
            continue
        values = log_dict(modules)
        keys = keys or list(values)
        assert list(values) == keys, "the flat keys change from step to step"
        seen = steps[: index + 1]
        assert_close(
            values,
            all_refs(concat(seen), concat(kept(seen, WINDOW)), conversion_window([seen], WINDOW)),
            f"step {index}",
        )
        assert values["train/throughput/total_examples"] == sum(len(s["click"]) for s in seen)
    assert keys is not None
    assert {"train/throughput/lifetime_throughput", "train/throughput/window_throughput"} <= set(keys)
    assert math.isfinite(values["train/throughput/lifetime_throughput"])


def test_one_module_cannot_score_a_regression_task_next_to_binary_metrics():
    """Without `metric_tasks` every metric scores every task: real-valued labels next to AUC/NE are refused, and
    the message says which metrics ask for such labels and that `metric_tasks` leaves the task out of theirs (it
    said only that the labels were not 0/1, as if the column held a bad value)."""
    step = tensors(make_steps([10], seed=2)[0])
    step["watch"][3] = 2.5  # watch time: any non-negative value
    for metrics, said in (
        (["ne", "auc", "mse"], r"\['auc'\] read this task and take 0/1 labels"),
        (["ne", "mse"], r"\['ne'\] read this task and take labels in \[0, 1\]"),
    ):
        config = {"tasks": [_task(t, "user") for t in TASK_COLUMNS], "metrics": metrics, "throughput": False}
        module = tmx.RecMetricModule.from_config(config)
        before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
        with pytest.raises(ValueError, match=r"Task 'watch_time', `model_out\['watch'\]`") as error:
            module.update(step)
        assert re.search(said, str(error.value)), str(error.value)
        assert "is left out of their tasks with `metric_tasks`" in str(error.value)
        after = module.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), "a refused step changed a state"
    # predictions of another scale (seconds watched) are told the same way
    seconds = {**step, "watch": step["watch"] * 60, "watch_pred": step["watch_pred"] * 60}
    module = tmx.RecMetricModule.from_config(
        {"tasks": [_task(t, "user") for t in TASK_COLUMNS], "metrics": ["auc", "mse"], "throughput": False}
    )
    with pytest.raises(
        ValueError, match=r"`model_out\['watch_pred'\]`.*\['auc'\] read this task and take predictions in \[0, 1\]"
    ):
        module.update(seconds)
    # TorchRec's per-metric tasks are the tasks a metric reads (`metric_tasks`), as in TorchRec: AUC on click
    # and MSE on watch time take the step; AUC also on watch time is refused with TorchRec's advice
    config = {
        "rec_tasks": [{**_task("click", ""), "weight_name": "w"}, {**_task("watch_time", ""), "weight_name": "w"}],
        "rec_metrics": {"auc": {"rec_task_indices": [0]}, "mse": {"rec_task_indices": [1]}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    module.update({**step, "w": torch.ones(10)})
    assert {"auc-click|window_auc", "mse-watch_time|lifetime_mse"} <= set(module.compute())
    config["rec_metrics"]["auc"] = {"rec_task_indices": [0, 1]}
    module = tmx.RecMetricModule.from_torchrec_config(config)
    with pytest.raises(ValueError, match=r"\['auc'\] read this task and take 0/1 labels.*`rec_task_indices`"):
        module.update({**step, "w": torch.ones(10)})
    # the same module without the regression task takes the step; the regression task alone too
    for tasks, metrics in ((BINARY_TASKS, ["ne", "auc", "mse"]), (("watch_time",), ["mse", "r_squared"])):
        module = tmx.RecMetricModule.from_config(
            {"tasks": [_task(t, "") for t in tasks], "metrics": metrics, "throughput": False}
        )
        module.update(step)


def test_segments_by_country_next_to_grouped_auc_by_user_says_why_it_is_refused():
    """One module reads one group id column: ``segmented_ne`` next to ``gauc`` reads the user ids as
    segments. The refusal said only that the ids were out of range; it now names the grouped metric
    that shares the column and the fix (a module of its own)."""
    step = tensors(make_steps([30], seed=5)[0])
    assert step["user"].max() >= COUNTRIES
    config = {
        "tasks": [_task(t, "user") for t in BINARY_TASKS],
        "metrics": {"gauc": "gauc", "sne": {"metric": "segmented_ne", "num_segments": COUNTRIES}},
        "throughput": False,
    }
    module = tmx.RecMetricModule.from_config(config)
    with pytest.raises(ValueError, match=r"expected segment ids in \[0, 3\)") as error:
        module.update(step)
    assert "grouped metric(s) ['gauc']" in str(error.value)
    assert "RecMetricModule of their own" in str(error.value)
    assert module.metrics["gauc"].update_count == 0
    # the documented way: the segments in a module of their own, reading the country column
    country = tmx.RecMetricModule.from_config(CONFIGS["country"])
    country.update(step)
    got = {k: v.item() for k, v in country.compute().items() if not k.endswith("/window")}
    assert_close(got, country_refs({k: v.numpy() for k, v in step.items()}), "segments of their own")


# ---------------------------------------------------------------------------------- checkpoint
def test_checkpoint_mid_epoch_resumes_lifetime_and_window_exactly(tmp_path):
    steps = make_steps(SIZES, seed=3)
    straight = build()
    for step in steps:
        feed(straight, step)
    half = build()
    for step in steps[:5]:
        feed(half, step)
    path = tmp_path / "metrics.pt"
    torch.save({name: module.state_dict() for name, module in half.items()}, path)
    del half
    resumed = build()  # a fresh module, as a new process builds it from its config
    saved = torch.load(path, weights_only=False)
    for name, module in resumed.items():
        module.load_state_dict(saved[name])
    for step in steps[5:]:
        feed(resumed, step)
    got, want = log_dict(resumed), log_dict(straight)
    assert list(got) == list(want)
    assert_close(timeless(got), timeless(want), "resumed vs uninterrupted", rtol=0.0)
    assert_close(
        got,
        all_refs(concat(steps), concat(kept(steps, WINDOW)), conversion_window([steps], WINDOW)),
        "resumed vs references",
    )


def _resume_in_this_process(path: str, out: str) -> None:
    """A fresh process's side of the checkpoint: build from the config, load, finish the epoch, log."""
    resumed = build()
    saved = torch.load(path, weights_only=False)
    for name, module in resumed.items():
        module.load_state_dict(saved[name])
    for step in make_steps(SIZES, seed=3)[5:]:
        feed(resumed, step)
    with open(out, "w") as file:
        json.dump(log_dict(resumed), file)


def test_checkpoint_resumed_in_a_fresh_process(tmp_path):
    steps = make_steps(SIZES, seed=3)
    half, straight = build(), build()
    for index, step in enumerate(steps):
        feed(straight, step)
        if index < 5:
            feed(half, step)
    path, out = tmp_path / "metrics.pt", tmp_path / "values.json"
    torch.save({name: module.state_dict() for name, module in half.items()}, path)
    code = f"from tests.test_workflow_week import _resume_in_this_process as r; r({str(path)!r}, {str(out)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr
    got = {k: float(v) for k, v in json.loads(out.read_text()).items()}
    want = log_dict(straight)
    assert list(got) == list(want)
    assert_close(timeless(got), timeless(want), "fresh process vs uninterrupted", rtol=0.0)


# ------------------------------------------------------------------------------------------ DDP
RANK_SIZES = ([12, 17, 9, 23, 15, 11], [14, 8, 30, 10, 6, 0])  # uneven; rank 1's last step is empty


def _rank_steps(rank: int) -> list[dict[str, np.ndarray]]:
    return make_steps(list(RANK_SIZES[rank]), seed=10 + rank, session_base=0)


def _ddp_job(rank: int, world_size: int) -> dict[str, Any]:
    torch.manual_seed(rank)
    modules = build()
    logged = []
    steps = _rank_steps(rank)
    for index, step in enumerate(steps):
        feed(modules, step)
        if modules["binary"].should_compute():  # every rank computes at the same steps
            logged.append(log_dict(modules))
        if index == 2:  # a checkpoint mid-epoch: each rank saves and resumes its own states
            buffer = io.BytesIO()
            torch.save({name: module.state_dict() for name, module in modules.items()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=False)
            modules = build()
            for name, module in modules.items():
                module.load_state_dict(saved[name])
    return {"final": log_dict(modules), "local": log_dict(modules, local=True), "logged": logged}


@pytest.mark.ddp
def test_ddp_two_ranks_equal_one_process_and_references(ddp_pool):
    results = ddp_pool.run(_ddp_job, timeout=240)
    per_rank = [_rank_steps(rank) for rank in range(2)]
    every = per_rank[0] + per_rank[1]
    assert_close(results[0]["final"], results[1]["final"], "rank 0 vs rank 1", rtol=0.0)
    assert len(results[0]["logged"]) == len(results[1]["logged"]) == 3
    for count, logged in zip((2, 4, 6), results[0]["logged"]):  # each interval's flat keys, synced
        seen = [steps[:count] for steps in per_rank]
        rows = concat(kept(seen[0], WINDOW // 2) + kept(seen[1], WINDOW // 2))
        want = all_refs(concat(seen[0] + seen[1]), rows, conversion_window(seen, WINDOW // 2))
        assert_close(logged, want, f"DDP at update {count}")
        assert logged["train/throughput/total_examples"] == sum(len(s["click"]) for s in seen[0] + seen[1])
    for first, second in zip(results[0]["logged"], results[1]["logged"]):  # every rank logs the same values
        assert list(first) == list(second)
        assert_close(first, second, "rank 0 vs rank 1", rtol=0.0)
    window_rows = concat(kept(per_rank[0], WINDOW // 2) + kept(per_rank[1], WINDOW // 2))
    final = results[0]["final"]
    assert_close(
        final, all_refs(concat(every), window_rows, conversion_window(per_rank, WINDOW // 2)), "DDP vs references"
    )
    assert final["train/throughput/total_examples"] == sum(map(sum, RANK_SIZES))
    # the lifetime values equal one process fed the concatenated data
    one = build()
    for step in every:
        feed(one, step)
    single = log_dict(one)
    lifetime = [k for k in single if not k.endswith("/window") and "throughput" not in k]
    assert_close({k: final[k] for k in lifetime}, {k: single[k] for k in lifetime}, "DDP vs one process")
    # each rank's local values are its own rows'
    for rank in range(2):
        local_want = all_refs(
            concat(per_rank[rank]),
            concat(kept(per_rank[rank], WINDOW // 2)),
            conversion_window([per_rank[rank]], WINDOW // 2),
        )
        assert_close(results[rank]["local"], local_want, f"rank {rank} local")


# -------------------------------------------------------------------------------------- offline
def _evaluate_cli(out: Any, *arguments: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "torchmetrics_ext", "evaluate", *arguments, "--output", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_offline_evaluate_equals_the_module_and_the_references(tmp_path):
    steps = make_steps(SIZES, seed=4)
    modules = build()
    for step in steps:
        feed(modules, step)
    online = log_dict(modules)
    rows = concat(steps)
    frame = pd.DataFrame(rows)
    frame["country"] = COUNTRY_NAMES[rows["country"]]  # a string column in the logs
    frame.to_parquet(tmp_path / "preds.parquet")
    # float32 columns as float64 text: pandas writes a float32 as its shortest float32 repr ("0.1"),
    # which reads back as another float64 than the float32 the model produced
    frame.astype({c: "float64" for c in frame.columns if frame[c].dtype == np.float32}).to_csv(
        tmp_path / "preds.csv", index=False
    )
    task_metrics = {"click": BINARY_METRICS, "conversion": BINARY_METRICS, "watch_time": ["mse", "r_squared"]}
    by_task: dict[tuple[str, str], list[dict[str, Any]]] = {}
    # docs/evaluate.md's config schema: click unweighted (`weight_name: None`) next to conversion weighted by
    # the shared `weights` in one run; the regression task in a run of its own
    binary_tasks = [{**_task("click", ""), "weight_name": None}, {"name": "conversion", **_task("conversion", "")}]
    del binary_tasks[1]["weight_name"]  # weighted by the shared `weights`: a per-task weight column is refused
    config = {
        "tasks": binary_tasks,
        "metrics": BINARY_METRICS,
        "weights": "conv_w",
        "user": "user",
        "session": "session",
    }
    (tmp_path / "eval.json").write_text(json.dumps({**config, "paths": ["preds.parquet"], "by": "country"}))
    # the command line: the binary tasks from --config, the regression task from --task flags
    result = _evaluate_cli(tmp_path / "binary.json", "--config", str(tmp_path / "eval.json"))
    for task in BINARY_TASKS:
        by_task["preds.parquet", task] = [r for r in result["records"] if r["task"] == task]
    flags = ["--task", "watch_time=watch_pred:watch", "--metrics", "mse,r_squared", "--by", "country"]
    result = _evaluate_cli(tmp_path / "watch.json", str(tmp_path / "preds.parquet"), *flags)
    by_task["preds.parquet", "watch_time"] = result["records"]
    # the Python API, the same way over the CSV copy
    regression = {"tasks": [_task("watch_time", "")], "metrics": task_metrics["watch_time"]}
    for options in (config, regression):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined segments are nan with a warning
            result = evaluate(tmp_path / "preds.csv", by="country", progress=False, **options)
        for record in result.records:
            record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
            by_task.setdefault(("preds.csv", record["task"]), []).append(record)
    for (source, task), task_records in by_task.items():
        metrics = task_metrics[task]
        records = {record["segment"]: record for record in task_records if record["task"] == task}
        # `rows` counts the rows that weigh for the task: the conversion task's conv_w 0 rows are left out
        weight = TASK_COLUMNS[task][2]
        counted = np.asarray(rows[weight]) != 0 if weight else np.ones(len(rows["click"]), dtype=bool)
        assert records["all"]["rows"] == int(counted.sum())
        counts = np.bincount(np.asarray(rows["country"])[counted], minlength=COUNTRIES)
        assert [records[f"country={name}"]["rows"] for name in COUNTRY_NAMES] == counts.tolist()
        for name in metrics:
            offline = records["all"][name]
            key = f"train/{name}/{task}" if task != "watch_time" else f"{name}/{task}"
            want = online[key]
            assert (offline is None and math.isnan(want)) or math.isclose(offline, want, rel_tol=1e-9), (
                source,
                task,
                name,
                offline,
                want,
            )
        if task == "watch_time":
            continue
        for country in range(COUNTRIES):  # --by country: the module's segmented_ne, every metric a groupby's
            record = records[f"country={COUNTRY_NAMES[country]}"]
            want = online[f"sne.{country}/{task}"]
            assert (record["ne"] is None and math.isnan(want)) or math.isclose(record["ne"], want, rel_tol=1e-9)
            part = {key: value[rows["country"] == country] for key, value in rows.items()}
            refs = binary_refs(part, prefix="")
            for name in metrics:
                value, want = record[name], refs[f"{name}/{task}"]
                assert (value is None and math.isnan(want)) or math.isclose(value, want, rel_tol=1e-9), (
                    source,
                    task,
                    country,
                    name,
                    value,
                    want,
                )
    assert_close(
        online, all_refs(rows, concat(kept(steps, WINDOW)), conversion_window([steps], WINDOW)), "online vs references"
    )
