r"""R² and normalised (R)MSE as pure tensor functions, over the same statistics as MSE.

The five per-task float64 sums of :func:`~torchmetrics_ext.functional.pointwise._error_update`
(:math:`\sum w (p-y)^2`, :math:`\sum w |p-y|`, :math:`\sum w`, :math:`\sum w y`,
:math:`\sum w y^2`) give every value here, so the classes share one compute group with
``WeightedMSE``/``WeightedRMSE``/``WeightedMAE``. A class's baseline squared error comes from the
label moments: :math:`\sum w (y - c)^2 = \sum w y^2 - 2c \sum w y + c^2 \sum w`; the functions,
which see one batch, take the label moments about the baseline itself (two passes), which keep
their digits for labels with a large common offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from torchmetrics_ext.functional._sums import batch_sums
from torchmetrics_ext.functional.counters import _apply
from torchmetrics_ext.functional.pointwise import Stats, _error_update
from torchmetrics_ext.utilities.checks import check_choice, check_flag, checks_validate_args
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, _functorch_wrapped, warn_precision_loss, warn_undefined

__all__ = ["weighted_nmse", "weighted_nrmse", "weighted_r2"]

Baseline = Literal["one", "mean"]


def _check_baseline(baseline: object) -> Baseline:
    """``baseline`` as a Python string (a 0-dim NumPy string too); ``ValueError`` unless a known one."""
    return check_choice("baseline", baseline, ("one", "mean"), "'one' (TorchRec's) or 'mean'")  # type: ignore[return-value]


# Below this fraction of the sums it is computed from, the baseline error is rounding noise of
# the one-pass formula (constant labels leave ~1e-16 of the sums): it counts as zero. In label
# terms: a spread (RMS distance to the baseline) below about 2^-20 ~ 1e-6 of the labels' RMS size.
_CANCELLED = 2.0**-40

# The baseline error from the sums, sum w (y-s)^2 - ..., carries the rounding of those sums: about eps times
# `scale` (their magnitude, see `_label_sse`), so its relative error is about eps * scale / error (labels
# 1e6 + N(0, 1): 2e-16 * 1e12 = 2e-4). Past this estimate a PrecisionLossWarning says so (fewer than about
# 6 right digits); past `_CANCELLED` (an estimate of ~2e-4) the value is nan instead.
_LOST = 1e-6
# up to this many values (tasks) on the CPU, the check reads them on the host instead of running kernels
_FEW = 64

# why a zero baseline error is undefined, when the labels have weight
_NO_SPREAD = {
    "mean": (
        "the labels' spread is zero or below the rounding of their float64 sums (constant labels, or a "
        "spread below ~1e-6 of their common offset: give the class label_offset near the labels, or subtract "
        "the offset from preds and target)"
    ),
    "one": (
        "the labels' distance to the baseline 1 is zero or below the rounding of their float64 sums "
        "(below ~1e-6 of their size: give the class label_offset=1.0)"
    ),
}


def _label_sse(
    total: Tensor, label_sum: Tensor, label_sq_sum: Tensor, baseline: Baseline, shift: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Weighted squared error of a constant prediction (1, TorchRec's baseline, or the label mean), and its scale.

    Returns the error and the magnitude of the terms it is the difference of (its rounding is
    about ``eps`` times that: see :func:`_warn_lost_digits`).

    ``label_sum`` and ``label_sq_sum`` are the sums of :math:`w (y - s)` and :math:`w (y - s)^2`
    about ``shift`` :math:`s` (per task; ``None``: about 0, the classes' running sums), and the
    error about the baseline :math:`c` is ``sum w (y-s)^2 - 2 (c-s) sum w (y-s) + (c-s)^2 sum w``,
    so a result within rounding of the sums (labels all equal to the baseline) is zero, never a
    tiny positive value that would turn R^2 or NMSE into ~1e17. Sums about 0 are float64 and
    merge by addition (batches, ranks, windows), so their rounding is about 1e-16 of
    ``sum w y^2``: the result's relative error is about 1e-16 times (RMS label size / RMS
    distance to the baseline)^2, and it is zero once that ratio passes ~1e6 (labels with a large
    common offset: subtract it first). Sums about a shift within the labels' spread of the
    baseline (the functions' one batch: the label mean, or 1) keep every digit.
    """
    if baseline == "one":
        if shift is None:
            sse = label_sq_sum - 2 * label_sum + total
            scale = label_sq_sum + 2 * label_sum.abs() + total
        else:
            gap = 1 - shift  # the baseline 1 about the shift
            sse = label_sq_sum - 2 * gap * label_sum + gap * gap * total
            scale = label_sq_sum + 2 * (gap * label_sum).abs() + gap * gap * total
    else:
        # the mean about the shift is label_sum / total: the same formula whatever the shift
        mean = label_sum / torch.where(total > 0, total, 1.0)
        sse = label_sq_sum - mean * label_sum
        scale = label_sq_sum
    return torch.where(sse > _CANCELLED * scale, sse, 0.0), scale


