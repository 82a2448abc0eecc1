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
from collections.abc import Iterator

from torch import Tensor

__all__ = ["force_device_path", "on_device_path"]

_FORCED = [False]  # a list, so that the flag is shared by every importer


def on_device_path(tensor: Tensor) -> bool:
    """Whether kernels run their device path for ``tensor`` (any non-CPU device, or forced).

    Example:
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
