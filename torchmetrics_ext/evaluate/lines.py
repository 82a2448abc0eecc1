r"""A CSV file's lines as an editor shows them, for messages that name a row (the error and report paths only).

The reader (pyarrow) counts data rows, not lines: a row's line is found by reading the file again,
up to that row. The header is line 1; a blank line is no row but counts as a line; a quoted value
holding line breaks makes its row span several lines. A file without a quote byte up to that row
(the usual numeric log) is counted with numpy, block by block (hundreds of MB a second); otherwise
Python's ``csv`` module splits the records with the reader's rules (comma, ``"`` doubled inside
a quoted value, ``\n``, ``\r\n`` or ``\r`` line ends), about 2 M rows a second.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["first_record_line", "record_lines"]

_BLOCK = 1 << 24  # bytes read at once by the quote-free count
_LF, _CR, _QUOTE = 10, 13, 34


def _scan_records(open_stream: Callable[[], Any], visit: Callable[[int, int, list[str]], bool]) -> None:
    """``visit(first line, last line, fields)`` for each data record, by Python's ``csv`` module, until it returns True.

    Stops quietly where reading fails. ``csv.field_size_limit`` is process-wide: it is raised for
    this scan only (a long value is no error here) and restored before the scan returns or raises
    (a generator held it changed between its rows, until it was closed).
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open_stream() as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""))
            header, before = False, 0
            for fields in reader:
                if fields:  # a blank line is no record
                    if header and visit(before + 1, reader.line_num, fields):
                        return
                    header = True
                before = reader.line_num
    except (OSError, ValueError, csv.Error):  # pyarrow's errors are OSError/ValueError subclasses
        return
    finally:
        csv.field_size_limit(limit)


def _plain_lines(open_stream: Callable[[], Any], wanted: set[int], block: int) -> dict[int, int] | None:
    r"""The lines of data rows ``wanted`` in a file without quotes, vectorised; ``None`` at the first quote byte.

    Every ``\r`` and ``\n`` is then a line end (``\r\n`` one); a line is blank when the byte
    before its end is another line end (or it is the file's first byte).
    """
    found: dict[int, int] = {}
    last = max(wanted)
    lines = records = 0  # lines ended so far; non-blank lines so far (the header is record 0)
    previous = _LF  # the byte before the block: the file starts as after a line end
    with open_stream() as raw:
        while True:
            data = raw.read(block)
            if not data:
                break
            a = np.frombuffer(data, np.uint8)
            if (a == _QUOTE).any():
                return None
            before = np.empty_like(a)
            before[0], before[1:] = previous, a[:-1]
            ends = np.flatnonzero((a == _CR) | ((a == _LF) & (before != _CR)))
            filled = (before[ends] != _LF) & (before[ends] != _CR)
            line_of = lines + 1 + np.flatnonzero(filled)  # the line number of each record ended in the block
            for row in [r for r in wanted if records <= r + 1 < records + len(line_of)]:
                found[row] = int(line_of[row + 1 - records])
            lines, records, previous = lines + len(ends), records + len(line_of), int(a[-1])
            if records > last + 1:
                return found
    if previous not in (_LF, _CR) and records - 1 in wanted:  # a last row without its line end
        found[records - 1] = lines + 1
    return found


def record_lines(
    open_stream: Callable[[], Any], rows: Sequence[int], block: int = _BLOCK
) -> dict[int, tuple[int, int]]:
    """The first and last line of each data row of ``rows`` (0-based); rows past the end (or unreadable) left out.

    Args:
        open_stream: opens the file as a binary stream (decompressing it), a context manager.
        rows: data rows counted from 0, the header excluded (as the reader counts them).
        block: bytes read at once by the quote-free count.
    """
    wanted = {r for r in rows if r >= 0}
    if not wanted:
        return {}
    try:
        plain = _plain_lines(open_stream, wanted, block)
    except (OSError, ValueError):
        return {}
    if plain is not None:
        return {row: (line, line) for row, line in plain.items()}
    found: dict[int, tuple[int, int]] = {}
    last, row = max(wanted), -1

    def visit(first_line: int, last_line: int, _: list[str]) -> bool:
        nonlocal row
        row += 1
        if row in wanted:
            found[row] = (first_line, last_line)
        return row >= last

    _scan_records(open_stream, visit)
    return found


def first_record_line(open_stream: Callable[[], Any], fields: int) -> int | None:
    """The first line of the first data row with other than ``fields`` fields (the row of a parse error)."""
    ragged: list[int] = []

    def visit(first_line: int, _: int, values: list[str]) -> bool:
        if len(values) != fields:
            ragged.append(first_line)
        return bool(ragged)

    _scan_records(open_stream, visit)
    return ragged[0] if ragged else None
