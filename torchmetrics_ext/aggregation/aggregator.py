"""``MetricsAggregator``: dataset-namespaced aggregation of per-sample records on TorchMetrics states."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric as TorchMetric
from torchmetrics.aggregation import BaseAggregator

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.categorical import CategoricalCount, _Counted
from torchmetrics_ext.aggregation.handlers import DEFAULT_HANDLERS, MetricFactory
from torchmetrics_ext.aggregation.plan import Fold, Step, Update, add_note, apply_updates, plan_step
from torchmetrics_ext.aggregation.sync import (
    CATEGORIES,
    UNSYNCED,
    Layout,
    Reported,
    SyncEntry,
    reported_percentiles,
    state_layout,
    sync_kind,
    synced_values,
)
from torchmetrics_ext.aggregation.types import AggregationType, Metric
from torchmetrics_ext.metrics.base import GuardedMetric, counted_as_updated
from torchmetrics_ext.utilities.data import ordered_union
from torchmetrics_ext.utilities.distributed import TypedGather, _world, has_untyped_list_states, outside_group
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.formatting import article, exact_text
from torchmetrics_ext.utilities.warnings import (
    UndefinedMetricWarning,
    naming_metric,
    silencing_undefined,
    warn_at_user,
)

__all__ = ["MetricsAggregator"]

Key = tuple[str, str]
# a metric's sync kind, its state layout, for a handler that failed to make one the error (None, None, text, None),
# and the percentiles it reports (reported_percentiles)
_Probe = tuple[str | None, Layout | None, str | None, Reported | None]
_NO_PROBE: _Probe = (None, None, None, None)
_FORMAT = "torchmetrics_ext.MetricsAggregator/1"
_FIELDS = ("dataset_name", "name", "value", "agg_type")
_EXTRA = "_extra_state"  # nn.Module's state_dict key of a module's get_extra_state()
# how a dict-valued metric's entries are logged: "{name}{joiner}{entry}"
_JOINERS = {AggregationType.DISTRIBUTION: "_stat_", AggregationType.CATEGORICAL_COUNT: "_count_"}


def _not_distributed() -> bool:
    """``distributed_available_fn`` of a handler's metric on a rank outside the aggregator's group: it never syncs."""
    return False


def _keeps_nan(metric: TorchMetric) -> bool:
    """Whether ``metric``'s NaN is a NaN record it kept (``nan_strategy="disable"``), logged as ``nan``.

    Such a metric's value is NaN from its first NaN record on (until :meth:`MetricsAggregator.reset`),
    and the log shows it; any other NaN is an undefined value (a mean of zero weight), left out.
    """
    strategy = getattr(metric, "nan_strategy", None)
    return isinstance(strategy, str) and strategy == "disable"


def _type_name(agg_type: AggregationType) -> str:
    """``SUM`` for a member, else the value's repr and, unless a builtin, its class (another enum)."""
    if isinstance(agg_type, AggregationType):
        return agg_type.name
    kind = type(agg_type)
    return repr(agg_type) + (
        "" if kind.__module__ == "builtins" else f" ({article(f'{kind.__module__}.{kind.__qualname__}')})"
    )


def _bad_record_message(records: list[Any]) -> str:
    for record in records:
        if not all(hasattr(record, field) for field in _FIELDS):
            return f"Expected every record to be a Metric, got {type(record).__name__}: {record!r}."
        try:
            hash((record.dataset_name, record.name, record.agg_type))
        except TypeError:
            return f"Expected hashable dataset_name, name and agg_type, got {record!r}."
    return "Expected every record to be a Metric."


def _making(key: Key, agg_type: AggregationType, what: str, outcome: str) -> str:
    """The note a registered handler's error gets: the key (``what`` it is) whose metric it was making."""
    return (
        f"Raised while making the metric of {key[1]!r} of dataset {key[0]!r} ({_type_name(agg_type)}), {what}, "
        f"with its registered handler (`metric_factory`); {outcome}."
    )


def _conflict(key: Key, old: AggregationType, new: AggregationType) -> str:
    return (
        f"Metric {key[1]!r} of dataset {key[0]!r} is aggregated as {_type_name(old)}; "
        f"it cannot also be aggregated as {_type_name(new)}. Use another metric name."
    )


def _unlike(key: Key, one: Layout, other: Layout) -> str:
    """The error of one key whose metrics hold other states on two ranks (those they do not share shown)."""

    def states(layout: Layout, than: Layout) -> str:
        return "[" + ", ".join(f"{name} {kind}" for name, kind in [s for s in layout if s not in than] or layout) + "]"

    return (
        f"Metric {key[1]!r} of dataset {key[0]!r} has the states {states(one, other)} on one rank and "
        f"{states(other, one)} "
        "on another, which cannot sync together: register the same handlers on every rank (the ranks disagree)."
    )


def _other_percentiles(key: Key, agg_type: AggregationType, group: Any, reported: list[Reported | None]) -> str:
    """The error of one key whose metrics report other percentiles on other ranks, naming every rank's."""

    def text(found: Reported | None) -> str:
        if found is None:
            return "no percentiles"
        return " and ".join("(" + ", ".join(map(exact_text, percentiles)) + ")" for percentiles in found)

    ranks: dict[Reported | None, list[int]] = {}
    for rank, found in enumerate(reported):
        ranks.setdefault(found, []).append(_global(group, rank))
    each = "; ".join(
        f"rank{'s' * (len(held) > 1)} {', '.join(map(str, held))}: {text(found)}" for found, held in ranks.items()
    )
    return (
        f"Metric {key[1]!r} of dataset {key[0]!r} ({_type_name(agg_type)}) reports other percentiles on other ranks, "
        f"so the ranks would log different keys: {each}. Register the same handlers on every rank "
        "(the ranks agree: every rank raises this)."
    )


def _saved_by(metadata: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(rank, world size)`` a checkpoint's metadata says saved it; ``None`` where it does not say (older ones)."""
    saved_by = metadata.get("saved_by")
    if (
        isinstance(saved_by, (list, tuple))
        and len(saved_by) == 2
        and all(type(number) is int and number >= 0 for number in saved_by)
    ):
        return saved_by[0], saved_by[1]
    return None


def _global(group: Any, rank: int) -> int:
    """The rank ``rank`` of ``group`` as the process's rank in the default group (a subgroup numbers its own from 0)."""
    return rank if group is None else dist.get_global_rank(group, rank)


def _half_synced(key: Key, group: Any, unsynced: int, synced: int) -> str:
    """The error of one key whose metric never syncs on one rank of ``group`` and syncs on another."""
    return (
        f"Metric {key[1]!r} of dataset {key[0]!r}: its metric never syncs on rank {_global(group, unsynced)} "
        f"(`sync_on_compute=False`) and syncs on rank {_global(group, synced)}, which would wait for it in the sync. "
        "Register the same handlers on every rank (the ranks agree: every rank raises this)."
    )


def _unmade(key: Key, agg_type: AggregationType, group: Any, rank: int, error: str) -> str:
    """The error of a key that the rank ``rank`` of ``group`` lacks and cannot make, naming the process's own rank."""
    rank = _global(group, rank)
    return (
        f"Metric {key[1]!r} of dataset {key[0]!r} ({_type_name(agg_type)}) is held by another rank, and rank {rank}, "
        f"which lacks it, cannot make its metric: its handler raised {error}. Register a handler that makes a new "
        "metric on every rank (the ranks agree: every rank raises this)."
    )


def _rejected(key: Key, agg_type: AggregationType, err: Exception) -> ValueError:
    """The error of a rejected value, with the record's dataset, name and type in front of the check's message."""
    message = str(err)
    clause = message[:1].lower() + message[1:]
    text = f"Metric {key[1]!r} of dataset {key[0]!r} is {article(_type_name(agg_type))}: {clause}"
    return refusal(text, wrong_type=isinstance(err, TypeError))


def _entry_names(keys: list[Any], base: str) -> list[str]:
    """Text of a dict-valued metric's keys for the logging keys, never two alike.

    A non-``str`` key whose text is also a ``str`` key (the categories ``1`` and ``"1"``) gets its
    type in brackets (``1(int)``); the ``str`` key keeps the plain text. The name is stable: it
    depends only on the categories seen, not on their order.
    """
    texts = {k for k in keys if isinstance(k, str)}
    names = [k if isinstance(k, str) else (f"{k}({type(k).__name__})" if str(k) in texts else str(k)) for k in keys]
    if len(set(names)) != len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"Entries of {base!r} would share the logging key {clash!r}: {keys}.")
    return names


