"""The one registry of metric names, shared by :meth:`RecMetricModule.from_config` and the command line.

A name is either a plain metric name (``"ne"``, ``"auc"``, ``"gauc"``, ``"mse"``) or a ranking
name with a cutoff, ``"<metric>@<k>"`` (``"ndcg@10"``, ``"recall@20"``, ``"mrr@10"``); ``"ndcg"``,
``"mrr"`` and ``"map"`` without a cutoff rank the whole list. Pointwise thresholded metrics carry
a ``weighted_`` prefix (``"weighted_recall"``) so they are never confused with the ranking
``"recall@k"``; a bare ``"recall"`` or ``"precision"`` is rejected with both spellings in the
message. Unknown names raise a ``ValueError`` that lists every known name, the ranking ones as
templates (``"ndcg@k"``, ``k`` standing for a positive integer: ``"ndcg@10"``).

Each entry also records the keys TorchRec gives the same quantity (:class:`TorchRecKey`), so
``RecMetricModule(key_style="torchrec")`` emits the keys TorchRec dashboards expect
(``ne-{task}|lifetime_ne``). A TorchRec key holds TorchRec's value, never another quantity of ours:
an entry gives it only to instances built with the options that compute TorchRec's definition
(``LogLoss(unit="bits")`` for TorchRec's ``logloss``, ``NDCG(empty_target_action="zero",
queries_complete_per_batch=True)`` for its ``ndcg``, ``GroupedAUC(groups_complete_per_batch=True)``
for its ``gauc``, whose sessions are each batch's). Metrics TorchRec does not have (``"recall@k"``,
``"precision@k"``: per-query means, where TorchRec's ``recall_session_level`` and
``precision_session_level`` pool counts over sessions; ``"mrr@k"``, ...) and instances built with
other options are keyed by their name in the module; that name must not be a TorchRec key itself
(:data:`TORCHREC_SELF_NAMED`).
"""

from __future__ import annotations

import difflib
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
from torchmetrics_ext.metrics import session_pairwise as _session_pairwise
from torchmetrics_ext.utilities.checks import as_int, int_given
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.wrappers.segmented import Segmented

__all__ = [
    "TORCHREC_SELF_NAMED",
    "MetricEntry",
    "TorchRecKey",
    "build_metric",
    "lookup",
    "metric_names",
    "registry_entry",
    "torchrec_name_hint",
    "torchrec_names",
    "torchrec_requirements",
]

# TorchRec's names that are both a metric namespace (``MetricNamespace``) and a metric name
# (``MetricName``), 1.9.2's and newer ones: ``f"{x}-{task}|lifetime_{x}"`` reads as TorchRec's key of its
# metric ``x``, so a metric keyed by its own name (``(name, name)``) may not take one of these names unless it is
# TorchRec's metric (tests/test_registry.py checks the list against TorchRec's enums).
TORCHREC_SELF_NAMED = frozenset(
    {
        "accuracy",
        "auc",
        "auprc",
        "calibration",
        "cali_free_ne",
        "ctr",
        "gauc",
        "hindsight_target_pr",
        "mae",
        "mse",
        "multi_label_precision",
        "multiclass_recall",
        "ndcg",
        "ne",
        "ne_positive",
        "nmse",
        "num_missing_labels",
        "num_positive_samples",
        "output",
        "precision",
        "precision_session_level",
        "qps",
        "rauc",
        "recall",
        "recall_session_level",
        "scalar",
        "segmented_ne",
        "serving_ae_loss",
        "serving_calibration",
        "serving_ne",
        "sum_weights",
        "tensor_weighted_avg",
        "throughput",
        "unweighted_ne",
        "weighted_avg",
        "weighted_sum_predictions",
        "xauc",
    }
) | frozenset(
    # newer TorchRec's self-named metrics (after 1.9.2): a module metric named so but computing something
    # else would be logged under TorchRec's key for it
    {"session_pairwise_auc"}
)
_NEWER_SELF_NAMED = frozenset({"session_pairwise_auc"})  # the above, for the test against TorchRec 1.9.2's enums
_MISSING = object()


