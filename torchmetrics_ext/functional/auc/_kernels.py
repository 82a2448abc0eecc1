"""Sort-based kernels shared by the exact AUC family (binary and grouped).

* :func:`_descending_keys`: an order-preserving ``int32`` key of float32 scores.
* :func:`_pack` + :func:`_sort_rows` + :func:`_row_curve_sums`: the binary path. Each sample's
  score key and float32 signed weight are packed into one ``int64`` and every task's row is
  sorted in place by one NumPy call (its SIMD quicksort where the CPU has one; no index tensor,
  no gather afterwards, no merge buffer), then one block-wise pass over the sorted rows, taken
  as one flat sequence with the task as the segment, sums the curve.
* :func:`_curve_sums`: the segmented path used by the grouped metrics (many small segments):
  the same block-wise pass over keys sorted by ``(segment, score)``.

Both passes feed :class:`_CurveAccumulator`: per block, the positive and negative weight of each
run of tied scores from ``bincount``, then cumulative sums taken within each segment (one
``cumsum`` for a block inside one segment, :func:`_segmented_cumsum_` otherwise, also used by the
device path), so that no segment's value depends on the weights of the others and no Python loop
runs over tasks, groups or samples (only over blocks). A tie run cut by a block's end is carried
into the next block as two sums, so blocks of ``_BLOCK`` elements bound every temporary to a few
MB whatever the number of samples and however long the tie runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

_BLOCK = 1 << 16  # samples per block of every block-wise pass: temporaries of a few MB
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
    return _pack_blocks(_row_blocks(scores, signed, num_tasks), num_tasks, n, device)


def _pack_blocks(
    blocks: Iterable[tuple[Tensor, Tensor]], num_tasks: int, n: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_pack` of ``(scores, signed)`` blocks, each ``(b, T)`` sample-major, ``n`` rows in all."""
    packed = torch.empty((num_tasks, n), dtype=torch.int64, device=device)
    pos_total = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    neg_total = torch.zeros_like(pos_total)
    offset = 0
    for score_rows, signed_rows in blocks:
        weights = signed_rows.to(torch.float32)
        pos_total += weights.clamp(min=0).sum(0, dtype=torch.float64)
        neg_total += weights.neg().clamp_(min=0).sum(0, dtype=torch.float64)
        key = _descending_keys(score_rows).to(torch.int64) << 32
        key |= weights.view(torch.int32).to(torch.int64) & _LOW
        packed[:, offset : offset + key.shape[0]] = key.T
        offset += key.shape[0]
    return packed, pos_total, neg_total


def _sort_rows(packed: Tensor) -> Tensor:
    """Sort each row of a contiguous int64 ``(T, N)`` tensor, in place on CPU.

    On CPU one NumPy ``sort(axis=-1)`` sorts every row (a loop in C over the rows: no Python loop
    over tasks) in place: its quicksort is SIMD-vectorised on x86 CPUs with AVX2/AVX-512 (about
    8x faster than ``torch.sort``'s radix sort on 10M keys) and an introsort elsewhere, with no
    buffer the size of the data. Equal keys are equal values, so stability does not matter.
    Elsewhere one ``torch.sort``.
    """
    if packed.device.type != "cpu":
        return torch.sort(packed, dim=-1).values
    packed.numpy().sort(axis=-1)
    return packed


