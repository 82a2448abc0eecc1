"""``RecMetricModule(metric_tasks=...)`` in seeded random configurations.

Each scenario has 2 to 4 tasks (binary heads holding probabilities or logits, regression heads with
labels in seconds; own, shared or no weight columns), random registry metrics each reading a random
subset of the tasks (or every task), a random ``window_size``, either key style, random steps (some
empty). Checked against references written here (scikit-learn with ``sample_weight``, numpy formulas
of ``docs/pointwise.md``, ``tests/helpers/ranking_reference``, the window rule of ``docs/windows.md``):
the lifetime and window values, the exact set of keys (only the tasks each metric reads), ``reset``,
a ``state_dict`` round trip into a fresh module, pickling and ``clone``, 2-process gloo DDP, and
``from_torchrec_config`` with per-metric ``rec_task_indices``.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.module_steps import build as _module
from tests.helpers.module_steps import feed as _feed
from tests.helpers.module_steps import values as _compute
from tests.helpers.module_steps import weighs_nothing, window_groups
from tests.helpers.ranking_reference import group_rows, reference_values
from tests.test_module_ddp_random import _gauc_reference, _kept_rows, _pointwise_reference, _two_classes

SEEDS = list(range(40))
WEIGHTS = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
NUM_SEGMENTS = 3
BINARY_ONLY = [
    "ne",
    "log_loss",
    "auc",
    "auc_binned",
    "auprc",
    "calibration",
    "ctr",
    "gauc",
    "segmented_ne",
    "ndcg@3",
    "recall@2",
]
ANY_TASK = ["mse", "mae", "r_squared", "nmse"]
TAKES_LOGITS = {"ne", "log_loss", "auc", "auc_binned", "auprc", "calibration", "gauc", "segmented_ne"}


def scenario(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([4242, seed])
    num_tasks = int(rng.integers(2, 5))
    kinds = [str(rng.choice(["binary", "regression"], p=[0.65, 0.35])) for _ in range(num_tasks)]
    if "binary" not in kinds:
        kinds[int(rng.integers(0, num_tasks))] = "binary"
    # which binary heads hold logits (the metrics of probabilities that read them say so): none, all, or some
    logit_mode = str(rng.choice(["none", "all", "some"], p=[0.3, 0.3, 0.4]))
    trusted = bool(rng.random() < 0.2)  # every metric with validate_args=False: the module checks nothing
    tasks = []
    for t in range(num_tasks):
        tasks.append(
            {
                "name": f"t{t}",
                "label_name": f"y{t}",
                "prediction_name": f"p{t}",
                "weight_name": [None, "w_shared", f"w{t}"][int(rng.integers(0, 3))],
                "group_id_name": "grp",
                "session_id_name": "sess",
            }
        )
    binary = [task["name"] for task, kind in zip(tasks, kinds, strict=True) if kind == "binary"]
    every = [task["name"] for task in tasks]
    if logit_mode == "some":
        logit_tasks = [t for t in binary[1:] if rng.random() < 0.5] or binary[-1:]  # the first holds probabilities
    else:
        logit_tasks = binary if logit_mode == "all" else []
    of_probabilities = [t for t in binary if t not in logit_tasks]
    names = [str(n) for n in rng.choice(BINARY_ONLY, size=int(rng.integers(1, 4)), replace=False)]
    if "gauc" in names and "segmented_ne" in names:  # they cannot share the id column (documented)
        names.remove("gauc")
    names += [str(n) for n in rng.choice(ANY_TASK, size=int(rng.integers(1, 3)), replace=False)]
    metrics: dict[str, dict[str, Any]] = {}
    metric_tasks: dict[str, list[str]] = {}
    for name in names:
        options: dict[str, Any] = {"metric": name}
        if name == "auc_binned":
            options = {"metric": "auc", "num_bins": 64}  # checked against the exact AUC's keys only
        if trusted:
            options["validate_args"] = False
        if name == "segmented_ne":
            options["num_segments"] = NUM_SEGMENTS
        pool = binary if name in BINARY_ONLY else every
        if name in TAKES_LOGITS:  # the readers of one task agree on from_logits; of different tasks they may not
            pool = (
                [logit_tasks, of_probabilities][int(rng.integers(0, 2))] if logit_tasks and of_probabilities else binary
            )
            if pool == logit_tasks:
                options["from_logits"] = True
        key = "user_gauc" if name == "gauc" else name  # TorchRec's `gauc` key is refused for our GAUC (documented)
        metrics[key] = options
        if pool == every and rng.random() < 0.3:
            continue  # every task
        size = int(rng.integers(1, len(pool) + 1))
        chosen = set(rng.choice(pool, size=size, replace=False).tolist())
        metric_tasks[key] = [t for t in rng.permutation(pool).tolist() if t in chosen]  # any order
    read = {t for name in metrics for t in metric_tasks.get(name, every)}
    for t in every:  # a task no metric reads is refused (documented): let an any-task metric read it
        if t not in read:
            name = next(n for n in metrics if n in ANY_TASK)
            if name in metric_tasks:
                metric_tasks[name].append(t)
    config = {
        "tasks": tasks,
        "metrics": metrics,
        "metric_tasks": metric_tasks,
        "window_size": None if rng.random() < 0.4 else int(rng.integers(3, 60)),
        "key_style": "torchrec" if rng.random() < 0.4 else "torchmetrics_ext",
        "throughput": False,
    }

    def step(n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for t, kind in enumerate(kinds):
            if kind == "binary":
                p = rng.uniform(0.02, 0.98, size=n)
                if rng.random() < 0.3:
                    p = rng.choice([0.1, 0.5, 0.9], size=n)  # ties
                out[f"p{t}"] = (np.log(p) - np.log1p(-p) if f"t{t}" in logit_tasks else p).astype(np.float32)
                out[f"y{t}"] = (rng.random(n) < 0.4).astype(np.int64)
            else:
                out[f"p{t}"] = rng.uniform(0.0, 300.0, size=n).astype(np.float32)  # seconds
                out[f"y{t}"] = np.round(rng.uniform(0.0, 600.0, size=n)).astype(np.float32)
            out[f"w{t}"] = rng.choice(WEIGHTS, size=n) if rng.random() < 0.8 else np.ones(n)
        # all ones at times (TorchRec's default): such weight columns are not stacked (docs/module.md)
        out["w_shared"] = rng.choice(WEIGHTS, size=n) if rng.random() < 0.7 else np.ones(n)
        out["grp"] = rng.integers(0, NUM_SEGMENTS, size=n)
        out["sess"] = rng.integers(0, 5, size=n)
        return out

    steps = [step(int(rng.choice([0, 1, 4, 9, 17]))) for _ in range(int(rng.integers(1, 6)))]
    extra = [step(int(rng.choice([0, 3, 8]))) for _ in range(int(rng.integers(1, 3)))]
    bad = step(5)  # a NaN prediction in one task's column: refused whatever the metrics that read it
    bad_task = int(rng.integers(0, num_tasks))
    bad[f"p{bad_task}"][int(rng.integers(0, 5))] = np.nan
    return {
        "config": config,
        "kinds": kinds,
        "logit_tasks": logit_tasks,
        "steps": steps,
        "extra": extra,
        "bad": (f"t{bad_task}", bad),
        "trusted": trusted,
    }


def _column(steps: list[dict[str, np.ndarray]], key: str | None) -> np.ndarray:
    n = sum(len(s["grp"]) for s in steps)
    if key is None:
        return np.ones(n)
    return np.concatenate([s[key] for s in steps]).astype(np.float64) if steps else np.zeros(0)


def _one_value(name: str, p: np.ndarray, y: np.ndarray, w: np.ndarray, grp: np.ndarray, sess: np.ndarray) -> Any:
    if name in ("ne", "log_loss", "calibration", "ctr", "mse", "mae"):
        return _pointwise_reference(name, p, y, w)
    if name == "r_squared":
        spread = (w * (y - (w * y).sum() / w.sum()) ** 2).sum() if w.sum() > 0 else 0.0
        return float(r2_score(y, p, sample_weight=w)) if spread > 0 else math.nan
    if name == "nmse":
        base = (w * (y - 1.0) ** 2).sum()
        return float((w * (p - y) ** 2).sum() / base) if base > 0 else math.nan
    if name == "auc":
        return float(roc_auc_score(y, p, sample_weight=w)) if _two_classes(y, w) else math.nan
    if name == "auprc":
        if (w * y).sum() == 0:
            return math.nan
        if (w * (1 - y)).sum() == 0:
            return 1.0
        return float(average_precision_score(y, p, sample_weight=w))
    if name == "gauc":
        return _gauc_reference(p, y, w, list(grp), {})
    if name == "segmented_ne":
        return {g: _pointwise_reference("ne", p[grp == g], y[grp == g], w[grp == g]) for g in range(NUM_SEGMENTS)}
    metric, _, k = name.partition("@")
    return reference_values(group_rows(list(sess), p, y, w), [(metric, int(k))])[0]


def _holds_logits(config: dict[str, Any], task: str) -> bool:
    """A task's predictions are logits where a metric that reads it is built with ``from_logits=True``."""
    every = [t["name"] for t in config["tasks"]]
    return any(
        o.get("from_logits") and task in config["metric_tasks"].get(n, every) for n, o in config["metrics"].items()
    )


