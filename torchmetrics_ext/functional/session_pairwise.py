r"""Session pairwise AUC (newer TorchRec's ``session_pairwise_auc``): concordance of the pairs inside each session.

A pair is two rows of one session, both of positive weight, whose labels are at least
:data:`LABEL_GAP` (1e-6) apart; it is concordant when the row of the higher label scores higher,
and a score tie counts one half. Each pair weighs :math:`w_i + w_j` (TorchRec's default;
``weight_pairs=False``: 1), and the value is the pooled

.. math:: \text{AUC} = \frac{\sum_{\text{pairs}} w_{ij}\,(1[\text{concordant}] + \tfrac12 1[\text{tie}])}
          {\sum_{\text{pairs}} w_{ij}}

over the sessions of every batch: large sessions, holding more pairs, weigh more. A session must
lie within one batch (as in TorchRec): a session id seen in two batches is two sessions.

Cost: rows are sorted once by (task, session, label) and each row's lower-label partners, a
prefix of its session in that order, are counted with two ``searchsorted`` calls (so the pair
count, the coverage counts and the sessions' bounds take O(N log N) time and O(N) memory); the
score comparisons then run over exactly those pairs, in chunks of at most :data:`PAIR_CHUNK`
pairs: O(P) time for P valid pairs, memory O(N + PAIR_CHUNK) whatever the session sizes (a session
of 5,000 rows of distinct labels is 12.5 million pairs, about 48 chunks). The device is waited on
three times per update (the two ``torch.unique`` calls, sessions and labels, whose sizes depend on
the data, and the batch's pair count, which sizes the chunks). No loop over sessions, rows or tasks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional.pointwise import _finish
from torchmetrics_ext.functional.session import _format_sessions
from torchmetrics_ext.utilities.checks import check_flag, checks_validate_args, format_pointwise
from torchmetrics_ext.utilities.docstrings import with_sections
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["session_pairwise_auc"]

LABEL_GAP = 1e-6  # labels closer than this are equal (TorchRec's threshold)
PAIR_CHUNK = 1 << 18  # pairs compared at once: bounds the memory of one update
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


def _sorted_rows(target: Tensor, sessions: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows ordered by (task, session, label); per sorted row its session's first position and lower-label count.

    Returns ``(order, start, lower, last)`` over the ``T * N`` flat rows: ``order`` the flat row at
    each sorted position, ``start`` the sorted position where the row's session begins, ``lower``
    the number of rows of its session with a label at least :data:`LABEL_GAP` below its own (they
    are the positions ``start .. start + lower - 1``), ``last`` the session's last sorted position.
    A row of weight 0 is a session of its own: it joins no pair.
    """
    num_tasks, n = target.shape
    flat = num_tasks * n
    ids, session_ids = torch.unique(sessions, return_inverse=True)
    task = torch.arange(num_tasks, device=target.device).unsqueeze(-1)
    num_ids = max(ids.numel(), 1)  # the unique ids' count: no read of the device beyond unique's own
    group = task * num_ids + session_ids
    alone = num_tasks * num_ids + torch.arange(flat, device=target.device).view(num_tasks, n)
    group = torch.where(present, group, alone).flatten()
    labels, label_rank = torch.unique(target, return_inverse=True)
    num_labels = labels.numel()
    # the highest label rank at least LABEL_GAP below each row's label; below its own rank even where
    # y - LABEL_GAP rounds to y (labels above ~1e10), where every other label is that far below
    below = torch.searchsorted(labels, target - LABEL_GAP, right=True) - 1
    below = torch.minimum(below, label_rank - 1).flatten()
    keys = group * num_labels + label_rank.flatten()  # < 2 * T * N * num_labels: no int64 overflow below 1e9 rows
    sorted_keys, order = torch.sort(keys)
    base = group[order] * num_labels
    start = torch.searchsorted(sorted_keys, base)
    lower = torch.searchsorted(sorted_keys, base + below[order], right=True) - start
    last = torch.searchsorted(sorted_keys, base + num_labels) - 1
    return order, start, lower, last


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
    """
    num_tasks, n = preds.shape
    y = target.to(torch.float64)
    y = -y if rank_order_label else y
    w = torch.ones_like(y) if weights is None else weights.to(torch.float64).expand_as(y)
    present = w > 0
    order, start, lower, last = _sorted_rows(y, sessions, present)
    y_sorted, p_sorted, w_sorted = y.flatten()[order], preds.flatten()[order], w.flatten()[order]
    task_sorted = torch.div(order, max(n, 1), rounding_mode="floor")
    zeros = torch.zeros(num_tasks, dtype=torch.float64, device=preds.device)
    valid = zeros.index_add(0, task_sorted, lower.to(torch.float64))
    # a row pairs with a lower label (its session's first label is LABEL_GAP below) or a higher one
    effective = (y_sorted - y_sorted[start] >= LABEL_GAP) | (y_sorted[last] - y_sorted >= LABEL_GAP)
    effective_count = zeros.index_add(0, task_sorted, effective.to(torch.float64))
    batches = present.any(-1).to(torch.float64)
    ends = lower.cumsum(0)
    num_pairs = int(ends[-1]) if ends.numel() else 0
    # pair number k of row i (counted from ends[i] - lower[i]) pairs it with the sorted row start[i] + k
    first_partner = start - ends + lower
    correct, total = zeros.clone(), zeros.clone()
    for first in range(0, num_pairs, PAIR_CHUNK):
        pair = torch.arange(first, min(first + PAIR_CHUNK, num_pairs), device=preds.device)
        hi = torch.searchsorted(ends, pair, right=True)  # the row of the higher label
        lo = first_partner[hi] + pair  # its partner, a lower label of its session
        p_hi, p_lo = p_sorted[hi], p_sorted[lo]
        credit = (p_hi > p_lo).to(torch.float64) + 0.5 * (p_hi == p_lo).to(torch.float64)
        pair_weight = w_sorted[hi] + w_sorted[lo] if weight_pairs else torch.ones_like(credit)
        task = task_sorted[hi]
        correct.index_add_(0, task, credit * pair_weight)
        total.index_add_(0, task, pair_weight)
    return correct, total, valid, effective_count, batches


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
