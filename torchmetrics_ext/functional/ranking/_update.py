"""The update and compute kernels every ranking function and class calls.

:func:`_ranking_update` turns a batch of flat rows into per-request weighted sums over its
queries, taking the cheapest computation path that applies to every request (each request's
spec says which apply):

1. the top-k merge (:mod:`._topk`): finite cutoffs over rows grouped by query;
2. first-hit counting (:mod:`._first_hit`): metrics that only need each query's first relevant row
   (padded lists take it first, at any width);
3. the sort path (:mod:`._kernel`): everything else.

All three give the same values. :func:`_ranking_compute` divides the sums (weighted mean over
queries). :func:`_ranking_functional` is the whole validate, format, update, compute sequence of
a functional call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking import _topk
from torchmetrics_ext.functional.ranking._columns import Columns
from torchmetrics_ext.functional.ranking._dense import DenseQueries, rank_rows_dense
from torchmetrics_ext.functional.ranking._first_hit import (
    COUNTED_WIDTH,
    FirstHits,
    first_hit_values,
    grid_first_hit_values,
    grid_relevant_ranks,
)
from torchmetrics_ext.functional.ranking._inputs import (
    PaddedGrid,
    RankingRows,
    _ranking_arg_validation,
    _ranking_format,
)
from torchmetrics_ext.functional.ranking._kernel import (
    GridQueries,
    SortedQueries,
    integer_relevance,
    rank_grid,
    rank_rows,
    sorted_columns,
)
from torchmetrics_ext.functional.ranking._spec import RankingOptions, Request, request_key
from torchmetrics_ext.functional.ranking._topk import (
    float32_scores,
    grid_topk_applies,
    grid_topk_values,
    grouped_topk_values,
    merge_may_apply,
)
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, warn_undefined


def _ranking_update(
    rows: RankingRows,
    requests: Sequence[Request],
    options: RankingOptions,
    *,
    empty_target_action: str = "skip",
    remove_single_length_sessions: bool = False,
    dense: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-request weighted sums over the queries of ``rows``: ``(value_sum, weight_sum)``.

    ``dense``: the device path's kernel (:mod:`._dense`), which reads nothing on the host (the
    only kernel for rows that carry a ``valid`` mask). ``empty_target_action="error"`` raises
    naming the query by its id (the row of padded input).
    """
    try:
        return _update_sums(rows, requests, options, empty_target_action, remove_single_length_sessions, dense)
    except _EmptyQueryError as error:
        raise ValueError(_empty_query_message(rows, error.position)) from None


def _empty_query_message(rows: RankingRows, position: int) -> str:
    """The ``"error"`` policy's message for the query at ``position`` among ``rows``' queries in id order.

    Every path numbers the queries that hold a row (a padded row that is all padding is none) in
    increasing id order, so the id is the ``position``-th distinct id of the rows kept.
    """
    ids = rows.indexes if rows.valid is None else rows.indexes[rows.valid]
    query = int(torch.unique(ids)[position])
    where = f"row {query} of the padded `preds`" if rows.padded else f"the query of id {query} (`indexes`)"
    return (
        f"A query has no relevant candidate (target > 0) and `empty_target_action='error'`: {where}. "
        "Give every query a relevant candidate, or choose 'skip', 'zero' or 'one'."
    )


