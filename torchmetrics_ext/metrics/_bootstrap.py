"""Refuse a task-first batch that TorchMetrics' ``BootStrapper`` resampled along its tasks.

``BootStrapper.update`` resamples dimension 0 of every input tensor (TorchMetrics' samples-first
convention; it has no axis option). The package's task-first inputs ``(T, N)`` hold their samples
in the last dimension, so each bootstrap got a reshuffle of the task rows (``multinomial``: every
value a copy of some task's whole-data value, a silent wrong confidence interval) or another
number of task rows (``poisson``: a task-count error that did not say why). A resampled batch
cannot be told from a valid one, so the check looks for ``BootStrapper.update`` among the callers,
and only for inputs with a leading dimension that is not the samples (a single-task ``(N,)`` batch
is resampled correctly and never walks the stack).
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any, NoReturn

from torch import Tensor
from torchmetrics.wrappers import BootStrapper

# the function BootStrapper.update runs (TorchMetrics wraps it per instance; the class keeps the plain one)
_BOOTSTRAP_UPDATE = BootStrapper.update.__code__
# callers between BootStrapper.update and a metric's check: the metric's update wrapper, an expression's
# update and its operands' wrappers (`BootStrapper(ne[0])`), a Windowed entry's lifetime and window
_DEPTH = 12


def refuse_bootstrapped_tasks(metric: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``BootStrapper`` called this update with a task-first ``preds`` (2-D or more)."""
    state = metric.__dict__
    if state.get("_outside_bootstrap") == id(metric):
        return
    preds = args[0] if args else kwargs.get("preds")
    if not isinstance(preds, Tensor) or preds.ndim < 2:
        return
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            break
        if frame.f_code is _BOOTSTRAP_UPDATE:
            _refuse(metric, preds)
        frame = frame.f_back
    # Updated outside a BootStrapper, this object never runs inside one: BootStrapper updates deep copies of
    # the metric it was given. A copy (deepcopy, pickle, clone) has another id, so it checks again.
    state["_outside_bootstrap"] = id(metric)


def _refuse(metric: Any, preds: Tensor) -> NoReturn:
    """The error, naming the metric, the resampled ``preds`` shape and the per-task workaround."""
    name = type(metric).__name__
    raise ValueError(
        "TorchMetrics' BootStrapper resamples dimension 0 of every input, but the first dimension of "
        f"{name}'s `preds` (here of shape {tuple(preds.shape)}, as resampled) is its tasks, its samples the "
        "last one: each bootstrap would reshuffle, repeat or drop tasks, not resample samples. Bootstrap one "
        "single-task metric per task, fed `(N,)` inputs, e.g. "
        f"`MultitaskWrapper({{task: BootStrapper(tmx.{name}()) for task in tasks}})` fed each task's row."
    )
