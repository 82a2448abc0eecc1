"""R² and normalised (R)MSE as :class:`torchmetrics.Metric` objects, on MSE's own states.

The classes hold exactly the five float64 sums of ``WeightedMSE`` (squared and absolute error,
weight, label sum, squared label sum), so a :class:`~torchmetrics.MetricCollection` with compute
groups updates MSE, RMSE, MAE, R², NMSE and NRMSE once.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchmetrics_ext.functional import regression as F
from torchmetrics_ext.metrics.pointwise import _ErrorMetric

__all__ = ["WeightedNMSE", "WeightedNRMSE", "WeightedR2"]


class WeightedR2(_ErrorMetric):
    r"""Weighted R², :math:`1 - \sum_i w_i (p_i - y_i)^2 / \sum_i w_i (y_i - \bar y)^2` (TorchRec's ``r_squared``).

    Equal to scikit-learn's ``r2_score(..., sample_weight=w)``.

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        from_logits: ``preds`` are logits: the errors are those of :math:`\sigma(z_i)` (see
            :class:`~torchmetrics_ext.WeightedMSE`).
        validate_args: check each batch (finite values, non-negative weights).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the labels are constant (TorchRec: 1.0).
        The label variance comes from the float64 sums :math:`\sum w y`, :math:`\sum w y^2`
        (sum-reducible across batches, ranks and windows), which cancel for labels with a large
        common offset: relative error about :math:`10^{-16}\,(\text{offset}/\text{spread})^2`,
        and ``nan`` (with a warning saying so) once the spread is below ~1e-6 of the offset.
        Subtract the offset from ``preds`` and ``target`` first; R² does not change. The function
        :func:`~torchmetrics_ext.functional.weighted_r2` (one batch, two passes) has no such limit.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedR2
        >>> metric = WeightedR2()
        >>> metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.7857, dtype=torch.float64)
    """

    higher_is_better = True
    plot_lower_bound = None
    plot_upper_bound = 1.0

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._r2_compute(*states)


class WeightedNMSE(_ErrorMetric):
    r"""MSE over the MSE of a constant baseline (TorchRec's ``nmse``), :math:`\sum w (p-y)^2 / \sum w (y-c)^2`.

    TorchRec's baseline is :math:`c = 1`; ``baseline="mean"`` uses the weighted label mean
    (then NMSE is :math:`1 - R^2`).

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        baseline: ``"one"`` (TorchRec's) or ``"mean"``.
        from_logits: ``preds`` are logits: the errors are those of :math:`\sigma(z_i)` (see
            :class:`~torchmetrics_ext.WeightedMSE`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        The baseline's error comes from the float64 label sums shared with
        :class:`~torchmetrics_ext.WeightedMSE`, :math:`\sum w y^2 - 2c \sum w y + c^2 \sum w`, as in
        :class:`WeightedR2`: relative error about
        :math:`10^{-16}\,(\text{label size}/\text{distance to the baseline})^2` (RMS values), and
        ``nan`` with an ``UndefinedMetricWarning`` once the distance is below ~1e-6 of the size. With
        the baseline 1 that is labels close to 1: within ~1e-5 relative for labels 1 ± 1e-5,
        ``nan`` for 1 ± 1e-6 or closer. TorchRec sums its baseline error
        :math:`\sum w (1 - y)^2` per sample (``const_pred_error_sum``) and keeps those digits;
        for such labels divide a :class:`~torchmetrics_ext.WeightedMSE` by one fed predictions of
        all ones. A sixth state doing the same would cost every update of the family. With
        ``baseline="mean"`` subtract a large common label offset from ``preds`` and ``target``
        first (NMSE does not change). The functions (:func:`~torchmetrics_ext.functional.weighted_nmse`,
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
        self, num_tasks: int = 1, *, baseline: F.Baseline = "one", from_logits: bool = False, **kwargs: Any
    ) -> None:
        baseline = F._check_baseline(baseline)
        super().__init__(num_tasks, from_logits=from_logits, **kwargs)
        self.baseline: F.Baseline = baseline

    def _compute_value(  # type: ignore[override]
        self, sse: Tensor, sae: Tensor, total: Tensor, label_sum: Tensor, label_sq_sum: Tensor
    ) -> Tensor:
        return F._nmse_compute(sse, sae, total, label_sum, label_sq_sum, self.baseline, self._root)


class WeightedNRMSE(WeightedNMSE):
    r"""RMSE over the RMSE of a constant baseline (TorchRec's ``nrmse``), :math:`\sqrt{\mathrm{NMSE}}`.

    State: :class:`~torchmetrics_ext.WeightedMSE`'s five float64 sums per task (constant memory,
    ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        baseline: ``"one"`` (TorchRec's) or ``"mean"`` (the weighted label mean).
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
