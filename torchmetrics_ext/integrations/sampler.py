"""A distributed sampler for evaluation that never repeats a sample."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from torchmetrics_ext.utilities.distributed import _world

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
    steps; Lightning keeps a ``DistributedSampler`` it finds in a loader. Keep the loader's own
    ``DataLoader(drop_last=False)`` (the default) too: with ``drop_last=True`` each rank drops its
    own last partial batch, so the ranks together see other samples than one process would.

    ``num_replicas`` and ``rank`` not given are those of the process group *where the sampler is
    used*: a sampler built before the group exists (a loader made at the top of a script that
    ``Trainer(strategy="ddp")`` launches once per rank, or in the main process of ``ddp_spawn``)
    takes its rank's share once the group is up, and every sample where there is no group
    (one device). ``num_replicas`` given above 1 without ``rank`` needs the group where the sampler
    is used: without one, reading its share (iterating, ``len``) raises ``ValueError`` naming ``rank``
    rather than silently taking rank 0's share (``DistributedSampler`` raises there too).

    Args:
        dataset: a sized dataset.
        kwargs: ``num_replicas``, ``rank``, ``shuffle``, ``seed`` as for ``DistributedSampler``
            (``drop_last`` is not accepted: nothing is padded or dropped).

    Examples:
        >>> from torchmetrics_ext.integrations import UnpaddedDistributedSampler
        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=0, shuffle=False))
        [0, 2, 4]
        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3]
    """

    def __init__(self, dataset: Sized, **kwargs: Any) -> None:
        if "drop_last" in kwargs:
            raise ValueError("UnpaddedDistributedSampler neither pads nor drops samples: `drop_last` is not accepted.")
        # what is not given is read from the process group where the sampler is used (see above)
        from_group = {name for name in ("num_replicas", "rank") if name not in kwargs}
        if _world(min_size=1) is None:  # no process group at all (one of a single process is read as any other)
            kwargs.setdefault("num_replicas", 1)
            kwargs.setdefault("rank", 0)
        self._from_group: set[str] = set()  # DistributedSampler.__init__ reads the values it is given
        self.total_size = len(dataset)
        super().__init__(dataset, **kwargs)  # type: ignore[arg-type]
        self.total_size = len(dataset)  # DistributedSampler's is padded
        self._from_group = from_group

    @property
    def num_replicas(self) -> int:
        """The number of ranks: as given, else the process group's world size where used (1 without one).

        Examples:
            >>> from torchmetrics_ext.integrations import UnpaddedDistributedSampler
            >>> sampler = UnpaddedDistributedSampler(range(5))  # no process group: one rank, rank 0
            >>> sampler.num_replicas, sampler.rank, sampler.num_samples
            (1, 0, 5)
        """
        if "num_replicas" in self._from_group and (ranks := _world(min_size=1)) is not None:
            return ranks[1]
        return self._num_replicas

    @num_replicas.setter
    def num_replicas(self, value: int) -> None:
        self._num_replicas = value

    @property
    def rank(self) -> int:
        """This process's rank: as given, else its rank in the process group where used (0 without one).

        Examples:
            >>> from torchmetrics_ext.integrations import UnpaddedDistributedSampler
            >>> UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1).rank
            1
            >>> UnpaddedDistributedSampler(range(5), num_replicas=2).rank  # no process group to read it from
            Traceback (most recent call last):
            ...
            ValueError: UnpaddedDistributedSampler(num_replicas=2) was given no `rank` ...
        """
        if "rank" in self._from_group:
            if (ranks := _world(min_size=1)) is not None:
                return ranks[0]
            if self._num_replicas > 1:  # rank 0's share alone would be taken silently
                raise ValueError(
                    f"UnpaddedDistributedSampler(num_replicas={self._num_replicas}) was given no `rank` and no "
                    "torch.distributed process group is initialized to read it from: pass `rank=` (0 to "
                    f"{self._num_replicas - 1}), or use the sampler where the process group is up "
                    "(torch.utils.data.DistributedSampler refuses this case with a ValueError too)."
                )
        return self._rank

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def num_samples(self) -> int:
        """This rank's number of samples: ``ceil`` or ``floor(len(dataset) / num_replicas)``.

        Examples:
            >>> from torchmetrics_ext.integrations import UnpaddedDistributedSampler
            >>> [UnpaddedDistributedSampler(range(5), num_replicas=2, rank=r).num_samples for r in (0, 1)]  # no padding
            [3, 2]
        """
        return len(range(self.rank, self.total_size, self.num_replicas))

    @num_samples.setter
    def num_samples(self, value: int) -> None:  # DistributedSampler.__init__ sets it: computed here instead
        pass

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.total_size, generator=gen).tolist()
        else:
            order = list(range(self.total_size))
        return iter(order[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
