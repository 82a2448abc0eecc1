r"""Grouped (per user / per query) ROC AUC and average precision, vectorised over groups.

On the CPU, one sort of the group ids (as offsets from the smallest id, in the narrowest integer
type that holds them) lays every group's samples side by side; blocks of whole
groups (about ``_GROUP_BLOCK`` samples, so compute is O(N log N) with bounded temporaries) are
each sorted by ``(task, group, score)`` as a composite ``int64`` key, and a group larger than a
block is sorted alone as the binary kernel's packed keys. Then block-wise cumulative sums taken
within each segment ``(task, group)`` (a segmented scan: no group's value depends on the weights
or ids of the others), with tie runs summed as in the exact binary kernel: no Python loop over
groups or tasks. The per-group values are averaged over the groups that hold
both classes (or, with ``average_groups="all"``, over every group, as TorchRec does), optionally
weighted by each group's total sample weight.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from torchmetrics_ext.functional.auc import _kernels
from torchmetrics_ext.functional.auc._device import _grouped_curve_sums, _sortable_ids, _starts
from torchmetrics_ext.functional.auc._kernels import (
    _curve_sums,
    _descending_keys,
    _pack_blocks,
    _row_curve_sums,
    _sort_rows,
)
from torchmetrics_ext.functional.auc.binary import CurveStats, _signed_weights
from torchmetrics_ext.utilities.checks import (
    check_choice,
    check_flag,
    check_tensor,
    checks_validate_args,
    format_pointwise,
    single_task,
)
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import or_no_samples, safe_divide

__all__ = ["grouped_auc", "grouped_auprc"]

AVERAGE_GROUPS = ("defined", "all")


def _check_average_groups(average_groups: object) -> str:
    """``average_groups`` as a Python string (a 0-dim NumPy string too); ``ValueError`` unless a known one."""
    return check_choice("average_groups", average_groups, AVERAGE_GROUPS)


def _check_groups(groups: object, preds: Tensor) -> Tensor:
    """``groups`` must be an integer ``(N,)`` tensor (any int64 ids) on ``preds``' device."""
    groups = check_tensor("groups", groups)  # a dense real tensor
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise WrongTypeError(f"Expected `groups` to be an integer tensor, got dtype {groups.dtype}.")
    if groups.ndim != 1 or groups.shape[0] != preds.shape[-1]:
        raise ValueError(
            f"Expected `groups` of shape ({preds.shape[-1]},) (one id per sample, shared by all tasks), "
            f"got {tuple(groups.shape)}."
        )
    if groups.device != preds.device:
        raise ValueError(f"Expected `groups` on the same device as `preds` ({preds.device}), got {groups.device}.")
    return groups


