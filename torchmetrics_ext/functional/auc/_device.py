r"""Device-path kernels of the exact AUC family: whole-array sorts and float64 scans.

The CPU path (:mod:`torchmetrics_ext.functional.auc._kernels`) walks cache-sized blocks and asks
the host where tie runs end; on a GPU each such question waits for the device. Here every step is
one whole-array operation, and the host waits for the device at most once per ``compute`` and
never in ``update``:

* :func:`_exact_curve_sums` (binary, at ``compute``): one sort of the float32 scores with their
  order (a radix sort of 4-byte keys), float64 cumulative sums of the signed weights in that
  order along each task's row, and the curve points compacted with one ``nonzero`` (``compute``
  may wait once).
* :func:`_grouped_curve_sums` (also in ``update`` with ``groups_complete_per_batch=True``, so it
  never waits): dense group ids from one sort of the ids, one sort of
  ``(task, group) << 32 | score key``, then :func:`_run_contributions` with one segment per
  ``(task, group)``.

:func:`_run_contributions` finds the curve points (runs of equal keys) of every segment from
float64 cumulative sums of the positive and negative weight taken within each segment (a
parallel segmented scan of ``log2`` whole-array passes): a run's end holds its segment's ``TP``
and ``FP``; the sums at the end of the previous run of the segment are fetched without
compaction, by scattering the value at each run's end into a slot numbered by the run and
gathering slot ``run - 1``. Per-run sums are differences of the segment's cumulative sums
(scikit-learn's rule), never of sums over other segments or tasks, so a group's or task's value
does not depend on the others' weights; ties and float64 accumulation as on the CPU path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc._kernels import _descending_keys, _segmented_cumsum_


def _starts(key: Tensor, first: Tensor | None = None) -> Tensor:
    """``True`` where ``key`` differs from its left neighbour (and at 0, and wherever ``first`` is)."""
    start = torch.empty(key.shape, dtype=torch.bool, device=key.device)
    start[:1] = True
    torch.ne(key[1:], key[:-1], out=start[1:])
    if first is not None:
        start |= first
    return start


def _previous_end(start: Tensor, values: Sequence[Tensor]) -> list[Tensor]:
    """For every position, each of ``values`` at the end of the run before the position's run (0 for the first).

    Runs are the stretches that ``start`` opens. The value at each run's end is scattered into
    slot ``run + 1`` of a buffer whose slot 0 holds 0, then slot ``run`` is gathered back: no
    compaction, so no host sync. Positions that end no run write to a spare last slot.
    """
    m = start.numel()
    run = torch.cumsum(start, 0)  # run number + 1
    end = torch.empty_like(start)
    end[-1:] = True
    end[:-1] = start[1:]
    slot = torch.where(end, run, m + 1)
    run -= 1
    out = []
    for value in values:
        ends = value.new_empty(m + 2)
        ends[:1] = 0
        ends.scatter_(0, slot, value)
        out.append(torch.index_select(ends, 0, run))
    return out


def _ends(start: Tensor) -> Tensor:
    """``True`` at the last position of each run that ``start`` opens."""
    end = torch.empty_like(start)
    end[-1:] = True
    end[:-1] = start[1:]
    return end


def _run_contributions(start: Tensor, seg: Tensor, pos: Tensor, neg: Tensor, longest: int) -> tuple[Tensor, Tensor]:
    r"""Per position, its curve point's share of the AUC and AP numerators (non-zero at run ends only).

    Args:
        start: ``(M,)`` flags opening each run of equal scores (every segment start opens a run).
        seg: ``(M,)`` segment ids (task or ``(task, group)``), equal ids contiguous.
        pos: ``(M,)`` float64 positive label weight in curve order (decreasing score per segment).
        neg: ``(M,)`` float64 negative label weight.
        longest: an upper bound on the length of one segment (from shapes: no host sync).

    Returns:
        ``(auc, ap)``, each ``(M,)`` float64: at the end of run ``r`` of a segment,
        :math:`N_r (TP_r - P_r / 2)` and :math:`P_r \, TP_r / (TP_r + FP_r)`; elsewhere 0. Summed
        per segment they are the numerators of :func:`~torchmetrics_ext.functional.auc`.
        ``TP``/``FP`` are cumulative sums within the segment
        (:func:`~torchmetrics_ext.functional.auc._kernels._segmented_cumsum_`), a run's ``P_r``/``N_r``
        the difference of two of them (scikit-learn's rule): never a sum over other segments.
    """
    tp, fp = _segmented_cumsum_(torch.stack([pos, neg]), seg, longest)
    last_of_segment = _ends(_starts(seg))
    prev_p, prev_n = _previous_end(start, [tp.masked_fill(last_of_segment, 0.0), fp.masked_fill(last_of_segment, 0.0)])
    end = _ends(start)
    run_p, run_n = tp - prev_p, fp - prev_n
    auc = torch.where(end, run_n * (tp - 0.5 * run_p), 0.0)
    denom = tp + fp
    ap = torch.where(end & (denom > 0), run_p * tp / torch.where(denom > 0, denom, 1.0), 0.0)
    return auc, ap


def _exact_curve_sums(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(P, N, auc_num, ap_num)`` per task, each ``(T,)`` float64, from chunks viewable as ``(n_k, T)``.

    One sort of the float32 scores per task (descending, with the order), the signed weights
    gathered in that order, float64 cumulative sums along each task's row (never across tasks:
    a task's small weights are not lost next to the totals of the tasks before it), then the
    curve points (last element of each run of equal scores) compacted with one ``nonzero``:
    compute may wait for the device once (``update`` never calls this). A run's weight is the
    difference of the task's cumulative sums at its end and at the previous run's end
    (scikit-learn's rule; 0 before a task's first run).
    """
    s = torch.cat([chunk.reshape(-1, num_tasks) for chunk in scores]).to(torch.float32)
    w = torch.cat([chunk.reshape(-1, num_tasks) for chunk in signed]).to(torch.float32)
    n = s.shape[0]
    if n == 0:
        zeros = torch.zeros(num_tasks, dtype=torch.float64, device=s.device)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone()
    if num_tasks == 1:  # a 1-D sort (the radix path)
        s, order = torch.sort(s.view(-1), descending=True)
        s, w = s.view(1, n), w.view(-1)[order].view(1, n)
    else:
        s, order = torch.sort(s.T, dim=-1, descending=True)
        w = torch.gather(w.T, 1, order)
    del order
    last = torch.empty(s.shape, dtype=torch.bool, device=s.device)
    last[:, -1] = True
    torch.ne(s[:, 1:], s[:, :-1], out=last[:, :-1])  # -0.0 == 0.0: one curve point
    del s
    cp = torch.cumsum(w.clamp(min=0), -1, dtype=torch.float64)  # within each task's row
    cn = torch.cumsum(w.neg_().clamp_(min=0), -1, dtype=torch.float64)
    del w
    pos_total, neg_total = cp[:, -1].clone(), cn[:, -1].clone()
    ends = torch.nonzero(last.view(-1)).view(-1)
    tp, fp = cp.view(-1)[ends], cn.view(-1)[ends]  # the task's TP / FP at each curve point
    del cp, cn
    row = ends // n
    first = _starts(row)  # the first curve point of each task: nothing before it
    prev_p = torch.where(first[1:], 0.0, tp[:-1])
    prev_n = torch.where(first[1:], 0.0, fp[:-1])
    run_p = torch.cat([tp[:1], tp[1:] - prev_p])
    run_n = torch.cat([fp[:1], fp[1:] - prev_n])
    auc = run_n * (tp - 0.5 * run_p)
    denom = tp + fp
    ap = torch.where(denom > 0, run_p * tp / torch.where(denom > 0, denom, 1.0), 0.0)
    if num_tasks == 1:
        return pos_total, neg_total, auc.sum().view(1), ap.sum().view(1)
    per_task = torch.zeros(2, num_tasks * n, dtype=torch.float64, device=auc.device)
    per_task[0].index_copy_(0, ends, auc)
    per_task[1].index_copy_(0, ends, ap)
    sums = per_task.view(2, num_tasks, n).sum(-1)
    return pos_total, neg_total, sums[0], sums[1]


_PACKED_SEGMENTS = 2**31
"""The most ``(task, group)`` segments whose id still fits the high half of an int64 sort key."""


_SORTED_ID_TYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _sortable_ids(groups: Tensor) -> Tensor:
    """``groups``, or their int64 conversion for unsigned ids wider than 8 bits (the CPU cannot sort those)."""
    return groups if groups.dtype in _SORTED_ID_TYPES else groups.to(torch.int64)


def _grouped_curve_sums(
    scores: Tensor, signed: Tensor, groups: Tensor, id_order: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(P, N, auc_num, ap_num, K)``: ``(T, N)`` float64 sums, one slot per possible dense group id.

    ``K`` is the number of distinct ids, a 0-d int64 tensor (not read on the host).

    Args:
        scores: ``(T, N)`` scores.
        signed: ``(T, N)`` signed weights.
        groups: ``(N,)`` int64 group ids shared by every task (not read when ``id_order`` is given).
        id_order: ``(perm, opens)``, the samples in order of id and ``True`` at each group's first
            (:func:`~torchmetrics_ext.functional.auc.grouped._id_order`'s), from a caller that sorted
            the ids already: the ids are then not sorted again. Any order of a group's samples gives
            the same dense ids, so the same sums as without it.

    Slot ``g`` of a task belongs to the ``g``-th smallest distinct id; slots past the number of
    distinct ids hold zeros (no weight, so never a group with both classes). The number of
    groups is never read on the host.
    """
    num_tasks, n = scores.shape
    device = scores.device
    size = num_tasks * n
    if id_order is None:
        sorted_ids, perm = torch.sort(_sortable_ids(groups))
        opens = _starts(sorted_ids)
        del sorted_ids
    else:
        perm, opens = id_order
    dense_sorted = torch.cumsum(opens, 0).sub_(1)
    distinct = dense_sorted[-1] + 1  # the samples hold groups 0 .. distinct - 1 (n > 0 here)
    dense = torch.empty_like(perm).scatter_(0, perm, dense_sorted)
    del opens, perm, dense_sorted
    seg = (torch.arange(num_tasks, device=device).unsqueeze(1) * n + dense.unsqueeze(0)).reshape(-1)
    score_key = _descending_keys(scores).reshape(-1)
    if size <= _PACKED_SEGMENTS:  # one sort of (segment << 32 | score key)
        key, order = torch.sort((seg << 32) | (score_key.to(torch.int64) + 2**31))
        seg = key >> 32
        start = _starts(key)
    else:  # segment ids past 2**31 would overflow the packed key: by score, then stably by segment
        order = torch.sort(score_key).indices
        order = order[torch.sort(seg[order], stable=True).indices]
        seg = seg[order]
        start = _starts(score_key[order], _starts(seg))
    del score_key
    w = signed.reshape(-1)[order].to(torch.float64)
    del order
    pos, neg = w.clamp(min=0), w.neg().clamp_(min=0)
    pos_total = torch.zeros(size, dtype=torch.float64, device=device).index_add_(0, seg, pos)
    neg_total = torch.zeros_like(pos_total).index_add_(0, seg, neg)
    # TP / FP are cumulative sums within each (task, group) (no group is ever more than n long), so
    # that no group's value depends on the weights of the groups sorted before it
    auc, ap = _run_contributions(start, seg, pos, neg, n)
    auc_num = torch.zeros_like(pos_total).index_add_(0, seg, auc)
    ap_num = torch.zeros_like(pos_total).index_add_(0, seg, ap)
    shape = (num_tasks, n)
    return pos_total.view(shape), neg_total.view(shape), auc_num.view(shape), ap_num.view(shape), distinct
