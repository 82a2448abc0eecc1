"""Copies and unpickled objects made under ``torch.inference_mode()`` hold ordinary tensors.

Lightning runs validation, testing and their hooks under ``torch.inference_mode()``. A tensor made
there is an *inference tensor*, and torch refuses to write one in place outside inference mode
("Inplace update to inference tensor outside InferenceMode is not allowed"). A metric copied in
such a hook (``metric.clone()``, ``copy.deepcopy``, TorchMetrics' ``MetricTracker.increment()``,
``MetricCollection.clone(prefix=...)``) or unpickled there (``pickle.loads``, ``torch.load``) held
inference tensors as its sums, and its first ``update`` in a training step failed. The package's
metrics, wrappers and module copy and unpickle through these two helpers instead.
"""

from __future__ import annotations

import collections
import copy
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["deepcopy_ordinary", "ordinary_tensors"]

_T = TypeVar("_T")


def deepcopy_ordinary(obj: _T, memo: dict[int, Any]) -> _T:
    """``copy.deepcopy``'s copy of ``obj`` (through its ``__getstate__`` and ``__setstate__``), tensors ordinary.

    The default ``deepcopy`` of an object without ``__reduce__`` of its own, run outside inference
    mode: the copied tensors (and the storage they share, kept shared) are ordinary tensors.
    """
    cls = type(obj)
    copied = cls.__new__(cls)
    memo[id(obj)] = copied
    with torch.inference_mode(False):
        copied.__setstate__(copy.deepcopy(obj.__getstate__(), memo))  # type: ignore[attr-defined]
    return copied


def ordinary_tensors(state: dict[str, Any], lists: bool = False) -> None:
    """Replace, in place, the inference tensors of an unpickled ``state`` by ordinary copies.

    Only under inference mode (``pickle.loads`` or ``torch.load`` there rebuilds every tensor as
    an inference tensor); elsewhere nothing is read. Walks the state's dicts and tuples, and its
    lists and deques when ``lists`` (not other objects: each of the package's classes converts its
    own state). A metric's list states are left as they are: their chunks are never written in
    place, and a window's lists hold the very chunks of its lifetime metric (one object each, kept
    so). Tensors that shared a storage share the copy of it (views of one buffer stay views of it).
    """
    if not torch.is_inference_mode_enabled():
        return
    storages: dict[int, Any] = {}
    with torch.inference_mode(False):
        for key, value in state.items():
            state[key] = _ordinary(value, storages, lists)


def _ordinary(value: Any, storages: dict[int, Any], lists: bool) -> Any:
    if isinstance(value, Tensor):
        if not value.is_inference():
            return value
        storage = value.untyped_storage()
        key = storage.data_ptr() if storage.nbytes() else id(value)
        if key not in storages:
            storages[key] = storage.clone()
        copied = torch.empty(0, dtype=value.dtype, device=value.device)
        copied.set_(storages[key], value.storage_offset(), value.shape, value.stride())
        return copied
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _ordinary(item, storages, lists)
        return value
    if isinstance(value, list) and lists:
        value[:] = [_ordinary(item, storages, lists) for item in value]
        return value
    if isinstance(value, collections.deque) and lists:
        items = [_ordinary(item, storages, lists) for item in value]
        value.clear()
        value.extend(items)
        return value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_ordinary(item, storages, lists) for item in value)
    return value
