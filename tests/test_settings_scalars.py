"""Constructor settings given as 0-dim tensors, 0-dim NumPy arrays or NumPy scalars: one rule everywhere.

``num_bins=torch.tensor(100)`` was accepted while ``threshold=torch.tensor(0.5)``, ``eta=...`` and
``recalibration_coefficient=...`` were refused. The rule (``as_int``/``as_real`` in
:mod:`torchmetrics_ext.utilities.checks`): where a Python number is accepted, a 0-dim real tensor, a
0-dim NumPy array and a NumPy scalar of the same value are too, and the setting is kept as that
Python number, so state names (``cross_entropy_sum_eta_0p125``, Throughput's ``warmup3``/``window7p5``
tags), ``state_dict`` keys, pickling and ``compute()`` are those of the Python number. ``bool``,
complex, NaN/out-of-range values and tensors with dimensions are refused, naming the argument.

Flags (``from_logits``, ``exponential_gain``, ``groups_complete_per_batch``, ...) follow the same rule
(``as_bool``): a 0-dim bool tensor, a 0-dim NumPy bool array and a NumPy bool are the Python bool;
integers (``1``/``0``, in any form) stay refused, as do bool tensors with dimensions.

Sequence settings (``percentiles``, ``logit_range``, ``ks``, ``edges``, per-task ``weighted``, ...) follow
one rule too (``sequence_items``): a 1-D tensor, a 1-D NumPy array, a list of NumPy scalars and a tuple of
0-dim tensors are the tuple of Python values, kept exactly as the tuple form keeps it; 2-D tensors and
arrays, and items of the wrong kind (bools for numbers, floats for integers), are refused naming the setting.
String settings (``bin_space``, ``empty_target_action``, ranking ``metrics`` names, ...) take a NumPy string
and a 0-dim NumPy string array as the Python string (``as_str``); one string is never a sequence of names.
"""

from __future__ import annotations

import enum
import inspect
import io
import itertools
import math
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as tmf
from torchmetrics_ext import aggregation as agg
from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics
from torchmetrics_ext.utilities.checks import as_bool, as_int, as_real, as_str, sequence_items
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning


def _forms(value: int | float) -> dict[str, Any]:
    """Every accepted non-Python form of ``value`` that holds exactly that value."""
    if isinstance(value, int):
        forms = {
            "tensor": torch.tensor(value),
            "tensor-int32": torch.tensor(value, dtype=torch.int32),
            "numpy": np.int64(value),
            "numpy-int16": np.int16(value),
            "numpy-0d": np.asarray(value),
        }
        if value >= 0:
            forms["tensor-uint8"] = torch.tensor(value, dtype=torch.uint8)
        return forms
    forms = {
        "tensor": torch.tensor(value, dtype=torch.float64),
        "numpy": np.float64(value),
        "numpy-0d": np.asarray(value),
    }
    if float(np.float32(value)) == value:  # float32 holds it exactly: the same setting
        forms["tensor-float32"] = torch.tensor(value, dtype=torch.float32)
        forms["numpy-float32"] = np.float32(value)
    return forms


# ----------------------------------------------------------------------------- data


def _pointwise(rng: np.random.Generator, n: int = 64) -> tuple[tuple[Any, ...], ...]:
    batches = []
    for _ in range(2):
        preds = torch.tensor(rng.uniform(0.02, 0.98, n))
        target = torch.tensor((rng.random(n) < 0.4).astype(np.int64))
        weights = torch.tensor(rng.uniform(0.5, 2.0, n))
        batches.append((preds, target, weights))
    return tuple(batches)


def _two_tasks(rng: np.random.Generator, n: int = 64) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (torch.tensor(rng.uniform(0.02, 0.98, (2, n))), torch.tensor((rng.random((2, n)) < 0.4).astype(np.int64)))
        for _ in range(2)
    )


def _ranking(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (torch.tensor(rng.random((6, 8))), torch.tensor((rng.random((6, 8)) < 0.3).astype(np.int64))) for _ in range(2)
    )


def _padded_ranking(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    batches = []
    for preds, target in _ranking(rng):
        preds[:, -2:] = -1.0  # padded slots, marked by padding_value=-1
        target[:, -2:] = 0  # no relevant candidate there (refused: it would be dropped with the padding)
        batches.append((preds, target))
    return tuple(batches)


def _sessions(rng: np.random.Generator, n: int = 40) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (
            torch.tensor(rng.random(n)),
            torch.tensor((rng.random(n) < 0.4).astype(np.int64)),
            torch.tensor(np.sort(rng.integers(0, 6, n))),
        )
        for _ in range(2)
    )


def _multiclass(rng: np.random.Generator, n: int = 30) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.tensor(rng.random((n, 5))), torch.tensor(rng.integers(0, 5, n))) for _ in range(2))


def _codes(rng: np.random.Generator, n: int = 30) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.tensor(rng.integers(0, 8, n)), torch.tensor(rng.integers(0, 8, n))) for _ in range(2))


def _segments(rng: np.random.Generator, n: int = 40) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (
            torch.tensor(rng.uniform(0.02, 0.98, n)),
            torch.tensor((rng.random(n) < 0.4).astype(np.int64)),
            torch.tensor(rng.integers(0, 3, n)),
        )
        for _ in range(2)
    )


def _missing_labels(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    batches = []
    for preds, target, weights in _pointwise(rng):
        target = target.double()
        target[::7] = math.nan  # labels not logged yet
        weights[::5] = 0.0
        batches.append((preds, target, weights))
    return tuple(batches)


def _values(rng: np.random.Generator, n: int = 50) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.tensor(rng.lognormal(0.0, 2.0, n)),) for _ in range(2))


def _values_with_nan(rng: np.random.Generator, n: int = 20) -> tuple[tuple[Any, ...], ...]:
    batches = []
    for _ in range(2):
        values = torch.tensor(rng.normal(size=n))
        values[::5] = math.nan
        batches.append((values,))
    return tuple(batches)


def _examples(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.zeros(int(n), 3),) for n in rng.integers(1, 20, 8))


def _predictions(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.zeros(int(n)),) for n in rng.integers(1, 20, 8))


def _module_steps(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        ({"prediction": preds, "label": target, "weight": weights},) for preds, target, weights in _pointwise(rng, 16)
    )


