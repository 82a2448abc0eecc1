"""Per-query ranking metrics, vectorised: NDCG, Recall@k, Precision@k, MRR, HitRate, MAP, multiclass."""

from torchmetrics_ext.functional.ranking.functions import (
    hit_rate,
    map_at_k,
    mrr,
    ndcg,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from torchmetrics_ext.functional.ranking.multiclass import multiclass_recall_at_k

__all__ = [
    "hit_rate",
    "map_at_k",
    "mrr",
    "multiclass_recall_at_k",
    "ndcg",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
]
