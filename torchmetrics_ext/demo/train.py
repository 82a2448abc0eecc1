"""Train the demo recommender with Lightning and write its report.

``torchmetrics-ext demo`` calls :func:`run_training_demo`. Under ``--devices 2`` Lightning's
``ddp`` strategy starts a second process running the same command; both train on their share of
the sessions, the metrics sync across them, and rank 0 writes the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from torchmetrics_ext.demo.data import SOURCES, SyntheticWorld, collate_sessions
from torchmetrics_ext.demo.model import DemoRecommender
from torchmetrics_ext.integrations.lightning import RecMetricCallback
from torchmetrics_ext.integrations.sampler import UnpaddedDistributedSampler
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

__all__ = ["DemoConfig", "DemoData", "run_training_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """What ``torchmetrics-ext demo`` trains: steps, sessions per step, where the report goes.

    ``report=False`` (``torchmetrics-ext demo --no-report``) trains, logs and prints the summary
    without drawing the report's pictures and writing their files (drawing them takes most of a
    short run). The logs under ``output_dir/logs`` and the validation predictions,
    ``output_dir/val_predictions.csv`` (what ``torchmetrics-ext evaluate`` scores in the README),
    are written either way.

    Examples:
        >>> DemoConfig(steps=10).validation_every
        2
        >>> DemoConfig(report=False).report
        False
    """

    steps: int = 600
    batch_size: int = 64
    output_dir: str = "torchmetrics_ext_demo"
    devices: int = 1
    seed: int = 0
    val_sessions: int = 2500
    num_users: int = 2000
    num_items: int = 1000
    window_size: int = 20_000
    log_every: int = 10
    report: bool = True

    @property
    def validation_every(self) -> int:
        """Training steps between validations: ``max(1, steps // 5)``.

        So ``steps // validation_every`` validations: five when ``steps`` is a multiple of 5 (600: every
        120 steps, the last at the end), 5 to 9 for other runs of 5 steps or more, and one after every
        step below 10 steps.

        Examples:
            >>> [(steps, DemoConfig(steps=steps).validation_every) for steps in (600, 12, 3)]
            [(600, 120), (12, 2), (3, 1)]
        """
        return max(1, self.steps // 5)


class DemoData(pl.LightningDataModule):
    """Training and validation sessions of one :class:`SyntheticWorld` (same on every rank).

    The validation loader takes an :class:`UnpaddedDistributedSampler` under DDP, so every
    validation session is scored exactly once; the training loader gets Lightning's sampler.
    """

    def __init__(self, config: DemoConfig) -> None:
        super().__init__()
        self.config = config
        self.world = SyntheticWorld.create(config.num_users, config.num_items, seed=config.seed)
        train_sessions = config.steps * config.batch_size * config.devices
        self.train_set = self.world.sample(train_sessions, seed=config.seed + 1)
        self.val_set = self.world.sample(config.val_sessions, seed=config.seed + 2, first_session=train_sessions)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the tensors; the aggregation records (frozen dataclasses) stay as they are."""
        tensors = {key: value for key, value in batch.items() if key != "metrics"}
        moved = super().transfer_batch_to_device(tensors, device, dataloader_idx)
        return {**moved, "metrics": batch.get("metrics", [])}

    def train_dataloader(self) -> DataLoader:
        """Sessions in drawn order (already random), ``batch_size`` sessions a step."""
        return DataLoader(self.train_set, batch_size=self.config.batch_size, collate_fn=collate_sessions)

    def val_dataloader(self) -> DataLoader:
        """Every validation session once, on whichever rank."""
        sampler = UnpaddedDistributedSampler(self.val_set) if torch.distributed.is_initialized() else None
        return DataLoader(self.val_set, batch_size=256, sampler=sampler, collate_fn=collate_sessions)


