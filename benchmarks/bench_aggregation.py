"""MetricsAggregator vs a plain-Python dict/deque aggregator of torchtune's design.

Workload: 1M records in batches of 1,000 over 4 datasets x 5 aggregation types (SUM, MEAN, MAX,
DISTRIBUTION, CATEGORICAL_COUNT with 5 categories), i.e. 60 logged keys. Measures records/s of
``update`` and the latency of ``get_metrics_for_logging`` (after each of 50 further batches, so
no cached value is reused), single process, one thread. The contenders take turns chunk by
chunk (50 batches, then one logging call each), so a busy machine slows them alike; the best
chunk and the median chunk are reported.

    python benchmarks/bench_aggregation.py            # 1M records
    python benchmarks/bench_aggregation.py --quick    # 100k records
    # before/after: also run another checkout's MetricsAggregator (e.g. `git worktree add /tmp/base main`)
    python benchmarks/bench_aggregation.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from _baseline import load_checkout

import torchmetrics_ext.aggregation as tmx_aggregation
from torchmetrics_ext.aggregation import AggregationType, Metric

A = AggregationType
DATASETS = ("alpaca", "c4", "code", "math")
CATEGORIES = ("web", "books", "wiki", "forum", "news")


# ----------------------------------------------------------------------------- the baseline
# torchtune's design (data/metrics/_metric_aggregator.py, _metric_agg_handlers.py), rewritten here:
# one mutable state object per (dataset, name), a handler object per aggregation type, and per
# record a type-consistency check, a handler lookup and a handler.update call. DISTRIBUTION keeps
# the last 1,000 values in a deque and computes its statistics with torch at logging time.


@dataclass
class State:
    dataset_name: str
    metric_name: str
    value: Any
    agg_type: AggregationType
    metadata: dict[str, Any] = field(default_factory=dict)


class Handler:
    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, 0.0, agg_type)

    def update(self, state: State, record: Metric) -> None:
        raise NotImplementedError

    def finalize(self, state: State) -> list[State]:
        return [state]


def _check_number(record: Metric) -> None:
    if not isinstance(record.value, (int, float)):
        raise ValueError(f"expected a number, got {type(record.value)}")


class SumHandler(Handler):
    def update(self, state: State, record: Metric) -> None:
        _check_number(record)
        state.value += record.value


class MeanHandler(Handler):
    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, 0.0, agg_type, {"sum": 0.0, "count": 0})

    def update(self, state: State, record: Metric) -> None:
        state.metadata["sum"] += record.value
        state.metadata["count"] += 1

    def finalize(self, state: State) -> list[State]:
        count = state.metadata["count"]
        state.value = state.metadata["sum"] / count if count else 0.0
        return [state]


class MaxHandler(Handler):
    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, float("-inf"), agg_type)

    def update(self, state: State, record: Metric) -> None:
        _check_number(record)
        state.value = max(state.value, record.value)


class MinHandler(Handler):
    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, float("inf"), agg_type)

    def update(self, state: State, record: Metric) -> None:
        _check_number(record)
        state.value = min(state.value, record.value)


class DistributionHandler(Handler):
    def __init__(self, window: int = 1000) -> None:
        self.window = window

    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, 0.0, agg_type, {"values": deque(maxlen=self.window)})

    def update(self, state: State, record: Metric) -> None:
        state.metadata["values"].append(record.value)

    def finalize(self, state: State) -> list[State]:
        values = torch.tensor(list(state.metadata["values"]), dtype=torch.float64)
        if values.numel() == 0:
            return []
        p05, p50, p95 = torch.quantile(values, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
        stats = {
            "mean": values.mean().item(),
            "min": values.min().item(),
            "max": values.max().item(),
            "p05": p05,
            "p50": p50,
            "p95": p95,
        }
        if values.numel() > 1:
            stats["std"] = values.std().item()
        return [
            State(state.dataset_name, f"{state.metric_name}_stat_{k}", v, AggregationType.MEAN)
            for k, v in stats.items()
        ]


class CategoricalHandler(Handler):
    def init(self, dataset_name: str, metric_name: str, agg_type: AggregationType) -> State:
        return State(dataset_name, metric_name, 0.0, agg_type, {"counts": Counter()})

    def update(self, state: State, record: Metric) -> None:
        state.metadata["counts"][record.value] += 1

    def finalize(self, state: State) -> list[State]:
        return [
            State(state.dataset_name, f"{state.metric_name}_count_{c}", float(n), AggregationType.SUM)
            for c, n in state.metadata["counts"].items()
        ]


class DictDequeAggregator:
    def __init__(self, window: int = 1000) -> None:
        self.states: dict[tuple[str, str], State] = {}
        self.agg_types: dict[tuple[str, str], AggregationType] = {}
        self.handlers: dict[AggregationType, Handler] = {
            A.SUM: SumHandler(),
            A.MEAN: MeanHandler(),
            A.MAX: MaxHandler(),
            A.MIN: MinHandler(),
            A.DISTRIBUTION: DistributionHandler(window),
            A.CATEGORICAL_COUNT: CategoricalHandler(),
        }

    def _check_consistency(self, dataset_name: str, name: str, agg_type: AggregationType) -> None:
        key = (dataset_name, name)
        known = self.agg_types.get(key)
        if known is None:
            self.agg_types[key] = agg_type
        elif known != agg_type:
            raise ValueError(f"{key} is {known}, not {agg_type}")

    def update(self, records: list[Metric]) -> None:
        for record in records:
            self._check_consistency(record.dataset_name, record.name, record.agg_type)
            key = (record.dataset_name, record.name)
            handler = self.handlers.get(record.agg_type)
            if handler is None:
                raise ValueError(f"no handler for {record.agg_type}")
            if key not in self.states:
                self.states[key] = handler.init(record.dataset_name, record.name, record.agg_type)
            handler.update(self.states[key], record)

    def get_metrics_for_logging(self, prefix: str = "train") -> dict[str, float]:
        results: list[State] = []
        for state in self.states.values():
            for result in self.handlers[state.agg_type].finalize(state):
                self._check_consistency(result.dataset_name, result.metric_name, result.agg_type)
                results.append(result)
        return {f"{prefix}_{r.dataset_name}/{r.metric_name}": float(r.value) for r in results}


# ----------------------------------------------------------------------------- workload


def make_batches(num_distinct: int, batch_size: int, seed: int = 0, types: ModuleType = tmx_aggregation) -> list:
    """Distinct batches of records (cycled to reach the record count; records are immutable).

    ``types`` provides ``Metric`` and ``AggregationType`` (a baseline checkout has its own).
    """
    Metric, A = types.Metric, types.AggregationType
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_distinct):
        ds = rng.integers(0, len(DATASETS), size=batch_size)
        kind = rng.integers(0, 5, size=batch_size)
        length = rng.integers(1, 8192, size=batch_size)
        loss = rng.normal(2.0, 0.5, size=batch_size)
        cat = rng.integers(0, len(CATEGORIES), size=batch_size)
        batch = []
        for d, k, n, lo, c in zip(
            ds.tolist(), kind.tolist(), length.tolist(), loss.tolist(), cat.tolist(), strict=True
        ):
            name = DATASETS[d]
            if k == 0:
                batch.append(Metric(name, "tokens_seen", n, A.SUM))
            elif k == 1:
                batch.append(Metric(name, "loss", lo, A.MEAN))
            elif k == 2:
                batch.append(Metric(name, "max_seq_len", n, A.MAX))
            elif k == 3:
                batch.append(Metric(name, "seq_len", n, A.DISTRIBUTION))
            else:
                batch.append(Metric(name, "source", CATEGORIES[c], A.CATEGORICAL_COUNT))
        batches.append(batch)
    return batches


def load_baseline(checkout: Path) -> ModuleType:
    """``torchmetrics_ext.aggregation`` of another checkout, imported as ``tmx_baseline.aggregation``."""
    return load_checkout(checkout, "aggregation")


@dataclass
class Contender:
    name: str
    aggregator: Any
    batches: list
    update_s: list[float] = field(default_factory=list)  # per batch, one entry per turn
    log_s: list[float] = field(default_factory=list)
    turn_s: list[float] = field(default_factory=list)  # a turn's updates and its logging call
    relog_s: list[float] = field(default_factory=list)  # an immediate second logging call
    keys: int = 0


def measure(contenders: list[Contender], num_batches: int, chunk: int) -> None:
    """Interleaved: each contender updates ``chunk`` batches, then logs (twice), in turn (order rotates)."""
    for c in contenders:  # warm-up (creates the keys)
        for batch in c.batches[:2]:
            c.aggregator.update(batch)
        c.aggregator.get_metrics_for_logging()
    for turn, start in enumerate(range(0, num_batches, chunk)):
        stop = min(start + chunk, num_batches)
        for c in contenders[turn % len(contenders) :] + contenders[: turn % len(contenders)]:
            t0 = time.perf_counter()
            for i in range(start, stop):
                c.aggregator.update(c.batches[i % len(c.batches)])
            t1 = time.perf_counter()
            out = c.aggregator.get_metrics_for_logging()
            t2 = time.perf_counter()
            c.aggregator.get_metrics_for_logging()
            t3 = time.perf_counter()
            c.update_s.append((t1 - t0) / (stop - start))
            c.log_s.append(t2 - t1)
            c.turn_s.append(t2 - t0)
            c.relog_s.append(t3 - t2)
            c.keys = len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k records instead of 1M")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=50, help="batches per turn (one logging call per turn)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout whose MetricsAggregator to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    total = args.records or (100_000 if args.quick else 1_000_000)
    num_batches = total // args.batch_size
    distinct = min(50, num_batches)
    batches = make_batches(distinct, args.batch_size)

    factories: list[tuple[str, Callable[[], Any], list]] = [
        ("torchtune-style dict/deque", DictDequeAggregator, batches),
        ("MetricsAggregator", tmx_aggregation.MetricsAggregator, batches),
    ]
    if args.baseline is not None:
        base = load_baseline(args.baseline.resolve())
        factories.append(
            (
                "MetricsAggregator (baseline)",
                base.MetricsAggregator,
                make_batches(distinct, args.batch_size, types=base),
            )
        )
    contenders = [Contender(name, factory(), b) for name, factory, b in factories]
    measure(contenders, num_batches, args.chunk)

    def rate(seconds_per_batch: float) -> float:
        return args.batch_size / seconds_per_batch

    for c in contenders:
        print(
            f"{c.name:30s} update: {rate(min(c.update_s)):>10,.0f} records/s best "
            f"({rate(statistics.median(c.update_s)):>10,.0f} median)   get_metrics_for_logging: "
            f"{1e3 * min(c.log_s):6.2f} ms best ({1e3 * statistics.median(c.log_s):6.2f} median, {c.keys} keys)"
        )
    print(
        f"\n{num_batches * args.batch_size:,} records in batches of {args.batch_size:,}, "
        f"{len(DATASETS)} datasets x 5 types, torch {torch.__version__}, 1 thread, "
        f"{len(contenders[0].update_s)} interleaved turns of {args.chunk} batches"
    )
    base, ours = contenders[0], contenders[1]
    for label, pick in (("best", min), ("median", statistics.median)):
        print(
            f"{label:6s} update throughput ratio (ours / dict-deque): "
            f"{pick(base.update_s) / pick(ours.update_s):.2f}x   "
            f"logging latency ratio (dict-deque / ours): {pick(base.log_s) / pick(ours.log_s):.2f}x"
        )
    if args.baseline is not None:
        # A turn is what a training loop sees: `chunk` updates and one logging call. Glibc defers
        # work on freed small blocks to the next allocation of >= 1 kB, so where that work lands
        # (update or the first logging call after a stretch of updates) depends on allocation
        # sizes; the turn counts it wherever it lands.
        before = contenders[2]
        for label, pick in (("best", min), ("median", statistics.median)):
            print(
                f"{label:6s} this checkout vs baseline: update {pick(before.update_s) / pick(ours.update_s):.3f}x "
                f"throughput, logging {pick(before.log_s) / pick(ours.log_s):.3f}x faster "
                f"(again at once: {pick(before.relog_s) / pick(ours.relog_s):.3f}x), "
                f"whole turn {pick(before.turn_s) / pick(ours.turn_s):.3f}x faster"
            )


if __name__ == "__main__":
    main()
