"""Per-task examples per second (TorchRec's ``tower_qps``) as a :class:`torchmetrics.Metric`."""

from __future__ import annotations

import numbers
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from torchmetrics_ext.metrics._time_window import (
    TimeWindow,
    adopt_other_settings,
    check_clock,
    check_count,
    check_window_seconds,
    read_clock,
    window_as_one_update,
)
from torchmetrics_ext.metrics.base import TaskMetric, _tag
from torchmetrics_ext.utilities.checks import check_int, check_tensor
from torchmetrics_ext.utilities.errors import WrongTypeError

_DEFAULT_WARMUP = 100  # TorchRec's
# compute()'s keys with a window: TorchRec's names (``qps-{task}|lifetime_qps``, ...)
_ENTRIES = ("lifetime_qps", "window_qps", "total_examples")

__all__ = ["TowerQPS"]


class TowerQPS(TimeWindow, TaskMetric):
    r"""Examples per second for each task: examples summed over ranks over the time of the slowest rank.

    .. math:: \mathrm{QPS}_t = \frac{\sum_{\text{ranks}} \text{examples}_t}{\max_{\text{ranks}} \text{seconds}}

    Each ``update`` counts the examples of every task (the last dimension of its input) and,
    after ``warmup_steps`` updates, the wall time since the previous update. The first
    ``warmup_steps`` updates (at least one, which starts the clock) count neither time nor
    examples. States: float64 ``(T,)`` example counts (``sum`` across ranks) and elapsed seconds
    (``max`` across ranks). The seconds add up within a rank but take the maximum across ranks, so
    they are no per-update statistic: ``Windowed`` refuses this metric, which keeps its own window
    of recent seconds instead (``window_seconds``, below). Time is read
    on the host; no device synchronisation happens (except validating an explicit
    ``num_examples`` tensor, which must hold finite, non-negative whole counts). The warm-up count is not part of
    ``state_dict``: after ``load_state_dict`` the next ``warmup_steps`` updates warm up again (a load
    holding none of its states, such as a model's weights alone, changes nothing). A checkpoint saved
    with another ``warmup_steps`` or ``window_seconds`` loads too, as ``Throughput``'s does: those
    settings only decide which later steps are timed, so a job resumed with another one keeps its
    counts and times (the settings name the states only so that a ``MetricCollection`` never groups two).

    **Before a timed step.** Until an update after warm-up has been timed (and while the timed
    updates took 0 seconds on the clock), a rate is 0, without a warning: TorchRec's ``tower_qps``
    value, kept for parity (:class:`~torchmetrics_ext.Throughput` gives ``nan`` with an
    ``UndefinedMetricWarning`` there). So is it after a ``reset``, and after loading a checkpoint
    saved before a timed step (a checkpoint's timed steps give their rate until the next timed
    update). With a window, ``total_examples`` counts from the first update.

    TorchRec's ``tower_qps`` is meant for multi-task models whose tasks see different numbers
    of examples; pass a per-task ``(T,)`` count to ``update(num_examples=...)`` for that. A count is
    given as ``Throughput`` takes one: a Python (or NumPy) ``int``, every task's, or an integer tensor
    of shape ``()`` or ``(T,)`` (a floating tensor of whole values too); ``bool`` counts (a mask: pass
    ``mask.sum(-1)``), fractional and negative ones are refused. ``clock`` must read finite seconds that
    never go backwards.

    **Window.** With ``window_seconds`` set, ``compute()`` (and ``forward``) return TorchRec's three
    values as a dict of float64 scalars (``(T,)`` tensors for several tasks): ``"lifetime_qps"``
    (the value above), ``"window_qps"`` (the same ratio over the newest timed updates whose
    seconds sum to at most ``window_seconds``, at least the newest one: ``Throughput``'s window,
    per task) and ``"total_examples"`` (every example counted, warm-up included). Two more states
    hold the window (examples ``sum``, seconds ``max`` across ranks, named after a non-default
    warm-up and the window), plus ``total_examples`` (``sum``); the window keeps one host entry per
    update within ``window_seconds``. A loaded checkpoint, or a dict of states given to
    :meth:`merge_state`, carries the window as its states only: it counts as one update of that
    many examples over that many seconds, which later updates push out as a whole. A checkpoint
    written without a window loads into a metric with one: ``total_examples`` starts from the
    counted examples (the warm-up's were never kept) and the window empty. Without
    ``window_seconds`` (the default) ``compute()`` returns the lifetime rate alone, as before.

    In a ``MetricCollection`` compute group (two ``TowerQPS`` of one setting) every member takes the
    first member's steps, clock reading and window with its states, as ``Throughput``'s do: each
    member's ``forward``, ``compute`` and checkpoint are a lone metric's.

    Args:
        num_tasks: number of tasks ``T``.
        warmup_steps: updates before timing starts (TorchRec: 100).
        window_seconds: length of the recent window in seconds (a positive number), or ``None``
            for no window.
        clock: seconds as a float (``time.monotonic``); replaceable for tests.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: ``warmup_steps`` not a non-negative integer, ``window_seconds`` not a positive finite
            number; in ``update``: ``preds`` or ``num_examples`` of another shape, a
            count that is negative, fractional or not finite (an ``int`` beyond int64), a ``clock`` reading
            that is NaN, infinite or earlier than the previous one. With ``validate_args=False`` the values
            of a ``num_examples`` tensor and the shapes are not checked (no device read); the rest always is.
        TypeError: ``clock`` not callable; ``update`` without ``preds`` and ``num_examples``, or with a
            ``num_examples`` that is a ``bool``, a bool tensor, a ``float`` or no count at all.

        A refused ``update`` changes nothing: states, warm-up steps, clock and window stay as they were.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import TowerQPS
        >>> ticks = iter([0.0, 2.0, 4.0])
        >>> qps = TowerQPS(warmup_steps=1, clock=lambda: next(ticks))
        >>> for _ in range(3):
        ...     qps.update(torch.zeros(100))
        >>> qps.compute()  # 200 examples after the warm-up step, in 4 seconds
        tensor(50., dtype=torch.float64)

        With a window of 3 seconds, over two tasks (the second one sees fewer examples):

        >>> ticks = iter([0.0, 2.0, 4.0, 5.0])
        >>> qps = TowerQPS(num_tasks=2, warmup_steps=1, window_seconds=3.0, clock=lambda: next(ticks))
        >>> for n in ([10, 10], [100, 50], [60, 30], [30, 30]):
        ...     qps.update(num_examples=torch.tensor(n))
        >>> values = qps.compute()  # lifetime: 5 s after warm-up; window: the last two updates, 3 s
        >>> {name: value.tolist() for name, value in values.items()}
        {'lifetime_qps': [38.0, 22.0], 'window_qps': [30.0, 20.0], 'total_examples': [200.0, 120.0]}

        A count as an ``int`` (every task's), as ``Throughput`` takes it:

        >>> ticks = iter([0.0, 2.0])
        >>> qps = TowerQPS(warmup_steps=1, clock=lambda: next(ticks))
        >>> qps.update(num_examples=64)
        >>> qps.update(num_examples=64)
        >>> qps.compute()
        tensor(32., dtype=torch.float64)
    """

    # True although `forward` is one `update` (it is overridden): TorchMetrics' `Running` would
    # combine batches with the ranks' max of the seconds and restart the warm-up after every batch
    # (a rate of 0), and it accepts only `full_state_update=False`
    full_state_update = True
    _merges_by_reductions: ClassVar[bool] = True  # merge_state as TorchMetrics' without the mark
    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    _dict_value_entry = '"lifetime_qps"'  # with a window, a dict value: no metric arithmetic (TensorArithmetic)
    # no window: also what a TowerQPS pickled before the window existed finds on unpickling
    window_seconds: float | None = None  # type: ignore[assignment]  # TimeWindow's is a float, set with a window
    _window_names: tuple[str, str, str] | None = None
    _window_from_states: bool = False
    # what goes with the states (see TimeWindow._take_host_record)
    _host_record: ClassVar[tuple[str, ...]] = (*TimeWindow._host_record, "_steps", "_last_tick", "_window_from_states")

    # elapsed seconds add up within a rank and take the maximum across ranks: no per-update statistic
    window_unsupported: ClassVar[str] = (
        "its elapsed seconds add up within a rank but reduce with max across ranks, so a window of "
        "per-update seconds would keep the longest step, not the window's time; it has its own window "
        "(`window_seconds`, reported as window_qps)."
    )

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        warmup_steps: int = _DEFAULT_WARMUP,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        window = None if window_seconds is None else check_window_seconds(window_seconds)
        check_clock(clock)
        super().__init__(num_tasks, **kwargs)
        self.warmup_steps = warmup_steps
        self.clock = clock
        # The warm-up decides which steps the states count, and leaves them zero until it ends: a
        # non-default warm-up is part of their names, so a MetricCollection never merges two.
        tag = "" if warmup_steps == _DEFAULT_WARMUP else f"warmup{warmup_steps}"
        # and validate_args, in memory only (see TaskMetric._unchecked_state_name)
        self._examples_state = self._unchecked_state_name(self._setting_state_name("num_examples", tag))
        self._seconds_state = self._unchecked_state_name(self._setting_state_name("seconds", tag))
        self._add_task_state(self._examples_state)
        self._add_task_state(self._seconds_state, dist_reduce_fx="max")
        self.window_seconds = window
        if window is not None:
            # the window decides which steps the window states keep: it is part of their names
            setting = "_".join(t for t in (tag, f"window{_tag(window)}") if t)
            names = (
                self._unchecked_state_name("total_examples"),
                self._unchecked_state_name(self._setting_state_name("window_examples", setting)),
                self._unchecked_state_name(self._setting_state_name("window_elapsed", setting)),
            )
            self._window_names = names
            for name, reduction in zip(names, ("sum", "sum", "max"), strict=True):
                self._add_task_state(name, dist_reduce_fx=reduction)
            # checkpoints written without a window: the counted examples, an empty window
            self._derived_states[names[0]] = (torch.clone, (self._examples_state,))
            for name, source in zip(names[1:], (self._examples_state, self._seconds_state), strict=True):
                self._derived_states[name] = (torch.zeros_like, (source,))
        self._steps = 0
        self._last_tick: float | None = None
        self._clear_window(0.0)
        self._window_from_states = False  # after a load: the window is known by its states alone

    def _states(self) -> tuple[Tensor, Tensor]:
        """The example count and seconds states (named after a non-default ``warmup_steps``)."""
        return getattr(self, self._examples_state), getattr(self, self._seconds_state)

    def _value_entries(self) -> tuple[str, ...] | None:
        """``("lifetime_qps", "window_qps", "total_examples")`` with a window; ``None`` (one value) without."""
        return None if self._window_names is None else _ENTRIES

    def _dict_value_example(self) -> str | None:
        """A dict value (no metric arithmetic) only with a window; without one the rate takes part in arithmetic."""
        return None if self._window_names is None else super()._dict_value_example()

    def _window_states(self) -> tuple[Tensor, Tensor, Tensor]:
        """``total_examples`` and the window's examples and seconds (only with ``window_seconds``)."""
        assert self._window_names is not None
        total, examples, elapsed = self._window_names
        return getattr(self, total), getattr(self, examples), getattr(self, elapsed)

    def _fill_window(self) -> None:
        """The window states from the recent updates (see :class:`TimeWindow`)."""
        _, examples, elapsed = self._window_states()
        if isinstance(self._recent_examples, Tensor):
            examples.copy_(self._recent_examples)
        else:
            examples.fill_(float(self._recent_examples))
        elapsed.fill_(self._window_time())

    def _timeline(self) -> list[tuple[float, float, Any]]:
        """This rank's window updates; after a load, the loaded window states as one update."""
        if not self._window_from_states:
            return list(self._recent)
        _, examples, elapsed = self._window_states()
        return _as_one_update(examples.clone(), elapsed)

    def _window_on(self, device: torch.device) -> None:
        """Move the window's per-task counts to ``device`` (the states') after the metric moved."""
        total = self._recent_examples
        if isinstance(total, Tensor) and total.device != device:
            self._recent = deque((s, e, n.to(device) if isinstance(n, Tensor) else n) for s, e, n in self._recent)
            self._recent_examples = total.to(device)

    def _own_timeline(self) -> None:
        """Turn loaded window states into this rank's timeline before it changes."""
        if self._window_from_states:
            theirs = self._timeline()
            self._clear_window(0.0)
            self._window_from_states = False
            self._join_window(theirs, theirs[-1][1] if theirs else 0.0)

    def _counts(self, preds: Tensor | None, num_examples: Tensor | int | None, validate: bool) -> Tensor | float:
        if num_examples is not None:
            if not isinstance(num_examples, Tensor):  # a Python or NumPy int: checked on the host, always
                return float(_count(num_examples))
            if num_examples.dtype == torch.bool:  # the dtype is host metadata: refused with or without validate_args
                raise WrongTypeError(
                    "Expected `num_examples` to be counts (an int, or an integer tensor), got a tensor of dtype "
                    "torch.bool: pass `mask.sum(-1)` to count the True entries."
                )
            if validate:
                check_tensor("num_examples", num_examples)
                if num_examples.shape not in ((self.num_tasks,), ()):
                    raise ValueError(
                        f"Expected `num_examples` of shape ({self.num_tasks},) or (), got {tuple(num_examples.shape)}."
                    )
            counts = num_examples.to(torch.float64)  # any real dtype; uint16/32/64 have no comparison kernel on the CPU
            if validate and counts.numel():
                valid = torch.isfinite(counts).all() & (counts >= 0).all()
                if num_examples.is_floating_point():  # whole numbers of examples, read with the same host sync
                    valid &= (counts == counts.trunc()).all()
                if not bool(valid):
                    raise ValueError(
                        f"Expected `num_examples` to be finite and non-negative whole counts, got {num_examples}."
                    )
            return counts.expand(self.num_tasks)
        if preds is None:
            raise WrongTypeError("TowerQPS.update() requires `preds` or `num_examples`.")
        if validate:
            check_tensor("preds", preds)
            if preds.ndim not in (1, 2) or (preds.ndim == 2 and preds.shape[0] != self.num_tasks):
                raise ValueError(
                    f"Expected `preds` of shape (N,) or ({self.num_tasks}, N), got shape {tuple(preds.shape)}."
                )
        return float(preds.shape[-1])  # every task's count: a number, added without a host-to-device copy

    @staticmethod
    def _check_unread(preds: object, target: object, num_examples: object) -> None:
        """``target`` (TorchRec's signature) and ``preds`` beside ``num_examples`` are not read: tensors or ``None``."""
        for name, value in (("target", target), ("preds", preds if num_examples is not None else None)):
            if value is not None and not isinstance(value, Tensor):
                raise WrongTypeError(f"Expected `{name}` to be a torch.Tensor or None, got {type(value).__name__}.")

    def _validate(
        self, preds: Tensor | None = None, target: Tensor | None = None, num_examples: Tensor | int | None = None
    ) -> None:
        self._check_unread(preds, target, num_examples)
        self._counts(preds, num_examples, validate=True)

    def update(
        self, preds: Tensor | None = None, target: Tensor | None = None, num_examples: Tensor | int | None = None
    ) -> None:
        """Count one step's examples (``preds.shape[-1]`` per task, or ``num_examples``) and time it."""
        examples, seconds = self._states()
        check = self._check_inputs
        if check:
            self._check_unread(preds, target, num_examples)
        counts = self._counts(preds, num_examples, validate=check)
        if isinstance(counts, Tensor):
            counts = counts.to(examples.device)
        # a reading that is no number, NaN, or earlier than the last one raises here, before anything changes
        now = read_clock(self.clock, self._last_tick)
        self._steps += 1
        if self._window_names is not None:
            self._window_states()[0].add_(counts)
        if self._steps > max(self.warmup_steps, 1) and self._last_tick is not None:
            examples.add_(counts)
            seconds.add_(now - self._last_tick)
            if self._window_names is not None:
                self._own_timeline()
                self._window_on(examples.device)
                # a copy: a float64 `num_examples` is the caller's tensor (expanded), which it may change
                self._add_to_window(now - self._last_tick, counts.clone() if isinstance(counts, Tensor) else counts)
        self._last_tick = now

    def _rate(self, examples: Tensor, seconds: Tensor) -> Tensor:
        timed = seconds > 0
        return self._squeeze_tasks(torch.where(timed, examples / torch.where(timed, seconds, 1.0), 0.0))

    def _value(self) -> Any:
        lifetime = self._rate(*self._states())
        if self._window_names is None:
            return lifetime
        total, examples, elapsed = self._window_states()
        values = (lifetime, self._rate(examples, elapsed), self._squeeze_tasks(total.clone()))
        return dict(zip(_ENTRIES, values, strict=True))

    def compute(self) -> Any:
        """Examples per second after warm-up; 0, without a warning, until an update after warm-up has been timed.

        With ``window_seconds``: ``{"lifetime_qps", "window_qps", "total_examples"}``.
        """
        return self._value()

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Merge another ``TowerQPS`` (or its states) as a rank beside this one: examples add up, seconds take the max.

        With a window, the other's recent updates join this window as ``Throughput.merge_state``
        says (updates that ended together with this one's newest); a dict of states carries its
        window as one update.
        """
        if self._window_names is None:
            super().merge_state(incoming_state)
            return
        self._own_timeline()  # read before the merge changes the states
        if isinstance(incoming_state, TowerQPS) and incoming_state._window_names is not None:
            theirs = incoming_state._timeline()
        else:
            theirs = None
        super().merge_state(incoming_state)  # checks the states first
        if theirs is None:  # the states that were merged: their window as one update
            states: Any = incoming_state if isinstance(incoming_state, dict) else incoming_state.metric_state
            states = self._states_under_own_names(states)  # either validate_args' names
            examples = torch.as_tensor(states[self._window_names[1]], dtype=torch.float64)
            theirs = _as_one_update(examples, torch.as_tensor(states[self._window_names[2]]))
        device = self._window_states()[1].device
        self._window_on(device)
        theirs = [(s, e, n.to(device) if isinstance(n, Tensor) else n) for s, e, n in theirs]
        self._join_window(theirs, theirs[-1][1] if theirs else 0.0)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Count and time one step like ``update``, and return this rank's QPS so far (a rate has no batch value).

        The states are rebound, never written in place: the members of a ``MetricCollection``'s
        compute group, which share them, each count the batch once.
        """
        self._update_own_states(*args, **kwargs)
        return self._value()

    def reset(self) -> None:
        """Clear the counts and restart the warm-up."""
        super().reset()
        self._steps = 0
        self._last_tick = None
        self._clear_window(0.0)
        self._window_from_states = False

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load the counts; the next ``warmup_steps`` updates warm up again (the time before the load never counts).

        A checkpoint holding none of the states (the model's weights alone, or a parent's state_dict
        saved while they were not persistent) loads nothing, so the warm-up and window carry on.
        """
        # its own entries, under any name (a former one too): none means nothing of it loads
        holds_states = any(key.startswith(prefix) and "." not in key[len(prefix) :] for key in state_dict)
        # states saved under another warm-up or window load as this metric's (as Throughput's do)
        saved = getattr(self, "_saved_state_names", {})
        names = [self._examples_state, self._seconds_state, *(self._window_names or ())]
        plain = ["num_examples", "seconds", "total_examples", "window_examples", "window_elapsed"]
        adopt_other_settings(state_dict, prefix, {p: saved.get(n, n) for p, n in zip(plain, names, strict=False)})
        super()._load_from_state_dict(state_dict, prefix, *args)
        if not holds_states:
            return
        self._steps = 0
        self._last_tick = None
        if self._window_names is not None:  # the states may be written after this call: read them when needed
            self._clear_window(0.0)
            self._window_from_states = True


def _as_one_update(examples: Tensor, elapsed: Tensor) -> list[tuple[float, float, Any]]:
    """Window states (per-task examples, seconds) as one update: every task has the seconds of the one clock."""
    return window_as_one_update(examples, float(elapsed.max()))


def _count(value: object) -> int:
    """``num_examples`` given as a number: a non-negative int64 (a Python or NumPy int, never a bool)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise WrongTypeError(
            f"Expected `num_examples` to be an int or a tensor of counts (shape (num_tasks,) or ()), "
            f"got {type(value).__name__}."
        )
    return check_count("num_examples", value)
