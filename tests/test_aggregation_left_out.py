"""A key that ``get_metrics_for_logging`` leaves out for ``nan`` is said once (docs/aggregation.md, docs/policies.md).

The package's policy for an undefined value is ``nan`` plus an ``UndefinedMetricWarning``; the aggregator logs no
``nan`` (it leaves the key out), so the warning is what tells a user that a key is missing from the dashboard.
The one silent exception is torchtune's own rule: a DISTRIBUTION's std is left out while it has one value
(torchtune logs ``_stat_std`` only for ``n > 1``). References are plain Python (``statistics``) and that rule.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import pytest
import torch
from torchmetrics import Metric as TorchMetric
from torchmetrics.aggregation import MeanMetric

from torchmetrics_ext.aggregation import AggregationType, Distribution, Mean, Metric, MetricsAggregator
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

NAN = float("nan")


class _Ratio(TorchMetric):
    """A user's own handler: the sum of values over their count, ``nan`` of no value (no warning of its own)."""

    full_state_update = False
    nan_strategy = "ignore"  # what its update does: the aggregator hands it NaN records

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        kept = values[~values.isnan()]
        self.total += kept.sum()
        self.count += kept.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


FACTORIES = {
    "torchmetrics_mean_ignore": lambda: MeanMetric(nan_strategy="ignore"),
    "package_mean_ignore": lambda: Mean(nan_strategy="ignore"),
    "own_class": _Ratio,
}


def _logged(aggregator: MetricsAggregator) -> tuple[dict[str, float], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = aggregator.get_metrics_for_logging(prefix="train")
    return out, [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]


@pytest.mark.parametrize("handler", sorted(FACTORIES))
def test_a_key_left_out_for_nan_is_warned_once_until_reset(handler: str) -> None:
    aggregator = MetricsAggregator()
    aggregator.register_handler(AggregationType.MEAN, FACTORIES[handler])
    aggregator.update(
        [Metric("alpaca", "loss", NAN, AggregationType.MEAN), Metric("alpaca", "n", 3, AggregationType.SUM)]
    )
    out, caught = _logged(aggregator)
    assert out == {"train_alpaca/n": 3.0}  # the mean of no value is left out
    assert len(caught) == 1 and "'train_alpaca/loss' is undefined" in str(caught[0].message)
    assert "left out of the logged dict" in str(caught[0].message)
    assert caught[0].filename == __file__  # the user's get_metrics_for_logging line (see _logged)
    assert _logged(aggregator) == ({"train_alpaca/n": 3.0}, [])  # said once per key
    aggregator.update([Metric("alpaca", "loss", v, AggregationType.MEAN) for v in (2.0, NAN, 5.0)])
    assert _logged(aggregator) == ({"train_alpaca/n": 3.0, "train_alpaca/loss": statistics.fmean([2.0, 5.0])}, [])
    aggregator.reset()
    aggregator.update([Metric("alpaca", "loss", NAN, AggregationType.MEAN)])
    out, caught = _logged(aggregator)
    assert out == {} and len(caught) == 1  # reset forgets the keys, and that they were said


def test_a_nan_kept_by_disable_is_logged_without_a_warning() -> None:
    aggregator = MetricsAggregator()
    aggregator.register_handler(AggregationType.MEAN, lambda: MeanMetric(nan_strategy="disable"))
    aggregator.update([Metric("alpaca", "loss", v, AggregationType.MEAN) for v in (1.0, NAN)])
    out, caught = _logged(aggregator)
    assert list(out) == ["train_alpaca/loss"] and math.isnan(out["train_alpaca/loss"]) and caught == []


@pytest.mark.parametrize("factory", [Distribution, lambda: Distribution(percentiles=(50,))])
def test_the_std_of_one_value_is_left_out_without_a_word_as_torchtune_does(factory: Any) -> None:
    aggregator = MetricsAggregator()
    aggregator.register_handler(AggregationType.DISTRIBUTION, factory)
    aggregator.update([Metric("alpaca", "seq_len", 7, AggregationType.DISTRIBUTION)])
    out, caught = _logged(aggregator)
    assert caught == [] and "train_alpaca/seq_len_stat_std" not in out
    assert out["train_alpaca/seq_len_stat_mean"] == 7.0 and out["train_alpaca/seq_len_stat_max"] == 7.0
    aggregator.update([Metric("alpaca", "seq_len", 10, AggregationType.DISTRIBUTION)])
    out, caught = _logged(aggregator)
    assert caught == [] and out["train_alpaca/seq_len_stat_std"] == pytest.approx(statistics.stdev([7, 10]))
