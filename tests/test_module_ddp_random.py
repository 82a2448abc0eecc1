"""``RecMetricModule`` under real 2-process gloo DDP in seeded random configurations.

Each scenario builds a module with ``RecMetricModule.from_config`` from a random subset of registry
names (pointwise sums, exact and binned AUC/AUPRC, GAUC over a user column, ranking metrics over a
session column), 1 to 3 tasks (own, shared or no weight columns), an optional ``window_size`` and
either key style, logits or probabilities, every metric with ``validate_args=False`` in some, and
gives each rank its own random steps, in column dtypes of its own (int32 ids on one rank, int64 on
the other): a different number of them (none at all on one rank in some scenarios), single-row and
empty steps, steps without the weight column, tied scores, tiny base rates, groups and sessions
whose rows come from both ranks, groups with one class, sessions without a relevant row. Every rank computes; the checks are:

1. every rank returns the same keys and values;
2. the lifetime values equal one process fed every rank's steps, and the window values equal one
   process fed the rows each rank keeps by the documented rule (``docs/windows.md``: each rank keeps
   ``window_size // world_size`` samples, the newest whole updates within that share, or the newest
   share of a larger newest update);
3. the lifetime values equal references written here: scikit-learn's ``roc_auc_score``,
   ``average_precision_score`` and ``log_loss`` with ``sample_weight``, numpy sums for NE, CTR,
   calibration, MSE, MAE and accuracy, a per-group loop for GAUC and ``tests/helpers/ranking_reference``
   for the ranking metrics (a query weighs its largest row weight);
4. a ``state_dict`` taken on each rank and loaded into a fresh module gives the same values, and
   after one more step on each rank the resumed module equals the uninterrupted one;
5. ``reset()`` and new steps equal a fresh module fed those steps (with ``key_style="torchrec"`` the
   throughput keeps counting, as documented);

and each rank's ``local_compute()`` lifetime values equal one process fed that rank's steps.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.ranking_reference import group_rows, reference_values

pytestmark = pytest.mark.ddp

WORLD = 2
SEEDS = list(range(12))
GRID = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9], dtype=np.float32)  # tied scores
PRED_DTYPES = ("float16", "float32", "float64")
LABEL_DTYPES = ("int64", "int32", "bool", "float32")
WEIGHT_DTYPES = ("float64", "float32")
ID_DTYPES = ("int64", "int32", "int16")
WEIGHTS = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])  # exact in float32 (exact AUC keeps float32 weights)

# registry entries: (key, options); the key is the metric's name in the output keys
POINTWISE = [
    ("ne", {}),
    ("log_loss", {}),
    ("calibration", {}),
    ("ctr", {}),
    ("mse", {}),
    ("mae", {}),
    ("accuracy", {"threshold": 0.5}),
]
CURVES = [
    ("auc", {}),
    ("auprc", {}),
    ("auc_binned", {"metric": "auc", "num_bins": 64}),
    ("auprc_binned", {"metric": "auprc", "num_bins": 64}),
    ("user_gauc", {"metric": "gauc"}),
    ("gauc_per_batch", {"metric": "gauc", "groups_complete_per_batch": True}),
    ("gauc_weighted", {"metric": "gauc", "weight_groups": True, "average_groups": "all"}),
]
RANKING = [
    ("ndcg@3", {}),
    ("recall@2", {}),
    ("mrr", {}),
    ("ndcg_full", {"metric": "ndcg", "k": None}),
    ("ndcg_per_batch", {"metric": "ndcg", "k": 5, "queries_complete_per_batch": True, "empty_target_action": "zero"}),
    ("mrr_one", {"metric": "mrr", "empty_target_action": "one"}),
]


def scenario(seed: int) -> dict[str, Any]:
    """The module's config and each rank's two phases of steps (before and after the checkpoint/reset)."""
    rng = np.random.default_rng([31337, seed])
    num_tasks = int(rng.integers(1, 4))
    tasks = []
    for t in range(num_tasks):
        weight = [None, "w_shared", f"w{t}"][int(rng.integers(0, 3))]
        tasks.append(
            {
                "name": f"t{t}",
                "label_name": f"y{t}",
                "prediction_name": f"p{t}",
                "weight_name": weight,
                "group_id_name": "user",
                "session_id_name": "user" if seed % 3 == 0 else "sess",
            }
        )
    picked = [POINTWISE[i] for i in rng.choice(len(POINTWISE), size=int(rng.integers(1, 4)), replace=False)]
    picked += [CURVES[i] for i in rng.choice(len(CURVES), size=int(rng.integers(1, 4)), replace=False)]
    picked += [RANKING[i] for i in rng.choice(len(RANKING), size=int(rng.integers(1, 3)), replace=False)]
    window = None if rng.random() < 0.4 else int(rng.integers(2, 40))
    trusted = {"validate_args": False} if rng.random() < 0.2 else {}  # every metric: the module checks nothing
    config = {
        "tasks": tasks,
        "metrics": {key: {**options, **trusted} for key, options in picked},
        "window_size": window,
        "throughput": bool(rng.random() < 0.5),
        "compute_interval_steps": int(rng.choice([1, 2, 4, 100])),  # the throughput's warm-up: half of it
        "key_style": "torchrec" if rng.random() < 0.4 else "torchmetrics_ext",
        "from_logits": bool(rng.random() < 0.25),  # the prediction columns hold logits
    }
    rates = rng.choice([0.02, 0.3, 0.6], size=num_tasks)  # tiny base rates too
    lone = seed % 4  # 0 or 1: that rank takes no step; 2: rank 1's only user is one rank 0 has too

    # each rank reads its columns in dtypes of its own (ids in 32 bits on one rank, 64 on the other...)
    dtypes = [
        {
            "pred": rng.choice(PRED_DTYPES),
            "label": rng.choice(LABEL_DTYPES),
            "weight": rng.choice(WEIGHT_DTYPES),
            "id": rng.choice(ID_DTYPES),
        }
        for _ in range(WORLD)
    ]

    def step(n: int, rank: int) -> dict[str, np.ndarray]:
        kinds = dtypes[rank] if rng.random() < 0.8 else dtypes[1 - rank]  # a step in the other rank's dtypes
        out: dict[str, np.ndarray] = {}
        for t in range(num_tasks):
            if rng.random() < 0.5:
                pred = rng.choice(GRID, size=n)
            else:
                pred = rng.uniform(0.01, 0.99, size=n).astype(np.float32)
            if config["from_logits"]:
                pred = np.log(pred) - np.log1p(-pred)
            out[f"p{t}"] = pred.astype(kinds["pred"])
            out[f"y{t}"] = (rng.random(n) < rates[t]).astype(kinds["label"])
            out[f"w{t}"] = rng.choice(WEIGHTS, size=n).astype(kinds["weight"])
        out["w_shared"] = (rng.choice(WEIGHTS, size=n) if rng.random() < 0.7 else np.ones(n)).astype(kinds["weight"])
        users = np.zeros(n, dtype=np.int64) if (lone == 2 and rank == 1) else rng.integers(0, 5, size=n)
        out["user"] = users.astype(kinds["id"])
        out["sess"] = rng.integers(0, 6, size=n).astype(kinds["id"])
        if rng.random() < 0.1:  # a step without the shared weight column: weight 1 there
            del out["w_shared"]
        return out

    phases = []
    for _ in range(2):
        ranks = []
        for rank in range(WORLD):
            nobody = len(phases) == 1 and seed % 5 == 4  # no rank takes a step after the reset
            count = 0 if (lone == rank or nobody) else int(rng.integers(1, 5))
            sizes = [int(rng.choice([0, 1, 1, 3, 7, 12, 20])) for _ in range(count)]
            ranks.append([step(n, rank) for n in sizes])
        phases.append(ranks)
    extra = [step(int(rng.choice([1, 4, 9])), rank) for rank in range(WORLD)]
    return {"config": config, "phases": phases, "extra": extra}


def _tensors(step: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in step.items()}


def _compute(module: tmx.RecMetricModule) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return {key: float(value) for key, value in module.compute().items()}


def _feed(module: tmx.RecMetricModule, steps: list[dict[str, np.ndarray]]) -> tmx.RecMetricModule:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", ".*a missing weight column means weight 1", UserWarning
        )  # a step without w_shared
        for step in steps:
            module.update(_tensors(step))
    return module


def _ddp_job(rank: int, world_size: int, seeds: list[int]) -> list[dict[str, dict[str, float]]]:
    assert world_size == WORLD
    out = []
    for seed in seeds:
        sc = scenario(seed)
        config, (first, second) = sc["config"], sc["phases"]
        module = _feed(tmx.RecMetricModule.from_config(config), first[rank])
        if seed % 2:  # the checkpoint of a module that has not computed yet, saved as a file would be
            buffer = io.BytesIO()
            torch.save(module.state_dict(), buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer, weights_only=False)
        values = _compute(module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
            local = {key: float(value) for key, value in module.local_compute().items()}
        if config["key_style"] == "torchrec":  # TorchRec's local scope: `ne-click|local_lifetime_ne`
            assert all("|local_" in key for key in local), sorted(local)
            local = {key.replace("|local_", "|", 1): value for key, value in local.items()}
        if not seed % 2:
            checkpoint = module.state_dict()
        resumed = tmx.RecMetricModule.from_config(config)
        resumed.load_state_dict(checkpoint)
        loaded = _compute(resumed)
        _feed(module, [sc["extra"][rank]])
        _feed(resumed, [sc["extra"][rank]])
        continued, resumed_continued = _compute(module), _compute(resumed)
        module.reset()
        after_reset = _compute(_feed(module, second[rank]))
        fresh = _compute(_feed(tmx.RecMetricModule.from_config(config), second[rank]))
        out.append(
            {
                "values": values,
                "local": local,
                "loaded": loaded,
                "continued": continued,
                "resumed_continued": resumed_continued,
                "after_reset": after_reset,
                "fresh": fresh,
            }
        )
    return out


# --------------------------------------------------------------------------- references


def _kept_rows(steps: list[dict[str, np.ndarray]], share: int) -> list[dict[str, np.ndarray]]:
    """The rows one rank's window keeps: the newest whole updates within ``share`` samples, or the
    newest ``share`` samples of a newest update at least that large; an empty update changes nothing."""
    steps = [step for step in steps if len(step["user"])]
    if not steps:
        return []
    sizes = [len(step["user"]) for step in steps]
    if sizes[-1] >= share:
        return [{k: v[len(v) - share :] for k, v in steps[-1].items()}]
    kept, total = [], 0
    for i in range(len(steps) - 1, -1, -1):
        if total + sizes[i] > share:
            break
        kept.insert(0, steps[i])
        total += sizes[i]
    return kept


def _is_window(key: str) -> bool:
    return key.endswith("/window") or "|window_" in key


def _one_process(config: dict[str, Any], steps: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return _compute(_feed(tmx.RecMetricModule.from_config(config), steps))


def _torchrec_keys(config: dict[str, Any]) -> dict[str, str]:
    """Our keys to TorchRec's: the two key styles list the values in one order (``docs/module.md``, Keys)."""
    keys = {}
    for style in ("torchmetrics_ext", "torchrec"):
        module = tmx.RecMetricModule.from_config({**config, "key_style": style, "throughput": False})
        keys[style] = list(_compute(module))  # before any step: every key, each value nan
    return dict(zip(keys["torchmetrics_ext"], keys["torchrec"], strict=True))


