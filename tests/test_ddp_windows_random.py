"""Lifetime and window values under real 2-process gloo DDP with uneven ranks, in seeded random scenarios.

Each scenario gives the two ranks their own random sequence of batches (different counts, one rank
without any in some scenarios, empty batches, batches whose weights are all zero, tied scores) and
runs ``Windowed`` NE, CTR, calibration, exact AUC and binned AUC and a two-task ``RecMetricModule``
with a window, computing on both ranks after every step. The references are written here, apart
from the package: the lifetime value over every rank's samples (scikit-learn's ``roc_auc_score`` and
``log_loss`` with ``sample_weight``, numpy sums for NE, CTR and calibration) and the window value over
the samples each rank keeps by the documented rule (docs/windows.md, "The window rule" and "DDP"):
each rank keeps ``window_size // world_size`` samples of its own updates, the newest whole updates
whose sizes sum to at most that share, the newest share of a newest update larger than it, and an
empty update changes nothing. Undefined references must come back as ``nan`` with an
``UndefinedMetricWarning`` for exactly those values. A ``state_dict`` saved on each rank part-way,
loaded into fresh objects on the same ranks and continued, must give the uninterrupted run's values.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext import UndefinedMetricWarning, Windowed

pytestmark = pytest.mark.ddp

WORLD = 2
SEEDS = list(range(20))
BINS = 10  # probability bins of width 0.1; scores are bin centres, so binned AUC is the exact AUC
TASKS = ("t0", "t1")
WINDOWED = ("ne", "ctr", "calibration", "auc", "auc_binned")
MODULE_METRICS = ("ne", "ctr", "calibration", "auc", "auc_binned")
_UNDEFINED = re.compile(
    r"^(?P<name>\S+)(?P<window> \(window\))? is undefined(?: for task\(s\) \[(?P<tasks>[^\]]*)\])?:"
)

Batch = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # preds (T, n), labels (T, n), weights (T, n) or None


# --------------------------------------------------------------------------- scenarios


def scenario(seed: int) -> dict[str, Any]:
    """Window size, each rank's batches (oldest first) and where the checkpoint is taken."""
    rng = np.random.default_rng([7013, seed])
    window = int(rng.choice([2, 3, 4, 5, 7, 8, 11, 16]))
    share = window // WORLD
    counts = [int(c) for c in rng.integers(0, 7, size=WORLD)]
    if seed % 4 == 0:  # one rank sees no batch at all
        counts[(seed // 4) % WORLD] = 0
    ranks: list[list[Batch]] = []
    for count in counts:
        batches: list[Batch] = []
        for _ in range(count):
            u = rng.random()  # empty, small (several fit in the share and `max_updates` binds), any size
            n = 0 if u < 0.15 else int(rng.integers(1, 3)) if u < 0.45 else int(rng.integers(1, share + 4))
            preds = (rng.integers(0, BINS, size=(2, n)) + 0.5) / BINS  # few distinct scores: many ties
            rate = float(rng.choice([0.0, 0.3, 0.5, 0.8, 1.0]))  # one class only, at times
            labels = (rng.random((2, n)) < rate).astype(np.int64)
            weights: np.ndarray | None = rng.choice([0.0, 0.5, 1.0, 2.0], size=(2, n))
            u = rng.random()
            if u < 0.15:
                weights = np.zeros((2, n))  # adds nothing to any value and takes no room in the window
            elif u < 0.35:
                weights = None
            batches.append((preds, labels, weights))
        ranks.append(batches)
    steps = max(max(counts), 1)
    return {
        "window": window,
        "ranks": ranks,
        "steps": steps,
        "save_after": int(rng.integers(1, steps + 1)),  # number of steps before the checkpoint
        "compute_before_save": bool(rng.integers(0, 2)),
        "max_updates": [None, 1, 2][seed % 3],  # the Windowed metrics' limit on updates
        "forward": bool(rng.integers(0, 2)),  # the Windowed metrics take their batches through `forward`
        # the steps after which every rank computes: all of them, or some (updates pile up between reads)
        "computes": {s for s in range(steps) if seed % 2 == 0 or s == steps - 1 or rng.random() < 0.4},
    }


def _weights(batch: Batch) -> np.ndarray:
    preds, _, weights = batch
    return np.ones_like(preds) if weights is None else weights


def kept_window(
    batches: list[Batch], share: int, max_updates: int | None = None, tasks: Sequence[int] = (0, 1)
) -> list[Batch]:
    """The samples one rank's window holds after ``batches`` (oldest first), by the documented rule.

    ``tasks``: the weight rows the metric is given (the Windowed metrics: task 0's); an update whose
    weights are all zero there takes no room, as an empty one.
    """
    updates = [b for b in batches if b[0].shape[1] > 0 and (b[2] is None or b[2][list(tasks)].any())]
    if not updates:
        return []
    newest = updates[-1]
    if newest[0].shape[1] > share:  # an update larger than the window: its newest `share` samples
        preds, labels, weights = newest
        return [(preds[:, -share:], labels[:, -share:], None if weights is None else weights[:, -share:])]
    kept, room = [], share
    for batch in reversed(updates):
        if batch[0].shape[1] > room or len(kept) == max_updates:
            break
        kept.append(batch)
        room -= batch[0].shape[1]
    return kept[::-1]


def _columns(batches: list[Batch], task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    preds = np.concatenate([b[0][task] for b in batches] + [np.zeros(0)])
    labels = np.concatenate([b[1][task] for b in batches] + [np.zeros(0, np.int64)])
    weights = np.concatenate([_weights(b)[task] for b in batches] + [np.zeros(0)])
    return preds, labels, weights


def reference(name: str, batches: list[Batch], task: int) -> float:
    """``name`` over the samples of ``batches``, independently of the package; nan where undefined."""
    p, y, w = _columns(batches, task)
    total, pos = float(w.sum()), float((w * y).sum())
    neg = float((w * (1 - y)).sum())
    if name == "ctr":
        return math.nan if total == 0 else pos / total
    if name == "calibration":
        return math.nan if pos == 0 else float((w * p).sum()) / pos
    if pos == 0 or neg == 0:  # NE and AUC: one class only, or no weight
        return math.nan
    nz = w > 0
    if name == "ne":
        cross_entropy = log_loss(y[nz], p[nz], sample_weight=w[nz], labels=[0, 1]) * total
        base = pos / total
        return cross_entropy / -(pos * math.log(base) + neg * math.log(1 - base))
    return float(roc_auc_score(y[nz], p[nz], sample_weight=w[nz]))  # auc and auc_binned (scores = bin centres)


def expected_values(sc: dict[str, Any], step: int) -> dict[str, Any]:
    """Reference values after ``step + 1`` steps: each Windowed's and the module's keys."""
    seen = [batches[: step + 1] for batches in sc["ranks"]]
    everything = [b for batches in seen for b in batches]
    share = sc["window"] // WORLD
    kept = [b for batches in seen for b in kept_window(batches, share, sc["max_updates"], tasks=(0,))]
    out: dict[str, Any] = {
        name: {"lifetime": reference(name, everything, 0), "window": reference(name, kept, 0)} for name in WINDOWED
    }
    kept = [b for batches in seen for b in kept_window(batches, share)]  # the module sets no `max_updates`
    module = {}
    for name in MODULE_METRICS:
        for t, task in enumerate(TASKS):
            module[f"{name}/{task}"] = reference(name, everything, t)
            module[f"{name}/{task}/window"] = reference(name, kept, t)
    out["module"] = module
    return out


# --------------------------------------------------------------------------- on each rank


def _build(window: int, max_updates: int | None) -> dict[str, Any]:
    tasks = [
        tmx.RecTaskInfo(task, label_name=f"l{t}", prediction_name=f"p{t}", weight_name=f"w{t}")
        for t, task in enumerate(TASKS)
    ]
    metrics = {
        "ne": "ne",
        "ctr": "ctr",
        "calibration": "calibration",
        "auc": "auc",
        "auc_binned": {"metric": "auc", "num_bins": BINS, "bin_space": "probability"},
    }
    return {
        "ne": Windowed(tmx.NormalizedEntropy(), window, max_updates=max_updates),
        "ctr": Windowed(tmx.CTR(), window, max_updates=max_updates),
        "calibration": Windowed(tmx.Calibration(), window, max_updates=max_updates),
        "auc": Windowed(tmx.AUC(), window, max_updates=max_updates),
        "auc_binned": Windowed(tmx.AUC(num_bins=BINS, bin_space="probability"), window, max_updates=max_updates),
        "module": tmx.RecMetricModule(tasks, metrics, window_size=window, throughput=False),
    }


def _step(objs: dict[str, Any], batch: Batch | None, forward: bool) -> dict[str, Any]:
    """One step: the Windowed metrics update only with a batch; the module always (an empty step if none).

    Returns the Windowed metrics' ``forward`` values and undefined warnings (none without ``forward``).
    """
    if batch is None:
        preds, labels, weights = np.zeros((2, 0)), np.zeros((2, 0), np.int64), np.zeros((2, 0))
    else:
        preds, labels, weights = batch[0], batch[1], _weights(batch)
    pt, lt, wt = torch.from_numpy(preds), torch.from_numpy(labels), torch.from_numpy(weights)
    batch_values = {}
    if batch is not None:
        w0 = None if batch[2] is None else wt[0]
        for name in WINDOWED:
            if forward:
                batch_values[name] = _record(lambda metric=objs[name]: metric(pt[0], lt[0], w0))
            else:
                objs[name].update(pt[0], lt[0], w0)
    model_out = {}
    for t in range(len(TASKS)):
        model_out.update({f"p{t}": pt[t], f"l{t}": lt[t], f"w{t}": wt[t]})
    objs["module"].update(model_out)
    return batch_values


def _record(call: Any) -> dict[str, Any]:
    """``call()``'s dict of values as floats, and the messages of the UndefinedMetricWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = call()
    messages = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    return {"values": {key: float(value) for key, value in values.items()}, "undefined": messages}


def _values(objs: dict[str, Any]) -> dict[str, Any]:
    return {name: _record(metric.compute) for name, metric in objs.items()}


def _reload(objs: dict[str, Any], window: int, max_updates: int | None) -> dict[str, Any]:
    """Each object's state_dict, through torch.save, into fresh objects on this same rank."""
    fresh = _build(window, max_updates)
    for name, metric in objs.items():
        buffer = io.BytesIO()
        torch.save(metric.state_dict(), buffer)
        buffer.seek(0)
        fresh[name].load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


def _scenario_job(rank: int, world_size: int, seeds: list[int]) -> list[dict[str, Any]]:
    assert world_size == WORLD
    torch.manual_seed(0)
    results = []
    for seed in seeds:
        sc = scenario(seed)
        window, mine, steps, save_after = sc["window"], sc["ranks"][rank], sc["steps"], sc["save_after"]
        most, forward = sc["max_updates"], sc["forward"]
        straight, interrupted = _build(window, most), _build(window, most)
        resumed: dict[str, Any] = {}
        run, batches, after_resume = [], [], []
        for s in range(steps):
            batch = mine[s] if s < len(mine) else None
            batches.append(_step(straight, batch, forward))
            run.append(_values(straight) if s in sc["computes"] else None)
            if s < save_after:
                _step(interrupted, batch, forward)
            else:
                _step(resumed, batch, forward)
            if s == save_after - 1:
                if sc["compute_before_save"]:
                    _values(interrupted)
                resumed = _reload(interrupted, window, most)
            if s >= save_after - 1:
                after_resume.append(_values(resumed) if s in sc["computes"] else None)
        results.append({"run": run, "forward": batches, "after_resume": after_resume})
    return results


# --------------------------------------------------------------------------- the test


def _undefined_keys(name: str, messages: list[str]) -> set[str]:
    """The values ``messages`` call undefined: ``lifetime``/``window``, or the module's keys."""
    keys = set()
    for message in messages:
        match = _UNDEFINED.match(message)
        assert match, f"{name}: unexpected warning {message!r}"
        suffix = "/window" if match["window"] else ""
        if name == "module":
            assert match["tasks"], message
            for task in re.findall(r"'([^']*)'", match["tasks"]):
                keys.add(f"{match['name']}/{task}{suffix}")
        else:
            keys.add("window" if suffix else "lifetime")
    return keys


def _check(seed: int, where: str, got: dict[str, Any], expected: dict[str, Any], named: bool = True) -> None:
    """``got`` equals ``expected``: nan where undefined, warned for those values (for some of them unless ``named``)."""
    for name, want in expected.items():
        values = got[name]["values"]
        assert set(values) == set(want), f"seed {seed} {where} {name}: keys {sorted(values)}"
        for key, value in want.items():
            if math.isnan(value):
                assert math.isnan(values[key]), f"seed {seed} {where} {name}[{key}]: {values[key]}, expected nan"
            else:
                assert values[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                    f"seed {seed} {where} {name}[{key}]: {values[key]!r}, expected {value!r}"
                )
        undefined = {key for key, value in want.items() if math.isnan(value)}
        if not named:  # forward's values of a batch the window keeps whole: one warning stands for both
            assert bool(got[name]["undefined"]) == bool(undefined), (
                f"seed {seed} {where} {name}: warned {got[name]['undefined']}, expected undefined {sorted(undefined)}"
            )
            continue
        assert _undefined_keys(name, got[name]["undefined"]) == undefined, (
            f"seed {seed} {where} {name}: warned {got[name]['undefined']}, expected undefined {sorted(undefined)}"
        )


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bit-equal values (nan equal to nan) and the same warnings."""
    for name in a:
        va, vb = a[name]["values"], b[name]["values"]
        if set(va) != set(vb) or a[name]["undefined"] != b[name]["undefined"]:
            return False
        if any(not (va[k] == vb[k] or (math.isnan(va[k]) and math.isnan(vb[k]))) for k in va):
            return False
    return True


def test_uneven_ranks_random_scenarios_match_the_reference(ddp_pool):
    per_rank = ddp_pool.run(_scenario_job, SEEDS, timeout=240)
    for i, seed in enumerate(SEEDS):
        sc = scenario(seed)
        rank0, rank1 = per_rank[0][i], per_rank[1][i]
        for s in sorted(sc["computes"]):
            assert _same(rank0["run"][s], rank1["run"][s]), f"seed {seed} step {s}: the ranks disagree"
            _check(seed, f"step {s}", rank0["run"][s], expected_values(sc, s))
        for rank, out in enumerate((rank0, rank1)):
            for s, batch in enumerate(sc["ranks"][rank] if sc["forward"] else []):  # the batch's values
                kept = kept_window([batch], sc["window"] // WORLD, tasks=(0,))
                for name in WINDOWED:
                    want = {name: {"lifetime": reference(name, [batch], 0), "window": reference(name, kept, 0)}}
                    named = batch[0].shape[1] > sc["window"] // WORLD  # a cut batch: two values, two warnings
                    _check(seed, f"step {s} rank {rank} forward", out["forward"][s], want, named=named)
            for j, s in enumerate(range(sc["save_after"] - 1, sc["steps"])):
                if s in sc["computes"]:
                    assert _same(out["after_resume"][j], out["run"][s]), (
                        f"seed {seed} step {s} rank {rank}: resumed from the checkpoint after {sc['save_after']} "
                        f"step(s) {out['after_resume'][j]} != uninterrupted {out['run'][s]}"
                    )


def test_scenarios_cover_the_uneven_cases():
    """The seeds hold what the test is for: a rank without batches, empty and all-zero-weight batches, big ones."""
    scenarios = [scenario(seed) for seed in SEEDS]
    batches = [(sc, b) for sc in scenarios for batches in sc["ranks"] for b in batches]
    assert any(not batches for sc in scenarios for batches in sc["ranks"])
    assert any(len(sc["ranks"][0]) != len(sc["ranks"][1]) and min(map(len, sc["ranks"])) > 0 for sc in scenarios)
    assert any(b[0].shape[1] == 0 for _, b in batches)
    assert any(b[2] is not None and b[0].shape[1] > 0 and not b[2].any() for _, b in batches)
    assert any(b[0].shape[1] > sc["window"] // WORLD for sc, b in batches)
    assert any(sc["window"] % WORLD for sc in scenarios)
    share = {id(sc): sc["window"] // WORLD for sc in scenarios}
    assert any(  # `max_updates` holds the window to fewer updates than the samples allow
        len(kept_window(r[: s + 1], share[id(sc)], sc["max_updates"])) < len(kept_window(r[: s + 1], share[id(sc)]))
        for sc in scenarios
        for r in sc["ranks"]
        for s in range(len(r))
    )
    assert any(len(sc["computes"]) < sc["steps"] - 1 for sc in scenarios)  # several updates between two reads
