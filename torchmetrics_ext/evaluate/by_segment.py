"""Every segment's value of every metric at once: one vectorised pass per metric, no loop over segments.

``evaluate(by=...)`` keeps every row with its segment id (:class:`~torchmetrics_ext.evaluate.segments.SegmentRows`)
and, at the end, computes each metric on each segment's rows. Building, feeding and computing a
module per segment costs milliseconds each (hours for user-level segments), so each metric family
is computed for all segments in one pass instead, keyed by segment id, with the same kernels its
class uses (so the values are the class's on each segment's rows, up to the last digit of float64
sums added in another order):

* **sum statistics** (NE, log loss, calibration, CTR, MSE, the counters, ...):
  :class:`~torchmetrics_ext.Segmented`, which adds every row's terms into ``(T, S)`` states with
  one ``scatter_add_`` and hands them to the metric's own compute;
* **exact AUC and AUPRC**: the grouped-AUC kernel with the segment as the group (one sort of
  ``(segment, score)`` keys), then the binary metric's compute on the ``(T, S)`` curve sums;
* **grouped AUC/AUPRC** (``gauc``, ``gauprc``): the same kernel over ``(segment, user)`` groups,
  each group's value averaged into its segment with one ``index_add_`` under the metric's rules
  (``average_groups``, ``weight_groups``);
* **ranking** (``RankingMetrics``): queries are ``(segment, session)`` pairs (a session split by
  the segments is one query per segment, as on each segment's rows), ranked by one sort per task
  (the kernel's sort path), each query's weighted terms added into its segment;
* **pairwise** (``regression_auc``, ``xauc``): the pair kernel over the segments padded to a
  common length with zero-weight rows, one call per power-of-two segment size.

Any other metric (none of the registry's; a binned AUC, say) is left to the caller, which computes
it segment by segment (:attr:`SegmentValues.per_segment`).

Undefined values (``nan``) are collected as data (:func:`~torchmetrics_ext.utilities.warnings.collecting_undefined`):
per metric, the ``(T, S)`` entries each warning flags, in the order the metric raised them, so the
caller can attribute each to its tasks and segments (``evaluate`` counts them per metric and task).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor
from torchmetrics import Metric

from torchmetrics_ext.functional.auc.binary import _auc_compute, _auprc_compute, _signed_weights
from torchmetrics_ext.functional.auc.grouped import (
    _group_values,
    _grouped_compute,
    _grouped_curve_stats,
    _grouped_stats_and_slots,
    _id_order,
    _key_type,
    _sorted_keys_order,
)
from torchmetrics_ext.functional.auc.pairwise import (
    PairCounts,
    _pairwise_counts,
    _regression_auc_compute,
    _xauc_compute,
)
from torchmetrics_ext.functional.ranking._kernel import SortedQueries, rank_rows, sorted_columns
from torchmetrics_ext.functional.ranking._spec import request_key
from torchmetrics_ext.functional.ranking._update import _NO_QUERY, _ranking_compute, reduce_columns
from torchmetrics_ext.metrics.auc import AUC, AUPRC, XAUC, GroupedAUC, GroupedAUPRC, RegressionAUC
from torchmetrics_ext.metrics.pointwise import _PointwiseMetric
from torchmetrics_ext.metrics.ranking import RankingMetrics
from torchmetrics_ext.utilities.warnings import (
    UndefinedEntries,
    collecting_undefined,
    naming_metric,
    or_no_samples,
    warn_undefined,
)
from torchmetrics_ext.wrappers.segmented import Segmented

__all__ = ["SegmentBatch", "SegmentValues", "Undefined", "segment_values"]

_SUM_ROWS = 1 << 18  # rows per piece of the sum statistics' update (their per-row terms: ~10 MB a piece)
_INT64_IDS = 1 << 62  # composite ids stay below this (one multiplication and one addition)


@dataclass(frozen=True)
class SegmentBatch:
    """Every kept row, its tasks stacked, with the dense id of its segment.

    Attributes:
        preds: ``(T, N)`` predictions, float32 or float64 (as read: logits when they are logits).
        target: ``(T, N)`` labels, of any real dtype (as read: int8, float32, ...).
        weights: ``(N,)`` weights shared by the tasks, ``(T, N)`` where tasks differ (a task
            without weights has ones), or ``None`` (weight 1); of any real dtype.
        groups: ``(N,)`` int32 or int64 user ids (``None`` when no metric needs them).
        sessions: ``(N,)`` int32 or int64 session ids (``None`` when no metric needs them).
        segment: ``(N,)`` int32 or int64 segment ids in ``[0, num_segments)``; every segment has a row.

    Every value is the same number in float64: each family computes as it would on float64 rows (the
    sum statistics' terms from float64 pieces, sorts on the scores' order), so the values do not depend
    on the dtypes (``tests/test_evaluate_kept_dtypes.py``).
        num_segments: ``S``.
    """

    preds: Tensor
    target: Tensor
    weights: Tensor | None
    groups: Tensor | None
    sessions: Tensor | None
    segment: Tensor
    num_segments: int

    @property
    def num_tasks(self) -> int:
        """``T``."""
        return self.preds.shape[0]


@dataclass(frozen=True)
class Undefined:
    """One undefined-value warning of a metric over every segment.

    Attributes:
        metric: the name the metric's warning gives: its key (``"auc"``, ``"ranking (ndcg@10, mrr@10)"``).
        reason: the warning's reason, without ``"; returning nan."``.
        undefined: ``(T, S)`` bool, the (task, segment) entries the warning flags.
    """

    metric: str
    reason: str
    undefined: Tensor


@dataclass
class SegmentValues:
    """What :func:`segment_values` computed.

    Attributes:
        values: value key (``"ne"``, ``"ranking.ndcg@10"``) -> ``(T, S)`` float64 values.
        undefined: metric key (``"ne"``, ``"ranking"``) -> its undefined-value warnings, in the
            order the metric raises them.
        per_segment: the metric keys left to compute segment by segment, in the order given.
    """

    values: dict[str, Tensor] = field(default_factory=dict)
    undefined: dict[str, list[Undefined]] = field(default_factory=dict)
    per_segment: list[str] = field(default_factory=list)


def segment_values(
    metrics: Mapping[str, Metric],
    fed_probabilities: Collection[str],
    batch: SegmentBatch,
    on_metric: Callable[[str], None] | None = None,
) -> SegmentValues:
    """Every segment's value of each metric, one vectorised pass per metric.

    Args:
        metrics: fresh metrics by key, as a :class:`~torchmetrics_ext.RecMetricModule` holds them
            (built for ``T`` tasks; ``RankingMetrics`` once, applied to each task as the module's
            per-task copies are). They are updated here: pass metrics nothing else uses.
        fed_probabilities: the keys of the metrics the module feeds ``sigmoid(preds)`` (logged
            logits read by metrics without ``from_logits``).
        batch: the rows and their segments.
        on_metric: called with each metric's key before its pass (the compute phase's progress).

    Returns:
        The values and undefined entries of the metrics computed here, and the keys of the
        others (:attr:`SegmentValues.per_segment`).
    """
    out = SegmentValues()
    probabilities: Tensor | None = None
    for key, metric in metrics.items():
        if on_metric is not None:
            on_metric(key)
        family = _family(metric)
        if family is None:
            out.per_segment.append(key)
            continue
        preds = batch.preds
        if key in fed_probabilities:
            if probabilities is None:
                probabilities = torch.sigmoid(batch.preds.double())  # as the module: float64 predictions
            preds = probabilities
        with collecting_undefined() as entries, naming_metric(key):  # warnings name the key, as the module's
            values = family(metric, batch, preds)
        out.values.update(_named(key, values))
        out.undefined[key] = _per_entry(entries, batch)
    return out


def _named(key: str, values: Mapping[str | None, Tensor]) -> dict[str, Tensor]:
    """``{key: value}`` for a metric of one value, ``{"key.entry": value}`` for a dict-valued one."""
    return {key if entry is None else f"{key}.{entry}": value for entry, value in values.items()}


_Family = Callable[[Metric, SegmentBatch, Tensor], dict[str | None, Tensor]]


def _family(metric: Metric) -> _Family | None:
    """The vectorised computation of ``metric``'s family (``None``: computed segment by segment)."""
    if isinstance(metric, _PointwiseMetric):
        return _sums
    if type(metric) in (AUC, AUPRC) and metric.num_bins is None:
        return _curves
    if type(metric) in (GroupedAUC, GroupedAUPRC) and not metric.groups_complete_per_batch:
        return _grouped_curves
    if type(metric) is RankingMetrics and not metric.queries_complete_per_batch and metric.padding_value is None:
        return _rankings
    if type(metric) in (RegressionAUC, XAUC):
        return _pairwise
    return None


