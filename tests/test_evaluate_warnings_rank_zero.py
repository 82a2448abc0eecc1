"""``evaluate()`` under a process group raises its notes as Python warnings on rank 0 alone.

Every rank of a ``torchrun`` job returns the same result, ``warnings`` included; each note that is also a Python
warning (:class:`ResultCaveatWarning`, :class:`UndefinedMetricWarning`) was raised by every rank, so a job of 8
processes printed each one 8 times. Rank 0 raises them now, once per line, as one process does; the other ranks
raise none, and every rank's ``warnings`` are one process's. Real gloo ranks (the session's pool of 2); the lines
expected are written from the data (which segments are split by a space, which hold a single class).
"""

from __future__ import annotations

import warnings

import pyarrow as pa
import pytest

from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext.evaluate import ResultCaveatWarning, evaluate

# "fr " is a segment of its own (a space after it) holding clicks only, "us" holds none: AUC is undefined in both
TABLE = {
    "p": [0.2, 0.7, 0.4, 0.9, 0.3, 0.6, 0.1, 0.8],
    "y": [0, 1, 1, 1, 0, 0, 1, 0],
    "c": ["fr", "fr ", "fr", "fr ", "us", "us", "fr", "fr"],
}
RAISED = (ResultCaveatWarning, UndefinedMetricWarning)


def _run() -> tuple[list[tuple[str, str]], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(pa.table(TABLE), {"click": ("p", "y")}, ["ctr", "auc"], by="c", batch_size=3)
    raised = [(w.category.__name__, str(w.message)) for w in caught if issubclass(w.category, RAISED)]
    return raised, result.warnings


def _ranks(rank: int, world_size: int) -> tuple[list[tuple[str, str]], list[str]]:
    return _run()


def _expected_lines() -> list[tuple[str, str]]:
    """The (category, line start) of each note of this data, written from it (not read from a run)."""
    # which segments hold a single class: grouped in plain Python over the rows as written
    labels: dict[str, set[int]] = {}
    for c, y in zip(TABLE["c"], TABLE["y"]):
        labels.setdefault(c, set()).add(y)
    single = [c for c in sorted(labels) if len(labels[c]) == 1]
    assert single == ["fr ", "us"]
    return [
        ("UndefinedMetricWarning", "auc is undefined for task 'click' in 2 of 3 segments (c=fr , c=us)"),
        ("ResultCaveatWarning", "--by column 'c' holds 1 text value with spaces around it"),
    ]


def _check(raised: list[tuple[str, str]], lines: list[str]) -> None:
    expected = _expected_lines()
    assert len(raised) == len(expected) == len(lines), (raised, lines)
    for (category, message), (want_category, start), line in zip(raised, expected, lines):
        assert category == want_category and message.startswith(start) and message == line, (raised, lines)


def test_one_process_raises_each_note_once():
    raised, lines = _run()
    _check(raised, lines)


@pytest.mark.ddp
def test_rank_zero_alone_raises_the_notes_and_every_rank_has_them(ddp_pool):
    single_raised, single_lines = _run()
    (raised0, lines0), (raised1, lines1) = ddp_pool.run(_ranks)
    _check(raised0, lines0)
    assert raised0 == single_raised and lines0 == lines1 == single_lines
    assert raised1 == []  # the other rank raises none of them
