"""Hindsight target precision/recall (TorchRec's ``hindsight_target_pr``) as a :class:`torchmetrics.Metric`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional import hindsight as F
from torchmetrics_ext.functional.auc.binary import _task_offsets
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.utilities.checks import check_flag, format_pointwise

__all__ = ["HindsightTargetPR"]


class HindsightTargetPR(TaskMetric):
    r"""The lowest uniform threshold reaching a target precision, with the precision and recall there.

    Every one of the ``num_thresholds`` thresholds :math:`t_i = i / (B - 1)` is evaluated at
    once: the state is two float64 ``(T, B + 1)`` histograms of positive and negative label
    weight (constant memory, summed across ranks), and ``compute`` takes reverse cumulative sums.
    A prediction is positive iff :math:`p \ge t`.

    ``compute()`` returns ``{"threshold", "precision", "recall"}`` (scalars for one task,
    ``(T,)`` otherwise). The threshold follows TorchRec's rule: a threshold that no prediction
    reaches has precision 0 (chosen only for ``target_precision=0``), and when none reaches the
    target the last one (1.0) is reported. A task that saw nothing (no update, a reset, only
    empty or zero-weight batches) reports 1.0, or 0.0 with ``target_precision=0``, and ``nan``
    precision and recall, each with an ``UndefinedMetricWarning`` saying "no samples seen"
    (TorchRec reports 0 for both). TorchRec's keys: ``hindsight_target_pr`` (the threshold),
    ``hindsight_target_precision``, ``hindsight_target_recall``. In a
    :class:`~torchmetrics_ext.RecMetricModule` the keys are ``"{name}.threshold/{task}"``, ... (a
    dict-valued metric's); ``from_torchrec_config`` does not build it.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        target_precision: the precision to reach, in [0, 1].
        num_thresholds: number of uniform thresholds on [0, 1] (TorchRec: 1000).
        from_logits: ``preds`` are logits (thresholds stay probabilities).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Note:
        Differences from TorchRec 1.9, both bugs there: TorchRec also counts a prediction equal
        to a threshold as a false negative (:math:`p \le t`), lowering recall; and it reports
        the threshold as ``torch.Tensor(index)``, an uninitialised tensor of that length. Here
        the threshold's value is reported. TorchRec supports one task only.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import HindsightTargetPR
        >>> metric = HindsightTargetPR(target_precision=0.7, num_thresholds=11)
        >>> metric.update(torch.tensor([0.9, 0.8, 0.6]), torch.tensor([1, 1, 0]))
        >>> metric.update(torch.tensor([0.4, 0.3]), torch.tensor([1, 0]))
        >>> {k: round(v.item(), 4) for k, v in metric.compute().items()}
        {'threshold': 0.4, 'precision': 0.75, 'recall': 1.0}
    """

    is_differentiable = False
    higher_is_better = None
    _dict_value_entry = '"precision"'  # a dict value: no metric arithmetic (TensorArithmetic)
    pos_hist: Tensor
    neg_hist: Tensor

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        target_precision: float = 0.5,
        num_thresholds: int = 1000,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        target_precision, num_thresholds = F._check_hindsight_args(target_precision, num_thresholds)
        from_logits = check_flag("from_logits", from_logits)
        super().__init__(num_tasks, **kwargs)
        self.target_precision = float(target_precision)
        self.num_thresholds = num_thresholds
        self.from_logits = from_logits
        # states depend on the thresholds (and the logit transform), not on the target precision
        suffix = f"_{num_thresholds}" + ("_logits" if from_logits else "")
        # and validate_args, in memory only (see TaskMetric._unchecked_state_name)
        self._names = tuple(self._unchecked_state_name(f"{name}{suffix}") for name in ("pos_hist", "neg_hist"))
        for name in self._names:
            self.add_state(
                name, default=torch.zeros(num_tasks, num_thresholds + 1, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def _format(
        self, preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return format_pointwise(preds, target, weights, self.num_tasks, from_logits=self.from_logits, validate=validate)

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        self._format(preds, target, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains:
        """Probabilities (or logits) and labels in [0, 1]: a ``RecMetricModule`` feeds it."""
        return InputDomains("probability", "unit", self.from_logits)

    @property
    def _histogram_states(self) -> tuple[str, ...]:
        """The two histograms, filled sample by sample at one ``(task, thresholds reached)`` index per sample.

        :class:`~torchmetrics_ext.Windowed` keeps each update's bin indices and label weights for
        them instead of two dense ``(T, B + 1)`` histograms per update.
        """
        return self._names

    def _histogram_entries(
        self, preds: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        """What ``update`` would add to the histograms, validated as ``update`` does, without adding it.

        Returns:
            ``(flat index (T, N), values (2, T, N))`` in the order of the states; ``None`` for an empty batch.
        """
        p, t, w = self._format(preds, target, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return None
        assert t is not None
        reached, values = F._hindsight_entries(p, t, w, self.num_thresholds, self.from_logits)
        if self.num_tasks > 1:
            reached += _task_offsets(self.num_tasks, self.num_thresholds + 1, reached.device)
        return reached, values

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds``/``target`` of shape ``(N,)`` or ``(T, N)``, optional ``weights``."""
        p, t, w = self._format(preds, target, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return
        for name, hist in zip(self._names, F._hindsight_update(p, t, w, self.num_thresholds, self.from_logits)):  # type: ignore[arg-type]
            getattr(self, name).add_(hist)

    def compute(self) -> dict[str, Tensor]:
        """``{"threshold", "precision", "recall"}`` over everything accumulated."""
        pos_hist, neg_hist = (getattr(self, n) for n in self._names)
        out = F._hindsight_compute(pos_hist, neg_hist, self.target_precision)
        return {k: self._squeeze_tasks(out[k]) for k in self._value_entries()}

    def _value_entries(self) -> tuple[str, ...]:
        """``compute()``'s keys."""
        return ("threshold", "precision", "recall")
