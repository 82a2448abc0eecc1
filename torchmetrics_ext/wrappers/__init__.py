"""Wrappers around any metric of the package: :class:`Windowed` (lifetime and window) and :class:`Segmented`."""

from torchmetrics_ext.wrappers.segmented import Segmented
from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["Segmented", "Windowed"]
