"""Variants of NE and calibration (TorchRec's NE family) as :class:`torchmetrics.Metric` objects.

Each class holds three to six float64 ``(num_tasks,)`` sums reduced with ``sum`` and delegates
its math to :mod:`torchmetrics_ext.functional.entropy`. States that depend on a setting
(``eta``, the recalibration coefficient) carry it in their name, so a
:class:`~torchmetrics.MetricCollection` never merges two metrics that only look alike.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional import entropy as F
from torchmetrics_ext.functional.pointwise import _check_eta, _cross_entropy_update, _weighted_sums_update
from torchmetrics_ext.metrics.base import _tag
from torchmetrics_ext.metrics.pointwise import _derive_neg_labels, _PointwiseMetric
from torchmetrics_ext.utilities.checks import check_flag
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["CalibrationFreeNE", "NEPositive", "RecalibratedCalibration", "RecalibratedNE"]


def _eta_setting(eta: float) -> str:
    """The part of a state's name that ``eta`` gives (none for the default)."""
    return "" if eta == 1e-12 else f"eta_{_tag(eta)}"


class _EntropyVariant(_PointwiseMetric):
    """Probability predictions (or logits), labels in [0, 1]; ``eta`` and ``from_logits`` options."""

    is_differentiable = True
    higher_is_better: bool | None = False
    plot_lower_bound = 0.0

    def __init__(self, num_tasks: int = 1, *, eta: float = 1e-12, from_logits: bool = False, **kwargs: Any) -> None:
        eta = _check_eta(eta)
        super().__init__(num_tasks, _setting=_eta_setting(eta), _from_logits=from_logits, **kwargs)
        self.eta = float(eta)


class NEPositive(_EntropyVariant):
    r"""NE of the positive labels (TorchRec's ``ne_positive``): their cross-entropy over NE's normaliser.

    .. math::
        \mathrm{NE}_+ = \frac{-\sum_i w_i\,y_i \log p_i}
        {-\sum_i w_i\,[\bar y \log c + (1-\bar y)\log(1-c)]},
        \qquad c = \min(\max(\bar y, \eta), 1 - \eta)

    Probabilities are clamped to ``[eta, 1 - eta]``, and so is the base rate inside the
    denominator's logs only (:math:`c`), as in :class:`~torchmetrics_ext.NormalizedEntropy` and TorchRec.

    State: four float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        eta: probability clamp, in [0, 0.5).
        from_logits: ``preds`` are logits.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` until both classes have label weight.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NEPositive
        >>> metric = NEPositive()
        >>> metric(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
        tensor(0.5000, dtype=torch.float64)
    """

    _state_names = ("cross_entropy_positive_sum", "weighted_num_samples", "pos_labels", "neg_labels")
    _setting_dependent = ("cross_entropy_positive_sum",)
    _logit_dependent = ("cross_entropy_positive_sum",)

    def __init__(self, num_tasks: int = 1, *, eta: float = 1e-12, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, eta=eta, from_logits=from_logits, **kwargs)
        _derive_neg_labels(self)  # checkpoints written before `neg_labels`: total - pos

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._ne_positive_update(preds, target, weights, self.eta, self.from_logits)  # type: ignore[arg-type]

    def _compute_value(  # type: ignore[override]
        self, ce_positive_sum: Tensor, total: Tensor, pos: Tensor, neg: Tensor
    ) -> Tensor:
        return F._ne_positive_compute(ce_positive_sum, total, pos, neg, self.eta)


