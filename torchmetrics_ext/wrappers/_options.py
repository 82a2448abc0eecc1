"""The TorchMetrics options of a wrapper (``Windowed``, ``Segmented``): each one given to it, else the wrapped metric's.

A wrapper is built around a metric that already carries TorchMetrics options (``sync_on_compute``,
``dist_sync_fn``, ...) and takes the same options itself. One rule for both: an option given to
the wrapper wins; an option not given to it is the wrapped metric's. So ``Windowed(CTR(sync_on_compute=False), n)``
and ``Windowed(CTR(), n, sync_on_compute=False)`` both skip the sync, and so does ``Segmented``.
Two different process groups (one on the metric, one on the wrapper) are an error: which ranks a
value covers is not something to pick silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchmetrics import Metric

from torchmetrics_ext.metrics.base import TORCHMETRICS_OPTIONS

__all__ = ["METRIC_OPTIONS", "wrapper_options"]

# every keyword option of torchmetrics.Metric
METRIC_OPTIONS = TORCHMETRICS_OPTIONS
# the options whose ``None`` means "not set" (TorchMetrics' default); ``None`` for another is an error there
_NONE_IS_UNSET = ("process_group", "dist_sync_fn", "distributed_available_fn")


def wrapper_options(metric: Metric, given: Mapping[str, Any], wrapper: str) -> dict[str, Any]:
    """The keyword arguments of ``wrapper``'s ``Metric.__init__``: ``given``, completed with ``metric``'s options.

    An option given as ``None`` (``process_group``, ``dist_sync_fn``, ``distributed_available_fn``:
    TorchMetrics' "not set") is the metric's. Unknown or ill-typed options are left in for
    TorchMetrics to reject, naming them.

    Raises:
        ValueError: ``given`` holds a ``process_group`` other than the one ``metric`` has.
    """
    group, own = given.get("process_group"), metric.process_group
    if group is not None and own is not None and group is not own:
        raise ValueError(
            f"Expected one process group: the wrapped metric has its own `process_group` and another "
            f"was given to {wrapper}; give it to one of them."
        )
    options = {name: getattr(metric, name) for name in METRIC_OPTIONS}
    options.update({name: value for name, value in given.items() if value is not None or name not in _NONE_IS_UNSET})
    return options