def references(sc: dict[str, Any], steps: list[dict[str, np.ndarray]], suffix: str = "") -> dict[str, Any]:
    """Our-style keys (``suffix`` "/window" for window keys) over ``steps``, in the module's order."""
    config = sc["config"]
    every = [task["name"] for task in config["tasks"]]
    grp, sess = _column(steps, "grp"), _column(steps, "sess")
    out: dict[str, Any] = {}
    for name, options in config["metrics"].items():
        per_segment: dict[str, Any] = {}
        for task in config["tasks"]:
            if task["name"] not in config["metric_tasks"].get(name, every):
                continue
            p, y, w = (_column(steps, task[c]) for c in ("prediction_name", "label_name", "weight_name"))
            if _holds_logits(config, task["name"]):
                p = 1.0 / (1.0 + np.exp(-p))
            # the binned AUC: its keys are checked, not its value (None)
            value = None if "num_bins" in options else _one_value(options["metric"], p, y, w, grp, sess)
            if isinstance(value, dict):
                per_segment.update({f"{name}.{g}/{task['name']}{suffix}": (g, v) for g, v in value.items()})
            else:
                out[f"{name}/{task['name']}{suffix}"] = value
        # a Segmented metric's keys: segment by segment, each in the module's task order
        out.update({k: v for k, (_, v) in sorted(per_segment.items(), key=lambda item: item[1][0])})
    return out


