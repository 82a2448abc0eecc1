"""Every per-row column of the Hugging Face builders read from a ``label_names`` entry, in a real ``Trainer``.

``pointwise_compute_metrics`` reads sample weights (``weights=``), group ids (``groups=``), segment ids
(``segments=``, for ``segmented_ne``) and session ids (``sessions=``, for the registry's ranking metrics
over flat rows) from the Trainer's label arrays; ``ranking_compute_metrics`` reads session ids and sample
weights. References: NE from its numpy definition per pandas-groupby segment, scikit-learn's
``log_loss``/``roc_auc_score`` with ``sample_weight``, and NDCG/MRR per session in numpy (a session
weighs its rows' largest weight, TorchRec's rule that ``RankingMetrics`` documents), on the Trainer's own
``predict()`` output.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import EvalPrediction  # noqa: E402

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics  # noqa: E402

COLUMNS = ("labels", "weight", "country", "session_id")
COUNTRIES = 3


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z.astype(np.float64)))


def _ne(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """Normalized entropy: weighted cross-entropy over the entropy of the weighted base rate (nats)."""
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    rate = (w * y).sum() / w.sum()
    return float(ce / -(w.sum() * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate))))


def segmented_ne_reference(y: np.ndarray, p: np.ndarray, w: np.ndarray, segments: np.ndarray) -> dict[str, float]:
    """``{"segmented_ne.{s}": NE of segment s}`` by a pandas groupby."""
    frame = pd.DataFrame({"y": y.astype(np.float64), "p": p, "w": w, "s": segments})
    return {
        f"segmented_ne.{s}": _ne(part.y.to_numpy(), part.p.to_numpy(), part.w.to_numpy())
        for s, part in frame.groupby("s")
    }


def session_reference(
    scores: np.ndarray, relevance: np.ndarray, sessions: np.ndarray, weights: np.ndarray | None, k: int | None
) -> dict[str, float]:
    """Weighted means over sessions with a relevant row of NDCG@k (linear gain, log2 discount) and MRR@k."""
    weights = np.ones(len(scores)) if weights is None else weights
    ndcgs, rrs, query_weights = [], [], []
    for session in np.unique(sessions):
        rows = sessions == session
        rel, score = relevance[rows].astype(np.float64), scores[rows]
        if rel.sum() == 0:
            continue
        ranked = rel[np.argsort(-score, kind="stable")][:k]
        ideal = np.sort(rel)[::-1][:k]
        discount = 1 / np.log2(np.arange(2, len(ranked) + 2))
        ndcgs.append((ranked * discount).sum() / (ideal * discount).sum())
        hits = np.flatnonzero(ranked > 0)
        rrs.append(1 / (hits[0] + 1) if len(hits) else 0.0)
        query_weights.append(weights[rows].max())
    return {
        "ndcg": float(np.average(ndcgs, weights=query_weights)),
        "mrr": float(np.average(rrs, weights=query_weights)),
    }


class ColumnClicker(nn.Module):
    """One logit per row; takes every ``label_names`` key the Trainer passes with the labels."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, 1)

    def forward(self, x, labels=None, **columns):
        logits = self.linear(x).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), weight=columns.get("weight"))
        return {"loss": loss, "logits": logits}


class ColumnClicks(torch.utils.data.Dataset):
    """Rows with a click label, a weight, a country (segment) and a session id; sessions span eval batches."""

    def __init__(self, n: int = 211) -> None:
        rng = np.random.default_rng(8)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor((rng.uniform(size=n) < 0.4).astype(np.int64))
        self.w = torch.tensor(rng.uniform(0.2, 3.0, n), dtype=torch.float32)
        self.country = torch.tensor(rng.integers(0, COUNTRIES, n))
        self.sessions = torch.tensor(rng.integers(0, 29, n))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {
            "x": self.x[i],
            "labels": self.y[i],
            "weight": self.w[i],
            "country": self.country[i],
            "session_id": self.sessions[i],
        }


def column_metrics() -> object:
    """The pointwise builder reading all four per-row columns (weights, segments, sessions; groups: GAUC)."""
    return pointwise_compute_metrics(
        ["ne", "segmented_ne", "ndcg@3", "mrr", "gauc"],
        label_names=COLUMNS,
        weights="weight",
        segments="country",
        groups="country",
        sessions="session_id",
        num_segments=COUNTRIES,
    )


