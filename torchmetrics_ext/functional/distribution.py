r"""Distribution statistics from a mergeable log-bucket sketch (DDSketch-style).

The sketch keeps a fixed-size float64 vector of bucket counts. With relative accuracy
:math:`\alpha` and :math:`\gamma = (1+\alpha)/(1-\alpha)`, a value :math:`x` with
:math:`|x| \ge` ``min_value`` falls in bucket :math:`k = \lceil \log_\gamma |x| \rceil` of its sign,
which covers :math:`(\gamma^{k-1}, \gamma^k]` and is represented by
:math:`\hat x = \operatorname{sign}(x)\, 2\gamma^k/(\gamma+1)`, so that
:math:`|\hat x - x| \le \alpha |x|`. Values with :math:`|x| <` ``min_value`` share one zero
bucket (represented by 0, absolute error below ``min_value``); values beyond ``max_value`` go to
the last bucket of their sign (no error bound there, except that every estimate is clipped to the
exact min/max). Buckets are laid out in value order ``[negative (largest magnitude first), zero,
positive]`` so a cumulative sum is a rank function. Merging two sketches (batches, ranks) is a
sum of their count vectors, so percentiles across ranks are those of all the data.

Percentiles follow ``numpy.percentile``'s default (linear) definition: the value at position
:math:`h = q (n-1)` of the sorted data, interpolated between ranks :math:`\lfloor h \rfloor` and
:math:`\lfloor h \rfloor + 1`. Each of the two ranks is estimated by its bucket's representative
(rank 0 and rank :math:`n-1` are the exact min and max), so the result is within
:math:`\alpha` relative error of ``np.percentile`` when the two neighbours have the same sign and
lie in ``[min_value, max_value]``.

The mean and the standard deviation come from the float64 sum and sum of squares (states that
merge by addition), kept at one of three fixed scales so that no finite float64 magnitude
underflows or overflows them (plain squares underflow below ~1e-154 and overflow above ~1e154):
a batch whose largest magnitude :math:`M` is in :math:`(2^{-485}, 2^{485}]`
(``LARGEST_MAGNITUDE``) adds its sums as they are; a batch with :math:`M \le 2^{-485}` (or
:math:`M > 2^{485}`) adds the sums of its values times :math:`2^{600}` (or :math:`2^{-600}`) to
a band of their own (``scaled_sums``). Every such sum of up to :math:`2^{53}` values (the exact
range of the float64 count) is a normal float64; ``compute`` brings the bands to the scale of
the largest magnitude seen (powers of two: exact), so the mean and the std of values of any
finite magnitude (1e-300, 1e306) are as accurate as those of values near 1 (a mean or std that
is itself subnormal has the precision float64 gives it; one beyond the largest float64 is
``inf``, as in NumPy).
A metric keeps the sums compensated (each next to the running sum of its rounding
errors, see :func:`~torchmetrics_ext.utilities.summation.compensated_add_`), so their error is
that of one update however many updates they collect.
The sums are of :math:`x_i - c` for a shift :math:`c`, the first value (0 for a first batch with
both signs; :func:`distribution` takes its batch's, a metric keeps its first until reset), so
:math:`\sum (x-c)^2 - n(\bar x - c)^2` holds the spread rather than cancelling against a large
mean: relative error about :math:`10^{-16} ((\bar x - c)/s)^2`, at most about :math:`2n \cdot
10^{-16}` as :math:`c` lies between the min and the max. Sums about another shift are moved to
it exactly (:func:`_reshift_parts`); a ``Windowed``'s keeps its first for good (``pinned``). Sums about 0
(a checkpoint saved before the shift) cancel as :math:`\sum x^2 - n\bar x^2` does: relative error about
:math:`10^{-16} (\bar x / s)^2`, and ``nan`` with a warning once the spread is below ~1e-6 of the
mean (equal values give exactly 0).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property, lru_cache
from typing import NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from torchmetrics_ext.utilities.checks import as_real, check_flag, check_tensor, sequence_items
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import refusal
from torchmetrics_ext.utilities.formatting import exact_text
from torchmetrics_ext.utilities.summation import compensated_add_
from torchmetrics_ext.utilities.warnings import SketchRangeWarning, _named, warn_at_user, warn_undefined

__all__ = ["LARGEST_MAGNITUDE", "SketchBatch", "SketchSpec", "distribution", "percentile_key"]

DEFAULT_PERCENTILES: tuple[float, ...] = (5.0, 50.0, 95.0)
# the sum of squares of up to 2**53 values of at most this magnitude is at most 2**1023: finite.
# A batch whose largest magnitude M is in (1 / LARGEST_MAGNITUDE, LARGEST_MAGNITUDE] (band 0) adds
# its sums as they are; one with M below (band -1) or above (band 1) adds those of its values times
# 2**(-_BAND_SHIFT * band) to `scaled_sums`: scaled, M is in [2**-474, 2**115] or (2**-115, 2**424),
# so in every band the square of a value within 2**-26 of M is a normal float64 and no sum of up to
# 2**53 squares overflows
LARGEST_MAGNITUDE = 2.0**485
_BAND_SHIFT = 600


@dataclass(frozen=True)
class SketchSpec:
    r"""Geometry of the log-bucket sketch.

    Attributes:
        relative_accuracy: :math:`\alpha`, the relative error bound of each estimate, in (0, 1).
        min_value: smallest magnitude with a relative error bound; smaller magnitudes count as 0.
        max_value: largest magnitude with a relative error bound.

    Examples:
        A coarse sketch, :math:`\gamma = (1 + \alpha) / (1 - \alpha) = 3`: positive buckets
        :math:`(3^{k-1}, 3^k]` for :math:`k = 0..5` (1 to 100 and a bucket beyond), as many
        negative ones and the zero bucket; each represented by :math:`2 \cdot 3^k / (3 + 1)`,
        within 50% of every value it holds.

        >>> from torchmetrics_ext.functional.distribution import SketchSpec
        >>> spec = SketchSpec(relative_accuracy=0.5, min_value=1.0, max_value=100.0)
        >>> spec.size
        13
        >>> spec.representatives()[6:]  # the zero bucket, then the positive ones
        tensor([  0.0000,   0.5000,   1.5000,   4.5000,  13.5000,  40.5000, 121.5000],
               dtype=torch.float64)
        >>> SketchSpec(relative_accuracy=1.5)
        Traceback (most recent call last):
        ValueError: Expected `relative_accuracy` in (0, 1), got 1.5.
    """

    relative_accuracy: float = 0.01
    min_value: float = 1e-9
    max_value: float = 1e12

    def __post_init__(self) -> None:
        a, lo, hi = (as_real(v) for v in (self.relative_accuracy, self.min_value, self.max_value))
        if not (a is not None and 0 < a < 1):
            raise refusal(
                f"Expected `relative_accuracy` in (0, 1), got {self.relative_accuracy!r}.", wrong_type=a is None
            )
        if not (lo is not None and hi is not None and 0 < lo < hi < math.inf):
            raise refusal(
                f"Expected 0 < `min_value` < `max_value` < inf, got min_value={self.min_value!r}, "
                f"max_value={self.max_value!r}.",
                wrong_type=lo is None or hi is None,
            )
        for name, value in (("relative_accuracy", a), ("min_value", lo), ("max_value", hi)):
            object.__setattr__(self, name, float(value))  # plain floats (NumPy scalars and 0-dim tensors accepted)

    @cached_property
    def log_gamma(self) -> float:
        r""":math:`\log\gamma`, the width of a bucket on the log scale."""
        a = self.relative_accuracy
        return math.log((1 + a) / (1 - a))

    @cached_property
    def first_key(self) -> int:
        """Key of the first bucket above zero (the one holding ``min_value``)."""
        return math.ceil(math.log(self.min_value) / self.log_gamma)

    @cached_property
    def buckets_per_sign(self) -> int:
        """Number of buckets of each sign."""
        return math.ceil(math.log(self.max_value) / self.log_gamma) - self.first_key + 1

    @property
    def size(self) -> int:
        """Length of the count vector: two signs plus the zero bucket."""
        return 2 * self.buckets_per_sign + 1

    def representatives(self, device: torch.device | None = None) -> Tensor:
        """Representative value of every bucket, in layout order (float64; cached per device)."""
        return _sketch_representatives(self, torch.device(device or "cpu"))


def percentile_key(p: float) -> str:
    """Output name of percentile ``p``: ``p05``, ``p50``, ``p95``, ``p99.9``; exact, so never two alike.

    A whole percentile has two digits at least (``p05``, ``p100``); any other is written with six
    significant digits when they give it back (``p99.9``) and exactly otherwise (``p99.99999``,
    ``p12.3456789``, not ``p100`` and ``p12.3457``: :func:`~torchmetrics_ext.utilities.formatting.exact_text`).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import distribution
        >>> from torchmetrics_ext.functional.distribution import percentile_key
        >>> print(*(percentile_key(p) for p in (5, 50.0, 99.9, 100, 99.99999)))
        p05 p50 p99.9 p100 p99.99999
        >>> list(distribution(torch.arange(1.0, 11.0), percentiles=(5, 99.9)))  # the keys of the result
        ['mean', 'min', 'max', 'std', 'p05', 'p99.9']
    """
    return f"p{int(p):02d}" if float(p).is_integer() else f"p{exact_text(float(p))}"


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    values = [as_real(p) for p in sequence_items("percentiles", percentiles) or ()]
    if not values or not all(p is not None and 0 <= p <= 100 for p in values):
        raise refusal(
            f"Expected `percentiles` to be a non-empty sequence of numbers in [0, 100], got {percentiles!r}.",
            wrong_type=sequence_items("percentiles", percentiles) is None or None in values,
        )
    floats = tuple(float(p) for p in values)  # type: ignore[arg-type]
    if len({percentile_key(p) for p in floats}) != len(floats):
        raise ValueError(f"Expected distinct `percentiles`, got {percentiles!r}.")
    return floats


@lru_cache(maxsize=32)
def _sketch_representatives(spec: SketchSpec, device: torch.device) -> Tensor:
    keys = torch.arange(spec.buckets_per_sign, dtype=torch.float64) + spec.first_key
    gamma = math.exp(spec.log_gamma)
    pos = 2.0 * torch.exp(keys * spec.log_gamma) / (gamma + 1.0)
    # gamma**k overflows for the top buckets of a max_value near float64's largest (1e308): their
    # representatives, below it, in one exponential (the others keep their values bit for bit)
    pos = torch.where(pos.isinf(), torch.exp(keys * spec.log_gamma + math.log(2.0 / (gamma + 1.0))), pos)
    return torch.cat([-pos.flip(0), pos.new_zeros(1), pos]).to(device)


@lru_cache(maxsize=32)
def _sketch_edges(spec: SketchSpec, device: torch.device) -> Tensor:
    """Sorted bucket boundaries: ``searchsorted(edges, x)`` is the layout index of ``x``.

    Bucket ``j`` holds ``edges[j-1] < x <= edges[j]``: negative buckets (largest magnitude first),
    the zero bucket ``(-min_value, min_value)``, then positive buckets ``(gamma^(k-1), gamma^k]``;
    the first positive/negative bucket also takes ``[min_value, gamma^first_key]`` and the last
    one everything beyond.
    """
    b = spec.buckets_per_sign
    keys = torch.arange(b - 1, dtype=torch.float64) + spec.first_key  # upper edges of positive buckets 0..b-2
    pos = torch.exp(keys * spec.log_gamma)
    below_min = math.nextafter(spec.min_value, 0.0)
    edges = torch.cat([-pos.flip(0), torch.tensor([-spec.min_value, below_min], dtype=torch.float64), pos])
    return edges.to(device)


def _sketch_index(values: Tensor, spec: SketchSpec) -> Tensor:
    """Bucket index (layout order) of every value of a float64 1-D tensor."""
    return torch.searchsorted(_sketch_edges(spec, values.device), values)


def _add_to_sketch(bucket_counts: Tensor, index: Tensor) -> None:
    """Count each bucket index once, in place."""
    bucket_counts.index_add_(0, index, bucket_counts.new_ones(()).expand(index.numel()))


class SketchBatch(NamedTuple):
    r"""Sufficient statistics of one batch of values, ready to be folded into a sketch's states.

    Attributes:
        num_values: number of values.
        total: the sum of the values times :math:`2^{-600\,\text{band}}`.
        total_sq: the sum of their squares, of the values times :math:`2^{-600\,\text{band}}`.
        vmin: their minimum (``inf`` for no value).
        vmax: their maximum (``-inf`` for no value).
        bucket_index: the bucket index (layout order) of every value.
        band: -1 if the largest magnitude of the values minus ``shift`` is below :math:`2^{-485}`,
            1 if above :math:`2^{485}` (``LARGEST_MAGNITUDE``), else 0 (the default: the sums are
            plain); an ``int`` decided on the host, or a 0-dim integer tensor (device path: nothing read).
        shift: the value subtracted from every value before the sums (``total`` and ``total_sq``
            are those of :math:`x_i - \text{shift}`): the state's shift, or the batch's first value
            when the state holds none; a 0-dim tensor on the device path. 0 (the default): plain sums.

    Examples:
        What :class:`~torchmetrics_ext.aggregation.Distribution`'s ``summarize`` returns for plain
        values; a fresh metric shifts by the first value, 2: sums of 0, 2 and 7.

        >>> from torchmetrics_ext.aggregation import Distribution
        >>> metric = Distribution()
        >>> batch = metric.summarize([2.0, 4.0, 9.0])
        >>> batch.num_values, batch.total, batch.total_sq, batch.vmin, batch.vmax, batch.shift
        (3.0, 9.0, 53.0, 2.0, 9.0, 2.0)
        >>> metric.spec.representatives()[batch.bucket_index]  # each within 1% of its value
        tensor([1.9937, 4.0148, 8.9354], dtype=torch.float64)
        >>> metric.fold(batch)
        >>> metric.compute()["mean"]
        tensor(5., dtype=torch.float64)
    """

    num_values: float
    total: Tensor | float
    total_sq: Tensor | float
    vmin: Tensor | float
    vmax: Tensor | float
    bucket_index: Tensor
    band: Tensor | int = 0
    shift: Tensor | float = 0.0


def _magnitude_band(magnitude: float) -> int:
    """The band (-1, 0 or 1) of a batch whose largest magnitude is ``magnitude`` (see :class:`SketchBatch`)."""
    return -1 if magnitude <= 1.0 / LARGEST_MAGNITUDE else 1 if magnitude > LARGEST_MAGNITUDE else 0


@lru_cache(maxsize=32)
def _band_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(edges, scales, masks)`` of the bands on ``device``, each indexed by ``band + 1``.

    ``bucketize(M, edges) - 1`` is the band of largest magnitude ``M``; ``scales[band + 1]`` is
    :math:`2^{-600\,\text{band}}`; ``masks[band + 1]`` says which of ``(total/total_sq, band -1,
    band 1)`` takes the batch's sums.
    """
    edges = torch.tensor([1.0 / LARGEST_MAGNITUDE, LARGEST_MAGNITUDE], dtype=torch.float64)
    scales = torch.tensor([2.0**_BAND_SHIFT, 1.0, 2.0**-_BAND_SHIFT], dtype=torch.float64)
    masks = torch.tensor([[False, True, False], [True, False, False], [False, False, True]])
    return edges.to(device), scales.to(device), masks.to(device)


