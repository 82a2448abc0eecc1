"""How a :class:`~torchmetrics_ext.module.RecMetricModule` loads a checkpoint: all or nothing, across windows.

:class:`CheckpointLoading` is the module's ``load_state_dict`` side: it refuses a checkpoint of
other tasks, reads a compute group's states saved under another member, resumes the lifetime
across a window change, and puts the module back whole when any of its metrics refuses its
entries, also when a parent module (Lightning's checkpoint restore) loads it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Collection, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric

from torchmetrics_ext.metrics._checkpoints import load_explained, note_saved_ranks, saved_ranks
from torchmetrics_ext.utilities.checks import as_int
from torchmetrics_ext.utilities.distributed import _world
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.frames import running_locals
from torchmetrics_ext.utilities.load_guard import guard_descendant_loads, loading_strictly
from torchmetrics_ext.utilities.snapshot import snapshot
from torchmetrics_ext.utilities.warnings import warn_at_user
from torchmetrics_ext.utilities.window_resume import (
    Saved,
    as_plain,
    as_windowed,
    lifetime_names,
    move_entries,
    saved_window_rule,
    undo_entries,
)
from torchmetrics_ext.wrappers.windowed import Windowed

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecTaskInfo

__all__ = ["AFRESH_ON_LOAD", "CheckpointLoading"]

# the note of a strict load of the module's own, refused for its keys (see _after_load, load_state_dict)
_STRICT_HINT = "_strict_keys_hint"
# where a load keeps, from the module's `_load_from_state_dict` to its end, what puts it back (see _after_load):
# (prefix, restore, error_msgs, errors before, end it: remove the descendants' load wrappers and put back
# the checkpoint metadata moved with a window change, the units whose window restarts after a window change)
_LOAD_GUARD = "_load_guard"
# what the module's last successful load did not resume, {metric name (None: the throughput): parts}: see _afresh
AFRESH_ON_LOAD = "_afresh_on_load"
# (rank, world size) of the process that saved the states last loaded ((0, 1): one process, no group), when
# the checkpoint records it; see `_warn_other_rank`
SAVED_BY = "_saved_by"


class CheckpointLoading(nn.Module):
    """The checkpoint side of ``RecMetricModule``: its ``load_state_dict``, ``_load_from_state_dict`` and extra state.

    The module provides the task list, its metric units by name (:meth:`_unit`, :meth:`_copies`),
    its compute groups and its step counter.
    """

    tasks: tuple[RecTaskInfo, ...]
    ranking: nn.ModuleDict
    _groups: list[list[str]]
    _leader: dict[str, str]
    _step: int
    _subsets: dict[str, tuple[int, ...]]
    _names: list[str]
    throughput: Metric | None
    window_size: int | None

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_after_load)

    def _unit(self, name: str) -> Metric:  # pragma: no cover - provided by the module
        raise NotImplementedError

    def _copies(self, name: str) -> list[Metric]:  # pragma: no cover - provided by the module
        raise NotImplementedError

    def _all_units(self) -> Iterator[Metric]:  # pragma: no cover - provided by the module
        raise NotImplementedError

    def _mark_members(self, keep_linked: bool = False) -> None:  # pragma: no cover - module
        raise NotImplementedError

    def _updated_units(self) -> Iterator[tuple[Metric, str, bool]]:  # pragma: no cover - provided by the module
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - provided by the module
        raise NotImplementedError

    def _own_storages(self) -> None:  # pragma: no cover - provided by the module
        raise NotImplementedError

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
        """Refuse a checkpoint of other tasks; read a compute group's states saved under another member of the group.

        Both before any child loads. Every state is laid out by task position (a ``(T,)`` sum, the
        ``T`` values of each sample, ``ranking.<name>.<i>``), so a checkpoint saved with other task
        names or another order (recorded in ``_extra_state``) would report one task's history under
        another's key: it goes to ``error_msgs`` (``load_state_dict`` raises, ``strict`` or not)
        and nothing of the module loads. A checkpoint of an earlier version records no task names
        and is not checked for them (another number of tasks is still refused by the metrics).

        A group's states are saved once, under its leader, the first of its metrics in the order
        given. A checkpoint saved with another first member (a metric added since in front of the
        group, the metrics reordered, or the saved first member removed since) holds them under that
        metric's name: they are the same statistics (equal ``shared_statistics_key``, hence equal
        state names, which identify a removed metric's), so they load as the leader's. Also when a
        parent module loads this one (Lightning's checkpoint restore).

        Versions before the window ring was saved with the lifetime and window states only wrote a
        ring alone (``_extra_state``) for every other member of a windowed group: such a ring holds
        none of the group's states (a ``Windowed`` loads nothing from it), so it does not make a
        member the one that saved them, and it gives way to the saved states.

        All or nothing, also when a parent module loads this one: torch loads each child in turn and
        raises at the end, so the module's in-memory state is recorded here (:func:`snapshot`, no
        tensor copied) and put back after its last child has loaded if any of them refused its
        entries (an error added under this prefix) or, in a strict load, a key under this prefix is
        missing or unexpected (see :func:`_after_load`). A descendant whose load raises ends the
        load before that: its exception puts the module back first
        (:func:`~torchmetrics_ext.utilities.load_guard.guard_descendant_loads`).
        """
        self._end_load()  # what a load ended outside every wrapper left (see utilities/load_guard.py)
        restore = snapshot(self)

        def abort() -> None:  # a descendant raised: this load ends here
            if self.__dict__.get(_LOAD_GUARD) is guard:
                del self.__dict__[_LOAD_GUARD]
                finish()
                restore()

        edits: list[Any] = []  # the checkpoint metadata moved with a window change, put back at the end
        emptied: list[Windowed] = []  # units whose window starts empty (a window change): see _after_load
        unguard = guard_descendant_loads(self, abort, errors=error_msgs)

        def finish() -> None:  # the load ended: no wrapper left, the caller's metadata as it was given
            unguard()
            undo_entries(edits)

        guard = (prefix, restore, error_msgs, len(error_msgs), finish, emptied)
        self.__dict__[_LOAD_GUARD] = guard
        try:
            args = (local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            self._load_own_entries(state_dict, prefix, *args, edits=edits, emptied=emptied)
        except BaseException:
            self._end_load(put_back=True)
            raise

    def _load_own_entries(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
        edits: list[Any],
        emptied: list[Windowed],
    ) -> None:
        """The body of :meth:`_load_from_state_dict`: the task check, the groups' states, a window change, the load.

        ``edits`` and ``emptied`` record a window change (see :meth:`_resume_window_change`).
        """
        problem = self._refused_extra_state(
            state_dict.get(prefix + "_extra_state"), prefix, _saved_metrics(state_dict, prefix)
        )
        if problem is not None:
            error_msgs.append(problem)
            for key in [k for k in state_dict if k.startswith(prefix)]:
                del state_dict[key]  # nothing loads: neither the step counter nor any metric
            self.__dict__["_refused_prefix"] = prefix  # the metrics' "missing keys" are not the reason
            return
        if any(key.startswith(prefix) for key in state_dict):
            # the states loaded now replace those whose saving rank was recorded: only this load's
            # `_extra_state` (`set_extra_state`) records one again; a checkpoint without it (an earlier
            # version's) records none. A load holding nothing of the module leaves its states, and the record.
            self.__dict__.pop(SAVED_BY, None)
        top = f"{prefix}metrics."
        metadata = _load_metadata(state_dict)
        saved_names = {key[len(top) :].split(".", 1)[0] for key in state_dict if key.startswith(top)}
        dropped = sorted(saved_names - set(self._leader))  # saved metrics no longer configured

        def saved_under(head: str) -> tuple[list[str], bool]:
            """The checkpoint's keys under ``head``, and whether they hold states (not a ring alone)."""
            keys = [key for key in state_dict if key.startswith(head)]
            return keys, any(key != head + "_extra_state" for key in keys)

        for group in self._groups:
            lead = f"{top}{group[0]}."
            lead_keys, holds = saved_under(lead)
            if holds:
                continue
            # a member that saved the group's states, else a metric no longer configured that saved
            # exactly the states this group's leader holds (the same statistics: their names say so,
            # with or without a window)
            expected = lifetime_names(set(self._unit(group[0]).state_dict(keep_vars=True)))
            for name in [*group[1:], *dropped]:
                saved = f"{top}{name}."
                keys, holds = saved_under(saved)
                if holds and (name in group or lifetime_names({key[len(saved) :] for key in keys}) == expected):
                    for key in lead_keys:  # the leader's ring alone, written by an earlier version
                        del state_dict[key]
                    for key in keys:
                        state_dict[lead + key[len(saved) :]] = state_dict.pop(key)
                    # their version and recorded settings (a window's size: see _resume_window_change) with them
                    move_entries(metadata, saved, lead, edits)
                    if name in dropped:
                        dropped.remove(name)
                    break
        self._resume_window_change(state_dict, prefix, edits, emptied, metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _resume_window_change(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        edits: list[Any],
        emptied: list[Windowed],
        metadata: MutableMapping[str, Any] | None,
    ) -> None:
        """Map each metric's checkpoint saved with another window onto this module's: the lifetime resumes.

        * Saved with a window, loaded without one: the lifetime's states (``lifetime.<state>``) load
          as the metric's; the window's states and its ring are not needed and are dropped.
        * Saved without a window, loaded with one: the metric's states load as the lifetime; the
          window starts empty (as after ``reset``) and fills from the next steps.
        * Saved with another window (``window_size`` or ``max_updates``, as the checkpoint records
          them): the lifetime resumes and the window starts empty. A ring of another size cannot be
          carried exactly (a smaller window may need part of an update that the old ring holds summed
          with the rest of it; a larger one, updates the old ring had already dropped).

        Each metric reads all of its states or none as before, and a strict load then finds no
        missing or unexpected key. The checkpoint's metadata (version, recorded settings) moves with
        the states for the length of the load (see :mod:`~torchmetrics_ext.utilities.window_resume`). A
        unit given an empty window is appended to ``emptied``: once the load has succeeded its window is
        started over the loaded lifetime (see :func:`_restart_window`).
        """
        metadata = _load_metadata(state_dict)
        for head, unit in self._unit_prefixes(prefix):
            saved = Saved.under(state_dict, head)
            if not isinstance(unit, Windowed):
                own_extra_state = type(unit).get_extra_state is not nn.Module.get_extra_state
                if not saved.plain and (saved.lifetime or (saved.ring and not saved.window and not own_extra_state)):
                    as_plain(state_dict, head, metadata, edits, drop_ring=not own_extra_state)
                continue
            rule = {"window_size": unit.window_size, "max_updates": unit.max_updates}
            if saved.lifetime:
                recorded = saved_window_rule(metadata, head)
                if recorded is None or recorded == tuple(rule.values()):
                    continue  # the same window (or unrecorded: the wrapper's own checks apply)
            elif not saved.plain or saved.window:
                continue
            unit.reset()  # its empty window and ring (the module is put back if the load fails)
            as_windowed(state_dict, head, unit.state_dict(prefix=head), rule, metadata, edits)
            emptied.append(unit)

    def _unit_prefixes(self, prefix: str) -> Iterator[tuple[str, Metric]]:
        """``(prefix of its entries, unit)`` for every metric unit (not the throughput), group members included."""
        for name in self._leader:
            yield f"{prefix}metrics.{name}.", self._unit(name)
        for name in self.ranking:
            for i, unit in enumerate(self._copies(name)):
                yield f"{prefix}ranking.{name}.{i}.", unit

    def _refused_extra_state(self, extra_state: Any, prefix: str, saved_metrics: Collection[str] = ()) -> str | None:
        """The error for a checkpoint whose ``_extra_state`` records other task names or order; ``None`` if not.

        Also for an ``_extra_state`` that is not this module's (not a dict holding a whole, non-negative
        ``step``, and a list of task names if any): ``set_extra_state`` could not restore it. ``metric_tasks``
        are compared for the metrics both hold (``saved_metrics``: those with entries in the checkpoint): a
        metric added since the checkpoint has no saved states to misplace (``strict=False`` starts it afresh),
        and one the checkpoint holds but this module does not is an unexpected key.
        """
        malformed = _malformed_extra_state(extra_state)
        if malformed is not None:
            return (
                f"unreadable _extra_state for {prefix[:-1] or 'RecMetricModule'}: expected what "
                "RecMetricModule.get_extra_state saves, a dict {'step': <whole number >= 0>, 'tasks': [<task names>]}, "
                f"got {malformed}. Nothing of the module was loaded."
            )
        saved = extra_state.get("tasks") if isinstance(extra_state, Mapping) else None
        names = [task.name for task in self.tasks]
        if saved is None or list(saved) == names:
            if isinstance(extra_state, Mapping):
                # the tasks each metric reads (`metric_tasks`): a metric's states are kept by its tasks' positions
                saved_subsets = {k: list(v) for k, v in (extra_state.get("metric_tasks") or {}).items()}
                ours = self._metric_task_names()
                both = (set(saved_metrics) | set(saved_subsets)) & set(self._names)
                if any(saved_subsets.get(name) != ours.get(name) for name in both):
                    return (
                        f"metric_tasks mismatch for {prefix[:-1] or 'RecMetricModule'}: the checkpoint was saved with "
                        f"metric_tasks {saved_subsets or None}, this RecMetricModule has "
                        f"{ours or None}. A metric's states are kept by the position of the tasks "
                        "it reads, so a metric would resume another task's values: build the module with the "
                        "checkpoint's metric_tasks. Nothing of the module was loaded."
                    )
            return None
        return (
            f"task mismatch for {prefix[:-1] or 'RecMetricModule'}: the checkpoint was saved with tasks "
            f"{list(saved)}, this RecMetricModule has tasks {names}. Its states are kept by task position, so each "
            "task would resume another task's values: build the module with the checkpoint's tasks, in the same "
            "order. Nothing of the module was loaded."
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; missing metric states say how to resume with a metric added since.

        A metric reads all of its states from the checkpoint or none: one whose states the checkpoint
        lacks, or holds only some of (another setting's, an older format's), starts afresh with
        ``strict=False``, its states listed as missing keys; the notes of those it held join the
        error (``strict=True``) or are warned.

        A checkpoint saved with another window (``window_size`` given or not, or another size) resumes
        each metric's lifetime; a window added or resized starts empty and fills from the next steps
        (see :meth:`_resume_window_change`).

        All or nothing: a load that raises (a checkpoint refused by one metric, missing keys with
        ``strict=True``, an ``_extra_state`` refused) leaves every metric, window, the throughput
        and the step counter as they were, although the metrics load one after another; the error
        is raised as it was.
        """
        if not self.__dict__.get("_storages_owned", False):  # a spawned rank's first write (see `_own_storages`)
            self._own_storages()
        load = super().load_state_dict
        self.__dict__.pop(_STRICT_HINT, None)
        try:
            return load_explained(lambda: load(state_dict, strict=strict, assign=assign))
        except BaseException as error:
            # a refused load was put back by `_after_load`, one a descendant's load or load post-hook
            # raised in by that load's wrapper; what else ended the load before either (an exception
            # between two loads, a hook registered during the load) is put back here
            self._end_load(put_back=True)
            hint = self.__dict__.pop(_STRICT_HINT, None)
            if isinstance(error, RuntimeError) and strict and hint is not None:
                raise RuntimeError(f"{error}\n{hint}") from None
            if not (isinstance(error, RuntimeError) and strict and "Missing key(s)" in str(error)):
                raise
            raise RuntimeError(
                f"{error}\nThe checkpoint has no states, or not all of them, for some metrics: added since it was "
                "saved, built with other settings, or saved in an older format of the metric. To resume the rest and "
                "start those metrics afresh (all of their states at their defaults), load with strict=False (in "
                "Lightning: set `self.strict_loading = False` in the LightningModule)."
            ) from None

    def _end_load(self, put_back: bool = False) -> None:
        """End the load recorded in ``_LOAD_GUARD``, if any: undo its wrappers and metadata edits, put the module back.

        The module is put back if ``put_back``; the descendants' load wrappers are removed and the
        checkpoint metadata moved for a window change is put back in any case.
        """
        guard = self.__dict__.pop(_LOAD_GUARD, None)
        if guard is not None:
            guard[4]()
            if put_back:
                guard[1]()

    def load_saved_ranks(self, saved: Sequence[Mapping[str, Any]], strict: bool = True) -> None:
        """Resume from every rank's ``state_dict`` of a run on another number of ranks (without Lightning).

        Call it on every rank of the new process group, each with the whole list (one ``state_dict()``
        per saved rank, in rank order). Rank 0 merges every saved rank's lifetime into its metrics (each
        metric's ``merge_state``: sums added, exact AUC rows, groups and sessions joined) and every other
        rank starts empty, so the synced lifetime values equal one process fed every sample seen before
        the checkpoint and since. Windows restart on every rank (the newest samples of another world's
        ranks have no order in this one), and so do the throughput's rates and window; its
        ``total_examples`` carries. Every rank takes the saved step counter, so the ranks keep one
        compute cadence (a fresh module on some ranks and a loaded one on others would compute at
        different steps and wait for each other in the sync). In one process, or on the same number
        of ranks, it merges all the same: to resume each rank's own states and windows on the same
        number of ranks, ``load_state_dict`` each rank's own instead.

        Args:
            saved: the ``state_dict()`` of this module saved by each rank of the earlier run.
            strict: as :meth:`load_state_dict`'s, for each saved ``state_dict``.

        Raises:
            WrongTypeError: (a ``TypeError`` and a ``ValueError``) ``saved`` is not a list of mappings.
            ValueError: ``saved`` is empty, or an entry holds no step counter.
            RuntimeError: a saved ``state_dict`` does not load (its error), or its states cannot be merged;
                raised on every rank (rank 0 says why), and the module is left as it was.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> def module():
            ...     return RecMetricModule(["click"], {"ctr": "ctr"}, window_size=8, throughput=False)
            >>> ranks = [module(), module()]  # a run on two ranks, saved per rank
            >>> ranks[0].update({"prediction": torch.tensor([0.5, 0.5]), "label": torch.tensor([1, 1])})
            >>> ranks[1].update({"prediction": torch.tensor([0.5, 0.5]), "label": torch.tensor([0, 1])})
            >>> resumed = module()  # resumed in one process
            >>> resumed.load_saved_ranks([rank.state_dict() for rank in ranks])
            >>> resumed.update({"prediction": torch.tensor([0.5, 0.5]), "label": torch.tensor([1, 0])})
            >>> {key: round(value.item(), 4) for key, value in resumed.compute().items()}  # the window restarted
            {'ctr/click': 0.6667, 'ctr/click/window': 0.5}
        """
        if isinstance(saved, Mapping) or not isinstance(saved, Sequence):
            raise WrongTypeError(
                f"Expected `saved` to be a list of state_dicts (one per saved rank), got {type(saved).__name__}."
            )
        if not saved:
            raise ValueError("Expected `saved` to hold at least one state_dict, got an empty list.")
        steps = []
        for i, states in enumerate(saved):
            if not isinstance(states, Mapping):
                raise WrongTypeError(
                    f"Expected `saved[{i}]` to be a state_dict (a mapping), got {type(states).__name__}."
                )
            extra = states.get("_extra_state")
            step = as_int(extra.get("step")) if isinstance(extra, Mapping) else None
            if step is None or step < 0:
                raise ValueError(
                    f"Expected `saved[{i}]` to be a RecMetricModule's state_dict, with its step counter under "
                    "'_extra_state' (saved from the module itself, not from a parent holding it), found none."
                )
            steps.append(step)
        world = _world()
        rank = 0 if world is None else world[0]
        restore = snapshot(self, writes_in_place=True)
        problem = None
        try:
            self._fold_saved_ranks(list(saved) if rank == 0 else [], strict=strict)
        except Exception as error:  # said to every rank below: none may go on alone
            problem = f"{type(error).__name__}: {error}"
        if world is not None:
            box = [problem]
            dist.broadcast_object_list(box, src=0)
            problem = box[0]
        if problem is not None:
            restore()
            raise RuntimeError(f"RecMetricModule.load_saved_ranks: the saved states cannot be merged ({problem}).")
        self._step = max(steps)  # the saved ranks' counters agree in a run whose ranks step together

    def _fold_saved_ranks(self, saved: Sequence[Mapping[str, Any] | None], strict: bool = True) -> None:
        """Hold the lifetime states of every saved rank at once, merged: a resume on another number of ranks.

        ``saved`` holds one ``state_dict`` of this module per rank of the run that saved them;
        ``None`` (at most one) stands for the states this module holds now (in Lightning, the model's
        ``state_dict``: saved rank 0's). Each is loaded into a scratch copy of the module (the same
        loading rules as :meth:`load_state_dict`, ``strict`` included) and every updated unit's
        lifetime is merged into this module's with the metric's own ``merge_state`` (each state's
        reduction: sums added, ``max``/``min``, samples joined), so that this module then holds
        what one process fed every saved rank's steps would. The windows start empty (a window of
        another world's steps has no meaning here), and so do the throughput's rates and window;
        its ``total_examples`` carries, summed. The step counter stays as it is.

        What was not resumed is recorded as a load records it (``AFRESH_ON_LOAD``): every window,
        the throughput, and each metric one of the loads started afresh. With ``saved`` empty (a
        rank other than 0 of such a resume: it starts empty, its lifetime is rank 0's) the metrics
        this module's own last load started afresh stay recorded: every rank loaded the same model
        states, so they are those rank 0 records, and no rank puts back their last logged values.

        Raises:
            ValueError: more than one ``None``; or an entry that does not load, or a metric whose
                states cannot be merged (also ``TypeError``/``RuntimeError`` from its
                ``merge_state``). The module is then left partly merged: the caller starts it afresh.
        """
        if sum(states is None for states in saved) > 1:
            raise ValueError("Expected at most one `None` (this module's own states) among the saved states.")
        keep_own = any(states is None for states in saved)
        throughput = self.throughput
        everything, window = frozenset(("lifetime", "window")), frozenset(("window",))
        own = dict(self.__dict__.get(AFRESH_ON_LOAD, {}))
        afresh: dict[str | None, frozenset[str]] = own if keep_own or not saved else {}
        total = torch.zeros((), dtype=torch.float64)
        if throughput is not None and keep_own:
            total = total + _total_examples(throughput)
        loaded = [states for states in saved if states is not None]
        # an empty copy to load the other ranks' states into (made before this module's own are merged into)
        scratch = copy.deepcopy(self) if loaded else None
        if keep_own:  # its lifetimes are saved rank 0's: kept, each window started empty over them
            for unit, _, _ in self._updated_units():
                if isinstance(unit, Windowed):
                    _restart_window(unit)
        else:
            self.reset()
        if throughput is not None:
            throughput.reset()  # reset() keeps it with key_style="torchrec"
        for states in loaded:
            assert scratch is not None
            scratch.reset()
            scratch.load_state_dict(states, strict=strict)
            for name, parts in scratch.__dict__.get(AFRESH_ON_LOAD, {}).items():
                afresh[name] = afresh.get(name, frozenset()) | parts
            for (ours, _, _), (theirs, _, _) in zip(self._updated_units(), scratch._updated_units(), strict=True):
                ours.merge_state(theirs)
            if throughput is not None and scratch.throughput is not None:
                total = total + _total_examples(scratch.throughput)
        if throughput is not None:
            states_now = {k: torch.zeros_like(v) for k, v in throughput.metric_state.items() if isinstance(v, Tensor)}
            states_now["total_examples"] = total.to(states_now["total_examples"].device)
            throughput.merge_state(states_now)
            afresh[None] = everything
        if self.window_size is not None:
            for name in [*self._names]:
                afresh[name] = afresh.get(name, frozenset()) | window
        self.__dict__[AFRESH_ON_LOAD] = afresh
        self.__dict__.pop(SAVED_BY, None)  # every saved rank's states merged, as meant: no other rank's to warn of
        self._mark_members()  # the groups' states were replaced through their leaders: nothing to say at compute

    def get_extra_state(self) -> Any:
        """The step counter (so ``should_compute`` keeps its cadence after a restore) and the task names, in order.

        ``load_state_dict`` refuses a checkpoint of other task names or order (see ``_load_from_state_dict``).
        Also the ``rank`` and ``world_size`` of the process that saves it (rank 0 of 1 in one process, a
        process group of one rank included): under DDP the states are that rank's share alone, and a rank
        that loads states another rank saved, or its own of another number of ranks, is warned of at its
        next compute (``_warn_other_rank``).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False)
            >>> module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})
            >>> module.get_extra_state()  # saved in one process: rank 0 of 1, the whole run's states
            {'step': 1, 'tasks': ['click'], 'rank': 0, 'world_size': 1}
        """
        state: dict[str, Any] = {"step": self._step, "tasks": [task.name for task in self.tasks]}
        subsets = self._metric_task_names()
        if subsets:  # only with `metric_tasks`: the checkpoints of other modules stay as they were
            state["metric_tasks"] = subsets
        # which share of which run these states are: this rank's under DDP, the whole run's in one process
        state["rank"], state["world_size"] = _world() or (0, 1)
        return state

    def _metric_task_names(self) -> dict[str, list[str]]:
        """``{metric: the task names it reads}`` for the metrics of ``metric_tasks`` that read some tasks only."""
        subsets = self.__dict__.get("_subsets") or {}
        return {name: [self.tasks[t].name for t in positions] for name, positions in subsets.items()}

    def set_extra_state(self, state: Any) -> None:
        """Restore the step counter saved by :meth:`get_extra_state` (the tasks were checked before).

        Raises:
            ValueError: ``state`` is not what :meth:`get_extra_state` saves (the module is unchanged).
        """
        malformed = _malformed_extra_state(state)
        if malformed is not None:
            raise ValueError(
                "RecMetricModule.set_extra_state: expected what get_extra_state saves, a dict "
                f"{{'step': <whole number >= 0>, 'tasks': [<task names>]}}, got {malformed}."
            )
        if state is not None:  # none in the checkpoint (see _malformed_extra_state): the counter stays as it is
            self._step = int(state["step"])
        saved_by = None
        if state is not None and state.get("rank") is not None and state.get("world_size") is not None:
            saved_by = (as_int(state["rank"]), as_int(state["world_size"]))
        self.__dict__[SAVED_BY] = saved_by
        for unit, _, _ in self._updated_units():  # what each holds; a merge of another saved rank's adds to it
            note_saved_ranks(unit, None if saved_by is None else frozenset({saved_by}))  # type: ignore[arg-type]

    def _warn_other_rank(self) -> None:
        """Warn, once per load, where this rank's states are not its own share of this run's samples.

        Each rank of a DDP run holds its share of the samples, and the synced values add the shares
        up. A training loop without Lightning that saves on rank 0 alone (``if rank == 0: torch.save(...)``)
        and loads that file on every rank gives every rank rank 0's states: the synced values count its
        samples once per rank, without an error anywhere. So does a checkpoint saved in one process
        loaded on every rank of a DDP run, and per-rank files saved by another number of ranks leave
        out the samples of a saved rank no rank loads (or count those of one several ranks load).
        In one process (or a process group of one rank), one DDP rank's file holds that rank's share
        alone: the values leave out the other ranks' samples.
        The module records the ``(rank, world size)`` that saved its states (:meth:`get_extra_state`;
        rank 0 of 1 in one process) and says so at the first ``compute()`` or ``local_compute()`` of a
        rank whose record is another rank's (a one-process checkpoint: every rank but 0, where the
        whole run's states belong) or of another world size (a one-process checkpoint on rank 0
        excepted), one process included; a ``reset()`` or a load of other states clears it (the rank's
        own, a checkpoint that records no rank, as earlier versions saved them, or every saved rank's
        merged by ``RecMetricCallback`` or :meth:`load_saved_ranks`). Nothing is said on rank 0 (or in
        one process) where every metric holds every rank of the saved run: its own file, with each
        other saved rank's merged into it by hand (``merge_state`` of the metrics of a module that
        loaded it: each metric records the saved ranks it holds, see
        :func:`~torchmetrics_ext.metrics._checkpoints.note_saved_ranks`), nor where a one-process
        checkpoint holds no sample (saved before any update: nothing counts twice). Nothing is
        communicated (each rank reads its own record), so no rank waits for another, and nothing is
        added to a step.
        """
        saved_by = self.__dict__.pop(SAVED_BY, None)
        if saved_by is None:  # the usual case: no load since the last compute, nothing asked of torch
            return
        world = _world()
        rank, size = world or (0, 1)  # one process, or a process group of one rank: nothing is synced
        if saved_by == (rank, size):
            return
        saved_rank, saved_world = saved_by
        if rank == 0 and (saved_world == 1 or self._holds_every_saved_rank(saved_world)):
            return  # the whole of the saved run (loaded, or merged by hand), resumed on rank 0: its lifetime
        source = "in one process (no process group)" if saved_world == 1 else f"by rank {saved_rank} of {saved_world}"
        here = f"rank {rank} of {size}" if world is not None else "one process (no process group)"
        head = f"RecMetricModule: its states were saved {source}, and this is {here}: "
        if world is None:
            held = sorted(r for r, w in self._saved_ranks_held() if w == saved_world) or [saved_rank]
            some = sorted(r for r, w in self._saved_ranks_held(every=False) if w == saved_world)
            ranks = f"saved rank{'s' if len(held) > 1 else ''} {', '.join(map(str, held))}"
            what = (
                f"they hold the samples of {ranks} alone, so its values leave out those of the other ranks of that run"
                if some == held
                else f"not every metric holds the samples of every rank of that run (each holds {ranks}; some, merged "
                f"by hand, saved ranks {some}), so some of its values leave out those of the other ranks"
            )
            body = (
                what
                + ". Pass the list of every saved rank's `state_dict()` to `module.load_saved_ranks(saved)` to resume "
                "the whole run (docs/module.md, Under DDP without Lightning), or `reset()` the module after loading "
                "to start its values over."
            )
        elif saved_world == size:
            body = (
                f"the synced values count rank {saved_rank}'s samples once more for every rank that loaded them (a "
                "checkpoint saved on rank 0 alone and loaded on every rank counts them once per rank). Save each "
                "rank's own `state_dict()` and load it on that rank, or `reset()` the module after loading to start "
                "its values over (docs/module.md, Checkpoints)."
            )
        elif saved_world == 1:
            body = (
                "the synced values count that run's samples once more for every rank other than 0 that loaded them "
                f"(loaded on every rank, {size} times). Load a one-process checkpoint on rank 0 alone and leave the "
                "other ranks' modules empty, or `reset()` the module after loading to start its values over "
                "(docs/module.md, Checkpoints)."
            )
        else:
            body = (
                "per-rank checkpoints resume a run of the same number of ranks; on another, the synced values leave "
                "out the samples of a saved rank whose file no rank loads, and count those of a file several ranks "
                "load once per rank. Pass the list of every saved rank's `state_dict()` to "
                "`module.load_saved_ranks(saved)` on every rank instead (rank 0 merges them, the others start "
                "empty; `RecMetricCallback` does this under Lightning; docs/module.md, Under DDP without "
                "Lightning), or `reset()` the module after loading to start its values over."
            )
        warn_at_user(
            head + body,  # the user's compute()/local_compute() (or log_dict, a wrapper's)
        )

    def _saved_ranks_held(self, every: bool = True) -> frozenset[tuple[int, int]]:
        """The saved ranks whose states every metric of the module holds (``every=False``: some metric).

        Loaded, or merged in since by hand: each metric records the saved rank of the checkpoint it
        was loaded from and those of the metrics merged into it since (``merge_state`` of another
        module's metric, loaded from another saved rank's ``state_dict``); a metric without a record
        holds none for certain.
        """
        held: frozenset[tuple[int, int]] | None = None
        for unit, _, _ in self._updated_units():
            ranks = saved_ranks(unit) or frozenset()
            held = ranks if held is None else held & ranks if every else held | ranks
        return held or frozenset()

    def _holds_every_saved_rank(self, saved_world: int) -> bool:
        """Whether every metric holds the states of every rank of a run of ``saved_world`` ranks (merged by hand)."""
        return {(r, saved_world) for r in range(saved_world)} <= self._saved_ranks_held()


def _total_examples(throughput: Metric) -> Tensor:
    """The throughput's ``total_examples`` (every example it counted, warm-up included), a float64 on the CPU."""
    value = throughput.total_examples
    assert isinstance(value, Tensor)
    return value.detach().double().cpu()


