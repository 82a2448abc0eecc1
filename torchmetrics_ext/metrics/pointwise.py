"""Pointwise binary and regression metrics as :class:`torchmetrics.Metric` objects.

Each class holds a handful of float64 ``(num_tasks,)`` sums reduced with ``sum`` across
batches and ranks (constant memory) and delegates all math to the kernels in
:mod:`torchmetrics_ext.functional.pointwise`. Metrics of one family hold identically named
states computed the same way, so a :class:`~torchmetrics.MetricCollection` with compute
groups updates e.g. ``NormalizedEntropy`` and ``LogLoss`` once.

Shared behaviour:

* ``update(preds, target, weights=None)`` with ``(N,)`` inputs for one task or ``(T, N)`` for
  ``num_tasks=T``; ``weights`` may also be ``(N,)``, shared by every task.
* A rejected batch raises ``ValueError``/``TypeError`` and changes nothing. An empty batch and a
  batch whose weights are all zero change nothing; a row of weight 0 is an absent row, also where its
  squared error or squared label overflows float64 (values above ``1.3e154``: each is weighed before it
  is squared, so ``inf · 0`` never reaches a sum). Only an error ``p - y`` that itself overflows
  (inputs above ~9e307 in size) still makes the regression sums ``nan``.
* ``compute()`` returns a float64 scalar for one task and ``(T,)`` otherwise; undefined values
  are ``nan`` with an :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.functional import pointwise as F
from torchmetrics_ext.functional.pointwise import _check_eta, _check_threshold
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric, _required_parameters, _tag
from torchmetrics_ext.utilities.checks import (
    PredsDomain,
    TargetDomain,
    check_flag,
    check_pointwise_values,
    format_pointwise,
)
from torchmetrics_ext.utilities.device import on_device_path

__all__ = [
    "CTR",
    "Calibration",
    "LogLoss",
    "NormalizedEntropy",
    "WeightedAccuracy",
    "WeightedAverage",
    "WeightedMAE",
    "WeightedMSE",
    "WeightedPrecision",
    "WeightedRMSE",
    "WeightedRecall",
]


class _PointwiseMetric(TaskMetric):
    """Per-task sum statistics of ``(preds, target, weights)`` batches; subclasses pick the kernels."""

    _state_names: ClassVar[tuple[str, ...]] = ()
    # states whose values depend on a setting (threshold, eta): named after it when not the default
    _setting_dependent: ClassVar[tuple[str, ...]] = ()
    # states whose values depend on `from_logits` (sums of sigmoid(preds) or of their logs): "_logits" when set
    _logit_dependent: ClassVar[tuple[str, ...]] = ()
    # the metric took `from_logits` before settings named the states (checkpoint version 1): such
    # checkpoints hold its logit states under their plain names. False for metrics that gained the
    # option later, whose plain-named states are never logit states (not loaded as such).
    _v1_logit_checkpoints: ClassVar[bool] = True
    _preds_domain: ClassVar[PredsDomain] = "probability"
    _target_domain: ClassVar[TargetDomain] = "unit"
    # the name of update's first argument, as errors call it (``values`` for TensorWeightedAverage)
    _preds_name: ClassVar[str] = "preds"
    # indices of `_batch_stats`' sums that are NaN or ±inf whenever an input is (each a sum of per-sample
    # terms that are, e.g. sum (p - y)² and sum y): an unweighted validated CPU update checks the inputs'
    # values from them instead of reading the inputs' bounds (see `update`). Only for "real" domains (any
    # finite value: nothing else to check) and not from logits (sigmoid(±inf) is finite).
    _finite_sums: ClassVar[tuple[int, int] | None] = None
    # `_batch_stats` takes `pred_range`, the predictions' (min, max) a validated update read (see `update`)
    _takes_pred_range: ClassVar[bool] = False
    # `_batch_stats` takes `binary_target` after `pred_range`: whether the validated labels are 0 or 1 (labels
    # of an integer or bool dtype checked to lie in [0, 1]), for a kernel's cheaper form with the same bits
    _takes_binary_target: ClassVar[bool] = False
    # `_batch_stats` takes predictions of any floating dtype when not from logits (its first operation with them,
    # `preds - target`, promotes them to float64 exactly): `update` hands them over uncast (one call fewer)
    _promotes_preds: ClassVar[bool] = False
    from_logits: bool = False

    def __init__(self, num_tasks: int = 1, *, _setting: str = "", _from_logits: bool = False, **kwargs: Any) -> None:
        """The private base of the pointwise classes; each public class has its own ``__init__`` with public arguments.

        ``_setting``: the tag of the settings that change the ``_setting_dependent`` states (their
        names end with it); ``_from_logits``: the public ``from_logits`` of the subclasses that take it.
        """
        super().__init__(num_tasks, **kwargs)
        self.from_logits = check_flag("from_logits", _from_logits)
        # MetricCollection merges metrics whose states are equal after the first update; two
        # thresholds agree on a batch without scores between them (logits and probabilities on
        # a batch of zero weight), so a non-default setting is part of the state's name and such
        # metrics are never merged (see TaskMetric._setting_state_name).
        keys = []
        for name in self._state_names:
            former = f"{name}_{_setting}" if _setting and name in self._setting_dependent else name
            if self.from_logits and name in self._logit_dependent:
                # a version-1 checkpoint's plain name is this state only if the metric had the option then
                keys.append(
                    self._setting_state_name(
                        former, "logits", None if self._v1_logit_checkpoints else f"{former}_logits"
                    )
                )
            else:
                keys.append(self._setting_state_name(former, ""))
        # validate_args names the states in memory only (see TaskMetric._unchecked_state_name)
        self._saved_keys = tuple(keys)
        self._state_keys = tuple(self._unchecked_state_name(name) for name in keys)
        for name in self._state_keys:
            self._add_task_state(name)

    def _merge_derivations(self) -> dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]]:
        """The load rules of the states added since (sums derived linearly: ``neg_labels``, ``sum w·(1 - p)``)."""
        return self._derived_states

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickle's; one pickled before its class gained states (NE's ``neg_labels``) gets them, derived.

        Such a metric held one state fewer than its class computes from: ``compute`` raised a
        ``TypeError`` and ``update`` a ``RuntimeError``. States added later are last and named after no
        setting (see :func:`_derive_neg_labels`).
        """
        super().__setstate__(state)
        added = self._state_names[len(self._state_keys) :]
        if added:
            self._state_keys = (*self._state_keys, *added)
            if added[-1] == "neg_labels":  # the state added last (NE's family): total - pos
                _derive_neg_labels(self)
            add_later_states(self, added, self)

    def _format(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        validate: bool,
        preds_name: str | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Validate (when asked) and format a batch as ``(T, N)`` float64 tensors.

        Errors call ``preds`` ``preds_name`` (default: this metric's own argument name).
        """
        return self._formatted(preds, target, weights, validate, self._preds_name if preds_name is None else preds_name)

    def _format_validating(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        preds_bounds: list | None,
        cast_preds: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:meth:`_format`, validating, for ``update``.

        The predictions' bounds are appended to ``preds_bounds``; with ``None`` the values (ranges,
        NaN/inf) are left unchecked, for ``update`` to check from the batch's sums. ``cast_preds=False``:
        the predictions keep their floating dtype (see :attr:`_promotes_preds`).
        """
        return self._formatted(
            preds, target, weights, True, self._preds_name, preds_bounds is not None, preds_bounds, cast_preds
        )

    def _formatted(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        validate: bool,
        preds_name: str,
        check_values: bool = True,
        preds_bounds: list | None = None,
        cast_preds: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:func:`~torchmetrics_ext.utilities.checks.format_pointwise` with this metric's domains and settings."""
        return format_pointwise(
            preds,
            target,
            weights,
            self.num_tasks,
            preds_domain=self._preds_domain,
            target_domain=self._target_domain,
            from_logits=self.from_logits,
            validate=validate,
            preds_name=preds_name,
            target_required=self._needs_target,
            check_values=check_values,
            preds_bounds=preds_bounds,
            cast_preds=cast_preds,
        )

    @property
    def _needs_target(self) -> bool:
        """Whether ``update`` requires ``target`` (``Segmented`` asks through ``_format``)."""
        return _update_needs_target(type(self))

    def _validate(self, preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None) -> None:
        self._format(preds, target, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains | None:
        """Domains of ``preds`` and ``target`` this metric accepts.

        Built with ``from_logits=True``, any metric declares ``"probability"`` predictions given as
        logits (any finite value), whatever it takes otherwise (``"real"`` for MSE): a
        :class:`~torchmetrics_ext.RecMetricModule` then knows its predictions are logits.
        """
        preds = "probability" if self.from_logits else self._preds_domain
        return InputDomains(preds, self._target_domain, self.from_logits)

    @property
    def shared_statistics_key(self) -> Hashable:
        """Metrics of one family (same kernel, same state names and ``from_logits``) hold equal states."""
        kernel = next(c for c in type(self).__mro__ if "_batch_stats" in vars(c))
        keys = self.__dict__.get("_saved_keys", self._state_keys)  # the same under either validate_args
        return (kernel.__qualname__, keys, self.from_logits, self.num_tasks)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _compute_value(self, *states: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample_terms(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        """Per-sample terms of :meth:`_batch_stats`: one ``(T, N)`` tensor per state, whose sum over ``N`` it is.

        For :class:`~torchmetrics_ext.Segmented`. Inputs are formatted ``(T, N)`` float64 (weights
        may be ``(1, N)``). Every ``(task, row)`` pair goes to the kernel as a task of one sample,
        which is right for kernels that treat every task alike: a metric with per-task settings
        (``TensorWeightedAverage``'s ``weighted`` flags) overrides this to apply them first.
        ``_compute_value`` must likewise treat tasks alike: it gets ``T·S`` tasks.
        """
        return _per_sample_terms(self._batch_stats, preds, target, weights)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds``/``target`` of shape ``(N,)`` or ``(T, N)``, optional ``weights``."""
        validate = self._check_inputs
        finite_sums = self._finite_sums
        # values checked from the batch's sums (no bounds read of the inputs): see `_finite_sums`
        by_sums = (
            validate
            and finite_sums is not None
            and _checks_finiteness_only(type(self))
            and weights is None
            and not self.from_logits
            and isinstance(preds, Tensor)
            and not on_device_path(preds)
        )
        bounds: list | None = None
        # the kernel casts the predictions itself (exactly, by promotion): no float64 copy of them first
        cast = (
            self.from_logits
            or not _takes_uncast_preds(type(self))
            or getattr(preds, "dtype", None) not in _PROMOTED_PREDS
        )
        if by_sums:
            p, t, w = self._format_validating(preds, target, weights, None, cast)
        elif validate and _passes_pred_range(type(self)):
            bounds = []
            p, t, w = self._format_validating(preds, target, weights, bounds, cast)
        elif cast:
            p, t, w = self._format(preds, target, weights, validate=validate)
        else:  # `_format` is `_PointwiseMetric`'s (see `_takes_uncast_preds`)
            p, t, w = self._formatted(preds, target, weights, validate, self._preds_name, cast_preds=False)
        if p.shape[-1] == 0:
            return
        if not bounds:
            stats = self._batch_stats(p, t, w)
        elif _passes_binary_target(type(self)):
            # validated labels of an integer or bool dtype in [0, 1] are 0 or 1 (no read of their values)
            binary = target is not None and not target.dtype.is_floating_point
            stats = self._batch_stats(p, t, w, bounds[0], binary)  # type: ignore[call-arg]
        else:
            stats = self._batch_stats(p, t, w, bounds[0])  # type: ignore[call-arg]
        if by_sums and not _all_finite(stats[finite_sums[0]], stats[finite_sums[1]]):  # type: ignore[index]
            # an input holds NaN or inf (or finite inputs' sums overflowed): the inputs' own checks say which
            # (or pass), with the message they always give, before anything reaches the states
            check_pointwise_values(
                preds,
                target,
                weights,
                preds_domain=self._preds_domain,
                target_domain=self._target_domain,
                from_logits=self.from_logits,
                preds_name=self._preds_name,
            )
        handed = self.__dict__.get("_forward_batch")
        if handed is not None:  # `forward` makes the batch states from them (TaskMetric._update_hands_statistics)
            handed.append((self._state_keys, stats))
            return
        state = self.__dict__  # the states are plain attributes (add_state): no nn.Module lookup per name
        torch._foreach_add_([state[name] for name in self._state_keys], stats)

    @classmethod
    def _update_hands_statistics(cls) -> bool:
        """``update`` hands ``_batch_stats`` over (sums from +0.0 into zero states), unless a subclass changes it."""
        return cls.update is _PointwiseMetric.update

    @classmethod
    def _update_validates(cls) -> bool:
        """``update`` validates with ``_format`` itself, all of ``_validate`` unless a subclass changes it."""
        return cls._validate is _PointwiseMetric._validate

    def compute(self) -> Tensor:
        """Value over everything accumulated (and synced across ranks)."""
        return self._squeeze_tasks(self._compute_value(*(getattr(self, n) for n in self._state_keys)))


def _all_finite(first: Tensor, second: Tensor) -> bool:
    """Whether every task's sum in ``first`` and ``second`` (CPU) is finite.

    One task: each read directly (a read costs nothing on the CPU; adding them first was one more
    operator call, ~1 µs of a small update). Several: their total (a NaN or ±inf term makes it NaN or ±inf).
    """
    if first.shape[0] == 1:
        return math.isfinite(first.item()) and math.isfinite(second.item())
    return math.isfinite((first + second).sum().item())


@functools.cache
def _checks_finiteness_only(cls: type[_PointwiseMetric]) -> bool:
    """Whether ``cls``'s value checks are finiteness alone ("real" predictions and labels): then sums can stand in.

    Only where ``cls``'s ``_batch_stats`` is the one :attr:`_PointwiseMetric._finite_sums` was written
    for (a subclass with its own sums keeps the bounds read of its inputs).
    """
    return cls._preds_domain == "real" and cls._target_domain == "real" and _stats_of(cls, "_finite_sums")


# prediction dtypes handed over uncast (see `_PointwiseMetric._promotes_preds`): float64 itself (never cast;
# formatted uncast, one task's `(N,)` also keeps its shape, which `preds - target` broadcasts) and those that
# float64 arithmetic promotes (float8 has no such kernels)
_PROMOTED_PREDS = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})


@functools.cache
def _takes_uncast_preds(cls: type[_PointwiseMetric]) -> bool:
    """Whether ``update`` hands ``cls``'s ``_batch_stats`` predictions in their own dtype (see ``_promotes_preds``).

    Only where that kernel is the one the setting was written for, and ``cls`` formats its inputs as
    :class:`_PointwiseMetric` does (a subclass with its own ``_format`` keeps its own formatting).
    """
    return cls._promotes_preds and _stats_of(cls, "_promotes_preds") and cls._format is _PointwiseMetric._format


@functools.cache
def _passes_pred_range(cls: type[_PointwiseMetric]) -> bool:
    """Whether ``update`` hands ``cls``'s ``_batch_stats`` the predictions' bounds (it was written to take them)."""
    return cls._takes_pred_range and _stats_of(cls, "_takes_pred_range")


@functools.cache
def _passes_binary_target(cls: type[_PointwiseMetric]) -> bool:
    """Whether ``update`` also hands ``cls``'s ``_batch_stats`` ``binary_target`` (a kernel written to take it)."""
    return (
        cls._takes_binary_target
        and cls._target_domain in ("unit", "binary")
        and _stats_of(cls, "_takes_binary_target")
        and _passes_pred_range(cls)
    )


def _owner(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO that defines ``name``."""
    return next(c for c in cls.__mro__ if name in vars(c))


def _stats_of(cls: type[_PointwiseMetric], setting: str) -> bool:
    """Whether ``cls``'s ``_batch_stats`` is defined with ``setting`` or before it (not by a subclass after it)."""
    return issubclass(_owner(cls, setting), _owner(cls, "_batch_stats"))


@functools.cache
def _update_needs_target(cls: type[_PointwiseMetric]) -> bool:
    """Whether ``cls.update`` requires ``target`` (asked on every update: kept per class)."""
    return any(name == "target" for _, name in _required_parameters(cls))


def _per_sample_terms(
    kernel: Callable[[Tensor, Tensor | None, Tensor | None], tuple[Tensor, ...]],
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
) -> tuple[Tensor, ...]:
    """``kernel``'s per-task sums of every ``(task, row)`` pair as a one-sample task, each reshaped to ``(T, N)``."""
    shape = preds.shape

    def rows(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.expand(shape).reshape(-1, 1)

    return tuple(
        term.reshape(shape) for term in kernel(preds.expand(shape).reshape(-1, 1), rows(target), rows(weights))
    )


# ----------------------------------------------------------------------------- cross entropy


def _derive_neg_labels(metric: _PointwiseMetric) -> None:
    """Load ``neg_labels`` (``sum w·(1 - y)``, the last state) of a checkpoint that lacks it as ``total - pos``.

    Checkpoints written before the state existed hold ``weighted_num_samples`` and ``pos_labels``
    (the second and third states): their difference is the value NE took from them then.
    """
    keys = metric._state_keys
    metric._derived_states[keys[-1]] = (torch.sub, (keys[1], keys[2]))


def add_later_states(metric: TaskMetric, names: tuple[str, ...], source: TaskMetric) -> None:
    """Add the states ``names`` to ``metric`` (unpickled from before its class had them), derived as loads do.

    ``source``'s load rules (``_derived_states``: ``neg_labels`` as ``total - pos``) compute each from
    ``metric``'s other states, so a metric pickled (``torch.save(model)``) before ``neg_labels`` existed
    computes, updates and merges as a checkpoint of that time loaded does. Each is sum-reduced and as
    persistent as the metric's other states.
    """
    keys = tuple(n for n in metric._defaults if isinstance(metric._defaults[n], Tensor))
    persistent = any(metric._persistent.get(n, False) for n in keys)
    for name in names:
        if name not in source._derived_states:  # no rule to derive it by: left out (compute fails as before)
            continue
        derive, sources = source._derived_states[name]
        value = derive(*(getattr(metric, s) for s in sources))
        default = derive(*(metric._defaults[s] for s in sources))  # of the defaults (zeros): zeros
        metric.add_state(name, default=default, dist_reduce_fx="sum")
        metric._persistent[name] = persistent
        setattr(metric, name, value)


class _CrossEntropyMetric(_PointwiseMetric):
    # `neg_labels` (sum w·(1 - y), NE's label-0 weight as summed) came after checkpoints of the first three
    _state_names = ("cross_entropy_sum", "weighted_num_samples", "pos_labels", "neg_labels")
    _setting_dependent = ("cross_entropy_sum",)
    _logit_dependent = ("cross_entropy_sum",)
    _takes_pred_range = True  # no clamp where the validated predictions lie inside [eta, 1 - eta]
    _takes_binary_target = True  # one log per sample for 0/1 labels (integer or bool labels, validated)
    is_differentiable = True
    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(self, num_tasks: int = 1, *, eta: float = 1e-12, from_logits: bool = False, **kwargs: Any) -> None:
        eta = _check_eta(eta)
        super().__init__(
            num_tasks, _setting="" if eta == 1e-12 else f"eta_{_tag(eta)}", _from_logits=from_logits, **kwargs
        )
        self.eta = float(eta)
        _derive_neg_labels(self)

    def _batch_stats(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        pred_range: tuple[float, ...] = (),
        binary_target: bool = False,
    ) -> tuple[Tensor, ...]:
        return F._cross_entropy_update(
            preds,
            target,  # type: ignore[arg-type]
            weights,
            self.eta,
            self.from_logits,
            pred_range,
            binary_target,
        )


class NormalizedEntropy(_CrossEntropyMetric):
    r"""Normalized entropy (NE): weighted cross-entropy over the entropy of the weighted base rate.

    .. math::
        \mathrm{NE} = \frac{-\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}
        {-\sum_i w_i\,[\bar y \log c + (1-\bar y)\log(1-c)]},
        \qquad \bar y = \frac{\sum_i w_i y_i}{\sum_i w_i}, \quad c = \min(\max(\bar y, \eta), 1 - \eta)

    The log base cancels. Lower is better; 1.0 is no better than always predicting the base
    rate. Predictions are clamped to ``[eta, 1 - eta]`` as in TorchRec, and so is the base rate
    inside the denominator's logs only (:math:`c`; the denominator is the entropy of
    :math:`\bar y` whenever :math:`\bar y` lies in that interval); labels may be soft. State:
    four float64 sums per task (constant memory), the same states as :class:`LogLoss`, so both
    share one compute group.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        eta: probability clamp, in [0, 0.5).
        from_logits: ``preds`` are logits (the exact log-sigmoid form is used, no clamp).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: NaN/inf ``preds``, probabilities outside [0, 1], labels outside [0, 1],
            negative weights, mismatched shapes/devices or a wrong task dimension.
        TypeError: non-tensor inputs or non-floating ``preds``.

    Note:
        NE is undefined (``nan`` plus ``UndefinedMetricWarning``) until both classes have
        non-zero label weight; TorchRec returns a huge finite number there instead. The states
        keep the positive and the negative label weight (:math:`\sum w y` and
        :math:`\sum w (1 - y)`) each as its own sum, so a base rate within ``1e-9`` of 1 (or of
        0) keeps its digits: the normaliser is as precise as those sums (unweighted soft labels:
        each batch's negative weight is ``N - sum y``, off by about ``N * 1e-16``, which is relative
        ``1e-4`` of it, and of NE, for labels averaging ``1 - 1e-12``; validated weights that are
        all exactly 1 are read as no weights and take this path too, while other weights, or unit
        weights with ``validate_args=False``, are summed as ``sum w·(1 - y)``). A checkpoint
        written before the negative weight had a state loads it as the total less the positive
        weight, with that difference's rounding (about ``1e-16 * total``).

        A label-0 sample's term is computed as ``log(1 - p)``, as scikit-learn's ``log_loss``
        does, not as the twice slower ``log1p(-p)``: ``1 - p`` rounds by up to ``2**-54`` for
        ``p < 1/2``, so the cross-entropy sum is off by at most ``1.1e-16`` nats per unit of
        label-0 weight (relative ``5.6e-17 / p`` for one sample). NE's relative error from it is
        at most ``1.1e-16 * (1 - ȳ) / LogLoss``: ``5e-9`` for NE near 1 at a base rate of
        ``1e-9``, above ``1e-8`` only when the mean cross-entropy itself is below ``1.1e-8`` nats.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import NormalizedEntropy
        >>> ne = NormalizedEntropy()
        >>> ne.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
        >>> ne.update(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))
        >>> ne.compute()  # constant prediction at the base rate
        tensor(1., dtype=torch.float64)
    """

    def _compute_value(self, ce_sum: Tensor, total: Tensor, pos: Tensor, neg: Tensor) -> Tensor:  # type: ignore[override]
        return F._normalized_entropy_compute(ce_sum, total, pos, self.eta, neg_labels=neg)


class LogLoss(_CrossEntropyMetric):
    r"""Weighted mean binary cross-entropy in nats, equal to scikit-learn's ``log_loss``.

    .. math:: \mathrm{LogLoss} = -\frac{\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}{\sum_i w_i}

    Shares its states with :class:`NormalizedEntropy`. Labels may be soft.

    State: :class:`NormalizedEntropy`'s four float64 sums per task (constant memory, ``sum`` across
    ranks).

    Args:
        num_tasks: number of tasks ``T``.
        eta: probability clamp, in [0, 0.5).
        from_logits: ``preds`` are logits.
        unit: ``"nats"`` (natural log) or ``"bits"`` (base 2, TorchRec's ``logloss``).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

        A label-0 sample's term is computed as ``log(1 - p)`` (as scikit-learn's ``log_loss``),
        not as the twice slower ``log1p(-p)``: the value is off by at most ``1.1e-16`` nats times
        the label-0 share of the weight (``1 - p`` rounds by up to ``2**-54``), a relative error of
        at most ``1.1e-16 / LogLoss``, which matters only for losses near ``1e-8`` nats and below
        (label-0 samples alone at ``p = 1e-12``: up to ``5.6e-5``). See :class:`NormalizedEntropy`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import LogLoss
        >>> metric = LogLoss(num_tasks=2)
        >>> metric.update(torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.tensor([[1, 0], [1, 0]]))
        >>> metric.compute()  # log(2), -log(0.9)
        tensor([0.6931, 0.1054], dtype=torch.float64)
    """

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        eta: float = 1e-12,
        from_logits: bool = False,
        unit: F.LogUnit = "nats",
        **kwargs: Any,
    ) -> None:
        unit = F._check_unit(unit)
        super().__init__(num_tasks, eta=eta, from_logits=from_logits, **kwargs)
        self.unit: F.LogUnit = unit

    def _compute_value(self, ce_sum: Tensor, total: Tensor, *_: Tensor) -> Tensor:  # type: ignore[override]
        return F._log_loss_compute(ce_sum, total, self.unit, self.eta > 0 or self.from_logits)


# ----------------------------------------------------------------------------- weighted sums


class _WeightedSumMetric(_PointwiseMetric):
    _state_names = ("weighted_pred_sum", "weighted_label_sum", "weighted_num_samples")
    _logit_dependent = ("weighted_pred_sum",)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._weighted_sums_update(preds, target, weights, self.from_logits)


class Calibration(_WeightedSumMetric):
    r"""Calibration: :math:`\sum_i w_i p_i / \sum_i w_i y_i` (1.0 is calibrated on average).

    State: three float64 sums per task (constant memory, ``sum`` across ranks), shared with
    :class:`CTR`.

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits (``sigmoid`` is applied first).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while no positive label weight has been seen.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import Calibration
        >>> metric = Calibration()
        >>> metric(torch.tensor([0.25, 0.5, 0.75, 0.5]), torch.tensor([0, 0, 1, 0]))
        tensor(2., dtype=torch.float64)
    """

    is_differentiable = True
    higher_is_better = None
    plot_lower_bound = 0.0

    def __init__(self, num_tasks: int = 1, *, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, _from_logits=from_logits, **kwargs)

    def _compute_value(self, pred_sum: Tensor, label_sum: Tensor, total: Tensor) -> Tensor:  # type: ignore[override]
        return F._calibration_compute(pred_sum, label_sum, weighted_num_samples=total)


class CTR(_WeightedSumMetric):
    r"""Click-through rate: the weighted share of positive labels, :math:`\sum_i w_i y_i / \sum_i w_i`.

    ``preds`` are accepted so every pointwise metric has one signature, and checked as every
    pointwise metric's: probabilities in [0, 1] (any finite logit with ``from_logits=True``), same
    shape. The rate depends on the labels alone, but the states are :class:`Calibration`'s (one
    compute group in a ``MetricCollection``, where only one member of a group checks a batch),
    so a batch ``Calibration`` would refuse is refused here too. (A
    :class:`~torchmetrics_ext.RecMetricModule` checks every metric's inputs at once and feeds CTR
    without reading its predictions: :attr:`input_domains` declares any finite value.)

    State: :class:`Calibration`'s three float64 sums per task (constant memory, ``sum`` across
    ranks).

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits. The rate does not change; the option says what the
            predictions are, as for every pointwise metric (a
            :class:`~torchmetrics_ext.RecMetricModule` then reads its predictions as logits), and
            the states are :class:`Calibration`'s with the same option (one compute group).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR
        >>> metric = CTR()
        >>> metric.update(torch.tensor([0.3, 0.1, 0.2, 0.6]), torch.tensor([1, 0, 0, 0]))
        >>> metric.compute()
        tensor(0.2500, dtype=torch.float64)
        >>> CTR(from_logits=True)(torch.tensor([-1.2, 3.0, 0.4, -0.5]), torch.tensor([1, 0, 0, 0]))
        tensor(0.2500, dtype=torch.float64)
    """

    _v1_logit_checkpoints = False  # from_logits came after checkpoints named the states
    reads_predictions = False
    is_differentiable = False
    higher_is_better = None
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, num_tasks: int = 1, *, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, _from_logits=from_logits, **kwargs)

    @property
    def input_domains(self) -> InputDomains | None:
        """Any finite predictions (a module that checks a batch for every metric at once never reads CTR's)."""
        return InputDomains("probability" if self.from_logits else "real", self._target_domain, self.from_logits)

    def _compute_value(self, pred_sum: Tensor, label_sum: Tensor, total: Tensor) -> Tensor:  # type: ignore[override]
        return F._ctr_compute(label_sum, total)


class WeightedAverage(_WeightedSumMetric):
    r"""Weighted mean of the predictions, :math:`\sum_i w_i p_i / \sum_i w_i` (any finite values).

    State: three float64 sums per task (constant memory, ``sum`` across ranks). The total weight is
    a plain :math:`\sum_i w_i` (targets may be any real number), not :class:`CTR`'s class-exact
    one, so it is named ``weighted_num_samples_plain`` and a ``MetricCollection`` never puts this
    metric in one compute group with ``CTR`` or ``Calibration`` (checkpoints holding the former
    name ``weighted_num_samples`` still load).

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits: the mean predicted probability
            :math:`\sum_i w_i \sigma(z_i) / \sum_i w_i` (float64 sigmoid). Its sum state is then
            ``weighted_pred_sum_logits``.
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedAverage
        >>> metric = WeightedAverage()
        >>> metric.update(torch.tensor([1.0, 3.0]), weights=torch.tensor([3.0, 1.0]))
        >>> metric.compute()
        tensor(1.5000, dtype=torch.float64)
        >>> WeightedAverage(from_logits=True)(torch.tensor([0.0, 2.0, -2.0]))  # (0.5 + 0.881 + 0.119) / 3
        tensor(0.5000, dtype=torch.float64)
    """

    # the total is computed otherwise than CTR's (see _batch_stats): a name of its own keeps them apart
    _state_names = ("weighted_pred_sum", "weighted_label_sum", "weighted_num_samples_plain")
    _preds_domain = "real"
    _target_domain = "real"
    _finite_sums = (0, 1)  # sum p and sum y (0 without labels)
    _v1_logit_checkpoints = False  # from_logits came after checkpoints named the states
    is_differentiable = True
    higher_is_better = None

    def __init__(self, num_tasks: int = 1, *, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, _from_logits=from_logits, **kwargs)
        self._load_former_names("weighted_num_samples_plain", "weighted_num_samples")  # its former name

    def update(self, preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None) -> None:
        """Accumulate ``preds``; ``target`` is optional and unused (checked for shape, device and finite values)."""
        super().update(preds, target, weights)  # type: ignore[arg-type]

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        # any real target: a plain `sum w` (the class-exact total of CTR would cancel), so not CTR's kernel
        return F._weighted_sums_update(preds, target, weights, self.from_logits, unit_target=False)

    def _compute_value(self, pred_sum: Tensor, label_sum: Tensor, total: Tensor) -> Tensor:  # type: ignore[override]
        return F._weighted_average_compute(pred_sum, total)


# ----------------------------------------------------------------------------- thresholded


class _ConfusionMetric(_PointwiseMetric):
    _state_names = ("true_positives", "false_positives", "true_negatives", "false_negatives")
    _setting_dependent = _state_names
    _logit_dependent = _state_names
    _target_domain = "binary"
    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, num_tasks: int = 1, *, threshold: float = 0.5, from_logits: bool = False, **kwargs: Any) -> None:
        threshold = _check_threshold(threshold)
        setting = "" if threshold == 0.5 else f"at_{_tag(threshold)}"
        super().__init__(num_tasks, _setting=setting, _from_logits=from_logits, **kwargs)
        self.threshold = float(threshold)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._confusion_update(preds, target, weights, self.threshold, self.from_logits)  # type: ignore[arg-type]


class WeightedAccuracy(_ConfusionMetric):
    r"""Weighted accuracy at a threshold: :math:`\sum_i w_i [\,[p_i \ge t] = y_i\,] / \sum_i w_i`.

    State: four float64 weighted confusion counts per task (constant memory, ``sum`` across ranks),
    shared with :class:`WeightedPrecision` and :class:`WeightedRecall` at the same threshold.

    Args:
        num_tasks: number of tasks ``T``.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: ``preds`` are logits (the threshold stays a probability).
        validate_args: check each batch (labels must be 0 or 1).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

        TN is kept as :math:`\sum_i w_i - (TP + FP + FN)` (no fourth weighted sum per batch), so
        the value carries the rounding of the float64 sums as an *absolute* error, relative to
        the total weight: about :math:`10^{-16}` on small batches, :math:`2\cdot 10^{-13}`
        measured on :math:`10^6` equal weights in one batch, whatever the weights' magnitude or
        dtype. A value near 1 is that close to its exact value (every prediction right gives
        exactly 1); a value near 0 may be off by more than itself (every prediction wrong may
        give :math:`10^{-14}`, not 0).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedAccuracy
        >>> metric = WeightedAccuracy(threshold=0.5)
        >>> metric(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 0, 0]))
        tensor(0.5000, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._accuracy_compute(*states)


class WeightedPrecision(_ConfusionMetric):
    r"""Weighted precision at a threshold: :math:`TP / (TP + FP)` with weighted counts.

    ``p >= threshold`` is a positive prediction; ``p == threshold`` counts once, as a positive
    (TorchRec counts it both as a true positive and a false negative).

    State: :class:`WeightedAccuracy`'s four float64 weighted confusion counts per task (constant
    memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: ``preds`` are logits (the threshold stays a probability).
        validate_args: check each batch (labels must be 0 or 1).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while there is no positive prediction.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedPrecision
        >>> metric = WeightedPrecision()
        >>> metric(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 1, 1]))
        tensor(0.6667, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._precision_compute(*states)


class WeightedRecall(_ConfusionMetric):
    r"""Weighted recall at a threshold: :math:`TP / (TP + FN)` with weighted counts.

    State: :class:`WeightedAccuracy`'s four float64 weighted confusion counts per task (constant
    memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: ``preds`` are logits (the threshold stays a probability).
        validate_args: check each batch (labels must be 0 or 1).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while there is no positive label.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedRecall
        >>> metric = WeightedRecall()
        >>> metric(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 1, 0]))
        tensor(0.5000, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._recall_compute(*states)


# ----------------------------------------------------------------------------- regression errors


class _ErrorMetric(_PointwiseMetric):
    _state_names = ("sum_squared_error", "sum_absolute_error", "weighted_num_samples", "label_sum", "label_squared_sum")
    _logit_dependent = ("sum_squared_error", "sum_absolute_error")
    _v1_logit_checkpoints = False  # from_logits came after checkpoints named the states
    _preds_domain = "real"
    _target_domain = "real"
    is_differentiable = True
    higher_is_better = False
    plot_lower_bound: float | None = 0.0
    # sum (p - y)² and sum y: NaN or ±inf when a label is, and then when a prediction is
    _finite_sums = (0, 3)
    # the error `preds - target` (float64 labels) is the float64 error of predictions of any floating dtype
    _promotes_preds = True
    # the point the label sums are taken about (R²'s `label_offset`; 0 for MSE, RMSE, MAE)
    label_offset: float = 0.0

    def __init__(self, num_tasks: int = 1, *, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(num_tasks, _from_logits=from_logits, **kwargs)

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        return F._error_update(preds, target, weights, self.from_logits, self.label_offset)  # type: ignore[arg-type]

    @property
    def shared_statistics_key(self) -> Hashable:
        """One kernel for the family (MSE, RMSE, MAE, R², NMSE, NRMSE): equal states for equal names and options.

        The base's key (the class defining ``_batch_stats``, the state names, ``from_logits``,
        ``num_tasks``) plus the label offset itself, so that two offsets never share a compute group
        even if their state names were ever to agree.
        """
        key = super().shared_statistics_key
        assert isinstance(key, tuple)
        return (*key, ("label_offset", self.label_offset))


class WeightedMSE(_ErrorMetric):
    r"""Weighted mean squared error, :math:`\sum_i w_i (p_i - y_i)^2 / \sum_i w_i`.

    Equal to scikit-learn's ``mean_squared_error(..., sample_weight=w)``. Shares its states
    with :class:`WeightedRMSE`, :class:`WeightedMAE`, :class:`WeightedR2`, :class:`WeightedNMSE`
    and :class:`WeightedNRMSE`.

    State: five float64 sums per task (constant memory, ``sum`` across ranks).

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits :math:`z_i` (any finite value) and the prediction is
            :math:`p_i = \sigma(z_i)` (with 0/1 labels, the Brier score). The error
            :math:`\sigma(z_i) - y_i` is computed in float64 from :math:`\sigma(-|z_i|)`, so a
            confident prediction keeps its small error (``z = 40``, ``y = 1``: :math:`-4.2 \cdot
            10^{-18}`, not 0). The error states are then named ``..._logits``.
        validate_args: check each batch (finite values, non-negative weights).
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedMSE
        >>> metric = WeightedMSE()
        >>> metric(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
        tensor(2.5000, dtype=torch.float64)
        >>> WeightedMSE(from_logits=True)(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]))  # sigmoid(0) = 0.5
        tensor(0.2500, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._mse_compute(*states)


class WeightedRMSE(_ErrorMetric):
    r"""Weighted root mean squared error, :math:`\sqrt{\sum_i w_i (p_i - y_i)^2 / \sum_i w_i}`.

    State: :class:`WeightedMSE`'s five float64 sums per task (constant memory, ``sum`` across
    ranks).

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits: the error of the probability :math:`\sigma(z_i)` (see
            :class:`WeightedMSE`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedRMSE
        >>> metric = WeightedRMSE()
        >>> metric(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]))
        tensor(3.5355, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._rmse_compute(*states)


class WeightedMAE(_ErrorMetric):
    r"""Weighted mean absolute error, :math:`\sum_i w_i |p_i - y_i| / \sum_i w_i`.

    State: :class:`WeightedMSE`'s five float64 sums per task (constant memory, ``sum`` across
    ranks).

    Args:
        num_tasks: number of tasks ``T``.
        from_logits: ``preds`` are logits: the error of the probability :math:`\sigma(z_i)` (see
            :class:`WeightedMSE`).
        validate_args: check each batch.
        kwargs: TorchMetrics options.

    Note:
        ``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero (before any update,
        or after batches of zero weight only).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import WeightedMAE
        >>> metric = WeightedMAE()
        >>> metric(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]), torch.tensor([1.0, 3.0]))
        tensor(3.7500, dtype=torch.float64)
    """

    def _compute_value(self, *states: Tensor) -> Tensor:
        return F._mae_compute(*states)
