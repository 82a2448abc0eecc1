"""Memory and update time of windows over metrics with large states, small and large batches.

``Windowed(metric, 1M)`` over a binned AUC (10k bins), ``Reliability`` (1000 bins) and
``HindsightTargetPR`` (1000 thresholds), 3 tasks, fed ``--updates`` batches of each size: the
bytes the window's own bookkeeping holds afterwards (every tensor its ring or histogram window
keeps, each storage counted once) and the update's median thread time over the last 200 updates,
the best of ``--rounds`` runs. With ``--baseline DIR`` the same runs use another checkout's package
too, in this process, the sides taking turns run by run (so a change of machine load hits both).

    python benchmarks/bench_window_memory.py
    python benchmarks/bench_window_memory.py --baseline /tmp/base --updates 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _baseline import load_checkout

import torchmetrics_ext as tmx

WINDOW = 1_000_000
CASES: dict[str, Callable[[ModuleType], Any]] = {
    "binned AUC (10k bins)": lambda pkg: pkg.AUC(num_tasks=3, num_bins=10_000),
    "Reliability (1000 bins)": lambda pkg: pkg.Reliability(num_bins=1000, num_tasks=3),
    "HindsightTargetPR": lambda pkg: pkg.HindsightTargetPR(num_tasks=3),
}


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple, deque)):
        for item in value:
            yield from _tensors(item)


def held_bytes(windowed: Any) -> int:
    """Bytes of every storage the window's ring or histogram window holds (each counted once)."""
    seen: dict[int, int] = {}
    for part in ("_ring", "_hist"):
        keeper = windowed.__dict__.get(part)
        if keeper is None:
            continue
        for tensor in _tensors(vars(keeper)):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def run(package: ModuleType, case: str, batch: int, updates: int) -> tuple[int, float]:
    """(bytes held, median µs per update over the last 200) of one window fed ``updates`` batches."""
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.rand(3, batch, generator=gen, dtype=torch.float64), (torch.rand(3, batch, generator=gen) < 0.3).double())
        for _ in range(8)
    ]
    window = package.Windowed(CASES[case](package), WINDOW)
    times = []
    with torch.no_grad():
        for i in range(updates):
            start = time.thread_time()
            window.update(*batches[i % len(batches)])
            times.append(time.thread_time() - start)
    return held_bytes(window), 1e6 * statistics.median(times[-200:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout (its torchmetrics_ext)")
    parser.add_argument("--updates", type=int, default=4000, help="updates of each small batch size")
    parser.add_argument("--batches", type=int, nargs="*", default=[16, 64, 8192])
    parser.add_argument("--rounds", type=int, default=2, help="runs per side and case (the fastest is shown)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sides: list[tuple[str, ModuleType]] = [("this", tmx)]
    if args.baseline is not None:
        sides.append(("baseline", load_checkout(args.baseline)))
    print(f"3 tasks, window {WINDOW:,} samples; MB held by the window, µs per update (median of the last 200)")
    header = " | ".join(f"{side} MB | {side} µs" for side, _ in sides)
    print(f"| metric | batch | updates | {header} |")
    print("|---|---|---|" + "---|---|" * len(sides))
    for case in CASES:
        for batch in args.batches:
            updates = min(args.updates, max(300, 2 * WINDOW // batch))
            results: list[list[tuple[int, float]]] = [[] for _ in sides]
            for _ in range(args.rounds):
                for side, (_, package) in enumerate(sides):
                    results[side].append(run(package, case, batch, updates))
            cells = [f"{runs[0][0] / 2**20:.1f} | {min(m for _, m in runs):.0f}" for runs in results]
            print(f"| {case} | {batch} | {updates} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