def _malformed_extra_state(state: Any) -> str | None:
    """What is wrong with a saved ``_extra_state`` (a short description), or ``None`` if the module can restore it.

    ``None`` (no ``_extra_state`` in the checkpoint) is fine: nothing is restored from it.
    """
    if state is None:
        return None
    if not isinstance(state, Mapping):
        return f"an object of type {type(state).__name__}"
    if "step" not in state:
        return f"a dict without 'step' (keys {sorted(map(str, state))})"
    step = state["step"]
    if isinstance(step, Tensor) and step.numel() == 1 and not step.is_floating_point() and not step.is_complex():
        step = step.item()
    if as_int(step) is None or step < 0:
        return f"'step': {step!r}"
    tasks = state.get("tasks")
    if tasks is not None and (isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence)):
        return f"'tasks': {tasks!r}"
    for key in ("rank", "world_size"):  # absent from the checkpoints of earlier versions
        value = state.get(key)
        number = as_int(value)
        if value is not None and (number is None or number < 0):
            return f"{key!r}: {value!r}"
    return None


def _after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """After the module and all of its children have loaded: put the module back if the load of its entries fails.

    A load that refused the module (other tasks) takes back the "missing keys" of the states it
    withheld: the refusal's own message says what is wrong; listing every metric state as missing
    besides would suggest ``strict=False``, which is refused the same.

    The load fails for the module if an error was added since its ``_load_from_state_dict`` (only
    its children's loads ran in between) or, in a strict load, a key under its prefix is missing or
    unexpected: the states recorded there are put back, whoever called ``load_state_dict``.
    """
    refused = module.__dict__.pop("_refused_prefix", None)
    if refused is not None:
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(refused)]
    guard = module.__dict__.pop(_LOAD_GUARD, None)
    if guard is None:
        return
    prefix, restore, error_msgs, errors_before, finish, emptied = guard
    finish()  # every descendant has loaded
    keys = [*incompatible_keys.missing_keys, *incompatible_keys.unexpected_keys]
    if len(error_msgs) > errors_before or (any(k.startswith(prefix) for k in keys) and loading_strictly()):
        # refused for its keys alone: say what they mean, and the way on
        hint = _strict_keys_hint(module, prefix, incompatible_keys) if len(error_msgs) == errors_before else None
        restore()
        if hint is not None and prefix:  # a parent's load: in torch's error
            error_msgs.append(hint)
        elif hint is not None:  # the module's own load: after the metrics' notes (`load_state_dict`)
            module.__dict__[_STRICT_HINT] = hint
        return
    for unit in emptied:
        _restart_window(unit)
    if isinstance(module, CheckpointLoading):
        _restart_units_not_saved(module, prefix, incompatible_keys.missing_keys)
        module.__dict__[AFRESH_ON_LOAD] = _afresh(module, prefix, incompatible_keys.missing_keys, emptied)
        # the load replaced every group's states, through resets of its own (a window change empties each
        # unit's window): neither those nor a reset of one metric alone before the load is said at `compute`
        module._mark_members()
        saved_by = module.__dict__.get(SAVED_BY)
        if saved_by is not None and saved_by[1] == 1 and _world() is not None and _holds_no_samples(module):
            # a one-process run saved before its first sample: loaded on every rank, nothing counts twice
            del module.__dict__[SAVED_BY]


