"""A small two-task Lightning fit under ``Trainer(devices=3 or 4, accelerator="cpu")``, each rank's logs dumped.

Started as a script by ``tests/test_lightning_world.py`` (``strategy="ddp"``: Lightning's launcher
re-runs this file for every other rank; ``ddp_spawn``: the main process spawns them). A linear
two-task model trains with a :class:`RecMetricModule` per stage (NE, CTR, calibration, AUC, GAUC
over groups every rank holds rows of, NDCG@10 over sessions whose rows are dealt out to every rank;
lifetime and window keys for training, computed every 2 batches) and :class:`RecMetricCallback`.
The training rows are dealt out ``rank::world`` and cut in batches of ``--batch``, so every rank
takes as many steps but the last ranks' last batch is shorter; the validation dataloaders
(``--val-sizes``) are shared out by :class:`UnpaddedDistributedSampler`, so ranks may have
different numbers of batches, one sample, or none (a size smaller than the world);
``--limit-val`` is ``limit_val_batches``, ``--val-every K`` validates every ``K`` training batches.
``--save-dir D`` saves a checkpoint at every epoch end (``ModelCheckpoint``, in the ranks), ``--resume
CKPT`` continues a fit from one (each rank's training module states restored by the callback).

Each rank dumps ``rank{r}.pt``: every batch it fed the metrics (stage, epoch, dataloader, batch
index, the module's update count), every ``log_dict`` the callback made on it (the hook and its
values), the training values in ``trainer.callback_metrics`` after each interval compute, the
validation values there after each validation run (Lightning's reduced results, with each
dataloader's suffix) and ``trainer.callback_metrics`` at the fit's end, so the test can recompute every value in one
process and check that the ranks logged the same.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback, UnpaddedDistributedSampler

SESSION = 7  # consecutive rows per session: dealt out rank::world, every session spans several ranks
GROUPS = 5  # group ids row % GROUPS
INTERVAL = 2  # the training module computes every 2 batches
COLUMNS = ("click_pred", "buy_pred", "click_label", "buy_label", "weight", "session", "group", "row")


def config(window: int | None, prefix: str, interval: int = 1) -> dict[str, Any]:
    tasks = [
        {
            "name": t,
            "label_name": f"{t}_label",
            "prediction_name": f"{t}_pred",
            "weight_name": "weight",
            "session_id_name": "session",
            "group_id_name": "group",
        }
        for t in ("click", "buy")
    ]
    return {
        "tasks": tasks,
        "metrics": ["ne", "ctr", "calibration", "auc", "gauc", "ndcg@10"],
        "window_size": window,
        "compute_interval_steps": interval,
        "prefix": prefix,
        "throughput": False,
    }


def data(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``(x, y, w, session, group, row)`` of ``n`` rows: labels from a fixed linear model, weights 1 or 2."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    logits = x @ torch.tensor([[1.0, -0.5], [0.5, 1.0], [-1.0, 0.2], [0.0, 0.8]]) + torch.tensor([-0.5, -1.5])
    y = (torch.rand(n, 2, generator=gen) < torch.sigmoid(logits)).float()
    w = torch.where(torch.rand(n, generator=gen) < 0.2, 2.0, 1.0)
    rows = torch.arange(n)
    return x, y, w, rows // SESSION, rows % GROUPS, rows


class Shards:
    """This rank's rows ``rank::world`` of the training set, in batches (the last one shorter on some ranks)."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch: int) -> None:
        self.tensors, self.batch = tensors, batch

    def _batches(self) -> list[tuple[torch.Tensor, ...]]:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        index = torch.arange(len(self.tensors[0]))[rank::world]
        return [tuple(t[index[i : i + self.batch]] for t in self.tensors) for i in range(0, len(index), self.batch)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        return iter(self._batches())


class Model(L.LightningModule):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        self.train_metrics = tmx.RecMetricModule.from_config(config(args.window, "train/", INTERVAL))
        self.val_metrics = tmx.RecMetricModule.from_config(config(None, "val/"))
        self.args = args
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a dataloader smaller than the world
        self.fed: list[dict[str, Any]] = []
        self.logged: list[dict[str, Any]] = []
        self.computed: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []
        self.val_epoch = -1

    def _out(self, batch: Any, stage: str, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        x, y, w, session, group, row = batch
        probs = torch.sigmoid(self.linear(x))
        values = (probs[:, 0], probs[:, 1], y[:, 0], y[:, 1], w, session, group, row)  # row: read by no metric
        out = dict(zip(COLUMNS, values, strict=True))
        module = self.train_metrics if stage == "train" else None
        self.fed.append(
            {
                "stage": stage,
                "epoch": self.current_epoch if stage == "train" else self.val_epoch,
                "dataloader": dataloader_idx,
                "batch": batch_idx,
                "update": None if module is None else module._step + 1,  # its count once this batch is in
                "rows": {k: v.detach().double().clone() for k, v in out.items()},
            }
        )
        return out

    def training_step(self, batch, batch_idx):
        out = self._out(batch, "train", batch_idx)
        probs = torch.stack([out["click_pred"], out["buy_pred"]], 1)
        return {"loss": torch.nn.functional.binary_cross_entropy(probs, batch[1]), **out}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return self._out(batch, "val", batch_idx, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self.val_epoch += 1

    def log_dict(self, dictionary, *args, **kwargs):  # what the callback logs on this rank
        hook = self._current_fx_name or ""
        epoch = self.val_epoch if "validation" in hook else self.current_epoch
        values = {k: float(v) for k, v in dictionary.items()}
        self.logged.append({"hook": hook, "epoch": epoch, "update": self.train_metrics._step, "values": values})
        return super().log_dict(dictionary, *args, **kwargs)

    def train_dataloader(self):
        return Shards(data(self.args.train, 1), self.args.batch)

    def val_dataloader(self):  # built here: the sampler reads the process group's rank and size
        loaders = []
        for i, n in enumerate(self.args.val_sizes):
            val_set = TensorDataset(*data(n, 10 + i))
            # the first dataloader in the dataset's order, the others shuffled (seed i, the epoch)
            sampler = UnpaddedDistributedSampler(val_set, shuffle=i > 0, seed=i)
            loaders.append(DataLoader(val_set, batch_size=self.args.val_batch, sampler=sampler))
        return loaders if len(loaders) > 1 else loaders[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Recorder(L.Callback):
    """The training values ``trainer.callback_metrics`` holds after each interval compute; the fit's last ones."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = pl_module.train_metrics._step
        if step % INTERVAL == 0:
            values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            pl_module.computed.append({"update": step, "values": values})

    def on_validation_end(self, trainer, pl_module):  # Lightning has reduced the epoch's logs (dataloader suffixes)
        if not trainer.sanity_checking:
            values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            run = {"epoch": pl_module.val_epoch, "train_epoch": trainer.current_epoch, "values": values}
            pl_module.validated.append(run)

    def on_fit_end(self, trainer, pl_module):
        final = {k: float(v) for k, v in trainer.callback_metrics.items()}
        dump = {
            "world": trainer.world_size,
            "group": dist.get_world_size() if dist.is_initialized() else 1,
            "fed": pl_module.fed,
            "logged": pl_module.logged,
            "computed": pl_module.computed,
            "validated": pl_module.validated,
            "final": final,
            "num_val_batches": [int(n) for n in trainer.num_val_batches],
        }
        torch.save(dump, os.path.join(pl_module.args.out, f"rank{trainer.global_rank}.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "ddp_spawn"])
    parser.add_argument("--train", type=int, default=299, help="training rows, dealt out rank::world")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--val-sizes", type=lambda s: [int(n) for n in s.split(",")], default=[101])
    parser.add_argument("--val-batch", type=int, default=10)
    parser.add_argument("--limit-val", default=None, help="limit_val_batches: a whole number or a fraction")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=None, help="val_check_interval: every K training batches")
    parser.add_argument("--save-dir", default=None, help="save a checkpoint at every epoch end there")
    parser.add_argument("--resume", default=None, help="a checkpoint to continue the fit from")
    args = parser.parse_args()
    torch.set_num_threads(1)
    limit: int | float = 1.0
    if args.limit_val is not None:
        limit = float(args.limit_val) if "." in args.limit_val else int(args.limit_val)
    saves = []
    if args.save_dir is not None:
        saves.append(ModelCheckpoint(dirpath=args.save_dir, filename="{epoch}", save_top_k=-1, every_n_epochs=1))
    trainer = L.Trainer(
        strategy=args.strategy,
        devices=args.devices,
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        callbacks=[RecMetricCallback(), Recorder(), *saves],
        enable_checkpointing=bool(saves),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=limit,
        val_check_interval=args.val_every,
    )
    trainer.fit(Model(args), ckpt_path=args.resume)


if __name__ == "__main__":
    main()
