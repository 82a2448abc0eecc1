r"""Device-path kernels of the exact AUC family: whole-array sorts and float64 scans, no host sync.

The CPU path (:mod:`torchmetrics_ext.functional.auc._kernels`) walks cache-sized blocks and asks
the host where tie runs end; on a GPU each such question waits for the device. Here every step is
one whole-array operation whose sizes are known on the host, so nothing waits for the device:

* :func:`_exact_curve_sums` (binary): the same packed ``int64`` keys as the CPU path
  (``descending score key << 32 | weight bits``), one ``torch.sort`` of the ``(T, N)`` keys, then
  :func:`_run_contributions` over the flat array with one segment per task.
* :func:`_grouped_curve_sums`: dense group ids from one sort of the ids, one sort of
  ``(task, group) << 32 | score key``, then :func:`_run_contributions` with one segment per
  ``(task, group)``.

:func:`_run_contributions` finds the curve points (runs of equal keys) of every segment from
global float64 cumulative sums of the positive and negative weight: a run's end holds ``TP`` and
``FP`` (minus its segment's offset); the cumulative sums at the end of the previous run (and of
the previous segment) are fetched without compaction, by scattering the value at each run's end
into a slot numbered by the run and gathering slot ``run - 1``. Per-run sums are differences of
the global cumulative sums (scikit-learn's rule); ties and float64 accumulation as on the CPU path.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc._kernels import _LOW, _descending_keys

_LOW_WORD = 0 if sys.byteorder == "little" else 1


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
        out.append(ends[run])
    return out


def _run_contributions(start: Tensor, segment_start: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per position, its curve point's share of the AUC and AP numerators (non-zero at run ends only).

    Args:
        start: ``(M,)`` flags opening each run of equal scores (every segment start opens a run).
        segment_start: ``(M,)`` flags opening each segment (task or ``(task, group)``).
        pos: ``(M,)`` float64 positive label weight in curve order (decreasing score per segment).
        neg: ``(M,)`` float64 negative label weight.

    Returns:
        ``(auc, ap)``, each ``(M,)`` float64: at the end of run ``r`` of a segment,
        :math:`N_r (TP_r - P_r / 2)` and :math:`P_r \, TP_r / (TP_r + FP_r)`; elsewhere 0. Summed
        per segment they are the numerators of :func:`~torchmetrics_ext.functional.auc`.
    """
    cp, cn = torch.cumsum(pos, 0), torch.cumsum(neg, 0)
    prev_p, prev_n = _previous_end(start, [cp, cn])
    off_p, off_n = _previous_end(segment_start, [cp, cn])
    end = torch.empty_like(start)
    end[-1:] = True
    end[:-1] = start[1:]
    run_p, run_n = cp - prev_p, cn - prev_n
    tp, fp = cp.sub_(off_p), cn.sub_(off_n)
    auc = torch.where(end, run_n * (tp - 0.5 * run_p), 0.0)
    denom = tp + fp
    ap = torch.where(end & (denom > 0), run_p * tp / torch.where(denom > 0, denom, 1.0), 0.0)
    return auc, ap


def _exact_curve_sums(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(P, N, auc_num, ap_num)`` per task, each ``(T,)`` float64, from chunks viewable as ``(n_k, T)``.

    Each task's weights are scaled by a power of two that brings its total into [0.5, 1) before
    the global cumulative sums (exact: only the exponent changes), so that one task's scale never
    swamps another's rounding; the numerators are scaled back exactly.
    """
    s = torch.cat([chunk.reshape(-1, num_tasks) for chunk in scores])
    w = torch.cat([chunk.reshape(-1, num_tasks) for chunk in signed]).to(torch.float32)
    pos_total = w.clamp(min=0).sum(0, dtype=torch.float64)
    neg_total = w.neg().clamp_(min=0).sum(0, dtype=torch.float64)
    n = s.shape[0]
    if n == 0:
        return pos_total, neg_total, torch.zeros_like(pos_total), torch.zeros_like(pos_total)
    key = _descending_keys(s).to(torch.int64) << 32
    key |= w.view(torch.int32).to(torch.int64) & _LOW
    del s, w
    keys = torch.sort(key.T, dim=-1).values.reshape(-1)  # (T * N,), each task's N keys ascending
    del key
    _, exponent = torch.frexp(pos_total + neg_total)
    scale = torch.ldexp(torch.ones_like(pos_total), -exponent)
    weight = keys.view(torch.int32)[_LOW_WORD::2].view(torch.float32).view(num_tasks, n).to(torch.float64)
    weight *= scale.unsqueeze(1)
    weight = weight.reshape(-1)
    task_start = torch.zeros(num_tasks, n, dtype=torch.bool, device=keys.device)
    task_start[:, 0] = True
    task_start = task_start.reshape(-1)
    start = _starts(keys >> 32, task_start)
    del keys
    auc, ap = _run_contributions(start, task_start, weight.clamp(min=0), weight.neg().clamp_(min=0))
    auc_num = auc.view(num_tasks, n).sum(-1) / (scale * scale)
    ap_num = ap.view(num_tasks, n).sum(-1) / scale
    return pos_total, neg_total, auc_num, ap_num


def _grouped_curve_sums(scores: Tensor, signed: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(P, N, auc_num, ap_num)``, each ``(T, N)`` float64: one slot per possible dense group id.

    Args:
        scores: ``(T, N)`` scores.
        signed: ``(T, N)`` signed weights.
        groups: ``(N,)`` int64 group ids shared by every task.

    Slot ``g`` of a task belongs to the ``g``-th smallest distinct id; slots past the number of
    distinct ids hold zeros (no weight, so never a group with both classes). The number of
    groups is never read on the host.
    """
    num_tasks, n = scores.shape
    device = scores.device
    size = num_tasks * n
    sorted_ids, perm = torch.sort(groups)
    dense = torch.empty_like(perm).scatter_(0, perm, torch.cumsum(_starts(sorted_ids), 0).sub_(1))
    del sorted_ids, perm
    seg = (torch.arange(num_tasks, device=device).unsqueeze(1) * n + dense.unsqueeze(0)).reshape(-1)
    key = (seg << 32) | (_descending_keys(scores).reshape(-1).to(torch.int64) + 2**31)
    key, order = torch.sort(key)
    w = signed.reshape(-1)[order].to(torch.float64)
    del order
    seg = key >> 32
    pos, neg = w.clamp(min=0), w.neg().clamp_(min=0)
    pos_total = torch.zeros(size, dtype=torch.float64, device=device).index_add_(0, seg, pos)
    neg_total = torch.zeros_like(pos_total).index_add_(0, seg, neg)
    auc, ap = _run_contributions(_starts(key), _starts(seg), pos, neg)
    auc_num = torch.zeros_like(pos_total).index_add_(0, seg, auc)
    ap_num = torch.zeros_like(pos_total).index_add_(0, seg, ap)
    shape = (num_tasks, n)
    return pos_total.view(shape), neg_total.view(shape), auc_num.view(shape), ap_num.view(shape)
