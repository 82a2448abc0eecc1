"""AUC family metric classes."""

from torchmetrics_ext.metrics.auc.pairwise import XAUC, RegressionAUC

__all__ = ["XAUC", "RegressionAUC"]
