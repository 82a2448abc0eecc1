"""R² and normalised (R)MSE as :class:`torchmetrics.Metric` objects, on MSE's own states.

The classes hold exactly the five float64 sums of ``WeightedMSE`` (squared and absolute error,
weight, label sum, squared label sum), so a :class:`~torchmetrics.MetricCollection` with compute
groups updates MSE, RMSE, MAE, R², NMSE and NRMSE once.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional import regression as F
from torchmetrics_ext.metrics.base import _tag
from torchmetrics_ext.metrics.pointwise import _ErrorMetric, _PointwiseMetric
from torchmetrics_ext.utilities.checks import as_real
from torchmetrics_ext.utilities.errors import refusal

__all__ = ["WeightedNMSE", "WeightedNRMSE", "WeightedR2"]


def _check_offset(label_offset: object) -> float:
    """``label_offset`` as a Python float (NumPy scalars and 0-dim tensors accepted); ``ValueError`` unless finite."""
    value = as_real(label_offset)
    if value is None or not math.isfinite(value):
        raise refusal(
            f"Expected `label_offset` to be a finite float (a value near the labels), got {label_offset!r}.",
            wrong_type=value is None,
        )
    return float(value)


class _LabelMoments(_ErrorMetric):
    r"""R²/NMSE's states: MSE's five sums, the label sums taken about ``label_offset`` when one is given.

    With an offset :math:`c` the label states are :math:`\sum w (y - c)` and :math:`\sum w (y - c)^2`
    (states named after it, so never one compute group with MSE's sums about 0); one constant for every
    batch, rank and window, so they still merge by addition, exactly.
    """

    _setting_dependent = ("label_sum", "label_squared_sum")

    def __init__(
        self, num_tasks: int = 1, *, label_offset: float = 0.0, from_logits: bool = False, **kwargs: Any
    ) -> None:
        offset = _check_offset(label_offset)
        setting = f"offset_{_tag(offset)}" if offset != 0 else ""
        _PointwiseMetric.__init__(self, num_tasks, _setting=setting, _from_logits=from_logits, **kwargs)
        self.label_offset = offset

    def _shift(self, total: Tensor) -> Tensor | None:
        """The label states' shift for :func:`~torchmetrics_ext.functional.regression._label_sse` (``None``: 0)."""
        return None if self.label_offset == 0 else torch.full_like(total, self.label_offset)


class WeightedR2(_LabelMoments):
    r"""Weighted R², :math:`1 - \sum_i w_i (p_i - y_i)^2 / \sum_i w_i (y_i - \bar y)^2` (TorchRec's ``r_squared``).

    Equal to scikit-learn's ``r2_score(..., sample_weight=w)``.

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        label_offset: a finite value near the labels (default 0): the label states are sums about it
            (see the Note), for labels with a large common offset (timestamps, prices in cents).
        from_logits: ``preds`` are logits: the errors are those of :math:`\sigma(z_i)` (see
            :class:`~torchmetrics_ext.WeightedMSE`).
        validate_args: check each batch (finite values, non-negative weights).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the labels are constant (TorchRec: 1.0).
        The label variance comes from the float64 sums :math:`\sum w y`, :math:`\sum w y^2`
        (sum-reducible across batches, ranks and windows), which cancel for labels with a large
        common offset: relative error about :math:`10^{-16}\,(\text{offset}/\text{spread})^2`,
        with a ``PrecisionLossWarning`` at compute once that estimate passes 1e-6 (saying how many
        digits are left and the weighted label mean to pass as ``label_offset``), and ``nan``
        (with an ``UndefinedMetricWarning`` saying so) once the spread is below ~1e-6 of the offset.
        ``label_offset=c`` keeps those digits: the states are then :math:`\sum w (y - c)` and
        :math:`\sum w (y - c)^2` (named after ``c``, so not shared with ``WeightedMSE``), the same
        constant on every batch, rank and window, so they still merge by addition, at the same cost
        per update; the error is then about :math:`10^{-16}\,(|\bar y - c|/\text{spread})^2`. The function
        :func:`~torchmetrics_ext.functional.weighted_r2` (one batch, two passes) has no such limit.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedR2
        >>> metric = WeightedR2()
        >>> metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.7857, dtype=torch.float64)
        >>> preds = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) + 1e9  # labels 1e9 + (1, 2, 4)
        >>> target = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64) + 1e9
        >>> WeightedR2(label_offset=1e9)(preds, target)  # without the offset: nan (the sums about 0 cancel)
        tensor(0.7857, dtype=torch.float64)
    """

    higher_is_better = True
    plot_lower_bound = None
    plot_upper_bound = 1.0

    def _compute_value(  # type: ignore[override]
        self, sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor
    ) -> Tensor:
        return F._r2_compute(sse, sae, total, label_sum, label_sq_sum, self._shift(total))


class WeightedNMSE(_LabelMoments):
    r"""MSE over the MSE of a constant baseline (TorchRec's ``nmse``), :math:`\sum w (p-y)^2 / \sum w (y-c)^2`.

    TorchRec's baseline is :math:`c = 1`; ``baseline="mean"`` uses the weighted label mean
    (then NMSE is :math:`1 - R^2`).

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        baseline: ``"one"`` (TorchRec's) or ``"mean"``.
        label_offset: a finite value near the labels (default 0): the label states are sums about it
            (see :class:`WeightedR2`); ``1.0`` keeps the digits of the baseline 1 for labels close to 1.
        from_logits: ``preds`` are logits: the errors are those of :math:`\sigma(z_i)` (see
            :class:`~torchmetrics_ext.WeightedMSE`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        The baseline's error comes from the float64 label sums shared with
        :class:`~torchmetrics_ext.WeightedMSE`, :math:`\sum w y^2 - 2c \sum w y + c^2 \sum w`, as in
        :class:`WeightedR2`: relative error about
        :math:`10^{-16}\,(\text{label size}/\text{distance to the baseline})^2` (RMS values), and
        ``nan`` with an ``UndefinedMetricWarning`` once the distance is below ~1e-6 of the size
        (a ``PrecisionLossWarning`` once the estimated error passes 1e-6, see :class:`WeightedR2`). With
        the baseline 1 that is labels close to 1: within ~1e-5 relative for labels 1 ± 1e-5,
        ``nan`` for 1 ± 1e-6 or closer. TorchRec sums its baseline error
        :math:`\sum w (1 - y)^2` per sample (``const_pred_error_sum``) and keeps those digits;
        ``label_offset=1.0`` does too (the label sums are then about 1), as ``label_offset`` near the
        labels does for a large common label offset with either baseline (see :class:`WeightedR2`).
        The functions (:func:`~torchmetrics_ext.functional.weighted_nmse`,
        one batch) sum the baseline's error about the baseline and have neither limit.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedNMSE
        >>> metric = WeightedNMSE()
        >>> metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.1000, dtype=torch.float64)
    """

    _root = False

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        baseline: F.Baseline = "one",
        label_offset: float = 0.0,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        baseline = F._check_baseline(baseline)
        super().__init__(num_tasks, label_offset=label_offset, from_logits=from_logits, **kwargs)
        self.baseline: F.Baseline = baseline

    def _compute_value(  # type: ignore[override]
        self, sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor
    ) -> Tensor:
        return F._nmse_compute(sse, sae, total, label_sum, label_sq_sum, self.baseline, self._root, self._shift(total))


class WeightedNRMSE(WeightedNMSE):
    r"""RMSE over the RMSE of a constant baseline (TorchRec's ``nrmse``), :math:`\sqrt{\mathrm{NMSE}}`.

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        baseline: ``"one"`` (TorchRec's) or ``"mean"`` (the weighted label mean).
        label_offset: a finite value near the labels (see :class:`WeightedR2`).
        from_logits: ``preds`` are logits: the errors are those of :math:`\sigma(z_i)` (see
            :class:`~torchmetrics_ext.WeightedMSE`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedNRMSE
        >>> metric = WeightedNRMSE(baseline="mean")
        >>> metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.4629, dtype=torch.float64)
    """

    _root = True