def _holds_no_samples(module: CheckpointLoading) -> bool:
    """Whether every state of the module's metrics (lifetimes and windows) and its throughput's count are defaults."""
    metrics: list[Metric] = []
    for unit, _, _ in module._updated_units():
        metrics.extend([unit.lifetime, unit.window] if isinstance(unit, Windowed) else [unit])
    for metric in metrics:
        for name, default in metric._defaults.items():
            value = getattr(metric, name)
            if isinstance(value, Tensor) and isinstance(default, Tensor):
                if not torch.equal(value, default.to(value)):
                    return False
            elif not isinstance(value, list) or any(chunk.numel() for chunk in value):
                return False
    return module.throughput is None or not _total_examples(module.throughput).item()


def _strict_keys_hint(module: nn.Module, prefix: str, incompatible_keys: Any) -> str | None:
    """The note a strict load refused for the module's keys adds to torch's error: which metrics, and ``strict=False``.

    Added to ``error_msgs``, so it reaches the error however the load was called: the module's own
    ``load_state_dict`` or a parent's (Lightning's checkpoint restore, where torch's bare "Missing
    key(s)" / "Unexpected key(s)" listed the states and said nothing of a metric added or removed since
    the checkpoint, nor of ``strict_loading``).
    """
    head = f"{prefix}metrics."
    metrics = getattr(module, "metrics", None)
    have = {name for name, _ in metrics.named_children()} if isinstance(metrics, nn.Module) else set()

    def names(keys: Sequence[str]) -> list[str]:
        return sorted({key[len(head) :].split(".")[0] for key in keys if key.startswith(head)})

    lacking = names(incompatible_keys.missing_keys)
    if any(key.startswith(f"{prefix}throughput.") for key in incompatible_keys.missing_keys):
        lacking.append("throughput")
    removed = [name for name in names(incompatible_keys.unexpected_keys) if name not in have]
    if not lacking and not removed:
        return None
    where = prefix[:-1] if prefix.endswith(".") else (prefix or type(module).__name__)
    parts = []
    if lacking:
        parts.append(
            f"the checkpoint has no states, or not all of them, for {lacking}: added since it was saved, built "
            "with other settings, or saved in an older format of the metric"
        )
    if removed:
        parts.append(f"it holds the states of {removed}, which this module does not have (removed since it was saved)")
    todo = []
    if lacking:
        todo.append("start those metrics afresh (all of their states at their defaults)")
    if removed:
        todo.append("leave out the states of the metrics removed")
    return (
        f"{where}: {'; '.join(parts)}. To resume the rest and {' and '.join(todo)}, load with strict=False (in "
        "Lightning: set `self.strict_loading = False` in the LightningModule)."
    )


