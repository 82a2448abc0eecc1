"""TorchMetrics' retrieval options given to the ranking metrics are refused naming what replaces them here.

A user migrating from ``torchmetrics.retrieval`` (or ``MulticlassAccuracy(top_k=...)``) writes the
arguments they know; each refusal says what the guide's Arguments table says (docs/migration_torchmetrics.md),
and the recipe it names gives TorchMetrics' value (checked against TorchMetrics itself or a numpy reference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf

_RANKING_CLASSES = [
    lambda **kw: tmx.NDCG(k=3, **kw),
    lambda **kw: tmx.RecallAtK(k=3, **kw),
    lambda **kw: tmx.PrecisionAtK(k=3, **kw),
    lambda **kw: tmx.MRR(**kw),
    lambda **kw: tmx.HitRate(k=3, **kw),
    lambda **kw: tmx.MAP(**kw),
    lambda **kw: tmx.RPrecision(**kw),
    lambda **kw: tmx.F1AtK(k=3, **kw),
    lambda **kw: tmx.RankingMetrics(ks=(3,), **kw),
]


@pytest.mark.parametrize("build", _RANKING_CLASSES)
@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("ignore_index", -100, r"`ignore_index=-100` is `mask=\(target != -100\)` in `update`"),
        ("aggregation", "median", r"the \(weighted\) mean over queries only"),
    ],
)
def test_torchmetrics_retrieval_options_are_refused_naming_their_counterpart(build, option, value, hint):
    with pytest.raises(ValueError, match=rf"Unexpected keyword arguments: `{option}`.*{hint}"):
        build(**{option: value})


@pytest.mark.parametrize("build", [*_RANKING_CLASSES, lambda **kw: tmf.ndcg(torch.rand(1, 3), torch.ones(1, 3), **kw)])
@pytest.mark.parametrize(("theirs", "ours"), [("neg", "zero"), ("pos", "one")])
def test_torchmetrics_empty_target_actions_are_refused_naming_ours(build, theirs, ours):
    match = rf"Expected `empty_target_action` to be one of .*got '{theirs}'.*TorchMetrics' '{theirs}' is '{ours}' here"
    with pytest.raises(ValueError, match=match):
        build(empty_target_action=theirs)


def test_multiclass_average_is_refused_saying_the_value_is_micro():
    with pytest.raises(ValueError, match=r"Unexpected keyword arguments: `average`.*average=\"micro\"\)"):
        tmx.MulticlassRecallAtK(k=2, num_classes=4, average="macro")


@pytest.mark.parametrize("mark", [-1, -100])
def test_negative_relevance_marks_are_refused_with_the_mask_recipe_for_flat_rows_too(mark):
    """-100 is TorchMetrics' and Hugging Face's usual ``ignore_index``: the refusal names ``mask``, flat rows
    included, and that mask gives TorchMetrics' ``ignore_index`` value."""
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    gen = torch.Generator().manual_seed(0)
    indexes = torch.arange(40) // 8
    preds = torch.rand(40, generator=gen) + 0.01  # positive, tie-free
    target = torch.randint(0, 3, (40,), generator=gen)
    target[indexes * 8] = 2  # every query keeps a relevant candidate
    target[torch.arange(40) % 5 == 3] = mark
    metric = tmx.NDCG(k=4)
    for args, kwargs in [((preds, target), {"indexes": indexes}), ((preds.view(5, 8), target.view(5, 8)), {})]:
        with pytest.raises(ValueError, match=rf"If {mark} marks padded or unlabelled candidates.*`mask=target >= 0`"):
            metric.update(*args, **kwargs)
    metric.update(preds, target, indexes=indexes, mask=target >= 0)
    reference = RetrievalNormalizedDCG(top_k=4, ignore_index=mark)(preds, target, indexes)
    assert metric.compute().item() == pytest.approx(reference.item(), abs=1e-6)
    kept = (target >= 0).numpy()
    assert metric.update_count == 1 and np.count_nonzero(kept) == 32


