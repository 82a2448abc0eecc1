"""Plain user metrics registered as aggregator handlers in tests: no rollback promise of their own."""

from __future__ import annotations

import torch
from torchmetrics import Metric as TorchMetric


class Total(TorchMetric):
    """A registered plain metric (no rollback promise): the sum of its values, added in place."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values):
        self.total += values.sum()

    def compute(self):
        return self.total


class NonNegativeTotal(Total):
    """``Total`` with a check of its own: ``update`` refuses negative values, after changing its state in place."""

    def update(self, values):
        super().update(values)
        if bool((values < 0).any()):
            raise ValueError("NonNegativeTotal takes no negative values")
