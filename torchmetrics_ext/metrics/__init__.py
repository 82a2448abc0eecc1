"""Metric classes (``torchmetrics.Metric`` subclasses), one module per family."""

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
    "CTR",
    "Calibration",
    "HitRate",
    "LogLoss",
    "MAP",
    "MRR",
    "MulticlassRecallAtK",
    "NDCG",
    "NormalizedEntropy",
    "PrecisionAtK",
    "RankingMetrics",
    "RecallAtK",
    "TaskMetric",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]
