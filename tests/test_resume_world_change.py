"""A training module checkpointed under W ranks and resumed under W' != W (2 -> 1, 1 -> 2, 2 -> 3, 3 -> 2).

``RecMetricCallback`` saves every rank's training module states (``rec_metric_modules``) and, resumed
with another number of ranks, merges every saved rank's lifetime states into the new rank 0 and
starts the other ranks empty (docs/module.md); every window restarts. These tests save real per-rank
states in gloo process groups of W ranks, restore them as Lightning does (rank 0's model
``state_dict`` into every rank, then the callback's ``on_load_checkpoint``) in a group of W' ranks,
feed new steps and check every key against numpy / scikit-learn, on every rank: the lifetime values
and ``total_examples`` over every sample saved and fed since, the windows over those since the resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.ddp import DDPPool
from tests.helpers.ranking_reference import group_rows, reference_values
from tests.helpers.resume_world import RESUMED_STEPS, SAVED_STEPS, _resume_job, _save_job, _step

pytest.importorskip("lightning")

pytestmark = pytest.mark.ddp


def _reference(world: int, saved_world: int | None = None) -> dict[str, float]:
    """Every value over the steps of the ``world`` resumed ranks (sklearn, numpy formulas), and over the
    ``saved_world`` ranks' steps before the checkpoint where given (the lifetime)."""
    steps = [_step(7 + 1000 * world + 100 * rank + i) for rank in range(world) for i in range(RESUMED_STEPS)]
    if saved_world is not None:
        saved = range(SAVED_STEPS)
        steps = [_step(1000 * saved_world + 100 * rank + i) for rank in range(saved_world) for i in saved] + steps
    p = torch.cat([s["prediction"] for s in steps]).double().numpy()
    y = torch.cat([s["label"] for s in steps]).double().numpy()
    base = y.mean()
    entropy = -(base * math.log(base) + (1 - base) * math.log(1 - base))
    return {
        "ne": -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean() / entropy,
        "auc": roc_auc_score(y, p),
        "ctr": base,
        "calibration": p.sum() / y.sum(),
        "total_examples": float(len(y)),
    }


def _check(out: list[dict[str, Any]], key_style: str, saved_world: int) -> None:
    world = len(out)
    lifetime, window = _reference(world, saved_world), _reference(world)
    for rank, result in enumerate(out):
        values = result["values"]
        for name in ("ne", "auc", "ctr", "calibration"):
            keys = (f"{name}/c", f"{name}/c/window")
            if key_style == "torchrec":
                keys = (f"{name}-c|lifetime_{name}", f"{name}-c|window_{name}")
            # the lifetime carries every saved rank's samples; the window restarts, holding every step since
            for key, expected in zip(keys, (lifetime, window), strict=True):
                np.testing.assert_allclose(values[key], expected[name], rtol=1e-9, err_msg=f"rank {rank}: {key}")
        total = "throughput-throughput|total_examples" if key_style == "torchrec" else "throughput/total_examples"
        assert values[total] == lifetime["total_examples"], (rank, values[total], lifetime["total_examples"])
        if key_style == "torchrec":
            assert values["throughput-throughput|attempt_examples"] == lifetime["total_examples"], rank
        assert result["step"] == SAVED_STEPS + RESUMED_STEPS  # the update count carries on (compute cadence)
        why = f"lifetime values carried from {saved_world} ranks onto {world}; windows restart"
        assert any(why in message for message in result["warnings"]), (rank, result["warnings"])


@pytest.fixture(scope="module")
def pool3() -> Iterator[DDPPool]:
    """Three spawned gloo ranks for this file's tests."""
    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


def _saved(pools: dict[int, Any], world: int, key_style: str) -> list[dict[str, Any]]:
    if world == 1:
        return [_save_job(0, 1, key_style)]
    return pools[world].run(_save_job, key_style)


