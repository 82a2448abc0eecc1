"""The demo's two-task recommender as a ``LightningModule`` with its metrics inside.

Click and like heads over user, item and source embeddings. The metrics live where a training
loop keeps them: a :class:`~torchmetrics_ext.RecMetricModule` per stage (lifetime and window
values, throughput) updated and logged by
:class:`~torchmetrics_ext.integrations.lightning.RecMetricCallback` with ``self.log_dict``, and a
:class:`~torchmetrics_ext.aggregation.MetricsAggregator` for the per-source records of the
data loader (``train_feed/clicks``, ``train_search/session_length_stat_p50``, ...).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from torchmetrics_ext.aggregation import MetricsAggregator
from torchmetrics_ext.metrics.auc import AUC, AUPRC
from torchmetrics_ext.metrics.throughput import Throughput
from torchmetrics_ext.module import RecMetricModule, RecTaskInfo

__all__ = ["DEMO_METRICS", "DEMO_TASKS", "TRAIN_METRICS", "DemoRecommender"]

DEMO_TASKS = (
    RecTaskInfo("click", "click", "click_pred", group_id_name="user", session_id_name="session"),
    RecTaskInfo("like", "like", "like_pred", group_id_name="user", session_id_name="session"),
)
DEMO_METRICS: dict[str, Any] = {
    "ne": "ne",
    "auc": "auc",
    "auprc": "auprc",
    "calibration": "calibration",
    "ctr": "ctr",
    "gauc": "gauc",
    "ndcg@10": "ndcg@10",
    "recall@10": "recall@10",
}


# training computes every few steps over a growing history: constant-memory binned AUC/AUPRC there
TRAIN_METRICS = {**DEMO_METRICS, "auc": partial(AUC, num_bins=10_000), "auprc": partial(AUPRC, num_bins=10_000)}


class DemoRecommender(pl.LightningModule):
    """Embeddings of user, item and source, an MLP, and one logit per task (click, like).

    Training metrics (:data:`TRAIN_METRICS`) hold binned AUC and AUPRC (10,000 bins, constant
    memory: they are computed every ``log_every`` steps over the whole history); validation
    metrics (:data:`DEMO_METRICS`) are exact.

    Args:
        num_users: users in the world.
        num_items: items in the world.
        num_sources: data sources.
        dim: embedding width.
        lr: Adam's learning rate.
        window_size: impressions in the training metrics' recent window.
        log_every: training metrics are logged every this many steps.

    Examples:
        >>> import torch
        >>> model = DemoRecommender(num_users=10, num_items=20)
        >>> batch = {"user": torch.tensor([1, 2]), "item": torch.tensor([3, 4]), "source": torch.tensor([0, 1])}
        >>> model(batch).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_sources: int = 2,
        dim: int = 16,
        lr: float = 0.01,
        window_size: int = 20_000,
        log_every: int = 10,
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.source = nn.Embedding(num_sources, dim)
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 64), nn.ReLU(), nn.Linear(64, 2))
        self.lr = lr
        self.train_metrics = RecMetricModule(
            DEMO_TASKS, TRAIN_METRICS, window_size=window_size, compute_interval_steps=log_every, prefix="train/"
        )
        # the clock starts after a few steps (the module's default waits 100, a long time in a demo)
        self.throughput_warmup = max(log_every // 2, 1)
        self.train_metrics.throughput = Throughput(warmup_steps=self.throughput_warmup)
        self.val_metrics = RecMetricModule(DEMO_TASKS, DEMO_METRICS, throughput=False, prefix="val/")
        self.sources = MetricsAggregator()
        self.log_every = log_every

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """``(N, 2)`` logits: click, like."""
        u, i, s = self.user(batch["user"]), self.item(batch["item"]), self.source(batch["source"])
        return self.mlp(torch.cat([u, i, s, u * i], dim=-1))

    def _outputs(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self(batch)
        probs = torch.sigmoid(logits.detach())
        out = {name: batch[name] for name in ("click", "like", "user", "session")}
        return logits, {**out, "click_pred": probs[:, 0], "like_pred": probs[:, 1]}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Loss of both heads; the output dict feeds ``train_metrics`` (through the callback)."""
        logits, out = self._outputs(batch)
        labels = torch.stack([batch["click"], batch["like"]], dim=-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        self.log("loss", loss, prog_bar=True, batch_size=labels.shape[0])
        self.sources.update(batch["metrics"])
        if (batch_idx + 1) % self.log_every == 0:
            self.log_dict(self.sources.get_metrics_for_logging(prefix="train"), batch_size=labels.shape[0])
        return {"loss": loss, **out}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """The output dict feeds ``val_metrics`` (through the callback)."""
        return self._outputs(batch)[1]

    def predict(self, batch: dict[str, Any]) -> Tensor:
        """``(N, 2)`` probabilities without gradients (the report's validation predictions)."""
        with torch.no_grad():
            return torch.sigmoid(self(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (embeddings learn fast with it)."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)