def _no_scaled_sums(total: Tensor) -> Tensor:
    """Zero ``scaled_sums`` (or their compensations) for a ``total`` state: what states saved before the bands hold."""
    return total.new_zeros((*total.shape, 4))


def _distribution_update(
    values: Tensor,
    spec: SketchSpec,
    count: Tensor | None = None,
    shift: Tensor | None = None,
    *,
    pinned: bool = False,
) -> SketchBatch:
    """Sufficient statistics of one batch: ``values`` is a non-empty float64 1-D tensor.

    The sums are of the values minus a shift, scaled to their band (:class:`SketchBatch`): with
    the states ``count`` and ``shift``, the state's shift once ``count`` is above 0 (``pinned``:
    once it is finite, whatever ``count``: a ``Windowed``'s, ``-inf`` until its first value), else
    the batch's first value (rounded to the shift's dtype; 0 if the batch has values of both signs);
    with ``shift`` alone, that shift; with ``count`` alone, 0 (plain sums); with neither, the
    first value. The band is decided on the host on the CPU path (a band-0 batch is summed as it
    is), by table look-ups on the device path.
    """
    vmin, vmax = torch.aminmax(values)
    band: Tensor | int
    batch_shift: Tensor | float
    ends: tuple[Tensor | float, Tensor | float] = (vmin, vmax)
    if on_device_path(values):
        # the first value (as the state keeps it), or 0 where the batch has both signs (see _host_shift)
        first = values[0] if shift is None else values[0].to(shift.dtype).to(values.dtype)
        first = torch.where((vmin > 0) | (vmax < 0), first, 0.0)
        if shift is None:
            batch_shift = values.new_zeros(()) if count is not None else first
        elif count is None:
            batch_shift = shift.to(values.dtype)
        else:
            held = torch.isfinite(shift) if pinned else count > 0
            batch_shift = torch.where(held, shift.to(values.dtype), first)
    else:
        low, high = vmin.item(), vmax.item()
        batch_shift = _host_shift(values, count, shift, low, high, pinned=pinned)
        ends = (low, high)  # read already: folded on the host (_fold_extremes)
    total, total_sq, band = _sums_about(values, ends, batch_shift)
    index = _sketch_index(values, spec)
    return SketchBatch(float(values.numel()), total, total_sq, *ends, index, band, batch_shift)


