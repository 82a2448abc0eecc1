"""One fused all-gather for the states of many metrics; a gather that agrees on dtypes first.

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

:func:`_world` is the package's one test of "is this DDP": this process's rank and the world size
where a process group of more than one rank is up, else ``None``.

:class:`TypedGather` is a ``dist_sync_fn`` for a metric whose ``cat`` states declare no dtype (a
TorchMetrics metric): TorchMetrics sends a rank's empty list state as a 1-D float32 tensor, which
cannot be gathered with other ranks' int64 or 2-D samples (gloo aborts the process).

:func:`unshare_memory` gives a module that came through ``torch.multiprocessing`` (Lightning's
``ddp_spawn``) storages of its own, so ranks stop adding into each other's states.
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = [
    "TypedGather",
    "copy_metric",
    "fused_gather",
    "has_untyped_list_states",
    "outside_group",
    "own_storages_in_spawned_process",
    "unshare_memory",
]

# dtypes a rank can name to the others (by position); a tensor of another dtype is gathered as it is
_DTYPES = (
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
)
_CODES = {dtype: code for code, dtype in enumerate(_DTYPES)}
_MAX_DIMS = 8  # dimensions a rank sends; an empty tensor is reshaped only after a shape of at most these


def _world(group: Any = None, *, min_size: int = 2) -> tuple[int, int] | None:
    """``(rank, world size)`` of this process in ``group`` where a process group of ``min_size`` ranks or more is up.

    ``None`` where ``torch.distributed`` is not built in, no default process group is initialised,
    or ``group`` (``None``: the default group) has fewer than ``min_size`` ranks. With the default
    ``min_size=2`` a group of one process is no group at all, which is what a caller deciding
    whether to communicate (or whose states are this rank's share) wants; ``min_size=1`` tells a
    group of one process (``(0, 1)``) from none. A process outside ``group`` (``dist.new_group``
    without it) gets ``None``: it has no rank there. Nothing is communicated: a few calls into
    torch, none of which waits for another rank.

    Examples:
        >>> import os, tempfile
        >>> import torch.distributed as dist
        >>> _world(), _world(min_size=1)  # no process group
        (None, None)
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> _world(), _world(min_size=1)  # a group of one process: no DDP, but a group
        (None, (0, 1))
        >>> dist.destroy_process_group()
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    size = dist.get_world_size(group)
    return (dist.get_rank(group), size) if size >= max(min_size, 1) else None


def fused_gather(
    payloads: Sequence[dict[str, Tensor]], group: Any = None, max_bytes: int | None = None
) -> list[dict[str, list[Tensor]]]:
    """All-gather every tensor of every payload from every rank of ``group``.

    Every rank must call it with payloads of the same structure (same names, same number of
    dimensions and dtypes per tensor); sizes may differ between ranks.

    Args:
        payloads: one ``{state name: tensor}`` dict per metric (``TaskMetric.sync_states()``).
        group: the process group (default: the world).
        max_bytes: at most this many bytes received per all-gather (every rank's padded buffer
            together), where one tensor alone does not exceed it: a dtype's tensors are then
            gathered in consecutive parts, split where every rank splits them (the parts are
            chosen from the gathered shapes). ``None``: one all-gather per dtype, whatever its size.

    Returns:
        For every payload, ``{state name: [tensor of rank 0, tensor of rank 1, ...]}``.

    Examples:
        What :class:`~torchmetrics_ext.RecMetricModule` does at ``compute``, here in a group of one
        process (every rank runs the same lines; each list then holds one tensor per rank):

        >>> import os, tempfile
        >>> import torch
        >>> import torch.distributed as dist
        >>> from torchmetrics_ext import CTR
        >>> from torchmetrics_ext.utilities.distributed import fused_gather
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> metric = CTR()
        >>> metric.update(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 0]))
        >>> states, ids = fused_gather([metric.sync_states(), {"ids": torch.tensor([3, 4])}])
        >>> states["weighted_num_samples"], ids
        ([tensor([3.], dtype=torch.float64)], {'ids': [tensor([3, 4])]})
        >>> with metric.synced_from(states):  # compute reduces the gathered states
        ...     metric.compute()
        tensor(0.3333, dtype=torch.float64)
        >>> dist.destroy_process_group()
    """
    world = dist.get_world_size(group)
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
    # 2. one all-gather per dtype (or per part of it, see max_bytes) of every tensor of that dtype,
    #    flattened and padded to the longest rank
    for dtype in dict.fromkeys(t.dtype for _, _, t in flat):
        members = [j for j, (_, _, t) in enumerate(flat) if t.dtype == dtype]
        sizes = [[math.prod(shapes[r][j]) for j in members] for r in range(world)]
        limit = None if max_bytes is None else max(1, max_bytes // (world * dtype.itemsize))
        for part in _parts(sizes, limit):
            _gather_part(
                [members[m] for m in part], [[row[m] for m in part] for row in sizes], flat, shapes, out, group
            )
    return out


def _parts(sizes: list[list[int]], limit: int | None) -> list[range]:
    """Consecutive ranges of members whose padded buffer (the longest rank's elements) stays within ``limit``.

    ``sizes[r][m]``: member ``m``'s elements on rank ``r``; every rank computes the same ranges.
    A member longer than ``limit`` alone is a range of its own.
    """
    count = len(sizes[0])
    if limit is None or max(sum(row) for row in sizes) <= limit:
        return [range(count)]
    parts, start, running = [], 0, [0] * len(sizes)
    for m in range(count):
        grown = [total + row[m] for total, row in zip(running, sizes, strict=True)]
        if m > start and max(grown) > limit:
            parts.append(range(start, m))
            start, grown = m, [row[m] for row in sizes]
        running = grown
    parts.append(range(start, count))
    return parts


def _gather_part(
    members: list[int],
    sizes: list[list[int]],
    flat: list[tuple[int, str, Tensor]],
    shapes: list[list[tuple[int, ...]]],
    out: list[dict[str, list[Tensor]]],
    group: Any,
) -> None:
    """One all-gather of the tensors ``members`` of ``flat`` (one dtype), written into ``out`` per rank."""
    world, rank = len(sizes), dist.get_rank(group)
    dtype, device = flat[members[0]][2].dtype, flat[members[0]][2].device
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


def outside_group(group: Any) -> bool:
    """Whether this process is outside ``group``: ``dist.new_group(ranks)`` returned it on a rank not in ``ranks``.

    Every process must call ``new_group`` for every group, and one outside gets a placeholder
    (``GroupMember.NON_GROUP_MEMBER``), not a group: it has no other rank to sync with, so a
    metric given it computes over this process's own samples, as
    :class:`~torchmetrics_ext.aggregation.MetricsAggregator` aggregates its own records.
    TorchMetrics would gather from no rank at all ("stack expects a non-empty TensorList").

    Examples:
        >>> import torch.distributed as dist
        >>> outside_group(None), outside_group(dist.GroupMember.NON_GROUP_MEMBER)
        (False, True)
    """
    return isinstance(group, int) and not isinstance(group, bool) and group == dist.GroupMember.NON_GROUP_MEMBER


def copy_metric(metric: Any) -> Any:
    """``copy.deepcopy`` of a metric whose copy syncs over the same process group (a group cannot be copied).

    Examples:
        >>> import copy, os, tempfile
        >>> import torch
        >>> import torch.distributed as dist
        >>> from torchmetrics_ext import CTR
        >>> from torchmetrics_ext.utilities.distributed import copy_metric
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> group = dist.new_group([0])
        >>> metric = CTR(process_group=group)
        >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
        >>> copy.deepcopy(metric)
        Traceback (most recent call last):
        TypeError: cannot pickle 'torch._C._distributed_c10d.ProcessGroup' object
        >>> twin = copy_metric(metric)
        >>> twin.process_group is group, twin.compute()
        (True, tensor(0.5000, dtype=torch.float64))
        >>> twin.update(torch.tensor([0.1]), torch.tensor([1]))  # states of its own: 2 clicks in 3 rows
        >>> twin.compute(), metric.compute()
        (tensor(0.6667, dtype=torch.float64), tensor(0.5000, dtype=torch.float64))
        >>> dist.destroy_process_group()
    """
    group = getattr(metric, "process_group", None)
    return copy.deepcopy(metric, {} if group is None else {id(group): group})


def unshare_memory(module: torch.nn.Module) -> int:
    """Give every CPU tensor of ``module`` that lives in shared memory a private copy of its storage, in place.

    ``torch.multiprocessing`` pickles a tensor by moving its storage into shared memory, so the
    processes that unpickle one module (the ranks Lightning's ``ddp_spawn`` starts on CPU) all
    hold *the same* storage. Lightning gives parameters and buffers private copies again, but
    not metric states (plain attributes): every rank's in-place ``+=`` of its sums then lands in
    the others' states as well, and synced values count samples twice.

    Every tensor reachable from the module is visited: the ``__dict__`` of every ``nn.Module`` in
    it (metric states, defaults, list states' chunks, submodules) and of the helper objects of
    TorchMetrics and this package they hold (a window's ring of per-update statistics), through
    dicts, lists, tuples and deques. A shared CPU storage is copied once and every tensor on it
    is moved onto the copy with ``Tensor.set_`` (same offset, sizes and strides): the values, the
    tensor objects (whoever holds them) and views of one storage (a ring's slot views) all stay as
    they were. Storages not in shared memory are left alone (CUDA tensors too), so a second call,
    or a call in a process that never pickled the module, copies nothing.

    Args:
        module: the module (a ``RecMetricModule``, a metric, a ``MetricCollection``, ...).

    Returns:
        The number of storages copied.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR
        >>> from torchmetrics_ext.utilities.distributed import unshare_memory
        >>> metric = CTR()
        >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
        >>> for state in metric.metric_state.values():  # what pickling it for a spawned process does
        ...     _ = state.share_memory_()
        >>> unshare_memory(metric), [s.is_shared() for s in metric.metric_state.values()], metric.compute().item()
        (3, [False, False, False], 0.5)
        >>> unshare_memory(metric)  # nothing shared any more
        0
    """
    copies: dict[int, torch.UntypedStorage] = {}
    seen: set[int] = set()
    stack: list[Any] = [module]
    with torch.no_grad():
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, Tensor):
                if obj.device.type == "cpu" and obj.is_shared():
                    storage = obj.untyped_storage()
                    new = copies.get(storage.data_ptr())
                    if new is None:
                        new = copies[storage.data_ptr()] = storage.clone()
                    obj.set_(new, obj.storage_offset(), obj.size(), obj.stride())
            elif isinstance(obj, dict):
                stack.extend(obj.values())
            elif isinstance(obj, (list, tuple, deque)):
                stack.extend(obj)
            elif isinstance(obj, torch.nn.Module) or type(obj).__module__.startswith("torchmetrics"):
                stack.extend(getattr(obj, "__dict__", {}).values())
    return len(copies)


def own_storages_in_spawned_process(module: torch.nn.Module) -> int:
    """In a process started by ``multiprocessing`` (a spawned rank), :func:`unshare_memory` of ``module``; else nothing.

    A module built in the parent and handed to the ranks as an argument (``fabric.launch(fn, module)``
    under ``strategy="ddp_spawn"``, ``torch.multiprocessing.spawn(fn, args=(module,))``) arrives with
    every CPU state in shared memory, one storage for all ranks (and the parent): each rank's sums
    then land in the others' states and synced counts are multiplied by the world size. Called once
    per module and process before its first write (a ``RecMetricModule``'s first ``update`` or
    ``load_state_dict``), while no rank has written into the shared storages yet, the copies hold
    what the parent held, and each rank goes on with storages of its own. In the main process
    (``multiprocessing.parent_process()`` is ``None``) nothing is read.

    Returns:
        The number of storages copied.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR
        >>> from torchmetrics_ext.utilities.distributed import own_storages_in_spawned_process
        >>> metric = CTR()
        >>> for state in metric.metric_state.values():  # what pickling it for a spawned process does
        ...     _ = state.share_memory_()
        >>> own_storages_in_spawned_process(metric)  # the main process: nothing is copied
        0
    """
    if multiprocessing.parent_process() is None:
        return 0
    return unshare_memory(module)


def has_untyped_list_states(metric: Any) -> bool:
    """Whether ``metric`` (a ``torchmetrics.Metric``) has a list state whose dtype it does not declare.

    Such a state (any TorchMetrics metric's ``cat`` state) syncs through :class:`TypedGather`: a
    rank that holds no element sends TorchMetrics' 1-D float32 placeholder. The package's own
    metrics declare their list states' dtypes.

    Examples:
        >>> from torchmetrics.aggregation import CatMetric, SumMetric
        >>> has_untyped_list_states(CatMetric()), has_untyped_list_states(SumMetric())
        (True, False)
    """
    declared = getattr(metric, "_list_state_dtypes", {})
    return any(isinstance(default, list) and name not in declared for name, default in metric._defaults.items())


class TypedGather:
    """A ``dist_sync_fn`` that agrees on each tensor's dtype (and an empty one's shape) across ranks, then gathers.

    For a metric whose ``cat`` list states declare no dtype (a TorchMetrics metric): TorchMetrics
    sends a rank's empty list state as ``torch.tensor([])`` (1-D, the metric's float dtype), and a
    gather of it with other ranks' int64 targets or ``(N, C)`` scores aborts the process group.
    Before each gather every rank of the group sends one small int64 tensor (whether it holds
    samples, its dtype and shape: one ``all_gather``, the same on every rank whatever it holds, so
    it cannot deadlock); then

    * the agreed dtype is the promotion (``torch.promote_types``) of the dtypes of the ranks that
      hold samples (of the lowest rank's when none does), and each rank casts its tensor to it;
    * an empty tensor takes the trailing dimensions of the lowest rank that holds samples.

    Then ``gather`` (the user's sync function, else TorchMetrics' ``gather_all_tensors``) runs as
    usual. Without an initialised process group (a ``dist_sync_fn`` faking ranks) it only calls
    ``gather``. Costs one extra collective per gathered state: metrics that declare their list
    states' dtypes (the package's own) do not need it.

    Args:
        gather: the sync function to call after the agreement; ``None``: ``gather_all_tensors``.

    Examples:
        >>> import torch
        >>> from torchmetrics.aggregation import CatMetric
        >>> from torchmetrics_ext.utilities.distributed import TypedGather
        >>> metric = CatMetric(dist_sync_fn=TypedGather())  # a TorchMetrics metric with a list state
        >>> metric.dist_sync_fn
        TypedGather(None)
        >>> def two_ranks(tensor, group=None):  # a sync function of one's own (here faking a second rank)
        ...     return [tensor, tensor + 10]
        >>> TypedGather(two_ranks)(torch.tensor([1, 2]))  # no process group: the gather alone runs
        [tensor([1, 2]), tensor([11, 12])]
    """

    gather: Callable[..., list[Tensor]] | None

    def __init__(self, gather: Callable[..., list[Tensor]] | None = None) -> None:
        self.gather = gather.gather if isinstance(gather, TypedGather) else gather  # never agreed twice

    def __call__(self, tensor: Tensor, group: Any = None) -> list[Tensor]:
        """Agree on ``tensor``'s dtype and empty shape with the other ranks of ``group``, then gather it."""
        if dist.is_available() and dist.is_initialized():
            tensor = _agree(tensor, group)
        return (self.gather or gather_all_tensors)(tensor, group=group)

    def __repr__(self) -> str:
        return f"TypedGather({self.gather!r})"


def _agree(tensor: Tensor, group: Any) -> Tensor:
    """``tensor`` cast to the dtype the ranks of ``group`` agree on, an empty one reshaped (:class:`TypedGather`)."""
    dims = list(tensor.shape[:_MAX_DIMS])
    info = [int(tensor.numel() > 0), _CODES.get(tensor.dtype, -1), tensor.ndim, *dims, *[-1] * (_MAX_DIMS - len(dims))]
    local = torch.tensor(info, dtype=torch.int64, device=tensor.device)
    infos = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(infos, local, group=group)
    rows = torch.stack(infos).tolist()
    holders = [row for row in rows if row[0]] or rows[:1]  # the ranks with samples, else the lowest rank
    if any(row[1] < 0 for row in holders):  # a dtype not in the table: gathered as it is
        return tensor
    dtype = functools.reduce(torch.promote_types, (_DTYPES[row[1]] for row in holders))
    ndim, trailing = holders[0][2], tuple(holders[0][4 : 3 + holders[0][2]])  # dims after the first
    if tensor.numel() == 0 and 1 <= ndim <= _MAX_DIMS and (tensor.ndim, tuple(tensor.shape[1:])) != (ndim, trailing):
        return tensor.new_empty((0, *trailing), dtype=dtype)
    return tensor if tensor.dtype == dtype else tensor.to(dtype)
