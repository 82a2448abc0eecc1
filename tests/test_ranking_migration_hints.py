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
        ("ignore_index", -100, r"`ignore_index=-100` .*: `update\(\.\.\., mask=\(target != -100\)\)` drops those rows"),
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


# The functional twins: TorchMetrics' options are refused as the classes refuse them, as Python's TypeError for an
# unknown keyword told with what replaces them (docs/migration_torchmetrics.md's Arguments table).
_FUNCTIONS = {
    "ndcg": (tmf.ndcg, "k"),
    "recall_at_k": (tmf.recall_at_k, "k"),
    "precision_at_k": (tmf.precision_at_k, "k"),
    "mrr": (tmf.mrr, "k"),
    "hit_rate": (tmf.hit_rate, "k"),
    "map_at_k": (tmf.map_at_k, "k"),
    "f1_at_k": (tmf.f1_at_k, "k"),
    "r_precision": (tmf.r_precision, None),
    "ranking_metrics": (tmf.ranking_metrics, "ks"),
}


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
def test_functional_top_k_is_refused_naming_the_cutoff_argument(name):
    function, cutoff = _FUNCTIONS[name]
    fix = {"k": r"takes the cutoff as `k`: \w+\(preds, target, \.\.\., k=3\)", "ks": r"as `ks`: .*ks=\(3,\)"}
    hint = fix.get(cutoff, "has no cutoff")
    match = rf"^{name}\(\) got an unexpected keyword argument 'top_k' \(TorchMetrics' name for the cutoff\): .*{hint}"
    with pytest.raises(TypeError, match=match):
        function(torch.rand(2, 4), torch.ones(2, 4), top_k=3)


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("ignore_index", -100, r"`{name}\(\.\.\., mask=\(target != -100\)\)` drops those rows"),
        ("aggregation", "median", r"mean over queries only \(per-query weights: `{name}\(\.\.\., weights=w\)`\)"),
    ],
)
def test_functional_torchmetrics_options_are_refused_naming_their_counterpart(name, option, value, hint):
    function, cutoff = _FUNCTIONS[name]
    given = {} if cutoff is None else {cutoff: (3,) if cutoff == "ks" else 3}
    hint = hint.replace("{name}", name)  # the fix is told as a call of the function itself
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument '{option}' .*{hint}"):
        function(torch.rand(2, 4), torch.ones(2, 4), **given, **{option: value})


