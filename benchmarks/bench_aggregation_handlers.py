"""Per-update cost of ``MetricsAggregator.update`` with registered (non-default) handlers.

Workload: 20 keys of one handler kind, one record each per update (the shape of a training step's
records), 50 warm-up updates, then 7 rounds of 100 updates; the median µs per update is printed.
Kinds: TorchMetrics' ``MaxMetric`` and ``MinMetric``, ``Windowed(Sum(), 64)``, ``Windowed(Distribution(), 64)``.
Compare checkouts by running the script under each one's ``PYTHONPATH``:

    python benchmarks/bench_aggregation_handlers.py
    PYTHONPATH=/tmp/base python benchmarks/bench_aggregation_handlers.py   # another checkout's package
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torchmetrics.aggregation import MaxMetric, MinMetric

from torchmetrics_ext import Windowed
from torchmetrics_ext.aggregation import AggregationType, Distribution, Metric, MetricsAggregator, Sum

A = AggregationType
KINDS = ("maxmetric", "minmetric", "windowed_sum", "windowed_dist")


def make(kind: str, keys: int) -> tuple[MetricsAggregator, list[Metric]]:
    """An aggregator with one handler of ``kind`` registered, and one batch of records for ``keys`` keys."""
    aggregator = MetricsAggregator()
    factory: Any
    if kind == "maxmetric":
        agg_type, factory = A.MAX, MaxMetric
    elif kind == "minmetric":
        agg_type, factory = A.MIN, MinMetric
    elif kind == "windowed_sum":
        agg_type, factory = A.SUM, lambda: Windowed(Sum(), window_size=64)
    else:
        agg_type, factory = A.DISTRIBUTION, lambda: Windowed(Distribution(), window_size=64)
    aggregator.register_handler(agg_type, factory)
    return aggregator, [Metric("d", f"k{i}", float(i), agg_type) for i in range(keys)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help=f"any of {KINDS} (default: all)")
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    torch.set_num_threads(1)
    for kind in args.kinds or KINDS:
        aggregator, records = make(kind, args.keys)
        for _ in range(50):
            aggregator.update(records)
        rounds = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(100):
                aggregator.update(records)
            rounds.append((time.perf_counter() - start) / 100 * 1e6)
        print(f"{kind:14s} {statistics.median(rounds):8.0f} us/update ({args.keys} keys)")


if __name__ == "__main__":
    main()
