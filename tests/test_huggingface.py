"""The Hugging Face adapter inside a real ``transformers.Trainer.evaluate()`` (tiny models defined here, CPU).

Ranking values are checked against a numpy re-implementation of the Trainer seed's pandas
``compute_metrics`` (drop the ``-10`` padded scores, sort each row's candidates by score, find the
rank of the relevant one, Recall@k = rank <= k, MRR@k = 1/rank within k, averaged over rows);
pointwise values against scikit-learn on the Trainer's own predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics  # noqa: E402

TOP_K = (1, 4, 5, 10, 20, 50, 100)
WIDTH = 130  # candidates per padded list


class Scorer(nn.Module):
    """Scores every candidate of a padded list; padded slots get the seed's -10."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, 1)

    def forward(self, features, mask, labels=None):
        scores = torch.sigmoid(self.linear(features).squeeze(-1))  # in (0, 1): never equal to the padding
        scores = torch.where(mask, scores, torch.full_like(scores, -10.0))
        loss = nn.functional.cross_entropy(scores.masked_fill(~mask, -1e4), labels)
        return {"loss": loss, "logits": scores}


class Candidates(torch.utils.data.Dataset):
    def __init__(self, queries: int = 53, dim: int = 8) -> None:
        rng = np.random.default_rng(1)
        self.sizes = rng.integers(3, WIDTH + 1, queries)
        self.features = torch.tensor(rng.normal(size=(queries, WIDTH, dim)), dtype=torch.float32)
        self.labels = torch.tensor([rng.integers(0, size) for size in self.sizes])

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i):
        mask = torch.arange(WIDTH) < int(self.sizes[i])
        return {"features": self.features[i], "mask": mask, "labels": self.labels[i]}


class Clicker(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, 2)

    def forward(self, x, labels=None):
        logits = self.linear(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return {"loss": loss, "logits": logits}


class Clicks(torch.utils.data.Dataset):
    def __init__(self, n: int = 203) -> None:
        rng = np.random.default_rng(2)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor((rng.uniform(size=(n, 2)) < 0.4).astype(np.int64))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def eval_args(tmp_path, **options):
    """The Trainer's arguments for a quiet evaluation on the CPU, with ``options`` (batch size, modes)."""
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True, **options
    )


def trainer(model, dataset, compute_metrics, batch_eval_metrics, tmp_path):
    args = eval_args(tmp_path, per_device_eval_batch_size=16, batch_eval_metrics=batch_eval_metrics)
    return transformers.Trainer(model=model, args=args, eval_dataset=dataset, compute_metrics=compute_metrics)


def seed_reference(predictions: np.ndarray, labels: np.ndarray, top_k_list=TOP_K) -> dict[str, float]:
    """The seed's evaluate(): per row drop -10 scores, sort candidates by score, rank the relevant one."""
    ranks = []
    for scores, label in zip(predictions, labels):
        candidates = np.flatnonzero(scores != -10)
        ordered = candidates[np.argsort(-scores[candidates], kind="stable")]
        ranks.append(int(np.flatnonzero(ordered == label)[0]) + 1)
    ranks = np.array(ranks)
    metric = {}
    for k in top_k_list:
        metric[f"Recall@{k}"] = float(np.sum(ranks <= k) / len(ranks))
        metric[f"MRR@{k}"] = float(np.sum(np.where(ranks <= k, 1.0 / ranks, 0.0)) / len(ranks))
    return metric


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_ranking_in_trainer_evaluate_equals_the_seeds_numbers(tmp_path, batch_eval_metrics):
    dataset = Candidates()
    compute_metrics = ranking_compute_metrics(ks=TOP_K, metrics=("recall", "mrr"))
    run = trainer(Scorer(), dataset, compute_metrics, batch_eval_metrics, tmp_path)
    metrics = run.evaluate()
    prediction = run.predict(dataset)  # the Trainer's own scores, for the reference
    expected = seed_reference(prediction.predictions, prediction.label_ids)
    for key, value in expected.items():
        assert metrics[f"eval_{key}"] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert 0 < expected["Recall@1"] < expected["Recall@100"] < 1  # the cutoffs matter on this data
    again = run.evaluate()  # computed values reset the metric: a second evaluation is the same
    assert again["eval_Recall@5"] == metrics["eval_Recall@5"]


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_pointwise_two_tasks_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    dataset = Clicks()
    compute_metrics = pointwise_compute_metrics(["log_loss", "auc", "ctr"], tasks=("click", "like"))
    run = trainer(Clicker(), dataset, compute_metrics, batch_eval_metrics, tmp_path)
    metrics = run.evaluate()
    prediction = run.predict(dataset)
    probabilities = 1 / (1 + np.exp(-prediction.predictions.astype(np.float64)))
    for i, task in enumerate(("click", "like")):
        y, p = prediction.label_ids[:, i], probabilities[:, i]
        assert metrics[f"eval_log_loss/{task}"] == pytest.approx(log_loss(y, p), rel=1e-6)
        assert metrics[f"eval_auc/{task}"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
        assert metrics[f"eval_ctr/{task}"] == pytest.approx(y.mean(), rel=1e-12)


class TwoHeads(nn.Module):
    """A multi-head model: one logit head per task, ``(N,)`` for click and ``(N, 1)`` for like."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.click, self.like = nn.Linear(dim, 1), nn.Linear(dim, 1)

    def forward(self, x, labels=None):
        click, like = self.click(x).squeeze(-1), self.like(x)
        loss = nn.functional.binary_cross_entropy_with_logits(torch.cat([click[:, None], like], 1), labels.float())
        return {"loss": loss, "click_logits": click, "like_logits": like}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_per_task_heads_of_a_multi_head_model_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    """The Trainer passes a multi-head model's outputs as a tuple of per-task heads: they are the tasks'
    columns, in the order of ``tasks`` (no ``preprocess_logits_for_metrics`` stacking needed).
    Reference: scikit-learn on the Trainer's own head outputs."""
    dataset = Clicks()
    compute_metrics = pointwise_compute_metrics(["log_loss", "auc", "ctr"], tasks=("click", "like"))
    run = trainer(TwoHeads(), dataset, compute_metrics, batch_eval_metrics, tmp_path)
    metrics = run.evaluate()
    click, like = run.predict(dataset).predictions
    assert click.shape == (len(dataset),) and like.shape == (len(dataset), 1)
    y = dataset.y.numpy()
    for i, (task, z) in enumerate((("click", click), ("like", like[:, 0]))):
        p = 1 / (1 + np.exp(-z.astype(np.float64)))
        assert metrics[f"eval_log_loss/{task}"] == pytest.approx(log_loss(y[:, i], p), rel=1e-6)
        assert metrics[f"eval_auc/{task}"] == pytest.approx(roc_auc_score(y[:, i], p), rel=1e-9)
        assert metrics[f"eval_ctr/{task}"] == pytest.approx(y[:, i].mean(), rel=1e-12)


def test_per_task_heads_as_tuple_list_batches_and_tensors():
    """Heads as a tuple or a list, in batches kept apart, and as tensors in batch mode: the same values as
    scikit-learn's on the stacked columns; an (N, T) first output with other outputs is read as before."""
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(40, 3)), rng.integers(0, 2, (40, 3))
    tasks = ("a", "b", "c")
    expected = {f"auc/{t}": roc_auc_score(y[:, i], z[:, i]) for i, t in enumerate(tasks)}
    compute = pointwise_compute_metrics(["auc"], tasks=tasks)
    heads = (z[:, 0], z[:, 1:2], z[:, 2].astype(np.float32))
    for predictions, labels in (
        (heads, y),
        (list(heads), y),
        (list(heads), [y[:, 0], y[:, 1], y[:, 2]]),  # per-task label arrays as a list too
        ([tuple(h[:15] for h in heads), tuple(h[15:] for h in heads)], [y[:15], y[15:]]),  # batches kept apart
        ((z, np.zeros((40, 7))), y),  # the first output holds every task: the others are not scores
    ):
        got = compute(SimpleNamespace(predictions=predictions, label_ids=labels))
        assert got == pytest.approx(expected, rel=1e-6)
    for start in (0, 25):  # batch_eval_metrics=True: one call per batch of tensors
        batch = tuple(torch.as_tensor(h[start : start + 25]) for h in heads)
        got = compute(SimpleNamespace(predictions=batch, label_ids=torch.as_tensor(y[start : start + 25])), start > 0)
    assert got == pytest.approx(expected, rel=1e-6)