def _afresh(
    module: CheckpointLoading, prefix: str, missing_keys: Sequence[str], emptied: Sequence[Windowed]
) -> dict[str | None, frozenset[str]]:
    """Which parts of which metrics the load just ended did not resume: ``{name: parts}`` (``None``: the throughput).

    A unit with a state the checkpoint lacked started afresh, lifetime and window (``strict=False``:
    a metric added since, one built with other settings whose states are named after them), and so
    did every member of its compute group; a unit in ``emptied`` resumed its lifetime and started its
    window empty (a window changed since the checkpoint). A checkpoint without the module's own
    ``_extra_state`` loaded nothing of it: every part of it is counted. ``_extra_state`` entries alone
    (a metric's recorded settings or version, a ring) do not count: the states say what was loaded.
    """
    missing = {key for key in missing_keys if key.startswith(prefix)}
    everything = frozenset(("lifetime", "window"))
    nothing_loaded = prefix + "_extra_state" in missing
    missing = {key for key in missing if not key.endswith("._extra_state")}
    window_only = frozenset(("window",))
    emptied_ids = {id(unit) for unit in emptied}
    out: dict[str | None, frozenset[str]] = {}
    heads = [*module._unit_prefixes(prefix)]
    if module.throughput is not None:
        heads.append((f"{prefix}throughput.", module.throughput))
    for head, unit in heads:
        name = None if unit is module.throughput else head[len(prefix) :].split(".")[1]
        if nothing_loaded or any(key.startswith(head) for key in missing):
            out[name] = everything
        elif id(unit) in emptied_ids:
            out[name] = out.get(name, frozenset()) | window_only
    for name, lead in module._leader.items():  # a group member holds its leader's states
        if lead in out:
            out[name] = out[lead]
    return out


