"""Segments for ``--by``: discovered from the data, encoded per batch without a loop, rows kept per segment.

:class:`SegmentCollector` finds the segments in the scoring pass itself: each record batch gives
its distinct value combinations and a local code per row, so no file is read for the segments
alone and each rank of a distributed run reads only its share. At the end every rank's
combinations are gathered once, a CSV file's text columns typed over all of them, and the
:class:`SegmentIndex` built from them (the distinct combinations, sorted, and an encoder with
one ``index_in`` per column and one ``searchsorted``, one more per point where the int64 key is
made dense, for many or very large columns) is the same on every rank; the local codes then
become segment ids.

:class:`SegmentRows` keeps the rows a metric needs (each column in the dtype it was read in, plus
an int32 segment id); at the end it gathers them from every rank with one fused
collective per dtype, and :mod:`~torchmetrics_ext.evaluate.by_segment` computes every metric on
every segment's rows at once, so every segment value is the metric computed on exactly that
segment's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from torch import Tensor

from torchmetrics_ext.evaluate.checks import check_column
from torchmetrics_ext.evaluate.memory import release_free_memory
from torchmetrics_ext.evaluate.report import _value_text
from torchmetrics_ext.evaluate.sources import InvalidDataError, Source, data_rows, read_text_as
from torchmetrics_ext.utilities.distributed import _world, fused_gather

__all__ = ["SegmentCollector", "SegmentIndex", "SegmentRows"]


def _decoded(array: Any) -> Any:
    """A segment column's values as one plain array: dictionaries decoded, floats normalised.

    Arrow groups and looks up floats by their bits, so ``-0.0`` would be a segment apart from
    ``0.0`` and every NaN bit pattern a segment of its own: ``-0.0`` becomes ``0.0`` and every NaN
    one NaN (NaN stays a segment apart from null, as Arrow and Parquet keep them apart). float16
    is read as float32 (exact) and string/binary views as string/binary, which Arrow sorts.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.string() if pa.types.is_string_view(array.type) else pa.binary())
    if pa.types.is_float16(array.type):
        array = array.cast(pa.float32())
    if pa.types.is_floating(array.type):
        zero = pc.add(array, pa.scalar(0.0, array.type))  # -0.0 + 0.0 == +0.0; other values unchanged
        array = pc.if_else(pc.is_nan(array), pa.scalar(float("nan"), array.type), zero)
    return array


_KEY_RANGE = 1 << 63  # segment keys are int64: every key must stay below 2**63


def _sorted(values: Any, order: Any = None) -> Any:
    """A column's distinct ``values`` in segment order: sorted, or in ``order`` where it is given; nulls last.

    ``order`` (a pandas categorical's categories) ranks the values it holds, in its order, as
    pandas' ``groupby`` does; a value it does not hold (none, for a categorical) comes after them,
    sorted. A value of ``order`` not among ``values`` (an unused category) makes no segment.
    """
    if order is None:
        return values.sort(null_placement="at_end")
    try:
        order = _decoded(pa.array(order).cast(values.type))
    except pa.ArrowException:  # categories that are not the values' type: sorted by value
        return values.sort(null_placement="at_end")
    rank = pc.index_in(values, value_set=order)  # null for a null, or a value the order does not hold
    held = rank.is_valid()
    ranked = pc.filter(values, held).take(pc.sort_indices(pc.filter(rank, held)))
    rest = pc.filter(values, pc.invert(held)).sort(null_placement="at_end")
    return pa.concat_arrays([ranked, rest])


def _categories(values: Any, order: Any) -> Any:
    """A column's categories: ``order`` as the type of its sorted ``values``, then the values it lacks; no null, no NaN.

    ``None`` where ``order`` is not of the values' type (the column is sorted by value then, see :func:`_sorted`).
    """
    try:
        order = _decoded(pa.array(order).cast(values.type))
    except pa.ArrowException:
        return None
    rest = pc.filter(values, pc.is_null(pc.index_in(values, value_set=order)))
    categories = pa.concat_arrays([order, rest])
    return pc.filter(categories, pc.invert(pc.is_null(categories, nan_is_null=True)))


