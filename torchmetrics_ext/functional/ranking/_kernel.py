r"""The sort path: the vectorised per-query ranking kernel that serves every metric and input.

One lexicographic sort orders all rows by (query, score descending, relevance ascending);
a row's rank is its position minus its query's first position; every metric is then a
segment reduction (``bincount``/``scatter_reduce``) over the rows ranked below ``k``.
Every metric only needs the relevant rows' ranks, so after the sort the kernel keeps those
(a fifth of the rows in typical data) and works on them alone (:class:`SortedQueries`, which
each metric's spec reads). NDCG's ideal DCG comes from per-query counts of each integer grade
when that table is small next to the relevant rows (:func:`grade_counts_pay`), else from a second,
small sort of the relevant rows. Two paths skip
the sort when they apply (see :func:`~torchmetrics_ext.functional.ranking._update._ranking_update`):
a top-k merge for finite cutoffs over rows grouped by query (:mod:`._topk`) and first-hit
counting for MRR and hit rate (:mod:`._first_hit`). There is no Python loop over queries.

Sorting uses integer keys so PyTorch's radix sort applies: scores become order-preserving
integers (32 bits when every score is exactly a float32, else 64), query ids are offset to
start at zero, and keys whose bit widths fit are packed into one int64 so that the usual case
(float32 scores, query ids spanning < 2^29, a few relevance grades) is a single sort.

Ties: rows of one query with equal scores are ordered by relevance ascending (pessimistic:
the relevant candidates of a tie come last). The result then depends only on the multiset of
(score, relevance) pairs of each query, never on row order, batch split or DDP sharding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._columns import Columns
from torchmetrics_ext.functional.ranking._spec import RankingOptions, Request
from torchmetrics_ext.utilities.device import on_device_path

_INT_TARGET_LIMIT = 1 << 20
_SMALL_SORT = 4096  # rows below which narrowing the score keys costs more than the radix passes it saves
_SMALL_GRID = 4096  # padded lists of at most this many entries sort whole rows for NDCG's ideal order


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
    # the largest relevance when every relevance is an integer read before ranking (``None``: not known);
    # then no relevant row's grade or gain scaling needs another host read
    top_grade: int | None = None


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


def integer_relevance(target: Tensor, limit: int, dtype: torch.dtype = torch.int64) -> tuple[Tensor, int] | None:
    """``(relevance as integers, largest value)`` when every value is an integer in ``[0, limit]``, else ``None``.

    Read before any ranking, with one host synchronisation (none for bool). Bool relevance is
    viewed as uint8 (no copy; its largest value is taken as 1); integer dtypes are returned as
    they are (no copy); floating relevance is converted to ``dtype`` when it is integer-valued.
    ``target`` is validated ``>= 0`` and non-empty.
    """
    if target.dtype == torch.bool:
        return target.view(torch.uint8), 1
    if not target.is_floating_point():
        top = int(target.max())
        return (target, top) if top <= limit else None
    top_value = float(target.max())
    if top_value > limit:
        return None
    as_int = target.to(dtype)
    if not bool(torch.equal(as_int.to(target.dtype), target)):
        return None
    return as_int, int(top_value)


def _target_key(target: Tensor) -> tuple[Tensor, int, Tensor | None, int | None]:
    """Dense non-negative integer key of the relevance (ascending), its bit width, the value table, the largest grade.

    Integer relevance below 2**20 is its own key, in its own dtype (bool viewed as uint8: no
    row-sized copy; table ``None``; the largest grade, read here, is returned); other values are
    ranked (largest grade ``None``). ``target`` may be bool, integer or floating (validated
    ``>= 0``). The key is only read, never written.
    """
    if target.numel() == 0:
        return target.to(torch.int64), 1, None, None
    integer = integer_relevance(target, _INT_TARGET_LIMIT - 1)
    if integer is not None:
        key, top = integer
        return key, _bits(top), None, top
    values, inverse = torch.unique(target.to(torch.float64), sorted=True, return_inverse=True)
    return inverse.to(torch.int64), _bits(values.numel() - 1), values, None


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
    tkey, tbits, table, top_grade = _target_key(target)
    if sbits == 32 and n > 0 and (n > _SMALL_SORT or qbits + sbits + tbits > 63):
        # fewer key bits, fewer radix passes (or one sort instead of two); equal keys stay equal
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
    size = torch.diff(starts, append=starts.new_full((1,), n))
    relevant = sorted_t > 0 if table is None else table[sorted_t] > 0
    rel_rows = torch.nonzero(relevant).reshape(-1)
    rel_group = group[rel_rows]
    rel_t = sorted_t[rel_rows]
    rel_target = rel_t.to(torch.float64) if table is None else table[rel_t]
    weight = None
    if weights is not None:
        weight = torch.zeros(num_groups, dtype=torch.float64, device=preds.device)
        # the largest of each query's weights, given in any real dtype (evaluate's kept rows: as read): exact in float64
        weight.scatter_reduce_(0, group, weights[perm].to(torch.float64), "amax")
    return Ranked(rel_group, rel_rows - starts[rel_group], rel_target, size, weight, num_groups, top_grade)


def rank_grid(
    preds: Tensor, target: Tensor, keep: Tensor | None, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Padded ``(Q, L)`` lists (one query per row) ranked row by row: stable sorts, no keys, no host read.

    Returns ``(relevance, relevant, size, weight)``: each query's relevance in rank order
    (``(G, L)``, ``target``'s dtype), which of those entries are relevant and kept, the query
    sizes (``None``: all ``L``) and query weights (``None`` without ``weights``). Stable sorts
    order each row by relevance ascending, then score descending (``-0.0`` equals ``0.0``), then
    kept first: the tie rule of :func:`rank_rows`, whose order is unique up to rows of equal
    score and relevance, so :class:`GridQueries` holds the relevant rows :func:`rank_rows` finds
    in the flattened rows ``keep`` selects (``None``: all). Queries without a kept row are left
    out (a host read, only with ``keep``). Any dtypes; ``weights`` are ``(Q,)``.
    """
    sorted_target, order = torch.sort(target, dim=1, stable=True)
    by_score = torch.sort(preds.gather(1, order), dim=1, descending=True, stable=True).indices
    sorted_target = sorted_target.gather(1, by_score)
    kept = None
    if keep is not None:  # dropped entries last (their scores and relevance may be anything)
        kept, last = torch.sort(keep.gather(1, order).gather(1, by_score), dim=1, descending=True, stable=True)
        sorted_target = sorted_target.gather(1, last)
    relevant = sorted_target > 0
    if kept is not None:
        relevant &= kept
    weight = size = None
    if weights is not None:  # a query's weight is its rows' largest, at least 0 (rank_rows' reduction)
        weight = torch.clamp_min(weights.to(torch.float64), 0.0).add_(0.0)
    if keep is not None:
        size = keep.sum(1)
        present = size > 0
        if not bool(present.all()):  # queries without a kept row are no query
            size, relevant, sorted_target = size[present], relevant[present], sorted_target[present]
            weight = None if weight is None else weight[present]
    return sorted_target, relevant, size, weight


