"""Wrappers that add a dimension to any metric of the package (segments, windows)."""

from torchmetrics_ext.wrappers.segmented import Segmented

__all__ = ["Segmented"]
