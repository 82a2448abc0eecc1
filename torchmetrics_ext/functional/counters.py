r"""Counters and plain averages (TorchRec's sum, count and average metrics) as pure tensor functions.

Each value is a per-task float64 sum or a ratio of two sums, so the classes in
:mod:`torchmetrics_ext.metrics.counters` hold constant memory and sum across ranks. Inputs
follow :mod:`torchmetrics_ext.functional.pointwise`: ``(N,)`` for one task (a scalar result) or
``(T, N)`` (a ``(T,)`` result); ``weights`` default to one and may be ``(N,)``, shared by all tasks.

Where TorchRec returns 0 for an average over zero weight, these return ``nan`` with an
:class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning` (the package's policy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.pointwise import Stats, _finish, _weight_total, _weighted_sum
from torchmetrics_ext.utilities.checks import (
    PredsDomain,
    TargetDomain,
    as_bool,
    check_flag,
    check_tensor,
    checks_validate_args,
    format_pointwise,
    sequence_items,
    single_task,
)
from torchmetrics_ext.utilities.device import constant_on
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, safe_divide

__all__ = [
    "label_average",
    "num_missing_labels",
    "num_positive_samples",
    "num_serving_examples",
    "sum_weights",
    "tensor_weighted_average",
    "weighted_sum_predictions",
]


def _apply(
    stats_fn: Callable[[Tensor, Tensor | None, Tensor | None], Stats],
    compute_fn: Callable[..., Tensor],
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    *,
    preds_domain: PredsDomain = "real",
    target_domain: TargetDomain = "real",
    from_logits: bool = False,
    validate_args: bool = True,
    target_required: bool = True,
) -> Tensor:
    """Validate → per-task statistics → value: the body every functional twin of this family shares.

    ``target_required``: the value needs labels, so a ``None`` target is a ``TypeError`` naming it
    (when validating); only the functions whose ``target`` is optional pass ``False``.
    """
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        None,
        preds_domain=preds_domain,
        target_domain=target_domain,
        from_logits=from_logits,
        validate=validate_args,
        target_required=target_required,
    )
    return _finish(compute_fn(*stats_fn(p, t, w)), single)


# ----------------------------------------------------------------------------- kernels


def _sum_weights_update(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
    return (_weight_total(preds, weights),)


def _positive_update(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
    return (_weighted_sum(target, weights),)  # type: ignore[arg-type]


def _prediction_sum_update(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
    return (_weighted_sum(preds, weights),)


def _serving_update(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
    """Count of rows with non-zero weight (every row when unweighted), per task, as float64."""
    if weights is None:
        return (_weight_total(preds, None),)
    return ((weights != 0).to(torch.float64).sum(-1).expand(preds.shape[0]).clone(),)


def _missing_update(target: Tensor, weights: Tensor | None, count_zero_weight: bool) -> Stats:
    """Weighted count of NaN labels (unweighted with ``count_zero_weight``)."""
    missing = torch.isnan(target).to(torch.float64)
    return (_weighted_sum(missing, None if count_zero_weight else weights),)


def _identity(value: Tensor) -> Tensor:
    return value


def _label_average_update(preds: Tensor, target: Tensor | None, weights: Tensor | None) -> Stats:
    return _weighted_sum(target, weights), _weight_total(preds, weights)  # type: ignore[arg-type]


def _label_average_compute(weighted_label_sum: Tensor, weighted_num_samples: Tensor) -> Tensor:
    return safe_divide(weighted_label_sum, weighted_num_samples, "LabelAverage", NO_SAMPLES)


def _flagged_weights(weights: Tensor | None, weighted: Tensor | None) -> Tensor | None:
    """The weights each task uses: its row of ``weights``, or unit weights where its ``weighted`` flag is false."""
    if weights is None or weighted is None:
        return weights
    return torch.where(constant_on(weighted, weights.device).reshape(-1, 1), weights, 1.0)


def _tensor_average_update(values: Tensor, weights: Tensor | None, weighted: Tensor | None) -> Stats:
    """``(sum w·v, sum w)`` per task; tasks whose ``weighted`` flag is false use unit weights."""
    weights = _flagged_weights(weights, weighted)
    return _weighted_sum(values, weights), _weight_total(values, weights)


def _tensor_average_compute(weighted_sum: Tensor, weighted_num_samples: Tensor) -> Tensor:
    return safe_divide(weighted_sum, weighted_num_samples, "TensorWeightedAverage", NO_SAMPLES)


def _weighted_flags(weighted: bool | Sequence[bool], num_tasks: int) -> Tensor | None:
    """Per-task ``weighted`` flags as a bool tensor, or ``None`` when every task is weighted.

    ``weighted`` is one bool for every task or a sequence of ``num_tasks`` bools; NumPy bools and
    0-dim bool tensors count as bools (:func:`~torchmetrics_ext.utilities.checks.as_bool`), integers,
    floats and ``None`` do not.

    Raises:
        ValueError: naming ``weighted`` for anything else (a number, ``None``, a wrong length).
    """
    single = as_bool(weighted)
    if single is not None:
        return None if single else torch.zeros(num_tasks, dtype=torch.bool)
    items = sequence_items("weighted", weighted)  # a 1-D bool tensor or array too, as every sequence setting
    flags = None if items is None else [as_bool(item) for item in items]
    if flags is None or len(flags) != num_tasks or any(flag is None for flag in flags):
        bools = "1 bool" if num_tasks == 1 else f"{num_tasks} bools"
        raise refusal(
            f"Expected `weighted` to be a bool or a sequence of {bools} (one per task), got {weighted!r}.",
            wrong_type=flags is None or any(flag is None for flag in flags),
        )
    return None if all(flags) else torch.tensor(flags)


# ----------------------------------------------------------------------------- public functions


@checks_validate_args
def sum_weights(
    preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Total sample weight per task, :math:`\sum_i w_i` (the number of rows when unweighted).

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point values, checked finite; only their shape is used.
        target: optional and unused; when given, checked for shape, device and finite values.
        weights: optional non-negative sample weights.
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import sum_weights
        >>> sum_weights(torch.tensor([0.2, 0.7, 0.1]), weights=torch.tensor([1.0, 0.5, 2.0]))
        tensor(3.5000, dtype=torch.float64)
    """
    return _apply(
        _sum_weights_update, _identity, preds, target, weights, validate_args=validate_args, target_required=False
    )


