"""First-hit counting: MRR and hit rate without a sort, from the rank of each query's first relevant row.

Under the tie rule (score descending, relevance ascending) a query's first relevant row has the
query's best relevant score ``b``, and the rows ranked before it are those scored above ``b``
plus the non-relevant rows scored exactly ``b``. So one segment max, one gather and one count
give its rank, comparing the scores themselves (exact for any float, ``±inf`` included). The
values equal the sort path's.

Padded ``(Q, L)`` lists (:func:`grid_first_hit_values`) need no segment reduction: a row-wise
``amax`` and one comparison per entry, whatever the width (a 50,000-candidate catalogue), where
the row-wise sort of every list cost ~25x more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._columns import Columns
from torchmetrics_ext.functional.ranking._inputs import PaddedGrid
from torchmetrics_ext.functional.ranking._kernel import Ranked
from torchmetrics_ext.functional.ranking._spec import Request


class FirstHits:
    """Per query: rows ranked before its first relevant row, and whether it has a relevant row.

    ``longest``: no query has more rows (a cutoff at least that long is the whole list), when known.
    """

    def __init__(self, ahead: Tensor, has_rel: Tensor, longest: int | None = None) -> None:
        self.ahead = ahead  # (G,) int64
        self.has_rel = has_rel  # (G,) bool
        self.longest = longest

    def hit(self, k: int | None) -> Tensor:
        """Whether each query's first relevant row ranks in its top ``k`` (``None``: anywhere)."""
        if k is None or (self.longest is not None and k >= self.longest):
            return self.has_rel
        return self.has_rel & (self.ahead < k)

    @cached_property
    def reciprocal_rank(self) -> Tensor:
        """``(G,)`` float64 ``1 / rank`` of each query's first relevant row (for every cutoff)."""
        return (self.ahead + 1).to(torch.float64).reciprocal_()


def first_hit_values(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor,
    weights: Tensor | None,
    requests: Sequence[Request],
) -> tuple[Columns, Tensor, Ranked] | None:
    """Per-query values of requests that only need each query's first relevant row, or ``None``.

    Used when every request's spec has a ``first_hit_value`` and query ids are dense enough to
    index a table (range <= 4 N + 1024); returns ``None`` otherwise (the sort path runs).
    Returns ``(columns, num_relevant (G,), ranked)`` like the sort path (one request's ``(G,)``
    values at a time; ``ranked`` carries only sizes and weights).
    """
    value_fns = [fn for spec, _ in requests if (fn := spec.first_hit_value) is not None]
    if not value_fns or len(value_fns) < len(requests):
        return None
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
    best = torch.full((span,), -float("inf"), dtype=preds.dtype, device=preds.device)
    best.scatter_reduce_(0, qkey, torch.where(relevant, preds, -float("inf")), "amax")
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
    hits = FirstHits(ahead, num_rel > 0)
    empty = torch.empty(0, dtype=torch.int64, device=preds.device)
    ranked = Ranked(empty, empty, empty.to(torch.float64), size, weight, int(present.numel()))
    return Columns(requests, lambda i: value_fns[i](hits, requests[i][1])), num_rel.to(torch.float64), ranked


def row_count(mask: Tensor) -> Tensor:
    """``(G,)`` int64 count of ``True`` in each row of a ``(G, L)`` bool mask (int32 sums: ~2x faster than int64)."""
    return mask.sum(1, dtype=torch.int32).to(torch.int64)


