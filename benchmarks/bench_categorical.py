"""``CategoricalCount`` with many categories: the cost of each operation at ``--categories`` distinct ones.

A first update bringing every category, then ``forward`` and ``update`` of a 2-element batch of known
categories, ``copy.deepcopy`` and ``pickle.dumps``, ``compute`` (after a 2-element update, so not a
cached value), ``deepcopy`` and ``pickle.dumps`` of a metric right after its ``compute`` (carrying its
cached value, if it does), and a ``MetricsAggregator``'s ``get_metrics_for_logging`` of one
CATEGORICAL_COUNT metric with every category; best of ``--repeats``, one thread, milliseconds.
With ``--baseline DIR`` another checkout's metric runs the same operations, the two sides taking
turns operation by operation (so a change of machine load hits both). ``--unvalidated`` times
``CategoricalCount(validate_args=False)`` (also as the aggregator's handler).

    python benchmarks/bench_categorical.py
    python benchmarks/bench_categorical.py --baseline /tmp/base --categories 100000
    python benchmarks/bench_categorical.py --baseline /tmp/base --categories 100 --unvalidated
"""

from __future__ import annotations

import argparse
import copy
import pickle
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _baseline import load_checkout

from torchmetrics_ext import aggregation


def best_ms(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def operations(module: Any, categories: list[str], validate_args: bool = True) -> dict[str, Callable[[], Any]]:
    """The timed operations on a ``CategoricalCount`` of ``module`` (an ``aggregation``) that saw every category."""
    cls = partial(module.CategoricalCount, validate_args=validate_args)
    metric, computed = cls(), cls()
    metric.update(categories)
    computed.update(categories)
    computed.compute()
    aggregator = module.MetricsAggregator()
    aggregator.register_handler(module.AggregationType.CATEGORICAL_COUNT, cls)
    aggregator.update([module.Metric("d", "c", c, module.AggregationType.CATEGORICAL_COUNT) for c in categories])

    def compute() -> Any:
        metric.update(categories[:2])  # a value not cached yet
        return metric.compute()

    return {
        f"first update ({len(categories):,} new categories)": lambda: cls().update(categories),
        "forward of a 2-element batch": lambda: metric(categories[:2]),
        "update of a 2-element batch": lambda: metric.update(categories[:2]),
        "copy.deepcopy": lambda: copy.deepcopy(metric),
        "pickle.dumps": lambda: pickle.dumps(metric),
        "compute (after a 2-element update)": compute,
        "copy.deepcopy after compute": lambda: copy.deepcopy(computed),
        "pickle.dumps after compute": lambda: pickle.dumps(computed),
        "aggregator get_metrics_for_logging": aggregator.get_metrics_for_logging,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, run in turn with this one")
    parser.add_argument("--unvalidated", action="store_true", help="time CategoricalCount(validate_args=False)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    categories = [f"c{i}" for i in range(args.categories)]
    checked = not args.unvalidated
    sides = {"ours": operations(aggregation, categories, checked)}
    if args.baseline is not None:
        sides["baseline"] = operations(load_checkout(args.baseline, "aggregation"), categories, checked)
    print(f"{'ms, best of ' + str(args.repeats):44}" + "".join(f"{side:>12}" for side in sides))
    for name in sides["ours"]:
        times = [best_ms(ops[name], args.repeats) for ops in sides.values()]
        print(f"{name:44}" + "".join(f"{t:12.3f}" for t in times))


if __name__ == "__main__":
    main()
