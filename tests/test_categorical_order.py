"""``CategoricalCount``'s category order after ``merge_state`` and a sync: one process's over the records.

The order is defined (docs/aggregation.md): first seen in this metric, then the incoming categories
in their first-seen order, which is one process's order over this metric's records followed by the
incoming ones; a sync lays out the ranks' categories in rank order, so every rank logs the same key
order, that of one process over rank 0's records then rank 1's. The reference is a plain Python dict
built over the records (insertion order, counts by ``+= 1``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import pytest

from torchmetrics_ext.aggregation import AggregationType, CategoricalCount, Metric, MetricsAggregator

SEEDS = range(int(os.environ.get("TMX_CATEGORY_ORDER_SEEDS", "40")))


def _reference(*parts: Sequence[Any]) -> dict[Any, float]:
    counts: dict[Any, float] = {}
    for part in parts:
        for category in part:
            counts[category] = counts.get(category, 0.0) + 1.0
    return counts


def _records(rng: random.Random, n: int) -> list[Any]:
    pool = ["a", "b", "code", "math", 3, 1, "1", 10, -2]
    return [rng.choice(pool) for _ in range(n)]


def _counted(metric: CategoricalCount) -> list[tuple[Any, float]]:
    return [(k, v.item()) for k, v in metric.compute().items()]


def test_merge_state_keeps_this_metric_s_order_then_the_incoming_one():
    mine, theirs = CategoricalCount(), CategoricalCount()
    mine.update(["b", 3, "b"])
    theirs.update(["a", "b"])
    mine.merge_state(theirs)
    assert _counted(mine) == list(_reference(["b", 3, "b"], ["a", "b"]).items())  # b, 3, a


@pytest.mark.parametrize("seed", SEEDS)
def test_merge_state_equals_one_process_over_the_concatenated_records(seed):
    rng = random.Random(seed)
    parts = [_records(rng, rng.randint(0, 12)) for _ in range(rng.randint(2, 4))]
    batches = [[part[i : i + 3] for i in range(0, len(part), 3)] for part in parts]
    metrics = []
    for part_batches in batches:
        metric = CategoricalCount()
        for batch in part_batches:
            metric.update(batch)
        metrics.append(metric)
    merged = metrics[0]
    for other in metrics[1:]:
        merged.merge_state(other)
    assert _counted(merged) == list(_reference(*parts).items()), parts
    assert merged.categories == list(_reference(*parts))


def test_merge_state_leaves_the_incoming_metric_and_a_shared_counts_tensor_alone():
    mine, theirs = CategoricalCount(), CategoricalCount()
    mine.update(["x", "y"])
    theirs.update(["y", "z"])
    held = mine.counts
    before = held.clone()
    mine.merge_state(theirs)
    assert held.tolist() == before.tolist()  # a new tensor: a compute group's member sharing it keeps its counts
    assert _counted(theirs) == list(_reference(["y", "z"]).items())


def _ddp_order(rank: int, world_size: int, parts: list[list[Any]]) -> tuple[list, list]:
    metric = CategoricalCount()
    if parts[rank]:
        metric.update(parts[rank])
    aggregator = MetricsAggregator()
    aggregator.update([Metric("ds", "src", c, AggregationType.CATEGORICAL_COUNT) for c in parts[rank]])
    logged = aggregator.get_metrics_for_logging(prefix="train")
    return _counted(metric), list(logged.items())


@pytest.mark.ddp
def test_a_sync_orders_the_categories_alike_on_every_rank_as_one_process(ddp_pool):
    rng = random.Random(7)
    cases = [[["b", 3, "b"], ["a", "b"]], [[], ["z", 1, "1"]], [["m"], []]]
    cases += [[_records(rng, 9), _records(rng, 5)] for _ in range(3)]
    for parts in cases:
        expected = _reference(*parts)
        results = ddp_pool.run(_ddp_order, parts)
        for counted, logged in results:
            assert counted == list(expected.items()), parts
            # an int whose text is also a str category is logged with "(int)" (docs/aggregation.md)
            keys = [
                f"train_ds/src_count_{c}{'(int)' if isinstance(c, int) and str(c) in expected else ''}"
                for c in expected
            ]
            assert logged == list(zip(keys, expected.values(), strict=True)), (parts, logged)
        assert results[0] == results[1]
