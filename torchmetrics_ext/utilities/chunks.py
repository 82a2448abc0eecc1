"""Keeping exact ``cat`` list states short: small chunks are joined as they arrive.

An exact metric (AUC, grouped AUC, pairwise AUC, flat ranking rows) appends one chunk per list
state at each ``update``. Thousands of small per-update tensors cost far more than their rows
(a tensor object and an allocation each: about 2 KB per 1-row chunk), fragment the allocator's
heap and make ``compute`` loop over them. Two joins keep a list short, whatever the batch sizes:

* :func:`join_small_tails`, after every append: when the newest ``_JOIN`` (64) chunks are all
  small (under ``_SMALL`` = 32,768 elements), of joinable dtypes, and the oldest of them holds no
  more elements than the other 63 together, they are joined into one. Without the last condition
  a joined chunk still below ``_SMALL`` was joined again with the next 63 chunks, and again, so
  one-sample batches copied each element ~260 times on average (up to 520). With it a joined
  chunk waits until newer ones outweigh it, so joined chunks grow geometrically and an element is
  copied a few times: 9 on average and 10 at most for one-sample batches, 3 (at most 4) for
  batches of 64, once for batches of 512 elements or more (measured in ``tests/test_auc.py``).
  Whatever the batches, a join adds at least 63 other chunks, so no element is copied more than
  ``_SMALL / 63`` times. A join is tried once per append: a pass over the newest 64 chunks' sizes
  while they are small. Alone, this rule keeps about ``N / 32768 + 80`` entries for ``N``
  elements only while large chunks are rare: one among the newest 64 blocks it, so a large chunk
  at least once every 63 appends left every small chunk unjoined (62 batches of 50 samples then
  one of 32,768, 100 times: 6,300 entries).
* :func:`join_runs_amortised`, after every append and merge: once a list has grown to more than
  twice (plus 64) its length after the last such join, :func:`join_small_runs` joins every run of
  small chunks between large ones into groups of about ``_SMALL`` elements (O(1) per append,
  amortised). A run that a large chunk ends is joined whole, once; at the list's open end (where
  newer chunks follow) a group is joined only while it at least doubles its largest chunk, so an
  element is copied at most about 15 times more there (``tests/test_chunk_bounds.py`` measures at
  most 16 copies in all under adversarial size patterns).

Together they keep a list at most ``N / 8192 + 96`` entries long for ``N`` elements after every
append, whatever the batch sizes: about 4 entries per ``_SMALL`` elements between two run joins,
plus 96. ``TaskMetric._join_small_chunks`` never copies a chunk of 8,192 elements or more (such
chunks cost a few percent of their rows, and copying each once cost half of an update of 8,192
samples): its lists hold at most 4 entries per such chunk plus ``S / 16384 + 96`` for ``S``
elements in smaller ones, at most ``N / 2048 + 96`` (about one entry per update where all
updates are that large).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "is_broadcast",
    "join_chunks",
    "join_runs_amortised",
    "join_small_runs",
    "join_small_tails",
    "small_runs",
]

_JOIN = 64  # this many small chunks at the end of a list state are joined into one
_SMALL = 1 << 15  # elements: a chunk below this (128 KB of float32) counts as small


def join_small_tails(
    lists: Sequence[list[Tensor]],
    keep: int = 0,
    kept_first: Tensor | None = None,
    join: Callable[[list[Tensor]], Tensor] | None = None,
) -> None:
    """Join the ``_JOIN`` chunks before the last ``keep`` of every list into one, in place, when the rule allows.

    The rule (see the module docstring): the chunks are all small, each list's are of one
    dtype (or all floating, or all integer but uint16/32/64: ``torch.cat`` promotes those exactly,
    where an integer joined with a float would be rounded, and promotes no uint16/32/64 with another
    dtype) and on one device, and the oldest of the
    first list's chunks holds no more elements than the other ones together. Each element is
    then copied a few times at most (never more than ``_SMALL / 63`` times), and a list stays
    about ``_JOIN`` entries plus one per ``_SMALL`` elements long.

    The lists are joined together and only while they hold the same number of chunks, so a
    metric whose list states line up chunk by chunk (a ranking metric's rows, a
    :class:`~torchmetrics_ext.Windowed` ring) keeps that alignment. Checking costs one pass over
    the first list's newest ``_JOIN`` chunks (none when the newest or the oldest of them is large).

    Args:
        lists: the list states, each modified in place (slice assignment: a list object shared
            with another metric, a compute group's, stays shared).
        keep: the newest chunks, never joined (a :class:`~torchmetrics_ext.Windowed` lifetime's
            chunks that are also its window's: joined, the window would hold its own copy of them).
        kept_first: the first list's oldest chunk that must not be joined, when it may sit before
            the last ``keep`` (an empty batch in between that the window does not hold): no join
            while it is among the chunks to join.
        join: joins one list's chunks into one tensor (default: ``torch.cat``, stride-0 views of one
            element kept as one view); a metric may share the result with others.
    """
    if not lists:
        return
    first = lists[0]
    end = len(first) - keep
    start = end - _JOIN
    if start < 0 or first[end - 1].numel() >= _SMALL or first[start].numel() >= _SMALL:
        return
    # the oldest outweighs the others together: no join (a chunk too large for one is refused by
    # `_joinable` below). Runs after every append of an exact metric's update: one `map` over the
    # sizes, no list and no Python frame per chunk
    if first[start].numel() > sum(map(Tensor.numel, first[start + 1 : end])):
        return
    length = len(first)
    if any(len(chunks) != length for chunks in lists):
        return
    windows = [chunks[start:end] for chunks in lists]
    if not all(_joinable(window) for window in windows):
        return
    if kept_first is not None and any(chunk is kept_first for chunk in windows[0]):
        return
    join = join or join_chunks
    for chunks, window in zip(lists, windows, strict=True):
        chunks[start:end] = [join(window)]


def small_runs(sizes: Sequence[int], kept: Sequence[bool] = (), large: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` of each group of two or more consecutive small items to join, given their element counts.

    A run of small items (below ``large`` elements, default ``_SMALL``, and not ``kept``) is cut
    into consecutive groups that each reach ``_SMALL`` elements (the last may be smaller); a large
    or ``kept`` item ends a run and stays on its own, as does a group of one.

    The last group of a run that a large item ends is final once joined (a small chunk between two
    large ones, or after a group that reached ``_SMALL``: a group of one from then on). The last
    group of a run that the end of ``sizes`` or a ``kept`` item ends is *open*: newer items will
    follow it and it will be joined again. Its oldest items are left out while one holds more
    elements than the later ones of the group together (the rule of :func:`join_small_tails`), so a
    joined open group at least doubles the largest chunk it takes in (an element is copied at most
    about ``log2(_SMALL)`` = 15 times so), and at most 15 items are left out (each more than twice
    the next one's size).
    """
    groups: list[tuple[int, int]] = []
    start, total = 0, 0
    large = _SMALL if large is None else large

    def open_group(end: int) -> None:  # the oldest items that outweigh the newer ones stay as they are
        nonlocal start, total
        while end - start > 1 and 2 * sizes[start] > total:
            total -= sizes[start]
            start += 1
        if end - start > 1:
            groups.append((start, end))

    for i, size in enumerate(sizes):
        is_kept = bool(kept) and kept[i]
        if size >= large or is_kept:
            if is_kept:
                open_group(i)
            elif i - start > 1:
                groups.append((start, i))
            start, total = i + 1, 0
            continue
        total += size
        if total >= _SMALL:
            if i + 1 - start > 1:
                groups.append((start, i + 1))
            start, total = i + 1, 0
    open_group(len(sizes))
    return groups


def join_small_runs(
    lists: Sequence[list[Tensor]],
    frozen: Sequence[Tensor] = (),
    join: Callable[[list[Tensor]], Tensor] | None = None,
    keep: int = 0,
    large: int | None = None,
) -> None:
    """Join every run of consecutive small chunks of the lists into chunks of about ``_SMALL`` elements, in place.

    For chunks that did not arrive one append at a time (``merge_state`` puts another metric's
    chunks before this one's, so :func:`join_small_tails` never sees them): a run of small chunks
    (of the first list) is cut into consecutive groups that each reach ``_SMALL`` elements (the
    last may be smaller), and each group of two or more joinable chunks is joined, in every list
    at the same positions (the lists stay aligned). Large chunks and the ``frozen`` ones (by
    identity, in the first list: a :class:`~torchmetrics_ext.Windowed` window's chunks) are kept
    and end a run, as do the newest ``keep`` chunks (as in :func:`join_small_tails`: a
    :class:`~torchmetrics_ext.Windowed` lifetime's chunks that its window holds, or holds a view
    of). A run's last group is left partly unjoined where newer chunks will follow it (see
    :func:`small_runs`). ``large`` (default ``_SMALL``) is the size from which a chunk counts as
    large: never copied, it ends a run. Afterwards a list holds at most ``2 W + S / _SMALL + 16``
    entries for ``W`` large chunks and ``S`` elements in small ones (each full group holds
    ``_SMALL`` elements, each large chunk ends at most one smaller group, the open group leaves
    out at most 15): ``2 N / _SMALL + 16`` for ``N`` elements with the default ``large``; plus the
    frozen and kept ones and the groups left alone for their dtypes or devices. Nothing is done
    unless the lists hold the same number of chunks.
    """
    if not lists:
        return
    first = lists[0]
    length = len(first)
    if length - keep < 2 or any(len(chunks) != length for chunks in lists):
        return
    held = {id(chunk) for chunk in frozen}
    older = first[: length - keep] if keep > 0 else first
    groups = small_runs([chunk.numel() for chunk in older], [id(chunk) in held for chunk in older], large)
    groups = [(a, b) for a, b in groups if all(_joinable(chunks[a:b]) for chunks in lists)]
    if not groups:
        return
    join = join or join_chunks
    for chunks in lists:
        for a, b in reversed(groups):  # from the end: earlier positions stay valid
            chunks[a:b] = [join(chunks[a:b])]


_RUNS_JOINED = "_runs_joined"  # the attribute recording a list's length (less `keep`) after its last run join


def join_runs_amortised(
    lists: Sequence[list[Tensor]],
    state: dict[str, Any],
    keep: int = 0,
    frozen: Sequence[Tensor] = (),
    join: Callable[[list[Tensor]], Tensor] | None = None,
    large: int | None = None,
) -> None:
    """:func:`join_small_runs` once the lists have grown to more than twice (plus ``_JOIN``) their last joined length.

    The one amortised join of every list-state owner, after ``update``/``forward``, after
    ``merge_state`` and for a :class:`~torchmetrics_ext.Windowed` lifetime: it catches the small
    chunks :func:`join_small_tails` never joins (a large chunk among the newest ``_JOIN`` blocks
    that rule, as does an update of ``_WHOLE`` elements or more, which skips it; merged chunks sit
    before this metric's). ``state`` (the owner's ``__dict__``) records the length reached after a
    run join, minus ``keep``; a list shorter than that (a ``reset``, a load, a join by
    ``compute``) lowers the record. A run join scans the chunks before the newest ``keep`` once,
    and at least as many chunks as the last join left have been appended since: O(1) per append,
    amortised. Between two run joins a list holds at most ``2 L + _JOIN`` entries (plus ``keep``)
    where ``L <= 2 W + S / _SMALL + 16`` (see :func:`join_small_runs`; ``large`` is passed on): at
    most ``N / 8192 + 96`` for ``N`` elements with the default ``large``, ``4 W + S / 16384 + 96``
    (at most ``N / 2048 + 96``) with ``large=8192``.
    """
    if not lists:
        return
    older = len(lists[0]) - keep
    joined = state.get(_RUNS_JOINED, 0)
    if older > 2 * joined + _JOIN:
        join_small_runs(lists, frozen=frozen, join=join, keep=keep, large=large)
        state[_RUNS_JOINED] = len(lists[0]) - keep
    elif older < joined:
        state[_RUNS_JOINED] = older


_DEVICE = operator.attrgetter("device")
_DTYPE = operator.attrgetter("dtype")
_IS_CPU = operator.attrgetter("is_cpu")


def _joinable(chunks: list[Tensor]) -> bool:
    """Small chunks on one device whose ``torch.cat`` keeps every value exactly (see :func:`join_small_tails`)."""
    # one tensor repeated (cached unit weights): one device, one dtype (the ends tell most other lists apart)
    if chunks[0] is chunks[-1] and len(set(map(id, chunks))) == 1:
        return chunks[0].numel() < _SMALL
    # attributes read by `map` (no Python frame per chunk: a join checks 64 chunks per list state)
    if max(map(Tensor.numel, chunks)) >= _SMALL:
        return False
    if not all(map(_IS_CPU, chunks)) and len(set(map(_DEVICE, chunks))) > 1:  # (`device` makes an object per read)
        return False
    dtypes = set(map(_DTYPE, chunks))
    if len(dtypes) == 1:
        return True
    floating = [chunk.is_floating_point() for chunk in chunks]
    if all(floating):
        return True
    # torch.cat promotes no uint16/32/64 with another integer dtype (a RuntimeError): a ranking metric's
    # `indexes` of int64 in one update and uint32 in the next stay apart
    return not any(floating) and not any(chunk.is_complex() for chunk in chunks) and not (dtypes & _UNPROMOTED)


_UNPROMOTED = frozenset((torch.uint16, torch.uint32, torch.uint64))


def is_broadcast(chunk: Tensor) -> bool:
    """A 1-D stride-0 view: every element is one stored element (a ranking metric's unit weights)."""
    return chunk.ndim == 1 and chunk.stride(0) == 0


def join_chunks(chunks: list[Tensor]) -> Tensor:
    """``torch.cat`` of the chunks; views of one same element stay one stride-0 view (nothing materialised)."""
    head = chunks[0]
    if is_broadcast(head):
        # one view repeated (a ranking metric's cached unit weights): one look at it
        if chunks[0] is chunks[-1] and len(set(map(id, chunks))) == 1:
            return head.as_strided((head.shape[0] * len(chunks),), (0,))
        if all(is_broadcast(c) and c.dtype == head.dtype and c.data_ptr() == head.data_ptr() for c in chunks):
            return head.as_strided((sum(c.shape[0] for c in chunks),), (0,))
    return torch.cat(chunks)
