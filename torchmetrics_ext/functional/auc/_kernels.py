"""Sort-based kernels shared by the exact AUC family (binary and grouped).

* :func:`_descending_keys`: an order-preserving ``int32`` key of float32 scores.
* :func:`_pack` + :func:`_sort_rows` + :func:`_row_curve_sums`: the binary path. Each sample's
  score key and float32 signed weight are packed into one ``int64`` and sorted in place (sorted
  runs merged by NumPy's timsort on CPU: no index tensor, no gather afterwards), then one
  block-wise pass sums runs of tied scores with ``bincount`` and takes float64 cumulative sums.
* :func:`_curve_sums`: the segmented path used by the grouped metrics (many small segments).

Blocks of ``_BLOCK`` elements bound every temporary to a few MB whatever the number of samples.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

_BLOCK = 1 << 16  # samples per block of every block-wise pass: temporaries of a few MB
_SCALE_SPREAD = 2.0**20  # segment totals further apart than this are scaled to [0.5, 1) first
_SORT_RUN = 1 << 19  # keys per torch.sort run before the merge
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


def _row_blocks(scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(scores, signed)`` blocks of about ``_BLOCK`` rows: small chunks are joined, large ones cut."""
    pending: list[tuple[Tensor, Tensor]] = []
    size = 0
    for score_chunk, signed_chunk in zip(scores, signed, strict=True):
        score_rows, signed_rows = score_chunk.reshape(-1, num_tasks), signed_chunk.reshape(-1, num_tasks)
        for lo in range(0, score_rows.shape[0], _BLOCK):
            pending.append((score_rows[lo : lo + _BLOCK], signed_rows[lo : lo + _BLOCK]))
            size += pending[-1][0].shape[0]
            if size >= _BLOCK:
                yield torch.cat([p for p, _ in pending]), torch.cat([w for _, w in pending])
                pending, size = [], 0
    if pending:
        yield torch.cat([p for p, _ in pending]), torch.cat([w for _, w in pending])


