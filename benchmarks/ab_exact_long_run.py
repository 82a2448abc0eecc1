"""A long run of exact AUC updates, then one ``compute``: this checkout against another's package.

``ab_update_overhead.py`` times 51 updates per metric, too few for the list states' chunk joins
(every 64 updates) to show. Here ``--updates`` updates of ``--sizes`` samples (int64 labels, one
task, validated) go into one fresh ``AUC()``, then ``compute``; thread CPU time, one thread, the
two versions taking turns round by round (order alternating); prints the best round of each, their
ratio (this / other; below 1 is faster), and checks that both computed the same value exactly.

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_exact_long_run.py /tmp/base
    python benchmarks/ab_exact_long_run.py /tmp/base --sizes 16 --updates 20000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import ModuleType

import torch
from _baseline import load_checkout

import torchmetrics_ext as new


def run(pkg: ModuleType, n: int, updates: int) -> tuple[float, float, float]:
    """µs per update, ms of the compute, and the value."""
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(8):
        p = torch.rand(n, generator=g)
        data.append((p, (torch.rand(n, generator=g) < p).long()))
    metric = pkg.AUC()
    start = time.thread_time()
    for i in range(updates):
        metric.update(*data[i % 8])
    update = (time.thread_time() - start) / updates * 1e6
    start = time.thread_time()
    value = float(metric.compute())
    return update, (time.thread_time() - start) * 1e3, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a directory holding another checkout's torchmetrics_ext")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--updates", type=int, default=0, help="updates per run (default: 8M samples' worth)")
    args = parser.parse_args()
    old = load_checkout(args.baseline)
    torch.set_num_threads(1)
    for n in args.sizes:
        updates = args.updates or max(1, (1 << 23) // n)
        best: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for side, pkg in [("new", new), ("old", old)] if r % 2 else [("old", old), ("new", new)]:
                update, compute, value = run(pkg, n, updates)
                kept = best.setdefault(side, [float("inf"), float("inf"), value])
                kept[0], kept[1] = min(kept[0], update), min(kept[1], compute)
                assert kept[2] == value, "the two versions disagree"
        this, other = best["new"], best["old"]
        print(
            f"AUC N={n:<6d} x{updates:<6d} update this {this[0]:6.1f} us other {other[0]:6.1f} us"
            f" ({this[0] / other[0]:.2f}x); compute this {this[1]:5.0f} ms other {other[1]:5.0f} ms"
            f" ({this[1] / other[1]:.2f}x); values equal (this == other, also across runs)",
            flush=True,
        )


if __name__ == "__main__":
    main()
