"""``MetricsAggregator.get_metrics_for_logging`` under DDP: latency and collectives per call.

Spawns ``--world`` gloo processes on this machine. Every rank holds the same keys: ``--datasets``
datasets x ``--names`` names x the six aggregation types (the default 4 x 3 x 6 = 72 keys;
CATEGORICAL_COUNT with categories of both ranks and of one rank only). Each round every contender
takes 20 batches of records and then logs once (the contenders take turns, the order rotating, so
a busy machine slows them alike); rank 0 reports the best and median logging latency over the
rounds and the collectives one call makes (``torch.distributed`` calls counted by wrapping the
functions, which still run; ``all_gather_object`` makes two all-gathers inside).

Contenders: this checkout's ``MetricsAggregator``; with ``--baseline DIR`` another checkout's;
and the design of torchtune's aggregator as its README describes it (``bench_aggregation.py``'s
dict/deque aggregator, each rank's finalized values exchanged with one ``all_gather_object`` and
reduced by type: sums added, maxima and minima taken, means and distribution statistics averaged
over ranks; a timing contender only, its averaged statistics are not the pooled ones).

    python benchmarks/bench_aggregation_ddp.py                          # 2 ranks, 72 keys
    python benchmarks/bench_aggregation_ddp.py --world 4 --names 10     # 240 keys
    python benchmarks/bench_aggregation_ddp.py --baseline /tmp/base     # another checkout beside it
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _baseline import load_checkout
from bench_aggregation import DictDequeAggregator

_COUNTED = ("all_gather", "all_gather_object", "barrier", "all_reduce", "broadcast", "reduce", "gather")


class TorchtuneDesign(DictDequeAggregator):
    """The dict/deque aggregator with torchtune's distributed step: one ``all_gather_object`` of finalized values."""

    def get_metrics_for_logging(self, prefix: str = "train") -> dict[str, float]:
        local = [(key, state.agg_type.name, state.value) for key, state in self._finalized().items()]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        merged: dict[str, tuple[str, list[float]]] = {}
        for entries in gathered:
            for key, agg, value in entries:
                merged.setdefault(key, (agg, []))[1].append(value)
        reduce = {"SUM": sum, "MAX": max, "MIN": min}
        return {
            f"{prefix}_{key}": float(reduce.get(agg, statistics.fmean)(values)) for key, (agg, values) in merged.items()
        }

    def _finalized(self) -> dict[str, Any]:
        out = {}
        for state in self.states.values():
            for result in self.handlers[state.agg_type].finalize(state):
                out[f"{result.dataset_name}/{result.metric_name}"] = result
        return out


def make_batches(types: Any, rank: int, datasets: int, names: int, rounds: int) -> list[list[Any]]:
    """``rounds`` x 20 batches of 60 records per key for this rank (one record per key and batch, three batches)."""
    Metric, A = types.Metric, types.AggregationType
    rng = np.random.default_rng([7, rank])
    batches = []
    for _ in range(rounds * 20):
        batch = []
        for d in range(datasets):
            for n in range(names):
                value = float(rng.integers(1, 4096))
                for agg in (A.SUM, A.MEAN, A.MAX, A.MIN, A.DISTRIBUTION):
                    batch.append(Metric(f"ds{d}", f"{agg.name.lower()}{n}", value, agg))
                category = ["web", "book", "wiki", f"rank{rank}"][int(rng.integers(0, 4))]
                batch.append(Metric(f"ds{d}", f"source{n}", category, A.CATEGORICAL_COUNT))
        batches.append(batch)
    return batches


def worker(rank: int, world: int, init: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    import torchmetrics_ext.aggregation as ours

    counts: collections.Counter[str] = collections.Counter()
    for name in _COUNTED:
        original = getattr(dist, name)

        def counted(*a: Any, _original: Any = original, _name: str = name, **k: Any) -> Any:
            counts[_name] += 1
            return _original(*a, **k)

        setattr(dist, name, counted)
    contenders: list[tuple[str, Any, list[list[Any]]]] = [
        ("torchtune design (one all_gather_object)", TorchtuneDesign(), make_batches(ours, rank, *args.shape)),
        ("MetricsAggregator", ours.MetricsAggregator(), make_batches(ours, rank, *args.shape)),
    ]
    if args.baseline is not None:
        base = load_checkout(args.baseline.resolve(), "aggregation")
        baseline_batches = make_batches(base, rank, *args.shape)
        contenders.append(("MetricsAggregator (baseline)", base.MetricsAggregator(), baseline_batches))
    latency: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    calls: dict[str, dict[str, int]] = {}
    keys: dict[str, int] = {}
    for turn in range(args.rounds):
        order = contenders[turn % len(contenders) :] + contenders[: turn % len(contenders)]
        for name, aggregator, batches in order:
            for batch in batches[turn * 20 : (turn + 1) * 20]:
                aggregator.update(batch)
            dist.barrier()
            counts.clear()
            start = time.perf_counter()
            out = aggregator.get_metrics_for_logging()
            latency[name].append(time.perf_counter() - start)
            calls[name] = {k: v for k, v in counts.items() if k != "barrier" or v}
            keys[name] = len(out)
    if rank == 0:
        print(f"{world} gloo ranks, {len(contenders[1][1]._keys)} keys, {args.rounds} rounds; ms per call")
        ours_best = min(latency["MetricsAggregator"][1:])
        for name, values in latency.items():
            best, median = min(values[1:]), statistics.median(values[1:])
            print(
                f"  {name:45s} best {best * 1e3:8.2f}  median {median * 1e3:8.2f}  "
                f"(ours / this {ours_best / best:5.2f}x)  logged {keys[name]:4d}  collectives {calls[name]}"
            )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--names", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout whose MetricsAggregator to run")
    args = parser.parse_args()
    args.shape = (args.datasets, args.names, args.rounds)
    init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
    mp.spawn(worker, args=(args.world, init, args), nprocs=args.world)


if __name__ == "__main__":
    main()
