"""The states a wrapper writes into a metric object only when they are read.

A registry keyed by ``id`` (a TorchMetrics metric's hash follows its states and its ``==`` builds
a new metric), holding the metric weakly so that an entry dies with its metric:

* **Deferred states.** A ``Windowed`` leaves the window's tensor states (and a binned metric's
  lifetime histogram) to be written when read. :func:`defer_state_writes` registers the function
  that writes them; every read of such a metric's states (its ``compute``, ``state_dict``,
  ``metric_state``, copies and pickles, merges, syncs) calls :func:`write_deferred_states` first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["defer_state_writes", "write_deferred_states"]

# id(metric) -> (weak reference to it, function writing its deferred states)
_DEFERRED: dict[int, tuple[weakref.ref[Any], Callable[[], None]]] = {}


def _forget(registry: dict[int, Any], key: int) -> Callable[[weakref.ref[Any]], None]:
    """A weakref callback dropping ``registry[key]`` when its metric is gone (not a newer entry of the same id)."""

    def forget(ref: weakref.ref[Any]) -> None:
        entry = registry.get(key)
        if entry is not None and entry[0] is ref:
            del registry[key]

    return forget


def defer_state_writes(metric: object, write: Callable[[], None]) -> None:
    """Register ``write``: it brings ``metric``'s deferred states up to date, and runs before each read of them."""
    key = id(metric)
    _DEFERRED[key] = (weakref.ref(metric, _forget(_DEFERRED, key)), write)


def write_deferred_states(metric: object) -> None:
    """Write ``metric``'s deferred states (see :func:`defer_state_writes`); nothing for any other object."""
    entry = _DEFERRED.get(id(metric))
    if entry is not None and entry[0]() is metric:
        entry[1]()
