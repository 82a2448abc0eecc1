"""Resume a metric's lifetime from a checkpoint saved with another window: added, dropped or resized.

A windowed metric (:class:`~torchmetrics_ext.Windowed`) saves its states under ``lifetime.`` and
``window.`` with its ring as ``_extra_state``; the same metric without a window saves them under
their own names. ``RecMetricModule`` maps one layout onto the other before its metrics load, so
the lifetime resumes whichever way the window changed: these are its key and metadata edits.

The per-module metadata (``state_dict._metadata``, which holds each module's checkpoint version
and recorded settings and which torch hands to every module it loads) is moved with the keys.
That dict is the caller's own object: every edit is recorded and :func:`undo_entries` puts it back
when the load ends, so the checkpoint is left as it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Saved",
    "as_plain",
    "as_windowed",
    "lifetime_names",
    "move_entries",
    "saved_window_rule",
    "undo_entries",
]

_LIFE, _WINDOW, _RING = "lifetime.", "window.", "_extra_state"
_SETTINGS = "torchmetrics_ext"  # the metadata entry of recorded settings (see metrics/base.py note_settings)
_METRIC = "torchmetrics_ext_metric"  # the metadata entry naming the metric class (not a window's)
# one metadata edit: (metadata, key, whether the key was there, its former entry)
Edit = tuple[MutableMapping[str, Any], str, bool, Any]


@dataclass(frozen=True)
class Saved:
    """What a checkpoint holds under one metric's prefix ``head``: which layout it was saved in."""

    lifetime: bool  # states under ``lifetime.`` (saved with a window)
    window: bool  # states under ``window.``
    ring: bool  # an ``_extra_state`` (the window's ring, for a metric of no extra state of its own)
    plain: bool  # states under their own names (saved without a window)

    @classmethod
    def under(cls, state_dict: Mapping[str, Any], head: str) -> Saved:
        """Classify the keys of ``state_dict`` that start with ``head``."""
        names = [key[len(head) :] for key in state_dict if key.startswith(head)]
        return cls(
            lifetime=any(n.startswith(_LIFE) for n in names),
            window=any(n.startswith(_WINDOW) for n in names),
            ring=_RING in names,
            plain=any(not n.startswith((_LIFE, _WINDOW)) and n != _RING for n in names),
        )


def lifetime_names(names: set[str]) -> set[str]:
    """The state names of a metric's lifetime among the names saved under its prefix, in either layout.

    ``{"lifetime.a", "window.a", "_extra_state"}`` and ``{"a"}`` both give ``{"a"}``: two checkpoints
    of the same statistics, with and without a window.
    """
    life = {n[len(_LIFE) :] for n in names if n.startswith(_LIFE)}
    return life or {n for n in names if not n.startswith(_WINDOW) and n != _RING}


def saved_window_rule(metadata: Mapping[str, Any] | None, head: str) -> tuple[Any, Any] | None:
    """The ``(window_size, max_updates)`` a windowed metric saved under ``head`` recorded; ``None`` if unrecorded."""
    entry = metadata.get(head[:-1]) if metadata is not None else None
    settings = entry.get(_SETTINGS) if isinstance(entry, Mapping) else None
    if not isinstance(settings, Mapping) or "window_size" not in settings:
        return None
    return settings["window_size"], settings.get("max_updates")


def as_plain(
    state_dict: dict[str, Any],
    head: str,
    metadata: MutableMapping[str, Any] | None,
    edits: list[Edit],
    drop_ring: bool,
) -> None:
    """A windowed metric's checkpoint as the same metric's without a window: its lifetime, under its own names.

    The window's states go (and the ring, if ``drop_ring``: the loading metric keeps no extra state
    of its own); the lifetime's metadata entries become the metric's.
    """
    for key in [k for k in state_dict if k.startswith(head)]:
        name = key[len(head) :]
        if name.startswith(_LIFE):
            state_dict[head + name[len(_LIFE) :]] = state_dict.pop(key)
        elif name.startswith(_WINDOW) or (name == _RING and drop_ring):
            del state_dict[key]
    if metadata is not None:
        base, life = head[:-1], head + _LIFE[:-1]
        for key in [k for k in metadata if k == life or k.startswith(life + ".")]:
            _set_entry(metadata, base + key[len(life) :], dict(metadata[key]), edits)


