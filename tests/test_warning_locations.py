"""Warnings raised while a value is computed point at the user's line, whatever the depth of the call.

The reference is Python's own rule for ``warnings.warn(..., stacklevel=n)``: the warning names the file
and line of the user's frame. Each family's undefined value (and the distribution sketch's range warning)
is computed standalone (``compute()``, ``metric(...)``), through a wrapper (``Windowed``, ``Segmented``)
and inside a ``RecMetricModule`` (``compute()``, ``local_compute()``); the warning must name this file at
the line of the one-line lambda making the call, never a file of the package, TorchMetrics or torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import Distribution
from torchmetrics_ext.utilities.warnings import SketchRangeWarning, UndefinedMetricWarning

PREDS = torch.tensor([0.2, 0.7, 0.4, 0.9])
ONE_CLASS = torch.tensor([1.0, 1.0, 1.0, 1.0])


def _locations(call: Callable[[], Any], category: type[Warning]) -> set[tuple[str, int]]:
    """``{(filename, lineno)}`` of the warnings of ``category`` that ``call()`` raised (at least one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = {(w.filename, w.lineno) for w in caught if issubclass(w.category, category)}
    assert found, [str(w.message) for w in caught]
    return found


def _here(call: Callable[[], Any]) -> set[tuple[str, int]]:
    """The one location the warnings of ``call`` must name: this file, the lambda's line."""
    return {(__file__, call.__code__.co_firstlineno)}


def _fed(metric: Any, *args: Any, **kwargs: Any) -> Any:
    metric.update(*args, **kwargs)
    return metric


STANDALONE: dict[str, Callable[[], Any]] = {
    "ne_one_class": lambda: _fed(tmx.NormalizedEntropy(), PREDS, ONE_CLASS),
    "ctr_unfed": lambda: tmx.CTR(),
    "precision_unfed": lambda: tmx.WeightedPrecision(),
    "auc_exact_one_class": lambda: _fed(tmx.AUC(), PREDS, ONE_CLASS),
    "auc_binned_one_class": lambda: _fed(tmx.AUC(num_bins=16), PREDS, ONE_CLASS),
    "gauc_one_class": lambda: _fed(tmx.GroupedAUC(), PREDS, ONE_CLASS, torch.tensor([0, 0, 1, 1])),
    "mse_unfed": lambda: tmx.WeightedMSE(),
    "r2_unfed": lambda: tmx.WeightedR2(),
    "ndcg_unfed": lambda: tmx.NDCG(),
    "mrr_no_positive": lambda: _fed(tmx.MRR(), PREDS.reshape(2, 2), torch.zeros(2, 2)),
    "throughput_unfed": lambda: tmx.Throughput(),
    "xauc_unfed": lambda: tmx.XAUC(),
    "ranking_metrics_unfed": lambda: tmx.RankingMetrics(ks=(2,), metrics=("ndcg", "mrr")),
    "multiclass_recall_unfed": lambda: tmx.MulticlassRecallAtK(k=1, num_classes=3),
    "hindsight_unfed": lambda: tmx.HindsightTargetPR(),
    "reliability_unfed": lambda: tmx.Reliability(),
    "multilabel_unfed": lambda: tmx.MultiLabelPrecision(num_labels=2),
    "session_precision_unfed": lambda: tmx.SessionPrecisionAtK(k=1),
    "calibration_free_ne_unfed": lambda: tmx.CalibrationFreeNE(),
    "tensor_weighted_average_unfed": lambda: tmx.TensorWeightedAverage(),
    "windowed_auc": lambda: _fed(tmx.Windowed(tmx.AUC(), window_size=4), PREDS, ONE_CLASS),
    "segmented_ctr": lambda: tmx.Segmented(tmx.CTR(), num_segments=2),
}


@pytest.mark.parametrize("name", sorted(STANDALONE))
def test_a_standalone_compute_warns_at_the_users_line(name: str) -> None:
    metric = STANDALONE[name]()
    compute = lambda: metric.compute()  # noqa: E731
    assert _locations(compute, UndefinedMetricWarning) == _here(compute)


def test_forward_warns_at_the_users_line() -> None:
    auc = tmx.AUC()
    step = lambda: auc(PREDS, ONE_CLASS)  # noqa: E731  (nn.Module.__call__, TorchMetrics' forward, then ours)
    assert _locations(step, UndefinedMetricWarning) == _here(step)


def test_a_sketch_range_warning_points_at_the_users_line() -> None:
    sketch = Distribution(percentiles=(50,))
    sketch.update(torch.tensor([2e-12, 5e-12, 8e-12], dtype=torch.float64))
    compute = lambda: sketch.compute()  # noqa: E731
    assert _locations(compute, SketchRangeWarning) == _here(compute)


MODULE_METRICS = {
    "ne": "ne",
    "auc": "auc",
    "auc_binned": {"metric": "auc", "num_bins": 16},
    "ctr": "ctr",
    "precision": "weighted_precision",
    "mse": "mse",
    "gauc": "gauc",
    "ndcg": "ndcg@2",
}
TASK = tmx.RecTaskInfo("click", group_id_name="group", session_id_name="session")


@pytest.mark.parametrize("read", ["compute", "local_compute"])
@pytest.mark.parametrize("window_size", [None, 8])
def test_a_module_compute_warns_at_the_users_line(read: str, window_size: int | None) -> None:
    module = tmx.RecMetricModule([TASK], MODULE_METRICS, window_size=window_size)
    values = lambda: getattr(module, read)()  # noqa: E731
    before = _locations(values, UndefinedMetricWarning)  # nothing fed: every value (throughput too) is undefined
    assert before == _here(values)
    ids = torch.tensor([0, 0, 1, 1])
    module.update({"prediction": PREDS, "label": ONE_CLASS, "group": ids, "session": ids})
    after = _locations(values, UndefinedMetricWarning)  # one class: NE, AUC, GAUC; throughput in warm-up
    assert after == _here(values)
