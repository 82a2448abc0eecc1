"""Counters and plain averages (TorchRec's sum, count and average metrics) as :class:`torchmetrics.Metric` objects.

Every class is a :class:`~torchmetrics_ext.metrics.pointwise._PointwiseMetric`: one or two
float64 ``(num_tasks,)`` sums reduced with ``sum`` (constant memory), ``update(preds, target,
weights)`` with ``(N,)`` or ``(T, N)`` inputs, and a value that is a sum or a ratio of sums. So
each one is windowed by the window wrapper and split by :class:`~torchmetrics_ext.Segmented`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor

from torchmetrics_ext.functional import counters as F
from torchmetrics_ext.metrics.base import InputDomains
from torchmetrics_ext.metrics.pointwise import _per_sample_terms, _PointwiseMetric
from torchmetrics_ext.utilities.checks import PredsDomain, TargetDomain, as_str, check_flag, check_int
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = [
    "LabelAverage",
    "NumMissingLabels",
    "NumPositiveSamples",
    "NumServingExamples",
    "SumWeights",
    "TensorWeightedAverage",
    "WeightedSumPredictions",
]


class _CounterMetric(_PointwiseMetric):
    """A per-task sum reported as is; ``target`` is optional unless the count needs labels."""

    _preds_domain: ClassVar[PredsDomain] = "real"
    _target_domain: ClassVar[TargetDomain] = "real"
    is_differentiable = False
    higher_is_better = None
    plot_lower_bound: float | None = 0.0

    def __init__(self, num_tasks: int = 1, **kwargs: Any) -> None:
        # the public signature of the counters (no private setting shown); those with a setting
        # pass the base's `_setting` through kwargs
        super().__init__(num_tasks, **kwargs)

    def update(self, preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds`` (and ``target`` where needed), ``(N,)`` or ``(T, N)``; optional weights."""
        super().update(preds, target, weights)  # type: ignore[arg-type]

    def _compute_value(self, *states: Tensor) -> Tensor:
        return states[0].clone()


class SumWeights(_CounterMetric):
    r"""Total sample weight per task, :math:`\sum_i w_i` (TorchRec's ``sum_weights``).

    State: one float64 sum per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import SumWeights
        >>> metric = SumWeights()
        >>> metric.update(torch.tensor([0.2, 0.7]), weights=torch.tensor([1.0, 0.5]))
        >>> metric.update(torch.tensor([0.4]))
        >>> metric.compute()
        tensor(2.5000, dtype=torch.float64)
    """

    _state_names = ("weighted_num_samples",)
    reads_predictions = False  # a value of the labels and weights alone

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._sum_weights_update(preds, target, weights)


class NumPositiveSamples(_CounterMetric):
    r"""Weighted number of positive labels per task, :math:`\sum_i w_i y_i` (TorchRec's ``num_positive_samples``).

    State: one float64 sum per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        validate_args: check each batch (labels in [0, 1]).
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NumPositiveSamples
        >>> metric = NumPositiveSamples(num_tasks=2)
        >>> metric.update(torch.rand(2, 3), torch.tensor([[1, 0, 1], [0, 0, 1]]), torch.tensor([1.0, 1.0, 0.5]))
        >>> metric.compute()
        tensor([1.5000, 0.5000], dtype=torch.float64)
    """

    _state_names = ("pos_labels",)
    reads_predictions = False  # a value of the labels and weights alone
    _target_domain = "unit"

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:  # type: ignore[override]
        """Accumulate one batch: ``preds``/``target`` of shape ``(N,)`` or ``(T, N)``, optional ``weights``."""
        super().update(preds, target, weights)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._positive_update(preds, target, weights)


class WeightedSumPredictions(_CounterMetric):
    r"""Weighted sum of the predictions per task, :math:`\sum_i w_i p_i` (TorchRec's ``weighted_sum_predictions``).

    State: one float64 sum per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        validate_args: check each batch (finite predictions).
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedSumPredictions
        >>> metric = WeightedSumPredictions()
        >>> metric(torch.tensor([0.5, 0.25]), weights=torch.tensor([2.0, 4.0]))
        tensor(2., dtype=torch.float64)
    """

    _state_names = ("weighted_pred_sum",)
    is_differentiable = True  # a weighted sum of the predictions
    plot_lower_bound = None

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._prediction_sum_update(preds, target, weights)


