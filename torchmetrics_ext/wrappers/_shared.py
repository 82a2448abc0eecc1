"""One ring buffer for the windows of several additive metrics that a module updates together.

A :class:`~torchmetrics_ext.wrappers.windowed.Windowed` metric pays a fixed cost per ``update``
for its window: views of the ring's next slot, the slot set to the identity, the wrapped metric's
``update`` into it, the slot folded into the window's running sum and into the lifetime, and the
bookkeeping of the window rule. ``RecMetricModule`` updates several such metrics (NE,
calibration, MSE, accuracy, ...) with the same samples at every step, so their windows always
hold the same updates: :class:`SharedRing` lays their rings' slots side by side in one
``(capacity, D)`` buffer and does that work once per step for all of them:

* each metric's scratch update writes into its columns of one *staging* row (set to zero once);
* the row is copied into the buffer's next slot and added to the window's running sum (two
  kernels), and the lifetime states take their columns in one fused add;
* each ring's bookkeeping (sizes, head, count) moves as its own ``push`` would move it, and its
  ``evict`` applies the window rule.

Every ring stays a complete :class:`~torchmetrics_ext.wrappers._ring.StateRing` whose buffers
are views of the shared ones: reading the window, saving, loading, syncing, resetting and moving
go through each metric's own ring unchanged, and the values are the bits the metrics' own
updates give (the same additions, in the same order). A ring whose buffers were replaced (a
load, a reset, a move, a growth by its own update) leaves the layout (``StateRing.shared`` is
dropped), and the next step lays the rings out again, copying their slots, when their windows
hold the same updates (the shared buffer of the old layout is released then); otherwise each
metric updates its own window, as outside a module, until they do again (the update of one
metric alone has left its window, or a reset).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["SharedRing"]


def shareable(unit: Windowed) -> bool:
    """Whether a windowed metric's ring can share a buffer: float sums only, counted along the last axis.

    Such a metric's sample count is its inputs' last dimension, the same for every metric the
    module updates with one step's ``(T, N)`` columns, so their windows hold the same updates.
    """
    from torchmetrics_ext.metrics.base import TaskMetric

    ring, scratch = unit._ring, unit._scratch
    return (
        unit._hist is None
        and not ring.list_names
        and bool(ring.tensor_names)
        and set(ring.groups) == {"sum"}
        and not unit.__dict__.get("_compensated")
        and isinstance(scratch, TaskMetric)
        and type(scratch).sample_count is TaskMetric.sample_count
        and scratch.sample_axis == -1
    )


def _plain_pointwise(unit: Windowed) -> bool:
    """Whether the unit's metric updates by adding its ``_batch_stats`` (1-D, one per state, in the ring's order)."""
    from torchmetrics_ext.metrics.pointwise import _PointwiseMetric

    scratch = unit._scratch
    return (
        isinstance(scratch, _PointwiseMetric)
        and type(scratch).update is _PointwiseMetric.update
        and tuple(scratch._state_keys) == tuple(unit._ring.tensor_names)
        and all(unit._ring.defaults[name].ndim == 1 for name in unit._ring.tensor_names)
    )


class SharedRing:
    """The rings of ``units`` (each :func:`shareable`) laid out in one buffer, stepped together.

    Args:
        units: windowed metrics updated with the same samples at every step, with the same window
            rule (``window_size``, ``max_updates``, share per rank).
    """

    def __init__(self, units: Sequence[Windowed]) -> None:
        self.units = list(units)
        self.rings = [unit._ring for unit in self.units]
        # every state's columns: (unit index, name, shape, start, stop)
        self.layout: list[tuple[int, str, torch.Size, int, int]] = []
        width = 0
        for k, ring in enumerate(self.rings):
            for name in ring.tensor_names:
                shape = ring.defaults[name].shape
                self.layout.append((k, name, shape, width, width + ring.defaults[name].numel()))
                width += ring.defaults[name].numel()
        self.width = width
        # per state, the lifetime metric holding it (the children of a Windowed are never replaced)
        self.lifetime_states = [(self.units[k]._modules["lifetime"], name) for k, name, *_ in self.layout]
        # the same pairs as two lists, read with one `map(getattr, ...)` per step
        self.lifetime_holders = [life for life, _ in self.lifetime_states]
        self.lifetime_names = [name for _, name in self.lifetime_states]
        # what `Windowed._count_update` counts an update on: each unit and its two children (never replaced)
        self.counted = [
            child.__dict__
            for unit in self.units
            for child in (unit, unit._modules["lifetime"], unit._modules["window"])
        ]
        # the lifetime states as views of one row laid out as the staging row (see `_lifetime_row`)
        self.life_row: Tensor | None = None
        self.life_views: list[Tensor] = []
        self.limit = 0  # this rank's window share, as the step's `ready` read it
        self.staging: Tensor | None = None
        self.zero: Tensor | None = None  # a 0-dim zero of the staging row's dtype and device (see `commit`)
        self.buffer: Tensor | None = None
        self.back: Tensor | None = None
        self.views: list[dict[str, Tensor]] = []  # each unit's states as views of the staging row
        self.targets: list[Tensor] = []  # the staging views in the order of `layout`
        # pointwise metrics (their `update` adds their batch statistics, one 1-D tensor per state in
        # the ring's order): their statistics are collected and written into the staging row with
        # one `cat`, not added one metric at a time into its zeroed columns
        self.direct = all(_plain_pointwise(unit) for unit in self.units)
        # per unit, in the order of `units` (the layout's), its statistics of the step: the module may call the
        # units in another order (metrics fed `sigmoid(preds)` after the others, those of some tasks last)
        self.stats: list[Sequence[Tensor]] = [()] * len(self.units)
        self.collectors: list[Callable[..., Any]] = [
            functools.partial(self._collect, k, u._scratch) for k, u in enumerate(self.units)
        ]

    # ------------------------------------------------------------------ layout

    def intact(self) -> bool:
        """Whether every ring still holds its slots in the shared buffer, at the same place in its window.

        A ring updated on its own (a unit's ``update`` or ``forward`` outside the module's step)
        leaves the layout; the window's position is compared too.
        """
        if self.buffer is None:
            return False
        first = self.rings[0]
        place = (first.head, first.count, first.capacity)
        return all(ring.shared is self and (ring.head, ring.count, ring.capacity) == place for ring in self.rings)

    def release(self) -> None:
        """Drop the shared buffers (the rings that left the layout hold their own; the next step lays them out again).

        Called when the layout no longer holds (a ring loaded, reset, grown or updated on its own) and
        by ``RecMetricModule.reset``: the buffer would otherwise stay allocated next to the rings' own.
        """
        self.buffer = self.back = self.staging = self.zero = None
        self.views, self.targets = [], []

    def adopt(self, capacity: int = 0) -> bool:
        """Lay the rings out in one buffer of at least ``capacity`` slots, their slots copied in order.

        Returns ``False`` (nothing changed) when the rings' windows differ (their updates) or their
        states do not share one dtype and device. Each ring keeps its own two-stack split (``front``,
        its running ``back``): its flips act on its own columns, so a ring updated on its own once
        joins again, bit for bit, when its window holds the others' updates again.
        """
        first = self.rings[0]
        like = first.defaults[first.tensor_names[0]]
        for ring in self.rings:
            if (ring.count, ring.used) != (first.count, first.used):
                return False
            for default in map(ring.defaults.__getitem__, ring.tensor_names):
                if default.dtype != like.dtype or default.device != like.device:
                    return False
        if any(ring.sizes != first.sizes or len(ring.spans) != ring.count for ring in self.rings):
            return False
        count = first.count
        capacity = max(8, capacity, first.capacity)
        with torch.inference_mode(False):  # written in place by later updates: never inference tensors
            buffer = like.new_empty((capacity, self.width))
            back = like.new_empty((self.width,))
            staging = like.new_zeros((self.width,))
            zero = like.new_zeros(())
            # every view made here too: one made under inference mode could not be written outside it
            slots, sums, views = [], [], []
            for k, name, shape, start, stop in self.layout:
                ring = self.rings[k]
                if count:
                    older, newer = ring._in_order(ring.rings[name])
                    buffer[: older.shape[0], start:stop] = older.reshape(older.shape[0], stop - start)
                    buffer[older.shape[0] : count, start:stop] = newer.reshape(newer.shape[0], stop - start)
                back[start:stop] = ring.back[name].reshape(-1)
                slots.append(buffer[:, start] if not shape else buffer[:, start:stop].unflatten(1, shape))
                sums.append(back[start:stop].view(shape))
                views.append(staging[start:stop].view(shape))
        self.views = [{} for _ in self.rings]
        for (k, name, *_), slot, total, view in zip(self.layout, slots, sums, views):
            ring = self.rings[k]
            ring.rings[name], ring.back[name] = slot, total
            self.views[k][name] = view
        self.targets = views
        for ring in self.rings:
            ring.capacity, ring.head, ring.shared = capacity, 0, self
            ring.zero_slots = False  # the shared buffer's free slots are not zeroed
        self.buffer, self.back, self.staging, self.zero = buffer, back, staging, zero
        return True

    def ready(self, limit: int) -> bool:
        """Whether the next step can go through the shared buffer: laid out again when needed, grown when full.

        ``limit``: this rank's share of the window, which the step's :meth:`commit` keeps.
        """
        self.limit = limit
        if not self.intact():
            self.release()  # the old layout's buffers: the rings that left it hold their own
            if not self.adopt():
                return False
        first = self.rings[0]
        return first.count < first.capacity or self.adopt(2 * first.capacity)

    def _lifetime_row(self, states: list[Tensor]) -> Tensor | None:
        """The lifetime ``states`` (in the order of ``layout``) as views of one row, which the staging row adds to.

        They are made views of a copy of their values (the same numbers) when they are not already
        those views: at the first step, and after a reset, load, sync or cast gave the lifetime new
        tensors. ``None`` (each state added on its own) when they differ from the staging row in
        dtype or device.
        """
        views = self.life_views
        if len(views) == len(states) and all(map(operator.is_, states, views)):
            return self.life_row
        staging = self.staging
        assert staging is not None
        if any(
            state.dtype != staging.dtype or state.device != staging.device or state.shape != shape
            for state, (_, _, shape, _, _) in zip(states, self.layout)
        ):
            self.life_row, self.life_views = None, []
            return None
        with torch.inference_mode(False):  # written in place by later updates: never inference tensors
            row = torch.cat([state.detach().reshape(-1) for state in states])
            views = [row[start:stop].view(shape) for _, _, shape, start, stop in self.layout]
        for (life, name), view in zip(self.lifetime_states, views):
            setattr(life, name, view)
        self.life_row, self.life_views = row, views
        return row

    # ------------------------------------------------------------------ per step

    def _collect(self, k: int, scratch: Any, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Unit ``k``'s pointwise ``update`` into the staging row: its batch statistics, kept for :meth:`commit`.

        Inside the module's step the inputs are its validated ``(T, N)`` float64 batch (the metric
        trusts them), which ``_format`` would return as they are: the statistics are taken directly.
        Kept at the unit's place, so the units may be called in any order.
        """
        if scratch._check_inputs:
            preds, target, weights = scratch._format(preds, target, weights, True)
        self.stats[k] = scratch._batch_stats(preds, target, weights)

    def begin(self) -> list[Callable[..., Any]]:
        """Ready the staging row for the step; each unit's ``update`` into it (called with the unit's inputs).

        Pointwise units' statistics are collected (:meth:`_collect`); otherwise the row is zeroed
        and each unit's scratch metric bound to its columns, updated in place.
        """
        assert self.staging is not None  # after `ready()`
        if self.direct:
            self.stats = [()] * len(self.units)  # a unit not called leaves its columns short: `commit`'s cat refuses
            return self.collectors
        self.staging.zero_()
        updates = []
        for unit, views in zip(self.units, self.views):
            scratch = unit._scratch
            scratch.__dict__.update(views)  # plain attributes, as Windowed._batch_into binds its slot
            updates.append(getattr(scratch, "update_unwrapped", scratch.update))
        return updates

    def commit(self, size: int) -> None:
        """Push the staging row (one update of ``size`` samples) into every ring and lifetime; apply the window rule.

        Each ring ends as its own ``push`` and ``evict`` would leave it; the lifetimes take the
        row's columns as their ``Windowed`` adds its slot.
        """
        assert self.buffer is not None and self.back is not None and self.staging is not None and self.zero is not None
        first = self.rings[0]
        slot = (first.head + first.count) % first.capacity
        if self.direct:  # the units' statistics in the layout's order, whatever order they were called in
            # (joined in C: a comprehension over every unit's statistics cost ~100 bytecodes a step)
            torch.cat(list(itertools.chain.from_iterable(self.stats)), out=self.staging)
        else:  # a metric that rebinds a state instead of updating it in place (as Windowed._batch_into allows)
            for unit, views in zip(self.units, self.views):
                state = unit._scratch.__dict__
                for name, view in views.items():
                    if state[name] is not view:
                        view.copy_(state[name])
        # the slot as a ring's own: its zeroed slot plus the statistics (a -0.0 statistic kept as 0.0); the
        # zero as a 0-dim tensor of the row's dtype: the same sum without the scalar's wrap (~0.5 us a step)
        torch.add(self.staging, self.zero, out=self.buffer[slot])
        self.back.add_(self.staging)
        # read at every step: a reset, sync or load gives the lifetime new state tensors
        states = list(map(getattr, self.lifetime_holders, self.lifetime_names))
        row = self._lifetime_row(states)
        if row is None:
            torch._foreach_add_(states, self.targets)
        else:  # the same additions, element by element, in one kernel
            row.add_(self.staging)
        limit = self.limit
        for ring, unit in zip(self.rings, self.units):
            ring.sizes.append(size)
            ring.spans.append(1)
            ring.count += 1
            ring.used += size
            ring.evict(limit, unit.max_updates)
            unit.__dict__["_window_stale"] = True
        for state in self.counted:  # each unit's `_count_update`, in one loop
            state["_update_count"] += 1
            state["_computed"] = None