def _restart_units_not_saved(module: CheckpointLoading, prefix: str, missing_keys: Sequence[str]) -> None:
    """Start afresh every unit whose states the module's checkpoint lacks: a metric added since it was saved.

    A metric of which the checkpoint holds some states only starts afresh in its own load; one of which it
    holds none loads nothing there (torch leaves a module without entries as it is), so a module that had
    been updated before the load would report that metric's earlier steps next to the resumed ones (and
    the resumed step counter). The module's checkpoint resumes the module as saved: such a metric starts
    at its defaults, as the missing keys say. A checkpoint without the module's own ``_extra_state`` (no
    entry of this module at all, or one of a version before it was saved) leaves the module as it is.
    """
    missing = set(missing_keys)
    if not missing or prefix + "_extra_state" in missing:
        return
    names = {id(child): name for name, child in module.named_modules() if name}
    for unit in module._all_units():
        head = f"{prefix}{names[id(unit)]}."
        if not any(key.startswith(head) for key in missing):  # the usual load: nothing of it missing
            continue
        keys = [head + key for key in unit.state_dict(keep_vars=True) if key.rsplit(".", 1)[-1] != "_extra_state"]
        if keys and missing.issuperset(keys):
            unit.reset()


def _restart_window(unit: Windowed) -> None:
    """Keep the lifetime a window change loaded; start the window empty over it, as ``Windowed`` of such a metric would.

    The lifetime loaded with an empty ring taken from the reset unit; a binned metric's ring also
    holds the part of its lifetime histogram no window update holds (its base): reset and merged
    back, the lifetime's states become that part (``Windowed.merge_state``).
    """
    states, ranks = dict(unit.lifetime.metric_state), saved_ranks(unit)
    unit.reset()
    unit.merge_state(states)
    note_saved_ranks(unit, ranks)  # the lifetime it holds is still the saved ranks' (a reset forgets them)


def _load_metadata(state_dict: Mapping[str, Any]) -> MutableMapping[str, Any] | None:
    """The per-module metadata of the ``nn.Module.load_state_dict`` running now (what torch hands each module).

    Read from the call itself (as :func:`~torchmetrics_ext.utilities.load_guard.loading_strictly` reads
    ``strict``): a parent module's load hands this module a plain dict of its entries, without the
    checkpoint's ``_metadata``. Else the ``_metadata`` of ``state_dict``, else ``None``.
    """
    local = running_locals(nn.Module.load_state_dict.__code__, inspect.currentframe())
    if local is not None:
        found = local.get("metadata")
        return found if isinstance(found, MutableMapping) else None
    found = getattr(state_dict, "_metadata", None)
    return found if isinstance(found, MutableMapping) else None


def _saved_metrics(state_dict: Mapping[str, Any], prefix: str) -> set[str]:
    """The metric names with entries in a module's checkpoint (``{prefix}metrics.<name>.`` or ``ranking.<name>.``)."""
    names: set[str] = set()
    for part in (f"{prefix}metrics.", f"{prefix}ranking."):
        names.update(key[len(part) :].split(".", 1)[0] for key in state_dict if key.startswith(part))
    return names
