"""How :class:`~torchmetrics_ext.module.RecMetricModule` builds its metrics from names, configs and factories.

The checks of its ``metrics`` entries (registry names, config dicts, factories taking ``num_tasks``,
metric objects), of entry and key names, of the id columns grouped and ranking metrics read, and of
TorchRec names; each error says what was given and what to write instead.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.throughput import Throughput
from torchmetrics_ext.registry import (
    TORCHREC_SELF_NAMED,
    build_metric,
    lookup,
    registry_entry,
    torchrec_names,
    torchrec_requirements,
)
from torchmetrics_ext.utilities.checks import as_bool, as_str, refuse_repeats
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.formatting import article
from torchmetrics_ext.wrappers.segmented import Segmented
from torchmetrics_ext.wrappers.windowed import Windowed

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecTaskInfo


def _close_to(unknown: Sequence[Any], known: Sequence[str]) -> str:
    """`` (did you mean 'window_size'?)`` for the known names closest to the unknown ones, or ``""``."""
    guesses = [m for name in unknown if isinstance(name, str) for m in difflib.get_close_matches(name, known, n=1)]
    guesses += [k for name in unknown if isinstance(name, str) for k in known if len(name) > 2 and name in k]
    guesses = list(dict.fromkeys(guesses))
    return f" (did you mean {', '.join(repr(g) for g in guesses)}?)" if guesses else ""


def _metric_specs(raw: Any, where: str) -> dict[Any, Any]:
    """``{key: spec}`` of a ``metrics`` argument; a list of registry names is ``{name: None}`` (no options).

    The one reading of ``metrics`` that :class:`RecMetricModule`'s constructor, its ``from_config`` and
    ``evaluate`` share; each spec is then built by :func:`_instantiate` (or read by :func:`_metric_entries`).

    Args:
        raw: a list of registry names, or a dict ``{key: spec}``.
        where: how messages name ``raw``.

    Raises:
        ValueError: ``raw`` neither a list nor a dict, a list entry holding options, a list entry that is
            not a string, or a name listed twice.
    """
    if isinstance(raw, (list, tuple)):
        nested = next((name for name in raw if isinstance(name, (Mapping, list, tuple, set))), None)
        if nested is not None:  # YAML's "- auc: {num_bins: 10}": options belong to the dict form
            raise WrongTypeError(
                f"Expected {where} to be a list of registry names or a dict {{key: options}}, got the "
                f"list entry {nested!r}; give options in the dict form, {{'ne': {{}}, 'auc': {{'num_bins': 10}}}} "
                "(YAML: `metrics: {ne: {}, auc: {num_bins: 10}}`)."
            )
        for name in raw:  # before counting them: a metric object's `==` builds a metric
            if not isinstance(name, str):
                hint = "; give metric objects, classes and factories in the dict form {name: metric}"
                raise WrongTypeError(
                    f"Expected a metric name in {where} to be a registry name (str), got {name!r} "
                    f"({type(name).__name__}){hint if isinstance(name, Metric) or callable(name) else ''}."
                )
        refuse_repeats(where, raw, raw, what="metric names")
        return {name: None for name in raw}
    if isinstance(raw, Mapping):
        return dict(raw)
    raise WrongTypeError(f"Expected {where} to be a list of registry names or a dict, got {raw!r}.")


def _entry_options(key: Any, spec: Any, where: str) -> tuple[str, dict[str, Any]] | None:
    """``(registry name, options)`` of a ``metrics`` entry given by name or options; ``None`` for any other spec.

    A registry name string is that name without options; options (a dict, or ``None`` for none: YAML's
    ``ne:``) name the registry entry with ``"metric"`` (the key otherwise).

    Raises:
        ValueError: a registry name (the key, or the option ``"metric"``) that is not a string.
    """
    if isinstance(spec, str):
        return spec, {}
    if spec is not None and not isinstance(spec, Mapping):
        return None
    options = dict(spec or {})
    name = options.pop("metric", key)
    if not isinstance(name, str):  # a wrong type in a config: a WrongTypeError (a ValueError too), as the others
        what = f"the option 'metric' of metric {key!r}" if name is not key else "a metric name"
        raise WrongTypeError(
            f"Expected {what} in {where} to be a registry name (str), got {name!r} ({type(name).__name__})."
        )
    return name, options


def _metric_entries(raw: Any, where: str = "config 'metrics'") -> dict[str, tuple[str, dict[str, Any]]]:
    """``{key: (registry name, options)}`` from a config's ``metrics`` (:meth:`RecMetricModule.from_config`'s schema).

    Args:
        raw: a list of registry names, or a dict ``{key: spec}`` whose spec is a registry name
            (``{"cal": "calibration"}``, as the constructor takes it) or options (a dict, or ``None``
            for none) that may name the registry entry with ``"metric"`` (the key otherwise).
        where: how messages name ``raw``.

    Raises:
        ValueError: ``raw`` neither a list nor a dict, a list entry holding options, a name listed
            twice, a spec that is neither a registry name nor a dict of options, or a registry name
            that is not a string.

    Examples:
        >>> from torchmetrics_ext._module_config import _metric_entries
        >>> _metric_entries({"cal": "calibration", "auc_binned": {"metric": "auc", "num_bins": 10}, "ne": None})
        {'cal': ('calibration', {}), 'auc_binned': ('auc', {'num_bins': 10}), 'ne': ('ne', {})}
    """
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, spec in _metric_specs(raw, where).items():
        entry = _entry_options(key, spec, where)  # a string is the registry name, as the constructor reads it
        if entry is None:
            raise WrongTypeError(
                f"Expected metric {key!r} in {where} to be a registry name (str) or a dict of its options, "
                f"got {spec!r} ({type(spec).__name__})."
            )
        out[key] = entry
    return out


# How the option errors of `_build_entry` name who builds the metrics and sets their `num_tasks` and
# `from_logits`: (where `num_tasks` comes from, where `from_logits` comes from, who sets it on every metric)
_BUILDERS = {
    "module": ("the module's tasks ({num_tasks})", "the module's from_logits={from_logits}", "the module"),
    "evaluate": ("the tasks", "the from_logits={from_logits} of evaluate and --from-logits", "evaluate"),
}


def _build_entry(
    key: str,
    registry_name: str,
    options: Mapping[str, Any],
    num_tasks: int,
    from_logits: bool | None = None,
    builder: str = "module",
) -> Metric:
    """The metric of one :func:`_metric_entries` entry; its errors name the entry (``Metric 'b' (auc): ...``).

    The one way a registry name and its options become a metric: :class:`RecMetricModule` (its
    ``metrics`` given by name or options, ``from_config``) and ``evaluate`` (every metric it builds one
    by one, and its config file's options) call it. ``from_logits``: the builder's (``None``: not
    given), set on a metric whose class takes the option (see :func:`_with_from_logits`).
    ``builder``: ``"module"`` or ``"evaluate"``, who the errors about ``num_tasks`` and ``from_logits``
    name as setting them.

    Raises:
        ValueError: ``num_tasks`` or ``name`` among the options (the tasks give the one; the option ``"metric"``
            names the registry entry, not ``"name"``), an option ``from_logits``
            that disagrees with ``from_logits``, or a name or option the registry or the metric's class
            refuses (``TypeError`` where the class raises one).
    """
    if "num_tasks" in options:
        where = _BUILDERS[builder][0].format(num_tasks=num_tasks)
        raise ValueError(f"Metric {key!r}: `num_tasks` comes from {where}, not from its options.")
    if "name" in options:  # no metric takes it, and it would reach `build_metric`'s own `name` as a second value
        named = options["name"]
        # the entry the option 'metric' named already, else the one 'name' most likely meant
        example = named if registry_name == key and isinstance(named, str) else registry_name
        raise ValueError(
            f"Metric {key!r}: got the option 'name' ({named!r}), which no metric takes. The key ({key!r}) names the "
            f"metric in the output keys, and the option 'metric' names its registry entry: "
            f"{{{key!r}: {{'metric': {example!r}, ...}}}}."
        )
    if from_logits is not None:
        options = _with_from_logits(key, registry_name, options, from_logits, builder)
    try:
        return build_metric(registry_name, num_tasks=num_tasks, **options)
    except (TypeError, ValueError) as error:  # which entry of the config, as the other errors say
        entry = f"Metric {key!r}" + (f" ({registry_name})" if registry_name != key else "")
        hint = _own_key_hint(key) if registry_name == key and str(error).startswith("Unknown metric name") else ""
        raise type(error)(f"{entry}: {error}{hint}") from None


def _with_from_logits(
    key: str, registry_name: str, options: Mapping[str, Any], from_logits: bool, builder: str = "module"
) -> dict[str, Any]:
    """``options`` with the builder's ``from_logits`` where the entry's class takes the option.

    Options that set ``from_logits`` themselves keep it when it agrees; a name the registry does not
    know, or a value that is no bool, is left to :func:`~torchmetrics_ext.registry.build_metric` (its
    own error, naming the entry). ``builder``: as :func:`_build_entry`'s.

    Whether the class takes the keyword is :func:`_logit_keywords`' answer (the one test, for entries
    given by name and for classes and factories alike). What stays here is what only options have:
    they are the user's own ``from_logits`` for this entry, so a disagreeing one is an error now,
    naming the entry and the builder's setting; a ``functools.partial`` that binds another value is
    a built object's concern, checked against the module's once built, as a metric object is.

    Raises:
        ValueError: the option ``from_logits`` set to the other bool than the builder's.

    Examples:
        >>> from torchmetrics_ext._module_config import _with_from_logits
        >>> _with_from_logits("auc", "auc", {"num_bins": 10}, True), _with_from_logits("ndcg", "ndcg@10", {}, True)
        ({'num_bins': 10, 'from_logits': True}, {})
    """
    try:
        found = lookup(registry_name)[0]
    except (TypeError, ValueError):
        return dict(options)
    cls = found.wraps or found.cls  # "segmented_ne": the options other than num_segments are its NE's
    keywords = _logit_keywords(cls, from_logits)
    if not keywords:
        return dict(options)  # ranking metrics rank the scores as given; counters do not read them
    if "from_logits" not in options:
        return {**options, **keywords}
    given = as_bool(options["from_logits"])
    if given is not None and given != from_logits:
        entry = f"Metric {key!r}" + (f" ({registry_name})" if registry_name != key else "")
        _, logits, who = _BUILDERS[builder]
        logits = logits.format(from_logits=from_logits)
        raise ValueError(
            f"{entry}: its option from_logits={options['from_logits']!r} disagrees with {logits} (the same "
            f"predictions cannot be both logits and probabilities): drop the option, which {who} sets on every "
            "metric it builds, or make the two agree."
        )
    return dict(options)


def _logit_keywords(spec: Any, from_logits: bool | None) -> dict[str, bool]:
    """``{"from_logits": from_logits}`` for a class or factory whose call takes that keyword, else ``{}``.

    A ``functools.partial`` that binds ``from_logits`` keeps its own (the built metric is then checked
    against the module's, as a metric object is); a factory without a ``from_logits`` parameter
    (``lambda num_tasks: ...``, ``**kwargs`` only) is called as it is.

    Examples:
        >>> import functools
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext._module_config import _logit_keywords
        >>> _logit_keywords(tmx.AUC, True), _logit_keywords(functools.partial(tmx.AUC, from_logits=False), True)
        ({'from_logits': True}, {})
        >>> _logit_keywords(lambda num_tasks: tmx.AUC(num_tasks), True), _logit_keywords(tmx.AUC, None)
        ({}, {})
    """
    if from_logits is None:
        return {}
    if isinstance(spec, functools.partial) and ("from_logits" in _bound(spec) or "from_logits" in spec.keywords):
        return {}
    try:
        parameter = inspect.signature(spec).parameters.get("from_logits")
    except (TypeError, ValueError):  # no Python signature: called as it is
        return {}
    takes = parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    return {"from_logits": from_logits} if takes else {}


def _own_key_hint(key: str) -> str:
    """How a config key that is no registry name (``"auc_binned"``, ``"click_ne"``) names its metric.

    The registry name the key holds as a ``_``-separated part, the longest, is the example's
    (``"auc"`` for ``"auc_binned"``, ``"log_loss"`` for ``"click_log_loss"``, ``"ndcg@10"`` for
    ``"click_ndcg@10"``).

    Examples:
        >>> from torchmetrics_ext._module_config import _own_key_hint
        >>> _own_key_hint("auc_binned")
        " A key of your own names its registry metric with the option 'metric': {'auc_binned': {'metric': 'auc', ...}}."
    """
    parts = key.split("_")
    spans = {"_".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}
    held = sorted((span for span in spans if _is_registry_name(span)), key=len)
    example = held[-1] if held else "<registry name>"
    return (
        " A key of your own names its registry metric with the option 'metric': "
        f"{{{key!r}: {{'metric': {example!r}, ...}}}}."
    )


def _is_registry_name(name: str) -> bool:
    """Whether the registry builds ``name`` as it is (``"ndcg@10"`` yes; ``"recall"``, without its cutoff, no)."""
    try:
        lookup(name)
    except ValueError:
        return False
    return True


def _entry_name_ok(name: Any) -> bool:
    """A metric, state metric or entry name: non-empty printable text without the key separators."""
    return isinstance(name, str) and bool(name) and name.isprintable() and not any(c in name for c in "/|.")


def _check_unit_names(stacked: Sequence[str], ranking: Sequence[str]) -> None:
    """Refuse metric names that the containers holding the metrics use for attributes of their own.

    Stacked metrics are children of a ``MetricCollection`` and ranking metrics of an
    ``nn.ModuleDict``, which cannot hold a child under the name of one of their attributes
    (``"reset"``, ``"values"``, ``"train"``...): ``nn.Module`` would raise its bare
    ``KeyError("attribute 'reset' already exists")`` from inside the construction.

    Raises:
        ValueError: naming the metric and the container, with another name to give it.
    """
    for names, holder in ((stacked, MetricCollection({}, compute_groups=False)), (ranking, nn.ModuleDict())):
        for name in names:
            if hasattr(holder, name):
                raise ValueError(
                    f"Metric name {name!r} is the name of an attribute of the {type(holder).__name__} that holds the "
                    f"module's metrics, which cannot hold a metric under it: give the metric another name (e.g. "
                    f"'{name}_metric'; a metric's name is the first part of its keys)."
                )


def _check_metric_name(name: Any) -> None:
    if not _entry_name_ok(name):
        raise ValueError(
            f"Expected metric names to be non-empty printable strings without '/', '|' or '.', got {name!r}."
        )


def _instantiate(name: str, spec: Any, num_tasks: int, from_logits: bool | None = None) -> TaskMetric:
    """The metric of one ``metrics`` entry, built with ``from_logits`` (the module's) where it builds it.

    A metric object is taken as it is (the module checks its ``from_logits`` against its own).
    """
    # a partial of it too (compared by identity: a metric instance's `==` builds a CompositionalMetric)
    if spec is Throughput or getattr(spec, "func", None) is Throughput or isinstance(spec, Throughput):
        raise _throughput_refused(name)
    entry = _entry_options(name, spec, "`metrics`")
    if entry is not None:  # a registry name, or its options: as `from_config` builds it
        metric: Any = _build_entry(name, *entry, num_tasks, from_logits)
    elif isinstance(spec, Metric):
        metric = spec
    elif (foreign := _foreign_metric_class(spec)) is not None:
        # a TorchMetrics class (`BinaryAUROC`): refused before the call, which it would fail with TorchMetrics'
        # bare "Unexpected keyword arguments: `num_tasks`" (its `**kwargs` takes the keyword)
        raise _not_ours(name, foreign)
    elif not _has_task_dim(spec):
        # a ranking class, or a partial of one: one copy per task, no `num_tasks`
        metric = spec(**_logit_keywords(spec, from_logits))
    elif callable(spec):
        _check_factory(name, spec)
        metric = spec(num_tasks=num_tasks, **_logit_keywords(spec, from_logits))
    else:
        raise WrongTypeError(
            f"Expected metric {name!r} to be a metric, a class, a factory or a registry name (or a dict of "
            f"its options), got {spec!r}."
        )
    if isinstance(metric, Throughput):  # what a factory returned
        raise _throughput_refused(name)
    if isinstance(metric, Windowed):  # one of the package's classes, but a wrapper the module builds itself
        raise WrongTypeError(
            f"Metric {name!r} is a Windowed (window_size={metric.window_size}): RecMetricModule windows its metrics "
            f"itself; give the metric (a registry name, class or factory) and `window_size={metric.window_size}` to "
            "the module."
        )
    if not isinstance(metric, TaskMetric):
        raise _not_ours(name, type(metric))
    cls = type(metric).__name__
    if isinstance(metric, Segmented):
        _check_segmented(name, metric)
        return metric
    if not _takes_columns(metric):
        raise WrongTypeError(
            f"Metric {name!r} ({cls}) cannot be fed by RecMetricModule, which passes every metric each task's "
            f"prediction, label and weight columns (probabilities or finite values): {cls}.update"
            f"{inspect.signature(metric.update)} takes other inputs or values (see its docstring). Use it as a "
            "standalone metric."
        )
    if metric.value_ndim:
        raise WrongTypeError(
            f"Metric {name!r} ({cls}) reports {article(f'{metric.value_ndim}-D')} value per task "
            f"(value_ndim={metric.value_ndim}: "
            "a curve over bins, labels or segments), and RecMetricModule reports one number per key (for "
            "log_dict). Use it as a standalone metric."
        )
    return metric


def _check_segmented(name: str, metric: Segmented) -> None:
    """A ``Segmented`` the module feeds: its wrapped metric takes each task's columns and gives one number per task.

    The module passes it the columns its wrapped metric would get and the segment ids of the tasks'
    ``group_id_name`` column (see ``docs/module.md``, "Per segment").

    Raises:
        TypeError: the wrapped metric takes other inputs (``TensorWeightedAverage``'s values) or
            gives more than one number per task and segment.
    """
    inner = metric.metric
    cls = type(inner).__name__
    if not _takes_columns(inner) or inner.value_ndim or inner._value_entries() is not None:
        raise WrongTypeError(
            f"Metric {name!r} (Segmented({cls})) cannot be fed by RecMetricModule: the module passes each task's "
            f"prediction, label and weight columns and the segment ids of RecTaskInfo.group_id_name, and "
            f"{cls}.update{inspect.signature(inner.update)} takes other inputs (see its docstring). Use it as a "
            "standalone metric."
        )


def _foreign_metric_class(spec: Any) -> type | None:
    """The class of ``spec`` (a class or a ``functools.partial`` of one) when it is a ``Metric`` of another package."""
    cls = spec.func if isinstance(spec, functools.partial) else spec
    if (
        isinstance(cls, type)
        and issubclass(cls, Metric)
        and not issubclass(cls, TaskMetric)
        and not cls.__module__.startswith("torchmetrics_ext.")  # `Windowed`, `Throughput`: refused by name
    ):
        return cls
    return None


def _not_ours(name: str, cls: type) -> TypeError:
    return WrongTypeError(
        f"Metric {name!r} ({cls.__name__}) is not one of the package's metrics; "
        "RecMetricModule feeds torchmetrics_ext metrics only."
    )


def _throughput_refused(name: str) -> TypeError:
    return WrongTypeError(
        f"Metric {name!r} is a Throughput: the module has its own, counted from every step's columns "
        "(`throughput=True`, the default, or `throughput=Throughput(...)` for other settings)."
    )


def _bound(spec: functools.partial[Any]) -> dict[str, Any]:
    """The arguments a ``functools.partial`` binds, by parameter name (positional ones too).

    ``{}`` for a function without a Python signature, or arguments it cannot take: its call will tell.
    """
    try:
        return dict(inspect.signature(spec.func).bind_partial(*spec.args, **spec.keywords).arguments)
    except (TypeError, ValueError):
        return {}


def _check_factory(name: str, spec: Any) -> None:
    """A factory (or class) is called ``spec(num_tasks=T)``: one that cannot take that call is refused by name.

    Checked on the signature, before the call, so an error raised inside the factory is its own.
    """
    label = getattr(spec, "__name__", "factory")
    if isinstance(spec, functools.partial):  # its bound arguments may already give `num_tasks`
        label = f"functools.partial({getattr(spec.func, '__name__', 'factory')}, ...)"
        bound = _bound(spec)
        if "num_tasks" in bound and "num_tasks" not in spec.keywords:
            raise WrongTypeError(
                f"Metric {name!r}: the module calls its factory as `{label}(num_tasks=T)`, but the partial already "
                f"binds `num_tasks` positionally ({bound['num_tasks']!r}); the module sets it from its tasks, so "
                "leave it out of the partial and give the other settings by keyword, e.g. "
                "`functools.partial(tmx.AUC, num_bins=100)`."
            )
    try:
        signature = inspect.signature(spec)
    except (TypeError, ValueError):  # no Python signature (a builtin): the call itself will tell
        return
    try:
        signature.bind(num_tasks=1)
    except TypeError as error:
        raise WrongTypeError(
            f"Metric {name!r}: the module calls its factory as `{label}(num_tasks=T)`, "
            f"which its signature {signature} cannot take ({error}); write it with a `num_tasks` parameter, e.g. "
            "`lambda num_tasks: tmx.AUC(num_tasks=num_tasks, from_logits=True)`."
        ) from None


def _has_task_dim(spec: Any) -> bool:
    """False for a metric class without a task dimension, or a ``functools.partial`` of one."""
    cls = spec.func if isinstance(spec, functools.partial) else spec
    return not (isinstance(cls, type) and issubclass(cls, TaskMetric) and not cls.has_task_dim)


def _takes_columns(metric: TaskMetric) -> bool:
    """Whether the module can feed ``metric``: input domains declared, and ``update`` binds the module's call.

    Stacked metrics get ``update(preds, target, weights)`` (grouped ones ``groups=`` too), per-task
    copies ``update(preds, target, indexes=, weights=)``.
    """
    if metric.input_domains is None:
        return False
    parameters = inspect.signature(metric.update).parameters
    args: tuple[int, ...] = (0, 0)
    kwargs = {"weights": 0}
    if not metric.has_task_dim:
        kwargs["indexes"] = 0
    elif "groups" in parameters:
        kwargs["groups"] = 0
    else:
        args, kwargs = (0, 0, 0), {}
    try:
        inspect.signature(metric.update).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _check_id_columns(
    tasks: tuple[RecTaskInfo, ...],
    grouped: list[str],
    ranking: list[str],
    subsets: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The positions of the tasks whose group ids and session ids are read, each checked to name its column.

    A task names the id column of every metric reading it (``subsets``: the tasks a metric of
    ``metric_tasks`` reads; any other reads every task): ``grouped`` (GroupedAUC, Segmented) read the
    ``group_id_name`` column, one column for all the tasks they read, ``ranking`` metrics each
    task's ``session_id_name`` column. A task none of them reads may leave its column unset.
    """
    every = tuple(range(len(tasks)))
    subsets = subsets or {}
    read: list[tuple[int, ...]] = []
    for names, field in ((grouped, "group_id_name"), (ranking, "session_id_name")):
        positions = tuple(sorted({t for name in names for t in subsets.get(name, every)}))
        for t in positions:
            if getattr(tasks[t], field) is None:
                reader = next(name for name in names if t in subsets.get(name, every))
                raise ValueError(f"Metric {reader!r} needs ids: task {tasks[t].name!r} must set RecTaskInfo.{field}.")
        read.append(positions)
    columns = {tasks[t].group_id_name: tasks[t].name for t in read[0]}
    if len(columns) > 1:
        raise ValueError(
            f"Metric {grouped[0]!r} shares one group id column across the tasks it reads; got "
            f"{ {tasks[t].name: tasks[t].group_id_name for t in read[0]} }."
        )
    return read[0], read[1]


def _torchrec_names(
    metrics: Mapping[str, Metric], given: Mapping[str, tuple[str, str]] | None = None, check: bool = False
) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str] | None]]:
    """TorchRec ``(namespace, name)`` per metric, and the metric's own TorchRec pair (``None``: it has none).

    A metric computing TorchRec's value (:func:`~torchmetrics_ext.registry.torchrec_names`, or
    ``given`` by ``from_torchrec_config``) takes TorchRec's pair; any other falls back to
    ``(key, key)``. A fallback may itself be another metric's TorchRec pair (a metric named
    ``"calibration"`` next to ``Calibration``): that metric falls back too, until every pair is
    unique (fallbacks are unique, since metric keys are).

    Raises:
        ValueError: with ``check`` (``key_style="torchrec"``), a metric of the registry's classes that
            does not compute TorchRec's value whose key would be one of TorchRec's
            (``ndcg-{task}|lifetime_ndcg`` for an ``NDCG`` that skips queries without relevance;
            a ``RecallAtK`` named ``"recall"``), or a dict-valued metric with an entry named like it
            (a ``RankingMetrics`` named ``"ndcg"`` holding ``"ndcg"``: its entries are known from its
            settings). A metric of the user's own whose dict names its entries only in its value is
            checked when its keys are made.
    """
    own = {name: (given or {}).get(name) or torchrec_names(m) for name, m in metrics.items()}
    pairs: dict[str, tuple[str, str]] = {name: own[name] or (name, name) for name in metrics}
    while True:
        counts = Counter(pairs.values())
        clashing = [name for name, pair in pairs.items() if counts[pair] > 1 and pair != (name, name)]
        if not clashing:
            break
        for name in clashing:
            pairs[name] = (name, name)
    for name, pair in pairs.items() if check else ():
        if pair != own[name] and registry_entry(metrics[name]) is not None:  # registry classes are scalar-valued
            _check_not_torchrecs(name, name, metrics[name] if own[name] is None else None)
        entries = getattr(metrics[name], "_value_entries", lambda: None)()  # a dict value's, named by its settings
        if entries is not None and name in entries and own[name] != (name, name):
            _check_not_torchrecs(name, name)  # its entry `name` would be keyed {name}-{task}|lifetime_{name}
    return pairs, own


