"""The keys a :class:`~torchmetrics_ext.RecMetricModule`'s ``compute()`` can return, read from its configuration.

``RecMetricCallback`` puts the training values it logged before a checkpoint back in
``trainer.callback_metrics`` when a fit resumes, and keeps only those of keys the resumed module
still reports (its configuration may have changed since: another prefix, a metric removed, no
window): :class:`ModuleKeys` answers that before any ``compute()``, without a sync and without
reading a state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchmetrics_ext._module_config import _entry_name_ok
from torchmetrics_ext._module_loading import AFRESH_ON_LOAD
from torchmetrics_ext._module_segments import segment_entries
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.throughput import Throughput

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecMetricModule

__all__ = ["ModuleKeys"]

_ENTRY = "\0"  # stands for a state metric's entry name in a key template: no name holds it (names are printable)


class ModuleKeys:
    """Whether ``module.compute()`` can return a key, from the module's metrics, tasks, window, throughput and prefix.

    The keys are written by the module's own key functions (both key styles), for each metric and
    each task and part (lifetime, window) it reports, as ``compute()`` emits them; a dict-valued
    metric (``RankingMetrics``, ``HindsightTargetPR``) for each entry its settings name
    (``"{metric}.ndcg@10/{task}"``), a ``Segmented`` one for each segment id (``"{metric}.0/{task}"``);
    the throughput's entries; each state metric's key. A state
    metric names its entries only in the value its callable returns, so a key of the form
    ``"{state}/{entry}"`` is taken for any entry name the module accepts (non-empty printable text
    without ``/``, ``|`` or ``.``).

    With ``resumed=True``, only the keys of what the module's last ``load_state_dict`` resumed: a
    metric that started afresh there (a state missing, loaded with ``strict=False``) has none of its
    keys, and a metric whose window started empty (a window changed since the checkpoint) none of
    its window keys; a module never loaded has every key.

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext._module_keys import ModuleKeys
        >>> module = tmx.RecMetricModule(["click"], {"ne": "ne"}, window_size=100, throughput=False, prefix="train/")
        >>> keys = ModuleKeys(module)
        >>> "train/ne/click/window" in keys, "train/auc/click" in keys, "val/ne/click" in keys
        (True, False, False)
        >>> "train/ne.ne/click" in keys  # NE's value is one number, not a dict
        False
    """

    def __init__(self, module: RecMetricModule, resumed: bool = False) -> None:
        templates: list[str] = []
        parts = ("lifetime", "window") if module.window_size is not None else ("lifetime",)
        # the parts the module's last load did not resume (a metric or window started afresh), left out if `resumed`
        afresh: dict[str | None, frozenset[str]] = module.__dict__.get(AFRESH_ON_LOAD, {}) if resumed else {}
        for name in module.metric_names:
            reported, tasks = module._reported.get(name, (("lifetime", "window"), None))
            bare = "bare" in reported  # as `_emit`: such a metric's lifetime goes without lifetime_
            entries = _value_entries(module, name)
            for part in parts:
                if part not in reported and not (bare and part == "lifetime"):
                    continue
                if part in afresh.get(name, ()):
                    continue
                for task in module._tasks_of(name):  # the tasks it reads (`metric_tasks`)
                    if tasks is None or task.name in tasks:
                        templates += _written(module, name, entries, task.name, part == "window", bare)
        if module.throughput is not None and None not in afresh:
            throughput = list(Throughput.entries)  # what its compute() returns
            if module.key_style == "torchrec":
                throughput += ["attempt_examples", "attempt_throughput"]
            templates += [module._aux_key("throughput", entry) for entry in throughput]
        for name in module.state_metrics:
            templates += [module._aux_key(name, entry) for entry in (None, _ENTRY)]
        self._exact = frozenset(t for t in templates if _ENTRY not in t)
        self._entries = [tuple(t.split(_ENTRY)) for t in templates if _ENTRY in t]  # (head, tail) around the entry

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is one of the module's keys (a state metric's with any valid entry name)."""
        if not isinstance(key, str):
            return False
        if key in self._exact:
            return True
        for head, tail in self._entries:
            if len(key) > len(head) + len(tail) and key.startswith(head) and key.endswith(tail):
                if _entry_name_ok(key[len(head) : len(key) - len(tail)]):  # as compute() checks a state's entries
                    return True
        return False


def _value_entries(module: RecMetricModule, name: str) -> tuple[str | None, ...]:
    """The entries of a metric's value per task, as its settings name them: ``(None,)`` for one number.

    A metric class of the user's own that does not name its entries (``_value_entries``) may return
    a dict whose entries only its value shows: any valid entry name is taken for it (``_ENTRY``).
    """
    segments = module.__dict__.get("_segments", {})
    if name in segments:  # a Segmented metric: one entry per segment id
        return segment_entries(segments[name])
    unit = module._copies(name)[0] if name in module.ranking else module._unit(name)
    metric = module._parts(unit)["lifetime"]
    entries = metric._value_entries()
    if entries is not None:
        return entries
    own = type(metric).__module__.split(".")[0] == "torchmetrics_ext"
    return (None,) if own or type(metric)._value_entries is not TaskMetric._value_entries else (None, _ENTRY)


def _written(
    module: RecMetricModule, name: str, entries: tuple[str | None, ...], task: str, window: bool, bare: bool
) -> list[str]:
    """A metric's keys of one task and part, one per entry, as ``compute()`` writes them.

    A module whose keys ``compute()`` would refuse to write (with ``key_style="torchrec"``, a dict entry
    named like its metric: TorchRec's own key) is refused when built, so every key here can be written.
    """
    return [module._key(name, entry, task, window=window, bare=bare) for entry in entries]