def _concat(steps: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """One column over ``steps``; a step without a weight column weighs 1."""
    return np.concatenate([step.get(key, np.ones(len(step["user"]))) for step in steps]) if steps else np.zeros(0)


def _pointwise_reference(name: str, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    if w.sum() == 0:
        return math.nan
    ctr = (w * y).sum() / w.sum()
    if name == "ctr":
        return float(ctr)
    if name == "calibration":
        return float((w * p).sum() / (w * y).sum()) if (w * y).sum() > 0 else math.nan
    if name == "mse":
        return float((w * (p - y) ** 2).sum() / w.sum())
    if name == "mae":
        return float((w * np.abs(p - y)).sum() / w.sum())
    if name == "accuracy":
        return float((w * ((p >= 0.5) == (y == 1))).sum() / w.sum())
    loss = log_loss(y, p, sample_weight=w, labels=[0, 1])
    if name == "log_loss":
        return float(loss)
    baseline = -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr)) if 0 < ctr < 1 else 0.0
    return float(loss / baseline) if baseline > 0 else math.nan


def _two_classes(y: np.ndarray, w: np.ndarray) -> bool:
    return bool((w * y).sum() > 0 and (w * (1 - y)).sum() > 0)


def _gauc_reference(p: np.ndarray, y: np.ndarray, w: np.ndarray, groups: list[Any], options: dict[str, Any]) -> float:
    """The mean per-group AUC (groups weighted by 1 or their total weight; one-class groups 0.5 or left out)."""
    values, weights = [], []
    for group in dict.fromkeys(groups):  # a test may loop over groups
        rows = np.array([g == group for g in groups])
        if _two_classes(y[rows], w[rows]):
            values.append(roc_auc_score(y[rows], p[rows], sample_weight=w[rows]))
        elif options.get("average_groups") == "all":
            values.append(0.5)
        else:
            continue
        weights.append(w[rows].sum() if options.get("weight_groups") else 1.0)
    if not values or sum(weights) == 0:
        return math.nan
    return float(np.dot(values, weights) / sum(weights))


