"""A ``compute`` that raises under DDP leaves the metric holding its own rank's states (real gloo ranks)."""

from __future__ import annotations

import pytest
import torch

import torchmetrics_ext as tmx


class _FailingOnce(tmx.CTR):
    """CTR whose first ``compute`` raises after the sync (as an out-of-memory error inside ``compute`` does)."""

    failures = 1

    def compute(self):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("out of memory (simulated)")
        return super().compute()


LABELS = ([1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0])
MORE = ([1.0, 1.0], [0.0, 1.0])


def _raising_compute_job(rank, world_size):
    metric = _FailingOnce()
    metric.update(torch.full((4,), 0.5), torch.tensor(LABELS[rank]))
    try:
        metric.compute()
    except RuntimeError as err:
        raised = str(err)
    else:
        raised = ""
    own = metric.metric_state["weighted_label_sum"].tolist(), metric._is_synced
    metric.update(torch.full((2,), 0.5), torch.tensor(MORE[rank]))  # refused as "synced" before
    return raised, own, metric.compute().item()


@pytest.mark.ddp
def test_compute_raising_under_ddp_restores_the_ranks_own_states(ddp_pool):
    results = ddp_pool.run(_raising_compute_job)
    every_label = [y for rank in range(2) for y in LABELS[rank] + MORE[rank]]
    for rank, (raised, (own_positives, synced), value) in enumerate(results):
        assert "out of memory" in raised
        assert own_positives == [sum(LABELS[rank])]  # this rank's, not the gathered sum
        assert synced is False
        assert value == pytest.approx(sum(every_label) / len(every_label), rel=1e-15)


def test_compute_raising_restores_the_states_with_ranks_faked_by_a_sync_function():
    """One process, two equal ranks faked by ``dist_sync_fn`` (as TorchMetrics' own tests do): same rule."""
    fake = {"dist_sync_fn": lambda tensor, group=None: [tensor, tensor], "distributed_available_fn": lambda: True}
    metric = _FailingOnce(**fake)
    metric.update(torch.full((2,), 0.5), torch.tensor([1.0, 0.0]))
    with pytest.raises(RuntimeError, match="out of memory"):
        metric.compute()
    assert metric._is_synced is False
    assert metric.metric_state["weighted_label_sum"].tolist() == [1.0]  # its own, not the doubled sum
    metric.update(torch.full((2,), 0.5), torch.tensor([1.0, 1.0]))
    assert metric.compute().item() == pytest.approx(3 / 4, rel=1e-15)  # by hand: (1 + 0 + 1 + 1) / 4, twice over