def _window_groups(sc: dict[str, Any], name: str) -> list[list[dict[str, Any]]]:
    """The task lists whose windows metric ``name`` keeps (:func:`window_groups`) over the tasks it reads."""
    config = sc["config"]
    every = [task["name"] for task in config["tasks"]]
    read = [task for task in config["tasks"] if task["name"] in config["metric_tasks"].get(name, every)]
    return window_groups(read, config["metrics"][name]["metric"] in ("ndcg@3", "recall@2"))


def _window_rows(
    sc: dict[str, Any], per_rank: list[list[dict[str, np.ndarray]]], share: int, tasks: list[dict[str, Any]]
) -> list[dict[str, np.ndarray]]:
    """The rows a metric's window over ``tasks`` keeps on each rank (docs/windows.md): a validated step whose
    weights are all zero for every one of those tasks takes no room in it."""

    def skipped(step: dict[str, np.ndarray]) -> bool:
        return not sc["trusted"] and len(step["grp"]) > 0 and weighs_nothing(step, tasks)

    return [
        row
        for steps in per_rank
        for row in _kept_rows([dict(s, user=s["grp"]) for s in steps if not skipped(s)], share)
    ]


def expected(
    sc: dict[str, Any], steps: list[dict[str, np.ndarray]], per_rank: list[list[dict[str, np.ndarray]]] | None = None
) -> dict[str, Any]:
    """Every key: the lifetime over ``steps`` and, with a window, each metric's window over the rows it keeps
    (``per_rank``: the steps of each rank, each keeping ``window_size // world_size``; else one process)."""
    out = references(sc, steps)
    window = sc["config"]["window_size"]
    if window is None:
        return out
    per_rank = per_rank or [steps]
    kept: dict[str, Any] = {}
    for name in sc["config"]["metrics"]:
        for group in _window_groups(sc, name):
            names = {task["name"] for task in group}
            rows = _window_rows(sc, per_rank, window // len(per_rank), group)
            for key, value in references(sc, rows, "/window").items():
                metric, task = key[: -len("/window")].rsplit("/", 1)
                if metric.split(".")[0] == name and task in names:
                    kept[key] = value
    merged = {}
    for key, value in out.items():  # each window key stands after its lifetime key
        merged[key] = value
        merged[f"{key}/window"] = kept[f"{key}/window"]
    return merged


def _torchrec_names(config: dict[str, Any]) -> dict[str, str]:
    """Our keys to TorchRec's: both styles list the values in one order (``docs/module.md``, Keys)."""
    ours = list(_compute(_module({**config, "key_style": "torchmetrics_ext"})))
    theirs = list(_compute(_module({**config, "key_style": "torchrec"})))
    return dict(zip(ours, theirs, strict=True))


def _close(got: dict[str, float], want: dict[str, Any], where: str) -> None:
    """The same keys in the same order (the module's task order within each metric); values within rounding."""
    assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
    for key, value in want.items():
        if value is None:
            continue
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-9), f"{where} {key}: {got[key]!r} != {value!r}"


