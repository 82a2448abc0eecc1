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


def count_snapshots(monkeypatch) -> list[str]:
    """The class names of the metrics the aggregator copies for its rollback, in order (``plan.snapshot`` spied)."""
    from torchmetrics_ext.aggregation import plan

    copied: list[str] = []
    real = plan.snapshot

    def counting(metric, **kwargs):
        copied.append(type(metric).__name__)
        return real(metric, **kwargs)

    monkeypatch.setattr(plan, "snapshot", counting)
    return copied
