"""Small helpers on plain Python data."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["ordered_union"]


def ordered_union(lists: Iterable[Iterable[K]]) -> list[K]:
    """Union of several lists, in order of first appearance (list by list).

    Examples:
        >>> ordered_union([["a", "b"], [], ["c", "a"]])
        ['a', 'b', 'c']
    """
    return list(dict.fromkeys(item for items in lists for item in items))
