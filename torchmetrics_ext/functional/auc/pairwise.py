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
each level is a couple of dozen O(N) shift/cumsum/scatter passes (a wavelet matrix).
Total O(N log N) time, O(N) extra memory. No pair total is the difference of two larger ones
(which cancels when one sample carries almost all the weight), and weights are scaled by a
power of two per task (:func:`_pair_unit`), so the values are within a few 1e-16 (absolute) of
the exact ones for any finite weight scale and any weight ratio up to the limits of one float64
scale: XAUC while the heaviest weight is at most :math:`2^{2042 - 2L}` times the second heaviest
(:math:`N < 2^L`; 1e602 at a million samples), RegressionAUC while its decisive weights are also
within about :math:`2^{1531 - 2L}` (1e449) of each other. Only weights at both ends of float64
in one task go beyond; the lightest decisive weights may then count as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from torchmetrics_ext.functional.pointwise import _format_real
from torchmetrics_ext.utilities.checks import check_flag, checks_validate_args, single_task
from torchmetrics_ext.utilities.summation import power_of_two
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["regression_auc", "xauc"]


class PairCounts(NamedTuple):
    """Weighted pair totals per task, each a float64 ``(T,)`` tensor (see the module docstring).

    In units of the square of a per-task power of two when ``_pairwise_counts(..., relative=True)``.
    """

    concordant: Tensor
    discordant: Tensor
    tied_preds: Tensor
    tied_target: Tensor
    tied_both: Tensor
    total: Tensor
    different_labels: Tensor  # C + D + T_p, exactly 0 when a task has a single label


