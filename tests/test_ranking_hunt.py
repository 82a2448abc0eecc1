"""Conventions of docs/ranking.md checked against pytrec_eval and ranx where they are said to agree or differ.

* A query whose judgements hold no relevant candidate: pytrec_eval and ranx score it 0 for every measure
  (our ``empty_target_action="zero"``), and a query missing from their qrels is left out (our ``"skip"``).
* Ties: trec_eval orders tied scores by document id, descending. Naming each candidate so that the
  descending id order is the relevance ascending order makes trec_eval apply our tie rule itself, so
  its values are an independent check on heavily tied data, with no tie broken by the test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf

# our key -> pytrec_eval measure, every one at the cutoff 5 or whole-list
_TREC = {
    "ndcg@5": "ndcg_cut_5",
    "ndcg": "ndcg",
    "recall@5": "recall_5",
    "precision@5": "P_5",
    "hit_rate@5": "success_5",
    "mrr": "recip_rank",
    "map@5": "map_cut_5",
    "map": "map",
    "r_precision": "Rprec",
}
_METRICS = ("ndcg", "recall", "precision", "hit_rate", "mrr", "map", "r_precision")


def _rows(seed, num_queries=40, max_len=12, levels=3, empty_every=4, tied=True):
    """Flat rows: ids, float32 scores (few distinct values when ``tied``), graded relevance; every
    ``empty_every``-th query has no relevant candidate."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_len + 1, num_queries)
    ids = np.repeat(np.arange(num_queries), sizes)
    scores = rng.integers(0, 3, ids.size) if tied else rng.permutation(ids.size)
    relevance = rng.integers(0, levels + 1, ids.size)
    relevance[np.isin(ids, np.arange(0, num_queries, empty_every))] = 0
    for q in range(1, num_queries):  # the other queries keep a relevant candidate
        if q % empty_every and not relevance[ids == q].any():
            relevance[np.flatnonzero(ids == q)[0]] = 1
    return ids, scores.astype(np.float32), relevance


def _trec_dicts(ids, scores, relevance):
    """qrels/run dicts; a document id sorts descending in relevance ascending order (trec_eval's tie order)."""
    qrel, run = {}, {}
    for row, (q, s, y) in enumerate(zip(ids, scores, relevance, strict=True)):
        doc = f"{9 - int(y)}_{row:06d}"
        qrel.setdefault(str(q), {})[doc] = int(y)
        run.setdefault(str(q), {})[doc] = float(s)
    return qrel, run


def _ours(ids, scores, relevance, empty_target_action):
    out = tmf.ranking_metrics(
        torch.from_numpy(scores),
        torch.from_numpy(relevance),
        torch.from_numpy(ids),
        ks=(5, None),
        metrics=_METRICS,
        empty_target_action=empty_target_action,
    )
    return {key: value.item() for key, value in out.items()}


@pytest.mark.parametrize("tied", [False, True])
def test_pytrec_eval_scores_judged_queries_without_relevant_documents_zero_and_leaves_out_unjudged_ones(tied):
    """docs/ranking.md's table: trec_eval gives 0 to a query of the qrels with no relevant document (our
    ``"zero"``) and leaves out a query the qrels lack (our default ``"skip"``). On tied scores trec_eval breaks
    the ties by document id, named here to follow our rule."""
    import pytrec_eval

    ids, scores, relevance = _rows(11, tied=tied)
    assert np.unique(scores).size < 5 if tied else np.unique(scores).size == scores.size
    qrel, run = _trec_dicts(ids, scores, relevance)
    per_query = pytrec_eval.RelevanceEvaluator(qrel, set(_TREC.values())).evaluate(run)
    empty = {str(q) for q in np.unique(ids) if not relevance[ids == q].any()}
    assert empty and all(v == 0.0 for q in empty for v in per_query[q].values())

    unjudged = {q: docs for q, docs in qrel.items() if q not in empty}
    skipped = pytrec_eval.RelevanceEvaluator(unjudged, set(_TREC.values())).evaluate(run)
    assert set(skipped) == set(qrel) - empty  # run queries missing from the qrels are left out
    for action, scored in (("zero", per_query), ("skip", skipped)):
        ours = _ours(ids, scores, relevance, action)
        for key, measure in _TREC.items():
            want = np.mean([values[measure] for values in scored.values()])
            np.testing.assert_allclose(ours[key], want, rtol=1e-12, err_msg=f"{action} {key} vs {measure}")


