"""Metric classes (``torchmetrics.Metric`` subclasses), one module per family."""

from torchmetrics_ext.metrics.auc import AUC, AUPRC, XAUC, GroupedAUC, GroupedAUPRC, RegressionAUC
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.pointwise import (
    CTR,
    Calibration,
    LogLoss,
    NormalizedEntropy,
    WeightedAccuracy,
    WeightedAverage,
    WeightedMAE,
    WeightedMSE,
    WeightedPrecision,
    WeightedRecall,
    WeightedRMSE,
)

__all__ = [
    "AUC",
    "AUPRC",
    "CTR",
    "XAUC",
    "Calibration",
    "GroupedAUC",
    "GroupedAUPRC",
    "LogLoss",
    "NormalizedEntropy",
    "RegressionAUC",
    "TaskMetric",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]
