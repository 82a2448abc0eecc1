"""The offline evaluation loop: stream record batches through :class:`~torchmetrics_ext.RecMetricModule`.

Offline numbers are online numbers: the metrics are resolved by the one metric-name registry
(:mod:`torchmetrics_ext.registry`) and fed through the same :class:`~torchmetrics_ext.RecMetricModule`
a training loop uses, so its validation, compute groups and fused distributed sync apply
unchanged. Per-segment values (``by``) are computed for every segment at once from the kept rows
(:mod:`~torchmetrics_ext.evaluate.by_segment`), with the kernels of the same metric classes; only a
metric without a kernel keyed by segment (none of the registry's) would get a module per segment.
"""

from __future__ import annotations

import ast
import copy
import gc
import hashlib
import inspect
import math
import re
import shlex
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric

from torchmetrics_ext._module_config import (
    _build_entry,
    _check_metric_tasks,
    _close_to,
    _metric_entries,
    _with_from_logits,
)
from torchmetrics_ext._module_domains import _PADDING_MARKS, _fed_probabilities
from torchmetrics_ext._module_stack import _stack_columns
from torchmetrics_ext.evaluate.by_segment import SegmentBatch, SegmentValues, Undefined, segment_values
from torchmetrics_ext.evaluate.checks import (
    CheckKey,
    Column,
    Kind,
    Problem,
    Problems,
    RowChecker,
    check_schema,
    check_slice,
    id_hint,
    text_types,
    to_numpy,
)
from torchmetrics_ext.evaluate.graded import graded_label_checks
from torchmetrics_ext.evaluate.memory import release_free_memory
from torchmetrics_ext.evaluate.notes import Note, ResultCaveatWarning, UnreadWeightsWarning, raise_notes
from torchmetrics_ext.evaluate.report import OVERALL, EvaluationResult, Progress, package_version, segment_text
from torchmetrics_ext.evaluate.segments import SegmentCollector, SegmentIndex, SegmentRows
from torchmetrics_ext.evaluate.sources import Chunk, ConversionError, InvalidDataError, Source, open_sources
from torchmetrics_ext.metrics.ranking import RankingMetrics
from torchmetrics_ext.module import RecMetricModule, RecTaskInfo
from torchmetrics_ext.registry import lookup
from torchmetrics_ext.utilities.checks import as_bool, as_real, as_str, check_flag, check_int, refuse_repeats
from torchmetrics_ext.utilities.distributed import _world as _ddp_world
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import (
    NO_SAMPLES,
    NO_SAMPLES_IN_SEGMENT,
    UndefinedMetricWarning,
)
from torchmetrics_ext.wrappers.segmented import Segmented

__all__ = ["DEFAULT_METRICS", "ResultCaveatWarning", "TaskSpec", "UnreadWeightsWarning", "evaluate", "parse_task"]

DEFAULT_METRICS = ("ne", "log_loss", "calibration", "ctr", "auc")
ON_INVALID = ("error", "skip")
_RANKING_KEY = "ranking"
RECORD_FIELDS = ("segment", "task", "rows")  # the fields of a record besides the segment columns and metrics
_MAX_BATCH_SIZE = 1 << 62  # larger batch sizes read as this one


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name, the columns of its predictions and labels, and whether ``weights`` weights it.

    ``weighted=False`` is a task without weights (a task dict's ``weight_name: None``, as
    :class:`~torchmetrics_ext.RecTaskInfo`'s ``weight_name=None``): every row weighs 1 for it,
    while the other tasks of the run are weighted by ``evaluate``'s ``weights`` column.

    Examples:
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import TaskSpec, evaluate
        >>> table = pa.table({"p_click": [0.1, 0.8, 0.6], "y_click": [0, 1, 0]})
        >>> result = evaluate(table, [TaskSpec("click", "p_click", "y_click")], ["ctr"])
        >>> result.values  # one click in three rows
        {'ctr/click': 0.3333333333333333}
    """

    name: str
    predictions: str
    labels: str
    weighted: bool = True


def parse_task(text: str) -> TaskSpec:
    """Parse ``"name=predictions:labels"`` (the command line's ``--task``).

    Examples:
        >>> from torchmetrics_ext.evaluate import parse_task
        >>> parse_task("click=p_click:y_click")
        TaskSpec(name='click', predictions='p_click', labels='y_click', weighted=True)
    """
    name, sep, columns = text.partition("=")
    predictions, sep2, labels = columns.partition(":")
    problems = (
        (not text, "it is empty"),
        (not sep, "no '=' after the task name"),
        (not name, "the task name before '=' is empty"),
        (not sep2, "no ':' between the prediction and label columns"),
        (not predictions, "the prediction column between '=' and ':' is empty"),
        (not labels, "the label column after ':' is empty"),
        (":" in labels, "more than one ':'"),
    )
    problem = next((what for wrong, what in problems if wrong), None)
    if problem is not None:
        raise ValueError(
            f"Expected a task as NAME=PREDICTIONS:LABELS (e.g. click=p_click:y_click), got {text!r}: {problem}."
        )
    return TaskSpec(name, predictions, labels)


def _tasks(tasks: Any) -> list[TaskSpec]:
    """The tasks of ``evaluate``'s ``tasks`` (and the config file's), checked; see :func:`evaluate`."""
    if isinstance(tasks, Mapping) and tasks:  # an empty one is refused below, as an empty list is
        out = []
        for name, columns in tasks.items():
            if not isinstance(name, str) or not name:
                # YAML reads an unquoted on/off/yes/no/true/false as a boolean: {on: [p, y]} is {True: ...}
                hint = " (YAML reads an unquoted on, off, yes or no as a boolean: quote the name)"
                raise refusal(
                    f"Expected `tasks` to hold task names as non-empty strings, got {name!r} "
                    f"({type(name).__name__}) for the columns {columns!r}{hint if isinstance(name, bool) else ''}.",
                    wrong_type=not isinstance(name, str),
                )
            pair = _names_of(columns)  # a tuple, a list, a numpy array...
            if not (pair is not None and len(pair) == 2 and all(isinstance(c, str) for c in pair)):
                raise refusal(  # no sequence, or one of other than names: a wrong type; three names a wrong value
                    f"Expected task {name!r} as (predictions column, labels column), got {columns!r}.",
                    wrong_type=pair is None or not all(isinstance(c, str) for c in pair),
                )
            out.append(TaskSpec(name, str(pair[0]), str(pair[1])))
    elif isinstance(tasks, (str, TaskSpec)):
        out = [_task(tasks)]
    elif not isinstance(tasks, Sequence) and (items := _names_of(tasks)):  # a numpy array, a pandas Index...
        out = _tasks([str(t) if isinstance(t, str) else t for t in items])
    elif isinstance(tasks, Sequence) and tasks:
        for task in tasks:
            if not isinstance(task, (str, TaskSpec, Mapping)):
                raise WrongTypeError(
                    f"Expected `tasks` as {{name: (predictions, labels)}} or a list of 'name=predictions:labels' "
                    f"strings, task names or task dicts (or TaskSpec), got a list holding {task!r} "
                    f"({type(task).__name__}); e.g. {{'click': ('p_click', 'y_click')}} or ['click=p_click:y_click']."
                )
        out = [_task(t) for t in tasks]
    else:  # an empty mapping or list is a wrong value; an int, a set, None a wrong type
        raise refusal(
            f"Expected `tasks` as {{name: (predictions, labels)}} or 'name=pred:label' strings, got {tasks!r}.",
            wrong_type=not isinstance(tasks, (Mapping, Sequence)) and _names_of(tasks) is None,
        )
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct task names, got {names}.")
    _check_distinct_views(out, tasks, weighted=True)
    return out


def _check_distinct_views(tasks: Sequence[TaskSpec], given: Any, weighted: bool) -> None:
    """Refuse two tasks over the same predictions and labels that would report the same values.

    As ``RecMetricModule`` has it, the same columns under another weighting are another view: a task weighted
    by ``weights`` next to one given ``weight_name: None``. Where no task is weighted (``weighted=False``:
    ``weights`` not given) the two are one view again.
    """
    seen: dict[tuple[str, str, bool], TaskSpec] = {}
    for task in tasks:
        first = seen.setdefault((task.predictions, task.labels, weighted and task.weighted), task)
        if first is not task:
            raise ValueError(
                f"Tasks {first.name!r} and {task.name!r} read the same columns (predictions {task.predictions!r}, "
                f"labels {task.labels!r}), so they would report the same values; give each task its own "
                f"prediction or label column (--task NAME=PREDICTIONS:LABELS){_plain_names_hint(given)}."
            )


def _names_of(value: Any) -> list[Any] | None:
    """The items of an ordered collection that is not one string, bytes, a set or a mapping; else ``None``."""
    if isinstance(value, (str, bytes, bytearray, AbstractSet, Mapping)) or not isinstance(value, Iterable):
        return None
    return list(value)


def _plain_names_hint(tasks: Any) -> str:
    """Why tasks given as plain names read the same columns, and the one task a pair of names may have meant."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence):
        return ""
    plain = [t for t in tasks if isinstance(t, str) and "=" not in t]
    if len(plain) < 2:
        return ""
    default = RecTaskInfo(plain[0])
    hint = (
        f"; a task given as a plain name reads the default columns {default.prediction_name!r} and "
        f"{default.label_name!r} (as in RecMetricModule.from_config): name each task's columns, "
        f"{{'name': {plain[0]!r}, 'prediction_name': ..., 'label_name': ...}} or '{plain[0]}=PREDICTIONS:LABELS'"
    )
    if len(tasks) == 2 and len(plain) == 2:  # ("p_click", "y_click"): one task's columns?
        hint += f"; for one task reading columns {tuple(tasks)!r}: {{'task': {tuple(tasks)!r}}}"
    return hint


def _unread_weight_note(column: str, tasks: Sequence[str]) -> str:
    """The note of a result whose tasks a module would weight by ``column``, which ``evaluate`` leaves unread.

    Every task, however given (a ``name=predictions:labels`` string, a mapping, a name, a dict),
    is one a :class:`~torchmetrics_ext.RecTaskInfo` would weight by its default ``weight_name``
    column in a module; ``evaluate`` reads weights only from its ``weights`` argument.
    """
    named = f"task {tasks[0]!r}" if len(tasks) == 1 else "tasks " + ", ".join(repr(t) for t in tasks)
    return (
        f"column {column!r} is in the data but not used: {named} weighted every row 1 (in RecMetricModule a "
        f"task's {column!r} column is its weights: RecTaskInfo's default weight_name), as evaluate takes "
        f"weights only from `weights` (--weights), shared by every task; "
        f"give weights={column!r} (--weights {column}) to weight by it"
    )


def _task(task: str | TaskSpec | Mapping[Any, Any]) -> TaskSpec:
    """One entry of a list of tasks: a ``TaskSpec``, a ``name=predictions:labels`` string, a name or a dict.

    A name alone (no ``=`` or ``:``) and a dict without ``prediction_name`` or ``label_name`` read
    :class:`~torchmetrics_ext.RecTaskInfo`'s default columns, as in
    :meth:`~torchmetrics_ext.RecMetricModule.from_config`.
    """
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, Mapping):
        return _task_from_dict(task)
    if task and "=" not in task and ":" not in task:
        return _task_from_dict({"name": task})
    return parse_task(task)


_TASK_FIELDS = ("name", "prediction_name", "label_name")


def _task_from_dict(task: Mapping[Any, Any]) -> TaskSpec:
    """A task given as :class:`~torchmetrics_ext.RecTaskInfo`'s fields (``from_config``'s task dicts).

    ``name`` is required; ``prediction_name`` and ``label_name`` default to ``RecTaskInfo``'s.
    ``weight_name`` may be ``None`` (a config's ``null``): the task has no weights, as in a module;
    a weight column is ``evaluate``'s ``weights``, shared by the other tasks.
    """
    shared = {"weight_name": "weights", "group_id_name": "user", "session_id_name": "session"}
    unweighted = "weight_name" in task and task["weight_name"] is None
    unknown = sorted(
        (key for key in task if key not in _TASK_FIELDS and not (key == "weight_name" and unweighted)), key=str
    )
    if unknown:
        moved = [f"{key!r} (give `{shared[key]}`, shared by every task)" for key in unknown if key in shared]
        if "weight_name" in unknown:
            moved.append(
                "'weight_name' takes only None (null), a task without weights (heads weighted by different "
                "columns, such as a conversion head of weight 0 on unclicked rows, take one run per weight "
                "column, or null labels where a head has none and on_invalid='skip' (--on-invalid skip): "
                "docs/evaluate.md, 'Weights and ids')"
            )
        hint = f"; not per task: {', '.join(moved)}" if moved else _close_to(unknown, _TASK_FIELDS)
        # RecTaskInfo's column fields are known, only not set per task here: "unknown" would send the user
        # looking for a typo
        lead = "Task fields" if all(key in shared for key in unknown) else "Unknown task fields"
        raise ValueError(f"{lead} {unknown}{hint}; expected {list(_TASK_FIELDS)}, got {dict(task)!r}.")
    wrong = [key for key in _TASK_FIELDS if key in task and not (isinstance(task[key], str) and task[key])]
    if "name" not in task or wrong:
        what = "missing 'name'" if "name" not in task else f"{wrong[0]!r} is {task[wrong[0]]!r}"
        raise ValueError(
            f"Expected a task dict to hold 'name' (and optionally 'prediction_name', 'label_name') as non-empty "
            f"strings, got {dict(task)!r}: {what}."
        )
    info = RecTaskInfo(**{key: task[key] for key in _TASK_FIELDS if key in task})  # the defaults and name rules
    return TaskSpec(info.name, info.prediction_name, info.label_name, weighted=not unweighted)


def _segment_columns(by: Any) -> tuple[str, ...]:
    """The segment columns of ``by`` (``evaluate``'s, the config file's and ``--by``'s): one rule for all.

    A string is one column (``"country"`` as ``["country"]``, as ``--by country`` and a config's
    ``by: country``); any other ordered collection of strings (a list, a tuple, a numpy array, a
    pandas ``Index`` such as ``frame.columns[:2]``...) is the columns in order; ``None`` is none (as
    ``weights=None`` is no weights). Sets and mappings are refused: they have no column order.
    :func:`evaluate` first reads a string holding commas or spaces around it against the data
    (:func:`_comma_columns`).

    Raises:
        ValueError: ``by`` is not a column name or a sequence of them, or a name is empty.
    """
    if by is None:
        return ()
    columns = [by] if isinstance(by, str) else _names_of(by)
    if columns is None or not all(isinstance(b, str) and b for b in columns):
        raise refusal(
            f"Expected `by` to be a column name or a list of column names (non-empty strings), got {by!r} "
            f"({type(by).__name__}).",
            wrong_type=columns is None or not all(isinstance(b, str) for b in columns),
        )
    return tuple(str(b) for b in columns)  # numpy's str_ items as plain str


class SeveralBy(list):
    """Several segmentations given as ``--by`` values are: each item a string read as ``--by`` reads it.

    The command line's repeated ``--by`` (``--by country --by device``) gives one; a list of strings
    (``by=["country", "device"]``) is one segmentation by both columns, a list of lists
    (``by=[["country"], ["device"]]``) several, each item's columns as written. ``written`` keeps
    each ``--by`` value as the user typed it (items read against the data may become lists), so
    that a refusal names the ``--by`` options, not the lists they became.
    """

    def __init__(self, items: Iterable[Any] = (), written: Sequence[str] | None = None) -> None:
        super().__init__(items)
        self.written = list(written) if written is not None else [_as_typed(item) for item in self]


