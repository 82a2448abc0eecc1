"""What a Trainer user's model and ``label_names`` give ``pointwise_compute_metrics`` by mistake, told apart.

Probabilities given to the builder built for logits (its default): a model that ends in a sigmoid
(trained with ``BCELoss``) returns probabilities, which ``from_logits=True`` reads as logits and scores as
``sigmoid(p)`` (in [0.5, 0.73]): AUC is unchanged, NE, log loss and calibration are not. The values stay
those the docs promise (checked against scikit-learn on ``sigmoid(p)``); a ``UserWarning`` naming the
tasks whose scores of the whole evaluation lie in [0, 1] says to build with ``from_logits=False``.

A sample-weight array listed in ``label_names`` next to the tasks' labels: an error that says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import EvalPrediction  # noqa: E402

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics  # noqa: E402

N = 40


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probabilities = rng.uniform(0.05, 0.95, size=(N, 2))
    return probabilities, (rng.random((N, 2)) < probabilities).astype(np.int64)


def _reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NE and log loss of ``scores`` read as probabilities (scikit-learn), AUC by scikit-learn."""
    ctr = labels.mean()
    loss = log_loss(labels, scores, labels=[0, 1])
    return {"ne": loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)), "auc": roc_auc_score(labels, scores)}


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if "from_logits=False" in str(w.message)]


def test_probabilities_read_as_logits_warn_and_keep_the_documented_values():
    probabilities, labels = _data()
    compute_metrics = pointwise_compute_metrics(["ne", "auc"], tasks=("click", "like"))
    values, messages = _caught(lambda: compute_metrics(EvalPrediction(predictions=probabilities, label_ids=labels)))
    assert len(messages) == 1 and "'click'" in messages[0] and "'like'" in messages[0]
    for i, task in enumerate(("click", "like")):
        expected = _reference(1 / (1 + np.exp(-probabilities[:, i])), labels[:, i])  # sigmoid(p), as documented
        assert values[f"ne/{task}"] == pytest.approx(expected["ne"], rel=1e-9)
        assert values[f"auc/{task}"] == pytest.approx(expected["auc"], rel=1e-9)
    # built for probabilities: no warning, and the values of the probabilities themselves
    right = pointwise_compute_metrics(["ne", "auc"], tasks=("click", "like"), from_logits=False)
    values, messages = _caught(lambda: right(EvalPrediction(predictions=probabilities, label_ids=labels)))
    assert messages == []
    assert values["ne/like"] == pytest.approx(_reference(probabilities[:, 1], labels[:, 1])["ne"], rel=1e-9)


def test_only_the_tasks_whose_every_score_is_in_0_1_are_named():
    probabilities, labels = _data(1)
    heads = (probabilities[:, 0], np.log(probabilities[:, 1] / (1 - probabilities[:, 1])))  # like: logits
    compute_metrics = pointwise_compute_metrics(["ne"], tasks=("click", "like"))
    _, messages = _caught(lambda: compute_metrics(EvalPrediction(predictions=heads, label_ids=labels)))
    assert len(messages) == 1 and "'click'" in messages[0] and "'like'" not in messages[0]
    logits = np.log(probabilities / (1 - probabilities))
    _, messages = _caught(lambda: compute_metrics(EvalPrediction(predictions=logits, label_ids=labels)))
    assert messages == []


def test_batch_mode_judges_the_whole_evaluation_once():
    probabilities, labels = _data(2)
    compute_metrics = pointwise_compute_metrics(["ne"])
    batches = [slice(0, 16), slice(16, 32), slice(32, N)]

    def evaluate(scores):
        out = {}
        for j, rows in enumerate(batches):
            result = compute_metrics(
                EvalPrediction(predictions=scores[rows], label_ids=labels[rows, 0]),
                compute_result=j == len(batches) - 1,
            )
            out.update(result)
        return out

    scores = probabilities[:, 0].copy()
    _, messages = _caught(lambda: evaluate(scores))
    assert len(messages) == 1
    scores[20] = -0.5  # one logit below 0 in the second batch: logits, whatever the other batches hold
    _, messages = _caught(lambda: evaluate(scores))
    assert messages == []
    # a new evaluation starts afresh: all in [0, 1] again warns again
    _, messages = _caught(lambda: evaluate(probabilities[:, 0]))
    assert len(messages) == 1


