"""Text helpers: numbers in names (state names, output keys), and the article before a name in a message."""

from __future__ import annotations

import re

__all__ = ["article", "exact_text"]


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


# all-capital first words that are read as words, not letter by letter ("a SUM", "a MEAN", "a MAP")
_CAPITAL_WORDS = frozenset({"SUM", "MEAN", "MAX", "MIN", "MAP"})
# letters whose name starts with a vowel sound: "an AUC", "an NDCG", "an MRR", "an RMSE", "an XAUC"
_VOWEL_LETTERS = frozenset("AEFHILMNORSX")
# lower-case words read from a consonant that sounds as a vowel, or the reverse
_AN_WORDS = frozenset({"ndarray", "hour", "honest"})
_A_WORDS = frozenset({"one", "once", "euro", "european"})
_FIRST_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]+(?=[A-Z][a-z])|[A-Za-z][a-z]*|[0-9]+")


def article(name: str) -> str:
    """``name`` after its indefinite article, for messages: ``"an AUC"``, ``"a NormalizedEntropy"``, ``"an 8-D"``.

    The article follows the sound of the first word: an acronym (up to five capitals, such as
    ``AUC``, ``NDCG``, ``AUPRC``, or the ``NE`` of ``NEPositive``) is read letter by letter
    (``an MRR``, ``a CTR``), other words by their first letter (``an int``, ``a list``,
    ``a SUM``, ``an ndarray``, ``a Unit``), numbers as said (``an 8-D``, ``an 11``, ``a 2-D``).
    Leading quotes and punctuation are skipped (``a 'sum'``).

    Examples:
        >>> from torchmetrics_ext.utilities.formatting import article
        >>> article("AUC"), article("NDCG"), article("CTR"), article("NormalizedEntropy"), article("NEPositive")
        ('an AUC', 'an NDCG', 'a CTR', 'a NormalizedEntropy', 'an NEPositive')
        >>> article("int"), article("Tensor"), article("SUM"), article("8-D"), article("Update"), article("Unit")
        ('an int', 'a Tensor', 'a SUM', 'an 8-D', 'an Update', 'a Unit')
    """
    return f"{_article_of(name)} {name}"


def _article_of(name: str) -> str:
    """``"a"`` or ``"an"`` for ``name`` (see :func:`article`)."""
    match = _FIRST_WORD.search(name)
    if match is None:
        return "a"
    word = match.group()
    if word.isdigit():  # eight, eleven, eighteen (and 8xx, 11,xxx, 18,xxx...) start with a vowel sound
        return "an" if word[0] == "8" or (word[:2] in ("11", "18") and len(word) % 3 == 2) else "a"
    if word.isupper() and (len(word) <= 5 and word not in _CAPITAL_WORDS):  # an acronym: letter by letter
        return "an" if word[0] in _VOWEL_LETTERS else "a"
    lower = word.lower()
    if lower in _AN_WORDS:
        return "an"
    if lower in _A_WORDS:
        return "a"
    if lower[0] == "u" and len(lower) > 2 and lower[1] not in "aeiou" and lower[2] in "aeiou":
        return "a"  # "you"-sounding: unit, use, usual, utility (but an update, an unseen)
    return "an" if lower[0] in "aeiou" else "a"
