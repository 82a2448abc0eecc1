"""Ranking metrics on tiny inputs (the fixed-cost paths of ``compute`` and ``forward``) vs numpy and ranx.

One row, one query, ties, no relevant row, masks, ``k`` longer than the list: the inputs where
``compute`` takes its shortest paths (short flat runs as padded lists, ideal order from a row-wise
sort, the grade read once). Each case's value is checked against a textbook numpy formula
written here (our tie rule: score descending, relevance ascending) and, on tie-free data, ranx.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

K_VALUES = (1, 3, 10, None)  # 10: longer than every list here


def numpy_value(name, preds, target, ids, k, exponential=False, empty="skip"):
    """Mean over queries of ``name``@``k`` (``k=None``: whole list), each query ranked by (score desc, rel asc)."""
    values = []
    for q in np.unique(ids):
        s, y = preds[ids == q], target[ids == q].astype(float)
        ranked = y[np.lexsort((y, -s))]
        n = ranked.size
        cut = n if k is None else min(k, n)
        rel = ranked > 0
        num_rel = rel.sum()
        if num_rel == 0:
            if empty == "skip":
                continue
            values.append(0.0 if empty == "zero" else 1.0)
            continue
        top = rel[:cut]
        if name == "recall":
            values.append(top.sum() / num_rel)
        elif name == "precision":
            values.append(top.sum() / k)
        elif name == "hit_rate":
            values.append(float(top.any()))
        elif name == "mrr":
            hit = np.flatnonzero(top)
            values.append(1.0 / (hit[0] + 1) if hit.size else 0.0)
        elif name == "map":
            ranks = np.flatnonzero(top) + 1
            values.append(sum((j + 1) / r for j, r in enumerate(ranks)) / num_rel)
        else:  # ndcg
            gains = 2.0**ranked - 1 if exponential else ranked
            discount = 1.0 / np.log2(np.arange(n) + 2.0)
            ideal = np.sort(gains)[::-1]
            values.append((gains[:cut] * discount[:cut]).sum() / (ideal[:cut] * discount[:cut]).sum())
    return float(np.mean(values)) if values else math.nan


def make(name, k, exponential=False, empty="skip"):
    kw = {"empty_target_action": empty}
    if name == "ndcg":
        return tmx.NDCG(k=k, exponential_gain=exponential, **kw)
    if name == "mrr":
        return tmx.MRR(k=k, **kw)
    if name == "map":
        return tmx.MAP(k=k, **kw)
    cls = {"recall": tmx.RecallAtK, "precision": tmx.PrecisionAtK, "hit_rate": tmx.HitRate}[name]
    return cls(k=10 if k is None else k, **kw)


NAMES = ("ndcg", "recall", "precision", "hit_rate", "mrr", "map")

# (preds, target, ids): flat rows, as given to `update`
SMALL = {
    "one relevant row": ([0.3], [1], [0]),
    "one row of grade 2": ([0.3], [2], [7]),
    "one query of grade 3 rows": ([0.9, 0.2, 0.5], [0, 3, 3], [4, 4, 4]),
    "one query, ties": ([0.5, 0.5, 0.5, 0.1], [0, 2, 1, 1], [1, 1, 1, 1]),
    "two equal runs": ([0.1, 0.8, 0.4, 0.6, 0.2, 0.9], [1, 0, 2, 0, 0, 1], [3, 3, 3, 5, 5, 5]),
    "two runs out of id order": ([0.1, 0.8, 0.4, 0.6], [1, 0, 1, 2], [9, 9, 2, 2]),
    "unequal runs": ([0.1, 0.8, 0.4, 0.6, 0.2], [1, 0, 1, 2, 0], [0, 0, 1, 1, 1]),
    "a query without a relevant row": ([0.1, 0.8, 0.4, 0.6], [0, 0, 1, 2], [0, 0, 1, 1]),
    "large grades": ([0.4, 0.1, 0.7], [70, 600, 3], [2, 2, 2]),
}


def _flat(case, target_dtype):
    preds, target, ids = SMALL[case]
    return (
        torch.tensor(preds, dtype=torch.float32),
        torch.tensor(target).to(target_dtype),
        torch.tensor(ids),
    )


@pytest.mark.parametrize("case", list(SMALL))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.float64, torch.int32])
def test_small_flat_rows_match_numpy(case, name, target_dtype):
    preds, target, ids = _flat(case, target_dtype)
    for k in K_VALUES:
        if name in ("recall", "precision", "hit_rate") and k is None:
            continue
        for exponential in (False, True) if name == "ndcg" else (False,):
            if exponential and case == "large grades":
                continue  # 2**600 - 1 overflows the numpy reference's sums (the class scales gains: other tests)
            expected = numpy_value(name, preds.numpy(), target.numpy(), ids.numpy(), k, exponential)
            metric = make(name, k, exponential)
            metric.update(preds, target, indexes=ids)
            forward_metric = make(name, k, exponential)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                got = metric.compute().item()
                batch = forward_metric(preds, target, indexes=ids).item()
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{name}@{k} exp={exponential}")
            np.testing.assert_allclose(batch, expected, rtol=1e-12, err_msg=f"forward {name}@{k}")


@pytest.mark.parametrize("empty", ["skip", "zero", "one"])
@pytest.mark.parametrize("name", NAMES)
def test_all_zero_relevance(name, empty):
    preds, target, ids = torch.tensor([0.2, 0.9, 0.5]), torch.zeros(3, dtype=torch.int64), torch.tensor([0, 0, 1])
    metric = make(name, 5, empty=empty)
    metric.update(preds, target, indexes=ids)
    if empty == "skip":
        with pytest.warns(UndefinedMetricWarning):
            assert math.isnan(metric.compute().item())
    else:
        assert metric.compute().item() == numpy_value(name, preds.numpy(), target.numpy(), ids.numpy(), 5, empty=empty)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [2, 10])
def test_small_masked_lists_match_numpy(name, k):
    preds = torch.tensor([[0.5, 0.5, 0.2, -1.0], [0.1, 0.7, 0.3, 0.9], [0.4, 9.0, 9.0, 9.0]])
    target = torch.tensor([[0, 2, 1, 7], [1, 0, 0, 1], [3, 5, 5, 5]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
    kept = mask.reshape(-1)
    ids = torch.arange(3).repeat_interleave(4)[kept]
    expected = numpy_value(name, preds.reshape(-1)[kept].numpy(), target.reshape(-1)[kept].numpy(), ids.numpy(), k)
    metric = make(name, k)
    metric.update(preds, target, mask=mask)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)
    np.testing.assert_allclose(make(name, k)(preds, target, mask=mask).item(), expected, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_tiny_tie_free_queries_match_ranx(n):
    """Queries of ``n`` rows (one query, then several of equal length), ``k`` up to longer than the list."""
    from ranx import Qrels, Run, evaluate

    rng = np.random.default_rng(n)
    for num_queries in (1, 3):
        ids = np.repeat(np.arange(num_queries), n)
        preds = rng.permutation(ids.size).astype(np.float64) / ids.size  # distinct scores
        target = rng.integers(0, 3, ids.size)
        target[::n] = np.maximum(target[::n], 1)  # every query has a relevant row
        qrels, run = {}, {}
        for row, (q, s, y) in enumerate(zip(ids, preds, target, strict=True)):
            run.setdefault(f"q{q}", {})[f"d{row}"] = float(s)
            if y > 0:
                qrels.setdefault(f"q{q}", {})[f"d{row}"] = int(y)
        names = [f"{m}@{k}" for m in ("ndcg", "recall", "precision", "hit_rate", "mrr", "map") for k in (1, 3, 10)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = evaluate(Qrels(qrels), Run(run), names)
        metric = tmx.RankingMetrics(ks=(1, 3, 10), metrics=("ndcg", "recall", "precision", "hit_rate", "mrr", "map"))
        metric.update(torch.tensor(preds), torch.tensor(target), indexes=torch.tensor(ids))
        got = metric.compute()
        for key in names:
            np.testing.assert_allclose(got[key].item(), expected[key], rtol=1e-9, err_msg=f"{key} n={n}")