class SigmoidModel(nn.Module):
    """A click model that ends in a sigmoid, as one trained with ``BCELoss``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, features, labels=None):
        probabilities = torch.sigmoid(self.linear(features)).squeeze(-1)
        return {"loss": probabilities.sum() * 0, "logits": probabilities}


@pytest.mark.parametrize("batch_eval_metrics", [False, True])
def test_a_sigmoid_model_in_trainer_evaluate_is_warned_of(batch_eval_metrics, tmp_path):
    rng = np.random.default_rng(3)
    features = torch.tensor(rng.normal(size=(N, 3)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, N))
    dataset = [{"features": f, "labels": y} for f, y in zip(features, labels)]
    args = transformers.TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=16, report_to=[], use_cpu=True, batch_eval_metrics=batch_eval_metrics
    )
    model = SigmoidModel()
    trainer = transformers.Trainer(
        model=model, args=args, eval_dataset=dataset, compute_metrics=pointwise_compute_metrics(["ne", "auc"])
    )
    values, messages = _caught(trainer.evaluate)
    assert len(messages) == 1 and "'task'" in messages[0]
    with torch.no_grad():
        scores = model(features)["logits"].double().numpy()
    expected = _reference(1 / (1 + np.exp(-scores)), labels.numpy())
    assert values["eval_ne"] == pytest.approx(expected["ne"], rel=1e-6)
    assert values["eval_auc"] == pytest.approx(expected["auc"], rel=1e-9)


@pytest.mark.parametrize(
    ("metrics", "options", "warned"),
    [
        (["auc", "auprc", "ctr", "num_positive_samples"], {}, False),  # the order alone, or no score
        (["auc"], {"num_bins": 64}, True),  # a histogram of sigmoid(p): other bins
        (["auc", "calibration"], {}, True),
        (["accuracy"], {}, True),  # sigmoid(p) >= 0.5 for every p >= 0
    ],
)
def test_warned_only_where_a_metric_changes_under_the_sigmoid(metrics, options, warned):
    probabilities, labels = _data(4)
    compute_metrics = pointwise_compute_metrics(metrics, **options)
    values, messages = _caught(
        lambda: compute_metrics(EvalPrediction(predictions=probabilities[:, 0], label_ids=labels[:, 0]))
    )
    assert len(messages) == int(warned)
    if "auc" in metrics and not options:
        assert values["auc"] == pytest.approx(roc_auc_score(labels[:, 0], probabilities[:, 0]), rel=1e-12)


@pytest.mark.parametrize("tasks", [("click",), ("click", "like")])
def test_a_weight_array_among_label_names_is_explained(tasks):
    """A weight (or id) array listed in ``label_names`` next to the tasks' labels: one label column too many.

    The error said "`tasks=` must name one task per prediction column" (or "give predictions and labels one
    shape"), pointing at `tasks=`; it now says what the extra column is taken for and how to name it as weights."""
    probabilities, labels = _data(5)
    t = len(tasks)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, N)
    label_ids = (*(labels[:, i] for i in range(t)), weights)  # the Trainer's tuple: one array per label_names entry
    compute_metrics = pointwise_compute_metrics(["ne"], tasks=tasks, from_logits=False)
    predictions = probabilities[:, 0] if t == 1 else probabilities
    with pytest.raises(ValueError, match=rf"{t + 1} label columns for {t} task") as error:
        compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids))
    assert "weights='weight'" in str(error.value) and "label_names" in str(error.value)
