r"""The vectorised per-query ranking kernel shared by every ranking function and class.

One lexicographic sort orders all rows by (query, score descending, relevance ascending);
a row's rank is its position minus its query's first position; every metric is then a
segment reduction (``bincount``/``scatter_reduce``) over the rows ranked below ``k``.
Every metric only needs the relevant rows' ranks, so after the sort the kernel keeps those
(a fifth of the rows in typical data) and works on them alone. NDCG's ideal DCG comes from
per-query counts of each integer grade (a second, small sort of the relevant rows only for
other relevance values). MRR and hit rate alone skip the sort (:func:`first_hit_values`), and
so do finite cutoffs over rows already grouped by query (a top-k merge,
:func:`~torchmetrics_ext.functional.ranking._topk.grouped_topk_values`).
There is no Python loop over queries.

Sorting uses integer keys so PyTorch's radix sort applies: scores become order-preserving
integers (32 bits when every score is exactly a float32, else 64), query ids are offset to
start at zero, and keys whose bit widths fit are packed into one int64 so that the usual case
(float32 scores, query ids spanning < 2^29, a few relevance grades) is a single sort.

Ties: rows of one query with equal scores are ordered by relevance ascending (pessimistic:
the relevant candidates of a tie come last). The result then depends only on the multiset of
(score, relevance) pairs of each query, never on row order, batch split or DDP sharding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")
_INT_TARGET_LIMIT = 1 << 20


class Ranked(NamedTuple):
    """Rows sorted by (query, score desc, relevance asc), reduced to what the metrics need.

    Every metric depends on a query's relevant rows only (and on the query sizes), so after the
    sort only the relevant rows are kept, in ranked order.
    """

    rel_group: Tensor  # (R,) int64 query number 0..G-1 of each relevant row, non-decreasing
    rel_pos: Tensor  # (R,) int64 0-based rank of the row within its query
    rel_target: Tensor  # (R,) float64 relevance (> 0)
    size: Tensor  # (G,) int64 candidates per query
    weight: Tensor | None  # (G,) float64 query weight (max over its rows)
    num_groups: int


def _bits(max_value: int) -> int:
    return max(int(max_value).bit_length(), 1)


def _score_key(preds: Tensor) -> tuple[Tensor, int]:
    """Non-negative integer key, ascending in rank order (descending score), and its bit width.

    The float's bits are mapped to a signed integer of the same order (negative floats get
    their magnitude bits flipped); ``-0.0`` is folded onto ``+0.0`` first. 32 bits when every
    score is exactly a float32 (always true below float64), else 64 (a signed key).
    """
    p32 = preds.float()
    if preds.dtype == torch.float64 and not bool(torch.equal(p32.double(), preds)):
        bits = (preds + 0.0).view(torch.int64)
        ordered = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
        return ~ordered, 64
    bits32 = (p32 + 0.0).view(torch.int32)
    ordered = (bits32 ^ ((bits32 >> 31) & 0x7FFFFFFF)).to(torch.int64)
    return ordered.neg_().add_((1 << 31) - 1), 32


def _target_key(target: Tensor) -> tuple[Tensor, int, Tensor | None]:
    """Dense non-negative integer key of the relevance (ascending), its bit width, and the value table.

    Integer relevance below 2**20 is its own key, in its own dtype (bool viewed as uint8: no
    row-sized copy; table ``None``); other values are ranked. ``target`` may be bool, integer or
    floating (validated ``>= 0``). The key is only read, never written.
    """
    if target.numel() == 0:
        return target.to(torch.int64), 1, None
    if target.dtype == torch.bool:
        return target.view(torch.uint8), 1, None
    if not target.is_floating_point():
        tmax_int = int(target.max())
        if tmax_int < _INT_TARGET_LIMIT:
            return target, _bits(tmax_int), None
    else:
        tmax = float(target.max())
        as_int = target.to(torch.int64)
        if tmax < _INT_TARGET_LIMIT and bool(torch.equal(as_int.to(target.dtype), target)):
            return as_int, _bits(int(tmax)), None
    values, inverse = torch.unique(target.to(torch.float64), sorted=True, return_inverse=True)
    return inverse.to(torch.int64), _bits(values.numel() - 1), values


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


def _segments(sorted_ids: Tensor) -> tuple[Tensor, Tensor]:
    """For ids sorted into runs: (run number of each row, run starts)."""
    new = torch.ones(sorted_ids.numel(), dtype=torch.bool, device=sorted_ids.device)
    torch.ne(sorted_ids[1:], sorted_ids[:-1], out=new[1:])
    return torch.cumsum(new, 0).sub_(1), torch.nonzero(new).reshape(-1)


def rank_rows(preds: Tensor, target: Tensor, indexes: Tensor, weights: Tensor | None = None) -> Ranked:
    """Sort flat rows by (query, score desc, relevance asc) and keep the relevant rows with their ranks."""
    n = preds.numel()
    qmin, qmax = torch.aminmax(indexes)
    qmin_value = int(qmin)
    qkey = indexes - qmin_value
    qbits = _bits(int(qmax) - qmin_value)
    skey, sbits = _score_key(preds)
    tkey, tbits, table = _target_key(target)
    if sbits == 32 and n > 0:  # fewer key bits, fewer radix passes
        smin, smax = torch.aminmax(skey)
        skey -= smin
        sbits = _bits(int(smax - smin))
    if qbits + sbits + tbits <= 63:
        # one radix sort; equal packed keys are identical rows, so stability is not needed
        skey <<= tbits
        skey |= tkey
        qkey <<= sbits + tbits
        qkey |= skey
        packed, perm = torch.sort(qkey)
        sorted_q = packed >> (sbits + tbits)
        sorted_t = packed.bitwise_and_((1 << tbits) - 1)
    else:
        perm = lexsort([(qkey, qbits), (skey, sbits), (tkey, tbits)])
        sorted_q, sorted_t = qkey[perm], tkey[perm]
    group, starts = _segments(sorted_q)
    del sorted_q
    num_groups = int(starts.numel())
    size = torch.diff(starts, append=torch.tensor([n], device=starts.device))
    relevant = sorted_t > 0 if table is None else table[sorted_t] > 0
    rel_rows = torch.nonzero(relevant).reshape(-1)
    rel_group = group[rel_rows]
    rel_t = sorted_t[rel_rows]
    rel_target = rel_t.to(torch.float64) if table is None else table[rel_t]
    weight = None
    if weights is not None:
        weight = torch.zeros(num_groups, dtype=torch.float64, device=preds.device)
        weight.scatter_reduce_(0, group, weights[perm], "amax")
    return Ranked(rel_group, rel_rows - starts[rel_group], rel_target, size, weight, num_groups)


def gain(target: Tensor, exponential: bool) -> Tensor:
    return torch.exp2(target) - 1.0 if exponential else target


def discount(pos: Tensor) -> Tensor:
    return 1.0 / torch.log2(pos.to(torch.float64) + 2.0)


def _ideal(ranked: Ranked, exponential: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Relevant rows in ideal order: (query number, ideal position, gain·discount)."""
    tkey, tbits, _ = _target_key(ranked.rel_target)
    top = (1 << tbits) - 1
    perm = lexsort([(ranked.rel_group, _bits(max(ranked.num_groups - 1, 0))), (top - tkey, tbits)])
    group, target = ranked.rel_group[perm], ranked.rel_target[perm]
    pos = _first_relevant_offsets(group)
    return group, pos, gain(target, exponential) * discount(pos)


