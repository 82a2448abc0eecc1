"""The AUC family as pure functions: ROC/PR AUC and their curves (exact or binned), grouped AUC, pairwise AUC."""

from torchmetrics_ext.functional.auc.binary import auc, auprc
from torchmetrics_ext.functional.auc.curves import precision_recall_curve, roc_curve
from torchmetrics_ext.functional.auc.grouped import grouped_auc, grouped_auprc
from torchmetrics_ext.functional.auc.pairwise import regression_auc, xauc

__all__ = [
    "auc",
    "auprc",
    "grouped_auc",
    "grouped_auprc",
    "precision_recall_curve",
    "regression_auc",
    "roc_curve",
    "xauc",
]
