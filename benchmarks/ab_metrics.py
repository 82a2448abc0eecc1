"""Before/after of the AUC family and NE on the CPU in one process: this checkout against another's package.

Issue 14's condition "on the CPU nothing gets slower": 1M click-like samples (30% positives) in
batches of 8192, one thread; each case is ``update`` over every batch plus one ``compute``, run 7
rounds, the two versions taking turns (the order alternating), so a load change hits both alike.
Prints the best time of each version, the ratio of the best times and the median of the per-round
ratios (this checkout / the other; below 1 is faster). RegressionAUC and XAUC keep every sample and
compare all pairs at ``compute``, so they take the first 200k samples only. Reliability and
HindsightTargetPR run at their default and at a larger number of bins; NumMissingLabels on labels
with 10% missing. ``--only`` picks cases by name; ``--thread-time`` times with the thread's CPU
clock (steadier than wall time on a shared machine).

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_metrics.py /tmp/base
    python benchmarks/ab_metrics.py /tmp/base --thread-time --only reliability hindsight
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _baseline import load_checkout

import torchmetrics_ext as new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a directory holding another checkout's torchmetrics_ext")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", nargs="+", default=None, help="run the cases whose name holds one of these")
    parser.add_argument("--thread-time", action="store_true", help="time with the thread's CPU clock")
    args = parser.parse_args()
    clock = time.thread_time if args.thread_time else time.perf_counter
    # click labels independent of the scores: HindsightTargetPR's precision never reaches its target
    warnings.filterwarnings("ignore", category=new.UndefinedMetricWarning)
    old = load_checkout(args.baseline)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, b = 1_000_000, 8192
    p = torch.rand(n, generator=g)
    y = (torch.rand(n, generator=g) < 0.3).float()
    yr = torch.rand(n, generator=g) * 5
    groups = torch.randint(0, 20000, (n,), generator=g)
    ym = torch.where(torch.rand(n, generator=g) < 0.1, float("nan"), y)
    slices = [slice(i, min(i + b, n)) for i in range(0, n, b)]
    first = [s for s in slices if s.start < 200_000]
    cases: dict[str, tuple[Callable[[ModuleType], Any], Callable[[Any, slice], None], list[slice]]] = {
        "auc exact": (lambda m: m.AUC(), lambda m, s: m.update(p[s], y[s]), slices),
        "auc binned": (lambda m: m.AUC(num_bins=10000), lambda m, s: m.update(p[s], y[s]), slices),
        "auprc": (lambda m: m.AUPRC(), lambda m, s: m.update(p[s], y[s]), slices),
        "gauc": (lambda m: m.GroupedAUC(), lambda m, s: m.update(p[s], y[s], groups[s]), slices),
        "ne": (lambda m: m.NormalizedEntropy(), lambda m, s: m.update(p[s], y[s]), slices),
        "rauc 200k": (lambda m: m.RegressionAUC(), lambda m, s: m.update(p[s], yr[s]), first),
        "xauc 200k": (lambda m: m.XAUC(), lambda m, s: m.update(p[s], yr[s]), first),
        "reliability": (lambda m: m.Reliability(), lambda m, s: m.update(p[s], y[s]), slices),
        "reliability 1000": (lambda m: m.Reliability(num_bins=1000), lambda m, s: m.update(p[s], y[s]), slices),
        "hindsight": (lambda m: m.HindsightTargetPR(), lambda m, s: m.update(p[s], y[s]), slices),
        "hindsight 11": (lambda m: m.HindsightTargetPR(num_thresholds=11), lambda m, s: m.update(p[s], y[s]), slices),
        "num missing": (lambda m: m.NumMissingLabels(), lambda m, s: m.update(p[s], ym[s]), slices),
    }
    if args.only:
        cases = {name: case for name, case in cases.items() if any(word in name for word in args.only)}

    def run(
        pkg: ModuleType, make: Callable[[ModuleType], Any], update: Callable[[Any, slice], None], parts: list[slice]
    ) -> float:
        metric = make(pkg)
        start = clock()
        for part in parts:
            update(metric, part)
        metric.compute()
        return clock() - start

    for name, (make, update, parts) in cases.items():
        mine: list[float] = []
        theirs: list[float] = []
        for r in range(args.rounds):
            order = [(new, mine), (old, theirs)] if r % 2 else [(old, theirs), (new, mine)]
            for pkg, times in order:
                times.append(run(pkg, make, update, parts))
        ratios = sorted(a / b for a, b in zip(mine, theirs))
        print(
            f"{name:16s} this {min(mine) * 1e3:8.1f} ms  other {min(theirs) * 1e3:8.1f} ms  "
            f"best-ratio {min(mine) / min(theirs):.2f}x  median-ratio {ratios[len(ratios) // 2]:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
