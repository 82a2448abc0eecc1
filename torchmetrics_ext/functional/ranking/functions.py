r"""Ranking metrics as pure functions: NDCG, Recall@k, Precision@k, MRR, HitRate, MAP.

Inputs, in either form (see :func:`~torchmetrics_ext.functional.ranking._inputs.format_ranking`):

* flat ``preds``, ``target``, ``indexes`` of shape ``(N,)`` (TorchMetrics' retrieval
  convention: rows with the same index are one query), optional ``mask``/``weights`` ``(N,)``;
* padded ``preds``, ``target`` of shape ``(Q, L)`` (one query per row), optional bool ``mask``
  ``(Q, L)`` or ``padding_value``, optional per-query ``weights`` ``(Q,)``.

For query :math:`q` with candidates ranked by score (rank :math:`i = 1, 2, \dots`), relevance
:math:`y_{q,i} \ge 0`, relevant set :math:`R_q = \{i : y_{q,i} > 0\}` and cutoff :math:`k`
(``None`` = the whole list), each function returns the weighted mean over queries

.. math:: M = \frac{\sum_q w_q\, m_q}{\sum_q w_q}

of the per-query values :math:`m_q` given in each docstring. Queries without relevant
candidates follow ``empty_target_action``: ``"skip"`` (default, left out of the mean), ``"zero"``,
``"one"`` (counted with that value) or ``"error"`` (``ValueError``). When no query counts, the
result is ``nan`` with an ``UndefinedMetricWarning``.

Ties: candidates of one query with equal scores are ranked by relevance ascending (the relevant
ones of a tie last), so a constant predictor is never rewarded and results do not depend on row
order. Scores may be any real number including ``±inf``; NaN is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._inputs import (
    RankingRows,
    check_ranking_args,
    format_ranking,
)
from torchmetrics_ext.functional.ranking._kernel import (
    FIRST_HIT_METRICS,
    METRICS,
    first_hit_values,
    query_values,
    rank_rows,
    reduce_queries,
)
from torchmetrics_ext.functional.ranking._topk import grouped_topk_values
from torchmetrics_ext.utilities.checks import check_flag
from torchmetrics_ext.utilities.warnings import safe_divide

__all__ = ["hit_rate", "map_at_k", "mrr", "ndcg", "precision_at_k", "ranking_metrics", "recall_at_k"]

Request = tuple[str, int | None]


def request_key(name: str, k: int | None) -> str:
    """Result key of one request: ``"ndcg@10"``, or ``"ndcg"`` for the whole list."""
    return name if k is None else f"{name}@{k}"


def check_requests(metrics: Sequence[str], ks: Sequence[int | None]) -> list[Request]:
    """Validate ``RankingMetrics``' ``metrics`` and ``ks`` and return every ``(metric, k)`` pair."""
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"Expected `metrics` to be a non-empty sequence of names from {METRICS}, got {metrics!r}.")
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"Expected `metrics` entries from {METRICS}, got {name!r}.")
    if isinstance(ks, (int, str)) or not ks:
        raise ValueError(f"Expected `ks` to be a non-empty sequence of positive integers (or None), got {ks!r}.")
    for k in ks:
        check_ranking_args(k)
    return [(name, k) for name in dict.fromkeys(metrics) for k in dict.fromkeys(ks)]


