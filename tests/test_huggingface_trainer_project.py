"""A Trainer user's two-head CTR model, end to end: every number the Trainer returns and logs.

A tiny BERT (built from a config, no download) with a click and a like head returned as a
``ModelOutput``, labels under two ``label_names``, an eval set that the eval batch size does not
divide, trained two steps with an evaluation after the last. Checked against scikit-learn on the
model's own logits: the in-training evaluation in ``state.log_history``, ``evaluate()`` of several eval sets
(``eval_{name}_`` keys), again with ``test_`` keys (nothing carried over) and
``predict().metrics``, in the whole-array and ``batch_eval_metrics=True`` modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import BertConfig, BertModel, PreTrainedModel  # noqa: E402
from transformers.modeling_outputs import ModelOutput  # noqa: E402

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics  # noqa: E402

N = 37  # eval batches of 8: the last holds 5
TASKS = ("click", "like")
METRICS = ("ne", "auc", "log_loss", "calibration", "ctr")
rng = np.random.default_rng(0)
IDS = rng.integers(1, 50, size=(N, 6))
LABELS = {
    "click": (rng.random(N) < 0.2 + 0.6 * (IDS[:, 0] % 7) / 7).astype(np.int64),
    "like": (rng.random(N) < 0.3 + 0.4 * (IDS[:, 1] % 3) / 3).astype(np.int64),
}


class Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(IDS[i])} | {t: torch.tensor(LABELS[t][i]) for t in TASKS}


@dataclass
class TwoHeads(ModelOutput):
    loss: torch.Tensor | None = None
    click_logits: torch.Tensor | None = None
    like_logits: torch.Tensor | None = None


class CTRModel(PreTrainedModel):
    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.heads = nn.ModuleDict({t: nn.Linear(config.hidden_size, 1) for t in TASKS})
        self.post_init()

    def logits(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.bert(input_ids=input_ids).last_hidden_state[:, 0]
        return {t: self.heads[t](hidden).squeeze(-1) for t in TASKS}

    def forward(self, input_ids, click=None, like=None):
        logits = self.logits(input_ids)
        loss = None
        if click is not None:
            labels = {"click": click, "like": like}
            loss = sum(nn.functional.binary_cross_entropy_with_logits(logits[t], labels[t].float()) for t in TASKS)
        return TwoHeads(loss=loss, click_logits=logits["click"], like_logits=logits["like"])


def reference(model: CTRModel) -> dict[str, float]:
    """scikit-learn (log loss, AUC) and numpy (CTR, NE, calibration) on the model's float64 probabilities."""
    model.eval()
    with torch.no_grad():
        logits = model.logits(torch.tensor(IDS))
    out = {}
    for task in TASKS:
        p, y = torch.sigmoid(logits[task].double()).numpy(), LABELS[task]
        ctr, loss = y.mean(), log_loss(y, p, labels=[0, 1])
        out |= {
            f"ne/{task}": loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)),
            f"auc/{task}": roc_auc_score(y, p),
            f"log_loss/{task}": loss,
            f"calibration/{task}": p.sum() / y.sum(),
            f"ctr/{task}": ctr,
        }
    return out


def assert_values(got: dict[str, float], prefix: str, expected: dict[str, float]) -> None:
    ours = {key[len(prefix) :]: value for key, value in got.items() if key.startswith(prefix) and "/" in key}
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=2e-5), key  # float32 logits from the Trainer


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_every_number_of_a_two_head_trainer_run(batch_eval_metrics, tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=16,
    )  # fmt: skip
    model = CTRModel(config)
    args = transformers.TrainingArguments(
        str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=2, eval_steps=2,
        eval_strategy="steps", save_strategy="no", logging_strategy="no", label_names=list(TASKS), report_to=[],
        use_cpu=True, batch_eval_metrics=batch_eval_metrics, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Rows(), eval_dataset=Rows(),
        compute_metrics=pointwise_compute_metrics(METRICS, tasks=TASKS),
    )  # fmt: skip
    trainer.train()
    expected = reference(model)  # the evaluation after the last step saw these weights
    logged = [entry for entry in trainer.state.log_history if "eval_ne/click" in entry]
    assert len(logged) == 1
    assert_values(logged[0], "eval_", expected)
    both = trainer.evaluate(eval_dataset={"a": Rows(), "b": Rows()})
    assert_values(both, "eval_a_", expected)
    assert_values(both, "eval_b_", expected)
    assert_values(trainer.evaluate(metric_key_prefix="test"), "test_", expected)  # again: nothing carried over
    assert_values(trainer.predict(Rows()).metrics, "test_", expected)
