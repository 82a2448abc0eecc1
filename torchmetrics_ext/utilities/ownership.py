"""Which live wrapper holds a metric object, and the states it writes only when they are read.

Two registries keyed by ``id`` (a TorchMetrics metric's hash follows its states and its ``==``
builds a new metric), holding the metric weakly so that an entry dies with its metric:

* **Owners.** A :class:`~torchmetrics_ext.Windowed` or :class:`~torchmetrics_ext.RecMetricModule`
  updates the metric objects it is built on. One object given to two of them (train and val built
  from one dict, two windows over one metric) would hold both's states: each wrapper's values would
  count the other's samples, and one's ``reset`` would wipe the other's. Each wrapper refuses an
  object another live one holds (:func:`owner_of`) and records its own (:func:`take_ownership`),
  its copies included.
* **Deferred states.** A ``Windowed`` leaves the window's tensor states (and a binned metric's
  lifetime histogram) to be written when read. :func:`defer_state_writes` registers the function
  that writes them; every read of such a metric's states (its ``compute``, ``state_dict``,
  ``metric_state``, copies and pickles, merges, syncs) calls :func:`write_deferred_states` first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["defer_state_writes", "owner_of", "release_ownership", "take_ownership", "write_deferred_states"]

# id(metric) -> (weak reference to it, weak reference to its owner)
_OWNERS: dict[int, tuple[weakref.ref[Any], weakref.ref[Any]]] = {}
# id(metric) -> (weak reference to it, function writing its deferred states)
_DEFERRED: dict[int, tuple[weakref.ref[Any], Callable[[], None]]] = {}


def _forget(registry: dict[int, Any], key: int) -> Callable[[weakref.ref[Any]], None]:
    """A weakref callback dropping ``registry[key]`` when its metric is gone (not a newer entry of the same id)."""

    def forget(ref: weakref.ref[Any]) -> None:
        entry = registry.get(key)
        if entry is not None and entry[0] is ref:
            del registry[key]

    return forget


def owner_of(metric: object) -> Any | None:
    """The live wrapper (``Windowed`` or ``RecMetricModule``) holding ``metric``, or ``None``."""
    entry = _OWNERS.get(id(metric))
    if entry is None or entry[0]() is not metric:
        return None
    return entry[1]()


def take_ownership(metrics: Iterable[object], owner: object) -> None:
    """Record ``owner`` as the wrapper holding each of ``metrics`` (replacing an earlier owner's entry)."""
    ref = weakref.ref(owner)
    for metric in metrics:
        key = id(metric)
        _OWNERS[key] = (weakref.ref(metric, _forget(_OWNERS, key)), ref)


def release_ownership(metrics: Iterable[object]) -> None:
    """Forget the owners of ``metrics`` (a wrapper built on them failed: they are free for another)."""
    for metric in metrics:
        entry = _OWNERS.get(id(metric))
        if entry is not None and entry[0]() is metric:
            del _OWNERS[id(metric)]


def defer_state_writes(metric: object, write: Callable[[], None]) -> None:
    """Register ``write``: it brings ``metric``'s deferred states up to date, and runs before each read of them."""
    key = id(metric)
    _DEFERRED[key] = (weakref.ref(metric, _forget(_DEFERRED, key)), write)


def write_deferred_states(metric: object) -> None:
    """Write ``metric``'s deferred states (see :func:`defer_state_writes`); nothing for any other object."""
    entry = _DEFERRED.get(id(metric))
    if entry is not None and entry[0]() is metric:
        entry[1]()
