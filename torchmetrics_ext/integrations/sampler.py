"""A distributed sampler for evaluation that never repeats a sample."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["UnpaddedDistributedSampler"]


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` of the order: every sample exactly once.

    The order is the dataset's with ``shuffle=False``, else (the default, as ``DistributedSampler``)
    a permutation drawn from ``seed`` and the epoch (``set_epoch``), the same on every rank.

    PyTorch's (and Lightning's default) ``DistributedSampler`` pads the last round with repeated
    samples so every rank gets as many; a metric synced across ranks then counts those samples
    twice. This sampler gives ranks ``ceil`` or ``floor(len / W)`` samples instead (a rank gets
    none when there are fewer samples than ranks, which Lightning refuses for a loader), so a
    :class:`~torchmetrics_ext.RecMetricModule` computed across ranks equals the single-process
    value. Use it for validation and test loaders, where ranks need not take the same number of
    steps; Lightning keeps a ``DistributedSampler`` it finds in a loader. Without a process
    group (one device) and without ``num_replicas``/``rank`` it yields every sample.

    Args:
        dataset: a sized dataset.
        kwargs: ``num_replicas``, ``rank``, ``shuffle``, ``seed`` as for ``DistributedSampler``
            (``drop_last`` is not accepted: nothing is padded or dropped).

    Example:
        >>> from torchmetrics_ext.integrations import UnpaddedDistributedSampler
        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=0, shuffle=False))
        [0, 2, 4]
        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3]
    """

    def __init__(self, dataset: Sized, **kwargs: Any) -> None:
        if "drop_last" in kwargs:
            raise ValueError("UnpaddedDistributedSampler neither pads nor drops samples: `drop_last` is not accepted.")
        if not (dist.is_available() and dist.is_initialized()):
            # one process (e.g. the same model on one device): every sample, in this process
            kwargs.setdefault("num_replicas", 1)
            kwargs.setdefault("rank", 0)
        super().__init__(dataset, **kwargs)  # type: ignore[arg-type]
        self.total_size = len(dataset)
        self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.total_size, generator=gen).tolist()
        else:
            order = list(range(self.total_size))
        return iter(order[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
