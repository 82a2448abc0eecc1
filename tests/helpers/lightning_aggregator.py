"""docs/aggregation.md's ``DataMetricsModel`` fitted one epoch, checkpointed, and resumed by a fresh model to two.

Used by ``tests/test_lightning_aggregator_checkpoint.py``: in the test's process for one device, and as a
script for ``Trainer(strategy="ddp", devices=2, accelerator="cpu")`` (Lightning's launcher re-runs this file
for rank 1, gloo; both fits run in the one launch). The model is the page's own class, executed from the page
(``--recipe callback``: the recommended ``AggregatorCheckpoint``; ``--recipe hooks``: the page's
``on_save_checkpoint``/``on_load_checkpoint`` recipe; ``--recipe none``: neither, what the page warns of).
Rank ``r`` of ``world`` trains on samples ``r, r + world, ...`` of a fixed list, in order, 4 per batch, so
the ranks see other datasets' records in other numbers. After each fit, every rank calls
``get_metrics_for_logging`` (a collective) at ``on_train_end`` and the values are saved per rank under
``--out`` with the rows the model logged (rank 0's), so the test compares them with plain Python over the
samples.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from torchmetrics_ext.aggregation import AggregationType, DefaultTrainingMetricTransform, Metric
from torchmetrics_ext.integrations.lightning import AggregatorCheckpoint

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("alpaca", "slimorca", "dolly")
TRAIN = 22  # 11 samples per rank under 2 ranks: batches of 4, 4, 3 (5 + 1 batches in one process)
VAL = 6
BATCH = 4


def sample(i: int, split: str) -> dict[str, Any]:
    """Sample ``i``: its dataset, ``tokens`` and records (torchtune's three, a MAX and a category)."""
    offset = 0 if split == "train" else 1000
    dataset = DATASETS[(i * 7 + offset) % 3 if i % 5 else 0]  # dataset 0 more often; each rank sees all three
    length = 3 + (i * 37 + offset) % 61
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name(dataset)
    out = transform({"tokens": list(range(length))})
    out["metrics"] = [
        *out["metrics"],
        Metric(dataset, "longest", length, AggregationType.MAX),
        Metric(dataset, "source", ("web", "books", 7)[(i + offset) % 3], AggregationType.CATEGORICAL_COUNT),
    ]
    out["x"] = torch.full((4,), float(i % 9) / 9)
    return out


def shard(n: int, split: str, rank: int, world: int) -> list[int]:
    """The sample numbers rank ``rank`` of ``world`` takes, in order."""
    return list(range(n))[rank::world]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"x": torch.stack([s["x"] for s in samples]), "metrics": [m for s in samples for m in s["metrics"]]}


class Shards:
    """This rank's batches, in order (a fresh list per epoch)."""

    def __init__(self, n: int, split: str) -> None:
        self.n, self.split = n, split

    def _batches(self) -> list[dict[str, Any]]:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        samples = [sample(i, self.split) for i in shard(self.n, self.split, rank, world)]
        return [collate(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        return iter(self._batches())


def recipe(name: str) -> type:
    """The page's ``DataMetricsModel`` (``callback``/``none``) or its hooks' subclass (``hooks``)."""
    text = (ROOT / "docs" / "aggregation.md").read_text()
    section = text[text.index("### In Lightning") :]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    namespace: dict[str, Any] = {"__name__": "__aggregation_lightning__"}
    exec(compile(blocks[0], "docs/aggregation.md", "exec"), namespace)
    if name == "hooks":
        exec(compile(blocks[1], "docs/aggregation.md", "exec"), namespace)
        return namespace["DataMetricsModelWithHooks"]
    return namespace["DataMetricsModel"]


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
        self.rows.append((int(-1 if step is None else step), {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class FinalValues(L.Callback):
    """Every rank's ``get_metrics_for_logging`` at the fit's end (a collective: every rank calls it)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.values = pl_module.data_metrics["train"].get_metrics_for_logging(prefix="train")


def fit(out: str, devices: int, name: str, max_epochs: int, ckpt: str | None) -> dict[str, Any]:
    """One fit of the recipe's model; returns (and saves under ``out``) this rank's final values and rows."""
    model_class = recipe(name)

    class Model(model_class):  # type: ignore[misc, valid-type]
        def train_dataloader(self):
            return Shards(TRAIN, "train")

        def val_dataloader(self):
            return Shards(VAL, "val")

    final, recorder = FinalValues(), Recorder()
    callbacks: list[L.Callback] = [final, ModelCheckpoint(dirpath=out, filename="{epoch}", save_top_k=-1)]
    if name == "callback":
        callbacks.append(AggregatorCheckpoint("data_metrics"))
    trainer = L.Trainer(
        strategy="ddp" if devices > 1 else "auto",
        devices=devices,
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=recorder,
        log_every_n_steps=1,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and the like
        trainer.fit(Model(), ckpt_path=ckpt)
    record = {"values": final.values, "rows": recorder.rows, "world": trainer.world_size}
    torch.save(record, os.path.join(out, f"{name}-{max_epochs}-rank{trainer.global_rank}.pt"))
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipe", default="callback", choices=("callback", "hooks", "none"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    fit(args.out, 2, args.recipe, 1, None)
    fit(args.out, 2, args.recipe, 2, os.path.join(args.out, "epoch=0.ckpt"))


if __name__ == "__main__":
    main()