GAIN_EXPONENT_LIMIT = 512
"""Exponential gains of a query whose largest relevance ``M`` exceeds this are scaled by ``2**-(M - 512)``.

``2**y - 1`` overflows float64 from ``y = 1024`` (and a query's DCG sums them sooner); a query's
NDCG is a ratio of two sums of its own gains, so scaling all of them by one power of two leaves
it unchanged. Queries with ``M <= 512`` are not scaled (their gains are exactly ``2**y - 1``);
the grade-count paths (grades of at most 64) never need it. Linear gains are scaled the same way
when ``M`` reaches ``2**512`` (float64 relevance only), by ``2**-(e - 512)`` with ``M < 2**e``: a
query's gains near float64's largest value (1.7e308) summed to ``inf`` in DCG and IDCG alike.
Both gains of a query whose ``M`` is below ``2**-512`` (subnormal grades such as 1e-320) are scaled
up the same way, by ``2**-e`` with ``2**(e - 1) <= M < 2**e``: their products with the discounts
underflowed (an NDCG of 0 where the true value is 0.5, or half the digits lost).
"""


_LN2 = math.log(2.0)


def gain(target: Tensor, exponential: bool, shift: Tensor | None = None) -> Tensor:
    """NDCG's gain ``y`` or ``2**y - 1``, times ``2**-shift`` when a row ``shift`` is given (:func:`gain_shift`).

    Below ``y = 1`` the exponential gain is ``expm1(y ln 2)``: ``2**y - 1`` cancels there (it loses
    ``log2(1 / y)`` bits, and is 0 below ``y = 2**-53``, so a query whose grades are all that small
    had no ideal DCG and an NDCG of 0). From ``y = 1`` on it is ``2**y - 1`` (integer grades exactly).
    """
    if not exponential:
        return target if shift is None else _times_exp2(target, -shift)
    small = torch.expm1(target * _LN2)
    if shift is None:
        return torch.where(target < 1, small, torch.exp2(target) - 1.0)
    # a query scaled up (shift < 0) has every grade below 1: the second branch is not read for it
    return torch.where(target < 1, _times_exp2(small, -shift), torch.exp2(target - shift) - torch.exp2(-shift))


