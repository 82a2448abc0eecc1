"""Bin edges that reproduce a binning rule exactly, so that a device finds each bin in one ``searchsorted``.

The CPU path bins a score by arithmetic (a float64 logit, a shift and scale, a clip and a floor:
several passes over the batch). On a device every pass is a kernel launch the host pays for in
``update`` (about 10 µs each on a GPU), so the device path looks the bin up instead: for a
non-decreasing rule ``bin_of`` over the values of one floating dtype, the ``k``-th edge is the
smallest value of that dtype whose bin is ``k`` or more, and then for every value ``x``::

    bin_of(x) == number of edges <= x == torch.searchsorted(edges, x, right=True)

(bins that no value of the dtype reaches repeat an edge, which the count handles). The edges are
found once per rule and dtype by a bisection over the dtype's values in order, evaluating the
rule itself on the CPU, so the lookup gives the very bins of the arithmetic for every value,
ties at an edge included, not bins of a formula written twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["EDGE_DTYPES", "smallest_reaching"]

# each floating dtype the lookup serves -> the signed integer type of its bits
EDGE_DTYPES: dict[torch.dtype, torch.dtype] = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _order_key(bits: Tensor, width: int) -> Tensor:
    """The bits of floats (as int64) mapped to integers in the floats' order, and back (an involution).

    Non-negative floats order as their bits; a negative float's magnitude bits are flipped, so
    that larger magnitudes come first (``-0.0`` lands just below ``+0.0``).
    """
    magnitude = (1 << (width - 1)) - 1
    return bits ^ ((bits >> (width - 1)) & magnitude)


def _keys(values: Tensor, dtype: torch.dtype) -> Tensor:
    """int64 order keys of ``values`` (of ``dtype``)."""
    bits = EDGE_DTYPES[dtype]
    return _order_key(values.to(dtype).view(bits).to(torch.int64), torch.iinfo(bits).bits)


def _values(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """The ``dtype`` values of int64 order keys (inverse of :func:`_keys`)."""
    bits = EDGE_DTYPES[dtype]
    return _order_key(keys, torch.iinfo(bits).bits).to(bits).view(dtype)


def smallest_reaching(
    levels: int, dtype: torch.dtype, domain: tuple[float, float], bin_of: Callable[[Tensor], Tensor]
) -> Tensor:
    """For ``k = 1 .. levels - 1``, the smallest ``dtype`` value in ``domain`` whose bin is ``k`` or more.

    Args:
        levels: the number of bins ``B``; ``bin_of`` maps the domain onto ``0 .. B - 1``.
        dtype: a floating dtype of :data:`EDGE_DTYPES`.
        domain: ``(low, high)``, values of ``dtype`` (infinities allowed) with ``bin_of(low) == 0``
            and ``bin_of(high) == B - 1``.
        bin_of: the rule, non-decreasing over the domain: a ``(M,)`` tensor of ``dtype`` to its
            ``(M,)`` bins (any real dtype holding whole numbers).

    Returns:
        ``(B - 1,)`` edges of ``dtype``, non-decreasing, on the CPU. Bisection over the dtype's
        values in order: as many rounds as its bits, each one call of ``bin_of`` on ``B - 1`` values.

    Examples:
        >>> import torch
        >>> rule = lambda x: (x.double() * 4).floor().clamp(0, 3)  # 4 bins over [0, 1]
        >>> smallest_reaching(4, torch.float32, (0.0, 1.0), rule)
        tensor([0.2500, 0.5000, 0.7500])
    """
    # on the CPU whatever the default device (`torch.set_default_device`, `with torch.device(...)`): the
    # rule is evaluated where its inputs are, and the edges are kept for every later update
    cpu = torch.device("cpu")
    ends = _keys(torch.tensor(domain, dtype=torch.float64, device=cpu), dtype)  # (no read to the host)
    wanted = torch.arange(1, levels, dtype=torch.float64, device=cpu)
    below = ends[0].expand(levels - 1)  # bin_of(below) < k, always
    above = ends[1].expand(levels - 1)  # bin_of(above) >= k, always
    for _ in range(torch.iinfo(EDGE_DTYPES[dtype]).bits + 1):
        middle = (below >> 1) + (above >> 1) + (below & above & 1)  # no overflow at 64 bits
        reaches = bin_of(_values(middle, dtype)).to(torch.float64) >= wanted
        above = torch.where(reaches, middle, above)
        below = torch.where(reaches, below, middle)
    return _values(above, dtype)
