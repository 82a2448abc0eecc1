"""``metric_for_best_model`` naming a metric of ``compute_metrics`` whose better direction the Trainer guesses wrong.

``TrainingArguments`` guesses ``greater_is_better`` from the name alone: higher is better unless it ends in
``loss``. Every lower-is-better key of a multi-task ``pointwise_compute_metrics`` ends in its task
(``"ne/click"``, ``"log_loss/click"``) and ``"ne"`` of one task ends in nothing of the kind, so
``load_best_model_at_end`` keeps the checkpoint of the *highest* NE (the worst) and ``EarlyStoppingCallback`` stops
while the model improves, without a word. ``compute_metrics.callback()`` warns when training starts.

The reference for the Trainer's choice is its own log history: the NE values it logged at each evaluation,
of which ``state.best_metric`` is the largest under the guess and the smallest with ``greater_is_better=False``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchmetrics_ext.integrations.huggingface import (  # noqa: E402
    pointwise_compute_metrics,
    ranking_compute_metrics,
)

N = 48
rng = np.random.default_rng(0)
X = rng.normal(size=(N, 4)).astype(np.float32)
CLICK = (rng.random(N) < 1 / (1 + np.exp(-2 * X[:, 0]))).astype(np.int64)
LIKE = (rng.random(N) < 1 / (1 + np.exp(-2 * X[:, 1]))).astype(np.int64)


class Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(X[i]), "click": torch.tensor(CLICK[i]), "like": torch.tensor(LIKE[i])}


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)

    def forward(self, x, click=None, like=None):
        logits = self.net(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.stack([click, like], 1).float())
        return {"loss": loss, "logits": logits}


def _warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if "greater_is_better" in str(w.message)]


def _train(tmp_path, **options):
    torch.manual_seed(0)
    compute_metrics = pointwise_compute_metrics(["ne", "auc"], tasks=("click", "like"))
    args = transformers.TrainingArguments(
        str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=8, eval_strategy="steps",
        eval_steps=2, save_strategy="steps", save_steps=2, load_best_model_at_end=True, label_names=["click", "like"],
        report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=0.3, **options,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=TwoHeads(), args=args, train_dataset=Rows(), eval_dataset=Rows(), compute_metrics=compute_metrics,
        callbacks=[compute_metrics.callback()],
    )  # fmt: skip
    messages = _warnings(trainer.train)
    logged = [entry["eval_ne/click"] for entry in trainer.state.log_history if "eval_ne/click" in entry]
    return trainer.state.best_metric, logged, messages


def test_the_guess_keeps_the_worst_ne_checkpoint_and_the_callback_says_so(tmp_path):
    best, logged, messages = _train(tmp_path / "guess", metric_for_best_model="ne/click")
    assert len(logged) == 4 and min(logged) < max(logged)
    assert best == pytest.approx(max(logged))  # the Trainer's guess: the highest NE, the worst model
    assert len(messages) == 1
    assert "'ne/click'" in messages[0] and "greater_is_better=False" in messages[0]
    best, logged, messages = _train(tmp_path / "said", metric_for_best_model="ne/click", greater_is_better=False)
    assert best == pytest.approx(min(logged))
    assert messages == []


def _on_train_begin(compute_metrics, metric, greater_is_better=None) -> list[str]:
    args = transformers.TrainingArguments(
        "out", metric_for_best_model=metric, greater_is_better=greater_is_better, report_to=[]
    )
    callback = compute_metrics.callback()
    return _warnings(lambda: callback.on_train_begin(args, None, None))


TWO = pointwise_compute_metrics(
    ["ne", "log_loss", "auc", "calibration", "segmented_ne", "mse", "ndcg@10"],
    tasks=("click", "like"),
    label_names=("click", "like", "country", "session"),
    segments="country",
    sessions="session",
    num_segments=3,
)
ONE = pointwise_compute_metrics(["ne", "auc", "ctr"])
RANKING = ranking_compute_metrics(ks=(1, 5), metrics=("recall", "mrr"))


@pytest.mark.parametrize(
    ("compute_metrics", "metric", "greater_is_better", "warned"),
    [
        (TWO, "ne/click", None, True),  # guessed True
        (TWO, "eval_log_loss/like", None, True),  # the Trainer's own eval_ prefix
        (TWO, "valid_ne/like", None, True),  # evaluate(eval_dataset={"valid": ...}): eval_valid_ne/like
        (TWO, "segmented_ne.2/click", None, True),
        (TWO, "mse/like", None, True),
        (TWO, "ne/click", False, False),  # said
        (TWO, "auc/click", None, False),
        (TWO, "auc/click", False, True),  # said, the wrong way
        (TWO, "ndcg@10/like", None, False),
        (TWO, "calibration/click", None, False),  # best at 1: no direction
        (TWO, "ne/buy", None, False),  # no task of this callable
        (TWO, "loss", None, False),  # the Trainer's own eval_loss
        (ONE, "ne", None, True),
        (ONE, "eval_ne", False, False),
        (ONE, "ctr", None, False),
        (ONE, "auc", None, False),
        (RANKING, "MRR@5", None, False),
        (RANKING, "Recall@1", False, True),
    ],
)
def test_the_callback_warns_of_a_best_model_metric_read_the_wrong_way(
    compute_metrics, metric, greater_is_better, warned
):
    messages = _on_train_begin(compute_metrics, metric, greater_is_better)
    assert len(messages) == int(warned), messages
    if warned:
        assert repr(metric) in messages[0]


def test_no_best_model_metric_no_warning():
    args = transformers.TrainingArguments("out", report_to=[])
    assert _warnings(lambda: TWO.callback().on_train_begin(args, None, None)) == []


def test_the_warning_names_the_train_line(tmp_path):
    compute_metrics = pointwise_compute_metrics(["ne"], tasks=("click", "like"))
    args = transformers.TrainingArguments(
        str(tmp_path), max_steps=1, save_strategy="no", metric_for_best_model="ne/like", label_names=["click", "like"],
        report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=TwoHeads(), args=args, train_dataset=Rows(), callbacks=[compute_metrics.callback()]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = lambda: trainer.train()  # noqa: E731
        train()
    found = {(w.filename, w.lineno) for w in caught if "greater_is_better" in str(w.message)}
    assert found == {(__file__, train.__code__.co_firstlineno)}
