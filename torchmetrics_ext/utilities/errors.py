"""The package's one error class of its own: an argument of the wrong type, a ``TypeError`` and a ``ValueError``.

Python's convention is ``TypeError`` for an object of the wrong kind and ``ValueError`` for a right
kind with a wrong value; TorchMetrics, scikit-learn and this package's first releases each drew the
line elsewhere (a setting read from a config, ``k="5"`` or ``adaptive_k=1``, was a ``ValueError``, a
list given where a tensor goes a ``TypeError``). One class deriving from both lets every wrong type
follow Python's convention without breaking a caller's ``except ValueError`` (or ``except
TypeError``) written against either earlier answer (docs/policies.md, "Wrong types").
"""

from __future__ import annotations

__all__ = ["WrongTypeError", "refusal"]


class WrongTypeError(TypeError, ValueError):
    """An argument, setting or input of a type it does not take: caught by ``except TypeError`` and ``ValueError``.

    The message names the argument, what it takes and what arrived. A value of an accepted type
    that is refused (out of range, an unknown name, a wrong shape, NaN) is a plain ``ValueError``.

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> try:
        ...     tmx.NDCG(k="10")  # a string read from a config, not yet an int
        ... except tmx.WrongTypeError as error:
        ...     print(error, isinstance(error, TypeError), isinstance(error, ValueError))
        Expected `k` to be a positive integer or None, got '10'. True True
        >>> try:
        ...     tmx.NDCG(k=0)  # an int, out of range: a ValueError only
        ... except ValueError as error:
        ...     print(type(error).__name__)
        ValueError
    """


WrongTypeError.__module__ = "torchmetrics_ext"  # tracebacks say where users import it from


def refusal(message: str, *, wrong_type: bool) -> ValueError:
    """The error of a check that refuses both kinds: :class:`WrongTypeError` if ``wrong_type``, else ``ValueError``.

    For a setting checked in one step (``Expected `k` to be a positive integer, got ...``): a string or
    a float is the wrong type, ``0`` a wrong value, and the message is the same.

    Examples:
        >>> from torchmetrics_ext.utilities.errors import refusal
        >>> type(refusal("Expected `k` ...", wrong_type=True)).__name__, type(refusal("...", wrong_type=False)).__name__
        ('WrongTypeError', 'ValueError')
    """
    return WrongTypeError(message) if wrong_type else ValueError(message)
