"""TorchRec's sum-statistic metrics (counters, NE variants, R²/NMSE) through the shared harness.

References are numpy formulas written here and scikit-learn's ``r2_score``; none calls the package.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_pointwise import binary_data
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.warnings import PrecisionLossWarning

N = 900


def _w(p, w):
    return np.ones_like(p) if w is None else w


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _probs(p, logits):
    return _sigmoid(p) if logits else p


# ----------------------------------------------------------------------------- references


def ref_sum_weights(p, w):
    return _w(p, w).sum()


def ref_positives(p, y, w):
    return (_w(p, w) * y).sum()


def ref_pred_sum(p, w):
    return (_w(p, w) * p).sum()


def ref_serving(p, w):
    return float(np.count_nonzero(_w(p, w)))


def ref_missing(p, y, w, unweighted=False):
    return ((np.ones_like(p) if unweighted or w is None else w) * np.isnan(y)).sum()


def ref_label_average(p, y, w):
    return np.average(y, weights=_w(p, w))


def _base_entropy_sum(y, w):
    total, pos = w.sum(), (w * y).sum()
    base = pos / total
    return -(pos * np.log(base) + (total - pos) * np.log(1 - base))


def ref_ne_positive(p, y, w, logits=False):
    w = _w(p, w)
    q = np.clip(_probs(p, logits), 1e-12, 1 - 1e-12)
    return (w * y * -np.log(q)).sum() / _base_entropy_sum(y, w)


def ref_cali_free(p, y, w, logits=False, torchrec=False):
    w = _w(p, w)
    q = np.clip(_probs(p, logits), 1e-12, 1 - 1e-12)
    ce = -(w * (y * np.log(q) + (1 - y) * np.log(1 - q))).sum()
    pbar = (w * _probs(p, logits)).sum() / w.sum()
    constant = -(w * (y * np.log(pbar) + (1 - y) * np.log(1 - pbar))).sum()
    if torchrec:  # TorchRec 1.9: NE over the summed bits of the constant prediction
        return (ce / _base_entropy_sum(y, w)) / (constant / np.log(2))
    return ce / constant


def _recalibrated(p, c, logits):
    q = _probs(p, logits)
    return c * q / (c * q + 1 - q)


def ref_recal_ne(p, y, w, c=1.0, logits=False):
    w = _w(p, w)
    q = np.clip(_recalibrated(p, c, logits), 1e-12, 1 - 1e-12)
    return -(w * (y * np.log(q) + (1 - y) * np.log(1 - q))).sum() / _base_entropy_sum(y, w)


def ref_recal_calibration(p, y, w, c=1.0, logits=False):
    w = _w(p, w)
    return (w * _recalibrated(p, c, logits)).sum() / (w * y).sum()


def ref_r2(p, y, w):
    return skm.r2_score(y, p, sample_weight=w)


def ref_nmse(p, y, w, baseline="one", root=False):
    w = _w(p, w)
    c = 1.0 if baseline == "one" else np.average(y, weights=w)
    value = (w * (p - y) ** 2).sum() / (w * (y - c) ** 2).sum()
    return math.sqrt(value) if root else value


def ref_tensor_average(values, w, flags=None):
    if values.ndim == 1:
        return np.average(values, weights=_w(values, w))
    out = []
    for t, row in enumerate(values):
        wt = None if w is None else (w[t] if w.ndim == 2 else w)
        out.append(np.average(row, weights=None if (flags and not flags[t]) or wt is None else wt))
    return np.asarray(out)


def missing_data(rng, num_tasks=None, weights=None):
    out = binary_data(rng, num_tasks=num_tasks, weights=weights)
    target = out["target"].double()
    target[torch.from_numpy(rng.random(target.shape) < 0.2)] = float("nan")
    out["target"] = target
    return out


def values_data(rng, num_tasks=None, weights=None):
    shape = (N,) if num_tasks is None else (num_tasks, N)
    return {"values": torch.tensor(rng.normal(size=shape) * 2 + 1), "weights": H.random_weights(rng, weights, shape)}


# ----------------------------------------------------------------------------- cases

PYW, PW = ("preds", "target", "weights"), ("preds", "weights")


def _case(cid, cls, fn, ref, keys=PYW, data=binary_data, data_kw=None, kw=None, ref_kw=None, num_tasks=None):
    kw = dict(kw or {})
    metric_kw = dict(kw, **({"num_tasks": num_tasks} if num_tasks else {}))
    return H.MetricCase(
        id=cid,
        metric=partial(cls, **metric_kw),
        data=partial(data, num_tasks=num_tasks, **(data_kw or {})),
        reference=H.per_task(ref, *keys, **(ref_kw or {})),
        functional=partial(fn, **kw),
        dtype_keys=("preds",) if "preds" in keys else ("values",),
    )


def _variants(name, cls, fn, ref, keys=PYW, real=False, logits=False, data=binary_data, kw=None, ref_kw=None):
    base = {"real": True} if real else {}
    out = [
        _case(f"{name}-w", cls, fn, ref, keys, data, dict(base, weights="task"), kw, ref_kw),
        _case(f"{name}-3task-w", cls, fn, ref, keys, data, dict(base, weights="task"), kw, ref_kw, num_tasks=3),
        _case(f"{name}-3task-shared-w", cls, fn, ref, keys, data, dict(base, weights="shared"), kw, ref_kw, 3),
    ]
    if logits:
        lkw, lref = dict(kw or {}, from_logits=True), dict(ref_kw or {}, logits=True)
        out.append(_case(f"{name}-logits-w", cls, fn, ref, keys, data, {"weights": "task", "logits": True}, lkw, lref))
    return out


_ALL = [
    *_variants("sum_weights", tmx.SumWeights, tmf.sum_weights, ref_sum_weights, PW, real=True),
    *_variants("positives", tmx.NumPositiveSamples, tmf.num_positive_samples, ref_positives),
    *_variants("pred_sum", tmx.WeightedSumPredictions, tmf.weighted_sum_predictions, ref_pred_sum, PW, real=True),
    *_variants("serving", tmx.NumServingExamples, tmf.num_serving_examples, ref_serving, PW),
    *_variants("missing", tmx.NumMissingLabels, tmf.num_missing_labels, ref_missing, data=missing_data),
    *_variants(
        "missing-unweighted",
        tmx.NumMissingLabels,
        tmf.num_missing_labels,
        ref_missing,
        data=missing_data,
        kw={"count_zero_weight": True},
        ref_kw={"unweighted": True},
    ),
    *_variants("label_avg", tmx.LabelAverage, tmf.label_average, ref_label_average, real=True),
    *_variants(
        "tensor_avg",
        tmx.TensorWeightedAverage,
        tmf.tensor_weighted_average,
        ref_tensor_average,
        ("values", "weights"),
        data=values_data,
    ),
    H.MetricCase(
        id="tensor_avg-mixed-3task-w",
        metric=partial(tmx.TensorWeightedAverage, num_tasks=3, weighted=[True, False, True]),
        data=partial(values_data, num_tasks=3, weights="task"),
        reference=lambda d: ref_tensor_average(d["values"], d["weights"], [True, False, True]),
        functional=partial(tmf.tensor_weighted_average, weighted=[True, False, True]),
        dtype_keys=("values",),
    ),
    *_variants("ne_positive", tmx.NEPositive, tmf.ne_positive, ref_ne_positive, logits=True),
    *_variants("cali_free", tmx.CalibrationFreeNE, tmf.calibration_free_ne, ref_cali_free, logits=True),
    *_variants(
        "cali_free-torchrec",
        tmx.CalibrationFreeNE,
        tmf.calibration_free_ne,
        ref_cali_free,
        kw={"torchrec_scaling": True},
        ref_kw={"torchrec": True},
    ),
    *_variants(
        "recal_ne",
        tmx.RecalibratedNE,
        tmf.recalibrated_ne,
        ref_recal_ne,
        logits=True,
        kw={"recalibration_coefficient": 0.25},
        ref_kw={"c": 0.25},
    ),
    *_variants(
        "recal_cal",
        tmx.RecalibratedCalibration,
        tmf.recalibrated_calibration,
        ref_recal_calibration,
        logits=True,
        kw={"recalibration_coefficient": 0.25},
        ref_kw={"c": 0.25},
    ),
    *_variants("r2", tmx.WeightedR2, tmf.weighted_r2, ref_r2, real=True),
    *_variants("nmse", tmx.WeightedNMSE, tmf.weighted_nmse, ref_nmse, real=True),
    *_variants(
        "nmse-mean",
        tmx.WeightedNMSE,
        tmf.weighted_nmse,
        ref_nmse,
        real=True,
        kw={"baseline": "mean"},
        ref_kw={"baseline": "mean"},
    ),
    *_variants("nrmse", tmx.WeightedNRMSE, tmf.weighted_nrmse, ref_nmse, real=True, ref_kw={"root": True}),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
# serving / missing counts ignore preds: their dtype checks test low-precision weights and labels
DDP_IDS = [i for i in IDS if i.endswith("-3task-w")]

globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=[i for i in IDS if i.endswith("-3task-w")],
        collection=[i for i in IDS if i.endswith("-3task-w") or i.endswith("-logits-w")],
        # counters are sums, which scale with the weights: only the ratio metrics are scale-invariant
        invariances=[
            i
            for i in IDS
            if i.endswith("-w")
            and not i.startswith(("sum_weights", "positives", "pred_sum", "serving", "missing", "cali_free-torchrec"))
            and i != "tensor_avg-mixed-3task-w"  # its unweighted task ignores weights by design
        ],
        ddp=DDP_IDS,
        device_path=[i for i in IDS if i.endswith(("-3task-shared-w", "-logits-w"))],
        ddp_scenarios=[i for i in IDS if i not in DDP_IDS] + ["cali_free-3task-w"],
    )
)


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    ("positives-w", {"preds": torch.rand(2), "target": torch.tensor([0.0, 2.0])}, ValueError, r"`target`.*\[0, 1\]"),
    ("positives-w", {"preds": torch.rand(2)}, TypeError, "target"),
    ("sum_weights-w", {"preds": torch.rand(2), "weights": torch.tensor([1.0, -1.0])}, ValueError, "non-negative"),
    ("pred_sum-w", {"preds": torch.tensor([0.1, float("nan")])}, ValueError, "finite"),
    ("serving-3task-w", {"preds": torch.rand(2, 4)}, ValueError, "num_tasks=3"),
    ("missing-w", {"preds": torch.rand(2), "target": torch.tensor([0, 1])}, TypeError, "floating point"),
    ("missing-w", {"preds": torch.rand(2), "target": torch.tensor([0.0, float("inf")])}, ValueError, "inf"),
    ("missing-w", {"preds": torch.rand(2), "target": torch.rand(3)}, ValueError, "same shape"),
    ("missing-w", {"preds": torch.rand(2)}, TypeError, "target"),
    ("label_avg-w", {"preds": torch.rand(2), "target": torch.tensor([0.0, float("nan")])}, ValueError, "`target`"),
    # TensorWeightedAverage's errors name its argument `values`
    ("tensor_avg-w", {"values": torch.tensor([0.0, float("inf")])}, ValueError, "`values` to be finite"),
    ("tensor_avg-w", {"values": torch.tensor([1, 2])}, TypeError, "`values` to be a floating point tensor"),
    ("tensor_avg-w", {"values": [0.5, 1.0]}, TypeError, "`values` to be a torch.Tensor"),
    ("tensor_avg-3task-w", {"values": torch.zeros(5)}, ValueError, r"`values` of shape \(T, N\) with num_tasks=3"),
    (
        "tensor_avg-3task-w",
        {"values": torch.rand(3, 2), "weights": torch.ones(2, device="meta")},
        ValueError,
        r"`weights` on the same device as `values` \(cpu\)",
    ),
    ("tensor_avg-3task-w", {"values": torch.rand(3, 4), "weights": torch.ones(5)}, ValueError, "`weights` of shape"),
    ("ne_positive-w", {"preds": torch.tensor([0.1, 1.5]), "target": torch.tensor([0, 1])}, ValueError, "from_logits"),
    ("cali_free-w", {"preds": torch.tensor([0.1, 0.5]), "target": torch.tensor([0, 3])}, ValueError, "`target`"),
    ("recal_ne-w", {"preds": torch.tensor([1, 0]), "target": torch.tensor([0, 1])}, TypeError, "floating point"),
    ("recal_cal-w", {"preds": torch.rand(2), "target": torch.rand(3)}, ValueError, "same shape"),
    ("r2-w", {"preds": torch.tensor([0.1, float("nan")]), "target": torch.rand(2)}, ValueError, "finite"),
    ("nmse-3task-w", {"preds": torch.rand(2, 3), "target": torch.rand(2, 3)}, ValueError, "num_tasks=3"),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), BAD_INPUTS)
def test_bad_input_rejected_and_state_untouched(cid, bad, exc, match):
    H.check_rejects(CASES[cid], dict({"weights": None}, **bad), exc, match)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: tmx.NumMissingLabels(count_zero_weight=1), "count_zero_weight"),
        (lambda: tmx.TensorWeightedAverage(num_tasks=2, weighted=[True]), "weighted"),
        (lambda: tmx.TensorWeightedAverage(num_tasks=0), "num_tasks"),
        (lambda: tmx.TensorWeightedAverage(tensor_name=3), "tensor_name"),
        (lambda: tmx.RecalibratedNE(recalibration_coefficient=0.0), "recalibration_coefficient"),
        (lambda: tmx.RecalibratedCalibration(recalibration_coefficient=float("inf")), "recalibration_coefficient"),
        (lambda: tmx.NEPositive(eta=0.6), "eta"),
        (lambda: tmx.CalibrationFreeNE(torchrec_scaling="yes"), "torchrec_scaling"),
        (lambda: tmx.WeightedNMSE(baseline="median"), "baseline"),
        (lambda: tmf.weighted_nrmse(torch.rand(3), torch.rand(3), baseline=1), "baseline"),
        (lambda: tmf.recalibrated_ne(torch.rand(3), torch.ones(3), recalibration_coefficient=True), "recalibration"),
    ],
)
def test_bad_constructor_args(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "weighted", [1, 0, 0.5, None, "yes", [1, 0], torch.tensor([1, 0]), torch.tensor(1), np.array(1), torch.zeros(2, 1)]
)
def test_weighted_that_is_not_bools_is_a_value_error_naming_it(weighted):
    """Numbers, None, strings and non-bool tensors are named in the error (not "'int' object is not iterable");
    a 2-D tensor gets the message of every sequence setting (a flat sequence expected)."""
    match = r"Expected `weighted` to be (a bool or a sequence of 2 bools|a flat sequence .* 2-D tensor)"
    with pytest.raises(ValueError, match=match):
        tmf.tensor_weighted_average(torch.rand(2, 3), weighted=weighted)
    with pytest.raises(ValueError, match=match):
        tmx.TensorWeightedAverage(num_tasks=2, weighted=weighted)


@pytest.mark.parametrize(
    "weighted",
    [
        np.bool_(False),
        [np.bool_(True), np.bool_(False)],
        np.array([True, False]),
        (True, False),
        torch.tensor(True),  # 0-dim bool tensors and arrays are flags, as 0-dim numbers are numbers
        np.array(False),
        torch.tensor([True, False]),
    ],
)
def test_numpy_bools_are_weighted_flags(weighted):
    values, weights = torch.tensor([[1.0, 3.0], [1.0, 3.0]]), torch.tensor([3.0, 1.0])
    flags = np.broadcast_to(np.asarray(weighted, dtype=bool), (2,))
    # reference: each task's weighted mean, or plain mean where its flag is false
    expected = [np.average(v, weights=weights.numpy() if f else None) for v, f in zip(values.numpy(), flags)]
    np.testing.assert_allclose(tmf.tensor_weighted_average(values, weights, weighted=weighted).numpy(), expected)
    metric = tmx.TensorWeightedAverage(num_tasks=2, weighted=weighted)
    metric.update(values, weights)
    np.testing.assert_allclose(metric.compute().numpy(), expected)


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    ("cls", "fn", "kwargs"),
    [
        (tmx.NEPositive, tmf.ne_positive, {}),
        (tmx.CalibrationFreeNE, tmf.calibration_free_ne, {}),
        (tmx.RecalibratedNE, tmf.recalibrated_ne, {"recalibration_coefficient": 0.5}),
        (tmx.RecalibratedCalibration, tmf.recalibrated_calibration, {"recalibration_coefficient": 0.5}),
        (tmx.LabelAverage, tmf.label_average, {}),
        (tmx.WeightedR2, tmf.weighted_r2, {}),
        (tmx.WeightedNMSE, tmf.weighted_nmse, {}),
    ],
)
def test_undefined_is_nan_with_a_warning_naming_the_metric(cls, fn, kwargs):
    """The warning starts with the metric's own name (RecalibratedCalibration said "Calibration")."""
    batch = (torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]))
    metric = cls(**kwargs)
    metric.update(*batch)
    match = rf"^{cls.__name__} is undefined"
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert torch.isnan(metric.compute())
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert torch.isnan(fn(*batch, **kwargs))


