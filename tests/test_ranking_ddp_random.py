"""Ranking metrics under real 2-process gloo DDP in seeded random scenarios, against one process and numpy.

Each scenario draws a metric (a single class or ``RankingMetrics``), a mode (exact, or
``queries_complete_per_batch=True``), an empty-query policy, and each rank's own sequence of
batches: flat rows whose query ids overlap across ranks and batches (so one query is split across
updates and ranks), in float16/bfloat16/float32/float64 scores with ties, ids of several integer
dtypes (uint8 too), weights on some batches only, masks, and padded ``(Q, L)`` batches; one rank
sees no batch at all in some scenarios. Every rank computes; both ranks must agree, equal one
process fed every batch of both ranks (to rounding), and equal the numpy reference of
``tests/helpers/ranking_reference.py`` with the documented rule for a split query
(``docs/ranking.md``, "Memory, batches and DDP"): in exact mode rows with the same id are one
query wherever they arrive; with ``queries_complete_per_batch=True`` each batch's rows of an id
are a query of their own.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.helpers.ranking_reference import CLASSES, NAMES, group_rows, reference_values
from torchmetrics_ext import UndefinedMetricWarning

pytestmark = pytest.mark.ddp

WORLD = 2
SEEDS = list(range(16))
PRED_DTYPES = ("float16", "bfloat16", "float32", "float64")
ID_DTYPES = ("int8", "int32", "int64", "uint8")
SCORES = np.array([-np.inf, -1.0, -0.0, 0.0, 0.25, 0.5, 1.0, np.inf])


def _key(name: str, k: int | None) -> str:
    return name if k is None else f"{name}@{k}"


def scenario(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([4242, seed])
    options = {
        "queries_complete_per_batch": bool(rng.integers(0, 2)),
        "empty_target_action": str(rng.choice(["skip", "zero", "one"])),
        "remove_single_length_sessions": bool(rng.random() < 0.25),
    }
    if seed % 2:
        ks = [1, 3, None] if seed % 4 == 1 else [2, 100]
        kwargs = {"ks": ks, "metrics": list(NAMES), "exponential_gain": bool(seed % 3 == 0), **options}
        spec = {"kind": "combined", "kwargs": kwargs}
        requests = [
            (n, None) if n == "r_precision" else (n, k) for n in NAMES for k in ([None] if n == "r_precision" else ks)
        ]
    else:
        name = NAMES[(seed // 2) % len(NAMES)]
        k = None if name == "r_precision" else int(rng.choice([1, 2, 5, 100]))
        kwargs = {} if name == "r_precision" else {"k": k}
        if name in ("precision", "f1"):
            kwargs["adaptive_k"] = bool(rng.integers(0, 2))
        if name == "ndcg":
            kwargs["exponential_gain"] = bool(rng.integers(0, 2))
        spec = {"kind": "single", "name": name, "kwargs": {**kwargs, **options}}
        requests = [(name, k)]
    spec["requests"] = requests
    ranks = []
    for rank in range(WORLD):
        count = 0 if seed % 5 == rank else int(rng.integers(1, 5))
        batches = []
        for _ in range(count):
            if rng.random() < 0.25:  # padded lists
                q, width = int(rng.integers(1, 4)), int(rng.integers(1, 6))
                batches.append(
                    {
                        "padded": True,
                        "preds": rng.choice(SCORES, size=(q, width)),
                        "target": rng.integers(0, 3, size=(q, width)) * (rng.random((q, width)) < 0.5),
                        "mask": rng.random((q, width)) < 0.8,
                        "weights": rng.choice([0.0, 1.0, 2.0], size=q) if rng.random() < 0.5 else None,
                        "pred_dtype": str(rng.choice(PRED_DTYPES)),
                    }
                )
                continue
            n = int(rng.integers(0, 12))
            batches.append(
                {
                    "padded": False,
                    "preds": rng.choice(SCORES, size=n) if rng.random() < 0.5 else rng.normal(size=n),
                    "target": rng.integers(0, 4, size=n) * (rng.random(n) < 0.4),
                    "indexes": rng.integers(0, 6, size=n),  # shared by both ranks: queries split across them
                    "mask": rng.random(n) < 0.85 if rng.random() < 0.4 else None,
                    "weights": rng.choice([0.0, 0.5, 1.0, 2.0], size=n) if rng.random() < 0.5 else None,
                    "pred_dtype": str(rng.choice(PRED_DTYPES)),
                    "id_dtype": str(rng.choice(ID_DTYPES)),
                }
            )
        ranks.append(batches)
    return {"spec": spec, "ranks": ranks}


def _tensors(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {
        "preds": torch.tensor(batch["preds"], dtype=torch.float64).to(getattr(torch, batch["pred_dtype"])),
        "target": torch.tensor(batch["target"], dtype=torch.int64),
    }
    if not batch["padded"]:
        out["indexes"] = torch.tensor(batch["indexes"]).to(getattr(torch, batch["id_dtype"]))
    if batch["mask"] is not None:
        out["mask"] = torch.tensor(batch["mask"])
    if batch["weights"] is not None:
        out["weights"] = torch.tensor(batch["weights"], dtype=torch.float64)
    return out


def _build(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "combined":
        return tmx.RankingMetrics(**spec["kwargs"])
    return CLASSES[spec["name"]](**spec["kwargs"])


def _values(spec: dict[str, Any], value: Any) -> dict[str, float]:
    if spec["kind"] == "combined":
        return {key: float(v) for key, v in value.items()}
    return {_key(*spec["requests"][0]): float(value)}


def run_batches(spec: dict[str, Any], batches: list[dict[str, Any]]) -> dict[str, float]:
    metric = _build(spec)
    for batch in batches:
        metric.update(**_tensors(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return _values(spec, metric.compute())


def _ddp_job(rank: int, world_size: int, seeds: list[int]) -> list[dict[str, float]]:
    assert world_size == WORLD
    return [run_batches(scenario(seed)["spec"], scenario(seed)["ranks"][rank]) for seed in seeds]


def reference(sc: dict[str, Any]) -> dict[str, float]:
    """The numpy reference over every rank's batches, queries formed by the documented rule."""
    kw = sc["spec"]["kwargs"]
    complete = kw["queries_complete_per_batch"]
    keys, scores, relevance, weights, padded = [], [], [], [], []
    for rank, batches in enumerate(sc["ranks"]):
        for b, batch in enumerate(batches):
            t = _tensors(batch)
            p, y = t["preds"].double().numpy(), t["target"].double().numpy()
            keep = np.ones(p.shape, dtype=bool) if batch["mask"] is None else batch["mask"]
            if batch["padded"]:
                w = np.ones(p.shape[0]) if batch["weights"] is None else batch["weights"]
                padded += [(p[i][keep[i]], y[i][keep[i]], float(w[i])) for i in range(p.shape[0]) if keep[i].any()]
                continue
            w = np.ones(p.shape[0]) if batch["weights"] is None else batch["weights"]
            ids = t["indexes"].long().numpy()
            for i in np.flatnonzero(keep):
                keys.append((rank, b, int(ids[i])) if complete else int(ids[i]))
                scores.append(p[i])
                relevance.append(y[i])
                weights.append(w[i])
    queries = group_rows(keys, np.array(scores), np.array(relevance), np.array(weights)) + padded
    values = reference_values(
        queries,
        sc["spec"]["requests"],
        exponential_gain=kw.get("exponential_gain", False),
        adaptive_k=kw.get("adaptive_k", False),
        empty_target_action=kw["empty_target_action"],
        remove_single_length_sessions=kw["remove_single_length_sessions"],
    )
    return {_key(*request): v for request, v in zip(sc["spec"]["requests"], values)}


