"""Metric classes (``torchmetrics.Metric`` subclasses), one module per family."""

from torchmetrics_ext.metrics.auc import XAUC, RegressionAUC
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
    "CTR",
    "XAUC",
    "Calibration",
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
