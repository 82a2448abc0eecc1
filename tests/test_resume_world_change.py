"""A training module checkpointed under W ranks and resumed under W' != W (2 -> 1, 1 -> 2, 2 -> 3, 3 -> 2).

``RecMetricCallback`` saves every rank's training module states (``rec_metric_modules``) and, resumed
with another number of ranks, starts the training module afresh on every rank (docs/module.md):
Lightning has loaded rank 0's states from the model's ``state_dict`` into every rank, and keeping
them would count rank 0's samples once per new rank. These tests save real per-rank states in gloo
process groups of W ranks, restore them as Lightning does (rank 0's model ``state_dict`` into every
rank, then the callback's ``on_load_checkpoint``) in a group of W' ranks, feed new steps and check
every key against numpy / scikit-learn over the samples seen since the resume alone, on every rank.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.ddp import DDPPool
from torchmetrics_ext.integrations.lightning import RecMetricCallback

pytest.importorskip("lightning")

pytestmark = pytest.mark.ddp

WINDOW = 60  # room for every step after the resume on every rank (the window restarts with the module)
SAVED_STEPS, RESUMED_STEPS, BATCH = 3, 2, 10


def _step(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(BATCH, generator=gen) * 0.98 + 0.01
    y = (torch.rand(BATCH, generator=gen) < p).float()
    return {"prediction": p, "label": y}


def _module(key_style: str) -> tmx.RecMetricModule:
    metrics = {"ne": "ne", "auc": "auc", "ctr": "ctr", "calibration": "calibration"}
    return tmx.RecMetricModule(["c"], metrics, window_size=WINDOW, key_style=key_style, throughput=True)


def _values(module: tmx.RecMetricModule) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rates of steps too close together
        return {key: float(value) for key, value in module.compute().items()}


def _save_job(rank: int, world: int, key_style: str) -> dict[str, Any]:
    """This rank's training module ``state_dict`` after its steps (what the callback saves for it)."""
    module = _module(key_style)
    for i in range(SAVED_STEPS):
        module.update(_step(1000 * world + 100 * rank + i))
    _values(module)  # a compute before the save, as the callback's interval computes
    return module.state_dict()


def _resume_job(rank: int, world: int, key_style: str, saved: list[dict[str, Any]]) -> dict[str, Any]:
    """Restore as Lightning does: rank 0's states from the model's ``state_dict``, then the callback's hook."""

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.train_metrics = _module(key_style)

    model = Model()
    model.train_metrics.load_state_dict(saved[0])  # the model's state_dict in the checkpoint is rank 0's
    checkpoint = {"rec_metric_modules": [None] + [{"train_metrics": states} for states in saved[1:]]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    for i in range(RESUMED_STEPS):
        model.train_metrics.update(_step(7 + 1000 * world + 100 * rank + i))
    return {
        "values": _values(model.train_metrics),
        "warnings": [str(w.message) for w in caught],
        "step": model.train_metrics._step,
    }


def _reference(world: int) -> dict[str, float]:
    """Every value over the steps of the ``world`` resumed ranks alone (sklearn, numpy formulas)."""
    steps = [_step(7 + 1000 * world + 100 * rank + i) for rank in range(world) for i in range(RESUMED_STEPS)]
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
    expected = _reference(world)
    for rank, result in enumerate(out):
        values = result["values"]
        for name in ("ne", "auc", "ctr", "calibration"):
            keys = (f"{name}/c", f"{name}/c/window")
            if key_style == "torchrec":
                keys = (f"{name}-c|lifetime_{name}", f"{name}-c|window_{name}")
            for key in keys:  # the window restarts too, and holds every step since the resume
                np.testing.assert_allclose(values[key], expected[name], rtol=1e-9, err_msg=f"rank {rank}: {key}")
        total = "throughput-throughput|total_examples" if key_style == "torchrec" else "throughput/total_examples"
        assert values[total] == expected["total_examples"], (rank, values[total], expected["total_examples"])
        if key_style == "torchrec":
            assert values["throughput-throughput|attempt_examples"] == expected["total_examples"], rank
        assert result["step"] == SAVED_STEPS + RESUMED_STEPS  # the update count carries on (compute cadence)
        why = f"holds metric states of {saved_world} rank(s), this run has {world}; `train_metrics` starts afresh"
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


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
@pytest.mark.parametrize(("saved_world", "world"), [(2, 1), (1, 2), (2, 3), (3, 2)])
def test_a_module_resumed_on_another_number_of_ranks_starts_afresh_on_every_rank(
    saved_world, world, key_style, ddp_pool, pool3
):
    """Every value after the resume covers the samples since the resume alone, on every rank.

    Found here: with ``key_style="torchrec"`` (and so ``from_torchrec_config``) ``reset()`` keeps the
    throughput counting, as TorchRec's does, so the restart kept the throughput states Lightning had
    loaded from rank 0 on every rank: ``total_examples`` counted rank 0's samples once per new rank
    (100 for 40 samples since a 3 -> 2 resume, 3 x 10 of rank 0 twice; rank 0's share alone after 2 -> 1).
    """
    pools = {2: ddp_pool, 3: pool3}
    saved = _saved(pools, saved_world, key_style)
    _check(_resumed(pools, world, key_style, saved), key_style, saved_world)