def _per_entry(entries: list[UndefinedEntries], batch: SegmentBatch) -> list[Undefined]:
    """The collected warnings as ``(T, S)`` entries."""
    shape = (batch.num_tasks, batch.num_segments)
    out: list[Undefined] = []
    for entry in entries:
        if entry.undefined.numel() != shape[0] * shape[1]:  # every family computes (T, S) values
            raise RuntimeError(
                f"{entry.metric}: undefined entries of shape {tuple(entry.undefined.shape)}, not {shape}"
            )
        out.append(Undefined(entry.metric, entry.reason, entry.undefined.reshape(shape)))
    return out


def _sums(metric: Metric, batch: SegmentBatch, preds: Tensor) -> dict[str | None, Tensor]:
    """Sum statistics: :class:`~torchmetrics_ext.Segmented` (every rank holds every row: no sync).

    The rows were checked once for every requested metric (the module's domains, as the run's checks
    follow them): each metric trusts them, as the module's own do, so CTR does not refuse the
    predictions it never reads (``ctr`` alone accepts any finite prediction, with ``by`` as without).
    """
    segmented = Segmented(metric, batch.num_segments, sync_on_compute=False)  # type: ignore[arg-type]
    weights = batch.weights
    with segmented.inputs_validated():
        # in pieces of rows (views): the per-row terms are temporaries of one piece, not of every row;
        # each piece is added after the one before, as one call adds its rows, so the sums are the same
        for start in range(0, max(preds.shape[-1], 1), _SUM_ROWS):
            piece = slice(start, start + _SUM_ROWS)
            # each piece in float64 (int64 ids), as the module feeds its metrics: the rows are kept as read
            segmented.update(
                preds[:, piece].double(),
                batch.target[:, piece].double(),
                None if weights is None else weights[..., piece].double(),
                segments=batch.segment[piece].long(),
            )
    return {None: segmented.compute().reshape(batch.num_tasks, batch.num_segments)}


