"""Warnings raised while a metric is built, fed or loaded point at the user's line, however it is reached.

The compute-time warnings are covered by ``test_warning_locations.py``; these are the others: the
``(N, 1)`` column of a functional twin (``SamplesFirstWarning``), the aggregators' ``nan_strategy="warn"``,
``RecMetricModule``'s unread weight column and value heads read as logits (constructor and ``from_config``),
TorchRec's compute interval bounds (``from_torchrec_config``) and the notes of a checkpoint a metric did
not read (``load_state_dict``). Each is reached the ways users reach it: the metric alone, ``forward``,
``Windowed``, ``MetricCollection``, a parent ``nn.Module``, ``RecMetricModule``, ``MetricsAggregator``.

The reference is Python's own rule for ``warnings.warn(..., stacklevel=n)``: the warning must name this
file at the line of the one-line lambda that makes the call, never a file of the package, TorchMetrics or
torch (a fixed ``stacklevel`` named one of those as soon as a frame came between, e.g. ``from_config``
around the constructor, ``MetricCollection.load_state_dict`` around the metric's).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as tmf
from torchmetrics_ext.aggregation import AggregationType, Mean, Metric, MetricsAggregator, Sum
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning

COLUMN = torch.tensor([[0.2], [0.7], [0.4]])  # a model head's (N, 1) output
COLUMN_LABELS = torch.tensor([[0.0], [1.0], [1.0]])
WITH_NAN = torch.tensor([1.0, math.nan, 3.0])
STEP = {"prediction": torch.tensor([0.2, 0.7, 0.4, 0.9]), "label": torch.tensor([0.0, 1.0, 1.0, 1.0])}


def _locations(call: Callable[[], Any], category: type[Warning], match: str) -> set[tuple[str, int]]:
    """``{(filename, lineno)}`` of the warnings of ``category`` containing ``match`` that ``call()`` raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = {(w.filename, w.lineno) for w in caught if issubclass(w.category, category) and match in str(w.message)}
    assert found, [str(w.message) for w in caught]
    return found


def _here(call: Callable[[], Any]) -> set[tuple[str, int]]:
    """The one location the warnings of ``call`` must name: this file, the lambda's line."""
    return {(__file__, call.__code__.co_firstlineno)}


# ----------------------------------------------------------------------------- (N, 1) columns

# every functional twin that reads (preds, target) tasks first
COLUMN_FUNCTIONALS = [
    "auc",
    "auprc",
    "calibration",
    "calibration_free_ne",
    "ctr",
    "hindsight_target_pr",
    "label_average",
    "log_loss",
    "ne_positive",
    "normalized_entropy",
    "num_missing_labels",
    "num_positive_samples",
    "num_serving_examples",
    "precision_recall_curve",
    "recalibrated_calibration",
    "recalibrated_ne",
    "regression_auc",
    "reliability",
    "roc_curve",
    "sum_weights",
    "tensor_weighted_average",
    "weighted_accuracy",
    "weighted_average",
    "weighted_mae",
    "weighted_mse",
    "weighted_nmse",
    "weighted_nrmse",
    "weighted_precision",
    "weighted_r2",
    "weighted_recall",
    "weighted_rmse",
    "weighted_sum_predictions",
    "xauc",
]


@pytest.mark.parametrize("name", COLUMN_FUNCTIONALS)
def test_a_samples_first_column_is_warned_at_the_users_line(name: str) -> None:
    fn = getattr(tmf, name)
    call = lambda: fn(COLUMN, COLUMN_LABELS)  # noqa: E731
    assert _locations(call, SamplesFirstWarning, "is read tasks-first") == _here(call)


# ----------------------------------------------------------------------------- calls, one lambda per path


def _nan_mean() -> Callable[[], Any]:
    metric = Mean(nan_strategy="warn")
    return lambda: metric.update(WITH_NAN)


def _nan_mean_forward() -> Callable[[], Any]:
    metric = Mean(nan_strategy="warn")
    return lambda: metric(WITH_NAN)


def _nan_sum_windowed() -> Callable[[], Any]:
    metric = tmx.Windowed(Sum(nan_strategy="warn"), window_size=8)
    return lambda: metric.update(WITH_NAN)


def _nan_collection() -> Callable[[], Any]:
    collection = MetricCollection({"mean": Mean(nan_strategy="warn"), "sum": Sum(nan_strategy="warn")})
    return lambda: collection.update(WITH_NAN)


def _nan_aggregator() -> Callable[[], Any]:
    aggregator = MetricsAggregator()
    aggregator.register_handler(AggregationType.MEAN, lambda: Mean(nan_strategy="warn"))
    records = [Metric("ds", "loss", value, AggregationType.MEAN) for value in (1.0, math.nan)]
    return lambda: aggregator.update(records)


def _unread_weight(window_size: int | None) -> Callable[[], Any]:
    task = tmx.RecTaskInfo("click", weight_name="click_weight")
    module = tmx.RecMetricModule([task], {"ctr": "ctr", "ne": "ne"}, throughput=False, window_size=window_size)
    return lambda: module.update(STEP)