def _close(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert set(got) == set(want), where
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), f"{where} {key}: {got[key]!r} != {value!r}"


def test_queries_split_across_ranks_and_batches_match_one_process_and_numpy(ddp_pool):
    per_rank = ddp_pool.run(_ddp_job, SEEDS, timeout=240)
    for i, seed in enumerate(SEEDS):
        sc = scenario(seed)
        want = reference(sc)
        one_process = run_batches(sc["spec"], [b for batches in sc["ranks"] for b in batches])
        _close(one_process, want, f"seed {seed} one process")
        for rank in range(WORLD):
            _close(per_rank[rank][i], want, f"seed {seed} rank {rank}")
            _close(per_rank[rank][i], one_process, f"seed {seed} rank {rank} vs one process")


def test_scenarios_cover_the_split_cases():
    """The seeds hold what the test is for: a rank without batches, both modes, ids on both ranks, padded batches."""
    scenarios = [scenario(seed) for seed in SEEDS]
    assert any(not batches for sc in scenarios for batches in sc["ranks"])
    modes = {sc["spec"]["kwargs"]["queries_complete_per_batch"] for sc in scenarios}
    assert modes == {False, True}
    assert any(b["padded"] for sc in scenarios for batches in sc["ranks"] for b in batches)
    shared = 0
    for sc in scenarios:
        ids = [{int(i) for b in batches if not b["padded"] for i in b["indexes"]} for batches in sc["ranks"]]
        shared += bool(ids[0] & ids[1])
    assert shared >= 4
