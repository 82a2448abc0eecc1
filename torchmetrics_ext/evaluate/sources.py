"""Where the rows come from: Parquet/CSV files, directories and globs, a ``pyarrow.Table``, a DataFrame.

Every input becomes a list of :class:`Source` objects, each cut into :class:`Chunk` units of work
(a Parquet row group, a whole CSV file, a slice of an in-memory frame). Ranks of a distributed run
take every ``world_size``-th chunk; each chunk is read as a stream of ``pyarrow.RecordBatch`` with
only the needed columns, so memory stays constant in the size of the input.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "torchmetrics_ext.evaluate reads data with pyarrow: pip install 'torchmetrics-ext[evaluate]'"
    ) from err

from torchmetrics_ext.evaluate.lines import first_record_line, record_lines
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = [
    "Chunk",
    "ConversionError",
    "InvalidDataError",
    "PartitionedSource",
    "Source",
    "data_rows",
    "delimiter_hint",
    "open_sources",
    "read_text_as",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
# compressed CSV, decompressed while reading with the codec its (lower-cased) suffix names: pyarrow's
# own detection (pyarrow.Codec.detect) is case-sensitive, and would parse DATA.CSV.GZ's bytes as text
_CSV_CODECS = {".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.zst": "zstd", ".csv.lz4": "lz4"}
COMPRESSED_CSV_SUFFIXES = tuple(_CSV_CODECS)
CSV_SUFFIXES = (".csv", *COMPRESSED_CSV_SUFFIXES)
_MIN_BLOCK, _MAX_BLOCK = 1 << 20, 1 << 30  # bytes of CSV text the reader parses at once


class InvalidDataError(ValueError):
    """The input cannot be evaluated as asked: a missing column, a wrong type or invalid rows.

    The message names the file (or frame), the column, its role and what was found.

    Examples:
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import InvalidDataError, evaluate
        >>> table = pa.table({"p": [0.1, 0.8], "y": [0, 1]})
        >>> try:
        ...     evaluate(table, {"click": ("p", "label")}, ["ctr"])
        ... except InvalidDataError as error:  # a ValueError too
        ...     print(error)
        <pyarrow.Table>: column 'label' (labels of task 'click') is missing; found columns ['p', 'y'].
    """


class ConversionError(InvalidDataError):
    """A value of a text file's column does not convert to the type the column is read with.

    Attributes:
        column: the column's name.
        value: the value as written.
        row: its data row (0-based, the header excluded), ``None`` where it was not found.
    """

    def __init__(self, message: str, column: str, value: str, row: int | None) -> None:
        super().__init__(message)
        self.column, self.value, self.row = column, value, row


def data_rows(first: int, last: int | None = None) -> str:
    """Rows ``first`` to ``last`` (one row if ``last`` is ``None``) as messages name them where there are no lines.

    Parquet files and in-memory frames have no lines: their rows are named as data rows counted from 0
    (the first row of values is row 0); CSV files name lines instead (:meth:`Source.where`).
    """
    if last is None or last == first:
        return f"0-based data row {first:,}"
    return f"0-based data rows {first:,} to {last:,}"


_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def delimiter_hint(names: Sequence[str] | None) -> str:
    """Why a CSV header read as one column holding ``;``, a tab or ``|`` (``"p;y"``) fails: another delimiter.

    ``""`` when the header is not such a column. Files are read comma-separated (Excel writes ``;``
    where ``,`` is the decimal separator; ``.tsv`` exports use tabs).
    """
    if not names or len(names) != 1:
        return ""
    found = next((d for d in _DELIMITERS if d in names[0]), None)
    if found is None:
        return ""
    return (
        f" The header is one column holding {found!r}: the file looks {_DELIMITERS[found]}-separated, and CSV files "
        f"are read comma-separated; convert it first (e.g. pandas.read_csv(path, sep={found!r}).to_parquet(...))."
    )


def column_names(schema: pa.Schema) -> list[str] | None:
    """The schema's column names, or ``None`` if one is not UTF-8 text (a CSV header saved as latin-1).

    pyarrow keeps a CSV header's bytes as they are and decodes them as UTF-8 only when a name is
    asked for: messages that list the columns use this instead of ``schema.names``.
    """
    try:
        return schema.names
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``part`` of ``source``, holding ``rows`` rows (``None``: unknown before reading).

    Attributes:
        source: the source the chunk belongs to.
        part: row group (Parquet), slice number (frames) or 0 (a CSV file is one chunk).
        rows: number of rows, when the metadata knows it.
        first_row: number (0-based) of the chunk's first row within its source, for messages.
    """

    source: Source
    part: int
    rows: int | None
    first_row: int


