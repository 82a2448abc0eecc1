"""``RecMetricModule.compute()`` per call on cached values (no update between calls): this checkout against another.

What is left of a ``compute()`` once every metric has its value cached is the module's own work: the
sync bookkeeping and writing the keys. Tasks x metrics x parts keys per call (pointwise, AUC, a
ranking metric and a dict-valued ``RankingMetrics``, with a window), small batches.

    git -C /work/main archive main torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_module_compute.py /tmp/base --tasks 1 4 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import ModuleType

import torch
from _baseline import alternate, load_checkout

import torchmetrics_ext as tmx


def build(package: ModuleType, num_tasks: int) -> object:
    tasks = [package.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}", session_id_name="q") for i in range(num_tasks)]
    metrics = {
        "ne": "ne",
        "ctr": "ctr",
        "calibration": "calibration",
        "auc": "auc",
        "ndcg@10": "ndcg@10",
        "rm": package.RankingMetrics(ks=[5], metrics=["mrr", "hit_rate"]),
    }
    module = package.RecMetricModule(tasks, metrics, window_size=1000, throughput=False)
    gen = torch.Generator().manual_seed(0)
    step = {"q": torch.arange(256) // 8}
    for i in range(num_tasks):
        step[f"p{i}"] = torch.rand(256, generator=gen)
        step[f"y{i}"] = (torch.rand(256, generator=gen) < step[f"p{i}"]).float()
    module.update(step)
    module.compute()  # every value cached from here on
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout's directory holding torchmetrics_ext")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = load_checkout(args.baseline)
    for num_tasks in args.tasks:
        modules = {id(tmx): build(tmx, num_tasks), id(old): build(old, num_tasks)}

        def time_one(package: ModuleType, modules: dict = modules) -> float:
            module = modules[id(package)]
            begin = time.perf_counter()
            for _ in range(args.reps):
                module.compute()  # type: ignore[attr-defined]
            return 1e6 * (time.perf_counter() - begin) / args.reps

        print(f"tasks {num_tasks:3d}: {alternate(args.rounds, time_one, tmx, old)}")


if __name__ == "__main__":
    main()
