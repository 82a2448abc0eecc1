"""The AUC family as metric classes: ROC/PR AUC (exact or binned), grouped AUC, pairwise AUC."""

from torchmetrics_ext.metrics.auc.binary import AUC, AUPRC
from torchmetrics_ext.metrics.auc.grouped import GroupedAUC, GroupedAUPRC
from torchmetrics_ext.metrics.auc.pairwise import XAUC, RegressionAUC

__all__ = ["AUC", "AUPRC", "XAUC", "GroupedAUC", "GroupedAUPRC", "RegressionAUC"]
