"""Segments for ``--by``: discovered from the data, encoded per batch without a loop, rows kept per segment.

:func:`discover_segments` reads only the ``by`` columns of every source once and returns a
:class:`SegmentIndex`: the distinct value combinations, sorted, and an encoder that maps a batch
to integer segment ids with one ``index_in`` per column and one ``searchsorted``. Every rank of a
distributed run discovers the same segments, so the ids agree without communication.

:class:`SegmentRows` keeps the rows a metric needs (float64/int64 columns plus the segment id,
``8 * (columns + 1)`` bytes per row); at the end it gathers them from every rank with one fused
collective per dtype, sorts them by segment once and hands out each segment's rows, so every
segment value is the metric computed on exactly that segment's rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from torch import Tensor

from torchmetrics_ext.evaluate.sources import InvalidDataError, Source
from torchmetrics_ext.utilities.distributed import fused_gather

__all__ = ["SegmentIndex", "SegmentRows", "discover_segments"]


def _decoded(array: Any) -> Any:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


class SegmentIndex:
    """The distinct combinations of the ``by`` columns, sorted (nulls last), and their encoder.

    Args:
        by: the segment columns.
        combos: a table of the distinct combinations (one row each).
    """

    def __init__(
        self, by: Sequence[str], combos: pa.Table, text_types: Mapping[str, pa.DataType] | None = None
    ) -> None:
        self.by = tuple(by)
        # the type each ``by`` column of a text file (CSV) is read with: numbers when every value of
        # it is one, so "2" sorts before "10" and a CSV agrees with a Parquet file of numbers
        self.text_types = dict(text_types or {})
        combos = combos.sort_by([(name, "ascending") for name in self.by])  # nulls last
        self.labels: list[dict[str, Any]] = combos.to_pylist()
        self._value_sets = [pc.unique(combos.column(name)).sort(null_placement="at_end") for name in self.by]
        sizes = [len(values) for values in self._value_sets]
        self._radix = np.cumprod([1, *sizes[:0:-1]])[::-1].astype(np.int64)  # mixed-radix place values
        self._keys = self._encode_keys([combos.column(name) for name in self.by])

    def __len__(self) -> int:
        return len(self.labels)

    def _encode_keys(self, columns: Sequence[Any]) -> np.ndarray:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for column, values, place in zip(columns, self._value_sets, self._radix):
            codes = pc.index_in(_decoded(column), value_set=values)
            key += codes.to_numpy(zero_copy_only=False).astype(np.int64) * place
        return key

    def encode(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Segment id (position in :attr:`labels`) of every row of a batch."""
        return np.searchsorted(self._keys, self._encode_keys([columns[name] for name in self.by]))


def discover_segments(sources: Sequence[Source], by: Sequence[str], batch_size: int) -> SegmentIndex:
    """Read the ``by`` columns of every source and collect their distinct combinations.

    Raises:
        InvalidDataError: a ``by`` column is missing or not a flat type (names the file and column).
    """
    for source in sources:
        schema = source.schema()
        for name in by:
            if name not in schema.names:
                raise InvalidDataError(
                    f"{source.label}: column {name!r} (--by segment) is missing; found {schema.names}."
                )
            if pa.types.is_nested(schema.field(name).type):
                raise InvalidDataError(
                    f"{source.label}: column {name!r} (--by segment) has type {schema.field(name).type}; "
                    "expected flat values (strings, numbers, dates...)."
                )
    types = _text_types(sources, by, batch_size)
    parts: list[pa.Table] = []
    labels: list[str] = []  # the source of each part, for messages
    for source in sources:
        for chunk in source.chunks(batch_size):  # text files with the types the runner reads them with
            for batch in source.read(chunk, by, batch_size, types if source.infers_types else None):
                table = pa.table({name: _decoded(batch.column(name)) for name in by})
                parts.append(table.group_by(list(by)).aggregate([]))
                labels.append(source.label)
    if not parts:
        return SegmentIndex(by, pa.table({name: pa.array([], pa.null()) for name in by}))
    try:
        combos = pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowException:
        raise InvalidDataError(_type_clash(by, parts, labels)) from None
    return SegmentIndex(by, combos.group_by(list(by)).aggregate([]), types)