def _warn_lost_digits(
    base: Tensor, scale: Tensor, total: Tensor, label_sum: Tensor, shift: Tensor | None, name: str
) -> None:
    """A :class:`~torchmetrics_ext.utilities.warnings.PrecisionLossWarning` where the baseline error lost its digits.

    Its relative error is about ``eps * scale / base`` (the rounding of the sums it comes from,
    over itself); past :data:`_LOST` the warning says how many digits are left and suggests the
    weighted label mean of the flagged entries as ``label_offset`` (sums about it keep every
    digit: the scale is then the error itself). Entries whose error counts as zero (``nan``, warned
    for as undefined) or that overflowed are not flagged, nor are states narrowed by ``set_dtype``.
    Read at compute only: a few operations on ``(T,)`` tensors and one host read.
    """
    if base.dtype != torch.float64:
        # states narrowed by `set_dtype` (float32, half) round every update's sums to that dtype: digits the
        # user chose to give up (half-precision states would warn on any data); the check is for float64 sums
        return
    eps = torch.finfo(base.dtype).eps
    bound = eps / _LOST
    if base.numel() <= _FEW and base.is_cpu and not _functorch_wrapped(base):  # a few values: read, no kernels
        if base.numel() == 1:
            if not 0 < base.item() < bound * scale.item():
                return
        elif not any(0 < b < bound * c for b, c in zip(base.reshape(-1).tolist(), scale.reshape(-1).tolist())):
            return
    # (an overflowed scale leaves an infinite or nan error: not flagged)
    lost = (base > 0) & (base < eps / _LOST * scale)

    def detail(flagged: Tensor) -> str:
        lost_flat = lost.reshape(-1) & flagged.reshape(-1)
        error = (eps * scale / torch.where(base > 0, base, 1.0)).reshape(-1)[lost_flat].max().item()
        weight = total.reshape(-1)[lost_flat]
        moment = label_sum.reshape(-1)[lost_flat]
        if shift is not None:
            moment = moment + shift.reshape(-1)[lost_flat] * weight
        mean = (moment.sum() / weight.sum()).item()
        spread = math.sqrt(base.reshape(-1)[lost_flat].sum().item() / weight.sum().item())
        return (
            f"its label variance comes from float64 sums of w*y and w*y^2 that cancel (labels far from 0 "
            f"for their spread): relative error up to about {_decade(error)} ({_digits(error)} significant digits "
            f"left); "
            f"pass label_offset={_near(mean, spread)} (about the weighted label mean) to keep them."
        )

    warn_precision_loss(lost, name, detail)


# The message's numbers are rounded (the error to its decade, the mean to the spread's leading digit) so that
# its text stays the same from one compute to the next of a stream (and from batch to batch of `forward`):
# Python's default filter then shows it once per line instead of at every step.


def _decade(error: float) -> str:
    """The power of ten at or above ``error`` (``2.3e-06 -> "1e-05"``)."""
    return f"1e{math.ceil(math.log10(error)):+03d}"


def _digits(error: float) -> str:
    """The number of right significant digits of a value of relative error up to ``error``, in words."""
    return f"about {max(0, -math.ceil(math.log10(error)))}"