class _Clock:
    """A deterministic (and picklable) clock: each metric built with one sees the same times."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> float:
        return float(next(self.ticks))


@dataclass(frozen=True)
class Setting:
    """One constructor setting: how to build the metric with it, a valid value and batches to update with."""

    id: str
    build: Callable[[Any], Any]
    value: int | float
    data: Callable[[np.random.Generator], tuple[tuple[Any, ...], ...]]
    name: str  # the argument, as the refusals name it
    integer: bool = False  # an integer setting: a whole float (5.0) is refused as the Python float is

    def __str__(self) -> str:
        return self.id


def _windowed_ctr(window_size: Any) -> Any:
    return tmx.Windowed(tmx.CTR(), window_size=window_size)


class _SegmentedCTR(tmx.Segmented):
    """Segmented CTR updated positionally: ``(preds, target, segments)``."""

    def update(self, preds: Any, target: Any, segments: Any) -> None:  # type: ignore[override]
        super().update(preds, target, segments=segments)


def _segmented_ctr(num_segments: Any) -> Any:
    return _SegmentedCTR(tmx.CTR(), num_segments=num_segments)


SETTINGS = [
    Setting("WeightedAccuracy.threshold", lambda v: tmx.WeightedAccuracy(threshold=v), 0.25, _pointwise, "threshold"),
    Setting("WeightedPrecision.threshold", lambda v: tmx.WeightedPrecision(threshold=v), 0.25, _pointwise, "threshold"),
    Setting("WeightedRecall.threshold", lambda v: tmx.WeightedRecall(threshold=v), 0.75, _pointwise, "threshold"),
    Setting("NormalizedEntropy.eta", lambda v: tmx.NormalizedEntropy(eta=v), 0.125, _pointwise, "eta"),
    Setting("LogLoss.eta", lambda v: tmx.LogLoss(eta=v), 0.125, _pointwise, "eta"),
    Setting("NEPositive.eta", lambda v: tmx.NEPositive(eta=v), 0.125, _pointwise, "eta"),
    Setting("CalibrationFreeNE.eta", lambda v: tmx.CalibrationFreeNE(eta=v), 0.125, _pointwise, "eta"),
    Setting("RecalibratedNE.eta", lambda v: tmx.RecalibratedNE(eta=v), 0.125, _pointwise, "eta"),
    Setting(
        "RecalibratedNE.recalibration_coefficient",
        lambda v: tmx.RecalibratedNE(recalibration_coefficient=v),
        2.5,
        _pointwise,
        "recalibration_coefficient",
    ),
    Setting(
        "RecalibratedNE.recalibration_coefficient-int",
        lambda v: tmx.RecalibratedNE(recalibration_coefficient=v),
        2,
        _pointwise,
        "recalibration_coefficient",
    ),
    Setting(
        "RecalibratedCalibration.recalibration_coefficient",
        lambda v: tmx.RecalibratedCalibration(recalibration_coefficient=v),
        0.5,
        _pointwise,
        "recalibration_coefficient",
    ),
    Setting("AUC.num_bins", lambda v: tmx.AUC(num_bins=v), 100, _pointwise, "num_bins", integer=True),
    Setting("AUPRC.num_bins", lambda v: tmx.AUPRC(num_bins=v), 100, _pointwise, "num_bins", integer=True),
    Setting("AUC.logit_range", lambda v: tmx.AUC(num_bins=50, logit_range=(-4.0, v)), 6.0, _pointwise, "logit_range"),
    Setting("Reliability.num_bins", lambda v: tmx.Reliability(num_bins=v), 7, _pointwise, "num_bins", integer=True),
    Setting(
        "HindsightTargetPR.target_precision",
        lambda v: tmx.HindsightTargetPR(target_precision=v),
        0.375,
        _pointwise,
        "target_precision",
    ),
    Setting(
        "HindsightTargetPR.num_thresholds",
        lambda v: tmx.HindsightTargetPR(num_thresholds=v),
        50,
        _pointwise,
        "num_thresholds",
        integer=True,
    ),
    Setting(
        "NormalizedEntropy.num_tasks",
        lambda v: tmx.NormalizedEntropy(num_tasks=v),
        2,
        _two_tasks,
        "num_tasks",
        integer=True,
    ),
    Setting("CTR.num_tasks", lambda v: tmx.CTR(num_tasks=v), 2, _two_tasks, "num_tasks", integer=True),
    Setting(
        "MultiLabelPrecision.num_labels",
        lambda v: tmx.MultiLabelPrecision(num_labels=v),
        3,
        _codes,
        "num_labels",
        integer=True,
    ),
    Setting("NDCG.k", lambda v: tmx.NDCG(k=v), 3, _ranking, "k", integer=True),
    Setting("RecallAtK.k", lambda v: tmx.RecallAtK(k=v), 3, _ranking, "k", integer=True),
    Setting("PrecisionAtK.k", lambda v: tmx.PrecisionAtK(k=v), 3, _ranking, "k", integer=True),
    Setting("F1AtK.k", lambda v: tmx.F1AtK(k=v), 3, _ranking, "k", integer=True),
    Setting("MRR.k", lambda v: tmx.MRR(k=v), 3, _ranking, "k", integer=True),
    Setting("HitRate.k", lambda v: tmx.HitRate(k=v), 3, _ranking, "k", integer=True),
    Setting("MAP.k", lambda v: tmx.MAP(k=v), 3, _ranking, "k", integer=True),
    Setting("RankingMetrics.ks", lambda v: tmx.RankingMetrics(ks=(v, 5)), 2, _ranking, "k", integer=True),
    Setting("NDCG.padding_value", lambda v: tmx.NDCG(k=4, padding_value=v), -1.0, _padded_ranking, "padding_value"),
    Setting("MRR.padding_value-int", lambda v: tmx.MRR(padding_value=v), -1, _padded_ranking, "padding_value"),
    Setting(
        "MulticlassRecallAtK.k",
        lambda v: tmx.MulticlassRecallAtK(k=v, num_classes=5),
        2,
        _multiclass,
        "k",
        integer=True,
    ),
    Setting(
        "MulticlassRecallAtK.num_classes",
        lambda v: tmx.MulticlassRecallAtK(k=2, num_classes=v),
        5,
        _multiclass,
        "num_classes",
        integer=True,
    ),
    Setting("SessionPrecisionAtK.k", lambda v: tmx.SessionPrecisionAtK(k=v), 2, _sessions, "k", integer=True),
    Setting("SessionRecallAtK.k", lambda v: tmx.SessionRecallAtK(k=v), 2, _sessions, "k", integer=True),
    Setting(
        "Throughput.warmup_steps",
        lambda v: tmx.Throughput(warmup_steps=v, clock=_Clock()),
        3,
        _examples,
        "warmup_steps",
        integer=True,
    ),
    Setting(
        "Throughput.window_seconds",
        lambda v: tmx.Throughput(warmup_steps=1, window_seconds=v, clock=_Clock()),
        2.5,
        _examples,
        "window_seconds",
    ),
    Setting(
        "TowerQPS.warmup_steps",
        lambda v: tmx.TowerQPS(warmup_steps=v, clock=_Clock()),
        3,
        _predictions,
        "warmup_steps",
        integer=True,
    ),
    Setting("Windowed.window_size", _windowed_ctr, 50, _pointwise, "window_size", integer=True),
    Setting(
        "Windowed.max_updates",
        lambda v: tmx.Windowed(tmx.CTR(), window_size=50, max_updates=v),
        2,
        _pointwise,
        "max_updates",
        integer=True,
    ),
    Setting("Segmented.num_segments", _segmented_ctr, 3, _segments, "num_segments", integer=True),
    Setting(
        "Distribution.relative_accuracy",
        lambda v: agg.Distribution(relative_accuracy=v),
        0.03125,
        _values,
        "relative_accuracy",
    ),
    Setting("Distribution.min_value", lambda v: agg.Distribution(min_value=v), 0.0625, _values, "min_value"),
    Setting("Distribution.max_value", lambda v: agg.Distribution(max_value=v), 4096.0, _values, "max_value"),
    Setting("Distribution.percentiles", lambda v: agg.Distribution(percentiles=(v, 50)), 12.5, _values, "percentiles"),
    Setting("Sum.nan_strategy", lambda v: agg.Sum(nan_strategy=v), 0.5, _values_with_nan, "nan_strategy"),
    Setting("Mean.nan_strategy", lambda v: agg.Mean(nan_strategy=v), 0.5, _values_with_nan, "nan_strategy"),
    Setting("Max.nan_strategy", lambda v: agg.Max(nan_strategy=v), 9.5, _values_with_nan, "nan_strategy"),
    Setting(
        "RecMetricModule.window_size",
        lambda v: tmx.RecMetricModule(["click"], ["ne", "ctr"], window_size=v, throughput=False),
        20,
        _module_steps,
        "window_size",
        integer=True,
    ),
    Setting(
        "RecMetricModule.compute_interval_steps",
        lambda v: tmx.RecMetricModule(["click"], ["ne"], compute_interval_steps=v, throughput=False),
        7,
        _module_steps,
        "compute_interval_steps",
        integer=True,
    ),
]
FORM_CASES = [(setting, form) for setting in SETTINGS for form in _forms(setting.value)]


def _run(metric: Any, batches: tuple[tuple[Any, ...], ...]) -> Any:
    for batch in batches:
        metric.update(*batch)
    with warnings.catch_warnings():  # an undefined value (nan) is compared as such
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return metric.compute()


def _assert_same(got: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            _assert_same(got[key], expected[key])
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def _plain_attributes(metric: Any) -> dict[str, Any]:
    """The metric's instance attributes that are settings: no state, no module, no callable."""
    states = set(getattr(metric, "_defaults", {}))
    return {
        name: value
        for name, value in vars(metric).items()
        if name not in states
        and not name.startswith("_")
        and not callable(value)
        and isinstance(value, (int, float, tuple, np.generic, np.ndarray, torch.Tensor))
    }