def _resumed(pools: dict[int, Any], world: int, key_style: str, saved: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if world == 1:
        return [_resume_job(0, 1, key_style, saved)]
    return pools[world].run(_resume_job, key_style, saved)


# TorchRec's key style at every change of world (its throughput is the case found), ours at two
CASES = [(2, 1, "torchrec"), (1, 2, "torchrec"), (2, 3, "torchrec"), (3, 2, "torchrec")]
CASES += [(3, 2, "torchmetrics_ext"), (1, 2, "torchmetrics_ext")]


@pytest.mark.parametrize(("saved_world", "world", "key_style"), CASES)
def test_a_module_resumed_on_another_number_of_ranks_carries_the_lifetime_and_restarts_the_windows(
    saved_world, world, key_style, ddp_pool, pool3
):
    """Every lifetime value after the resume covers every saved rank's samples and those since; every window
    those since the resume alone, on every rank.

    Found here, when the module started afresh: with ``key_style="torchrec"`` (and so ``from_torchrec_config``)
    ``reset()`` keeps the throughput counting, as TorchRec's does, so the restart kept the throughput states
    Lightning had loaded from rank 0 on every rank: ``total_examples`` counted rank 0's samples once per new
    rank. It now counts every saved rank's examples once (summed onto the new rank 0).
    """
    pools = {2: ddp_pool, 3: pool3}
    saved = _saved(pools, saved_world, key_style)
    _check(_resumed(pools, world, key_style, saved), key_style, saved_world)


def _shards(world: int) -> list[list[torch.Tensor]]:
    """Rows 0..299 in batches of 10 dealt out to ``world`` ranks (sessions of 6 rows span batches and ranks)."""
    batches = [torch.arange(i, i + 10) for i in range(0, 300, 10)]
    return [batches[rank::world] for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["ne", "auc", "gauc", "ndcg"])
@pytest.mark.parametrize("windowed", [False, True])
def test_merging_the_saved_states_of_every_rank_resumes_the_lifetime_in_one_process(world, name, windowed):
    """docs/windows.md: each rank's saved ``state_dict`` loaded into a metric and merged into rank 0's gives
    the lifetime over every rank's samples (the window stays rank 0's own), for sums, exact rows, groups
    spread over ranks and sessions split across ranks."""
    gen = torch.Generator().manual_seed(5)
    p = torch.rand(300, generator=gen) * 0.98 + 0.01
    y = (torch.rand(300, generator=gen) < p).long()
    groups, sessions = torch.arange(300) % 7, torch.arange(300) // 6
    make = {"ne": tmx.NormalizedEntropy, "auc": tmx.AUC, "gauc": tmx.GroupedAUC, "ndcg": lambda: tmx.NDCG(k=5)}[name]

    def metric() -> Any:
        built = tmx.Windowed(make(), window_size=40) if windowed else make()
        return built.persistent(True) or built  # plain TorchMetrics states are saved only when persistent

    def update(m: Any, rows: torch.Tensor) -> None:
        extra = {"gauc": (groups[rows],), "ndcg": ()}.get(name, ())
        kwargs = {"indexes": sessions[rows]} if name == "ndcg" else {}
        m.update(p[rows], y[rows], *extra, **kwargs)

    saved = []
    for shard in _shards(world):
        m = metric()
        for rows in shard:
            update(m, rows)
        saved.append(m.state_dict())
    resumed = metric()
    resumed.load_state_dict(saved[0])
    for states in saved[1:]:
        other = metric()
        other.load_state_dict(states)
        resumed.merge_state(other)
    value = resumed.compute()
    got = float(value["lifetime"] if windowed else value)
    pn, yn = p.double().numpy(), y.double().numpy()
    if name == "ne":
        base = yn.mean()
        expected = -(yn * np.log(pn) + (1 - yn) * np.log(1 - pn)).mean() / -(
            base * math.log(base) + (1 - base) * math.log(1 - base)
        )
    elif name == "auc":
        expected = roc_auc_score(yn, pn)
    elif name == "gauc":
        expected = np.mean([roc_auc_score(yn[groups == g], pn[groups == g]) for g in range(7)])
    else:
        queries = group_rows(sessions.tolist(), pn, yn, np.ones(300))  # queries without a positive skipped
        (expected,) = reference_values(queries, [("ndcg", 5)])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
