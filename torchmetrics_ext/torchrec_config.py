"""TorchRec's ``MetricsConfig`` read into what :meth:`RecMetricModule.from_torchrec_config` builds.

TorchRec is never imported: a ``MetricsConfig`` dataclass (from ``torchrec.metrics.metrics_config``)
is read through its fields, and the same fields as a plain dict are accepted. Each supported TorchRec
metric (:data:`TORCHREC_METRICS`) lists the values TorchRec reports for it, with the key name
TorchRec gives each, which of its keys it reports (``lifetime_``, ``window_``, or a bare name) and
the metric of this package that computes it, with the TorchRec-compatible options turned on.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchmetrics import Metric

from torchmetrics_ext.metrics import auc as _auc
from torchmetrics_ext.metrics import counters as _counters
from torchmetrics_ext.metrics import entropy as _entropy
from torchmetrics_ext.metrics import pointwise as _pointwise
from torchmetrics_ext.metrics import regression as _regression
from torchmetrics_ext.metrics import session_pairwise as _session_pairwise
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.throughput import Throughput
from torchmetrics_ext.registry import torchrec_name_hint
from torchmetrics_ext.utilities.checks import as_int, int_given
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import warn_at_user
from torchmetrics_ext.wrappers.segmented import Segmented

__all__ = ["TORCHREC_METRICS", "TorchRecPlan", "read_torchrec_config"]

GROUPING_KEYS = "grouping_keys"  # the model output TorchRec's grouped AUC/AUPRC read
SESSION_KEY = "session_id"  # the model output TorchRec's session_pairwise_auc reads by default (its `session_key`)
_BOTH = ("lifetime", "window")


@dataclass(frozen=True)
class _Value:
    """One value a TorchRec metric reports, and the metric of ours that computes it.

    Attributes:
        name: TorchRec's metric name in the key (``"ne"`` in ``ne-click|lifetime_ne``).
        build: ``build(num_tasks, arguments) -> metric`` with TorchRec's arguments of the metric.
        parts: the keys TorchRec reports: ``("lifetime", "window")``, ``("window",)`` (its AUC has
            no lifetime value) or ``("bare",)`` (the lifetime value under the bare name).
        when: a TorchRec boolean argument that switches this value on (``"include_logloss"``).
        key: our metric's name in the module, where ``name`` alone would repeat one.
        window_buffer: TorchRec windows this value with its ``WindowBuffer`` (sum states: at most
            ``MAX_BUFFER_COUNT`` updates); ``False`` for its AUC family, whose window keeps samples.
    """

    name: str
    build: Callable[[int, Mapping[str, Any]], Metric]
    parts: tuple[str, ...] = _BOTH
    when: str | None = None
    key: str | None = None
    window_buffer: bool = True


@dataclass(frozen=True)
class _TorchRecMetric:
    """A TorchRec metric (``RecMetricEnum`` value): its values and the arguments we accept."""

    values: tuple[_Value, ...]
    arguments: tuple[str, ...] = ()
    grouped: bool = False  # reads TorchRec's ``grouping_keys`` column when a grouped value is on
    segmented: bool = False  # reads its ``grouping_keys`` argument's column as segment ids (segmented_ne)
    sessions: bool = False  # reads its ``session_key`` argument's column as session ids (session_pairwise_auc)


def _plain(cls: Callable[..., Metric], **options: Any) -> Callable[[int, Mapping[str, Any]], Metric]:
    """A builder ignoring TorchRec's arguments: ``cls(num_tasks, **options)``."""
    return lambda num_tasks, arguments: cls(num_tasks, **options)


def _passing(cls: Callable[..., Metric], *names: str, **options: Any) -> Callable[[int, Mapping[str, Any]], Metric]:
    """A builder passing the TorchRec arguments ``names`` (same meaning, same name) to ``cls``."""
    return lambda num_tasks, arguments: cls(
        num_tasks, **options, **{name: arguments[name] for name in names if name in arguments}
    )


def _torchrec_binned_auprc(num_tasks: int, arguments: Mapping[str, Any]) -> Metric:
    """TorchRec's lifetime AUPRC: the AP of scores floored to ``num_bins`` bins uniform in [0, 1]."""
    bounds = (arguments.get("min_prediction", 0.0), arguments.get("max_prediction", 1.0))
    if bounds != (0.0, 1.0):
        raise ValueError(
            f"TorchRec metric 'auprc': only min_prediction=0, max_prediction=1 are supported, got {bounds}."
        )
    return _auc.AUPRC(num_tasks, num_bins=arguments.get("num_bins", 1000), bin_space="probability")


