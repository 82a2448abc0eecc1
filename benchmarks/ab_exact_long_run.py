"""A long run of exact AUC updates, then one ``compute``: this checkout against another's package.

``ab_update_overhead.py`` times 51 updates per metric, too few for the list states' chunk joins
(every 64 updates) to show. Here ``--updates`` updates of ``--sizes`` samples (int64 labels, one
task, validated) go into one fresh ``AUC()``, then ``compute``; thread CPU time, one thread, the
two versions taking turns round by round (order alternating); prints the best round of each, their
ratio (this / other; below 1 is faster), and checks that both computed the same value exactly.

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_exact_long_run.py /tmp/base
    python benchmarks/ab_exact_long_run.py /tmp/base --sizes 16 --updates 20000
    python benchmarks/ab_exact_long_run.py /tmp/base --pattern 62x50 1x32768 --updates 6300

``--pattern COUNTxSIZE ...`` cycles through batch sizes instead (62 updates of 50 samples, then one
of 32,768, ...): mixed sizes are where the list states' joins matter most. It also prints the
number of chunks each list state holds at the end, and the time of a ``state_dict`` (the metric
made ``persistent``) pickled.
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path
from types import ModuleType

import torch
from _baseline import load_checkout

import torchmetrics_ext as new


def run(pkg: ModuleType, sizes: list[int], updates: int) -> tuple[float, float, float, int, float]:
    """µs per update, ms of the compute, the value, the chunks per list state and ms of a pickled ``state_dict``.

    Update ``i`` takes ``sizes[i % len(sizes)]`` samples (8 batches of each size, in turn).
    """
    g = torch.Generator().manual_seed(0)
    made: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for n in sorted(set(sizes)):
        made[n] = []
        for _ in range(8):
            p = torch.rand(n, generator=g)
            made[n].append((p, (torch.rand(n, generator=g) < p).long()))
    data = [made[n][i % 8] for i, n in enumerate(sizes)]
    metric = pkg.AUC()
    metric.persistent(True)
    start = time.thread_time()
    for i in range(updates):
        metric.update(*data[i % len(data)])
    update = (time.thread_time() - start) / updates * 1e6
    chunks = max(len(v) for v in vars(metric).values() if isinstance(v, list) and v and isinstance(v[0], torch.Tensor))
    start = time.thread_time()
    pickle.dumps(metric.state_dict())
    saved = (time.thread_time() - start) * 1e3
    start = time.thread_time()
    value = float(metric.compute())
    return update, (time.thread_time() - start) * 1e3, value, chunks, saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a directory holding another checkout's torchmetrics_ext")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--updates", type=int, default=0, help="updates per run (default: 8M samples' worth)")
    parser.add_argument(
        "--pattern", nargs="+", default=None, metavar="COUNTxSIZE", help="cycle through sizes: 62x50 1x32768"
    )
    args = parser.parse_args()
    old = load_checkout(args.baseline)
    torch.set_num_threads(1)
    runs: list[tuple[str, list[int]]] = [(f"N={n:<6d}", [n]) for n in args.sizes]
    if args.pattern:
        cycle = [int(size) for part in args.pattern for count, size in [part.split("x")] for _ in range(int(count))]
        runs = [(" ".join(args.pattern), cycle)]
    for label, sizes in runs:
        updates = args.updates or max(1, (1 << 23) * len(sizes) // sum(sizes))
        best: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for side, pkg in [("new", new), ("old", old)] if r % 2 else [("old", old), ("new", new)]:
                update, compute, value, chunks, saved = run(pkg, sizes, updates)
                kept = best.setdefault(side, [float("inf"), float("inf"), value, chunks, float("inf")])
                kept[0], kept[1], kept[4] = min(kept[0], update), min(kept[1], compute), min(kept[4], saved)
                assert kept[2] == value, "the two versions disagree"
        this, other = best["new"], best["old"]
        print(
            f"AUC {label} x{updates:<6d} update this {this[0]:6.1f} us other {other[0]:6.1f} us"
            f" ({this[0] / other[0]:.2f}x); compute this {this[1]:5.0f} ms other {other[1]:5.0f} ms"
            f" ({this[1] / other[1]:.2f}x); chunks this {this[3]:.0f} other {other[3]:.0f};"
            f" state_dict pickled this {this[4]:5.0f} ms other {other[4]:5.0f} ms ({this[4] / other[4]:.2f}x);"
            " values equal (this == other, also across runs)",
            flush=True,
        )


if __name__ == "__main__":
    main()
