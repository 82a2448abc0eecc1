r"""Pointwise binary and regression metrics as pure tensor functions.

Every metric is split into an ``_x_update`` kernel, mapping one batch to per-task float64
sufficient statistics, and an ``_x_compute`` kernel, mapping accumulated statistics to the
value. The public functions (validate → update → compute) and the classes in
:mod:`torchmetrics_ext.metrics.pointwise` call the same kernels, so the two cannot drift.

Inputs are ``(N,)`` for one task (the result is a scalar) or ``(T, N)`` for ``T`` tasks (the
result has shape ``(T,)``). An ``(N, 1)`` column (``N > 1``: one task's samples as a model head
gives them) is read as ``N`` one-sample tasks, as the shape says, with a
:class:`~torchmetrics_ext.utilities.warnings.SamplesFirstWarning` saying to squeeze it for one
task (the functions have no ``num_tasks`` to tell the two apart; a class has). ``weights``
default to one; a ``(N,)`` weight vector is shared by all tasks. Undefined values are ``nan``
with an :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from torchmetrics_ext.functional._sums import batch_sums, one_like, weight_total, weighted_sum
from torchmetrics_ext.utilities.checks import (
    as_real,
    check_choice,
    check_flag,
    checks_validate_args,
    format_pointwise,
    single_task,
)
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, safe_divide, warn_undefined

__all__ = [
    "calibration",
    "ctr",
    "log_loss",
    "normalized_entropy",
    "weighted_accuracy",
    "weighted_average",
    "weighted_mae",
    "weighted_mse",
    "weighted_precision",
    "weighted_recall",
    "weighted_rmse",
]

Stats = tuple[Tensor, ...]


# ----------------------------------------------------------------------------- helpers


_weighted_sum = weighted_sum
_weight_total = weight_total


def _check_eta(eta: float) -> float:
    """``eta`` as a Python number (NumPy scalars and 0-dim tensors accepted); ``ValueError`` unless in [0, 0.5)."""
    value = as_real(eta)
    if value is None or not 0 <= value < 0.5:
        raise refusal(f"Expected `eta` to be a float in [0, 0.5), got {eta!r}.", wrong_type=value is None)
    return value


def _check_threshold(threshold: float) -> float:
    """``threshold`` as a Python number (NumPy scalars and 0-dim tensors accepted); ``ValueError`` unless in [0, 1]."""
    value = as_real(threshold)
    if value is None or not 0 <= value <= 1:
        raise refusal(
            f"Expected `threshold` to be a probability in [0, 1], got {threshold!r}.", wrong_type=value is None
        )
    return value


def _once(make: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """``make`` called at the first call only, its result returned at every call (a per-call intermediate)."""
    made: list[Tensor] = []

    def once() -> Tensor:
        if not made:
            made.append(make())
        return made[0]

    return once


def _finish(value: Tensor, single_task: bool) -> Tensor:
    return value.squeeze(0) if single_task else value


# ----------------------------------------------------------------------------- cross entropy


def _weighed(eta: float, values: Tensor, weights: Tensor | None) -> Tensor:
    """``values`` with 0 where the weight is 0, when ``eta = 0``.

    A sure wrong prediction's infinite cost times a zero weight would be nan: a zero-weight sample
    changes nothing.
    """
    if eta != 0 or weights is None:
        return values
    return torch.where(weights > 0, values, 0.0)


def _minus_abs(x: Tensor) -> Tensor:
    """``-|x|`` whose gradient at ``x = 0`` is the right-hand one, ``-1`` (``abs`` gives 0 there).

    The logit kernels split a smooth function at ``z = 0`` into ``-|z|`` and ``max(z, 0)`` (or a
    ``z >= 0`` branch), whose gradients at 0 are taken from the right: a zero gradient of ``|z|``
    there would lose the ``exp(-|z|)`` term's part of the derivative (the log loss's gradient at a
    logit of exactly 0, e.g. a zero-initialised output layer, came out ``1 - 2y`` instead of
    ``0.5 - y``, the squared error's 0 instead of ``±1/8``). The same values as ``-x.abs()``.
    """
    return torch.where(x >= 0, -x, x) if x.requires_grad else x.abs().neg_()


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to float64 rounding for every finite ``x``: ``max(x, 0) + log1p(e^-|x|)``.

    ``F.softplus`` returns ``x`` itself above its ``threshold`` (20), off by ``log1p(e^-x)``
    (relative ``6e-11`` at ``x = 20.5``); this form has no threshold and never overflows. Its
    gradient is ``sigmoid(x)`` everywhere, ``1/2`` at 0 included (see :func:`_minus_abs`).
    """
    return torch.log1p(torch.exp(_minus_abs(x))).add_(x.clamp(min=0))