def _unread_weight_from_config() -> Callable[[], Any]:
    config = {"tasks": [{"name": "click", "weight_name": "click_weight"}], "metrics": ["ctr"], "throughput": False}
    module = tmx.RecMetricModule.from_config(config)
    return lambda: module.update(STEP)


HEADS = [tmx.RecTaskInfo("click", "y_click", "p_click"), tmx.RecTaskInfo("watch", "y_watch", "p_watch")]
HEAD_METRICS = {"ne": "ne", "mse": "mse"}
HEAD_TASKS = {"ne": ["click"], "mse": ["watch"]}


def _value_heads() -> Callable[[], Any]:
    return lambda: tmx.RecMetricModule(HEADS, HEAD_METRICS, from_logits=True, metric_tasks=HEAD_TASKS, throughput=False)


def _value_heads_from_config() -> Callable[[], Any]:
    tasks = [{"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name} for t in HEADS]
    config = {"tasks": tasks, "metrics": HEAD_METRICS, "from_logits": True, "metric_tasks": HEAD_TASKS}
    return lambda: tmx.RecMetricModule.from_config(config)


def _torchrec_interval() -> Callable[[], Any]:
    config = {
        "rec_tasks": [{"name": "click", "label_name": "label", "prediction_name": "prediction"}],
        "rec_metrics": {"ne": {"rec_task_indices": [0]}},
        "min_compute_interval": 5.0,
    }
    return lambda: tmx.RecMetricModule.from_torchrec_config(config)


def _binned() -> tmx.AUC:
    metric = tmx.AUC(num_bins=8, bin_space="probability")
    metric.persistent(True)
    return metric


V1_HIST = torch.zeros(2, 1, 8, dtype=torch.float64)  # a version-1 checkpoint's `hist`: no metadata


def _v1_metric() -> Callable[[], Any]:
    metric = _binned()
    return lambda: metric.load_state_dict({"hist": V1_HIST}, strict=False)


def _v1_collection() -> Callable[[], Any]:
    collection = MetricCollection({"auc": _binned()})
    return lambda: collection.load_state_dict({"auc.hist": V1_HIST}, strict=False)


def _v1_parent() -> Callable[[], Any]:
    parent = nn.Module()
    parent.auc = _binned()
    return lambda: parent.load_state_dict({"auc.hist": V1_HIST}, strict=False)


def _v1_module() -> Callable[[], Any]:
    module = tmx.RecMetricModule(["click"], {"auc": {"metric": "auc", "num_bins": 8, "bin_space": "probability"}})
    old = {key.replace("hist_probability", "hist"): value for key, value in module.state_dict().items()}
    return lambda: module.load_state_dict(old, strict=False)


def _windowed_elsewhere() -> Callable[[], Any]:
    windowed = tmx.Windowed(tmx.AUC(num_bins=8), window_size=4)
    return lambda: windowed.load_state_dict({"lifetime.hist": V1_HIST}, strict=False)


# name -> (the call's builder, the warning's category, a part of its text)
CASES: dict[str, tuple[Callable[[], Callable[[], Any]], type[Warning], str]] = {
    "nan_mean_update": (_nan_mean, UserWarning, "Encountered `nan`"),
    "nan_mean_forward": (_nan_mean_forward, UserWarning, "Encountered `nan`"),
    "nan_windowed_sum": (_nan_sum_windowed, UserWarning, "Encountered `nan`"),
    "nan_metric_collection": (_nan_collection, UserWarning, "Encountered `nan`"),
    "nan_metrics_aggregator": (_nan_aggregator, UserWarning, "Encountered `nan`"),
    "unread_weight_module": (lambda: _unread_weight(None), UserWarning, "has no weight column"),
    "unread_weight_module_window": (lambda: _unread_weight(8), UserWarning, "has no weight column"),
    "unread_weight_from_config": (_unread_weight_from_config, UserWarning, "has no weight column"),
    "value_heads_constructor": (_value_heads, UserWarning, "reads every prediction column as logits"),
    "value_heads_from_config": (_value_heads_from_config, UserWarning, "reads every prediction column as logits"),
    "torchrec_compute_interval": (_torchrec_interval, UserWarning, "min_compute_interval"),
    "checkpoint_metric": (_v1_metric, UserWarning, "version-1 checkpoint"),
    "checkpoint_metric_collection": (_v1_collection, UserWarning, "version-1 checkpoint"),
    "checkpoint_parent_module": (_v1_parent, UserWarning, "version-1 checkpoint"),
    "checkpoint_rec_metric_module": (_v1_module, UserWarning, "version-1 checkpoint"),
    "checkpoint_windowed": (_windowed_elsewhere, UserWarning, "the checkpoint holds this Windowed(AUC)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_build_update_or_load_warning_points_at_the_users_line(name: str) -> None:
    build, category, match = CASES[name]
    call = build()
    assert _locations(call, category, match) == _here(call)


def test_the_nan_warning_stays_on_rank_zero_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchMetrics' rule for its ``nan_strategy="warn"``: other ranks drop the NaN without a word."""
    from torchmetrics.utilities.prints import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    metric = Mean(nan_strategy="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric.update(WITH_NAN)
    assert [str(w.message) for w in caught] == []
    assert metric.compute().item() == pytest.approx((1.0 + 3.0) / 2)  # the NaN is dropped all the same