def _sums_about(
    values: Tensor, ends: tuple[Tensor | float, Tensor | float], shift: Tensor | float
) -> tuple[Tensor | float, Tensor | float, Tensor | int]:
    """The sum and sum of squares of ``values`` minus ``shift``, scaled to their band, and the band.

    ``ends``: the values' min and max, tensors on the device path (the band by table look-ups, never
    read on the host), host floats on the CPU path (a band-0 batch summed as it is; a few values
    summed exactly on the host, fewer kernels).
    """
    if on_device_path(values):
        vmin, vmax = cast(tuple[Tensor, Tensor], ends)
        edges, scales, _ = _band_constants(values.device)
        # the largest |x - shift|: inf where it overflows (band 1, whose sums subtract the scaled shift)
        band = torch.bucketize(torch.maximum(vmax - shift, shift - vmin), edges) - 1
        scale = scales.index_select(0, (band + 1).reshape(1))  # a look-up, never read on the host
        scaled = torch.where(band > 0, values * scale - shift * scale, (values - shift) * scale)
        return scaled.sum(), scaled.dot(scaled), band
    low, high = cast(tuple[float, float], ends)
    shift = cast(float, shift)
    host_band = _magnitude_band(max(high - shift, shift - low))
    if shift and values.numel() <= _HOST_MOMENTS:
        host_total, host_sq = _host_moments(values.tolist(), shift, host_band)
        return host_total, host_sq, host_band
    shifted = _shifted(values, shift, host_band)
    return shifted.sum(), shifted.dot(shifted), host_band


def _rebased(values: Tensor, batch: SketchBatch, count: Tensor, shift: Tensor) -> SketchBatch:
    """``batch`` (of ``values``, summed about its own shift) with its sums about the shift of pinned states.

    The shift is the states' once it is finite (``count`` aside: a ``Windowed``'s lifetime), else the
    batch's own; the sums are those :func:`_distribution_update` gives for these states (the same
    operations), the extremes and bucket indices are the batch's.
    """
    if on_device_path(values):
        own = torch.as_tensor(batch.shift, dtype=values.dtype, device=values.device)
        new: Tensor | float = torch.where(torch.isfinite(shift), shift.to(values.dtype), own)
        ends: tuple[Tensor | float, Tensor | float] = (batch.vmin, batch.vmax)
    else:
        new = shift.item()
        if not math.isfinite(new) or new == batch.shift:
            return batch
        ends = (float(batch.vmin), float(batch.vmax))
    total, total_sq, band = _sums_about(values, ends, new)
    return batch._replace(total=total, total_sq=total_sq, band=band, shift=new)


