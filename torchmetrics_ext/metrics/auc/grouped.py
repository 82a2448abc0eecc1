"""Grouped AUC / AUPRC (GAUC) as :class:`torchmetrics.Metric` objects.

Exact mode keeps every sample (groups may span batches and ranks); with
``groups_complete_per_batch=True`` each batch's groups are scored at ``update`` and only two
float64 sums per task are kept (constant memory, like TorchRec's grouped AUC). All math lives in
:mod:`torchmetrics_ext.functional.auc.grouped`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.functional.auc import grouped as F
from torchmetrics_ext.metrics._bootstrap import INSIDE as _INSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import OUTSIDE as _OUTSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import marked, warn_bootstrapped_groups
from torchmetrics_ext.metrics.auc.binary import _one_task, _sample_major, _take_samples, appended_by, keeps_own_lists
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.utilities.checks import check_flag
from torchmetrics_ext.utilities.device import on_device_path

__all__ = ["GroupedAUC", "GroupedAUPRC"]


def _fits_int32(dtype: torch.dtype) -> bool:
    return dtype in (torch.int8, torch.uint8, torch.int16, torch.int32)


class _GroupedCurveMetric(TaskMetric):
    _kind: ClassVar[str] = "auc"
    _name: ClassVar[str] = "GroupedAUC"
    is_differentiable: bool = False
    higher_is_better: bool = True
    plot_lower_bound: float = 0.0
    plot_upper_bound: float = 1.0

    signed_weights: list[Tensor]
    groups: list[Tensor]

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        weight_groups: bool = False,
        groups_complete_per_batch: bool = False,
        average_groups: str = "defined",
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        weight_groups = check_flag("weight_groups", weight_groups)
        groups_complete_per_batch = check_flag("groups_complete_per_batch", groups_complete_per_batch)
        from_logits = check_flag("from_logits", from_logits)
        average_groups = F._check_average_groups(average_groups)
        self.average_groups = average_groups
        self.weight_groups = weight_groups
        self.groups_complete_per_batch = groups_complete_per_batch
        self.from_logits = from_logits
        # The running sums depend on the metric (AUC or AP per group) and on how groups are weighted,
        # and on which groups are averaged, so their states are named after all three: compute groups
        # never merge GroupedAUC with GroupedAUPRC (or weighted with unweighted) when the first batch
        # happens to agree.
        weighting = "weight" if weight_groups else "count"
        if average_groups == "all":
            weighting += "_all_groups"
        # from_logits names a state of each mode too (`..._logits`): a MetricCollection never merges the
        # two settings into one compute group, whose members but the first skip their own input checks
        # (probabilities in [0, 1] or any finite logit). Checkpoints written before hold the plain names.
        logits = "logits" if from_logits else ""
        value_sum = f"group_{self._kind}_by_{weighting}_sum"
        # and validate_args names them in memory only (see TaskMetric._unchecked_state_name)
        value_state = self._unchecked_state_name(self._setting_state_name(value_sum, logits))
        self._sum_states = (value_state, f"group_{weighting}_sum")
        self._preds_state = self._unchecked_state_name(self._setting_state_name("preds", logits))
        if groups_complete_per_batch:
            # the per-group sums are the same for a score and its sigmoid: either setting's load
            other = value_sum if from_logits else f"{value_sum}_logits"
            self._load_former_names(self._sum_states[0], re.escape(other))
            for name in self._sum_states:
                self._add_task_state(name)
        else:
            if from_logits:  # the scores as given (recorded: a checkpoint of probabilities is refused)
                self._load_former_names(self._preds_state, "preds")
            self._add_list_state(self._preds_state, torch.float32)
            self._add_list_state("signed_weights", torch.float32)
            self._add_list_state("groups", torch.int64)  # any int64 id (hashed user ids included)

    @property
    def _zero_weight_batches_count(self) -> bool:
        """Whether an all-zero-weight batch changes the value: ``average_groups="all"`` counts its groups (unweighted).

        Such a group counts 0.5 (AUC) or 0 (AUPRC) in the mean over groups; ``Windowed`` and a windowed
        ``RecMetricModule`` then keep the batch (they skip it for the metrics it changes nothing in).
        """
        return self.average_groups == "all" and not self.weight_groups

    def _values_per_sample(self) -> dict[str, int]:
        """Exact mode: a score and a signed weight per task and one group id for each sample."""
        if self.groups_complete_per_batch:
            return {}
        return {self._preds_state: self.num_tasks, "signed_weights": self.num_tasks, "groups": 1}

    def _checkpoint_settings(self) -> dict[str, Any]:
        """``num_tasks``, and ``from_logits`` in exact mode, whose ``preds`` are the scores as given.

        A checkpoint of the other ``from_logits`` would rank logits among probabilities within a
        group; the per-group sums of ``groups_complete_per_batch`` do not depend on it (an AUC or
        AP per group is the same for a score and its sigmoid).
        """
        settings = super()._checkpoint_settings()
        return settings if self.groups_complete_per_batch else {**settings, "from_logits": self.from_logits}

    def _settings_shown_by(self, saved: Collection[str]) -> dict[str, Any]:
        """Exact mode: ``from_logits`` of a checkpoint holding ``preds_logits`` (``preds`` may be either's)."""
        return {"from_logits": True} if not self.groups_complete_per_batch and "preds_logits" in saved else {}

    def _format(
        self, preds: Tensor, target: Tensor, groups: Tensor, weights: Tensor | None, validate: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        return F._format_grouped(preds, target, groups, weights, self.num_tasks, self.from_logits, validate)

    def _validate(self, preds: Tensor, target: Tensor, groups: Tensor, weights: Tensor | None = None) -> None:
        self._format(preds, target, groups, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains:
        """Probabilities (or logits) and binary labels; ``groups`` are integer ids; float32 weights."""
        return InputDomains("probability", "binary", self.from_logits, float32_weights=True)

    @property
    def shared_statistics_key(self) -> Hashable:
        """Exact-mode ``GroupedAUC``/``GroupedAUPRC`` with the same settings hold equal states."""
        names = tuple(self._reductions)
        return ("_GroupedCurveMetric", names, self.weight_groups, self.from_logits, self.num_tasks)

    def _before_update(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The base checks, then a warning when they found this copy inside TorchMetrics' ``BootStrapper``.

        (:func:`~torchmetrics_ext.metrics._bootstrap.warn_bootstrapped_groups`: it resamples rows, not
        groups. The base's mark is read, no second walk of the callers; outside a bootstrap: two dict lookups.)
        """
        state = self.__dict__
        fresh = not marked(state, _OUTSIDE_BOOTSTRAP, self) and not marked(state, _INSIDE_BOOTSTRAP, self)
        super()._before_update(args, kwargs)
        if fresh and marked(state, _INSIDE_BOOTSTRAP, self):
            warn_bootstrapped_groups(self)

    def update(self, preds: Tensor, target: Tensor, groups: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds``/``target`` ``(N,)`` or ``(T, N)``, ``groups`` ``(N,)`` ids."""
        if self.groups_complete_per_batch:
            p, t, g, w = self._format(preds, target, groups, weights, validate=self._check_inputs)
            if p.shape[-1] == 0:
                return
            # checked labels (or an IndexError before anything is stored): on the CPU integer labels' signs
            # come from a table, without a float copy of the labels
            signed = FB._signed_weights(t, w, lookup=not on_device_path(p))
            sums = F._grouped_update(p, signed, g, self._kind, self.weight_groups, self.average_groups)
            for name, value in zip(self._sum_states, sums):
                getattr(self, name).add_(value)
            return
        rows = self._exact_rows(preds, target, groups, weights)
        if rows is not None:
            scores, signed, ids = rows
            getattr(self, self._preds_state).append(scores)  # small chunks joined after the update
            self.signed_weights.append(signed)
            self.groups.append(ids)

    def _list_update(
        self, preds: Tensor, target: Tensor, groups: Tensor, weights: Tensor | None = None
    ) -> dict[str, list[Tensor]] | None:
        """The chunks exact-mode ``update`` would append to each list state, appending nothing.

        As :meth:`AUC._list_update <torchmetrics_ext.AUC._list_update>`: for
        :class:`~torchmetrics_ext.Windowed`, validated as ``update`` validates, empty lists for an
        empty batch, ``None`` where ``update`` must run itself (``groups_complete_per_batch``, a
        missing argument, list states kept on the CPU or cast by ``set_dtype``).
        """
        if self.groups_complete_per_batch or target is None or groups is None or keeps_own_lists(self):
            return None
        rows = appended_by(self, self._exact_rows, preds, target, groups, weights)
        names = (self._preds_state, "signed_weights", "groups")
        if rows is None:
            return {name: [] for name in names}
        return {name: [chunk] for name, chunk in zip(names, rows)}

    def _exact_rows(
        self, preds: Tensor, target: Tensor, groups: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Exact mode: the batch validated (unless checked already) as its (scores, signed weights, ids) chunks.

        What ``update`` appends: sample-major scores and signed weights and a copy of the ``(n,)``
        ids (never the caller's tensor; ids given in 32 bits or fewer keep 4 bytes per row, int64 at
        sync); ``None`` for an empty batch.
        """
        if (
            _one_task(preds, target)
            and isinstance(groups, Tensor)
            and groups.ndim == 1
            and (weights is None or (isinstance(weights, Tensor) and weights.shape == preds.shape))
        ):
            # one task of (n,) inputs kept as they are (the common case): sample-major already, so
            # no (1, n) views and no transposes; the same kernels, and the same values, as below
            if self._check_inputs:
                self._validate(preds, target, groups, weights)
            signed = FB._signed_weights(target, weights, lookup=not on_device_path(preds))
            scores = _sample_major(preds)
        else:
            p, t, groups, w = self._format(preds, target, groups, weights, validate=self._check_inputs)
            if p.shape[-1] == 0:
                return None
            # checked labels (or an IndexError before anything is stored): on the CPU integer labels' signs
            # come from a table, without a float copy of the labels
            signed = FB._signed_weights(t, w, lookup=not on_device_path(p))
            scores, signed = _sample_major(p), signed.T.reshape(-1)
        ids = groups.to(torch.int32 if _fits_int32(groups.dtype) else torch.int64, copy=True)
        return scores, signed, ids

    def compute(self) -> Tensor:
        """Mean per-group value over everything accumulated (and synced across ranks)."""
        unseen = None  # the sums cannot tell a task that saw no weight (see F._grouped_compute)
        if self.groups_complete_per_batch:
            value_sum, weight_sum = (getattr(self, name) for name in self._sum_states)
        else:
            scores = _take_samples(getattr(self, self._preds_state), self.num_tasks, self.device)
            signed = _take_samples(self.signed_weights, self.num_tasks, self.device)
            groups = _take_samples(self.groups, 1, self.device, torch.int64).reshape(-1)  # int32/int64 ids, as kept
            value_sum, weight_sum = F._grouped_update(
                scores, signed, groups, self._kind, self.weight_groups, self.average_groups
            )
            unseen = F._no_weight(signed)
        return self._squeeze_tasks(F._grouped_compute(value_sum, weight_sum, self._name, unseen))


class GroupedAUC(_GroupedCurveMetric):
    r"""Grouped AUC (GAUC): the mean per-group ROC AUC over groups that hold both classes.

    .. math::
        \mathrm{GAUC} = \frac{\sum_{g \in \mathcal{G}} v_g\, \mathrm{AUC}_g}{\sum_{g \in \mathcal{G}} v_g},
        \qquad v_g = 1 \text{ or } v_g = \sum_{i \in g} w_i \ (\texttt{weight\_groups})

    with :math:`\mathrm{AUC}_g` the weighted, tie-aware AUC (:class:`~torchmetrics_ext.AUC`) of
    group ``g`` and :math:`\mathcal{G}` the groups with positive and negative label weight.
    ``update(preds, target, groups, weights=None)`` with ``groups`` an ``(N,)`` integer tensor of
    ids (user, query, session...) shared by every task.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        weight_groups: weight each group by its total sample weight instead of 1.
        groups_complete_per_batch: every group is complete within the batch it arrives in: score
            groups at ``update`` and keep two float64 sums per task (constant memory). A group
            split across batches then counts as separate groups, as in TorchRec's ``GAUCMetric``
            (this option is what gives a ``GroupedAUC`` TorchRec's ``gauc`` key in
            ``RecMetricModule(key_style="torchrec")``).
        average_groups: ``"defined"`` (default): average the groups holding both classes;
            ``"all"``: every group, one without both classes counting 0.5, as TorchRec's grouped
            AUC (a group of zero-weight rows counts too: 0.5, of weight 0 under ``weight_groups``;
            ``RecMetricModule.from_torchrec_config`` turns it on).
        from_logits: ``preds`` are logits (the value does not depend on it).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: as for :class:`~torchmetrics_ext.AUC`, ``groups`` of the wrong shape or
            device, or an unknown ``average_groups``.
        TypeError: non-tensor inputs, non-floating ``preds`` or non-integer ``groups``.

    Note:
        The default (exact) mode stores float32 scores, float32 signed weights and the group id
        per sample in ``cat`` states (O(n) memory: 8·T bytes plus 4 for ids given in 32 bits or
        fewer, kept as int32, else 8, kept as int64): groups may span batches and ranks. The ids
        stay exact integers: ``set_dtype`` casts the scores and weights only (``.to(dtype)`` none).
        ``compute`` makes one sort by ``(task, group, score)`` and cumulative sums within each
        group (never across groups, so a group's value does not depend on the others' weights or
        ids): no Python loop over groups. Ties within a group count one half, as in :class:`AUC`.
        Undefined (``nan`` plus ``UndefinedMetricWarning``) when no group holds both classes.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import GroupedAUC
        >>> metric = GroupedAUC()
        >>> metric.update(torch.tensor([0.9, 0.2, 0.3]), torch.tensor([1, 0, 1]), torch.tensor([0, 0, 1]))
        >>> metric.update(torch.tensor([0.6, 0.5]), torch.tensor([0, 1]), torch.tensor([1, 2]))
        >>> metric.compute()  # group 0: 1.0, group 1: 0.0, group 2 has one class
        tensor(0.5000, dtype=torch.float64)
    """

    _kind = "auc"
    _name = "GroupedAUC"


class GroupedAUPRC(_GroupedCurveMetric):
    r"""Grouped average precision: the mean per-group AUPRC over groups that hold both classes.

    Same definition, modes and arguments as :class:`GroupedAUC` with :math:`\mathrm{AP}_g`
    (scikit-learn's ``average_precision_score`` of group ``g``) in place of
    :math:`\mathrm{AUC}_g`. Groups with positives only (AP trivially 1) are left out.

    Args:
        num_tasks: number of tasks ``T``.
        weight_groups: weight each group by its total sample weight instead of 1.
        groups_complete_per_batch: score groups per batch and keep constant-memory sums.
        average_groups: ``"defined"`` (default) or ``"all"``: every group, one with positive
            weight only counting 1 and one without positive weight 0 (TorchRec's grouped AUPRC;
            a group of zero-weight rows counts too: 0, of weight 0 under ``weight_groups``).
        from_logits: ``preds`` are logits.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Raises:
        ValueError: as for :class:`GroupedAUC`.
        TypeError: as for :class:`GroupedAUC`.

    Note:
        Memory, ties, DDP and undefined values as for :class:`GroupedAUC`; both hold the same
        states, so they share one compute group in a :class:`~torchmetrics.MetricCollection`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import GroupedAUPRC
        >>> metric = GroupedAUPRC(groups_complete_per_batch=True)
        >>> preds, target = torch.tensor([0.9, 0.2, 0.3, 0.6]), torch.tensor([1, 0, 1, 0])
        >>> metric.update(preds, target, groups=torch.tensor([0, 0, 1, 1]))
        >>> metric.compute()  # (1 + 0.5) / 2
        tensor(0.7500, dtype=torch.float64)
    """

    _kind = "auprc"
    _name = "GroupedAUPRC"
