"""A regression head (watch time, rating) scored by ``pointwise_compute_metrics`` built for logits, its default.

The builder reads predictions as logits unless ``from_logits=False``, and feeds the metrics of values (MSE, MAE,
R²...) ``sigmoid(predictions)``, which is right for a click head (MSE is then the Brier score). A regression head's
predictions are no logits: with watch-time labels around 5, MSE came out about 21 (that of ``sigmoid(p)``, in
(0, 1)) against 0.25 (numpy on the predictions themselves), without a word. Labels outside [0, 1] cannot be
those of a Brier score, so the evaluation warns, naming the task; the values stay those the docs promise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import EvalPrediction

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics

rng = np.random.default_rng(0)
N = 64
WATCH = rng.normal(5.0, 2.0, N)
PRED = WATCH + rng.normal(0.0, 0.5, N)
CLICK = rng.integers(0, 2, N)
LOGIT = rng.normal(size=N)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if "outside [0, 1]" in str(w.message)]


def test_a_regression_head_read_as_logits_is_warned_of_with_the_documented_values():
    compute_metrics = pointwise_compute_metrics(["mse", "mae"])
    values, messages = _caught(lambda: compute_metrics(EvalPrediction(predictions=PRED, label_ids=WATCH)))
    assert values["mse"] == pytest.approx(np.mean((sigmoid(PRED) - WATCH) ** 2), rel=1e-9)  # as documented
    assert values["mae"] == pytest.approx(np.mean(np.abs(sigmoid(PRED) - WATCH)), rel=1e-9)
    assert len(messages) == 1 and "'task'" in messages[0] and "from_logits=False" in messages[0]
    right = pointwise_compute_metrics(["mse", "mae"], from_logits=False)
    values, messages = _caught(lambda: right(EvalPrediction(predictions=PRED, label_ids=WATCH)))
    assert messages == []
    assert values["mse"] == pytest.approx(np.mean((PRED - WATCH) ** 2), rel=1e-9)


def test_a_brier_score_of_logits_and_order_only_metrics_say_nothing():
    brier = pointwise_compute_metrics(["mse"])
    values, messages = _caught(lambda: brier(EvalPrediction(predictions=LOGIT, label_ids=CLICK)))
    assert messages == []
    assert values["mse"] == pytest.approx(np.mean((sigmoid(LOGIT) - CLICK) ** 2), rel=1e-9)
    order = pointwise_compute_metrics(["xauc", "regression_auc"])  # the sigmoid keeps the order: nothing changes
    assert _caught(lambda: order(EvalPrediction(predictions=PRED, label_ids=WATCH)))[1] == []


def test_only_the_regression_task_is_named_once_per_batched_evaluation():
    compute_metrics = pointwise_compute_metrics(["mse"], tasks=("click", "watch"))
    predictions, labels = np.stack([LOGIT, PRED], 1), np.stack([CLICK, WATCH], 1)

    def batched():
        for start in range(0, N, 24):  # batches of 24, 24 and 16, as batch_eval_metrics=True passes them
            end = min(start + 24, N)
            batch = EvalPrediction(torch.tensor(predictions[start:end]), torch.tensor(labels[start:end]))
            out = compute_metrics(batch, compute_result=end == N)
        return out

    values, messages = _caught(batched)
    assert len(messages) == 1 and "'watch'" in messages[0] and "'click'" not in messages[0]
    assert values["mse/click"] == pytest.approx(np.mean((sigmoid(LOGIT) - CLICK) ** 2), rel=1e-9)
    assert values["mse/watch"] == pytest.approx(np.mean((sigmoid(PRED) - WATCH) ** 2), rel=1e-9)
    _, messages = _caught(batched)  # the next evaluation starts afresh, and warns again
    assert len(messages) == 1
