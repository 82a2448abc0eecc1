r"""Session pairwise AUC (newer TorchRec's ``session_pairwise_auc``): concordance of the pairs inside each session.

A pair is two rows of one session, both of positive weight, whose labels are at least
:data:`LABEL_GAP` (1e-6) apart; it is concordant when the row of the higher label scores higher,
and a score tie counts one half. Each pair weighs :math:`w_i + w_j` (TorchRec's default;
``weight_pairs=False``: 1), and the value is the pooled

.. math:: \text{AUC} = \frac{\sum_{\text{pairs}} w_{ij}\,(1[\text{concordant}] + \tfrac12 1[\text{tie}])}
          {\sum_{\text{pairs}} w_{ij}}

over the sessions of every batch: large sessions, holding more pairs, weigh more. A session must
lie within one batch (as in TorchRec): a session id seen in two batches is two sessions.

Cost: no pair is formed. A pair's weight :math:`w_i + w_j` splits between its rows, so each row
needs only how many of its partners score below, level with and above it; its partners are two
ranges of its session once rows are sorted by (task, session, label) (the lower labels before it,
the higher after it), and those counts come for every row at once from a wavelet matrix over the
rows' score ranks within their sessions (one pass per bit of the rank: the longest session's on the
CPU, ``N``'s on a device). Sorts of int64 keys, scans and gathers: O(N log N) time, O(N) memory,
whatever the session sizes (a session of 5,000 rows of distinct labels, 12.5 million pairs, costs
what 5,000 rows in sessions of 2 do, give or take the rank's bits). In ``update`` nothing has a
size that depends on the data, so on a device it never waits for the device (no ``torch.unique``,
no pair count). Counts are int64, exact; only their products with the weights are float64. No loop
over sessions, rows or tasks.

On the CPU, where reading a size costs nothing, the rows are ordered in NumPy
(:mod:`~torchmetrics_ext.functional._session_pairwise_cpu`: PyTorch's fixed cost per operation
dominated batches of a few thousand rows), and a batch with few pairs for its rows and its longest
session's bits (short sessions: training batches) compares every pair, in blocks, instead of
counting them; the choice is by size, at a measured crossover. Same sums, to float64 rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional import _session_pairwise_cpu as CPU
from torchmetrics_ext.functional.pointwise import _finish
from torchmetrics_ext.functional.session import _format_sessions
from torchmetrics_ext.utilities.checks import check_flag, checks_validate_args, format_pointwise
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.docstrings import with_sections
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["session_pairwise_auc"]

LABEL_GAP = 1e-6  # labels closer than this are equal (TorchRec's threshold)
_LOW_63 = (1 << 63) - 1  # every bit of an int64 but the sign
# state order of _pairwise_update: pair sums, then the coverage counts, then the batches counted
PAIRWISE_STATES = (
    "correct_pair_weight",
    "total_pair_weight",
    "valid_pair_count",
    "effective_example_count",
    "batch_count",
)
COVERAGE_ENTRIES = ("valid_pairs_per_batch", "effective_training_examples_per_batch")


# format_pointwise's options for these inputs: labels of any finite value, required, kept in their dtype
FORMAT_OPTIONS: dict[str, Any] = {"target_domain": "real", "target_required": True, "dtype": None}


def _check_pairwise_args(rank_order_label: object, weight_pairs: object, report_batch_coverage: object) -> None:
    check_flag("rank_order_label", rank_order_label)
    check_flag("weight_pairs", weight_pairs)
    check_flag("report_batch_coverage", report_batch_coverage)


def _tie_starts(sorted_values: Tensor) -> Tensor:
    """Per position of a sorted 1-D tensor, the first position holding the same value."""
    position = torch.arange(sorted_values.numel(), device=sorted_values.device)
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[1:] = sorted_values[1:] != sorted_values[:-1]
    return torch.where(new, position, 0).cummax(0).values


def _int_keys(values: Tensor) -> Tensor:
    """int64 keys in the order of ``values`` (equal exactly where the values are): sorts of int64 run much faster.

    Floating values go through float64 (exact for every floating dtype), ``-0.0`` made ``+0.0``, and
    their bits read as an integer, the non-sign bits flipped for negative values.
    """
    if not values.is_floating_point():
        return values.to(torch.int64)
    bits = (values.to(torch.float64) + 0.0).view(torch.int64)
    return torch.bitwise_xor(bits, torch.bitwise_and(torch.bitwise_right_shift(bits, 63), _LOW_63))


def _ranks(keys: Tensor) -> Tensor:
    """Per value of a 1-D int64 tensor, how many values are strictly below it (ties share it): a sort and a scan."""
    ordered, order = torch.sort(keys)
    return torch.empty_like(order).scatter_(0, order, _tie_starts(ordered))


def _count_at_most(sorted_keys: Tensor, queries: Tensor) -> Tensor:
    """Per query, how many of the sorted int64 ``sorted_keys`` are at most it (``searchsorted(..., right=True)``).

    By one stable sort of both, the keys first (each query placed after the keys equal to it) and a
    cumulative count: faster than a binary search per query on the CPU, and of fixed size.
    """
    n = sorted_keys.numel()
    order = torch.sort(torch.cat([sorted_keys, queries]), stable=True).indices
    keys_so_far = torch.cumsum(order < n, 0)
    return torch.empty_like(order).scatter_(0, order, keys_so_far)[n:]


def _session_numbers(sessions: Tensor, present: Tensor) -> Tensor:
    """Per row of ``(T, N)``, its session's number (ranks, not ``torch.unique``: no size depends on the data).

    Task ``t``'s sessions take ``t * 2N + [0, N)`` in the ids' order, and its row ``i`` of weight 0
    ``t * 2N + N + i``, a session of its own.
    """
    num_tasks, n = sessions.shape
    task = torch.arange(num_tasks, device=sessions.device).unsqueeze(-1)
    if num_tasks == 1 or sessions.stride(0) == 0:  # one row of ids for every task: ranked once
        within = _ranks(sessions[0]).expand(num_tasks, n)
    else:  # ranks of (task, rank among every id): task t's ranks fall in t * N + [0, N)
        by_task = task * (num_tasks * n) + _ranks(sessions.flatten()).view(num_tasks, n)
        within = _ranks(by_task.flatten()).view(num_tasks, n) - task * n
    return task * (2 * n) + torch.where(present, within, n + torch.arange(n, device=sessions.device))


def _sorted_rows(target: Tensor, sessions: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Rows ordered by (task, session, label), and per sorted row the bounds of its pairs.

    Returns ``(order, group, start, lower_end, end)`` over the ``T * N`` flat rows: ``order`` the
    flat row at each sorted position, ``group`` its session's number (ordered as the positions);
    the row's lower-label partners (a label at least :data:`LABEL_GAP` below its own) are the
    sorted positions ``start .. lower_end - 1``, a prefix of its session, which ends before
    ``end``. Task ``t``'s rows are the positions ``t * N .. (t + 1) * N - 1``. A row of weight 0
    is a session of its own: it joins no pair.
    """
    flat = target.numel()
    group = _session_numbers(sessions, present).flatten()
    labels = target.flatten()
    label_keys = _int_keys(labels)
    label_rank = _ranks(label_keys)
    # the highest rank of a label at least LABEL_GAP below each row's label; below its own rank even where
    # y - LABEL_GAP rounds to y (labels above ~1e10), where every other label is that far below
    below = _count_at_most(torch.sort(label_keys).values, _int_keys(labels - LABEL_GAP)) - 1
    below = torch.minimum(below, label_rank - 1)
    keys = group * flat + label_rank  # < 2 * (T * N) ** 2: no int64 overflow below 2e9 rows in all
    sorted_keys, order = torch.sort(keys)
    group = group[order]
    start = _tie_starts(group)
    end = flat - _tie_starts(group.flip(0)).flip(0)
    lower_end = _count_at_most(sorted_keys, group * flat + below[order])
    return order, group, start, lower_end, end