def _leaves(value: Mapping[Any, Any], base: str, joiner: str) -> tuple[list[str], list[Any]]:
    """The logging-key suffixes and values of a dict-valued ``compute``, nested dicts flattened.

    An entry holding a value is logged as ``{joiner}{key}`` (the aggregation type's joiner:
    ``_stat_`` for DISTRIBUTION); an entry holding a dict (a wrapper's: ``Windowed``'s
    ``lifetime`` and ``window``) adds ``_{key}`` in front of its own entries. So a
    ``Windowed(Sum())`` logs ``{name}_lifetime`` and ``{name}_window`` (as before) and a
    ``Windowed(Distribution())`` ``{name}_lifetime_stat_mean``, ``{name}_window_stat_p50``, ...
    """
    suffixes: list[str] = []
    values: list[Any] = []
    for sub, entry in zip(_entry_names(list(value), base), value.values(), strict=True):
        if isinstance(entry, Mapping):
            inner, numbers = _leaves(entry, f"{base}_{sub}", joiner)
            suffixes += [f"_{sub}{suffix}" for suffix in inner]
            values += numbers
        else:
            suffixes.append(f"{joiner}{sub}")
            values.append(entry)
    return suffixes, values


def _numbers(values: list[Any], base: str, agg_type: AggregationType) -> list[float]:
    """The values of a handler metric's ``compute`` (one-element tensors or numbers) as floats.

    All tensors (every default handler): one stack and one host read. Anything else is converted
    value by value, so that a registered metric may return plain numbers (``{"p50": 3.0}``).

    Raises:
        TypeError: on a value that is neither a number nor a one-element tensor.
    """
    try:
        return torch.stack([v.reshape(()) for v in values]).tolist() if values else []
    except (AttributeError, TypeError, RuntimeError):  # no tensor, or not one element: value by value
        pass
    numbers = []
    for value in values:
        try:
            tensor = value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            tensor = None
        if tensor is None or tensor.numel() != 1 or tensor.is_complex():
            shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
            raise WrongTypeError(
                f"Expected the compute() of the {_type_name(agg_type)} handler's metric for {base!r} to return a "
                f"number or a one-element tensor (or a dict of them), got {type(value).__name__}{shape}: {value!r}."
            )
        numbers.append(float(tensor))
    return numbers


def _all_states(metric: TorchMetric) -> dict[str, Any]:
    """The states of ``metric`` and of the metrics inside it (a wrapper's, as ``lifetime.count``), by state_dict name.

    A wrapper such as :class:`~torchmetrics_ext.Windowed` holds its states in the metrics it wraps,
    none in its own ``metric_state``: a checkpoint of that alone held nothing of them.
    """
    states: dict[str, Any] = dict(metric.metric_state)
    for path, part in metric.named_modules():
        if path and isinstance(part, TorchMetric):
            states.update((f"{path}.{state}", value) for state, value in part.metric_state.items())
    return states


def _extra_states(metric: TorchMetric) -> dict[str, Any]:
    """``{state_dict key: value}`` of the extra states (``get_extra_state``) of ``metric`` and its parts (a ring)."""
    out = {}
    for path, part in metric.named_modules():
        if type(part).get_extra_state is not nn.Module.get_extra_state:
            value = part.get_extra_state()
            if value is not None:
                out[f"{path}.{_EXTRA}" if path else _EXTRA] = value
    return out


