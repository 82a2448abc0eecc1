"""The Hugging Face adapters under the Trainer's other evaluation loops (CPU, one process).

An ``IterableDataset`` (no ``len``) of candidate lists of different lengths, collated to each
batch's longest list, so the Trainer pads the narrower batches with -100 when it concatenates them
(also under ``eval_accumulation_steps``); ``batch_eval_metrics=True`` with a smaller last batch;
batches kept apart. The reference is numpy on the model's scores of each list, computed here
without the Trainer: rank of the relevant candidate among the list's own candidates. A two-task
stream (labels under two ``label_names``, probability heads, ``include_for_metrics``) is checked
against scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests.test_huggingface import eval_args  # noqa: E402
from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics  # noqa: E402

KS = (1, 4, 5, 10, None)
QUERIES = 23  # batches of 5: the last of 3


class Scorer(nn.Module):
    """A linear scorer of every candidate; ``scale`` spreads the scores (far below -100 at 300); -10 in padded slots."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)
        self.scale = scale

    def forward(self, features, mask, labels=None):
        scores = self.linear(features).squeeze(-1) * self.scale
        scores = torch.where(mask, scores, torch.full_like(scores, -10.0))
        return {"loss": scores.sum() * 0, "logits": scores}


def _lists() -> tuple[list[torch.Tensor], list[int]]:
    rng = np.random.default_rng(5)
    sizes = rng.integers(2, 25, QUERIES)
    features = [torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32) for n in sizes]
    return features, [int(rng.integers(0, n)) for n in sizes]


class Unsized(torch.utils.data.IterableDataset):
    """Candidate lists streamed one by one: the Trainer knows neither their number nor their width."""

    def __init__(self) -> None:
        self.features, self.labels = _lists()

    def __iter__(self):
        for features, label in zip(self.features, self.labels):
            yield {"features": features, "labels": label}


def to_longest(rows):
    width = max(len(row["features"]) for row in rows)
    features = torch.zeros(len(rows), width, 4)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        features[i, : len(row["features"])] = row["features"]
        mask[i, : len(row["features"])] = True
    return {"features": features, "mask": mask, "labels": torch.tensor([row["labels"] for row in rows])}


def _scores(model: Scorer) -> list[np.ndarray]:
    """The model's score of each candidate of each list, without padding (float32, as the Trainer's)."""
    with torch.no_grad():
        return [(model.linear(f).squeeze(-1) * model.scale).numpy() for f in _lists()[0]]


def reference(model: Scorer) -> dict[str, float]:
    """Recall@k, MRR@k and precision@k (``k`` or the list's length for ``None``) per list, averaged."""
    lists, labels = _scores(model), _lists()[1]
    assert all(len(np.unique(s)) == len(s) for s in lists)  # no ties: the rank is the number of higher scores + 1
    ranks = np.array([1 + np.sum(s > s[label]) for s, label in zip(lists, labels)])
    sizes = np.array([len(s) for s in lists])
    out = {}
    for k in KS:
        cut = sizes if k is None else np.full(len(sizes), k)
        at = "" if k is None else f"@{k}"
        out[f"Recall{at}"] = float(np.mean(ranks <= cut))
        out[f"MRR{at}"] = float(np.mean(np.where(ranks <= cut, 1.0 / ranks, 0.0)))
        out[f"Precision{at}"] = float(np.mean((ranks <= cut) / cut))
    return out


@pytest.mark.parametrize("padding_value", [(-10.0, -100.0), -10.0], ids=["default", "minus-10-alone"])
@pytest.mark.parametrize(
    ("batch_eval_metrics", "eval_accumulation_steps", "concat"),
    [(False, None, True), (False, 2, True), (True, None, True), (False, 2, False)],
    ids=["whole-arrays", "accumulation-steps", "batch-eval-metrics", "kept-apart"],
)
@pytest.mark.parametrize("scale", [1.0, 300.0], ids=["scores-near-0", "scores-below-minus-100"])
def test_an_iterable_dataset_of_other_widths_is_scored_per_list(
    tmp_path, padding_value, batch_eval_metrics, eval_accumulation_steps, concat, scale
):
    """``padding_value=-10`` alone (the seed's marker) kept the Trainer's -100 slots as candidates: they
    outranked real scores below -100 (Recall@4 0.43 instead of 0.46 on these lists) and lengthened the
    lists (precision without cutoff) of every batch narrower than the widest."""
    model = Scorer(scale)
    args = eval_args(
        tmp_path,
        per_device_eval_batch_size=5,
        batch_eval_metrics=batch_eval_metrics,
        eval_accumulation_steps=eval_accumulation_steps,
        eval_do_concat_batches=concat,
        remove_unused_columns=False,
    )
    compute_metrics = ranking_compute_metrics(
        ks=KS, metrics=("recall", "mrr", "precision"), padding_value=padding_value
    )
    run = transformers.Trainer(
        model=model, args=args, eval_dataset=Unsized(), data_collator=to_longest, compute_metrics=compute_metrics
    )
    got = run.evaluate()
    expected = reference(model)
    for key, value in expected.items():
        assert got[f"eval_{key}"] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    if concat and not batch_eval_metrics:  # the Trainer did pad the narrower batches with -100
        assert (run.predict(Unsized()).predictions == -100).any()
    if scale > 1:
        assert min(s.min() for s in _scores(model)) < -100  # real scores below the Trainer's padding