def _window_moments(rows: dict[str, Tensor]) -> dict[str, Tensor]:
    r"""One sketch's shift and sums from the rows of updates each summed about its own shift (a window's).

    Rows (oldest first) of ``count``, ``shift``, the sums and their compensations; every update's sums
    are brought to the shift :math:`r` of the oldest update holding values (a value of the window, or
    0 for a batch of both signs, between its min and max) with :math:`\sum(x-r) = \sum(x-c) + n\delta`,
    :math:`\sum(x-r)^2 = \sum(x-c)^2 + \delta(2\sum(x-c) + n\delta)`, :math:`\delta = c - r`, and added:
    every term is at most about :math:`n` times the window's squared range, so the std keeps the
    bound of sums about a value of the window, whatever the lifetime's first value. Where a scaled
    sum (magnitudes beyond :math:`2^{\pm 485}`) is in the window the same is done in fractions
    (:func:`_reshift_parts`, one host read per update held).
    """
    n, c = rows["count"], rows["shift"]
    held = n > 0
    zero = n.new_zeros(())
    if n.numel() == 0:  # no update: the identity
        sums = {name: rows[name].new_zeros(rows[name].shape[1:]) for name in _ROW_PARTS}
        return {"count": zero, "shift": torch.full_like(zero, -math.inf), **sums}
    first = held.to(torch.int8).argmax()
    r = c[first]
    scaled = rows["scaled_sums"] + rows["scaled_sums_compensation"]
    out = {"count": n.sum(), "shift": torch.where(held.any(), r, c.max())}
    exact = _exact_window_moments(rows, r) if bool(scaled.ne(0).any()) else None
    if exact is not None:
        encoded = _encoded_parts(*exact)
        dtype, device = n.dtype, n.device
        out["total"] = torch.tensor(encoded[0], dtype=dtype, device=device)
        out["total_sq"] = torch.tensor(encoded[1], dtype=dtype, device=device)
        out["scaled_sums"] = torch.tensor(encoded[2:6], dtype=dtype, device=device)
        out["total_compensation"] = torch.tensor(encoded[6], dtype=dtype, device=device)
        out["total_sq_compensation"] = torch.tensor(encoded[7], dtype=dtype, device=device)
        out["scaled_sums_compensation"] = torch.tensor(encoded[8:], dtype=dtype, device=device)
        return out
    s1 = rows["total"] + rows["total_compensation"]
    s2 = rows["total_sq"] + rows["total_sq_compensation"]
    delta = torch.where(held, c - r, 0.0)
    out["total"] = (s1 + n * delta).sum()
    out["total_sq"] = (s2 + delta * (2.0 * s1 + n * delta)).sum()
    out["scaled_sums"] = torch.zeros_like(rows["scaled_sums"][0])
    out["total_compensation"] = torch.zeros_like(out["total"])
    out["total_sq_compensation"] = torch.zeros_like(out["total"])
    out["scaled_sums_compensation"] = torch.zeros_like(out["scaled_sums"])
    return out


def _exact_window_moments(rows: dict[str, Tensor], r: Tensor) -> tuple[Fraction, Fraction] | None:
    """The exact sum and sum of squares about ``r`` of the rows' updates (``None`` where a sum is not finite)."""
    n, c = rows["count"], rows["shift"]
    parts = torch.cat([rows[name].reshape(n.shape[0], -1).to(torch.float64) for name in _ROW_PARTS], dim=1)
    target = r.item()
    s1 = s2 = Fraction(0)
    for part, size, at in zip(parts.tolist(), n.tolist(), c.tolist(), strict=True):  # rare: scaled sums only
        if size > 0:
            moments = _exact_moments(_reshift_parts(part, size, at, target))
            if moments is None:
                return None
            s1, s2 = s1 + moments[0], s2 + moments[1]
    return s1, s2


# the states whose rows hold a sketch's parts (see _state_parts), in the parts' order
_ROW_PARTS = (
    "total",
    "total_sq",
    "scaled_sums",
    "total_compensation",
    "total_sq_compensation",
    "scaled_sums_compensation",
)


# the largest CPU batch whose shifted sums are taken in Python floats (math.fsum, exactly rounded):
# below it one tolist and two fsums cost less than the three kernels (subtract, sum, dot)
_HOST_MOMENTS = 32


def _host_moments(floats: list[float], shift: float, band: int) -> tuple[float, float]:
    """``math.fsum`` of ``(x - shift) * 2**(-600 * band)`` and of its squares (band 1: scaled x minus scaled shift)."""
    if band > 0:
        scale = 2.0**-_BAND_SHIFT
        scaled = [x * scale - shift * scale for x in floats]
    else:
        scaled = [x - shift for x in floats]
        if band:
            scaled = [x * 2.0**_BAND_SHIFT for x in scaled]
    return math.fsum(scaled), math.fsum([x * x for x in scaled])


def _host_shift(
    values: Tensor | Sequence[float],
    count: Tensor | None,
    shift: Tensor | None,
    low: float,
    high: float,
    *,
    pinned: bool = False,
) -> float:
    """The shift of a host batch of extremes ``low``, ``high`` (see :func:`_distribution_update`).

    0 with ``count`` and no ``shift`` (unshifted sums); the state's shift once ``count`` is above
    0 (``pinned``: once it is finite); else the batch's first value as the state keeps it, or 0 for
    a batch with values of both signs (or a zero), which has no common offset to remove: its sums
    stay those of the values.
    """
    if count is not None and shift is None:
        return 0.0
    if count is not None and shift is not None:
        if pinned:
            held = shift.item()
            if math.isfinite(held):
                return held
        elif count.item() > 0:
            return shift.item()
    if not (low > 0 or high < 0):
        return 0.0
    first = values[0].detach().item() if isinstance(values, Tensor) else float(values[0])
    return first if shift is None or shift.dtype == torch.float64 else torch.tensor(first, dtype=shift.dtype).item()


def _shifted(values: Tensor, shift: float, band: int) -> Tensor:
    """``(values - shift) * 2**(-600 * band)`` (band 1: scaled values minus the scaled shift: no overflow)."""
    if band > 0:
        scale = 2.0 ** (-_BAND_SHIFT)
        return values * scale - shift * scale
    out = values - shift if shift else values
    return out * 2.0**_BAND_SHIFT if band else out


