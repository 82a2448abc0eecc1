"""Per-query ranking metrics, vectorised: one spec per metric drives every kernel, function and class.

Public modules: :mod:`.single` (one metric per call: ``ndcg``, ``recall_at_k``, ...),
:mod:`.combined` (``ranking_metrics``: several metrics and cutoffs from one pass) and
:mod:`.multiclass` (``multiclass_recall_at_k``). The class twins live in the mirrored
:mod:`torchmetrics_ext.metrics.ranking`; the specs in :mod:`._registry`.
"""

from torchmetrics_ext.functional.ranking.combined import ranking_metrics
from torchmetrics_ext.functional.ranking.multiclass import multiclass_recall_at_k
from torchmetrics_ext.functional.ranking.single import (
    f1_at_k,
    hit_rate,
    map_at_k,
    mrr,
    ndcg,
    precision_at_k,
    r_precision,
    recall_at_k,
)

__all__ = [
    "f1_at_k",
    "hit_rate",
    "map_at_k",
    "mrr",
    "multiclass_recall_at_k",
    "ndcg",
    "precision_at_k",
    "r_precision",
    "ranking_metrics",
    "recall_at_k",
]
