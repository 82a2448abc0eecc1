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
from torchmetrics_ext.metrics.ranking import (
    MAP,
    MRR,
    NDCG,
    HitRate,
    MulticlassRecallAtK,
    PrecisionAtK,
    RankingMetrics,
    RecallAtK,
)

__all__ = [
    "AUC",
    "AUPRC",
    "CTR",
    "MAP",
    "MRR",
    "NDCG",
    "XAUC",
    "Calibration",
    "GroupedAUC",
    "GroupedAUPRC",
    "HitRate",
    "LogLoss",
    "MulticlassRecallAtK",
    "NormalizedEntropy",
    "PrecisionAtK",
    "RankingMetrics",
    "RecallAtK",
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