@pytest.mark.parametrize("label", [0.1, 1.0, 3.7, 1e6])
@pytest.mark.parametrize("weighted", [False, True])
def test_constant_labels_are_undefined_not_a_rounding_ratio(label, weighted):
    """Labels all equal to the baseline leave only rounding of the one-pass sums: nan, never ~1e17."""
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(1000, generator=gen, dtype=torch.float64)
    y = torch.full((1000,), label, dtype=torch.float64)
    w = torch.rand(1000, generator=gen, dtype=torch.float64) if weighted else None
    cases = [(tmx.WeightedR2, {}), (tmx.WeightedNMSE, {"baseline": "mean"})]
    if label == 1.0:
        cases.append((tmx.WeightedNMSE, {}))  # TorchRec's baseline: a constant prediction of 1
    for cls, kwargs in cases:
        metric = cls(**kwargs)
        for lo in range(0, 1000, 137):  # many batches: the sums round differently
            metric.update(p[lo : lo + 137], y[lo : lo + 137], None if w is None else w[lo : lo + 137])
        with pytest.warns(UndefinedMetricWarning, match=cls.__name__):
            assert torch.isnan(metric.compute())


def test_r2_and_calibration_free_ne_of_sums_past_float64_range_are_nan_not_a_finite_value():
    """Equal weights of 1e308 (every value as at weight 1): the total overflowed and R² read the label
    mean as x / inf = 0, so 0.5 where scikit-learn's R² is 0; a cross-entropy sum past float64's range
    made CalibrationFreeNE inf. Documented: nan, as the ratio metrics."""
    p, y = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    big = torch.full((2,), 1e308, dtype=torch.float64)
    assert tmf.weighted_r2(p, y).item() == pytest.approx(skm.r2_score(y, p))  # 0 at any common weight
    for fn, cls in ((tmf.weighted_r2, tmx.WeightedR2), (tmf.weighted_nmse, tmx.WeightedNMSE)):
        assert math.isnan(fn(p, y, big).item()), fn.__name__
        metric = cls()
        metric.update(p, y, big)
        assert math.isnan(metric.compute().item()), cls.__name__
    # every cross-entropy term is finite (eta > 0), their weighted sum is not; no undefined-value warning
    p = torch.tensor([1e-30, 1.0 - 1e-16], dtype=torch.float64)
    y, w = torch.tensor([1.0, 0.0]), torch.full((2,), 1e307, dtype=torch.float64)
    for scaling in (False, True):
        assert math.isfinite(tmf.calibration_free_ne(p, y, torchrec_scaling=scaling).item())
        assert math.isnan(tmf.calibration_free_ne(p, y, w, torchrec_scaling=scaling).item())


