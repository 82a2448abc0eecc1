"""``utilities.distributed._world``: the package's one test of "is this DDP", and the call sites that use it.

Checked without a process group, in a real gloo group of one process (a group of one rank is no
DDP where the call sites said so, and a group where the sampler reads its rank from it), and on
two spawned gloo ranks (a subgroup, a rank outside it; the ranks import neither Lightning nor
``evaluate``, whose sites their own DDP tests cover). The expected values are written from torch's
own ``dist.get_rank``/``dist.get_world_size`` or plain numbers, never from the helper.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import MetricsAggregator
from torchmetrics_ext.integrations import UnpaddedDistributedSampler
from torchmetrics_ext.utilities.distributed import _world


@pytest.fixture
def one_process_group() -> Iterator[None]:
    """A real gloo process group of one rank in this process, destroyed after the test."""
    assert not dist.is_initialized()
    init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _module() -> tmx.RecMetricModule:
    return tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False)


def test_without_a_process_group_nothing_is_distributed():
    from torchmetrics_ext.evaluate import runner
    from torchmetrics_ext.integrations.lightning import _batch_counts_over_ranks

    assert not dist.is_initialized()
    assert _world() is None
    assert _world(min_size=1) is None
    assert _world(min_size=0) is None
    assert runner._world() == (0, 1)
    sampler = UnpaddedDistributedSampler(range(5), shuffle=False)
    assert (sampler.rank, sampler.num_replicas, list(sampler)) == (0, 1, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="`rank`"):
        _ = UnpaddedDistributedSampler(range(5), num_replicas=2).rank
    assert MetricsAggregator()._distributed() is False
    # fewest and most batches of each dataloader: this process's own counts, no collective
    assert _batch_counts_over_ranks([3.0, 0.0], torch.device("cpu")) == ([3.0, 0.0], [3.0, 0.0])


def test_a_group_of_one_process_is_no_ddp_but_a_group_for_the_sampler(one_process_group):
    from torchmetrics_ext.evaluate import runner
    from torchmetrics_ext.integrations.lightning import _batch_counts_over_ranks

    assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
    assert _world() is None  # a world of 1: nothing to sync with, nothing saved as a rank's share
    assert _world(min_size=1) == (0, 1)
    assert _world(min_size=0) == (0, 1)
    assert _world(min_size=2) is None
    subgroup = dist.new_group([0])
    assert _world(subgroup) is None
    assert _world(subgroup, min_size=1) == (0, 1)
    assert runner._world() == (0, 1)
    # the sampler reads its rank and size from any group: no ValueError for an unknown rank here
    sampler = UnpaddedDistributedSampler(range(5), shuffle=False)
    assert (sampler.rank, sampler.num_replicas, list(sampler)) == (0, 1, [0, 1, 2, 3, 4])
    assert UnpaddedDistributedSampler(range(5), num_replicas=2, shuffle=False).rank == 0
    assert list(UnpaddedDistributedSampler(range(5), num_replicas=2, shuffle=False)) == [0, 2, 4]
    assert MetricsAggregator()._distributed() is False
    assert MetricsAggregator(process_group=subgroup)._distributed() is False
    assert _batch_counts_over_ranks([3.0, 0.0], torch.device("cpu")) == ([3.0, 0.0], [3.0, 0.0])
    # a module's checkpoint saved here is no rank's share of a larger run
    module = _module()
    module.update({"prediction": torch.tensor([0.5, 0.5]), "label": torch.tensor([1.0, 0.0])})
    assert (module.get_extra_state()["rank"], module.get_extra_state()["world_size"]) == (0, 1)


def _ranks_job(rank: int, world_size: int) -> dict[str, object]:
    first = dist.new_group([0])  # every rank creates it; rank 1 is outside it
    both = dist.new_group([0, 1])
    return {
        "torch": (dist.get_rank(), dist.get_world_size()),
        "world": _world(),
        "world3": _world(min_size=3),
        "both": _world(both),
        "first": _world(first),
        "first1": _world(first, min_size=1),
        "aggregator": MetricsAggregator()._distributed(),
        "aggregator_first": MetricsAggregator(process_group=first)._distributed(),
        "sampler": list(UnpaddedDistributedSampler(range(5), shuffle=False)),
    }


@pytest.mark.ddp
def test_two_ranks_and_a_subgroup(ddp_pool):
    results = ddp_pool.run(_ranks_job)
    for rank, out in enumerate(results):
        assert out["torch"] == (rank, 2)
        assert out["world"] == (rank, 2)
        assert out["world3"] is None
        assert out["both"] == (rank, 2)
        assert out["first"] is None  # one rank in it (rank 0), or outside it (rank 1)
        assert out["first1"] == ((0, 1) if rank == 0 else None)
        assert out["aggregator"] is True
        assert out["aggregator_first"] is False
        assert out["sampler"] == [[0, 2, 4], [1, 3]][rank]
