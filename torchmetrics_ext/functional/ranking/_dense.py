r"""The device path's ranking kernel for ``update``: whole-array sorts and scatters, no host read.

The sort path (:mod:`._kernel`) keeps only the relevant rows (``nonzero``) and sizes its outputs
by the number of queries and the largest grade, all read on the host: on a GPU each read waits
for the device. Ranking in ``update`` (padded ``(Q, L)`` lists, or
``queries_complete_per_batch=True``) takes this kernel on the device path instead
(:func:`~torchmetrics_ext.utilities.device.on_device_path`), so ``update`` never waits:

* rows are ordered by three stable sorts (relevance ascending, score descending, query id), so
  ties rank exactly as on the sort path (the relevant candidates of a tie come last;
  ``-0.0`` equals ``0.0``);
* every per-query output has one slot per row: slot ``g`` is the ``g``-th query in id order,
  later slots are empty (size 0) and never counted;
* every row is kept, with a relevance mask, where the sort path keeps the relevant rows only;
* rows a mask drops (padding) are sorted after the others into queries of size 0;
* NDCG's ideal order is one more pair of stable sorts (relevance descending within each query).

The values equal the sort path's up to the order of floating point sums.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._kernel import Ranked, SortedQueries, discount
from torchmetrics_ext.functional.ranking._spec import RankingOptions


def _stable_order(order: Tensor, key: Tensor, descending: bool = False) -> Tensor:
    """``order`` re-sorted stably by ``key[order]``."""
    return order[torch.sort(key[order], descending=descending, stable=True).indices]


def rank_rows_dense(
    preds: Tensor, target: Tensor, indexes: Tensor, weights: Tensor | None, valid: Tensor | None
) -> tuple[Ranked, Tensor]:
    """Every row sorted by (query, score desc, relevance asc): ``(ranked, relevant)``, one slot per row.

    ``ranked`` holds every row (``rel_target`` 0 for irrelevant and dropped rows) and ``(N,)``
    per-query sizes and weights (0 past the last query); ``relevant`` flags the rows with
    relevance > 0 that ``valid`` keeps.
    """
    n = preds.numel()
    device = preds.device
    relevance = target.to(torch.float64)
    order = torch.sort(relevance, stable=True).indices
    order = _stable_order(order, preds, descending=True)
    order = _stable_order(order, indexes)
    kept = None
    if valid is not None:  # dropped rows last, in queries of their own
        order = _stable_order(order, (~valid).to(torch.int8))
        kept = valid[order]
    ids = indexes[order]
    start = torch.empty(n, dtype=torch.bool, device=device)
    start[:1] = True
    torch.ne(ids[1:], ids[:-1], out=start[1:])
    if kept is not None:
        start[1:] |= kept[1:] != kept[:-1]
    group = torch.cumsum(start, 0).sub_(1)
    rows = torch.arange(n, device=device)
    pos = rows - torch.cummax(torch.where(start, rows, 0), 0).values
    sorted_target = relevance[order]
    counted = torch.ones(n, dtype=torch.int64, device=device) if kept is None else kept.to(torch.int64)
    if kept is not None:
        sorted_target = torch.where(kept, sorted_target, 0.0)
    size = torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, group, counted)
    weight = None
    if weights is not None:
        row_weight = weights.to(torch.float64)[order]
        if kept is not None:
            row_weight = torch.where(kept, row_weight, 0.0)
        weight = torch.zeros(n, dtype=torch.float64, device=device).scatter_reduce_(0, group, row_weight, "amax")
    return Ranked(group, pos, sorted_target, size, weight, n), sorted_target > 0


class DenseQueries(SortedQueries):
    """:class:`~._kernel.SortedQueries` over every row (``relevant`` masks the sums), with no host read."""

    def __init__(self, ranked: Ranked, relevant: Tensor, options: RankingOptions) -> None:
        self.relevant = relevant
        super().__init__(ranked, options)

    def sum(self, values: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        """``(G,)`` float64 per-query sum of ``values`` (or count) over the relevant rows ``keep`` (or all)."""
        keep = self.relevant if keep is None else keep & self.relevant
        return self._per_query(keep.to(torch.float64) if values is None else torch.where(keep, values, 0.0))

    def _per_query(self, terms: Tensor) -> Tensor:
        """``(G,)`` float64 sum of each query's row ``terms`` (one slot per row: no host read)."""
        return torch.zeros(self.num_groups, dtype=torch.float64, device=terms.device).index_add_(0, self.group, terms)

    @cached_property
    def within(self) -> Tensor:
        """Index of each relevant row among its query's relevant rows (meaningless for the others)."""
        relevant = self.relevant.to(torch.int64)
        seen = torch.cumsum(relevant, 0)
        first = torch.arange(seen.numel(), device=seen.device) - self.pos  # each row's query start
        return seen - (seen[first] - relevant[first]) - 1

    @cached_property
    def ideal_dcg(self) -> Callable[[int | None], Tensor]:
        """``k -> (G,)`` IDCG@k: relevance sorted descending within each query (same slots as the ranking)."""
        target = self.ranked.rel_target
        order = torch.sort(target, descending=True, stable=True).indices
        order = _stable_order(order, self.group)
        best = target[order]  # row i: the pos[i]-th largest relevance of row i's query
        value = torch.where(best > 0, self.row_gain(best) * discount(self.pos), 0.0)

        def idcg(k: int | None) -> Tensor:
            return self._per_query(value if k is None else torch.where(self.pos < k, value, 0.0))

        return idcg