def _times_exp2(value: Tensor, exponent: Tensor) -> Tensor:
    """``value * 2**exponent`` for integer-valued exponents up to 1074 in size, as two exact powers of two.

    ``2**1073`` (scaling up a grade of 5e-324) is no float64; its halves are.
    """
    half = torch.floor(exponent * 0.5)
    return value * torch.exp2(half) * torch.exp2(exponent - half)


def gain_shift(target: Tensor, group: Tensor, num_groups: int, exponential: bool = True) -> Tensor:
    """``(G,)`` float64 exponent ``s`` scaling each query's gains by ``2**-s`` (see :data:`GAIN_EXPONENT_LIMIT`).

    ``s > 0`` scales large grades down, ``s < 0`` subnormal ones up, ``s = 0`` leaves a query as it is.

    ``target``: relevance (>= 0) of rows of queries ``group``; one reduction, no host read.
    """
    top = torch.zeros(num_groups, dtype=torch.float64, device=target.device)
    top.scatter_reduce_(0, group, target.to(torch.float64), "amax")
    exponent = torch.frexp(top).exponent.to(torch.float64)  # 2**(e - 1) <= top < 2**e (0 for a query of zeros)
    # a query whose grades are all below 2**-512 is scaled up to a top grade in [0.5, 1)
    up = exponent.where(exponent < -GAIN_EXPONENT_LIMIT, 0.0)
    if not exponential:  # top < 2**exponent: scaled below 2**512, so no sum of a query's gains overflows
        top = exponent
    return top.sub_(GAIN_EXPONENT_LIMIT).clamp_min_(0.0).add_(up)


def needs_linear_gain_shift(target: Tensor) -> bool:
    """Whether linear gains of relevance ``target`` (> 0) may need :func:`gain_shift`.

    They do for a relevance of ``2**512`` or more, or one below ``2**-512``.

    On the device path the answer is ``True`` without a host read (the shift is then 0 for every
    ordinary query, and scaling by ``2**0`` changes no bit); on the CPU one reduction decides.
    """
    if on_device_path(target):
        return True
    if target.numel() == 0:
        return False
    low, high = torch.aminmax(target)
    return bool((high >= 2.0**GAIN_EXPONENT_LIMIT) | (low < 2.0**-GAIN_EXPONENT_LIMIT))


def discount(pos: Tensor) -> Tensor:
    """``1 / log2(pos + 2)`` (float64) of 0-based integer positions."""
    return torch.log2(pos.to(torch.float64) + 2.0).reciprocal_()


