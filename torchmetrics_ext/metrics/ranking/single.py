r"""One ranking metric per object: NDCG, Recall@k, Precision@k, MRR, HitRate, MAP, R-precision, F1@k.

Each class is its metric's spec (:mod:`torchmetrics_ext.functional.ranking._registry`) and its
signature; states, ``update`` and ``compute`` come from
:class:`~torchmetrics_ext.metrics.ranking._base._RankingMetric`. Arguments and defaults equal
those of the functional twin in :mod:`torchmetrics_ext.functional.ranking.single`, plus
``queries_complete_per_batch`` and TorchMetrics' options.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from torch import Tensor

from torchmetrics_ext.functional.ranking import _registry as specs
from torchmetrics_ext.functional.ranking._docs import ranking_doc
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.functional.ranking._spec import RankingSpec
from torchmetrics_ext.metrics.ranking._base import SHARED_OPTIONS, _RankingMetric
from torchmetrics_ext.utilities.checks import check_flag
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["MAP", "MRR", "NDCG", "F1AtK", "HitRate", "PrecisionAtK", "RPrecision", "RecallAtK"]

_class_doc = partial(ranking_doc, shared=SHARED_OPTIONS, returns=None)


class _SingleRankingMetric(_RankingMetric):
    """One ``(spec, k)`` request: the spec's cutoff rule and options, ``compute`` returns a scalar."""

    spec: ClassVar[RankingSpec]

    def __init__(self, k: int | None, options: dict[str, bool], **kwargs: Any) -> None:
        k = check_cutoff(k, self.spec.cutoff)
        options = {name: check_flag(name, flag) for name, flag in options.items()}
        super().__init__([(self.spec, k)], self.spec.kernel_options(options), self.spec.label, **kwargs)
        self.k = k
        self.report_as_loss = options.get("report_as_loss", False)
        if self.report_as_loss:  # TorchMetrics guards the class constant; this instance reports a loss
            object.__setattr__(self, "higher_is_better", False)

    def compute(self) -> Tensor:
        """Weighted mean over queries (float64 scalar; ``1 - value`` with ``report_as_loss``)."""
        value = self._compute_values()[0]
        return 1.0 - value if self.report_as_loss else value