def _count_below(values: Tensor, bounds: Tensor, threshold: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """How many values of each range lie below its threshold, and how many equal it.

    ``values`` are ``n`` int64 in ``[0, 2**bits)``; ``bounds`` ``(k, m)`` int64, non-decreasing along
    the first dimension, cut ``k - 1`` ranges per column ``q``, ``values[bounds[r, q]:bounds[r + 1, q]]``,
    each counted against the int64 ``threshold[q]``; both counts come back ``(k - 1, m)``. A wavelet
    matrix, built and queried one bit at a time from the highest: each level stably moves the values
    whose bit is 0 ahead of the others, and each range follows its values whose higher bits equal its
    threshold's, counting those that go to the 0 side where the threshold's bit is 1. One table per
    level, ``[zeros before i | n + 1 + i -> where the ones before i go]``, gives both the values' new
    places and the bounds' new places. O((n + k * m) * bits) work in ``bits`` rounds of whole-array
    operations, every size fixed by the inputs' shapes.
    """
    n = values.numel()
    table = torch.zeros(2 * (n + 1), dtype=torch.int64, device=values.device)
    zeros_before, ones_to = table[: n + 1], table[n + 1 :]
    place = torch.arange(n + 1, device=values.device)
    position = place[:n]
    # every level's threshold bits at once, one byte each
    levels = torch.arange(bits - 1, -1, -1, device=values.device).view(-1, *([1] * threshold.ndim))
    up = torch.bitwise_and(torch.bitwise_right_shift(threshold, levels), 1).to(torch.uint8)
    below = torch.zeros((bounds.shape[0] - 1, *bounds.shape[1:]), dtype=torch.int64, device=values.device)
    size = bounds.diff(dim=0)
    for step in range(bits):
        bit = torch.bitwise_and(torch.bitwise_right_shift(values, bits - 1 - step), 1)
        torch.cumsum(torch.bitwise_xor(bit, 1), 0, out=zeros_before[1:])
        torch.sub(place, zeros_before, out=ones_to)
        ones_to += zeros_before[n]
        bounds = torch.take(table, bounds.add(up[step], alpha=n + 1))
        kept = bounds.diff(dim=0)
        below += up[step] * (size - kept)  # the range's values with a 0 here where the threshold has a 1
        size = kept
        values = torch.empty_like(values).scatter_(0, torch.take(table, position.add(bit, alpha=n + 1)), values)
    return below, size


def _bits(score: Tensor, n: int) -> int:
    """Bits of the largest within-session score rank: read on the CPU path (free), ``N - 1``'s on a device."""
    if on_device_path(score) or n < 2:
        return max(1, (n - 1).bit_length())
    return max(1, int(score.max()).bit_length())


def _pairwise_update(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None,
    rank_order_label: bool,
    weight_pairs: bool,
) -> tuple[Tensor, ...]:
    """Per-task float64 sums of one batch in the order of :data:`PAIRWISE_STATES`.

    ``preds``, ``target`` ``(T, N)``; ``sessions`` int64 ``(T, N)``; ``weights`` ``(T, N)``, ``(1, N)`` or ``None``.
    ``batch_count`` is 1 for a task with a row of positive weight, else 0.

    No pair is formed: a pair weighs ``w_i + w_j``, so its share of the sums splits between its two
    rows, and each row needs only counts over its partners, which are two ranges of the rows sorted
    by (session, label): its lower-label partners before it, its higher-label ones after it. How many
    partners score below or level with the row is counted for every row at once
    (:func:`_count_below`, over each row's score rank within its session), in int64 (exact; a tie
    counts 1 of 2). On the CPU the rows are ordered in NumPy, and a batch of few pairs per row and bit
    compares its pairs instead (:mod:`~torchmetrics_ext.functional._session_pairwise_cpu`).
    """
    num_tasks, n = preds.shape
    y = target.to(torch.float64)
    y = -y if rank_order_label else y
    w = torch.ones_like(y) if weights is None else weights.to(torch.float64).expand_as(y)
    present = w > 0
    batches = present.any(-1).to(torch.float64)
    if n == 0:
        zeros = torch.zeros(num_tasks, dtype=torch.float64, device=preds.device)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone(), batches
    if on_device_path(preds):
        order, group, start, lower_end, end = _sorted_rows(y, sessions, present)
    else:  # the order in NumPy (no PyTorch cost per operation), and every pair compared where they are few
        rows = CPU.cpu_sorted_rows(y, sessions, present, LABEL_GAP)
        pairs, num_pairs = CPU.takes_pairs(rows[2], rows[3], rows[4])
        if pairs:
            return (*CPU.pair_sums(preds, w, rows, num_pairs, weight_pairs), batches)
        order, group, start, lower_end, end = (torch.from_numpy(a) for a in rows)
    flat = order.numel()
    # higher-label partners: the rows whose lower range reaches this one; lower_end never decreases, so
    # they begin where the count of lower_end values at most the row's position says
    reach = torch.zeros(flat + 1, dtype=torch.int64, device=preds.device)
    reach.scatter_add_(0, lower_end, torch.ones_like(lower_end))
    upper_start = torch.minimum(reach.cumsum(0)[:flat], end)
    # each row's score rank within its session (ties share it) and its ties' count, in the sorted rows'
    # order: a second sort, by (session, score rank), whose sessions take the same positions as the first's
    by_score, within = torch.sort(group * flat + _ranks(_int_keys(preds.flatten()))[order])
    tie_start = _tie_starts(by_score)
    tie_end = flat - _tie_starts(by_score.flip(0)).flip(0)
    score = torch.empty_like(within).scatter_(0, within, tie_start - start[within])
    ties = torch.empty_like(within).scatter_(0, within, tie_end - tie_start)
    # two ranges per row: its lower partners, then the rows of labels within LABEL_GAP of its own (itself
    # among them); its higher partners are the rest of its session, where `score` rows score below it
    # and `ties` level with it (itself among them) in all
    ranges = torch.stack([start, lower_end, upper_start])
    below, level = _count_below(score, ranges, score, _bits(score, n))
    lower, upper = lower_end - start, end - upper_start
    upper_below = score - below[0] - below[1]
    upper_level = ties - level[0] - level[1]
    # twice each row's credit: over its lower partners (above them: 2, level: 1), over its higher ones
    credit_high = 2 * below[0] + level[0]
    credit_low = 2 * (upper - upper_below - upper_level) + upper_level

    def per_task(rows: Tensor) -> Tensor:
        return rows.view(num_tasks, n).sum(-1, dtype=torch.float64)

    if weight_pairs:
        w_sorted = w.flatten()[order]
        correct = per_task(w_sorted * (credit_high + credit_low)) / 2
        total = per_task(w_sorted * (lower + upper))
    else:
        correct, total = per_task(credit_high) / 2, per_task(lower)
    valid = per_task(lower)
    effective = per_task((lower > 0) | (upper > 0))
    return correct, total, valid, effective, batches


def _pairwise_auc_compute(states: tuple[Tensor, ...], name: str = "SessionPairwiseAUC") -> Tensor:
    """Correct over total pair weight; ``nan`` with an ``UndefinedMetricWarning`` where no pair was seen."""
    correct, total, *_, batches = states
    undefined = total <= 0
    reason = "no session holds two rows of weight with labels at least 1e-6 apart"
    # the batches counted tell a task that saw no row of weight (NO_SAMPLES) from one that saw no pair
    warn_undefined(undefined, name, reason, unseen=lambda: batches <= 0)
    return torch.where(undefined, math.nan, correct / torch.where(undefined, 1.0, total))


def _coverage_compute(states: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """TorchRec's coverage values: pairs and rows in a pair, each averaged over the batches counted (0 with none)."""
    _, _, valid, effective, batches = states
    counted = batches > 0
    per_batch = [torch.where(counted, s / torch.where(counted, batches, 1.0), 0.0) for s in (valid, effective)]
    return dict(zip(COVERAGE_ENTRIES, per_batch))


def _pairwise_states(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None,
    rank_order_label: bool,
    weight_pairs: bool,
    validate_args: bool,
    num_tasks: int | None = None,
) -> tuple[Tensor, ...]:
    p, t, w = format_pointwise(
        preds, target, weights, num_tasks, preds_domain="real", validate=validate_args, **FORMAT_OPTIONS
    )
    s = _format_sessions(sessions, p, validate_args)
    return _pairwise_update(p, t, s, w, rank_order_label, weight_pairs)  # type: ignore[arg-type]


_PAIRWISE_ARGS = """
Args:
    preds: ``(N,)`` or ``(T, N)`` scores (any finite values; only their order within a session counts).
    target: labels, any finite values, same shape; labels less than 1e-6 apart are equal.
    sessions: integer session ids on ``preds``' device, ``(N,)`` (shared by all tasks) or ``(T, N)``;
        a session must lie within one call.
    weights: optional non-negative sample weights; a row of weight 0 joins no pair.
    rank_order_label: a lower label ranks higher (TorchRec's ``rank_order_label``).
    weight_pairs: weigh each pair ``w_i + w_j`` (default, TorchRec's); ``False``: 1 per pair.
    validate_args: check inputs before computing.
"""


@checks_validate_args
@with_sections(_PAIRWISE_ARGS, before="Returns")
def session_pairwise_auc(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None = None,
    *,
    rank_order_label: bool = False,
    weight_pairs: bool = True,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted share of concordant pairs among the pairs of rows inside each session.

    Returns:
        A float64 scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` where no session
        holds a pair (TorchRec reports 0.5 there).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import session_pairwise_auc
        >>> preds = torch.tensor([0.9, 0.2, 0.4, 0.3, 0.8, 0.5])
        >>> target = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
        >>> sessions = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> # session 0: (2 over 0) right, (2 over 1) wrong, (1 over 0) right; session 1: 2 of 2 right
        >>> session_pairwise_auc(preds, target, sessions)
        tensor(0.8000, dtype=torch.float64)
        >>> # row 2 of weight 3: its two pairs weigh 4, one right, one wrong; the others 2: (4 + 2 + 2 + 2) / 14
        >>> session_pairwise_auc(preds, target, sessions, weights=torch.tensor([1.0, 1, 3, 1, 1, 1]))
        tensor(0.7143, dtype=torch.float64)
    """
    _check_pairwise_args(rank_order_label, weight_pairs, False)
    states = _pairwise_states(
        preds, target, sessions, weights, bool(rank_order_label), bool(weight_pairs), validate_args
    )
    return _finish(_pairwise_auc_compute(states, "session_pairwise_auc"), preds.ndim == 1)
