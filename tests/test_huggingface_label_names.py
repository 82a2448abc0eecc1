"""Sample weights and group ids read from the Trainer's extra ``label_names`` entries.

The Trainer passes one label array per ``TrainingArguments.label_names`` entry, in that order;
``pointwise_compute_metrics(label_names=..., weights=..., groups=...)`` reads the named entries as
sample weights and group (user) ids instead of task labels. References: scikit-learn's
``roc_auc_score``/``log_loss`` with ``sample_weight``, NE from its numpy definition, and a pandas
groupby of per-user AUCs, on the Trainer's own ``predict()`` output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import EvalPrediction  # noqa: E402

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics  # noqa: E402

LABEL_NAMES = ("labels", "weight", "user_id")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z.astype(np.float64)))


def _ne(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """Normalized entropy: weighted cross-entropy over the entropy of the weighted base rate."""
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    rate = (w * y).sum() / w.sum()
    return float(ce / -(w.sum() * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate))))


def _gauc(y: np.ndarray, p: np.ndarray, users: np.ndarray, w: np.ndarray | None = None) -> float:
    """Mean over users with both classes (of positive weight) of each user's weighted AUC (pandas groupby)."""
    frame = pd.DataFrame({"y": y, "p": p, "u": users, "w": np.ones_like(p) if w is None else w})
    aucs = [
        roc_auc_score(part.y, part.p, sample_weight=part.w)
        for _, part in frame.groupby("u")
        if part.y[part.w > 0].nunique() == 2
    ]
    return float(np.mean(aucs))


