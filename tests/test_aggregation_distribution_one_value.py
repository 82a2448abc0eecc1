"""A DISTRIBUTION key holding one value, in one process and across gloo ranks.

torchtune's ``DistributionAggHandler`` (the reference, seeds/000) logs ``_stat_std`` only for more
than one value (``torch.std`` of one value is ``nan``) and every other statistic as that value. Across
ranks the package logs the statistics of all ranks' values (docs/aggregation.md, the comparison
table): one value in the whole world leaves the std out on every rank, silently, as in one process;
one value on each of two ranks is two values (``statistics.stdev``), where torchtune, which averages
per-rank stds, has none to average.
"""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import numpy as np
import pytest

from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

STATS = ("mean", "min", "max", "p05", "p50", "p95")


def _torchtune_like(values: list[float]) -> dict[str, float]:
    """What torchtune's handler logs for the values of one process (its definitions, in NumPy)."""
    xs = np.asarray(values, dtype=np.float64)
    out = {"mean": float(xs.mean()), "min": float(xs.min()), "max": float(xs.max())}
    out.update({f"p{q:02d}": float(np.quantile(xs, q / 100)) for q in (5, 50, 95)})
    if len(xs) > 1:
        out["std"] = float(np.std(xs, ddof=1))
    return {f"train_ds/len_stat_{k}": v for k, v in out.items()}


def _log(values: list[float]) -> tuple[dict[str, float], list[str]]:
    agg = MetricsAggregator()
    agg.update([Metric("ds", "len", v, AggregationType.DISTRIBUTION) for v in values])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = agg.get_metrics_for_logging(prefix="train")
    return logged, [str(w.message) for w in caught]


@pytest.mark.parametrize("value", [5.0, -3.25, 1e9, 0.0])
def test_one_value_logs_torchtunes_keys_without_std_and_without_a_warning(value: float) -> None:
    logged, said = _log([value])
    assert logged == _torchtune_like([value])
    assert "train_ds/len_stat_std" not in logged and said == []


def test_two_values_log_the_std() -> None:
    logged, said = _log([5.0, 7.0])
    assert logged == pytest.approx(_torchtune_like([5.0, 7.0]), rel=1e-15)
    assert logged["train_ds/len_stat_std"] == pytest.approx(statistics.stdev([5.0, 7.0]), rel=1e-15) and said == []


WORLD_VALUES = {
    "one_in_the_world": {0: [1e9 + 3], 1: []},
    "one_per_rank": {0: [5.0], 1: [7.0]},
    "one_next_to_many": {0: [1e6], 1: [1e6 + v for v in (-2.0, 0.5, 1.0, 4.0)]},
}


def _job(rank: int, world: int, case: str) -> Any:
    return _log(WORLD_VALUES[case][rank])


@pytest.mark.ddp
@pytest.mark.parametrize("case", sorted(WORLD_VALUES))
def test_gloo_ranks_log_the_statistics_of_every_ranks_values(ddp_pool: Any, case: str) -> None:
    out = ddp_pool.run(_job, case)
    everything = [v for rank in sorted(WORLD_VALUES[case]) for v in WORLD_VALUES[case][rank]]
    want = _torchtune_like(everything)  # one process over the concatenated values
    for logged, said in out:
        assert sorted(logged) == sorted(want), case
        for key, value in want.items():
            # percentiles of more than one value come from the mergeable sketch (relative accuracy 1%, see
            # docs/aggregation.md); one value's are that value; the rest is exact
            rel = 1e-2 if "_p" in key and len(everything) > 1 else 1e-12
            assert logged[key] == pytest.approx(value, rel=rel), (case, key)
        assert said == [], case