def _logit_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample ``softplus(z) - y·z`` in nats, to float64 rounding in both tails, for labels in [0, 1].

    Written as ``log1p(e^-|z|) + lerp(max(z, 0), max(-z, 0), y)``: both terms are non-negative, and
    ``torch.lerp`` takes ``a + y·(b - a)`` for ``y < 0.5`` and ``b - (1 - y)·(b - a)`` otherwise
    (``b - a = -z`` exactly), a difference of at most half its first operand: no cancellation.
    ``F.binary_cross_entropy_with_logits`` computes ``(1 - y)·z - logsigmoid(z)``, which cancels
    for a confident correct negative (``y = 0``, ``z ≪ 0``): relative error ``3e-7`` at
    ``z = -20`` and ``0`` instead of ``4e-18`` at ``z = -40``.
    """
    # max(-z, 0) as max(z, 0) - z (the same values): its gradient at z = 0 is then the right-hand one, 0,
    # as those of max(z, 0) and -|z| (:func:`_minus_abs`), and the gradient is sigmoid(z) - y there too
    positive = logits.clamp(min=0)
    margin = torch.lerp(positive, positive - logits, target)
    return margin.add_(torch.log1p(torch.exp(_minus_abs(logits))))


def _unclamped_log_likelihood(p: Tensor, target: Tensor) -> Tensor:
    """``y·log(p) + (1 - y)·log(1 - p)`` of unclamped probabilities (``eta = 0``), with ``0·log 0 = 0``.

    Where ``p`` is neither 0 nor 1, the bits of the clamped path's lerp of logs. A sure ``p`` (0 or 1)
    makes that lerp ``0·(-inf) = nan`` in value and gradient, so there the two terms are taken each
    with its log's argument replaced by 1 where its label weight is 0: a sure prediction on its own
    label costs 0, with the gradient of the term left (``-1`` at ``p = 0``, ``1`` at ``p = 1``, as
    the derivative ``y/p - (1-y)/(1-p)``), and a sure wrong one ``-inf``. The lerp is taken of 1/2
    there, so no ``nan`` reaches the gradient through the branch not chosen.
    """
    sure = (p == 0) | (p == 1)
    q = torch.where(sure, 0.5, p)
    lerped = torch.lerp(torch.log(1 - q), torch.log(q), target)
    exact = torch.xlogy(target, torch.where(target == 0, 1, p)) + torch.xlogy(
        1 - target, torch.where(target == 1, 1, 1 - p)
    )
    return torch.where(sure, exact, lerped)


def _cross_entropy_update(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    eta: float,
    from_logits: bool,
    pred_range: tuple[float, ...] = (),
    binary_target: bool = False,
) -> Stats:
    """Return ``(sum w·CE, sum w, sum w·y, sum w·(1 - y))`` per task; CE in nats.

    Probabilities are clamped to ``[eta, 1 - eta]`` (TorchRec's rule); logits use the exact,
    overflow-free ``softplus(z) - y·z`` (:func:`_logit_cross_entropy`) and need no clamp. With
    ``eta = 0``, ``0·log 0 = 0``. ``pred_range``: the predictions' ``(min, max)`` if the caller read
    them (as a shared batch's :attr:`~torchmetrics_ext.functional._sums.BatchSums.pred_range`): no
    clamp where they lie inside ``[eta, 1 - eta]`` (it would change nothing). ``binary_target``: the
    caller validated every label to be 0 or 1 (one log per sample instead of two, the same bits); the
    out-of-place form is kept where ``preds`` require gradients.
    """
    sums = batch_sums(preds, target, weights, binary_target and not preds.requires_grad)
    if from_logits:
        ce_sum = sums.weighted(("ce_logits",), lambda: _logit_cross_entropy(preds, target))
    else:

        def cross_entropy() -> Tensor:
            # no clamp where the predictions' known bounds lie inside it (the same values, one pass fewer)
            low, high = (sums.pred_range or pred_range)[:2] or (-math.inf, math.inf)
            p = preds if eta <= low and high <= 1 - eta else preds.clamp(eta, 1 - eta)
            # below 2**-54, 1 - eta rounds to 1 and the upper clamp is a no-op: then 1 - p is floored
            # at eta instead, so p = 1 costs -log(eta) on label 0 (as p = 0 on label 1), not inf/nan
            floor = 0 < eta and 1 - eta == 1
            if sums.binary_target:
                # y in {0, 1}: log(p) or log(1 - p) with one log; lerp(1 - p, p, y) is 1 - p or p
                # exactly (its weight 0 or 1 takes one end as it is), bit for bit the lerp of logs below
                # (and with its precision: log(1 - p), not log1p(-p), see there)
                complement = one_like(p) - p
                likelihood = torch.lerp(complement, p, target, out=complement)
                return _weighed(eta, (likelihood.clamp_(min=eta) if floor else likelihood).log_(), weights)
            # (1 - y)·log(1 - p) + y·log(p) as one lerp: half the cost of F.binary_cross_entropy.
            # log(1 - p) rather than log1p(-p), which takes about twice as long on the CPU (float64;
            # measured 3-5% of a NormalizedEntropy update, 5-9% of a RecMetricModule step, where the
            # 0/1-label path above needs one log in all). What that costs in precision: 1 - p is exact
            # for p >= 1/2; below, it rounds by up to 2**-54, so a label-0 term is off by at most
            # 2**-53 = 1.1e-16 nats in absolute terms, ~5.6e-17 / p relative (5.6e-8 at p = 1e-9,
            # 5.6e-5 at p = eta = 1e-12: the clamp does not bound it). Summed, the cross-entropy is off
            # by at most 1.1e-16 nats per unit of label-0 weight: LogLoss and NE relative at most
            # 1.1e-16 * (1 - ȳ) / LogLoss (ȳ the base rate; beyond the logs' and sums' own rounding),
            # 5e-9 for NE ~ 1 at a base rate of 1e-9 (1.4e-10 measured against mpmath on random p),
            # above 1e-8 only where LogLoss is below 1.1e-8 nats (label-0 data alone with tiny p, or
            # base rates below ~5e-10). scikit-learn's log_loss takes the same log(1 - p).
            # tests/test_pointwise_precision.py holds the kernel to this bound against 50-digit references.
            if eta == 0:
                return _weighed(eta, _unclamped_log_likelihood(p, target), weights)
            # `one_like(p) - p`: the bits of `1 - p` without wrapping the Python 1 (~1 µs of a small update)
            complement = one_like(p) - p
            if floor:
                complement = complement.clamp_(min=eta)
            return _weighed(eta, torch.lerp(torch.log(complement), torch.log(p), target), weights)

        ce_sum = sums.value(("ce", eta), lambda: sums.weighted(("log_likelihood", eta), cross_entropy).neg())
    # the class-exact total: all-positive labels give `total - pos` exactly 0 (NE undefined, not 1e12); the
    # label-0 weight summed as such, not found as `total - pos` (which keeps ulp(total) of it: NE's normaliser)
    return ce_sum, sums.class_total(), sums.label_sum(), sums.complement_sum()


LogUnit = Literal["nats", "bits"]


def _check_unit(unit: object) -> LogUnit:
    """``unit`` as a Python string (a 0-dim NumPy string too); ``ValueError`` unless a known one."""
    return check_choice("unit", unit, ("nats", "bits"), "'nats' or 'bits'")  # type: ignore[return-value]


def _log_loss_compute(
    cross_entropy_sum: Tensor, weighted_num_samples: Tensor, unit: LogUnit = "nats", finite_terms: bool = True
) -> Tensor:
    """Mean weighted cross-entropy; ``finite_terms``: every sample's cross-entropy is finite (``eta > 0`` or logits).

    Then an infinite sum is an overflow of finite terms (``nan``, see :func:`safe_divide`); with
    ``eta = 0`` a sure wrong probability has an infinite cross-entropy, and the value is ``inf``.
    """
    nats = safe_divide(cross_entropy_sum, weighted_num_samples, "LogLoss", NO_SAMPLES, finite_terms=finite_terms)
    # + 0.0 turns -0.0 into +0.0: with eta = 0 perfect predictions' sum is -(sum of 0·log...) = -0.0
    return (nats / math.log(2) if unit == "bits" else nats) + 0.0


def _normalized_entropy_compute(
    cross_entropy_sum: Tensor,
    weighted_num_samples: Tensor,
    pos_labels: Tensor,
    eta: float,
    metric: str = "NormalizedEntropy",
    neg_labels: Tensor | None = None,
) -> Tensor:
    """NE = mean weighted cross-entropy / entropy of the weighted base rate.

    ``neg_labels``: the label-0 weight ``sum w·(1 - y)`` as summed (``None``: ``total - pos``, which
    keeps only ``ulp(total)`` of it: relative ``1e-7`` in NE for a negative weight of 0.3 among ``1e9``
    of fractional weight). The normaliser's error is first order in it and only second order in the
    rounding of the base rate ``pos / total``: the base-rate entropy is stationary there.

    Undefined (``nan``) when the total weight is zero or every label weight is on one class
    (the base-rate entropy is zero). The base rate ``y`` is clamped to ``c`` in ``[eta, 1 - eta]``
    inside the logs only, like the predictions: the normaliser is ``-W (y log c + (1 - y) log(1 - c))``
    (TorchRec's), not the entropy of ``c``; it differs from the entropy of ``y`` only for base rates
    within ``eta`` of 0 or 1.
    """
    if neg_labels is None:
        neg_labels = weighted_num_samples - pos_labels
    undefined = (pos_labels <= 0) | (neg_labels <= 0)
    seen = (pos_labels, neg_labels)  # the class totals (neg_labels is set above): nothing seen where both are 0
    warn_undefined(
        undefined,
        metric,
        "the labels seen hold a single class (or no weight)",
        unseen=lambda: (seen[0] <= 0) & (seen[1] <= 0),
    )
    safe_total = torch.where(weighted_num_samples > 0, weighted_num_samples, 1.0)
    # the base rate and its complement each from its own sum (neither as 1 minus the other); the log of one
    # above 1/2 is log1p of minus the other, which holds the digits. The base rate is clamped to [eta, 1 - eta],
    # its complement to [1 - (1 - eta), 1 - eta]: where the clamp binds, the same numbers as 1 - c (TorchRec's,
    # and the predictions' clamp: 1 - eta rounds in float64, and 1 - (1 - 1e-12) is 1.0000889e-12)
    base_rate = (pos_labels / safe_total).clamp(eta, 1 - eta)
    complement = (neg_labels / safe_total).clamp(1 - (1 - eta), 1 - eta)
    log_base = torch.where(base_rate > 0.5, torch.log1p(-complement), torch.log(base_rate))
    log_complement = torch.where(complement > 0.5, torch.log1p(-base_rate), torch.log(complement))
    # entropy of the base rate times the total weight: the normaliser of sum w·CE
    norm = -(pos_labels * log_base + neg_labels * log_complement)
    # + 0.0 turns -0.0 into +0.0 (eta = 0 and perfect predictions: a cross-entropy sum of -0.0)
    ne = cross_entropy_sum / torch.where(undefined, 1.0, norm) + 0.0
    # a total weight, normaliser or (every term finite: eta > 0) cross-entropy sum that overflowed float64
    # (inf) leaves no ratio: nan, as safe_divide's (x / inf reported 0, and inf / norm inf, where the true
    # ratio is finite); with eta = 0 a sure wrong prediction's infinite cross-entropy is the value
    overflowed = weighted_num_samples.isinf() | norm.isinf()
    if eta > 0:
        overflowed |= cross_entropy_sum.isinf()
    return torch.where(undefined | overflowed, math.nan, ne)


@checks_validate_args
def normalized_entropy(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    eta: float = 1e-12,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Normalized entropy (NE): cross-entropy relative to always predicting the base rate.

    .. math::
        \mathrm{NE} = \frac{-\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}
        {-\sum_i w_i\,[\bar y \log c + (1-\bar y)\log(1-c)]},
        \qquad \bar y = \frac{\sum_i w_i y_i}{\sum_i w_i}, \quad c = \min(\max(\bar y, \eta), 1 - \eta)

    The log base cancels. Predictions are clamped to ``[eta, 1 - eta]``, and so is the base rate
    inside the denominator's logs only (:math:`c`, as TorchRec); labels may be soft.
    Lower is better; 1.0 is no better than predicting the base rate. Label-0 terms are
    ``log(1 - p)``, off by up to ``1.1e-16`` nats each (see :class:`~torchmetrics_ext.NormalizedEntropy`).

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``.
        eta: clamp for probabilities, in [0, 0.5).
        from_logits: treat ``preds`` as logits.
        validate_args: check inputs (shapes, ranges, NaN/inf) before computing.

    Returns:
        A scalar for 1-D input, ``(T,)`` for ``(T, N)`` input; ``nan`` (with an
        ``UndefinedMetricWarning``) when all labels are of one class. The negative label weight
        is summed as ``sum w·(1 - y)`` (not found as the total less the positive weight), so base
        rates within ``1e-9`` of 1 keep their digits. Without weights (or with weights that are all
        exactly 1, read as none when validated) it is ``N - sum y``: exact for 0/1 labels, off by
        about ``N * 1e-16`` for soft ones (relative ``1e-7`` of NE for soft labels averaging
        ``1 - 1e-9``; see :class:`~torchmetrics_ext.NormalizedEntropy`).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import normalized_entropy
        >>> preds = torch.tensor([0.5, 0.5, 0.5, 0.5])
        >>> target = torch.tensor([1.0, 0.0, 1.0, 0.0])
        >>> normalized_entropy(preds, target)  # predicting the base rate gives exactly 1
        tensor(1., dtype=torch.float64)
    """
    eta = _check_eta(eta)
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    ce_sum, total, pos, neg = _cross_entropy_update(p, t, w, eta, from_logits)  # type: ignore[arg-type]
    return _finish(_normalized_entropy_compute(ce_sum, total, pos, eta, neg_labels=neg), single)


@checks_validate_args
def log_loss(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    eta: float = 1e-12,
    from_logits: bool = False,
    unit: LogUnit = "nats",
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted mean binary cross-entropy in nats.

    .. math:: \mathrm{LogLoss} = -\frac{\sum_i w_i\,[y_i \log p_i + (1-y_i)\log(1-p_i)]}{\sum_i w_i}

    Probabilities are clamped to ``[eta, 1 - eta]`` (TorchRec's rule). This equals
    scikit-learn's ``log_loss(target, preds, sample_weight=weights)`` when every probability
    lies in ``[eta, 1 - eta]`` (by default ``[1e-12, 1 - 1e-12]``) and scikit-learn is given
    float64 probabilities: it clips to its input dtype's machine epsilon instead (``2.2e-16``
    for float64, ``1.2e-7`` for float32), so outside that interval the two differ (``p = 1e-14``
    with label 1 costs ``-log(1e-12)`` here, ``-log(1e-14)`` there). With ``from_logits=True``
    the cross-entropy is exact (no clamp). Label-0 terms are ``log(1 - p)``, as scikit-learn's,
    off by up to ``1.1e-16`` nats each (see :class:`~torchmetrics_ext.LogLoss`).

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1] (soft labels allowed), same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``.
        eta: clamp for probabilities, in [0, 0.5).
        from_logits: treat ``preds`` as logits.
        unit: ``"nats"`` (natural log) or ``"bits"`` (base 2, TorchRec's ``logloss``).
        validate_args: check inputs before computing.

    Returns:
        A scalar for 1-D input, ``(T,)`` otherwise; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import log_loss
        >>> log_loss(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))  # log(2)
        tensor(0.6931, dtype=torch.float64)
    """
    eta = _check_eta(eta)
    unit = _check_unit(unit)
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    ce_sum, total, *_ = _cross_entropy_update(p, t, w, eta, from_logits)  # type: ignore[arg-type]
    return _finish(_log_loss_compute(ce_sum, total, unit, eta > 0 or from_logits), single)


# ----------------------------------------------------------------------------- weighted sums


# (device, task count) -> its (T,) float64 zero label sum, the few newest kept (see `_zero_sums`)
_ZERO_SUMS: dict[tuple[torch.device, int], Tensor] = {}
_ZERO_SUMS_KEPT = 8  # task counts alternating in one process: a few metrics' num_tasks, Segmented's T·S


def _zero_sums(preds: Tensor) -> Tensor:
    """A float64 ``(T,)`` zero per task of ``preds``, kept per (device, ``T``) and reused by every such batch.

    The label sum of a batch without labels: no ``torch.zeros`` per update (an operator call, ~1 µs of
    a small one), also where task counts alternate (two ``WeightedAverage`` of other ``num_tasks``, a
    ``Segmented(WeightedAverage())`` asking for ``T·S`` tasks): the :data:`_ZERO_SUMS_KEPT` newest
    counts are kept, the oldest dropped first. Like every statistic a kernel returns it is never
    modified in place (updates add it into their states; ``forward`` reads it as a batch state and
    adds it out of place), and it is made outside inference mode (read by later batches outside it).
    """
    key = (preds.device, preds.shape[0])
    kept = _ZERO_SUMS.get(key)
    if kept is None:
        with torch.inference_mode(False):  # read by later batches outside inference mode too
            kept = torch.zeros(key[1], dtype=torch.float64, device=key[0])
        while len(_ZERO_SUMS) >= _ZERO_SUMS_KEPT:
            try:
                _ZERO_SUMS.pop(next(iter(_ZERO_SUMS)), None)  # the oldest (another thread may drop it first)
            except (RuntimeError, StopIteration):  # changed or emptied by another thread meanwhile
                break
        _ZERO_SUMS[key] = kept
    return kept


def _weighted_sums_update(
    preds: Tensor, target: Tensor | None, weights: Tensor | None, from_logits: bool, unit_target: bool = True
) -> Stats:
    """Return ``(sum w·p, sum w·y, sum w)`` per task (``sum w·y`` is 0 without a target).

    ``unit_target``: the labels are in [0, 1], and ``sum w`` is the class-exact
    :meth:`~torchmetrics_ext.functional._sums.BatchSums.class_total` (all-positive labels give a
    CTR of exactly 1); ``False`` for real-valued targets (a plain ``sum w``).
    """
    sums = batch_sums(preds, target, weights)
    if from_logits:
        pred_sum = sums.weighted("sigmoid", lambda: torch.sigmoid(preds))
    else:
        pred_sum = sums.pred_sum()
    if target is None:
        return pred_sum, _zero_sums(preds), sums.total()
    return pred_sum, sums.label_sum(), sums.class_total() if unit_target else sums.total()


def _calibration_compute(
    weighted_pred_sum: Tensor,
    weighted_label_sum: Tensor,
    name: str = "Calibration",
    weighted_num_samples: Tensor | None = None,
) -> Tensor:
    """``sum w·p / sum w·y``; ``nan`` and an ``UndefinedMetricWarning`` naming ``name`` without positive labels.

    ``weighted_num_samples`` (the total weight) tells a task that saw no weight at all (:data:`NO_SAMPLES`).
    """
    total = weighted_num_samples
    unseen = None if total is None else lambda: total == 0
    return safe_divide(weighted_pred_sum, weighted_label_sum, name, "no positive label weight", unseen=unseen)


def _ctr_compute(weighted_label_sum: Tensor, weighted_num_samples: Tensor) -> Tensor:
    return safe_divide(weighted_label_sum, weighted_num_samples, "CTR", NO_SAMPLES)


def _weighted_average_compute(weighted_pred_sum: Tensor, weighted_num_samples: Tensor) -> Tensor:
    return safe_divide(weighted_pred_sum, weighted_num_samples, "WeightedAverage", NO_SAMPLES)


@checks_validate_args
def calibration(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Calibration: predicted positives over observed positives, :math:`\sum w p / \sum w y`.

    1.0 is perfectly calibrated on average; above 1 over-predicts.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: treat ``preds`` as logits.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when no positive label weight was seen.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import calibration
        >>> calibration(torch.tensor([0.25, 0.5, 0.75, 0.5]), torch.tensor([0, 0, 1, 0]))
        tensor(2., dtype=torch.float64)
    """
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    pred_sum, label_sum, total = _weighted_sums_update(p, t, w, from_logits)
    return _finish(_calibration_compute(pred_sum, label_sum, weighted_num_samples=total), single)


@checks_validate_args
def ctr(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Click-through rate: the weighted share of positive labels, :math:`\sum w y / \sum w`.

    The rate depends on the labels alone: ``preds`` give the task layout and are checked as
    every pointwise function's (probabilities in [0, 1], any finite logit with ``from_logits=True``),
    as :class:`~torchmetrics_ext.CTR` checks them, but their values are not used.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``); their shape gives the layout.
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits; accepted so that every pointwise function takes the
            option (as :class:`~torchmetrics_ext.CTR`), the rate does not change.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import ctr
        >>> ctr(torch.tensor([0.1, 0.9, 0.3, 0.2]), torch.tensor([1, 0, 0, 0]))
        tensor(0.2500, dtype=torch.float64)
    """
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    _, label_sum, total = _weighted_sums_update(p, t, w, False)
    return _finish(_ctr_compute(label_sum, total), single)


@checks_validate_args
def weighted_average(
    preds: Tensor,
    target: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted mean of the predictions, :math:`\sum w p / \sum w` (any finite real values).

    Args:
        preds: ``(N,)`` or ``(T, N)`` values to average (logits with ``from_logits=True``).
        target: optional and unused; when given it is checked as any label (same shape and device
            as ``preds``, finite: NaN or inf is a ``ValueError``), so every pointwise metric has one
            signature.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits: the mean of :math:`\sigma(z)` (float64 sigmoid).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_average
        >>> weighted_average(torch.tensor([1.0, 3.0]), weights=torch.tensor([3.0, 1.0]))
        tensor(1.5000, dtype=torch.float64)
        >>> weighted_average(torch.tensor([0.0, 2.0, -2.0]), from_logits=True)
        tensor(0.5000, dtype=torch.float64)
    """
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, preds_domain="real", target_domain="real", validate=validate_args
    )
    pred_sum, _, total = _weighted_sums_update(p, t, w, from_logits, unit_target=False)
    return _finish(_weighted_average_compute(pred_sum, total), single)


# ----------------------------------------------------------------------------- thresholded


def _confusion_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, threshold: float, from_logits: bool
) -> Stats:
    """Return weighted ``(tp, fp, tn, fn)`` per task; ``p >= threshold`` is a positive prediction."""
    sums = batch_sums(preds, target, weights)

    def predicted() -> Tensor:
        probs = torch.sigmoid(preds) if from_logits else preds
        # 0/1 written straight as float64: several times faster than a bool mask cast afterwards
        return torch.ge(probs, threshold, out=torch.empty(probs.shape, dtype=torch.float64, device=probs.device))

    key = ("predicted", threshold, from_logits)
    label_pos = sums.label_sum()
    # made once for both sums and released with this call (not kept in the shared sums: metrics sharing it
    # share these states too, in one compute group; a kept (T, N) tensor would only crowd the step's cache)
    predicted_once = _once(predicted)
    pred_pos = sums.weighted(key, predicted_once)
    tp = sums.product(("true_positive", *key), predicted_once, target)
    # exact zeros: with binary labels, pred_pos (label_pos) sums the same terms as tp when fp (fn) is 0,
    # and tn = total - (tp + fp + fn) is 0 when every weight is on a predicted or a real positive
    fp = pred_pos - tp
    fn = label_pos - tp
    tn = (sums.total() - (tp + fp + fn)).clamp_(min=0)
    return tp, fp, tn, fn


def _accuracy_compute(tp: Tensor, fp: Tensor, tn: Tensor, fn: Tensor) -> Tensor:
    return safe_divide(tp + tn, tp + fp + tn + fn, "WeightedAccuracy", NO_SAMPLES)


def _precision_compute(tp: Tensor, fp: Tensor, tn: Tensor, fn: Tensor) -> Tensor:
    return safe_divide(
        tp, tp + fp, "WeightedPrecision", "no positive prediction", unseen=lambda: tp + fp + tn + fn == 0
    )


def _recall_compute(tp: Tensor, fp: Tensor, tn: Tensor, fn: Tensor) -> Tensor:
    return safe_divide(tp, tp + fn, "WeightedRecall", "no positive label", unseen=lambda: tp + fp + tn + fn == 0)


def _thresholded(
    compute_fn: object,
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    threshold: float,
    from_logits: bool,
    validate_args: bool,
) -> Tensor:
    threshold = _check_threshold(threshold)
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        None,
        target_domain="binary",
        from_logits=from_logits,
        validate=validate_args,
        target_required=True,
    )
    stats = _confusion_update(p, t, w, threshold, from_logits)  # type: ignore[arg-type]
    return _finish(compute_fn(*stats), single)  # type: ignore[operator]


