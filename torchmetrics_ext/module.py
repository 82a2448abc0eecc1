"""``RecMetricModule``: every metric for every task (or the tasks ``metric_tasks`` names) in one object.

A training step produces a flat dict of tensors (one prediction, label and weight column per
task, plus id columns); :class:`RecMetricModule` reads it by name, stacks the tasks into one
``(T, N)`` float64 batch, validates the step once and feeds every metric, and ``compute()``
returns a flat dict of scalar tensors ready for ``LightningModule.log_dict``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities.exceptions import TorchMetricsUserError

from torchmetrics_ext._module_columns import (
    _columns_read,
    _flat_column_hint,
    _id_column,
    _missing_column,
    _same_device,
    _warn_unread_weight_names,
)
from torchmetrics_ext._module_compute import _metric_of, _payload, _put, _scalar, _state_metric_value, _throughput_rates
from torchmetrics_ext._module_config import (
    _check_id_columns,
    _check_metric_name,
    _check_metric_tasks,
    _check_not_torchrecs,
    _check_unit_names,
    _close_to,
    _entry_name_ok,
    _instantiate,
    _listed,
    _metric_entries,
    _metric_specs,
    _torchrec_names,
)
from torchmetrics_ext._module_domains import (
    _binary_labels,
    _check_domain_groups,
    _check_module_logits,
    _domain_groups,
    _domain_hint,
    _fed_probabilities,
    _in_module,
    _padding_mark,
    _padding_pointer,
    _rows_range,
    _strictest_over_tasks,
    _task_domains,
    _task_owners,
    _zero_weight_pointer,
    warn_value_heads_read_as_logits,
)
from torchmetrics_ext._module_loading import SAVED_BY, CheckpointLoading
from torchmetrics_ext._module_members import (
    _FILLED_AT,
    _NAMES,
    _STATES_OF,
    IN_MODULE_COMPUTE,
    _changes,
    _fill_member,
    _holds_states_of,
    _states_as_built,
    _warn_carried_samples,
    _warn_changed_member,
)
from torchmetrics_ext._module_segments import check_segment_ids, per_segment, segment_counts, segment_ids
from torchmetrics_ext._module_stack import (
    _row_flags,
    _rows,
    _small_weight_stack,
    _stack_and_widen,
    _stack_weights,
    _zero_weight_tasks,
)
from torchmetrics_ext.functional._sums import sharing_sums
from torchmetrics_ext.metrics._checkpoints import (
    copied_with_source,
    forget_cleared_states,
    holds_anything,
    resets_taken,
    share_states_with,
)
from torchmetrics_ext.metrics.base import (
    InputDomains,
    TaskMetric,
    counted_as_updated,
    syncs_on_compute,
)
from torchmetrics_ext.metrics.ranking._base import sharing_row_copies
from torchmetrics_ext.metrics.throughput import Throughput
from torchmetrics_ext.utilities.checks import (
    _NO_LABEL_HINT,
    _check_values_bounds,
    all_unit_weights,
    as_bool,
    as_str,
    check_choice,
    check_int,
    check_state_dtype,
    checked_bounds,
    format_pointwise,
    read_along,
)
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.distributed import (
    copy_metric,
    fused_gather,
    outside_group,
    own_storages_in_spawned_process,
)
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.inference import deepcopy_ordinary, ordinary_tensors
from torchmetrics_ext.utilities.mapping import lightning_log_call
from torchmetrics_ext.utilities.ownership import owner_of, release_ownership, take_ownership
from torchmetrics_ext.utilities.warnings import naming_metric, naming_part, naming_tasks, warn_at_user
from torchmetrics_ext.wrappers._shared import SharedRing, shareable
from torchmetrics_ext.wrappers.segmented import _ids_known_to_fit, _unchecked_ids_fit
from torchmetrics_ext.wrappers.windowed import Windowed, first_synced

__all__ = ["RecMetricModule", "RecTaskInfo"]

KEY_STYLES = ("torchmetrics_ext", "torchrec")
# Windowed options per metric name while `from_torchrec_config` builds a module (TorchRec's window
# rules: not constructor arguments, so the public signature stays the documented one)
_WINDOW_OPTIONS: ContextVar[Mapping[str, Mapping[str, Any]] | None] = ContextVar("tmx_window_options", default=None)
# TorchRec's (namespace, name) per metric name while `from_torchrec_config` builds a module: its plan
# names each metric's TorchRec key (the registry knows the classes, the plan which value of a metric)
_TORCHREC_KEYS: ContextVar[Mapping[str, tuple[str, str]] | None] = ContextVar("tmx_torchrec_keys", default=None)
_THROUGHPUT = ("\0throughput", "lifetime")  # the throughput's entry in the fused gather


class _ComputeOf(NamedTuple):
    """A state metric given as a TorchMetrics metric's ``compute``, as a copy or a pickle of the module holds it.

    TorchMetrics wraps ``compute`` in a closure, which pickle cannot find by name: a module holding
    ``loss.compute`` could not be pickled (``ddp_spawn``, ``torch.save(model)``). The metric itself is
    pickled instead, and its ``compute`` taken again from its copy (see ``RecMetricModule.__setstate__``).
    """

    metric: Metric | MetricCollection


def _held_by(metric: Metric) -> str | None:
    """Which live wrapper already holds ``metric`` (another module, a ``Windowed``), in words; ``None`` if none."""
    holder = owner_of(metric)
    if holder is None:
        return None
    return "another RecMetricModule" if isinstance(holder, RecMetricModule) else f"a live {type(holder).__name__}"


@dataclass(frozen=True)
class RecTaskInfo:
    """Where one task's tensors live in the model's output dict.

    Attributes:
        name: the task's name, used in the metric keys (no ``/``, ``|`` or ``.``).
        label_name: key of the ``(N,)`` labels.
        prediction_name: key of the ``(N,)`` floating point predictions.
        weight_name: key of the ``(N,)`` sample weights; a missing key means weight 1 (a name other
            than the default ``"weight"`` that the first step's ``model_out`` lacks is warned for,
            once: a misspelt name would otherwise leave the task unweighted without a word).
            ``None``: the task has no weight column, every sample weighs 1, whatever ``model_out``
            holds (a ``"weight"`` column of another task is not read, and nothing is warned); no
            tensor of ones is made for it unless another task of the module has weights.
        group_id_name: key of the ``(N,)`` integer group ids (user, request...) that grouped
            metrics (``GroupedAUC``) need, and the segment ids (country, surface...) of
            ``Segmented`` metrics (TorchRec's ``grouping_keys``); every task such a metric reads must
            name the same column (a task none reads, with ``metric_tasks``, may name none).
        session_id_name: key of the ``(N,)`` integer query/session ids ranking metrics need (of the
            tasks they read: with ``metric_tasks``, another task may name none).

    Examples:
        >>> from torchmetrics_ext import RecTaskInfo
        >>> RecTaskInfo("click", label_name="click_label", prediction_name="click_pred").weight_name
        'weight'
        >>> import torch
        >>> from torchmetrics_ext import RecMetricModule
        >>> tasks = [RecTaskInfo("click", "click_label", "click_pred", weight_name=None)]  # unweighted data
        >>> module = RecMetricModule(tasks, ["ctr"], throughput=False)
        >>> module.update({"click_pred": torch.tensor([0.3, 0.6]), "click_label": torch.tensor([0, 1]),
        ...                "weight": torch.tensor([5.0, 1.0])})  # another column named weight: not this task's
        >>> module.compute()["ctr/click"].item()
        0.5
    """

    name: str
    label_name: str = "label"
    prediction_name: str = "prediction"
    weight_name: str | None = "weight"
    group_id_name: str | None = None
    session_id_name: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            optional = f.name in ("weight_name", "group_id_name", "session_id_name")
            if as_str(value) is not None:  # a NumPy string (a 0-dim array too) is kept as its Python string
                object.__setattr__(self, f.name, value := as_str(value))
            if not (isinstance(value, str) and value) and not (optional and value is None):
                expected = "a non-empty string" + (" or None" if optional else "")
                raise refusal(  # an int is a wrong type, an empty string a wrong value
                    f"Expected `RecTaskInfo.{f.name}` to be {expected}, got {value!r}.",
                    wrong_type=not isinstance(value, str),
                )
        if not _entry_name_ok(self.name):
            raise ValueError(
                "Expected `RecTaskInfo.name` to be printable, without '/', '|' or '.' (they separate key parts), "
                f"got {self.name!r}."
            )
        # one column read as two inputs gives a value without a word (NE ~0 and AUC 1 for labels scored
        # by themselves): a wrong column name, never a task
        # (a weight column may repeat the labels or predictions: evaluate's `weights=` of a label column
        # weighs by it on purpose)
        columns = {"label_name": self.label_name, "prediction_name": self.prediction_name}
        for id_field in ("group_id_name", "session_id_name"):
            if getattr(self, id_field) is not None:
                columns[id_field] = getattr(self, id_field)
        names = list(columns)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if {first, second} == {"group_id_name", "session_id_name"}:
                    continue  # one id column (user) may serve both grouped and ranking metrics
                if columns[first] == columns[second]:
                    raise ValueError(
                        f"Task {self.name!r}: `RecTaskInfo.{first}` and `RecTaskInfo.{second}` are both "
                        f"{columns[first]!r}; each must name a column of its own."
                    )


@dataclass(frozen=True)
class _Batch:
    preds: Tensor  # (T, N) float64
    target: Tensor  # (T, N) float64
    groups: Tensor | None  # (N,) int
    sessions: list[Tensor | None] | None  # per task (N,) int (None: a task no ranking metric reads)
    target_is_float: bool
    columns: tuple[list[Tensor], list[Tensor], list[Tensor | None]]  # as given: predictions, labels, weights
    # the (T, N) predictions and labels as validated: stacked in their own floating dtype when it
    # is narrower than float64 (exact bounds, half the bytes read), else the float64 stacks; emptied
    # once checked (see `_update`)
    checked: list[Tensor]

    @property
    def given_weights(self) -> list[Tensor]:
        """The weight columns given (tasks without one left out)."""
        return [c for c in self.columns[2] if c is not None]


def _step_ids(batch: _Batch, keyword: str, positions: Sequence[int]) -> Tensor | None:
    """The id column a stacked unit takes as ``keyword``: the group ids, or the session ids of the tasks read.

    Session ids are the ``session_id_name`` columns of the tasks at ``positions``: that ``(N,)`` tensor where every task
    read gives the same one (a shared column), else the ``(T, N)`` stack of them.
    """
    if keyword != "sessions":
        return batch.groups
    assert batch.sessions is not None
    columns = [batch.sessions[t] for t in positions]
    first = columns[0]
    if all(column is first for column in columns[1:]):
        return first
    return torch.stack(columns)  # type: ignore[arg-type]


class _StepPlan(NamedTuple):
    """What a step of :class:`RecMetricModule` updates, found once (see ``RecMetricModule._plan``)."""

    # (unit, id keyword: "groups", "segments", "sessions" or "", fed probabilities): leaders, then copies
    updated: list[tuple[Metric, str, bool]]
    window_only: list[Metric]  # units whose lifetime samples are dropped after each step
    passes: list[tuple[bool, list[tuple[Metric, str, bool]]]]  # (fed probabilities, [(leader, id keyword, unwrapped)])
    windowed: list[Windowed]  # the updated units that are ``Windowed``
    # per updated unit, the metric whose input trust the step sets (a ``Windowed``'s scratch metric, else the
    # unit); empty in a plan pickled before it was kept (found again on load)
    trusted: Sequence[Metric] = ()
    # the leaders of metrics that read some tasks only (`metric_tasks`), left out of `passes`: (fed probabilities,
    # task positions, [(leader, id keyword, unwrapped)]), one entry per distinct subset
    subsets: Sequence[tuple[bool, tuple[int, ...], list[tuple[Metric, str, bool]]]] = ()
    # per entry of `subsets`, the domain groups (`_domain_groups` positions) holding its tasks: their predictions'
    # bounds are the rows' (empty in a plan pickled before it was kept: every task's bounds are used then)
    subset_groups: Sequence[tuple[int, ...]] = ()


class RecMetricModule(CheckpointLoading):
    r"""Every metric for every task in one module: one stacked update, one validation, one fused sync.

    Args:
        tasks: the tasks, as :class:`RecTaskInfo` (or plain names, which use the default columns),
            in a list, a tuple or a 1-D NumPy array or pandas ``Index``/``Series``; no two tasks may
            read the same prediction, label and weight columns.
        metrics: ``{name: metric}``. A metric is an instance built for ``len(tasks)`` tasks, a
            class or factory called with ``num_tasks=len(tasks)``, a registry name string
            (``"ne"``, ``"auc"``, ``"ndcg@10"``; see :mod:`torchmetrics_ext.registry`), or a dict of
            options for the registry entry named by its ``"metric"`` option or else by its name
            (``{"auc_binned": {"metric": "auc", "num_bins": 1000}}``, ``{"auc": {"num_bins": 1000}}``;
            ``None``, YAML's ``ne:``, is no options): every form :meth:`from_config` takes, built by
            the same code, with the same errors. A list of registry names (``["ne", "auc"]``; a
            tuple or a 1-D array of strings too) names each metric after its entry. Ranking metrics
            have no task dimension: the module keeps one copy per task (a loop over the tasks, not
            over queries).
        window_size: samples in the recent window (``None``: lifetime values only), over all ranks:
            under DDP each rank keeps its newest ``window_size // world_size`` (TorchRec's
            ``ceil(window_size / world_size)`` with :meth:`from_torchrec_config`). Each metric
            takes a validated step as it would alone: where the weights of every task it reads are
            all zero (each such task's weight column given, its maximum 0: read with the step's one
            validation read, nothing more), the step takes no room in its window (its lifetime takes
            the rows, which change nothing there but a ranking metric's, whose rows of weight 0
            still rank in their sessions), whatever the module's other metrics read; a step where
            one of its tasks has weight keeps its room (its tasks share one window). A ranking
            metric's per-task copies each follow their own task, and a metric whose value such a
            step changes (``GroupedAUC(average_groups="all")`` counts a group of zero-weight rows)
            keeps it in its window. Such a step still counts in the throughput and as a step. When
            every metric is built with ``validate_args=False`` nothing is read, and the step takes
            its room in every window (see ``docs/windows.md``).
        throughput: add a :class:`~torchmetrics_ext.Throughput` counting the examples of each step
            (or this one, e.g. with other ``warmup_steps``). The module's own starts its clock after
            half the compute interval in updates (at least 1, at most 100), so the
            first :meth:`compute` already has rates (a single-step interval's first one is ``nan``).
        compute_interval_steps: :meth:`should_compute` is true every this many updates (under
            DDP every rank calls ``update`` once per step, with empty columns when it has no data,
            so that all ranks compute together: see :meth:`should_compute`). Updates, not optimizer
            steps: under Lightning's ``accumulate_grad_batches=A`` each batch is an update, so use
            a multiple of ``A`` (see ``RecMetricCallback``).
        state_metrics: ``{name: callable}``; each callable returns a scalar or a dict of scalars
            (e.g. the optimizer's learning rate) reported by :meth:`compute`. A TorchMetrics
            ``Metric`` or ``MetricCollection`` (a running loss ``MeanMetric``), or its bound
            ``compute``, reports its ``compute()`` run afresh on every rank: under DDP all ranks
            join its sync, also a rank without an update since the last compute (whose cached
            value TorchMetrics would serve while the others wait for it), so every rank reports
            the value over all ranks' samples; :meth:`local_compute` computes it over this rank's.
            Another callable (``lambda: loss.compute() * 100``) is called as it is. Names follow
            the rule of metric names and differ from them.
        prefix: prepended to every key.
        key_style: ``"torchmetrics_ext"`` (default) or ``"torchrec"`` (TorchRec's key layout).
        from_logits: ``True``: the prediction columns hold logits. Every metric the module builds
            (registry names, option dicts, classes and factories with a ``from_logits`` parameter) is
            built with ``from_logits=True`` where its class takes the option; metrics of real values
            without it are fed ``sigmoid(logits)`` and ranking metrics rank the scores as given (see
            **Logits** below). ``False``: they hold probabilities, and every metric the module builds
            gets ``from_logits=False``. An option dict's own ``from_logits``, a factory's bound one and
            a metric object's must agree with it. ``None`` (the default): the metrics say, as they
            are built (a metric built with ``from_logits=True`` makes the predictions logits).
        metric_tasks: ``{metric name: [task names]}``, the tasks a metric reads (a regression head
            next to binary ones: ``{"auc": ["click"], "mse": ["watch_time"]}``; a list, a tuple, a
            1-D NumPy array or a pandas ``Index``/``Series`` of names, as ``tasks`` takes; a string
            alone is refused); a metric not named reads every task, and ``None`` (the default)
            changes nothing. Such a metric is built for its own tasks (``num_tasks=len(...)``), fed
            their rows of the stacked batch and reported for them alone (in the module's task order);
            each task is checked against the strictest domain of the metrics that read it, and metrics
            of values are fed ``sigmoid`` only of the tasks that hold logits. A ranking metric keeps
            one copy per task it reads. Only the tasks grouped, ``Segmented`` and ranking metrics
            read need (and have read) their id columns (``group_id_name``, ``session_id_name``).

    Keys (stable; documented in ``docs/module.md``):

    * ``f"{prefix}{metric}/{task}"`` lifetime values, ``f"{prefix}{metric}/{task}/window"``
      window values; a dict-valued metric (``RankingMetrics``, ``HindsightTargetPR``) gives
      ``f"{metric}.{entry}"``, and a ``Segmented`` metric ``f"{metric}.{g}"`` for each segment id ``g``
      (its ids read from the tasks' ``group_id_name`` column). Every value is one number per task.
    * ``f"{prefix}throughput/{name}"`` for ``lifetime_throughput``, ``window_throughput``,
      ``total_examples``; ``f"{prefix}{state}"`` (or ``f"{prefix}{state}/{entry}"``) for state metrics.
    * ``key_style="torchrec"``: ``f"{prefix}{namespace}-{task}|lifetime_{name}"`` and
      ``...|window_{name}`` with TorchRec's namespace and name for a metric that computes
      TorchRec's value (``ne-click|lifetime_ne``; ``ne-click|lifetime_logloss`` for
      ``LogLoss(unit="bits")``: :func:`~torchmetrics_ext.registry.torchrec_names`), the metric's
      own name otherwise (``recall@10-click|lifetime_recall@10``: TorchRec has no per-query
      recall), ``throughput-throughput|lifetime_throughput`` and ``{state}-{state}|{entry}``; a
      ``Segmented`` metric's segment ``g`` adds ``_{g}`` (``segmented_ne-click|lifetime_segmented_ne_0``).
    * Order, the same for every metric and both key styles: the metrics as given, a dict-valued
      metric's entries, the tasks in order, then each task's lifetime value before its window
      value (``ne/click``, ``ne/click/window``, ``ne/buy``, ...); then the throughput and state metrics.

    Raises:
        ValueError: bad arguments, two tasks reading the same prediction, label and weight columns (e.g. two
            plain task names), a registry name or option the registry or the metric's class refuses (named
            first, ``Metric 'auc_binned' (auc): ...``, an unknown name with the closest known one, ``num_tasks``
            among the options: it comes from the tasks), metrics built for another number of tasks, metrics
            needing an id column a task they read does not name, metrics that disagree on ``from_logits``
            (with each other, with ``metric_tasks`` those that read one task, named with it; or with the
            module's ``from_logits``: a metric object, a factory's result or an option dict's ``from_logits``
            of the other value, naming them), one metric
            object given under two names, a ranking metric built with ``padding_value`` (the module feeds flat
            rows, which have no padding slots), or a metric named ``throughput`` whose key for a task named like
            a throughput entry (``total_examples``) would be the throughput's, or with ``key_style="torchrec"``
            a metric whose own name is a TorchRec key (:data:`~torchmetrics_ext.registry.TORCHREC_SELF_NAMED`:
            ``"ndcg"``, ``"recall"``) while it does not compute that TorchRec value (the message names the
            options that would), or a metric named like an attribute of the container that holds it
            (``"reset"``, ``"values"``, ``"training"``); ``metric_tasks`` naming an unknown metric or
            task, an empty list, a task twice, or leaving a task that no metric reads (all before
            anything is built).
        TypeError: a factory whose signature cannot take the call ``factory(num_tasks=T)`` (e.g.
            ``lambda T: ...``, or ``functools.partial(tmx.AUC, 2)``, whose bound first argument is
            ``num_tasks``: named with the metric, before the call), or a metric the module cannot
            feed: not one of the package's metrics, one whose
            ``update`` takes other inputs than each task's ``(preds, target, weights)`` columns
            (``TensorWeightedAverage``, ``NumMissingLabels``, ``MultiLabelPrecision``,
            ``MulticlassRecallAtK``, ``TowerQPS``...: ``input_domains`` is ``None``; a ``Segmented`` of
            such a metric), or one whose value per task is not a number (``Reliability``'s curves:
            ``value_ndim``). A ``Segmented`` of a metric that takes the columns is fed, its segment
            ids read from the tasks' ``group_id_name`` column (a ``ValueError`` above when a task it reads names none).

    Note:
        **Compute groups** are formed explicitly: metrics whose
        :attr:`~torchmetrics_ext.TaskMetric.shared_statistics_key` are equal (same kernel, same
        state names and settings, e.g. ``NormalizedEntropy`` and ``LogLoss``, ``Calibration``
        and ``CTR``, exact ``AUC`` and ``AUPRC``) update once; nothing is merged because its
        states happen to look alike. The group's other metrics read its first one's states at
        ``compute()``: an ``update``, ``merge_state`` or load made on one of them directly
        (``module.metrics["calibration"]``) is replaced there, with a ``UserWarning``, and so is a
        ``reset()`` of one of them alone; a ``reset()`` of the first one alone clears the states
        they read, which ``compute()`` says the same way (reset the module, or every metric of the
        group). A member copied alone (``copy.deepcopy``, pickle) holds its group's states as a
        metric of its own.
        **Validation** checks the strictest domain of all metrics
        (e.g. probabilities and binary labels when ``AUC`` is present) in one pass with one
        host synchronisation (with ``metric_tasks``, each task against the strictest domain of the
        metrics that read it: the rows of each distinct domain, all read back in the same one host
        synchronisation per step); a rejected step changes no metric.
        **Sync**: ``compute()`` gathers every state of every metric with a number of collectives that
        depends on the state dtypes only (:func:`~torchmetrics_ext.utilities.distributed.fused_gather`); TorchMetrics
        reduces them as in its own sync, so the values are identical. The ``state_dict`` holds
        every metric state and the task names in order: ``load_state_dict`` refuses a checkpoint of
        other tasks or another order (a ``RuntimeError``, ``strict`` or not), whose states would
        resume under other tasks' keys. **Logits**: when the module is built with ``from_logits=True``,
        or a metric with ``from_logits=True``, the predictions are logits for every metric; those of
        real-valued predictions built without the option (``WeightedMSE()`` objects,
        ``WeightedSumPredictions``, ...) are fed ``sigmoid(logits)`` (the MSE is the Brier score), ranking
        metrics rank the scores as given.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import RecMetricModule, RecTaskInfo
        >>> tasks = [RecTaskInfo("click", "click_label", "click_pred"), RecTaskInfo("buy", "buy_label", "buy_pred")]
        >>> module = RecMetricModule(tasks, {"ne": "ne", "ctr": "ctr"}, throughput=False)
        >>> module.update({"click_pred": torch.tensor([0.2, 0.7]), "click_label": torch.tensor([0, 1]),
        ...                "buy_pred": torch.tensor([0.1, 0.4]), "buy_label": torch.tensor([0, 1])})
        >>> {key: round(value.item(), 4) for key, value in module.compute().items()}
        {'ne/click': 0.4183, 'ne/buy': 0.737, 'ctr/click': 0.5, 'ctr/buy': 0.5}

        Options as in a config: a binned AUC under a name of its own, and NE without options.

        >>> metrics = {"auc_binned": {"metric": "auc", "num_bins": 1000}, "ne": None}
        >>> module = RecMetricModule(tasks, metrics, throughput=False)
        >>> module.metrics["auc_binned"].num_bins
        1000

        A model whose heads give logits: every metric is built for logits (NE of ``sigmoid(logits)``).

        >>> module = RecMetricModule(["click"], {"ne": "ne", "auc": "auc"}, throughput=False, from_logits=True)
        >>> module.update({"prediction": torch.tensor([1.5, -0.8, 0.4, -2.0]), "label": torch.tensor([1, 0, 0, 1])})
        >>> {key: round(value.item(), 4) for key, value in module.compute().items()}
        {'ne/click': 1.3029, 'auc/click': 0.5}
    """

    def __init__(
        self,
        tasks: Sequence[RecTaskInfo | str],
        metrics: Mapping[str, Metric | Callable[..., Metric] | str | Mapping[str, Any] | None] | Sequence[str],
        *,
        window_size: int | None = None,
        throughput: bool | Throughput = True,
        compute_interval_steps: int = 100,
        state_metrics: Mapping[str, Callable[[], Any]] | None = None,
        prefix: str = "",
        key_style: str = "torchmetrics_ext",
        from_logits: bool | None = None,
        metric_tasks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.tasks = _check_tasks(tasks)
        num_tasks = len(self.tasks)
        names = None if isinstance(metrics, Mapping) else _listed(metrics)
        if names:  # registry names, as `from_config` takes them (a list, a tuple, a 1-D array of strings)
            metrics = _metric_specs(names, "`metrics`")
        if not isinstance(metrics, Mapping) or not metrics:
            raise refusal(  # a str or an int is a wrong type, an empty dict or list a wrong value
                f"Expected `metrics` to be a non-empty dict of name -> metric (or a list of registry names), "
                f"got {metrics!r}.",
                wrong_type=names is None and not isinstance(metrics, Mapping),
            )
        if window_size is not None:
            window_size = check_int("window_size", window_size, 1, " or None")
        compute_interval_steps = check_int("compute_interval_steps", compute_interval_steps, 1)
        text = as_str(prefix)  # a NumPy string (a 0-dim array too) as its Python string
        if text is None:
            raise WrongTypeError(f"Expected `prefix` to be a string, got {prefix!r}.")
        prefix = text
        key_style = check_choice("key_style", key_style, KEY_STYLES)
        if not isinstance(throughput, Throughput):
            flag = as_bool(throughput)  # NumPy bools too, as every flag
            if flag is None:
                raise WrongTypeError(f"Expected `throughput` to be a bool or a Throughput, got {throughput!r}.")
            throughput = flag
        if from_logits is not None:
            logits_flag = as_bool(from_logits)  # NumPy bools too, as every flag
            if logits_flag is None:
                raise WrongTypeError(f"Expected `from_logits` to be a bool or None, got {from_logits!r}.")
            from_logits = logits_flag
        if state_metrics is not None and not isinstance(state_metrics, Mapping):
            raise WrongTypeError(f"Expected `state_metrics` to be a dict of name -> callable, got {state_metrics!r}.")
        self.state_metrics = dict(state_metrics or {})
        for name, fn in self.state_metrics.items():
            if not isinstance(name, str) or not name or not callable(fn):
                raise refusal(  # a name that is no str or a value that is no callable: a wrong type
                    f"Expected `state_metrics` to map names to callables, got {name!r}: {fn!r}.",
                    wrong_type=not isinstance(name, str) or not callable(fn),
                )
            _check_metric_name(name)
            if name in metrics or name == "throughput":
                raise ValueError(f"State metric {name!r} has the name of a metric; give it another name.")
        self.window_size = window_size
        self.compute_interval_steps = compute_interval_steps
        self.prefix = prefix
        self.key_style = key_style
        self._step = 0
        self._names = list(metrics)  # keys come out in this order
        # per metric reading fewer than every task, the positions of the tasks it reads (module order)
        self._subsets = _check_metric_tasks(metric_tasks, self._names, [t.name for t in self.tasks])
        # per metric name, further Windowed options (from_torchrec_config: TorchRec's window rules)
        window_options = {name: dict(options) for name, options in (_WINDOW_OPTIONS.get() or {}).items()}
        # from_torchrec_config with should_validate_update: a step whose weights are all zero is skipped by
        # every metric, also without windows and when every metric is unvalidated (with windows and validation,
        # each metric gives such a step no room in its window without it: see `_update_units`)
        self._skip_zero_weight_steps = False

        stacked: dict[str, TaskMetric] = {}
        per_task: dict[str, list[TaskMetric]] = {}
        seen: dict[int, str] = {}  # id of each metric object -> its name
        for name, spec in metrics.items():
            # built first: a key that names its registry entry gets the registry's error ("ne\n": did you mean 'ne'?)
            subset = self._subsets.get(name)
            metric = _instantiate(name, spec, num_tasks if subset is None else len(subset), from_logits)
            _check_metric_name(name)
            first = seen.setdefault(id(metric), name)
            if first != name:  # one object cannot hold two metrics' states (nor be reset for one of them)
                raise ValueError(
                    f"Metrics {first!r} and {name!r} are the same object: pass separate instances "
                    "(e.g. `copy.deepcopy`), or one name (metrics that share statistics are grouped for you)."
                )
            held = _held_by(metric)
            if held is not None:  # another live module (train and val) or Windowed holds it
                raise ValueError(
                    f"Metric {name!r} ({type(metric).__name__} instance) already belongs to {held}: one object "
                    "would hold the states of both (each would count the other's samples, and a validation reset "
                    "would wipe the training values). Give each module its own metrics: registry names, classes, "
                    "factories such as `lambda num_tasks: tmx.AUC(num_tasks=num_tasks, from_logits=True)`, "
                    "or `copy.deepcopy` of the instances."
                )
            if metric.has_task_dim:
                if subset is not None and metric.num_tasks != len(subset):
                    raise ValueError(
                        f"Metric {name!r} is built for {metric.num_tasks} task(s), `metric_tasks` gives it "
                        f"{len(subset)}: build it with num_tasks={len(subset)} (or pass its class)."
                    )
                if subset is None and metric.num_tasks != num_tasks:
                    raise ValueError(
                        f"Metric {name!r} is built for {metric.num_tasks} task(s), the module has {num_tasks}: "
                        f"build it with num_tasks={num_tasks} (or pass its class)."
                    )
                stacked[name] = metric
            else:
                copies = num_tasks if subset is None else len(subset)  # one per task it reads
                if getattr(metric, "queries_complete_per_batch", False) and metric.empty_target_action == "error":
                    # it would raise inside its own update, after other metrics took the step
                    raise ValueError(
                        f"Metric {name!r} ranks each step in update with empty_target_action='error', which "
                        "raises there, after the module's other metrics have taken the step. The module rejects "
                        "a step before any metric changes: use 'skip', 'zero' or 'one' (or rows kept until "
                        "compute, queries_complete_per_batch=False, where 'error' raises at compute)."
                    )
                if getattr(metric, "padding_value", None) is not None:
                    # the module feeds flat rows grouped by session ids, where the metric refuses it
                    raise ValueError(
                        f"Metric {name!r} is built with padding_value={metric.padding_value!r}, which marks padded "
                        "(queries, candidates) input; the module feeds each task's rows flat, grouped by session "
                        "ids, with no padding slots: build it without padding_value."
                    )
                if copies > 1 and holds_anything(metric) and not _states_as_built(metric):
                    # its copies, one per task, would each count the rows it holds (fed for no task) in every task
                    raise ValueError(
                        f"Metric {name!r} ({type(metric).__name__}) already holds rows (updated, merged or loaded), "
                        f"which no task's columns gave: the module keeps one copy of it per task, and each copy would "
                        f"count them in every one of the {copies} tasks. Give it before any update (or `reset()` "
                        "it), or as a registry name, class or factory."
                    )
                per_task[name] = [metric] + [copy_metric(metric) for _ in range(copies - 1)]
        _check_unit_names(list(stacked), list(per_task))
        self._needs_groups = [n for n, m in stacked.items() if "groups" in inspect.signature(m.update).parameters]
        # stacked metrics of session ids (SessionPairwiseAUC): each task's session_id_name column, as ranking metrics
        self._needs_sessions = [n for n, m in stacked.items() if "sessions" in inspect.signature(m.update).parameters]
        # Segmented metrics: their segment ids are the tasks' group_id_name column (TorchRec's grouping_keys)
        self._segments = segment_counts(stacked)
        # the tasks whose group ids (one column for all) and session ids the module reads: those its grouped
        # and ranking metrics read (with `metric_tasks`, a task none of them reads may name no id column)
        self._group_tasks, self._session_tasks = _check_id_columns(
            self.tasks, self._needs_groups + list(self._segments), list(per_task) + self._needs_sessions, self._subsets
        )
        # TorchRec's cast_keys_to_int (set by from_torchrec_config): floating segment ids read as int64
        self._cast_segment_ids = False
        stacked_domains = {n: m.input_domains for n, m in stacked.items()}
        all_domains = stacked_domains | {n: ms[0].input_domains for n, ms in per_task.items()}
        if from_logits is not None:  # before `strictest`: the message names the module's option
            _check_module_logits(all_domains, from_logits)
        # with `metric_tasks`, metrics of different tasks may disagree on `from_logits` (binary heads of logits
        # next to heads of probabilities): the readers of each task must agree (`_task_domains` checks that)
        self._domains = _strictest_over_tasks(all_domains) if self._subsets else InputDomains.strictest(all_domains)
        # every metric built with validate_args=False: the module trusts each step as they would (no
        # value check, so no host read of the batch per step; see `_update`)
        firsts = [*stacked.values(), *(ms[0] for ms in per_task.values())]
        self._trusted = bool(firsts) and all(getattr(m, "validate_args", True) is False for m in firsts)
        if from_logits:  # logits, whatever the metrics (with none of the option, `mse` alone reads sigmoid(logits))
            self._domains = replace(self._domains, from_logits=True)
        # The predictions are logits (a metric was built with from_logits=True): metrics without
        # that option (MSE, WeightedAverage, ...) would read raw logits as values, so they are fed
        # sigmoid(logits) instead; those that do not read predictions (CTR) keep the logits, and
        # ranking copies and pairwise concordance (RegressionAUC, XAUC) rank the scores as given.
        # each task's domain: the strictest of the metrics that read it (without `metric_tasks`: the module's)
        self._task_domains = _task_domains(self.tasks, all_domains, self._subsets, self._domains, from_logits)
        # tasks checked per distinct domain, one host read for all; `None`: every task has the module's domain
        self._domain_groups = _domain_groups(self._task_domains)
        # per task, the metrics that read it asking for its domain (for the message refusing a task's column)
        self._task_owners = _task_owners(all_domains, self._subsets, self._task_domains)
        if not self._subsets:
            self._fed_probabilities = _fed_probabilities(stacked, stacked_domains, self._domains.from_logits)
        else:  # a metric reads logits where a task it reads holds them (a regression head's values stay values)
            self._fed_probabilities = frozenset().union(
                *(
                    _fed_probabilities(
                        {n: m},
                        {n: stacked_domains[n]},
                        any(self._task_domains[t].from_logits for t in self._subsets.get(n, range(num_tasks))),
                    )
                    for n, m in stacked.items()
                )
            )
        if from_logits:  # a regression head among them is read as logits too: say so (see `_module_domains`)
            firsts_by_name = {**stacked, **{n: ms[0] for n, ms in per_task.items()}}
            warn_value_heads_read_as_logits(self.tasks, firsts_by_name, all_domains, self._subsets)

        # explicit compute groups: only metrics that provably share statistics
        leaders: dict[Any, str] = {}
        self._leader: dict[str, str] = {}
        for name, metric in stacked.items():
            shared = metric.shared_statistics_key
            rule = tuple(sorted(window_options.get(name, {}).items()))  # one window rule per group
            key = (
                ("alone", name)
                if shared is None
                else (shared, metric.sync_on_compute, id(metric.process_group), rule, self._subsets.get(name))
            )
            self._leader[name] = leaders.setdefault(key, name)
        self._groups = [
            [n for n in stacked if self._leader[n] == lead] for lead in dict.fromkeys(self._leader.values())
        ]
        # TorchRec's key per metric (the metric's name where it does not compute TorchRec's value)
        self._torchrec, self._torchrec_own = _torchrec_names(
            {**stacked, **{n: ms[0] for n, ms in per_task.items()}}, _TORCHREC_KEYS.get(), check=key_style == "torchrec"
        )
        held = _held_by(throughput) if isinstance(throughput, Throughput) else None
        if held is not None:
            raise ValueError(
                f"`throughput` (a Throughput instance) already belongs to {held}: one object "
                "would count both modules' examples (and a validation reset would wipe the training "
                "throughput). Give each module its own: `throughput=True`, or another `Throughput(...)`."
            )
        if throughput is not False and key_style != "torchrec" and "throughput" in metrics:
            clash = [t.name for t in self.tasks if t.name in Throughput.entries]
            if clash:  # "throughput/<task>" would be one of the throughput's own keys
                raise ValueError(
                    f"Metric 'throughput' of task {clash[0]!r} would be logged as {prefix}throughput/{clash[0]}, "
                    "a key of the module's throughput: rename the metric or the task, or pass throughput=False."
                )
        # A compute group's metric given already updated (merged, loaded) starts empty, whichever of the group it
        # is: the first one's samples would otherwise be every member's, a later one's dropped at compute. Said
        # before anything changes: a warning raised as an error (-W error) refuses the module, and the caller's
        # metric must then be as it was (the reset comes once the module is built)
        carried = [n for g in self._groups if len(g) > 1 for n in g if holds_anything(stacked[n])]
        if carried:
            _warn_carried_samples(carried, self._groups)
        # Each metric is one unit: the metric itself, or Windowed(metric) with lifetime and window
        # children. MetricCollection shares states by reference only at its top level, where a
        # Windowed wrapper holds none, so group members are fed by the module instead: only
        # leaders update; members read their leader's states at compute (``merge_state``).
        wrap: Callable[[str, TaskMetric], Metric] = lambda name, metric: metric  # noqa: E731
        if window_size is not None:
            wrap = lambda name, metric: _windowed(metric, window_size, window_options.get(name, {}))  # noqa: E731
        try:
            units: dict[str, Metric | MetricCollection] = {name: wrap(name, metric) for name, metric in stacked.items()}
            self.metrics = MetricCollection(units, compute_groups=False) if units else None
            self.ranking = nn.ModuleDict(
                {name: nn.ModuleList([wrap(name, m) for m in ms]) for name, ms in per_task.items()}
            )
        except BaseException:
            # a Windowed built before the failure holds its metric while the traceback keeps it alive (a
            # notebook keeps the last one): the caller's metrics are free for the next try
            release_ownership([*stacked.values(), *(m for ms in per_task.values() for m in ms)])
            raise
        self.throughput: Metric | None = (
            throughput
            if isinstance(throughput, Throughput)
            else Throughput(warmup_steps=_default_warmup_steps(compute_interval_steps))
            if throughput
            else None
        )
        for each in self._all_units():
            each.persistent(True)
        take_ownership(self._owned_metrics(), self)
        for name, lead in self._leader.items():
            if lead != name:  # a group member's states are its leader's: saved once, with the leader
                self._unit(name).persistent(False)
        for name in carried:
            self._unit(name).reset()
        self._mark_members()  # a reset of a member's own counts from here
        self._num_copies = sum(len(ms) for ms in per_task.values())
        # per ranking copy, in `_updated_units`' order: (the task it reads, the first copy of its metric)
        self._copy_tasks = _copy_tasks(list(per_task), self._subsets, num_tasks)
        # set by from_torchrec_config: which keys TorchRec reports per metric (window-only AUC, task subsets)
        self._reported: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {}

    # ------------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RecMetricModule:
        """Build a module from a plain dict (e.g. parsed YAML/JSON), metrics by registry name.

        Args:
            config: ``{"tasks": [...], "metrics": ..., "window_size": ..., "throughput": ...,
                "compute_interval_steps": ..., "prefix": ..., "key_style": ..., "from_logits": ...}``
                (the constructor's arguments; ``from_logits: true`` for a model whose heads give
                logits builds every metric for them). ``tasks`` are
                names, dicts of :class:`RecTaskInfo` fields or ``RecTaskInfo`` objects (as the
                constructor takes); ``metrics`` is a list of registry
                names, or a dict ``{key: kwargs}`` where ``kwargs`` may name the registry entry
                with ``"metric"`` (``{"auc_binned": {"metric": "auc", "num_bins": 10000}}``) and
                ``None`` (YAML's ``ne:`` with nothing after it) is no options, or ``{key: registry name}``
                (``{"cal": "calibration"}``, the same as ``{"cal": {"metric": "calibration"}}``). The constructor takes
                the same ``metrics`` (and builds them): a config adds only the check that its
                entries are names or options, not metric objects.

        Returns:
            The module.

        Raises:
            ValueError: unknown config keys, task fields or metric names (naming them, the closest known
                ones and the list of known ones),
                ``tasks`` not a list, a task of another type, a metric named twice, a metric name or
                ``"metric"`` option that is not a str (naming the entry); an entry of ``metrics`` that the
                registry or the metric's class refuses (an unknown option: the message lists those
                it takes) is named first (``Metric 'auc_binned' (auc): ...``).

        Examples:
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule.from_config({
            ...     "tasks": [{"name": "click", "session_id_name": "query"}],
            ...     "metrics": {"ne": {}, "auc": {"num_bins": 1000}, "ndcg@10": {}},
            ...     "throughput": False,
            ... })
            >>> module.metric_names
            ['ne', 'auc', 'ndcg@10']
            >>> config = {"tasks": ["click"], "metrics": ["ne", "auc"], "from_logits": True, "throughput": False}
            >>> RecMetricModule.from_config(config).input_domains.from_logits
            True
            >>> config = {"tasks": ["click"], "metrics": {"cal": "calibration"}, "throughput": False}
            >>> RecMetricModule.from_config(config).metric_names  # a key of your own naming its registry entry
            ['cal']
        """
        allowed = (
            "tasks",
            "metrics",
            "window_size",
            "throughput",
            "compute_interval_steps",
            "prefix",
            "key_style",
            "from_logits",
            "metric_tasks",
        )
        if not isinstance(config, Mapping):
            raise WrongTypeError(f"Expected the config to be a dict, got {type(config).__name__}.")
        unknown = sorted((key for key in config if key not in allowed), key=str)
        if unknown or "tasks" not in config or "metrics" not in config:
            which = f"Unknown config keys {unknown}{_close_to(unknown, allowed)}; e" if unknown else "E"
            raise ValueError(
                f"{which}xpected config keys among {allowed} with 'tasks' and 'metrics', got {sorted(config, key=str)}."
            )
        raw_tasks = config["tasks"]
        if isinstance(raw_tasks, (str, Mapping)) or not isinstance(raw_tasks, Sequence):
            raise WrongTypeError(
                f"Expected config 'tasks' to be a list of task names, dicts or RecTaskInfo, got {raw_tasks!r}."
            )
        tasks = _check_tasks([_task_from_config(task) for task in raw_tasks])
        # the config's schema (names, or options per key: no metric objects), its errors naming the config;
        # the constructor then builds the metrics from the same entries
        _metric_entries(config["metrics"])
        options = {k: config[k] for k in allowed[2:] if k in config}
        return cls(tasks, config["metrics"], **options)

    @classmethod
    def from_torchrec_config(
        cls,
        config: Any,
        *,
        state_metrics_mapping: Mapping[Any, Any] | None = None,
        prefix: str = "",
    ) -> RecMetricModule:
        """The module equivalent to TorchRec's ``MetricsConfig``, reporting TorchRec's keys.

        A migration is one line: the same config in, the same dashboard keys out
        (``key_style="torchrec"``), with our TorchRec-compatible options turned on (log loss in
        bits, TorchRec's calibration-free NE scaling, ...; see ``docs/migration_torchrec.md``).
        TorchRec is not imported; it need not be installed.

        Args:
            config: a ``torchrec.metrics.metrics_config.MetricsConfig`` or a dict of the same fields:
                ``rec_tasks`` (``RecTaskInfo`` or dicts with ``name``, ``label_name``,
                ``prediction_name``, ``weight_name``), ``rec_metrics`` (``{RecMetricEnum or its
                value: RecMetricDef or dict of rec_tasks / rec_task_indices / window_size /
                arguments}``), ``throughput_metric`` (``ThroughputDef`` or dict of ``window_size``
                seconds and ``warmup_steps``), ``state_metrics``, ``compute_interval_steps``,
                ``should_validate_update`` (a step whose weights are all zero is skipped by every
                metric, as TorchRec skips it: it takes no room in the windows; supported when
                TorchRec would skip it for every task at once, see ``docs/module.md``; the module's
                windows skip such a validated step without it too, so it matters only when every
                metric is built with ``validate_args=False``, where it keeps the weights' read, or
                for ``grouped_auc``/``grouped_auprc``, whose zero-weight groups count: without it
                their lifetime and window keep the step; without it, a metric whose every task
                weighs nothing in a step, such as one reading only a conversion task weighted by
                clicks at a step without a click, skips it where TorchRec's window takes it: the
                module warns once, at the first such step) and
                ``fused_update_limit`` (0 or 1: TorchRec's fusion of several steps into one
                window entry is refused). TorchRec's other execution options
                (``rec_compute_mode``, ``compute_on_all_ranks``, ...) are accepted and have no
                counterpart: the module always fuses tasks and states and syncs once per compute,
                returning the synced values on every rank (TorchRec's default computes on rank 0
                alone); ``min/max_compute_interval``, with which TorchRec resets
                ``compute_interval_steps`` from the time between its first two computes, are not
                applied, with a warning.
            state_metrics_mapping: ``{StateMetricEnum or its value: object}`` for the configured
                ``state_metrics``; each object has ``get_metrics()`` (as in TorchRec) or is a
                callable returning the same dict.
            prefix: prepended to every key.

        Returns:
            The module. Every metric keeps the config's window (one size for all) by TorchRec's
            rules: the metrics TorchRec windows with its ``WindowBuffer`` (all but the AUC family)
            keep at most its 1000 newest updates (``Windowed(max_updates=1000)``), and under DDP each
            rank keeps ``ceil(window_size / world_size)`` samples. The keys each TorchRec metric
            reports are reported for the tasks its ``RecMetricDef`` names, and nothing else
            (TorchRec's AUC, grouped AUC and RAUC are window-only: their lifetime samples are not
            kept). Grouped AUC/AUPRC read TorchRec's ``"grouping_keys"`` column, and so does
            ``segmented_ne`` (or the column its ``grouping_keys`` argument names) as segment ids;
            ``session_pairwise_auc`` reads its ``session_key`` column (``"session_id"``) as session ids.
            ``reset()`` leaves the throughput running, as TorchRec's does. The throughput counts the rows each step
            holds (summed over ranks), where TorchRec adds its configured ``batch_size *
            world_size`` every step: the two differ on a partial or variable-size batch.

        Raises:
            ValueError: unknown fields, unsupported TorchRec metrics or arguments (the message lists
                the supported ones), a task defined twice differently, different window sizes,
                ``fused_update_limit`` above 1, or ``should_validate_update`` over tasks with
                different weight columns where TorchRec skips each task's zero-weight steps apart.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> task = {"name": "click", "label_name": "click_label", "prediction_name": "click_pred"}
            >>> config = {  # a TorchRec MetricsConfig, as a dict (the dataclass works the same)
            ...     "rec_tasks": [task],
            ...     "rec_metrics": {
            ...         "ne": {"rec_task_indices": [0], "window_size": 1000, "arguments": {"include_logloss": True}},
            ...         "auc": {"rec_task_indices": [0], "window_size": 1000},
            ...     },
            ... }
            >>> module = RecMetricModule.from_torchrec_config(config)
            >>> module.update({"click_pred": torch.tensor([0.2, 0.7, 0.4]), "click_label": torch.tensor([0, 1, 1])})
            >>> {key: round(value.item(), 4) for key, value in module.compute().items()}
            {'ne-click|lifetime_ne': 0.7835, 'ne-click|window_ne': 0.7835, 'ne-click|lifetime_logloss': 0.7195,
             'ne-click|window_logloss': 0.7195, 'auc-click|window_auc': 1.0}
        """
        from torchmetrics_ext.torchrec_config import read_torchrec_config

        plan = read_torchrec_config(config, state_metrics_mapping)
        token = _WINDOW_OPTIONS.set(plan.window_options)  # TorchRec's window rules, per metric
        keys_token = _TORCHREC_KEYS.set({name: (ns, metric_name) for name, (ns, metric_name, *_) in plan.keys.items()})
        try:
            module = cls(
                [RecTaskInfo(**task) for task in plan.tasks],
                plan.metrics,
                window_size=plan.window_size,
                throughput=plan.throughput or False,
                compute_interval_steps=plan.compute_interval_steps,
                state_metrics=plan.state_metrics,
                prefix=prefix,
                key_style="torchrec",
                metric_tasks=plan.metric_tasks or None,
            )
        finally:
            _WINDOW_OPTIONS.reset(token)
            _TORCHREC_KEYS.reset(keys_token)
        module._skip_zero_weight_steps = plan.skip_zero_weight_steps
        if not plan.skip_zero_weight_steps and plan.window_size is not None:
            # the metrics whose windows skip a step where their tasks weigh nothing (TorchRec's take it)
            module.__dict__["_torchrec_zero_steps"] = {
                name: tuple(module._subsets.get(name, range(len(module.tasks))))
                for name in module.metric_names
                if isinstance(module._unit(name), Windowed) and module._unit(name).__dict__.get("_skips_zero_weights")
            }
        module._cast_segment_ids = plan.cast_segment_ids  # segmented_ne's cast_keys_to_int
        for name, (namespace, metric_name, parts, task_names) in plan.keys.items():
            module._torchrec[name] = (namespace, metric_name)  # one TorchRec key may hold two values (auprc)
            module._reported[name] = (parts, task_names)
        module.__dict__.pop("_step_plan", None)  # what is window-only follows `_reported`
        module.__dict__.pop("_shared_window", None)
        return module

    @property
    def metric_names(self) -> list[str]:
        """The metric names (keys of ``metrics`` given at construction), in that order.

        Examples:
            >>> from torchmetrics_ext import AUC, RecMetricModule
            >>> metrics = {"ne": "ne", "auc_binned": AUC(num_bins=1000)}  # registry names or metrics
            >>> RecMetricModule(["click"], metrics, throughput=False).metric_names
            ['ne', 'auc_binned']
        """
        return list(self._names)

    @property
    def input_domains(self) -> InputDomains:
        """What every step's columns must satisfy: the strictest domains over all metrics (checked once per step).

        With ``metric_tasks`` this is the strictest over all metrics still; each task is checked against
        the strictest domain of the metrics that read it.

        Examples:
            >>> from torchmetrics_ext import RecMetricModule
            >>> RecMetricModule(["click"], {"mse": "mse", "auc": "auc"}, throughput=False).input_domains
            InputDomains(preds='probability', target='binary', from_logits=False, float32_weights=True)
        """
        return self._domains

    @property
    def compute_groups(self) -> list[list[str]]:
        """Metric names that provably share statistics: the first of each group updates for all.

        Examples:
            >>> from torchmetrics_ext import RecMetricModule
            >>> metrics = {"ne": "ne", "log_loss": "log_loss", "auc": "auc"}
            >>> RecMetricModule(["click"], metrics, throughput=False).compute_groups  # NE, log loss: the same sums
            [['ne', 'log_loss'], ['auc']]
        """
        return [list(group) for group in self._groups]

    def _unit(self, name: str) -> Metric:
        """The metric (or its ``Windowed`` wrapper) of a stacked metric name."""
        assert self.metrics is not None
        return getattr(self.metrics, name)  # the module itself: MetricCollection copies no state here

    def _copies(self, name: str) -> list[Metric]:
        """One unit per task for a metric without a task dimension."""
        return list(self.ranking[name])  # type: ignore[call-overload]

    def _all_units(self) -> Iterator[Metric]:
        if self.metrics is not None:
            yield from self.metrics.values(copy_state=False)
        for name in self.ranking:
            yield from self._copies(name)
        if self.throughput is not None:
            yield self.throughput

    def _owned_metrics(self) -> list[Metric]:
        """The metric objects it updates: each unit's metric (a ``Windowed`` unit's lifetime), the throughput."""
        return [unit._child("lifetime") if isinstance(unit, Windowed) else unit for unit in self._all_units()]

    def __getstate__(self) -> dict[str, Any]:
        """``nn.Module``'s, without the shared window buffer (a copy lays its metrics' windows out afresh)."""
        self._end_load()  # what a load ended outside every wrapper left (see utilities/load_guard.py)
        for member, _ in self._member_parts():  # copied with their leaders: linked again in `__setstate__`
            copied_with_source(member)
        state = dict(super().__getstate__())
        state.pop("_shared_window", None)
        # a metric's wrapped `compute` pickles as its metric (see `_ComputeOf`)
        state["state_metrics"] = {name: _pickled_state_metric(fn) for name, fn in self.state_metrics.items()}
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> RecMetricModule:
        """A deep copy; one of this module alone (``clone``, ``copy.deepcopy(module)``) shares its state metrics.

        A state metric reads something outside the module (an optimizer's learning rate, a running loss
        ``MeanMetric`` that ``training_step`` updates), so a copy made for another stage must read the same
        object: a copy of it would be frozen at the moment of the copy (a bound method of an optimizer
        wrapper or a ``LightningModule`` copied that whole object, a ``MeanMetric`` copy is never updated).
        Inside a copy of an object that holds the module (``copy.deepcopy(lightning_module)``, where the
        objects the state metrics read are copied too) they are copied with it, as any attribute.
        """
        if not memo:  # the copy starts here: the state metrics stay the objects they are
            for fn in self.state_metrics.values():
                metric = _metric_of(fn)  # a metric's `compute` is copied as its metric (see `_ComputeOf`)
                for kept in (fn, metric) if metric is not None else (fn,):
                    memo[id(kept)] = kept
        # under torch.inference_mode() (a Lightning validation hook) too: the copy's tensors are ordinary
        return deepcopy_ordinary(self, memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """``nn.Module``'s; a copy (``copy.deepcopy``, pickle) owns its metrics' copies: no other module takes them."""
        plan = state.get("_step_plan")
        if (
            not isinstance(plan, _StepPlan)
            or len(plan.trusted) != len(plan.updated)
            or any(isinstance(ids, bool) for _, ids, _ in plan.updated)  # a plan from before the id keywords
        ):
            state.pop("_step_plan", None)  # pickled by a version with another plan: found again
        ordinary_tensors(state)  # unpickled under inference mode: tensors written in place are ordinary
        state_metrics = state.get("state_metrics") or {}
        state["state_metrics"] = {
            name: fn.metric.compute if isinstance(fn, _ComputeOf) else fn for name, fn in state_metrics.items()
        }
        state["_storages_owned"] = False  # unpickled in a spawned rank, its states may be in shared memory
        super().__setstate__(state)
        take_ownership(self._owned_metrics(), self)
        self.__dict__.setdefault("_segments", {})  # pickled before the module fed Segmented metrics: none
        self.__dict__.setdefault("_cast_segment_ids", False)
        self.__dict__.setdefault("_subsets", {})  # pickled before `metric_tasks`: every metric reads every task
        self.__dict__.setdefault("_task_domains", [self._domains] * len(self.tasks))
        self.__dict__.setdefault("_domain_groups", None)
        self.__dict__.setdefault("_task_owners", None)  # pickled before the column's message named them
        # pickled before the id columns were read per reading task: every task's (each named one then)
        self.__dict__.setdefault("_group_tasks", tuple(range(len(self.tasks))))
        self.__dict__.setdefault("_session_tasks", tuple(range(len(self.tasks))))
        self.__dict__.setdefault("_needs_sessions", [])
        if "_copy_tasks" not in state:  # pickled before `metric_tasks`: one copy per task of each ranking metric
            self._copy_tasks = _copy_tasks(list(self.ranking), {}, len(self.tasks))
        # each member's copy came linked to its copied leader, with its marks (see `copied_with_source`): what
        # is pending (a reset of the leader or of a member alone, a member's own change) is said at the copy's
        # first compute, as at the original's; one that came without (an earlier version's standalone copy)
        # reports its copied leader's states again, nothing of its own
        self._mark_members(keep_linked=True)

    def _updated_units(self) -> Iterator[tuple[Metric, str, bool]]:
        """``(unit, id keyword, fed probabilities)`` for every updated unit: group leaders, then per-task copies.

        The id keyword names how the unit takes an id column: ``"groups"`` (grouped AUC) or
        ``"segments"`` (``Segmented``) the group ids, ``"sessions"`` (``SessionPairwiseAUC``) the tasks'
        session ids, ``""`` none. A group's members share its leader's
        kernel and ``from_logits``, so the leader's input is theirs.
        """
        for lead in dict.fromkeys(self._leader.values()):
            ids = "groups" if lead in self._needs_groups else "segments" if lead in self._segments else ""
            ids = "sessions" if lead in self._needs_sessions else ids
            yield self._unit(lead), ids, lead in self._fed_probabilities
        for name in self.ranking:
            for unit in self._copies(name):
                yield unit, "", False

    def _parts(self, unit: Metric) -> dict[str, TaskMetric]:
        """The task metrics inside a unit: ``{"lifetime": ..., "window": ...}`` or ``{"lifetime": unit}``."""
        if self.window_size is None:
            return {"lifetime": unit}  # type: ignore[dict-item]
        return {"lifetime": unit.lifetime, "window": unit.window}  # type: ignore[dict-item]

    # ------------------------------------------------------------------ update

    def _window_only(self) -> list[Metric]:
        """Updated units whose every group member reports its window only: their lifetime need not be kept."""
        if not self._reported:
            return []
        return [self._unit(g[0]) for g in self._groups if all(self._is_window_only(n) for n in g)]

    def update(self, model_out: Mapping[str, Tensor]) -> None:
        """Feed one step's model output to every metric of every task.

        Args:
            model_out: flat dict with every task's prediction and label columns, optional weight
                columns (weight 1 where absent) and the id columns the metrics need.

        Raises:
            KeyError: a column a task needs is missing (the message names the task and the key).
            TypeError: a column is not a tensor, predictions are not floating point, or group or
                segment ids are not integers.
            ValueError: shapes or devices disagree, or values are outside the metrics' domains
                (e.g. probabilities outside [0, 1], labels not 0/1 for AUC, negative weights, segment
                ids of ``Segmented`` metrics outside ``[0, num_segments)``); the message names the
                task and the key. Under DDP, a ``window_size`` smaller than
                the world size, on every rank at every step (an empty one too; and at ``compute``).
                Nothing is updated when a step is rejected. When every metric was built with
                ``validate_args=False`` the values are not checked (nor read back from the device):
                invalid values give undefined results, as in each metric alone.
            TorchMetricsUserError: with ``window_size``, a metric of the module synced by hand (its
                ``sync()`` called without ``unsync()``), as its own ``update`` refuses; nothing is updated.
        """
        # `torch.no_grad()` without its context-manager objects (a few microseconds per step)
        grad_enabled = torch.is_grad_enabled()
        if grad_enabled:
            torch._C._set_grad_enabled(False)
        try:
            state = self.__dict__
            if not state.get("_storages_owned", False):  # once per module and process: one dict lookup per step
                self._own_storages()
            if isinstance(model_out, Mapping) and not state.get("_weight_names_read", False):
                # at the first step that has columns (not `_step == 0`: an empty first step, a `training_step`
                # that returned None, counts as a step and would have left the names unread)
                state["_weight_names_read"] = True
                _warn_unread_weight_names(self.tasks, model_out)
            self._update(model_out)
            for unit in self._plan().window_only:  # TorchRec's window-only AUC: no lifetime samples kept
                unit.drop_lifetime_samples()  # type: ignore[operator]
                # the module's own reset of a lifetime no metric of the group reports: no leader reset alone
                forget_cleared_states(unit._child("lifetime"))  # type: ignore[operator]
        finally:
            if grad_enabled:
                torch._C._set_grad_enabled(True)

    def _own_storages(self) -> None:
        """Give the states storages of their own where the module reached a spawned process in shared memory.

        ``fabric.launch(fn, module)`` under ``strategy="ddp_spawn"`` (and ``torch.multiprocessing.spawn``)
        pickles its arguments into the ranks through ``torch.multiprocessing``, which puts every CPU
        tensor in shared memory: the ranks held one storage per state, each rank's sums landed in the
        others' (a synced ``throughput/total_examples`` of 40 for 20 samples on two ranks). Before the
        first write in a process started by ``multiprocessing``, each shared storage is copied (the
        values stay the parent's); nothing is read in the main process. A copy or an unpickled module
        checks again (see ``__setstate__``).
        """
        self.__dict__["_storages_owned"] = True
        own_storages_in_spawned_process(self)

    def _plan(self) -> _StepPlan:
        """The units a step updates (:meth:`_updated_units`), the window-only ones and their dispatch, found once.

        Units never change after construction (``from_torchrec_config`` sets what is reported
        before any update and drops the plan); copies of the module map the plan with it.
        """
        plan = self.__dict__.get("_step_plan")
        if plan is None:
            updated = list(self._updated_units())
            stacked = updated[: len(updated) - self._num_copies]
            # a TaskMetric's `update_unwrapped` skips TorchMetrics' per-call wrapper; looked up on the class: an
            # `nn.Module` without the attribute would raise and catch an `AttributeError` in its `__getattr__`
            unwrapped = [hasattr(type(unit), "update_unwrapped") for unit, *_ in stacked]
            # the leaders in `_updated_units`' order, and the tasks each reads (`None`: all)
            subsets = [self._subsets.get(lead) for lead in dict.fromkeys(self._leader.values())]
            passes = [
                (
                    fed,
                    [
                        (unit, grouped, u)
                        for (unit, grouped, f), u, sub in zip(stacked, unwrapped, subsets)
                        if f == fed and sub is None
                    ],
                )
                for fed in (False, True)
            ]
            by_subset: dict[tuple[bool, tuple[int, ...]], list[tuple[Metric, str, bool]]] = {}
            for (unit, grouped, fed), u, sub in zip(stacked, unwrapped, subsets):
                if sub is not None:
                    by_subset.setdefault((fed, sub), []).append((unit, grouped, u))
            plan = self.__dict__["_step_plan"] = _StepPlan(
                updated,
                self._window_only(),
                [(fed, units) for fed, units in passes if units],
                [unit for unit, *_ in updated if isinstance(unit, Windowed)],
                [unit._scratch if isinstance(unit, Windowed) else unit for unit, *_ in updated],
                [(fed, sub, units) for (fed, sub), units in by_subset.items()],
                [
                    tuple(g for g, (_, held) in enumerate(self._domain_groups or ()) if set(held) & set(sub))
                    for _, sub in by_subset
                ],
            )
        return plan

    def _update(self, model_out: Mapping[str, Tensor]) -> None:
        batch = self._read(model_out)
        n = batch.preds.shape[-1]
        if n > 0 and self.__dict__.get("_trusted", False) and not self._skip_zero_weight_steps:
            # every metric was built with validate_args=False: no value check and nothing read back
            # from a device (the zero-weight skip needs the weights' bounds: it keeps the check)
            ids_fit: AbstractContextManager[None] | None = None  # (no `nullcontext()` per step)
            if self._segments and batch.groups is not None:
                # segment ids outside [0, S) on the CPU: refused before any metric changes (no value read
                # unless refused), and not checked again by each Segmented metric; on a device the scatter's
                # device-side assert cannot be caught
                fewest = min(self._segments, key=self._segments.__getitem__)
                if not _unchecked_ids_fit(batch.groups, self._segments[fewest]):
                    check_segment_ids(
                        batch.groups,
                        None,
                        self._segments[fewest],
                        self.tasks[self._group_tasks[0]],
                        fewest,
                        self._cast_segment_ids,
                    )
                ids_fit = _ids_known_to_fit(batch.groups)
            weight_stack = _small_weight_stack(batch.columns[2])
            unit_weights = self._trusted_unit_weights(batch, weight_stack)
            if ids_fit is None:
                self._update_checked(batch, self._domains, unit_weights, weight_stack=weight_stack)
            else:
                with ids_fit:
                    self._update_checked(batch, self._domains, unit_weights, weight_stack=weight_stack)
            self._count_step(n)
            return
        if n > 0:
            domains = self._domains
            given = batch.given_weights
            # small CPU steps read their weight columns as one stack, reused by the weighted kernels; with an
            # exact AUC (`float32_weights`) too: the stack's largest weight and smallest positive one are
            # the columns' extremes, so it passes float32's range exactly when every column does
            weight_stack = _small_weight_stack(batch.columns[2])
            # a windowed metric or ranking copy that reads some tasks only needs each task's bounds (whether its
            # weights are all zero, see `_zero_weight_tasks`): the columns are then read one by one, not stacked
            per_task = self.window_size is not None and bool(self._num_copies or self._subsets)
            # Segmented metrics' ids: their bounds come back in the same read (one host sync per step)
            ids = batch.groups if self._segments else None
            checked = given if weight_stack is None or per_task else weight_stack
            try:
                if ids is None:  # (no `nullcontext()` per step)
                    pred_bounds, weight_bounds, group_bounds = self._value_bounds(batch, checked)
                else:
                    with read_along([ids]) as along:
                        pred_bounds, weight_bounds, group_bounds = self._value_bounds(batch, checked)
            except ValueError as error:
                raise self._named_value_error(batch, error) from None
            if ids is not None:
                fewest = min(self._segments, key=self._segments.__getitem__)
                bounds = (along.bounds[0][0], along.bounds[0][1]) if along.bounds else None
                check_segment_ids(
                    ids,
                    bounds,
                    self._segments[fewest],
                    self.tasks[self._group_tasks[0]],
                    fewest,
                    self._cast_segment_ids,
                    grouped=[n for n in self._needs_groups if n not in self._segments],
                )
            unit_weights = all_unit_weights(weight_bounds)
            # the narrow stacks are read by the check only: released now, the step's later temporaries
            # reuse their memory while it is still in cache (the step's working set is about the size of
            # a core's L2 cache, and a few hundred KB more slow every kernel of the step)
            batch.checked.clear()
            # the tasks whose weights are all zero in this step (their column given and its maximum 0, read
            # from the bounds just checked: no further sync). TorchRec's should_validate_update skips a step
            # where every task's are, for every metric; with windows, each metric takes it as it would alone
            # (DESIGN: such a batch changes nothing): one whose tasks all weigh nothing gives it no room in
            # its window, whatever the other metrics of the module read or count
            zero = None
            if self._skip_zero_weight_steps or self.window_size is not None:
                zero = _zero_weight_tasks(
                    batch.columns[2], weight_bounds, None if per_task else weight_stack, self._domain_groups
                )
                if zero is not None and self.__dict__.get("_torchrec_zero_steps") and not self._skip_zero_weight_steps:
                    self._note_torchrec_zero_step(zero)
            if not (self._skip_zero_weight_steps and zero is not None and all(zero)):
                self._update_checked(
                    batch,
                    domains,
                    unit_weights,
                    pred_bounds,
                    weight_stack,
                    group_bounds,
                    zero if self.window_size is not None else None,
                )
                self._count_step(n)
                return
        self._empty_step(n)

    def _value_bounds(
        self, batch: _Batch, weights: Tensor | Sequence[Tensor]
    ) -> tuple[tuple[float, ...], list[tuple[float, ...]], list[tuple[float, ...]]]:
        """The step's one value check; raises its ``ValueError``.

        Returns the predictions' bounds, those of ``weights`` (the columns or their stack) and, with
        ``metric_tasks``, each domain group's predictions' bounds (``[]`` without).
        """
        domains = self._domains
        if self._domain_groups is None:
            pred_bounds, weight_bounds = _check_values_bounds(
                batch.checked[0],
                batch.checked[1],
                weights,
                domains.preds,
                domains.target,
                domains.from_logits,
                batch.target_is_float,
                float32_weights=domains.float32_weights,  # an exact AUC keeps float32 weights
            )
            return pred_bounds, weight_bounds, []
        # `metric_tasks`: each task against the domain of the metrics that read it
        return _check_domain_groups(batch, self._domain_groups)

    @staticmethod
    def _trusted_unit_weights(batch: _Batch, weight_stack: Tensor | None = None) -> bool:
        """Whether an unchecked step's weight columns are all exactly 1, read on the CPU only (no sync there).

        Such weights change no sum, and the unweighted kernels skip their passes; on a device they are
        taken as given (no value is read back in an unchecked step). ``weight_stack``: the columns as
        :func:`_small_weight_stack` stacked them (all exactly 1 when its bounds are), read in one go.
        """
        given = batch.given_weights
        if not given or on_device_path(batch.preds):
            return False
        columns = given if weight_stack is None else [weight_stack]
        return all_unit_weights(checked_bounds(columns, [False] * len(columns), False))

    def _empty_step(self, n: int = 0) -> None:
        """A step no metric is updated with (no sample, or every weight zero): it counts as a step.

        Each windowed unit checks its share of the window first, as its ``update`` would have: a
        ``window_size`` smaller than the world size is refused on this rank at the same step as on
        the ranks that had samples (rather than let them wait for it in the next ``compute``).
        ``RecMetricCallback`` calls it for a ``training_step`` that returned ``None``.
        """
        self._check_window_shares()
        self._count_step(n)

    def _note_torchrec_zero_step(self, zero_tasks: Sequence[bool]) -> None:
        """Warn, once per module, that windows skip a step that TorchRec's windows would take.

        Built by :meth:`from_torchrec_config` with ``should_validate_update=False`` (TorchRec's default), where
        TorchRec's windows take every step, the module's skip a step in which every task a metric reads weighs
        nothing (DESIGN: such a step changes nothing). With per-task weight columns (a conversion task weighted
        by the click label) that happens at every step without a click, for the metrics of that task alone,
        while the metrics reading another task keep the step: their windows then differ from TorchRec's.
        ``_torchrec_zero_steps``: ``{metric name: task positions}`` of the metrics whose windows skip such steps.
        """
        skippers = self.__dict__["_torchrec_zero_steps"]
        names = [name for name, positions in skippers.items() if all(zero_tasks[t] for t in positions)]
        if not names:
            return
        self.__dict__["_torchrec_zero_steps"] = None  # once per module
        tasks = [task.name for task, zero in zip(self.tasks, zero_tasks) if zero]
        kept = [
            name for name, positions in skippers.items() if name not in names and any(zero_tasks[t] for t in positions)
        ]
        warn_at_user(
            f"RecMetricModule.update (step {self.__dict__['_step'] + 1}): the weights of task(s) {tasks} are all "
            f"zero, so the windows of {names}, which read only such tasks, give this step no room (a step of "
            "zero weight changes nothing here), while TorchRec's windows (should_validate_update=False, its "
            "default) take every step and let older ones leave: from here on their window_ values can differ "
            "from TorchRec's (lifetime values do not)"
            + (f"; {kept}, which read a task with weight too, keep the step as TorchRec does" if kept else "")
            + ". No option reproduces TorchRec's window here; said once per module "
            "(docs/migration_torchrec.md, Differences with no option).",
        )

    def _count_step(self, n: int) -> None:
        """Count a step of ``n`` examples (throughput) once every metric has taken it."""
        if self.throughput is not None:
            self.throughput.update(n)
        self.__dict__["_step"] += 1  # a plain int: skip nn.Module's __setattr__ on this per-step path

    def _check_window_shares(self) -> None:
        """Raise the ``ValueError`` of a ``window_size`` smaller than a windowed unit's world size (no-op without).

        Each unit reads its process group's size once (see ``Windowed._local_window``).
        """
        if self.window_size is not None:
            for unit, *_ in self._plan().updated:
                unit._local_window()  # type: ignore[operator]

    def _synced_by_hand(self, plan: _StepPlan) -> str | None:
        """The unit (in words) synced by hand, between its ``sync()`` and ``unsync()``; ``None`` if none is.

        Such a unit refuses the step before any unit takes it, as its own ``update`` does: a windowed unit's
        shared ring would add the step to its gathered lifetime (dropped by ``unsync()``) and to its window
        (kept); a plain unit or the throughput would keep it in gathered states that ``unsync()`` drops (the
        units before it having taken it), or fail inside an exact metric's lists.
        """
        if self.window_size is not None:
            windowed = first_synced(plan.windowed)
            if windowed is not None:
                return f"windowed {type(windowed._child('lifetime')).__name__}"
        else:
            unit = next((unit for unit, *_ in plan.updated if unit.__dict__.get("_is_synced")), None)
            if unit is not None:
                return type(unit).__name__
        if self.throughput is not None and self.throughput.__dict__.get("_is_synced"):
            return type(self.throughput).__name__
        return None

    def _update_checked(
        self,
        batch: _Batch,
        domains: InputDomains,
        unit_weights: bool,
        pred_bounds: tuple[float, ...] = (),
        weight_stack: Tensor | None = None,
        group_bounds: Sequence[tuple[float, ...]] = (),
        zero_tasks: tuple[bool, ...] | None = None,
    ) -> None:
        """Feed a step whose values passed the checks (``pred_bounds``: the predictions' min and max) to every unit.

        ``weight_stack``: the weight columns as :func:`_small_weight_stack` stacked them for the check, if it did;
        ``group_bounds``: with ``metric_tasks``, each domain group's predictions' min and max, as checked;
        ``zero_tasks``: per task, whether its weights are all zero (``None``: none is, or not known).
        """
        # weights that are all exactly 1 change no sum: the unweighted kernels skip their passes
        if unit_weights:
            w = None
        else:  # `_stack_weights`' stack, cast (the same values): stacked once for the check and the kernels
            w = _stack_weights(batch.columns[2]) if weight_stack is None else weight_stack.double()
        # the pointwise kernels of every metric take shared sums (sum w, sum w·y...) from one object
        shared = format_pointwise(batch.preds, batch.target, w, len(self.tasks), validate=False)
        # labels known to be 0/1: the binary domain was checked, or integral labels in [0, 1]
        binary = domains.target == "binary" or (domains.target == "unit" and not batch.target_is_float)
        if self._domain_groups is not None:  # tasks of several domains: binary when every task's labels were checked so
            binary = _binary_labels(self._task_domains, range(len(self.tasks)), batch.target_is_float)
        plan = self._plan()
        synced = self._synced_by_hand(plan)
        if synced is not None:
            raise TorchMetricsUserError(
                f"RecMetricModule.update: the {synced} of this module is synced (its `sync()` was called without "
                "`unsync()`); no metric took the step. HINT: call its `unsync()` first."
            )
        # every unit trusts this step's inputs (what `inputs_validated()` does, without a context per unit): the
        # flag `_trust_inputs` sets, written here in the dictionaries it writes (no two method calls per unit)
        states = [metric.__dict__ for metric in plan.trusted]
        previous = [state.get("_inputs_checked", False) for state in states]
        for state in states:
            state["_inputs_checked"] = True
        try:
            self._update_units(plan, batch, shared, binary, pred_bounds, group_bounds, zero_tasks)
        finally:
            for state, trusted in zip(states, previous):
                state["_inputs_checked"] = trusted

    def _probabilities(self, preds: Tensor, positions: Sequence[int]) -> Tensor:
        """``preds`` (the rows of the tasks at ``positions``) as a metric of real values reads them.

        ``sigmoid`` of the rows of tasks that hold logits; the rows of the other tasks (a regression
        head next to binary heads of logits, ``metric_tasks``) as given, so its errors stay in its units.
        """
        known = self.__dict__.get("_logit_rows")
        if known is None:  # per list of positions, which of its tasks hold logits (the domains never change)
            known = self.__dict__["_logit_rows"] = {}
        logits = known.get(positions)
        if logits is None:
            logits = known[positions] = tuple(self._task_domains[t].from_logits for t in positions)
        if all(logits):
            return torch.sigmoid(preds)
        if not any(logits):
            return preds
        rows = _row_flags(logits, preds.device)  # made once per flags and device: no copy from the host per step
        return torch.where(rows.unsqueeze(-1), torch.sigmoid(preds), preds)  # (T, 1) flags

    def _update_units(
        self,
        plan: _StepPlan,
        batch: _Batch,
        shared: tuple[Tensor, Tensor | None, Tensor | None],
        binary: bool,
        pred_bounds: tuple[float, ...] = (),
        group_bounds: Sequence[tuple[float, ...]] = (),
        zero_tasks: tuple[bool, ...] | None = None,
    ) -> None:
        """Feed one validated step to every updated unit (group leaders, then the per-task copies).

        Units fed probabilities (see ``_fed_probabilities``) get ``sigmoid(preds)``, computed once
        and shared by them as the logits are by the others. ``zero_tasks`` (windowed units only): per
        task, whether its weights are all zero; a unit whose every task's are takes the step as
        ``Windowed`` takes such a batch alone (no room in its window, unless its metric counts
        zero-weight rows), without the shared ring.
        """
        every_zero, zero_subsets = False, None
        if zero_tasks is None:  # (a step of weights: none all zero, nothing to find)
            joint = self._joint_window(batch.preds.shape[-1])
        else:
            every_zero = all(zero_tasks)
            zero_subsets = [all(zero_tasks[t] for t in positions) for _, positions, _ in plan.subsets]
            joint = None if every_zero or any(zero_subsets) else self._joint_window(batch.preds.shape[-1])
        # the additive windowed units' scratch updates write into one staging row (see _shared.py)
        joint_updates: dict[int, Callable[..., Any]] = {}
        if joint is not None:
            joint_updates.update(zip(map(id, joint.units), joint.begin()))
        every_task = range(len(self._task_domains))
        for as_probabilities, units in plan.passes:
            p, y, w = shared
            if as_probabilities:
                p = self._probabilities(p, every_task)
            # the kernels may skip a clamp the predictions' bounds show to change nothing (not for sigmoid(p))
            with sharing_sums(p, y, w, binary_target=binary, pred_range=() if as_probabilities else pred_bounds):
                for unit, grouped, unwrapped in units:
                    # a TaskMetric skips TorchMetrics' per-call wrapper (the step runs without gradients)
                    key = id(unit)  # by identity: a TorchMetrics metric hashes its states
                    if key in joint_updates:
                        update = joint_updates[key]
                    elif unwrapped:
                        update = unit.update_unwrapped  # type: ignore[assignment]
                    elif type(unit) is Windowed:
                        # `Windowed.update` without its synced check, made for every windowed unit above
                        if grouped:  # the id column as `groups` (grouped AUC), `segments` (Segmented) or `sessions`
                            ids = _step_ids(batch, grouped, every_task)
                            unit._step((p, y), {grouped: ids, "weights": w}, False, known_zero=every_zero)
                        else:
                            unit._step((p, y, w), {}, False, known_zero=every_zero)
                        continue
                    else:
                        update = unit.update
                    if grouped:
                        update(p, y, weights=w, **{grouped: _step_ids(batch, grouped, every_task)})
                    else:
                        update(p, y, w)
        for k, (as_probabilities, positions, units) in enumerate(plan.subsets):
            # the rows of the tasks these metrics read: a view when contiguous, else one index_select per input
            p, y, w = shared
            p = _rows(p, positions)
            if as_probabilities:
                p = self._probabilities(p, positions)
                rows_range: tuple[float, ...] = ()
            else:  # the bounds of the domain groups holding these rows: the kernels skip the clamps they show useless
                rows_range = _rows_range(pred_bounds, group_bounds, plan.subset_groups[k] if plan.subset_groups else ())
            y = _rows(y, positions)  # type: ignore[arg-type]
            w = w if w is None or w.shape[0] == 1 else _rows(w, positions)
            binary_rows = _binary_labels(self._task_domains, positions, batch.target_is_float)
            with sharing_sums(p, y, w, binary_target=binary_rows, pred_range=rows_range):
                for unit, grouped, unwrapped in units:
                    key = id(unit)
                    if key in joint_updates:  # its window in the shared ring, as the others' (its own columns)
                        joint_updates[key](p, y, w)
                        continue
                    if type(unit) is Windowed:
                        zero = zero_subsets is not None and zero_subsets[k]
                        if grouped:
                            ids = _step_ids(batch, grouped, positions)
                            unit._step((p, y), {grouped: ids, "weights": w}, False, known_zero=zero)
                        else:
                            unit._step((p, y, w), {}, False, known_zero=zero)
                        continue
                    update = unit.update_unwrapped if unwrapped else unit.update  # type: ignore[assignment]
                    if grouped:
                        update(p, y, weights=w, **{grouped: _step_ids(batch, grouped, positions)})
                    else:
                        update(p, y, w)
        if joint is not None:  # one push of the staging row into every joint unit's window and lifetime
            joint.commit(batch.preds.shape[-1])
        # Ranking rows are kept per sample: they get the columns as given and keep copies of them
        # in their own dtypes (float32 scores, int8 labels stay narrow in their states; they are
        # validated above all the same); a column several tasks share (the session ids, a weight
        # column) is copied once for all of them. Bool labels go as stacked float64.
        # A task without a weight column passes none: the ranking metric keeps unit weights for
        # those rows (no memory per row), so its weighted and unweighted steps mix, windowed or not.
        if not self._num_copies:
            return
        preds, labels, weights = batch.columns
        updated = plan.updated
        sessions = batch.sessions
        copy_tasks = self._copy_tasks
        limit = 0
        with sharing_row_copies():
            for t, (unit, *_) in enumerate(updated[len(updated) - self._num_copies :]):
                task, first = copy_tasks[t]
                target = labels[task] if labels[task].dtype != torch.bool else batch.target[task]
                inputs = {"indexes": sessions[task], "weights": weights[task]}  # type: ignore[index]
                if isinstance(unit, Windowed):
                    # the step's share of the window read once per metric (its copies share the window rule),
                    # and `Windowed.update`'s check of a synced window made for every unit above (`first_synced`)
                    if first:
                        limit = unit._local_window()
                    unit._step((preds[task], target), inputs, False, limit, zero_tasks is not None and zero_tasks[task])
                elif hasattr(type(unit), "update_unwrapped"):  # gradients are off: no TorchMetrics wrapper needed
                    unit.update_unwrapped(preds[task], target, **inputs)  # type: ignore[operator]
                else:
                    unit.update(preds[task], target, **inputs)

    def _joint_window(self, n: int) -> SharedRing | None:
        """The units whose windows share one ring buffer (see `wrappers/_shared.py`), if this step can use it.

        Those are the additive units (:func:`~torchmetrics_ext.wrappers._shared.shareable`, not
        fed group ids) with the first one's window rule and process group; there must be two at
        least. A step of more samples than this rank's window share updates each unit on its own
        (the window keeps the newest samples, the lifetime all of them), as does a step where
        their windows no longer agree (e.g. one unit loaded or reset alone).
        """
        if self.window_size is None:
            return None
        joint = self.__dict__.get("_shared_window", False)
        if joint is False:
            plan = self._plan().updated
            # metrics of some tasks only (`metric_tasks`) too: fed their tasks' rows, they count the step's samples
            # as the others do, and each unit's states have their own columns (of its own number of tasks)
            # (not a metric that counts zero-weight rows: a step whose weights are all zero takes room in its
            # window only, see `_update_units`)
            candidates = [
                unit
                for unit, grouped, _ in plan[: len(plan) - self._num_copies]
                if isinstance(unit, Windowed)
                and not grouped
                and shareable(unit)
                and unit.__dict__.get("_skips_zero_weights", True)
            ]

            def rule(unit: Any) -> tuple[Any, ...]:
                return (unit.window_size, unit.max_updates, unit._ceil_share, unit._child("lifetime").process_group)

            units = [unit for unit in candidates if rule(unit) == rule(candidates[0])] if candidates else []
            joint = self.__dict__["_shared_window"] = SharedRing(units) if len(units) > 1 else None
        if joint is None:
            return None
        limit = joint.units[0]._local_window()
        return joint if n <= limit and joint.ready(limit) else None

    def _domain_hint(self, field: str, task: int) -> str:
        """:func:`_domain_hint` for ``field`` (``"preds"`` or ``"target"``) of a task; "" where it says nothing."""
        domains = self._task_domains[task]
        if field == "preds" and domains.from_logits:  # any finite logit: a real value passes as one
            return ""
        owners = [] if self._task_owners is None else self._task_owners[task].get(field, [])
        return _domain_hint(owners, field, getattr(domains, field), bool(self._reported))

    def _own_weight_column(self, task: RecTaskInfo) -> str | None:
        """A weight column name of ``task``'s own where another task reads the one its weight-0 recipe would write."""
        written = task.weight_name or "weight"
        if not any(other is not task and other.weight_name == written for other in self.tasks):
            return None
        taken = {name for other in self.tasks for name in (other.weight_name, other.label_name, other.prediction_name)}
        own = f"{written}_{task.name}"
        while own in taken:
            own += "_"
        return own

    def _named_value_error(self, batch: _Batch, error: ValueError) -> ValueError:
        """``error`` (of the whole step's check) told about the first task and column that fail on their own."""
        fields = ("preds", "target", "weights")
        for t, (task, domains, columns) in enumerate(zip(self.tasks, self._task_domains, zip(*batch.columns))):
            for field, column in zip(fields, columns):
                if column is None:
                    continue
                given = [column if f == field else None for f in fields]
                try:
                    # labels of the binary domain are checked as given (integral or not)
                    _check_values_bounds(
                        given[0] if given[0] is not None else column.new_zeros(()).double(),
                        given[1],
                        given[2],
                        domains.preds,
                        domains.target,
                        domains.from_logits,
                        float32_weights=domains.float32_weights,
                    )
                except ValueError as own:
                    key = getattr(task, {"preds": "prediction_name", "target": "label_name"}.get(field, "weight_name"))
                    # a swap of the two columns shows as a range (or dtype) error, never as NaN (read from the
                    # column, not the message: the error path only, so the read costs no step anything)
                    nan = column.is_floating_point() and bool(column.isnan().any())
                    said = str(_in_module(own))
                    # every negative label one usual mark (-1, -100): one recipe replaces the metric's and the columns
                    # read (a swapped prediction column holds no such mark), before the metric_tasks advice: leaving
                    # the rows out of the step where a ranking metric reads the task (it ranks rows of weight 0),
                    # else weight 0 (out of the step, they would leave every task's metrics)
                    mark = _padding_mark(column) if field == "target" and not nan else None
                    read = f" {_columns_read(task)}" if field != "weights" and not nan and mark is None else ""
                    if mark is not None:  # one recipe: out of the step where sessions rank rows, else weight 0
                        said = said.replace(_NO_LABEL_HINT, "")
                        read = (
                            _padding_pointer(mark, key)
                            if any(ranked == t for ranked, _ in self._copy_tasks)  # a ranking metric reads the task
                            else _zero_weight_pointer(
                                mark, key, task.weight_name, columns[2] is not None, self._own_weight_column(task)
                            )
                        )
                    if field != "weights" and not nan:
                        read += self._domain_hint(field, t)
                    named = f"Task {task.name!r}, `model_out[{key!r}]`: {said}{read}"
                    return refusal(named, wrong_type=isinstance(own, TypeError))
        return _in_module(error)

    def _read(self, model_out: Mapping[str, Tensor]) -> _Batch:
        if type(model_out) is not dict and not isinstance(model_out, Mapping):  # a dict skips the ABC's check
            raise WrongTypeError(f"Expected `model_out` to be a dict of tensors, got {type(model_out).__name__}.")

        def column(task: RecTaskInfo, field: str, key: str | None) -> Tensor:
            if key is None or key not in model_out:  # the error path only: name what there is
                read = {c for t in self.tasks for c in (t.label_name, t.prediction_name)}  # never another's guess
                raise KeyError(_missing_column(task, field, key, model_out, taken=read))
            value = model_out[key]
            if not isinstance(value, Tensor):
                raise WrongTypeError(
                    f"Task {task.name!r}, `model_out[{key!r}]`: expected a torch.Tensor, got {type(value).__name__}."
                )
            if value.is_complex():
                raise WrongTypeError(
                    f"Task {task.name!r}, `model_out[{key!r}]`: expected a real tensor, got dtype {value.dtype}."
                )
            if value.layout is not torch.strided:  # sparse (COO, CSR, ...): no min/max, reshape or sort kernels
                raise WrongTypeError(
                    f"Task {task.name!r}, `model_out[{key!r}]`: expected a dense tensor, got layout {value.layout}: "
                    "pass its `.to_dense()`."
                )
            if value.ndim != 1:
                raise ValueError(
                    f"Task {task.name!r}: expected `model_out[{key!r}]` of shape (N,), got {tuple(value.shape)}"
                    + _flat_column_hint(value, key)
                )
            return value

        preds = [column(t, "prediction", t.prediction_name) for t in self.tasks]
        labels = [column(t, "label", t.label_name) for t in self.tasks]
        weights = [
            column(t, "weight", t.weight_name) if t.weight_name is not None and t.weight_name in model_out else None
            for t in self.tasks
        ]
        first = preds[0]
        shape, device = first.shape, first.device  # read once: `Tensor.device` makes a new object per read
        for task, p, y, w in zip(self.tasks, preds, labels, weights):
            if not p.is_floating_point():
                raise WrongTypeError(
                    f"Task {task.name!r}, `model_out[{task.prediction_name!r}]`: expected floating point predictions "
                    f"(probabilities, or logits with from_logits=True), got dtype {p.dtype}. {_columns_read(task)}"
                )
            if (
                p.shape == shape
                and y.shape == shape
                and p.device == device
                and y.device == device
                and (w is None or (w.shape == shape and w.device == device))
            ):
                continue  # the common case, without building the pairs below
            for key, other in ((task.prediction_name, p), (task.label_name, y), (task.weight_name, w)):
                if other is not None and (other.shape != shape or other.device != device):
                    raise ValueError(
                        f"Task {task.name!r}: expected `model_out[{key!r}]` of shape {tuple(shape)} on "
                        f"{device} (that of {self.tasks[0].prediction_name!r}), got {tuple(other.shape)} on "
                        f"{other.device}."
                    )
        updated = self._plan().updated
        if updated:  # the metrics' device (`Metric.device`: where `.to()` put them, whatever `compute_on_cpu` moves)
            home = updated[0][0].__dict__.get("_device", device)
            if home != device and not _same_device(home, device):
                raise ValueError(
                    f"Expected `model_out`'s columns on {home}, the device of the module's metrics, got them on "
                    f"{device}: a rejected step, nothing was updated. Move the module to the inputs' device first, "
                    f"`module.to({str(device)!r})` (a LightningModule moves the modules it holds as attributes), or "
                    f"the columns to {home}."
                )
        groups = None
        if self._needs_groups or self._segments:
            task = self.tasks[self._group_tasks[0]]
            ids = segment_ids(column(task, "group id", task.group_id_name), self._cast_segment_ids)
            groups = _id_column(ids, task, task.group_id_name, first)
        sessions = None
        if self._num_copies or self._needs_sessions:  # ranking and session metrics read the session ids
            read = self._session_tasks  # a task none of them reads has none
            sessions = [
                _id_column(column(t, "session id", t.session_id_name), t, t.session_id_name, first)
                if i in read
                else None
                for i, t in enumerate(self.tasks)
            ]
        wide_preds, wide_labels, checked_preds, checked_labels = _stack_and_widen(preds, labels)
        return _Batch(
            wide_preds,
            wide_labels,
            groups,
            sessions,
            any(y.is_floating_point() for y in labels),
            (preds, labels, weights),
            [checked_preds, checked_labels],
        )

    # ------------------------------------------------------------------ compute

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Not a step of its own: feed a step with :meth:`update` and read values with :meth:`compute`."""
        raise TypeError(
            "RecMetricModule is not called: feed each step with `update(model_out)` and read the values "
            "with `compute()` (or `local_compute()`)."
        )

    def should_compute(self) -> bool:
        """Whether the number of updates so far is a positive multiple of ``compute_interval_steps``.

        False before the first update (TorchRec's ``should_compute()`` is true then: ``0 % k == 0``).

        It counts this rank's calls to :meth:`update` and communicates nothing, while
        :meth:`compute` is a collective: under DDP the ranks agree, and so all reach ``compute()``
        together, when every rank calls ``update`` once per step. A rank without data in a step
        calls it with empty ``(0,)`` columns, which count as a step (and add nothing); a step whose
        weights are all zero counts too; a rejected step (``update`` raised) does not. A rank that
        skips ``update`` in a step, or runs fewer steps, falls behind the others' cadence, and the
        ranks that enter ``compute()`` wait for it until the process group's timeout.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"ctr": "ctr"}, compute_interval_steps=2, throughput=False)
            >>> step = {"prediction": torch.tensor([0.8, 0.3]), "label": torch.tensor([1, 0])}
            >>> for _ in range(3):
            ...     module.update(step)
            ...     print(module.should_compute())
            False
            True
            False
        """
        return self._step > 0 and self._step % self.compute_interval_steps == 0

    def compute(self) -> dict[str, Tensor]:
        """Every value of every metric and task, synced across ranks with one fused gather.

        Without communication (one process, or a metric with ``sync_on_compute=False``) a metric's
        value is computed once until its states change (update, reset, ``load_state_dict``,
        ``merge_state``, a sync), as TorchMetrics caches it: a second ``compute()`` does not sort
        the samples of an exact AUC, grouped AUC or NDCG again. Under DDP every ``compute()`` runs
        the gather and computes from the gathered states: no rank can tell whether another updated
        without it, and a rank that skipped it would leave the others waiting.

        Returns:
            A flat dict of scalar tensors (see the class docstring for the keys).
        """
        return self._compute(sync=True)

    def __repr__(self) -> str:
        """As any ``nn.Module``'s; in ``LightningModule.log``'s refusal of the module, a ``ValueError`` naming the way.

        ``self.log`` takes one number (a ``Tensor``, a ``Metric``), and refuses a module, or a dict or list
        holding one (``self.log("v", {"a": module})``), with a message that prints the module's whole
        ``nn.Module`` tree and no way out. Raised instead, from that formatting alone (``f"{module}"``,
        ``format`` and a dict's ``repr`` all reach ``repr``; nothing runs per step): the message names
        ``self.log_dict(module.compute())`` and ``RecMetricCallback``. Anywhere else (``f"{module}"``,
        ``str.format``, ``print``, a debugger, a parent module's ``repr``), and under a Lightning whose refusal
        is not recognised, it is ``nn.Module``'s ``repr``.

        Raises:
            ValueError: when Lightning's ``log`` formats the module for its refusal.
        """
        call = lightning_log_call()
        if call is not None:
            raise ValueError(
                f"`{call}` was given a RecMetricModule, whose values are a dict (one per metric and task), not one "
                "number: log them with `self.log_dict(module.compute())`, e.g. in `on_validation_epoch_end` (a "
                "collective under DDP: every rank calls it; docs/module.md, 'Without the callback', shows the "
                "training steps' way), or let `torchmetrics_ext.integrations.lightning.RecMetricCallback` update and "
                "log the module."
            )
        return super().__repr__()

    def items(self) -> Any:
        """Not a mapping of metrics: raises ``TypeError`` saying what to log instead.

        ``LightningModule.log_dict(module)`` (as one would pass a ``MetricCollection``) iterates
        ``items()``; the module's values are ``compute()``'s dict, synced across ranks when called.

        Raises:
            TypeError: always, naming ``self.log_dict(module.compute())`` and ``RecMetricCallback``.
        """
        raise TypeError(
            "A RecMetricModule is not a dict of metrics: log its values, "
            "`self.log_dict(module.compute())` (a collective under DDP: every rank calls it), or let "
            "`torchmetrics_ext.integrations.lightning.RecMetricCallback` update, log and reset it."
        )

    def values(self) -> Any:
        """Not a mapping of metrics: raises the ``TypeError`` of :meth:`items`.

        ``LightningModule.log_dict(module)`` on a model set up by ``lightning.fabric.Fabric`` reads ``values()``
        first (Lightning's route through Fabric), where the missing method failed with Python's bare "object has
        no attribute 'values'".

        Raises:
            TypeError: always, as :meth:`items`.
        """
        return self.items()

    def local_compute(self) -> dict[str, Tensor]:
        """Like :meth:`compute` for this rank's states only (no communication).

        With ``key_style="torchrec"`` the keys carry TorchRec's ``local_`` scope after the ``|``
        (``ne-click|local_lifetime_ne``, ``throughput-throughput|local_total_examples``), as
        TorchRec's ``local_compute()`` names them, so this rank's values never take the keys of the
        synced ones in a dict or a dashboard that holds both.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"log_loss": "log_loss", "auc": "auc"}, throughput=False)
            >>> module.update({"prediction": torch.tensor([0.8, 0.3, 0.6, 0.2]), "label": torch.tensor([1, 0, 0, 1])})
            >>> values = module.local_compute()  # log loss: -(ln 0.8 + ln 0.7 + ln 0.4 + ln 0.2) / 4
            >>> {key: round(value.item(), 4) for key, value in values.items()}
            {'log_loss/click': 0.7764, 'auc/click': 0.5}
            >>> torchrec = RecMetricModule(["click"], {"ne": "ne"}, throughput=False, key_style="torchrec")
            >>> torchrec.update({"prediction": torch.tensor([0.8, 0.3]), "label": torch.tensor([1, 0])})
            >>> list(torchrec.compute()), list(torchrec.local_compute())
            (['ne-click|lifetime_ne'], ['ne-click|local_lifetime_ne'])
        """
        values = self._compute(sync=False)
        if self.key_style != "torchrec":
            return values
        # TorchRec's local scope, `{namespace}-{task}|local_{lifetime_|window_}{name}` (every key holds one `|`)
        return {"|local_".join(key.rsplit("|", 1)): value for key, value in values.items()}

    def _compute(self, sync: bool) -> dict[str, Tensor]:
        self._check_window_shares()  # on every rank before the gather, one that never updated too
        self._warn_other_rank()  # states another rank saved, loaded here (a rank-0-only checkpoint)
        gathered = self._gather() if sync else {}
        out: dict[str, Tensor] = {}
        members: list[tuple[TaskMetric, TaskMetric]] = []  # (leader, member) task metrics of compute groups
        cleared: dict[str, list[str]] = {}  # a leader reset alone -> the members whose states it cleared
        with ExitStack() as stack:
            stack.callback(IN_MODULE_COMPUTE.reset, IN_MODULE_COMPUTE.set(True))  # members are filled below
            for (name, part), metric in self._leaves():
                source = gathered.get((self._leader.get(name, name), part))
                if source is not None or syncs_on_compute(metric):
                    stack.enter_context(metric.synced_from(source if sync else None))
                # else it communicates nothing: the value it cached since its states last changed (TorchMetrics'
                # ``_computed``, dropped by every update, reset, merge, load and sync) is its value
            for name, lead in self._leader.items():
                if lead != name:
                    leader_parts = self._parts(self._unit(lead))
                    found: set[str | None] = set()
                    for part, metric in self._parts(self._unit(name)).items():
                        leader = leader_parts[part]
                        members.append((leader, metric))
                        if not _holds_states_of(metric, leader):
                            found.add(_fill_member(metric, leader))
                    if "changed" in found or "reset" in found:
                        _warn_changed_member(name, lead, "changed" if "changed" in found else "reset")
                    elif "leader reset" in found:
                        cleared.setdefault(lead, []).append(name)
            for lead, lost in cleared.items():
                _warn_changed_member(lead, lead, "leader reset", lost)
            # group members hold their leader's states without an update of their own (and a rank
            # without a batch the others' synced states): no "compute before update" warning
            stack.enter_context(counted_as_updated(metric for _, metric in self._leaves()))
            for name in self._names:
                # undefined-value warnings name the metric by its key (two AUCs apart) and the tasks
                # (not their positions), only tasks reported
                reported = self._reported.get(name, ((), None))[1]
                names = [t.name if reported is None or t.name in reported else None for t in self._tasks_of(name)]
                if name in self.ranking:
                    per_task: list[tuple[int | None, Any]] = []
                    for t, unit in enumerate(self._copies(name)):
                        with naming_metric(self._warned_name(name)), naming_tasks(names[t : t + 1]):
                            per_task.append((t, unit.compute()))
                    self._emit(out, name, per_task)
                    continue
                with naming_metric(self._warned_name(name)), naming_tasks(names):
                    if self._is_window_only(name):
                        with naming_part("window"):
                            unit_value: Any = {"window": self._parts(self._unit(name))["window"].compute()}
                    elif self._is_lifetime_only(name):  # its window is never reported: not computed (nor warned)
                        unit_value = {"lifetime": self._parts(self._unit(name))["lifetime"].compute()}
                    else:
                        unit_value = self._unit(name).compute()
                    self._emit(out, name, [(None, unit_value)])
            for leader, metric in members:  # the leader's states they hold, while it keeps its value
                metric.__dict__[_STATES_OF] = leader.__dict__["_computed"]
        if self.throughput is not None:
            with naming_metric(f"{self.prefix}throughput"):
                rates = _throughput_rates(self.throughput, gathered.get(_THROUGHPUT) if sync else None)
            if self.key_style == "torchrec":  # every example is attempted: a bad step raises, none is skipped
                rates |= {
                    "attempt_examples": rates["total_examples"],
                    "attempt_throughput": rates["lifetime_throughput"],
                }
            for entry, value in rates.items():
                _put(out, self._aux_key("throughput", entry), value)
        for name, fn in self.state_metrics.items():
            with naming_metric(self.prefix + name):
                value = _state_metric_value(fn, sync)
            items = value.items() if isinstance(value, Mapping) else [(None, value)]
            for key, v in items:
                if key is not None and not _entry_name_ok(key):
                    raise ValueError(
                        f"State metric {name!r} returned an entry named {key!r}: entry names are non-empty printable "
                        "strings without '/', '|' or '.' (the keys must split back into their parts)."
                    )
                _put(out, self._aux_key(name, key), _scalar(v, name))
        return out

    def _leaves(self) -> Iterator[tuple[tuple[str, str], TaskMetric]]:
        """Every task metric, keyed by ``(metric name, part)``; per-task copies by ``name`` NUL ``task``."""
        if self.metrics is not None:
            for name in self._leader:
                for part, metric in self._parts(self._unit(name)).items():
                    yield (name, part), metric
        for name in self.ranking:
            for t, unit in enumerate(self._copies(name)):
                for part, metric in self._parts(unit).items():
                    yield (f"{name}\0{t}", part), metric

    def _gather(self) -> dict[tuple[str, str], Mapping[str, list[Tensor]]]:
        """One fused gather per process group of every state of every updated task metric and the throughput."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return {}
        by_group: dict[int, list[tuple[tuple[str, str], Metric]]] = {}
        for key, metric in self._leaves():
            # a rank outside a metric's group (``dist.new_group`` elsewhere) computes it from its own states
            if self._leader.get(key[0], key[0]) == key[0] and metric.sync_on_compute:
                if not outside_group(metric.process_group):
                    by_group.setdefault(id(metric.process_group), []).append((key, metric))
        throughput = self.throughput
        if throughput is not None and throughput.sync_on_compute and not outside_group(throughput.process_group):
            by_group.setdefault(id(throughput.process_group), []).append((_THROUGHPUT, throughput))
        gathered: dict[tuple[str, str], Mapping[str, list[Tensor]]] = {}
        for members in by_group.values():
            payloads = [_payload(metric) for _, metric in members]
            results = fused_gather(payloads, members[0][1].process_group)
            gathered.update({key: result for (key, _), result in zip(members, results)})
        return gathered

    # ------------------------------------------------------------------ keys

    def _is_window_only(self, name: str) -> bool:
        return self.window_size is not None and set(self._reported.get(name, ((), None))[0]) == {"window"}

    def _is_lifetime_only(self, name: str) -> bool:
        return self.window_size is not None and name in self._reported and "window" not in self._reported[name][0]

    def _emit(self, out: dict[str, Tensor], name: str, values: list[tuple[int | None, Any]]) -> None:
        """Add one metric's values: ``(task, value)`` per unit, ``task`` ``None`` for a stacked metric's ``(T,)``.

        A value is ``(T,)`` or a scalar per task, or a dict of them (one per entry), per part (lifetime,
        window). The keys go in one order for every kind of metric: by entry, then by task (the module's
        order), then lifetime before window, so a task's lifetime and window values sit side by side
        (``ne/a``, ``ne/a/window``, ``ne/b``, ...), as a ranking metric's per-task copies give them.

        Each value is copied (once per metric value, not per key): the metric keeps the tensor it
        returned as its cached value, which a caller's in-place change of a logged value
        (``out[key] *= 100``) would otherwise alter for every later ``compute()`` until the next update.
        """
        reported, tasks = self._reported.get(name, (("lifetime", "window"), None))
        bare = "bare" in reported
        if name in self._segments:  # (S,) per task: one entry per segment, as a dict-valued metric's
            if len(values) == 1 and values[0][0] is None:
                self._emit_segments(out, name, values[0][1], reported, tasks)
                return
            values = [(task, per_segment(value, self._segments[name])) for task, value in values]
        if len(values) == 1 and values[0][0] is None:  # a stacked metric: one number per task and part
            value = values[0][1]
            parts = value if self.window_size is not None else {"lifetime": value}
            lifetime, window = parts.get("lifetime"), parts.get("window")
            if "lifetime" not in reported and not bare:
                lifetime = None
            if "window" not in reported:
                window = None
            if not isinstance(lifetime, Mapping) and not isinstance(window, Mapping) and len(parts) <= 2:
                # each value copied once, written task by task, lifetime before window
                kept = [(is_window, v.clone()) for is_window, v in ((False, lifetime), (True, window)) if v is not None]
                for t, info in enumerate(self._tasks_of(name)):
                    if tasks is None or info.name in tasks:
                        for is_window, v in kept:
                            key = self._key(name, None, info.name, window=is_window, bare=bare)
                            _put(out, key, v if v.ndim == 0 else v[t])
                return
        infos = self._tasks_of(name)
        num_tasks = len(infos)
        cells: dict[str | None, list[list[Tensor | None]]] = {}  # entry -> per task [lifetime, window]
        for task, value in values:
            parts = value if self.window_size is not None else {"lifetime": value}
            for part, part_value in parts.items():
                if part not in reported and not (bare and part == "lifetime"):
                    continue
                window = part == "window"
                entries = part_value.items() if isinstance(part_value, Mapping) else [(None, part_value)]
                for entry, v in entries:
                    v = v.clone()
                    per_task = cells.get(entry)
                    if per_task is None:
                        per_task = cells[entry] = [[None, None] for _ in range(num_tasks)]
                    for t in range(num_tasks) if task is None else (task,):
                        if tasks is None or infos[t].name in tasks:
                            per_task[t][window] = v if v.ndim == 0 else v[t]
        for entry, per_task in cells.items():
            for t, (lifetime, window_value) in enumerate(per_task):
                task_name = infos[t].name
                if lifetime is not None:
                    _put(out, self._key(name, entry, task_name, window=False, bare=bare), lifetime)
                if window_value is not None:
                    _put(out, self._key(name, entry, task_name, window=True, bare=bare), window_value)

    def _emit_segments(
        self, out: dict[str, Tensor], name: str, value: Any, reported: Collection[str], tasks: Collection[str] | None
    ) -> None:
        """A Segmented metric's ``(T, S)`` (or ``(S,)``) value per part, one key per segment, task and part.

        The keys and their order are :meth:`_emit`'s for entries ``"0"``, ..., ``"S-1"``; each part is
        copied once and split into its ``T·S`` numbers by one ``unbind`` (not a copy and an index per
        segment: with ``num_segments=10_000`` and a few tasks that was most of a ``compute()``).
        """
        num_segments = self._segments[name]
        bare = "bare" in reported
        parts = value if self.window_size is not None else {"lifetime": value}
        kept: list[tuple[bool, tuple[Tensor, ...], int]] = []
        for part, part_value in parts.items():
            if part not in reported and not (bare and part == "lifetime"):
                continue
            rows = part_value.reshape(-1, num_segments)  # (T, S), or (1, S) for a (S,) value
            # segment-major, contiguous and owned: the logged numbers are views of this copy alone
            cells = rows.t().clone(memory_format=torch.contiguous_format).view(-1).unbind(0)
            kept.append((part == "window", cells, rows.shape[0]))
        kept.sort(key=lambda k: k[0])  # lifetime before window
        chosen = [(t, info.name) for t, info in enumerate(self._tasks_of(name)) if tasks is None or info.name in tasks]
        for g in range(num_segments):
            entry = str(g)
            for t, task_name in chosen:
                for is_window, cells, width in kept:
                    cell = cells[g * width + (t if width > 1 else 0)]
                    _put(out, self._key(name, entry, task_name, window=is_window, bare=bare), cell)

    def _tasks_of(self, name: str) -> tuple[RecTaskInfo, ...]:
        """The tasks metric ``name`` reads, in the module's order: its ``metric_tasks``, else every task."""
        subset = self._subsets.get(name)
        return self.tasks if subset is None else tuple(self.tasks[t] for t in subset)

    def _key(self, name: str, entry: str | None, task: str, window: bool, bare: bool = False) -> str:
        if self.key_style == "torchrec":
            namespace, metric_name = self._torchrec[name]
            if entry is not None and name in self._segments:  # TorchRec's segmented_ne_{g}
                metric_name = f"{metric_name}_{entry}"
            elif entry is not None:  # TorchRec's namespace where the metric has TorchRec's key (coverage keys)
                namespace, metric_name = (namespace if self._torchrec_own.get(name) else name), entry
            if namespace == metric_name and (namespace, metric_name) != self._torchrec_own[name]:
                _check_not_torchrecs(name, namespace)  # a dict entry named like its metric ("precision")
            if bare:  # a TorchRec counter reported without lifetime_/window_ (serving total_examples)
                return f"{self.prefix}{namespace}-{task}|{metric_name}"
            return f"{self.prefix}{namespace}-{task}|{'window' if window else 'lifetime'}_{metric_name}"
        metric = name if entry is None else f"{name}.{entry}"
        return f"{self.prefix}{metric}/{task}" + ("/window" if window else "")

    def _warned_name(self, name: str) -> str:
        """The name a metric's warnings give: its key as the values' keys hold it.

        ``f"{prefix}{name}"`` (``val/auc``); with ``key_style="torchrec"`` TorchRec's namespace, and its
        metric name where that differs (``ne|logloss`` for the keys ``ne-{task}|lifetime_logloss``).
        """
        if self.key_style == "torchrec":
            namespace, metric_name = self._torchrec[name]
            return f"{self.prefix}{namespace}" + ("" if metric_name == namespace else f"|{metric_name}")
        return self.prefix + name

    def _aux_key(self, name: str, entry: str | None) -> str:
        if self.key_style == "torchrec":
            return f"{self.prefix}{name}-{name}|{entry or name}"
        return f"{self.prefix}{name}" + ("" if entry is None else f"/{entry}")

    # ------------------------------------------------------------------ state

    def clone(self, prefix: str | None = None) -> RecMetricModule:
        """A deep copy of this module (its metrics, states, windows and step counter), with another ``prefix``.

        As ``MetricCollection.clone``: build one module and copy it for each stage, e.g.
        ``self.val_metrics = self.train_metrics.clone(prefix="val/")`` in a ``LightningModule``.
        The copy owns its metrics (no state is shared with this module); its ``state_metrics`` are the same
        objects (they read what lives outside the module, such as the optimizer's learning rate).

        Args:
            prefix: the copy's key prefix; ``None`` keeps this module's.

        Raises:
            ValueError: ``prefix`` is not a string (nothing is copied).

        Examples:
            >>> import torchmetrics_ext as tmx
            >>> train = tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=False, prefix="train/")
            >>> val = train.clone(prefix="val/")
            >>> val.prefix, val.metrics["ne"] is train.metrics["ne"]
            ('val/', False)
        """
        if prefix is not None and not isinstance(prefix, str):
            raise WrongTypeError(f"Expected `prefix` to be a string or None, got {prefix!r}.")
        copied = copy.deepcopy(self)
        if prefix is not None:
            copied.prefix = prefix
        return copied

    def reset(self) -> None:
        """Clear every metric (lifetime and window states); the step counter is kept.

        The throughput is cleared too (its clock starts again at the next step, whose examples count
        in ``total_examples`` only, so the time between a validation epoch and the next never counts;
        a reset after any step ends the warm-up, so every epoch after the first has rates), except
        with ``key_style="torchrec"`` (and so ``from_torchrec_config``): TorchRec's
        ``RecMetricModule.reset()`` resets its metrics only and its throughput keeps counting
        (``total_examples`` and the rates go on).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"ctr": "ctr"}, compute_interval_steps=2, throughput=False)
            >>> module.update({"prediction": torch.tensor([0.9]), "label": torch.tensor([1])})
            >>> module.reset()  # e.g. at the start of a validation epoch
            >>> module.update({"prediction": torch.tensor([0.2, 0.4]), "label": torch.tensor([0, 1])})
            >>> module.compute(), module.should_compute()  # the row before the reset is gone; its step counts
            ({'ctr/click': tensor(0.5000, dtype=torch.float64)}, True)
        """
        keep = self.throughput if self.key_style == "torchrec" else None
        for unit in self._all_units():
            if unit is not keep:
                unit.reset()
        self.__dict__.pop(SAVED_BY, None)  # no other rank's states left to warn of
        self._mark_members()  # emptied with their groups: nothing of their own, no reset of their own
        joint = self.__dict__.get("_shared_window")
        if joint:  # the emptied windows' shared buffer is not kept until the next step
            joint.release()

    def reset_lifetime(self) -> None:
        """Clear every metric's lifetime and keep the windows: a lifetime that restarts (each day) beside a window.

        Each windowed metric clears its lifetime with :meth:`~torchmetrics_ext.Windowed.reset_lifetime`,
        so its ``.../window`` values go on as in an uninterrupted run while the lifetime keys cover the
        steps from here on; without ``window_size`` this is :meth:`reset`'s clearing of the metrics. The
        throughput keeps running (its rates, window and ``total_examples``: it has its own window in
        seconds), and so do the step counter and the compute cadence. Under DDP call it on every rank
        at the same step, as ``compute()``.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"ctr": "ctr"}, window_size=4, throughput=False)
            >>> module.update({"prediction": torch.tensor([0.9, 0.8]), "label": torch.tensor([1, 1])})
            >>> module.reset_lifetime()  # midnight: a new day's lifetime, the window goes on
            >>> module.update({"prediction": torch.tensor([0.2, 0.4]), "label": torch.tensor([0, 0])})
            >>> {key: value.item() for key, value in module.compute().items()}
            {'ctr/click': 0.0, 'ctr/click/window': 0.5}
        """
        for unit in self._all_units():
            if unit is self.throughput:
                continue
            if isinstance(unit, Windowed):
                unit.reset_lifetime()
            else:
                unit.reset()
        self._mark_members()  # the groups' lifetimes emptied with their leaders: no reset of their own

    def set_dtype(self, dst_type: str | torch.dtype) -> RecMetricModule:
        """Cast the floating states of every metric to ``dst_type``, as ``MetricCollection.set_dtype``.

        Each metric's own ``set_dtype`` (a windowed metric's casts its lifetime, window and ring); integer
        states (ids, counts) keep their dtype, and the throughput its float64 counts and seconds (no metric
        values: in float16 ``total_examples`` would stop at 65,504). ``module.to(dtype)`` and
        ``module.double()`` cast no state (see :class:`~torchmetrics_ext.GuardedMetric`): this is the
        one cast. The windows that shared one buffer are laid out again, in the new dtype, at the next step.

        Args:
            dst_type: ``torch.float16``, ``torch.bfloat16``, ``torch.float32``, ``torch.float64`` or a
                tensor type name (``"torch.DoubleTensor"``).

        Returns:
            The module itself.

        Raises:
            TypeError: ``dst_type`` is not a floating dtype the states can sum in; checked before any
                metric is cast (:func:`~torchmetrics_ext.utilities.checks.check_state_dtype`).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import RecMetricModule
            >>> module = RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False).set_dtype(torch.float32)
            >>> module.update({"prediction": torch.tensor([0.2, 0.4]), "label": torch.tensor([0, 1])})
            >>> module.compute()
            {'ctr/click': tensor(0.5000)}
        """
        check_state_dtype(dst_type)
        for unit in self._all_units():
            unit.set_dtype(dst_type)
        joint = self.__dict__.get("_shared_window")
        if joint:  # its rings hold buffers of their own now: the old shared buffer is not kept
            joint.release()
        return self

    def _mark_members(self, keep_linked: bool = False) -> None:
        """Record each compute group member's changes as of now, and the leader whose states it reports.

        See :func:`_fill_member`; the leader's part is recorded so that a reset of the member alone notes
        what of the group's states it cannot clear. (A metric of a group given already updated, merged
        or loaded was reset by the constructor, with a warning: see :func:`_warn_carried_samples`.)
        ``keep_linked``: a member already linked to its leader and marked (a copy made with the module)
        keeps its marks, and so what is pending since the module's last compute.
        """
        for name, lead in self._leader.items():
            if lead != name:
                for member in self._parts(self._unit(name)).values():
                    member.__dict__[_NAMES] = (name, lead)  # for the warnings of a compute of its own
        for member, leader in self._member_parts():
            if keep_linked and member.__dict__.get("_states_source") is leader and _FILLED_AT in member.__dict__:
                continue
            share_states_with(member, leader)
            member.__dict__[_FILLED_AT] = (*_changes(member), resets_taken(leader))

    def _member_parts(self) -> Iterator[tuple[TaskMetric, TaskMetric]]:
        """``(member, leader)`` task metrics of every compute group member, lifetime and window parts alike."""
        for name, lead in self._leader.items():
            if lead != name:
                leader_parts = self._parts(self._unit(lead))
                for part, metric in self._parts(self._unit(name)).items():
                    yield metric, leader_parts[part]


# ----------------------------------------------------------------------------- helpers


def _windowed(metric: TaskMetric, window_size: int, options: Mapping[str, Any]) -> Windowed:
    """``Windowed(metric, window_size, **options)``; option ``ceil_share``: TorchRec's per-rank share."""
    options = dict(options)
    ceil_share = options.pop("ceil_share", False)
    wrapped = Windowed(metric, window_size, **options)
    wrapped._ceil_share = ceil_share
    return wrapped


def _copy_tasks(
    names: Sequence[str], subsets: Mapping[str, tuple[int, ...]], num_tasks: int
) -> tuple[tuple[int, bool], ...]:
    """Per ranking copy (metrics in order, then their tasks): ``(task position, first copy of its metric)``."""
    return tuple((t, i == 0) for name in names for i, t in enumerate(subsets.get(name, tuple(range(num_tasks)))))


def _default_warmup_steps(compute_interval_steps: int) -> int:
    """The warm-up of a module's own ``Throughput``: half the compute interval, between 1 and 100.

    ``Throughput``'s (and TorchRec's) default of 100 warm-up steps equals the module's default
    compute interval, so the first compute would come before any timed step (``nan`` rates, which
    TorchRec leaves out). Half the interval times the second half of the first interval, and no
    warm-up is longer than the standalone default.

    Examples:
        >>> from torchmetrics_ext.module import _default_warmup_steps
        >>> _default_warmup_steps(100), _default_warmup_steps(10), _default_warmup_steps(1000), _default_warmup_steps(1)
        (50, 5, 100, 1)
    """
    return min(100, max(1, compute_interval_steps // 2))


def _check_tasks(tasks: Sequence[RecTaskInfo | str]) -> tuple[RecTaskInfo, ...]:
    listed = _listed(tasks)
    if not listed:  # a str or a mapping is a wrong type, an empty list a wrong value
        raise refusal(
            f"Expected `tasks` to be a non-empty list of RecTaskInfo (or names), got {tasks!r}.",
            wrong_type=listed is None,
        )
    # a name (a NumPy string too) is a RecTaskInfo of that name; anything else is checked below
    out = tuple(RecTaskInfo(name) if (name := as_str(t)) is not None else cast(RecTaskInfo, t) for t in listed)
    for task in out:
        if not isinstance(task, RecTaskInfo):
            raise WrongTypeError(f"Expected `tasks` to hold RecTaskInfo or names, got {task!r}.")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct task names, got {names}.")
    # one task's data reported under two tasks' keys (the same columns with other weights, or other
    # session ids for the ranking metrics, is another view)
    by_columns: dict[tuple[str, str, str | None, str | None], RecTaskInfo] = {}
    for task in out:
        columns = (task.prediction_name, task.label_name, task.weight_name, task.session_id_name)
        first = by_columns.setdefault(columns, task)
        if first is not task:
            raise ValueError(
                f"Tasks {first.name!r} and {task.name!r} read the same columns (prediction "
                f"{task.prediction_name!r}, label {task.label_name!r}, weight {task.weight_name!r}), so they would "
                "report the same values; a task given as a plain name reads the default 'prediction', 'label' and "
                f"'weight' columns. Say where each task's columns are: RecTaskInfo({task.name!r}, "
                f"label_name='{task.name}_label', prediction_name='{task.name}_pred')."
            )
    return out


def _task_from_config(task: Any) -> RecTaskInfo:
    """One entry of a config's ``tasks``: a name, a dict of :class:`RecTaskInfo` fields or a ``RecTaskInfo``."""
    if isinstance(task, RecTaskInfo):  # what the constructor takes
        return task
    if isinstance(task, str):
        return RecTaskInfo(task)
    known = [f.name for f in fields(RecTaskInfo)]
    if not isinstance(task, Mapping):
        raise WrongTypeError(
            f"Expected a task name, a dict of RecTaskInfo fields {known} or a RecTaskInfo, got {task!r}."
        )
    unknown = sorted((key for key in task if key not in known), key=str)
    if unknown:
        raise ValueError(
            f"Unknown task fields {unknown}{_close_to(unknown, known)}; expected a task name or a dict of "
            f"RecTaskInfo fields {known}, got {task!r}."
        )
    if "name" not in task:
        raise ValueError(f"Expected a 'name' in every task dict (the task's name in the keys), got {dict(task)!r}.")
    return RecTaskInfo(**task)


def _pickled_state_metric(fn: Callable[[], Any]) -> Any:
    """A state metric as a copy or a pickle of the module holds it: a metric's ``compute`` as :class:`_ComputeOf`."""
    metric = _metric_of(fn)
    return _ComputeOf(metric) if metric is not None and metric is not fn else fn