def _check_not_torchrecs(name: str, key_name: str, metric: Metric | None = None) -> None:
    """Refuse ``{key_name}-{task}|..._{key_name}`` for metric ``name`` when it is one of TorchRec's keys.

    Only called for a key that is not the metric's own TorchRec key; ``metric``: one without a
    TorchRec key of its own, whose class could be built to compute TorchRec's value.
    """
    if key_name not in TORCHREC_SELF_NAMED:
        return
    needs = None if metric is None else torchrec_requirements(metric, key_name)
    fix = (
        f"build it as {needs} to report TorchRec's value under TorchRec's key, or give it another name"
        if needs is not None
        else "give it another name"
    )
    raise ValueError(
        f"With key_style='torchrec', metric {name!r} would be logged as {key_name}-{{task}}|lifetime_{key_name}, "
        f"TorchRec's key for its {key_name!r} metric, whose value it does not compute: {fix}."
    )


def _listed(value: object) -> list[Any] | None:
    """The items of a list or tuple, or of a 1-D NumPy array or pandas ``Index``/``Series``; else ``None``.

    How :class:`RecMetricModule` reads ``tasks`` and a ``metrics`` list of registry names: a column of
    a table (``np.array(["ne", "auc"])``, ``frame["task"].unique()``) is taken as the list it holds.
    Not a string, a mapping, a set (no order) or a ``MetricCollection`` (iterating one gives its keys).
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    tolist = getattr(value, "tolist", None)
    if getattr(value, "ndim", None) == 1 and callable(tolist) and not isinstance(value, Tensor):
        items = tolist()
        return items if isinstance(items, list) else None
    return None


def _task_names(listed: object) -> list[Any] | None:
    """The task names of one ``metric_tasks`` entry as a list, or ``None`` where it is no list of names.

    One rule for the module and ``evaluate``, the one their ``tasks`` and ``metrics`` follow: a list,
    a tuple (any sequence), a 1-D NumPy array or a pandas ``Index``/``Series`` (``df.columns[1:]``,
    ``np.array(["watch_time"])``) gives its items, NumPy strings as Python strings. ``None`` for a
    string (one name is no list: ``evaluate`` reads it as one task before this), a set (no order),
    a mapping, or an item that is not a name (a string).

    Examples:
        >>> import numpy as np
        >>> _task_names(np.array(["click", "like"])), _task_names(("click",)), _task_names("click")
        (['click', 'like'], ['click'], None)
    """
    if isinstance(listed, (str, bytes)) or as_str(listed) is not None or isinstance(listed, Mapping):
        return None
    items = list(listed) if isinstance(listed, Sequence) else _listed(listed)
    if items is None:
        return None
    names = [as_str(item) for item in items]
    return None if any(name is None for name in names) else names


def _check_metric_tasks(
    metric_tasks: Any, metric_names: Sequence[str], task_names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """``metric_tasks`` read: ``{metric name: positions of the tasks it reads}``, in the module's task order.

    Only metrics that read fewer than every task are kept (a metric named with every task reads
    them all, as one not named). A list of tasks may be any sequence or 1-D array of names
    (:func:`_task_names`). Raises before anything is built.

    Raises:
        ValueError: ``metric_tasks`` not a dict, a key that names no metric (with the closest one), a list
            of tasks that is a string, empty, holds an item that is no name, names an unknown task (with
            the closest one) or one twice.
    """
    if metric_tasks is None:
        return {}
    if not isinstance(metric_tasks, Mapping):
        raise WrongTypeError(
            f"Expected `metric_tasks` to be a dict of metric name -> list of task names, got {metric_tasks!r}."
        )
    positions = {name: t for t, name in enumerate(task_names)}
    subsets: dict[str, tuple[int, ...]] = {}
    for metric, listed in metric_tasks.items():
        if metric not in metric_names:
            raise ValueError(
                f"`metric_tasks` names metric {metric!r}, which the module does not have"
                f"{_close_to([metric], list(metric_names))}; its metrics are {list(metric_names)}."
            )
        given = listed
        listed = _task_names(given)
        if not listed:
            raise refusal(
                f"`metric_tasks[{metric!r}]`: expected a non-empty list of task names, got {given!r}.",
                wrong_type=listed is None,
            )
        unknown = [task for task in listed if task not in positions]
        if unknown:
            raise ValueError(
                f"`metric_tasks[{metric!r}]` names task {unknown[0]!r}, which the module does not have"
                f"{_close_to(unknown, list(task_names))}; its tasks are {list(task_names)}."
            )
        repeated = [task for task, count in Counter(listed).items() if count > 1]
        if repeated:
            raise ValueError(f"`metric_tasks[{metric!r}]` names task {repeated[0]!r} more than once.")
        if len(listed) < len(task_names):
            subsets[metric] = tuple(sorted(positions[task] for task in listed))
    return subsets