@dataclass(frozen=True)
class TorchRecKey:
    """TorchRec's key for a metric class, given to the instances that compute TorchRec's definition.

    Attributes:
        namespace: TorchRec's namespace (``"ne"`` in ``ne-{task}|lifetime_logloss``).
        name: TorchRec's metric name (``"logloss"``).
        options: ``((attribute, value), ...)`` an instance must have to compute TorchRec's value
            (``(("unit", "bits"),)`` for ``LogLoss``); with other values it computes another
            quantity and is keyed by its own name.

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext.registry import registry_entry
        >>> key = registry_entry(tmx.LogLoss()).torchrec[0]
        >>> key
        TorchRecKey(namespace='ne', name='logloss', options=(('unit', 'bits'),))
        >>> key.matches(tmx.LogLoss()), key.matches(tmx.LogLoss(unit="bits"))  # nats are not TorchRec's
        (False, True)
        >>> key.describe(tmx.LogLoss)
        "LogLoss(unit='bits')"
    """

    namespace: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def matches(self, metric: Metric) -> bool:
        """Whether ``metric`` is built with :attr:`options` (so computes TorchRec's value)."""
        return all(getattr(metric, attr, _MISSING) == value for attr, value in self.options)

    def describe(self, cls: type[Metric]) -> str:
        """``LogLoss(unit='bits')``: the class with the options that compute TorchRec's value."""
        return f"{cls.__name__}({', '.join(f'{a}={v!r}' for a, v in self.options)})"


@dataclass(frozen=True)
class MetricEntry:
    """One registry entry.

    Attributes:
        name: the registry name (``"ne"``), or the stem of a ranking name (``"ndcg"`` for ``"ndcg@k"``).
        cls: the metric class built.
        torchrec: TorchRec's keys for instances of ``cls`` (:class:`TorchRecKey`), the first one whose
            options an instance has applies; empty when TorchRec has no such metric.
        cutoff: ``"none"`` (no ``@k``), ``"optional"`` (``"ndcg"`` or ``"ndcg@k"``) or ``"required"``.
        defaults: keyword arguments the name implies (``{"num_bins": ...}`` for a binned alias).
        wraps: for a :class:`~torchmetrics_ext.Segmented` entry (``"segmented_ne"``), the class it
            splits by segment: ``build`` makes ``Segmented(wraps(num_tasks, **options), num_segments)``
            (``num_segments`` required, every other option the wrapped metric's).

    Examples:
        >>> from torchmetrics_ext.registry import lookup
        >>> entry, k = lookup("ndcg@10")
        >>> entry.name, entry.cls.__name__, entry.cutoff, k
        ('ndcg', 'NDCG', 'optional', 10)
        >>> entry.build(num_tasks=2, k=k).k  # a ranking metric: one instance per task, no task dimension
        10
        >>> entry, k = lookup("ne")
        >>> entry.build(num_tasks=2, k=k).num_tasks
        2
    """

    name: str
    cls: type[Metric]
    torchrec: tuple[TorchRecKey, ...]
    cutoff: str = "none"
    defaults: tuple[tuple[str, Any], ...] = ()
    wraps: type[Metric] | None = None

    def build(self, num_tasks: int, k: int | None, **kwargs: Any) -> Metric:
        """An instance for ``num_tasks`` tasks (ranking metrics have no task dimension: one per task)."""
        options = dict(self.defaults) | kwargs
        if self.wraps is not None:
            if "num_segments" not in options:
                raise ValueError(
                    f"Metric {self.name!r} needs the option `num_segments` (the number of segment ids, "
                    f"{{'{self.name}': {{'num_segments': 4}}}}); the ids come from the tasks' group_id_name column."
                )
            num_segments = options.pop("num_segments")
            return Segmented(self.wraps(num_tasks=num_tasks, **options), num_segments)  # type: ignore[arg-type]
        if self.cutoff != "none":
            return self.cls(k=k, **options)
        if not getattr(self.cls, "has_task_dim", True):
            return self.cls(**options)
        return self.cls(num_tasks=num_tasks, **options)