def _update_sums(
    rows: RankingRows,
    requests: Sequence[Request],
    options: RankingOptions,
    empty_target_action: str,
    remove_single_length_sessions: bool,
    dense: bool,
) -> tuple[Tensor, Tensor]:
    """:func:`_ranking_update`'s sums, on the cheapest path that serves every request."""
    if rows.num_rows == 0:
        device = (rows.preds if rows.grid is None else rows.grid.preds).device  # no rows gathered for it
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return torch.zeros(len(requests), dtype=torch.float64, device=device), zero
    grid_hits = None
    if rows.padded and rows.grid is not None and (rows.grid.keep is None or not (dense or rows.valid is not None)):
        # MRR and hit rate of padded lists: each list's first relevant entry counted in place (no sort, at any
        # width); no host read without padding, so the device path takes it too
        grid_hits = grid_first_hit_values(rows.grid, requests)
    if grid_hits is not None:
        columns, num_rel, ranked = grid_hits
        return reduce_columns(
            columns, num_rel, ranked.size, ranked.weight, empty_target_action, remove_single_length_sessions
        )
    if dense or rows.valid is not None:
        ranked, relevant = rank_rows_dense(rows.preds, rows.target, rows.indexes, rows.weights, rows.valid)
        dense_queries = DenseQueries(ranked, relevant, options)
        return reduce_columns(
            sorted_columns(dense_queries, requests),
            dense_queries.num_rel,
            ranked.size,
            ranked.weight,
            empty_target_action,
            remove_single_length_sessions,
            True,
        )
    top_grade = None  # the lists' largest relevance grade, when read while grouping them
    if rows.padded:
        grid = whole = rows.grid
    else:  # one long query first (two reads of its ids), then short runs of one length, then few long queries
        grid, whole = None, _one_long_query(rows, requests)
        if whole is None:
            grid = whole = _equal_runs(rows)
        if whole is None:  # few long queries, ids in any order: grouped into padded lists
            long_lists = _long_queries(rows, requests)
            if long_lists is not None:
                whole, top_grade = long_lists
    selected = None
    # many padded lists with padding: each list's k best by one row-wise selection, whatever their width (the
    # top-k merge would first gather the kept entries into flat rows, which costs more than the selection)
    many_padded = (
        rows.padded and grid is not None and grid.keep is not None and merge_may_apply(grid.preds.shape[0], requests)
    )
    if whole is not None:
        selected = grid_topk_values(
            whole.preds, whole.target, whole.weights, requests, options, whole.keep, top_grade, any_width=many_padded
        )
    if selected is not None:  # long lists (padded or not), small cutoffs: each list's k best rows by torch.topk
        columns, num_rel, ranked = selected
        return reduce_columns(
            columns, num_rel, ranked.size, ranked.weight, empty_target_action, remove_single_length_sessions
        )
    fast = None
    if grid is None or (not many_padded and merge_may_apply(grid.preds.shape[0], requests)):
        fast = grouped_topk_values(
            rows.preds, rows.target, rows.indexes, rows.weights, requests, options, preds_writable=rows.preds_writable
        )
        if fast is None and grid is not None and grid.keep is None:  # lists without padding: their rows as given
            fast = first_hit_values(rows.preds, rows.target, rows.indexes, rows.weights, requests)
    if fast is None and grid is not None:
        # padded lists (or flat rows that are) the top-k merge does not take: each row sorted on its own, the
        # sort path's values bit for bit (first-hit counting's too), at a fraction of the cost of sorting the
        # flattened rows by (query, score, relevance) keys; also for many lists (float relevance, float64 scores)
        counted = None
        if grid.preds.shape[1] >= COUNTED_WIDTH:  # wide lists of few relevant entries: their ranks counted instead
            integer = rows.target_max is not None and not grid.target.is_floating_point()
            counted = grid_relevant_ranks(grid, int(rows.target_max) if integer else None)  # type: ignore[arg-type]
        if counted is not None:
            counted_queries = SortedQueries(counted, options)
            return reduce_columns(
                sorted_columns(counted_queries, requests),
                counted_queries.num_rel,
                counted.size,
                counted.weight,
                empty_target_action,
                remove_single_length_sessions,
            )
        queries = GridQueries(*rank_grid(*grid), options, rows.target_max)
        size = queries.query_size if remove_single_length_sessions else None  # read for nothing else
        return reduce_columns(
            _grid_columns(queries, requests),
            queries.num_rel,
            size,
            queries.weight,
            empty_target_action,
            remove_single_length_sessions,
        )
    if fast is None:
        fast = first_hit_values(rows.preds, rows.target, rows.indexes, rows.weights, requests)
    if fast is None:
        ranked = rank_rows(rows.preds, rows.target, rows.indexes, rows.weights)
        sorted_queries = SortedQueries(ranked, options)
        columns, num_rel = sorted_columns(sorted_queries, requests), sorted_queries.num_rel
    else:
        columns, num_rel, ranked = fast
    return reduce_columns(
        columns, num_rel, ranked.size, ranked.weight, empty_target_action, remove_single_length_sessions
    )


