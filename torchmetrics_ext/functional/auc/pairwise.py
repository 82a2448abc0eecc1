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
each level is a handful of O(N) cumsum/gather/scatter passes (a wavelet-tree style radix
refinement). Total O(N log N) time, O(N) extra memory.
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


def _exclusive_cumsum(values: Tensor) -> Tensor:
    """``out[k] = values[:k].sum()`` for ``k = 0..len(values)`` (length ``len + 1``)."""
    return torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])


def _run_starts(*keys: Tensor) -> Tensor:
    """Boolean flags: ``True`` at index 0 and where any key differs from the previous element."""
    new = torch.zeros(keys[0].shape, dtype=torch.bool, device=keys[0].device)
    new[:1] = True
    for key in keys:
        new[1:] |= key[1:] != key[:-1]
    return new


def _tied_pair_weight(run_id: Tensor, run_task: Tensor, weights: Tensor, num_tasks: int) -> Tensor:
    r"""Per task :math:`\sum_{\text{runs}} \sum_{i<j \in \text{run}} w_i w_j = \sum (S^2 - Q) / 2`.

    ``run_id`` in ``[0, R)`` labels every sample's run, ``run_task`` (length ``R``) each run's task.
    """
    s = weights.new_zeros(run_task.numel()).index_add_(0, run_id, weights)
    q = weights.new_zeros(run_task.numel()).index_add_(0, run_id, weights * weights)
    return weights.new_zeros(num_tasks).index_add_(0, run_task, (s * s - q) / 2)


def _runs(new: Tensor, task_of: Tensor) -> tuple[Tensor, Tensor]:
    """Run ids of every element and the task of every run, from run-start flags."""
    return torch.cumsum(new, 0) - 1, task_of[new]