@pytest.mark.parametrize(("setting", "form"), FORM_CASES, ids=[f"{s}-{f}" for s, f in FORM_CASES])
def test_a_setting_as_a_tensor_or_numpy_number_is_the_python_number(setting, form):
    """Same state names and ``state_dict`` keys, same settings (plain Python), same ``compute()`` on the same data."""
    _assert_built_as_the_python_value(setting, _forms(setting.value)[form])


def _assert_built_as_the_python_value(setting: Any, given: Any) -> None:
    """``setting.build(given)`` is the metric of ``setting.value``: names, settings, repr, pickle, checkpoint, values."""
    reference, metric = setting.build(setting.value), setting.build(given)
    for each in (reference, metric):
        if hasattr(each, "persistent"):  # RecMetricModule's states are persistent already
            each.persistent(True)  # every state in the state_dict, under its name
    assert list(metric.state_dict()) == list(reference.state_dict()) != []
    assert sorted(getattr(metric, "_defaults", {})) == sorted(getattr(reference, "_defaults", {}))
    expected_settings = _plain_attributes(reference)
    got_settings = _plain_attributes(metric)
    assert got_settings.keys() == expected_settings.keys()
    for name, value in got_settings.items():  # kept as Python numbers, not as what was given
        assert type(value) is type(expected_settings[name]), name
        if isinstance(value, torch.Tensor):  # made from the setting (Reliability's edges)
            assert torch.equal(value, expected_settings[name]), name
        else:
            assert value == expected_settings[name], name
            assert not isinstance(value, (np.generic, np.ndarray)), name
    assert repr(metric) == repr(reference)
    restored = pickle.loads(pickle.dumps(metric))
    assert list(restored.state_dict()) == list(reference.state_dict())
    # a checkpoint of the tensor-given metric (with the settings its metadata records) loads into the Python one's
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    reference.load_state_dict(torch.load(buffer, weights_only=True))
    rng = np.random.default_rng(0)
    batches = setting.data(rng)
    _assert_same(_run(metric, batches), _run(reference, batches))


# ----------------------------------------------------------------------------- flags


def _flag_forms(value: bool) -> dict[str, Any]:
    """Every accepted non-Python form of the flag ``value``."""
    return {"tensor": torch.tensor(value), "numpy": np.bool_(value), "numpy-0d": np.asarray(value)}


@dataclass(frozen=True)
class Flag:
    """One constructor flag: how to build the metric with it, the value tested (not the default) and batches."""

    id: str
    build: Callable[[Any], Any]
    value: bool
    data: Callable[[np.random.Generator], tuple[tuple[Any, ...], ...]]
    name: str  # the argument, as the refusals name it

    def __str__(self) -> str:
        return self.id


def _from_logits(cls: Any, data: Callable[[np.random.Generator], tuple[tuple[Any, ...], ...]] = _pointwise) -> Flag:
    return Flag(f"{cls.__name__}.from_logits", lambda v: cls(from_logits=v), True, data, "from_logits")


FROM_LOGITS = [
    tmx.NormalizedEntropy,
    tmx.LogLoss,
    tmx.NEPositive,
    tmx.CalibrationFreeNE,
    tmx.RecalibratedNE,
    tmx.RecalibratedCalibration,
    tmx.AUC,
    tmx.AUPRC,
    tmx.CTR,
    tmx.Calibration,
    tmx.HindsightTargetPR,
    tmx.Reliability,
    tmx.RegressionAUC,
    tmx.XAUC,
    tmx.WeightedAverage,
    tmx.WeightedAccuracy,
    tmx.WeightedPrecision,
    tmx.WeightedRecall,
    tmx.WeightedMSE,
    tmx.WeightedMAE,
    tmx.WeightedRMSE,
    tmx.WeightedNMSE,
    tmx.WeightedNRMSE,
    tmx.WeightedR2,
]
# ranking flags every ranking metric takes (TaskMetric keyword arguments of the family's base class)
RANKING_FLAGS = ("queries_complete_per_batch", "remove_single_length_sessions")
FLAGS = [
    *[_from_logits(cls) for cls in FROM_LOGITS],
    _from_logits(tmx.GroupedAUC, _segments),
    _from_logits(tmx.GroupedAUPRC, _segments),
    Flag("GroupedAUC.weight_groups", lambda v: tmx.GroupedAUC(weight_groups=v), True, _segments, "weight_groups"),
    Flag("GroupedAUPRC.weight_groups", lambda v: tmx.GroupedAUPRC(weight_groups=v), True, _segments, "weight_groups"),
    Flag(
        "GroupedAUC.groups_complete_per_batch",
        lambda v: tmx.GroupedAUC(groups_complete_per_batch=v),
        True,
        _segments,
        "groups_complete_per_batch",
    ),
    Flag(
        "GroupedAUPRC.groups_complete_per_batch",
        lambda v: tmx.GroupedAUPRC(groups_complete_per_batch=v),
        True,
        _segments,
        "groups_complete_per_batch",
    ),
    Flag(
        "CalibrationFreeNE.torchrec_scaling",
        lambda v: tmx.CalibrationFreeNE(torchrec_scaling=v),
        True,
        _pointwise,
        "torchrec_scaling",
    ),
    Flag(
        "NumMissingLabels.count_zero_weight",
        lambda v: tmx.NumMissingLabels(count_zero_weight=v),
        True,
        _missing_labels,
        "count_zero_weight",
    ),
    Flag("TensorWeightedAverage.weighted", lambda v: tmx.TensorWeightedAverage(weighted=v), False, _values, "weighted"),
    Flag("NDCG.exponential_gain", lambda v: tmx.NDCG(k=3, exponential_gain=v), True, _ranking, "exponential_gain"),
    Flag("NDCG.report_as_loss", lambda v: tmx.NDCG(k=3, report_as_loss=v), True, _ranking, "report_as_loss"),
    Flag("PrecisionAtK.adaptive_k", lambda v: tmx.PrecisionAtK(k=3, adaptive_k=v), True, _ranking, "adaptive_k"),
    Flag("F1AtK.adaptive_k", lambda v: tmx.F1AtK(k=3, adaptive_k=v), True, _ranking, "adaptive_k"),
    Flag(
        "RankingMetrics.exponential_gain",
        lambda v: tmx.RankingMetrics(ks=(2, 5), exponential_gain=v),
        True,
        _ranking,
        "exponential_gain",
    ),
    Flag(
        "RankingMetrics.adaptive_k", lambda v: tmx.RankingMetrics(ks=(2, 5), adaptive_k=v), True, _ranking, "adaptive_k"
    ),
    *[
        Flag(f"{cls.__name__}.{name}", lambda v, cls=cls, name=name: cls(k=3, **{name: v}), True, _ranking, name)
        for cls in (tmx.NDCG, tmx.MRR, tmx.MAP, tmx.RecallAtK)
        for name in RANKING_FLAGS
    ],
    Flag(
        "SessionPrecisionAtK.rank_labels",
        lambda v: tmx.SessionPrecisionAtK(k=2, rank_labels=v),
        True,
        _sessions,
        "rank_labels",
    ),
    Flag(
        "SessionRecallAtK.rank_labels",
        lambda v: tmx.SessionRecallAtK(k=2, rank_labels=v),
        True,
        _sessions,
        "rank_labels",
    ),
    *[
        Flag(
            f"SessionPairwiseAUC.{name}",
            lambda v, name=name: tmx.SessionPairwiseAUC(**{name: v}),
            value,
            _sessions,
            name,
        )
        for name, value in (("rank_order_label", True), ("weight_pairs", False), ("report_batch_coverage", True))
    ],
    Flag(
        "RecMetricModule.from_logits",
        lambda v: tmx.RecMetricModule(["click"], ["ne", "ctr"], from_logits=v, throughput=False),
        True,
        _module_steps,
        "from_logits",
    ),
    Flag(
        "RecMetricModule.throughput",
        lambda v: tmx.RecMetricModule(["click"], ["ne", "ctr"], throughput=v),
        False,
        _module_steps,
        "throughput",
    ),
]
FLAG_CASES = [(flag, form) for flag in FLAGS for form in _flag_forms(flag.value)]


