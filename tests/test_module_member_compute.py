"""A compute group member of a RecMetricModule computed on its own (``module.metrics["ctr"].compute()``).

This is what Lightning does with ``self.log("val/ctr", module.metrics["ctr"], on_epoch=True)``. Only the
group's first metric is updated; the member must still give the value of every sample the module has seen,
as a member of TorchMetrics' own compute groups does. References are numpy formulas.
"""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx


def _steps(seed: int, n: int = 3, size: int = 20) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(
            {
                "prediction": torch.rand(size, generator=gen) * 0.9 + 0.05,
                "label": (torch.rand(size, generator=gen) < 0.4).float(),
                "weight": torch.rand(size, generator=gen) + 0.5,
            }
        )
    return out


def _ctr(steps: list[dict[str, torch.Tensor]]) -> float:
    y = np.concatenate([s["label"].numpy() for s in steps]).astype(np.float64)
    w = np.concatenate([s["weight"].numpy() for s in steps]).astype(np.float64)
    return float((w * y).sum() / w.sum())


def _calibration(steps: list[dict[str, torch.Tensor]]) -> float:
    p = np.concatenate([s["prediction"].numpy() for s in steps]).astype(np.float64)
    y = np.concatenate([s["label"].numpy() for s in steps]).astype(np.float64)
    w = np.concatenate([s["weight"].numpy() for s in steps]).astype(np.float64)
    return float((w * p).sum() / (w * y).sum())


def _module(**kwargs) -> tmx.RecMetricModule:
    module = tmx.RecMetricModule(["click"], ["calibration", "ctr"], throughput=False, **kwargs)
    assert module.compute_groups == [["calibration", "ctr"]]
    return module


@pytest.mark.parametrize("seed", [0, 1])
def test_member_computed_alone_before_any_module_compute(seed):
    steps = _steps(seed)
    module = _module()
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = module.metrics["ctr"].compute()
    assert float(value) == pytest.approx(_ctr(steps), rel=1e-12)
    assert float(module.compute()["ctr/click"]) == pytest.approx(_ctr(steps), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_member_computed_alone_after_more_updates(seed):
    steps = _steps(seed, n=4)
    module = _module()
    module.update(steps[0])
    module.compute()
    for step in steps[1:]:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(module.metrics["ctr"].compute()) == pytest.approx(_ctr(steps), rel=1e-12)
        assert float(module.metrics["calibration"].compute()) == pytest.approx(_calibration(steps), rel=1e-12)
        values = module.compute()  # the module's own compute: same values, no warning about the member
    assert float(values["ctr/click"]) == pytest.approx(_ctr(steps), rel=1e-12)
    module.reset()
    module.update(steps[0])
    assert float(module.metrics["ctr"].compute()) == pytest.approx(_ctr(steps[:1]), rel=1e-12)


def test_windowed_member_computed_alone():
    steps = _steps(3, n=4)
    module = _module(window_size=40)  # the newest two steps of 20
    module.update(steps[0])
    module.compute()
    for step in steps[1:]:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = module.metrics["ctr"].compute()
    assert float(value["lifetime"]) == pytest.approx(_ctr(steps), rel=1e-12)
    assert float(value["window"]) == pytest.approx(_ctr(steps[2:]), rel=1e-12)


class _Logged(L.LightningModule):
    """Validation logs the module's member metric object, TorchMetrics' way: Lightning computes and resets it."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)
        self.val_metrics = _module(prefix="val/")
        self.seen: list[list[dict[str, torch.Tensor]]] = []

    def on_validation_epoch_start(self):
        self.val_metrics.reset()
        self.seen.append([])

    def validation_step(self, batch, batch_idx):
        x, y, w = batch
        step = {"prediction": torch.sigmoid(self.net(x)[:, 0]).detach(), "label": y, "weight": w}
        self.seen[-1].append(step)
        self.val_metrics.update(step)
        self.log("obj/ctr", self.val_metrics.metrics["ctr"], on_step=False, on_epoch=True)
        self.log("obj/calibration", self.val_metrics.metrics["calibration"], on_step=False, on_epoch=True)


def test_member_logged_as_metric_object_in_lightning():
    gen = torch.Generator().manual_seed(5)
    data = TensorDataset(
        torch.randn(48, 2, generator=gen),
        (torch.rand(48, generator=gen) < 0.3).float(),
        torch.rand(48, generator=gen) + 0.5,
    )
    model = _Logged()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    for _ in range(2):  # the second run after Lightning's reset of the logged metrics
        result = trainer.validate(model, DataLoader(data, batch_size=16), verbose=False)[0]
        assert result["obj/ctr"] == pytest.approx(_ctr(model.seen[-1]), rel=1e-6)
        assert result["obj/calibration"] == pytest.approx(_calibration(model.seen[-1]), rel=1e-6)
