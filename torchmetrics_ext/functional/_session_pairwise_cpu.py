"""SessionPairwiseAUC's CPU path: the rows' (session, label) order in NumPy, then pairs formed where they are few.

The device path (:mod:`~torchmetrics_ext.functional.session_pairwise`) never reads a size, so that a
GPU runs behind the CPU; on the CPU a size costs nothing, and at training batch sizes (a few thousand
rows) most of the time went to PyTorch's fixed cost per operation, paid some 300 times per update.
Here the rows are ordered by NumPy (a few microseconds per operation) and, where the batch holds
few pairs for its rows, every pair is compared directly, which beats counting them by score
(:data:`PAIRS_PER_ROW_BIT`, measured); elsewhere the counts come from the same wavelet matrix as on a
device, fed with this order. Both give the sums of the pair loop, to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["PAIRS_PER_ROW_BIT", "cpu_sorted_rows", "pair_sums", "takes_pairs"]

# Pairs are compared one by one while they number at most this many per row and per bit of the longest
# session's size (the wavelet matrix's passes); beyond, counting by score is faster. Measured on the data of
# benchmarks/bench_session_pairwise.py (one thread, 8k to 100k rows, sessions of 100 to 400 rows): the two
# cost the same near 8 to 9 pairs per row and bit (about 4 ns per pair against 30-45 ns per row and bit).
PAIRS_PER_ROW_BIT = 8
PAIR_BLOCK = 1 << 15  # pairs compared at once: their arrays stay in the cache (no fresh pages each update)


def cpu_sorted_rows(
    target: Tensor, sessions: Tensor, present: Tensor, label_gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows' order by (task, session, label) and the bounds of each row's pairs, in NumPy.

    Returns ``(order, group, start, lower_end, end)`` as ``_sorted_rows`` of the device path does:
    ``order`` the flat row at each sorted position, ``group`` the position's session number (sessions
    numbered in sorted order), its session the positions ``start .. end - 1``, its lower-label partners
    (labels at most ``label - label_gap`` and below its own) ``start .. lower_end - 1``. Task ``t``'s rows
    are the positions ``t * N .. (t + 1) * N - 1``; a row of weight 0 is a session of its own.
    """
    num_tasks, n = target.shape
    flat = num_tasks * n
    y = target.detach().numpy().reshape(-1)
    keep = present.numpy()
    s = sessions.numpy()
    shared = num_tasks == 1 or sessions.stride(0) == 0  # one row of ids for every task: numbered once
    distinct, ids = np.unique(s[0] if shared else s, return_inverse=True)
    ids = ids.reshape(1 if shared else num_tasks, n)
    width = distinct.size + 1
    # task t's sessions: t * width + [0, width - 1); its rows of weight 0 all (t + 1) * width - 1, cut apart below
    session = np.where(keep, ids, width - 1) + (np.arange(num_tasks) * width)[:, None]
    labels, label_rank = np.unique(y, return_inverse=True)
    num_labels = labels.size
    label_rank = label_rank.reshape(-1)
    # the highest rank of a label at least label_gap below each row's; below its own even where y - gap rounds to y
    below = np.searchsorted(labels, y - label_gap, "right") - 1
    np.minimum(below, label_rank - 1, out=below)
    keys = session.reshape(-1) * num_labels + label_rank  # < T**3 * N**2: no int64 overflow below T**1.5 * N = 3e9
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    session_sorted = sorted_keys // num_labels
    new = np.empty(flat, dtype=bool)
    new[0] = True
    np.not_equal(session_sorted[1:], session_sorted[:-1], out=new[1:])
    new |= ~keep.reshape(-1)[order]
    position = np.arange(flat)
    start = np.maximum.accumulate(np.where(new, position, 0))
    lower_end = np.searchsorted(sorted_keys, session_sorted * num_labels + below[order], "right")
    np.maximum(lower_end, start, out=lower_end)  # a row of weight 0: the other such rows are no partners
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    end = np.append(first[1:], flat)[group]
    return order, group, start, lower_end, end


def takes_pairs(start: np.ndarray, lower_end: np.ndarray, end: np.ndarray) -> tuple[bool, int]:
    """Whether comparing every pair beats the wavelet matrix here (:data:`PAIRS_PER_ROW_BIT`), and the pair count."""
    num_pairs = int((lower_end - start).sum())
    longest = int((end - start).max()) if end.size else 0
    return num_pairs <= PAIRS_PER_ROW_BIT * end.size * max(1, (longest - 1).bit_length()), num_pairs


def pair_sums(
    preds: Tensor,
    w: Tensor,
    rows: tuple[np.ndarray, ...],
    num_pairs: int,
    weight_pairs: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Correct and total pair weight, pair count and rows in a pair per task, comparing every pair.

    ``preds``, ``w`` (float64) ``(T, N)``; ``rows`` from :func:`cpu_sorted_rows`. Pair ``k`` of sorted
    row ``i`` (the ``k``-th of its lower-label partners) is the sorted row ``start[i] + k``.
    """
    num_tasks, n = preds.shape
    order, _, start, lower_end, end = rows
    lower = lower_end - start
    p = preds.detach().to(torch.float64).numpy().reshape(-1)[order]
    ws = w.detach().numpy().reshape(-1)[order] if weight_pairs else None
    task_pairs = lower.reshape(num_tasks, n).sum(-1)
    ends = np.cumsum(lower)
    shift = start - (ends - lower)  # pair k (counted over all rows) of row i: the sorted row k + shift[i]
    # rows in blocks of about PAIR_BLOCK pairs: the pairs' arrays stay small (cache-resident, no fresh pages)
    cuts = np.searchsorted(ends, np.arange(PAIR_BLOCK, num_pairs, PAIR_BLOCK), "right").tolist()
    correct, total = np.zeros(num_tasks), np.zeros(num_tasks)
    for r0, r1 in zip([0, *cuts], [*cuts, order.size]):
        counts = lower[r0:r1]
        first = int(ends[r0 - 1]) if r0 else 0
        last = int(ends[r1 - 1]) if r1 else 0
        if last == first:
            continue
        lo = np.arange(first, last) + np.repeat(shift[r0:r1], counts)
        p_hi, p_lo = np.repeat(p[r0:r1], counts), p[lo]  # the higher label's values repeated, the partner's gathered
        credit = np.greater(p_hi, p_lo).astype(np.float64)
        credit += 0.5 * np.equal(p_hi, p_lo)
        pair_weight = None
        if ws is not None:
            pair_weight = np.repeat(ws[r0:r1], counts)
            pair_weight += ws[lo]
            credit *= pair_weight
        if num_tasks == 1:
            correct[0] += credit.sum()
            total[0] += last - first if pair_weight is None else pair_weight.sum()
        else:
            task = np.repeat(np.arange(r0, r1) // n, counts)
            correct += np.bincount(task, weights=credit, minlength=num_tasks)
            total += np.bincount(task, weights=pair_weight, minlength=num_tasks)
    valid = task_pairs.astype(np.float64)
    # a row pairs with a higher label where its session's last row (the widest lower range) reaches it
    effective = (lower > 0) | (np.arange(order.size) < lower_end[end - 1])
    in_pair = effective.reshape(num_tasks, n).sum(-1).astype(np.float64)
    return tuple(torch.from_numpy(a) for a in (correct, total, valid, in_pair))  # type: ignore[return-value]