def as_windowed(
    state_dict: dict[str, Any],
    head: str,
    empty: Mapping[str, Any],
    window_rule: Mapping[str, Any],
    metadata: MutableMapping[str, Any] | None,
    edits: list[Edit],
) -> None:
    """A checkpoint's lifetime (saved with or without a window) with an empty window: ``empty``'s.

    Args:
        state_dict: the checkpoint's entries (edited in place).
        head: the metric's prefix.
        empty: the loading ``Windowed``'s own ``state_dict(prefix=head)`` after a reset (with its
            ``_metadata``): its window states and ring replace the checkpoint's, if any.
        window_rule: the loading ``Windowed``'s recorded window settings (``window_size``, ``max_updates``).
        metadata: the checkpoint's metadata, or ``None`` if it has none.
        edits: where each metadata edit is recorded for :func:`undo_entries`.
    """
    plain = not Saved.under(state_dict, head).lifetime
    for key in [k for k in state_dict if k.startswith(head)]:
        name = key[len(head) :]
        if plain:
            state_dict[head + _LIFE + name] = state_dict.pop(key)
        elif name.startswith(_WINDOW) or name == _RING:
            del state_dict[key]
    state_dict.update((k, v) for k, v in empty.items() if k.startswith(head + _WINDOW) or k == head + _RING)
    if metadata is None:
        return
    base = head[:-1]
    if plain:  # the metric's entries (its version, settings and class) become the lifetime's
        for key in [k for k in metadata if k == base or k.startswith(base + ".")]:
            _set_entry(metadata, base + "." + _LIFE[:-1] + key[len(base) :], dict(metadata[key]), edits)
    fresh: Mapping[str, Any] = getattr(empty, "_metadata", None) or {}
    window = base + "." + _WINDOW[:-1]
    for key in [k for k in fresh if k == window or k.startswith(window + ".")]:
        _set_entry(metadata, key, dict(fresh[key]), edits)
    # the wrapper's entry: the checkpoint's version and settings (the wrapped metric's, which the
    # wrapper checks) with this window's rule, so the window of another size is not refused
    saved = metadata.get(base)
    entry = {k: v for k, v in (saved.items() if isinstance(saved, Mapping) else ()) if k != _METRIC}
    settings = entry.get(_SETTINGS)
    entry[_SETTINGS] = {**(settings if isinstance(settings, Mapping) else {}), **window_rule}
    _set_entry(metadata, base, entry, edits)


def move_entries(metadata: MutableMapping[str, Any] | None, old: str, new: str, edits: list[Edit]) -> None:
    """The metadata of a metric's states moved from prefix ``old`` to ``new`` (both with their trailing dot).

    The entries under ``new`` (the metric's and its children's: ``.lifetime``, ``.window``) become
    those saved under ``old``: the states' version and recorded settings (a window's size) travel
    with them. Not the class that saved them: the module moves the states of the same statistics
    only (a compute group's, saved under another member), which another class of the group reads.
    Entries ``old`` lacks are dropped from under ``new``.
    """
    if metadata is None:
        return
    old_base, new_base = old[:-1], new[:-1]

    def under(base: str) -> list[str]:
        return [k for k in metadata if k == base or k.startswith(base + ".")]

    moved = {
        new_base + k[len(old_base) :]: {n: v for n, v in metadata[k].items() if n != _METRIC} for k in under(old_base)
    }
    for key in under(new_base):
        if key not in moved:
            edits.append((metadata, key, True, metadata.pop(key)))
    for key, entry in moved.items():
        _set_entry(metadata, key, entry, edits)


def undo_entries(edits: list[Edit]) -> None:
    """Put back every metadata entry that :func:`as_plain`, :func:`as_windowed` and :func:`move_entries` changed."""
    while edits:
        metadata, key, had, former = edits.pop()
        if had:
            metadata[key] = former
        else:
            metadata.pop(key, None)


def _set_entry(metadata: MutableMapping[str, Any], key: str, entry: Any, edits: list[Edit]) -> None:
    edits.append((metadata, key, key in metadata, metadata.get(key)))
    metadata[key] = entry
