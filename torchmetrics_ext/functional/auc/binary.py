r"""Exact and binned ROC AUC and average precision (AUPRC) as pure tensor functions.

Two ways to get the same curve statistics per task, ``(P, N, auc_num, ap_num)`` with
``P``/``N`` the positive/negative label weight:

* **exact** (:func:`_exact_curve_stats`): one sort of every score, then tie-aware cumulative
  sums with one curve point per distinct score (scikit-learn's rule). Scores are ranked as
  float32 through an order-preserving ``int32`` key packed with the weight's bits into one
  ``int64`` (see :mod:`torchmetrics_ext.functional.auc._kernels`).
* **binned** (:func:`_binned_update` + :func:`_binned_curve_stats`): a ``(2, T, B)`` histogram
  of negative and positive weight over ``B`` bins uniform in logit space (or, with
  ``bin_space="probability"``, in probability as TorchRec's lifetime AUPRC), filled in O(N) with one
  ``scatter_add_`` into the histogram (no host sync on any device); the value is the exact value
  of the scores rounded to their bin. On a device each score's bin is looked up among edges that
  reproduce the CPU's arithmetic exactly (:mod:`~torchmetrics_ext.functional.auc._bin_edges`):
  three launches per one-task update instead of nine.

Then ``AUC = auc_num / (P N)`` and ``AUPRC = ap_num / P``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from torchmetrics_ext.functional._sums import known_pred_range
from torchmetrics_ext.functional.auc import _device as D
from torchmetrics_ext.functional.auc import _kernels as K
from torchmetrics_ext.functional.auc._bin_edges import EDGE_DTYPES, smallest_reaching
from torchmetrics_ext.utilities.checks import (
    as_int,
    as_real,
    broadcast_shape,
    check_choice,
    check_flag,
    checks_validate_args,
    format_pointwise,
    int_given,
    sequence_items,
    single_task,
)
from torchmetrics_ext.utilities.device import constant_on, on_device_path
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.summation import power_of_two
from torchmetrics_ext.utilities.warnings import warn_undefined, warn_undefined_flags

__all__ = ["auc", "auprc"]

CurveStats = tuple[Tensor, Tensor, Tensor, Tensor]

DEFAULT_LOGIT_RANGE: tuple[float, float] = (-16.0, 16.0)
BIN_SPACES = ("logit", "probability")


# ----------------------------------------------------------------------------- argument checks


def _check_bins(
    num_bins: object, logit_range: object, bin_space: object = "logit"
) -> tuple[int | None, tuple[float, float], str]:
    """``num_bins``, ``logit_range`` and ``bin_space`` as Python values; ``ValueError`` if invalid.

    NumPy and 0-dim tensor numbers are read as numbers, a 1-D tensor or array as the pair
    (:func:`~torchmetrics_ext.utilities.checks.sequence_items`), a 0-dim NumPy string as the string.

    ``bin_space`` and ``logit_range`` place the bins of the binned mode, so a value other than
    their default is refused where it would be ignored: in exact mode (``num_bins=None``), and
    ``logit_range`` with ``bin_space="probability"`` (bins over [0, 1]).
    """
    bin_space = check_choice("bin_space", bin_space, BIN_SPACES)
    bins = None if num_bins is None else as_int(num_bins)
    if num_bins is not None and (bins is None or bins < 2):
        raise refusal(
            f"Expected `num_bins` to be None (exact) or an integer >= 2, got {int_given(num_bins, 2)}.",
            wrong_type=bins is None,
        )
    ends = [as_real(v) for v in sequence_items("logit_range", logit_range) or ()]
    low, high = math.nan, math.nan
    if len(ends) == 2 and ends[0] is not None and ends[1] is not None:
        low, high = float(ends[0]), float(ends[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise refusal(
            f"Expected `logit_range` to be a pair of finite floats (low, high), low < high, got {logit_range!r}.",
            wrong_type=sequence_items("logit_range", logit_range) is None or None in ends,
        )
    custom_range = (low, high) != DEFAULT_LOGIT_RANGE
    if bins is None and (bin_space != "logit" or custom_range):
        given = f"bin_space={bin_space!r}" if bin_space != "logit" else f"logit_range={logit_range!r}"
        raise ValueError(
            f"Expected `num_bins` (an integer >= 2) with `{given}`: it places the bins of the binned mode, and "
            "the exact mode (num_bins=None, the default) has none, so it would be ignored. Pass num_bins=B, "
            "or leave it at its default for the exact value."
        )
    if bin_space == "probability" and custom_range:
        raise ValueError(
            f"Expected the default `logit_range` with bin_space='probability' (bins uniform over [0, 1], no logit "
            f"range), got logit_range={logit_range!r}, which would be ignored; use bin_space='logit' for bins over "
            "a logit range."
        )
    return bins, (low, high), bin_space


# ----------------------------------------------------------------------------- exact


# (device, dtype) -> a kept 0-dim -1 of that device and dtype
_MINUS_ONE: dict[tuple[torch.device, torch.dtype], Tensor] = {}
# dtype -> a kept CPU (-1, +1) of that dtype: the signs of labels 0 and 1, looked up by label
_SIGN_TABLE: dict[torch.dtype, Tensor] = {}
_INDEX_DTYPES = (torch.int64, torch.int32)
_CPU = torch.device("cpu")


def _label_signs(
    target: Tensor, out: Tensor | None = None, dtype: torch.dtype = torch.float32, lookup: bool = False
) -> Tensor:
    """``2 * label - 1`` as ``dtype`` (+1 for a label 1, -1 for a label 0), fresh, in one kernel.

    One ``add`` of the labels (any dtype) to a kept -1 of the device (on a GPU each launch costs
    the host ~10 µs of an ``update``). Labels other than 0 and 1 are not mapped to ±1: callers
    validate them first (or were told they are valid). ``out``: a ``dtype`` tensor of ``target``'s
    shape to write into (e.g. the transpose of a sample-major chunk); floating labels of another
    dtype are written through one too (their ``add`` would keep their own dtype). Labels that
    require grad are read detached: the signs are never differentiated (a metric keeps them as
    states, which must hold no autograd graph, and ``out=`` kernels refuse such inputs).

    ``lookup``: int64/int32 CPU labels, 1-D or contiguous (without ``out``), index a kept ``(-1, +1)`` table
    instead, the same values in one pass over the labels (the ``add`` first casts integer labels
    to ``dtype`` in a pass of their own: 5.2 µs against 4.3 µs at 8,192 labels, 1.9 against 0.8 µs
    at 16). A label other than 0 and 1 then raises ``IndexError``: callers check the labels
    before, or accept that error for labels they did not check.

    Examples:
        >>> import torch
        >>> _label_signs(torch.tensor([1, 0, 1]))
        tensor([ 1., -1.,  1.])
        >>> _label_signs(torch.tensor([1, 0, 1]), lookup=True)
        tensor([ 1., -1.,  1.])
    """
    if target.requires_grad:  # no `detach` op otherwise: an update's fixed cost
        target = target.detach()
    if lookup and out is None and target.is_cpu and (target.ndim == 1 or target.is_contiguous()):
        table = _SIGN_TABLE.get(dtype)
        if table is None:
            # on the CPU whatever the default device (`torch.set_default_device`, `with torch.device(...)`)
            table = _SIGN_TABLE[dtype] = torch.tensor([-1.0, 1.0], dtype=dtype, device=_CPU)
        if target.dtype in _INDEX_DTYPES:
            if target.ndim == 1:
                return torch.index_select(table, 0, target)
            return torch.index_select(table, 0, target.view(-1)).view(target.shape)  # (T, N): views, no copy
        if target.dtype == dtype:  # as below, without making a device object (~0.2 µs a call)
            minus_one = _MINUS_ONE.get((_CPU, dtype))
            if minus_one is not None:
                return torch.add(minus_one, target, alpha=2)
    device = target.device
    minus_one = _MINUS_ONE.get((device, dtype))
    if minus_one is None:
        minus_one = _MINUS_ONE[device, dtype] = torch.full((), -1.0, dtype=dtype, device=device)
    if out is None and target.is_floating_point() and target.dtype != dtype:
        out = torch.empty(target.shape, dtype=dtype, device=device)
    if out is None:
        return torch.add(minus_one, target, alpha=2)
    return torch.add(minus_one, target, alpha=2, out=out)


def _signed_weights(
    target: Tensor, weights: Tensor | None, dtype: torch.dtype = torch.float32, lookup: bool = False
) -> Tensor:
    """A fresh ``dtype`` ``+w`` for labels 1 and ``-w`` for labels 0 (``w = 1`` unweighted).

    ``target`` of any dtype, its labels 0 or 1 (see :func:`_label_signs`); ``weights``
    broadcastable with it (the result has the broadcast shape). One kernel unweighted, two
    weighted (the signs times the weights, in place where the signs have the broadcast shape: each
    product ``±w`` is then rounded to ``dtype`` as ``w`` would be). Never differentiated: labels and
    weights that require grad are read detached (a metric keeps the result as a state).
    ``lookup``: the signs of integer CPU labels from a table (see :func:`_label_signs`: checked
    labels only; others raise ``IndexError``).

    Examples:
        >>> import torch
        >>> _signed_weights(torch.tensor([1, 0]), torch.tensor([0.5, 2.0], dtype=torch.float64))
        tensor([ 0.5000, -2.0000])
    """
    signs = _label_signs(target, dtype=dtype, lookup=lookup)
    if weights is None:
        return signs
    if weights.requires_grad:  # no `detach` op otherwise
        weights = weights.detach()
    if weights.shape != signs.shape and broadcast_shape(weights.shape, signs.shape) != signs.shape:
        return torch.mul(signs, weights).to(dtype=dtype)  # e.g. (T, N) weights of (N,) labels
    return signs.mul_(weights)


def _exact_curve_stats(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int, device: torch.device | None = None
) -> CurveStats:
    """``(P, N, auc_num, ap_num)`` per task from chunks of scores and signed weights (one sort).

    Args:
        scores: chunks of scores, each viewable as ``(n_k, T)`` (sample-major), e.g. ``[preds.T]``.
        signed: the matching chunks of signed weights.
        num_tasks: ``T``.
        device: where the (all-zero) sums of no chunk at all are made: the metric's device (the
            CPU when ``None``); with chunks, their device.

    CPU tensors take the block-wise CPU kernels, other devices one sort and whole-array scans
    (:mod:`~torchmetrics_ext.functional.auc._device`); both give the same value to rounding.
    """
    if not scores:  # nothing seen: a metric on a device answers there too
        zeros = torch.zeros(num_tasks, dtype=torch.float64, device=device)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone()
    if on_device_path(scores[0]):
        return D._exact_curve_sums(scores, signed, num_tasks)
    if num_tasks <= K._FEW_SEGMENTS and sum(chunk.numel() for chunk in scores) <= K._SMALL:  # fixed costs first
        return K._small_curve_stats(scores, signed, num_tasks)
    packed, pos_total, neg_total = K._pack(scores, signed, num_tasks)
    if packed.shape[-1] == 0:
        return pos_total, neg_total, torch.zeros_like(pos_total), torch.zeros_like(pos_total)
    return (pos_total, neg_total, *K._row_curve_sums(K._sort_rows(packed), neg_total))


# ----------------------------------------------------------------------------- binned


def _binned_index(
    preds: Tensor,
    target: Tensor,
    num_bins: int,
    logit_range: tuple[float, float],
    from_logits: bool,
    bin_space: str = "logit",
    int64: bool = False,
    validated: bool = False,
) -> Tensor:
    """Flat ``(y, task, bin)`` index of every sample into a ``(2, T, B)`` histogram, as ``(T, N)`` integers.

    int32 when every index fits (``2 T B <= 2**31 - 1``), else int64: a window keeps the int32
    indices as they are, and the float64 positions convert to int32 three times as fast as to
    int64 on the CPU (AVX2 has no packed float64-to-int64 conversion); :func:`_add_entries` adds
    them with ``index_add_``. ``int64``: int64 always (for ``scatter_add_``, the kernel measured on
    a GPU; ``index_add_`` of int32 indices is as many launches there, not yet measured).

    ``B`` equal bins of the logit over ``logit_range`` (end bins clip); probabilities (of any
    float dtype) go through ``logit(p) = log(p / (1 - p))`` in float64. With
    ``bin_space="probability"``, ``B`` equal bins of the probability over [0, 1] (logits go
    through the sigmoid), as TorchRec's lifetime AUPRC: the position ``p * B`` is rounded to
    float32 first, as TorchRec computes it for float32 predictions (``0.35 * 1000`` is bin 350,
    not 349). The position is clipped to ``[0, B - 1]`` and truncated (its floor, as it is
    non-negative) before the whole offsets of label and task are added, so that equal
    scores share a bin whatever their label and task (offsets added in float64 first would round
    a position just below a bin edge up for some labels or tasks only, splitting a tie).

    On the device path, floating scores find these same bins in kept edges instead
    (:func:`_looked_up_index`: two launches for one task, not one per pass of the arithmetic).

    Every score gets a bin that exists, validated or not (an index outside the histogram is an
    ``IndexError`` on the CPU and a device-side assert on CUDA, which ends the process's CUDA
    context). ``validated``: the caller checked the scores (no NaN), so no pass is spent on NaN;
    otherwise (the default) a NaN score counts in the last bin, where the device path's sorted
    search puts it for free (NaN orders after every edge; ``Reliability`` and ``HindsightTargetPR``
    place it alike), at one elementwise pass on this path. Out-of-range and infinite scores need no
    extra pass on either path: they fall in the end bins.
    """
    num_tasks = preds.shape[0]
    narrow = 2 * num_tasks * num_bins <= _INT32_MAX
    if on_device_path(preds) and preds.dtype in EDGE_DTYPES:
        int32 = narrow and not int64
        return _looked_up_index(preds, target, num_bins, logit_range, from_logits, bin_space, int32)
    position = _bin_positions(preds, num_bins, logit_range, from_logits, bin_space, validated)
    position.add_(target, alpha=float(num_tasks * num_bins))
    if num_tasks > 1:
        position += _task_offsets(num_tasks, num_bins, preds.device, torch.float64)
    return position.int() if narrow and not int64 else position.long()  # `.to(dtype)` without its argument parsing


def _bin_positions(
    preds: Tensor,
    num_bins: int,
    logit_range: tuple[float, float],
    from_logits: bool,
    bin_space: str,
    validated: bool = False,
) -> Tensor:
    """The bin of every score by the documented arithmetic, as fresh float64 whole numbers in ``[0, B - 1]``.

    A NaN score is put in the last bin unless ``validated`` (the scores were checked: no NaN, no pass for it).
    """
    if bin_space == "probability":
        # a logit's probability: float64 sigmoid rounded to float32 (the same bin on any path)
        p = torch.sigmoid(preds.to(torch.float64)).to(torch.float32) if from_logits else preds.to(torch.float32)
        position = (p * num_bins).to(torch.float64).clamp_(0, num_bins - 1)
        if not validated:  # `clamp_` keeps NaN: an unchecked NaN score counts in the last bin
            position.nan_to_num_(num_bins - 1)  # (nan=; positional: no keyword parse)
    else:
        wide = preds if preds.dtype == torch.float64 else preds.to(torch.float64)  # no call for the module's batch
        # `eps=0.0` (the same bits inside [0, 1], no slower): an unvalidated probability above 1 or below 0 is
        # read as 1 or 0, a logit of inf or -inf clipped into an end bin below, not NaN (an index outside the
        # histogram: IndexError on the CPU). NaN scores (refused by validation) are put in the last bin below.
        z = (wide.clone() if wide is preds else wide) if from_logits else torch.logit(wide, eps=0.0)  # in place below
        lo, hi = logit_range
        position = z.sub_(lo).mul_(num_bins / (hi - lo))
        # (a known range is a checked batch's: unchecked scores are always clamped)
        if not _logits_inside(known_pred_range(preds) if validated else (), from_logits, logit_range):
            position.clamp_(0, num_bins - 1)
            if not validated:  # `clamp_` keeps NaN: an unchecked NaN score counts in the last bin
                position.nan_to_num_(num_bins - 1)  # (nan=; positional: no keyword parse)
    # the floor (exact in float64, as are whole offsets below 2**53): one in-place pass, cheaper
    # than casting to an integer type before adding the offsets. `floor_`, not `trunc_` (the same
    # value on the clipped, non-negative position): on the CPU ATen vectorises floor and not
    # trunc, ~15x as fast on float64
    return position.floor_()


def _looked_up_index(
    preds: Tensor,
    target: Tensor,
    num_bins: int,
    logit_range: tuple[float, float],
    from_logits: bool,
    bin_space: str,
    int32: bool,
) -> Tensor:
    """:func:`_binned_index` on the device path: each score's bin found among kept edges (one ``searchsorted``).

    The edges reproduce :func:`_bin_positions` exactly for every value of the scores' dtype
    (:mod:`~torchmetrics_ext.functional.auc._bin_edges`), so the bins are the CPU path's, in two
    launches for one task (the lookup, the label offsets added in place) instead of one per
    arithmetic pass. The search puts NaN after every edge: an unchecked NaN score counts in the
    last bin, as on the CPU path, with no pass of its own.
    """
    edges = constant_on(_edges(preds.dtype, num_bins, logit_range, from_logits, bin_space), preds.device)
    scores = preds if preds.is_contiguous() else preds.contiguous()  # else searchsorted copies and warns
    index = torch.searchsorted(edges, scores, right=True, out_int32=int32)
    num_tasks = preds.shape[0]
    # labels of a type the integer add takes as they are, others (floating, unsigned past 8 bits) converted
    labels = target if target.dtype in _ADDED_AS_IS else target.detach().to(index.dtype)
    index.add_(labels, alpha=num_tasks * num_bins)
    if num_tasks > 1:
        index += _task_offsets(num_tasks, num_bins, preds.device, index.dtype)
    return index


_VECTOR_STEP = 64  # entries: a multiple of two vectors of any dtype on any CPU (AVX-512: 2 x 16 float32)
_ADDED_AS_IS = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _lane_bins(
    values: Tensor, num_bins: int, logit_range: tuple[float, float], from_logits: bool, bin_space: str
) -> Tensor:
    """:func:`_bin_positions` of ``(M,)`` values, each evaluated in a lane of ATen's vector loop.

    In calls of 2**15 entries, the last one padded with its last value to a multiple of 64: one
    ATen loop without threads, a whole number of the loop's steps, no scalar tail (a float64 log or
    sigmoid can round one ulp apart there, and so move a score lying within one rounding of an
    edge): the bins of (nearly) every score of a contiguous batch on the CPU path.
    """
    size = values.numel()
    padded = torch.cat([values, values[-1:].expand(-size % _VECTOR_STEP)])
    rule = (num_bins, logit_range, from_logits, bin_space)
    parts = [_bin_positions(part.unsqueeze(0), *rule, validated=True).squeeze(0) for part in padded.split(1 << 15)]
    return torch.cat(parts)[:size]


@functools.lru_cache(maxsize=64)
def _edges(
    dtype: torch.dtype, num_bins: int, logit_range: tuple[float, float], from_logits: bool, bin_space: str
) -> Tensor:
    """The ``(B - 1,)`` CPU edges of :func:`_bin_positions` for scores of ``dtype`` (made once per rule).

    The rule is evaluated by :func:`_lane_bins`, once per probed value: about 10 ms at 10,000
    bins and 1.5 s at 1,000,000 (float64 scores) on one CPU core, at the first device-path update
    of a setting; 64 settings are kept.
    """
    domain = (-math.inf, math.inf) if from_logits else (0.0, 1.0)
    rule = functools.partial(
        _lane_bins, num_bins=num_bins, logit_range=logit_range, from_logits=from_logits, bin_space=bin_space
    )
    with torch.inference_mode(False):  # read by later steps outside inference mode too
        return smallest_reaching(num_bins, dtype, domain, rule)


def _logits_inside(bounds: tuple[float, ...], from_logits: bool, logit_range: tuple[float, float]) -> bool:
    """Whether predictions within ``bounds`` (known ``(min, max)``, ``()`` if unknown) need no clip to the range.

    True when their logits lie inside the range by a margin (``1e-9`` of its width) far above the
    rounding of any logit: every position ``(z - lo) B / (hi - lo)`` is then in ``[0, B)``, where
    the clip to ``[0, B - 1]`` changes no floor (the same bins, one pass fewer).
    """
    if not bounds:
        return False
    low, high = bounds[0], bounds[1]
    if not from_logits:
        if not (0 < low and high < 1):
            return False
        low, high = math.log(low / (1 - low)), math.log(high / (1 - high))
    lo, hi = logit_range
    margin = 1e-9 * (hi - lo)
    return lo + margin < low and high < hi - margin


_INT32_MAX = 2**31 - 1
_OFFSETS: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}


def _task_offsets(num_tasks: int, num_bins: int, device: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """``(T, 1)`` offsets ``t * B`` of each task's bins, made once per device and dtype (no kernel per update).

    In the dtype of the indices they are added to (float64 positions in :func:`_binned_index`,
    exact below 2**53): an operand of another dtype makes the broadcast add a mixed-dtype loop,
    about 1.5 times as slow.
    """
    key = (num_tasks, num_bins, device, dtype)
    offsets = _OFFSETS.get(key)
    if offsets is None:
        with torch.inference_mode(False):  # read by later steps outside inference mode too
            offsets = torch.arange(0, num_tasks * num_bins, num_bins, device=device, dtype=dtype).unsqueeze(1)
        _OFFSETS[key] = offsets
    return offsets


_ONES: dict[torch.device, Tensor] = {}
_KEPT_ONES = 1 << 20  # float64 ones kept per device at most (8 MB)
_LAST_ONES: dict[torch.device, tuple[int, Tensor]] = {}  # per device: the size and view last returned


def _unit_weights(device: torch.device, size: int) -> Tensor:
    """``size`` float64 ones, read-only: a slice of ones kept per device (no kernel), a broadcast view past 2**20.

    ``scatter_add_`` reads a materialized source about 30% faster than a broadcast one (24,576
    entries: 37 vs 51 us on the CPU); the ones are made once per device and size class.
    """
    last = _LAST_ONES.get(device)
    if last is not None and last[0] == size:  # the size of the previous call (each step's, mostly): no new view
        return last[1]
    ones = _ONES.get(device)
    wanted = min(size, _KEPT_ONES)
    with torch.inference_mode(False):  # read by later steps outside inference mode too
        if ones is None or ones.numel() < wanted:
            length = max(1024, 1 << (wanted - 1).bit_length())
            ones = _ONES[device] = torch.ones(length, dtype=torch.float64, device=device)
        view = ones[:size] if size <= ones.numel() else ones[:1].expand(size)
    _LAST_ONES[device] = (size, view)
    return view


def _binned_update(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    num_bins: int,
    logit_range: tuple[float, float],
    from_logits: bool,
    out: Tensor | None = None,
    bin_space: str = "logit",
    validated: bool = False,
) -> Tensor:
    """``(2, T, B)`` float64 histogram (negative, positive label weight per bin) of one ``(T, N)`` batch.

    With ``out`` (a metric's histogram state) the batch is added to it in place and ``out`` is
    returned: one ``scatter_add_``, no per-batch histogram allocated, zeroed and added
    (``bincount`` with ``minlength`` does all three, about four times slower at 10k bins).
    ``validated``: the batch was checked (see :func:`_binned_index`; unchecked NaN scores count in the last bin).
    """
    hist = torch.zeros(2, preds.shape[0], num_bins, dtype=torch.float64, device=preds.device) if out is None else out
    int64 = on_device_path(preds)  # int64 indices at once on a device (int32 converts faster on the CPU)
    rule = (num_bins, logit_range, from_logits, bin_space, int64, validated)
    _add_entries(hist, *_binned_entries(preds, target, weights, *rule))
    return hist


def _add_entries(hist: Tensor, index: Tensor, values: Tensor | None) -> None:
    """Add histogram entries into the float64 ``hist`` in place (one ``scatter_add_`` or ``index_add_``).

    ``index``: flat positions in ``hist`` (any shape, int32 or int64); ``values``: one per entry
    (same shape, or a broadcast view), ``None`` for ones. ``scatter_add_`` takes int64 indices
    only; int32 ones (the CPU path's, a window's kept ones) go to ``index_add_`` as they are: no
    widened copy (a launch on a device), and on the CPU as fast or faster (65,536 entries: equal;
    8: 0.7 against 2.2 us; 2**20 on two threads: 1.3 against 5.0 ms). Both add each bin's entries
    in order on the CPU: the same sums to the bit.
    """
    index = index if index.ndim == 1 else index.reshape(-1)
    values = _unit_weights(hist.device, index.numel()) if values is None else values.reshape(-1)
    if values.dtype != hist.dtype:  # a histogram cast by `set_dtype`
        values = values.to(hist.dtype)
    if index.dtype == torch.int32:
        hist.view(-1).index_add_(0, index, values)
    else:
        hist.view(-1).scatter_add_(0, index.long(), values)


def _binned_entries(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    num_bins: int,
    logit_range: tuple[float, float],
    from_logits: bool,
    bin_space: str = "logit",
    int64: bool = False,
    validated: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """What one ``(T, N)`` batch adds to the flattened ``(2, T, B)`` histogram, per sample and task.

    Returns:
        The flat bin index (``(T, N)``, int32 unless the histogram has 2**31 entries or more or
        ``int64``: see :func:`_binned_index`) and the float64 weight (``(T, N)``, possibly a broadcast view;
        ``None`` when unweighted: all ones), detached: a histogram is not differentiable, and a
        caller may keep the entries (a window's ring) and add them with ``out=`` kernels, which
        refuse tensors that require grad.
    """
    index = _binned_index(preds, target, num_bins, logit_range, from_logits, bin_space, int64, validated)
    values = None if weights is None else weights.detach().to(torch.float64).expand(preds.shape)
    return index, values


def _compacted_histogram(
    index: Tensor, values: Tensor | None, num_bins: int, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The ``(2, T, N)`` histogram of one batch's non-empty bins only, from its ``(T, N)`` entries.

    ``index`` and ``values`` as :func:`_binned_entries` returns them for ``B = num_bins`` bins;
    ``dtype`` the histogram's (float64 unless cast by ``set_dtype``).
    Each task's distinct bins are numbered in increasing order (one sort per task) and its
    entries added to their bin's number instead of the bin: the same non-empty bins, in the same
    order and with the same sums to the bit (each bin's entries added in the same order), the
    empty ones left out but for zeros at the end. Empty bins add nothing to the curve, so
    :func:`_binned_curve_stats` of it is the batch's binned value (to the rounding of the final
    sums) at O(T N log N), whatever ``B``: ``forward``'s batch value when ``N`` is small against ``B``.
    """
    num_tasks, size = index.shape
    span = num_tasks * num_bins  # the positive class's offset in the flat index
    positive = index >= span
    key = torch.where(positive, index - span, index)  # task offset + bin: ordered within a task's row
    ordered, order = key.sort(dim=-1)
    number = torch.zeros(index.shape, dtype=torch.int64, device=index.device)
    number[:, 1:] = torch.cumsum(ordered[:, 1:] != ordered[:, :-1], dim=-1)  # each bin's rank among its row's bins
    flat = torch.empty_like(number).scatter_(1, order, number)
    rows = torch.arange(0, num_tasks * size, size, device=index.device).unsqueeze(1)
    flat.add_(positive.long().mul_(num_tasks * size)).add_(rows)
    compact = torch.zeros(2, num_tasks, size, dtype=dtype, device=index.device)
    # int32 indices take `index_add_` as the histogram's update does (the same op and order of adds)
    _add_entries(
        compact, flat.int() if index.dtype == torch.int32 and 2 * num_tasks * size <= _INT32_MAX else flat, values
    )
    return compact


def _unit_scaled(hist: Tensor) -> Tensor:
    """The float64 ``(2, T, B)`` histogram times a power of two per task, its larger class total then in [0.5, 1).

    AUC and AP are ratios of sums of products of bin weights: one scale per task changes neither
    (the products ``P N`` and ``neg * cp`` scale alike), and a power of two changes no bit of a
    normal number. Without it, weights near 1e160 overflow ``P N`` (``nan``) and weights near
    1e-170 underflow it; subnormal totals are scaled up too.
    """
    hist = hist.to(torch.float64)
    totals = hist.sum(-1).amax(0)  # (T,) the larger class total of each task
    _, exponent = torch.frexp(totals)
    # in two factors: a subnormal total (weights near 1e-320) needs up to 2**1074, past float64's range
    half = torch.div(-exponent, 2, rounding_mode="floor").unsqueeze(-1)
    rest = -exponent.unsqueeze(-1) - half
    return hist * power_of_two(half, hist.dtype) * power_of_two(rest, hist.dtype)


# tasks per block of the binned compute: as many as keep each of its (T_block, B) temporaries at or
# below this many elements (one task at least); the default 10k bins fit 104 tasks in one block
_BINNED_BLOCK_ELEMENTS = 1 << 20


def _binned_curve_stats(hist: Tensor) -> CurveStats:
    """``(P, N, auc_num, ap_num)`` per task from a ``(2, T, B)`` histogram (one curve point per bin).

    Computed on the histogram scaled per task by a power of two (:func:`_unit_scaled`): ``P`` and
    ``N`` come out scaled alike, which leaves AUC (``auc_num / (P N)``) and AP (``ap_num / P``) as they are.

    Tasks are taken in blocks of at most :data:`_BINNED_BLOCK_ELEMENTS` histogram entries per class
    (one task at least): a pass holds about eight copies of its slice of the histogram at its peak,
    so one pass over every task needed four to five times the histogram's own 16 bytes per bin and
    task (1M bins and 256 tasks: a 4 GB state and 16 GB or more at ``compute``). A block's peak is
    about 128 MB; the number of blocks grows with ``T B`` (the work), not with ``T``.
    """
    num_tasks, num_bins = hist.shape[1], hist.shape[2]
    per_block = max(1, _BINNED_BLOCK_ELEMENTS // max(num_bins, 1))
    if per_block >= num_tasks:
        return _binned_block_stats(hist)
    parts = [_binned_block_stats(hist[:, t0 : t0 + per_block]) for t0 in range(0, num_tasks, per_block)]
    pos_total, neg_total, auc_num, ap_num = (torch.cat(part) for part in zip(*parts))
    return pos_total, neg_total, auc_num, ap_num


def _binned_block_stats(hist: Tensor) -> CurveStats:
    """:func:`_binned_curve_stats` of one block of tasks, in one pass."""
    hist = _unit_scaled(hist)
    pos, neg = hist[1].flip(-1), hist[0].flip(-1)
    cp, cn = pos.cumsum(-1), neg.cumsum(-1)
    auc_num = (neg * (2 * cp - pos)).sum(-1) * 0.5
    denom = cp + cn
    ap_num = torch.where(denom > 0, pos * cp / torch.where(denom > 0, denom, 1.0), 0.0).sum(-1)
    return cp[:, -1], cn[:, -1], auc_num, ap_num


def _binned_error_bound(hist: Tensor) -> Tensor:
    r"""Bound on ``|binned AUC - exact AUC|``: half the share of (positive, negative) pairs in one bin.

    .. math:: \frac{1}{2 P N}\sum_b P_b N_b
    """
    hist = _unit_scaled(hist)  # the bound is a ratio of products of weights, as AUC is
    pos, neg = hist[1], hist[0]
    pairs = pos.sum(-1) * neg.sum(-1)
    return 0.5 * (pos * neg).sum(-1) / torch.where(pairs > 0, pairs, 1.0)


# ----------------------------------------------------------------------------- compute


_HOST_TASKS = 16  # at most this many float64 CPU tasks: the value from host numbers (no tensor ops)


def _on_host(*stats: Tensor) -> bool:
    """Whether ``stats`` are a few float64 CPU values, cheaper to divide on the host than by tensor ops."""
    return all(s.is_cpu and s.dtype == torch.float64 and s.ndim == 1 for s in stats) and (
        stats[0].shape[0] <= _HOST_TASKS
    )


def _clamped_ratio(num: float, den: float) -> float:
    """``num / den`` clamped to [0, 1] as the tensor ops round it: IEEE division, ``x / 0`` is ``±inf`` or ``nan``."""
    if den == 0:  # Python raises where IEEE gives inf or nan: the CPU's own division (its nan's sign too)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.float64(num) / np.float64(den))
    else:
        ratio = num / den
    return min(max(ratio, 0.0), 1.0)  # nan stays nan, as with `clamp_`


# why AUC is undefined where some weight was seen (none seen at all: NO_SAMPLES)
_ONE_CLASS = "the labels seen hold a single class (or no weight)"


def _auc_compute(pos_total: Tensor, neg_total: Tensor, auc_num: Tensor, name: str = "AUC") -> Tensor:
    """``auc_num / (P N)`` clamped to [0, 1]; ``nan`` plus a warning for tasks without both classes.

    The numerator (cumulative sums in score order) and ``P N`` (sums in sample order) round
    differently: a perfect ranking could give ``1 + 2**-52``. The clamp changes no value inside [0, 1].
    A few float64 CPU tasks are divided as Python floats (the same IEEE operations, one host read
    instead of some ten tensor calls).
    """
    if _on_host(pos_total, neg_total, auc_num):
        num_tasks = pos_total.shape[0]
        values = torch.cat([pos_total, neg_total, auc_num]).tolist()
        flags = [p <= 0 or n <= 0 for p, n in zip(values[:num_tasks], values[num_tasks : 2 * num_tasks])]
        totals = zip(values[:num_tasks], values[num_tasks : 2 * num_tasks])
        unseen = [p <= 0 and n <= 0 for p, n in totals] if any(flags) else None  # only to tell the reasons apart
        warn_undefined_flags(flags, name, _ONE_CLASS, pos_total.device, unseen=unseen)
        out = [
            math.nan if bad else _clamped_ratio(a, p * n)
            for bad, p, n, a in zip(
                flags, values[:num_tasks], values[num_tasks : 2 * num_tasks], values[2 * num_tasks :]
            )
        ]
        return torch.tensor(out, dtype=torch.float64, device=pos_total.device)  # not the default device
    undefined = (pos_total <= 0) | (neg_total <= 0)
    warn_undefined(undefined, name, _ONE_CLASS, unseen=lambda: (pos_total <= 0) & (neg_total <= 0))
    value = (auc_num / torch.where(undefined, 1.0, pos_total * neg_total)).clamp_(0.0, 1.0)
    return torch.where(undefined, math.nan, value)


def _auprc_compute(pos_total: Tensor, ap_num: Tensor, name: str = "AUPRC", neg_total: Tensor | None = None) -> Tensor:
    """``ap_num / P`` clamped to [0, 1] (see :func:`_auc_compute`); ``nan`` plus a warning without positive weight.

    ``neg_total`` (the label-0 weight) tells a task that saw no weight at all (:data:`NO_SAMPLES`).
    """
    if _on_host(pos_total, ap_num):
        num_tasks = pos_total.shape[0]
        values = torch.cat([pos_total, ap_num]).tolist()
        flags = [p <= 0 for p in values[:num_tasks]]
        unseen_flags = None if neg_total is None or not any(flags) else (neg_total <= 0).tolist()
        warn_undefined_flags(flags, name, "no positive label weight", pos_total.device, unseen=unseen_flags)
        out = [math.nan if bad else _clamped_ratio(a, p) for bad, p, a in zip(flags, values, values[num_tasks:])]
        return torch.tensor(out, dtype=torch.float64, device=pos_total.device)  # not the default device
    undefined = pos_total <= 0
    unseen = None if neg_total is None else lambda: neg_total <= 0
    warn_undefined(undefined, name, "no positive label weight", unseen=unseen)
    return torch.where(undefined, math.nan, (ap_num / torch.where(undefined, 1.0, pos_total)).clamp_(0.0, 1.0))


def _format_curve_inputs(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    from_logits: bool,
    validate_args: bool,
    dtype: torch.dtype,
    float32_weights: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check ``from_logits``, then the batch (when asked): ``(T, N)`` preds and labels, weights, all ``dtype``.

    The bin settings are checked (and read as Python values) by the caller, with :func:`_check_bins`.

    ``float32_weights``: the caller keeps the weights as float32 (exact AUC/AUPRC), so non-zero
    float64 weights outside float32's normal range are rejected; the curves and the binned mode
    keep float64 weights and pass ``False``.
    """
    check_flag("from_logits", from_logits)
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        None,
        target_domain="binary",
        from_logits=from_logits,
        validate=validate_args,
        dtype=dtype,
        float32_weights=float32_weights,
        target_required=True,
    )
    return p, t, w  # type: ignore[return-value]


def _curve_stats(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None,
    num_bins: int | None,
    logit_range: tuple[float, float],
    from_logits: bool,
    validate_args: bool,
    bin_space: str = "logit",
) -> CurveStats:
    num_bins, logit_range, bin_space = _check_bins(num_bins, logit_range, bin_space)
    dtype = torch.float32 if num_bins is None else torch.float64
    exact = num_bins is None  # exact mode keeps float32 weights
    p, t, w = _format_curve_inputs(preds, target, weights, from_logits, validate_args, dtype, exact)
    if num_bins is None:
        return _exact_curve_stats([p.T], [_signed_weights(t, w).T], p.shape[0])
    hist = _binned_update(p, t, w, num_bins, logit_range, from_logits, bin_space=bin_space, validated=validate_args)
    return _binned_curve_stats(hist)


@checks_validate_args
def auc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    num_bins: int | None = None,
    logit_range: tuple[float, float] = DEFAULT_LOGIT_RANGE,
    bin_space: str = "logit",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Area under the ROC curve, weighted and tie-aware (scikit-learn's ``roc_auc_score``).

    .. math::
        \mathrm{AUC} = \frac{1}{P N}\sum_{i: y_i=1}\sum_{j: y_j=0} w_i w_j
        \left(\mathbb{1}[s_i > s_j] + \tfrac12\,\mathbb{1}[s_i = s_j]\right)

    with :math:`P = \sum_{y_i=1} w_i`, :math:`N = \sum_{y_j=0} w_j`: the trapezoidal area under
    the ROC curve with one point per distinct score.

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``. The exact
            mode keeps them as float32: non-zero float64 weights must lie in float32's normal
            range ``[1.18e-38, 3.4e38]`` (rescale them: the value depends on their scale only through
            that rounding, about 6e-8 relative).
        num_bins: ``None`` for the exact value; ``B`` to round scores to ``B`` bins uniform in
            logit space over ``logit_range`` (see :class:`~torchmetrics_ext.AUC`).
        logit_range: ``(low, high)`` logits covered by the bins; scores outside fall in the end bins
            (binned ``"logit"`` bins only: another value where it would be ignored is a ``ValueError``).
        bin_space: ``"logit"`` (default) or ``"probability"``: ``B`` bins uniform in probability
            over [0, 1] instead, TorchRec's lifetime AUPRC binning (binned mode only).
        from_logits: ``preds`` are logits (the exact value does not depend on it).
        validate_args: check inputs before computing. Unchecked binned scores above the bins' range
            count in the last bin, those below it in the first, and NaN in the last (see
            :class:`~torchmetrics_ext.AUC`).

    Returns:
        A float64 scalar for 1-D input, ``(T,)`` otherwise; ``nan`` (with an
        ``UndefinedMetricWarning``) for a task whose labels hold a single class.

    Raises:
        ValueError: on bad shapes, NaN/inf scores, probabilities outside [0, 1], non-binary labels,
            negative weights (or, exact, non-zero ones outside float32's range), or a bad
            ``num_bins``/``logit_range``/``bin_space`` (or one that would be ignored).
        TypeError: on non-tensor inputs or non-floating ``preds``.

    Note:
        Scores are compared as float32: scores that differ only beyond float32 precision tie.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import auc
        >>> auc(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0, 0, 1, 1]))
        tensor(0.8750, dtype=torch.float64)
    """
    single = single_task(preds)
    pos, neg, auc_num, _ = _curve_stats(
        preds, target, weights, num_bins, logit_range, from_logits, validate_args, bin_space
    )
    value = _auc_compute(pos, neg, auc_num)
    return value.squeeze(0) if single else value


@checks_validate_args
def auprc(
    preds: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    *,
    num_bins: int | None = None,
    logit_range: tuple[float, float] = DEFAULT_LOGIT_RANGE,
    bin_space: str = "logit",
    from_logits: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Average precision, equal to scikit-learn's ``average_precision_score`` (weighted, tie-aware).

    .. math::
        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k, \qquad
        R_k = \frac{TP_k}{P}, \quad P_k = \frac{TP_k}{TP_k + FP_k}

    over the curve points ``k``, one per distinct score in decreasing order, with ``TP_k`` /
    ``FP_k`` the positive / negative weight scored at or above that score (no interpolation).

    Args:
        preds: ``(N,)`` or ``(T, N)`` probabilities (logits with ``from_logits=True``).
        target: binary labels in {0, 1}, same shape as ``preds``.
        weights: optional non-negative sample weights, shape of ``preds`` or ``(N,)``. The exact
            mode keeps them as float32: non-zero float64 weights must lie in float32's normal
            range ``[1.18e-38, 3.4e38]`` (rescale them: the value depends on their scale only through
            that rounding, about 6e-8 relative).
        num_bins: ``None`` for the exact value; ``B`` for the binned value (see ``auc``).
        logit_range: ``(low, high)`` logits covered by the bins.
        bin_space: ``"logit"`` or ``"probability"`` (see ``auc``).
        from_logits: ``preds`` are logits.
        validate_args: check inputs before computing (unchecked binned scores: as for :func:`auc`).

    Returns:
        A float64 scalar for 1-D input, ``(T,)`` otherwise; ``nan`` (with an
        ``UndefinedMetricWarning``) for a task without positive label weight. With positives only
        the value is 1, as in scikit-learn.

    Raises:
        ValueError: as for :func:`auc`.
        TypeError: as for :func:`auc`.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import auprc
        >>> auprc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        tensor(0.8333, dtype=torch.float64)
    """
    single = single_task(preds)
    pos, neg, _, ap_num = _curve_stats(
        preds, target, weights, num_bins, logit_range, from_logits, validate_args, bin_space
    )
    value = _auprc_compute(pos, ap_num, neg_total=neg)
    return value.squeeze(0) if single else value
