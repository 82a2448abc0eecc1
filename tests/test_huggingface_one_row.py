"""A multi-task model's eval batch of one example, as a real ``transformers.Trainer`` hands it to the adapter.

A model that squeezes its ``(B, T)`` logits (``logits.squeeze()``) gives ``(T,)`` for a batch of one
row, and per-task heads squeezed the same way give 0-dim heads. What the Trainer then passes (seen
with transformers 5, accelerate 1.16, one process):

* eval batches of one (``per_device_eval_batch_size=1``), kept apart (``batch_eval_metrics=True`` or
  ``eval_do_concat_batches=False``) or a one-row eval set: ``(T,)`` scores next to ``(1, T)`` labels
  (or one ``(1,)`` label array per ``label_names`` entry): one example, read as ``(1, T)``;
* those batches concatenated: ``(N * T,)`` scores next to ``(N, T)`` labels: refused (the rows' layout
  is not the adapter's to guess);
* a last, incomplete batch of one row: accelerate's ``gather_for_metrics`` cuts the batch to its one
  row, which leaves the squeezed ``(T,)`` scores their first task's score, ``(1,)``: refused (with the
  batches concatenated the Trainer itself fails on it);
* 0-dim per-task heads (a list or tuple of them): one example's heads, in every mode.

References: scikit-learn's ``log_loss`` and numpy means on the model's own logits, computed here without
the Trainer. ``TWO_TASKS_ROW_SEEDS=n`` runs the random one-row checks over ``n`` seeds (default 3).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn

transformers = pytest.importorskip("transformers")
# one example's logits, often in [0, 1]: the warning of probabilities read as logits is no concern here
pytestmark = pytest.mark.filterwarnings("ignore:pointwise_compute_metrics reads the predictions as logits:UserWarning")
pytest.importorskip("accelerate")

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics  # noqa: E402

TASKS = ("click", "like")
SEEDS = range(int(os.environ.get("TWO_TASKS_ROW_SEEDS", "3")))


class TwoTaskModel(nn.Module):
    """One linear layer giving ``(B, 2)`` logits, returned in one of the ways users write their models."""

    def __init__(self, returns: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 2)
        self.returns = returns

    def forward(self, x, labels=None, click=None, like=None):
        logits = self.linear(x)
        target = labels if labels is not None else torch.stack([click, like], -1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target.float())
        if self.returns == "squeezed-matrix":  # (B, 2) -> (2,) for a batch of one
            return {"loss": loss, "logits": logits.squeeze()}
        if self.returns == "squeezed-head-list":  # an nn.ModuleList-style list of heads, each (B, 1) -> 0-dim
            return {"loss": loss, "logits": [logits[:, :1].squeeze(), logits[:, 1:].squeeze()]}
        if self.returns == "squeezed-head-tuple":  # two outputs: the Trainer's tuple of heads, each 0-dim
            return {"loss": loss, "click": logits[:, :1].squeeze(), "like": logits[:, 1:].squeeze()}
        raise AssertionError(self.returns)


def _data(n: int, label_names: bool):
    rng = np.random.default_rng(n)
    x = torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    y = rng.integers(0, 2, (n, 2))
    if label_names:  # one label column per task: the Trainer passes one label array per entry (a tuple)
        rows = [{"x": x[i], "click": torch.tensor(y[i, 0]), "like": torch.tensor(y[i, 1])} for i in range(n)]
    else:
        rows = [{"x": x[i], "labels": torch.tensor(y[i])} for i in range(n)]
    return rows, x, y


def _reference(x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """scikit-learn's log loss and numpy's label mean per task, on the model's own logits (no Trainer)."""
    with torch.no_grad():
        logits = TwoTaskModel("squeezed-matrix").linear(x).double().numpy()
    p = 1 / (1 + np.exp(-logits))
    expected = {}
    for i, task in enumerate(TASKS):
        expected[f"eval_log_loss/{task}"] = log_loss(y[:, i], p[:, i], labels=[0, 1])
        expected[f"eval_ctr/{task}"] = float(y[:, i].mean())
        expected[f"eval_sum_weights/{task}"] = float(len(y))
    return expected