def test_ranx_scores_judged_queries_without_relevant_documents_zero():
    """docs/ranking.md's table: ranx gives 0 to a query of its qrels with no relevant candidate (our ``"zero"``);
    tie-free scores (ranx's order of ties is unspecified)."""
    from ranx import Qrels, Run, evaluate

    ids, scores, relevance = _rows(12, tied=False)
    qrel, run = _trec_dicts(ids, scores, relevance)
    names = {"ndcg@5": "ndcg@5", "recall@5": "recall@5", "precision@5": "precision@5", "mrr": "mrr"}
    names |= {"hit_rate@5": "hit_rate@5", "map@5": "map@5", "map": "map", "r_precision": "r-precision"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qrels = Qrels(qrel)
        theirs = evaluate(qrels, Run(run), list(names.values()), return_mean=False)
    empty = [i for i, q in enumerate(qrels.keys()) if not any(qrel[q].values())]  # ranx's own query order
    assert empty
    ours = _ours(ids, scores, relevance, "zero")
    for key, name in names.items():
        assert not np.asarray(theirs[name])[empty].any(), name
        np.testing.assert_allclose(ours[key], np.mean(theirs[name]), rtol=1e-9, err_msg=f"{key} vs {name}")


# ----------------------------------------------------------------------------- weight totals past float64's range


def _per_query_ndcg_mrr(scores, relevance):
    """NumPy NDCG (linear gain, whole list) and reciprocal rank of one query, ties by relevance ascending."""
    order = np.lexsort((relevance, -scores))
    ranked = relevance[order].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, ranked.size + 2))
    ndcg = (ranked * discount).sum() / (np.sort(ranked)[::-1] * discount).sum()
    return ndcg, 1.0 / (np.flatnonzero(ranked > 0)[0] + 1)


_HEAVY_SCORES = np.array([[0.9, 0.1, 0.4], [0.5, 0.6, 0.2]], dtype=np.float32)
_HEAVY_RELEVANCE = np.array([[0, 1, 2], [1, 0, 0]])


def _heavy_inputs(form):
    scores, relevance = torch.from_numpy(_HEAVY_SCORES), torch.from_numpy(_HEAVY_RELEVANCE)
    heavy = torch.tensor([1e308, 1e308], dtype=torch.float64)  # finite, valid weights; their sum is not
    if form == "padded":
        return (scores, relevance), {"weights": heavy}
    ids = torch.arange(2).repeat_interleave(3)
    return (scores.ravel(), relevance.ravel()), {"indexes": ids, "weights": heavy.repeat_interleave(3)}


@pytest.mark.parametrize("form", ["flat", "padded"])
@pytest.mark.parametrize("complete", [False, True])
def test_a_weight_total_past_float64s_range_gives_nan_never_zero(form, complete):
    """docs/policies.md ("Numerics"): a weight total that overflows float64 (two queries of weight 1e308) makes a
    weighted mean ``nan``, never the ``0`` that ``x / inf`` gives. The true mean is finite (exact fractions of
    the NumPy per-query values) and is what the same weights scaled down give. Bug: ranking metrics returned 0
    (NDCG's and MRR's value sums stayed finite while the weight sum was inf)."""
    from fractions import Fraction

    values = [_per_query_ndcg_mrr(s, r) for s, r in zip(_HEAVY_SCORES, _HEAVY_RELEVANCE, strict=True)]
    exact = {
        name: float(sum(Fraction(1e308) * Fraction(v[i]) for v in values) / (2 * Fraction(1e308)))
        for i, name in enumerate(("ndcg", "mrr"))
    }
    assert all(0.0 < value < 1.0 for value in exact.values())
    args, kwargs = _heavy_inputs(form)
    got = {
        "ndcg": tmf.ndcg(*args, **kwargs),
        "mrr": tmf.mrr(*args, **kwargs),
        **tmf.ranking_metrics(*args, **kwargs, ks=(None,), metrics=("ndcg", "mrr")),
    }
    for cls, name in ((tmx.NDCG, "class_ndcg"), (tmx.MRR, "class_mrr")):
        metric = cls(queries_complete_per_batch=complete)
        metric.update(*args, **kwargs)
        got[name] = metric.compute()
    for name, value in got.items():
        assert torch.isnan(value), (name, value)
    scaled = dict(kwargs, weights=kwargs["weights"] / 1e300)  # the same weights in range: the exact means
    np.testing.assert_allclose(tmf.ndcg(*args, **scaled).item(), exact["ndcg"], rtol=1e-12)
    np.testing.assert_allclose(tmf.mrr(*args, **scaled).item(), exact["mrr"], rtol=1e-12)


