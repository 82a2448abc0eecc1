"""Ranking metrics through the shared harness, against a numpy brute force, ranx, pytrec_eval and TorchMetrics.

The brute force below loops over queries in the test (never in the package): it ranks each
query with ``np.lexsort`` by (score descending, relevance ascending), our documented tie rule,
and applies each textbook formula. It is itself checked against ranx and pytrec_eval on
tie-free data, so the harness cases can use it on tied data (rounded or low-precision scores).
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning
from tests.helpers import tester as H

ALL = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")

# ----------------------------------------------------------------------------- data


def flat_data(rng, num_queries=70, max_len=12, ties=False, weights=False, empty_frac=0.15, shuffle=True, grades=4):
    """Flat rows of queries with 1..max_len candidates, graded relevance, rows shuffled across the set."""
    lens = rng.integers(1, max_len + 1, size=num_queries)
    ids = rng.choice(np.arange(1000, 1000 + 5 * num_queries), size=num_queries, replace=False)  # sparse ids
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
        qw = dict(zip(ids, rng.uniform(0.1, 3.0, size=num_queries)))
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
    else:
        out["preds"] = torch.where(torch.tensor(mask), out["preds"], padding_value)
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
    if name == "recall":
        return top.sum() / num_rel
    if name == "precision":
        return top.sum() / (min(k, n) if adaptive else k)
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
    requests = [(m, k) for m in metrics for k in ks]

    def reference(data):
        values = ref_mean(data, requests, **kw)
        return {(m if k is None else f"{m}@{k}"): values[i] for i, (m, k) in enumerate(requests)}

    return reference


def with_pad(fn, value):
    return lambda data: fn({**data, "_padding_value": value})


# ----------------------------------------------------------------------------- ranx reference (tie-free data)


def ranx_ref(metric_names, keys=None, k_map=None):
    """Mean of ranx metrics over queries that have a relevant candidate (ranx has no weights)."""
    from ranx import Qrels, Run, evaluate

    def reference(data):
        idx, preds, target = data["indexes"], data["preds"], data["target"]
        qrels, run = {}, {}
        for row, (q, s, y) in enumerate(zip(idx, preds, target)):
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
        return {key: out[name] for key, name in zip(keys, metric_names)}

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
]


def _single_cases():
    out = []
    for cid, cls, fn, name, k, kw in _SINGLE:
        out.append(_flat(f"flat-{cid}", partial(cls, k=k, **kw), single_ref(name, k), partial(fn, k=k, **kw)))
        out.append(_flat(f"flat-ties-{cid}", partial(cls, k=k, **kw), single_ref(name, k), partial(fn, k=k, **kw),
                         ties=True))
        out.append(_padded(f"padded-{cid}", partial(cls, k=k, **kw), single_ref(name, k), partial(fn, k=k, **kw),
                           ties=True))
    return out


_ALL_CASES = [
    *_single_cases(),
    _flat("flat-ndcg-exp@5-w", partial(tmx.NDCG, k=5, exponential_gain=True),
          single_ref("ndcg", 5, exponential=True), partial(tmf.ndcg, k=5, exponential_gain=True), weights=True),
    _flat("flat-precision-adaptive@10", partial(tmx.PrecisionAtK, k=10, adaptive_k=True),
          single_ref("precision", 10, adaptive=True), partial(tmf.precision_at_k, k=10, adaptive_k=True)),
    _flat("flat-ndcg@3-zero", partial(tmx.NDCG, k=3, empty_target_action="zero"),
          single_ref("ndcg", 3, action="zero"), partial(tmf.ndcg, k=3, empty_target_action="zero")),
    _flat("flat-mrr-one-w", partial(tmx.MRR, empty_target_action="one"), single_ref("mrr", None, action="one"),
          partial(tmf.mrr, empty_target_action="one"), weights=True),
    _flat("flat-ndcg-torchrec", partial(tmx.NDCG, report_as_loss=True, remove_single_length_sessions=True),
          single_ref("ndcg", None, loss=True, remove_single=True),
          partial(tmf.ndcg, report_as_loss=True, remove_single_length_sessions=True)),
    _flat("flat-all-w", partial(tmx.RankingMetrics, ks=(1, 3, 10)), dict_ref((1, 3, 10)),
          partial(tmf.ranking_metrics, ks=(1, 3, 10)), weights=True, ties=True),
    _flat("flat-all-exp", partial(tmx.RankingMetrics, ks=(2, 5), exponential_gain=True),
          dict_ref((2, 5), exponential=True), partial(tmf.ranking_metrics, ks=(2, 5), exponential_gain=True)),
    _padded("padded-all-w", partial(tmx.RankingMetrics, ks=(1, 4)), dict_ref((1, 4)),
            partial(tmf.ranking_metrics, ks=(1, 4)), ties=True),
    _padded("padded-pad-ndcg@3", partial(tmx.NDCG, k=3, padding_value=-10.0), single_ref("ndcg", 3),
            partial(tmf.ndcg, k=3, padding_value=-10.0), padding_value=-10.0),
    _padded("padded-pad-recall@2", partial(tmx.RecallAtK, k=2, padding_value=-10.0), single_ref("recall", 2),
            partial(tmf.recall_at_k, k=2, padding_value=-10.0), padding_value=-10.0),
]

# ranx on tie-free float64 scores, graded relevance 0..3, rows shuffled so queries span batches
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
]
_RANX_ALL_KEYS = [f"{m}@{k}" for m in ALL for k in (1, 5, 10)]
_ALL_CASES += [_flat(f"ranx-{name}", partial(cls, **kw), ranx_ref([name])) for name, cls, kw in _RANX]
_ALL_CASES.append(_flat("ranx-all", partial(tmx.RankingMetrics, ks=(1, 5, 10)),
                        ranx_ref(_RANX_ALL_KEYS, keys=_RANX_ALL_KEYS), num_queries=120))


# multiclass recall@k
def multiclass_data(rng, n=400, c=6, ties=False, weights=False):
    preds = rng.normal(size=(n, c))
    if ties:
        preds = np.round(preds, 0)
    out = {"preds": torch.tensor(preds, dtype=torch.float32), "target": torch.tensor(rng.integers(0, c, size=n))}
    out["weights"] = torch.tensor(rng.uniform(0, 2, size=n)) if weights else None
    return out


def ref_multiclass(data, k):
    p, y, w = data["preds"], data["target"], data["weights"]
    w = np.ones(len(y)) if w is None else w
    hits = []
    for row, label in zip(p, y):
        rank = (row > row[label]).sum() + (row == row[label]).sum() - 1
        hits.append(rank < k)
    return (np.asarray(hits) * w).sum() / w.sum()


for _k, _ties, _w in ((1, False, False), (3, True, True), (2, True, False)):
    _ALL_CASES.append(H.MetricCase(
        id=f"multiclass@{_k}{'-ties' if _ties else ''}{'-w' if _w else ''}",
        metric=partial(tmx.MulticlassRecallAtK, k=_k, num_classes=6),
        data=partial(multiclass_data, ties=_ties, weights=_w),
        reference=partial(ref_multiclass, k=_k),
        functional=partial(tmf.multiclass_recall_at_k, k=_k, num_classes=6),
        sample_axis=0,
        weight_key="weights" if _w else None,
    ))

CASES = {case.id: case for case in _ALL_CASES}
IDS = sorted(CASES)
HARNESS_IDS = [i for i in IDS if not i.startswith("ranx-")]
DDP_IDS = ["flat-all-w", "flat-ndcg@5", "padded-all-w", "flat-mrr-one-w", "multiclass@3-ties-w", "ranx-all"]


# ----------------------------------------------------------------------------- harness


@pytest.mark.parametrize("cid", IDS)
def test_accumulate(cid):
    H.check_accumulate(CASES[cid])


@pytest.mark.parametrize("cid", HARNESS_IDS)
def test_forward(cid):
    H.check_forward(CASES[cid])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("cid", ["flat-all-w", "padded-all-w", "flat-ties-ndcg@5", "multiclass@3-ties-w"])
def test_dtypes(cid, dtype):
    H.check_dtype(CASES[cid], dtype)


@pytest.mark.parametrize("cid", HARNESS_IDS)
def test_state_dict(cid):
    H.check_state_dict(CASES[cid])


@pytest.mark.parametrize("cid", [i for i in HARNESS_IDS if not i.startswith("flat-ties") and "@" in i])
def test_collection(cid):
    H.check_collection(CASES[cid], arithmetic="-all" not in cid)


@pytest.mark.parametrize("cid", [i for i in HARNESS_IDS if CASES[i].weight_key is not None])
def test_invariances(cid):
    H.check_invariances(CASES[cid])


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("cid", DDP_IDS)
def test_ddp(ddp_pool, cid, empty_rank):
    H.check_ddp(ddp_pool, __name__, CASES[cid], empty_rank=empty_rank)