def test_r2_of_labels_with_a_large_offset_matches_sklearn():
    gen = np.random.default_rng(5)
    y = 1e3 + gen.normal(0, 1e-2, 5000)  # spread 1e-5 of the mean: far above the rounding of the sums
    p = y + gen.normal(0, 1e-3, 5000)
    value = tmf.weighted_r2(torch.from_numpy(p), torch.from_numpy(y))
    assert value.item() == pytest.approx(skm.r2_score(y, p), rel=1e-6)


def test_r2_offset_below_the_precision_of_the_sums_says_so_not_constant_labels():
    """Labels 1e7 + N(0, 1) are not constant: the class's nan says the spread is below the rounding of its sums.

    Subtracting the offset (the documented workaround) gives scikit-learn's value. The functions take their one
    batch's label sums about the baseline (two passes) and give scikit-learn's value without it.
    """
    rng = np.random.default_rng(0)
    y = 1e7 + rng.normal(0, 1, 10000)
    p = y + rng.normal(0, 0.5, 10000)
    offset = 1e7
    compute = lambda p, y: tmx.WeightedR2()(torch.from_numpy(p), torch.from_numpy(y))  # noqa: E731
    with pytest.warns(UndefinedMetricWarning, match=r"spread below ~1e-6 of their common offset") as record:
        assert torch.isnan(compute(p, y))
    assert not any("are constant" in str(w.message) for w in record)
    assert compute(p - offset, y - offset).item() == pytest.approx(skm.r2_score(y, p), rel=1e-9)
    for function in (
        lambda p, y: tmf.weighted_r2(torch.from_numpy(p), torch.from_numpy(y)),
        lambda p, y: 1 - tmf.weighted_nmse(torch.from_numpy(p), torch.from_numpy(y), baseline="mean"),
    ):
        for shift in (0.0, offset):
            assert function(p - shift, y - shift).item() == pytest.approx(skm.r2_score(y, p), rel=1e-9)
    # TorchRec's baseline 1 with labels within 1e-6 of 1: the class's sums cancel, the function's do not
    y = 1 + rng.normal(0, 1e-6, 1000)
    p = y + rng.normal(0, 1e-6, 1000)
    metric = tmx.WeightedNMSE()
    metric.update(torch.from_numpy(p), torch.from_numpy(y))
    with pytest.warns(UndefinedMetricWarning, match=r"distance to the baseline 1 is zero or below the rounding"):
        assert torch.isnan(metric.compute())
    mse = lambda p, y: tmf.weighted_mse(torch.from_numpy(p), torch.from_numpy(y))  # noqa: E731
    expected = ((p - y) ** 2).sum() / ((y - 1) ** 2).sum()
    assert (mse(p, y) / mse(np.ones_like(y), y)).item() == pytest.approx(expected, rel=1e-9)
    assert tmf.weighted_nmse(torch.from_numpy(p), torch.from_numpy(y)).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("offset", [1e2, 1e4])