class CalibrationFreeNE(_EntropyVariant):
    r"""Calibration-free NE: cross-entropy relative to always predicting the model's own mean prediction.

    .. math::
        \frac{-\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}
        {-\sum_i w_i\,[y_i \log \bar p + (1-y_i)\log(1-\bar p)]},
        \qquad \bar p = \frac{\sum_i w_i p_i}{\sum_i w_i}

    TorchRec's ``cali_free_ne`` with its normalisation fixed (see ``torchrec_scaling``).

    State: six float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        eta: probability clamp, in [0, 0.5) (of the predictions and of their mean).
        from_logits: ``preds`` are logits: the exact log-sigmoid, and no clamp of the mean
            either. The states keep :math:`\sum w\,\sigma(z)` and :math:`\sum w\,\sigma(-z)`,
            so the mean prediction and its complement are both exact, also where the mean rounds
            to 1 (all logits above ~37). Only a mean of exactly 0 or 1 (every logit below -745,
            or every one above 745) is undefined; when every logit is below about -708 (or above
            708) the probabilities are float64 subnormals, whose relative precision falls to
            about 1e-3 at -744.
        torchrec_scaling: reproduce TorchRec 1.9's value, NE divided by the summed (not
            averaged) bits of predicting :math:`\bar p`, which shrinks as 1/total weight.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        State: six float64 sums per task, among them :math:`\sum w p` and :math:`\sum w (1 - p)`
        (a checkpoint written without the second one loads it as :math:`\sum w - \sum w p`), and
        :math:`\sum w y` and :math:`\sum w (1 - y)` (without the second: :math:`\sum w - \sum w y`).
        ``nan`` plus ``UndefinedMetricWarning`` where the denominator is not a finite positive
        number: no label weight, or a mean prediction of exactly 0 or 1 (e.g. ``eta=0`` with
        sure predictions). With ``torchrec_scaling=True`` labels of a single class are ``nan`` too:
        TorchRec's value there is its one-class NE (about 1e11 and more) over the summed bits, a
        finite number that measures nothing; the default definition is defined for them.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CalibrationFreeNE
        >>> metric = CalibrationFreeNE()
        >>> metric(torch.tensor([0.4, 0.4]), torch.tensor([1, 0]))  # a constant model scores 1
        tensor(1., dtype=torch.float64)
    """

    _state_names = (
        "cross_entropy_sum",
        "weighted_num_samples",
        "pos_labels",
        "weighted_pred_sum",
        "weighted_pred_complement_sum",
        "neg_labels",
    )
    _setting_dependent = ("cross_entropy_sum",)
    _logit_dependent = ("cross_entropy_sum", "weighted_pred_sum", "weighted_pred_complement_sum")

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        eta: float = 1e-12,
        from_logits: bool = False,
        torchrec_scaling: bool = False,
        **kwargs: Any,
    ) -> None:
        torchrec_scaling = check_flag("torchrec_scaling", torchrec_scaling)
        super().__init__(num_tasks, eta=eta, from_logits=from_logits, **kwargs)
        self.torchrec_scaling = torchrec_scaling
        # checkpoints written before the complement had a state of its own: sum w - sum w·p
        total, pred_sum, complement = self._state_keys[1], self._state_keys[3], self._state_keys[4]
        self._derived_states[complement] = (torch.sub, (total, pred_sum))
        _derive_neg_labels(self)  # and before `neg_labels`: total - pos

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._calibration_free_update(preds, target, weights, self.eta, self.from_logits)  # type: ignore[arg-type]

    def _compute_value(  # type: ignore[override]
        self, ce_sum: Tensor, total: Tensor, pos: Tensor, pred_sum: Tensor, complement_sum: Tensor, neg: Tensor
    ) -> Tensor:
        return F._calibration_free_compute(
            ce_sum, total, pos, pred_sum, complement_sum, self.eta, self.torchrec_scaling, self.from_logits, neg
        )


class _Recalibrated(_PointwiseMetric):
    """Scores mapped through ``c·p / (c·p + 1 - p)`` before the statistics; ``c`` names the changed state."""

    is_differentiable = True
    plot_lower_bound = 0.0

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        recalibration_coefficient: float = 1.0,
        from_logits: bool = False,
        _setting: str = "",
        **kwargs: Any,
    ) -> None:
        recalibration_coefficient = F._check_coefficient(recalibration_coefficient)
        c = float(recalibration_coefficient)
        setting = "_".join(s for s in ("" if c == 1.0 else f"recal_{_tag(c)}", _setting) if s)
        super().__init__(num_tasks, _setting=setting, _from_logits=from_logits, **kwargs)
        self.recalibration_coefficient = c

    def _recalibrated(self, preds: Tensor) -> Tensor:
        return F._recalibrate(preds, self.recalibration_coefficient, self.from_logits)