class ListOfHeads(nn.Module):
    """A multi-head model whose heads are a ``ModuleList``: its ``logits`` output is a **list** of per-task heads."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads = nn.ModuleList([nn.Linear(dim, 1), nn.Linear(dim, 1)])

    def forward(self, x, labels=None):
        logits = [self.heads[0](x).squeeze(-1), self.heads[1](x)]  # (N,) and (N, 1)
        loss = nn.functional.binary_cross_entropy_with_logits(
            torch.cat([logits[0][:, None], logits[1]], 1), labels.float()
        )
        return {"loss": loss, "logits": logits}


def test_a_list_of_heads_in_batches_kept_apart_is_each_batch_s_task_columns(tmp_path):
    """``eval_do_concat_batches=False`` with a model whose heads are a list: the Trainer passes a list (batches)
    of lists (heads). Each batch's list was concatenated as rows (an error about an (2N,) array) instead of
    being read as the tasks' heads, as the same list is in the other two modes. Reference: scikit-learn on the
    Trainer's own head outputs."""
    from types import SimpleNamespace

    dataset = Clicks()
    args = eval_args(tmp_path, per_device_eval_batch_size=16, eval_do_concat_batches=False)
    compute_metrics = pointwise_compute_metrics(["log_loss", "auc"], tasks=("click", "like"))
    run = transformers.Trainer(model=ListOfHeads(), args=args, eval_dataset=dataset, compute_metrics=compute_metrics)
    metrics = run.evaluate()
    batches = run.predict(dataset).predictions
    assert isinstance(batches, list) and isinstance(batches[0], list)  # what the Trainer passes: lists of heads
    click = np.concatenate([b[0] for b in batches]).astype(np.float64)
    like = np.concatenate([b[1][:, 0] for b in batches]).astype(np.float64)
    y = dataset.y.numpy()
    for i, (task, z) in enumerate((("click", click), ("like", like))):
        p = 1 / (1 + np.exp(-z))
        assert metrics[f"eval_log_loss/{task}"] == pytest.approx(log_loss(y[:, i], p), rel=1e-6)
        assert metrics[f"eval_auc/{task}"] == pytest.approx(roc_auc_score(y[:, i], p), rel=1e-9)
    # per-task label arrays as a list in each kept-apart batch, as a list of them is read whole
    rng = np.random.default_rng(4)
    z, y = rng.normal(size=(30, 2)), rng.integers(0, 2, (30, 2))
    expected = {f"auc/{t}": roc_auc_score(y[:, i], z[:, i]) for i, t in enumerate(("a", "b"))}
    compute = pointwise_compute_metrics(["auc"], tasks=("a", "b"))
    kept_apart = SimpleNamespace(
        predictions=[z[:12], z[12:]], label_ids=[[y[:12, 0], y[:12, 1]], [y[12:, 0], y[12:, 1]]]
    )
    assert compute(kept_apart) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        (
            (np.zeros(4), np.zeros(4)),
            "Expected predictions as one (N, 3) array or 3 per-task heads (one per task of ['a', 'b', 'c']), each "
            "(N,) or (N, 1); got a tuple of 2 arrays of shapes [(4,), (4,)].",
        ),
        (
            (np.zeros(4), np.zeros((4, 2)), np.zeros(4)),
            "Expected predictions as one (N, 3) array or 3 per-task heads (one per task of ['a', 'b', 'c']), each "
            "(N,) or (N, 1), with one N; got head 1 (task 'b') of shape (4, 2) among heads of shapes "
            "[(4,), (4, 2), (4,)].",
        ),
        (
            (np.zeros(4), np.zeros(4), np.zeros((3, 1))),
            "Expected predictions as one (N, 3) array or 3 per-task heads (one per task of ['a', 'b', 'c']), each "
            "(N,) or (N, 1), with one N; got head 2 (task 'c') of shape (3, 1) among heads of shapes "
            "[(4,), (4,), (3, 1)].",
        ),
    ],
)
def test_per_task_heads_of_another_count_or_shape_are_refused(heads, message):
    from types import SimpleNamespace

    compute = pointwise_compute_metrics(["ctr"], tasks=("a", "b", "c"))
    with pytest.raises(ValueError) as info:
        compute(SimpleNamespace(predictions=heads, label_ids=np.zeros((4, 3))))
    assert str(info.value) == message
    # nothing was counted: a valid call afterwards sees its own rows only (numpy reference: the label means)
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    got = compute(SimpleNamespace(predictions=(np.zeros(4), np.zeros(4), np.zeros(4)), label_ids=y))
    assert got == pytest.approx({f"ctr/{t}": y[:, i].mean() for i, t in enumerate("abc")})


def test_relevance_matrix_labels_and_bad_shapes():
    from types import SimpleNamespace

    compute_metrics = ranking_compute_metrics(ks=(1, 3), metrics=("ndcg", "recall"))
    scores = np.array([[0.9, 0.3, 0.5, -100.0], [0.1, 0.8, 0.2, 0.4]])
    relevance = np.array([[0, 2, 1, -100], [1, 0, 0, 1]])
    values = compute_metrics(SimpleNamespace(predictions=scores, label_ids=relevance))
    assert values["Recall@1"] == pytest.approx(0.0)
    assert values["Recall@3"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match=r"Expected labels as integer indexes of the relevant candidate in \[0, 4\)"):
        compute_metrics(SimpleNamespace(predictions=scores, label_ids=np.array([0, 4])))
    # unsigned label indexes: out of range is a ValueError (uint32 has no min kernel), in range a value
    with pytest.raises(ValueError, match=r"candidate in \[0, 4\), got values in \[0, 4\]"):
        compute_metrics(SimpleNamespace(predictions=scores, label_ids=np.array([0, 4], dtype=np.uint32)))
    unsigned = compute_metrics(SimpleNamespace(predictions=scores, label_ids=np.array([1, 3], dtype=np.uint32)))
    assert unsigned["Recall@1"] == pytest.approx(0.0) and unsigned["Recall@3"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"Expected labels of shape \(2,\)"):
        compute_metrics(SimpleNamespace(predictions=scores, label_ids=np.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"Expected scores of shape \(queries, candidates\)"):
        compute_metrics(SimpleNamespace(predictions=scores[None], label_ids=np.array([0])))
    with pytest.raises(ValueError, match="needs labels"):
        compute_metrics(SimpleNamespace(predictions=scores, label_ids=None))
    pointwise = pointwise_compute_metrics(["ctr"], tasks=("a", "b"))
    with pytest.raises(
        ValueError, match=r"Expected \(N, 2\) predictions .* and \(N, 2\) labels .*one column per task of \['a', 'b'\]"
    ):
        pointwise(SimpleNamespace(predictions=np.zeros(3), label_ids=np.zeros(3)))
    with pytest.raises(ValueError, match="Unknown metric name"):
        pointwise_compute_metrics(["nope"])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _numpy_pointwise(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The metrics without a ``from_logits`` option, by their formulas, on probabilities ``p``."""
    mse = np.mean((p - y) ** 2)
    return {
        "mse": mse,
        "rmse": np.sqrt(mse),
        "mae": np.mean(np.abs(p - y)),
        "weighted_average": np.mean(p),
        "r_squared": 1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2),
        "nmse": mse / np.mean((y - 1.0) ** 2),  # TorchRec's constant-1 baseline
        "weighted_sum_predictions": np.sum(p),
    }


FLAGLESS = ["mse", "rmse", "mae", "weighted_average", "r_squared", "nmse", "weighted_sum_predictions"]


@pytest.mark.parametrize("with_flagged", [True, False], ids=["next-to-ne", "alone"])
def test_metrics_without_from_logits_get_probabilities(with_flagged):
    """from_logits=True (the default): MSE is the Brier score and the average the mean probability."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, size=(257, 2))
    labels = (rng.uniform(size=(257, 2)) < 0.3).astype(np.int64)
    names = FLAGLESS + (["ne", "calibration"] if with_flagged else [])
    for tasks in (("task",), ("click", "like")):
        z, y = (logits[:, 0], labels[:, 0]) if len(tasks) == 1 else (logits, labels)
        values = pointwise_compute_metrics(names, tasks=tasks)(SimpleNamespace(predictions=z, label_ids=y))
        for i, task in enumerate(tasks):
            p, t = _sigmoid(logits[:, i]), labels[:, i].astype(np.float64)
            expected = _numpy_pointwise(p, t)
            if with_flagged:
                expected["ne"] = log_loss(t, p) / log_loss(t, np.full_like(p, t.mean()))
                expected["calibration"] = p.sum() / t.sum()
            for name, value in expected.items():
                key = name if len(tasks) == 1 else f"{name}/{task}"
                assert values[key] == pytest.approx(value, rel=1e-9), key
    # probabilities given as such are read as given
    p = _sigmoid(logits[:, 0])
    values = pointwise_compute_metrics(FLAGLESS, from_logits=False)(
        SimpleNamespace(predictions=p, label_ids=labels[:, 0])
    )
    for name, value in _numpy_pointwise(p, labels[:, 0].astype(np.float64)).items():
        assert values[name] == pytest.approx(value, rel=1e-9), name


def test_a_two_logit_head_is_told_what_shapes_are_accepted():
    from types import SimpleNamespace

    compute_metrics = pointwise_compute_metrics(["ne"])
    with pytest.raises(ValueError) as info:
        compute_metrics(SimpleNamespace(predictions=np.zeros((4, 2)), label_ids=np.array([1, 0, 0, 1])))
    message = str(info.value)
    assert "one score per example, (N,) or (N, 1)" in message
    assert "got predictions of shape (4, 2) and labels of shape (4,)" in message
    assert "`tasks=`" in message and "one-logit head" in message and "preprocess_logits_for_metrics" in message
    assert "for 1 tasks" not in message


@pytest.mark.parametrize("metrics", [["mse", "regression_auc"], ["regression_auc"]])
def test_tied_logits_stay_tied_whatever_the_eval_batches(metrics):
    """Pairwise concordance ranks the logits (a CPU sigmoid of equal logits may differ by an ulp)."""
    from transformers import EvalPrediction

    z, y = np.full(32, -5.875, dtype=np.float32), (np.arange(32) < 16).astype(np.int64)
    batched = pointwise_compute_metrics(metrics)
    batched(EvalPrediction(predictions=z[:31], label_ids=y[:31]), compute_result=False)
    values = batched(EvalPrediction(predictions=z[31:], label_ids=y[31:]), compute_result=True)
    assert values["regression_auc"] == 0.5  # every score tied: half of every pair
    if "mse" in metrics:
        p = 1 / (1 + np.exp(5.875))
        np.testing.assert_allclose(values["mse"], np.mean((p - y) ** 2), rtol=1e-12)


def test_options_and_id_metrics_are_explained():
    with pytest.raises(ValueError, match=r"Metric 'ne' rejected the options \['num_bins'\] \(passed to every metric\)"):
        pointwise_compute_metrics(num_bins=10_000)  # the defaults include NE, which has no bins
    # id metrics read their ids from a label_names entry, named by `sessions=` / `segments=` (as `groups=`)
    with pytest.raises(ValueError, match=r"Metric 'ndcg@3' needs session ids.*sessions=.*ranking_compute_metrics"):
        pointwise_compute_metrics(["ndcg@3"])
    with pytest.raises(ValueError, match=r"Metric 'segmented_ne' needs segment ids.*label_names=.*segments="):
        pointwise_compute_metrics(["segmented_ne"], num_segments=4)
    with pytest.raises(ValueError, match=r"Metric 'gauc' needs group.*label_names=.*groups="):  # read from label_names
        pointwise_compute_metrics(["gauc"])
    from transformers import EvalPrediction

    binned = pointwise_compute_metrics(["auc", "auprc"], num_bins=10_000)
    values = binned(EvalPrediction(predictions=np.array([2.0, -1.0, 0.5, 0.1]), label_ids=np.array([1, 0, 0, 1])))
    assert values["auc"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [2.0, -1.0, 0.5, 0.1]), abs=1e-3)


def test_batches_kept_apart_by_the_trainer_are_all_scored():
    """``eval_do_concat_batches=False``: the Trainer passes a list of per-batch arrays (all of them count)."""
    from transformers import EvalPrediction

    preds, labels = [np.array([2.0, -1.0]), np.array([-2.0, 1.0])], [np.array([1, 0]), np.array([1, 0])]
    got = pointwise_compute_metrics(["auc", "ctr", "sum_weights"])(EvalPrediction(predictions=preds, label_ids=labels))
    assert got["auc"] == pytest.approx(roc_auc_score(np.concatenate(labels), np.concatenate(preds)))
    assert got["ctr"] == pytest.approx(0.5) and got["sum_weights"] == 4.0
    # several model outputs per batch (tuples): the first is the scores
    outputs = [(p, np.zeros((2, 3))) for p in preds]
    assert (
        pointwise_compute_metrics(["auc"])(EvalPrediction(predictions=outputs, label_ids=labels))["auc"] == got["auc"]
    )
    ranked = ranking_compute_metrics(ks=(1,))(
        EvalPrediction(predictions=[np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]])], label_ids=[np.array([0])] * 2)
    )
    assert ranked["Recall@1"] == pytest.approx(0.5) and ranked["MRR@1"] == pytest.approx(0.5)


