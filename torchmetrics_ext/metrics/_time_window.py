"""The recent-seconds window of the rate metrics (``Throughput``, ``TowerQPS``), written once.

Both count examples over wall-clock seconds that add up within a rank and take the maximum
across ranks; both keep, besides the lifetime sums, the newest updates whose timed seconds fit in
``window_seconds``. :class:`TimeWindow` keeps that timeline on the host and leaves the metric to
write it into its two window states (examples, ``sum`` across ranks; seconds, ``max``), so the
window syncs, checkpoints and merges like the lifetime states.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from torchmetrics_ext.utilities.checks import as_real, check_state_dtype
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.frames import running_locals

__all__ = [
    "TimeWindow",
    "adopt_other_settings",
    "check_clock",
    "check_count",
    "check_window_seconds",
    "read_clock",
    "window_as_one_update",
]


# the largest count of examples: an int64 (a count beyond it is no number of examples, and torch cannot add it)
MAX_COUNT = 2**63 - 1


def check_count(name: str, value: numbers.Integral) -> int:
    """An int count of examples given to a rate metric (``Throughput``'s ``batch``, ``TowerQPS``'s ``num_examples``).

    Raises:
        ValueError: ``value`` is negative or beyond int64 (``2**63 - 1``), naming ``name``.
    """
    count = int(value)
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"Expected `{name}` as an int to be a non-negative int64 (0 to 2**63 - 1), got {count}.")
    return count


def check_clock(clock: Any) -> Callable[[], Any]:
    """``clock`` as given, once it is callable.

    Raises:
        TypeError: ``clock`` is not callable (Python's error for an object of the wrong kind).
    """
    if not callable(clock):
        raise WrongTypeError(f"Expected `clock` to be callable, got {type(clock).__name__}.")
    return clock


def check_window_seconds(window_seconds: Any) -> float:
    """``window_seconds`` as a float.

    Raises:
        ValueError: not a positive finite number.
    """
    seconds = as_real(window_seconds)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise refusal(
            f"Expected `window_seconds` to be a positive finite number, got {window_seconds!r}.",
            wrong_type=seconds is None,
        )
    return float(seconds)


def read_clock(clock: Callable[[], Any], last: float | None) -> float:
    """One reading of ``clock`` in seconds, checked on the host before the metric changes.

    Args:
        clock: the metric's clock.
        last: the previous reading the metric holds (``None``: none to compare with).

    Raises:
        ValueError: naming ``clock``, for a reading that is NaN or infinite, or earlier than ``last``
            (a clock that goes backwards would add negative seconds); a reading that is no number
            raises as ``float()`` does.
    """
    now = float(clock())
    if not math.isfinite(now):
        raise ValueError(f"Expected `clock` to return a finite number of seconds, got {now}.")
    if last is not None and now < last:
        raise ValueError(
            f"Expected `clock` never to go backwards (a monotonic clock such as time.monotonic), got {now} after "
            f"{last}."
        )
    return now


def adopt_other_settings(state_dict: dict[str, Any], prefix: str, own: Mapping[str, str]) -> None:
    """Rename in ``state_dict`` the states saved under another ``warmup_steps`` or window to this metric's names.

    The rate metrics name a state after a non-default warm-up or window (``examples_warmup3``,
    ``window_elapsed_warmup3_window2``) so that a ``MetricCollection`` never groups two settings;
    those settings only decide which later steps are timed, so a job resumed with another one keeps
    its counts and times. ``own`` maps each state's plain name to this metric's saved name; a state
    already saved under that name, or matched by no or several saved names, is left to the load.
    """
    for plain, name in own.items():
        if prefix + name in state_dict:
            continue
        pattern = re.compile(re.escape(prefix + plain) + r"(_warmup\d+)?(_?window[0-9A-Za-z]+)?")
        saved = [key for key in state_dict if pattern.fullmatch(key)]
        if len(saved) == 1:
            state_dict[prefix + name] = state_dict.pop(saved[0])


class TimeWindow:
    """A rank's timed updates within the last ``window_seconds``, newest last (mixin of the rate metrics).

    An update is ``(start, end, examples)`` on this rank's timeline of *timed* seconds (the time
    between updates after warm-up, laid end to end; ``_now`` is the end of the newest). The window
    keeps the updates that started within ``window_seconds`` of ``_now``, and always the newest.
    ``examples`` is anything that adds and subtracts: an ``int`` (``Throughput``'s exact counts),
    a ``float`` or a float64 ``(T,)`` tensor (``TowerQPS``'s counts per task). The host class sets
    ``window_seconds`` and implements :meth:`_fill_window`, which writes ``_recent_examples`` and
    :meth:`_window_time` into its window states.
    """

    window_seconds: float
    _recent: deque[tuple[float, float, Any]]
    _now: float
    _recent_examples: Any
    # the host-side record that goes with the states (the window's timeline here; steps and clock readings in the
    # host classes): what a compute group's later member takes from its first with the states (see _update_count)
    _host_record: ClassVar[tuple[str, ...]] = ("_recent", "_now", "_recent_examples")

    # A property for this one attribute (its value kept in the instance's __dict__, where the update wrapper writes
    # it directly, off this path): TorchMetrics sets it on each later member of a compute group right after linking
    # that member to the first member's states, in `MetricCollection._compute_groups_create_state_ref`.
    @property
    def _update_count(self) -> int:
        return self.__dict__.get("_update_count", 0)

    @_update_count.setter
    def _update_count(self, value: int) -> None:
        self.__dict__["_update_count"] = value
        first = _group_first_member(self, sys._getframe(1))
        if first is not None:
            self._take_host_record(first)

    def _take_host_record(self, first: Any) -> None:
        """Take ``first``'s host record with its states (a compute group's link): steps, clock readings, window.

        A :class:`~torchmetrics.MetricCollection` updates a compute group's first member alone and links the
        others to its state tensors; this metric's own record (steps seen, the last clock reading, the window's
        updates) would stay as it was, so its next ``forward`` timed the step from a stale reading and its
        checkpoint saved a stale window. The window's timeline is copied (``forward`` and ``update`` change it
        in place); the rest are numbers.
        """
        theirs, mine = first.__dict__, self.__dict__
        for name in self._host_record:
            if name in theirs:
                value = theirs[name]
                mine[name] = deque(value) if isinstance(value, deque) else value

    def _clear_window(self, zero: Any = 0) -> None:
        """No update in the window; ``zero``: an empty sum of examples."""
        self._recent = deque()
        self._now = 0.0
        self._recent_examples = zero

    def _fill_window(self) -> None:
        """Write the window's examples and :meth:`_window_time` into the window states."""
        raise NotImplementedError

    def set_dtype(self, dst_type: str | torch.dtype) -> Any:
        """Check ``dst_type`` as every metric's ``set_dtype`` does, and keep the float64 states: it casts nothing.

        The states are example counts and seconds, not metric values: in float16 a count stops at 65,504 (and
        adds nothing past 2048 per step), in bfloat16 at 256, and the clock's seconds lose their fractions, so
        a module or collection cast with ``set_dtype`` keeps its rate metrics exact (``compute`` returns
        float64 rates, as before). ``.to(dtype)`` and ``.half()`` cast no state of any metric either.

        Raises:
            TypeError: ``dst_type`` is not a floating dtype the states could sum in
                (:func:`~torchmetrics_ext.utilities.checks.check_state_dtype`).
        """
        check_state_dtype(dst_type)
        return self

    def _update_own_states(self, *args: Any, **kwargs: Any) -> None:
        """``update`` into copies of the states (``forward``'s): never write a state object another metric holds.

        A :class:`~torchmetrics.MetricCollection` links the members of a compute group (two rate
        metrics of one setting) to its first member's state tensors and calls every member's
        ``forward``: written in place, the shared tensors took the batch once per member, the first
        member's counts included. Each ``forward`` rebinds its states to ``held + batch`` instead, as
        TorchMetrics' own ``forward`` does (a few float64 scalars or ``(T,)`` tensors copied). A
        rejected batch puts the held objects back.
        """
        metric: Any = self  # the host Metric: its states and its wrapped update
        # the tensor states are plain instance attributes (TorchMetrics' add_state): rebound in __dict__,
        # without nn.Module's __setattr__ (about 2 us each on this per-step path)
        attributes = metric.__dict__
        held = {name: attributes[name] for name in metric._defaults}
        # ordinary copies under inference mode: a later update outside it writes them (the context entered only
        # there, off this per-step path otherwise)
        with torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext():
            attributes.update({name: value.clone() for name, value in held.items()})
        try:
            metric.update(*args, **kwargs)
        except BaseException:
            attributes.update(held)
            raise

    def _window_time(self) -> float:
        """Seconds since the oldest update in the window started (0 without one)."""
        return self._now - self._recent[0][0] if self._recent else 0.0

    def _add_to_window(self, seconds: float, examples: Any) -> None:
        """One timed update of ``seconds`` and ``examples``; older updates that no longer fit leave the window."""
        recent, start = self._recent, self._now
        self._now = end = start + seconds
        recent.append((start, end, examples))
        self._recent_examples = self._recent_examples + examples
        cut = end - self.window_seconds  # updates that started before it do not fit (the newest always does)
        while len(recent) > 1 and recent[0][0] < cut:
            self._recent_examples = self._recent_examples - recent.popleft()[2]
        if len(recent) == 1:  # no drift from the running sum and the timeline
            recent[0] = (0.0, seconds, examples)
            self._now, self._recent_examples = seconds, examples
        self._fill_window()

    def _join_window(self, theirs: list[tuple[float, float, Any]], their_now: float) -> None:
        """Join another rank's window as updates that ended together with this one's newest (see ``merge_state``).

        The joined window holds the updates of both that started within the last
        ``window_seconds`` and every update that ends with the newest: this one's newest, the
        other's, and those of ranks merged before (DDP's reduction over all of them: each rank's
        window examples summed, its time the longest rank's); its time is the longer of the two
        windows'. A later update of this metric ends after them, so they then leave as any other.
        """
        if not theirs:
            return
        now = self._now
        shift = now - their_now  # their last update ends with this one's
        cut = now - self.window_seconds
        # their updates that end with their newest (theirs, and their merged ranks') end with this one's
        # exactly: no rounding of the shift
        shifted = [(s + shift, now if e >= their_now else e + shift, n) for s, e, n in theirs]
        # ordered by times only: examples may be tensors, which do not compare as one truth value
        joined = sorted([*self._recent, *shifted], key=lambda u: (u[0], u[1]))
        self._recent = deque(u for u in joined if u[0] >= cut or u[1] >= now)
        total: Any = 0
        for _, _, n in self._recent:  # a few host entries (the window's updates), not samples
            total = total + n
        self._recent_examples = total
        self._fill_window()


_LINK_STATES = MetricCollection._compute_groups_create_state_ref.__code__


def _group_first_member(metric: Any, caller: Any) -> Any:
    """The first member of ``metric``'s compute group where the collection is linking ``metric`` to its states.

    ``caller`` is the ``_update_count`` setter's caller (``nn.Module.__setattr__`` under ``Metric``'s); the
    collection's frame is within the next few. ``None`` anywhere else (``__init__``, ``reset``, ...).
    """
    # the setter is reached through nn.Module's, Metric's and the package's __setattr__
    local = running_locals(_LINK_STATES, caller, depth=6)
    if local is None:
        return None
    first = local.get("m0")
    return first if local.get("mi") is metric and type(first) is type(metric) else None


def window_as_one_update(examples: Any, seconds: float) -> list[tuple[float, float, Any]]:
    """A window known only by its states (a dict of states, a loaded checkpoint): one update of ``seconds``.

    ``examples``: the window's count (a number, or a ``(T,)`` tensor of counts per task). No update
    where the states hold neither examples nor seconds.
    """
    counted = bool(examples.any()) if isinstance(examples, Tensor) else bool(examples)
    return [(0.0, seconds, examples)] if seconds or counted else []
