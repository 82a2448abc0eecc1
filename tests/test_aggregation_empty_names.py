"""An empty dataset name or metric name is refused by the aggregator as by the transform (docs/aggregation.md).

torchtune takes ``Metric("", "x", ...)`` and logs it as ``train_/x``; here ``MetricTransform.set_dataset_name("")``
was refused while ``MetricsAggregator.update`` logged the same name. Both refuse it now, before anything changes.
The reference for the values kept is plain Python.
"""

from __future__ import annotations

import pytest

from torchmetrics_ext.aggregation import (
    AggregationType,
    DefaultTrainingMetricTransform,
    Metric,
    MetricsAggregator,
)

SUM = AggregationType.SUM


@pytest.mark.parametrize(
    ("dataset", "name", "field"),
    [("", "tokens", "dataset_name"), ("alpaca", "", "name"), ("", "", "dataset_name")],
)
def test_an_empty_name_is_refused_and_the_batch_changes_nothing(dataset: str, name: str, field: str) -> None:
    aggregator = MetricsAggregator()
    aggregator.update([Metric("alpaca", "tokens", 3, SUM)])
    with pytest.raises(ValueError, match=rf"expected a non-empty `{field}`"):
        aggregator.update([Metric("alpaca", "tokens", 4, SUM), Metric(dataset, name, 5, SUM)])
    assert aggregator.get_metrics_for_logging(prefix="train") == {"train_alpaca/tokens": float(sum([3]))}
    aggregator.update([Metric("alpaca", "tokens", 4, SUM)])  # still usable
    assert aggregator.get_metrics_for_logging(prefix="train") == {"train_alpaca/tokens": float(sum([3, 4]))}


def test_the_transform_refuses_the_same_empty_dataset_name() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        DefaultTrainingMetricTransform().set_dataset_name("")


@pytest.mark.parametrize("bad", [None, 1, b"alpaca"])
def test_set_dataset_name_of_a_wrong_type_is_a_type_error_and_keeps_the_name(bad: object) -> None:
    """The aggregation family's convention (a record's non-str dataset_name is a TypeError in update)."""
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    with pytest.raises(TypeError, match=r"Expected `dataset_name` to be a non-empty string, got"):
        transform.set_dataset_name(bad)  # type: ignore[arg-type]
    assert transform.dataset_name == "alpaca"
    with pytest.raises(TypeError, match=r"`dataset_name` and `name` to be strings"):
        MetricsAggregator().update([Metric(bad, "x", 1, SUM)])  # type: ignore[arg-type]