def test_functional_multiclass_options_name_k_and_the_micro_average_and_the_rows_to_drop():
    preds, target = torch.rand(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    with pytest.raises(TypeError, match=r"'top_k' .*multiclass_recall_at_k\(preds, target, \.\.\., k=2\)"):
        tmf.multiclass_recall_at_k(preds, target, top_k=2, num_classes=4)
    with pytest.raises(
        TypeError, match=r"unexpected keyword arguments 'ignore_index' .*`keep = target != -1`.*; 'average' .*micro"
    ):
        tmf.multiclass_recall_at_k(preds, target, k=2, num_classes=4, ignore_index=-1, average="macro")


def test_functional_misspelt_option_gets_a_did_you_mean_and_the_body_errors_stay_as_they_were():
    preds, target = torch.rand(2, 4), torch.ones(2, 4)
    with pytest.raises(
        TypeError,
        match=r"^ndcg\(\) got an unexpected keyword argument 'exponential_gains' "
        r"\(did you mean 'exponential_gain'\?\)\.$",
    ):
        tmf.ndcg(preds, target, exponential_gains=True)
    with pytest.raises(TypeError, match=r"Expected `target` to be a torch\.Tensor, got NoneType"):
        tmf.ndcg(preds, None)  # the function's own TypeError, every keyword known: not rewritten
    with pytest.raises(TypeError, match=r"takes from 2 to 5 positional arguments but 6"):
        tmf.ndcg(preds, target, None, None, None, 3)  # a positional `k`: Python's own message


def test_functional_wrappers_keep_name_signature_and_doc():
    import inspect

    for name, (function, _) in _FUNCTIONS.items():
        assert function.__name__ == name and function.__doc__ and "Examples:" in function.__doc__
        assert inspect.signature(function) == inspect.signature(function.__wrapped__)
    assert tmf.map is tmf.map_at_k


def test_functional_recipes_give_torchmetrics_values():
    """The replacements the refusals name: ``k=`` for ``top_k=`` (one query per call there) and
    ``mask=(target != -100)`` for ``ignore_index=-100`` (TorchMetrics' class; its functions take no ignore_index)."""
    from torchmetrics.functional.retrieval import retrieval_normalized_dcg, retrieval_recall
    from torchmetrics.retrieval import RetrievalRecall

    gen = torch.Generator().manual_seed(3)
    preds = torch.rand(10, generator=gen) + 0.01  # positive, tie-free
    target = torch.tensor([0, 1, 0, 2, 1, 0, 0, 1, 0, 0])
    ours = tmf.ndcg(preds, target, torch.zeros(10, dtype=torch.long), k=4)
    assert ours.item() == pytest.approx(retrieval_normalized_dcg(preds, target, top_k=4).item(), abs=1e-6)
    ours = tmf.recall_at_k(preds, target, torch.zeros(10, dtype=torch.long), k=3)
    assert ours.item() == pytest.approx(retrieval_recall(preds, target > 0, top_k=3).item(), abs=1e-6)

    indexes = torch.arange(40) // 8
    preds = torch.rand(40, generator=gen) + 0.01
    labels = torch.randint(0, 2, (40,), generator=gen)
    labels[indexes * 8] = 1
    labels[torch.arange(40) % 5 == 2] = -100
    theirs = RetrievalRecall(top_k=3, ignore_index=-100)(preds, labels, indexes)
    ours = tmf.recall_at_k(preds, labels, indexes, mask=labels != -100, k=3)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("build", "function", "option", "value"),
    [
        (lambda **kw: tmx.NDCG(k=3, **kw), tmf.ndcg, "ignore_index", -100),
        (lambda **kw: tmx.NDCG(k=3, **kw), tmf.ndcg, "aggregation", "max"),
        (
            lambda **kw: tmx.MulticlassRecallAtK(k=2, num_classes=4, **kw),
            tmf.multiclass_recall_at_k,
            "average",
            "macro",
        ),
        (
            lambda **kw: tmx.MulticlassRecallAtK(k=2, num_classes=4, **kw),
            tmf.multiclass_recall_at_k,
            "average",
            "micro",
        ),
        (
            lambda **kw: tmx.MulticlassRecallAtK(k=2, num_classes=4, **kw),
            tmf.multiclass_recall_at_k,
            "ignore_index",
            -1,
        ),
    ],
)
def test_a_class_and_its_function_tell_one_fix(build, function, option, value):
    """The class's refusal is the function's, told as a call of ``update`` instead of the function (the ranking
    classes' aggregation fix named ``update(..., weights=w)``, the function's only ``weights=``)."""
    preds, target = torch.rand(4, 4), torch.tensor([0, 1, 2, 3])
    with pytest.raises(TypeError) as theirs:
        function(preds, target, **{"k": 2, "num_classes": 4} if "num" in function.__name__ else {}, **{option: value})
    fix = str(theirs.value).split("): ", 1)[1].removesuffix(".").replace(f"{function.__name__}(", "update(")
    with pytest.raises(ValueError) as ours:
        build(**{option: value})
    assert f"`{option}={value!r}` " in str(ours.value) and fix in str(ours.value)


@pytest.mark.parametrize(("cls", "function"), [(tmx.NDCG, tmf.ndcg), (tmx.RankingMetrics, tmf.ranking_metrics)])
def test_a_class_and_its_function_tell_one_cutoff_fix(cls, function):
    with pytest.raises(TypeError) as theirs:
        function(torch.rand(2, 4), torch.ones(2, 4), top_k=5)
    fix = (
        str(theirs.value)
        .split("): ", 1)[1]
        .replace(function.__name__, cls.__name__)
        .replace("preds, target, ..., ", "")
    )
    with pytest.raises(TypeError, match=r"has no `top_k` argument \(TorchMetrics' name for the cutoff\)") as ours:
        cls(top_k=5)
    assert str(ours.value).endswith(fix)