def _key(namespace: str, name: str, **options: Any) -> tuple[TorchRecKey, ...]:
    return (TorchRecKey(namespace, name, tuple(options.items())),)


_UNWEIGHTED_GROUPS = {"weight_groups": False}  # TorchRec averages its groups with equal weights
_ENTRIES = (
    MetricEntry("ne", _pointwise.NormalizedEntropy, _key("ne", "ne")),
    # TorchRec's logloss is in bits; ours defaults to nats (scikit-learn's)
    MetricEntry("log_loss", _pointwise.LogLoss, _key("ne", "logloss", unit="bits")),
    MetricEntry("calibration", _pointwise.Calibration, _key("calibration", "calibration")),
    MetricEntry("ctr", _pointwise.CTR, _key("ctr", "ctr")),
    MetricEntry("weighted_average", _pointwise.WeightedAverage, _key("weighted_avg", "weighted_avg")),
    MetricEntry("accuracy", _pointwise.WeightedAccuracy, _key("accuracy", "accuracy")),
    MetricEntry("weighted_precision", _pointwise.WeightedPrecision, _key("precision", "precision")),
    MetricEntry("weighted_recall", _pointwise.WeightedRecall, _key("recall", "recall")),
    MetricEntry("mse", _pointwise.WeightedMSE, _key("mse", "mse")),
    MetricEntry("rmse", _pointwise.WeightedRMSE, _key("mse", "rmse")),
    MetricEntry("mae", _pointwise.WeightedMAE, _key("mae", "mae")),
    MetricEntry("r_squared", _regression.WeightedR2, _key("mse", "r_squared")),
    MetricEntry("nmse", _regression.WeightedNMSE, _key("nmse", "nmse", baseline="one")),
    MetricEntry("nrmse", _regression.WeightedNRMSE, _key("nmse", "nrmse", baseline="one")),
    MetricEntry("ne_positive", _entropy.NEPositive, _key("ne_positive", "ne_positive")),
    MetricEntry(
        "cali_free_ne", _entropy.CalibrationFreeNE, _key("cali_free_ne", "cali_free_ne", torchrec_scaling=True)
    ),
    MetricEntry("recalibrated_ne", _entropy.RecalibratedNE, _key("recalibrated_ne", "ne")),
    MetricEntry(
        "recalibrated_calibration", _entropy.RecalibratedCalibration, _key("recalibrated_calibration", "calibration")
    ),
    MetricEntry("label_average", _counters.LabelAverage, _key("average", "label_average")),
    MetricEntry("sum_weights", _counters.SumWeights, _key("sum_weights", "sum_weights")),
    MetricEntry(
        "num_positive_samples", _counters.NumPositiveSamples, _key("num_positive_samples", "num_positive_samples")
    ),
    MetricEntry(
        "weighted_sum_predictions",
        _counters.WeightedSumPredictions,
        _key("weighted_sum_predictions", "weighted_sum_predictions"),
    ),
    MetricEntry("auc", _auc.AUC, _key("auc", "auc")),
    MetricEntry("auprc", _auc.AUPRC, _key("auprc", "auprc")),
    # TorchRec has two grouped AUCs: its AUC metric's grouped_auc averages every group (a single-class
    # group counting 0.5) over the samples of its window, so a group joins its rows across batches (our
    # exact mode); its GAUCMetric (namespace gauc) averages the groups holding both classes and scores
    # each batch's sessions apart (a session id seen in two batches is two sessions), as
    # groups_complete_per_batch=True does
    MetricEntry(
        "gauc",
        _auc.GroupedAUC,
        _key("auc", "grouped_auc", average_groups="all", groups_complete_per_batch=False, **_UNWEIGHTED_GROUPS)
        + _key("gauc", "gauc", average_groups="defined", groups_complete_per_batch=True, **_UNWEIGHTED_GROUPS),
    ),
    MetricEntry(
        "gauprc",
        _auc.GroupedAUPRC,
        _key("auprc", "grouped_auprc", average_groups="all", groups_complete_per_batch=False, **_UNWEIGHTED_GROUPS),
    ),
    # TorchRec's RAUC (label ties in the denominator, weights ignored) and XAUC (pairs within each batch)
    # compute other quantities, and no option turns those differences off: no TorchRec key, so keyed by
    # their own names ("xauc", TorchRec's key itself, is refused under key_style="torchrec": rename it)
    # TorchRec's segmented_ne: NE per segment id (its `grouping_keys` column: the tasks' group_id_name)
    MetricEntry("segmented_ne", Segmented, _key("segmented_ne", "segmented_ne"), wraps=_pointwise.NormalizedEntropy),
    MetricEntry("regression_auc", _auc.RegressionAUC, ()),
    # newer TorchRec's session_pairwise_auc (not in 1.9.2): pairs within each batch's sessions, read from the
    # tasks' session_id_name column; its options (rank_order_label, weight_pairs) are TorchRec's own, each
    # computing TorchRec's value for that option, so every instance takes TorchRec's key
    MetricEntry(
        "session_pairwise_auc",
        _session_pairwise.SessionPairwiseAUC,
        _key("session_pairwise_auc", "session_pairwise_auc"),
    ),
    MetricEntry("xauc", _auc.XAUC, ()),
    # TorchRec counts a session without relevance as NDCG 0 and scores each batch's sessions apart
    MetricEntry(
        "ndcg",
        _ranking.NDCG,
        _key("ndcg", "ndcg", empty_target_action="zero", queries_complete_per_batch=True),
        cutoff="optional",
    ),
    # not TorchRec metrics: keyed by their names in the module (TorchRec's recall_session_level and
    # precision_session_level pool counts over sessions: SessionRecallAtK(average="micro"), standalone)
    MetricEntry("mrr", _ranking.MRR, (), cutoff="optional"),
    MetricEntry("map", _ranking.MAP, (), cutoff="optional"),
    MetricEntry("recall", _ranking.RecallAtK, (), cutoff="required"),
    MetricEntry("precision", _ranking.PrecisionAtK, (), cutoff="required"),
    MetricEntry("hit_rate", _ranking.HitRate, (), cutoff="required"),
    MetricEntry("f1", _ranking.F1AtK, (), cutoff="required"),
    MetricEntry("r_precision", _ranking.RPrecision, ()),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}
