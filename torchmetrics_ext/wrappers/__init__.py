"""Wrappers around any metric of the package: :class:`Windowed` (lifetime and recent-window values)."""

from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["Windowed"]
