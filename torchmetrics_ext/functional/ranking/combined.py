"""Several ranking metrics at several cutoffs from one pass over the rows: :func:`ranking_metrics`.

Definitions, inputs, ties and the empty-query policy are those of
:mod:`~torchmetrics_ext.functional.ranking.single`; every metric of the registry can be asked for
by name. One sort (or one top-k merge) serves every request.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from torchmetrics_ext.functional.ranking._docs import ranking_doc
from torchmetrics_ext.functional.ranking._hints import torchmetrics_hints
from torchmetrics_ext.functional.ranking._registry import DEFAULT_METRICS, SPECS, ranking_requests
from torchmetrics_ext.functional.ranking._spec import RankingOptions, request_key
from torchmetrics_ext.functional.ranking._update import _ranking_functional

__all__ = ["ranking_metrics"]

METRICS_DOC = (
    f"names of registered metrics, any of {tuple(SPECS)}, each at most once; the default is the six classic ones "
    f"{DEFAULT_METRICS}."
)
RETURNS_DOC = (
    'A dict of float64 scalars keyed ``"<metric>@<k>"`` (``"ndcg@10"``), or ``"<metric>"`` for ``k=None`` '
    'and for metrics without cutoff (``"r_precision"``); each equals the single-metric function\'s value.'
)


@torchmetrics_hints
@ranking_doc(extra={"metrics": METRICS_DOC}, returns=RETURNS_DOC)
def ranking_metrics(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    ks: Sequence[int | None] = (1, 5, 10),
    metrics: Sequence[str] = DEFAULT_METRICS,
    exponential_gain: bool = False,
    adaptive_k: bool = False,
    empty_target_action: str = "skip",
    padding_value: float | None = None,
    remove_single_length_sessions: bool = False,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    """Every metric of ``metrics`` at every cutoff of ``ks`` from one pass, as a dict.

    ``None`` in ``ks`` is the whole list for every metric with a cutoff (recall is then 1 and
    precision :math:`|R_q| / n_q`); a metric without cutoff (R-precision) gives one key.
    The empty-query policy and the weights are shared, so the set of counted queries is the
    same for every key.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import ranking_metrics
        >>> preds = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.4]])
        >>> target = torch.tensor([[0, 1, 1], [1, 0, 0]])
        >>> out = ranking_metrics(preds, target, ks=(1, 2), metrics=("recall", "mrr", "r_precision"))
        >>> {key: round(value.item(), 4) for key, value in out.items()}
        {'recall@1': 0.0, 'recall@2': 0.25, 'mrr@1': 0.0, 'mrr@2': 0.25, 'r_precision': 0.25}
    """
    requests = ranking_requests(metrics, ks)
    values = _ranking_functional(
        requests,
        "RankingMetrics",
        (preds, target, indexes, mask, weights),
        RankingOptions(exponential_gain, adaptive_k),
        empty_target_action=empty_target_action,
        padding_value=padding_value,
        remove_single_length_sessions=remove_single_length_sessions,
        validate_args=validate_args,
    )
    return {request_key(request): values[i] for i, request in enumerate(requests)}
