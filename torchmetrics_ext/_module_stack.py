"""How :class:`~torchmetrics_ext.module.RecMetricModule` stacks a step's columns into ``(T, N)`` tensors.

The tasks' prediction, label and weight columns are stacked once per step: in float64 for the
kernels, and in the form the step's one check reads (narrow floats stay narrow past a small size);
a small step's weight columns are checked as one stack. The bounds that check read tell which
tasks' weights are all zero, and the rows of some tasks (``metric_tasks``) are taken from the stacks
with no copy from the host per step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.metrics.base import InputDomains
from torchmetrics_ext.utilities.device import on_device_path


def _rows(x: Tensor, positions: tuple[int, ...]) -> Tensor:
    """The rows ``positions`` (increasing) of a ``(T, ...)`` tensor: a view if contiguous, else one ``index_select``."""
    first = positions[0]
    if positions[-1] - first == len(positions) - 1:
        return x.narrow(0, first, len(positions))
    return x.index_select(0, _row_index(positions, x.device))


@functools.lru_cache(maxsize=256)
def _row_flags(flags: tuple[bool, ...], device: torch.device) -> Tensor:
    """``flags`` as a bool tensor on ``device``, made once (an ordinary tensor, as :func:`_row_index`'s)."""
    with torch.inference_mode(False):
        return torch.tensor(flags, device=device)


@functools.lru_cache(maxsize=256)
def _row_index(positions: tuple[int, ...], device: torch.device) -> Tensor:
    """``positions`` as an int64 tensor on ``device``, made once: no copy from the host at each step.

    An ordinary tensor (made outside inference mode), so a step in either mode may read it.
    """
    with torch.inference_mode(False):
        return torch.tensor(positions, device=device)


def _stack_columns(columns: list[Tensor]) -> Tensor:
    """``(T, N)`` in the columns' dtype when they share one (a view of a single column), else in float64.

    Tasks' columns of different dtypes are each cast to float64 before the stack: ``torch.stack``'s
    type promotion would round them to the narrowest float among them (int64 weights next to a
    float16 column: 2049 read as 2048; int64 labels next to bfloat16 ones: 257 as 256) or refuse the
    pair (int64 next to uint64), where float64 holds every value the metrics read.
    """
    first = columns[0]
    if len(columns) == 1:
        return first.unsqueeze(0)
    dtype = first.dtype
    for column in columns:  # one loop, no generator per step
        if column.dtype != dtype:
            return torch.stack([c.to(torch.float64) for c in columns])
    return torch.stack(columns)


_SMALL_CHECK = 8192  # stacked entries up to which a narrow floating step is checked in its float64 stack


def _stack_and_widen(preds: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``(T, N)`` predictions and labels in float64, then in the form their check reads (``_checked_form``).

    Columns of one dtype (float32 scores and labels, the usual case) are stacked and cast together,
    as halves of one ``(2T, N)`` tensor: one copy and one cast for both instead of two of each.
    Their check reads the float64 halves when the stack is float64 or small (the same numbers: narrow
    floats convert exactly; no narrow views to make, a few microseconds a step at small batches), the
    narrow halves otherwise (half the bytes read or fewer).
    """
    t = len(preds)
    dtype = preds[0].dtype
    same = t > 1
    if same:
        for column in (*preds, *labels):  # one loop, no generator per step
            if column.dtype != dtype:
                same = False
                break
    if same:
        both = torch.stack([*preds, *labels])
        wide = both.double()  # `.to(torch.float64)` without its argument parsing (~0.7 us a call)
        wide_preds, wide_labels = wide[:t], wide[t:]
        if wide is both or both.numel() <= _SMALL_CHECK:
            return wide_preds, wide_labels, wide_preds, wide_labels
        return wide_preds, wide_labels, both[:t], both[t:]
    stacked_preds, stacked_labels = _stack_columns(preds), _stack_columns(labels)
    wide_preds, wide_labels = stacked_preds.to(torch.float64), stacked_labels.to(torch.float64)
    return wide_preds, wide_labels, _checked_form(stacked_preds, wide_preds), _checked_form(stacked_labels, wide_labels)


def _checked_form(stacked: Tensor, wide: Tensor) -> Tensor:
    """What the step validates: the stack in its own floating dtype when narrower than float64, else the float64 one.

    Narrow floats convert to float64 exactly, so their bounds are the same numbers, read from half
    the bytes or fewer; integer and bool stacks are read in float64 (bool has no min/max kernel).
    """
    return stacked if stacked.is_floating_point() and stacked.dtype != torch.float64 else wide


def _stack(columns: list[Tensor]) -> Tensor:
    """``(T, N)`` float64 with one cast per column."""
    # stacked, then cast: cheaper than a stack cast into a float64 `out` (which ATen does in a
    # slower loop), at one sample per task as at thousands; no copy when they are float64 already
    return _stack_columns(columns).to(torch.float64)


_SMALL_WEIGHT_STACK = 8192  # weight entries per step up to which the columns are checked as one stack


def _zero_weight_tasks(
    columns: Sequence[Tensor | None],
    weight_bounds: Sequence[Any],
    weight_stack: Tensor | None,
    domain_groups: Sequence[tuple[InputDomains, tuple[int, ...]]] | None,
) -> tuple[bool, ...] | None:
    """Per task, whether its weights are all zero in a checked step; ``None`` where no task's are.

    From the bounds the step's check read (checked non-negative: a column is all zero when its maximum
    is 0), nothing more read back: ``weight_bounds`` holds each given column's, in the order the check
    took them (the tasks' order, or each domain group's tasks in turn), or the bounds of ``weight_stack``
    when the check read the stacked columns (every task's given, one domain: then only "every task's
    weights are zero" is told, all a module whose metrics all read every task needs). A task without a
    column weighs 1.
    """
    num_tasks = len(columns)
    if weight_stack is not None and domain_groups is None:  # (the domain groups' check reads the columns)
        return (True,) * num_tasks if weight_bounds[0][1] == 0 else None
    for bounds in weight_bounds:  # the usual step, no column all zero: told in one short loop
        if bounds and bounds[1] == 0:
            break
    else:
        return None
    order = range(num_tasks) if domain_groups is None else [t for _, positions in domain_groups for t in positions]
    zero = [False] * num_tasks
    given = 0
    for t in order:
        if columns[t] is not None:
            bounds = weight_bounds[given]
            given += 1
            zero[t] = bool(bounds) and bounds[1] == 0
    return tuple(zero) if any(zero) else None


def _small_weight_stack(columns: list[Tensor | None]) -> Tensor | None:
    """The ``(T, N)`` stack of a small CPU step's weight columns, in their floating dtype, or ``None``.

    Every task must give its own column (``T >= 2``), all of one floating dtype, with at most
    :data:`_SMALL_WEIGHT_STACK` entries. Their check reads the stack's bounds in one reduction instead
    of one per column (a few microseconds a step at small batches): the stack passes exactly when
    every column does, and a step it refuses is named column by column as before. Larger steps
    and other forms keep the per-column reads (a stack of unit weights would be one more copy).
    """
    first = columns[0]
    if first is None or len(columns) < 2 or not first.is_floating_point() or on_device_path(first):
        return None
    if first.numel() * len(columns) > _SMALL_WEIGHT_STACK:
        return None
    dtype, shared = first.dtype, True
    for column in columns:  # one loop, no generator per step
        if column is None or column.dtype != dtype:
            return None
        shared = shared and column is first
    if shared:
        return None  # one column shared by every task: `_stack_weights` takes it as it is
    return torch.stack(columns)  # type: ignore[arg-type]


def _stack_weights(columns: list[Tensor | None]) -> Tensor | None:
    present = [c for c in columns if c is not None]
    if not present:
        return None
    if len(present) == len(columns) and all(c is present[0] for c in present):
        return present[0].to(torch.float64)  # one column shared by every task
    # tasks without weights (no column, or `weight_name=None`) weigh 1: one element expanded to the
    # batch's shape, no (N,) tensor of ones per task and step
    ones = present[0].new_ones((), dtype=torch.float64).expand(present[0].shape)
    return _stack([ones if c is None else c for c in columns])
