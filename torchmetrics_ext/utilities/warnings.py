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


def warn_undefined(undefined: Tensor, metric: str, reason: str, axes: tuple[str, ...] = ("task",)) -> None:
    """Warn once for the entries flagged in the boolean tensor ``undefined``.

    Args:
        undefined: boolean tensor, one entry per task (or any shape), ``True`` where undefined.
        metric: the metric's name, used in the message.
        reason: why the value is undefined, e.g. ``"no positive label"``.
        axes: what each dimension of ``undefined`` counts, when it has ``len(axes)`` dimensions
            (``("task", "label")`` for a ``(T, L)`` value): the message names the flagged entries
            by the axes longer than one (``label(s) [1]`` for one task, ``(task, label) [(2, 0)]``
            for several). Otherwise entries are named by their flat position as tasks.
    """
    flat = undefined.reshape(-1)
    if not bool(flat.any()):
        return
    where = ""
    if undefined.ndim == len(axes) and len(axes) > 1:
        kept = [i for i, size in enumerate(undefined.shape) if size > 1]
        if kept:
            places = torch.nonzero(undefined)[:, kept].tolist()
            if len(kept) == 1:
                where = f" for {axes[kept[0]]}(s) {[p[0] for p in places]}"
            else:
                names = ", ".join(axes[i] for i in kept)
                where = f" for ({names}) {[tuple(p) for p in places]}"
    elif flat.numel() > 1:
        tasks = torch.nonzero(flat).reshape(-1).tolist()
        where = f" for task(s) {tasks}"
    warnings.warn(
        f"{metric} is undefined{where}: {reason}; returning nan.",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def safe_divide(num: Tensor, denom: Tensor, metric: str, reason: str, axes: tuple[str, ...] = ("task",)) -> Tensor:
    """``num / denom``; ``nan`` where ``denom == 0``, with one :class:`UndefinedMetricWarning`.

    ``axes`` names the dimensions of the value in the warning (see :func:`warn_undefined`).
    """
    undefined = denom == 0
    warn_undefined(undefined, metric, reason, axes)
    return torch.where(undefined, torch.full_like(num, float("nan")), num / torch.where(undefined, 1, denom))
