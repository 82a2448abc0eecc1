r"""Reliability (calibration) curves: per-bin mean prediction, label rate and weight.

Predictions are cut into bins of the predicted probability; per task and bin three float64
sums are kept (weight, weighted prediction, weighted label), so the statistics add up across
batches and ranks. The reliability diagram plots each bin's label rate against its mean
prediction: a calibrated model lies on the diagonal.

.. math::
    W_b = \sum_{i \in b} w_i, \qquad
    \bar p_b = \frac{\sum_{i \in b} w_i p_i}{W_b}, \qquad
    \bar y_b = \frac{\sum_{i \in b} w_i y_i}{W_b}

with bin :math:`b` holding the predictions :math:`e_b \le p < e_{b+1}` (the last bin also holds
:math:`p = 1`; predictions outside the edges fall in the end bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional._uniform import uniform_bins, uniform_grid
from torchmetrics_ext.functional.auc.binary import _task_offsets
from torchmetrics_ext.utilities.checks import (
    as_int,
    as_real,
    check_flag,
    checks_validate_args,
    format_pointwise,
    int_given,
    sequence_items,
    single_task,
)
from torchmetrics_ext.utilities.device import constant_on
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, warn_undefined

__all__ = ["reliability"]

RELIABILITY_KEYS = ("mean_prediction", "label_rate", "weight")


def _uniform_edges(num_bins: int) -> Tensor:
    """``b / B`` for ``b = 0..B``, each correctly rounded.

    ``linspace`` gives 0.30000000000000004 for 3/10, so a score of exactly 0.3 would fall one bin low.
    """
    return uniform_grid(num_bins + 1, num_bins)  # a setting: on the host


def _reliability_edges(num_bins: object, edges: Sequence[float] | Tensor | None) -> Tensor:
    """The float64 ``(B + 1,)`` bin edges: ``num_bins`` uniform bins over [0, 1], or ``edges`` as given."""
    if edges is None:
        bins = as_int(num_bins)
        if bins is None or bins < 1:
            raise refusal(
                f"Expected `num_bins` to be a positive integer, got {int_given(num_bins, 1)}.", wrong_type=bins is None
            )
        return _uniform_edges(bins)
    # as every sequence setting (a 1-D tensor or array too), each edge as every number setting: no bools
    values = [as_real(edge) for edge in sequence_items("edges", edges) or ()]
    out = torch.tensor([math.nan if value is None else value for value in values], dtype=torch.float64)  # a copy
    if out.numel() < 2 or not bool(torch.isfinite(out).all()) or not bool((out.diff() > 0).all()):
        raise refusal(
            f"Expected `edges` to be a 1-D strictly increasing sequence of at least 2 finite floats, got {edges!r}.",
            wrong_type=sequence_items("edges", edges) is None or None in values,
        )
    return out


def _reliability_index(probs: Tensor, edges: Tensor, uniform: bool) -> Tensor:
    """The flat ``(task, bin)`` index of each probability of a ``(T, N)`` batch (int64 ``(T, N)``)."""
    num_tasks, num_bins = probs.shape[0], edges.numel() - 1
    if uniform:
        index = uniform_bins(probs, num_bins)
    else:
        inner = constant_on(edges, probs.device)[1:-1]  # copied to a device once, not per update
        index = torch.bucketize(probs.contiguous(), inner, right=True)  # e_b <= p < e_{b+1}; outside: end bins
    if num_tasks > 1:
        index += _task_offsets(num_tasks, num_bins, probs.device)
    return index


def _reliability_entries(
    preds: Tensor, target: Tensor, weights: Tensor | None, edges: Tensor, from_logits: bool, uniform: bool = False
) -> tuple[Tensor, Tensor]:
    """What a ``(T, N)`` float64 batch adds to the three flattened ``(T, B)`` sums, per sample and task.

    Returns:
        The flat ``(task, bin)`` index of each sample (int64 ``(T, N)``) and its three values
        (float64 ``(3, T, N)``, a new tensor: weight, weighted prediction, weighted label, as
        :func:`_reliability_update` sums them), detached: a caller keeps them (a window).
    """
    preds, target = preds.detach(), target.detach()
    probs = torch.sigmoid(preds) if from_logits else preds
    index = _reliability_index(probs, edges, uniform)
    values = torch.empty((3, *probs.shape), dtype=torch.float64, device=probs.device)
    w = values[0]
    if weights is None:  # unit weights: the products are the predictions and labels themselves, exactly
        w.fill_(1.0)
        values[1].copy_(probs)
        values[2].copy_(target)
    else:
        w.copy_(weights.detach().expand_as(probs))
        torch.mul(w, probs, out=values[1])
        torch.mul(w, target, out=values[2])
    return index, values


def _reliability_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, edges: Tensor, from_logits: bool, uniform: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-task, per-bin ``(weight, weighted prediction, weighted label)`` sums of a ``(T, N)`` float64 batch.

    One ``bucketize`` and three ``scatter_add_`` over the flattened ``(task, bin)`` index. With
    ``uniform`` (``edges`` are :func:`_uniform_edges`) the bins are found arithmetically instead, at
    a cost independent of their number: exactly the ``bucketize`` bins
    (:func:`~torchmetrics_ext.functional._uniform.uniform_bins`).
    """
    num_tasks, num_bins = preds.shape[0], edges.numel() - 1
    probs = torch.sigmoid(preds) if from_logits else preds
    index = _reliability_index(probs, edges, uniform).reshape(-1)
    w = torch.ones_like(probs) if weights is None else weights.expand_as(probs)
    out = []
    for values in (w, w * probs, w * target):
        total = torch.zeros(num_tasks * num_bins, dtype=torch.float64, device=probs.device)
        out.append(total.scatter_add_(0, index, values.reshape(-1)).view(num_tasks, num_bins))
    return out[0], out[1], out[2]


