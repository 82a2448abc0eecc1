"""Input checks of the aggregation family, one place per kind of input, with their messages.

* **Record values** (plain Python numbers or categories, as :class:`Metric` records carry them):
  :func:`exact_sum` checks a batch of numbers while it sums it, :func:`check_numbers` checks one
  without needing its sum (MAX/MIN), :func:`number_tensor` checks one while it turns it into a
  tensor, :func:`check_categories` checks categories (and makes a ``str``/``int`` subclass, such
  as a ``(str, Enum)`` member, a NumPy integer or a one-element integer tensor plain). A rejected
  value is named in the message (``"Expected a finite number, got nan (float)."``); the aggregator
  prefixes the record's dataset, name and type.
* **NaN left to a handler**: :func:`nan_flags` finds the NaN of a batch a check refused, for a
  handler whose ``nan_strategy`` takes NaN (the aggregator then checks the other values alone).
* **Tensor inputs** of the metrics' ``update``: :func:`as_values`, then
  :func:`~torchmetrics_ext.functional.distribution._check_finite`.

Nothing here touches metric state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from torchmetrics_ext.utilities.checks import as_int, check_tensor
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.formatting import article

__all__ = [
    "as_values",
    "check_categories",
    "check_numbers",
    "exact_sum",
    "nan_flags",
    "number_error",
    "number_tensor",
    "plain_numbers",
]

_CATEGORY_TYPES = frozenset((str, int))
_NUMBER_TYPES = frozenset((float, int))
# below the smallest limit Python allows on int-to-str conversion (640 digits, sys.set_int_max_str_digits):
# only an int this long is converted once more to check that its text (a category's key) can be made
_SHORT_INT_BITS = 2000
_SHORT_INT = 1 << _SHORT_INT_BITS
# NumPy dtype kinds of a number: bool, signed and unsigned integer, floating
_NUMBER_KINDS = frozenset("biuf")
# complex scalars: Python's and NumPy's (np.complex128 subclasses complex, np.complex64 does not). NumPy's
# convert to float (their real part, with a ComplexWarning), so math.fsum and float() accept them
_COMPLEX_TYPES = (complex, np.complexfloating)


def _has_complex(values: Sequence[object]) -> bool:
    """Some value of ``values`` is a complex scalar.

    A batch of plain ``float``/``int`` is known to have none from its set of types (one C pass,
    about one ``math.fsum`` of the batch); only another batch (NumPy scalars, tensors, ...) is
    looked at value by value. No arithmetic on the values: adding them (a cheaper probe) would
    run NumPy's and torch's operators on tensors and arrays, with their cost and warnings.
    """
    if _NUMBER_TYPES.issuperset(map(type, values)):
        return False
    return any(isinstance(value, _COMPLEX_TYPES) for value in values)


def _one_element_array(value: object) -> bool:
    """``value`` is a NumPy array or a tensor of one element (any shape), of a real or boolean dtype."""
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.is_complex()
    return isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in _NUMBER_KINDS


def plain_numbers(values: Sequence[Any]) -> Sequence[Any]:
    """``values`` with every one-element NumPy array replaced by its element (a Python number).

    A number is a Python or NumPy scalar (``bool`` too, as 0/1), or a one-element tensor or NumPy
    array of any shape (``np.array([2.0])`` as ``torch.tensor([2.0])``: NumPy refuses ``float()`` of an
    array with dimensions), which becomes its element. A batch of plain ``float``/``int`` is returned
    as it is (no copy). Anything else is left as it is, for the checks to reject.
    """
    if set(map(type, values)) <= _NUMBER_TYPES or not any(isinstance(v, (np.ndarray, Tensor)) for v in values):
        return values
    return [value.reshape(()).item() if _one_element_array(value) else value for value in values]


def _is_finite_number(value: object, as_tensor: bool) -> bool:
    """``value`` is one finite number (and, if ``as_tensor``, becomes a one-element tensor)."""
    if isinstance(value, (str, bytes, *_COMPLEX_TYPES)):
        return False
    try:
        if not math.isfinite(float(value)):  # type: ignore[arg-type]
            return False
        return not as_tensor or torch.tensor([value], dtype=torch.float64).shape == (1,)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return False


def nan_flags(values: Sequence[object]) -> list[bool]:
    """Whether each value is a NaN number (a Python or NumPy float, a one-element tensor); never raises.

    Anything else (a finite or infinite number, a non-number) is ``False``: the checks judge it.
    Value by value: only a batch already refused for a NaN is looked at this way.
    """
    return [_is_nan(value) for value in values]


def _is_nan(value: object) -> bool:
    if isinstance(value, (str, bytes, *_COMPLEX_TYPES)):
        return False
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return False


def _is_number_like(value: object) -> bool:
    """Converts to a float (a bad one is a ``ValueError`` rather than a ``TypeError``); a complex scalar does not."""
    if isinstance(value, (str, bytes, *_COMPLEX_TYPES)):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except OverflowError:
        return True
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _bad_value(values: Sequence[object], as_tensor: bool = False) -> TypeError | ValueError | None:
    """The error for the first value of ``values`` that is not a finite number, or ``None`` if every one is.

    A NaN or inf (or an ``int`` too large for a float) is a ``ValueError``, anything else that is
    not a number a ``TypeError``.
    """
    for value in values:
        if not _is_finite_number(value, as_tensor):
            if _is_number_like(value):
                return ValueError(f"Expected a finite number, got {_text(value)} ({type(value).__name__}).")
            shape = getattr(value, "shape", None)
            if isinstance(shape, tuple) and not isinstance(value, (str, bytes, np.generic)):  # a NumPy scalar has one
                return WrongTypeError(
                    "Expected a finite number (a one-element tensor or array is one), got "
                    f"{article(type(value).__name__)} of shape {tuple(shape)}: {value!r}."
                )
            kind = "a number" if isinstance(value, (str, bytes)) else "a finite number"
            return WrongTypeError(f"Expected {kind}, got {value!r} ({type(value).__name__}).")
    return None


def number_error(values: Sequence[object], as_tensor: bool = False) -> TypeError | ValueError:
    """The error for the first value of ``values`` that is not a finite number (or for an overflowing sum).

    A NaN or inf is a ``ValueError``, anything else that is not a number a ``TypeError``. When
    every value is fine on its own, the batch's float64 sum overflowed: a ``ValueError``.
    """
    return _bad_value(values, as_tensor) or ValueError("The batch's sum overflows float64.")


def check_numbers(values: Sequence[object]) -> None:
    """Raise unless every value of a batch is a finite number; its sum may overflow (MAX/MIN never sum).

    ``math.fsum`` checks a batch in one C pass; only a batch it does not pass (a bad value, or a
    sum that overflows float64 such as ``[1e308, 1e308]``) is then checked value by value.

    Raises:
        TypeError: on a value that is not a number.
        ValueError: on NaN/inf.
    """
    try:
        if not _has_complex(values) and math.isfinite(math.fsum(values)):  # type: ignore[arg-type]
            return
    except (TypeError, ValueError, OverflowError, RuntimeError):
        pass
    error = _bad_value(values)
    if error is not None:
        raise error


def exact_sum(values: Sequence[object]) -> float:
    """``math.fsum`` of a batch of numbers (the exactly rounded float64 sum); checks every value on the way.

    Raises:
        TypeError: on a value that is not a number.
        ValueError: on NaN/inf, or a sum that overflows float64.
    """
    if _has_complex(values):  # before fsum, which takes a NumPy complex as its real part (with a warning)
        raise number_error(values)
    try:
        total = math.fsum(values)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, RuntimeError):
        # NumPy refuses float() of an array with dimensions: one-element arrays as their elements, once
        values = plain_numbers(values)
        try:
            total = math.fsum(values)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError, RuntimeError):
            raise number_error(values) from None
    if not math.isfinite(total):
        raise number_error(values)
    return total


def number_tensor(values: Sequence[object]) -> Tensor:
    """A batch of numbers as a float64 1-D CPU tensor; checks every value on the way.

    Raises:
        TypeError: on a value that is not a number.
        ValueError: on NaN/inf.
    """
    values = plain_numbers(values)
    ok = False
    if not _has_complex(values):  # torch.tensor takes a NumPy complex as its real part
        try:
            out = torch.tensor(values, dtype=torch.float64)
            ok = out.ndim == 1 and bool(torch.isfinite(out).all())
        except (TypeError, ValueError, RuntimeError):
            pass
    if not ok:
        raise number_error(values, as_tensor=True)
    return out


def _integer_scalar(value: object) -> int | None:
    """A NumPy integer scalar or a one-element integer tensor or array as its ``int``; ``None`` for anything else.

    Pipelines often carry a category as ``np.int64`` (a pandas, pyarrow or ``datasets`` column)
    or as a 0-dim tensor (a tensor dataset); neither is an ``int`` subclass. ``bool`` values (Python,
    NumPy or tensor) are no category.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            return None
        return int(value.item())
    if isinstance(value, np.ndarray):  # a one-element integer array (any shape), as a one-element tensor
        return int(value.reshape(()).item()) if value.size == 1 and value.dtype.kind in "iu" else None
    return as_int(value)  # a Python or NumPy integer (NumPy registers its integers), not a bool