def _curves(metric: Metric, batch: SegmentBatch, preds: Tensor) -> dict[str | None, Tensor]:
    """Exact AUC/AUPRC: curve sums per ``(task, segment)`` from one sort, then the class's compute."""
    signed = _signed_weights(batch.target, batch.weights)  # float32 scores and weights, as the class keeps them
    pos, neg, auc_num, ap_num = (s[:, : batch.num_segments] for s in _grouped_curve_stats(preds, signed, batch.segment))
    if isinstance(metric, AUPRC):
        return {None: _auprc_compute(pos, ap_num, neg_total=neg)}
    return {None: _auc_compute(pos, neg, auc_num)}


def _grouped_curves(metric: Metric, batch: SegmentBatch, preds: Tensor) -> dict[str | None, Tensor]:
    """GAUC/GAUPRC: per ``(segment, user)`` group values, averaged per segment under the metric's rules.

    As ``_grouped_update`` averages them over all groups: the groups averaged (both classes, or
    every group with ``average_groups="all"``), each weighing 1 or its total weight.
    """
    assert batch.groups is not None
    assert isinstance(metric, (GroupedAUC, GroupedAUPRC))
    # the rows in (segment, user) order from one sort, handed to the kernel (no pair id per row, no
    # sort of them again), on either path: the device kernel numbers the groups from it as from its own sort
    order = _pair_order(batch.segment, batch.num_segments, batch.groups)
    sorted_rows: tuple[Tensor, Tensor] | None = None
    if order is None:
        users = torch.unique(batch.groups, return_inverse=True)[1]
        groups, group_segment = _pairs(batch.segment, batch.num_segments, users)
        del users  # 8 bytes a row, not needed by the kernel below (which makes its own temporaries)
    else:
        groups, opens, group_segment = order  # `groups` (the order) is not read by the kernel given it
        sorted_rows = (groups, opens)
        del opens
    del order
    signed = _signed_weights(batch.target, batch.weights)
    stats, present = _grouped_stats_and_slots(preds, signed, groups, sorted_rows)
    del groups, sorted_rows
    slots = stats[0].shape[-1]  # the number of groups (more on the device path: empty slots at the end)
    segment_of = torch.zeros(slots, dtype=torch.int64, device=preds.device)
    segment_of[: group_segment.numel()] = group_segment
    values, averaged = _group_values(stats, metric._kind, present if metric.average_groups == "all" else None)
    group_weight = (stats[0] + stats[1]) if metric.weight_groups else torch.ones_like(values)
    group_weight = torch.where(averaged, group_weight, 0.0)
    shape = (batch.num_tasks, batch.num_segments)
    value_sum = values.new_zeros(shape).index_add_(1, segment_of, values * group_weight)
    weight_sum = values.new_zeros(shape).index_add_(1, segment_of, group_weight)
    seen = values.new_zeros(shape).index_add_(1, segment_of, stats[0] + stats[1])  # each segment's label weight
    return {None: _grouped_compute(value_sum, weight_sum, metric._name, lambda: seen == 0)}