# ----------------------------------------------------------------------------- relevance near float64's smallest values


def _exact_ndcg(scores, relevance, k, exponential):
    """NDCG of one query in 60-digit arithmetic (mpmath), ties by relevance ascending: no gain underflows."""
    import mpmath

    with mpmath.workdps(60):
        order = np.lexsort((relevance, -scores))

        def dcg(values):
            gains = [mpmath.expm1(mpmath.mpf(v) * mpmath.log(2)) if exponential else mpmath.mpf(v) for v in values]
            return sum(g / mpmath.log(i + 2, 2) for i, g in enumerate(gains[:k]))

        return float(dcg(relevance[order]) / dcg(np.sort(relevance)[::-1]))


_TINY_RELEVANCE = np.array([[0.0, 5e-324, 0.0], [0.0, 1e-320, 3e-320], [1e-310, 0.0, 2.5e-310], [0.0, 1.0, 2.0]])
_TINY_SCORES = np.array([[0.9, 0.1, 0.5], [0.9, 0.1, 0.5], [0.2, 0.7, 0.1], [0.9, 0.1, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("exponential", [False, True])
@pytest.mark.parametrize("k", [2, None])
@pytest.mark.parametrize("path", ["flat", "padded", "complete", "device"])
def test_relevance_near_float64s_smallest_value_keeps_its_ndcg(path, k, exponential):
    """A query whose largest relevance is subnormal (5e-324, 1e-320: finite, > 0, so valid and relevant) has the
    NDCG of its grades scaled by any power of two: its gains are scaled up as large ones are scaled down
    (``GAIN_EXPONENT_LIMIT``). Bug: its gains times the discounts underflowed, so a query whose one relevant
    row ranks 3rd had NDCG 0 (true 0.5), and the others lost up to half their digits."""
    from torchmetrics_ext.utilities.device import force_device_path

    per_query = [_exact_ndcg(s, r, k or 3, exponential) for s, r in zip(_TINY_SCORES, _TINY_RELEVANCE, strict=True)]
    assert per_query[0] == (0.5 if k is None else 0.0)  # its one relevant row ranks 3rd
    scores, relevance = torch.from_numpy(_TINY_SCORES), torch.from_numpy(_TINY_RELEVANCE)
    kwargs = {"k": k, "exponential_gain": exponential}
    with force_device_path(path == "device"):
        for q in range(len(per_query)):  # each query alone, then all together
            if path == "flat":
                value = tmf.ndcg(scores[q], relevance[q], torch.zeros(3, dtype=torch.int64), **kwargs)
            else:
                metric = tmx.NDCG(queries_complete_per_batch=path == "complete", **kwargs)
                metric.update(scores[q : q + 1], relevance[q : q + 1])
                value = metric.compute()
            np.testing.assert_allclose(value.item(), per_query[q], rtol=1e-13, err_msg=f"query {q}")
        ids = torch.arange(4).repeat_interleave(3)
        together = tmf.ndcg(scores.ravel(), relevance.ravel(), ids, **kwargs) if path == "flat" else None
        if together is None:
            metric = tmx.NDCG(queries_complete_per_batch=path == "complete", **kwargs)
            metric.update(scores, relevance)
            together = metric.compute()
    np.testing.assert_allclose(together.item(), np.mean(per_query), rtol=1e-13)
