"""The note of :class:`~torchmetrics_ext.RecMetricModule` on a regression head read as logits (``from_logits``).

The module's own ``from_logits=True`` says that every prediction column holds logits. With
``metric_tasks`` a head may be read by metrics of values alone (``"mse"`` on a watch time in
seconds): the module then scores ``sigmoid`` of its predictions, which for such a head is almost
never what was meant, and ``evaluate(..., from_logits=True, metric_tasks=...)`` reads the same head
as values. The warning names the heads and the two ways to say what they hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchmetrics_ext.metrics.base import InputDomains
    from torchmetrics_ext.module import RecTaskInfo

__all__ = ["warn_value_heads_read_as_logits"]


def _reads_values(metric: Any, domain: InputDomains) -> bool:
    """Whether a metric scores the predictions as values against real-valued labels (MSE, R², ...).

    Metrics of probabilities take 0/1 or [0, 1] labels; ranking metrics and pairwise concordance
    only order the predictions, which a sigmoid does not change, and CTR reads none.
    """
    return (
        domain.target == "real"
        and getattr(metric, "reads_predictions", True)
        and not getattr(metric, "ranks_predictions", False)
    )


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
        values = [n for n in readers if _reads_values(metrics[n], known[n])]
        probabilities = [n for n in readers if known[n].target in ("binary", "unit")]
        if values and not probabilities:
            found[task.name] = values
    if not found:
        return
    heads = "; ".join(f"task {name!r} by {readers}" for name, readers in found.items())
    columns = ", ".join(f"sigmoid({task.prediction_name})" for task in tasks if task.name in found)
    warnings.warn(
        f"RecMetricModule(from_logits=True) reads every prediction column as logits, and metric_tasks gives some "
        f"tasks metrics of values alone ({heads}): they score {columns}. If those columns hold values (a "
        "regression head), give `from_logits=True` to the metrics of the heads that give logits instead of to the "
        "module (`{'ne': {'from_logits': True}, ...}`), so the other heads keep their values, as "
        "`evaluate(..., from_logits=True, metric_tasks=...)` reads them. If they do hold logits, say so per metric "
        "the same way (`{'mse': {'from_logits': True}}`): nothing is warned then.",
        UserWarning,
        stacklevel=3,
    )
