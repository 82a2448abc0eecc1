"""A small two-task Lightning run under ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``.

Started as a script by ``tests/test_lightning.py`` (Lightning's DDP launcher re-runs this file for
rank 1). It trains a linear two-task click model with a :class:`RecMetricModule` per stage (built by
``from_config``: NE, CTR, AUC, calibration and NDCG@10 over sessions that each rank holds half of) and
the :class:`RecMetricCallback`, logs to a ``CSVLogger`` and dumps what each rank fed to the
metrics (predictions, labels, weights per step) so the test can recompute every logged value in
one process, and the warnings each rank gave (its validation also logs a key of its own with
``self.log``). ``--checkpoint-every S`` saves a checkpoint every ``S`` training steps (mid-epoch);
``--resume CKPT`` continues from one. ``--strategy ddp_spawn`` runs it under Lightning's spawn
launcher instead (the model is pickled into the two ranks through ``torch.multiprocessing``, which
puts its CPU tensors, metric states included, in shared memory); the main process then saves
``after_fit.ckpt`` with ``trainer.save_checkpoint``.
"""

from __future__ import annotations

import argparse
import os
import warnings

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback, UnpaddedDistributedSampler

TRAIN, VAL, BATCH = 1200, 1001, 50
SESSION = 10  # rows per session (see with_sessions)
CONFIG = {  # built through from_config, as the docs configure a module from plain data
    "tasks": [
        {"name": t, "label_name": f"{t}_label", "prediction_name": f"{t}_pred", "session_id_name": "session"}
        for t in ("click", "buy")
    ],
    "metrics": ["ne", "ctr", "auc", "calibration", "ndcg@10"],
    "throughput": False,
}


def data(n: int, seed: int, bias: tuple[float, float] = (-1.0, -2.0)) -> tuple[torch.Tensor, ...]:
    """``(x, y, w)``: features, two tasks' labels drawn from a fixed linear model (logit offsets ``bias``), weights."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    logits = x @ torch.tensor([[1.0, -0.5], [0.5, 1.0], [-1.0, 0.2], [0.0, 0.8]]) + torch.tensor(bias)
    y = (torch.rand(n, 2, generator=gen) < torch.sigmoid(logits)).float()
    w = torch.where(torch.rand(n, generator=gen) < 0.2, 2.0, 1.0)
    return x, y, w


def with_sessions(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``tensors`` and their session ids: ``SESSION`` consecutive rows each, so each rank (rows ``rank::2``)
    holds half of every session of a step, and the ranking metric's lists are whole only once synced."""
    return (*tensors, torch.arange(len(tensors[0])) // SESSION)


class ResumableShards:
    """This rank's share of a fixed order of batches; remembers how many were trained on (Lightning's ``_Stateful``)."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch: int = BATCH) -> None:
        self.tensors, self.batch, self.trained, self.start = tensors, batch, 0, 0

    def _batches(self) -> list[tuple[torch.Tensor, ...]]:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        index = torch.arange(len(self.tensors[0]))[rank::world]
        size = self.batch
        return [tuple(t[index[i : i + size]] for t in self.tensors) for i in range(0, len(index), size)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        start, self.start = self.start, 0  # a restored position applies to the first epoch only
        self.trained = start
        for i, batch in enumerate(self._batches()[start:], start):
            # a checkpoint saved after training on batch i (Lightning asks for batch i + 1 only
            # after that step's callbacks) holds i + 1 trained batches
            self.trained = i + 1
            yield batch

    def state_dict(self) -> dict:
        return {"trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        self.start = self.trained = state["trained"]


class ClickModel(L.LightningModule):
    def __init__(self, dump: str, window_size: int | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        self.train_metrics = tmx.RecMetricModule.from_config(
            {**CONFIG, "window_size": window_size, "compute_interval_steps": 4, "prefix": "train/"}
        )
        self.val_metrics = tmx.RecMetricModule.from_config({**CONFIG, "prefix": "val/"})
        self.dump = dump
        self.train_shards = ResumableShards(with_sessions(data(TRAIN, 1)))
        self.seen: dict[str, list] = {"train": [], "val": [], "warnings": []}

    def _out(self, batch, stage: str) -> dict[str, torch.Tensor]:
        x, y, w, s = batch
        probs = torch.sigmoid(self.linear(x))
        out = {
            "click_pred": probs[:, 0],
            "buy_pred": probs[:, 1],
            "click_label": y[:, 0],
            "buy_label": y[:, 1],
            "weight": w,
            "session": s,
        }
        self.seen[stage].append((self.global_step, {k: v.detach().clone() for k, v in out.items()}))
        return out

    def training_step(self, batch, batch_idx):
        out = self._out(batch, "train")
        loss = torch.nn.functional.binary_cross_entropy(torch.stack([out["click_pred"], out["buy_pred"]], 1), batch[1])
        return {"loss": loss, **out}

    def validation_step(self, batch, batch_idx):
        self.log("user/constant", 1.0)  # a key of the user's own, reduced by Lightning at the epoch end
        return self._out(batch, "val")

    def setup(self, stage: str) -> None:
        # record every warning of the run in this rank (Lightning's sync_dist advice among them)
        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")

    def on_fit_end(self) -> None:
        self.catcher.__exit__(None, None, None)
        self.seen["warnings"] = [str(w.message) for w in self.caught]
        torch.save(self.seen, os.path.join(self.dump, f"seen_rank{self.global_rank}.pt"))

    def train_dataloader(self):
        return self.train_shards

    def val_dataloader(self):  # built here: the sampler reads the process group's rank and size
        val_set = TensorDataset(*with_sessions(data(VAL, 2)))
        return DataLoader(val_set, batch_size=BATCH, sampler=UnpaddedDistributedSampler(val_set, shuffle=False))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "ddp_spawn"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = ClickModel(args.out, args.window)
    checkpoints = []
    if args.checkpoint_every:
        checkpoints.append(
            ModelCheckpoint(
                dirpath=os.path.join(args.out, "ckpt"),
                filename="{step}",
                every_n_train_steps=args.checkpoint_every,
                save_top_k=-1,
                save_on_train_epoch_end=False,
            )
        )
    trainer = L.Trainer(
        strategy=args.strategy,
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(args.out, name="logs", version=0),
        callbacks=[RecMetricCallback(), *checkpoints],
        enable_checkpointing=bool(checkpoints),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(model, ckpt_path=args.resume)
    if args.strategy == "ddp_spawn":  # the main process, whose model Lightning gave rank 0's state_dict
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.save_checkpoint(os.path.join(args.out, "after_fit.ckpt"))
        torch.save([str(w.message) for w in caught], os.path.join(args.out, "after_fit_warnings.pt"))


if __name__ == "__main__":
    main()