def _ideal(ranked: Ranked, exponential: bool, shift: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Relevant rows in ideal order: (query number, ideal position, gain·discount); ``shift`` per query."""
    tkey, tbits, _, _ = _target_key(ranked.rel_target)
    top = (1 << tbits) - 1
    perm = lexsort([(ranked.rel_group, _bits(max(ranked.num_groups - 1, 0))), (top - tkey, tbits)])
    group, target = ranked.rel_group[perm], ranked.rel_target[perm]
    pos = _first_relevant_offsets(group)
    return group, pos, gain(target, exponential, None if shift is None else shift[group]) * discount(pos)


def ideal_dcg_by_sort(ranked: Ranked, exponential: bool, shift: Tensor | None) -> Callable[[int | None], Tensor]:
    """IDCG@k of each query from a sort of its relevant rows by relevance descending (any relevance).

    Only ``rel_group`` (in any order), ``rel_target`` and ``num_groups`` of ``ranked`` are read;
    ``shift``: each query's gain scaling (:func:`gain_shift`), ``None`` for none.
    """
    return _ideal_sums(*_ideal(ranked, exponential, shift), ranked.num_groups)


def _ideal_sums(group: Tensor, pos: Tensor, value: Tensor, num_groups: int) -> Callable[[int | None], Tensor]:
    """``k -> (G,)`` IDCG@k: the sum of each query's ``value`` at ideal positions ``pos < k``, in the rows' order."""

    def idcg(k: int | None) -> Tensor:
        weights = value if k is None else torch.where(pos < k, value, 0.0)
        return torch.bincount(group, weights=weights, minlength=num_groups)

    return idcg


_MAX_COUNTED_GRADES = 64


def grade_counts_pay(num_groups: int, levels: int, budget: int, cutoffs: int = 1) -> bool:
    """Whether IDCG from a ``(num_groups, levels)`` table of grade counts beats sorting the relevant rows.

    The table costs a few passes over all its cells per cutoff, empty cells included (a query of
    4 candidates still has ``levels`` cells), so for one cutoff it pays only while it has at most
    ``budget`` cells (and grades of at most :data:`_MAX_COUNTED_GRADES`). The sort path, whose
    relevant rows are already at hand, passes twice their number (a cell costs about half a sorted
    row); the top-k merge, which counts grades in its rounds but would first have to find the
    relevant rows among all of them, passes the number of rows. Binary or few grades over queries
    with several relevant rows (the usual case) count; one large grade over many short queries sorts.

    Each further cutoff (``cutoffs`` IDCG@k are read) costs the table those passes over every cell
    again, ten times what the sort's ``where`` and ``bincount`` over its relevant rows cost (about
    22 and 2 ns per cell and row, measured), against a table built at about a quarter of the
    sort's price: so ``cells * (1 + cutoffs) <= budget * (1.95 + 0.05 * cutoffs)``, ``budget`` cells
    for one cutoff and a twentieth of it for many.
    """
    cells = num_groups * levels
    return levels <= _MAX_COUNTED_GRADES + 1 and 20 * cells * (1 + cutoffs) <= budget * (39 + cutoffs)


def ideal_dcg_from_counts(counts: Tensor, longest: int, exponential: bool) -> Callable[[int | None], Tensor]:
    """IDCG@k of each query from its counts of each integer grade, without sorting.

    ``counts`` is ``(G, levels)``: column ``v`` counts the query's rows of grade ``v`` (column 0,
    the irrelevant rows, may hold anything: they come last and gain nothing). In the ideal order
    the rows of grade ``v`` occupy positions ``[C_{>v}, C_{>v} + c_v)`` where ``c_v`` counts them
    and ``C_{>v}`` counts the higher grades, so with ``D(m)`` the sum of the first ``m``
    discounts, ``IDCG@k = sum_v g(v) (D(min(C_{>v} + c_v, k)) - D(min(C_{>v}, k)))``.
    """
    levels = counts.shape[1]
    descending = counts.flip(1)  # column j holds grade levels - 1 - j
    hi = torch.cumsum(descending, 1)
    lo = hi - descending
    table, grade_gain = _count_constants(longest, levels, exponential, counts.device)

    def idcg(k: int | None) -> Tensor:
        # no count exceeds `longest`: a cutoff at least that long clamps nothing
        upper, lower = (hi, lo) if k is None or k >= longest else (hi.clamp_max(k), lo.clamp_max(k))
        return ((table[upper] - table[lower]) * grade_gain).sum(1)

    return idcg


@functools.lru_cache(maxsize=64)
def discount_column(length: int, device: torch.device) -> Tensor:
    """``(length, 1)`` :func:`discount` of positions ``0..length - 1``, cached (only read).

    Made by the same operations every time, so the cached column holds the very values a fresh
    one would: a small ``compute`` (one query, ``k = 10``) skips five tensor operations.
    """
    return discount(torch.arange(length, device=device)).unsqueeze(1)


@functools.lru_cache(maxsize=64)
def _count_constants(longest: int, levels: int, exponential: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """:func:`ideal_dcg_from_counts`' per-shape constants, only read: ``D(m)`` for ``m <= longest``, each column's gain.

    Made by the same operations on the same shapes every time, so a cached table holds the very
    values a fresh one would.
    """
    table = torch.zeros(longest + 1, dtype=torch.float64, device=device)
    table[1:] = torch.cumsum(discount(torch.arange(longest, device=device)), 0)
    grade_gain = gain(torch.arange(levels - 1, -1, -1, device=device, dtype=torch.float64), exponential)
    return table, grade_gain


def route_ideal_dcg(
    num_relevant: int,
    size: Tensor,
    exponential: bool,
    cutoffs: int,
    *,
    graded: Callable[[], tuple[Tensor, int] | None],
    count_relevant: Callable[[], Tensor],
    count_grades: Callable[[Tensor, int], Tensor],
    by_sort: Callable[[], Callable[[int | None], Tensor]],
    longest: int | None = None,
) -> Callable[[int | None], Tensor]:
    """NDCG's IDCG@k over ``size.numel()`` queries: from grade counts when they pay, else ``by_sort()``.

    The one route rule of the sort path and of the ``torch.topk`` selection: counts when there
    are relevant rows (``num_relevant`` in all) and the ``(G, levels)`` table pays
    (:func:`grade_counts_pay` over twice their number, ``cutoffs`` IDCG@k read), binary grades
    from each query's relevant count alone. The caller supplies what it holds, each read only
    on the route that needs it: ``graded()``, what :func:`integer_relevance` gives for the
    relevant rows (grades of at most :data:`_MAX_COUNTED_GRADES`) or ``None``;
    ``count_relevant()``, ``(G,)`` int64 relevant rows of each query; ``count_grades(grades,
    levels)``, the ``(G, levels)`` table of :func:`ideal_dcg_from_counts` (no count above the
    longest query); ``by_sort()``, IDCG from a sort of the relevant rows; ``longest``, the
    largest query size when known without reading ``size``.
    """
    num_groups = size.numel()
    if num_relevant == 0 or not grade_counts_pay(num_groups, 2, 2 * num_relevant, cutoffs):
        return by_sort()  # not even a binary table pays: skip reading the largest grade
    grades = graded()
    if grades is None or not grade_counts_pay(num_groups, grades[1] + 1, 2 * num_relevant, cutoffs):
        return by_sort()
    levels = grades[1] + 1
    longest = int(size.max()) if longest is None else longest
    if levels == 2:
        return _binary_ideal_dcg(count_relevant(), longest, exponential)
    return ideal_dcg_from_counts(count_grades(grades[0], levels), longest, exponential)


def _rows_ideal_dcg(
    ranked: Ranked,
    exponential: bool,
    cutoffs: int,
    by_sort: Callable[[], Callable[[int | None], Tensor]],
    graded: Callable[[], tuple[Tensor, int] | None],
    longest: int | None,
) -> Callable[[int | None], Tensor]:
    """:func:`route_ideal_dcg` of the relevant rows ``ranked`` holds; ``by_sort()``: IDCG from sorting them."""
    group, num_groups = ranked.rel_group, ranked.num_groups

    def count_grades(grades: Tensor, levels: int) -> Tensor:
        return torch.bincount(group * levels + grades, minlength=num_groups * levels).reshape(num_groups, levels)

    return route_ideal_dcg(
        ranked.rel_target.numel(),
        ranked.size,
        exponential,
        cutoffs,
        graded=graded,
        count_relevant=lambda: torch.bincount(group, minlength=num_groups),
        count_grades=count_grades,
        by_sort=by_sort,
        longest=longest,
    )


def _binary_ideal_dcg(num_relevant: Tensor, longest: int, exponential: bool) -> Callable[[int | None], Tensor]:
    """:func:`ideal_dcg_from_counts` of grades 0 and 1 (``num_relevant`` (G,) int64 rows of grade 1), bit for bit.

    Its sum has two terms: ``(D(min(c_1, k)) - D(0)) g(1)`` and the grade-0 term
    ``(...) g(0) = +0.0``; with ``D(0) = 0.0`` that is ``D(min(c_1, k)) g(1)`` exactly.
    """
    table, grade_gain = _count_constants(longest, 2, exponential, num_relevant.device)
    top_gain = grade_gain[0]  # g(1); grade_gain[1] is g(0) = 0.0 (2**0 - 1 exactly for exponential gains)

    def idcg(k: int | None) -> Tensor:
        return table[num_relevant if k is None or k >= longest else num_relevant.clamp_max(k)] * top_gain

    return idcg


def _first_relevant_offsets(rel_group: Tensor) -> Tensor:
    """Index of each relevant row among its query's relevant rows (0 for the first)."""
    run, starts = _segments(rel_group)
    return torch.arange(rel_group.numel(), device=rel_group.device) - starts[run]