def _pair_mass(x: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    r"""Per segment, :math:`\sum_{a<b} x_a x_b` over the non-negative ``x`` in it, with no cancellation.

    The textbook :math:`(S^2 - \sum x^2)/2` loses everything when one value carries almost all of
    :math:`S`: both terms are about :math:`M^2` and the result about :math:`M (S - M)`. Here, with
    :math:`M` the segment's largest value (``k`` copies) and :math:`s, q` the sum and sum of squares
    of the values below it, the mass is :math:`\binom k2 M^2 + k M s + (s^2 - q)/2`: sums of
    products of non-negative numbers, but for the last term, whose rounding (about
    :math:`\epsilon s^2`) is at most :math:`2\epsilon` times the mass (if :math:`s \le M`,
    :math:`s^2 \le M s`; otherwise every value is below :math:`M < s`, so :math:`q \le M s` and
    :math:`(s^2 - q)/2 \ge s (s - M)/2`). Exactly 0 for a segment with fewer than two non-zero
    values; exact counts for unit values. ``segment`` holds ids in ``[0, num_segments)``.
    """
    top = x.new_zeros(num_segments).scatter_reduce_(0, segment, x, "amax")
    is_top = x == top[segment]
    below = torch.where(is_top, 0.0, x)
    k = x.new_zeros(num_segments).index_add_(0, segment, is_top.to(x.dtype))
    s = x.new_zeros(num_segments).index_add_(0, segment, below)
    q = x.new_zeros(num_segments).index_add_(0, segment, below * below)
    return top * (top * (k * (k - 1) / 2) + k * s) + ((s * s - q) / 2).clamp(min=0.0)


def _row_starts(values: Tensor) -> Tensor:
    """``(T, N)`` flags: ``True`` in column 0 and where a value differs from its left neighbour."""
    new = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    torch.ne(values[:, 1:], values[:, :-1], out=new[:, 1:])
    return new


def _wavelet_counts(rank: Tensor, w: Tensor, num_bits: int) -> tuple[Tensor, Tensor]:
    """Per task ``C`` and ``D + T_p`` (see :func:`_pairwise_counts`); ``rank`` and ``w`` are ``(T, N)``, consumed.

    Every task is its own row: a cumulative sum never carries another task's weight, so a task's
    rounding is relative to its own pair weights. Every level reuses the same O(T·N) buffers
    (``out=`` and in-place ops); a level only allocates its group starts.
    """
    num_tasks, n = rank.shape
    device = rank.device
    higher_earlier = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    lower_earlier = torch.zeros_like(higher_earlier)
    if num_bits == 0:
        return lower_earlier, higher_earlier
    positions = torch.arange(n, device=device).expand(num_tasks, n)
    g_new = torch.empty(rank.shape, dtype=torch.bool, device=device)
    g_new[:, 0] = True
    rank_buf, high, bit, new_pos_buf = (torch.empty_like(rank) for _ in range(4))
    group = torch.empty(rank.numel(), dtype=rank.dtype, device=device)
    w_buf, w1, w0, inc1, inc0, earlier = (torch.empty_like(w) for _ in range(6))
    offsets_buf = w.new_zeros(rank.numel() + 1)  # [0] stays 0: the dummy offset of 1-based group ids
    for b in range(num_bits - 1, -1, -1):
        # groups: equal rank >> (b + 1) within a row, contiguous; flat ids are 1-based (offset 0 is a dummy)
        torch.bitwise_right_shift(rank, b + 1, out=high)
        torch.ne(high[:, 1:], high[:, :-1], out=g_new[:, 1:])
        torch.cumsum(g_new.reshape(-1), 0, out=group)
        starts = torch.nonzero(g_new.reshape(-1)).reshape(-1)
        torch.bitwise_right_shift(rank, b, out=bit)
        bit.bitwise_and_(1)
        torch.mul(w, bit, out=w1)
        torch.sub(w, w1, out=w0)
        torch.cumsum(w1, -1, out=inc1)
        torch.cumsum(w0, -1, out=inc0)
        # bit-1 (bit-0) weight of the earlier members of j's group: S_j minus S at the group
        # start (S exclusive; w0_j * w1_j = 0, so the inclusive S_j will do). Exactly 0 when
        # there is none, so a perfect (reversed) order gets exactly D = 0 (C = 0).
        offsets = offsets_buf[: starts.numel() + 1]
        for inc, own, other, acc in ((inc1, w1, w0, higher_earlier), (inc0, w0, w1, lower_earlier)):
            torch.index_select(inc.reshape(-1), 0, starts, out=offsets[1:])
            offsets[1:] -= own.reshape(-1)[starts]
            torch.index_select(offsets, 0, group, out=earlier.reshape(-1))
            torch.sub(inc, earlier, out=earlier)
            acc += earlier.mul_(other).sum(-1)
        # stable partition of every row by the bit: zeros first, then ones;
        # new position = j - ones_before for a zero, num_zeros + ones_before for a one
        ones_inc = torch.cumsum(bit, -1, out=high)
        num_zeros = n - ones_inc[:, -1:]
        new_pos = torch.sub(positions, ones_inc, out=new_pos_buf)
        new_pos.add_(ones_inc.mul_(2).sub_(positions).add_(num_zeros - 1).mul_(bit))
        rank_buf.scatter_(1, new_pos, rank)
        w_buf.scatter_(1, new_pos, w)
        rank, rank_buf, w, w_buf = rank_buf, rank, w_buf, w
    return lower_earlier, higher_earlier


def _pair_unit(w: Tensor, target: Tensor) -> Tensor:
    r"""Per task, the power of two :math:`u` that the weights are divided by (exactly) before any pair is formed.

    Pair totals then come in units of :math:`u^2`. What must not underflow is what decides the
    values: the two heaviest weights :math:`w_{(1)} \ge w_{(2)}` (XAUC's denominator is at least
    their pair :math:`H = w_{(1)} w_{(2)}`) and the heaviest weight :math:`p` of a label other
    than the heaviest sample's (RegressionAUC's is at least :math:`H_d = w_{(1)} p`, its heaviest
    pair of different labels). What must not overflow is every cumulative sum of weights and
    every pair total. So, with :math:`N < 2^L` samples, :math:`u` keeps
    :math:`N^2 w_{(1)}/u` and :math:`N^4 H/u^2` below :math:`2^{1021}` and, where that allows,
    :math:`w_{(2)}/u`, :math:`p/u` and :math:`H_d/u^2` normal floats (:math:`\ge 2^{-1022}`),
    aiming at :math:`u^2 \approx \sqrt{H H_d}`. Both are possible for XAUC unless
    :math:`w_{(1)}/w_{(2)} > 2^{2042 - 2L}` (1e602 at :math:`N = 10^6`) and for RegressionAUC
    unless also :math:`w_{(1)}/p > 2^{2042 - 2L}`, :math:`w_{(2)}/p > 2^{2041 - 4L}` or
    :math:`\sqrt{w_{(1)} w_{(2)}}/p > 2^{1531 - 2L}` (1e449): weights at both ends of float64
    in one task, where the lightest decisive weights may count as 0. Weights of similar size
    give :math:`u` within a factor 2 of :math:`w_{(1)}`; the values do not depend on :math:`u`
    otherwise (a power of two scales every total exactly). Three O(N) passes (a top-2, one
    comparison and one masked max) and no host read.
    """
    n = w.shape[-1]
    top, where = torch.topk(w, min(2, n), dim=-1)
    heaviest, second = top[:, 0], top[:, -1]
    p = torch.where(target != torch.gather(target, -1, where[:, :1]), w, 0.0).amax(-1)
    # 2^(e-1) <= x < 2^e; a missing second weight (or other label) takes the exponent before it
    e1 = torch.frexp(heaviest)[1]
    e2 = torch.where(second > 0, torch.frexp(second)[1], e1)
    e3 = torch.where(p > 0, torch.frexp(p)[1], e2)
    log_n = max(n, 1).bit_length()  # n < 2^log_n

    def floor_half(x: Tensor) -> Tensor:
        return torch.div(x, 2, rounding_mode="floor")

    aim = torch.div(2 * e1 + e2 + e3, 4, rounding_mode="floor") - 1  # u^2 ~ sqrt(H * H_d)
    # p/u, w2/u (e3 <= e2) and H_d/u^2 normal ...
    high = torch.minimum(e3 + 1021, floor_half(e1 + e3 + 1020))
    # ... unless that would overflow n^2 * w1/u or n^4 * H/u^2 (2^1021)
    low = torch.maximum(e1 + 2 * log_n - 1021, floor_half(e1 + e2 + 4 * log_n - 1020))
    return power_of_two(torch.maximum(torch.minimum(aim, high), low), heaviest.dtype)


def _pairwise_counts(preds: Tensor, target: Tensor, weights: Tensor | None, *, relative: bool = False) -> PairCounts:
    r"""Weighted pair totals of every task; inputs are float64 ``(T, N)`` (weights also ``(1, N)``).

    Algorithm (a wavelet matrix over the label ranks, one per task row): replace labels by dense
    ranks ``r`` in ``[0, K)`` and order every row by (prediction, descending rank). Then for each
    bit ``b`` of ``r``, top first: samples with the same ``r >> (b + 1)`` (same higher label bits)
    form contiguous groups that keep that order, because every previous level was a *stable*
    partition of the row by one bit. Two members of a group whose bit ``b`` differs have
    different labels, the one with bit 1 the larger, and every such pair is met at exactly one
    level. With exclusive weight cumsums ``S0`` of the bit-0 weights, :math:`\sum_j w^1_j (S0_j -
    S0_{g(j)})` is the weight of pairs whose earlier member has the smaller label: as equal
    predictions come in descending label order, the earlier one has the smaller prediction, so
    these are exactly the concordant pairs :math:`C`; the other side,
    :math:`\sum_j w^0_j (S1_j - S1_{g(j)})`, is :math:`D + T_p`. A stable partition by the bit (a
    cumsum and a scatter) builds the next level. Tie totals come from the runs of equal
    prediction, equal (prediction, label) and equal label by :func:`_pair_mass`: :math:`T_{py}`
    within (prediction, label) groups, :math:`T_p` across such groups of one prediction,
    :math:`T_y` across such groups of one label, and the pairs of different labels across label
    runs (exactly 0 for a single label). No pair total is the difference of two larger sums,
    but :math:`D = (D + T_p) - T_p` (clamped at 0).

    Each task's weights are first divided by a power of two (exact; :func:`_pair_unit`) chosen so
    that the pairs that decide both values neither underflow nor overflow, whatever the weight
    ratios: with ``relative=True`` the totals stay in those units (ratios need no more), else
    they are scaled back (which may under/overflow for pair weights beyond float64's range).

    Not differentiable: the inputs are read detached (the kernels write with ``out=``, which
    autograd refuses for tensors that require grad, such as weights from a model).
    """
    preds, target = preds.detach(), target.detach()
    weights = None if weights is None else weights.detach()
    num_tasks, n = preds.shape
    device = preds.device
    zeros = torch.zeros(num_tasks, dtype=torch.float64, device=device)
    if n == 0:
        return PairCounts(*(zeros.clone() for _ in PairCounts._fields))
    if weights is None:
        w2d, unit = torch.ones_like(preds), torch.ones_like(zeros)
    else:
        w2d = weights.expand(num_tasks, n)
        unit = _pair_unit(w2d, target)
        w2d = w2d / unit[:, None]

    # dense label ranks per task, then order by (prediction, descending rank): a stable sort of
    # the rows in descending rank order by prediction
    y_sorted, y_order = torch.sort(target, dim=-1)
    dense = torch.cumsum(_row_starts(y_sorted), -1)
    del y_sorted
    dense -= 1
    num_ranks = int(dense[:, -1].max()) + 1
    num_bits = (num_ranks - 1).bit_length()
    y_order, dense = y_order.flip(-1), dense.flip(-1)
    p_sorted, order = torch.sort(torch.gather(preds, -1, y_order), dim=-1, stable=True)
    w = torch.gather(torch.gather(w2d, -1, y_order), -1, order)
    del y_order, w2d
    rank = torch.gather(dense, -1, order)
    del dense, order

    # (prediction, label) groups: contiguous runs of this order, with their prediction run and label
    p_new = _row_starts(p_sorted)
    del p_sorted
    pred_run = torch.cumsum(p_new.reshape(-1), 0)
    pl_new = p_new
    pl_new[:, 1:] |= rank[:, 1:] != rank[:, :-1]
    group = torch.cumsum(pl_new.reshape(-1), 0)
    group -= 1
    starts = torch.nonzero(pl_new.reshape(-1)).reshape(-1)
    del pl_new
    num_groups = int(starts.numel())
    group_w = w.new_zeros(num_groups).index_add_(0, group, w.reshape(-1))
    group_task = torch.div(starts, n, rounding_mode="floor")
    group_pred_run = pred_run[starts] - 1
    num_pred_runs = int(pred_run[-1])
    del pred_run
    group_label = group_task * num_ranks + rank.reshape(-1)[starts]
    del starts

    def per_task(values: Tensor, task: Tensor) -> Tensor:
        return zeros.clone().index_add_(0, task, values)

    tied_both = per_task(_pair_mass(w.reshape(-1), group, num_groups), group_task)
    del group
    pred_run_task = torch.empty(num_pred_runs, dtype=group_task.dtype, device=device)
    pred_run_task.scatter_(0, group_pred_run, group_task)
    tied_preds = per_task(_pair_mass(group_w, group_pred_run, num_pred_runs), pred_run_task)
    num_labels = num_tasks * num_ranks
    tied_target = _pair_mass(group_w, group_label, num_labels).reshape(num_tasks, num_ranks).sum(-1)
    label_w = w.new_zeros(num_labels).index_add_(0, group_label, group_w)
    label_task = torch.arange(num_tasks, device=device).repeat_interleave(num_ranks)
    different_labels = _pair_mass(label_w, label_task, num_tasks)
    total = different_labels + tied_target + tied_both  # all pairs of distinct samples
    del group_w, group_task, group_pred_run, group_label, label_w, label_task

    concordant, discordant_or_tied = _wavelet_counts(rank, w, num_bits)
    discordant = (discordant_or_tied - tied_preds).clamp(min=0.0)
    counts = PairCounts(concordant, discordant, tied_preds, tied_target, tied_both, total, different_labels)
    if relative:
        return counts
    scale = unit * unit
    return PairCounts(*(value * scale for value in counts))


def _no_weight(preds: Tensor, weights: Tensor | None) -> Callable[[], Tensor]:
    """The tasks of ``(T, N)`` inputs without a sample of non-zero weight (made only where a value is undefined)."""
    if weights is None:
        return lambda: torch.full(preds.shape[:1], preds.shape[-1] == 0, dtype=torch.bool, device=preds.device)
    return lambda: ~(weights > 0).any(-1)


def _regression_auc_compute(counts: PairCounts, unseen: Callable[[], Tensor] | None = None) -> Tensor:
    """``(C + T_p / 2) / (C + D + T_p)``; ``nan`` with a warning where no pair has different labels.

    ``unseen`` tells the tasks that saw no weight at all (:func:`_no_weight`), warned for with ``NO_SAMPLES``.
    """
    undefined = counts.different_labels <= 0  # exact (run sums), unlike the sum of the parts
    denom = counts.concordant + counts.discordant + counts.tied_preds
    reason = "no pair of samples with different labels (and non-zero weight)"
    warn_undefined(undefined, "RegressionAUC", reason, unseen=unseen)
    value = (counts.concordant + 0.5 * counts.tied_preds) / torch.where(undefined, 1.0, denom)
    return torch.where(undefined, torch.nan, value)


def _xauc_compute(counts: PairCounts, unseen: Callable[[], Tensor] | None = None) -> Tensor:
    """``(C + T_py) / P``; ``nan`` with a warning where there is no pair of non-zero weight.

    ``unseen`` tells the tasks that saw no weight at all (:func:`_no_weight`), warned for with ``NO_SAMPLES``.
    """
    undefined = counts.total <= 0  # exact (run sums), unlike the sum of the parts
    warn_undefined(undefined, "XAUC", "fewer than two samples with non-zero weight", unseen=unseen)
    parts = counts.concordant + counts.discordant + counts.tied_preds + counts.tied_target + counts.tied_both
    value = (counts.concordant + counts.tied_both) / torch.where(undefined, 1.0, parts)
    return torch.where(undefined, torch.nan, value)


@checks_validate_args
def regression_auc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
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
        from_logits: ``preds`` are logits. The value depends on the order of the predictions
            alone, which the sigmoid keeps: the logits are ranked as given (a sigmoid that saturates
            would tie them), so the value is that of ``sigmoid(preds)`` wherever the sigmoid does not.
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

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import regression_auc
        >>> preds = torch.tensor([0.1, 0.3, 0.5, 0.5])
        >>> target = torch.tensor([0.0, 1.0, 1.0, 2.0])
        >>> regression_auc(preds, target)  # 4 concordant + one prediction tie (1/2) over 5 pairs
        tensor(0.9000, dtype=torch.float64)
    """
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = _format_real(preds, target, weights, validate_args)
    value = _regression_auc_compute(_pairwise_counts(p, t, w, relative=True), _no_weight(p, w))
    return value.squeeze(0) if single else value


@checks_validate_args
def xauc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
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
        from_logits: ``preds`` are logits. The value depends on the order of the predictions
            alone, which the sigmoid keeps: the logits are ranked as given (a sigmoid that saturates
            would tie them), so the value is that of ``sigmoid(preds)`` wherever the sigmoid does not.
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

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import xauc
        >>> preds = torch.tensor([0.1, 0.3, 0.5, 0.5])
        >>> target = torch.tensor([0.0, 1.0, 1.0, 2.0])
        >>> xauc(preds, target)  # 4 of 6 pairs agree; one label tie and one prediction tie do not
        tensor(0.6667, dtype=torch.float64)
    """
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = _format_real(preds, target, weights, validate_args)
    value = _xauc_compute(_pairwise_counts(p, t, w, relative=True), _no_weight(p, w))
    return value.squeeze(0) if single else value
