"""A batch's per-query values, one request at a time: never a ``(queries, requests)`` matrix.

Every computation path (sort, top-k merge, first-hit counting, padded lists, the device path)
hands :func:`~torchmetrics_ext.functional.ranking._update._ranking_update` a :class:`Columns`:
the ``(G,)`` values of request ``i`` are made when asked for and reduced to their weighted sum
at once, so a :class:`~torchmetrics_ext.RankingMetrics` of hundreds of ``(metric, k)`` requests
holds a few per-query vectors at a time instead of ``G x len(requests)`` float64 values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._spec import Request


def _keep_all(k: int | None) -> None:
    """A path that caches nothing per cutoff."""


class Columns:
    """Per-query values of each of ``requests``, made on demand.

    Args:
        requests: the ``(spec, k)`` requests, in result order.
        value: ``i -> (G,)`` float64 per-query values of request ``i`` (queries in id order).
        forget: drops what the path cached for cutoff ``k`` (per-``k`` hit counts), called once
            every request at ``k`` has been read by :meth:`in_cutoff_order`.
    """

    def __init__(
        self,
        requests: Sequence[Request],
        value: Callable[[int], Tensor],
        forget: Callable[[int | None], None] = _keep_all,
    ) -> None:
        self.requests, self._value, self._forget = list(requests), value, forget

    def __len__(self) -> int:
        return len(self.requests)

    def __call__(self, i: int) -> Tensor:
        """``(G,)`` float64 per-query values of request ``i``."""
        return self._value(i)

    def in_cutoff_order(self) -> Iterator[int]:
        """Request numbers grouped by cutoff (first-seen order); each cutoff's caches are dropped after its group.

        Requests are listed metric by metric, so reading them in that order would keep every
        cutoff's per-query hit counts alive at once; grouped by cutoff, one cutoff's are.
        """
        groups: dict[int | None, list[int]] = {}
        for i, (_, k) in enumerate(self.requests):
            groups.setdefault(k, []).append(i)
        for k, numbers in groups.items():
            yield from numbers
            self._forget(k)

    def stacked(self) -> Tensor:
        """``(G, len(requests))`` float64: every request's values side by side (for per-query terms and tests)."""
        columns = [self(i) for i in range(len(self))]
        return columns[0].unsqueeze(1) if len(columns) == 1 else torch.stack(columns, 1)
