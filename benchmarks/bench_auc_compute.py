"""Two figures of docs/auc.md: many short tasks in one ``compute``, and AUC + AUPRC sharing one sort.

    python benchmarks/bench_auc_compute.py [--runs 5] [--samples 10000000]

1. ``AUC(num_tasks=5000)`` holding 20 samples per task against ``AUC()`` holding 100k samples:
   the many-task ``compute`` runs no Python loop over tasks, so it costs about what the same
   number of samples in one task costs. Fresh metrics each run (a ``compute`` reuses its sort).
2. ``AUC()`` and ``AUPRC()`` in one ``MetricCollection`` compute group hold the same chunks, and
   one sort gives both numerators: the pair's ``compute`` against the same pair in two groups
   (two sorts), one thread, ``--samples`` scores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx


def _compute_seconds(make: Callable[[], Metric | MetricCollection], preds: torch.Tensor, target: torch.Tensor) -> float:
    metric = make()
    metric.update(preds, target)
    start = time.perf_counter()
    metric.compute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="best of this many runs")
    parser.add_argument("--samples", type=int, default=10_000_000, help="scores of the AUC + AUPRC pair")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)

    def data(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.rand(*shape, generator=g)
        return scores, (torch.rand(*shape, generator=g) < scores).long()

    many, one = data(5000, 20), data(100_000)
    best_many = min(_compute_seconds(lambda: tmx.AUC(num_tasks=5000), *many) for _ in range(args.runs))
    best_one = min(_compute_seconds(tmx.AUC, *one) for _ in range(args.runs))
    print(f"threads {torch.get_num_threads()}: compute of 5,000 tasks x 20 samples {best_many * 1e3:.1f} ms, ")
    print(f"  of one task x 100,000 samples {best_one * 1e3:.1f} ms (ratio {best_many / best_one:.2f})")

    torch.set_num_threads(1)
    pair = data(args.samples)

    def collection(shared: bool) -> Callable[[], MetricCollection]:
        return lambda: MetricCollection({"auc": tmx.AUC(), "auprc": tmx.AUPRC()}, compute_groups=shared)

    runs = max(1, args.runs // 2)
    shared = min(_compute_seconds(collection(True), *pair) for _ in range(runs))
    apart = min(_compute_seconds(collection(False), *pair) for _ in range(runs))
    print(f"one thread, {args.samples:,} scores: AUC + AUPRC compute in one group {shared:.2f} s, ")
    print(f"  in two groups {apart:.2f} s (ratio {shared / apart:.2f})")


if __name__ == "__main__":
    main()