@pytest.mark.parametrize(("flag", "form"), FLAG_CASES, ids=[f"{f}-{form}" for f, form in FLAG_CASES])
def test_a_flag_as_a_0_dim_bool_tensor_or_numpy_bool_is_the_python_bool(flag, form):
    """``from_logits=torch.tensor(True)`` was refused while ``num_bins=torch.tensor(100)`` was taken: a flag in
    any 0-dim form now builds the metric of the Python bool (state names, settings kept as ``bool``, values)."""
    _assert_built_as_the_python_value(flag, _flag_forms(flag.value)[form])
    metric = flag.build(_flag_forms(flag.value)[form])
    stored = getattr(metric, flag.name, None)
    if stored is not None and not isinstance(stored, tmx.Throughput):
        assert type(stored) is bool and stored is flag.value


FLAG_REFUSALS = {
    "int": 1,
    "int-zero": 0,
    "int-tensor": torch.tensor(1),
    "numpy-int": np.int64(1),
    "numpy-0d-int": np.asarray(1),
    "float-tensor": torch.tensor(1.0),
    "one-element-tensor": torch.tensor([True]),
    "one-element-array": np.array([True]),
    "meta-tensor": torch.tensor(True).to("meta"),
    "string": "True",
}
FLAG_REFUSAL_CASES = [
    (flag, form)
    for flag in FLAGS
    for form in FLAG_REFUSALS
    # `weighted` takes a sequence of one flag per task: a one-element bool tensor is that sequence
    if not (flag.name == "weighted" and form.startswith("one-element"))
]


@pytest.mark.parametrize(("flag", "form"), FLAG_REFUSAL_CASES, ids=[f"{f}-{form}" for f, form in FLAG_REFUSAL_CASES])
def test_a_flag_that_is_no_single_bool_is_refused_naming_it(flag, form):
    """Integers (in any form), tensors with dimensions and strings are no flags: a ``ValueError`` names the flag."""
    value = FLAG_REFUSALS[form]
    with pytest.raises(ValueError, match=rf"`{flag.name}`") as info:
        flag.build(value)
    assert repr(value) in str(info.value)


def _constructor_flags() -> set[str]:
    """``Class.flag`` for every parameter with a bool default of the public constructors (TorchMetrics' own left out)."""
    found = set()
    for module in (tmx, agg):
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls) or name == "InputDomains":  # a record of what a metric takes, no setting
                continue
            for parameter in inspect.signature(cls.__init__).parameters.values():
                if (isinstance(parameter.default, bool) or parameter.name == "from_logits") and (
                    parameter.name != "validate_args"
                ):
                    found.add(f"{name}.{parameter.name}")
    return found


def test_every_flag_of_the_public_constructors_is_tested():
    """A flag added to a public constructor joins ``FLAGS`` (its 0-dim forms tested) or this test fails."""
    tested = {flag.id for flag in FLAGS}
    assert _constructor_flags() - tested == set()


def _refusals(setting: Setting) -> dict[str, Any]:
    """Values refused whatever their form: bool, NaN, complex, tensors and arrays with dimensions."""
    value = setting.value
    refused: dict[str, Any] = {
        "bool": True,
        "tensor-bool": torch.tensor(True),
        "numpy-bool": np.bool_(True),
        "nan-tensor": torch.tensor(math.nan, dtype=torch.float64),
        "nan-numpy": np.float64(math.nan),
        "complex-tensor": torch.tensor(complex(value, 0)),
        "complex-numpy": np.complex128(value),
        "one-element-tensor": torch.tensor([value]),
        "one-element-array": np.array([value]),
        "two-element-tensor": torch.tensor([value, value]),
        "meta-tensor": torch.tensor(value).to("meta"),
    }
    if setting.integer:
        refused["whole-float-tensor"] = torch.tensor(float(value))  # 5.0 is no integer, as the Python float
    return refused


REFUSAL_CASES = [
    (setting, form)
    for setting in SETTINGS
    for form in _refusals(setting)
    # a float fill value of NaN is TorchMetrics' own (a NaN stays NaN): accepted as the Python float
    if not (setting.name == "nan_strategy" and form.startswith("nan"))
]


@pytest.mark.parametrize(("setting", "form"), REFUSAL_CASES, ids=[f"{s}-{f}" for s, f in REFUSAL_CASES])
def test_a_setting_that_is_no_single_real_number_is_refused_naming_it(setting, form):
    value = _refusals(setting)[form]
    with pytest.raises(ValueError, match=rf"`{setting.name}`") as info:
        setting.build(value)
    if setting.name != "nan_strategy":  # TorchMetrics' message prints the value with str()
        assert repr(value) in str(info.value) or setting.name in ("logit_range", "percentiles", "k")


@pytest.mark.parametrize(
    ("build", "bad", "message"),
    [
        (lambda v: tmx.WeightedPrecision(threshold=v), 1.5, r"Expected `threshold` to be a probability in \[0, 1\]"),
        (lambda v: tmx.NormalizedEntropy(eta=v), 0.5, r"Expected `eta` to be a float in \[0, 0\.5\)"),
        (lambda v: tmx.LogLoss(eta=v), -0.25, r"Expected `eta` to be a float in \[0, 0\.5\)"),
        (
            lambda v: tmx.RecalibratedNE(recalibration_coefficient=v),
            math.inf,
            r"Expected `recalibration_coefficient` to be a positive finite float",
        ),
        (
            lambda v: tmx.RecalibratedCalibration(recalibration_coefficient=v),
            0.0,
            r"Expected `recalibration_coefficient` to be a positive finite float",
        ),
        (lambda v: tmx.Throughput(window_seconds=v), math.inf, r"Expected `window_seconds` to be a positive finite"),
        (lambda v: tmx.HindsightTargetPR(target_precision=v), 1.25, r"Expected `target_precision` to be a float"),
        (lambda v: agg.Distribution(relative_accuracy=v), 1.0, r"Expected `relative_accuracy` in \(0, 1\)"),
        (lambda v: agg.Distribution(max_value=v), math.inf, r"Expected 0 < `min_value` < `max_value` < inf"),
        (lambda v: tmx.AUC(num_bins=v), 1, r"Expected `num_bins` to be None \(exact\) or an integer >= 2"),
        (lambda v: tmx.RecallAtK(k=v), 0, r"Expected `k` to be a positive integer"),
        (lambda v: tmx.Throughput(warmup_steps=v), -1, r"Expected `warmup_steps` to be a non-negative integer"),
        (lambda v: tmx.MultiLabelPrecision(num_labels=v), 63, r"Expected `num_labels` to be an integer in \[1, 62\]"),
        (lambda v: tmx.Windowed(tmx.CTR(), window_size=v), 0, r"Expected `window_size` to be a positive integer"),
    ],
    ids=lambda x: "" if callable(x) else str(x),
)
@pytest.mark.parametrize("form", ["python", "tensor", "numpy", "numpy-0d"])
def test_out_of_range_settings_keep_their_message_in_every_form(build, bad, message, form):
    """An out-of-range value is refused with the same message whatever its form (the value shown as given)."""
    given = bad if form == "python" else _forms(bad)["tensor" if form == "tensor" else form]
    with pytest.raises(ValueError, match=message) as info:
        build(given)
    assert repr(given) in str(info.value)


def test_ks_given_as_one_tensor_is_refused_with_the_sequence_hint():
    """A 0-dim tensor ``ks`` could not be iterated (a bare TypeError); it is told to write a sequence, as ``ks=10``."""
    for ks in (torch.tensor(10), np.asarray(10), np.int64(10)):
        with pytest.raises(ValueError, match=r"Expected `ks` to be a non-empty sequence .* \(write ks=\(10,\)\)\.$"):
            tmx.RankingMetrics(ks=ks)
    assert tmx.RankingMetrics(ks=torch.tensor([10])).ks == (10,)