def _distribution_fold(
    count: Tensor,
    total: Tensor,
    total_sq: Tensor,
    scaled_sums: Tensor,
    vmin: Tensor,
    vmax: Tensor,
    bucket_counts: Tensor,
    batch: SketchBatch,
    compensations: tuple[Tensor, Tensor, Tensor] | None = None,
    shift: Tensor | None = None,
) -> None:
    """Fold a batch's statistics into the sketch's states, in place.

    ``shift`` (the state) becomes the batch's shift if ``count`` is 0; a batch summarized with
    another shift (summarized before another batch set it) is re-shifted exactly on the host
    first (:func:`_reshift_parts`). Without ``shift`` the batch's sums are taken as they are.

    The batch's sum and sum of squares go to ``total``/``total_sq`` (band 0) or to
    ``scaled_sums`` = [sum, sum of squares of band -1, sum, sum of squares of band 1] (see
    :class:`SketchBatch`): only that band's states change when the band is known on the host;
    on the device path every band adds the batch's sums or zeros. With ``compensations`` (the
    states ``total_compensation``, ``total_sq_compensation``, ``scaled_sums_compensation``) the
    sums are compensated (:func:`~torchmetrics_ext.utilities.summation.compensated_add_`): their
    error stays at one update's, however many updates. Without, a plain addition (a fold into
    zero states is exact).
    """
    if shift is not None:
        if isinstance(batch.band, int) and not on_device_path(count):
            current = shift.item()
            if current != batch.shift and count.item() == 0:  # the first values: their shift becomes the state's
                shift.fill_(batch.shift)
                current = shift.item()
            if current != batch.shift:  # summarized before another batch set the shift
                moved = _reshift_parts(_batch_parts(batch), batch.num_values, float(batch.shift), current)
                _add_parts(total, total_sq, scaled_sums, compensations, moved)
                _fold_extremes(count, vmin, vmax, bucket_counts, batch)
                return
        else:  # the batch was made from these states: its shift is theirs once they hold values
            shift.copy_(torch.where(count > 0, shift, torch.as_tensor(batch.shift, dtype=shift.dtype)))
    sums: list[Tensor] = [total, total_sq]
    addends: list[Tensor | float] = [batch.total, batch.total_sq]
    errors = list(compensations[:2]) if compensations is not None else None
    if isinstance(batch.band, int):
        if batch.band:  # the band's two elements (views) instead of total/total_sq
            i = 0 if batch.band < 0 else 2
            sums = [scaled_sums[i], scaled_sums[i + 1]]
            errors = None if compensations is None else [compensations[2][i], compensations[2][i + 1]]
    else:
        masks = _band_constants(scaled_sums.device)[2].index_select(0, (batch.band + 1).reshape(1)).reshape(3)
        pair = torch.stack([torch.as_tensor(batch.total), torch.as_tensor(batch.total_sq)])
        parts = torch.where(masks[:, None], pair, 0.0).reshape(6)
        sums.append(scaled_sums)
        addends = [parts[0], parts[1], parts[2:]]
        errors = None if compensations is None else list(compensations)
    if errors is None:
        for state, term in zip(sums, addends, strict=True):
            state.add_(term)
    else:
        compensated_add_(sums, errors, addends)
    _fold_extremes(count, vmin, vmax, bucket_counts, batch)


def _fold_extremes(count: Tensor, vmin: Tensor, vmax: Tensor, bucket_counts: Tensor, batch: SketchBatch) -> None:
    """The count, min, max and bucket counts of a fold (what the shift leaves alone).

    A host batch's extremes (Python floats) are compared on the host and written only when they
    move (two reads instead of two ``clamp_`` kernels, about 1.5 µs per update on the CPU).
    """
    count.add_(batch.num_values)
    low, high = batch.vmin, batch.vmax
    if isinstance(low, float) and isinstance(high, float) and not on_device_path(vmin):
        if low < vmin.item():
            _extend_extreme(vmin, low, lower=True)
        if high > vmax.item():
            _extend_extreme(vmax, high, lower=False)
    else:
        _extend_extreme(vmin, low, lower=True)
        _extend_extreme(vmax, high, lower=False)
    _add_to_sketch(bucket_counts, batch.bucket_index)


def _extend_extreme(state: Tensor, value: Tensor | float, *, lower: bool) -> None:
    """``state`` becomes ``min(state, value)`` (``lower``) or ``max(state, value)`` in place; ``±inf`` past its range.

    ``clamp_`` refuses a Python float beyond a narrow state's range (``set_dtype(torch.half)``
    with values of 1e9, float32 with 1e300), and PyTorch < 2.4 refused ``fill_`` alike: the two
    are then compared in float64 and the result is cast to the state (a cast saturates to ``±inf``).
    """
    try:
        if lower:
            state.clamp_(max=value)
        else:
            state.clamp_(min=value)
    except RuntimeError:
        wide = state.to(torch.float64)
        other = torch.as_tensor(value, dtype=torch.float64, device=state.device)
        state.copy_(torch.minimum(wide, other) if lower else torch.maximum(wide, other))


# ----------------------------------------------------------------------------- re-shifting
# "parts": the sums of a sketch as 12 host floats, [total, total_sq, *scaled_sums] then their
# compensations in the same order; their value is exact (each sum plus its compensation).


def _batch_parts(batch: SketchBatch) -> list[float]:
    """A host batch's sums as parts (in its band's place, no compensation)."""
    parts = [0.0] * 12
    i = {0: 0, -1: 2, 1: 4}[int(batch.band)]
    parts[i], parts[i + 1] = float(batch.total), float(batch.total_sq)
    return parts


def _exact_moments(parts: Sequence[float]) -> tuple[Fraction, Fraction] | None:
    """The exact sum and sum of squares the parts hold (``None`` where a sum is not finite)."""
    if not all(math.isfinite(x) for x in parts[:6]):
        return None
    v = [
        Fraction(x) + (Fraction(e) if e and math.isfinite(e) else 0) for x, e in zip(parts[:6], parts[6:], strict=True)
    ]
    if not any(v[2:]):  # no scaled band (the usual case): no large powers of two
        return v[0], v[1]
    k = Fraction(2**_BAND_SHIFT)
    return v[0] + v[2] / k + v[4] * k, v[1] + v[3] / k**2 + v[5] * k**2


def _encoded_parts(s1: Fraction, s2: Fraction) -> list[float]:
    """Parts holding ``s1`` and ``s2`` (each a float64 and its remainder, in the band its magnitude needs)."""
    parts = [0.0] * 12
    for value, power, where in ((s1, 1, (0, 2, 4)), (s2, 2, (1, 3, 5))):
        if value == 0:
            continue
        exponent = abs(value.numerator).bit_length() - value.denominator.bit_length()
        band = 1 if exponent >= 900 else -1 if exponent <= -900 else 0
        scaled = value * Fraction(2) ** (-_BAND_SHIFT * power * band) if band else value
        i = where[0] if band == 0 else where[1] if band < 0 else where[2]
        high = float(scaled)
        parts[i], parts[i + 6] = high, float(scaled - Fraction(high))
    return parts


def _reshift_parts(parts: list[float], n: float, old: float, new: float) -> list[float]:
    r"""Parts of ``n`` values' sums about ``old`` re-expressed about ``new``, exactly (one rounding of each sum).

    :math:`\sum (x - s') = \sum d + n\delta` and :math:`\sum (x - s')^2 = \sum d^2 + 2\delta\sum d
    + n\delta^2` with :math:`\delta = s - s'`, in fractions; left as they are where a sum is not finite.
    """
    moments = _exact_moments(parts)
    if moments is None or n == 0 or old == new:
        return parts
    s1, s2 = moments
    delta, count = Fraction(old) - Fraction(new), Fraction(n)
    return _encoded_parts(s1 + count * delta, s2 + 2 * delta * s1 + count * delta * delta)


def _add_parts(
    total: Tensor,
    total_sq: Tensor,
    scaled_sums: Tensor,
    compensations: tuple[Tensor, Tensor, Tensor] | None,
    parts: Sequence[float],
) -> None:
    """Add parts to the sums (compensated with ``compensations``; their remainders go to the compensations)."""
    band = torch.tensor(parts[2:6], dtype=scaled_sums.dtype, device=scaled_sums.device)
    if compensations is None:
        total.add_(parts[0] + parts[6])
        total_sq.add_(parts[1] + parts[7])
        scaled_sums.add_(band + torch.tensor(parts[8:], dtype=band.dtype, device=band.device))
        return
    compensated_add_([total, total_sq, scaled_sums], compensations, [parts[0], parts[1], band])
    compensations[0].add_(parts[6])
    compensations[1].add_(parts[7])
    compensations[2].add_(torch.tensor(parts[8:], dtype=band.dtype, device=band.device))


