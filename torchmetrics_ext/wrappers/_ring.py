"""A ring of per-update metric statistics and their exact aggregate over a sliding window.

:class:`StateRing` keeps, for the updates currently in a window, each update's statistics in the
layout of the wrapped metric's states (as declared with ``add_state``):

* a ``sum``/``max``/``min`` tensor state has one preallocated ``(capacity, *shape)`` buffer whose
  slots are written in place by the metric's own ``update`` (capacity doubles when the window
  holds more updates than it has slots, so steady state allocates no buffer). The ring keeps no
  Python object per slot: an update gets views of its slot made for it (one per state, dropped
  once the update is pushed), so a window of ``U`` updates costs the buffers' ``U`` rows and
  nothing more;
* a ``cat`` list state keeps the chunks each update appended (the window's samples, nothing else),
  in *segments* of whole updates: an update's chunks are one segment, and the newest ``_JOIN`` (64)
  small segments are joined into one by the rule of
  :func:`~torchmetrics_ext.utilities.chunks.join_small_tails` (one tensor per state), so the
  window holds about ``64 + N / 32768`` tensors for ``N`` elements, not one per update, while
  large segments are rare: one among the newest 64 blocks the join, so updates of 32,768 elements
  or more at least once in 63 updates leave one segment per update (at most the window's updates:
  62 updates of 50 samples then one of 32,768, window 1,000,000, hold 1,701 segments). The ring
  keeps each update's rows (a Python int per state): evicting the oldest update of a joined
  segment slices its rows off the front (a view), so eviction stays exact update by update.

The window's aggregate of the tensor states is kept with the *two-stack* sliding-window scheme,
which never subtracts: the oldest ``front`` slots hold suffix aggregates (slot ``i`` holds the
reduction of slots ``i .. front end``), the newer slots hold raw statistics whose running
aggregate is ``back``, and the window is ``suffix[oldest] (+) back``. Evicting the oldest update
moves one index; when the front runs empty, the back slots are turned into suffix aggregates in
place (one pass per slot, once per turn of the window). Each window value is therefore a fresh
reduction of at most one turn's statistics: float64 sums carry the rounding of one sum over the
window's updates, never the drift of long add/subtract chains, and ``max``/``min`` work alike.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat, dim_zero_max, dim_zero_min, dim_zero_sum

from torchmetrics_ext.utilities.checks import as_int
from torchmetrics_ext.utilities.chunks import (
    _JOIN,
    _SMALL,
    _joinable,
    is_broadcast,
    join_chunks,
    join_small_tails,
    small_runs,
)
from torchmetrics_ext.utilities.formatting import article
from torchmetrics_ext.utilities.inference import ordinary_tensors
from torchmetrics_ext.utilities.state_dtypes import dtype_problem

__all__ = ["StateRing", "join_small_tails", "state_kind"]

_KINDS = {dim_zero_sum: "sum", dim_zero_max: "max", dim_zero_min: "min", dim_zero_cat: "cat"}
_REDUCE: dict[str, Callable[[list[Tensor], list[Tensor]], None]] = {
    "sum": torch._foreach_add_,
    "max": torch._foreach_maximum_,
    "min": torch._foreach_minimum_,
}
_COMBINE: dict[str, Callable[..., Tensor]] = {"sum": torch.add, "max": torch.maximum, "min": torch.minimum}
# running aggregate along the slot axis (dim 0), oldest slot first
_SCAN: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": lambda x: torch.cumsum(x, 0),
    "max": lambda x: torch.cummax(x, 0).values,
    "min": lambda x: torch.cummin(x, 0).values,
}
# dtypes whose sums scan in their own precision (a CPU float32 cumsum accumulates in float64);
# other floating sums are combined slot by slot, as on every device before
_SCAN_DTYPES = (torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def state_kind(name: str, reduction: Any, default: Any) -> str:
    """``"sum"``, ``"max"``, ``"min"`` or ``"cat"`` for a state declared with ``add_state``; raise otherwise.

    Raises:
        ValueError: for ``mean``, ``None`` or custom reductions (a window of them is not a
            reduction of per-update statistics), or a ``sum`` state that does not start at zero.
    """
    kind = _KINDS.get(reduction)
    if kind is None:
        label = getattr(reduction, "__name__", repr(reduction))
        raise ValueError(
            f"Expected every state of the metric to reduce with sum, max, min or cat; state `{name}` "
            f"reduces with {label}, so its window cannot be built from per-update statistics."
        )
    if kind == "cat" and not isinstance(default, list):
        raise ValueError(f"Expected the cat state `{name}` to be a list state, got {article(type(default).__name__)}.")
    if kind != "cat" and not isinstance(default, Tensor):
        raise ValueError(f"Expected state `{name}` to be a tensor, got {type(default).__name__}.")
    if kind == "sum" and not default.is_meta and bool(default.any()):  # meta (a model built there): no values
        raise ValueError(f"Expected the sum state `{name}` to start at zero, got default {default}.")
    return kind


def is_count(value: Any) -> bool:
    """Whether ``value`` is a whole number >= 0 (a Python or NumPy integer, a 0-dim integer tensor; no bool).

    The settings' rule (:func:`~torchmetrics_ext.utilities.checks.as_int`), so a count read from a
    checkpoint is what a count given as a setting is: a bool in any form (``True``, ``np.True_``,
    ``torch.tensor(True)``), a one-element tensor with dimensions, a float, a NumPy duration and a
    tensor without data (``device="meta"``, whose ``operator.index`` raised a bare RuntimeError)
    are no counts.
    """
    count = as_int(value)
    return count is not None and count >= 0


def _rows(chunks: Iterable[Tensor]) -> int:
    """Rows (first axis) of an update's chunks of one list state (a 0-dim chunk is one row)."""
    return sum(chunk.shape[0] if chunk.ndim else 1 for chunk in chunks)


