"""Offline evaluation: score logged predictions in Parquet/CSV files, a ``pyarrow.Table`` or a DataFrame.

``torchmetrics-ext evaluate`` and :func:`evaluate` stream the data in record batches through the
same :class:`~torchmetrics_ext.RecMetricModule` and metric-name registry that training uses, so
offline and online numbers are the same code. Needs the ``evaluate`` extra (pyarrow).
"""

try:
    import pyarrow  # noqa: F401
except ImportError as err:  # the one dependency the core install lacks: say where it comes from
    raise ImportError(
        "torchmetrics_ext.evaluate needs pyarrow, from the `evaluate` extra: pip install 'torchmetrics-ext[evaluate]' "
        "(from a clone: pip install -e '.[evaluate]')."
    ) from err

from torchmetrics_ext.evaluate.checks import Problem
from torchmetrics_ext.evaluate.notes import ResultCaveatWarning, UnreadWeightsWarning
from torchmetrics_ext.evaluate.report import EvaluationResult
from torchmetrics_ext.evaluate.runner import DEFAULT_METRICS, TaskSpec, evaluate, parse_task
from torchmetrics_ext.evaluate.sources import InvalidDataError

__all__ = [
    "DEFAULT_METRICS",
    "EvaluationResult",
    "InvalidDataError",
    "Problem",
    "ResultCaveatWarning",
    "TaskSpec",
    "UnreadWeightsWarning",
    "evaluate",
    "parse_task",
]