def _near(mean: float, spread: float) -> str:
    """``mean`` rounded to the power of ten above ``spread``'s (sums about a point that near keep their digits).

    ``(1e5 + 0.03, 1.0)`` is ``"100000"``, ``(1.7e9, 3600.0)`` ``"1700000000"``, ``(1.00001, 1e-5)`` ``"1.0000"``:
    the batches of one stream, whose means differ by a fraction of the spread, mostly print the same text.
    """
    if not (math.isfinite(mean) and math.isfinite(spread) and spread > 0):
        return f"{mean:g}"
    power = math.floor(math.log10(spread)) + 1
    rounded = round(mean / 10.0**power) * 10.0**power
    return f"{rounded:.{max(0, -power)}f}"


def _over_baseline(
    sse: Tensor,
    total: Tensor,
    label_sum: Tensor,
    label_sq_sum: Tensor,
    baseline: Baseline,
    name: str,
    shift: Tensor | None = None,
) -> Tensor:
    """``sse`` over the baseline's squared error; ``nan`` with a warning naming the reason where that is zero.

    The label sums are about ``shift`` (``None``: about 0), see :func:`_label_sse`.

    A sum that overflowed float64 (``inf``: weights or labels near float64's range) is ``nan`` too,
    without a warning, as in :func:`~torchmetrics_ext.utilities.warnings.safe_divide`: the label
    mean ``x / inf`` read 0 there (R² 0.5 for equal weights of 1e308 where it is 0).
    """
    base, scale = _label_sse(total, label_sum, label_sq_sum, baseline, shift)
    overflowed = ~torch.stack([sse, total, label_sum, label_sq_sum, base]).isfinite().all(0)
    undefined = (base == 0) & ~overflowed
    _warn_lost_digits(base, scale, total, label_sum, shift, name)
    warn_undefined(undefined & (total == 0), name, NO_SAMPLES)
    warn_undefined(undefined & (total != 0), name, _NO_SPREAD[baseline])
    unknown = undefined | overflowed
    return torch.where(unknown, torch.nan, sse / torch.where(unknown, 1.0, base))


def _r2_compute(
    sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor, shift: Tensor | None = None
) -> Tensor:
    return 1 - _over_baseline(sse, total, label_sum, label_sq_sum, "mean", "WeightedR2", shift)


def _nmse_compute(
    sse: Tensor,
    sae: Tensor,
    total: Tensor,
    label_sum: Tensor,
    label_sq_sum: Tensor,
    baseline: Baseline,
    root: bool,
    shift: Tensor | None = None,
) -> Tensor:
    name = "WeightedNRMSE" if root else "WeightedNMSE"
    ratio = _over_baseline(sse, total, label_sum, label_sq_sum, baseline, name, shift)
    return ratio.sqrt() if root else ratio


