"""Ranking metric classes, mirroring :mod:`torchmetrics_ext.functional.ranking` module for module.

:mod:`.single` (one metric per object: ``NDCG``, ``RecallAtK``, ...), :mod:`.combined`
(``RankingMetrics``) and :mod:`.multiclass` (``MulticlassRecallAtK``); the shared states,
``update`` and ``compute`` are in :mod:`._base`.
"""

from torchmetrics_ext.metrics.ranking.combined import RankingMetrics
from torchmetrics_ext.metrics.ranking.multiclass import MulticlassRecallAtK
from torchmetrics_ext.metrics.ranking.single import (
    MAP,
    MRR,
    NDCG,
    F1AtK,
    HitRate,
    PrecisionAtK,
    RecallAtK,
    RPrecision,
)

__all__ = [
    "MAP",
    "MRR",
    "NDCG",
    "F1AtK",
    "HitRate",
    "MulticlassRecallAtK",
    "PrecisionAtK",
    "RPrecision",
    "RankingMetrics",
    "RecallAtK",
]