def ranking_update(
    rows: RankingRows,
    requests: Sequence[Request],
    *,
    exponential_gain: bool = False,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    remove_single_length_sessions: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-request weighted sums over the queries of ``rows``: ``(value_sum, weight_sum, num_queries)``."""
    if rows.preds.numel() == 0:
        zero = torch.zeros((), dtype=torch.float64, device=rows.preds.device)
        return torch.zeros(len(requests), dtype=torch.float64, device=rows.preds.device), zero, zero.clone()
    fast = grouped_topk_values(
        rows.preds,
        rows.target,
        rows.indexes,
        rows.weights,
        requests,
        exponential_gain,
        adaptive_k,
        preds_writable=rows.preds_writable,
    )
    if fast is None and all(name in FIRST_HIT_METRICS for name, _ in requests):
        fast = first_hit_values(rows.preds, rows.target, rows.indexes, rows.weights, requests)
    if fast is None:
        ranked = rank_rows(rows.preds, rows.target, rows.indexes, rows.weights)
        values, num_rel = query_values(ranked, requests, exponential_gain, adaptive_k)
    else:
        values, num_rel, ranked = fast
    return reduce_queries(values, num_rel, ranked, empty_target_action, remove_single_length_sessions)


def ranking_compute(value_sum: Tensor, weight_sum: Tensor, name: str) -> Tensor:
    """Weighted mean over queries; ``nan`` plus ``UndefinedMetricWarning`` when no query counted."""
    return safe_divide(
        value_sum,
        weight_sum.expand_as(value_sum),
        name,
        "no query counted (no query with a relevant candidate, or all query weights are zero)",
    )


def _single(
    name: str,
    label: str,
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None,
    mask: Tensor | None,
    weights: Tensor | None,
    k: int | None,
    empty_target_action: str,
    padding_value: float | None,
    validate_args: bool,
    **options: bool,
) -> Tensor:
    check_ranking_args(k, empty_target_action, padding_value, allow_none_k=name not in ("precision", "hit_rate"))
    rows = format_ranking(preds, target, indexes, mask, weights, padding_value=padding_value, validate=validate_args)
    value_sum, weight_sum, _ = ranking_update(rows, [(name, k)], empty_target_action=empty_target_action, **options)
    return ranking_compute(value_sum, weight_sum, label)[0]


def ndcg(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int | None = None,
    exponential_gain: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    report_as_loss: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Normalized discounted cumulative gain at ``k`` with graded relevance.

    .. math::
        \mathrm{DCG}_q@k = \sum_{i=1}^{\min(k, n_q)} \frac{g(y_{q,i})}{\log_2(i + 1)}, \qquad
        \mathrm{NDCG}_q@k = \frac{\mathrm{DCG}_q@k}{\mathrm{IDCG}_q@k}

    with gain :math:`g(y) = y` (linear, Järvelin and Kekäläinen) or :math:`g(y) = 2^y - 1`
    (``exponential_gain``, Burges); IDCG is the DCG of the candidates sorted by relevance.

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: graded relevance ``>= 0`` of the shape of ``preds``.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds`` (``True`` = real candidate).
        weights: optional query weights: ``(N,)`` rows (a query takes its largest) or ``(Q,)``.
        k: cutoff, a positive integer, or ``None`` for the whole list.
        exponential_gain: use :math:`2^y - 1` instead of :math:`y`.
        empty_target_action: ``"skip"``, ``"zero"``, ``"one"`` or ``"error"`` for queries without relevance.
        padding_value: predictions equal to it are padding (padded input).
        remove_single_length_sessions: leave out queries with a single candidate (TorchRec option).
        report_as_loss: return ``1 - NDCG`` (TorchRec's decreasing curve).
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Raises:
        ValueError: bad arguments or inputs (see :func:`format_ranking`), or an empty query with ``"error"``.
        TypeError: non-tensor or wrongly typed inputs.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import ndcg
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> target = torch.tensor([[0, 2, 1], [1, 0, 0]])
        >>> ndcg(preds, target, k=2)
        tensor(0.2398, dtype=torch.float64)
    """
    check_flag("exponential_gain", exponential_gain)
    check_flag("remove_single_length_sessions", remove_single_length_sessions)
    check_flag("report_as_loss", report_as_loss)
    value = _single(
        "ndcg",
        "NDCG",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
        exponential_gain=exponential_gain,
        remove_single_length_sessions=remove_single_length_sessions,
    )
    return 1.0 - value if report_as_loss else value


def recall_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int | None = None,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Recall at ``k``: the share of a query's relevant candidates ranked in its top ``k``.

    .. math:: \mathrm{Recall}_q@k = \frac{|\{i \in R_q : i \le k\}|}{|R_q|}

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: relevance; ``target > 0`` is relevant.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        k: cutoff (``None`` = whole list, recall 1).
        empty_target_action: policy for queries without relevance.
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import recall_at_k
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.2, 0.6, 0.4])
        >>> target = torch.tensor([0, 1, 1, 1, 0, 0])
        >>> indexes = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> recall_at_k(preds, target, indexes, k=2)
        tensor(0.2500, dtype=torch.float64)
    """
    return _single(
        "recall",
        "RecallAtK",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
    )


def precision_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int = 1,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Precision at ``k``: relevant candidates in the top ``k``, divided by ``k``.

    .. math:: \mathrm{Precision}_q@k = \frac{|\{i \in R_q : i \le k\}|}{k}
              \quad (\text{or } \min(k, n_q) \text{ with } \texttt{adaptive\_k})

    Dividing by ``k`` even when a query has fewer candidates matches trec_eval, ranx and
    TorchMetrics' default.

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: relevance; ``target > 0`` is relevant.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        k: cutoff, a positive integer.
        adaptive_k: divide by ``min(k, n_q)`` instead of ``k``.
        empty_target_action: policy for queries without relevance.
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import precision_at_k
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> precision_at_k(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), k=2)
        tensor(0.2500, dtype=torch.float64)
    """
    check_flag("adaptive_k", adaptive_k)
    return _single(
        "precision",
        "PrecisionAtK",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
        adaptive_k=adaptive_k,
    )


