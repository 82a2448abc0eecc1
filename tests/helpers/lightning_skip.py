"""Manual optimisation under ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``; rank 1 skips some steps.

Started as a script by ``tests/test_lightning.py`` (Lightning's DDP launcher re-runs this file for
rank 1). Every rank steps its optimizer at every batch, but rank 1's ``training_step`` returns
``None`` at the batches of ``--skip`` (no metric update from it), so the ranks' counts of
:meth:`RecMetricModule.update` calls differ. Each rank dumps what it fed to the training module per
batch, so the test can recompute each logged value in one process. The process group times out
after ``--timeout`` seconds, so a run whose ranks wait for each other in different collectives ends.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback

BATCH, BATCHES = 10, 7  # batches per rank


class Model(L.LightningModule):
    def __init__(self, skip: set[int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.automatic_optimization = False
        self.linear = torch.nn.Linear(2, 1)
        task = [tmx.RecTaskInfo("click", "label", "prob")]
        self.train_metrics = tmx.RecMetricModule(
            task, {"ctr": "ctr", "ne": "ne", "auc": "auc"}, prefix="train/", throughput=False, compute_interval_steps=2
        )
        self.skip = skip
        self.seen: list[tuple[int, torch.Tensor]] = []  # (batch index, [prob; label]) of each update

    def training_step(self, batch, batch_idx):
        x, y = batch
        prob = torch.sigmoid(self.linear(x))[:, 0]
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(torch.nn.functional.binary_cross_entropy(prob, y.float()))
        optimizer.step()
        if self.global_rank == 1 and batch_idx in self.skip:
            return None  # a step without metrics (a skipped batch) on this rank only
        prob = prob.detach()
        self.seen.append((batch_idx, torch.stack([prob.double(), y.double()])))
        return {"prob": prob, "label": y}

    def train_dataloader(self):
        gen = torch.Generator().manual_seed(1)
        n = 2 * BATCH * BATCHES
        data = TensorDataset(torch.randn(n, 2, generator=gen), (torch.rand(n, generator=gen) < 0.3).long())
        return DataLoader(data, batch_size=BATCH)  # Lightning adds a DistributedSampler: 7 batches per rank

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip", required=True, help="batch indices at which rank 1 returns None, e.g. 1,2,6")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Model({int(i) for i in args.skip.split(",")})
    trainer = L.Trainer(
        strategy=DDPStrategy(timeout=timedelta(seconds=args.timeout)),
        devices=2,
        accelerator="cpu",
        max_epochs=1,
        logger=CSVLogger(args.out, name="logs", version=0),
        callbacks=[RecMetricCallback(val=None)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model)
    torch.save(model.seen, os.path.join(args.out, f"seen_rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
