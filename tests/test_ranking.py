"""Ranking metrics through the shared harness, vs a numpy brute force, ranx, pytrec_eval and TorchMetrics.

The brute force below loops over queries in the test (never in the package): it ranks each
query with ``np.lexsort`` by (score descending, relevance ascending), our documented tie rule,
and applies each textbook formula. It is itself checked against ranx and pytrec_eval on
tie-free data, so the harness cases can use it on tied data (rounded or low-precision scores).
"""

from __future__ import annotations

import io
import itertools
import re
import warnings
from functools import partial

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.aggregation import Distribution
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

ALL = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")  # RankingMetrics' default
REGISTERED = (*ALL, "r_precision", "f1")  # every metric the registry holds
NO_CUTOFF = ("r_precision",)

# ----------------------------------------------------------------------------- data


def flat_data(
    rng,
    num_queries=70,
    max_len=12,
    ties=False,
    weights=False,
    empty_frac=0.15,
    shuffle=True,
    grades=4,
    grouped=False,
):
    """Flat rows of queries with 1..max_len candidates, graded relevance, rows shuffled across the set."""
    lens = rng.integers(1, max_len + 1, size=num_queries)
    ids = rng.choice(np.arange(1000, 1000 + 5 * num_queries), size=num_queries, replace=False)  # sparse ids
    if grouped:  # sorted ids, rows of a query contiguous (as data loaders emit them)
        ids, shuffle = np.sort(ids), False
    idx = np.repeat(ids, lens)
    n = idx.size
    preds = rng.normal(size=n) * 2
    if ties:
        preds = np.round(preds, 0)
    rel = rng.integers(0, grades, size=n) * (rng.random(n) < 0.45)
    empty = np.isin(idx, ids[rng.random(num_queries) < empty_frac])
    rel[empty] = 0
    order = rng.permutation(n) if shuffle else np.arange(n)
    out = {
        "preds": torch.tensor(preds[order], dtype=torch.float64 if not ties else torch.float32),
        "target": torch.tensor(rel[order]),
        "indexes": torch.tensor(idx[order]),
    }
    if weights:
        qw = dict(zip(ids, rng.uniform(0.1, 3.0, size=num_queries), strict=False))
        out["weights"] = torch.tensor([qw[i] for i in idx[order]])
    return out


def padded_data(rng, num_queries=90, width=10, ties=False, padding_value=None):
    """(Q, L) padded lists with a mask (or padding_value) and per-query weights."""
    lens = rng.integers(1, width + 1, size=num_queries)
    mask = np.arange(width)[None, :] < lens[:, None]
    preds = rng.normal(size=(num_queries, width))
    if ties:
        preds = np.round(preds, 0)
    rel = rng.integers(0, 4, size=(num_queries, width)) * (rng.random((num_queries, width)) < 0.4)
    rel[rng.random(num_queries) < 0.1] = 0
    out = {"preds": torch.tensor(preds, dtype=torch.float32), "target": torch.tensor(rel)}
    if padding_value is None:
        out["mask"] = torch.tensor(mask)
    else:  # padded by the value: no relevance there (a relevant candidate scored as padding is refused)
        out["preds"] = torch.where(torch.tensor(mask), out["preds"], padding_value)
        out["target"] = out["target"] * torch.tensor(mask)
    out["weights"] = torch.tensor(rng.uniform(0.1, 3.0, size=num_queries))
    return out


# ----------------------------------------------------------------------------- brute-force reference


def ref_query(scores, rels, name, k, exponential=False, adaptive=False):
    order = np.lexsort((rels, -scores))  # last key is primary: score desc, then relevance asc
    ranked = rels[order]
    n = len(ranked)
    kk = n if k is None else min(k, n)
    relevant = ranked > 0
    num_rel = relevant.sum()
    top = relevant[:kk]
    depth = n if k is None else (min(k, n) if adaptive else k)  # precision's denominator
    if name == "recall":
        return top.sum() / num_rel
    if name == "precision":
        return top.sum() / depth
    if name == "r_precision":  # precision at R = |relevant|
        return relevant[:num_rel].sum() / num_rel
    if name == "f1":  # harmonic mean of precision@k and recall@k, 0 when both are 0
        p, r = top.sum() / depth, top.sum() / num_rel
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)
    if name == "hit_rate":
        return float(top.any())
    if name == "mrr":
        hits = np.flatnonzero(top)
        return 1.0 / (hits[0] + 1) if hits.size else 0.0
    if name == "map":
        ranks = np.flatnonzero(top) + 1
        return sum((j + 1) / r for j, r in enumerate(ranks)) / num_rel
    gain = (2.0**ranked - 1) if exponential else ranked.astype(float)
    ideal = np.sort(gain)[::-1]
    disc = 1.0 / np.log2(np.arange(n) + 2.0)
    return (gain[:kk] * disc[:kk]).sum() / (ideal[:kk] * disc[:kk]).sum()


def _queries(data):
    """Yield (scores, relevance, weight) per query, flat or padded."""
    preds, target = data["preds"], data["target"]
    weights = data.get("weights")
    if preds.ndim == 2:
        mask = data.get("mask")
        pad = data.get("_padding_value")
        for q in range(preds.shape[0]):
            keep = np.ones(preds.shape[1], bool) if mask is None else mask[q].astype(bool)
            if pad is not None:
                keep = keep & (preds[q] != pad)
            yield preds[q][keep], target[q][keep], 1.0 if weights is None else weights[q]
        return
    idx = data["indexes"]
    for q in np.unique(idx):
        rows = idx == q
        yield preds[rows], target[rows], 1.0 if weights is None else weights[rows].max()


def ref_mean(data, requests, action="skip", remove_single=False, loss=False, **kw):
    values, weights = [], []
    for scores, rels, w in _queries(data):
        if not len(scores) or (remove_single and len(scores) == 1):
            continue
        if not (rels > 0).any():
            if action == "skip":
                continue
            values.append([0.0 if action == "zero" else 1.0] * len(requests))
        else:
            values.append([ref_query(scores, rels, name, k, **kw) for name, k in requests])
        weights.append(w)
    w = np.asarray(weights, dtype=float)
    if w.sum() == 0:
        out = np.full(len(requests), np.nan)
    else:
        out = (np.asarray(values) * w[:, None]).sum(0) / w.sum()
    return 1 - out if loss else out


def single_ref(name, k, **kw):
    return lambda data: ref_mean(data, [(name, k)], **kw)[0]


def dict_ref(ks, metrics=ALL, **kw):
    requests = [(m, k) for m in metrics for k in ((None,) if m in NO_CUTOFF else ks)]

    def reference(data):
        values = ref_mean(data, requests, **kw)
        return {(m if k is None else f"{m}@{k}"): values[i] for i, (m, k) in enumerate(requests)}

    return reference


def with_pad(fn, value):
    return lambda data: fn({**data, "_padding_value": value})


# ----------------------------------------------------------------------------- ranx reference


def break_ties(idx, preds, target):
    """Tie-free scores that rank every query's rows by our documented rule: score desc, relevance asc."""
    order = np.lexsort((target, -preds, idx))  # last key is primary
    position = np.empty(len(order))
    position[order] = np.arange(len(order))
    return -position


def ranx_ref(metric_names, keys=None, ties=False):
    """Mean of ranx metrics over queries that have a relevant candidate (ranx has no weights).

    ranx orders tied scores arbitrarily; with ``ties=True`` the scores are first made tie-free
    by our tie rule (:func:`break_ties`), so ranx's definitions are compared on tied data too.
    ranx is imported when a reference is computed, not when the cases are built: modules that
    import this one's cases (``test_windowed``) run where ranx is not installed (the GPU machine).
    """

    def reference(data):
        from ranx import Qrels, Run, evaluate

        idx, preds, target = data["indexes"], data["preds"], data["target"]
        if ties:
            preds = break_ties(idx, preds, target)
        qrels, run = {}, {}
        for row, (q, s, y) in enumerate(zip(idx, preds, target, strict=False)):
            run.setdefault(str(q), {})[f"d{row}"] = float(s)
            if y > 0:
                qrels.setdefault(str(q), {})[f"d{row}"] = int(y)
        run = {q: docs for q, docs in run.items() if q in qrels}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = evaluate(Qrels(qrels), Run(run), list(metric_names))
        out = out if isinstance(out, dict) else {metric_names[0]: out}
        if keys is None:
            return out[metric_names[0]]
        return {key: out[name] for key, name in zip(keys, metric_names, strict=False)}

    return reference


# ----------------------------------------------------------------------------- cases

FLAT_KEYS = ("preds", "target", "indexes")


def _flat(cid, metric, reference, functional=None, weights=False, ties=False, **data_kw):
    return H.MetricCase(
        id=cid,
        metric=metric,
        data=partial(flat_data, weights=weights, ties=ties, **data_kw),
        reference=reference,
        functional=functional,
        sample_axis=-1,
        weight_key=None,
    )


def _padded(cid, metric, reference, functional=None, padding_value=None, ties=False):
    if padding_value is not None:
        reference = with_pad(reference, padding_value)
    return H.MetricCase(
        id=cid,
        metric=metric,
        data=partial(padded_data, ties=ties, padding_value=padding_value),
        reference=reference,
        functional=functional,
        sample_axis=0,
        weight_key="weights",
        min_batch=12,
    )


_SINGLE = [
    ("ndcg@5", tmx.NDCG, tmf.ndcg, "ndcg", 5, {}),
    ("ndcg", tmx.NDCG, tmf.ndcg, "ndcg", None, {}),
    ("recall@3", tmx.RecallAtK, tmf.recall_at_k, "recall", 3, {}),
    ("precision@3", tmx.PrecisionAtK, tmf.precision_at_k, "precision", 3, {}),
    ("mrr@3", tmx.MRR, tmf.mrr, "mrr", 3, {}),
    ("mrr", tmx.MRR, tmf.mrr, "mrr", None, {}),
    ("hit_rate@2", tmx.HitRate, tmf.hit_rate, "hit_rate", 2, {}),
    ("map@5", tmx.MAP, tmf.map_at_k, "map", 5, {}),
    ("map", tmx.MAP, tmf.map_at_k, "map", None, {}),
    ("r_precision", tmx.RPrecision, tmf.r_precision, "r_precision", None, {}),
    ("f1@3", tmx.F1AtK, tmf.f1_at_k, "f1", 3, {}),
]


def _single_cases():
    out = []
    for cid, cls, fn, name, k, options in _SINGLE:
        kw = options if name in NO_CUTOFF else {"k": k, **options}
        out.append(_flat(f"flat-{cid}", partial(cls, **kw), single_ref(name, k), partial(fn, **kw)))
        out.append(_flat(f"flat-ties-{cid}", partial(cls, **kw), single_ref(name, k), partial(fn, **kw), ties=True))
        out.append(_padded(f"padded-{cid}", partial(cls, **kw), single_ref(name, k), partial(fn, **kw), ties=True))
    return out


_EVERY_OPTION = {
    "ks": (2, 5),
    "metrics": REGISTERED,
    "exponential_gain": True,
    "adaptive_k": True,
    "remove_single_length_sessions": True,
    "empty_target_action": "zero",
}
_ALL_CASES = [
    *_single_cases(),
    _flat(
        "flat-ndcg-exp@5-w",
        partial(tmx.NDCG, k=5, exponential_gain=True),
        single_ref("ndcg", 5, exponential=True),
        partial(tmf.ndcg, k=5, exponential_gain=True),
        weights=True,
    ),
    _flat(
        "flat-precision-adaptive@10",
        partial(tmx.PrecisionAtK, k=10, adaptive_k=True),
        single_ref("precision", 10, adaptive=True),
        partial(tmf.precision_at_k, k=10, adaptive_k=True),
    ),
    _flat(
        "flat-ndcg@3-zero",
        partial(tmx.NDCG, k=3, empty_target_action="zero"),
        single_ref("ndcg", 3, action="zero"),
        partial(tmf.ndcg, k=3, empty_target_action="zero"),
    ),
    _flat(
        "flat-mrr-one-w",
        partial(tmx.MRR, empty_target_action="one"),
        single_ref("mrr", None, action="one"),
        partial(tmf.mrr, empty_target_action="one"),
        weights=True,
    ),
    _flat(
        "flat-ndcg-torchrec",
        partial(tmx.NDCG, report_as_loss=True, remove_single_length_sessions=True),
        single_ref("ndcg", None, loss=True, remove_single=True),
        partial(tmf.ndcg, report_as_loss=True, remove_single_length_sessions=True),
    ),
    _flat(
        "flat-all-w",
        partial(tmx.RankingMetrics, ks=(1, 3, 10)),
        dict_ref((1, 3, 10)),
        partial(tmf.ranking_metrics, ks=(1, 3, 10)),
        weights=True,
        ties=True,
    ),
    _flat(
        "flat-grouped-all-w",
        partial(tmx.RankingMetrics, ks=(1, 3, 10)),
        dict_ref((1, 3, 10)),
        partial(tmf.ranking_metrics, ks=(1, 3, 10)),
        weights=True,
        ties=True,
        grouped=True,
    ),
    _flat(
        "flat-all-exp",
        partial(tmx.RankingMetrics, ks=(2, 5), exponential_gain=True),
        dict_ref((2, 5), exponential=True),
        partial(tmf.ranking_metrics, ks=(2, 5), exponential_gain=True),
    ),
    _padded(
        "padded-all-w",
        partial(tmx.RankingMetrics, ks=(1, 4)),
        dict_ref((1, 4)),
        partial(tmf.ranking_metrics, ks=(1, 4)),
        ties=True,
    ),
    _padded(
        "padded-pad-ndcg@3",
        partial(tmx.NDCG, k=3, padding_value=-10.0),
        single_ref("ndcg", 3),
        partial(tmf.ndcg, k=3, padding_value=-10.0),
        padding_value=-10.0,
    ),
    _padded(
        "padded-pad-recall@2",
        partial(tmx.RecallAtK, k=2, padding_value=-10.0),
        single_ref("recall", 2),
        partial(tmf.recall_at_k, k=2, padding_value=-10.0),
        padding_value=-10.0,
    ),
    _flat(
        "flat-f1-adaptive@10-w",
        partial(tmx.F1AtK, k=10, adaptive_k=True),
        single_ref("f1", 10, adaptive=True),
        partial(tmf.f1_at_k, k=10, adaptive_k=True),
        weights=True,
    ),
    _flat(
        "flat-r_precision-one-w",
        partial(tmx.RPrecision, empty_target_action="one", remove_single_length_sessions=True),
        single_ref("r_precision", None, action="one", remove_single=True),
        partial(tmf.r_precision, empty_target_action="one", remove_single_length_sessions=True),
        weights=True,
        ties=True,
    ),
    _flat(
        "flat-registry-all-w",
        partial(tmx.RankingMetrics, ks=(1, 3, 10), metrics=REGISTERED),
        dict_ref((1, 3, 10), metrics=REGISTERED),
        partial(tmf.ranking_metrics, ks=(1, 3, 10), metrics=REGISTERED),
        weights=True,
        ties=True,
    ),
    # every option of ranking_metrics at once (adaptive_k and remove_single_length_sessions included)
    _flat(
        "flat-registry-all-options",
        partial(tmx.RankingMetrics, **_EVERY_OPTION),
        dict_ref((2, 5), metrics=REGISTERED, exponential=True, adaptive=True, remove_single=True, action="zero"),
        partial(tmf.ranking_metrics, **_EVERY_OPTION),
        ties=True,
    ),
]