def test_one_label_array_per_label_name_are_the_tasks_columns():
    """Two ``label_names``: the Trainer passes a tuple of two label arrays, one per task."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(50, 2)), rng.integers(0, 2, (50, 2))
    compute = pointwise_compute_metrics(["auc"], tasks=("click", "like"))
    for label_ids in ((y[:, 0], y[:, 1]), [(y[:25, 0], y[:25, 1]), (y[25:, 0], y[25:, 1])]):
        predictions = logits if isinstance(label_ids, tuple) else [logits[:25], logits[25:]]
        got = compute(EvalPrediction(predictions=predictions, label_ids=label_ids))
        for t, task in enumerate(("click", "like")):
            assert got[f"auc/{task}"] == pytest.approx(roc_auc_score(y[:, t], logits[:, t]))
    with pytest.raises(ValueError, match="one label array"):
        ranking_compute_metrics(ks=(1,))(EvalPrediction(predictions=logits, label_ids=(y[:, 0], y[:, 1])))


@pytest.mark.parametrize("batched", [False, True], ids=["whole", "batch_eval_metrics"])
def test_a_nan_relevance_label_is_an_error_not_padding(batched):
    """A NaN in a relevance matrix was read as padding (``NaN >= 0`` is False, the test that drops the
    Trainer's -100) and the query scored without that candidate. Padding is a negative label or a score
    equal to ``padding_value``; a NaN label is real data gone wrong: a ValueError naming ``label_ids``.
    Reference for the valid labels: scikit-learn's ``ndcg_score``."""
    from sklearn.metrics import ndcg_score
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(None,), metrics=("ndcg",))
    scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, 0.2]])
    relevance = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    broken = relevance.copy()
    broken[0, 1] = np.nan
    kwargs = {"compute_result": False} if batched else {}
    with pytest.raises(ValueError, match=r"^Expected `label_ids` .*NaN.* NaN is no padding marker: .*-100"):
        compute_metrics(EvalPrediction(predictions=scores, label_ids=broken), **kwargs)
    if batched:
        compute_metrics(EvalPrediction(predictions=scores[:1], label_ids=relevance[:1]), compute_result=False)
        kwargs = {"compute_result": True}
        values = compute_metrics(EvalPrediction(predictions=scores[1:], label_ids=relevance[1:]), **kwargs)
    else:
        values = compute_metrics(EvalPrediction(predictions=scores, label_ids=relevance))
    assert values["NDCG"] == pytest.approx(ndcg_score(relevance, scores), rel=1e-12)


def test_a_label_indexing_a_padded_candidate_is_an_error():
    from transformers import EvalPrediction

    scores = np.array([[0.9, 0.1, -10.0], [0.2, 0.8, 0.5]])
    with pytest.raises(ValueError, match=r"query 0 .* padded slot"):
        ranking_compute_metrics(ks=(1,))(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))


@pytest.mark.parametrize("batch_eval_metrics", [False, True])
def test_a_relevant_candidate_in_a_padded_slot_is_an_error_as_an_index_label_is(batch_eval_metrics):
    """A relevance matrix whose relevant candidate has a padding score (a logit clamped to -10) dropped the
    candidate silently, and with it the query from the mean; the same list with index labels is refused."""
    from transformers import EvalPrediction

    scores = np.array([[0.9, 0.3, -10.0], [0.1, 0.8, 0.2]], dtype=np.float32)
    relevance = np.array([[0, 0, 1], [1, 0, 0]])
    compute_metrics = ranking_compute_metrics(ks=(1, 2))
    call = {"compute_result": True} if batch_eval_metrics else {}
    with pytest.raises(ValueError, match=r"query 0 .* candidate 2 .* padded slot"):
        compute_metrics(EvalPrediction(predictions=scores, label_ids=relevance), **call)
    # the Trainer's label padding (-100) in a padded slot, or relevance 0 there, is still padding: the
    # value is that of the first query's two real candidates (relevant one ranked 2nd) and the second's
    # (ranked 3rd), written from the definitions
    for padded_label in (-100, 0):
        relevance = np.array([[0, 1, padded_label], [1, 0, 0]])
        got = compute_metrics(EvalPrediction(predictions=scores, label_ids=relevance), **call)
        assert got == {"Recall@1": 0.0, "Recall@2": (1 + 0) / 2, "MRR@1": 0.0, "MRR@2": (1 / 2 + 0) / 2}
    # validate_args=False (the metrics' checks skipped) still refuses it: the candidate was dropped silently,
    # Recall@1 0.0 where the lists as given have 0.5 (query 1 ranks its relevant candidate first)
    unchecked = ranking_compute_metrics(ks=(1,), validate_args=False)
    relevance = np.array([[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"query 0 .* candidate 2 .* padded slot"):
        unchecked(EvalPrediction(predictions=scores, label_ids=relevance), **call)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_padding_value_not_exact_in_the_scores_dtype_still_marks_padding(dtype):
    """-10.1 is not a float32 (nor float16) number: compared in float64 the padded slot was kept."""
    from transformers import EvalPrediction

    scores = np.array([[-20.0, -30.0, -10.1], [0.5, 0.25, -10.1]], dtype=dtype)
    labels = np.array([0, 1])
    got = ranking_compute_metrics(ks=(1,), metrics=("mrr",), padding_value=-10.1)(
        EvalPrediction(predictions=scores, label_ids=labels)
    )
    # the padded slot (last column) is no candidate: query 0 ranks its relevant first, query 1 second
    assert got["MRR@1"] == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match=r"query 0 .* padded slot"):
        ranking_compute_metrics(ks=(1,), padding_value=-10.1)(
            EvalPrediction(predictions=scores, label_ids=np.array([2, 0]))
        )


def test_batches_kept_apart_may_have_other_candidate_widths():
    from transformers import EvalPrediction

    b1, l1 = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, -10.0]]), np.array([2, 0])
    b2, l2 = np.array([[0.2, 0.6], [0.7, 0.1]]), np.array([1, 0])
    got = ranking_compute_metrics(ks=(1, 2))(EvalPrediction(predictions=[b1, b2], label_ids=[l1, l2]))
    # by hand: the relevant candidate ranks 2, 2, 1, 1 in the four queries
    assert got["Recall@1"] == pytest.approx(0.5) and got["Recall@2"] == pytest.approx(1.0)
    assert got["MRR@1"] == pytest.approx(0.5) and got["MRR@2"] == pytest.approx(0.75)