def _run_missing_relevant(seed: int, length: int | None):
    """A run of 12 queries (of ``length`` documents, else 5-14) and qrels holding 0-2 relevant documents more."""
    rng = np.random.default_rng(seed)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    rows, missing = [], []
    for q in range(12):
        n = length or int(rng.integers(5, 15))
        scores = rng.permutation(n) / n + 0.01  # tie-free
        relevance = rng.integers(0, 3, n) * (rng.random(n) < 0.4)
        relevance[q % n] = max(relevance[q % n], 1)  # every query retrieves a relevant document
        qrels[f"q{q}"] = {f"d{i}": int(relevance[i]) for i in range(n)}
        run[f"q{q}"] = {f"d{i}": float(scores[i]) for i in range(n)}
        rows += [(q, scores[i], relevance[i]) for i in range(n)]
        for j in range(q % 3):  # relevant documents the run does not hold
            qrels[f"q{q}"][f"m{j}"] = 1 + (j + q) % 2
            missing.append((q, -np.inf, qrels[f"q{q}"][f"m{j}"]))
    return qrels, run, np.array(rows), np.array(missing)


def _ours(rows: np.ndarray, ks: tuple[int | None, ...]) -> dict[str, float]:
    metric = tmx.RankingMetrics(ks=ks, metrics=("ndcg", "recall", "map", "precision", "mrr"))
    metric.update(torch.tensor(rows[:, 1]), torch.tensor(rows[:, 2]), indexes=torch.tensor(rows[:, 0]).long())
    return {key: value.item() for key, value in metric.compute().items()}


@pytest.mark.parametrize("seed", range(2))
def test_relevant_documents_missing_from_the_run_as_rows_scored_minus_inf_give_ranx_and_trec_eval(seed):
    """docs/ranking.md: ranx and trec_eval count qrels the run missed; rows of score -inf give their values at
    every cutoff no longer than each run, and at the run's length when every run has one length."""
    ranx = pytest.importorskip("ranx")
    pytrec_eval = pytest.importorskip("pytrec_eval")

    qrels, run, rows, missing = _run_missing_relevant(seed, None)
    ks = (1, 3, 5)  # at most the shortest run
    theirs = ranx.evaluate(
        ranx.Qrels(qrels), ranx.Run(run), [f"{m}@{k}" for m in ("ndcg", "recall", "map") for k in ks]
    )
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"recall.1,3,5", "ndcg_cut.1,3,5"}).evaluate(run)
    without, ours = _ours(rows, ks), _ours(np.concatenate([rows, missing]), ks)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    for k in ks:
        assert ours[f"recall@{k}"] == pytest.approx(np.mean([q[f"recall_{k}"] for q in trec.values()]), abs=1e-9)
        assert ours[f"ndcg@{k}"] == pytest.approx(np.mean([q[f"ndcg_cut_{k}"] for q in trec.values()]), abs=1e-9)
    assert without["recall@5"] > theirs["recall@5"] + 0.05  # the rows of the run alone: higher recall

    qrels, run, rows, missing = _run_missing_relevant(seed, 8)  # every run holds its top 8
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["ndcg", "map", "recall@8"])
    ours = _ours(np.concatenate([rows, missing]), (8,))
    for name, key in (("ndcg", "ndcg@8"), ("map", "map@8"), ("recall@8", "recall@8")):
        assert ours[key] == pytest.approx(theirs[name], abs=1e-9), name


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("RetrievalNormalizedDCG", "ndcg"),
        ("RetrievalMRR", "mrr"),
        ("RetrievalMAP", "map"),
        ("RetrievalHitRate", "hit_rate"),
        ("RetrievalRPrecision", "r_precision"),
        ("RetrievalPrecision", "precision"),
        ("hit@10", "hit_rate"),
        ("hr@10", "hit_rate"),
        ("reciprocal_rank", "mrr"),
        ("average_precision", "map"),
        ("recall_at_k", "recall"),
        ("F1Score", "f1"),
    ],
)
def test_ranking_metrics_names_of_torchmetrics_torcheval_and_ranx_suggest_ours(name, meant):
    """``RankingMetrics(metrics=...)`` takes its own short names; TorchMetrics' class names, torcheval's and ranx's
    get the name they stand for (``average_precision`` is MAP here, not R-precision, its nearest spelling)."""
    with pytest.raises(ValueError, match=rf"got {name!r} \(did you mean {meant!r}\?"):
        tmx.RankingMetrics(ks=(5,), metrics=(name,))