class Source:
    """A table-like input read as record batches; subclasses know one format.

    Attributes:
        label: the file (or frame) name used in messages.
        infers_types: whether :meth:`schema` is a guess from the first rows (CSV) rather than the
            stored types; :meth:`read` of such a source takes the types to read columns with.
        null_reason: what its null rows are, as the invalid-rows message says it: where NaN (or a
            text) reads as null, the message says so, since the user wrote no null.
        slices_typed: whether each slice :meth:`read` gives is typed from its own values (a pandas
            object column), so that a slice may hold another type than :meth:`schema` says.
    """

    label: str
    infers_types: bool = False
    slices_typed: bool = False
    null_reason: str = "that are null"

    def schema(self) -> pa.Schema:
        """Column names and types."""
        raise NotImplementedError

    def inferred(self, name: str) -> bool:
        """Whether column ``name``'s type in :meth:`schema` is a guess (a CSV file's column), not stored.

        Such a column is read with the type :meth:`read` is given for it (see ``types``).
        """
        return self.infers_types

    def chunks(self, batch_size: int) -> list[Chunk]:
        """The units a distributed run splits between ranks."""
        raise NotImplementedError

    def lines(self, rows: Sequence[int]) -> dict[int, tuple[int, int]]:
        """The file lines (first, last; the header is line 1) of data ``rows`` (0-based), where the format has lines.

        Error messages only. ``{}`` for formats without lines (Parquet, frames); a row not found is left out.
        """
        return {}

    def missing_hint(self, name: str) -> str:
        """Where a missing column ``name`` may be instead, for the error message (``""``: nowhere known)."""
        return ""

    def value_order(self, name: str) -> pa.Array | None:
        """The order column ``name``'s values are meant to come in, declared by its type.

        A pandas categorical's categories, an Arrow dictionary column's dictionary where it is marked
        ``ordered`` (a ``pyarrow.Table``'s), a polars ``Enum``'s categories. ``None``: no order of its
        own, its segments are sorted by value.
        """
        return None

    def value_order_ordered(self, name: str) -> bool:
        """Whether :meth:`value_order` of column ``name`` is declared an ordering, not only a list of categories.

        ``True`` for an ordered pandas categorical, an ordered Arrow dictionary and a polars ``Enum``
        (whose values compare in that order); ``False`` for an unordered pandas categorical (its
        categories' order is the order pandas groups by) and for a column without an order.
        """
        return False

    def where(self, first: int, last: int | None = None) -> str:
        """Data rows ``first`` to ``last`` (0-based; one row if ``last`` is ``None``) as an error message names them.

        A text file's lines as an editor shows them (``"line 7"``, ``"lines 2 to 9"``: the header is
        line 1, a quoted value holding line breaks spans several); else (or if they cannot be found)
        ``"0-based data row 5"`` (see :func:`data_rows`).
        """
        found = self.lines([first] if last is None else [first, last])
        if first not in found or (last is not None and last not in found):
            return data_rows(first, last)
        if last is None:
            return f"line {found[first][0]:,}"
        return f"lines {found[first][0]:,} to {found[last][1]:,}"

    def read(
        self,
        chunk: Chunk,
        columns: Sequence[str],
        batch_size: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The chunk's rows, ``columns`` only, in record batches of at most ``batch_size`` rows.

        ``types`` fixes the type of some columns for sources that infer types (CSV); sources
        with stored types ignore it.
        """
        raise NotImplementedError


class ParquetSource(Source):
    """A Parquet file; its row groups are the chunks and its metadata gives the row counts.

    The file is open only while its footer or a row group is read: a directory of more files than
    the process may hold open (Spark's thousands of ``part-*`` files against a limit of 1,024) is
    read one file at a time. The footer is read once and kept.
    """

    def __init__(self, path: str) -> None:
        self.label = path
        try:
            with pq.ParquetFile(path) as file:
                self._metadata = file.metadata
                self._schema = file.schema_arrow
        except (OSError, pa.ArrowException) as err:
            raise InvalidDataError(f"{path}: not a readable Parquet file ({err}).") from None

    def schema(self) -> pa.Schema:
        """The file's Arrow schema."""
        return self._schema

    def chunks(self, batch_size: int) -> list[Chunk]:
        """One chunk per row group."""
        meta, out, start = self._metadata, [], 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            out.append(Chunk(self, group, rows, start))
            start += rows
        return out

    def read(
        self,
        chunk: Chunk,
        columns: Sequence[str],
        batch_size: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream one row group (with the file's own types).

        A row group that cannot be read (a corrupt page, a truncated file whose footer survived)
        is an :class:`InvalidDataError` naming the file and the row group, as an unreadable CSV
        file is: a distributed run agrees on it (only the rank reading that row group sees it),
        where the reader's bare ``OSError`` left the other ranks in their gather.
        """
        try:
            with pq.ParquetFile(self.label, metadata=self._metadata) as file:  # the footer as read once
                yield from file.iter_batches(batch_size=batch_size, row_groups=[chunk.part], columns=list(columns))
        except (OSError, pa.ArrowException) as err:
            rows = f", {data_rows(chunk.first_row, chunk.first_row + chunk.rows - 1)}" if chunk.rows else ""
            # the reader's message on one line, without the control bytes a corrupt page can put in it
            detail = " ".join("".join(c if c.isprintable() else " " for c in str(err)).split()).rstrip(".")
            raise InvalidDataError(
                f"{self.label}: not a readable Parquet file (row group {chunk.part}{rows}: {detail})."
            ) from None


class CsvSource(Source):
    """A CSV file with a header line, read with pyarrow's streaming reader (one chunk per file).

    A name ending in ``.csv.gz``, ``.csv.bz2``, ``.csv.zst`` or ``.csv.lz4`` (in any case:
    ``DATA.CSV.GZ``) is decompressed while it is read, with the codec the suffix names, as a
    stream: memory stays the same.

    pyarrow infers a column's type from the first block it reads, so the columns an evaluation
    reads are given fixed types instead (see :meth:`read`): the result never depends on the file
    size or the block size. Quoted fields may hold line breaks, in any block.
    """

    infers_types = True
    # the reader's null texts: an empty field, NA, nan, NaN, null, N/A, #N/A...
    null_reason = "that are empty, NA, NaN or null"

    def __init__(self, path: str) -> None:
        self.label = path
        self._schema: pa.Schema | None = None

    def _open(self, columns: Sequence[str] | None, batch_size: int, types: Mapping[str, pa.DataType] | None) -> Any:
        """A streaming reader of ``columns`` (``None``: all) with ``types`` fixed; raises the reader's own errors."""
        convert = pa_csv.ConvertOptions(
            include_columns=list(columns) if columns is not None else None,
            column_types=dict(types or {}),
        )
        # blocks of about `batch_size` rows, within what the reader takes (an int32 size): larger
        # batch sizes get blocks of 1 GiB, cut into batches as any block (values never depend on it)
        read = pa_csv.ReadOptions(block_size=min(max(_MIN_BLOCK, 64 * batch_size), _MAX_BLOCK))
        # quoted fields may hold line breaks (RFC 4180): without this a block boundary inside one
        # breaks the read, so a valid file would fail with its size (no measurable cost on plain files)
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        codec = next((c for suffix, c in _CSV_CODECS.items() if self.label.lower().endswith(suffix)), None)
        # the reader parses and converts the first block here: its errors read as any block's
        stream = pa.input_stream(self.label, compression=codec)
        return pa_csv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)

    def _error(self, err: Exception, types: Mapping[str, pa.DataType] | None = None) -> InvalidDataError:
        """The error for what the reader raised, in any block: the value or row at fault, or why the file is unreadable.

        A value that does not convert names the column, the value and its line (found by reading the
        file again, that column alone as text, then the lines up to it: only once the read has
        failed), a row of another number of fields its text (the reader's own words) and its line;
        anything else (no such file, an empty file) is an unreadable file. Lines are counted as an
        editor shows them: the header is line 1, a quoted value holding line breaks spans several.
        """
        text = str(err)
        match = re.match(r"In CSV column #(\d+): ", text)
        names = (column_names(self._schema) if self._schema is not None else None) or []
        if match and int(match.group(1)) < len(names):  # the column's name in place of its position
            name = names[int(match.group(1))]
            text = f"column {name!r}: {text[match.end() :]}"
            value = re.search(r"conversion error to [^:]+: invalid value '(.*)'$", text, re.DOTALL)
            if value and name in (types or {}):
                row = self._row_of(name, value.group(1))
                where = "" if row is None else f" at {self.where(row)}"
                return ConversionError(f"{self.label}: {text}{where}", name, value.group(1), row)
            if re.search(r"conversion error to (large_)?string: invalid UTF8", text):
                row = self._not_utf8_row(name)
                where = "" if row is None else f" at {self.where(row)}"
                return InvalidDataError(
                    f"{self.label}: column {name!r} holds text that is not UTF-8{where} (a file saved as latin-1 "
                    "or cp1252?); CSV files are read as UTF-8: save the file as UTF-8."
                )
        ragged = re.match(r"CSV parse error: Expected (\d+) columns, got \d+", text)
        if isinstance(err, pa.ArrowInvalid) and ragged:  # the reader says which text, not where: name its line
            line = self._ragged_line(int(ragged.group(1)))
            text = text if line is None else f"line {line:,}: {text}"
        if isinstance(err, pa.ArrowInvalid) and (match or ragged or text.startswith("CSV parse error")):
            hint = delimiter_hint(self._header())
            return InvalidDataError(f"{self.label}: {text.rstrip('.')}." + hint if hint else f"{self.label}: {text}")
        return InvalidDataError(f"{self.label}: not a readable CSV file ({text}).")

    def _header(self) -> list[str] | None:
        """The header's names, split at commas as the reader does; ``None`` if unreadable (error messages only)."""
        if self._schema is not None:
            return column_names(self._schema)
        codec = next((c for suffix, c in _CSV_CODECS.items() if self.label.lower().endswith(suffix)), None)
        try:
            with pa.input_stream(self.label, compression=codec) as stream:
                first = stream.read(1 << 16).decode("utf-8", "replace").splitlines()[:1]
        except (OSError, pa.ArrowException):
            return None
        return first[0].split(",") if first else None

    def _stream(self) -> Any:
        """The file as a binary stream, decompressed with the codec its suffix names."""
        codec = next((c for suffix, c in _CSV_CODECS.items() if self.label.lower().endswith(suffix)), None)
        return pa.input_stream(self.label, compression=codec)

    def lines(self, rows: Sequence[int]) -> dict[int, tuple[int, int]]:
        """The lines of data ``rows`` (0-based): one pass over the file, up to the last row asked for."""
        return record_lines(self._stream, rows)

    def _ragged_line(self, expected: int) -> int | None:
        """The first line of the first data row with other than ``expected`` fields (a parse error's row)."""
        return first_record_line(self._stream, expected)

    def _row_of(self, name: str, value: str) -> int | None:
        """The first row (counting from 0) whose ``name`` column holds the text ``value``; ``None`` if not found.

        The error path of a value that does not convert: the column alone is read again as text,
        a block at a time (memory stays constant), up to that row.
        """
        start = 0
        try:
            for block in self._open([name], _MIN_BLOCK // 64, {name: pa.string()}):
                found = pc.index(block.column(0), value).as_py()
                if found >= 0:
                    return start + found
                start += block.num_rows
        except (OSError, pa.ArrowException):  # a later malformed row, say: the message goes without the row
            return None
        return None

    def _not_utf8_row(self, name: str) -> int | None:
        """The first row (counting from 0) whose ``name`` column is not UTF-8 text; ``None`` if not found.

        The error path of a text column that does not decode: the column alone is read again as
        bytes, a block at a time (memory stays constant); only the block that fails is looked at row by row.
        """
        start = 0
        try:
            for block in self._open([name], _MIN_BLOCK // 64, {name: pa.binary()}):
                column = block.column(0)
                try:
                    column.cast(pa.string())
                except pa.ArrowInvalid:
                    for offset, value in enumerate(column.to_pylist()):
                        try:
                            value is None or value.decode("utf-8")
                        except UnicodeDecodeError:
                            return start + offset
                start += block.num_rows
        except (OSError, pa.ArrowException):
            return None
        return None

    def schema(self) -> pa.Schema:
        """Column names and the types pyarrow infers from the first block (``null``: no value there)."""
        if self._schema is None:
            try:
                self._schema = self._open(None, 1, None).schema  # the smallest block: 1 MiB
            except (OSError, pa.ArrowException) as err:
                raise self._error(err) from None
        return self._schema

    def chunks(self, batch_size: int) -> list[Chunk]:
        """The whole file (its row count is unknown until it is read)."""
        return [Chunk(self, 0, None, 0)]

    def read(
        self,
        chunk: Chunk,
        columns: Sequence[str],
        batch_size: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the file block by block, cut into ``batch_size`` rows; ``types`` fixes column types.

        Raises:
            InvalidDataError: a value does not convert to its column's type (names the file and column).
        """
        self.schema()  # the header, for messages that name a column
        try:
            reader = self._open(columns, batch_size, types)
        except (OSError, pa.ArrowException) as err:
            raise self._error(err, types) from None
        while True:
            try:
                block = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as err:
                raise self._error(err, types) from None
            for start in range(0, block.num_rows, batch_size):
                yield block.slice(start, batch_size)


def read_text_as(texts: Any, dtype: pa.DataType) -> Any:
    """Text values of a CSV column as the CSV reader reads them with ``dtype``; ``None`` if one does not convert.

    The texts (a column read as ``string``) are written as one quoted CSV column and read back
    with the options of :class:`CsvSource`: the reader's own parsing, trimming and null values
    (a quoted field converts as an unquoted one), so each value is what reading the file's
    column with ``dtype`` gives.
    """
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.table({"v": texts}), sink, pa_csv.WriteOptions(quoting_style="all_valid"))
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(sink.getvalue()),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types={"v": dtype}),
        )
    except (OSError, pa.ArrowException):
        return None
    return table.column(0).combine_chunks()


def _run_end_decoded(array: Any) -> Any:
    """A run-end encoded Arrow array (or chunked array) as its plain values; any other array as it is.

    ``pyarrow.compute.run_end_decode`` (pyarrow 12 and later) has no kernel for dictionary values:
    their indices are decoded and the dictionary (and its ``ordered`` flag) kept.
    """
    if not pa.types.is_run_end_encoded(array.type):
        return array
    if isinstance(array, pa.ChunkedArray):
        return pa.chunked_array([_run_end_decoded(chunk) for chunk in array.chunks], array.type.value_type)
    values = array.values  # every run's value, with the run ends unsliced: the slice is the offset
    if pa.types.is_dictionary(values.type):
        indices = pa.RunEndEncodedArray.from_arrays(array.run_ends, values.indices).slice(array.offset, len(array))
        return pa.DictionaryArray.from_arrays(
            pc.run_end_decode(indices), values.dictionary, ordered=values.type.ordered
        )
    return pc.run_end_decode(array)


def _decoded_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each run-end encoded column typed as its values (the type it is read as)."""
    for i, field in enumerate(schema):
        if pa.types.is_run_end_encoded(field.type):
            schema = schema.set(i, field.with_type(field.type.value_type))
    return schema


class TableSource(Source):
    """An in-memory ``pyarrow.Table`` (or anything converted to one slice at a time).

    A run-end encoded column (``pyarrow.RunEndEncodedArray``) is read as its values: its type is
    its values' type, and each slice is decoded as it is read (only that slice's rows).
    """

    def __init__(self, table: Any, label: str, num_rows: int, schema: pa.Schema) -> None:
        self.label = label
        self._table = table
        self._rows = num_rows
        self._schema = _decoded_schema(schema)

    def schema(self) -> pa.Schema:
        """The frame's schema."""
        return self._schema

    def chunks(self, batch_size: int) -> list[Chunk]:
        """Consecutive slices of ``batch_size`` rows."""
        return [
            Chunk(self, i, min(batch_size, self._rows - start), start)
            for i, start in enumerate(range(0, self._rows, batch_size))
        ]

    def value_order(self, name: str) -> pa.Array | None:
        """An Arrow dictionary column marked ``ordered``: its dictionary, where every chunk holds the same one.

        Chunks holding different dictionaries declare no one order: sorted by value, as an unordered
        dictionary column is (its dictionary is an encoding).
        """
        position = self._schema.get_field_index(name)  # -1: missing, or a name held twice
        dtype = None if position < 0 else self._schema.field(position).type
        if dtype is None or not pa.types.is_dictionary(dtype) or not dtype.ordered:
            return None
        chunks = self._table.column(position).chunks  # run-end encoded ones: their values hold the dictionary
        dictionaries = [
            (chunk.values if pa.types.is_run_end_encoded(chunk.type) else chunk).dictionary for chunk in chunks
        ]
        if not dictionaries or not all(d.equals(dictionaries[0]) for d in dictionaries[1:]):
            return None
        return dictionaries[0]

    def value_order_ordered(self, name: str) -> bool:
        """An ordered dictionary's order is an ordering."""
        return self.value_order(name) is not None

    def _slice(self, start: int, length: int, columns: Sequence[str]) -> pa.Table:
        return self._table.slice(start, length).select(list(columns))

    def read(
        self,
        chunk: Chunk,
        columns: Sequence[str],
        batch_size: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Convert one slice (never the whole frame at once), with the frame's own types."""
        table = self._slice(chunk.first_row, chunk.rows or 0, columns)
        if any(pa.types.is_run_end_encoded(dtype) for dtype in table.schema.types):
            table = pa.table([_run_end_decoded(column) for column in table.columns], names=table.column_names)
        yield from table.combine_chunks().to_batches(max_chunksize=batch_size)


class PandasSource(TableSource):
    """A pandas DataFrame, converted to Arrow one slice of the needed columns at a time.

    Columns are named as pyarrow names them: a label that is not a string (a frame built from a
    numpy array has columns ``0``, ``1``, ...) by its text (``"0"``); they are found by position.
    Each slice's object columns are typed from that slice's values (ints and floats: double), as
    pyarrow converts them; the segment encoder casts every slice to the discovered type. A slice
    mixing kinds (numbers and text), or holding Python ints beyond int64 (which pyarrow does not
    convert from objects), fails naming the column and its rows, with the conversion to make
    first (``astype("string")``, ``pd.to_numeric``, ``astype("UInt64")``). NaN is pandas'
    missing value: it is read as null (the null segment, a "null or NaN" row).
    """

    null_reason = "that are null or NaN"  # pandas' missing value, None and NaN alike
    slices_typed = True  # an object column: each slice typed from its values

    def __init__(self, table: Any, label: str, num_rows: int, schema: pa.Schema) -> None:
        super().__init__(table, label, num_rows, schema)
        # schema name -> column position (one field per column, in order; a name held twice is
        # refused by the column checks before it is read)
        self._positions = {name: i for i, name in enumerate(schema.names)}
        self._index_names = [None if n is None else str(n) for n in table.index.names]  # read as no column

    def missing_hint(self, name: str) -> str:
        """The frame's index (or a level of its MultiIndex) of that name, which is no column: ``reset_index()``."""
        if name not in self._index_names:
            return ""
        if len(self._index_names) == 1:
            where = f"The DataFrame's index is named {name!r}"
        else:
            where = f"Level {self._index_names.index(name)} of the DataFrame's MultiIndex is named {name!r}"
        return f" {where}, and an index is not a column: pass df.reset_index() to make it one."

    def value_order(self, name: str) -> pa.Array | None:
        """A categorical column's categories, in their order (ordered or not): pandas groups by that order."""
        position = self._positions.get(name)
        dtype = None if position is None else self._table.dtypes.iloc[position]
        categories = getattr(dtype, "categories", None) if getattr(dtype, "name", None) == "category" else None
        if categories is None:
            return None
        try:
            return pa.Array.from_pandas(categories)
        except _UNCONVERTIBLE:  # categories pyarrow cannot convert: the column fails as it is read
            return None

    def value_order_ordered(self, name: str) -> bool:
        """Whether the categorical column is ``ordered=True``."""
        position = self._positions.get(name)
        dtype = None if position is None else self._table.dtypes.iloc[position]
        return getattr(dtype, "name", None) == "category" and bool(getattr(dtype, "ordered", False))

    def _slice(self, start: int, length: int, columns: Sequence[str]) -> pa.Table:
        frame = self._table.iloc[start : start + length, [self._positions[name] for name in columns]]
        frame = frame.set_axis(list(columns), axis=1)  # the schema's names (0 -> "0")
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except _UNCONVERTIBLE as err:  # an object column mixing kinds (numbers and text), or huge ints
            raise InvalidDataError(self._mixed(frame, start, err)) from None

    def _mixed(self, frame: Any, start: int, err: Exception) -> str:
        """The message for a slice pyarrow cannot convert: the column mixing value types, and the fix."""
        rows = data_rows(start, start + len(frame) - 1)
        for name in dict.fromkeys(frame.columns):
            try:
                pa.Table.from_pandas(frame[[name]], preserve_index=False)
            except _UNCONVERTIBLE as own:
                reason = own.args[0] if own.args else own  # pyarrow adds "Conversion failed for column ..."
                if isinstance(own, OverflowError):
                    return (
                        f"{self.label}: column {name!r} holds Python ints beyond int64, which pyarrow does not "
                        f"convert from an object column, {rows} ({reason}); convert it first, e.g. "
                        f'df[{name!r}].astype("UInt64") for integers below 2**64 or df[{name!r}].astype("string") '
                        "for text (missing values stay null)."
                    )
                return (
                    f"{self.label}: column {name!r} mixes value types in this one input, {rows} ({reason}); "
                    f'a column needs one type: convert it first, e.g. df[{name!r}].astype("string") for '
                    f"text (missing values stay null) or pd.to_numeric(df[{name!r}]) for numbers."
                )
        return f"{self.label}: {rows}: {err}"


class PolarsSource(TableSource):
    """A polars DataFrame, converted to Arrow one slice of the needed columns at a time."""

    def value_order(self, name: str) -> pa.Array | None:
        """A polars ``Enum`` column's categories, in their declared order (a ``Categorical`` declares none)."""
        dtype = self._table.schema.get(name)
        if type(dtype).__name__ != "Enum":
            return None
        return dtype.categories.to_arrow()

    def value_order_ordered(self, name: str) -> bool:
        """An ``Enum``'s order is an ordering (its values compare in it)."""
        return type(self._table.schema.get(name)).__name__ == "Enum"

    def _slice(self, start: int, length: int, columns: Sequence[str]) -> pa.Table:
        return self._table.slice(start, length).select(list(columns)).to_arrow()


class PartitionedSource(Source):
    """A file below Hive partition directories (``logs/country=FR/part-0.parquet``): its keys are columns too.

    Each key the file does not hold itself is a column of the key's value on every row, typed as
    ``pyarrow.dataset``'s hive partitioning types it over the whole directory (``int32`` if every
    value is a 32-bit integer, else ``string``; ``__HIVE_DEFAULT_PARTITION__`` is null). A key
    column's type is stored, not inferred, even in a CSV file. A column the file holds is read
    from the file (``pyarrow.dataset`` would read the key's value instead).

    Args:
        inner: the file's own source.
        keys: the file's partition keys and their values.
    """

    def __init__(self, inner: Source, keys: Mapping[str, pa.Scalar]) -> None:
        self.label = inner.label
        self.infers_types = inner.infers_types
        self.null_reason = inner.null_reason
        self._inner = inner
        self._keys = dict(keys)
        self._added: dict[str, pa.Scalar] | None = None

    @property
    def inner(self) -> Source:
        """The file's own source."""
        return self._inner

    def added(self) -> dict[str, pa.Scalar]:
        """The keys the file does not hold itself (read from its header or footer once)."""
        if self._added is None:
            held = set(column_names(self._inner.schema()) or ())
            self._added = {name: value for name, value in self._keys.items() if name not in held}
        return self._added

    def schema(self) -> pa.Schema:
        """The file's columns, then its added keys."""
        schema = self._inner.schema()
        for name, value in self.added().items():
            schema = schema.append(pa.field(name, value.type))
        return schema

    def inferred(self, name: str) -> bool:
        """Keys are typed from the directory names; the file's columns as the file says."""
        return name not in self.added() and self._inner.inferred(name)

    def chunks(self, batch_size: int) -> list[Chunk]:
        """The file's chunks."""
        return [Chunk(self, c.part, c.rows, c.first_row) for c in self._inner.chunks(batch_size)]

    def lines(self, rows: Sequence[int]) -> dict[int, tuple[int, int]]:
        """The file's lines of data ``rows``, as its own source finds them."""
        return self._inner.lines(rows)

    def read(
        self,
        chunk: Chunk,
        columns: Sequence[str],
        batch_size: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The file's columns as its source reads them, the keys as constant columns."""
        added = self.added()
        own = [name for name in columns if name not in added]
        # a read of keys alone still needs the rows: read the file's first column for them
        read = own or (column_names(self._inner.schema()) or [])[:1]
        inner = Chunk(self._inner, chunk.part, chunk.rows, chunk.first_row)
        kept = {name: dtype for name, dtype in (types or {}).items() if name not in added}
        for batch in self._inner.read(inner, read, batch_size, kept):
            arrays = [
                pa.repeat(added[name], batch.num_rows) if name in added else batch.column(name) for name in columns
            ]
            yield pa.RecordBatch.from_arrays(arrays, names=list(columns))


_DATA_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES  # what a directory or a glob reads
_HIDDEN = (".", "_")  # hidden, or a writer's metadata or scratch (_SUCCESS, _temporary, .ipynb_checkpoints)


def _links_to_ancestor(link: str, parent: str) -> bool:
    """Whether ``link`` points to ``parent`` (the real path of the directory holding it) or to an ancestor of it.

    Such a link is a cycle: following it reads the directory it lies in again, and that
    directory's siblings, which need not be below the directory named.
    """
    target = os.path.realpath(link)
    try:
        return os.path.commonpath([target, parent]) == target
    except ValueError:  # different drives (Windows): no ancestor
        return False


def _walk(
    directory: str, walked: set[str], enter: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Every directory below ``directory`` (itself first) and its other entries, each real directory once.

    Symbolic links to directories are followed (``logs/day=2026-12-01 -> /mnt/...``): the tree is
    walked first without following links, then the links found, level by level in sorted order,
    so a directory that lies in the tree is reached where it lies and one reached only through
    links by the first link in that order. A directory whose real path is in ``walked`` (read
    already, by this walk or an earlier one given the same set) is skipped, unlisted, and so is
    a link cycle: a link to the directory holding it or to one of that directory's ancestors
    (``loop -> ..``, ``self -> .``), whose target may lie outside the directory named
    (``logs/day=1/loop -> ..`` named as ``logs/day=1`` would read every other partition of
    ``logs``). So the walk lists each real directory at most once and always ends, whatever the
    links. ``enter(path)`` says whether to go into a subdirectory (default: every one).
    Entries that are not directories include broken links and links to files.
    """
    pending = [directory]
    while pending:
        links: list[str] = []
        for top in pending:
            if os.path.realpath(top) in walked:  # a link to a directory read already: not listed again
                continue
            for root, directories, names in os.walk(top):  # links to directories are not walked: collected
                real = os.path.realpath(root)
                if real in walked:
                    directories[:] = []
                    continue
                walked.add(real)
                inside = sorted(d for d in directories if enter is None or enter(os.path.join(root, d)))
                linked = [os.path.join(root, d) for d in inside if os.path.islink(os.path.join(root, d))]
                links += [link for link in linked if not _links_to_ancestor(link, real)]
                directories[:] = [d for d in inside if not os.path.islink(os.path.join(root, d))]
                yield root, names
        pending = sorted(links)


def _data_files(directory: str, walked: set[str] | None = None) -> list[str]:
    """The Parquet and CSV files below ``directory``, recursively, sorted; hidden names skipped below it.

    The directories are walked by :func:`_walk` (links followed, each real directory once, link
    cycles skipped); ``walked`` holds the real paths of directories read already (by an earlier
    match of the same glob), which are not walked again.
    """
    found: list[str] = []

    def visible(path: str) -> bool:
        return not os.path.basename(path).startswith(_HIDDEN)

    for root, names in _walk(directory, set() if walked is None else walked, visible):
        keep = [n for n in names if n.lower().endswith(_DATA_SUFFIXES) and not n.startswith(_HIDDEN)]
        found += [os.path.join(root, n) for n in keep]
    return sorted(found)


def _glob_states(states: set[int], parts: Sequence[str]) -> set[int]:
    """``states`` (positions in ``parts``) with those a ``**`` at them can skip to (it matches no name too)."""
    out, stack = set(states), list(states)
    while stack:
        i = stack.pop()
        if i < len(parts) and parts[i] == "**" and i + 1 not in out:
            out.add(i + 1)
            stack.append(i + 1)
    return out


def _glob_step(states: set[int], name: str, parts: Sequence[str]) -> set[int]:
    """The positions in ``parts`` reached from ``states`` by one more path name, as Python's glob matches it.

    ``**`` matches any name not starting with ``.``; another part matches as :func:`fnmatch.fnmatch`,
    a name starting with ``.`` only where the part starts so too.
    """
    out: set[int] = set()
    for i in states:
        if i == len(parts):
            continue
        part = parts[i]
        if part == "**":
            if not name.startswith("."):
                out.add(i)
        elif fnmatch.fnmatch(name, part) and (part.startswith(".") or not name.startswith(".")):
            out.add(i + 1)
    return _glob_states(out, parts)


def _last_part_takes(states: set[int], name: str, parts: Sequence[str]) -> bool:
    """Whether a file ``name`` at ``states`` ends a match: the pattern's last part matches the name itself.

    A ``**`` matches no name only between directories: Python's glob lists no file for ``a/*.csv/**``
    (the ``**`` would have to match nothing after the file ``a/b.csv``), so a file is matched only where
    the last part takes its name (``a/**`` and ``a/*.csv`` match ``a/b.csv``).
    """
    last = len(parts) - 1
    return last in states and len(parts) in _glob_step({last}, name, parts)


def _glob(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, sorted: Python's recursive glob, with ``**`` matched over :func:`_walk`.

    Python's glob follows symbolic links into every directory, so a ``**`` over a tree holding
    link cycles (``loop -> ..``) lists paths through them until the paths grow too long, a number
    of paths exponential in the number of cycles. A pattern with a ``**`` part is matched over the
    cycle-safe walk instead, which reaches each real directory once (a directory linked twice is
    matched by its first path); it goes only into directories the pattern can still match. Other
    patterns (their depth is bounded) are Python's glob's matches. A match that is a directory
    ends with the separator where the pattern does.
    """
    parts = pattern.split(os.sep)
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    rest = parts[first:]
    while rest and rest[-1] == "":  # a trailing separator: directories only
        rest = rest[:-1]
    if "**" not in rest or any(part in ("", os.curdir, os.pardir) for part in rest):
        return sorted(glob.glob(pattern, recursive=True))
    directories_only = pattern.endswith(os.sep)
    prefix = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else "")
    start = prefix or os.curdir
    if not os.path.isdir(start):
        return []

    def states(path: str) -> set[int]:
        relative = os.path.relpath(path, start)
        out = _glob_states({0}, rest)
        for name in [] if relative == os.curdir else relative.split(os.sep):
            out = _glob_step(out, name, rest)
        return out

    def place(path: str) -> str:  # the path as glob writes it: from the pattern's own prefix
        relative = os.path.relpath(path, start)
        if relative == os.curdir:
            return prefix
        return os.path.join(prefix, relative) if prefix else relative

    matches: list[str] = []
    for root, names in _walk(start, set(), lambda path: bool(states(path))):
        reached = states(root)
        if len(rest) in reached and (prefix or root != start):
            matches.append(os.path.join(place(root), "") if directories_only or root == start else place(root))
        if not directories_only:
            matches += [place(os.path.join(root, n)) for n in names if _last_part_takes(reached, n, rest)]
    return sorted(matches)


def _broken_link(path: str) -> InvalidDataError:
    """The error of a data file that is a symbolic link to nothing (a file moved or deleted)."""
    return InvalidDataError(
        f"{path}: broken symbolic link (to {os.readlink(path)!r}, which does not exist); "
        "fix or remove the link, or name the files to read."
    )


def _spelled(pattern: str, match: str) -> bool:
    """Whether every name starting with ``.`` or ``_`` that ``pattern``'s wildcards matched in ``match`` is asked for.

    A name is asked for when the part of the glob at its place starts with the same character and
    matches it (``_temp*``, ``logs/*/_temporary``; with ``**``, whose parts match any depth, any
    part of the glob that does): ``*`` matches no such name, as Python's glob already does for
    names starting with ``.``. The literal directories before the first wildcard are named.
    """
    parts = os.path.normpath(pattern).split(os.sep)
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    names = os.path.normpath(match).split(os.sep)[first:]
    rest = parts[first:]
    if "**" not in rest and len(rest) == len(names):  # one part of the glob per name, in place
        return all(
            not name.startswith(_HIDDEN) or (part[:1] == name[:1] and fnmatch.fnmatch(name, part))
            for name, part in zip(names, rest)
        )
    spelled = [part for part in rest if part.startswith(_HIDDEN)]
    return all(not name.startswith(_HIDDEN) or any(fnmatch.fnmatch(name, part) for part in spelled) for name in names)


def _expand(path: str) -> list[str]:
    """Files named by a path: the file itself, a directory's data files (recursively) or a glob's matches.

    Below a directory, files and subdirectories whose name starts with ``.`` or ``_`` are skipped
    (``pyarrow.dataset``'s rule: Jupyter checkpoints, Spark's ``_temporary`` partial output, ...);
    symbolic links to directories are followed, each real directory read once (see :func:`_data_files`);
    the directory named itself may have any name, and a file named is read whatever its name
    (one without a Parquet or CSV suffix is refused by :func:`_file_source`). A glob reads what
    it matches as a directory reads its entries: Parquet and CSV files (by suffix; other files,
    such as ``_SUCCESS`` or ``notes.txt``, are skipped) and directories, read as a directory
    named is (``logs/2024-06-*/``); a glob that leaves no such file fails. Its wildcards match
    no name starting with ``.`` or ``_`` unless that part of the glob starts so too (``out/*``
    skips ``out/_temporary``, ``out/_*`` reads it). Files found twice (``data/**`` matches
    directories and the files below them) are read once, and a real directory that several
    matches reach (``data/*`` matching ``a`` and a link to it) is walked once; a ``**`` is
    matched over the same cycle-safe walk as a directory (:func:`_glob`), so link cycles end it.
    A data file that is a broken symbolic link (``x.csv -> moved.csv``) fails naming it, whether
    a directory, a glob or the path itself reaches it.
    """
    if os.path.isdir(path):
        found = _data_files(path)
        if not found:
            raise InvalidDataError(
                f"{path}: directory holds no Parquet or CSV file (names starting with '.' or '_' are skipped)."
            )
        return _readable(found)
    if os.path.exists(path):
        return [path]
    matches = _glob(path)
    if not matches:
        raise InvalidDataError(f"{path}: no such file, directory or glob match.")
    files: dict[str, str] = {}  # normalised path -> the path as found (the label of messages)
    walked: set[str] = set()  # real directories read: a directory two matches reach is walked once
    for match in matches:
        if not _spelled(path, match):
            continue
        if _is_cycle(match):  # `data/a/*` matching `data/a/up -> ..`: skipped, as a directory's walk skips it
            continue
        if os.path.isdir(match):
            found = _data_files(match, walked)
        else:  # a file of another format (_SUCCESS, notes.txt) is skipped, as in a directory; a link to nothing
            # with a data suffix is listed, as a directory lists it (and refused below)
            data = (os.path.isfile(match) or os.path.islink(match)) and match.lower().endswith(_DATA_SUFFIXES)
            found = [match] if data else []
        for file in found:
            files.setdefault(os.path.normpath(file), file)
    if not files:
        raise InvalidDataError(
            f"{path}: the glob matches {len(matches):,} path(s) but no Parquet or CSV file (files ending in "
            f"{', '.join(_DATA_SUFFIXES)}; names starting with '.' or '_' are skipped unless the glob's part "
            "starts so too, e.g. '_*')."
        )
    return _readable([files[key] for key in sorted(files)])


def _is_cycle(path: str) -> bool:
    """Whether ``path`` is a symbolic link to the directory holding it or to an ancestor of it (``up -> ..``)."""
    link = path.rstrip(os.sep) or path
    if not (os.path.islink(link) and os.path.isdir(link)):
        return False
    return _links_to_ancestor(link, os.path.realpath(os.path.dirname(link) or os.curdir))


def _readable(files: list[str]) -> list[str]:
    """``files``, refusing a broken symbolic link among them (:func:`_broken_link`), as a file named is."""
    for file in files:
        if os.path.islink(file) and not os.path.exists(file):
            raise _broken_link(file)
    return files


def _file_source(path: str) -> Source:
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return ParquetSource(path)
    if lower.endswith(CSV_SUFFIXES):
        return CsvSource(path)
    raise InvalidDataError(f"{path}: unknown format; expected a file ending in {PARQUET_SUFFIXES + CSV_SUFFIXES}.")


_SAMPLE_ROWS = 65_536
# what pyarrow raises for pandas values it cannot convert: mixed kinds, Python ints beyond int64
_UNCONVERTIBLE = (pa.ArrowException, TypeError, OverflowError)


def _object_type(column: Any) -> pa.DataType:
    """The Arrow type of a pandas object column: that of its first slice holding a value.

    ``null`` if it holds no value. Only the rows up to that slice are read (a slice at a time);
    later slices may still read as another type (ints, then floats), as every slice is converted
    on its own; a slice mixing kinds (numbers and text) gives the type of its first value, and
    reading it fails naming the column (as does a first value pyarrow cannot convert, such as
    a Python int beyond int64: ``null`` then, so that only reading the column fails).
    """
    for start in range(0, len(column), _SAMPLE_ROWS):
        values = column.iloc[start : start + _SAMPLE_ROWS].dropna()
        if len(values):
            try:
                return pa.array(values, from_pandas=True).type
            except _UNCONVERTIBLE:
                try:
                    return pa.array(values.iloc[:1], from_pandas=True).type
                except _UNCONVERTIBLE:
                    return pa.null()
    return pa.null()


def _frame_source(data: Any) -> Source | None:
    """A source for an in-memory table or DataFrame (recognised without importing pandas or polars)."""
    if isinstance(data, pa.Table):
        return TableSource(data, "<pyarrow.Table>", data.num_rows, data.schema)
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and type(data).__name__ == "DataFrame":
        empty = data.iloc[:0]
        if empty.columns.has_duplicates:  # pyarrow refuses the frame: one field per column, so that
            # reading a duplicated name fails the schema check naming it (the others read as usual)
            columns = range(empty.shape[1])
            fields = [pa.Schema.from_pandas(empty.iloc[:, [i]], preserve_index=False)[0] for i in columns]
        else:
            fields = list(pa.Schema.from_pandas(empty, preserve_index=False))
        # an empty object column has type null: type object columns from their values instead
        fields = [
            field.with_type(_object_type(data.iloc[:, i])) if pa.types.is_null(field.type) else field
            for i, field in enumerate(fields)
        ]
        return PandasSource(data, "<pandas.DataFrame>", len(data), pa.schema(fields))
    if module == "polars" and type(data).__name__ == "DataFrame":
        return PolarsSource(data, "<polars.DataFrame>", data.height, data.slice(0, 0).to_arrow().schema)
    return None


def _data_hint(data: Any) -> str:
    """How to turn a refused ``data`` into one that is accepted, where there is an obvious way."""
    kind = type(data).__name__
    if kind == "LazyFrame":
        return ": collect it first (`data.collect()`)"
    if isinstance(data, pa.RecordBatch):
        return ": make it a table (`pyarrow.Table.from_batches([data])`)"
    if isinstance(data, pa.RecordBatchReader):
        return ": read it as a table (`data.read_all()`)"
    if type(data).__module__.startswith("pyarrow") and kind.endswith("Dataset"):
        files = "its files (`data.files`, streamed) or " if hasattr(data, "files") else ""
        return f": pass {files}a table (`data.to_table()`)"
    if isinstance(data, Mapping):
        return ": build a table from it (`pyarrow.table(data)` or `pandas.DataFrame(data)`)"
    if kind == "ndarray":
        return ": build a table with named columns (`pandas.DataFrame(array, columns=[...])`)"
    return ""


def open_sources(data: Any) -> list[Source]:
    """Sources for a path, a list of paths (files, directories, globs), a ``pyarrow.Table`` or a DataFrame.

    Args:
        data: what to read.

    Returns:
        One source per file (sorted within each directory or glob) or one for the frame. A file
        that several paths name (a directory and a file in it, the same file twice, a symbolic or hard link
        to it) is read once, in the place where it is first found, by the first path that reaches it
        through no symbolic link below the directory (or glob) named, if one does: so a file linked
        into another Hive partition has the partition keys of the directory it lies in, whatever the
        names sort as. Paths that all go through links, or hard links (no path is the file's own),
        keep the first.

    Raises:
        InvalidDataError: a path matches nothing, a directory or glob no Parquet or CSV file, or a
            file named has an unknown suffix.
        TypeError: ``data`` is none of the accepted kinds.
    """
    frame = _frame_source(data)
    if frame is not None:
        return [frame]
    paths = [data] if isinstance(data, (str, os.PathLike)) else data
    if isinstance(paths, Sequence) and not paths:
        raise WrongTypeError("Expected `data` to be a path or a non-empty list of paths, got an empty list.")
    if not isinstance(paths, Sequence) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise WrongTypeError(
            "Expected `data` to be a path, a list of paths, a pyarrow.Table or a pandas/polars DataFrame, "
            f"got {type(data).__name__}{_data_hint(data)}."
        )
    out: list[Source] = []
    # every file once, whichever paths name it (`logs/ logs/a.csv`, `a.csv a.csv`, a link to a file read):
    # identity -> its place in `out`, the path it was read by and that path's base (links looked at only then)
    seen: dict[tuple[Any, ...], tuple[int, str, str | None]] = {}
    for p in paths:
        path = os.fspath(p)
        files = _expand(path)
        base = _partition_base(path)
        keys = _hive_keys(base, files)
        for i, file in enumerate(files):
            key = _file_identity(file)
            held = seen.get(key)
            # read again only where the path read before is a link and this one is where the file lies
            if held is not None and (not _through_link(*held[1:]) or _through_link(file, base)):
                continue
            source = _file_source(file)
            source = PartitionedSource(source, keys[i]) if keys is not None and keys[i] else source
            place = len(out) if held is None else held[0]
            seen[key] = (place, file, base)
            if held is None:
                out.append(source)
            else:  # in the place of the link's source: the order of the sources stays the order found
                out[place] = source
    return out


def _through_link(file: str, base: str | None) -> bool:
    """Whether ``file`` is reached through a symbolic link below ``base`` (a file named alone: whether it is one).

    A link above ``base`` (the directory named, or a glob's literal part) is the user's way to it.
    """
    top = os.path.abspath(base if base is not None else os.path.dirname(file) or os.curdir)
    below = os.path.relpath(os.path.abspath(file), top)
    return os.path.realpath(file) != os.path.join(os.path.realpath(top), below)


def _file_identity(file: str) -> tuple[Any, ...]:
    """A file's identity: its device and inode, the same for every path that reaches it.

    So a symbolic or hard link to a file read (``latest.parquet -> part-7.parquet``) is that file;
    where the file system gives no inode number, the file's resolved path.
    """
    try:
        stat = os.stat(file)  # follows symbolic links
    except OSError:
        stat = None
    if stat is not None and stat.st_ino:
        return (stat.st_dev, stat.st_ino)
    return (os.path.normcase(os.path.realpath(file)),)


def _partition_base(path: str) -> str | None:
    """The directory below which ``path``'s files may have Hive partition directories.

    A directory named: itself. A glob: its literal directories before the first wildcard (so
    ``logs/country=*/*.parquet`` has the key ``country``). A file named: none.
    """
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or not glob.has_magic(path):
        return None
    parts = os.path.normpath(path).split(os.sep)
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return os.sep.join(parts[:first]) or (os.sep if path.startswith(os.sep) else os.curdir)


_HIVE_DIRECTORY = re.compile(r"[^=]+=")  # a directory named KEY=VALUE


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # pyarrow's (and Hive's) null value of a key


def _hive_keys(base: str | None, files: Sequence[str]) -> list[dict[str, pa.Scalar]] | None:
    """Every file's Hive partition keys below ``base`` (``None``: no ``KEY=VALUE`` directory there).

    Typed from the directory names alone, as ``pyarrow.dataset``'s hive partitioning
    (``HivePartitioning.discover(infer_dictionary=False)``) types them over every file's
    directories below ``base``: a directory ``KEY=VALUE`` (split at the first ``=``) names a key,
    both URI-decoded, ``__HIVE_DEFAULT_PARTITION__`` (as written) is null; a key is ``int32`` if
    every value casts to it (Arrow's own cast of the text), else ``string``. No file is read
    (pyarrow.dataset would read one file's schema, and it neither decompresses ``.zst`` nor
    matches ``.GZ``). A key whose every value is null has no type (pyarrow refuses it): it is no
    column, and naming it fails as any missing column; the other keys are columns all the same.

    Raises:
        InvalidDataError: a directory's key or value is not UTF-8 once URI-decoded (pyarrow refuses it too).
    """
    if base is None:
        return None
    root = os.path.abspath(base)
    directories = [os.path.relpath(os.path.dirname(os.path.abspath(file)), root).split(os.sep) for file in files]
    if not any(_HIVE_DIRECTORY.match(part) for parts in directories for part in parts):
        return None
    from urllib.parse import unquote

    def decoded(text: str, file: str, part: str) -> str:
        try:
            out = unquote(text, errors="strict")
            out.encode("utf-8")  # a name that was not UTF-8 holds surrogates (os.fsdecode)
        except UnicodeError:
            raise InvalidDataError(
                f"{file}: partition directory {part!r} is not valid UTF-8 once URI-decoded: rename the directory."
            ) from None
        return out

    parsed: list[dict[str, str | None]] = []  # every file's keys, as text
    seen: dict[str, dict[str, None]] = {}  # key -> its distinct values (in order of appearance)
    for file, parts in zip(files, directories):  # one pass over the files' names, no data
        keys: dict[str, str | None] = {}
        for part in parts:
            name, equal, value = part.partition("=")
            if not equal:
                continue
            name = decoded(name, file, part)
            text = None if value == _HIVE_NULL else decoded(value, file, part)
            keys[name] = text
            values = seen.setdefault(name, {})
            if text is not None:
                values[text] = None
        parsed.append(keys)
    typed: dict[str, dict[str | None, pa.Scalar]] = {}  # key -> text -> value (None -> the typed null)
    for name, values in seen.items():
        if not values:
            continue  # every value null: pyarrow cannot type it
        texts = pa.array(list(values), pa.string())
        try:
            column = pc.cast(texts, pa.int32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # pyarrow's rule: not every value an int32
            column = texts
        typed[name] = {None: pa.scalar(None, column.type), **dict(zip(values, column))}
    return [{name: lookup[keys.get(name)] for name, lookup in typed.items()} for keys in parsed]