def _as_typed(item: Any) -> str:
    """A segmentation as one ``--by`` value: a string as is, columns joined by commas."""
    return item if isinstance(item, str) else ",".join(str(name) for name in item)


def _flag(by: SeveralBy, i: int) -> str:
    """The ``i``-th segmentation of ``by`` as the command line gave it: ``--by 'country, device'``."""
    text = by.written[i] if i < len(by.written) else _as_typed(by[i])
    return f"--by {shlex.quote(text)}"


def _several(by: Any) -> bool:
    """Whether ``by`` gives several segmentations: :class:`SeveralBy`, or a non-empty list (tuple) of lists (tuples)."""
    if isinstance(by, SeveralBy):
        return True
    return isinstance(by, (list, tuple)) and bool(by) and all(isinstance(item, (list, tuple)) for item in by)


def _segmentations(by: Any, key: str | None = None) -> tuple[tuple[str, ...], ...]:
    """The segmentations of ``by``: one (:func:`_segment_columns`' columns), none, or several (:func:`_several`).

    A refusal speaks as the user wrote ``by``: ``--by`` options for :class:`SeveralBy` (the command
    line), the config file's ``key`` where one is given, else the ``by`` argument.

    Raises:
        ValueError: as :func:`_segment_columns`, for ``by`` or one of its segmentations; a segmentation
            without columns, one given twice, or one naming a column twice.
    """
    cli = isinstance(by, SeveralBy)
    if not _several(by):
        columns = _segment_columns(by)
        _refuse_repeated_columns(columns, _flag(by, 0) if cli else None, key)
        return (columns,) if columns else ()
    out: list[tuple[str, ...]] = []
    for i, item in enumerate(by):
        columns = _segment_columns(item)
        if not columns:
            what = _flag(by, i) if cli else f"{list(item)!r} in {by!r}"
            raise ValueError(
                f"Expected every segmentation of `{key or 'by'}` to name a column, got {what}: "
                "leave it out for no segments of its own (the overall rows are always there)."
            )
        _refuse_repeated_columns(columns, _flag(by, i) if cli else None, key)
        if columns in out:
            first = out.index(columns)
            if cli:
                same = (
                    f"{_flag(by, first)} is given twice"
                    if by.written[first] == by.written[i]
                    else f"{_flag(by, first)} and {_flag(by, i)} are the same segmentation ({', '.join(columns)})"
                )
                raise ValueError(f"{same}: each --by is one segmentation of its own; give each once.")
            raise ValueError(
                f"Expected distinct segmentations in `{key or 'by'}`, got {list(columns)!r} twice in {by!r}: "
                "list each once."
            )
        out.append(columns)
    return tuple(out)


def _refuse_repeated_columns(columns: tuple[str, ...], flag: str | None, key: str | None) -> None:
    """Refuse a segmentation naming a column twice, naming it as given: its ``--by`` ``flag``, or the columns."""
    repeated = [b for b in dict.fromkeys(columns) if columns.count(b) > 1]
    if not repeated:
        return
    if flag is not None:
        raise ValueError(f"{flag} names column {repeated[0]!r} twice: expected distinct columns in one --by.")
    raise ValueError(
        f"Expected distinct segment columns ({key or 'by'}), got {list(columns)}: {repeated[0]!r} is repeated."
    )


def _reads_commas(by: Any) -> bool:
    """Whether ``by`` is a string :func:`_comma_columns` reads against the data (commas, or spaces around it)."""
    return isinstance(by, str) and [name.strip() for name in by.split(",")] != [by]


def _comma_columns(by: Any, sources: Sequence[Source]) -> Any:
    """``by`` as a string is read against the data: one rule for Python, a config file and ``--by``.

    A string is the column of exactly that name where the data has one (spaces and commas
    included), else the comma-separated column names, spaces around each dropped
    (``"country, hour"`` as ``["country", "hour"]``, ``" country"`` as ``["country"]``). "The data
    has one" is decided over every file's columns, not the first file's: a name that some files
    hold whole and others do not is refused as ambiguous, naming both. Anything else is returned
    unchanged: a list names columns as they are (``["a,b"]`` is always the one column ``a,b``).

    Raises:
        ValueError: the string is no column of the data and an item between its commas is empty,
            or some files hold a column of exactly that name and others do not.
    """
    names = [name.strip() for name in by.split(",")] if isinstance(by, str) else []
    if names in ([], [by]):  # no commas and no spaces around it: one column, whatever the data
        return by
    holding: list[str] = []
    lacking: list[str] = []
    for source in sources:
        try:
            found = bool(source.schema().get_all_field_indices(by))  # any header's bytes, as check_schema
        except InvalidDataError:
            continue  # an unreadable file: the run reports it as it does without `by`
        (holding if found else lacking).append(source.label)
    if holding and lacking:
        raise ValueError(
            f"`by` {by!r} is ambiguous: {_files(holding)} {'has' if len(holding) == 1 else 'have'} a column of "
            f"exactly that name but {_files(lacking)} {'has' if len(lacking) == 1 else 'have'} none, where it "
            f"would read as the columns {names}. Give the column one name in every file, or name the columns as a "
            f"list, which is read as written: by=[{by!r}] for the one column, by={names!r} for "
            f"{'the columns' if len(names) > 1 else 'the column'} (a config file's `by` list; --config on the "
            "command line)."
        )
    if holding:
        return by
    if not all(names):
        empty = ", ".join(str(i + 1) for i, name in enumerate(names) if not name)
        what = (
            "it holds only spaces"
            if len(names) == 1
            else f"item {empty} of {len(names)} between its commas is empty (a trailing or doubled comma?)"
        )
        raise ValueError(
            f"Expected `by` as a column name or comma-separated column names, got {by!r}: no column has "
            f"that name and {what}."
        )
    return names


def _files(labels: Sequence[str]) -> str:
    """``a.parquet``, or ``2 files (a.parquet, b.csv)``, naming at most three."""
    if len(labels) == 1:
        return labels[0]
    more = ", ..." if len(labels) > 3 else ""
    return f"{len(labels)} files ({', '.join(labels[:3])}{more})"


def _task_lists(metric_tasks: Any) -> Any:
    """``metric_tasks`` with a task named alone as a list of it (``{"mse": "watch_time"}``); the rest as given.

    A NumPy string is a name too. What remains (a list, a tuple, a NumPy array or pandas ``Index`` of
    names...) is checked by the module's own rule (``_check_metric_tasks``), with its messages.
    """
    if not isinstance(metric_tasks, Mapping):
        return metric_tasks
    return {metric: [name] if (name := as_str(tasks)) else tasks for metric, tasks in metric_tasks.items()}


def _logits_unused_note(metrics: Sequence[str]) -> str:
    """The note of ``from_logits=True`` with ``metric_tasks`` where no metric of probabilities reads any task.

    With ``metric_tasks`` the heads holding logits are those a metric of probabilities (NE, AUC, ...) reads;
    with none among ``metrics`` every head keeps its values, so the flag changes nothing: said, not silent.
    """
    return (
        f"from_logits=True (--from-logits) changed nothing: with metric_tasks, the prediction columns holding "
        f"logits are those of the tasks a metric of probabilities (ne, auc, calibration, gauc...) reads, and none "
        f"of the metrics {list(metrics)} is one, so every task's predictions were read as given (no sigmoid); "
        f"leave the flag out, or give a metric of values the option from_logits: true to read sigmoid(logits)"
    )


def _unused_ids_note(role: str, column: str, metrics: Sequence[str]) -> str:
    """The note of a ``user``/``session`` id column that no metric of the run reads (so it was not read)."""
    readers = (
        "gauc, gauprc (which average over users)"
        if role == "user"
        else "ndcg@k, mrr, recall@k... (which rank within sessions)"
    )
    return (
        f"{role} ids {column!r} (--{role}) were not read: none of the metrics {list(metrics)} reads them, only "
        f"{readers} do; rows with a null {role} id were kept"
    )


def _ignore_index(value: Any) -> int | float | None:
    """``ignore_index`` checked: ``None``, or a finite number (TorchMetrics' padding mark, -100 or -1)."""
    if value is None:
        return None
    number = as_real(value)
    if number is None:
        raise WrongTypeError(
            f"Expected `ignore_index` to be a number (the label of padded rows, e.g. -100) or None, "
            f"got {value!r} ({type(value).__name__})."
        )
    if not math.isfinite(number):
        raise ValueError(
            f"Expected `ignore_index` to be a finite number (the label of padded rows, e.g. -100), "
            f"got {number!r}: no label equals it."
        )
    return number


def _ignored_note(value: float, counts: Mapping[str, int], tasks: Sequence[TaskSpec]) -> str:
    """The note of the rows ``ignore_index`` left out: how many of each label column, and for which tasks."""
    parts = []
    for column, count in counts.items():
        names = [t.name for t in tasks if t.labels == column]
        who = f"task {names[0]!r}" if len(names) == 1 else "tasks " + ", ".join(repr(n) for n in names)
        parts.append(f"{count:,} row{'s' * (count != 1)} of label column {column!r} ({who})")
    return (
        f"ignore_index={value!r} (--ignore-index) left out {'; '.join(parts)}: a row whose label equals it counts "
        f"for no metric of the tasks reading that label (ranking names: a masked candidate), and is in no record's "
        f"`rows`; the other tasks keep it"
    )


def _optional_name(name: str, value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and value):
        raise refusal(  # an int is a wrong type, an empty name a wrong value
            f"Expected `{name}` to be a column name or None, got {value!r}.", wrong_type=not isinstance(value, str)
        )
    return value


