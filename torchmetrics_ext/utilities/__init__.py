"""Shared helpers: input checks and the undefined-value policy."""

from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

__all__ = ["UndefinedMetricWarning"]
