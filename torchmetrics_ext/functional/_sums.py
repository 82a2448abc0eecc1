"""Per-task weighted sums of one batch, computed once for every metric fed that batch.

The pointwise kernels (NE, calibration, CTR, MSE, accuracy, ...) all reduce a ``(T, N)`` float64
batch to weighted per-task sums, and several of them need the same ones (``sum w``, ``sum w·y``,
``sum w·p``, ``log p``...). A kernel asks :func:`batch_sums` for a :class:`BatchSums` of its inputs
and takes every sum and intermediate from it by name. Outside :func:`sharing_sums` that object is
fresh and keeps no memo (nothing is shared: each sum is computed as asked, at about the cost of the
kernel writing its operators out itself, so no kernel needs an "own batch" shortcut); inside it, a
caller that feeds one validated batch to many metrics (:class:`~torchmetrics_ext.RecMetricModule`)
gets one object for that batch, so a sum several metrics need is computed once, by the same code,
and every metric receives bit-identical statistics to those it would compute alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["BatchSums", "batch_sums", "one_like", "sharing_sums", "weight_total", "weighted_sum"]


_ONES: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def one_like(values: Tensor) -> Tensor:
    """A 0-dim ``1`` of ``values``' dtype and device, made once and kept: ``one_like(x) - x`` is ``1 - x``.

    The same values, bit for bit (the 0-dim tensor takes part in type promotion as the Python
    number does), without the scalar-to-tensor wrap that costs about 1.5 µs per operation on
    small batches. Never modify it in place.
    """
    key = (values.dtype, values.device)
    one = _ONES.get(key)
    if one is None:
        one = _ONES[key] = torch.ones((), dtype=values.dtype, device=values.device)
    return one


def weighted_sum(values: Tensor, weights: Tensor | None) -> Tensor:
    """Per-task ``sum(w * values)`` over the sample dimension, in float64.

    One weight row shared by every task (``(1, N)``) is a matrix-vector product: no ``(T, N)``
    temporary, and about half the time of multiply-then-sum.
    """
    if weights is None:
        return values.sum(-1)
    if _matvec(values, weights):
        return values @ weights[0]
    return (values * weights).sum(-1)


def _matvec(values: Tensor, weights: Tensor) -> bool:
    """Whether :func:`weighted_sum` takes the matrix-vector product."""
    return weights.shape[0] == 1 and values.ndim == 2 and values.dtype == weights.dtype


def weight_total(preds: Tensor, weights: Tensor | None) -> Tensor:
    """Per-task total weight; ``N`` for every task when unweighted."""
    if weights is None:
        return torch.full(preds.shape[:1], float(preds.shape[-1]), dtype=torch.float64, device=preds.device)
    total = weights.sum(-1)
    # one weight row shared by several tasks: a copy per task; otherwise the sum is a new (T,) tensor already
    return total if total.shape == preds.shape[:1] else total.expand(preds.shape[0]).clone()


def _signature(value: Tensor | None) -> tuple | None:
    """What makes two views of unmodified memory hold the same values."""
    if value is None:
        return None
    return (value.data_ptr(), value.shape, value.stride(), value.dtype, value.device)


class BatchSums:
    """Weighted sums and intermediates of one ``(T, N)`` float64 batch, each computed on first use.

    Args:
        preds: ``(T, N)`` float64 predictions (one task's ``(N,)`` uncast ones, given with ``target``, for
            the kernels that only subtract them from it: :func:`~torchmetrics_ext.utilities.checks.format_pointwise`'s
            ``cast_preds``).
        target: ``(T, N)`` float64 labels (or ``None``).
        weights: ``(T, N)`` or ``(1, N)`` float64 weights, or ``None`` (all ones).
        binary_target: the caller checked that every label is exactly 0 or 1 (kernels may then
            take cheaper forms that give the same values bit for bit).
        pred_range: the ``(min, max)`` of ``preds`` when the caller read them (``()`` if unknown):
            a kernel may skip a clamp they show to change nothing.
        memo: keep what :meth:`value`, :meth:`weighted` and :meth:`product` make, by name, for
            later calls (``False``: a single kernel call's own batch, see :func:`batch_sums`).

    Values are returned as stored: callers must not modify them in place.

    One object serves one kernel call as cheaply as the kernel could take its sums itself: the
    batch's weight layout is found once (not per sum), the named sums are kept in slots, and a
    memo entry costs a dict lookup. So a kernel never needs its own "not shared" shortcut: the
    same code, the same operators in the same order, gives the same bits alone and shared.
    """

    __slots__ = (
        "_class_total",
        "_complement_sum",
        "_label_products",
        "_label_sum",
        "_pred_sum",
        "_row",
        "_signature",
        "_total",
        "_values",
        "binary_target",
        "pred_range",
        "preds",
        "target",
        "weights",
    )

    def __init__(
        self,
        preds: Tensor,
        target: Tensor | None,
        weights: Tensor | None,
        binary_target: bool = False,
        pred_range: tuple[float, ...] = (),
        memo: bool = True,
    ) -> None:
        self.preds, self.target, self.weights = preds, target, weights
        self.binary_target = binary_target and target is not None
        self.pred_range = pred_range
        # the intermediates and sums made so far, by name; `None` (``memo=False``): one kernel call's own
        # batch, which asks each once (the named sums are still kept), so nothing is looked up or kept
        self._values: dict[Hashable, Tensor] | None = {} if memo else None
        # built when first asked (a shared batch given other objects, e.g. views): kernels given the
        # very tensors need none, and a fresh object per kernel call would spend a good part of its cost on it
        self._signature: tuple | None = None
        # the weight row of `weighted_sum`'s matrix-vector product (`None`: unweighted or one row per task),
        # taken once for every sum (each weighted kernel takes at least one), and the named sums kernels ask for
        self._row = weights[0] if weights is not None and weights.shape[0] == 1 else None
        self._pred_sum: Tensor | None = None
        self._total: Tensor | None = None
        self._label_sum: Tensor | None = None
        self._class_total: Tensor | None = None
        self._complement_sum: Tensor | None = None
        self._label_products: Tensor | None = None

    def matches(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> bool:
        """Whether these are this batch's tensors: the same memory seen the same way (views allowed)."""
        if preds is self.preds and target is self.target and weights is self.weights:
            return True  # the very objects (the common case): no signature to build
        if self._signature is None:
            self._signature = (_signature(self.preds), _signature(self.target), _signature(self.weights))
        return self._signature == (_signature(preds), _signature(target), _signature(weights))

    def value(self, key: Hashable, make: Callable[[], Tensor]) -> Tensor:
        """The intermediate named ``key`` (``make()`` the first time)."""
        values = self._values
        if values is None:
            return make()
        found = values.get(key)
        if found is None:
            found = values[key] = make()
        return found

    def _sum(self, x: Tensor) -> Tensor:
        """:func:`weighted_sum` of ``x`` with this batch's weights (the weight row taken once)."""
        weights = self.weights
        if weights is None:
            return x.sum(-1)
        row = self._row
        if row is not None and x.ndim == 2 and x.dtype == weights.dtype:  # `_matvec`
            return x @ row
        return weighted_sum(x, weights)

    def weighted(self, key: Hashable, make: Tensor | Callable[[], Tensor]) -> Tensor:
        """``sum w·x`` per task of the per-sample values ``x`` named ``key``: ``make()`` (or ``make``, a tensor)."""
        values = self._values
        if values is None:
            x = make if isinstance(make, Tensor) else make()
            return x.sum(-1) if self.weights is None else self._sum(x)
        name = ("sum", key)
        found = values.get(name)
        if found is None:
            x = make if isinstance(make, Tensor) else make()
            found = values[name] = x.sum(-1) if self.weights is None else self._sum(x)
        return found

    def product(
        self, key: Hashable, left: Tensor | Callable[[], Tensor], right: Tensor | Callable[[], Tensor]
    ) -> Tensor:
        """``sum w·a·b`` per task of two per-sample tensors ``a`` and ``b`` (``key`` names the product ``a·b``).

        Each is a tensor or made when first needed (``left()``; ``right`` the same callable: made
        once, a square). Unweighted, one fused multiply-and-sum (``torch.linalg.vecdot``, which
        gives the bits of ``(a * b).sum(-1)`` without the ``(T, N)`` product: about half the time);
        weighted, :meth:`weighted` of the product, except for a square (``b is a``: ``(p - y)²``,
        ``y²``), whose weight is applied first, ``sum (w·a)·a``: a row of weight 0 then adds an
        exact 0 wherever ``a`` is finite, also where ``a²`` overflows (``|a| > 1.3e154``), which
        ``a²·0`` made ``inf·0 = nan``. One elementwise product either way (``w·a`` for ``a·a``),
        but it reads the weights too: about 1-1.5 µs more per square on one core, at 8 and at 8192
        samples (measured). A product of two tensors (a 0/1 indicator and a label) keeps ``a·b``.
        """
        values = self._values
        name = None if values is None else ("sum", key)
        found = None if values is None else values.get(name)
        if found is None:
            a = left if isinstance(left, Tensor) else left()
            b = a if right is left else right if isinstance(right, Tensor) else right()
            dtype = a.dtype
            weights, row = self.weights, self._row
            if weights is None and (b is a or b.dtype == dtype) and not dtype.is_complex:
                found = torch.linalg.vecdot(a, b)
            elif weights is None or b is not a or dtype.is_complex:
                found = self._sum(a * b)
            elif row is not None and a.shape[0] == 1 and dtype == row.dtype:
                found = torch.mv(a, (a * weights)[0])  # one task: a matrix-vector product, as `(a·a) @ w` was
            else:
                found = torch.linalg.vecdot(a * weights, a)
            if values is not None:
                values[name] = found
        return found

    def total(self) -> Tensor:
        """``sum w`` per task (``N`` when unweighted)."""
        found = self._total
        if found is None:
            rows = self.preds if self.target is None else self.target  # the labels' shape: see `preds`
            kept = _UNWEIGHTED_TOTALS.get(rows.device) if self.weights is None else None
            if kept is not None and kept[0] == rows.shape:  # `_make_total`'s kept total, without the call
                found = self._total = kept[1]
            else:
                found = self._total = self._make_total()
        return found

    def _make_total(self) -> Tensor:
        """:func:`weight_total`; unweighted, the ``N`` per task of the last batch of this shape on this device.

        One tensor is kept per device and reused by every batch of the same ``(T, N)`` (a training
        step's, mostly): no ``torch.full`` per step. The same values; like every shared value it is
        never modified in place (kernels add it into their states, or take new tensors from it).
        """
        preds = self.preds if self.target is None else self.target  # the labels' shape: see `preds`
        if self.weights is not None:
            return weight_total(preds, self.weights)
        shape, device = preds.shape, preds.device
        kept = _UNWEIGHTED_TOTALS.get(device)
        if kept is None or kept[0] != shape:
            if shape[:-1].numel() > _KEPT_TOTAL:  # a total per query or segment: not kept (it would stay resident)
                return weight_total(preds, None)
            with torch.inference_mode(False):  # read by later batches outside inference mode too
                kept = _UNWEIGHTED_TOTALS[device] = (shape, weight_total(preds, None))
        return kept[1]

    def class_total(self) -> Tensor:
        """``sum w`` per task as ``sum w·y + sum w·(1 - y)``: the total of a metric whose labels are in [0, 1].

        Built so that a single class is exact whatever order the sums are taken in: when no
        weight is on a label below 1, every ``w·(1 - y)`` is an exact zero, so the total *is*
        :meth:`label_sum` and ``total - label_sum`` is exactly 0 (a plain ``sum w`` is reduced in
        another order than ``sum w·y``, e.g. by a matrix-vector product, and may differ from it
        in the last bit, turning "one class" into a negative weight of 1e-16). When every
        weighted label is 0, :meth:`label_sum` is a sum of exact zeros. Either way
        ``total >= label_sum``. Unweighted, it is :meth:`total` (``N``, and ``sum y`` of ``N``
        ones is ``N`` exactly). Not for real-valued targets: the two sums would cancel.
        """
        found = self._class_total
        if found is None:
            weighted = self.weights is not None
            found = self._class_total = self.label_sum() + self.complement_sum() if weighted else self.total()
        return found

    def complement_sum(self) -> Tensor:
        """``sum w·(1 - y)`` per task, the label-0 weight of labels in [0, 1], summed as such (not ``total - sum w·y``).

        Weighted, the sum :meth:`class_total` adds to :meth:`label_sum`, taken once for both. It holds
        its digits where the labels are nearly all 1: ``sum w - sum w·y`` of ``1e9`` positives of
        fractional weight and a negative weight of ``0.3`` keeps only ``ulp(1e9) / 0.3 ~ 4e-7`` of it.
        Unweighted, ``N - sum y``: exact for 0/1 labels (counts below ``2**53``), off by the rounding
        of ``sum y`` (about ``N·2**-53``) for soft ones. Not for real-valued targets.
        """
        found = self._complement_sum
        if found is not None:
            return found
        weights, target = self.weights, self.target
        assert target is not None
        if weights is None:
            found = self.total() - self.label_sum()
        else:
            row = self._row
            if row is not None and target.ndim == 2 and target.dtype == weights.dtype:  # `_matvec`
                found = (one_like(target) - target) @ row
            else:
                # w - w·y (exactly w·(1 - y) for 0/1 labels, 0 where y = 1 or w = 0) reuses the
                # products of `label_sum`: a third cheaper than multiplying w by 1 - y afresh
                found = (weights - self._weighted_labels()).sum(-1)
        self._complement_sum = found
        return found

    def _weighted_labels(self) -> Tensor:
        """``w·y`` per sample (only where :func:`weighted_sum` would form it too), made once for both its sums."""
        found = self._label_products
        if found is None:
            found = self._label_products = self.target * self.weights  # type: ignore[operator]
        return found

    def label_sum(self) -> Tensor:
        """``sum w·y`` per task."""
        found = self._label_sum
        if found is None:
            weights, target = self.weights, self.target
            assert target is not None
            if weights is None:
                found = target.sum(-1)
            elif self._row is not None and target.ndim == 2 and target.dtype == weights.dtype:  # `_matvec`
                found = target @ self._row
            else:  # `weighted_sum`'s products, kept for `class_total`
                found = self._weighted_labels().sum(-1)
            self._label_sum = found
        return found

    def pred_sum(self) -> Tensor:
        """``sum w·p`` per task."""
        found = self._pred_sum
        if found is None:
            found = self._pred_sum = self._sum(self.preds)
        return found


# per device: the shape of the last shared block without weights, and its total (see `sharing_sums._total`);
# kept for a training step's (T, N) block, whose total has T entries: a block of more rows than `_KEPT_TOTAL`
# (`evaluate`'s segments feed (queries, L) blocks) has its total made afresh, since a kept one of a million
# entries would stay resident after the call that made it
_UNWEIGHTED_TOTALS: dict[torch.device, tuple[torch.Size, Tensor]] = {}
_KEPT_TOTAL = 1 << 12

_SHARED: ContextVar[BatchSums | None] = ContextVar("torchmetrics_ext_shared_sums", default=None)


def batch_sums(preds: Tensor, target: Tensor | None, weights: Tensor | None, binary_target: bool = False) -> BatchSums:
    """The shared :class:`BatchSums` of this batch inside :func:`sharing_sums`, else a fresh one without a memo.

    ``binary_target``: the caller validated that every label is 0 or 1 (for a fresh object; a shared
    one says what its own caller validated).

    A kernel asks each intermediate of its own batch once (and the named sums, kept in slots, as
    often as it likes), so a fresh object computes them as asked, with the same operators in the
    same order as a shared one: the same bits, without the lookups that sharing needs.
    """
    shared = _SHARED.get()
    if shared is not None and shared.matches(preds, target, weights):
        return shared
    return BatchSums(preds, target, weights, binary_target, memo=False)  # one kernel call's: nothing to look up or keep


def known_pred_range(preds: Tensor) -> tuple[float, ...]:
    """The ``(min, max)`` the :func:`sharing_sums` caller read of ``preds`` if they are its predictions, else ``()``."""
    shared = _SHARED.get()
    return shared.pred_range if shared is not None and shared.preds is preds else ()


class sharing_sums(BatchSums):  # lower case: used as a function, `with sharing_sums(...)`
    """Within this block, kernels given exactly these tensors share this one :class:`BatchSums`.

    Takes :class:`BatchSums`' arguments. The tensors must not be modified inside the block. Other
    inputs (e.g. a batch cut to a window's newest samples) are not these objects and get their own
    sums. ``binary_target``: the caller validated that every label is 0 or 1; ``pred_range``: the
    predictions' ``(min, max)`` it read. (A class rather than a generator context manager: it is
    entered once per training step; its signature is built only when a kernel first passes other
    objects, e.g. views: given these, none is needed.)
    """

    def __enter__(self) -> BatchSums:
        self._token = _SHARED.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _SHARED.reset(self._token)