def _state_parts(sums: Sequence[Tensor], compensations: Sequence[Tensor]) -> list[float]:
    """The parts of a sketch's sums ``(total, total_sq, scaled_sums)`` and their compensations (one host read)."""
    total, total_sq, scaled_sums = sums
    flat = [total.reshape(1), total_sq.reshape(1), scaled_sums.reshape(-1)]
    flat += [c.reshape(-1) for c in compensations]
    return torch.cat([t.to(torch.float64) for t in flat]).tolist()


@lru_cache(maxsize=32)
def _host_representatives(spec: SketchSpec) -> np.ndarray:
    """:meth:`SketchSpec.representatives` on the CPU as a NumPy array (its memory)."""
    return spec.representatives().numpy()


def _sketch_quantiles(
    counts: Tensor, n: float, vmin: float, vmax: float, quantiles: Sequence[float], spec: SketchSpec
) -> list[float]:
    """``np.percentile``-style (linear) quantiles of ``n >= 1`` values from the bucket counts.

    ``quantiles`` are in [0, 1]. Ranks ``floor(h)`` and ``floor(h) + 1`` of every quantile are
    looked up with one ``searchsorted`` on the cumulative counts; rank 0 and rank ``n - 1`` are
    the exact min and max, every other estimate is its bucket's representative clipped to them.
    """
    positions = [q * (n - 1) for q in quantiles]
    lows = [math.floor(h) for h in positions]
    ranks = lows + [min(lo + 1, n - 1) for lo in lows]
    cumulative = counts.cumsum(0)
    reps: list[float]
    if cumulative.device.type == "cpu" and cumulative.dtype == torch.float64 and not cumulative.requires_grad:
        # the same look-ups in NumPy on the cumulative counts' memory: no tensor of the ranks to
        # build, no kernel launches (~8 µs of each sketch's logging)
        found = np.searchsorted(cumulative.numpy(), ranks, side="right").clip(max=counts.numel() - 1)
        reps = _host_representatives(spec)[found].tolist()
    else:
        rank_t = torch.tensor(ranks, dtype=torch.float64, device=counts.device)
        bucket = torch.searchsorted(cumulative, rank_t, right=True).clamp_(max=counts.numel() - 1)
        reps = spec.representatives(counts.device)[bucket].tolist()
    est = [
        vmin if r <= 0 else vmax if r >= n - 1 else min(max(rep, vmin), vmax)
        for r, rep in zip(ranks, reps, strict=True)
    ]
    k = len(quantiles)
    return [lo + (h - r) * (hi - lo) for h, r, lo, hi in zip(positions, lows, est[:k], est[k:], strict=True)]


# Below this fraction of the sum of squares, sum x^2 - n mean^2 is rounding noise of the float64
# sums (~1e-16 of them: the compensated sums carry one rounding, a few more once summed across
# ranks): a spread below ~2^-20 ~ 1e-6 of the mean.
_CANCELLED = 2.0**-40
# States cast to a narrower dtype (set_dtype) round each update's sums to it; compensated, the std
# of float32 states is within ~1e-3 of numpy's (batches of 8 to 8192) while the spread is above
# 2^9 roundings of the sum of squares (a spread above ~1e-2 of the mean), and far off beyond it.
# A quarter of it at most: zero-mean values keep a std in half precision.
_NARROW_ROUNDINGS = 2.0**9


def _cancelled(dtype: torch.dtype) -> float:
    """The fraction of the sum of squares below which ``sum x^2 - n mean^2`` is rounding noise of sums in ``dtype``."""
    if dtype == torch.float64:
        return _CANCELLED
    return min(_NARROW_ROUNDINGS * torch.finfo(dtype).eps, 0.25)


def _times_power_of_two(x: float, exponent: int) -> float:
    """``x * 2**exponent`` (exact unless it underflows), ``±inf`` where that overflows float64."""
    try:
        return math.ldexp(x, exponent)
    except OverflowError:
        return math.copysign(math.inf, x)


def _scaled_moments(exponent: int, s1: float, s2: float, bands: Sequence[float]) -> tuple[float, float]:
    """The sum and the sum of squares of every band, times ``2**-exponent`` and ``2**(-2 * exponent)``.

    ``bands`` is ``scaled_sums``: [sum, sum of squares] of band -1 (values times :math:`2^{600}`),
    then of band 1 (times :math:`2^{-600}`). With ``2**exponent`` above the largest magnitude,
    each term is at most the count: nothing overflows, and a band that underflows is below
    ``2**-1022`` of the largest value's share.
    """
    low_1, low_2, high_1, high_2 = bands
    k = _BAND_SHIFT
    total = (
        _times_power_of_two(s1, -exponent)
        + _times_power_of_two(low_1, -k - exponent)
        + _times_power_of_two(high_1, k - exponent)
    )
    total_sq = (
        _times_power_of_two(s2, -2 * exponent)
        + _times_power_of_two(low_2, -2 * k - 2 * exponent)
        + _times_power_of_two(high_2, 2 * k - 2 * exponent)
    )
    return total, total_sq


def _exact_mean(n: float, s1: float, bands: Sequence[float], origin: float = 0.0) -> float | None:
    """The mean of the three sums (``total``, band -1 and band 1 of ``scaled_sums``), added exactly.

    Scaling every band to the largest magnitude's :math:`2^E` (:func:`_scaled_moments`) lets a
    small sum that survives the exact cancellation of large ones underflow (``[1e140, -1e140,
    1e-200, 1e-200]`` had mean 0); the three scaled-back sums added as fractions and divided once
    give the correctly rounded mean of the sums. The sums are of the values minus ``origin`` (the shift),
    added back exactly. ``None`` where a sum is not finite.
    """
    low_1, high_1 = bands[0], bands[2]
    if not all(math.isfinite(x) for x in (s1, low_1, high_1)):
        return None
    if not (low_1 or high_1):  # no scaled band (the usual case): one integer division, no Fraction
        # origin + s1 / n as one ratio of integers; int / int is correctly rounded, as float(Fraction) is
        try:
            (a, b), (p, q), (c, d) = origin.as_integer_ratio(), s1.as_integer_ratio(), n.as_integer_ratio()
            return (a * q * c + b * p * d) / (b * q * c)
        except OverflowError:
            pass  # a mean beyond float64, or an infinite shift (float32 states): the general path's answer
    shift = 2**_BAND_SHIFT
    exact = Fraction(s1) + Fraction(low_1) / shift + Fraction(high_1) * shift
    try:
        return float(Fraction(origin) + exact / Fraction(n))
    except OverflowError:  # a mean above float64's range (only from states summed across many ranks)
        return math.copysign(math.inf, exact)


