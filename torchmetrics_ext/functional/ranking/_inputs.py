"""Validation and formatting of ranking inputs (flat grouped rows or padded candidate lists).

Every ranking metric and functional checks its options with :func:`_ranking_arg_validation` and
its inputs with :func:`_ranking_format`. That checks the tensors (when ``validate`` is true) with
``TypeError``/``ValueError`` messages that name the argument, what arrived and what was expected,
using one host synchronisation for all value checks, and returns flat rows
``(preds, target, indexes, weights)``: ``preds`` and ``target`` in their own dtypes, ``weights``
as float64, ``indexes`` as int64. It never touches metric state.

Two input forms:

* flat: ``preds``, ``target``, ``indexes`` of shape ``(N,)``; rows sharing an index form one
  query; ``mask`` (``(N,)`` bool, ``True`` = keep) drops rows; ``weights`` ``(N,)`` give each
  row's query weight (a query's weight is the largest weight among its rows, TorchRec's rule);
* padded: ``preds``, ``target`` of shape ``(Q, L)``, one query per row; ``mask`` ``(Q, L)``
  marks real candidates, ``padding_value`` marks padded predictions; ``weights`` ``(Q,)``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._spec import Cutoff
from torchmetrics_ext.utilities.checks import (
    as_int,
    as_real,
    as_str,
    check_choice,
    check_flag,
    check_tensor,
    checked_bounds,
    int_given,
    note_weight_bounds,
    observed_range,
)
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal

ACTIONS = ("skip", "zero", "one", "error")
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


class PaddedGrid(NamedTuple):
    """Padded ``(Q, L)`` input as given (:class:`RankingRows` flattens it), for :func:`~._kernel.rank_grid`."""

    preds: Tensor  # (Q, L)
    target: Tensor  # (Q, L)
    keep: Tensor | None  # (Q, L) bool: the real candidates (mask and padding value), None for all
    weights: Tensor | None  # (Q,) query weights as given


class RankingRows:
    """Flat rows of one batch; ``indexes`` are query ids (local row numbers for padded input).

    ``preds``, ``target``, ``indexes`` and ``weights`` are the rows; ``num_rows`` their number.
    Padded lists with a mask (or ``padding_value``) are compacted into rows only when a kernel
    first reads them (:meth:`compacting`): the ``torch.topk`` selection and the row-by-row kernel
    read ``grid`` instead, so the gathers by the mask are never made for them.
    """

    def __init__(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor,
        weights: Tensor | None,
        padded: bool,
        preds_writable: bool = False,  # ``preds`` is a private copy the kernels may overwrite
        target_max: float | None = None,  # the largest relevance, when the values were validated
        valid: Tensor | None = None,  # rows a mask keeps, when they were not dropped (see ``compact``)
        grid: PaddedGrid | None = None,  # padded input as given, for the per-row kernel (see :class:`PaddedGrid`)
    ) -> None:
        self.padded, self.preds_writable, self.target_max = padded, preds_writable, target_max
        self.valid, self.grid = valid, grid
        self.num_rows = preds.numel()
        self.__dict__["_flat"] = (preds, target, indexes, weights)  # what `_flat` would compute

    @classmethod
    def compacting(cls, grid: PaddedGrid, num_rows: int, target_max: float | None) -> RankingRows:
        """Rows of ``grid``'s ``num_rows`` kept entries (all without ``grid.keep``), gathered when first read."""
        rows = cls.__new__(cls)
        rows.padded, rows.preds_writable, rows.target_max = True, False, target_max
        rows.valid, rows.grid = None, grid
        rows.num_rows = num_rows
        return rows

    @functools.cached_property
    def _flat(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(preds, target, indexes, weights)`` of the kept entries of ``grid`` (see :meth:`compacting`)."""
        preds, target, keep, weights = self.grid  # type: ignore[misc]
        num_queries, width = preds.shape
        if keep is None:  # every entry a row: the lists flattened, each entry's query its list's number
            ids = _padded_ids(num_queries, width, preds.device)
            flat_weights = None if weights is None else weights.to(torch.float64)[ids]
            return preds.reshape(-1), target.reshape(-1), ids, flat_weights
        qid = torch.arange(num_queries, device=preds.device).unsqueeze(1).expand(-1, width)[keep]
        return preds[keep], target[keep], qid, None if weights is None else weights.to(torch.float64)[qid]

    @property
    def preds(self) -> Tensor:
        """``(N,)`` floating scores, as given."""
        return self._flat[0]

    @property
    def target(self) -> Tensor:
        """``(N,)`` relevance, as given (uint16/32/64 as float64)."""
        return self._flat[1]

    @property
    def indexes(self) -> Tensor:
        """``(N,)`` int64 query ids."""
        return self._flat[2]

    @property
    def weights(self) -> Tensor | None:
        """``(N,)`` float64 row weights (each row its query's), or ``None``.

        Flat rows without a mask keep the caller's weights as given until a kernel first reads
        them here (cast once): an exact metric that keeps its own copy of the column in its dtype
        (``update``'s flat rows) never makes the float64 one.
        """
        flat = self._flat
        weights = flat[3]
        if weights is not None and weights.dtype != torch.float64:
            weights = weights.to(torch.float64)
            self.__dict__["_flat"] = (*flat[:3], weights)
        return weights


def _check_shape(
    name: str, value: Tensor | None, shape: torch.Size, device: torch.device, what: str = "that of `preds`"
) -> None:
    """Raise unless ``value`` (if given) has ``shape`` (``what`` says which, for the message) and is on ``device``."""
    if value is None:
        return
    if value.shape != shape:
        raise ValueError(f"Expected `{name}` of shape {tuple(shape)} ({what}), got {tuple(value.shape)}.")
    if value.device != device:
        raise ValueError(f"Expected `{name}` on the same device as `preds` ({device}), got {value.device}.")


def check_cutoff(k: object, cutoff: Cutoff) -> int | None:
    """Validate a cutoff: a positive integer, or also ``None`` (the whole list) when ``cutoff`` is ``"optional"``.

    ``cutoff="none"`` (a metric without cutoff) accepts only ``None``. Returns ``k`` as a Python
    int (NumPy and 0-dim tensor integers accepted) or ``None``; ``k`` must be below ``2**63`` (it is
    compared with int64 positions; any ``k`` at least a query's length means the whole list).
    """
    if cutoff == "none":
        if k is not None:
            raise ValueError(f"Expected no cutoff `k` (the metric has none), got {k!r}.")
        return None
    if k is None:
        if cutoff == "required":
            raise WrongTypeError("Expected `k` to be a positive integer, got None.")
        return None
    value = as_int(k)
    if value is None or value < 1:
        or_none = " or None" if cutoff == "optional" else ""
        message = f"Expected `k` to be a positive integer{or_none}, got {int_given(k, 1)}."
        raise refusal(message, wrong_type=value is None)
    if value >= 2**63:  # compared with int64 positions: a larger Python int would wrap
        whole = " (k=None is the whole list)" if cutoff == "optional" else ""
        raise ValueError(f"Expected `k` below 2**63{whole}, got {k!r}.")
    return value


# TorchMetrics' retrieval `empty_target_action` values whose name differs here
_TORCHMETRICS_ACTIONS = {"neg": "zero", "pos": "one"}


def _ranking_arg_validation(
    empty_target_action: str, padding_value: float | None, **flags: bool
) -> tuple[str, int | float | None]:
    """Validate the options every ranking function and class shares, and bool ``flags`` by name.

    Returns ``empty_target_action`` as a Python string (a 0-dim NumPy string accepted) and
    ``padding_value`` as a Python number (NumPy scalars and 0-dim tensors accepted) or ``None``.
    """
    theirs = as_str(empty_target_action)
    if theirs in _TORCHMETRICS_ACTIONS:  # TorchMetrics' names for two of ours: say which
        raise ValueError(
            f"Expected `empty_target_action` to be one of {ACTIONS}, got {empty_target_action!r}: TorchMetrics' "
            f"{theirs!r} is {_TORCHMETRICS_ACTIONS[theirs]!r} here."
        )
    action = check_choice("empty_target_action", empty_target_action, ACTIONS)
    padding = None if padding_value is None else as_real(padding_value)
    if padding_value is not None and (padding is None or math.isnan(padding)):
        raise refusal(
            f"Expected `padding_value` to be a number (not NaN) or None, got {padding_value!r}.",
            wrong_type=padding is None,
        )
    for name, flag in flags.items():
        check_flag(name, flag)
    return action, padding


def _ranking_format(
    preds: Tensor,
    target: Tensor,
    indexes: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    *,
    padding_value: float | None = None,
    validate: bool = True,
    compact: bool = True,
) -> RankingRows:
    """Check a batch of ranking inputs and return it as flat rows.

    Args:
        preds: ``(N,)`` (flat, with ``indexes``) or ``(Q, L)`` (padded) floating point scores;
            any real value, ``±inf`` included (NaN is rejected).
        target: relevance of the shape of ``preds``: bool, integer (signed or unsigned) or float,
            finite and ``>= 0``; uint16/32/64 relevance is read as float64.
        indexes: ``(N,)`` integer query ids for flat input (any integer dtype: unsigned ids are
            compared as their int64 conversion, a bijection, so distinct ids stay distinct);
            must be ``None`` for padded input.
        mask: optional bool tensor of the shape of ``preds``; ``False`` drops a row / pads a slot.
        weights: optional non-negative finite query weights: ``(N,)`` rows (flat) or ``(Q,)`` (padded).
        padding_value: predictions equal to it are padding (padded input only: with flat rows it
            raises, rather than being ignored, whatever ``validate``).
        validate: run the checks; when false, only reshape and cast.
        compact: drop the rows a mask (or ``padding_value``) removes, which reads their number
            on the host; when false, every row is returned with a ``valid`` mask instead (the
            device path's kernel ranks them without a host read).

    Returns:
        :class:`RankingRows` with 1-D ``preds`` (floating, as given), ``target`` (as given: the
        kernels read any dtype), ``indexes`` (int64), ``weights`` (float64 rows or ``None``),
        whether the input was padded and, when validated, the largest relevance.

    Raises:
        TypeError: non-tensor inputs, non-floating ``preds``, non-integer ``indexes``, non-bool ``mask``.
        ValueError: shape/device mismatch, missing or unexpected ``indexes``, NaN ``preds``,
            negative or non-finite ``target``/``weights``, or a ``padding_value`` with flat rows.
    """
    if isinstance(target, Tensor) and target.dtype in _WIDE_UNSIGNED:
        # uint16/32/64 relevance: the range checks and the kernels' ops are not implemented for
        # these dtypes; float64 is the dtype the rows are gathered in anyway
        target = target.to(torch.float64)
    if validate:
        check_tensor("preds", preds)
        check_tensor("target", target)
        if not preds.is_floating_point():
            raise WrongTypeError(f"Expected `preds` to be a floating point tensor, got dtype {preds.dtype}.")
        if preds.ndim not in (1, 2):
            raise ValueError(
                "Expected `preds` of shape (N,) with `indexes` or (queries, candidates), "
                f"got shape {tuple(preds.shape)}."
            )
        _check_shape("target", target, preds.shape, preds.device)
        if mask is not None:
            check_tensor("mask", mask)
            if mask.dtype != torch.bool:
                raise WrongTypeError(
                    f"Expected `mask` to be a bool tensor, got dtype {mask.dtype}: pass `mask.bool()` for a 0/1 mask "
                    "such as a Hugging Face `attention_mask` (nonzero = a real candidate, 0 = padding)."
                )
            _check_shape("mask", mask, preds.shape, preds.device)
        if preds.ndim == 1:
            if indexes is None:
                n = preds.shape[0]
                raise WrongTypeError(  # `None` where a value is needed (docs/policies.md, "Wrong types")
                    "Expected `indexes` (query id of every row) for flat (N,) `preds`, got None: pass "
                    f"`indexes=` ({n},) integer query ids, or padded (queries, candidates) rows, which need none "
                    f"(one query: `preds.unsqueeze(0)` and `target.unsqueeze(0)`, shape (1, {n}))."
                )
            check_tensor("indexes", indexes)
            if indexes.is_floating_point() or indexes.dtype == torch.bool:
                raise WrongTypeError(f"Expected `indexes` to be an integer tensor, got dtype {indexes.dtype}.")
            _check_shape("indexes", indexes, preds.shape, preds.device)
        elif indexes is not None:
            if not isinstance(indexes, Tensor):  # an int or a list here is a wrong type, not a shape to print
                raise WrongTypeError(
                    "Expected `indexes=None` for padded (queries, candidates) `preds`: every row is one query, "
                    f"got {type(indexes).__name__} {indexes!r}."
                )
            column = ""
            if preds.shape[1] == 1 and isinstance(indexes, Tensor) and indexes.numel() == preds.shape[0] > 1:
                # a model head's (N, 1) output with flat query ids: flat rows meant
                column = f"; for flat rows pass `preds.squeeze(-1)` (and `target` alike), shape ({preds.shape[0]},)"
            raise ValueError(
                "Expected `indexes=None` for padded (queries, candidates) `preds`: every row is one query, "
                f"got `indexes` of shape {tuple(indexes.shape)}{column}."
            )
        if weights is not None:
            check_tensor("weights", weights)
            # flat rows: one weight per row; padded (queries, candidates): one per query (row of `preds`)
            what = "that of `preds`"
            if preds.ndim == 2:
                what = f"one weight per query, a row of `preds` {tuple(preds.shape)}"
            _check_shape("weights", weights, preds.shape[:1], preds.device, what)

    padded = preds.ndim == 2
    if padding_value is not None and not padded:  # a shape check: no data read, so made whatever `validate`
        raise ValueError(
            f"Expected padded (queries, candidates) `preds` with `padding_value={padding_value!r}`, got flat "
            f"`preds` of shape {tuple(preds.shape)}: flat rows have no padding slots (it would be ignored); "
            "drop those rows or pass `mask`, or build the metric without `padding_value`."
        )
    keep = mask
    lost = None  # (Q, L) bool: relevant candidates that `padding_value` would drop (checked when `validate`)
    if padded and padding_value is not None:
        not_pad = preds != padding_value
        keep = not_pad if keep is None else keep & not_pad
        if validate:  # slots `mask` drops are the caller's choice: only those padded by the value count
            relevant = target if target.dtype == torch.bool else target > 0
            if mask is not None:
                relevant = relevant & mask
            lost = relevant > not_pad  # bools: `relevant & ~not_pad`, in one kernel
    valid = grid = None
    if padded:
        num_queries, width = preds.shape
        grid = PaddedGrid(preds, target, keep, weights)
        if keep is not None and compact:  # rows gathered only if a kernel reads them (RankingRows.compacting)
            # int32 sums: ~2x faster than int64 (a (256, 50000) mask), exact below 2**31 entries
            num_rows = int(keep.sum(dtype=torch.int32 if keep.numel() < 2**31 else torch.int64))
            top = None
            if validate and num_rows > 0:
                top = _check_kept_values(grid, num_rows, lost)
            elif lost is not None and bool(lost.any()):  # all padding: no bounds read to join
                raise _lost_error(lost)
            return RankingRows.compacting(grid, num_rows, top)
        if keep is None:  # flattened (and the query ids made) only if a kernel reads the rows: the list
            # kernels read `grid` (one entry per row; 50,000-candidate lists would make 8 bytes of ids per entry)
            top = _check_values(preds, target, weights) if validate and preds.numel() > 0 else None
            return RankingRows.compacting(grid, preds.numel(), top)
        qid = _padded_ids(num_queries, width, preds.device)
        p, t = preds.reshape(-1), target.reshape(-1)
        valid = None if keep is None else keep.reshape(-1)
        w = None if weights is None else weights.to(torch.float64)[qid]
    else:
        qid = indexes.to(torch.int64)  # type: ignore[union-attr]
        # without a mask the weights stay as given: cast to float64 when a kernel reads them (`RankingRows.weights`)
        p, t, w = preds, target, weights
        if keep is not None:
            w = None if w is None else w.to(torch.float64)
            if compact:
                p, t, qid = p[keep], t[keep], qid[keep]
                w = None if w is None else w[keep]
            else:
                valid = keep
    top = None
    if validate and p.numel() > 0:
        # without a mask every row is kept: the caller's own tensors are checked (the same values),
        # so their bounds are read once for every metric of a collection given them; rows a
        # mask drops but keeps in place are checked as 0
        if keep is None:
            top = _check_values(preds, target, weights)
        elif valid is None:
            top = _check_values(p, t, w)
        else:
            top = _check_values(
                torch.where(valid, p, 0.0),
                torch.where(valid, t, torch.zeros((), dtype=t.dtype, device=t.device)),
                None if w is None else torch.where(valid, w, 0.0),
                lost,
            )
    return RankingRows(p, t, qid, w, padded, target_max=top, valid=valid, grid=grid)


_SCORE_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))
# dtypes whose bounds ``torch.aminmax`` reads on the CPU as they are (float8 and uint16/32/64 have no kernel)
_DIRECT_DTYPES = _SCORE_DTYPES | {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8}
_COMPLEX = frozenset((torch.complex32, torch.complex64, torch.complex128))
_DENSE = torch.strided  # a sparse layout (COO, CSR, ...) goes to `_ranking_format`, whose checks name it
_ID_DTYPES = frozenset(
    (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64)
)


def _flat_rows_checked(preds: Tensor, target: Tensor, indexes: Tensor, weights: Tensor | None) -> float | None:
    """The checks :func:`_ranking_format` makes of flat rows without a mask; the largest relevance (``None`` if empty).

    For an exact metric's ``update``, which keeps the caller's tensors (copied) and needs none of
    the formatting: the same structural conditions read in one expression (dtypes by set
    membership, shapes compared as ``torch.Size``), then :func:`_check_values` of the tensors as
    given. Anything unusual (a non-tensor, a dtype outside the common ones, uint16/32/64
    relevance, a shape or device mismatch, a sparse layout) goes through :func:`_ranking_format` itself, so every
    rejection is its message, raised in its order.
    """
    if (
        isinstance(preds, Tensor)
        and isinstance(target, Tensor)
        and isinstance(indexes, Tensor)
        and preds.dtype in _SCORE_DTYPES
        and (target.dtype in _DIRECT_DTYPES or target.dtype == torch.bool)
        and indexes.dtype in _ID_DTYPES
        and preds.ndim == 1
        and target.shape == preds.shape
        and indexes.shape == preds.shape
        and preds.layout is _DENSE
        and target.layout is _DENSE
        and indexes.layout is _DENSE
        and (
            weights is None
            or (
                isinstance(weights, Tensor)
                and weights.shape == preds.shape
                and weights.dtype not in _COMPLEX
                and weights.layout is _DENSE
            )
        )
    ):
        if preds.is_cpu and target.is_cpu and indexes.is_cpu and (weights is None or weights.is_cpu):
            if not preds.shape[0]:
                return None
            if not on_device_path(preds) and (weights is None or weights.dtype in _DIRECT_DTYPES):
                return _check_cpu_values(preds, target, weights)  # `_check_values`' test, made here (one call less)
            return _check_values(preds, target, weights)
        if (
            target.device == preds.device
            and indexes.device == preds.device
            and (weights is None or weights.device == preds.device)
        ):
            return _check_values(preds, target, weights) if preds.shape[0] else None
    return _ranking_format(preds, target, indexes, None, weights).target_max


def _check_kept_values(grid: PaddedGrid, num_rows: int, lost: Tensor | None = None) -> float:
    """:func:`_check_values` of the ``num_rows`` (> 0) kept entries of ``grid``, without gathering them.

    Each dropped entry is read as a copy of the first kept one (and each query without a kept
    entry as the first kept entry's query weight), so the bounds, and with them every message and
    the largest relevance, are those of the compacted rows. ``lost`` as in :func:`_check_values`.
    """
    preds, target, keep, weights = grid
    if keep is None:
        raise ValueError("_check_kept_values needs a grid with `keep`.")
    width = preds.shape[1]
    first = None
    p = preds  # on the CPU, scores without NaN anywhere (one read) have none among the kept ones: no copy
    if on_device_path(preds) or math.isnan(preds.max().item()):
        first = keep.reshape(-1).view(torch.uint8).argmax()  # the first kept entry (argmax: the first of equal values)
        p = torch.where(keep, preds, preds.reshape(-1)[first])
    t = target
    if target.dtype != torch.bool:
        first = keep.reshape(-1).view(torch.uint8).argmax() if first is None else first
        t = torch.where(keep, target, target.reshape(-1)[first])
    w = None
    if weights is not None:
        first = keep.reshape(-1).view(torch.uint8).argmax() if first is None else first
        w = weights.to(torch.float64)
        w = torch.where(keep.any(1), w, w[first // width])
    return _check_values(p, t, w, lost)


_CACHED_IDS = 1 << 16


def _padded_ids(num_queries: int, width: int, device: torch.device) -> Tensor:
    """``(Q * L,)`` int64 query number of each entry of padded ``(Q, L)`` lists; up to 65,536 entries, cached.

    The kernels only read ``indexes``: a cached tensor serves every batch of its shape.
    """
    if num_queries * width > _CACHED_IDS:
        return torch.arange(num_queries, device=device).repeat_interleave(width)
    return _cached_ids(num_queries, width, device)


@functools.lru_cache(maxsize=16)
def _cached_ids(num_queries: int, width: int, device: torch.device) -> Tensor:
    return torch.arange(num_queries, device=device).repeat_interleave(width)


def _check_values(preds: Tensor, target: Tensor, weights: Tensor | None, lost: Tensor | None = None) -> float:
    """NaN scores, negative/non-finite relevance and weights, with one host synchronisation.

    Returns the largest relevance. ``lost`` (padded ``(Q, L)`` input with ``padding_value``): the
    relevant candidates whose score is the padding value, refused after the other checks; its
    largest value joins the same read.

    ``aminmax`` (and ``max``) propagate NaN. On CPU each bound is read directly (there is nothing to
    synchronise, and stacking them would cost more than reading them); on the device path
    (:func:`~torchmetrics_ext.utilities.device.on_device_path`, forced on CPU in tests) in one copy.
    On the CPU with common dtypes (floating scores, bool/integer/floating relevance and weights)
    the reads are made here, without :func:`~torchmetrics_ext.utilities.checks.checked_bounds`'
    bookkeeping, and of the scores only the maximum is read (NaN is all that is checked of them):
    the same values, checks and messages.
    """
    if (
        not on_device_path(preds)
        and preds.dtype in _SCORE_DTYPES
        and (target.dtype in _DIRECT_DTYPES or target.dtype == torch.bool)
        and (weights is None or weights.dtype in _DIRECT_DTYPES)
    ):
        top = _check_cpu_values(preds, target, weights)
        if lost is not None and bool(lost.any()):
            raise _lost_error(lost)
        return top
    checked = [preds] + ([] if target.dtype == torch.bool else [target]) + ([] if weights is None else [weights])
    if lost is not None:
        checked.append(lost)  # its largest value, read with the bounds
    # on the device path one read, shared with every other metric of the step that checks the same
    # tensors; any dtype (uint16/32/64 weights have no min/max kernel: checked_bounds widens them)
    bounds = checked_bounds(checked, [False] * len(checked), on_device_path(preds))
    values = [value for bound in bounds for value in bound]
    if math.isnan(values[0]) or math.isnan(values[1]):
        raise ValueError(_NAN_PREDS)
    if target.dtype == torch.bool:
        values[2:2] = [0.0, 1.0]
    tmin, tmax = values[2], values[3]
    if not (tmin >= 0 and math.isfinite(tmax)):
        raise _relevance_error(tmin, tmax)
    if weights is not None:
        _check_weight_bounds(values[4], values[5])
    if lost is not None and values[-1] > 0:
        raise _lost_error(lost)
    return tmax


def _lost_error(lost: Tensor) -> ValueError:
    """The error of a relevant candidate in a slot padded by ``padding_value`` (``lost``, ``(Q, L)`` bool, has one)."""
    query, slot = (int(i) for i in lost.nonzero()[0])  # the error path: reading it costs nothing that matters
    return ValueError(
        f"Expected every relevant candidate (`target` > 0) to have a score other than `padding_value`, got query "
        f"{query} whose candidate {slot} is relevant and scores `padding_value`: it would be dropped with the padding "
        "and the query would lose a relevant item silently. Give padded slots relevance 0 (and real candidates "
        "scores other than `padding_value`), or mark the padding with `mask=`."
    )


def _relevance_error(tmin: float, tmax: float) -> ValueError:
    """The error of relevance out of range, telling the fix for a negative integer mark.

    -1, or TorchMetrics' and Hugging Face's usual ``ignore_index`` -100, marks padded or unlabelled
    slots: ``mask`` leaves them out, for flat rows as for padded ones.
    """
    hint = ""
    if -(2**31) <= tmin < 0 and float(tmin).is_integer():  # a mark, not a huge value
        mark = int(tmin)
        hint = (
            f" If {mark} marks padded or unlabelled candidates (TorchMetrics' `ignore_index={mark}`), leave them out:"
            " `mask=target >= 0` in `update`, for flat rows as for (Q, L) rows."
        )
    return ValueError(f"Expected `target` to hold finite relevance >= 0, got {observed_range(tmin, tmax)}.{hint}")


def _check_cpu_values(preds: Tensor, target: Tensor, weights: Tensor | None) -> float:
    """:func:`_check_values` on the CPU path of common dtypes (the caller checked them): each bound read directly.

    Flat rows of up to ``_LISTED`` rows are first read as lists (:func:`_listed_top`): at that size a
    reduction and its reads cost more than the list. A batch the lists accept returns its largest
    relevance; any other is checked by the reductions below, which raise the messages.
    """
    if preds.ndim == 1 and 0 < preds.shape[0] <= _LISTED:
        top = _listed_top(preds, target, weights)
        if top is not None:
            return top
    if math.isnan(preds.max().item()):
        raise ValueError(_NAN_PREDS)
    if target.dtype == torch.bool:
        tmax = 1.0  # bool relevance is in range: not read (as in `_check_values`)
    else:
        low, high = torch.aminmax(target)
        tmin, tmax = low.item(), high.item()
        if not (tmin >= 0 and math.isfinite(tmax)):
            raise _relevance_error(tmin, tmax)
    if weights is not None:
        low, high = torch.aminmax(weights)
        _check_weight_bounds(low.item(), high.item())
    return tmax


_LISTED = 16  # flat rows up to which the CPU checks read the values as lists (see `_listed_top`)


def _listed_top(preds: Tensor, target: Tensor, weights: Tensor | None) -> float | None:
    """The largest relevance of a small valid 1-D CPU batch read as Python lists; ``None`` if any check fails.

    The tests of :func:`_check_cpu_values` (no NaN score; finite relevance and weights >= 0, no
    NaN), decided from ``tolist()`` with the builtins ``sum``/``min``/``max`` (C loops over at most
    ``_LISTED`` values): one call per tensor, where the reductions cost four calls and five reads.
    ``min``/``max`` skip NaN depending on its position, so floating values are tested for NaN by
    their ``sum`` (NaN whenever one is; also for ``inf`` plus ``-inf``, which only sends such a
    batch to the reductions). The largest relevance is the value ``torch.aminmax`` reads (the
    same number; of zeros of both signs either may come back from either, equal as numbers).
    """
    if math.isnan(sum(preds.tolist())):
        return None
    if target.dtype == torch.bool:
        top: float = 1.0
    else:
        values = target.tolist()
        top = max(values)
        if not (min(values) >= 0 and math.isfinite(top)):
            return None
        if target.dtype in _SCORE_DTYPES and math.isnan(sum(values)):
            return None
    if weights is not None:
        values = weights.tolist()
        low, high = min(values), max(values)
        if not (low >= 0 and math.isfinite(high)):
            return None
        if weights.dtype in _SCORE_DTYPES and math.isnan(sum(values)):
            return None
        note_weight_bounds([(low, high)])  # for a window (see `_check_weight_bounds`)
    return top


_NAN_PREDS = "Expected `preds` without NaN (any other real score, ±inf included, is fine), got NaN."


def _check_weight_bounds(wmin: float, wmax: float) -> None:
    if not (wmin >= 0 and math.isfinite(wmax)):
        raise ValueError(f"Expected `weights` to be finite and non-negative, got {observed_range(wmin, wmax)}.")
    note_weight_bounds([(wmin, wmax)])  # for a window: all-zero weights take no slot (no read of its own)
