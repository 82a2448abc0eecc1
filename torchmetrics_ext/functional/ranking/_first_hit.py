"""First-hit counting: MRR and hit rate without a sort, from the rank of each query's first relevant row.

Under the tie rule (score descending, relevance ascending) a query's first relevant row has the
query's best relevant score ``b``, and the rows ranked before it are those scored above ``b``
plus the non-relevant rows scored exactly ``b``. So one segment max, one gather and one count
give its rank, comparing the scores themselves (exact for any float, ``±inf`` included). The
values equal the sort path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._columns import Columns
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
