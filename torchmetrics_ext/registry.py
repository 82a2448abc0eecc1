"""The one registry of metric names, shared by :meth:`RecMetricModule.from_config` and the command line.

A name is either a plain metric name (``"ne"``, ``"auc"``, ``"gauc"``, ``"mse"``) or a ranking
name with a cutoff, ``"<metric>@<k>"`` (``"ndcg@10"``, ``"recall@20"``, ``"mrr@10"``); ``"ndcg"``,
``"mrr"`` and ``"map"`` without a cutoff rank the whole list. Pointwise thresholded metrics carry
a ``weighted_`` prefix (``"weighted_recall"``) so they are never confused with the ranking
``"recall@k"``; a bare ``"recall"`` or ``"precision"`` is rejected with both spellings in the
message. Unknown names raise a ``ValueError`` that lists every known name.

Each entry also records the namespace and metric name TorchRec uses for the same quantity, so
``RecMetricModule(key_style="torchrec")`` emits the keys TorchRec dashboards expect
(``ne-{task}|lifetime_ne``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torchmetrics import Metric

from torchmetrics_ext.metrics import auc as _auc
from torchmetrics_ext.metrics import counters as _counters
from torchmetrics_ext.metrics import entropy as _entropy
from torchmetrics_ext.metrics import pointwise as _pointwise
from torchmetrics_ext.metrics import ranking as _ranking
from torchmetrics_ext.metrics import regression as _regression
from torchmetrics_ext.utilities.checks import as_int

__all__ = ["MetricEntry", "build_metric", "lookup", "metric_names", "torchrec_names"]


@dataclass(frozen=True)
class MetricEntry:
    """One registry entry.

    Attributes:
        name: the registry name (``"ne"``), or the stem of a ranking name (``"ndcg"`` for ``"ndcg@k"``).
        cls: the metric class built.
        torchrec: ``(namespace, metric name)`` of TorchRec's keys for this quantity.
        cutoff: ``"none"`` (no ``@k``), ``"optional"`` (``"ndcg"`` or ``"ndcg@k"``) or ``"required"``.
        defaults: keyword arguments the name implies (``{"num_bins": ...}`` for a binned alias).
    """

    name: str
    cls: type[Metric]
    torchrec: tuple[str, str]
    cutoff: str = "none"
    defaults: tuple[tuple[str, Any], ...] = ()

    def build(self, num_tasks: int, k: int | None, **kwargs: Any) -> Metric:
        """An instance for ``num_tasks`` tasks (ranking metrics have no task dimension: one per task)."""
        options = dict(self.defaults) | kwargs
        if self.cutoff != "none":
            return self.cls(k=k, **options)
        if not getattr(self.cls, "has_task_dim", True):
            return self.cls(**options)
        return self.cls(num_tasks=num_tasks, **options)


_ENTRIES = (
    MetricEntry("ne", _pointwise.NormalizedEntropy, ("ne", "ne")),
    MetricEntry("log_loss", _pointwise.LogLoss, ("ne", "logloss")),
    MetricEntry("calibration", _pointwise.Calibration, ("calibration", "calibration")),
    MetricEntry("ctr", _pointwise.CTR, ("ctr", "ctr")),
    MetricEntry("weighted_average", _pointwise.WeightedAverage, ("weighted_avg", "weighted_avg")),
    MetricEntry("accuracy", _pointwise.WeightedAccuracy, ("accuracy", "accuracy")),
    MetricEntry("weighted_precision", _pointwise.WeightedPrecision, ("precision", "precision")),
    MetricEntry("weighted_recall", _pointwise.WeightedRecall, ("recall", "recall")),
    MetricEntry("mse", _pointwise.WeightedMSE, ("mse", "mse")),
    MetricEntry("rmse", _pointwise.WeightedRMSE, ("mse", "rmse")),
    MetricEntry("mae", _pointwise.WeightedMAE, ("mae", "mae")),
    MetricEntry("r_squared", _regression.WeightedR2, ("mse", "r_squared")),
    MetricEntry("nmse", _regression.WeightedNMSE, ("nmse", "nmse")),
    MetricEntry("nrmse", _regression.WeightedNRMSE, ("nmse", "nrmse")),
    MetricEntry("ne_positive", _entropy.NEPositive, ("ne_positive", "ne_positive")),
    MetricEntry("cali_free_ne", _entropy.CalibrationFreeNE, ("cali_free_ne", "cali_free_ne")),
    MetricEntry("recalibrated_ne", _entropy.RecalibratedNE, ("recalibrated_ne", "ne")),
    MetricEntry(
        "recalibrated_calibration", _entropy.RecalibratedCalibration, ("recalibrated_calibration", "calibration")
    ),
    MetricEntry("label_average", _counters.LabelAverage, ("average", "label_average")),
    MetricEntry("sum_weights", _counters.SumWeights, ("sum_weights", "sum_weights")),
    MetricEntry("num_positive_samples", _counters.NumPositiveSamples, ("num_positive_samples", "num_positive_samples")),
    MetricEntry(
        "weighted_sum_predictions",
        _counters.WeightedSumPredictions,
        ("weighted_sum_predictions", "weighted_sum_predictions"),
    ),
    MetricEntry("auc", _auc.AUC, ("auc", "auc")),
    MetricEntry("auprc", _auc.AUPRC, ("auprc", "auprc")),
    MetricEntry("gauc", _auc.GroupedAUC, ("auc", "grouped_auc")),
    MetricEntry("gauprc", _auc.GroupedAUPRC, ("auprc", "grouped_auprc")),
    MetricEntry("regression_auc", _auc.RegressionAUC, ("rauc", "rauc")),
    MetricEntry("xauc", _auc.XAUC, ("xauc", "xauc")),
    MetricEntry("ndcg", _ranking.NDCG, ("ndcg", "ndcg"), cutoff="optional"),
    MetricEntry("mrr", _ranking.MRR, ("mrr", "mrr"), cutoff="optional"),
    MetricEntry("map", _ranking.MAP, ("map", "map"), cutoff="optional"),
    MetricEntry("recall", _ranking.RecallAtK, ("recall_session_level", "recall_session_level"), cutoff="required"),
    MetricEntry(
        "precision", _ranking.PrecisionAtK, ("precision_session_level", "precision_session_level"), cutoff="required"
    ),
    MetricEntry("hit_rate", _ranking.HitRate, ("hit_rate", "hit_rate"), cutoff="required"),
    MetricEntry("f1", _ranking.F1AtK, ("f1", "f1"), cutoff="required"),
    MetricEntry("r_precision", _ranking.RPrecision, ("r_precision", "r_precision")),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}
_NAME = re.compile(r"([a-z][a-z0-9_]*)(?:@([0-9]+))?")  # used with fullmatch: `$` would allow a trailing newline


def metric_names() -> list[str]:
    """Every name the registry knows, ranking stems shown with their cutoff form (``"ndcg@k"``).

    Example:
        >>> from torchmetrics_ext.registry import metric_names
        >>> "ne" in metric_names() and "recall@k" in metric_names() and "ndcg" in metric_names()
        True
    """
    names = []
    for entry in _ENTRIES:
        if entry.cutoff != "required":
            names.append(entry.name)
        if entry.cutoff != "none":
            names.append(f"{entry.name}@k")
    return names


def lookup(name: str) -> tuple[MetricEntry, int | None]:
    """The registry entry and cutoff a name stands for.

    Args:
        name: ``"ne"``, ``"auc"``, ``"ndcg@10"``, ``"recall@20"``, ...

    Returns:
        ``(entry, k)`` with ``k`` the cutoff (``None`` without ``@k``).

    Raises:
        ValueError: for an unknown or ambiguous name, or a cutoff where none applies; the
            message lists the known names.

    Example:
        >>> from torchmetrics_ext.registry import lookup
        >>> entry, k = lookup("ndcg@10")
        >>> entry.cls.__name__, k
        ('NDCG', 10)
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected a metric name (str), got {type(name).__name__}.")
    match = _NAME.fullmatch(name)
    entry = _BY_NAME.get(match.group(1)) if match else None
    known = ", ".join(metric_names())
    if match is None or entry is None:
        raise ValueError(f"Unknown metric name {name!r}; known names: {known}.")
    k = None if match.group(2) is None else int(match.group(2))
    if entry.cutoff == "none" and k is not None:
        raise ValueError(f"Metric {entry.name!r} takes no cutoff, got {name!r}; known names: {known}.")
    if entry.cutoff == "required" and k is None:
        raise ValueError(
            f"Metric name {name!r} needs a cutoff: use {name}@k for the ranking metric at cutoff k (e.g. "
            f"{name}@10)"
            + (f", or 'weighted_{name}' for the thresholded pointwise metric" if f"weighted_{name}" in _BY_NAME else "")
            + f"; known names: {known}."
        )
    if k is not None and k < 1:
        raise ValueError(f"Expected a positive cutoff in {name!r}; known names: {known}.")
    return entry, k


