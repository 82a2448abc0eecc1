"""The package's single policy for values that are mathematically undefined.

A metric whose value is undefined for the data it has seen (precision with no positive
prediction, NE when every label is of one class, any mean of zero total weight, AUC of a
single class) returns ``nan`` for that value and emits :class:`UndefinedMetricWarning`
naming the metric, the task(s) and the reason. This is scikit-learn's choice; it never
invents a number (TorchMetrics returns 0, torcheval 0.5, TorchRec clamps by ``eta``), so an
undefined value cannot be mistaken for a real one in a dashboard. Silence the warning with
``warnings.filterwarnings("ignore", category=UndefinedMetricWarning)``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["UndefinedMetricWarning", "safe_divide", "warn_undefined"]


class UndefinedMetricWarning(UserWarning):
    """Warning raised when a metric value is undefined and ``nan`` is returned instead."""


def warn_undefined(undefined: Tensor, metric: str, reason: str) -> None:
    """Warn once for the tasks flagged in the boolean tensor ``undefined``.

    Args:
        undefined: boolean tensor, one entry per task (or any shape), ``True`` where undefined.
        metric: the metric's name, used in the message.
        reason: why the value is undefined, e.g. ``"no positive label"``.
    """
    flat = undefined.reshape(-1)
    if not bool(flat.any()):
        return
    where = ""
    if flat.numel() > 1:
        tasks = torch.nonzero(flat).reshape(-1).tolist()
        where = f" for task(s) {tasks}"
    warnings.warn(
        f"{metric} is undefined{where}: {reason}; returning nan.",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def safe_divide(num: Tensor, denom: Tensor, metric: str, reason: str) -> Tensor:
    """``num / denom`` with ``nan`` (and one :class:`UndefinedMetricWarning`) where ``denom == 0``."""
    undefined = denom == 0
    warn_undefined(undefined, metric, reason)
    return torch.where(undefined, torch.full_like(num, float("nan")), num / torch.where(undefined, 1, denom))
