r"""Variants of normalized entropy and calibration (TorchRec's NE family) as pure tensor functions.

* :func:`ne_positive`: the positive-label part of the cross-entropy over NE's normaliser.
* :func:`calibration_free_ne`: the model's cross-entropy relative to always predicting its own
  mean prediction, so a constant calibration error does not count.
* :func:`recalibrated_ne` and :func:`recalibrated_calibration`: NE and calibration of
  predictions mapped back through a negative down-sampling rate,
  :math:`p' = c\,p / (c\,p + 1 - p)`, i.e. logit :math:`+ \log c`.

Every value is a ratio of per-task float64 sums (constant memory); the log base cancels in
each ratio. Inputs follow :mod:`torchmetrics_ext.functional.pointwise`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchmetrics_ext.functional._sums import batch_sums
from torchmetrics_ext.functional.counters import _apply
from torchmetrics_ext.functional.pointwise import (
    Stats,
    _calibration_compute,
    _check_eta,
    _cross_entropy_update,
    _minus_abs,
    _normalized_entropy_compute,
    _softplus,
    _weighed,
    _weighted_sum,
    _weighted_sums_update,
)
from torchmetrics_ext.utilities.checks import as_real, check_flag, checks_validate_args
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import warn_undefined

__all__ = ["calibration_free_ne", "ne_positive", "recalibrated_calibration", "recalibrated_ne"]


def _check_coefficient(recalibration_coefficient: float) -> float:
    """The coefficient as a Python number (NumPy or 0-dim tensor ones too); ``ValueError`` unless finite and > 0."""
    c = as_real(recalibration_coefficient)
    if c is None or not (math.isfinite(c) and c > 0):
        raise refusal(
            f"Expected `recalibration_coefficient` to be a positive finite float, got {recalibration_coefficient!r}.",
            wrong_type=c is None,
        )
    return c


def _recalibrate(preds: Tensor, coefficient: float, from_logits: bool) -> Tensor:
    """``c·p / (c·p + 1 - p)``: the logit shifted by ``log c`` (exact for logits)."""
    if from_logits:
        return preds + math.log(coefficient)
    return coefficient * preds / (coefficient * preds + (1 - preds))


# ----------------------------------------------------------------------------- NE positive


def _ne_positive_update(preds: Tensor, target: Tensor, weights: Tensor | None, eta: float, from_logits: bool) -> Stats:
    """Return ``(sum w·y·(-log p), sum w, sum w·y, sum w·(1 - y))`` per task; ``p`` clamped to ``[eta, 1 - eta]``."""
    neg_log_p = _softplus(-preds) if from_logits else -torch.log(preds.clamp(eta, 1 - eta))
    positive_ce = target * neg_log_p
    if eta == 0 and not from_logits:  # p may be exactly 0: 0·log 0 = 0 for a negative label, not 0·inf = nan
        positive_ce = _weighed(
            eta, torch.where(positive_ce.isnan(), torch.xlogy(target, preds).neg_(), positive_ce), weights
        )
    sums = batch_sums(preds, target, weights)  # the class-exact total, as NE's (a single class is undefined)
    return _weighted_sum(positive_ce, weights), sums.class_total(), sums.label_sum(), sums.complement_sum()


def _ne_positive_compute(ce_positive_sum: Tensor, total: Tensor, pos: Tensor, neg: Tensor, eta: float) -> Tensor:
    return _normalized_entropy_compute(ce_positive_sum, total, pos, eta, "NEPositive", neg)


@checks_validate_args
def ne_positive(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    eta: float = 1e-12,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""NE of the positive labels: their cross-entropy over the entropy of the base rate.

    .. math::
        \mathrm{NE}_+ = \frac{-\sum_i w_i\,y_i \log p_i}
        {-\sum_i w_i\,[\bar y \log c + (1-\bar y)\log(1-c)]},
        \qquad c = \min(\max(\bar y, \eta), 1 - \eta)

    TorchRec's ``ne_positive``. Adding the same ratio over the negative labels gives NE.
    Probabilities are clamped to ``[eta, 1 - eta]``, and so is the base rate inside the
    denominator's logs only (:math:`c`), as in :func:`~torchmetrics_ext.functional.normalized_entropy`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        eta: probability clamp, in [0, 0.5).
        from_logits: treat ``preds`` as logits.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` (with an ``UndefinedMetricWarning``) when all labels are of one class.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import ne_positive
        >>> ne_positive(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))  # half of NE = 1
        tensor(0.5000, dtype=torch.float64)
    """
    eta = _check_eta(eta)
    check_flag("from_logits", from_logits)
    return _apply(
        lambda p, t, w: _ne_positive_update(p, t, w, eta, from_logits),  # type: ignore[arg-type]
        lambda ce, total, pos, neg: _ne_positive_compute(ce, total, pos, neg, eta),
        preds,
        target,
        weights,
        preds_domain="probability",
        target_domain="unit",
        from_logits=from_logits,
        validate_args=validate_args,
    )


