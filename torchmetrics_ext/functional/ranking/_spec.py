"""What a ranking metric tells the kernels, the functions and the classes: one frozen spec per metric.

A :class:`RankingSpec` carries everything that differs between ranking metrics: the name used in
requests and result keys, the label used in messages, whether the cutoff ``k`` is required,
optional or absent, the per-query value on each computation path that applies (the sort path
always; the top-k merge and first-hit counting where the metric can be read from what they
keep), and the extra options the metric reads. The kernels only call a request's spec; nothing
dispatches on metric names. The specs themselves are in
:mod:`~torchmetrics_ext.functional.ranking._registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from torch import Tensor

if TYPE_CHECKING:
    from torchmetrics_ext.functional.ranking._first_hit import FirstHits
    from torchmetrics_ext.functional.ranking._kernel import SortedQueries
    from torchmetrics_ext.functional.ranking._topk import TopQueries

Cutoff = Literal["required", "optional", "none"]


class RankingOptions(NamedTuple):
    """Options that change per-query values; each metric reads those its spec lists in ``options``."""

    exponential_gain: bool = False  # NDCG gain 2^y - 1 instead of y
    adaptive_k: bool = False  # precision's denominator min(k, n_q) instead of k


@dataclass(frozen=True)
class RankingSpec:
    """One ranking metric, as the kernels, the functional wrappers and the classes see it.

    Attributes:
        name: request name and result-key stem (``"ndcg"`` gives ``"ndcg@10"``).
        label: the class name, used in messages and warnings (``"NDCG"``).
        cutoff: ``"optional"`` (a positive ``k`` or ``None`` for the whole list), ``"required"``
            (a positive ``k``: the whole-list value does not depend on the scores) or ``"none"``
            (the metric has no cutoff).
        sort_value: per-query values ``(G,)`` float64 on the sort path, from
            ``(SortedQueries, k)``; always available.
        topk_value: per-query values on the top-k merge, from ``(TopQueries, k)``, or ``None``
            when the metric cannot be read from each query's ``k`` best rows.
        first_hit_value: per-query values from the rank of each query's first relevant row
            ``(FirstHits, k)``, or ``None`` when the metric needs more than that row.
        counts_grades: the top-k merge must count each query's rows of every grade (NDCG's IDCG).
        options: the extra options the metric takes: fields of :class:`RankingOptions` it reads,
            and ``"report_as_loss"`` (the functions and classes then return ``1 - value``).
    """

    name: str
    label: str
    cutoff: Cutoff
    sort_value: Callable[[SortedQueries, int | None], Tensor]
    topk_value: Callable[[TopQueries, int], Tensor] | None = None
    first_hit_value: Callable[[FirstHits, int | None], Tensor] | None = None
    counts_grades: bool = False
    options: tuple[str, ...] = ()

    def kernel_options(self, values: dict[str, bool]) -> RankingOptions:
        """The :class:`RankingOptions` of ``values`` (option name to flag) that this metric reads."""
        return RankingOptions(**{name: values[name] for name in self.options if name in RankingOptions._fields})


Request = tuple[RankingSpec, int | None]


def request_key(request: Request) -> str:
    """Result key of one request: ``"ndcg@10"``, or ``"ndcg"`` for the whole list or a metric without cutoff."""
    spec, k = request
    return spec.name if k is None else f"{spec.name}@{k}"
