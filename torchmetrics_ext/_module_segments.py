"""How :class:`~torchmetrics_ext.RecMetricModule` feeds and reports :class:`~torchmetrics_ext.Segmented` metrics.

A Segmented metric's value per task is ``(S,)``, one number per segment id. The module reads the
ids from the tasks' ``group_id_name`` column (TorchRec's ``grouping_keys``, the column grouped AUC
reads), checks them with the step's one validation read, and reports each segment under a key of
its own: ``"{prefix}{metric}.{g}/{task}"`` (and ``.../window``), as a dict-valued metric's entry
``g``; with ``key_style="torchrec"``, TorchRec's ``"{namespace}-{task}|lifetime_{name}_{g}"``
(``segmented_ne-click|lifetime_segmented_ne_0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchmetrics_ext.utilities.checks import checked_bounds
from torchmetrics_ext.wrappers.segmented import Segmented

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecTaskInfo

__all__ = ["check_segment_ids", "per_segment", "segment_counts", "segment_entries", "segment_ids"]


def segment_counts(metrics: Mapping[str, Any]) -> dict[str, int]:
    """``{name: num_segments}`` of the :class:`~torchmetrics_ext.Segmented` metrics among ``metrics``."""
    return {name: m.num_segments for name, m in metrics.items() if isinstance(m, Segmented)}


def segment_entries(num_segments: int) -> tuple[str, ...]:
    """The entry names of a Segmented value in the keys: ``("0", "1", ..., "S-1")``.

    Examples:
        >>> from torchmetrics_ext._module_segments import segment_entries
        >>> segment_entries(3)
        ('0', '1', '2')
    """
    return tuple(str(g) for g in range(num_segments))


def per_segment(value: Any, num_segments: int) -> Any:
    """A Segmented value as a dict of entries, one per segment: ``{"0": value[..., 0], ...}``.

    ``value`` is ``(S,)`` (one task), ``(T, S)``, or a dict of them per part (``{"lifetime": ...,
    "window": ...}`` of a windowed metric), whose parts are each split. Each entry is then a
    scalar or ``(T,)``, as a dict-valued metric's entries are (views: the module copies what it logs).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext._module_segments import per_segment
        >>> per_segment(torch.tensor([[0.1, 0.2], [0.3, 0.4]]), 2)
        {'0': tensor([0.1000, 0.3000]), '1': tensor([0.2000, 0.4000])}
    """
    if isinstance(value, Mapping):
        return {part: per_segment(v, num_segments) for part, v in value.items()}
    return {str(g): value[..., g] for g in range(num_segments)}


def segment_ids(column: Tensor, cast_floats: bool) -> Tensor:
    """The ids column as read: a floating column cast to int64 with ``cast_floats`` (TorchRec's ``cast_keys_to_int``).

    TorchRec casts float32 and float64 keys only (truncation toward zero, as ``Tensor.to(torch.int64)``).
    """
    if cast_floats and column.dtype in (torch.float32, torch.float64):
        return column.to(torch.int64)
    return column


def check_segment_ids(
    ids: Tensor,
    bounds: tuple[float, float] | None,
    num_segments: int,
    task: RecTaskInfo,
    name: str,
    cast: bool = False,
    grouped: Sequence[str] = (),
) -> None:
    """Refuse segment ids outside ``[0, num_segments)`` (``bounds``: their min and max if read already).

    ``num_segments``: the smallest of the module's Segmented metrics (one column feeds them all).
    ``cast``: the ids were read by :func:`segment_ids` with ``cast_floats``; the message says how (the
    values it shows are the truncated ones: ``-1.5`` shows as ``-1``, ``nan`` as ``-2**63``).
    ``grouped``: the module's grouped metrics (``"gauc"``), which read the same column: the message says
    so, since segments by another column (a country next to grouped AUC by user) need a module of their own.

    Raises:
        ValueError: naming the column, the range expected and the values found.
    """
    if ids.numel() == 0:
        return
    low, high = bounds if bounds is not None else checked_bounds([ids], [False])[0]
    if low < 0 or high >= num_segments:
        raise ValueError(
            f"Task {task.name!r}, `model_out[{task.group_id_name!r}]`: expected segment ids in [0, {num_segments}) "
            f"(num_segments={num_segments} of Segmented metric {name!r}), got values in [{int(low)}, {int(high)}]"
            + (
                " (with TorchRec's cast_keys_to_int, floating ids are read as int64, truncated toward zero)."
                if cast
                else "."
            )
            + (
                f" The segment ids are the tasks' group_id_name column, which grouped metric(s) {list(grouped)} read"
                " as their group ids too: to segment by another column, give the Segmented metrics a"
                " RecMetricModule of their own."
                if grouped
                else ""
            )
            + " A rejected step, nothing was updated."
        )