def _row_curve_sums(packed: Tensor, neg_total: Tensor) -> tuple[Tensor, Tensor]:
    r"""AUC and AP numerators per row of packed keys sorted by :func:`_sort_rows`.

    The ``(T, N)`` rows are walked as one flat sequence in blocks of ``_BLOCK`` keys whatever
    ``T`` and ``N`` (a block may hold many short rows or part of a long one), each task a segment
    of :class:`_CurveAccumulator`; consecutive equal scores of a task form runs (one curve point
    each), and

    .. math::
        \text{auc\_num} = \sum_r N_r \left(TP_r - \tfrac12 P_r\right), \qquad
        \text{ap\_num} = \sum_r P_r \frac{TP_r}{TP_r + FP_r}.

    Args:
        packed: ``(T, N)`` contiguous int64 keys from :func:`_pack`, each row sorted ascending.
        neg_total: ``(T,)`` float64 negative label weight per task.

    Returns:
        ``(auc_num, ap_num)``, each ``(T,)`` float64.
    """
    n = packed.shape[-1]
    flat = packed.view(-1)
    total = flat.numel()
    low_word = 0 if sys.byteorder == "little" else 1
    acc = _CurveAccumulator(neg_total)
    for lo in range(0, total, _BLOCK):
        hi = min(lo + _BLOCK, total)
        block = flat[lo:hi]
        high = block >> 32
        start = torch.empty(hi - lo, dtype=torch.bool, device=packed.device)
        start[:1] = True
        torch.ne(high[1:], high[:-1], out=start[1:])
        del high
        first, last = lo // n, (hi - 1) // n
        seg: Tensor | int = first
        if last > first:  # the block holds several tasks: each task's first key opens a run
            start[torch.arange(first + 1, last + 1, device=packed.device) * n - lo] = True
            seg = torch.arange(lo, hi, device=packed.device).div_(n, rounding_mode="floor")
        # the last run goes on in the next block (same task, same score): carried, not cut
        continues = hi < total and hi % n != 0 and (int(flat[hi]) >> 32) == (int(flat[hi - 1]) >> 32)
        weights = block.view(torch.int32)[low_word::2].view(torch.float32).to(torch.float64)
        acc.add(seg, start, weights, continues)
    return acc.auc_num, acc.ap_num


_SMALL = 1 << 14  # at most this many CPU samples times tasks: :func:`_small_curve_stats`
_LOW_WORD = 0 if sys.byteorder == "little" else 1  # the int32 word holding an int64's low bits


