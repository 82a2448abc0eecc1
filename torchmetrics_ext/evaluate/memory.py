"""Hand memory that the allocators keep but nothing uses back to the system while evaluating.

Streaming a large file frees many short-lived buffers (decoded record batches, per-batch float64
stacks) between the metric states that stay. glibc's ``malloc`` and Arrow's memory pool keep
such freed memory mapped for reuse, so the resident size creeps up with fragmentation rather
than with what is in use; :func:`release_free_memory` returns it after each chunk and before
``compute``. It is a no-op where neither is available (other C libraries, other platforms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

import pyarrow as pa

__all__ = ["map_large_buffers", "release_free_memory"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc's malloc.h)


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Return freed heap and Arrow pool memory to the system (no effect on any live object).

    Examples:
        >>> release_free_memory()  # safe to call at any time
    """
    pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_buffers(threshold: int = 1 << 17) -> bool:
    """Have glibc map every allocation of ``threshold`` bytes or more on its own (process-wide).

    glibc raises its mmap threshold as large blocks are freed, after which large tensors come
    from the heap and leave it fragmented; fixing the threshold (at glibc's initial 128 KiB)
    returns every large buffer to the system when it is freed. The ``torchmetrics-ext evaluate``
    command calls this for its own process; a Python caller may call it (or set the environment
    variable ``MALLOC_MMAP_THRESHOLD_=131072``) before a very large :func:`evaluate`.

    Returns:
        Whether the setting was applied (glibc only).

    Examples:
        >>> map_large_buffers() in (True, False)
        True
    """
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
