"""``RecMetricModule.compute()`` called again with nothing new: the cached values, not a recomputation.

One task with AUC, NE, GAUC and NDCG@10 over ``--samples`` samples (updates of 100k rows: sessions
of 10 rows, users of 50), then three ``compute()`` calls in one process; with ``--baseline``, the
same for another checkout's package (imported beside this one, see ``_baseline.py``), in turn.

    python benchmarks/bench_module_compute.py
    python benchmarks/bench_module_compute.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import ModuleType

import torch
from _baseline import load_checkout

import torchmetrics_ext as tmx


def compute_times(package: ModuleType, samples: int, calls: int = 3) -> list[float]:
    """Seconds of each of ``calls`` consecutive ``compute()`` calls after the updates."""
    gen = torch.Generator().manual_seed(0)
    task = package.RecTaskInfo("click", "y", "p", session_id_name="q", group_id_name="u")
    module = package.RecMetricModule(
        [task], {"auc": "auc", "ne": "ne", "gauc": "gauc", "ndcg@10": "ndcg@10"}, throughput=False
    )
    step = 100_000
    for start in range(0, samples, step):
        p = torch.rand(step, generator=gen)
        y = (torch.rand(step, generator=gen) < p).float()
        rows = torch.arange(start, start + step)
        module.update({"p": p, "y": y, "q": rows // 10, "u": rows // 50})
    times = []
    for _ in range(calls):
        begin = time.perf_counter()
        module.compute()
        times.append(time.perf_counter() - begin)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=Path, help="another checkout, run beside this one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sides = [("ours", tmx)]
    if args.baseline is not None:
        sides.append(("baseline", load_checkout(args.baseline)))
    for name, package in sides:
        times = compute_times(package, args.samples)
        print(f"{name:9s} compute() x3: " + " / ".join(f"{1e3 * t:.1f} ms" for t in times))


if __name__ == "__main__":
    main()
