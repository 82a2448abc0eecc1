"""``torchmetrics-ext evaluate --config FILE``: the evaluation written down once, in JSON or YAML.

The file holds ``tasks`` and ``metrics`` in the schema of
:meth:`~torchmetrics_ext.RecMetricModule.from_config` (metrics as a list of registry names or a
mapping ``name -> options``; tasks as a list of task names, dicts of ``name``, ``prediction_name``
and ``label_name``, or ``"name=predictions:labels"`` strings, or a mapping ``name -> [predictions,
labels]``; a task named alone, or a dict without ``prediction_name``/``label_name``, reads
:class:`~torchmetrics_ext.RecTaskInfo`'s default columns ``prediction`` and ``label``, as in
``from_config``), and the other keys of :func:`~torchmetrics_ext.evaluate.evaluate` and the
command line (:data:`CONFIG_KEYS`; ``paths`` and ``by`` take one name or a list). JSON is always
read; YAML (``.yaml``/``.yml``) needs PyYAML, imported only for such a file.

Options on the command line override the file's, each as a whole, but for ``--metrics``: it
selects which metrics run, and a metric the file's mapping configures keeps the file's options;
the file's tasks that its ``metric_tasks`` gives to unselected metrics alone are left out
(:func:`tasks_read_by`), with a warning line naming them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torchmetrics_ext._module_config import _build_entry, _close_to
from torchmetrics_ext.evaluate.runner import (
    ON_INVALID,
    TaskSpec,
    _metric_options,
    _segment_columns,
    _segmentations,
    _several,
    _tasks,
)
from torchmetrics_ext.utilities.checks import int_given, whole_float
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["CONFIG_KEYS", "load_config", "tasks_read_by"]

CONFIG_KEYS = (
    "paths",
    "tasks",
    "metrics",
    "metric_tasks",
    "weights",
    "user",
    "session",
    "by",
    "from_logits",
    "output",
    "on_invalid",
    "ignore_index",
    "batch_size",
    "progress",
)
_YAML_SUFFIXES = (".yaml", ".yml")


def load_config(path: str) -> dict[str, Any]:
    """Read and check an ``evaluate`` config file.

    Args:
        path: a ``.json`` file, or a ``.yaml``/``.yml`` file (needs PyYAML); any other name is read as JSON.

    Returns:
        The keys the file gives, checked; ``paths`` as a list, ``paths`` and ``output`` relative
        to the file's directory made so (absolute ones kept).

    Raises:
        ValueError: the file cannot be read or parsed, YAML without PyYAML, an unknown key (naming
            the closest valid one) or a value of the wrong type (naming the key and what was expected).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the file: {err}") from None
    if path.lower().endswith(_YAML_SUFFIXES):
        raw = _parse_yaml(text)
    else:
        try:
            raw = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err}); YAML files need a .yaml or .yml name") from None
    return check_config(raw, os.path.dirname(path))


