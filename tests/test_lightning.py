"""Lightning: ``self.log_dict(metrics(...))`` works with our metrics inside a real Trainer loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx

L = pytest.importorskip("lightning")


class ClickModel(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.train_metrics = MetricCollection(
            {"ne": tmx.NormalizedEntropy(num_tasks=2, from_logits=True), "ctr": tmx.CTR(num_tasks=2)},
            prefix="train/",
        )
        self.val_metric = tmx.LogLoss(from_logits=True)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.linear(x).T  # (tasks, N)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.T.float())
        values = self.train_metrics(logits, y.T)
        self.log_dict({f"{k}_task{t}": v[t] for k, v in values.items() for t in range(2)})
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.linear(x)[:, 0]
        self.seen.append(torch.stack([logits, y[:, 0].float()]))
        self.val_metric.update(logits, y[:, 0])
        self.log("val/log_loss", self.val_metric, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_log_dict_in_trainer():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = (torch.rand(256, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    model = ClickModel()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader, loader)
    logged = trainer.callback_metrics
    assert {"train/ne_task0", "train/ctr_task1", "val/log_loss"} <= set(logged)
    # the epoch-level validation value is the log loss over every validation sample
    logits, labels = torch.cat(model.seen, dim=1).double().numpy()
    expected = np.mean(np.logaddexp(0.0, logits) - labels * logits)
    np.testing.assert_allclose(logged["val/log_loss"].item(), expected, rtol=1e-5)
