"""Refuse a task-first batch that TorchMetrics' ``BootStrapper`` resampled along its tasks.

``BootStrapper.update`` resamples dimension 0 of every input tensor (TorchMetrics' samples-first
convention; it has no axis option). The package's task-first inputs ``(T, N)`` hold their samples
in the last dimension, so each bootstrap got a reshuffle of the task rows (``multinomial``: every
value a copy of some task's whole-data value, a silent wrong confidence interval) or another
number of task rows (``poisson``: a task-count error that did not say why). A resampled batch
cannot be told from a valid one, so the check looks for ``BootStrapper.update`` among the callers
once per object (a single-task ``(N,)`` batch is resampled correctly, but its first update tells that
the object lives outside a bootstrap: a mark the per-step path reads inline, no call after that).
"""

from __future__ import annotations

import sys
import weakref
from types import FrameType
from typing import Any, NoReturn

from torch import Tensor
from torchmetrics.wrappers import BootStrapper

from torchmetrics_ext.utilities.warnings import warn_at_user

# the function BootStrapper.update runs (TorchMetrics wraps it per instance; the class keeps the plain one)
_BOOTSTRAP_UPDATE = BootStrapper.update.__code__
# callers between BootStrapper.update and a metric's check: the metric's update wrapper, an expression's
# update and its operands' wrappers (`BootStrapper(ne[0])`), a Windowed entry's lifetime and window
_DEPTH = 12


# `metric.__dict__[OUTSIDE]()` is `metric`: updated outside a BootStrapper once, so never inside one (callers on a
# per-step path test it inline before calling); `[INSIDE]()` is `metric`: a copy that BootStrapper updates. Each
# mark is a weak reference to the object that set it, so a copy carrying it (BootStrapper's deep copies of a
# metric updated outside) never reads as marked: an `id()` did once its object was freed and a later copy got
# the same address. `TaskMetric.__getstate__` drops them (pickles, copies).
OUTSIDE = "_outside_bootstrap"
INSIDE = "_inside_bootstrap"
MARKS = (OUTSIDE, INSIDE)


def marked(state: dict[str, Any], key: str, metric: object) -> bool:
    """Whether ``metric`` (whose ``__dict__`` is ``state``) set the mark ``key`` itself."""
    mark = state.get(key)
    return mark is not None and mark() is metric


def refuse_bootstrapped_tasks(metric: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``BootStrapper`` called this update with a task-first ``preds`` (2-D or more).

    The callers are walked on an object's first checked update (whatever ``preds``' shape) and for every
    task-first batch of a copy that ``BootStrapper`` updates; once an update is seen outside a bootstrap the
    object is marked and later calls return at the mark (a dict lookup the per-step callers make inline).
    """
    state = metric.__dict__
    if marked(state, OUTSIDE, metric):
        return
    preds = args[0] if args else kwargs.get("preds")
    tasks_first = preds if isinstance(preds, Tensor) and preds.ndim >= 2 else None
    if tasks_first is None and marked(state, INSIDE, metric):
        return  # a copy inside a BootStrapper fed (N,) rows: resampled correctly
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            break
        if frame.f_code is _BOOTSTRAP_UPDATE:
            if tasks_first is not None:
                _refuse(metric, tasks_first)
            state[INSIDE] = weakref.ref(metric)
            return
        frame = frame.f_back
    # Updated outside a BootStrapper, this object never runs inside one: BootStrapper updates deep copies of
    # the metric it was given. A copy (deepcopy, pickle, clone) carries no mark of its own, so it checks again.
    state[OUTSIDE] = weakref.ref(metric)


def warn_bootstrapped_flat_rows(metric: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Warn when ``BootStrapper`` resampled a ranking metric's flat rows (``(N,)`` with ``indexes``).

    ``BootStrapper`` resamples the rows, so a resampled query holds some candidates twice and loses others:
    its values are not those of resampled queries (a bootstrap of NDCG@10 on 300 lists of 20 sat about one
    standard deviation below the full-data value). Padded ``(queries, candidates)`` lists are resampled per query and
    do not warn. The callers are walked on an object's first update only; then the object is marked (outside
    or inside a bootstrap) and later calls return at the mark.
    """
    state = metric.__dict__
    if marked(state, OUTSIDE, metric) or marked(state, INSIDE, metric):
        return
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            break
        if frame.f_code is _BOOTSTRAP_UPDATE:
            state[INSIDE] = weakref.ref(metric)
            preds = args[0] if args else kwargs.get("preds")
            indexes = args[2] if len(args) > 2 else kwargs.get("indexes")
            if isinstance(preds, Tensor) and preds.ndim == 1 and indexes is not None:
                warn_at_user(
                    f"TorchMetrics' BootStrapper resamples rows, not queries: {type(metric).__name__} fed flat rows "
                    "with `indexes` gets queries with repeated and missing candidates, so its bootstrap values are "
                    "not those of resampled queries (biased). Feed padded `(queries, candidates)` lists (with "
                    "`mask`), which it resamples per query.",
                    UserWarning,  # the user's bootstrap.update line, past TorchMetrics' frames
                )
            return
        frame = frame.f_back
    state[OUTSIDE] = weakref.ref(metric)


def warn_bootstrapped_groups(metric: Any) -> None:
    """Warn that ``BootStrapper`` resamples a grouped metric's rows, not its groups (users).

    Called once per copy, when the base's check (:func:`refuse_bootstrapped_tasks`) has just marked it as
    updated inside a bootstrap. Every bootstrap then holds every user with some rows repeated and others
    dropped: the differences between users, the unit a GAUC averages over, are never resampled, so the
    interval is not a user-level one (GroupedAUC over 100 users of 40 rows whose AUCs differ: a row
    bootstrap std about a third of a bootstrap over users; ``tests/test_bootstrap_grouped_rows.py``).
    """
    name = type(metric).__name__
    warn_at_user(
        f"TorchMetrics' BootStrapper resamples rows, not groups: {name} gets every group (user) in every "
        "bootstrap, with repeated and missing rows, so its spread misses the differences between users. "
        "Resample the groups yourself: draw each group's count and repeat its rows under new group ids, or, "
        f"with {name}(weight_groups=True), multiply each row's weight by its group's count.",
    )  # at the user's bootstrap.update line, past TorchMetrics' frames


def _refuse(metric: Any, preds: Tensor) -> NoReturn:
    """The error, naming the metric, the resampled ``preds`` shape and the per-task workaround."""
    name = type(metric).__name__
    raise ValueError(
        "TorchMetrics' BootStrapper resamples dimension 0 of every input, but the first dimension of "
        f"{name}'s `preds` (here of shape {tuple(preds.shape)}, as resampled) is its tasks, its samples the "
        "last one: each bootstrap would reshuffle, repeat or drop tasks, not resample samples. Bootstrap one "
        "single-task metric per task, fed `(N,)` inputs, e.g. "
        f"`MultitaskWrapper({{task: BootStrapper(tmx.{name}()) for task in tasks}})` fed each task's row."
    )
