"""Seeded random module tests' shared steps: a module from a config, numpy steps fed, values as floats."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch

import torchmetrics_ext as tmx


def build(config: dict[str, Any]) -> tmx.RecMetricModule:
    """``RecMetricModule.from_config`` of a copy (the config is reused by the references)."""
    return tmx.RecMetricModule.from_config(copy.deepcopy(config))


def feed(module: tmx.RecMetricModule, steps: list[dict[str, np.ndarray]]) -> tmx.RecMetricModule:
    """Update ``module`` with each step's columns as tensors; return it."""
    for step in steps:
        module.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in step.items()})
    return module


def values(module: tmx.RecMetricModule) -> dict[str, float]:
    """``compute()`` as plain floats, undefined values (``nan``) without their warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return {key: float(value) for key, value in module.compute().items()}


def weighs_nothing(step: dict[str, np.ndarray], tasks: list[dict[str, Any]]) -> bool:
    """Whether each of ``tasks`` has a weight column and all its weights in ``step`` are zero.

    docs/windows.md: a validated step where the tasks a metric reads weigh nothing takes no room in
    that metric's window (a task without a weight column weighs 1).
    """
    columns = [task["weight_name"] for task in tasks]
    return all(c is not None for c in columns) and all(not step[c].any() for c in columns)


def window_groups(tasks: list[dict[str, Any]], ranking: bool) -> list[list[dict[str, Any]]]:
    """The task lists whose windows a metric reading ``tasks`` keeps: one per task for a ranking metric (the
    module keeps a copy per task), else all of them (one window for its tasks)."""
    return [[task] for task in tasks] if ranking else [tasks]