def _torchrec_window(value: Any) -> Any:
    from torchmetrics_ext.torchrec_config import read_torchrec_config

    task = {"name": "t", "label_name": "label", "prediction_name": "pred", "weight_name": "weight"}
    config = {"rec_tasks": [task], "rec_metrics": {"ne": {"rec_tasks": [task], "window_size": value}}}
    return read_torchrec_config(config)


def _evaluate_batch_size(value: Any) -> Any:
    from torchmetrics_ext.evaluate.config import check_config

    return check_config({"batch_size": value})


# every integer setting, built with a whole float (a config's `1e3`); `as_int` refuses floats on purpose
WHOLE_FLOAT_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "window_size": lambda v: tmx.RecMetricModule(tasks=["ctr"], metrics=["ne"], window_size=v),
    "compute_interval_steps": lambda v: tmx.RecMetricModule(tasks=["ctr"], metrics=["ne"], compute_interval_steps=v),
    "num_tasks": lambda v: tmx.NormalizedEntropy(num_tasks=v),
    "k": lambda v: tmx.NDCG(k=v),
    "k-required": lambda v: tmx.RecallAtK(k=v),
    "k-of-ks": lambda v: tmx.RankingMetrics(ks=(v,)),
    "num_bins": lambda v: tmx.AUC(num_bins=v),
    "num_bins-reliability": lambda v: tmx.Reliability(num_bins=v),
    "warmup_steps": lambda v: tmx.Throughput(warmup_steps=v),
    "num_classes": lambda v: tmx.MulticlassRecallAtK(k=1, num_classes=v),
    "num_labels": lambda v: tmx.MultiLabelPrecision(num_labels=v),
    "num_thresholds": lambda v: tmx.HindsightTargetPR(num_thresholds=v),
    "window_size-windowed": lambda v: tmx.Windowed(tmx.CTR(), window_size=v),
    "num_segments": lambda v: tmx.Segmented(tmx.CTR(), num_segments=v),
    "k-registry": lambda v: __import__("torchmetrics_ext.registry").registry.build_metric("ndcg", k=v),
    "window_size-torchrec": _torchrec_window,
    "batch_size-evaluate": _evaluate_batch_size,
}


@pytest.mark.parametrize("setting", list(WHOLE_FLOAT_SETTINGS), ids=str)
@pytest.mark.parametrize("form", ["python", "numpy", "tensor"])
def test_an_integer_setting_given_a_whole_float_says_how_to_write_it(setting, form):
    """``window_size=1e3`` stays refused (no silent truncation of ``10.7``), and the message says to write 1000."""
    value = {"python": 8.0, "numpy": np.float64(8.0), "tensor": torch.tensor(8.0)}[form]
    name = setting.split("-")[0]
    with pytest.raises(ValueError, match=rf"`?{name}`?.*got {re.escape(repr(value))} \(a float: write 8, or int\("):
        WHOLE_FLOAT_SETTINGS[setting](value)
    WHOLE_FLOAT_SETTINGS[setting](8)  # the integer it stands for is accepted


@pytest.mark.parametrize("value", [2.5, math.inf, math.nan, True, "8"], ids=repr)
def test_a_float_that_is_not_whole_gets_no_integer_hint(value):
    """Only a whole float has an integer to suggest: 2.5, inf, NaN, a bool or text are refused as before."""
    with pytest.raises(ValueError, match=r"`num_bins`") as info:
        tmx.AUC(num_bins=value)
    assert "a float: write" not in str(info.value)


@pytest.mark.parametrize("setting", list(WHOLE_FLOAT_SETTINGS), ids=str)
@pytest.mark.parametrize("value", [-3.0, -0.0, 1e300, np.float64(-3.0), torch.tensor(1e30)], ids=repr)
def test_a_whole_float_outside_the_settings_range_gets_no_integer_to_try(setting, value):
    """``k=-3.0`` said "write -3" and ``k=1e300`` "write 1000000000000000052504760...": integers the setting
    refuses too (the second a 301-digit one). The hint names an integer only where it would be taken."""
    if setting == "warmup_steps" and value == 0:  # -0.0: 0 warm-up steps is a warm-up setting's integer
        pytest.skip("0 is a valid warmup_steps")
    with pytest.raises(ValueError) as info:
        WHOLE_FLOAT_SETTINGS[setting](value)
    assert "a float: write" not in str(info.value)
    assert repr(value) in str(info.value)


def test_a_whole_float_above_a_settings_maximum_gets_no_integer_to_try():
    """``num_labels`` is at most 62: ``100.0`` said "write 100", which is refused too; ``62.0`` still gets it."""
    with pytest.raises(ValueError) as info:
        tmx.MultiLabelPrecision(num_labels=100.0)
    assert "a float: write" not in str(info.value)
    with pytest.raises(ValueError, match=r"got 62\.0 \(a float: write 62, or int\(62\.0\)\)"):
        tmx.MultiLabelPrecision(num_labels=62.0)


def test_ks_given_as_one_whole_float_is_told_to_write_a_sequence_of_the_integer():
    """``ks=10.0`` is one cutoff, as a float: the hint is the sequence of the integer, not ``ks=10``."""
    with pytest.raises(ValueError, match=r"got 10\.0 \(a float: write ks=\(10,\)\)\.$"):
        tmx.RankingMetrics(ks=10.0)


def test_nan_strategy_as_an_integer_stays_refused_as_torchmetrics_refuses_it():
    """TorchMetrics takes a float fill value only: ``0`` is refused, and so are its tensor and NumPy forms."""
    for value in (0, torch.tensor(0), np.int64(0), "drop"):
        with pytest.raises(ValueError, match=r"Expected `nan_strategy` to be a float \(the value that replaces NaN\)"):
            agg.Mean(nan_strategy=value)
    assert type(agg.Mean(nan_strategy=np.str_("ignore")).nan_strategy) is str


@pytest.mark.parametrize("form", ["tensor", "numpy", "numpy-0d"])
def test_hugging_face_settings_take_the_same_forms(form):
    """``ignore_index`` and ``padding_value`` of the Hugging Face builders follow the metrics' rule."""
    logits = np.array([1.5, -0.5, 0.25, -2.0, 0.75, 3.0])
    labels = np.array([1, 0, -100, 0, 1, -100])
    prediction = SimpleNamespace(predictions=logits, label_ids=labels)
    expected = pointwise_compute_metrics(["ne", "ctr"], ignore_index=-100)(prediction)
    got = pointwise_compute_metrics(["ne", "ctr"], ignore_index=_forms(-100)[form])(prediction)
    assert got == expected
    scores = np.array([[0.9, 0.2, -10.0], [0.1, 0.8, 0.3]])
    relevant = np.array([0, 2])
    ranking = SimpleNamespace(predictions=scores, label_ids=relevant)
    expected = ranking_compute_metrics(ks=(1, 2), padding_value=-10.0)(ranking)
    assert ranking_compute_metrics(ks=(1, 2), padding_value=_forms(-10.0)[form])(ranking) == expected
    with pytest.raises(ValueError, match=r"Expected `ignore_index` to be None or a number"):
        pointwise_compute_metrics(["ne"], ignore_index=torch.tensor(math.nan))
    with pytest.raises(ValueError, match=r"Expected `ignore_index` to be None or a number"):
        pointwise_compute_metrics(["ne"], ignore_index=torch.tensor(True))
    with pytest.raises(ValueError, match=r"Expected `padding_value` to be a number"):
        ranking_compute_metrics(padding_value=torch.tensor(True))


# ----------------------------------------------------------------------------- sequences of values