EQUAL_RUNS_ROWS = 2 * _topk.ROWS_PER_ROUND
"""Flat rows below this many are tried as padded lists (:func:`_equal_runs`)."""


def _equal_runs(rows: RankingRows) -> PaddedGrid | None:
    """Few flat rows whose queries are runs of one length in increasing id order, as padded lists; else ``None``.

    Only below :data:`EQUAL_RUNS_ROWS` rows, where the sort path's fixed cost is most of the work
    (100 queries of 10 candidates: about 20% of a small ``compute``): one ``unique_consecutive``.
    Lists the top-k merge may take (from ``ROWS_PER_ROUND`` queries) still go to it. A query's
    weight is its rows' largest, as on the sort path.
    """
    n = rows.preds.numel()
    if n >= EQUAL_RUNS_ROWS:
        return None
    ids, counts = torch.unique_consecutive(rows.indexes, return_counts=True)
    num_queries = ids.numel()
    width = n // num_queries
    if num_queries > 1 and (
        width * num_queries != n or int(counts.min()) != width or not bool((ids[1:] > ids[:-1]).all())
    ):
        return None  # the counts sum to n: with the smallest n / G, all are
    return _as_lists(rows.preds, rows.target, rows.weights, counts, width, None)


def _one_long_query(rows: RankingRows, requests: Sequence[Request]) -> PaddedGrid | None:
    """Flat rows of one query long enough for :func:`~._topk.grid_topk_values`, as a ``(1, N)`` list; else ``None``.

    From ``ROWS_PER_ROUND`` rows on (:func:`_equal_runs` takes fewer), where sorting them all is
    most of the work; only when the requests allow a selection, the first and last ids are read
    (most batches differ there), then one comparison over the ids.
    """
    n, ids = rows.preds.numel(), rows.indexes
    if n < _topk.ROWS_PER_ROUND or not grid_topk_applies(n, requests):
        return None
    first = ids[0]
    if not bool(ids[-1] == first) or not bool((ids == first).all()):
        return None
    weights = None if rows.weights is None else rows.weights.amax().reshape(1)
    return PaddedGrid(rows.preds.reshape(1, n), rows.target.reshape(1, n), None, weights)


LONG_QUERIES_FILL = 2
"""Flat rows are grouped into padded lists only when the ``(G, longest)`` grid has at most this many slots per row."""


