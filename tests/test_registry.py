"""Registry-wide contract: every exported metric class declares what TorchMetrics needs and documents itself."""

from __future__ import annotations

import inspect

import pytest
from torchmetrics import Metric

import torchmetrics_ext
from torchmetrics_ext import functional as tmf

METRIC_CLASSES = sorted(
    (
        obj
        for name in torchmetrics_ext.__all__
        if inspect.isclass(obj := getattr(torchmetrics_ext, name))
        and issubclass(obj, Metric)
        and not inspect.isabstract(obj)
        and obj is not torchmetrics_ext.TaskMetric
    ),
    key=lambda cls: cls.__name__,
)
IDS = [cls.__name__ for cls in METRIC_CLASSES]


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=IDS)
def test_metric_declares_torchmetrics_contract(cls):
    assert cls.full_state_update is False, "full_state_update must be False (it doubles forward cost otherwise)"
    assert isinstance(cls.is_differentiable, bool)
    assert cls.higher_is_better in (True, False, None)
    assert "higher_is_better" in {k for c in cls.__mro__ if c is not Metric and issubclass(c, Metric) for k in vars(c)}


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=IDS)
def test_metric_is_documented_with_an_example(cls):
    doc = inspect.getdoc(cls) or ""
    assert "Example" in doc and ">>>" in doc, f"{cls.__name__} needs a runnable Example"
    assert "Args:" in doc


@pytest.mark.parametrize("name", tmf.__all__)
def test_functional_is_documented_with_an_example(name):
    doc = inspect.getdoc(getattr(tmf, name)) or ""
    assert ">>>" in doc and "Args:" in doc and "Returns:" in doc


def test_every_class_has_a_functional_twin_or_says_why():
    snake = {name.replace("_", "") for name in tmf.__all__}
    missing = [cls.__name__ for cls in METRIC_CLASSES if cls.__name__.lower() not in snake]
    # names whose twin is spelled differently are listed here explicitly
    aliases = {"NormalizedEntropy": "normalized_entropy", "MAP": "map_at_k"}
    # classes that cannot have one, and why
    no_twin = {
        "Segmented": "a wrapper: its twin is the wrapped metric's function on each segment's rows",
        "TowerQPS": "a rate over wall-clock time between updates, not a function of one set of tensors",
        "Throughput": "a clock-driven rate",
        "Windowed": "a wrapper of any metric",
    }
    missing = [m for m in missing if aliases.get(m) not in tmf.__all__ and m not in no_twin]
    assert not missing, f"no functional twin for {missing}"