def _sequence_forms(values: tuple[Any, ...]) -> dict[str, Any]:
    """Every accepted non-tuple form of the sequence ``values`` (all bools, all ints or all floats)."""
    kind = bool if all(type(v) is bool for v in values) else int if all(type(v) is int for v in values) else float
    numpy_item = {bool: np.bool_, int: np.int64, float: np.float64}[kind]
    forms: dict[str, Any] = {
        "list": list(values),
        "tensor": torch.tensor(values, dtype={bool: torch.bool, int: torch.int64, float: torch.float64}[kind]),
        "numpy": np.array(values),
        "numpy-scalars": [numpy_item(v) for v in values],
        "0-dim-tensors": tuple(torch.tensor(v) for v in values),
        "0-dim-arrays": [np.asarray(v) for v in values],
        "iterator": iter(values),
    }
    if kind is int:
        forms["tensor-int32"] = torch.tensor(values, dtype=torch.int32)
        forms["numpy-int16"] = np.array(values, dtype=np.int16)
    if kind is float and all(float(np.float32(v)) == v for v in values):  # float32 holds them exactly
        forms["tensor-float32"] = torch.tensor(values, dtype=torch.float32)
        forms["numpy-float32"] = np.array(values, dtype=np.float32)
    return forms


def _sequence_refusals(values: tuple[Any, ...]) -> dict[str, Any]:
    """Forms refused whatever the setting: 2-D, no data, and items of another kind than ``values``'."""
    refused: dict[str, Any] = {
        "2-d-tensor": torch.tensor([values]),
        "2-d-array": np.array([values]),
        "column-tensor": torch.tensor(values).reshape(-1, 1),
        "meta-tensor": torch.tensor(values).to("meta"),
        "complex-tensor": torch.tensor(values, dtype=torch.complex128),
        "tensor-items-1-element": [torch.tensor([v]) for v in values],
    }
    if all(type(v) is bool for v in values):
        refused["int-tensor"] = torch.tensor([int(v) for v in values])
        refused["float-array"] = np.array([float(v) for v in values])
        return refused
    refused["bool-tensor"] = torch.ones(len(values), dtype=torch.bool)
    refused["bool-array"] = np.ones(len(values), dtype=np.bool_)
    refused["numpy-bools"] = [np.bool_(True)] * len(values)
    if all(type(v) is int for v in values):
        refused["whole-float-tensor"] = torch.tensor(values, dtype=torch.float64)  # (2.0, 5.0): no integers
        refused["fractional-array"] = np.array(values, dtype=np.float64) + 0.5
    return refused


def _two_task_values(rng: np.random.Generator, n: int = 30) -> tuple[tuple[Any, ...], ...]:
    return tuple((torch.tensor(rng.normal(size=(2, n))), torch.tensor(rng.uniform(0.5, 2.0, (2, n)))) for _ in range(2))


SEQUENCES = [
    Setting(
        "Distribution.percentiles", lambda v: agg.Distribution(percentiles=v), (5.0, 50.0, 99.5), _values, "percentiles"
    ),
    Setting("AUC.logit_range", lambda v: tmx.AUC(num_bins=50, logit_range=v), (-4.0, 6.5), _pointwise, "logit_range"),
    Setting(
        "AUPRC.logit_range", lambda v: tmx.AUPRC(num_bins=50, logit_range=v), (-4.0, 6.5), _pointwise, "logit_range"
    ),
    Setting("RankingMetrics.ks", lambda v: tmx.RankingMetrics(ks=v), (2, 5), _ranking, "ks", integer=True),
    Setting("Reliability.edges", lambda v: tmx.Reliability(edges=v), (0.0, 0.25, 0.5, 1.0), _pointwise, "edges"),
    Setting(
        "TensorWeightedAverage.weighted",
        lambda v: tmx.TensorWeightedAverage(num_tasks=2, weighted=v),
        (True, False),
        _two_task_values,
        "weighted",
    ),
]
SEQUENCE_CASES = [(setting, form) for setting in SEQUENCES for form in _sequence_forms(setting.value)]


@pytest.mark.parametrize(("setting", "form"), SEQUENCE_CASES, ids=[f"{s}-{f}" for s, f in SEQUENCE_CASES])
def test_a_sequence_setting_as_a_tensor_or_array_is_the_tuple(setting, form):
    """``percentiles=torch.tensor([5., 50.])`` was refused while a tuple of 0-dim tensors was taken: every form
    builds the metric of the tuple (state names, settings kept as the same Python tuple, repr, pickle,
    checkpoint, values)."""
    given = _sequence_forms(setting.value)[form]
    _assert_built_as_the_python_value(setting, given)
    stored = getattr(setting.build(_sequence_forms(setting.value)[form]), setting.name, None)
    if isinstance(stored, tuple):  # kept as the Python tuple, items of the Python types
        expected = getattr(setting.build(setting.value), setting.name)
        assert stored == expected and [type(v) for v in stored] == [type(v) for v in expected]


SEQUENCE_REFUSAL_CASES = [(setting, form) for setting in SEQUENCES for form in _sequence_refusals(setting.value)]


@pytest.mark.parametrize(
    ("setting", "form"), SEQUENCE_REFUSAL_CASES, ids=[f"{s}-{f}" for s, f in SEQUENCE_REFUSAL_CASES]
)
def test_a_sequence_setting_that_is_no_flat_sequence_of_its_kind_is_refused_naming_it(setting, form):
    """A 2-D tensor, a tensor without data, complex items, bools where numbers are wanted, floats (whole or
    not) where integers are wanted, integers where bools are wanted: a ``ValueError`` naming the setting."""
    with pytest.raises(ValueError, match=rf"`{setting.name}`"):
        setting.build(_sequence_refusals(setting.value)[form])


def _sequence_settings_of_the_public_constructors() -> set[str]:
    """``Class.param`` for every parameter of a public constructor annotated as a sequence of numbers or bools."""
    found = set()
    for module in (tmx, agg):
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls):
                continue
            for parameter in inspect.signature(cls.__init__).parameters.values():
                if re.search(r"(Sequence|tuple|list)\[(float|int|bool)", str(parameter.annotation)):
                    found.add(f"{name}.{parameter.name}")
    return found


def test_every_sequence_setting_of_the_public_constructors_is_tested():
    """A sequence-of-numbers setting added to a public constructor joins ``SEQUENCES`` or this test fails."""
    found = _sequence_settings_of_the_public_constructors()
    assert found >= {"Distribution.percentiles", "AUC.logit_range", "RankingMetrics.ks"}  # the guard sees them
    assert found - {setting.id for setting in SEQUENCES} == set()


def test_functional_sequence_settings_take_the_same_forms():
    """The functional twins read their sequence settings through the same rule: the tuple's values."""
    rng = np.random.default_rng(3)
    preds, target = torch.tensor(rng.uniform(0.02, 0.98, 80)), torch.tensor(rng.integers(0, 2, 80))
    scores, relevance = _ranking(rng)[0]
    for form in ("tensor", "numpy", "numpy-scalars", "tensor-float32"):
        pair = _sequence_forms((-4.0, 6.5))[form]
        for fn in (tmf.auc, tmf.auprc):
            _assert_same(
                fn(preds, target, num_bins=50, logit_range=pair),
                fn(preds, target, num_bins=50, logit_range=(-4.0, 6.5)),
            )
        for fn in (tmf.roc_curve, tmf.precision_recall_curve):
            _assert_same(
                fn(preds, target, num_bins=50, logit_range=_sequence_forms((-4.0, 6.5))[form]),
                fn(preds, target, num_bins=50, logit_range=(-4.0, 6.5)),
            )
        edges = _sequence_forms((0.0, 0.25, 0.5, 1.0))[form]
        _assert_same(
            tmf.reliability(preds, target, edges=edges), tmf.reliability(preds, target, edges=(0.0, 0.25, 0.5, 1.0))
        )
        percentiles = _sequence_forms((5.0, 50.0, 99.5))[form]
        _assert_same(
            tmf.distribution(preds, percentiles=percentiles), tmf.distribution(preds, percentiles=(5.0, 50.0, 99.5))
        )
    for form in ("tensor", "numpy", "numpy-scalars", "tensor-int32"):
        got = tmf.ranking_metrics(scores, relevance, ks=_sequence_forms((2, 5))[form], metrics=("ndcg", "mrr"))
        _assert_same(got, tmf.ranking_metrics(scores, relevance, ks=(2, 5), metrics=("ndcg", "mrr")))
    values, weights = _two_task_values(rng)[0]
    for form in ("tensor", "numpy", "numpy-scalars"):
        got = tmf.tensor_weighted_average(values, weights, weighted=_sequence_forms((True, False))[form])
        _assert_same(got, tmf.tensor_weighted_average(values, weights, weighted=(True, False)))
    with pytest.raises(ValueError, match=r"`percentiles`"):
        tmf.distribution(preds, percentiles=torch.tensor([[5.0, 50.0]]))
    with pytest.raises(ValueError, match=r"`logit_range`"):
        tmf.auc(preds, target, num_bins=50, logit_range=torch.tensor([True, True]))