def _num_groups(arguments: Mapping[str, Any]) -> int:
    """TorchRec's ``num_groups`` (default 1) as a positive int, by the settings' rule."""
    value = arguments.get("num_groups", 1)
    groups = as_int(value)
    if groups is None or groups < 1:
        raise refusal(
            "TorchRec metric 'segmented_ne': expected `num_groups` to be a positive integer, "
            f"got {int_given(value, 1)}.",
            wrong_type=groups is None,
        )
    return groups


def _segmented(cls: Callable[..., TaskMetric], **options: Any) -> Callable[[int, Mapping[str, Any]], Metric]:
    """A builder of ``Segmented(cls(num_tasks, **options), num_groups)`` (TorchRec's segmented_ne values)."""
    return lambda num_tasks, arguments: Segmented(cls(num_tasks, **options), _num_groups(arguments))


def _segment_column(arguments: Mapping[str, Any]) -> str:
    """The column of segmented_ne's segment ids: its ``grouping_keys`` argument.

    TorchRec's default, ``"grouping_keys"``, is the column its grouped AUC reads too.

    Raises:
        ValueError: ``grouping_keys`` given as TorchRec's list of keys (several segmentations in one
            metric, or per-key ``num_groups``): one column (a string) is supported.
    """
    column = arguments.get("grouping_keys", GROUPING_KEYS)
    if not isinstance(column, str) or not column:
        raise ValueError(
            "TorchRec metric 'segmented_ne': only one grouping key column, given as a string, is supported "
            f"(`grouping_keys='country'`), got {column!r}; TorchRec's list of keys (several segmentations, "
            "keys suffixed '@{name}') is not: configure one segmented_ne per column in separate modules, or use "
            "standalone tmx.Segmented metrics."
        )
    return column


def _session_pairwise_auc(num_tasks: int, arguments: Mapping[str, Any]) -> Metric:
    """Newer TorchRec's ``session_pairwise_auc``: its options that choose the value passed on, the others refused.

    ``score_key`` and ``pairwise_weight_key`` name other model outputs for the scores and weights: the
    module reads each task's ``prediction_name`` and ``weight_name`` columns, so name those columns
    there. ``remove_zero_weight_from_pair=False`` (pairs with a zero-weight row) has no counterpart.
    """
    for option in ("score_key", "pairwise_weight_key"):
        if arguments.get(option) is not None:
            column = "prediction_name" if option == "score_key" else "weight_name"
            raise ValueError(
                f"TorchRec metric 'session_pairwise_auc': `{option}={arguments[option]!r}` is not supported: "
                f"the module reads each task's {column} column; set the task's {column} to that column instead."
            )
    if arguments.get("remove_zero_weight_from_pair", True) is not True:
        raise ValueError(
            "TorchRec metric 'session_pairwise_auc': only `remove_zero_weight_from_pair=True` (TorchRec's default) "
            f"is supported, got {arguments['remove_zero_weight_from_pair']!r}: a row of weight 0 joins no pair here."
        )
    options = {k: arguments[k] for k in ("rank_order_label", "weight_pairs", "report_batch_coverage") if k in arguments}
    return _session_pairwise.SessionPairwiseAUC(num_tasks, **options)


def _session_column(arguments: Mapping[str, Any]) -> str:
    """The column of session_pairwise_auc's session ids: its ``session_key`` argument (TorchRec's default)."""
    column = arguments.get("session_key", SESSION_KEY)
    if not isinstance(column, str) or not column:
        raise refusal(
            "TorchRec metric 'session_pairwise_auc': expected `session_key` to be the name of the model output "
            f"holding the session ids (a non-empty string), got {column!r}.",
            wrong_type=not isinstance(column, str),
        )
    return column


_NE = _Value("ne", _plain(_pointwise.NormalizedEntropy))
_CALIBRATION = _Value("calibration", _plain(_pointwise.Calibration))
_SERVED = _Value("total_examples", _plain(_counters.NumServingExamples), parts=("bare",))
_THRESHOLD = ("threshold",)