_NAME = re.compile(r"([a-z][a-z0-9_]*)(?:@([0-9]+))?")  # used with fullmatch: `$` would allow a trailing newline


def metric_names() -> list[str]:
    """Every name the registry knows, ranking stems shown with their cutoff form (``"ndcg@k"``).

    ``"ndcg@k"`` is a template, not a name: ``k`` stands for a positive integer cutoff
    (``"ndcg@10"``); :func:`lookup` refuses the template itself, saying so.

    Examples:
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


def _suggestion(entry: MetricEntry, cutoff: str) -> str:
    """A name for ``entry`` that :func:`lookup` accepts, keeping the ``cutoff`` typed (``"@10"``) where it can.

    A cutoff on a metric that takes none is dropped; a missing or invalid one (``"@0"``, ``"@k"``)
    becomes ``@10`` where the metric needs one, or where one was typed.
    """
    if entry.cutoff == "none":
        return entry.name
    if re.fullmatch(r"@[0-9]+", cutoff) and int(cutoff[1:]) > 0:
        return entry.name + cutoff
    return f"{entry.name}@10" if cutoff or entry.cutoff == "required" else entry.name


def _snake_case(name: str) -> str:
    """A class name in snake case: ``"GroupedAUC"`` -> ``"grouped_auc"``, ``"NEPositive"`` -> ``"ne_positive"``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _class_spellings() -> dict[str, str]:
    """The registry name of each class, under the spellings of the class and its functional twin.

    ``"normalizedentropy"`` (the class name, lowered) and ``"normalized_entropy"`` (the function)
    -> ``"ne"``; ``"groupedauc"`` / ``"grouped_auc"`` -> ``"gauc"``. The first entry of a class
    without implied options wins (``"auc"``, not a binned alias).
    """
    spellings: dict[str, str] = {}
    for entry in _ENTRIES:
        if entry.defaults:
            continue
        for spelling in (entry.cls.__name__.lower(), _snake_case(entry.cls.__name__).removesuffix("_at_k")):
            spellings.setdefault(spelling, entry.name)
    return spellings


