"""Synthetic impressions drawn from a known two-task model, in sessions, from two data sources.

The world: users and items have latent vectors; an impression of item ``i`` to user ``u`` in a
session from source ``s`` is clicked with probability
``sigmoid(base_s + bias_i + <user_u, item_i>)``, and a clicked impression is liked with
probability ``sigmoid(-1 + quality_i + 0.5 <user_u, item_i>)`` (a like implies a click).
The ``feed`` source shows popular items to everyone; ``search`` shows items closer to the
user's taste and gets more clicks. Sessions hold 8 to 24 impressions; a dataset item is a
whole session, so ranking metrics see every session in one batch.

Each session carries :mod:`torchmetrics_ext.aggregation` records made in data loading (as
torchtune's transforms do): impressions, clicks and session length of its source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.aggregation import AggregationType, Metric, MetricTransform

__all__ = ["SOURCES", "Impressions", "SessionMetricTransform", "SyntheticWorld", "collate_sessions"]

SOURCES = ("feed", "search")
_BASE_LOGIT = (-3.3, -2.4)  # ~9% clicks on the feed, ~25% in search


@dataclass(frozen=True)
class SyntheticWorld:
    """The known model the impressions are drawn from.

    Examples:
        >>> world = SyntheticWorld.create(num_users=50, num_items=40, seed=0)
        >>> data = world.sample(num_sessions=10, seed=1)
        >>> len(data), sorted(data[0])[:3]
        (10, ['click', 'item', 'like'])
    """

    user: Tensor  # (U, D)
    item: Tensor  # (I, D)
    item_bias: Tensor  # (I,)
    item_quality: Tensor  # (I,)

    @classmethod
    def create(cls, num_users: int = 2000, num_items: int = 1000, dim: int = 8, seed: int = 0) -> SyntheticWorld:
        """Draw users and items (taste vectors with norm about 1.2, popular and unpopular items)."""
        gen = torch.Generator().manual_seed(seed)
        scale = 1.2 / math.sqrt(dim)
        return cls(
            user=torch.randn(num_users, dim, generator=gen) * scale,
            item=torch.randn(num_items, dim, generator=gen) * scale * 1.5,
            item_bias=torch.randn(num_items, generator=gen) * 0.8,
            item_quality=torch.randn(num_items, generator=gen) * 0.7,
        )

    def probabilities(self, users: Tensor, items: Tensor, sources: Tensor) -> tuple[Tensor, Tensor]:
        """The true click and like probabilities of impressions (the best any model can predict)."""
        affinity = (self.user[users] * self.item[items]).sum(-1) * 1.5
        base = torch.tensor(_BASE_LOGIT)[sources]
        p_click = torch.sigmoid(base + self.item_bias[items] + affinity)
        p_like_given_click = torch.sigmoid(-1.0 + self.item_quality[items] + 0.5 * affinity)
        return p_click, p_click * p_like_given_click

    def sample(self, num_sessions: int, seed: int, first_session: int = 0) -> Impressions:
        """Draw ``num_sessions`` sessions (vectorised: one draw for all impressions)."""
        gen = torch.Generator().manual_seed(seed)
        num_users, num_items = self.user.shape[0], self.item.shape[0]
        sizes = torch.randint(8, 25, (num_sessions,), generator=gen)
        session = torch.repeat_interleave(torch.arange(num_sessions), sizes)
        source = torch.randint(0, len(SOURCES), (num_sessions,), generator=gen)[session]
        user = torch.randint(0, num_users, (num_sessions,), generator=gen)[session]
        popular = torch.multinomial(torch.softmax(self.item_bias, 0), session.numel(), True, generator=gen)
        # search: the best of 8 random items for the user's taste
        candidates = torch.randint(0, num_items, (session.numel(), 8), generator=gen)
        taste = (self.user[user].unsqueeze(1) * self.item[candidates]).sum(-1)
        relevant = candidates.gather(1, taste.argmax(1, keepdim=True)).squeeze(1)
        item = torch.where(source == 0, popular, relevant)
        p_click, p_like = self.probabilities(user, item, source)
        u = torch.rand(session.numel(), generator=gen)
        click = (u < p_click).float()
        like = (u < p_like).float()  # p_like <= p_click: a like is always a click
        columns = {
            "user": user,
            "item": item,
            "source": source,
            "session": session + first_session,
            "click": click,
            "like": like,
            "p_click": p_click,
            "p_like": p_like,
        }
        return Impressions(columns, torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), sizes]), 0))


class Impressions(torch.utils.data.Dataset):
    """Impressions as columns; item ``k`` is session ``k`` (a dict of ``(n_k,)`` tensors)."""

    def __init__(self, columns: dict[str, Tensor], offsets: Tensor) -> None:
        self.columns, self.offsets = columns, offsets
        self.transform = SessionMetricTransform()

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        session = {name: column[lo:hi] for name, column in self.columns.items()}
        self.transform.set_dataset_name(SOURCES[int(session["source"][0])])
        return self.transform(session)


class SessionMetricTransform(MetricTransform):
    """Records of one session for :class:`~torchmetrics_ext.aggregation.MetricsAggregator`.

    ``impressions`` and ``clicks`` (SUM), ``click_rate`` (MEAN over sessions) and
    ``session_length`` (DISTRIBUTION), under the session's source as dataset name.

    Examples:
        >>> import torch
        >>> transform = SessionMetricTransform()
        >>> transform.set_dataset_name("feed")
        >>> [record.name for record in transform({"click": torch.tensor([0.0, 1.0])})["metrics"]]
        ['impressions', 'clicks', 'click_rate', 'session_length']
    """

    def _generate_metrics(self, sample: Mapping[str, Any]) -> list[Metric]:
        size, clicks = int(sample["click"].numel()), float(sample["click"].sum())
        return [
            self.new_metric("impressions", size, AggregationType.SUM),
            self.new_metric("clicks", clicks, AggregationType.SUM),
            self.new_metric("click_rate", clicks / size, AggregationType.MEAN),
            self.new_metric("session_length", size, AggregationType.DISTRIBUTION),
        ]


def collate_sessions(sessions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate sessions into one batch of impressions; their records into one list."""
    batch: dict[str, Any] = {name: torch.cat([s[name] for s in sessions]) for name in sessions[0] if name != "metrics"}
    batch["metrics"] = [record for s in sessions for record in s.get("metrics", [])]
    return batch
