"""Which values :class:`~torchmetrics_ext.module.RecMetricModule` takes in each task's columns, and why.

The module checks a step once against the strictest input domain of its metrics (with
``metric_tasks``, each task against the strictest domain of the metrics that read it: the rows of
each distinct domain, read back together), refuses metrics whose ``from_logits`` is not its own,
finds the metrics it feeds ``sigmoid(logits)``, and, when a column is refused, says which metrics
ask for that column's domain, and warns of a regression head a ``from_logits=True`` module would read as
logits (``metric_tasks`` giving it metrics of values alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torchmetrics import Metric

from torchmetrics_ext._module_stack import _rows
from torchmetrics_ext.metrics.base import InputDomains
from torchmetrics_ext.utilities.checks import _check_values_bounds_together, _ValueCheck
from torchmetrics_ext.utilities.warnings import warn_at_user

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecTaskInfo, _Batch


def _check_module_logits(domains: Mapping[str, InputDomains | None], from_logits: bool) -> None:
    """Refuse metrics of probabilities whose ``from_logits`` is not the module's.

    The check :meth:`InputDomains.strictest` makes between metrics, made against the module's
    ``from_logits``: metrics of finite real values built without the option (``WeightedMSE()``)
    agree with either (fed ``sigmoid(logits)`` under logits), ranking metrics too.

    Raises:
        ValueError: naming the metrics that disagree and how to build them.
    """
    refused = [
        n for n, d in domains.items() if d is not None and d.preds == "probability" and d.from_logits != from_logits
    ]
    if not refused:
        return
    if from_logits:
        raise ValueError(
            f"The module is built with from_logits=True (the predictions are logits), but metric(s) {refused} "
            "read probabilities (built with from_logits=False): build them with from_logits=True, or give them "
            "as registry names, options or classes, which the module builds with its from_logits."
        )
    raise ValueError(
        f"The module is built with from_logits=False (the predictions are probabilities), but metric(s) "
        f"{refused} read logits (built with from_logits=True): build them without it, or build the module with "
        "from_logits=True."
    )


_MODULE_LOGITS_ADVICE = (
    "If they are logits, build the module's metrics with from_logits=True (`RecMetricModule(..., "
    "from_logits=True)` builds every metric it is given by name, options or class so); see the module docs, "
    "'Logits'."
)
"""What the module says of probabilities out of range; its wrappers (the Trainer adapter) give their own option."""


def _in_module(error: ValueError) -> ValueError:
    """``error`` with its advice for a standalone metric (``from_logits=True``) made the module's."""
    text = str(error)
    advice = "Pass `from_logits=True` if they are logits."
    if advice not in text:
        return error
    return ValueError(text.replace(advice, _MODULE_LOGITS_ADVICE))


def _fed_probabilities(
    metrics: Mapping[str, Metric], domains: Mapping[str, InputDomains | None], logits: bool
) -> frozenset[str]:
    """Names of the metrics fed ``sigmoid(preds)`` when the predictions are logits.

    Those that read predictions as values and were built without ``from_logits`` (their domain is
    ``"real"``; with it, it is ``"probability"`` and they take the sigmoid themselves): MSE,
    WeightedAverage, R²... Not those that ignore the predictions (CTR) or depend on their order
    alone (RegressionAUC, XAUC: the logits' order is the probabilities').
    """
    if not logits:
        return frozenset()
    return frozenset(
        n for n, d in domains.items() if d is not None and d.preds == "real" and _scores_values(metrics[n])
    )


def _scores_values(metric: Any) -> bool:
    """Whether a metric's value depends on its predictions' values, not only on their order (or on none).

    CTR reads no prediction; ranking metrics and pairwise concordance (RegressionAUC, XAUC) only order
    them, which a sigmoid does not change.
    """
    return getattr(metric, "reads_predictions", True) and not getattr(metric, "ranks_predictions", False)


def _strictest_over_tasks(domains: Mapping[str, InputDomains | None]) -> InputDomains:
    """:meth:`InputDomains.strictest` over metrics that may read different tasks (``metric_tasks``).

    Metrics of probabilities may disagree on ``from_logits`` here: one task's predictions may be
    logits and another's probabilities. The module's domain holds logits if any metric reads logits;
    each task's own domain (:func:`_task_domains`) says which, and refuses readers of one task that disagree.
    """
    given = {n: d for n, d in domains.items() if d is not None}
    strictest = InputDomains.strictest({n: replace(d, from_logits=False) for n, d in given.items()})
    return replace(strictest, from_logits=any(d.from_logits for d in given.values() if d.preds == "probability"))