def grid_first_hit_values(grid: PaddedGrid, requests: Sequence[Request]) -> tuple[Columns, Tensor, Ranked] | None:
    """:func:`first_hit_values` of padded ``(Q, L)`` lists, or ``None`` unless every request has a ``first_hit_value``.

    Each list's first relevant entry has the list's best relevant score ``b``; the entries ranked
    before it are the kept, non-relevant ones scored at least ``b`` (relevant ones scored ``b``
    come after it or are it, by the tie rule; no relevant one scores above ``b``). Entries
    ``grid.keep`` drops are never read as candidates (their scores may be NaN); lists without a
    kept entry are no query, as in :func:`~._kernel.rank_grid`. The values equal the row-wise
    sort's (:func:`~._kernel.rank_grid`) bit for bit. The relevant count returned is 1 for a list
    with a relevant entry, else 0: all that the empty-query policy reads of it.
    """
    value_fns = [fn for spec, _ in requests if (fn := spec.first_hit_value) is not None]
    if not value_fns or len(value_fns) < len(requests):
        return None
    preds, target, keep, weights = grid
    num_groups, width = preds.shape
    relevant = target if target.dtype == torch.bool else target > 0
    if keep is not None:
        relevant = relevant & keep
    best = torch.where(relevant, preds, -math.inf).amax(1, keepdim=True)  # -inf for a list without a relevant entry
    ahead = preds >= best  # NaN (only where `keep` drops it) compares False
    if keep is not None:
        ahead &= keep
    ahead = row_count(torch.gt(ahead, relevant, out=ahead))  # bools: `ahead & ~relevant` in one kernel
    # whether each list has a relevant entry is all the first-hit values and the empty-query policy read of
    # the relevant count (``any`` costs a fraction of a count)
    has_rel = relevant.any(1)
    weight = None
    if weights is not None:  # a query's weight is its rows' largest, at least 0 (as rank_grid)
        weight = torch.clamp_min(weights.to(torch.float64), 0.0).add_(0.0)
    if keep is None:
        size = torch.full((num_groups,), width, dtype=torch.int64, device=preds.device)
    else:
        size = row_count(keep)
        present = size > 0
        if not bool(present.all()):  # lists without a kept entry are no query
            ahead, has_rel, size = ahead[present], has_rel[present], size[present]
            weight = None if weight is None else weight[present]
    hits = FirstHits(ahead, has_rel, width)
    empty = torch.empty(0, dtype=torch.int64, device=preds.device)
    ranked = Ranked(empty, empty, empty.to(torch.float64), size, weight, int(size.numel()))
    return Columns(requests, lambda i: value_fns[i](hits, requests[i][1])), has_rel.to(torch.float64), ranked


FEW_RELEVANT = 4
"""Padded lists with at most this many relevant entries each are ranked by counting (:func:`grid_relevant_ranks`)."""
COUNTED_WIDTH = 2048
"""... from this many candidates per list on (narrower lists sort each row for less)."""


def grid_relevant_ranks(grid: PaddedGrid, top_grade: int | None) -> Ranked | None:
    """The sort path's :class:`~._kernel.Ranked` of wide padded lists with few relevant entries, without a sort.

    A relevant entry of score ``s``, relevance ``y`` and column ``c`` has before it the kept entries
    scored above ``s``, and those scored ``s`` with a lower relevance, or an equal one and a lower
    column: equal ``(score, relevance)`` pairs are interchangeable, so any order among them (here
    the column) gives the sort's ranks. One comparison of each relevant entry with its list
    (``(R, L)`` elementwise work for ``R`` relevant entries) replaces the row-wise sorts. ``None``
    when a list holds more than :data:`FEW_RELEVANT` relevant entries (the sort is cheaper).
    Lists without a kept entry are no query. ``top_grade``: the largest relevance when it is
    an integer read before (as :func:`~._kernel.rank_rows` passes it on), else ``None``.
    """
    preds, target, keep, weights = grid
    num_groups, width = preds.shape
    relevant = target if target.dtype == torch.bool else target > 0
    if keep is not None:
        relevant = relevant & keep
    rel_row, rel_col = relevant.nonzero().unbind(1)  # row-major: rows non-decreasing
    if rel_row.numel() > FEW_RELEVANT * num_groups or (
        rel_row.numel() and int(torch.bincount(rel_row, minlength=num_groups).max()) > FEW_RELEVANT
    ):
        return None
    grades = target.view(torch.uint8) if target.dtype == torch.bool else target
    score, grade = preds[rel_row, rel_col].unsqueeze(1), grades[rel_row, rel_col].unsqueeze(1)
    lists, list_grades = preds.index_select(0, rel_row), grades.index_select(0, rel_row)  # (R, L)
    tied = lists == score
    ahead = lists > score
    # ties: the lower relevance first, then (equal rows) the lower column
    tied &= (list_grades < grade) | (
        (list_grades == grade) & (torch.arange(width, device=preds.device) < rel_col[:, None])
    )
    ahead |= tied
    if keep is not None:
        ahead &= keep.index_select(0, rel_row)
    pos = row_count(ahead)
    weight = None
    if weights is not None:  # a query's weight is its rows' largest, at least 0 (as rank_grid)
        weight = torch.clamp_min(weights.to(torch.float64), 0.0).add_(0.0)
    if keep is None:
        size = torch.full((num_groups,), width, dtype=torch.int64, device=preds.device)
        group = rel_row
    else:
        size = row_count(keep)
        present = size > 0
        group = rel_row
        if not bool(present.all()):  # lists without a kept entry are no query: the others renumbered
            group = (torch.cumsum(present, 0) - 1).index_select(0, rel_row)
            size = size[present]
            weight = None if weight is None else weight[present]
    order = torch.sort(group * width + pos).indices  # each query's relevant entries in rank order
    group, pos = group[order], pos[order]
    rel_target = grade.reshape(-1)[order].to(torch.float64)
    return Ranked(group, pos, rel_target, size, weight, int(size.numel()), top_grade)