class NumServingExamples(_CounterMetric):
    r"""Number of rows with non-zero weight per task (TorchRec's serving ``total_examples`` counter).

    TorchRec's ``serving_ne`` and ``serving_calibration`` are plain NE and calibration
    (:class:`NormalizedEntropy`, :class:`Calibration`) plus this count: rows logged with weight
    0 were not served. Unweighted batches count every row.

    State: one float64 count per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NumServingExamples
        >>> metric = NumServingExamples()
        >>> metric(torch.tensor([0.2, 0.7, 0.1]), weights=torch.tensor([1.0, 0.0, 3.0]))
        tensor(2., dtype=torch.float64)
    """

    _state_names = ("num_serving_examples",)
    reads_predictions = False  # a value of the labels and weights alone

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._serving_update(preds, target, weights)


class NumMissingLabels(_CounterMetric):
    r"""Weighted number of missing (NaN) labels per task (TorchRec's ``num_missing_labels``).

    ``target`` must be floating point; NaN marks a missing label (inf is rejected). A
    :class:`~torchmetrics_ext.RecMetricModule` rejects NaN labels, so it refuses this metric: use
    it standalone on the label column.

    State: one float64 count per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        count_zero_weight: count every NaN label once, whatever its weight. Under TorchRec's
            ``allow_missing_label_with_zero_weight`` convention missing labels carry weight 0,
            so the default weighted count would stay 0; this option counts them.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NumMissingLabels
        >>> target = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
        >>> weights = torch.tensor([1.0, 2.0, 1.0, 0.0])
        >>> NumMissingLabels()(torch.zeros(4), target, weights)
        tensor(2., dtype=torch.float64)
    """

    _state_names = ("missing_labels",)
    reads_predictions = False  # a value of the labels and weights alone
    _setting_dependent = ("missing_labels",)

    def __init__(self, num_tasks: int = 1, *, count_zero_weight: bool = False, **kwargs: Any) -> None:
        count_zero_weight = check_flag("count_zero_weight", count_zero_weight)
        super().__init__(num_tasks, _setting="unweighted" if count_zero_weight else "", **kwargs)
        self.count_zero_weight = count_zero_weight

    @property
    def _zero_weight_batches_count(self) -> bool:
        """Whether an all-zero-weight batch changes the value: its NaN labels count with ``count_zero_weight``.

        ``Windowed`` then keeps such a batch in the window (it skips it for every other metric).
        """
        return self.count_zero_weight

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:  # type: ignore[override]
        """Accumulate one batch: ``target`` floating, NaN where missing; optional ``weights``."""
        super().update(preds, target, weights)

    def _format(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        validate: bool,
        preds_name: str | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return F._format_missing(preds, target, weights, self.num_tasks, validate)  # type: ignore[arg-type]

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._missing_update(target, weights, self.count_zero_weight)  # type: ignore[arg-type]

    @property
    def input_domains(self) -> InputDomains | None:
        """``None``: NaN labels are its input, and no domain holds them (a ``RecMetricModule`` rejects NaN labels)."""
        return None


class LabelAverage(_CounterMetric):
    r"""Weighted mean of the labels, :math:`\sum_i w_i y_i / \sum_i w_i` (TorchRec's ``label_average``).

    Labels may be any finite value; for click labels this equals :class:`CTR`. TorchRec's
    ``prediction_average`` is :class:`WeightedAverage`.

    State: two float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (TorchRec: 0).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import LabelAverage
        >>> metric = LabelAverage()
        >>> metric(torch.zeros(3), torch.tensor([1.0, 4.0, 7.0]), torch.tensor([1.0, 1.0, 2.0]))
        tensor(4.7500, dtype=torch.float64)
    """

    _state_names = ("weighted_label_sum", "weighted_num_samples")
    reads_predictions = False  # a value of the labels and weights alone
    plot_lower_bound = None

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:  # type: ignore[override]
        """Accumulate one batch: finite ``target``, optional ``weights``; ``preds`` give the layout.

        ``preds`` are checked (floating point, finite: NaN or inf is a ``ValueError``) but their
        values are not used.
        """
        super().update(preds, target, weights)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._label_average_update(preds, target, weights)

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._label_average_compute(*states)


class TensorWeightedAverage(_CounterMetric):
    r"""Weighted mean of a named model output, :math:`\sum_i w_i v_i / \sum_i w_i`.

    TorchRec's ``tensor_weighted_avg``. ``update(values, weights=None)``: the averaged tensor is
    not the predictions but a tensor the model emits under ``tensor_name``, so a
    :class:`~torchmetrics_ext.RecMetricModule`, which feeds each task's prediction, label and
    weight columns, refuses it: update it with ``model_out[metric.tensor_name]`` yourself. A task
    whose ``weighted`` flag is false averages without weights, as TorchRec's
    ``RecTaskInfo.weighted``.

    State: two float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        tensor_name: name of the model output to average (metadata: the column to feed it).
        weighted: one bool for every task, or a sequence of one bool per task (NumPy bools and
            0-dim bool tensors accepted, so a bool tensor or array of one flag per task too);
            anything else (``1``, ``None``, a wrong length) is a ``ValueError``.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import TensorWeightedAverage
        >>> metric = TensorWeightedAverage(num_tasks=2, tensor_name="dwell_time", weighted=[True, False])
        >>> metric(torch.tensor([[1.0, 3.0], [1.0, 3.0]]), torch.tensor([3.0, 1.0]))
        tensor([1.5000, 2.0000], dtype=torch.float64)
    """

    _state_names = ("weighted_sum", "weighted_num_samples")
    _setting_dependent = _state_names
    _preds_name = "values"
    is_differentiable = True  # a weighted mean of the values
    plot_lower_bound = None

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        tensor_name: str | None = None,
        weighted: bool | Sequence[bool] = True,
        **kwargs: Any,
    ) -> None:
        num_tasks = check_int("num_tasks", num_tasks, 1)
        flags = F._weighted_flags(weighted, num_tasks)
        if tensor_name is not None and as_str(tensor_name) is None:
            raise WrongTypeError(f"Expected `tensor_name` to be a string or None, got {tensor_name!r}.")
        tensor_name = None if tensor_name is None else as_str(tensor_name)  # a NumPy string as its Python string
        setting = (
            "" if flags is None else "unweighted_" + "_".join(str(i) for i in (~flags).nonzero().flatten().tolist())
        )
        super().__init__(num_tasks, _setting=setting, **kwargs)
        self.tensor_name = tensor_name
        self._flags = flags

    @property
    def _zero_weight_batches_count(self) -> bool:
        """Whether an all-zero-weight batch changes the value: a task whose ``weighted`` flag is false averages it.

        ``Windowed`` then keeps such a batch in the window (the tasks share one window).
        """
        return self._flags is not None

    def update(self, values: Tensor, weights: Tensor | None = None) -> None:  # type: ignore[override]
        """Accumulate one batch of ``values`` (``(N,)`` or ``(T, N)``) with optional ``weights``."""
        super().update(values, None, weights)

    def _validate(self, values: Tensor, weights: Tensor | None = None) -> None:  # type: ignore[override]
        self._format(values, None, weights, validate=True)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._tensor_average_update(preds, weights, self._flags)

    def _sample_terms(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        # the per-task flags pick each task's weights before the rows become one-sample tasks
        weights = F._flagged_weights(weights, self._flags)
        return _per_sample_terms(lambda p, t, w: F._tensor_average_update(p, w, None), preds, target, weights)

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._tensor_average_compute(*states)

    @property
    def input_domains(self) -> InputDomains | None:
        """``None``: ``update(values, weights)`` takes no ``(preds, target, weights)`` columns."""
        return None