class RecalibratedNE(_Recalibrated):
    r"""NE of recalibrated predictions :math:`p' = c\,p / (c\,p + 1 - p)` (TorchRec's ``recalibrated_ne``).

    With negatives down-sampled at rate :math:`r` in training, ``recalibration_coefficient=r``
    maps the scores back to the serving distribution before NE.

    State: four float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        recalibration_coefficient: the odds multiplier :math:`c > 0`.
        eta: probability clamp (applied after recalibration), in [0, 0.5).
        from_logits: ``preds`` are logits (:math:`z + \log c`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RecalibratedNE
        >>> metric = RecalibratedNE(recalibration_coefficient=0.5)
        >>> metric(torch.tensor([2 / 3, 2 / 3]), torch.tensor([1, 0]))
        tensor(1.0000, dtype=torch.float64)
    """

    _state_names = ("cross_entropy_sum", "weighted_num_samples", "pos_labels", "neg_labels")
    _setting_dependent = ("cross_entropy_sum",)
    _logit_dependent = ("cross_entropy_sum",)
    higher_is_better = False

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        recalibration_coefficient: float = 1.0,
        eta: float = 1e-12,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        eta = _check_eta(eta)
        super().__init__(
            num_tasks,
            recalibration_coefficient=recalibration_coefficient,
            from_logits=from_logits,
            _setting=_eta_setting(eta),
            **kwargs,
        )
        self.eta = float(eta)
        _derive_neg_labels(self)  # checkpoints written before `neg_labels`: total - pos

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return _cross_entropy_update(self._recalibrated(preds), target, weights, self.eta, self.from_logits)  # type: ignore[arg-type]

    def _compute_value(self, ce_sum: Tensor, total: Tensor, pos: Tensor, neg: Tensor) -> Tensor:  # type: ignore[override]
        return F._normalized_entropy_compute(ce_sum, total, pos, self.eta, "RecalibratedNE", neg)


class RecalibratedCalibration(_Recalibrated):
    r"""Calibration of recalibrated predictions, :math:`\sum w p' / \sum w y` (TorchRec's ``recalibrated_calibration``).

    State: three float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        recalibration_coefficient: the odds multiplier :math:`c > 0`.
        from_logits: ``preds`` are logits.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Raises:
        TypeError: an ``eta``: a ratio of sums clamps nothing (the functional twin has none
            either). Checkpoints saved when it was accepted (a state named after it) load.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RecalibratedCalibration
        >>> metric = RecalibratedCalibration(recalibration_coefficient=0.5)
        >>> metric(torch.tensor([2 / 3, 2 / 3]), torch.tensor([1, 0]))
        tensor(1.0000, dtype=torch.float64)
    """

    _state_names = ("weighted_pred_sum", "weighted_label_sum", "weighted_num_samples")
    _setting_dependent = ("weighted_pred_sum",)
    _logit_dependent = ("weighted_pred_sum",)
    higher_is_better = None

    def __init__(
        self, num_tasks: int = 1, *, recalibration_coefficient: float = 1.0, from_logits: bool = False, **kwargs: Any
    ) -> None:
        if "eta" in kwargs:
            raise WrongTypeError(
                "RecalibratedCalibration has no `eta`: calibration is a ratio of sums and clamps nothing "
                "(RecalibratedNE takes one)."
            )
        c = recalibration_coefficient
        super().__init__(num_tasks, recalibration_coefficient=c, from_logits=from_logits, **kwargs)
        # its states were named after an `eta` it accepted without using: checkpoints of any eta load
        logits = "_logits" if from_logits else ""
        base = self._saved_keys[0].removesuffix(logits)  # as checkpoints name it (either validate_args)
        self._load_former_names(self._state_keys[0], f"{re.escape(base)}_eta_[0-9a-z]+{re.escape(logits)}")

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return _weighted_sums_update(self._recalibrated(preds), target, weights, self.from_logits)

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._calibration_compute(states[0], states[1], "RecalibratedCalibration", states[2])
