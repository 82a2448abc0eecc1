"""Every rank logs the same keys: ``Distribution``s of other percentiles on other ranks are refused (3 gloo ranks).

Before, the states of such metrics matched (the percentiles are no state), so the fused sync joined
them and every rank logged its own percentiles' keys of the pooled data: rank 0 ``..._stat_p95``,
rank 1 ``..._stat_p99.9``, silently. Lightning's ``sync_dist`` and torchtune's ``all_gather_object``
expect one dict on every rank, so the keys' exchange (the ``all_gather_object`` that already
carries each key's states) now also carries the percentiles each key's metric reports, and every
rank raises the same ``ValueError`` naming the metric, the ranks and their percentiles, before any
metric syncs. Nothing changes then: after a ``reset`` on every rank with the same handlers the group
logs again. The reference for the values logged where the percentiles agree is ``np.percentile``
(the documented linear rule) within the sketch's relative accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest

from tests.helpers.ddp import DDPPool
from torchmetrics_ext import Windowed
from torchmetrics_ext.aggregation import AggregationType, Distribution, Metric, MetricsAggregator

A = AggregationType
ALPHA = 0.01
OTHER = (50, 99.9)  # rank 1's percentiles in the mismatched scenarios

pytestmark = pytest.mark.ddp


@pytest.fixture(scope="module")
def pool3() -> Iterator[DDPPool]:
    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


def _values(rank: int) -> list[float]:
    return [float(v) for v in np.random.default_rng(rank).uniform(1.0, 100.0, 20 + 5 * rank)]


def _handler(scenario: str, rank: int) -> Any:
    """The DISTRIBUTION handler of ``rank`` in ``scenario`` (``None``: the default)."""
    if scenario == "same set, other order" and rank == 1:
        return partial(Distribution, percentiles=(95, 5.0, 50))
    if scenario == "windowed":
        percentiles = OTHER if rank == 1 else (5, 50, 95)
        return lambda: Windowed(Distribution(percentiles=percentiles), window_size=10)
    if rank == 1:
        return partial(Distribution, percentiles=OTHER)
    return None


def _scenario(rank: int, world: int, scenario: str) -> dict[str, Any]:
    aggregator = MetricsAggregator()
    handler = _handler(scenario, rank)
    if handler is not None:
        aggregator.register_handler(A.DISTRIBUTION, handler)
    aggregator.update([Metric("d", "ok", float(rank), A.MAX)])
    if not (scenario == "lacked" and rank == 1):  # rank 1 lacks the key: its handler makes the metric at the sync
        aggregator.update([Metric("d", "len", v, A.DISTRIBUTION) for v in _values(rank)])
    out: dict[str, Any] = {}
    try:
        out["logged"] = aggregator.get_metrics_for_logging()
    except ValueError as err:
        out["error"] = str(err)
        out["keys_after_error"] = sorted(aggregator._keys)
    aggregator.reset()  # on every rank; rank 1 then uses the others' handler: the group logs again
    if rank == 1:
        aggregator.register_handler(A.DISTRIBUTION, _handler(scenario, 0) or Distribution)
    aggregator.update([Metric("d", "len", v, A.DISTRIBUTION) for v in _values(rank)])
    out["after_reset"] = aggregator.get_metrics_for_logging()
    return out


def _reference_percentiles(world: int) -> dict[float, float]:
    pooled = np.concatenate([_values(r) for r in range(world)])
    return {p: float(np.percentile(pooled, p)) for p in (5, 50, 95)}


@pytest.mark.parametrize("scenario", ["held", "lacked", "windowed"])
def test_other_percentiles_on_one_rank_raise_on_every_rank_naming_the_ranks(pool3, scenario):
    results = pool3.run(_scenario, scenario, timeout=240)
    errors = [r.get("error") for r in results]
    assert errors[0] is not None and errors[0] == errors[1] == errors[2], errors
    assert errors[0].startswith("Metric 'len' of dataset 'd' (DISTRIBUTION) reports other percentiles on other ranks")
    assert "ranks 0, 2: (5, 50, 95)" in errors[0] and "rank 1: (50, 99.9)" in errors[0]
    assert "Register the same handlers on every rank" in errors[0]
    # nothing registered by the refused call (rank 1 did not make the key it lacked)
    expected_keys = [("d", "len"), ("d", "ok")]
    assert results[0]["keys_after_error"] == results[2]["keys_after_error"] == expected_keys
    assert results[1]["keys_after_error"] == ([("d", "ok")] if scenario == "lacked" else expected_keys)
    after = [r["after_reset"] for r in results]
    assert after[0] == after[1] == after[2]
    key = "train_d/len_lifetime_stat_p{:02d}" if scenario == "windowed" else "train_d/len_stat_p{:02d}"
    for p, want in _reference_percentiles(3).items():
        assert after[0][key.format(p)] == pytest.approx(want, rel=ALPHA)


def test_the_same_percentiles_in_another_order_log_the_same_keys_and_values(pool3):
    results = pool3.run(_scenario, "same set, other order", timeout=240)
    logged = [r.get("logged") for r in results]
    assert logged[0] is not None and logged[0] == logged[1] == logged[2], [r.get("error") for r in results]
    for p, want in _reference_percentiles(3).items():
        assert logged[0][f"train_d/len_stat_p{p:02d}"] == pytest.approx(want, rel=ALPHA)


def test_handler_probes_kept_by_an_earlier_version_are_probed_again_with_their_percentiles():
    """An aggregator pickled before the probes carried percentiles holds ``(kind, layout, error)`` probes: they are
    made again at the next keys' exchange instead of failing to unpack (single process: the probe alone)."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.DISTRIBUTION, partial(Distribution, percentiles=OTHER))
    probes = aggregator._handler_kinds()
    aggregator._probed = {agg_type: probe[:3] for agg_type, probe in aggregator._probed.items()}  # the old form
    again = aggregator._handler_kinds()
    assert again == probes
    assert again[A.DISTRIBUTION.value][3] == ((50.0, 99.9),) and again[A.SUM.value][3] is None
