"""A tiny two-task fit with checkpoints mid-epoch and at epoch ends, run whole or resumed from one of them.

Used by ``tests/test_lightning_resume.py``: in the test's process for one device, and as a script
for ``Trainer(strategy="ddp", devices=2, accelerator="cpu")`` (Lightning's DDP launcher re-runs this
file for rank 1, gloo). The training module keeps a window and a throughput and computes every
``INTERVAL`` batches, which is no divisor of an epoch's batches, so epoch ends log values of their
own too. The data order is fixed (each rank takes every ``world``-th sample, in order) and the
training loader is stateful (Lightning saves its position), so a fit resumed mid-epoch trains on the
same batches as the whole fit. Every ``log_metrics`` call is recorded per rank (``Recorder``);
``ModelCheckpoint(every_n_train_steps=CKPT_EVERY)`` saves mid-epoch checkpoints under ``ckpt/step``
and another one at each training epoch end under ``ckpt/epoch``. ``--add-metric`` builds both
modules with one metric more (``mse``) and ``strict_loading = False``, as a user who adds a metric
to a job and resumes it. ``--interval``/``--ckpt-every`` change the compute interval and the
mid-epoch checkpoints' cadence (e.g. both lined up with the epoch's length, so that a checkpoint is
saved right after a compute at an epoch's last batch). ``--monitor-every K`` adds
``ModelCheckpoint(monitor=MONITOR, every_n_train_steps=K, save_top_k=-1)`` under ``ckpt/monitor``,
whose saves (step and monitored value) are recorded too.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from tests.helpers.lightning_run import ResumableShards, data
from torchmetrics_ext.integrations.lightning import RecMetricCallback, UnpaddedDistributedSampler

TRAIN, VAL, BATCH = 112, 40, 8  # 7 training batches per epoch and rank under 2 ranks, 14 in one process
EPOCHS, INTERVAL, WINDOW, CKPT_EVERY = 3, 3, 32, 5
MONITOR = "train/ne/click"  # the training key ``--monitor-every``'s checkpoints monitor
BIAS = (-0.5, -1.0)  # the labels' logit offsets (base rates of ~0.4 and ~0.3)
TASKS = [
    tmx.RecTaskInfo("click", "click_label", "click_pred", "weight"),
    tmx.RecTaskInfo("buy", "buy_label", "buy_pred", "weight"),
]
METRICS = {"ne": "ne", "ctr": "ctr", "calibration": "calibration", "auc": "auc"}


class Recorder(Logger):
    """Every ``log_metrics`` call of this rank, as ``(step, {key: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step if step is not None else -1), {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class Model(L.LightningModule):
    def __init__(self, add_metric: bool = False, interval: int = INTERVAL) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        metrics = {**METRICS, "mse": "mse"} if add_metric else METRICS
        self.train_metrics = tmx.RecMetricModule(
            TASKS, metrics, window_size=WINDOW, compute_interval_steps=interval, prefix="train/"
        )
        self.val_metrics = tmx.RecMetricModule(TASKS, metrics, throughput=False, prefix="val/")
        self.strict_loading = not add_metric
        self.train_shards = ResumableShards(data(TRAIN, 1, bias=BIAS), BATCH)
        self.seen: list[tuple[int, dict[str, torch.Tensor]]] = []  # (step, training output) of this rank

    def _out(self, batch) -> dict[str, torch.Tensor]:
        x, y, w = batch
        probs = torch.sigmoid(self.linear(x))
        return {
            "click_pred": probs[:, 0],
            "buy_pred": probs[:, 1],
            "click_label": y[:, 0],
            "buy_label": y[:, 1],
            "weight": w,
        }

    def training_step(self, batch, batch_idx):
        out = self._out(batch)
        self.seen.append((self.global_step, {k: v.detach().clone() for k, v in out.items()}))
        loss = torch.nn.functional.binary_cross_entropy(torch.stack([out["click_pred"], out["buy_pred"]], 1), batch[1])
        return {"loss": loss, **out}

    def validation_step(self, batch, batch_idx):
        return self._out(batch)

    def train_dataloader(self):
        return self.train_shards

    def val_dataloader(self):  # built here: the sampler reads the process group's rank and size
        val_set = TensorDataset(*data(VAL, 2, bias=BIAS))
        return DataLoader(val_set, batch_size=BATCH, sampler=UnpaddedDistributedSampler(val_set, shuffle=False))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(
    out: str,
    devices: int,
    resume: str | None = None,
    add_metric: bool = False,
    interval: int = INTERVAL,
    ckpt_every: int = CKPT_EVERY,
    monitor_every: int | None = None,
    val_every: int | None = None,
) -> tuple[Model, Recorder]:
    """Fit (or resume) the model; save this rank's logged rows, training outputs and monitored saves under ``out``.

    The monitored saves (``monitor_every``) are ``{step: monitored value}`` of every checkpoint that
    ``ModelCheckpoint(monitor=MONITOR)`` saved in this fit. ``val_every``: validate every that many
    training batches (``val_check_interval``) instead of at each epoch's end.
    """
    model, recorder = Model(add_metric, interval), Recorder()
    checkpoints = [
        ModelCheckpoint(
            dirpath=os.path.join(out, "ckpt", "step"),
            filename="{step}",
            every_n_train_steps=ckpt_every,
            save_top_k=-1,
            save_on_train_epoch_end=False,
        ),
        ModelCheckpoint(
            dirpath=os.path.join(out, "ckpt", "epoch"),
            filename="{epoch}",
            every_n_epochs=1,
            save_top_k=-1,
            save_on_train_epoch_end=True,
        ),
    ]
    monitored = None
    if monitor_every is not None:
        monitored = ModelCheckpoint(
            dirpath=os.path.join(out, "ckpt", "monitor"),
            filename="{step}",
            monitor=MONITOR,
            every_n_train_steps=monitor_every,
            save_top_k=-1,
        )
        checkpoints.append(monitored)
    trainer = L.Trainer(
        strategy="ddp" if devices > 1 else "auto",
        devices=devices,
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=recorder,
        callbacks=[RecMetricCallback(), *checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        val_check_interval=val_every,
    )
    trainer.fit(model, ckpt_path=resume)
    saved = {} if monitored is None else monitored.best_k_models  # {path: score} of every save of this fit
    scores = {int(os.path.basename(p)[len("step=") : -len(".ckpt")]): float(v) for p, v in saved.items()}
    record = {"rows": recorder.rows, "seen": model.seen, "monitored": scores}
    torch.save(record, os.path.join(out, f"rank{trainer.global_rank}.pt"))
    return model, recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--add-metric", action="store_true")
    parser.add_argument("--interval", type=int, default=INTERVAL)
    parser.add_argument("--ckpt-every", type=int, default=CKPT_EVERY)
    parser.add_argument("--monitor-every", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fit(args.out, args.devices, args.resume, args.add_metric, args.interval, args.ckpt_every, args.monitor_every)


if __name__ == "__main__":
    main()