def check_values(sc: dict[str, Any], got: dict[str, float], steps: list[dict[str, np.ndarray]], where: str) -> None:
    want = expected(sc, steps)
    if sc["config"]["key_style"] == "torchrec":
        names = _torchrec_names(sc["config"])
        assert sorted(names) == sorted(want), f"{where}: our-style keys {sorted(names)} != {sorted(want)}"
        want = {names[key]: value for key, value in want.items()}
    _close(got, want, where)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_metric_tasks_match_references(seed: int) -> None:
    sc = scenario(seed)
    config, steps, extra = sc["config"], sc["steps"], sc["extra"]
    where = f"seed {seed}"
    module = _module(config)
    before = _compute(module)  # before any step: every key, nan
    check_values(sc, before, [], f"{where} before any step")
    _feed(module, steps)
    check_values(sc, _compute(module), steps, where)
    if not sc["trusted"]:  # a rejected step names the task and changes nothing
        task, bad = sc["bad"]
        with pytest.raises(ValueError, match=f"Task '{task}'"):
            _feed(module, [bad])
        check_values(sc, _compute(module), steps, f"{where} after a rejected step")
    # a state_dict round trip into a fresh module, pickling and clone resume exactly
    state = module.state_dict()
    resumed = _module(config)
    resumed.load_state_dict(state)
    unpickled = pickle.loads(pickle.dumps(module))
    cloned = module.clone()
    for name, other in (("loaded", resumed), ("pickled", unpickled), ("cloned", cloned)):
        check_values(sc, _compute(_feed(other, extra)), steps + extra, f"{where} {name} and continued")
    check_values(sc, _compute(_feed(module, extra)), steps + extra, f"{where} continued")
    # reset: as a fresh module
    module.reset()
    check_values(sc, _compute(_feed(module, extra)), extra, f"{where} after reset")


def _binary(sc: dict[str, Any]) -> list[str]:
    return [f"t{t}" for t, kind in enumerate(sc["kinds"]) if kind == "binary"]


def test_scenarios_cover_the_cases() -> None:
    scenarios = [scenario(seed) for seed in SEEDS]
    assert {len(sc["kinds"]) for sc in scenarios} == {2, 3, 4}
    assert any("regression" in sc["kinds"] for sc in scenarios)
    assert any(sc["logit_tasks"] for sc in scenarios) and any(not sc["logit_tasks"] for sc in scenarios)
    # binary heads of logits next to binary heads of probabilities, each read by a metric of probabilities
    mixed = [sc for sc in scenarios if sc["logit_tasks"] and set(sc["logit_tasks"]) < set(_binary(sc))]
    assert any(
        any(o.get("from_logits") for o in sc["config"]["metrics"].values())
        and any(o["metric"] in TAKES_LOGITS and not o.get("from_logits") for o in sc["config"]["metrics"].values())
        for sc in mixed
    )
    assert {sc["config"]["key_style"] for sc in scenarios} == {"torchrec", "torchmetrics_ext"}
    assert any(sc["config"]["window_size"] for sc in scenarios)
    assert any(sc["config"]["window_size"] is None for sc in scenarios)
    names = {name for sc in scenarios for name in sc["config"]["metrics"]}
    assert set(BINARY_ONLY + ANY_TASK) - {"gauc"} <= names and "user_gauc" in names
    assert any(o.get("validate_args") is False for sc in scenarios for o in sc["config"]["metrics"].values())
    assert any(len(s["grp"]) == 0 for sc in scenarios for s in sc["steps"])
    weights = {task["weight_name"] for sc in scenarios for task in sc["config"]["tasks"]}
    assert None in weights and "w_shared" in weights