def _pairwise_counts(preds: Tensor, target: Tensor, weights: Tensor | None) -> PairCounts:
    """Weighted pair totals of every task; inputs are float64 ``(T, N)`` (weights also ``(1, N)``).

    Algorithm: replace labels by dense ranks ``r`` in ``[0, K)`` and order every task's samples
    by (prediction, rank). Then refine the order one bit of ``r`` at a time from the top: at the
    level of bit ``b``, samples are grouped by (task, ``r >> (b + 1)``) and keep the
    (prediction, rank) order inside each group. Two members of a group whose bit ``b`` differs
    have different labels, the one with bit 1 the larger, and every such pair is met at exactly
    one level. An exclusive weight cumsum gives, for each sample, the weight of the earlier group
    members with the other bit: earlier members with a larger label are discordant partners
    (an earlier member never has the same prediction and a larger label), earlier members with
    a smaller label are concordant partners or prediction ties. A stable partition by the bit
    (cumsum arithmetic and a scatter) builds the next level. Ties come from run lengths.
    """
    num_tasks, n = preds.shape
    device = preds.device
    zeros = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    if n == 0:
        return PairCounts(zeros, zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())
    w2d = torch.ones_like(preds) if weights is None else weights.expand(num_tasks, n)
    s, q = w2d.sum(-1), (w2d * w2d).sum(-1)
    total = (s * s - q) / 2  # all pairs of distinct samples

    # dense label ranks per task, then order by (prediction, rank): a stable sort of the
    # rank-ordered rows by prediction
    y_sorted, y_order = torch.sort(target, dim=-1)
    y_new = torch.ones_like(y_sorted, dtype=torch.bool)
    y_new[:, 1:] = y_sorted[:, 1:] != y_sorted[:, :-1]
    dense = torch.cumsum(y_new, -1) - 1
    num_bits = int(dense[:, -1].max()).bit_length()  # bits of the largest rank K - 1
    p_sorted, order = torch.sort(torch.gather(preds, -1, y_order), dim=-1, stable=True)
    rank = torch.gather(dense, -1, order).reshape(-1)
    w = torch.gather(torch.gather(w2d, -1, y_order), -1, order).reshape(-1)
    m = num_tasks * n
    task_of = torch.arange(num_tasks, device=device).repeat_interleave(n)

    # ties in prediction, and in (prediction, label): contiguous runs of this order
    p_flat = p_sorted.reshape(-1)
    p_new = _run_starts(task_of, p_flat)
    tied_preds_all = _tied_pair_weight(*_runs(p_new, task_of), w, num_tasks)
    tied_both = _tied_pair_weight(*_runs(p_new | _run_starts(rank), task_of), w, num_tasks)
    # ties in label: run ids straight from (task, rank)
    num_ranks = 1 << num_bits
    label_run = task_of * num_ranks + rank
    label_task = torch.arange(num_tasks, device=device).repeat_interleave(num_ranks)
    tied_target_all = _tied_pair_weight(label_run, label_task, w, num_tasks)

    # one pass per bit of the rank, top bit first
    positions = torch.arange(m, device=device)
    lower_earlier, higher_earlier = zeros.clone(), zeros.clone()
    for b in range(num_bits - 1, -1, -1):
        g_new = _run_starts(task_of, rank >> (b + 1))
        seg = torch.cumsum(g_new, 0) - 1
        starts = torch.nonzero(g_new).reshape(-1)
        g_start = starts[seg]
        bit = (rank >> b) & 1
        w1 = w * bit
        cs1, csw = _exclusive_cumsum(w1), _exclusive_cumsum(w)
        ones_w = cs1[:-1] - cs1[g_start]  # weight of earlier group members with bit 1
        all_w = csw[:-1] - csw[g_start]
        # task blocks stay contiguous (groups never cross tasks)
        higher_earlier += ((w - w1) * ones_w).view(num_tasks, n).sum(-1)
        lower_earlier += (w1 * (all_w - ones_w)).view(num_tasks, n).sum(-1)
        # stable partition by the bit inside each group: zeros first, then ones
        ones_ex = _exclusive_cumsum(bit)
        ones_before = ones_ex[:-1] - ones_ex[g_start]
        ends = torch.cat([starts[1:], starts.new_full((1,), m)])
        zeros_in_group = ((ends - starts) - (ones_ex[ends] - ones_ex[starts]))[seg]
        new_pos = torch.where(bit == 0, positions - ones_before, g_start + zeros_in_group + ones_before)
        rank = torch.empty_like(rank).scatter_(0, new_pos, rank)
        w = torch.empty_like(w).scatter_(0, new_pos, w)

    tied_preds = tied_preds_all - tied_both
    return PairCounts(
        concordant=lower_earlier - tied_preds,
        discordant=higher_earlier,
        tied_preds=tied_preds,
        tied_target=tied_target_all - tied_both,
        tied_both=tied_both,
        total=total,
    )


def _regression_auc_compute(counts: PairCounts) -> Tensor:
    """``(C + T_p / 2) / (C + D + T_p)``; ``nan`` with a warning where no pair has different labels."""
    denom = counts.concordant + counts.discordant + counts.tied_preds
    undefined = denom <= 0
    warn_undefined(undefined, "RegressionAUC", "no pair of samples with different labels (and non-zero weight)")
    value = (counts.concordant + 0.5 * counts.tied_preds) / torch.where(undefined, 1.0, denom)
    return torch.where(undefined, torch.nan, value)


def _xauc_compute(counts: PairCounts) -> Tensor:
    """``(C + T_py) / P``; ``nan`` with a warning where there is no pair of non-zero weight."""
    undefined = counts.total <= 0
    warn_undefined(undefined, "XAUC", "fewer than two samples with non-zero weight")
    value = (counts.concordant + counts.tied_both) / torch.where(undefined, 1.0, counts.total)
    return torch.where(undefined, torch.nan, value)


def _format(preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool) -> tuple[Tensor, Tensor, Tensor | None]:
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
    r"""Regression AUC (weighted concordance index): the share of label-ordered pairs the predictions order alike.

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
