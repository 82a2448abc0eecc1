"""Input checks: the argument helpers every family shares, and pointwise (binary / regression) inputs.

Every pointwise metric and functional goes through :func:`format_pointwise`: it checks the
inputs (when ``validate`` is true), raising ``TypeError``/``ValueError`` that name the argument,
what arrived and what was expected, and returns them as ``(T, N)`` tensors of one float dtype. It
never touches metric state, so a rejected batch is never half-applied.

Value checks wait for the device once: the bounds of every input of a batch (min and max, and
for floating labels the range of their fractional parts) come back in one device-to-host copy,
and on a device :func:`checked_bounds` remembers them for the tensors just checked (on the CPU,
where reading a value costs nothing, they are read directly). Every metric of a
:class:`~torchmetrics.MetricCollection` receives the same tensor objects, so the first one pays
for the reduction and the others reuse its bounds: one host synchronisation per step for the
whole collection. A tensor is only ever served from memory while it is the same, unchanged
object (see :func:`checked_bounds`).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import struct
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import wraps
from typing import Any, Literal, NamedTuple, ParamSpec, TypeVar

import torch
from torch import Tensor

from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.formatting import article
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning, warn_at_user

__all__ = [
    "as_bool",
    "as_int",
    "as_real",
    "as_str",
    "check_choice",
    "check_flag",
    "check_float32_range",
    "check_int",
    "check_pointwise",
    "check_pointwise_values",
    "check_tensor",
    "checked_bounds",
    "checks_validate_args",
    "format_pointwise",
    "int_given",
    "note_weight_bounds",
    "noting_zero_weights",
    "observed_range",
    "read_along",
    "refuse_repeats",
    "sequence_items",
    "single_task",
    "whole_float",
]

PredsDomain = Literal["probability", "real", "score"]
"""``"probability"`` ([0, 1], or finite logits), ``"real"`` (finite), ``"score"`` (any real, ±inf too: ranking)."""

MISSING: Literal["missing"] = "missing"
"""A :func:`checked_bounds` kind: floating labels that may hold NaN (a missing label).

