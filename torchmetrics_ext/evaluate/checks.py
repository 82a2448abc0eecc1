"""Column and row checks for offline evaluation, with messages that name the file, column and rows.

The metrics validate their own inputs, but a bad row in a 10 GB file needs a better answer than
"preds out of range": :class:`RowChecker` finds every invalid row of a batch in a few vectorised
passes and :class:`Problems` tallies them per (file, column, reason) with the count and the first
row number, so one error (or, with ``on_invalid="skip"``, one report) says exactly what is wrong.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from torchmetrics_ext.evaluate.sources import InvalidDataError, column_names, data_rows, delimiter_hint, read_text_as

__all__ = [
    "FLOAT_IDS_HINT",
    "TEXT_IDS_HINT",
    "Column",
    "Problem",
    "Problems",
    "RowChecker",
    "check_column",
    "check_schema",
    "id_hint",
    "text_types",
    "to_numpy",
]

Kind = Literal["score", "label", "weight", "id", "segment"]
_EXPECTED = {
    "score": "numbers",
    "label": "numbers (or booleans)",
    "weight": "numbers",
    "id": "integer ids",
    "segment": "flat values (strings, numbers, dates...)",
}


@dataclass(frozen=True)
class Column:
    """A column the evaluation reads: its name, what it is for (for messages) and its kind.

    ``domain``: the rules its rows are checked by, where they are its tasks' own rather than the
    checker's (``evaluate(metric_tasks=...)``: each task against the metrics that read it):
    ``(probabilities, target, float32_weights)`` as :class:`RowChecker` takes them. A column read in
    one kind under two domains (a weight column of a task that exact AUC reads and of one it does
    not) is two columns, each with its own :attr:`key`.
    """

    name: str
    role: str
    kind: Kind
    domain: tuple[bool, str, bool] | None = None

    @property
    def key(self) -> tuple[str, Kind] | tuple[str, Kind, tuple[bool, str, bool]]:
        """The key of its valid rows in :meth:`RowChecker.check`: ``(name, kind)``, with its domain if it has one."""
        return (self.name, self.kind) if self.domain is None else (self.name, self.kind, self.domain)


CheckKey = tuple[str, Kind] | tuple[str, Kind, tuple[bool, str, bool]]


@dataclass
class Problem:
    """Invalid rows of one column of one file for one reason.

    ``first_row`` is the first invalid row's data row (0-based, the header excluded); ``line`` its
    line in a text file (the header is line 1), which the message names instead; ``None`` for
    formats without lines (Parquet, frames).

    Examples:
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import evaluate
        >>> table = pa.table({"p": [0.1, 1.5, 2.0, 0.3], "y": [0, 1, 0, 1]})
        >>> result = evaluate(table, {"click": ("p", "y")}, ["ne"], on_invalid="skip")
        >>> problem = result.problems[0]
        >>> problem.column, problem.reason, problem.count, problem.first_row
        ('p', 'outside [0, 1] (probabilities expected)', 2, 1)
        >>> print(problem)  # the line of on_invalid="error"'s message, with a hint for logits
        <pyarrow.Table>: column 'p' (predictions of task 'click') has 2 rows outside [0, 1] ... pass --from-logits ...
    """

    source: str
    column: str
    role: str
    reason: str
    count: int = 0
    first_row: int = -1
    line: int | None = None

    def __str__(self) -> str:
        rows, reason = "rows", self.reason
        if self.count == 1:  # "1 row that is null", "2 rows that are null"
            rows, reason = "row", re.sub(r"^that are\b", "that is", reason)
        hint = _LOGITS_HINT if self.reason == _OUTSIDE_PROBABILITIES else ""
        return (
            f"{self.source}: column {self.column!r} ({self.role}) has {self.count:,} {rows} {reason} "
            f"(first at {data_rows(self.first_row) if self.line is None else f'line {self.line:,}'}){hint}"
        )


_OUTSIDE_PROBABILITIES = "outside [0, 1] (probabilities expected)"
# one message for the command line and the Python API, which share the error
_LOGITS_HINT = "; if the column holds logits, pass --from-logits (from_logits=True in Python)"


@dataclass
class Problems:
    """Invalid-row tallies, in order of first appearance."""

    items: dict[tuple[str, str, str], Problem] = field(default_factory=dict)

    def add(self, source: str, column: Column, reason: str, count: int, first_row: int) -> None:
        """Count ``count`` more rows; ``first_row`` is kept from the first report."""
        key = (source, column.name, reason)
        if key not in self.items:
            self.items[key] = Problem(source, column.name, column.role, reason, 0, first_row)
        self.items[key].count += count

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items.values())

    def message(self) -> str:
        """One line per problem."""
        return "\n".join(str(p) for p in self.items.values())


def _type_ok(kind: Kind, dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_null(dtype):  # no value at all: every row is a null row (or the null segment)
        return True
    # decimals (SQL, Spark) are numbers: read as their nearest float64, as a CSV file's text is
    numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
    if kind in ("score", "weight"):
        return numeric
    if kind == "label":
        return numeric or pa.types.is_boolean(dtype)
    if kind == "id":
        return pa.types.is_integer(dtype)
    return not pa.types.is_nested(dtype)


def _partition_hint(source: str, name: str) -> str:
    """Why a column named by a Hive partition directory of ``source`` (``.../country=FR/part-0.parquet``) is missing.

    The keys of the directories below a directory (or a glob's literal part) named are columns
    (:class:`~torchmetrics_ext.evaluate.sources.PartitionedSource`); a key of a directory above
    it, or of a file named alone, is not.
    """
    directories = os.path.normpath(source).split(os.sep)[:-1]
    key = next((d for d in directories if d.startswith(f"{name}=")), None)
    if key is None:
        return ""
    return (
        f" {name!r} is a Hive partition key (directory {key!r}), which is a column of the files below a "
        "directory named (or a glob's first wildcard), not of a file named alone or below a directory named "
        "inside the partitions; name the dataset's root directory (the one holding the key=value directories). "
        "A key pyarrow.dataset cannot type (every value of it null) is no column."
    )


def _closest_column(name: str, names: list[str], taken: Collection[str] = ()) -> str:
    """``" (did you mean 'p_click'?)"`` for the column a missing ``name`` most likely meant, or ``""``.

    The same name but for case or spaces around it (``--task "click = p_click : y_click"``), else
    the closest spelling: in a log table of hundreds of columns the list alone hides it. Columns in
    ``taken`` (read in another role) are never the guess: a missing ``y_like`` next to the ``y_click``
    another task reads is no typo of it.
    """
    names = [n for n in names if n not in taken]
    same = [n for n in names if n.strip().casefold() == name.strip().casefold()]
    guess = same or difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


def check_column(
    source: str,
    schema: pa.Schema,
    name: str,
    role: str,
    hint: Callable[[str], str] | None = None,
    taken: Collection[str] = (),
) -> pa.DataType:
    """The type of column ``name``; :class:`InvalidDataError` if it is missing or not the only one of that name.

    Args:
        source: the file (or frame) name used in the message.
        schema: its schema.
        name: the column.
        role: what it is for, for the message (``"labels of task 'click'"``).
        hint: where a missing column may be instead (a DataFrame's index), added to the message.
        taken: the other columns read, never suggested for a missing one.
    """
    found = schema.get_all_field_indices(name)
    if not found:
        names = column_names(schema)
        if names is None:  # a header pyarrow cannot decode: the column may be there, spelt in another encoding
            raise InvalidDataError(
                f"{source}: column {name!r} ({role}) is missing, and the header holds names that are not UTF-8 "
                "text (a file saved as latin-1 or cp1252?); CSV files are read as UTF-8: save the file as UTF-8."
            )
        extra = (hint(name) if hint is not None else "") + _partition_hint(source, name) + delimiter_hint(names)
        guess = _closest_column(name, names, taken)
        extra += _separator_hint(name, names, role)
        raise InvalidDataError(f"{source}: column {name!r} ({role}) is missing; found columns {names}{guess}.{extra}")
    if len(found) > 1:
        raise InvalidDataError(
            f"{source}: column {name!r} ({role}) is duplicated: {len(found)} columns have that name "
            f"(positions {found}, counting from 0); a column read must have a name of its own."
        )
    return schema.field(found[0]).type


def _separator_hint(name: str, names: Sequence[str] | None, role: str) -> str:
    """Why a missing ``--by`` column ``"country dataset"`` (or ``;``, ``|``) fails: several columns take commas.

    ``""`` unless the role is a segment column and ``name`` splits at spaces, ``;`` or ``|`` into
    two or more names that are all columns.
    """
    parts = [part for part in re.split(r"[\s;|]+", name) if part]
    if role != "--by segment" or len(parts) < 2 or not names or not set(parts) <= set(names):
        return ""
    return (
        f" Several segment columns are separated by commas: --by {','.join(parts)} (by={parts!r} in Python, "
        "a list in a config file)."
    )


def check_schema(
    source: str,
    schema: pa.Schema,
    columns: Sequence[Column],
    inferred: bool | Collection[str] = False,
    hint: Callable[[str], str] | None = None,
) -> None:
    """Raise :class:`InvalidDataError` for the first missing, duplicated or wrongly typed column.

    A column of type ``null`` (no value at all: a Parquet column or pandas slice of nulls only)
    has any kind: its rows are null rows, counted (or skipped) as any null.

    Args:
        source: the file (or frame) name used in the message.
        schema: its schema.
        columns: the columns the evaluation reads; a column of several kinds (predictions that
            are also weights) comes once per kind, and must pass the type check of each.
        inferred: the types are pyarrow's guess from the first rows (CSV), for every column
            (``True``) or for the columns named (a CSV file's, not its Hive partition keys): only
            their names are checked, since the columns are read with the fixed :func:`text_types` (a value that
            does not convert fails naming it, wherever it is: a type guessed from the first rows
            would make a file valid or not with its size).
        hint: where a missing column may be instead (see :func:`check_column`).
    """
    read = {column.name for column in columns}
    for column in columns:
        dtype = check_column(source, schema, column.name, column.role, hint, read)
        guessed = inferred if isinstance(inferred, bool) else column.name in inferred
        if not guessed and not _type_ok(column.kind, dtype):
            ids = ""
            if column.kind == "id" and (_is_text(dtype) or _is_float(dtype)):
                ids = f" {TEXT_IDS_HINT if _is_text(dtype) else FLOAT_IDS_HINT}"
            raise InvalidDataError(
                f"{source}: column {column.name!r} ({column.role}) has type {dtype}; "
                f"expected {_EXPECTED[column.kind]}.{ids}"
            )


def check_slice(source: str, rows: str, schema: pa.Schema, columns: Sequence[Column]) -> None:
    """Raise :class:`InvalidDataError` for a column one slice of a pandas frame reads as a type its role refuses.

    A pandas object column is typed slice by slice from its values, and the frame's schema holds the
    type of its first values, checked by :func:`check_schema`; a later slice holding another kind of
    values (text after numbers) is refused here, naming its rows, as a whole column of that type is.

    Args:
        source: the frame's name used in the message.
        rows: the slice's rows, as messages name them (``"0-based data rows 20 to 29"``).
        schema: the slice's schema (holding every column of ``columns``).
        columns: the columns the evaluation reads but the segments (their types are agreed at the end).
    """
    for column in columns:
        dtype = schema.field(column.name).type
        if _type_ok(column.kind, dtype):
            continue
        if column.kind == "id":
            fix = TEXT_IDS_HINT if _is_text(dtype) else FLOAT_IDS_HINT
        else:
            fix = f"Convert the column first, e.g. pandas `df[{column.name!r}] = pd.to_numeric(df[{column.name!r}])`."
        raise InvalidDataError(
            f"{source}: column {column.name!r} ({column.role}) has type {dtype} in {rows}, where its first values "
            f"read as another type (a pandas object column is typed from the values of each slice read); expected "
            f"{_EXPECTED[column.kind]}. {fix}"
        )


# what to do with user or session ids written as text (hashes, "u123"): the metrics group by integers
TEXT_IDS_HINT = "Number text ids first, e.g. pandas `df[col] = df[col].astype('category').cat.codes`."


def _is_text(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


# what to do with ids written as floating-point numbers (5.0: a pandas integer column that held NaN, a CSV
# written from one): the same in every format, a float column of a Parquet file or frame and a CSV text alike
FLOAT_IDS_HINT = (
    "Write integer ids as integers (5, not 5.0): floating-point ids are not read as ids, since a float64 holds "
    "integers exactly only up to 2**53; convert them first, e.g. pandas `df[col] = df[col].astype('Int64')` "
    "(missing ids stay null) before writing the file, or pyarrow `table[col].cast(pa.int64())`."
)


def _is_float(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return bool(pa.types.is_floating(dtype) or pa.types.is_decimal(dtype))


def id_hint(text: str) -> str:
    """What to do with a CSV file's text ``text`` that is no integer id: a number written as a float, or a text id.

    Examples:
        >>> id_hint("5.0").startswith("Write integer ids as integers")
        True
        >>> id_hint("u7").startswith("Number text ids first")
        True
    """
    try:
        pc.cast(pa.array([text.strip(" \t")]), pa.float64())
    except pa.ArrowInvalid:
        return TEXT_IDS_HINT  # a text id ("u7", a hash in hex)
    return FLOAT_IDS_HINT  # 5.0, 1e3: a float column written out


# the types text columns (CSV) are read with, whatever pyarrow would infer from the first block
_TEXT_TYPES: dict[Kind, pa.DataType] = {
    "score": pa.float64(),
    "label": pa.string(),  # numbers or true/false, anywhere in the file: converted by to_numpy
    "weight": pa.float64(),
    "id": pa.int64(),  # integers, read as text (`_TEXT_IDS`) and converted by to_numpy: uint64 too
    "segment": pa.string(),
}
_TEXT_IDS = pa.string()  # what a column of ids alone is read as: int64 and uint64 texts, as their 64-bit patterns


def text_types(columns: Sequence[Column]) -> dict[str, pa.DataType]:
    """Fixed types to read ``columns`` of a text file with, so values never depend on the block size.

    Numbers are float64 and segments strings (the text as written, typed over every text file once
    all are read: :class:`~torchmetrics_ext.evaluate.segments.SegmentCollector`). Ids are read as
    text and converted by :func:`to_numpy`: int64 and uint64 integers alike, a uint64 id beyond
    int64 as its bit pattern (what a Parquet uint64 column reads as), so one file gives the same
    report as CSV or Parquet.
    Labels are read as text and converted by :func:`to_numpy`: numbers, or the reader's booleans
    (``true``/``false``) as 1 and 0, wherever they are in the file (guessing booleans from the
    first block made a file fail or not with its size). A column of labels and another role is
    read as float64 (numbers).

    Args:
        columns: the columns read.
    """
    out: dict[str, pa.DataType] = {}
    for column in columns:
        dtype = _TEXT_TYPES[column.kind]
        if out.get(column.name, dtype) != dtype:  # labels and another role (their types are checked): numbers
            dtype = pa.float64()
        out[column.name] = dtype
    # ids (a column of ids has no other role: the plan refuses one) as text, cast by to_numpy
    return {name: _TEXT_IDS if dtype == _TEXT_TYPES["id"] else dtype for name, dtype in out.items()}


_CSV = pa_csv.ConvertOptions()  # the reader's defaults: its null, true and false texts


def _text_labels(array: pa.Array, first_row: int, where: Callable[[int], str] = data_rows) -> pa.Array:
    """Labels read as text (CSV) as float64: numbers as the reader parses them, ``true``/``false`` as 1 and 0.

    As the reader: its null texts (``""``, ``NA``, ``nan``, ...) are null, numbers may have
    spaces around them. Vectorised; only an invalid value costs a look at the distinct texts.

    Raises:
        InvalidDataError: a value is neither (names it and ``where`` its row is, counting from ``first_row``).
    """
    try:  # plain numbers (the usual file): one cast; its NaN may be a null text of the reader's (nan)
        numbers = pc.cast(array, pa.float64())
        if not pc.any(pc.is_nan(numbers)).as_py():
            return numbers
    except pa.ArrowInvalid:
        pass
    null = pc.fill_null(pc.is_in(array, value_set=pa.array(_CSV.null_values)), True)
    text = pc.utf8_trim(array, " \t")
    true = pc.is_in(text, value_set=pa.array(_CSV.true_values))
    false = pc.is_in(text, value_set=pa.array(_CSV.false_values))
    special = pc.or_(null, pc.or_(true, false))
    try:
        numbers = pc.cast(pc.if_else(special, "0", text), pa.float64())
    except pa.ArrowInvalid:
        for value in pc.unique(pc.filter(array, pc.invert(special))).to_pylist():  # the error path only
            try:
                pc.cast(pa.array([value.strip(" \t")]), pa.float64())
            except pa.ArrowInvalid:
                row = first_row + pc.index(array, value).as_py()
                raise InvalidDataError(
                    f"invalid value {value!r} at {where(row)}; expected a number, true or false"
                ) from None
        raise
    values = pc.if_else(true, 1.0, pc.if_else(false, 0.0, numbers))
    return pc.if_else(null, pa.scalar(None, pa.float64()), values)


def _first_invalid(array: pa.Array, dtype: pa.DataType) -> int:
    """The first position of ``array`` (texts) that does not read as ``dtype`` (one does): bisection, O(n) in all."""
    low, high = 0, len(array)
    while high - low > 1:
        middle = (low + high) // 2
        if read_text_as(array.slice(low, middle - low), dtype) is None:
            high = middle
        else:
            low = middle
    return low


def _text_ids(array: pa.Array, first_row: int, where: Callable[[int], str] = data_rows) -> pa.Array:
    """Ids read as text (CSV) as int64: int64 ids as they are, uint64 ids beyond int64 as their bit pattern.

    Ids are keys matched by 64-bit pattern, and a Parquet uint64 column is read as int64 bits, so the
    text ``18446744073709551615`` is the id ``-1`` here too. Each value reads as the CSV reader reads
    it as int64 (or uint64, for a text without a minus sign): spaces around it, the reader's null
    texts. Vectorised: a plain file (int64 or uint64 ids) costs one cast; a null text, a space, or
    ids of both signs beyond int64 a few compute passes (the reader's null texts set aside, spaces
    trimmed, one cast per sign, as :func:`_text_labels` reads labels); only a text these refuse costs
    the reader's own parsing of the batch's texts (written as CSV and read back), and only an invalid
    value a bisection for it.

    Raises:
        InvalidDataError: a value is no integer of either type (names it and ``where`` its row is,
            counting from ``first_row``).
    """
    # plain integers (the usual file): one cast, which takes no text the reader refuses, to int64 where a
    # text has a minus sign, else to uint64 (non-negative int64 ids keep their bits); a cast that fails
    # costs some 20 times one that does not, so the sign picks the one that takes a plain file
    signed = pc.any(pc.fill_null(pc.starts_with(array, "-"), False)).as_py()
    try:
        return pc.cast(array, pa.int64()) if signed else pc.cast(array, pa.uint64()).view(pa.int64())
    except pa.ArrowInvalid:
        pass
    # the reader's null texts (as written) and spaces around a value, then the cast above per sign: the
    # reader's parsing without writing the texts out (about 30 times faster than read_text_as)
    null = pc.fill_null(pc.is_in(array, value_set=pa.array(_CSV.null_values)), True)
    text = pc.if_else(null, "0", pc.utf8_trim(array, " \t"))
    negative = pc.starts_with(text, "-")
    try:
        ints = pc.cast(pc.if_else(negative, text, "0"), pa.int64())
        naturals = pc.cast(pc.if_else(negative, "0", text), pa.uint64())
    except pa.ArrowInvalid:
        pass
    else:
        return pc.if_else(null, pa.scalar(None, pa.int64()), pc.if_else(negative, ints, naturals.view(pa.int64())))
    negative = pc.starts_with(pc.utf8_trim(array, " \t"), "-")
    signed = pc.if_else(negative, array, "0")  # a text with a minus sign: int64 only
    unsigned = pc.if_else(negative, "0", array)  # the others: uint64 holds every non-negative int64
    ints, naturals = read_text_as(signed, pa.int64()), read_text_as(unsigned, pa.uint64())
    if ints is None or naturals is None:
        row = _first_invalid(signed, pa.int64()) if ints is None else _first_invalid(unsigned, pa.uint64())
        value = array[row].as_py()
        expected = f"an integer id. {id_hint(value)}"
        if re.fullmatch(r"\s*-?[0-9]+\s*", value):  # an integer beyond both types
            expected = f"an integer id from {-(2**63)} to {2**64 - 1} (a uint64 id is read as its 64-bit pattern)."
        raise InvalidDataError(f"invalid value {value!r} at {where(first_row + row)}; expected {expected}")
    return pc.if_else(negative, ints, naturals.view(pa.int64()))


def to_numpy(
    array: pa.Array | pa.ChunkedArray, kind: Kind, first_row: int = 0, where: Callable[[int], str] = data_rows
) -> tuple[np.ndarray, np.ndarray | None]:
    """The values of a numeric column as numpy (zero-copy when possible) and its null mask (or ``None``).

    Labels read as text (CSV, :func:`text_types`) are converted first: numbers, or ``true``/``false``;
    so are ids read as text: int64, or uint64 as its bit pattern (an invalid value raises
    :class:`InvalidDataError` naming it and its row as ``where`` says, ``first_row`` being the
    batch's first, 0-based).

    Integer predictions are scores like any other numbers: they become float64 (as a CSV file's
    predictions are read), since the metrics take floating point predictions. uint64 ids keep
    their bit pattern as int64 (it identifies the group as well); uint64 labels and weights become
    float64, their value, and so do decimals. A column of type ``null`` (no value) is all nulls.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_null(array.type):  # an all-null slice of a pandas object column, a Parquet null column
        return np.zeros(len(array), np.int32 if kind == "id" else np.float64), np.ones(len(array), np.bool_)
    if pa.types.is_decimal(array.type):
        array = array.cast(pa.float64())  # the nearest float64, as the CSV reader parses the same text
    if kind == "label" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = _text_labels(array, first_row, where)
    elif kind == "id" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = _text_ids(array, first_row, where)
    nulls = None
    if array.null_count:
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        array = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
    values = array.to_numpy(zero_copy_only=False)
    if kind == "score" and values.dtype.kind in "iu":
        values = values.astype(np.float64)  # exact up to 2**53, as the CSV reader's float64
    elif values.dtype == np.bool_:
        values = values.view(np.uint8)
    elif values.dtype == np.uint64 and kind == "id":
        values = values.view(np.int64)  # ids: the bit pattern identifies the group as well
    elif values.dtype == np.uint64:
        values = values.astype(np.float64)  # labels, weights: the value (a view would make 2**63 negative)
    elif values.dtype.kind == "u" and kind == "id":
        values = values.astype(np.int64)
    if (
        kind == "id"
        and values.dtype == np.int64
        and len(values)
        and _INT32.min <= values.min()
        and values.max() <= _INT32.max
    ):
        values = values.astype(np.int32)  # the metrics keep ids per row: 4 bytes where they fit
    return values, nulls


_INT32 = np.iinfo(np.int32)
_FLOAT32 = np.finfo(np.float32)
_FLOAT32_REASON = (
    f"that are non-zero outside float32's range [{_FLOAT32.tiny:.8g}, {_FLOAT32.max:.8g}] (exact auc, auprc, "
    "gauc and gauprc keep weights as float32; rescale the weights)"
)


class RowChecker:
    """Finds invalid rows of a batch for every column, given the metrics' joint input domains.

    Every per-row condition the metrics refuse (:class:`~torchmetrics_ext.metrics.base.InputDomains`,
    as :class:`~torchmetrics_ext.RecMetricModule` checks it) is a reason here, so that such rows are
    counted, named and skippable rather than failing the module's update.

    Args:
        columns: the columns read (segments are never invalid: a null is its own segment); a
            column of several kinds is checked in each (values as converted once, see
            :func:`to_numpy`), a reason two kinds share (null, NaN) counting its rows once.
        probabilities: whether predictions must lie in ``[0, 1]`` (otherwise any finite number).
        target: ``"binary"`` ({0, 1}), ``"unit"`` ([0, 1]), ``"nonnegative"`` or ``"real"`` (finite).
        float32_weights: non-zero float64 weights must keep their value as float32, within
            ``[1.18e-38, 3.4e38]`` (exact AUC, AUPRC, GAUC and GAUPRC store them so); weights of
            narrower or integer types always do.
    """

    def __init__(
        self, columns: Sequence[Column], probabilities: bool, target: str, float32_weights: bool = False
    ) -> None:
        self.columns = [c for c in columns if c.kind != "segment"]
        self.probabilities = probabilities
        self.target = target
        self.float32_weights = float32_weights

    def _reasons(self, column: Column, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
        out: list[tuple[str, np.ndarray]] = []
        kind = column.kind
        floating = values.dtype.kind == "f"
        if kind == "id":
            return out
        probabilities, target, float32_weights = column.domain or (
            self.probabilities,
            self.target,
            self.float32_weights,
        )
        finite = np.isfinite(values) if floating else None
        if finite is not None:
            out.append(("that are NaN or infinite", ~finite))
        if kind == "score" and probabilities:
            out.append((_OUTSIDE_PROBABILITIES, (values < 0) | (values > 1)))
        elif kind == "weight" or (kind == "label" and target == "nonnegative"):
            out.append(("that are negative", values < 0))
        elif kind == "label" and target == "unit":
            out.append(("outside [0, 1]", (values < 0) | (values > 1)))
        elif kind == "label" and target == "binary":
            out.append(("that are not 0 or 1", (values != 0) & (values != 1)))
        if kind == "weight" and float32_weights and values.dtype == np.float64:
            # as the module's check (utilities.checks.check_float32_range): float64 columns only
            outside = (values > _FLOAT32.max) | ((values > 0) & (values < _FLOAT32.tiny))
            out.append((_FLOAT32_REASON, outside))
        if finite is None:
            return out
        # ±inf is "NaN or infinite" only (NaN compares false already): one reason per invalid value
        return [out[0], *((reason, bad & finite) for reason, bad in out[1:])]

    def check(
        self,
        source: str,
        first_row: int,
        values: Mapping[str, np.ndarray],
        nulls: Mapping[str, np.ndarray | None],
        problems: Problems,
        null_reason: str = "that are null",
        exempt: Mapping[CheckKey, np.ndarray] | None = None,
    ) -> dict[CheckKey, np.ndarray]:
        """Tally the batch's invalid rows into ``problems``; return the valid rows of each column and kind.

        One pass over the batch: ``{(column, kind): valid}`` (:attr:`Column.key`: with the column's domain
        when it has one) holds a boolean mask for each column
        checked in a kind (its role: ``"score"``, ``"label"``, ``"weight"``, ``"id"``) where some row is
        invalid in that kind, and nothing for those where every row is valid. A task keeps the rows
        valid in each of its columns (the AND of their masks), so a row invalid in one task's
        column is dropped for that task alone (``on_invalid="skip"``); a column read in several
        kinds (``weights`` = a task's labels) makes a row invalid in each kind as that kind's checks
        say. ``null_reason`` says what a null row is in the source's own terms (a CSV file's ``nan``
        text and a pandas frame's NaN are nulls: :attr:`~torchmetrics_ext.evaluate.sources.Source.null_reason`).
        ``exempt`` maps a ``(column, kind)`` to rows its checks pass over (``ignore_index``'s rows, left out
        by every task reading the column: never invalid there).

        Examples:
            >>> import numpy as np
            >>> from torchmetrics_ext.evaluate.checks import Column, Problems, RowChecker
            >>> columns = [Column("p", "predictions", "score"), Column("y", "labels", "label")]
            >>> checker = RowChecker(columns, probabilities=True, target="binary")
            >>> values = {"p": np.array([0.2, 1.5, 0.7]), "y": np.array([0.0, 1.0, 1.0])}
            >>> checker.check("a.parquet", 0, values, {"p": None, "y": None}, Problems())
            {('p', 'score'): array([ True, False,  True])}
        """
        valid: dict[CheckKey, np.ndarray] = {}
        seen: set[tuple[str, str]] = set()  # a column of several kinds: a reason they share counts once
        for column in self.columns:
            reasons = self._reasons(column, values[column.name])
            null = nulls.get(column.name)
            if null is not None:
                reasons.insert(0, (null_reason, null))
            invalid: np.ndarray | None = None
            passed = exempt.get(column.key) if exempt else None
            for reason, bad in reasons:
                if null is not None and reason != null_reason:
                    bad = bad & ~null
                if passed is not None:
                    bad = bad & ~passed
                count = int(np.count_nonzero(bad))
                if not count:
                    continue
                invalid = bad if invalid is None else invalid | bad  # in this kind, whatever counted it first
                if (column.name, reason) not in seen:
                    seen.add((column.name, reason))
                    problems.add(source, column, reason, count, first_row + int(np.argmax(bad)))
            if invalid is not None:
                valid[column.key] = ~invalid
        return valid