# ranx on tie-free float64 scores, graded relevance 0..3, rows shuffled so queries span batches;
# ranx's relevance threshold (rel_lvl=1) equals ours (target > 0) on integer grades
_RANX = [
    ("ndcg@5", tmx.NDCG, {"k": 5}),
    ("ndcg_burges@5", tmx.NDCG, {"k": 5, "exponential_gain": True}),
    ("recall@5", tmx.RecallAtK, {"k": 5}),
    ("precision@5", tmx.PrecisionAtK, {"k": 5}),
    ("mrr@5", tmx.MRR, {"k": 5}),
    ("hit_rate@5", tmx.HitRate, {"k": 5}),
    ("map@5", tmx.MAP, {"k": 5}),
    ("ndcg", tmx.NDCG, {}),
    ("map", tmx.MAP, {}),
    ("r-precision", tmx.RPrecision, {}),
    ("f1@5", tmx.F1AtK, {"k": 5}),
]
_RANX_ALL_KEYS = [f"{m}@{k}" for m in ALL for k in (1, 5, 10)]
_ALL_CASES += [_flat(f"ranx-{name}", partial(cls, **kw), ranx_ref([name])) for name, cls, kw in _RANX]
_ALL_CASES.append(
    _flat(
        "ranx-all",
        partial(tmx.RankingMetrics, ks=(1, 5, 10)),
        ranx_ref(_RANX_ALL_KEYS, keys=_RANX_ALL_KEYS),
        num_queries=120,
    )
)
# ranx on tied float32 scores (made tie-free by our rule for ranx), every registered metric
_RANX_TIES = [("r-precision", tmx.RPrecision, {}), ("f1@5", tmx.F1AtK, {"k": 5}), ("f1@2", tmx.F1AtK, {"k": 2})]
_ALL_CASES += [
    _flat(f"ranx-ties-{name}", partial(cls, **kw), ranx_ref([name], ties=True), ties=True)
    for name, cls, kw in _RANX_TIES
]
_RANX_REGISTERED_KEYS = [f"{m}@{k}" for m in (*ALL, "f1") for k in (1, 5, 10)] + ["r_precision"]
_ALL_CASES.append(
    _flat(
        "ranx-ties-registry-all",
        partial(tmx.RankingMetrics, ks=(1, 5, 10), metrics=REGISTERED),
        ranx_ref(
            [key.replace("_precision", "-precision") for key in _RANX_REGISTERED_KEYS], _RANX_REGISTERED_KEYS, ties=True
        ),
        ties=True,
        num_queries=120,
    )
)


# multiclass recall@k
def multiclass_data(rng, n=400, c=6, ties=False, weights=False):
    preds = rng.normal(size=(n, c))
    if ties:
        preds = np.round(preds, 0)
    out = {
        "preds": torch.tensor(preds, dtype=torch.float32),
        "target": torch.tensor(rng.integers(0, c, size=n)),
    }
    out["weights"] = torch.tensor(rng.uniform(0, 2, size=n)) if weights else None
    return out


def ref_multiclass(data, k):
    p, y, w = data["preds"], data["target"], data["weights"]
    w = np.ones(len(y)) if w is None else w
    hits = []
    for row, label in zip(p, y, strict=False):
        rank = (row > row[label]).sum() + (row == row[label]).sum() - 1
        hits.append(rank < k)
    return (np.asarray(hits) * w).sum() / w.sum()


for _k, _ties, _w in ((1, False, False), (3, True, True), (2, True, False)):
    _ALL_CASES.append(
        H.MetricCase(
            id=f"multiclass@{_k}{'-ties' if _ties else ''}{'-w' if _w else ''}",
            metric=partial(tmx.MulticlassRecallAtK, k=_k, num_classes=6),
            data=partial(multiclass_data, ties=_ties, weights=_w),
            reference=partial(ref_multiclass, k=_k),
            functional=partial(tmf.multiclass_recall_at_k, k=_k, num_classes=6),
            sample_axis=0,
            weight_key="weights" if _w else None,
        )
    )

CASES = {case.id: case for case in _ALL_CASES}
IDS = sorted(CASES)
HARNESS_IDS = [i for i in IDS if not i.startswith("ranx-")]
DDP_IDS = [
    "flat-all-w",
    "flat-grouped-all-w",
    "flat-ndcg@5",
    "padded-all-w",
    "flat-mrr-one-w",
    "multiclass@3-ties-w",
    "ranx-all",
    "flat-r_precision",
    "flat-f1@3",
    "flat-registry-all-options",
    "ranx-ties-registry-all",
]


# ----------------------------------------------------------------------------- harness


globals().update(
    H.harness_tests(
        __name__,
        CASES,
        forward=HARNESS_IDS,
        dtypes=[
            "flat-all-w",
            "flat-grouped-all-w",
            "flat-registry-all-w",
            "padded-all-w",
            "flat-ties-ndcg@5",
            "multiclass@3-ties-w",
        ],
        state_dict=HARNESS_IDS,
        collection=[i for i in HARNESS_IDS if not i.startswith("flat-ties") and ("@" in i or "r_precision" in i)],
        no_arithmetic=[i for i in HARNESS_IDS if "-all" in i],
        invariances=[i for i in HARNESS_IDS if CASES[i].weight_key is not None],
        # flat cases carry per-query weights (one per query, repeated on its rows)
        group_invariances=[i for i in HARNESS_IDS if i.startswith("flat") and i.endswith("-w")],
        device_path=HARNESS_IDS,  # the device path's validation reads every bound in one copy
        ddp=DDP_IDS,
        # single metrics without a cutoff or a weight, padding values, multiclass@1 (the brute force is cheap)
        ddp_scenarios=[
            "flat-all-w",
            "flat-hit_rate@2",
            "flat-map",
            "flat-mrr",
            "flat-ndcg",
            "flat-ndcg-exp@5-w",
            "flat-ndcg-torchrec",
            "flat-ndcg@3-zero",
            "flat-precision-adaptive@10",
            "flat-precision@3",
            "flat-recall@3",
            "multiclass@1",
            "multiclass@2-ties",
            "padded-all-w",
            "padded-map@5",
            "padded-pad-ndcg@3",
            "padded-pad-recall@2",
        ],
    )
)


# ----------------------------------------------------------------------------- independent references


def _tie_free(seed=0, **kw):
    return flat_data(np.random.default_rng(seed), num_queries=150, max_len=25, **kw)


def test_pytrec_eval_agrees():
    """trec_eval's ndcg_cut, recall, P, success, recip_rank, map_cut and Rprec (linear gain, /k precision)."""
    import pytrec_eval

    data = _tie_free(3)
    preds, target, idx = (data[key].numpy() for key in FLAT_KEYS)
    qrel, run = {}, {}
    for row, (q, s, y) in enumerate(zip(idx, preds, target, strict=False)):
        qrel.setdefault(str(q), {})[f"d{row}"] = int(y)
        run.setdefault(str(q), {})[f"d{row}"] = float(s)
    keep = {q for q, docs in qrel.items() if any(v > 0 for v in docs.values())}
    qrel = {q: d for q, d in qrel.items() if q in keep}
    run = {q: d for q, d in run.items() if q in keep}
    measures = {"ndcg_cut.5,10", "recall.5", "P.5", "success.5", "recip_rank", "map_cut.10", "map", "Rprec"}
    per_query = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)

    def mean(name):
        return np.mean([values[name] for values in per_query.values()])

    out = tmf.ranking_metrics(*(data[key] for key in FLAT_KEYS), ks=(5, 10, None), metrics=REGISTERED)
    for ours, theirs in (
        ("ndcg@5", "ndcg_cut_5"),
        ("ndcg@10", "ndcg_cut_10"),
        ("recall@5", "recall_5"),
        ("precision@5", "P_5"),
        ("hit_rate@5", "success_5"),
        ("mrr", "recip_rank"),
        ("map@10", "map_cut_10"),
        ("map", "map"),
        ("r_precision", "Rprec"),
    ):
        np.testing.assert_allclose(out[ours].item(), mean(theirs), rtol=1e-6, err_msg=f"{ours} vs {theirs}")


@pytest.mark.parametrize("k", [1, 3, 10, None])
def test_torchmetrics_agrees(k):
    """TorchMetrics' retrieval metrics where definitions coincide (positive tie-free scores, skip empties)."""
    from torchmetrics import retrieval as R

    data = _tie_free(5)
    preds = torch.sigmoid(data["preds"]) + 1e-3  # TorchMetrics >= 1.7.4 treats scores <= 0 as not retrieved
    target, indexes = data["target"], data["indexes"]
    binary = target > 0
    pairs = [
        (
            R.RetrievalNormalizedDCG(top_k=k, empty_target_action="skip"),
            target,
            tmf.ndcg(preds, target, indexes, k=k),
        ),
        (  # recall_at_k needs a cutoff (the whole list gives 1); ranking_metrics takes None
            R.RetrievalRecall(top_k=k, empty_target_action="skip"),
            binary,
            next(iter(tmf.ranking_metrics(preds, target, indexes, ks=(k,), metrics=("recall",)).values())),
        ),
        (R.RetrievalMRR(top_k=k, empty_target_action="skip"), binary, tmf.mrr(preds, target, indexes, k=k)),
    ]
    if k is not None:
        pairs += [
            (
                R.RetrievalPrecision(top_k=k, empty_target_action="skip"),
                binary,
                tmf.precision_at_k(preds, target, indexes, k=k),
            ),
            (
                R.RetrievalHitRate(top_k=k, empty_target_action="skip"),
                binary,
                tmf.hit_rate(preds, target, indexes, k=k),
            ),
        ]
    else:  # TorchMetrics' MAP@k divides by the relevant items in the top k, ours (trec_eval, ranx) by all
        pairs.append((R.RetrievalMAP(empty_target_action="skip"), binary, tmf.map_at_k(preds, target, indexes)))
    for metric, tm_target, ours in pairs:
        expected = metric(preds.float(), tm_target, indexes=indexes)
        np.testing.assert_allclose(ours.item(), expected.item(), rtol=1e-5, err_msg=type(metric).__name__)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_multiclass_rank_of_special_scores_matches_a_python_count(dtype):
    """Signed zeros, ``±inf`` and heavy ties (a catalogue scored in half precision, seen items masked with
    ``-inf``): the true class ranks behind every class scored at least as high, ``-0.0 == 0.0``, counted
    by plain Python comparisons of the values as float64; unvalidated NaN rows too (they compare as
    neither higher nor equal, so such a row ranks first)."""
    rng = np.random.default_rng(5)
    values = [float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0, 0.5]
    preds = torch.tensor(rng.choice(values, size=(300, 9))).to(dtype)
    target = torch.tensor(rng.integers(0, 9, size=300))
    weights = torch.tensor(rng.uniform(0, 2, size=300))
    as_float = preds.double().tolist()
    ranks = [sum(s >= row[c] for s in row) - 1 for row, c in zip(as_float, target.tolist(), strict=True)]
    for k in (1, 2, 5, 9):
        hits = np.array([r < k for r in ranks], dtype=float)
        expected = (hits * weights.numpy()).sum() / weights.numpy().sum()
        got = tmf.multiclass_recall_at_k(preds, target, weights, k=k, num_classes=9).item()
        assert got == pytest.approx(expected, rel=1e-12, abs=0), k
    nan_rows = preds.clone()
    nan_rows[:50] = float("nan")  # validate_args=False reads them: no class counts ahead of a NaN score
    nan_ranks = [-1] * 50 + ranks[50:]
    metric = tmx.MulticlassRecallAtK(k=1, num_classes=9, validate_args=False)
    metric.update(nan_rows, target, weights)
    hits = np.array([r < 1 for r in nan_ranks], dtype=float)
    assert metric.compute().item() == pytest.approx(
        (hits * weights.numpy()).sum() / weights.numpy().sum(), rel=1e-12, abs=0
    )


def test_multiclass_matches_sklearn_without_ties():
    """Every cutoff, ``k >= num_classes`` included: every sample a hit (scikit-learn warns, TorchMetrics
    refuses ``k > num_classes``; a flat query shorter than ``k`` is ranked whole). Bug: ``k > num_classes``
    raised."""
    from sklearn.metrics import top_k_accuracy_score

    data = multiclass_data(np.random.default_rng(0), weights=True)
    for k in (1, 2, 4, 6, 7, 50):
        ours = tmf.multiclass_recall_at_k(data["preds"], data["target"], data["weights"], k=k, num_classes=6)
        metric = tmx.MulticlassRecallAtK(k=k, num_classes=6)
        metric.update(data["preds"], data["target"], data["weights"])
        with (
            warnings.catch_warnings()
        ):  # "'k' (7) greater than or equal to 'n_classes' (6) will result in a perfect score"
            warnings.simplefilter("ignore", UserWarning)
            ref = top_k_accuracy_score(
                data["target"].numpy(),
                data["preds"].numpy(),
                k=k,
                sample_weight=data["weights"].numpy(),
                labels=np.arange(6),
            )
        np.testing.assert_allclose(ours.item(), ref, rtol=1e-9)
        np.testing.assert_allclose(metric.compute().item(), ref, rtol=1e-9)


# ----------------------------------------------------------------------------- forms, ties, policies


def _to_flat(data):
    q, width = data["preds"].shape
    keep = data["mask"]
    ids = torch.arange(q).unsqueeze(1).expand(-1, width)[keep]
    return {
        "preds": data["preds"][keep],
        "target": data["target"][keep],
        "indexes": ids,
        "weights": data["weights"][ids],
    }


def test_flat_and_padded_agree_exactly():
    data = padded_data(np.random.default_rng(1), ties=True)
    flat = _to_flat(data)
    padded_out = tmf.ranking_metrics(**data, ks=(1, 3, None), metrics=("ndcg", "recall", "mrr", "map"))
    flat_out = tmf.ranking_metrics(**flat, ks=(1, 3, None), metrics=("ndcg", "recall", "mrr", "map"))
    for key in padded_out:
        assert torch.equal(padded_out[key], flat_out[key]), key
    a, b = tmx.RankingMetrics(ks=(2, 5)), tmx.RankingMetrics(ks=(2, 5))
    a.update(**data)
    b.update(**flat)
    for key, value in a.compute().items():
        assert torch.equal(value, b.compute()[key]), key


def test_tie_rule_is_pessimistic_and_order_free():
    # one query, all scores tied: the relevant candidate ranks last among the tie
    preds = torch.tensor([0.5, 0.5, 0.5, 0.1])
    target = torch.tensor([1, 0, 0, 2])
    idx = torch.zeros(4, dtype=torch.long)
    assert tmf.mrr(preds, target, idx).item() == pytest.approx(1 / 3)
    assert tmf.recall_at_k(preds, target, idx, k=2).item() == 0.0
    # graded ties: lower grade first
    out = tmf.ndcg(torch.tensor([1.0, 1.0]), torch.tensor([3, 1]), torch.zeros(2, dtype=torch.long))
    assert out.item() == pytest.approx((1 + 3 / np.log2(3)) / (3 + 1 / np.log2(3)))
    data = flat_data(np.random.default_rng(2), ties=True)
    base = tmf.ranking_metrics(*(data[key] for key in FLAT_KEYS), ks=(1, 3, None), metrics=ALL[1:])
    perm = torch.randperm(data["preds"].numel(), generator=torch.Generator().manual_seed(0))
    shuffled = tmf.ranking_metrics(*(data[key][perm] for key in FLAT_KEYS), ks=(1, 3, None), metrics=ALL[1:])
    for key in base:
        torch.testing.assert_close(base[key], shuffled[key], rtol=1e-12, atol=0)


