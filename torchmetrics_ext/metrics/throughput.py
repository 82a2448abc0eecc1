r"""Training or evaluation throughput (examples per second) as a :class:`torchmetrics.Metric`."""

from __future__ import annotations

import itertools
import math
import numbers
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
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
from torchmetrics_ext.metrics.base import GuardedMetric, _tag, one_task
from torchmetrics_ext.utilities.checks import as_int, as_real, check_flag, check_int
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import (
    NO_SAMPLES,
    naming_part,
    safe_divide,
    silencing_undefined,
    warn_undefined,
)

__all__ = ["Throughput"]

_DEFAULT_WARMUP = 100
_DEFAULT_WINDOW = 100.0
# state -> (reduction, the settings its values depend on)
_STATES = {
    "total_examples": ("sum", ()),  # every example, warm-up included
    "examples": ("sum", ("warmup",)),  # examples of the updates after warm-up
    "elapsed": ("max", ("warmup",)),  # seconds from the end of warm-up to the last update (per rank)
    "window_examples": ("sum", ("warmup", "window")),  # examples of the updates in the last `window_seconds`
    "window_elapsed": ("max", ("warmup", "window")),  # the seconds those updates took (per rank)
}


def _count_examples(batch: Any) -> int:
    """Examples in ``batch``: an int, a tensor's leading dimension, or that of a dict/sequence's first tensor with one.

    In a dict or sequence, 0-dim tensors (scalars such as a step's ``loss``) have no batch
    dimension and are skipped.
    """
    if isinstance(batch, numbers.Integral) and not isinstance(batch, bool):
        return check_count("batch", batch)
    tensor = batch
    if isinstance(batch, Mapping) or (isinstance(batch, Sequence) and not isinstance(batch, (str, bytes))):
        values = batch.values() if isinstance(batch, Mapping) else batch
        # 0-dim tensors (a step's loss: Lightning's `{"loss": loss, **out}`) have no batch dimension
        tensor = next((v for v in values if isinstance(v, Tensor) and v.ndim > 0), None)
        if tensor is None and values and not any(isinstance(v, Tensor) for v in values):  # no tensor at all: a type
            held = sorted({type(v).__name__ for v in values})
            raise WrongTypeError(
                f"Expected `batch` ({type(batch).__name__}) to hold tensors, one with a leading batch dimension to "
                f"count examples from, got a {type(batch).__name__} of {', '.join(held)} (pass the number of "
                "examples as an int, or the batch's tensors)."
            )
        if tensor is None:
            raise ValueError(
                f"Expected `batch` ({type(batch).__name__}) to hold a tensor with a leading batch dimension "
                "to count examples from (0-dim tensors, such as a loss, are skipped)."
            )
    if not isinstance(tensor, Tensor):
        raise WrongTypeError(
            f"Expected `batch` to be a tensor, an int, or a dict or sequence of tensors, got {type(batch).__name__}."
        )
    if tensor.ndim == 0:
        raise ValueError(
            "Expected `batch` to be a tensor with a leading batch dimension, got a 0-dim tensor "
            "(pass the number of examples as an int)."
        )
    return int(tensor.shape[0])


