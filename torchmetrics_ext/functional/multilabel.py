r"""Multi-label precision over bit-encoded label sets (TorchRec's ``multi_label_precision``) as pure functions.

Predictions and labels are integers whose bit ``j`` (least significant first) says whether
label ``j`` is on: with ``num_labels=3``, 5 is ``{0, 2}`` and 3 is ``{0, 1}``. Each label gets
its own weighted precision :math:`TP_j / (TP_j + FP_j)`; the state is two float64 ``(T, L)``
sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchmetrics_ext.functional.pointwise import _finish
from torchmetrics_ext.utilities.checks import (
    as_int,
    check_tensor,
    checked_bounds,
    checks_validate_args,
    format_pointwise,
    int_given,
)
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import or_no_samples, safe_divide

__all__ = ["multi_label_precision"]


def _check_num_labels(num_labels: int) -> int:
    """``num_labels`` as a Python int (NumPy and 0-dim tensor integers accepted); ``ValueError`` unless in [1, 62]."""
    value = as_int(num_labels)
    if value is None or not 1 <= value <= 62:
        raise refusal(
            f"Expected `num_labels` to be an integer in [1, 62], got {int_given(num_labels, 1, 62)}.",
            wrong_type=value is None,
        )
    return value


def _format_codes(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_labels: int, num_tasks: int | None, validate: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check integer codes in ``[0, 2**num_labels)``; return ``(T, N)`` int64 codes and float64 weights.

    ``target`` and ``weights`` must share ``preds``' shape (weights may be ``(N,)``) and device.
    """
    if validate:
        for name, codes in (("preds", preds), ("target", target)):
            check_tensor(name, codes)
            if codes.is_floating_point() or codes.dtype == torch.bool:
                raise WrongTypeError(f"Expected `{name}` to hold integer-encoded label sets, got dtype {codes.dtype}.")
        if target.shape != preds.shape:
            raise ValueError(
                f"Expected `target` of the same shape as `preds` {tuple(preds.shape)}, got {tuple(target.shape)}."
            )
        if target.device != preds.device:
            raise ValueError(f"Expected `target` on the same device as `preds` ({preds.device}), got {target.device}.")
    # the shape and weight checks of every pointwise input, on a float copy of the codes
    as_float = preds.double()
    # a code is in [0, 2**L) exactly when its bits from L up are all 0: those bits' bounds are small
    # integers, exact in the float64 of a bounds read (a code near 2**62 is not); a uint64 code past
    # 2**63 reads as a negative int64, out of range as it is
    beyond = [_bits_from(codes, num_labels) for codes in (preds, target)] if validate and preds.numel() else []
    if beyond and on_device_path(preds):
        # one host read for the codes and the weights: the checks below find their bounds remembered
        given = [weights] if isinstance(weights, Tensor) and weights.device == preds.device else []
        checked_bounds([as_float, *beyond, *given], [False] * (3 + len(given)), True)
    p, _, w = format_pointwise(as_float, None, weights, num_tasks, preds_domain="real", validate=validate)
    if beyond:
        (pmin, pmax), (tmin, tmax) = checked_bounds(beyond, [False, False])
        if min(pmin, tmin) < 0 or max(pmax, tmax) > 0:
            (low, high), (tlow, thigh) = checked_bounds([preds, target], [False, False])  # for the message only
            raise ValueError(
                f"Expected `preds` and `target` codes in [0, 2**{num_labels}) (num_labels={num_labels}), "
                f"got values in [{min(low, tlow):.0f}, {max(high, thigh):.0f}]."
            )
    # each cast on its own: torch does not promote between uint16/32/64 and other integer dtypes
    codes = torch.stack([preds.reshape(p.shape).to(torch.int64), target.reshape(p.shape).to(torch.int64)])
    return codes[0], codes[1], w


def _bits_from(codes: Tensor, num_labels: int) -> Tensor:
    """``codes >> num_labels`` as int64 (uint64 codes viewed as int64: those past 2**63 negative)."""
    as_int64 = codes.view(torch.int64) if codes.dtype == torch.uint64 else codes.to(torch.int64)
    return as_int64 >> num_labels


# up to this many (task, sample, label) bits a batch reads every bit at once (fewer kernels); a larger
# one is counted by byte histograms, whose extra memory does not grow with the number of labels
_ALL_BITS_AT_ONCE = 2**15


