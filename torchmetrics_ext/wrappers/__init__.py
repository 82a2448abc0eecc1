"""Wrappers around the package's metrics: :class:`Windowed` (lifetime and window) and :class:`Segmented`."""

from torchmetrics_ext.wrappers.segmented import Segmented
from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["Segmented", "Windowed"]
