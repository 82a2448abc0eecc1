"""Functional twins of every metric: pure functions over one set of tensors, no state."""

from torchmetrics_ext.functional.auc import auc, auprc, grouped_auc, grouped_auprc, regression_auc, xauc
from torchmetrics_ext.functional.distribution import distribution
from torchmetrics_ext.functional.pointwise import (
    calibration,
    ctr,
    log_loss,
    normalized_entropy,
    weighted_accuracy,
    weighted_average,
    weighted_mae,
    weighted_mse,
    weighted_precision,
    weighted_recall,
    weighted_rmse,
)
from torchmetrics_ext.functional.ranking import (
    hit_rate,
    map_at_k,
    mrr,
    multiclass_recall_at_k,
    ndcg,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

__all__ = [
    "auc",
    "auprc",
    "calibration",
    "ctr",
    "distribution",
    "grouped_auc",
    "grouped_auprc",
    "hit_rate",
    "log_loss",
    "map_at_k",
    "mrr",
    "multiclass_recall_at_k",
    "ndcg",
    "normalized_entropy",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "regression_auc",
    "weighted_accuracy",
    "weighted_average",
    "weighted_mae",
    "weighted_mse",
    "weighted_precision",
    "weighted_recall",
    "weighted_rmse",
    "xauc",
]