TORCHREC_METRICS: dict[str, _TorchRecMetric] = {
    "ne": _TorchRecMetric(
        (_NE, _Value("logloss", _plain(_pointwise.LogLoss, unit="bits"), when="include_logloss")),
        arguments=("include_logloss", "allow_missing_label_with_zero_weight"),
    ),
    "ne_positive": _TorchRecMetric((_Value("ne_positive", _plain(_entropy.NEPositive)),)),
    "recalibrated_ne": _TorchRecMetric(
        (_Value("ne", _passing(_entropy.RecalibratedNE, "recalibration_coefficient")),),
        arguments=("recalibration_coefficient",),
    ),
    "recalibrated_calibration": _TorchRecMetric(
        (_Value("calibration", _passing(_entropy.RecalibratedCalibration, "recalibration_coefficient")),),
        arguments=("recalibration_coefficient",),
    ),
    "ctr": _TorchRecMetric((_Value("ctr", _plain(_pointwise.CTR)),)),
    "calibration": _TorchRecMetric((_CALIBRATION,)),
    "auc": _TorchRecMetric(
        (
            _Value("auc", _plain(_auc.AUC), parts=("window",), window_buffer=False),
            _Value(
                "grouped_auc",
                _plain(_auc.GroupedAUC, average_groups="all"),
                parts=("window",),
                when="grouped_auc",
                window_buffer=False,
            ),
        ),
        arguments=("grouped_auc",),
        grouped=True,
    ),
    "auprc": _TorchRecMetric(
        (
            _Value("auprc", _torchrec_binned_auprc, parts=("lifetime",), window_buffer=False),
            # its window is exact
            _Value("auprc", _plain(_auc.AUPRC), parts=("window",), key="auprc_window", window_buffer=False),
            _Value(
                "grouped_auprc",
                _plain(_auc.GroupedAUPRC, average_groups="all"),
                parts=("window",),
                when="grouped_auprc",
                window_buffer=False,
            ),
        ),
        arguments=("grouped_auprc", "num_bins", "min_prediction", "max_prediction"),
        grouped=True,
    ),
    "rauc": _TorchRecMetric((_Value("rauc", _plain(_auc.RegressionAUC), parts=("window",), window_buffer=False),)),
    "mse": _TorchRecMetric(
        (
            _Value("mse", _plain(_pointwise.WeightedMSE)),
            _Value("rmse", _plain(_pointwise.WeightedRMSE)),
            _Value("r_squared", _plain(_regression.WeightedR2), when="include_r_squared"),
        ),
        arguments=("include_r_squared",),
    ),
    "mae": _TorchRecMetric((_Value("mae", _plain(_pointwise.WeightedMAE)),)),
    "weighted_avg": _TorchRecMetric((_Value("weighted_avg", _plain(_pointwise.WeightedAverage)),)),
    "accuracy": _TorchRecMetric(
        (_Value("accuracy", _passing(_pointwise.WeightedAccuracy, *_THRESHOLD)),), arguments=_THRESHOLD
    ),
    "precision": _TorchRecMetric(
        (_Value("precision", _passing(_pointwise.WeightedPrecision, *_THRESHOLD)),), arguments=_THRESHOLD
    ),
    "recall": _TorchRecMetric(
        (_Value("recall", _passing(_pointwise.WeightedRecall, *_THRESHOLD)),), arguments=_THRESHOLD
    ),
    "serving_ne": _TorchRecMetric((_NE, _SERVED)),
    "serving_calibration": _TorchRecMetric((_CALIBRATION, _SERVED)),
    "cali_free_ne": _TorchRecMetric(
        (_Value("cali_free_ne", _plain(_entropy.CalibrationFreeNE, torchrec_scaling=True)),)
    ),
    "nmse": _TorchRecMetric(
        (
            _Value("nmse", _plain(_regression.WeightedNMSE, baseline="one")),
            _Value("nrmse", _plain(_regression.WeightedNRMSE, baseline="one")),
        )
    ),
    "average": _TorchRecMetric(
        (
            _Value("label_average", _plain(_counters.LabelAverage)),
            _Value("prediction_average", _plain(_pointwise.WeightedAverage)),
        )
    ),
    "num_positive_samples": _TorchRecMetric((_Value("num_positive_samples", _plain(_counters.NumPositiveSamples)),)),
    "sum_weights": _TorchRecMetric((_Value("sum_weights", _plain(_counters.SumWeights)),)),
    "weighted_sum_predictions": _TorchRecMetric(
        (_Value("weighted_sum_predictions", _plain(_counters.WeightedSumPredictions)),)
    ),
    "xauc": _TorchRecMetric((_Value("xauc", _plain(_auc.XAUC)),)),
    # per segment id (keys segmented_ne-{task}|lifetime_segmented_ne_{g}, ..._logloss_{g}): TorchRec's log loss
    # here is the cross entropy in bits over the weights, LogLoss(unit="bits")'s
    "segmented_ne": _TorchRecMetric(
        (
            _Value("segmented_ne", _segmented(_pointwise.NormalizedEntropy)),
            _Value("logloss", _segmented(_pointwise.LogLoss, unit="bits"), when="include_logloss"),
        ),
        arguments=("include_logloss", "num_groups", "grouping_keys", "cast_keys_to_int"),
        segmented=True,
    ),
    # newer TorchRec's (after 1.9.2): pairs within each batch's sessions, the ids read from its `session_key`
    # model output (the tasks' session_id_name); keys session_pairwise_auc-{task}|lifetime_session_pairwise_auc,
    # and with report_batch_coverage ..._valid_pairs_per_batch, ..._effective_training_examples_per_batch
    "session_pairwise_auc": _TorchRecMetric(
        (_Value("session_pairwise_auc", _session_pairwise_auc),),
        arguments=(
            "session_key",
            "score_key",
            "pairwise_weight_key",
            "rank_order_label",
            "remove_zero_weight_from_pair",
            "weight_pairs",
            "report_batch_coverage",
        ),
        sessions=True,
    ),
}