def _closest(stem: str) -> str | None:
    """The known name an unknown ``stem`` most likely meant (``None``: none close enough).

    The same name in another case ("AUC", "NDCG"), a class's or function's name
    ("NormalizedEntropy", "normalized_entropy", "GroupedAUC"), the same letters swapped ("acu"),
    else the closest spelling (not "ne" for "nope").
    """
    low = stem.lower()
    # a function's cutoff suffix: "map_at_k", "recall_at" (of "recall_at_10", its digits split off)
    for bare in (low, low.removesuffix("_at_k"), low.removesuffix("_at")):
        if bare in _BY_NAME:
            return bare
        if bare in _CLASS_SPELLINGS:
            return _CLASS_SPELLINGS[bare]
    # another library's name for one of ours, before any spelling guess: by spelling, "auroc" is nearest to
    # "auprc" and "average_precision" to "r_precision", other metrics than the ones those names stand for
    squashed = re.sub(r"[^a-z0-9]", "", _snake_case(stem))
    for bare in (squashed, squashed.removeprefix("binary"), squashed.removeprefix("retrieval")):
        known = _OTHER_NAMES.get(bare) or _BY_NAME.get(bare) or _CLASS_SPELLINGS.get(bare)
        if known is not None and bare:
            return known.name if isinstance(known, MetricEntry) else known
    swapped = [known for known in _BY_NAME if sorted(known) == sorted(low)]
    if swapped:
        return swapped[0]
    guess = difflib.get_close_matches(low, list(_BY_NAME), n=1, cutoff=0.75)
    if guess:
        return guess[0]
    guess = difflib.get_close_matches(low, list(_CLASS_SPELLINGS), n=1, cutoff=0.85)  # "normalised_entropy"
    return _CLASS_SPELLINGS[guess[0]] if guess else None


_CLASS_SPELLINGS = _class_spellings()

# names of our metrics in other libraries (scikit-learn, TorchMetrics' classes without their `Binary`/`Retrieval`
# prefix, papers), written without separators: what an unknown name that is one of them suggests
_OTHER_NAMES = {
    **dict.fromkeys(("auroc", "rocauc", "aucroc", "roc"), "auc"),
    **dict.fromkeys(("prauc", "aucpr", "averageprecision", "averageprecisionscore"), "auprc"),
    **dict.fromkeys(("gauroc", "groupauc", "groupedauroc", "userauc", "uauc"), "gauc"),
    **dict.fromkeys(("hit", "hits", "hr", "hitratio"), "hit_rate"),
    **dict.fromkeys(("bce", "bceloss", "binarycrossentropy", "crossentropy", "logisticloss"), "log_loss"),
    **dict.fromkeys(("normalizeddcg", "dcg"), "ndcg"),
    "meanreciprocalrank": "mrr",
    "meanaverageprecision": "map",
    **dict.fromkeys(("r2", "r2score"), "r_squared"),
    "meansquarederror": "mse",
    "meanabsoluteerror": "mae",
    "rootmeansquarederror": "rmse",
}

# rates that are no registry entry: where they are (a name that looks like one gets this instead of a guess)
_RATE_NAMES = frozenset(
    [
        "qps",
        "tower_qps",
        "towerqps",
        "lifetime_qps",
        "window_qps",
        "throughput",
        "lifetime_throughput",
        "window_throughput",
    ]
)
_RATE_HINT = (
    " (examples per second are no registry metric: RecMetricModule counts them with its `throughput=True` "
    "option (Throughput, lifetime and window rates), and tmx.TowerQPS is the per-task rate as a standalone "
    "metric, not built by the registry)"
)