# ----------------------------------------------------------------------------- DDP

DDP_SEEDS = [0, 3, 7, 12, 16, 30]


def _ddp_job(rank: int, world_size: int, seeds: list[int]) -> list[dict[str, float]]:
    out = []
    for seed in seeds:
        sc = scenario(seed)
        mine = sc["steps"][rank::world_size]  # rank 1 may have none
        out.append(_compute(_feed(_module(sc["config"]), mine)))
    return out


@pytest.mark.ddp
def test_two_process_ddp_random_metric_tasks(ddp_pool: Any) -> None:
    per_rank = ddp_pool.run(_ddp_job, DDP_SEEDS, timeout=240)
    for i, seed in enumerate(DDP_SEEDS):
        sc = scenario(seed)
        everything = sc["steps"][0::2] + sc["steps"][1::2]
        one = _compute(_feed(_module(sc["config"]), everything))
        lifetime = {k: v for k, v in one.items() if "window" not in k}
        for rank in range(2):
            got = per_rank[rank][i]
            assert list(got) == list(one), f"seed {seed} rank {rank}"
            _close({k: v for k, v in got.items() if k in lifetime}, lifetime, f"seed {seed} rank {rank}")
        # each rank keeps its share, window_size // world_size (docs/windows.md)
        want = expected(sc, everything, [sc["steps"][rank::2] for rank in range(2)])
        if sc["config"]["key_style"] == "torchrec":
            names = _torchrec_names(sc["config"])
            want = {names[key]: value for key, value in want.items()}
        _close({k: v for k, v in per_rank[0][i].items() if k in want}, want, f"seed {seed} vs reference")


# ----------------------------------------------------------------------------- from_torchrec_config


@pytest.mark.parametrize("seed", range(6))
def test_from_torchrec_config_rec_task_indices(seed: int) -> None:
    rng = np.random.default_rng([777, seed])
    num_tasks = int(rng.integers(2, 5))
    tasks = [
        {"name": f"t{t}", "label_name": f"y{t}", "prediction_name": f"p{t}", "weight_name": f"w{t}"}
        for t in range(num_tasks)
    ]
    chosen = {}
    for metric in ("ne", "ctr", "calibration", "mse"):
        size = int(rng.integers(1, num_tasks + 1))
        chosen[metric] = sorted(rng.choice(num_tasks, size=size, replace=False).tolist())
    window = int(rng.choice([12, 20]))  # no step is larger: TorchRec's window keeps the newest whole steps within it
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {
            m: {"rec_task_indices": list(rng.permutation(idx).tolist()), "window_size": window}
            for m, idx in chosen.items()
        },
    }
    steps = []
    for _ in range(3):
        n = int(rng.choice([0, 5, 12]))
        step = {}
        for t in range(num_tasks):
            step[f"p{t}"] = rng.uniform(0.02, 0.98, size=n).astype(np.float32)
            step[f"y{t}"] = (rng.random(n) < 0.4).astype(np.float32)
            step[f"w{t}"] = rng.choice(WEIGHTS, size=n)
        step["grp"] = np.zeros(n, dtype=np.int64)
        steps.append(step)
    module = tmx.RecMetricModule.from_torchrec_config(config)
    got = _compute(_feed(module, steps))
    kept = _kept_rows([dict(s, user=s["grp"]) for s in steps], window)
    want: dict[str, float] = {}
    for metric, idx in chosen.items():
        for t in idx:  # the module's task order, whatever the order of rec_task_indices
            for when, rows in (("lifetime", steps), ("window", kept)):
                p, y, w = (_column(rows, f"{c}{t}") for c in ("p", "y", "w"))
                want[f"{metric}-t{t}|{when}_{metric}"] = _pointwise_reference(metric, p, y, w)
            if metric == "mse":  # TorchRec's mse also reports rmse
                for when in ("lifetime", "window"):
                    want[f"mse-t{t}|{when}_rmse"] = math.sqrt(want[f"mse-t{t}|{when}_mse"])
    assert sorted(got) == sorted(want), f"seed {seed}"
    _close({k: got[k] for k in want}, want, f"seed {seed}")
