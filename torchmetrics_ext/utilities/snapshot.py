"""A snapshot of a module's in-memory state, put back when an operation on it fails (all or nothing).

A ``load_state_dict`` loads one submodule after another: a checkpoint refused by the fifth metric
(another ``num_bins``, a missing key with ``strict=True``) used to leave the first four loaded.
:func:`snapshot` records, without copying a tensor, what every object of the module refers to:
each ``nn.Module``'s ``__dict__`` (the metric states are plain attributes there), the package's
own helper objects (window rings, histograms, the shared ring) and every list, dict, deque and set
they hold, each as a shallow copy. Putting those contents back into the same container objects
restores the module exactly, the objects' identities included (other objects keep references to
these containers, e.g. the shared ring to its units' ``__dict__``), as long as the operation only
rebinds tensors, as the package's loads do: they load each state as a new tensor, clear a ring by
making new buffers, reset a metric by new default tensors. Parameters and buffers, which
``nn.Module`` loads in place, are cloned (metrics rarely hold any). A container the operation left
as it was is not touched: one being iterated over (the post-hooks torch runs while a load-state
hook restores the module) stays valid.

An operation that also writes tensors in place (an ``update``: ``state.add_(...)``, a window ring's
preallocated slots) is undone by ``snapshot(root, writes_in_place=True)``, which also clones every
tensor it reaches outside a list and writes the clones back: a list's tensors (the chunks of a
``cat`` state, a ring's segments) are only ever appended, replaced or sliced, so copying the list
keeps them, and a long ``cat`` state costs no copy of its data.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Restore", "snapshot"]

_OWN = "torchmetrics_ext."  # helper objects of the package (rings, histograms) are walked into
# what the walk does with an object, by its type: skip it, clone it (a tensor), copy it (a dict, list,
# deque or set) and go into it, go into it (a tuple, a module, a helper object of the package)
_LEAF, _TENSOR, _CONTAINER, _TUPLE, _MODULE, _HELPER = range(6)
_KINDS: dict[type, int] = {}
# the hook tables every nn.Module holds (``_forward_hooks``, ``_state_dict_pre_hooks``, ...), which no update changes
_UNCHANGED_BY_UPDATES = frozenset(
    name
    for name, value in vars(nn.Module()).items()
    if isinstance(value, (dict, set)) and name not in ("_modules", "_parameters", "_buffers")
) | {"_defaults"}  # and a TorchMetrics metric's state defaults (reset copies them: never written)


def snapshot(root: nn.Module, *, writes_in_place: bool = False) -> Restore:
    """Record the in-memory state of ``root`` and everything it holds; return a function that puts it back.

    The cost is one shallow copy per container reached (a list state's list of chunks, a ring's
    deques): no tensor data is copied but parameters and buffers, and with ``writes_in_place`` the
    tensors reached outside a list (tensor states, a ring's buffers: small for the aggregation metrics).

    Args:
        root: the module whose state the returned function restores.
        writes_in_place: the operation may write into the tensors ``root`` holds (an ``update``), not
            only rebind them: those reached outside a list are cloned and written back too, but for
            the buffers of a helper with ``record_rewrites`` (a window ring's slots), which it copies
            itself before it first rewrites them (at most once per turn of the window); call
            ``release()`` on the result once the operation succeeded, so that it stops.

    Returns:
        A function that restores every container recorded to its recorded contents, in place
        (with ``release()``). A tensor that cannot take its copy back (the operation resized it in
        place) does not stop the others: every other one is written back, then the first such
        error is raised.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR
        >>> from torchmetrics_ext.utilities.snapshot import snapshot
        >>> metric = CTR()
        >>> metric.update(torch.tensor([0.5]), torch.tensor([1]))
        >>> restore = snapshot(metric)
        >>> metric.reset()
        >>> restore()
        >>> metric.compute()
        tensor(1., dtype=torch.float64)
    """
    saved: list[tuple[Any, Any]] = []
    tensors: list[tuple[Tensor, Tensor]] = []
    recorders: list[Any] = []  # helpers that keep what they rewrite in place (record_rewrites)
    seen: set[int] = set()
    pending: list[Any] = [root]

    def walk(items: Any, clone: bool) -> None:
        """Queue what ``items`` hold that the walk goes into (tensors only when ``clone``); skip other leaves."""
        for item in items:
            kind = _KINDS.get(type(item))
            if kind is None:
                kind = _kind_of(type(item))
            if kind > _TENSOR or (kind == _TENSOR and clone):
                pending.append(item)

    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = _KINDS.get(type(obj))
        if kind is None:
            kind = _kind_of(type(obj))
        if kind == _TENSOR:  # reached outside a list, with writes_in_place only
            if obj.layout is not torch.strided or 0 not in obj.stride() or not _expanded(obj):
                # nothing writes in place into an expanded view (torch refuses it)
                tensors.append((obj, obj.detach().clone()))
        elif kind == _CONTAINER:
            saved.append((obj, obj.copy()))
            # a list's tensors are leaves (a list state's chunks: the bulk of what is reached)
            walk(obj.values() if isinstance(obj, dict) else obj, writes_in_place and not isinstance(obj, list))
        elif kind == _TUPLE:
            walk(obj, writes_in_place)
        elif kind == _MODULE:
            held = [t for t in (*obj._parameters.values(), *obj._buffers.values()) if t is not None]
            tensors.extend((t, t.detach().clone()) for t in held)
            seen.update(map(id, held))
            if writes_in_place:  # an update registers no hook and changes no state's default: those are left out
                own = obj.__dict__
                seen.add(id(own))
                saved.append((own, own.copy()))
                walk([value for name, value in own.items() if name not in _UNCHANGED_BY_UPDATES], True)
            else:
                pending.append(obj.__dict__)
        elif writes_in_place and callable(getattr(obj, "record_rewrites", None)):
            # a helper that keeps the buffers it rewrites in place (a window ring's slots) itself, the first
            # time it rewrites them: not copied at each update (a ring of a window's updates can be large)
            own = obj.__dict__
            seen.add(id(own))
            saved.append((own, own.copy()))
            for name, value in own.items():
                if name in obj.rewritten_later:
                    seen.add(id(value))
                    saved.append((value, value.copy()))
                else:
                    walk([value], True)
            recorders.append(obj)
        elif isinstance(getattr(obj, "__dict__", None), dict):  # a helper object of the package
            pending.append(obj.__dict__)
    for recorder in recorders:
        recorder.record_rewrites()

    def restore() -> None:
        for recorder in recorders:  # before the containers: its record is in its own __dict__
            recorder.undo_rewrites()
        for container, contents in saved:
            if _holds(container, contents):
                continue  # left as it was (a hook table torch may be iterating over now)
            container.clear()
            if isinstance(container, (list, collections.deque)):
                container.extend(contents)
            else:
                container.update(contents)
        inference = torch.is_inference_mode_enabled()
        failed: Exception | None = None
        with torch.no_grad():
            for tensor, value in tensors:
                if inference or not tensor.is_inference():  # one written in place outside inference mode is not
                    try:
                        tensor.copy_(value)
                    except Exception as err:  # resized in place: the copy no longer fits; the others still go back
                        failed = failed or err
        if failed is not None:
            raise failed

    def release() -> None:
        for recorder in recorders:
            recorder.stop_recording()

    return Restore(restore, release)


class Restore:
    """What :func:`snapshot` returns: call it to put the state back; :meth:`release` once it is not needed."""

    def __init__(self, restore: Callable[[], None], release: Callable[[], None]) -> None:
        self._restore, self.release = restore, release

    def __call__(self) -> None:
        """Put back the state recorded (the helpers that kept rewritten buffers stop keeping them)."""
        self._restore()


def _holds(container: Any, contents: Any) -> bool:
    """Whether ``container`` holds exactly ``contents`` (the same objects; the same keys, for a dict)."""
    if len(container) != len(contents):
        return False
    if isinstance(container, dict):
        return all(key in container and container[key] is value for key, value in contents.items())
    if isinstance(container, set):
        return bool(container == contents)
    return all(now is was for now, was in zip(container, contents))


def _expanded(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a view whose elements share memory (a stride 0 over more than one element)."""
    if tensor.layout is not torch.strided:  # a sparse tensor has no strides
        return False
    return any(stride == 0 and size > 1 for size, stride in zip(tensor.shape, tensor.stride(), strict=True))


def _kind_of(cls: type) -> int:
    """What the walk does with an object of class ``cls`` (kept per class: the walk meets every object it holds)."""
    if issubclass(cls, Tensor):
        kind = _TENSOR
    elif issubclass(cls, (dict, list, collections.deque, set)):
        kind = _CONTAINER
    elif issubclass(cls, tuple):
        kind = _TUPLE
    elif issubclass(cls, nn.Module):
        kind = _MODULE
    elif cls.__module__.startswith(_OWN):
        kind = _HELPER
    else:
        kind = _LEAF
    _KINDS[cls] = kind
    return kind