# TorchRec metrics (and our classes for them) that read inputs the module's prediction, label and weight
# columns do not give: no registry entry builds them, so their names would only get the list of known names.
# Keyed by the name without separators, in lower case; the value: our class and the input it needs.
_STANDALONE = "; use it as a standalone metric (docs/migration_torchrec.md)"
_STANDALONE_NAMES = {
    **dict.fromkeys(
        ("multiclassrecall", "multiclassrecallatk"),
        "tmx.MulticlassRecallAtK, which reads (N, C) class scores" + _STANDALONE,
    ),
    **dict.fromkeys(
        ("precisionsessionlevel", "sessionprecisionatk"),
        "tmx.SessionPrecisionAtK, which reads session ids" + _STANDALONE,
    ),
    **dict.fromkeys(
        ("recallsessionlevel", "sessionrecallatk"), "tmx.SessionRecallAtK, which reads session ids" + _STANDALONE
    ),
    "multilabelprecision": "tmx.MultiLabelPrecision, which reads bit-encoded label sets" + _STANDALONE,
    "nummissinglabels": "tmx.NumMissingLabels, which counts NaN labels (the module rejects them)" + _STANDALONE,
    **dict.fromkeys(
        ("tensorweightedavg", "tensorweightedaverage"),
        "tmx.TensorWeightedAverage, which reads a named model output" + _STANDALONE,
    ),
    "hindsighttargetpr": "tmx.HindsightTargetPR: build it and give the object to RecMetricModule's `metrics`",
}

# TorchRec metrics newer than 1.9.2 (and 1.9.2's unweighted_ne), which from_torchrec_config (1.9.2's metrics and
# session_pairwise_auc) does not build: what gives their value here (docs/migration_torchrec.md, "TorchRec after
# 1.9.2"). Keyed as _STANDALONE_NAMES; the value follows "TorchRec's metric of that name". The registry's own names
# among them (session_pairwise_auc) are found by `lookup` before any hint.
_TORCHREC_NAMES = {
    "uauc": (
        "is the registry's 'gauc' with the option groups_complete_per_batch=True (each batch's users scored apart, "
        "as TorchRec does): {'gauc': {'groups_complete_per_batch': True}}"
    ),
    "wuauc": (
        "is the registry's 'gauc' with the options groups_complete_per_batch=True and weight_groups=True: "
        "{'gauc': {'groups_complete_per_batch': True, 'weight_groups': True}}"
    ),
    "sessionpairwiseauc": (
        "is the registry's 'session_pairwise_auc' (tmx.SessionPairwiseAUC), which reads the session ids of the "
        "tasks' session_id_name column: build it with RecMetricModule.from_config, e.g. "
        "{'tasks': [{'name': 'click', 'session_id_name': 'session_id'}], 'metrics': ['session_pairwise_auc']}, "
        "or from_torchrec_config (its session_key column)"
    ),
    "unweightedne": "is 'ne' on a task whose weight_name is None (a second task on the same label and prediction)",
    "variance": (
        "is tmx.aggregation.Distribution over a task's labels (its std squared is their sample variance, its mean "
        "TorchRec's `scalar` key); use it as a standalone metric"
    ),
}


def torchrec_name_hint(name: str) -> str | None:
    """What computes the TorchRec metric ``name`` when no registry entry of that name does, or ``None``.

    Read without case or separators (``"session_pairwise_auc"``, ``"SessionPairwiseAUC"``). The metrics
    that read inputs no module column gives name our class; TorchRec's metrics newer than 1.9.2 name
    the registry entry and options that compute them, or say that nothing here does.

    Examples:
        >>> from torchmetrics_ext.registry import torchrec_name_hint
        >>> "tmx.NumMissingLabels" in torchrec_name_hint("num_missing_labels")
        True
        >>> "groups_complete_per_batch=True" in torchrec_name_hint("uauc")
        True
        >>> torchrec_name_hint("ne") is None
        True
    """
    if not isinstance(name, str):
        raise WrongTypeError(f"Expected `name` to be a metric name (str), got {name!r} ({type(name).__name__}).")
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    standalone = _STANDALONE_NAMES.get(key)
    if standalone is not None:
        return f"TorchRec's metric of that name is {standalone}"
    newer = _TORCHREC_NAMES.get(key)
    return None if newer is None else f"TorchRec's metric of that name {newer}"