def _sample_std(
    n: float, s1: float, s2: float, mean: float, lo: float, hi: float, metric: str, dtype: torch.dtype = torch.float64
) -> float:
    r"""``ddof=1`` std from the sums, or ``nan`` with a warning where they cannot tell it (one value, rounding noise).

    Any common power-of-two scale of the values (``s1``, ``mean``, ``lo``, ``hi`` times
    :math:`2^{-E}`, ``s2`` times :math:`2^{-2E}`) gives the std at that scale.
    Equal min and max give exactly 0. Otherwise :math:`\sum x^2 - n\bar x^2` cancels when the
    mean is far from 0 relative to the spread (relative error about :math:`10^{-16}
    (\bar x/s)^2`); below :func:`_cancelled` of the sum of squares it is noise, so ``nan``. A value
    that survives is capped by Popoviciu's bound :math:`s \le \frac{\max - \min}{2}\sqrt{n/(n-1)}`.
    ``dtype`` is that of the states the sums were kept in (float64, unless cast with ``set_dtype``):
    their rounding sets the threshold, and the warnings name it.
    """
    kept = str(dtype).removeprefix("torch.")
    if n < 2:
        warn_undefined(torch.ones(1, dtype=torch.bool), metric, "the standard deviation of a single value (ddof=1)")
        return math.nan
    if lo == hi:
        return 0.0
    if not math.isfinite(s2):
        warn_undefined(
            torch.ones(1, dtype=torch.bool),
            metric,
            f"the standard deviation of values whose {kept} sum of squares is not finite ("
            + ("" if dtype == torch.float64 else f"values whose squares overflow {kept}, ")
            + "NaN/inf values given with validate_args=False, or states saved by an earlier version whose sum of "
            "squares overflowed)",
        )
        return math.nan
    spread = s2 - s1 * mean
    cancelled = _cancelled(dtype)
    if spread <= cancelled * s2:
        relative = f"{math.sqrt(cancelled):.0e}".replace("e-0", "e-")  # of the spread to the mean: 1e-6 (float64)
        warn_undefined(
            torch.ones(1, dtype=torch.bool),
            metric,
            f"the standard deviation of values whose spread is below the rounding of their {kept} sums "
            f"(a spread below ~{relative} of their mean: subtract a common offset from the values"
            + (")" if dtype == torch.float64 else ", or keep the states in float64)"),
        )
        return math.nan
    return min(math.sqrt(spread / (n - 1)), (hi - lo) / 2 * math.sqrt(n / (n - 1)))


class _SketchStates(NamedTuple):
    """A sketch's states, what :func:`_distribution_compute` and :func:`_distribution_values` read.

    Attributes:
        num_values, total, total_sq, scaled_sums, vmin, vmax, bucket_counts: the states in the order
            :func:`_distribution_fold` takes them (``num_values``: its ``count``).
        compensations: the rounding errors of ``total``, ``total_sq`` and ``scaled_sums`` (see
            :func:`_distribution_fold`); ``None``: none kept (zeros).
        shift: the value the sums are taken about (0: plain sums).
    """

    num_values: Tensor
    total: Tensor
    total_sq: Tensor
    scaled_sums: Tensor
    vmin: Tensor
    vmax: Tensor
    bucket_counts: Tensor
    compensations: tuple[Tensor, Tensor, Tensor] | None = None
    shift: Tensor | float = 0.0


def _range_note(n: float, lo: float, hi: float, spec: SketchSpec) -> str | None:
    """Why the percentiles of ``n`` values from ``lo`` to ``hi`` may be far off, or ``None`` (see :func:`_warn_range`).

    They may where a percentile reads a rank other than the exact min and max (``n > 2``, ``lo < hi``) and
    an extreme lies beyond ``max_value`` or is a magnitude in ``(0, min_value)``: the zero bucket and the
    last buckets hold such values with no relative bound. Values of magnitude below ``min_value`` between
    a min and a max in the range are not seen (they read as 0 within ``min_value``, as documented).
    """
    if not (n > 2 and lo < hi and math.isfinite(lo) and math.isfinite(hi)):  # inf: unchecked values, no sketch
        return None
    beyond = [x for x in (lo, hi) if abs(x) > spec.max_value]
    tiny = [x for x in (lo, hi) if 0 < abs(x) < spec.min_value]
    if not (beyond or tiny):
        return None
    settings = []
    if tiny:
        smallest = min(abs(x) for x in tiny)
        power = 10.0 ** math.floor(math.log10(smallest))
        # smaller nonzero magnitudes than the extremes' may be among the values (a min of 0)
        settings.append(f"min_value={power if power <= smallest else power / 10:g} (or less, down to the smallest)")
    if beyond:
        largest = max(abs(x) for x in beyond)
        exponent = math.ceil(math.log10(largest))
        settings.append(f"max_value={exact_text(10.0**exponent if exponent <= 308 else sys.float_info.max)}")
    return (
        f"its percentiles may be far off: the values seen (min {lo!r}, max {hi!r}) lie outside the sketch's range "
        f"[min_value, max_value] = [{spec.min_value:g}, {spec.max_value:g}], where the relative error bound holds "
        "(smaller magnitudes count as 0, larger ones share the last bucket; estimates are only clipped to the exact "
        f"min and max). Pass {' and '.join(settings)} (e.g. through register_handler) to cover them; the mean, min, "
        "max and std are unaffected."
    )


def _warn_range(metric: str, note: str) -> None:
    """Emit :class:`~torchmetrics_ext.utilities.warnings.SketchRangeWarning` for ``metric`` with ``note``."""
    warn_at_user(f"{_named(metric)}: {note}", SketchRangeWarning)


def _distribution_compute(
    states: _SketchStates,
    percentiles: Sequence[float],
    spec: SketchSpec,
    metric: str = "Distribution",
    on_range: Callable[[str, str], None] | None = _warn_range,
) -> dict[str, Tensor]:
    """``{"mean", "min", "max", "std", "p05", ...}`` from the sufficient statistics.

    The sums are those of the values minus ``states.shift`` (a value of the data: then they hold the
    spread, not the offset, and the std does not cancel); the mean adds it back exactly.

    ``std`` is the sample standard deviation (``ddof=1``, as ``torch.std``), see :func:`_sample_std`.
    With no value every output is ``nan``; with one value, or a spread below the rounding of the
    sums, ``std`` is ``nan`` (each with an UndefinedMetricWarning).
    ``states.compensations`` are added to their sums once here (a non-finite one, from an
    overflowed sum, is left out). The std is computed with every sum brought to the scale :math:`2^E` just above
    the largest magnitude (:func:`_scaled_moments`), then scaled back; the mean adds the bands'
    sums exactly (:func:`_exact_mean`), so a small sum left by cancelled large ones survives.
    The handful of scalars is finished on the host after one synchronisation.
    """
    values = _distribution_values(states, percentiles, spec, metric, on_range)
    out = torch.tensor(values, dtype=torch.float64, device=states.num_values.device)
    return dict(zip(_stat_names(tuple(percentiles)), out.unbind(0), strict=True))


@lru_cache(maxsize=32)
def _stat_names(percentiles: tuple[float, ...]) -> tuple[str, ...]:
    """The names of the values of :func:`_distribution_compute`, in order: mean, min, max, std, p05, ..."""
    return ("mean", "min", "max", "std", *(percentile_key(p) for p in percentiles))