def _small_curve_stats(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(P, N, auc_num, ap_num)`` of at most ``_SMALL`` CPU samples times tasks, mostly in NumPy.

    The work of :func:`_pack` + :func:`_sort_rows` + :func:`_row_curve_sums` for small inputs (one
    block; at most ``_FEW_SEGMENTS`` tasks). At such sizes those take 100-300 µs of fixed cost (60
    to 100 PyTorch calls of 1-3 µs each); here the same arithmetic runs on NumPy arrays (calls of
    well under 1 µs), to the bit:

    * ``P`` and ``N`` are the very PyTorch reductions of :func:`_pack_blocks` (their summation order
      is PyTorch's);
    * the packed keys are the same integers, sorted by the same NumPy call;
    * each run's weight is summed by ``np.bincount`` (in order, from 0.0, as ``torch.bincount``),
      ``TP``/``FP`` by ``np.cumsum`` (in order, as ``torch.cumsum``; several tasks as the rows of a
      zero-padded grid, as :meth:`_CurveAccumulator._segments` takes one ``cumsum`` per task),
      ``a + 0.5 b`` rounds once whether fused or not (``0.5 b`` is exact), ``tp / (tp + fp)`` is 0
      where ``tp + fp`` is;
    * one task: the two dot products are ``torch.dot`` of PyTorch memory aligned as fresh tensors
      are, as :meth:`_CurveAccumulator._one_segment` takes them, each added to a ``+0.0``; several
      tasks: each task's terms summed in order from ``+0.0`` (the last sum of a ``cumsum`` along the
      grid's rows, then ``+ 0.0``), as ``index_add_`` adds them.

    Only the sign of a zero may differ from the PyTorch path (``np.maximum`` against ``clamp``,
    ``np.cumsum``'s first sum ``x`` against ``0.0 + x``), and no zero's sign can show in the results:
    ``N - fp`` and ``x / (tp + fp)`` read it only through a product or a sum with a non-zero, and
    a sum of zeros only is added to ``+0.0``.

    Args:
        scores: chunks of float scores, each viewable as ``(n_k, T)`` (sample-major).
        signed: the matching chunks of signed weights.
        num_tasks: ``T``.

    Returns:
        Four ``(T,)`` float64 tensors, as :func:`_pack` + :func:`_row_curve_sums`.
    """
    # detached: the functional API's inputs may require gradients, which `.numpy()` refuses (the value has none)
    score_rows, weights = (
        parts[0].detach().reshape(-1, num_tasks)
        if len(parts) == 1
        else torch.cat([part.detach().reshape(-1, num_tasks) for part in parts])
        for parts in (scores, signed)
    )
    weights = weights.to(torch.float32)
    n = score_rows.shape[0]
    wn = weights.numpy()
    # whole weights (unweighted: +-1) whose every partial sum is a whole number below 2**53 sum exactly
    # in any order: P and N are then read off the curve's last cumulative sums, PyTorch's sums otherwise
    whole = n > 0 and float(np.abs(wn).max()) * n < 2.0**53 and bool((np.trunc(wn) == wn).all())
    totals: tuple[Tensor, Tensor] | None = None
    if not whole:
        totals = (
            weights.clamp(min=0).sum(0, dtype=torch.float64),
            weights.neg().clamp_(min=0).sum(0, dtype=torch.float64),
        )
        if n == 0:
            return (*totals, torch.zeros_like(totals[0]), torch.zeros_like(totals[0]))
    # _descending_keys and the packing of _pack_blocks, on the same bits
    bits = (score_rows.to(torch.float32).numpy() + np.float32(0.0)).view(np.int32)
    key = ((bits >> 31) & 0x7FFFFFFF) ^ bits
    packed = np.invert(key).astype(np.int64) << 32
    packed |= np.ascontiguousarray(wn).view(np.int32).astype(np.int64) & _LOW
    if num_tasks > 1:
        packed = np.ascontiguousarray(packed.T)
    packed = packed.reshape(-1)
    if num_tasks == 1:
        packed.sort()
    else:
        packed.reshape(num_tasks, n).sort(axis=-1)
    # _row_curve_sums and _CurveAccumulator.add of the one block
    total = packed.shape[0]
    high = packed >> 32
    start = np.empty(total, dtype=bool)
    start[0] = True
    np.not_equal(high[1:], high[:-1], out=start[1:])
    start[::n] = True  # each task's first key opens a run
    w = packed.view(np.int32)[_LOW_WORD::2].view(np.float32).astype(np.float64)
    totals_np = None if totals is None else torch.stack(totals).numpy()
    if num_tasks > 1:
        sums = _small_segments(start, w, np.arange(total) // n, totals_np, num_tasks)
        assert sums is not None  # at most _FEW_SEGMENTS tasks: one cumsum each, never the long scan
    else:
        sums = _small_one_segment(start, w, None if totals_np is None else totals_np[:, 0])[:, None]
    pos_sum, neg_sum, auc_num, ap_num = torch.from_numpy(sums).unbind(0)
    return (pos_sum, neg_sum, auc_num, ap_num) if totals is None else (*totals, auc_num, ap_num)


def _small_one_segment(start: np.ndarray, w: np.ndarray, totals: np.ndarray | None) -> np.ndarray:
    """:meth:`_CurveAccumulator._one_segment` of one block of one segment, on NumPy arrays, to the bit.

    ``start``, ``w``: as for :func:`_small_segments`; ``totals``: the segment's ``(P, N)`` to use, or
    ``None`` for the sums along the curve (exact for whole weights only). Returns ``(P, N, auc_num,
    ap_num)`` as a ``(4,)`` float64 array.
    """
    total = start.shape[0]
    ties = not start.all()
    m = int(start.sum()) if ties else total
    # the three operands of the dot products, rows of one buffer aligned as fresh tensors are
    width = -(-m // 8) * 8
    rows = torch.zeros(3, width, dtype=torch.float64, device="cpu").numpy()  # whatever the default device
    pos, below, precision = rows[0, :m], rows[1, :m], rows[2, :m]
    neg = np.maximum(np.negative(w), 0.0)
    if ties:  # one entry per run
        run = start.cumsum() - 1
        pos[:] = np.bincount(run, weights=np.maximum(w, 0.0))
        neg = np.bincount(run, weights=neg)
    else:
        np.maximum(w, 0.0, out=pos)
    tp, fp = pos.cumsum(), neg.cumsum()
    out = np.array([tp[-1] + 0.0, fp[-1] + 0.0, 0.0, 0.0]) if totals is None else np.append(totals, [0.0, 0.0])
    np.subtract(out[1], fp, out=below)
    below += 0.5 * neg
    np.add(tp, fp, out=fp)
    np.divide(tp, fp, out=precision, where=fp != 0)  # 0/0 stays 0, as nan_to_num_(0.0) makes it
    pos_t = torch.from_numpy(pos)
    out[2] = torch.dot(pos_t, torch.from_numpy(below)).item() + 0.0
    out[3] = torch.dot(pos_t, torch.from_numpy(precision)).item() + 0.0
    return out


def _small_segments(
    start: np.ndarray, w: np.ndarray, seg: np.ndarray, totals: np.ndarray | None, num_segments: int
) -> np.ndarray | None:
    """:meth:`_CurveAccumulator._segments` of one block of several segments, on NumPy arrays, to the bit.

    Args:
        start: ``(M,)`` flags opening each run of equal scores (and each segment's first element).
        w: ``(M,)`` float64 signed weights in curve order.
        seg: ``(M,)`` segment id of every element, in ``[0, S)``, non-decreasing.
        totals: ``(2, S)`` the ``(P, N)`` of every segment to use, or ``None`` for the sums along
            the curve (exact for whole weights only).
        num_segments: ``S``.

    Returns:
        ``(4, S)`` float64 ``(P, N, auc_num, ap_num)`` (``P``, ``N`` the sums along the curve, or
        ``neg_total``), or ``None`` where the segments' cumulative sums would take the two-level
        scan of :func:`_segmented_cumsum_` (more than ``_FEW_SEGMENTS`` segments, one of them and
        the block longer than ``_FLAT_SCAN`` runs): the caller takes the PyTorch path.
    """
    pos, neg = np.maximum(w, 0.0), np.maximum(np.negative(w), 0.0)
    if not start.all():  # one entry per run
        run = start.cumsum() - 1
        pos, neg = np.bincount(run, weights=pos), np.bincount(run, weights=neg)
        seg = seg[start]
    kept = pos > 0
    kept[-1] = True
    kept[:-1] |= seg[1:] != seg[:-1]  # the last run of each segment
    at = np.flatnonzero(kept)
    slot = kept.cumsum() - kept  # every run's negative weight goes to the first kept run at or after it
    p_r = pos[at]
    at_seg = seg[at]
    sums = np.empty((2, at.shape[0]))  # -> TP, FP
    sums[0] = p_r
    sums[1] = np.bincount(slot, weights=neg, minlength=at.shape[0])
    opens = np.empty(at.shape[0], dtype=bool)
    opens[0] = True
    np.not_equal(at_seg[1:], at_seg[:-1], out=opens[1:])
    first = np.flatnonzero(opens)
    ends = np.empty_like(first)  # one past each segment's last kept run
    ends[:-1] = first[1:]
    ends[-1] = at.shape[0]
    longest = int((ends - first).max())
    if first.shape[0] <= _FEW_SEGMENTS:  # one cumsum per segment: the rows of a grid padded with zeros
        row = opens.cumsum() - 1
        col = np.arange(at.shape[0]) - first[row]
        grid = np.zeros((2, first.shape[0], longest))
        grid[:, row, col] = sums
        grid.cumsum(axis=2, out=grid)
        sums = grid[:, row, col]
    elif longest <= _FLAT_SCAN or at.shape[0] <= _FLAT_SCAN:  # _segmented_cumsum_'s flat scan, pass by pass
        step = 1
        while step < min(longest, at.shape[0]):
            sums[:, step:] += np.where(at_seg[step:] == at_seg[:-step], sums[:, :-step], 0.0)
            step *= 2
    else:
        return None
    tp, fp = sums
    out = np.empty((4, num_segments))
    if totals is None:  # every run's weight sums to the last TP, FP of its segment
        out[:2] = 0.0
        last = ends - 1
        out[:2, at_seg[last]] = sums[:, last] + 0.0
    else:
        out[:2] = totals
    below = (out[1][at_seg] - fp) + 0.5 * neg[at]
    precision = np.zeros_like(tp)
    np.divide(tp, tp + fp, out=precision, where=(tp + fp) != 0)  # 0/0 stays 0, as nan_to_num_(0.0) makes it
    # index_add_ of the terms: each segment's in order from +0.0, as bincount adds them
    out[2] = np.bincount(at_seg, weights=p_r * below, minlength=num_segments)
    out[3] = np.bincount(at_seg, weights=p_r * precision, minlength=num_segments)
    return out


_SCAN_WIDTH = 64  # row width of the two-level segmented scan
_FLAT_SCAN = 256  # segments at most this long: one flat scan (at most 8 passes)
_FEW_SEGMENTS = 16  # a CPU block with at most this many segments scans each with one cumsum


def _segmented_cumsum_(values: Tensor, seg: Tensor, longest: int) -> Tensor:
    """Inclusive cumulative sums of ``values`` along its last dimension, restarting at each segment, in place.

    Every sum holds only its own segment's values (added in a tree order), never the difference
    of two sums over other segments: a segment's small weights are never lost next to a large
    total of the segments before it. Whole-array passes only, no host sync:

    * segments of at most ``_FLAT_SCAN`` elements: a parallel (Hillis-Steele) scan, pass ``k``
      adding to each element the partial sum ``2^k`` places back when that place is in the same
      segment (``ceil(log2(longest))`` passes);
    * longer ones: the same scan within rows of ``_SCAN_WIDTH`` elements (6 passes), then each
      row's last partial sum carried into the rows its segment goes on into, by the same
      function over one value per row (a short recursion), added to each row's first segment.

    Args:
        values: ``(..., M)`` float tensor, overwritten with the sums.
        seg: ``(M,)`` segment ids, equal ids contiguous (e.g. sorted).
        longest: an upper bound on the number of elements of one segment.
    """
    num = seg.numel()
    if longest <= _FLAT_SCAN or num <= _FLAT_SCAN:
        step = 1
        while step < min(longest, num):
            values[..., step:] += torch.where(seg[step:] == seg[:-step], values[..., :-step], 0.0)
            step *= 2
        return values
    width = _SCAN_WIDTH
    rows = -(-num // width)
    lead = values.shape[:-1]
    grid = values.new_zeros(*lead, rows * width)
    grid[..., :num] = values
    seg_grid = torch.cat([seg, seg[-1:].expand(rows * width - num)]).view(rows, width)  # padding: zeros
    grid = grid.view(*lead, rows, width)
    step = 1
    while step < width:
        grid[..., step:] += torch.where(seg_grid[:, step:] == seg_grid[:, :-step], grid[..., :-step], 0.0)
        step *= 2
    head, tail = seg_grid[:, 0], seg_grid[:, -1]
    cont = head[1:] == tail[:-1]  # row j + 1's first segment began in an earlier row
    through = torch.ones(rows, dtype=torch.bool, device=seg.device)
    through[1:] = cont & (head[1:] == tail[1:])  # the row is all one segment that began earlier
    # the segment open at each row's end, summed over the rows it fills: a chain of rows per segment
    carried = _segmented_cumsum_(grid[..., -1].clone(), torch.cumsum(~through, 0), -(-longest // width) + 1)
    add = torch.where(cont, carried[..., :-1], 0.0)
    grid[..., 1:, :] += torch.where(seg_grid[1:] == head[1:, None], add[..., None], 0.0)
    values.copy_(grid.view(*lead, rows * width)[..., :num])
    return values


class _CurveAccumulator:
    r"""ROC area and average-precision numerators per segment, fed block by block in curve order.

    Segments are tasks (binary) or ``(task, group)`` pairs (grouped); the elements come sorted by
    segment, then by decreasing score. Per block (:meth:`add`), the positive and negative weight
    of each run of tied scores are summed with ``bincount``; a run that the block's end cuts is
    held back and added to the next block's first run (two sums, so a tie run of any length
    never makes a block longer). Then per segment of negative weight ``N``

    .. math::
        \text{auc\_num} = \sum_{r: P_r > 0} P_r \left(N - FP_r + \tfrac12 N_r\right)
            = \sum_r N_r \left(TP_r - \tfrac12 P_r\right), \qquad
        \text{ap\_num} = \sum_{r: P_r > 0} P_r \frac{TP_r}{TP_r + FP_r},

    with ``TP_r``/``FP_r`` cumulative sums within the segment (``FP_r`` including the run's own
    ``N_r``), carried across blocks; the left-hand form is summed everywhere, since blocks cut a
    segment's runs in arbitrary places. A block inside one segment takes one ``cumsum`` per
    class; a block of several segments keeps only the runs holding positive weight (the others
    add nothing) and the last run of each segment: ``TP_r`` is the cumulative sum of their
    ``P_r`` within the segment and ``FP_r`` that of the negative weight up to them (one more
    ``bincount``), both by :func:`_segmented_cumsum_` (a block of at most ``_FEW_SEGMENTS``
    segments takes one ``cumsum`` per segment instead). No value is a difference of sums over
    other segments, so a segment's result does not depend on the weights or the order of the
    others.
    """

    def __init__(self, neg_total: Tensor) -> None:
        self.neg_total = neg_total
        self.auc_num = torch.zeros_like(neg_total)
        self.ap_num = torch.zeros_like(neg_total)
        # TP, FP of segment `carry_seg` so far, and the (P, N) of a tie run cut by the last block's end
        self.carry = torch.zeros(2, 1, dtype=torch.float64, device=neg_total.device)
        self.carry_seg = -1
        self.pending: Tensor | None = None

    def add(self, seg: Tensor | int, start: Tensor, weights: Tensor, continues: bool) -> None:
        """Add one block.

        Args:
            seg: ``(M,)`` segment id per element, or one ``int`` when the whole block is one segment.
            start: ``(M,)`` flags opening each run of equal scores (the first element's is set).
            weights: ``(M,)`` float64 signed weights (``+w`` positive, ``-w`` negative); only read.
            continues: the block's last run goes on in the next block.
        """
        pos, neg = weights.clamp(min=0), weights.neg().clamp_(min=0)
        if not bool(start.all()):  # tied scores: one entry per run
            run = torch.cumsum(start, 0).sub_(1)
            pos, neg = torch.bincount(run, weights=pos), torch.bincount(run, weights=neg)
            del run
            if isinstance(seg, Tensor):
                seg = seg[start]
        if self.pending is not None:  # the first run began in the previous block(s)
            pos[:1] += self.pending[0]
            neg[:1] += self.pending[1]
            self.pending = None
        if continues:
            self.pending = torch.stack([pos[-1], neg[-1]])
            pos, neg = pos[:-1], neg[:-1]
            if isinstance(seg, Tensor):
                seg = seg[:-1]
            if pos.numel() == 0:  # the whole block is inside one tie run
                return
        if isinstance(seg, int):
            self._one_segment(seg, pos, neg)
        else:
            self._segments(seg, pos, neg)

    def _one_segment(self, seg: int, pos: Tensor, neg: Tensor) -> None:
        tp, fp = pos.cumsum(0), neg.cumsum(0)
        if seg == self.carry_seg:
            tp += self.carry[0]
            fp += self.carry[1]
        # the same form as `_segments` (a segment may be summed partly here, partly there)
        self.auc_num[seg] += torch.dot(pos, (self.neg_total[seg] - fp).add_(neg, alpha=0.5))
        self.ap_num[seg] += torch.dot(pos, (tp / (tp + fp)).nan_to_num_(0.0))
        self.carry, self.carry_seg = torch.stack([tp[-1:], fp[-1:]]), seg

    def _segments(self, seg: Tensor, pos: Tensor, neg: Tensor) -> None:
        kept = pos > 0
        kept[-1:] = True
        kept[:-1] |= seg[1:] != seg[:-1]  # the last run of each segment
        at = torch.nonzero(kept).squeeze(1)
        # every run's negative weight goes to the first kept run at or after it (same segment)
        slot = torch.cumsum(kept, 0).sub_(kept.to(torch.int64))
        p_r = torch.index_select(pos, 0, at)
        sums = torch.stack([p_r, torch.bincount(slot, weights=neg, minlength=at.numel())])  # -> TP, FP
        at_seg = torch.index_select(seg, 0, at)
        del slot, kept
        counts = torch.unique_consecutive(at_seg, return_counts=True)[1]
        if counts.numel() <= _FEW_SEGMENTS:  # a few long segments: one cumsum each
            for part in torch.split(sums, counts.tolist(), dim=1):
                part.cumsum_(1)
        else:
            _segmented_cumsum_(sums, at_seg, int(counts.max()))
        if int(at_seg[0]) == self.carry_seg:  # the block continues the previous block's last segment
            sums[:, : int(counts[0])] += self.carry
        self.carry, self.carry_seg = sums[:, -1:].clone(), int(at_seg[-1])
        tp, fp = sums
        below = torch.index_select(self.neg_total, 0, at_seg).sub_(fp).add_(torch.index_select(neg, 0, at), alpha=0.5)
        self.auc_num.index_add_(0, at_seg, p_r * below)
        self.ap_num.index_add_(0, at_seg, p_r * (tp / (tp + fp)).nan_to_num_(0.0))


def _curve_sums(key: Tensor, signed: Tensor, neg_total: Tensor) -> tuple[Tensor, Tensor]:
    """ROC area and average-precision numerators per segment of a sorted sequence (CPU, block by block).

    Runs of equal keys are the curve points; blocks of ``_BLOCK`` elements go through
    :class:`_CurveAccumulator` (a tie run longer than a block is carried, never loaded whole).

    Args:
        key: ``(M,)`` int64 keys sorted ascending: the segment id (in ``[0, S)``) in the high 32
            bits, equal keys are tied scores of one segment.
        signed: ``(M,)`` signed weights in the same order (``+w`` positive, ``-w`` negative); only read.
        neg_total: ``(S,)`` float64 negative label weight per segment.

    Returns:
        ``(auc_num, ap_num)``, each ``(S,)`` float64.
    """
    num = key.numel()
    acc = _CurveAccumulator(neg_total)
    for lo in range(0, num, _BLOCK):
        hi = min(lo + _BLOCK, num)
        block = key[lo:hi]
        start = torch.empty(hi - lo, dtype=torch.bool, device=key.device)
        start[:1] = True
        torch.ne(block[1:], block[:-1], out=start[1:])
        seg = block >> 32
        first = int(seg[0])
        continues = hi < num and int(key[hi]) == int(key[hi - 1])
        acc.add(first if first == int(seg[-1]) else seg, start, signed[lo:hi].to(torch.float64), continues)
    return acc.auc_num, acc.ap_num