_MAX_COUNTED_GRADES = 64


def ideal_dcg_from_counts(counts: Tensor, longest: int, exponential: bool) -> Callable[[int | None], Tensor]:
    """IDCG@k of each query from its counts of each integer grade, without sorting.

    ``counts`` is ``(G, levels)``: column ``v`` counts the query's rows of grade ``v`` (column 0,
    the irrelevant rows, may hold anything: they come last and gain nothing). In the ideal order
    the rows of grade ``v`` occupy positions ``[C_{>v}, C_{>v} + c_v)`` where ``c_v`` counts them
    and ``C_{>v}`` counts the higher grades, so with ``D(m)`` the sum of the first ``m``
    discounts, ``IDCG@k = sum_v g(v) (D(min(C_{>v} + c_v, k)) - D(min(C_{>v}, k)))``.
    """
    dev = counts.device
    levels = counts.shape[1]
    descending = counts.flip(1)  # column j holds grade levels - 1 - j
    hi = torch.cumsum(descending, 1)
    lo = hi - descending
    table = torch.zeros(longest + 1, dtype=torch.float64, device=dev)
    table[1:] = torch.cumsum(discount(torch.arange(longest, device=dev)), 0)
    grade_gain = gain(torch.arange(levels - 1, -1, -1, device=dev, dtype=torch.float64), exponential)

    def idcg(k: int | None) -> Tensor:
        upper, lower = (hi, lo) if k is None else (hi.clamp_max(k), lo.clamp_max(k))
        return ((table[upper] - table[lower]) * grade_gain).sum(1)

    return idcg


