r"""One ranking metric per call: NDCG, Recall@k, Precision@k, MRR, HitRate, MAP, R-precision, F1@k.

Inputs, in either form (see :func:`~torchmetrics_ext.functional.ranking._inputs._ranking_format`):

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

``k`` is required where the whole-list value would not depend on the scores (recall and hit
rate are then 1, precision and F1 a ratio of counts); NDCG, MRR and MAP also take ``k=None``;
R-precision has no cutoff. Each function's arguments and defaults are those of its class
(:mod:`torchmetrics_ext.metrics.ranking.single`), which also takes ``queries_complete_per_batch``.

Ties: candidates of one query with equal scores are ranked by relevance ascending (the relevant
ones of a tie last), so a constant predictor is never rewarded and results do not depend on row
order. Scores may be any real number including ``±inf``; NaN is rejected.
"""

from __future__ import annotations

from torch import Tensor

from torchmetrics_ext.functional.ranking import _registry as specs
from torchmetrics_ext.functional.ranking._docs import ranking_doc
from torchmetrics_ext.functional.ranking._hints import torchmetrics_hints
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.functional.ranking._spec import RankingSpec
from torchmetrics_ext.functional.ranking._update import _ranking_functional
from torchmetrics_ext.utilities.checks import check_flag

__all__ = ["f1_at_k", "hit_rate", "map_at_k", "mrr", "ndcg", "precision_at_k", "r_precision", "recall_at_k"]


def _single(
    spec: RankingSpec,
    *,
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None,
    mask: Tensor | None,
    weights: Tensor | None,
    empty_target_action: str,
    padding_value: float | None,
    remove_single_length_sessions: bool,
    validate_args: bool,
    k: int | None = None,
    **options: bool,
) -> Tensor:
    """One metric's value from a public function's arguments (passed by name, ``**locals()``).

    Applies the spec's cutoff rule and options (the metric's extra flags), then the shared kernels.
    """
    k = check_cutoff(k, spec.cutoff)
    options = {name: check_flag(name, flag) for name, flag in options.items()}
    value = _ranking_functional(
        [(spec, k)],
        spec.label,
        (preds, target, indexes, mask, weights),
        spec.kernel_options(options),
        empty_target_action=empty_target_action,
        padding_value=padding_value,
        remove_single_length_sessions=remove_single_length_sessions,
        validate_args=validate_args,
    )[0]
    return 1.0 - value if options.get("report_as_loss", False) else value


@torchmetrics_hints
@ranking_doc(specs.NDCG)
def ndcg(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int | None = None,
    exponential_gain: bool = False,
    report_as_loss: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Normalized discounted cumulative gain at ``k`` with graded relevance.

    .. math::
        \mathrm{DCG}_q@k = \sum_{i=1}^{\min(k, n_q)} \frac{g(y_{q,i})}{\log_2(i + 1)}, \qquad
        \mathrm{NDCG}_q@k = \frac{\mathrm{DCG}_q@k}{\mathrm{IDCG}_q@k}

    with gain :math:`g(y) = y` (linear, Järvelin and Kekäläinen) or :math:`g(y) = 2^y - 1`
    (``exponential_gain``, Burges); IDCG is the DCG of the candidates sorted by relevance.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import ndcg
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> target = torch.tensor([[0, 2, 1], [1, 0, 0]])
        >>> ndcg(preds, target, k=2)
        tensor(0.2398, dtype=torch.float64)
    """
    return _single(specs.NDCG, **locals())


@torchmetrics_hints
@ranking_doc(specs.RECALL)
def recall_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Recall at ``k``: the share of a query's relevant candidates ranked in its top ``k``.

    .. math:: \mathrm{Recall}_q@k = \frac{|\{i \in R_q : i \le k\}|}{|R_q|}

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import recall_at_k
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.2, 0.6, 0.4])
        >>> target = torch.tensor([0, 1, 1, 1, 0, 0])
        >>> indexes = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> recall_at_k(preds, target, indexes, k=2)
        tensor(0.2500, dtype=torch.float64)
    """
    return _single(specs.RECALL, **locals())


@torchmetrics_hints
@ranking_doc(specs.PRECISION)
def precision_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Precision at ``k``: relevant candidates in the top ``k``, divided by ``k``.

    .. math:: \mathrm{Precision}_q@k = \frac{|\{i \in R_q : i \le k\}|}{k}
              \quad (\text{or } \min(k, n_q) \text{ with } \texttt{adaptive\_k})

    Dividing by ``k`` even when a query has fewer candidates matches trec_eval, ranx and
    TorchMetrics' default.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import precision_at_k
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> precision_at_k(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), k=2)
        tensor(0.2500, dtype=torch.float64)
    """
    return _single(specs.PRECISION, **locals())


@torchmetrics_hints
@ranking_doc(specs.MRR)
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
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Mean reciprocal rank (at ``k``) of each query's first relevant candidate.

    .. math:: \mathrm{RR}_q@k = \frac{1}{\min R_q} \text{ if } \min R_q \le k \text{ else } 0

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import mrr
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, -10.0]])
        >>> mrr(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), padding_value=-10.0)
        tensor(0.5000, dtype=torch.float64)
    """
    return _single(specs.MRR, **locals())


@torchmetrics_hints
@ranking_doc(specs.HIT_RATE)
def hit_rate(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Hit rate at ``k``: the share of queries with a relevant candidate in their top ``k``.

    .. math:: \mathrm{Hit}_q@k = [\,\exists i \in R_q : i \le k\,]

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import hit_rate
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> hit_rate(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), k=2)
        tensor(0.5000, dtype=torch.float64)
    """
    return _single(specs.HIT_RATE, **locals())


@torchmetrics_hints
@ranking_doc(specs.MAP)
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
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Mean average precision (at ``k``), normalised by all relevant candidates (trec_eval, ranx).

    .. math:: \mathrm{AP}_q@k = \frac{1}{|R_q|} \sum_{i \in R_q,\, i \le k} \mathrm{Precision}_q@i

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import map_at_k
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> map_at_k(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        tensor(0.4583, dtype=torch.float64)
    """
    return _single(specs.MAP, **locals())


@torchmetrics_hints
@ranking_doc(specs.R_PRECISION)
def r_precision(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""R-precision: precision at :math:`|R_q|`, the number of the query's relevant candidates.

    .. math:: \mathrm{RPrec}_q = \frac{|\{i \in R_q : i \le |R_q|\}|}{|R_q|}

    The cutoff adapts to each query, so the value is 1 exactly when the relevant candidates
    fill the top of the list. It is also recall at :math:`|R_q|` (ranx's ``r-precision``).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import r_precision
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> r_precision(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        tensor(0.2500, dtype=torch.float64)
    """
    return _single(specs.R_PRECISION, **locals())


@torchmetrics_hints
@ranking_doc(specs.F1)
def f1_at_k(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    k: int,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""F1 at ``k``: the harmonic mean of precision at ``k`` and recall at ``k`` of each query.

    .. math:: \mathrm{F1}_q@k = \frac{2\, P_q@k\, \mathrm{Recall}_q@k}{P_q@k + \mathrm{Recall}_q@k}
              = \frac{2\, |\{i \in R_q : i \le k\}|}{k + |R_q|}

    and 0 when both are 0. :math:`P_q@k` divides by ``k`` (ranx's ``f1@k``), or by
    :math:`\min(k, n_q)` with ``adaptive_k`` (then :math:`k` becomes :math:`\min(k, n_q)` above).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import f1_at_k
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> f1_at_k(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]), k=3)
        tensor(0.6500, dtype=torch.float64)
    """
    return _single(specs.F1, **locals())
