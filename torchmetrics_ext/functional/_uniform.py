r"""Positions on a uniform grid, found arithmetically instead of by binary search.

The grid is :math:`g_k = k / s`, each the correctly rounded float64 quotient
(:func:`uniform_grid`): Reliability's uniform bin edges (``s = B``) and HindsightTargetPR's
thresholds (``s = B - 1``). ``torch.bucketize``/``torch.searchsorted`` cost a binary search per
value, which on the CPU grows with the number of grid points; :func:`uniform_bins` and
:func:`thresholds_reached` return exactly what those searches return, for every float64 value (on
a grid point or next to it, ±0, subnormals, out of range, ±inf, NaN), at a cost that does not
depend on the grid.

How: an estimate from :math:`v s`, off by at most one in a known direction, then one comparison
with the actual grid point on the side that it may be off. The product is computed with ``s``
nudged by :data:`_NUDGE` (far more than the few units in the last place by which the rounded
product and the rounded grid points can differ from the exact :math:`v s` and :math:`k`), so the
estimate can only err towards that side, and by less than the spacing 1 between grid points as
long as :math:`k (2^{-45} + 4 \cdot 2^{-53}) < 1`: grids of up to :data:`_MAX_POINTS` points, far
more than any histogram state holds (a larger grid is searched).

On an accelerator the search is one kernel and the arithmetic several: there the search is
kept (:func:`search_is_cheaper`), against the same grid, copied from the host once.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from torchmetrics_ext.utilities.device import on_device_path

__all__ = ["grid_on", "search_is_cheaper", "thresholds_reached", "uniform_bins", "uniform_grid"]

_NUDGE = 2.0**-45  # relative; float64 rounding errors are 2**-53 each, a few of them at most
_MAX_POINTS = 2**40


def uniform_grid(size: int, steps: int) -> Tensor:
    """``k / steps`` for ``k = 0..size - 1`` in float64, each correctly rounded (``linspace`` is not).

    On the host whatever the default device (a setting; built under ``torch.device("meta")`` too).
    """
    return torch.arange(size, dtype=torch.float64, device="cpu") / steps


@functools.lru_cache(maxsize=32)
def grid_on(size: int, steps: int, device: torch.device) -> Tensor:
    """:func:`uniform_grid` on ``device``: computed on the host and copied once (never written)."""
    return uniform_grid(size, steps).to(device)


@functools.lru_cache(maxsize=32)
def _padded(size: int, steps: int, device: torch.device, pad_first: bool) -> Tensor:
    """The grid with NaN for its first point (``pad_first``) or after its last: a comparison that never holds."""
    grid = uniform_grid(size, steps)
    grid = torch.cat([grid, grid.new_full((1,), math.nan)])
    if pad_first:
        grid[0] = math.nan
    return grid.to(device)


def search_is_cheaper(values: Tensor, size: int) -> bool:
    """Whether to binary-search the grid: on the device path (one kernel), or a grid too large for the estimate.

    Chosen by :func:`~torchmetrics_ext.utilities.device.on_device_path`, as every kernel with two
    paths, so that ``force_device_path()`` runs the accelerator's search on CPU tensors in tests.
    """
    return on_device_path(values) or size > _MAX_POINTS


def uniform_bins(values: Tensor, num_bins: int) -> Tensor:
    r"""``torch.bucketize(values, inner, right=True)`` for the inner edges ``inner = uniform_grid(B + 1, B)[1:-1]``.

    The bin ``b`` with :math:`g_b \le v < g_{b+1}` among ``0..B - 1``: values below 0 (and NaN
    above 1, as the search puts it) fall in the end bins.

    Args:
        values: values of any shape and floating dtype (compared as float64, an exact cast).
        num_bins: the number of bins ``B``.

    Returns:
        int64 bin indices, the shape of ``values``.
    """
    values = values.to(torch.float64).contiguous()
    if search_is_cheaper(values, num_bins + 1):
        return torch.bucketize(values, grid_on(num_bins + 1, num_bins, values.device)[1:-1], right=True)
    edges = _padded(num_bins + 1, num_bins, values.device, True)  # g_0 = 0 never compared: bin 0 is the floor
    # floor(v B), B nudged up: the bin or the one above it (NaN: the last bin, as the search)
    index = torch.mul(values, num_bins * (1 + _NUDGE)).clamp_(0.0, num_bins - 1).nan_to_num_(nan=num_bins - 1).long()
    index -= (edges.index_select(0, index.view(-1)).view_as(index) > values).long()
    return index


def thresholds_reached(values: Tensor, num_thresholds: int) -> Tensor:
    r"""``torch.searchsorted(uniform_grid(B, B - 1), values, right=True)``: how many thresholds each value reaches.

    The number of thresholds :math:`t_j = j / (B - 1)` with :math:`t_j \le v`, in ``0..B``
    (``B`` for NaN, as the search gives).

    Args:
        values: values of any shape and floating dtype (compared as float64, an exact cast).
        num_thresholds: the number of thresholds ``B`` (at least 2).

    Returns:
        int64 counts, the shape of ``values``.
    """
    steps = num_thresholds - 1
    values = values.to(torch.float64).contiguous()
    if search_is_cheaper(values, num_thresholds):
        return torch.searchsorted(grid_on(num_thresholds, steps, values.device), values, right=True)
    thresholds = _padded(num_thresholds, steps, values.device, False)  # NaN past the last: no step beyond B
    # ceil(v (B - 1)), B - 1 nudged down: the count or one less (NaN: B, as the search)
    count = torch.mul(values, steps * (1 - _NUDGE)).ceil_().clamp_(0.0, num_thresholds)
    count = count.nan_to_num_(nan=num_thresholds).long()
    count += (thresholds.index_select(0, count.view(-1)).view_as(count) <= values).long()
    return count