def _rankings(metric: Metric, batch: SegmentBatch, preds: Tensor) -> dict[str | None, Tensor]:
    """Ranking: queries are ``(segment, session)`` pairs, each query's terms added into its segment.

    One ``RankingMetrics`` serves every task, as the module's per-task copies do (one sort per task).
    """
    assert batch.sessions is not None
    assert isinstance(metric, RankingMetrics)
    sessions = torch.unique(batch.sessions, return_inverse=True)[1]
    queries, query_segment = _pairs(batch.segment, batch.num_segments, sessions)
    per_task = []
    with collecting_undefined() as entries:  # one warning per task: joined into one (T, S) warning below
        for task in range(batch.num_tasks):  # a loop over tasks, as the module's
            weights = batch.weights if batch.weights is None or batch.weights.ndim == 1 else batch.weights[task]
            ranked = rank_rows(preds[task], batch.target[task], queries, weights)
            sorted_queries = SortedQueries(ranked, metric.options)
            value_sum, weight_sum = reduce_columns(  # request by request: no (queries, requests) matrix
                sorted_columns(sorted_queries, metric.requests),
                sorted_queries.num_rel,
                ranked.size,
                ranked.weight,
                metric.empty_target_action,
                metric.remove_single_length_sessions,
                segments=(query_segment, batch.num_segments),
            )
            # as the class's: a segment without a row of weight says both causes (no query counted, or nothing seen)
            unseen = lambda w=weights: _no_weighted_row(batch.segment, w, batch.num_segments).unsqueeze(1)  # noqa: E731
            per_task.append(
                _ranking_compute(
                    value_sum,
                    weight_sum.unsqueeze(1),
                    metric._label,
                    metric.requests,
                    unseen=unseen,
                    unseen_reason=or_no_samples(_NO_QUERY),
                )
            )
    # each task's warnings, one per reason (the segments that saw nothing, the others), in the order given:
    # each reason's (S,) flags of every task joined into one (T, S) warning
    by_reason: dict[str, list[Tensor]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason, []).append(entry.undefined.reshape(-1))
    for reason, flags in by_reason.items():
        with naming_metric(None):  # the entries' metric is named already
            warn_undefined(torch.stack(flags), entries[0].metric, reason)
    stacked = torch.stack(per_task)  # (T, S, R)
    return {request_key(request): stacked[:, :, i] for i, request in enumerate(metric.requests)}


def _pairwise(metric: Metric, batch: SegmentBatch, preds: Tensor) -> dict[str | None, Tensor]:
    """RegressionAUC/XAUC: the pair kernel over segments padded to a common length, bucket by bucket.

    The kernel counts the pairs of each row of a ``(rows, L)`` matrix. Segments are grouped by
    their size rounded up to a power of two (at most ``log2(N) + 1`` buckets, padded to twice the
    rows at most); each bucket is one call with a row per (task, segment), the padding of weight 0
    (a pair with a zero-weight sample weighs 0, as the class drops such rows). The pair totals go
    to their ``(task, segment)`` and the class's compute runs once on them.
    """
    num_tasks, num_segments = batch.num_tasks, batch.num_segments
    order = torch.argsort(batch.segment, stable=True)
    segment = batch.segment[order]
    sizes = torch.bincount(segment, minlength=num_segments)
    position = torch.arange(segment.numel(), device=segment.device) - (torch.cumsum(sizes, 0) - sizes)[segment]
    width = torch.ones_like(sizes) << torch.ceil(torch.log2(sizes.to(torch.float64))).to(torch.int64)
    weights = torch.ones_like(batch.preds[0]) if batch.weights is None else batch.weights
    weights = weights.expand(num_tasks, -1)  # (T, N): shared weights or each task's
    totals = torch.zeros(len(PairCounts._fields), num_tasks, num_segments, dtype=torch.float64, device=preds.device)
    for length in torch.unique(width).tolist():  # a loop over bucket sizes, not segments
        members = torch.nonzero(width == length).reshape(-1)
        slot = torch.full_like(sizes, -1)
        slot[members] = torch.arange(members.numel(), device=members.device)
        picked = torch.nonzero(slot[segment] >= 0).reshape(-1)
        rows, row, column = order[picked], slot[segment[picked]], position[picked]
        shape = (num_tasks, members.numel(), length)
        padded = [torch.zeros(shape, dtype=torch.float64, device=preds.device) for _ in range(3)]
        for out, value in zip(padded, (preds[:, rows], batch.target[:, rows], weights[:, rows])):
            out[:, row, column] = value.to(torch.float64)  # the rows as read: converted exactly
        counts = _pairwise_counts(*(value.reshape(-1, length) for value in padded), relative=True)
        totals[:, :, members] = torch.stack(counts).reshape(len(PairCounts._fields), num_tasks, -1)
    compute = _xauc_compute if isinstance(metric, XAUC) else _regression_auc_compute
    # the (task, segment) entries without a row of weight (made only where undefined)
    unseen = partial(_no_weighted_row, batch.segment, weights, num_segments)
    return {None: compute(PairCounts(*totals), unseen)}