def references(sc: dict[str, Any], steps: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Lifetime values over ``steps`` by formulas written here (the binned curves are left out)."""
    config = sc["config"]
    out = {}
    for task in config["tasks"]:
        t = task["name"][1:]
        p, y = _concat(steps, f"p{t}").astype(np.float64), _concat(steps, f"y{t}").astype(np.float64)
        if config["from_logits"]:
            p = 1.0 / (1.0 + np.exp(-p))
        batch = np.concatenate([np.full(len(step["user"]), i) for i, step in enumerate(steps)]) if steps else []
        w = np.ones_like(p) if task["weight_name"] is None else _concat(steps, task["weight_name"]).astype(np.float64)
        users, sessions = (
            _concat(steps, "user").astype(np.int64),
            _concat(steps, task["session_id_name"]).astype(np.int64),
        )
        for key, options in config["metrics"].items():
            name = options.get("metric", key)
            where = f"{key}/{task['name']}"
            if name in dict(POINTWISE):
                out[where] = _pointwise_reference(name, p, y, w)
            elif name in ("auc", "auprc") and "num_bins" not in options:
                if name == "auc":
                    out[where] = float(roc_auc_score(y, p, sample_weight=w)) if _two_classes(y, w) else math.nan
                elif (w * y).sum() == 0:
                    out[where] = math.nan  # AP without positive weight; with positives only it is 1 (sklearn)
                elif (w * (1 - y)).sum() == 0:
                    out[where] = 1.0
                else:
                    out[where] = float(average_precision_score(y, p, sample_weight=w))
            elif name == "gauc":
                per_batch = options.get("groups_complete_per_batch", False)
                groups = list(zip(batch, users)) if per_batch else list(users)
                out[where] = _gauc_reference(p, y, w, groups, options)
            elif name.startswith(("ndcg", "recall", "mrr")):
                metric, _, cut = name.partition("@")
                k = int(cut) if cut else options.get("k")
                per_batch = options.get("queries_complete_per_batch", False)
                queries = group_rows(list(zip(batch, sessions)) if per_batch else list(sessions), p, y, w)
                empty = options.get("empty_target_action", "skip")
                out[where] = reference_values(queries, [(metric, k)], empty_target_action=empty)[0]
    if config["key_style"] == "torchrec":
        renamed = _torchrec_keys(config)
        return {renamed[key]: value for key, value in out.items()}
    return out


def _timeless(values: dict[str, float]) -> dict[str, float]:
    """The values without the throughput's rates (they depend on the clock): example counts stay."""
    return {k: v for k, v in values.items() if "throughput" not in k or k.endswith("_examples")}


def _total_examples(values: dict[str, float]) -> float:
    return next(v for k, v in values.items() if k.endswith("total_examples"))


def _close(got: dict[str, float], want: dict[str, float], where: str, rtol: float = 1e-9) -> None:
    for key, value in want.items():
        assert key in got, f"{where}: {key} missing from {sorted(got)}"
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=rtol, abs=1e-12), f"{where} {key}: {got[key]!r} != {value!r}"


