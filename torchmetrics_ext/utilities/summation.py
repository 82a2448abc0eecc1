"""Exact float64 arithmetic: compensated running sums, and scaling by powers of two.

The running sums stay sum-reducible (states merged with ``dist_reduce_fx="sum"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.utilities.device import on_device_path

__all__ = ["compensated_add_", "power_of_two"]

# the largest sum (in elements) that the CPU path adds in Python floats rather than in kernels
_HOST_ELEMENTS = 8


def compensated_add_(
    sums: Sequence[Tensor], compensations: Sequence[Tensor], addends: Sequence[Tensor | float]
) -> None:
    r"""``sums += addends`` in place, the rounding error of each addition added to ``compensations``.

    Knuth's TwoSum, exact in IEEE float64 whatever the order of the magnitudes: :math:`s = a + b`,
    :math:`b' = s - a`, :math:`e = (a - (s - b')) + (b - b')`, and :math:`a + b = s + e`
    exactly. A running sum's value is then ``sum + compensation`` (Kahan-Babuska-Neumaier
    summation): after any number of additions its error is about one rounding of the sum (the
    compensation's own roundings are about :math:`10^{-16}` times smaller), where a plain running
    sum collects one rounding per addition. Both states add up across ranks and merges
    (``dist_reduce_fx="sum"``): a sum over ``R`` ranks adds ``R - 1`` roundings, not one per update.

    On the CPU the few float64 scalars are added on the host (read with ``.item()``, written with
    ``fill_``: about 3 µs for two sums, where the tensor kernels take about 20 µs; a sum of a few
    elements, up to ``_HOST_ELEMENTS``, element by element through ``tolist``); on another
    device (or the device path forced by :func:`~torchmetrics_ext.utilities.device.force_device_path`)
    eight fused ``_foreach`` calls over all the sums together, nothing read on the host.
    ``addends`` are tensors (on the states' device) or Python numbers (mixed ones are made tensors);
    each is added in its sum's dtype (a float32 sum takes a float64 term rounded to float32, its
    rounding error in float32: the compensation of a sum in that dtype).
    A non-finite sum makes its compensation ``nan``: read the value as ``sum`` then.

    Examples:
        >>> import torch
        >>> total, error = torch.tensor(1e16, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        >>> for _ in range(10):
        ...     compensated_add_([total], [error], [1.0])
        >>> total.item(), error.item(), int(total.item()) + int(error.item())
        (1e+16, 10.0, 10000000000000010)
    """
    sums, errors = list(sums), list(compensations)
    # each compensation lives with its sum; the device path (forced in tests) reads nothing on the host.
    # Python floats are float64: a sum in another dtype (set_dtype) is added in kernels, in its own dtype
    if all(t.dtype == torch.float64 and t.numel() <= _HOST_ELEMENTS and not on_device_path(t) for t in sums):
        _compensated_add_on_host(sums, errors, addends)
    else:
        _compensated_add_kernels(sums, errors, addends)


def _compensated_add_on_host(sums: list[Tensor], errors: list[Tensor], addends: Sequence[Tensor | float]) -> None:
    """:func:`compensated_add_` of one-element CPU states in Python floats (the same float64 operations)."""
    for total, error, term in zip(sums, errors, addends, strict=True):
        if total.numel() != 1:
            _compensated_add_elements(total, error, term)
            continue
        a, b = total.item(), term.detach().item() if isinstance(term, Tensor) else float(term)
        s = a + b
        b_rounded = s - a
        total.fill_(s)
        error.fill_(error.item() + ((a - (s - b_rounded)) + (b - b_rounded)))


def _compensated_add_elements(total: Tensor, error: Tensor, term: Tensor | float) -> None:
    """The host TwoSum of a small CPU sum of several elements, element by element (a number ``term`` broadcasts).

    Adding zeros leaves the sum and its error as they are: such a term writes nothing.
    """
    n = total.numel()
    terms = term.detach().reshape(-1).tolist() if isinstance(term, Tensor) else [float(term)]
    if not any(terms):
        return
    terms = terms * n if len(terms) == 1 else terms
    new, new_errors = [], []
    for a, b, e in zip(total.reshape(-1).tolist(), terms, error.reshape(-1).tolist(), strict=True):
        s = a + b
        b_rounded = s - a
        new.append(s)
        new_errors.append(e + ((a - (s - b_rounded)) + (b - b_rounded)))
    total.copy_(torch.tensor(new, dtype=total.dtype).view(total.shape))
    error.copy_(torch.tensor(new_errors, dtype=error.dtype).view(error.shape))


def _compensated_add_kernels(sums: list[Tensor], errors: list[Tensor], addends: Sequence[Tensor | float]) -> None:
    """:func:`compensated_add_` in fused ``_foreach`` kernels: nothing read on the host."""
    # sums, not a graph; in the sum's dtype (a 0-dim float64 term would promote a 0-dim float32 sum)
    terms: list[Any] = [
        b.detach().to(s.dtype) if isinstance(b, Tensor) else b for b, s in zip(addends, sums, strict=True)
    ]
    if any(isinstance(b, Tensor) for b in terms) and not all(isinstance(b, Tensor) for b in terms):
        terms = [torch.as_tensor(b, dtype=s.dtype, device=s.device) for b, s in zip(terms, sums, strict=True)]
    new = torch._foreach_add(sums, terms)
    b_rounded = torch._foreach_sub(new, sums)  # b' = s - a
    a_error = torch._foreach_sub(sums, torch._foreach_sub(new, b_rounded))  # a - (s - b')
    minus_b_error = torch._foreach_sub(b_rounded, terms)  # b' - b
    torch._foreach_add_(errors, torch._foreach_sub(a_error, minus_b_error))
    torch._foreach_copy_(sums, new)


def power_of_two(exponent: Tensor, dtype: torch.dtype) -> Tensor:
    """``2 ** exponent`` (integer exponents) in ``dtype``, exact over the whole range of ``dtype``.

    ``torch.ldexp(x, e)`` with an integer ``e`` computed ``2 ** e`` in the default dtype before
    PyTorch 2.4 (float32 on 2.3: ``2 ** -600`` was 0 and ``2 ** 700`` inf, so a float64 scaled by
    it came out 0, inf or nan); an exponent of ``dtype`` makes the power in ``dtype`` on every version.

    Examples:
        >>> import torch
        >>> power_of_two(torch.tensor([-600, 0, 700]), torch.float64)
        tensor([2.4099e-181, 1.0000e+00, 5.2601e+210], dtype=torch.float64)
    """
    return torch.exp2(exponent.to(dtype))