@checks_validate_args
def num_positive_samples(
    preds: Tensor, target: Tensor, weights: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Weighted number of positive labels per task, :math:`\sum_i w_i y_i` (soft labels add their share).

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point predictions, checked finite; only their shape is used.
        target: labels in [0, 1], same shape as ``preds``.
        weights: optional non-negative sample weights.
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import num_positive_samples
        >>> num_positive_samples(torch.tensor([0.2, 0.7, 0.1]), torch.tensor([1, 1, 0]), torch.tensor([2.0, 1.0, 1.0]))
        tensor(3., dtype=torch.float64)
    """
    return _apply(
        _positive_update, _identity, preds, target, weights, target_domain="unit", validate_args=validate_args
    )


@checks_validate_args
def weighted_sum_predictions(
    preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Weighted sum of the predictions per task, :math:`\sum_i w_i p_i`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` finite predictions.
        target: optional and unused; when given, checked for shape, device and finite values.
        weights: optional non-negative sample weights.
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import weighted_sum_predictions
        >>> weighted_sum_predictions(torch.tensor([0.5, 0.25]), weights=torch.tensor([2.0, 4.0]))
        tensor(2., dtype=torch.float64)
    """
    return _apply(
        _prediction_sum_update, _identity, preds, target, weights, validate_args=validate_args, target_required=False
    )


@checks_validate_args
def num_serving_examples(
    preds: Tensor, target: Tensor | None = None, weights: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Number of rows with non-zero weight per task (TorchRec's serving ``total_examples``).

    TorchRec's serving NE and serving calibration report this counter next to plain NE and
    calibration: rows logged with weight 0 were not served.

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point values, checked finite; only their shape is used.
        target: optional and unused; when given, checked for shape, device and finite values.
        weights: optional non-negative sample weights (every row counts without them).
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)`` count.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import num_serving_examples
        >>> num_serving_examples(torch.tensor([0.2, 0.7, 0.1]), weights=torch.tensor([1.0, 0.0, 3.0]))
        tensor(2., dtype=torch.float64)
    """
    return _apply(
        _serving_update, _identity, preds, target, weights, validate_args=validate_args, target_required=False
    )


def _format_missing(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_tasks: int | None, validate: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pointwise checks for inputs whose ``target`` may hold NaN (a missing label); returns float64 tensors."""
    if validate:
        check_tensor("target", target, floating=True)
    # every pointwise check (shapes, devices, finite values) on the labels as given, NaN accepted: the
    # labels' own bounds, which the other metrics of a step read for them too (one host sync per step)
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        num_tasks,
        preds_domain="real",
        target_domain="real",
        validate=validate,
        missing_labels=True,
    )
    return p, target.to(torch.float64).reshape(p.shape) if t is None else t, w


@checks_validate_args
def num_missing_labels(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    count_zero_weight: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted number of missing (NaN) labels per task, :math:`\sum_i w_i [y_i = \mathrm{NaN}]`.

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point values, checked finite; only their shape is used.
        target: floating labels of the same shape, NaN where the label is missing.
        weights: optional non-negative sample weights.
        count_zero_weight: count every NaN label once, whatever its weight. TorchRec's
            ``allow_missing_label_with_zero_weight`` convention gives missing labels weight 0,
            which the weighted count would never see.
        validate_args: check inputs before computing.

    Returns:
        A float64 scalar or ``(T,)``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import num_missing_labels
        >>> target = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
        >>> num_missing_labels(torch.zeros(4), target, torch.tensor([1.0, 2.0, 1.0, 0.0]))
        tensor(2., dtype=torch.float64)
        >>> num_missing_labels(torch.zeros(4), target, torch.tensor([1.0, 2.0, 1.0, 0.0]), count_zero_weight=True)
        tensor(2., dtype=torch.float64)
    """
    count_zero_weight = check_flag("count_zero_weight", count_zero_weight)  # as the class's constructor
    single = single_task(preds)
    _, t, w = _format_missing(preds, target, weights, None, validate_args)
    return _finish(_missing_update(t, w, count_zero_weight)[0], single)


@checks_validate_args
def label_average(
    preds: Tensor, target: Tensor, weights: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Weighted mean of the labels, :math:`\sum_i w_i y_i / \sum_i w_i` (any finite labels).

    TorchRec's ``label_average``; the prediction average is
    :func:`~torchmetrics_ext.functional.weighted_average`. Unlike :func:`ctr`, labels may be any
    finite value (regression targets).

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point values, checked finite; only their shape is used.
        target: finite labels, same shape as ``preds``.
        weights: optional non-negative sample weights.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import label_average
        >>> label_average(torch.zeros(3), torch.tensor([1.0, 4.0, 7.0]), torch.tensor([1.0, 1.0, 2.0]))
        tensor(4.7500, dtype=torch.float64)
    """
    return _apply(_label_average_update, _label_average_compute, preds, target, weights, validate_args=validate_args)


@checks_validate_args
def tensor_weighted_average(
    values: Tensor,
    weights: Tensor | None = None,
    *,
    weighted: bool | Sequence[bool] = True,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted mean of any tensor, :math:`\sum_i w_i v_i / \sum_i w_i`, with per-task ``weighted`` flags.

    TorchRec's ``tensor_weighted_avg``: the averaged tensor is a named model output rather than
    the predictions; a task whose flag is false averages without weights.

    Args:
        values: ``(N,)`` or ``(T, N)`` finite values to average.
        weights: optional non-negative sample weights.
        weighted: one bool for every task, or a sequence of one bool per task (NumPy bools and
            0-dim bool tensors accepted, so a bool tensor or array of one flag per task too);
            anything else (``1``, ``None``, a wrong length) is a ``ValueError``.
        validate_args: check inputs before computing.

    Returns:
        A scalar or ``(T,)``; ``nan`` when the total weight is zero.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import tensor_weighted_average
        >>> values = torch.tensor([[1.0, 3.0], [1.0, 3.0]])
        >>> tensor_weighted_average(values, torch.tensor([3.0, 1.0]), weighted=[True, False])
        tensor([1.5000, 2.0000], dtype=torch.float64)
    """
    v, _, w = format_pointwise(
        values, None, weights, None, preds_domain="real", validate=validate_args, preds_name="values"
    )
    single = single_task(values, "values")
    flags = _weighted_flags(weighted, v.shape[0])
    return _finish(_tensor_average_compute(*_tensor_average_update(v, w, flags)), single)