def _task_domains(
    tasks: Sequence[RecTaskInfo],
    domains: Mapping[str, InputDomains | None],
    subsets: Mapping[str, tuple[int, ...]],
    module_domains: InputDomains,
    from_logits: bool | None,
) -> list[InputDomains]:
    """Per task, the strictest domain of the metrics that read it (``metric_tasks``); the module's without subsets.

    Raises:
        ValueError: a task that no metric reads (its columns would be read and checked for nothing).
    """
    if not subsets:
        return [module_domains] * len(tasks)
    found = []
    for t, task in enumerate(tasks):
        readers = {n: d for n, d in domains.items() if n not in subsets or t in subsets[n]}
        if not readers:
            raise ValueError(
                f"Task {task.name!r} is read by no metric: every metric's `metric_tasks` leaves it out. Leave the "
                "task out of `tasks`, or name it for a metric."
            )
        try:
            domain = InputDomains.strictest(readers)
        except ValueError as error:  # metrics that read this task disagree on `from_logits`
            raise ValueError(f"Task {task.name!r}: {error}") from None
        found.append(replace(domain, from_logits=True) if from_logits else domain)
    return found


def _check_domain_groups(
    batch: _Batch, groups: Sequence[tuple[InputDomains, tuple[int, ...]]]
) -> tuple[tuple[float, ...], list[Any], list[tuple[float, ...]]]:
    """The step's check when tasks have different domains (``metric_tasks``): the rows of each domain's tasks.

    Returns the predictions' bounds over every task and each checked weight column's bounds, as
    :func:`~torchmetrics_ext.utilities.checks._check_values_bounds` does for one domain, and each group's
    predictions' bounds (``()`` where its check read none). On the device
    path every group's bounds (and those of an open ``read_along`` block: segment ids) come back in one
    host read, then each domain's rules are applied to its rows' bounds, in the groups' order
    (:func:`~torchmetrics_ext.utilities.checks._check_values_bounds_together`). One check per distinct
    domain (a few), never per task.
    """
    preds, labels = batch.checked
    weights = batch.columns[2]
    checked = _check_values_bounds_together(
        [
            _ValueCheck(
                _rows(preds, positions),
                _rows(labels, positions),
                [column for t in positions if (column := weights[t]) is not None],
                domains.preds,
                domains.target,
                domains.from_logits,
                domains.float32_weights,
            )
            for domains, positions in groups
        ],
        batch.target_is_float,
    )
    low, high, found = math.inf, -math.inf, False
    weight_bounds: list[Any] = []
    group_bounds: list[tuple[float, ...]] = []
    for pred_bounds, bounds in checked:
        weight_bounds += bounds
        group_bounds.append(tuple(pred_bounds[:2]))
        if pred_bounds:
            found = True
            low, high = min(low, pred_bounds[0]), max(high, pred_bounds[1])
    return ((low, high) if found else ()), weight_bounds, group_bounds


def _rows_range(
    pred_bounds: tuple[float, ...], group_bounds: Sequence[tuple[float, ...]], covering: tuple[int, ...]
) -> tuple[float, ...]:
    """The predictions' ``(min, max)`` over some tasks' rows: over the domain groups ``covering`` them, if known.

    Without domain groups (every task of one domain) every task's bounds (``pred_bounds``) hold the rows too;
    ``()`` where a group's check read no bounds (nothing is then skipped).
    """
    if not pred_bounds or not group_bounds or not covering:
        return pred_bounds
    chosen = [group_bounds[g] for g in covering]
    if not all(chosen):
        return ()
    return (min(b[0] for b in chosen), max(b[1] for b in chosen))


def _task_owners(
    domains: Mapping[str, InputDomains | None],
    subsets: Mapping[str, tuple[int, ...]],
    task_domains: Sequence[InputDomains],
) -> list[dict[str, list[str]]]:
    """Per task, ``{field: the metrics reading it whose domain of field is the task's}`` (``"preds"``, ``"target"``)."""
    return [
        {
            field: [
                n
                for n, d in domains.items()
                if d is not None
                and (n not in subsets or t in subsets[n])
                and getattr(d, field) == getattr(task_domains[t], field)
            ]
            for field in ("preds", "target")
        }
        for t in range(len(task_domains))
    ]