class QueryStats:
    """What every path knows of each query: relevant candidates, size, hits in the top ``k``, options.

    The hit-count metrics (recall, precision, hit rate, F1) read only these, so one value
    function serves the sort path (:class:`SortedQueries`) and the top-k merge
    (:class:`~torchmetrics_ext.functional.ranking._topk.TopQueries`).
    """

    def __init__(self, num_rel: Tensor, size: Tensor, options: RankingOptions) -> None:
        self.num_rel = num_rel  # (G,) float64 relevant candidates of each query
        self._size = size  # (G,) candidates of each query, any dtype (see `size`)
        self.options = options
        self.ideal_cutoffs = 1  # how many IDCG@k the caller reads (set by `sorted_columns`)
        self._hits: dict[int | None, Tensor] = {}

    @cached_property
    def size(self) -> Tensor:
        """``(G,)`` float64 candidates of each query."""
        return self.query_size.to(torch.float64)

    @property
    def query_size(self) -> Tensor:
        """``(G,)`` candidates of each query, as given (any dtype)."""
        return self._size

    @cached_property
    def safe_rel(self) -> Tensor:
        """:attr:`num_rel`, 1 for queries without any (their value is replaced)."""
        return self.num_rel.clamp_min(1.0)

    def hits(self, k: int | None) -> Tensor:
        """``(G,)`` float64 relevant candidates in each query's top ``k`` (``None``: all), counted once per ``k``."""
        if k not in self._hits:
            self._hits[k] = self._count_hits(k)
        return self._hits[k]

    def _count_hits(self, k: int | None) -> Tensor:
        raise NotImplementedError

    def forget(self, k: int | None) -> None:
        """Drop what was cached for cutoff ``k`` (its hit counts): every request at ``k`` has been read."""
        self._hits.pop(k, None)

    def precision_denominator(self, k: int | None) -> Tensor:
        """``k`` (``min(k, n_q)`` with ``adaptive_k``; ``n_q`` for the whole list) per query, float64."""
        if k is None:
            return self.size
        return self.size.clamp_max(k) if self.options.adaptive_k else torch.full_like(self.size, k)