def _centred_errors(from_logits: bool, baseline: Baseline) -> Callable[[Tensor, Tensor | None, Tensor | None], Stats]:
    r"""The error kernel (``preds`` as values or logits; the flag checked) with the label sums of one batch centred.

    Returns the kernel's sums with :math:`\sum w (y - s)` and :math:`\sum w (y - s)^2` in place of the
    label sums, and the shift :math:`s` last: the baseline itself (1, or the batch's weighted label
    mean), so the baseline's squared error is summed per sample, two passes as scikit-learn's, and
    keeps its digits for labels with a large common offset (``1e9 + N(0, 1)``), which the sums
    about 0 lose (see :func:`_label_sse`). For the functions only: a class's running sums merge by
    addition, which needs one shift for every batch and rank.
    """
    from_logits = check_flag("from_logits", from_logits)

    def stats(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
        assert target is not None  # the regression functions require it
        sse, sae, total, label_sum, _ = _error_update(preds, target, weights, from_logits)
        if baseline == "one":
            shift = torch.ones_like(total)
        else:
            shift = label_sum / torch.where(total > 0, total, 1.0)
        centred = target - shift.unsqueeze(-1)
        # the batch's own sums (its square weighted first: a zero-weight row adds 0 where its square overflows)
        sums = batch_sums(preds, target, weights)
        centred_sum = sums.weighted(("centred_target", baseline), centred)
        return sse, sae, total, centred_sum, sums.product(("centred_target_squared", baseline), centred, centred), shift

    return stats


def _normalised(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    baseline: Baseline,
    root: bool,
    from_logits: bool,
    validate_args: bool,
) -> Tensor:
    baseline = _check_baseline(baseline)
    return _apply(
        _centred_errors(from_logits, baseline),
        lambda sse, sae, total, ls, lsq, shift: _nmse_compute(sse, sae, total, ls, lsq, baseline, root, shift),
        preds,
        target,
        weights,
        validate_args=validate_args,
    )


@checks_validate_args
def weighted_r2(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted coefficient of determination, :math:`1 - \sum w (p-y)^2 / \sum w (y-\bar y)^2`.

    Equal to scikit-learn's ``r2_score(y, p, sample_weight=w)``; TorchRec's ``r_squared``
    (``MSEMetric(include_r_squared=True)``).

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits: the errors of :math:`\sigma(z)` (see
            :func:`~torchmetrics_ext.functional.weighted_mse`).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` when the labels are
        constant (TorchRec and scikit-learn return 1.0 there).

    Note:
        Precision: the label variance of the one batch is summed about the weighted label mean
        (two passes, as scikit-learn's), so labels with a large common offset (``1e9 + N(0, 1)``)
        keep their digits. :class:`~torchmetrics_ext.WeightedR2` accumulates float64 sums of
        :math:`w y` and :math:`w y^2` instead (they merge by addition across batches, ranks and
        windows), which cancel there: see its Note.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_r2
        >>> weighted_r2(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.7857, dtype=torch.float64)
    """
    centred = _centred_errors(from_logits, "mean")
    return _apply(centred, _r2_compute, preds, target, weights, validate_args=validate_args)


@checks_validate_args
def weighted_nmse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    baseline: Baseline = "one",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""MSE over the MSE of a constant baseline prediction (TorchRec's ``nmse``).

    .. math:: \mathrm{NMSE} = \frac{\sum_i w_i (p_i - y_i)^2}{\sum_i w_i (y_i - c)^2}

    TorchRec's baseline is the constant :math:`c = 1`; ``baseline="mean"`` uses the weighted
    label mean :math:`c = \bar y`, which gives :math:`1 - R^2`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        baseline: ``"one"`` (TorchRec's) or ``"mean"``.
        from_logits: ``preds`` are logits: the errors of :math:`\sigma(z)` (see
            :func:`~torchmetrics_ext.functional.weighted_mse`).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the baseline's error is zero (TorchRec: 0).

    Note:
        The baseline's error of the one batch is summed per sample about the baseline (1, or the
        weighted label mean: two passes), so labels with a large common offset, or labels very
        close to the baseline 1 (``1 ± 1e-7``), keep their digits. The classes
        (:class:`~torchmetrics_ext.WeightedNMSE`) derive it from float64 label sums that merge by
        addition, which cancel there: see their Note.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_nmse
        >>> preds, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])
        >>> weighted_nmse(preds, target)  # 1 / (0 + 1 + 9)
        tensor(0.1000, dtype=torch.float64)
        >>> weighted_nmse(preds, target, baseline="mean")
        tensor(0.2143, dtype=torch.float64)
    """
    return _normalised(preds, target, weights, baseline, False, from_logits, validate_args)


@checks_validate_args
def weighted_nrmse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    baseline: Baseline = "one",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""RMSE over the RMSE of a constant baseline prediction (TorchRec's ``nrmse``): :math:`\sqrt{\mathrm{NMSE}}`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        baseline: ``"one"`` (TorchRec's) or ``"mean"`` (the weighted label mean).
        from_logits: ``preds`` are logits: the errors of :math:`\sigma(z)` (see
            :func:`~torchmetrics_ext.functional.weighted_mse`).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the baseline's error is zero (see
        :func:`weighted_nmse` for its precision with labels far from 0 and close together).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_nrmse
        >>> weighted_nrmse(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.3162, dtype=torch.float64)
    """
    return _normalised(preds, target, weights, baseline, True, from_logits, validate_args)
