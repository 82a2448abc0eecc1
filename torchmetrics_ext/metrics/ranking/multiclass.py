"""Multiclass recall at ``k`` as a :class:`torchmetrics.Metric`: :class:`MulticlassRecallAtK`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking.multiclass import (
    _multiclass_recall_arg_validation,
    _multiclass_recall_compute,
    _multiclass_recall_tensor_validation,
    _multiclass_recall_update,
)
from torchmetrics_ext.metrics.base import TaskMetric, one_task
from torchmetrics_ext.metrics.ranking._base import _RejectsTopK

__all__ = ["MulticlassRecallAtK"]


_HIT_STATE = re.compile(r"hit_sum_k(?P<k>\d+)_of(?P<num_classes>\d+)")  # the hit sum's name (see __init__)


class MulticlassRecallAtK(_RejectsTopK, TaskMetric):
    r"""Multiclass recall at ``k`` (TorchRec's ``MulticlassRecallMetric``) for ``(N, C)`` class scores.

    .. math:: \mathrm{Recall}@k = \frac{\sum_n w_n\,[\mathrm{rank}_n(y_n) < k]}{\sum_n w_n}

    Classes scored equal to the true class rank ahead of it (pessimistic ties). State: two
    float64 sums (constant memory), summed across ranks; the hit sum is named after ``k`` and
    ``num_classes`` (``hit_sum_k2_of3``), so compute groups never merge different cutoffs
    (checkpoints holding the former ``hit_sum`` key still load).

    Args:
        k: positive cutoff; ``k >= num_classes`` counts every sample as a hit (value 1, as a flat
            query shorter than ``k`` is ranked whole; TorchMetrics' ``top_k`` refuses ``k > num_classes``).
        num_classes: number of classes ``C``.
        validate_args: check each batch. Unchecked ``target`` ids must lie in ``[0, num_classes)``:
            one outside is an error raised by the indexing on the CPU (``RuntimeError``) and a
            device-side assert on CUDA, which ends the process's CUDA context.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: bad ``k``/``num_classes``, shapes, NaN scores, class ids out of range, bad weights.
        TypeError: non-tensor inputs, non-floating ``preds`` or non-integer ``target``.

    Note:
        ``k >= num_classes`` counts every sample as a hit (value 1). ``nan`` plus
        ``UndefinedMetricWarning`` while the total weight is zero (before any update, or after
        batches of zero weight only). TorchRec returns recall at every ``k`` at once; build one
        metric per ``k`` (they are cheap). A checkpoint saved with another ``k`` (or
        ``num_classes``) holds another hit sum: ``load_state_dict`` reads none of it and its note
        names both values; ``strict=True`` raises and leaves the metric exactly as it was,
        ``strict=False`` warns and starts the metric afresh (the rest of the checkpoint resumes).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import MulticlassRecallAtK
        >>> metric = MulticlassRecallAtK(k=2, num_classes=3)
        >>> preds = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
        >>> metric.update(preds, torch.tensor([0, 1, 1]))
        >>> metric.compute()
        tensor(0.6667, dtype=torch.float64)
    """

    is_differentiable = False
    sample_axis = 0  # a row of the (N, C) class scores
    higher_is_better = True
    full_state_update = False
    has_task_dim = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    _torchmetrics_options: ClassVar[Mapping[str, str]] = {"average": "", "ignore_index": ""}

    weight_sum: Tensor

    def __init__(self, k: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(one_task(self, kwargs), **kwargs)
        k, num_classes = _multiclass_recall_arg_validation(k, num_classes)
        self.k, self.num_classes = k, num_classes
        # The hits depend on k (and num_classes), so their state is named after them: compute groups
        # then never merge two cutoffs whose hits coincide on the first batch (the weight sum is shared).
        self._hit_state = f"hit_sum_k{k}_of{num_classes}"
        self._renamed_states["hit_sum"] = self._hit_state  # checkpoints saved before the rename
        self._hit_state = self._unchecked_state_name(self._hit_state)  # validate_args, in memory only
        self.add_state(self._hit_state, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _settings_named_by(self, others: Sequence[str]) -> str:
        """``k`` and ``num_classes`` of a checkpoint's hit sum saved with other ones (``hit_sum_k5_of20``), and ours."""
        for name in others:
            found = _HIT_STATE.fullmatch(name)
            if found is not None:
                k, num_classes = int(found["k"]), int(found["num_classes"])
                return (
                    f"saved with k={k}, num_classes={num_classes}; this metric has k={self.k}, "
                    f"num_classes={self.num_classes}"
                )
        return ""

    @property
    def hit_sum(self) -> Tensor:
        """Weighted hit count (the state named after ``k`` and ``num_classes``).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import MulticlassRecallAtK
            >>> metric = MulticlassRecallAtK(k=2, num_classes=3)
            >>> scores = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
            >>> metric.update(scores, torch.tensor([1, 0, 2]), torch.tensor([1.0, 2.0, 1.0]))
            >>> metric.hit_sum, metric.weight_sum  # only the first row's class is in its top 2
            (tensor(1., dtype=torch.float64), tensor(4., dtype=torch.float64))
            >>> list(metric.metric_state)
            ['hit_sum_k2_of3', 'weight_sum']
        """
        return getattr(self, self._hit_state)

    @hit_sum.setter
    def hit_sum(self, value: Tensor) -> None:
        setattr(self, self._hit_state, value)

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        _multiclass_recall_tensor_validation(preds, target, weights, self.num_classes)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Add ``(N, C)`` scores, ``(N,)`` class ids and optional ``(N,)`` weights."""
        if self._check_inputs:
            self._validate(preds, target, weights)
        hits, total = _multiclass_recall_update(preds, target, weights, self.k)
        self.hit_sum += hits
        self.weight_sum += total

    def compute(self) -> Tensor:
        """Weighted recall at ``k`` (float64 scalar)."""
        return _multiclass_recall_compute(self.hit_sum, self.weight_sum)
