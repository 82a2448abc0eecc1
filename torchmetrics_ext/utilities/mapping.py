"""The errors for a metric object used where a dict of metrics or a scalar goes (``log_dict(metric)``, ``log``)."""

from __future__ import annotations

import inspect
import sys

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
# the functions of those modules that format a refused value into their message: `__check_allowed` (a value that
# is no number, tensor or metric: `f"{value}"` formats it, and a dict or list holding it by its items' repr),
# `__check_not_nested` (a dict of dicts) and the Fabric route of `log_dict` (a dict of dicts)
_LIGHTNING_REFUSALS = frozenset({"__check_allowed", "__check_not_nested", "_log_dict_through_fabric"})


def lightning_log_call(depth: int = 2) -> str | None:
    """The call that Lightning refuses, when the frame ``depth`` calls up is its refusal formatting a value.

    ``self.log(name, value)`` refuses a value that is no number, ``Tensor`` or ``Metric`` (and a dict of
    dicts) with a ``ValueError`` whose message formats the value (``f"{value}"``, in its private
    ``__check_allowed`` or ``__check_not_nested``): for a module holding many metrics that is its whole
    ``nn.Module`` tree, and nothing says what to log instead. A class whose ``__repr__`` asks this (``depth=2``:
    the caller of the method that calls this one; ``format``, ``str`` and a dict's or list's ``repr`` add no
    Python frame) can raise a message of its own there: ``"self.log('v', ...)"`` (``"self.log_dict(...)"`` for
    Fabric's route, whose refusal names no key). Anywhere else, and whatever goes wrong in the look (no frames
    in this Python, a Lightning whose refusal has another name or module, locals of other types), ``None``: the
    caller formats as usual, never raises. Only called while formatting: nothing per step.

    Examples:
        >>> from torchmetrics_ext.utilities.mapping import lightning_log_call
        >>> def user_code():
        ...     return lightning_log_call(depth=1)
        >>> print(user_code())
        None
    """
    try:
        frame = sys._getframe(depth)  # 1: the caller, 2: its caller
        if frame.f_code.co_name not in _LIGHTNING_REFUSALS:
            return None
        if frame.f_globals.get("__name__") not in _LIGHTNING_LOG_MODULES:
            return None
        if frame.f_code.co_name == "_log_dict_through_fabric":
            return "self.log_dict(...)"
        name = frame.f_locals.get("name")
        return f"self.log({name!r}, ...)" if isinstance(name, str) else None
    except Exception:  # a look-up that fails must never turn a user's format into an error
        return None
