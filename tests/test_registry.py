"""Registry-wide contract: every exported metric class declares what TorchMetrics needs and documents itself."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torchmetrics import Metric

import torchmetrics_ext
import torchmetrics_ext as tmx
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


_FLAGGED = [
    (lambda flag: tmx.NDCG(k=5, exponential_gain=flag), "exponential_gain"),
    (lambda flag: tmx.PrecisionAtK(k=5, adaptive_k=flag), "adaptive_k"),
    (lambda flag: tmx.MRR(queries_complete_per_batch=flag), "queries_complete_per_batch"),
    (lambda flag: tmx.RankingMetrics(ks=(1,), remove_single_length_sessions=flag), "remove_single_length_sessions"),
    (lambda flag: tmx.AUC(from_logits=flag), "from_logits"),
    (lambda flag: tmx.GroupedAUC(weight_groups=flag), "weight_groups"),
    (lambda flag: tmx.NormalizedEntropy(from_logits=flag), "from_logits"),
    (lambda flag: tmx.WeightedMSE(from_logits=flag), "from_logits"),
    (lambda flag: tmx.XAUC(from_logits=flag), "from_logits"),
    (lambda flag: tmx.CalibrationFreeNE(torchrec_scaling=flag), "torchrec_scaling"),
    (lambda flag: tmx.NumMissingLabels(count_zero_weight=flag), "count_zero_weight"),
    (lambda flag: tmx.CTR(validate_args=flag), "validate_args"),
]


@pytest.mark.parametrize(("build", "name"), _FLAGGED)
def test_numpy_bools_are_flags_and_are_kept_as_python_bools(build, name):
    """Options accept NumPy bools (as `k` accepts NumPy integers); 1 and 0 stay refused."""
    for flag in (np.True_, np.False_):
        value = getattr(build(flag), name)
        assert type(value) is bool and value is bool(flag)
    with pytest.raises(ValueError, match=f"`{name}` to be a bool"):
        build(1)


def test_functional_flags_take_numpy_bools():
    from torchmetrics_ext.functional import auc, ndcg

    preds, target = torch.tensor([0.3, 0.2, 0.9]), torch.tensor([1, 0, 1])
    indexes = torch.tensor([0, 0, 0])
    # gains 2^1 - 1 = 1: the same value as linear gain; relevant at ranks 1 and 2 of 3
    assert ndcg(preds, target, indexes, k=3, exponential_gain=np.True_).item() == pytest.approx(1.0)
    assert auc(torch.tensor([-1.0, 1.0]), torch.tensor([0, 1]), from_logits=np.True_).item() == pytest.approx(1.0)


def test_no_public_class_shows_a_private_parameter():
    """``inspect.signature`` (help(), IDEs, the API pages) shows public parameters only.

    The pointwise constructors showed their base's ``_setting`` and ``_from_logits``
    (``CTR(num_tasks=1, *, _setting='', _from_logits=False, **kwargs)``).
    """
    shown = {}
    for name in torchmetrics_ext.__all__:
        obj = getattr(torchmetrics_ext, name)
        if not inspect.isclass(obj):
            continue
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # a class without a Python signature (none today)
            continue
        for parameter in signature.parameters:
            if parameter.startswith("_"):
                shown[(name, parameter)] = str(signature)
    assert shown == {}


@pytest.mark.parametrize(
    "name", ["ctr", "weighted_average", "mse", "rmse", "mae", "r_squared", "nmse", "nrmse", "regression_auc", "xauc"]
)
def test_registry_names_take_from_logits(name):
    """build_metric / from_config options pass `from_logits` to the pointwise metrics that gained it."""
    from torchmetrics_ext.registry import build_metric

    metric = build_metric(name, num_tasks=2, from_logits=True)
    assert metric.from_logits is True and metric.input_domains.from_logits
    assert build_metric(name, num_tasks=2).from_logits is False