def test_r2_with_offset_labels_within_the_documented_precision(offset):
    """Relative error about 1e-16 (offset / spread)^2 (documented), over many batches, against scikit-learn."""
    rng = np.random.default_rng(1)
    y = offset + rng.normal(0, 1, 20000)
    p = y + rng.normal(0, 0.5, 20000)
    w = rng.uniform(0.1, 2.0, 20000)
    metric = tmx.WeightedR2()
    for chunk in np.array_split(np.arange(20000), 40):
        metric.update(torch.from_numpy(p[chunk]), torch.from_numpy(y[chunk]), torch.from_numpy(w[chunk]))
    assert metric.compute().item() == pytest.approx(skm.r2_score(y, p, sample_weight=w), rel=1e-15 * offset**2)


@pytest.mark.parametrize("distance", [1e-2, 1e-3, 1e-4, 1e-5, 1e-7, 1e-9])
def test_nmse_baseline_one_with_labels_near_1_is_within_its_documented_limit(distance):
    """Labels 1 ± ``distance`` (uniform, weighted, 5 batches): TorchRec sums its baseline error
    ``const_pred_error_sum = sum w·(y - 1)²`` per sample, which keeps every digit; ours comes from the shared label
    sums, ``sum w·y² - 2·sum w·y + sum w``, which cancel (documented, not fixed: a sixth state would cost every
    update of the MSE family a weighted square and change its states; the functions, one batch, sum it per sample
    and keep every digit). Against exact fractions: the class's relative error
    within 1e-15·(label size / distance)² while the distance is above ~1e-6 of the labels' size (the formula of
    the Note, a factor 10 for the sums' rounding over batches), ``nan`` with the warning naming the cause below
    it; the documented workaround (MSE over the MSE of a prediction of all ones) within 1e-14 at every distance."""
    from fractions import Fraction

    rng = np.random.default_rng(17)
    n = 250
    y = 1 + distance * rng.uniform(-1, 1, n)
    p = y + distance * rng.normal(0, 0.3, n)
    w = rng.uniform(0.5, 2.0, n)
    exact_sse = sum(Fraction(wi) * (Fraction(pi) - Fraction(yi)) ** 2 for wi, pi, yi in zip(w, p, y))
    exact_base = sum(Fraction(wi) * (Fraction(yi) - 1) ** 2 for wi, yi in zip(w, y))
    want = float(exact_sse / exact_base)
    rms_distance = math.sqrt(float(exact_base / sum(Fraction(wi) for wi in w)))
    tensors = [torch.from_numpy(a) for a in (p, y, w)]
    for root in (False, True):
        cls, fn = (tmx.WeightedNRMSE, tmf.weighted_nrmse) if root else (tmx.WeightedNMSE, tmf.weighted_nmse)
        metric = cls()
        for chunk in np.array_split(np.arange(n), 5):
            metric.update(*(t[torch.from_numpy(chunk)] for t in tensors))
        expected = math.sqrt(want) if root else want
        if rms_distance > 2e-6:
            rel = 1e-15 * (1 / rms_distance) ** 2 * (0.5 if root else 1)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert metric.compute().item() == pytest.approx(expected, rel=rel), (root, distance)
            # past an estimated 1e-6 (eps * (sum w y^2 + 2 sum w y + sum w) / sum w (y-1)^2, labels near 1) it says so
            lost = 2.0**-52 * 4 / rms_distance**2 > 1e-6
            assert any(c.category is PrecisionLossWarning for c in caught) == lost, (root, distance)
        else:
            with pytest.warns(UndefinedMetricWarning, match=r"distance to the baseline 1 is zero or below"):
                assert math.isnan(metric.compute().item())
        # the function sums its one batch's baseline error per sample: every digit, at every distance
        assert fn(*tensors).item() == pytest.approx(expected, rel=1e-14), (root, distance)
    ones = torch.ones(n, dtype=torch.float64)
    workaround = tmf.weighted_mse(*tensors) / tmf.weighted_mse(ones, tensors[1], tensors[2])
    assert workaround.item() == pytest.approx(want, rel=1e-14)