@pytest.mark.parametrize("form", ["tensor", "numpy", "numpy-scalars", "0-dim-tensors"])
def test_hugging_face_sequence_settings_take_the_same_forms(form):
    """``ks`` and a sequence ``padding_value`` of ``ranking_compute_metrics`` follow the sequence rule."""
    scores = np.array([[0.9, 0.2, -10.0], [0.1, -100.0, 0.8]])
    ranking = SimpleNamespace(predictions=scores, label_ids=np.array([1, 2]))
    expected = ranking_compute_metrics(ks=(1, 2), padding_value=(-10.0, -100.0))(ranking)
    got = ranking_compute_metrics(
        ks=_sequence_forms((1, 2))[form], padding_value=_sequence_forms((-10.0, -100.0))[form]
    )
    assert got(ranking) == expected
    for bad in (torch.tensor([[-10.0], [-100.0]]), torch.tensor([True, False]), [np.bool_(True)]):
        with pytest.raises(ValueError, match=r"Expected `padding_value` to be a (number|flat sequence)"):
            ranking_compute_metrics(padding_value=bad)


# ----------------------------------------------------------------------------- strings


STRINGS = [
    Setting("AUC.bin_space", lambda v: tmx.AUC(num_bins=50, bin_space=v), "probability", _pointwise, "bin_space"),
    Setting("AUPRC.bin_space", lambda v: tmx.AUPRC(num_bins=50, bin_space=v), "probability", _pointwise, "bin_space"),
    Setting(
        "GroupedAUC.average_groups", lambda v: tmx.GroupedAUC(average_groups=v), "all", _segments, "average_groups"
    ),
    Setting(
        "GroupedAUPRC.average_groups", lambda v: tmx.GroupedAUPRC(average_groups=v), "all", _segments, "average_groups"
    ),
    Setting("WeightedNMSE.baseline", lambda v: tmx.WeightedNMSE(baseline=v), "mean", _pointwise, "baseline"),
    Setting("WeightedNRMSE.baseline", lambda v: tmx.WeightedNRMSE(baseline=v), "mean", _pointwise, "baseline"),
    Setting(
        "SessionPrecisionAtK.average", lambda v: tmx.SessionPrecisionAtK(k=2, average=v), "micro", _sessions, "average"
    ),
    Setting("SessionRecallAtK.average", lambda v: tmx.SessionRecallAtK(k=2, average=v), "micro", _sessions, "average"),
    Setting("LogLoss.unit", lambda v: tmx.LogLoss(unit=v), "bits", _pointwise, "unit"),
    *[
        Setting(
            f"{cls.__name__}.empty_target_action",
            lambda v, cls=cls: cls(k=3, empty_target_action=v),
            "zero",
            _ranking,
            "empty_target_action",
        )
        for cls in (tmx.NDCG, tmx.MRR, tmx.MAP, tmx.RecallAtK, tmx.PrecisionAtK, tmx.HitRate, tmx.F1AtK)
    ],
    Setting(
        "RankingMetrics.empty_target_action",
        lambda v: tmx.RankingMetrics(ks=(2,), empty_target_action=v),
        "zero",
        _ranking,
        "empty_target_action",
    ),
    Setting(
        "RankingMetrics.metrics", lambda v: tmx.RankingMetrics(ks=(2,), metrics=(v, "mrr")), "ndcg", _ranking, "metrics"
    ),
    Setting("Mean.nan_strategy", lambda v: agg.Mean(nan_strategy=v), "ignore", _values_with_nan, "nan_strategy"),
    Setting("Sum.nan_strategy", lambda v: agg.Sum(nan_strategy=v), "ignore", _values_with_nan, "nan_strategy"),
    Setting(
        "MultiLabelPrecision.label_names",
        lambda v: tmx.MultiLabelPrecision(num_labels=3, label_names=[v, "b", "c"]),
        "a",
        _codes,
        "label_names",
    ),
    Setting(
        "TensorWeightedAverage.tensor_name",
        lambda v: tmx.TensorWeightedAverage(tensor_name=v),
        "x",
        _values,
        "tensor_name",
    ),
    Setting(
        "RecMetricModule.key_style",
        lambda v: tmx.RecMetricModule(["click"], ["ne", "ctr"], key_style=v, throughput=False),
        "torchrec",
        _module_steps,
        "key_style",
    ),
    Setting(
        "RecMetricModule.prefix",
        lambda v: tmx.RecMetricModule(["click"], ["ne"], prefix=v, throughput=False),
        "train/",
        _module_steps,
        "prefix",
    ),
    Setting(
        "RecTaskInfo.name",
        lambda v: tmx.RecMetricModule([tmx.RecTaskInfo(v)], ["ne"], throughput=False),
        "click",
        _module_steps,
        "tasks",
    ),
]


def _string_forms(text: str) -> dict[str, Any]:
    """``text`` as NumPy writes it, and as a config's enum member (``str()`` of a ``(str, Enum)`` one is not ``text``)."""
    mixed = enum.Enum("Choice", {"VALUE": text}, type=str)
    return {
        "numpy-str": np.str_(text),
        "numpy-0d": np.asarray(text),
        "str-enum": mixed.VALUE,
        "StrEnum": enum.StrEnum("Choice", {"VALUE": text}).VALUE,
    }


def _strings_in(value: Any) -> list[Any]:
    """The strings a stored setting holds (itself, a tuple's or list's items, a RecTaskInfo's fields)."""
    if isinstance(value, (tuple, list)):
        return [s for item in value for s in _strings_in(item)]
    if isinstance(value, tmx.RecTaskInfo):
        return [getattr(value, f) for f in ("name", "label_name", "prediction_name", "weight_name")]
    return [value]


STRING_CASES = [(setting, form) for setting in STRINGS for form in ("numpy-str", "numpy-0d", "str-enum", "StrEnum")]


@pytest.mark.parametrize(("setting", "form"), STRING_CASES, ids=[f"{s}-{f}" for s, f in STRING_CASES])
def test_a_string_setting_as_a_numpy_string_is_the_python_string(setting, form):
    """``bin_space=np.asarray("probability")`` was kept as an array (a ``TypeError`` deep inside for ranking
    ``metrics``): a NumPy string, 0-dim array included, builds the metric of the Python string and is stored
    as a plain ``str`` (repr, pickle, checkpoint, values the same). So does a member of a config's
    ``class Unit(str, Enum)``, which every string setting took before NumPy strings were read (its ``str()``,
    ``"Unit.BITS"``, was then refused), and a ``StrEnum``'s."""
    given = _string_forms(setting.value)[form]
    _assert_built_as_the_python_value(setting, given)
    metric, reference = setting.build(_string_forms(setting.value)[form]), setting.build(setting.value)
    stored, expected = getattr(metric, setting.name), getattr(reference, setting.name)
    assert stored == expected
    assert all(type(s) is str for s in _strings_in(stored) if s is not None)