def test_any_real_scores_and_wide_keys():
    # negative, zero, -0.0 and infinite scores; sparse negative ids; float64 scores finer than float32
    preds = torch.tensor([-float("inf"), -3.0, -0.0, 0.0, 1e300, float("inf"), 1.0, 1.0 + 1e-12], dtype=torch.float64)
    target = torch.tensor([1, 0, 0, 1, 0, 0, 1, 0])
    idx = torch.tensor([-(2**62), -(2**62), -(2**62), -(2**62), 2**62, 2**62, 2**62, 2**62])
    data = {"preds": preds.numpy(), "target": target.numpy(), "indexes": idx.numpy()}
    for name, k in (("mrr", None), ("ndcg", 2), ("map", None), ("recall", 2)):
        ours = tmf.ranking_metrics(preds, target, idx, ks=(k,), metrics=(name,))
        assert ours[name if k is None else f"{name}@{k}"].item() == pytest.approx(single_ref(name, k)(data))
    # -0.0 and 0.0 are one tie, so the relevant 0.0 ranks after the non-relevant -0.0
    assert tmf.mrr(preds[:4], target[:4], idx[:4]).item() == 0.5


def test_fractional_graded_relevance():
    rng = np.random.default_rng(4)
    data = flat_data(rng)
    data["target"] = data["target"] * torch.tensor(rng.uniform(0.3, 1.7, size=data["target"].numel()))
    for exponential in (False, True):
        ours = tmf.ndcg(*(data[key] for key in FLAT_KEYS), k=4, exponential_gain=exponential)
        ref = single_ref("ndcg", 4, exponential=exponential)(H.to_numpy(data))
        np.testing.assert_allclose(ours.item(), ref, rtol=1e-9)


def _exact_exponential_ndcg(preds, target, k=None):
    """NDCG with gain ``2**y - 1`` of one query, in 60-digit decimals (no float64 overflow).

    Below ``y = 1`` the gain is the series of ``expm1(y ln 2)``, whose terms have no cancellation
    (``2**y - 1`` in 60 digits is 0 for ``y`` below ~1e-60).
    """
    from decimal import Decimal, localcontext

    with localcontext() as context:
        context.prec = 60

        def gain(y):
            if y >= 1 or y == 0:
                return Decimal(2) ** Decimal(float(y)) - 1
            x = Decimal(float(y)) * Decimal(2).ln()
            term, total, n = x, Decimal(0), 1
            while term > total * Decimal("1e-70"):
                total += term
                n += 1
                term = term * x / n
            return total

        def dcg(rels):
            return sum(gain(y) * Decimal(2).ln() / Decimal(i + 2).ln() for i, y in enumerate(rels[:k]))

        ranked = [y for _, y in sorted(zip(preds.tolist(), target.tolist(), strict=True), key=lambda r: (-r[0], r[1]))]
        return float(dcg(ranked) / dcg(sorted(target.tolist(), reverse=True)))