def _packed(value: Any, path: str, tensors: dict[str, Tensor], key: Key) -> Any:
    """``value`` (an extra state: dicts, lists, numbers, tensors) as JSON; its tensors go to ``tensors`` at ``path``."""
    if isinstance(value, Tensor):
        tensors[path] = value.detach().cpu().clone()
        return {"tensor": path}
    if isinstance(value, dict) and all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in value):
        return {"dict": [[k, _packed(v, f"{path}/{j}", tensors, key)] for j, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_packed(v, f"{path}/{j}", tensors, key) for j, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise WrongTypeError(
        f"Cannot checkpoint metric {key[1]!r} of dataset {key[0]!r}: its extra state {path!r} holds "
        f"{article(type(value).__name__)}, not dicts, lists, numbers, strings or tensors."
    )


def _unpacked(packed: Any, tensors: Mapping[str, Any], device: torch.device, key: Key) -> Any:
    """The extra state :func:`_packed` wrote (tensors on ``device``); ``ValueError`` on anything else."""
    if isinstance(packed, dict) and len(packed) == 1:
        ((kind, body),) = packed.items()
        if kind == "tensor":
            tensor = tensors.get(body)
            if not isinstance(tensor, Tensor):
                raise ValueError(f"The checkpoint lacks the tensor {body!r} (an extra state of {key}).")
            return tensor.clone().to(device)
        if kind == "dict" and isinstance(body, list):
            return {k: _unpacked(v, tensors, device, key) for k, v in body}
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [_unpacked(v, tensors, device, key) for v in body]
            return items if kind == "list" else tuple(items)
        if kind == "value":
            return body
    raise ValueError(f"Checkpointed extra state of {key} is not one MetricsAggregator.state_dict() writes: {packed!r}.")


class MetricsAggregator:
    r"""Aggregates per-sample :class:`Metric` records per ``(dataset, name)`` into TorchMetrics states.

    Each ``(dataset_name, name)`` gets its own ``torchmetrics.Metric`` (by default
    :class:`Sum`, :class:`Mean`, :class:`Max`, :class:`Min`, :class:`Distribution` or
    :class:`CategoricalCount` for its :class:`AggregationType`), held in the
    :class:`torch.nn.ModuleDict` ``self.metrics``. :meth:`update` groups a batch of records by
    key and makes one update per key through the metric's public methods (``summarize`` then
    ``fold`` for an :class:`AggregationMetric`, ``update`` otherwise); it never touches a
    metric's state itself. :meth:`get_metrics_for_logging` returns
    ``{f"{prefix}_{dataset}/{name}": float}``; a DISTRIBUTION expands to ``{name}_stat_mean``,
    ``_stat_min``, ``_stat_max``, ``_stat_std``, ``_stat_p05``, ``_stat_p50``, ``_stat_p95`` and a
    CATEGORICAL_COUNT to ``{name}_count_{category}`` (an ``int`` category whose text is also a
    ``str`` category is logged as ``{name}_count_{category}(int)``: ``1`` and ``"1"`` differ).

    Under ``torch.distributed`` (any backend), :meth:`get_metrics_for_logging` is a collective:
    every rank must call it. Ranks first exchange their keys (dataset, name and type, and a
    :class:`CategoricalCount`'s category names; one ``all_gather_object``, no values) and create
    the metrics they lack; then the states of all the metrics the default handlers make (and of
    any of this package's aggregation metrics, or TorchMetrics' classes without list states such as
    ``MeanMetric``) are gathered at once
    (:func:`~torchmetrics_ext.utilities.distributed.fused_gather`: one all-gather of the shapes and
    one per state dtype, whatever the number of keys) and each metric reduces them as
    TorchMetrics' sync would. A registered metric of another kind (list states, a
    ``dist_sync_fn``, ``process_group`` or ``sync_on_compute=False`` of its own, a ``_sync_dist``
    of its own, or whose handler syncs otherwise on another rank) syncs through TorchMetrics, in
    the agreed order. Every rank returns the same dict, whatever
    datasets, metrics or categories it saw (including none). :meth:`update` is no collective: a rejected batch raises
    on its rank alone; catch it there and keep calling :meth:`get_metrics_for_logging` on every
    rank (a rank that skips it leaves the others waiting until the process group's timeout).

    Args:
        process_group: the group to aggregate over (default: the whole world). On a rank outside
            it (``dist.new_group`` of other ranks) the aggregator logs this rank's own records.

    Raises:
        TypeError: if ``process_group`` is a number or a string (torchtune's positional ``dist_window_size``
            among them), not a group.
        TypeError: from :meth:`update`, on a record that is not a :class:`Metric`, a
            ``dataset_name`` or ``name`` that is not a ``str``, a non-number value for
            SUM/MEAN/MAX/MIN/DISTRIBUTION or a value that is not a ``str``/``int`` for
            CATEGORICAL_COUNT.
        ValueError: from :meth:`update`, on NaN/inf values (NaN of a SUM/MEAN/MAX/MIN key whose
            handler takes NaN excepted: see :meth:`register_handler`), an empty ``dataset_name`` or
            ``name`` (logged as ``train_/x``; torchtune takes it, :class:`MetricTransform` refuses it) or a
            ``(dataset, name)`` reused with another aggregation type (the message names both). A rejected
            batch changes nothing.

    Note:
        Memory: one metric per key; a DISTRIBUTION key takes about 60 kB whatever the number of
        values (its fixed 38.7 kB sketch, the metric object and its scalar states; the sketch's
        default for ``reset`` is kept as one element), a CATEGORICAL_COUNT one float64 per
        category. Values that are undefined (the ``std`` of a single value; the sums kept about a
        shift give the ``std`` of values far from 0 to full precision, see :class:`Distribution`)
        are left out of the logging dict, as torchtune does; any other key left out for ``nan`` (a
        mean of no value, a registered handler's ``nan``) gets one ``UndefinedMetricWarning`` naming
        it, once per key until :meth:`reset`. Nothing here is a ``MetricCollection``, so compute
        groups can never merge two datasets' metrics.

    Examples:
        >>> from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
        >>> aggregator = MetricsAggregator()
        >>> batch1_metrics = [
        ...     Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        ...     Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
        ... ]
        >>> batch2_metrics = [
        ...     Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        ...     Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
        ... ]
        >>> aggregator.update(batch1_metrics)
        >>> aggregator.update(batch2_metrics)
        >>> results = aggregator.get_metrics_for_logging(prefix="train")
        >>> results
        {'train_alpaca/tokens_seen': 200.0, 'train_alpaca/avg_tokens_seen': 100.0}
        >>> results == {"train_alpaca/tokens_seen": 200.0, "train_alpaca/avg_tokens_seen": 100.0}
        True
    """

    def __init__(self, process_group: Any | None = None) -> None:
        if isinstance(process_group, (int, float, complex, str, bytes)) and not outside_group(process_group):
            hint = ""
            if isinstance(process_group, int) and not isinstance(process_group, bool):
                hint = (
                    " (torchtune's `MetricsAggregator(dist_window_size)` has no counterpart here: a DISTRIBUTION"
                    " keeps every value in a fixed-size sketch; see docs/migration_torchtune.md)"
                )
            raise WrongTypeError(
                "Expected `process_group` to be a torch.distributed process group or None, "
                f"got {process_group!r} ({type(process_group).__name__}){hint}."
            )
        self.process_group = process_group
        self.metrics = nn.ModuleDict()
        self._factories: dict[AggregationType, MetricFactory] = dict(DEFAULT_HANDLERS)
        # (dataset, name) -> (aggregation type, name in self.metrics, the metric)
        self._keys: dict[Key, tuple[AggregationType, str, TorchMetric]] = {}
        self._next_id = 0
        self._device = torch.device("cpu")
        # updates a key had when its checkpoint was loaded (TorchMetrics' load_state_dict keeps no count)
        self._loaded_updates: dict[Key, int] = {}
        # how a new metric of each type would sync and its states (see _handler_kinds), probed once per handler
        self._probed: dict[AggregationType, _Probe] = {}
        # logged keys already said to be left out for nan (see _warn_left_out)
        self._left_out: set[str] = set()
        # (rank, world size) that saved the checkpoint this rank loaded, where it held keys (see _warn_copies)
        self._loaded_from: tuple[int, int] | None = None
        self._copies_told = False
        self._told_low_precision = False  # a SUM handler of float32 states said so (see _warn_low_precision)

    # ------------------------------------------------------------------ configuration

    def register_handler(self, agg_type: AggregationType, metric_factory: MetricFactory) -> None:
        """Use ``metric_factory()`` for new keys of ``agg_type``.

        Each call must return a new metric (the class, or a lambda that builds one): a factory
        that returns an instance already in use makes :meth:`update` raise ``ValueError`` rather
        than let two keys share one state.

        Once per batch and key, an :class:`AggregationMetric` (any of this package's aggregation
        metrics, or a subclass) gets ``fold(summarize(values))`` with the records' plain values;
        any other metric gets ``update`` with a float64 1-D tensor of the values (the list of
        categories for CATEGORICAL_COUNT). ``compute`` returns a number or a one-element tensor, or a
        dict of them (logged as ``{name}_{key}``, ``{name}_stat_{key}`` for DISTRIBUTION and
        ``{name}_count_{key}`` for CATEGORICAL_COUNT); anything else makes
        :meth:`get_metrics_for_logging` raise a ``TypeError`` naming the logging key.

        NaN records: every default handler refuses them (``nan_strategy="error"``: the batch raises
        ``ValueError`` and changes nothing). A SUM, MEAN, MAX or MIN handler whose metric declares
        another ``nan_strategy`` attribute (this package's :class:`Sum`, :class:`Mean`, :class:`Max`,
        :class:`Min`, TorchMetrics' ``SumMetric``, ``MeanMetric``, ... built with ``"ignore"``,
        ``"warn"``, ``"disable"`` or a float) takes them: the batch's other values are checked as
        always (inf, a non-number, an overflowing sum still refuse the whole batch), then its metric's
        ``update`` gets the key's values, NaN included, as a float64 1-D tensor, and its
        ``nan_strategy`` decides: ``"ignore"`` drops them, ``"warn"`` drops them with one warning
        per key and update, a float replaces them, ``"disable"`` keeps them, so the value is NaN from
        then on (until :meth:`reset`) and is logged as ``nan`` (other NaN values, undefined ones, are
        left out, with one ``UndefinedMetricWarning`` per key: see :meth:`get_metrics_for_logging`).
        A batch without NaN takes the usual path (``fold`` of its summary). DISTRIBUTION and
        CATEGORICAL_COUNT refuse NaN whatever the handler; a wrapper such as ``Windowed`` declares no
        ``nan_strategy`` of its own, so its key refuses NaN, even around a metric that takes NaN
        (``Windowed(Mean(nan_strategy="ignore"), n)``; the error says so): its window would count
        each dropped NaN record as a sample, so it would not be the window over the records kept
        (drop NaN records before ``update`` for such a key). TorchMetrics' classes default to ``"warn"``:
        a bare ``MeanMetric`` handler warns and drops NaN (``MeanMetric(nan_strategy="error")`` refuses it).

        A wrapper's dict of dicts is flattened, each outer key joined with ``_`` in front of the
        inner entries: a :class:`~torchmetrics_ext.Windowed` handler (``compute`` returns
        ``{"lifetime": ..., "window": ...}``) logs ``{name}_lifetime`` and ``{name}_window`` around
        ``Sum``, ``Mean``, ``Max`` or ``Min``, and ``{name}_lifetime_stat_{key}`` and
        ``{name}_window_stat_{key}`` around ``Distribution``. ``Windowed`` refuses
        ``CategoricalCount`` (its first ``update`` raises ``ValueError`` saying why).

        Raises:
            TypeError: if ``agg_type`` is not an :class:`AggregationType` or the factory is not callable.
            ValueError: if keys of ``agg_type`` already exist (call :meth:`reset` first).

        Examples:
            >>> from torchmetrics.aggregation import MaxMetric
            >>> from torchmetrics_ext.aggregation import AggregationType, Distribution, Metric, MetricsAggregator
            >>> aggregator = MetricsAggregator()
            >>> aggregator.register_handler(AggregationType.MAX, MaxMetric)  # TorchMetrics' own class
            >>> aggregator.register_handler(AggregationType.DISTRIBUTION, lambda: Distribution(percentiles=(50, 99)))
            >>> aggregator.update([Metric("alpaca", "seq_len", v, AggregationType.MAX) for v in (7, 12)])
            >>> aggregator.update([Metric("alpaca", "tokens", v, AggregationType.DISTRIBUTION) for v in range(1, 101)])
            >>> logged = aggregator.get_metrics_for_logging(prefix="train")
            >>> for key, value in logged.items():  # np.percentile: 50.5 and 99.01 (a sketch within 1%)
            ...     print(f"{key} {value:.2f}")
            train_alpaca/seq_len 12.00
            train_alpaca/tokens_stat_mean 50.50
            train_alpaca/tokens_stat_min 1.00
            train_alpaca/tokens_stat_max 100.00
            train_alpaca/tokens_stat_std 29.01
            train_alpaca/tokens_stat_p50 50.41
            train_alpaca/tokens_stat_p99 98.52
            >>> aggregator.register_handler(AggregationType.MAX, MaxMetric)
            Traceback (most recent call last):
            ValueError: Cannot replace the MAX handler: 1 metric(s) already use it (...), or call reset() first, ...

            A window of the last two values (one per update here) next to the lifetime value:

            >>> from torchmetrics_ext import Windowed
            >>> from torchmetrics_ext.aggregation import Sum
            >>> recent = MetricsAggregator()
            >>> recent.register_handler(AggregationType.SUM, lambda: Windowed(Sum(), window_size=2))
            >>> recent.register_handler(
            ...     AggregationType.DISTRIBUTION, lambda: Windowed(Distribution(percentiles=(50,)), window_size=2)
            ... )
            >>> for value in (1, 2, 6):
            ...     recent.update([
            ...         Metric("alpaca", "tokens", value, AggregationType.SUM),
            ...         Metric("alpaca", "seq_len", value, AggregationType.DISTRIBUTION),
            ...     ])
            >>> for key, value in recent.get_metrics_for_logging(prefix="train").items():  # p50: a sketch within 1%
            ...     print(f"{key} {value:.2f}")
            train_alpaca/tokens_lifetime 9.00
            train_alpaca/tokens_window 8.00
            train_alpaca/seq_len_lifetime_stat_mean 3.00
            train_alpaca/seq_len_lifetime_stat_min 1.00
            train_alpaca/seq_len_lifetime_stat_max 6.00
            train_alpaca/seq_len_lifetime_stat_std 2.65
            train_alpaca/seq_len_lifetime_stat_p50 1.99
            train_alpaca/seq_len_window_stat_mean 4.00
            train_alpaca/seq_len_window_stat_min 2.00
            train_alpaca/seq_len_window_stat_max 6.00
            train_alpaca/seq_len_window_stat_std 2.83
            train_alpaca/seq_len_window_stat_p50 4.00

            A loss whose NaN steps are skipped (TorchMetrics' ``nan_strategy``), next to a SUM that refuses NaN:

            >>> from torchmetrics_ext.aggregation import Mean
            >>> losses = MetricsAggregator()
            >>> losses.register_handler(AggregationType.MEAN, lambda: Mean(nan_strategy="ignore"))
            >>> losses.update([Metric("alpaca", "loss", v, AggregationType.MEAN) for v in (2.0, float("nan"), 4.0)])
            >>> losses.update([Metric("alpaca", "tokens", float("nan"), AggregationType.SUM)])
            Traceback (most recent call last):
            ValueError: Metric 'tokens' of dataset 'alpaca' is a SUM: expected a finite number, got nan (float).
            >>> losses.get_metrics_for_logging(prefix="train")
            {'train_alpaca/loss': 3.0}
        """
        if not isinstance(agg_type, AggregationType):
            raise WrongTypeError(
                "Expected `agg_type` to be a member of torchmetrics_ext.aggregation.AggregationType, "
                f"got {_type_name(agg_type)}."
            )
        if not callable(metric_factory) or isinstance(metric_factory, nn.Module):
            raise WrongTypeError(
                "Expected `metric_factory` to be a callable returning a new torchmetrics.Metric "
                f"(e.g. the class or a lambda), got {type(metric_factory).__name__}."
            )
        used = [key for key, (t, _, _) in self._keys.items() if t is agg_type]
        if used:
            raise ValueError(
                f"Cannot replace the {_type_name(agg_type)} handler: {len(used)} metric(s) already use it "
                f"(e.g. {used[0]}): register handlers before the first update() or load_state_dict() (to resume: "
                "register, then load), or call reset() first, which forgets every key."
            )
        self._factories[agg_type] = metric_factory
        self.__dict__.get("_probed", {}).pop(agg_type, None)

    def to(self, device: torch.device | str) -> MetricsAggregator:
        """Move every metric (and the ones created later) to ``device``.

        Under ``torch.distributed`` the states are gathered as tensors of this device: a process group
        of NCCL alone (no CPU backend) needs the rank's GPU here (``to(f"cuda:{local_rank}")``).

        Raises:
            TypeError: if ``device`` is no device (a dtype, as ``module.to(torch.bfloat16)``: the states keep
                their float64 accumulation whatever the model's dtype).
        """
        if not isinstance(device, (torch.device, str, int)) or isinstance(device, bool):
            raise WrongTypeError(
                f"Expected `device` to be a torch.device, a device string or an index, got {device!r} "
                f"({type(device).__name__}). MetricsAggregator.to moves its metrics only: their states stay float64 "
                "(counts past 2**24 would round in float32)."
            )
        self._device = torch.device(device)
        self.metrics.to(self._device)
        return self

    def reset(self) -> None:
        """Forget every ``(dataset, name)`` and its state (registered handlers are kept).

        Examples:
            >>> from torchmetrics.aggregation import MaxMetric
            >>> from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
            >>> aggregator = MetricsAggregator()
            >>> aggregator.register_handler(AggregationType.MAX, MaxMetric)
            >>> aggregator.update([Metric("alpaca", "seq_len", 7, AggregationType.MAX)])
            >>> aggregator.reset()
            >>> aggregator.get_metrics_for_logging()
            {}
            >>> aggregator.update([Metric("alpaca", "seq_len", 3, AggregationType.MAX)])
            >>> [type(metric).__name__ for metric in aggregator.metrics.values()]  # the handler is kept
            ['MaxMetric']
            >>> aggregator.get_metrics_for_logging()
            {'train_alpaca/seq_len': 3.0}
        """
        self.metrics = nn.ModuleDict()
        self._keys = {}
        self._next_id = 0
        self._loaded_updates = {}
        self._left_out = set()
        self._loaded_from, self._copies_told = None, False

    # ------------------------------------------------------------------ update

    def update(self, records: Iterable[Metric]) -> None:
        """Fold a batch of records in: one update per ``(dataset, name)``.

        Every key's values are checked (and summarized) before any metric changes; a rejected
        batch changes nothing, not even the set of keys. That holds when a registered metric's
        own ``update`` refuses the values too: the metrics it and the batch's other registered
        handlers changed get their states back before the error propagates.

        A registered ``metric_factory`` that raises while making a new key's metric (or returns no new
        ``torchmetrics.Metric``) changes nothing either: its own error propagates, type and traceback
        kept, with a note naming the key and the aggregation type it was making.

        Raises:
            TypeError: if ``records`` is not iterable (a single :class:`Metric` must be put in a
                list), or see the class.
        """
        if not isinstance(records, list):
            try:
                iterator = iter(records)
            except TypeError:
                hint = " (wrap one record in a list: update([record]))" if hasattr(records, "agg_type") else ""
                raise WrongTypeError(
                    f"Expected `records` to be a list (or iterable) of Metric records{hint}, "
                    f"got {type(records).__name__}."
                ) from None
            records = list(iterator)
        grouped: defaultdict[tuple[str, str, AggregationType], list[Any]] = defaultdict(list)
        try:
            for record in records:
                grouped[record.dataset_name, record.name, record.agg_type].append(record.value)
        except (AttributeError, TypeError):
            raise WrongTypeError(_bad_record_message(records)) from None
        if not grouped:
            return
        types: dict[Key, AggregationType] = {}
        for ds, name, agg_type in grouped:
            key = (ds, name)
            if key in types:
                raise ValueError(_conflict(key, types[key], agg_type))
            types[key] = agg_type
        fresh: dict[Key, TorchMetric] = {}
        taken: set[int] = set()  # ids of the metrics in use, filled when a first new key needs them
        plan: list[Step] = []
        for (ds, name, agg_type), values in grouped.items():
            key = (ds, name)
            metric = self._metric_for(key, agg_type, fresh, taken)
            try:
                plan.append(plan_step(metric, agg_type, values, self._device))
            except (TypeError, ValueError) as err:
                raise _rejected(key, agg_type, err) from None
        updates = [step for step in plan if isinstance(step, Update)]
        if updates:  # registered plain metrics, whose update may still refuse: undone on an error
            apply_updates(updates, list(fresh.values()))
        for key, metric in fresh.items():  # only once every key's values were accepted
            self._register(key, types[key], metric)
        for step in plan:
            if isinstance(step, Fold):
                step.apply()

    def _metric_for(
        self, key: Key, agg_type: AggregationType, fresh: dict[Key, TorchMetric], taken: set[int]
    ) -> TorchMetric:
        """The metric of ``key``: the registered one, or a new one (added to ``fresh``, not registered yet).

        ``taken`` holds the ids of the metrics in use (held or fresh); it is filled at the first new key.
        """
        if not isinstance(agg_type, AggregationType) or agg_type not in self._factories:
            # a name or number is the wrong type (as `register_handler` says); a member without a handler a value
            raise refusal(
                f"Metric {key[1]!r} of dataset {key[0]!r} has an unknown agg_type {_type_name(agg_type)}; "
                "expected a member of torchmetrics_ext.aggregation.AggregationType.",
                wrong_type=not isinstance(agg_type, AggregationType),
            )
        known = self._keys.get(key)
        if known is not None:
            if known[0] is not agg_type:
                raise ValueError(_conflict(key, known[0], agg_type))
            return known[2]
        if not (isinstance(key[0], str) and isinstance(key[1], str)):  # checked once, when the key is new
            raise WrongTypeError(
                f"Expected a record's `dataset_name` and `name` to be strings, got {key[0]!r} and {key[1]!r}."
            )
        if not (key[0] and key[1]):  # logged as "train_/x" or "train_alpaca/": refused, as the transform does
            field = "dataset_name" if not key[0] else "name"
            raise ValueError(
                f"Metric {key[1]!r} of dataset {key[0]!r}: expected a non-empty `{field}` (it would be logged as "
                f"'{{prefix}}_{key[0]}/{key[1]}'); `MetricTransform.set_dataset_name` refuses an empty name alike."
            )
        if not taken:
            taken.update(map(id, self.metrics.values()))
        try:
            metric = fresh[key] = self._make(agg_type, taken)
        except Exception as err:  # the user's factory's own error (its type kept), told which key it was making
            add_note(err, _making(key, agg_type, "a new key", "the batch changed nothing"))
            raise
        return metric

    def _make(self, agg_type: AggregationType, taken: set[int]) -> TorchMetric:
        """A new metric from the handler of ``agg_type`` (not registered yet); its id is added to ``taken``.

        Raises:
            TypeError: if the handler returned something other than a ``torchmetrics.Metric``.
            ValueError: if it returned a metric already in use (``taken``): two keys would share one state.
        """
        metric = self._new_metric(agg_type)
        if id(metric) in taken:
            raise ValueError(
                f"The {_type_name(agg_type)} handler returned {article(type(metric).__name__)} that is already in use: "
                "two metrics would share one state. `metric_factory` must return a new metric at each call "
                "(e.g. the class, or `lambda: Sum()`), not one instance."
            )
        taken.add(id(metric))
        metric = self._prepared(metric)
        if agg_type is AggregationType.SUM and not self.__dict__.get("_told_low_precision", False):
            self._warn_low_precision(metric)
        return metric

    def _warn_low_precision(self, metric: TorchMetric) -> None:
        """Warn, once per aggregator, where the SUM handler's metric keeps floating states narrower than float64.

        TorchMetrics' ``SumMetric`` keeps float32 states: a total past 2**24 (16,777,216) rounds, which a token
        count reaches within minutes of fine-tuning. Its aggregators also cast every input to their ``dtype``,
        which TorchMetrics' ``.to(device)`` (done to every new metric here) resets to float32: a
        ``SumMetric().set_dtype(torch.float64)`` rounds its inputs too. One look at the new metric, only where a
        SUM key is made (never per update).
        """
        dtypes: list[torch.dtype] = []
        for part in metric.modules():
            if not isinstance(part, TorchMetric):
                continue
            states = (getattr(part, state, None) for state in part._defaults)
            dtypes += [value.dtype for value in states if isinstance(value, Tensor) and value.is_floating_point()]
            if isinstance(part, BaseAggregator):  # the dtype it casts its inputs to
                dtypes.append(part.dtype)
        narrow = [dtype for dtype in dtypes if dtype.is_floating_point and torch.finfo(dtype).bits < 64]
        if not narrow:
            return
        self._told_low_precision = True
        dtype = str(narrow[0]).removeprefix("torch.")
        warn_at_user(
            f"MetricsAggregator: the SUM handler's {type(metric).__name__} keeps {dtype} states, so totals past 2**24 "
            "(16,777,216) round (a tokens_seen of 16,777,217 logs 16,777,216). Register "
            "torchmetrics_ext.aggregation.Sum (the default: float64 states and inputs) for counts.",
        )

    def _new_metric(self, agg_type: AggregationType) -> TorchMetric:
        """``metric_factory()`` of ``agg_type``'s handler, checked to be a ``torchmetrics.Metric`` (``TypeError``)."""
        metric = self._factories[agg_type]()
        if not isinstance(metric, TorchMetric):
            raise WrongTypeError(
                f"The {_type_name(agg_type)} handler returned {type(metric).__name__}, not a torchmetrics.Metric."
            )
        return metric

    def _prepared(self, metric: TorchMetric) -> TorchMetric:
        """``metric`` set up to sync in this aggregator (its group, no cached compute, typed list gathers), moved."""
        if self.process_group is not None:
            metric.process_group = self.process_group
        alone = outside_group(self.process_group)  # this rank aggregates its own records (see _distributed)
        # a cached value would let this rank skip its part of a later sync that other ranks join
        metric.compute_with_cache = False
        for part in metric.modules():  # a wrapper's metrics sync in its compute
            # a registered metric's list state, empty on a rank that lacks the key, is sent as TorchMetrics'
            # float32 placeholder next to the others' float64 values: agree on the dtype first
            if isinstance(part, TorchMetric) and has_untyped_list_states(part):
                part.dist_sync_fn = TypedGather(part.dist_sync_fn)
            if alone and isinstance(part, TorchMetric):  # TorchMetrics would gather from no rank and fail
                part.distributed_available_fn = _not_distributed
        return metric.to(self._device)

    def _register(self, key: Key, agg_type: AggregationType, metric: TorchMetric) -> None:
        name = f"m{self._next_id}"
        self._next_id += 1
        self.metrics[name] = metric
        self._keys[key] = (agg_type, name, metric)

    # ------------------------------------------------------------------ logging

    def _distributed(self) -> bool:
        return _world(self.process_group) is not None

    def _agree_on_keys(self) -> dict[Key, SyncEntry]:
        """Exchange keys across ranks (no values); create what this rank lacks; order keys like the union.

        Each key travels with how its metric syncs (:func:`~torchmetrics_ext.aggregation.sync.sync_kind`)
        and, for a CATEGORICAL_COUNT, its category names; each rank also sends how the metrics its
        handlers make would sync (for the keys it lacks). A key joins the fused sync where every
        rank's metric for it would join it alike (so ranks with other handlers sync as before);
        the union of its category names, in rank order, lays out every rank's counts.

        Returns:
            The keys that join the fused sync, in the agreed order: their metric, kind and categories.

        Raises:
            ValueError: on every rank, if ranks give one key two types, or metrics (or handlers, on the
                ranks that lack the key) whose states differ, which no sync can join, or that report other
                percentiles (each rank would log other keys), or if a rank that lacks a key has a handler that
                cannot make its metric.
        """
        group = self.process_group
        local = []
        for (ds, name), (agg_type, _, metric) in self._keys.items():
            kind = sync_kind(metric, group)
            names = metric.categories if kind == CATEGORIES and isinstance(metric, CategoricalCount) else None
            local.append((ds, name, agg_type.value, kind, names, state_layout(metric), reported_percentiles(metric)))
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, (local, self._handler_kinds(), self._loaded_from), group=group)
        self._warn_copies([loaded_from for _, _, loaded_from in gathered])
        union: dict[Key, AggregationType] = {}
        kinds: defaultdict[Key, dict[int, _Probe]] = defaultdict(dict)  # key -> {rank holding it: its metric's probe}
        categories: defaultdict[Key, list[Any]] = defaultdict(list)
        for rank, (entries, _, _) in enumerate(gathered):
            for ds, name, agg_value, kind, names, layout, reported in entries:
                key, agg_type = (ds, name), AggregationType(agg_value)
                if union.setdefault(key, agg_type) is not agg_type:
                    raise ValueError(_conflict(key, union[key], agg_type) + " (the ranks disagree)")
                kinds[key][rank] = (kind, layout, None, reported)
                categories[key].append(names or [])
        fused: dict[Key, str] = {}
        for key, agg_type in union.items():
            held = kinds[key]  # a rank without the key makes its metric with its handler
            every = [held.get(r) or made.get(agg_type.value, _NO_PROBE) for r, (_, made, _) in enumerate(gathered)]
            failed = [(r, error) for r, (_, _, error, _) in enumerate(every) if error is not None]
            if failed:  # that rank would raise alone while creating the key, the others waiting in the sync
                raise ValueError(_unmade(key, agg_type, group, *failed[0]))
            layouts = list(dict.fromkeys(layout for _, layout, _, _ in every if layout is not None))
            if len(layouts) > 1:  # positional gathers of other states: wrong values, or gloo aborts the process
                raise ValueError(_unlike(key, layouts[0], layouts[1]))
            reported = [found for _, _, _, found in every]
            if any(found != reported[0] for found in reported):  # one sketch, but each rank would log other keys
                raise ValueError(_other_percentiles(key, agg_type, group, reported))
            synced = [kind != UNSYNCED for kind, _, _, _ in every]
            if any(synced) and not all(synced):  # the syncing ranks would wait in their sync for the others
                raise ValueError(_half_synced(key, group, synced.index(False), synced.index(True)))
            if every[0][0] not in (None, UNSYNCED) and all(kind == every[0][0] for kind, _, _, _ in every):
                fused[key] = every[0][0]
        self._make_missing(union, [len(kinds[key]) < len(gathered) for key in union])
        self._keys = {key: self._keys[key] for key in union}
        return {
            key: (self._keys[key][2], kind, ordered_union(categories[key]) if kind == CATEGORIES else None)
            for key, kind in fused.items()
        }

    def _warn_copies(self, loaded_from: list[tuple[int, int] | None]) -> None:
        """Warn (once, until :meth:`reset` or a load) where several ranks loaded the checkpoint of one saved rank.

        ``loaded_from[r]`` is the ``(rank, world size)`` that saved the state rank ``r`` loaded (``None``: none, an
        empty one, or one written before it was recorded). A state holds one rank's records, so every rank that loads
        it counts them once more in the synced values: a recipe that saves rank 0's ``state_dict()`` only (or a
        single-process run's) and loads it everywhere. Nothing is changed (no rank can tell which of them should
        keep the records); the information travels in the keys' exchange, no collective added.
        """
        if self._copies_told:
            return
        group = self.process_group
        by_origin: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
        for rank, origin in enumerate(loaded_from):
            if origin is not None:
                by_origin[origin].append(_global(group, rank))
        copied = [(origin, ranks) for origin, ranks in by_origin.items() if len(ranks) > 1]
        if not copied:
            return
        self._copies_told = True
        told = "; ".join(
            f"ranks {', '.join(map(str, ranks))} loaded the state that rank {saved_rank} of a {saved_world}-rank run "
            f"saved, so its records are counted {len(ranks)} times"
            for (saved_rank, saved_world), ranks in copied
        )
        warn_at_user(
            f"MetricsAggregator: {told} in every logged value. A state_dict() holds the records of the rank that "
            "saved it: save every rank's (torchmetrics_ext.integrations.lightning.AggregatorCheckpoint, or an "
            "all_gather_object of the ranks' states) and load each on one rank; a rank without a saved state starts "
            "empty.",
        )

    def _make_missing(self, union: dict[Key, AggregationType], lacked: list[bool]) -> None:
        """Make and register the metrics of the keys of ``union`` this rank lacks; if one cannot, raise on every rank.

        The probes of :meth:`_handler_kinds` cannot see every failure of a handler making the very
        metric (one that returns an instance already in use, or a metric that syncs or holds states
        unlike its probe's, e.g. a stateful factory: the probe is what every rank took this rank's
        metric to be when deciding how the key syncs, fused or not): where a rank lacks a
        key (``lacked``, the same on every rank), the ranks exchange what went wrong (one more
        collective) and all raise the first rank's ``ValueError``, or none does; nothing is
        registered then. A rank raising alone would leave the others waiting in the sync until the
        process group's timeout.
        """
        taken = set(map(id, self.metrics.values()))
        made: dict[Key, TorchMetric] = {}
        failure: tuple[Key, AggregationType, str] | None = None
        for key, agg_type in union.items():
            if key in self._keys:
                continue
            try:
                metric = self._make(agg_type, taken)
                # this rank's probe, as every rank saw it in the keys' exchange (kept: its probe succeeded,
                # or the exchange raised on every rank); a key left to TorchMetrics is checked too
                probe = self._probed.get(agg_type, _NO_PROBE)
                if (sync_kind(metric, self.process_group), state_layout(metric)) != probe[:2]:
                    raise RuntimeError(
                        f"it made {article(type(metric).__name__)}, which syncs unlike the metric it made before "
                        "(a handler must make the same kind of metric at each call)"
                    )
                if reported_percentiles(metric) != probe[3]:
                    raise RuntimeError(
                        f"it made {article(type(metric).__name__)} reporting other percentiles than the metric it made "
                        "before (a handler must make the same kind of metric at each call)"
                    )
            except Exception as err:  # any error of the user's factory, told to every rank
                failure = (key, agg_type, f"{type(err).__name__}: {err}")
                break
            made[key] = metric
        if any(lacked):  # the same on every rank: every rank joins this exchange or none does
            failures: list[Any] = [None] * dist.get_world_size(self.process_group)
            dist.all_gather_object(failures, failure, group=self.process_group)
            failed = [(rank, found) for rank, found in enumerate(failures) if found is not None]
            if failed:
                rank, (key, agg_type, error) = failed[0]
                raise ValueError(_unmade(key, agg_type, self.process_group, rank, error))
        for key, metric in made.items():
            self._register(key, union[key], metric)

    def _handler_kinds(self) -> dict[str, _Probe]:
        """How a new metric of each aggregation type would sync and its states, from one probe per handler, kept.

        ``(sync_kind, state_layout, None, reported_percentiles)`` of the probe; ``(None, None, error, None)`` for a
        handler that fails to make a metric (not kept: it is tried again at the next call). A key that a rank lacks
        and its handler cannot make is then refused on every rank (:meth:`_agree_on_keys`), instead of
        raising on that rank alone while the others wait in the sync.
        """
        probed: dict[AggregationType, _Probe] = self.__dict__.setdefault("_probed", {})  # older pickles lack it
        out: dict[str, _Probe] = {}
        for agg_type in self._factories:
            if len(probed.get(agg_type, ())) != len(_NO_PROBE):  # not probed yet (or by a version without percentiles)
                try:
                    probe = self._prepared(self._new_metric(agg_type))
                    kind, layout = sync_kind(probe, self.process_group), state_layout(probe)
                    probed[agg_type] = (kind, layout, None, reported_percentiles(probe))
                except Exception as err:  # any error of the user's factory, told to every rank
                    out[agg_type.value] = (None, None, f"{type(err).__name__}: {err}", None)
                    continue
            out[agg_type.value] = probed[agg_type]
        return out

    def _warn_left_out(self, key: str, metric: TorchMetric) -> None:
        """Say once per logged ``key`` (until :meth:`reset`) that its ``nan`` is left out of the logged dict."""
        warned: set[str] = self.__dict__.setdefault("_left_out", set())  # older pickles lack it
        if key in warned:
            return
        warned.add(key)
        warn_at_user(
            f"MetricsAggregator: {key!r} is undefined ({type(metric).__name__}.compute() gave nan) and is left out of "
            "the logged dict (said once per key until reset()). A mean of no value (every record NaN under a "
            "handler whose nan_strategy drops them), a window or a handler's own nan do this; a nan_strategy="
            '"disable" handler logs its NaN.',
            UndefinedMetricWarning,
        )

    def get_metrics_for_logging(self, prefix: str = "train") -> dict[str, float]:
        """``{f"{prefix}_{dataset}/{name}": value}`` over everything seen on every rank.

        A collective under ``torch.distributed``: every rank must call it, and every rank gets
        the same dict.

        A value that is ``nan`` is undefined and left out (a ``nan_strategy="disable"`` handler's kept
        NaN record excepted: logged as ``nan``). A DISTRIBUTION's std of one value is left out without
        a word, as torchtune does; any other key left out gets one ``UndefinedMetricWarning`` naming
        it, the first time (once per key until :meth:`reset`), pointing at this call.

        Examples:
            >>> import warnings
            >>> from torchmetrics_ext.aggregation import AggregationType, Mean, Metric, MetricsAggregator
            >>> aggregator = MetricsAggregator()
            >>> aggregator.register_handler(AggregationType.MEAN, lambda: Mean(nan_strategy="ignore"))
            >>> aggregator.update([Metric("alpaca", "loss", float("nan"), AggregationType.MEAN)])
            >>> aggregator.update([Metric("alpaca", "seq_len", 7, AggregationType.DISTRIBUTION)])
            >>> with warnings.catch_warnings(record=True) as caught:
            ...     warnings.simplefilter("always")
            ...     logged = aggregator.get_metrics_for_logging(prefix="train")
            >>> "train_alpaca/loss" in logged, "train_alpaca/seq_len_stat_std" in logged  # of no value, of one
            (False, False)
            >>> logged["train_alpaca/seq_len_stat_mean"]
            7.0
            >>> [str(w.message).split(" (")[0] for w in caught]  # only the loss is said
            ["MetricsAggregator: 'train_alpaca/loss' is undefined"]

        Raises:
            ValueError: two metrics would be logged under one key (``Metric("a/b", "c")`` and
                ``Metric("a", "b/c")``, or a metric named like another's entry such as
                ``x_stat_mean``), instead of one value silently replacing the other.
            TypeError: if ``prefix`` is not a string (checked before any collective).
        """
        if not isinstance(prefix, str):
            raise WrongTypeError(f"Expected `prefix` to be a string such as 'train' or 'val', got {prefix!r}.")
        distributed = self._distributed()
        fused = self._agree_on_keys() if distributed else {}
        out: dict[str, float] = {}
        sources: dict[str, Key] = {}  # logged key -> the (dataset, name) it comes from
        clashes: list[str] = []

        def put(key: str, number: float, source: Key, metric: TorchMetric, quiet: bool = False) -> None:
            if sources.setdefault(key, source) != source:
                clashes.append(f"{key!r} from {sources[key]} and from {source}")
            elif not math.isnan(number) or _keeps_nan(metric):  # a kept NaN record's NaN is no undefined value
                out[key] = number
            elif not quiet:
                self._warn_left_out(key, metric)

        # undefined values are not logged (nan dropped below); a rank without updates syncs the others'
        # states: neither warns (without touching the process's warning filters)
        with silencing_undefined(), counted_as_updated(metric for _, _, metric in self._keys.values()):
            # the aggregator's own metrics from one fused gather; the others through TorchMetrics, key by key
            # a DISTRIBUTION's warning (values beyond its sketch's range) names the logged key
            named = [
                f"{prefix}_{ds}/{name}" if self._keys[ds, name][0] is AggregationType.DISTRIBUTION else None
                for ds, name in fused
            ]
            synced = (
                dict(zip(fused, synced_values(list(fused.values()), self.process_group, named), strict=True))
                if fused
                else {}
            )
            for (ds, name), (agg_type, _, metric) in self._keys.items():
                base = f"{prefix}_{ds}/{name}"
                if (ds, name) in synced:
                    value = synced[ds, name]
                elif agg_type is AggregationType.DISTRIBUTION:
                    with naming_metric(base):
                        value = self._compute(metric, distributed)
                else:
                    value = self._compute(metric, distributed)
                if isinstance(value, (dict, _Counted)):
                    joiner = _JOINERS.get(agg_type, "_")
                    if isinstance(value, _Counted):  # a CategoricalCount's: one counts vector, no tensor per category
                        names, numbers = _entry_names(value.categories, base), value.counts.tolist()
                        keys = [f"{joiner}{sub}" for sub in names]
                    else:
                        keys, numbers = _leaves(value, base, joiner)
                        if not all(type(number) is float for number in numbers):  # tensors (a compute's)
                            numbers = _numbers(numbers, base, agg_type)
                    for sub, number in zip(keys, numbers, strict=True):
                        # a DISTRIBUTION's std of one value is left out without a word, as torchtune does
                        quiet = agg_type is AggregationType.DISTRIBUTION and sub.endswith(f"{joiner}std")
                        put(f"{base}{sub}", number, (ds, name), metric, quiet)
                else:
                    try:
                        number = float(value)
                    except (TypeError, ValueError, RuntimeError):
                        number = _numbers([value], base, agg_type)[0]  # raises, naming the handler and the key
                    put(base, number, (ds, name), metric)
        if clashes:  # after every metric was computed: under DDP every rank reaches this point alike
            raise ValueError(
                "Two metrics would be logged under one key (the second would overwrite the first): "
                + "; ".join(clashes)
                + ". Rename a dataset or a metric."
            )
        return out

    @staticmethod
    def _compute(metric: TorchMetric, distributed: bool) -> Any:
        """The metric's value: synced through TorchMetrics under DDP, directly otherwise.

        A :class:`CategoricalCount`'s is its whole value (categories and counts vector), not the
        dict of one tensor per category its ``compute`` makes of it (a subclass's own ``compute``:
        its dict).
        """
        if isinstance(metric, CategoricalCount) and metric._own_compute():
            return metric._synced_value() if distributed else metric._whole_value()
        if not distributed and isinstance(metric, AggregationMetric):
            return metric._logged_value()  # nothing to sync: skip the wrapper's copies (host numbers where it can)
        return metric.compute()

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint: ``{"metadata": <JSON-serialisable>, "tensors": {name: Tensor}}``.

        ``metadata`` lists every key (dataset, name, aggregation type, update count, state
        layout); ``tensors`` holds each metric's states (list states entry by entry), those of the metrics
        inside it (a wrapper's, such as a ``Windowed``'s ``lifetime.sum_value``) included. A module's extra state
        (``get_extra_state``: a ``Windowed``'s ring) is written in the entry's ``extra_states`` as JSON, its
        tensors in ``tensors``. ``metadata["saved_by"]`` is ``[rank, world size]`` of the saving process: the
        state holds that rank's records only, and ranks that load one rank's state count them once each (the next
        :meth:`get_metrics_for_logging` warns, naming them).

        Examples:
            >>> import io
            >>> import torch
            >>> from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
            >>> aggregator = MetricsAggregator()
            >>> aggregator.update([Metric("alpaca", "tokens_seen", 100, AggregationType.SUM)])
            >>> checkpoint = io.BytesIO()
            >>> torch.save(aggregator.state_dict(), checkpoint)
            >>> _ = checkpoint.seek(0)
            >>> resumed = MetricsAggregator()
            >>> resumed.load_state_dict(torch.load(checkpoint))
            >>> resumed.update([Metric("alpaca", "tokens_seen", 50, AggregationType.SUM)])
            >>> resumed.get_metrics_for_logging(prefix="train")
            {'train_alpaca/tokens_seen': 150.0}
        """
        entries, tensors = [], {}
        for i, ((ds, name), (agg_type, _, metric)) in enumerate(self._keys.items()):
            layout: dict[str, int | None] = {}
            for state, value in _all_states(metric).items():  # named as the metric's own state_dict names them
                if isinstance(value, Tensor):
                    layout[state] = None
                    tensors[f"{i}/{state}"] = value.detach().cpu().clone()
                else:
                    layout[state] = len(value)
                    for j, item in enumerate(value):
                        tensors[f"{i}/{state}/{j}"] = item.detach().cpu().clone()
            entry = {
                "dataset_name": ds,
                "name": name,
                "agg_type": agg_type.value,
                "update_count": self._loaded_updates.get((ds, name), 0) + metric.update_count,
                "states": layout,
            }
            extra = {
                key: _packed(value, f"{i}/{key}", tensors, (ds, name)) for key, value in _extra_states(metric).items()
            }
            if extra:  # a wrapper's (Windowed's ring): only then, so other checkpoints keep their metadata
                entry["extra_states"] = extra
            entries.append(entry)
        rank, world = _world(self.process_group, min_size=1) or (0, 1)
        # who saved it ([rank, world size]): ranks that load one rank's state all count its records (_warn_copies)
        return {"metadata": {"format": _FORMAT, "metrics": entries, "saved_by": [rank, world]}, "tensors": tensors}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from :meth:`state_dict` (replacing everything held now).

        Raises:
            ValueError: if the checkpoint is not one of this class or does not fit the current handlers.

        Examples:
            >>> from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
            >>> saved = MetricsAggregator()
            >>> saved.update([Metric("alpaca", "avg_len", 4, AggregationType.MEAN)])
            >>> aggregator = MetricsAggregator()
            >>> aggregator.update([Metric("dolly", "avg_len", 9, AggregationType.MEAN)])
            >>> aggregator.load_state_dict(saved.state_dict())  # what was held before is gone
            >>> aggregator.get_metrics_for_logging(prefix="train")
            {'train_alpaca/avg_len': 4.0}
            >>> aggregator.load_state_dict({"tensors": {}})
            Traceback (most recent call last):
            ValueError: Expected a state dict made by MetricsAggregator.state_dict() (format ...).
        """
        metadata = state_dict.get("metadata") if isinstance(state_dict, dict) else None
        if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
            raise refusal(  # not even a dict: the wrong type; a dict of another format: a value
                f"Expected a state dict made by MetricsAggregator.state_dict() (format {_FORMAT!r})"
                + ("." if isinstance(state_dict, dict) else f", got {type(state_dict).__name__}."),
                wrong_type=not isinstance(state_dict, dict),
            )
        tensors, entries = state_dict.get("tensors"), metadata.get("metrics")
        if not isinstance(tensors, Mapping) or not isinstance(entries, list):
            raise ValueError(
                "Expected a state dict with a 'tensors' dict and a 'metrics' list in its 'metadata', as "
                f"MetricsAggregator.state_dict() makes it; got {type(tensors).__name__} and {type(entries).__name__}."
            )
        keys, metrics, loaded = {}, nn.ModuleDict(), {}
        taken = set(map(id, self.metrics.values()))  # the metrics held now are no new ones either
        for i, entry in enumerate(entries):
            try:
                key, agg_type = (entry["dataset_name"], entry["name"]), AggregationType(entry["agg_type"])
                updates, layout = int(entry["update_count"]), dict(entry["states"])
                extra = dict(entry.get("extra_states", {}))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise ValueError(
                    f"Checkpoint entry {i} is not one MetricsAggregator.state_dict() writes "
                    f"({type(err).__name__}: {err}): {entry!r}."
                ) from None
            try:
                metric = self._make(agg_type, taken)
            except Exception as err:  # as in update: the user's factory's error, told which entry it was making
                add_note(err, _making(key, agg_type, f"checkpoint entry {i}", "the aggregator is as it was"))
                raise
            saved, expected = set(layout), set(_all_states(metric))
            if not extra and not any("." in state for state in saved):
                # written before the states of the metrics inside a handler were kept: its own states only
                # (a TorchMetrics Running's ring loads as before; the metrics inside keep their defaults)
                expected = {state for state in expected if "." not in state}
            # states a metric added after the checkpoint was written, which its load derives from
            # saved ones (Distribution's compensations: zeros)
            derived = {n for n, (_, sources) in getattr(metric, "_derived_states", {}).items() if set(sources) <= saved}
            # states of an earlier version of the metric, which its load reads as the current ones
            # (CategoricalCount's list of keys, now two tensors)
            former = {old: new for old, new in getattr(metric, "_former_states", {}).items() if old in saved}
            # states saved under other names, which its load maps (Sum's TorchMetrics' "sum_value")
            if isinstance(metric, GuardedMetric):
                former |= {old: (new,) for old, new in metric._former_state_names(saved).items()}
            derived |= {name for names in former.values() for name in names}
            if not saved <= expected | set(former) or expected - saved - derived:
                raise ValueError(
                    f"Checkpointed states {sorted(layout)} of {key} do not match the "
                    f"{_type_name(agg_type)} handler's states {sorted(metric.metric_state)}."
                )
            states: dict[str, Any] = {}
            for state, length in layout.items():
                names = [f"{i}/{state}"] if length is None else [f"{i}/{state}/{j}" for j in range(length)]
                missing = [name for name in names if not isinstance(tensors.get(name), Tensor)]
                if missing:
                    raise ValueError(f"The checkpoint lacks the tensor {missing[0]!r} (state {state!r} of {key}).")
                copies = [tensors[name].clone().to(self._device) for name in names]
                states[state] = copies[0] if length is None else copies
            if (extra or any("." in state for state in saved)) and set(extra) != set(_extra_states(metric)):
                raise ValueError(
                    f"Checkpointed extra states {sorted(extra)} of {key} do not match the "
                    f"{_type_name(agg_type)} handler's {sorted(_extra_states(metric))}."
                )
            for state, packed in extra.items():
                states[state] = _unpacked(packed, tensors, self._device, key)
            try:
                metric.load_state_dict(states, strict=False)
            except (RuntimeError, ValueError) as err:  # nn.Module's size mismatch, a ring of other states
                raise ValueError(
                    f"Checkpointed states of {key} do not fit the {_type_name(agg_type)} handler: {err}"
                ) from None
            metrics[f"m{i}"] = metric
            keys[key] = (agg_type, f"m{i}", metric)
            loaded[key] = updates
        self.metrics, self._keys, self._next_id, self._loaded_updates = metrics, keys, len(keys), loaded
        self._loaded_from, self._copies_told = _saved_by(metadata) if keys else None, False