_NUMBER_TYPES = (pa.int64(), pa.uint64(), pa.float64())


def _text_types(sources: Sequence[Source], by: Sequence[str], batch_size: int) -> dict[str, pa.DataType]:
    """The type each ``by`` column of the text files (CSV) is read with, the same for every file.

    The stored type of the column in the typed files (Parquet) if every text file reads as it,
    else the first of int64, uint64 and float64 that every text file reads as (the typed files'
    numbers then join them as Arrow promotes), else text. Each candidate is tried with the reader
    itself (its own parsing and null values), so the runner reads exactly what was discovered.
    """
    text = [source for source in sources if source.infers_types]
    out: dict[str, pa.DataType] = {}
    for name in by if text else ():
        stored = [source.schema().field(name).type for source in sources if not source.infers_types]
        stored = [t.value_type if pa.types.is_dictionary(t) else t for t in stored if not pa.types.is_null(t)]
        candidates = stored[:1] + [t for t in _NUMBER_TYPES if t not in stored[:1]]
        out[name] = next(
            (t for t in candidates if all(_reads_as(source, name, t, batch_size) for source in text)), pa.string()
        )
    return out


def _reads_as(source: Source, name: str, dtype: pa.DataType, batch_size: int) -> bool:
    """Whether every value of column ``name`` of a text file reads as ``dtype``."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return True
    try:
        for chunk in source.chunks(batch_size):
            for _ in source.read(chunk, [name], batch_size, {name: dtype}):
                pass
    except InvalidDataError:
        return False
    return True


def _type_clash(by: Sequence[str], parts: Sequence[pa.Table], labels: Sequence[str]) -> str:
    """The first ``by`` column whose type differs between two files, naming both files and types."""
    for name in by:
        first: dict[str, Any] = {}  # type text -> (file, type) where it was first seen
        for part, label in zip(parts, labels):
            dtype = part.schema.field(name).type
            if pa.types.is_null(dtype):
                continue  # no value there: any type fits
            for other_label, other in first.values():
                try:
                    pa.unify_schemas(
                        [pa.schema([(name, other)]), pa.schema([(name, dtype)])], promote_options="permissive"
                    )
                except pa.ArrowException:
                    return (
                        f"{label}: column {name!r} (--by segment) has type {dtype}, but in {other_label} it has "
                        f"type {other}; a segment column needs one type in every file."
                    )
            first.setdefault(str(dtype), (label, dtype))
    return f"column(s) {list(by)} (--by segments) have types that differ between files."


class SegmentRows:
    """Rows (equally long 1-D tensors, one per column) kept with their segment ids until the end.

    Args:
        dtypes: every column's dtype (float64 or int64), the same on every rank.
    """

    def __init__(self, dtypes: Mapping[str, torch.dtype]) -> None:
        self.dtypes = {**dtypes, "\0segment": torch.int64}
        self._chunks: dict[str, list[Tensor]] = {name: [] for name in self.dtypes}

    def append(self, columns: Mapping[str, Tensor], segments: Tensor) -> None:
        """Keep one batch."""
        for name, value in {**columns, "\0segment": segments}.items():
            self._chunks[name].append(value.to(self.dtypes[name]))

    def by_segment(self, num_segments: int) -> Iterator[tuple[int, dict[str, Tensor]]]:
        """Every segment's rows (from every rank when distributed), segment by segment.

        Segments without rows are skipped. Every rank must call it (it gathers when distributed).
        """
        local = {
            name: torch.cat(chunks) if chunks else torch.zeros(0, dtype=self.dtypes[name])
            for name, chunks in self._chunks.items()
        }
        self._chunks = {name: [] for name in self.dtypes}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = fused_gather([local])[0]
            rows = {name: torch.cat(parts) for name, parts in gathered.items()}
        else:
            rows = local
        segment = rows.pop("\0segment")
        order = torch.argsort(segment, stable=True)
        counts = torch.bincount(segment, minlength=num_segments).tolist()
        start = 0
        for index, count in enumerate(counts):
            if count:
                picked = order[start : start + count]
                yield index, {name: value[picked] for name, value in rows.items()}
            start += count
