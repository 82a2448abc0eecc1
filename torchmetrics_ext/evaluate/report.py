"""What an evaluation returns and shows: :class:`EvaluationResult`, the text table, files, the progress line."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa

from torchmetrics_ext.evaluate.checks import Problem

__all__ = [
    "OUTPUT_SUFFIXES",
    "OVERALL",
    "EvaluationResult",
    "Progress",
    "check_output_path",
    "package_version",
    "segment_text",
]

OVERALL = "all"  # the ``segment`` label of the values over every row
OUTPUT_SUFFIXES = (".json", ".csv", ".parquet", ".pq")
NULL_TEXT = "None"  # how a null segment value is written in labels and keys
_QUOTED = ("'", '"')  # text starting so is quoted, so the quoted form of other text stays apart
_SEPARATORS = ("/", ",")  # between the columns of a key (``.values``) and of a label (``segment``)


def _value_text(value: Any, dtype: pa.DataType | None = None) -> str:
    """A segment value as labels and keys write it (see :func:`segment_text`)."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, str):
        quoted = value == NULL_TEXT or value.startswith(_QUOTED) or any(sep in value for sep in _SEPARATORS)
        if quoted or not value.isprintable():  # a line break or tab would break the table's rows and log lines
            return repr(value)
        return value
    if isinstance(value, (float, np.floating)) and dtype is not None:
        # the shortest text that reads back as the column's value: 0.1, not 0.10000000149011612 (float32)
        # or 0.099975586 (float16, whose values arrive as float32)
        if pa.types.is_float32(dtype):
            return str(np.float32(value))
        if pa.types.is_float16(dtype):
            return str(np.float16(value))
    return str(value)


def segment_text(
    by: tuple[str, ...] | list[str],
    values: dict[str, Any],
    separator: str,
    types: Mapping[str, pa.DataType] | None = None,
) -> str:
    r"""``"country=US, dataset=a"`` (``separator=", "``) or ``"/country=US/dataset=a"`` (``"/"``, leading too).

    Every combination gets its own text: a null is ``None``; text that could read as something else
    (the text ``None``, text holding ``/`` or ``,``, or starting with a quote) or that holds a
    character Python does not print as itself (a line break, a tab, other control characters) is
    quoted as Python writes it (``g='None'``, ``page='/home'``, ``q='a\nb'``); other text and
    values are written as they are, a float32 or float16 column's values (``types``: each column's
    Arrow type) as the shortest text that reads back as that float32 or float16 (``0.1``; the
    records keep the exact value, ``0.10000000149011612`` for float32, ``0.0999755859375`` for float16).
    """
    types = types or {}
    text = separator.join(f"{b}={_value_text(values[b], types.get(b))}" for b in by)
    return f"/{text}" if separator == "/" and text else text


def package_version() -> str:
    """The installed distribution's version (``importlib.metadata``), else ``torchmetrics_ext.__version__``.

    The second is for a source tree run without installing it (``python -m torchmetrics_ext.cli``).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchmetrics-ext")
    except PackageNotFoundError:
        import torchmetrics_ext

        return torchmetrics_ext.__version__


def check_output_path(path: str) -> None:
    """Raise ``ValueError`` unless :meth:`EvaluationResult.write` can write ``path``.

    Checked before any data is read, so a bad ``--output`` never costs a whole evaluation.

    Raises:
        ValueError: the suffix is not ``.json``, ``.csv`` or ``.parquet``/``.pq``, the path is a
            directory, or its directory does not exist or is not writable.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"Expected an output path ending in .json, .csv or .parquet, got {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"Expected an output file, got the directory {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"Cannot write {path!r}: directory {parent!r} does not exist.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Cannot write {path!r}: directory {parent!r} is not writable.")


def _counting(method: Any) -> Any:
    """``list.<method>`` that counts the change on the list (:class:`_Records`)."""

    def counted(self: _Records, *args: Any, **kwargs: Any) -> Any:
        self.changes += 1
        return method(self, *args, **kwargs)

    counted.__name__ = method.__name__
    counted.__doc__ = method.__doc__
    return counted