# Options of a MetricsConfig that choose how TorchRec runs, not what it computes: our module always
# fuses tasks and states, syncs once per compute and validates every step. Two of them change
# window values and are read: `should_validate_update` (emulated) and `fused_update_limit` (> 1
# rejected); `rec_compute_mode` decides which tasks `should_validate_update` skips together.
_EXECUTION_FIELDS = (
    "rec_compute_mode",
    "fused_update_limit",
    "min_compute_interval",
    "max_compute_interval",
    "compute_on_all_ranks",
    "should_validate_update",
    "enable_pt2_compile",
    "should_clone_update_inputs",
    "use_cpu_offloaded_rec_metric_module",
)
_CONFIG_FIELDS = ("rec_tasks", "rec_metrics", "throughput_metric", "state_metrics", "compute_interval_steps")
_TASK_FIELDS = ("name", "label_name", "prediction_name", "weight_name")
_TASK_IGNORED = ("session_metric_def", "is_negative_task", "tensor_name", "weighted")  # for unsupported metrics
_DEF_FIELDS = ("rec_tasks", "rec_task_indices", "window_size", "arguments")
_DEFAULT_WINDOW = 10_000_000  # TorchRec's RecMetricDef default
MAX_BUFFER_COUNT = 1000  # TorchRec's WindowBuffer keeps at most this many updates (torchrec/metrics/rec_metric.py)
_UNFUSED = "UNFUSED_TASKS_COMPUTATION"  # TorchRec's default RecComputeMode
_COMPUTE_MODES = {1: "FUSED_TASKS_COMPUTATION", 2: _UNFUSED, 3: "FUSED_TASKS_AND_STATES_COMPUTATION"}
_STATE_METRICS = ("optimizers", "model_configurator")


@dataclass
class TorchRecPlan:
    """What :meth:`RecMetricModule.from_torchrec_config` passes to the constructor, and TorchRec's keys.

    Attributes:
        tasks: every task some metric names (a config task no metric names is left out, as TorchRec
            never reads it), in ``rec_tasks`` order, then first-seen, as ``RecTaskInfo`` field dicts.
        metrics: ``{our metric name: metric}`` built for the tasks its ``RecMetricDef`` names.
        metric_tasks: ``{our metric name: task names}`` for the metrics that read some of ``tasks`` only
            (``RecMetricModule``'s ``metric_tasks``).
        keys: ``{our metric name: (TorchRec namespace, TorchRec name, parts, task names)}``.
        window_size: the metrics' common window.
        window_options: ``{our metric name: Windowed options}``: TorchRec's window rules, ``ceil``
            share per rank for every metric and ``max_updates=MAX_BUFFER_COUNT`` for the values its
            ``WindowBuffer`` windows (all but its AUC family).
        cast_segment_ids: segmented_ne's ``cast_keys_to_int``: floating segment ids are read as int64.
        skip_zero_weight_steps: ``should_validate_update``: a step whose weights are all zero is
            skipped by every metric (validated windows skip it without the option too, but for a
            metric that counts it: ``grouped_auc``'s ``GroupedAUC(average_groups="all")``).
        throughput: a :class:`~torchmetrics_ext.Throughput` or ``None``.
        compute_interval_steps: as in TorchRec.
        state_metrics: ``{namespace: callable}`` for the module's ``state_metrics``.

    Examples:
        >>> from torchmetrics_ext.torchrec_config import read_torchrec_config
        >>> config = {
        ...     "rec_tasks": [{"name": "click", "label_name": "y", "prediction_name": "p"}],
        ...     "rec_metrics": {
        ...         "ne": {"rec_task_indices": [0], "window_size": 1000},
        ...         "calibration": {"rec_task_indices": [0], "window_size": 1000},
        ...     },
        ...     "throughput_metric": {"window_size": 100, "warmup_steps": 2},
        ... }
        >>> plan = read_torchrec_config(config)
        >>> plan.tasks
        [{'name': 'click', 'label_name': 'y', 'prediction_name': 'p', 'weight_name': 'weight'}]
        >>> plan.metrics, plan.window_size
        ({'ne': NormalizedEntropy(), 'calibration': Calibration()}, 1000)
        >>> plan.keys["calibration"]
        ('calibration', 'calibration', ('lifetime', 'window'), frozenset({'click'}))
        >>> plan.window_options["ne"]  # TorchRec's per-rank share and WindowBuffer length
        {'ceil_share': True, 'max_updates': 1000}
        >>> plan.throughput.warmup_steps, plan.compute_interval_steps
        (2, 100)
    """

    tasks: list[dict[str, Any]]
    metrics: dict[str, Metric] = field(default_factory=dict)
    keys: dict[str, tuple[str, str, tuple[str, ...], frozenset[str]]] = field(default_factory=dict)
    window_size: int = _DEFAULT_WINDOW
    window_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip_zero_weight_steps: bool = False
    cast_segment_ids: bool = False
    metric_tasks: dict[str, list[str]] = field(default_factory=dict)
    throughput: Throughput | None = None
    compute_interval_steps: int = 100
    state_metrics: dict[str, Callable[[], Any]] = field(default_factory=dict)