def column_reference(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The references of :func:`column_metrics` on ``(N,)`` logits and ``(N, 4)`` label columns (``eval_`` keys)."""
    y, w = labels[:, 0].astype(np.int64), labels[:, 1].astype(np.float64)
    country, sessions = labels[:, 2].astype(np.int64), labels[:, 3].astype(np.int64)
    p = _sigmoid(predictions.reshape(-1))
    frame = pd.DataFrame({"y": y, "p": p, "w": w, "c": country})
    gauc = np.mean([roc_auc_score(g.y, g.p, sample_weight=g.w) for _, g in frame.groupby("c")])
    expected = {"ne": _ne(y, p, w), "gauc": float(gauc), **segmented_ne_reference(y, p, w, country)}
    expected["ndcg@3"] = session_reference(p, y, sessions, w, 3)["ndcg"]
    expected["mrr"] = session_reference(p, y, sessions, w, None)["mrr"]
    return {f"eval_{key}": value for key, value in expected.items()}


def _args(tmp_path, batch_eval_metrics: bool, label_names) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        per_device_eval_batch_size=16,
        batch_eval_metrics=batch_eval_metrics,
        label_names=list(label_names),
    )


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_segments_sessions_weights_and_groups_in_trainer_evaluate(tmp_path, batch_eval_metrics):
    dataset = ColumnClicks()
    run = transformers.Trainer(
        model=ColumnClicker(),
        args=_args(tmp_path, batch_eval_metrics, COLUMNS),
        eval_dataset=dataset,
        compute_metrics=column_metrics(),
    )
    metrics = run.evaluate()
    prediction = run.predict(dataset)
    labels = np.stack([np.asarray(a, dtype=np.float64) for a in prediction.label_ids], 1)
    np.testing.assert_array_equal(labels[:, 3], dataset.sessions.numpy())  # the Trainer's arrays, in order
    expected = column_reference(prediction.predictions, labels)
    assert len([key for key in expected if key.startswith("eval_segmented_ne.")]) == COUNTRIES
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key


def test_ranking_builder_reads_weights_as_query_weights(tmp_path):
    """``ranking_compute_metrics(weights=...)``: a session weighs its rows' largest weight (``RankingMetrics``)."""
    rng = np.random.default_rng(3)
    n = 90
    scores, relevance = rng.normal(size=n), rng.integers(0, 2, n)
    sessions, w = rng.integers(0, 11, n), rng.uniform(0.0, 4.0, n)
    compute = ranking_compute_metrics(
        ks=(3, None),
        metrics=("ndcg", "mrr"),
        label_names=("labels", "w", "session_id"),
        sessions="session_id",
        weights="w",
    )
    got = compute(EvalPrediction(predictions=scores, label_ids=(relevance, w, sessions)))
    three, whole = (
        session_reference(scores, relevance, sessions, w, 3),
        session_reference(scores, relevance, sessions, w, None),
    )
    assert got["NDCG@3"] == pytest.approx(three["ndcg"], rel=1e-9)
    assert got["NDCG"] == pytest.approx(whole["ndcg"], rel=1e-9)
    assert got["MRR"] == pytest.approx(whole["mrr"], rel=1e-9)
    # batches kept apart (a session in both halves stays one query)
    halves = [(relevance[s], w[s], sessions[s]) for s in (slice(0, 40), slice(40, None))]
    apart = compute(EvalPrediction(predictions=[scores[:40], scores[40:]], label_ids=halves))
    assert apart == pytest.approx(got, rel=1e-12)


def test_pointwise_segments_in_batches_kept_apart_equal_the_whole_arrays():
    rng = np.random.default_rng(4)
    n = 150
    z, y = rng.normal(size=n), rng.integers(0, 2, n)
    w, country, sessions = rng.uniform(0.1, 2.0, n), rng.integers(0, COUNTRIES, n), rng.integers(0, 17, n)
    compute = column_metrics()
    whole = compute(EvalPrediction(predictions=z, label_ids=(y, w, country, sessions)))
    parts = [(y[s], w[s], country[s], sessions[s]) for s in (slice(0, 70), slice(70, None))]
    apart = compute(EvalPrediction(predictions=[z[:70], z[70:]], label_ids=parts))
    expected = column_reference(z, np.stack([y, w, country, sessions], 1).astype(np.float64))
    for got in (whole, apart):
        assert {f"eval_{key}": value for key, value in got.items()} == pytest.approx(expected, rel=1e-6)


def test_two_tasks_segmented_with_task_label_entries():
    """Several tasks: one label entry per task around the segment entry; keys ``segmented_ne.{s}/{task}``."""
    rng = np.random.default_rng(5)
    n = 120
    z, y, country = rng.normal(size=(n, 2)), rng.integers(0, 2, (n, 2)), rng.integers(0, 2, n)
    compute = pointwise_compute_metrics(
        ["segmented_ne"], tasks=("click", "like"), label_names=("click", "c", "like"), segments="c", num_segments=2
    )
    got = compute(EvalPrediction(predictions=z, label_ids=(y[:, 0], country, y[:, 1])))
    for t, task in enumerate(("click", "like")):
        expected = segmented_ne_reference(y[:, t], _sigmoid(z[:, t]), np.ones(n), country)
        for key, value in expected.items():
            assert got[f"{key}/{task}"] == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize(
    ("metrics", "options", "error", "match"),
    [
        (["segmented_ne"], {"num_segments": 2}, ValueError, r"Metric 'segmented_ne' needs segment ids.*segments="),
        (["ndcg@3"], {}, ValueError, r"Metric 'ndcg@3' needs session.*sessions="),
        (["gauc"], {}, ValueError, r"Metric 'gauc' needs group.*groups="),
        (["ne"], {"segments": "c"}, ValueError, r"Expected `label_names`.*segments='c'"),
        (["ne"], {"sessions": "s"}, ValueError, r"Expected `label_names`.*sessions='s'"),
        (
            ["segmented_ne"],
            {"label_names": ("y", "c"), "segments": "c"},
            ValueError,
            r"segmented_ne.*num_segments",
        ),
        (
            ["ne"],
            {"label_names": ("y", "c"), "segments": "c", "num_segments": 2},
            ValueError,
            r"`num_segments`.*segmented",
        ),
        (
            ["segmented_ne", "gauc"],
            {"label_names": ("y", "c", "u"), "segments": "c", "groups": "u", "num_segments": 2},
            ValueError,
            r"`groups` and `segments`.*one id column",
        ),
        (["ne"], {"label_names": ("y", "w"), "weights": "w", "sessions": "w"}, ValueError, r"`weights` and `sessions`"),
        (
            ["mrr"],
            {"label_names": ("y", "s"), "sessions": "s", "ignore_index": -100},
            ValueError,
            r"`ignore_index=None` with ranking metrics",
        ),
        (
            ["ne"],
            {"label_names": ("y", "c"), "segments": "x"},
            ValueError,
            r"`segments` to be an entry of `label_names`",
        ),
    ],
)
def test_bad_columns_are_refused_at_build(metrics, options, error, match):
    with pytest.raises(error, match=match):
        pointwise_compute_metrics(metrics, **options)


def test_ranking_weights_need_sessions_and_an_entry():
    with pytest.raises(ValueError, match=r"`weights` to be an entry of `label_names`"):
        ranking_compute_metrics(ks=(1,), label_names=("y", "s"), sessions="s", weights="w")
    with pytest.raises(ValueError, match=r"`label_names` .* and `sessions` .* together"):
        ranking_compute_metrics(ks=(1,), label_names=("y", "w"), weights="w")


def test_ranking_weights_of_padded_lists_say_where_query_weights_go():
    """Padded lists with a weight entry: the error says such weights are not read, and how to weigh queries."""
    with pytest.raises(
        ValueError, match=r"padded candidate lists.*RankingMetrics.*update\(scores, relevance, weights="
    ):
        ranking_compute_metrics(ks=(1,), label_names=("labels", "weight"), weights="weight")


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        (lambda y, c, s: (y, c[:-1], s), ValueError, r"entry 'c' \(segment ids\).*shape \(6,\), got \(5,\)"),
        (lambda y, c, s: (y, c.astype(np.float32), s), TypeError, r"entry 'c' \(segment ids\).*integer dtype"),
        (lambda y, c, s: (y, c, s.astype(np.float64)), TypeError, r"entry 's' \(session ids\).*integer dtype"),
        (lambda y, c, s: (y, np.r_[c[:-1], 2], s), ValueError, r"label_names entry 'c'.*\[0, 2\)"),
    ],
)
def test_bad_segment_and_session_ids_are_named_by_their_entry(arrays, error, match):
    y, c, s = np.array([1, 0, 1, 0, 1, 0]), np.array([0, 0, 1, 1, 0, 1]), np.array([4, 4, 5, 5, 6, 6])
    compute = pointwise_compute_metrics(
        ["ne", "segmented_ne", "mrr"], label_names=("y", "c", "s"), segments="c", sessions="s", num_segments=2
    )
    z = np.linspace(-1.0, 1.0, 6)
    with pytest.raises(error, match=match):
        compute(EvalPrediction(predictions=z, label_ids=arrays(y, c, s)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every segment holds both classes: defined values
        got = compute(EvalPrediction(predictions=z, label_ids=(y, c, s)))
    assert got["mrr"] == pytest.approx(session_reference(z, y, s, None, None)["mrr"])
    assert got["segmented_ne.1"] == pytest.approx(
        segmented_ne_reference(y, _sigmoid(z), np.ones(6), c)["segmented_ne.1"]
    )


# -------------------------------------------------------------- a label_names entry missing from the batches


class NoSessionClicks(ColumnClicks):
    """The rows without their ``session_id``: the Trainer finds no labels, and calls no ``compute_metrics``."""

    def __getitem__(self, i):
        row = super().__getitem__(i)
        del row["session_id"]
        return row


@pytest.mark.parametrize("batch_eval_metrics", [False, True], ids=["whole-arrays", "batch-eval-metrics"])
def test_callback_warns_when_the_trainer_skipped_compute_metrics(tmp_path, batch_eval_metrics):
    compute_metrics = column_metrics()
    run = transformers.Trainer(
        model=ColumnClicker(),
        args=_args(tmp_path, batch_eval_metrics, COLUMNS),
        eval_dataset=NoSessionClicks(),
        compute_metrics=compute_metrics,
        callbacks=[compute_metrics.callback()],
    )
    with pytest.warns(UserWarning, match=r"compute_metrics.*not called.*'session_id'.*label_names") as caught:
        metrics = run.evaluate()
    assert not any(key.startswith("eval_ne") for key in metrics)  # the Trainer's silence, which the warning names
    assert "eval" in str(caught[0].message)  # the evaluation's prefix


def test_callback_is_silent_when_compute_metrics_ran(tmp_path):
    compute_metrics = column_metrics()
    run = transformers.Trainer(
        model=ColumnClicker(),
        args=_args(tmp_path, True, COLUMNS),
        eval_dataset=ColumnClicks(),
        compute_metrics=compute_metrics,
        callbacks=[compute_metrics.callback()],
    )
    run.predict(ColumnClicks())  # a predict() in between computes too; it must not hide a later skipped evaluation
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert "eval_ne" in run.evaluate()
    run.predict(ColumnClicks())
    with pytest.warns(UserWarning, match="not called"):
        run.evaluate(eval_dataset=NoSessionClicks())


def test_a_misspelt_column_argument_is_named():
    """``segment=`` (for ``segments=``) left its entry among the labels and reached the metrics as an option: both
    errors say which argument was meant."""
    meant = r"no argument `{}` \(did you mean `{}=`\?\)"
    with pytest.raises(ValueError, match=meant.format("segment", "segments") + r".*hold one label entry"):
        pointwise_compute_metrics(["ne"], label_names=("labels", "country"), segment="country")
    with pytest.raises(ValueError, match=meant.format("segment", "segments") + r".*rejected the options"):
        pointwise_compute_metrics(["ne"], label_names=("labels", "country"), segments="country", segment="country")
    with pytest.raises(ValueError, match=meant.format("weight", "weights") + r".*hold one label entry"):
        ranking_compute_metrics(ks=(1,), label_names=("labels", "s", "w"), sessions="s", weight="w")


@pytest.mark.parametrize(
    ("metrics", "options", "argument", "readers"),
    [
        (["ne", "auc"], {"label_names": ("y", "c"), "segments": "c"}, "segments", r"\['segmented_ne'\]"),
        (["ne"], {"label_names": ("y", "u"), "groups": "u"}, "groups", r"\['gauc', 'gauprc'\]"),
        (["ne", "gauc"], {"label_names": ("y", "u", "s"), "groups": "u", "sessions": "s"}, "sessions", r"\['ndcg'.*"),
        (["gauc"], {"label_names": ("y", "u"), "groups": "u", "segments": "u"}, "segments", r"\['segmented_ne'\]"),
        (
            ["mrr@3"],
            {"label_names": ("y", "s", "u"), "sessions": "s", "groups": "u"},
            "groups",
            r"\['gauc', 'gauprc'\]",
        ),
        (
            ["segmented_ne"],
            {"label_names": ("y", "c", "s"), "segments": "c", "sessions": "s", "num_segments": 2},
            "sessions",
            r"\[.*'recall@k'.*\]",
        ),
    ],
)
def test_a_column_no_chosen_metric_reads_is_refused_at_build(metrics, options, argument, readers):
    """`segments=` without segmented_ne (and the like) was checked and never read: refused as `num_segments` is."""
    entry = options[argument]
    said = re.escape(f" read, and `metrics` {metrics!r} holds none of them")
    match = rf"^`{argument}='{entry}'` names the \w+ ids that {readers}{said}.*: drop `{argument}`, or add '"
    with pytest.raises(ValueError, match=match):
        pointwise_compute_metrics(metrics, **options)


def test_columns_every_metric_reads_still_build_and_one_entry_may_serve_groups_and_segments():
    """`groups` and `segments` naming one entry, read by gauc and segmented_ne: accepted (checked against sklearn)."""
    y, u = np.array([1, 0, 1, 0, 0, 1, 1, 0]), np.array([0, 0, 0, 1, 1, 1, 0, 1])
    z = np.array([0.3, -0.2, 0.9, 0.1, -0.5, 0.4, -0.1, 0.2])
    compute = pointwise_compute_metrics(
        ["gauc", "segmented_ne"], label_names=("y", "u"), groups="u", segments="u", num_segments=2
    )
    got = compute(EvalPrediction(predictions=z, label_ids=(y, u)))
    per_user = [roc_auc_score(y[u == g], z[u == g]) for g in (0, 1)]
    assert got["gauc"] == pytest.approx(np.mean(per_user), abs=1e-9)
    assert got["segmented_ne.1"] == pytest.approx(
        segmented_ne_reference(y, _sigmoid(z), np.ones(8), u)["segmented_ne.1"], rel=1e-9
    )


# ------------------------------------------- label_names=None: the names the Trainer takes from the model's forward


class ClickLabelClicker(nn.Module):
    """A model whose label argument is ``labels_click``: the Trainer's label names are ``['labels_click']``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels_click=None):
        return {"logits": self.linear(x).squeeze(-1)}


class TinyForQuestionAnswering(ClickLabelClicker):
    """A QA model by name: the Trainer's label names are ``start_positions`` and ``end_positions``."""

    def forward(self, x, start_positions=None, end_positions=None):
        return {"logits": self.linear(x).squeeze(-1)}


class NoLabelClicker(ClickLabelClicker):
    """A forward without a label argument: the Trainer's label names are empty, it never finds labels."""

    def forward(self, x):
        return {"logits": self.linear(x).squeeze(-1)}


class RowsOf(torch.utils.data.Dataset):
    """Rows holding ``x`` and the given keys (each a 0/1 label)."""

    def __init__(self, keys: tuple[str, ...], n: int = 12) -> None:
        rng = np.random.default_rng(5)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor((rng.uniform(size=n) < 0.5).astype(np.int64))
        self.keys = keys

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], **{key: self.y[i] for key in self.keys}}


