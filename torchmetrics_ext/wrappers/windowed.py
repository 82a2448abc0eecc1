r"""Lifetime and recent-window values of a metric from one update: :class:`Windowed`."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import Module
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_sum
from torchmetrics.utilities.exceptions import TorchMetricsUserError
from torchmetrics.wrappers.abstract import WrapperMetric

from torchmetrics_ext.functional.auc.binary import _add_entries as add_entries
from torchmetrics_ext.metrics._arithmetic import StatesInChildren, TensorArithmetic, keep_direction_and_bounds
from torchmetrics_ext.metrics._bootstrap import OUTSIDE as _OUTSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import refuse_bootstrapped_tasks
from torchmetrics_ext.metrics._checkpoints import (
    _CHECKPOINT_VERSION,
    carry_saved_ranks,
    derive_missing,
    drop_pending_load,
    end_loads_in_a_hook,
    load_explained,
    load_own_entries,
    note_checkpoint,
    note_saved_ranks,
    note_settings,
    settings_problems,
    synced_problems,
    tensor_state_problems,
)
from torchmetrics_ext.metrics.base import (
    GuardedMetric,
    TaskMetric,
    computed_fresh,
    count_samples,
    counted_as_updated,
    merge_settings_differ,
    merged_kind,
    move_only,
    newest_samples,
    recomputed_after,
    unexpected_options,
)
from torchmetrics_ext.utilities.checks import ZeroWeightNote, check_int, check_state_dtype, noting_zero_weights
from torchmetrics_ext.utilities.chunks import _JOIN, join_runs_amortised
from torchmetrics_ext.utilities.distributed import TypedGather, copy_metric, outside_group
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.inference import deepcopy_ordinary, ordinary_tensors
from torchmetrics_ext.utilities.load_guard import putting_back_whole
from torchmetrics_ext.utilities.mapping import not_a_dict_of_metrics
from torchmetrics_ext.utilities.ownership import defer_state_writes, owner_of, take_ownership, write_deferred_states
from torchmetrics_ext.utilities.plot import named_series
from torchmetrics_ext.utilities.snapshot import snapshot
from torchmetrics_ext.utilities.summation import compensated_add_
from torchmetrics_ext.utilities.warnings import naming_part
from torchmetrics_ext.wrappers._histogram import HistogramWindow
from torchmetrics_ext.wrappers._options import METRIC_OPTIONS, wrapper_options
from torchmetrics_ext.wrappers._ring import StateRing, join_small_tails, state_kind

__all__ = ["Windowed"]


# methods of the lifetime and window metrics that read their states: each writes the deferred ones
# first (through any reference to the metric), and so does ``__getstate__`` (copies and pickles)
_READERS = ("compute", "sync", "merge_state")


def _write_child(owner: weakref.ref[Windowed], name: str) -> None:
    """Write the deferred states of child ``name`` of the ``Windowed`` ``owner`` (nothing once it is gone)."""
    windowed = owner()
    if windowed is not None:
        windowed._refresh(name)


def _own(child: Module, owner: Windowed, name: str) -> None:
    """Make ``child`` (the lifetime or window of ``owner``) write its deferred states before each read of them.

    ``metric_state`` (the package's metrics) and ``state_dict`` (a pre-hook) ask for them through
    :func:`~torchmetrics_ext.utilities.ownership.write_deferred_states`; the reading methods
    (:data:`_READERS`) and ``__getstate__`` are wrapped on the object itself, whatever its class.
    """
    defer_state_writes(child, functools.partial(_write_child, weakref.ref(owner), name))
    state = child.__dict__
    for method in _READERS:
        current = getattr(child, method)  # compute: TorchMetrics' wrapped one (rebuilt on copies)
        if not getattr(current, "_writes_deferred", False):
            state[method] = _current(child, current)
    state["__getstate__"] = functools.partial(_current_state, child)
    restart = _reset_lifetime_of if name == "lifetime" else _reset_window_of
    state["reset"] = functools.partial(restart, weakref.ref(owner), child)


def _reset_lifetime_of(owner: weakref.ref[Windowed], child: Module) -> None:
    """``reset`` of the lifetime metric of a ``Windowed`` ``owner``: the owner's ``reset_lifetime``, exactly.

    A binned metric's lifetime histogram is the window's running sums plus a base, written into
    the lifetime metric when read: a plain reset of that metric (a reference kept to it, the metric
    given to ``RecMetricModule(window_size=...)``, or Lightning resetting a logged ``ne.lifetime``
    at an epoch's end) came back with the samples still in the window at the next read. Through any
    reference, the reset empties the lifetime only, as :meth:`Windowed.reset_lifetime` does.
    """
    windowed = owner()
    if windowed is not None and windowed._modules.get("lifetime") is child:
        windowed._restart_lifetime()
    with torch.inference_mode(False):  # a wrapped TorchMetrics metric's reset would make inference tensors
        type(child).reset(child)  # type: ignore[attr-defined]  # a Metric


def _reset_window_of(owner: weakref.ref[Windowed], child: Module) -> None:
    """``reset`` of the window metric of a ``Windowed`` ``owner``: the window restarts, the lifetime goes on.

    The window's states are written from the ring when read, so a plain reset of that metric (a
    reference kept to ``metric.window``, or Lightning resetting a logged ``metric.window`` at an
    epoch's end) came back at the next read with every update still in the ring. Through any
    reference the reset now empties the ring too (:meth:`Windowed._restart_window`): the window
    then holds the updates from here on (by the window rule), and the lifetime keeps everything.
    """
    with torch.inference_mode(False):  # a wrapped TorchMetrics metric's reset would make inference tensors
        type(child).reset(child)  # type: ignore[attr-defined]  # a Metric
    windowed = owner()
    if windowed is not None and windowed._modules.get("window") is child:
        windowed._restart_window()


def _refresh_before_save(module: Module, prefix: str, keep_vars: bool) -> None:
    """``state_dict`` pre-hook of a lifetime or window metric: its states are brought up to date first."""
    write_deferred_states(module)


def _current(child: Module, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a lifetime or window metric, run after its deferred states (and a merged metric's) are written."""

    @functools.wraps(method)
    def current(*args: Any, **kwargs: Any) -> Any:
        write_deferred_states(child)
        for arg in (*args, *kwargs.values()):  # merge_state's incoming metric: a kept reference too
            if isinstance(arg, Module):
                write_deferred_states(arg)
        return method(*args, **kwargs)

    current._writes_deferred = True  # type: ignore[attr-defined]
    return current


def _current_state(child: Module) -> dict[str, Any]:
    """``__getstate__`` of a lifetime or window metric (``deepcopy``, ``clone``, pickle): its current states.

    The copy is a metric of its own: the wrapped reading methods stay behind (its class's own
    ``__setstate__`` rebuilds ``compute``).
    """
    write_deferred_states(child)
    state = type(child).__getstate__(child)
    for name in (*_READERS, "__getstate__", "reset"):
        state.pop(name, None)
    return state


def _oldest(entries: tuple[Tensor, Tensor | None], n: int) -> tuple[Tensor, Tensor | None]:
    """The entries of a batch's first ``n`` samples.

    Samples are on the last axis: index ``(T, N)``, values ``(T, N)`` (one histogram) or ``(K, T, N)``.
    """
    index, values = entries
    return index[..., :n], None if values is None else values[..., :n]


def _kept_like(cut: dict[str, list[Tensor]], whole: Mapping[str, list[Tensor]]) -> dict[str, list[Tensor]]:
    """The chunks of a batch's newest samples in the dtypes the update of the whole batch kept.

    The cut batch is updated trusting its inputs (validated whole just before), so a dtype the
    metric chooses from what validation read (a ranking metric keeps int64 relevance below
    ``2**31`` as int32) is left as given; the cut samples are some of the whole batch's, so its
    dtype holds their values exactly, and the window keeps what an update of them would.
    """
    out = {}
    for name, chunks in cut.items():
        dtypes = {chunk.dtype for chunk in whole[name]}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
        out[name] = [chunk if dtype is None or chunk.dtype == dtype else chunk.to(dtype) for chunk in chunks]
    return out


def _renamed(state: Any, renamed: dict[str, str]) -> Any:
    """A ring state saved before the metric renamed some states (old name -> new name), under the new names."""
    if not renamed or not isinstance(state, dict):
        return state
    out = dict(state)
    for part in ("rings", "back", "chunks", "rows"):
        saved = state.get(part)
        if isinstance(saved, dict):
            out[part] = {(n if renamed.get(n, n) in saved else renamed[n]): v for n, v in saved.items()}
    if isinstance(state.get("state"), str):  # a binned histogram's window: the name of its state
        out["state"] = renamed.get(state["state"], state["state"])
    if isinstance(state.get("states"), list):  # histograms sharing bin indices: their names
        out["states"] = [renamed.get(n, n) if isinstance(n, str) else n for n in state["states"]]
    return out


def _ring_layout(state: Mapping[str, Any]) -> str:
    """A saved ring's parts and state names, for messages."""
    names = sorted(_ring_names(dict(state)))
    return f"parts {sorted(state)}" + (f", states {names}" if names else "")


def _ring_names(state: dict[str, Any]) -> set[str]:
    """The state names a saved ring holds (a binned histogram's window: its state's name)."""
    names = {n for part in ("rings", "back", "chunks") if isinstance(state.get(part), dict) for n in state[part]}
    if isinstance(state.get("states"), list):  # histograms sharing bin indices
        names |= {n for n in state["states"] if isinstance(n, str)}
    return names | ({state["state"]} if isinstance(state.get("state"), str) else set())


def _required_states(metric: Metric) -> list[str]:
    """The states a checkpoint of ``metric`` holds: its persistent ones (every state if none is persistent)."""
    if isinstance(metric, GuardedMetric):
        return metric._required_states()
    persistent = [name for name in metric._defaults if metric._persistent[name]]
    return persistent or list(metric._defaults)


def _saved_names(metric: Metric, saved: list[str], version: int) -> set[str]:
    """The state names ``metric`` reads from a checkpoint holding ``saved`` (former names mapped, as it loads them)."""
    if isinstance(metric, GuardedMetric):
        return metric._names_read_from(saved, version)
    return set(saved)


def _apply_update_limit(module: Module, incompatible_keys: Any) -> None:
    """After a load, keep the newest updates this window keeps: at most ``max_updates``, within its share of samples.

    A checkpoint written before the limit was recorded may hold more updates, and one without the
    recorded ``window_size`` (a plain dict of its entries: no ``_metadata``) or saved by fewer ranks
    (a larger share each) more samples; the next update would evict them, and a ``compute`` before
    it reported a window larger than ``window_size``.
    States loaded as inference tensors (a wrapped TorchMetrics metric's, from a ``state_dict`` taken
    under inference mode) are made ordinary first (:meth:`Windowed._ordinary_children`).
    A refused load first takes back the "missing keys" its children reported for the states it
    withheld from them: the refusal's own messages say what is wrong.
    """
    refused = module.__dict__.pop("_refused_prefix", None)
    rebase = module.__dict__.pop("_base_from_lifetime", False)
    if refused is not None:
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(refused)]
        return
    if not isinstance(module, Windowed):
        return
    module._ordinary_children()
    if rebase and module._hist is not None:  # a ring converted on load: its updates are loose, the lifetime the base
        life = module._child("lifetime")
        module._hist.base.copy_(_stacked({n: getattr(life, n) for n in module._hist.names}, module._hist.names))
    window = module._hist if module._hist is not None else module._ring
    try:
        limit = module._local_window()
    except ValueError:  # a window smaller than the world: its next update or compute refuses it
        return
    most = module.max_updates
    if len(window.sizes) <= 1 or (window.used <= limit and (most is None or len(window.sizes) <= most)):
        return
    window.evict(limit, most)
    module._bind_window_lists()
    module.__dict__["_window_stale"] = True  # the window's tensor states are written from the ring when read
    module._child("window").__dict__["_computed"] = None


def _histogram_states(metric: Metric) -> tuple[str, ...]:
    """The states ``metric`` fills sample by sample at shared bins; none for another metric.

    Its ``_histogram_states`` (several histograms sharing each sample's bin), else its one ``_histogram_state``.
    """
    names = getattr(metric, "_histogram_states", None)
    if names is None:
        name = getattr(metric, "_histogram_state", None)
        names = () if name is None else (name,)
    return tuple(names)


def _stacked(states: Mapping[str, Any], names: tuple[str, ...]) -> Tensor:
    """The histogram state of one name, else the stack of several (one shape and dtype)."""
    return states[names[0]] if len(names) == 1 else torch.stack([states[n] for n in names])


# the size of each process group, read at its first use: a window's share is checked at every
# update, sync and compute on every rank (so all of them refuse a window smaller than the world
# together, whatever their batches) without a query to torch.distributed each time
_WORLD_SIZES: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_DIST_AVAILABLE = dist.is_available()  # fixed by the build: read once, not at every update


def _world_size(group: Any) -> int:
    """The number of ranks in ``group`` (``None``: the default group); ``0`` without a process group.

    Kept per process group object, so a default group started again (another world) is read afresh.
    """
    if not _DIST_AVAILABLE:
        return 0
    default = dist.GroupMember.WORLD
    if default is None:  # no process group (dist.is_initialized() is this test)
        return 0
    if outside_group(group):  # a rank outside the group syncs with no other: the whole window is its own
        return 1
    pg = default if group is None else group
    size = _WORLD_SIZES.get(pg)
    if size is None:
        size = _WORLD_SIZES[pg] = dist.get_world_size(group)
    return size


def first_synced(units: Iterable[Windowed]) -> Windowed | None:
    """The first of ``units`` whose lifetime or window is synced (between ``sync()`` and ``unsync()``), else ``None``.

    One call for all the windowed units of a :class:`~torchmetrics_ext.RecMetricModule` step, which
    refuses the step before any unit takes it.
    """
    for unit in units:
        modules = unit._modules
        if modules["lifetime"]._is_synced or modules["window"]._is_synced:  # type: ignore[union-attr]
            return unit
    return None


def _lists_told_for_own_update(metric: Metric) -> bool:
    """Whether ``metric`` has a ``_list_update`` written for the ``update`` it runs.

    A subclass that overrides ``update`` (a user's transform of the inputs) but inherits
    ``_list_update`` would have its window fed the chunks of the parent's ``update``: such a metric
    takes the general way (its own ``update`` into a slot).
    """
    if not callable(getattr(metric, "_list_update", None)):
        return False
    mro = type(metric).__mro__
    told = next(cls for cls in mro if "_list_update" in cls.__dict__)
    runs = next(cls for cls in mro if "update" in cls.__dict__)
    return issubclass(told, runs)


def _skips_zero_weights(metric: Metric) -> bool:
    """Whether a validated all-zero-weight update of ``metric`` takes no window room (unless its value counts them)."""
    return not getattr(metric, "_zero_weight_batches_count", False)


def _never_distributed() -> bool:
    """``distributed_available_fn`` of the scratch metric: batch values are never synced."""
    return False


class Windowed(StatesInChildren, TensorArithmetic, WrapperMetric):
    r"""A metric's lifetime value and its value over the most recent ``window_size`` samples.

    One ``update`` feeds both: the batch's statistics are computed once (by the wrapped metric's
    own ``update``, into a slot of a ring buffer), added to :attr:`lifetime`, and folded into
    :attr:`window`, from which the updates that fell out of the window are dropped. Both are
    ordinary metrics of the wrapped class and settings whose states *are* the lifetime and the
    window statistics, so they sync under DDP, checkpoint and compute like any metric.

    **The window rule** (counted in samples, not updates): the window holds the newest whole
    updates whose sizes sum to at most ``window_size``; an update larger than the window on its
    own counts only its newest ``window_size`` samples. A *sample* is what the metric's
    ``sample_axis`` indexes: the last axis of pointwise, AUC and grouped inputs (``(N,)`` or
    ``(T, N)``; weights and group ids ``(N,)``) and of flat ranking rows (``(N,)`` with
    ``indexes``); a query row of padded ranking input ``(Q, L)`` and a row of
    ``MulticlassRecallAtK``'s ``(N, C)`` scores; for a TorchMetrics metric, a row of its
    ``(N, ...)`` inputs (a batch of scalars only, such as a step's loss, is one sample). Under DDP
    each rank keeps ``window_size // world_size`` samples by the same rule (TorchRec keeps
    ``ceil(window_size / world_size)``: ``RecMetricModule.from_torchrec_config`` uses that), and
    the window's states sync across ranks like the lifetime's (summed or gathered).
    With ``max_updates=K`` the window also holds at most the newest ``K`` updates, however few
    samples they hold (TorchRec's sum metrics keep at most 1000 updates in their window).
    An update whose weights are all zero (every task's) takes no room and evicts nothing (it
    changes no value): the package's metrics tell it from the bounds their validation reads, no
    further read; with ``validate_args=False`` nothing is read and it still takes its room. A
    ``(T, N)`` update with weight in some task takes its room (the tasks share the window), and so
    does one of a metric whose value it changes (``TensorWeightedAverage`` with an unweighted task,
    ``NumMissingLabels(count_zero_weight=True)``, ``GroupedAUC(average_groups="all")`` without
    ``weight_groups``). A wrapped TorchMetrics metric is not told either (nothing notes its
    weights, and reading them would be a host sync per step on a GPU): ``torchmetrics.MeanMetric``
    fed an all-zero ``weight`` takes its room, older updates may leave; wrap the package's
    ``torchmetrics_ext.aggregation.Mean`` (a ``MeanMetric`` subclass) for one whose such updates take none.

    Args:
        metric: the metric to wrap; it becomes :attr:`lifetime` (any state it already holds stays
            in the lifetime value). Its states must reduce with ``sum`` (starting at zero),
            ``max``, ``min`` or ``cat``, and ``full_state_update`` must be ``False``.
        window_size: the window, in samples (across all ranks): a positive integer.
        max_updates: at most this many updates in the window (on each rank), a positive integer;
            ``None`` (default): no limit, the window is counted in samples only. TorchRec's
            ``WindowBuffer`` (the window of its sum metrics: NE, CTR, calibration, MSE, ...) keeps
            at most 1000 updates (``MAX_BUFFER_COUNT``), so with ``window_size`` above 1000 batches
            its window is the newest 1000 updates: ``max_updates=1000`` reproduces it.
        kwargs: TorchMetrics options (``sync_on_compute``, ``dist_sync_on_step``, ``dist_sync_fn``,
            ``distributed_available_fn``, ``process_group``, ``compute_on_cpu``,
            ``compute_with_cache``). **One rule:** an option given here is the wrapper's; an
            option not given here is the wrapped metric's. So ``Windowed(CTR(sync_on_compute=False), n)``
            and ``Windowed(CTR(), n, sync_on_compute=False)`` both skip the sync, and
            ``Windowed(CTR(sync_on_compute=False), n, sync_on_compute=True)`` syncs. The lifetime
            and window metrics sync with these options (they are set on them, and read back on the
            wrapper's attributes); ``dist_sync_on_step`` is the wrapper's alone (see ``forward``
            below: the children never run a ``forward``).

    Raises:
        TypeError: ``metric`` is not a :class:`torchmetrics.Metric`.
        ValueError: ``window_size`` or ``max_updates`` is not a positive integer, ``metric`` has
            states of another reduction or none, needs the full state at update, or is one of the
            metrics refused with their reason (``Throughput`` and ``TowerQPS``, which keep their own
            window of recent seconds, ``window_seconds``; ``aggregation.CategoricalCount``; and a
            ``Windowed``: wrap its inner metric instead), an
            option TorchMetrics rejects (unknown, or of the wrong type: the metric is left as it
            was), a ``process_group`` other than the one ``metric`` has, or a ``metric`` that another
            live ``Windowed`` (as its lifetime or window) or ``RecMetricModule`` holds: one object
            would hold both wrappers' states (wrap a ``copy.deepcopy`` of it). Under DDP, every
            ``update``, ``forward``, ``sync`` and ``compute`` raises ``ValueError`` on every rank
            (whatever its batch, an empty one too) when ``window_size`` is smaller than the world size.

    Note:
        **Memory.** Metrics whose statistics add up (NE, calibration, CTR, MSE, accuracy,
        per-batch grouped or ranking sums, multiclass recall) keep one copy of their states per
        update in the window (about ``window_size / batch size`` copies; preallocated, nothing is
        allocated per update once the ring has grown). Binned AUC/AUPRC, ``Reliability``,
        ``HindsightTargetPR`` (histograms filled at one bin per sample) and ``Segmented`` (its
        ``(T, S)`` sums, filled at one ``(task, segment)`` position per sample) keep, instead of a
        dense histogram per update, each window sample's bin index (4 bytes per sample and task, plus
        its float64 values: an AUC's weight when weighted, ``Reliability``'s three sums,
        ``HindsightTargetPR``'s two label weights, a ``Segmented`` metric's terms of each of its
        states), or an update's dense histograms where those
        are smaller (a batch larger than the bins), and dense block sums of at most a few times
        that; each update then costs one ``scatter_add_`` (that of the metric alone). Exact metrics
        (``cat`` states: exact AUC/AUPRC/GAUC, exact ranking rows, pairwise AUC) keep exactly the
        window's samples in the lifetime's own chunks: the window joins its small updates (64 at a
        time, the metric's own rule) into segments it shares with the lifetime (a few tensors per
        state, about one per 32,768 elements, plus a Python int per update and state: its rows,
        which evict an update from a joined segment exactly), so the window stores nothing more
        and the lifetime list is as short as the metric's alone plus the window's few entries.
        After ``load_state_dict``, a move to another device or a grouped AUC's lifetime
        ``compute`` (which joins its chunks into one) the window holds its own copy of the samples
        it had then, until they leave it (at most one window's samples).

        **Exactness.** The window is never updated by subtracting evicted statistics: it is the
        fresh reduction of the updates it holds (a two-stack sliding window), so its value equals
        the metric recomputed from scratch over the window's samples up to float64 rounding of
        one sum, however long the run.

        **Checkpoints.** ``state_dict`` holds the lifetime and window states (made persistent) and
        the ring (its ``_extra_state``); ``load_state_dict`` resumes mid-window exactly: the next
        updates evict the same updates as an uninterrupted run. ``reset`` clears all three. A
        checkpoint of another ``window_size`` or ``max_updates``, or of a wrapped metric with other
        settings (its ``num_tasks``, state shapes or names: a binned AUC's ``num_bins``,
        ``bin_space``, ``logit_range`` or ``from_logits``) is refused (``RuntimeError``, ``strict``
        or not) before anything of the wrapper loads: a window of another size or layout cannot be
        resumed. After ``persistent(False)`` nothing of the wrapper goes into ``state_dict`` (no
        ring either), and a checkpoint without the lifetime and window states loads nothing into
        it: the ring loads with them or not at all. A ``Windowed(Segmented(...))`` checkpoint of
        the earlier layout (a dense ``(T, S)`` slot of every state per update) loads and resumes:
        each slot becomes an update kept whole, leaving the window as that update would.

        **Merging.** :meth:`merge_state` merges another ``Windowed``'s *lifetime* into this one
        (exactly: as if one metric had seen both streams); the window stays this metric's own,
        since the window rule orders the updates of one stream and two independent streams have
        no common order of recent updates (see :meth:`merge_state`).

        **Collections.** Inside a :class:`~torchmetrics.MetricCollection` the wrapper takes the
        keyword arguments its wrapped metric's ``update`` takes, as TorchMetrics' own wrappers do:
        ``MetricCollection({"auc": Windowed(AUC(), n), "gauc": GroupedAUC()}).update(p, y, groups=g)``
        passes ``groups`` to ``GroupedAUC`` only.

        **Lightning.** ``compute`` returns a dict, and Lightning's ``self.log(name, metric)`` /
        ``self.log_dict(collection)`` require a metric object's ``compute`` to return a tensor (they
        raise "must be a tensor"): log the values, ``self.log_dict({f"ne/{k}": v for k, v in
        metric.compute().items()})``, e.g. in ``on_train_epoch_end`` (``docs/windows.md``).

        **Reading the window.** ``update`` does not write the window's tensor states (nor a
        binned metric's lifetime histogram); they are written when read: through
        ``metric.window`` / ``metric.lifetime``, ``compute``, a sync and ``state_dict``, and
        through the child metric's own ``compute``, ``sync``, ``merge_state``, ``state_dict``,
        ``metric_state`` and copies (``clone``, ``copy.deepcopy``, pickle, ``torch.save``), so a
        reference to ``metric.window`` kept across updates (in a ``MetricCollection``, a logger,
        or the metric object given to ``RecMetricModule(window_size=...)``, which becomes the
        lifetime) gives current values, and so does another metric's ``merge_state`` of it. A
        state *attribute* read from such a kept reference may predate the last update (so may
        ``metric_state`` of a wrapped TorchMetrics metric, which has no hook for it); read it as
        ``metric.window.<state>``. Write to the lifetime and window through the wrapper
        (:meth:`merge_state`, :meth:`reset`, :meth:`reset_lifetime`), not through a kept reference:
        the window's states (and a binned lifetime histogram) are rewritten from the ring when next
        read. Resets through a kept reference are the exceptions: ``metric.lifetime.reset()`` is
        :meth:`reset_lifetime`, and ``metric.window.reset()`` restarts the window (the ring forgets
        its updates; the window then holds the updates from the reset on, by the window rule) while
        the lifetime keeps everything; both (Lightning resetting a logged ``metric.lifetime`` and
        ``metric.window`` at an epoch's end) are :meth:`reset`.

        ``forward`` returns the batch's values in the same dict form: ``"lifetime"`` over the
        whole batch, ``"window"`` over the part of it that the window keeps. With
        ``dist_sync_on_step=True`` both are synced across ranks (the batch of every rank, and
        the kept part of every rank's batch), as TorchMetrics' ``forward`` does: two syncs per
        ``forward`` on every rank, whether its batch was cut or not, so every rank must call
        ``forward`` together.

        **Sync options and the window share.** Each rank keeps ``window_size // world_size``
        samples whatever the sync options: with ``sync_on_compute=False`` each rank's values are
        over its own samples and its own share of the window.

        **A TorchMetrics metric's ``cat`` states under DDP.** TorchMetrics sends the empty list
        state of a rank that never called ``update`` as a 1-D float32 tensor, and gathering it
        with other ranks' int64 targets or ``(N, C)`` scores aborts the process group (plain
        ``BinaryAUROC`` does). When the wrapped metric's list states declare no dtype (a
        TorchMetrics metric; the package's own declare theirs and are synced as before) the
        lifetime, the window and ``forward``'s batch values sync through
        :class:`~torchmetrics_ext.utilities.distributed.TypedGather` around the sync function
        (``dist_sync_fn``, else TorchMetrics' ``gather_all_tensors``; ``lifetime.dist_sync_fn``
        shows it wrapped): before each state's gather the ranks agree on its dtype and on an empty
        state's shape, one small extra collective per state. So every rank may call ``compute``
        or :meth:`sync` having seen no batch. Syncing a child by hand
        (``metric.lifetime.sync()``) bypasses it: sync the wrapper (:meth:`sync`) instead.

        Flat ranking input may carry ``weights`` in some batches and not in others (rows without
        weights weigh 1, as without a window); the metric keeps a weight chunk for every row
        chunk, so the window's rows and weights stay in step.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR, Windowed
        >>> metric = Windowed(CTR(), window_size=4)
        >>> metric.update(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1, 1, 1]))
        >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))  # 5 samples: the first update leaves
        >>> {name: round(value.item(), 3) for name, value in metric.compute().items()}
        {'lifetime': 0.6, 'window': 0.0}
        >>> metric.update(torch.tensor([0.5] * 6), torch.tensor([1, 1, 0, 0, 1, 1]))  # larger than the window
        >>> metric.compute()["window"]  # its newest 4 samples
        tensor(0.5000, dtype=torch.float64)
    """

    # True although `forward` is one step (it is overridden): its states are its children's, so
    # TorchMetrics' `Running` (which accepts only `full_state_update=False`) would keep none of them
    full_state_update: bool = True
    # TorchMetrics' meaning: `forward`'s value carries gradients. Not the wrapped metric's flag: the batch's
    # statistics are written into the ring's slots with gradients off, so no value here ever carries any
    # (tests/test_pointwise_contract.py checks the rule for Windowed(NE) too)
    is_differentiable: bool = False
    higher_is_better: bool | None = None  # that of the wrapped metric, per value
    _dict_value_entry = '"window"'  # a dict value: no metric arithmetic (TensorArithmetic)
    # a Windowed holds no state of its own (its children do): a window of it is not defined
    window_unsupported: ClassVar[str] = (
        "a Windowed cannot be wrapped again (its lifetime and window are already the wrapped metric's). "
        "Wrap the inner metric once: Windowed(metric, window_size); for windows of several sizes, wrap one "
        "copy of the metric per size."
    )
    # nn.Module's checkpoint version: rings of version 1 may hold states under their former names
    _version: int = _CHECKPOINT_VERSION
    lifetime: Metric
    window: Metric
    _scratch: Metric
    _ring: StateRing
    _hist: HistogramWindow | None
    _window_lists: dict[str, list[Tensor]]
    # whether the children sync through a TypedGather (list states of no declared dtype)
    _typed_sync: bool = False

    @torch.inference_mode(False)  # its rings and buffers are ordinary tensors when built under inference mode
    def __init__(
        self,
        metric: Metric,
        window_size: int,
        *,
        max_updates: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(metric, Metric):
            got = f"the class {metric.__name__}" if isinstance(metric, type) else type(metric).__name__
            raise WrongTypeError(f"Expected `metric` to be a torchmetrics.Metric instance, got {got}.")
        holder = owner_of(metric)
        if holder is not None:  # two wrappers would update (and reset) one object
            raise ValueError(
                f"Expected `metric` to be a metric no other wrapper holds: this {type(metric).__name__} already "
                f"belongs to a live {type(holder).__name__}, and one object would hold both's states (each "
                "lifetime would count the other's samples, one's reset would wipe the other's). Wrap a copy, "
                "`Windowed(copy.deepcopy(metric), window_size)`, or build one metric per wrapper."
            )
        # the wrapper's options: each one given here, else the metric's (checked by TorchMetrics)
        try:
            super().__init__(**wrapper_options(metric, kwargs, "Windowed"))
        except ValueError as error:  # an unknown option: named with the options Windowed takes
            raise unexpected_options(type(self), error) from None
        # lifetime and window values are better higher where the metric's are (MetricTracker reads it), and
        # lie within its bounds (plot)
        keep_direction_and_bounds(self, metric)
        window_size = check_int("window_size", window_size, 1, " (samples)")
        if max_updates is not None:
            max_updates = check_int("max_updates", max_updates, 1, " (updates) or None")
        # this package's own reason first (its metrics that refuse a window also set full_state_update)
        unsupported = getattr(metric, "window_unsupported", None)
        if unsupported:
            raise ValueError(f"Windowed cannot wrap {type(metric).__name__}: {unsupported}")
        if metric.full_state_update is not False:
            raise ValueError(
                f"Expected a metric whose batch statistics merge into its state ({type(metric).__name__} "
                "has full_state_update set): Windowed cannot wrap it. (TorchMetrics' MaxMetric and "
                "MinMetric set full_state_update; torchmetrics_ext.aggregation's Max and Min do not.)"
            )
        kinds = {n: state_kind(n, metric._reductions[n], metric._defaults[n]) for n in metric._defaults}
        if not kinds:
            raise ValueError(
                f"Expected a metric with states, {type(metric).__name__} declares none: Windowed keeps a window "
                "of the wrapped metric's own states, so a wrapper that keeps its states in the metrics it wraps "
                "cannot be windowed; wrap those metrics instead."
            )
        # The wrapper holds no state: its children sync, with the wrapper's options. `forward`'s batch
        # values are the wrapper's (synced by it with `dist_sync_on_step`): the children never forward.
        for name in METRIC_OPTIONS:
            setattr(metric, name, getattr(self, name))
        # list states of no declared dtype (a TorchMetrics metric's): TorchMetrics sends a rank's empty
        # one as 1-D float32, which no gather with other ranks' samples survives; the children (and
        # the scratch's dist_sync_on_step sync) agree on dtypes first. Ours declare them: no extra collective.
        declared = getattr(metric, "_list_state_dtypes", {})
        self._typed_sync = any(kind == "cat" and name not in declared for name, kind in kinds.items())
        if self._typed_sync:
            metric.dist_sync_fn = TypedGather(self.dist_sync_fn)
        metric.dist_sync_on_step = False
        metric._to_sync = metric.sync_on_compute
        self.window_size = window_size
        self.max_updates = max_updates
        # TorchRec's share of the window per rank, ceil(window_size / world_size), instead of ours
        # (floor): set by RecMetricModule.from_torchrec_config only
        # TorchRec's per-rank share, ceil(window_size / world_size): set by RecMetricModule.from_torchrec_config
        self._ceil_share = False
        # a metric whose sums are taken about a shift (Distribution): its lifetime keeps one for good, each
        # update its own (the ring keeps them raw, see below; a ring of an earlier version without raw
        # states starts each update from the lifetime's values of its pinned states, the shift)
        enter_window = getattr(metric, "_enter_window", None)
        if enter_window is not None:
            enter_window()
        self.__dict__["_pinned_states"] = tuple(getattr(metric, "_window_pinned_states", ()))
        self.lifetime = metric
        window = copy_metric(metric)
        window.reset()
        self.window = window
        for child in (metric, window):
            child.persistent(True)
        scratch = copy_metric(window)
        scratch.persistent(False)
        scratch.distributed_available_fn = _never_distributed
        # the scratch metric computes one batch's statistics into a ring slot; it is no submodule
        # (never saved, never synced), moved along in ``_apply``
        self.__dict__["_scratch"] = scratch
        # a binned metric's histograms, filled sample by sample, keep bin indices per update
        hist_names = _histogram_states(metric)
        if hist_names and kinds == dict.fromkeys(hist_names, "sum"):
            hist = HistogramWindow(_stacked(metric._defaults, hist_names), hist_names)
            held = {n: getattr(metric, n) for n in hist_names}
            hist.base.copy_(_stacked(held, hist_names))  # states held before wrapping stay in the lifetime
            self.__dict__["_hist"] = hist
            kinds = {}
        else:
            self.__dict__["_hist"] = None
        # states the ring keeps as each update's own statistics, read by the metric (`_window_states`): a
        # Distribution's sums, each update's about its own first value (see `_batch_into`)
        raw = tuple(n for n in getattr(metric, "_window_raw_states", ()) if kinds.get(n) in ("sum", "max"))
        self.__dict__["_raw_states"] = raw
        self.__dict__["_ring"] = StateRing(kinds, metric._defaults, raw)
        # running sums the metric keeps compensated (Distribution's, next to their rounding errors):
        # the lifetime adds each update to them with compensated_add_, not the plain fused fold,
        # whose roundings would add up over the run
        compensated = getattr(metric, "_compensated_sums", {})
        self.__dict__["_compensated"] = tuple(
            (total, error) for error, total in compensated.items() if kinds.get(total) == kinds.get(error) == "sum"
        )
        self.__dict__["_window_lists"] = {}
        self.__dict__["_window_stale"] = False
        # a metric that tells the samples a batch appends when it leaves its sums as they are (the
        # `_list_update` of an exact ranking metric, of the exact AUC family: AUC/AUPRC, grouped AUC/AUPRC,
        # RegressionAUC/XAUC) updates its window without a slot of statistics (see `_step`)
        self.__dict__["_zero_sums"] = (
            _lists_told_for_own_update(metric)
            and self.__dict__["_hist"] is None
            and not self.__dict__["_pinned_states"]
            and not self.__dict__["_compensated"]
            and set(self.__dict__["_ring"].groups) <= {"sum"}
        )
        self.__dict__["_lifetime_stale"] = False
        # a batch whose weights are all zero changes no value (DESIGN), so the window gives it no room; a metric
        # that counts rows whatever their weight (NumMissingLabels(count_zero_weight=True)) says so and keeps it
        self.__dict__["_skips_zero_weights"] = _skips_zero_weights(metric)
        self._bind_window_lists()
        for child in (metric, window):
            child.register_state_dict_pre_hook(_refresh_before_save)
        self.register_load_state_dict_post_hook(_apply_update_limit)
        end_loads_in_a_hook(self)  # after it: a refused load's missing keys are taken back first
        self._own_children()

    def _own_children(self) -> None:
        """Make every read of the lifetime and window metrics, through any reference to them, see current states.

        ``update`` leaves the window's tensor states (and a binned metric's lifetime histogram) to
        be written when read: through this wrapper's ``window``/``lifetime`` attributes, and
        (registered here) the child metric's own ``compute``, ``sync``, ``merge_state`` (and that
        of a metric merging it), ``state_dict``, ``metric_state`` (the package's metrics) and
        ``__getstate__`` (``deepcopy``, ``clone``, pickle, ``torch.save``), so a reference kept
        across updates (a ``MetricCollection``, a logger, the metric given to
        ``RecMetricModule(window_size=...)``) is never stale. Both children belong to this
        wrapper: no other ``Windowed`` or ``RecMetricModule`` takes them. Run again for a copy,
        whose children are new objects.
        """
        children = [self._child(name) for name in ("lifetime", "window")]
        for name, child in zip(("lifetime", "window"), children):
            _own(child, self, name)
        take_ownership(children, self)

    def __getstate__(self) -> dict[str, Any]:
        """TorchMetrics' state for copies and pickles, without what a load ended midway kept (``drop_pending_load``)."""
        return drop_pending_load(super().__getstate__())

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """``copy.deepcopy`` (``clone``); under ``torch.inference_mode()`` too, the copy's tensors are ordinary.

        See :meth:`GuardedMetric.__deepcopy__ <torchmetrics_ext.metrics.base.GuardedMetric.__deepcopy__>`.
        """
        return deepcopy_ordinary(self, memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        ordinary_tensors(state)  # unpickled under inference mode: tensors written in place are ordinary
        super().__setstate__(state)
        # pickled before the wrapped metric's class gained a state (NE's neg_labels; the lifetime, window
        # and scratch metric, unpickled first, have it): the ring keeps it too, derived as a load derives it
        life, ring = self._child("lifetime"), self._ring
        for name, (derive, sources) in getattr(life, "_derived_states", {}).items():
            summed = life._reductions.get(name) is dim_zero_sum and isinstance(life._defaults.get(name), Tensor)
            if summed and name not in ring.kinds and all(s in ring.rings for s in sources):
                ring.add_derived(name, derive, sources)
        if "_skips_zero_weights" not in state:  # pickled before the zero-weight rule: the metric's flag says it
            self.__dict__["_skips_zero_weights"] = _skips_zero_weights(life)
        if "_raw_states" not in state:  # pickled before the ring kept raw states: its front rows hold their suffix sums
            raw = tuple(n for n in getattr(life, "_window_raw_states", ()) if ring.kinds.get(n) in ("sum", "max"))
            self.__dict__["_raw_states"] = raw
            ring.raw, ring.legacy = frozenset(raw), ring.front if raw else 0
        if "_pinned_states" not in state:  # pickled by an earlier version
            life = self._child("lifetime")
            pinned = tuple(getattr(life, "_window_pinned_states", ()))
            self.__dict__["_pinned_states"] = pinned
            # the ring's identity of each pinned state is the metric's default as it loaded (a Distribution
            # of that time: -inf, not the 0 it was pickled with, so that a reset chooses its shift afresh)
            ring = self._ring
            for name in pinned:
                default = life._defaults.get(name)
                if name in ring.defaults and isinstance(default, Tensor):
                    ring.defaults[name] = default.detach().clone()
                    if ring.count == 0:  # an empty ring's back aggregates no update: the identity
                        ring.back[name] = ring.defaults[name].clone()
        self._own_children()

    def __getattr__(self, name: str) -> Any:
        """Submodules as ``nn.Module`` finds them; ``window`` and ``lifetime`` with their states brought up to date."""
        value = super().__getattr__(name)
        if name in ("window", "lifetime"):
            self._refresh(name)
        return value

    def _child(self, name: str) -> Metric:
        """The lifetime or window metric as stored (no refresh of deferred states)."""
        return self._modules[name]  # type: ignore[return-value]

    def _refresh(self, name: str) -> None:
        """Write the deferred tensor states of child ``name`` (``"window"`` or ``"lifetime"``) if they are stale."""
        state = self.__dict__
        if not state.get(f"_{name}_stale"):
            return
        state[f"_{name}_stale"] = False
        child = self._modules[name]
        hist = self._hist
        if name == "window":
            self._ring.window_into({n: getattr(child, n) for n in self._ring.tensor_names})
            if self._ring.raw:  # each update's own statistics, joined by the metric
                for state, value in child._window_states(self._ring.raw_rows()).items():  # type: ignore[union-attr,operator]
                    getattr(child, state).copy_(value)
            if hist is not None:
                hist.window_into([getattr(child, n) for n in hist.names])
        elif hist is not None:
            hist.lifetime_into([getattr(child, n) for n in hist.names])
        child.__dict__["_computed"] = None  # a value computed from the stale states is not kept

    # ------------------------------------------------------------------ update

    def _local_window(self) -> int:
        """This rank's share of the window: ``window_size // world_size`` (TorchRec's ``ceil`` when ``_ceil_share``).

        Every ``update``, ``forward`` (empty batch or not), :meth:`sync` and :meth:`compute` asks for
        it first, so a window smaller than the world is refused on every rank at the same call,
        before any collective, also on a rank without data (one refusing alone would leave the
        others waiting in the next sync). The group's size is read once (:func:`_world_size`).

        Raises:
            ValueError: under DDP, ``window_size`` is smaller than the world size (a share of 0).
        """
        world = _world_size(self._modules["lifetime"].process_group)  # type: ignore[union-attr]  # `_child` inline
        if not world:
            return self.window_size
        if self._ceil_share:
            return -(-self.window_size // world)
        if self.window_size < world:
            raise ValueError(
                f"Expected `window_size` ({self.window_size}) to be at least the world size ({world}): "
                "each rank keeps window_size // world_size samples."
            )
        return self.window_size // world

    def _count(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Samples in the batch: the metric's ``sample_count`` hook, else the first axis of its first array.

        Without the hook (a TorchMetrics metric) the inputs are ``(N, ...)``; a batch of scalars only
        (a step's loss for ``MeanMetric``) is one sample.
        """
        scratch = self._scratch
        # a TaskMetric's own hook (the sample axis of its first array argument), answered without its calls
        if args and getattr(type(scratch), "sample_count", None) is TaskMetric.sample_count:
            first = args[0]
            if isinstance(first, Tensor) and first.ndim > 0:
                return int(first.shape[scratch.sample_axis])  # type: ignore[index]  # no `cast` call per update
        hook = getattr(scratch, "sample_count", None)
        return int(hook(*args, **kwargs)) if hook is not None else count_samples(args, kwargs, axis=0)

    def _newest(self, n: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The batch cut to its newest ``n`` samples (the metric's ``newest_samples`` hook, else the first axis)."""
        hook = getattr(self._scratch, "newest_samples", None)
        return hook(n, *args, **kwargs) if hook is not None else newest_samples(n, args, kwargs, axis=0)

    @contextmanager
    def _validated_already(self) -> Iterator[None]:
        """The scratch metric trusts its inputs: the newest samples of a batch it has just validated whole.

        The cut views are new tensors, whose bounds the device path would read again (a second host
        sync in the step); a metric without the switch (a TorchMetrics metric) validates as usual.
        """
        trust = getattr(self._scratch, "_trust_inputs", None)
        previous = trust(True) if trust is not None else None
        try:
            yield
        finally:
            if trust is not None:
                trust(previous)

    def _bind_window_lists(self) -> None:
        """Make the window's list states the ring's chunks again (after a sync, load, reset or move)."""
        for name in self._ring.list_names:
            chunks = self._ring.window_chunks(name)
            setattr(self._modules["window"], name, chunks)
            self._window_lists[name] = chunks

    def _window_lists_bound(self) -> bool:
        return all(
            getattr(self._modules["window"], name) is chunks and len(chunks) == self._ring.num_chunks[name]
            for name, chunks in self._window_lists.items()
        )

    def _batch_into(
        self, slot: dict[str, Tensor], args: Any, kwargs: Any, start: Mapping[str, Tensor] | None = None
    ) -> dict[str, list[Tensor]]:
        """One batch's statistics: the scratch metric's ``update``, from the identity, straight into ``slot``.

        The metric's pinned states (``_window_pinned_states``: Distribution's shift) start from the
        lifetime's values, or from ``start``'s (the whole batch's, for the part of it the window keeps).
        """
        scratch, ring = self._scratch, self._ring
        ring.reset(slot)
        pinned = self.__dict__.get("_pinned_states", ())
        if ring.raw:
            # each update's statistics are its own (about its own shift); the metric gives the lifetime's
            # too (`_lifetime_batch`) for the whole batch, not for the part of it the window keeps
            pinned = ()
            scratch.__dict__["_window_lifetime"] = self._modules["lifetime"] if start is None else None
        if pinned:
            life = self._modules["lifetime"]
            for name in pinned:
                slot[name].copy_(getattr(life, name) if start is None else start[name])
        # The scratch's tensor states *are* the slot's views; written into ``__dict__`` as
        # ``nn.Module.__setattr__`` would for a plain tensor, without its per-call checks.
        scratch.__dict__.update(slot)
        for name in ring.list_names:
            getattr(scratch, name).clear()  # its chunks were handed over as copies of the list
        # TorchMetrics' update wrapper adds nothing for the scratch metric when gradients are off
        if ring.raw:
            try:
                getattr(scratch, "update_unwrapped", scratch.update)(*args, **kwargs)
            finally:
                scratch.__dict__.pop("_window_lifetime", None)
        else:
            getattr(scratch, "update_unwrapped", scratch.update)(*args, **kwargs)
        for name, view in slot.items():  # a metric that rebinds a state instead of updating it in place
            value = getattr(scratch, name)
            if value is not view:
                view.copy_(value)
        return {name: list(getattr(scratch, name)) for name in ring.list_names}

    def _batch_value(self, want: bool) -> Any:
        """The scratch metric's value (one batch's statistics) when ``want``: synced with ``dist_sync_on_step``."""
        if not want:
            return None
        scratch = self._scratch
        if not self.dist_sync_on_step:
            return scratch.compute()
        # as TorchMetrics' forward does with dist_sync_on_step: the batch's states synced for its value,
        # with the wrapper's sync function, group and availability test (the scratch's never syncs)
        state = scratch.__dict__  # plain attributes
        state["_computed"] = None
        state["_to_sync"], state["distributed_available_fn"] = True, self.distributed_available_fn
        try:
            return scratch.compute()
        finally:
            state["_to_sync"], state["distributed_available_fn"] = scratch.sync_on_compute, _never_distributed
            state["_computed"] = None

    def _histogram_value(self, entries: tuple[Tensor, Tensor | None] | None) -> Any:
        """The metric's value of one batch given as its histogram entries (``forward``'s batch values)."""
        scratch, hist = self._scratch, self._hist
        assert hist is not None
        states = [getattr(scratch, n) for n in hist.names]
        torch._foreach_zero_(states)
        if entries is not None:
            index, values = entries
            for k, state in enumerate(states):
                add_entries(state, index, values if hist.count == 1 or values is None else values[k])
        scratch.__dict__["_update_count"] += 1
        scratch.__dict__["_computed"] = None
        return self._batch_value(True)

    def _histogram_step(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], values: bool, known_zero: bool | None = None
    ) -> tuple[Any, Any]:
        """:meth:`_step` for a binned metric: the batch's bin indices go to the lifetime and the window.

        Run with gradients off, as TorchMetrics runs an ``update``: ``Windowed.update`` is not wrapped
        by TorchMetrics, and a ``Segmented`` metric's entries are its per-sample terms, computed from
        ``preds``: raw model outputs (``requires_grad=True``) left the histograms holding the step's
        graph, and the next read of the lifetime failed (``add(): functions with out=... arguments
        don't support automatic differentiation``).
        """
        if torch.is_grad_enabled():  # (the switch without its context-manager objects: a per-step cost)
            torch._C._set_grad_enabled(False)
            try:
                return self._histogram_step(args, kwargs, values, known_zero)
            finally:
                torch._C._set_grad_enabled(True)
        limit = self._local_window()
        scratch, hist = self._scratch, self._hist
        assert hist is not None
        if known_zero is None:
            with noting_zero_weights() as note:
                entries = scratch._histogram_entries(*args, **kwargs)  # type: ignore[operator]  # validates
            # validated weights all zero: the lifetime takes them, the window does not
            zero = self._takes_no_room(note)
        else:  # the caller checked the batch (its inputs trusted: nothing to note, see `_step`)
            entries = scratch._histogram_entries(*args, **kwargs)  # type: ignore[operator]
            zero = self._skips_zero(known_zero)
        size = kept_size = self._count(args, kwargs)
        kept = entries
        if zero:
            kept, kept_size = None, 0
        elif size > limit:  # the window keeps the newest `limit` samples; the lifetime all of them
            cut_args, cut_kwargs = self._newest(limit, args, kwargs)
            with self._validated_already():
                kept = scratch._histogram_entries(*cut_args, **cut_kwargs)  # type: ignore[operator]
            kept_size = limit
        lifetime_value = window_value = None
        if values:
            lifetime_value = window_value = self._histogram_value(entries)
            # with dist_sync_on_step every rank syncs the kept part too, cut on this rank or not
            # (a zero-weight batch: the window keeps none of it, its value named as a cut batch's would be)
            if (size > limit if zero else kept is not entries) or self.dist_sync_on_step:
                with naming_part("window"):  # its undefined-value warning says which of the two it is
                    window_value = self._histogram_value(entries if zero else kept)
        # ---- commit: nothing below raises
        if zero and entries is not None:  # (adds zeros to the sums weighted by them, as an update does)
            hist.add(hist.base, *entries)
            self.__dict__["_lifetime_stale"] = True
        elif kept is not None and kept_size > 0:
            if kept is not entries:  # the samples the window does not keep go to the lifetime only
                assert entries is not None
                hist.add(hist.base, *_oldest(entries, size - limit))
            hist.push(kept[0], kept[1], kept_size)
            hist.evict(limit, self.max_updates)
            self.__dict__["_window_stale"] = self.__dict__["_lifetime_stale"] = True
        self._count_update()
        return lifetime_value, window_value

    def _step(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        values: bool,
        limit: int | None = None,
        known_zero: bool | None = None,
    ) -> tuple[Any, Any]:
        """One batch into lifetime and window; batch values when ``values``. Nothing changes if it raises.

        ``limit``: this rank's share of the window when the caller has read it for this step
        (``RecMetricModule``, once for all its units), else read here. ``known_zero``: whether the
        batch's weights are all zero, when the caller checked them (``RecMetricModule``, whose units
        take inputs it validated and note nothing themselves: no note is taken, a per-step cost per
        unit); ``None``: the wrapped metric's own checks note it.
        """
        if self._hist is not None:
            return self._histogram_step(args, kwargs, values, known_zero)
        if limit is None:
            limit = self._local_window()
        ring = self._ring
        first = args[0] if args else None
        if (
            not values
            and ring.list_names
            and self.__dict__.get("_zero_sums", False)
            and isinstance(first, Tensor)
            and first.ndim  # its samples counted off its shape before validation (nothing to raise)
        ):
            size = self._count(args, kwargs)
            if size <= limit:  # (a batch cut to the window: the general way)
                # a batch that only appends samples (exact ranking rows, exact AUC chunks): no slot to fill
                if known_zero is None:
                    with noting_zero_weights() as note:
                        appended = self._scratch._list_update(*args, **kwargs)  # type: ignore[operator]  # validates
                else:  # the caller checked the batch (see the docstring)
                    appended = self._scratch._list_update(*args, **kwargs)  # type: ignore[operator]
                # (an empty batch that appends chunks, kept for their dtypes: the general way)
                if appended is not None and (size > 0 or not any(appended.values())):
                    # all-zero validated weights: to the lifetime only (no room in the window)
                    zero = self._takes_no_room(note) if known_zero is None else self._skips_zero(known_zero)
                    self._commit_lists(appended, 0 if zero else size, limit)
                    return None, None
        slot = ring.next_slot()
        if known_zero is None:
            with noting_zero_weights() as note:
                lists = self._batch_into(slot, args, kwargs)  # validates: a rejected batch stops here
        else:  # the caller checked the batch (see the docstring)
            lists = self._batch_into(slot, args, kwargs)
        # the whole batch's statistics as the lifetime takes them (a metric of raw states: its own fold)
        life_batch = self._scratch.__dict__.pop("_lifetime_batch", None)
        # validated weights that are all zero (noted from the bounds the checks read, or known to the
        # caller): the batch goes to the lifetime (where it adds nothing weighted) and takes no room in the window
        zero = self._takes_no_room(note) if known_zero is None else self._skips_zero(known_zero)
        size = self._count(args, kwargs)
        lifetime_value = window_value = self._batch_value(values)
        full, full_lists = slot, lists
        if zero:  # (its value for `forward`: named and synced as the general way names and syncs it)
            if values and (size > limit or self.dist_sync_on_step):
                self._scratch.__dict__["_computed"] = None  # computed again, warning under the window's name
                with naming_part("window"):
                    window_value = self._batch_value(values)
            size = 0
        elif size > limit:  # the window keeps the newest `limit` samples; the lifetime all of them
            full = {name: view.clone() for name, view in slot.items()}
            with self._validated_already():
                lists = _kept_like(self._batch_into(slot, *self._newest(limit, args, kwargs), full), full_lists)
            size = limit
            with naming_part("window"):  # its undefined-value warning says which of the two it is
                window_value = self._batch_value(values)
        elif values and self.dist_sync_on_step:  # every rank syncs the kept part too, cut on this rank or not
            with naming_part("window"):
                window_value = self._batch_value(values)
        # ---- commit: nothing below raises
        life = self._modules["lifetime"]
        compensated = self.__dict__.get("_compensated", ())
        targets = {name: getattr(life, name) for name in ring.tensor_names}
        if life_batch is not None:  # the lifetime folds the batch itself (its sums about its own shift)
            life._fold(life_batch)  # type: ignore[union-attr,operator]
            targets, compensated = {}, ()
        if compensated:  # the batch's sums are added to the lifetime's with their rounding errors kept
            sums = [targets.pop(total) for total, _ in compensated]
            compensated_add_(sums, [targets[error] for _, error in compensated], [full[t] for t, _ in compensated])
        lifetime_fold = [(targets, full)]
        if ring.list_names:
            for name in ring.list_names:
                getattr(life, name).extend(full_lists[name])
            if not self._window_lists_bound():
                self._bind_window_lists()
        # an empty batch takes no room in the window, but its empty chunks are kept while the
        # window has none: they give a sync the dtype of the states (a TorchMetrics metric's
        # empty list syncs as float32, and a gather of mismatched dtypes aborts the process)
        # (not rows of zero weight, which the window does not take: the package's metrics declare their dtypes)
        carrier = (
            not zero and size == 0 and any(lists[n] for n in ring.list_names) and not any(self._window_lists.values())
        )
        if size > 0 or carrier:
            ring.push(slot, lists, size, also=lifetime_fold)
            for name in ring.list_names:
                self._window_lists[name].extend(lists[name])
            ring.evict(limit, self.max_updates, self._window_lists)
            # the window's newest small segments joined into one, shared with the lifetime where it
            # holds their chunks (not after a load, a move, a cut update or an empty batch between)
            ring.join_newest(self._window_lists, {name: getattr(life, name) for name in ring.list_names})
            # the window's tensor states are written when next read (compute, sync, state_dict, the
            # `window` attribute): one pass over them per read instead of one per update
            self.__dict__["_window_stale"] = bool(ring.tensor_names)
        else:
            ring.fold(lifetime_fold)
        if ring.list_names:
            # the lifetime's small chunks are joined once they have left the window: the window's
            # chunks stay the lifetime's own (shared storage; the window joins its own, see
            # _share_joined), and the lifetime list stays as short as a plain metric's plus the
            # window's few entries
            self._join_lifetime_chunks([getattr(life, name) for name in ring.list_names])
        self._count_update()
        return lifetime_value, window_value

    def _takes_no_room(self, note: ZeroWeightNote) -> bool:
        """Whether the update just validated under ``note`` takes no room in the window: its weights all zero.

        DESIGN: such a batch changes nothing. A metric whose value counts zero-weight rows
        (``_zero_weight_batches_count``; an object pickled before the rule reads it on unpickling) keeps it.
        """
        return note.zero is True and self.__dict__.get("_skips_zero_weights", True)

    def _skips_zero(self, known_zero: bool) -> bool:
        """:meth:`_takes_no_room` of a batch whose caller checked its weights (``known_zero``: all zero)."""
        return known_zero and self.__dict__.get("_skips_zero_weights", True)

    def _commit_lists(self, lists: dict[str, list[Tensor]], size: int, limit: int) -> None:
        """The commit of :meth:`_step` for an update of ``size`` samples (all kept) that only appended ``lists``.

        The metric's ``_list_update`` gave the chunks its ``update`` would append and left its sums
        as they were: the ring takes an update of zero statistics (:meth:`StateRing.push_zero`:
        nothing to add to the window's sums or the lifetime's), and the chunks go to the lifetime,
        the ring and the window as :meth:`_step` puts them; an empty batch (nothing appended) is
        counted only. Nothing here raises.
        """
        ring, modules = self._ring, self._modules
        life = modules["lifetime"]
        names = ring.list_names
        life_lists = [getattr(life, name) for name in names]
        for chunks, name in zip(life_lists, names):
            chunks.extend(lists[name])
        window_lists = self._window_lists
        window = modules["window"].__dict__
        num_chunks = ring.num_chunks
        for name, bound in window_lists.items():  # `_window_lists_bound`, inline
            if window.get(name) is not bound or len(bound) != num_chunks[name]:
                self._bind_window_lists()
                break
        if size > 0:  # an empty batch takes no room in the window
            ring.push_zero(lists, size)
            for name, chunks in window_lists.items():
                chunks.extend(lists[name])
            ring.evict(limit, self.max_updates, window_lists)
            # the window's newest small segments joined into one, shared with the lifetime (see `_step`)
            if len(ring.spans) >= _JOIN:  # (fewer segments: `join_newest` joins nothing)
                ring.join_newest(window_lists, dict(zip(names, life_lists)))
            # the window's tensor states are written when next read (see `_step`): an update it evicted may hold sums
            self.__dict__["_window_stale"] = bool(ring.tensor_names)
        self._join_lifetime_chunks(life_lists)
        self._count_update()

    def _join_lifetime_chunks(self, life_lists: list[list[Tensor]]) -> None:
        """The lifetime's small chunks joined once they have left the window (see :meth:`_step`)."""
        ring = self._ring
        kept = self._window_lists[ring.list_names[0]]
        keep = max(ring.num_chunks.values())
        if len(life_lists[0]) - keep >= _JOIN:  # (fewer chunks before the window's: nothing to join)
            join_small_tails(life_lists, keep=keep, kept_first=kept[0] if kept else None)
        # the join above looks at the 64 chunks just before the window's only: where updates
        # leave the window many at a time (a large batch), or a large chunk is among those 64,
        # runs of small chunks are joined by the metrics' amortised run join (once the chunks
        # before the window's have doubled, plus 64, since the last one: O(1) per update)
        join_runs_amortised(life_lists, self.__dict__, keep=keep, frozen=kept)

    def _count_update(self) -> None:
        """Count one update on the wrapper and both children as TorchMetrics' update wrapper does (plain attributes)."""
        modules = self._modules
        for child in (self, modules["lifetime"], modules["window"]):
            state = child.__dict__
            state["_update_count"] += 1
            state["_computed"] = None

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add one batch (the wrapped metric's ``update`` arguments) to the lifetime and the window."""
        self._refuse_while_synced("update")
        scratch = self._scratch.__dict__  # the bootstrap check's gate read inline: no call on an unvalidated step
        if scratch.get("validate_args") and (
            (mark := scratch.get(_OUTSIDE_BOOTSTRAP)) is None or mark() is not self._scratch
        ):
            self._refuse_bootstrapped_tasks(args, kwargs)
        self._step(args, kwargs, values=False)

    def _refuse_bootstrapped_tasks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A task-first batch that TorchMetrics' ``BootStrapper`` resampled along its tasks is a ``ValueError``.

        As the wrapped metric's own ``update`` refuses it (:func:`refuse_bootstrapped_tasks`), checked here
        since the wrapper feeds its children without their update wrappers.

        ``update`` and ``forward`` call it only while the wrapped metric validates and has no mark of an update
        outside a bootstrap (read inline there).
        """
        scratch = self._scratch
        if getattr(scratch, "sample_axis", 0) == -1 and scratch.validate_args and not scratch._inputs_checked:
            refuse_bootstrapped_tasks(scratch, args, kwargs)

    def _refuse_while_synced(self, method: str) -> None:
        """TorchMetrics' refusal of ``forward`` on a synced metric, for ``update`` too.

        Between a manual :meth:`sync` and :meth:`unsync` the lifetime and window hold every rank's
        states; ``unsync`` restores the local ones cached before the sync, so a batch added in
        between left the lifetime (restored without it) while it stayed in the ring and the window.
        """
        modules = self._modules  # read inline, not through `first_synced`: one call less per update
        if modules["lifetime"]._is_synced or modules["window"]._is_synced:  # type: ignore[union-attr]
            raise TorchMetricsUserError(
                f"The Metric shouldn't be synced when performing ``{method}``. "
                "HINT: Did you forget to call ``unsync`` ?."
            )

    def _filter_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """The keyword arguments the wrapped metric's ``update`` takes (a ``MetricCollection`` passes all of them)."""
        return self._child("lifetime")._filter_kwargs(**kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Add one batch and return its values: ``{"lifetime": batch value, "window": value of its kept part}``."""
        self._refuse_while_synced("forward")
        scratch = self._scratch.__dict__  # the bootstrap check's gate read inline: no call on an unvalidated step
        if scratch.get("validate_args") and (
            (mark := scratch.get(_OUTSIDE_BOOTSTRAP)) is None or mark() is not self._scratch
        ):
            self._refuse_bootstrapped_tasks(args, kwargs)
        lifetime_value, window_value = self._step(args, kwargs, values=True)
        return {"lifetime": lifetime_value, "window": window_value}

    @contextmanager
    def inputs_validated(self) -> Iterator[None]:
        """Within this block ``update`` trusts its inputs (a caller validated the batch already)."""
        previous = self._trust_inputs(True)
        try:
            yield
        finally:
            self._trust_inputs(previous)

    def _trust_inputs(self, trusted: bool) -> bool:
        """Set whether ``update`` trusts its inputs (:meth:`inputs_validated`); return the previous setting."""
        state = self._scratch.__dict__  # a plain attribute: skip nn.Module's __setattr__ on this per-step path
        previous, state["_inputs_checked"] = state.get("_inputs_checked", False), trusted
        return previous

    # ------------------------------------------------------------------ compute, reset, persistence

    def items(self) -> Any:
        """Not a mapping of metrics: raises ``TypeError`` naming ``self.log_dict(windowed.compute())`` instead.

        Raises:
            TypeError: always (``LightningModule.log_dict(windowed)`` iterates ``items()``).
        """
        raise not_a_dict_of_metrics(self)

    def values(self) -> Any:
        """Not a mapping of metrics: raises the ``TypeError`` of :meth:`items` (Fabric's ``log_dict`` reads it).

        Raises:
            TypeError: always, as :meth:`items`.
        """
        raise not_a_dict_of_metrics(self)

    def _entry_value_example(self, idx: Any) -> str | None:
        """``windowed["window"]`` of a dict-valued metric is a dict: an index of it (see :class:`TensorArithmetic`)."""
        life = self.lifetime
        # a string first: `in` compares with `==`, which an array index answers elementwise (ambiguous truth value)
        if isinstance(idx, str) and idx in ("lifetime", "window") and isinstance(life, TensorArithmetic):
            return life._dict_value_example()
        return None

    def compute(self) -> dict[str, Any]:
        """``{"lifetime": value over everything, "window": value over the window}``, each synced across ranks.

        Where they sync, both are computed afresh on every rank (a wrapped TorchMetrics metric's
        cached value too: see :func:`~torchmetrics_ext.metrics.base.fresh_when_syncing`).
        """
        self._local_window()  # a window smaller than the world: refused on every rank, before the sync
        life, window = self.lifetime, self.window
        # a checkpoint's updates are data, not a forgotten update: no TorchMetrics "compute before update"
        # warning from a wrapped TorchMetrics metric, whose own update count a load leaves at 0
        restored = [c for c in (life, window) if c._update_count == 0] if self.__dict__.get("_restored") else []
        with counted_as_updated(restored):
            with naming_part(None):
                lifetime = computed_fresh(life, life.compute)
            with naming_part("window"):  # its undefined-value warning says which of the two it is
                return {"lifetime": lifetime, "window": computed_fresh(window, window.compute)}

    def reset(self) -> None:
        """Clear the lifetime, the window and the ring (ordinary tensors, under ``torch.inference_mode()`` too)."""
        with torch.inference_mode(False):  # a wrapped TorchMetrics metric's reset would make inference tensors
            super().reset()
            self._ring.clear()
            if self._hist is not None:
                self._hist.clear()
            self.__dict__["_window_stale"] = self.__dict__["_lifetime_stale"] = False
            self._child("lifetime").reset()
            self._child("window").reset()
        self.__dict__["_restored"] = False
        note_saved_ranks(self, None)  # it holds no saved rank's states now
        self._bind_window_lists()

    def reset_lifetime(self) -> None:
        """Clear the lifetime only: the window keeps its updates and goes on (a daily lifetime beside the last hour).

        The lifetime then covers the updates from here on, as a plain metric ``reset()`` at this
        point and fed the later updates; the window is unchanged, and later updates evict from it
        as before (a window value equals the uninterrupted run's). :meth:`reset` clears both.
        ``metric.lifetime.reset()`` (through any reference to the lifetime metric: the metric given to
        ``RecMetricModule(window_size=...)``, a logged ``metric.lifetime`` that Lightning resets) does
        the same: a binned AUC's lifetime histogram, written from the window's sums when read, is
        emptied of the lifetime's part alone.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR, Windowed
            >>> ctr = Windowed(CTR(), window_size=4)
            >>> ctr.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 1]))
            >>> ctr.reset_lifetime()  # e.g. at midnight
            >>> ctr.update(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
            >>> {name: value.item() for name, value in ctr.compute().items()}
            {'lifetime': 0.0, 'window': 0.5}
        """
        self._child("lifetime").reset()  # through the reset of the lifetime metric: `_restart_lifetime` first

    def _restart_lifetime(self) -> None:
        """The wrapper's part of a lifetime reset: a binned metric's histogram keeps the window's part alone."""
        if self._hist is not None:  # its sums are the window's too: the lifetime's part alone is emptied
            self._hist.restart_lifetime()
        self.__dict__["_lifetime_stale"] = False
        self._computed = None

    def _restart_window(self) -> None:
        """The wrapper's part of a window reset (after the window metric's own): the ring forgets its updates.

        The lifetime is left exactly as it was: its sums and samples are its own states (the
        window's exact chunks are views the lifetime holds too), and a binned metric's lifetime
        histogram, the window's block sums plus a base, is first gathered into the base.
        """
        with torch.inference_mode(False):
            self._ring.clear()
            if self._hist is not None:
                self._hist.restart_window()
        self.__dict__["_window_stale"] = False
        self._computed = None
        self._bind_window_lists()

    def drop_lifetime_samples(self) -> None:
        """Empty the lifetime of a metric that stores samples (``cat`` states): for a window-only caller.

        The window is unchanged; a metric without sample states (sums, histograms) is left as it is.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import AUC, Windowed
            >>> metric = Windowed(AUC(), window_size=4)
            >>> metric.update(torch.tensor([0.9, 0.1, 0.8, 0.3]), torch.tensor([1, 0, 0, 1]))
            >>> metric.update(torch.tensor([0.7, 0.2]), torch.tensor([1, 0]))
            >>> metric.compute()  # lifetime: 7 of 9 pairs in order; window: the newest update (4 + 2 > 4)
            {'lifetime': tensor(0.7778, dtype=torch.float64), 'window': tensor(1., dtype=torch.float64)}
            >>> metric.drop_lifetime_samples()  # only the window is read: free the six samples
            >>> metric.lifetime.metric_state, metric.window.compute()
            ({'preds': [], 'signed_weights': []}, tensor(1., dtype=torch.float64))
        """
        if self._ring.list_names:
            self._child("lifetime").reset()

    @torch.inference_mode(False)  # the merged lifetime is written in place by later updates: ordinary tensors
    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Merge another metric's lifetime into this one's; this metric's window stays as it is.

        The lifetime then holds what one metric updated with both metrics' batches holds (the
        wrapped metric's own ``merge_state``: sums added, ``max``/``min`` taken, samples joined).
        The window is not merged: the window rule keeps the newest updates of *one* stream of
        updates, and two metrics updated independently have no common order of their recent
        updates, so "the newest ``window_size`` samples" of both is not defined. The window stays
        this metric's own (its newest samples), and later updates evict from it as before. For
        a window over several workers, run them as DDP ranks: each keeps its share and
        ``compute`` syncs them.

        Args:
            incoming_state: a ``Windowed`` over the same metric class and settings (its lifetime is
                merged), or a dict of the wrapped metric's states (e.g. ``other.lifetime.metric_state``).

        Raises:
            TypeError: ``incoming_state`` is neither, or wraps another metric class (for a wrapped
                ``Segmented``, another wrapped metric: ``Segmented(CTR)`` and ``Segmented(Calibration)``
                keep sums of the same names and shapes).
            ValueError: the states do not fit this metric's (other state names, e.g. of another mode,
                other shapes, another ``num_tasks``), or the dict is empty (``other.metric_state`` of a
                ``Windowed``, whose states are its children's); nothing changes.
        """
        life = self.lifetime  # its deferred states written first
        if isinstance(incoming_state, Windowed):
            other = incoming_state.lifetime
            # the class, and for a wrapper (Segmented) the wrapped metric's: a Segmented(Calibration)'s
            # sums have the names and shapes of a Segmented(CTR)'s and mean something else
            theirs_kind, ours_kind = merged_kind(other), merged_kind(life)
            if type(other) is not type(life) or theirs_kind != ours_kind:
                raise WrongTypeError(f"Expected a Windowed over {ours_kind} to merge, got one over {theirs_kind}.")
            if isinstance(life, GuardedMetric) and merge_settings_differ(
                other._checkpoint_settings(),  # type: ignore[operator]
                life._checkpoint_settings(),
                same_states=other._defaults.keys() == life._defaults.keys(),
            ):
                raise ValueError(
                    f"Cannot merge a Windowed over {type(other).__name__} with settings "
                    f"{other._checkpoint_settings()} into one with {life._checkpoint_settings()}."  # type: ignore[operator]
                )
            states = other.metric_state
        elif isinstance(incoming_state, dict):
            if not incoming_state:  # TorchMetrics' `merge_state(other.metric_state)`: a Windowed's is `{}`
                raise ValueError(
                    f"Cannot merge into Windowed({type(life).__name__}): got an empty dict. A Windowed's own "
                    "`metric_state` is empty (its states are its lifetime's and window's): pass "
                    "`other.lifetime.metric_state` (the wrapped metric's states) or the Windowed itself."
                )
            states = dict(incoming_state)  # one of an earlier version lacks the states added since: derived
            if isinstance(life, GuardedMetric):
                derive_missing(states, life._merge_derivations())
        else:
            raise WrongTypeError(
                "Expected `incoming_state` to be a Windowed or a dict of the wrapped metric's states, "
                f"got {type(incoming_state).__name__}."
            )
        if isinstance(life, GuardedMetric):
            # states under a former name of the lifetime's (Sum's of another nan_strategy, TorchMetrics' names):
            # the names its own merge_state and checkpoint load read them under
            renamed = life._former_state_names(states)
            if renamed:
                states = {renamed.get(name, name): value for name, value in states.items()}
            states = life._as_list_states(states)  # a synced metric's list states are single tensors
            problems = life._merge_problems(states)  # exactly its state names, shapes and kinds
        else:
            missing = sorted(set(life._defaults) - set(states))
            problems = [f"missing states {missing}."] if missing else []
            origin = "merged metric" if isinstance(incoming_state, Windowed) else "merged dict"
            owner = f"this Windowed({type(life).__name__})"
            problems = problems or tensor_state_problems(life, states, "", owner, origin)
        if problems:
            raise ValueError(f"Cannot merge into Windowed({type(life).__name__}): " + " ".join(problems))
        hist = self._hist
        if hist is not None:  # the lifetime histogram is the window's running sums plus its base
            for name, base in zip(hist.names, [hist.base] if hist.count == 1 else hist.base.unbind(0)):
                incoming = states[name]
                assert isinstance(incoming, Tensor)  # checked above: a tensor of the histogram's shape
                base += incoming.to(device=hist.base.device, dtype=hist.base.dtype)
            self.__dict__["_lifetime_stale"] = True
        else:
            # the window's chunks are the lifetime's own: a join of the merged chunks leaves them alone
            life.__dict__["_chunks_in_use"] = [c for chunks in self._window_lists.values() for c in chunks]
            try:
                life.merge_state(dict(states))
            finally:
                life.__dict__.pop("_chunks_in_use", None)
        life.__dict__["_computed"] = None
        carry_saved_ranks(self, incoming_state)  # a module's units: the saved ranks whose states they hold

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """Sync the lifetime and the window across ranks (each as ``Metric.sync`` syncs one metric).

        The wrapper holds no state of its own: its children do. With ``sync_on_compute=False``,
        ``with metric.sync_context(): metric.compute()`` (or ``metric.sync()`` then
        ``metric.compute()``) gives the values over every rank's samples and every rank's share of
        the window. As for any TorchMetrics metric, ``compute()`` after a manual ``sync()`` restores
        this rank's own states itself (a later :meth:`unsync` then raises "already un-synced");
        :meth:`unsync` is for a ``sync()`` not followed by ``compute()``, and without a process
        group ``sync()`` does nothing (so neither may ``unsync()``). A value computed before
        either is dropped (TorchMetrics keeps it cached across a manual ``sync``). A wrapped
        TorchMetrics metric's list states are agreed on first (their dtype and an empty one's
        shape: see the class Note), around ``dist_sync_fn``.
        """
        self._local_window()  # a window smaller than the world: refused on every rank, before the sync
        if self._typed_sync:  # list states of no declared dtype: agreed on first (see __init__)
            dist_sync_fn = TypedGather(dist_sync_fn)
        for child in (self.lifetime, self.window):  # their deferred states written first (any metric class)
            recomputed_after(
                child, functools.partial(child.sync, dist_sync_fn, process_group, should_sync, distributed_available)
            )

    def unsync(self, should_unsync: bool = True) -> None:
        """Restore this rank's own lifetime and window states after :meth:`sync`."""
        for child in (self._child("lifetime"), self._child("window")):
            recomputed_after(child, functools.partial(child.unsync, should_unsync))

    @contextmanager
    def sync_context(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        should_unsync: bool = True,
        distributed_available: Callable | None = None,
    ) -> Iterator[None]:
        """TorchMetrics' ``sync_context``: the lifetime and window synced inside, this rank's own states after.

        TorchMetrics unsyncs where the metric's own ``_is_synced`` is set, which a wrapper's never
        is (its children are synced): the lifetime and window stayed synced after the context, so
        the next ``compute()`` raised "already synced" (or gave the gathered values) and updates
        added to the gathered states. Each child synced on leaving is unsynced (a ``compute()``
        inside has unsynced them already, as TorchMetrics' rule is), also when the body raises.
        """
        self.sync(dist_sync_fn, process_group, should_sync, distributed_available)
        try:
            yield
        finally:
            for child in (self._child("lifetime"), self._child("window")):
                recomputed_after(child, functools.partial(child.unsync, should_unsync and child._is_synced))

    def persistent(self, mode: bool = False) -> None:
        """Whether the wrapper's states go into ``state_dict`` (``True`` from construction).

        ``True``: the lifetime and window states and the ring (``_extra_state``). ``False``:
        nothing of the wrapper (TorchMetrics' default for a metric's states), so loading such a
        ``state_dict`` loads nothing into a ``Windowed`` and leaves it as it was.
        """
        self.lifetime.persistent(mode)
        self.window.persistent(mode)

    def _saves_window(self) -> bool:
        """Whether ``state_dict`` holds the ring: with the lifetime's or the window's states, never alone."""
        return any(any(child._persistent.values()) for child in (self._child("lifetime"), self._child("window")))

    def get_extra_state(self) -> dict[str, Any] | None:
        """The ring of per-update statistics (saved in ``state_dict`` as ``_extra_state``).

        ``None`` after ``persistent(False)``: the ring is saved with the lifetime and window states
        or not at all (without the lifetime it would restore a window the lifetime never saw), and
        ``state_dict`` then leaves ``_extra_state`` out.
        """
        if not self._saves_window():
            return None
        state = self._ring.state() if self._hist is None else self._hist.state()
        # states named after `validate_args` in memory only keep their checkpoint names (loaded back
        # as former names: see TaskMetric._unchecked_state_name)
        return _renamed(state, self._child("lifetime").__dict__.get("_saved_state_names") or {})

    @torch.inference_mode(False)  # the loaded ring is written in place by later updates: never inference tensors
    def set_extra_state(self, state: Any) -> None:
        """Restore the ring saved by :meth:`get_extra_state` (``None``, a non-persistent one's: nothing changes).

        Raises:
            ValueError: a ring of other state names or shapes; nothing changes.
        """
        if state is None:
            return
        device = self._child("lifetime").device
        if self._hist is not None:
            self._hist.load(state, device)
        else:
            self._ring.load(state, device)
        # updates restored: the wrapped metric holds data its own update count does not show (see compute)
        self.__dict__["_restored"] = bool((self._hist if self._hist is not None else self._ring).sizes)
        # the children's states are loaded next, and agree with the ring's
        self.__dict__["_window_stale"] = self.__dict__["_lifetime_stale"] = False
        self._bind_window_lists()  # a window state loaded after this is re-bound at the next update
        for child in (self, self._child("lifetime"), self._child("window")):  # values computed before the load
            child.__dict__["_computed"] = None

    def _ordinary_children(self) -> None:
        """Make the lifetime's and window's tensor states ordinary tensors where they are inference tensors.

        A wrapped TorchMetrics metric loads a checkpoint's tensors as its states, and a ``state_dict``
        taken under ``torch.inference_mode()`` holds inference tensors: the ring folds each update
        into these states in place, which outside inference mode such tensors refuse.
        """
        with torch.inference_mode(False):
            for child in (self._child("lifetime"), self._child("window")):
                for name in child._defaults:
                    value = getattr(child, name)
                    if isinstance(value, Tensor) and value.is_inference():
                        setattr(child, name, value.clone())

    def _checkpoint_settings(self) -> dict[str, Any]:
        """The window size, the update limit and the wrapped metric's recorded settings (its ``num_tasks``)."""
        life = self._child("lifetime")
        inner = life._checkpoint_settings() if isinstance(life, GuardedMetric) else {}
        return {"window_size": self.window_size, "max_updates": self.max_updates, **inner}

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if destination.get(prefix + "_extra_state", ()) is None:  # not persistent: nothing of the window
            del destination[prefix + "_extra_state"]
        note_settings(destination, prefix, self._checkpoint_settings())

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
        """Load the wrapper's entries (:meth:`_load_checked`), all or nothing in any load (see ``load_own_entries``).

        A load that fails for its entries (refused, or strict with one of its keys missing or
        unexpected) leaves the lifetime, the window and its ring as they were, also when a parent
        module is loaded.
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
        """Check the checkpoint's window size, wrapped settings, ring and states before the ring loads.

        A problem goes to ``error_msgs`` (``load_state_dict`` raises, ``strict`` or not) and
        nothing of the wrapper loads: neither the ring nor the lifetime and window states (taken
        out of the state_dict before nn.Module hands them on to the children). A binned
        histogram's ring holds the name of its state (named after the bin settings); a ring
        saved before it did is checked against the lifetime and window states' names.

        The ring loads with the lifetime and window states or not at all: a checkpoint holding
        none of them (a non-persistent ``Windowed``'s, which earlier versions saved with the ring
        alone) loads nothing into the wrapper. A checkpoint of this metric that cannot be resumed
        whole (an older format's ring, states added to the metric since, no ring) loads nothing
        either: the wrapper starts afresh, its states are missing keys and a note says why. A ring
        of other state names (the wrapped metric built with settings that name its states, such as
        another ``from_logits``) is refused as other settings, ``strict`` or not, where a metric
        without a window starts afresh with ``strict=False``: a window of other states cannot resume.
        """
        key = prefix + "_extra_state"
        self.__dict__.pop("_base_from_lifetime", None)  # set below for this load only
        children = (prefix + "lifetime.", prefix + "window.")
        if not any(k.startswith(children) for k in state_dict):  # nothing of the lifetime and window
            state_dict.pop(key, None)  # a ring alone would restore a window the lifetime never saw
            return
        life = self._child("lifetime")
        owner = f"Windowed({type(life).__name__})"
        version = local_metadata.get("version", 1)
        # settings the metadata does not record, told by the states the lifetime holds (a mode whose
        # states are some of another mode's: its ring would otherwise read as an older format)
        head = prefix + "lifetime."
        shown = (
            life._settings_shown_by([k[len(head) :] for k in state_dict if k.startswith(head)])
            if isinstance(life, GuardedMetric)
            else {}
        )
        problems = synced_problems((life, self._child("window")), prefix, owner)
        problems = problems or settings_problems(local_metadata, self._checkpoint_settings(), prefix, owner, shown)
        if not problems and self._hist is not None:
            problems = self._histogram_name_problems(state_dict, prefix, version, owner)
        store = self._hist if self._hist is not None else self._ring
        afresh = None
        if not problems and key not in state_dict:
            afresh = "it holds no window ring"
        elif not problems:
            ring = state_dict[key]
            # a ring saved before a state was renamed (e.g. after its setting) holds it under its former name
            renamed_in = getattr(life, "_renamed_in", None)
            if renamed_in is not None:
                ring = _renamed(ring, renamed_in(version))
            if isinstance(life, GuardedMetric) and isinstance(ring, dict):  # states renamed since (any version)
                ring = _renamed(ring, life._former_state_names(_ring_names(ring)))
            state_dict[key] = ring
            # and one saved before the metric added a state derived from others lacks it
            derived = getattr(life, "_derived_states", None)
            if derived and isinstance(ring, dict):
                ring = state_dict[key] = {
                    part: dict(value) if part in ("rings", "back") and isinstance(value, dict) else value
                    for part, value in ring.items()
                }
                for part in ("rings", "back"):
                    if isinstance(ring.get(part), dict):
                        derive_missing(ring[part], derived)
            converted = (
                self._hist.from_ring(ring)
                if self._hist is not None
                and getattr(life, "_histogram_resumes_rings", False)
                and store.older_format(ring)
                else None
            )
            if converted is not None:  # the ring this metric kept before (Segmented's): its slots, updates kept dense
                ring = state_dict[key] = converted
                self.__dict__["_base_from_lifetime"] = True  # the lifetime's loaded states are the base
            if store.older_format(ring):
                afresh = f"its window is of an older format ({_ring_layout(ring)})"
            else:
                problems = [f"{key}: {problem}" for problem in store.problems(ring)]
                if problems and isinstance(life, GuardedMetric):
                    # states of another shape name the settings behind the ring's (Segmented's num_segments)
                    problems = life._state_problems(state_dict, f"{prefix}lifetime.") + problems
                afresh = None if problems else self._incomplete(state_dict, prefix, version)
        # states of another shape (other settings), or malformed: checked before the ring loads, so a
        # refused lifetime or window leaves the ring as it was too (the children check them again)
        if not problems and isinstance(life, GuardedMetric):
            for child in ("lifetime", "window"):
                problems += life._state_problems(state_dict, f"{prefix}{child}.")
                problems += life._dtype_problems(state_dict, f"{prefix}{child}.")
            segments = state_dict[key].get("chunks") if isinstance(state_dict.get(key), dict) else None
            if isinstance(segments, dict):  # the ring's list-state chunks, as the window's own
                ring_chunks = {
                    f"{key}.chunks.{n}": [c for segment in s if isinstance(segment, list) for c in segment]
                    for n, s in segments.items()
                    if isinstance(s, list)
                }
                problems += life._dtype_problems(ring_chunks, f"{key}.chunks.")
        elif not problems:  # a TorchMetrics metric loads any tensor as a state: its ring's shapes are the defaults'
            for child in ("lifetime", "window"):
                problems += tensor_state_problems(life, state_dict, f"{prefix}{child}.", f"this {owner}")
        if problems:
            error_msgs.extend(problems)
            for name in [k for k in state_dict if k.startswith(prefix)]:
                del state_dict[name]  # nothing loads: not the ring, nor the lifetime and window states
            self.__dict__["_refused_prefix"] = prefix  # its children's "missing keys" are not the reason
            return
        if afresh is not None:  # this metric's checkpoint, not resumable whole
            self._start_afresh(state_dict, prefix, owner, afresh, missing_keys)
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _incomplete(self, state_dict: Mapping[str, Any], prefix: str, version: int) -> str | None:
        """Which of the lifetime and window holds only some of its states, or ``None``."""
        for child in ("lifetime", "window"):
            head = f"{prefix}{child}."
            saved = [k[len(head) :] for k in state_dict if k.startswith(head) and "." not in k[len(head) :]]
            metric = self._child(child)
            expected = set(_required_states(metric))
            read = _saved_names(metric, saved, version) & expected
            if read != expected:
                return (
                    f"its {child} holds {sorted(saved)}, not all of {sorted(expected)}: an older format, written "
                    "before the others were added, or another setting's"
                )
        return None

    def _start_afresh(
        self, state_dict: dict[str, Any], prefix: str, owner: str, why: str, missing_keys: list[str]
    ) -> None:
        """Read nothing of a checkpoint that cannot be resumed whole; reset the wrapper and say why.

        The lifetime and window states are then missing keys (the children report their own; those of
        a metric that does not, and the ring, are added here).
        """
        for name in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[name]
        self.reset()
        missing_keys.append(prefix + "_extra_state")
        for child in ("lifetime", "window"):
            metric = self._child(child)
            if not isinstance(metric, GuardedMetric):
                missing_keys.extend(f"{prefix}{child}.{n}" for n in metric._defaults if metric._persistent[n])
        note_checkpoint(
            f"{prefix[:-1] or owner}: the checkpoint holds this {owner} in a form this version cannot resume ({why}): "
            "nothing of it is read: its states are missing keys, which strict=True refuses, leaving the wrapper as "
            "it was; strict=False resumes the rest of it and the wrapper starts afresh, lifetime and window."
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; the notes of a checkpoint not read join its error (see ``_start_afresh``).

        A load that raises changes nothing: the lifetime, the window, its ring and their bookkeeping are
        put back as they were (a strict load of a checkpoint that starts the wrapper afresh would
        otherwise leave it reset, ``nn.Module`` raising for the missing keys after the reset). A load
        through a parent module is put back from the wrapper's load post-hook (see
        :meth:`_load_from_state_dict`).
        """
        load = super().load_state_dict
        restore = snapshot(self)
        try:
            with putting_back_whole(self):  # so the metrics it loads record nothing of their own
                return load_explained(lambda: load(state_dict, strict=strict, assign=assign))
        except BaseException:
            restore()
            raise

    def _histogram_name_problems(self, state_dict: dict[str, Any], prefix: str, version: int, owner: str) -> list[str]:
        """A binned metric's lifetime or window states saved under another histogram name: another setting's bins.

        The child metrics would report them only as missing and unexpected keys (``strict=False``:
        silently), after the ring (bin indices of the other setting) had loaded.
        """
        problems = []
        for child in ("lifetime", "window"):
            head = f"{prefix}{child}."
            saved = [k[len(head) :] for k in state_dict if k.startswith(head) and "." not in k[len(head) :]]
            read = _saved_names(self._child(child), saved, version)
            name = next((n for n in self._hist.names if n not in read), None)  # type: ignore[union-attr]
            if saved and name is not None:
                problems.append(
                    f"state mismatch for {head}{name}: the checkpoint's {child} holds {sorted(saved)}, this "
                    f"{owner} keeps its histogram in `{name}` (the metric names it after the settings that place "
                    "samples in bins: a checkpoint of other settings)."
                )
        return problems

    def set_dtype(self, dst_type: str | torch.dtype) -> Windowed:
        """Cast the floating states of the lifetime, the window and the ring to ``dst_type`` (as a metric's).

        The cast tensors are ordinary ones under ``torch.inference_mode()`` too (as a metric's
        ``set_dtype``): later updates outside it write into them in place. ``dst_type`` is checked
        first, as a metric's (a ``TypeError`` that changes nothing); a tensor type name
        (``"torch.DoubleTensor"``) casts the ring too (``Tensor.to`` took it for a device, after the
        lifetime and window were cast).
        """
        dtype = check_state_dtype(dst_type)
        with torch.inference_mode(False):
            for child in (self._child("lifetime"), self._child("window"), self._scratch):
                child.set_dtype(dst_type)

            def cast(t: Tensor) -> Tensor:
                return t.to(dtype) if t.is_floating_point() else t

            self._ring.apply(cast)
            if self._hist is not None:
                self._hist.apply(cast)
            self._bind_window_lists()
        return self

    @torch.inference_mode(False)  # moved under inference mode: ordinary tensors, which later updates write into
    def _apply(self, fn: Callable, exclude_state: Any = "") -> Module:
        """Move the lifetime, window and scratch metrics and the ring; a dtype cast moves them only.

        ``.to(device)`` moves everything; ``.to(dtype)``, ``.to(device, dtype)``, ``.half()``,
        ``.bfloat16()`` (Lightning's true precision) move everything to the device asked for and
        keep every dtype, the wrapped metric's states included whatever its class: the window
        casts through :meth:`set_dtype` only, which casts the ring with the states. Under
        ``torch.inference_mode()`` the moved states and buffers are ordinary tensors (as
        :meth:`set_dtype`'s), which later updates outside it write into in place.
        """
        fn = move_only(fn)
        dtype = self._dtype
        this = super()._apply(fn, exclude_state)
        self._dtype = dtype
        self._scratch._apply(fn)
        self._ring.apply(fn)
        if self._hist is not None:
            self._hist.apply(fn)
        self._bind_window_lists()
        return this

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot the lifetime and window values of one ``compute()`` result or of a list of them (over steps).

        Each number is one series, named by its place in the value: ``lifetime`` and ``window``
        for one task, ``lifetime/0``, ``window/1``, ... per task, ``lifetime/ndcg@10`` per entry of
        a dict-valued metric, ``lifetime/segment1`` (one task) or ``lifetime/task0/segment1`` per
        segment of a :class:`~torchmetrics_ext.Segmented` metric. Needs matplotlib.

        Args:
            val: a dict returned by ``compute``/``forward``, or a list of them; ``None`` plots ``compute()``.
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR, Windowed
            >>> metric = Windowed(CTR(num_tasks=2), window_size=4)
            >>> metric.update(torch.rand(2, 6), torch.tensor([[1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]))
            >>> fig, ax = metric.plot()  # doctest: +SKIP
        """
        if val is None:
            val = self.compute()
        axes = getattr(self._child("lifetime"), "_series_axes", ())  # Segmented's: task0/segment1
        if isinstance(val, Mapping):
            return self._plot(named_series(val, axes=axes), ax)
        if isinstance(val, Sequence) and not isinstance(val, (str, bytes)) and val:
            return self._plot([named_series(v, axes=axes) for v in val], ax)
        # an empty list is a value, kept a WrongTypeError (a TypeError, as it always was): the message says which
        empty = isinstance(val, Sequence) and not isinstance(val, (str, bytes))
        raise WrongTypeError(
            "Expected `val` to be a dict returned by Windowed.compute()/forward() or a non-empty list of them, "
            + (f"got an empty {type(val).__name__}." if empty else f"got {type(val).__name__}.")
        )
