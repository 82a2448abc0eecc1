"""A Lightning ``strategy="ddp_spawn"`` fit on 2 CPU ranks that records every warning's location, per process.

Run by ``tests/test_spawn_warning_locations.py``: ``python spawn_warnings_run.py OUT``. The validation loader keeps
Lightning's padding ``DistributedSampler`` (5 samples on 2 ranks: the callback warns, on rank 0) and its ``like``
labels hold one class (AUC undefined: every rank warns when the callback computes the validation module). The
spawned ranks import this file again (as ``__mp_main__``), so the recorder below is installed in them too.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback

if __name__ == "__main__":
    os.environ["TMX_SPAWN_OUT"] = sys.argv[1]  # the ranks read it (their argv is multiprocessing's)
# empty where the file is only imported (pytest's --doctest-modules collects tests/helpers too): nothing is recorded
OUT = os.environ.get("TMX_SPAWN_OUT", "")
TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred"), tmx.RecTaskInfo("like", "like_label", "like_pred")]


def _record(message, category, filename, lineno, file=None, line=None):
    with open(os.path.join(OUT, f"warnings_{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps({"category": category.__name__, "file": filename, "line": lineno, "message": str(message)}))
        f.write("\n")


if OUT and __name__ in ("__main__", "__mp_main__"):  # the run and its spawned ranks, never an importer's process
    warnings.showwarning = _record
    warnings.simplefilter("always")


class Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        metrics = {"ne": "ne", "auc": "auc"}
        self.train_metrics = tmx.RecMetricModule(TASKS, metrics, prefix="train/", throughput=False)
        self.val_metrics = tmx.RecMetricModule(TASKS, metrics, prefix="val/", throughput=False)

    def _out(self, batch):
        p, y = batch
        p = p + 0 * self.w.detach()
        return {"click_pred": p[:, 0], "like_pred": p[:, 1], "click_label": y[:, 0], "like_label": y[:, 1]}

    def training_step(self, batch, batch_idx):
        return {"loss": (self.w**2).sum() + 1.0, **self._out(batch)}

    def validation_step(self, batch, batch_idx):
        return self._out(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(8, 2, generator=g) * 0.8 + 0.1
    train = DataLoader(TensorDataset(p, torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)), batch_size=2)
    val = DataLoader(TensorDataset(p[:5], torch.tensor([[1.0, 0.0], [0.0, 0.0]]).repeat(3, 1)[:5]), batch_size=2)
    trainer = L.Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        callbacks=[RecMetricCallback()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Model(), train, val)  # the fit line: the ranks' warnings name it


if __name__ == "__main__":
    main()
