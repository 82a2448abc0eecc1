"""NE over 10M samples in batches of 8192 on one thread: ours vs torcheval vs a hand-written loop.

Run: ``python benchmarks/bench_ne.py`` (``--samples 2000000`` for a quicker run). All contenders
see the same pre-generated batches in one process, interleaved over ``--repeats`` rounds; the
best round of each is reported, with ratios to the hand-written loop (the floor: the same float64
math with no validation and no TorchMetrics wrapper).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import torchmetrics_ext as tmx

ETA = 1e-12


def hand_loop(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """What a careful user writes by hand: float64 sums, one pass, no checks."""
    ce_sum = torch.zeros((), dtype=torch.float64)
    pos = torch.zeros((), dtype=torch.float64)
    total = 0
    for p, y in batches:
        y64 = y.to(torch.float64)
        ce_sum += F.binary_cross_entropy(p.to(torch.float64).clamp(ETA, 1 - ETA), y64, reduction="sum")
        pos += y64.sum()
        total += y.numel()
    base = pos.item() / total
    return ce_sum.item() / total / -(base * math.log(base) + (1 - base) * math.log(1 - base))


def ours(batches: list[tuple[torch.Tensor, torch.Tensor]], validate: bool = True) -> float:
    metric = tmx.NormalizedEntropy(validate_args=validate)
    for p, y in batches:
        metric.update(p, y)
    return metric.compute().item()


def torcheval_ne(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    from torcheval.metrics import BinaryNormalizedEntropy

    metric = BinaryNormalizedEntropy()
    for p, y in batches:
        metric.update(p, y.to(torch.float32))
    return metric.compute().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    preds = torch.distributions.Beta(1.0, 30.0).sample((args.samples,))  # click-like scores, mean ~3%
    target = (torch.rand(args.samples, generator=gen) < preds).to(torch.int64)
    batches = list(zip(preds.split(args.batch), target.split(args.batch)))

    contenders: dict[str, Callable[[], float]] = {
        "hand-written loop": lambda: hand_loop(batches),
        "torchmetrics_ext NE": lambda: ours(batches),
        "torchmetrics_ext NE (validate_args=False)": lambda: ours(batches, validate=False),
        "torcheval BinaryNormalizedEntropy": lambda: torcheval_ne(batches),
    }
    best: dict[str, float] = {name: math.inf for name in contenders}
    values: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            values[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)

    floor = best["hand-written loop"]
    print(f"NE over {args.samples:,} samples, batches of {args.batch}, 1 thread, best of {args.repeats}")
    print(f"{'contender':45s} {'seconds':>8s} {'us/batch':>9s} {'vs hand':>8s}  value")
    for name in contenders:
        print(
            f"{name:45s} {best[name]:8.3f} {best[name] / len(batches) * 1e6:9.1f} {best[name] / floor:7.2f}x"
            f"  {values[name]:.8f}"
        )
    ratio = best["torcheval BinaryNormalizedEntropy"] / best["torchmetrics_ext NE"]
    print(f"torchmetrics_ext NE is {ratio:.2f}x faster than torcheval")


if __name__ == "__main__":
    main()
