"""The AUC family as metric classes."""

from torchmetrics_ext.metrics.auc.binary import AUC, AUPRC
from torchmetrics_ext.metrics.auc.grouped import GroupedAUC, GroupedAUPRC

__all__ = ["AUC", "AUPRC", "GroupedAUC", "GroupedAUPRC"]
