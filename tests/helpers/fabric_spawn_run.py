"""A ``lightning.fabric.Fabric(strategy="ddp_spawn")`` evaluation on 2 CPU ranks, logged with ``self.log_dict``.

Run by ``tests/test_fabric_ddp_spawn.py``: ``python fabric_spawn_run.py OUT``. Each rank scores its share of
:func:`data` (101 rows: an uneven split) through ``UnpaddedDistributedSampler``, logs
``model.log_dict(model.val_metrics.compute())`` (Lightning's route through Fabric) to Fabric's ``CSVLogger``, and
records every warning's location (an undefined AUC computed in the launched function, on the line marked ``COMPUTE_LINE``).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import lightning as L
import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import UnpaddedDistributedSampler

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred"), tmx.RecTaskInfo("like", "like_label", "like_pred")]


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """101 rows of two heads' probabilities ``(101, 2)`` and labels ``(101, 2)``."""
    g = torch.Generator().manual_seed(7)
    p = torch.rand(101, 2, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return p, (torch.rand(101, 2, generator=g, dtype=torch.float64) < p).double()


class Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(1, 1)
        metrics = {"ne": "ne", "auc": "auc", "ctr": "ctr"}
        self.val_metrics = tmx.RecMetricModule(TASKS, metrics, prefix="val/", throughput=False)


def run(fabric: Fabric, out: str) -> None:
    def record(message, category, filename, lineno, file=None, line=None):
        with open(os.path.join(out, f"warnings_rank{fabric.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps({"category": category.__name__, "file": filename, "line": lineno}) + "\n")

    warnings.showwarning = record
    warnings.simplefilter("always")
    model = fabric.setup(Model())
    module = model.module if hasattr(model, "module") else model
    p, y = data()
    dataset = TensorDataset(p, y)
    loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=16, sampler=UnpaddedDistributedSampler(dataset)))
    seen = 0
    for p_batch, y_batch in loader:
        seen += len(p_batch)
        out_batch = {"click_pred": p_batch[:, 0], "like_pred": p_batch[:, 1]}
        module.val_metrics.update({**out_batch, "click_label": y_batch[:, 0], "like_label": y_batch[:, 1]})
    module.log_dict(module.val_metrics.compute())  # Lightning's route through Fabric: fabric.log_dict
    fabric.loggers[0].finalize("success")
    with open(os.path.join(out, f"seen_rank{fabric.global_rank}.txt"), "w") as f:
        f.write(str(seen))
    one_class = tmx.AUC()
    one_class.update(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))
    one_class.compute()  # COMPUTE_LINE: an undefined AUC, warned at this line of the launched function


if __name__ == "__main__":
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", loggers=CSVLogger(sys.argv[1], name="fabric"))
    fabric.launch(run, sys.argv[1])