def _binary_labels(task_domains: Sequence[InputDomains], positions: Iterable[int], target_is_float: bool) -> bool:
    """Whether the labels of these tasks are known 0/1: the binary domain checked, or integral labels in [0, 1]."""
    return all(
        task_domains[t].target == "binary" or (task_domains[t].target == "unit" and not target_is_float)
        for t in positions
    )


def _domain_groups(task_domains: Sequence[InputDomains]) -> list[tuple[InputDomains, tuple[int, ...]]] | None:
    """The tasks of each distinct domain, ``(domain, task positions)``; ``None`` when every task has one domain."""
    groups: dict[InputDomains, list[int]] = {}
    for t, domain in enumerate(task_domains):
        groups.setdefault(domain, []).append(t)
    if len(groups) <= 1:
        return None
    return [(domain, tuple(positions)) for domain, positions in groups.items()]


_DOMAINS_SAID = {
    ("target", "binary"): "0/1 labels",
    ("target", "unit"): "labels in [0, 1]",
    ("target", "nonnegative"): "labels >= 0",
    ("preds", "probability"): "predictions in [0, 1] (probabilities)",
}


def _domain_hint(owners: Sequence[str], field: str, domain: str, torchrec: bool = False) -> str:
    """Why a task's labels (or predictions) must be in this domain: the metrics asking for it read the task.

    Said on the error path only, so a regression task next to AUC tells its user to leave it out of
    those metrics' tasks (``metric_tasks``; a metric not named reads every task) rather than look for a
    bad value in the column. ``torchrec``: a module of :meth:`RecMetricModule.from_torchrec_config`,
    whose ``RecMetricDef``'s ``rec_tasks``/``rec_task_indices`` are the tasks a metric reads.

    Examples:
        >>> _domain_hint(["ne", "auc"], "target", "binary")[:80]
        " Metric(s) ['ne', 'auc'] read this task and take 0/1 labels: a task of other val"
        >>> _domain_hint(["mse"], "preds", "real")
        ''
    """
    said = _DOMAINS_SAID.get((field, domain))
    if not owners or said is None:
        return ""
    return (
        f" Metric(s) {list(owners)} read this task and take {said}: a task of other values (a regression target"
        " for 'mse' or 'r_squared', say) is left out of their tasks with `metric_tasks` (every metric it does"
        " not name reads every task), e.g. `metric_tasks={"
        + f"{owners[0]!r}: [<their other tasks>]"
        + "}`"
        + (
            " (from a TorchRec config: list only their other tasks in the RecMetricDef's `rec_tasks` or"
            " `rec_task_indices`)."
            if torchrec
            else "."
        )
    )


# TorchMetrics' and Hugging Face's usual `ignore_index`, and the usual mark of a row without a label
_PADDING_MARKS = (-100, -1)


def _padding_pointer(mark: int, key: str) -> str:
    """Where padded rows marked ``mark`` in label column ``key`` go: out of the step, not out of a metric's tasks.

    The recipe of a task ranked in sessions: a ranking metric still ranks rows of weight 0, so they leave the step.
    """
    return (
        f" If {mark} marks padded or unlabelled rows (TorchMetrics' `ignore_index={mark}`), leave them out of the"
        f" step before `update`: `keep = model_out[{key!r}] != {mark}`, then"
        " `module.update({name: column[keep] for name, column in model_out.items()})`"
        " (docs/ranking.md, 'Padding in a module and in evaluate')."
        f" `evaluate` leaves them out itself with `ignore_index={mark}` (`--ignore-index {mark}`)."
    )