def read_torchrec_config(config: Any, state_metrics_mapping: Mapping[Any, Any] | None = None) -> TorchRecPlan:
    """Read a TorchRec ``MetricsConfig`` (or the same fields as a dict) into a :class:`TorchRecPlan`.

    Args:
        config: ``torchrec.metrics.metrics_config.MetricsConfig`` or a dict of its fields.
        state_metrics_mapping: ``{StateMetricEnum or its value: object}`` for ``state_metrics``;
            each object has TorchRec's ``get_metrics()`` or is a callable returning the same dict.

    Returns:
        The plan.

    Raises:
        ValueError: unknown fields, unsupported metrics or arguments (the message lists the
            supported ones), tasks that disagree, metrics with different window sizes,
            ``fused_update_limit`` above 1, or ``should_validate_update`` over tasks whose
            zero-weight steps TorchRec would skip separately (see :func:`_check_validate_update`).

    Examples:
        >>> from torchmetrics_ext.torchrec_config import read_torchrec_config
        >>> config = {"rec_tasks": [{"name": "click"}], "rec_metrics": {"ne": {"rec_task_indices": [0]}}}
        >>> plan = read_torchrec_config(config)
        >>> list(plan.metrics)
        ['ne']
        >>> name, prefix, kinds, *_ = plan.keys["ne"]
        >>> name, prefix, kinds
        ('ne', 'ne', ('lifetime', 'window'))
    """
    fields_ = _as_dict(config, "config", _CONFIG_FIELDS + _EXECUTION_FIELDS)
    config_tasks = [_task(t, "rec_tasks") for t in fields_.get("rec_tasks") or []]
    rec_metrics = fields_.get("rec_metrics") or {}
    if not isinstance(rec_metrics, Mapping) or not rec_metrics:
        raise refusal(  # a list is a wrong type, an empty dict a wrong value
            f"Expected `rec_metrics` to be a non-empty dict of metric -> RecMetricDef, got {rec_metrics!r}.",
            wrong_type=not isinstance(rec_metrics, Mapping),
        )
    tasks: dict[str, dict[str, Any]] = {t["name"]: t for t in config_tasks}
    used: set[str] = set()  # as TorchRec, a config task no metric names is never read
    per_metric: list[tuple[str, _TorchRecMetric, dict[str, Any], list[str]]] = []
    windows: dict[str, int] = {}
    for enum, definition in rec_metrics.items():
        name = _enum_value(enum)
        spec = TORCHREC_METRICS.get(name)
        if spec is None:
            hint = torchrec_name_hint(name)
            raise ValueError(
                f"TorchRec metric {name!r} is not supported by from_torchrec_config"
                + (f" ({hint})" if hint else "")
                + "; supported: "
                f"{', '.join(sorted(TORCHREC_METRICS))}. Build the others as standalone metrics "
                "(docs/migration_torchrec.md)."
            )
        d = _as_dict(definition, f"rec_metrics[{name!r}]", _DEF_FIELDS)
        given_arguments = d.get("arguments")
        if given_arguments is None:  # as TorchRec's default (an empty dict)
            given_arguments = {}
        if not isinstance(given_arguments, Mapping):  # `[]`, `0`, `False` too: TorchRec's `**arguments` refuses them
            raise WrongTypeError(
                f"TorchRec metric {name!r}: expected `arguments` to be a dict of argument -> value, "
                f"got {given_arguments!r}."
            )
        arguments = dict(given_arguments)
        unknown = sorted(set(arguments) - set(spec.arguments))
        if unknown:
            raise ValueError(
                f"TorchRec metric {name!r}: unsupported arguments {unknown}; "
                f"supported: {list(spec.arguments) or 'none'}."
            )
        if arguments.get("allow_missing_label_with_zero_weight"):
            raise ValueError(
                f"TorchRec metric {name!r}: `allow_missing_label_with_zero_weight=True` is not supported "
                "(the module rejects NaN labels); count them with NumMissingLabels."
            )
        metric_tasks = _metric_tasks(name, d, config_tasks)
        for task in metric_tasks:
            if tasks.setdefault(task["name"], task) != task:
                raise ValueError(
                    f"Task {task['name']!r} is defined twice with different columns: {tasks[task['name']]} and {task}."
                )
        windows[name] = _window_size(name, d.get("window_size", _DEFAULT_WINDOW))
        per_metric.append((name, spec, arguments, [t["name"] for t in metric_tasks]))
        used.update(t["name"] for t in metric_tasks)
    if len(set(windows.values())) > 1:
        raise ValueError(f"RecMetricModule keeps one window size for every metric; the config has {windows}.")

    plan = TorchRecPlan(
        tasks=[t for name, t in tasks.items() if name in used], window_size=next(iter(windows.values()))
    )
    num_tasks = len(plan.tasks)
    columns: dict[str, str] = {}  # the id column each metric reads: {TorchRec metric: column}
    sessions: dict[str, str] = {}  # the session id column of the tasks a session metric reads: {task: column}
    for name, spec, arguments, task_names in per_metric:
        if spec.segmented:
            columns[name] = _segment_column(arguments)
            plan.cast_segment_ids = bool(arguments.get("cast_keys_to_int", False))
        if spec.sessions:
            sessions.update(dict.fromkeys(task_names, _session_column(arguments)))
        for value in spec.values:
            if value.when is not None and not arguments.get(value.when):
                continue
            key = value.key or (name if value.name == name else f"{name}_{value.name}")
            # as in TorchRec, a metric reads the tasks its RecMetricDef names (and is checked on them alone)
            reads = [t["name"] for t in plan.tasks if t["name"] in task_names]
            if len(reads) < num_tasks:
                plan.metric_tasks[key] = reads
            plan.metrics[key] = value.build(len(reads), arguments)
            plan.keys[key] = (name, value.name, value.parts, frozenset(task_names))
            plan.window_options[key] = {"ceil_share": True}  # TorchRec: ceil(window_size / world_size) per rank
            if value.window_buffer:
                plan.window_options[key]["max_updates"] = MAX_BUFFER_COUNT
            if spec.grouped and value.when is not None:
                columns[name] = GROUPING_KEYS
    if len(set(columns.values())) > 1:
        raise ValueError(
            f"The module reads one id column for every metric; the config's metrics read {columns} (grouped AUC/AUPRC "
            "read 'grouping_keys', segmented_ne its `grouping_keys` argument): give segmented_ne grouping_keys="
            "'grouping_keys', or build the other metrics in a module of their own."
        )
    if columns:
        plan.tasks = [t | {"group_id_name": next(iter(columns.values()))} for t in plan.tasks]
    plan.tasks = [t | {"session_id_name": sessions[t["name"]]} if t["name"] in sessions else t for t in plan.tasks]
    _check_fused_update_limit(fields_.get("fused_update_limit", 0))
    mode = _compute_mode(fields_.get("rec_compute_mode"))
    if fields_.get("should_validate_update", False):
        _check_validate_update(mode, plan.tasks, [t for *_, t in per_metric])
        plan.skip_zero_weight_steps = True

    throughput = fields_.get("throughput_metric")
    if throughput is not None:
        t = _as_dict(throughput, "throughput_metric", ("window_size", "warmup_steps"))
        plan.throughput = Throughput(warmup_steps=t.get("warmup_steps", 100), window_seconds=t.get("window_size", 100))
    plan.compute_interval_steps = fields_.get("compute_interval_steps", 100)
    _warn_compute_interval_bounds(fields_, plan.compute_interval_steps)
    plan.state_metrics = _state_metrics(fields_.get("state_metrics") or [], state_metrics_mapping or {})
    return plan