class SortedQueries(QueryStats):
    """The sort path's view of each query: its relevant rows' ranks, and reductions over them.

    ``group`` and ``pos`` are the query number and 0-based rank of each relevant row (query order,
    then rank order); the reductions a metric asks for are computed on first use.
    """

    ranked: Ranked
    width: int | None = None  # every query's size, when all are equal and known without a read

    def __init__(self, ranked: Ranked, options: RankingOptions) -> None:
        self.ranked = ranked
        self.num_groups = ranked.num_groups
        self._in_k: dict[int, Tensor] = {}
        super().__init__(self.sum(), ranked.size, options)

    @property
    def group(self) -> Tensor:
        """``(R,)`` int64 query number of each relevant row."""
        return self.ranked.rel_group

    @property
    def pos(self) -> Tensor:
        """``(R,)`` int64 0-based rank of each relevant row within its query."""
        return self.ranked.rel_pos

    def in_k(self, k: int | None) -> Tensor | None:
        """Which relevant rows rank in the top ``k`` (``None``: all of them)."""
        if k is None:
            return None
        if k not in self._in_k:
            self._in_k[k] = self.pos < k
        return self._in_k[k]

    def forget(self, k: int | None) -> None:
        """Drop what was cached for cutoff ``k`` (its hit counts and which relevant rows rank within it)."""
        super().forget(k)
        if k is not None:
            self._in_k.pop(k, None)

    def sum(self, values: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        """``(G,)`` float64 per-query sum of ``values`` (or count) over the relevant rows ``keep`` (or all)."""
        if keep is not None:
            idx = self.group[keep]
            weights = None if values is None else values[keep]
            return torch.bincount(idx, weights=weights, minlength=self.num_groups).to(torch.float64)
        return torch.bincount(self.group, weights=values, minlength=self.num_groups).to(torch.float64)

    def _count_hits(self, k: int | None) -> Tensor:
        return self.sum(None, self.in_k(k))

    @cached_property
    def within(self) -> Tensor:
        """Index of each relevant row among its query's relevant rows (0 for the first)."""
        return _first_relevant_offsets(self.group)

    @cached_property
    def gain_shift(self) -> Tensor | None:
        """``(G,)`` exponent scaling each query's gains (``None`` for linear gains that need none)."""
        target, exponential = self.ranked.rel_target, self.options.exponential_gain
        top = self._top_grade()
        if top is not None and top <= GAIN_EXPONENT_LIMIT:
            return None  # integer grades read before ranking: every shift would be 0 (scaling by 2**0 changes no bit)
        if not exponential and not needs_linear_gain_shift(target):
            return None
        return gain_shift(target, self.group, self.num_groups, exponential)

    def row_gain(self, target: Tensor) -> Tensor:
        """NDCG's gain of ``target``, one value per row of :attr:`group` (scaled as its query's)."""
        shift = self.gain_shift
        return gain(target, self.options.exponential_gain, None if shift is None else shift[self.group])

    @cached_property
    def gain_discount(self) -> Tensor:
        """``g(y) / log2(rank + 1)`` of each relevant row (NDCG's DCG terms)."""
        return self.row_gain(self.ranked.rel_target) * discount(self.pos)

    def _top_grade(self) -> int | None:
        """The largest relevance of the relevant rows when every one is an integer and it is known, else ``None``."""
        return self.ranked.top_grade

    def _graded(self) -> tuple[Tensor, int] | None:
        """:func:`integer_relevance` of the relevant rows (grades of at most :data:`_MAX_COUNTED_GRADES`).

        Read off :attr:`Ranked.top_grade` when the sort read it: the largest grade of the relevant
        rows is the rows' largest (they are read only when some row is relevant).
        """
        top = self._top_grade()
        if top is not None:
            return (self.ranked.rel_target.to(torch.int64), top) if top <= _MAX_COUNTED_GRADES else None
        return integer_relevance(self.ranked.rel_target, _MAX_COUNTED_GRADES)

    @cached_property
    def ideal_dcg(self) -> Callable[[int | None], Tensor]:
        """``k -> (G,)`` IDCG@k: from grade counts when they pay (:func:`route_ideal_dcg`), else from a small sort.

        Grades of at most 64 are counted: no query's gains are scaled there.
        """
        exponential = self.options.exponential_gain
        return _rows_ideal_dcg(
            self.ranked, exponential, self.ideal_cutoffs, self._ideal_by_sort, self._graded, self.width
        )

    def _ideal_by_sort(self) -> Callable[[int | None], Tensor]:
        """IDCG@k from a sort of the relevant rows by relevance descending (:func:`ideal_dcg_by_sort`)."""
        return ideal_dcg_by_sort(self.ranked, self.options.exponential_gain, self.gain_shift)


class GridQueries(SortedQueries):
    """:class:`SortedQueries` of :func:`rank_grid`'s lists; the relevant rows are found when a metric reads them.

    Counts are read off the ``(G, L)`` grid of relevant entries in rank order (integers: exact
    in any order of summation); every other reduction is the sort path's own over the same
    relevant rows, so the values are the sort path's bit for bit. ``target_max``: the largest
    relevance of the batch when validation read it; ``size``: ``None`` when every query has all
    ``L`` candidates.
    """

    def __init__(
        self,
        sorted_target: Tensor,
        relevant: Tensor,
        size: Tensor | None,
        weight: Tensor | None,
        options: RankingOptions,
        target_max: float | None = None,
    ) -> None:
        self.sorted_target, self.relevant, self.weight, self.target_max = sorted_target, relevant, weight, target_max
        self.num_groups, width = relevant.shape
        self.width = width if size is None else None  # every query's size, when none was padded
        self._in_k = {}
        QueryStats.__init__(self, relevant.sum(1, dtype=torch.float64), size, options)  # type: ignore[arg-type]

    @property
    def query_size(self) -> Tensor:
        """``(G,)`` int64 candidates of each query (made on first use when every query has all ``L``)."""
        if self._size is None:
            self._size = torch.full((self.num_groups,), self.width, dtype=torch.int64, device=self.relevant.device)
        return self._size

    @cached_property
    def rel_t(self) -> Tensor:
        """The relevant rows' relevance in the input's dtype (:attr:`ranked` holds it as float64)."""
        rel_group, rel_pos = torch.nonzero(self.relevant).unbind(1)
        self.__dict__["_rows"] = rel_group, rel_pos
        return self.sorted_target[rel_group, rel_pos]

    @cached_property
    def ranked(self) -> Ranked:  # type: ignore[override]
        """The relevant rows, as :func:`rank_rows` returns them."""
        rel_t = self.rel_t
        rel_group, rel_pos = self.__dict__["_rows"]
        return Ranked(rel_group, rel_pos, rel_t.to(torch.float64), self.query_size, self.weight, self.num_groups)

    def _count_hits(self, k: int | None) -> Tensor:
        if k is None or k >= self.relevant.shape[1]:  # the whole list: the relevant count, the same sum
            return self.num_rel
        return self.relevant[:, :k].sum(1, dtype=torch.float64)

    def in_k(self, k: int | None) -> Tensor | None:
        """Which relevant rows rank in the top ``k``; ``None`` (all) also when ``k`` is at least the grid's width."""
        return None if k is not None and k >= self.relevant.shape[1] else super().in_k(k)

    def _top_grade(self) -> int | None:
        """The relevant rows' largest relevance for integer input (``None`` for floating): one host read, shared.

        Read once for :attr:`gain_shift` and :meth:`_graded` (validation's ``target_max`` when given);
        0 without relevant rows (nothing is scaled then).
        """
        if "_top" not in self.__dict__:
            rel_t = self.rel_t
            top = None
            if not rel_t.is_floating_point():
                top = int(self.target_max) if self.target_max is not None else int(rel_t.max()) if rel_t.numel() else 0
            self.__dict__["_top"] = top
        return self.__dict__["_top"]

    def _ideal_by_sort(self) -> Callable[[int | None], Tensor]:
        """:func:`ideal_dcg_by_sort`'s IDCG@k, from one sort of each small list by relevance (no key, no host read).

        Lists without padding of at most :data:`_SMALL_GRID` entries: sorted row by row, the
        relevant entries are each query's first ones, in the order (query, relevance descending)
        of :func:`ideal_dcg_by_sort`'s sort, so every term and every sum is its own, bit for bit.
        """
        target = self.sorted_target
        if self.width is None or target.numel() > _SMALL_GRID:
            return super()._ideal_by_sort()
        ideal = torch.sort(target, dim=1, descending=True).values
        group, pos = torch.nonzero(ideal > 0).unbind(1)
        shift = self.gain_shift
        value = gain(
            ideal[group, pos].to(torch.float64), self.options.exponential_gain, None if shift is None else shift[group]
        )
        return _ideal_sums(group, pos, value * discount(pos), self.num_groups)

    def _graded(self) -> tuple[Tensor, int] | None:
        """:func:`integer_relevance` of the relevant rows, read without a conversion for integer input."""
        top = self._top_grade()
        if top is None:
            return super()._graded()
        return (self.rel_t, top) if top <= _MAX_COUNTED_GRADES else None

    @cached_property
    def within(self) -> Tensor:
        """Index of each relevant row among its query's relevant rows (0 for the first)."""
        return torch.cumsum(self.relevant, 1)[self.group, self.pos].sub_(1)


def sorted_columns(queries: SortedQueries, requests: Sequence[Request]) -> Columns:
    """Per-query values of each ``(spec, k)`` request on the sort path, made one request at a time.

    ``queries``: :class:`SortedQueries` of the ranked rows (or the device path's
    :class:`~torchmetrics_ext.functional.ranking._dense.DenseQueries`); ``k=None`` is the whole
    list. Entries of queries without relevant rows are 0 (replaced by the caller's policy).
    """
    queries.ideal_cutoffs = max(1, sum(spec.counts_grades for spec, _ in requests))
    return Columns(requests, lambda i: requests[i][0].sort_value(queries, requests[i][1]), queries.forget)


def sorted_values(queries: SortedQueries, requests: Sequence[Request]) -> tuple[Tensor, Tensor]:
    """:func:`sorted_columns` side by side: ``(values (G, len(requests)), num_relevant (G,))``.

    Only for a caller that needs every query's values side by side (tests comparing paths); a
    reduction over queries reads :func:`sorted_columns` one request at a time instead.
    """
    if not requests:
        return queries.num_rel.new_zeros(queries.num_groups, 0), queries.num_rel
    return sorted_columns(queries, requests).stacked(), queries.num_rel