class WeightedClicker(nn.Module):
    """One logit per example; takes the weight and user id keys the Trainer passes with the labels."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, 1)

    def forward(self, x, labels=None, weight=None, user_id=None):
        logits = self.linear(x).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), weight=weight)
        return {"loss": loss, "logits": logits}


class WeightedClicks(torch.utils.data.Dataset):
    def __init__(self, n: int = 203) -> None:
        rng = np.random.default_rng(5)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor((rng.uniform(size=n) < 0.4).astype(np.int64))
        self.w = torch.tensor(rng.uniform(0.0, 3.0, n), dtype=torch.float32)
        self.users = torch.tensor(rng.integers(0, 12, n))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "weight": self.w[i], "user_id": self.users[i]}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_weighted_and_grouped_metrics_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    dataset = WeightedClicks()
    compute_metrics = pointwise_compute_metrics(
        ["ne", "log_loss", "auc", "gauc", "sum_weights"], label_names=LABEL_NAMES, weights="weight", groups="user_id"
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        per_device_eval_batch_size=16,
        batch_eval_metrics=batch_eval_metrics,
        label_names=list(LABEL_NAMES),
    )
    run = transformers.Trainer(
        model=WeightedClicker(), args=args, eval_dataset=dataset, compute_metrics=compute_metrics
    )
    metrics = run.evaluate()
    prediction = run.predict(dataset)
    y, w, users = (np.asarray(a) for a in prediction.label_ids)
    np.testing.assert_array_equal(y, dataset.y.numpy())  # the Trainer's own arrays, in the eval set's order
    w64, p = w.astype(np.float64), _sigmoid(prediction.predictions)
    assert metrics["eval_log_loss"] == pytest.approx(log_loss(y, p, sample_weight=w64), rel=1e-6)
    assert metrics["eval_ne"] == pytest.approx(_ne(y, p, w64), rel=1e-6)
    assert metrics["eval_auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w64), rel=1e-6)
    assert metrics["eval_gauc"] == pytest.approx(_gauc(y, p, users, w64), rel=1e-6)
    assert metrics["eval_sum_weights"] == pytest.approx(w64.sum(), rel=1e-6)


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    z, y = rng.normal(size=(n, 2)), rng.integers(0, 2, (n, 2))
    w, users = rng.uniform(0.0, 2.0, n), rng.integers(0, 9, n)
    return z, y, w, users


def test_two_tasks_one_label_entry_each_with_weights_ignore_index_and_batches_kept_apart():
    """Label entries around the weight and id entries are the tasks' columns, in order; with ``ignore_index``
    an ignored label weighs 0 in its task only. Reference: scikit-learn on the rows left, weighted (AUC to 1e-6:
    the exact AUC keeps its scores and weights in float32, 8 bytes per row)."""
    z, y, w, users = _data()
    y = y.copy()
    y[::7, 1] = -100
    compute = pointwise_compute_metrics(
        ["log_loss", "auc", "gauc"],
        tasks=("click", "like"),
        ignore_index=-100,
        label_names=("click", "user", "like", "w"),
        weights="w",
        groups="user",
    )
    whole = compute(EvalPrediction(predictions=z, label_ids=(y[:, 0], users, y[:, 1], w)))
    halves = [(y[s, 0], users[s], y[s, 1], w[s]) for s in (slice(0, 50), slice(50, None))]
    kept_apart = compute(EvalPrediction(predictions=[z[:50], z[50:]], label_ids=halves))
    for got in (whole, kept_apart):
        for t, task in enumerate(("click", "like")):
            keep = y[:, t] != -100
            yt, pt, wt = y[keep, t], _sigmoid(z[keep, t]), w[keep]
            assert got[f"log_loss/{task}"] == pytest.approx(log_loss(yt, pt, sample_weight=wt), rel=1e-9)
            assert got[f"auc/{task}"] == pytest.approx(roc_auc_score(yt, pt, sample_weight=wt), rel=1e-6)
            assert got[f"gauc/{task}"] == pytest.approx(_gauc(yt, pt, users[keep], wt), rel=1e-6)


def test_one_label_entry_of_every_task_and_zero_weights_as_removed_rows():
    z, y, w, users = _data(seed=1)
    w = w.copy()
    w[::3] = 0.0
    compute = pointwise_compute_metrics(
        ["ne", "auc", "gauc"], tasks=("a", "b"), label_names=("labels", "w", "u"), weights="w", groups="u"
    )
    got = compute(EvalPrediction(predictions=z, label_ids=(y, w[:, None], users[:, None])))  # (N, 1) taken
    keep = w > 0
    removed = compute(EvalPrediction(predictions=z[keep], label_ids=(y[keep], w[keep], users[keep])))
    for t, task in enumerate(("a", "b")):
        p = _sigmoid(z[keep, t])
        assert got[f"ne/{task}"] == pytest.approx(_ne(y[keep, t], p, w[keep]), rel=1e-9)
        assert got[f"auc/{task}"] == pytest.approx(roc_auc_score(y[keep, t], p, sample_weight=w[keep]), rel=1e-6)
        assert got[f"gauc/{task}"] == pytest.approx(_gauc(y[keep, t], p, users[keep], w[keep]), rel=1e-6)
        assert removed[f"auc/{task}"] == pytest.approx(got[f"auc/{task}"], rel=1e-12)


def test_label_names_alone_behave_as_before():
    """Without ``weights``/``groups`` every entry is a task's labels, as without ``label_names``."""
    z, y, _, _ = _data(seed=2)
    before = pointwise_compute_metrics(["ne", "auc"], tasks=("a", "b"))
    after = pointwise_compute_metrics(["ne", "auc"], tasks=("a", "b"), label_names=("ya", "yb"))
    pred = EvalPrediction(predictions=z, label_ids=(y[:, 0], y[:, 1]))
    assert after(pred) == before(pred)
    assert after(pred)["auc/a"] == pytest.approx(roc_auc_score(y[:, 0], z[:, 0]))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"weights": "w"}, ValueError, r"Expected `label_names`.*weights='w'"),
        ({"groups": "u", "metrics": ["gauc"]}, ValueError, r"Expected `label_names`.*groups='u'"),
        ({"label_names": ("y", "w"), "weights": "weight"}, ValueError, r"`weights` to be an entry of `label_names`"),
        ({"label_names": ("y", "w"), "weights": "w", "groups": "w"}, ValueError, r"two entries of `label_names`"),
        ({"label_names": ("y", "y", "w"), "weights": "w"}, ValueError, r"`label_names` without repeats"),
        ({"label_names": "yw", "weights": "w"}, ValueError, r"`label_names` to be a sequence of names"),
        ({"label_names": ("y", "w", "z"), "weights": "w"}, ValueError, r"one label entry.*\['y', 'z'\]"),
        ({"label_names": ("y", 3)}, TypeError, r"`label_names` to hold names"),
        ({"metrics": ["gauc"]}, ValueError, r"Metric 'gauc' needs group.*groups='user_id'"),
        ({"metrics": ["ndcg@3"], "label_names": ("y", "u"), "groups": "u"}, ValueError, r"ranking_compute_metrics"),
    ],
)
def test_bad_label_names_are_refused_at_build(options, error, match):
    options = dict(options)
    metrics = options.pop("metrics", ["auc"])
    with pytest.raises(error, match=match):
        pointwise_compute_metrics(metrics, **options)


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        (lambda y, w, u: (y, w), ValueError, r"one label array per `label_names` entry \['y', 'w', 'u'\], got 2"),
        (lambda y, w, u: (y, w[:-1], u), ValueError, r"entry 'w' \(sample weights\).*shape \(6,\), got \(5,\)"),
        (lambda y, w, u: (y, w, u[:-1]), ValueError, r"entry 'u' \(group ids\).*shape \(6,\), got \(5,\)"),
        (lambda y, w, u: (y, np.r_[w[:-1], np.nan], u), ValueError, r"entry 'w' .*finite and non-negative, got nan"),
        (lambda y, w, u: (y, np.r_[w[:-1], -1.0], u), ValueError, r"entry 'w' .*non-negative, got -1.0"),
        (lambda y, w, u: (y, np.r_[w[:-1], np.inf], u), ValueError, r"entry 'w' .*finite"),
        (lambda y, w, u: (y, w, u.astype(np.float32)), TypeError, r"entry 'u' \(group ids\).*integer dtype"),
        (lambda y, w, u: (y, w > 0, u), TypeError, r"entry 'w' \(sample weights\).*real numbers"),
    ],
)
def test_bad_weights_and_ids_are_named_by_their_label_names_entry(arrays, error, match):
    y, w, u = np.array([1, 0, 1, 0, 1, 0]), np.full(6, 0.5), np.array([1, 1, 2, 2, 3, 3])
    compute = pointwise_compute_metrics(["auc", "gauc"], label_names=("y", "w", "u"), weights="w", groups="u")
    z = np.linspace(-1.0, 1.0, 6)
    good = EvalPrediction(predictions=z, label_ids=(y, w, u))
    compute(good, compute_result=False)
    with pytest.raises(error, match=match):
        compute(EvalPrediction(predictions=z, label_ids=arrays(y, w, u)), compute_result=False)
    # the failed evaluation left nothing behind (documented: a call that raises resets the metrics)
    assert compute(good, compute_result=True)["auc"] == pytest.approx(roc_auc_score(y, z))


