"""How :class:`~torchmetrics_ext.module.RecMetricModule` reads a step's columns by name; what it says of a wrong one.

A missing column is named with the keys ``model_out`` has and the closest one; a column of another
shape with the forms users meet (a model head of one output, one column per task); labels and
predictions read from each other's columns with the task's column names; a weight column named but
never given is warned for, once, and so is a default ``"weight"`` column missing next to a key like it
(``"weights"``); id columns must be integers of the step's shape and device.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import warn_at_user

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecTaskInfo


def _columns_read(task: RecTaskInfo) -> str:
    """Which columns ``task`` reads its labels and predictions from, for the messages refusing them.

    Said on the error path only: labels and predictions given in the wrong order
    (``RecTaskInfo("click", "click_pred", "click_label")``) fail as a dtype or range error.

    Examples:
        >>> from torchmetrics_ext._module_columns import _columns_read
        >>> from torchmetrics_ext.module import RecTaskInfo
        >>> said = _columns_read(RecTaskInfo("click", "click_pred", "click_label"))
        >>> said.split(" (")[0]
        "Task 'click' reads labels from 'click_pred' and predictions from 'click_label'"
        >>> said.split(" (")[1]
        'RecTaskInfo(name, label_name, prediction_name, ...)).'
    """
    return (
        f"Task {task.name!r} reads labels from {task.label_name!r} and predictions from {task.prediction_name!r} "
        "(RecTaskInfo(name, label_name, prediction_name, ...))."
    )


def _missing_column(
    task: RecTaskInfo, field: str, key: str | None, model_out: Mapping[str, Any], taken: Collection[str] = ()
) -> str:
    """Why a task's column is not in ``model_out``: the keys it has and the closest one to ``key``.

    ``taken``: columns that tasks already read as labels or predictions, never suggested (a missing
    ``like_label`` next to ``click_label`` is not a typo of it: reading it would score one task twice).
    """
    present = [str(k) for k in model_out]
    shown = present[:20] + ([f"... ({len(present)} in all)"] if len(present) > 20 else [])
    free = [k for k in present if k not in taken]
    guess = difflib.get_close_matches(key, free, n=1) if isinstance(key, str) else []
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    text = f"Task {task.name!r}: `model_out` has no {field} column {key!r}{hint}; its keys are {shown}."
    if (field, key) in (("prediction", "prediction"), ("label", "label")):  # RecTaskInfo's defaults
        text += (
            " A task given by its name alone reads the columns 'prediction' and 'label': name its columns, "
            f"RecTaskInfo({task.name!r}, label_name=..., prediction_name=...)."
        )
    return text


def _warn_unread_weight_names(tasks: Sequence[RecTaskInfo], model_out: Mapping[str, Any]) -> None:
    """Warn (at the first step with columns) for tasks naming a weight column of their own that ``model_out`` lacks.

    A missing weight column means weight 1 (TorchRec's rule too), so a misspelt ``weight_name`` would
    give unweighted values without a word. The default ``"weight"`` is not warned for: most models
    have no weights; nor ``weight_name=None`` (no weight column: ``evaluate`` without ``weights``, the
    Hugging Face adapter without ``ignore_index``).
    """
    for task in tasks:
        if task.weight_name not in ("weight", None) and task.weight_name not in model_out:
            text = _missing_column(task, "weight", task.weight_name, model_out)
            warn_at_user(
                f"{text} Its samples weigh 1 (a missing weight column means weight 1); this is said once, at the "
                "first step.",
                UserWarning,
            )
    _warn_weight_lookalikes(tasks, model_out)


def _warn_weight_lookalikes(tasks: Sequence[RecTaskInfo], model_out: Mapping[str, Any]) -> None:
    """Warn for tasks on the default ``"weight"`` column when ``model_out`` lacks it but holds a key like it.

    A step dict with ``"weights"``, ``"sample_weight"`` or ``"click_weight"`` and no ``"weight"`` left a
    task of the default ``weight_name`` unweighted without a word: the key no task reads is most likely
    the weights, under another name. A key some task reads (another task's ``weight_name``, a label) is
    not one. ``weight_name=None`` says the task has no weights and is not warned for.

    Examples:
        >>> import warnings
        >>> from torchmetrics_ext._module_columns import _warn_weight_lookalikes
        >>> from torchmetrics_ext.module import RecTaskInfo
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _warn_weight_lookalikes([RecTaskInfo("click", "y", "p")], {"p": 0, "y": 0, "weights": 0})
        >>> print(str(caught[0].message).split(":")[0])
        Task 'click'
    """
    if "weight" in model_out:
        return
    defaults = [task for task in tasks if task.weight_name == "weight"]
    if not defaults:
        return
    read = {
        name
        for task in tasks
        for name in (task.label_name, task.prediction_name, task.weight_name, task.group_id_name, task.session_id_name)
    }
    lookalikes = [str(key) for key in model_out if "weight" in str(key).lower() and key not in read]
    if not lookalikes:
        return
    for task in defaults:
        own = [key for key in lookalikes if task.name.lower() in key.lower()]
        guess = (own or lookalikes)[0]
        warn_at_user(
            f"Task {task.name!r}: `model_out` has no weight column 'weight' (RecTaskInfo's default weight_name), so "
            f"its samples weigh 1, but it holds {lookalikes}, which no task reads. If {guess!r} holds the task's "
            f"sample weights, name it: RecTaskInfo({task.name!r}, ..., weight_name={guess!r}); weight_name=None "
            "says the task has no weights. This is said once, at the first step.",
        )


def _flat_column_hint(value: Tensor, key: str) -> str:
    """The end of the message for a column that is not ``(N,)``: how to pass the shapes users meet.

    A model head of one output gives ``(N, 1)`` (``(1, N)`` transposed), a single sample ``()``, a
    head of several tasks' outputs ``(N, T)`` (or tasks first, ``(T, N)``); each task reads its own
    ``(N,)`` column.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext._module_columns import _flat_column_hint
        >>> _flat_column_hint(torch.zeros(4, 1), "click_pred")
        ": a model head of one output; pass `model_out['click_pred'].squeeze(-1)`, shape (4,)."
    """
    shape = tuple(value.shape)
    if value.ndim == 2 and 1 in shape:
        dim = -1 if shape[-1] == 1 else 0
        return f": a model head of one output; pass `model_out[{key!r}].squeeze({dim})`, shape ({value.numel()},)."
    if value.ndim == 0:
        return f": one sample is a column of shape (1,): pass `model_out[{key!r}].reshape(1)`."
    if value.ndim == 2:
        # the shape alone cannot say which side is the tasks': both ways of taking task t's column
        return (
            f": one column per task; give each task its own (N,) column, under the key of the task's RecTaskInfo: "
            f"`model_out[{key!r}][:, t]` of an (N, T) head, `model_out[{key!r}][t]` of a (T, N) one."
        )
    return "."


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device (``cuda`` without an index matches any ``cuda:i``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _id_column(value: Tensor, task: RecTaskInfo, key: str | None, like: Tensor) -> Tensor:
    if value.is_floating_point() or value.dtype == torch.bool:
        raise WrongTypeError(
            f"Task {task.name!r}, `model_out[{key!r}]`: expected integer ids, got dtype {value.dtype}."
        )
    if value.shape != like.shape or value.device != like.device:
        raise ValueError(
            f"Task {task.name!r}: expected `model_out[{key!r}]` of shape {tuple(like.shape)} on {like.device}, "
            f"got {tuple(value.shape)} on {value.device}."
        )
    return value
