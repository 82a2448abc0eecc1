"""Per-task examples per second (TorchRec's ``tower_qps``) as a :class:`torchmetrics.Metric`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.utilities.checks import check_int, check_tensor

_DEFAULT_WARMUP = 100  # TorchRec's

__all__ = ["TowerQPS"]


class TowerQPS(TaskMetric):
    r"""Examples per second for each task: examples summed over ranks over the time of the slowest rank.

    .. math:: \mathrm{QPS}_t = \frac{\sum_{\text{ranks}} \text{examples}_t}{\max_{\text{ranks}} \text{seconds}}

    Each ``update`` counts the examples of every task (the last dimension of its input) and,
    after ``warmup_steps`` updates, the wall time since the previous update. The first
    ``warmup_steps`` updates (at least one, which starts the clock) count neither time nor
    examples. States: float64 ``(T,)`` example counts (``sum`` across ranks) and elapsed seconds
    (``max`` across ranks). The seconds add up within a rank but take the maximum across ranks, so
    they are no per-update statistic: ``Windowed`` refuses this metric. Time is read
    on the host; no device synchronisation happens (except validating an explicit
    ``num_examples``, which must be finite and non-negative). The warm-up count is not part of
    ``state_dict``: after ``load_state_dict`` the next ``warmup_steps`` updates warm up again.

    TorchRec's ``tower_qps`` is meant for multi-task models whose tasks see different numbers
    of examples; pass a per-task ``(T,)`` count to ``update(num_examples=...)`` for that.

    Args:
        num_tasks: number of tasks ``T``.
        warmup_steps: updates before timing starts (TorchRec: 100).
        clock: seconds as a float (``time.monotonic``); replaceable for tests.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import TowerQPS
        >>> ticks = iter([0.0, 2.0, 4.0])
        >>> qps = TowerQPS(warmup_steps=1, clock=lambda: next(ticks))
        >>> for _ in range(3):
        ...     qps.update(torch.zeros(100))
        >>> qps.compute()  # 200 examples after the warm-up step, in 4 seconds
        tensor(50., dtype=torch.float64)
    """

    # True although `forward` is one `update` (it is overridden): TorchMetrics' `Running` would
    # combine batches with the ranks' max of the seconds and restart the warm-up after every batch
    # (a rate of 0), and it accepts only `full_state_update=False`
    full_state_update = True
    _merges_by_reductions: ClassVar[bool] = True  # merge_state as TorchMetrics' without the mark
    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0

    # elapsed seconds add up within a rank and take the maximum across ranks: no per-update statistic
    window_unsupported: ClassVar[str] = (
        "its elapsed seconds add up within a rank but reduce with max across ranks, so a window of "
        "per-update seconds would keep the longest step, not the window's time."
    )

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        warmup_steps: int = _DEFAULT_WARMUP,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if not callable(clock):
            raise ValueError(f"Expected `clock` to be a callable returning seconds, got {clock!r}.")
        super().__init__(num_tasks, **kwargs)
        self.warmup_steps = warmup_steps
        self.clock = clock
        # The warm-up decides which steps the states count, and leaves them zero until it ends: a
        # non-default warm-up is part of their names, so a MetricCollection never merges two.
        tag = "" if warmup_steps == _DEFAULT_WARMUP else f"warmup{warmup_steps}"
        self._examples_state = self._setting_state_name("num_examples", tag)
        self._seconds_state = self._setting_state_name("seconds", tag)
        self._add_task_state(self._examples_state)
        self._add_task_state(self._seconds_state, dist_reduce_fx="max")
        self._steps = 0
        self._last_tick: float | None = None

    def _states(self) -> tuple[Tensor, Tensor]:
        """The example count and seconds states (named after a non-default ``warmup_steps``)."""
        return getattr(self, self._examples_state), getattr(self, self._seconds_state)

    def _counts(self, preds: Tensor | None, num_examples: Tensor | None, validate: bool) -> Tensor | float:
        if num_examples is not None:
            if validate:
                check_tensor("num_examples", num_examples)
                if num_examples.shape not in ((self.num_tasks,), ()):
                    raise ValueError(
                        f"Expected `num_examples` of shape ({self.num_tasks},) or (), got {tuple(num_examples.shape)}."
                    )
            counts = num_examples.to(torch.float64)  # any real dtype; uint16/32/64 have no comparison kernel on the CPU
            if validate and counts.numel() and not bool(torch.isfinite(counts).all() & (counts >= 0).all()):
                raise ValueError(f"Expected `num_examples` to be finite and non-negative, got {num_examples}.")
            return counts.expand(self.num_tasks)
        if preds is None:
            raise TypeError("TowerQPS.update() requires `preds` or `num_examples`.")
        if validate:
            check_tensor("preds", preds)
            if preds.ndim not in (1, 2) or (preds.ndim == 2 and preds.shape[0] != self.num_tasks):
                raise ValueError(
                    f"Expected `preds` of shape (N,) or ({self.num_tasks}, N), got shape {tuple(preds.shape)}."
                )
        return float(preds.shape[-1])  # every task's count: a number, added without a host-to-device copy

    def _validate(
        self, preds: Tensor | None = None, target: Tensor | None = None, num_examples: Tensor | None = None
    ) -> None:
        self._counts(preds, num_examples, validate=True)

    def update(
        self, preds: Tensor | None = None, target: Tensor | None = None, num_examples: Tensor | None = None
    ) -> None:
        """Count one step's examples (``preds.shape[-1]`` per task, or ``num_examples``) and time it."""
        examples, seconds = self._states()
        counts = self._counts(preds, num_examples, validate=self._check_inputs)
        if isinstance(counts, Tensor):
            counts = counts.to(examples.device)
        now = float(self.clock())  # a reading that is no number raises here, before anything changes
        self._steps += 1
        if self._steps > max(self.warmup_steps, 1) and self._last_tick is not None:
            examples.add_(counts)
            seconds.add_(now - self._last_tick)
        self._last_tick = now

    def _value(self) -> Tensor:
        examples, seconds = self._states()
        timed = seconds > 0
        return self._squeeze_tasks(torch.where(timed, examples / torch.where(timed, seconds, 1.0), 0.0))

    def compute(self) -> Tensor:
        """Examples per second after warm-up; 0 before any timed step (as TorchRec)."""
        return self._value()

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Count and time one step like ``update``, and return this rank's QPS so far (a rate has no batch value)."""
        self.update(*args, **kwargs)
        return self._value()

    def reset(self) -> None:
        """Clear the counts and restart the warm-up."""
        super().reset()
        self._steps = 0
        self._last_tick = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load the counts; the next ``warmup_steps`` updates warm up again (the time before the load never counts)."""
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._steps = 0
        self._last_tick = None
