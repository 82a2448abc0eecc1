"""AUC family kernels and functional metrics."""

from torchmetrics_ext.functional.auc.pairwise import regression_auc, xauc

__all__ = ["regression_auc", "xauc"]
