r"""R² and normalised (R)MSE as pure tensor functions, over the same statistics as MSE.

The five per-task float64 sums of :func:`~torchmetrics_ext.functional.pointwise._error_update`
(:math:`\sum w (p-y)^2`, :math:`\sum w |p-y|`, :math:`\sum w`, :math:`\sum w y`,
:math:`\sum w y^2`) give every value here, so the classes share one compute group with
``WeightedMSE``/``WeightedRMSE``/``WeightedMAE``. A baseline's squared error comes from the label
moments: :math:`\sum w (y - c)^2 = \sum w y^2 - 2c \sum w y + c^2 \sum w`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from torchmetrics_ext.functional.counters import _apply
from torchmetrics_ext.functional.pointwise import _error_update
from torchmetrics_ext.utilities.warnings import safe_divide

__all__ = ["weighted_nmse", "weighted_nrmse", "weighted_r2"]

Baseline = Literal["one", "mean"]


def _check_baseline(baseline: str) -> None:
    if baseline not in ("one", "mean"):
        raise ValueError(f"Expected `baseline` to be 'one' (TorchRec's) or 'mean', got {baseline!r}.")


# Below this fraction of the sums it is computed from, the baseline error is rounding noise of
# the one-pass formula (constant labels leave ~1e-16 of the sums): it counts as zero.
_CANCELLED = 2.0**-40


def _label_sse(total: Tensor, label_sum: Tensor, label_sq_sum: Tensor, baseline: Baseline) -> Tensor:
    """Weighted squared error of a constant prediction: 1 (TorchRec's baseline) or the weighted label mean.

    From the running sums in one pass (``sum w y^2 - 2 c sum w y + c^2 sum w``), so a result within
    rounding of the sums (labels all equal to the baseline) is zero, never a tiny positive value
    that would turn R^2 or NMSE into ~1e17.
    """
    if baseline == "one":
        sse = label_sq_sum - 2 * label_sum + total
        scale = label_sq_sum + 2 * label_sum.abs() + total
    else:
        mean = label_sum / torch.where(total > 0, total, 1.0)
        sse = label_sq_sum - mean * label_sum
        scale = label_sq_sum
    return torch.where(sse > _CANCELLED * scale, sse, 0.0)


def _r2_compute(sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor) -> Tensor:
    sst = _label_sse(total, label_sum, label_sq_sum, "mean")
    return 1 - safe_divide(sse, sst, "WeightedR2", "the labels seen are constant (or have no weight)")


def _nmse_compute(
    sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor, baseline: Baseline, root: bool
) -> Tensor:
    name = "WeightedNRMSE" if root else "WeightedNMSE"
    ratio = safe_divide(sse, _label_sse(total, label_sum, label_sq_sum, baseline), name, "the baseline error is zero")
    return ratio.sqrt() if root else ratio


def _normalised(
    preds: Tensor, target: Tensor, weights: Tensor | None, baseline: Baseline, root: bool, validate_args: bool
) -> Tensor:
    _check_baseline(baseline)
    return _apply(
        _error_update,  # type: ignore[arg-type]
        lambda sse, sae, total, ls, lsq: _nmse_compute(sse, sae, total, ls, lsq, baseline, root),
        preds,
        target,
        weights,
        validate_args=validate_args,
    )


def weighted_r2(preds: Tensor, target: Tensor, weights: Tensor | None = None, *, validate_args: bool = True) -> Tensor:
    r"""Weighted coefficient of determination, :math:`1 - \sum w (p-y)^2 / \sum w (y-\bar y)^2`.

    Equal to scikit-learn's ``r2_score(y, p, sample_weight=w)``; TorchRec's ``r_squared``
    (``MSEMetric(include_r_squared=True)``).

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` when the labels are
        constant (TorchRec and scikit-learn return 1.0 there).

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_r2
        >>> weighted_r2(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.7857, dtype=torch.float64)
    """
    return _apply(_error_update, _r2_compute, preds, target, weights, validate_args=validate_args)  # type: ignore[arg-type]


def weighted_nmse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    baseline: Baseline = "one",
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
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the baseline's error is zero (TorchRec: 0).

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_nmse
        >>> preds, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])
        >>> weighted_nmse(preds, target)  # 1 / (0 + 1 + 9)
        tensor(0.1000, dtype=torch.float64)
        >>> weighted_nmse(preds, target, baseline="mean")
        tensor(0.2143, dtype=torch.float64)
    """
    return _normalised(preds, target, weights, baseline, False, validate_args)


def weighted_nrmse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    baseline: Baseline = "one",
    validate_args: bool = True,
) -> Tensor:
    r"""RMSE over the RMSE of a constant baseline prediction (TorchRec's ``nrmse``): :math:`\sqrt{\mathrm{NMSE}}`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        baseline: ``"one"`` (TorchRec's) or ``"mean"`` (the weighted label mean).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the baseline's error is zero.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_nrmse
        >>> weighted_nrmse(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.3162, dtype=torch.float64)
    """
    return _normalised(preds, target, weights, baseline, True, validate_args)