def _reliability_compute(weight: Tensor, pred_sum: Tensor, target_sum: Tensor) -> dict[str, Tensor]:
    """``{"mean_prediction", "label_rate", "weight"}``, each ``(T, B)``; ``nan`` in bins without weight.

    An empty bin is normal (its weight says so) and does not warn; a task without any weight does.
    A bin whose float64 sums overflowed (``inf``: weights near 1e308) has ``nan`` rates too, without
    a warning (``x / inf`` read 0), as the ratio metrics (:func:`~torchmetrics_ext.utilities.warnings.safe_divide`).
    """
    warn_undefined(weight.sum(-1) <= 0, "Reliability", NO_SAMPLES)
    empty = (weight <= 0) | weight.isinf()
    denom = torch.where(empty, 1.0, weight)
    return {
        "mean_prediction": torch.where(empty | pred_sum.isinf(), math.nan, pred_sum / denom),
        "label_rate": torch.where(empty | target_sum.isinf(), math.nan, target_sum / denom),
        "weight": weight.clone(),
    }


@checks_validate_args
def reliability(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    num_bins: int = 10,
    edges: Sequence[float] | Tensor | None = None,
    from_logits: bool = False,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    r"""Reliability curve: per-bin weighted mean prediction, label rate and weight.

    .. math::
        \bar p_b = \frac{\sum_{i \in b} w_i p_i}{\sum_{i \in b} w_i}, \qquad
        \bar y_b = \frac{\sum_{i \in b} w_i y_i}{\sum_{i \in b} w_i}

    Bin :math:`b` holds the probabilities :math:`e_b \le p < e_{b+1}`; the last bin also holds
    :math:`p = 1`, and probabilities outside custom edges fall in the end bins.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``, binned
            after the sigmoid).
        target: labels in [0, 1] (soft labels allowed), same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``.
        num_bins: number of uniform bins over [0, 1] (ignored when ``edges`` is given).
        edges: increasing bin edges (e.g. ``[0, 0.01, 0.02, 0.05, 0.1, 1]`` for click-through
            rates, where uniform bins put almost everything in the first bin).
        from_logits: ``preds`` are logits.
        validate_args: check inputs before computing.

    Returns:
        ``{"mean_prediction", "label_rate", "weight"}``, each ``(B,)`` for 1-D input and
        ``(T, B)`` otherwise; the weight is the sample count without ``weights``. A bin without
        weight has ``nan`` mean prediction and label rate (no warning: the weight says why). With
        ``validate_args=False`` a NaN score is counted in the last bin (its weight and label), whose
        mean prediction is then ``nan``.

    Raises:
        ValueError: on bad shapes, NaN/inf or out-of-range ``preds``, labels outside [0, 1],
            negative weights, or bad ``num_bins``/``edges``.
        TypeError: on non-tensor inputs or non-floating ``preds``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import reliability
        >>> out = reliability(torch.tensor([0.125, 0.25, 0.75, 0.875]), torch.tensor([0, 1, 1, 1]), num_bins=2)
        >>> {key: value.tolist() for key, value in out.items()}
        {'mean_prediction': [0.1875, 0.8125], 'label_rate': [0.5, 1.0], 'weight': [2.0, 2.0]}
    """
    bins = _reliability_edges(num_bins, edges)
    check_flag("from_logits", from_logits)
    single = single_task(preds)
    p, t, w = format_pointwise(
        preds, target, weights, None, from_logits=from_logits, validate=validate_args, target_required=True
    )
    assert t is not None
    uniform = torch.equal(bins, _uniform_edges(bins.numel() - 1))
    out = _reliability_compute(*_reliability_update(p, t, w, bins, from_logits, uniform))
    return {key: value.squeeze(0) for key, value in out.items()} if single else out