def _read_states(states: _SketchStates) -> list[float]:
    """``[count, total, total_sq, min, max, their 2 compensations, shift, *scaled_sums, *theirs]`` as host floats.

    The shift is read in the count's dtype. The CPU path reads each state (``item``, ``tolist``:
    about 2 µs for the 16 scalars, against 7 µs to stack and concatenate them first); the device
    path concatenates them into one tensor, read with one synchronisation.
    """
    count, scaled_sums, shift = states.num_values, states.scaled_sums, states.shift
    if states.compensations is None:
        zero = count.new_zeros(())
        c1, c2, c3 = zero, zero, torch.zeros_like(scaled_sums)
    else:
        c1, c2, c3 = states.compensations
    if not isinstance(shift, Tensor) or shift.dtype != count.dtype or shift.device != count.device:
        shift = torch.as_tensor(shift).to(count)
    scalars = (count, states.total, states.total_sq, states.vmin, states.vmax, c1, c2, shift)
    if on_device_path(count):
        return torch.cat([torch.stack(scalars), scaled_sums, c3]).tolist()
    return [t.item() for t in scalars] + scaled_sums.tolist() + c3.tolist()  # 1-D, four elements each


def _distribution_values(
    states: _SketchStates,
    percentiles: Sequence[float],
    spec: SketchSpec,
    metric: str = "Distribution",
    on_range: Callable[[str, str], None] | None = _warn_range,
) -> list[float]:
    """:func:`_distribution_compute`'s values as host floats, in the order of :func:`_stat_names` (no tensor built).

    ``on_range(metric, note)`` is called where values outside the sketch's range may make the
    percentiles far off (:func:`_range_note`); by default it warns (``None``: nothing).
    """
    flat = _read_states(states)
    n, s1, s2, lo, hi, e1, e2, origin = flat[:8]
    s1 += e1 if math.isfinite(e1) else 0.0
    s2 += e2 if math.isfinite(e2) else 0.0
    bands = [b + (e if math.isfinite(e) else 0.0) for b, e in zip(flat[8:12], flat[12:], strict=True)]
    if n <= 0:
        warn_undefined(torch.ones(1, dtype=torch.bool), metric, "no value was seen")
        values = [math.nan] * (4 + len(percentiles))
    else:
        # 2**exponent > every magnitude (0 for inf/nan); the shift is a value, so |x - shift| < 2**(exponent + 1)
        exponent = math.frexp(max(hi, -lo))[1]
        t1, t2 = _scaled_moments(exponent, s1, s2, bands)
        scaled_mean = t1 / n
        lo_t, hi_t = math.ldexp(lo, -exponent), math.ldexp(hi, -exponent)
        std = _sample_std(n, t1, t2, scaled_mean, lo_t, hi_t, metric, states.total_sq.dtype)
        mean, std = origin + _times_power_of_two(scaled_mean, exponent), _times_power_of_two(std, exponent)
        exact_mean = _exact_mean(n, s1, bands, origin)
        mean = mean if exact_mean is None else exact_mean
        pct = _sketch_quantiles(states.bucket_counts, n, lo, hi, [p / 100.0 for p in percentiles], spec)
        values = [mean, lo, hi, std, *pct]
        note = None if on_range is None else _range_note(n, lo, hi, spec)
        if note is not None and on_range is not None:
            on_range(metric, note)
    return values


def distribution(
    values: Tensor,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    relative_accuracy: float = 0.01,
    min_value: float = 1e-9,
    max_value: float = 1e12,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    r"""Mean, min, max, sample std and percentiles of ``values`` through the log-bucket sketch.

    .. math::
        \bar x = c + \frac{1}{n}\sum_i (x_i - c),\qquad
        s = \sqrt{\frac{\sum_i (x_i - c)^2 - n(\bar x - c)^2}{n-1}},\qquad
        P_q \approx x_{(k)} + (h-k)\,(x_{(k+1)} - x_{(k)}),
        \; h = \tfrac{q}{100}(n-1),\; k = \lfloor h\rfloor

    Args:
        values: a real tensor of any shape (flattened).
        percentiles: percentiles in [0, 100]; each gives an output ``p05``, ``p50``, ...
        relative_accuracy: relative error bound :math:`\alpha` of each percentile estimate.
        min_value: magnitudes below this count as 0.
        max_value: magnitudes above this lose the error bound (still clipped to the exact max).
        validate_args: check ``values`` (real, finite).

    Returns:
        A dict of float64 scalars: ``mean``, ``min``, ``max``, ``std`` and one per percentile.

    Raises:
        TypeError: if ``values`` is not a real tensor.
        ValueError: on NaN/inf values or invalid sketch arguments.

    Note:
        Undefined values (no data; ``std`` of one value) are ``nan`` with an
        :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`. The std comes from
        the sum and the sum of squares of the values minus the first one (0 if they have both
        signs), so a large common offset does not cancel it: relative error about
        :math:`10^{-16} ((\bar x - c)/s)^2` for that shift :math:`c`, at most about
        :math:`2n \cdot 10^{-16}`; equal values give exactly 0. Any finite magnitude is
        fine: the sums of a batch of magnitudes below :math:`2^{-485}` or above :math:`2^{485}`
        are kept scaled by a power of two (see the module), so they neither underflow nor overflow.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import distribution
        >>> stats = distribution(torch.arange(1.0, 101.0))
        >>> {k: round(v.item(), 1) for k, v in stats.items()}  # np.percentile: 5.95, 50.5, 95.05
        {'mean': 50.5, 'min': 1.0, 'max': 100.0, 'std': 29.0, 'p05': 5.9, 'p50': 50.4, 'p95': 94.7}
    """
    spec = SketchSpec(relative_accuracy, min_value, max_value)
    percentiles = _check_percentiles(percentiles)
    if check_flag("validate_args", validate_args):  # given by position too: the decorator reads keywords
        _check_finite("values", check_tensor("values", values))
    values = values.reshape(-1).to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=values.device)
    count, total, total_sq, scaled_sums = zero, zero.clone(), zero.clone(), _no_scaled_sums(zero)
    vmin, vmax = torch.full_like(zero, math.inf), torch.full_like(zero, -math.inf)
    bucket_counts = torch.zeros(spec.size, dtype=torch.float64, device=values.device)
    shift = zero.clone()
    states = _SketchStates(count, total, total_sq, scaled_sums, vmin, vmax, bucket_counts, shift=shift)
    if values.numel():
        _distribution_fold(*states[:7], _distribution_update(values, spec, count, shift), shift=shift)
    return _distribution_compute(states, percentiles, spec)


def _check_finite(name: str, values: Tensor, *, allow_nan: bool = False) -> None:
    """Raise ``ValueError`` if the real tensor ``values`` holds inf (or NaN, unless ``allow_nan``)."""
    if not values.is_floating_point() or values.numel() == 0:
        return
    bad = torch.isinf(values) if allow_nan else ~torch.isfinite(values)
    if bool(bad.any()):
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"Expected `{name}` to hold finite numbers, got {what} values.")
