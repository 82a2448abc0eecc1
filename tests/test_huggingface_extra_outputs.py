"""A two-head model that also returns an embedding: the Trainer hands every output but the loss to compute_metrics.

Refused (three arrays for two tasks), as before; the error now says how to keep the heads alone, and the advice
works: ``evaluate(ignore_keys=["embedding"])`` and ``preprocess_logits_for_metrics`` give scikit-learn's AUC and
log loss of the model's own logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics  # noqa: E402

N = 21  # batches of 8, 8 and 5
rng = np.random.default_rng(0)
X = rng.normal(size=(N, 4)).astype(np.float32)
LABELS = rng.integers(0, 2, (N, 2))


class Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(X[i]), "click": torch.tensor(LABELS[i, 0]), "like": torch.tensor(LABELS[i, 1])}


class HeadsAndEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.heads = nn.Linear(3, 2)

    def forward(self, x, click=None, like=None):
        embedding = torch.tanh(self.body(x))
        logits = 4 * self.heads(embedding)  # logits beyond [0, 1]
        loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.stack([click, like], 1).float())
        return {"loss": loss, "click": logits[:, 0], "like": logits[:, 1], "embedding": embedding}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_extra_outputs_are_refused_with_a_way_out_that_works(tmp_path, batch_eval_metrics):
    torch.manual_seed(0)
    model = HeadsAndEmbedding()
    compute_metrics = pointwise_compute_metrics(["auc", "log_loss"], tasks=("click", "like"))
    args = transformers.TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=8, label_names=["click", "like"], report_to=[], use_cpu=True,
        batch_eval_metrics=batch_eval_metrics, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, eval_dataset=Rows(), compute_metrics=compute_metrics)
    with pytest.raises(ValueError, match=r"tuple of 3 arrays.*ignore_keys=\[\.\.\.\]"):
        trainer.evaluate()
    with torch.no_grad():
        out = model(torch.tensor(X), torch.tensor(LABELS[:, 0]), torch.tensor(LABELS[:, 1]))
    logits = torch.stack([out["click"], out["like"]], 1).double().numpy()
    expected = {}
    for i, task in enumerate(("click", "like")):
        p = 1 / (1 + np.exp(-logits[:, i]))
        expected |= {
            f"eval_auc/{task}": roc_auc_score(LABELS[:, i], p),
            f"eval_log_loss/{task}": log_loss(LABELS[:, i], p),
        }
    values = trainer.evaluate(ignore_keys=["embedding"])
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-5), key
    trainer.preprocess_logits_for_metrics = lambda logits, labels: logits[:2]
    values = trainer.evaluate()
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-5), key


def test_one_task_whose_first_output_is_no_score_names_the_outputs():
    """One task reads a tuple's first output: an embedding there is refused naming every output and the way out."""
    compute_metrics = pointwise_compute_metrics(["auc"])
    outputs = (rng.normal(size=(8, 3)), rng.normal(size=8))  # (embedding, logits), in the model's order
    with pytest.raises(ValueError, match=r"2 outputs of shapes \[\(8, 3\), \(8,\)\].*ignore_keys=\[\.\.\.\]"):
        compute_metrics(transformers.EvalPrediction(predictions=outputs, label_ids=rng.integers(0, 2, 8)))
    logits, labels = outputs[1], rng.integers(0, 2, 8)
    got = compute_metrics(transformers.EvalPrediction(predictions=(logits, outputs[0]), label_ids=labels))
    assert got["auc"] == pytest.approx(roc_auc_score(labels, logits))  # scores first: the rest is not read
