r"""The vectorised per-query ranking kernel shared by every ranking function and class.

One lexicographic sort orders all rows by (query, score descending, relevance ascending);
a row's rank is its position minus its query's first position; every metric is then a
segment reduction (``bincount``/``scatter_reduce``) over the rows ranked below ``k``. The
ideal ordering NDCG needs comes from a second, smaller sort of the relevant rows only.
There is no Python loop over queries.

Sorting uses integer keys so PyTorch's radix sort applies: scores become order-preserving
integers (32 bits when every score is exactly a float32, else 64), query ids are offset to
start at zero, and keys whose bit widths fit are packed into one int64 so that the usual case
(float32 scores, < 2^20 queries, a few relevance grades) is a single sort.

Ties: rows of one query with equal scores are ordered by relevance ascending (pessimistic:
the relevant candidates of a tie come last). The result then depends only on the multiset of
(score, relevance) pairs of each query, never on row order, batch split or DDP sharding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")
_INT_TARGET_LIMIT = 1 << 20


class Ranked(NamedTuple):
    """Rows sorted by (query, score desc, relevance asc) and their query segments."""

    target: Tensor  # (N,) float64 relevance in ranked order
    group: Tensor  # (N,) int64 query number 0..G-1 of each ranked row
    pos: Tensor  # (N,) int64 0-based rank within the query
    size: Tensor  # (G,) int64 candidates per query
    weight: Tensor | None  # (G,) float64 query weight (max over its rows)
    num_groups: int


def _bits(max_value: int) -> int:
    return max(int(max_value).bit_length(), 1)


def _score_key(preds: Tensor) -> tuple[Tensor, int]:
    """Integer key in ascending rank order (descending score); returns (key, bits or 64 when signed)."""
    p32 = preds.float()
    if preds.dtype != torch.float64 or bool(torch.equal(p32.double(), preds)):
        bits = (p32 + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 folds -0.0 onto +0.0
        ascending = torch.where(bits >= 0, bits + (1 << 31), ((1 << 31) - 1) - (bits & 0x7FFFFFFF))
        return ((1 << 32) - 1) - ascending, 32
    bits = (preds + 0.0).view(torch.int64)
    ascending = torch.where(bits >= 0, bits, -(bits & 0x7FFFFFFFFFFFFFFF) - 1)
    return ~ascending, 64


def _target_key(target: Tensor) -> tuple[Tensor, int]:
    """Dense non-negative integer key of the relevance (ascending) and its bit width."""
    if target.numel() == 0:
        return target.to(torch.int64), 1
    tmax = float(target.max())
    as_int = target.to(torch.int64)
    if tmax < _INT_TARGET_LIMIT and bool(torch.equal(as_int.to(torch.float64), target)):
        return as_int, _bits(int(tmax))
    values, inverse = torch.unique(target, sorted=True, return_inverse=True)
    return inverse.to(torch.int64), _bits(values.numel() - 1)


def lexsort(keys: Sequence[tuple[Tensor, int]]) -> Tensor:
    """Stable permutation sorting rows by ``keys`` (most significant first).

    Each key is ``(int64 tensor, bits)`` with values in ``[0, 2**bits)``, or ``bits == 64`` for a
    signed key that needs all 64 bits. Adjacent keys are packed into one int64 while they fit
    in 63 bits; the packs are then applied least significant first with stable sorts.
    """
    packs: list[Tensor] = []
    current: Tensor | None = None
    used = 0
    for key, bits in reversed(keys):
        if bits >= 64:
            if current is not None:
                packs.append(current)
            packs.append(key)
            current, used = None, 0
        elif current is None:
            current, used = key, bits
        elif used + bits <= 63:
            current = current | (key << used)
            used += bits
        else:
            packs.append(current)
            current, used = key, bits
    if current is not None:
        packs.append(current)
    perm = torch.argsort(packs[0], stable=True)
    for pack in packs[1:]:
        perm = perm[torch.argsort(pack[perm], stable=True)]
    return perm


def _segments(sorted_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For ids sorted into runs: (run number of each row, position in run, run starts, run sizes)."""
    n = sorted_ids.numel()
    new = torch.ones(n, dtype=torch.bool, device=sorted_ids.device)
    new[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group = torch.cumsum(new, 0) - 1
    starts = torch.nonzero(new).reshape(-1)
    sizes = torch.diff(starts, append=torch.tensor([n], device=starts.device))
    pos = torch.arange(n, device=sorted_ids.device) - starts[group]
    return group, pos, starts, sizes


def rank_rows(preds: Tensor, target: Tensor, indexes: Tensor, weights: Tensor | None = None) -> Ranked:
    """Sort flat rows by (query, score desc, relevance asc) and locate each row in its query."""
    qmin = int(indexes.min())
    qkey = indexes - qmin
    qbits = _bits(int(qkey.max()))
    skey, sbits = _score_key(preds)
    tkey, tbits = _target_key(target)
    perm = lexsort([(qkey, qbits), (skey, sbits), (tkey, tbits)])
    group, pos, starts, sizes = _segments(qkey[perm])
    num_groups = int(sizes.numel())
    weight = None
    if weights is not None:
        weight = torch.zeros(num_groups, dtype=torch.float64, device=preds.device)
        weight.scatter_reduce_(0, group, weights[perm], "amax")
    return Ranked(target[perm], group, pos, sizes, weight, num_groups)


def _gain(target: Tensor, exponential: bool) -> Tensor:
    return torch.exp2(target) - 1.0 if exponential else target


def _discount(pos: Tensor) -> Tensor:
    return 1.0 / torch.log2(pos.to(torch.float64) + 2.0)


def _ideal(ranked: Ranked, relevant: Tensor, exponential: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Relevant rows in ideal order: (query number, ideal position, gain·discount)."""
    rel_rows = torch.nonzero(relevant).reshape(-1)
    group = ranked.group[rel_rows]
    target = ranked.target[rel_rows]
    tkey, tbits = _target_key(target)
    top = (1 << tbits) - 1
    perm = lexsort([(group, _bits(max(ranked.num_groups - 1, 0))), (top - tkey, tbits)])
    group, target = group[perm], target[perm]
    _, pos, _, _ = _segments(group)
    return group, pos, _gain(target, exponential) * _discount(pos)


def query_values(
    ranked: Ranked, requests: Sequence[tuple[str, int | None]], exponential_gain: bool = False,
    adaptive_k: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-query values of each ``(metric, k)`` request; ``k=None`` is the whole list.

    Returns:
        ``(values, num_relevant)``: ``values`` is ``(G, len(requests))`` float64 (entries of
        queries without relevant rows are meaningless and replaced by the caller's policy);
        ``num_relevant`` is ``(G,)``.
    """
    g, n = ranked.num_groups, ranked.target.numel()
    dev = ranked.target.device

    def seg_sum(values: Tensor) -> Tensor:
        return torch.bincount(ranked.group, weights=values, minlength=g)

    relevant = ranked.target > 0
    num_rel = seg_sum(relevant.to(torch.float64))
    safe_rel = num_rel.clamp_min(1.0)
    size = ranked.size.to(torch.float64)
    names = {name for name, _ in requests}
    cache: dict[str, Tensor] = {}
    if "map" in names:
        cum = torch.cumsum(relevant.to(torch.float64), 0)
        first = torch.nonzero(ranked.pos == 0).reshape(-1)
        before = cum[first] - relevant[first].to(torch.float64)
        cache["precision_at_row"] = (cum - before[ranked.group]) / (ranked.pos + 1).to(torch.float64)
    if "ndcg" in names:
        cache["gain_disc"] = _gain(ranked.target, exponential_gain) * _discount(ranked.pos)
        ideal = _ideal(ranked, relevant, exponential_gain)
    columns = []
    for name, k in requests:
        in_k = torch.ones(n, dtype=torch.bool, device=dev) if k is None else ranked.pos < k
        if name in ("recall", "precision", "hit_rate"):
            hits = seg_sum((relevant & in_k).to(torch.float64))
            if name == "recall":
                col = hits / safe_rel
            elif name == "hit_rate":
                col = (hits > 0).to(torch.float64)
            else:
                denom = size if k is None else (size.clamp_max(k) if adaptive_k else torch.full_like(size, k))
                col = hits / denom
        elif name == "mrr":
            rr = torch.where(relevant & in_k, 1.0 / (ranked.pos + 1).to(torch.float64), 0.0)
            col = torch.zeros(g, dtype=torch.float64, device=dev).scatter_reduce_(0, ranked.group, rr, "amax")
        elif name == "map":
            col = seg_sum(torch.where(relevant & in_k, cache["precision_at_row"], 0.0)) / safe_rel
        elif name == "ndcg":
            dcg = seg_sum(torch.where(in_k, cache["gain_disc"], 0.0))
            igroup, ipos, ivalue = ideal
            ivalue = ivalue if k is None else torch.where(ipos < k, ivalue, 0.0)
            idcg = torch.bincount(igroup, weights=ivalue, minlength=g)
            col = dcg / torch.where(idcg > 0, idcg, 1.0)
        else:  # pragma: no cover - requests are validated by the callers
            raise ValueError(f"Unknown ranking metric {name!r}; expected one of {METRICS}.")
        columns.append(col)
    values = torch.stack(columns, 1) if columns else torch.zeros(g, 0, dtype=torch.float64, device=dev)
    return values, num_rel


def reduce_queries(
    values: Tensor,
    num_rel: Tensor,
    ranked: Ranked,
    empty_target_action: str,
    remove_single_length_sessions: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the empty-query policy and weights: ``(sum w·v per request, sum w, number of queries)``."""
    empty = num_rel == 0
    include = torch.ones_like(empty)
    if remove_single_length_sessions:
        include = include & (ranked.size > 1)
    if empty_target_action == "error" and bool((empty & include).any()):
        bad = int(torch.nonzero(empty & include)[0, 0])
        raise ValueError(
            f"A query has no relevant candidate (target > 0) and `empty_target_action='error'` "
            f"(query number {bad} of {ranked.num_groups} in sorted id order)."
        )
    if empty_target_action == "skip":
        include = include & ~empty
    elif empty_target_action in ("zero", "one"):
        fill = 0.0 if empty_target_action == "zero" else 1.0
        values = torch.where(empty.unsqueeze(1), fill, values)
    w = include.to(torch.float64)
    if ranked.weight is not None:
        w = w * ranked.weight
    value_sum = (values * w.unsqueeze(1)).sum(0)
    return value_sum, w.sum(), include.sum().to(torch.float64)
