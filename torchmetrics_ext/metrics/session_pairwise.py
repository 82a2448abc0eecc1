"""Session pairwise AUC (newer TorchRec's ``session_pairwise_auc``) as a :class:`torchmetrics.Metric`.

Five float64 ``(num_tasks,)`` sums (see :mod:`torchmetrics_ext.functional.session_pairwise`):
constant memory, each synced across ranks with ``sum``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchmetrics_ext.functional import session_pairwise as F
from torchmetrics_ext.metrics.base import InputDomains
from torchmetrics_ext.metrics.session import _SessionInputsMetric

__all__ = ["SessionPairwiseAUC"]


class SessionPairwiseAUC(_SessionInputsMetric):
    r"""Weighted share of concordant pairs inside each session (newer TorchRec's ``session_pairwise_auc``).

    A pair is two rows of one session, both of positive weight, whose labels are at least 1e-6
    apart; it is concordant when the higher label scores higher, a score tie counts one half, and
    it weighs :math:`w_i + w_j` (``weight_pairs=False``: 1). The value is the correct over the total
    pair weight pooled over every session of every batch, so a session weighs by its pairs
    (:math:`\sum` over sessions, not a mean of per-session AUCs as ``GroupedAUC``). A session
    must lie within one batch (as in TorchRec): the same id in two batches is two sessions. With
    0/1 labels and unit weights each session's share is its ROC AUC.

    The defaults compute TorchRec's value (``weight_pairs=True``, ``rank_order_label=False``,
    TorchRec's ``remove_zero_weight_from_pair=True``: a row of weight 0 joins no pair). Where ours
    differs: with no pair the value is ``nan`` with an ``UndefinedMetricWarning`` (TorchRec: 0.5);
    scores and labels are compared in their own precision (TorchRec casts both to float32 first,
    so float64 scores closer than float32's resolution tie there and not here); a batch without a
    row of positive weight (empty, or every weight 0) changes nothing, so it does not count in the
    coverage values' batches either (TorchRec counts every update).

    With ``report_batch_coverage=True``, ``compute()`` returns a dict: ``"session_pairwise_auc"``
    and TorchRec's coverage values ``"valid_pairs_per_batch"`` (the number of pairs, unweighted)
    and ``"effective_training_examples_per_batch"`` (rows in at least one pair), each the mean
    over the batches counted on every rank (0 before any).

    State: five float64 sums per task (correct and total pair weight, pair and row counts,
    batches), constant memory, ``sum`` across ranks. Cost per batch: no pair is formed (each row's
    partners are counted by score in O(log N) vectorised passes), so time is O(N log N) and memory
    O(N) whatever the session sizes (a session of ``m`` rows of distinct labels holds
    ``m (m - 1) / 2`` pairs), and on a device ``update`` never waits for it (with
    ``validate_args=False``; the checks read the inputs' bounds once). On the CPU, a batch of short
    sessions (few pairs per row) compares its pairs directly, in blocks: faster there, same sums.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        rank_order_label: a lower label ranks higher (TorchRec's option of that name).
        weight_pairs: weigh each pair ``w_i + w_j`` (default, TorchRec's); ``False``: 1 per pair
            of rows of positive weight.
        report_batch_coverage: also report TorchRec's two coverage values (``compute()`` returns a dict).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Raises:
        WrongTypeError: (a ``TypeError``) an option that is not a bool, ``sessions`` missing or not integer.
        ValueError: ``sessions`` of another shape or device than ``preds``, non-finite scores or
            labels, negative weights, a wrong task dimension.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import SessionPairwiseAUC
        >>> metric = SessionPairwiseAUC()
        >>> preds = torch.tensor([0.9, 0.2, 0.4, 0.3, 0.8, 0.5])
        >>> target = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
        >>> metric(preds, target, torch.tensor([0, 0, 0, 1, 1, 1]))  # 4 of 5 pairs in order
        tensor(0.8000, dtype=torch.float64)
        >>> coverage = SessionPairwiseAUC(report_batch_coverage=True)
        >>> coverage.update(preds, target, torch.tensor([0, 0, 0, 1, 1, 1]))
        >>> {k: round(v.item(), 4) for k, v in coverage.compute().items()}
        {'session_pairwise_auc': 0.8, 'valid_pairs_per_batch': 5.0, 'effective_training_examples_per_batch': 6.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    ranks_predictions = True  # pairwise concordance: the order of the scores alone
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        rank_order_label: bool = False,
        weight_pairs: bool = True,
        report_batch_coverage: bool = False,
        **kwargs: Any,
    ) -> None:
        F._check_pairwise_args(rank_order_label, weight_pairs, report_batch_coverage)
        super().__init__(num_tasks, **kwargs)
        self.rank_order_label = bool(rank_order_label)
        self.weight_pairs = bool(weight_pairs)
        self.report_batch_coverage = bool(report_batch_coverage)
        # named after the options that change the sums, so compute groups never merge other settings'
        suffix = ("_lower_first" if self.rank_order_label else "") + ("" if self.weight_pairs else "_unit_pairs")
        # and validate_args, in memory only (see TaskMetric._unchecked_state_name)
        self._names = tuple(self._unchecked_state_name(f"session_{name}{suffix}") for name in F.PAIRWISE_STATES)
        for name in self._names:
            self._add_task_state(name)

    def _value_entries(self) -> tuple[str, ...] | None:
        """``None`` (one value), or with ``report_batch_coverage`` the value and TorchRec's coverage names."""
        return ("session_pairwise_auc", *F.COVERAGE_ENTRIES) if self.report_batch_coverage else None

    def _checkpoint_settings(self) -> dict[str, Any]:
        """The options that change what the sums hold."""
        return {
            **super()._checkpoint_settings(),
            "rank_order_label": self.rank_order_label,
            "weight_pairs": self.weight_pairs,
        }

    @property
    def input_domains(self) -> InputDomains:
        """Finite real scores and labels (graded labels, any finite value)."""
        return InputDomains("real", "real")

    def _format_options(self) -> dict[str, Any]:
        return F.FORMAT_OPTIONS

    def _batch_sums(
        self, preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, ...]:
        return F._pairwise_update(preds, target, sessions, weights, self.rank_order_label, self.weight_pairs)

    def compute(self) -> Any:
        """The pooled pairwise AUC per task (with ``report_batch_coverage``, a dict with the coverage values)."""
        states = self._states()
        value = self._squeeze_tasks(F._pairwise_auc_compute(states))
        if not self.report_batch_coverage:
            return value
        coverage = {name: self._squeeze_tasks(v) for name, v in F._coverage_compute(states).items()}
        return {"session_pairwise_auc": value, **coverage}
