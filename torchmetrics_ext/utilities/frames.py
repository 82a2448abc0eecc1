"""The locals of a call running further up the stack, where torch or TorchMetrics offers no hook to read them.

``nn.Module.load_state_dict`` passes each module neither the caller's ``strict`` nor the checkpoint's
metadata, and ``MetricCollection`` tells a member neither that its ``update`` is running nor which
member it links a compute group's states from: those are read from the running call's frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import CodeType, FrameType
from typing import Any

__all__ = ["running_locals"]


def running_locals(code: CodeType, frame: FrameType | None, depth: int | None = None) -> Mapping[str, Any] | None:
    """The locals of the innermost frame running ``code``, from ``frame`` outwards; ``None`` where none does.

    Args:
        code: the function's code object (``MetricCollection.update.__code__``).
        frame: where to start (``sys._getframe(1)``: the caller's).
        depth: how many frames to look at (``None``: the whole stack).

    Examples:
        >>> import sys
        >>> def outer():
        ...     marker = "here"
        ...     return inner()
        >>> def inner():
        ...     return running_locals(outer.__code__, sys._getframe(1), depth=1)["marker"]
        >>> outer()
        'here'
    """
    while frame is not None and (depth is None or depth > 0):
        if frame.f_code is code:
            return frame.f_locals
        frame = frame.f_back
        depth = None if depth is None else depth - 1
    return None