def _no_weighted_row(segment: Tensor, weights: Tensor | None, num_segments: int) -> Tensor:
    """``(..., S)``: the segments without a row of non-zero weight, of weights ``(..., N)`` (``None``: no row)."""
    weighted = torch.ones_like(segment, dtype=torch.float64) if weights is None else (weights > 0).to(torch.float64)
    return weighted.new_zeros(*weighted.shape[:-1], num_segments).index_add_(-1, segment, weighted).eq(0)


def _pair_order(segment: Tensor, num_segments: int, users: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The rows in ``(segment, user)`` order from one sort: ``(perm, opens, pair_segment)``.

    ``perm`` and ``opens`` are what :func:`~torchmetrics_ext.functional.auc.grouped._id_order` gives
    for the dense pair ids of :func:`_pairs` (the same stable order: pairs by segment, then user id;
    a pair's rows as given), and ``pair_segment`` is each pair's segment. The composite key
    ``segment * span + (user - min)`` is sorted directly where it stays below ``2**62``; otherwise
    the users are made dense first (a second sort). ``None`` for no rows, or pairs too many to key
    (the caller numbers them with :func:`_pairs` then).
    """
    n = users.numel()
    if n == 0:
        return None
    low, high = (int(v) for v in torch.aminmax(users))
    span = high - low + 1  # exact as Python ints, whatever the ids
    if num_segments * span < _INT64_IDS:
        # written piece by piece into the narrowest key type that holds them (int32 for 2**31 pairs or
        # fewer): no int64 key and no products of every row beside it; the same stable order as `_id_order`
        # of the int64 keys, which sorts their offsets from the smallest
        dtype = _key_type(num_segments * span - 1) or torch.int64
        key = torch.empty(n, dtype=dtype, device=users.device)
        for start in range(0, n, _SUM_ROWS):
            piece = slice(start, start + _SUM_ROWS)
            key[piece] = users[piece].to(torch.int64).sub(low).add_(segment[piece], alpha=span)
        perm, opens = _sorted_keys_order(key)
    else:
        dense = torch.unique(users, return_inverse=True)[1]
        span = int(dense.max()) + 1
        if num_segments * span >= _INT64_IDS:
            return None
        key = dense.add_(segment.long() * span)
        del dense
        perm, opens = _id_order(key)
    del key
    return perm, opens, segment[perm[torch.nonzero(opens).squeeze(1)]]


def _pairs(segment: Tensor, num_segments: int, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Dense ``(segment, id)`` pair ids (ordered by segment, then id) and the segment of each pair.

    ``ids`` are dense (``torch.unique``'s inverse). The pair id of a row is the position of its
    pair among the sorted distinct pairs, so its segment is known from its position alone.
    """
    num_ids = int(ids.max()) + 1 if ids.numel() else 1
    if num_segments * num_ids < _INT64_IDS:
        uniq, pair = torch.unique(segment.long() * num_ids + ids, return_inverse=True)
        return pair, torch.div(uniq, num_ids, rounding_mode="floor")
    uniq, pair = torch.unique(torch.stack([segment.long(), ids]), dim=1, return_inverse=True)
    return pair, uniq[0]
