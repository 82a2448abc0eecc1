"""Lifetime and window of a histogram state filled sample by sample: bin indices per update, dense sums per block.

A binned metric (``AUC(num_bins=B)``, ``AUPRC(num_bins=B)``) adds each sample's weight into one
bin of a dense ``(2, T, B)`` float64 histogram. The generic ring
(:class:`~torchmetrics_ext.wrappers._ring.StateRing`) keeps one dense copy per update: at
``T = 3``, ``B = 10_000`` that is a 480 KB slot zeroed, filled and folded twice per update, and
~60 MB for a 1M-sample window of batches of 8192. :class:`HistogramWindow` keeps instead:

* for every update in the window, the flat bin index of each of its samples (``int32``, 4 bytes
  per sample and task) and its weight (nothing when unweighted);
* one dense sum per *block* of consecutive updates: each update is added (one ``scatter_add_``)
  into the open block only; a full block joins the closed blocks, kept as the two-stack sliding
  window of :mod:`~torchmetrics_ext.wrappers._ring` (suffix sums of the older blocks, a running
  sum of the newer), so nothing is ever subtracted. A block is full once it holds ``k <= 8``
  updates (``k`` about the square root of the updates in the window) *and* at least half as many
  entries as the dense histogram has bins: small batches fill a block of many updates, so the
  dense sums never take more memory than a few times the bin indices they stand for (a 1M-sample
  window of batches of 8 would otherwise keep 15,000 dense blocks, 7 GB at ``T = 3``, ``B = 10_000``);
* the lifetime's *base*: the sum of every block closed before the last turn of the two-stack.

Evicting an update moves one index. When the oldest update of a block leaves the window, the
whole block leaves the dense sums, and its remaining updates (at most ``k - 1``) are added from
their indices when the window is read. Reads are fresh sums:

* window = suffix sum of the oldest closed block + running sum + open block + the loose updates;
* lifetime = base + running sum + open block.

Each update therefore costs one ``scatter_add_`` of its samples (the lifetime's own update), and
the window a few dense passes per block of updates instead of four per update.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc.binary import _add_entries as add_entries

__all__ = ["HistogramWindow"]

_INT32_MAX = 2**31 - 1
_MAX_BLOCK = 8  # updates per dense block at most: the loose updates a read adds from indices
_MAX_SPARE = 2  # dense tensors of dropped blocks kept for reuse


class HistogramWindow:
    """Per-update bin indices, per-block dense sums and the lifetime base of one histogram state.

    Args:
        default: the state's default value (zeros: its shape, dtype and device).
        name: the state's name in the metric. A metric names its histogram after the settings
            that place samples in bins (``AUC``: ``hist``, ``hist_probability``, ``hist_logits``...),
            so bin indices saved under another name are another setting's bins: :meth:`problems`
            refuses them, whatever their shape.
    """

    open_entries = 0  # bin indices added to the open block (a class default for windows pickled before it was kept)

    def __init__(self, default: Tensor, name: str) -> None:
        self.default = default.detach().clone()
        self.name = name
        self.clear()

    def clear(self) -> None:
        """Forget every update (the lifetime too)."""
        with torch.inference_mode(False):  # dense sums written by later updates: never inference tensors
            self._clear()

    def _clear(self) -> None:
        self.sizes: deque[int] = deque()
        self.indices: deque[Tensor] = deque()  # per update: the flat bin index of each sample
        self.values: deque[Tensor | None] = deque()  # per update: each sample's weight, None for ones
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

    # ------------------------------------------------------------------ per update

    def _block_full(self) -> bool:
        """Whether the open block is closed before the next update (see the module's docstring)."""
        updates = max(1, min(_MAX_BLOCK, math.isqrt(len(self.sizes))))
        return self.open_count >= updates and 2 * self.open_entries >= self.default.numel()

    def _fresh(self) -> Tensor:
        if self.spare:
            return self.spare.pop().zero_()
        with torch.inference_mode(False):  # a step under inference mode must not leave an inference block
            return torch.zeros_like(self.default)

    def push(self, index: Tensor, values: Tensor | None, size: int) -> None:
        """Add one update of ``size`` samples (its flat ``index`` entries and their ``values``)."""
        if self._block_full():
            self.back += self.open
            self.slots.append(self.open)
            self.counts.append(self.open_count)
            self.open, self.open_count, self.open_entries = self._fresh(), 0, 0
        add_entries(self.open, index, values)
        self.open_count += 1
        self.open_entries += index.numel()
        flat = index.reshape(-1)
        self.indices.append(flat.to(torch.int32) if self.default.numel() <= _INT32_MAX else flat.clone())
        self.values.append(None if values is None else values.reshape(-1).clone())
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

    def _flip(self) -> None:
        """Turn every closed block into the suffix sum from it to the newest one; the running sum joins the base."""
        self._suffix_sums(len(self.slots))
        self.front = len(self.slots)
        self.base += self.back
        self.back.zero_()

    # ------------------------------------------------------------------ reads

    def window_into(self, target: Tensor) -> None:
        """Write the window's histogram into ``target`` (in place)."""
        torch.add(self.back, self.open, out=target)
        if self.front:
            target += self.slots[0]
        if self.loose:
            loose = range(self.loose)
            index = torch.cat([self.indices[i] for i in loose]).to(torch.int64)
            given = [self.values[i] for i in loose]
            values = None
            if any(v is not None for v in given):
                values = torch.cat(
                    [
                        torch.ones(self.indices[i].numel(), dtype=target.dtype, device=target.device)
                        if v is None
                        else v
                        for i, v in zip(loose, given)
                    ]
                )
            add_entries(target, index, values)

    def lifetime_into(self, target: Tensor) -> None:
        """Write the lifetime's histogram (every update ever pushed) into ``target`` (in place)."""
        torch.add(self.base, self.back, out=target)
        target += self.open

    # ------------------------------------------------------------------ persistence and devices

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: per-update sizes, indices and values, the block split and the base.

        ``"state"`` holds the histogram state's name (what its bin indices mean).
        """
        return {
            "state": self.name,
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

    def problems(self, state: Any) -> list[str]:
        """Why :meth:`load` would refuse ``state`` (missing parts, inconsistent counts, another histogram or shape).

        A state saved without its histogram's name (before it was recorded) is checked by its shape only.
        """
        keys = {"sizes", "indices", "values", "blocks", "front", "open", "loose", "base"}
        if not isinstance(state, Mapping) or not keys <= set(state):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            return [f"Window state of a binned histogram must hold {sorted(keys)}, got {got}."]
        saved = state.get("state", self.name)
        if saved != self.name:
            return [
                f"state mismatch for the window's histogram: the checkpoint's bin indices are those of "
                f"`{saved}`, this metric's histogram is `{self.name}` (the metric names it after the settings "
                "that place samples in bins: a checkpoint of other settings)."
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
        if tuple(state["base"].shape) != tuple(self.default.shape):
            return [
                f"size mismatch for the window's histogram: the checkpoint's has shape "
                f"{tuple(state['base'].shape)}, this metric's {tuple(self.default.shape)}."
            ]
        return []

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
        self.indices = deque(t.to(device) for t in state["indices"])
        self.values = deque(None if v is None else v.to(device) for v in state["values"])
        self.base = state["base"].to(device=device, dtype=self.default.dtype).clone()
        first = loose
        raw = []
        for count in [*counts, open_count]:
            dense = torch.zeros_like(self.default)
            for i in range(first, first + count):  # once per load: the additions the updates made
                add_entries(dense, self.indices[i].to(torch.int64), self.values[i])
            raw.append(dense)
            first += count
        self.open, self.open_count = raw.pop(), open_count
        self.open_entries = sum(self.indices[i].numel() for i in range(len(sizes) - open_count, len(sizes)))
        self.counts, self.slots = deque(counts), deque(raw)
        self._suffix_sums(front)  # the front's suffix sums, in the order the flip made them
        for dense in list(self.slots)[front:]:
            self.back += dense

    def apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Apply a device move to every tensor held."""
        self.default, self.back, self.open, self.base = (fn(t) for t in (self.default, self.back, self.open, self.base))
        self.indices = deque(fn(t) for t in self.indices)
        self.values = deque(None if v is None else fn(v) for v in self.values)
        self.slots = deque(fn(t) for t in self.slots)
        self.spare = []
