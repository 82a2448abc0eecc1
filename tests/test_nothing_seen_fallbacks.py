"""The fallback values of "nothing seen" that are not ``nan`` (docs/policies.md, "Nothing seen"), and the reasons.

* ``HindsightTargetPR``'s threshold follows TorchRec's ``compute_threshold_idx`` (written below in plain
  Python from TorchRec's source: the first threshold whose precision, 0 where no prediction reaches it, is
  at least the target, else the last one), also when nothing was seen;
* ``CalibrationFreeNE`` says "no samples seen" for a task that saw no weight, as every other ratio;
* ``evaluate(by=...)``'s per-segment ``xauc``/``regression_auc`` name a segment whose rows all weigh 0
  with the segment's reason, as the other families do;
* ``TowerQPS`` gives TorchRec's 0 before a timed step (no warning), ``Throughput`` ``nan`` with the
  reason; both return float64 scalars (``(T,)`` for a multi-task ``TowerQPS``) before warm-up, after
  a step, after ``reset`` and after ``load_state_dict``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.evaluate import evaluate

NO_SAMPLES = "no samples seen (no update, or only empty / zero-weight batches)"  # as documented
SEGMENT_UNSEEN = "no samples seen in this segment (every row of weight 0 or skipped)"
SEEDS = range(int(os.environ.get("TMX_FALLBACK_SEEDS", "40")))


def caught(compute: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        value = compute()
    return value, [str(w.message) for w in record if issubclass(w.category, UserWarning)]


# ----------------------------------------------------------------------------- HindsightTargetPR


def torchrec_threshold(p: list[float], y: list[float], w: list[float], target_precision: float, b: int) -> float:
    """TorchRec's ``compute_threshold_idx`` over our thresholds ``j / (b - 1)``, as the threshold's value.

    TorchRec: ``precision = 0.0 if tp + fp == 0 else tp / (tp + fp)``; the first index whose precision is
    ``>= target_precision``; else ``THRESHOLD_GRANULARITY - 1``. A prediction reaches a threshold iff ``p >= t``.
    """
    for j in range(b):
        t = j / (b - 1)
        tp = sum(wi * yi for pi, yi, wi in zip(p, y, w, strict=True) if pi >= t)
        fp = sum(wi * (1 - yi) for pi, yi, wi in zip(p, y, w, strict=True) if pi >= t)
        precision = 0.0 if tp + fp == 0 else tp / (tp + fp)
        if precision >= target_precision:
            return t
    return 1.0


@pytest.mark.parametrize("target_precision", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("how", ["no update", "zero-weight batch", "empty batch", "after reset"])
def test_hindsight_threshold_when_nothing_was_seen_is_torchrecs(target_precision, how):
    """Nothing seen: every threshold's precision is TorchRec's 0, so the threshold is the first (target 0) or the last."""
    metric = tmx.HindsightTargetPR(target_precision=target_precision, num_thresholds=11)
    if how == "zero-weight batch":
        metric.update(torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0]), torch.zeros(2))
    elif how == "empty batch":
        metric.update(torch.zeros(0), torch.zeros(0))
    elif how == "after reset":
        metric.update(torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0]))
        caught(metric.compute)
        metric.reset()
    value, messages = caught(metric.compute)
    assert float(value["threshold"]) == torchrec_threshold([], [], [], target_precision, 11)
    assert math.isnan(float(value["precision"])) and math.isnan(float(value["recall"]))
    assert messages == [
        f"HindsightTargetPR.precision is undefined: {NO_SAMPLES}; returning nan.",
        f"HindsightTargetPR.recall is undefined: {NO_SAMPLES}; returning nan.",
    ]
    out, _ = caught(
        lambda: tmx.functional.hindsight_target_pr(
            torch.zeros(0), torch.zeros(0), target_precision=target_precision, num_thresholds=11
        )
    )
    assert float(out["threshold"]) == float(value["threshold"])


def test_hindsight_task_that_saw_nothing_beside_one_that_did():
    """Two tasks, target 0: task 1's zero weights give TorchRec's first threshold, task 0's data its own."""
    p, y = [0.1, 0.45, 0.6, 0.8], [0.0, 1.0, 0.0, 1.0]
    metric = tmx.HindsightTargetPR(num_tasks=2, target_precision=0.0, num_thresholds=11)
    metric.update(torch.tensor([p, p]), torch.tensor([y, y]), torch.tensor([[1.0] * 4, [0.0] * 4]))
    value, messages = caught(metric.compute)
    assert value["threshold"].tolist() == [torchrec_threshold(p, y, [1.0] * 4, 0.0, 11), 0.0]
    assert value["precision"][0].item() == 0.5 and math.isnan(value["precision"][1].item())
    assert len(messages) == 2 and all("task(s) [1]" in m and NO_SAMPLES in m for m in messages), messages