def mrr(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int | None = None,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Mean reciprocal rank (at ``k``) of each query's first relevant candidate.

    .. math:: \mathrm{RR}_q@k = \frac{1}{\min R_q} \text{ if } \min R_q \le k \text{ else } 0

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: relevance; ``target > 0`` is relevant.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        k: cutoff, or ``None`` for the whole list.
        empty_target_action: policy for queries without relevance.
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import mrr
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, -10.0]])
        >>> mrr(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), padding_value=-10.0)
        tensor(0.5000, dtype=torch.float64)
    """
    return _single(
        "mrr",
        "MRR",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
    )


def hit_rate(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int = 1,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Hit rate at ``k``: the share of queries with a relevant candidate in their top ``k``.

    .. math:: \mathrm{Hit}_q@k = [\,\exists i \in R_q : i \le k\,]

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: relevance; ``target > 0`` is relevant.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        k: cutoff, a positive integer.
        empty_target_action: policy for queries without relevance.
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import hit_rate
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> hit_rate(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), k=2)
        tensor(0.5000, dtype=torch.float64)
    """
    return _single(
        "hit_rate",
        "HitRate",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
    )


def map_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int | None = None,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Mean average precision (at ``k``), normalised by all relevant candidates (trec_eval, ranx).

    .. math:: \mathrm{AP}_q@k = \frac{1}{|R_q|} \sum_{i \in R_q,\, i \le k} \mathrm{Precision}_q@i

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: relevance; ``target > 0`` is relevant.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        k: cutoff, or ``None`` for the whole list.
        empty_target_action: policy for queries without relevance.
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A float64 scalar.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import map_at_k
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> map_at_k(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        tensor(0.4583, dtype=torch.float64)
    """
    return _single(
        "map",
        "MAP",
        preds,
        target,
        indexes,
        mask,
        weights,
        k,
        empty_target_action,
        padding_value,
        validate_args,
    )


def ranking_metrics(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    ks: Sequence[int | None] = (1, 5, 10),
    metrics: Sequence[str] = METRICS,
    exponential_gain: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    """Every metric of ``metrics`` at every cutoff of ``ks`` from one sort, as a dict.

    Keys are ``"<metric>@<k>"`` (``"ndcg@10"``), or ``"<metric>"`` for ``k=None``; the metric
    names are those of :data:`METRICS` and the values equal the single-metric functions.

    Args:
        preds: scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``.
        target: graded relevance ``>= 0``.
        indexes: ``(N,)`` integer query ids (flat input only).
        mask: optional bool mask of the shape of ``preds``.
        weights: optional query weights, ``(N,)`` rows or ``(Q,)``.
        ks: cutoffs (positive integers; ``None`` = whole list: precision is then ``|R_q| / n_q``).
        metrics: names from ``("ndcg", "recall", "precision", "mrr", "hit_rate", "map")``.
        exponential_gain: NDCG gain :math:`2^y - 1`.
        empty_target_action: policy for queries without relevance (shared by all metrics).
        padding_value: predictions equal to it are padding.
        validate_args: check inputs first.

    Returns:
        A dict of float64 scalars.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import ranking_metrics
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> target = torch.tensor([[0, 1, 1], [1, 0, 0]])
        >>> out = ranking_metrics(preds, target, ks=(1, 2), metrics=("recall", "mrr"))
        >>> {key: round(value.item(), 4) for key, value in out.items()}
        {'recall@1': 0.0, 'recall@2': 0.25, 'mrr@1': 0.0, 'mrr@2': 0.25}
    """
    requests = check_requests(metrics, ks)
    check_ranking_args(None, empty_target_action, padding_value)
    check_flag("exponential_gain", exponential_gain)
    rows = format_ranking(preds, target, indexes, mask, weights, padding_value=padding_value, validate=validate_args)
    value_sum, weight_sum, _ = ranking_update(
        rows, requests, exponential_gain=exponential_gain, empty_target_action=empty_target_action
    )
    values = ranking_compute(value_sum, weight_sum, "RankingMetrics")
    return {request_key(name, k): values[i] for i, (name, k) in enumerate(requests)}
