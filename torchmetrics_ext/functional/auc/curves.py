r"""The ROC and precision-recall curves behind ``AUC`` and ``AUPRC``, exact or binned.

Both modes first reduce the data to *curve points*: per task, the distinct thresholds in
decreasing order with the positive and negative label weight scored exactly at each. The curves
are cumulative sums of those (float64):

.. math::
    TP_k = \sum_{j \le k} P_j, \quad FP_k = \sum_{j \le k} N_j, \qquad
    \mathrm{FPR}_k = FP_k / N, \quad \mathrm{TPR}_k = \mathrm{Recall}_k = TP_k / P, \quad
    \mathrm{Precision}_k = \frac{TP_k}{TP_k + FP_k}

* **exact**: one point per distinct score (compared as float32, as ``AUC`` does); samples of
  zero weight are absent. The curves equal scikit-learn's ``roc_curve(...,
  drop_intermediate=False)`` and ``precision_recall_curve``. Each threshold is a score as given
  (float64 scores keep their value in the functionals; for scores that tie as float32, the
  smallest), so ``preds >= threshold`` selects exactly the samples counted at that point.
* **binned**: one point per non-empty bin of the ``(2, T, B)`` histogram, the threshold being the
  bin's lower edge (as a probability, or a logit with ``from_logits``; with logit bins the first
  bin's is 0 or ``-inf`` because it also holds every score below the range; with
  ``bin_space="probability"`` bin ``b``'s is ``b / B``). It is the exact curve of the
  scores rounded to their bins.

The trapezoidal area under the ROC curve is ``AUC``; :math:`\sum_k (R_k - R_{k-1}) P_k` over the
precision-recall points is ``AUPRC``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc.binary import (
    DEFAULT_LOGIT_RANGE,
    _binned_update,
    _check_bins,
    _format_curve_inputs,
    _signed_weights,
)
from torchmetrics_ext.utilities.checks import checks_validate_args
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["precision_recall_curve", "roc_curve"]

Points = list[tuple[Tensor, Tensor, Tensor]]  # per task: (thresholds descending, positive, negative weight)
Curve = tuple[Tensor, Tensor, Tensor] | tuple[list[Tensor], list[Tensor], list[Tensor]]


def _exact_points(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int, device: torch.device | None = None
) -> Points:
    """Curve points per task from chunks of sample-major scores and signed weights (``AUC``'s exact states).

    Scores are compared as float32 (one point per distinct float32 score); each point's threshold
    is the smallest score of its run as given, so that ``scores >= threshold`` selects exactly the
    samples of that point and those above it (float64 scores that round to one float32 value
    share a point; the largest of the next run is below its smallest, as rounding keeps the order).

    Args:
        scores: chunks of scores, each viewable as ``(n_k, T)``: float32 (the metric's states) or
            float64 (a functional's float64 input, whose thresholds keep their float64 value).
        signed: the matching chunks of signed weights (``+w`` positive label, ``-w`` negative).
        num_tasks: ``T``.
        device: where the (empty) points of no chunk at all are made: the metric's device (the CPU
            when ``None``); with chunks, their device.
    """
    flat_scores = [chunk.reshape(-1, num_tasks) for chunk in scores]
    flat_signed = [chunk.reshape(-1, num_tasks) for chunk in signed]
    all_scores = torch.cat(flat_scores) if flat_scores else torch.zeros(0, num_tasks, device=device)
    all_signed = torch.cat(flat_signed) if flat_signed else torch.zeros(0, num_tasks, device=device)
    points = []
    for task in range(num_tasks):  # the few tasks; each is vectorised over its samples
        weight = all_signed[:, task].to(torch.float64)
        keep = weight != 0  # a zero-weight sample is an absent one
        given, weight = all_scores[:, task][keep], weight[keep]
        given, order = torch.sort(given, descending=True, stable=True)
        weight = weight[order]
        score = given.to(torch.float32)  # still descending: rounding keeps the order
        start = torch.ones_like(score, dtype=torch.bool)
        torch.ne(score[1:], score[:-1], out=start[1:])
        run = torch.cumsum(start, 0) - 1
        # float64 even without samples (bincount of an empty input is int64)
        pos = torch.bincount(run, weights=weight.clamp(min=0)).to(torch.float64)
        neg = torch.bincount(run, weights=weight.neg().clamp(min=0)).to(torch.float64)
        last = torch.ones_like(start)  # each run's last sample holds its smallest score as given
        last[:-1] = start[1:]
        points.append((given[last].to(torch.float64), pos, neg))
    return points


def _binned_points(
    hist: Tensor, logit_range: tuple[float, float], from_logits: bool, bin_space: str = "logit"
) -> Points:
    """Curve points per task from a ``(2, T, B)`` histogram: one per non-empty bin, from the top bin down."""
    num_bins = hist.shape[-1]
    steps = torch.arange(num_bins, dtype=torch.float64, device=hist.device)
    if bin_space == "probability":  # lower edges b / B of probability bins; as logits with from_logits
        edges = steps / num_bins
        thresholds = torch.logit(edges) if from_logits else edges
    else:
        lo, hi = logit_range
        edges = lo + (hi - lo) / num_bins * steps
        edges[0] = -math.inf  # the first bin also holds every score below the range
        thresholds = edges if from_logits else torch.sigmoid(edges)
    points = []
    for task in range(hist.shape[1]):
        neg, pos = hist[0, task].to(torch.float64).flip(0), hist[1, task].to(torch.float64).flip(0)
        keep = (pos + neg) > 0
        points.append((thresholds.flip(0)[keep], pos[keep], neg[keep]))
    return points


def _roc_from_points(points: Points, name: str = "ROC curve") -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(fpr, tpr, thresholds)`` per task, starting at ``(0, 0)`` with threshold ``inf``."""
    out = []
    for task, (thresholds, pos, neg) in enumerate(points):
        tps, fps = _with_origin(pos.cumsum(0)), _with_origin(neg.cumsum(0))
        no_pos, no_neg = tps[-1:] <= 0, fps[-1:] <= 0
        warn_undefined(no_pos, name, f"task {task} has no positive label weight (true positive rate)")
        warn_undefined(no_neg, name, f"task {task} has no negative label weight (false positive rate)")
        tpr = torch.full_like(tps, math.nan) if bool(no_pos) else tps / tps[-1]
        fpr = torch.full_like(fps, math.nan) if bool(no_neg) else fps / fps[-1]
        inf = torch.full((1,), math.inf, dtype=torch.float64, device=thresholds.device)
        out.append((fpr, tpr, torch.cat([inf, thresholds])))
    return out


def _pr_from_points(points: Points, name: str = "Precision-recall curve") -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(precision, recall, thresholds)`` per task, thresholds increasing, ending at ``(1, 0)``."""
    out = []
    for task, (thresholds, pos, neg) in enumerate(points):
        tps, fps = pos.cumsum(0), neg.cumsum(0)
        total = tps[-1] if tps.numel() else tps.new_zeros(())
        undefined = total <= 0
        warn_undefined(undefined.reshape(1), name, f"task {task} has no positive label weight")
        scored = tps + fps
        precision = torch.where(scored > 0, tps / torch.where(scored > 0, scored, 1.0), 0.0)
        recall = torch.full_like(tps, math.nan) if bool(undefined) else tps / total
        one, zero = tps.new_ones(1), tps.new_zeros(1)
        out.append((torch.cat([precision.flip(0), one]), torch.cat([recall.flip(0), zero]), thresholds.flip(0)))
    return out


def _with_origin(values: Tensor) -> Tensor:
    return torch.cat([values.new_zeros(1), values])


def _as_curve(per_task: list[tuple[Tensor, Tensor, Tensor]], single: bool) -> Curve:
    """A tuple of three tensors for one task, of three lists (one tensor per task) otherwise."""
    if single:
        return per_task[0]
    first, second, third = (list(part) for part in zip(*per_task))
    return first, second, third


def _curve_points(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    num_bins: int | None,
    logit_range: tuple[float, float],
    from_logits: bool,
    validate_args: bool,
    bin_space: str,
) -> Points:
    num_bins, logit_range, bin_space = _check_bins(num_bins, logit_range, bin_space)
    # float64 weights in both modes: no float32 range to check (exact AUC's states keep float32)
    p, t, w = _format_curve_inputs(preds, target, weights, from_logits, validate_args, torch.float64, False)
    if num_bins is None:  # float64 weights here (the metric's states keep float32)
        # float64 scores stay float64, so that each threshold is a score as given (compared as float32)
        scores = p.T if preds.dtype == torch.float64 else p.T.to(torch.float32)
        return _exact_points([scores], [_signed_weights(t, w, torch.float64).T], p.shape[0])
    hist = _binned_update(p, t, w, num_bins, logit_range, from_logits, bin_space=bin_space, validated=validate_args)
    return _binned_points(hist, logit_range, from_logits, bin_space)


@checks_validate_args
def roc_curve(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    num_bins: int | None = None,
    logit_range: tuple[float, float] = DEFAULT_LOGIT_RANGE,
    from_logits: bool = False,
    validate_args: bool = True,
    bin_space: str = "logit",
) -> Curve:
    r"""The ROC curve: false and true positive rates at every distinct threshold (weighted, tie-aware).

    .. math:: \mathrm{FPR}_k = \frac{\sum_{s_j \ge \theta_k,\ y_j = 0} w_j}{N}, \qquad
              \mathrm{TPR}_k = \frac{\sum_{s_i \ge \theta_k,\ y_i = 1} w_i}{P}

    Exact mode equals scikit-learn's ``roc_curve(target, preds, sample_weight=weights,
    drop_intermediate=False)``; its trapezoidal area is :func:`~torchmetrics_ext.functional.auc`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``, used as
            float64 in both modes (no float32 range to respect, unlike exact ``auc``'s).
        num_bins: ``None`` for the exact curve; ``B`` for the curve of the scores rounded to ``B``
            bins uniform in logit space (see :class:`~torchmetrics_ext.AUC`).
        logit_range: ``(low, high)`` logits covered by the bins.
        from_logits: ``preds`` are logits (binned thresholds are then logits too).
        validate_args: check inputs before computing.
        bin_space: ``"logit"`` or ``"probability"`` (``B`` bins uniform in probability over
            [0, 1], TorchRec's lifetime AUPRC binning), as for :class:`~torchmetrics_ext.AUC`.

    Returns:
        ``(fpr, tpr, thresholds)``, float64, starting at ``(0, 0)`` with threshold ``inf`` and
        thresholds decreasing: tensors for 1-D input, lists of one tensor per task otherwise.
        An exact threshold is a score as given (float64 scores keep their value; of scores that
        tie as float32, the smallest), so ``preds >= thresholds[k]`` selects exactly the samples
        counted at point ``k``.
        ``tpr`` (``fpr``) is ``nan`` with an ``UndefinedMetricWarning`` for a task without
        positive (negative) label weight.

    Raises:
        ValueError: as for :func:`~torchmetrics_ext.functional.auc`.
        TypeError: as for :func:`~torchmetrics_ext.functional.auc`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import roc_curve
        >>> fpr, tpr, thresholds = roc_curve(torch.tensor([0.125, 0.5, 0.375, 0.75]), torch.tensor([0, 0, 1, 1]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
        >>> thresholds.tolist()  # the first point is (0, 0) at threshold inf
        [inf, 0.75, 0.5, 0.375, 0.125]
    """
    points = _curve_points(preds, target, weights, num_bins, logit_range, from_logits, validate_args, bin_space)
    return _as_curve(_roc_from_points(points), preds.ndim == 1)


@checks_validate_args
def precision_recall_curve(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    num_bins: int | None = None,
    logit_range: tuple[float, float] = DEFAULT_LOGIT_RANGE,
    from_logits: bool = False,
    validate_args: bool = True,
    bin_space: str = "logit",
) -> Curve:
    r"""The precision-recall curve at every distinct threshold (weighted, tie-aware).

    .. math:: \mathrm{Precision}_k = \frac{TP_k}{TP_k + FP_k}, \qquad \mathrm{Recall}_k = \frac{TP_k}{P}

    Exact mode equals scikit-learn's ``precision_recall_curve(target, preds,
    sample_weight=weights)``: thresholds increasing, a final point ``(precision 1, recall 0)``
    without threshold. :func:`~torchmetrics_ext.functional.auprc` is
    :math:`\sum_k (R_k - R_{k-1}) P_k` over these points.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``, used as
            float64 in both modes (no float32 range to respect, unlike exact ``auc``'s).
        num_bins: ``None`` for the exact curve; ``B`` for the binned one (see :func:`roc_curve`).
        logit_range: ``(low, high)`` logits covered by the bins.
        from_logits: ``preds`` are logits.
        validate_args: check inputs before computing.
        bin_space: ``"logit"`` or ``"probability"`` (see :func:`roc_curve`).

    Returns:
        ``(precision, recall, thresholds)``, float64: tensors for 1-D input, lists of one tensor
        per task otherwise. Exact thresholds are scores as given, as for :func:`roc_curve`.
        ``recall`` is ``nan`` with an ``UndefinedMetricWarning`` for a task without positive
        label weight (scikit-learn sets it to 1 there).

    Raises:
        ValueError: as for :func:`~torchmetrics_ext.functional.auprc`.
        TypeError: as for :func:`~torchmetrics_ext.functional.auprc`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import precision_recall_curve
        >>> precision, recall, thresholds = precision_recall_curve(
        ...     torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        >>> [round(p, 4) for p in precision.tolist()], recall.tolist()
        ([0.5, 0.6667, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0])
    """
    points = _curve_points(preds, target, weights, num_bins, logit_range, from_logits, validate_args, bin_space)
    return _as_curve(_pr_from_points(points), preds.ndim == 1)