class SegmentIndex:
    """The distinct combinations of the ``by`` columns, sorted (nulls last), and their encoder.

    Sorted column by column, each column by value or, where it has one (``orders``: a pandas
    categorical), in its own order.

    A row's key is its columns' codes (positions in each column's sorted distinct values) read
    as one mixed-radix int64 number, built column by column (``key * size + code``). Where the
    next column would carry the key past ``2**63`` (many columns, or columns with millions of
    distinct values), the key so far is first replaced by its rank among the prefixes the
    discovered combinations hold (a dense id below the number of combinations), so keys never
    wrap around, whatever the number and size of the columns. Keys keep the lexicographic order
    of the codes, and the segment id of a row is the position of its key among the sorted keys
    of the combinations: one ``index_in`` per column, one ``searchsorted`` per step.

    Args:
        by: the segment columns.
        combos: a table of the distinct combinations (one row each).
        text_types: the type each ``by`` column of a text file (CSV) is read with.
        half: the ``by`` columns every source stores as float16 (grouped as float32, which holds
            their values exactly): their labels are written as float16 values (:attr:`label_types`).
        orders: for a column whose values have an order of their own (a pandas categorical's
            categories, an ordered Arrow dictionary's, a polars ``Enum``'s), those values in that
            order: its segments come in it, not sorted by value.
        ordered: the columns of ``orders`` whose order is declared an ordering (see
            :meth:`~torchmetrics_ext.evaluate.sources.Source.value_order_ordered`).

    Attributes:
        categories: for each column of ``orders``: its categories as the values' type (every value
            of the order, then the values it does not hold, in segment order; no null or NaN) and
            whether they are ordered: what a pandas Categorical of the column is made of.
    """

    def __init__(
        self,
        by: Sequence[str],
        combos: pa.Table,
        text_types: Mapping[str, pa.DataType] | None = None,
        half: Collection[str] = (),
        orders: Mapping[str, Any] | None = None,
        ordered: Collection[str] = (),
    ) -> None:
        self.by = tuple(by)
        # the type each ``by`` column of a text file (CSV) is read with: numbers when every value of
        # it is one, so "2" sorts before "10" and a CSV agrees with a Parquet file of numbers
        self.text_types = dict(text_types or {})
        orders = orders or {}
        self._value_sets = [_sorted(pc.unique(_decoded(combos.column(name))), orders.get(name)) for name in self.by]
        self._sizes = [len(values) for values in self._value_sets]
        self.types = {name: values.type for name, values in zip(self.by, self._value_sets)}  # the values' types
        self.categories = {
            name: (kept, name in ordered)
            for name, values in zip(self.by, self._value_sets)
            if name in orders and (kept := _categories(values, orders[name])) is not None
        }
        # the type each column's labels are written for: float16 columns' shortest float16 text (0.1),
        # not the float32 text of their values (0.099975586)
        self.label_types = {
            name: pa.float16() if name in half and pa.types.is_float32(dtype) else dtype
            for name, dtype in self.types.items()
        }
        for name, values in zip(self.by, self._value_sets):
            _check_texts(name, values, self.label_types[name])
        # step -> the sorted distinct keys of the columns before it, where the key is made dense there
        self._dense: dict[int, np.ndarray] = {}
        keys = self._encode_keys([combos.column(name) for name in self.by], build=True)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        if len(self._keys) > 1 and not bool(np.all(self._keys[1:] > self._keys[:-1])):
            raise ValueError("Expected distinct segment combinations.")  # discover_segments groups them
        self.labels: list[dict[str, Any]] = combos.take(pa.array(order)).to_pylist()

    def __len__(self) -> int:
        return len(self.labels)

    def spaced_text(self) -> dict[str, list[str]]:
        """Each text column's distinct values with whitespace around them (``"fr "``, ``" "``), sorted.

        Labels and keys write such text unquoted (``country=fr ``), so the table shows it as the text
        without the spaces: the run warns of it. Found with Arrow kernels over the distinct values, no
        loop over segments.
        """
        out: dict[str, list[str]] = {}
        for name, values in zip(self.by, self._value_sets):
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                if not pa.types.is_string_view(values.type):
                    continue
                values = values.cast(pa.large_string())
            spaced = values.filter(pc.not_equal(values, pc.utf8_trim_whitespace(values)))
            if len(spaced):
                out[name] = spaced.to_pylist()
        return out

    def empty_text(self) -> list[str]:
        """The text columns holding the empty text ``""`` as one of their values, in ``by`` order.

        Its segment (``country=``) is a value, apart from null (``country=None``): a CSV file's empty field
        in a text column reads so, where Parquet, a frame and ``pandas.read_csv`` have null. The run warns
        of it. One Arrow kernel over each column's distinct values.
        """
        out = []
        for name, values in zip(self.by, self._value_sets):
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                found = pc.any(pc.equal(values, ""))
            elif pa.types.is_string_view(values.type):
                found = pc.any(pc.equal(values.cast(pa.large_string()), ""))
            else:
                continue
            if found.as_py():
                out.append(name)
        return out

    def _codes(self, position: int, column: Any) -> np.ndarray:
        """Every row's position in the column's sorted distinct values.

        The batch is first cast to the type of those values (as the discovered combinations were
        promoted): a file's all-null column (type ``null``), int32 next to int64, string next to
        large_string... (``index_in`` does not cast every pair itself).
        """
        values, value_set = _decoded(column), self._value_sets[position]
        if values.type != value_set.type:
            try:
                values = values.cast(value_set.type)
            except pa.ArrowException:
                raise InvalidDataError(_unknown(self.by[position])) from None
        codes = pc.index_in(values, value_set=value_set)
        if codes.null_count:
            raise InvalidDataError(_unknown(self.by[position]))
        return codes.to_numpy(zero_copy_only=False).astype(np.int64)

    def _encode_keys(self, columns: Sequence[Any], build: bool = False) -> np.ndarray:
        """Every row's key; ``build``: the combinations themselves, deciding where keys are made dense."""
        key = np.zeros(len(columns[0]) if columns else 0, dtype=np.int64)
        span = 1  # number of distinct keys so far (an exact Python int)
        for position, (column, size) in enumerate(zip(columns, self._sizes)):
            if build and span * size > _KEY_RANGE:
                self._dense[position] = np.unique(key)
            dense = self._dense.get(position)
            if dense is not None:
                key = _rank(dense, key, None)  # a combination of the columns before
                span = len(dense)
                if span * size > _KEY_RANGE:  # more than 3e9 combinations: beyond what is kept anyway
                    raise ValueError(f"Too many segment combinations to encode: {span:,} x {size:,}.")
            key *= size
            key += self._codes(position, column)
            span *= size
        return key

    def encode(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Segment id (position in :attr:`labels`) of every row of a batch.

        Raises:
            InvalidDataError: a row's value combination is not one of the discovered ones (the
                data changed after the segments were discovered).
        """
        key = self._encode_keys([columns[name] for name in self.by])
        return _rank(self._keys, key, None)

    def encode_tables(self, tables: Sequence[pa.Table]) -> np.ndarray:
        """Segment id of every row of ``tables`` (each holding every ``by`` column), in one pass.

        Each table's columns are cast to the type of the column's values, then all of them are
        encoded at once: one ``index_in`` per column over every row, not one per table (each
        builds a hash of every distinct value).

        Raises:
            InvalidDataError: as :meth:`encode`.
        """
        if not tables:
            return np.zeros(0, np.int64)
        columns = {}
        for name, value_set in zip(self.by, self._value_sets):
            chunks = []
            for table in tables:
                values = _decoded(table.column(name))
                if values.type != value_set.type:
                    try:
                        values = values.cast(value_set.type)
                    except pa.ArrowException:
                        raise InvalidDataError(_unknown(name)) from None
                chunks.append(values)
            columns[name] = pa.chunked_array(chunks, value_set.type)
        return self.encode(columns)


def _written_apart(dtype: pa.DataType) -> bool:
    """Whether distinct values of ``dtype`` are always written apart in labels and keys (``segment_text``).

    Text (quoted where it could read as another value), bytes of any width (their Python literal),
    integers, floats (their shortest text), booleans and decimals are: a column's decimals share
    one scale, so each is a ``decimal.Decimal`` of one exponent, whose text spells its digits and
    exponent exactly (Arrow has no negative zero). Other types are written from their Python
    values, which may drop what Arrow keeps (``time64[ns]`` becomes a ``datetime.time`` of
    microseconds): their texts are compared.
    """
    return any(check(dtype) for check in _WRITTEN_APART)


_WRITTEN_APART = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_fixed_size_binary,
    pa.types.is_decimal,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
)


def _check_texts(name: str, values: Any, label_type: pa.DataType) -> None:
    """Raise unless every distinct value of column ``name`` has a text of its own in labels and keys.

    Two segments written alike would share a ``.values`` key (one value lost) and a label: such a
    column is refused, naming two of its values, rather than merged. Only for the types
    :func:`_written_apart` cannot vouch for (every flat type but dates, times, timestamps,
    durations and ``null``); for those only the values stored closer to another than Python's
    resolution of the type are written out (:func:`_close_values`: none, in a column of distinct
    dates or of timestamps of distinct microseconds), so a column of millions of distinct values
    is checked without a Python loop. The loop left compares Python's own texts of those few
    candidates (what labels are written from, which no Arrow cast reproduces), or of a ``null``
    column's one value.

    Raises:
        InvalidDataError: two distinct values are written alike.
    """
    if _written_apart(values.type):
        return
    positions = _close_values(values, label_type)
    if positions is not None and len(positions) < 2:
        return
    chosen = values if positions is None else values.take(pa.array(positions))
    seen: dict[str, int] = {}
    for position, value in enumerate(chosen.to_pylist()):
        text = _value_text(value, label_type)
        first = seen.setdefault(text, position)
        if first != position:
            pair = chosen.take(pa.array([first, position]))
            raise InvalidDataError(_written_alike(name, pair, value, text))


def _close_values(values: Any, label_type: pa.DataType) -> np.ndarray | None:
    """Positions (ascending) of the temporal ``values`` that may be written like another; ``None``: check every one.

    A date, time, timestamp or duration is written from its Python value, which keeps the stored
    number up to a resolution of its own (``datetime.time``: microseconds of a ``time64[ns]``;
    ``datetime.date``: days of a ``date64[ms]``), the same for every value and in the order of the
    stored numbers. Values written alike are then neighbours in that order, less than that
    resolution apart (twice that across zero, should Python round toward zero): only such
    neighbours are returned. ``None`` for other types, for a time of day stored outside one day
    (Python wraps it around), and for a type whose resolution the probe cannot find.
    """
    if not any(check(values.type) for check in _NUMBERED_TEMPORAL):
        return None
    step = _text_step(values.type, label_type)
    if step is None:
        return None
    kept = pc.indices_nonzero(pc.is_valid(values)).to_numpy(zero_copy_only=False)  # a null writes "None"
    storage = pa.int32() if values.type.bit_width == 32 else pa.int64()
    stored = pc.drop_null(values).view(storage).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if pa.types.is_time(values.type) and len(stored) and (stored.min() < 0 or stored.max() >= _day(values.type)):
        return None
    if step == 1:  # every stored number has a text of its own
        return kept[:0]
    order = np.argsort(stored, kind="stable")
    low, high = stored[order[:-1]], stored[order[1:]]
    gap = high - low  # a difference past int64 wraps negative: kept, safely
    close = (gap < step) | ((low < 0) & (high > 0) & (gap < 2 * step))
    near = np.zeros(len(stored), dtype=bool)
    near[order[1:][close]] = True
    near[order[:-1][close]] = True
    return kept[near]  # ascending, as `kept` is


def _text_step(dtype: pa.DataType, label_type: pa.DataType) -> int | None:
    """How many stored units of ``dtype`` one written text spans (``None``: not found).

    Probed on the texts of stored numbers: the width of the run of numbers written like the first
    positive one written unlike ``0`` (1 for ``timestamp[ns]``, read as a pandas ``Timestamp``; 1000 for
    ``time64[ns]``, read as a ``datetime.time`` of microseconds; 86,400,000 for ``date64[ms]``, read
    as a ``datetime.date``), whether Python drops the rest or rounds it.
    """
    storage = pa.int32() if dtype.bit_width == 32 else pa.int64()
    limit = (1 << (dtype.bit_width - 1)) - 1

    def text(stored: int) -> str:
        return _value_text(pa.array([stored], storage).view(dtype)[0].as_py(), label_type)

    def next_text(start: int) -> int | None:
        """The smallest number above ``start`` written unlike it (texts follow the numbers' order)."""
        first, low, high = text(start), start, start + 1
        while text(high) == first:  # doubling, then bisecting
            low, high = high, start + 2 * (high - start)
            if high > limit or high - start > _MAX_STEP:
                return None
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if text(middle) == first else (low, middle)
        return high

    try:
        changed = next_text(0)
        after = None if changed is None else next_text(changed)
    except (pa.ArrowException, ValueError, OverflowError, TypeError):  # a value Python cannot hold
        return None
    return None if after is None or changed is None else after - changed


# the types stored as one 32- or 64-bit number each (an interval holds several)
_NUMBERED_TEMPORAL = (pa.types.is_date, pa.types.is_time, pa.types.is_timestamp, pa.types.is_duration)

# the most stored units one text is probed for (a date64's day is 86,400,000 ms)
_MAX_STEP = 1 << 40


def _day(dtype: pa.DataType) -> int:
    """Stored units of a time-of-day type in one day."""
    return 86_400 * {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[dtype.unit]


def _written_alike(name: str, pair: Any, value: Any, text: str) -> str:
    """The refusal of column ``name``, whose two distinct values ``pair`` are written ``text`` (``value`` in Python)."""
    try:
        shown = pc.cast(pair, pa.string()).to_pylist()
    except pa.ArrowException:
        shown = [str(v) for v in pair]
    fix = f"text, for example: table.cast to a schema with pa.string() for {name!r}, or "
    fix += f'df[{name!r}].astype("string")'
    if shown[0] == shown[1]:  # Arrow's text drops it too (date64 below a day): the stored numbers
        try:
            shown = [f"{t} (stored as {v})" for t, v in zip(shown, pair.view(pa.int64()).to_pylist())]
            fix = f"the stored numbers, for example: table.cast to a schema with pa.int64() for {name!r}"
        except (pa.ArrowException, ValueError, TypeError):
            pass
    return (
        f"column {name!r} (--by segment) has type {pair.type}, and its distinct values {shown[0]} and "
        f"{shown[1]} both read in Python as {value!r}, written {name}={text} in segment labels and "
        f".values keys: two segments would share one key. Convert the column first to a type that keeps "
        f"them apart ({fix})."
    )


def _rank(sorted_keys: np.ndarray, key: np.ndarray, column: str | None) -> np.ndarray:
    """Position of every ``key`` in ``sorted_keys``, which must hold it."""
    found = np.searchsorted(sorted_keys, key)
    if len(key) and (
        not len(sorted_keys) or not bool(np.all(sorted_keys[np.minimum(found, len(sorted_keys) - 1)] == key))
    ):
        raise InvalidDataError(_unknown(column))
    return found


def _unknown(column: str | None) -> str:
    what = f"column {column!r} (--by segment) holds a value" if column else "the --by columns hold a combination"
    return f"{what} that was not there when the segments were discovered (did the files change while reading?)."


def _distinct(columns: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """One row of each distinct combination of ``columns`` (decoded, equally long) and every row's combination.

    Returns the position of a row of each combination and every row's combination number
    (``where[inverse]`` has the row's values). Hashes each column (``dictionary_encode``: nulls
    and the one NaN are values too) and finds the distinct code combinations with one
    ``np.unique`` (a ``bincount``-like pass when there are few possible codes); the combined code
    is made dense before it would pass ``2**63``. Arrow's
    ``group_by`` does the same work, but some 100 times slower for float columns.
    """
    rows = len(columns[0]) if columns else 0
    key = np.zeros(rows, dtype=np.int64)
    span = 1
    for column in columns:
        encoded = pc.dictionary_encode(column, null_encoding="encode")
        size = len(encoded.dictionary)
        if span * size > _KEY_RANGE:
            uniq, key = np.unique(key, return_inverse=True)
            key, span = key.reshape(-1).astype(np.int64), len(uniq)
        key = key * size + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        span *= size
    if span <= 2 * rows + 1024:  # few possible codes (one column, or few values each): no sort
        present = np.zeros(span, dtype=bool)
        present[key] = True
        inverse = (np.cumsum(present) - 1)[key]
        where = np.empty(int(present.sum()), dtype=np.int64)
        where[inverse] = np.arange(rows, dtype=np.int64)  # a row of each combination (any one)
        return where, inverse
    _, where, inverse = np.unique(key, return_index=True, return_inverse=True)
    return where.astype(np.int64), inverse.reshape(-1).astype(np.int64)


def _distinct_table(by: Sequence[str], columns: Sequence[Any]) -> tuple[pa.Table, np.ndarray]:
    """The distinct combinations of ``columns`` (decoded) as a table, and every row's position in it."""
    decoded = [_decoded(column) for column in columns]
    where, inverse = _distinct(decoded)
    picked = pa.array(where, pa.int64())
    return pa.table({name: column.take(picked) for name, column in zip(by, decoded)}), inverse


@dataclass(frozen=True)
class _Part:
    """The distinct ``by`` combinations of one record batch, as read.

    Attributes:
        order: (chunk number among every source's chunks, first row): one process's reading order.
        table: the combinations; the ``text`` columns hold a CSV file's text as written.
        place: where the batch comes from, for messages.
        text: the ``by`` columns read as text (a CSV file's), typed once every file's text is known.
    """

    order: tuple[int, int]
    table: pa.Table
    place: _Place
    text: tuple[str, ...]


class SegmentCollector:
    """The ``by`` combinations of the batches this process reads, found as they are scored.

    Each record batch of the scoring pass gives its distinct combinations and every row's local
    code (:meth:`add`): no file is read for the segments alone, and each rank of a distributed
    run sees only its own share. At the end :meth:`index` gathers every rank's combinations (one
    ``all_gather_object``), types the CSV files' text columns over all of them, numbers the
    segments (sorted, the same on every rank) and maps each local code to its segment.

    Args:
        sources: every source of the run (each rank holds them all).
        by: the segment columns.

    Raises:
        InvalidDataError: a ``by`` column of a file with stored types (Parquet, a frame) is
            missing or not a flat type, or such files' types of it have none in common (an empty
            file's too), checked from the schemas before anything is read (a CSV file's columns
            are checked as it is read).
    """

    def __init__(self, sources: Sequence[Source], by: Sequence[str]) -> None:
        self.by = tuple(by)
        # columns whose every value is stored as float16: no typed source stores another type (one of
        # type null, an empty or all-null file, stores none) and no CSV file holds a value (see index)
        self._half = set(by)
        self._stored: dict[str, pa.DataType] = {}  # the first typed source's type of each column
        # every distinct set of the typed sources' column types (decoded), and the first source holding it
        self._schemas: dict[tuple[pa.DataType, ...], _Place] = {}
        for source in sources:
            if source.infers_types:  # a CSV file: its columns are text (its header is read with it)
                continue
            schema = source.schema()  # metadata: no data is read
            for name in by:
                dtype = check_column(source.label, schema, name, "--by segment", source.missing_hint)
                value_type = dtype.value_type if pa.types.is_dictionary(dtype) else dtype
                if not (pa.types.is_float16(value_type) or pa.types.is_null(value_type)):
                    self._half.discard(name)
                if pa.types.is_nested(dtype) or not _groupable(dtype):
                    raise InvalidDataError(
                        f"{source.label}: column {name!r} (--by segment) has type {dtype}; expected flat values "
                        "that can be grouped and sorted (strings, numbers, dates...): convert the column to one."
                    )
                if not pa.types.is_null(value_type):
                    self._stored.setdefault(name, value_type)
            # a file's types count whatever its row count (an empty file's too): one part per distinct set
            kinds = tuple(_decoded(pa.array([], schema.field(name).type)).type for name in by)
            if kinds not in self._schemas:
                rows = [chunk.rows for chunk in source.chunks(_MAX_ROWS)]  # metadata (Parquet), or the frame's
                self._schemas[kinds] = _Place(source.label, 0, -1, empty=all(r == 0 for r in rows))
        self._schema_parts = [
            pa.table({name: pa.array([], dtype) for name, dtype in zip(by, kinds)}) for kinds in self._schemas
        ]
        places = list(self._schemas.values())
        try:  # types with none in common (text in one file, numbers in another) fail before anything is read
            if len(self._schema_parts) > 1:
                pa.concat_tables(self._schema_parts, promote_options="permissive")
        except pa.ArrowException:
            raise InvalidDataError(_type_clash(self.by, self._schema_parts, places)) from None
        # a column with an order of its own in some source (a pandas categorical): its segments follow it
        self._orders: dict[str, Any] = {}
        self._ordered: set[str] = set()  # those whose order is an ordering (an ordered categorical, an Enum)
        for source in sources:
            for name in by:
                order = None if name in self._orders else source.value_order(name)
                if order is not None:
                    self._orders[name] = order
                    if source.value_order_ordered(name):
                        self._ordered.add(name)
        self._parts: list[_Part] = []
        self._size = 0  # local codes so far

    def add(self, source: Source, order: tuple[int, int], batch: Any) -> np.ndarray:
        """Keep one batch's distinct combinations; returns every row's local code.

        Args:
            source: where the batch comes from (its CSV text columns are typed at the end).
            order: (chunk number among every source's chunks, the batch's first row in its source).
            batch: the record batch, holding every ``by`` column.
        """
        text = tuple(name for name in self.by if source.inferred(name))
        table, inverse = _distinct_table(self.by, [batch.column(name) for name in self.by])
        first = order[1]
        self._parts.append(_Part(order, table, _Place(source.label, first, first + batch.num_rows - 1), text))
        codes = inverse + self._size
        self._size += table.num_rows
        return codes

    def share(self) -> list[Any]:
        """What this rank gives the others for :meth:`index`: its value combinations, batch by batch (picklable)."""
        return list(self._parts)

    def index(self, shares: Sequence[Sequence[Any]] | None = None) -> tuple[SegmentIndex, np.ndarray]:
        """The segments of every rank's rows and the segment of each local code.

        Every rank must call it; every rank numbers the segments alike. ``shares`` is every rank's
        :meth:`share` in rank order, gathered by the caller (one collective for several collectors);
        without it, it gathers them itself when distributed.

        Raises:
            InvalidDataError: a column's values have types that cannot be one (naming the files
                or rows and the types).
        """
        mine = self._parts
        gathered, offset = mine, 0  # every rank's parts; this rank's are gathered[offset:offset + len(mine)]
        world = _world() if shares is None else None
        if world is not None:
            received: list[Any] = [None] * world[1]
            dist.all_gather_object(received, self.share())
            shares = received
        if shares is not None and len(shares) > 1:
            gathered = [part for share in shares for part in share]
            offset = sum(len(share) for share in shares[: dist.get_rank()])
        order = sorted(range(len(gathered)), key=lambda i: gathered[i].order)  # one process's order (for messages)
        parts = [gathered[i] for i in order]
        types, converters, why = self._text_types(parts)
        typed = _typed(gathered, converters)  # every part at once, kept for the encoding below
        tables = [typed[i] for i in order]
        places = [part.place for part in parts]
        if not tables and not self._schema_parts:  # no rows and no stored type: the columns' types are unknown
            return SegmentIndex(self.by, pa.table({name: pa.array([], pa.null()) for name in self.by})), np.zeros(
                0, np.int64
            )
        # float16 labels (0.1, not float32's 0.099975586) where every value comes from a float16 column: no
        # CSV file holds a value of it (a header-only file, or one whose column is all null, agrees with any type)
        half = {
            name
            for name in self._half
            if pa.types.is_float16(self._stored.get(name, pa.null()))
            and all(
                name not in part.text or table.column(name).null_count == table.num_rows
                for part, table in zip(parts, tables)
            )
        }
        # the typed sources' column types join the values' (after them: a clash of values is named first),
        # so that a file's type counts whatever its row count, an empty file's or one whose rows were skipped
        tables += self._schema_parts
        places += list(self._schemas.values())
        tables = _unsigned_where_needed(self.by, tables)
        try:
            combos = pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowException:
            raise InvalidDataError(_type_clash(self.by, tables, places, why)) from None
        distinct, _ = _distinct_table(self.by, [combos.column(name) for name in self.by])
        index = SegmentIndex(self.by, distinct, types, half, self._orders, self._ordered)
        return index, index.encode_tables(typed[offset : offset + len(mine)])

    def _text_types(
        self, parts: Sequence[_Part]
    ) -> tuple[dict[str, pa.DataType], dict[str, tuple[Any, Any]], dict[str, Callable[[], str]]]:
        """The type each ``by`` column of the CSV files is read with, and each text's value.

        The column's stored type in the typed files (Parquet) if every text reads as it, else
        the first of int64, uint64 and float64 that every text reads as, else text. A float type
        must hold every number as written (:func:`_exact`), or distinct ids beyond 2**64 would
        merge into one segment. A column holding a number spelt as only ids are (:func:`_ids`: a
        leading zero, ``007``) stays text, as written: ``007`` and ``7`` are two segments.
        Each text is converted by the CSV reader itself
        (:func:`~torchmetrics_ext.evaluate.sources.read_text_as`: its parsing and null values),
        so a value is what reading the files' column with that type gives. Only the distinct
        texts of every file are converted, once.

        Returns:
            ``name -> type`` for every column read as text somewhere, ``name -> (texts,
            values)``: the distinct texts and their values (none for a column kept as text), and
            ``name -> why`` for a column kept as text: what says why (for messages, built only if needed).
        """
        types: dict[str, pa.DataType] = {}
        converters: dict[str, tuple[Any, Any]] = {}
        why: dict[str, Callable[[], str]] = {}
        for name in self.by:
            columns = [part.table.column(name) for part in parts if name in part.text]
            if not columns:
                continue
            texts = pc.unique(pa.chunked_array(columns, pa.string()).combine_chunks())
            stored = self._stored.get(name)
            if stored is not None and pa.types.is_float16(stored):  # read as float32 (grouped so), which holds them
                stored = pa.float32()
            candidates = ([stored] if stored is not None else []) + [t for t in _NUMBER_TYPES if t != stored]
            types[name] = pa.string()  # when no number type holds every text
            if _ids(texts):  # "007" and "7" are two zip codes, not one number: never merged into 7
                why[name] = partial(_kept_as_text, name, texts, parts)
                continue
            for dtype in candidates:
                if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
                    types[name] = dtype
                    break
                values = read_text_as(texts, dtype)
                if values is not None and (not pa.types.is_floating(dtype) or _exact(texts, dtype)):
                    types[name] = dtype
                    converters[name] = (texts, values)
                    break
            if pa.types.is_string(types[name]) and name not in converters and stored != types[name]:
                why[name] = partial(_kept_as_text, name, texts, parts)
        return types, converters, why


_NUMBER_TYPES = (pa.int64(), pa.uint64(), pa.float64())
_MAX_ROWS = 1 << 62  # a chunk size that keeps a frame whole (its row count from one chunk)
# a number no writer of numbers spells so: a leading zero before a digit (007, -01, 00.5), a plus sign,
# spaces around it; such a column holds ids (zip codes, account numbers), whose spellings are distinct
_ID_SPELLING = r"^[+-]?0[0-9]|^\+|^\s|\s$"


def _ids(texts: Any) -> bool:
    """Whether a CSV column's distinct ``texts`` hold a number spelt as only ids are (``007``, ``+7``, `` 7``).

    Read as numbers, ``007`` and ``7`` would be one segment ``7``, ``02134`` the zip code ``2134``.
    One vectorised regex over the distinct texts.
    """
    return bool(pc.any(pc.match_substring_regex(texts, _ID_SPELLING), min_count=0).as_py())


def _kept_as_text(name: str, texts: Any, parts: Sequence[_Part]) -> str:
    """Why the CSV files' column ``name`` is read as text: a value spelt as only ids are, or one that is no number.

    Args:
        name: the column.
        texts: its distinct texts in every CSV file.
        parts: the batches' combinations (to name the CSV files holding the column).
    """
    files = list(dict.fromkeys(part.place.label for part in parts if name in part.text))
    more = ", ..." if len(files) > 3 else ""
    where = files[0] if len(files) == 1 else f"the CSV files ({', '.join(files[:3])}{more})"
    numbers = pc.fill_null(pc.match_substring_regex(texts, r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"), False)
    spelt = pc.filter(texts, pc.and_(numbers, pc.fill_null(pc.match_substring_regex(texts, _ID_SPELLING), False)))
    if len(spelt):
        reason = (
            f"it holds {spelt[0].as_py()!r}, a number spelt as only ids are (a leading zero, a plus sign or spaces "
            "around it), so the column is kept as text, as written (read as numbers, '007' and '7' would be one "
            "segment)"
        )
    else:
        other = pc.filter(texts, pc.invert(numbers))
        shown = f"{other[0].as_py()!r}, which is no number" if len(other) else "a value no number type holds exactly"
        reason = f"it holds {shown}, so the column is read as text"
    return (
        f"A CSV column is read as numbers only when its every value, in every CSV file, is a plain number; "
        f"column {name!r} of {where}: {reason}. Either write {name!r} as text in every file (e.g. "
        f'df[{name!r}].astype("string") before to_parquet, or pyarrow\'s table.cast to a schema with '
        f"pa.string()), or write the CSV values as plain numbers (7, not 007)"
    )


def _typed(parts: Sequence[_Part], converters: Mapping[str, tuple[Any, Any]]) -> list[pa.Table]:
    """The parts with their text columns as the values they read as (those kept as text unchanged).

    One pass per column over every part's texts: one ``index_in`` against the column's distinct
    texts (each call hashes all of them), sliced back into the parts.
    """
    tables = [part.table for part in parts]
    for name, (texts, values) in converters.items():
        holding = [i for i, part in enumerate(parts) if name in part.text]
        if not holding:
            continue
        column = pa.chunked_array(
            [chunk for i in holding for chunk in tables[i].column(name).chunks], pa.string()
        ).combine_chunks()
        typed = _decoded(values.take(pc.index_in(column, value_set=texts)))
        start = 0
        for i in holding:
            rows = tables[i].num_rows
            position = tables[i].schema.get_field_index(name)
            tables[i] = tables[i].set_column(position, name, typed.slice(start, rows))
            start += rows
    return tables


def _value_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _negative(column: Any) -> Any:
    """The first negative value of an integer ``column`` (``None`` if there is none): one ``min``."""
    if not pa.types.is_signed_integer(_value_type(column.type)):
        return None
    low = pc.min(_decoded(column)).as_py()
    return low if low is not None and low < 0 else None


def _unsigned_where_needed(by: Sequence[str], tables: Sequence[pa.Table]) -> list[pa.Table]:
    """The parts with their integer ``by`` columns as uint64 where only uint64 holds every value.

    Arrow unifies uint64 with a signed type as int64, which cannot hold a uint64 value above
    ``2**63 - 1``: when a column holds such a value and no negative value (every part of an
    integer type), uint64 holds them all, and is their type. A negative value next to one above
    ``2**63 - 1`` fits no integer type: left as it is, to be refused naming both (:func:`_type_clash`).
    Segments compare by value (they are reported), so the values stay the user's.
    """
    out = list(tables)
    for name in by:
        columns = [t.column(name) for t in out if not pa.types.is_null(t.schema.field(name).type)]
        types = {_value_type(c.type) for c in columns}
        if pa.uint64() not in types or len(types) < 2 or not all(pa.types.is_integer(t) for t in types):
            continue
        big = any(pc.max(_decoded(c)).as_py() > _INT64_MAX for c in columns if _value_type(c.type) == pa.uint64())
        if not big or any(_negative(c) is not None for c in columns):
            continue
        for i, table in enumerate(out):
            dtype = table.schema.field(name).type
            if not pa.types.is_null(dtype) and _value_type(dtype) != pa.uint64():
                position = table.schema.get_field_index(name)
                out[i] = table.set_column(position, name, _decoded(table.column(name)).cast(pa.uint64()))
    return out


_INT64_MAX = (1 << 63) - 1


def _groupable(dtype: pa.DataType) -> bool:
    """Whether Arrow groups, hashes, sorts and looks up values of ``dtype`` (as segment values are).

    Not so for extension types (pandas ``Period`` and ``Interval``, ``uuid``) or
    ``month_day_nano_interval``, for example. Tried on an empty array: no data is read.
    """
    try:
        empty = _decoded(pa.array([], dtype))
        pa.table({"k": empty}).group_by(["k"]).aggregate([])
        pc.dictionary_encode(empty, null_encoding="encode")
        pc.index_in(empty, value_set=pc.unique(empty).sort(null_placement="at_end"))
    except (pa.ArrowException, NotImplementedError, TypeError):
        return False
    return True


# a decimal number as text: sign, integer digits, fraction digits, exponent
_DECIMAL = r"^(?P<sign>[+-]?)(?P<whole>\d*)(?:\.(?P<fraction>\d*))?(?:[eE](?P<exponent>[+-]?\d+))?$"


def _canonical(texts: Any) -> Any:
    """Each decimal number's one spelling, ``[-]DIGITSeEXPONENT`` without leading or trailing zeros.

    ``"0"`` for zero (of either sign); null where the text is no decimal number (``inf``, ``NA``).
    Raises ``pa.ArrowInvalid`` for an exponent beyond int64.
    """
    parts = pc.extract_regex(texts, _DECIMAL)
    sign, whole, fraction, exponent = (pc.struct_field(parts, [i]) for i in range(4))
    significant = pc.utf8_ltrim(pc.binary_join_element_wise(whole, fraction, ""), "0")
    mantissa = pc.utf8_rtrim(significant, "0")
    power = pc.cast(pc.if_else(pc.equal(exponent, ""), "0", pc.utf8_ltrim(exponent, "+")), pa.int64())
    power = pc.add(pc.subtract(power, pc.utf8_length(fraction)), pc.utf8_length(significant))
    power = pc.subtract(power, pc.utf8_length(mantissa))  # the trailing zeros dropped from the digits
    zero = pc.equal(mantissa, "")
    text = pc.binary_join_element_wise(
        pc.if_else(pc.equal(sign, "-"), "-", ""), mantissa, "e", pc.cast(power, pa.string()), ""
    )
    numbers = pc.greater(pc.add(pc.utf8_length(whole), pc.utf8_length(fraction)), 0)  # "." is no number
    return pc.if_else(numbers, pc.if_else(zero, "0", text), pa.scalar(None, pa.string()))


def _exact(texts: Any, dtype: pa.DataType) -> bool:
    """Whether every number in ``texts`` is the value ``dtype`` reads it as: its shortest text names the same number.

    ``0.1`` is (its float64 prints as ``0.1``); ``9007199254740993`` or ``1e999`` are not (they read
    as ``9007199254740992`` and ``inf``). Texts that are no decimal number (the reader's nulls,
    ``inf``) are what they read as. Vectorised over the distinct texts.
    """
    texts = pc.utf8_trim(pc.unique(texts.cast(pa.string())), " \t")  # the reader trims numbers so
    try:
        written = _canonical(texts)
        numbers = written.is_valid()
        values = pc.cast(pc.filter(texts, numbers), dtype)  # the reader's parser
        read = _canonical(pc.cast(values, pa.string()))  # Arrow writes a float's shortest text
    except pa.ArrowException:  # an exponent beyond int64, a text the cast does not take: keep the text
        return False
    return bool(pc.all(pc.fill_null(pc.equal(pc.filter(written, numbers), read), False), min_count=0).as_py())


@dataclass(frozen=True)
class _Place:
    """Where a part of the discovered combinations comes from: a source and its rows (for messages)."""

    label: str
    first: int
    last: int
    empty: bool = False  # a file known to hold no rows (named so in a message about its type)

    @property
    def note(self) -> str:
        """What a message adds after the type of a file without rows: its types count all the same."""
        return " (the file holds no rows; its types count all the same)" if self.empty else ""


def _type_clash(
    by: Sequence[str],
    parts: Sequence[pa.Table],
    places: Sequence[_Place],
    why: Mapping[str, Callable[[], str]] | None = None,
) -> str:
    """Why the parts' ``by`` columns do not concatenate, naming the files (or rows) and the types.

    Either two types Arrow cannot unify (string and int64), or types it unifies whose values do
    not fit the unified type (int64 above 2**53 and double, uint64 above 2**63 and int64).
    ``why``: for a CSV column read as text, why it is (:func:`_kept_as_text`), said when it clashes.
    """
    why = why or {}
    for name in by:
        typed = [
            (part.column(name), place)
            for part, place in zip(parts, places)
            if not pa.types.is_null(part.schema.field(name).type)  # no value there: any type fits
        ]
        first: dict[str, tuple[pa.DataType, _Place]] = {}  # type text -> (type, where it was first seen)
        for column, place in typed:
            for other, other_place in first.values():
                try:
                    pa.unify_schemas(
                        [pa.schema([(name, other)]), pa.schema([(name, column.type)])], promote_options="permissive"
                    )
                except pa.ArrowException:
                    return _clash_text(name, (column.type, place), (other, other_place), why=why.get(name))
            first.setdefault(str(column.type), (column.type, place))
        if len(first) < 2:
            continue
        unified = (
            pa.unify_schemas([pa.schema([(name, dtype)]) for dtype, _ in first.values()], promote_options="permissive")
            .field(name)
            .type
        )
        for column, place in typed:
            try:
                column.cast(unified)  # as concat_tables casts every part: safely
            except pa.ArrowException as err:
                others = [seen for seen in first.values() if seen[0] != column.type]
                other = next((seen for seen in others if seen[0] == unified), others[0])
                reason = str(err)
                if _value_type(column.type) == pa.uint64():  # uint64 holds the others only without a negative
                    negative = next(((v, p) for c, p in typed if (v := _negative(c)) is not None), None)
                    if negative is not None:
                        reason += (
                            f"; nor does uint64, since {negative[1].label} holds the negative value {negative[0]}: "
                            "no integer type holds both"
                        )
                return _clash_text(name, (column.type, place), other, (unified, reason))
    return f"column(s) {list(by)} (--by segments) have types that differ between files."


def _clash_text(
    name: str,
    this: tuple[pa.DataType, _Place],
    other: tuple[pa.DataType, _Place],
    unfit: tuple[pa.DataType, str] | None = None,
    why: Callable[[], str] | None = None,
) -> str:
    """The message for two parts whose ``by`` column ``name`` cannot be one type.

    Two files: both named with their types, and the fix (one type in every file). One input (a
    pandas object column, typed slice by slice from its values): its rows and types, and the
    conversion to make first. ``unfit``: the type both unify to and the cast's error, when that
    type does not hold every value of ``this``. ``why``: why a CSV file's column is text, said
    instead of the general fix when one of the two types is text.
    """
    (dtype, place), (other_type, other_place) = this, other
    column = f"column {name!r} (--by segment)"
    if place.label != other_place.label:
        text = (
            f"{place.label}: {column} has type {dtype}{place.note}, "
            f"but in {other_place.label} it has type {other_type}{other_place.note}"
        )
        where = place.label
    else:
        where = data_rows(place.first, place.last)
        text = (
            f"{place.label}: {column} mixes value types in this one input: {where} read as {dtype}, "
            f"{data_rows(other_place.first, other_place.last)} as {other_type} (an object column's "
            "slices are typed from their values)"
        )
    if unfit is not None:
        text += f"; Arrow reads both as {unfit[0]}, which cannot hold every value of {where} ({unfit[1]})"
    if place.label != other_place.label and why is not None and pa.string() in (dtype, other_type):
        return f"{text}. A segment column needs one type in every file. {why()}."
    if place.label != other_place.label:
        return (
            f"{text}. A segment column needs one type, holding all its values, in every file: write the column "
            "with one such type in every file (text, for example)."
        )
    return (
        f"{text}. A segment column needs one type: convert the column first, e.g. "
        f'df[{name!r}] = df[{name!r}].astype("string") (text; missing values stay null).'
    )


class SegmentRows:
    """Rows (equally long 1-D tensors, one per column) kept with their segment ids until the end.

    Each column is kept in the dtype it was read in (float32 scores and weights, int8 labels, int32
    ids: 4, 1 and 4 bytes a row, not 8): the kernels of :mod:`~torchmetrics_ext.evaluate.by_segment`
    accumulate in float64 themselves, and every narrow value is the same number in float64. Batches
    read in different dtypes (an int32 and an int64 batch of ids, files of float32 and float64 scores)
    are joined in :meth:`gathered`, in the narrowest dtype holding every value of every rank (NumPy's
    promotion: int32 with float32 is float64); a float narrower than float32 is kept as float32.

    Each segmentation (a ``by`` of its own: ``--by country --by device``) adds one segment id per row
    (int32 below 2**31 segments, else int64), not another copy of the rows: every segmentation is
    computed from the same kept rows.

    Args:
        dtypes: every column's dtype when no rank kept a row of it (float64 or int64), the same on every rank.
        segmentations: how many segment ids each row has.
    """

    def __init__(self, dtypes: Mapping[str, torch.dtype], segmentations: int = 1) -> None:
        self._segments = [f"\0segment{i}" for i in range(segmentations)]
        self.dtypes = {**dtypes, **dict.fromkeys(self._segments, torch.int64)}
        self._chunks: dict[str, list[Tensor]] = {name: [] for name in self.dtypes}

    def append(self, columns: Mapping[str, Tensor], segments: Sequence[Tensor]) -> None:
        """Keep one batch, with each segmentation's ids of its rows (local codes, :meth:`SegmentCollector.add`).

        Each column is copied in its own dtype (a copy: the batch read, whose buffers it may view, is then
        freed); the local codes as int32 where they fit.
        """
        for name, value in columns.items():
            self._chunks[name].append(value.clone())
        for name, codes in zip(self._segments, segments):
            narrow = codes.numel() == 0 or int(codes.max()) <= _INT32_MAX
            self._chunks[name].append(codes.to(torch.int32) if narrow else codes.clone())

    def number_segments(self, ids: np.ndarray, segmentation: int = 0) -> None:
        """Replace every kept row's local code of a segmentation with its segment, ``ids[code]``.

        The segment ids are int32 where every id fits (below 2**31 segments; ``ids`` is the same on
        every rank), else int64.
        """
        dtype = torch.int32 if len(ids) == 0 or int(ids.max()) <= _INT32_MAX else torch.int64
        lookup = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(dtype)
        name = self._segments[segmentation]
        self.dtypes[name] = dtype
        chunks = self._chunks[name]
        for i, codes in enumerate(chunks):  # each chunk replaced in turn: one chunk's copy at a time, not every chunk's
            chunks[i] = lookup[codes]

    def _joined_dtypes(self) -> dict[str, torch.dtype]:
        """Each column's dtype for every rank's rows: the promotion of the dtypes of every rank's non-empty chunks.

        One ``all_gather_object`` when distributed (every rank joins its rows in the same dtypes).
        """
        local = {name: sorted({str(c.dtype) for c in chunks if c.numel()}) for name, chunks in self._chunks.items()}
        seen = [local]
        world = _world()
        if world is not None:
            seen = [{} for _ in range(world[1])]
            dist.all_gather_object(seen, local)
        out = {}
        for name, default in self.dtypes.items():
            names = sorted({dtype for share in seen for dtype in share[name]})
            out[name] = _promoted([getattr(torch, n.removeprefix("torch.")) for n in names], default)
        return out

    def gathered(self) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Every kept row (from every rank when distributed) and its segment id of each segmentation.

        Each column is joined in one dtype for every rank (see the class). This rank's copy is
        released. Every rank must call it (it gathers when distributed), and every rank gets every row.
        """
        dtypes = self._joined_dtypes()
        local = {}
        # column by column, each column's chunks freed once joined: one column's copy at a time, not every column's
        for name, dtype in dtypes.items():
            chunks = self._chunks[name]
            self._chunks[name] = []
            local[name] = _joined(chunks, dtype)
            del chunks
            release_free_memory()  # the freed chunks (int8 labels' are below the mmap threshold) go back
        if _world() is not None:
            gathered = fused_gather([local])[0]
            rows = {name: torch.cat(parts) for name, parts in gathered.items()}
        else:
            rows = local
        segments = [rows.pop(name) for name in self._segments]
        return rows, segments


_INT32_MAX = (1 << 31) - 1


def _promoted(dtypes: Sequence[torch.dtype], default: torch.dtype) -> torch.dtype:
    """The narrowest dtype holding every value of ``dtypes`` (NumPy's promotion), a float at least float32.

    ``default`` where there is none (no rank kept a row). int32 with float32 is float64 (float32 does not hold
    every int32), int8 with float32 float32; float16 (and bfloat16) become float32, which the sorts take.
    """
    if not dtypes:
        return default
    if any(d == torch.bfloat16 for d in dtypes):  # NumPy has no bfloat16: float32 holds every value of it
        dtypes = [torch.float32 if d == torch.bfloat16 else d for d in dtypes]
    numpy_type = np.result_type(*(torch.empty(0, dtype=d).numpy().dtype for d in dtypes))
    dtype = torch.from_numpy(np.empty(0, numpy_type)).dtype
    return torch.float32 if dtype == torch.float16 else dtype


def _joined(chunks: list[Tensor], dtype: torch.dtype) -> Tensor:
    """``chunks`` concatenated in ``dtype``, each chunk released (its list entry cleared) once copied.

    The result's pages are written as the chunks are released, so joining a column holds about one copy
    of it, not two (the caller holds no other reference to the chunks); each chunk is converted as it is
    copied in, with no converted copy of all.
    """
    out = torch.empty(sum(chunk.numel() for chunk in chunks), dtype=dtype)
    start = 0
    for i, chunk in enumerate(chunks):  # a loop over the read batches (not rows), each written into its place
        out[start : start + chunk.numel()] = chunk
        start += chunk.numel()
        chunks[i] = out[:0]  # released: the caller's list no longer holds it
        del chunk
    return out
