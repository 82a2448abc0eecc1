"""The AUC family as pure functions."""

from torchmetrics_ext.functional.auc.binary import auc, auprc
from torchmetrics_ext.functional.auc.grouped import grouped_auc, grouped_auprc

__all__ = ["auc", "auprc", "grouped_auc", "grouped_auprc"]