def _format_grouped(
    preds: Tensor,
    target: Tensor,
    groups: Tensor,
    weights: Tensor | None,
    num_tasks: int | None,
    from_logits: bool,
    validate: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Validate (when asked) and return ``(preds, target, groups, weights)``; preds/target ``(T, N)``."""
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        num_tasks,
        target_domain="binary",
        from_logits=from_logits,
        validate=validate,
        dtype=None,  # scores are ranked as float32 and weights stored as float32 by the kernels
        float32_weights=True,  # signed weights are float32 in both modes
        target_required=True,
    )
    if validate:
        _check_groups(groups, preds)
    # groups of any integer dtype (int64 where the kernels need it); `target` is checked present when validating
    return p, t, groups.reshape(-1), w  # type: ignore[return-value]


def _grouped_curve_stats(scores: Tensor, signed: Tensor, groups: Tensor) -> CurveStats:
    """``(P, N, auc_num, ap_num)``, each ``(T, G)``, for the ``G`` distinct ids of ``groups``.

    On the device path ``G`` is ``N`` (slots past the number of distinct ids hold zeros), so that
    the number of groups never has to be read on the host.

    Args:
        scores: ``(T, N)`` scores.
        signed: ``(T, N)`` signed weights (``+w`` positive, ``-w`` negative).
        groups: ``(N,)`` integer group ids shared by every task.
    """
    return _grouped_stats_and_slots(scores, signed, groups)[0]


def _grouped_stats_and_slots(
    scores: Tensor, signed: Tensor, groups: Tensor, order: tuple[Tensor, Tensor] | None = None
) -> tuple[CurveStats, Tensor]:
    """:func:`_grouped_curve_stats` and the ``(G,)`` mask of its slots that hold a group.

    The mask comes from the sort of the ids that the statistics take (every slot on the CPU path,
    the first ``K`` of the device path's ``N`` for ``K`` distinct ids, counted on the device): a
    group holding only zero-weight rows counts too, as TorchRec's averaging over every group needs.

    ``order``: ``(perm, opens)`` as :func:`_id_order` of ``groups`` gives them (a caller that sorted
    its rows by group already), so the ids are not sorted again (on either path); ``groups`` is then
    not read.
    """
    num_tasks, n = scores.shape
    if n > 0 and on_device_path(scores):
        pos, neg, auc, ap, distinct = _grouped_curve_sums(scores, signed, groups, order)
        return (pos, neg, auc, ap), torch.arange(n, device=groups.device) < distinct
    # One sort of the ids puts every group's samples side by side: group g (the g-th smallest id)
    # is perm[firsts[g]:firsts[g + 1]], so a block of whole groups is a slice of `perm`, never a
    # scan of every sample (a mask over all N samples per block made compute O(N * blocks)).
    perm, opens = _id_order(groups) if order is None else order
    firsts = torch.nonzero(opens).squeeze(1)
    num_groups = firsts.numel()
    stats = torch.zeros(4, num_tasks, num_groups, dtype=torch.float64, device=scores.device)
    # Blocks of whole groups holding fewer than 2 * _GROUP_BLOCK samples, or one larger group alone,
    # and of a block as many tasks at once as keep about _GROUP_BLOCK elements: one sort per chunk,
    # so the sort's temporaries are bounded whatever the number of samples kept (this runs over all
    # of them at compute, where it would otherwise set the peak memory), and many tasks of few
    # samples (or a batch of `groups_complete_per_batch`) take one sort, not one per task.
    for lo, hi, start, end in _group_blocks(firsts, n):
        rows = perm[start:end]
        local = None if hi - lo == 1 else torch.cumsum(opens[start:end], 0).sub_(1)
        tasks_per_chunk = max(1, _GROUP_BLOCK // (end - start))
        for t0 in range(0, num_tasks, tasks_per_chunk):
            t1 = min(num_tasks, t0 + tasks_per_chunk)
            if local is None:  # one group: sorted in place as packed keys, as the binary AUC (8 bytes/element)
                chunk = _one_group_stats(scores[t0:t1], signed[t0:t1], rows).unsqueeze(-1)
            else:
                chunk_scores = scores[t0:t1].index_select(1, rows)
                chunk_signed = signed[t0:t1].index_select(1, rows)
                # segment (task, group) of every element: task-major, groups of the block dense within it
                seg = (torch.arange(t1 - t0, device=rows.device).unsqueeze(1) * (hi - lo) + local).reshape(-1)
                chunk = _segment_stats(chunk_scores, chunk_signed, seg, (t1 - t0) * (hi - lo))
            stats[:, t0:t1, lo:hi] = chunk.view(4, t1 - t0, hi - lo)
    pos, neg, auc, ap = stats
    return (pos, neg, auc, ap), torch.ones(num_groups, dtype=torch.bool, device=scores.device)


# offset key types of the id sort, narrowest first, with the largest offset each holds
_ID_KEYS = ((torch.uint8, 2**8 - 1), (torch.int16, 2**15 - 1), (torch.int32, 2**31 - 1))


def _id_order(groups: Tensor) -> tuple[Tensor, Tensor]:
    """``(perm, opens)``: the samples in order of id (a stable sort) and ``True`` at each group's first sample.

    PyTorch's CPU sort of integers is a radix sort of one pass per key byte that keeps, besides
    the sorted keys, an int64 order and scratch copies of both: 32 bytes per sample for int64 ids.
    The offsets ``groups - min`` are sorted instead, in place, in the narrowest of uint8 / int16 /
    int32 that holds them (18 / 20 / 24 bytes per sample, and fewer passes); ids whose offsets do
    not fit (a span of ``2**31`` or more) are sorted as given. Unsigned ids wider than 8 bits,
    which the CPU's sort and ``aminmax`` do not take, are read as their int64 conversion.
    """
    n = groups.numel()
    groups = _sortable_ids(groups)
    key = None
    if n > 0:
        low, high = torch.aminmax(groups)
        span = int(high) - int(low)
        # `groups - low` is exact in the ids' own dtype when the span fits it (not so for int8 ids -100 and 100)
        if span <= torch.iinfo(groups.dtype).max:
            dtype = _key_type(span)
            if dtype is not None:
                key = torch.sub(groups, low, out=torch.empty(n, dtype=dtype, device=groups.device))
    if key is None:
        key = groups.clone()
    return _sorted_keys_order(key)


def _key_type(top: int) -> torch.dtype | None:
    """The narrowest of :data:`_ID_KEYS` that holds offsets ``0 .. top`` (``None``: none does)."""
    return next((d for d, largest in _ID_KEYS if top <= largest), None)


def _sorted_keys_order(key: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_id_order` of ``key`` (a tensor the caller gives up: sorted in place), keys already offsets or ids."""
    perm = torch.empty(key.numel(), dtype=torch.int64, device=key.device)
    torch.sort(key, stable=True, out=(key, perm))  # in place: no second copy of the keys
    return perm, _starts(key)


def _one_group_stats(scores: Tensor, signed: Tensor, rows: Tensor) -> Tensor:
    """``(4, T_c)`` float64 ``(P, N, auc_num, ap_num)`` of the one group made of samples ``rows``.

    The binary exact kernel over the group's samples: packed ``(score key, weight)`` keys gathered
    block by block and sorted in place, so a group of any size adds 8 bytes per element and
    temporaries of a few MB (not a sort index and gathered copies of the whole group).
    """
    num_tasks = scores.shape[0]
    if scores.is_cpu and num_tasks <= _kernels._FEW_SEGMENTS and rows.numel() * num_tasks <= _kernels._SMALL:
        chunk = [scores.T.index_select(0, rows)], [signed.T.index_select(0, rows)]
        return torch.stack(_kernels._small_curve_stats(*chunk, num_tasks))  # the same bits, fewer calls
    blocks = ((scores.T.index_select(0, part), signed.T.index_select(0, part)) for part in rows.split(_kernels._BLOCK))
    packed, pos_total, neg_total = _pack_blocks(blocks, scores.shape[0], rows.numel(), scores.device)
    auc_num, ap_num = _row_curve_sums(_sort_rows(packed), neg_total)
    return torch.stack([pos_total, neg_total, auc_num, ap_num])


def _segment_stats(scores: Tensor, signed: Tensor, seg: Tensor, num_segments: int) -> Tensor:
    """``(4, S)`` float64 ``(P, N, auc_num, ap_num)`` per segment from one sort by ``(segment, score)``.

    Args:
        scores: ``(T_c, M)`` scores.
        signed: ``(T_c, M)`` signed weights; only read (it may be a view of a metric's state).
        seg: ``(T_c * M,)`` int64 segment id of every element, in ``[0, S)`` with ``S < 2**31``.
        num_segments: ``S``.
    """
    if scores.is_cpu and scores.numel() <= _kernels._SMALL:  # fixed costs first
        small = _small_segment_stats(scores, signed, seg, num_segments)
        if small is not None:
            return small
    # out of place: ``signed`` may be a view of the metric's state, and ``.to`` does not copy a
    # state already in float64 (``set_dtype``)
    weights = signed.reshape(-1).to(torch.float64)
    pos_total = torch.bincount(seg, weights=weights.clamp(min=0), minlength=num_segments).to(torch.float64)
    neg_total = torch.bincount(seg, weights=weights.neg().clamp_(min=0), minlength=num_segments)
    neg_total = neg_total.to(torch.float64)
    del weights
    key = _descending_keys(scores).to(torch.int64).add_(2**31).reshape(-1)
    key |= seg << 32  # the segment in the high half of every sort key
    # NumPy's quicksort (SIMD on x86 with AVX2/AVX-512): 2-3x faster than torch.sort here
    order = torch.from_numpy(np.argsort(key.numpy()))
    key = key[order]
    ordered = signed.reshape(-1)[order]
    del order
    auc_num, ap_num = _curve_sums(key, ordered, neg_total)
    return torch.stack([pos_total, neg_total, auc_num, ap_num])


def _small_segment_stats(scores: Tensor, signed: Tensor, seg: Tensor, num_segments: int) -> Tensor | None:
    """:func:`_segment_stats` of at most ``_kernels._SMALL`` CPU elements on NumPy arrays, to the bit.

    The same totals (``bincount`` in order from 0.0), keys, ``argsort`` and order, then the one
    block of :func:`_curve_sums` by :func:`_kernels._small_one_segment` or
    :func:`_kernels._small_segments` (see :func:`_kernels._small_curve_stats` for why the bits are
    the same); ``None`` where those would take the two-level scan (the caller's path then).
    """
    weights = signed.reshape(-1).to(torch.float64).numpy()
    seg_np = seg.numpy()
    out = np.zeros((4, num_segments))
    out[0] = np.bincount(seg_np, weights=np.maximum(weights, 0.0), minlength=num_segments)
    out[1] = np.bincount(seg_np, weights=np.maximum(np.negative(weights), 0.0), minlength=num_segments)
    if weights.shape[0] == 0:
        return torch.from_numpy(out)
    bits = (scores.to(torch.float32).numpy() + np.float32(0.0)).view(np.int32)
    key = np.invert(((bits >> 31) & 0x7FFFFFFF) ^ bits).astype(np.int64).reshape(-1)  # _descending_keys
    key += 2**31
    key |= seg_np << 32
    order = np.argsort(key)  # the very call of the PyTorch path: the same order, ties included
    key = key[order]
    w = weights[order]
    start = np.empty(key.shape[0], dtype=bool)
    start[0] = True
    np.not_equal(key[1:], key[:-1], out=start[1:])
    seg_sorted = key >> 32
    first = int(seg_sorted[0])
    if first == int(seg_sorted[-1]):  # one segment: _one_segment
        out[:, first] = _kernels._small_one_segment(start, w, out[:2, first].copy())
        return torch.from_numpy(out)
    sums = _kernels._small_segments(start, w, seg_sorted, out[:2], num_segments)
    return None if sums is None else torch.from_numpy(sums)


_GROUP_BLOCK = 1 << 20  # samples per block of whole groups at compute


def _group_blocks(firsts: Tensor, n: int) -> list[tuple[int, int, int, int]]:
    """``(lo, hi, start, end)``: groups ``[lo, hi)`` (dense ids) are samples ``[start, end)`` in id order.

    Each block holds whole groups and fewer than ``2 * _GROUP_BLOCK`` samples, or one group alone
    (a group larger than ``_GROUP_BLOCK`` is always alone).

    Args:
        firsts: ``(G,)`` position of each group's first sample in the samples sorted by id.
        n: the number of samples.
    """
    num_groups = firsts.numel()
    if n <= _GROUP_BLOCK:
        return [(0, num_groups, 0, n)] if n else []
    bounds = torch.cat([firsts, firsts.new_tensor([n])])
    # the group holding each multiple of the block size opens a block; a large one also closes it
    at = torch.searchsorted(firsts, torch.arange(_GROUP_BLOCK, n, _GROUP_BLOCK, device=firsts.device), right=True) - 1
    large = at[bounds[at + 1] - bounds[at] > _GROUP_BLOCK] + 1
    cuts = torch.unique(torch.cat([firsts.new_tensor([0, num_groups]), at, large]))
    groups_at, samples_at = cuts.tolist(), bounds[cuts].tolist()
    return list(zip(groups_at[:-1], groups_at[1:], samples_at[:-1], samples_at[1:]))


def _group_values(stats: CurveStats, kind: str, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-group values (``kind`` is ``"auc"`` or ``"auprc"``) and the mask of the groups averaged.

    Without ``present``: the groups with both classes. With ``present`` (the mask of the slots
    that hold a group, TorchRec's averaging): every group, one without both classes valued as
    TorchRec does: 0.5 for AUC, 1 (positive weight only) or 0 (none) for AUPRC.
    """
    pos, neg, auc_num, ap_num = stats
    valid = (pos > 0) & (neg > 0)
    # clamped to [0, 1]: numerator and denominator are summed in different orders (a perfect group
    # could give 1 + 2**-52); an average of values in [0, 1] then stays in [0, 1]
    if kind == "auc":
        values = torch.where(valid, (auc_num / torch.where(valid, pos * neg, 1.0)).clamp_(0.0, 1.0), 0.5)
    else:
        ratio = (ap_num / torch.where(valid, pos, 1.0)).clamp_(0.0, 1.0)
        values = torch.where(valid, ratio, (pos > 0).to(ap_num.dtype))
    averaged = valid if present is None else present
    return torch.where(averaged, values, 0.0), averaged


def _grouped_update(
    scores: Tensor, signed: Tensor, groups: Tensor, kind: str, weight_groups: bool, average_groups: str = "defined"
) -> tuple[Tensor, Tensor]:
    """``(sum of group values, sum of group weights)`` per task over the groups averaged (see ``_group_values``).

    A group's weight is 1, or its total sample weight when ``weight_groups``. Not differentiable:
    the inputs are read detached (the kernels write in place and with ``out=``, which autograd
    refuses for tensors that require grad, such as weights from a model).
    """
    stats, slots = _grouped_stats_and_slots(scores.detach(), signed.detach(), groups)
    values, valid = _group_values(stats, kind, slots if average_groups == "all" else None)
    group_weight = (stats[0] + stats[1]) if weight_groups else torch.ones_like(values)
    group_weight = torch.where(valid, group_weight, 0.0)
    return (values * group_weight).sum(-1), group_weight.sum(-1)


# why a grouped value is undefined where it saw weight (a task with none: NO_SAMPLES, where the caller can tell)
_NO_GROUP = "no group holds both classes"


def _grouped_compute(
    value_sum: Tensor, weight_sum: Tensor, name: str, unseen: Tensor | Callable[[], Tensor] | None = None
) -> Tensor:
    """The mean over groups; ``nan`` with a warning for an entry where no group counts.

    ``unseen`` (as :func:`~torchmetrics_ext.utilities.warnings.safe_divide` takes it) tells the
    entries that saw no weight at all, warned for with ``NO_SAMPLES``. Without it (the sums of
    ``groups_complete_per_batch``, which cannot tell such a task from one whose groups each hold one
    class) the one reason says both.
    """
    if unseen is None:
        return safe_divide(value_sum, weight_sum, name, or_no_samples(_NO_GROUP))
    return safe_divide(value_sum, weight_sum, name, _NO_GROUP, unseen=unseen)


def _no_weight(signed: Tensor) -> Callable[[], Tensor]:
    """The tasks of ``(T, N)`` signed weights that hold no weight at all (made only where a value is undefined)."""
    return lambda: (signed == 0).all(-1)


def _grouped(
    kind: str,
    name: str,
    preds: Tensor,
    target: Tensor,
    groups: Tensor,
    weights: Tensor | None,
    weight_groups: bool,
    average_groups: str,
    from_logits: bool,
    validate_args: bool,
) -> Tensor:
    check_flag("weight_groups", weight_groups)
    check_flag("from_logits", from_logits)
    average_groups = _check_average_groups(average_groups)
    single = single_task(preds)
    p, t, g, w = _format_grouped(preds, target, groups, weights, None, from_logits, validate_args)
    signed = _signed_weights(t, w)
    sums = _grouped_update(p, signed, g, kind, weight_groups, average_groups)
    value = _grouped_compute(*sums, name, _no_weight(signed))
    return value.squeeze(0) if single else value


@checks_validate_args
def grouped_auc(
    preds: Tensor,
    target: Tensor,
    groups: Tensor,
    weights: Tensor | None = None,
    *,
    weight_groups: bool = False,
    average_groups: str = "defined",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Grouped AUC (GAUC): the mean of the per-group ROC AUCs over groups holding both classes.

    .. math::
        \mathrm{GAUC} = \frac{\sum_{g \in \mathcal{G}} v_g\, \mathrm{AUC}_g}{\sum_{g \in \mathcal{G}} v_g},
        \qquad v_g = 1 \text{ or } v_g = \sum_{i \in g} w_i \ (\texttt{weight\_groups})

    where :math:`\mathcal{G}` holds the groups with positive and negative label weight and
    :math:`\mathrm{AUC}_g` is :func:`~torchmetrics_ext.functional.auc` of group ``g``.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        groups: ``(N,)`` integer group ids (user, query, session...), shared by every task.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``.
        weight_groups: weight each group by its total sample weight instead of 1.
        average_groups: ``"defined"`` (default): average the groups holding both classes;
            ``"all"``: every group, one without both classes counting 0.5 (TorchRec's grouped AUC;
            a group of zero-weight rows counts too, so zero weights are not removed rows here).
        from_logits: ``preds`` are logits (the value does not depend on it).
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar for 1-D input, ``(T,)`` otherwise; ``nan`` (with an
        ``UndefinedMetricWarning``) when no group holds both classes.

    Raises:
        ValueError: as for :func:`~torchmetrics_ext.functional.auc`, ``groups`` of the wrong
            shape/device, or an unknown ``average_groups``.
        TypeError: non-tensor inputs, non-floating ``preds`` or non-integer ``groups``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import grouped_auc
        >>> preds = torch.tensor([0.9, 0.2, 0.3, 0.6, 0.5])
        >>> target = torch.tensor([1, 0, 1, 0, 1])
        >>> grouped_auc(preds, target, groups=torch.tensor([0, 0, 1, 1, 2]))  # groups 0, 1; 2 has one class
        tensor(0.5000, dtype=torch.float64)
    """
    return _grouped(
        "auc", "GroupedAUC", preds, target, groups, weights, weight_groups, average_groups, from_logits, validate_args
    )


@checks_validate_args
def grouped_auprc(
    preds: Tensor,
    target: Tensor,
    groups: Tensor,
    weights: Tensor | None = None,
    *,
    weight_groups: bool = False,
    average_groups: str = "defined",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Grouped average precision: the mean of per-group AUPRC over groups holding both classes.

    Same definition as :func:`grouped_auc` with :math:`\mathrm{AP}_g` (scikit-learn's
    ``average_precision_score`` of group ``g``) in place of :math:`\mathrm{AUC}_g`. Groups with
    positives only (where AP is trivially 1) are left out like groups with negatives only.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        groups: ``(N,)`` integer group ids shared by every task.
        weights: optional non-negative sample weights.
        weight_groups: weight each group by its total sample weight instead of 1.
        average_groups: ``"defined"`` (default) or ``"all"``: every group, one with positive
            weight only counting 1 and one without positive weight 0 (TorchRec's grouped AUPRC;
            a group of zero-weight rows counts too: 0, so zero weights are not removed rows here).
        from_logits: ``preds`` are logits.
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)``; ``nan`` when no group holds both classes.

    Raises:
        ValueError: as for :func:`grouped_auc`.
        TypeError: as for :func:`grouped_auc`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import grouped_auprc
        >>> preds = torch.tensor([0.9, 0.2, 0.3, 0.6])
        >>> target = torch.tensor([1, 0, 1, 0])
        >>> grouped_auprc(preds, target, groups=torch.tensor([0, 0, 1, 1]))  # (1 + 0.5) / 2
        tensor(0.7500, dtype=torch.float64)
    """
    return _grouped(
        "auprc",
        "GroupedAUPRC",
        preds,
        target,
        groups,
        weights,
        weight_groups,
        average_groups,
        from_logits,
        validate_args,
    )