def test_counters_report_zero_not_nan_before_data():
    for metric in (tmx.SumWeights(), tmx.NumPositiveSamples(), tmx.NumMissingLabels(), tmx.NumServingExamples()):
        assert metric.compute() == 0


def test_regression_family_shares_one_compute_group():
    """R², NMSE, NRMSE sit on MSE's states: one compute group updates all six once."""
    names = {
        "mse": tmx.WeightedMSE(),
        "rmse": tmx.WeightedRMSE(),
        "mae": tmx.WeightedMAE(),
        "r2": tmx.WeightedR2(),
        "nmse": tmx.WeightedNMSE(),
        "nrmse": tmx.WeightedNRMSE(baseline="mean"),
    }
    collection = MetricCollection(names, compute_groups=True)
    rng = np.random.default_rng(0)
    for _ in range(2):
        collection.update(torch.tensor(rng.normal(size=50)), torch.tensor(rng.normal(size=50)))
    assert len(collection.compute_groups) == 1


def test_recalibration_settings_keep_groups_apart():
    collection = MetricCollection(
        {
            "a": tmx.RecalibratedNE(recalibration_coefficient=0.5),
            "b": tmx.RecalibratedNE(recalibration_coefficient=2.0),
        },
        compute_groups=True,
    )
    collection.update(torch.tensor([0.2, 0.7]), torch.tensor([0, 1]))
    collection.update(torch.tensor([0.4, 0.1]), torch.tensor([1, 0]))
    assert len(collection.compute_groups) == 2