class Throughput(TimeWindow, GuardedMetric):
    r"""Examples per second, counted from the inputs: lifetime (after warm-up) and over recent seconds.

    ``update(batch)`` counts the examples of one step from the input itself (never from a
    configured batch size): an ``int``, a tensor's leading dimension, or the leading dimension of
    the first tensor of a dict or a sequence that has one (e.g. the step's ``model_out`` or labels;
    0-dim tensors such as the ``loss`` of a Lightning step's ``{"loss": loss, **model_out}`` are
    skipped), and reads the clock. A task-first ``(T, N)`` tensor, as the multi-task metrics take, counts ``T``: pass
    ``N`` or one task's row (``labels[0]``). The first ``warmup_steps`` updates only count towards
    ``total_examples``; the time starts at the last of them. Each later update adds its examples and
    the time since the previous update. The warm-up happens once: after a :meth:`reset` that
    follows any update the next update only restarts the clock.

    .. math::
        \text{lifetime\_throughput} = \frac{\sum_{\text{ranks}} \text{examples after warm-up}}
        {\max_{\text{ranks}} \text{seconds after warm-up}}

    ``window_throughput`` is the same ratio over the newest updates whose time sums to at most
    ``window_seconds`` (at least the newest update). ``compute`` returns float64 scalars
    ``{"lifetime_throughput", "window_throughput", "total_examples"}``.

    **Before a timed step.** Until an update after warm-up has been timed (and while the timed
    updates took 0 seconds on the clock), a rate is ``nan`` with an
    :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning` (TorchRec's
    ``ThroughputMetric`` leaves the rate out; :class:`~torchmetrics_ext.TowerQPS` gives TorchRec's
    ``tower_qps`` value, 0, without a warning). The warning says why: "no samples seen" while no
    rank has counted an example and no step was timed on this one (no update, a reset, only empty
    batches), the package's answer for a metric that saw nothing; how many of the ``warmup_steps``
    updates it has seen during the warm-up; the clock's resolution for steps of 0 seconds.
    ``total_examples`` counts from the first update.

    Args:
        warmup_steps: updates before the clock starts (first steps are slow: compilation, caches).
            With ``0`` the clock starts at construction (and at ``reset``).
        window_seconds: length of the recent window, in seconds.
        clock: a function returning seconds (default :func:`time.monotonic`); tests inject one.
        validate_args: accepted as every metric of the package takes it (a configuration that builds
            all its metrics with ``validate_args=False`` builds this one too). It changes nothing:
            ``update`` reads only sizes and Python integers, never a device value, so its checks
            cost no host sync and always run.
        kwargs: TorchMetrics options (``process_group``, ``sync_on_compute``, ...).

    Raises:
        ValueError: ``warmup_steps`` not a non-negative integer, ``validate_args`` not a bool,
            ``window_seconds`` not a positive finite number, a count that is negative or beyond
            int64 (``2**63 - 1``), a 0-dim tensor, or a container without a tensor of at least one dimension;
            a ``clock`` reading (in ``update``, and at construction and ``reset`` with ``warmup_steps=0``) that
            is NaN, infinite, or earlier than the previous one since the last reset or load (a clock going
            backwards would subtract seconds). A rejected ``update`` or ``reset`` changes nothing (the warm-up
            steps and the clock included).
        TypeError: ``clock`` not callable, ``num_tasks`` given (it has no task dimension: it counts
            each step's examples once for all tasks), or a ``batch`` of another type (a ``bool`` or a
            ``float`` is no count: ``TowerQPS``'s ``num_examples`` refuses them alike).

    Note:
        **DDP.** Examples are summed across ranks and time is the slowest rank's (``max``): the
        states reduce with ``sum``/``max`` and sync through TorchMetrics like any metric. A rank
        reads only its own clock, and ``update`` reads shapes only: no host-device sync
        (``compute`` reads its flags from the device once). A :meth:`reset` ends the warm-up on
        every rank alike when a compute since the last reset counted any rank's examples (see
        :meth:`reset`).
        :meth:`merge_state` joins another ``Throughput`` the same way (a run beside this one).

        **Memory.** The window keeps one ``(start, end, examples)`` entry per update within
        ``window_seconds`` (plus the newest): its size, in memory and in ``state_dict``, follows
        the step rate, not the length of the run.

        **Checkpoints.** The counts and times are persistent states; after ``load_state_dict`` the
        next update restarts the clock (its examples count in ``total_examples`` only), since a
        clock reading from another process means nothing here.

        **Dtype.** The states are counts and seconds, float64: :meth:`set_dtype` checks its argument
        and casts nothing (in float16 ``total_examples`` would stop at 65,504), nor do ``.to(dtype)``
        and ``.half()``.

        **Settings in state names.** A non-default ``warmup_steps`` or ``window_seconds`` is part
        of the names of the states it changes (``examples_warmup3``,
        ``window_elapsed_warmup3_window2``; ``total_examples`` never), so a
        :class:`~torchmetrics.MetricCollection` never puts two settings in one compute group
        (their states are equal after the first update, during the warm-up). A checkpoint of
        another warm-up or window still loads (those settings only decide which steps are timed:
        a job resumed with another compute interval keeps its counts), as do checkpoints saved
        before, with the plain names.

        **Compute groups.** Two metrics of one setting in a ``MetricCollection`` share their states:
        the collection's ``update`` feeds the group's first member and links the others to its states,
        and each of them takes that member's host record with them (steps, clock readings, the window's
        updates), so every member's ``forward``, ``compute`` and checkpoint are a lone metric's.

        **Plot.** :meth:`plot` draws the two rates (``total_examples`` is a count, not a rate).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import Throughput
        >>> ticks = iter([0.0, 1.0, 2.0, 2.5])  # a fake clock, one reading per update
        >>> metric = Throughput(warmup_steps=1, window_seconds=0.5, clock=lambda: next(ticks))
        >>> for batch in (torch.zeros(64, 3), {"label": torch.zeros(100)}, [torch.zeros(50)], 20):
        ...     metric.update(batch)
        >>> {name: value.item() for name, value in metric.compute().items()}
        {'lifetime_throughput': 68.0, 'window_throughput': 40.0, 'total_examples': 234.0}
    """

    # the keys of compute()'s dict
    entries: ClassVar[tuple[str, ...]] = ("lifetime_throughput", "window_throughput", "total_examples")
    # its elapsed seconds add up within a rank and take the maximum across ranks, and it keeps its
    # own window (window_seconds): no per-update statistic for Windowed
    window_unsupported: ClassVar[str] = (
        "its elapsed seconds add up within a rank but reduce with max across ranks; it has its own "
        "window (`window_seconds`, reported as window_throughput)."
    )
    # True although `forward` is one `update` (it is overridden): TorchMetrics' `Running` combines
    # batches with the ranks' reductions (the max of the seconds) and resets the clock after every
    # batch, so it must refuse this metric, and it accepts only `full_state_update=False`
    full_state_update: bool = True
    _merges_by_reductions: ClassVar[bool] = True  # merge_state as TorchMetrics' without the mark
    is_differentiable: bool = False
    higher_is_better: bool = True
    _dict_value_entry = '"lifetime_throughput"'  # a dict value: no metric arithmetic (TensorArithmetic)
    plot_lower_bound: float = 0.0

    total_examples: Tensor
    # the newest clock reading (None: none to compare the next with); a class default for metrics pickled before it
    _reading: float | None = None
    # what goes with the states (see TimeWindow._take_host_record)
    _host_record: ClassVar[tuple[str, ...]] = (
        *TimeWindow._host_record,
        "_steps",
        "_last",
        "_reading",
        "_computed_examples",
    )

    def __init__(
        self,
        *,
        warmup_steps: int = _DEFAULT_WARMUP,
        window_seconds: float = _DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        one_task(self, kwargs, "it counts each step's examples once for all tasks (TowerQPS has a rate per task)")
        super().__init__(**kwargs)
        self.validate_args = check_flag("validate_args", validate_args)
        warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        seconds = check_window_seconds(window_seconds)
        check_clock(clock)
        self.warmup_steps = warmup_steps
        self.window_seconds = seconds
        self.clock = clock
        # The warm-up decides which steps the states count (and leaves them zero until it ends), the
        # window which steps the window states keep: non-default ones are part of those states' names.
        tags = {
            "warmup": "" if warmup_steps == _DEFAULT_WARMUP else f"warmup{warmup_steps}",
            "window": "" if self.window_seconds == _DEFAULT_WINDOW else f"window{_tag(self.window_seconds)}",
        }
        self._state_names: dict[str, str] = {}
        for name, (reduction, settings) in _STATES.items():
            state = self._setting_state_name(name, "_".join(tags[s] for s in settings if tags[s]))
            self._state_names[name] = state
            self.add_state(state, torch.zeros((), dtype=torch.float64), dist_reduce_fx=reduction, persistent=True)
        self._restart(self._start())

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
        """Load a checkpoint saved with any warm-up or window: those settings only decide which steps are timed.

        A job resumed with another ``warmup_steps`` or ``window_seconds`` (a module's own
        throughput warms up for half its compute interval) keeps its counts and times: a state
        saved under another setting's name is read as this metric's state of the same kind.
        An unreadable ``_extra_state`` (not what :meth:`get_extra_state` saves) is refused before
        anything loads: the error goes to ``error_msgs`` and the metric is left as it was.
        """
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            try:
                _read_extra_state(extra)
            except ValueError as error:
                error_msgs.append(f"unreadable _extra_state for {prefix[:-1] or 'Throughput'}: {error}")
                for key in [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]:
                    del state_dict[key]  # nothing loads (reported above, not as unexpected keys as well)
                return
        adopt_other_settings(state_dict, prefix, self._state_names)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _state(self, name: str) -> Tensor:
        """State ``name`` (``"examples"``, ...) under its name for this metric's settings."""
        return getattr(self, self._state_names[name])

    def _start(self) -> float | None:
        """Where the clock starts at construction and reset: a reading with ``warmup_steps=0``, else none yet."""
        return read_clock(self.clock, None) if self.warmup_steps == 0 else None

    def _restart(self, start: float | None) -> None:
        """Host-side bookkeeping of this rank: steps seen, the last clock reading, the recent updates."""
        self._steps = 0
        # examples of any rank seen by the last compute (synced): a reset then ends the warm-up on every rank
        self._computed_examples = False
        self._last: float | None = start  # where the timed seconds are counted from
        self._reading = start  # the newest reading (a warm-up step's too): the next one may not be earlier
        # the updates in the window (see TimeWindow); merged updates are placed on it too (see merge_state)
        self._clear_window(0)

    def update(self, batch: Tensor | int | Mapping[str, Tensor] | Sequence[Tensor]) -> None:
        """Count one step's examples (from ``batch`` itself) and read the clock."""
        count = _count_examples(batch)
        now = read_clock(self.clock, self._reading)  # NaN, or earlier than the last reading: refused here
        self._reading = now
        self._steps += 1
        self.total_examples.add_(count)
        state = self._state
        if self._steps <= self.warmup_steps or self._last is None:
            if self._steps >= self.warmup_steps:  # the last warm-up step (or the first after a restore)
                self._last = now
            return
        seconds, self._last = now - self._last, now
        state("examples").add_(count)
        state("elapsed").add_(seconds)
        self._add_to_window(seconds, count)

    def _fill_window(self) -> None:
        """The window states from the recent updates: their examples, and the seconds since the oldest started."""
        # a float: the running sum of int64 counts can pass what torch converts from a Python int
        self._state("window_examples").fill_(float(self._recent_examples))
        self._state("window_elapsed").fill_(self._window_time())

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Merge another ``Throughput`` (or its states) as if it ran beside this one: the DDP sync's sum and max.

        Examples add up and the time is the longer of the two, lifetime and window alike. The
        other's recent updates join this window as updates that ended together with this one's
        last update (two ranks stepping side by side): the merged window holds the updates of both
        that started within the last ``window_seconds`` (and the newest update of each, and of
        every rank merged before: merging several ranks one by one gives DDP's sum and max over
        all of them), its time is the longer of the two windows', and later updates of this metric push the other's out
        of the window as they push out its own. A dict of states carries no updates: its window is
        taken as one update of ``window_examples`` over ``window_elapsed`` seconds. This metric's
        warm-up stays its own, as each rank's does through a DDP sync: the other's steps do not count
        towards it (they warmed up another process), nor does its clock.

        Raises:
            ValueError: states of other names or shapes (see :class:`GuardedMetric`); nothing changes.
        """
        super().merge_state(incoming_state)  # checks the states first
        if isinstance(incoming_state, Throughput):
            theirs, their_now = list(incoming_state._recent), incoming_state._now
        else:  # the states that were merged: their window as one update
            states: Mapping[str, Any] = (
                incoming_state if isinstance(incoming_state, dict) else incoming_state.metric_state
            )
            examples = float(states[self._state_names["window_examples"]])
            their_now = float(states[self._state_names["window_elapsed"]])
            theirs = window_as_one_update(round(examples), their_now)
        self._join_window(theirs, their_now)

    def _rates(self) -> dict[str, Tensor]:
        state = self._state
        elapsed, window_elapsed = state("elapsed"), state("window_elapsed")
        # a zero time is either no timed step or timed steps shorter than the clock's resolution (a
        # rate over 0 s is undefined either way); this rank's window knows which (it keeps the newest)
        if self._recent:
            reason = "its timed steps after warm-up took 0 seconds on the clock (steps shorter than its resolution)"
        elif self._steps < self.warmup_steps:  # a short run still warming up: say how long, and how to shorten it
            reason = (
                f"no timed step after warm-up: {self._steps} of its {self.warmup_steps} warm-up updates seen on "
                "this rank (the clock starts at the last of them); build it with fewer `warmup_steps` (a "
                "RecMetricModule's own throughput warms up for half its `compute_interval_steps`: pass "
                "`throughput=Throughput(warmup_steps=...)`, or `throughput=False` for no throughput keys)"
            )
        else:
            reason = "no timed step after warm-up"
        # One warning for both rates. The window's seconds are some of the lifetime's (on each rank, so
        # also after the max across ranks), so the lifetime rate is undefined only with the window's; the
        # window's alone when its newest steps took 0 s and older ones fell out of it.
        undefined = (elapsed == 0) | (window_elapsed == 0)
        # one host read for the three flags (a device metric syncs with its device once per compute)
        undefined_h, lifetime_defined, examples = torch.stack(
            [undefined, elapsed != 0, self.total_examples > 0]
        ).tolist()
        self._computed_examples = examples  # compute's states are every rank's (see reset)
        if not examples and not self._recent:  # no example on any rank, no timed step here: nothing seen
            reason = NO_SAMPLES
        if undefined_h:  # the flag read above: no second read
            with naming_part("window" if lifetime_defined else None):
                warn_undefined(torch.ones((), dtype=torch.bool), "Throughput", reason)
        with silencing_undefined():
            return {
                "lifetime_throughput": safe_divide(state("examples"), elapsed, "Throughput", reason),
                "window_throughput": safe_divide(state("window_examples"), window_elapsed, "Throughput", reason),
                "total_examples": self.total_examples.clone(),
            }

    def compute(self) -> dict[str, Tensor]:
        """``{"lifetime_throughput", "window_throughput", "total_examples"}`` across ranks (float64 scalars)."""
        return self._rates()

    def forward(self, batch: Tensor | int | Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
        """``update`` and return this rank's values (no sync: a step's throughput is local).

        The states are rebound, never written in place: the members of a ``MetricCollection``'s
        compute group, which share them, each count the batch once (see ``TimeWindow._update_own_states``).
        """
        self._update_own_states(batch)
        return self._rates()

    def plot(self, val: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]] | None = None, ax: Any = None) -> Any:
        """Plot the rates (``lifetime_throughput``, ``window_throughput``) of one value or of a sequence of values.

        ``total_examples`` is left out: a count next to rates would only squash their scale.
        Needs matplotlib.

        Args:
            val: a dict returned by ``compute``/``forward``, or a list of them (plotted over steps);
                ``None`` plots ``compute()``.
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.

        Raises:
            TypeError: ``val`` is not such a dict or a sequence of them.

        Examples:
            >>> from torchmetrics_ext import Throughput
            >>> ticks = iter([0.0, 2.0])
            >>> metric = Throughput(warmup_steps=0, clock=lambda: next(ticks))
            >>> metric.update(64)
            >>> fig, ax = metric.plot()  # doctest: +SKIP
        """
        if val is None:
            val = self.compute()
        if isinstance(val, Mapping):
            return self._plot(_rates_of(val), ax)
        if isinstance(val, Sequence) and not isinstance(val, (str, bytes)) and val:
            return self._plot([_rates_of(v) for v in val], ax)
        # an empty list is a value, kept a WrongTypeError (a TypeError, as it always was): the message says which
        empty = isinstance(val, Sequence) and not isinstance(val, (str, bytes))
        raise WrongTypeError(
            "Expected `val` to be a dict returned by Throughput.compute()/forward() or a non-empty list of them, "
            + (f"got an empty {type(val).__name__}." if empty else f"got {type(val).__name__}.")
        )

    def reset(self) -> None:
        """Forget every count and time; the clock restarts at the next update, without a second warm-up.

        The warm-up is for a process's first steps (compilation, caches, workers starting), which a
        reset after any update has left behind: the first update after it only starts the clock
        (its examples count in ``total_examples`` alone), so the time before the reset, e.g.
        between two validation epochs, never counts, and an epoch shorter than ``warmup_steps``
        still has rates from its second step. A reset before any update leaves the whole warm-up
        to go. With ``warmup_steps=0`` the clock restarts at the reset itself, as at construction.

        Under DDP the ranks decide alike where a ``compute()`` (a collective) lies between the updates
        and the reset: a rank that had no update of its own (a validation dataloader without a batch
        on it) ends its warm-up too when that compute counted examples of any rank, so that no rank
        is still warming up while the others time their steps (the rates, summed over ranks, would
        miss its examples). A reset with no compute since the updates decides on each rank's own updates.
        """
        start = self._start()  # a clock reading refused before anything is reset
        super().reset()
        # the warm-up ends with the first reset after an update on this rank, or after a compute that
        # counted any rank's examples (see update: past it, an update with the clock not started only starts it)
        # (a metric pickled by a version before that flag has none: no compute counted since it was loaded)
        seen = self._steps or self.__dict__.get("_computed_examples", False)
        steps = max(self._steps, self.warmup_steps) if seen else 0
        self._restart(start)
        self._steps = steps

    def get_extra_state(self) -> dict[str, Any] | None:
        """Steps seen and the recent updates (the clock reading is not saved); nothing when not persistent."""
        if not any(self._persistent.values()):  # persistent(False): no state is saved, nor this
            return None
        return {"steps": self._steps, "recent": list(self._recent)}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`; the next update restarts the clock.

        Raises:
            ValueError: ``state`` is not what :meth:`get_extra_state` saves (a foreign or hand-edited
                ``_extra_state``); the metric is left as it was.
        """
        if state is None:  # saved without persistent states: nothing to restore
            return
        try:
            steps, recent = _read_extra_state(state)
        except ValueError as error:
            raise ValueError(f"Throughput.set_extra_state: {error}") from None
        self._restart(None)  # the next update restarts the clock
        self._steps = steps
        self._recent = recent
        self._now = recent[-1][1] if recent else 0.0
        self._recent_examples = sum(n for _, _, n in recent)


