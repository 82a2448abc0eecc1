r"""Pairwise concordance metrics for real-valued labels: :class:`RegressionAUC` and :class:`XAUC`.

Both keep every sample (exact ``cat`` list states, O(N) memory) and compute over all pairs of
the accumulated data in O(N log N) with the kernels of
:mod:`torchmetrics_ext.functional.auc.pairwise`. They hold identical states, so a
:class:`~torchmetrics.MetricCollection` with compute groups stores the samples once for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat

from torchmetrics_ext.functional.auc import pairwise as F
from torchmetrics_ext.metrics.auc.binary import _one_task, _sample_major, appended_by, keeps_own_lists
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.utilities.checks import check_flag, format_pointwise
from torchmetrics_ext.utilities.device import on_device_path

__all__ = ["XAUC", "RegressionAUC"]

# label dtypes torch < 2.4 cannot index on the CPU ("index_cpu" not implemented)
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)

# named for this family so that compute groups never merge them with another family's lists
_STATES = ("pair_preds", "pair_target", "pair_weights")


class _PairwiseMetric(TaskMetric):
    """Stores ``(preds, target, weights)`` of every sample; subclasses pick the compute kernel.

    States are flat float64 lists laid out sample-major (``n * T`` values per batch), so that
    TorchMetrics' ``cat`` reduction (along dim 0) concatenates batches and ranks of any length.
    """

    is_differentiable = False
    higher_is_better = True
    ranks_predictions = True  # pairwise concordance: the order of the predictions alone
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    pair_preds: list[Tensor] | Tensor
    pair_target: list[Tensor] | Tensor
    pair_weights: list[Tensor] | Tensor

    def _values_per_sample(self) -> dict[str, int]:
        """One score, label and weight per task for each sample (sample-major rows)."""
        return dict.fromkeys(self._pair_states, self.num_tasks)

    def __init__(self, num_tasks: int = 1, *, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        # the order of the logits is that of the probabilities: the states (the scores as given)
        # and the value do not depend on it, only what the predictions are declared to be
        self.from_logits = check_flag("from_logits", from_logits)
        # validate_args names them in memory only (see TaskMetric._unchecked_state_name)
        self._pair_states = tuple(self._unchecked_state_name(name) for name in _STATES)
        for name in self._pair_states:
            self._add_list_state(name, torch.float64)

    def _checkpoint_settings(self) -> dict[str, Any]:
        """``num_tasks`` and ``from_logits``: the states are the scores as given, logits or probabilities.

        Compute groups may share them (the same batch's scores), a checkpoint of the other
        ``from_logits`` may not: it would rank logits among probabilities.
        """
        return {**super()._checkpoint_settings(), "from_logits": self.from_logits}

    def _format(
        self, preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        p, t, w = format_pointwise(
            preds,
            target,
            weights,
            self.num_tasks,
            preds_domain="real",
            target_domain="real",
            validate=validate,
        )
        return p, t, w  # type: ignore[return-value]

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        self._format(preds, target, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains:
        """Finite real predictions and labels; with ``from_logits=True`` the predictions are logits (any finite)."""
        return InputDomains("probability" if self.from_logits else "real", "real", self.from_logits)

    @property
    def shared_statistics_key(self) -> tuple[str, int]:
        """``RegressionAUC`` and ``XAUC`` store the same samples, ``from_logits`` or not (the scores as given)."""
        return ("_PairwiseMetric", self.num_tasks)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Store one batch: ``preds``/``target`` of shape ``(N,)`` or ``(T, N)``, optional ``weights``.

        On the CPU, rows whose weight is zero in every task are dropped (they cannot change the
        value); on other devices they are kept, since finding them would wait for the device.
        """
        rows = self._rows(preds, target, weights)
        if rows is not None:
            for name, value in zip(self._pair_states, rows):
                getattr(self, name).append(value)

    def _list_update(
        self, preds: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> dict[str, list[Tensor]] | None:
        """The chunks ``update`` would append to each list state, appending nothing.

        For :class:`~torchmetrics_ext.Windowed`, which puts them into the lifetime and the window
        itself (no slot of statistics: the metric has no other state). Validates as ``update``
        does; empty lists for a batch without a kept row; ``None`` where ``update`` must run itself
        (a missing argument, list states kept on the CPU or cast by ``set_dtype``).
        """
        if target is None or keeps_own_lists(self):
            return None
        rows = appended_by(self, self._rows, preds, target, weights)
        if rows is None:
            return {name: [] for name in self._pair_states}
        return {name: [chunk] for name, chunk in zip(self._pair_states, rows)}

    def _rows(self, preds: Tensor, target: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor] | None:
        """The batch validated (unless checked already) as the float64 sample-major chunks ``update`` stores.

        ``None`` for a batch without a kept row (empty, or every row of zero weight on the CPU).
        """
        if _one_task(preds, target) and (
            weights is None or (isinstance(weights, Tensor) and weights.shape == preds.shape)
        ):
            # one task of (n,) inputs (the common case): sample-major already, no (1, n) views;
            # the same rows kept, the same copies stored, as below
            if self._check_inputs:
                self._validate(preds, target, weights)
            p, t, w = preds, target, weights
            if w is not None and not w.is_floating_point():  # (uint16/32/64 have no CPU min kernel)
                w = w.to(dtype=torch.float64)
        else:
            p, t, w = self._format(preds, target, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return None
        if w is not None:
            w = w.expand_as(p) if w.shape != p.shape else w
            # weights all positive (the common case) are told by one reduction; NaN fails both tests
            if not on_device_path(p) and not bool(w.min() > 0):
                keep = w > 0 if w.ndim == 1 else (w > 0).any(0)
                if not bool(keep.all()):
                    if t.dtype in _WIDE_UNSIGNED:  # (torch < 2.4 cannot index uint16/32/64; stored as float64 anyway)
                        t = t.to(dtype=torch.float64)
                    p, t, w = p[..., keep], t[..., keep], w[..., keep]
                    if p.shape[-1] == 0:
                        return None
        # sample-major: transpose (T, n) -> (n, T) so batches concatenate along dim 0; copies, so
        # that a float64 input modified by the caller later does not change the state
        return (
            _sample_major(p, torch.float64),
            _sample_major(t, torch.float64),
            # unit weights: nothing to drop, the stored ones made as they are kept (no ones_like and cast)
            torch.ones(p.numel(), dtype=torch.float64, device=p.device)
            if w is None
            else _sample_major(w, torch.float64),
        )

    def _stacked(self, name: str) -> Tensor:
        """A state as one float64 ``(T, N)`` tensor (``N = 0`` before any update)."""
        value = getattr(self, name)
        if isinstance(value, list):
            value = dim_zero_cat(value) if value else torch.zeros(0, dtype=torch.float64, device=self.device)
        return value.to(torch.float64).reshape(-1, self.num_tasks).T

    def _pair_counts(self) -> tuple[F.PairCounts, Callable[[], Tensor]]:
        """Pair totals in units of a per-task power of two (ratios need no more; see ``_pairwise_counts``).

        And the tasks that saw no weight at all, read from the same ``(T, N)`` states only where a value is undefined.
        """
        preds, target, weights = (self._stacked(name) for name in self._pair_states)
        return F._pairwise_counts(preds, target, weights, relative=True), F._no_weight(preds, weights)


class RegressionAUC(_PairwiseMetric):
    r"""Regression AUC: the weighted share of pairs with different labels that the predictions order alike.

    .. math::
        \mathrm{RAUC} = \frac{\sum_{i<j,\ y_i \ne y_j} w_i w_j
        \left([\,(p_i - p_j)(y_i - y_j) > 0\,] + \tfrac12 [\,p_i = p_j\,]\right)}
        {\sum_{i<j,\ y_i \ne y_j} w_i w_j}

    TorchRec's RAUC generalised the way Harrell's C-index is: pairs with equal labels are
    excluded, a tie in predictions counts one half, pairs are weighted by :math:`w_i w_j`.
    With labels in {0, 1} it equals the weighted ROC AUC. Every pair of the accumulated data
    counts (across batches and ranks).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        from_logits: ``preds`` are logits. Concordance depends on the order of the predictions
            alone, which the sigmoid keeps, so the logits are ranked as given (no sigmoid, which
            would tie logits where it saturates): the value is that of ``sigmoid(preds)`` wherever
            the sigmoid does not saturate, and the states are the same.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ``compute_on_cpu``, ...).

    Raises:
        ValueError: NaN/inf predictions or labels, negative weights, mismatched shapes or
            devices, or a wrong task dimension.
        TypeError: non-tensor inputs or non-floating ``preds``.

    Note:
        Memory: exact, O(N): ``3 x 8`` bytes per sample and task (float64 ``cat`` lists, rows
        of zero weight dropped on the CPU); ``compute`` needs about 150 bytes per sample and task of
        temporaries. Compute: O(N log N) time, no Python loop over samples or tasks. DDP:
        ranks with any number of batches, or none, sync with ``cat``. Undefined (``nan`` plus
        ``UndefinedMetricWarning``) while no pair of different labels has non-zero weight.
        Unlike TorchRec's RAUC (a window of the last samples, weights ignored, label ties
        counted as concordant, prediction ties as full credit), see ``docs/pairwise_auc.md``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RegressionAUC
        >>> metric = RegressionAUC()
        >>> metric.update(torch.tensor([0.1, 0.3]), torch.tensor([0.0, 1.0]))
        >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 2.0]))
        >>> metric.compute()  # 4 concordant pairs + one prediction tie (1/2) over 5 pairs
        tensor(0.9000, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """RAUC over every sample accumulated (and synced across ranks)."""
        return self._squeeze_tasks(F._regression_auc_compute(*self._pair_counts()))


class XAUC(_PairwiseMetric):
    r"""XAUC: the weighted share of all pairs whose predictions and labels order the same way.

    .. math::
        \mathrm{XAUC} = \frac{\sum_{i<j} w_i w_j\,
        [\,\operatorname{sign}(p_i - p_j) = \operatorname{sign}(y_i - y_j)\,]}{\sum_{i<j} w_i w_j}

    TorchRec's pairwise concordance and tie rule: a pair tied in both prediction and label
    agrees, a pair tied in exactly one of them disagrees. Pairs with equal labels stay in the
    denominator, so unlike :class:`RegressionAUC` it also rewards equal scores for equal labels.
    Without ties both equal :math:`(1 + \tau_a)/2` (Kendall's tau-a).

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        from_logits: ``preds`` are logits. Concordance depends on the order of the predictions
            alone, which the sigmoid keeps, so the logits are ranked as given (no sigmoid, which
            would tie logits where it saturates): the value is that of ``sigmoid(preds)`` wherever
            the sigmoid does not saturate, and the states are the same.
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: NaN/inf predictions or labels, negative weights, mismatched shapes or
            devices, or a wrong task dimension.
        TypeError: non-tensor inputs or non-floating ``preds``.

    Note:
        Memory: exact, O(N), the same states as :class:`RegressionAUC`. TorchRec's XAUC
        pairs only samples of the same batch (an N x N matrix per batch, so its value depends
        on the batch size); here every pair of the accumulated data counts, in O(N log N).
        Undefined (``nan`` plus ``UndefinedMetricWarning``) with fewer than two samples of
        non-zero weight (TorchRec returns 0). Pairs are between distinct samples: an integer
        weight ``k`` differs from ``k`` copies of a row, whose copies add ``k (k - 1) / 2``
        pairs tied in both.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import XAUC
        >>> metric = XAUC()
        >>> metric.update(torch.tensor([0.1, 0.3]), torch.tensor([0.0, 1.0]))
        >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 2.0]))
        >>> metric.compute()  # 4 of 6 pairs agree; one label tie and one prediction tie do not
        tensor(0.6667, dtype=torch.float64)
        >>> logits = torch.tensor([-2.2, -0.8, 0.0, 0.0])  # the same order as the probabilities above
        >>> XAUC(from_logits=True)(logits, torch.tensor([0.0, 1.0, 1.0, 2.0]))
        tensor(0.6667, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """XAUC over every sample accumulated (and synced across ranks)."""
        return self._squeeze_tasks(F._xauc_compute(*self._pair_counts()))