def test_recalibration_with_coefficient_one_is_ne():
    rng = np.random.default_rng(3)
    p, y = torch.tensor(rng.random(200)), torch.tensor((rng.random(200) < 0.3).astype(float))
    torch.testing.assert_close(tmf.recalibrated_ne(p, y), tmf.normalized_entropy(p, y))
    torch.testing.assert_close(tmf.recalibrated_calibration(p, y), tmf.calibration(p, y))


def test_ne_positive_plus_negative_part_is_ne():
    """NE's numerator splits by label; the positive part over the same normaliser is NEPositive."""
    rng = np.random.default_rng(4)
    p, y = torch.tensor(rng.random(300)), torch.tensor((rng.random(300) < 0.4).astype(float))
    ne, pos = tmf.normalized_entropy(p, y), tmf.ne_positive(p, y)
    # flipping labels and scores turns the negative part into a positive part; the normaliser is symmetric
    neg = tmf.ne_positive(1 - p, 1 - y)
    torch.testing.assert_close(pos + neg, ne)


def test_serving_counter_ignores_zero_weight_rows():
    metric = tmx.NumServingExamples(num_tasks=2)
    metric.update(torch.rand(2, 4), weights=torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0]]))
    torch.testing.assert_close(metric.compute(), torch.tensor([2.0, 1.0], dtype=torch.float64))


# ----------------------------------------------------------------------------- registry names in RecMetricModule

REGISTRY_REFS = {
    # registry name -> (TorchRec namespace, name, numpy reference on one task's columns)
    "ne_positive": ("ne_positive", "ne_positive", ref_ne_positive),
    # under TorchRec's key only with TorchRec's scaling (the default is another, dimensionless, value)
    "cali_free_ne": ("cali_free_ne", "cali_free_ne", partial(ref_cali_free, torchrec=True)),
    "recalibrated_calibration": ("recalibrated_calibration", "calibration", ref_recal_calibration),
    "label_average": ("average", "label_average", ref_label_average),
    "sum_weights": ("sum_weights", "sum_weights", lambda p, y, w: ref_sum_weights(p, w)),
    "num_positive_samples": ("num_positive_samples", "num_positive_samples", ref_positives),
    "weighted_sum_predictions": (
        "weighted_sum_predictions",
        "weighted_sum_predictions",
        lambda p, y, w: ref_pred_sum(p, w),
    ),
    "r_squared": ("mse", "r_squared", ref_r2),
    "nmse": ("nmse", "nmse", ref_nmse),
    "nrmse": ("nmse", "nrmse", partial(ref_nmse, root=True)),
}


def test_registry_names_build_in_the_module_with_torchrec_keys():
    """The new names work in RecMetricModule.from_config, keyed as TorchRec keys them, valued as the references."""
    tasks = [
        tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w"),
        tmx.RecTaskInfo("buy", "buy_label", "buy_pred", "buy_w"),
    ]
    specs: dict[str, Any] = {name: name for name in REGISTRY_REFS}
    specs["cali_free_ne"] = lambda num_tasks: tmx.CalibrationFreeNE(num_tasks, torchrec_scaling=True)
    module = tmx.RecMetricModule(tasks, specs, throughput=False, key_style="torchrec")
    rng = np.random.default_rng(5)
    data = {}
    for task in ("click", "buy"):
        p = rng.random(400)
        data[f"{task}_pred"] = torch.tensor(p)
        data[f"{task}_label"] = torch.tensor((rng.random(400) < p).astype(np.int64))
        data[f"{task}_w"] = torch.tensor(rng.uniform(0, 2, 400))
    module.update({k: v[:250] for k, v in data.items()})
    module.update({k: v[250:] for k, v in data.items()})
    values = module.compute()
    for namespace, key_name, ref in REGISTRY_REFS.values():
        for task in ("click", "buy"):
            cols = [data[f"{task}_{c}"].double().numpy() for c in ("pred", "label", "w")]
            expected = ref(*cols)
            np.testing.assert_allclose(values[f"{namespace}-{task}|lifetime_{key_name}"].item(), expected, rtol=1e-9)


@pytest.mark.parametrize(
    "cls", [tmx.LogLoss, tmx.NEPositive, tmx.CalibrationFreeNE, tmx.RecalibratedNE, tmx.RecalibratedCalibration]
)
def test_probability_metrics_name_from_logits_in_their_signature(cls):
    """Adapters (Hugging Face, the module) look for `from_logits` in the constructor's signature."""
    import inspect

    assert "from_logits" in inspect.signature(cls.__init__).parameters
    assert cls(from_logits=True).from_logits is True


def test_recalibrated_calibration_takes_its_functional_twins_options_and_no_eta():
    """An `eta` changed no value (a ratio of sums clamps nothing) but renamed a state: it is refused now."""
    import inspect

    def options(fn):
        return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY} - {"validate_args"}

    assert (
        options(tmx.RecalibratedCalibration)
        == options(tmf.recalibrated_calibration)
        == {
            "recalibration_coefficient",
            "from_logits",
        }
    )
    assert "eta" in options(tmx.RecalibratedNE)  # its clamp is used
    with pytest.raises(TypeError, match="`eta`"):
        tmx.RecalibratedCalibration(recalibration_coefficient=0.5, eta=0.4)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("windowed", [False, True])
