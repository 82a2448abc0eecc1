"""Base class shared by every metric of the package."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = ["TaskMetric"]


class TaskMetric(Metric):
    """A :class:`torchmetrics.Metric` with a leading task dimension on every state.

    Subclasses declare their sufficient statistics with :meth:`_add_task_state` (a float64
    ``(num_tasks,)`` tensor reduced with ``sum`` across batches and ranks, or another reduction)
    and implement ``update``/``compute``. The base class adds two guarantees on top of
    TorchMetrics:

    * a rejected batch leaves the metric exactly as it was, including the update counter, and
      ``forward`` validates its batch *before* it swaps the accumulated state out, so a bad
      batch in ``forward`` never loses what was accumulated;
    * ``compute`` results of one task come back as scalars (:meth:`_squeeze_tasks`).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        validate_args: check every input (shapes, dtypes, devices, value ranges) before use.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``,
            ``compute_on_cpu``, ``dist_sync_fn``, ...).
    """

    full_state_update: bool = False

    def __init__(self, num_tasks: int = 1, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
            raise ValueError(f"Expected `num_tasks` to be a positive integer, got {num_tasks!r}.")
        if not isinstance(validate_args, bool):
            raise ValueError(f"Expected `validate_args` to be a bool, got {validate_args!r}.")
        self.num_tasks = num_tasks
        self.validate_args = validate_args
        self._inputs_checked = False
        self._list_state_dtypes: dict[str, torch.dtype] = {}

    def _add_task_state(self, name: str, dist_reduce_fx: str = "sum", fill: float = 0.0) -> None:
        """Declare a float64 ``(num_tasks,)`` state reduced with ``dist_reduce_fx``."""
        self.add_state(
            name,
            default=torch.full((self.num_tasks,), fill, dtype=torch.float64),
            dist_reduce_fx=dist_reduce_fx,
        )

    def _add_list_state(self, name: str, dtype: torch.dtype) -> None:
        """Declare an exact ``cat`` list state, gathered across ranks as ``dtype`` (O(n) memory).

        Its chunks may be stored in any dtype; at sync each rank concatenates and casts them to
        ``dtype``, and a rank that saw no batch sends an empty tensor of ``dtype`` (TorchMetrics'
        own placeholder is float32, which cannot be gathered with other ranks' int64 or float64).
        """
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._list_state_dtypes[name] = dtype

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        for name, dtype in self._list_state_dtypes.items():
            value = getattr(self, name)
            if isinstance(value, list):
                joined = dim_zero_cat(value).to(dtype) if value else torch.zeros(0, dtype=dtype, device=self.device)
                setattr(self, name, [joined])
        super()._sync_dist(dist_sync_fn, process_group)

    @property
    def _check_inputs(self) -> bool:
        """Whether this call of ``update`` must validate (``forward`` validates once up front)."""
        return self.validate_args and not self._inputs_checked

    def _validate(self, *args: Any, **kwargs: Any) -> None:
        """Validate one batch without touching state. Subclasses that validate override this."""

    def _squeeze_tasks(self, value: Tensor) -> Tensor:
        """Return a scalar for a single-task metric and the ``(T,)`` tensor otherwise."""
        return value.squeeze(0) if self.num_tasks == 1 and value.ndim > 0 else value

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any = None) -> Any:
        """Plot one value or a sequence of values (``compute()`` when ``val`` is None); needs matplotlib.

        Args:
            val: a value returned by ``compute``/``forward``, or a list of them (plotted over steps).
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.
        """
        return self._plot(val, ax)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Validate the batch, then run TorchMetrics' ``forward`` (batch value + accumulation)."""
        if self.validate_args:
            self._validate(*args, **kwargs)
        self._inputs_checked = True
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._inputs_checked = False

    def _wrap_update(self, update: Callable) -> Callable:
        wrapped = super()._wrap_update(update)

        @functools.wraps(update)
        def guarded(*args: Any, **kwargs: Any) -> None:
            count, computed = self._update_count, self._computed
            try:
                wrapped(*args, **kwargs)
            except Exception:
                self._update_count, self._computed = count, computed
                raise

        return guarded
