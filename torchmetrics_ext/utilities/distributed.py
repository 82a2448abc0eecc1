"""One fused all-gather for the states of many metrics.

TorchMetrics syncs every state of every metric on its own (``gather_all_tensors``: a barrier,
an all-gather of the shape and an all-gather of the data), so a module with 20 metrics, 3
tasks and lifetime plus window states runs hundreds of collectives per ``compute``.
:func:`fused_gather` gathers all of them with ``1 + D`` collectives, ``D`` the number of
distinct state dtypes: one all-gather of every tensor's shape, then one all-gather per dtype of
all tensors of that dtype flattened into one buffer (padded to the longest rank, so ranks may
hold lists of different lengths, or none). It returns, for every tensor, the per-rank list
TorchMetrics' own gather would have returned (the local tensor itself at this rank's place),
so the metrics reduce them with TorchMetrics' own arithmetic (see
:meth:`~torchmetrics_ext.TaskMetric.synced_from`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["copy_metric", "fused_gather"]


def fused_gather(payloads: Sequence[dict[str, Tensor]], group: Any = None) -> list[dict[str, list[Tensor]]]:
    """All-gather every tensor of every payload from every rank of ``group``.

    Every rank must call it with payloads of the same structure (same names, same number of
    dimensions and dtypes per tensor); sizes may differ between ranks.

    Args:
        payloads: one ``{state name: tensor}`` dict per metric (``TaskMetric.sync_states()``).
        group: the process group (default: the world).

    Returns:
        For every payload, ``{state name: [tensor of rank 0, tensor of rank 1, ...]}``.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    flat = [(i, name, tensor) for i, payload in enumerate(payloads) for name, tensor in payload.items()]
    out: list[dict[str, list[Tensor]]] = [{} for _ in payloads]
    if not flat:
        return out
    device = flat[0][2].device
    # 1. every tensor's shape, from every rank: one int64 all-gather
    meta = torch.tensor([size for _, _, t in flat for size in t.shape] or [0], dtype=torch.int64, device=device)
    metas = [torch.empty_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta, group=group)
    rank_dims = torch.stack(metas).tolist()
    shapes: list[list[tuple[int, ...]]] = []  # shapes[r][j]: shape of tensor j on rank r
    for dims in rank_dims:
        cursor, per_rank = 0, []
        for _, _, t in flat:
            per_rank.append(tuple(dims[cursor : cursor + t.ndim]))
            cursor += t.ndim
        shapes.append(per_rank)
    # 2. one all-gather per dtype of every tensor of that dtype, flattened and padded to the longest rank
    for dtype in dict.fromkeys(t.dtype for _, _, t in flat):
        members = [j for j, (_, _, t) in enumerate(flat) if t.dtype == dtype]
        sizes = [[math.prod(shapes[r][j]) for j in members] for r in range(world)]
        longest = max(sum(s) for s in sizes)
        pieces: list[list[Tensor]] = [[] for _ in members]
        if longest > 0:
            local = [flat[j][2].reshape(-1) for j in members]
            buffer = torch.zeros(longest, dtype=dtype, device=device)
            torch.cat(local, out=buffer[: sum(sizes[rank])])
            buffers = [torch.empty_like(buffer) for _ in range(world)]
            dist.all_gather(buffers, buffer, group=group)
        for r in range(world):
            offset = 0
            for m, j in enumerate(members):
                if r == rank:
                    pieces[m].append(flat[j][2])
                elif longest > 0:
                    pieces[m].append(buffers[r][offset : offset + sizes[r][m]].view(shapes[r][j]))
                else:
                    pieces[m].append(torch.zeros(shapes[r][j], dtype=dtype, device=device))
                offset += sizes[r][m]
        for m, j in enumerate(members):
            index, name, _ = flat[j]
            out[index][name] = pieces[m]
    return out


def copy_metric(metric: Any) -> Any:
    """``copy.deepcopy`` of a metric whose copy syncs over the same process group (a group cannot be copied)."""
    group = getattr(metric, "process_group", None)
    return copy.deepcopy(metric, {} if group is None else {id(group): group})