@pytest.mark.parametrize("k", [None, 3])
def test_exponential_gain_of_large_relevance(k):
    """Bug: gains ``2**y - 1`` overflow float64 from relevance 1024 (and their sums sooner): ``nan``.

    Relevance up to 3000 (integer and fractional) in some queries, small grades in others: every
    path (flat and padded, class and function, device path, complete queries) gives the exact
    value (60-digit decimals), and queries of small grades keep their values.
    """
    rng = np.random.default_rng(17)
    num_queries, width = 12, 6
    preds = torch.tensor(rng.random((num_queries, width)))
    target = torch.tensor(rng.integers(0, 4, (num_queries, width)), dtype=torch.float64)
    target[:, 0] += 1.0  # every query has a relevant candidate
    large = torch.tensor(rng.uniform(500, 3000, (num_queries // 2, width)))
    target[::2] = torch.where(
        torch.rand(num_queries // 2, width, generator=torch.Generator().manual_seed(0)) < 0.5, large.round(), large
    )
    expected = np.mean([_exact_exponential_ndcg(p, t, k) for p, t in zip(preds, target, strict=True)])
    values, flat = _exponential_ndcg_on_every_path(preds, target, k)
    values["integer"] = tmf.ndcg(**{**flat, "target": flat["target"].round().long()}, k=k, exponential_gain=True)
    for name, value in values.items():
        reference = expected
        if name == "integer":
            reference = np.mean([_exact_exponential_ndcg(p, t.round(), k) for p, t in zip(preds, target, strict=True)])
        np.testing.assert_allclose(value.item(), reference, rtol=1e-12, err_msg=name)


def _exponential_ndcg_on_every_path(preds, target, k, exponential_gain=True):
    """``NDCG(exponential_gain=True)`` (or linear gains) of padded ``(Q, L)`` lists on every path (functional flat
    and padded, the class on flat, complete and padded input, the device path), and the flat batch it was given."""
    num_queries, width = preds.shape
    flat = {
        "preds": preds.flatten(),
        "target": target.flatten(),
        "indexes": torch.arange(num_queries).repeat_interleave(width),
    }
    padded = {"preds": preds, "target": target}
    values = {
        "flat": tmf.ndcg(**flat, k=k, exponential_gain=exponential_gain),
        "padded": tmf.ndcg(**padded, k=k, exponential_gain=exponential_gain),
    }
    for name, batch in (("class", flat), ("complete", flat), ("padded_class", padded)):
        metric = tmx.NDCG(k=k, exponential_gain=exponential_gain, queries_complete_per_batch=name == "complete")
        metric.update(**batch)
        values[name] = metric.compute()
    with force_device_path():  # the classes rank padded lists and complete queries in `update` there
        for name, batch in (("device_padded", padded), ("device_complete", flat)):
            metric = tmx.NDCG(
                k=k, exponential_gain=exponential_gain, queries_complete_per_batch=name == "device_complete"
            )
            metric.update(**batch)
            values[name] = metric.compute()
    return values, flat


def _exact_linear_ndcg(preds, target, k=None):
    """NDCG with gain ``y`` of one query, in 60-digit decimals (no float64 overflow)."""
    from decimal import Decimal, localcontext

    with localcontext() as context:
        context.prec = 60

        def dcg(rels):
            return sum(Decimal(float(y)) * Decimal(2).ln() / Decimal(i + 2).ln() for i, y in enumerate(rels[:k]))

        ranked = [y for _, y in sorted(zip(preds.tolist(), target.tolist(), strict=True), key=lambda r: (-r[0], r[1]))]
        return float(dcg(ranked) / dcg(sorted(target.tolist(), reverse=True)))


@pytest.mark.parametrize("k", [None, 2])
def test_linear_gain_of_huge_relevance(k):
    """Bug: linear gains of float64 relevance near the top of its range (1.7e308) overflowed their query's DCG
    and IDCG sums: ``inf / inf`` gave ``nan`` (whole list) or ``y / inf`` gave 0 (``k=2``) for valid, finite input.

    Every path (flat and padded, class, complete queries, device) gives the exact value (60-digit decimals);
    queries of ordinary grades next to them keep theirs.
    """
    rng = np.random.default_rng(5)
    num_queries, width = 8, 5
    preds = torch.tensor(rng.random((num_queries, width)))
    scale = torch.tensor([1.7e308, 1e308, 2.0**513, 1e200, 1.0, 0.5, 1.7e308, 3.0], dtype=torch.float64).unsqueeze(1)
    target = torch.tensor(rng.integers(0, 3, (num_queries, width)), dtype=torch.float64) * (scale / 2)
    target[:, 0] = scale[:, 0]  # every query has a relevant candidate
    target[6, 1:] = torch.tensor(
        [1e-300, 2.0, 0.0, 1.7e308], dtype=torch.float64
    )  # tiny and ordinary grades next to a huge one
    expected = np.mean([_exact_linear_ndcg(p, t, k) for p, t in zip(preds, target, strict=True)])
    values, flat = _exponential_ndcg_on_every_path(preds, target, k, exponential_gain=False)
    ranking = tmx.RankingMetrics(ks=[k], metrics=["ndcg"])
    ranking.update(**flat)
    values["ranking_metrics"] = next(iter(ranking.compute().values()))
    for name, value in values.items():
        np.testing.assert_allclose(value.item(), expected, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("k", [None, 2])
def test_exponential_gain_of_grades_below_one_keeps_their_digits(k):
    """Bug: ``2**y - 1`` cancels below 1: grades of 1e-17 (or 1e-300) gained 0, so a query of only such grades
    had NDCG 0 where it is 0.62 (its gains are ``y ln 2`` to first order), and grades of 1e-10 kept ~6 digits.

    Reference: 60-digit decimals of ``2**y - 1``; every path (flat and padded, class, complete queries, device).
    """
    rng = np.random.default_rng(3)
    num_queries, width = 8, 5
    preds = torch.tensor(rng.random((num_queries, width)))
    scale = torch.tensor([1e-300, 1e-17, 1e-10, 1e-3, 0.5, 1.0, 1e-17, 1e-10], dtype=torch.float64).unsqueeze(1)
    target = torch.tensor(rng.integers(0, 4, (num_queries, width)), dtype=torch.float64) * scale
    target[:, 0] += scale[:, 0]  # every query has a relevant candidate
    target[6:, 1] = 3.0  # small grades next to a large one
    expected = np.mean([_exact_exponential_ndcg(p, t, k) for p, t in zip(preds, target, strict=True)])
    values, flat = _exponential_ndcg_on_every_path(preds, target, k)
    ranking = tmx.RankingMetrics(ks=[k], metrics=["ndcg"], exponential_gain=True)
    ranking.update(**flat)
    values["ranking_metrics"] = next(iter(ranking.compute().values()))
    for name, value in values.items():
        np.testing.assert_allclose(value.item(), expected, rtol=1e-12, err_msg=name)


def test_empty_target_actions_and_undefined():
    preds = torch.tensor([[0.3, 0.2], [0.9, 0.1]])
    target = torch.tensor([[0, 0], [0, 1]])
    assert tmf.mrr(preds, target).item() == 0.5
    assert tmf.mrr(preds, target, empty_target_action="zero").item() == 0.25
    assert tmf.mrr(preds, target, empty_target_action="one").item() == 0.75
    with pytest.raises(ValueError, match="no relevant candidate"):
        tmf.mrr(preds, target, empty_target_action="error")
    with pytest.warns(UndefinedMetricWarning, match="no query counted"):
        assert torch.isnan(tmf.ndcg(preds, torch.zeros_like(target)))
    # flat exact mode raises at compute; padded input (complete queries) at update, state unchanged
    metric = tmx.MRR(empty_target_action="error")
    metric.update(preds.reshape(-1), target.reshape(-1), indexes=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no relevant candidate"):
        metric.compute()
    metric = tmx.MRR(empty_target_action="error")
    metric.update(preds[1:], target[1:])
    with pytest.raises(ValueError, match="no relevant candidate"):
        metric.update(preds, target)
    assert metric.compute().item() == 0.5 and metric._update_count == 1


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("complete", [False, True])
def test_empty_target_error_names_the_query(device_path, complete):
    """``empty_target_action="error"`` names the offending query by its id (padded input: its row).

    It said "query number 1 of 3 in sorted id order", counting from 0 among the queries that hold a
    row: for flat rows the reader had to sort the ids to find it, and for padded rows after an
    all-padding row (no query) it pointed at the wrong row.
    """
    preds, target = torch.rand(4, 3), torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    # by hand: row 1 is all padding (no query); row 2 is the first query without a relevant candidate
    flat = {"indexes": torch.tensor([30, 30, 20, 20, 10]), "weights": torch.tensor([1.0, 1.0, 2.0, 2.0, 0.0])}
    flat_preds, flat_target = torch.rand(5), torch.tensor([1, 0, 0, 0, 0])  # id 10 has no relevant row but weighs 0
    with force_device_path(device_path):
        metric = tmx.NDCG(k=3, empty_target_action="error", queries_complete_per_batch=complete)
        with pytest.raises(ValueError, match=r"no relevant candidate .*: row 2 of the padded `preds`\."):
            metric.update(preds, target, mask=mask)
        with pytest.raises(ValueError, match=r"no relevant candidate .*: the query of id 20 \(`indexes`\)\."):
            metric.update(flat_preds, flat_target, **flat)
            metric.compute()  # exact mode: raised at compute
        with pytest.raises(ValueError, match=r": the query of id 20 \(`indexes`\)\."):
            tmf.ranking_metrics(flat_preds, flat_target, **flat, ks=(1,), metrics=("mrr",), empty_target_action="error")


def test_undefined_warning_names_the_requests_not_tasks():
    """The keys of one call share a single counted-query set: one warning naming them, no "task(s) [0, 1, ...]"."""
    preds, target = torch.tensor([[0.9, 0.8, 0.1]]), torch.zeros(1, 3)
    keys = r"RankingMetrics \(ndcg@1, ndcg@5, recall@1, recall@5\) is undefined: no query counted"
    options = {"ks": (1, 5), "metrics": ("ndcg", "recall")}
    for compute in (
        lambda: tmf.ranking_metrics(preds, target, **options),
        lambda: tmx.RankingMetrics(**options)(preds, target),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = compute()
        messages = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
        assert len(messages) == 1 and re.match(keys, messages[0]) and "task" not in messages[0], messages
        assert all(torch.isnan(v) for v in values.values())
    for single in (lambda: tmf.ndcg(preds, target, k=5), lambda: tmx.NDCG(k=5)(preds, target)):
        with pytest.warns(UndefinedMetricWarning, match=r"^NDCG is undefined: no query counted") as caught:
            assert torch.isnan(single())
        assert all("task" not in str(w.message) for w in caught)


def test_queries_complete_per_batch():
    data = flat_data(np.random.default_rng(6), shuffle=False, weights=True)
    idx = data["indexes"]
    cuts = [0, *(torch.nonzero(idx[1:] != idx[:-1]).reshape(-1) + 1).tolist()[::9], idx.numel()]
    exact = tmx.RankingMetrics(ks=(1, 5))
    session = tmx.RankingMetrics(ks=(1, 5), queries_complete_per_batch=True)
    assert all(isinstance(v, torch.Tensor) for v in session.metric_state.values())  # sums only
    for lo, hi in itertools.pairwise(cuts):
        batch = {key: value[lo:hi] for key, value in data.items()}
        exact.update(**batch)
        session.update(**batch)
    for key, value in exact.compute().items():
        torch.testing.assert_close(session.compute()[key], value, rtol=1e-12, atol=1e-12)
    # a query cut in two by a batch boundary counts as two queries in session mode
    metric = tmx.RecallAtK(k=1, queries_complete_per_batch=True)
    ids = torch.zeros(2, dtype=torch.long)
    metric.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), ids)
    metric.update(torch.tensor([0.8, 0.2]), torch.tensor([0, 1]), ids)
    assert metric.compute().item() == 0.5


_MERGE_FACTORIES = {
    "NDCG": lambda **kw: tmx.NDCG(k=3, **kw),
    "RankingMetrics": lambda **kw: tmx.RankingMetrics(ks=(1, 3), **kw),
    "Windowed(NDCG)": lambda **kw: tmx.Windowed(tmx.NDCG(k=3, **kw), window_size=100),
}


@pytest.mark.parametrize("name", sorted(_MERGE_FACTORIES))
@pytest.mark.parametrize("session_into_exact", [False, True])
def test_merge_state_refuses_the_other_mode_and_changes_nothing(name, session_into_exact):
    """Exact-mode samples merged into a ``queries_complete_per_batch`` metric were dropped without a word
    (its sum states share names with the exact mode's); the other direction failed inside TorchMetrics."""
    factory = _MERGE_FACTORIES[name]
    p1, y1, i1 = torch.tensor([0.9, 0.8, 0.1, 0.2]), torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    p2, y2, i2 = torch.tensor([0.9, 0.8]), torch.tensor([1, 0]), torch.tensor([5, 5])
    receiver, incoming = factory(queries_complete_per_batch=True), factory()
    if session_into_exact:
        receiver, incoming = incoming, receiver
    receiver.update(p1, y1, indexes=i1)
    incoming.update(p2, y2, indexes=i2)
    before = receiver.compute()
    target = receiver.lifetime if name.startswith("Windowed") else receiver
    states = {k: v.clone() if torch.is_tensor(v) else list(v) for k, v in target.metric_state.items()}
    source = incoming.lifetime if name.startswith("Windowed") else incoming
    for given in (incoming, dict(source.metric_state)):
        refused = (
            r"Cannot merge (into .*(unexpected|missing) \[.*another mode or setting|an? .*queries_complete_per_batch)"
        )
        with pytest.raises(ValueError, match=refused):
            receiver.merge_state(given)
        for key, value in target.metric_state.items():
            kept = states[key]
            assert torch.equal(value, kept) if torch.is_tensor(value) else len(value) == len(kept), key
    after = receiver.compute()
    for key in before if isinstance(before, dict) else [None]:
        got, was = (after[key], before[key]) if key is not None else (after, before)
        torch.testing.assert_close(got, was, equal_nan=True)


def test_merge_state_of_the_same_mode_gives_the_value_of_all_queries():
    """Both queries of ``a`` and the one of ``b``: the numpy reference's per-query mean (0.6309, 0.6309, 1)."""
    p1, y1, i1 = torch.tensor([0.9, 0.8, 0.1, 0.2]), torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    p2, y2, i2 = torch.tensor([0.9, 0.8]), torch.tensor([1, 0]), torch.tensor([5, 5])
    data = {"preds": torch.cat([p1, p2]), "target": torch.cat([y1, y2]), "indexes": torch.cat([i1, i2])}
    expected = single_ref("ndcg", 3)(H.to_numpy(data))
    for kw in ({}, {"queries_complete_per_batch": True}):
        a, b = tmx.NDCG(k=3, **kw), tmx.NDCG(k=3, **kw)
        a.update(p1, y1, indexes=i1)
        b.update(p2, y2, indexes=i2)
        a.merge_state(b)
        np.testing.assert_allclose(a.compute().item(), expected, rtol=1e-12)


def _mode_metric(qc, windowed, **kw):
    metric = tmx.NDCG(k=2, queries_complete_per_batch=qc, **kw)
    metric = tmx.Windowed(metric, window_size=100) if windowed else metric
    metric.persistent(True)
    return metric


def _mode_rows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three queries of two rows: scores, labels, query ids."""
    return (
        torch.tensor([0.9, 0.2, 0.6, 0.3, 0.5, 0.1]),
        torch.tensor([1, 0, 0, 1, 1, 0]),
        torch.tensor([0, 0, 1, 1, 2, 2]),
    )


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("metadata", [True, False])
@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("saved_qc", [False, True])
def test_a_checkpoint_of_the_other_mode_is_refused(saved_qc, windowed, metadata, strict):
    """Both modes keep their sums under the same names: an exact checkpoint loaded into a
    ``queries_complete_per_batch`` metric read its zero sums (nan, every sample dropped); the other
    way it started afresh as "an older format". Both are other settings: refused, strict or not,
    also from a plain dict without metadata (the states show the mode), and nothing changes."""
    p, y, q = _mode_rows()
    saved = _mode_metric(saved_qc, windowed)
    saved.update(p, y, indexes=q)
    state = saved.state_dict() if metadata else dict(saved.state_dict())
    p2, y2, q2 = torch.tensor([0.8, 0.1, 0.4]), torch.tensor([0, 1, 1]), torch.tensor([7, 7, 7])
    metric = _mode_metric(not saved_qc, windowed)
    metric.update(p2, y2, indexes=q2)
    match = rf"setting mismatch for queries_complete_per_batch: the checkpoint (was saved with|holds the states of) queries_complete_per_batch={saved_qc}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no starts-afresh note
        with pytest.raises(RuntimeError, match=match):
            metric.load_state_dict(state, strict=strict)
    expected = single_ref("ndcg", 2)({"preds": p2.numpy(), "target": y2.numpy(), "indexes": q2.numpy()})
    value = metric.compute()
    for got in value.values() if windowed else [value]:  # its own query only: nothing was loaded
        np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("qc", [False, True])
def test_a_checkpoint_of_the_same_mode_without_metadata_loads(qc, windowed):
    """The mode told by the states agrees: a plain dict of the same mode resumes (numpy reference)."""
    p, y, q = _mode_rows()
    saved = _mode_metric(qc, windowed)
    saved.update(p, y, indexes=q)
    metric = _mode_metric(qc, windowed)
    metric.load_state_dict(dict(saved.state_dict()))
    p2, y2, q2 = torch.tensor([0.8, 0.1, 0.4]), torch.tensor([0, 1, 1]), torch.tensor([7, 7, 7])
    metric.update(p2, y2, indexes=q2)
    data = {
        "preds": torch.cat([p, p2]).numpy(),
        "target": torch.cat([y, y2]).numpy(),
        "indexes": torch.cat([q, q2]).numpy(),
    }
    value = metric.compute()
    np.testing.assert_allclose(
        (value["lifetime"] if windowed else value).item(), single_ref("ndcg", 2)(data), rtol=1e-12
    )


def test_mixed_weighted_batches():
    data = flat_data(np.random.default_rng(8), weights=True)
    n = data["preds"].numel()
    half = n // 2
    data["weights"][:half] = 1.0
    first = {key: value[:half] for key, value in data.items() if key != "weights"}
    second = {key: value[half:] for key, value in data.items()}
    metric = tmx.NDCG(k=3)
    metric.update(**first)
    metric.update(**second)
    np.testing.assert_allclose(metric.compute().item(), single_ref("ndcg", 3)(H.to_numpy(data)), rtol=1e-9)


def _held_bytes(chunks):
    """Bytes of the distinct storages behind a list state's chunks."""
    return sum({c.untyped_storage().data_ptr(): c.untyped_storage().nbytes() for c in chunks}.values())


@pytest.mark.parametrize("call", ["update", "forward"])
def test_small_batches_keep_few_chunks_of_the_rows_bytes(call):
    """Bug: one chunk per list and update, never joined: 126 B per row (16 documented), and compute
    looped over every update's chunks (2.1 s after 50,000 updates against 0.18 s for one update).

    1,000 updates of one 20-row query, then 1,000 one-row updates whose queries span batches: the
    four lists stay aligned and short and hold 16 bytes per row (float32 scores, int32 relevance,
    int64 ids, unit weights of one element), through ``forward`` too (it kept int64 relevance: 24
    bytes per row, its update skipping the validation that reads the relevance's bound); the value
    is the reference's (NumPy per query).
    """
    rng = np.random.default_rng(11)
    n = 1000 * 20 + 1000
    preds = torch.from_numpy(rng.random(n).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 3, n) * (rng.random(n) < 0.3))
    indexes = torch.cat([torch.arange(1000).repeat_interleave(20), 1000 + torch.arange(1000) // 30])
    bounds = [*range(0, 1000 * 20, 20), *range(1000 * 20, n + 1)]
    metric = tmx.NDCG(k=10)
    for lo, hi in itertools.pairwise(bounds):
        batch = preds[lo:hi], target[lo:hi]
        if call == "update":
            metric.update(*batch, indexes=indexes[lo:hi])
        else:
            with warnings.catch_warnings():  # a batch's own value is undefined without relevant rows
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                metric(*batch, indexes=indexes[lo:hi])
    lists = [metric.preds, metric.target, metric.indexes, metric.weights]
    assert len({len(chunks) for chunks in lists}) == 1 and len(metric.preds) <= 100
    assert [sum(c.numel() for c in chunks) for chunks in lists] == [n] * 4
    assert sum(_held_bytes(chunks) for chunks in lists) <= 16 * n + 4
    data = {"preds": preds.numpy(), "target": target.numpy(), "indexes": indexes.numpy()}
    np.testing.assert_allclose(metric.compute().item(), single_ref("ndcg", 10)(data), rtol=1e-9)


@pytest.mark.parametrize(
    ("make", "key", "reference"),
    [
        (lambda: tmx.NDCG(k=10), None, single_ref("ndcg", 10)),
        (lambda: tmx.RankingMetrics(ks=(3, None)), "ndcg@3", single_ref("ndcg", 3)),
        (tmx.MAP, None, single_ref("map", None)),
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_forward_keeps_the_rows_update_keeps(make, key, reference, masked):
    """Bug: ``forward`` kept int64 relevance (8 bytes per row) where ``update`` keeps int32 (4), its
    update trusting the batch validated up front and so not knowing the relevance's bound.

    Every list state holds the same dtypes, shapes and values either way, and the value is the
    reference's (NumPy per query) on the kept part of the rows.
    """
    rng = np.random.default_rng(21)
    batches = [flat_data(rng, num_queries=30, grades=4) for _ in range(3)]
    mask = [torch.from_numpy(rng.random(b["preds"].numel()) < 0.8) if masked else None for b in batches]
    by_update, by_forward = make(), make()
    with warnings.catch_warnings():  # a batch's own value may be undefined without relevant rows
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch, keep in zip(batches, mask, strict=True):
            by_update.update(**batch, mask=keep)
            by_forward(**batch, mask=keep)
    for name in ("preds", "target", "indexes", "weights"):
        kept, forwarded = getattr(by_update, name), getattr(by_forward, name)
        assert [(c.dtype, c.shape, c.stride()) for c in forwarded] == [(c.dtype, c.shape, c.stride()) for c in kept]
        torch.testing.assert_close(torch.cat(forwarded), torch.cat(kept), rtol=0, atol=0)
    assert all(chunk.dtype == torch.int32 for chunk in by_forward.target)
    rows = {name: torch.cat([b[name] for b in batches]) for name in ("preds", "target", "indexes")}
    if masked:
        keep = torch.cat(mask)
        rows = {name: value[keep] for name, value in rows.items()}
    value = by_forward.compute()
    value = value[key] if key else value
    np.testing.assert_allclose(value.item(), reference(H.to_numpy(rows)), rtol=1e-9)


def test_collection_compute_groups_never_merge_different_settings():
    """Settings-specific sum states keep compute groups apart even when the first batch scores 1 everywhere."""
    from torchmetrics import MetricCollection

    def collection():
        return MetricCollection(
            {"ndcg": tmx.NDCG(k=5), "mrr": tmx.MRR(k=5), "recall": tmx.RecallAtK(k=5), "ndcg_again": tmx.NDCG(k=5)},
            compute_groups=True,
        )

    perfect = {
        "preds": torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1]]),
        "target": torch.tensor([[1, 0, 0], [1, 0, 0]]),
    }
    mixed = {"preds": torch.tensor([[0.9, 0.7, 0.2], [0.1, 0.3, 0.8]]), "target": torch.tensor([[0, 0, 1], [1, 1, 0]])}
    for batches in ([perfect, mixed], [flat_data(np.random.default_rng(9))]):
        metrics = collection()
        for batch in batches:
            metrics.update(**batch)
        groups = sorted(sorted(group) for group in metrics.compute_groups.values())
        assert groups == [["mrr"], ["ndcg", "ndcg_again"], ["recall"]]
        out = metrics.compute()
        for key, metric in (("ndcg", tmx.NDCG(k=5)), ("mrr", tmx.MRR(k=5)), ("recall", tmx.RecallAtK(k=5))):
            for batch in batches:
                metric.update(**batch)
            torch.testing.assert_close(out[key], metric.compute())
            torch.testing.assert_close(out["ndcg_again"], out["ndcg"])


def test_collection_compute_groups_keep_padding_values_apart():
    """B1: `padding_value` changes which slots are candidates, so it is part of the sums state's name."""
    from torchmetrics import MetricCollection

    batches = [
        {"preds": torch.tensor([[0.9, 0.1, 0.5]]), "target": torch.tensor([[1, 0, 1]])},  # no slot is padding
        # the padded slot outranks the relevant candidate unless dropped (a relevant one would be refused)
        {"preds": torch.tensor([[-10.0, -20.0, 0.5]]), "target": torch.tensor([[0, 1, 0]])},
    ]
    metrics = MetricCollection(
        {
            "plain": tmx.NDCG(k=2),
            "pad": tmx.NDCG(k=2, padding_value=-10.0),
            "pad_int": tmx.NDCG(k=2, padding_value=-10),
        },
        compute_groups=True,
    )
    for batch in batches:
        metrics.update(**batch)
    assert sorted(sorted(g) for g in metrics.compute_groups.values()) == [["pad", "pad_int"], ["plain"]]
    out = metrics.compute()
    numpy = [{key: value.numpy() for key, value in batch.items()} for batch in batches]
    plain = np.concatenate([b["preds"] for b in numpy]), np.concatenate([b["target"] for b in numpy])
    ref_plain = single_ref("ndcg", 2)({"preds": plain[0], "target": plain[1]})
    ref_pad = single_ref("ndcg", 2)({"preds": plain[0], "target": plain[1], "_padding_value": -10.0})
    np.testing.assert_allclose(out["plain"].item(), ref_plain, rtol=1e-12)
    np.testing.assert_allclose(out["pad"].item(), ref_pad, rtol=1e-12)
    assert abs(ref_plain - ref_pad) > 0.1


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize(
    "build",
    [
        lambda v: tmx.RecallAtK(k=1, padding_value=-1.0, validate_args=v),
        lambda v: tmx.NDCG(padding_value=-1.0, queries_complete_per_batch=True, validate_args=v),
        lambda v: tmx.RankingMetrics(ks=(1,), padding_value=-1.0, validate_args=v),
    ],
)
def test_padding_value_with_flat_rows_is_refused_not_ignored(build, validate):
    """Flat rows have no padding slots: rows scored -1.0 were ranked as candidates (recall@1 0.25 where a
    caller dropping them expected 1.0), the option neither applied nor refused. State left as it was."""
    preds = torch.tensor([-1.0, -1.0, -1.0, 0.5])
    target, indexes = torch.tensor([1, 1, 1, 1]), torch.tensor([0, 0, 0, 0])
    metric = build(validate)
    # padded input: the option applies (a relevant padded slot is refused when validating, dropped otherwise)
    metric.update(torch.tensor([[0.9, -1.0]]), torch.tensor([[1, 0 if validate else 1]]))
    before = {
        key: value.clone() if isinstance(value, torch.Tensor) else list(value)
        for key, value in metric.metric_state.items()
    }
    with pytest.raises(ValueError, match=r"padded \(queries, candidates\) `preds` with `padding_value=-1.0`.*flat"):
        metric.update(preds, target, indexes=indexes)
    for key, value in metric.metric_state.items():
        assert torch.equal(value, before[key]) if isinstance(value, torch.Tensor) else value == before[key], key
    value = metric.compute()
    value = value if isinstance(value, torch.Tensor) else next(iter(value.values()))
    assert value.item() == 1.0  # the padded slot was dropped: one relevant candidate, ranked first
    functional = partial(tmf.recall_at_k, k=1, padding_value=-1.0, validate_args=validate)
    with pytest.raises(ValueError, match="flat rows have no padding slots"):
        functional(preds, target, indexes)
    with pytest.raises(ValueError, match="flat rows have no padding slots"):
        tmf.ranking_metrics(preds, target, indexes, ks=(1,), padding_value=-1.0, validate_args=validate)


def test_a_version_1_plain_sums_name_is_the_no_padding_state():
    """Before 4c295bc the sums state had no padding tag for any padding value; from then until version 2 (884756f)
    the plain name meant no padding value. The two cannot be told apart, so the plain name is read as no padding's
    (it was read as -1.5's, and a checkpoint without padding gave wrong values there); the note says how to load a
    pre-4c295bc checkpoint of this padding value."""
    metric = tmx.NDCG(k=2, padding_value=-1.5)
    metric.persistent(True)
    metric.update(torch.tensor([[0.9, 0.1, -1.5]]), torch.tensor([[0, 1, 0]]))
    state = metric.state_dict()
    old = {key.replace("_padm1p5", ""): value for key, value in state.items()}  # as saved before the tag
    restored = tmx.NDCG(k=2, padding_value=-1.5)
    restored.persistent(True)
    with pytest.raises(RuntimeError, match=r"renamed: `value_sum_ndcg2_skip` to `value_sum_ndcg2_skip_padm1p5`"):
        restored.load_state_dict(old)
    restored = tmx.NDCG(k=2, padding_value=-1.5)
    restored.persistent(True)
    restored.load_state_dict(state)  # the key renamed as the note says: the same checkpoint loads
    ref = single_ref("ndcg", 2)(
        {"preds": np.array([[0.9, 0.1, -1.5]]), "target": np.array([[0, 1, 0]]), "_padding_value": -1.5}
    )
    np.testing.assert_allclose(restored.compute().item(), ref, rtol=1e-12)


def _renamed_keys(state, old, new):
    """``state`` with ``old`` replaced by ``new`` in its keys and in a window ring's state names."""
    out = {}
    for key, value in state.items():
        if key.endswith("_extra_state") and isinstance(value, dict):
            value = {
                p: {n.replace(old, new): v for n, v in v.items()} if p in ("rings", "back") else v
                for p, v in value.items()
            }
        out[key.replace(old, new)] = value
    return out


@pytest.mark.parametrize("windowed", [False, True])
def test_padding_value_checkpoint_of_the_earlier_spelling_loads(windowed):
    """Versions 4c295bc..1ceb5f4 named the state after repr(float(padding_value)) (`..._padm1p0` for -1.0); the
    shared setting tags write `..._padm1`: the same settings' checkpoint was refused (strict=False: wrong values)."""
    g = torch.Generator().manual_seed(5)
    preds, target = torch.rand(8, 4, generator=g), torch.randint(0, 3, (8, 4), generator=g)
    preds[::3, -1] = -1.0  # padded slots
    preds[1::3, -2:] = -1.0
    target[preds == -1.0] = 0  # no relevant candidate in a padded slot (refused)

    def build():
        metric = tmx.NDCG(k=3, padding_value=-1.0)
        return tmx.Windowed(metric, window_size=100) if windowed else metric

    saved = build()
    saved.persistent(True)
    saved.update(preds[:4], target[:4])
    state = saved.state_dict()
    assert any(key.endswith("value_sum_ndcg3_skip_padm1") for key in state)
    old = _renamed_keys(state, "_padm1", "_padm1p0")  # as those versions wrote it, without metadata (version 1)
    resumed = build()
    resumed.persistent(True)
    result = resumed.load_state_dict(old)  # strict: the former spelling is read as this setting's state
    assert not result.missing_keys and not result.unexpected_keys
    resumed.update(preds[4:], target[4:])
    value = resumed.compute()["lifetime"] if windowed else resumed.compute()
    expected = single_ref("ndcg", 3)({"preds": preds.numpy(), "target": target.numpy(), "_padding_value": -1.0})
    np.testing.assert_allclose(value.item(), expected, rtol=1e-12)


def test_multiclass_compute_groups_keep_cutoffs_apart():
    """B2: the hit sum is named after k and num_classes; the first batch (a hit at every k) no longer merges them."""
    from torchmetrics import MetricCollection

    data = multiclass_data(np.random.default_rng(21), n=50, c=4, weights=True)
    first = {"preds": torch.tensor([[0.9, 0.05, 0.03, 0.02]]), "target": torch.tensor([0])}
    metrics = MetricCollection(
        {f"r{k}": tmx.MulticlassRecallAtK(k=k, num_classes=4) for k in (1, 2, 3)}, compute_groups=True
    )
    metrics.update(**first)
    metrics.update(**data)
    assert len(metrics.compute_groups) == 3
    out = metrics.compute()
    both = {
        "preds": np.concatenate([first["preds"].numpy(), data["preds"].numpy()]),
        "target": np.concatenate([first["target"].numpy(), data["target"].numpy()]),
        "weights": np.concatenate([[1.0], data["weights"].numpy()]),
    }
    for k in (1, 2, 3):
        np.testing.assert_allclose(out[f"r{k}"].item(), ref_multiclass(both, k), rtol=1e-12)


def test_multiclass_checkpoint_with_the_former_hit_sum_key_loads():
    data = multiclass_data(np.random.default_rng(22), n=30, c=5, weights=True)
    metric = tmx.MulticlassRecallAtK(k=2, num_classes=5)
    metric.persistent(True)
    metric.update(**data)
    state = metric.state_dict()
    assert set(state) == {"hit_sum_k2_of5", "weight_sum"}
    old = {"hit_sum" if key.startswith("hit_sum") else key: value for key, value in state.items()}
    restored = tmx.MulticlassRecallAtK(k=2, num_classes=5)
    restored.persistent(True)
    restored.load_state_dict(old)  # strict: the old key is mapped, nothing is unexpected
    np.testing.assert_allclose(restored.compute().item(), ref_multiclass(H.to_numpy(data), 2), rtol=1e-12)
    windowed = tmx.Windowed(tmx.MulticlassRecallAtK(k=2, num_classes=5), window_size=100)
    windowed.update(**data)
    saved = windowed.state_dict()
    renamed = {key.replace("hit_sum_k2_of5", "hit_sum"): value for key, value in saved.items()}
    again = tmx.Windowed(tmx.MulticlassRecallAtK(k=2, num_classes=5), window_size=100)
    again.load_state_dict(renamed)
    for part, value in again.compute().items():
        np.testing.assert_allclose(value.item(), ref_multiclass(H.to_numpy(data), 2), rtol=1e-12, err_msg=part)


def _recall_at_k_numpy(preds: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Unweighted multiclass recall@k: the true class's rank (classes scoring at least as high ahead) below k."""
    scores, labels = preds.double().numpy(), target.numpy()
    true = scores[np.arange(len(labels)), labels]
    rank = (scores >= true[:, None]).sum(axis=1) - 1
    return float(np.mean(rank < k))


def test_multiclass_checkpoint_of_another_k_refused_strictly_leaves_the_metric_as_it_was():
    """A strict load of a k=5 checkpoint into k=10 reset the metric before nn.Module raised for the missing keys:
    a refused load now changes nothing (states, update count, cached value) and the error names both k values.
    strict=False resumes nothing of this metric: it starts afresh (documented), with the same note as a warning."""
    g = torch.Generator().manual_seed(31)
    batches = [(torch.rand(40, 20, generator=g), torch.randint(0, 20, (40,), generator=g)) for _ in range(4)]
    saved = tmx.MulticlassRecallAtK(k=5, num_classes=20)
    saved.persistent(True)
    saved.update(*batches[0])
    checkpoint = saved.state_dict()
    note = (
        r"a checkpoint of other settings \(saved with k=5, num_classes=20; this metric has k=10, num_classes=20\).*"
        r"strict=True refuses, leaving the metric as it was; strict=False resumes the rest of it and the metric "
        r"starts afresh"
    )
    metric = tmx.MulticlassRecallAtK(k=10, num_classes=20)
    metric.persistent(True)
    metric.update(*batches[1])
    before = metric.compute()
    assert before.item() == pytest.approx(_recall_at_k_numpy(*batches[1], 10), abs=1e-12)
    with pytest.raises(RuntimeError, match=r"(?s)Missing key\(s\).*hit_sum_k10_of20.*" + note):
        metric.load_state_dict(checkpoint)
    assert metric.update_count == 1 and metric.compute().item() == before.item()
    metric.update(*batches[2])  # the states go on from where they were
    both = (torch.cat([batches[1][0], batches[2][0]]), torch.cat([batches[1][1], batches[2][1]]))
    assert metric.compute().item() == pytest.approx(_recall_at_k_numpy(*both, 10), abs=1e-12)
    # the same checkpoint with strict=False: the note as a warning, nothing of it read, the metric afresh
    with pytest.warns(UserWarning, match=note):
        result = metric.load_state_dict(checkpoint, strict=False)
    assert sorted(result.missing_keys) == ["hit_sum_k10_of20", "weight_sum"]
    assert result.unexpected_keys == ["hit_sum_k5_of20"]
    assert metric.update_count == 0
    metric.update(*batches[3])
    assert metric.compute().item() == pytest.approx(_recall_at_k_numpy(*batches[3], 10), abs=1e-12)
    # with a window: a ring of the other k's states is refused, strict or not, and leaves it as it was too
    windowed = tmx.Windowed(tmx.MulticlassRecallAtK(k=10, num_classes=20), window_size=100)
    windowed.update(*batches[1])
    values = windowed.compute()
    other = tmx.Windowed(tmx.MulticlassRecallAtK(k=5, num_classes=20), window_size=100)
    other.update(*batches[0])
    for strict in (True, False):
        with pytest.raises(RuntimeError):
            windowed.load_state_dict(other.state_dict(), strict=strict)
        assert {part: v.item() for part, v in windowed.compute().items()} == {
            part: v.item() for part, v in values.items()
        }


def test_mixed_row_dtypes_across_batches_are_cast_chunk_by_chunk():
    """B3: int64 relevance/weights kept next to float16 chunks are not promoted to float16 (inf, nan)."""
    ndcg = tmx.NDCG()
    first = {"preds": torch.tensor([0.9, 0.1]), "target": torch.tensor([1.0, 0.0], dtype=torch.float16)}
    second = {"preds": torch.tensor([0.9, 0.5, 0.1]), "target": torch.tensor([1, 70000, 0])}
    ndcg.update(**first, indexes=torch.tensor([0, 0]))
    ndcg.update(**second, indexes=torch.tensor([1, 1, 1]))
    rows = {
        "preds": np.array([0.9, 0.1, 0.9, 0.5, 0.1]),
        "target": np.array([1, 0, 1, 70000, 0]),
        "indexes": np.array([0, 0, 1, 1, 1]),
    }
    np.testing.assert_allclose(ndcg.compute().item(), single_ref("ndcg", None)(rows), rtol=1e-12)
    assert ndcg.sync_states()["target"].dtype == torch.float64  # what a DDP gather sends

    mrr = tmx.MRR()
    half = torch.float16
    mrr.update(torch.tensor([0.9, 0.1], dtype=half), torch.tensor([0, 1]), torch.tensor([0, 0]))
    mrr.update(
        torch.tensor([0.9, 0.5], dtype=half),
        torch.tensor([1, 0]),
        torch.tensor([1, 1]),
        weights=torch.tensor([10**5] * 2),
    )
    rows = {
        "preds": torch.tensor([0.9, 0.1, 0.9, 0.5], dtype=half).double().numpy(),
        "target": np.array([0, 1, 1, 0]),
        "indexes": np.array([0, 0, 1, 1]),
        "weights": np.array([1.0, 1.0, 1e5, 1e5]),
    }
    np.testing.assert_allclose(mrr.compute().item(), single_ref("mrr", None)(rows), rtol=1e-12)
    assert mrr.sync_states()["weights"].tolist() == [1.0, 1.0, 1e5, 1e5]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_ids_and_relevance_are_accepted(dtype):
    """B4: unsigned ids (compared as their int64 conversion, a bijection) and relevance, as the functions take them."""
    rng = np.random.default_rng(23)
    data = flat_data(rng, num_queries=40, weights=True)
    top = {torch.uint8: 2**8, torch.uint16: 2**16, torch.uint32: 2**32, torch.uint64: 2**64}[dtype]
    ids = np.unique(H.to_numpy(data)["indexes"], return_inverse=True)[1]
    wide = (np.uint64(top - 1) - ids.astype(np.uint64)) if top > 2**8 else ids.astype(np.uint64)  # near the top
    unsigned = {
        **data,
        "indexes": torch.from_numpy(wide.astype(np.uint64)).to(dtype),
        "target": data["target"].to(dtype),
    }
    n = data["preds"].numel()
    cut = n // 2
    metric = tmx.RankingMetrics(ks=(1, 3))
    metric.update(**{key: value[:cut] for key, value in unsigned.items()})
    signed_second = {key: value[cut:] for key, value in unsigned.items()}
    signed_second["indexes"] = signed_second["indexes"].to(torch.int64)  # int64 ids next to unsigned ones
    metric.update(**signed_second)
    out = metric.compute()
    ref = dict_ref((1, 3))({**H.to_numpy(data), "indexes": ids})
    functional = tmf.ranking_metrics(**unsigned, ks=(1, 3))
    for key, value in ref.items():
        np.testing.assert_allclose(out[key].item(), value, rtol=1e-9, err_msg=key)
        np.testing.assert_allclose(functional[key].item(), value, rtol=1e-9, err_msg=key)
    states = metric.sync_states()
    assert states["indexes"].dtype == torch.int64 and states["target"].dtype == torch.float64


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_weights_are_accepted(dtype, device_path):
    """uint16/32/64 query weights raised NotImplementedError (no min/max kernel for them on the CPU).

    The weights reach the top of each dtype (uint64 ones past 2**63, read as float64, not negative).
    """
    rng = np.random.default_rng(29)
    data = flat_data(rng, num_queries=40)
    query = np.unique(data["indexes"].numpy(), return_inverse=True)[1]
    _, qw = H.unsigned_weights(rng, dtype, (int(query.max()) + 1,))
    # each row's weight made from NumPy (PyTorch 2.3 and 2.4 cannot index uint16/32/64 tensors)
    weighted = {**data, "weights": H.unsigned(qw[query], dtype)}
    ref = dict_ref((1, 3))({**H.to_numpy(data), "weights": qw[query]})
    with force_device_path(device_path):
        metric = tmx.RankingMetrics(ks=(1, 3))
        metric.update(**weighted)
        out = metric.compute()
        functional = tmf.ranking_metrics(**weighted, ks=(1, 3))
        ndcg = tmx.NDCG(k=3)
        ndcg.update(**weighted)
    for key, value in ref.items():
        np.testing.assert_allclose(out[key].item(), value, rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(functional[key].item(), value, rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(ndcg.compute().item(), ref["ndcg@3"], rtol=1e-12)


# ----------------------------------------------------------------------------- bad input

_P = torch.tensor([0.1, 0.2, 0.3])
_T = torch.tensor([0, 1, 0])
_I = torch.tensor([0, 0, 1])
BAD_INPUTS = [
    ({"preds": [0.1], "target": _T, "indexes": _I}, TypeError, "`preds` to be a torch.Tensor"),
    ({"preds": torch.tensor([1, 2, 3]), "target": _T, "indexes": _I}, TypeError, "floating point"),
    ({"preds": _P.reshape(1, 1, 3), "target": _T.reshape(1, 1, 3)}, ValueError, "shape"),
    ({"preds": _P, "target": _T[:2], "indexes": _I}, ValueError, "`target` of shape"),
    # flat rows without ids: said only "got None", not how to give ids or the one-query padded form
    (
        {"preds": _P, "target": _T},
        ValueError,
        r"^Expected `indexes` \(query id of every row\) for flat \(N,\) `preds`, got None: pass `indexes=` \(3,\) "
        r"integer query ids, or padded \(queries, candidates\) rows, which need none \(one query: "
        r"`preds\.unsqueeze\(0\)` and `target\.unsqueeze\(0\)`, shape \(1, 3\)\)\.$",
    ),
    ({"preds": _P, "target": _T, "indexes": _I.float()}, TypeError, "`indexes` to be an integer"),
    ({"preds": _P, "target": _T, "indexes": _I[:2]}, ValueError, "`indexes` of shape"),
    ({"preds": _P.reshape(1, 3), "target": _T.reshape(1, 3), "indexes": _I}, ValueError, "indexes=None"),
    # a model head's (N, 1) scores with flat query ids: said only "indexes=None", as if padded input were meant
    (
        {"preds": _P.reshape(3, 1), "target": _T.reshape(3, 1), "indexes": _I},
        ValueError,
        r"got `indexes` of shape \(3,\); for flat rows pass `preds\.squeeze\(-1\)` \(and `target` alike\), shape \(3,\)\.$",
    ),
    ({"preds": _P, "target": _T, "indexes": _I, "mask": torch.ones(3)}, TypeError, "`mask` to be a bool"),
    (
        {"preds": _P, "target": _T, "indexes": _I, "mask": torch.ones(2, dtype=torch.bool)},
        ValueError,
        "`mask` of",
    ),
    ({"preds": torch.tensor([0.1, float("nan"), 0.3]), "target": _T, "indexes": _I}, ValueError, "NaN"),
    ({"preds": _P, "target": torch.tensor([0, -1, 0]), "indexes": _I}, ValueError, "relevance >= 0"),
    (
        {"preds": _P, "target": torch.tensor([0, float("inf"), 0]), "indexes": _I},
        ValueError,
        "relevance >= 0",
    ),
    (
        {"preds": _P, "target": _T, "indexes": _I, "weights": torch.tensor([1.0, -1.0, 1.0])},
        ValueError,
        "`weights` to be finite and non-negative",
    ),
    ({"preds": _P, "target": _T, "indexes": _I, "weights": torch.ones(2)}, ValueError, "`weights` of shape"),
    (
        {"preds": _P.reshape(1, 3), "target": _T.reshape(1, 3), "weights": torch.ones(3)},
        ValueError,
        r"`weights` of shape \(1,\)",
    ),
    # per-candidate weights for padded input: (Q,) was called "that of `preds`", which is (Q, L)
    (
        {"preds": _P.reshape(1, 3), "target": _T.reshape(1, 3), "weights": torch.ones(1, 3)},
        ValueError,
        r"^Expected `weights` of shape \(1,\) \(one weight per query, a row of `preds` \(1, 3\)\), got \(1, 3\)\.$",
    ),
    (
        {"preds": _P, "target": _T, "indexes": _I, "weights": torch.ones(3, 1)},
        ValueError,
        r"^Expected `weights` of shape \(3,\) \(that of `preds`\), got \(3, 1\)\.$",
    ),
]


@pytest.mark.parametrize(("bad", "exc", "match"), BAD_INPUTS)
def test_rejects_bad_input(bad, exc, match):
    H.check_rejects(CASES["flat-all-w"], bad, exc, match)
    H.check_rejects(CASES["padded-ndcg@5"], bad, exc, match)
    fn = partial(tmf.ndcg, **bad)
    with pytest.raises(exc, match=match):
        fn()


BAD_MULTICLASS = [
    ({"preds": torch.rand(3, 5), "target": torch.tensor([0, 1, 2])}, ValueError, "num_classes=6"),
    ({"preds": torch.rand(3, 6), "target": torch.tensor([0.0, 1.0, 2.0])}, TypeError, "integer tensor"),
    ({"preds": torch.rand(3, 6), "target": torch.tensor([0, 1])}, ValueError, r"`target` of shape \(3,\)"),
    ({"preds": torch.rand(3, 6), "target": torch.tensor([0, 1, 6])}, ValueError, "class ids in"),
    ({"preds": torch.rand(3, 6).long(), "target": torch.tensor([0, 1, 2])}, TypeError, "floating point"),
    ({"preds": torch.full((3, 6), float("nan")), "target": torch.tensor([0, 1, 2])}, ValueError, "NaN"),
    (
        {"preds": torch.rand(3, 6), "target": torch.tensor([0, 1, 2]), "weights": -torch.ones(3)},
        ValueError,
        "non-negative",
    ),
    (
        {"preds": torch.rand(3, 6), "target": torch.tensor([0, 1, 2]), "weights": torch.ones(2)},
        ValueError,
        r"`weights` of shape \(3,\)",
    ),
]


@pytest.mark.parametrize(("bad", "exc", "match"), BAD_MULTICLASS)
def test_multiclass_rejects_bad_input(bad, exc, match):
    H.check_rejects(CASES["multiclass@3-ties-w"], bad, exc, match)


BAD_ARGS = [
    (partial(tmx.NDCG, k=0), "positive integer"),
    (partial(tmx.RecallAtK, k=None), "positive integer"),
    (partial(tmx.PrecisionAtK, k=2.5), "positive integer"),
    (partial(tmx.MRR, empty_target_action="ignore"), "empty_target_action"),
    (partial(tmx.MAP, padding_value="x"), "padding_value"),
    (partial(tmx.NDCG, exponential_gain=1), "exponential_gain"),
    (partial(tmx.NDCG, report_as_loss=None), "report_as_loss"),
    (partial(tmx.HitRate, k=2, queries_complete_per_batch="yes"), "queries_complete_per_batch"),
    (partial(tmx.RankingMetrics, metrics=("ndcg", "auc")), "metrics"),
    # the name is in the list the error gives: it must say that a bare string is the mistake
    (partial(tmx.RankingMetrics, metrics="ndcg"), r"got 'ndcg' \(a sequence of them: metrics=\('ndcg',\)\)\.$"),
    (partial(tmx.RankingMetrics, ks=10), r"got 10 \(write ks=\(10,\)\)\.$"),
    # None is a cutoff inside `ks` (the whole list), not a value of `ks`: the error must not read as if it were
    (
        partial(tmx.RankingMetrics, ks=None),
        r"each a positive integer or None for the whole list, got None \(for the "
        r"whole list alone write ks=\(None,\)\)\.$",
    ),
    (partial(tmf.ranking_metrics, torch.rand(1, 3), torch.ones(1, 3), ks=None), r"write ks=\(None,\)"),
    (partial(tmx.MulticlassRecallAtK, k=0, num_classes=6), "positive integer"),
    (partial(tmx.MulticlassRecallAtK, k=2**63, num_classes=6), "below 2"),
    (partial(tmx.MulticlassRecallAtK, k=1, num_classes=1), "num_classes"),
    # a cutoff as a tensor must be a 0-dim integer one (an item of torch.tensor([1, 2]))
    (partial(tmx.NDCG, k=torch.tensor(2.0)), r"Expected `k` to be a positive integer or None, got tensor\(2\.\)"),
    (partial(tmx.RecallAtK, k=torch.tensor([2])), r"Expected `k` to be a positive integer, got tensor\(\[2\]\)"),
    (partial(tmx.HitRate, k=torch.tensor(True)), r"Expected `k` to be a positive integer, got tensor\(True\)"),
    (partial(tmx.RankingMetrics, ks=torch.tensor([0, 2])), r"Expected `k` to be a positive integer or None"),
]


@pytest.mark.parametrize(("factory", "match"), BAD_ARGS)
def test_rejects_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "ks",
    [
        torch.tensor([1, 2]),
        np.array([1, 2]),
        (torch.tensor(1), np.int32(2)),
        iter([1, 2]),  # read once, for the requests and for `.ks` alike
    ],
    ids=["tensor", "numpy", "scalars", "iterator"],
)
def test_cutoffs_from_tensors_and_numpy_are_plain_ints(ks):
    """The items of a tensor or a NumPy array of cutoffs are cutoffs (a tensor's used to be refused as
    "got tensor(1)"), and what is kept is plain Python: ints in `.ks`, strs in `.metrics`."""
    metric = tmx.RankingMetrics(ks=ks, metrics=np.array(["recall", "mrr"]))
    assert metric.ks == (1, 2) and all(type(k) is int for k in metric.ks)
    assert metric.metrics == ("recall", "mrr") and all(type(m) is str for m in metric.metrics)
    metric.update(torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    # by hand: query 0 ranks its relevant items 2nd and 3rd (2 relevant), query 1 its one relevant item 3rd
    expected = {"recall@1": 0.0, "recall@2": (1 / 2 + 0) / 2, "mrr@1": 0.0, "mrr@2": (1 / 2 + 0) / 2}
    assert {key: value.item() for key, value in metric.compute().items()} == expected
    for build in (tmx.NDCG, tmx.MRR, tmx.MAP, tmx.RecallAtK, tmx.PrecisionAtK, tmx.HitRate):
        for k in (torch.tensor(3), torch.tensor(3, dtype=torch.uint8), np.int64(3)):
            assert type(build(k=k).k) is int and build(k=k).k == 3
    assert type(tmx.MulticlassRecallAtK(k=torch.tensor(2), num_classes=np.int64(5)).k) is int


@pytest.mark.parametrize("k", [2**63, 2**64, np.uint64(2**63)])
def test_cutoffs_beyond_int64_are_rejected_not_wrapped(k):
    """A cutoff of 2**63 or more used to wrap in the int64 comparisons: MRR/recall/hit rate read 0,
    NDCG crashed. Any cutoff below 2**63 at least every query's length is the whole list (k=None)."""
    p, t, i = torch.tensor([0.5, 0.4, 0.3, 0.2]), torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    whole = {"mrr": 0.75, "hit_rate": 1.0, "recall_at_k": 1.0, "ndcg": (1 / np.log2(3) + 1) / 2}
    for name, value in whole.items():
        fn = getattr(tmf, name)
        assert fn(p, t, i, k=2**63 - 1).item() == pytest.approx(value, rel=1e-15)
        with pytest.raises(ValueError, match=r"below 2\*\*63"):
            fn(p, t, i, k=k)
    for call in (lambda: tmx.RecallAtK(k), lambda: tmx.MRR(k=k), lambda: tmx.RankingMetrics(ks=(k,))):
        with pytest.raises(ValueError, match=r"below 2\*\*63"):
            call()


@pytest.mark.parametrize(
    "factory",
    [
        partial(tmx.NDCG, k=10),
        tmx.RankingMetrics,
        partial(tmx.MulticlassRecallAtK, k=1, num_classes=3),
        Distribution,
    ],
)
def test_num_tasks_is_refused_with_what_to_do(factory):
    """Ranking metrics have no task dimension: `num_tasks` (even 1) used to fail on a private base class."""
    for num_tasks in (1, 2):
        with pytest.raises(TypeError, match=r"has no task dimension.*build one .* per task"):
            factory(num_tasks=num_tasks)


def test_weights_given_for_some_rows_only_is_an_error_at_compute():
    metric = tmx.NDCG()
    metric.update(_P, _T, _I, weights=torch.ones(3))
    metric.update(_P, _T, _I, weights=torch.ones(3))
    metric.weights.pop()  # what a rank that never passed weights would contribute after a DDP gather
    with pytest.raises(ValueError, match="weights"):
        metric.compute()


def test_rows_kept_as_given_with_mixed_dtypes():
    data = flat_data(np.random.default_rng(12))
    n = data["preds"].numel()
    cut = n // 3
    first = {
        "preds": data["preds"][:cut].half(),
        "target": data["target"][:cut] > 0,
        "indexes": data["indexes"][:cut].int(),
    }
    second = {
        "preds": data["preds"][cut:].float(),
        "target": data["target"][cut:],
        "indexes": data["indexes"][cut:],
    }
    originals = {key: value.clone() for key, value in second.items()}
    metric = tmx.RankingMetrics(ks=(1, 3))
    metric.update(**first)
    metric.update(**second)
    out = metric.compute()
    mixed = {
        "preds": torch.cat([first["preds"].double(), second["preds"].double()]),
        "target": torch.cat([first["target"].long(), second["target"]]),
        "indexes": torch.cat([first["indexes"].long(), second["indexes"]]),
    }
    ref = dict_ref((1, 3))(H.to_numpy(mixed))
    for key, value in ref.items():
        np.testing.assert_allclose(out[key].item(), value, rtol=1e-9, err_msg=key)
    for key, value in originals.items():
        assert torch.equal(second[key], value), f"user's {key} was modified"


# ----------------------------------------------------------------------------- weighted and unweighted batches


def _weight_batches(seed=30, parts=3):
    """Flat batches of whole queries; every other one carries weights (rows without weights weigh 1)."""
    data = flat_data(np.random.default_rng(seed), num_queries=60, weights=True, shuffle=False)
    idx = data["indexes"]
    starts = torch.nonzero(idx[1:] != idx[:-1]).reshape(-1) + 1
    cuts = [0, *starts[[len(starts) * i // parts for i in range(1, parts)]].tolist(), idx.numel()]
    return [{key: value[lo:hi] for key, value in data.items()} for lo, hi in itertools.pairwise(cuts)]


def _weight_reference(batches, weighted):
    rows = {key: np.concatenate([H.to_numpy(b)[key] for b in batches]) for key in ("preds", "target", "indexes")}
    rows["weights"] = np.concatenate(
        [H.to_numpy(b)["weights"] if w else np.ones(b["preds"].numel()) for b, w in zip(batches, weighted, strict=True)]
    )
    return single_ref("ndcg", 3)(rows)


def _feed(metric, batches, weighted):
    for batch, w in zip(batches, weighted, strict=True):
        metric.update(**{key: value for key, value in batch.items() if w or key != "weights"})


WEIGHT_ORDERS = [(True, False, False), (False, True, False), (False, False, True), (True, False, True)]


@pytest.mark.parametrize("weighted", WEIGHT_ORDERS)
def test_weighted_and_unweighted_batches_in_any_order(weighted):
    """B5: plain and windowed metrics take weights with some batches only; rows without weights weigh 1."""
    batches = _weight_batches()
    expected = _weight_reference(batches, weighted)
    plain = tmx.NDCG(k=3)
    _feed(plain, batches, weighted)
    np.testing.assert_allclose(plain.compute().item(), expected, rtol=1e-12)
    units = [chunk for chunk, w in zip(plain.weights, weighted, strict=True) if not w]
    assert units and all(chunk.stride() == (0,) for chunk in units)  # unit weights take no memory per row
    windowed = tmx.Windowed(tmx.NDCG(k=3), window_size=10_000)
    _feed(windowed, batches, weighted)
    for part, value in windowed.compute().items():
        np.testing.assert_allclose(value.item(), expected, rtol=1e-12, err_msg=part)
    last_two = tmx.Windowed(tmx.NDCG(k=3), window_size=sum(b["preds"].numel() for b in batches[1:]))
    _feed(last_two, batches, weighted)
    np.testing.assert_allclose(last_two.compute()["window"].item(), _weight_reference(batches[1:], weighted[1:]))
    # checkpoints: the unit weights round-trip (as views, one element each) and the values with them
    for metric, fresh in ((plain, tmx.NDCG(k=3)), (windowed, tmx.Windowed(tmx.NDCG(k=3), window_size=10_000))):
        metric.persistent(True)
        fresh.persistent(True)
        buffer = io.BytesIO()
        torch.save(metric.state_dict(), buffer)
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer, weights_only=False))
        torch.testing.assert_close(fresh.compute(), metric.compute(), rtol=0, atol=0)


def test_unweighted_batches_only_keep_no_weights_and_join_as_views():
    batches = _weight_batches(parts=2)
    metric = tmx.NDCG(k=3)
    _feed(metric, batches, (False, False))
    assert metric._cat_rows().weights is None  # the unweighted kernels, no ones made
    assert metric.sync_states()["weights"].numel() == 0  # a DDP gather sends no ones
    metric.persistent(True)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)["weights"]
    assert len(saved) == 2 and all(w.stride() == (0,) and w.untyped_storage().nbytes() == 4 for w in saved)
    from torchmetrics_ext.wrappers._ring import join_small_tails

    one = torch.ones((), dtype=torch.float32)
    lists = [[torch.zeros(3)] * 64, [one.expand(3)] * 64]
    join_small_tails(lists)
    assert lists[1][0].shape == (192,) and lists[1][0].stride() == (0,)


def test_checkpoint_without_weight_chunks_loads_and_mixes_with_weighted_batches():
    """A state saved before unit weights were kept (no weight chunk for unweighted rows) loads and computes."""
    batches = _weight_batches()
    weighted = (False, True, False)
    old = tmx.NDCG(k=3)
    old.persistent(True)
    _feed(old, batches[:1], weighted[:1])
    state = old.state_dict()
    state["weights"] = []  # as an unweighted metric saved it before
    restored = tmx.NDCG(k=3)
    restored.persistent(True)
    restored.load_state_dict(state)
    np.testing.assert_allclose(restored.compute().item(), _weight_reference(batches[:1], weighted[:1]), rtol=1e-12)
    _feed(restored, batches[1:], weighted[1:])
    np.testing.assert_allclose(restored.compute().item(), _weight_reference(batches, weighted), rtol=1e-12)
    windowed = tmx.Windowed(tmx.NDCG(k=3), window_size=10_000)
    _feed(windowed, batches[:1], weighted[:1])
    saved = windowed.state_dict()
    saved = {k: ([] if k.endswith(".weights") else v) for k, v in saved.items()}
    saved["_extra_state"]["chunks"]["weights"] = [[] for _ in saved["_extra_state"]["chunks"]["weights"]]
    again = tmx.Windowed(tmx.NDCG(k=3), window_size=10_000)
    again.load_state_dict(saved)
    _feed(again, batches[1:2], (False,))  # unweighted resumes as before
    for part, value in again.compute().items():
        np.testing.assert_allclose(
            value.item(), _weight_reference(batches[:2], (False, False)), rtol=1e-12, err_msg=part
        )


def _rows_of_80(seed: int) -> dict:
    """80 flat rows of 20 queries (four candidates each) with weights."""
    g = torch.Generator().manual_seed(seed)
    return {
        "preds": torch.rand(80, generator=g),
        "target": torch.randint(0, 3, (80,), generator=g),
        "indexes": torch.arange(80) // 4,
        "weights": torch.rand(80, generator=g, dtype=torch.float64),
    }


_NDCG3 = "NDCG (num_tasks=1, queries_complete_per_batch=False)"
_ONE_PER_ROW = f"this {_NDCG3} keeps one value per row in `preds`, `target`, `indexes` and `weights`"
_COUNTS = {"preds": 80, "target": 80, "indexes": 80, "weights": 80}


def _malformed_rows(name: str, kind: str) -> tuple[list[torch.Tensor], str]:
    """A replacement for the row state ``name`` and the message that names it (after its key)."""
    if kind == "rows":  # another run's tensor, of 21 rows where the others hold 80
        counts = ", ".join(f"{n}={21 if n == name else c}" for n, c in _COUNTS.items())
        dtype = torch.int64 if name in ("indexes", "target") else torch.float32
        message = f": the checkpoint holds 21 rows, expected 80 as in its other row states ({counts}): {_ONE_PER_ROW}"
        return [torch.zeros(21, dtype=dtype)], message
    if kind == "2d":
        dtype = torch.int64 if name == "indexes" else torch.float32
        message = f": the checkpoint holds a chunk of shape (40, 2), this {_NDCG3} keeps flat rows (1-D chunks)."
        return [torch.zeros(40, 2, dtype=dtype)], message
    assert kind == "dtype"
    wrong, wording = {
        "preds": (torch.int64, "a floating point dtype"),
        "target": (torch.complex64, "a real dtype (bool, integer or floating point)"),
        "indexes": (torch.float32, "an integer dtype"),
        "weights": (torch.complex64, "a real dtype"),
    }[name]
    message = f": the checkpoint holds a chunk of dtype {wrong}, this {_NDCG3} keeps `{name}` in {wording}."
    return [torch.zeros(80, dtype=wrong)], message


@pytest.mark.parametrize("kind", ["rows", "2d", "dtype"])
@pytest.mark.parametrize("name", ["preds", "target", "indexes", "weights"])
@pytest.mark.parametrize("where", ["", "lifetime.", "window."])
def test_row_states_that_do_not_line_up_are_refused_at_load(where, name, kind):
    """A row state replaced by an unrelated tensor (another length, not flat, another kind of dtype) loaded
    silently, and compute failed later ("`weights` are kept for 21 of 80 rows"); the load is refused naming the
    key, and the metric (a Windowed's ring too) keeps its states and value."""

    def make():
        metric = tmx.NDCG(k=3) if not where else tmx.Windowed(tmx.NDCG(k=3), window_size=200)
        metric.persistent(True)
        return metric

    saved = make()
    saved.update(**_rows_of_80(0))
    checkpoint = saved.state_dict()
    value, message = _malformed_rows(name, kind)
    checkpoint[where + name] = value
    metric = make()
    for seed in (1, 2):
        metric.update(**_rows_of_80(seed))
    before, computed = metric.state_dict(), metric.compute()
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=re.escape(f"state mismatch for {where}{name}{message}")):
            metric.load_state_dict(checkpoint, strict=strict)
    after = metric.state_dict()
    assert after.keys() == before.keys()
    for key, old in before.items():
        if isinstance(old, torch.Tensor):
            assert torch.equal(after[key], old), key
        elif isinstance(old, list):
            assert len(after[key]) == len(old) and all(torch.equal(a, b) for a, b in zip(after[key], old)), key
        else:
            assert repr(after[key]) == repr(old), key
    torch.testing.assert_close(metric.compute(), computed, rtol=0, atol=0)
    # the same rows merged as a dict of states are refused too
    if not where:
        states = {k: v for k, v in saved.metric_state.items()}
        states[name] = value
        with pytest.raises(
            ValueError, match=re.escape(f"state mismatch for {name}{message}".replace("checkpoint", "merged metric"))
        ):
            metric.merge_state(states)


def test_a_checkpoint_whose_row_states_line_up_still_loads_the_same_value():
    """Chunks of any kept dtype that line up load, and give NDCG@3 written out per query (numpy)."""
    rows = _rows_of_80(3)
    metric = tmx.NDCG(k=3)
    metric.persistent(True)
    checkpoint = metric.state_dict()
    checkpoint.update(
        preds=[rows["preds"][:50], rows["preds"][50:].double()],
        target=[rows["target"][:30].to(torch.int8), rows["target"][30:].bool()],
        indexes=[rows["indexes"].to(torch.int32)],
        weights=[],  # saved before unit weights were kept: every row weighs 1
    )
    metric.load_state_dict(checkpoint)
    preds = rows["preds"].double().numpy()
    target = np.concatenate([rows["target"][:30].numpy(), (rows["target"][30:] > 0).numpy()]).astype(np.float64)
    values = []
    for q in range(20):
        p, t = preds[4 * q : 4 * q + 4], target[4 * q : 4 * q + 4]
        order = np.argsort(-p, kind="stable")[:3]
        discounts = 1 / np.log2(np.arange(2, 5))
        ideal = np.sort(t)[::-1][:3] @ discounts
        if ideal > 0:
            values.append(t[order] @ discounts / ideal)
    np.testing.assert_allclose(metric.compute().item(), np.mean(values), rtol=1e-12)


def _mixed_weights_job(rank, world_size, weighted_ranks):
    batches = _weight_batches(parts=2 * world_size)
    mine = batches[rank::world_size]
    plain, windowed = tmx.NDCG(k=3), tmx.Windowed(tmx.NDCG(k=3), window_size=10_000)
    for metric in (plain, windowed):
        _feed(metric, mine, [rank in weighted_ranks] * len(mine))
    sent = plain.sync_states()["weights"].numel()
    return plain.compute().item(), {k: v.item() for k, v in windowed.compute().items()}, sent


@pytest.mark.ddp
@pytest.mark.parametrize("weighted_ranks", [(0,), (1,), (), (0, 1)])
def test_ddp_one_rank_weighted_the_other_not(ddp_pool, weighted_ranks):
    """Ranks that saw no weights send none; the gather gives their rows weight 1 when another rank had weights."""
    world = 2
    batches = _weight_batches(parts=2 * world)
    order = [batches[r::world] for r in range(world)]
    flat = [b for rank in order for b in rank]
    weighted = [r in weighted_ranks for r in range(world) for _ in order[r]]
    expected = _weight_reference(flat, weighted)
    for rank, (plain, windowed, sent) in enumerate(ddp_pool.run(_mixed_weights_job, weighted_ranks)):
        np.testing.assert_allclose(plain, expected, rtol=1e-12)
        for part, value in windowed.items():
            np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=part)
        assert (sent > 0) == (rank in weighted_ranks)


# two queries: the relevant row first in one, second in the other (their values written out per query)
_TWO_QUERIES = {
    "mrr": (tmx.MRR, (1.0 + 1 / 2) / 2),
    "ndcg": (tmx.NDCG, (1.0 + 1 / np.log2(3)) / 2),
    "hit_rate@1": (partial(tmx.HitRate, k=1), (1.0 + 0.0) / 2),
    "precision@1": (partial(tmx.PrecisionAtK, k=1), (1.0 + 0.0) / 2),
}


@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", list(_TWO_QUERIES))
def test_a_lower_precision_never_merges_query_ids(name, cast):
    """``set_dtype`` casts scores, relevance and weights, never the query ids: ids that a float16 (above
    2048) or float32 (above 2**24) copy would merge stay two queries (``.to`` casts no state at all)."""
    factory, expected = _TWO_QUERIES[name]
    preds = torch.tensor([0.75, 0.25, 0.5, 0.125])
    target = torch.tensor([1, 0, 0, 1])
    merged = 0
    for base in (5001, 2**25 + 1, 2**62 + 1):
        ids = torch.tensor([base, base, base + 1, base + 1])
        merged += bool(ids.to(cast)[0] == ids.to(cast)[2])  # a cast copy of the ids would be one query
        for how in ("set_dtype", "to"):
            metric = factory()
            metric.update(preds, target, indexes=ids)
            metric = metric.set_dtype(cast) if how == "set_dtype" else metric.to(cast)
            assert all(chunk.dtype == torch.int64 for chunk in metric.indexes)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-3, err_msg=f"{base} {how}")
    assert merged >= 2


@pytest.mark.parametrize(
    ("cls", "extra", "fix"),
    [
        (tmx.RecallAtK, {}, r"takes the cutoff as `k`: RecallAtK\(k=5\)"),
        (tmx.PrecisionAtK, {}, r"takes the cutoff as `k`: PrecisionAtK\(k=5\)"),
        (tmx.HitRate, {}, r"takes the cutoff as `k`: HitRate\(k=5\)"),
        (tmx.F1AtK, {}, r"takes the cutoff as `k`: F1AtK\(k=5\)"),
        (tmx.NDCG, {}, r"takes the cutoff as `k`: NDCG\(k=5\)"),
        (tmx.MRR, {}, r"takes the cutoff as `k`: MRR\(k=5\)"),
        (tmx.MAP, {}, r"takes the cutoff as `k`: MAP\(k=5\)"),
        (tmx.MulticlassRecallAtK, {"num_classes": 3}, r"takes the cutoff as `k`: MulticlassRecallAtK\(k=5\)"),
        (tmx.RankingMetrics, {}, r"takes its cutoffs as `ks`: RankingMetrics\(ks=\(5,\)\)"),
        (tmx.RPrecision, {}, "has no cutoff"),
    ],
)
def test_torchmetrics_top_k_is_told_the_cutoff_is_k(cls, extra, fix):
    """People coming from TorchMetrics write `top_k=`; the error names our argument instead of "missing 'k'"."""
    with pytest.raises(TypeError, match=rf"{cls.__name__} has no `top_k` argument \(TorchMetrics' name.*{fix}"):
        cls(top_k=5, **extra)


def test_r_precision_given_a_cutoff_says_it_has_none():
    """`RPrecision(k=2)` raised Python's "got multiple values for argument 'k'" from inside the base class."""
    with pytest.raises(TypeError, match=r"RPrecision takes no `k` \(got k=2\).*use PrecisionAtK\(k\)"):
        tmx.RPrecision(k=2)


def test_masked_padding_is_never_read_or_checked():
    """docs/ranking.md: padding may hold NaN or negative relevance; values equal those of clean padding."""
    mask = torch.tensor([[True, False, True], [True, True, False]])
    preds = torch.tensor([[0.9, float("nan"), 0.3], [0.2, 0.1, -float("inf")]])
    target = torch.tensor([[1, -5, 0], [0, 1, 7]])
    dirty = tmx.RankingMetrics(ks=(1, 2), metrics=("ndcg", "mrr", "recall"))
    dirty.update(preds, target, mask=mask)
    # by hand: query 1 ranks [0.9 (rel), 0.3]; query 2 ranks [0.2, 0.1 (rel)]
    expected = {"ndcg@1": 0.5, "ndcg@2": (1 + 1 / np.log2(3)) / 2, "mrr@2": (1 + 0.5) / 2, "recall@1": 0.5}
    values = dirty.compute()
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


# ----------------------------------------------------------------------------- the caller's tensors


def _reuse_cases():
    """Every flat ranking class (its reference), plain and windowed (a window holding every row)."""
    cases = [
        (cid, partial(cls, **({} if name in NO_CUTOFF else {"k": k})), single_ref(name, k))
        for cid, cls, _, name, k, _ in _SINGLE
    ]
    cases.append(("all@1,3", partial(tmx.RankingMetrics, ks=(1, 3)), dict_ref((1, 3))))
    return [
        pytest.param(factory, reference, windowed, id=f"{cid}{'-windowed' if windowed else ''}")
        for cid, factory, reference in cases
        for windowed in (False, True)
    ]


def _values(out):
    return {key: value.item() for key, value in out.items()} if isinstance(out, dict) else out.item()


@pytest.mark.parametrize(("factory", "reference", "windowed"), _reuse_cases())
def test_exact_mode_keeps_its_own_rows_when_the_caller_reuses_its_buffers(factory, reference, windowed):
    """Flat rows are copied at ``update``: a preallocated step buffer overwritten by the next step (and
    scribbled over before ``compute``) changes no row kept before (the metric gave the last step's rows
    for every batch). Narrow dtypes (float32 scores and weights, int8 relevance, int32 ids) and
    weights included; values against the numpy brute force over the rows as they were given."""
    data = flat_data(np.random.default_rng(41), num_queries=40, weights=True, shuffle=False)
    n, parts = data["preds"].numel(), 4
    size = n // parts
    buffers = {
        "preds": torch.empty(size, dtype=torch.float32),
        "target": torch.empty(size, dtype=torch.int8),
        "indexes": torch.empty(size, dtype=torch.int32),
        "weights": torch.empty(size, dtype=torch.float32),
    }
    metric = factory()
    if windowed:
        metric = tmx.Windowed(metric, window_size=10 * n)
    for i in range(parts):
        for key, buffer in buffers.items():
            buffer.copy_(data[key][i * size : (i + 1) * size])
        metric.update(**buffers)
    for buffer in buffers.values():
        buffer.fill_(7)  # the caller's next use of its buffers
    rows = {key: data[key][: parts * size].to(buffer.dtype) for key, buffer in buffers.items()}  # as given
    expected = reference(H.to_numpy(rows))
    out = metric.compute()
    for part in ("lifetime", "window") if windowed else (None,):
        got = _values(out if part is None else out[part])
        if isinstance(expected, dict):
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f"{part} {key}")
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=str(part))


def test_reused_buffers_give_sklearns_ndcg():
    """The report's case: two queries written into the same three-row buffers, one after the other."""
    from sklearn.metrics import ndcg_score

    metric = tmx.NDCG()
    preds, target, ids = torch.empty(3), torch.empty(3), torch.empty(3, dtype=torch.long)
    for p, t, i in [([0.9, 0.1, 0.5], [1.0, 0.0, 0.0], 0), ([0.2, 0.8, 0.4], [1.0, 0.0, 0.0], 1)]:
        preds.copy_(torch.tensor(p))
        target.copy_(torch.tensor(t))
        ids.fill_(i)
        metric.update(preds, target, indexes=ids)
    expected = ndcg_score([[1, 0, 0], [1, 0, 0]], [[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])  # 0.75
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def test_exact_mode_keeps_only_the_rows_of_a_view():
    """A column view of a larger output is copied compactly: the states hold its rows (16 bytes per row
    here, ranking.md), not the output they were cut from."""
    rng = np.random.default_rng(3)
    outputs = torch.tensor(rng.random((1000, 64)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, (1000, 8)))
    ids = torch.arange(1000).repeat_interleave(4).view(1000, 4) // 10
    metric = tmx.NDCG(k=3)
    metric.update(outputs[:, 5], labels[:, 2], indexes=ids[:, 0], weights=outputs[:, 7])
    held = {name: getattr(metric, name)[0].untyped_storage().nbytes() for name in ("preds", "target", "indexes")}
    assert held == {"preds": 4000, "target": 4000, "indexes": 8000}  # int64 relevance below 2**31 kept as int32
    assert metric.weights[0].untyped_storage().nbytes() == 4000
    rows = {"preds": outputs[:, 5], "target": labels[:, 2], "indexes": ids[:, 0], "weights": outputs[:, 7]}
    np.testing.assert_allclose(metric.compute().item(), single_ref("ndcg", 3)(H.to_numpy(rows)), rtol=1e-6)


@pytest.mark.parametrize("windowed", [False, True])
def test_kept_rows_hold_no_autograd_graph(windowed):
    """Relevance from a model (a teacher's soft labels), scores and weights that require grad: the kept
    rows are detached (an autograd graph kept per batch grew memory with the steps); the value is that
    of the detached rows."""
    rng = np.random.default_rng(8)
    data = flat_data(rng, num_queries=20, weights=True, grades=3)
    leaf = data["target"].double().requires_grad_()
    soft = leaf * 0.5  # relevance computed from a tensor that requires grad (has a grad_fn)
    preds = data["preds"].clone().requires_grad_()
    weights = data["weights"].clone().requires_grad_()
    metric = tmx.NDCG(k=3)
    if windowed:
        metric = tmx.Windowed(metric, window_size=10_000)
    metric.update(preds, soft, indexes=data["indexes"], weights=weights)
    states = metric.lifetime if windowed else metric
    kept = [chunk for name in ("preds", "target", "indexes", "weights") for chunk in getattr(states, name)]
    assert kept and not any(chunk.requires_grad or chunk.grad_fn is not None for chunk in kept)
    rows = {**H.to_numpy(data), "target": H.to_numpy(data)["target"] * 0.5}
    out = metric.compute()
    for value in out.values() if windowed else [out]:
        assert value.grad_fn is None
        np.testing.assert_allclose(value.item(), single_ref("ndcg", 3)(rows), rtol=1e-12)


_DOCUMENTED = [
    *(getattr(tmx, name) for name in ("NDCG", "RecallAtK", "PrecisionAtK", "MRR", "HitRate", "MAP", "RankingMetrics")),
    *(getattr(tmx, name) for name in ("RPrecision", "F1AtK")),
    *(getattr(tmf, name) for name in ("ndcg", "recall_at_k", "precision_at_k", "mrr", "hit_rate", "map_at_k")),
    *(getattr(tmf, name) for name in ("r_precision", "f1_at_k", "ranking_metrics")),
]


@pytest.mark.parametrize("obj", _DOCUMENTED, ids=lambda obj: obj.__name__)
def test_every_ranking_docstring_states_ties_long_cutoffs_and_undefined_values(obj):
    """Each ranking class and function says in its own ``Note:`` how ties rank, what a cutoff past the
    list does and what an empty result is (RecallAtK, MRR, ... and every functional twin said none of it)."""
    note = " ".join(obj.__doc__.split("Note:")[1].split("Examples:")[0].split())
    assert "relevance ascending (the relevant ones of a tie last: pessimistic)" in note
    assert "A cutoff ``k`` longer than a query's list takes the whole list." in note
    assert "``nan`` with ``UndefinedMetricWarning``" in note
    assert obj.__doc__.count("Note:") == 1


def test_the_documented_edge_cases_hold():
    """What the notes say, by hand: one query, every score tied, the relevant candidate listed first."""
    preds, target = torch.zeros(1, 4), torch.tensor([[1, 0, 0, 0]])
    # pessimistic: the relevant candidate ranks 4th of 4, whatever its row
    assert tmf.mrr(preds, target).item() == 0.25
    assert tmf.recall_at_k(preds, target, k=3).item() == 0.0
    assert tmf.ndcg(preds, target).item() == pytest.approx(1 / np.log2(5))
    # k past the list: the whole list (precision still divides by k)
    assert tmf.recall_at_k(preds, target, k=10).item() == 1.0
    assert tmf.precision_at_k(preds, target, k=10).item() == 0.1
    with pytest.warns(UndefinedMetricWarning):
        assert torch.isnan(tmf.map_at_k(preds, torch.zeros(1, 4, dtype=torch.long)))


def test_multiclass_docstring_states_its_edge_cases_and_they_hold():
    """``k >= num_classes`` is 1 and a zero total weight is ``nan``: the class docstring now says both."""
    note = " ".join(tmx.MulticlassRecallAtK.__doc__.split("Note:")[1].split("Examples:")[0].split())
    assert "``k >= num_classes`` counts every sample as a hit (value 1)" in note
    assert "``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero" in note
    preds, target = torch.zeros(3, 4), torch.tensor([0, 3, 2])  # every class tied: pessimistic rank 3
    metric = tmx.MulticlassRecallAtK(k=4, num_classes=4)
    metric.update(preds, target)
    assert metric.compute().item() == 1.0
    metric = tmx.MulticlassRecallAtK(k=3, num_classes=4)
    metric.update(preds, target, torch.zeros(3))
    with pytest.warns(UndefinedMetricWarning):
        assert torch.isnan(metric.compute())


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("form", ["flat", "padded"])
def test_error_policy_ignores_an_empty_query_of_zero_weight(form, device_path):
    """A zero-weight query is absent (zero-weight rows change nothing): ``empty_target_action="error"`` raised
    for one without relevance, so a batch of zero weight could fail. Value: the brute force over the others."""
    preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4], [0.5, 0.3, 0.7]], dtype=torch.float64)
    target = torch.tensor([[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    weights = torch.tensor([1.0, 0.0, 2.0])
    if form == "flat":
        inputs = {"preds": preds.flatten(), "target": target.flatten(), "indexes": torch.arange(3).repeat_interleave(3)}
        inputs["weights"] = weights.repeat_interleave(3)
    else:
        inputs = {"preds": preds, "target": target, "weights": weights}
    expected = single_ref("mrr", 2)(H.to_numpy(inputs))
    assert expected == pytest.approx((0.5 * 1 + 0.5 * 2) / 3)  # both weighted queries: first hit at rank 2
    with force_device_path(device_path):
        assert tmf.mrr(**inputs, k=2, empty_target_action="error").item() == pytest.approx(expected)
        out = tmf.ranking_metrics(**inputs, ks=(2,), metrics=("mrr",), empty_target_action="error")
        assert out["mrr@2"].item() == pytest.approx(expected)
        for complete in (False, True):
            metric = tmx.MRR(k=2, empty_target_action="error", queries_complete_per_batch=complete)
            metric.update(**inputs)
            assert metric.compute().item() == pytest.approx(expected)
        nonzero = {**inputs, "weights": torch.ones_like(inputs["weights"])}
        with pytest.raises(ValueError, match="no relevant candidate"):
            tmf.mrr(**nonzero, k=2, empty_target_action="error")


# ----------------------------------------------------------------------------- DDP: a query split across ranks


def _split_query_rows() -> dict[str, torch.Tensor]:
    """Six queries of five rows (graded relevance, each query with a relevant row), rows shuffled."""
    gen = torch.Generator().manual_seed(11)
    indexes = torch.arange(30) // 5
    target = torch.randint(0, 3, (30,), generator=gen)
    target[::5] = 1  # every query has a relevant row
    perm = torch.randperm(30, generator=gen)
    return {"preds": torch.rand(30, generator=gen)[perm], "target": target[perm], "indexes": indexes[perm]}


def _split_query_job(rank: int, world_size: int, layout: str) -> dict[str, float]:
    rows = _split_query_rows()
    # "split": rank 0 takes the first 17 shuffled rows, rank 1 the rest (queries cut between the ranks)
    mine = slice(0, 17) if rank == 0 else slice(17, 30)
    if layout == "idle":
        mine = slice(0, 30) if rank == 0 else slice(0, 0)
    metric = tmx.RankingMetrics(ks=(1, 3), metrics=("ndcg", "mrr", "recall"))
    if mine.stop > mine.start:
        half = (mine.start + mine.stop) // 2  # two updates: a query also spans batches on a rank
        metric.update(**{k: v[mine.start : half] for k, v in rows.items()})
        metric.update(**{k: v[half : mine.stop] for k, v in rows.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {k: v.item() for k, v in metric.compute().items()}


@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["split", "idle"])
def test_ddp_query_split_across_ranks_is_one_query(ddp_pool, layout):
    """The docstring's promise: in exact mode the rows of one query id on two ranks are merged into one query
    (checked against the per-query definitions in NumPy); a rank with no queries changes nothing."""
    rows = {k: v.numpy() for k, v in _split_query_rows().items()}
    split = {q for q in range(6) if len(set(np.flatnonzero(rows["indexes"] == q) < 17)) == 2}
    assert split, "the layout must cut at least one query between the ranks"
    expected = {}
    for name in ("ndcg", "mrr", "recall"):
        for k in (1, 3):
            per_query = [ref_query(p, t, name, k) for p, t, _ in _queries(rows)]
            expected[f"{name}@{k}"] = float(np.mean(per_query))
    for rank, values in enumerate(ddp_pool.run(_split_query_job, layout)):
        assert sorted(values) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(values[key], value, rtol=1e-6, err_msg=f"rank {rank} {layout} {key}")


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pad", [-1e4, -1e5, float("-inf"), -3.3])
def test_padding_value_not_representable_in_the_scores_dtype_still_marks_the_padding(dtype, pad, device_path):
    """Half-precision lists padded with ``padding_value`` hold it rounded to their dtype (-1e4 is -9984 in bfloat16,
    -1e5 is -inf in float16): the slots still compare equal to it, so they are padding, as the mask says
    (the NumPy reference reads only the mask)."""
    gen = torch.Generator().manual_seed(7)
    num_queries, width = 40, 9
    lengths = torch.randint(0, width + 1, (num_queries,), generator=gen)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    # distinct small whole scores per list: exact in both dtypes, no ties
    scores = torch.stack([torch.randperm(width, generator=gen) for _ in range(num_queries)]).to(dtype)
    # relevant labels in padded slots too: counted, they would change every value (so not validated: a
    # validating update refuses a relevant candidate scored `padding_value`)
    target = (torch.rand(num_queries, width, generator=gen) < 0.4).long()
    padded = torch.where(mask, scores, torch.tensor(pad, dtype=torch.float64).to(dtype))
    requests = [(m, 3) for m in ALL]
    expected = ref_mean({"preds": scores.double().numpy(), "target": target.numpy(), "mask": mask.numpy()}, requests)
    with force_device_path(device_path):
        metric = tmx.RankingMetrics(ks=(3,), padding_value=pad, validate_args=False)
        metric.update(padded, target)
        values = metric.compute()
        functional = tmf.ndcg(padded, target, k=3, padding_value=pad, validate_args=False)
        with pytest.raises(ValueError, match="scores `padding_value`"):
            tmx.RankingMetrics(ks=(3,), padding_value=pad).update(padded, target)
    for (name, k), value in zip(requests, expected):
        np.testing.assert_allclose(values[f"{name}@{k}"].item(), value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(functional.item(), expected[0], rtol=1e-6)


def test_relevance_of_minus_one_is_refused_with_the_mask_recipe_that_then_gives_the_labelled_candidates():
    """A relevance of -1 (a padded or unlabelled slot in many logs) is refused naming the fix; the mask it names
    gives the values of the labelled candidates alone (numpy NDCG over each query's kept candidates)."""
    from tests.helpers.ranking_reference import query_value, ranked_relevance

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(6, 7))
    relevance = rng.integers(-1, 3, size=(6, 7))
    relevance[:, 0] = 2  # every query keeps a relevant candidate
    metric = tmx.NDCG(k=3)
    for args in [(scores, relevance), (scores.ravel(), relevance.ravel(), np.repeat(np.arange(6), 7))]:
        with pytest.raises(ValueError, match=r"got values in \[-1, 2\]\. If -1 marks padded or unlabelled"):
            metric.update(*map(torch.from_numpy, args))
    target = torch.from_numpy(relevance)
    metric.update(torch.from_numpy(scores), target, mask=target >= 0)
    want = np.mean(
        [
            query_value("ndcg", 3, ranked_relevance(s[r >= 0], r[r >= 0].astype(np.float64)), False, False)
            for s, r in zip(scores, relevance)
        ]
    )
    assert float(metric.compute()) == pytest.approx(want, rel=1e-12)