Their bounds are those of labels (NaN propagating into them) followed by the minimum and maximum
of the labels with NaN read as 0.
"""

Label = bool | Literal["missing"]
"""What :func:`checked_bounds` reads of a tensor: ``False`` (its min and max), ``True`` (labels: of a
floating tensor also the range of its fractional parts) or :data:`MISSING`."""
TargetDomain = Literal["unit", "binary", "nonnegative", "real"]

# a label of -1 (or NaN) is the usual mark of a row without a label (a conversion label on an unclicked
# impression): such rows are given weight 0 here, the user's own weights kept for the others
_NO_LABEL_RECIPE = (
    " If {mark} marks rows without a label, give them weight 0 and {label} "
    "(`weights = weights * ({keep})`, or `weights = ({keep}).double()` without weights; `target = {fill}`; "
    "in a RecMetricModule a weight column of the task's own, `RecTaskInfo(weight_name=...)`): "
    "pointwise and AUC metrics then read them as absent rows (ranking metrics still rank them in their query)."
)
_NO_LABEL_HINT = _NO_LABEL_RECIPE.format(
    mark="-1", label="any label in [0, 1]", keep="target >= 0", fill="target.clamp(min=0)"
)
_NAN_LABEL_HINT = _NO_LABEL_RECIPE.format(
    mark="NaN", label="a valid label such as 0", keep="~target.isnan()", fill="target.nan_to_num(0.0)"
)


def _no_label_hint(low: float, target_domain: str) -> str:
    """The weight-0 recipe for labels whose bounds start at -1 (labels in [0, 1]) or hold NaN (any labels)."""
    if math.isnan(low):
        return _NAN_LABEL_HINT
    return _NO_LABEL_HINT if low == -1 and target_domain in ("unit", "binary") else ""


_TARGET_TEXT = {
    "unit": "labels in [0, 1] (soft labels allowed)",
    "binary": "binary labels in {0, 1}",
    "nonnegative": "finite values >= 0",
    "real": "finite real values",
}


def as_bool(value: object) -> bool | None:
    """``value`` as a Python ``bool`` when it is a flag, else ``None``.

    A flag is a ``bool``, a NumPy bool (``numpy.bool_``), or a 0-dim bool tensor or NumPy array
    (``torch.tensor(True)``, ``np.asarray(True)``): the rule of :func:`as_int` and :func:`as_real` for
    numbers, so a flag given as ``torch.tensor(True)`` is stored, named and saved exactly as ``True``.
    Integers (``1``, ``0``, in any form) are not flags here, nor is a tensor or array with dimensions
    (``torch.tensor([True])``: a setting is one value, not a batch of them). NumPy is never imported
    for this: a NumPy bool can only exist once NumPy is loaded.

    Examples:
        >>> import numpy as np
        >>> import torch
        >>> as_bool(np.bool_(True)), as_bool(False), as_bool(torch.tensor(True)), as_bool(np.asarray(False))
        (True, False, True, False)
        >>> as_bool(1), as_bool(torch.tensor(1)), as_bool(torch.tensor([True]))
        (None, None, None)
    """
    value = _plain_scalar(value)
    if isinstance(value, bool):
        return value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.bool_):
        return bool(value)
    return None


def _plain_scalar(value: object) -> object:
    """The Python number held by a 0-dim tensor or a 0-dim NumPy array; ``value`` itself otherwise.

    A setting written as ``torch.tensor(0.5)`` or ``np.asarray(0.5)`` then passes exactly the checks
    that ``0.5`` passes: ``item()`` gives a ``bool`` for a bool tensor and a ``complex`` for a complex
    one, which no number check takes. A tensor or array with dimensions (``torch.tensor([0.5])``)
    stays as it is and is refused: a setting is one number, not a batch of them. A tensor without
    data (``device="meta"``) has no value to read and is refused too, and so is a NumPy duration or
    date (``np.timedelta64(3)``, which NumPy counts among its integers, or an array of one): ``None``.
    """
    if isinstance(value, Tensor):
        return value.item() if value.ndim == 0 and value.device.type != "meta" else value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)) and value.dtype.kind in "mM":
        return None  # a duration or a date: NumPy files timedelta64 under its integers, but it is no number
    if numpy is not None and isinstance(value, numpy.ndarray) and value.ndim == 0:
        return value.item()
    return value


def as_int(value: object) -> int | None:
    """``value`` as a Python ``int`` when it is an integer, else ``None``.

    An integer is an ``int``, a NumPy integer scalar, or a 0-dim integer tensor or NumPy array (an
    item of ``np.array([1, 2])`` or ``torch.tensor([1, 2])``). ``bool`` is not an integer here
    (``True`` as a size or a count is a mistake), nor is a float such as ``5.0``, nor a tensor with
    dimensions (``torch.tensor([5])``). Settings are stored as Python numbers: they go into state
    names, checkpoint metadata (``torch.load(weights_only=True)`` refuses NumPy scalars) and JSON.

    Examples:
        >>> import numpy as np
        >>> import torch
        >>> as_int(np.int64(5)), as_int(torch.tensor(5)), as_int(True), as_int(5.0), as_int(torch.tensor(5.0))
        (5, 5, None, None, None)
    """
    value = _plain_scalar(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def as_real(value: object) -> int | float | None:
    """``value`` as a Python ``int`` or ``float`` when it is a real number, else ``None``.

    A real number is an ``int``, a ``float``, a NumPy integer or floating scalar, or a 0-dim real
    tensor or NumPy array (``torch.tensor(0.5)``): the same rule as :func:`as_int`'s, so that every
    setting takes the forms ``num_bins`` takes. ``bool`` is not a number here, nor is a complex
    number or a tensor with dimensions (``torch.tensor([0.5])``). NaN and inf are returned as they
    are: each setting's own check refuses them, naming itself. An integer comes back as an ``int``
    and anything else as a ``float``, so a setting given as ``torch.tensor(0.5)`` is stored, named
    and saved exactly as ``0.5`` would be.

    Examples:
        >>> import numpy as np
        >>> import torch
        >>> as_real(np.float32(0.5)), as_real(1), as_real(torch.tensor(0.25)), as_real(np.asarray(2))
        (0.5, 1, 0.25, 2)
        >>> as_real(True), as_real(torch.tensor(True)), as_real(torch.tensor([0.5])), as_real(torch.tensor(1j))
        (None, None, None, None)
    """
    value = _plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def as_str(value: object) -> str | None:
    """``value`` as a plain Python ``str`` when it is text, else ``None``.

    Text is a ``str`` (any ``str`` subclass: ``numpy.str_``, a member of a ``(str, Enum)`` or
    ``StrEnum`` class, taken as its characters) or a 0-dim NumPy string array (``np.asarray("ndcg")``):
    the rule of :func:`as_int` for numbers, so a string setting given in these forms is stored, named,
    printed and pickled exactly as the Python string. ``bytes``, a
    string array with dimensions and anything else are not text here.

    Examples:
        >>> import numpy as np
        >>> as_str("ndcg"), as_str(np.str_("mrr")), as_str(np.asarray("map")), type(as_str(np.str_("mrr")))
        ('ndcg', 'mrr', 'map', <class 'str'>)
        >>> as_str(b"ndcg"), as_str(np.array(["ndcg"])), as_str(1)
        (None, None, None)
    """
    value = _plain_scalar(value)  # a 0-dim string array's item() is a Python str
    # the characters, not ``str(value)``: a ``(str, Enum)`` member's ``str()`` is ``"Class.MEMBER"``
    return str.__str__(value) if isinstance(value, str) else None


def check_choice(name: str, value: object, choices: Sequence[str], expected: str = "") -> str:
    """The string setting ``name`` as a plain ``str`` (:func:`as_str`) among ``choices``; ``ValueError`` otherwise.

    ``expected`` replaces the default "one of (...)" in the message.

    Examples:
        >>> import numpy as np
        >>> check_choice("bin_space", np.asarray("probability"), ("logit", "probability"))
        'probability'
        >>> check_choice("bin_space", "prob", ("logit", "probability"))
        Traceback (most recent call last):
        ...
        ValueError: Expected `bin_space` to be one of ('logit', 'probability'), got 'prob'.
    """
    text = as_str(value)
    if text is None or text not in choices:
        message = f"Expected `{name}` to be {expected or f'one of {tuple(choices)}'}, got {value!r}."
        raise refusal(message, wrong_type=text is None)
    return text


def refuse_repeats(argument: str, given: object, values: Sequence[object], *, what: str | None = None) -> None:
    """``ValueError`` naming ``argument`` and each value that ``values`` holds more than once.

    The one check of a repeated metric name or cutoff: :class:`~torchmetrics_ext.RecMetricModule`
    (its constructor and ``from_config``), ``evaluate``, the Hugging Face builders and
    :class:`~torchmetrics_ext.RankingMetrics` all refuse a repeat through it, since a repeat would
    name one key twice and is most likely a typo for another value.

    Args:
        argument: how the message names the argument; as written with ``what`` (``"`metrics`"``,
            ``"config 'metrics'"``), in backquotes without it (``"metrics"``, ``"ks"``).
        given: the argument as received, quoted in the message without ``what``.
        values: its items as read (hashable): two spellings of one value (a registry entry, a cutoff)
            read alike are a repeat.
        what: the kind of the items (``"metric names"``): the message then lists the repeats sorted,
            in the module's words; without it they are listed in the order given.

    Examples:
        >>> refuse_repeats("ks", (10, 5), [10, 5])
        >>> refuse_repeats("ks", (10, 5, 10), [10, 5, 10])
        Traceback (most recent call last):
        ...
        ValueError: Expected `ks` without repeats (each gives one key), got (10, 5, 10): it repeats 10.
        >>> refuse_repeats("`metrics`", ["ne", "auc", "ne"], ["ne", "auc", "ne"], what="metric names")
        Traceback (most recent call last):
        ...
        ValueError: Expected distinct metric names in `metrics`, got ['ne'] more than once.
    """
    counts = Counter(values)
    repeats = [value for value in counts if counts[value] > 1]  # in the order given
    if not repeats:
        return
    if what is not None:
        raise ValueError(f"Expected distinct {what} in {argument}, got {sorted(repeats, key=str)} more than once.")
    listed = ", ".join(map(repr, repeats))
    raise ValueError(f"Expected `{argument}` without repeats (each gives one key), got {given!r}: it repeats {listed}.")


def sequence_items(name: str, value: object) -> list[object] | None:
    """The items of the sequence setting ``name`` as a list, or ``None`` when ``value`` is no sequence.

    One rule for every setting that takes several values (``percentiles``, ``logit_range``, ``ks``,
    ``edges``, ranking ``metrics``, ...): a tuple, a list or any other iterable gives its items as they
    are (NumPy scalars and 0-dim tensors among them: each setting reads them with :func:`as_real`,
    :func:`as_int`, :func:`as_bool` or :func:`as_str`, as it reads one value); a 1-D tensor or NumPy
    array gives its items as Python values (``tolist()``: numbers, bools or strings, a float32 item
    as the float of its float32 value, as the 0-dim form), so a setting given as
    ``torch.tensor([5.0, 50.0])`` is kept exactly as ``(5.0, 50.0)`` would be. Their dtype is not
    cast: a bool or float tensor where integers are wanted gives bools or floats, which the setting
    refuses as it refuses them in a tuple.

    A set is taken sorted: it has no order of its own, and string sets iterate in another order in
    every process (hash randomisation), which would differ between DDP ranks.

    ``None`` for what holds one value or none: a string (one name is no sequence of letters), bytes,
    a 0-dim tensor or array, a number, ``None``; each setting says how to write it as a sequence.

    Raises:
        ValueError: naming ``name``, for a tensor or array of two or more dimensions (a setting is a
            flat sequence), a tensor without data (``device="meta"``), or a mapping (iterated, it is
            its keys: ``metrics={"ndcg": {"exponential_gain": True}}`` would drop the options).

    Examples:
        >>> import numpy as np
        >>> import torch
        >>> sequence_items("percentiles", torch.tensor([5.0, 50.0])), sequence_items("ks", np.array([1, 5]))
        ([5.0, 50.0], [1, 5])
        >>> sequence_items("ks", (1, None)), sequence_items("ks", torch.tensor(10)), sequence_items("metrics", "ndcg")
        ([1, None], None, None)
        >>> sequence_items("logit_range", torch.zeros(1, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `logit_range` to be a flat sequence (...), got a 2-D tensor of shape (1, 2).
    """
    numpy = sys.modules.get("numpy")
    if isinstance(value, Tensor) or (numpy is not None and isinstance(value, numpy.ndarray)):
        array: Any = value  # a tensor or an ndarray: the same ndim / shape / tolist
        if array.ndim == 0:
            return None
        kind = "tensor" if isinstance(array, Tensor) else "array"
        if array.ndim > 1:
            raise ValueError(
                f"Expected `{name}` to be a flat sequence (a tuple, a list, or a 1-D tensor or array), got "
                f"{article(f'{array.ndim}-D')} {kind} of shape {tuple(array.shape)}."
            )
        if isinstance(array, Tensor) and array.device.type == "meta":
            raise ValueError(f"Expected `{name}` to hold values, got a tensor on the meta device (it has none).")
        items: list[object] = array.tolist()
        return items
    if isinstance(value, (str, bytes)) or as_str(value) is not None or not isinstance(value, Iterable):
        return None
    if isinstance(value, Mapping):  # iterated, it is its keys: its values (options, names) were dropped, silently
        raise WrongTypeError(
            f"Expected `{name}` to be a flat sequence (a tuple, a list, or a 1-D tensor or array), got a mapping "
            f"{value!r}: its values would be dropped. Give the items alone."
        )
    if isinstance(value, (set, frozenset)):  # no order of its own: sorted, so every process (and run) agrees
        try:
            return sorted(value)
        except TypeError:
            raise WrongTypeError(
                f"Expected `{name}` to be a tuple or a list (a set has no order, and its items do not sort), "
                f"got {value!r}."
            ) from None
    return list(value)


def check_int(name: str, value: object, minimum: int, detail: str = "") -> int:
    """``value`` as a Python ``int`` (NumPy and 0-dim tensor integers accepted: :func:`as_int`), at least ``minimum``.

    Raises:
        ValueError: naming ``name`` ("a positive integer" for ``minimum=1``, then ``detail``); a
            :class:`~torchmetrics_ext.WrongTypeError` (a ``TypeError`` too) for a value that is no integer.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.utilities.checks import check_int
        >>> check_int("k", torch.tensor(3), 1)
        3
        >>> check_int("k", 0, 1)
        Traceback (most recent call last):
            ...
        ValueError: Expected `k` to be a positive integer, got 0.
    """
    number = as_int(value)
    if number is None or number < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise refusal(
            f"Expected `{name}` to be {kind}{detail}, got {int_given(value, minimum)}.", wrong_type=number is None
        )
    return number


def whole_float(value: object) -> int | None:
    """The ``int`` a whole float stands for (``1e3``, ``np.float64(5.0)``, ``torch.tensor(5.0)``), else ``None``.

    For messages only: :func:`as_int` refuses every float on purpose (``5.0`` as a size is read from
    a config or a division, and silently truncating ``10.7`` is worse than asking).
    """
    number = _plain_scalar(value)
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or isinstance(number, numbers.Integral):
        return None
    whole = float(number)
    return int(whole) if math.isfinite(whole) and whole.is_integer() else None


def int_given(value: object, minimum: int | None = None, maximum: int | None = None) -> str:
    """``repr(value)`` for the message of an integer setting, with a hint when it is a whole float.

    The one place every integer setting's "got ..." comes from: a config's ``1e6`` is a float, which
    :func:`as_int` refuses, and the message then says how to write it. The hint is given only where
    the integer it names would be taken: inside ``[minimum, maximum]`` (the setting's bounds, where it
    has them) and within int64 (``1e300`` or ``-5.0`` for a positive integer get no "write ..." to try).

    Examples:
        >>> int_given(1e3), int_given(7), int_given(2.5), int_given(0.0, minimum=1)
        ('1000.0 (a float: write 1000, or int(1000.0))', '7', '2.5', '0.0')
    """
    whole = whole_float(value)
    low = -_INT64_LIMIT if minimum is None else minimum
    high = _INT64_LIMIT - 1 if maximum is None else maximum
    if whole is None or not low <= whole <= high or not -_INT64_LIMIT <= whole < _INT64_LIMIT:
        return f"{value!r}"
    return f"{value!r} (a float: write {whole}, or int({value!r}))"


_INT64_LIMIT = 2**63  # an integer setting beyond int64 is no setting: no hint to write it


def check_flag(name: str, value: object) -> bool:
    """The option ``name`` as a Python ``bool``; ``WrongTypeError`` unless it is a flag (:func:`as_bool`, not ``1``).

    Examples:
        >>> import numpy as np
        >>> from torchmetrics_ext.utilities.checks import check_flag
        >>> check_flag("adaptive_k", np.bool_(True))
        True
        >>> check_flag("adaptive_k", 1)
        Traceback (most recent call last):
            ...
        torchmetrics_ext.WrongTypeError: Expected `adaptive_k` to be a bool, got 1.
    """
    flag = as_bool(value)
    if flag is None:
        raise WrongTypeError(f"Expected `{name}` to be a bool, got {value!r}.")
    return flag


_P = ParamSpec("_P")
_R = TypeVar("_R")


def checks_validate_args(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """A functional whose ``validate_args`` keyword, when given, must be a flag (:func:`check_flag`).

    The classes check it once in their constructor; a functional read it as a truth value, so
    ``validate_args="no"`` (a string read from a config) silently validated and ``validate_args=0`` silently
    did not. One identity test per call when a ``bool`` is given.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import ctr
        >>> ctr(torch.tensor([0.2]), torch.tensor([1.0]), validate_args="no")
        Traceback (most recent call last):
            ...
        torchmetrics_ext.WrongTypeError: Expected `validate_args` to be a bool, got 'no'.
    """

    @wraps(function)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        flag = kwargs.get("validate_args", True)
        if flag is not True and flag is not False:
            kwargs["validate_args"] = check_flag("validate_args", flag)
        return function(*args, **kwargs)

    return checked


def check_tensor(name: str, value: object, *, floating: bool = False) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a real tensor (floating point when ``floating``); return it.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.utilities.checks import check_tensor
        >>> check_tensor("preds", torch.tensor([0.5]), floating=True)
        tensor([0.5000])
        >>> check_tensor("preds", torch.tensor([1]), floating=True)
        Traceback (most recent call last):
            ...
        torchmetrics_ext.WrongTypeError: Expected `preds` to be a floating point tensor, got dtype torch.int64.
    """
    if not isinstance(value, Tensor):
        raise WrongTypeError(f"Expected `{name}` to be a torch.Tensor, got {type(value).__name__}.")
    if value.layout is not torch.strided:  # sparse (COO, CSR, ...): no min/max, reshape or sort kernels
        raise WrongTypeError(
            f"Expected `{name}` to be a dense tensor, got layout {value.layout}: pass `{name}.to_dense()`."
        )
    if floating and not value.is_floating_point():
        raise WrongTypeError(f"Expected `{name}` to be a floating point tensor, got dtype {value.dtype}.")
    if value.is_complex():
        raise WrongTypeError(f"Expected `{name}` to be a real tensor, got dtype {value.dtype}.")
    return value


# the dtypes ``set_dtype`` may cast the floating states to: the ones torch adds and promotes in
STATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_state_dtype(dst_type: object) -> torch.dtype:
    """``set_dtype``'s ``dst_type`` (a ``torch.dtype`` or a tensor type name, ``"torch.DoubleTensor"``) as a dtype.

    ``TypeError`` naming ``dst_type`` unless it is a floating dtype the states can sum in
    (:data:`STATE_DTYPES`). ``nn.Module.type`` casts every floating state to any dtype it is given:
    an integer or bool cast truncated the sums (a log loss of 0.7 became 0) and the next update
    failed inside torch ("result type Double can't be cast to the desired output type Int"); a
    complex or float8 one left states no update can add into. A CUDA tensor type name is read as
    its CPU twin's dtype (the name still moves the states, as ``nn.Module.type`` does).
    """
    dtype: object = dst_type
    if isinstance(dst_type, str):
        try:
            dtype = torch.empty(0).type(dst_type.replace("torch.cuda.", "torch.", 1)).dtype
        except (TypeError, ValueError, RuntimeError):
            dtype = None
    if dtype not in STATE_DTYPES:
        raise WrongTypeError(
            "Expected `dst_type` to be a floating dtype the states can sum in (torch.float16, torch.bfloat16, "
            f"torch.float32, torch.float64, or a tensor type name such as 'torch.DoubleTensor'), got {dst_type!r}: "
            "`set_dtype` casts the floating states, whose sums an integer, bool, complex or float8 dtype would "
            "truncate or could not add."
        )
    assert isinstance(dtype, torch.dtype)
    return dtype


def broadcast_shape(*shapes: Sequence[int]) -> torch.Size | None:
    """The shape ``shapes`` broadcast to, or ``None`` where they do not broadcast (NumPy's rules).

    The same answer as ``torch.broadcast_shapes`` in plain Python: that function imports SymPy
    (through ``torch.fx``) at its first call, about half a second once per process, which the first
    weighted update of a multi-task AUC or an aggregation ``Mean`` paid.

    Examples:
        >>> broadcast_shape((3,), (2, 3)), broadcast_shape((2, 1), (1, 4)), broadcast_shape((2,), (3,))
        (torch.Size([2, 3]), torch.Size([2, 4]), None)
    """
    ndim = max((len(shape) for shape in shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, start=ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    return None
                out[i] = size
    return torch.Size(out)


def single_task(value: object, name: str = "preds") -> bool:
    """Whether a functional's input is one task's ``(N,)``; a non-tensor raises ``TypeError`` (:func:`check_tensor`)."""
    return check_tensor(name, value).ndim == 1


def _samples_first_column(shape: torch.Size, num_tasks: int | None) -> bool:
    """Whether a functional's (``num_tasks=None``) input is an ``(N, 1)`` column, ``N > 1``: likely samples-first.

    A model head such as ``nn.Linear(d, 1)`` gives one task's ``N`` predictions as ``(N, 1)``;
    read tasks-first (the contract: ``(T, N)``) that is ``N`` tasks of one sample each, which is
    rarely meant (``ctr`` returns the labels themselves). A metric class knows its ``num_tasks``;
    a functional has no such setting, so it computes the ``N`` one-sample tasks and warns
    (:class:`SamplesFirstWarning`).
    """
    return num_tasks is None and len(shape) == 2 and shape[1] == 1 and shape[0] > 1


def _task_shape_error(name: str, shape: torch.Size, num_tasks: int | None) -> ValueError:
    expected = "(N,) or (T, N)" if num_tasks is None else ("(N,)" if num_tasks == 1 else "(T, N)")
    if num_tasks is not None:
        expected += f" with num_tasks={num_tasks}"
        if num_tasks == 1:
            expected += " (or (1, N))"
    hint = ""
    if num_tasks is not None and num_tasks > 1 and len(shape) == 1:  # one task's column for a multi-task metric
        hint = (
            f" Stack the tasks' columns first: `torch.stack([...])` of {num_tasks} tensors of shape ({shape[0]},)"
            f" gives shape ({num_tasks}, {shape[0]}) (the other inputs alike)."
        )
    elif num_tasks is not None and len(shape) == 2:
        if num_tasks == 1 and shape[1] == 1 and shape[0] > 1:  # (N, 1): a model head of one output
            hint = (
                f" A model head of one output: pass `{name}.squeeze(-1)`, shape ({shape[0]},), and the other"
                " inputs of that shape too."
            )
        elif shape[1] == num_tasks and shape[0] != num_tasks:  # (N, T): samples first
            hint = f" Tasks go first: pass the transpose, shape ({num_tasks}, {shape[0]})."
        elif num_tasks == 1 and shape[0] > shape[1]:  # more rows than columns: most likely (N, T), samples first
            hint = (
                f" Tasks go first: for {shape[1]} tasks of {shape[0]} samples pass the transpose, shape"
                f" ({shape[1]}, {shape[0]}), and build the metric with num_tasks={shape[1]}; for {shape[0]} tasks"
                f" of {shape[1]} samples each build it with num_tasks={shape[0]}."
            )
        elif num_tasks == 1 and shape[0] > 1:  # several tasks for a metric built for one
            hint = f" For {shape[0]} tasks build the metric with num_tasks={shape[0]}."
    return ValueError(f"Expected `{name}` of shape {expected}, got shape {tuple(shape)}.{hint}")


def check_pointwise(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    num_tasks: int | None,
    *,
    preds_domain: PredsDomain = "probability",
    target_domain: TargetDomain = "unit",
    from_logits: bool = False,
    preds_name: str = "preds",
    float32_weights: bool = False,
    missing_labels: bool = False,
    check_values: bool = True,
    preds_bounds: list[Bounds] | None = None,
) -> bool:
    """Raise unless ``(preds, target, weights)`` are valid pointwise inputs (see :func:`format_pointwise`).

    Reads nothing back from the device but the batch's bounds, once (:func:`checked_bounds`).
    Errors call the first input ``preds_name`` (the caller's argument name, e.g. ``values``).
    ``float32_weights``: the caller stores the weights as float32 (exact AUC); non-zero float64
    weights outside float32's normal range are rejected (see :func:`check_float32_range`).
    ``missing_labels``: a NaN label is a missing label, accepted; the other labels are checked
    against ``target_domain``, which is not ``"binary"`` (read with the bounds the other metrics
    of a step read for the same labels, so that a step still waits for the device once).
    ``check_values=False`` checks types, shapes and devices only (see :func:`format_pointwise`).
    ``preds_bounds``: a list the predictions' ``(min, max)`` read by the value checks is appended to.

    Returns:
        Whether ``weights`` are given and every one is exactly 1 (the unweighted sums are then the
        same, for fewer passes over the batch).
    """
    # the type checks of check_tensor, called only to raise (each call costs a share of a small update)
    dense = torch.strided
    if not (isinstance(preds, Tensor) and preds.is_floating_point() and preds.layout is dense):
        check_tensor(preds_name, preds, floating=True)
    if target is not None and not (isinstance(target, Tensor) and not target.is_complex() and target.layout is dense):
        check_tensor("target", target)
    if weights is not None and not (
        isinstance(weights, Tensor) and not weights.is_complex() and weights.layout is dense
    ):
        check_tensor("weights", weights)
    shape = preds.shape
    ndim = len(shape)
    if ndim not in (1, 2) or (ndim == 2 and num_tasks is not None and shape[0] != num_tasks):
        raise _task_shape_error(preds_name, shape, num_tasks)
    if ndim == 2 and _samples_first_column(shape, num_tasks):
        n = shape[0]
        warn_at_user(
            f"`{preds_name}` of shape ({n}, 1) is read tasks-first: {n} tasks of one sample each. For one task of"
            f" {n} samples pass `{preds_name}.squeeze(1)` (and the other inputs alike), shape ({n},), or the"
            f" transpose, shape (1, {n}).",
            SamplesFirstWarning,
        )
    if ndim == 1 and num_tasks not in (None, 1):
        raise _task_shape_error(preds_name, shape, num_tasks)
    if target is not None or weights is not None:
        device = preds.device
        for name, other in (("target", target), ("weights", weights)):
            if other is not None and other.device != device:
                raise ValueError(
                    f"Expected `{name}` on the same device as `{preds_name}` ({device}), got {other.device}."
                )
    if target is not None and target.shape != shape:
        raise ValueError(
            f"Expected `target` of the same shape as `{preds_name}` {tuple(shape)}, got {tuple(target.shape)}."
        )
    if weights is not None and weights.shape != shape and weights.shape != shape[-1:]:
        expected = str(tuple(shape))  # (N,) preds: one shape; (T, N): also (N,), shared by all tasks
        if ndim == 2:
            expected += f" or {tuple(shape[-1:])} (shared by all tasks)"
        raise ValueError(f"Expected `weights` of shape {expected}, got {tuple(weights.shape)}.")
    if check_values and preds.numel() > 0:
        pred_bounds, bounds = _check_values_bounds(
            preds,
            target,
            weights,
            preds_domain,
            target_domain,
            from_logits,
            None,
            preds_name,
            float32_weights,
            missing_labels,
        )
        if preds_bounds is not None:
            preds_bounds.append(pred_bounds)
        return weights is not None and all_unit_weights(bounds)
    return False


def format_pointwise(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    num_tasks: int | None,
    *,
    preds_domain: PredsDomain = "probability",
    target_domain: TargetDomain = "unit",
    from_logits: bool = False,
    validate: bool = True,
    dtype: torch.dtype | None = torch.float64,
    preds_name: str = "preds",
    target_required: bool = False,
    float32_weights: bool = False,
    missing_labels: bool = False,
    check_values: bool = True,
    preds_bounds: list[Bounds] | None = None,
    cast_preds: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Check pointwise inputs and return them as ``dtype`` tensors with a leading task dimension.

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point predictions.
        target: labels of the same shape as ``preds``, or ``None`` where the metric needs none.
        weights: non-negative sample weights, ``None`` (all ones), the shape of ``preds``, or
            ``(N,)`` shared by every task.
        num_tasks: the number of tasks the metric was built for; ``None`` infers it from ``preds``.
        preds_domain: ``"probability"`` (values in [0, 1], or any finite logit when
            ``from_logits``) or ``"real"`` (any finite value).
        target_domain: ``"unit"`` ([0, 1]), ``"binary"`` ({0, 1}), ``"nonnegative"`` or ``"real"`` (finite).
        from_logits: whether probability-domain ``preds`` are logits.
        validate: run the checks (:func:`check_pointwise`); when false, only reshape and cast.
        dtype: the dtype of the returned tensors (float64 for sums); ``None`` keeps each input's
            own dtype. An input already of that dtype is returned as is or as a view: callers
            copy what they keep.
        preds_name: what errors call ``preds`` (the caller's argument name, e.g. ``values``).
        target_required: the metric needs labels: a ``None`` target is a ``TypeError`` (when validating).
        float32_weights: the caller stores the weights as float32 (see :func:`check_pointwise`).
        missing_labels: NaN labels are missing labels, accepted (see :func:`check_pointwise`).
        check_values: with ``validate``, also check the values (ranges, NaN/inf); ``False`` leaves
            them to the caller, who must then check them before using anything computed from the
            batch (e.g. :func:`check_pointwise_values` when sums of the batch show a non-finite input).
        preds_bounds: a list the predictions' ``(min, max)`` is appended to when the checks read them
            (validated, values checked, a non-empty batch): kernels may skip a clamp they show changes nothing.
        cast_preds: ``False`` returns ``preds`` in their own floating dtype, for a kernel whose first
            operation with them promotes them to ``dtype`` exactly (``preds - target``): the cast is then
            one operator call that changes no bit. One task's ``(N,)`` predictions then also stay
            ``(N,)`` when ``target`` is given (that operation broadcasts them to the labels' ``(1, N)``).

    Returns:
        ``(preds, target, weights)``; ``preds`` (but see ``cast_preds``) and ``target`` of shape ``(T, N)``,
        ``weights`` of shape ``(T, N)`` or ``(1, N)`` (or ``None``). Validated weights that are all exactly 1 come
        back as ``None``: every kernel gives the same sums for them without a weight pass, but for the
        label-0 weight of soft labels, ``N - sum y`` there instead of ``sum 1·(1 - y)`` (off by about
        ``N * 1e-16``: ``NormalizedEntropy``'s Note).

    Raises:
        TypeError: if an input is not a tensor, or ``preds`` is not floating point.
        ValueError: on a shape, device, task-dimension or value-range mismatch.
    """
    if validate and target is None and target_required:
        raise WrongTypeError("Expected `target` (labels of the shape of `preds`), got None: this metric needs labels.")
    if validate and check_pointwise(
        preds,
        target,
        weights,
        num_tasks,
        preds_domain=preds_domain,
        target_domain=target_domain,
        from_logits=from_logits,
        preds_name=preds_name,
        float32_weights=float32_weights,
        missing_labels=missing_labels,
        check_values=check_values,
        preds_bounds=preds_bounds,
    ):
        weights = None
    # casts by keyword: `.to(dtype)` parses its overloads first, ~0.8 µs more a call on small batches
    if dtype is not None and cast_preds and preds.dtype != dtype:
        preds = preds.to(dtype=dtype)
    # uncast predictions of one task with labels stay (N,): the kernel's first operation with them
    # (`preds - target`) broadcasts them to the labels' (1, N), so their own view would be one call for nothing
    flat = preds.ndim == 1 and (cast_preds or target is None)
    if flat:
        preds = preds.unsqueeze(0)
    if target is not None:
        if dtype is not None and target.dtype != dtype:
            target = target.to(dtype=dtype)
        if preds.ndim == 1:  # (uncast, see above) the labels carry the task dimension: (1, N)
            target = target.unsqueeze(0) if target.shape == preds.shape else target.reshape((1, *preds.shape))
        elif target.shape != preds.shape:
            # one task's (N,) labels: the (1, N) view `reshape` would give, for less (a call per update)
            one_task = preds.shape[0] == 1 and target.shape == preds.shape[1:]
            target = target.unsqueeze(0) if one_task else target.reshape(preds.shape)
    if weights is not None:
        if dtype is not None and weights.dtype != dtype:
            weights = weights.to(dtype=dtype)
        if weights.ndim == 1:
            weights = weights.unsqueeze(0)
    return preds, target, weights


# ----------------------------------------------------------------------------- value checks


def check_pointwise_values(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    *,
    preds_domain: PredsDomain = "probability",
    target_domain: TargetDomain = "unit",
    from_logits: bool = False,
    preds_name: str = "preds",
) -> None:
    """The value checks of :func:`check_pointwise` alone (ranges, NaN/inf), of inputs whose types and shapes passed."""
    if preds.numel() > 0:
        _check_values_bounds(preds, target, weights, preds_domain, target_domain, from_logits, None, preds_name)


def observed_range(low: float, high: float) -> str:
    """What a message says a tensor held, from its bounds: NaN (which propagates into both) and inf named plainly.

    The bounds are those a check has already read (one host sync per step): no other reduction.

    Examples:
        >>> observed_range(0.0, 2.0), observed_range(float("nan"), float("nan"))
        ('values in [0, 2]', 'values containing NaN')
        >>> observed_range(0.0, float("inf"))
        'values containing inf (in [0, inf])'
    """
    if math.isnan(low) or math.isnan(high):
        return "values containing NaN"
    if math.isinf(low) or math.isinf(high):
        return f"values containing inf (in [{low:.6g}, {high:.6g}])"
    return f"values in [{low:.6g}, {high:.6g}]"


class ZeroWeightNote:
    """What the weight checks of one update saw: ``zero`` is ``True`` when every weight tensor checked had maximum 0.

    ``None`` while no (non-empty) weights were checked: an unweighted batch, an empty one, or one
    whose checks were skipped (``validate_args=False``, inputs trusted), which read nothing.
    """

    __slots__ = ("_outer", "zero")

    def __init__(self) -> None:
        self.zero: bool | None = None
        self._outer: ZeroWeightNote | None = None

    # its own context manager (a plain class: about half the cost of a generator-based one, paid by
    # every validated windowed update)
    def __enter__(self) -> ZeroWeightNote:
        self._outer = _NOTING.note
        _NOTING.note = self
        return self

    def __exit__(self, *exc: object) -> None:
        _NOTING.note, self._outer = self._outer, None


class _Noting(threading.local):
    """The note the weight checks of this thread write to (``None``: none is taken)."""

    def __init__(self) -> None:
        self.note: ZeroWeightNote | None = None


_NOTING = _Noting()


def noting_zero_weights() -> ZeroWeightNote:
    """Within the block, the weight checks note whether every weight they checked is zero (:func:`note_weight_bounds`).

    ``Windowed`` runs its wrapped metric's validated update in it: a batch whose weights are all
    zero takes no slot of the window. Nothing is read for it: the checks note the maxima they
    already read (the one bounds read of the batch). The note stays readable after the block;
    a nested block takes the checks within it, and the outer one resumes after it.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR
        >>> with noting_zero_weights() as note:
        ...     CTR().update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]), torch.zeros(2))
        >>> note.zero
        True
        >>> with noting_zero_weights() as note:  # unvalidated: nothing read, nothing noted
        ...     CTR(validate_args=False).update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]), torch.zeros(2))
        >>> note.zero is None
        True
    """
    return ZeroWeightNote()


def note_weight_bounds(weight_bounds: Sequence[Bounds]) -> None:
    """Note weights that passed the checks (one ``(min, max, ...)`` per tensor, ``()`` when empty) while noting.

    Called by every weight check after its bounds passed (non-negative weights: all zero exactly
    when the maximum is 0); a no-op outside :func:`noting_zero_weights`.
    """
    note = _NOTING.note
    if note is None:
        return
    for bounds in weight_bounds:
        if bounds:
            note.zero = note.zero is not False and bounds[1] == 0


def all_unit_weights(weight_bounds: Sequence[Bounds]) -> bool:
    """Whether weights are given (a non-empty tensor's bounds) and all exactly 1 (minimum and maximum 1)."""
    given = False
    for bounds in weight_bounds:  # one loop, no list or generator per step
        if bounds:
            if not (bounds[0] == 1 and bounds[1] == 1):
                return False
            given = True
    return given


def _check_values_bounds(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | Sequence[Tensor] | None,
    preds_domain: PredsDomain,
    target_domain: TargetDomain,
    from_logits: bool,
    target_is_float: bool | None = None,
    preds_name: str = "preds",
    float32_weights: bool = False,
    missing_labels: bool = False,
) -> tuple[Bounds, list[Bounds]]:
    """Range checks of the inputs as given (any dtype, any shape), from one :func:`checked_bounds` call.

    Returns the predictions' ``(min, max)`` (``()`` when empty) and the ``(min, max)`` of each weight
    tensor (``()`` for an empty one); ``weights`` may also be a sequence of tensors (e.g. one column
    per task, checked unstacked). :func:`all_unit_weights` of the latter says whether weights are
    given and all exactly 1.

    Weights are checked non-negative, so a tensor's weights are all zero exactly when its maximum is 0.

    On the device path floating labels always get their fractional range too, so that the bounds
    remembered by the first metric of a step serve every label domain of the others.
    ``target_is_float`` is accepted for callers that pass labels already cast to float64 (whole
    labels cast to float have no fractional part, so it changes nothing). Errors call the first
    input ``preds_name``. With ``float32_weights``, the smallest positive value of each float64
    weight tensor is read in the same call, for :func:`check_float32_range`. With
    ``missing_labels`` NaN labels are accepted and the others checked: the labels are read as
    :data:`MISSING`, which the bounds another metric of the step read for them serve when they
    hold no NaN.

    On the CPU, bool labels are not read (every bool is 0 or 1: they pass every label domain).
    """
    device_path = on_device_path(preds)
    integral: Label = MISSING if missing_labels else device_path or target_domain == "binary"
    columns: Sequence[Tensor] = () if weights is None else [weights] if isinstance(weights, Tensor) else list(weights)
    positive_bounds: Sequence[Bounds]
    # no list built per update (`float32_weights` is off for all but the exact AUC family)
    positive = _positive_weights(columns) if float32_weights else ()
    if device_path:
        checked = [preds, target, *columns, *positive]
        bounds = checked_bounds(checked, [False, integral, *[False] * (len(checked) - 2)], True)
        bounds, positive_bounds = bounds[: 2 + len(columns)], bounds[2 + len(columns) :]
    else:  # checked_bounds' CPU path (each bound read directly) without its lists: this runs on every update
        if target is not None and target.dtype is torch.bool:  # not read: in [0, 1], whole (any domain)
            bounds = [_cpu_bounds(preds, False), _BOOL_LABEL_BOUNDS]
        else:
            bounds = [_cpu_bounds(preds, False), _cpu_bounds(target, integral)]
        for column in columns:
            bounds.append(_cpu_bounds(column, False))
        positive_bounds = [_cpu_bounds(column, False) for column in positive] if positive else ()
    return _value_rules(
        bounds,
        positive_bounds,
        preds_domain,
        target_domain,
        from_logits,
        target is not None,
        preds_name,
        missing_labels,
    )


def _positive_weights(columns: Sequence[Tensor]) -> list[Tensor | None]:
    """Each float64 weight column, its non-positive values read as ``inf`` (its min: the smallest positive weight)."""
    return [torch.where(column > 0, column, math.inf) if column.dtype == torch.float64 else None for column in columns]


def _value_rules(
    bounds: list[Bounds],
    positive_bounds: Sequence[Bounds],
    preds_domain: PredsDomain,
    target_domain: TargetDomain,
    from_logits: bool,
    has_target: bool,
    preds_name: str,
    missing_labels: bool,
) -> tuple[Bounds, list[Bounds]]:
    """The range rules of :func:`_check_values_bounds`, applied to bounds already read on the host.

    ``bounds`` holds the predictions', the labels' and each weight column's bounds, in that order;
    ``positive_bounds`` the bounds of :func:`_positive_weights` of the columns (empty unless
    ``float32_weights``). Returns what :func:`_check_values_bounds` returns.
    """
    pmin, pmax = bounds[0]
    if preds_domain == "score":  # ranking scores: any real, ±inf included
        if math.isnan(pmin) or math.isnan(pmax):
            raise ValueError(
                f"Expected `{preds_name}` without NaN (any other real score, ±inf included, is fine), got NaN."
            )
    elif not (math.isfinite(pmin) and math.isfinite(pmax)):
        raise ValueError(f"Expected `{preds_name}` to be finite, got {observed_range(pmin, pmax)}.")
    if preds_domain == "probability" and not from_logits and (pmin < 0 or pmax > 1):
        raise ValueError(
            f"Expected `{preds_name}` to be probabilities in [0, 1], got values in [{pmin:.6g}, {pmax:.6g}]. "
            "Pass `from_logits=True` if they are logits."
        )
    if has_target:
        tmin, tmax, *frac = bounds[1]
        if missing_labels:  # the bounds of the labels that are not NaN (integers cannot be NaN)
            tmin, tmax = (tmin, tmax) if len(frac) < 4 else frac[2:]
            frac = []  # not read without NaN: `missing_labels` takes no binary domain
        ok_range = math.isfinite(tmin) and math.isfinite(tmax)
        if target_domain != "real":
            ok_range = ok_range and tmin >= 0 and (target_domain == "nonnegative" or tmax <= 1)
        # in [0, 1], a label is 0 or 1 exactly when its fractional part is 0
        not_binary = target_domain == "binary" and bool(frac) and (frac[0] != 0 or frac[1] != 0)
        if not ok_range or not_binary:
            raise ValueError(
                f"Expected `target` to hold {_TARGET_TEXT[target_domain]}, got {observed_range(tmin, tmax)}"
                + (" that are not all 0 or 1." if not_binary and ok_range else ".")
                + _no_label_hint(tmin, target_domain)
            )
    for bound in bounds[2:]:  # each on its own: NaN propagates within a tensor's bounds only
        if bound and not (bound[0] >= 0 and math.isfinite(bound[1])):
            raise ValueError(
                f"Expected `weights` to be finite and non-negative, got {observed_range(bound[0], bound[1])}."
            )
    for bound, low in zip(bounds[2:], positive_bounds):  # none unless float32_weights
        if low:
            check_float32_range(low[0], bound[1])
    if len(bounds) > 2 and _NOTING.note is not None:
        note_weight_bounds(bounds[2:])
    return bounds[0], bounds[2:]


class _ValueCheck(NamedTuple):
    """The arguments of one :func:`_check_values_bounds` call, for :func:`_check_values_bounds_together`."""

    preds: Tensor
    target: Tensor | None
    weights: Sequence[Tensor]
    preds_domain: PredsDomain
    target_domain: TargetDomain
    from_logits: bool
    float32_weights: bool = False


def _check_values_bounds_together(
    checks: Sequence[_ValueCheck], target_is_float: bool | None = None
) -> list[tuple[Bounds, list[Bounds]]]:
    """:func:`_check_values_bounds` of several inputs (one device) with one :func:`checked_bounds` call.

    On the device path the bounds of every input come back in one copy, one host read (with the
    tensors of an open :func:`read_along` block), and each input's rules are then applied to its
    own bounds, in order: the first input that breaks its rules raises, with the message its own
    :func:`_check_values_bounds` call gives. On the CPU path (where reading costs nothing) each
    input is checked by its own call. Returns what each call returns, in order.
    """
    if not checks:
        return []
    if not on_device_path(checks[0].preds):
        return [
            _check_values_bounds(
                c.preds,
                c.target,
                c.weights,
                c.preds_domain,
                c.target_domain,
                c.from_logits,
                target_is_float,
                float32_weights=c.float32_weights,
            )
            for c in checks
        ]
    tensors: list[Tensor | None] = []
    spans: list[tuple[int, int, int]] = []  # (first position, weight columns, positive columns)
    for c in checks:
        positive = _positive_weights(c.weights) if c.float32_weights else []
        spans.append((len(tensors), len(c.weights), len(positive)))
        tensors += [c.preds, c.target, *c.weights, *positive]
    # on the device path labels always get their fractional range (see `_check_values_bounds`)
    labels: list[Label] = [False] * len(tensors)
    for first, _, _ in spans:
        labels[first + 1] = True
    bounds = checked_bounds(tensors, labels, True)
    return [
        _value_rules(
            bounds[first : first + 2 + columns],
            bounds[first + 2 + columns : first + 2 + columns + positive],
            c.preds_domain,
            c.target_domain,
            c.from_logits,
            c.target is not None,
            "preds",
            False,
        )
        for c, (first, columns, positive) in zip(checks, spans)
    ]


# what the value checks take for bool labels on the CPU, unread: a range holding every bool, whole numbers,
# which every label domain accepts (only the range checks see it: it is never returned or remembered)
_BOOL_LABEL_BOUNDS: tuple[float, ...] = (0.0, 1.0)

_FLOAT32 = torch.finfo(torch.float32)


def check_float32_range(low: float, high: float) -> None:
    """Raise unless non-zero weights from ``low`` (the smallest positive one) to ``high`` keep their value as float32.

    float64 weights above float32's largest value would become inf (a nan AUC) and non-zero ones
    below its smallest normal value would lose their precision or become 0 (a class silently
    dropped). ``low`` is ``inf`` when no weight is positive.
    """
    if high > _FLOAT32.max or 0 < low < _FLOAT32.tiny:
        raise ValueError(
            "Expected non-zero `weights` within float32's range "
            f"[{_FLOAT32.tiny:.8g}, {_FLOAT32.max:.8g}] "
            "(exact AUC/AUPRC and the grouped metrics read them as float32), got "
            f"non-zero values in [{low:.6g}, {high:.6g}]; rescale them (the value does not depend on their scale)."
        )


Bounds = tuple[float, ...]

# id(tensor) -> (weak reference, signature when checked, bounds); oldest first
_CHECKED: dict[int, tuple[weakref.ref[Tensor], tuple[object, ...], Bounds]] = {}
_CHECKED_SIZE = 64


def _signature(tensor: Tensor) -> tuple[object, ...] | None:
    """What must not change for remembered bounds to stay true; ``None`` if changes cannot be seen.

    Inference tensors (made under ``torch.inference_mode``) have no version counter.
    """
    if tensor.is_inference():
        return None
    return (
        tensor._version,
        tensor.data_ptr(),
        tensor.shape,
        tensor.stride(),
        tensor.storage_offset(),
        tensor.dtype,
        tensor.device,
    )


def _remembered(tensor: Tensor, size: int) -> Bounds | None:
    entry = _CHECKED.get(id(tensor))
    if entry is None:
        return None
    ref, signature, bounds = entry
    if ref() is not tensor or signature != _signature(tensor) or len(bounds) < size:
        return None
    return bounds[:size]  # a tensor checked as labels (with fractional parts) may be read as weights next


def _remember(tensor: Tensor, bounds: Bounds) -> None:
    signature = _signature(tensor)
    if signature is None:
        return
    key = id(tensor)

    def forget(ref: weakref.ref[Tensor], key: int = key) -> None:
        entry = _CHECKED.get(key)
        if entry is not None and entry[0] is ref:
            del _CHECKED[key]

    _CHECKED.pop(key, None)
    _CHECKED[key] = (weakref.ref(tensor, forget), signature, bounds)
    while len(_CHECKED) > _CHECKED_SIZE:
        del _CHECKED[next(iter(_CHECKED))]


# unsigned dtypes without a min/max kernel (CPU), and the dtype their bounds are read in (see
# checked_bounds): int64 holds uint16/32 exactly; uint64 past 2**63 would wrap to negative there
_UNSIGNED_BOUNDS = {torch.uint16: torch.int64, torch.uint32: torch.int64, torch.uint64: torch.float64}
# float8 dtypes have no min/max (nor frac) kernel: their bounds are read in float32, which holds each of
# their values (NaN and ±inf included) exactly, as the float64 the metrics compute in does
_FLOAT8_BOUNDS = {
    dtype: torch.float32
    for dtype in (
        getattr(torch, name, None)
        for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu")
    )
    if dtype is not None
}


def _size(tensor: Tensor, label: Label) -> int:
    """How many bounds :func:`checked_bounds` reads of a non-empty tensor of this kind."""
    if not (label and tensor.is_floating_point()):
        return 2
    return 6 if label == MISSING else 4


def _reduced(tensor: Tensor, label: Label, known: bool = True) -> list[Tensor]:
    """The tensors whose ``aminmax`` :func:`checked_bounds` reads for a non-empty tensor (see :func:`_size`).

    The tensor itself (uint16/32/64 through a wider copy), then for floating labels its
    fractional parts, and for labels read as :data:`MISSING` its values with NaN read as 0.
    ``known=False`` leaves out the latter (the CPU path reads them only when the labels hold NaN).
    """
    if tensor.requires_grad:  # bounds are read back, never differentiated (and `aminmax(out=)` refuses grad)
        tensor = tensor.detach()
    if tensor.dtype in _FLOAT8_BOUNDS:
        tensor = tensor.to(_FLOAT8_BOUNDS[tensor.dtype])
    wide = _UNSIGNED_BOUNDS.get(tensor.dtype)
    if wide is not None:  # integers: no fractional part to read
        return [tensor.to(wide)]
    if not (label and tensor.is_floating_point()):
        return [tensor]
    sources = [tensor, torch.frac(tensor)]
    if label == MISSING and known:
        sources.append(_known_values(tensor))
    return sources


def _known_values(tensor: Tensor) -> Tensor:
    """A floating tensor's values with NaN read as 0: their min and max are those of the values that are not NaN."""
    return torch.nan_to_num(tensor, nan=0.0, posinf=math.inf, neginf=-math.inf)


# 1-D CPU tensors up to this many values have their bounds read as a Python list (see `_cpu_bounds`)
_LISTED_BOUNDS = 16


def _cpu_bounds(tensor: Tensor | None, label: Label) -> Bounds:
    """:func:`checked_bounds` on the CPU path: each bound read directly (a read costs nothing there).

    Labels read as :data:`MISSING` are reduced again only if they hold NaN; without NaN, their
    values that are not NaN are all of them.
    """
    if tensor is None:
        return ()
    size = tensor.numel()
    if size == 0:
        return ()
    if tensor.requires_grad:
        tensor = tensor.detach()
    if tensor.dtype in _FLOAT8_BOUNDS:
        tensor = tensor.to(_FLOAT8_BOUNDS[tensor.dtype])
    if label != MISSING and tensor.dtype not in _UNSIGNED_BOUNDS:  # `_reduced` inline: called per tensor per step
        floating = tensor.dtype.is_floating_point
        if size <= _LISTED_BOUNDS and tensor.ndim == 1 and not (label and floating):
            # a small batch read as a list: `tolist()` and the builtins `sum`/`min`/`max` (C loops over at most
            # 16 values) cost about half of `aminmax` and its two reads (three operator calls, ~1.8 µs at 8
            # values; the list costs more from ~32 values on). `min`/`max` skip NaN depending on its position,
            # so floating values are tested for NaN by their `sum` (NaN whenever one is; also for inf plus
            # -inf, which only sends the tensor to `aminmax` below, whose bounds every message is written
            # from). Otherwise the numbers `aminmax` reads (of zeros of both signs either may come back).
            values = tensor.tolist()
            if not (floating and math.isnan(sum(values))):
                return (min(values), max(values))
        low, high = torch.aminmax(tensor)
        if label and floating:
            frac_low, frac_high = torch.aminmax(torch.frac(tensor))
            return (low.item(), high.item(), frac_low.item(), frac_high.item())
        return (low.item(), high.item())
    bounds = tuple(value.item() for source in _reduced(tensor, label, known=False) for value in torch.aminmax(source))
    if label != MISSING or len(bounds) == 2:
        return bounds
    if math.isnan(bounds[0]) or math.isnan(bounds[1]):
        return bounds + tuple(value.item() for value in torch.aminmax(_known_values(tensor)))
    return (*bounds, bounds[0], bounds[1])


def _known_bounds(tensor: Tensor, label: Label) -> Bounds | None:
    """Remembered bounds for ``tensor`` read as ``label``, or ``None``.

    Labels read as :data:`MISSING` are also served by the bounds of labels without NaN, read by
    another metric of the step: their values that are not NaN are all of them.
    """
    size = _size(tensor, label)
    bounds = _remembered(tensor, size)
    if bounds is not None or size != 6:
        return bounds
    bounds = _remembered(tensor, 4)
    if bounds is None or math.isnan(bounds[0]) or math.isnan(bounds[1]):
        return None
    return (*bounds, bounds[0], bounds[1])


def checked_bounds(
    tensors: Sequence[Tensor | None], labels: Sequence[Label], device_path: bool | None = None
) -> list[Bounds]:
    """``(min, max)`` of each non-empty tensor (``None`` or empty gives ``()``), with one host sync at most.

    For a floating tensor marked as labels, ``(min, max, min frac, max frac)``: its fractional
    parts too; for one read as :data:`MISSING`, also the min and max of its values that are not
    NaN. On the device path (:func:`~torchmetrics_ext.utilities.device.on_device_path`) the
    values come back in one copy, and bounds are remembered for the tensors just reduced and
    reused, with no reduction and no sync, for the same tensor object while it is unchanged
    (on the CPU, where reading a value costs nothing, they are read directly and not kept): it
    is still alive (a weak reference, so an id reused by a new tensor
    never matches) and has the same version counter (bumped by every in-place write through
    PyTorch, views included), data pointer, shape, strides, offset, dtype and device. Writes that
    bypass the version counter (through ``.data``, NumPy, DLPack or another tensor set on the same
    storage, which autograd cannot see either) are not seen; inference tensors, which have no
    version counter, are never remembered.
    NaN propagates into the min and max. Any real dtype is read: uint16/uint32 tensors (which have
    no min/max kernel on the CPU) through an int64 copy, exact; uint64 through a float64 copy, so
    that values past 2**63 stay positive (rounded to the nearest float64, which keeps their order:
    a comparison with a number below 2**53 is exact).

    Args:
        tensors: the inputs of one batch; ``None`` stands for an absent input.
        labels: for each tensor, whether it holds labels (``True``, or :data:`MISSING` for labels
            that may hold NaN).
        device_path: whether the tensors take the device path (found from the first tensor when
            ``None``).

    Returns:
        One tuple of floats per tensor.

    Examples:
        >>> import torch
        >>> preds, target = torch.tensor([0.25, 0.5]), torch.tensor([0.0, 1.0])
        >>> checked_bounds([preds, target, None], labels=[False, True, False])
        [(0.25, 0.5), (0.0, 1.0, 0.0, 0.0), ()]
        >>> checked_bounds([torch.tensor([3, 2**63], dtype=torch.uint64)], labels=[False])
        [(3.0, 9.223372036854776e+18)]
    """
    if device_path is None:
        device_path = any(tensor is not None and on_device_path(tensor) for tensor in tensors)
    if not device_path:  # the CPU path: read each bound directly
        return [_cpu_bounds(tensor, label) for tensor, label in zip(tensors, labels, strict=True)]
    requests = [request for request in _ALONG if request.bounds is None]
    if not requests:
        return _device_bounds(tensors, labels)
    # the tensors of read_along's blocks join this read
    extra = [(tensor, label) for request in requests for tensor, label in zip(request.tensors, request.labels)]
    result = _device_bounds([*tensors, *(t for t, _ in extra)], [*labels, *(label for _, label in extra)])
    offset = len(tensors)
    for request in requests:
        request.bounds = result[offset : offset + len(request.tensors)]
        offset += len(request.tensors)
    return result[: len(tensors)]


def _device_bounds(tensors: Sequence[Tensor | None], labels: Sequence[Label]) -> list[Bounds]:
    """:func:`checked_bounds` on the device path: one copy for the tensors not remembered, which are remembered."""
    result: list[Bounds] = []
    pending: list[tuple[int, Tensor, int]] = []  # (position, tensor, number of stats)
    sources: list[Tensor] = []
    for position, (tensor, label) in enumerate(zip(tensors, labels, strict=True)):
        result.append(())
        if tensor is None or tensor.numel() == 0:
            continue
        size = _size(tensor, label)
        bounds = _known_bounds(tensor, label)
        if bounds is not None:
            result[position] = bounds
            continue
        pending.append((position, tensor, size))
        sources += _reduced(tensor, label)
    if pending:
        values = _read_aminmax(sources)
        offset = 0
        for position, tensor, size in pending:
            bounds = tuple(values[offset : offset + size])
            offset += size
            result[position] = bounds
            _remember(tensor, bounds)
    return result


# how the host reads one value of each dtype (bfloat16: its 16 bits are a float32's upper half)
_HOST_FORMATS = {
    torch.float64: "d",
    torch.float32: "f",
    torch.float16: "e",
    torch.bfloat16: "H",
    torch.int64: "q",
    torch.int32: "i",
    torch.int16: "h",
    torch.int8: "b",
    torch.uint8: "B",
    torch.bool: "?",
}

Slots = tuple[Tensor, list[tuple[Tensor, Tensor]], str]

# per thread (a buffer is written and read within one call: threads must not share one):
# (device, dtypes read) -> a kept byte buffer of the device, the (min, max) slot views into it, the host format
_SLOTS = threading.local()
_SLOTS_KEPT = 64  # different (device, dtypes) keys kept per thread, at most


def _slots(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> Slots:
    """The byte buffer of :func:`_read_aminmax` for these dtypes: 8 bytes per value, 0-dim views of each slot."""
    kept: dict[tuple[torch.device, tuple[torch.dtype, ...]], Slots] | None = getattr(_SLOTS, "kept", None)
    if kept is None:
        kept = _SLOTS.kept = {}
    key = (device, dtypes)
    entry = kept.get(key)
    if entry is None:
        if len(kept) >= _SLOTS_KEPT:
            kept.clear()
        raw = torch.empty(16 * len(dtypes), dtype=torch.uint8, device=device)
        views, formats = [], []
        for i, dtype in enumerate(dtypes):
            values, per_slot = raw.view(dtype), 8 // dtype.itemsize
            views.append((values[2 * i * per_slot], values[(2 * i + 1) * per_slot]))
            formats.append(f"{_HOST_FORMATS[dtype]}{8 - dtype.itemsize}x" * 2)
        entry = kept[key] = (raw, views, "<" + "".join(formats))
    return entry


def _read_aminmax(sources: Sequence[Tensor]) -> list[float]:
    """``[min, max]`` of each tensor (one device), as exact floats, read back in one copy.

    Each ``aminmax`` writes its two values straight into 8-byte slots of one kept byte buffer of
    the device (no cast or ``stack`` kernels: on a GPU each launch costs the host ~10 µs), and the
    buffer comes back to the host at once (the one wait) and is decoded there. A dtype without a
    host format goes through a ``stack`` into float64 instead. The buffer is written and read
    within the call, which returns only once the copy is on the host.
    """
    device = sources[0].device
    dtypes = tuple(source.dtype for source in sources)
    if any(dtype not in _HOST_FORMATS for dtype in dtypes):
        stats = [value for source in sources for value in torch.aminmax(source)]
        out = torch.empty(len(stats), dtype=torch.float64, device=device)
        return torch.stack(stats, out=out).tolist()  # each cast straight to float64: exact
    raw, views, layout = _slots(device, dtypes)
    for source, pair in zip(sources, views):
        torch.aminmax(source, out=pair)
    values = struct.unpack(layout, bytes(raw.tolist()))  # the one copy back (and wait)
    if torch.bfloat16 in dtypes:  # its bits read as uint16: a float32's upper half
        values = tuple(
            struct.unpack("<f", struct.pack("<I", value << 16))[0] if dtype == torch.bfloat16 else value
            for i, dtype in enumerate(dtypes)
            for value in values[2 * i : 2 * i + 2]
        )
    return [float(value) for value in values]


class ReadAlong:
    """The tensors of a :func:`read_along` block and, once a read in the block has brought them back, their bounds."""

    def __init__(self, tensors: Sequence[Tensor | None], labels: Sequence[Label]) -> None:
        self.tensors = list(tensors)
        self.labels: list[Label] = list(labels)
        self.bounds: list[Bounds] | None = None  # one tuple per tensor, as checked_bounds returns them


_ALONG: list[ReadAlong] = []  # the open read_along blocks, innermost last


@contextlib.contextmanager
def read_along(tensors: Sequence[Tensor | None], labels: Sequence[Label] | None = None) -> Iterator[ReadAlong]:
    """Within the block, the first :func:`checked_bounds` call on the device path also reads ``tensors``' bounds.

    For a caller that checks inputs of its own next to those that code it does not control checks
    (:class:`~torchmetrics_ext.Segmented`'s segment ids next to its wrapped metric's inputs): the
    bounds come back in that call's one copy, so the step still waits for the device once. They
    are then in ``.bounds`` (and remembered like any device-path bounds); ``.bounds`` stays
    ``None`` when no device-path read ran in the block (the CPU path, an empty or unchecked
    batch), and the caller reads them itself. ``tensors`` must be on the device of the tensors
    read in the block. Not thread-safe (one process-wide list, like :func:`force_device_path`).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.utilities.device import force_device_path
        >>> ids, preds = torch.tensor([3, 1, 2]), torch.tensor([0.5, 0.25])
        >>> with force_device_path(), read_along([ids]) as along:
        ...     checked_bounds([preds], [False])  # one copy brings back both
        [(0.25, 0.5)]
        >>> along.bounds
        [(1.0, 3.0)]
    """
    request = ReadAlong(tensors, [False] * len(tensors) if labels is None else labels)
    _ALONG.append(request)
    try:
        yield request
    finally:
        _ALONG.remove(request)