def _unknown_hint(stem: str, guess: str | None, cutoff: str) -> str:
    """What an unknown name's error adds: where a rate or a TorchRec metric of that name is, else the closest name."""
    # read as `_closest` reads a name (any case) and as the command line passes it (stripped), a run of
    # spaces, dashes or underscores inside as one "_": "Throughput ", " tower  qps", "tower_ qps" and "Tower-QPS"
    # are rates too
    if re.sub(r"[\s_-]+", "_", stem.strip().lower()) in _RATE_NAMES:
        return _RATE_HINT
    torchrec = torchrec_name_hint(stem)
    if torchrec is not None:
        standalone = re.sub(r"[^a-z0-9]", "", stem.lower()) in _STANDALONE_NAMES
        return f" (no registry metric{'' if standalone else ' of that name'}; {torchrec})"
    return f" (did you mean {_suggestion(_BY_NAME[guess], cutoff)!r}?)" if guess else ""


def lookup(name: str) -> tuple[MetricEntry, int | None]:
    """The registry entry and cutoff a name stands for.

    Args:
        name: ``"ne"``, ``"auc"``, ``"ndcg@10"``, ``"recall@20"``, ...

    Returns:
        ``(entry, k)`` with ``k`` the cutoff (``None`` without ``@k``).

    Raises:
        ValueError: for an unknown or ambiguous name, a cutoff where none applies, or a cutoff
            that is not a positive integer (the template ``"ndcg@k"`` itself: its ``k`` stands for
            one); the message lists the known names.

    Examples:
        >>> from torchmetrics_ext.registry import lookup
        >>> entry, k = lookup("ndcg@10")
        >>> entry.cls.__name__, k
        ('NDCG', 10)
    """
    if not isinstance(name, str):
        raise WrongTypeError(f"Expected a metric name (str), got {type(name).__name__}.")
    match = _NAME.fullmatch(name)
    entry = _BY_NAME.get(match.group(1)) if match else None
    known = f"{', '.join(metric_names())} (k: a positive integer cutoff, as in ndcg@10)"
    stem, at, _ = name.partition("@")
    if match is None and at and stem in _BY_NAME:  # a known stem, a cutoff not in digits ("ndcg@k")
        if _BY_NAME[stem].cutoff == "none":
            raise ValueError(f"Metric {stem!r} takes no cutoff, got {name!r}; known names: {known}.")
        raise ValueError(
            f"Expected a positive integer cutoff in {name!r} (the `k` of {stem}@k stands for it: {stem}@10 for the "
            f"top 10); known names: {known}."
        )
    if match is None or entry is None:
        # a cutoff written without its '@' ("ndcg10", "recall_20", "MRR-5"): the name at that cutoff
        glued = re.fullmatch(r"(.*?[a-z])[ _-]?([0-9]+)", stem, re.IGNORECASE) if not at else None
        guess = _closest(glued.group(1)) if glued else None
        cutoff = f"@{glued.group(2)}" if glued and guess else name[len(stem) :]
        guess = guess or _closest(stem)
        raise ValueError(f"Unknown metric name {name!r}{_unknown_hint(stem, guess, cutoff)}; known names: {known}.")
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
            metric's ``k=`` is its cutoff, as ``name@k`` (both, if different, are an error);
            ``k=None`` (YAML's ``k: null``) is the whole list, for the names that rank it without a
            cutoff (``"ndcg"``, ``"mrr"``, ``"map"``: the classes' default).

    Returns:
        A fresh metric.

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad arguments: a ``k`` that
            is not a positive integer (or ``None`` where the name allows the whole list), a ``k``
            for a name without a cutoff, or one that differs from the name's ``@k``.

    Examples:
        >>> from torchmetrics_ext.registry import build_metric
        >>> build_metric("auc", num_tasks=2, num_bins=1000).num_bins
        1000
        >>> build_metric("recall@20").k
        20
        >>> build_metric("ndcg", k=None).k is None  # the whole list, as NDCG(k=None)
        True
    """
    if "k" not in kwargs:
        entry, k = lookup(name)
        return entry.build(num_tasks, k, **kwargs)
    given = kwargs.pop("k")  # the cutoff as an option: "recall" with k=5 is "recall@5"
    if given is None:  # the whole list: only where the name allows no cutoff
        entry, k = lookup(name)
        if entry.cutoff == "none":
            raise ValueError(f"Metric {entry.name!r} takes no cutoff, got `k=None`.")
        if k is not None:
            raise ValueError(f"Metric {name!r} names its cutoff ({k}); got `k=None` (the whole list) too: give one.")
        return entry.build(num_tasks, None, **kwargs)
    value = as_int(given)
    if value is None or value < 1:
        raise refusal(
            f"Expected `k` of metric {name!r} to be a positive integer (its cutoff) or None (the whole list, for "
            f"{', '.join(e.name for e in _ENTRIES if e.cutoff == 'optional')}), got {int_given(given, 1)}.",
            wrong_type=value is None,
        )
    entry, k = lookup(name if "@" in name else f"{name}@{value}")
    if "@" in name and value != k:
        raise ValueError(f"Metric {name!r} names its cutoff ({k}); got `k={given!r}` too: give one of them.")
    return entry.build(num_tasks, k, **kwargs)


def registry_entry(metric: Metric) -> MetricEntry | None:
    """The registry entry of a metric instance's class (``None`` for a class the registry does not build).

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics.aggregation import MeanMetric
        >>> from torchmetrics_ext.registry import registry_entry
        >>> entry = registry_entry(tmx.LogLoss(unit="bits"))
        >>> entry.name, entry.cls.__name__
        ('log_loss', 'LogLoss')
        >>> registry_entry(MeanMetric()) is None  # TorchMetrics' own class
        True
    """
    for entry in _ENTRIES:
        if type(metric) is entry.cls and (entry.wraps is None or type(getattr(metric, "metric", None)) is entry.wraps):
            return entry
    return None


def torchrec_names(metric: Metric) -> tuple[str, str] | None:
    """TorchRec's ``(namespace, metric name)`` for a metric instance, if it computes TorchRec's metric.

    ``None`` for a class TorchRec does not have, and for an instance built with options that
    compute another quantity than TorchRec's (``LogLoss()`` in nats: TorchRec's ``logloss`` is in
    bits).

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext.registry import torchrec_names
        >>> torchrec_names(tmx.LogLoss(unit="bits")), torchrec_names(tmx.LogLoss())
        (('ne', 'logloss'), None)
        >>> torchrec_names(tmx.RecallAtK(5)) is None  # TorchRec's recall_session_level pools sessions
        True
    """
    entry = registry_entry(metric)
    for key in entry.torchrec if entry is not None else ():
        if key.matches(metric):
            return key.namespace, key.name
    return None


def torchrec_requirements(metric: Metric, name: str | None = None) -> str | None:
    """How to build ``metric``'s class as TorchRec's metric (``"LogLoss(unit='bits')"``); ``None``: it cannot be.

    Args:
        metric: an instance of a registry class.
        name: TorchRec's metric name wanted (``"gauc"``): only the ways to compute that one are
            given when the class has any (``GroupedAUC`` is TorchRec's ``gauc`` or its AUC's
            ``grouped_auc``, depending on its options); every way otherwise.

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext.registry import torchrec_requirements
        >>> torchrec_requirements(tmx.LogLoss())  # in nats here; TorchRec's logloss is in bits
        "LogLoss(unit='bits')"
        >>> torchrec_requirements(tmx.GroupedAUC(), "gauc")
        "GroupedAUC(average_groups='defined', groups_complete_per_batch=True, weight_groups=False)"
        >>> torchrec_requirements(tmx.RecallAtK(5)) is None  # TorchRec's session recall pools sessions
        True
    """
    entry = registry_entry(metric)
    if entry is None or not entry.torchrec:
        return None
    keys = [key for key in entry.torchrec if key.name == name] or entry.torchrec
    return " or ".join(key.describe(entry.cls) for key in keys)
