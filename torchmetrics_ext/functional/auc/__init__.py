"""The AUC family as pure functions: ROC/PR AUC (exact or binned), grouped AUC, pairwise AUC."""

from torchmetrics_ext.functional.auc.binary import auc, auprc
from torchmetrics_ext.functional.auc.grouped import grouped_auc, grouped_auprc
from torchmetrics_ext.functional.auc.pairwise import regression_auc, xauc

__all__ = ["auc", "auprc", "grouped_auc", "grouped_auprc", "regression_auc", "xauc"]