def _long_queries(rows: RankingRows, requests: Sequence[Request]) -> tuple[PaddedGrid, int] | None:
    """Flat rows of long queries, ids in any order, as padded lists in id order for :func:`~._topk.grid_topk_values`.

    Returns the lists (their ``target``: integer grades) and the largest grade, read once here
    and passed on (the selection does not read it again).

    ``None`` (nothing built) unless the longest query passes :func:`~._topk.grid_topk_applies`
    and the grid has at most :data:`LONG_QUERIES_FILL` slots per row; also for MRR and hit rate
    alone (first-hit counting is cheaper) and for many queries the top-k merge takes. A strided
    sample of the ids turns most of those down cheaply: in id order, every
    ``GRID_TOPK_WIDTH // 2``-th row bounds the longest query (a query of ``GRID_TOPK_WIDTH``
    rows holds two equal neighbours of it). Rows grouped in id order are counted by
    ``unique_consecutive``; other ids (spanning fewer than ``N`` values) by a ``bincount``, and
    their rows grouped by one stable sort of each row's query number in the narrowest integer
    dtype (a radix sort). A query's row order in its list is free: equal rank keys are
    identical rows.
    """
    n, ids = rows.num_rows, rows.indexes
    if not grid_topk_applies(n, requests) or all(spec.first_hit_value is not None for spec, _ in requests):
        return None  # MRR and hit rate alone: first-hit counting (:mod:`._first_hit`) is cheaper
    stride = _topk.GRID_TOPK_WIDTH // 2
    sample = ids[::stride]
    if bool((sample[1:] > sample[:-1]).all()):
        return None  # ids in order (as far as the sample tells), every query shorter than GRID_TOPK_WIDTH rows
    group, size = None, None  # each row's query number, when the rows are not grouped by query in id order
    if bool((sample[1:] >= sample[:-1]).all()):
        # in id order, no query is longer than `bound` rows (each `stride`-th row sampled)
        bound = stride * (int(torch.unique_consecutive(sample, return_counts=True)[1].max()) + 1) - 1
        if merge_may_apply(n // bound, requests):  # then, or below by the exact count, the top-k merge applies:
            return None  # at least ROWS_PER_ROUND rows per position, cheaper than a grid of many queries
        runs, size = torch.unique_consecutive(ids, return_counts=True)
        if runs.numel() > 1 and not bool((runs.diff() > 0).all()):
            size = None  # a query's rows apart, or queries out of id order
        elif n >= _topk.ROWS_PER_ROUND * int(size.max()) and merge_may_apply(size.numel(), requests):
            return None
    if size is None:
        low, high = (int(v) for v in torch.aminmax(ids))
        if high - low >= n:
            return None  # sparse ids: a count table would be larger than the rows
        offset = ids - low if low else ids
        id_count = torch.bincount(offset, minlength=high - low + 1)
        present = id_count > 0
        size = id_count[present]
        group = offset  # made each row's query number below
    num_queries, longest = size.numel(), int(size.max())
    if num_queries * longest > LONG_QUERIES_FILL * n or not grid_topk_applies(longest, requests):
        return None
    # what grid_topk_values would decline, turned down before the grid is built: relevance that is not a small
    # integer, float64 scores that are not float32 (grouped as float32 and as integers: the same values, fewer bytes)
    graded = integer_relevance(rows.target, _topk.MAX_GRADE, torch.int32)
    if graded is None:
        return None
    preds = float32_scores(rows.preds) if rows.preds.dtype == torch.float64 else rows.preds
    if preds is None:
        return None
    order = None
    if group is not None:
        group = (torch.cumsum(present, 0) - 1).index_select(0, group)
        narrow = torch.uint8 if num_queries <= 256 else torch.int16 if num_queries <= 1 << 15 else torch.int32
        order = torch.sort(group.to(narrow), stable=True).indices
    return _as_lists(preds, graded[0], rows.weights, size, longest, order), graded[1]


def _as_lists(
    preds: Tensor, target: Tensor, weights: Tensor | None, size: Tensor, longest: int, order: Tensor | None
) -> PaddedGrid:
    """Flat rows as ``(G, longest)`` padded lists: query ``g``'s ``size[g]`` rows in its first slots.

    ``order``: the permutation grouping the rows by query (``None``: they are). A query's weight
    is its rows' largest (:func:`~._topk.grid_topk_values` clamps it at 0, as the sort path).
    """
    num_queries = size.numel()
    if order is not None:
        preds, target = preds.index_select(0, order), target.index_select(0, order)
        weights = None if weights is None else weights.index_select(0, order)
    if num_queries * longest == preds.numel():  # lists of one length, in id order
        keep = None
        lists = [preds.reshape(num_queries, longest), target.reshape(num_queries, longest)]
        if weights is not None:
            lists.append(weights.reshape(num_queries, longest).amax(1))
    else:
        keep = torch.arange(longest, device=size.device) < size.unsqueeze(1)
        # padded slots left unset: grid_topk_values masks them out (_drop_padding) before any read
        lists = [values.new_empty(keep.shape).masked_scatter_(keep, values) for values in (preds, target)]
        if weights is not None:
            lists.append(weights.new_zeros(keep.shape).masked_scatter_(keep, weights).amax(1))
    return PaddedGrid(lists[0], lists[1], keep, lists[2] if weights is not None else None)


def _grid_columns(queries: GridQueries, requests: Sequence[Request]) -> Columns:
    """:func:`sorted_columns` of padded lists; a first-hit value is read off each query's first relevant row.

    Equal to the sort path's value bit for bit (the same reciprocal rank or hit flag, where the
    sort path adds the one row's value to 0.0), and cheaper on a grid.
    """
    queries.ideal_cutoffs = max(1, sum(spec.counts_grades for spec, _ in requests))  # as sorted_columns

    @functools.cache
    def first_hits() -> FirstHits:  # the first relevant entry's position: argmax returns the first of equal values
        return FirstHits(queries.relevant.view(torch.uint8).argmax(1), queries.num_rel > 0, queries.relevant.shape[1])

    def value(i: int) -> Tensor:
        spec, k = requests[i]
        if spec.first_hit_value is None:
            return spec.sort_value(queries, k)
        return spec.first_hit_value(first_hits(), k)

    return Columns(requests, value, queries.forget)


# why a ranking value is undefined where samples were seen
_NO_QUERY = "no query counted (no query with a relevant candidate, or all query weights are zero)"


def _ranking_compute(
    value_sum: Tensor,
    weight_sum: Tensor,
    label: str,
    requests: Sequence[Request],
    unseen: Callable[[], Tensor] | None = None,
    unseen_reason: str = NO_SAMPLES,
) -> Tensor:
    """Weighted mean over queries, ``(len(requests),)``; ``nan`` and one ``UndefinedMetricWarning`` if no query counted.

    Every request shares the one weight sum (0-dim) of the counted queries, so they are all
    defined or all undefined: the warning names ``label`` and, for several requests, their keys
    (``"RankingMetrics (ndcg@1, recall@5) is undefined: ..."``), never positions as "tasks".
    A weight sum that overflowed float64 (query weights near 1e308) is ``nan`` too, without a warning
    (the package's rule, :func:`~torchmetrics_ext.utilities.warnings.safe_divide`'s): ``x / inf`` would
    report 0 for a finite value sum. ``unseen`` (called only where the value is undefined) tells
    whether no sample of non-zero weight was seen, said with ``unseen_reason`` (see
    :func:`~torchmetrics_ext.utilities.warnings.warn_undefined`).
    """
    undefined = weight_sum == 0
    keys = "" if len(requests) == 1 else f" ({', '.join(request_key(request) for request in requests)})"
    warn_undefined(undefined, label + keys, _NO_QUERY, unseen=unseen, unseen_reason=unseen_reason)
    # entries of zero weight are nan whatever the division gives there (0 / 0, x / 0): no guard on the divisor
    return torch.where(undefined | weight_sum.isinf(), math.nan, value_sum / weight_sum)


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
    empty_target_action, padding_value = _ranking_arg_validation(
        empty_target_action,
        padding_value,
        remove_single_length_sessions=remove_single_length_sessions,
        **options._asdict(),
    )
    rows = _ranking_format(*inputs, padding_value=padding_value, validate=validate_args)
    value_sum, weight_sum = _ranking_update(
        rows,
        requests,
        options,
        empty_target_action=empty_target_action,
        remove_single_length_sessions=remove_single_length_sessions,
    )
    return _ranking_compute(value_sum, weight_sum, label, requests, lambda: _no_weighted_row(rows))


def _no_weighted_row(rows: RankingRows | None) -> Tensor:
    """Whether ``rows`` (all rows given, or ``None`` for none) hold no row of non-zero weight, as a 0-dim tensor."""
    if rows is None or rows.num_rows == 0:
        return torch.tensor(True)
    weights = rows.weights
    if weights is None:
        return torch.tensor(False, device=rows.preds.device)
    return ~(weights > 0).any()


def reduce_columns(
    columns: Columns,
    num_rel: Tensor,
    size: Tensor | None,
    weight: Tensor | None,
    empty_target_action: str,
    remove_single_length_sessions: bool,
    empty_slots: bool = False,
    segments: tuple[Tensor, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Apply the empty-query policy and weights: ``(sum w·v per request, sum w)``.

    Each request's ``(G,)`` values are reduced as soon as they are made (requests grouped by
    cutoff, see :meth:`Columns.in_cutoff_order`): the memory is a few ``(G,)`` vectors whatever
    the number of requests. ``size`` and ``weight``: each query's (:class:`Ranked`'s; ``size`` is
    only read with ``remove_single_length_sessions`` or ``empty_slots`` and may be ``None``
    otherwise). ``empty_slots``: there may be query slots of size 0 (past the last query of the
    device path's kernel), which are never counted. ``empty_target_action="error"`` reads
    whether to raise on the host. ``segments``: ``(segment of each query, number of segments S)``
    to sum each segment's queries apart (``evaluate --by``): the sums are then ``(S, R)`` and ``(S,)``.
    """
    include, fill = _query_policy(
        num_rel, size, weight, empty_target_action, remove_single_length_sessions, empty_slots
    )
    scale, w = _query_weights(include, weight, num_rel)
    if segments is not None:
        segment, num_segments = segments
        w = w.to(torch.float64)
        value_sum = w.new_zeros(num_segments, len(columns))
        for i in columns.in_cutoff_order():
            value_sum[:, i].index_add_(0, segment, _terms(fill(columns(i)), include, scale))
        return value_sum, w.new_zeros(num_segments).index_add_(0, segment, w)
    by_request = {i: _terms(fill(columns(i)), include, scale).sum() for i in columns.in_cutoff_order()}
    sums = [by_request[i] for i in range(len(columns))]  # every request is read once
    weight_sum = w.sum(dtype=torch.float64)  # of 0/1 counts: exact, as the sum of their float64 copy
    if len(sums) == 1:  # one request (a single metric): its sum as a (1,) vector, no stack
        return sums[0].reshape(1), weight_sum
    if not sums:
        return num_rel.new_zeros(0), weight_sum
    return torch.stack(sums), weight_sum


class _EmptyQueryError(ValueError):
    """A counted query without a relevant candidate under ``empty_target_action="error"``.

    ``position`` is the query's 0-based number among the ``count`` queries in id order;
    :func:`_ranking_update`, which holds the rows, names the query by its id instead.
    """

    def __init__(self, position: int, count: int) -> None:
        super().__init__(
            f"A query has no relevant candidate (target > 0) and `empty_target_action='error'` "
            f"(query number {position} of {count}, counting from 0, in sorted id order)."
        )
        self.position = position


def _query_policy(
    num_rel: Tensor,
    size: Tensor | None,
    weight: Tensor | None,
    empty_target_action: str,
    remove_single_length_sessions: bool,
    empty_slots: bool,
) -> tuple[Tensor | None, Callable[[Tensor], Tensor]]:
    """``(queries counted (None: all), values -> values with the empty queries' fill)`` of the policy.

    ``empty_target_action="error"`` raises here when a counted query of non-zero ``weight`` has no
    relevant candidate: a query of zero weight is absent, as every zero-weight row is.
    """
    include = None  # every query (a query of the sort paths has at least one row)
    if remove_single_length_sessions or empty_slots:
        if size is None:
            raise ValueError("reduce_columns needs the query sizes to leave out single-row or empty queries.")
        include = size > (1 if remove_single_length_sessions else 0)
    if empty_target_action == "skip":
        has_rel = num_rel != 0
        return (has_rel if include is None else include & has_rel), _unchanged
    empty = num_rel == 0
    if empty_target_action == "error":
        bad_rows = empty if include is None else empty & include
        if weight is not None:
            bad_rows = bad_rows & (weight > 0)
        if bool(bad_rows.any()):
            raise _EmptyQueryError(
                int(torch.nonzero(bad_rows)[0, 0]), bad_rows.numel() if size is None else int((size > 0).sum())
            )
    if empty_target_action in ("zero", "one"):
        value = 0.0 if empty_target_action == "zero" else 1.0
        return include, lambda values: torch.where(empty, value, values)
    return include, _unchanged


def _unchanged(values: Tensor) -> Tensor:
    return values


def _query_weights(include: Tensor | None, weight: Tensor | None, num_rel: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(factor of each query's values (None: 1), weight of each counted query (G,))``; 0 for queries left out.

    The weights are float64, or ``include`` itself (bool: 1 for a counted query) when no query
    has a weight, which the caller sums as float64 without a copy.
    """
    if include is None:
        if weight is None:
            return None, torch.ones(num_rel.shape[0], dtype=torch.float64, device=num_rel.device)
        return weight, weight
    if weight is None:
        return None, include
    w = include.to(torch.float64) * weight
    return w, w


def _terms(values: Tensor, include: Tensor | None, scale: Tensor | None) -> Tensor:
    """Each query's term ``w·v``: ``values`` times ``scale``, 0 for the queries left out (whatever their value)."""
    if scale is not None:
        values = values * scale
    if include is None:
        return values
    # queries left out contribute 0, whatever their value (an empty slot's may be 0 / 0)
    return torch.where(include, values, 0.0)
