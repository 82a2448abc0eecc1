"""How the package's metrics save and load their states: checked checkpoints, renamed states, notes.

:class:`CheckpointedStates` is the checkpoint side of :class:`~torchmetrics_ext.metrics.base.GuardedMetric`
(see its docstring, "Checked checkpoints" and "All of a metric's states or none"): the settings a
checkpoint records, the former names of renamed states, and the checks that refuse a checkpoint
of other settings, shapes or dtypes before anything of the metric loads. :func:`load_own_entries`
makes a metric's load all or nothing in any load, also one of a parent module.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from torchmetrics_ext.utilities.formatting import article
from torchmetrics_ext.utilities.load_guard import (
    guard_descendant_loads,
    loading_strictly,
    put_back_whole,
    putting_back_whole,
    without_load_wrappers,
)
from torchmetrics_ext.utilities.snapshot import snapshot
from torchmetrics_ext.utilities.state_dtypes import dtype_problem
from torchmetrics_ext.utilities.warnings import warn_at_user

__all__ = [
    "UNCHECKED_SUFFIX",
    "CheckpointedStates",
    "carry_saved_ranks",
    "copied_with_source",
    "derive_missing",
    "drop_pending_load",
    "end_loads_in_a_hook",
    "forget_cleared_states",
    "held_states",
    "holds_anything",
    "load_explained",
    "load_own_entries",
    "note_checkpoint",
    "note_saved_ranks",
    "note_settings",
    "reset_cleared_states",
    "reset_left_states",
    "resets_taken",
    "saved_ranks",
    "settings_problems",
    "share_states_with",
    "standalone_state",
    "states_written",
    "tensor_state_problems",
]

_T = TypeVar("_T")

# checkpoint format of the package's metrics (nn.Module's ``_version``, kept in a state_dict's
# metadata): 2 = state names carry the settings that change them, and the metadata holds the
# settings that state shapes cannot show (``_checkpoint_settings``)
_CHECKPOINT_VERSION = 2
_SETTINGS_KEY = "torchmetrics_ext"  # the metadata entry holding those settings
_METRIC_KEY = "torchmetrics_ext_metric"  # the metadata entry naming the metric that saved the states
# what the metrics of one ``load_state_dict`` say about checkpoints they did not read (see note_checkpoint)
_LOAD_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_LOAD_NOTES", default=None)
# a module's load in progress, from its `_load_from_state_dict` to its load post-hook (see _PendingLoad)
_PENDING_LOAD = "_pending_load"
_END_LOAD_HOOK = "_end_load_hook"  # the key of _end_own_load in the module's load post-hooks


def note_checkpoint(text: str) -> None:
    """Say why a metric did not read (some of) the checkpoint it was given, and what happens instead.

    Inside :func:`load_explained` (the ``load_state_dict`` of the package's metrics and of
    ``RecMetricModule``) the note goes into the load's error, or becomes a warning after a load that
    succeeds (``strict=False``); in a load through another module (a ``LightningModule``) the
    metric's :func:`load_own_entries` does the same for the load of its entries (it joins the
    parent's error when the load fails for them). Elsewhere it is a ``UserWarning`` at once.
    """
    notes = _LOAD_NOTES.get()
    if notes is None:
        warn_at_user(text, UserWarning)
    elif text not in notes:
        notes.append(text)


def load_explained(load: Callable[[], _T]) -> _T:
    """Run ``load`` (a ``load_state_dict``); add the notes of :func:`note_checkpoint` to its error, or warn them."""
    notes: list[str] = []
    token = _LOAD_NOTES.set(notes)
    try:
        result = load()
    except RuntimeError as error:
        if not notes:
            raise
        raise RuntimeError("\n".join([str(error), *notes])) from None
    finally:
        _LOAD_NOTES.reset(token)
    for text in notes:
        warn_at_user(text, UserWarning)
    return result


def load_own_entries(module: nn.Module, prefix: str, error_msgs: list[str], load: Callable[[], None]) -> None:
    """Run ``load`` (the body of ``module``'s ``_load_from_state_dict``); undo it if the load fails for ``module``.

    ``nn.Module.load_state_dict`` calls each module's ``_load_from_state_dict`` in turn and raises
    only at the end (for missing or unexpected keys when ``strict``, for any error message), so a
    metric that starts afresh in its own load (a checkpoint of other settings) was left reset by a
    strict load that raised, when a parent module (a ``LightningModule``'s checkpoint restore) was
    loaded. The module's in-memory state is recorded here (:func:`snapshot`, no tensor copied) and
    put back from its load post-hook (:func:`_end_own_load`, see :func:`end_loads_in_a_hook`) when the
    load fails for its entries: an error was added since (by it or its children), or, in a strict
    load (:func:`~torchmetrics_ext.utilities.load_guard.loading_strictly`), a key under ``prefix`` is
    missing or unexpected. ``load`` raising puts it back at once; so does an exception in a
    descendant's load or load post-hook, or in one of the module's own post-hooks that torch runs
    before that one (:func:`~torchmetrics_ext.utilities.load_guard.guard_descendant_loads`, installed
    for the length of the load: the descendants' loads then record nothing of their own).

    Nothing is recorded where an enclosing guard puts the module back anyway
    (:func:`~torchmetrics_ext.utilities.load_guard.put_back_whole`): the metric's or wrapper's own
    ``load_state_dict``, a ``Windowed`` or ``RecMetricModule`` holding it. Its load then keeps nothing
    for the post-hook but the notes below, if any.

    The notes of a checkpoint not read (:func:`note_checkpoint`) outside :func:`load_explained` (a
    parent's load) are kept until then too: they join the load's error when it fails for the
    module, and are warned when it does not. A parent's load that raises for another module's
    entries leaves this one loaded, as ``nn.Module`` leaves the parent's other children.
    """
    end_loads_in_a_hook(module)  # a metric pickled by a version without the hook gets it at its first load
    _drop_pending(module)  # what a load ended where nothing of the package saw it left (see _PendingLoad)
    covered = put_back_whole(module, error_msgs)
    restore = None if covered else snapshot(module)
    notes: list[str] | None = [] if _LOAD_NOTES.get() is None else None
    token = None if notes is None else _LOAD_NOTES.set(notes)
    errors_before = len(error_msgs)  # the module's own refusal counts too: its children load after it
    try:
        load()
    except BaseException:
        if restore is not None:
            restore()
        raise
    finally:
        if token is not None:
            _LOAD_NOTES.reset(token)
    if restore is None and not notes:
        return  # the enclosing guard decides and puts back
    pending = _PendingLoad(prefix, restore, error_msgs, errors_before, notes or [])
    module.__dict__[_PENDING_LOAD] = pending
    own_hook = module.__dict__[_END_LOAD_HOOK]
    if restore is not None and (module._modules or next(iter(module._load_state_dict_post_hooks)) != own_hook):

        def abort() -> None:  # an exception ends the load before the module's post-hook: put back now
            if module.__dict__.get(_PENDING_LOAD) is pending:
                del module.__dict__[_PENDING_LOAD]
                restore()

        pending.unguard = guard_descendant_loads(module, abort, errors=error_msgs, hooks_before=own_hook)


def synced_problems(metrics: Iterable[Metric], prefix: str, owner: str) -> list[str]:
    """The refusal of a load into ``owner`` while one of ``metrics`` is synced by hand (``sync()``, no ``unsync()``).

    ``unsync()`` puts back the states from before the sync, so a checkpoint loaded between the two
    was dropped without a word; the load is refused instead, as ``update`` and ``merge_state`` are.
    """
    if not any(metric.__dict__.get("_is_synced") for metric in metrics):
        return []
    return [
        f"{prefix[:-1] or owner} is synced (its `sync()` was called without `unsync()`): `unsync()` would put "
        "back the states from before the sync and drop the loaded ones. Call `unsync()` before `load_state_dict`."
    ]


def tensor_state_problems(
    metric: Metric, states: Mapping[str, Any], prefix: str, owner: str, origin: str = "checkpoint"
) -> list[str]:
    """The tensor states in ``states`` (under ``prefix``) that are no tensor of the shape ``metric`` declares.

    For a TorchMetrics metric in a :class:`~torchmetrics_ext.Windowed`, whose own load takes any
    tensor as a state: the wrapper keeps fixed-shape tensor states (sum, max, min) in a ring of
    that shape, so another shape is another setting's state (``num_outputs``) or a malformed one.
    List states (``cat``) hold any number of samples and are not checked here. ``owner`` and
    ``origin`` name the metric and where the states come from in the messages.
    """
    problems = []
    for name, default in metric._defaults.items():
        key = prefix + name
        if not isinstance(default, Tensor) or key not in states:
            continue
        value = states[key]
        if not isinstance(value, Tensor):
            problems.append(
                f"state mismatch for {key}: the {origin} holds {article(type(value).__name__)}, "
                f"{owner} expects a tensor of shape {tuple(default.shape)}."
            )
        elif value.shape != default.shape:
            problems.append(
                f"size mismatch for {key}: the {origin}'s state has shape {tuple(value.shape)}, "
                f"{owner} expects {tuple(default.shape)}."
            )
    return problems


@dataclass(slots=True)
class _PendingLoad:
    """A module's load in progress, from its ``_load_from_state_dict`` to its load post-hook (see load_own_entries).

    Kept in the module's ``__dict__`` and removed when the load ends: by the post-hook, or by an
    exception that the guard of its descendants (``unguard``) sees, or by the put-back of an enclosing
    guard (the ``__dict__`` it restores did not hold it). An exception that ends the load where no code
    of the package runs (torch's own ``load_state_dict`` between two calls: a ``KeyboardInterrupt``)
    leaves it until the module's next load or copy: only a ``try``/``finally`` around that call, which
    a module loaded through a parent (a user's ``LightningModule``) does not have, could see it end.
    """

    prefix: str
    restore: Callable[[], None] | None  # None: an enclosing guard puts the module back (notes kept only)
    error_msgs: list[str]
    errors_before: int
    notes: list[str]
    unguard: Callable[[], None] | None = None  # removes the wrappers of guard_descendant_loads


def _drop_pending(module: nn.Module) -> _PendingLoad | None:
    """Remove the module's load in progress (and the wrappers on its descendants); return it, if any."""
    pending = module.__dict__.pop(_PENDING_LOAD, None)
    if pending is not None and pending.unguard is not None:
        pending.unguard()
    return pending


def drop_pending_load(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a module's ``__getstate__``) without what :func:`load_own_entries` keeps for its post-hook.

    A copy made while a load is in progress (from a user's hook) must not take it along: it holds a
    closure, which pickle (``torch.save`` of the module, ``ddp_spawn``) refuses, referring to the
    original module, which a copy must not put back. Nor the wrappers a guard of the load has put on
    the module (:func:`~torchmetrics_ext.utilities.load_guard.without_load_wrappers`).
    """
    state.pop(_PENDING_LOAD, None)
    return without_load_wrappers(state)


def end_loads_in_a_hook(module: nn.Module) -> None:
    """Register the load post-hook of :func:`load_own_entries` on ``module``, unless it is registered already.

    Called at construction (the hook then runs before any registered by the user) and at each load.
    """
    if module.__dict__.get(_END_LOAD_HOOK) not in module._load_state_dict_post_hooks:
        module.__dict__[_END_LOAD_HOOK] = module.register_load_state_dict_post_hook(_end_own_load).id


def _end_own_load(module: nn.Module, incompatible_keys: Any) -> None:
    """The load post-hook of :func:`load_own_entries`: put ``module`` back if the load fails for its entries.

    torch runs it after the module's children have loaded, before the parent's other children
    load and before it raises: the module's own missing and unexpected keys are all known.
    """
    pending = _drop_pending(module)
    if pending is None:  # nothing kept (an enclosing guard decides), or a load by other means
        return
    keys = [*incompatible_keys.missing_keys, *incompatible_keys.unexpected_keys]
    failed = len(pending.error_msgs) > pending.errors_before
    if failed or (any(k.startswith(pending.prefix) for k in keys) and loading_strictly()):
        if pending.restore is not None:
            pending.restore()
        # the load raises: say why there
        pending.error_msgs.extend(text for text in pending.notes if text not in pending.error_msgs)
        return
    for text in pending.notes:
        warn_at_user(text, UserWarning)


def _count_states_written(metric: Metric) -> None:
    """Count a ``merge_state`` or a load of states into ``metric`` (``update`` counts in ``_update_count``).

    For an owner whose metric must hold only what it gave it (a ``RecMetricModule``'s compute group
    members): :func:`states_written` tells whether anything else wrote its states since.
    """
    metric.__dict__["_states_written"] = metric.__dict__.get("_states_written", 0) + 1


def states_written(metric: Metric) -> int:
    """How many merges and loads of states ``metric`` has taken (see :func:`_count_states_written`)."""
    return metric.__dict__.get("_states_written", 0)


def _count_reset(metric: Metric, held: tuple[int, int, int] | None) -> None:
    """Count a ``reset`` of ``metric`` (its ``_update_count`` goes back to 0, so it cannot tell one happened).

    ``held``: :func:`held_states` of ``metric`` just before the reset. Both sides of a pair sharing
    states (see :func:`share_states_with`) note what the reset leaves to the other: a metric that
    held something notes what it cleared (its source's reports, when it is one), and a metric that
    reports another's states notes what of them its reset could not clear (its source's resets so far
    and what it held). :func:`reset_left_states` and :func:`reset_cleared_states` read the notes.
    """
    state = metric.__dict__
    if held is not None:  # a reset of an empty metric keeps the note of the last one that cleared something
        state["_cleared_at_reset"] = held
    state["_resets_taken"] = state.get("_resets_taken", 0) + 1
    state["_written_at_reset"] = state.get("_states_written", 0)
    source = state.get("_states_source")
    if source is not None:
        state["_source_at_reset"] = (resets_taken(source), held_states(source))


def resets_taken(metric: Metric) -> int:
    """How many times ``metric`` has been reset (see :func:`_count_reset`), by its owner or anyone else."""
    return metric.__dict__.get("_resets_taken", 0)


# the saved ranks whose states a metric holds, {(rank, world size)}: see note_saved_ranks
_SAVED_RANKS = "_saved_ranks"


def note_saved_ranks(metric: Metric, ranks: frozenset[tuple[int, int]] | None) -> None:
    """Record which saved ranks' states ``metric`` holds now: ``{(rank, world size)}``; ``None`` forgets the record.

    A ``RecMetricModule`` records it on each of its metrics when it loads a checkpoint that names the
    rank that saved it; :func:`carry_saved_ranks` adds those of a metric merged in since. The module
    reads them at its next ``compute`` (``_warn_other_rank``): a rank that loaded its own states of
    another run and merged every other saved rank's into them by hand holds that whole run.
    """
    if ranks is None:
        metric.__dict__.pop(_SAVED_RANKS, None)
    else:
        metric.__dict__[_SAVED_RANKS] = frozenset(ranks)


def saved_ranks(metric: Metric) -> frozenset[tuple[int, int]] | None:
    """The saved ranks whose states ``metric`` holds (see :func:`note_saved_ranks`); ``None``: unrecorded."""
    return metric.__dict__.get(_SAVED_RANKS)


def carry_saved_ranks(metric: Metric, incoming: Any) -> None:
    """After ``metric.merge_state(incoming)``: ``metric`` holds the saved ranks recorded on ``incoming`` too.

    Only where both record some (a dict of states, or a metric loaded outside a module, records none).
    """
    ours, theirs = saved_ranks(metric), incoming.__dict__.get(_SAVED_RANKS) if isinstance(incoming, Metric) else None
    if ours is not None and theirs is not None:
        metric.__dict__[_SAVED_RANKS] = ours | theirs


def holds_anything(metric: Metric) -> bool:
    """Whether ``metric`` took an update, a merge or a load since its last reset (or since it was built)."""
    return bool(metric._update_count) or states_written(metric) != metric.__dict__.get("_written_at_reset", 0)


def held_states(metric: Metric) -> tuple[int, int, int] | None:
    """What ``metric`` holds, as a mark that each update, merge, load and reset changes; ``None``: nothing.

    ``(resets, updates since the last one, merges and loads ever)``: two marks are equal exactly when
    nothing changed the states in between.
    """
    if not holds_anything(metric):
        return None
    return resets_taken(metric), metric._update_count, states_written(metric)


# set by ``torchmetrics_ext._module_members``: what gives a compute group member its source's states before
# a ``compute()`` of its own (the metrics layer knows members by their ``_states_source`` alone)
_FILL_ALONE: list[Callable[[Metric, Metric], None]] = []


def fill_from_source(member: Metric) -> None:
    """Give ``member`` its source's states now, when it reports another's (see :func:`share_states_with`).

    A compute group member of a ``RecMetricModule`` is never updated: the module fills it with its
    leader's states at its own ``compute()``. Computed on its own (``module.metrics["ctr"].compute()``,
    or by Lightning for ``self.log("ctr", module.metrics["ctr"])``), it is filled here first, so its
    value is that of the samples its group has seen, not ``nan`` or the module's last compute.
    """
    source = member.__dict__.get("_states_source")
    if source is not None and _FILL_ALONE:
        _FILL_ALONE[0](member, source)


def share_states_with(member: Metric, source: Metric) -> None:
    """Record that ``member`` reports ``source``'s states (a compute group's member and its leader).

    The resets of each then note what they leave to the other (see :func:`reset_left_states` and
    :func:`reset_cleared_states`). A copy of ``member`` alone (``copy.deepcopy``, pickle) is a
    metric of its own holding ``source``'s states as they are: see :func:`standalone_state`.
    """
    member.__dict__["_states_source"] = source


def reset_left_states(member: Metric) -> bool:
    """Whether ``member``'s last reset left states in its source that it still reports.

    The source held something at that reset and has not been reset since (a reset of the whole group,
    in any order, leaves nothing). ``False`` for a metric without a source or never reset.
    """
    noted = member.__dict__.get("_source_at_reset")
    source = member.__dict__.get("_states_source")
    return noted is not None and source is not None and bool(noted[1]) and noted[0] == resets_taken(source)


def reset_cleared_states(member: Metric, since: int) -> bool:
    """Whether a reset of ``member``'s source alone, after its first ``since`` resets, cleared what ``member`` reports.

    The mirror of :func:`reset_left_states`: the source's last reset that cleared something did so
    while ``member`` was neither reset after it nor reset just before it with the source holding
    exactly what it cleared (a reset of the whole group, in any order, clears what every metric of it
    asked to). ``False`` for a metric without a source, or a source reset only while empty.
    """
    source = member.__dict__.get("_states_source")
    cleared = None if source is None else source.__dict__.get("_cleared_at_reset")
    if cleared is None or cleared[0] < since:  # that reset was the source's (cleared[0] + 1)-th
        return False
    noted = member.__dict__.get("_source_at_reset")
    return noted is None or (noted[0] <= cleared[0] and noted[1] != cleared)


_COPIED_WITH_SOURCE = "_copied_with_source"


def copied_with_source(member: Metric) -> None:
    """Mark ``member`` as copied (``deepcopy``, pickle) along with its source, by the module holding both.

    Its next ``__getstate__`` then keeps the reference to its source (whose copy the module links
    again) instead of making a standalone copy (:func:`standalone_state`): no temporary copies of
    the source's states in the pickle. Those would break ``strategy="ddp_spawn"``, whose pickler
    hands each CPU tensor's shared-memory file descriptor to the new processes only after the
    pickling, when a temporary tensor has already closed it (``bad value(s) in fds_to_keep``).
    """
    member.__dict__[_COPIED_WITH_SOURCE] = True


def forget_cleared_states(metric: Metric) -> None:
    """Forget what ``metric``'s resets so far cleared: its owner's own, which clear nothing a member reports.

    A ``RecMetricModule`` drops the lifetime samples of a group whose every metric reports its window
    only (``Windowed.drop_lifetime_samples``, a reset of the leader's lifetime after each step): no
    member reads that lifetime, so :func:`reset_cleared_states` must not take it for a reset of the
    leader alone.
    """
    metric.__dict__.pop("_cleared_at_reset", None)


def standalone_state(metric: Metric, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (``metric``'s ``__getstate__``) as a metric of its own, when ``metric`` reports another's states.

    A compute group member (see :func:`share_states_with`) holds its leader's states as of the
    module's last ``compute``; its copy (``copy.deepcopy(module.metrics["calibration"])``, pickle)
    is a standalone metric holding the leader's states now, so it computes what the module reports
    for it, without the reference (which copied the leader, and the module's bookkeeping, along).
    A ``RecMetricModule`` copied whole links its members' copies to their leaders' again.
    """
    if metric.__dict__.pop(_COPIED_WITH_SOURCE, False):  # in a whole module's copy: linked again there
        state.pop(_COPIED_WITH_SOURCE, None)
        return state
    source = state.pop("_states_source", None)
    if source is None:
        return state
    for name in ("_source_at_reset", "_cleared_at_reset"):
        state.pop(name, None)
    # the source's deferred states written first (a window's), under its own state names (``_defaults``'
    # order: Sum's `metric_state` names them as TorchMetrics does), then their checkpoint names: a member
    # and its leader may differ in validate_args, which names states in memory only
    # (TaskMetric._unchecked_state_name)
    theirs = source.__dict__.get("_saved_state_names") or {}
    ours = metric.__dict__.get("_saved_state_names") or {}
    states = {theirs.get(n, n): v for n, v in zip(source._defaults, source.metric_state.values(), strict=True)}
    for name in metric._defaults:
        value = states.get(ours.get(name, name))
        if isinstance(value, Tensor):  # copied: a copy pickled with its source must not share a state updated in place
            state[name] = value.detach().clone()
        elif isinstance(value, list):  # list chunks are never written in place: the copy's list holds them
            state[name] = list(value)
    state["_update_count"] = source._update_count or int(holds_anything(source))
    state["_computed"] = None
    return state


def derive_missing(
    states: dict[str, Any], derived: Mapping[str, tuple[Callable[..., Tensor], tuple[str, ...]]], prefix: str = ""
) -> None:
    """Add to ``states`` (a checkpoint's, under ``prefix``) each derived state it lacks but can compute.

    ``derived`` maps a state's name to ``(derive, sources)``: a checkpoint holding every source
    state and not the state itself gets ``derive(*sources)`` (a metric's states added after
    checkpoints were written, see ``GuardedMetric._derived_states``).
    """
    for name, (derive, sources) in derived.items():
        values = [states.get(prefix + source) for source in sources]
        if prefix + name not in states and all(isinstance(v, Tensor) for v in values):
            states[prefix + name] = derive(*values)


def note_settings(destination: Mapping[str, Any], prefix: str, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in the state_dict metadata entry of the module saved under ``prefix``.

    nn.Module keeps one metadata dict per module (``destination._metadata[prefix[:-1]]``, holding
    its ``version``); it travels with the state_dict through ``torch.save``/``torch.load``
    (``weights_only`` included) and comes back as ``local_metadata`` at load.
    """
    metadata = getattr(destination, "_metadata", None)
    entry = None if metadata is None else metadata.get(prefix[:-1])
    if entry is not None and settings:
        entry[_SETTINGS_KEY] = dict(settings)


def settings_problems(
    local_metadata: Mapping[str, Any],
    settings: Mapping[str, Any],
    prefix: str,
    owner: str,
    shown: Mapping[str, Any] | None = None,
) -> list[str]:
    """Messages for each setting :func:`note_settings` recorded that differs from ``settings`` (none if unrecorded).

    ``shown``: settings the checkpoint's state names show (see ``GuardedMetric._settings_shown_by``),
    compared where the metadata records no value of them (a plain dict, or a checkpoint written
    before the setting was recorded).
    """
    saved = local_metadata.get(_SETTINGS_KEY)
    recorded: Mapping[str, Any] = saved if isinstance(saved, Mapping) else {}
    problems = [
        f"setting mismatch for {prefix}{name}: the checkpoint was saved with {name}={recorded[name]!r}, "
        f"this {owner} has {name}={value!r}."
        for name, value in settings.items()
        if name in recorded and recorded[name] != value
    ]
    problems += [
        f"setting mismatch for {prefix}{name}: the checkpoint holds the states of {name}={(shown or {})[name]!r}, "
        f"this {owner} has {name}={value!r}."
        for name, value in settings.items()
        if name not in recorded and name in (shown or {}) and (shown or {})[name] != value
    ]
    return problems


# the suffix of a state named after validate_args=False in memory (TaskMetric._unchecked_state_name)
UNCHECKED_SUFFIX = "_unchecked"


class CheckpointedStates(Metric):
    """The checkpoint side of the package's metrics (see :class:`~torchmetrics_ext.metrics.base.GuardedMetric`)."""

    # nn.Module's checkpoint version (state_dict metadata); checkpoints of version 1 (or without
    # metadata) may hold states under names from before they carried their settings: those names
    # are mapped where they cannot be another setting's state (see _setting_state_name and
    # _default_settings_name)
    _version: int = _CHECKPOINT_VERSION
    # tensor states whose length follows the data (CategoricalCount's counts): checked by ndim only
    _data_sized_states: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        end_loads_in_a_hook(self)  # a load that fails for the metric's entries leaves it as it was
        # old state name -> current name, for checkpoints saved before a state was renamed (e.g.
        # after a setting that changes its values: see _setting_state_name)
        self._renamed_states: dict[str, str] = {}
        # (pattern of former names, current name), for checkpoints of any version: see _former_state_names
        self._former_patterns: list[tuple[re.Pattern[str], str]] = []
        # states added after checkpoints were written without them: name -> (derive, names of the
        # states it is computed from); such a checkpoint loads the state as derive(*those states)
        self._derived_states: dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]] = {}
        # plain name -> current name of states named after a setting that changes their values, which
        # version-1 checkpoints hold under the plain name for the default setting: not read (see
        # _default_settings_name)
        self._default_settings_names: dict[str, str] = {}
        # in-memory state name -> the name checkpoints give it, for states named in memory only after a
        # setting that changes how they update, not what they hold (see TaskMetric._unchecked_state_name)
        self._saved_state_names: dict[str, str] = {}

    def _memory_name(self, name: str) -> str | None:
        """The in-memory name of the state checkpoints call ``name``, where only memory names it otherwise.

        A validated metric's state ``x`` is also ``x_unchecked``, as the unvalidated one names it in memory:
        TorchMetrics' explicit compute groups (``MetricCollection(..., compute_groups=[["a", "b"]])``) write the
        first member's states into the others under its names.
        """
        saved_names = self.__dict__.get("_saved_state_names")
        if saved_names:
            ours = f"{name}{UNCHECKED_SUFFIX}"
            return ours if saved_names.get(ours) == name else None
        if name.endswith(UNCHECKED_SUFFIX):
            defaults = self.__dict__.get("_defaults") or {}
            plain = name[: -len(UNCHECKED_SUFFIX)]
            return plain if plain in defaults and name not in defaults else None
        return None

    def _checkpoint_name(self, name: str) -> str:
        """The name checkpoints give the state ``name`` (its in-memory name), for load messages and missing keys."""
        saved_names = self.__dict__.get("_saved_state_names")
        return saved_names.get(name, name) if saved_names else name

    def __getattr__(self, name: str) -> Any:
        """A state read under its checkpoint name (``AUC(validate_args=False).preds``), as with either setting.

        Only reached where ordinary lookup fails (never on the update path); anything else is
        ``torch.nn.Module``'s lookup.
        """
        ours = self._memory_name(name)
        if ours is not None:
            return self.__dict__[ours]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        """A state written under its checkpoint name is written to the state (see :meth:`__getattr__`).

        A plain attribute of that name would shadow the state for reads while the metric kept
        updating and computing the state itself.
        """
        # an unvalidated metric's checkpoint names, or a validated one's states under the unvalidated names
        if self.__dict__.get("_saved_state_names") or name.endswith(UNCHECKED_SUFFIX):
            name = self._memory_name(name) or name
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        """TorchMetrics' state for copies and pickles; a metric reporting another's states copies as its own.

        See :func:`standalone_state`: a compute group member copied alone holds its leader's states.
        """
        return drop_pending_load(standalone_state(self, super().__getstate__()))

    def _setting_state_name(self, name: str, setting: str, former: str | None = None) -> str:
        """``name`` followed by ``setting`` (when not empty): the name of a state whose values depend on it.

        :class:`~torchmetrics.MetricCollection` merges metrics into one compute group when their
        state names agree and their states are equal after the first update, which settings that
        change the states (a threshold, ``from_logits``, a bin range, a warm-up...) can happen to
        leave equal (an empty batch, all-zero weights, no score between two thresholds, the
        first steps of a warm-up). A state named after its setting is never merged with another
        setting's. ``former``: the state's name in checkpoints written before it carried the
        setting (default ``name``); ``load_state_dict`` accepts it from such checkpoints (version
        1 or no metadata), not from later ones, where it is another setting's state. Only for a
        setting that leaves the state's values as they are (``from_logits``, a warm-up), or one
        that named the state together with version 2: other settings named their states while
        checkpoints were still of version 1, where the former name may be the default setting's
        state (see :meth:`_default_settings_name`).
        """
        renamed = f"{name}_{setting}" if setting else name
        former = name if former is None else former
        if former != renamed:
            self._renamed_states[former] = renamed
        return renamed

    def _default_settings_name(self, plain: str, name: str) -> None:
        """State ``name`` is named after a setting that changes its values; ``plain`` is the default setting's name.

        Version-1 checkpoints were written both before such a setting named the state (``plain``
        for every value of it) and after (``plain`` for the default value only), and nothing in
        them tells the two apart. ``plain`` is therefore read as the default setting's state only,
        never as ``name`` (that gave wrong values for a checkpoint of the default settings loaded
        into others: a binned AUC's ``hist`` read as ``hist_probability``); a version-1 checkpoint
        holding ``plain`` for this metric gets a note saying how to load it (rename the key to
        ``name``) when it was written before the names carried the setting, with this setting.
        Settings that leave a state's values as they are (``from_logits``: the sums are of
        probabilities either way) go through :meth:`_setting_state_name`'s ``former``.
        """
        if plain != name:
            self._default_settings_names[plain] = name

    def _load_former_names(self, name: str, pattern: str) -> None:
        """Load state ``name`` from checkpoints (of any version) that hold it under a name matching ``pattern``.

        For a setting that named a state and no longer changes it (``RecalibratedCalibration``'s
        former ``eta``): checkpoints saved with any value of it still load. ``pattern`` is a regular
        expression matched against whole state names.
        """
        self._former_patterns.append((re.compile(pattern), name))

    def _former_state_names(self, saved: Iterable[str]) -> dict[str, str]:
        """``{saved name: state name}`` for the ``saved`` state names that are former names of this metric's states.

        Only for states ``saved`` does not hold under their current name (see :meth:`_load_former_names`).
        """
        saved = list(saved)
        found: dict[str, str] = {}
        for pattern, name in getattr(self, "_former_patterns", ()):  # metrics pickled before it existed
            if name not in saved:
                match = next((n for n in saved if n not in self._defaults and pattern.fullmatch(n)), None)
                if match is not None:
                    found[match] = name
        return found

    def _names_read_from(self, saved: Iterable[str], version: int) -> set[str]:
        """The state names this metric reads from a checkpoint of nn.Module ``version`` holding states ``saved``.

        ``saved`` with its former names mapped (:meth:`_renamed_in`, :meth:`_former_state_names`)
        and the states derived at load (``_derived_states``) added, as ``load_state_dict`` does.
        """
        names = set(saved)
        names |= {new for old, new in self._renamed_in(version).items() if old in names}
        names |= set(self._former_state_names(saved).values())
        for name, (_, sources) in getattr(self, "_derived_states", {}).items():
            if all(source in names for source in sources):
                names.add(name)
        return names

    def _renamed_in(self, version: int) -> dict[str, str]:
        """Former -> current names of the states a checkpoint of nn.Module ``version`` may hold under a former name.

        Setting renames (:meth:`_setting_state_name`) only for checkpoints written before the
        settings named the states (version 1): in later ones a former name is another setting's
        state. Other renames go through :meth:`_load_former_names` (every version).
        """
        return dict(self._renamed_states) if version < _CHECKPOINT_VERSION else {}

    def _checkpoint_settings(self) -> dict[str, Any]:
        """Settings a checkpoint records and ``load_state_dict`` requires equal (plain Python values).

        Only what the state names and shapes cannot show: a setting that changes a state's name
        or shape is already checked through them. A setting that changes which states a metric
        holds without naming them (a mode whose states are some of another mode's) is recorded
        here and told by :meth:`_settings_shown_by` in checkpoints that do not record it.
        """
        return {}

    def _settings_shown_by(self, saved: Collection[str]) -> dict[str, Any]:
        """Settings of :meth:`_checkpoint_settings` that a checkpoint's state names ``saved`` show (default: none).

        Compared with this metric's where the checkpoint's metadata records no value of them (a
        plain dict, or one written before the setting was recorded): a checkpoint of another mode
        whose states share names with this one's (an exact ranking metric's and a
        ``queries_complete_per_batch`` one's sums) is then refused as other settings, not loaded
        as this metric's states or started afresh as an older format.
        """
        return {}

    def _required_states(self) -> list[str]:
        """The states a checkpoint of this metric holds: its persistent ones (every state if none is persistent).

        A state declared with ``persistent=False`` is never saved, so a checkpoint without it is
        whole; a metric with no persistent state (TorchMetrics' default) saved nothing itself,
        and a checkpoint of it (saved persistent) holds every state.
        """
        persistent = [name for name in self._defaults if self._persistent[name]]
        return persistent or list(self._defaults)

    def _merged_kind(self) -> str:
        """The metric another one must be to merge into this one: its class (a wrapper adds the wrapped metric's)."""
        return type(self).__name__

    def state_dict(  # type: ignore[override]  # TorchMetrics' signature
        self, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """TorchMetrics' ``state_dict``; states named after a setting in memory only keep their checkpoint names.

        See ``_saved_state_names`` (``TaskMetric._unchecked_state_name``): TorchMetrics writes the states
        last, here renamed in place, in their order.
        """
        destination = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        saved_names = self.__dict__.get("_saved_state_names")
        if saved_names:
            own = [name for name in self._defaults if prefix + name in destination]
            entries = [destination.pop(prefix + name) for name in own]
            for name, value in zip(own, entries, strict=True):
                destination[prefix + saved_names.get(name, name)] = value
        return destination

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        note_settings(destination, prefix, self._checkpoint_settings())
        metadata = getattr(destination, "_metadata", None)
        entry = None if metadata is None else metadata.get(prefix[:-1])
        if entry is not None:
            entry[_METRIC_KEY] = self._merged_kind()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load this metric's entries (:meth:`_load_checked`), all or nothing in any load (:func:`load_own_entries`).

        A load that fails for its entries (refused, or strict with one of its keys missing or
        unexpected) leaves the metric as it was, also when a parent module is loaded.
        """
        args = (state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        load_own_entries(self, prefix, error_msgs, lambda: self._load_checked(*args))

    def _load_checked(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load states after checking them against this metric; map renamed states of old checkpoints.

        A checkpoint written before state names carried their settings (version 1, or a plain
        dict without metadata), or before a state was renamed otherwise (:meth:`_load_former_names`),
        holds a renamed state under its former name: it is read from there, unless that name is
        still one of this metric's states (another setting's).
        Problems (see the class docstring) go to ``error_msgs`` and nothing of this metric loads.
        A checkpoint holding only some of the states loads none of them: the metric starts afresh.
        """
        version = local_metadata.get("version", 1)
        for old, new in self._renamed_in(version).items():
            if prefix + old in state_dict and prefix + new not in state_dict and old not in self._defaults:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        if getattr(self, "_former_patterns", None):  # states renamed since, at any version
            saved = [k[len(prefix) :] for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]
            for old, new in self._former_state_names(saved).items():
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        derive_missing(state_dict, getattr(self, "_derived_states", {}), prefix)
        if version < _CHECKPOINT_VERSION:
            self._note_default_settings_names(state_dict, prefix)
        present = [name for name in self._defaults if prefix + name in state_dict]
        problems: list[str] = []
        if present:  # else nothing of it loads (not persistent)
            # other recorded settings explain any other shape: the states are checked when the settings agree
            saved = [k[len(prefix) :] for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]
            shown = self._settings_shown_by(saved)
            problems = synced_problems([self], prefix, type(self).__name__) or self._metric_problems(
                local_metadata, prefix
            )
            problems = problems or settings_problems(
                local_metadata, self._checkpoint_settings(), prefix, type(self).__name__, shown
            )
            problems = problems or self._state_problems(state_dict, prefix) or self._dtype_problems(state_dict, prefix)
        if problems:
            error_msgs.extend(problems)
            for name in self._defaults:
                state_dict.pop(prefix + name, None)  # reported above, not as unexpected keys as well
            return
        persistent = [name for name in self._defaults if self._persistent[name]]
        if present and not set(self._required_states()) <= set(present):  # some states only: all of them or none
            self._start_afresh(state_dict, prefix, present)
            missing_keys.extend(prefix + self._checkpoint_name(name) for name in persistent)
        else:
            # a persistent state (saved by state_dict) absent from the checkpoint is a missing key, as a
            # parameter's would be: TorchMetrics loads only the states it finds and would start it over
            missing_keys.extend(
                prefix + self._checkpoint_name(name) for name in persistent if prefix + name not in state_dict
            )
        # TorchMetrics makes the checkpoint's tensors the states themselves: an update (in place)
        # would then write into the checkpoint and into every metric loaded from it, e.g. the
        # metric whose `state_dict()` it is. Each state is loaded as its own copy, on this
        # metric's device (as nn.Module copies a checkpoint into its parameters).
        # The copies are ordinary tensors under inference mode too (a later update writes into them).
        device = self.device
        with torch.inference_mode(False):
            for name in self._defaults:
                value, default = state_dict.get(prefix + name), self._defaults[name]
                if isinstance(value, Tensor):  # a narrower floating dtype (see _dtype_problems) as this state's
                    dtype = default.dtype if isinstance(default, Tensor) else value.dtype
                    state_dict[prefix + name] = value.to(device, dtype, copy=True)
                elif isinstance(value, list):
                    state_dict[prefix + name] = [v.to(device, copy=True) for v in value]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._computed = None  # a value computed before the load is not the loaded states' value
        if present:
            _count_states_written(self)

    def _metric_problems(self, local_metadata: Mapping[str, Any], prefix: str) -> list[str]:
        """The error for a checkpoint that records another metric's states (see ``merge_state``); none if unrecorded."""
        saved, ours = local_metadata.get(_METRIC_KEY), self._merged_kind()
        if not isinstance(saved, str) or saved == ours:
            return []
        return [
            f"metric mismatch for {prefix[:-1] or ours}: the checkpoint holds the states of {article(saved)}, this is "
            f"{article(ours)}: states of the same names may hold other data or compute another value."
        ]

    def _start_afresh(self, state_dict: dict[str, Any], prefix: str, present: list[str]) -> None:
        """Read none of the ``present`` states (only some of this metric's): reset the metric and say why."""
        absent = [name for name in self._required_states() if name not in present]
        # other names under the metric's prefix: another setting's states (else an older format's)
        others = sorted(
            k[len(prefix) :]
            for k in state_dict
            if k.startswith(prefix)
            and "." not in k[len(prefix) :]
            and k[len(prefix) :] not in (*self._defaults, "_extra_state")
        )
        for name in present:
            del state_dict[prefix + name]  # not read: the missing keys say so, not as unexpected keys as well
        self.reset()
        saved_with = self._settings_named_by(others) if others else ""
        why = (
            f"and {others}: a checkpoint of other settings{f' ({saved_with})' if saved_with else ''}"
            if others
            else "only: an older format of this metric, written before the others were added (or a checkpoint of "
            "other settings that hold fewer states)"
        )
        note_checkpoint(
            f"{prefix[:-1] or type(self).__name__}: the checkpoint holds {[self._checkpoint_name(n) for n in present]} "
            f"of this {type(self).__name__}{self._settings_text()}'s states {why}; without "
            f"{[self._checkpoint_name(n) for n in absent]} they cannot be "
            "resumed, so none is read: all of its states are missing keys, which strict=True refuses, leaving the "
            "metric as it was; strict=False resumes the rest of it and the metric starts afresh."
        )

    def _settings_named_by(self, others: Sequence[str]) -> str:
        """The settings that the checkpoint's state names ``others`` (not this metric's) were saved with, as text.

        For the note of a checkpoint of other settings (:meth:`_start_afresh`): a metric whose state
        names carry a setting (``MulticlassRecallAtK``'s ``hit_sum_k5_of20``) says which value the
        checkpoint holds and which this metric has. Empty when the names tell nothing (the default).
        """
        return ""

    def _note_default_settings_names(self, state_dict: Mapping[str, Any], prefix: str) -> None:
        """Note a version-1 checkpoint's default-settings names of states this metric names after its settings."""
        found = {
            plain: name
            for plain, name in getattr(self, "_default_settings_names", {}).items()
            if prefix + plain in state_dict and prefix + name not in state_dict and plain not in self._defaults
        }
        if found:
            note_checkpoint(
                f"{prefix[:-1] or type(self).__name__}: in a version-1 checkpoint {sorted(found)} are the states of "
                "the default settings (checkpoints written before and after the states were named after their "
                f"settings cannot be told apart), so they are not read as this {type(self).__name__}"
                f"{self._settings_text()}'s {sorted(found.values())}. A checkpoint written before the states carried "
                f"their settings, with this metric's settings, loads once its keys are renamed: "
                + ", ".join(f"`{prefix}{plain}` to `{prefix}{name}`" for plain, name in sorted(found.items()))
                + "."
            )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; notes of a checkpoint not read (:func:`note_checkpoint`) join its error.

        A load that raises changes nothing: the metric's states and bookkeeping (update count,
        cached value, reset marks) are put back as they were before the call. ``nn.Module`` raises
        for missing keys only after every state has been read, so a strict load of a checkpoint
        that starts the metric afresh (another setting's states, :meth:`_start_afresh`) would
        otherwise leave it reset. A load through a parent module is put back from the metric's load
        post-hook instead (see :meth:`_load_from_state_dict`).
        """
        load = super().load_state_dict
        restore = snapshot(self)
        try:
            with putting_back_whole(self):  # so the metrics it loads record nothing of their own
                return load_explained(lambda: load(state_dict, strict=strict, assign=assign))
        except BaseException:
            restore()
            raise

    def _state_problems(self, state_dict: Mapping[str, Any], prefix: str, origin: str = "checkpoint") -> list[str]:
        """What is wrong with the checkpoint's states for this metric: shapes of tensor states, list states' type.

        ``origin`` names where the states come from in the messages (``"merged metric"`` for ``merge_state``).
        """
        problems = []
        for name, default in self._defaults.items():
            if prefix + name not in state_dict:
                continue
            value = state_dict[prefix + name]
            key = prefix + self._checkpoint_name(name)  # as the checkpoint names it, for the messages
            if isinstance(default, Tensor):
                if not isinstance(value, Tensor):
                    problems.append(
                        f"state mismatch for {key}: the {origin} holds {article(type(value).__name__)}, "
                        f"this {type(self).__name__} expects a tensor of shape {tuple(default.shape)}."
                    )
                elif value.shape != default.shape and not (
                    name in self._data_sized_states and value.ndim == default.ndim
                ):
                    problems.append(
                        f"size mismatch for {key}: the {origin}'s state has shape {tuple(value.shape)}, "
                        f"this {type(self).__name__}{self._settings_text()} expects {tuple(default.shape)}."
                    )
            elif not (
                isinstance(value, Tensor) or (isinstance(value, list) and all(isinstance(v, Tensor) for v in value))
            ):
                problems.append(
                    f"state mismatch for {key}: the {origin} holds {article(type(value).__name__)}, "
                    f"this {type(self).__name__} expects a list of tensors."
                )
        return problems or self._sample_row_problems(state_dict, prefix, origin)

    def _dtype_problems(self, state_dict: Mapping[str, Any], prefix: str, origin: str = "checkpoint") -> list[str]:
        """The checkpoint's states in a dtype this metric does not load (see ``utilities/state_dtypes.py``).

        A tensor state is compared with the dtype this metric keeps it in now (after any
        ``set_dtype``), a list state's chunks with the dtype it syncs as. ``origin`` names where the
        states come from in the messages (``"merged metric"`` for ``merge_state``).
        """
        declared = self._chunk_dtypes()
        owner = f"{type(self).__name__}{self._settings_text()}"
        problems = []
        for name, default in self._defaults.items():
            if prefix + name in state_dict:
                expected = default.dtype if isinstance(default, Tensor) else declared.get(name)
                value = state_dict[prefix + name]
                chunks = not isinstance(default, Tensor)
                key = prefix + self._checkpoint_name(name)
                problem = dtype_problem(key, value, expected, owner, chunks=chunks, origin=origin)
                if problem is not None:
                    problems.append(problem)
        return problems

    def _chunk_dtypes(self) -> Mapping[str, torch.dtype]:
        """The list states whose loaded chunks :meth:`_dtype_problems` checks, each with the dtype it syncs as."""
        return getattr(self, "_list_state_dtypes", {})

    def _values_per_sample(self) -> dict[str, int]:
        """List states of flat sample-major rows and how many values each sample has in them (``num_tasks``).

        Their shapes record no task dimension; :meth:`_state_problems` checks that they hold whole
        samples, and the same number of samples in each. Empty for metrics without such states.
        """
        return {}

    def _sample_row_problems(self, state_dict: Mapping[str, Any], prefix: str, origin: str) -> list[str]:
        """Rows that cannot be this metric's samples: not whole samples of its ``num_tasks``, or unequal counts.

        A metric of another ``num_tasks`` whose rows happen to divide evenly is not seen here: a
        merged or loaded *metric* (or a checkpoint with its metadata) has its ``num_tasks`` compared.
        """
        samples: dict[str, int] = {}
        for name, width in self._values_per_sample().items():
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor):
                value = [value]
            if not isinstance(value, list):
                continue
            total = sum(chunk.numel() for chunk in value)
            if total % width:
                return [
                    f"state mismatch for {prefix}{self._checkpoint_name(name)}: the {origin} holds {total} values, "
                    "not whole samples of "
                    f"{width} values each (this {type(self).__name__}{self._settings_text()}): a metric of another "
                    "num_tasks."
                ]
            samples[self._checkpoint_name(name)] = total // width
        if len(set(samples.values())) > 1:
            return [
                f"state mismatch: the {origin}'s states hold different numbers of samples for this "
                f"{type(self).__name__}{self._settings_text()} ({samples}): a metric of another num_tasks."
            ]
        return []

    def _settings_text(self) -> str:
        """`` (num_tasks=3, ...)``: the recorded settings, for messages (empty if none)."""
        settings = self._checkpoint_settings()
        return f" ({', '.join(f'{k}={v!r}' for k, v in settings.items())})" if settings else ""