def _parse_yaml(text: str) -> Any:
    try:
        import yaml  # optional: imported only for a YAML file
    except ImportError:
        raise ValueError(
            "reading a YAML config needs PyYAML, which is not installed: pip install pyyaml "
            "(or write the config as JSON)"
        ) from None

    class _UniqueKeyLoader(yaml.SafeLoader):
        """PyYAML's safe loader, but a key given twice in one mapping is refused (it keeps the last)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not None:
                    raise ValueError(_duplicate(key, f" (first on line {first}, again on line {line})"))
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML ({err})") from None


def _duplicate(key: Any, where: str) -> str:
    return (
        f"key {key!r} is given twice in one mapping{where}: the file would keep only its last value, "
        "so give each key once (merge the two values into one)"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: the mapping of ``pairs``, refusing a key given twice (JSON keeps the last)."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(_duplicate(key, ""))
        mapping[key] = value
    return mapping


def check_config(raw: Any, base: str = "") -> dict[str, Any]:
    """The checked keys of a parsed config (see :func:`load_config`); ``base``: the directory of relative paths."""
    if not isinstance(raw, Mapping):
        raise WrongTypeError(f"expected a mapping of keys {list(CONFIG_KEYS)}, got {type(raw).__name__}")
    unknown = sorted((key for key in raw if key not in CONFIG_KEYS), key=str)
    if unknown:
        raise ValueError(f"unknown keys {unknown}{_close_to(unknown, CONFIG_KEYS)}; valid keys: {list(CONFIG_KEYS)}")
    config = {key: _check(key, value, base) for key, value in raw.items()}
    return {key: value for key, value in config.items() if value is not None}


def _wrong(key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"key {key!r}: expected {expected}, got {value!r} ({type(value).__name__})")


def _names(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of non-empty strings."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        return False
    return all(isinstance(name, str) and name for name in value)


def _metric_tasks(value: Any) -> dict[str, list[str]]:
    """The file's ``metric_tasks``: ``{metric: task or [tasks]}``, each list of task names as the file writes it.

    Its form is checked here (a mapping of metric names to a task name or a non-empty list of them); which
    metrics and tasks it names, and a task listed twice, are checked by ``evaluate`` against the run's
    metrics and tasks (the command line may select other metrics), with the module's messages.
    """
    if not isinstance(value, Mapping) or not value:
        raise _wrong("metric_tasks", "a mapping of metric names to a task name or a list of task names", value)
    out = {}
    for metric, tasks in value.items():
        listed = [tasks] if isinstance(tasks, str) else tasks
        if not isinstance(metric, str) or not metric or not _names(listed):
            raise ValueError(
                f"key 'metric_tasks': expected a metric name -> a task name or a non-empty list of task names "
                f"(e.g. {{mse: watch_time, auc: [click, like]}}), got {metric!r}: {tasks!r}"
            )
        out[metric] = list(listed)
    return out


def tasks_read_by(
    tasks: Any, metrics: Any, metric_tasks: Mapping[str, Sequence[str]] | None
) -> tuple[list[TaskSpec], str] | None:
    """The file's tasks that the metrics ``--metrics`` selects read, and a note naming those left out.

    With ``--metrics`` selecting some of a file's metrics, the file's ``metric_tasks`` may give a task
    to unselected metrics alone (``{mse: watch_time, auc: click}`` with ``--metrics auc``): the user
    asked for those metrics, so such a task is left out of the run, and the note says which (the
    Python API, given its tasks explicitly, still refuses a task no metric reads, as the module does).

    Args:
        tasks: the file's ``tasks``, as written.
        metrics: the metrics to run (names, or a mapping ``name -> options``).
        metric_tasks: the file's ``metric_tasks``, kept for the selected metrics.

    Returns:
        ``None`` when every task is read (a selected metric without an entry reads every task), or when
        the entries name a task the file does not have (``evaluate`` refuses it, naming the closest);
        else the tasks read, in the file's order, and the note.
    """
    if not metric_tasks:
        return None
    try:
        specs = _tasks(tasks)
    except (TypeError, ValueError):  # evaluate says what is wrong with them
        return None
    selected = list(dict.fromkeys(metrics))
    if any(name not in metric_tasks for name in selected):
        return None
    read = {task for name in selected for task in metric_tasks[name]}
    names = [spec.name for spec in specs]
    left = [name for name in names if name not in read]
    if not left or not read <= set(names):
        return None
    listed = ", ".join(repr(name) for name in left)
    note = (
        f"task{'s' if len(left) > 1 else ''} {listed} of the config file left out: its metric_tasks gives "
        f"{'them' if len(left) > 1 else 'it'} to no metric --metrics selects ({', '.join(selected)}); add such a "
        f"metric to --metrics to score {'them' if len(left) > 1 else 'it'}"
    )
    return [spec for spec in specs if spec.name in read], note


def _check(key: str, value: Any, base: str) -> Any:
    """``value`` of ``key`` checked (``None``: the key's default, as if it were left out)."""
    if value is None and key not in ("tasks", "metrics", "paths"):
        return None
    if key == "paths":
        paths = [value] if isinstance(value, str) and value else value
        if not _names(paths):
            raise _wrong(key, "a path or a non-empty list of paths (files, directories or globs)", value)
        return [os.path.join(base, p) for p in paths]
    if key in ("tasks", "metrics"):
        try:
            if key == "tasks":
                _tasks(value)  # checked up front; kept as written, so evaluate sees tasks given by name
                return value
            for key_, (name, options) in _metric_options(value).items():  # as evaluate checks them, up front
                if options:  # from_logits may still come from the command line: evaluate checks it against that
                    _build_entry(key_, name, options, 1, builder="evaluate")
            return value
        except (TypeError, ValueError) as err:
            raise ValueError(f"key {key!r}: {err}") from None
    if key == "metric_tasks":
        return _metric_tasks(value)
    if key in ("weights", "user", "session", "output"):
        if not (isinstance(value, str) and value):
            raise _wrong(key, "a column name" if key != "output" else "a .json, .csv or .parquet path", value)
        return os.path.join(base, value) if key == "output" else value
    if key == "by":
        expected = "a segment column name, a list of them, or a list of such lists (several segmentations)"
        if _several(value):  # several segmentations: each a list of columns, as written
            try:
                return [list(columns) for columns in _segmentations(value, key="by")]
            except ValueError as err:
                raise ValueError(f"key {key!r}: {err}") from None
        try:
            by = _segment_columns(value)  # evaluate's rule: one column as a string, as `--by country`
        except ValueError:
            by = ()
        if not by:  # an empty list in the file is a mistake: leave the key out for no segments
            raise _wrong(key, expected, value)
        try:  # a column listed twice: up front, as for several segmentations
            _segmentations(list(by), key="by")
        except ValueError as err:
            raise ValueError(f"key {key!r}: {err}") from None
        return value if isinstance(value, str) else list(by)  # a string's commas: evaluate's rule, as --by's
    if key in ("from_logits", "progress"):
        if not isinstance(value, bool):
            raise _wrong(key, "true or false", value)
        return value
    if key == "ignore_index":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _wrong(key, "a finite number (the label of padded rows, e.g. -100)", value)
        return value
    if key == "on_invalid":
        if value not in ON_INVALID:
            raise _wrong(key, f"one of {list(ON_INVALID)}", value)
        return value
    # batch_size
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if whole_float(value) is not None:  # a file's `1e3` is a float: say how to write the integer
            raise ValueError(f"key {key!r}: expected a positive integer, got {int_given(value, 1)}")
        raise _wrong(key, "a positive integer", value)
    return value
