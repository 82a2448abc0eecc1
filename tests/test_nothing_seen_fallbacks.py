"""The fallback values of "nothing seen" that are not ``nan`` (docs/policies.md, "Nothing seen"), and the reasons.

* ``HindsightTargetPR``'s threshold follows TorchRec's ``compute_threshold_idx`` (written below in plain
  Python from TorchRec's source: the first threshold whose precision, 0 where no prediction reaches it, is
  at least the target, else the last one), also when nothing was seen;
* ``CalibrationFreeNE`` says "no samples seen" for a task that saw no weight, as every other ratio;
* ``evaluate(by=...)``'s per-segment ``xauc``/``regression_auc`` and ranking metrics name a segment whose rows
  all weigh 0 with the segment's reason, as the other families do (the reason of that segment's rows alone);
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


# ----------------------------------------------------------------------------- evaluate's per-segment reasons

_SEGMENTED = pa.table(
    {
        "p": [0.2, 0.7, 0.4, 0.6, 0.3, 0.5, 0.9, 0.8, 0.1],
        "y": [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        "y2": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        "w": [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "seg": ["a", "a", "b", "b", "a", "c", "c", "b", "b"],
        "sess": [0, 0, 1, 1, 0, 2, 2, 1, 3],
    }
)


def _reasons(result: Any, where: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in result.warnings if where in line]


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.parametrize("tasks", [1, 2])
@pytest.mark.parametrize("metric", ["xauc", "regression_auc", "ndcg", "mrr@2", "ne", "auc", "gauc"])
def test_evaluate_segment_reasons_are_those_of_the_segments_rows_alone(metric, tasks):
    """Each segment's line gives the reason one evaluation of that segment's rows alone gives, "no samples seen"
    said of the segment: b's rows all weigh 0, c's hold weight on one label value (the metric's own reason)."""
    options = {"weights": "w", "session": "sess", **({"user": "sess"} if metric == "gauc" else {})}
    heads = {"t": ("p", "y"), "u": ("p", "y2")} if tasks == 2 else {"t": ("p", "y")}
    result = evaluate(_SEGMENTED, heads, [metric], by=["seg"], **options)
    for segment in ("b", "c"):
        rows = _SEGMENTED.filter(pa.compute.equal(_SEGMENTED["seg"], segment))
        alone = evaluate(rows, heads, [metric], **options)
        # (a segment's lines are per task, the lines over all rows join the tasks of one reason)
        expected = {reason.replace(NO_SAMPLES, SEGMENT_UNSEEN) for reason in _reasons(alone, "over all rows")}
        assert set(_reasons(result, f"seg={segment}")) == expected, (segment, result.warnings, alone.warnings)
    assert _reasons(result, "seg=b") and all(SEGMENT_UNSEEN in r for r in _reasons(result, "seg=b"))


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


class Ticks:
    """A clock reading 0, 1, 2, ... seconds."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _scalars(value: Any, shape: tuple[int, ...] = ()) -> dict[str, float | list[float]]:
    """Each entry's value, once it is a float64 tensor of ``shape`` (what the docs say a user gets back)."""
    entries = value if isinstance(value, dict) else {"value": value}
    for key, tensor in entries.items():
        assert tensor.dtype == torch.float64 and tuple(tensor.shape) == shape, (key, tensor)
    return {key: tensor.tolist() for key, tensor in entries.items()}


def _nan_rates(values: dict[str, Any]) -> bool:
    return all(math.isnan(values[k]) for k in ("lifetime_throughput", "window_throughput"))


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_the_rate_metrics_before_a_timed_step_after_one_after_reset_and_after_a_load(num_tasks):
    """Warm-up of 2, a clock of 1 s per update, 5 examples per step: Throughput ``nan`` (the warning says why) and
    TowerQPS 0 without a warning until a step after warm-up is timed, then 5 per second; float64 scalars
    (``(T,)`` for TowerQPS's tasks) at every stage; a checkpoint brings its rates, or its 0 / ``nan``."""
    shape = () if num_tasks == 1 else (num_tasks,)
    throughput = tmx.Throughput(warmup_steps=2, window_seconds=10.0, clock=Ticks())
    qps = tmx.TowerQPS(num_tasks, warmup_steps=2, window_seconds=10.0, clock=Ticks())
    bare = tmx.TowerQPS(num_tasks, warmup_steps=2, clock=Ticks())  # the lifetime rate alone
    preds = torch.zeros(num_tasks, 5) if num_tasks > 1 else torch.zeros(5)
    for metric in (throughput, qps, bare):
        metric.persistent(True)

    def step() -> None:
        throughput.update(5)
        qps.update(preds)
        bare.update(preds)

    def check(stage: str, examples: float, rate: float | None, why: str | None) -> None:
        """``rate`` None: before a timed step (Throughput nan with ``why``, TowerQPS 0)."""
        value, messages = caught(throughput.compute)
        got = _scalars(value)
        assert got["total_examples"] == examples, (stage, got)
        if rate is None:
            assert _nan_rates(got) and len(messages) == 1 and why in messages[0], (stage, got, messages)
        else:
            assert got["lifetime_throughput"] == rate and messages == [], (stage, got, messages)
        zero = [0.0] * num_tasks if shape else 0.0
        per_task = (lambda x: [x] * num_tasks) if shape else (lambda x: x)
        want = zero if rate is None else per_task(rate)
        value, messages = caught(qps.compute)
        got = _scalars(value, shape)
        assert got == {"lifetime_qps": want, "window_qps": want, "total_examples": per_task(examples)}, (stage, got)
        assert messages == [], (stage, messages)
        value, messages = caught(bare.compute)
        assert _scalars(value, shape) == {"value": want} and messages == [], (stage, value, messages)

    check("no update", 0.0, None, NO_SAMPLES)
    step()
    check("one step", 5.0, None, "1 of its 2 warm-up updates")
    saved_early = [m.state_dict() for m in (throughput, qps, bare)]
    step()
    check("warmed up", 10.0, None, "no timed step after warm-up")
    step()
    step()  # two updates after the warm-up's last reading: 10 examples in 2 seconds
    check("two timed steps", 20.0, 5.0, None)
    saved = [m.state_dict() for m in (throughput, qps, bare)]
    for metric in (throughput, qps, bare):
        metric.reset()
    check("after reset", 0.0, None, NO_SAMPLES)
    for metric, state in zip((throughput, qps, bare), saved, strict=True):
        metric.load_state_dict(state)
    check("loaded after timed steps", 20.0, 5.0, None)
    step()  # TowerQPS warms up again, Throughput restarts its clock: neither rate changes
    check("one step after the load", 25.0, 5.0, None)
    for metric, state in zip((throughput, qps, bare), saved_early, strict=True):
        metric.load_state_dict(state)
    check("loaded from before a timed step", 5.0, None, "1 of its 2 warm-up updates")


def test_a_torchrec_module_reports_both_rates_before_a_timed_step_and_after_a_load():
    """``key_style="torchrec"``: the module's Throughput keys are ``nan`` (TorchRec leaves them out; documented),
    a TowerQPS given as a state metric reports TorchRec's 0; a module checkpoint brings the throughput's rates."""

    def build() -> tuple[tmx.RecMetricModule, tmx.TowerQPS]:
        qps = tmx.TowerQPS(warmup_steps=2, window_seconds=10.0, clock=Ticks())
        module = tmx.RecMetricModule(
            ["click"],
            {"ctr": "ctr"},
            key_style="torchrec",
            throughput=tmx.Throughput(warmup_steps=2, window_seconds=10.0, clock=Ticks()),
            state_metrics={"tower_qps": qps},
        )
        return module, qps

    module, qps = build()
    rates = ("lifetime_throughput", "window_throughput", "attempt_throughput")
    values, messages = caught(module.compute)
    assert all(math.isnan(float(values[f"throughput-throughput|{k}"])) for k in rates), values
    assert float(values["throughput-throughput|total_examples"]) == 0.0
    assert [float(values[f"tower_qps-tower_qps|{k}"]) for k in ("lifetime_qps", "window_qps")] == [0.0, 0.0]
    assert [m for m in messages if m.startswith("throughput")] == [
        f"throughput is undefined: {NO_SAMPLES}; returning nan."
    ]
    assert not [m for m in messages if "qps" in m], messages
    batch = {"prediction": torch.full((4,), 0.5), "label": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    for _ in range(4):  # 2 warm-up steps, then 2 timed ones of 1 s and 4 rows each
        module.update(batch)
        qps.update(batch["prediction"])
    values, _ = caught(module.compute)
    assert float(values["throughput-throughput|lifetime_throughput"]) == 4.0
    assert float(values["tower_qps-tower_qps|lifetime_qps"]) == 4.0
    restored, _ = build()
    restored.load_state_dict(module.state_dict())
    values, messages = caught(restored.compute)
    assert float(values["throughput-throughput|lifetime_throughput"]) == 4.0, values
    assert float(values["throughput-throughput|total_examples"]) == 16.0 and not messages, messages


def test_both_rate_metrics_describe_the_time_before_a_timed_step_in_the_same_words():
    """The docstrings and the docs page say "until an update after warm-up has been timed" for both."""
    from pathlib import Path

    phrase = "until an update after warm-up has been timed"
    flat = [" ".join((cls.__doc__ or "").lower().split()) for cls in (tmx.Throughput, tmx.TowerQPS)]
    assert all(phrase in doc for doc in flat)
    page = " ".join(Path(__file__).resolve().parents[1].joinpath("docs", "windows.md").read_text().lower().split())
    assert page.count(phrase) >= 2