_EXPECTED_EXTRA_STATE = (
    "expected what Throughput.get_extra_state saves, a dict {'steps': <whole number >= 0>, "
    "'recent': [(<start>, <end>, <examples>), ...]}"
)


def _whole(value: Any) -> int | None:
    """``value`` as a non-negative int, else ``None``.

    A Python or NumPy integer, a one-element integer tensor, or a whole float (``4.0``: what an
    earlier version or a hand-written checkpoint may hold).
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        whole = float(value)
        value = int(whole) if math.isfinite(whole) and whole.is_integer() else None
    count = as_int(value)
    return None if count is None or count < 0 else count


def _real(value: Any) -> float | None:
    """``value`` as a finite float (a real number or a one-element real tensor), else ``None``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    number = as_real(value)
    return None if number is None or not math.isfinite(number) else float(number)


def _read_extra_state(state: Any) -> tuple[int, deque[tuple[float, float, int]]]:
    """The step count and timeline of a saved ``_extra_state`` (see ``get_extra_state``).

    A window saved before it kept a timeline holds ``(seconds, examples)`` per update: those are
    laid end to end from 0.

    Raises:
        ValueError: naming what was expected and what arrived.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{_EXPECTED_EXTRA_STATE}, got an object of type {type(state).__name__}.")
    absent = [key for key in ("steps", "recent") if key not in state]
    if absent:
        raise ValueError(f"{_EXPECTED_EXTRA_STATE}, got a dict without {absent} (keys {sorted(map(str, state))}).")
    steps, recent = _whole(state["steps"]), state["recent"]
    if steps is None:
        raise ValueError(f"{_EXPECTED_EXTRA_STATE}, got 'steps': {state['steps']!r}.")
    if isinstance(recent, (str, bytes, Mapping)) or not isinstance(recent, (Sequence, deque)):
        raise ValueError(f"{_EXPECTED_EXTRA_STATE}, got 'recent': {recent!r}.")
    first = recent[0] if len(recent) else None
    width = 2 if isinstance(first, Sequence) and len(first) == 2 else 3
    read: list[tuple[float, ...]] = []
    for update in recent:
        values = _read_update(update, width)
        if values is None:
            raise ValueError(
                f"{_EXPECTED_EXTRA_STATE} (or (<seconds>, <examples>) for each update, as saved before), "
                f"got the update {update!r} in 'recent'."
            )
        read.append(values)
    if width == 2:  # saved before the window kept a timeline: (seconds, examples)
        ends = itertools.accumulate(seconds for seconds, _ in read)
        read = [(end - seconds, end, n) for end, (seconds, n) in zip(ends, read, strict=False)]
    return steps, deque((start, end, int(n)) for start, end, n in read)


def _read_update(update: Any, width: int) -> tuple[float, ...] | None:
    """One saved update: ``width - 1`` finite times then a whole number of examples, or ``None`` if it is not."""
    if isinstance(update, (str, bytes)) or not isinstance(update, Sequence) or len(update) != width:
        return None
    times, count = [_real(v) for v in update[:-1]], _whole(update[-1])
    if count is None or any(t is None for t in times):
        return None
    return (*(float(t) for t in times if t is not None), count)


_RATES = ("lifetime_throughput", "window_throughput")


def _rates_of(value: Any) -> dict[str, Tensor]:
    """The two rates of one ``compute()`` value (a dict), for plotting."""
    if not isinstance(value, Mapping) or not all(isinstance(value.get(k), Tensor) for k in _RATES):
        raise WrongTypeError(
            f"Expected a dict with tensors {list(_RATES)} (as Throughput.compute() returns), "
            f"got {type(value).__name__}."
        )
    return {k: value[k] for k in _RATES}
