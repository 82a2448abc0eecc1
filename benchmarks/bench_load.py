"""Time ``load_state_dict`` of a windowed ``RecMetricModule`` and of windowed metrics, directly and through a parent.

A load is all or nothing: a refused load leaves every metric as it was. This measures what that
guarantee costs on a successful load (the usual one: a checkpoint restore), best of several runs:

    python benchmarks/bench_load.py [--runs 7] [--loads 200]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
from torch import nn

import torchmetrics_ext as tmx
from torchmetrics_ext.wrappers.windowed import Windowed

METRICS = [
    "ne", "log_loss", "calibration", "ctr", "accuracy", "weighted_precision",
    "weighted_recall", "mse", "mae", "label_average", "auc", "auprc",
]  # fmt: skip


def _module(tasks: int) -> tmx.RecMetricModule:
    names = [tmx.RecTaskInfo(f"t{i}", label_name=f"y{i}", prediction_name=f"p{i}") for i in range(tasks)]
    module = tmx.RecMetricModule(names, METRICS, window_size=1000, throughput=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        batch = {}
        for i in range(tasks):
            batch[f"p{i}"] = torch.rand(256, generator=gen, dtype=torch.float64)
            batch[f"y{i}"] = (torch.rand(256, generator=gen, dtype=torch.float64) < 0.3).double()
        module.update(batch)
    return module


def _windowed() -> Windowed:
    metric = Windowed(tmx.NormalizedEntropy(num_tasks=4), window_size=1000)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        preds = torch.rand(4, 256, generator=gen, dtype=torch.float64)
        metric.update(preds, (torch.rand(4, 256, generator=gen, dtype=torch.float64) < 0.3).long())
    return metric


class _Parent(nn.Module):
    """A user's model (a LightningModule's layout): no load guard of the package around its children."""

    def __init__(self, child: nn.Module) -> None:
        super().__init__()
        self.child = child


def _best_ms(load: Callable[[], object], runs: int, loads: int) -> float:
    """The fastest of ``runs`` runs, each the mean of ``loads`` loads, in milliseconds."""
    load()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(loads):
            load()
        best = min(best, (time.perf_counter() - start) / loads)
    return best * 1e3


def main() -> None:
    """Print the time of one load for each case."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--loads", type=int, default=200)
    args = parser.parse_args()
    module = _module(tasks=4)
    in_parent = _Parent(_module(tasks=4))
    windowed, windowed_parent = _windowed(), _Parent(_windowed())
    cases = {
        "RecMetricModule 4 tasks x 12 windowed metrics": (module, module.state_dict()),
        "  RecMetricModule through a plain nn.Module parent": (in_parent, in_parent.state_dict()),
        "Windowed(NE, 4 tasks), direct": (windowed, windowed.state_dict()),
        "  Windowed through a plain nn.Module parent": (windowed_parent, windowed_parent.state_dict()),
    }
    for name, (target, state) in cases.items():
        load = functools.partial(target.load_state_dict, state)
        print(f"{name:<50} {_best_ms(load, args.runs, args.loads):8.3f} ms")


if __name__ == "__main__":
    main()
