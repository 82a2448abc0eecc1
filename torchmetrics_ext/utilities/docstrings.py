"""Docstring sections written once for several objects that take the same arguments.

Two classes (``AUC`` and ``AUPRC``) or two functions (the session metrics) with one signature
describe their arguments alike; a copy in each drifts as soon as one of them is edited.
:func:`with_sections` keeps the shared sections in one string and inserts them into each
docstring at run time, where ``help()``, doctest and the API reference (mkdocstrings with
``force_inspection``) read it. The literal docstring keeps what is the object's own: summary,
formula, ``Returns``, ``Note`` and the runnable ``Examples``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

__all__ = ["with_sections"]

T = TypeVar("T")


def with_sections(sections: str, *, before: str) -> Callable[[T], T]:
    r"""Insert ``sections`` into the decorated object's docstring just before its ``before:`` section.

    Args:
        sections: Google-style sections (``Args:``, ``Raises:``, ...) written flush left; they take
            the indentation of the ``before:`` line and are followed by a blank line.
        before: the header of the section they precede (``"Note"``, ``"Returns"``).

    Returns:
        A decorator that sets ``__doc__`` and returns the object unchanged. Without a docstring
        (``python -OO``) the object is returned as it is.

    Raises:
        ValueError: the docstring has no ``before:`` section (the sections would be lost).

    Examples:
        >>> @with_sections("Args:\n    x: a number.", before="Returns")
        ... def double(x):
        ...     '''Twice ``x``.
        ...
        ...     Returns:
        ...         ``2 * x``.'''
        >>> print(double.__doc__)
        Twice ``x``.
        <BLANKLINE>
            Args:
                x: a number.
        <BLANKLINE>
            Returns:
                ``2 * x``.
        >>> with_sections("Raises:\n    TypeError: not a number.", before="Note")(double)
        Traceback (most recent call last):
        ...
        ValueError: Expected the docstring of double to hold a `Note:` section, got none.
    """
    block = sections.strip("\n")

    def decorate(obj: T) -> T:
        doc = obj.__doc__
        if doc is None:
            return obj
        header = re.search(rf"^([ \t]*){re.escape(before)}:$", doc, re.MULTILINE)
        if header is None:
            name = getattr(obj, "__qualname__", repr(obj))
            raise ValueError(f"Expected the docstring of {name} to hold a `{before}:` section, got none.")
        start = header.start()
        obj.__doc__ = doc[:start] + textwrap.indent(block, header.group(1)) + "\n\n" + doc[start:]
        return obj

    return decorate
