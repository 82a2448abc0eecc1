"""An independent numpy reference for the ranking family, written from ``docs/ranking.md`` alone.

It loops over queries (a test may; the package may not) and applies each textbook formula to a
query ranked by the documented tie rule: score descending, then relevance ascending (the relevant
candidates of a tie rank last). Queries are given as ``(scores, relevance, weight)`` triples, so
the caller decides what one query is (rows sharing an id across every batch in exact mode, within
one batch with ``queries_complete_per_batch=True``, one padded row). ``ranx`` agrees with it on
tie-free data (checked in ``tests/test_ranking_stateful.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

import torchmetrics_ext as tmx

Query = tuple[np.ndarray, np.ndarray, float]  # scores (float64), relevance (float64), query weight
Request = tuple[str, "int | None"]  # (registry name, cutoff or None)


class EmptyQueryError(ValueError):
    """The reference's ``empty_target_action="error"``: a counted query of positive weight without a relevant row."""


def ranked_relevance(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Relevance in rank order: score descending, ties by relevance ascending (``-0.0 == 0.0``)."""
    return relevance[np.lexsort((relevance, -(scores + 0.0)))]


def query_value(name: str, k: int | None, ranked: np.ndarray, exponential_gain: bool, adaptive_k: bool) -> float:
    """One query's value of metric ``name`` at cutoff ``k`` (``None``: the whole list); needs a relevant row."""
    n = len(ranked)
    relevant = ranked > 0
    num_rel = int(relevant.sum())
    cut = n if k is None else min(k, n)

    def hits(m: int) -> int:
        return int(relevant[:m].sum())

    denominator = (n if k is None else min(k, n)) if adaptive_k else (n if k is None else k)
    if name == "ndcg":
        gains = (2.0**ranked - 1.0) if exponential_gain else ranked
        discounts = 1.0 / np.log2(np.arange(2, n + 2))
        return float((gains * discounts)[:cut].sum() / (np.sort(gains)[::-1] * discounts)[:cut].sum())
    if name == "recall":
        return hits(cut) / num_rel
    if name == "precision":
        return hits(cut) / denominator
    if name == "hit_rate":
        return float(hits(cut) > 0)
    if name == "mrr":
        first = int(np.flatnonzero(relevant)[0]) + 1
        return 1.0 / first if first <= cut else 0.0
    if name == "map":
        return sum(hits(i) / i for i in range(1, cut + 1) if relevant[i - 1]) / num_rel
    if name == "r_precision":
        return hits(num_rel) / num_rel
    if name == "f1":
        return 2.0 * hits(cut) / (denominator + num_rel)
    raise KeyError(name)


def reference_values(
    queries: Iterable[Query],
    requests: Sequence[Request],
    *,
    exponential_gain: bool = False,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    remove_single_length_sessions: bool = False,
) -> list[float]:
    """The weighted mean over counted queries of each request (``nan`` when no query counts).

    Raises:
        EmptyQueryError: ``empty_target_action="error"`` and a counted query of positive weight has no relevant row.
    """
    totals = [0.0] * len(requests)
    weight_sum = 0.0
    for scores, relevance, weight in queries:
        n = len(scores)
        if n == 0 or (remove_single_length_sessions and n == 1):
            continue
        ranked = ranked_relevance(scores, relevance)
        if not (ranked > 0).any():
            if empty_target_action == "skip":
                continue
            if empty_target_action == "error":
                if weight > 0:
                    raise EmptyQueryError("a query without a relevant candidate")
                continue
            values = [0.0 if empty_target_action == "zero" else 1.0] * len(requests)
        else:
            values = [query_value(name, k, ranked, exponential_gain, adaptive_k) for name, k in requests]
        weight_sum += weight
        totals = [t + weight * v for t, v in zip(totals, values)]
    if weight_sum == 0:
        return [math.nan] * len(requests)
    return [t / weight_sum for t in totals]


def group_rows(keys: Sequence[object], scores: np.ndarray, relevance: np.ndarray, weights: np.ndarray) -> list[Query]:
    """Rows grouped into queries by ``keys`` (any hashable); a query weighs its largest row weight."""
    groups: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [(scores[rows], relevance[rows], float(weights[rows].max())) for rows in groups.values()]


# the ranking classes by their metric names (the randomised tests draw from them)
NAMES = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map", "r_precision", "f1")
CLASSES = {
    "ndcg": tmx.NDCG,
    "recall": tmx.RecallAtK,
    "precision": tmx.PrecisionAtK,
    "mrr": tmx.MRR,
    "hit_rate": tmx.HitRate,
    "map": tmx.MAP,
    "r_precision": tmx.RPrecision,
    "f1": tmx.F1AtK,
}