@pytest.mark.parametrize("seed", SEEDS)
def test_hindsight_threshold_follows_torchrecs_rule(seed):
    """Random batches (integer weights, zeros among them, scores on the thresholds): TorchRec's index rule."""
    rng = np.random.default_rng(seed)
    b, n = int(rng.choice([2, 5, 11])), int(rng.integers(0, 9))
    p = (rng.integers(0, b, n) / (b - 1) if seed % 2 else rng.random(n)).tolist()
    y = rng.integers(0, 2, n).astype(float).tolist()
    w = (rng.integers(0, 3, n) * (seed % 3 != 0)).astype(float).tolist()  # every third seed: all weights 0
    for target_precision in (0.0, 0.25, 0.5, 2 / 3, 1.0):
        metric = tmx.HindsightTargetPR(target_precision=target_precision, num_thresholds=b)
        metric.update(torch.tensor(p, dtype=torch.float64), torch.tensor(y), torch.tensor(w))
        value, _ = caught(metric.compute)
        assert float(value["threshold"]) == torchrec_threshold(p, y, w, target_precision, b), (p, y, w)


# ----------------------------------------------------------------------------- CalibrationFreeNE


@pytest.mark.parametrize("torchrec_scaling", [False, True])
def test_calibration_free_ne_says_no_samples_seen_apart_from_its_own_reason(torchrec_scaling):
    """Task 1 saw only zero weight (NO_SAMPLES); with eta=0, task 0's constant prediction 0 on labels 0 has
    cross-entropy 0 (the mean prediction is 0): its own reason."""
    metric = tmx.CalibrationFreeNE(num_tasks=2, eta=0.0, torchrec_scaling=torchrec_scaling)
    preds, target = torch.zeros(2, 3), torch.zeros(2, 3)
    metric.update(preds, target, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    value, messages = caught(metric.compute)
    assert all(math.isnan(x) for x in value.tolist())
    unseen = [m for m in messages if "task(s) [1]" in m]
    assert unseen == [f"CalibrationFreeNE is undefined for task(s) [1]: {NO_SAMPLES}; returning nan."], messages
    own = [m for m in messages if "task(s) [0]" in m]
    assert len(own) == 1 and NO_SAMPLES not in own[0], messages
    functional, messages = caught(lambda: tmx.functional.calibration_free_ne(torch.zeros(0), torch.zeros(0)))
    assert math.isnan(float(functional))
    assert messages == [f"CalibrationFreeNE is undefined: {NO_SAMPLES}; returning nan."]


# ----------------------------------------------------------------------------- evaluate's per-segment pairwise AUCs


@pytest.mark.parametrize("metric", ["xauc", "regression_auc"])
def test_evaluate_pairwise_segment_of_zero_weight_says_so(metric):
    """Segment b's rows all weigh 0: the segment's "no samples seen" line, as NE's and AUC's (not the pair reason).

    Segment c holds weight but one label value (regression_auc: no pair of different labels; xauc: one row of
    weight, no pair): the metric's own reason, as the class gives on those rows.
    """
    table = pa.table(
        {
            "p": [0.2, 0.7, 0.4, 0.6, 0.3, 0.5, 0.9],
            "y": [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
            "w": [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            "seg": ["a", "a", "b", "b", "a", "c", "c"],
        }
    )
    result = evaluate(table, {"t": ("p", "y")}, [metric], weights="w", by=["seg"])
    lines = [line for line in result.warnings if "seg=b" in line]
    assert len(lines) == 1 and f": {SEGMENT_UNSEEN}; returning nan." in lines[0], result.warnings
    own = [line for line in result.warnings if "seg=c" in line]
    cls = tmx.XAUC() if metric == "xauc" else tmx.RegressionAUC()
    cls.update(torch.tensor([0.5, 0.9]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    _, messages = caught(cls.compute)
    reason = messages[0].split(": ", 1)[1]
    assert len(own) == 1 and own[0].endswith(f": {reason}") and NO_SAMPLES not in reason, (result.warnings, reason)
    assert np.isnan(result.values[f"{metric}/t/seg=b"]) and np.isfinite(result.values[f"{metric}/t/seg=a"])


# ----------------------------------------------------------------------------- the rate metrics


@pytest.mark.parametrize("count", [-1, 2**63, np.int64(-3)])
def test_the_rate_metrics_refuse_a_count_in_the_same_words(count):
    """One check for an int count serves both: the messages differ by the argument's name only, nothing changes."""
    throughput, qps = tmx.Throughput(warmup_steps=0), tmx.TowerQPS(warmup_steps=0)
    with pytest.raises(ValueError) as by_throughput:
        throughput.update(count)
    with pytest.raises(ValueError) as by_qps:
        qps.update(num_examples=count)
    expected = f"Expected `{{}}` as an int to be a non-negative int64 (0 to 2**63 - 1), got {int(count)}."
    assert str(by_throughput.value) == expected.format("batch")
    assert str(by_qps.value) == expected.format("num_examples")
    assert float(throughput.total_examples) == 0.0 and throughput._steps == 0 and qps._steps == 0
