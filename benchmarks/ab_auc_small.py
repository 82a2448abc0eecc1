"""Fixed cost of the exact AUC family's ``compute`` and ``forward`` at small sizes: this checkout against another's.

Per-call thread CPU time, one thread, of ``compute()`` (the value cache and the shared-statistics
cache of AUC/AUPRC emptied before each call, so every call computes) and of ``forward``
(``metric(...)``: the batch's value, which is the batch's ``compute``, plus the accumulation) for
exact ``AUC``, ``AUPRC`` (weighted and not), ``AUC(num_tasks=3)``, ``GroupedAUC`` (groups of 4
rows), ``RegressionAUC`` and ``XAUC`` at 1, 8, 16, 256 and 8,192 samples. The two versions take
turns round by round (the order alternating) in one process; the best round of each side is
reported with their ratio (this checkout / the other; below 1 is faster) and the median of the
per-round ratios (the machine is shared: a descheduled round moves one side's best round only).

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_auc_small.py /tmp/base
    python benchmarks/ab_auc_small.py /tmp/base --sizes 8 --cases AUC XAUC --calls compute
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _baseline import alternate, load_checkout

import torchmetrics_ext as new

# name: (factory(package), inputs(n, generator) -> update arguments)
Inputs = Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]


def _binary(weighted: bool, tasks: int = 1) -> Inputs:
    def make(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        shape = (n,) if tasks == 1 else (tasks, n)
        p = torch.rand(shape, generator=g)
        t = (torch.rand(shape, generator=g) < p).float()
        return (p, t, torch.rand(shape, generator=g) + 0.1) if weighted else (p, t)

    return make


def _grouped(weighted: bool) -> Inputs:
    def make(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        p, t = _binary(False)(n, g)
        groups = torch.arange(n) // 4
        return (p, t, groups, torch.rand(n, generator=g) + 0.1) if weighted else (p, t, groups)

    return make


def _real(weighted: bool) -> Inputs:
    def make(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        p, y = torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g).float()
        return (p, y, torch.rand(n, generator=g) + 0.1) if weighted else (p, y)

    return make


CASES: dict[str, tuple[Callable[[ModuleType], Any], Inputs]] = {
    "AUC": (lambda m: m.AUC(), _binary(False)),
    "AUC weighted": (lambda m: m.AUC(), _binary(True)),
    "AUPRC": (lambda m: m.AUPRC(), _binary(False)),
    "AUPRC weighted": (lambda m: m.AUPRC(), _binary(True)),
    "AUC(num_tasks=3)": (lambda m: m.AUC(num_tasks=3), _binary(False, 3)),
    "AUC(num_tasks=3) weighted": (lambda m: m.AUC(num_tasks=3), _binary(True, 3)),
    "GroupedAUC": (lambda m: m.GroupedAUC(), _grouped(False)),
    "GroupedAUC weighted": (lambda m: m.GroupedAUC(), _grouped(True)),
    "RegressionAUC": (lambda m: m.RegressionAUC(), _real(False)),
    "RegressionAUC weighted": (lambda m: m.RegressionAUC(), _real(True)),
    "XAUC": (lambda m: m.XAUC(), _real(False)),
    "XAUC weighted": (lambda m: m.XAUC(), _real(True)),
}


def per_call(
    pkg: ModuleType, make: Callable[[ModuleType], Any], data: list[tuple[torch.Tensor, ...]], call: str, reps: int
) -> float:
    """Thread CPU µs per ``compute`` (of the first batch's states) or ``forward`` (over the batches)."""
    metric = make(pkg)
    if call == "compute":
        metric.update(*data[0])
        shared = pkg.metrics.auc.binary._LAST_EXACT
        metric.compute()
        start = time.thread_time()
        for _ in range(reps):
            metric._computed = None
            shared.clear()
            metric.compute()
        return (time.thread_time() - start) / reps * 1e6
    metric(*data[0])
    start = time.thread_time()
    for i in range(reps):
        metric(*data[i % len(data)])
    return (time.thread_time() - start) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a directory holding another checkout's torchmetrics_ext")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 16, 256, 8192])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="a subset of the metrics")
    parser.add_argument("--calls", nargs="+", default=["compute", "forward"], choices=["compute", "forward"])
    args = parser.parse_args()
    old = load_checkout(args.baseline)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # one sample: undefined values warn on every call
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        for name in args.cases:
            make, inputs = CASES[name]
            data = [inputs(n, g) for _ in range(4)]
            reps = 200 if n <= 256 else 20
            for call in args.calls:
                time_one = functools.partial(per_call, make=make, data=data, call=call, reps=reps)
                result = alternate(args.rounds, time_one, new, old)
                print(f"{call:7s} N={n:<5d} {name:26s} {result}", flush=True)


if __name__ == "__main__":
    main()
