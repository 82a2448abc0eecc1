r"""Hindsight target precision/recall (TorchRec's ``hindsight_target_pr``) as pure tensor functions.

Given a target precision, find in hindsight (by TorchRec's rule) the lowest of ``B`` uniform thresholds
:math:`t_i = i / (B - 1)` (each the correctly rounded float64 quotient, so a score of exactly 0.3
reaches 3/10) whose precision reaches it, and report that threshold with the precision and recall
there. All thresholds are evaluated at once from two per-task weight histograms (positive and
negative label weight by the number of thresholds a score reaches): that number, found
arithmetically at a cost independent of ``B`` (:func:`~torchmetrics_ext.functional._uniform.thresholds_reached`,
exactly what ``searchsorted`` over the thresholds gives), and two ``scatter_add_`` per batch,
constant memory ``(T, B + 1)``.

TorchRec 1.9 counts a prediction equal to a threshold both as a true positive (:math:`p \ge t`)
and as a false negative (:math:`p \le t`), and reports the threshold *index* as
``torch.Tensor(idx)`` (an uninitialised tensor of that length). Here a prediction is positive
iff :math:`p \ge t`, negative otherwise, and the threshold value itself is reported.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchmetrics_ext.functional._uniform import grid_on, thresholds_reached
from torchmetrics_ext.utilities.checks import (
    as_int,
    as_real,
    check_flag,
    checks_validate_args,
    format_pointwise,
    int_given,
    single_task,
)
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["hindsight_target_pr"]


def _check_hindsight_args(target_precision: float, num_thresholds: int) -> tuple[float, int]:
    """Both options as Python numbers (NumPy scalars and 0-dim tensors accepted); ``ValueError`` if invalid."""
    tp, n = as_real(target_precision), as_int(num_thresholds)
    if tp is None or not 0 <= tp <= 1:
        raise refusal(
            f"Expected `target_precision` to be a float in [0, 1], got {target_precision!r}.", wrong_type=tp is None
        )
    if n is None or n < 2:
        raise refusal(
            f"Expected `num_thresholds` to be an integer >= 2, got {int_given(num_thresholds, 2)}.",
            wrong_type=n is None,
        )
    return float(tp), n


def _thresholds(num_thresholds: int, device: torch.device) -> Tensor:
    """``j / (B - 1)`` for ``j = 0..B-1``, each correctly rounded (on the host, copied to ``device`` once).

    ``linspace`` gives 0.30000000000000004 for 3/10, so a score of exactly 0.3 would not reach it.
    """
    return grid_on(num_thresholds, num_thresholds - 1, device)


def _hindsight_entries(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_thresholds: int, from_logits: bool
) -> tuple[Tensor, Tensor]:
    """Per sample and task: the thresholds its score reaches and its positive and negative label weight.

    Returns:
        The number of thresholds reached (int64 ``(T, N)``, in ``0..B``) and the label weights
        (float64 ``(2, T, N)``, a new tensor, as :func:`_hindsight_update` sums them), detached: a
        caller keeps them (a window).
    """
    preds, target = preds.detach(), target.detach()
    probs = torch.sigmoid(preds) if from_logits else preds
    reached = thresholds_reached(probs, num_thresholds)  # searchsorted(thresholds, probs, right=True)
    values = torch.empty((2, *target.shape), dtype=torch.float64, device=target.device)
    torch.sub(1, target, out=values[1])
    if weights is None:  # unit weights: the products are the labels themselves, exactly
        values[0].copy_(target)
    else:
        w = weights.detach().expand_as(target)
        torch.mul(w, target, out=values[0])
        values[1].mul_(w)  # w * (1 - target), as the update sums it
    return reached, values


def _hindsight_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_thresholds: int, from_logits: bool
) -> tuple[Tensor, Tensor]:
    """Per-task ``(positive, negative)`` label weight by the number of thresholds each score reaches, ``(T, B + 1)``."""
    probs = torch.sigmoid(preds) if from_logits else preds
    reached = thresholds_reached(probs, num_thresholds)  # searchsorted(thresholds, probs, right=True)
    w = torch.ones_like(target) if weights is None else weights.expand_as(target)
    shape = (preds.shape[0], num_thresholds + 1)
    pos = torch.zeros(shape, dtype=torch.float64, device=preds.device).scatter_add_(1, reached, w * target)
    neg = torch.zeros(shape, dtype=torch.float64, device=preds.device).scatter_add_(1, reached, w * (1 - target))
    return pos, neg


def _hindsight_compute(pos_hist: Tensor, neg_hist: Tensor, target_precision: float) -> dict[str, Tensor]:
    """Threshold, precision and recall per task at the lowest threshold reaching ``target_precision``."""
    # tp[i] / fp[i]: label weight of scores reaching threshold i (p >= t_i), i = 0..B-1
    tp = pos_hist.flip(-1).cumsum(-1).flip(-1)[:, 1:]
    fp = neg_hist.flip(-1).cumsum(-1).flip(-1)[:, 1:]
    num_thresholds = tp.shape[-1]
    # TorchRec's rule (compute_threshold_idx): a threshold that no prediction reaches has precision 0
    # (tp = 0 there), so it is chosen only for a target of 0; the lowest threshold whose precision is at
    # least the target, else the last one. With nothing seen: the first threshold for a target of 0, else 1.0
    precision = tp / torch.where(tp + fp > 0, tp + fp, 1.0)
    reaches = precision >= target_precision
    idx = torch.where(reaches.any(-1), reaches.to(torch.int8).argmax(-1), num_thresholds - 1).unsqueeze(-1)
    tp_at, fp_at = tp.gather(1, idx).squeeze(-1), fp.gather(1, idx).squeeze(-1)
    total_pos = pos_hist.sum(-1)
    # a task whose label weight overflowed float64 (tp + fp = inf: weights near 1e308) has no precision
    # to compare: nan for all three, without a warning, as the ratio metrics (x / inf read 0 and picked
    # the last threshold)
    overflowed = (tp[:, 0] + fp[:, 0]).isinf()
    no_pred, no_pos = tp_at + fp_at <= 0, total_pos <= 0
    # a task without label weight at all saw nothing: NO_SAMPLES, not the reason of one that saw negatives only
    unseen = lambda: total_pos + neg_hist.sum(-1) <= 0  # noqa: E731 (made only where a value is undefined)
    reason = "no prediction reaches the chosen threshold"
    warn_undefined(no_pred & ~overflowed, "HindsightTargetPR.precision", reason, unseen=unseen)
    warn_undefined(no_pos & ~overflowed, "HindsightTargetPR.recall", "no positive label", unseen=unseen)
    values = {
        "threshold": _thresholds(num_thresholds, tp.device)[idx.squeeze(-1)],
        "precision": torch.where(no_pred, math.nan, tp_at / torch.where(no_pred, 1.0, tp_at + fp_at)),
        "recall": torch.where(no_pos, math.nan, tp_at / torch.where(no_pos, 1.0, total_pos)),
    }
    return {name: torch.where(overflowed, math.nan, value) for name, value in values.items()}


@checks_validate_args
def hindsight_target_pr(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    target_precision: float = 0.5,
    num_thresholds: int = 1000,
    from_logits: bool = False,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    r"""The lowest uniform threshold reaching ``target_precision``, with the precision and recall there.

    A prediction is positive at threshold :math:`t` iff :math:`p \ge t`. The lowest threshold
    that reaches the target keeps the most recall. The threshold follows TorchRec's rule: one that no
    prediction reaches counts precision 0 (so it is chosen only for ``target_precision=0``), and when
    none reaches the target the last threshold (1.0) is reported. With no sample of non-zero weight
    that is 1.0, or 0.0 for ``target_precision=0``, with precision and recall ``nan``.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        target_precision: the precision to reach, in [0, 1].
        num_thresholds: number of uniform thresholds ``j / (num_thresholds - 1)`` on [0, 1] (TorchRec:
            1000), compared with the exact value of each score (a float32 ``0.35`` is below 0.35).
        from_logits: treat ``preds`` as logits (thresholds stay probabilities).
        validate_args: check inputs before computing.

    Returns:
        ``{"threshold", "precision", "recall"}``, each a scalar or ``(T,)``; precision (recall)
        is ``nan`` with an ``UndefinedMetricWarning`` when nothing is predicted positive (no
        positive label).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import hindsight_target_pr
        >>> preds = torch.tensor([0.9, 0.8, 0.6, 0.4, 0.3])
        >>> target = torch.tensor([1, 1, 0, 1, 0])
        >>> out = hindsight_target_pr(preds, target, target_precision=0.7, num_thresholds=11)
        >>> out["threshold"], out["precision"], out["recall"]
        (tensor(0.4000, dtype=torch.float64), tensor(0.7500, dtype=torch.float64), tensor(1., dtype=torch.float64))
    """
    target_precision, num_thresholds = _check_hindsight_args(target_precision, num_thresholds)
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    out = _hindsight_compute(*_hindsight_update(p, t, w, num_thresholds, from_logits), target_precision)  # type: ignore[arg-type]
    return {k: v.squeeze(0) if single else v for k, v in out.items()}