@checks_validate_args
def weighted_accuracy(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    threshold: float = 0.5,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted accuracy at ``threshold``: :math:`\sum w\,[\hat y = y] / \sum w`, :math:`\hat y = [p \ge t]`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: treat ``preds`` as logits (the threshold stays a probability).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero. Its absolute error, relative
        to the total weight, is the rounding of the float64 sums (TN is the total less TP, FP and
        FN): see :class:`~torchmetrics_ext.WeightedAccuracy`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_accuracy
        >>> weighted_accuracy(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 0, 0]))
        tensor(0.5000, dtype=torch.float64)
    """
    return _thresholded(_accuracy_compute, preds, target, weights, threshold, from_logits, validate_args)


@checks_validate_args
def weighted_precision(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    threshold: float = 0.5,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted precision at ``threshold``: :math:`TP / (TP + FP)` with weighted counts.

    A prediction ``p >= threshold`` is positive (``p == threshold`` counts once, as a positive).

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: treat ``preds`` as logits (the threshold stays a probability).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when there is no positive prediction.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_precision
        >>> weighted_precision(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 1, 1]))
        tensor(0.6667, dtype=torch.float64)
    """
    return _thresholded(_precision_compute, preds, target, weights, threshold, from_logits, validate_args)


@checks_validate_args
def weighted_recall(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    threshold: float = 0.5,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted recall at ``threshold``: :math:`TP / (TP + FN)` with weighted counts.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights.
        threshold: probability at or above which a prediction is positive (compared in float64:
            a float32 score of ``0.7`` is ``0.69999998...``, below a threshold of 0.7).
        from_logits: treat ``preds`` as logits (the threshold stays a probability).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when there is no positive label.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_recall
        >>> weighted_recall(torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([1, 0, 1, 0]))
        tensor(0.5000, dtype=torch.float64)
    """
    return _thresholded(_recall_compute, preds, target, weights, threshold, from_logits, validate_args)


# ----------------------------------------------------------------------------- regression errors


def _sigmoid_error(logits: Tensor, target: Tensor) -> Tensor:
    """``sigmoid(z) - y`` per sample, in float64, without the rounding of ``sigmoid(z)`` near 1.

    From ``s = sigmoid(-|z|) = e / (1 + e)`` with ``e = exp(-|z|)`` (never overflows; not 0 until
    ``e`` is): ``s - y`` for ``z < 0`` and ``(1 - y) - s`` for ``z >= 0``, since ``sigmoid(z) = 1 - s``
    there. ``torch.sigmoid(z) - y`` rounds ``sigmoid(z)`` to 1 for ``z`` above ~37, so a confident
    correct prediction (``z = 40``, ``y = 1``) would have the error 0 instead of ``-4.2e-18``.
    """
    e = torch.exp(_minus_abs(logits))  # the gradient at z = 0 from the right, as the branch z >= 0 takes
    small = e / (e + 1)  # sigmoid(-|z|) (out of place: exp's backward reads its output)
    return torch.where(logits >= 0, (1 - target) - small, small - target)


def _absolute(error: Tensor) -> Tensor:
    """``|error|`` of an error made for one kernel call: in place (its square was summed) unless autograd keeps it."""
    return error.abs() if error.requires_grad else error.abs_()


def _error_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, from_logits: bool = False, offset: float = 0.0
) -> Stats:
    """Return ``(sum w·(p - y)², sum w·|p - y|, sum w, sum w·y, sum w·y²)`` per task.

    The last two (label moments) let R² and normalised MSE share these states, and so one
    compute group, with MSE, RMSE and MAE. With ``from_logits`` the prediction is
    ``p = sigmoid(preds)`` (see :func:`_sigmoid_error`); the label sums do not change. A non-zero
    ``offset`` :math:`c` (R²'s ``label_offset``) gives the label moments about it,
    ``sum w·(y - c)`` and ``sum w·(y - c)²``, in place of those about 0.
    """
    sums = batch_sums(preds, target, weights)
    # the error of either form (their sums are kept apart), made for both sums and released with this
    # call (see `_confusion_update`); made even where a shared batch holds both sums already (metrics of
    # one kernel are one compute group, updated once a step: that is rare), as a closure costs a small
    # update more than the subtraction
    suffix = "_logits" if from_logits else ""
    error = _sigmoid_error(preds, target) if from_logits else preds - target
    squared = sums.product(f"squared_error{suffix}", error, error)
    absolute = sums.weighted(f"absolute_error{suffix}", lambda: _absolute(error))
    if offset != 0:
        centred = target - offset
        moment = sums.weighted(("offset_target", offset), centred)
        return (
            squared,
            absolute,
            sums.total(),
            moment,
            sums.product(("offset_target_squared", offset), centred, centred),
        )
    label_sum = sums.label_sum()
    return (
        squared,
        absolute,
        sums.total(),
        label_sum,
        # y·y is y itself for 0/1 labels: the same sum, bit for bit; otherwise, unweighted, one call of
        # `vecdot` (the bits of `(y * y).sum(-1)`, one operator call fewer), weighted `sum w·(y·y)` as before
        label_sum if sums.binary_target else sums.product("squared_target", target, target),
    )


def _mse_compute(
    sum_squared_error: Tensor, sum_absolute_error: Tensor, weighted_num_samples: Tensor, *_: Tensor
) -> Tensor:
    return safe_divide(sum_squared_error, weighted_num_samples, "WeightedMSE", NO_SAMPLES)


def _rmse_compute(
    sum_squared_error: Tensor, sum_absolute_error: Tensor, weighted_num_samples: Tensor, *_: Tensor
) -> Tensor:
    return safe_divide(sum_squared_error, weighted_num_samples, "WeightedRMSE", NO_SAMPLES).sqrt()


def _mae_compute(
    sum_squared_error: Tensor, sum_absolute_error: Tensor, weighted_num_samples: Tensor, *_: Tensor
) -> Tensor:
    return safe_divide(sum_absolute_error, weighted_num_samples, "WeightedMAE", NO_SAMPLES)


def _format_real(
    preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Real-valued predictions and labels (both required), ``(T, N)`` float64: the regression metrics' inputs."""
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        None,
        preds_domain="real",
        target_domain="real",
        validate=validate,
        target_required=True,
    )
    return p, t, w  # type: ignore[return-value]


def _regression(
    compute_fn: object, preds: Tensor, target: Tensor, weights: Tensor | None, from_logits: bool, validate_args: bool
) -> Tensor:
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = _format_real(preds, target, weights, validate_args)
    return _finish(compute_fn(*_error_update(p, t, w, from_logits)), single)  # type: ignore[operator]


@checks_validate_args
def weighted_mse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted mean squared error, :math:`\sum w (p - y)^2 / \sum w` (sklearn's ``sample_weight``).

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions (logits with ``from_logits=True``).
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits: the error of :math:`\sigma(z)` (float64, exact for
            confident predictions).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_mse
        >>> weighted_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
        tensor(2.5000, dtype=torch.float64)
        >>> weighted_mse(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]), from_logits=True)  # Brier score
        tensor(0.2500, dtype=torch.float64)
    """
    return _regression(_mse_compute, preds, target, weights, from_logits, validate_args)


@checks_validate_args
def weighted_rmse(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted root mean squared error, :math:`\sqrt{\sum w (p - y)^2 / \sum w}`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions (logits with ``from_logits=True``).
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits: the error of :math:`\sigma(z)` (float64, exact for
            confident predictions).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_rmse
        >>> weighted_rmse(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]))
        tensor(3.5355, dtype=torch.float64)
    """
    return _regression(_rmse_compute, preds, target, weights, from_logits, validate_args)


@checks_validate_args
def weighted_mae(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted mean absolute error, :math:`\sum w |p - y| / \sum w`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions (logits with ``from_logits=True``).
        target: finite targets, same shape as ``preds``.
        weights: optional non-negative sample weights.
        from_logits: ``preds`` are logits: the error of :math:`\sigma(z)` (float64, exact for
            confident predictions).
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_mae
        >>> weighted_mae(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]), torch.tensor([1.0, 3.0]))
        tensor(3.7500, dtype=torch.float64)
    """
    return _regression(_mae_compute, preds, target, weights, from_logits, validate_args)