def _ndcg(scores: np.ndarray, relevance: np.ndarray, sessions: np.ndarray, k: int | None) -> float:
    """Mean NDCG@k over the sessions with a relevant row (linear gain, log2 discount), in numpy."""
    values = []
    for session in np.unique(sessions):
        rows = sessions == session
        rel, score = relevance[rows].astype(np.float64), scores[rows]
        if rel.sum() == 0:
            continue
        ranked, ideal = rel[np.argsort(-score, kind="stable")][:k], np.sort(rel)[::-1][:k]
        discount = 1 / np.log2(np.arange(2, len(ranked) + 2))
        values.append((ranked * discount).sum() / (ideal * discount).sum())
    return float(np.mean(values))


class RowScorer(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, 1)

    def forward(self, x, labels=None, session_id=None):
        scores = self.linear(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(scores, labels.float()), "logits": scores}


class SessionRows(torch.utils.data.Dataset):
    """Rows of 23 sessions, shuffled: a session's rows fall in several eval batches."""

    def __init__(self, n: int = 211) -> None:
        rng = np.random.default_rng(6)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor(rng.integers(0, 3, n))
        self.sessions = torch.tensor(rng.integers(0, 23, n))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "session_id": self.sessions[i]}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_flat_rows_grouped_by_session_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    dataset = SessionRows()
    compute_metrics = ranking_compute_metrics(
        ks=(3, None), metrics=("ndcg",), label_names=("labels", "session_id"), sessions="session_id"
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        per_device_eval_batch_size=16,
        batch_eval_metrics=batch_eval_metrics,
        label_names=["labels", "session_id"],
    )
    run = transformers.Trainer(model=RowScorer(), args=args, eval_dataset=dataset, compute_metrics=compute_metrics)
    metrics = run.evaluate()
    prediction = run.predict(dataset)
    relevance, sessions = (np.asarray(a) for a in prediction.label_ids)
    np.testing.assert_array_equal(sessions, dataset.sessions.numpy())
    scores = prediction.predictions.astype(np.float64)
    assert metrics["eval_NDCG@3"] == pytest.approx(_ndcg(scores, relevance, sessions, 3), rel=1e-6)
    assert metrics["eval_NDCG"] == pytest.approx(_ndcg(scores, relevance, sessions, None), rel=1e-6)


