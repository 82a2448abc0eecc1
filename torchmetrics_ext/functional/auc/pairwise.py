r"""Pairwise concordance of real-valued labels: regression AUC and XAUC, in O(N log N).

Both metrics look at every pair of samples ``i < j`` of one task, weighted by
:math:`w_i w_j`, and sort it into one of five classes by the signs of
:math:`\Delta p = p_i - p_j` and :math:`\Delta y = y_i - y_j`:

====================  ==========================================  =====================
class                 condition                                   weighted total
====================  ==========================================  =====================
concordant            :math:`\Delta p\,\Delta y > 0`              :math:`C`
discordant            :math:`\Delta p\,\Delta y < 0`              :math:`D`
prediction tie only   :math:`\Delta p = 0,\ \Delta y \ne 0`       :math:`T_p`
label tie only        :math:`\Delta p \ne 0,\ \Delta y = 0`       :math:`T_y`
tie in both           :math:`\Delta p = 0,\ \Delta y = 0`         :math:`T_{py}`
====================  ==========================================  =====================

with :math:`P = C + D + T_p + T_y + T_{py} = \sum_{i<j} w_i w_j`. Then

.. math::
    \mathrm{RegressionAUC} = \frac{C + \tfrac12 T_p}{C + D + T_p}, \qquad
    \mathrm{XAUC} = \frac{C + T_{py}}{P}.

The kernel :func:`_pairwise_counts` gets all five totals of every task at once without a
Python loop over samples or tasks: one sort by prediction, one sort for dense label ranks,
then a loop over the ``ceil(log2 K)`` bits of the label rank (``K`` distinct labels) in which
each level is a couple of dozen O(N) shift/cumsum/dot/scatter passes (a wavelet matrix).
Total O(N log N) time, O(N) extra memory.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from torchmetrics_ext.utilities.checks import format_pointwise
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["regression_auc", "xauc"]


class PairCounts(NamedTuple):
    """Weighted pair totals per task, each a float64 ``(T,)`` tensor (see the module docstring)."""

    concordant: Tensor
    discordant: Tensor
    tied_preds: Tensor
    tied_target: Tensor
    tied_both: Tensor
    total: Tensor
    different_labels: Tensor  # C + D + T_p, exactly 0 when a task has a single label


def _tied_pair_weight(
    run_id: Tensor, run_task: Tensor, num_runs: int, weights: Tensor, num_tasks: int
) -> tuple[Tensor, Tensor]:
    r"""Per task, the weight of pairs inside a run and of pairs across runs.

    Inside: :math:`\sum_{\text{runs}} \sum_{i<j \in \text{run}} w_i w_j = \sum (S^2 - Q) / 2`;
    across: :math:`((\sum S)^2 - \sum S^2) / 2`, exactly 0 when a task has a single run.
    ``run_id`` in ``[0, num_runs)`` labels every sample's run, ``run_task`` each run's task.
    """
    s = weights.new_zeros(num_runs).index_add_(0, run_id, weights)
    q = weights.new_zeros(num_runs).index_add_(0, run_id, weights * weights)
    inside = weights.new_zeros(num_tasks).index_add_(0, run_task, (s * s - q) / 2)
    task_sum = weights.new_zeros(num_tasks).index_add_(0, run_task, s)
    across = (task_sum * task_sum - weights.new_zeros(num_tasks).index_add_(0, run_task, s * s)) / 2
    return inside, across


def _row_runs(new: Tensor) -> tuple[Tensor, Tensor, int]:
    """Run ids, the task of every run and the run count, from ``(T, N)`` run-start flags."""
    run_id = torch.cumsum(new.reshape(-1), 0)
    run_id -= 1
    run_task = torch.arange(new.shape[0], device=new.device).repeat_interleave(new.sum(-1))
    return run_id, run_task, int(run_task.numel())


def _row_starts(values: Tensor) -> Tensor:
    """``(T, N)`` flags: ``True`` in column 0 and where a value differs from its left neighbour."""
    new = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    torch.ne(values[:, 1:], values[:, :-1], out=new[:, 1:])
    return new


def _per_task(values: Tensor, task: Tensor | None, num_tasks: int) -> Tensor:
    """Per-task sums of ``values`` (``task is None`` means a single task)."""
    if task is None:
        return values.sum().reshape(1)
    return values.new_zeros(num_tasks).index_add_(0, task, values)


def _wavelet_counts(key: Tensor, w: Tensor, num_bits: int, num_tasks: int) -> tuple[Tensor, Tensor]:
    """Per task ``D`` and ``C + T_p`` (see :func:`_pairwise_counts`); ``key`` and ``w`` are consumed.

    Every level reuses the same dozen O(N) buffers (``out=`` and in-place ops); a level only
    allocates its group starts.
    """
    m = key.numel()
    device = key.device
    discordant = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    lower_earlier = torch.zeros_like(discordant)
    if num_bits == 0:
        return discordant, lower_earlier
    positions = torch.arange(m, device=device)
    g_new = torch.empty(m, dtype=torch.bool, device=device)
    g_new[0] = True
    key_buf, high, group, bit = (torch.empty_like(key) for _ in range(4))
    w_buf, w1, w0, inc1, inc0, earlier = (torch.empty_like(w) for _ in range(6))
    offsets_buf = w.new_zeros(m + 1)  # [0] stays 0: the dummy offset of 1-based group ids
    for b in range(num_bits - 1, -1, -1):
        # groups: equal key >> (b + 1), contiguous; ids are 1-based (offset 0 is a dummy)
        torch.bitwise_right_shift(key, b + 1, out=high)
        torch.ne(high[1:], high[:-1], out=g_new[1:])
        torch.cumsum(g_new, 0, out=group)
        starts = torch.nonzero(g_new).reshape(-1)
        torch.bitwise_right_shift(key, b, out=bit)
        bit.bitwise_and_(1)
        torch.mul(w, bit, out=w1)
        torch.sub(w, w1, out=w0)
        torch.cumsum(w1, 0, out=inc1)
        torch.cumsum(w0, 0, out=inc0)
        task = None if num_tasks == 1 else key >> num_bits
        # bit-1 (bit-0) weight of the earlier members of j's group: S_j minus S at the group
        # start (S exclusive; w0_j * w1_j = 0, so the inclusive S_j will do). Exactly 0 when
        # there is none, so a perfect (reversed) order gets exactly D = 0 (C = 0).
        offsets = offsets_buf[: starts.numel() + 1]
        for inc, own, other, acc in ((inc1, w1, w0, discordant), (inc0, w0, w1, lower_earlier)):
            torch.index_select(inc, 0, starts, out=offsets[1:])
            offsets[1:] -= own[starts]
            torch.index_select(offsets, 0, group, out=earlier)
            torch.sub(inc, earlier, out=earlier)
            if task is None:
                acc += torch.dot(other, earlier)
            else:
                acc += _per_task(other * earlier, task, num_tasks)
        # stable partition of the whole array by the bit: zeros first, then ones;
        # new position = j - ones_before for a zero, num_zeros + ones_before for a one
        ones_inc = torch.cumsum(bit, 0, out=high)
        num_zeros = m - int(ones_inc[-1])
        new_pos = torch.sub(positions, ones_inc, out=group)
        new_pos.add_(ones_inc.mul_(2).sub_(positions).add_(num_zeros - 1).mul_(bit))
        key_buf.scatter_(0, new_pos, key)
        w_buf.scatter_(0, new_pos, w)
        key, key_buf, w, w_buf = key_buf, key, w_buf, w
    return discordant, lower_earlier


def _pairwise_counts(preds: Tensor, target: Tensor, weights: Tensor | None) -> PairCounts:
    r"""Weighted pair totals of every task; inputs are float64 ``(T, N)`` (weights also ``(1, N)``).

    Algorithm (a wavelet matrix over the label ranks): replace labels by dense ranks ``r`` in
    ``[0, K)``, form ``key = task << B | r`` (``B`` bits) and order the samples by (task,
    prediction, rank). Then for each bit ``b`` of ``r``, top first: samples with the same
    ``key >> (b + 1)`` (same task, same higher label bits) form contiguous groups that keep the
    (prediction, rank) order, because every previous level was a *stable* partition of the
    whole array by one bit. Two members of a group whose bit ``b`` differs have different
    labels, the one with bit 1 the larger, and every such pair is met at exactly one level.
    With exclusive weight cumsums ``S1`` of the bit-1 weights, the discordant weight of the
    level is :math:`\sum_j w^0_j (S1_j - S1_{g(j)})`: pairs whose earlier member (smaller
    prediction, or equal prediction and smaller rank) has the larger label; as an earlier
    member never has the same prediction and a larger label, prediction ties never land here
    but on the other side, :math:`\sum_j w^1_j (S0_j - S0_{g(j)}) = C + T_p` over all levels.
    A stable partition by the bit (a cumsum and a scatter) builds the next level. Ties in
    prediction, label and both come from run lengths; so do the exact totals ``P`` and
    ``C + D + T_p`` used to detect undefined values.
    """
    num_tasks, n = preds.shape
    device = preds.device
    zeros = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    if n == 0:
        return PairCounts(*(zeros.clone() for _ in PairCounts._fields))
    w2d = torch.ones_like(preds) if weights is None else weights.expand(num_tasks, n)
    # count with every task's weights scaled to sum 1 (tasks share one cumsum below, so no task's
    # scale swamps another's rounding), and scale the totals back at the end
    weight_sum = w2d.sum(-1)
    unscale = torch.where(weight_sum > 0, weight_sum, 1.0)
    w2d = w2d / unscale[:, None]

    # dense label ranks per task, then order by (prediction, rank): a stable sort of the
    # rank-ordered rows by prediction
    y_sorted, y_order = torch.sort(target, dim=-1)
    dense = torch.cumsum(_row_starts(y_sorted), -1)
    del y_sorted
    dense -= 1
    num_ranks = int(dense[:, -1].max()) + 1
    num_bits = (num_ranks - 1).bit_length()
    p_sorted, order = torch.sort(torch.gather(preds, -1, y_order), dim=-1, stable=True)
    w = torch.gather(torch.gather(w2d, -1, y_order), -1, order).reshape(-1)
    del y_order, w2d
    rank = torch.gather(dense, -1, order)
    del dense, order

    # ties in prediction, and in (prediction, label): contiguous runs of this order
    p_new = _row_starts(p_sorted)
    del p_sorted
    tied_preds_all, _ = _tied_pair_weight(*_row_runs(p_new), w, num_tasks)
    p_new[:, 1:] |= rank[:, 1:] != rank[:, :-1]
    tied_both, _ = _tied_pair_weight(*_row_runs(p_new), w, num_tasks)
    del p_new
    # ties in label: run id = task * num_ranks + rank
    task_col = torch.arange(num_tasks, device=device)[:, None]
    label_run = (rank + task_col * num_ranks).reshape(-1)
    label_task = torch.arange(num_tasks, device=device).repeat_interleave(num_ranks)
    tied_target_all, different_labels = _tied_pair_weight(label_run, label_task, num_tasks * num_ranks, w, num_tasks)
    del label_run, label_task
    total = different_labels + tied_target_all  # all pairs of distinct samples, from the same sums
    key = ((task_col << num_bits) | rank).reshape(-1)
    del rank
    discordant, lower_earlier = _wavelet_counts(key, w, num_bits, num_tasks)

    tied_preds = tied_preds_all - tied_both
    tied_target = tied_target_all - tied_both
    # earlier members with a smaller label: concordant or tied in prediction (clamped: rounding
    # must not make C negative)
    concordant = (lower_earlier - tied_preds).clamp(min=0.0)
    scale = unscale * unscale
    counts = (concordant, discordant, tied_preds, tied_target, tied_both, total, different_labels)
    return PairCounts(*(value * scale for value in counts))


def _regression_auc_compute(counts: PairCounts) -> Tensor:
    """``(C + T_p / 2) / (C + D + T_p)``; ``nan`` with a warning where no pair has different labels."""
    undefined = counts.different_labels <= 0  # exact (run sums), unlike the sum of the parts
    denom = counts.concordant + counts.discordant + counts.tied_preds
    warn_undefined(undefined, "RegressionAUC", "no pair of samples with different labels (and non-zero weight)")
    value = (counts.concordant + 0.5 * counts.tied_preds) / torch.where(undefined, 1.0, denom)
    return torch.where(undefined, torch.nan, value)


def _xauc_compute(counts: PairCounts) -> Tensor:
    """``(C + T_py) / P``; ``nan`` with a warning where there is no pair of non-zero weight."""
    undefined = counts.total <= 0  # exact (run sums), unlike the sum of the parts
    warn_undefined(undefined, "XAUC", "fewer than two samples with non-zero weight")
    parts = counts.concordant + counts.discordant + counts.tied_preds + counts.tied_target + counts.tied_both
    value = (counts.concordant + counts.tied_both) / torch.where(undefined, 1.0, parts)
    return torch.where(undefined, torch.nan, value)


def _format(
    preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    p, t, w = format_pointwise(
        preds, target, weights, None, preds_domain="real", target_domain="real", validate=validate
    )
    return p, t, w  # type: ignore[return-value]


def regression_auc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    validate_args: bool = True,
) -> Tensor:
    r"""Regression AUC (weighted C-index): the share of pairs with different labels ordered alike.

    .. math::
        \mathrm{RAUC} = \frac{\sum_{i<j,\ y_i \ne y_j} w_i w_j
        \left([\,(p_i - p_j)(y_i - y_j) > 0\,] + \tfrac12 [\,p_i = p_j\,]\right)}
        {\sum_{i<j,\ y_i \ne y_j} w_i w_j}

    Pairs with equal labels are excluded; a tie in predictions counts one half. With labels in
    {0, 1} this is exactly the (weighted) ROC AUC. Computed in O(N log N) time and O(N) memory.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite real predictions.
        target: finite real labels, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)`` (shared by
            all tasks); a pair weighs :math:`w_i w_j`.
        validate_args: check inputs (shapes, devices, finite values, weights >= 0) first.

    Returns:
        A float64 scalar for 1-D input, ``(T,)`` otherwise.

    Raises:
        TypeError: non-tensor inputs or non-floating ``preds``.
        ValueError: mismatched shapes or devices, NaN/inf values, negative weights.

    Note:
        Undefined (``nan`` plus ``UndefinedMetricWarning``) when no pair with different labels
        has non-zero weight (e.g. all labels equal). TorchRec's RAUC instead divides by all
        pairs (label ties count as concordant), gives prediction ties full credit and ignores
        weights; see ``docs/pairwise_auc.md``.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import regression_auc
        >>> preds = torch.tensor([0.1, 0.3, 0.5, 0.5])
        >>> target = torch.tensor([0.0, 1.0, 1.0, 2.0])
        >>> regression_auc(preds, target)  # 4 concordant + one prediction tie (1/2) over 5 pairs
        tensor(0.9000, dtype=torch.float64)
    """
    single = preds.ndim == 1
    p, t, w = _format(preds, target, weights, validate_args)
    value = _regression_auc_compute(_pairwise_counts(p, t, w))
    return value.squeeze(0) if single else value


def xauc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    validate_args: bool = True,
) -> Tensor:
    r"""XAUC: the weighted share of all pairs whose predictions and labels order the same way.

    .. math::
        \mathrm{XAUC} = \frac{\sum_{i<j} w_i w_j\,
        [\,\operatorname{sign}(p_i - p_j) = \operatorname{sign}(y_i - y_j)\,]}{\sum_{i<j} w_i w_j}

    TorchRec's tie rule: a pair tied in both prediction and label agrees; a pair tied in exactly
    one of them disagrees. Unlike :func:`regression_auc`, pairs with equal labels stay in the
    denominator, so XAUC also rewards giving equal scores to equal labels (e.g. the many zero
    watch-times of a feed). Without ties both equal :math:`(1 + \tau_a) / 2` (Kendall's tau-a).

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite real predictions.
        target: finite real labels, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``; a pair of
            distinct samples weighs :math:`w_i w_j`.
        validate_args: check inputs first.

    Returns:
        A float64 scalar for 1-D input, ``(T,)`` otherwise.

    Raises:
        TypeError: non-tensor inputs or non-floating ``preds``.
        ValueError: mismatched shapes or devices, NaN/inf values, negative weights.

    Note:
        Undefined (``nan`` plus ``UndefinedMetricWarning``) with fewer than two samples of
        non-zero weight (TorchRec returns 0). Pairs are between distinct samples, so an integer
        weight ``k`` is not the same as ``k`` copies of a row: the copies would add
        ``k (k - 1) / 2`` pairs tied in both. TorchRec only pairs samples of the same batch, in
        an N x N matrix; here every pair of the accumulated data counts, in O(N log N).

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import xauc
        >>> preds = torch.tensor([0.1, 0.3, 0.5, 0.5])
        >>> target = torch.tensor([0.0, 1.0, 1.0, 2.0])
        >>> xauc(preds, target)  # 4 of 6 pairs agree; one label tie and one prediction tie do not
        tensor(0.6667, dtype=torch.float64)
    """
    single = preds.ndim == 1
    p, t, w = _format(preds, target, weights, validate_args)
    value = _xauc_compute(_pairwise_counts(p, t, w))
    return value.squeeze(0) if single else value