def _ideal_dcg_by_counts(ranked: Ranked, exponential: bool) -> Callable[[int | None], Tensor] | None:
    """:func:`ideal_dcg_from_counts` over the relevant rows (``None`` unless grades are small integers)."""
    target = ranked.rel_target
    if target.numel() == 0:
        return None
    top = float(target.max())
    grades = target.to(torch.int64)
    if top > _MAX_COUNTED_GRADES or not bool(torch.equal(grades.to(torch.float64), target)):
        return None
    levels = int(top) + 1
    counts = torch.zeros(ranked.num_groups * levels, dtype=torch.int64, device=grades.device)
    counts.scatter_add_(0, ranked.rel_group * levels + grades, torch.ones_like(grades))
    return ideal_dcg_from_counts(counts.reshape(ranked.num_groups, levels), int(ranked.size.max()), exponential)


def _first_relevant_offsets(rel_group: Tensor) -> Tensor:
    """Index of each relevant row among its query's relevant rows (0 for the first)."""
    run, starts = _segments(rel_group)
    return torch.arange(rel_group.numel(), device=rel_group.device) - starts[run]


def query_values(
    ranked: Ranked,
    requests: Sequence[tuple[str, int | None]],
    exponential_gain: bool = False,
    adaptive_k: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-query values of each ``(metric, k)`` request; ``k=None`` is the whole list.

    Returns:
        ``(values, num_relevant)``: ``values`` is ``(G, len(requests))`` float64 (entries of
        queries without relevant rows are 0 and replaced by the caller's policy);
        ``num_relevant`` is ``(G,)``.
    """
    g = ranked.num_groups
    dev = ranked.rel_pos.device
    group, pos = ranked.rel_group, ranked.rel_pos

    def seg_sum(values: Tensor | None, keep: Tensor | None = None) -> Tensor:
        if keep is not None:
            idx = group[keep]
            return torch.bincount(idx, weights=None if values is None else values[keep], minlength=g).to(torch.float64)
        return torch.bincount(group, weights=values, minlength=g).to(torch.float64)

    num_rel = seg_sum(None)
    safe_rel = num_rel.clamp_min(1.0)
    size = ranked.size.to(torch.float64)
    names = {name for name, _ in requests}
    within = _first_relevant_offsets(group) if names & {"mrr", "map"} else pos
    if "ndcg" in names:
        gain_disc = gain(ranked.rel_target, exponential_gain) * discount(pos)
        ideal_by_counts = _ideal_dcg_by_counts(ranked, exponential_gain)
        if ideal_by_counts is None:
            igroup, ipos, ivalue = _ideal(ranked, exponential_gain)
    columns = []
    for name, k in requests:
        in_k = None if k is None else pos < k
        if name in ("recall", "precision", "hit_rate"):
            hits = seg_sum(None, in_k)
            if name == "recall":
                col = hits / safe_rel
            elif name == "hit_rate":
                col = (hits > 0).to(torch.float64)
            else:
                denom = size if k is None else (size.clamp_max(k) if adaptive_k else torch.full_like(size, k))
                col = hits / denom
        elif name == "mrr":
            first = within == 0
            keep = first if in_k is None else first & in_k
            col = torch.zeros(g, dtype=torch.float64, device=dev)
            col[group[keep]] = 1.0 / (pos[keep] + 1).to(torch.float64)
        elif name == "map":
            precision = (within + 1).to(torch.float64) / (pos + 1).to(torch.float64)
            col = seg_sum(precision, in_k) / safe_rel
        elif name == "ndcg":
            dcg = seg_sum(gain_disc, in_k)
            if ideal_by_counts is not None:
                idcg = ideal_by_counts(k)
            else:
                idcg = torch.bincount(
                    igroup, weights=ivalue if k is None else torch.where(ipos < k, ivalue, 0.0), minlength=g
                )
            col = dcg / torch.where(idcg > 0, idcg, 1.0)
        else:  # pragma: no cover - requests are validated by the callers
            raise ValueError(f"Unknown ranking metric {name!r}; expected one of {METRICS}.")
        columns.append(col)
    values = torch.stack(columns, 1) if columns else torch.zeros(g, 0, dtype=torch.float64, device=dev)
    return values, num_rel


FIRST_HIT_METRICS = frozenset({"mrr", "hit_rate"})


def first_hit_values(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor,
    weights: Tensor | None,
    requests: Sequence[tuple[str, int | None]],
) -> tuple[Tensor, Tensor, Ranked] | None:
    """Sort-free MRR and hit rate: they only need the rank of each query's first relevant row.

    Under the tie rule (score descending, relevance ascending) a query's first relevant row
    has the query's best relevant score ``b``, and the rows ranked before it are those scored
    above ``b`` plus the non-relevant rows scored exactly ``b``. So one segment max, one
    gather and one count give its rank, comparing the scores themselves (exact for any float,
    ``±inf`` included). Used when every request is MRR or hit rate and query ids are dense
    enough to index a table (range <= 4 N + 1024); returns ``None`` otherwise (the sort path
    runs). The values equal the sort path's.
    """
    n = preds.numel()
    qmin, qmax = torch.aminmax(indexes)
    qmin_value = int(qmin)
    span = int(qmax) - qmin_value + 1
    if span > 4 * n + 1024:
        return None
    qkey = indexes - qmin_value if qmin_value != 0 else indexes
    relevant = target > 0
    if preds.dtype in (torch.float16, torch.bfloat16):
        preds = preds.float()  # exact; scatter_reduce and comparisons in a native precision
    size = torch.bincount(qkey, minlength=span)

    def count(mask: Tensor) -> Tensor:
        """Per-query count of a row mask (``scatter_add_`` is ~3x faster than a masked ``bincount``)."""
        zeros = torch.zeros(span, dtype=torch.int64, device=preds.device)
        return zeros.scatter_add_(0, qkey, mask.to(torch.int64))

    num_rel = count(relevant)
    lowest = torch.tensor(-float("inf"), dtype=preds.dtype, device=preds.device)
    best = torch.full((span,), -float("inf"), dtype=preds.dtype, device=preds.device)
    best.scatter_reduce_(0, qkey, torch.where(relevant, preds, lowest), "amax")
    best_of_row = best[qkey]
    before = preds > best_of_row
    before |= (preds == best_of_row) & ~relevant
    ahead = count(before)
    present = torch.nonzero(size).reshape(-1)
    weight = None
    if weights is not None:
        weight = torch.zeros(span, dtype=torch.float64, device=preds.device)
        weight = weight.scatter_reduce_(0, qkey, weights, "amax")[present]
    ahead, size, num_rel = ahead[present], size[present], num_rel[present]
    has_rel = num_rel > 0
    columns = []
    for name, k in requests:
        hit = has_rel if k is None else has_rel & (ahead < k)
        if name == "mrr":
            columns.append(torch.where(hit, 1.0 / (ahead + 1).to(torch.float64), 0.0))
        else:
            columns.append(hit.to(torch.float64))
    empty = torch.empty(0, dtype=torch.int64, device=preds.device)
    ranked = Ranked(empty, empty, empty.to(torch.float64), size, weight, int(present.numel()))
    return torch.stack(columns, 1), num_rel.to(torch.float64), ranked


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