def _loggers(output_dir: Path) -> list[Any]:
    """CSV always; TensorBoard when ``tensorboard`` (or ``tensorboardX``) is installed."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(output_dir, name="logs", version="")]
    try:
        loggers.append(TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False))
    except ModuleNotFoundError:
        pass
    return loggers


def run_training_demo(config: DemoConfig) -> dict[str, Any] | None:
    """Train, validate every ``config.validation_every`` steps, then (on rank 0) print the summary and write the report.

    Five validations when ``config.steps`` is a multiple of 5 (the default 600), ``steps // validation_every``
    otherwise (see :attr:`DemoConfig.validation_every`). A run of no more training steps than the throughput's
    warm-up (``max(log_every // 2, 1)`` steps) prints its throughput as "not measured".

    The final model's validation predictions go to ``output_dir/val_predictions.csv`` (``source``
    by name), with or without the report.

    Returns:
        On rank 0, ``{"train": {key: float}, "val": {key: float}, "report": path of index.html}``,
        with ``"report": None`` when ``config.report`` is false (no report written); ``None`` on
        the other ranks.

    Examples:
        A tiny run without the report (``report=True``, the default, also writes ``index.html`` and
        its pictures, which takes most of a run this small):

        >>> import contextlib, io, tempfile
        >>> from torchmetrics_ext.demo import DemoConfig, run_training_demo
        >>> small = {"batch_size": 8, "val_sessions": 16, "num_users": 20, "num_items": 10, "log_every": 1}
        >>> config = DemoConfig(steps=2, output_dir=tempfile.mkdtemp(), report=False, **small)
        >>> with contextlib.redirect_stdout(io.StringIO()) as printed:  # the progress bar and the summary
        ...     result = run_training_demo(config)
        >>> sorted(result), result["report"] is None
        (['report', 'train', 'val'], True)
        >>> sorted(key.split("/")[1] for key in result["val"] if key.endswith("/click"))
        ['auc', 'auprc', 'calibration', 'ctr', 'gauc', 'ndcg@10', 'ne', 'recall@10']
        >>> "training throughput" in printed.getvalue()
        True
    """
    # matplotlib: only inside write_report
    from torchmetrics_ext.demo.report import (
        summary_table,
        validation_predictions,
        write_report,
        write_validation_predictions,
    )

    output_dir = Path(config.output_dir)
    pl.seed_everything(config.seed, verbose=False)
    data = DemoData(config)
    model = DemoRecommender(
        config.num_users,
        config.num_items,
        num_sources=len(SOURCES),
        window_size=config.window_size,
        log_every=config.log_every,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=config.devices,
        strategy="ddp" if config.devices > 1 else "auto",
        max_steps=config.steps,
        max_epochs=1,
        val_check_interval=config.validation_every,
        num_sanity_val_steps=0,
        log_every_n_steps=config.log_every,  # the steps the metric modules compute at
        logger=_loggers(output_dir),
        callbacks=[RecMetricCallback()],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model's ops are too short to share out; other threads only wait
    with warnings.catch_warnings():
        # a session without a click has no NDCG; the few early-window values are left out with a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for message in (".*does not have many workers.*", ".*sync_dist=True.*", ".*LeafSpec.*"):
            # the data is in memory; the metric modules sync their values themselves; Lightning's own
            warnings.filterwarnings("ignore", message)
        try:
            trainer.fit(model, datamodule=data)
        finally:
            torch.set_num_threads(threads)
    if not trainer.is_global_zero:
        return None
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    train = {key: value for key, value in logged.items() if key.startswith("train/") or key.startswith("train_")}
    val = {key: value for key, value in logged.items() if key.startswith("val/")}
    tasks = [task.name for task in model.train_metrics.tasks]
    summary = summary_table(train, val, tasks, model.throughput_warmup, steps=trainer.global_step)
    print(summary)
    if not config.report:  # the predictions the README's evaluate command reads, without the report
        output_dir.mkdir(parents=True, exist_ok=True)
        predictions = write_validation_predictions(
            output_dir / "val_predictions.csv", validation_predictions(model, data.val_set)
        )
        print(f"\nno report written (report=False); logs in {output_dir / 'logs'}, predictions in {predictions}")
        return {"train": train, "val": val, "report": None}
    index = write_report(output_dir, model, data.val_set, output_dir / "logs" / "metrics.csv", summary)
    print(f"\nreport: {index}  (open it in a browser; logs in {output_dir / 'logs'})")
    return {"train": train, "val": val, "report": str(index)}
