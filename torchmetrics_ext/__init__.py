"""torchmetrics_ext: recommendation and ranking metrics as first-class TorchMetrics objects.

Import as ``import torchmetrics_ext as tmx``; classes are exported flat (``tmx.NormalizedEntropy``),
functional twins live in :mod:`torchmetrics_ext.functional`.
"""

from torchmetrics_ext.metrics import (
    AUC,
    AUPRC,
    CTR,
    MAP,
    MRR,
    NDCG,
    XAUC,
    Calibration,
    GroupedAUC,
    GroupedAUPRC,
    HitRate,
    LogLoss,
    MulticlassRecallAtK,
    NormalizedEntropy,
    PrecisionAtK,
    RankingMetrics,
    RecallAtK,
    RegressionAUC,
    TaskMetric,
    WeightedAccuracy,
    WeightedAverage,
    WeightedMAE,
    WeightedMSE,
    WeightedPrecision,
    WeightedRecall,
    WeightedRMSE,
)
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

__version__ = "0.1.0"

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
    "UndefinedMetricWarning",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]