class _Records(list[dict[str, Any]]):
    """A list that counts its changes: ``EvaluationResult.values`` sees them in O(1) per access.

    Every ``list`` method that changes the list (an item added, removed, replaced, reordered) adds
    one to :attr:`changes`; a record (dict) edited in place is no change of the list.
    """

    changes = 0


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
):
    setattr(_Records, _name, _counting(getattr(list, _name)))
del _name


@dataclass
class EvaluationResult:
    """Values of every metric for every task, overall and per segment.

    Attributes:
        tasks: task names, in order.
        metrics: metric names (registry names), in order.
        by: the segment columns (empty without ``by``); with several segmentations every one's columns,
            each once, in the order first given.
        records: one dict per (segment, task): ``segment`` (``"all"`` or ``"country=US, ..."``, see
            :func:`segment_text`),
            the ``by`` columns' values (``None`` on the overall records), ``task``, ``rows`` (the rows valid
            for the task whose weight is not 0: every valid row of a task without weights) and
            one float per metric reading the task (every metric, unless ``metric_tasks`` leaves the task
            out of some: those are not in its records, nor in :attr:`values`; null in :meth:`to_arrow` and
            the ``.csv`` and ``.parquet`` files, ``-`` in :meth:`format_table`). Overall records come first.
        rows_read: rows read from the input (every rank).
        rows_skipped: invalid rows dropped (``on_invalid="skip"``) for at least one task: a row is dropped
            only for the tasks reading a column it is invalid in (each record's ``rows`` counts the rows
            of its task).
        problems: what the invalid rows were (file, column, reason, count, first row).
        warnings: undefined-value warnings raised while computing (their values are ``nan``), from
            every rank: one line per metric over all rows naming the task(s), then one line per
            metric, task and reason counting the segments it is undefined in and naming the first
            three (``"... in 12 of 40 segments (g=a, g=c, g=d, ...): ..."``, 40 being the task's
            segments with rows: with ``on_invalid="skip"`` it may differ from task to task); first, where
            the tasks (however given) ran without ``weights`` over data holding a ``weight``
            column, a note that the column was not used as their weights, then, where ``user``/``session``
            ids were given that no metric reads (so they were not read), a note for each, then, where
            ``from_logits=True`` with ``metric_tasks`` changed nothing (no metric of probabilities reads a task),
            a note saying so. ``evaluate()`` raises the notes that qualify the numbers as Python warnings too
            (:mod:`~torchmetrics_ext.evaluate.notes` lists every note and its category).
        by_types: the Arrow type of each segment column's values, as read (integers keep their
            width and sign in :meth:`to_arrow`; a column missing here is inferred from the values).
        label_types: the Arrow type each segment column's labels are written for, where it is not
            :attr:`by_types`' (a float16 column, whose values are read as float32: its labels are the
            shortest float16 text, ``0.1``).
        by_categories: for each segment column whose input declared its values' order (a pandas
            categorical, an ordered Arrow dictionary, a polars ``Enum``): its categories in that
            order (unused ones too), as :attr:`by_types`, and whether they are ordered;
            :meth:`to_pandas` gives the column as a pandas Categorical of them.
        segmentations: with several segmentations in one run (``by=[["country"], ["device"]]``,
            ``--by country --by device``), each one's columns; empty otherwise (:attr:`by` is then the
            one segmentation). The records come overall first, then each segmentation's as a run
            with that ``by`` alone gives them; a record holds its own segmentation's columns only
            (the others are null in :meth:`to_arrow` and the files written).
        provenance: how the values were made, for a review to read beside them (the ``provenance`` key
            of the ``.json`` file; ``docs/evaluate.md``, "The JSON output"): the package version, the
            inputs read, each task's columns, the ``weights``/``user``/``session`` columns, the
            segmentations, the metrics with their options, ``metric_tasks``, ``from_logits``,
            ``on_invalid`` and the number of processes; the command line adds its arguments and
            ``--config`` file. Not compared by ``==`` (the same values read from a file or a table,
            by one process or four, are equal results).

    Examples:
        >>> import json, os, tempfile
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import evaluate
        >>> table = pa.table({"p": [0.1, 0.8, None, 0.6, 0.3], "y": [0, 1, 1, 1, 0]})
        >>> result = evaluate(table, {"click": ("p", "y")}, ["ctr", "auc"], on_invalid="skip")
        >>> result.values  # the four valid rows: 2 clicks, both scored above both non-clicks
        {'ctr/click': 0.5, 'auc/click': 1.0}
        >>> print(result.summary())
        5 rows read, 1 invalid row skipped:
          <pyarrow.Table>: column 'p' (predictions of task 'click') has 1 row that is null (first at 0-based data row 2)
        >>> result.to_pandas()
          segment   task  rows  ctr  auc
        0     all  click     4  0.5  1.0
        >>> result.to_arrow().schema.types
        [DataType(string), DataType(string), DataType(int64), DataType(double), DataType(double)]
        >>> path = os.path.join(tempfile.mkdtemp(), "click.json")
        >>> result.write(path)
        >>> with open(path) as file:
        ...     records = json.load(file)["records"]
        >>> records
        [{'segment': 'all', 'task': 'click', 'rows': 4, 'ctr': 0.5, 'auc': 1.0}]
        >>> result.provenance["inputs"], result.provenance["tasks"]
        (['<pyarrow.Table>'], {'click': {'predictions': 'p', 'labels': 'y', 'weighted': False}})
    """

    tasks: tuple[str, ...]
    metrics: tuple[str, ...]
    by: tuple[str, ...]
    records: list[dict[str, Any]]
    rows_read: int = 0
    rows_skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    by_types: dict[str, pa.DataType] = field(default_factory=dict)
    label_types: dict[str, pa.DataType] = field(default_factory=dict)
    by_categories: dict[str, tuple[pa.Array, bool]] = field(default_factory=dict)
    segmentations: tuple[tuple[str, ...], ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def values(self) -> dict[str, float]:
        """Flat ``{"ne/click": value, "ne/click/country=US/dataset=a": value, ...}``.

        A null segment value is written ``None``, and text that could read as another value is
        quoted (``g='None'``, ``page='/home'``; see :func:`segment_text`), so every key is its own.

        Built on first access and kept: ``result.values[key]`` in a loop over the keys costs one
        lookup each, whatever the number of records (it was rebuilt, then compared record by
        record, on every access). It is built again after a field is reassigned
        (``result.records = ...``) or the list of records changes (a record added, removed or
        replaced, even at the same length: the list counts its changes); a record edited in place
        is not seen by it (edit through a new list, ``result.records = [...]``). The same dict is
        returned each time: copy it to change it.
        """
        records = self.records
        # the list object and its count of changes (see _Records): an added and a removed record
        # leave the length as it was; the list itself is kept in the cache, so its id is never reused
        state = (
            records.changes if isinstance(records, _Records) else None,
            self.metrics,
            self.by,
            self.segmentations,
            tuple(self.by_types.items()),
            tuple(self.label_types.items()),
        )
        cached = self.__dict__.get("_values")
        if cached is None or cached[0] is not records or cached[1] != state or not isinstance(records, _Records):
            types = {**self.by_types, **self.label_types}
            out: dict[str, float] = {}
            columns = set(self.by)
            for record in records:
                if record["segment"] == OVERALL:
                    suffix = ""
                elif self.segmentations:  # a record holds its segmentation's columns, in its order
                    suffix = segment_text([name for name in record if name in columns], record, "/", types)
                else:
                    suffix = segment_text(self.by, record, "/", types)
                for metric in self.metrics:
                    if metric in record:  # a metric of some tasks (metric_tasks) has none for the others
                        out[f"{metric}/{record['task']}{suffix}"] = record[metric]
            cached = (records, state, out)
            self.__dict__["_values"] = cached  # not a field: ==, repr and asdict ignore it
        return cached[2]

    def __setattr__(self, name: str, value: Any) -> None:
        """Fields as set; ``records`` kept as a list that counts its changes (a copy of the list given)."""
        if name == "records" and not isinstance(value, _Records):
            value = _Records(value)
        super().__setattr__(name, value)

    def to_arrow(self) -> pa.Table:
        """The records as a ``pyarrow.Table`` (one row per segment and task).

        ``segment`` and ``task`` are strings, ``rows`` int64, the metrics float64 and each segment
        column has the type of its values in the data (:attr:`by_types`: uint64 ids above ``2**63``
        stay uint64; a float16 column, read as float32, is float16 again: :attr:`label_types`), null
        on the overall rows.
        """
        types: dict[str, pa.DataType | None] = {"segment": pa.string(), "task": pa.string(), "rows": pa.int64()}
        # label_types differs from by_types only for float16 columns, whose values (read as float32,
        # which holds each exactly) are float16 values: give them their own type back
        types |= {b: self.label_types.get(b, self.by_types.get(b)) for b in self.by}
        types |= dict.fromkeys(self.metrics, pa.float64())
        names = ["segment", *self.by, "task", "rows", *self.metrics]
        if self.records:  # a field a caller added to the records stays, after these
            names += [name for name in self.records[0] if name not in names]
        # a metric that does not read a record's task (metric_tasks) is null there
        return pa.table({name: pa.array([r.get(name) for r in self.records], types.get(name)) for name in names})

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas).

        Integer segment columns are pandas' nullable integers (``Int64``, ``UInt64``, ...): exact,
        with ``<NA>`` on the overall rows, where plain integers would turn into float64. A segment
        column whose input declared its values' order (:attr:`by_categories`: a pandas categorical,
        an ordered Arrow dictionary, a polars ``Enum``) is a pandas Categorical of its categories,
        ordered as the input's (an ``Enum`` is ordered), as pandas' ``groupby`` gives it.
        """
        import pandas as pd

        table = self.to_arrow()
        frame = table.to_pandas()
        nullable = {
            pa.int8(): pd.Int8Dtype(),
            pa.int16(): pd.Int16Dtype(),
            pa.int32(): pd.Int32Dtype(),
            pa.int64(): pd.Int64Dtype(),
            pa.uint8(): pd.UInt8Dtype(),
            pa.uint16(): pd.UInt16Dtype(),
            pa.uint32(): pd.UInt32Dtype(),
            pa.uint64(): pd.UInt64Dtype(),
        }
        for name in self.by:
            if pa.types.is_integer(table.schema.field(name).type):
                frame[name] = table.column(name).to_pandas(types_mapper=nullable.get)
            if name in self.by_categories:
                categories, ordered = self.by_categories[name]
                dtype = pd.CategoricalDtype(pd.Index(categories.to_pandas()), ordered)
                frame[name] = frame[name].astype(dtype)
        return frame

    def format_table(self) -> str:
        """A fixed-width text table: one line per segment and task, one column per metric.

        A metric that does not read a task (``metric_tasks``) shows ``-`` on its lines; an undefined value ``nan``.
        """
        head = ["segment", "task", "rows", *self.metrics]
        cells = [
            [str(r["segment"]), str(r["task"]), f"{r['rows']:,}", *(_number(r.get(m)) for m in self.metrics)]
            for r in self.records
        ]
        widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
        lines.append("-" * len(lines[0]))
        for row in cells:
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        return "\n".join(lines)

    def summary(self) -> str:
        """Rows read and skipped, and why."""
        text = f"{self.rows_read:,} {'row' if self.rows_read == 1 else 'rows'} read"
        if self.rows_skipped:
            rows = "row" if self.rows_skipped == 1 else "rows"
            text += f", {self.rows_skipped:,} invalid {rows} skipped:\n" + "\n".join(f"  {p}" for p in self.problems)
        return text

    def write(self, path: str) -> None:
        r"""Write the records to ``.json`` (with row counts, problems and :attr:`provenance`), ``.csv`` or ``.parquet``.

        Binary segment values (``bytes``) are written as Python bytes literals (``b'a'``,
        ``b'\xff'``, lossless: ``ast.literal_eval`` gives the bytes back) in ``.json`` and ``.csv``,
        which hold text, as in the ``segment`` labels; ``.parquet`` keeps them binary. The file is
        written under a temporary name in the same directory and renamed when complete, so a
        failed write leaves no partial file (and an existing file as it was).

        Raises:
            ValueError: see :func:`check_output_path`.
            OSError: the file cannot be written (the directory went away, the disk is full...).
        """
        check_output_path(path)
        suffix = os.path.splitext(path)[1].lower()
        directory, name = os.path.split(os.path.abspath(path))
        partial = os.path.join(directory, f".{name}.{os.getpid()}.partial")
        try:
            self._write(partial, suffix)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    def _write(self, path: str, suffix: str) -> None:
        if suffix == ".json":
            payload = {
                "tasks": list(self.tasks),
                "metrics": list(self.metrics),
                "by": [list(columns) for columns in self.segmentations] if self.segmentations else list(self.by),
                "rows_read": self.rows_read,
                "rows_skipped": self.rows_skipped,
                "problems": [vars(p) for p in self.problems],
                "warnings": self.warnings,
                "records": self.records,
                "provenance": self.provenance,  # last: the keys before it are as they always were
            }
            with open(path, "w") as handle:  # strict JSON: an undefined value (nan, inf) is null
                json.dump(_strict_json(payload), handle, indent=2, default=str, allow_nan=False)
                handle.write("\n")
        elif suffix == ".csv":
            import pyarrow.csv as pa_csv

            pa_csv.write_csv(_binary_as_text(self.to_arrow()), path)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(self.to_arrow(), path)


def _binary_as_text(table: pa.Table) -> pa.Table:
    r"""``table`` with every binary column as text: Python bytes literals (``b'\xff'``), nulls kept.

    CSV holds text: Arrow writes binary values as they are, and refuses those that are not UTF-8.
    """
    for i, column in enumerate(table.schema):
        dtype = column.type
        if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype):
            text = [None if v is None else repr(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, column.name, pa.array(text, pa.string()))
    return table


def _number(value: float | None) -> str:
    if value is None:  # the metric does not read the task
        return "-"
    return "nan" if math.isnan(value) else f"{value:.6f}"


# seconds between two redraws of the compute phase's progress line (a step ending sooner redraws nothing)
COMPUTE_INTERVAL = 2.0


class Progress:
    """A plain-text progress line on stderr: rows read out of the total, percentage and rate.

    Args:
        total: rows expected (``None`` when unknown, e.g. CSV).
        enabled: print at all.
        stream: where to print (default ``sys.stderr``).
        interval: seconds between redraws.
        label: the line's first words; under ``torchrun`` rank 0's line counts its own rows only, and
            says so (``"evaluate (rank 0 of 4)"``), until :meth:`all_ranks` prints every rank's total.
        compute: show the compute phase's steps (:meth:`start_steps`): ``True`` wherever ``stream`` goes,
            ``None`` only where it is a terminal (the command line's default), ``False`` never.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> progress = Progress(3, stream=out, label="evaluate (rank 0 of 2)")
        >>> progress.advance(3)
        >>> progress.close()
        >>> progress.all_ranks(10, 2)
        >>> print(out.getvalue().replace(chr(13), "").split(",")[0])
        evaluate (rank 0 of 2): 3 / 3 rows (100.0%)
        >>> out.getvalue().splitlines()[-1].split(",")[0]
        'evaluate: 10 rows read by 2 ranks'
    """

    def __init__(
        self,
        total: int | None,
        enabled: bool = True,
        stream: IO[str] | None = None,
        interval: float = 0.5,
        label: str = "evaluate",
        compute: bool | None = None,
    ):
        self.total = total
        self.enabled = enabled
        self.label = label
        self.stream = stream or sys.stderr
        self.interval = interval
        self.rows = 0
        self._drawn = False
        self._start = self._last = time.perf_counter()
        # the compute phase's progress: `compute` True shows it, None where the stream is a terminal
        if compute is None:
            isatty = getattr(self.stream, "isatty", None)
            compute = bool(isatty()) if callable(isatty) else False
        self.compute_enabled = enabled and compute
        self._steps = self._step = 0
        self._what = ""
        self._phase_start = self._phase_last = 0.0
        self._width = 0  # the longest compute line drawn: a shorter one is padded over it
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._ticker: threading.Thread | None = None

    def advance(self, rows: int) -> None:
        """Count ``rows`` more rows; redraw at most every ``interval`` seconds."""
        self.rows += rows
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw(now, "\r")

    def _draw(self, now: float, end: str) -> None:
        rate = self.rows / max(now - self._start, 1e-9)
        text = f"{self.label}: {self.rows:,}"
        if self.total:
            text += f" / {self.total:,} rows ({100.0 * self.rows / self.total:5.1f}%)"
        else:
            text += " rows"
        self.stream.write(f"\r{text}, {rate:,.0f} rows/s{end}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final line, unless no row was read and nothing drawn (a run refused before its first row)."""
        if self.enabled and (self.rows or self._drawn):
            self._draw(time.perf_counter(), "\n")

    def computing(self, text: str) -> None:
        """Say on a line of its own that reading is over and ``text`` (what is computed) has begun.

        Exact AUC, GAUC and the ranking sorts run after the last row is read and may take minutes:
        without this line the progress sat at ``100.0%`` with nothing saying why.
        """
        if self.enabled:
            self.stream.write(f"evaluate: computing {text}\n")
            self.stream.flush()

    def start_steps(self, steps: int) -> None:
        """Begin the compute phase's progress: ``steps`` steps, redrawn every :data:`COMPUTE_INTERVAL` seconds.

        Only where :attr:`compute_enabled` (stderr a terminal, or asked for: ``--progress``). A thread redraws
        the line (the step, its name and the time since the phase began), so that one long step (an exact AUC
        over every row) still shows the run alive; the steps are metrics and segmentations, never segments.
        """
        if not self.compute_enabled:
            return
        self._steps, self._step = steps, 0
        self._phase_start = self._phase_last = time.perf_counter()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, args=(self._stop,), name="evaluate-progress", daemon=True)
        self._ticker.start()

    def step(self, what: str) -> None:
        """Say that the next step, ``what`` (``"auc by country"``), has begun; redrawn at most every interval."""
        if self._stop is None:
            return
        with self._lock:
            self._step += 1
            self._what = what
            if time.perf_counter() - self._phase_last >= COMPUTE_INTERVAL:
                self._draw_step()

    def finish_steps(self) -> None:
        """End the compute phase's progress: stop the redraws and end the line with the time it took."""
        stop, self._stop = self._stop, None
        if stop is None:
            return
        stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._ticker = None
        elapsed = time.perf_counter() - self._phase_start
        self._write(f"evaluate: computed {self._step} step{'s' * (self._step != 1)} in {elapsed:,.1f} s", "\n")

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(max(COMPUTE_INTERVAL, 0.1)):  # never a busy loop
            with self._lock:
                if not stop.is_set() and self._what:
                    self._draw_step()

    def _draw_step(self) -> None:
        """Redraw the compute line (the caller holds the lock)."""
        now = time.perf_counter()
        self._phase_last = now
        step = max(self._step, 1)
        self._write(
            f"evaluate: computing {self._what} (step {step} of {self._steps}), {now - self._phase_start:,.1f} s"
        )

    def _write(self, text: str, end: str = "") -> None:
        """``text`` over the compute line drawn last (padded over a longer one), then ``end``."""
        self.stream.write(f"\r{text.ljust(self._width)}{end}")
        self.stream.flush()
        self._width = 0 if end else max(self._width, len(text))

    def all_ranks(self, rows: int, ranks: int) -> None:
        """Print every rank's rows, once known where the ranks synchronise anyway (no collective of its own)."""
        if self.enabled and ranks > 1:
            rate = rows / max(time.perf_counter() - self._start, 1e-9)
            self.stream.write(f"evaluate: {rows:,} rows read by {ranks} ranks, {rate:,.0f} rows/s\n")
            self.stream.flush()


def _strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or Infinity).

    A float segment column's NaN value is ``None`` too: the record's ``segment`` key (``g=nan``)
    keeps that segment apart from the null one (``g=None``).
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value