class _Plan:
    """Everything decided from the arguments before any data is read."""

    def __init__(
        self,
        tasks: Any,
        metrics: Any,
        weights: Any,
        user: Any,
        session: Any,
        by: str | Sequence[str] | None,
        from_logits: bool = False,
        metric_tasks: Any = None,
        ignore_index: Any = None,
    ) -> None:
        self.from_logits = check_flag("from_logits", from_logits)
        self.ignore_index = _ignore_index(ignore_index)
        self.tasks = _tasks(tasks)
        self.weights = _optional_name("weights", weights)
        weighted = [t.name for t in self.tasks if t.weighted]  # tasks given `weight_name: None` have none
        if not weighted:  # no task reads the column: it is neither read nor checked
            self.weights = None
        if self.weights is None:  # a weighted and an unweighted task over the same columns: one view without weights
            _check_distinct_views(self.tasks, tasks, weighted=False)
        # the weight column a module would read for every task (RecTaskInfo's default), left unread
        # without `weights`: the run notes it where a file holds such a column, however the tasks are given
        # (but for tasks said to have no weights)
        self.unread_weight = RecTaskInfo("task").weight_name if self.weights is None and weighted else None
        self.unread_weight_tasks = weighted
        self.user = _optional_name("user", user)
        self.session = _optional_name("session", session)
        # each segmentation is a `by` of its own (one, without several); `self.by`: every column, read once
        self.segmentations = _segmentations(by)  # refuses a segmentation twice, a column twice in one
        self.by = tuple(dict.fromkeys(name for columns in self.segmentations for name in columns))
        entries = _metric_options(metrics)
        self.metric_names = tuple(entries)
        self.entries = entries  # name as given -> (registry name, options): the result's provenance
        reserved = (*RECORD_FIELDS, *self.metric_names)
        for name in self.by:
            if name in reserved:
                raise ValueError(
                    f"Segment column {name!r} (by) has the name of a field of the result records, which hold "
                    f"{', '.join(repr(r) for r in reserved)} besides the segment columns; segment by a column "
                    "with another name (rename it in the data)."
                )
        self.specs: list[str] = []  # module keys of the metrics built one by one (not in RankingMetrics)
        self.options: dict[str, tuple[str, dict[str, Any]]] = {}  # module key -> (registry name, options)
        # per shared RankingMetrics (one per distinct list of tasks its names read), its (stem, cutoff) pairs;
        # its module key is not one of the requested keys (a user's "ranking")
        self._ranking: dict[str, list[tuple[str, int | None]]] = {}
        # module key -> the requested names it answers: two spellings of one cutoff (ndcg@10, ndcg@010)
        # share one key, and each name gets its value
        self.renames: dict[str, list[str]] = {}
        _check_names([name for key, (name, options) in entries.items() if not options])  # every unknown one at once
        # `metric_tasks`: the tasks each requested metric reads, checked by the module's own rule (its messages);
        # only metrics reading fewer than every task are kept, by the names of the tasks they read
        positions = _check_metric_tasks(_task_lists(metric_tasks), list(entries), [t.name for t in self.tasks])
        self.subsets: dict[str, frozenset[str]] = {
            key: frozenset(self.tasks[t].name for t in read) for key, read in positions.items()
        }
        # whether `metric_tasks` was given (an entry at least), even one whose lists all name every task (no
        # subset): its rules for logits and ids (each head by the metrics reading it) hold then too, so one more
        # task in a list never changes how another task's columns are read
        self.per_task = bool(metric_tasks)
        # module key -> the names of the tasks it reads (absent: every task), the requested keys' and the
        # RankingMetrics' (each reading the tasks of its names)
        self.reads: dict[str, frozenset[str]] = dict(self.subsets)
        self.module_keys: dict[
            str, str
        ] = {}  # key of `renames` -> its metric's module key ("ranking.ndcg@10": "ranking")
        self.grouped_keys: list[str] = []  # module keys of the metrics reading user ids (gauc) or sessions (ranking)
        self.session_keys: list[str] = []
        for key, (name, options) in entries.items():
            if options:  # built once here, as the module builds it: refused options fail before any data is read
                cls: type[Metric] = type(self._build(key, name, options))
                entry, k = None, None
            else:
                entry, k = lookup(name)
                cls = entry.cls
            if issubclass(cls, Segmented):  # segmented_ne: the module's per-segment NE; here `by` segments
                raise ValueError(
                    f"Metric {key!r} ({name}) is RecMetricModule's NE per segment id; evaluate computes every "
                    "metric per segment itself: ask for 'ne' with by=<segment column> (--by)."
                )
            parameters = inspect.signature(cls.update).parameters
            if "sessions" in parameters:  # SessionPairwiseAUC: each batch's sessions apart, as TorchRec
                raise ValueError(
                    f"Metric {key!r} ({name}) pairs the rows of each batch's sessions, and evaluate reads its input "
                    "in batches of `batch_size` rows, which would split a session in two: compute it where each "
                    "batch holds whole sessions (RecMetricModule in the training loop, or "
                    "torchmetrics_ext.functional.session_pairwise_auc)."
                )
            if "groups" in parameters and self.user is None:
                raise ValueError(f"Metric {key!r} averages over users: name the user id column (--user / user=).")
            if "indexes" in parameters and self.session is None:
                raise ValueError(
                    f"Metric {key!r} ranks within sessions: name the session id column (--session / session=)."
                )
            if entry is not None and "indexes" in parameters and not entry.defaults:
                # every ranking name without options (of one list of tasks) shares one RankingMetrics per task:
                # one sort and one copy
                shared = self._ranking_key(self.subsets.get(key), entries)
                self._ranking.setdefault(shared, []).append((entry.name, k))
                ranking_key = f"{shared}.{entry.name if k is None else f'{entry.name}@{k}'}"
                self.renames.setdefault(ranking_key, []).append(key)
                self.module_keys[ranking_key] = module_key = shared
            else:
                self.specs.append(key)
                self.options[key] = (name, self._logit_options(key, name, options))
                self.renames[key] = [key]
                self.module_keys[key] = module_key = key
            if "groups" in parameters:
                self.grouped_keys.append(module_key)
            if "indexes" in parameters:
                self.session_keys.append(module_key)
        self._renames_cache: dict[str, list[tuple[str, list[str]]]] = {}  # see `_renames_of`
        # per shared RankingMetrics, the requested names it answers (named in its undefined-value warnings)
        self.ranking_groups: dict[str, list[str]] = {
            shared: [name for key, names in self.renames.items() if key.startswith(f"{shared}.") for name in names]
            for shared in self._ranking
        }
        # with `metric_tasks`, each task's columns are checked against the metrics that read it: a probe module
        # (no data) gives every task's domain, and refuses what the module refuses (a task no metric reads, readers
        # of one task disagreeing on from_logits), before any data is read
        self.task_domains: dict[str, Any] = {}
        if self.per_task:
            probe = self.module()
            self.task_domains = {t.name: d for t, d in zip(self.tasks, probe._task_domains)}
        # what the arguments leave unused, said first in the result's warnings (the same on every rank): an id
        # column no metric reads (`--user` next to ne and auc alone), which is not read, so its nulls drop no row
        # and fail no run (see `_unused_ids_note`); from_logits=True with metric_tasks where no task holds logits
        # (no metric of probabilities reads one), which changes nothing (see `_logits_unused_note`)
        # (each with the category it is raised as from Python: `None` for a note of what was done as asked)
        self.notes: list[Note] = [
            (_unused_ids_note(role, column, self.metric_names), None)
            for role, column, readers in (
                ("user", self.user, self.grouped_keys),
                ("session", self.session, self.session_keys),
            )
            if column is not None and not readers
        ]
        if self.per_task and self.from_logits and not any(d.from_logits for d in self.task_domains.values()):
            self.notes.append((_logits_unused_note(self.metric_names), ResultCaveatWarning))
        # the column keys each task's invalid rows are dropped for (see `task_columns`), set by `_columns`
        self._task_keys: dict[str, tuple[CheckKey, ...]] = {}
        self.columns = self._columns()  # one per (name, kind): a column is checked in each of its kinds
        if any(c.name == self.unread_weight for c in self.columns):  # read in a role of its own
            self.unread_weight = None
        self.read_kinds = self._read_kinds()  # name -> the kind its values are converted as, once

    def _ranking_key(self, subset: frozenset[str] | None, entries: Collection[str]) -> str:
        """The module key of the ``RankingMetrics`` shared by the ranking names reading ``subset`` (``None``: all).

        ``"ranking"`` for the first, then ``"ranking_0"``, ... (never one of the requested keys).
        """
        for shared in self._ranking:
            if self.reads.get(shared) == subset:
                return shared
        candidates = (_RANKING_KEY, *(f"{_RANKING_KEY}_{i}" for i in range(len(entries) + len(self._ranking) + 1)))
        shared = next(key for key in candidates if key not in entries and key not in self._ranking)
        if subset is not None:
            self.reads[shared] = subset
        return shared

    def _logit_options(self, key: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """A metric's options, with ``from_logits`` where ``metric_tasks`` makes it the metric's own.

        Without ``metric_tasks`` (or with ``from_logits=False``) every metric is built with evaluate's
        ``from_logits`` (the module's ``from_logits``). With both, the prediction columns that hold logits
        are those of the tasks a metric of probabilities reads (NE, AUC, calibration, ``gauc``...): such
        metrics are built with ``from_logits=True`` and the others (``mse``, ``r_squared``...) as their
        options say, so a regression head that only metrics of values read keeps its values, as in a
        module whose metrics set ``from_logits`` each (the module feeds metrics of values
        ``sigmoid(logits)`` in the rows of the tasks that hold logits).
        """
        if not (self.per_task and self.from_logits):
            return options
        own = {option: value for option, value in options.items() if option != "from_logits"}
        domains = getattr(_build_entry(key, name, own, 1, None, "evaluate"), "input_domains", None)
        probabilities = domains is not None and domains.preds == "probability"
        if "from_logits" in options:  # the user's own: agrees with evaluate's, as without metric_tasks
            if not probabilities and as_bool(options["from_logits"]) is False:
                return options  # a metric of values built as evaluate builds it here (sigmoid where heads hold logits)
            return _with_from_logits(key, name, options, True, "evaluate")
        return {**options, "from_logits": True} if probabilities else options

    def _module_logits(self) -> bool | None:
        """The module's ``from_logits``: evaluate's, or ``None`` where each metric's options say it.

        See :meth:`_logit_options`.
        """
        return None if self.per_task and self.from_logits else self.from_logits

    def tasks_of(self, key: str) -> list[TaskSpec]:
        """The tasks of this plan that module key ``key`` reads, in order (``metric_tasks``; else every task)."""
        read = self.reads.get(key)
        return list(self.tasks) if read is None else [t for t in self.tasks if t.name in read]

    def read_by(self, key: str, task: str) -> bool:
        """Whether module key ``key`` reads task ``task``."""
        read = self.reads.get(key)
        return read is None or task in read

    def metrics_of(self, task: str) -> list[str]:
        """The requested metric names whose values task ``task`` has (those reading it), in order."""
        return [
            name for key, names in self.renames.items() if self.read_by(self.module_keys[key], task) for name in names
        ]

    def label_domains(self, task: str) -> list[tuple[str, str]]:
        """``(requested name, the labels it takes)`` for the metrics reading ``task``: ``InputDomains.target``.

        A ranking name shared in a ``RankingMetrics`` takes graded relevance (``"nonnegative"``); a metric
        built on its own is asked (built once more, without data); one without domains is left out.
        """
        out: list[tuple[str, str]] = []
        for key, names in self.renames.items():
            module_key = self.module_keys[key]
            if not self.read_by(module_key, task):
                continue
            if module_key in self._ranking:
                target = "nonnegative"
            else:
                domains = getattr(self._build(key, *self.options[key]), "input_domains", None)
                if domains is None:
                    continue
                target = domains.target
            out += [(name, target) for name in names]
        return out

    def _module_keys(self) -> list[str]:
        """The module keys of this plan, those reading one of its tasks (a group of tasks may leave some out)."""
        keys = [*self.specs, *self._ranking]
        return [key for key in keys if any(self.read_by(key, t.name) for t in self.tasks)]

    def needs_user(self, task: TaskSpec) -> bool:
        """Whether the task reads the user ids: every task without ``metric_tasks``, else those ``gauc`` reads.

        None does where no metric averages over users (see ``notes``): the column is not read.
        """
        if self.user is None or not self.grouped_keys:
            return False
        return not self.per_task or any(self.read_by(key, task.name) for key in self.grouped_keys)

    def needs_session(self, task: TaskSpec) -> bool:
        """Whether the task reads the session ids: every task without ``metric_tasks``, else those ranked.

        None does where no metric ranks within sessions (see ``notes``): the column is not read.
        """
        if self.session is None or not self.session_keys:
            return False
        return not self.per_task or any(self.read_by(key, task.name) for key in self.session_keys)

    def _domain(self, task: TaskSpec, kind: str) -> tuple[bool, str, bool] | None:
        """The rules the task's column of ``kind`` is checked by (``metric_tasks``); ``None``: the checker's own."""
        domains = self.task_domains.get(task.name)
        if domains is None:
            return None
        if kind == "score":
            return (domains.preds == "probability" and not domains.from_logits, "real", False)
        if kind == "label":
            return (False, domains.target, False)
        return (False, "real", bool(domains.float32_weights))  # weights

    def _columns(self) -> list[Column]:
        """Every (column, kind) read, each with the role first given to it (for messages).

        A column may serve several roles (``weights`` = a task's labels, ``user`` = ``session``):
        it is then checked in each of its kinds (type and rows), read once. Ids are read as
        integers and every other role as numbers, so a column that is both an id and a value is
        refused here, as is a segment column that has any other role.
        """
        columns: dict[CheckKey, Column] = {}

        def add(name: str | None, role: str, kind: Any, domain: tuple[bool, str, bool] | None = None) -> CheckKey:
            if name is None:
                return ("", "id")
            first = next((c for c in columns.values() if c.name == name), None)
            if first is not None and (first.kind == "id") != (kind == "id"):
                ids, other = (first.role, role) if first.kind == "id" else (role, first.role)
                raise ValueError(
                    f"Column {name!r} cannot be both {ids} and {other}: ids are read as integers and "
                    "predictions, labels and weights as numbers; name another column for one of them."
                )
            column = Column(name, role, kind, domain)
            columns.setdefault(column.key, column)  # the same checks: the first role names it
            return column.key

        keys: dict[str, list[CheckKey]] = {}
        for task in self.tasks:
            keys[task.name] = [
                add(task.predictions, f"predictions of task {task.name!r}", "score", self._domain(task, "score")),
                add(task.labels, f"labels of task {task.name!r}", "label", self._domain(task, "label")),
            ]
        for task in self.tasks:  # the weights after every task's predictions and labels, as the messages name them
            if task.weighted and self.weights is not None:
                keys[task.name].append(add(self.weights, "weights", "weight", self._domain(task, "weight")))
        # the ids: read by every task without metric_tasks, else by those a grouped (ranking) metric reads
        users = [task for task in self.tasks if self.needs_user(task)]
        sessions = [task for task in self.tasks if self.needs_session(task)]
        if users:
            user = add(self.user, "user ids", "id")
            for task in users:
                keys[task.name].append(user)
        if sessions:
            session = add(self.session, "session ids", "id")
            for task in sessions:
                keys[task.name].append(session)
        self._task_keys = {name: tuple(dict.fromkeys(mine)) for name, mine in keys.items()}
        for name in self.by:
            first = next((c for c in columns.values() if c.name == name), None)
            if first is not None:
                raise ValueError(f"Column {name!r} cannot be both a segment (by) and {first.role}.")
            add(name, "--by segment", "segment")
        return list(columns.values())

    def _read_kinds(self) -> dict[str, Kind]:
        """The kind each value column is converted as, once for all its roles.

        Predictions are read as floating point (integer columns too), so a column that is also
        a label or weight is read so; other columns by their one kind (ids are never anything else).
        """
        kinds: dict[str, Kind] = {}
        for column in self.value_columns:
            if kinds.setdefault(column.name, column.kind) != "score" and column.kind == "score":
                kinds[column.name] = "score"
        return kinds

    @property
    def value_columns(self) -> list[Column]:
        """The columns fed to the metrics (every column but the segments)."""
        return [c for c in self.columns if c.kind != "segment"]

    def _build(self, key: str, name: str, options: Mapping[str, Any]) -> Metric:
        """One metric as the module builds a registry entry: its rule for ``from_logits``, its errors."""
        num_tasks = len(self.tasks_of(key)) if key in self.reads else len(self.tasks)
        return _build_entry(key, name, options, num_tasks, self._module_logits(), "evaluate")

    def _specs(self, keys: Collection[str] | None) -> dict[str, Any]:
        """The module's ``metrics`` argument: each metric's options by key, and the ``RankingMetrics``."""
        specs: dict[str, Any] = {}
        active = self._module_keys()
        for key in self.specs:
            if (keys is None or key in keys) and key in active:
                name, options = self.options[key]
                specs[key] = {"metric": name, **options}
        for shared, pairs in self._ranking.items():
            if (keys is None or shared in keys) and shared in active:
                # every ranking name without options: one sort per task (RankingMetrics takes no from_logits)
                stems = tuple(dict.fromkeys(stem for stem, _ in pairs))
                ks = tuple(dict.fromkeys(k for _, k in pairs))
                specs[shared] = RankingMetrics(ks=ks, metrics=stems)
        return specs

    def metric_tasks(self, keys: Collection[str], tasks: Sequence[TaskSpec]) -> dict[str, list[str]] | None:
        """The module's ``metric_tasks`` for ``keys`` over ``tasks``: those each reads, where not every one."""
        out = {}
        for key in keys:
            read = [t.name for t in tasks if self.read_by(key, t.name)]
            if len(read) < len(tasks):
                out[key] = read
        return out or None

    def metrics(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Fresh metrics by module key, built as :meth:`module` has them built (for the segments' kernels).

        Args:
            keys: only these keys (``"ne"``, ``"ranking"``); ``None``: every requested metric.
        """
        built = self._specs(keys)
        for key in self.specs:
            if key in built:
                built[key] = self._build(key, *self.options[key])
        return built

    def fed_probabilities(self, metrics: Mapping[str, Any], logits: bool) -> dict[str, Tensor | None]:
        """The metrics a module feeds ``sigmoid(logits)``, each with the rows of its tasks that hold logits.

        As :class:`~torchmetrics_ext.RecMetricModule` decides it: without ``metric_tasks``, ``logits``
        (the module's ``from_logits``) for every task, the value ``None`` (every row); with it, a metric of
        values is fed ``sigmoid`` only in the rows of its tasks whose domain holds logits, a ``(T_key, 1)``
        bool mask (``None`` when they all do).
        """
        domains = {key: m.input_domains for key, m in metrics.items()}
        if not self.subsets:
            return dict.fromkeys(_fed_probabilities(metrics, domains, logits))
        out: dict[str, Tensor | None] = {}
        for key in metrics:
            rows = [bool(self.task_domains[t.name].from_logits) for t in self.tasks_of(key)]
            if _fed_probabilities({key: metrics[key]}, {key: domains[key]}, any(rows)):
                out[key] = None if all(rows) else torch.tensor(rows).unsqueeze(1)
        return out

    def module(self, keys: Collection[str] | None = None) -> RecMetricModule:
        """A fresh module with every requested metric (or those of ``keys``) for every task (that they read).

        The module builds them from their registry names and options with evaluate's ``from_logits``
        (its one rule: ``from_logits=True`` where a metric's class takes the option). With
        ``metric_tasks``, a module of some keys (a metric computed segment by segment) has the tasks
        they read alone, as the module refuses a task no metric reads.
        """
        specs = self._specs(keys)
        tasks = self.tasks if keys is None else [t for t in self.tasks if any(self.read_by(k, t.name) for k in specs)]
        infos = [
            RecTaskInfo(
                t.name,
                label_name=t.labels,
                prediction_name=t.predictions,
                weight_name=self.weights if t.weighted else None,  # None: every row weighs 1
                group_id_name=self.user if self.needs_user(t) else None,  # metric_tasks: the tasks gauc reads
                session_id_name=self.session if self.needs_session(t) else None,
            )
            for t in tasks
        ]
        # the module is told whether the columns hold logits: it builds every metric so, and without a
        # metric that reads them (weighted_sum_predictions alone) feeds the others sigmoid(logits); with
        # `metric_tasks` and logits, each metric's options say it (see `_logit_options`)
        return RecMetricModule(
            infos,
            specs,
            throughput=False,
            from_logits=self._module_logits(),
            metric_tasks=self.metric_tasks(specs, tasks),
        )

    def task_columns(self, task: TaskSpec) -> tuple[CheckKey, ...]:
        """The ``(column, kind)`` keys whose invalid rows a task drops: its predictions, labels, weights, ids.

        With ``metric_tasks`` each key holds the rules the column is checked by for this task (those of
        the metrics reading it: :attr:`Column.key`), and only the tasks a grouped (ranking) metric reads
        read the user (session) ids.
        """
        return self._task_keys[task.name]

    def task_groups(self) -> list[tuple[_Plan, tuple[CheckKey, ...]]]:
        """The tasks grouped by the columns whose invalid rows they drop, each group's plan with those columns.

        With ``on_invalid="skip"`` a task keeps the rows valid in each of its columns
        (:meth:`task_columns`): tasks with the same columns (the same kept rows) share a plan (one
        module), in the order of their first task; a row invalid in one task's label is dropped for
        the tasks reading that column alone. One plan (this one) where every task reads the same columns.
        The groups come from the arguments alone, so every rank of a distributed run has the same ones.
        """
        # the columns as a set -> (the first task's pairs in order, the tasks reading that set)
        by_columns: dict[frozenset[CheckKey], tuple[tuple[CheckKey, ...], list[TaskSpec]]] = {}
        for task in self.tasks:
            pairs = self.task_columns(task)
            by_columns.setdefault(frozenset(pairs), (pairs, []))[1].append(task)
        if len(by_columns) == 1:
            return [(self, next(iter(by_columns.values()))[0])]
        groups = []
        for pairs, tasks in by_columns.values():
            group = copy.copy(self)  # the same metrics and columns, for these tasks (their module, records, rows)
            group.tasks = tasks
            if not any(t.weighted for t in tasks):
                group.weights = None
            groups.append((group, pairs))
        return groups

    def fed_columns(self) -> list[str]:
        """The value columns this plan's tasks feed their metrics (a group's of :meth:`task_groups`)."""
        names = [name for t in self.tasks for name in (t.predictions, t.labels)]
        names += [name for name in (self.weights, *self._ids()) if name is not None]
        return [name for name in self.read_kinds if name in names]

    def _ids(self) -> tuple[str | None, str | None]:
        """The user and session id columns this plan's tasks read (``None`` where none does)."""
        user = self.user if any(self.needs_user(t) for t in self.tasks) else None
        session = self.session if any(self.needs_session(t) for t in self.tasks) else None
        return user, session

    def records(
        self, values: Mapping[str, Sequence[float]], segment: str, labels: Mapping[str, Any], rows: Sequence[int]
    ) -> list[dict]:
        """One record per task; ``values[key][t]`` is task ``t``'s value of a module key (``"ranking.ndcg@10"``).

        ``rows[t]``: the rows that count for task ``t`` (kept for it, of non-zero weight where it is weighted).
        """
        out = []
        for t, task in enumerate(self.tasks):
            record: dict[str, Any] = {"segment": segment, **labels, "task": task.name, "rows": rows[t]}
            for key, names in self._renames_of(task.name):
                record.update(dict.fromkeys(names, values[key][t]))
            out.append(record)
        return out

    def _renames_of(self, task: str) -> list[tuple[str, list[str]]]:
        """The ``renames`` items of the metrics reading ``task`` (``metric_tasks``; else all), found once per task.

        :meth:`records` runs once per segment (millions of times): the lookup is made on the first.
        """
        found = self._renames_cache.get(task)  # shared by a group's copy: the same metrics
        if found is None:
            found = self._renames_cache[task] = [
                (key, names) for key, names in self.renames.items() if self.read_by(self.module_keys[key], task)
            ]
        return found

    def segment_batch(self, rows: Mapping[str, Tensor], segment: Tensor, num_segments: int) -> SegmentBatch:
        """The kept rows (a tensor per column) as stacked tasks with their dense segment ids."""
        user, session = self._ids()
        return SegmentBatch(
            preds=_stack_columns([rows[t.predictions] for t in self.tasks]),
            target=_stack_columns([rows[t.labels] for t in self.tasks]),
            weights=self._segment_weights(rows),
            groups=None if user is None else rows[user],
            sessions=None if session is None else rows[session],
            segment=segment,
            num_segments=num_segments,
        )

    def _segment_weights(self, rows: Mapping[str, Tensor]) -> Tensor | None:
        """``(N,)`` weights shared by the tasks, ``(T, N)`` where some tasks have none (1 there), or ``None``."""
        if self.weights is None:
            return None
        weights = rows[self.weights]
        if all(t.weighted for t in self.tasks):
            return weights
        weighted = torch.tensor([t.weighted for t in self.tasks], device=weights.device)
        return torch.where(weighted.unsqueeze(1), weights, torch.ones((), dtype=weights.dtype, device=weights.device))


class _Error(NamedTuple):
    """A reading error and where a rank met it: the file's place in the read order, the chunk's among every rank's."""

    file: int
    chunk: int
    message: str


class _Layout(NamedTuple):
    """What one rank found to read, compared across ranks: a digest of every chunk and of the arguments."""

    digest: str
    files: int
    chunks: int
    rows: int | None  # None: a CSV file's rows are known once read

    def text(self) -> str:
        rows = "" if self.rows is None else f", {self.rows:,} rows"
        return f"{self.files:,} file{'' if self.files == 1 else 's'} ({self.chunks:,} chunks{rows})"


def _layout(plan: _Plan, sources: Sequence[Source], chunks: Sequence[Chunk]) -> _Layout:
    """The chunks a rank deals (every rank lists them itself) and the arguments that shape its metrics."""
    listed = [(c.source.label, c.part, c.first_row, c.rows) for c in chunks]
    arguments = (plan.metric_names, [repr(t) for t in plan.tasks], plan.by)
    digest = hashlib.sha256(repr((listed, arguments)).encode()).hexdigest()
    known = [c.rows for c in chunks]
    rows = None if any(r is None for r in known) else sum(r or 0 for r in known)
    return _Layout(digest, len(sources), len(chunks), rows)


def _other_layouts(layouts: Sequence[_Layout]) -> str:
    """The message when the ranks found other files (or were given other arguments): each distinct one's first rank."""
    first: dict[_Layout, int] = {}
    for rank, layout in enumerate(layouts):
        first.setdefault(layout, rank)
    found = ", ".join(f"rank {rank} found {layout.text()}" for layout, rank in first.items())
    return (
        f"The processes do not read the same data: {found}. Each process lists the files itself and reads its share "
        "of their chunks (Parquet row groups, CSV files), so every process must be given the same data and arguments, "
        "over files that do not change while evaluate runs (a file written meanwhile, a glob listed at another time)."
    )


def _world() -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` in one process (a group of one process included)."""
    return _ddp_world() or (0, 1)


def _tensor(values: np.ndarray) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arrow buffers are read-only; nothing writes to them
        return torch.from_numpy(values)


def _spaced_lines(segments: SegmentIndex | None) -> list[str]:
    """A warning line per ``by`` text column holding values with spaces around them (every rank alike).

    ``"fr "`` is a segment apart from ``"fr"`` (as pandas ``groupby`` has it), but labels write text
    unquoted, so the printed table showed two lines ``country=fr`` and nothing said why.
    """
    if segments is None:
        return []
    lines = []
    for name, values in segments.spaced_text().items():
        n = len(values)
        shown = ", ".join(map(repr, values[:_EXAMPLES])) + (", ..." if n > _EXAMPLES else "")
        lines.append(
            f"--by column {name!r} holds {n:,} text value{'' if n == 1 else 's'} with spaces around "
            f"{'it' if n == 1 else 'them'} ({shown}): each is a segment of its own, apart from the text without the "
            "spaces, though labels, keys and the table write it unquoted, so it looks like that text; "
            f"strip the column first if they are one value (pandas `df[{name!r}] = df[{name!r}].str.strip()`)."
        )
    return lines


def _empty_text_lines(columns: Iterable[str]) -> list[str]:
    """A warning line per ``by`` text column holding the empty text (every rank alike), in the order given.

    The empty text (``country=``) is a segment of its own, sorted first and apart from null
    (``country=None``): what a CSV file's empty field in a text column reads as, where the same rows
    from Parquet, a frame or ``pandas.read_csv`` are null, so one log in two formats gave two keys.
    The lines follow every segmentation's (a column is named once, however many read it), so each
    segmentation's lines stay in the order a run with that ``by`` alone gives them.
    """
    lines = []
    for name in dict.fromkeys(columns):
        lines.append(
            f"--by column {name!r} holds the empty text '' (the segment {name}=): a value of its own, apart from "
            f"null ({name}=None) and sorted first; a CSV file's empty field in a text column reads so, where "
            f"Parquet, a DataFrame and pandas.read_csv have null (a missing value). If it means a missing value, "
            f"make it null first (pandas `df[{name!r}] = df[{name!r}].replace('', None)`, then Parquet)."
        )
    return lines


# labels that mark "no label" (a conversion label on unclicked rows: null, NaN or -1) are rows to leave out
# of their task alone, which `on_invalid="skip"` does (docs/evaluate.md, "Invalid rows")
_NO_LABEL_HINT = (
    "; if they mark rows without a label (a conversion label on unclicked rows, say), --on-invalid skip "
    '(on_invalid="skip" in Python) leaves them out of the tasks reading this column alone, every other task '
    "keeping them"
)


# the reasons of label values that are numbers out of the metrics' domain (2, 0.5, 5): a grade or a corrupt
# label, no mark of a missing one unless it is negative (-1); every other reason of a label column is a null
# or a NaN ("that are null", "that are NaN or infinite"...) or a negative value ("that are negative")
_OUT_OF_DOMAIN = ("that are not 0 or 1", "outside [0, 1]")


def _no_label_hint(problem: Problem, negative: Collection[str]) -> str:
    """The way out for the invalid rows of a label column that may mark a missing label: skip them for its tasks.

    ``""`` for other columns, and for labels that are numbers out of the metrics' domain none of which is
    negative (a grade of 2, a 0.5 of a metric of 0/1 labels): those mark no missing label. ``negative``: the
    label columns among whose invalid values a negative one was seen (every rank's).
    """
    if not problem.role.startswith("labels of "):
        return ""
    if problem.reason in _OUT_OF_DOMAIN and problem.column not in negative:
        return ""
    return _NO_LABEL_HINT


class _Run:
    def __init__(
        self, plan: _Plan, sources: list[Source], batch_size: int, on_invalid: str, progress: bool | str
    ) -> None:
        self.plan, self.sources, self.batch_size, self.on_invalid = plan, sources, batch_size, on_invalid
        self.rank, self.world = _world()
        self.task_order = {task.name: t for t, task in enumerate(plan.tasks)}  # every task's, also in a group's run
        # skipping invalid rows, one module per group of tasks dropping the same rows (those reading the same
        # columns: a row invalid in one task's label is dropped for the tasks reading that column alone); a
        # group's rows (and with them its module and segments) are its own. Stopping at the first invalid
        # row, one module for every task: nothing is dropped.
        # `ignore_index` drops rows per label column, as an invalid label would be: the same groups
        ignoring = plan.ignore_index is not None
        self.groups = plan.task_groups() if on_invalid == "skip" or ignoring else [(plan, ())]
        # ignore_index: per label column, the rows counted whose label equals it; a column read is not checked
        # in the rows every task reading it leaves out (a padded row's score or session may be anything)
        self.ignored_counts: dict[str, int] = dict.fromkeys((t.labels for t in plan.tasks), 0) if ignoring else {}
        self.exempt_of: dict[CheckKey, list[str]] = {}  # (column, kind) -> the label columns of its readers
        if ignoring:
            for task in plan.tasks:
                for key in plan.task_columns(task):
                    self.exempt_of.setdefault(key, []).append(task.labels)
        self.group_labels = [list(dict.fromkeys(t.labels for t in group.tasks)) for group, _ in self.groups]
        # per label column with invalid rows, their distinct finite values while there are at most two (None
        # past that): where they are one padding mark (-100, -1), the error names `ignore_index`
        self.label_keys = {
            key: t.labels for t in plan.tasks for key in plan.task_columns(t) if key[:2] == (t.labels, "label")
        }
        self.invalid_labels: dict[str, set[float] | None] = {}
        # the label columns among whose invalid rows a negative value was seen (-1 marking "no label", say)
        self.negative_labels: set[str] = set()
        self.modules = [group.module() for group, _ in self.groups]
        self.group_columns = [group.fed_columns() for group, _ in self.groups]  # each group's, once
        self.module = self.modules[0]
        domains = self.module.input_domains  # what every row must satisfy (every group's metrics are the same)
        probabilities = domains.preds == "probability" and not domains.from_logits
        self.checker = RowChecker(plan.columns, probabilities, domains.target, domains.float32_weights)
        # tasks whose labels ranking names read as grades and other metrics as 0/1: their invalid rows say so
        self.graded = graded_label_checks(
            [(t.name, t.labels, plan.label_domains(t.name)) for t in plan.tasks] if plan.session_keys else []
        )
        self.problems = Problems()
        self.rows_read = self.rows_skipped = 0  # skipped: rows dropped for at least one task
        self.group_skipped = [0] * len(self.groups)  # rows dropped for each group's tasks
        # each group's kept rows of weight 0: no row of its weighted tasks (their records' `rows` leave them out)
        self.group_weightless = [0] * len(self.groups)
        self.weight_unread = False  # a file read holds the plan's `unread_weight` column
        self.unexpected: Exception | None = None  # an error of this rank that is not the data's (see `stream`)
        # the segmentation this run computes (one `by`; a view per segmentation of several: `_segmentation`)
        self.by: tuple[str, ...] = plan.segmentations[0] if plan.segmentations else ()
        self.segments: SegmentIndex | None = None  # known once every rank's rows are read (`finish`)
        self.indexes: list[SegmentIndex] = []  # every segmentation's, in `finish`
        # one collector per segmentation: each finds its own combinations in the same batches
        self.collectors = [SegmentCollector(sources, columns) for columns in plan.segmentations]
        self.rows: SegmentRows | None = None
        self.group_rows: list[SegmentRows | None] = [None] * len(self.groups)
        if plan.segmentations:
            # the dtypes of columns no rank kept a row of: every other column is kept in the dtypes it was read in
            dtypes = {name: torch.int64 if kind == "id" else torch.float64 for name, kind in plan.read_kinds.items()}
            # a group's rows hold its own columns only: split groups keep no column twice but the shared ones;
            # each segmentation adds its segment id per row, not a copy of the rows
            count = len(plan.segmentations)
            self.group_rows = [SegmentRows({n: dtypes[n] for n in names}, count) for names in self.group_columns]
            self.rows = self.group_rows[0]
        chunks = [chunk for source in sources for chunk in source.chunks(batch_size)]
        # (chunk number among every rank's chunks, chunk): the number orders the segments' messages
        self.chunks = list(enumerate(chunks))[self.rank :: self.world]
        self.layout = _layout(plan, sources, chunks)  # every rank must deal the same chunks: checked in `finish`
        known = [c.rows for _, c in self.chunks]
        total = None if any(r is None for r in known) else sum(r or 0 for r in known)
        # rank 0's line counts its own rows (a collective per chunk would cost every rank a wait): it says so,
        # and every rank's total is printed once the ranks gather their counts in `finish`
        label = "evaluate" if self.world == 1 else f"evaluate (rank 0 of {self.world})"
        # the compute phase's steps: shown where asked (True), or where stderr is a terminal ("auto")
        compute = None if progress == "auto" else bool(progress)
        self.progress = Progress(total, enabled=bool(progress) and self.rank == 0, label=label, compute=compute)

    def _by_source(self) -> Iterator[tuple[Source, list[tuple[int, Chunk]]]]:
        current: list[tuple[int, Chunk]] = []
        for number, chunk in self.chunks:
            if current and chunk.source is not current[0][1].source:
                yield current[0][1].source, current
                current = []
            current.append((number, chunk))
        if current:
            yield current[0][1].source, current

    def stream(self) -> _Error | None:
        """Feed this rank's chunks; return the error met instead of raising (ranks agree first, in ``finish``).

        The error comes with where it was met (:class:`_Error`), so that ``finish`` reports the one a
        single process reading every chunk in order would have stopped at, whichever rank met it.
        """
        names = list(dict.fromkeys(c.name for c in self.plan.columns))  # a column of several roles: read once
        files = {id(source): i for i, source in enumerate(self.sources)}
        at = (0, 0)
        try:
            for source, chunks in self._by_source():
                at = (files[id(source)], chunks[0][0])  # a schema error: at the rank's first chunk of the file
                schema = source.schema()
                inferred = {c.name for c in self.plan.columns if source.inferred(c.name)}
                check_schema(source.label, schema, self.plan.columns, inferred, source.missing_hint)
                unread = self.plan.unread_weight  # looked up as check_schema does: any header's bytes
                self.weight_unread |= unread is not None and bool(schema.get_all_field_indices(unread))
                # a text file's columns with fixed types; its --by columns as text, typed over every file at the end
                types = {n: t for n, t in text_types(self.plan.columns).items() if n in inferred} or None
                for number, chunk in chunks:
                    at = (at[0], number)
                    first = chunk.first_row
                    for batch in source.read(chunk, names, self.batch_size, types):
                        self._batch(source, (number, first), batch)
                        first += batch.num_rows
                    release_free_memory()
                if self.problems and self.on_invalid == "error":
                    return None  # invalid rows: finish() reports every rank's counts for the file at once
        except ConversionError as err:  # a text file's value that is no number: named as an invalid label is
            return _Error(*at, self._conversion_message(source, err))
        except InvalidDataError as err:
            return _Error(*at, str(err))
        except Exception as err:  # not the data's fault (a bug, memory): raised here, but after the ranks agree
            if self.world == 1:
                raise
            self.unexpected = err  # re-raised by finish() on this rank; the others must not wait for it forever
            where = self.sources[at[0]].label if self.sources else "its data"
            return _Error(*at, f"rank {self.rank} failed reading {where}: {type(err).__name__}: {err}")
        finally:
            self.progress.close()
        return None

    def _conversion_message(self, source: Source, err: ConversionError) -> str:
        """The message of a text file's value that does not convert: file, column, role, value, row, expectation."""
        kind = self.plan.read_kinds.get(err.column)
        role = next((c.role for c in self.plan.columns if c.name == err.column and c.kind == kind), None)
        if role is None:  # not a column the plan converts (cannot happen): the reader's own words
            return str(err)
        where = "" if err.row is None else f" at {source.where(err.row)}"
        expected = f"an integer id. {id_hint(err.value)}" if kind == "id" else "a number"
        return (
            f"{source.label}: column {err.column!r} ({role}): invalid value {err.value!r}{where}; expected {expected}"
        )

    def _batch(self, source: Source, order: tuple[int, int], batch: Any) -> None:
        """Check and feed one batch; ``order``: (its chunk's number among every rank's chunks, its first row)."""
        first_row = order[1]
        n = batch.num_rows
        if source.slices_typed:  # a pandas object column's later slice may read as another type
            check_slice(source.label, source.where(first_row, first_row + n - 1), batch.schema, self.plan.value_columns)
        self.rows_read += n
        self.progress.advance(n)
        values, nulls = {}, {}
        for name, kind in self.plan.read_kinds.items():
            try:
                values[name], nulls[name] = to_numpy(batch.column(name), kind, first_row, source.where)
            except InvalidDataError as err:  # a CSV label that is neither a number nor true/false
                role = next(c.role for c in self.plan.columns if c.name == name and c.kind == kind)
                raise InvalidDataError(f"{source.label}: column {name!r} ({role}): {err}") from None
        ignored, exempt = self._ignored(values, nulls)
        valid = self.checker.check(source.label, first_row, values, nulls, self.problems, source.null_reason, exempt)
        if valid:  # the error path only: which values the invalid labels hold
            self._note_invalid_labels(values, nulls, valid)
        if self.problems and self.on_invalid == "error":
            return  # keep counting the bad rows of this file, feed nothing more
        if valid:  # rows dropped for at least one task: those invalid in some column
            self.rows_skipped += n - int(np.count_nonzero(np.logical_and.reduce(list(valid.values()))))
        # local codes: segment ids once every rank has read
        codes = [collector.add(source, order, batch) for collector in self.collectors]  # one per segmentation
        for g, ((_, columns), module) in enumerate(zip(self.groups, self.modules)):
            masks = [valid[pair] for pair in columns if pair in valid]  # the group's columns with invalid rows
            masks += [~ignored[name] for name in self.group_labels[g] if name in ignored]  # ignore_index's rows
            keep = None if not masks else masks[0] if len(masks) == 1 else np.logical_and.reduce(masks)
            kept = {name: values[name] if keep is None else values[name][keep] for name in self.group_columns[g]}
            if keep is not None:
                self.group_skipped[g] += n - int(np.count_nonzero(keep))
            weights = self.groups[g][0].weights  # None where no task of the group is weighted
            if weights is not None:
                self.group_weightless[g] += int(np.count_nonzero(kept[weights] == 0))
            tensors = {name: _tensor(v) for name, v in kept.items()}
            try:
                module.update(tensors)  # a rejected batch changes no metric
            except (ValueError, TypeError) as err:
                # a value (or dtype) the metrics refuse that the checks do not know: the documented error,
                # naming the file and the batch's rows, agreed by every rank in `finish` as the others
                last = first_row + n - 1
                raise InvalidDataError(f"{source.label}: {source.where(first_row, last)}: {err}") from None
            rows = self.group_rows[g]
            if codes and rows is not None:
                rows.append(tensors, [_tensor(c if keep is None else c[keep]) for c in codes])

    def _ignored(
        self, values: Mapping[str, np.ndarray], nulls: Mapping[str, np.ndarray | None]
    ) -> tuple[dict[str, np.ndarray], dict[CheckKey, np.ndarray] | None]:
        """The rows ``ignore_index`` leaves out: per label column where some row's label equals it, and per column read.

        The first maps a label column to its rows equal to ``ignore_index`` (a null label is no such row:
        it stays invalid), counted; the second a ``(column, kind)`` to the rows that every task reading it
        leaves out, which its checks pass over. Both empty (``None``) without ``ignore_index``.
        """
        if not self.ignored_counts:
            return {}, None
        ignored: dict[str, np.ndarray] = {}
        for name in self.ignored_counts:
            hit = values[name] == self.plan.ignore_index
            null = nulls.get(name)
            if null is not None:
                hit &= ~null
            count = int(np.count_nonzero(hit))
            if count:
                ignored[name] = hit
                self.ignored_counts[name] += count
        if not ignored:
            return {}, None
        exempt = {}
        for key, labels in self.exempt_of.items():
            if all(name in ignored for name in labels):
                exempt[key] = (
                    ignored[labels[0]] if len(labels) == 1 else np.logical_and.reduce([ignored[n] for n in labels])
                )
        return ignored, exempt

    def _note_invalid_labels(
        self, values: Mapping[str, np.ndarray], nulls: Mapping[str, np.ndarray | None], valid: Mapping[CheckKey, Any]
    ) -> None:
        """Keep the distinct finite values of each label column's invalid rows, while they are at most two.

        And whether any of them is negative (:attr:`negative_labels`), however many values there are.
        """
        for key, name in self.label_keys.items():
            seen = self.invalid_labels.setdefault(name, set())
            if key not in valid or (seen is None and name in self.negative_labels):  # nothing more to learn
                continue
            bad = ~valid[key]
            null = nulls.get(name)
            if null is not None:
                bad &= ~null
            found = values[name][bad]
            found = found[np.isfinite(found)]
            if found.size and bool((found < 0).any()):
                self.negative_labels.add(name)
            if seen is None:
                continue
            seen.update(np.unique(found).tolist())
            if len(seen) > 2:
                self.invalid_labels[name] = None

    def _padding_hint(self, problem: Problem, marks: Mapping[str, set[float] | None]) -> str:
        """``ignore_index``'s pointer for a label column whose invalid values are all one padding mark (-100, -1)."""
        found = marks.get(problem.column)
        if not problem.role.startswith("labels of") or not found or len(found) != 1:
            return ""
        mark = next(iter(found))
        if mark not in _PADDING_MARKS or problem.reason == "that are NaN or infinite":  # the mark's line only
            return ""
        mark = int(mark)
        return (
            f"; if {mark} marks padded rows (TorchMetrics' `ignore_index={mark}`), pass ignore_index={mark} "
            f"(--ignore-index {mark}): the rows whose label equals it are left out of the tasks reading it"
        )

    def _graded_hint(self, problem: Problem) -> str:
        """The reason a label column's invalid rows may be grades (see :mod:`~torchmetrics_ext.evaluate.graded`)."""
        # the first task of that label column (two tasks of one label column read it alike)
        return next((hint for graded in self.graded if (hint := graded.hint(problem.column, problem.reason))), "")

    def _graded_skipped(self, problems: list[Problem]) -> list[str]:
        """A warning per task whose possible grades were skipped for its ranking names too (``on_invalid="skip"``)."""
        lines = []
        for graded in self.graded:
            counts: dict[str, int] = {}
            for p in problems:
                counts[p.reason] = counts.get(p.reason, 0) + (p.count if p.column == graded.column else 0)
            lines += [line for reason, n in counts.items() if (line := graded.skipped(graded.column, reason, n))]
        return lines

    def finish(self, error: _Error | None) -> EvaluationResult:
        """Agree on errors and counts across ranks, then compute (overall and per segment).

        Every rank raises one process's error: the first met in the read order (file, then chunk), where
        each rank stopped at its own first one (a rank reading row groups of later files met none of the
        earlier ones). Invalid rows (``on_invalid="error"``) are an error at the end of their file: a
        reading error in an earlier file, or in that file, comes first, as one process would meet it.
        """
        summary = (
            error,
            self.rows_read,
            self.rows_skipped,
            self._with_lines(list(self.problems)),
            self.weight_unread,
            self.group_skipped,
            self.layout,
            self.ignored_counts,
            self.invalid_labels,
            self.negative_labels,
            self.group_weightless,
        )
        summaries: list[Any] = [summary]
        if self.world > 1:
            summaries = [None] * self.world
            dist.all_gather_object(summaries, summary)
        failed = [s for s in summaries if isinstance(s, _Failed)]
        if failed:  # a rank that could not open its data: each names it (itself raises its own error)
            raise InvalidDataError(f"rank {failed[0].rank} failed to open its data: {failed[0].message}")
        layouts = [s[6] for s in summaries]
        if any(layout != layouts[0] for layout in layouts[1:]):
            raise InvalidDataError(_other_layouts(layouts))
        problems = self._merge([p for s in summaries for p in s[3]])
        errors = sorted(s[0] for s in summaries if s[0])  # reading and schema errors, each rank's first
        invalid = bool(problems) and self.on_invalid == "error"
        if invalid:  # the first file with invalid rows: it ends before a later file's error is met
            files = {source.label: i for i, source in enumerate(self.sources)}
            errors = [e for e in errors if e.file <= files.get(problems[0].source, len(files))]
        if errors:
            if error is not None and errors[0] == error and self.unexpected is not None:
                raise self.unexpected  # this rank's own failure, with its traceback
            raise InvalidDataError(errors[0].message)
        if invalid:  # the first file with invalid rows, all ranks' counts
            first = problems[0].source
            marks: dict[str, set[float] | None] = {}  # every rank's invalid label values
            for s in summaries:
                for name, found in s[8].items():
                    known = marks.setdefault(name, set())
                    marks[name] = None if known is None or found is None else known | found
            negative = {name for s in summaries for name in s[9]}  # every rank's
            # one padding mark (-100, -1): ignore_index is the way; else grades, or rows without a label (skip)
            hinted = (
                f"{p}{self._padding_hint(p, marks) or self._graded_hint(p) + _no_label_hint(p, negative)}"
                for p in problems
                if p.source == first
            )
            raise InvalidDataError("\n".join(hinted))
        # every rank's value combinations of every segmentation, in one collective
        shares: list[Any] = [[collector.share() for collector in self.collectors]]
        if self.world > 1 and self.collectors:
            shares = [None] * self.world
            dist.all_gather_object(shares, [collector.share() for collector in self.collectors])
        for s, collector in enumerate(self.collectors):  # every rank's segments, numbered alike
            index, ids = collector.index([rank_shares[s] for rank_shares in shares])
            self.indexes.append(index)
            for rows in self.group_rows:
                if rows is not None:
                    rows.number_segments(ids, s)
        self.collectors = []
        self.segments = self.indexes[0] if self.indexes else None
        release_free_memory()  # compute's temporaries start from the states, not from the reading's leftovers
        rows_read = sum(s[1] for s in summaries)
        self.progress.all_ranks(rows_read, self.world)
        self.progress.computing(self._computing_text(rows_read))
        views = [self._segmentation(columns, index) for columns, index in zip(self.plan.segmentations, self.indexes)]
        self.progress.start_steps(self._step_count(len(views)))
        try:
            result, notes = self._finish_computing(summaries, problems, rows_read, views)
        finally:
            self.progress.finish_steps()
        # last, once the result is whole and the progress line ended: each note of a category raised at the
        # caller's line, once
        # (rank 0 only under torchrun: every rank has the same lines, a warning per process would repeat each)
        result.warnings = raise_notes(notes, raising=self.rank == 0)
        return result

    def _of_tasks(self, plan: _Plan) -> str:
        """``" of tasks 'a', 'b'"`` for a group of tasks fed apart (:meth:`_Plan.task_groups`), else ``""``."""
        if len(self.groups) == 1:
            return ""
        names = [t.name for t in plan.tasks]
        return f" of task {names[0]!r}" if len(names) == 1 else " of tasks " + ", ".join(repr(n) for n in names)

    def _step_count(self, segmentations: int) -> int:
        """The compute phase's steps (:meth:`Progress.step`).

        Per group of tasks, its values over all rows and, per segmentation, each metric's kernel over every
        segment and the records.
        """
        count = 0
        for (plan, _), rows in zip(self.groups, self.group_rows):
            count += 1
            if rows is not None and segmentations:
                count += segmentations * (len(plan._specs(None)) + 1)
        return count

    def _finish_computing(
        self, summaries: list[Any], problems: list[Problem], rows_read: int, views: list[_Run]
    ) -> tuple[EvaluationResult, list[Note]]:
        """The second half of :meth:`finish`: every value, overall then per segment; the result and its notes."""
        rows_skipped = sum(s[2] for s in summaries)
        order = self.task_order
        overall: list[dict] = []
        undefined: list[_Undefined] = []
        # each segmentation's records and warning lines, as a run with that `by` alone gives them
        by_segment: list[dict[int, list[dict]]] = [{} for _ in views]
        segment_lines: list[list[tuple[tuple[int, int, int], int, str]]] = [[] for _ in views]
        for g, ((plan, _), module, rows) in enumerate(zip(self.groups, self.modules, self.group_rows)):
            group = self._group(plan, module, rows)  # this run as seen by one group of tasks
            self.progress.step(f"the values over all rows{self._of_tasks(plan)}")
            records, found = group._compute(module)
            used = rows_read - sum(s[5][g] for s in summaries)  # the rows kept for the group's tasks
            weighted = used - sum(s[10][g] for s in summaries)  # of which those of non-zero weight
            for record, task in zip(records, plan.tasks):
                record["rows"] = weighted if plan.weights is not None and task.weighted else used
            overall += records
            undefined += found
        if views:
            # every module's values are records now and its states are read no more: cleared before the
            # segments' compute, which would otherwise hold them (GAUC's and AUC's every row) beside the kept rows
            for module in self.modules:
                module.reset()
            release_free_memory()
        for (plan, _), module, rows in zip(self.groups, self.modules, self.group_rows):
            if rows is None or not views:
                continue
            kept, segment_ids = rows.gathered()  # every rank's rows, once for every segmentation
            for s, view in enumerate(views):
                for number, mine in view._group(plan, module, rows)._segments(segment_lines[s], kept, segment_ids[s]):
                    by_segment[s].setdefault(number, []).extend(mine)
            del kept, segment_ids
        overall.sort(key=lambda record: order[record["task"]])
        # the notes, each with the category it is raised as from Python (`notes`): what may make the numbers
        # other than the caller thinks as a caveat; a value undefined over all rows or in some segments as the
        # package's UndefinedMetricWarning (its policy, as a metric's compute raises it), one per line: per
        # metric(s), tasks and reason, with the count of segments and the first three, not one per segment
        undefined_metric: type[Warning] = UndefinedMetricWarning
        # the groups' lines as one module's: a metric undefined for tasks of both groups is one line naming
        # them all, and the lines come metric by metric (then task by task), not group by group
        caught: list[Note] = [(line, undefined_metric) for line in self._overall_lines(undefined)]
        segment_records: list[dict] = []
        for view, per_index, lines in zip(views, by_segment, segment_lines):
            empty_lines = view._empty_segments(per_index)
            for number in sorted(per_index):
                segment_records += sorted(per_index[number], key=lambda record: order[record["task"]])
            lines.sort(key=lambda item: item[:2])
            caught += [(line, undefined_metric) for *_, line in lines]
            caught += [(line, ResultCaveatWarning) for line in empty_lines + _spaced_lines(view.segments)]
        # after every segmentation's lines, each column once
        caught += [
            (line, ResultCaveatWarning)
            for line in _empty_text_lines(
                name for view in views if view.segments is not None for name in view.segments.empty_text()
            )
        ]
        # the arguments' and the data's, on every rank
        caught[:0] = [
            *self.plan.notes,
            *self._ignored_notes([s[7] for s in summaries]),
            *[(line, ResultCaveatWarning) for line in self._graded_skipped(problems)],
        ]
        if self.plan.unread_weight is not None and any(s[4] for s in summaries):  # any rank's file
            # the numbers are unweighted: said where a Python caller looks, not in `warnings` alone
            note = _unread_weight_note(self.plan.unread_weight, self.plan.unread_weight_tasks)
            caught.insert(0, (note, UnreadWeightsWarning))
        result = EvaluationResult(
            tasks=tuple(t.name for t in self.plan.tasks),
            metrics=self.plan.metric_names,
            by=self.plan.by,
            segmentations=self.plan.segmentations if len(self.plan.segmentations) > 1 else (),
            records=overall + segment_records,
            rows_read=rows_read,
            rows_skipped=rows_skipped,
            problems=problems,
            warnings=[line for line, _ in caught],
            # a column of several segmentations has the same values (and types) in each
            by_types={k: v for index in self.indexes for k, v in index.types.items()},
            label_types={k: v for index in self.indexes for k, v in index.label_types.items()},
            by_categories={k: v for index in self.indexes for k, v in index.categories.items()},
            provenance=self._provenance(),
        )
        return result, caught

    def _ignored_notes(self, counts: Sequence[Mapping[str, int]]) -> list[Note]:
        """The note of the rows ``ignore_index`` left out, every rank's counts summed (none without it)."""
        if self.plan.ignore_index is None:
            return []
        total = {name: sum(c[name] for c in counts) for name in counts[0]}
        return [(_ignored_note(self.plan.ignore_index, total, self.plan.tasks), None)]

    def _computing_text(self, rows: int) -> str:
        """What the compute phase computes, for its progress line (``Progress.computing``)."""
        plan = self.plan
        metrics, tasks = len(plan.metric_names), len(plan.tasks)
        text = f"{metrics} metric{'s' * (metrics != 1)} of {tasks} task{'s' * (tasks != 1)} on the {rows:,} rows read"
        segments = sum(len(index) for index in self.indexes)
        if segments:
            text += f", overall and in {segments:,} segment{'s' * (segments != 1)}"
        return text + "..."

    def _provenance(self) -> dict[str, Any]:
        """How the values were made (:attr:`EvaluationResult.provenance`): the same on every rank."""
        plan = self.plan
        return {
            "package": "torchmetrics-ext",
            "version": package_version(),
            "inputs": [source.label for source in self.sources],
            "tasks": {  # `weighted`: whether a `weights` column weights the task's rows (never without one)
                t.name: {
                    "predictions": t.predictions,
                    "labels": t.labels,
                    "weighted": t.weighted and plan.weights is not None,
                }
                for t in plan.tasks
            },
            "weights": plan.weights,
            "user": plan.user,
            "session": plan.session,
            "by": [list(columns) for columns in plan.segmentations],
            "metrics": {key: {"name": name, "options": dict(options)} for key, (name, options) in plan.entries.items()},
            "metric_tasks": {key: sorted(reads, key=self.task_order.__getitem__) for key, reads in plan.subsets.items()}
            or None,
            "from_logits": plan.from_logits,
            "ignore_index": plan.ignore_index,
            "on_invalid": self.on_invalid,
            "batch_size": self.batch_size,
            "processes": self.world,
        }

    def _empty_segments(self, by_segment: dict[int, list[dict]]) -> list[str]:
        """Give every segment found in the data a record for every task; return a line per task lacking rows.

        With ``on_invalid="skip"`` a task may keep no row of a segment (its labels all null there) while
        other tasks keep some, or no task may keep any: the segment still has a record for each task, with
        ``rows`` 0 and every value ``nan``, so the records are one per segment and task in every output
        (the table, ``.values``, ``.json``, ``.csv``, ``.parquet``), as without invalid rows. One warning
        line per such task names how many segments and the first few.
        """
        if self.segments is None:
            return []
        tasks = [task.name for task in self.plan.tasks]
        empty: dict[str, list[str]] = {}
        labels, types = self.segments.labels, self.segments.label_types
        if sum(map(len, by_segment.values())) == len(labels) * len(tasks):  # every record there (no row skipped)
            return []
        for index in range(len(labels)):  # one check per segment; records only where a task has none
            mine = by_segment.get(index)
            if mine is not None and len(mine) == len(tasks):
                continue
            text = segment_text(self.by, labels[index], ", ", types)
            have = {record["task"] for record in mine or ()}
            for name in tasks:
                if name not in have:
                    record: dict[str, Any] = {"segment": text, **labels[index], "task": name, "rows": 0}
                    read = set(self.plan.metrics_of(name))  # metric_tasks: the metrics reading the task
                    record.update(dict.fromkeys((m for m in self.plan.metric_names if m in read), math.nan))
                    by_segment.setdefault(index, []).append(record)
                    empty.setdefault(name, []).append(text)
        total = len(labels)
        separator = "; " if len(self.by) > 1 else ", "
        lines = []
        why = "invalid for it and skipped"
        if self.plan.ignore_index is not None:
            why = f"invalid for it and skipped, or labelled ignore_index={self.plan.ignore_index!r}"
        for name in sorted(empty, key=tasks.index):
            found = empty[name]
            examples = separator.join(found[:_EXAMPLES]) + (f"{separator}..." if len(found) > _EXAMPLES else "")
            lines.append(
                f"task {name!r} has no valid row in {len(found):,} of {total:,} segment{'' if total == 1 else 's'} "
                f"({examples}): every row there was {why}; its values there are nan, rows 0."
            )
        return lines

    def _segmentation(self, by: tuple[str, ...], index: SegmentIndex) -> _Run:
        """This run for one segmentation: its columns and segments (the run itself where it has one)."""
        if by == self.by and index is self.segments:
            return self
        view = copy.copy(self)
        view.by, view.segments = by, index
        return view

    def _group(self, plan: _Plan, module: RecMetricModule, rows: SegmentRows | None) -> _Run:
        """This run for one group of tasks (:meth:`_Plan.task_groups`): its plan, module and kept rows."""
        if plan is self.plan:
            return self
        group = copy.copy(self)
        group.plan, group.module, group.rows = plan, module, rows
        return group

    def _with_lines(self, problems: list[Problem]) -> list[Problem]:
        """This rank's tallies, each with its first invalid row's line in a text file (one pass over the file).

        Only the rank that read a file's invalid rows reads the file again for their lines (a text file
        is read whole by one rank), before the ranks gather: the others never open it a second time. Best
        effort: a file that cannot be read again gives no lines rather than an error on this rank alone.
        """
        for source in self.sources:
            own = [p for p in problems if p.source == source.label]
            try:
                lines = source.lines([p.first_row for p in own]) if own else {}
            except Exception:  # before the gather no rank may raise alone (the others would wait)
                lines = {}  # messages then name the rows without their lines
            for p in own:
                p.line = lines[p.first_row][0] if p.first_row in lines else None
        return problems

    def _merge(self, problems: list[Problem]) -> list[Problem]:
        """Every rank's tallies as one process's: summed per (file, column, reason), in file and row order.

        A file's row groups may be split between ranks; each rank counts its own rows. The line kept
        is that of the first invalid row (found by the rank that read it, :meth:`_with_lines`).
        """
        merged: dict[tuple[str, str, str], Problem] = {}
        for p in problems:
            key = (p.source, p.column, p.reason)
            if key not in merged:
                merged[key] = Problem(p.source, p.column, p.role, p.reason, 0, p.first_row, p.line)
            elif p.first_row < merged[key].first_row:
                merged[key].first_row, merged[key].line = p.first_row, p.line
            merged[key].count += p.count
        files = {source.label: i for i, source in enumerate(self.sources)}
        columns: dict[str, int] = {}
        for c in self.plan.columns:
            columns.setdefault(c.name, len(columns))
        return sorted(merged.values(), key=lambda p: (files.get(p.source, -1), p.first_row, columns.get(p.column, -1)))

    def _compute(self, module: RecMetricModule) -> tuple[list[dict], list[_Undefined]]:
        """The records over all rows (synced across ranks) and their undefined-value warnings, as parts."""
        values, messages = _values_and_warnings(module, local=False)
        names = [task.name for task in self.plan.tasks]
        # a metric of some tasks (metric_tasks) has no value for the others: records leave it out
        by_key = {key: [float(values.get(f"{key}/{name}", math.nan)) for name in names] for key in self.plan.renames}
        records = self.plan.records(by_key, OVERALL, dict.fromkeys(self.plan.by), [0] * len(names))
        keys = module.metric_names
        found: list[_Undefined] = []
        for j, message in enumerate(messages):
            match = _UNDEFINED.fullmatch(message)
            if match is None:  # not the package's words: the message itself (its `reason`)
                found.append(_Undefined((len(keys), j), (), (), message))
                continue
            metrics, tasks = _attribution(match["metric"], _task_list(match["tasks"]), self.plan, records)
            position = keys.index(match["metric"]) if match["metric"] in keys else len(keys)
            found.append(_Undefined((position, j), tuple(metrics), tuple(tasks), match["reason"]))
        return records, found

    def _overall_lines(self, found: Sequence[_Undefined]) -> list[str]:
        """The lines of the undefined-value warnings over all rows: one per metric(s) and reason, naming its tasks.

        Each group of tasks (:meth:`_Plan.task_groups`) has its own module; a metric undefined for one
        reason in both is one line naming the tasks of both, as one module's warning names them, and the
        lines come in the order one module raises them (metric by metric). RankingMetrics warns once per
        task, each of its lines naming every task: said once.
        """
        merged: dict[tuple[tuple[str, ...], str], list[Any]] = {}  # (metrics, reason) -> [order, tasks]
        for entry in found:
            item = merged.setdefault((entry.metrics, entry.reason), [entry.order, []])
            item[0] = min(item[0], entry.order)
            item[1] += [task for task in entry.tasks if task not in item[1]]
        lines = []
        for (metrics, reason), (_, tasks) in sorted(merged.items(), key=lambda item: item[1][0]):
            if not metrics:
                lines.append(f"{reason} ({_where(OVERALL)})")
                continue
            names = sorted(tasks, key=lambda name: self.task_order.get(name, len(self.task_order)))
            lines.append(_line_of(metrics, names, reason, OVERALL))
        return list(dict.fromkeys(lines))

    def _segments(
        self, lines: list[tuple[tuple[int, int, int], int, str]], rows: dict[str, Tensor], segment: Tensor
    ) -> list[tuple[int, list[dict]]]:
        """Every segment's number and records, in segment order; appends their warnings to ``lines``.

        ``rows``: every rank's kept rows of this group of tasks (:meth:`SegmentRows.gathered`), and
        ``segment`` their segment ids in this run's segmentation (:attr:`by`).

        Each line comes with its place (:meth:`_segment_lines`): sorted on it, the lines of every group
        of tasks (:meth:`_Plan.task_groups`) are in one module's order.

        Every metric family the package can key by segment (every registry metric) is computed
        for all segments at once (:mod:`~torchmetrics_ext.evaluate.by_segment`), on every rank
        (each holds every row after the gather): no loop over segments. Any other metric would
        be computed segment by segment, each rank a share, gathered so that every rank has the
        values and warnings of one process.
        """
        if self.segments is None:
            return []
        counts = torch.bincount(segment, minlength=len(self.segments))
        present = torch.nonzero(counts).reshape(-1)  # segments without rows (all skipped) are left out
        num_segments = present.numel()
        if num_segments == 0:
            return []
        # the kernels take segment ids in [0, num_segments): the ids themselves where every segment has rows (no
        # copy), else each row's rank among the segments with rows (a copy in the ids' narrow dtype)
        dense = segment
        if num_segments < len(self.segments):
            dense = torch.cumsum(counts > 0, 0).sub_(1).to(segment.dtype)[segment]
        counted = counts[present].numpy().tolist()
        # the rows that count per task: those of non-zero weight for a weighted task, every kept row otherwise
        weighted = counted
        if self.plan.weights is not None:
            kept = segment[rows[self.plan.weights] != 0]
            weighted = torch.bincount(kept, minlength=len(self.segments))[present].numpy().tolist()
            del kept
        per_task = [
            weighted if self.plan.weights is not None and task.weighted else counted for task in self.plan.tasks
        ]
        metrics = self.plan.metrics()
        computed = self._segment_values(metrics, self.plan.segment_batch(rows, dense, num_segments))
        self.progress.step(
            f"the records of {num_segments:,} segments by {', '.join(self.by)}{self._of_tasks(self.plan)}"
        )
        per_segment = self._per_segment(computed.per_segment, rows, dense, num_segments)
        del rows, dense
        # every value as Python floats, (T, S) per key: one host copy each, turned (S, T) below
        columns = {key: value.numpy().tolist() for key, value in computed.values.items()}
        tasks = [task.name for task in self.plan.tasks]
        for key in computed.per_segment:
            for i, (given, _) in per_segment[key].items():
                for name, value in given.items():
                    value_key, task = name.rsplit("/", 1)
                    columns.setdefault(value_key, [[math.nan] * num_segments for _ in tasks])
                    columns[value_key][tasks.index(task)][i] = value
        out: list[tuple[int, list[dict]]] = []
        texts: list[str] = []
        records: list[list[dict]] = []
        labels = self.segments.labels
        with _no_garbage_collection():  # millions of new dicts hold no cycle: no collection pass needed
            by_segment = {key: list(zip(*value)) for key, value in columns.items()}  # key -> S tuples of T
            del columns
            for i, index in enumerate(present.numpy().tolist()):
                text = segment_text(self.by, labels[index], ", ", self.segments.label_types)
                values = {key: value[i] for key, value in by_segment.items()}
                mine = self.plan.records(values, text, labels[index], [rows_of[i] for rows_of in per_task])
                texts.append(text)
                records.append(mine)
                out.append((index, mine))
            lines.extend(self._segment_lines(metrics, computed, per_segment, texts, records))
        return out

    def _segment_values(self, metrics: Mapping[str, Any], batch: SegmentBatch) -> SegmentValues:
        """Every segment's values of ``metrics`` (:func:`segment_values`), each metric fed the rows of its tasks.

        Without ``metric_tasks`` every metric reads every task in one call. With it, each metric is given
        the rows of the tasks it reads (``sigmoid`` in the rows of those holding logits, where the module
        feeds it so) and its ``(T_key, S)`` values and undefined entries are put back in the run's
        ``(T, S)`` places: ``nan`` and never undefined for the tasks it does not read (their records leave
        the metric out).
        """
        fed = self.plan.fed_probabilities(metrics, self.module.input_domains.from_logits)
        where = f" by {', '.join(self.by)}{self._of_tasks(self.plan)}"

        def step(key: str) -> None:  # one step per metric (its kernel over every segment), none per segment
            names = self.plan.ranking_groups.get(key) or self.plan.renames.get(key) or [key]
            self.progress.step(f"{', '.join(names)} of {batch.num_segments:,} segments{where}")

        if not self.plan.subsets:
            return segment_values(metrics, list(fed), batch, step)
        out = SegmentValues()
        shape = (batch.num_tasks, batch.num_segments)
        for key, metric in metrics.items():
            step(key)
            positions = [t for t, task in enumerate(self.plan.tasks) if self.plan.read_by(key, task.name)]
            index = torch.tensor(positions)
            part = batch
            if len(positions) < batch.num_tasks:  # its tasks' rows: a copy while it is computed
                weights = batch.weights
                if weights is not None and weights.dim() == 2:
                    weights = weights[index]
                part = replace(batch, preds=batch.preds[index], target=batch.target[index], weights=weights)
            mask = fed.get(key)
            if mask is not None:  # sigmoid in the rows of its tasks that hold logits, the others as given
                preds = part.preds.double()  # as the module: float64 predictions (the rows are kept as read)
                part = replace(part, preds=torch.where(mask, torch.sigmoid(preds), preds))
            found = segment_values({key: metric}, [key] if key in fed and mask is None else [], part)
            for name, value in found.values.items():
                out.values[name] = value.new_full(shape, math.nan)
                out.values[name][index] = value
            if key in found.undefined:
                out.undefined[key] = []
                for entry in found.undefined[key]:
                    flagged = torch.zeros(shape, dtype=torch.bool)
                    flagged[index] = entry.undefined
                    out.undefined[key].append(Undefined(entry.metric, entry.reason, flagged))
            out.per_segment += found.per_segment
        return out

    def _per_segment(
        self, keys: list[str], rows: Mapping[str, Tensor], segment: Tensor, num_segments: int
    ) -> dict[str, dict[int, tuple[dict[str, float], list[str]]]]:
        """Metrics no family computes at once: a module per key and segment, each rank a share.

        Returns ``key -> segment -> (values by "key/task", warning messages)`` for every segment
        with rows, gathered from every rank.
        """
        if not keys:
            return {}
        kinds = self.plan.read_kinds
        order = torch.argsort(segment, stable=True)
        ends = torch.cumsum(torch.bincount(segment, minlength=num_segments), 0).tolist()
        mine: list[tuple[str, int, dict[str, float], list[str]]] = []
        for i in range(self.rank, num_segments, self.world):  # every rank holds every row: each computes a share
            picked = order[(ends[i - 1] if i else 0) : ends[i]]
            # as the float64/int64 rows the module would read in one process (its kept rows are as read)
            part = {
                name: value[picked].to(torch.int64 if kinds[name] == "id" else torch.float64)
                for name, value in rows.items()
            }
            for key in keys:
                module = self.plan.module((key,))
                module.update(part)
                computed, messages = _values_and_warnings(module, local=True)
                mine.append((key, i, {name: float(v) for name, v in computed.items()}, messages))
        if self.world > 1:
            shares: list[Any] = [None] * self.world
            dist.all_gather_object(shares, mine)
            mine = [item for share in shares for item in share]
        out: dict[str, dict[int, tuple[dict[str, float], list[str]]]] = {key: {} for key in keys}
        for key, i, values, messages in mine:
            out[key][i] = (values, messages)
        return out

    def _segment_lines(
        self,
        metrics: Mapping[str, Any],
        computed: SegmentValues,
        per_segment: Mapping[str, Mapping[int, tuple[dict[str, float], list[str]]]],
        texts: list[str],
        records: list[list[dict]],
    ) -> list[tuple[tuple[int, int, int], int, str]]:
        """One line per metric, task and reason undefined in some segment: how many segments, and the first few.

        ``"auc is undefined for task 'click' in 12,345 of 200,000 segments (country=de, country=fr, ...):
        the labels seen hold a single class ..."``, 200,000 being the segments with rows for the task (with
        ``on_invalid="skip"`` a task's own: a segment whose rows were all dropped for it is not counted, its
        record of 0 rows said by :meth:`_empty_segments`): a
        line per segment made a flood (one per metric and
        segment: 187,000 lines for 200,000 segments and three metrics). The values stay ``nan`` in
        the records, which name every segment. Lines come in the order one module over a segment's
        rows would warn (metric by metric, each metric's warnings in the order it raises them), then
        by task; the segments named are the first ones, in segment order. Each line comes with its place
        in that order, ``((metric, warning, task), first segment, line)``, the task's place among every
        task of the run (a group's run has some of them: :meth:`_Plan.task_groups`).
        """
        tasks = [task.name for task in self.plan.tasks]
        place = [self.task_order[task] for task in tasks]
        # (what, task, reason) -> [(metric position, warning position, task position), segments]
        groups: dict[tuple[str, str | None, str], list[Any]] = {}

        def add(order: tuple[int, int, int], what: str, task: str | None, reason: str, segments: Any) -> None:
            reason = reason.replace(NO_SAMPLES, NO_SAMPLES_IN_SEGMENT)  # said of segments, not of a metric never fed
            group = groups.setdefault((what, task, reason), [order, []])
            group[0] = min(group[0], order)
            group[1].append(np.asarray(segments, dtype=np.int64).reshape(-1))

        for position, key in enumerate(metrics):
            if key in per_segment:
                for i, (_, messages) in per_segment[key].items():
                    for j, message in enumerate(messages):
                        match = _UNDEFINED.fullmatch(message)
                        if match is None:  # not the package's words: grouped by the message itself
                            add((position, j, 0), message, None, "", [i])
                            continue
                        names, task_names = _attribution(
                            match["metric"], _task_list(match["tasks"]), self.plan, records[i]
                        )
                        for task in task_names:
                            what = _metrics_are(names)
                            add((position, j, place[tasks.index(task)]), what, task, match["reason"], [i])
                continue
            for j, entry in enumerate(computed.undefined.get(key, ())):
                # the parts of the message one module over a segment's rows gives
                parts = _UNDEFINED.fullmatch(f"{entry.metric} is undefined: {entry.reason}; returning nan.")
                metric, reason = (parts["metric"], parts["reason"]) if parts else (entry.metric, entry.reason)
                counts = entry.undefined.sum(1).tolist()
                for t, task in enumerate(tasks):
                    if not counts[t]:
                        continue
                    flagged = torch.nonzero(entry.undefined[t]).reshape(-1).numpy()
                    ranking_names = self.plan.ranking_groups.get(metric)
                    if not ranking_names:
                        add((position, j, place[t]), _metrics_are([metric]), task, reason, flagged)
                        continue
                    by_names: dict[str, list[int]] = {}  # the ranking names nan for the task: named themselves
                    for i in flagged.tolist():
                        named = [m for m in ranking_names if math.isnan(records[i][t].get(m, 0.0))] or [metric]
                        by_names.setdefault(_metrics_are(named), []).append(i)
                    for what, ranked in by_names.items():
                        add((position, j, place[t]), what, task, reason, ranked)
        total = len(texts)
        separator = "; " if len(self.by) > 1 else ", "  # a segment of several columns holds ", "
        lines: list[tuple[tuple[int, int, int], int, str]] = []
        for (what, name, why), (order, parts) in groups.items():
            found = np.unique(np.concatenate(parts))  # sorted; a segment named by several warnings once
            shown = [texts[i] for i in found[:_EXAMPLES].tolist()]
            examples = separator.join(shown) + (f"{separator}..." if len(found) > _EXAMPLES else "")
            where = f"in {len(found):,} of {total:,} segment{'' if total == 1 else 's'} ({examples})"
            if name is None:
                lines.append((order, int(found[0]), f"{what} ({where})"))
            else:
                lines.append((order, int(found[0]), f"{what} undefined for task {name!r} {where}: {why}"))
        lines.sort(key=lambda item: item[:2])
        return lines


# the segments an undefined-value line names (then "...": the records name every one)
_EXAMPLES = 3


def _metric_options(metrics: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{key: (registry name, options)}`` of ``evaluate``'s ``metrics``: names, or ``{key: options}``.

    The dict form is :meth:`~torchmetrics_ext.RecMetricModule.from_config`'s (options may name the
    registry entry with ``"metric"``; ``None`` is no options); a name listed twice is refused, as the module
    refuses it.
    The options themselves (``num_tasks``, a ``from_logits`` that disagrees with evaluate's, what the
    class refuses) are checked where they are built, by the module's ``_build_entry``.
    """
    if isinstance(metrics, Mapping):
        if not metrics:
            raise ValueError("Expected `metrics` to be a non-empty list of names or dict {name: options}, got {}.")
        entries = _metric_entries(metrics, "`metrics`")
    else:
        # any collection of names (a list, a tuple, a numpy array, a pandas Index): numpy's str_ as str
        given = list(metrics) if isinstance(metrics, Iterable) and not isinstance(metrics, (str, bytes)) else []
        if not given:
            names = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else []
            hint = f" (as a list: {names!r})" if names else ""
            raise refusal(
                f"Expected `metrics` to be a non-empty list of metric names, got {metrics!r}{hint}.",
                wrong_type=not isinstance(metrics, Iterable) or isinstance(metrics, (str, bytes)),
            )
        given = [str(name) if isinstance(name, str) else name for name in given]
        entries = {name: (name, {}) for name in dict.fromkeys(given)}
    for key, (name, _) in entries.items():
        if not isinstance(key, str) or not isinstance(name, str):  # a WrongTypeError, as from_config's
            wrong = key if not isinstance(key, str) else name
            what = f"the option 'metric' of metric {key!r}" if wrong is not key else "a metric name"
            raise WrongTypeError(
                f"Expected {what} in `metrics` to be a registry name (str), got {wrong!r} ({type(wrong).__name__})."
            )
    if not isinstance(metrics, Mapping):  # a name listed twice: one key, most likely a typo for another metric
        refuse_repeats("`metrics`", metrics, given, what="metric names")
    return entries


def _check_names(names: Sequence[str]) -> None:
    """Raise the registry's error for every name it refuses in one message (a single one: its own).

    ``--metrics ndgc@10,aucc`` names both, each with its hint, and the known names once.
    """
    refused: list[str] = []
    for name in names:
        try:
            lookup(name)
        except ValueError as err:
            refused.append(str(err))
    if len(refused) == 1:
        raise ValueError(refused[0])
    if refused:
        marker = "; known names: "
        known = refused[0][refused[0].find(marker) :] if marker in refused[0] else ""
        parts = [text[: text.find(marker)] if marker in text else text.rstrip(".") for text in refused]
        raise ValueError(f"{len(refused)} metric names are refused: " + "; ".join(parts) + (known or "."))


@contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a block that builds millions of objects.

    Building a record per segment and task (none in a cycle) otherwise triggers full
    collections that each walk every object built so far (a third of the time at 1e5 segments).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _values_and_warnings(module: RecMetricModule, local: bool) -> tuple[dict[str, Tensor], list[str]]:
    """A module's values and the messages of its undefined-value warnings, in the order raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        values = module.local_compute() if local else module.compute()
    return values, [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]


# the module names metrics by key and tasks by name: "auc is undefined for task(s) ['click', 'buy']: ...",
# "ranking (ndcg@10, mrr@10) is undefined for task(s) ['click']: ...", past ten tasks
# "... for task(s) ['t0', ..., 't9', ...] (12 in all): ..." (then named from the values)
_UNDEFINED = re.compile(
    r"(?P<metric>.+?)(?: \((?P<keys>[^()]*)\))? is undefined"
    r"(?: for task\(s\) (?P<tasks>\[.*?\])(?: \([\d,]+ in all\))?)?: (?P<reason>.*)",
    re.S,
)


def _task_list(text: str | None) -> list[Any]:
    """The task names (or positions) of a warning's ``[...]`` list; empty if there is none or it does not parse."""
    try:
        tasks = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return tasks if isinstance(tasks, list) else []


def _where(segment: str) -> str:
    return "over all rows" if segment == OVERALL else f"in segment {segment}"


@dataclass(frozen=True)
class _Undefined:
    """An undefined-value warning over all rows, as parts: its place, metric name(s), tasks and reason."""

    order: tuple[int, int]  # (the metric's place in the module, the warning's among the module's warnings)
    metrics: tuple[str, ...]  # empty: a message not in the package's words, `reason` holding it
    tasks: tuple[str, ...]
    reason: str


def _line_of(metrics: Sequence[str], names: Sequence[str], reason: str, segment: str) -> str:
    """``"auc is undefined for tasks 'a', 'b' over all rows: ..."``, from the metric names, tasks and reason."""
    who = ""
    if names:
        who = f" for task {names[0]!r}" if len(names) == 1 else " for tasks " + ", ".join(repr(n) for n in names)
    return f"{_metrics_are(metrics)} undefined{who} {_where(segment)}: {reason}"


def _attribution(
    metric: str, named: Sequence[Any], plan: _Plan, records: Sequence[dict]
) -> tuple[list[str], list[str]]:
    """The metric names and the tasks an undefined-value warning is about, from its parts and the values.

    The ranking names share one ``RankingMetrics`` per task: those that are ``nan``, for every task
    they are ``nan`` for. Otherwise the tasks the warning names, the only task, or (positions that
    cannot be read) the tasks with a ``nan`` value.
    """
    tasks = plan.tasks
    known = {task.name for task in tasks}
    ranking_names = plan.ranking_groups.get(metric)
    if ranking_names:
        undefined = [r for r in records if any(math.isnan(r.get(m, 0.0)) for m in ranking_names)]
        names = [r["task"] for r in undefined]
        metrics = [m for m in ranking_names if any(math.isnan(r.get(m, 0.0)) for r in undefined)] or [metric]
    elif named and all(isinstance(n, str) and n in known for n in named):
        names, metrics = list(named), [metric]
    elif len(tasks) == 1:
        names, metrics = [tasks[0].name], [metric]
    else:  # no usable positions: name the tasks with an undefined value
        names = [r["task"] for r in records if any(isinstance(v, float) and math.isnan(v) for v in r.values())]
        metrics = [metric]
    return metrics, names


def _metrics_are(metrics: Sequence[str]) -> str:
    """``"auc is"``, ``"ndcg@10 and mrr@10 are"``, ``"a, b and c are"``."""
    return f"{metrics[0]} is" if len(metrics) == 1 else f"{', '.join(metrics[:-1])} and {metrics[-1]} are"


def evaluate(
    data: Any,
    tasks: Any,
    metrics: Sequence[str] | Mapping[str, Any] = DEFAULT_METRICS,
    *,
    weights: str | None = None,
    user: str | None = None,
    session: str | None = None,
    by: str | Sequence[str] | None = (),
    batch_size: int = 65_536,
    on_invalid: str = "error",
    progress: bool | str = False,
    from_logits: bool = False,
    metric_tasks: Mapping[str, str | Sequence[str]] | None = None,
    ignore_index: float | None = None,
) -> EvaluationResult:
    """Score logged predictions with the package's metrics, streaming the data in record batches.

    Args:
        data: a Parquet or CSV path (CSV may be compressed: ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``,
            ``.csv.lz4``), a directory, a glob, a list of them, a ``pyarrow.Table``, or a pandas or
            polars DataFrame (converted one slice of the needed columns at a time). The keys of
            Hive partition directories below a directory (or a glob's first wildcard) named are
            columns too, typed by ``pyarrow.dataset``'s hive partitioning (``country=FR/hour=3/``:
            ``by=["country", "hour"]``).
        tasks: ``{"click": ("p_click", "y_click"), ...}`` or a list (or numpy array, pandas
            ``Series``) of ``"click=p_click:y_click"`` strings, of task names or of dicts of
            :class:`~torchmetrics_ext.RecTaskInfo`'s fields
            ``name``, ``prediction_name`` and ``label_name`` (as in
            :meth:`~torchmetrics_ext.RecMetricModule.from_config`: a name alone, or a dict without
            ``prediction_name``/``label_name``, reads ``RecTaskInfo``'s default columns
            ``"prediction"`` and ``"label"``, so two tasks given by name alone are refused as reading
            the same columns; a dict's ``weight_name`` may be ``None``, a task without weights;
            weights, user and session ids are shared by the tasks: ``weights``,
            ``user``, ``session``). Unlike a module, which weights a task by its ``weight_name``
            column (``"weight"``) where the step holds one, ``evaluate`` reads only the columns it
            is told: without ``weights`` every row has weight 1, a ``"weight"`` column in the data
            too, so that a column added to the logs never changes past numbers; the result's
            ``warnings`` then note that column, and the note is raised as an :class:`UnreadWeightsWarning`
            (``weights="weight"`` weights by it).
        metrics: registry names (``"ne"``, ``"auc"``, ``"gauc"``, ``"ndcg@10"``, ``"recall@20"``, ...;
            a list, tuple, numpy array or pandas ``Index`` of them), each reported under the name given;
            a name given twice is refused (one key: most likely a typo for another metric), as
            :class:`~torchmetrics_ext.RecMetricModule` refuses it, while two spellings of one cutoff
            (``"ndcg@10"``, ``"ndcg@010"``) are computed once, each reported.
            Or a dict ``{name: options}``, as in :meth:`~torchmetrics_ext.RecMetricModule.from_config`:
            the metric's keyword options (``{"auc": {"num_bins": 10000}, "ne": {"eta": 1e-6}}``;
            ``None`` is none), ``"metric"`` naming the registry entry when the name is another
            (``{"auc_binned": {"metric": "auc", "num_bins": 10000}}``, or the registry name alone:
            ``{"cal": "calibration"}``); ``num_tasks`` comes from
            ``tasks`` and ``from_logits`` from the argument of that name, for every metric (built as
            :class:`~torchmetrics_ext.RecMetricModule` builds them: an option ``from_logits`` must agree).
        weights: column of sample weights (shared by every task; weight 1 without it, whatever
            columns the data holds). A task dict's ``weight_name: None`` is a task without weights,
            as ``RecTaskInfo(weight_name=None)`` in a module: every row weighs 1 for it, next to the
            tasks weighted by ``weights`` in the same run (the column is not read when no task is
            weighted); any other per-task ``weight_name`` is refused. A column
            may have several roles (weights that are labels, ``user`` = ``session``): it is read
            once and checked in each.
        user: column of integer user ids (for ``gauc``/``gauprc``; not read when no metric of
            the run averages over users, nor ``session`` when none ranks: ``warnings`` say so).
        session: column of integer query/session ids (for ranking metrics). User and session ids
            are keys, never reported, so two ids are one user (session) when their 64-bit patterns
            are equal: any integer type, and a uint64 id ``u >= 2**63`` is the int64 id
            ``u - 2**64`` (a 64-bit hash written by an unsigned writer in one file and a signed one
            in another is one id). A CSV file's ids are read the same way: ``18446744073709551615``
            there is the id ``-1``, as in a Parquet uint64 column.
        by: columns whose distinct value combinations are the segments (any number of columns and
            of distinct values; one column as a string, ``by="country"`` as ``by=["country"]``, as
            ``--by country`` and a config's ``by: country``; several as a list, tuple, numpy array or
            pandas ``Index``, in order). A string is read as ``--by`` reads it, the same from
            Python, a config file and the command line: the column of exactly that name where the
            data has one (any file's columns; a name some files hold and others do not is refused
            as ambiguous), else the comma-separated names, spaces around each dropped
            (``by="country, hour"`` is ``["country", "hour"]``, ``by=" country"`` ``["country"]``); a list
            names columns as they are (``["a,b"]`` is the column ``a,b``). Every metric is computed on each
            segment's rows, and over all rows. All segments are computed at once, one pass per
            metric over the rows keyed by segment (no module per segment: about 15 microseconds per
            segment in all). Each column once, none named ``segment``, ``task``, ``rows`` or like a
            requested metric (the other fields of a record). Floats compare as numbers (``-0.0`` is
            ``0.0``); every NaN is one segment, apart from null (but for a pandas frame, where NaN is the missing
            value: the null segment). A column needs one type holding all its values in every
            file (for a pandas object column, every slice); others fail naming both files (or
            rows) and types. Segments compare by value, not by bit pattern as ``user`` and
            ``session`` ids do, because each segment's value is reported: uint64 ``2**64 - 1`` and
            int64 ``-1`` are two values no one type holds, refused rather than reported as one.
            ``None`` or ``()``: no segments. Several segmentations in one read: a list (tuple) of
            lists (tuples), each one segmentation's columns as written (``by=[["country"],
            ["device"], ["country", "device"]]``, as ``--by country --by device --by
            country,device`` and a config's ``by: [[country], [device], [country, device]]``):
            the overall records once, then each segmentation's records and warning lines as a run
            with that ``by`` alone gives them, from one read of the data (each more segmentation
            keeps one segment id per row, int32 below 2**31 segments, not another copy of the rows). Anything else (a
            number, a dict, a set, a list holding a non-string or an empty name, a list mixing
            names and lists, a segmentation given twice) is a ``ValueError``.
        batch_size: rows per record batch (memory per batch, not a result setting; any positive
            size, those above ``2**62`` read as ``2**62``; CSV files are parsed in blocks of at
            most 1 GiB, each cut into batches).
        on_invalid: ``"error"`` (raise, naming file, column, reason, count and first row) or
            ``"skip"`` (drop invalid rows and report them in the result). A row is dropped only for
            the tasks reading a column it is invalid in: its predictions, its labels, the weights
            (not for a task given ``weight_name: None``), the user and session ids (every task, where
            a metric reads them: ids no metric reads are not read, and ``warnings`` say so).
            Each task's values (and ``rows``, overall and per segment) are those of the task
            evaluated alone on the rows valid for it; a segment without a valid row for a task still
            has its record, ``rows`` 0 and every value ``nan``.
        progress: print progress on stderr (rank 0 only): ``True`` the reading's line (rows read, rate) and, once
            the compute phase begins, a line redrawn every few seconds with its step (a metric's pass over every
            segment, the records) and the time since it began; ``"auto"`` (the command line's default) the
            compute phase's line only where stderr is a terminal; ``False`` (the default) nothing.
        ignore_index: a label value that marks rows without a label (TorchMetrics' ``ignore_index``,
            ``-100`` in Hugging Face code, or ``-1``): a row whose label equals it is left out of each task
            reading that label column, for every metric of the task (a masked candidate for the ranking
            names), and counted in a note of ``warnings``; tasks of other label columns keep the row. Its
            other columns are not checked for those tasks (a padded row's score may be anything). ``None``
            (the default): every label is checked (a ``-100`` is then an invalid row). A finite number.
        from_logits: the prediction columns hold logits: metrics with a ``from_logits`` option read
            them as such (``mse`` is that of ``sigmoid(logits)``), the others
            (``weighted_sum_predictions``, ...) read ``sigmoid(logits)`` whether or not a metric
            with the option is asked for, ranking and pairwise metrics rank them as given and
            ``ctr`` ignores them (the module's rule, ``docs/module.md``). With ``metric_tasks``, the
            columns holding logits are those of the tasks a metric of probabilities reads (NE, AUC,
            calibration, ``gauc``...), built with ``from_logits=True``; a task only metrics of values
            read (``mse`` and ``r_squared`` on watch time) keeps its values, and a metric of values
            reading both kinds reads ``sigmoid`` in the rows of the logits alone, as in a module whose
            metrics each set ``from_logits``. Where no metric of probabilities reads any task, the flag
            changes nothing, and the result's ``warnings`` say so in a line.
        metric_tasks: ``{metric: task or [tasks]}``, the tasks a metric reads (a regression head next to
            binary heads: ``{"auc": ["click", "like"], "ne": "click", "mse": "watch_time"}``; a list may be
            a tuple, a NumPy array or a pandas ``Index``/``Series`` of names, as ``tasks`` may), as
            :class:`~torchmetrics_ext.RecMetricModule`'s ``metric_tasks`` (``docs/module.md``, "Metrics of
            some tasks"). Keys are the metric names as given in ``metrics`` (a registry name such as
            ``"ndcg@10"``, or a key of the ``metrics`` mapping); a metric left out reads every task
            (``None`` or ``{}``: every metric reads every task; a mapping whose lists all name every task
            keeps its rules for logits and ids below). Each task's rows are checked against the metrics
            that read it (watch-time labels in seconds are valid where AUC does not read them), so with
            ``on_invalid="skip"`` a row is dropped for the tasks whose metrics refuse it; the user (session)
            ids are read by the tasks a grouped (ranking) metric reads only. The records of a task hold
            the metrics reading it alone, and :attr:`~torchmetrics_ext.evaluate.EvaluationResult.values`
            the pairs that are read (the table shows ``-``, ``.csv``/``.parquet`` a null, elsewhere).
            Refused with the module's ``ValueError`` before any data is read: an unknown metric or task
            (naming the closest), an empty list, a task listed twice, a task no metric reads, a value that
            is no dict, a list that holds no task names.

    Returns:
        An :class:`~torchmetrics_ext.evaluate.EvaluationResult` (``.values`` dict, ``.to_pandas()``).

    Raises:
        InvalidDataError: a file cannot be read, a column is missing or wrongly typed, or (with
            ``on_invalid="error"``) rows hold null, NaN or out-of-domain values (non-zero float64
            weights outside float32's range too, for the exact AUC family, which keeps them as
            float32). A record batch a metric still refuses (a value or type the checks do not
            know: the module's ``ValueError`` or ``TypeError``) raises it too, naming the file and
            the batch's rows, whatever ``on_invalid``, on every rank.
        ValueError: bad arguments (unknown metric names list the known ones, a name that is no string;
            a repeated or reserved ``by`` column; two tasks over the same columns; a column given as an id,
            ``user``/``session``, and as predictions, labels or weights, or as ``by`` and another role;
            a ``metric_tasks`` the module refuses).

    Under ``torch.distributed`` every rank calls it with the same arguments: ranks split the row
    groups (files for CSV), stream their share (``by`` columns included: every file is read once,
    by one rank) and sync as the module does; every rank returns the same result.

    Examples:
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import evaluate
        >>> table = pa.table({"p": [0.1, 0.8, 0.6, 0.3], "y": [0, 1, 1, 0], "country": ["fr", "fr", "us", "us"]})
        >>> result = evaluate(table, {"click": ("p", "y")}, ["ctr", "auc"], by=["country"])
        >>> result.values["auc/click"], result.values["ctr/click/country=us"]
        (1.0, 0.5)
        >>> print(result.format_table())
        segment     task   rows       ctr       auc
        -------------------------------------------
        all         click     4  0.500000  1.000000
        country=fr  click     2  0.500000  1.000000
        country=us  click     2  0.500000  1.000000
    """
    if on_invalid not in ON_INVALID:
        raise refusal(
            f"Expected `on_invalid` to be one of {ON_INVALID}, got {on_invalid!r}.",
            wrong_type=not isinstance(on_invalid, str),
        )
    if not (isinstance(progress, str) and progress == "auto"):
        flag = as_bool(progress)
        if flag is None:  # a string other than "auto" is refused too, where it was truthy
            raise refusal(
                f"Expected `progress` to be a bool or 'auto', got {progress!r}.",
                wrong_type=True,  # a flag's other strings ("no") too: a TypeError and a ValueError
            )
        progress = flag
    # rows per batch only bound memory: any size is fine, within what Arrow's readers take (int64)
    batch_size = min(check_int("batch_size", batch_size, 1), _MAX_BATCH_SIZE)
    sources = None
    if _reads_commas(by):  # read against the data's columns
        sources = open_sources(data)
        by = _comma_columns(by, sources)
    elif isinstance(by, SeveralBy) and any(_reads_commas(item) for item in by):
        sources = open_sources(data)
        by = SeveralBy(
            (_comma_columns(item, sources) if isinstance(item, str) else item for item in by), written=by.written
        )
    plan = _Plan(tasks, metrics, weights, user, session, by, from_logits, metric_tasks, ignore_index)
    try:  # the data, as this rank finds it (its files, their footers)
        run = _Run(plan, open_sources(data) if sources is None else sources, batch_size, on_invalid, progress)
    except Exception as err:
        _fail_with_the_others(err)
        raise
    return run.finish(run.stream())


class _Failed(NamedTuple):
    """What a rank that could not open its data sends to the others' gather in ``_Run.finish``."""

    rank: int
    message: str


def _fail_with_the_others(err: Exception) -> None:
    """Under a process group, join the gather the other ranks wait in (``_Run.finish``), saying why, then raise.

    A path missing on one rank alone (another machine's disk, a file removed meanwhile), or a footer
    that reads on one rank alone, failed that rank before any collective while the others waited for it
    until the process group's timeout.
    """
    rank, world = _world()
    if world > 1:
        summaries: list[Any] = [None] * world
        dist.all_gather_object(summaries, _Failed(rank, f"{type(err).__name__}: {err}"))
