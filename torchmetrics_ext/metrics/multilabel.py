"""Multi-label precision (TorchRec's ``multi_label_precision``) as a :class:`torchmetrics.Metric`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional import multilabel as F
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.utilities.checks import as_str, sequence_items
from torchmetrics_ext.utilities.errors import refusal

__all__ = ["MultiLabelPrecision"]


class MultiLabelPrecision(TaskMetric):
    r"""Weighted precision of each label, :math:`TP_j / (TP_j + FP_j)`, for bit-encoded label sets.

    ``preds`` and ``target`` are integers whose bit ``j`` (least significant first) marks label
    ``j``, as in TorchRec: with ``num_labels=3``, 5 is ``{0, 2}``. State: two float64
    ``(T, L)`` sums (constant memory); an update's working memory is a few ``(T, N)`` tensors,
    whatever ``L``, once a batch holds more than 2**15 bits (``T * N * L``; a smaller one is read
    as ``(T, N, L)`` float64 tensors, 256 KB at most). ``compute()`` returns ``(L,)`` for one task, ``(T, L)``
    otherwise; TorchRec reports one key per label (``multi_label_precision{label_name}``).

    Args:
        num_labels: number of labels ``L``.
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        label_names: optional names of the labels (metadata for a module's keys).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Note:
        A label never predicted is ``nan`` with an ``UndefinedMetricWarning`` (TorchRec: 0).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import MultiLabelPrecision
        >>> metric = MultiLabelPrecision(num_labels=3)
        >>> metric(torch.tensor([5, 3, 1]), torch.tensor([1, 3, 4]))
        tensor([0.6667, 1.0000, 0.0000], dtype=torch.float64)
    """

    is_differentiable = False
    _keeps_value_shape = True  # (L,) also for one label
    higher_is_better = True
    value_ndim = 1  # one value per label
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    true_positives: Tensor
    false_positives: Tensor

    def __init__(
        self, num_labels: int, num_tasks: int = 1, *, label_names: list[str] | None = None, **kwargs: Any
    ) -> None:
        num_labels = F._check_num_labels(num_labels)
        given = label_names
        if label_names is not None:  # any sequence of strings (NumPy ones too), kept as Python strings
            names = [as_str(name) for name in sequence_items("label_names", label_names) or ()]
            if len(names) != num_labels or any(name is None for name in names):
                raise refusal(
                    f"Expected `label_names` to be {num_labels} strings, got {given!r}.",
                    wrong_type=any(name is None for name in names)
                    or sequence_items("label_names", label_names) is None,
                )
            label_names = names  # type: ignore[assignment]
        super().__init__(num_tasks, **kwargs)
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(num_labels)]
        # validate_args names them in memory only (see TaskMetric._unchecked_state_name)
        self._names = tuple(self._unchecked_state_name(name) for name in ("true_positives", "false_positives"))
        for name in self._names:
            self.add_state(name, default=torch.zeros(num_tasks, num_labels, dtype=torch.float64), dist_reduce_fx="sum")

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        F._format_codes(preds, target, weights, self.num_labels, self.num_tasks, validate=True)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch of integer codes, ``(N,)`` or ``(T, N)``, with optional ``weights``."""
        p, t, w = F._format_codes(preds, target, weights, self.num_labels, self.num_tasks, self._check_inputs)
        for name, value in zip(self._names, F._multi_label_update(p, t, w, self.num_labels)):
            getattr(self, name).add_(value)

    def compute(self) -> Tensor:
        """Per-label precision over everything accumulated."""
        return self._squeeze_tasks(F._multi_label_compute(*(getattr(self, name) for name in self._names)))