def _numel(chunks: Iterable[Tensor]) -> int:
    return sum(map(Tensor.numel, chunks))


def _join_segments(parts: Mapping[str, Sequence[list[Tensor]]]) -> dict[str, list[Tensor]] | None:
    """Each state's chunks of consecutive segments joined into one tensor (or none); ``None`` if one cannot be.

    A state's chunks join when :func:`~torchmetrics_ext.utilities.chunks.join_small_tails` would
    join them (small, one device, dtypes ``torch.cat`` keeps exactly) and ``torch.cat`` takes them
    (at least one axis, the same trailing shape).
    """
    out: dict[str, list[Tensor]] = {}
    for name, segments in parts.items():
        chunks = [chunk for segment in segments for chunk in segment]
        if not chunks:
            out[name] = []
            continue
        shape = chunks[0].shape[1:]
        if chunks[0].ndim == 1:  # flat chunks (the common case): the same trailing shape is one dimension each
            shaped = set(map(Tensor.dim, chunks)) == {1}
        else:
            shaped = not any(chunk.ndim == 0 or chunk.shape[1:] != shape for chunk in chunks)
        if not shaped or not _joinable(chunks):
            return None
        out[name] = [join_chunks(chunks)]
    return out


def _suffix_of(view: Tensor, whole: Tensor) -> int | None:
    """The leading rows of ``whole`` that ``view`` lacks, if it is ``whole[cut:]``; else ``None``."""
    if view is whole:
        return 0
    if view.ndim == 0 or view.ndim != whole.ndim or view.shape[1:] != whole.shape[1:] or view.dtype != whole.dtype:
        return None
    cut = whole.shape[0] - view.shape[0]
    if cut < 0 or view.device != whole.device or view.stride() != whole.stride():
        return None
    if view.untyped_storage().data_ptr() != whole.untyped_storage().data_ptr():
        return None
    return cut if view.storage_offset() == whole.storage_offset() + cut * whole.stride(0) else None


def _join_shared(
    parts: Mapping[str, Sequence[list[Tensor]]], base: Mapping[str, list[Tensor]]
) -> dict[str, list[Tensor]] | None:
    """:func:`_join_segments` of the lifetime's own chunks where ``base`` ends with the chunks of ``parts``.

    The oldest chunk may be a view of the lifetime's newest rows of one (a segment partly
    evicted): the lifetime's chunks are joined whole, ``base`` holds the joined tensor in their
    place and the window gets a view of its rows. That whole chunk holds rows the window has
    evicted, so it is joined only by the rule of
    :func:`~torchmetrics_ext.utilities.chunks.join_small_tails` (small, and no larger than the
    newer chunks together): joined again and again, it grew by the window's newest updates each
    time until it reached ``_SMALL`` elements (copied each time), and the window then joined a
    copy of its own. ``None`` (nothing changed) when they are not the lifetime's newest chunks in
    every list state, alike, or cannot be joined (:meth:`StateRing.join_newest` then joins the
    newer segments only).
    """
    olds = {name: [chunk for segment in segments for chunk in segment] for name, segments in parts.items()}
    counts = {len(chunks) for chunks in olds.values()}
    if len(counts) != 1 or 0 in counts:
        return None
    n = counts.pop()
    cuts, wholes = {}, {}
    for name, chunks in olds.items():
        target = base.get(name)
        if not isinstance(target, list) or len(target) < n:
            return None
        whole = target[-n:]
        if not all(map(operator.is_, whole[1:], chunks[1:])):  # as many of each (n)
            return None
        cut = _suffix_of(chunks[0], whole[0])
        if cut is None:
            return None
        if cut and (is_broadcast(whole[0]) or whole[0].numel() >= _SMALL or 2 * whole[0].numel() > _numel(whole)):
            return None
        cuts[name], wholes[name] = cut, whole
    joined = _join_segments({name: [whole] for name, whole in wholes.items()})
    if joined is None:
        return None
    for name, (block,) in joined.items():
        base[name][-n:] = [block]
        if cuts[name]:
            joined[name] = [block[cuts[name] :]]
    return joined


