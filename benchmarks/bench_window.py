"""Cost of a window: ``Windowed(metric, 1M).update`` vs ``metric.update`` per step, side by side.

Run: ``python benchmarks/bench_window.py`` (``--steps 300`` for a quicker run).
3 tasks, batches of 8192 click-like samples, a 1M-sample window (about 122 updates in the ring,
so the run turns the window over several times, flips included), one thread. The two contenders
alternate step by step on the same batch (so both see the same machine load) and each step is
timed on its own; the table gives the median step of each and their ratio. A final check asserts
both computed the same lifetime value.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import torchmetrics_ext as tmx

FACTORIES: dict[str, Callable[[], tmx.TaskMetric]] = {
    "NE": lambda: tmx.NormalizedEntropy(num_tasks=3),
    "binned AUC (10k bins)": lambda: tmx.AUC(num_tasks=3, num_bins=10_000),
    "Calibration": lambda: tmx.Calibration(num_tasks=3),
    "exact AUC": lambda: tmx.AUC(num_tasks=3),
}


def timed(metric: tmx.TaskMetric | tmx.Windowed, batch: tuple[torch.Tensor, torch.Tensor], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    metric.update(*batch)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--window", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--metrics", nargs="*", default=list(FACTORIES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(32):
        preds = torch.distributions.Beta(1.0, 30.0).sample((3, args.batch))
        target = (torch.rand(3, args.batch, generator=gen) < preds).to(torch.int64)
        batches.append((preds.to(args.device), target.to(args.device)))

    cuda = args.device.startswith("cuda")
    print(f"batch {args.batch} x 3 tasks, window {args.window:,} samples, {args.steps} steps on {args.device}")
    print("| metric | `metric.update` µs/step (median) | `Windowed(metric).update` µs/step (median) | ratio |")
    print("|---|---|---|---|")
    for name in args.metrics:
        plain = FACTORIES[name]().to(args.device)
        windowed = tmx.Windowed(FACTORIES[name](), args.window).to(args.device)
        times: dict[str, list[float]] = {"plain": [], "windowed": []}
        for i in range(args.steps):
            batch = batches[i % len(batches)]
            times["plain"].append(timed(plain, batch, cuda))
            times["windowed"].append(timed(windowed, batch, cuda))
        torch.testing.assert_close(windowed.compute()["lifetime"], plain.compute())
        plain_us, windowed_us = (statistics.median(times[k]) * 1e6 for k in ("plain", "windowed"))
        print(f"| {name} | {plain_us:.1f} | {windowed_us:.1f} | {windowed_us / plain_us:.2f}x |")


if __name__ == "__main__":
    main()