def test_recalibrated_calibration_checkpoints_saved_with_an_eta_load(from_logits, windowed, tmp_path):
    """A checkpoint whose state was named after the former `eta` (`weighted_pred_sum_recal_0p5_eta_0p4`) loads."""
    rng = np.random.default_rng(5)
    p = rng.uniform(-3, 3, 30) if from_logits else rng.uniform(0.01, 0.99, 30)
    y, w = (rng.random(30) < 0.4).astype(np.float64), rng.uniform(0.5, 2, 30)

    def build():
        metric = tmx.RecalibratedCalibration(recalibration_coefficient=0.5, from_logits=from_logits)
        return tmx.Windowed(metric, window_size=10) if windowed else metric

    trained = build()
    for rows in (slice(0, 20), slice(20, 30)):  # the window: the last update's 10 samples
        trained.update(torch.tensor(p[rows]), torch.tensor(y[rows]), torch.tensor(w[rows]))
    trained.persistent(True)
    suffix = "_logits" if from_logits else ""
    new, old = f"weighted_pred_sum_recal_0p5{suffix}", f"weighted_pred_sum_recal_0p5_eta_0p4{suffix}"
    saved = trained.state_dict()
    assert any(key.endswith(new) for key in saved)
    for key in [k for k in saved if k.endswith(new)]:  # the former names, as that version wrote them
        saved[key.replace(new, old)] = saved.pop(key)
    if windowed:
        ring = saved["_extra_state"]
        for part in ("rings", "back"):
            ring[part] = {n.replace(new, old): v for n, v in ring[part].items()}
    torch.save(saved, tmp_path / "old.pt")
    resumed = build()
    resumed.persistent(True)
    resumed.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))  # strict: nothing missing
    expected = ref_recal_calibration(p, y, w, c=0.5, logits=from_logits)
    value = resumed.compute()
    lifetime = value["lifetime"] if windowed else value
    np.testing.assert_allclose(lifetime.item(), expected, rtol=1e-12)
    if windowed:
        np.testing.assert_allclose(
            value["window"].item(),
            ref_recal_calibration(p[20:30], y[20:30], w[20:30], c=0.5, logits=from_logits),
            rtol=1e-12,
        )


@pytest.mark.parametrize(
    "bad",
    [torch.tensor([1, 2]), torch.zeros(5), torch.full((3, 2), float("nan")), [1.0, 2.0], torch.zeros(2, 4)],
    ids=["int", "1-D", "nan", "list", "2-task"],
)
def test_tensor_weighted_average_errors_name_values(bad):
    """Every error about TensorWeightedAverage's first argument says `values` (its name): class, function,
    and Segmented, which takes the wrapped metric's own arguments."""
    calls = [tmx.TensorWeightedAverage(num_tasks=3).update]
    if not isinstance(bad, torch.Tensor) or bad.dtype != torch.float32 or bad.isnan().any():
        calls.append(tmf.tensor_weighted_average)  # the function takes any number of tasks
    for call in calls:
        with pytest.raises((TypeError, ValueError), match="`values`") as raised:
            call(bad)
        assert "`preds`" not in str(raised.value)
    segmented = tmx.Segmented(tmx.TensorWeightedAverage(num_tasks=3), 2)
    with pytest.raises((TypeError, ValueError), match="`values`") as raised:
        segmented.update(bad, segments=torch.zeros(2, dtype=torch.int64))
    assert "`preds`" not in str(raised.value)


def test_calibration_free_ne_from_confident_logits_is_not_clamped():
    """From logits the numerator is the exact log-sigmoid, so the constant prediction is not clamped to
    [eta, 1 - eta] either (it gave 0.174 for two sure positives instead of about 1)."""
    metric = tmx.CalibrationFreeNE(from_logits=True)
    metric.update(torch.tensor([30.0, 29.0]), torch.tensor([1, 1]))
    z = np.array([30.0, 29.0])
    q = np.mean(np.exp(-z) / (1 + np.exp(-z)))  # 1 - mean prediction, without cancellation
    expected = np.sum(np.log1p(np.exp(-z))) / (-2 * np.log1p(-q))
    # the states keep sum(sigmoid(-z)) as well: 1 - mean is not a difference of numbers near 1
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def _mp_calibration_free_ne(p, y, logits):
    """The documented formula with 60 digits (mpmath): CE of p over CE of the constant mean prediction."""
    import mpmath

    with mpmath.workdps(60):
        y = [mpmath.mpf(float(v)) for v in y]
        if logits:  # sigmoid and its complement of the logits themselves: no rounding to 1
            q = [1 / (1 + mpmath.exp(mpmath.mpf(float(z)))) for z in p]
            p = [1 / (1 + mpmath.exp(-mpmath.mpf(float(z)))) for z in p]
        else:
            p = [mpmath.mpf(float(v)) for v in p]
            q = [1 - a for a in p]
        ce = -sum(b * mpmath.log(a) + (1 - b) * mpmath.log(c) for a, c, b in zip(p, q, y))
        mean, complement = sum(p) / len(p), sum(q) / len(q)
        constant = -sum(b * mpmath.log(mean) + (1 - b) * mpmath.log(complement) for b in y)
        return float(ce / constant)


