"""Metric classes (``torchmetrics.Metric`` subclasses), one module per family."""

from torchmetrics_ext.metrics.auc import AUC, AUPRC, GroupedAUC, GroupedAUPRC
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
    "Calibration",
    "GroupedAUC",
    "GroupedAUPRC",
    "LogLoss",
    "NormalizedEntropy",
    "TaskMetric",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]
