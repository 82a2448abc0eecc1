"""Several ranking metrics at several cutoffs from one pass over the rows: :class:`RankingMetrics`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from torchmetrics_ext.functional.ranking._docs import ranking_doc
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.functional.ranking._registry import DEFAULT_METRICS, ranking_requests
from torchmetrics_ext.functional.ranking._spec import RankingOptions, request_key
from torchmetrics_ext.functional.ranking.combined import METRICS_DOC
from torchmetrics_ext.metrics.ranking._base import SHARED_OPTIONS, _RankingMetric
from torchmetrics_ext.utilities.checks import as_str, sequence_items

__all__ = ["RankingMetrics"]


@ranking_doc(extra={"metrics": METRICS_DOC}, shared=SHARED_OPTIONS, returns=None)
class RankingMetrics(_RankingMetric):
    r"""Every ranking metric at every cutoff from one pass, returned as a dict (``"ndcg@10"``, ...).

    Definitions as in :func:`~torchmetrics_ext.functional.ranking_metrics`: for each query,
    NDCG (graded gain), recall, precision (``/k``), reciprocal rank, hit and average precision
    over the top ``k`` (and any other registered metric by name); the result is the weighted
    mean over queries. One sort serves all requests, so three metrics at three cutoffs cost
    about one NDCG.

    Note:
        Exact mode holds O(N) memory; under DDP the rows are gathered and queries with the same
        id on different ranks are merged. ``empty_target_action="error"`` raises at ``compute``
        (at ``update`` for queries complete in the batch).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RankingMetrics
        >>> metric = RankingMetrics(ks=(1, 2), metrics=("recall", "mrr"))
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> {key: round(value.item(), 4) for key, value in metric.compute().items()}
        {'recall@1': 0.0, 'recall@2': 0.25, 'mrr@1': 0.0, 'mrr@2': 0.25}
    """

    _dict_value_entry = '"ndcg@10"'  # a dict value: no metric arithmetic (TensorArithmetic); its first key named

    def __init__(
        self,
        ks: Sequence[int | None] = (1, 5, 10),
        metrics: Sequence[str] = DEFAULT_METRICS,
        exponential_gain: bool = False,
        adaptive_k: bool = False,
        **kwargs: Any,
    ) -> None:
        ks, metrics = _items("ks", ks), _items("metrics", metrics)  # read once: an iterator's items too
        requests = ranking_requests(metrics, ks)
        super().__init__(requests, RankingOptions(exponential_gain, adaptive_k), "RankingMetrics", **kwargs)
        # as plain Python ints and strs (not np.int64, 0-dim tensors or np.str_), as given
        self.ks = tuple(check_cutoff(k, "optional") for k in ks)
        self.metrics = tuple(str(as_str(name)) for name in metrics)

    def compute(self) -> dict[str, Tensor]:
        """Dict of float64 scalars, one per ``(metric, k)``."""
        values = self._compute_values()
        return dict(zip(self._value_entries(), values))

    def _value_entries(self) -> tuple[str, ...]:
        """``compute()``'s keys, one per ``(metric, k)`` in request order: ``"ndcg@10"``, ``"mrr"`` (no cutoff)."""
        return tuple(request_key(request) for request in self.requests)


def _items(name: str, values: Any) -> Any:
    """The items of a sequence setting (a 1-D NumPy array or tensor, an iterator) as a list; anything else as it is.

    :func:`~torchmetrics_ext.utilities.checks.sequence_items`: a 0-dim tensor or array, or a string,
    is one value, kept as it is (and refused with a hint by ``ranking_requests``).
    """
    items = sequence_items(name, values)
    return values if items is None else items