def build_metric(name: str, num_tasks: int = 1, **kwargs: Any) -> Metric:
    """Build the metric a registry name stands for.

    Args:
        name: a registry name (see :func:`metric_names`).
        num_tasks: number of tasks for metrics with a task dimension (ranking metrics have none:
            :class:`~torchmetrics_ext.RecMetricModule` builds one per task).
        kwargs: passed to the metric class (``num_bins=``, ``threshold=``, ``eta=``, ...); a ranking
            metric's ``k=`` is its cutoff, as ``name@k`` (both, if different, are an error).

    Returns:
        A fresh metric.

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad arguments.

    Example:
        >>> from torchmetrics_ext.registry import build_metric
        >>> build_metric("auc", num_tasks=2, num_bins=1000).num_bins
        1000
        >>> build_metric("recall@20").k
        20
    """
    if "k" in kwargs:  # the cutoff as an option: "recall" with k=5 is "recall@5"
        given = kwargs.pop("k")
        value = as_int(given)
        if value is None or value < 1:
            raise ValueError(f"Expected `k` of metric {name!r} to be a positive integer (its cutoff), got {given!r}.")
        entry, k = lookup(name if "@" in name else f"{name}@{value}")
        if "@" in name and value != k:
            raise ValueError(f"Metric {name!r} names its cutoff ({k}); got `k={given!r}` too: give one of them.")
    else:
        entry, k = lookup(name)
    return entry.build(num_tasks, k, **kwargs)


def torchrec_names(metric: Metric) -> tuple[str, str] | None:
    """TorchRec's ``(namespace, metric name)`` for a metric instance's class, if it has one."""
    for entry in _ENTRIES:
        if type(metric) is entry.cls:
            return entry.torchrec
    return None