def _evaluate(tmp_path, returns: str, n: int, batch_size: int, label_names: bool, **options):
    rows, x, y = _data(n, label_names)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        per_device_eval_batch_size=batch_size,
        label_names=list(TASKS) if label_names else None,
        **options,
    )
    compute_metrics = pointwise_compute_metrics(["log_loss", "ctr", "sum_weights"], tasks=TASKS)
    run = transformers.Trainer(
        model=TwoTaskModel(returns), args=args, eval_dataset=rows, compute_metrics=compute_metrics
    )
    return run.evaluate, _reference(x, y)


MODES = {
    "whole-arrays": {},
    "batches-kept-apart": {"eval_do_concat_batches": False},
    "batch-eval-metrics": {"batch_eval_metrics": True},
}


@pytest.mark.parametrize("label_names", [False, True], ids=["labels-matrix", "label-names"])
@pytest.mark.parametrize(
    ("mode", "n"),
    [
        ("whole-arrays", 1),
        ("batches-kept-apart", 1),
        ("batches-kept-apart", 2),  # as many batches as tasks: read transposed, silently
        ("batches-kept-apart", 5),
        ("batch-eval-metrics", 1),
        ("batch-eval-metrics", 5),
    ],
)
def test_squeezed_scores_of_batches_of_one_are_one_example_each(tmp_path, mode, n, label_names):
    """``logits.squeeze()`` on eval batches of one row: ``(2,)`` scores next to ``(1, 2)`` labels were refused
    (``Expected (N, 2) predictions``), and with batches kept apart and as many batches as tasks they were read as
    per-task heads: the tasks' columns transposed (log loss 0.67 instead of 0.89), silently. Each is one example."""
    evaluate, expected = _evaluate(tmp_path, "squeezed-matrix", n, 1, label_names, **MODES[mode])
    got = evaluate()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("returns", ["squeezed-head-list", "squeezed-head-tuple"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("n", "batch_size"), [(1, 1), (5, 1), (3, 2)], ids=["one-row", "rows-of-one", "last-of-one"])
def test_squeezed_per_task_heads_of_a_batch_of_one_are_one_example(tmp_path, returns, mode, n, batch_size):
    """Per-task heads squeezed to 0-dim on a batch of one: as a list (an ``nn.ModuleList``'s heads) they failed
    with torch's ``zero-dimensional tensor cannot be concatenated``; as a tuple they were read. Both are one
    example's heads, whatever the mode."""
    evaluate, expected = _evaluate(tmp_path, returns, n, batch_size, False, **MODES[mode])
    got = evaluate()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("mode", ["batches-kept-apart", "batch-eval-metrics"])
def test_a_squeezed_last_batch_of_one_cut_by_the_trainer_is_refused(tmp_path, mode):
    """Batches of 2, then one row: the Trainer cuts the squeezed ``(2,)`` scores to the batch's one row, ``(1,)``
    (the click score alone). No reading can give the like score back: refused, saying why and what to return."""
    evaluate, _ = _evaluate(tmp_path, "squeezed-matrix", 3, 2, False, **MODES[mode])
    with pytest.raises(ValueError, match=r"got predictions of shape \(1,\) and labels of shape \(1, 2\)") as info:
        evaluate()
    message = str(info.value)
    assert "squeeze(-1)" in message and "last, incomplete eval batch" in message and "first task" in message


def test_squeezed_batches_of_one_concatenated_are_refused(tmp_path):
    """Batches of one concatenated by the Trainer: ``(3 * 2,)`` scores next to ``(3, 2)`` labels. Refused (was: the
    same refusal, without the cause): which score is which task's is for the model to say."""
    evaluate, _ = _evaluate(tmp_path, "squeezed-matrix", 3, 1, False)
    with pytest.raises(ValueError, match=r"got predictions of shape \(6,\) and labels of shape \(3, 2\)") as info:
        evaluate()
    assert "squeeze(-1)" in str(info.value) and "concatenat" in str(info.value)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_one_example_squeezed_on_either_side_equals_its_unsqueezed_row(seed, num_tasks):
    """``(T,)`` scores next to ``(1, T)`` labels, per-task label arrays of one row, or ``(1, T)`` scores next to
    ``(T,)`` labels: one example, the same values as the ``(1, T)`` row (numpy: CTR per task, and scikit-learn's
    log loss), in whole-array and batch mode, with an ignored label too."""
    rng = np.random.default_rng(seed)
    tasks = ("a", "b", "c")[:num_tasks]
    z, y = rng.normal(size=(4, num_tasks)), rng.integers(0, 2, (4, num_tasks))
    y[3, 0] = -100  # the last row has no label for task "a"
    compute = pointwise_compute_metrics(["ctr", "log_loss", "sum_weights"], tasks=tasks, ignore_index=-100)
    p = 1 / (1 + np.exp(-z))

    def reference(rows):
        values = {}
        for i, task in enumerate(tasks):
            keep = [r for r in rows if y[r, i] != -100]
            values[f"ctr/{task}"] = y[keep, i].mean()
            values[f"log_loss/{task}"] = log_loss(y[keep, i], p[keep, i], labels=[0, 1])
            values[f"sum_weights/{task}"] = float(len(keep))
        return values

    for r in (0, 1):
        for predictions, labels in (
            (z[r], y[r : r + 1]),
            (z[r], tuple(y[r : r + 1, i] for i in range(num_tasks))),
            (torch.as_tensor(z[r]), torch.as_tensor(y[r : r + 1])),
            (z[r : r + 1], y[r]),
        ):
            got = compute(SimpleNamespace(predictions=predictions, label_ids=labels))
            assert got == pytest.approx(reference([r]), rel=1e-9)
    # batch mode: two rows, then one with squeezed scores, then one with squeezed labels (its task "a" ignored)
    compute(SimpleNamespace(predictions=torch.as_tensor(z[:2]), label_ids=torch.as_tensor(y[:2])), False)
    compute(SimpleNamespace(predictions=torch.as_tensor(z[2]), label_ids=torch.as_tensor(y[2:3])), False)
    got = compute(SimpleNamespace(predictions=torch.as_tensor(z[3:]), label_ids=torch.as_tensor(y[3])), True)
    assert got == pytest.approx(reference([0, 1, 2, 3]), rel=1e-9)


@pytest.mark.parametrize(
    ("predictions", "labels", "match"),
    [
        # (T,) next to (T,): one example's T tasks, or T examples of one task (`tasks=` wrong): not guessed
        (np.zeros(2), np.array([0, 1]), r"got predictions of shape \(2,\) and labels of shape \(2,\): ambiguous"),
        # one score for an example of two tasks: a single-head model, or the Trainer's cut of a squeezed row
        (np.zeros(1), np.array([[0, 1]]), r"got predictions of shape \(1,\) and labels of shape \(1, 2\)"),
        (np.array(0.5), np.array([[0, 1]]), r"got predictions of shape \(1,\) and labels of shape \(1, 2\)"),
        (np.zeros(3), np.array([[0, 1], [1, 0], [0, 0]]), r"got predictions of shape \(3,\) and labels of shape"),
        # one example's scores next to several examples' labels
        (np.zeros(2), np.array([[0, 1], [1, 0]]), r"got predictions of shape \(2,\) and labels of shape \(2, 2\)"),
        (np.zeros((1, 2)), np.array([0, 1, 1]), r"got predictions of shape \(1, 2\) and labels of shape \(3,\)"),
    ],
    ids=["both-squeezed", "one-score", "0-dim-score", "one-score-each", "two-label-rows", "three-labels"],
)
def test_shapes_that_do_not_say_one_example_are_refused_naming_the_accepted_ones(predictions, labels, match):
    compute = pointwise_compute_metrics(["ctr"], tasks=TASKS)
    with pytest.raises(ValueError, match=match) as info:
        compute(SimpleNamespace(predictions=predictions, label_ids=labels))
    message = str(info.value)
    assert "(N, 2)" in message and "per-task heads" in message and "(2,) predictions next to (1, 2) labels" in message
    # nothing was counted: the next call is an evaluation of its own row only
    assert compute(SimpleNamespace(predictions=np.zeros((1, 2)), label_ids=np.array([[1, 0]]))) == {
        "ctr/click": 1.0,
        "ctr/like": 0.0,
    }