def _pack(scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pack every ``(score, signed weight)`` into one int64 per task, block by block.

    Args:
        scores: chunks of float scores, each viewable as ``(n_k, T)`` (sample-major).
        signed: the matching chunks of float32 signed weights (``+w`` positive, ``-w`` negative).
        num_tasks: ``T``.

    Returns:
        ``(packed, pos_total, neg_total)``: ``(T, N)`` int64 ``descending_key << 32 | weight bits``
        (so sorting orders by decreasing score), and the ``(T,)`` float64 positive / negative
        weight per task.
    """
    n = sum(chunk.numel() for chunk in scores) // num_tasks
    device = scores[0].device if scores else torch.device("cpu")
    packed = torch.empty((num_tasks, n), dtype=torch.int64, device=device)
    pos_total = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    neg_total = torch.zeros_like(pos_total)
    offset = 0
    for score_rows, signed_rows in _row_blocks(scores, signed, num_tasks):
        weights = signed_rows.to(torch.float32)
        pos_total += weights.clamp(min=0).sum(0, dtype=torch.float64)
        neg_total += weights.neg().clamp_(min=0).sum(0, dtype=torch.float64)
        key = _descending_keys(score_rows).to(torch.int64) << 32
        key |= weights.view(torch.int32).to(torch.int64) & _LOW
        packed[:, offset : offset + key.shape[0]] = key.T
        offset += key.shape[0]
    return packed, pos_total, neg_total


def _sort_rows(packed: Tensor) -> Tensor:
    """Sort each row of a contiguous int64 tensor, in place on CPU with little extra memory.

    On CPU, runs of ``_SORT_RUN`` keys are sorted with ``torch.sort`` (a radix sort; small runs
    keep its buffers small and cache-resident) and NumPy's stable sort (timsort) merges the sorted
    runs in place with an ``N / 2`` buffer. Elsewhere one ``torch.sort``.
    """
    if packed.device.type != "cpu":
        return torch.sort(packed, dim=-1).values
    num_tasks, n = packed.shape
    for row in range(num_tasks):
        for lo in range(0, n, _SORT_RUN):
            run = packed[row, lo : lo + _SORT_RUN]  # 1-D: torch.sort takes its radix path only then
            run.copy_(torch.sort(run).values)
    if n > _SORT_RUN:
        packed.numpy().sort(axis=-1, kind="stable")
    return packed


def _row_curve_sums(packed: Tensor) -> tuple[Tensor, Tensor]:
    r"""AUC and AP numerators per row of packed keys sorted by :func:`_sort_rows`.

    Block by block, consecutive equal scores form runs (one curve point each); per run the
    positive and negative weight come from one ``bincount`` each, the curve coordinates
    ``TP``/``FP`` at the run's end from their cumulative sums (carried across blocks), and

    .. math::
        \text{auc\_num} = \sum_r N_r \left(TP_r - \tfrac12 P_r\right), \qquad
        \text{ap\_num} = \sum_r P_r \frac{TP_r}{TP_r + FP_r}.

    A block is extended to the end of the run it cuts, so runs never straddle blocks.

    Args:
        packed: ``(T, N)`` int64 keys from :func:`_pack`, each row sorted ascending.

    Returns:
        ``(auc_num, ap_num)``, each ``(T,)`` float64.
    """
    num_tasks, n = packed.shape
    low_word = 0 if sys.byteorder == "little" else 1
    auc_rows, ap_rows = [], []
    for row in range(num_tasks):  # each row is processed block by block; T is the number of tasks
        keys = packed[row]
        auc_num = torch.zeros((), dtype=torch.float64, device=packed.device)
        ap_num = torch.zeros_like(auc_num)
        carry_p, carry_n = auc_num.clone(), auc_num.clone()
        lo = 0
        while lo < n:
            hi = min(lo + _BLOCK, n)
            if hi < n and bool((keys[hi] >> 32) == (keys[hi - 1] >> 32)):
                hi = _run_end(keys, hi - 1)
            block = keys[lo:hi]
            w = block.view(torch.int32)[low_word::2].view(torch.float32).to(torch.float64)
            pos, neg = w.clamp(min=0), w.neg_().clamp_(min=0)
            high = block >> 32
            start = torch.ones(hi - lo, dtype=torch.bool, device=packed.device)
            torch.ne(high[1:], high[:-1], out=start[1:])
            if not bool(start.all()):  # tied scores: sum each run
                run = torch.cumsum(start, 0).sub_(1)
                pos, neg = torch.bincount(run, weights=pos), torch.bincount(run, weights=neg)
            tp = pos.cumsum(0).add_(carry_p)
            fp = neg.cumsum(0).add_(carry_n)
            auc_num += torch.dot(neg, tp - 0.5 * pos)
            ap_num += torch.dot(pos, (tp / (tp + fp)).nan_to_num_(0.0))
            carry_p, carry_n = tp[-1], fp[-1]
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


def _group_scales(totals: Tensor) -> tuple[Tensor, Tensor]:
    """Powers of two ``(2^-e, 2^e)`` per segment with ``totals * 2^-e`` in [0.5, 1) (1 for an empty one)."""
    _, exponent = torch.frexp(totals)
    one = torch.ones_like(totals)
    return torch.ldexp(one, -exponent), torch.ldexp(one, exponent)


def _curve_sums(
    key: Tensor, signed: Tensor, seg: Tensor | None, pos_total: Tensor, neg_total: Tensor
) -> tuple[Tensor, Tensor]:
    """Trapezoidal ROC area and average-precision numerators per segment of a sorted sequence.

    Args:
        key: ``(M,)`` integer keys sorted within each segment; equal neighbours are tied scores.
        signed: ``(M,)`` signed weights in the same order (``+w`` positive, ``-w`` negative).
        seg: ``(M,)`` non-decreasing segment ids, or ``None`` when they are the keys' high 32 bits
            (read block by block: no ``(M,)`` copy).
        pos_total: ``(S,)`` float64 positive label weight per segment.
        neg_total: ``(S,)`` float64 negative label weight per segment.

    Returns:
        ``(auc_num, ap_num)`` of shape ``(S,)``: ``sum_k (FP_k - FP_{k-1}) (TP_k + TP_{k-1}) / 2`` and
        ``sum_k (TP_k - TP_{k-1}) TP_k / (TP_k + FP_k)`` over the curve points ``k`` (one per distinct
        score) of each segment, from global float64 cumulative sums taken block by block.
    """
    num = key.numel()
    device = signed.device
    # Each segment's weights scaled by the power of two that brings its total into [0.5, 1)
    # (exact; undone on the numerators) when segment totals differ by more than 2^20: then no
    # segment's scale swamps the rounding of the others' in the global cumulative sums.
    totals = pos_total + neg_total
    scaled = False
    if totals.numel() > 1:
        low = torch.where(totals > 0, totals, math.inf).min()
        scaled = bool(totals.max() > _SCALE_SPREAD * low)
    if scaled:
        down, up = _group_scales(totals)
        pos_total, neg_total = pos_total * down, neg_total * down
    off_p = torch.cumsum(pos_total, 0) - pos_total
    off_n = torch.cumsum(neg_total, 0) - neg_total
    auc_num = torch.zeros_like(pos_total)
    ap_num = torch.zeros_like(pos_total)
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    carry_p, carry_n, last_p, last_n = zero, zero, zero, zero
    for lo in range(0, num, _BLOCK):
        hi = min(lo + _BLOCK, num)
        upto = min(hi, num - 1)  # the last element of everything always ends a point
        block_seg = key[lo : upto + 1] >> 32 if seg is None else seg[lo : upto + 1]
        w = signed[lo:hi].to(torch.float64, copy=True)  # scaled and negated in place below: never the caller's
        if scaled:
            w *= down[block_seg[: hi - lo]]
        cp = w.clamp(min=0).cumsum_(0).add_(carry_p)
        cn = w.neg_().clamp_(min=0).cumsum_(0).add_(carry_n)
        end = torch.ones(hi - lo, dtype=torch.bool, device=device)
        torch.ne(key[lo + 1 : upto + 1], key[lo:upto], out=end[: upto - lo])
        end[: upto - lo] |= block_seg[1:] != block_seg[:-1]
        idx = torch.nonzero(end).squeeze(1)
        s = block_seg[: hi - lo][idx]
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
    if scaled:
        return auc_num * (up * up), ap_num * up
    return auc_num, ap_num