def _apply_chunk(fn: Callable[[Tensor], Tensor], chunk: Tensor) -> Tensor:
    """``fn`` (a move or cast) of a list-state chunk; a stride-0 view moves one element and stays a view."""
    if is_broadcast(chunk) and chunk.numel() > 0:
        return fn(chunk[:1]).reshape(()).expand(chunk.shape[0])
    return fn(chunk)


class StateRing:
    """Per-update statistics of the updates in a window, oldest first, with their exact aggregate.

    Args:
        kinds: state name -> ``"sum"``, ``"max"``, ``"min"`` or ``"cat"`` (see :func:`state_kind`).
        defaults: state name -> the metric's default value (the identity each slot starts from).
        raw: tensor states kept as each update's own statistics, never aggregated by the ring (no
            running sum, no suffix aggregates): the wrapped metric reads the window of them from
            :meth:`raw_rows` (a ``Distribution``'s sums, each update's about its own shift, which
            plain addition cannot join). Their ``back`` stays the identity.
    """

    # oldest rows whose raw states hold suffix aggregates (a ring saved before it kept raw states:
    # the first of them stands for all of them), left as the window evicts them
    legacy: int = 0

    # the SharedRing whose buffer holds this ring's slots (see _shared.py); dropped whenever this
    # ring's buffers are replaced (cleared, loaded, grown by its own update, moved, copied)
    shared: Any = None
    # whether every slot of the buffers (used or free) holds zeros: true from `clear` while only
    # updates of zero statistics are pushed (`push_zero`), which then write no slot at all (a ring
    # pickled by an earlier version reads false: its slots are zeroed one by one)
    zero_slots: bool = False

    # the attributes whose tensors an update rewrites in place only through _flip: kept by record_rewrites
    rewritten_later: ClassVar[tuple[str, ...]] = ("rings",)

    def __init__(self, kinds: Mapping[str, str], defaults: Mapping[str, Any], raw: Iterable[str] = ()) -> None:
        self.kinds = dict(kinds)
        self.raw = frozenset(raw)
        self.groups = {k: [n for n, kind in self.kinds.items() if kind == k] for k in _REDUCE}
        self.groups = {k: names for k, names in self.groups.items() if names}
        self.tensor_names = [n for names in self.groups.values() for n in names]
        self.list_names = [n for n, kind in self.kinds.items() if kind == "cat"]
        self.defaults = {n: defaults[n].detach().clone() for n in self.tensor_names}
        self.clear()

    # ------------------------------------------------------------------ bookkeeping

    def clear(self) -> None:
        """Forget every update (and free the buffers)."""
        with torch.inference_mode(False):  # buffers written by later updates: never inference tensors
            self._clear()

    def _clear(self) -> None:
        self.shared = None
        self.zero_slots = True  # no slot yet: the buffers grow as zeros while it holds
        self.capacity = 0
        self.head = 0  # slot of the oldest update
        self.legacy = 0
        self.count = 0  # updates in the window
        self.front = 0  # oldest updates whose slots hold suffix aggregates
        self.used = 0  # samples in the window
        self.sizes: deque[int] = deque()
        self.rings: dict[str, Tensor] = {
            n: self.defaults[n].new_empty((0, *self.defaults[n].shape)) for n in self.defaults
        }
        self.back = {n: d.clone() for n, d in self.defaults.items()}
        # list states: segments of whole updates, oldest first (one list of chunks per segment and
        # state), the updates each segment holds, and every update's rows of each state
        self.chunks: dict[str, deque[list[Tensor]]] = {n: deque() for n in self.list_names}
        self.spans: deque[int] = deque()
        self.rows: dict[str, deque[int]] = {n: deque() for n in self.list_names}
        self.num_chunks = dict.fromkeys(self.list_names, 0)  # tensors held (the window's list entries)

    # ------------------------------------------------------------------ undoing an update

    def record_rewrites(self) -> None:
        """Keep a copy of each slot buffer before an update rewrites it in place (:meth:`_flip`), until released.

        With :func:`~torchmetrics_ext.utilities.snapshot.snapshot` (``writes_in_place``): an update
        that is undone gets its buffers back without a copy of the window at every update. Only a
        flip rewrites slots that hold updates (a new update writes a free slot; growing makes new
        buffers), at most once per turn of the window.
        """
        self.__dict__["_rewrites"] = ({id(r): [r, None] for r in self.rings.values()}, self.zero_slots)

    def undo_rewrites(self) -> None:
        """Write back the buffers kept since :meth:`record_rewrites` (all zeros, as they were, while no slot was)."""
        recorded = self.__dict__.pop("_rewrites", None)
        if recorded is None:
            return
        buffers, zero = recorded
        with torch.no_grad():
            for ring, before in buffers.values():
                if zero:  # the free slot a refused update wrote: the buffers held zeros only
                    ring.zero_()
                elif before is not None:
                    ring.copy_(before)

    def stop_recording(self) -> None:
        """Drop what :meth:`record_rewrites` kept (the update stays)."""
        self.__dict__.pop("_rewrites", None)

    def _keep_before_rewrite(self) -> None:
        """Copy the recorded buffers that a rewrite is about to change, once (see :meth:`record_rewrites`)."""
        buffers = self.__dict__["_rewrites"][0]
        for ring in self.rings.values():
            entry = buffers.get(id(ring))
            if entry is not None and entry[0] is ring and entry[1] is None:
                entry[1] = ring.clone()

    def _slot(self, i: int) -> int:
        return (self.head + i) % self.capacity

    def _in_order(self, ring: Tensor) -> tuple[Tensor, Tensor]:
        """The window's rows of ``ring``, oldest first, as two slices: up to the buffer's end, then from its start."""
        first = min(self.count, self.capacity - self.head)
        return ring[self.head : self.head + first], ring[: self.count - first]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.pop("shared", None) is not None:
            # views of a shared buffer: copied compact (pickle would write the whole buffer for each
            # view, and a copy would keep the other metrics' columns); the other metrics' rings are
            # not this one's to copy
            state["rings"] = {n: r.clone() for n, r in self.rings.items()}
            state["back"] = {n: b.clone() for n, b in self.back.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("slots", None)  # pickled by an earlier version: per-slot views, no longer kept
        state["shared"] = None  # a copy's buffers are its own
        state.setdefault("raw", frozenset())  # pickled by an earlier version: every state aggregated
        ordinary_tensors(state)  # unpickled under inference mode: the buffers written in place are ordinary
        self.__dict__.update(state)
        if "spans" not in state:  # pickled by an earlier version: one segment per update
            self.spans = deque([1] * len(self.sizes))
            self.rows = {n: deque(_rows(c) for c in chunks) for n, chunks in self.chunks.items()}

    def add_derived(self, name: str, derive: Callable[..., Tensor], sources: tuple[str, ...]) -> None:
        """Keep sum state ``name`` too, each slot and aggregate ``derive`` of the ``sources``' (an old pickle's).

        For a linear ``derive`` (NE's ``neg_labels = total - pos``): a slot's suffix aggregate and the
        back aggregate of the derived state are then what summing it would have kept.
        """
        self.kinds[name] = "sum"
        self.groups.setdefault("sum", []).append(name)
        self.tensor_names = [n for names in self.groups.values() for n in names]
        self.defaults[name] = derive(*(self.defaults[s] for s in sources))
        self.rings[name] = derive(*(self.rings[s] for s in sources))
        self.back[name] = derive(*(self.back[s] for s in sources))
        self.shared = None

    def _grow(self) -> None:
        with torch.inference_mode(False):  # a step under inference mode must not leave inference buffers
            self._grow_buffers()

    def _grow_buffers(self) -> None:
        capacity = max(8, 2 * self.capacity)
        self.shared = None
        for name, ring in self.rings.items():
            grown = (ring.new_zeros if self.zero_slots else ring.new_empty)((capacity, *ring.shape[1:]))
            if self.count:  # two slice copies (no index tensor: nothing sent to a device)
                older, newer = self._in_order(ring)
                grown[: older.shape[0]] = older
                grown[older.shape[0] : self.count] = newer
            self.rings[name] = grown
        self.capacity, self.head = capacity, 0

    # ------------------------------------------------------------------ per update

    def fold(self, pairs: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]]) -> None:
        """``targets (+)= sources`` for every ``(targets, sources)`` pair and tensor state, in place.

        Each state uses its own reduction; all pairs go through one fused call per reduction. A
        state that ``targets`` leaves out is not folded (the caller folds it otherwise).
        """
        for kind, names in self.groups.items():
            folded = [(t[n], s[n]) for t, s in pairs for n in names if n in t]
            if folded:
                _REDUCE[kind]([t for t, _ in folded], [s for _, s in folded])

    def next_slot(self) -> dict[str, Tensor]:
        """Views of the next free slot (to be overwritten with one update's statistics), made for this update."""
        if self.count == self.capacity:
            self._grow()
        self.zero_slots = False  # the caller writes the slot (and may leave it written if its update fails)
        i = self._slot(self.count)
        return {n: ring[i] for n, ring in self.rings.items()}

    def reset(self, states: Mapping[str, Tensor]) -> None:
        """Set tensor states (in place) to their identity: zero for sums, the metric's default otherwise."""
        for kind, names in self.groups.items():
            targets = [states[n] for n in names]
            if kind == "sum":
                torch._foreach_zero_(targets)
            else:
                torch._foreach_copy_(targets, [self.defaults[n] for n in names])

    def push(
        self,
        views: Mapping[str, Tensor],
        lists: Mapping[str, list[Tensor]],
        size: int,
        also: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]] = (),
    ) -> None:
        """Commit the slot returned by :meth:`next_slot` (filled in place) as the newest update.

        ``also`` are further ``(targets, sources)`` pairs folded in the same fused calls.
        """
        back = self.back
        if self.raw:  # the raw states' back stays the identity
            back = {n: b for n, b in back.items() if n not in self.raw}
        self.fold([(back, views), *also])
        self._push_lists(lists, size)

    def push_zero(self, lists: Mapping[str, list[Tensor]], size: int) -> None:
        """Commit an update of ``size`` samples that appended ``lists`` and left every tensor state as it was.

        For a ring of ``sum`` states only: the update's statistics are zeros, which change neither
        the window's running sum nor the lifetime (``x + 0 == x``), so only its slot is set, to
        zero, and nothing at all while every slot is zero already (:attr:`zero_slots`). Then the
        list states as :meth:`push` takes them.
        """
        if self.count == self.capacity:
            self._grow()
        if not self.zero_slots:
            i = self._slot(self.count)
            for ring in self.rings.values():
                ring[i].zero_()
        self._push_lists(lists, size)

    def _push_lists(self, lists: Mapping[str, list[Tensor]], size: int) -> None:
        """The list states' and the bookkeeping's part of :meth:`push` (the slot folded already)."""
        for name in self.list_names:
            chunks = lists[name]
            self.chunks[name].append(list(chunks))
            # one chunk per update is the common case: its rows read directly (no generator per update)
            single = len(chunks) == 1 and chunks[0].ndim
            self.rows[name].append(chunks[0].shape[0] if single else _rows(chunks))
            self.num_chunks[name] += len(chunks)
        self.spans.append(1)
        self.sizes.append(size)
        self.count += 1
        self.used += size

    def evict(self, limit: int, max_count: int | None = None, flat: Mapping[str, list[Tensor]] | None = None) -> None:
        """Drop the oldest updates while the window holds more than ``limit`` samples or ``max_count`` updates.

        The newest update always stays. An update alone in its segment leaves with its chunks; the
        oldest update of a joined segment leaves as its rows, sliced off the front of each state's
        tensor (a view of it). ``flat`` (state name -> the window's list of chunks, oldest first:
        :meth:`window_chunks`) is edited alike, in place.
        """
        most = self.count if max_count is None else max_count
        while (self.used > limit or self.count > most) and self.count > 1:
            if self.front == 0:
                self._flip()
            self.used -= self.sizes.popleft()
            whole = self.spans[0] == 1
            if whole:
                self.spans.popleft()
            else:
                self.spans[0] -= 1
            for name in self.list_names:
                rows = self.rows[name].popleft()
                if whole:
                    gone = len(self.chunks[name].popleft())
                    self.num_chunks[name] -= gone
                    if flat is not None:
                        del flat[name][:gone]
                    continue
                segment = self.chunks[name][0]  # joined: one tensor, or none
                if segment and rows:
                    segment[0] = segment[0][rows:]
                    if flat is not None:
                        flat[name][0] = segment[0]
            self.head = self._slot(1)
            self.count -= 1
            self.front -= 1
            if self.legacy:  # (almost always 0: no `max` call per evicted update)
                self.legacy = max(self.legacy - 1, 0)

    def join_newest(
        self, flat: Mapping[str, list[Tensor]] | None = None, base: Mapping[str, list[Tensor]] | None = None
    ) -> dict[str, list[Tensor]] | None:
        """Join the newest ``_JOIN`` segments into one when the rule of ``join_small_tails`` allows.

        The rule (on the first list state's segments): all of them small, the oldest holding no
        more elements than the others together, so joined segments grow geometrically and an
        element is copied a few times at most. ``flat`` is edited alike, in place. ``base`` (the
        lifetime's lists) shares the join where its newest chunks are the ones joined (the oldest
        may be a chunk the window holds only the newest rows of): it holds the joined tensor in
        their place, and the window a view of it. Where the oldest segment cannot be joined so (a
        partly evicted one whose whole chunk is large, or a chunk the lifetime does not hold), the
        newer ``_JOIN - 1`` segments are joined, shared, and the oldest stays as it is: joined with
        them into a copy, the window held samples the lifetime does not share, and the lifetime's
        newest chunks were no longer the window's (its own joins, which leave the window's chunks
        alone, then skipped 63 of them at once).
        """
        if not self.list_names or len(self.spans) < _JOIN:
            return None
        first = self.chunks[self.list_names[0]]
        if _numel(first[-1]) >= _SMALL or _numel(first[-_JOIN]) >= _SMALL:
            return None
        sizes = [_numel(segment) for segment in islice(reversed(first), _JOIN)]
        if max(sizes) >= _SMALL or 2 * sizes[-1] > sum(sizes):
            return None
        parts = {name: list(islice(reversed(self.chunks[name]), _JOIN))[::-1] for name in self.list_names}
        count = _JOIN
        joined = None
        if base is not None:
            joined = _join_shared(parts, base)
            if joined is None:  # the newer segments, shared; the oldest kept
                newer = {name: segments[1:] for name, segments in parts.items()}
                joined = _join_shared(newer, base)
                if joined is not None:
                    parts, count = newer, _JOIN - 1
        if joined is None:
            joined = _join_segments(parts)
        if joined is None:
            return None
        span = sum(self.spans.pop() for _ in range(count))
        self.spans.append(span)
        for name, block in joined.items():
            chunks = self.chunks[name]
            for _ in range(count):
                chunks.pop()
            chunks.append(block)
            old = sum(map(len, parts[name]))
            self.num_chunks[name] += len(block) - old
            if flat is not None and old:
                flat[name][-old:] = block
        return joined

    def _coalesce(self) -> None:
        """Join runs of small segments (about ``_SMALL`` elements each): a ring loaded one segment per update."""
        names = self.list_names
        if not names or len(self.spans) < 2:
            return
        spans = list(self.spans)
        chunks = {n: list(self.chunks[n]) for n in names}
        out_spans: list[int] = []
        out: dict[str, list[list[Tensor]]] = {n: [] for n in names}
        pieces: list[tuple[int, int]] = []  # [start, end) of every segment, or of a run to join
        done = 0
        for a, b in small_runs([_numel(segment) for segment in chunks[names[0]]]):
            pieces += [(i, i + 1) for i in range(done, a)]
            pieces.append((a, b))
            done = b
        pieces += [(i, i + 1) for i in range(done, len(spans))]
        for a, b in pieces:
            joined = _join_segments({n: chunks[n][a:b] for n in names}) if b - a > 1 else None
            if joined is None:  # one segment, or segments that cannot be joined: kept as they are
                for i in range(a, b):
                    out_spans.append(spans[i])
                    for n in names:
                        out[n].append(chunks[n][i])
            else:
                out_spans.append(sum(spans[a:b]))
                for n in names:
                    out[n].append(joined[n])
        self.spans = deque(out_spans)
        self.chunks = {n: deque(out[n]) for n in names}
        self.num_chunks = {n: sum(map(len, out[n])) for n in names}

    def _flip(self) -> None:
        """Turn every slot (all are back slots) into suffix aggregates, newest to oldest; empty the back.

        One scan over the slot axis of each state's ring (the window's slots in order, oldest
        first, reversed): the suffix aggregate of slot ``i`` is slot ``i`` combined with that of
        slot ``i + 1``, the same two operands as one update at a time (a device's parallel scan
        may group float64 additions otherwise: rounding of the order of 1e-16). Float32 and
        other narrow floating sums are combined slot by slot.
        """
        count, head = self.count, self.head
        if count > 1 and not self.zero_slots:  # (slots of zeros: their suffix sums are the same zeros)
            if "_rewrites" in self.__dict__:  # an update that may be undone (record_rewrites)
                self._keep_before_rewrite()
            first = min(count, self.capacity - head)  # slots up to the end of the buffer, then from its start
            for kind, names in self.groups.items():
                for name in names:
                    if name in self.raw:  # each update's own statistics: kept as they are
                        continue
                    ring = self.rings[name]
                    if kind == "sum" and ring.dtype not in _SCAN_DTYPES:
                        for i in range(count - 2, -1, -1):
                            ring[self._slot(i)].add_(ring[self._slot(i + 1)])
                        continue
                    if first == count:
                        rows = ring[head : head + count]
                        rows.copy_(_SCAN[kind](rows.flip(0)).flip(0))
                    else:  # the window wraps around the buffer (no index tensor: nothing sent to a device)
                        scanned = _SCAN[kind](torch.cat([ring[head:], ring[: count - first]]).flip(0)).flip(0)
                        ring[head:].copy_(scanned[:first])
                        ring[: count - first].copy_(scanned[first:])
        self.front = count
        self.reset(self.back)

    def window_into(self, targets: Mapping[str, Tensor]) -> None:
        """Write the window's aggregate of every tensor state into ``targets`` (in place, one pass each)."""
        names = [n for n in self.tensor_names if n not in self.raw] if self.raw else self.tensor_names
        if not names:
            return
        if not self.front:
            torch._foreach_copy_([targets[n] for n in names], [self.back[n] for n in names])
            return
        for kind, group in self.groups.items():
            for name in group:
                if name not in self.raw:
                    _COMBINE[kind](self.rings[name][self.head], self.back[name], out=targets[name])

    def raw_rows(self) -> dict[str, Tensor]:
        """Each raw state's rows of the window's updates, oldest first (``(updates, *shape)``, a copy).

        The rows a ring saved before it kept raw states holds as suffix aggregates (:attr:`legacy`)
        come as one row: the first, which aggregates them all.
        """
        out = {}
        for name in self.raw:
            rows = torch.cat(self._in_order(self.rings[name]))
            out[name] = torch.cat([rows[:1], rows[self.legacy :]]) if self.legacy > 1 else rows
        return out

    def window_chunks(self, name: str) -> list[Tensor]:
        """The window's chunks of list state ``name``, oldest first."""
        return [chunk for chunks in self.chunks[name] for chunk in chunks]

    # ------------------------------------------------------------------ persistence and devices

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: slots oldest first, sizes, the two-stack split and the back.

        List states: each segment's chunks (a partly evicted one's rows copied: a view would save
        its whole block), the updates each segment holds and every update's rows.
        """

        def saved(chunk: Tensor) -> Tensor:
            return chunk.clone() if chunk.storage_offset() and not is_broadcast(chunk) else chunk

        return {
            "sizes": list(self.sizes),
            "front": self.front,
            "rings": {n: torch.cat(self._in_order(r)) for n, r in self.rings.items()},  # a copy, oldest first
            "back": {n: b.clone() for n, b in self.back.items()},
            "chunks": {
                n: [[saved(c) for c in cs] if i == 0 else list(cs) for i, cs in enumerate(chunks)]
                for n, chunks in self.chunks.items()
            },
            "spans": list(self.spans),
            "rows": {n: list(r) for n, r in self.rows.items()},
            # the states whose rows are each update's own (see `raw`), and the oldest rows that are not
            **({"raw": sorted(self.raw), "legacy": self.legacy} if self.raw else {}),
        }

    def older_format(self, state: Any) -> bool:
        """Whether ``state`` is this ring's in an older format: some of its states only (the others added since).

        The names cannot tell that from another setting whose states are some of these (a ranking
        metric's ``queries_complete_per_batch`` mode): ``Windowed`` checks the settings first,
        recorded in the checkpoint or shown by its states.
        """
        parts = ("sizes", "front", "rings", "back", "chunks")
        if not (isinstance(state, Mapping) and all(part in state for part in parts)):
            return False
        if not (isinstance(state["rings"], Mapping) and isinstance(state["chunks"], Mapping)):
            return False
        rings, chunks = set(state["rings"]), set(state["chunks"])
        tensors, lists = set(self.tensor_names), set(self.list_names)
        return rings <= tensors and chunks <= lists and (rings, chunks) != (tensors, lists)

    def problems(self, state: Any) -> list[str]:
        """Why :meth:`load` would refuse ``state`` (other state names, or tensor states of another shape)."""
        parts = ("sizes", "front", "rings", "back", "chunks")
        if not isinstance(state, Mapping) or not all(part in state for part in parts):
            return [f"Window state must be a dict holding {list(parts)}, got {type(state).__name__}."]
        if set(state["rings"]) != set(self.tensor_names) or set(state["chunks"]) != set(self.list_names):
            return [
                f"Window state holds states {sorted(state['rings']) + sorted(state['chunks'])}, "
                f"expected {sorted(self.tensor_names + self.list_names)}: the wrapped metric's states under "
                "other settings (another `from_logits`, `eta`, threshold, ...), whose window this one cannot resume."
            ]
        count = len(state["sizes"])
        sizes, front = list(state["sizes"]), state["front"]
        if not all(is_count(size) for size in sizes) or not is_count(front) or operator.index(front) > count:
            # a hand-edited or foreign ring: a `front` out of range read stale aggregates as the window
            return [
                f"The window's `sizes` must be whole numbers >= 0 and its `front` one from 0 to the number of "
                f"updates ({count}), got sizes {sizes!r} and front {front!r}: not one ring."
            ]
        out = self._segment_problems(state, count)
        for name in self.tensor_names:
            shape = tuple(self.defaults[name].shape)
            ring, back = state["rings"][name], state["back"][name]
            if tuple(ring.shape) != (count, *shape) or tuple(back.shape) != shape:
                # the shape that differs: the updates' (``ring``'s rows) where they do, else the running sum's
                saved = tuple(ring.shape[1:]) if tuple(ring.shape) != (count, *shape) else tuple(back.shape)
                out.append(
                    f"size mismatch for the window's `{name}`: the checkpoint's updates have shape "
                    f"{saved}, this metric's {shape}."
                )
            for what, saved in (("updates", ring), ("back", back)):
                problem = dtype_problem(f"the window's `{name}` ({what})", saved, self.defaults[name].dtype, "window")
                if problem is not None:
                    out.append(problem)
        return out

    def _segment_problems(self, state: Mapping[str, Any], count: int) -> list[str]:
        """Why the list states' segments do not line up with the ``count`` updates (none for a ring without them)."""
        spans = state.get("spans")
        if spans is None:  # an earlier version's: one segment per update
            spans = [1] * count
        elif sum(spans) != count or any(int(s) < 1 for s in spans):
            return [f"The window's segments hold {sum(spans)} updates, its sizes {count}: not one ring."]
        rows = state.get("rows") or {}
        for name in self.list_names:
            segments = state["chunks"][name]
            if len(segments) != len(spans):
                return [f"The window's `{name}` holds {len(segments)} segments of updates, expected {len(spans)}."]
            if any(int(s) > 1 for s in spans) and len(rows.get(name, ())) != count:
                return [f"The window's `{name}` joins updates into segments without their rows."]
            start = 0
            for span, segment in zip(spans, segments, strict=True):
                span = int(span)
                if span > 1 and (len(segment) > 1 or sum(rows[name][start : start + span]) != _rows(segment)):
                    return [f"The window's `{name}` segment of {span} updates does not hold their rows."]
                start += span
        return []

    def load(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state`, moving its tensors to ``device``.

        Raises:
            ValueError: a state of other state names or shapes (:meth:`problems`); nothing changes.
        """
        problems = self.problems(state)
        if problems:
            raise ValueError(" ".join(problems))
        sizes = [int(s) for s in state["sizes"]]
        self.clear()
        count = len(sizes)
        while self.capacity < count:
            self._grow()
        for name in self.tensor_names:
            if count:
                self.rings[name][:count] = state["rings"][name].to(device)
            # an empty ring's back aggregates no update: the identity, whatever an older checkpoint
            # holds there (a state derived at load, e.g. a shift of 0 that `max` would keep)
            back = state["back"][name] if count else self.defaults[name]
            self.back[name] = back.to(device, self.defaults[name].dtype, copy=True)
        spans = [int(s) for s in state.get("spans", [1] * count)]
        self.spans = deque(spans)
        for name in self.list_names:
            self.chunks[name] = deque(
                [[_apply_chunk(lambda t: t.to(device), c) for c in cs] for cs in state["chunks"][name]]
            )
            self.num_chunks[name] = sum(map(len, self.chunks[name]))
            saved = state.get("rows") or {}
            rows: list[int] = []
            for span, segment in zip(spans, self.chunks[name], strict=True):  # one update's: read off its chunks
                rows.extend(
                    [_rows(segment)] if span == 1 else (int(r) for r in saved[name][len(rows) : len(rows) + span])
                )
            self.rows[name] = deque(rows)
        self.sizes, self.count, self.used = deque(sizes), count, sum(sizes)
        self.front = int(state["front"])
        # a ring saved before it kept raw states holds their suffix aggregates in its front rows
        self.legacy = int(state.get("legacy", 0)) if "raw" in state else self.front if self.raw else 0
        self.legacy = min(self.legacy, self.front)
        # the free slots grew as zeros; the loaded ones are read once here (a load, not a step)
        self.zero_slots = not any(bool(ring[:count].any()) for ring in self.rings.values())
        if "spans" not in state:  # an earlier version's ring, one segment per update: joined as it would be now
            self._coalesce()

    def apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Apply a tensor function (``.to(device)``, ...) to every buffer and chunk.

        A ring whose buffers all come back as they were (``.to`` the device and dtype they have,
        e.g. ``metrics.to(preds.device)`` at every step) keeps its place in a shared buffer.
        """
        rings, back = {n: fn(t) for n, t in self.rings.items()}, {n: fn(t) for n, t in self.back.items()}
        if any(rings[n] is not t for n, t in self.rings.items()) or any(back[n] is not t for n, t in self.back.items()):
            self.shared = None
        self.defaults = {n: fn(t) for n, t in self.defaults.items()}
        self.rings, self.back = rings, back
        self.chunks = {n: deque([[_apply_chunk(fn, c) for c in cs] for cs in d]) for n, d in self.chunks.items()}