def test_the_trainers_minus_100_is_padding_whatever_padding_value_says():
    """Two batches of widths 3 and 5 concatenated by the Trainer: the first padded with -100."""
    from transformers import EvalPrediction

    scores = np.full((3, 5), -100.0)
    scores[:2, :3] = [[0.9, 0.1, -10.0], [0.2, 0.8, 0.5]]
    scores[2] = [0.3, 0.6, 0.1, 0.7, 0.2]
    labels = np.array([0, 2, 3])
    # by hand: lists of 2, 3 and 5 candidates, relevant ranked 1st, 2nd, 1st
    expected = {"Precision": np.mean([1 / 2, 1 / 3, 1 / 5]), "MRR": np.mean([1, 1 / 2, 1])}
    for padding_value in ((-10.0, -100.0), -10.0, (-10.0,), np.float32(-10.0)):
        compute_metrics = ranking_compute_metrics(ks=(None,), metrics=("precision", "mrr"), padding_value=padding_value)
        assert compute_metrics(EvalPrediction(predictions=scores, label_ids=labels)) == pytest.approx(expected)


class TwoProbabilityHeads(nn.Module):
    """Click and like probabilities as two heads, ``(N,)`` and ``(N, 1)``; labels under two ``label_names``."""

    main_input_name = "x"  # what `include_for_metrics=["inputs"]` hands over

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)

    def forward(self, x, click=None, like=None):
        p = torch.sigmoid(self.linear(x))
        return {"loss": p.sum() * 0, "click": p[:, 0], "like": p[:, 1:2]}


class StreamedClicks(torch.utils.data.IterableDataset):
    def __init__(self, n: int = 43) -> None:
        rng = np.random.default_rng(2)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = (rng.uniform(size=(n, 2)) < 0.4).astype(np.int64)

    def __iter__(self):
        for x, (click, like) in zip(self.x, self.y):
            yield {"x": x, "click": int(click), "like": float(like)}


@pytest.mark.parametrize(
    ("batch_eval_metrics", "eval_accumulation_steps", "concat"),
    [(False, 3, True), (True, None, True), (False, 3, False)],
    ids=["accumulation-steps", "batch-eval-metrics", "kept-apart"],
)
def test_two_label_names_probability_heads_and_inputs_over_a_stream(
    tmp_path, batch_eval_metrics, eval_accumulation_steps, concat
):
    """label_ids as a tuple (one array per ``label_names`` entry, int and float), probabilities
    (``from_logits=False``), ``include_for_metrics`` inputs and losses handed over too, a last batch of 3:
    scikit-learn's values on the model's own probabilities."""
    from sklearn.metrics import log_loss, roc_auc_score

    model, data = TwoProbabilityHeads(), StreamedClicks()
    args = eval_args(
        tmp_path,
        per_device_eval_batch_size=8,
        batch_eval_metrics=batch_eval_metrics,
        eval_accumulation_steps=eval_accumulation_steps,
        eval_do_concat_batches=concat,
        label_names=["click", "like"],
        include_for_metrics=["inputs", "loss"],
    )
    compute_metrics = pointwise_compute_metrics(["auc", "log_loss", "ctr"], tasks=("click", "like"), from_logits=False)
    got = transformers.Trainer(model=model, args=args, eval_dataset=data, compute_metrics=compute_metrics).evaluate()
    with torch.no_grad():
        p = torch.sigmoid(model.linear(data.x)).double().numpy()
    for i, task in enumerate(("click", "like")):
        y = data.y[:, i]
        assert got[f"eval_auc/{task}"] == pytest.approx(roc_auc_score(y, p[:, i]), rel=1e-9)
        assert got[f"eval_log_loss/{task}"] == pytest.approx(log_loss(y, p[:, i]), rel=1e-6)
        assert got[f"eval_ctr/{task}"] == pytest.approx(y.mean(), rel=1e-12)
