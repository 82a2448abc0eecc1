"""A metric that saw no sample says so, instead of the reason of a metric that saw data of one kind.

``compute()`` before any update (or after only empty / zero-weight batches) used to warn "the labels
seen hold a single class (or no weight)" (AUC, NE) or "no positive label weight" (Calibration,
AUPRC), pointing a first-hour user at their labels. The reference for which tasks saw nothing is
the plain-Python sum of each task's weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as tmf
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

NO_SAMPLES = "no samples seen (no update, or only empty / zero-weight batches)"  # the reason, as documented

# every metric whose undefined reason is about the data seen, and which can tell "nothing seen" from its states
CLASSES = [
    tmx.AUC,
    lambda: tmx.AUC(num_bins=64),
    tmx.AUPRC,
    lambda: tmx.AUPRC(num_bins=64),
    tmx.NormalizedEntropy,
    tmx.LogLoss,
    tmx.Calibration,
    tmx.CTR,
    tmx.WeightedAverage,
    tmx.WeightedAccuracy,
    tmx.WeightedPrecision,
    tmx.WeightedRecall,
    tmx.WeightedMSE,
    tmx.WeightedMAE,
    tmx.WeightedRMSE,
]
IDS = ["AUC", "AUC-binned", "AUPRC", "AUPRC-binned", "NE", "LogLoss", "Calibration", "CTR", "WeightedAverage"]
IDS += ["WeightedAccuracy", "WeightedPrecision", "WeightedRecall", "WeightedMSE", "WeightedMAE", "WeightedRMSE"]


def _messages(compute) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    return value, [str(w.message) for w in caught if w.category is UndefinedMetricWarning]


@pytest.mark.parametrize("make", CLASSES, ids=IDS)
@pytest.mark.parametrize("fed", ["nothing", "empty batch", "zero weights", "after reset"])
def test_a_metric_that_saw_no_sample_says_so(make, fed):
    metric = make()
    if fed == "empty batch":
        metric.update(torch.empty(0), torch.empty(0))
    elif fed == "zero weights":
        metric.update(torch.tensor([0.2, 0.8, 0.6]), torch.tensor([0.0, 1.0, 1.0]), torch.zeros(3))
    elif fed == "after reset":
        metric.update(torch.tensor([0.2, 0.8]), torch.tensor([0.0, 1.0]))
        metric.compute()
        metric.reset()
    value, messages = _messages(metric.compute)
    assert torch.isnan(value)
    assert len(messages) == 1, messages
    assert NO_SAMPLES in messages[0], messages[0]
    assert "single class" not in messages[0] and "positive" not in messages[0]


@pytest.mark.parametrize(("make", "target", "reason"), [
    (tmx.AUC, [1.0, 1.0], "single class"),
    (lambda: tmx.AUC(num_bins=64), [0.0, 0.0], "single class"),
    (tmx.NormalizedEntropy, [0.0, 0.0], "single class"),
    (tmx.AUPRC, [0.0, 0.0], "no positive label weight"),
    (tmx.Calibration, [0.0, 0.0], "no positive label weight"),
    (tmx.WeightedRecall, [0.0, 0.0], "no positive label"),
])  # fmt: skip
def test_a_metric_that_saw_one_class_keeps_its_reason(make, target, reason):
    metric = make()
    metric.update(torch.tensor([0.3, 0.7]), torch.tensor(target))
    value, messages = _messages(metric.compute)
    assert torch.isnan(value) and len(messages) == 1 and reason in messages[0] and NO_SAMPLES not in messages[0]


@pytest.mark.parametrize("make", [tmx.AUC, tmx.NormalizedEntropy, tmx.AUPRC, tmx.Calibration], ids=lambda f: f.__name__)
def test_each_task_gets_its_own_reason(make):
    # task 0: weight on one class only; task 1: no weight at all; task 2: both classes
    preds = torch.tensor([[0.2, 0.7, 0.4], [0.3, 0.6, 0.9], [0.1, 0.8, 0.5]])
    target = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    weights = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    unseen = [t for t in range(3) if sum(weights[t].tolist()) == 0]  # the reference: plain sums
    assert unseen == [1]
    metric = make(num_tasks=3)
    metric.update(preds, target, weights)
    value, messages = _messages(metric.compute)
    assert torch.isnan(value[:2]).all() and torch.isfinite(value[2])
    assert f"task(s) {unseen}: {NO_SAMPLES}" in messages[0], messages
    assert len(messages) == 2 and "task(s) [0]: " in messages[1] and NO_SAMPLES not in messages[1], messages


@pytest.mark.parametrize(
    "fn", [tmf.auc, tmf.auprc, tmf.normalized_entropy, tmf.calibration, tmf.ctr, tmf.log_loss], ids=lambda f: f.__name__
)
def test_functionals_with_all_zero_weights_say_no_samples(fn):
    value, messages = _messages(lambda: fn(torch.tensor([0.3, 0.7]), torch.tensor([0.0, 1.0]), torch.zeros(2)))
    assert torch.isnan(value) and len(messages) == 1 and NO_SAMPLES in messages[0], messages


def test_module_compute_before_any_update_says_no_samples():
    module = tmx.RecMetricModule.from_config(
        {"tasks": [{"name": "click"}], "metrics": ["ne", "auc", "calibration", "ctr"]}
    )
    values, messages = _messages(module.compute)
    for key in ("ne/click", "auc/click", "calibration/click", "ctr/click"):
        assert torch.isnan(values[key]), key
    ours = [m for m in messages if not m.startswith("throughput")]  # its own reason: no timed step
    assert len(ours) == 4, messages
    for name, message in zip(["ne", "auc", "calibration", "ctr"], ours, strict=True):
        assert message == f"{name} is undefined for task(s) ['click']: {NO_SAMPLES}; returning nan."


@pytest.mark.parametrize("make", [tmx.AUC, tmx.AUPRC, tmx.NormalizedEntropy], ids=lambda f: f.__name__)
def test_many_tasks_tell_the_unseen_ones_apart(make):
    # 20 tasks (more than AUC's host path takes): tasks 3 and 11 have no weight, task 5 one class only
    num_tasks, n = 20, 6
    preds = torch.linspace(0.1, 0.9, num_tasks * n).reshape(num_tasks, n)
    target = torch.tensor([0.0, 1.0] * (n // 2)).repeat(num_tasks, 1)
    target[5] = 0.0
    weights = torch.ones(num_tasks, n)
    weights[[3, 11]] = 0.0
    unseen = [t for t in range(num_tasks) if sum(weights[t].tolist()) == 0]
    one_class = [t for t in range(num_tasks) if t not in unseen and len(set(target[t].tolist())) == 1]
    metric = make(num_tasks=num_tasks)
    metric.update(preds, target, weights)
    value, messages = _messages(metric.compute)
    assert torch.isnan(value).nonzero().reshape(-1).tolist() == sorted(unseen + one_class)
    assert len(messages) == 2, messages
    assert f"task(s) {unseen}: {NO_SAMPLES}" in messages[0]
    assert f"task(s) {one_class}: " in messages[1] and NO_SAMPLES not in messages[1]
