"""UnpaddedDistributedSampler over 3 and 4 ranks: shares that do not divide, and fewer samples than ranks.

The documented order (``integrations/sampler.py``): rank ``r`` of ``W`` takes positions ``r, r + W, ...``
of the dataset's order, or with ``shuffle=True`` of the permutation drawn from ``seed + epoch`` that
PyTorch's ``DistributedSampler`` draws (the reference here: PyTorch's sampler over one replica, which
pads nothing). Where ``W`` divides the length, each rank's share is PyTorch's own rank's share. The
same shares under a real process group are checked in ``tests/test_lightning_world.py``.
"""

from __future__ import annotations

import itertools

import pytest
from torch.utils.data import DistributedSampler

from torchmetrics_ext.integrations import UnpaddedDistributedSampler

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 13, 64, 101]


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world", [3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_in_the_documented_order_over_three_and_four_ranks(world, shuffle):
    for n, seed, epoch in itertools.product(SIZES, (0, 7), (0, 1, 5)):
        order = _order(n, shuffle, seed, epoch)
        shares = []
        for rank in range(world):
            sampler = UnpaddedDistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
            sampler.set_epoch(epoch)
            share = list(sampler)
            assert share == order[rank::world], (n, seed, epoch, rank)
            # ceil or floor of n / world, none when n <= rank (fewer samples than ranks)
            assert len(sampler) == sampler.num_samples == len(share) == (n - rank + world - 1) // world
            if n % world == 0:  # nothing to pad: PyTorch's own share
                padded = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
                padded.set_epoch(epoch)
                assert share == list(padded)
            shares.append(share)
        assert sorted(itertools.chain(*shares)) == list(range(n))
        assert [len(s) for s in shares] == sorted((len(s) for s in shares), reverse=True)  # the first ranks take more


@pytest.mark.parametrize("world", [3, 4])
def test_a_new_epoch_reorders_every_ranks_share_alike(world):
    """``set_epoch`` draws one permutation for all ranks: the shares of an epoch still cover every sample once."""
    epochs = []
    for epoch in (0, 1):
        samplers = [UnpaddedDistributedSampler(range(11), num_replicas=world, rank=r, seed=3) for r in range(world)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        epochs.append([list(s) for s in samplers])
        assert sorted(itertools.chain(*epochs[-1])) == list(range(11))
    assert epochs[0] != epochs[1]
    # the epoch's order is read at iteration: a sampler set to epoch 1 after its epoch 0 gives epoch 1's share
    sampler = UnpaddedDistributedSampler(range(11), num_replicas=world, rank=world - 1, seed=3)
    assert list(sampler) == epochs[0][world - 1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1][world - 1]
