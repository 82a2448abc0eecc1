"""Lifetime and window of histogram states filled sample by sample: bin indices per update, dense sums per block.

A binned metric (``AUC(num_bins=B)``, ``AUPRC(num_bins=B)``) adds each sample's weight into one
bin of a dense ``(2, T, B)`` float64 histogram; ``Reliability`` and ``HindsightTargetPR`` add
``K`` values of each sample (``Reliability``: its weight, weighted prediction and weighted label)
into ``K`` histograms of one shape at the same bin. The generic ring
(:class:`~torchmetrics_ext.wrappers._ring.StateRing`) keeps one dense copy per update: at
``T = 3``, ``B = 10_000`` that is a 480 KB slot zeroed, filled and folded twice per update, and
~60 MB for a 1M-sample window of batches of 8192. :class:`HistogramWindow` keeps instead:

* for every update in the window, the flat bin index of each of its samples (``int32``, 4 bytes
  per sample and task) and its ``K`` values (an AUC's weight, nothing when unweighted); an update
  whose entries would take more memory than the ``K`` dense histograms (a batch larger than the
  bins) is kept as those histograms instead, so no update costs more than a ring's slot;
* one dense sum per *block* of consecutive updates: each update is added (one ``scatter_add_``)
  into the open block only; a full block joins the closed blocks, kept as the two-stack sliding
  window of :mod:`~torchmetrics_ext.wrappers._ring` (suffix sums of the older blocks, a running
  sum of the newer), so nothing is ever subtracted. A block is full once it holds ``k <= 8``
  updates (``k`` about the square root of the updates in the window) *and* at least half as many
  entries as one dense histogram has bins (a dense update counts as that many): small batches fill
  a block of many updates, so the dense sums never take more memory than a few times the bin
  indices and values they stand for (a 1M-sample window of batches of 8 would otherwise keep
  15,000 dense blocks, 7 GB at ``T = 3``, ``B = 10_000``);
* the lifetime's *base*: the sum of every block closed before the last turn of the two-stack.

Evicting an update moves one index. When the oldest update of a block leaves the window, the
whole block leaves the dense sums, and its remaining updates are added from their indices (or
dense histograms) when the window is read. Reads are fresh sums:

* window = suffix sum of the oldest closed block + running sum + open block + the loose updates;
* lifetime = base + running sum + open block.

Each update therefore costs one ``scatter_add_`` of its samples (the lifetime's own update), and
the window a few dense passes per block of updates instead of four per update.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc.binary import _add_entries as add_entries
from torchmetrics_ext.utilities.formatting import article
from torchmetrics_ext.utilities.inference import ordinary_tensors
from torchmetrics_ext.utilities.state_dtypes import dtype_problem
from torchmetrics_ext.wrappers._ring import is_count

__all__ = ["HistogramWindow", "add_stacked"]

_INT32_MAX = 2**31 - 1
_MAX_BLOCK = 8  # updates per dense block at most: the loose updates a read adds from indices
_MAX_SPARE = 2  # dense tensors of dropped blocks kept for reuse


def add_stacked(dense: Tensor, index: Tensor, values: Tensor | None, count: int) -> None:
    """Add entries into ``dense`` in place: one histogram (``count == 1``) or ``count`` stacked ones.

    ``index``: flat positions in one histogram (any shape). One histogram takes ``values`` of the
    shape of ``index`` (``None`` for ones: :func:`~torchmetrics_ext.functional.auc.binary._add_entries`);
    ``count`` stacked ones (``dense`` of shape ``(count, *shape)``) take ``(count, *index.shape)``
    values, row ``k`` into histogram ``k`` at the same positions (one ``scatter_add_``).
    """
    if count == 1:
        add_entries(dense, index, values)
        return
    assert values is not None
    flat = index.reshape(1, -1).to(torch.int64)  # `scatter_add_` takes int64 indices only
    rows = values.reshape(count, -1)
    if rows.dtype != dense.dtype:  # histograms cast by `set_dtype`
        rows = rows.to(dense.dtype)
    dense.view(count, -1).scatter_add_(1, flat.expand(count, -1), rows)


class HistogramWindow:
    """Per-update bin indices, per-block dense sums and the lifetime base of histogram states sharing bins.

    Args:
        default: the states' default value (zeros: their shape, dtype and device), one state's
            for one name, else the ``(K, *shape)`` stack of the ``K`` states' (one shape and dtype).
        name: the state's name in the metric, or the ``K`` states' names (in the stack's order). A
            metric names its histograms after the settings that place samples in bins (``AUC``:
            ``hist``, ``hist_probability``, ``hist_logits``...), so bin indices saved under other
            names are another setting's bins: :meth:`problems` refuses them, whatever their shape.
    """

    open_entries = 0  # bin indices added to the open block (a class default for windows pickled before it was kept)

    def __init__(self, default: Tensor, name: str | tuple[str, ...]) -> None:
        self.names = (name,) if isinstance(name, str) else tuple(name)
        self.name = self.names[0]
        if len(self.names) > 1 and default.shape[0] != len(self.names):
            raise ValueError(f"Expected a stack of {len(self.names)} histograms, got shape {tuple(default.shape)}.")
        self.default = default.detach().clone()
        self.clear()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("names", (state["name"],))  # pickled before a window held several histograms
        ordinary_tensors(state, lists=True)  # unpickled under inference mode: its blocks are written in place
        self.__dict__.update(state)

    # both fixed once built (a move keeps the default's shape): read at every update, kept after the first read
    @functools.cached_property
    def count(self) -> int:
        """How many histograms share the bin indices (``K``)."""
        return len(self.names)

    @functools.cached_property
    def bins(self) -> int:
        """Bins of one histogram (the flat positions a bin index takes)."""
        return self.default.numel() // self.count

    def clear(self) -> None:
        """Forget every update (the lifetime too)."""
        with torch.inference_mode(False):  # dense sums written by later updates: never inference tensors
            self._clear()

    def _clear(self) -> None:
        self.sizes: deque[int] = deque()
        # per update: the flat bin index of each sample, or None for an update kept dense
        self.indices: deque[Tensor | None] = deque()
        # per update: its samples' values (None for ones), or its dense histograms
        self.values: deque[Tensor | None] = deque()
        self.used = 0  # samples in the window
        self.loose = 0  # oldest updates of the window in no block (their block's first update left)
        self.counts: deque[int] = deque()  # updates per closed block, oldest first
        self.slots: deque[Tensor] = deque()  # closed blocks: the oldest `front` hold suffix sums
        self.front = 0
        self.back = torch.zeros_like(self.default)  # sum of the newer (raw) closed blocks
        self.open = torch.zeros_like(self.default)  # the open block
        self.open_count = self.open_entries = 0
        self.base = torch.zeros_like(self.default)  # lifetime: every block closed before the last turn
        self.spare: list[Tensor] = []  # dense tensors of dropped blocks, reused

    def restart_lifetime(self) -> None:
        """Empty the lifetime and keep the window: the lifetime then holds the updates pushed from now on.

        The lifetime is ``base + back + open`` and the window reads the closed blocks through their
        suffix sums: the open block is closed (a block of fewer updates than usual) and every closed
        block turned into a suffix sum up to the newest (the two-stack's turn; the older suffix sums take
        the newer blocks' sum), which leaves the window's sums where the window reads them and ``back``
        and ``open`` empty; the base is then zeroed. Nothing is
        subtracted, so the window and the new lifetime stay exact sums of their own updates.
        """
        with torch.inference_mode(False):
            if self.open_count:
                self.back += self.open
                self.slots.append(self.open)
                self.counts.append(self.open_count)
                self.open, self.open_count, self.open_entries = self._fresh(), 0, 0
            if len(self.slots) > self.front:  # raw closed blocks: their suffix sums, then into the older ones
                self._suffix_sums_from(self.front)
                for i in range(self.front):
                    self.slots[i] += self.back
                self.front = len(self.slots)
                self.back.zero_()
            self.base.zero_()

    def restart_window(self) -> None:
        """Empty the window and keep the lifetime: the window then holds the updates pushed from now on.

        The lifetime (``base + back + open``, summed in the order :meth:`lifetime_into` sums it)
        becomes the base, and every update, block and block sum of the window is forgotten: the
        lifetime reads the same sums as before, the window starts from nothing.
        """
        with torch.inference_mode(False):
            base = torch.add(self.base, self.back)
            base += self.open
            self._clear()
            self.base = base

    # ------------------------------------------------------------------ per update

    def add(self, dense: Tensor, index: Tensor, values: Tensor | None) -> None:
        """Add entries (one update's, as the metric's hook gives them) into a dense sum, in place."""
        add_stacked(dense, index, values, self.count)

    def _block_full(self) -> bool:
        """Whether the open block is closed before the next update (see the module's docstring)."""
        updates = max(1, min(_MAX_BLOCK, math.isqrt(len(self.sizes))))
        return self.open_count >= updates and 2 * self.open_entries >= self.bins

    def _fresh(self) -> Tensor:
        if self.spare:
            return self.spare.pop().zero_()
        with torch.inference_mode(False):  # a step under inference mode must not leave an inference block
            return torch.zeros_like(self.default)

    def _kept_dense(self, index: Tensor, values: Tensor | None) -> bool:
        """Whether an update's entries take more memory than its dense histograms (it is kept dense)."""
        width = 4 if self.bins <= _INT32_MAX else index.element_size()
        entries = index.numel() * width + (0 if values is None else values.numel() * values.element_size())
        return entries > self.default.numel() * self.default.element_size()

    def push(self, index: Tensor, values: Tensor | None, size: int) -> None:
        """Add one update of ``size`` samples (its flat ``index`` entries and their ``values``)."""
        if self._block_full():
            self.back += self.open
            self.slots.append(self.open)
            self.counts.append(self.open_count)
            self.open, self.open_count, self.open_entries = self._fresh(), 0, 0
        if self._kept_dense(index, values):  # a batch larger than the bins: its histograms, added as a load adds them
            with torch.inference_mode(False):
                dense = torch.zeros_like(self.default)
            self.add(dense, index, values)
            self.open += dense
            self.open_entries += self.bins
            self.indices.append(None)
            self.values.append(dense)
        else:
            flat = index.reshape(-1)  # flattened once: the scatter takes it as it is
            self.add(self.open, flat, values)
            self.open_entries += flat.numel()
            if self.bins > _INT32_MAX:
                flat = flat.clone()
            elif flat.dtype != torch.int32:
                flat = flat.to(torch.int32)
            self.indices.append(flat)
            self.values.append(None if values is None else values.reshape(self.count, -1).squeeze(0).clone())
        self.open_count += 1
        self.sizes.append(size)
        self.used += size

    def evict(self, limit: int, max_count: int | None = None) -> None:
        """Drop the oldest updates while the window holds more than ``limit`` samples or ``max_count`` updates.

        The newest update always stays.
        """
        while (self.used > limit or (max_count is not None and len(self.sizes) > max_count)) and len(self.sizes) > 1:
            self.used -= self.sizes.popleft()
            self.indices.popleft()
            self.values.popleft()
            if self.loose:
                self.loose -= 1
            elif self.slots:  # the update opened the oldest closed block: the block leaves the dense sums
                if not self.front:
                    self._flip()
                dropped = self.slots.popleft()
                if len(self.spare) < _MAX_SPARE:  # enough for the next blocks; more would only hold memory
                    self.spare.append(dropped)
                self.front -= 1
                self.loose = self.counts.popleft() - 1
            else:  # it opened the open block (a window of a few updates): its other updates become loose
                self.base += self.open
                self.loose = self.open_count - 1
                self.open.zero_()
                self.open_count = self.open_entries = 0

    def _suffix_sums(self, count: int) -> None:
        """Turn the oldest ``count`` closed blocks into suffix sums among themselves, newest to oldest."""
        for i in range(count - 2, -1, -1):
            self.slots[i] += self.slots[i + 1]

    def _suffix_sums_from(self, start: int) -> None:
        """Turn the closed blocks from ``start`` on into suffix sums among themselves, newest to oldest."""
        for i in range(len(self.slots) - 2, start - 1, -1):
            self.slots[i] += self.slots[i + 1]

    def _flip(self) -> None:
        """Turn every closed block into the suffix sum from it to the newest one; the running sum joins the base."""
        self._suffix_sums(len(self.slots))
        self.front = len(self.slots)
        self.base += self.back
        self.back.zero_()

    # ------------------------------------------------------------------ reads

    def window_into(self, targets: list[Tensor]) -> None:
        """Write the window's histograms into ``targets`` (in place; one per state, in the order of the names)."""
        for k, target in enumerate(targets):
            torch.add(self._row(self.back, k), self._row(self.open, k), out=target)
            if self.front:
                target += self._row(self.slots[0], k)
        if not self.loose:
            return
        loose = range(self.loose)
        for i in loose:  # updates kept dense
            if self.indices[i] is None:
                for k, target in enumerate(targets):
                    target += self._row(self.values[i], k)  # type: ignore[arg-type]
        sparse = [i for i in loose if self.indices[i] is not None]
        if not sparse:
            return
        index = torch.cat([self.indices[i] for i in sparse]).to(torch.int64)  # type: ignore[misc]
        given = [self.values[i] for i in sparse]
        values = None
        if any(v is not None for v in given):  # ones stand for the unweighted updates of one histogram
            like = targets[0]
            values = torch.cat(
                [
                    torch.ones(self.indices[i].numel(), dtype=like.dtype, device=like.device)  # type: ignore[union-attr]
                    if v is None
                    else v
                    for i, v in zip(sparse, given)
                ],
                dim=-1,
            )
        for k, target in enumerate(targets):
            add_entries(target, index, None if values is None else self._row(values, k))

    def _row(self, dense: Tensor, k: int) -> Tensor:
        """Histogram ``k`` of a stack (the tensor itself for one histogram)."""
        return dense if self.count == 1 else dense[k]

    def lifetime_into(self, targets: list[Tensor]) -> None:
        """Write the lifetime's histograms (every update ever pushed) into ``targets`` (in place)."""
        for k, target in enumerate(targets):
            torch.add(self._row(self.base, k), self._row(self.back, k), out=target)
            target += self._row(self.open, k)

    # ------------------------------------------------------------------ persistence and devices

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: per-update sizes, indices and values, the block split and the base.

        ``"state"`` holds the histogram state's name (what its bin indices mean), ``"states"`` the
        names of several histograms sharing the indices. An update kept dense has no indices
        (``None``) and its histograms as values.
        """
        names: dict[str, Any] = {"state": self.name} if self.count == 1 else {"states": list(self.names)}
        return {
            **names,
            "sizes": list(self.sizes),
            "indices": list(self.indices),
            "values": list(self.values),
            "blocks": list(self.counts),
            "front": self.front,
            "open": self.open_count,
            "loose": self.loose,
            "base": self.base.clone(),
        }

    def older_format(self, state: Any) -> bool:
        """Whether ``state`` is a window of an earlier layout: one dense histogram per update (a ring's parts).

        Its updates cannot be split into samples again, as this window evicts them.
        """
        ring = {"sizes", "front", "rings", "back", "chunks"}
        return isinstance(state, Mapping) and ring <= set(state) and "indices" not in state

    def from_ring(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """A ring's window (:meth:`older_format`: one dense slot of every state per update) in this window's layout.

        Each slot becomes an update kept dense, all of them *loose* (in no block, so not in the
        lifetime's running sums) and ``base`` zeros: the caller sets the base to the lifetime
        states the checkpoint holds beside the ring (:class:`~torchmetrics_ext.Windowed` does after
        the load), so the lifetime reads them exactly. The ring's oldest ``front`` slots hold
        suffix sums (slot ``i``: slots ``i`` to ``front - 1``): each update's own histograms are their
        differences, exact for whole-number sums (counts, clicks) and within one rounding of the
        suffix sum otherwise. ``None`` where ``state`` holds other states, shapes, list states or
        counts that are not whole numbers (``load`` then refuses it, or the wrapper starts afresh).
        """
        rings, sizes, front = state["rings"], state["sizes"], state["front"]
        if not isinstance(rings, Mapping) or set(rings) != set(self.names) or any(state["chunks"] or ()):
            return None
        if not isinstance(sizes, (list, tuple)) or not all(is_count(s) for s in [*sizes, front]):
            return None
        count, front = len(sizes), int(front)
        shape = tuple(self.default.shape[1:] if self.count > 1 else self.default.shape)
        slots = [rings[name] for name in self.names]
        if front > count or not all(isinstance(t, Tensor) and tuple(t.shape) == (count, *shape) for t in slots):
            return None
        stack = slots[0] if self.count == 1 else torch.stack(slots, dim=1)  # (U, K, *shape)
        raw = stack.clone()
        if front > 1:
            raw[: front - 1] -= stack[1:front]
        names: dict[str, Any] = {"state": self.name} if self.count == 1 else {"states": list(self.names)}
        return {
            **names,
            "sizes": [int(s) for s in sizes],
            "indices": [None] * count,
            "values": [update.clone() for update in raw.unbind(0)],  # each its own: evicted one by one
            "blocks": [],
            "front": 0,
            "open": 0,
            "loose": count,
            "base": torch.zeros_like(self.default),
        }

    def problems(self, state: Any) -> list[str]:
        """Why :meth:`load` would refuse ``state`` (missing parts, inconsistent counts, another histogram or shape).

        A state saved without its histogram's name (before it was recorded) is checked by its shape only.
        """
        keys = {"sizes", "indices", "values", "blocks", "front", "open", "loose", "base"}
        if not isinstance(state, Mapping) or not keys <= set(state):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            return [f"Window state of a binned histogram must hold {sorted(keys)}, got {got}."]
        saved = list(state["states"]) if "states" in state else [state.get("state", self.name)]
        if saved != list(self.names):
            shown = ", ".join(f"`{n}`" for n in saved)
            mine = ", ".join(f"`{n}`" for n in self.names)
            return [
                f"state mismatch for the window's histogram: the checkpoint's bin indices are those of "
                f"{shown}, this metric's {'histogram is' if self.count == 1 else 'histograms are'} {mine} (the "
                "metric names it after the settings that place samples in bins: a checkpoint of other settings)."
            ]
        parts = [*state["sizes"], *state["blocks"], state["front"], state["open"], state["loose"]]
        if not all(is_count(part) for part in parts):  # a hand-edited or foreign ring: its eviction would be wrong
            return [
                "Window state of a binned histogram must count its updates and samples in whole numbers >= 0 "
                f"(`sizes`, `blocks`, `front`, `open`, `loose`), got sizes {list(state['sizes'])!r}."
            ]
        sizes, counts = state["sizes"], [int(c) for c in state["blocks"]]
        front, open_count, loose = int(state["front"]), int(state["open"]), int(state["loose"])
        if (
            len(state["indices"]) != len(sizes)
            or len(state["values"]) != len(sizes)
            or loose + sum(counts) + open_count != len(sizes)
            or not 0 <= front <= len(counts)
        ):
            return ["Window state of a binned histogram does not describe its updates consistently."]
        shape = tuple(self.default.shape)
        if not isinstance(state["base"], Tensor):
            base = type(state["base"]).__name__
            return [f"Window state of a binned histogram holds {article(str(base))} as its base, not a tensor."]
        if tuple(state["base"].shape) != shape:
            return [
                f"size mismatch for the window's histogram: the checkpoint's has shape "
                f"{tuple(state['base'].shape)}, this metric's {shape}."
            ]
        for index, values in zip(state["indices"], state["values"]):
            if not isinstance(index, (Tensor, type(None))) or not isinstance(values, (Tensor, type(None))):
                fits = False  # not read as tensors below: refused, not raised
            elif index is None:
                fits = isinstance(values, Tensor) and tuple(values.shape) == shape
            elif self.count == 1:
                fits = values is None or tuple(values.shape) == tuple(index.shape)
            else:
                fits = isinstance(values, Tensor) and tuple(values.shape) == (self.count, index.numel())
            if not fits:
                return ["Window state of a binned histogram holds an update whose values do not fit its bin indices."]
        # the dense sums (the base, an update kept whole) as the histogram's tensor states; a sparse
        # update's values (its samples' weights, kept in the update's dtype) and bin indices as a
        # list state's chunks (see utilities/state_dtypes.py)
        dense = [v for i, v in zip(state["indices"], state["values"]) if i is None]
        sparse = [v for i, v in zip(state["indices"], state["values"]) if i is not None and v is not None]
        indices = [i for i in state["indices"] if i is not None]
        dtype, what = self.default.dtype, "the window's histogram"
        problems = [
            dtype_problem(f"{what} (base)", state["base"], dtype, "window"),
            *(dtype_problem(f"{what} (an update's values)", v, dtype, "window") for v in dense),
            dtype_problem(f"{what} (sparse updates' values)", sparse, dtype, "window", chunks=True),
            dtype_problem(f"{what} (sparse updates' bin indices)", indices, torch.int64, "window", chunks=True),
        ]
        return [p for p in problems if p is not None][:1]

    def load(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state` on ``device``; the dense sums are rebuilt with the additions the updates made.

        Raises:
            ValueError: a state :meth:`problems` refuses; nothing changes.
        """
        problems = self.problems(state)
        if problems:
            raise ValueError(" ".join(problems))
        sizes, counts = [int(s) for s in state["sizes"]], [int(c) for c in state["blocks"]]
        front, open_count, loose = int(state["front"]), int(state["open"]), int(state["loose"])
        self.default = self.default.to(device)
        self.clear()
        self.sizes, self.used, self.loose, self.front = deque(sizes), sum(sizes), loose, front
        self.indices = deque(None if t is None else t.to(device) for t in state["indices"])
        self.values = deque(
            None if v is None else v.to(device=device, dtype=self.default.dtype if i is None else v.dtype)
            for i, v in zip(state["indices"], state["values"])
        )
        self.base = state["base"].to(device=device, dtype=self.default.dtype).clone()
        first = loose
        raw = []
        for count in [*counts, open_count]:
            dense = torch.zeros_like(self.default)
            for i in range(first, first + count):  # once per load: the additions the updates made
                index = self.indices[i]
                if index is None:
                    dense += self.values[i]  # type: ignore[arg-type]
                else:
                    self.add(dense, index.to(torch.int64), self.values[i])
            raw.append(dense)
            first += count
        self.open, self.open_count = raw.pop(), open_count
        self.open_entries = sum(
            self.bins if index is None else index.numel() for index in list(self.indices)[len(sizes) - open_count :]
        )
        self.counts, self.slots = deque(counts), deque(raw)
        self._suffix_sums(front)  # the front's suffix sums, in the order the flip made them
        for dense in list(self.slots)[front:]:
            self.back += dense

    def apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Apply a device move to every tensor held."""
        self.default, self.back, self.open, self.base = (fn(t) for t in (self.default, self.back, self.open, self.base))
        self.indices = deque(None if t is None else fn(t) for t in self.indices)
        self.values = deque(None if v is None else fn(v) for v in self.values)
        self.slots = deque(fn(t) for t in self.slots)
        self.spare = []
