"""Jobs of ``tests/test_resume_world_change.py`` run on every rank of a spawned gloo group.

Kept apart from the test so that the ranks import no scikit-learn: a training module's states saved
under one number of ranks, and restored under another as Lightning does.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback

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
