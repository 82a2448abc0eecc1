r"""Metrics at finite cutoffs for rows grouped by query, without sorting: a vectorised top-k merge.

When the query ids are non-decreasing (each query's rows are contiguous, as data loaders emit
them), every metric at a cutoff only needs each query's ``k`` best rows in rank order, and no
global sort is necessary:

1. Each row gets one integer rank key: its score's order-preserving bits, negated (higher
   score first), with the relevance grade in the low bits (relevance ascending on equal scores,
   the tie rule of :mod:`~torchmetrics_ext.functional.ranking._kernel`). Equal keys are
   identical rows, so any order among them gives the same metrics. The keys are ``int32`` when
   they fit in 31 bits (probability-like scores) and integer-valued ``float64`` otherwise, both
   exact and both with vectorised ``minimum``/``maximum``.
2. Queries are ordered by size. Round ``j`` takes the ``j``-th row of every query that has
   one (a prefix of that order, one ``index_select``) and merges it into each query's sorted
   list of its best keys, held as a ``(k, queries)`` matrix, with one elementwise ``clamp``:
   ``new[a] = min(top[a], max(top[a - 1], v))`` (``top[-1] = -inf``), written into a second
   copy of the matrix (the copies alternate; a query's lists end in the copy of its last round).
3. After the longest query's rounds, column ``q`` holds query ``q``'s ``k`` best keys in rank
   order; relevance counts (and grade counts for NDCG's ideal DCG, when a spec sets
   ``counts_grades`` and the count table pays, else IDCG comes from a sort of the relevant rows)
   were accumulated in the same rounds. Each metric's ``topk_value`` is then a reduction over
   the ``(k, queries)`` matrix (:class:`TopQueries`).

The work is ``O(k)`` elementwise operations per row (no padding: round ``j`` touches only the
queries that are longer than ``j``) and the Python loop runs over candidate positions, each
step covering every query at once; there is no loop over queries or rows.
:func:`grouped_topk_values` returns ``None`` (and the caller sorts) when this does not apply
or would not pay: a metric without a ``topk_value`` (R-precision), unsorted ids, a ``None``
cutoff, a cutoff above :data:`MAX_K`, very long queries compared to the number of rows, scores
that are not float32-exact, or relevance that is not a small integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._columns import Columns
from torchmetrics_ext.functional.ranking._kernel import (
    QueryStats,
    Ranked,
    grade_counts_pay,
    ideal_dcg_by_sort,
    ideal_dcg_from_counts,
    integer_relevance,
    route_ideal_dcg,
)
from torchmetrics_ext.functional.ranking._spec import RankingOptions, Request

MAX_K = 64  # largest cutoff merged (the work grows with k); larger cutoffs sort
MAX_GRADE = 64  # largest integer relevance grade kept in the keys' low bits
ROWS_PER_ROUND = 1000  # merge when rows >= this x the longest query (a round costs ~1000 rows' sort)
_INT32_MAX = (1 << 31) - 1
_PAD_INT32 = _INT32_MAX - MAX_GRADE * 2 + 1  # above every int32 key, its grade bits zero (MAX_GRADE < 2**7)
_PAD_FLOAT64 = float(1 << 52)  # above every float64 key (< 2**40), a multiple of every 2**grade_bits


def _bounds(dtype: torch.dtype) -> tuple[float, float]:
    """Key values below and above every key of ``dtype`` (the pad's grade bits are zero)."""
    return (-float(1 << 31), float(_PAD_INT32)) if dtype == torch.int32 else (-_PAD_FLOAT64, _PAD_FLOAT64)


def _rank_keys(preds: Tensor, grades: Tensor, grade_bits: int, writable: bool = False) -> Tensor | None:
    """Keys ascending in rank order: ``int32`` below ``2**31 - 1``, else integer-valued ``float64``.

    ``None`` when a float64 score is not exactly a float32 (the order of its bits would need 64).
    ``writable`` float32 ``preds`` are turned into the keys in place (no new row-sized tensor).
    """
    p32 = float32_scores(preds)
    if p32 is None:
        return None
    # + 0.0 folds -0.0 onto +0.0 (equal scores, equal keys); the result is a tensor of our own
    own = p32.add_(0.0) if writable or p32 is not preds else p32 + 0.0
    ordered = own.view(torch.int32)
    low, high = (int(v) for v in torch.aminmax(ordered))
    if low < 0:  # negative scores: flip their magnitude bits so that the integers order like the floats
        ordered.bitwise_xor_((ordered >> 31).bitwise_and_(_INT32_MAX))
        low, high = (int(v) for v in torch.aminmax(ordered))
    if ((high - low + 1) << grade_bits) <= _PAD_INT32:
        # high - ordered lies in [0, high - low]: no int32 overflow (NaN, the only -2**31 pattern, is rejected)
        key = torch.sub(torch.tensor(high, dtype=torch.int32, device=ordered.device), ordered, out=ordered)
        key <<= grade_bits
        key |= grades
        return key
    return (high - ordered.double()).mul_(float(1 << grade_bits)).add_(grades)  # exact below 2**40


class _GradeCounter:
    """Per-query counts of each grade, packed several to an int64 word (one add per word and round).

    A count never exceeds the longest query, so it fits in ``width`` bits and a word holds
    ``63 // width`` grades; a lookup table turns each row's grade into the increment of its word.
    """

    def __init__(self, levels: int, longest: int, num_groups: int, device: torch.device) -> None:
        self.levels, self.num_groups, self.device = levels, num_groups, device
        self.width = max(longest.bit_length(), 1)
        self.per_word = 63 // self.width
        self.firsts = list(range(1, levels, self.per_word))  # first grade of each word (grade 0 is not counted)
        grade = torch.arange(levels, device=device)
        self.tables = [
            torch.where(
                (grade >= first) & (grade < first + self.per_word),
                torch.ones_like(grade) << (self.width * (grade - first)).clamp_min(0),
                0,
            )
            for first in self.firsts
        ]
        self.words = [torch.zeros(num_groups, dtype=torch.int64, device=device) for _ in self.firsts]

    def add(self, grade: Tensor, live: int) -> None:
        """Count one row of grade ``grade[i]`` for each of the first ``live`` queries."""
        for word, table in zip(self.words, self.tables):
            word.narrow(0, 0, live).add_(table.index_select(0, grade))

    def counts(self) -> Tensor:
        """``(G, levels)`` int64 counts (column 0, the irrelevant rows, is left at zero)."""
        out = torch.zeros(self.num_groups, self.levels, dtype=torch.int64, device=self.device)
        for word, first in zip(self.words, self.firsts):
            last = min(first + self.per_word, self.levels)
            shifts = self.width * torch.arange(last - first, device=word.device)
            out[:, first:last] = (word.unsqueeze(1) >> shifts) & ((1 << self.width) - 1)
        return out


def _merge_topk(
    key: Tensor,
    at: Tensor,
    size: Tensor,
    k: int,
    grade_mask: int,
    levels: int | None,
    weights: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Merge every query's rows into its sorted list of ``k`` best keys.

    The queries come longest first: query ``i`` has ``size[i]`` rows from ``at[i]`` on (``at``
    is only read). Returns ``(top (k, G), num_rel (G,), grade counts (G, levels) or None,
    weights (G,) or None)`` in that order of queries; missing entries hold the pad key.
    """
    num_groups = size.numel()
    longest = int(size[0])
    per_size = torch.bincount(size, minlength=longest + 1)
    live = torch.cumsum(per_size.flip(0), 0).flip(0)[1:].tolist()  # live[j]: queries longer than j
    low, pad = _bounds(key.dtype)
    # two copies of the lists: round j reads one and writes the other (a query's final lists are
    # in the copy written at its last round, j = size - 1)
    lists = torch.full((k + 1, num_groups), pad, dtype=key.dtype, device=key.device)
    lists[0] = low
    written = lists.clone()
    num_rel = torch.zeros(num_groups, dtype=torch.int32, device=key.device)
    counter = None if levels is None else _GradeCounter(levels, longest, num_groups, key.device)
    weight = None
    if weights is not None:
        weight = torch.zeros(num_groups, dtype=torch.float64, device=key.device)
    integer = key.dtype == torch.int32
    for j in range(longest):
        live_j = live[j]
        rows = at.narrow(0, 0, live_j)
        value = key[j:].index_select(0, rows)  # the j-th row of each query longer than j
        filled = min(j + 1, k)  # list entries that can change: the first j + 1
        # new[a] = min(top[a], max(top[a - 1], v)): v clamped between its neighbours
        torch.clamp(
            value,
            lists[:filled].narrow(1, 0, live_j),
            lists[1 : filled + 1].narrow(1, 0, live_j),
            out=written[1 : filled + 1].narrow(1, 0, live_j),
        )
        lists, written = written, lists
        grade = value.bitwise_and_(grade_mask) if integer else value.remainder_(grade_mask + 1).to(torch.int32)
        if counter is not None:
            counter.add(grade, live_j)
        else:
            num_rel.narrow(0, 0, live_j).add_(grade.clamp_max_(1))
        if weight is not None:
            part = weight.narrow(0, 0, live_j)
            torch.maximum(part, weights[j:].index_select(0, rows), out=part)  # type: ignore[index]
    last_in_lists = (size - longest) % 2 == 0  # the last round wrote `lists`
    top = torch.where(last_in_lists, lists, written, out=written)[1:]  # in place: no new (k, G) matrix
    grade_counts = None
    if counter is not None:
        grade_counts = counter.counts()
        num_rel = grade_counts[:, 1:].sum(1)
    return top, num_rel, grade_counts, weight


class TopQueries(QueryStats):
    """The top-k merge's view of each query: the grades of its ``k`` best rows in rank order.

    ``grade`` and ``relevant`` are ``(k, G)`` (queries in the merge's order, longest first;
    missing entries are grade 0); ``ranks`` is the ``(k, 1)`` column of ranks ``1..k``.
    """

    def __init__(
        self,
        top: Tensor,
        grade_mask: int,
        num_rel: Tensor,
        size: Tensor,
        ideal: Callable[[int | None], Tensor] | None,
        options: RankingOptions,
    ) -> None:
        if top.dtype == torch.int32:
            self.grade = top.bitwise_and_(grade_mask)  # the keys are not needed any more; the pad's grade bits are zero
        else:
            self.grade = torch.remainder(top, grade_mask + 1).to(torch.int32)
        self.relevant = self.grade > 0
        self._ideal = ideal
        super().__init__(num_rel.to(torch.float64), size, options)  # float64 sizes made when read

    @cached_property
    def ranks(self) -> Tensor:
        """``(k, 1)`` float64 ranks ``1..k`` (MAP's precision at each hit; made when first read)."""
        kmax = self.relevant.shape[0]
        return torch.arange(1, kmax + 1, device=self.relevant.device, dtype=torch.float64).unsqueeze(1)

    def top(self, k: int) -> Tensor:
        """``(min(k, kmax), G)`` bool: which of each query's best ``k`` rows are relevant."""
        return self.relevant[: min(k, self.relevant.shape[0])]

    def depth(self, k: int) -> int:
        """Rows of each query's top ``k`` that the merge kept: ``min(k, kmax)``."""
        return min(k, self.relevant.shape[0])

    def prefix(self, name: str, terms: Callable[[], Tensor]) -> Tensor:
        """``(kmax, G)`` running sums over the ranks of ``terms()``, made once per ``name``.

        Row ``d - 1`` sums each query's top ``d`` rows: a metric read at many cutoffs takes one row
        per cutoff instead of summing its top ``k`` each time.
        """
        tables: dict[str, Tensor] = self.__dict__.setdefault("_prefix", {})
        if name not in tables:
            tables[name] = torch.cumsum(terms(), 0)
        return tables[name]

    def _count_hits(self, k: int | None) -> Tensor:
        counts = self.prefix("hits", lambda: self.relevant.to(torch.int32))
        return counts[self.depth(self.relevant.shape[0] if k is None else k) - 1].to(torch.float64)

    @cached_property
    def first_hit(self) -> Tensor:
        """``(G,)`` int64 0-based rank of each query's first relevant row among the kept ones (``kmax`` for none)."""
        found = self.relevant.any(0)
        first = self.relevant.view(torch.uint8).argmax(0)  # the first of equal values
        return torch.where(found, first, self.relevant.shape[0])

    def ideal_dcg(self, k: int) -> Tensor:
        """``(G,)`` IDCG@k: from the merge's grade counts, or a sort of the relevant rows (a spec asks for it)."""
        if self._ideal is None:
            raise RuntimeError("the top-k merge has no IDCG: set `counts_grades` in the metric's spec")
        return self._ideal(k)


def _ideal_dcg_route(
    grades: Tensor, size: Tensor, order: Tensor, levels: int, exponential: bool, cutoffs: int = 1
) -> tuple[int | None, Callable[[int | None], Tensor] | None]:
    """NDCG's IDCG on the merge: ``(levels, None)`` to count grades in the rounds, or ``(None, idcg)``.

    The merge counts each query's rows of every grade when the count table pays
    (:func:`~torchmetrics_ext.functional.ranking._kernel.grade_counts_pay` at ``cutoffs`` cutoffs); otherwise IDCG comes
    from a sort of the relevant rows (``grades``: the rows' integer relevance, grouped by query,
    ``size`` rows per query in id order), returned in the merge's order of queries (``order``).
    """
    num_groups = size.numel()
    if grade_counts_pay(num_groups, levels, grades.numel(), cutoffs):
        return levels, None
    rel_rows = torch.nonzero(grades).reshape(-1)
    rel_group = torch.searchsorted(torch.cumsum(size, 0), rel_rows, right=True)
    empty = torch.empty(0, dtype=torch.int64, device=grades.device)
    ranked = Ranked(rel_group, empty, grades[rel_rows].to(torch.float64), size, None, num_groups)
    by_id = ideal_dcg_by_sort(ranked, exponential, None)  # grades of at most MAX_GRADE: no gain scaling
    return None, lambda k: by_id(k)[order]


def _by_id(values: Tensor, order: Tensor) -> Tensor:
    """Rows ``values[i]`` of query ``order[i]`` put back in query id order."""
    out = torch.empty_like(values)
    out[order] = values
    return out


def _inverse(order: Tensor) -> Tensor:
    """The permutation undoing ``order``: gathering ``values`` by it puts them in query id order as _by_id does."""
    return _by_id(torch.arange(order.numel(), device=order.device), order)


def merge_may_apply(num_queries: int, requests: Sequence[Request]) -> bool:
    """Whether :func:`grouped_topk_values` may take padded lists of ``num_queries`` queries.

    It needs a ``topk_value`` and a cutoff ``k <= MAX_K`` for every request, and at least
    ``ROWS_PER_ROUND`` rows per candidate position: ``n >= ROWS_PER_ROUND * longest``, which
    ``num_queries`` lists of at most ``longest`` rows each meet only from ``ROWS_PER_ROUND`` lists.
    """
    if num_queries < ROWS_PER_ROUND:
        return False
    return all(spec.topk_value is not None and k is not None and k <= MAX_K for spec, k in requests)


def grouped_topk_values(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor,
    weights: Tensor | None,
    requests: Sequence[Request],
    options: RankingOptions,
    preds_writable: bool = False,
) -> tuple[Columns, Tensor, Ranked] | None:
    """Per-query values of finite-cutoff requests for rows grouped by query, or ``None``.

    Applies when every request has a cutoff ``k <= MAX_K`` and a spec with a ``topk_value``.
    Returns ``(columns, num_relevant (G,), ranked)`` like the sort path (queries in id order,
    one request's ``(G,)`` values at a time; ``ranked`` carries only sizes and weights), with the
    same values.
    ``preds_writable``: ``preds`` is a private copy that may be overwritten (and then is).
    """
    n = preds.numel()
    value_fns = [fn for spec, k in requests if (fn := spec.topk_value) is not None and k is not None and k <= MAX_K]
    if n < 2 or n < ROWS_PER_ROUND or not value_fns or len(value_fns) < len(requests):
        return None  # fewer rows than one round needs for the longest query (at least 1 row): nothing read
    sample = indexes[:: max(n // 4096, 1)]
    if not bool((sample[1:] >= sample[:-1]).all()):
        return None  # ids not sorted: found cheaply before the full check
    ids, size = torch.unique_consecutive(indexes, return_counts=True)
    if ids.numel() > 1 and not bool((ids[1:] > ids[:-1]).all()):
        return None  # some query's rows are not contiguous
    longest = int(size.max())
    if n < ROWS_PER_ROUND * longest:
        return None  # few rows per round: the sort is cheaper than the rounds' fixed cost
    graded = integer_relevance(target, MAX_GRADE, torch.int32)
    if graded is None:
        return None
    grades, top_grade = graded
    grade_bits = max(top_grade.bit_length(), 1)
    key = _rank_keys(preds, grades.to(torch.int32), grade_bits, preds_writable)
    if key is None:
        return None
    cutoffs = [k for _, k in requests if k is not None]
    starts = torch.cumsum(size, 0).sub_(size)
    order = torch.sort(size.to(torch.int32).neg_(), stable=True).indices  # longest first
    size_ordered = size[order]
    kmax = min(max(cutoffs), longest)
    levels, ideal = None, None
    ideal_cutoffs = sum(spec.counts_grades for spec, _ in requests)
    if ideal_cutoffs:
        levels, ideal = _ideal_dcg_route(grades, size, order, top_grade + 1, options.exponential_gain, ideal_cutoffs)
    top, num_rel, counts, weight = _merge_topk(
        key, starts[order], size_ordered, kmax, (1 << grade_bits) - 1, levels, weights
    )
    if counts is not None:
        ideal = ideal_dcg_from_counts(counts, longest, options.exponential_gain)
    queries = TopQueries(top, (1 << grade_bits) - 1, num_rel, size_ordered, ideal, options)
    num_rel = _by_id(queries.num_rel, order)  # every path reduces in id order
    weight = None if weight is None else _by_id(weight, order)
    empty = torch.empty(0, dtype=torch.int64, device=preds.device)
    ranked = Ranked(empty, empty, empty.to(torch.float64), size, weight, int(size.numel()))
    by_id = _inverse(order)  # each request's values are gathered back to id order (cheaper than a scatter)
    columns = Columns(requests, lambda i: value_fns[i](queries, cutoffs[i]).index_select(0, by_id), queries.forget)
    return columns, num_rel, ranked


GRID_TOPK_WIDTH = 256  # lists at least this long (and 8 times the largest cutoff) take torch.topk, not a sort
GRID_MAX_K = 1024  # largest cutoff of torch.topk on lists (its (k, G) values cost little next to the lists)
WIDE_LIST = 4096  # lists at least this long (and 16 times the cutoff) first find the entries that can rank in it


def grid_topk_applies(width: int, requests: Sequence[Request]) -> bool:
    """Whether :func:`grid_topk_values` takes lists of ``width`` candidates (long lists, finite cutoffs).

    Cutoffs up to :data:`GRID_MAX_K` (``RankingMetrics(ks=[1, 10, 100])`` on a catalogue), where
    the merge stops at :data:`MAX_K`: a selection's cost grows with ``k`` far slower than its rounds'.
    """
    cutoffs = [k for spec, k in requests if spec.topk_value is not None and k is not None and k <= GRID_MAX_K]
    return len(cutoffs) == len(requests) and width >= max(GRID_TOPK_WIDTH, 8 * max(cutoffs))


WIDE_CANDIDATES = 4
"""A wide list's entries scored at least its ``k``-th best score are gathered when no list has more than this
many times ``k`` (and at least 256) of them; heavy ties at the cutoff take the keys of every entry instead."""


def _wide_candidates(preds: Tensor, keep: Tensor | None, kmax: int) -> tuple[Tensor, Tensor, int] | None:
    """The entries of wide ``(G, L)`` lists that can rank in their list's top ``kmax``: ``(rows, columns, M)``.

    An entry scored below its list's ``kmax``-th best (real) score has ``kmax`` entries ranked
    before it whatever the tie rule, so each list's top ``kmax`` lies among the entries scored at
    least that score (every kept entry of a list shorter than ``kmax``). One ``torch.topk`` of the
    scores (padding as ``-inf``) finds the score, one comparison the entries, in row-major order;
    ``M`` is the most any list holds. ``None`` when a list holds more than ``WIDE_CANDIDATES``
    times ``kmax`` of them (heavy ties at the cutoff), or fewer than it must (NaN scores, which
    validation rejects), so that every real entry is keyed as before.
    """
    width = preds.shape[1]
    scores = preds if keep is None else preds.masked_fill(~keep, -math.inf)
    kth = torch.topk(scores, kmax, dim=1, sorted=False).values.amin(1, keepdim=True)
    candidate = preds >= kth  # NaN, only where `keep` drops it, compares False
    if keep is not None:
        candidate &= keep
    count = candidate.sum(1, dtype=torch.int32)
    size = torch.full_like(count, width) if keep is None else keep.sum(1, dtype=torch.int32)
    # one read: the fewest candidates beyond the least a list must hold, and the most a list holds
    short, most = (int(v) for v in torch.stack([(count - size.clamp_max(kmax)).min(), count.max()]))
    if short < 0 or most > max(WIDE_CANDIDATES * kmax, GRID_TOPK_WIDTH):
        return None
    rows, columns = candidate.nonzero().unbind(1)
    return rows, columns, most


def _gather_candidates(
    preds: Tensor, target: Tensor, found: tuple[Tensor, Tensor, int], kmax: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(preds, target, keep)``: ``(G, max(M, kmax))`` lists of each list's candidates (:func:`_wide_candidates`).

    Unset slots are padding (``keep`` False), as a list shorter than its grid.
    """
    rows, columns, most = found
    num_groups = preds.shape[0]
    count = torch.bincount(rows, minlength=num_groups)
    start = torch.cumsum(count, 0).sub_(count)
    slot = torch.arange(rows.numel(), device=rows.device).sub_(start.index_select(0, rows))
    shape = (num_groups, max(most, kmax))
    sub_preds = preds.new_zeros(shape)
    sub_preds[rows, slot] = preds[rows, columns]
    sub_target = target.new_zeros(shape)
    sub_target[rows, slot] = target[rows, columns]
    sub_keep = torch.arange(shape[1], device=rows.device) < count.unsqueeze(1)
    return sub_preds, sub_target, sub_keep


def _drop_padding(
    preds: Tensor, target: Tensor, keep: Tensor, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """Padded lists made safe for the rank keys: ``(preds, target, keep, weights, size)`` of the non-empty lists.

    Lists without a kept entry are no query (as in :func:`~._kernel.rank_grid`: a host read);
    padded entries (whose values may be anything, NaN included) get relevance 0 and a kept score
    of the batch, so they neither widen the keys' range nor count; their keys are then the pad.
    """
    size = keep.sum(1)
    present = size > 0
    if not bool(present.all()):
        preds, target, keep, size = preds[present], target[present], keep[present], size[present]
        weights = None if weights is None else weights[present]
    dropped = ~keep
    fill = preds.masked_fill(dropped, -math.inf).amax() if preds.numel() else preds.new_zeros(())
    return preds.masked_fill(dropped, fill), target.masked_fill(dropped, 0), keep, weights, size


def _grid_ideal_dcg(
    grades: Tensor, top_grade: int, num_rel: Tensor, size: Tensor, padded: bool, exponential: bool, cutoffs: int
) -> Callable[[int | None], Tensor]:
    """IDCG@k of ``(G, L)`` lists' integer ``grades`` (0 where ``padded``), by the sort path's :func:`route_ideal_dcg`.

    ``num_rel``: each list's count of grades above 0; ``size``: each list's real entries. The
    counts come off the grid (the irrelevant column zeroed when padded, so that no count exceeds
    the longest list), the relevant entries are found only to sort them: the same route on the
    same counts as :class:`~._kernel.GridQueries`, so its values bit for bit.
    """
    num_groups, width = grades.shape

    def count_grades(values: Tensor, levels: int) -> Tensor:
        cells = values.reshape(-1)
        if num_groups > 1:  # each list's grades offset into its own row of the table
            cells = (torch.arange(num_groups, device=values.device).unsqueeze(1) * levels + values).reshape(-1)
        counts = torch.bincount(cells, minlength=num_groups * levels).reshape(num_groups, levels)
        if padded:  # padded entries were counted as grade 0: drop that column (it gains nothing)
            counts[:, 0] = 0
        return counts

    def by_sort() -> Callable[[int | None], Tensor]:
        rel_group, rel_pos = torch.nonzero(grades).unbind(1)
        ranked = Ranked(rel_group, rel_pos, grades[rel_group, rel_pos].to(torch.float64), size, None, num_groups)
        return ideal_dcg_by_sort(ranked, exponential, None)  # grades of at most MAX_GRADE: no gain scaling

    return route_ideal_dcg(
        int(num_rel.sum()),
        size,
        exponential,
        cutoffs,
        graded=lambda: (grades, top_grade),
        count_relevant=lambda: num_rel,
        count_grades=count_grades,
        by_sort=by_sort,
        longest=None if padded else width,
    )


def float32_scores(preds: Tensor) -> Tensor | None:
    """``preds.float()``, or ``None`` when a float64 score is not exactly a float32 (its order would need 64 bits)."""
    p32 = preds.float()
    if preds.dtype == torch.float64 and not bool(torch.equal(p32.double(), preds)):
        return None
    return p32


def grid_topk_values(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    requests: Sequence[Request],
    options: RankingOptions,
    keep: Tensor | None = None,
    top_grade: int | None = None,
    any_width: bool = False,
) -> tuple[Columns, Tensor, Ranked] | None:
    """:func:`grouped_topk_values` of ``(G, L)`` padded lists, from one ``torch.topk`` per list.

    For few long lists (one query of 100k candidates) the ``k`` best rows come from a partial
    selection instead of sorting every row: the same integer rank keys as the merge (equal keys
    are identical rows, so ties follow the sort path's rule), then the merge's own value
    functions on the ``(k, G)`` keys. ``keep``: ``(G, L)`` bool, the real candidates (``None``:
    all); a padded entry gets the pad key, which ranks after every real one with grade 0, as a
    query shorter than ``k`` has on the merge. ``weights``: ``(G,)`` query weights. ``top_grade``:
    the largest relevance when the caller read it (``target`` then holds integer grades of at
    most :data:`MAX_GRADE`, as :func:`integer_relevance` returns them), not read again. ``None``
    when :func:`grid_topk_applies` does not hold or the relevance is not a small integer.
    ``any_width``: lists of any width are taken (every request still needs a cutoff of at most
    :data:`GRID_MAX_K`): many short padded lists, which the merge would first gather into flat rows.
    """
    num_groups, width = preds.shape
    if num_groups == 0 or not grid_topk_applies(1 << 62 if any_width else width, requests):
        return None
    kmax = min(max(k for _, k in requests if k is not None), width)
    if width >= max(WIDE_LIST, 16 * kmax):
        # wide lists (a catalogue): the rank keys (several passes over every entry, float64 for wide score
        # ranges) are made for the few entries that can rank in the top kmax; counts and IDCG read every entry
        found = _wide_candidates(preds, keep, kmax)
        if found is not None:
            return _wide_topk_values(preds, target, weights, requests, options, keep, top_grade, found, kmax)
    size = None
    if keep is not None:
        preds, target, keep, weights, size = _drop_padding(preds, target, keep, weights)
        num_groups = preds.shape[0]
        if num_groups == 0:
            return None
    grades = target
    if top_grade is None:
        graded = integer_relevance(target, MAX_GRADE, torch.int32)
        if graded is None:
            return None
        grades, top_grade = graded
    grades = grades.to(torch.int32)
    top = _top_keys(preds, grades, keep, top_grade, kmax, writable=keep is not None)
    if top is None:
        return None
    return _topk_columns(top, grades, top_grade, keep is not None, size, weights, requests, options)


def _top_keys(
    preds: Tensor, grades: Tensor, keep: Tensor | None, top_grade: int, kmax: int, writable: bool
) -> Tensor | None:
    """``(kmax, G)`` rank keys of each ``(G, L)`` list's best ``kmax`` entries in rank order; ``None`` (float64 scores).

    ``grades``: int32 relevance; ``keep``: the real entries (padded ones get the pad key, ranked
    last with grade 0); ``writable``: ``preds`` may be overwritten.
    """
    num_groups, width = preds.shape
    grade_bits = max(top_grade.bit_length(), 1)
    key = _rank_keys(preds.reshape(-1), grades.reshape(-1), grade_bits, writable=writable)
    if key is None:
        return None
    if keep is not None:  # padded entries rank last with grade 0
        key.masked_fill_(~keep.reshape(-1), _bounds(key.dtype)[1])
    key = key.reshape(num_groups, width)
    if kmax == width:  # the whole list: a row-wise sort (cheaper than a selection of every entry)
        return torch.sort(key, dim=1).values.t().contiguous()
    return torch.topk(key, kmax, dim=1, largest=False, sorted=True).values.t().contiguous()


def _topk_columns(
    top: Tensor,
    grades: Tensor,
    top_grade: int,
    padded: bool,
    size: Tensor | None,
    weights: Tensor | None,
    requests: Sequence[Request],
    options: RankingOptions,
) -> tuple[Columns, Tensor, Ranked]:
    """:func:`grid_topk_values`' result from the lists' ``top`` keys and every entry's ``grades`` (0 where padded).

    ``size``: each list's real entries (``None``: the width of ``grades``); ``weights``: ``(G,)``.
    """
    num_groups, width = grades.shape
    relevant = grades.view(torch.bool) if grades.dtype == torch.uint8 and top_grade <= 1 else grades > 0
    num_rel = relevant.sum(1, dtype=torch.int32).to(torch.int64)  # int32 sums: ~2x faster than int64
    if size is None:
        size = torch.full((num_groups,), width, dtype=torch.int64, device=grades.device)
    ideal = None
    ideal_cutoffs = sum(spec.counts_grades for spec, _ in requests)
    if ideal_cutoffs:
        ideal = _grid_ideal_dcg(
            grades.to(torch.int32), top_grade, num_rel, size, padded, options.exponential_gain, ideal_cutoffs
        )
    queries = TopQueries(top, (1 << max(top_grade.bit_length(), 1)) - 1, num_rel, size, ideal, options)
    weight = None if weights is None else weights.to(torch.float64).clamp_min(0.0).add_(0.0)  # as rank_grid
    empty = torch.empty(0, dtype=torch.int64, device=grades.device)
    ranked = Ranked(empty, empty, empty.to(torch.float64), size, weight, num_groups)
    cutoffs = [k for _, k in requests if k is not None]
    value_fns = [spec.topk_value for spec, _ in requests]
    columns = Columns(requests, lambda i: value_fns[i](queries, cutoffs[i]), queries.forget)  # type: ignore[misc]
    return columns, queries.num_rel, ranked


def _wide_topk_values(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    requests: Sequence[Request],
    options: RankingOptions,
    keep: Tensor | None,
    top_grade: int | None,
    found: tuple[Tensor, Tensor, int],
    kmax: int,
) -> tuple[Columns, Tensor, Ranked] | None:
    """:func:`grid_topk_values` of wide lists from their candidates (:func:`_wide_candidates`): its values bit for bit.

    The top ``kmax`` keys are those of the candidates gathered into narrow lists (the same keys
    of the same entries: the same grades in the same order); each list's size, relevant count
    and IDCG come from all its entries, as there.
    """
    if keep is not None:
        target = target.masked_fill(~keep, 0)  # padded entries count as grade 0 (their relevance may be anything)
    grades = target
    if top_grade is None:
        graded = integer_relevance(target, MAX_GRADE, torch.int32)
        if graded is None:
            return None
        grades, top_grade = graded
    sub_preds, sub_grades, sub_keep = _gather_candidates(preds, grades, found, kmax)
    size = None
    if keep is not None:
        size = keep.sum(1, dtype=torch.int32).to(torch.int64)
        present = size > 0
        if not bool(present.all()):  # lists without a kept entry are no query (and hold no candidate)
            size, grades = size[present], grades[present]
            sub_preds, sub_grades, sub_keep = sub_preds[present], sub_grades[present], sub_keep[present]
            weights = None if weights is None else weights[present]
        if size.numel() == 0:
            return None
    top = _top_keys(sub_preds, sub_grades.to(torch.int32), sub_keep, top_grade, kmax, writable=True)
    if top is None:
        return None
    return _topk_columns(top, grades, top_grade, keep is not None, size, weights, requests, options)