@_class_doc()
class NDCG(_SingleRankingMetric):
    r"""Normalized discounted cumulative gain at ``k`` with graded relevance.

    .. math::
        \mathrm{NDCG}_q@k = \frac{\sum_{i \le k} g(y_{q,i}) / \log_2(i + 1)}
        {\sum_{i \le k} g(y^{*}_{q,i}) / \log_2(i + 1)}, \qquad g(y) = y \text{ or } 2^y - 1

    where :math:`y^{*}` is the relevance sorted descending; averaged over queries with weights.

    Note:
        TorchRec divides by an IDCG floored at 1e-6 and scales each session by its largest row
        weight without normalising by the weights; we take the weighted mean and apply
        ``empty_target_action`` to queries without relevance.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NDCG
        >>> metric = NDCG(k=2)
        >>> metric.update(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.6, 0.4]), torch.tensor([0, 2, 1, 1, 0, 0]),
        ...               indexes=torch.tensor([0, 0, 0, 1, 1, 1]))
        >>> metric.compute()
        tensor(0.2398, dtype=torch.float64)
    """

    spec = specs.NDCG

    def __init__(
        self, k: int | None = None, exponential_gain: bool = False, report_as_loss: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(k, {"exponential_gain": exponential_gain, "report_as_loss": report_as_loss}, **kwargs)


@_class_doc()
class RecallAtK(_SingleRankingMetric):
    r"""Recall at ``k``: share of a query's relevant candidates (``target > 0``) in its top ``k``.

    .. math:: \mathrm{Recall}_q@k = |\{i \in R_q : i \le k\}| \,/\, |R_q|

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RecallAtK
        >>> metric = RecallAtK(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    spec = specs.RECALL

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(k, {}, **kwargs)


@_class_doc()
class PrecisionAtK(_SingleRankingMetric):
    r"""Precision at ``k``: relevant candidates in the top ``k`` divided by ``k``.

    .. math:: \mathrm{Precision}_q@k = |\{i \in R_q : i \le k\}| \,/\, k
              \quad (\min(k, n_q) \text{ with } \texttt{adaptive\_k})

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import PrecisionAtK
        >>> metric = PrecisionAtK(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    spec = specs.PRECISION

    def __init__(self, k: int, adaptive_k: bool = False, **kwargs: Any) -> None:
        super().__init__(k, {"adaptive_k": adaptive_k}, **kwargs)


@_class_doc()
class MRR(_SingleRankingMetric):
    r"""Mean reciprocal rank (at ``k``) of each query's first relevant candidate.

    .. math:: \mathrm{RR}_q@k = 1/\min R_q \text{ if } \min R_q \le k \text{, else } 0

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import MRR
        >>> metric = MRR(padding_value=-10.0)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, -10.0]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.5000, dtype=torch.float64)
    """

    spec = specs.MRR

    def __init__(self, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(k, {}, **kwargs)


@_class_doc()
class HitRate(_SingleRankingMetric):
    r"""Hit rate at ``k``: share of queries with a relevant candidate in the top ``k``.

    .. math:: \mathrm{Hit}_q@k = [\exists i \in R_q : i \le k]

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import HitRate
        >>> metric = HitRate(k=2)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.5000, dtype=torch.float64)
    """

    spec = specs.HIT_RATE

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(k, {}, **kwargs)


@_class_doc()
class MAP(_SingleRankingMetric):
    r"""Mean average precision (at ``k``), normalised by all of a query's relevant candidates.

    .. math:: \mathrm{AP}_q@k = \frac{1}{|R_q|} \sum_{i \in R_q,\, i \le k} \mathrm{Precision}_q@i

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import MAP
        >>> metric = MAP()
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.4583, dtype=torch.float64)
    """

    spec = specs.MAP

    def __init__(self, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(k, {}, **kwargs)


@_class_doc()
class RPrecision(_SingleRankingMetric):
    r"""R-precision: precision at :math:`|R_q|`, the number of the query's relevant candidates.

    .. math:: \mathrm{RPrec}_q = |\{i \in R_q : i \le |R_q|\}| \,/\, |R_q|

    The cutoff adapts to each query (there is no ``k``); the value is 1 exactly when the
    relevant candidates fill the top of the list.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RPrecision
        >>> metric = RPrecision()
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
    """

    spec = specs.R_PRECISION

    def __init__(self, **kwargs: Any) -> None:
        if "k" in kwargs:  # the cutoff is each query's number of relevant candidates
            raise WrongTypeError(
                f"RPrecision takes no `k` (got k={kwargs['k']!r}): its cutoff is each query's number of relevant"
                " candidates. For a fixed cutoff use PrecisionAtK(k)."
            )
        super().__init__(None, {}, **kwargs)


@_class_doc()
class F1AtK(_SingleRankingMetric):
    r"""F1 at ``k``: the harmonic mean of each query's precision at ``k`` and recall at ``k``.

    .. math:: \mathrm{F1}_q@k = \frac{2\, P_q@k\, \mathrm{Recall}_q@k}{P_q@k + \mathrm{Recall}_q@k}
              = \frac{2\, |\{i \in R_q : i \le k\}|}{k + |R_q|}

    and 0 when both are 0; with ``adaptive_k`` precision (and so :math:`k` above) uses
    :math:`\min(k, n_q)`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import F1AtK
        >>> metric = F1AtK(k=3)
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> metric.update(preds, torch.tensor([[0, 1, 1], [1, 0, 0]]))
        >>> metric.compute()
        tensor(0.6500, dtype=torch.float64)
    """

    spec = specs.F1

    def __init__(self, k: int, adaptive_k: bool = False, **kwargs: Any) -> None:
        super().__init__(k, {"adaptive_k": adaptive_k}, **kwargs)