@pytest.mark.parametrize("setting", STRINGS, ids=str)
def test_a_string_setting_that_is_no_known_string_is_refused_naming_it(setting):
    """A 1-D string array (several strings for one) or a number is refused, naming the setting."""
    if setting.name in ("tasks", "label_names", "metrics"):  # sequences of names: a 1-D array is one of them
        return
    for bad in (np.array([setting.value]), 3, b"x"):
        with pytest.raises(ValueError, match=rf"`{setting.name}`"):
            setting.build(bad)


@pytest.mark.parametrize("one", ["ndcg", np.str_("ndcg"), np.asarray("ndcg")], ids=repr)
def test_one_name_as_ranking_metrics_is_refused_with_the_sequence_hint(one):
    """``metrics=np.asarray("ndcg")`` raised a bare ``TypeError`` (iteration over a 0-d array): one name, in any
    form, is told to be written as a sequence, as ``metrics="ndcg"`` is; a 1-D array of names is that sequence."""
    hint = r"\(a sequence of them: metrics=\('ndcg',\)\)\.$"
    with pytest.raises(ValueError, match=r"Expected `metrics` to be a non-empty sequence of names .*" + hint):
        tmx.RankingMetrics(metrics=one)
    with pytest.raises(ValueError, match=r"Expected `metrics` to be a non-empty sequence of names .*" + hint):
        tmf.ranking_metrics(torch.rand(2, 3), torch.ones(2, 3), metrics=one)
    with pytest.raises(ValueError, match=r"write metrics=\('ne',\)"):
        pointwise_compute_metrics(np.asarray("ne") if isinstance(one, np.ndarray) else "ne")
    assert tmx.RankingMetrics(metrics=np.array(["ndcg", "mrr"])).metrics == ("ndcg", "mrr")
    assert [type(m) for m in tmx.RankingMetrics(metrics=np.array(["ndcg", "mrr"])).metrics] == [str, str]


# ----------------------------------------------------------------------------- the helpers themselves


FINITE_OR_NOT = st.floats(allow_nan=True, allow_infinity=True, width=64)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=60, deadline=None)
@given(FINITE_OR_NOT)
def test_as_real_reads_every_form_of_a_float_as_that_float(value):
    for form in (torch.tensor(value, dtype=torch.float64), np.float64(value), np.asarray(value)):
        got = as_real(form)
        assert type(got) is float
        assert got == value or (math.isnan(got) and math.isnan(value))
        assert as_int(form) is None  # a float is no integer, whole or not


@settings(max_examples=60, deadline=None)
@given(INT64)
def test_as_int_and_as_real_read_every_form_of_an_int_as_that_int(value):
    for form in (torch.tensor(value), np.int64(value), np.asarray(value, dtype=np.int64)):
        assert type(as_int(form)) is int and as_int(form) == value
        assert type(as_real(form)) is int and as_real(form) == value


@pytest.mark.parametrize(
    "value",
    [
        True,
        np.bool_(False),
        torch.tensor(True),
        np.asarray(True),
        1j,
        np.complex64(1),
        torch.tensor(1 + 0j),
        torch.tensor([1.0]),
        np.array([1]),
        torch.zeros(1, 1),
        torch.tensor(1.0, device="meta"),
        "1",
        np.asarray("1"),
        None,
    ],
    ids=repr,
)
def test_the_helpers_refuse_what_is_no_single_real_number(value):
    assert as_real(value) is None and as_int(value) is None


@pytest.mark.parametrize(
    "value",
    [
        np.timedelta64(300),
        np.timedelta64(300, "s"),
        np.asarray(np.timedelta64(300)),
        np.asarray(np.timedelta64(3, "s")),
    ],
    ids=repr,
)
def test_numpy_durations_are_no_number(value):
    """NumPy files ``timedelta64`` under its signed integers: ``as_int`` took ``np.timedelta64(300)`` for 300
    and raised int()'s own ``TypeError`` (naming no setting) on ``np.timedelta64(300, "s")``."""
    assert as_real(value) is None and as_int(value) is None
    with pytest.raises(ValueError, match="Expected `num_bins` to be None"):
        tmx.AUC(num_bins=value)


@pytest.mark.parametrize("value", [True, False])
def test_as_bool_reads_every_form_of_a_flag_as_that_bool(value):
    for form in (value, np.bool_(value), torch.tensor(value), np.asarray(value)):
        assert as_bool(form) is value
    for refused in (int(value), torch.tensor(int(value)), np.int8(value), torch.tensor([value]), np.array([value])):
        assert as_bool(refused) is None
    assert as_real(torch.tensor(value)) is None and as_int(np.asarray(value)) is None  # a flag is no number


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=0.5, exclude_max=True))
def test_thresholds_and_etas_name_their_states_as_the_python_number(threshold, eta):
    """Any valid ``threshold`` and ``eta`` given as a float64 tensor give the Python number's state names."""
    for form in (torch.tensor(threshold, dtype=torch.float64), np.asarray(threshold)):
        assert list(tmx.WeightedPrecision(threshold=form).state_dict()) == list(
            tmx.WeightedPrecision(threshold=threshold).state_dict()
        )
    assert list(tmx.NormalizedEntropy(eta=torch.tensor(eta, dtype=torch.float64)).state_dict()) == list(
        tmx.NormalizedEntropy(eta=eta).state_dict()
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", "a"), (np.str_("a"), "a"), (np.asarray("a"), "a"), (b"a", None), (np.array(["a"]), None), (1, None)],
    ids=repr,
)
def test_as_str_reads_numpy_strings_as_python_strings(value, expected):
    got = as_str(value)
    assert got == expected and (got is None or type(got) is str)


def test_sequence_items_reads_one_dim_tensors_and_arrays_as_python_values():
    assert sequence_items("x", torch.tensor([1, 2])) == [1, 2]
    assert [type(v) for v in sequence_items("x", torch.tensor([0.5], dtype=torch.float32)) or ()] == [float]
    assert sequence_items("x", np.array(["a", "b"])) == ["a", "b"]
    for one in ("ab", b"ab", np.asarray("ab"), torch.tensor(1), np.asarray(1), 1, None):
        assert sequence_items("x", one) is None
    with pytest.raises(ValueError, match=r"Expected `x` to be a flat sequence .* got a 2-D array of shape \(1, 1\)"):
        sequence_items("x", np.zeros((1, 1)))


def test_a_set_is_taken_sorted_so_every_process_agrees():
    """A set has no order (a set of strings iterates differently in every process): taken sorted."""
    assert sequence_items("ks", {10, 1, 5}) == [1, 5, 10]
    assert sequence_items("metrics", frozenset({"ndcg", "mrr", "map"})) == ["map", "mrr", "ndcg"]
    assert tmx.RankingMetrics(metrics={"ndcg", "mrr"}).metrics == tmx.RankingMetrics(metrics=("mrr", "ndcg")).metrics
    with pytest.raises(ValueError, match=r"Expected `x` to be a tuple or a list \(a set has no order"):
        sequence_items("x", {1, "a"})


def test_a_mapping_is_no_sequence_setting_its_values_would_be_dropped():
    """A mapping iterates as its keys: ``RankingMetrics(metrics={"ndcg": {"exponential_gain": True}})`` built NDCG
    with linear gains and ``ranking_compute_metrics(metrics={"recall": "Recall"})`` dropped the display name, silently.
    Every sequence setting refuses it, naming the setting."""
    from torchmetrics_ext.integrations.huggingface import ranking_compute_metrics

    with pytest.raises(ValueError, match=r"^Expected `x` to be a flat sequence .*got a mapping \{1: 2\}: its values"):
        sequence_items("x", {1: 2})
    with pytest.raises(ValueError, match=r"^Expected `metrics` to be a flat sequence .*got a mapping"):
        tmx.RankingMetrics(ks=(1,), metrics={"ndcg": {"exponential_gain": True}})
    with pytest.raises(ValueError, match=r"^Expected `ks` to be a flat sequence .*got a mapping"):
        tmx.RankingMetrics(ks={5: "top 5"}, metrics=("ndcg",))
    with pytest.raises(ValueError, match=r"^Expected `metrics` to be a flat sequence .*got a mapping"):
        ranking_compute_metrics(metrics={"recall": "Recall"})
