"""Numbers as text in names (state names, output keys): short where it is exact, exact always."""

from __future__ import annotations

__all__ = ["exact_text"]


def exact_text(value: float) -> str:
    """``value`` as short text that gives it back: ``0.3 -> "0.3"``, ``99.99999 -> "99.99999"``, ``1e-07 -> "1e-07"``.

    Six significant digits (``format(value, "g")``, the names earlier versions wrote) when they
    give the value back; otherwise the shortest text that does (``repr``), so two values never
    share a name.

    Examples:
        >>> exact_text(99.9), exact_text(12.3456789)
        ('99.9', '12.3456789')
    """
    text = format(value, "g")
    return text if float(text) == value else repr(float(value))
