r"""Ranking metrics as :class:`torchmetrics.Metric` objects: NDCG, Recall@k, Precision@k, MRR, HitRate, MAP.

All share one base class and the kernels of :mod:`torchmetrics_ext.functional.ranking`; see that
module for the definitions, the input forms and the tie rule. Shared behaviour:

* ``update(preds, target, indexes=None, mask=None, weights=None)`` takes flat ``(N,)`` rows
  grouped by ``indexes`` or padded ``(Q, L)`` candidate lists (``mask`` or ``padding_value``).
* Exact mode (default, ``queries_complete_per_batch=False``): flat rows are kept as given in
  ``cat`` states (scores, relevance, ids, and float64 weights once any batch had weights: O(N)
  memory; validated int64 relevance below ``2**31`` is kept as an int32 copy) and grouped by
  query at ``compute``, so a query may span batches and DDP ranks (same id = same query).
  Before a DDP gather each rank casts its rows to float64/int64.
* ``queries_complete_per_batch=True`` (TorchRec's session mode): each batch's queries are
  scored at ``update`` and only weighted sums are kept (constant memory); a query split across
  batches counts as separate queries. Padded input always takes this path: a padded row is a
  whole query by construction.
* A rejected batch raises and changes nothing; an empty batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat

from torchmetrics_ext.functional.ranking._inputs import (
    RankingRows,
    check_ranking_args,
    format_ranking,
)
from torchmetrics_ext.functional.ranking._kernel import METRICS
from torchmetrics_ext.functional.ranking.functions import (
    Request,
    check_requests,
    ranking_compute,
    ranking_update,
    request_key,
)
from torchmetrics_ext.functional.ranking.multiclass import (
    _multiclass_recall_compute,
    _multiclass_recall_update,
    check_multiclass_args,
    check_multiclass_inputs,
)
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.utilities.checks import check_flag

__all__ = [
    "MAP",
    "MRR",
    "NDCG",
    "HitRate",
    "MulticlassRecallAtK",
    "PrecisionAtK",
    "RankingMetrics",
    "RecallAtK",
]

_ROW_STATES = {
    "preds": torch.float64,
    "target": torch.float64,
    "indexes": torch.int64,
    "weights": torch.float64,
}


class _RankingMetric(TaskMetric):
    """Per-query ranking metrics over one or more ``(metric, k)`` requests."""

    is_differentiable = False
    higher_is_better: bool | None = True
    full_state_update = False
    has_task_dim = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    _label = "RankingMetric"

    weight_sum: Tensor
    preds: list[Tensor]
    target: list[Tensor]
    indexes: list[Tensor]
    weights: list[Tensor]

    def __init__(
        self,
        requests: Sequence[Request],
        *,
        exponential_gain: bool = False,
        adaptive_k: bool = False,
        empty_target_action: str = "skip",
        padding_value: float | None = None,
        queries_complete_per_batch: bool = False,
        remove_single_length_sessions: bool = False,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(1, validate_args=validate_args, **kwargs)
        check_ranking_args(None, empty_target_action, padding_value)
        for name, flag in (
            ("exponential_gain", exponential_gain),
            ("adaptive_k", adaptive_k),
            ("queries_complete_per_batch", queries_complete_per_batch),
            ("remove_single_length_sessions", remove_single_length_sessions),
        ):
            check_flag(name, flag)
        self.requests = list(requests)
        self.exponential_gain = exponential_gain
        self.adaptive_k = adaptive_k
        self.empty_target_action = empty_target_action
        self.padding_value = padding_value
        self.queries_complete_per_batch = queries_complete_per_batch
        self.remove_single_length_sessions = remove_single_length_sessions
        # The per-query sums depend on this metric's settings, so their state is named after them:
        # MetricCollection's compute groups then never merge two configurations whose sums happen
        # to coincide on the first batch (the row states of the exact mode stay shareable).
        flags = {
            "exp": exponential_gain,
            "adaptive": adaptive_k,
            "no_single": remove_single_length_sessions,
        }
        tag = [f"{name}{'' if k is None else k}" for name, k in self.requests]
        tag += [flag for flag, on in flags.items() if on] + [empty_target_action]
        self._value_state = "value_sum_" + "_".join(tag)
        self.add_state(self._value_state, torch.zeros(len(self.requests), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        if not queries_complete_per_batch:
            for name, dtype in _ROW_STATES.items():
                self._add_list_state(name, dtype)

    @property
    def value_sum(self) -> Tensor:
        """Per-request sums of per-query values (the state named after this metric's settings)."""
        return getattr(self, self._value_state)

    @value_sum.setter
    def value_sum(self, value: Tensor) -> None:
        setattr(self, self._value_state, value)

    # ------------------------------------------------------------------ update

    def _rows(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None,
        mask: Tensor | None,
        weights: Tensor | None,
        validate: bool,
    ) -> RankingRows:
        return format_ranking(
            preds,
            target,
            indexes,
            mask,
            weights,
            padding_value=self.padding_value,
            validate=validate,
            cast=False,
        )

    def _validate(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> None:
        self._rows(preds, target, indexes, mask, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains:
        """Real scores and non-negative relevance (flat rows; ``indexes`` are integer query ids)."""
        return InputDomains("real", "nonnegative")

    def _sums(self, rows: RankingRows) -> tuple[Tensor, Tensor, Tensor]:
        return ranking_update(
            rows,
            self.requests,
            exponential_gain=self.exponential_gain,
            adaptive_k=self.adaptive_k,
            empty_target_action=self.empty_target_action,
            remove_single_length_sessions=self.remove_single_length_sessions,
        )

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> None:
        """Add a batch: flat ``(N,)`` rows with ``indexes``, or padded ``(Q, L)`` lists."""
        rows = self._rows(preds, target, indexes, mask, weights, validate=self._check_inputs)
        if rows.preds.numel() == 0:
            return
        if rows.padded or self.queries_complete_per_batch:
            value_sum, weight_sum, _ = self._sums(rows)
            self.value_sum += value_sum
            self.weight_sum += weight_sum
            return
        if rows.weights is not None or self.weights:
            # weights are kept per row only once some batch had them: earlier batches get ones
            for earlier in self.preds[len(self.weights) :]:
                self.weights.append(torch.ones_like(earlier))
            self.weights.append(rows.weights if rows.weights is not None else torch.ones_like(rows.target))
        self.preds.append(rows.preds.detach())  # kept as given (no copy); converted at sync/compute
        self.target.append(rows.target)
        self.indexes.append(rows.indexes)

    # ------------------------------------------------------------------ compute

    def _compute_values(self) -> Tensor:
        value_sum, weight_sum = self.value_sum, self.weight_sum
        if not self.queries_complete_per_batch:
            rows = self._cat_rows()
            if rows is not None and rows.preds.numel() > 0:
                batch_value, batch_weight, _ = self._sums(rows)
                value_sum, weight_sum = value_sum + batch_value, weight_sum + batch_weight
        return ranking_compute(value_sum, weight_sum, self._label)

    def _cat_rows(self) -> RankingRows | None:
        states = {name: getattr(self, name) for name in _ROW_STATES}
        if isinstance(states["preds"], list) and len(states["preds"]) == 0:
            return None
        preds, target, indexes = (dim_zero_cat(states[n]) for n in ("preds", "target", "indexes"))
        weights = states["weights"]
        weights = None if isinstance(weights, list) and len(weights) == 0 else dim_zero_cat(weights)
        if weights is not None and weights.numel() == 0:
            weights = None
        if weights is not None and weights.numel() != preds.numel():
            raise ValueError(
                f"{type(self).__name__}: `weights` were given for {weights.numel()} of {preds.numel()} rows; "
                "pass weights with every batch on every rank, or with none."
            )
        # a list state is concatenated into a new tensor, which the kernels may use as scratch
        writable = isinstance(states["preds"], list)
        return RankingRows(preds, target, indexes.to(torch.int64), weights, False, writable)


class RankingMetrics(_RankingMetric):
    r"""Every ranking metric at every cutoff from one sort, returned as a dict (``"ndcg@10"``, ...).

    Definitions as in :func:`~torchmetrics_ext.functional.ranking_metrics`: for each query,
    NDCG (graded gain), recall, precision (``/k``), reciprocal rank, hit and average precision
    over the top ``k``; the result is the weighted mean over queries. One sort serves all
    requests, so three metrics at three cutoffs cost about one NDCG.

    Args:
        ks: cutoffs (positive integers; ``None`` = whole list, key without ``@``).
        metrics: names from ``("ndcg", "recall", "precision", "mrr", "hit_rate", "map")``.
        exponential_gain: NDCG gain :math:`2^y - 1` instead of :math:`y`.
        empty_target_action: ``"skip"`` (default), ``"zero"``, ``"one"`` or ``"error"`` for queries
            without a relevant candidate (``"error"`` raises at ``compute``, or at ``update`` for
            queries complete in the batch).
        padding_value: padded predictions equal to it are padding.
        queries_complete_per_batch: constant-memory per-batch sums instead of exact ``cat`` states.
        remove_single_length_sessions: leave out queries with one candidate.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: bad arguments or inputs (shapes, NaN scores, negative relevance or weights).
        TypeError: non-tensor or wrongly typed inputs.

    Note:
        Ties are ranked relevance-ascending (pessimistic); undefined results (no query counted)
        are ``nan`` with ``UndefinedMetricWarning``. Exact mode holds O(N) memory; under DDP the
        rows are gathered and queries with the same id on different ranks are merged.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import RankingMetrics
        >>> metric = RankingMetrics(ks=(1, 2), metrics=("recall", "mrr"))
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> {key: round(value.item(), 4) for key, value in metric.compute().items()}
        {'recall@1': 0.0, 'recall@2': 0.25, 'mrr@1': 0.0, 'mrr@2': 0.25}
    """

    _label = "RankingMetrics"

    def __init__(self, ks: Sequence[int | None] = (1, 5, 10), metrics: Sequence[str] = METRICS, **kwargs: Any) -> None:
        requests = check_requests(metrics, ks)
        super().__init__(requests, **kwargs)
        self.ks, self.metrics = tuple(ks), tuple(metrics)

    def compute(self) -> dict[str, Tensor]:
        """Dict of float64 scalars, one per ``(metric, k)``."""
        values = self._compute_values()
        return {request_key(name, k): values[i] for i, (name, k) in enumerate(self.requests)}


class _SingleRanking(_RankingMetric):
    _name = ""
    _allow_none_k = True

    def __init__(self, k: int | None, **kwargs: Any) -> None:
        check_ranking_args(k, allow_none_k=self._allow_none_k)
        super().__init__([(self._name, k)], **kwargs)
        self.k = k

    def compute(self) -> Tensor:
        """Weighted mean over queries (float64 scalar)."""
        return self._compute_values()[0]


class NDCG(_SingleRanking):
    r"""Normalized discounted cumulative gain at ``k`` with graded relevance.

    .. math::
        \mathrm{NDCG}_q@k = \frac{\sum_{i \le k} g(y_{q,i}) / \log_2(i + 1)}
        {\sum_{i \le k} g(y^{*}_{q,i}) / \log_2(i + 1)}, \qquad g(y) = y \text{ or } 2^y - 1

    where :math:`y^{*}` is the relevance sorted descending; averaged over queries with weights.

    Args:
        k: cutoff, or ``None`` for the whole list.
        exponential_gain: gain :math:`2^y - 1` (Burges) instead of :math:`y` (Järvelin).
        report_as_loss: return ``1 - NDCG`` (TorchRec's ``report_ndcg_as_decreasing_curve``).
        empty_target_action: policy for queries without relevant candidates (default ``"skip"``).
        padding_value: padded predictions equal to it are padding.
        queries_complete_per_batch: constant-memory per-batch sums (TorchRec's session mode).
        remove_single_length_sessions: leave out single-candidate queries (TorchRec option).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: bad arguments or inputs.
        TypeError: wrongly typed inputs.

    Note:
        TorchRec divides by an IDCG floored at 1e-6 and scales each session by its largest row
        weight without normalising by the weights; we take the weighted mean and apply
        ``empty_target_action`` to queries without relevance. Ties are pessimistic.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import NDCG
        >>> metric = NDCG(k=2)
        >>> metric.update(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.6, 0.4]), torch.tensor([0, 2, 1, 1, 0, 0]),
        ...               indexes=torch.tensor([0, 0, 0, 1, 1, 1]))
        >>> metric.compute()
        tensor(0.2398, dtype=torch.float64)
    """

    _name, _label = "ndcg", "NDCG"

    def __init__(
        self,
        k: int | None = None,
        exponential_gain: bool = False,
        report_as_loss: bool = False,
        **kwargs: Any,
    ) -> None:
        check_flag("report_as_loss", report_as_loss)
        super().__init__(k, exponential_gain=exponential_gain, **kwargs)
        self.report_as_loss = report_as_loss
        if report_as_loss:  # TorchMetrics guards the class constant; this instance reports a loss
            object.__setattr__(self, "higher_is_better", False)

    def compute(self) -> Tensor:
        """Weighted mean NDCG over queries (``1 - NDCG`` with ``report_as_loss``)."""
        value = super().compute()
        return 1.0 - value if self.report_as_loss else value


class RecallAtK(_SingleRanking):
    r"""Recall at ``k``: share of a query's relevant candidates (``target > 0``) in its top ``k``.

    .. math:: \mathrm{Recall}_q@k = |\{i \in R_q : i \le k\}| \,/\, |R_q|

    Args:
        k: cutoff, a positive integer.
        kwargs: ``empty_target_action``, ``padding_value``, ``queries_complete_per_batch``,
            ``remove_single_length_sessions``, ``validate_args`` (see :class:`NDCG`) and TorchMetrics options.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import RecallAtK
        >>> metric = RecallAtK(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    _name, _label, _allow_none_k = "recall", "RecallAtK", False

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(k, **kwargs)


class PrecisionAtK(_SingleRanking):
    r"""Precision at ``k``: relevant candidates in the top ``k`` divided by ``k``.

    .. math:: \mathrm{Precision}_q@k = |\{i \in R_q : i \le k\}| \,/\, k
              \quad (\min(k, n_q) \text{ with } \texttt{adaptive\_k})

    Args:
        k: cutoff, a positive integer.
        adaptive_k: divide by ``min(k, n_q)`` (TorchMetrics' ``adaptive_k``).
        kwargs: shared options (see :class:`NDCG`) and TorchMetrics options.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import PrecisionAtK
        >>> metric = PrecisionAtK(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    _name, _label, _allow_none_k = "precision", "PrecisionAtK", False

    def __init__(self, k: int, adaptive_k: bool = False, **kwargs: Any) -> None:
        super().__init__(k, adaptive_k=adaptive_k, **kwargs)


class MRR(_SingleRanking):
    r"""Mean reciprocal rank (at ``k``) of each query's first relevant candidate.

    .. math:: \mathrm{RR}_q@k = 1/\min R_q \text{ if } \min R_q \le k \text{, else } 0

    Args:
        k: cutoff, or ``None`` for the whole list.
        kwargs: shared options (see :class:`NDCG`) and TorchMetrics options.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import MRR
        >>> metric = MRR(padding_value=-10.0)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, -10.0]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.5000, dtype=torch.float64)
    """

    _name, _label = "mrr", "MRR"

    def __init__(self, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(k, **kwargs)


class HitRate(_SingleRanking):
    r"""Hit rate at ``k``: share of queries with a relevant candidate in the top ``k``.

    .. math:: \mathrm{Hit}_q@k = [\exists i \in R_q : i \le k]

    Args:
        k: cutoff, a positive integer.
        kwargs: shared options (see :class:`NDCG`) and TorchMetrics options.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import HitRate
        >>> metric = HitRate(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.5000, dtype=torch.float64)
    """

    _name, _label, _allow_none_k = "hit_rate", "HitRate", False

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(k, **kwargs)


class MAP(_SingleRanking):
    r"""Mean average precision (at ``k``), normalised by all of a query's relevant candidates.

    .. math:: \mathrm{AP}_q@k = \frac{1}{|R_q|} \sum_{i \in R_q,\, i \le k} \mathrm{Precision}_q@i

    Args:
        k: cutoff, or ``None`` for the whole list.
        kwargs: shared options (see :class:`NDCG`) and TorchMetrics options.

    Example:
        >>> import torch
        >>> from torchmetrics_ext import MAP
        >>> metric = MAP()
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.4583, dtype=torch.float64)
    """

    _name, _label = "map", "MAP"

    def __init__(self, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(k, **kwargs)


class MulticlassRecallAtK(TaskMetric):
    r"""Multiclass recall at ``k`` (TorchRec's ``MulticlassRecallMetric``) for ``(N, C)`` class scores.

    .. math:: \mathrm{Recall}@k = \frac{\sum_n w_n\,[\mathrm{rank}_n(y_n) < k]}{\sum_n w_n}

    Classes scored equal to the true class rank ahead of it (pessimistic ties). State: two
    float64 sums (constant memory), summed across ranks.

    Args:
        k: cutoff in ``[1, num_classes]``.
        num_classes: number of classes ``C``.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: bad ``k``/``num_classes``, shapes, NaN scores, class ids out of range, bad weights.
        TypeError: non-tensor inputs, non-floating ``preds`` or non-integer ``target``.

    Note:
        TorchRec returns recall at every ``k`` at once; build one metric per ``k`` (they are cheap).

    Example:
        >>> import torch
        >>> from torchmetrics_ext import MulticlassRecallAtK
        >>> metric = MulticlassRecallAtK(k=2, num_classes=3)
        >>> preds = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
        >>> metric.update(preds, torch.tensor([0, 1, 1]))
        >>> metric.compute()
        tensor(0.6667, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    has_task_dim = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    hit_sum: Tensor
    weight_sum: Tensor

    def __init__(self, k: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(1, **kwargs)
        check_multiclass_args(k, num_classes)
        self.k, self.num_classes = k, num_classes
        self.add_state("hit_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        check_multiclass_inputs(preds, target, weights, self.num_classes)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Add ``(N, C)`` scores, ``(N,)`` class ids and optional ``(N,)`` weights."""
        if self._check_inputs:
            self._validate(preds, target, weights)
        hits, total = _multiclass_recall_update(preds, target, weights, self.k)
        self.hit_sum += hits
        self.weight_sum += total

    def compute(self) -> Tensor:
        """Weighted recall at ``k`` (float64 scalar)."""
        return _multiclass_recall_compute(self.hit_sum, self.weight_sum)
