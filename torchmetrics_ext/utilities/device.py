"""Which kernel path a tensor takes: the CPU path or the device path.

Some kernels have two implementations of the same math. The **CPU path** is tuned for one CPU
core (small cache-resident blocks, host-side decisions between blocks, NumPy's in-place merge);
host synchronisation costs nothing there. The **device path** is written for accelerators:
whole-array sorts and float64 scans, no Python loop over blocks and no host synchronisation in
``update`` (a GPU must be able to run behind the CPU).

The path is chosen by the tensor's device, never by a user flag: CPU tensors take the CPU path,
every other device the device path. :func:`force_device_path` makes CPU tensors take the device
path too, so that tests on machines without a GPU run the device code (and compare it with the
CPU path).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["constant_on", "force_device_path", "on_device_path"]

_FORCED = [False]  # a list, so that the flag is shared by every importer


# (id of a constant tensor, device) -> (weak reference to it, its copy on that device)
_COPIES: dict[tuple[int, torch.device], tuple[weakref.ref[Tensor], Tensor]] = {}


def constant_on(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (a constant a metric keeps on the CPU: bin edges, per-task flags) on ``device``.

    Copied once per device and kept while ``tensor`` lives, so that an ``update`` does not copy
    host memory to the device (a synchronising ``.to()``) every step. The constant must never be
    modified in place.

    Examples:
        >>> import torch
        >>> edges = torch.tensor([0.0, 0.5, 1.0])
        >>> constant_on(edges, torch.device("cpu")) is edges
        True
    """
    if tensor.device == device:
        return tensor
    key = (id(tensor), device)
    entry = _COPIES.get(key)
    if entry is not None and entry[0]() is tensor:
        return entry[1]

    def forget(ref: weakref.ref[Tensor], key: tuple[int, torch.device] = key) -> None:
        found = _COPIES.get(key)
        if found is not None and found[0] is ref:
            del _COPIES[key]

    copy = tensor.to(device)
    _COPIES[key] = (weakref.ref(tensor, forget), copy)
    return copy


def on_device_path(tensor: Tensor) -> bool:
    """Whether kernels run their device path for ``tensor`` (any non-CPU device, or forced).

    Examples:
        >>> import torch
        >>> on_device_path(torch.zeros(2))
        False
        >>> with force_device_path():
        ...     on_device_path(torch.zeros(2))
        True
    """
    return _FORCED[0] or not tensor.is_cpu


@contextlib.contextmanager
def force_device_path(enabled: bool = True) -> Iterator[None]:
    """Within the block, CPU tensors take the device path too (``enabled=False`` restores the default).

    For tests and benchmarks: results equal the CPU path's to rounding. Not thread-safe (one
    process-wide flag).
    """
    previous = _FORCED[0]
    _FORCED[0] = enabled
    try:
        yield
    finally:
        _FORCED[0] = previous
