"""The errors for a metric object used where a dict of metrics or a scalar goes (``log_dict(metric)``, ``log``)."""

from __future__ import annotations

import inspect
from types import FrameType

from torchmetrics import Metric


def not_a_dict_of_metrics(metric: Metric) -> TypeError:
    """The ``TypeError`` that ``metric.items()`` raises, saying what to log instead.

    ``LightningModule.log_dict(metric)`` iterates ``items()``: a metric whose ``compute()`` is a dict
    (``RankingMetrics``, ``Windowed``, ...) reads like one, and without this method the call failed with
    Python's bare "object has no attribute 'items'".

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> tmx.RankingMetrics(ks=(5,)).items()
        Traceback (most recent call last):
        ...
        TypeError: RankingMetrics is a metric, not a dict of metrics: its compute() returns a dict of values; ...
    """
    name = type(metric).__name__
    head = f"{name} is a metric, not a dict of metrics"
    annotation = inspect.signature(type(metric).compute).return_annotation
    if str(annotation).startswith("dict"):
        return TypeError(
            f"{head}: its compute() returns a dict of values; log those, `self.log_dict(metric.compute())` (a "
            "collective under DDP: every rank calls it), e.g. in `on_validation_epoch_end`, and `metric.reset()` "
            "where a new value should start."
        )
    num_tasks = getattr(metric, "num_tasks", 1)
    if isinstance(num_tasks, int) and num_tasks > 1:
        return TypeError(
            f"{head}: its compute() is a ({num_tasks},) tensor, one value per task; log one key per task, "
            "`self.log_dict({f'metric/{task}': value for task, value in zip(tasks, metric.compute())})`, or use "
            "RecMetricModule, whose compute() gives one scalar per metric and task."
        )
    return TypeError(
        f"{head}: log it with `self.log(name, metric)`, or give `self.log_dict` a `torchmetrics.MetricCollection`."
    )


# Lightning's modules whose `LightningModule.log` refuses a value of another type (`__check_allowed`)
_LIGHTNING_LOG_MODULES = ("lightning.pytorch.core.module", "pytorch_lightning.core.module")


def lightning_log_name(frame: FrameType | None) -> str | None:
    """The name given to ``LightningModule.log`` when ``frame`` is its refusal of a value of another type.

    ``self.log(name, value)`` refuses a value that is no number, ``Tensor`` or ``Metric`` with a
    ``ValueError`` whose message formats the value (``f"{value}"``, in its private ``__check_allowed``):
    for a module holding many metrics that is its whole ``nn.Module`` tree, and nothing says what to log
    instead. A class whose ``__format__`` asks this with its caller's frame can raise a message of its own
    there; anywhere else (``None``) it formats as usual. Only called while formatting: nothing per step.
    """
    if frame is None or frame.f_code.co_name != "__check_allowed":
        return None
    if frame.f_globals.get("__name__") not in _LIGHTNING_LOG_MODULES:
        return None
    name = frame.f_locals.get("name")
    return name if isinstance(name, str) else None
