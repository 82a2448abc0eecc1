r"""Multiclass recall at ``k`` (TorchRec's ``multiclass_recall``) for ``(N, C)`` class scores.

A sample is a hit when its true class is among the ``k`` highest-scored classes:

.. math:: \mathrm{Recall}@k = \frac{\sum_n w_n\,[\mathrm{rank}_n(y_n) < k]}{\sum_n w_n}, \qquad
          \mathrm{rank}_n(c) = |\{c' : s_{n,c'} > s_{n,c}\}| + |\{c' \ne c : s_{n,c'} = s_{n,c}\}|

Ties are pessimistic: classes scored equal to the true class rank ahead of it. The rank is a
count of comparisons, so there is no sort. State: two float64 sums (constant memory).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._hints import torchmetrics_hints
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.utilities.checks import (
    as_int,
    check_tensor,
    checked_bounds,
    int_given,
    note_weight_bounds,
    observed_range,
)
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import NO_SAMPLES, safe_divide

__all__ = ["multiclass_recall_at_k"]


def _multiclass_recall_arg_validation(k: int, num_classes: int) -> tuple[int, int]:
    """Validate ``k`` and ``num_classes``; return them as Python ints (NumPy and 0-dim tensor integers accepted).

    Any positive ``k`` is a cutoff, as for the flat ranking metrics (a query shorter than ``k``
    is ranked whole): ``k >= num_classes`` makes every sample a hit (scikit-learn's
    ``top_k_accuracy_score`` too; TorchMetrics' ``top_k`` refuses ``k > num_classes``).
    """
    classes = as_int(num_classes)
    if classes is None or classes < 2:
        raise refusal(
            f"Expected `num_classes` to be an integer >= 2, got {int_given(num_classes, 2)}.",
            wrong_type=classes is None,
        )
    return cast(int, check_cutoff(k, "required")), classes  # "required": never None


def _multiclass_recall_tensor_validation(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_classes: int
) -> None:
    """Shapes, dtypes, devices and values of one batch; one host synchronisation (:func:`checked_bounds`).

    On the device path the bounds are remembered for these tensors, so that the other metrics of a
    collection that receive the same batch in the same step do not read them again.
    """
    check_tensor("preds", preds)
    check_tensor("target", target)  # a missing target (None) is a TypeError naming it, as for the class
    if weights is not None:
        check_tensor("weights", weights)
    if not preds.is_floating_point():
        raise WrongTypeError(f"Expected `preds` to be a floating point tensor, got dtype {preds.dtype}.")
    if preds.ndim != 2 or preds.shape[1] != num_classes:
        raise ValueError(f"Expected `preds` of shape (N, num_classes={num_classes}), got {tuple(preds.shape)}.")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise WrongTypeError(f"Expected `target` to be an integer tensor of class ids, got dtype {target.dtype}.")
    if target.shape != preds.shape[:1]:
        raise ValueError(f"Expected `target` of shape {tuple(preds.shape[:1])}, got {tuple(target.shape)}.")
    if weights is not None and weights.shape != preds.shape[:1]:
        raise ValueError(f"Expected `weights` of shape {tuple(preds.shape[:1])}, got {tuple(weights.shape)}.")
    for name, value in (("target", target), ("weights", weights)):
        if value is not None and value.device != preds.device:
            raise ValueError(f"Expected `{name}` on the same device as `preds` ({preds.device}), got {value.device}.")
    if preds.shape[0] == 0:
        return
    # one read for the three, remembered for these tensor objects on the device path: the other
    # metrics of a collection given the same batch (another k) read nothing
    (pmin, pmax), (tmin, tmax), *weight_bounds = checked_bounds([preds, target, weights], [False, False, False])
    if math.isnan(pmin) or math.isnan(pmax):  # NaN propagates into the bounds; inf is a real score
        raise ValueError("Expected `preds` without NaN, got NaN.")
    if tmin < 0 or tmax >= num_classes:
        raise ValueError(
            f"Expected `target` class ids in [0, {num_classes - 1}], got values in [{tmin:.0f}, {tmax:.0f}]."
        )
    if weight_bounds[0] and not (weight_bounds[0][0] >= 0 and math.isfinite(weight_bounds[0][1])):
        got = observed_range(*weight_bounds[0])
        raise ValueError(f"Expected `weights` to be finite and non-negative, got {got}.")
    note_weight_bounds(weight_bounds)  # for a window: all-zero weights take no slot (no read of its own)


def _multiclass_recall_update(preds: Tensor, target: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """``(sum w·hit, sum w)`` in float64."""
    true_score = preds.gather(1, target.long().unsqueeze(1))
    # the classes scored above the true one plus those tied with it (itself included, hence - 1): one
    # comparison, counted in int32 (a bool sum would first widen every entry to int64), a third of the time
    # of `>` and `==` counted apart over a 50k-class catalogue (IEEE: `>=` is exactly `>` or `==`, NaN neither)
    count_dtype = torch.int32 if preds.shape[1] < 2**31 else torch.int64
    rank = (preds >= true_score).sum(1, dtype=count_dtype) - 1
    hit = (rank < k).to(torch.float64)
    w = torch.ones_like(hit) if weights is None else weights.to(torch.float64)
    return (hit * w).sum(), w.sum()


def _multiclass_recall_compute(hits: Tensor, total: Tensor) -> Tensor:
    return safe_divide(hits, total, "MulticlassRecallAtK", NO_SAMPLES)


@torchmetrics_hints
def multiclass_recall_at_k(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    k: int,
    num_classes: int,
    validate_args: bool = True,
) -> Tensor:
    r"""Weighted share of samples whose true class is among the ``k`` top-scored classes.

    .. math:: \mathrm{Recall}@k = \frac{\sum_n w_n\,[\mathrm{rank}_n(y_n) < k]}{\sum_n w_n}

    Classes tied with the true class rank ahead of it (pessimistic). Scores may be any real
    value (logits or probabilities); NaN is rejected.

    Args:
        preds: ``(N, C)`` class scores.
        target: ``(N,)`` integer class ids in ``[0, C)``.
        weights: optional ``(N,)`` non-negative sample weights.
        k: positive cutoff; ``k >= C`` counts every sample as a hit (value 1).
        num_classes: ``C``.
        validate_args: check inputs first. Unchecked ``target`` ids must lie in ``[0, C)`` (one
            outside: a ``RuntimeError`` on the CPU, a device-side assert on CUDA).

    Returns:
        A float64 scalar; ``nan`` with ``UndefinedMetricWarning`` when the total weight is zero.

    Raises:
        ValueError: bad ``k``/``num_classes``, shapes, NaN scores, class ids or weights.
        TypeError: non-tensor inputs, non-floating ``preds`` or non-integer ``target``.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import multiclass_recall_at_k
        >>> preds = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
        >>> multiclass_recall_at_k(preds, torch.tensor([0, 1, 1]), k=2, num_classes=3)
        tensor(0.6667, dtype=torch.float64)
    """
    k, num_classes = _multiclass_recall_arg_validation(k, num_classes)
    if validate_args:
        _multiclass_recall_tensor_validation(preds, target, weights, num_classes)
    return _multiclass_recall_compute(*_multiclass_recall_update(preds, target, weights, k))
