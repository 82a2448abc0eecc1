"""``trainer.validate`` over several dataloaders under ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``.

Started as a script by ``tests/test_lightning.py`` (Lightning's DDP launcher re-runs this file for
rank 1; ``--devices N`` for ``N`` ranks, as ``tests/test_lightning_world.py`` runs it). Each validation dataloader (``--sizes``: samples per dataloader, shared out by
:class:`UnpaddedDistributedSampler`, so ranks may have different numbers of batches, or none) feeds
:class:`RecMetricCallback`; every rank dumps what it fed per dataloader and what ``validate``
returned, so the test can recompute each dataloader's values in one process. ``--rank1-skips-last``:
rank 1's ``validation_step`` returns ``None`` (no outputs) at the last batch of every dataloader,
the batch after which each dataloader's values are computed (a collective). ``--unsized-limit K``:
every dataloader has no length (an iterable over the rank's batches) and ``limit_val_batches=K``,
which Lightning takes for each one's count although a rank may have fewer batches.
"""

from __future__ import annotations

import argparse
import os

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback, UnpaddedDistributedSampler

BATCH = 10


class Unsized(IterableDataset):
    """A dataloader's batches without a length."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self):
        yield from self.loader


class Model(L.LightningModule):
    def __init__(self, sizes: list[int], rank1_skips_last: bool = False, unsized: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 1)
        task = [tmx.RecTaskInfo("click", "label", "prob")]
        self.val_metrics = tmx.RecMetricModule(
            task, {"ctr": "ctr", "ne": "ne", "auc": "auc"}, prefix="val/", throughput=False
        )
        self.sizes = sizes
        self.rank1_skips_last = rank1_skips_last
        self.unsized = unsized
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a dataloader smaller than the ranks
        self.seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(sizes))}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        last = batch_idx + 1 == self.trainer.num_val_batches[dataloader_idx]
        if self.rank1_skips_last and self.global_rank == 1 and last:
            return None
        out = {"prob": torch.sigmoid(self.linear(x))[:, 0], "label": y}
        self.seen[dataloader_idx].append(torch.stack([out["prob"].double(), y.double()]))
        return out

    def val_dataloader(self):  # built here: the sampler reads the process group's rank and size
        loaders = []
        for i, n in enumerate(self.sizes):
            gen = torch.Generator().manual_seed(i)
            rate = 0.8 if i % 2 == 0 else 0.2  # dataloaders of different click rates
            data = TensorDataset(torch.randn(n, 2, generator=gen), (torch.rand(n, generator=gen) < rate).long())
            loaders.append(DataLoader(data, batch_size=BATCH, sampler=UnpaddedDistributedSampler(data, shuffle=False)))
        if self.unsized:
            return [DataLoader(Unsized(loader), batch_size=None) for loader in loaders]
        return loaders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", required=True, help="samples per validation dataloader, e.g. 101,30")
    parser.add_argument("--rank1-skips-last", action="store_true")
    parser.add_argument("--unsized-limit", type=int, default=None)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Model([int(n) for n in args.sizes.split(",")], args.rank1_skips_last, args.unsized_limit is not None)
    trainer = L.Trainer(
        strategy="ddp",
        devices=args.devices,
        accelerator="cpu",
        logger=False,
        callbacks=[RecMetricCallback(train=None)],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1.0 if args.unsized_limit is None else args.unsized_limit,
    )
    results = trainer.validate(model, verbose=False)
    torch.save({"seen": model.seen, "results": results}, os.path.join(args.out, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