def _multi_label_update(
    preds: Tensor, target: Tensor, weights: Tensor | None, num_labels: int
) -> tuple[Tensor, Tensor]:
    """Weighted ``(TP, FP)`` per task and label, ``(T, L)``, from ``(T, N)`` int64 codes.

    A small batch reads every bit at once, as ``(T, N, L)`` float64 tensors. A larger one sums
    the weights of each byte value of the codes per task, a ``(T, 256)`` histogram per byte (8 at
    most for 62 labels, for ``preds & target`` and for ``preds & ~target``), and takes each label's sum
    from the histogram of its byte: extra memory of a few ``(T, N)`` tensors, whatever ``L``. FP is
    summed on its own, never as predicted minus TP: that difference of two sums, grouped by other
    bytes, rounded below 0 where every prediction of a label was right (a precision of 1 + 1e-15).
    """
    if preds.numel() * num_labels <= _ALL_BITS_AT_ONCE:
        bits = torch.arange(num_labels, device=preds.device)
        predicted = ((preds.unsqueeze(-1) >> bits) & 1).to(torch.float64)
        actual = ((target.unsqueeze(-1) >> bits) & 1).to(torch.float64)
        if weights is not None:
            predicted = predicted * weights.unsqueeze(-1)
        return (predicted * actual).sum(-2), (predicted * (1 - actual)).sum(-2)
    num_tasks, num_bytes, device = preds.shape[0], (num_labels + 7) // 8, preds.device
    task_offset = torch.arange(0, num_tasks * 256, 256, device=device).unsqueeze(-1)
    # the weight of each row (1 without weights: a stride-0 view), as index_add_ reads it
    ones = torch.ones((), dtype=torch.float64, device=device)
    w = (ones if weights is None else weights).expand(preds.shape).reshape(-1)
    # [correct, wrong][byte] -> weight per (task, byte value)
    histograms = torch.zeros(2, num_bytes, num_tasks * 256, dtype=torch.float64, device=device)
    for wrong, per_byte in enumerate(histograms):
        codes = target.bitwise_not().bitwise_and_(preds) if wrong else preds & target  # one (T, N) at a time
        for byte, histogram in enumerate(per_byte):
            index = codes >> (8 * byte)
            index &= 255
            index += task_offset
            histogram.index_add_(0, index.reshape(-1), w)  # no host sync (a CUDA bincount reads its maximum)
    byte_bits = ((torch.arange(256, device=device).unsqueeze(-1) >> torch.arange(8, device=device)) & 1).double()
    # (2, bytes, T, 256) @ (256, 8) -> (2, T, bytes * 8) label sums, bit 8 * byte + k at column 8 * byte + k
    sums = (histograms.view(2, num_bytes, num_tasks, 256) @ byte_bits).transpose(1, 2).reshape(2, num_tasks, -1)
    return sums[0, :, :num_labels], sums[1, :, :num_labels]


def _multi_label_compute(tp: Tensor, fp: Tensor) -> Tensor:
    """Per-label precision, ``(T, L)``; ``nan`` with a warning for a label without a positive prediction.

    The sums hold predicted positives only: a task whose labels all lack one may have seen no sample
    at all, and its warning says both causes (a task with one predicted label saw samples).
    """
    reason = "no positive prediction for the label"
    return safe_divide(
        tp,
        tp + fp,
        "MultiLabelPrecision",
        reason,
        ("task", "label"),
        unseen=lambda: (tp + fp <= 0).all(-1, keepdim=True).expand_as(tp),
        unseen_reason=or_no_samples(reason),
    )


@checks_validate_args
def multi_label_precision(
    preds: Tensor, target: Tensor, weights: Tensor | None = None, *, num_labels: int, validate_args: bool = True
) -> Tensor:
    r"""Weighted precision of each label of bit-encoded multi-label predictions.

    Args:
        preds: ``(N,)`` or ``(T, N)`` integer codes of the predicted label sets (bit ``j`` = label ``j``).
        target: integer codes of the true label sets, same shape and device as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``.
        num_labels: number of labels ``L`` (bits read from each code).
        validate_args: check inputs before computing.

    Returns:
        ``(L,)`` for 1-D input, ``(T, L)`` otherwise; ``nan`` with an ``UndefinedMetricWarning``
        for a label never predicted (TorchRec: 0).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import multi_label_precision
        >>> preds = torch.tensor([5, 3, 1])  # {0, 2}, {0, 1}, {0}
        >>> target = torch.tensor([1, 3, 4])  # {0}, {0, 1}, {2}
        >>> multi_label_precision(preds, target, num_labels=3)
        tensor([0.6667, 1.0000, 0.0000], dtype=torch.float64)
    """
    num_labels = _check_num_labels(num_labels)
    p, t, w = _format_codes(preds, target, weights, num_labels, None, validate_args)
    return _finish(_multi_label_compute(*_multi_label_update(p, t, w, num_labels)), preds.ndim == 1)