def test_ranking_padded_lists_unchanged_without_sessions():
    scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, -10.0]])
    plain = ranking_compute_metrics(ks=(1, 2))(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))
    assert plain == {"Recall@1": 0.0, "Recall@2": 1.0, "MRR@1": 0.0, "MRR@2": 0.5}  # rank 2, then 2: by hand


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sessions": "s"}, ValueError, r"`label_names` .* and `sessions` .* together"),
        ({"label_names": ("y", "s")}, ValueError, r"`label_names` .* and `sessions` .* together"),
        ({"label_names": ("y", "s"), "sessions": "q"}, ValueError, r"`sessions` to be an entry of `label_names`"),
        (
            {"label_names": ("y", "s", "z"), "sessions": "s"},
            ValueError,
            r"one label entry \(the relevance labels\), besides `sessions`",
        ),
        ({"label_names": ("s", "s"), "sessions": "s"}, ValueError, r"without repeats"),
    ],
)
def test_bad_ranking_label_names_are_refused_at_build(options, error, match):
    with pytest.raises(error, match=match):
        ranking_compute_metrics(ks=(1,), **options)


@pytest.mark.parametrize(
    ("predictions", "arrays", "error", "match"),
    [
        (np.zeros(4), lambda y, s: (y,), ValueError, r"one label array per `label_names` entry \['y', 's'\], got 1"),
        (np.zeros(4), lambda y, s: (y, s[:3]), ValueError, r"entry 's' \(session ids\).*\(4,\), got \(3,\)"),
        (np.zeros(4), lambda y, s: (y[:3], s), ValueError, r"entry 'y' \(relevance labels\).*\(4,\), got \(3,\)"),
        (np.zeros(4), lambda y, s: (y, s.astype(np.float64)), TypeError, r"entry 's' \(session ids\).*integer dtype"),
        (np.zeros((4, 2)), lambda y, s: (y, s), ValueError, r"one score per row.*got predictions of shape \(4, 2\)"),
        (np.zeros(4), lambda y, s: (np.array([1, -1, 0, 1]), s), ValueError, r"label_names entry 'y'"),
    ],
)
def test_bad_flat_rows_are_named_by_their_label_names_entry(predictions, arrays, error, match):
    y, s = np.array([1, 0, 0, 1]), np.array([3, 3, 5, 5])
    compute = ranking_compute_metrics(ks=(1,), label_names=("y", "s"), sessions="s")
    with pytest.raises(error, match=match):
        compute(EvalPrediction(predictions=predictions, label_ids=arrays(y, s)))
    got = compute(EvalPrediction(predictions=np.array([0.9, 0.1, 0.2, 0.8]), label_ids=(y, s)))
    assert got == {"Recall@1": 1.0, "MRR@1": 1.0}  # both relevant rows ranked first in their session
