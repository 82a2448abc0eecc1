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
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["snapshot"]

_OWN = "torchmetrics_ext."  # helper objects of the package (rings, histograms) are walked into


def snapshot(root: nn.Module) -> Callable[[], None]:
    """Record the in-memory state of ``root`` and everything it holds; return a function that puts it back.

    The cost is one shallow copy per container reached (a list state's list of chunks, a ring's
    deques): no tensor data is copied but parameters and buffers.

    Args:
        root: the module whose state the returned function restores.

    Returns:
        A function that restores every container recorded to its recorded contents, in place.

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
    seen: set[int] = set()
    pending: list[Any] = [root]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (dict, list, collections.deque, set)):
            saved.append((obj, obj.copy()))
            # tensors are leaves (a list state's chunks: the bulk of what is reached)
            pending.extend(v for v in (obj.values() if isinstance(obj, dict) else obj) if not isinstance(v, Tensor))
        elif isinstance(obj, tuple):
            pending.extend(obj)
        elif isinstance(obj, nn.Module):
            held = (*obj._parameters.values(), *obj._buffers.values())
            tensors.extend((t, t.detach().clone()) for t in held if t is not None)
            pending.append(obj.__dict__)
        elif type(obj).__module__.startswith(_OWN) and isinstance(getattr(obj, "__dict__", None), dict):
            pending.append(obj.__dict__)

    def restore() -> None:
        for container, contents in saved:
            if _holds(container, contents):
                continue  # left as it was (a hook table torch may be iterating over now)
            container.clear()
            if isinstance(container, (list, collections.deque)):
                container.extend(contents)
            else:
                container.update(contents)
        with torch.no_grad():
            for tensor, value in tensors:
                tensor.copy_(value)

    return restore


def _holds(container: Any, contents: Any) -> bool:
    """Whether ``container`` holds exactly ``contents`` (the same objects; the same keys, for a dict)."""
    if len(container) != len(contents):
        return False
    if isinstance(container, dict):
        return all(key in container and container[key] is value for key, value in contents.items())
    if isinstance(container, set):
        return bool(container == contents)
    return all(now is was for now, was in zip(container, contents))