def _same(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert list(got) == list(want), where
    _close(got, want, where, rtol=0.0)


def check(seed: int, per_rank: list[dict[str, dict[str, float]]]) -> None:
    sc = scenario(seed)
    config, (first, second) = sc["config"], sc["phases"]
    where = f"seed {seed}"
    # local_compute(): the lifetime over this rank's own steps, as one process fed them
    for rank in range(WORLD):
        own = {k: v for k, v in _timeless(_one_process(config, first[rank])).items() if not _is_window(k)}
        _close(per_rank[rank]["local"], own, f"{where} rank {rank} local_compute vs one process")
    per_rank = [{what: v for what, v in values.items() if what != "local"} for values in per_rank]
    # (1) every rank reports the same keys and values at every compute
    for what in per_rank[0]:
        for rank in range(1, WORLD):
            _same(per_rank[rank][what], per_rank[0][what], f"{where} {what}: rank {rank} vs rank 0")
    result = per_rank[0]
    # (2) lifetime: one process over every rank's steps; window: one process over the rows each rank keeps
    everything = [step for steps in first for step in steps]
    one = _one_process(config, everything)
    assert list(result["values"]) == list(one), where
    window = config["window_size"]
    lifetime = {k: v for k, v in _timeless(one).items() if not _is_window(k)}
    _close(result["values"], lifetime, f"{where} lifetime vs one process")
    if window is not None:
        kept = [row for steps in first for row in _kept_rows(steps, window // WORLD)]
        unwindowed = {**config, "window_size": None, "throughput": False}
        expected = _one_process(unwindowed, kept)
        window_keys = [k for k in one if _is_window(k) and "throughput" not in k]
        assert len(window_keys) == len(expected), where
        lifetime_keys = [k for k in one if not _is_window(k)]
        renamed = {}
        for key in window_keys:  # the lifetime key the window key stands next to
            base = key.removesuffix("/window") if key.endswith("/window") else key.replace("|window_", "|lifetime_")
            assert base in lifetime_keys, (where, key)
            renamed[key] = expected[base]
        _close(result["values"], renamed, f"{where} window vs one process over the kept rows")
    # (3) lifetime values against references written here
    _close(result["values"], references(sc, everything), f"{where} lifetime vs reference")
    # (4) a checkpoint taken on each rank resumes exactly
    result = {what: _timeless(values) for what, values in result.items()}
    _same(result["loaded"], result["values"], f"{where} loaded")
    _same(result["resumed_continued"], result["continued"], f"{where} resumed and continued")
    continued = [step for rank, steps in enumerate(first) for step in [*steps, sc["extra"][rank]]]
    _close(result["continued"], references(sc, continued), f"{where} continued vs reference")
    # (5) reset and new steps equal a fresh module; TorchRec's reset leaves the throughput counting (documented)
    after_reset = [s for steps in second for s in steps]
    if config["throughput"]:
        rows = sum(len(s["user"]) for s in (after_reset + (continued if config["key_style"] == "torchrec" else [])))
        assert _total_examples(result["after_reset"]) == rows, where
        assert _total_examples(result["fresh"]) == sum(len(s["user"]) for s in after_reset), where
        result = {what: {k: v for k, v in values.items() if "throughput" not in k} for what, values in result.items()}
    _same(result["after_reset"], result["fresh"], f"{where} after reset vs fresh")
    _close(result["after_reset"], references(sc, after_reset), f"{where} reset vs ref")


def test_random_modules_under_ddp_match_one_process_references_checkpoints_and_reset(ddp_pool):
    per_rank = ddp_pool.run(_ddp_job, SEEDS, timeout=240)
    for i, seed in enumerate(SEEDS):
        check(seed, [per_rank[rank][i] for rank in range(WORLD)])


def test_scenarios_cover_the_hard_cases():
    """The seeds hold what the test is for."""
    scenarios = [scenario(seed) for seed in SEEDS]
    steps = [s for sc in scenarios for phase in sc["phases"] for rank in phase for s in rank]
    assert any(not rank for sc in scenarios for rank in sc["phases"][0])  # a rank without steps
    assert any(len(s["user"]) == 1 for s in steps) and any(len(s["user"]) == 0 for s in steps)
    assert {sc["config"]["key_style"] for sc in scenarios} == {"torchrec", "torchmetrics_ext"}
    assert any(sc["config"]["window_size"] for sc in scenarios) and any(
        sc["config"]["window_size"] is None for sc in scenarios
    )
    assert {len(sc["config"]["tasks"]) for sc in scenarios} == {1, 2, 3}
    weights = {task["weight_name"] for sc in scenarios for task in sc["config"]["tasks"]}
    assert None in weights and "w_shared" in weights
    names = {options.get("metric", key) for sc in scenarios for key, options in sc["config"]["metrics"].items()}
    assert {"ne", "calibration", "ctr", "mse", "accuracy", "auc", "auprc", "gauc", "ndcg@3", "recall@2", "mrr"} <= names
    options = [options for sc in scenarios for options in sc["config"]["metrics"].values()]
    assert any("num_bins" in o for o in options) and any(o.get("groups_complete_per_batch") for o in options)
    assert any(o.get("queries_complete_per_batch") for o in options)
    assert {sc["config"]["from_logits"] for sc in scenarios} == {True, False}
    assert any("w_shared" not in s for s in steps)  # a step without its weight column
    # ids in 32 bits on one rank and 64 on the other, in a module with a grouped metric
    assert any(
        {str(s["user"].dtype) for s in sc["phases"][0][0]} & {"int16", "int32"}
        and {str(s["user"].dtype) for s in sc["phases"][0][1]} == {"int64"}
        and any(o.get("metric") == "gauc" for o in sc["config"]["metrics"].values())
        for sc in scenarios
    )
    # a rank whose only group (user 0) is one the other rank holds too
    assert any(
        sc["phases"][0][1]
        and all((s["user"] == 0).all() for s in sc["phases"][0][1])
        and any((s["user"] == 0).any() for s in sc["phases"][0][0])
        for sc in scenarios
    )
    # sessions without a relevant row and groups of one class, for some task
    assert any((s[f"y{t}"] == 0).all() and len(s["user"]) > 1 for s in steps for t in range(3) if f"y{t}" in s)
