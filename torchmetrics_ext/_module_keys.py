"""The keys a :class:`~torchmetrics_ext.RecMetricModule`'s ``compute()`` can return, read from its configuration.

``RecMetricCallback`` puts the training values it logged before a checkpoint back in
``trainer.callback_metrics`` when a fit resumes, and keeps only those of keys the resumed module
still reports (its configuration may have changed since: another prefix, a metric removed, no
window): :class:`ModuleKeys` answers that before any ``compute()``, without a sync and without
reading a state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchmetrics_ext.metrics.throughput import Throughput

if TYPE_CHECKING:
    from torchmetrics_ext.module import RecMetricModule

__all__ = ["ModuleKeys"]

_ENTRY = "\0"  # stands for an entry name in a key template: no name holds it (names are printable)
_SEPARATORS = "/|."  # no metric, task or entry name holds one (see `_entry_name_ok`)


class ModuleKeys:
    """Whether ``module.compute()`` can return a key, from the module's metrics, tasks, window, throughput and prefix.

    The keys are written by the module's own key functions (both key styles), for each metric and
    each task and part (lifetime, window) it reports, as ``compute()`` emits them; the throughput's
    entries; each state metric's key. A dict-valued metric (``RankingMetrics``) or state metric
    names its entries only in its value, so a key of such a form (``"{metric}.{entry}/{task}"``,
    ``"{state}/{entry}"``) is taken for any entry name: of the module's own metrics, tasks and
    prefix, it is a key that metric could return.

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> from torchmetrics_ext._module_keys import ModuleKeys
        >>> module = tmx.RecMetricModule(["click"], {"ne": "ne"}, window_size=100, throughput=False, prefix="train/")
        >>> keys = ModuleKeys(module)
        >>> "train/ne/click/window" in keys, "train/auc/click" in keys, "val/ne/click" in keys
        (True, False, False)
    """

    def __init__(self, module: RecMetricModule) -> None:
        templates: list[str] = []
        parts = ("lifetime", "window") if module.window_size is not None else ("lifetime",)
        for name in module.metric_names:
            reported, tasks = module._reported.get(name, (("lifetime", "window"), None))
            bare = "bare" in reported  # as `_emit`: such a metric's lifetime goes without lifetime_
            for part in parts:
                if part not in reported and not (bare and part == "lifetime"):
                    continue
                for task in module.tasks:
                    if tasks is None or task.name in tasks:
                        templates += [
                            module._key(name, entry, task.name, window=part == "window", bare=bare)
                            for entry in (None, _ENTRY)
                        ]
        if module.throughput is not None:
            entries = list(Throughput.entries)  # what its compute() returns
            if module.key_style == "torchrec":
                entries += ["attempt_examples", "attempt_throughput"]
            templates += [module._aux_key("throughput", entry) for entry in entries]
        for name in module.state_metrics:
            templates += [module._aux_key(name, entry) for entry in (None, _ENTRY)]
        self._exact = frozenset(t for t in templates if _ENTRY not in t)
        self._entries = [tuple(t.split(_ENTRY)) for t in templates if _ENTRY in t]  # (head, tail) around the entry

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is one of the module's keys (a dict-valued one with any entry name)."""
        if not isinstance(key, str):
            return False
        if key in self._exact:
            return True
        for head, tail in self._entries:
            if len(key) > len(head) + len(tail) and key.startswith(head) and key.endswith(tail):
                entry = key[len(head) : len(key) - len(tail)]
                if not any(c in entry for c in _SEPARATORS):
                    return True
        return False
