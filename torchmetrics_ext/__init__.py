"""torchmetrics_ext: recommendation and ranking metrics as first-class TorchMetrics objects.

Import as ``import torchmetrics_ext as tmx``; classes are exported flat (``tmx.NormalizedEntropy``),
functional twins live in :mod:`torchmetrics_ext.functional`.
"""

from torchmetrics_ext.metrics import (
    CTR,
    Calibration,
    LogLoss,
    NormalizedEntropy,
    TaskMetric,
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
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

__version__ = "0.1.0"

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
    "UndefinedMetricWarning",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]