def _as_category(value: object) -> str | int | None:
    """``value`` as a plain ``str``/``int`` category, or ``None`` if it is none.

    A ``str``/``int`` subclass (a ``(str, Enum)`` member, an ``IntEnum``, ``np.str_``) becomes its
    plain value; a NumPy integer scalar or a one-element integer tensor its ``int``; ``bool`` is refused.
    """
    if type(value) is str or type(value) is int:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return None if isinstance(value, bool) else int.__int__(value)
    return _integer_scalar(value)


def check_categories(values: Sequence[object]) -> Sequence[str | int]:
    """``values`` as plain ``str``/``int`` categories; ``TypeError`` unless each is one.

    A category is a ``str`` or an ``int`` (not a ``bool``). A subclass of ``str`` or ``int`` (a
    ``(str, Enum)`` member, an ``IntEnum``) becomes its plain value (``"web"``, ``3``), and so does a
    NumPy integer scalar (``np.int64(3)``) or a one-element integer tensor (``torch.tensor(3)``):
    the category it equals, with the key that checkpoints and syncs (which store plain
    ``str``/``int``) give back, so its logged name never changes; a one-element NumPy integer array
    too, as a one-element tensor. A batch of plain ``str``/``int`` is returned as it is (no copy).

    Raises:
        TypeError: on a value that is none of these.
        ValueError: on an ``int`` too long for Python to write in decimal (beyond
            ``sys.get_int_max_str_digits()``, 4,300 digits by default): a category's key is its text.
    """
    kinds = set(map(type, values))
    if kinds <= _CATEGORY_TYPES:
        if int not in kinds:
            return cast("Sequence[str | int]", values)
        out = cast("list[str | int]", values)
    else:
        out = []
        for value in values:
            category = _as_category(value)
            if category is None:
                raise WrongTypeError(f"Expected str or int categories, got {_text(value)} ({type(value).__name__}).")
            out.append(category)
    ints = out if kinds == {int} else [c for c in out if type(c) is int]
    if ints and (max(ints) > _SHORT_INT or min(ints) < -_SHORT_INT):  # type: ignore[operator]
        _check_int_text(out)
    return out