# ----------------------------------------------------------------------------- helpers


def _warn_compute_interval_bounds(fields_: Mapping[str, Any], steps: Any) -> None:
    """Warn that TorchRec's ``min/max_compute_interval`` (seconds) are not applied, when the config sets them.

    With either set away from its default (0 and infinity), TorchRec's ``RecMetricModule`` resets its
    ``compute_interval_steps`` once, from the seconds between its first two computes, so that the time
    between computes falls within the two bounds, and so ``should_compute()`` fires at other steps than
    the config's; ours keeps the config's steps. The values of a compute are the same; when they are logged is not.
    """
    low, high = fields_.get("min_compute_interval"), fields_.get("max_compute_interval")
    low_set = low is not None and low != 0
    high_set = high is not None and high != math.inf
    if low_set or high_set:
        warn_at_user(
            f"`min_compute_interval={low}`, `max_compute_interval={high}` (seconds) are not applied: TorchRec "
            "resets compute_interval_steps once, from the time between its first two computes, to fall within them; "
            f"this module keeps compute_interval_steps={steps}, so should_compute() (and your logging) fires on "
            "the config's step count. Set compute_interval_steps to the cadence you want, and leave the two "
            "at their defaults (0 and inf) to silence this.",
            UserWarning,
        )


def _check_fused_update_limit(value: Any) -> None:
    """``fused_update_limit`` up to 1 (TorchRec: no fusion); above 1 is refused, saying why."""
    limit = as_int(value)
    if limit is None:
        raise WrongTypeError(f"Expected `fused_update_limit` to be an integer, got {int_given(value)}.")
    if limit > 1:
        raise ValueError(
            f"`fused_update_limit={limit}` is not supported: TorchRec then buffers {limit} steps and adds "
            "them as one update (one window entry, flushed early by every compute), so its window values "
            "depend on when compute() is called. RecMetricModule updates every step: set it to 0 "
            "(TorchRec's default; the values then agree)."
        )