@pytest.mark.parametrize(
    ("model", "keys", "absent"),
    [
        (ClickLabelClicker(), (), ["labels_click"]),
        (TinyForQuestionAnswering(), ("start_positions",), ["end_positions"]),
        (NoLabelClicker(), (), None),
    ],
    ids=["custom-label-argument", "question-answering", "no-label-argument"],
)
def test_callback_names_the_label_names_the_trainer_uses_when_none_are_given(tmp_path, model, keys, absent):
    """``label_names=None``: the Trainer reads the model's forward (its ``label_names`` attribute is the reference);
    the warning named ``('labels',)`` whatever the model took."""
    compute_metrics = pointwise_compute_metrics(["ne"])
    args = transformers.TrainingArguments(str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True)
    assert args.label_names is None
    run = transformers.Trainer(
        model=model, args=args, eval_dataset=RowsOf(keys), compute_metrics=compute_metrics,
        callbacks=[compute_metrics.callback()],
    )  # fmt: skip
    with pytest.warns(UserWarning, match="compute_metrics was not called") as caught:
        run.evaluate()
    message = str(next(w for w in caught if "compute_metrics was not called" in str(w.message)).message)
    if absent is not None:
        assert "['labels']" not in message, message
        assert f"entry ({list(run.label_names)})" in message, message  # the Trainer's own label names
        assert f"lack the label_names entries {absent}" in message
        assert f"`{type(model).__name__}.forward`" in message
    else:  # the model's forward takes no label: no entry to add to the rows, the argument to set instead
        assert run.label_names == []
        assert "label names are [] " in message and "no argument whose name holds 'label'" in message
        assert "TrainingArguments(label_names=" in message


def test_callback_without_a_model_or_label_names_guesses_no_names(tmp_path):
    """The hook called without the Trainer's ``model`` (by hand) and ``label_names=None``: no names invented."""
    callback = pointwise_compute_metrics(["ne"]).callback()
    args = transformers.TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    with pytest.warns(UserWarning, match="compute_metrics was not called") as caught:
        callback.on_evaluate(args, None, None, metrics={"eval_runtime": 0.1})
    message = str(caught[0].message)
    assert "TrainingArguments.label_names (None: the label arguments of the model's forward) entry and" in message
    assert "['labels']" not in message