def _text(value: object) -> str:
    """``repr(value)``, or a description where it cannot be made (an ``int`` beyond Python's digit limit)."""
    try:
        return repr(value)
    except ValueError:
        return f"an integer of {int(value).bit_length()} bits"  # type: ignore[call-overload]


def _check_int_text(categories: Sequence[str | int]) -> None:
    """Raise ``ValueError`` on an ``int`` category whose decimal text Python refuses to make (its key)."""
    for category in categories:
        if type(category) is int and category.bit_length() > _SHORT_INT_BITS:
            try:
                str(category)
            except ValueError:
                raise ValueError(
                    f"Expected int categories whose decimal text Python can make (a category's key), got an "
                    f"integer of {category.bit_length()} bits, beyond the int-to-str digit limit "
                    "(sys.set_int_max_str_digits)."
                ) from None


def as_values(name: str, value: object) -> Tensor:
    """``value`` (a number, a sequence of numbers or a real tensor) as a tensor, or a clear ``TypeError``."""
    if isinstance(value, Tensor):
        return check_tensor(name, value)
    if isinstance(value, (str, bytes)) or value is None:
        raise WrongTypeError(f"Expected `{name}` to be a number, a sequence of numbers or a tensor, got {value!r}.")
    # torch takes a NumPy complex (a scalar, an array, or one in a list) as its real part
    if (
        isinstance(value, _COMPLEX_TYPES)
        or (isinstance(value, np.ndarray) and value.dtype.kind == "c")
        or (isinstance(value, (list, tuple)) and _has_complex(value))
    ):
        raise WrongTypeError(
            f"Expected `{name}` to be a real number, a sequence of real numbers or a real tensor, got "
            f"{type(value).__name__}: {value!r}."
        )
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise WrongTypeError(
            f"Expected `{name}` to be a number, a sequence of numbers or a tensor, got {type(value).__name__}: {err}"
        ) from None