def _zero_weight_pointer(mark: int, key: str, weight_key: str | None, weighted: bool, own: str | None = None) -> str:
    """The recipe of a task not ranked in sessions: weight 0 for its rows marked ``mark`` (absent rows).

    Leaving the rows out of the step would drop them for every task of the module; a weight of 0 drops them for this
    task alone. ``weight_key``: the task's weight column (``RecTaskInfo.weight_name``; ``None``: it has none);
    ``weighted``: the step holds it. ``own``: where other tasks read the column the recipe would write (RecTaskInfo's
    default ``"weight"`` is every task's), a column name of the task's own to write instead: weight 0 in the shared
    column would drop the rows for those tasks too.

    Examples:
        >>> print(_zero_weight_pointer(-1, "label", "weight", False))
         If -1 marks rows without a label, give them weight 0 and any label in [0, 1]: ...
        >>> print(_zero_weight_pointer(-1, "y_conv", "weight", True, own="weight_conv")[79:])
        `model_out['weight_conv'] = model_out['weight'] * (model_out['y_conv'] != -1)` (a weight column of the ...
    """
    weight = weight_key or "weight"
    given = f"model_out[{weight!r}] * " if weighted else ""
    if own is not None:
        column = (
            f" (a weight column of the task's own, read by it alone: `RecTaskInfo(..., weight_name={own!r})`; "
            f"other tasks read {weight!r})"
        )
    else:
        column = "" if weight_key else f" (a weight column for the task: `RecTaskInfo(..., weight_name={weight!r})`)"
    return (
        f" If {mark} marks rows without a label, give them weight 0 and any label in [0, 1]: "
        f"`model_out[{own or weight!r}] = {given}(model_out[{key!r}] != {mark})`{column}, "
        f"`model_out[{key!r}] = model_out[{key!r}].clamp(min=0)` (rows of weight 0 are absent rows)."
    )


def _padding_mark(labels: Tensor) -> int | None:
    """The usual mark (-100 or -1) when every negative label of the column is that one mark, else ``None``."""
    negative = labels[labels < 0]
    if negative.numel() == 0:
        return None
    mark = negative.amin().item()
    if mark not in _PADDING_MARKS or not bool((negative == mark).all()):
        return None
    return int(mark)


def _padding_hint(labels: Tensor, key: str) -> str:
    """:func:`_padding_pointer` where every negative label of the column is one padding mark (-100 or -1).

    Said on the error path only (the column is read), before the advice on ``metric_tasks``, which is for a task of
    other values, not for padding.

    Examples:
        >>> import torch
        >>> print(_padding_hint(torch.tensor([1.0, -100.0, 0.0, -100.0]), "label")[:62])
         If -100 marks padded or unlabelled rows (TorchMetrics' `ignor
        >>> _padding_hint(torch.tensor([1.0, -100.0, -1.0]), "label"), _padding_hint(torch.tensor([-2, 1]), "label")
        ('', '')
    """
    mark = _padding_mark(labels)
    return "" if mark is None else _padding_pointer(mark, key)


def warn_value_heads_read_as_logits(
    tasks: Sequence[RecTaskInfo],
    metrics: Mapping[str, Any],
    domains: Mapping[str, InputDomains | None],
    subsets: Mapping[str, tuple[int, ...]],
) -> None:
    """Warn of the tasks of a ``from_logits=True`` module that only metrics of values read (``metric_tasks``).

    A task some metric of probabilities reads (NE, AUC, calibration, CTR: 0/1 or [0, 1] labels) is a
    binary head, rightly read as logits; one read by metrics of values alone (and ranking metrics,
    whose order the sigmoid keeps) is a regression head, whose MSE would be that of ``sigmoid`` of its
    predictions. Nothing changes: the module reads it as its docs say; the warning says how to keep it.
    """
    if not subsets:
        return
    known = {n: d for n, d in domains.items() if d is not None}
    found: dict[str, list[str]] = {}
    for t, task in enumerate(tasks):
        readers = [n for n in known if n not in subsets or t in subsets[n]]
        values = [n for n in readers if known[n].target == "real" and _scores_values(metrics[n])]
        probabilities = [n for n in readers if known[n].target in ("binary", "unit")]
        if values and not probabilities:
            found[task.name] = values
    if not found:
        return
    heads = "; ".join(f"task {name!r} by {readers}" for name, readers in found.items())
    columns = ", ".join(f"sigmoid({task.prediction_name})" for task in tasks if task.name in found)
    warn_at_user(
        f"RecMetricModule(from_logits=True) reads every prediction column as logits, and metric_tasks gives some "
        f"tasks metrics of values alone ({heads}): they score {columns}. If those columns hold values (a "
        "regression head), give `from_logits=True` to the metrics of the heads that give logits instead of to the "
        "module (`{'ne': {'from_logits': True}, ...}`), so the other heads keep their values, as "
        "`evaluate(..., from_logits=True, metric_tasks=...)` reads them. If they do hold logits, say so per metric "
        "the same way (`{'mse': {'from_logits': True}}`): nothing is warned then.",
        UserWarning,
    )
