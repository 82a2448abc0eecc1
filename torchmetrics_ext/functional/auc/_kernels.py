"""Sort-based kernels shared by the exact AUC family (binary and grouped).

* :func:`_descending_keys`: an order-preserving ``int32`` key of float32 scores.
* :func:`_packed_keys` + :func:`_sort_rows` + :func:`_row_curve_sums`: the binary path. Each
  task's keys are packed with the sample's column into one ``int64`` and sorted in place (NumPy's
  in-place sort on CPU: no index tensor and no sort buffers), then one block-wise pass gathers the
  weights, takes float64 cumulative sums and corrects the (rare) runs of tied scores.
* :func:`_curve_sums`: the segmented path used by the grouped metrics (many small segments).

Blocks of ``_BLOCK`` elements bound every temporary to a few MB whatever the number of samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BLOCK = 1 << 18
_LOW = 0xFFFFFFFF


def _descending_keys(scores: Tensor) -> Tensor:
    """``int32`` keys whose ascending order is the descending order of ``scores`` as float32.

    Two keys are equal exactly when the float32 scores are equal (``-0.0`` equals ``0.0``).
    """
    x = scores.to(torch.float32) + 0.0  # also turns -0.0 into +0.0
    bits = x.view(torch.int32)
    key = bits >> 31  # -1 for negative floats, 0 otherwise
    key &= 0x7FFFFFFF
    key ^= bits  # monotone increasing in the float value
    return key.bitwise_not_()  # reversed: ascending key == descending score


def _curve_sums(
    key: Tensor, signed: Tensor, seg: Tensor | int, pos_total: Tensor, neg_total: Tensor
) -> tuple[Tensor, Tensor]:
    """Trapezoidal ROC area and average-precision numerators per segment of a sorted sequence.

    Args:
        key: ``(M,)`` integer keys sorted within each segment; equal neighbours are tied scores.
        signed: ``(M,)`` signed weights in the same order (``+w`` positive, ``-w`` negative).
        seg: ``(M,)`` non-decreasing segment ids, or an int ``n`` meaning ``seg = i // n``.
        pos_total: ``(S,)`` float64 positive label weight per segment.
        neg_total: ``(S,)`` float64 negative label weight per segment.

    Returns:
        ``(auc_num, ap_num)`` of shape ``(S,)``: ``sum_k (FP_k - FP_{k-1}) (TP_k + TP_{k-1}) / 2`` and
        ``sum_k (TP_k - TP_{k-1}) TP_k / (TP_k + FP_k)`` over the curve points ``k`` (one per distinct
        score) of each segment, from global float64 cumulative sums taken block by block.
    """
    num = key.numel()
    device = signed.device
    off_p = torch.cumsum(pos_total, 0) - pos_total
    off_n = torch.cumsum(neg_total, 0) - neg_total
    auc_num = torch.zeros_like(pos_total)
    ap_num = torch.zeros_like(pos_total)
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    carry_p, carry_n, last_p, last_n = zero, zero, zero, zero
    for lo in range(0, num, _BLOCK):
        hi = min(lo + _BLOCK, num)
        w = signed[lo:hi].to(torch.float64)
        cp = w.clamp(min=0).cumsum_(0).add_(carry_p)
        cn = w.neg_().clamp_(min=0).cumsum_(0).add_(carry_n)
        end = torch.ones(hi - lo, dtype=torch.bool, device=device)
        upto = min(hi, num - 1)  # the last element of everything always ends a point
        torch.ne(key[lo + 1 : upto + 1], key[lo:upto], out=end[: upto - lo])
        if isinstance(seg, int):
            end[(seg - 1 - lo) % seg :: seg] = True
            idx = torch.nonzero(end).squeeze(1)
            s = torch.div(idx + lo, seg, rounding_mode="floor")
        else:
            end[: upto - lo] |= seg[lo + 1 : upto + 1] != seg[lo:upto]
            idx = torch.nonzero(end).squeeze(1)
            s = seg[lo:hi][idx]
        carry_p, carry_n = cp[-1:], cn[-1:]
        if idx.numel() == 0:  # one tie run spans the whole block
            continue
        big_p, big_n = cp[idx], cn[idx]
        prev_p = torch.cat([last_p, big_p[:-1]])
        prev_n = torch.cat([last_n, big_n[:-1]])
        last_p, last_n = big_p[-1:], big_n[-1:]
        op, on = off_p[s], off_n[s]
        tp, tp_prev, fp = big_p - op, prev_p - op, big_n - on
        auc_num.index_add_(0, s, (big_n - prev_n) * (tp + tp_prev) * 0.5)
        denom = tp + fp
        ap = torch.where(denom > 0, (big_p - prev_p) * tp / torch.where(denom > 0, denom, 1.0), 0.0)
        ap_num.index_add_(0, s, ap)
    return auc_num, ap_num


def _packed_keys(scores: Tensor) -> Tensor:
    """``(T, N)`` int64 ``descending_key << 32 | column``, built block by block (small temporaries)."""
    num_tasks, n = scores.shape
    if n >= 2**32:
        raise ValueError(f"Exact AUC supports fewer than 2**32 samples per task and rank, got {n}.")
    packed = torch.empty((num_tasks, n), dtype=torch.int64, device=scores.device)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        key = _descending_keys(scores[:, lo:hi]).to(torch.int64) << 32
        key |= torch.arange(lo, hi, device=scores.device)
        packed[:, lo:hi] = key
    return packed


def _sort_rows(packed: Tensor) -> Tensor:
    """Sort each row of a contiguous int64 tensor: in place through NumPy on CPU, ``torch.sort`` elsewhere."""
    if packed.device.type == "cpu":
        packed.numpy().sort(axis=-1)
        return packed
    return torch.sort(packed, dim=-1).values


def _row_curve_sums(packed: Tensor, signed: Tensor) -> tuple[Tensor, Tensor]:
    """AUC and AP numerators per row of packed keys sorted by :func:`_sort_rows`.

    Per element (in descending score order) with inclusive cumulative sums ``cp``, ``cn`` of the
    positive and negative weight, ``sum(neg * cp)`` is the AUC numerator and
    ``sum(pos * cp / (cp + cn))`` the AP numerator when no scores tie. For each run of tied scores
    the per-element terms are replaced by the run's tie-aware terms:
    ``neg_run * (cp_end - pos_run / 2)`` and ``pos_run * cp_end / (cp_end + cn_end)``. Blocks end
    at the end of a tie run, so runs never straddle blocks.

    Args:
        packed: ``(T, N)`` int64 keys, each row sorted ascending (descending scores).
        signed: ``(T, N)`` signed weights in the original column order.

    Returns:
        ``(auc_num, ap_num)``, each ``(T,)`` float64.
    """
    num_tasks, n = packed.shape
    auc_rows, ap_rows = [], []
    for row in range(num_tasks):  # each row is processed block by block; T is the number of tasks
        keys, weights = packed[row], signed[row]
        auc_num = torch.zeros((), dtype=torch.float64, device=packed.device)
        ap_num = torch.zeros_like(auc_num)
        carry_p, carry_n = auc_num.clone(), auc_num.clone()
        lo = 0
        while lo < n:
            hi = min(lo + _BLOCK, n)
            if hi < n and bool((keys[hi] >> 32) == (keys[hi - 1] >> 32)):
                hi = _run_end(keys, hi - 1)
            block = keys[lo:hi]
            w = weights[block & _LOW].to(torch.float64)
            pos, neg = w.clamp(min=0), w.neg_().clamp_(min=0)
            cp = pos.cumsum(0).add_(carry_p)
            cn = neg.cumsum(0).add_(carry_n)
            auc_num += torch.dot(neg, cp)
            ratio = (cp / (cp + cn)).nan_to_num_(0.0)
            ap_num += torch.dot(pos, ratio)
            high = block >> 32
            eq = high[1:] == high[:-1]
            if bool(eq.any()):
                auc_fix, ap_fix = _tie_correction(eq, pos, neg, cp, cn, ratio)
                auc_num += auc_fix
                ap_num += ap_fix
            carry_p, carry_n = cp[-1], cn[-1]
            lo = hi
        auc_rows.append(auc_num)
        ap_rows.append(ap_num)
    return torch.stack(auc_rows), torch.stack(ap_rows)


def _run_end(keys: Tensor, index: int) -> int:
    """One past the last position of the run of equal scores that contains ``keys[index]``."""
    high = int(keys[index] >> 32)
    if high == 2**31 - 1:
        return keys.numel()
    return int(torch.searchsorted(keys, torch.tensor([(high + 1) << 32], device=keys.device)))


def _tie_correction(
    eq: Tensor, pos: Tensor, neg: Tensor, cp: Tensor, cn: Tensor, ratio: Tensor
) -> tuple[Tensor, Tensor]:
    """Tie-aware minus per-element AUC / AP terms over the runs of tied scores of one block."""
    tied = torch.zeros(eq.numel() + 1, dtype=torch.bool, device=eq.device)
    tied[1:] |= eq
    tied[:-1] |= eq
    idx = torch.nonzero(tied).squeeze(1)
    eq_prev = torch.cat([torch.zeros(1, dtype=torch.bool, device=eq.device), eq])
    start = ~eq_prev[idx]
    run = torch.cumsum(start, 0) - 1
    num_runs = int(run[-1]) + 1
    last = torch.cat([start[1:], torch.ones(1, dtype=torch.bool, device=eq.device)])
    pos_t, neg_t = pos[idx], neg[idx]
    run_pos = torch.zeros(num_runs, dtype=torch.float64, device=eq.device).index_add_(0, run, pos_t)
    run_neg = torch.zeros_like(run_pos).index_add_(0, run, neg_t)
    end_p, end_n = cp[idx][last], cn[idx][last]
    auc_fix = (run_neg * (end_p - 0.5 * run_pos)).sum() - torch.dot(neg_t, cp[idx])
    ap_fix = (run_pos * (end_p / (end_p + end_n)).nan_to_num_(0.0)).sum() - torch.dot(pos_t, ratio[idx])
    return auc_fix, ap_fix


def _curve_sums(
    key: Tensor, signed: Tensor, seg: Tensor | int, pos_total: Tensor, neg_total: Tensor
) -> tuple[Tensor, Tensor]:
    """Trapezoidal ROC area and average-precision numerators per segment of a sorted sequence.

    Args:
        key: ``(M,)`` integer keys sorted within each segment; equal neighbours are tied scores.
        signed: ``(M,)`` signed weights in the same order (``+w`` positive, ``-w`` negative).
        seg: ``(M,)`` non-decreasing segment ids, or an int ``n`` meaning ``seg = i // n``.
        pos_total: ``(S,)`` float64 positive label weight per segment.
        neg_total: ``(S,)`` float64 negative label weight per segment.

    Returns:
        ``(auc_num, ap_num)`` of shape ``(S,)``: ``sum_k (FP_k - FP_{k-1}) (TP_k + TP_{k-1}) / 2`` and
        ``sum_k (TP_k - TP_{k-1}) TP_k / (TP_k + FP_k)`` over the curve points ``k`` (one per distinct
        score) of each segment, from global float64 cumulative sums taken block by block.
    """
    num = key.numel()
    device = signed.device
    off_p = torch.cumsum(pos_total, 0) - pos_total
    off_n = torch.cumsum(neg_total, 0) - neg_total
    auc_num = torch.zeros_like(pos_total)
    ap_num = torch.zeros_like(pos_total)
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    carry_p, carry_n, last_p, last_n = zero, zero, zero, zero
    for lo in range(0, num, _BLOCK):
        hi = min(lo + _BLOCK, num)
        w = signed[lo:hi].to(torch.float64)
        cp = w.clamp(min=0).cumsum_(0).add_(carry_p)
        cn = w.neg_().clamp_(min=0).cumsum_(0).add_(carry_n)
        end = torch.ones(hi - lo, dtype=torch.bool, device=device)
        upto = min(hi, num - 1)  # the last element of everything always ends a point
        torch.ne(key[lo + 1 : upto + 1], key[lo:upto], out=end[: upto - lo])
        if isinstance(seg, int):
            end[(seg - 1 - lo) % seg :: seg] = True
            idx = torch.nonzero(end).squeeze(1)
            s = torch.div(idx + lo, seg, rounding_mode="floor")
        else:
            end[: upto - lo] |= seg[lo + 1 : upto + 1] != seg[lo:upto]
            idx = torch.nonzero(end).squeeze(1)
            s = seg[lo:hi][idx]
        carry_p, carry_n = cp[-1:], cn[-1:]
        if idx.numel() == 0:  # one tie run spans the whole block
            continue
        big_p, big_n = cp[idx], cn[idx]
        prev_p = torch.cat([last_p, big_p[:-1]])
        prev_n = torch.cat([last_n, big_n[:-1]])
        last_p, last_n = big_p[-1:], big_n[-1:]
        op, on = off_p[s], off_n[s]
        tp, tp_prev, fp = big_p - op, prev_p - op, big_n - on
        auc_num.index_add_(0, s, (big_n - prev_n) * (tp + tp_prev) * 0.5)
        denom = tp + fp
        ap = torch.where(denom > 0, (big_p - prev_p) * tp / torch.where(denom > 0, denom, 1.0), 0.0)
        ap_num.index_add_(0, s, ap)
    return auc_num, ap_num