def _recall_at(scores: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Recall@k over queries with a relevant candidate (empty ones skipped): relevant in the top k / relevant."""
    values = []
    for row, rel in zip(scores, relevance):
        if rel.sum() == 0:
            continue
        top = np.argsort(-row, kind="stable")[:k]
        values.append(rel[top].sum() / rel.sum())
    return float(np.mean(values))


def test_a_one_candidate_wide_relevance_matrix_is_relevance_not_an_index():
    """(q, 1) labels next to (q, 1) scores: a batch padded to a one-candidate list (batch_eval_metrics)."""
    from transformers import EvalPrediction

    batch1, rel1 = np.array([[0.3, 0.2, 0.1]]), np.array([[0, 1, 0]])
    batch2, rel2 = np.array([[0.5], [0.4]]), np.array([[0], [1]])  # query 2 is relevant, query 1 is not
    compute = ranking_compute_metrics(ks=(1,), metrics=("recall",))
    compute(EvalPrediction(predictions=torch.tensor(batch1), label_ids=torch.tensor(rel1)), compute_result=False)
    got = compute(EvalPrediction(predictions=torch.tensor(batch2), label_ids=torch.tensor(rel2)), compute_result=True)
    # query 1: relevant at rank 2 (0), query 2: not relevant (skipped), query 3: its one candidate (1)
    expected = np.mean([_recall_at(batch1, rel1, 1), _recall_at(batch2[1:], rel2[1:], 1)])
    assert got["Recall@1"] == pytest.approx(expected) and expected == pytest.approx(0.5)
    only = compute(EvalPrediction(predictions=np.array([[0.5]]), label_ids=np.array([[1]])))
    assert only["Recall@1"] == pytest.approx(_recall_at(np.array([[0.5]]), np.array([[1]]), 1))
    # index labels keep working: (q,) at any width, and (q, 1) next to wider scores
    scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, 0.2]])
    for labels in (np.array([2, 1]), np.array([[2], [1]])):
        by_index = compute(EvalPrediction(predictions=scores, label_ids=labels))
        assert by_index["Recall@1"] == pytest.approx(_recall_at(scores, np.eye(3)[labels.reshape(-1)], 1))
    assert compute(EvalPrediction(predictions=np.array([[0.5]]), label_ids=np.array([0])))["Recall@1"] == 1.0


def test_a_failed_evaluation_leaves_nothing_to_the_next():
    """A rejected batch resets the metrics; a whole-array call never counts batches left pending."""
    from transformers import EvalPrediction

    compute = pointwise_compute_metrics(["ctr", "sum_weights"])
    good = EvalPrediction(predictions=torch.tensor([1.0, 2.0]), label_ids=torch.tensor([1, 1]))
    compute(good, compute_result=False)
    with pytest.raises(ValueError, match="labels in"):
        compute(
            EvalPrediction(predictions=torch.tensor([1.0, 2.0]), label_ids=torch.tensor([1, 2])), compute_result=False
        )
    y = np.array([0, 0, 1])
    fresh = compute(EvalPrediction(predictions=np.zeros(3), label_ids=y))
    assert fresh == pytest.approx({"ctr": y.mean(), "sum_weights": len(y)})
    # the same after a batch-mode evaluation that stopped without an error of ours (pending batches)
    compute(good, compute_result=False)
    assert compute(EvalPrediction(predictions=np.zeros(3), label_ids=y)) == pytest.approx(fresh)
    # a batch-mode evaluation after a failed one counts its own batches only
    with pytest.raises(ValueError, match="needs labels"):
        compute(EvalPrediction(predictions=np.zeros(2), label_ids=None), compute_result=False)
    compute(EvalPrediction(predictions=np.zeros(2), label_ids=y[:2]), compute_result=False)
    assert compute(EvalPrediction(predictions=np.zeros(1), label_ids=y[2:]), compute_result=True) == pytest.approx(
        fresh
    )
    ranking = ranking_compute_metrics(ks=(1,), metrics=("recall",))
    ranking(EvalPrediction(predictions=np.array([[0.9, 0.1]]), label_ids=np.array([0])), compute_result=False)
    with pytest.raises(ValueError, match="integer indexes"):
        ranking(EvalPrediction(predictions=np.array([[0.9, 0.1]]), label_ids=np.array([5])), compute_result=False)
    scores = np.array([[0.9, 0.1]])
    assert ranking(EvalPrediction(predictions=scores, label_ids=np.array([1])))["Recall@1"] == pytest.approx(
        _recall_at(scores, np.array([[0, 1]]), 1)
    )


def test_a_second_trainer_evaluate_after_a_failed_one_counts_its_own_rows(tmp_path):
    bad, clean = Clicks(), Clicks(n=64)
    bad.y[-1, 0] = 2  # one bad label in the last eval batch
    compute_metrics = pointwise_compute_metrics(["ctr", "sum_weights"], tasks=("click", "like"))
    run = trainer(Clicker(), bad, compute_metrics, True, tmp_path)
    with pytest.raises(ValueError, match="labels in"):
        run.evaluate()
    metrics = run.evaluate(eval_dataset=clean)
    y = clean.y.numpy()
    for i, task in enumerate(("click", "like")):
        assert metrics[f"eval_sum_weights/{task}"] == len(y)
        assert metrics[f"eval_ctr/{task}"] == pytest.approx(y[:, i].mean(), rel=1e-12)


def test_every_ranking_metric_is_documented_and_named():
    """Bug: `f1` and `r_precision` were accepted but neither documented nor given a display name (keys
    `f1@k`, `r_precision` among `Recall@k`, ...). Every name RankingMetrics takes is both."""
    from torchmetrics_ext.functional.ranking._registry import SPECS
    from torchmetrics_ext.integrations.huggingface import SEED_KEYS

    assert set(SEED_KEYS) == set(SPECS)
    doc = " ".join(ranking_compute_metrics.__doc__.split())
    for name in SPECS:
        assert f'"{name}"' in doc, name


def _f1_and_r_precision(scores: np.ndarray, relevance: np.ndarray, k: int) -> tuple[float, float]:
    """Per query over the unpadded candidates (relevance >= 0), queries without a relevant one skipped:
    F1@k = 2 P R / (P + R) with P = hits / k, R = hits / |rel|; R-precision = hits in the top |rel| / |rel|."""
    f1, r_precision = [], []
    for row, rel in zip(scores, relevance):
        keep = rel >= 0
        row, rel = row[keep], rel[keep] > 0
        if not rel.any():
            continue
        ranked = rel[np.argsort(-row, kind="stable")]
        hits, n_rel = ranked[:k].sum(), rel.sum()
        p, r = hits / k, hits / n_rel
        f1.append(0.0 if hits == 0 else 2 * p * r / (p + r))
        r_precision.append(ranked[:n_rel].sum() / n_rel)
    return float(np.mean(f1)), float(np.mean(r_precision))


@pytest.mark.parametrize(
    ("ks", "metrics", "key_names", "clash"),
    [
        ((1, 2), ("recall", "mrr"), {"recall": "X", "mrr": "X"}, r"'recall@1' and 'mrr@1' both logged as 'X@1'"),
        ((None, 5), ("r_precision", "precision"), {"r_precision": "P", "precision": "P"}, r"logged as 'P'"),
    ],
    ids=["two-metrics-one-name", "r-precision-and-precision-without-cutoff"],
)
def test_key_names_that_log_two_values_under_one_key_are_refused(ks, metrics, key_names, clash):
    """Two metrics renamed alike kept one value under the shared key (the other silently dropped)."""
    with pytest.raises(ValueError, match=rf"`key_names` .*{clash}"):
        ranking_compute_metrics(ks=ks, metrics=metrics, key_names=key_names)


def test_key_names_alike_without_a_shared_key_are_kept():
    """R-precision has no cutoff: named as precision, it shares no key with precision@2 (by hand below)."""
    from transformers import EvalPrediction

    scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, -10.0]])
    compute_metrics = ranking_compute_metrics(
        ks=(2,), metrics=("r_precision", "precision"), key_names={"r_precision": "P", "precision": "P"}
    )
    got = compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))
    # relevant ranked 2nd in both queries: R-precision (cutoff 1) 0, precision@2 1/2
    assert got == {"P": 0.0, "P@2": 0.5}


def test_f1_and_r_precision_equal_their_definitions():
    """`f1` and `r_precision` through the adapter equal the formulas (numpy, per query): a relevance
    matrix with several relevant candidates and Trainer padding, and index labels."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    scores = rng.permutation(40 * 9).reshape(40, 9).astype(np.float64) / 7.0  # no ties
    relevance = rng.integers(0, 3, (40, 9)) * (rng.random((40, 9)) < 0.4)
    relevance[:, -2:][rng.random((40, 2)) < 0.5] = -100  # the Trainer's label padding
    compute_metrics = ranking_compute_metrics(ks=(1, 3, 20), metrics=("f1", "r_precision", "recall"))
    values = compute_metrics(SimpleNamespace(predictions=scores, label_ids=relevance))
    assert sorted(values) == sorted(["F1@1", "F1@3", "F1@20", "RPrecision", "Recall@1", "Recall@3", "Recall@20"])
    for k in (1, 3, 20):
        f1, r_precision = _f1_and_r_precision(scores, relevance, k)
        assert values[f"F1@{k}"] == pytest.approx(f1, rel=1e-12), k
        assert values["RPrecision"] == pytest.approx(r_precision, rel=1e-12)
    labels = rng.integers(0, 9, 40)
    values = compute_metrics(SimpleNamespace(predictions=scores, label_ids=labels))
    one_hot = np.eye(9, dtype=np.int64)[labels]
    for k in (1, 3, 20):
        f1, r_precision = _f1_and_r_precision(scores, one_hot, k)
        assert values[f"F1@{k}"] == pytest.approx(f1, rel=1e-12), k
        assert values["RPrecision"] == pytest.approx(r_precision, rel=1e-12)


def test_errors_name_the_arrays_passed_and_this_adapters_options():
    """Errors spoke the module's internals (`model_out['prediction/task']`) and gave its fix for logits."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=40), (rng.random(40) < 0.4).astype(np.int64)
    with pytest.raises(ValueError) as info:
        pointwise_compute_metrics(["ne", "auc"], from_logits=False)(
            EvalPrediction(predictions=logits, label_ids=labels)
        )
    message = str(info.value)
    assert message.startswith("Expected `predictions` to be probabilities in [0, 1], got values in [")
    assert "`pointwise_compute_metrics(..., from_logits=True)`" in message
    assert "model_out" not in message and "module" not in message and "RecTaskInfo" not in message
    values = pointwise_compute_metrics(["ne", "auc"])(EvalPrediction(predictions=logits, label_ids=labels))
    p = _sigmoid(logits)
    assert values["auc"] == pytest.approx(roc_auc_score(labels, p), rel=1e-12)
    assert values["ne"] == pytest.approx(log_loss(labels, p) / log_loss(labels, np.full_like(p, labels.mean())))
    two = pointwise_compute_metrics(["ne", "auc"], tasks=("click", "like"))
    with pytest.raises(
        ValueError, match=r"^Task 'like': Expected `label_ids\[:, 1\]` to hold binary labels in \{0, 1\}"
    ) as info:
        two(EvalPrediction(predictions=np.stack([logits, logits], 1), label_ids=np.stack([labels, 2 * labels - 1], 1)))
    assert "module" not in str(info.value)  # the module's advice (a task in a module of its own) is not the adapter's
    padded = labels.copy()
    padded[3] = -100
    with pytest.raises(ValueError, match=r"^Expected `label_ids` to hold .* -100 \(the Trainer's label padding"):
        pointwise_compute_metrics(["ne"])(EvalPrediction(predictions=logits, label_ids=padded))
    with pytest.raises(
        ValueError, match=r"-100 \(the Trainer's .*`pointwise_compute_metrics\(\.\.\., ignore_index=-100\)`"
    ):
        pointwise_compute_metrics(["ne"])(EvalPrediction(predictions=logits, label_ids=padded))
    with pytest.raises(ValueError, match=r"marks no example to skip here \(`ignore_index` is -1\).*ignore_index=-100"):
        pointwise_compute_metrics(["ne"], ignore_index=-1)(EvalPrediction(predictions=logits, label_ids=padded))
    with pytest.raises(TypeError, match=r"^`predictions`: expected floating point predictions") as info:
        pointwise_compute_metrics(["ne"])(EvalPrediction(predictions=labels, label_ids=labels))
    assert "reads labels from" not in str(info.value)  # the module's columns are not the adapter's arguments
    scores = np.array([[np.nan, 0.3, 0.5], [0.1, 0.8, -10.0]])
    with pytest.raises(ValueError, match=r"^Expected `predictions` without NaN"):
        ranking_compute_metrics(ks=(1,))(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: pointwise_compute_metrics("auc"), r"`metrics` to be a sequence of names, got the string 'auc'"),
        (
            lambda: pointwise_compute_metrics(["auc"], tasks="click"),
            r"`tasks` to be a sequence of names, got the string 'click' .*tasks=\('click',\)",
        ),
        (lambda: ranking_compute_metrics(padding_value="-10"), r"`padding_value` to be a number .*got '-10'"),
        (lambda: ranking_compute_metrics(padding_value=[-10, None]), r"`padding_value` to be a number"),
        (lambda: ranking_compute_metrics(padding_value=True), r"`padding_value` to be a number"),
        (lambda: ranking_compute_metrics(key_names=["Recall"]), r"`key_names` to be a mapping"),
    ],
    ids=["metrics-str", "tasks-str", "padding-str", "padding-none", "padding-bool", "key-names-list"],
)
def test_arguments_given_as_one_string_or_of_another_kind_are_named(build, match):
    """A string was read letter by letter ("Unknown metric name 'a'", tasks 'a' and 'b' from "ab")."""
    with pytest.raises(ValueError, match=match):
        build()


def test_a_two_letter_task_string_is_not_two_tasks():
    """tasks="ab" with two prediction columns used to score silently as tasks 'a' and 'b'."""
    with pytest.raises(ValueError, match="`tasks`"):
        pointwise_compute_metrics(["ctr"], tasks="ab")


@pytest.mark.parametrize(
    "padding", [np.array([-10.0, -100.0]), torch.tensor([-10.0]), np.float32(-10.0), (-10,)], ids=str
)
def test_padding_values_as_arrays_or_numpy_numbers_mark_padding(padding):
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(2,), padding_value=padding)
    scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, -10.0]])  # query 2: 2 candidates and a padded slot
    with pytest.raises(ValueError, match="indexes a padded slot"):  # only when -10 is padding
        compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([2, 2])))
    values = compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))
    assert values == {"Recall@2": 1.0, "MRR@2": 0.5}  # both relevant candidates ranked 2nd


@pytest.mark.parametrize(
    "padding", [float("nan"), (float("nan"), -10.0), np.array([np.nan]), torch.tensor(np.nan)], ids=str
)
def test_a_nan_padding_value_is_refused_at_build(padding):
    """A NaN equals no score, so it marked nothing: NaN-padded slots were candidates, refused only by the metrics'
    NaN check, and with ``validate_args=False`` ranked and counted (precision and MRR of 0 instead of 0.5),
    silently. ``RankingMetrics(padding_value=nan)`` refuses it; so does the adapter, naming the argument."""
    with pytest.raises(ValueError, match=r"`padding_value` .*NaN"):
        ranking_compute_metrics(ks=(2,), padding_value=padding, validate_args=False)
    # the padding it was meant to be, as a number: the values by hand (each relevant candidate ranked 2nd of 2)
    scores = np.array([[0.2, 0.9, -1.0, -1.0], [0.5, 0.1, 0.3, -1.0]])
    got = ranking_compute_metrics(ks=(2,), metrics=("precision", "mrr"), padding_value=-1.0, validate_args=False)(
        (scores, np.array([0, 2]))
    )
    assert got == pytest.approx({"Precision@2": 0.5, "MRR@2": 0.5})


@pytest.mark.parametrize("as_array", [np.array, list], ids=["numpy", "list"])
def test_ks_and_metrics_as_arrays_are_those_cutoffs_and_names(as_array):
    """`ranking_compute_metrics(ks=np.arange(1, 4))` failed with numpy's "truth value of an array is
    ambiguous" (RankingMetrics tested `not ks`); arrays of cutoffs and of names are taken as lists are."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(4)
    scores = rng.normal(size=(40, 6))
    labels = rng.integers(0, 6, 40)
    ks = as_array([1, 2, 3])
    metrics = as_array(["recall", "mrr"])
    values = ranking_compute_metrics(ks=ks, metrics=metrics)(EvalPrediction(predictions=scores, label_ids=labels))
    assert values == pytest.approx(seed_reference(scores, labels, (1, 2, 3)), abs=1e-12)


class Squeezer(nn.Module):
    """A one-logit head squeezed to (B,): a 0-dim logit on a batch of one example."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        logits = self.linear(x).squeeze()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float().reshape(logits.shape))
        return {"loss": loss, "logits": logits}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
@pytest.mark.parametrize("n", [17, 1], ids=["last-batch-of-one", "one-example"])
@pytest.mark.filterwarnings("ignore:pointwise_compute_metrics reads the predictions as logits:UserWarning")
def test_a_squeezed_logit_of_a_batch_of_one_is_one_example(tmp_path, batch_eval_metrics, n):
    """The last eval batch of one example gives a 0-dim logit: it failed with an IndexError in batch mode."""
    dataset = Clicks(n=n)
    dataset.y = dataset.y[:, :1].reshape(-1)  # one task
    compute_metrics = pointwise_compute_metrics(["log_loss", "ctr", "sum_weights"])
    metrics = trainer(Squeezer(), dataset, compute_metrics, batch_eval_metrics, tmp_path).evaluate()
    with torch.no_grad():
        logits = Squeezer().linear(dataset.x).reshape(-1).double().numpy()
    y = dataset.y.numpy()
    p = 1 / (1 + np.exp(-logits))
    assert metrics["eval_sum_weights"] == n
    assert metrics["eval_ctr"] == pytest.approx(y.mean(), rel=1e-12)
    assert metrics["eval_log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-6)


def _ignored_reference(p: np.ndarray, y: np.ndarray, ignore: float) -> dict[str, float]:
    """scikit-learn/numpy on the rows of one task whose label is not ``ignore`` (``p``: probabilities)."""
    keep = y != ignore
    p, y = p[keep], y[keep].astype(np.float64)
    return {
        "auc": roc_auc_score(y, p),
        "log_loss": log_loss(y, p, labels=[0, 1]),
        "ne": log_loss(y, p, labels=[0, 1]) / log_loss(y, np.full_like(p, y.mean()), labels=[0, 1]),
        "ctr": y.mean(),
        "mse": np.mean((p - y) ** 2),
        "sum_weights": float(keep.sum()),
        "calibration": p.sum() / y.sum(),
    }


IGNORED_METRICS = ("auc", "log_loss", "ne", "ctr", "mse", "sum_weights", "calibration")


@pytest.mark.parametrize("ignore", [-100, -1.0], ids=["int-minus-100", "float-minus-1"])
@pytest.mark.parametrize("num_tasks", [1, 2])
def test_ignore_index_leaves_an_example_out_of_that_task_only(ignore, num_tasks):
    """``ignore_index``: per task, the values of scikit-learn/numpy on the rows whose label is not ignored,
    in whole-array and batch mode (``compute_result``), as (N, T) columns and as per-task heads."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    n = 90
    z = rng.normal(size=(n, num_tasks))
    y = (rng.random((n, num_tasks)) < 0.4).astype(np.float64 if isinstance(ignore, float) else np.int64)
    y[rng.random((n, num_tasks)) < 0.35] = ignore  # each task its own ignored rows
    # rows ignored in one task, counted in the other
    assert num_tasks == 1 or ((y == ignore).any(1) & (y != ignore).any(1)).any()
    tasks = ("click", "conversion")[:num_tasks]
    p = _sigmoid(z)
    expected = {}
    for i, task in enumerate(tasks):
        for name, value in _ignored_reference(p[:, i], y[:, i], ignore).items():
            expected[name if num_tasks == 1 else f"{name}/{task}"] = value
    compute = pointwise_compute_metrics(IGNORED_METRICS, tasks=tasks, ignore_index=ignore)
    single = num_tasks == 1
    got = compute(SimpleNamespace(predictions=z[:, 0] if single else z, label_ids=y[:, 0] if single else y))
    assert got == pytest.approx(expected, rel=1e-6)
    for start in range(0, n, 32):  # batch_eval_metrics=True: one call per batch of tensors
        rows = slice(start, start + 32)
        predictions = torch.as_tensor(z[rows])
        if not single:  # a multi-head model's per-task heads
            predictions = (predictions[:, 0], predictions[:, 1:])
        got = compute(SimpleNamespace(predictions=predictions, label_ids=torch.as_tensor(y[rows])), start + 32 >= n)
    assert got == pytest.approx(expected, rel=1e-6)


def test_ignore_index_is_the_same_as_removing_the_rows_for_every_pointwise_metric():
    """Registry-wide invariance: with ``ignore_index`` every metric the builder accepts (exact and binned
    curves included) gives its value on the task's kept rows alone (an ignored label is a zero-weight row)."""
    import inspect

    from transformers import EvalPrediction

    from torchmetrics_ext.integrations.huggingface import _IDS
    from torchmetrics_ext.registry import lookup, metric_names

    names = [n for n in metric_names() if "@" not in n]
    names = [n for n in names if not _IDS & set(inspect.signature(lookup(n)[0].cls.update).parameters)]
    names = [n for n in names if lookup(n)[0].wraps is None]  # segmented_ne: segment ids (refused, see below)
    assert {"ne", "auc", "auprc", "calibration", "ctr", "mse", "mae", "accuracy", "weighted_recall"} <= set(names)
    rng = np.random.default_rng(11)
    z = rng.normal(size=(120, 2)).round(1)  # ties, kept and ignored rows sharing scores
    y = (rng.random((120, 2)) < 0.4).astype(np.int64)
    y[rng.random((120, 2)) < 0.3] = -100
    cases = [(name, {}) for name in names] + [("auc", {"num_bins": 64}), ("auprc", {"num_bins": 64})]
    for name, options in cases:
        both = pointwise_compute_metrics([name], tasks=("a", "b"), ignore_index=-100, **options)
        got = both(EvalPrediction(predictions=z, label_ids=y))
        for i, task in enumerate(("a", "b")):
            keep = y[:, i] != -100
            alone = pointwise_compute_metrics([name], **options)
            want = alone(EvalPrediction(predictions=z[keep, i], label_ids=y[keep, i]))[name]
            assert got[f"{name}/{task}"] == pytest.approx(want, rel=1e-9, abs=1e-12), (name, options, task)


def test_a_task_whose_every_label_is_ignored_is_undefined():
    """Every label of a task ignored: nan and an UndefinedMetricWarning for that task; the other is scored."""
    from transformers import EvalPrediction

    from torchmetrics_ext import UndefinedMetricWarning

    rng = np.random.default_rng(5)
    z, y = rng.normal(size=(30, 2)), (rng.random((30, 2)) < 0.5).astype(np.int64)
    y[:, 1] = -100
    compute = pointwise_compute_metrics(["ne", "auc", "ctr"], tasks=("click", "conversion"), ignore_index=-100)
    with pytest.warns(UndefinedMetricWarning, match=r"\['conversion'\]"):
        got = compute(EvalPrediction(predictions=z, label_ids=y))
    for name in ("ne", "auc", "ctr"):
        assert np.isnan(got[f"{name}/conversion"]), name
    assert got["auc/click"] == pytest.approx(roc_auc_score(y[:, 0], z[:, 0]), rel=1e-12)
    assert got["ctr/click"] == pytest.approx(y[:, 0].mean(), rel=1e-12)


@pytest.mark.parametrize("bad", [True, "-100", float("nan"), [-100]], ids=["bool", "str", "nan", "list"])
def test_a_bad_ignore_index_is_named(bad):
    with pytest.raises(ValueError, match=r"^Expected `ignore_index` to be None or a number .*got "):
        pointwise_compute_metrics(["ne"], ignore_index=bad)


@pytest.mark.parametrize(
    ("metrics", "ignore", "domain"),
    [(["ne", "auc"], 0, r"0 or 1"), (["ctr"], 1.0, r"in \[0, 1\]"), (["auc"], 0.5, r"0 or 1")],
)
def test_an_ignore_index_that_is_a_label_of_the_metrics_is_refused(metrics, ignore, domain):
    """An ignore value the metrics take as a real label would silently drop labelled examples."""
    with pytest.raises(
        ValueError, match=rf"^Expected `ignore_index` outside the labels these metrics take \({domain}\)"
    ):
        pointwise_compute_metrics(metrics, ignore_index=ignore)


def test_an_ignore_index_is_any_value_for_real_valued_labels():
    """Regression metrics take any real label: an ignore value in [0, 1] is the user's to choose (numpy reference)."""
    from transformers import EvalPrediction

    compute = pointwise_compute_metrics(["mse"], from_logits=False, ignore_index=0.5)
    p, y = np.array([0.2, 0.4, 0.9, 0.1]), np.array([0.0, 0.5, 2.0, 0.5])
    got = compute(EvalPrediction(predictions=p, label_ids=y))
    kept = y != 0.5
    assert got["mse"] == pytest.approx(np.mean((p[kept] - y[kept]) ** 2), rel=1e-12)


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_the_trainers_minus_100_label_is_refused_with_validate_args_false_too(num_tasks):
    """Without ``ignore_index``, a label of -100 (the Trainer's label padding, the usual ignore index) is an
    error that suggests ``ignore_index=-100``: with ``validate_args=False`` (the metrics' checks skipped) it
    was scored as a label of -100, silently (CTR -33 for labels [1, -100, 0]). The adapter refuses it either way
    (one host read per call, of the evaluation); with ``ignore_index=-100`` the unchecked values are those of
    the kept rows (numpy). Other unchecked invalid labels (2, NaN) stay the caller's promise."""
    from transformers import EvalPrediction

    z = np.array([[0.5, -1.0], [-1.0, 0.3], [2.0, 1.5], [0.1, 0.2]])[:, :num_tasks]
    y = np.array([[1, 0], [-100, 1], [0, -100], [1, 1]])[:, :num_tasks]
    tasks = ("click", "like")[:num_tasks]
    single = num_tasks == 1
    call = EvalPrediction(predictions=z[:, 0] if single else z, label_ids=y[:, 0] if single else y)
    column = r"Expected `label_ids`" if single else r"Task 'click': Expected `label_ids\[:, 0\]`"  # the first one
    for validate_args in (True, False):
        compute = pointwise_compute_metrics(["ctr"], tasks=tasks, validate_args=validate_args)
        with pytest.raises(ValueError, match=column + r".*-100 \(the Trainer's label padding.*ignore_index=-100"):
            compute(call)
        kept = pointwise_compute_metrics(["ctr"], tasks=tasks, validate_args=validate_args, ignore_index=-100)
        got = kept(call)
        for i, task in enumerate(tasks):
            labels = y[:, i][y[:, i] != -100]
            assert got["ctr" if single else f"ctr/{task}"] == pytest.approx(labels.mean(), rel=1e-12)
    # a real-valued label of -100 is a label of regression metrics, unchecked too (numpy)
    mse = pointwise_compute_metrics(["mse"], from_logits=False, validate_args=False)
    got = mse(EvalPrediction(predictions=np.array([0.5, -90.0]), label_ids=np.array([1.0, -100.0])))
    assert got == pytest.approx({"mse": np.mean([(0.5 - 1.0) ** 2, (-90.0 + 100.0) ** 2])}, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
def test_ignore_index_matches_no_label_of_a_dtype_that_cannot_hold_it(dtype):
    """``labels == -100`` on uint8 labels wraps -100 to 156: a uint8 label 156 (no valid binary label) was taken
    for an ignored one, weighted 0 and scored as label 0, silently. A dtype that cannot hold the ignore value has
    no ignored label: 156 is refused as any label outside [0, 1]; valid labels score as numpy's mean."""
    from transformers import EvalPrediction

    compute = pointwise_compute_metrics(["ctr", "sum_weights"], ignore_index=-100)
    z = torch.tensor([0.5, -1.0, 2.0, 0.1])
    y = torch.tensor([1, 0, 1, 1], dtype=dtype)
    got = compute(EvalPrediction(predictions=z, label_ids=y))
    assert got == pytest.approx({"ctr": np.mean([1, 0, 1, 1]), "sum_weights": 4.0}, rel=1e-12)
    if dtype == torch.uint8:
        with pytest.raises(ValueError, match=r"`label_ids` to hold labels in \[0, 1\].*got values in \[0, 156\]"):
            compute(EvalPrediction(predictions=z, label_ids=torch.tensor([1, 156, 0, 1], dtype=dtype)))


class ConversionOfClicks(Clicks):
    """Two tasks, click and conversion; the conversion label exists only for clicked examples (-100 elsewhere)."""

    def __init__(self, n: int = 203) -> None:
        super().__init__(n)
        self.y[:, 1] = torch.where(self.y[:, 0] == 1, self.y[:, 1], -100)


class MaskedClicker(Clicker):
    def forward(self, x, labels=None):
        logits = self.linear(x)
        kept = labels != -100
        loss = nn.functional.binary_cross_entropy_with_logits(logits[kept], labels[kept].float())
        return {"loss": loss, "logits": logits}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_ignore_index_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    """A conversion label only for clicked examples: ``Trainer.evaluate()`` scores each task on its own
    labelled rows (scikit-learn on the Trainer's predictions); the click task counts every example."""
    dataset = ConversionOfClicks()
    tasks = ("click", "conversion")
    compute_metrics = pointwise_compute_metrics(["log_loss", "auc", "ctr"], tasks=tasks, ignore_index=-100)
    run = trainer(MaskedClicker(), dataset, compute_metrics, batch_eval_metrics, tmp_path)
    metrics = run.evaluate()
    prediction = run.predict(dataset)
    probabilities = _sigmoid(prediction.predictions.astype(np.float64))
    assert (prediction.label_ids[:, 1] == -100).sum() > 50
    for i, task in enumerate(tasks):
        keep = prediction.label_ids[:, i] != -100
        y, p = prediction.label_ids[keep, i], probabilities[keep, i]
        assert metrics[f"eval_log_loss/{task}"] == pytest.approx(log_loss(y, p), rel=1e-6)
        assert metrics[f"eval_auc/{task}"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
        assert metrics[f"eval_ctr/{task}"] == pytest.approx(y.mean(), rel=1e-12)


def test_no_weight_column_warning_without_ignore_index():
    """The adapter feeds its tasks' weight columns only with ``ignore_index``: without one, the module's
    first-step warning for a missing weight column (a misspelt ``weight_name``) is not raised.
    Reference: scikit-learn."""
    import warnings
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    p, y = rng.uniform(size=40), (rng.uniform(size=40) < 0.4).astype(float)
    compute_metrics = pointwise_compute_metrics(["auc"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = compute_metrics(SimpleNamespace(predictions=p, label_ids=y))
    assert values["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)


@pytest.mark.parametrize("sync", [True, np.bool_(True), "yes", 1], ids=["true", "numpy-true", "str", "int"])
def test_sync_on_compute_other_than_false_is_refused(sync):
    """The Trainer gathers every process's rows before compute_metrics: a metric syncing again would count each
    row once per process. ``sync_on_compute=True`` gave RankingMetrics' "got multiple values for keyword argument"
    TypeError in the ranking adapter and was taken without a word by the pointwise one."""
    match = r"^Expected `sync_on_compute` to be (False \(the default\): the Trainer gathers|a bool)"
    with pytest.raises(ValueError, match=match):
        ranking_compute_metrics(ks=(1,), sync_on_compute=sync)
    with pytest.raises(ValueError, match=match):
        pointwise_compute_metrics(["ctr"], sync_on_compute=sync)


def test_sync_on_compute_false_is_the_default():
    """``sync_on_compute=False`` given explicitly builds the same callables (references: the seed's numpy
    Recall/MRR and scikit-learn)."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(8)
    scores, labels = rng.normal(size=(30, 6)), rng.integers(0, 6, 30)
    ranking = ranking_compute_metrics(ks=(1, 3), sync_on_compute=False)
    got = ranking(EvalPrediction(predictions=scores, label_ids=labels))
    assert got == pytest.approx(seed_reference(scores, labels, (1, 3)), abs=1e-12)
    z, y = rng.normal(size=30), rng.integers(0, 2, 30)
    pointwise = pointwise_compute_metrics(["auc"], sync_on_compute=np.bool_(False))
    got = pointwise(EvalPrediction(predictions=z, label_ids=y))
    assert got["auc"] == pytest.approx(roc_auc_score(y, z), rel=1e-12)


def test_float_index_labels_are_refused_for_their_dtype_not_their_range():
    """Float index labels inside the range were refused with "got values in [0, 1]" for a range of [0, 3)."""
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(1, 2))
    scores = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, -10.0]])
    with pytest.raises(ValueError, match=r"in \[0, 3\), got float64 labels \(values in \[0, 1\]\)") as info:
        compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([1.0, 0.0])))
    assert "integer dtype" in str(info.value)
    # out of range and of an integer dtype: the range alone, as before
    with pytest.raises(ValueError, match=r"in \[0, 3\), got values in \[0, 3\]\.$"):
        compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([3, 0])))
    # the same labels as integers: query 0's relevant candidate (0.5) ranks first, query 1's (0.9) first
    assert compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([1, 0]))) == seed_reference(
        scores, np.array([1, 0]), (1, 2)
    )


def test_an_eval_prediction_unpacked_into_a_tuple_is_scored_and_anything_else_named():
    """``(predictions, label_ids)`` (EvalPrediction's own tuple form) raised "'tuple' object has no attribute"."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(3)
    logits, labels = rng.normal(size=50), (rng.random(50) < 0.4).astype(np.int64)
    p = _sigmoid(logits)
    pointwise = pointwise_compute_metrics(["auc", "log_loss"])
    for eval_pred in [(logits, labels), tuple(EvalPrediction(logits, labels, inputs=rng.normal(size=(50, 3))))]:
        values = pointwise(eval_pred)
        assert values["auc"] == pytest.approx(roc_auc_score(labels, p), rel=1e-12)
        assert values["log_loss"] == pytest.approx(log_loss(labels, p), rel=1e-9)
    scores = rng.normal(size=(6, 4))
    relevant = rng.integers(0, 4, 6)
    ranking = ranking_compute_metrics(ks=(1, 2))
    assert ranking((scores, relevant)) == pytest.approx(seed_reference(scores, relevant, (1, 2)))
    for bad in [{"predictions": logits, "label_ids": labels}, (logits,), logits]:
        with pytest.raises(TypeError, match=r"Expected `eval_pred` to be an EvalPrediction"):
            pointwise(bad)


def test_without_ignore_index_the_tasks_have_no_weights_and_no_weight_tensor_is_fed(monkeypatch):
    """Without ``ignore_index`` the adapter's tasks named a weight column (``weight/<task>``) that it never fed,
    and set a private flag on the module to silence the module's missing-column warning. The tasks now have
    ``weight_name=None`` (the module's path for tasks without weights): the module receives prediction and label
    columns only and stacks no weight tensor; the values are scikit-learn's unweighted ones. With
    ``ignore_index`` each task's weight column is fed at every step, and no warning is raised either."""
    import warnings
    from types import SimpleNamespace

    rng = np.random.default_rng(11)
    n = 120
    z = rng.normal(size=(n, 2))
    y = (rng.random((n, 2)) < 0.4).astype(np.int64)
    p = _sigmoid(z)
    tasks = ("click", "like")
    compute = pointwise_compute_metrics(["auc", "log_loss", "ctr"], tasks=tasks)
    module = compute.module
    assert [t.weight_name for t in module.tasks] == [None, None]
    received, weights = [], []
    update, read = module.update, module._read

    def spy_update(columns):
        received.append(sorted(columns))
        return update(columns)

    def spy_read(columns):
        batch = read(columns)
        weights.append(batch.columns[2])  # the weight tensors the step stacked, per task
        return batch

    monkeypatch.setattr(module, "update", spy_update)
    monkeypatch.setattr(module, "_read", spy_read)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute(SimpleNamespace(predictions=z, label_ids=y))
    expected = {}
    for i, task in enumerate(tasks):
        expected[f"auc/{task}"] = roc_auc_score(y[:, i], p[:, i])
        expected[f"log_loss/{task}"] = log_loss(y[:, i], p[:, i], labels=[0, 1])
        expected[f"ctr/{task}"] = y[:, i].mean()
    assert got == pytest.approx(expected, rel=1e-6)
    assert received == [sorted(f"{kind}/{task}" for task in tasks for kind in ("label", "prediction"))]
    assert weights == [[None, None]]
    # with ignore_index: a weight column per task, fed at every step (no private flag, no warning)
    ignoring = pointwise_compute_metrics(["ctr"], tasks=tasks, ignore_index=-100)
    assert [t.weight_name for t in ignoring.module.tasks] == ["weight/click", "weight/like"]
    y_ignored = np.where(rng.random((n, 2)) < 0.3, -100, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ignoring(SimpleNamespace(predictions=z, label_ids=y_ignored))
    kept = y_ignored != -100
    assert got == pytest.approx({f"ctr/{t}": y_ignored[kept[:, i], i].mean() for i, t in enumerate(tasks)}, rel=1e-9)


def _one_query_reference(scores: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """scikit-learn's NDCG and MRR written from its definition (1 / rank of the first relevant) for each query."""
    from sklearn.metrics import ndcg_score

    first = [np.flatnonzero(rel[np.argsort(-row, kind="stable")] > 0)[0] + 1 for row, rel in zip(scores, relevance)]
    return {
        "NDCG@2": ndcg_score(relevance, scores, k=2),
        "NDCG": ndcg_score(relevance, scores),
        "MRR@2": float(np.mean([1.0 / r if r <= 2 else 0.0 for r in first])),
        "MRR": float(np.mean([1.0 / r for r in first])),
    }


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
@pytest.mark.parametrize(
    "labels",
    [np.array([3]), np.array(3), np.array([[3]]), np.array([[0, 0, 1, 2, 0]])],
    ids=["index-(1,)", "index-0-dim", "index-(1,1)", "relevance-(1,W)"],
)
def test_scores_of_one_query_squeezed_to_its_candidates_are_that_query(batch_eval_metrics, labels):
    """A model whose ``scores.squeeze()`` turns the last eval batch of one query into ``(W,)`` scores was refused
    ("Expected scores of shape (queries, candidates)"); next to labels of one query (an index label, or a relevance
    row) the scores can only be that query's W candidates. Reference: scikit-learn's ``ndcg_score`` and MRR from
    its definition, over the earlier batch's queries and the squeezed one."""
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(2, None), metrics=("ndcg", "mrr"))
    first_scores = np.array([[0.9, 0.3, 0.5, 0.1, 0.7], [0.2, 0.8, 0.4, 0.6, -10.0]])
    first_labels = np.array([4, 2]) if labels.shape[-1:] != (5,) else np.array([[0, 1, 0, 0, 1], [0, 0, 2, 1, -100]])
    squeezed = np.array([0.15, 0.95, 0.35, 0.75, 0.55])  # (W,): the batch dim of one query squeezed away
    if labels.shape[-1:] == (5,):
        relevance = np.vstack([first_labels.clip(min=0), labels])
    else:
        relevance = np.eye(5, dtype=np.int64)[[4, 2, 3]]
    # the second query's padded slot (-10) is no candidate: its reference row has four candidates
    scores = np.vstack([first_scores, squeezed])
    expected = {}
    for key in ("NDCG@2", "NDCG", "MRR@2", "MRR"):
        rows = [
            _one_query_reference(scores[i : i + 1, :w], relevance[i : i + 1, :w])[key] for i, w in enumerate((5, 4, 5))
        ]
        expected[key] = float(np.mean(rows))
    if batch_eval_metrics:
        compute_metrics(EvalPrediction(predictions=first_scores, label_ids=first_labels), compute_result=False)
        got = compute_metrics(EvalPrediction(predictions=squeezed, label_ids=labels), compute_result=True)
        assert got == pytest.approx(expected, rel=1e-12)
    # the squeezed query alone (a one-query eval set) in whole-array mode
    alone = compute_metrics(EvalPrediction(predictions=squeezed, label_ids=labels))
    one = _one_query_reference(squeezed[None], relevance[2:])
    assert alone == pytest.approx(one, rel=1e-12)
    assert 0 < one["NDCG@2"] < 1 and one["MRR"] == 0.5  # the cutoff and the rank matter on this data
    # a query of one candidate, both dims squeezed (0-dim scores), read as (1, 1) scores: (1,) labels index it
    assert compute_metrics(EvalPrediction(predictions=np.array(0.5), label_ids=np.array([0]))) == {
        "NDCG@2": 1.0,
        "NDCG": 1.0,
        "MRR@2": 1.0,
        "MRR": 1.0,
    }


class SqueezingScorer(Scorer):
    """The seed's scorer whose scores are ``squeeze()``d: ``(W,)`` for a batch of one query."""

    def forward(self, features, mask, labels=None):
        out = super().forward(features, mask, labels)
        return {"loss": out["loss"], "logits": out["logits"].squeeze()}


def test_squeezed_queries_in_trainer_evaluate(tmp_path):
    """Eval batches of one query from a model that squeezes its scores arrive as ``(W,)`` in
    ``batch_eval_metrics`` mode (refused before); the values are those of the seed's numpy reference.
    A last, incomplete batch of one squeezed query is cut by the Trainer (accelerate keeps the batch's
    first row: the first candidate's score): refused, not scored as a one-candidate query."""
    dataset = Candidates(queries=17)
    compute_metrics = ranking_compute_metrics(ks=TOP_K, metrics=("recall", "mrr"))
    args = eval_args(tmp_path, per_device_eval_batch_size=1, batch_eval_metrics=True)
    one_by_one = transformers.Trainer(
        model=SqueezingScorer(), args=args, eval_dataset=dataset, compute_metrics=compute_metrics
    )
    metrics = one_by_one.evaluate()
    prediction = trainer(Scorer(), dataset, None, False, tmp_path).predict(dataset)  # the same scores, unsqueezed
    expected = seed_reference(prediction.predictions, prediction.label_ids)
    for key, value in expected.items():
        assert metrics[f"eval_{key}"] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    cut = trainer(SqueezingScorer(), dataset, compute_metrics, True, tmp_path)  # batches of 16, then one
    with pytest.raises(ValueError, match=r"got \(1,\) scores with labels of the same shape: ambiguous"):
        cut.evaluate()


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        # (W,) labels next to (W,) scores: one query's relevance, or W one-candidate queries (a (W, 1) batch
        # squeezed) with their index labels: refused, not guessed
        (np.array([0.1, 0.7, 0.4]), np.array([0, 1, 0]), r"got \(3,\) scores .*ambiguous.*\(1, 3\)"),
        (np.array([0.5]), np.array([0]), r"got \(1,\) scores .*ambiguous.*\(1, 1\)"),
        # labels of several queries next to one query's scores
        (np.array([0.1, 0.7, 0.4]), np.array([0, 1]), r"Expected labels of shape \(1,\) .* or \(1, 3\) .*got \(2,\)"),
        (np.array([0.1, 0.7, 0.4]), np.zeros((2, 3)), r"Expected labels of shape \(1,\) .* or \(1, 3\) .*got \(2, 3\)"),
        (np.array(0.5), np.array([0, 0]), r"Expected labels of shape \(1,\) .* or \(1, 1\) .*got \(2,\)"),
        (np.zeros((1, 2, 3)), np.array([0]), r"Expected scores of shape \(queries, candidates\).*got \(1, 2, 3\)"),
    ],
    ids=["relevance-(W,)", "one-candidate", "two-index-labels", "two-relevance-rows", "0-dim-scores", "3-D"],
)
def test_squeezed_scores_whose_labels_do_not_say_one_query_are_refused(scores, labels, match):
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(1,))
    with pytest.raises(ValueError, match=match):
        compute_metrics(EvalPrediction(predictions=scores, label_ids=labels))
    # nothing was counted: a valid call afterwards sees its own query only (rank 2 of 3: Recall@1 = 0, MRR@1 = 0)
    got = compute_metrics(EvalPrediction(predictions=np.array([[0.1, 0.7, 0.4]]), label_ids=np.array([2])))
    assert got == {"Recall@1": 0.0, "MRR@1": 0.0}


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_an_index_label_in_a_padded_slot_is_refused_with_or_without_validate_args(batch_eval_metrics):
    """``validate_args=False`` skips the metrics' checks, but the adapter's reading of padding is no check of
    theirs: a label that indexes a slot whose score equals a padding value (a real candidate whose logit was
    clamped to -10, say) was dropped with the padding, silently: the query had no relevant candidate and was
    skipped, MRR 0.5 over the other two queries where the refused call's first query is wrong either way. It is
    refused in both modes now, in the same host read as the index range check (no sync added), and the next
    call starts afresh. Reference: MRR from its definition (rank = 1 + the number of higher scores)."""
    from transformers import EvalPrediction

    scores = np.array([[0.9, 0.1, -10.0], [0.2, 0.8, 0.5], [0.3, 0.6, 0.9]])
    labels = np.array([2, 0, 1])  # query 0's label indexes its padded slot
    call = {"compute_result": True} if batch_eval_metrics else {}
    for validate_args in (True, False):
        compute_metrics = ranking_compute_metrics(ks=(None,), metrics=("mrr",), validate_args=validate_args)
        with pytest.raises(ValueError, match=r"query 0 whose label 2 indexes a padded slot"):
            compute_metrics(EvalPrediction(predictions=scores, label_ids=labels), **call)
        # an out-of-range label is still named as such, also next to a padded one
        out_of_range = r"integer indexes of the relevant candidate in \[0, 3\), got values in \[1, 3\]"
        with pytest.raises(ValueError, match=out_of_range):
            compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([2, 3, 1])), **call)
        valid = np.array([0, 0, 1])
        got = compute_metrics(EvalPrediction(predictions=scores, label_ids=valid), **call)
        ranks = [1 + int(np.sum(row > row[label])) for row, label in zip(scores, valid)]  # distinct scores
        assert ranks == [1, 3, 2]
        assert got == pytest.approx({"MRR": np.mean([1.0 / r for r in ranks])}, rel=1e-12)


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_one_candidate_squeezed_next_to_a_0_dim_index_label_is_one_query(batch_eval_metrics):
    """``(1,)`` scores next to a 0-dim label were refused as "labels of the same shape: ambiguous": the label was
    reshaped to ``(1,)`` before the check. A 0-dim label is one query's index label (the Trainer never delivers
    one: its labels keep their batch dimension), so the scores are that query's one candidate, as 0-dim scores
    next to a ``(1,)`` label are. Reference: NDCG and MRR from their definitions (the earlier queries with
    scikit-learn's ``ndcg_score``; a query of one relevant candidate ranks it first: 1 each)."""
    from sklearn.metrics import ndcg_score
    from transformers import EvalPrediction

    compute_metrics = ranking_compute_metrics(ks=(None,), metrics=("ndcg", "mrr"))
    scores, labels = np.array([[0.9, 0.3, 0.5], [0.2, 0.8, 0.4]]), np.array([2, 0])
    relevance = np.eye(3, dtype=np.int64)[labels]
    ranks = [1 + int(np.sum(row > row[label])) for row, label in zip(scores, labels)]
    assert ranks == [2, 3]
    if batch_eval_metrics:
        compute_metrics(EvalPrediction(predictions=scores, label_ids=labels), compute_result=False)
        got = compute_metrics(EvalPrediction(predictions=np.array([0.4]), label_ids=np.array(0)), compute_result=True)
        ndcg = [ndcg_score(relevance[i : i + 1], scores[i : i + 1]) for i in range(2)]
        assert got == pytest.approx({"NDCG": np.mean([*ndcg, 1.0]), "MRR": np.mean([0.5, 1 / 3, 1.0])}, rel=1e-12)
    assert compute_metrics(EvalPrediction(predictions=np.array([0.4]), label_ids=np.array(0))) == {
        "NDCG": 1.0,
        "MRR": 1.0,
    }
    # the label still indexes the one candidate: 1 is out of range, refused and nothing counted
    with pytest.raises(ValueError, match=r"Expected labels as integer indexes of the relevant candidate in \[0, 1\)"):
        compute_metrics(EvalPrediction(predictions=np.array([0.4]), label_ids=np.array(1)))
    # (1,) labels next to (1,) scores stay refused: the Trainer's cut of a squeezed query looks so
    with pytest.raises(ValueError, match=r"got \(1,\) scores with labels of the same shape: ambiguous"):
        compute_metrics(EvalPrediction(predictions=np.array([0.4]), label_ids=np.array([0])))


@pytest.mark.parametrize(
    ("metrics", "repeated"),
    [
        (["ctr", "ctr"], "'ctr'"),
        (("ne", "auc", "ne", "auc", "ctr"), "'ne', 'auc'"),
        (np.array(["auc", "auc"]), "'auc'"),
        (["ne", np.str_("ne")], "'ne'"),  # a NumPy string is the name it spells
    ],
    ids=["list", "two-repeats", "numpy-array", "numpy-str"],
)
@pytest.mark.parametrize("tasks", [("task",), ("click", "like")], ids=["one-task", "two-tasks"])
def test_a_metric_named_twice_is_refused_at_build_as_the_ranking_builder_does(metrics, repeated, tasks):
    """``pointwise_compute_metrics(["ctr", "ctr"])`` built one CTR and logged it once, silently, where
    ``ranking_compute_metrics(metrics=("mrr", "mrr"))`` refuses the repeat: a repeated name is a typo for another
    metric (two differently-configured copies would need names of their own). Both refuse it with one message."""
    expected = rf"^Expected `metrics` without repeats \(each gives one key\), got .*: it repeats {repeated}\.$"
    with pytest.raises(ValueError, match=expected):
        pointwise_compute_metrics(metrics, tasks=tasks)
    with pytest.raises(ValueError, match=r"^Expected `metrics` without repeats \(each gives one key\), got .*'mrr'\.$"):
        ranking_compute_metrics(metrics=("mrr", "recall", "mrr"))
    # each name once: one key per metric, the values of numpy on the labels (CTR) and scikit-learn (AUC)
    logits, labels = np.array([2.0, -1.0, 0.5, 0.0]), np.array([1, 0, 0, 1])
    once = pointwise_compute_metrics(["ctr", "auc"])((logits, labels))
    assert once == pytest.approx({"ctr": labels.mean(), "auc": roc_auc_score(labels, logits)}, rel=1e-12)


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        (
            {"auc": {"num_bins": 10}},
            ValueError,
            r"^Expected `metrics` to be a sequence of registry names, got a mapping \{'auc': \{'num_bins': 10\}\}: its "
            r"values \(options\) would be dropped\. .*keyword arguments.*num_bins=",
        ),
        (
            {"ne": None, "auc": None},
            ValueError,
            r"^Expected `metrics` to be a sequence of registry names, got a mapping",
        ),
        (["ne", None], TypeError, r"^Expected `metrics` to hold registry names \(str\), got None \(item 1\)"),
    ],
    ids=["options-mapping", "names-mapping", "none-item"],
)
def test_metrics_of_another_kind_are_named_at_build(metrics, error, match):
    """A mapping ``{name: options}`` (``RecMetricModule``'s form) was read as its keys: the options were dropped,
    silently (an exact AUC where 10 bins were asked for). A metric object or ``None`` among the names was refused
    by the registry without naming ``metrics``."""
    with pytest.raises(error, match=match):
        pointwise_compute_metrics(metrics)


def test_a_metric_object_among_the_names_is_named():
    import torchmetrics_ext as tmx

    with pytest.raises(TypeError, match=r"^Expected `metrics` to hold registry names \(str\), got AUC\(\) \(item 0\)"):
        pointwise_compute_metrics([tmx.AUC(), "ne"])
    with pytest.raises(ValueError, match=r"^Expected `tasks` to be a flat sequence .*got a mapping"):
        pointwise_compute_metrics(["ne"], tasks={"click": 0, "like": 1})