# ----------------------------------------------------------------------------- calibration-free NE


def _calibration_free_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, eta: float, from_logits: bool
) -> Stats:
    """Return ``(sum w·CE, sum w, sum w·y, sum w·p, sum w·(1 - p), sum w·(1 - y))`` per task (CE in nats).

    Both ``sum w·p`` and ``sum w·(1 - p)`` are kept so that neither ``p̄`` nor ``1 - p̄`` is
    found by a subtraction from 1 (which loses all digits when ``p̄`` is within ``1e-16`` of 0 or
    1). From logits ``1 - p`` is ``sigmoid(-z)``: exact where ``sigmoid(z)`` rounds to 1. The label-0
    weight is summed as such too (last: it came after checkpoints of the first five), as NE's.
    """
    ce_sum, total, pos, neg = _cross_entropy_update(preds, target, weights, eta, from_logits)
    probs, complement = _sigmoid_pair(preds) if from_logits else (preds, 1 - preds)
    return ce_sum, total, pos, _weighted_sum(probs, weights), _weighted_sum(complement, weights), neg


def _sigmoid_pair(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigmoid(z), sigmoid(-z))`` from one ``exp(-|z|)``, neither 0 while ``exp(-|z|)`` is not.

    ``torch.sigmoid`` computes ``1 / (1 + exp(-z))``, which is 0 once ``exp(-z)`` overflows
    (``z`` below about -709 in float64) although the probability, about ``exp(z)``, is still
    representable down to about -745; ``e / (1 + e)`` with ``e = exp(-|z|)`` keeps it.
    """
    e = torch.exp(_minus_abs(logits))  # the gradient at z = 0 from the right, as `negative` takes z = 0
    small, large = e / (1 + e), 1 / (1 + e)  # sigmoid(-|z|), sigmoid(|z|)
    negative = logits < 0
    return torch.where(negative, small, large), torch.where(negative, large, small)


def _calibration_free_compute(
    ce_sum: Tensor,
    total: Tensor,
    pos: Tensor,
    pred_sum: Tensor,
    complement_sum: Tensor,
    eta: float,
    torchrec_scaling: bool,
    from_logits: bool = False,
    neg_labels: Tensor | None = None,
) -> Tensor:
    """``sum w·CE / CE of predicting the mean prediction`` (or TorchRec's value, see :func:`calibration_free_ne`).

    The constant prediction ``p̄ = sum w·p / sum w`` is clamped to ``[eta, 1 - eta]`` as the
    probabilities of the numerator are, and its complement ``sum w·(1 - p) / sum w`` to
    ``[1 - (1 - eta), 1 - eta]`` (1 minus the clamped ``p̄`` where the clamp binds); from logits the
    numerator is the exact log-sigmoid, and the denominator is not clamped either. Undefined
    (``nan`` with an ``UndefinedMetricWarning``) when that constant prediction's cross-entropy is
    not a finite positive number: no label weight, or ``p̄`` exactly 0 or 1 (all labels on one
    side: 0; on the other: infinite, e.g. ``eta = 0``, or logits all below ``-745`` or all above ``745``).
    """
    neg = total - pos if neg_labels is None else neg_labels  # the label-0 weight (None: an older checkpoint's)
    safe_total = torch.where(total > 0, total, 1.0)
    mean_pred, mean_complement = pred_sum / safe_total, complement_sum / safe_total
    if not from_logits:
        # the complement to [1 - (1 - eta), 1 - eta], as NE's base rate: where the clamp binds, the numbers
        # 1 - c of the clamped mean c (the numerator's 1 - p, TorchRec's 1 - clamp(p̄)), not eta
        # (1 - eta rounds in float64: 1 - (1 - 1e-12) is 1.0000889e-12)
        mean_pred, mean_complement = mean_pred.clamp(eta, 1 - eta), mean_complement.clamp(1 - (1 - eta), 1 - eta)
    # cross-entropy (summed, nats) of the constant prediction ``mean_pred`` on the labels seen (a
    # label weight of 0 times the log of a probability of 0 counts 0); the log of a mean above 1/2
    # is log1p of minus its complement, which holds the digits that 1 - 1e-13 has lost
    log_mean = torch.where(mean_pred > 0.5, torch.log1p(-mean_complement), torch.log(mean_pred))
    log_complement = torch.where(mean_complement > 0.5, torch.log1p(-mean_pred), torch.log(mean_complement))
    constant_ce = -(torch.where(pos > 0, pos * log_mean, 0.0) + torch.where(neg > 0, neg * log_complement, 0.0))
    # sums that overflowed float64 (inf: weights near 1e308) leave no ratio: nan without a warning, as
    # safe_divide's; the cross-entropy sum's terms are finite unless eta = 0 (a sure wrong probability)
    overflowed = total.isinf() | (ce_sum.isinf() & (eta > 0 or from_logits))
    undefined = (total <= 0) | ~((constant_ce > 0) & constant_ce.isfinite())
    if torchrec_scaling:
        ne = _normalized_entropy_compute(ce_sum, total, pos, eta, "CalibrationFreeNE", neg)  # warns where nan
        warn_undefined(undefined & ~torch.isnan(ne), "CalibrationFreeNE", "the mean prediction is 0 or 1")
        undefined = undefined | torch.isnan(ne) | overflowed
        value = ne / torch.where(undefined, 1.0, constant_ce / math.log(2))
    else:
        # a task without label weight saw nothing: NO_SAMPLES, as NE's (the class totals, read where undefined)
        unseen = lambda: (pos <= 0) & (neg <= 0)  # noqa: E731
        warn_undefined(undefined & ~overflowed, "CalibrationFreeNE", "the mean prediction is 0 or 1", unseen=unseen)
        undefined = undefined | overflowed
        value = ce_sum / torch.where(undefined, 1.0, constant_ce)
    return torch.where(undefined, math.nan, value)


@checks_validate_args
def calibration_free_ne(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    eta: float = 1e-12,
    from_logits: bool = False,
    torchrec_scaling: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Calibration-free NE: cross-entropy relative to always predicting the model's own mean prediction.

    .. math::
        \frac{-\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}
        {-\sum_i w_i\,[y_i \log \bar p + (1-y_i)\log(1-\bar p)]},
        \qquad \bar p = \frac{\sum_i w_i p_i}{\sum_i w_i}

    This is NE divided by the NE of the constant prediction :math:`\bar p`: a model whose only
    fault is a constant miscalibration no longer looks worse for it.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        eta: probability clamp, in [0, 0.5).
        from_logits: treat ``preds`` as logits.
        torchrec_scaling: reproduce TorchRec 1.9's ``cali_free_ne`` value, which divides NE by
            the *summed* (not normalised) cross-entropy of :math:`\bar p` in bits, so it shrinks
            as 1/total weight. Only for dashboards that must not jump on migration.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` when there is no weight.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import calibration_free_ne
        >>> calibration_free_ne(torch.tensor([0.4, 0.4]), torch.tensor([1, 0]))  # a constant model scores 1
        tensor(1., dtype=torch.float64)
    """
    eta = _check_eta(eta)
    check_flag("from_logits", from_logits)
    check_flag("torchrec_scaling", torchrec_scaling)
    return _apply(
        lambda p, t, w: _calibration_free_update(p, t, w, eta, from_logits),  # type: ignore[arg-type]
        lambda ce, total, pos, pred, complement, neg: _calibration_free_compute(
            ce, total, pos, pred, complement, eta, torchrec_scaling, from_logits, neg
        ),
        preds,
        target,
        weights,
        preds_domain="probability",
        target_domain="unit",
        from_logits=from_logits,
        validate_args=validate_args,
    )


# ----------------------------------------------------------------------------- recalibration


@checks_validate_args
def recalibrated_ne(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    recalibration_coefficient: float = 1.0,
    eta: float = 1e-12,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""NE of recalibrated predictions :math:`p' = c\,p / (c\,p + 1 - p)` (TorchRec's ``recalibrated_ne``).

    A model trained on data whose negatives were kept with rate :math:`r` over-predicts by the
    odds factor :math:`1/r`; ``recalibration_coefficient=r`` maps its scores back before NE.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        recalibration_coefficient: the odds multiplier :math:`c > 0` (1 changes nothing).
        eta: probability clamp (applied after recalibration), in [0, 0.5).
        from_logits: treat ``preds`` as logits (:math:`z + \log c`, exact).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when all labels are of one class.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import recalibrated_ne
        >>> preds, target = torch.tensor([2 / 3, 2 / 3]), torch.tensor([1, 0])
        >>> recalibrated_ne(preds, target, recalibration_coefficient=0.5)  # 2/3 -> 1/2, the base rate
        tensor(1.0000, dtype=torch.float64)
    """
    recalibration_coefficient = _check_coefficient(recalibration_coefficient)
    eta = _check_eta(eta)
    check_flag("from_logits", from_logits)
    return _apply(
        lambda p, t, w: _cross_entropy_update(
            _recalibrate(p, recalibration_coefficient, from_logits),
            t,  # type: ignore[arg-type]
            w,
            eta,
            from_logits,
        ),
        lambda ce, total, pos, neg: _normalized_entropy_compute(ce, total, pos, eta, "RecalibratedNE", neg),
        preds,
        target,
        weights,
        preds_domain="probability",
        target_domain="unit",
        from_logits=from_logits,
        validate_args=validate_args,
    )


@checks_validate_args
def recalibrated_calibration(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    recalibration_coefficient: float = 1.0,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Calibration of recalibrated predictions :math:`p' = c\,p / (c\,p + 1 - p)`: :math:`\sum w p' / \sum w y`.

    TorchRec's ``recalibrated_calibration``; see :func:`recalibrated_ne` for the coefficient.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        recalibration_coefficient: the odds multiplier :math:`c > 0`.
        from_logits: treat ``preds`` as logits.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` while no positive label weight was seen.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import recalibrated_calibration
        >>> recalibrated_calibration(torch.tensor([2 / 3, 2 / 3]), torch.tensor([1, 0]), recalibration_coefficient=0.5)
        tensor(1.0000, dtype=torch.float64)
    """
    recalibration_coefficient = _check_coefficient(recalibration_coefficient)
    check_flag("from_logits", from_logits)
    return _apply(
        lambda p, t, w: _weighted_sums_update(
            _recalibrate(p, recalibration_coefficient, from_logits), t, w, from_logits
        ),
        lambda pred_sum, label_sum, total: _calibration_compute(pred_sum, label_sum, "RecalibratedCalibration", total),
        preds,
        target,
        weights,
        preds_domain="probability",
        target_domain="unit",
        from_logits=from_logits,
        validate_args=validate_args,
    )
