"""The update and compute kernels every ranking function and class calls.

:func:`_ranking_update` turns a batch of flat rows into per-request weighted sums over its
queries, taking the cheapest computation path that applies to every request (each request's
spec says which apply):

1. the top-k merge (:mod:`._topk`): finite cutoffs over rows grouped by query;
2. first-hit counting (:mod:`._first_hit`): metrics that only need each query's first relevant row;
3. the sort path (:mod:`._kernel`): everything else.

All three give the same values. :func:`_ranking_compute` divides the sums (weighted mean over
queries). :func:`_ranking_functional` is the whole validate, format, update, compute sequence of
a functional call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._dense import DenseQueries, rank_rows_dense
from torchmetrics_ext.functional.ranking._first_hit import first_hit_values
from torchmetrics_ext.functional.ranking._inputs import RankingRows, _ranking_arg_validation, _ranking_format
from torchmetrics_ext.functional.ranking._kernel import Ranked, SortedQueries, rank_rows, sorted_values
from torchmetrics_ext.functional.ranking._spec import RankingOptions, Request, request_key
from torchmetrics_ext.functional.ranking._topk import grouped_topk_values
from torchmetrics_ext.utilities.warnings import warn_undefined


def _ranking_update(
    rows: RankingRows,
    requests: Sequence[Request],
    options: RankingOptions,
    *,
    empty_target_action: str = "skip",
    remove_single_length_sessions: bool = False,
    dense: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-request weighted sums over the queries of ``rows``: ``(value_sum, weight_sum, num_queries)``.

    ``dense``: the device path's kernel (:mod:`._dense`), which reads nothing on the host (the
    only kernel for rows that carry a ``valid`` mask).
    """
    if rows.preds.numel() == 0:
        zero = torch.zeros((), dtype=torch.float64, device=rows.preds.device)
        return torch.zeros(len(requests), dtype=torch.float64, device=rows.preds.device), zero, zero.clone()
    if dense or rows.valid is not None:
        ranked, relevant = rank_rows_dense(rows.preds, rows.target, rows.indexes, rows.weights, rows.valid)
        values, num_rel = sorted_values(DenseQueries(ranked, relevant, options), requests)
        return reduce_queries(values, num_rel, ranked, empty_target_action, remove_single_length_sessions)
    args = (rows.preds, rows.target, rows.indexes, rows.weights, requests)
    fast = grouped_topk_values(*args, options, preds_writable=rows.preds_writable)
    if fast is None:
        fast = first_hit_values(*args)
    if fast is None:
        ranked = rank_rows(rows.preds, rows.target, rows.indexes, rows.weights)
        values, num_rel = sorted_values(SortedQueries(ranked, options), requests)
    else:
        values, num_rel, ranked = fast
    return reduce_queries(values, num_rel, ranked, empty_target_action, remove_single_length_sessions)


def _ranking_compute(value_sum: Tensor, weight_sum: Tensor, label: str, requests: Sequence[Request]) -> Tensor:
    """Weighted mean over queries, ``(len(requests),)``; ``nan`` and one ``UndefinedMetricWarning`` if no query counted.

    Every request shares the one weight sum (0-dim) of the counted queries, so they are all
    defined or all undefined: the warning names ``label`` and, for several requests, their keys
    (``"RankingMetrics (ndcg@1, recall@5) is undefined: ..."``), never positions as "tasks".
    """
    undefined = weight_sum == 0
    keys = "" if len(requests) == 1 else f" ({', '.join(request_key(request) for request in requests)})"
    warn_undefined(
        undefined,
        label + keys,
        "no query counted (no query with a relevant candidate, or all query weights are zero)",
    )
    return torch.where(undefined, math.nan, value_sum / torch.where(undefined, 1.0, weight_sum))


def _ranking_functional(
    requests: Sequence[Request],
    label: str,
    inputs: tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None],
    options: RankingOptions,
    *,
    empty_target_action: str,
    padding_value: float | None,
    remove_single_length_sessions: bool,
    validate_args: bool,
) -> Tensor:
    """Validate, format, update and compute in one call: ``(len(requests),)`` float64 values.

    ``inputs`` are ``(preds, target, indexes, mask, weights)``.
    """
    padding_value = _ranking_arg_validation(
        empty_target_action,
        padding_value,
        remove_single_length_sessions=remove_single_length_sessions,
        **options._asdict(),
    )
    rows = _ranking_format(*inputs, padding_value=padding_value, validate=validate_args)
    value_sum, weight_sum, _ = _ranking_update(
        rows,
        requests,
        options,
        empty_target_action=empty_target_action,
        remove_single_length_sessions=remove_single_length_sessions,
    )
    return _ranking_compute(value_sum, weight_sum, label, requests)


def reduce_queries(
    values: Tensor,
    num_rel: Tensor,
    ranked: Ranked,
    empty_target_action: str,
    remove_single_length_sessions: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the empty-query policy and weights: ``(sum w·v per request, sum w, number of queries)``.

    Query slots of size 0 (past the last query of the device path's kernel) are never counted.
    ``empty_target_action="error"`` reads whether to raise on the host.
    """
    terms, w, include = query_terms(values, num_rel, ranked, empty_target_action, remove_single_length_sessions)
    return terms.sum(0), w.sum(), include.sum().to(torch.float64)


def query_terms(
    values: Tensor,
    num_rel: Tensor,
    ranked: Ranked,
    empty_target_action: str,
    remove_single_length_sessions: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per query, what :func:`reduce_queries` sums: ``(w·v (G, R), w (G,), counted (G,) bool)``.

    ``w`` is 0 for the queries left out. For a caller that sums queries by something else than
    the whole batch (``evaluate``'s segments: each query's terms added into its segment).
    """
    empty = num_rel == 0
    include = ranked.size > (1 if remove_single_length_sessions else 0)
    if empty_target_action == "error" and bool((empty & include).any()):
        bad = int(torch.nonzero(empty & include)[0, 0])
        raise ValueError(
            f"A query has no relevant candidate (target > 0) and `empty_target_action='error'` "
            f"(query number {bad} of {int((ranked.size > 0).sum())} in sorted id order)."
        )
    if empty_target_action == "skip":
        include = include & ~empty
    elif empty_target_action in ("zero", "one"):
        fill = 0.0 if empty_target_action == "zero" else 1.0
        values = torch.where(empty.unsqueeze(1), fill, values)
    w = include.to(torch.float64)
    if ranked.weight is not None:
        w = w * ranked.weight
    # queries left out contribute 0, whatever their value (an empty slot's may be 0 / 0)
    return torch.where(include.unsqueeze(1), values * w.unsqueeze(1), 0.0), w, include
