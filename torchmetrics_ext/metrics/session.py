"""Session-level precision and recall (TorchRec's ``*_session_level``) as :class:`torchmetrics.Metric` objects.

Both classes hold the same seven float64 ``(num_tasks,)`` sums (pooled TP/FP/FN and per-session
precision/recall sums and counts, see :mod:`torchmetrics_ext.functional.session`), named after
``k``, so a :class:`~torchmetrics.MetricCollection` with compute groups ranks each batch once
for both, and ``average`` is only a choice made in ``compute``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchmetrics_ext.functional import session as F
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.utilities.checks import format_pointwise
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["SessionPrecisionAtK", "SessionRecallAtK"]


class _SessionInputsMetric(TaskMetric):
    """A metric fed whole sessions: ``update(preds, target, sessions, weights=None)`` adds per-task sums.

    Subclasses name their sums' states in ``self._names`` (in the order their :meth:`_batch_sums` returns
    them) and the options of ``format_pointwise`` their inputs take (:meth:`_format_options`); the session
    ids' checks, the validation, the update and the states are shared here.
    """

    _names: tuple[str, ...]

    def _format_options(self) -> dict[str, Any]:
        """The keyword arguments of ``format_pointwise`` besides the inputs (domains, dtype)."""
        raise NotImplementedError

    def _batch_sums(
        self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, ...]:
        """One non-empty batch's per-task sums, in the order of ``self._names``."""
        raise NotImplementedError

    def _format(
        self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None, validate: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        if sessions is None:  # even unvalidated: a named error, not an AttributeError from the kernel
            raise WrongTypeError(f"{type(self).__name__}.update() requires `sessions`.")
        p, t, w = format_pointwise(
            preds, target, weights, self.num_tasks, preds_domain="real", validate=validate, **self._format_options()
        )
        return p, t, F._format_sessions(sessions, p, validate), w  # type: ignore[return-value]

    def _validate(self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None = None) -> None:
        self._format(preds, target, sessions, weights, validate=True)

    def update(self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: scores, labels and integer session ids, ``(N,)`` or ``(T, N)``; optional weights."""
        p, t, s, w = self._format(preds, target, sessions, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return
        for name, value in zip(self._names, self._batch_sums(p, t, s, w)):
            getattr(self, name).add_(value)

    def _states(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, name) for name in self._names)


class _SessionMetric(_SessionInputsMetric):
    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        k: int,
        num_tasks: int = 1,
        *,
        average: F.Average = "session",
        rank_labels: bool = False,
        **kwargs: Any,
    ) -> None:
        k, average = F._check_session_args(k, average, rank_labels)
        super().__init__(num_tasks, **kwargs)
        self.k = k
        self.average: F.Average = average
        self.rank_labels = rank_labels = bool(rank_labels)  # checked: a bool or a NumPy bool
        suffix = f"_at_{k}" + ("_ranked_labels" if rank_labels else "")
        # and validate_args, in memory only (see TaskMetric._unchecked_state_name)
        self._names = tuple(self._unchecked_state_name(name + suffix) for name in F.SESSION_STATES)
        for name in self._names:
            self._add_task_state(name)

    def _format_options(self) -> dict[str, Any]:
        return {"target_domain": "real" if self.rank_labels else "unit"}

    def _batch_sums(
        self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, ...]:
        return F._session_update(preds, target, sessions, weights, self.k, self.rank_labels)


class SessionPrecisionAtK(_SessionMetric):
    r"""Precision of the top-``k`` items of each session taken as positive (TorchRec's ``precision_session_level``).

    Within a session an item's rank is the number of items scoring strictly higher; items
    ranked below ``k`` are predicted positive (ties at the cut-off are all positive, as in
    TorchRec). ``average="session"`` (default) is the mean of the sessions' weighted precisions
    (sessions without a predicted positive skipped); ``average="micro"`` is TorchRec's pooled
    :math:`\sum TP / \sum (TP + FP)`. A session must lie within one batch. A row of weight 0
    is an absent row: it takes no top-``k`` place (TorchRec ranks it like any other row), so
    ``average="micro"`` is TorchRec's value whenever no zero-weight row is among a session's top
    ``k`` by TorchRec's ranking of all rows (always when every weight is positive; with
    ``rank_labels``, the same for the labels' ranking); otherwise a weighted row that such a row
    pushes out of TorchRec's top ``k`` is predicted positive here.

    State: seven float64 sums per task (constant memory, ``sum`` across ranks): sessions are scored
    at ``update``, so none is kept.

    Args:
        k: number of top-ranked items of a session predicted positive (TorchRec's ``top_threshold``),
            below ``2**63``; a ``k`` at least a session's length predicts all its items positive.
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        average: ``"session"`` or ``"micro"``.
        rank_labels: the top-``k`` labels of each session are the positives (TorchRec's
            ``run_ranking_of_labels``); labels may then be any finite values.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import SessionPrecisionAtK
        >>> metric = SessionPrecisionAtK(k=2)
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.5, 0.4, 0.3])
        >>> target = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1])
        >>> metric(preds, target, torch.tensor([1, 1, 1, 2, 2, 2, 2, 3]))
        tensor(0.8333, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """Session-level precision over everything accumulated."""
        return self._squeeze_tasks(F._session_precision_compute(self._states(), self.average))


class SessionRecallAtK(_SessionMetric):
    r"""Recall of the top-``k`` items of each session taken as positive (TorchRec's ``recall_session_level``).

    Ranking and averaging as in :class:`SessionPrecisionAtK`; ``average="session"`` skips
    sessions without a positive label.

    State: :class:`SessionPrecisionAtK`'s seven float64 sums per task (constant memory, ``sum``
    across ranks).

    Args:
        k: number of top-ranked items of a session predicted positive (TorchRec's ``top_threshold``),
            below ``2**63``; a ``k`` at least a session's length predicts all its items positive.
        num_tasks: number of tasks ``T``.
        average: ``"session"`` or ``"micro"``.
        rank_labels: the top-``k`` labels of each session are the positives.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import SessionRecallAtK
        >>> metric = SessionRecallAtK(k=2, average="micro")
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.5, 0.4, 0.3])
        >>> target = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1])
        >>> metric(preds, target, torch.tensor([1, 1, 1, 2, 2, 2, 2, 3]))
        tensor(0.8000, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """Session-level recall over everything accumulated."""
        return self._squeeze_tasks(F._session_recall_compute(self._states(), self.average))
