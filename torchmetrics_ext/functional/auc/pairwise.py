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


def _run_starts(*keys: Tensor) -> Tensor:
    """Boolean flags: ``True`` at index 0 and where any key differs from the previous element."""
    new = torch.zeros(keys[0].shape, dtype=torch.bool, device=keys[0].device)
    new[:1] = True
    for key in keys:
        new[1:] |= key[1:] != key[:-1]
    return new


def _tied_pair_weight(
    run_id: Tensor, run_task: Tensor, weights: Tensor, num_tasks: int
) -> tuple[Tensor, Tensor]:
    r"""Per task, the weight of pairs inside a run and of pairs across runs.

    Inside: :math:`\sum_{\text{runs}} \sum_{i<j \in \text{run}} w_i w_j = \sum (S^2 - Q) / 2`;
    across: :math:`((\sum S)^2 - \sum S^2) / 2`, exactly 0 when a task has a single run.
    ``run_id`` in ``[0, R)`` labels every sample's run, ``run_task`` (length ``R``) each run's task.
    """
    s = weights.new_zeros(run_task.numel()).index_add_(0, run_id, weights)
    q = weights.new_zeros(run_task.numel()).index_add_(0, run_id, weights * weights)
    inside = weights.new_zeros(num_tasks).index_add_(0, run_task, (s * s - q) / 2)
    task_sum = weights.new_zeros(num_tasks).index_add_(0, run_task, s)
    across = (task_sum * task_sum - weights.new_zeros(num_tasks).index_add_(0, run_task, s * s)) / 2
    return inside, across


def _runs(new: Tensor, task_of: Tensor) -> tuple[Tensor, Tensor]:
    """Run ids of every element and the task of every run, from run-start flags."""
    return torch.cumsum(new, 0) - 1, task_of[new]


def _per_task(values: Tensor, task: Tensor | None, num_tasks: int) -> Tensor:
    """Per-task sums of ``values`` (``task is None`` means a single task)."""
    if task is None:
        return values.sum().reshape(1)
    return values.new_zeros(num_tasks).index_add_(0, task, values)


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
    y_new = torch.ones_like(y_sorted, dtype=torch.bool)
    y_new[:, 1:] = y_sorted[:, 1:] != y_sorted[:, :-1]
    dense = torch.cumsum(y_new, -1) - 1
    num_bits = int(dense[:, -1].max()).bit_length()  # bits of the largest rank K - 1
    p_sorted, order = torch.sort(torch.gather(preds, -1, y_order), dim=-1, stable=True)
    w = torch.gather(torch.gather(w2d, -1, y_order), -1, order).reshape(-1)
    task_of = torch.arange(num_tasks, device=device).repeat_interleave(n)
    key = (task_of << num_bits) | torch.gather(dense, -1, order).reshape(-1)

    # ties in prediction, and in (prediction, label): contiguous runs of this order
    p_new = _run_starts(task_of, p_sorted.reshape(-1))
    tied_preds_all, _ = _tied_pair_weight(*_runs(p_new, task_of), w, num_tasks)
    tied_both, _ = _tied_pair_weight(*_runs(p_new | _run_starts(key), task_of), w, num_tasks)
    # ties in label: the key is the run id
    key_task = torch.arange(num_tasks, device=device).repeat_interleave(1 << num_bits)
    tied_target_all, different_labels = _tied_pair_weight(key, key_task, w, num_tasks)
    total = different_labels + tied_target_all  # all pairs of distinct samples, from the same sums

    # one pass per bit of the rank, top bit first
    m = key.numel()
    g_new = torch.empty(m, dtype=torch.bool, device=device)
    g_new[0] = True
    positions = torch.arange(m, device=device)
    discordant, lower_earlier = zeros.clone(), zeros.clone()
    for b in range(num_bits - 1, -1, -1):
        high = key >> (b + 1)
        torch.ne(high[1:], high[:-1], out=g_new[1:])
        group = torch.cumsum(g_new, 0) - 1
        starts = torch.nonzero(g_new).reshape(-1)
        bit = (key >> b) & 1
        w1 = w * bit
        w0 = w - w1
        inc1, inc0 = torch.cumsum(w1, 0), torch.cumsum(w0, 0)
        # bit-1 (bit-0) weight of the earlier members of j's group: S_j minus S at the group
        # start (S exclusive; w0_j * w1_j = 0, so the inclusive S_j will do). Exactly 0 when
        # there is none, so a perfect (reversed) order gets exactly D = 0 (C = 0).
        ones_earlier = inc1 - (inc1[starts] - w1[starts])[group]
        zeros_earlier = inc0 - (inc0[starts] - w0[starts])[group]
        if num_tasks == 1:
            discordant += torch.dot(w0, ones_earlier)
            lower_earlier += torch.dot(w1, zeros_earlier)
        else:
            task = key >> num_bits
            discordant += _per_task(w0 * ones_earlier, task, num_tasks)
            lower_earlier += _per_task(w1 * zeros_earlier, task, num_tasks)
        # stable partition of the whole array by the bit: zeros first, then ones;
        # new position = j - ones_before for a zero, num_zeros + ones_before for a one
        ones_inc = torch.cumsum(bit, 0)
        num_zeros = m - int(ones_inc[-1])
        new_pos = positions - ones_inc
        new_pos.add_(bit * (ones_inc * 2 - positions + (num_zeros - 1)))
        key = torch.empty_like(key).scatter_(0, new_pos, key)
        w = torch.empty_like(w).scatter_(0, new_pos, w)

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
    warn_undefined(
        undefined, "RegressionAUC", "no pair of samples with different labels (and non-zero weight)"
    )
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