def _compute_mode(value: Any) -> str:
    """``RecComputeMode.X``, its name or its value (``None``: TorchRec's default) -> the mode's name."""
    if value is None:
        return _UNFUSED
    raw = getattr(value, "name", value)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in _COMPUTE_MODES:
        return _COMPUTE_MODES[raw]
    if isinstance(raw, str) and raw.upper() in _COMPUTE_MODES.values():
        return raw.upper()
    raise ValueError(f"Expected `rec_compute_mode` to be a TorchRec RecComputeMode, got {value!r}.")


def _check_validate_update(name: str, tasks: list[dict[str, Any]], metric_tasks: list[list[str]]) -> None:
    """Refuse ``should_validate_update`` where TorchRec skips zero-weight steps per task or per metric.

    TorchRec skips an update whose weights are all zero: per task in its default
    ``UNFUSED_TASKS_COMPUTATION`` mode (each task has its own window), and per metric, over the
    metric's tasks, in the fused modes. The module has one window for all tasks and metrics, so it
    skips a step when every task's weights are all zero: the same steps TorchRec skips when all
    tasks read one weight column, or (fused modes) when every metric's tasks read every weight
    column of the config's tasks.
    """
    columns = {t["name"]: t["weight_name"] for t in tasks}
    every = set(columns.values())
    if len(every) <= 1:
        return
    if name != _UNFUSED and all({columns[task] for task in names} == every for names in metric_tasks):
        return
    raise ValueError(
        "`should_validate_update=True` is supported when every task reads one weight column"
        + ("" if name == _UNFUSED else ", or the tasks of every metric read all of the weight columns")
        + f"; the tasks read {columns} ({name}). TorchRec then skips a step whose weights are all zero "
        + ("for each task on its own" if name == _UNFUSED else "for each metric's tasks on their own")
        + ", so that task's window loses no room while the others' do; the module keeps one window for "
        "all tasks and cannot. Give the tasks one weight column, or set should_validate_update=False: a step "
        "then keeps its room in a metric's window unless the weights of every task it reads are all zero (a "
        "metric reading only a task weighted by clicks skips a step without clicks, where TorchRec's window "
        "without the option takes it; the module warns once when that happens)."
    )


def _as_dict(value: Any, what: str, allowed: Sequence[str]) -> dict[str, Any]:
    """A dataclass's fields (one level) or a dict, checked against ``allowed``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, Mapping):
        raise WrongTypeError(f"Expected `{what}` to be a TorchRec dataclass or a dict, got {type(value).__name__}.")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown fields {unknown} in `{what}`; expected fields among {list(allowed)}.")
    return dict(value)


def _enum_value(value: Any) -> str:
    """``RecMetricEnum.NE``, ``"ne"`` or ``"NE"`` -> ``"ne"``."""
    raw = getattr(value, "value", value)
    if not isinstance(raw, str):
        raise WrongTypeError(f"Expected a TorchRec metric (RecMetricEnum or its name), got {value!r}.")
    return raw.lower()


def _task(value: Any, what: str) -> dict[str, Any]:
    task = _as_dict(value, what, _TASK_FIELDS + _TASK_IGNORED)
    if not task.get("name"):
        raise ValueError(f"Expected every task in `{what}` to have a name, got {value!r}.")
    defaults = {"label_name": "label", "prediction_name": "prediction", "weight_name": "weight"}
    return {k: task.get(k, defaults.get(k)) for k in _TASK_FIELDS}


def _metric_tasks(name: str, definition: Mapping[str, Any], config_tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A RecMetricDef's tasks: ``rec_tasks`` or ``rec_task_indices`` into the config's, exactly one of them."""
    listed, indices = definition.get("rec_tasks") or [], _task_indices(name, definition.get("rec_task_indices"))
    if bool(listed) == bool(indices):
        given = definition.get("rec_task_indices")
        raise ValueError(
            f"TorchRec metric {name!r}: expected exactly one of `rec_tasks` and `rec_task_indices` to be a "
            f"non-empty list, got {listed!r} and {[] if given is None else given!r}."
        )
    if indices:
        bad = [i for i in indices if not 0 <= i < len(config_tasks)]
        if bad:
            raise ValueError(
                f"TorchRec metric {name!r}: `rec_task_indices` {bad} out of range for {len(config_tasks)} rec_tasks."
            )
        tasks = [config_tasks[i] for i in indices]
    else:
        tasks = [_task(t, f"rec_metrics[{name!r}].rec_tasks") for t in listed]
    _check_repeated_tasks(name, tasks, indices)
    return tasks