@pytest.mark.parametrize(
    "z",
    [
        [38.0, 40.0, 39.0, 45.0],  # every sigmoid rounds to 1: was 0.0 (a perfect score), no warning
        [-38.0, -40.0, 39.0, 45.0],
        [36.0, 37.5, 50.0, 80.0],
        [-700.0, -40.0, -39.0, -45.0],
        # sigmoid(z) is about exp(z) down to -745, sigmoid(-z) likewise: torch.sigmoid gave 0 past 709 (nan)
        [-720.0, -730.0, -712.0, -740.0],
        [720.0, 730.0, 712.0, 740.0],
    ],
)
def test_calibration_free_ne_from_sure_logits_matches_mpmath(z):
    z, y = torch.tensor(z, dtype=torch.float64), torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = _mp_calibration_free_ne(z.tolist(), y.tolist(), logits=True)
    np.testing.assert_allclose(tmf.calibration_free_ne(z, y, from_logits=True).item(), expected, rtol=1e-12)
    metric = tmx.CalibrationFreeNE(from_logits=True)
    metric.update(z[:2], y[:2])
    metric.update(z[2:], y[2:])
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def test_calibration_free_ne_of_probabilities_near_one_keeps_the_complement():
    """p = 1 - k·2^-52 (exact doubles): 1 - mean from sum(p) lost ~1e-3 of its digits, sum(1 - p) none."""
    rng = np.random.default_rng(8)
    k = rng.integers(1, 200, size=1000)
    p = 1 - k * 2.0**-52
    y = (rng.random(1000) < 0.5).astype(np.float64)
    expected = _mp_calibration_free_ne(p, y, logits=False)
    for eta in (0.0, 1e-18):  # clamps that leave these predictions and their mean alone
        got = tmf.calibration_free_ne(torch.tensor(p), torch.tensor(y), eta=eta).item()
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("preds", "target", "kwargs"),
    [
        ([1.0, 1.0], [1.0, 0.0], {"eta": 0.0}),  # mean prediction 1 on a negative: inf / inf (was nan, silently)
        ([0.0, 0.0], [1.0, 0.0], {"eta": 0.0}),
        ([-800.0, -750.0], [1.0, 0.0], {"from_logits": True}),  # every sigmoid is 0: the mean is exactly 0
        ([1.0, 1.0], [1.0, 0.0], {"eta": 0.0, "torchrec_scaling": True}),
    ],
)
def test_calibration_free_ne_with_an_infinite_denominator_is_undefined(preds, target, kwargs):
    """A constant prediction of 0 or 1 with labels on its wrong side: nan with one UndefinedMetricWarning."""
    preds, target = torch.tensor(preds, dtype=torch.float64), torch.tensor(target)
    with pytest.warns(UndefinedMetricWarning, match="CalibrationFreeNE"):
        assert torch.isnan(tmf.calibration_free_ne(preds, target, **kwargs))
    metric = tmx.CalibrationFreeNE(**kwargs)
    metric.update(preds, target)
    with pytest.warns(UndefinedMetricWarning, match="CalibrationFreeNE"):
        assert torch.isnan(metric.compute())


@pytest.mark.parametrize("from_logits", [False, True])
def test_calibration_free_ne_checkpoint_without_the_complement_state_loads(from_logits):
    """A checkpoint written before sum w·(1 - p) was a state loads it as sum w - sum w·p (plain and windowed).

    Such a checkpoint lacks ``neg_labels`` (sum w·(1 - y), a state since) too: loaded as sum w - sum w·y."""
    rng = np.random.default_rng(9)
    p = torch.tensor(rng.normal(size=40) if from_logits else rng.uniform(0.05, 0.95, size=40))
    y, w = torch.tensor(rng.integers(0, 2, size=40)), torch.tensor(rng.uniform(0.1, 2.0, size=40))
    expected = ref_cali_free(p.numpy(), y.numpy(), w.numpy(), logits=from_logits)
    trained = tmx.CalibrationFreeNE(from_logits=from_logits)
    trained.persistent(True)
    trained.update(p, y, w)
    complement = "weighted_pred_complement_sum" + ("_logits" if from_logits else "")
    added = (complement, "neg_labels")
    old = {k: v for k, v in trained.state_dict().items() if k not in added}
    assert len(old) == 4
    resumed = tmx.CalibrationFreeNE(from_logits=from_logits)
    resumed.persistent(True)
    resumed.load_state_dict(old)  # strict: the missing state is derived, nothing else is missing
    np.testing.assert_allclose(resumed.compute().item(), expected, rtol=1e-12)

    windowed = tmx.Windowed(tmx.CalibrationFreeNE(from_logits=from_logits), window_size=30)
    for chunk in torch.arange(40).split(10):
        windowed.update(p[chunk], y[chunk], w[chunk])
    saved = windowed.state_dict()
    old = {k: v for k, v in saved.items() if not k.endswith(added)}
    ring = old["_extra_state"] = dict(old["_extra_state"])
    for part in ("rings", "back"):
        ring[part] = {n: v for n, v in ring[part].items() if n not in added}
    again = tmx.Windowed(tmx.CalibrationFreeNE(from_logits=from_logits), window_size=30)
    again.load_state_dict(old)
    for part, rows in (("lifetime", slice(0, 40)), ("window", slice(10, 40))):
        want = ref_cali_free(p[rows].numpy(), y[rows].numpy(), w[rows].numpy(), logits=from_logits)
        np.testing.assert_allclose(again.compute()[part].item(), want, rtol=1e-12)
    windowed.update(p[:10], y[:10], w[:10])  # both go on alike
    again.update(p[:10], y[:10], w[:10])
    torch.testing.assert_close(again.compute(), windowed.compute(), rtol=1e-12, atol=0)


def test_ne_positive_from_logits_is_exact_where_softplus_cuts_over():
    """F.softplus(x) returns x above x = 20: positives with logits -20..-30 were off by up to 6e-11 relative."""
    import mpmath

    z = torch.tensor([-19.5, -20.5, -21.0, -25.0, -29.0, -31.0, 0.0, 2.0], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    with mpmath.workdps(50):  # -log sigmoid(z) = log(1 + e^-z), no cancellation for z < 0
        positive_ce = sum(mpmath.log1p(mpmath.exp(-mpmath.mpf(a))) for a in z[:6].tolist())
        base = mpmath.mpf(6) / 8
        entropy = -8 * (base * mpmath.log(base) + (1 - base) * mpmath.log(1 - base))
        expected = float(positive_ce / entropy)
    np.testing.assert_allclose(tmf.ne_positive(z, y, from_logits=True).item(), expected, rtol=1e-14)
    metric = tmx.NEPositive(from_logits=True)
    metric.update(z, y)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-14)