def _check_repeated_tasks(name: str, tasks: list[dict[str, Any]], indices: list[int]) -> None:
    """Refuse a RecMetricDef naming one task twice, as ``RecMetricModule``'s ``metric_tasks`` refuses it.

    TorchRec takes ``rec_task_indices: [0, 0]`` (or a task listed twice in ``rec_tasks``) and computes
    the task twice, both copies reporting under one key (``ne-click|lifetime_ne``): no second value, so a
    repeat is a mistake in the config rather than a request; it was silently read as one task here.

    Raises:
        ValueError: naming the metric, TorchRec's field and the repeated task.
    """
    names = [task["name"] for task in tasks]
    repeated = next((task for task, count in Counter(names).items() if count > 1), None)
    if repeated is None:
        return
    if indices:
        where = [i for i, task in zip(indices, names) if task == repeated]
        what = f"`rec_task_indices` {indices} names task {repeated!r} more than once (indices {where})"
    else:
        what = f"`rec_tasks` names task {repeated!r} more than once"
    raise ValueError(
        f"TorchRec metric {name!r}: {what}; TorchRec would compute it twice under one key "
        f"({name}-{repeated}|...): list each task once."
    )


def _window_size(name: str, value: Any) -> int:
    """A RecMetricDef's ``window_size`` as a Python int, by the settings' rule (an integer, not a bool or a float).

    ``int()`` would have truncated ``10.7`` to 10, read ``True`` as 1 and the text ``"100"`` as 100, where
    ``RecMetricModule(window_size=...)`` refuses each.

    Raises:
        ValueError: naming the metric and ``window_size``, for anything but a positive integer.
    """
    size = as_int(value)
    if size is None or size < 1:
        raise refusal(
            f"TorchRec metric {name!r}: expected `window_size` to be a positive integer, got {int_given(value, 1)}.",
            wrong_type=size is None,
        )
    return size


def _task_indices(name: str, value: Any) -> list[int]:
    """A RecMetricDef's ``rec_task_indices`` as Python ints (``None``: none given).

    Each index is an integer by the settings' rule (:func:`~torchmetrics_ext.utilities.checks.as_int`):
    an ``int``, a NumPy integer, a 0-dim integer tensor or array (the items of ``np.array([0, 1])`` or
    ``torch.tensor([0, 1])``). ``True`` is not task 1, nor is ``1.0`` an index.

    Raises:
        ValueError: naming the metric, ``rec_task_indices`` and the value that is no index.
    """
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0:
        raise WrongTypeError(
            f"TorchRec metric {name!r}: expected `rec_task_indices` to be a list of integers (positions in "
            f"`rec_tasks`), got {value!r}."
        )
    items = list(value)
    indices = [as_int(i) for i in items]
    bad = [item for item, index in zip(items, indices) if index is None]
    if bad:
        raise WrongTypeError(
            f"TorchRec metric {name!r}: expected `rec_task_indices` to hold integers (positions in `rec_tasks`; "
            f"a bool is no index), got {bad[0]!r} in {value!r}."
        )
    return [index for index in indices if index is not None]


def _state_metrics(enums: Sequence[Any], mapping: Mapping[Any, Any]) -> dict[str, Callable[[], Any]]:
    by_value = {_enum_value(k): v for k, v in mapping.items()}
    out: dict[str, Callable[[], Any]] = {}
    for enum in enums:
        name = _enum_value(enum)
        if name not in _STATE_METRICS:
            raise ValueError(f"Unknown TorchRec state metric {name!r}; expected one of {_STATE_METRICS}.")
        if name not in by_value:
            raise ValueError(f"State metric {name!r} is configured: pass its object in `state_metrics_mapping`.")
        source = by_value[name]
        getter = getattr(source, "get_metrics", source)
        if not callable(getter):
            raise ValueError(f"Expected state metric {name!r} to have get_metrics() or be callable, got {source!r}.")
        out[name] = getter
    return out
