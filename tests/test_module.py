"""RecMetricModule: keys equal the standalone metrics and independent references, one validation per
step, explicit compute groups, bad input, state_dict resume, reset, and real 2-process gloo DDP with a
fused sync whose collective count does not grow with the number of metrics."""

from __future__ import annotations

import copy
import functools
import gc
import math
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
import torchmetrics
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, log_loss, mean_squared_error, roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_auc import ref_grouped
from tests.test_pointwise import ref_ne
from torchmetrics_ext import _module_columns, _module_stack
from torchmetrics_ext import module as module_mod
from torchmetrics_ext.aggregation import Sum
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.registry import build_metric, lookup, metric_names
from torchmetrics_ext.utilities.device import force_device_path

TASKS = [
    tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w", group_id_name="user", session_id_name="query"),
    tmx.RecTaskInfo("buy", "buy_label", "buy_pred", "buy_w", group_id_name="user", session_id_name="query"),
]


def metric_specs() -> dict:
    """Fresh specs: instances among them must not be shared by two modules."""
    return {
        "ne": "ne",
        "log_loss": "log_loss",
        "ne_eta": lambda num_tasks: tmx.NormalizedEntropy(num_tasks=num_tasks, eta=1e-3),
        "calibration": "calibration",
        "ctr": "ctr",
        "accuracy": "accuracy",
        "mse": "mse",
        "rmse": "rmse",
        "auc": "auc",
        "auprc": tmx.AUPRC,
        "auc_binned": lambda num_tasks: tmx.AUC(num_tasks=num_tasks, num_bins=1000),
        "gauc": "gauc",
        "ndcg@3": "ndcg@3",
        "recall@2": tmx.RecallAtK(k=2),
    }


METRICS = metric_specs()


def make_data(seed: int, n: int = 600) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for task, rate in (("click", 0.3), ("buy", 0.1)):
        pred = torch.rand(n, generator=gen)
        out[f"{task}_pred"] = pred
        out[f"{task}_label"] = (torch.rand(n, generator=gen) < rate + 0.5 * pred * rate).long()
        out[f"{task}_w"] = torch.rand(n, generator=gen, dtype=torch.float64) * 2
    out["user"] = torch.randint(0, 25, (n,), generator=gen)
    out["query"] = torch.arange(n) // 6
    return out


def batches(data: dict[str, torch.Tensor], bounds: list[int]) -> list[dict[str, torch.Tensor]]:
    return [{k: v[lo:hi] for k, v in data.items()} for lo, hi in zip(bounds[:-1], bounds[1:])]


def build(metrics=None, **kwargs) -> tmx.RecMetricModule:
    return tmx.RecMetricModule(TASKS, metrics or metric_specs(), throughput=False, **kwargs)


def run(module: tmx.RecMetricModule, parts) -> dict[str, torch.Tensor]:
    for part in parts:
        module.update(part)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return module.compute()


def standalone(name: str, task: int, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The metric alone on one task's columns (built the way the module builds it)."""
    spec = METRICS[name]
    prefix = TASKS[task].name
    if isinstance(spec, str):
        metric = build_metric(spec)
    elif isinstance(spec, tmx.RecallAtK):
        metric = tmx.RecallAtK(k=2)
    elif isinstance(spec, type):
        metric = spec()
    else:
        metric = spec(num_tasks=1)
    p, y, w = data[f"{prefix}_pred"], data[f"{prefix}_label"], data[f"{prefix}_w"]
    if isinstance(metric, (tmx.NDCG, tmx.RecallAtK)):
        metric.update(p, y, indexes=data["query"], weights=w)
    elif isinstance(metric, tmx.GroupedAUC):
        metric.update(p, y, data["user"], weights=w)
    else:
        metric.update(p, y, weights=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return metric.compute()


# ----------------------------------------------------------------------------- values


def test_every_key_equals_the_standalone_metric_on_its_task():
    data = make_data(0)
    values = run(build(), batches(data, [0, 97, 350, 351, 600]))
    assert list(values) == [f"{name}/{task.name}" for name in METRICS for task in TASKS]
    for name in METRICS:
        for t, task in enumerate(TASKS):
            expected = standalone(name, t, data)
            torch.testing.assert_close(values[f"{name}/{task.name}"], expected, rtol=1e-12, atol=1e-12)
            assert values[f"{name}/{task.name}"].ndim == 0


def test_shared_statistics_are_exactly_each_metrics_own():
    """Sums several metrics share (sum w, sum w·y, log p...) are computed once per step, bit for bit as alone."""
    specs = {
        "ne": "ne",
        "log_loss": "log_loss",
        "ne_eta": lambda num_tasks: tmx.NormalizedEntropy(num_tasks=num_tasks, eta=1e-3),
        "cali_free_ne": lambda num_tasks: tmx.CalibrationFreeNE(num_tasks=num_tasks),
        "calibration": "calibration",
        "ctr": "ctr",
        "accuracy": "accuracy",
        "precision": lambda num_tasks: tmx.WeightedPrecision(num_tasks=num_tasks, threshold=0.3),
        "mse": "mse",
        "mae": lambda num_tasks: tmx.WeightedMAE(num_tasks=num_tasks),
    }
    data = make_data(4)
    parts = batches(data, [0, 211, 212, 600])
    values = run(build(specs), parts)
    for name, spec in specs.items():
        alone = build_metric(spec, num_tasks=2) if isinstance(spec, str) else spec(num_tasks=2)
        for part in parts:  # the stacked (T, N) float64 batch, fed to the metric on its own
            stacked = {
                kind: torch.stack([part[f"{t.name}_{kind}"] for t in TASKS]).double() for kind in ("pred", "label", "w")
            }
            alone.update(stacked["pred"], stacked["label"], weights=stacked["w"])
        expected = alone.compute()
        for t, task in enumerate(TASKS):
            assert torch.equal(values[f"{name}/{task.name}"], expected[t]), name


@pytest.mark.parametrize("eta", [1e-12, 0.05, 0.0])
def test_binary_labels_take_one_log_bit_for_bit(eta):
    """With labels checked to be 0/1 the cross entropy takes one log per sample: the same bits as the lerp."""
    from torchmetrics_ext.functional._sums import sharing_sums
    from torchmetrics_ext.functional.pointwise import _cross_entropy_update

    special = [0.0, 1.0, eta, 1 - eta, 0.5, 0.25, 0.75, 2.0**-53, 1 - 2.0**-53, 1e-300, 0.1, 0.9, 1 / 3]
    special += [float(np.nextafter(v, d)) for v in (0.5, eta, 1 - eta, 1.0, 0.0) for d in (0.0, 1.0)]
    gen = torch.Generator().manual_seed(3)
    rand = torch.rand(20_000, generator=gen, dtype=torch.float64)
    values = torch.cat([torch.tensor(special, dtype=torch.float64), rand, rand**8, 1 - rand**8])
    p = torch.cat([values, values])  # every value with label 0 and with label 1
    y = torch.cat([torch.zeros(len(values)), torch.ones(len(values))]).to(torch.float64)
    # one sample per task row: each per-task sum is that sample's own log-likelihood
    p, y = p.unsqueeze(1), y.unsqueeze(1)
    lerp = _cross_entropy_update(p, y, None, eta, False)[0]
    with sharing_sums(p, y, None, binary_target=True):
        one_log = _cross_entropy_update(p, y, None, eta, False)[0]
    assert torch.equal(lerp, one_log)
    # predictions whose known bounds lie inside [eta, 1 - eta] skip the clamp: the same bits
    inside = ((p >= eta) & (p <= 1 - eta)).squeeze(1)
    p_in, y_in = p[inside], y[inside]
    bounds = (p_in.min().item(), p_in.max().item())
    with sharing_sums(p_in, y_in, None, binary_target=True, pred_range=bounds):
        unclamped = _cross_entropy_update(p_in, y_in, None, eta, False)[0]
    assert torch.equal(unclamped, lerp[inside])


@pytest.mark.parametrize("from_logits", [False, True])
def test_binned_auc_skips_its_clip_only_where_no_bin_changes(from_logits):
    """The AUC's bin index with the step's known prediction bounds (clip skipped inside the range) is numpy's clipped bin."""
    from torchmetrics_ext.functional._sums import sharing_sums
    from torchmetrics_ext.functional.auc.binary import DEFAULT_LOGIT_RANGE, _binned_index

    lo, hi = DEFAULT_LOGIT_RANGE
    bins = 1000
    gen = torch.Generator().manual_seed(5)
    # logits whose extremes sit just inside, on and just outside the range (and its 1e-9 margin), and far out
    for low, high in [(-15.0, 15.0), (lo + 1e-7, hi - 1e-7), (lo + 1e-12, hi - 1e-12), (lo, hi), (-40.0, 40.0)]:
        z = torch.empty(2, 4096, dtype=torch.float64).uniform_(low, high, generator=gen)
        z[0, 0], z[1, -1] = low, high
        preds = z if from_logits else torch.sigmoid(z)
        target = (torch.rand(2, 4096, generator=gen) < 0.4).double()
        bounds = (preds.min().item(), preds.max().item())
        with sharing_sums(preds, target, None, binary_target=True, pred_range=bounds):
            index = _binned_index(preds, target, bins, (lo, hi), from_logits)
        x = preds.numpy() if from_logits else np.log(preds.numpy() / (1 - preds.numpy()))
        expected = np.clip(np.floor((x - lo) * (bins / (hi - lo))), 0, bins - 1)
        expected += target.numpy() * 2 * bins + np.arange(2)[:, None] * bins
        np.testing.assert_array_equal(index.numpy(), expected)


def test_module_ne_clamps_predictions_at_eta_as_the_formula():
    """Sure and near-sure predictions (0, 1, within eta of them) cost what the clamped formula says, in one step."""
    eta = 1e-12
    p = np.array([0.0, 1.0, 1e-13, 1 - 1e-13, 0.3, 0.7, 0.5, 1e-12, 0.999], dtype=np.float64)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    module = tmx.RecMetricModule(["t"], {"ne": "ne", "log_loss": "log_loss"}, throughput=False)
    module.update({"prediction": torch.from_numpy(p), "label": torch.from_numpy(y)})
    values = module.compute()
    c = np.clip(p, eta, 1 - eta)
    ce = -(y * np.log(c) + (1 - y) * np.log(1 - c))
    base = np.clip(y.mean(), eta, 1 - eta)
    entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    assert values["log_loss/t"].item() == pytest.approx(ce.mean(), rel=1e-12)
    assert values["ne/t"].item() == pytest.approx(ce.mean() / entropy, rel=1e-12)
    # without predictions within eta of 0 or 1 (the clamp skipped): the same formula
    module.reset()
    module.update({"prediction": torch.from_numpy(p[4:]), "label": torch.from_numpy(y[4:])})
    c, yy = p[4:], y[4:]
    ce = -(yy * np.log(c) + (1 - yy) * np.log(1 - c))
    assert module.compute()["log_loss/t"].item() == pytest.approx(ce.mean(), rel=1e-12)


def test_ranking_rows_keep_the_columns_as_given():
    """Ranking copies keep float32 scores/weights, int8 labels and int32 ids (cast at compute): same values."""
    data = make_data(6)
    narrow = {
        k: v.to(torch.int8) if k.endswith("label") else v.to(torch.int32) if k == "query" else v.float()
        for k, v in data.items()
        if k != "user"
    }
    module = tmx.RecMetricModule(
        [
            tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, t.weight_name, session_id_name="query")
            for t in TASKS
        ],
        {"ndcg@3": "ndcg@3"},
        throughput=False,
    )
    values = run(module, batches(narrow, [0, 300, 600]))
    kept = module.ranking["ndcg@3"][0]
    assert [kept.preds[0].dtype, kept.target[0].dtype, kept.indexes[0].dtype, kept.weights[0].dtype] == [
        torch.float32,
        torch.int8,
        torch.int32,
        torch.float32,
    ]
    for task in TASKS:
        alone = tmx.NDCG(k=3)
        prefix = task.name
        alone.update(
            narrow[f"{prefix}_pred"].double(),
            narrow[f"{prefix}_label"].double(),
            indexes=narrow["query"].long(),
            weights=narrow[f"{prefix}_w"].double(),
        )
        assert torch.equal(values[f"ndcg@3/{task.name}"], alone.compute())


def _ne_reference(p, y, w, eta=1e-12):
    p = np.clip(p, eta, 1 - eta)
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    base = np.clip((w * y).sum() / w.sum(), eta, 1 - eta)
    return ce / -(w.sum() * (base * np.log(base) + (1 - base) * np.log(1 - base)))


def test_values_equal_independent_references():
    data = make_data(1)
    _assert_independent_references(run(build(), batches(data, [0, 200, 450, 600])), data)


def test_values_after_a_float64_cast_and_a_second_compute():
    """Every metric ``set_dtype(torch.float64)`` mid-stream: every value stays the reference's, also after a
    compute (the exact grouped AUC's compute once wrote into its own float64 state)."""
    data = make_data(1)
    parts = batches(data, [0, 200, 450, 600])
    module = build()
    run(module, parts[:1])
    for each in module.modules():  # ``module.to(torch.float64)`` casts no state
        if isinstance(each, torchmetrics.Metric):
            each.set_dtype(torch.float64)
    run(module, parts[1:2])
    seen = {k: v[:450] for k, v in data.items()}
    _assert_independent_references(run(module, []), seen)
    _assert_independent_references(run(module, parts[2:]), data)


@pytest.mark.parametrize("window_size", [None, 150])
@pytest.mark.parametrize(("cast", "dtype"), [(torch.float32, torch.float32), ("torch.FloatTensor", torch.float32)])
def test_set_dtype_casts_every_metric_as_a_metric_collection(window_size, cast, dtype):
    """``module.set_dtype`` (``MetricCollection``'s method, which a module built on one was expected to have) casts
    every metric's floating states, lifetime, window and the windows' shared buffer (it raised AttributeError). Later steps add in the new dtype and the values stay the formulas' (float32's precision)."""
    data = make_data(5)
    parts = batches(data, [0, 200, 450, 600])  # the 150-sample window holds the last step
    module = tmx.RecMetricModule(TASKS, metric_specs(), window_size=window_size)
    run(module, parts[:2])
    assert module.set_dtype(cast) is module
    states = {k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    assert {v.dtype for k, v in states.items() if v.is_floating_point() and not k.startswith("throughput.")} == {dtype}
    # the throughput's counts and seconds are no metric values: they stay float64
    assert {v.dtype for k, v in states.items() if k.startswith("throughput.")} == {torch.float64}
    values = run(module, parts[2:])
    for task in TASKS:
        for suffix, rows in [("", slice(None)), *([("/window", slice(450, None))] if window_size else [])]:
            p = data[f"{task.name}_pred"][rows].double().numpy()
            y = data[f"{task.name}_label"][rows].numpy()
            w = data[f"{task.name}_w"][rows].numpy()
            expected = {
                "ne": _ne_reference(p, y, w),
                "log_loss": log_loss(y, p, sample_weight=w),
                "calibration": (w * p).sum() / (w * y).sum(),
                "ctr": (w * y).sum() / w.sum(),
                "mse": mean_squared_error(y, p, sample_weight=w),
            }
            for name, reference in expected.items():
                got = values[f"{name}/{task.name}{suffix}"]
                assert got.dtype == dtype, name
                np.testing.assert_allclose(got.item(), reference, rtol=2e-5, err_msg=f"{name}/{task.name}{suffix}")
    assert values["throughput/total_examples"].item() == 600


class _Clock:
    """A fake clock: one reading per call."""

    def __init__(self, readings):
        self.readings = iter(readings)

    def __call__(self):
        return next(self.readings)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_set_dtype_to_a_half_dtype_keeps_the_throughput_counts_exact(dtype):
    """``module.set_dtype(torch.float16)`` cast the throughput's counts and seconds too: ``total_examples``
    saturated at 65,504 (``inf`` past it) and the rates were ``nan`` or rounded. The metrics are cast; the
    throughput keeps float64 counts and seconds: the exact example count and rates (exact fractions of the
    fake clock) past 65,504 examples, and bfloat16 metrics' values the formula's (to bfloat16's precision)."""
    readings = [0.0, 0.5, 1.75, 4.0]
    sizes = [30000, 20001, 25003, 17]
    throughput = tmx.Throughput(warmup_steps=1, window_seconds=100.0, clock=_Clock(readings))
    module = tmx.RecMetricModule(["c"], {"ctr": "ctr"}, throughput=throughput)
    assert module.set_dtype(dtype) is module
    g = np.random.default_rng(8)
    labels = []
    for n in sizes:
        y = (g.uniform(size=n) < 0.25).astype(np.float64)
        labels.append(y)
        module.update({"prediction": torch.full((n,), 0.5), "label": torch.tensor(y)})
    assert module.metrics["ctr"].weighted_label_sum.dtype == dtype
    assert {v.dtype for v in throughput.metric_state.values()} == {torch.float64}
    values = module.compute()
    assert values["throughput/total_examples"].item() == sum(sizes) == 75021
    timed = sum(sizes[1:])  # the first step warms up (starts the clock); the others take 4 s
    assert values["throughput/lifetime_throughput"].item() == timed / 4.0
    assert values["throughput/window_throughput"].item() == timed / 4.0
    if dtype == torch.bfloat16:  # a float16 weight total overflows past 65,504: the cast asked for that
        np.testing.assert_allclose(values["ctr/c"].item(), np.concatenate(labels).mean(), rtol=2e-2)


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, torch.complex64, "torch.IntTensor", "no dtype"])
def test_set_dtype_refuses_a_non_floating_dtype_before_any_metric_changes(bad):
    module = build(window_size=150)
    run(module, batches(make_data(5), [0, 200]))
    before = _tensor_states(module)
    with pytest.raises(TypeError, match="dst_type"):
        module.set_dtype(bad)
    after = _tensor_states(module)
    assert {k: v.dtype for k, v in after.items()} == {k: v.dtype for k, v in before.items()}
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def _tensor_states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


_CASTS = {
    "bf16": lambda m: m.to(torch.bfloat16),
    "fp16": lambda m: m.to(torch.float16),
    "cpu-bf16": lambda m: m.to("cpu", torch.bfloat16),
    "half": lambda m: m.half(),
    "double": lambda m: m.double(),
}


@pytest.mark.parametrize("cast", list(_CASTS))
def test_a_dtype_cast_keeps_every_state_and_value(cast):
    """``module.to(dtype)``, what Lightning's "bf16-true"/"16-true" precision does to the model, casts no state:
    the float64 sums kept growing in bfloat16 no more (1000 updates of 100 rows summed to 32768). Every state
    keeps its dtype and value, and later steps give the references' values, lifetime and window, exactly the
    values of a module never cast."""
    data = make_data(5)
    parts = batches(data, [0, 200, 450, 600])  # the 150-sample window holds the last step
    plain = tmx.RecMetricModule(TASKS, metric_specs(), window_size=150)
    expected = run(plain, parts)
    module = tmx.RecMetricModule(TASKS, metric_specs(), window_size=150)
    run(module, parts[:2])
    before = _tensor_states(module)
    module = _CASTS[cast](module)
    after = _tensor_states(module)
    assert {k: v.dtype for k, v in after.items()} == {k: v.dtype for k, v in before.items()}
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    values = run(module, parts[2:])
    _assert_independent_references(values, data)
    window = {k.removesuffix("/window"): v for k, v in values.items() if k.endswith("/window")}
    _assert_independent_references(window, {k: v[450:] for k, v in data.items()})
    assert values["throughput/total_examples"].item() == 600
    timed = ("throughput/lifetime_throughput", "throughput/window_throughput")  # rates follow the clock
    assert values.keys() == expected.keys()
    for key in expected.keys() - set(timed):
        assert values[key].dtype == expected[key].dtype
        torch.testing.assert_close(values[key], expected[key], rtol=0, atol=0, equal_nan=True, msg=key)


def _assert_independent_references(values: dict[str, torch.Tensor], data: dict[str, torch.Tensor]) -> None:
    users = data["user"].numpy()
    for task in TASKS:
        p = data[f"{task.name}_pred"].double().numpy()
        y = data[f"{task.name}_label"].numpy()
        w = data[f"{task.name}_w"].numpy()
        key = f"/{task.name}"
        np.testing.assert_allclose(values["ne" + key], _ne_reference(p, y, w), rtol=1e-9)
        np.testing.assert_allclose(values["log_loss" + key], log_loss(y, p, sample_weight=w), rtol=1e-9)
        np.testing.assert_allclose(values["calibration" + key], (w * p).sum() / (w * y).sum(), rtol=1e-9)
        np.testing.assert_allclose(values["ctr" + key], (w * y).sum() / w.sum(), rtol=1e-9)
        np.testing.assert_allclose(values["accuracy" + key], (w * ((p >= 0.5) == y)).sum() / w.sum(), rtol=1e-9)
        np.testing.assert_allclose(values["mse" + key], mean_squared_error(y, p, sample_weight=w), rtol=1e-9)
        np.testing.assert_allclose(values["auc" + key], roc_auc_score(y, p, sample_weight=w), rtol=1e-6)
        np.testing.assert_allclose(values["auprc" + key], average_precision_score(y, p, sample_weight=w), rtol=1e-6)
        per_group = [
            roc_auc_score(y[users == g], p[users == g], sample_weight=w[users == g])
            for g in np.unique(users)
            if len(np.unique(y[users == g])) == 2
        ]
        np.testing.assert_allclose(values["gauc" + key], np.mean(per_group), rtol=1e-6)


@pytest.mark.parametrize("window_size", [None, 250])
def test_metrics_without_from_logits_read_probabilities_when_the_predictions_are_logits(window_size):
    """NE(from_logits=True) next to MSE / WeightedAverage: those get sigmoid(logits), never raw logits."""
    data = make_data(11)
    gen = torch.Generator().manual_seed(3)
    for task in TASKS:
        data[task.prediction_name] = torch.randn(600, generator=gen) * 2  # logits
    logits = dict(from_logits=True)
    metrics = {
        "ne": lambda num_tasks: tmx.NormalizedEntropy(num_tasks, **logits),
        "calibration": lambda num_tasks: tmx.Calibration(num_tasks, **logits),
        "auc": lambda num_tasks: tmx.AUC(num_tasks, **logits),
        "mse": "mse",
        "rmse": "rmse",
        "mae": "mae",
        "avg": "weighted_average",
        "ctr": "ctr",
        "r2": "r_squared",
        "sum_p": "weighted_sum_predictions",
    }
    module = build(metrics, window_size=window_size)
    assert module.input_domains.from_logits
    values = run(module, batches(data, [0, 100, 350, 600]))
    for task in TASKS:
        for suffix, lo in (("", 0), ("/window", 350)):
            if suffix and window_size is None:
                continue
            z = data[task.prediction_name][lo:].double().numpy()
            p, y = 1 / (1 + np.exp(-z)), data[task.label_name][lo:].double().numpy()
            w = data[task.weight_name][lo:].numpy()
            sse = (w * (p - y) ** 2).sum()
            expected = {
                "ne": _ne_reference(p, y, w),
                "calibration": (w * p).sum() / (w * y).sum(),
                "auc": roc_auc_score(y, p, sample_weight=w),
                "mse": sse / w.sum(),
                "rmse": np.sqrt(sse / w.sum()),
                "mae": (w * np.abs(p - y)).sum() / w.sum(),
                "avg": (w * p).sum() / w.sum(),
                "ctr": (w * y).sum() / w.sum(),
                "r2": 1 - sse / (w * (y - (w * y).sum() / w.sum()) ** 2).sum(),
                "sum_p": (w * p).sum(),
            }
            for name, value in expected.items():
                key = f"{name}/{task.name}{suffix}"
                np.testing.assert_allclose(values[key].item(), value, rtol=1e-6, err_msg=key)


def _logit_data(seed: int) -> dict[str, torch.Tensor]:
    """make_data with logits as predictions (a few confident ones, ±40 and 60)."""
    data = make_data(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    for task in TASKS:
        z = torch.randn(600, generator=gen) * 2
        z[:3] = torch.tensor([40.0, -40.0, 60.0])
        data[task.prediction_name] = z
    return data


def _logit_references(data: dict[str, torch.Tensor], task: tmx.RecTaskInfo) -> dict[str, float]:
    """NumPy on p = sigmoid(z) (the values), on z itself (pairwise concordance)."""
    z = data[task.prediction_name].double().numpy()
    e = np.exp(-np.abs(z))
    p = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    y, w = data[task.label_name].double().numpy(), data[task.weight_name].numpy()
    i, j = np.triu_indices(len(z), k=1)
    pairs = w[i] * w[j]
    agree = np.sign(z[i] - z[j]) == np.sign(y[i] - y[j])
    mse = (w * (p - y) ** 2).sum() / w.sum()
    base = (w * y).sum() / w.sum()
    cross_entropy = (w * (np.logaddexp(0, z) - y * z)).sum()  # exact for logits: no clamp (NE's docs)
    return {
        "ne": cross_entropy / -(w.sum() * (base * np.log(base) + (1 - base) * np.log(1 - base))),
        "mse": mse,
        "avg": (w * p).sum() / w.sum(),
        "ctr": (w * y).sum() / w.sum(),
        "xauc": (pairs * agree).sum() / pairs.sum(),
        "mae": (w * np.abs(p - y)).sum() / w.sum(),
    }


def test_logits_metrics_with_and_without_the_option_in_one_module():
    """NE(from_logits=True) with "mse" keeps working; the metrics given the option read the logits themselves.

    Those of values built without it (mse, weighted_average) get sigmoid(logits), pairwise concordance and CTR
    the logits as given: with or without the option, each gives the value of the probabilities.
    """
    data = _logit_data(21)
    logits = {"from_logits": True}
    metrics = {
        "ne": lambda num_tasks: tmx.NormalizedEntropy(num_tasks, **logits),
        "mse": "mse",
        "mse_logits": lambda num_tasks: tmx.WeightedMSE(num_tasks, **logits),
        "mae_logits": lambda num_tasks: tmx.WeightedMAE(num_tasks, **logits),
        "avg": "weighted_average",
        "avg_logits": lambda num_tasks: tmx.WeightedAverage(num_tasks, **logits),
        "ctr": "ctr",
        "ctr_logits": lambda num_tasks: tmx.CTR(num_tasks, **logits),
        "xauc": "xauc",
        "xauc_logits": lambda num_tasks: tmx.XAUC(num_tasks, **logits),
    }
    module = build(metrics)
    assert module.input_domains.from_logits and module.input_domains.preds == "probability"
    values = run(module, batches(data, [0, 250, 600]))
    for task in TASKS:
        for name, value in _logit_references(data, task).items():
            for key in (name, f"{name}_logits"):
                if key in metrics:
                    np.testing.assert_allclose(values[f"{key}/{task.name}"].item(), value, rtol=1e-9, err_msg=key)


@pytest.mark.parametrize("window_size", [None, 250])
def test_a_module_whose_only_logits_metric_is_mse_feeds_sigmoid_to_the_others(window_size):
    """WeightedMSE(from_logits=True) alone says the predictions are logits: "weighted_average" gets sigmoid(logits)."""
    data = _logit_data(22)
    module = build({"mse": lambda num_tasks: tmx.WeightedMSE(num_tasks, from_logits=True), "avg": "weighted_average"})
    assert module.input_domains.from_logits
    values = run(module, batches(data, [0, 100, 350, 600]))
    for task in TASKS:
        expected = _logit_references(data, task)
        for name in ("mse", "avg"):
            np.testing.assert_allclose(values[f"{name}/{task.name}"].item(), expected[name], rtol=1e-9, err_msg=name)
    # from the config, by registry name: the same module
    config = {
        "tasks": [
            {
                "name": t.name,
                "label_name": t.label_name,
                "prediction_name": t.prediction_name,
                "weight_name": t.weight_name,
            }
            for t in TASKS
        ],
        "metrics": {"mse": {"from_logits": True}, "avg": {"metric": "weighted_average"}, "xauc": {"from_logits": True}},
        "throughput": False,
        "window_size": window_size,
    }
    module = tmx.RecMetricModule.from_config(config)
    values = run(module, batches(data, [0, 100, 350, 600]))
    for task in TASKS:
        expected = _logit_references(data, task)
        for name in ("mse", "avg", "xauc"):
            np.testing.assert_allclose(values[f"{name}/{task.name}"].item(), expected[name], rtol=1e-9, err_msg=name)


def test_a_logits_metric_of_values_next_to_a_probability_metric_disagrees():
    """The predictions cannot be logits for WeightedMSE(from_logits=True) and probabilities for AUC()."""
    for logits in (tmx.WeightedMSE(num_tasks=2, from_logits=True), tmx.XAUC(num_tasks=2, from_logits=True)):
        with pytest.raises(ValueError, match="disagree on `from_logits`"):
            build({"auc": "auc", "logits": logits})
    # the same metrics without the option agree with probabilities (today's configs)
    assert not build({"auc": "auc", "mse": "mse", "xauc": "xauc", "ctr": "ctr"}).input_domains.from_logits


def test_a_caller_that_knows_the_predictions_are_logits_gets_sigmoid_without_a_logit_metric():
    """`from_logits=True` (evaluate's --from-logits): MSE, WeightedAverage... alone read sigmoid(logits).

    Without it the module learns that the predictions are logits only from a metric built with
    from_logits=True; with none of those, MSE used to be computed on the raw logits. Metrics without
    the option (WeightedSumPredictions, R² objects) are fed sigmoid(logits); those with it take it.
    """
    data = make_data(12)
    gen = torch.Generator().manual_seed(4)
    for task in TASKS:
        data[task.prediction_name] = torch.randn(600, generator=gen, dtype=torch.float64) * 3  # logits
    metrics = {
        "mse": "mse",
        "mae": "mae",
        "avg": "weighted_average",
        "ctr": "ctr",
        "r2": tmx.WeightedR2(num_tasks=2),  # an object of real values without the option: fed sigmoid(logits)
        "sum_p": "weighted_sum_predictions",  # no option at all: fed sigmoid(logits)
        "mrr": "mrr",
    }
    module = build(metrics, from_logits=True)
    assert module.input_domains.from_logits
    values = run(module, batches(data, [0, 250, 600]))
    for task in TASKS:
        z = data[task.prediction_name].numpy()
        p, y = 1 / (1 + np.exp(-z)), data[task.label_name].double().numpy()
        w = data[task.weight_name].numpy()
        sse = (w * (p - y) ** 2).sum()
        expected = {
            "mse": sse / w.sum(),
            "mae": (w * np.abs(p - y)).sum() / w.sum(),
            "avg": (w * p).sum() / w.sum(),
            "ctr": (w * y).sum() / w.sum(),
            "r2": 1 - sse / (w * (y - (w * y).sum() / w.sum()) ** 2).sum(),
            "sum_p": (w * p).sum(),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(values[f"{name}/{task.name}"].item(), value, rtol=1e-9, err_msg=name)
    # ranking metrics rank the logits as given: the same values as a module over the same scores
    plain = run(build({"mrr": "mrr"}), batches(data, [0, 250, 600]))
    for task in TASKS:
        assert values[f"mrr/{task.name}"].item() == plain[f"mrr/{task.name}"].item()
    # metric objects reading probabilities must read logits too
    with pytest.raises(ValueError, match=r"from_logits=True .*metric\(s\) \['auc'\] read probabilities"):
        build({"mse": "mse", "auc": tmx.AUC(num_tasks=2)}, from_logits=True)
    assert build(
        {"auc": lambda num_tasks: tmx.AUC(num_tasks, from_logits=True)}, from_logits=True
    ).input_domains.from_logits
    assert not build({"mse": "mse"}).input_domains.from_logits  # only when told


@pytest.mark.parametrize("name", [n for n in metric_names() if "@" not in n])
def test_metrics_that_do_not_read_predictions_ignore_them(name):
    """`reads_predictions = False` (the module keeps logits for those metrics) holds: other predictions, same value.

    Unchecked, as the module feeds them (it checks a step once for every metric; CTR alone checks
    probabilities, as Calibration, whose compute group it shares in a MetricCollection)."""
    options = {"num_segments": 2} if name == "segmented_ne" else {}  # NE per segment: it reads them
    metric = build_metric(name, num_tasks=1, validate_args=False, **options)
    if metric.reads_predictions or not metric.has_task_dim:
        return
    gen = torch.Generator().manual_seed(8)
    target, weights = (torch.rand(50, generator=gen) < 0.4).double(), torch.rand(50, generator=gen)
    values = []
    for preds in (torch.rand(50, generator=gen), torch.randn(50, generator=gen) * 5):
        metric.reset()
        metric.update(preds, target, weights=weights)
        values.append(metric.compute())
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=0)


@pytest.mark.parametrize("labels", ["soft", "integer counts", "float 0/1"])
def test_label_kinds_take_the_right_kernels(labels):
    """Soft labels (NE's lerp), integer regression targets (y² kept) and 0/1 floats against numpy."""
    gen = torch.Generator().manual_seed(11)
    n = 500
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    if labels == "soft":
        y, metrics = torch.rand(n, generator=gen, dtype=torch.float64), {"ne": "ne", "mse": "mse"}
    elif labels == "integer counts":
        y, metrics = torch.randint(0, 5, (n,), generator=gen), {"mse": "mse", "r_squared": "r_squared"}
    else:
        y, metrics = (torch.rand(n, generator=gen) < 0.3).to(torch.float32), {"ne": "ne", "mse": "mse"}
    task = tmx.RecTaskInfo("t", "y", "p")
    values = run(tmx.RecMetricModule([task], metrics, throughput=False), batches({"p": p, "y": y}, [0, 120, n]))
    pn, yn = p.numpy(), y.double().numpy()
    np.testing.assert_allclose(values["mse/t"], np.mean((pn - yn) ** 2), rtol=1e-12)
    if "ne" in metrics:
        ce = -np.mean(yn * np.log(pn) + (1 - yn) * np.log(1 - pn))
        base = yn.mean()
        np.testing.assert_allclose(
            values["ne/t"], ce / -(base * np.log(base) + (1 - base) * np.log(1 - base)), rtol=1e-10
        )
    else:
        np.testing.assert_allclose(
            values["r_squared/t"], 1 - np.sum((pn - yn) ** 2) / np.sum((yn - yn.mean()) ** 2), rtol=1e-10
        )


@pytest.mark.parametrize(
    "dtypes",
    [("float32", "float32", "float32"), ("float32", "float64", "int64"), ("float64", "float64", "float64")],
)
@pytest.mark.parametrize("shared", [False, True])
def test_weight_columns_of_every_task_checked_together_give_each_task_its_own(dtypes, shared):
    """Three weighted tasks with columns of one or several dtypes, two of them maybe one object: each task's values are its own.

    Reference: numpy over each task's columns. A negative weight in one column is named by its task
    and key and leaves the module as it was; a step whose every column is zero is skipped.
    """
    gen = torch.Generator().manual_seed(5)
    n, names = 700, ("a", "b", "c")
    tasks = [tmx.RecTaskInfo(t, f"{t}_y", f"{t}_p", f"{t}_w") for t in names]
    data = {}
    for t, dtype in zip(names, dtypes):
        data[f"{t}_p"] = torch.rand(n, generator=gen)
        data[f"{t}_y"] = (torch.rand(n, generator=gen) < 0.4).float()
        data[f"{t}_w"] = torch.randint(0, 4, (n,), generator=gen).to(getattr(torch, dtype))
    if shared:  # two tasks read one column object
        data["b_w"] = data["a_w"]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "mse": "mse"}, throughput=False)
    for lo, hi in ((0, 300), (300, n)):
        module.update({k: v[lo:hi] for k, v in data.items()})
    values = module.compute()
    for t in names:
        p, y, w = (data[f"{t}_{c}"].double().numpy() for c in "pyw")
        np.testing.assert_allclose(values[f"ctr/{t}"], np.sum(w * y) / np.sum(w), rtol=1e-12)
        np.testing.assert_allclose(values[f"mse/{t}"], np.sum(w * (p - y) ** 2) / np.sum(w), rtol=1e-12)
    before = copy.deepcopy(module.state_dict())
    bad = {k: v[:50].clone() for k, v in data.items()}
    bad["c_w"] = bad["c_w"].to(torch.float64)
    bad["c_w"][7] = -1.0
    with pytest.raises(ValueError, match=r"Task 'c'.*'c_w'.*non-negative"):
        module.update(bad)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (torch.int64, torch.float16),
        (torch.int64, torch.bfloat16),
        (torch.int32, torch.float32),
        (torch.int64, torch.uint64),
        (torch.uint64, torch.int64),
    ],
)
def test_label_and_weight_columns_of_different_dtypes_across_tasks_keep_their_values(first, second):
    """Tasks whose label or weight columns have different dtypes are read exactly, each in float64.

    ``torch.stack`` promoted them to the narrowest float among them (int64 weights next to a
    float16 column: 2049 read as 2048; int64 labels next to bfloat16 ones: 257 as 256; int32 next
    to float32 above 2**24), or raised a bare RuntimeError for int64 next to uint64. Reference:
    numpy over each task's columns as given.
    """
    gen = torch.Generator().manual_seed(23)
    n = 400
    tasks = [tmx.RecTaskInfo(t, f"{t}_y", f"{t}_p", f"{t}_w") for t in ("a", "b")]
    # not representable in the other task's float dtype (float16: 2049, bfloat16: 257, float32: 2**25 + 1)
    big = 2**25 + 1 if first == torch.int32 else 2049
    data = {
        "a_p": torch.rand(n, generator=gen),
        "b_p": torch.rand(n, generator=gen, dtype=torch.float64),
        "a_y": (torch.randint(0, 300, (n,), generator=gen) + torch.tensor([257, big] + [0] * (n - 2))).to(first),
        "b_y": torch.randint(0, 4, (n,), generator=gen).to(second),
        "a_w": (torch.randint(1, 5, (n,), generator=gen) + torch.tensor([big] + [0] * (n - 1))).to(first),
        "b_w": torch.randint(0, 4, (n,), generator=gen).to(second),
    }
    module = tmx.RecMetricModule(tasks, {"mse": "mse", "mae": "mae", "avg": "weighted_average"}, throughput=False)
    for lo, hi in ((0, 150), (150, n)):
        module.update({k: v[lo:hi] for k, v in data.items()})
    values = module.compute()
    for t in ("a", "b"):
        p = data[f"{t}_p"].double().numpy()
        y, w = (data[f"{t}_{c}"].to(torch.float64).numpy() for c in "yw")
        np.testing.assert_allclose(values[f"mse/{t}"], np.sum(w * (p - y) ** 2) / np.sum(w), rtol=1e-12)
        np.testing.assert_allclose(values[f"mae/{t}"], np.sum(w * np.abs(p - y)) / np.sum(w), rtol=1e-12)
        np.testing.assert_allclose(values[f"avg/{t}"], np.sum(w * p) / np.sum(w), rtol=1e-12)


def test_a_task_without_labels_for_some_rows_weighs_them_zero_and_an_empty_column_is_refused():
    """Every task's columns of a step have one length (docs/module.md, Tasks and inputs).

    A task whose column is empty while the others have rows is a ValueError naming the task and the
    column, and changes no state; the documented way, weight 0 on the rows it has no label for, gives
    the pointwise and AUC values over the other rows. Reference: numpy and sklearn over the kept rows.
    """
    gen = torch.Generator().manual_seed(31)
    n = 300
    data = make_data(31, n)
    module = build({"ne": "ne", "ctr": "ctr", "auc": "auc", "gauc": "gauc"})
    before = copy.deepcopy(module.state_dict())
    empty = dict(data, buy_pred=data["buy_pred"][:0], buy_label=data["buy_label"][:0], buy_w=data["buy_w"][:0])
    with pytest.raises(ValueError, match=r"Task 'buy'.*'buy_pred'.*\(0,\)"):
        module.update(empty)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))
    keep = torch.rand(n, generator=gen) < 0.6
    module.update(dict(data, buy_w=data["buy_w"] * keep))
    values = module.compute()
    for task, rows in (("click", torch.ones(n, dtype=torch.bool)), ("buy", keep)):
        p, y, w = (data[f"{task}_{c}"][rows].double().numpy() for c in ("pred", "label", "w"))
        user = data["user"][rows].numpy()
        np.testing.assert_allclose(values[f"ne/{task}"], ref_ne(p, y, w), rtol=1e-9)
        np.testing.assert_allclose(values[f"ctr/{task}"], np.sum(w * y) / np.sum(w), rtol=1e-12)
        # the exact AUC keeps float32 weights (docs/auc.md)
        np.testing.assert_allclose(values[f"auc/{task}"], roc_auc_score(y, p, sample_weight=w), rtol=1e-6)
        np.testing.assert_allclose(values[f"gauc/{task}"], ref_grouped(p, y, user, w), rtol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_small_steps_check_their_weight_columns_together_and_name_a_refused_one(bad):
    """Small steps whose tasks give float32 weight columns of their own are checked in one read.

    Reference: numpy's weighted CTR and MSE of each task over steps of 8 samples (weights of exactly
    one, then others); a refused value in the second task's column is named by its task and key,
    and leaves the module as it was.
    """
    gen = torch.Generator().manual_seed(11)
    names = ("a", "b", "c")
    tasks = [tmx.RecTaskInfo(t, f"{t}_y", f"{t}_p", f"{t}_w") for t in names]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "mse": "mse"}, window_size=16, throughput=False)
    steps = []
    for k in range(4):
        step = {}
        for t in names:
            step[f"{t}_p"] = torch.rand(8, generator=gen)
            step[f"{t}_y"] = (torch.rand(8, generator=gen) < 0.5).float()
            step[f"{t}_w"] = torch.ones(8) if k < 2 else 3 * torch.rand(8, generator=gen)
        steps.append(step)
        module.update(step)
    values = module.compute()
    for t in names:
        p, y, w = (torch.cat([s[f"{t}_{c}"] for s in steps]).double().numpy() for c in "pyw")
        np.testing.assert_allclose(values[f"ctr/{t}"], np.sum(w * y) / np.sum(w), rtol=1e-12)
        np.testing.assert_allclose(values[f"mse/{t}"], np.sum(w * (p - y) ** 2) / np.sum(w), rtol=1e-12)
        # the window: the newest 16 samples (the last two steps)
        np.testing.assert_allclose(values[f"ctr/{t}/window"], np.sum((w * y)[-16:]) / np.sum(w[-16:]), rtol=1e-12)
    before = copy.deepcopy(module.state_dict())
    wrong = {k: v.clone() for k, v in steps[-1].items()}
    wrong["b_w"][3] = bad
    with pytest.raises(ValueError, match=r"Task 'b'.*'b_w'.*finite and non-negative"):
        module.update(wrong)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("bad", "match"), [(1e-40, "float32's range"), (1e39, "float32's range"), (-1.0, "non-negative")]
)
def test_small_steps_with_an_exact_auc_check_their_weight_columns_together_and_name_a_refused_one(
    dtype, bad, match, monkeypatch
):
    """With an exact AUC (weights kept as float32) small steps' weight columns are also checked as one stack.

    Reference: scikit-learn's weighted ROC AUC and numpy's weighted CTR of each task over steps of 8
    samples. A float64 weight that float32 cannot hold (non-zero below its smallest normal value or
    above its largest) or a negative one in the second task's column is named by its task and key,
    and leaves every metric as it was.
    """
    gen = torch.Generator().manual_seed(12)
    names = ("a", "b", "c")
    tasks = [tmx.RecTaskInfo(t, f"{t}_y", f"{t}_p", f"{t}_w") for t in names]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "auc": "auc"}, throughput=False)
    checked = []  # the weights each step's check read: one (T, N) stack
    check = module_mod._check_values_bounds
    monkeypatch.setattr(module_mod, "_check_values_bounds", lambda *a, **k: checked.append(a[2]) or check(*a, **k))
    steps = []
    for k in range(4):
        step = {}
        for t in names:
            step[f"{t}_p"] = torch.rand(8, generator=gen)
            step[f"{t}_y"] = (torch.arange(8) % 2).float()  # both classes in every step
            step[f"{t}_w"] = (torch.ones(8) if k < 2 else 3 * torch.rand(8, generator=gen)).to(dtype)
        steps.append(step)
        module.update(step)
    assert [tuple(w.shape) for w in checked] == [(3, 8)] * 4
    values = module.compute()
    for t in names:
        p, y, w = (torch.cat([s[f"{t}_{c}"] for s in steps]).double().numpy() for c in "pyw")
        np.testing.assert_allclose(values[f"ctr/{t}"], np.sum(w * y) / np.sum(w), rtol=1e-12)
        # the exact AUC keeps float32 weights (docs/auc.md)
        np.testing.assert_allclose(values[f"auc/{t}"], roc_auc_score(y, p, sample_weight=w), rtol=1e-6)
    before = copy.deepcopy(module.state_dict())
    wrong = {k: v.clone() for k, v in steps[-1].items()}
    wrong["b_w"] = wrong["b_w"].double()  # every other column keeps `dtype`: checked apart from them, or not
    wrong["b_w"][3] = bad
    with pytest.raises(ValueError, match=rf"Task 'b'.*'b_w'.*{match}"):
        module.update(wrong)
    if dtype == torch.float64:  # all three float64 columns: the one stack's check refuses it
        wrong["b_w"] = wrong["b_w"].clone()
        with pytest.raises(ValueError, match=rf"Task 'b'.*'b_w'.*{match}"):
            module.update(wrong)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))
    np.testing.assert_array_equal([v.item() for v in module.compute().values()], [v.item() for v in values.values()])


def test_weights_default_to_one_and_one_shared_column_serves_every_task():
    data = make_data(2)
    no_weights = {k: v for k, v in data.items() if not k.endswith("_w")}
    shared_tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w") for t in TASKS]
    metrics = {"ne": "ne", "auc": "auc", "mse": "mse"}
    unweighted = run(tmx.RecMetricModule(TASKS, metrics, throughput=False), [no_weights])
    ones = run(tmx.RecMetricModule(shared_tasks, metrics, throughput=False), [no_weights | {"w": torch.ones(600)}])
    assert unweighted.keys() == ones.keys()
    for key in unweighted:
        torch.testing.assert_close(unweighted[key], ones[key], rtol=1e-12, atol=0)
    # one task weighted, the other not: the missing column means weight 1
    mixed = run(tmx.RecMetricModule(TASKS, metrics, throughput=False), [no_weights | {"click_w": data["click_w"]}])
    torch.testing.assert_close(mixed["ne/buy"], unweighted["ne/buy"], rtol=1e-12, atol=0)
    alone = tmx.NormalizedEntropy()
    alone.update(data["click_pred"], data["click_label"], data["click_w"])
    torch.testing.assert_close(mixed["ne/click"], alone.compute(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("device_path", [False, True])
def test_weights_of_exactly_one_take_the_unweighted_kernels(monkeypatch, device_path):
    """All-ones weight columns (TorchRec's default) give the unweighted values, on both paths."""
    seen = []
    real = module_mod.sharing_sums
    monkeypatch.setattr(module_mod, "sharing_sums", lambda p, y, w, **kw: seen.append(w) or real(p, y, w, **kw))
    with force_device_path(device_path):
        data = make_data(6)
        no_weights = {k: v for k, v in data.items() if not k.endswith("_w")}
        parts = [0, 250, 600]
        ones = no_weights | {"click_w": torch.ones(600), "buy_w": torch.ones(600, dtype=torch.float64)}
        for window in (None, 400):
            expected = run(build(window_size=window), batches(no_weights, parts))
            seen.clear()
            values = run(build(window_size=window), batches(ones, parts))
            assert seen == [None, None]
            assert values.keys() == expected.keys()
            for key, value in expected.items():
                torch.testing.assert_close(values[key], value, rtol=0, atol=0, equal_nan=True)
        # a single weight other than 1 keeps the weighted path
        seen.clear()
        heavier = ones | {"buy_w": torch.ones(600).index_fill_(0, torch.tensor([7]), 3.0)}
        values = run(build(), [heavier])
        assert seen[0] is not None and seen[0].shape == (2, 600)
        torch.testing.assert_close(values["ne/buy"], standalone("ne", 1, heavier))


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_label_weight_and_group_columns_are_accepted(dtype, device_path):
    """uint16/32/64 weight columns raised NotImplementedError (no min/max kernel for them on the CPU).

    The weights reach the top of each dtype (uint64 ones past 2**63, read as float64, not negative).
    """
    data = make_data(17)
    rng = np.random.default_rng(17)
    scale = 2 ** (torch.iinfo(dtype).bits - 2)
    unsigned = dict(data)
    for task in ("click", "buy"):
        small = rng.integers(0, 4, size=600).astype(np.uint64)
        unsigned[f"{task}_w"] = torch.from_numpy(small * np.uint64(scale)).to(dtype)
        data[f"{task}_w"] = torch.from_numpy(small.astype(np.float64) * scale)
        unsigned[f"{task}_label"] = data[f"{task}_label"].to(dtype)
    unsigned["user"] = data["user"].to(dtype)
    metrics = {"ne": "ne", "ctr": "ctr", "auc": "auc", "auprc": "auprc", "gauc": "gauc"}
    with force_device_path(device_path):
        values = run(tmx.RecMetricModule(TASKS, metrics, throughput=False), [unsigned])
    for task in ("click", "buy"):
        p, y, w = (data[f"{task}_{c}"].double().numpy() for c in ("pred", "label", "w"))
        user = data["user"].numpy()
        expected = {
            "ne": ref_ne(p, y, w),
            "ctr": (w * y).sum() / w.sum(),
            "auc": roc_auc_score(y, p, sample_weight=w),
            "auprc": average_precision_score(y, p, sample_weight=w),
            "gauc": ref_grouped(p, y, user, w),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(values[f"{name}/{task}"].item(), value, rtol=1e-9, err_msg=f"{name}/{task}")


def _ndcg_at_k(p: np.ndarray, y: np.ndarray, w: np.ndarray, k: int) -> float:
    """Weighted mean over the rows of ``(queries, candidates)`` of the linear-gain NDCG@k (plain numpy)."""
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    discount = 1 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(y, order, axis=1) * discount).sum(axis=1)
    idcg = (-np.sort(-y, axis=1)[:, :k] * discount).sum(axis=1)
    query_w = w.max(axis=1)  # every row of a query has the same weight here
    return float((query_w * dcg / idcg).sum() / query_w.sum())


@pytest.mark.parametrize("window_size", [None, 1000])
def test_weight_name_none_means_unit_weights_next_to_weighted_tasks(window_size):
    """``RecTaskInfo(..., weight_name=None)`` was refused ("non-empty string"); it is a task without a weight
    column: weight 1, the ``"weight"`` column another task reads ignored, no warning, beside weighted tasks."""
    rng = np.random.default_rng(21)
    queries, per_query = 50, 4
    n = queries * per_query
    cols = {}
    for task in ("a", "b", "c"):
        p = rng.uniform(0.02, 0.98, n)
        y = (rng.random(n) < p).astype(np.float64)
        y[::per_query] = 1.0  # every query holds a relevant row
        cols[task] = (p, y)
    w_b = np.repeat(rng.uniform(0.5, 2.0, queries), per_query)  # one weight per query: the ranking reference's
    step = {f"{t}_{c}": torch.from_numpy(v) for t, (p, y) in cols.items() for c, v in (("pred", p), ("label", y))}
    step |= {"b_w": torch.from_numpy(w_b), "weight": torch.from_numpy(rng.uniform(3.0, 4.0, n)), "q": torch.arange(n)}
    step["q"] = step["q"] // per_query
    tasks = [
        tmx.RecTaskInfo("a", "a_label", "a_pred", weight_name=None, session_id_name="q"),
        tmx.RecTaskInfo("b", "b_label", "b_pred", "b_w", session_id_name="q"),
        tmx.RecTaskInfo("c", "c_label", "c_pred", weight_name="weight", session_id_name="q"),
    ]
    metrics = {"ne": "ne", "auc": "auc", "calibration": "calibration", "ndcg@3": "ndcg@3"}
    module = tmx.RecMetricModule(tasks, metrics, window_size=window_size, throughput=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.update(step)
        values = module.compute()
    for task, w in (("a", np.ones(n)), ("b", w_b), ("c", step["weight"].numpy())):
        p, y = cols[task]
        expected = {
            "ne": ref_ne(p, y, w),
            "auc": roc_auc_score(y, p, sample_weight=w),
            "calibration": (w * p).sum() / (w * y).sum(),
            "ndcg@3": _ndcg_at_k(*(v.reshape(queries, per_query) for v in (p, y, w)), 3),
        }
        for name, value in expected.items():
            for suffix in ("", "/window") if window_size else ("",):
                key = f"{name}/{task}{suffix}"
                np.testing.assert_allclose(values[key].item(), value, rtol=1e-9, err_msg=key)
    # every task unweighted, a step without any weight column: no word, weights 1
    alone = tmx.RecMetricModule([tmx.RecTaskInfo("a", "a_label", "a_pred", None)], ["ctr"], throughput=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone.update({"a_pred": step["a_pred"], "a_label": step["a_label"]})
    assert alone.compute()["ctr/a"].item() == pytest.approx(cols["a"][1].mean(), rel=1e-12)


def test_weight_name_null_in_a_config_and_bad_weight_names():
    """``from_config``'s ``weight_name: null`` (YAML) is a task without weights; an empty or non-string name is
    still refused, naming the field."""
    config = {"tasks": [{"name": "t", "weight_name": None}], "metrics": {"ctr": "ctr"}, "throughput": False}
    module = tmx.RecMetricModule.from_config(config)
    assert module.tasks[0].weight_name is None
    y = np.array([0.0, 1.0, 1.0, 0.0])
    module.update({"prediction": torch.tensor([0.1, 0.8, 0.6, 0.3]), "label": torch.from_numpy(y),
                   "weight": torch.tensor([9.0, 1.0, 1.0, 1.0])})  # fmt: skip
    assert module.compute()["ctr/t"].item() == pytest.approx(y.mean(), rel=1e-12)
    for bad in ("", 3):
        with pytest.raises(ValueError, match=r"`RecTaskInfo.weight_name` to be a non-empty string or None, got"):
            tmx.RecTaskInfo("t", weight_name=bad)


def test_a_task_without_weights_gets_ones_for_ranking_whether_or_not_the_others_are_all_one():
    """Ranking copies keep rows: a task with no weight column gets ones in every step where another
    task has weights, also in a step where those weights are all 1 (the pointwise kernels then run
    unweighted), so its rows never mix weighted and unweighted batches (which a window refuses)."""
    data = make_data(8)
    no_buy_w = {k: v for k, v in data.items() if k != "buy_w"}
    parts = batches(no_buy_w, [0, 300, 600])
    parts[0]["click_w"] = torch.ones(300, dtype=torch.float64)  # all 1 in the first step only
    values = run(build({"ndcg@3": "ndcg@3", "ne": "ne"}, window_size=1000), parts)
    alone = tmx.NDCG(k=3)
    alone.update(data["buy_pred"], data["buy_label"], indexes=data["query"])
    torch.testing.assert_close(values["ndcg@3/buy"], alone.compute(), rtol=1e-12, atol=1e-12)
    click = tmx.NDCG(k=3)
    weights = torch.cat([torch.ones(300, dtype=torch.float64), data["click_w"][300:]])
    click.update(data["click_pred"], data["click_label"], indexes=data["query"], weights=weights)
    torch.testing.assert_close(values["ndcg@3/click"], click.compute(), rtol=1e-12, atol=1e-12)


def test_compute_groups_are_explicit():
    module = build()
    groups = sorted(sorted(g) for g in module.compute_groups)
    assert groups == sorted(
        [
            ["log_loss", "ne"],
            ["ne_eta"],  # another eta: other statistics, never merged
            ["calibration", "ctr"],
            ["accuracy"],
            ["mse", "rmse"],
            ["auc", "auprc"],
            ["auc_binned"],
            ["gauc"],
        ]
    )


def test_the_step_is_validated_once_and_the_metrics_do_not_validate_again(monkeypatch):
    calls = []
    real = module_mod._check_values_bounds  # the step's check (it returns the weights' bounds too)
    monkeypatch.setattr(module_mod, "_check_values_bounds", lambda *a, **k: calls.append(a) or real(*a, **k))

    def fail(*args, **kwargs):
        raise AssertionError("a metric validated its inputs again")

    import torchmetrics_ext.functional.ranking._inputs as ranking_inputs
    import torchmetrics_ext.utilities.checks as checks

    monkeypatch.setattr(checks, "_check_values_bounds", fail)  # check_pointwise, per metric
    monkeypatch.setattr(ranking_inputs, "_check_values", fail)
    module = build()
    for part in batches(make_data(3), [0, 300, 600]):
        module.update(part)
    assert len(calls) == 2
    # the joint domain: probabilities (NE) and binary labels (AUC, accuracy), float32 weights (exact AUC)
    assert module._domains == tmx.InputDomains("probability", "binary", False, float32_weights=True)


# ----------------------------------------------------------------------------- bad input


def _drop(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


def _set(key, fn):
    return lambda d: d | {key: fn(d[key])}


BAD = [
    (_drop("buy_pred"), KeyError, "Task 'buy'.*prediction column 'buy_pred'"),
    (_drop("click_label"), KeyError, "Task 'click'.*label column 'click_label'"),
    (_drop("user"), KeyError, "Task 'click'.*group id column 'user'"),
    (_drop("query"), KeyError, "session id column 'query'"),
    # type errors name the task and the column too
    (
        _set("click_pred", lambda v: v.tolist()),
        TypeError,
        r"^Task 'click', `model_out\['click_pred'\]`: .*torch.Tensor, got list",
    ),
    (_set("buy_label", lambda v: v.tolist()), TypeError, r"^Task 'buy', `model_out\['buy_label'\]`: .*torch.Tensor"),
    (
        _set("buy_pred", lambda v: v.to(torch.complex64)),
        TypeError,
        r"^Task 'buy', `model_out\['buy_pred'\]`: .*real tensor",
    ),
    (
        _set("buy_pred", lambda v: (v * 10).long()),
        TypeError,
        r"^Task 'buy', `model_out\['buy_pred'\]`: expected floating point predictions.*torch.int64",
    ),
    (_set("buy_label", lambda v: v[:-1]), ValueError, "Task 'buy'.*'buy_label'.*shape"),
    (_set("click_pred", lambda v: v.reshape(-1, 1)), ValueError, r"shape \(N,\)"),
    # a model head's (N, 1) output, its transpose, one sample, a (N, T) head: the message says what to pass
    (
        _set("click_label", lambda v: v.reshape(-1, 1)),
        ValueError,
        r"^Task 'click': expected `model_out\['click_label'\]` of shape \(N,\), got \(600, 1\): a model head of one "
        r"output; pass `model_out\['click_label'\]\.squeeze\(-1\)`, shape \(600,\)\.$",
    ),
    (_set("buy_pred", lambda v: v.reshape(1, -1)), ValueError, r"pass `model_out\['buy_pred'\]\.squeeze\(0\)`"),
    (_set("buy_w", lambda v: v[0]), ValueError, r"got \(\): one sample is a column of shape \(1,\)"),
    (
        _set("click_pred", lambda v: torch.stack([v, v], dim=1)),
        ValueError,
        r"got \(600, 2\): one column per task; give each task its own \(N,\) column",
    ),
    # value errors name the task and the column that fails on its own
    (_set("click_pred", lambda v: v + 1), ValueError, "Task 'click'.*'click_pred'.*probabilities in \\[0, 1\\]"),
    (_set("buy_pred", lambda v: torch.where(v > 0.5, float("nan"), v)), ValueError, "Task 'buy'.*'buy_pred'.*finite"),
    (_set("click_label", lambda v: v * 2), ValueError, "Task 'click'.*'click_label'.*binary labels"),
    (_set("click_label", lambda v: v.double() * 0.5), ValueError, "'click_label'.*binary labels"),
    (_set("buy_w", lambda v: -v), ValueError, "Task 'buy'.*'buy_w'.*non-negative"),
    (_set("buy_w", lambda v: torch.where(v > 1.5, float("nan"), v)), ValueError, "'buy_w'.*`weights`"),
    (_set("click_w", lambda v: torch.where(v > 1.5, float("inf"), 1.0)), ValueError, "'click_w'.*`weights`"),
    (_set("user", lambda v: v.double()), TypeError, "^Task 'click', `model_out\\['user'\\]`: expected integer ids"),
    (_set("query", lambda v: v[:10]), ValueError, "'query'.*shape"),
]


@pytest.mark.parametrize("corrupt, exc, match", BAD)
def test_a_rejected_step_changes_no_metric(corrupt, exc, match):
    data = make_data(4)
    module = build()
    module.update(data)
    before = copy.deepcopy(module.state_dict())
    expected = run(module, [])
    with pytest.raises(exc, match=match):
        module.update(corrupt(make_data(5)))
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        elif isinstance(value, list):
            assert len(value) == len(after[key]) and all(torch.equal(a, b) for a, b in zip(value, after[key])), key
        else:
            assert value == after[key], key
    for key, value in run(module, []).items():
        torch.testing.assert_close(value, expected[key], equal_nan=True)


def test_a_missing_column_names_the_keys_there_are():
    """A new user's first step: the error lists ``model_out``'s keys, the closest one and the default names."""
    import re

    given = {"click_pred": torch.rand(4), "click_label": torch.tensor([0, 1, 0, 1])}
    plain = tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=False)  # reads 'prediction' and 'label'
    with pytest.raises(KeyError) as caught:
        plain.update(given)
    text = str(caught.value)
    assert f"its keys are {sorted(given, reverse=True)}" in text  # in the dict's order
    assert "by its name alone reads the columns 'prediction' and 'label'" in text
    assert "RecTaskInfo('click', label_name=..., prediction_name=...)" in text
    task = tmx.RecTaskInfo("click", "click_label", "click_pred")
    typo = {"click_prd": given["click_pred"], "click_label": given["click_label"]}
    with pytest.raises(KeyError, match=re.escape("column 'click_pred' (did you mean 'click_prd'?); its keys are")):
        tmx.RecMetricModule([task], {"ne": "ne"}, throughput=False).update(typo)


def test_a_missing_column_is_never_guessed_as_a_column_another_task_reads():
    """A step without `like_label` was told "did you mean 'click_label'?": the click task's labels, which
    read as the like task's would score one task twice. A real typo of the key is still suggested."""
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred") for t in ("click", "like")]
    module = tmx.RecMetricModule(tasks, {"ne": "ne"}, throughput=False)
    step = {"click_pred": torch.rand(4), "click_label": torch.tensor([0, 1, 0, 1]), "like_pred": torch.rand(4)}
    with pytest.raises(KeyError) as caught:
        module.update(step)
    assert "has no label column 'like_label'; its keys are" in str(caught.value)  # no guess
    with pytest.raises(KeyError, match=re.escape("column 'like_label' (did you mean 'like_labels'?)")):
        module.update({**step, "like_labels": torch.tensor([1, 0, 0, 1])})


def test_an_empty_step_changes_nothing():
    data = make_data(6)
    module = build()
    module.update(data)
    expected = run(module, [])
    values = run(module, [{k: v[:0] for k, v in data.items()}])
    for key, value in values.items():
        torch.testing.assert_close(value, expected[key], equal_nan=True)


CONSTRUCTOR_ERRORS = [
    (dict(tasks=[]), ValueError, "non-empty list"),
    (dict(tasks=["a", "a"]), ValueError, "distinct task names"),
    (dict(metrics={}), ValueError, "non-empty dict"),
    # a list takes registry names only (as from_config's): objects, classes and factories need their keys
    (
        dict(metrics=["ne", tmx.AUC]),
        ValueError,
        r"a registry name \(str\), got <class .*AUC'> \(ABCMeta\); give metric objects, classes and factories in the "
        r"dict form \{name: metric\}",
    ),
    (dict(metrics=[]), ValueError, "non-empty dict"),
    (dict(metrics={"ne": tmx.NormalizedEntropy(num_tasks=3)}), ValueError, "built for 3 task"),
    (
        dict(metrics={"ne": "nee"}),
        ValueError,
        r"Unknown metric name 'nee' \(did you mean 'ne'\?\); known names: ne, log_loss",
    ),
    (dict(metrics={"a/b": "ne"}), ValueError, "without '/'"),
    (
        dict(metrics={"ne": lambda num_tasks: tmx.NormalizedEntropy(num_tasks, from_logits=True), "auc": "auc"}),
        ValueError,
        "disagree on `from_logits`.*ne=True, auc=False",
    ),
    (
        dict(metrics={"mc": tmx.MulticlassRecallAtK(k=1, num_classes=3)}),
        TypeError,
        r"'mc' \(MulticlassRecallAtK\) cannot be fed .*takes other inputs",
    ),
    (dict(metrics={"sum": lambda num_tasks: Sum()}), TypeError, r"Sum.update\(value.*standalone metric"),
    (dict(metrics={"x": lambda num_tasks: torchmetrics.MeanMetric()}), TypeError, "not one of the package's metrics"),
    # a TorchMetrics class (or a partial of one), as a MetricCollection takes it: refused by name before the call,
    # which its **kwargs took and TorchMetrics refused with a bare "Unexpected keyword arguments: `num_tasks`"
    (
        dict(metrics={"auroc": torchmetrics.classification.BinaryAUROC}),
        TypeError,
        r"Metric 'auroc' \(BinaryAUROC\) is not one of the package's metrics",
    ),
    (
        dict(metrics={"mse": functools.partial(torchmetrics.MeanSquaredError, squared=False)}),
        TypeError,
        r"Metric 'mse' \(MeanSquaredError\) is not one of the package's metrics",
    ),
    # the package's own wrapper, which the module builds itself: named as such, with the module's option instead
    (
        dict(metrics={"ctr": lambda num_tasks: tmx.Windowed(tmx.CTR(num_tasks), window_size=5)}),
        TypeError,
        r"Metric 'ctr' is a Windowed \(window_size=5\): RecMetricModule windows its metrics itself.*`window_size=5`",
    ),
    # a value per task that is not one number: a key per task could not hold it
    (
        dict(metrics={"rel": tmx.Reliability}),
        TypeError,
        r"'rel' \(Reliability\) reports a 1-D value per task .*one number per key",
    ),
    # Segmented: fed the group id column as segment ids, when its wrapped metric takes the columns
    (
        dict(metrics={"seg": lambda num_tasks: tmx.Segmented(tmx.TensorWeightedAverage(num_tasks), 3)}),
        TypeError,
        r"'seg' \(Segmented\(TensorWeightedAverage\)\) cannot be fed",
    ),
    # update(values, weights): not the columns the module passes (every update crashed after others took it)
    (dict(metrics={"twa": tmx.TensorWeightedAverage}), TypeError, r"TensorWeightedAverage.update\(values"),
    # NaN labels are its input; the module rejects them: it could only ever count 0
    (dict(metrics={"missing": tmx.NumMissingLabels}), TypeError, "'missing' \\(NumMissingLabels\\) cannot be fed"),
    (dict(metrics={"qps": tmx.TowerQPS}), TypeError, "TowerQPS.*cannot be fed"),
    (dict(metrics={"x": 3}), TypeError, "a metric, a class, a factory or a registry name"),
    (
        dict(tasks=["click", tmx.RecTaskInfo("buy", "l", "p")], metrics={"gauc": "gauc"}),
        ValueError,
        "task 'click' must set RecTaskInfo.group_id",
    ),
    (
        dict(tasks=["click", "like"]),
        ValueError,
        r"Tasks 'click' and 'like' read the same columns \(prediction 'prediction', label 'label', weight 'weight'\)"
        r".*plain name.*"
        r"RecTaskInfo\('like', label_name='like_label', prediction_name='like_pred'\)",
    ),
    (
        dict(tasks=[tmx.RecTaskInfo("a", "y", "p"), tmx.RecTaskInfo("b", "y", "q"), tmx.RecTaskInfo("c", "y", "p")]),
        ValueError,
        "Tasks 'a' and 'c' read the same columns",
    ),
    (dict(tasks=["click"], metrics={"ndcg": "ndcg"}), ValueError, "must set RecTaskInfo.session_id_name"),
    (
        dict(
            tasks=[tmx.RecTaskInfo("a", group_id_name="u1"), tmx.RecTaskInfo("b", "l", "p", group_id_name="u2")],
            metrics={"gauc": "gauc"},
        ),
        ValueError,
        "shares one group id column",
    ),
    (dict(window_size=0), ValueError, "window_size"),
    (dict(compute_interval_steps=0), ValueError, "compute_interval_steps"),
    (dict(key_style="tensorboard"), ValueError, "key_style"),
    (dict(prefix=3), ValueError, "prefix"),
    (dict(state_metrics={"lr": 0.1}), ValueError, "state_metrics"),
    (dict(state_metrics={"lr/group": lambda: 0.1}), ValueError, "without '/'"),
    (dict(state_metrics={"ne": lambda: 0.1}), ValueError, "State metric 'ne' has the name of a metric"),
]


def test_a_metric_whose_update_does_not_bind_the_modules_call_is_refused():
    """Declared domains are not enough: ``update`` must take the call the module makes (no step half-applied)."""

    class ValuesOnly(tmx.WeightedAverage):
        def update(self, values, weights=None):  # type: ignore[override]
            super().update(values, values, weights)

    with pytest.raises(TypeError, match=r"'odd' \(ValuesOnly\) cannot be fed .*update\(values, weights=None\)"):
        tmx.RecMetricModule(["click"], {"ctr": "ctr", "odd": ValuesOnly}, throughput=False)


def _hindsight_reference(p, y, w, target_precision, num_thresholds):
    """Brute force over the thresholds j / (B - 1): the lowest whose precision (p >= t) reaches the target."""
    for t in np.arange(num_thresholds) / (num_thresholds - 1):
        chosen = p >= t
        tp, fp = (w * y * chosen).sum(), (w * (1 - y) * chosen).sum()
        if tp + fp > 0 and tp / (tp + fp) >= target_precision:
            return {"threshold": t, "precision": tp / (tp + fp), "recall": tp / (w * y).sum()}
    raise AssertionError("no threshold reaches the target: pick other data")


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
def test_hindsight_target_pr_reports_one_key_per_value_and_task(key_style):
    """A dict of one number per task, as RankingMetrics': ``{name}.{entry}/{task}`` (lifetime and window)."""
    gen = torch.Generator().manual_seed(3)
    data = {}
    for task, power in (("click", 1), ("buy", 2)):  # labels drawn with probability p or p^2
        data[f"{task}_pred"] = torch.rand(400, generator=gen)
        data[f"{task}_label"] = (torch.rand(400, generator=gen) < data[f"{task}_pred"] ** power).long()
        data[f"{task}_w"] = torch.rand(400, generator=gen, dtype=torch.float64) * 2
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", f"{t}_w") for t in ("click", "buy")],
        {"hpr": lambda num_tasks: tmx.HindsightTargetPR(num_tasks, target_precision=0.7, num_thresholds=21)},
        throughput=False,
        window_size=150,
        key_style=key_style,
    )
    for part in batches(data, [0, 250, 400]):
        module.update(part)
    values = module.compute()
    assert len(values) == 2 * 3 * 2  # tasks x entries x (lifetime, window)
    for task in ("click", "buy"):
        p, y, w = (data[f"{task}_{c}"].double().numpy() for c in ("pred", "label", "w"))
        for part, rows in (("lifetime", slice(0, 400)), ("window", slice(250, 400))):
            expected = _hindsight_reference(p[rows], y[rows], w[rows], 0.7, 21)
            assert 0 < expected["threshold"] < 1  # a threshold inside the range
            for entry, value in expected.items():
                if key_style == "torchrec":
                    key = f"hpr-{task}|{part}_{entry}"
                else:
                    key = f"hpr.{entry}/{task}" + ("/window" if part == "window" else "")
                np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


def test_tasks_on_the_same_columns_with_other_weights_are_two_views():
    """Same predictions and labels, another weight column (e.g. debiasing weights): different values, accepted."""
    tasks = [tmx.RecTaskInfo("click", "y", "p"), tmx.RecTaskInfo("click_ips", "y", "p", weight_name="ips")]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr"}, throughput=False)
    module.update(
        {"p": torch.tensor([0.2, 0.7, 0.4]), "y": torch.tensor([0, 1, 1]), "ips": torch.tensor([3.0, 1.0, 0.0])}
    )
    values = module.compute()
    assert values["ctr/click"].item() == pytest.approx(2 / 3) and values["ctr/click_ips"].item() == pytest.approx(1 / 4)


def test_tasks_on_the_same_columns_with_other_session_ids_are_two_views():
    """The same rows grouped into queries by user or by request: two rankings, accepted."""
    tasks = [
        tmx.RecTaskInfo("by_user", "y", "p", session_id_name="user"),
        tmx.RecTaskInfo("by_query", "y", "p", session_id_name="query"),
    ]
    module = tmx.RecMetricModule(tasks, {"mrr": "mrr"}, throughput=False)
    module.update(
        {
            "p": torch.tensor([0.9, 0.8, 0.7, 0.6]),
            "y": torch.tensor([0, 1, 1, 0]),
            "user": torch.tensor([0, 0, 0, 0]),
            "query": torch.tensor([0, 0, 1, 1]),
        }
    )
    values = module.compute()
    # by hand: one user query, first relevant at rank 2; two request queries, ranks 2 and 1
    assert values["mrr/by_user"].item() == 0.5 and values["mrr/by_query"].item() == (0.5 + 1.0) / 2


@pytest.mark.parametrize(
    "name, spec, holder",
    [
        ("reset", "ctr", "MetricCollection"),
        ("values", "ne", "MetricCollection"),
        ("training", "auc", "MetricCollection"),
        ("update", "ndcg@3", "ModuleDict"),
        ("keys", "mrr", "ModuleDict"),
    ],
)
def test_a_metric_named_like_an_attribute_of_its_container_is_refused_naming_it(name, spec, holder):
    """``{"reset": "ctr"}`` raised ``KeyError: "attribute 'reset' already exists"`` from inside ``nn.Module``,
    naming neither the metric nor what to do; such a name works for the other kind of metric where that
    container has no such attribute (a ranking metric named ``compute``)."""
    task = tmx.RecTaskInfo("click", session_id_name="query")
    expected = (
        f"Metric name '{name}' is the name of an attribute of the {holder} that holds the module's metrics, which "
        f"cannot hold a metric under it: give the metric another name (e.g. '{name}_metric'"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        tmx.RecMetricModule([task], {"ne": "ne", name: spec}, throughput=False)
    with pytest.raises(ValueError, match=re.escape(expected)):
        tmx.RecMetricModule.from_config(
            {"tasks": [{"name": "click", "session_id_name": "query"}], "metrics": {name: {"metric": spec}}}
        )
    module = tmx.RecMetricModule([task], {"compute": "mrr", "device": "ctr"}, throughput=False)
    module.update(
        {
            "prediction": torch.tensor([0.9, 0.8, 0.1]),
            "label": torch.tensor([0, 1, 1]),
            "query": torch.zeros(3, dtype=torch.long),
        }
    )
    # by hand: the first relevant row ranks second (MRR 1/2); two positives of three rows (CTR 2/3)
    assert module.compute() == {"compute/click": 0.5, "device/click": pytest.approx(2 / 3)}


@pytest.mark.parametrize("kwargs, exc, match", CONSTRUCTOR_ERRORS)
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    args = dict(tasks=TASKS, metrics={"ne": "ne"}, throughput=False) | kwargs
    with pytest.raises(exc, match=match):
        tmx.RecMetricModule(args.pop("tasks"), args.pop("metrics"), **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name=""), "RecTaskInfo.name"),
        (dict(name="a/b"), "without '/'"),
        (dict(name="a.b"), "or '.'"),
        (dict(name="a\n"), "to be printable"),  # a key ending in a newline does not split back
        (dict(name="a", label_name=3), "RecTaskInfo.label_name"),
        (dict(name="a", session_id_name=""), "RecTaskInfo.session_id_name"),
    ],
)
def test_task_info_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tmx.RecTaskInfo(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(label_name="y", prediction_name="y"),
            "`RecTaskInfo.label_name` and `RecTaskInfo.prediction_name` are both 'y'",
        ),
        (dict(label_name="y", prediction_name="p", group_id_name="y"), "label_name` and `RecTaskInfo.group_id_name`"),
        (
            dict(label_name="y", prediction_name="p", session_id_name="p"),
            "prediction_name` and `RecTaskInfo.session_id",
        ),
    ],
)
def test_task_info_refuses_one_column_read_as_two_inputs(kwargs, match):
    """A task whose labels and predictions named one column was accepted: its labels scored against
    themselves gave NE ~0, AUC 1 and calibration 1 without a word (a copy-paste slip in the config)."""
    with pytest.raises(ValueError, match=match):
        tmx.RecTaskInfo("click", **kwargs)
    # one id column for both grouped and ranking metrics stays allowed, and a weight column may repeat
    # the labels (evaluate's `weights=` of a label column weighs by it on purpose)
    tmx.RecTaskInfo("click", "y", "p", weight_name="y")
    task = tmx.RecTaskInfo("click", "y", "p", group_id_name="user", session_id_name="user")
    module = tmx.RecMetricModule([task], ["ne", "auc"], throughput=False)
    module.update(
        {
            "p": torch.tensor([0.2, 0.8, 0.6, 0.1]),
            "y": torch.tensor([0, 1, 0, 1]),
            "user": torch.zeros(4, dtype=torch.long),
        }
    )
    assert module.compute()["auc/click"].item() == pytest.approx(roc_auc_score([0, 1, 0, 1], [0.2, 0.8, 0.6, 0.1]))


# ----------------------------------------------------------------------------- keys


def test_torchrec_keys_prefix_and_state_metrics():
    lr = {"value": 0.5}
    module = tmx.RecMetricModule(
        TASKS,
        {
            "ne": "ne",
            "log_loss": "log_loss",
            "mse": "mse",
            "rmse": "rmse",
            "gauc": lambda num_tasks: tmx.GroupedAUC(num_tasks, groups_complete_per_batch=True),
            "mine": "ctr",
        },
        throughput=False,
        prefix="train/",
        key_style="torchrec",
        state_metrics={"optimizer": lambda: {"lr": lr["value"]}, "epoch": lambda: 3},
    )
    values = run(module, [make_data(7)])
    assert set(values) == {
        *(
            f"train/{ns}-{t}|lifetime_{name}"
            for t in ("click", "buy")
            for ns, name in [
                ("ne", "ne"),
                ("log_loss", "log_loss"),  # in nats: TorchRec's `ne|logloss` is in bits (LogLoss(unit="bits"))
                ("mse", "mse"),
                ("mse", "rmse"),
                ("gauc", "gauc"),  # groups with both classes, per batch: TorchRec's GAUCMetric, not its grouped_auc
                ("ctr", "ctr"),
            ]
        ),
        "train/optimizer-optimizer|lr",
        "train/epoch-epoch|epoch",
    }
    assert values["train/optimizer-optimizer|lr"].item() == 0.5 and values["train/epoch-epoch|epoch"].item() == 3
    default = run(build({"ne": "ne"}, prefix="val/", state_metrics={"optimizer": lambda: {"lr": 0.5}}), [make_data(7)])
    assert list(default) == ["val/ne/click", "val/ne/buy", "val/optimizer/lr"]
    torch.testing.assert_close(default["val/ne/click"], values["train/ne-click|lifetime_ne"])


def test_two_metrics_of_one_class_keep_distinct_torchrec_keys():
    module = tmx.RecMetricModule(
        TASKS, {"ne": "ne", "ne_eta": METRICS["ne_eta"]}, throughput=False, key_style="torchrec"
    )
    assert set(run(module, [make_data(8)])) == {
        f"{n}-{t}|lifetime_{n}" for n in ("ne", "ne_eta") for t in ("click", "buy")
    }


def test_dict_valued_metrics_flatten_into_keys():
    module = build({"ranking": tmx.RankingMetrics(ks=(1, 3), metrics=("ndcg", "mrr")), "ndcg@3": "ndcg@3"})
    values = run(module, [make_data(9)])
    entries = ("ndcg@1", "ndcg@3", "mrr@1", "mrr@3")
    # one order for every metric: entry (a quantity of its own), then task
    assert list(values) == [f"ranking.{e}/{t}" for e in entries for t in ("click", "buy")] + [
        "ndcg@3/click",
        "ndcg@3/buy",
    ]
    torch.testing.assert_close(values["ranking.ndcg@3/buy"], values["ndcg@3/buy"], rtol=1e-12, atol=0)


def test_metrics_of_one_task_dimension_are_rejected_for_two_tasks_but_classes_are_built():
    module = tmx.RecMetricModule(TASKS, {"ne": tmx.NormalizedEntropy, "ndcg": tmx.NDCG}, throughput=False)
    assert module.metric_names == ["ne", "ndcg"]
    assert len(module.ranking["ndcg"]) == 2
    # a partial of a ranking class is built without `num_tasks` too (it used to be called with it)
    module = tmx.RecMetricModule(TASKS, {"ndcg@3": functools.partial(tmx.NDCG, k=3)}, throughput=False)
    assert [copy.k for copy in module.ranking["ndcg@3"]] == [3, 3]


# ----------------------------------------------------------------------------- lifecycle


def test_state_dict_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = make_data(10)
    parts = batches(data, [0, 150, 300, 450, 600])
    whole = run(build(), parts)
    first = build()
    for part in parts[:2]:
        first.update(part)
    torch.save(first.state_dict(), tmp_path / "module.pt")
    resumed = build()
    resumed.load_state_dict(torch.load(tmp_path / "module.pt", weights_only=False))
    assert resumed._step == 2
    values = run(resumed, parts[2:])
    for key, value in whole.items():
        torch.testing.assert_close(values[key], value, rtol=0, atol=0, equal_nan=True)


def test_state_dict_holds_every_state():
    keys = build().state_dict().keys()
    assert "metrics.ne.cross_entropy_sum" in keys and "metrics.auc.preds" in keys
    assert "ranking.ndcg@3.1.indexes" in keys and "_extra_state" in keys


def _same_value(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("window_size", [None, 40])
def test_checkpoint_of_another_module_layout_is_refused(strict, window_size, tmp_path):
    """Other tasks is an error naming the tasks or the state (strict or not), not made-up values; with another
    window size too (which alone resumes the lifetime)."""
    data = make_data(13, n=120)
    saved = build(window_size=window_size)
    saved.update(data)
    torch.save(saved.state_dict(), tmp_path / "module.pt")
    state = torch.load(tmp_path / "module.pt", weights_only=True)
    one_task = tmx.RecMetricModule(TASKS[:1], metric_specs(), throughput=False, window_size=window_size)
    fresh_ne = copy.deepcopy(one_task.state_dict(prefix="x."))
    tasks = r"task mismatch for RecMetricModule: the checkpoint was saved with tasks \['click', 'buy'\], this Rec"
    with pytest.raises(RuntimeError, match=tasks):
        one_task.load_state_dict(state, strict=strict)
    # a checkpoint of an earlier version records no task names: the metrics still refuse another num_tasks
    state["_extra_state"] = {"step": state["_extra_state"]["step"]}
    match = r"setting mismatch for metrics\.ne\.num_tasks: the checkpoint was saved with num_tasks=2, this Norm"
    if window_size is not None:
        match = r"setting mismatch for metrics\.ne\.num_tasks: the checkpoint was saved with num_tasks=2, this Windowed"
    with pytest.raises(RuntimeError, match=match):
        one_task.load_state_dict(state, strict=strict)
    now = one_task.state_dict(prefix="x.")
    for key in (k for k in fresh_ne if k.startswith(("x.metrics.ne.", "x.metrics.auc."))):
        assert _same_value(now[key], fresh_ne[key]), key  # the refused metrics are left as they were
    if window_size is None:  # a state_dict without its metadata: the shapes still tell
        with pytest.raises(RuntimeError, match=r"size mismatch for metrics\.ne\.cross_entropy_sum: .*\(2,\)"):
            one_task.load_state_dict(dict(state), strict=strict)
    else:  # another window size resumes the lifetime (tests/test_windowed.py), but not another num_tasks
        shorter = tmx.RecMetricModule(TASKS[:1], metric_specs(), throughput=False, window_size=20)
        with pytest.raises(RuntimeError, match=match):
            shorter.load_state_dict(state, strict=strict)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("window_size", [None, 40])
def test_an_exact_auc_checkpoint_of_the_other_from_logits_is_refused(strict, window_size):
    """A probabilities checkpoint of exact AUC/GAUC loaded into from_logits ones mixed scores (auc/click
    0.8447 for 0.8577), all keys matched; now refused, and the module with the checkpoint's setting resumes."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, generator=g) * 2
    y = (torch.rand(400, generator=g) < torch.sigmoid(z)).float()
    users = torch.randint(0, 5, (400,), generator=g)
    task = [tmx.RecTaskInfo("click", "l", "p", group_id_name="u")]

    def step(part: slice, logits: bool) -> dict:
        return {"p": z[part] if logits else torch.sigmoid(z[part]), "l": y[part], "u": users[part]}

    saved = tmx.RecMetricModule(task, {"auc": "auc", "gauc": "gauc"}, throughput=False, window_size=window_size)
    saved.update(step(slice(0, 200), logits=False))
    state = copy.deepcopy(saved.state_dict())
    logit_metrics = {"auc": tmx.AUC(from_logits=True), "gauc": tmx.GroupedAUC(from_logits=True)}
    other = tmx.RecMetricModule(task, logit_metrics, throughput=False, window_size=window_size)
    with pytest.raises(RuntimeError, match=r"setting mismatch for metrics\.auc\.from_logits: .*from_logits=False"):
        other.load_state_dict(state, strict=strict)
    resumed = tmx.RecMetricModule(task, {"auc": "auc", "gauc": "gauc"}, throughput=False, window_size=window_size)
    resumed.load_state_dict(state, strict=strict)
    resumed.update(step(slice(200, 400), logits=False))
    p = torch.sigmoid(z).double().numpy()  # the float32 probabilities fed
    values = resumed.compute()
    np.testing.assert_allclose(values["auc/click"].item(), roc_auc_score(y.numpy(), p), rtol=1e-12)
    expected = ref_grouped(p, y.numpy(), users.numpy(), None)
    np.testing.assert_allclose(values["gauc/click"].item(), expected, rtol=1e-12)


def _three_task_steps(n: int = 40) -> list[dict[str, torch.Tensor]]:
    """Two steps for tasks click, buy and like (buy's predictions ranked against its labels)."""
    gen = torch.Generator().manual_seed(5)
    steps = []
    for _ in range(2):
        step = {"q": torch.arange(n) // 4}
        for task in ("click", "buy", "like"):
            p = torch.rand(n, generator=gen)
            y = (torch.rand(n, generator=gen) < (1 - p if task == "buy" else p)).long()
            y[:2] = torch.tensor([0, 1])
            step[f"{task}_p"], step[f"{task}_l"] = p, y
        steps.append(step)
    return steps


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("window_size", [None, 10])
@pytest.mark.parametrize("loaded", [["buy", "click"], ["click", "like"]])
def test_a_checkpoint_of_other_tasks_or_another_task_order_is_refused(loaded, window_size, strict):
    """States are kept by task position: a [click, buy] checkpoint loaded into [buy, click] (or [click, like])
    reported buy's history as click's (or like's), all keys matched. The tasks are recorded and compared."""
    import torch.nn as nn

    infos = {
        name: tmx.RecTaskInfo(name, f"{name}_l", f"{name}_p", session_id_name="q") for name in ("click", "buy", "like")
    }

    def make(names: list[str]) -> tmx.RecMetricModule:
        metrics = {"auc": "auc", "ne": "ne", "ndcg@2": "ndcg@2"}
        return tmx.RecMetricModule([infos[n] for n in names], metrics, throughput=False, window_size=window_size)

    first, second = _three_task_steps()
    saved = make(["click", "buy"])
    saved.update(first)
    state = copy.deepcopy(saved.state_dict())
    other = make(loaded)
    other.update(second)  # its own history, which a refused load leaves as it was
    before, values = copy.deepcopy(other.state_dict()), other.compute()
    match = rf"task mismatch for RecMetricModule: the checkpoint was saved with tasks \['click', 'buy'\], this RecMetricModule has tasks \['{loaded[0]}', '{loaded[1]}'\]"
    with pytest.raises(RuntimeError, match=match) as refused:
        other.load_state_dict(copy.deepcopy(state), strict=strict)
    assert "Missing key" not in str(refused.value)  # the tasks are the reason, not the states withheld
    after = other.state_dict()
    assert after.keys() == before.keys() and all(_same_value(after[k], before[k]) for k in before)
    assert all(torch.equal(v, values[k]) for k, v in other.compute().items())
    with pytest.raises(RuntimeError, match=r"task mismatch for inner: .*\['click', 'buy'\]"):  # Lightning's way
        nn.ModuleDict({"inner": other}).load_state_dict({f"inner.{k}": v for k, v in state.items()}, strict=strict)

    # the checkpoint's tasks in its order resume; so does a checkpoint of an earlier version (no task names)
    older = copy.deepcopy(state)
    older["_extra_state"] = {"step": 1}
    for checkpoint in (state, older):
        resumed = make(["click", "buy"])
        resumed.load_state_dict(copy.deepcopy(checkpoint), strict=strict)
        resumed.update(second)
        out = resumed.compute()
        for task in ("click", "buy"):
            y = torch.cat([first[f"{task}_l"], second[f"{task}_l"]]).numpy()
            p = torch.cat([first[f"{task}_p"], second[f"{task}_p"]]).double().numpy()
            np.testing.assert_allclose(out[f"auc/{task}"].item(), roc_auc_score(y, p), rtol=1e-12)


def test_reset_starts_over_and_local_compute_equals_compute_in_one_process():
    data = make_data(11)
    module = build()
    run(module, [make_data(12)])
    module.reset()
    values = run(module, [data])
    fresh = run(build(), [data])
    local = module.local_compute()
    for key, value in fresh.items():
        torch.testing.assert_close(values[key], value, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(local[key], value, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
def test_reset_clears_the_throughput_except_in_torchrecs_key_style(key_style):
    """Ours: the throughput starts again (clock, total); TorchRec's reset() leaves its throughput alone."""
    ticks = iter(float(t) for t in range(100))
    throughput = tmx.Throughput(warmup_steps=1, clock=lambda: next(ticks))
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=throughput, key_style=key_style)
    step = {"prediction": torch.full((8,), 0.5), "label": torch.ones(8)}
    for _ in range(3):
        module.update(step)
    module.reset()
    module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        values = module.compute()
    total, rate = ("throughput/total_examples", "throughput/lifetime_throughput")
    if key_style == "torchrec":
        total, rate = ("throughput-throughput|total_examples", "throughput-throughput|lifetime_throughput")
        assert values[total].item() == 32 and values[rate].item() == 8.0  # 3 timed steps of 8 examples, 1 s apart
    else:
        assert values[total].item() == 8 and math.isnan(values[rate].item())  # the step that restarts the clock
    assert module._step == 4  # the step counter is kept in both


def test_a_short_validation_epoch_after_a_reset_has_rates():
    """The default throughput warms up once: after a reset (each validation epoch) one step restarts the clock,
    so an epoch shorter than the warm-up still reports rates, and the time between epochs never counts."""
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, compute_interval_steps=10)
    assert module.throughput.warmup_steps == 5
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0, 101.0, 103.0])
    module.throughput.clock = lambda: next(ticks)
    step = {"prediction": torch.full((4,), 0.5), "label": torch.ones(4)}
    for _ in range(8):  # the first epoch: 5 warm-up steps, then 3 steps of 4 examples over 3 s
        module.update(step)
    first = module.compute()
    assert first["throughput/lifetime_throughput"].item() == 12 / 3.0
    module.reset()
    for n in (4, 6, 10):  # the next epoch: the first step starts the clock, then 16 examples over 3 s
        module.update({"prediction": torch.full((n,), 0.5), "label": torch.ones(n)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", tmx.UndefinedMetricWarning)
        values = module.compute()
    assert values["throughput/lifetime_throughput"].item() == 16 / 3.0
    assert values["throughput/window_throughput"].item() == 16 / 3.0
    assert values["throughput/total_examples"].item() == 20


def test_validation_epochs_shorter_than_the_warmup_have_rates_from_the_second():
    """As ``RecMetricCallback`` runs a validation module: a reset at each epoch's start, epochs of 3 steps against
    a warm-up of 50. The first epoch only warms up (nan, one warning); every later one has rates from its second
    step, and the time between epochs never counts."""
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"})  # compute_interval_steps=100: a warm-up of 50
    ticks = iter([0.0, 1.0, 2.0, 50.0, 51.0, 53.0, 90.0, 94.0, 95.0])
    module.throughput.clock = lambda: next(ticks)
    rates = []
    for epoch in range(3):
        module.reset()
        for n in (4, 6, 10):
            module.update({"prediction": torch.full((n,), 0.5), "label": torch.ones(n)})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = module.compute()
        warned = [w for w in caught if issubclass(w.category, tmx.UndefinedMetricWarning)]
        assert len(warned) == (epoch == 0)
        rates.append((values["throughput/lifetime_throughput"].item(), values["throughput/total_examples"].item()))
    assert math.isnan(rates[0][0]) and rates[0][1] == 20
    assert rates[1:] == [(16 / 3.0, 20), (16 / 5.0, 20)]  # 6 + 10 examples over 1 + 2 s, then 4 + 1 s


def test_should_compute_follows_the_interval():
    module = build({"ctr": "ctr"}, compute_interval_steps=3)
    assert not module.should_compute()  # before any update (TorchRec's is true: 0 % 3 == 0)
    seen = []
    for part in batches(make_data(13), list(range(0, 601, 100))):
        module.update(part)
        seen.append(module.should_compute())
    assert seen == [False, False, True, False, False, True]


def test_should_compute_counts_empty_steps_but_not_rejected_ones():
    """The documented count: an empty step is a step (a rank without data keeps the cadence), a rejected one is not."""
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False, compute_interval_steps=2)
    module.update({"prediction": torch.empty(0), "label": torch.empty(0)})
    assert not module.should_compute()
    with pytest.raises(ValueError, match="label"):
        module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([2])})
    assert not module.should_compute()  # still one step
    module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})
    assert module.should_compute()


# ----------------------------------------------------------------------------- config and registry


def test_from_config_builds_through_the_registry():
    config = {
        "tasks": [
            {
                "name": "click",
                "label_name": "click_label",
                "prediction_name": "click_pred",
                "weight_name": "click_w",
                "group_id_name": "user",
                "session_id_name": "query",
            },
            {
                "name": "buy",
                "label_name": "buy_label",
                "prediction_name": "buy_pred",
                "weight_name": "buy_w",
                "group_id_name": "user",
                "session_id_name": "query",
            },
        ],
        "metrics": {"ne": {}, "auc_binned": {"metric": "auc", "num_bins": 1000}, "ndcg@3": {}, "gauc": {}},
        "throughput": False,
        "compute_interval_steps": 7,
        "prefix": "train/",
    }
    module = tmx.RecMetricModule.from_config(config)
    assert module.compute_interval_steps == 7
    data = make_data(14)
    values = run(module, [data])
    reference = run(build(), [data])
    for name in ("ne", "auc_binned", "ndcg@3", "gauc"):
        for task in ("click", "buy"):
            torch.testing.assert_close(values[f"train/{name}/{task}"], reference[f"{name}/{task}"], rtol=0, atol=0)
    listed = tmx.RecMetricModule.from_config({"tasks": ["a"], "metrics": ["ne", "ctr"], "throughput": False})
    assert listed.metric_names == ["ne", "ctr"]
    # RecTaskInfo objects, as the constructor takes them (were refused), beside names and dicts
    info = tmx.RecTaskInfo("click", label_name="click_label", prediction_name="click_pred", weight_name="click_w")
    mixed = tmx.RecMetricModule.from_config(
        {"tasks": [info, {"name": "buy", "label_name": "buy_label"}, "c"], "metrics": ["ne"], "throughput": False}
    )
    assert mixed.tasks == (
        tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w"),
        tmx.RecTaskInfo("buy", label_name="buy_label"),
        tmx.RecTaskInfo("c"),
    )


@pytest.mark.parametrize(
    "config, match",
    [
        ({"tasks": ["a"]}, "with 'tasks' and 'metrics'"),
        ({"tasks": ["a"], "metrics": ["ne"], "windw": 3}, "config keys"),
        ({"tasks": [{"nme": "a"}], "metrics": ["ne"]}, "RecTaskInfo fields"),
        # was Python's "RecTaskInfo.__init__() missing 1 required positional argument: 'name'" (a TypeError)
        (
            {"tasks": [{"label_name": "y"}], "metrics": ["ne"]},
            r"a 'name' in every task dict .*, got \{'label_name': 'y'\}",
        ),
        (
            {"tasks": ["a"], "metrics": {"ne": 3}},
            re.escape("Expected metric 'ne' in config 'metrics' to be a registry name (str) or a dict of its options"),
        ),
        ({"tasks": ["a"], "metrics": ["recall"]}, "recall@k.*weighted_recall"),
        ([], "a dict"),
        ({"tasks": "click", "metrics": ["ne"]}, "'tasks' to be a list"),
        ({"tasks": [], "metrics": ["ne"]}, "`tasks` to be a non-empty list"),
        ({"tasks": ["a"], "metrics": ["auc", "ne", "auc"]}, r"\['auc'\] more than once"),
        ({"tasks": ["a"], "metrics": "ne"}, "'metrics' to be a list of registry names or a dict"),
        # options the registry name or the config already sets (were "got multiple values for argument")
        (
            {"tasks": [{"name": "a", "session_id_name": "q"}], "metrics": {"ndcg@10": {"k": 5}}},
            r"names its cutoff \(10\)",
        ),
        ({"tasks": ["a"], "metrics": {"ne": {"k": 3}}}, "'ne' takes no cutoff"),
        ({"tasks": ["a"], "metrics": {"ne": {"num_tasks": 1}}}, "`num_tasks` comes from the module's tasks"),
        ({"tasks": ["a"], "metrics": ["ne\n"]}, "Unknown metric name"),
        # wrong types are ValueErrors naming the entry, as every other wrong type of the config (were TypeErrors)
        (
            {"tasks": ["a"], "metrics": {"a": {"metric": 5}}},
            r"Expected the option 'metric' of metric 'a' in config 'metrics' to be a registry name \(str\), "
            r"got 5 \(int\)\.",
        ),
        (
            {"tasks": ["a"], "metrics": ["ne", 5]},
            r"Expected a metric name in config 'metrics' to be a registry name \(str\), got 5 \(int\)\.",
        ),
        ({"tasks": [3], "metrics": ["ne"]}, r"Expected a task name, a dict of RecTaskInfo fields .* or a RecTaskInfo"),
    ],
)
def test_from_config_rejects_bad_configs(config, match):
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule.from_config(config)


@pytest.mark.parametrize(
    "config, named",
    [
        # were "Expected config keys among (...), got [every key given]": which one was wrong went unsaid
        (
            {"tasks": ["a"], "metrics": ["ne"], "window": 100},
            "Unknown config keys ['window'] (did you mean 'window_size'?)",
        ),
        ({"tasks": ["a"], "metrics": ["ne"], "interval": 5}, "['interval'] (did you mean 'compute_interval_steps'?)"),
        (
            {"tasks": ["a"], "metric": ["ne"]},
            "Unknown config keys ['metric'] (did you mean 'metrics', 'metric_tasks'?)",
        ),
        (
            {"tasks": [{"name": "a", "label": "y", "pred": "p"}], "metrics": ["ne"]},
            "Unknown task fields ['label', 'pred'] (did you mean 'label_name', 'prediction_name'?)",
        ),
        (
            {"tasks": [{"name": "a", "session": "q"}], "metrics": ["ne"]},
            "['session'] (did you mean 'session_id_name'?)",
        ),
    ],
)
def test_from_config_names_the_unknown_key_and_the_closest_known_one(config, named):
    import re

    with pytest.raises(ValueError, match=re.escape(named)):
        tmx.RecMetricModule.from_config(config)


@pytest.mark.parametrize(
    "metrics, example",
    [
        ({"auc_binned": {"num_bins": 100}}, "{'auc_binned': {'metric': 'auc', ...}}"),
        ({"click_log_loss": None}, "{'click_log_loss': {'metric': 'log_loss', ...}}"),
        (["ne", "ne_eta"], "{'ne_eta': {'metric': 'ne', ...}}"),
        ({"click_ndcg@10": {}}, "{'click_ndcg@10': {'metric': 'ndcg@10', ...}}"),
        (["my_metric"], "{'my_metric': {'metric': '<registry name>', ...}}"),
    ],
)
def test_from_config_says_how_a_key_of_ones_own_names_its_metric(metrics, example):
    """A key that is no registry name (the docstring's own ``auc_binned``) without ``"metric"`` was only "Unknown
    metric name 'auc_binned'; known names: ...", as if the key had to be a registry name."""
    config = {"tasks": [{"name": "a", "session_id_name": "q"}], "metrics": metrics}
    with pytest.raises(ValueError, match="Unknown metric name") as info:
        tmx.RecMetricModule.from_config(config)
    assert str(info.value).endswith(
        f" A key of your own names its registry metric with the option 'metric': {example}."
    ), str(info.value)
    # a key naming a registry entry, or an unknown registry name under "metric", gets no such advice
    for refused in ({"recall": {}}, {"x": {"metric": "aucc"}}):
        with pytest.raises(ValueError) as info:
            tmx.RecMetricModule.from_config({**config, "metrics": refused})
        assert "A key of your own" not in str(info.value)


def test_from_config_takes_a_registry_name_as_a_metrics_value_as_the_constructor_does():
    """``{"cal": "calibration"}`` was refused by ``from_config`` ("Expected the options of metric 'cal' to be a
    dict") although the constructor takes it; both forms now build the registry's metric under the key given."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, 40)
    y = (rng.random(40) < p).astype(np.float64)
    w = rng.uniform(0.5, 2.0, 40)
    data = {"prediction": torch.from_numpy(p), "label": torch.from_numpy(y), "weight": torch.from_numpy(w)}
    metrics = {"cal": "calibration", "area": "auc", "auc_binned": {"metric": "auc", "num_bins": 10}}
    module = tmx.RecMetricModule.from_config({"tasks": ["t"], "metrics": metrics, "throughput": False})
    assert module.metric_names == ["cal", "area", "auc_binned"]
    module.update(data)
    values = module.compute()
    np.testing.assert_allclose(values["cal/t"].item(), (p * w).sum() / (y * w).sum(), rtol=1e-7)
    np.testing.assert_allclose(values["area/t"].item(), roc_auc_score(y, p, sample_weight=w), rtol=1e-7)
    # the string form is the dict form naming its entry, word for word in values
    spelled = {"cal": {"metric": "calibration"}, "area": {"metric": "auc"}, "auc_binned": metrics["auc_binned"]}
    same = tmx.RecMetricModule.from_config({"tasks": ["t"], "metrics": spelled, "throughput": False})
    same.update(data)
    assert {k: v.item() for k, v in same.compute().items()} == {k: v.item() for k, v in values.items()}
    # an unknown registry name given as a value is the registry's error, naming the entry
    with pytest.raises(ValueError, match=r"^Metric 'cal' \(calibraton\): Unknown metric name 'calibraton'"):
        tmx.RecMetricModule.from_config({"tasks": ["t"], "metrics": {"cal": "calibraton"}})


def test_from_config_reads_the_yaml_spellings_of_metrics():
    """YAML's list of one-key dicts (``- auc: {num_bins: 10}``) raised Python's "unhashable type: 'dict'",
    and ``ne:`` with nothing after it (options ``None``) was refused although it means no options."""
    import re

    listed = {"tasks": ["a"], "metrics": ["ne", {"auc": {"num_bins": 10}}], "throughput": False}
    with pytest.raises(ValueError, match=re.escape("got the list entry {'auc': {'num_bins': 10}}; give options")):
        tmx.RecMetricModule.from_config(listed)
    bare = tmx.RecMetricModule.from_config(
        {"tasks": ["a"], "metrics": {"ne": None, "auc": {"num_bins": 10}}, "throughput": False}
    )
    same = tmx.RecMetricModule.from_config(
        {"tasks": ["a"], "metrics": {"ne": {}, "auc": {"num_bins": 10}}, "throughput": False}
    )
    assert bare.metric_names == same.metric_names == ["ne", "auc"]
    data = {"prediction": torch.tensor([0.2, 0.7, 0.4, 0.9]), "label": torch.tensor([0, 1, 1, 1])}
    for module in (bare, same):
        module.update(data)
    p, y = data["prediction"].double(), data["label"].double()
    ctr = y.mean()
    ne = -(y * p.log() + (1 - y) * (1 - p).log()).mean() / -(ctr * ctr.log() + (1 - ctr) * (1 - ctr).log())
    torch.testing.assert_close(bare.compute()["ne/a"], ne)
    torch.testing.assert_close(bare.compute()["ne/a"], same.compute()["ne/a"])


def _bin_centred_data(seed: int, n: int = 500) -> dict[str, torch.Tensor]:
    """Two tasks whose predictions sit at the centres of 1000 equal bins (a binned AUC is then exact), with ties."""
    g = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for task in ("click", "buy"):
        p = (g.integers(0, 1000, n) + 0.5) / 1000
        out[f"{task}_pred"] = torch.tensor(p)
        out[f"{task}_label"] = torch.tensor((g.uniform(size=n) < p).astype(np.int64))
        out[f"{task}_w"] = torch.tensor(g.uniform(0.5, 2.0, n))
    return out


def test_the_constructor_takes_every_metrics_form_of_from_config_built_as_the_same_metrics():
    """``RecMetricModule(tasks, {"auc_binned": {"metric": "auc", "num_bins": 1000}})`` (``{"auc": {...}}``,
    ``{"ne": None}``, a list of names) was a TypeError or ValueError although ``from_config`` and ``evaluate``
    take them. Each form now gives the values of the metric object it stands for, and those equal sklearn's
    ``roc_auc_score`` and the NE formula; ``from_config`` with the same entries gives the same values."""
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", f"{t}_w") for t in ("click", "buy")]
    parts = [_bin_centred_data(s) for s in range(3)]
    joined = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    bins = {"num_bins": 1000, "bin_space": "probability"}  # bins of 0.001: one distinct prediction each
    forms = {
        "dict": {"auc_binned": {"metric": "auc", **bins}, "auc": bins, "ne": None},
        "objects": {
            "auc_binned": tmx.AUC(num_tasks=2, **bins),
            "auc": tmx.AUC(num_tasks=2, **bins),
            "ne": tmx.NormalizedEntropy(num_tasks=2),
        },
        "mixed": {"auc_binned": {"metric": "auc", **bins}, "auc": "auc", "ne": {}},
    }
    values = {form: run(tmx.RecMetricModule(tasks, m, throughput=False), parts) for form, m in forms.items()}
    listed = run(tmx.RecMetricModule(tasks, ["ne", "auc"], throughput=False), parts)
    configured = run(
        tmx.RecMetricModule.from_config({"tasks": tasks, "metrics": forms["dict"], "throughput": False}), parts
    )
    built = tmx.RecMetricModule(tasks, forms["dict"], throughput=False)
    assert [type(built.metrics[n]).__name__ for n in built.metric_names] == ["AUC", "AUC", "NormalizedEntropy"]
    assert built.metrics["auc_binned"].num_bins == built.metrics["auc"].num_bins == 1000
    assert built.metrics["auc"].bin_space == "probability"
    for task in ("click", "buy"):
        p, y, w = (joined[f"{task}_{c}"].numpy() for c in ("pred", "label", "w"))
        auc, ne = roc_auc_score(y, p, sample_weight=w), ref_ne(p, y.astype(float), w)
        for form, got in [*values.items(), ("config", configured)]:
            np.testing.assert_allclose(got[f"auc_binned/{task}"].item(), auc, rtol=1e-9, err_msg=form)
            np.testing.assert_allclose(got[f"auc/{task}"].item(), auc, rtol=1e-9, err_msg=form)
            np.testing.assert_allclose(got[f"ne/{task}"].item(), ne, rtol=1e-9, err_msg=form)
        np.testing.assert_allclose(listed[f"auc/{task}"].item(), auc, rtol=1e-9)  # exact, as the name builds it
        np.testing.assert_allclose(listed[f"ne/{task}"].item(), ne, rtol=1e-9)
        for form in ("dict", "mixed"):  # bit for bit the objects' values: the same metrics
            for name in ("auc_binned", "ne"):
                assert values[form][f"{name}/{task}"].item() == values["objects"][f"{name}/{task}"].item()


@pytest.mark.parametrize(
    "metrics, match",
    [
        (
            {"ne": {"num_tasks": 2}},
            r"^Metric 'ne': `num_tasks` comes from the module's tasks \(2\), not from its options\.",
        ),
        (
            {"auc": {"nm_bins": 10}},
            r"^Metric 'auc': Unexpected keyword arguments: `nm_bins` for AUC \(did you mean `num_bins`",
        ),
        (
            {"x": {"metric": "aucc"}},
            r"^Metric 'x' \(aucc\): Unknown metric name 'aucc' \(did you mean 'auc'\?\); known names: ",
        ),
        ({"auc_binned": {"num_bins": 10}}, r"A key of your own names its registry metric with the option 'metric': "),
        ({"ne": None, "ndcg@10": {"k": 5}}, r"^Metric 'ndcg@10': .*names its cutoff \(10\)"),
        (["ne", "ne"], r"^Expected distinct metric names in .*, got \['ne'\] more than once\."),
        (
            ["ne", {"auc": {"num_bins": 10}}],
            r"got the list entry \{'auc': \{'num_bins': 10\}\}; give options in the dict form",
        ),
        (
            {"a": {"metric": 5}},
            r"^Expected the option 'metric' of metric 'a' in .* to be a registry name \(str\), got 5",
        ),
    ],
)
def test_the_constructor_refuses_bad_options_with_from_configs_errors(metrics, match):
    """The constructor and ``from_config`` build options through one path: the same error, word for word (but for
    where the metrics were given: ``metrics`` or the config's), and nothing is left built or owned."""
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", session_id_name="q") for t in ("click", "buy")]
    with pytest.raises(ValueError, match=match) as direct:
        tmx.RecMetricModule(tasks, metrics, throughput=False)
    with pytest.raises(ValueError, match=match) as configured:
        tmx.RecMetricModule.from_config({"tasks": tasks, "metrics": metrics, "throughput": False})
    assert str(direct.value).replace("`metrics`", "config 'metrics'") == str(configured.value)
    # a config's entries are names or options; the constructor's may be objects too
    with pytest.raises(ValueError, match=re.escape("a registry name (str) or a dict of its options, got AUC()")):
        tmx.RecMetricModule.from_config({"tasks": tasks, "metrics": {"x": tmx.AUC(2)}})
    assert tmx.RecMetricModule(tasks, {"x": "ne"}, throughput=False).metric_names == ["x"]


def test_registry_names():
    names = metric_names()
    for name in ("ne", "log_loss", "auc", "auprc", "gauc", "calibration", "ctr", "mse", "ndcg", "ndcg@k", "recall@k"):
        assert name in names
    assert "recall" not in names and "weighted_recall" in names
    assert lookup("recall@20")[0].cls is tmx.RecallAtK and lookup("weighted_recall")[0].cls is tmx.WeightedRecall
    assert lookup("mrr@10")[1] == 10 and lookup("ndcg")[1] is None
    assert isinstance(build_metric("gauc", num_tasks=2), tmx.GroupedAUC)
    assert isinstance(build_metric("r_precision", num_tasks=2), tmx.RPrecision) and build_metric("f1@5").k == 5
    for bad, match in [
        ("ne@3", "takes no cutoff"),
        ("precision", "precision@k.*weighted_precision"),
        ("ndcg@0", "positive cutoff"),
        ("NDCG", "Unknown"),
        ("hit_rate", "needs a cutoff: use hit_rate@k"),
    ]:
        with pytest.raises(ValueError, match=match):
            lookup(bad)
    with pytest.raises(TypeError, match="metric name"):
        lookup(3)


# ----------------------------------------------------------------------------- DDP


def _shard(data: dict[str, torch.Tensor], rank: int, layout: str) -> list[dict[str, torch.Tensor]]:
    """Rank 0 takes three uneven batches, rank 1 one (or none with ``layout == "empty"``)."""
    if layout == "empty":
        return batches(data, [0, 100, 420, 600]) if rank == 0 else []
    return batches(data, [0, 100, 230, 400]) if rank == 0 else batches(data, [400, 600])


def _ddp_values(rank: int, world_size: int, layout: str, metrics: dict | None) -> dict:
    module = build(metrics)
    for part in _shard(make_data(20), rank, layout):
        module.update(part)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synced, local = module.compute(), module.local_compute()
        again = module.compute()
        # the same metrics alone, synced by TorchMetrics state by state
        per_metric = {}
        for name in module.metric_names:
            if name in module.ranking:
                for t, metric in enumerate(module.ranking[name]):
                    per_metric[f"{name}/{TASKS[t].name}"] = metric.compute()
            else:
                value = getattr(module.metrics, name)
                per_metric.update({f"{name}/{task.name}": v for task, v in zip(TASKS, value.compute())})
    return {"synced": synced, "local": local, "again": again, "per_metric": per_metric}


@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["uneven", "empty"])
def test_ddp_equals_one_process_and_the_per_metric_sync_exactly(ddp_pool, layout):
    data = make_data(20)
    expected = run(build(), [data])
    results = ddp_pool.run(_ddp_values, layout, None)
    for rank, result in enumerate(results):
        own = run(build(), _shard(data, rank, layout)) if (rank == 0 or layout != "empty") else None
        for key, value in expected.items():
            torch.testing.assert_close(result["synced"][key], value, rtol=1e-12, atol=1e-12, equal_nan=True)
            torch.testing.assert_close(result["again"][key], result["synced"][key], rtol=0, atol=0, equal_nan=True)
            # the fused gather reduces exactly like TorchMetrics' own sync
            torch.testing.assert_close(result["per_metric"][key], result["synced"][key], rtol=0, atol=0, equal_nan=True)
            if own is not None:
                torch.testing.assert_close(result["local"][key], own[key], rtol=0, atol=0, equal_nan=True)


def _throughput_totals(rank: int, world_size: int) -> dict[str, float]:
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"})  # with throughput
    examples = 10 if rank == 0 else 30
    module.update({"prediction": torch.rand(examples), "label": torch.ones(examples)})
    key = "throughput/total_examples"
    synced = module.compute()[key].item()
    local = module.local_compute()[key].item()  # not the cached synced value either
    again = module.compute()[key].item()  # nor the local one afterwards
    if rank == 0:  # one rank alone: the next compute() of every rank must still agree (no lone collective)
        module.local_compute()
    third = module.compute()[key].item()
    return {"synced": synced, "local": local, "again": again, "third": third}


@pytest.mark.ddp
def test_local_compute_keeps_throughput_local(ddp_pool):
    """local_compute() communicates with no rank: its throughput counts this rank's examples only."""
    results = ddp_pool.run(_throughput_totals)
    assert results == [
        {"synced": 40.0, "local": 10.0, "again": 40.0, "third": 40.0},
        {"synced": 40.0, "local": 30.0, "again": 40.0, "third": 40.0},
    ]


def _throughput_after_one_rank_updated(rank: int, world_size: int) -> dict[str, float]:
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"})  # with throughput
    module.update({"prediction": torch.full((2,), 0.5), "label": torch.tensor([0.0, 1.0])})
    first = module.compute()
    if rank == 0:  # one rank alone updates since the last compute(): nobody may serve a cached value
        module.update({"prediction": torch.full((1,), 0.5), "label": torch.ones(1)})
    second = module.compute()
    return {
        "first": first["throughput/total_examples"].item(),
        "second": second["throughput/total_examples"].item(),
        "ctr": second["ctr/click"].item(),
    }


@pytest.mark.ddp
def test_throughput_syncs_in_the_fused_gather_when_one_rank_updated_alone(ddp_pool):
    """Every rank's compute() takes part in the same gather (a cached throughput used to hang rank 0)."""
    results = ddp_pool.run(_throughput_after_one_rank_updated)
    assert results == [{"first": 4.0, "second": 5.0, "ctr": 3 / 5}] * 2


def test_a_module_that_never_updated_computes_its_throughput_without_torchmetrics_warning() -> None:
    """The throughput, as the module's metrics, gives no "compute before update" warning (its rates are nan and
    say so with their own warning): a validation epoch without a batch, or a reset module, computes quietly."""
    module = tmx.RecMetricModule(["click"], {"ne": "ne"})  # with throughput
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
        module.local_compute()
    assert not [w for w in caught if "before the ``update``" in str(w.message)]
    assert values["throughput/total_examples"].item() == 0.0
    assert math.isnan(values["throughput/lifetime_throughput"].item())
    assert module.throughput._update_count == 0  # put back after the compute


def _throughput_of_a_rank_without_steps(rank: int, world_size: int) -> dict:
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"})  # with throughput
    if rank == 0:  # rank 1 has no step at all (an evaluation shard without data)
        module.update({"prediction": torch.full((7,), 0.5), "label": torch.ones(7)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total = module.compute()["throughput/total_examples"].item()
    return {
        "total": total,
        "before_update": [str(w.message) for w in caught if "before the ``update``" in str(w.message)],
    }


@pytest.mark.ddp
def test_ddp_a_rank_without_steps_reports_the_synced_throughput_without_torchmetrics_warning(ddp_pool):
    """A rank that never stepped reports the other ranks' synced examples; TorchMetrics' "compute before update"
    warning (meant for a metric without states to read) is not given there, as for the module's metrics."""
    assert ddp_pool.run(_throughput_of_a_rank_without_steps) == [{"total": 7.0, "before_update": []}] * 2


# (rank that updates, scores): a TorchMetrics metric fed by one rank at a time, rank 1 first idle
_IDLE_INTERVALS = [
    (0, [0.9, 0.2, 0.6, 0.4]),
    (1, [0.7, 0.1, 0.8]),
    (0, [0.3, 0.55]),
]


def _idle_labels(scores: list[float]) -> list[int]:
    return [int(s * 10) % 2 for s in scores]  # both classes in the first interval, not ordered by score


def _torchmetrics_state_metrics(rank: int, world_size: int, form: str) -> list[dict]:
    mean, auroc = torchmetrics.MeanMetric(), torchmetrics.classification.BinaryAUROC()
    given = {"loss": mean, "auroc": auroc} if form == "metric" else {"loss": mean.compute, "auroc": auroc.compute}
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False, state_metrics=given)
    out = []
    for owner, scores in _IDLE_INTERVALS:
        if rank == owner:  # the other rank has no update in this interval (rank 1 none at all before the second)
            mean.update(torch.tensor(scores))
            auroc.update(torch.tensor(scores), torch.tensor(_idle_labels(scores)))
        module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})  # every rank steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append({key: value.item() for key, value in module.compute().items()})
    if rank == 0:  # local_compute communicates with no rank: rank 0 alone calls it
        out.append({key: value.item() for key, value in module.local_compute().items()})
    return out


@pytest.mark.ddp
@pytest.mark.parametrize("form", ["metric", "compute"])
def test_torchmetrics_state_metrics_sync_on_every_rank_after_an_idle_interval(ddp_pool, form):
    """A TorchMetrics metric (or its ``compute``) as a state metric: each compute() is over every rank's samples.

    TorchMetrics serves the cached value on a rank without an update since the last compute, without
    joining the sync the other rank waits in (a hang); a rank that never updated sends BinaryAUROC's
    empty list as float32 against the other's int64 labels. Every rank computes afresh instead.
    """
    results = ddp_pool.run(_torchmetrics_state_metrics, form, timeout=120)
    scores: list[float] = []
    for i, (_, batch) in enumerate(_IDLE_INTERVALS):
        scores += batch
        expected = {
            "ctr/click": 1.0,
            "loss": float(np.mean(np.array(scores, dtype=np.float32))),
            "auroc": roc_auc_score(_idle_labels(scores), scores),
        }
        for result in results:
            assert result[i] == pytest.approx(expected, rel=1e-6)
    own = [s for owner, batch in _IDLE_INTERVALS if owner == 0 for s in batch]
    expected_local = {"ctr/click": 1.0, "loss": float(np.mean(own)), "auroc": roc_auc_score(_idle_labels(own), own)}
    assert results[0][-1] == pytest.approx(expected_local, rel=1e-6)


# per step, the rows of make_data(23) each rank takes: rank 1 has no data in steps 0, 1 (a whole
# interval of 2 steps) and 4; rank 0's step 3 weighs zero
_CADENCE_ROWS = [
    ((0, 40), None),
    ((40, 90), None),
    ((90, 100), (100, 160)),
    ((160, 200), (200, 230)),
    ((230, 300), None),
    ((300, 310), (310, 400)),
]


def _cadence_step(data: dict[str, torch.Tensor], rows: tuple[int, int] | None, zero: bool) -> dict[str, torch.Tensor]:
    lo, hi = rows if rows is not None else (0, 0)  # no data: the columns, empty
    part = {key: value[lo:hi].clone() for key, value in data.items()}
    if zero:
        part["click_w"].zero_()
        part["buy_w"].zero_()
    return part


def _cadence_under_ddp(rank: int, world_size: int) -> list[tuple[int, dict[str, float]]]:
    data = make_data(23)
    module = build({"ctr": "ctr", "ne": "ne"}, compute_interval_steps=2)
    computed = []
    for step, rows in enumerate(_CADENCE_ROWS):
        module.update(_cadence_step(data, rows[rank], zero=rank == 0 and step == 3))  # every rank, every step
        if module.should_compute():  # decided on each rank alone
            computed.append((step, {key: value.item() for key, value in module.compute().items()}))
    return computed


@pytest.mark.ddp
def test_should_compute_agrees_across_ranks_when_every_rank_updates_each_step(ddp_pool):
    """The documented rule: every rank calls update once per step (empty columns without data, zero weights count).

    ``should_compute()`` counts update calls on each rank without communicating, so both ranks
    enter ``compute()`` (a collective) at the same steps, and each value is over both ranks' rows so far.
    """
    data = make_data(23)
    results = ddp_pool.run(_cadence_under_ddp, timeout=120)
    assert [step for step, _ in results[0]] == [step for step, _ in results[1]] == [1, 3, 5]
    seen: list[tuple[int, int, bool]] = []
    for step, rows in enumerate(_CADENCE_ROWS):
        seen += [(lo, hi, rank == 0 and step == 3) for rank, (lo, hi) in enumerate(r or (0, 0) for r in rows)]
        if step % 2 == 0:
            continue
        expected = {}
        for task in ("click", "buy"):
            p = np.concatenate([data[f"{task}_pred"][lo:hi].double().numpy() for lo, hi, _ in seen])
            y = np.concatenate([data[f"{task}_label"][lo:hi].double().numpy() for lo, hi, _ in seen])
            w = np.concatenate([data[f"{task}_w"][lo:hi].numpy() * (0.0 if zero else 1.0) for lo, hi, zero in seen])
            expected[f"ctr/{task}"] = float(np.sum(w * y) / np.sum(w))
            expected[f"ne/{task}"] = float(ref_ne(p, y, w))
        for result in results:
            values = dict(result)[step]
            assert values == pytest.approx(expected, rel=1e-9)


def _count_collectives(rank: int, world_size: int, num_metrics: int, throughput: bool = False) -> int:
    from tests.helpers.ddp import count_collectives

    # both sets hold float64 sums, float32 samples and int64 ids (the dtypes decide the count)
    pool = ["ne", "gauc", "ctr", "mse", "auc", "accuracy", "calibration", "log_loss", "rmse", "auprc", "ndcg@3"]
    metrics = {f"m{i}": pool[i] for i in range(min(num_metrics, len(pool)))}
    for i in range(len(pool), num_metrics):  # more settings: statistics that are not shared
        metrics[f"m{i}"] = lambda num_tasks, i=i: tmx.WeightedAccuracy(num_tasks=num_tasks, threshold=0.01 * i)
    module = tmx.RecMetricModule(TASKS, metrics, throughput=throughput)
    for part in _shard(make_data(21), rank, "uneven"):
        module.update(part)

    def compute() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module.compute()

    return count_collectives(compute)


@pytest.mark.ddp
def test_the_number_of_collectives_does_not_grow_with_the_number_of_metrics(ddp_pool):
    few = ddp_pool.run(_count_collectives, 2)
    many = ddp_pool.run(_count_collectives, 20)
    assert few == many
    # the throughput's float64 states go in the same fused gather: not one collective more
    assert ddp_pool.run(_count_collectives, 20, True) == many
    assert 0 < few[0] <= 4  # shapes + one per state dtype (float64, float32, int64)


# ----------------------------------------------------------------------------- windows


def _kept(sizes: list[int], window: int) -> list[tuple[int, int]]:
    """``(update, newest samples kept)``: the newest whole updates summing to at most ``window``; an
    update larger than the window on its own keeps its newest ``window`` samples (TorchRec's rule)."""
    if sizes[-1] >= window:
        return [(len(sizes) - 1, window)]
    kept, total = [], 0
    for i in range(len(sizes) - 1, -1, -1):
        if total + sizes[i] > window:
            break
        kept.append((i, sizes[i]))
        total += sizes[i]
    return kept


def _window_data(parts: list[dict[str, torch.Tensor]], window: int) -> dict[str, torch.Tensor]:
    kept = _kept([len(p["user"]) for p in parts], window)
    return {k: torch.cat([parts[i][k][len(parts[i][k]) - n :] for i, n in sorted(kept)]) for k in parts[0]}


WINDOW_METRICS = {
    "ne": "ne",
    "log_loss": "log_loss",
    "ctr": "ctr",
    "auc": "auc",
    "auprc": "auprc",
    "gauc": "gauc",
    "auc_binned": METRICS["auc_binned"],
    "ndcg@3": "ndcg@3",
}


def test_window_values_equal_the_metric_over_the_samples_the_rule_keeps():
    data = make_data(30, n=900)
    bounds = [0, 120, 200, 380, 420, 900]  # the last update is larger than the window
    parts = batches(data, bounds)
    module = build(WINDOW_METRICS, window_size=300)
    lifetime_only = build(WINDOW_METRICS)
    for i, part in enumerate(parts):
        module.update(part)
        lifetime_only.update(part)
        values = run(module, [])
        expected_window = run(build(WINDOW_METRICS), [_window_data(parts[: i + 1], 300)])
        for key, value in run(lifetime_only, []).items():
            torch.testing.assert_close(values[key], value, rtol=1e-12, atol=1e-12, equal_nan=True)
            torch.testing.assert_close(
                values[f"{key}/window"], expected_window[key], rtol=1e-9, atol=1e-12, equal_nan=True
            )
    assert len(values) == 2 * len(WINDOW_METRICS) * len(TASKS)


def test_window_keys_in_torchrec_style():
    bits = lambda num_tasks: tmx.LogLoss(num_tasks, unit="bits")  # noqa: E731  (TorchRec's logloss)
    module = tmx.RecMetricModule(
        TASKS, {"ne": "ne", "log_loss": bits}, throughput=False, window_size=100, key_style="torchrec"
    )
    assert set(run(module, [make_data(31)])) == {
        f"ne-{t}|{part}_{name}"
        for t in ("click", "buy")
        for part in ("lifetime", "window")
        for name in ("ne", "logloss")
    }


def test_window_resumes_mid_window_and_reset_clears_it(tmp_path):
    parts = batches(make_data(32, n=900), [0, 100, 250, 400, 500, 700, 900])
    whole = run(build(WINDOW_METRICS, window_size=350), parts)
    first = build(WINDOW_METRICS, window_size=350)
    for part in parts[:3]:
        first.update(part)
    torch.save(first.state_dict(), tmp_path / "module.pt")
    resumed = build(WINDOW_METRICS, window_size=350)
    resumed.load_state_dict(torch.load(tmp_path / "module.pt", weights_only=False))
    values = run(resumed, parts[3:])
    for key, value in whole.items():
        torch.testing.assert_close(values[key], value, rtol=0, atol=0, equal_nan=True)
    resumed.reset()
    again = run(resumed, parts[4:])
    expected = run(build(WINDOW_METRICS), [_window_data(parts[4:], 350)])
    for key, value in expected.items():
        torch.testing.assert_close(again[f"{key}/window"], value, rtol=1e-9, atol=1e-12, equal_nan=True)


def _ddp_window(rank: int, world_size: int) -> dict:
    module = build(WINDOW_METRICS, window_size=400)
    for part in _shard(make_data(33), rank, "uneven"):
        module.update(part)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.compute()


@pytest.mark.ddp
def test_ddp_window_keeps_each_ranks_share(ddp_pool):
    data = make_data(33)
    kept = [_window_data(_shard(data, rank, "uneven"), 200) for rank in (0, 1)]  # window_size // world_size each
    expected = run(build(WINDOW_METRICS), [{k: torch.cat([kept[0][k], kept[1][k]]) for k in kept[0]}])
    lifetime = run(build(WINDOW_METRICS), [data])
    for values in ddp_pool.run(_ddp_window):
        for key, value in expected.items():
            torch.testing.assert_close(values[f"{key}/window"], value, rtol=1e-9, atol=1e-12, equal_nan=True)
            torch.testing.assert_close(values[key], lifetime[key], rtol=1e-9, atol=1e-12, equal_nan=True)


def _tiny_window_job(rank: int, world_size: int, rank1_step: str) -> tuple[list[str], int]:
    """Rank 0 updates samples; rank 1 an empty step, a step of zero weights, or nothing; then both compute."""
    module = tmx.RecMetricModule(TASKS, {"ctr": "ctr", "auc": "auc"}, window_size=1, throughput=True)
    module._skip_zero_weight_steps = True  # TorchRec's should_validate_update (from_torchrec_config sets it)
    data = batches(make_data(40, n=8), [0, 8])[0]
    if rank == 1:
        data = {k: v[:0] for k, v in data.items()} if rank1_step == "empty" else dict(data)
        if rank1_step == "zero weights":
            data |= {"click_w": torch.zeros(8, dtype=torch.float64), "buy_w": torch.zeros(8, dtype=torch.float64)}
    steps = [module.compute] if rank == 1 and rank1_step == "none" else [lambda: module.update(data), module.compute]
    raised = []
    for step in steps:
        try:
            step()
        except ValueError as err:
            raised.append(str(err))
    return raised, module._step


@pytest.mark.ddp
@pytest.mark.parametrize("rank1_step", ["empty", "zero weights", "none"])
def test_ddp_window_smaller_than_the_world_is_refused_on_every_rank(ddp_pool, rank1_step):
    """A window_size below the world size was refused only by the ranks whose step reached a metric (samples of
    nonzero weight): rank 1 went on into the next compute's gather and waited there for rank 0 (timeout)."""
    message = "Expected `window_size` (1) to be at least the world size (2)"
    results = ddp_pool.run(_tiny_window_job, rank1_step, timeout=60)
    for rank, (raised, steps) in enumerate(results):
        assert all(message in m for m in raised) and len(raised) == (1 if rank == 1 and rank1_step == "none" else 2)
        assert steps == 0  # a refused step is not counted


def test_throughput_keys_count_the_examples_of_every_step():
    parts = batches(make_data(34), [0, 100, 350, 600])
    for style, keys in (
        (
            "torchmetrics_ext",
            ["throughput/lifetime_throughput", "throughput/window_throughput", "throughput/total_examples"],
        ),
        (
            "torchrec",  # every example is attempted (TorchRec's attempt_* keys): a bad step raises, none is skipped
            [
                f"throughput-throughput|{k}"
                for k in (
                    "lifetime_throughput",
                    "window_throughput",
                    "total_examples",
                    "attempt_examples",
                    "attempt_throughput",
                )
            ],
        ),
    ):
        module = tmx.RecMetricModule(TASKS, {"ctr": "ctr"}, key_style=style)
        values = run(module, parts)
        assert list(values)[-len(keys) :] == keys
        assert values[keys[2]].item() == 600
        if style == "torchrec":
            assert values[keys[3]].item() == 600
            torch.testing.assert_close(values[keys[4]], values[keys[0]], equal_nan=True)  # nan in warm-up


@pytest.mark.parametrize(("interval", "warmup"), [(100, 50), (10, 5), (2, 1), (1000, 100)])
def test_the_default_throughput_has_rates_at_the_first_compute(interval, warmup):
    """The module's own Throughput warms up for half the compute interval (at most 100 steps)."""
    module = tmx.RecMetricModule(TASKS[:1], {"ctr": "ctr"}, compute_interval_steps=interval)
    assert module.throughput.warmup_steps == warmup
    ticks = iter(range(10_000))
    module.throughput.clock = lambda: float(next(ticks))  # one second per update
    step = {"click_pred": torch.full((8,), 0.5), "click_label": torch.ones(8, dtype=torch.long)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", tmx.UndefinedMetricWarning)
        while not module.should_compute():
            module.update(step)
        values = module.compute()
    assert values["throughput/total_examples"].item() == 8 * interval
    # the clock starts at the last warm-up update: (interval - warmup) timed updates of 8 examples, 1 s each
    assert values["throughput/lifetime_throughput"].item() == pytest.approx(8.0)
    assert values["throughput/window_throughput"].item() == pytest.approx(8.0)


def test_state_metric_numbers_are_logged_exactly():
    """A Python float (a learning rate) is logged as float64, not rounded to float32; tensors keep their dtype."""
    module = build(
        {"ne": "ne"},
        state_metrics={"lr": lambda: 1e-4, "step": lambda: 7, "scale": lambda: torch.tensor(0.5, dtype=torch.float16)},
    )
    values = run(module, [make_data(1)])
    assert values["lr"].dtype == torch.float64 and values["lr"].item() == 1e-4
    assert values["step"].dtype == torch.float64 and values["step"].item() == 7
    assert values["scale"].dtype == torch.float16


def test_one_metric_object_under_two_names_is_rejected():
    ne = tmx.NormalizedEntropy(num_tasks=2)
    with pytest.raises(ValueError, match="'a' and 'b' are the same object"):
        tmx.RecMetricModule(TASKS, {"a": ne, "b": ne, "c": "ne"}, throughput=False)


def test_torchrec_keys_never_collide():
    """Metrics without a TorchRec key of their own are keyed by their names; two of one TorchRec key keep apart."""
    task = tmx.RecTaskInfo("t", session_id_name="q")
    step = {
        "prediction": torch.tensor([0.9, 0.6, 0.7, 0.3]),
        "label": torch.tensor([0, 1, 1, 0]),
        "q": torch.tensor([0, 0, 1, 1]),
    }
    metrics = {"recall@1": "recall@1", "recall5": "recall@5", "wr": "weighted_recall"}
    values = run(tmx.RecMetricModule([task], metrics, throughput=False, key_style="torchrec"), [step])
    # recall@1 by hand: query 0 ranks its relevant row second (0), query 1 first (1); weighted recall
    # at 0.5: both positives are predicted positive (TorchRec's RecallMetric, under its key)
    assert values == {
        "recall@1-t|lifetime_recall@1": torch.tensor(0.5, dtype=torch.float64),
        "recall5-t|lifetime_recall5": torch.tensor(1.0, dtype=torch.float64),
        "recall-t|lifetime_recall": torch.tensor(1.0, dtype=torch.float64),
    }
    # two NEs: the one named "ne" keeps TorchRec's key, the other its own name
    keys = run(tmx.RecMetricModule([task], {"x": "ne", "ne": "ne"}, throughput=False, key_style="torchrec"), [step])
    assert sorted(keys) == ["ne-t|lifetime_ne", "x-t|lifetime_x"]


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        # a fallback equal to TorchRec's key of another metric: it used to be logged there
        (
            {"recall": {"metric": "recall@1"}, "wr": {"metric": "weighted_recall"}},
            r"'recall' would be logged as recall-\{task\}\|lifetime_recall",
        ),
        (
            {"calibration": {"metric": "ne"}, "x": {"metric": "ne"}, "y": {"metric": "calibration"}},
            r"'calibration' would be .* give it another name",
        ),
        ({"precision": {"metric": "precision@2"}}, "TorchRec's key for its 'precision' metric"),
        # the registry's default NDCG skips queries without relevance; TorchRec's counts them 0
        (["ndcg"], r"NDCG\(empty_target_action='zero', queries_complete_per_batch=True\)"),
        (["cali_free_ne"], r"CalibrationFreeNE\(torchrec_scaling=True\)"),
        (
            {"gauc": {"metric": "gauc", "weight_groups": True}},
            r"as GroupedAUC\(average_groups='defined', groups_complete_per_batch=True, weight_groups=False\) to",
        ),
    ],
)
def test_a_metric_keyed_like_another_torchrec_metric_is_refused(metrics, match):
    """A TorchRec key holds TorchRec's value: a metric computing something else may not take one as its name."""
    config = {"tasks": [{"name": "t", "session_id_name": "q", "group_id_name": "q"}], "metrics": metrics}
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule.from_config({**config, "key_style": "torchrec"})
    tmx.RecMetricModule.from_config(config)  # its own key style has no such key


def test_a_dict_entry_keyed_like_a_torchrec_metric_is_refused_when_the_module_is_built():
    """HindsightTargetPR named "precision": its precision entry would be TorchRec's PrecisionMetric key.

    Its entries are known from its settings, so the module refuses it when built, not at the first compute.
    """
    hpr = lambda num_tasks: tmx.HindsightTargetPR(num_tasks, target_precision=0.5, num_thresholds=5)  # noqa: E731
    step = {"prediction": torch.tensor([0.9, 0.2, 0.6]), "label": torch.tensor([1, 0, 1])}
    with pytest.raises(ValueError, match="'precision' would be logged as precision-"):
        tmx.RecMetricModule(["t"], {"precision": hpr}, throughput=False, key_style="torchrec")
    with pytest.raises(ValueError, match="'ndcg' would be logged as ndcg-"):  # RankingMetrics' "ndcg" (no cutoff)
        tmx.RecMetricModule(
            [tmx.RecTaskInfo("t", session_id_name="q")],
            {"ndcg": tmx.RankingMetrics(ks=(None, 5), metrics=("ndcg", "mrr"))},
            throughput=False,
            key_style="torchrec",
        )
    ranking = tmx.RecMetricModule(  # entries "ndcg@10": no clash
        [tmx.RecTaskInfo("t", session_id_name="q")],
        {"ndcg": tmx.RankingMetrics(ks=(10,), metrics=("ndcg",))},
        throughput=False,
        key_style="torchrec",
    )
    ranking.update({**step, "q": torch.tensor([0, 0, 1])})
    assert sorted(ranking.compute()) == ["ndcg-t|lifetime_ndcg@10"]
    module = tmx.RecMetricModule(["t"], {"hindsight_target_pr": hpr}, throughput=False, key_style="torchrec")
    module.update(step)  # TorchRec's hindsight keys are named hindsight_target_precision, ...: no clash
    assert sorted(module.compute()) == [
        f"hindsight_target_pr-t|lifetime_{entry}" for entry in ("precision", "recall", "threshold")
    ]


@pytest.mark.parametrize("metrics", [{"ne": "ne", "calibration": "calibration"}, {"auc": "auc_binned"}])
def test_a_step_under_inference_mode_leaves_the_window_usable(metrics):
    """Window buffers first made under ``torch.inference_mode`` are ordinary tensors: later steps can write them."""
    specs = {"ne": "ne", "calibration": "calibration", "auc_binned": lambda num_tasks: tmx.AUC(num_tasks, num_bins=8)}
    module = build({k: specs[v] for k, v in metrics.items()}, window_size=300)
    reference = build({k: specs[v] for k, v in metrics.items()}, window_size=300)
    data = make_data(11, n=900)
    for i, part in enumerate(batches(data, list(range(0, 901, 90)))):
        if i % 3 == 1:  # raised "Inplace update to inference tensor outside InferenceMode" after such a step
            module.update(part)
        else:
            with torch.inference_mode():
                module.update(part)
        reference.update(part)
    assert run(module, []) == run(reference, [])


@pytest.mark.parametrize("window_size", [None, 10])
@pytest.mark.parametrize("weighted_first", [True, False])
def test_ranking_takes_steps_with_and_without_a_weight_column(window_size, weighted_first):
    """A step without the weight column weighs its queries 1, windowed or not, in either order."""
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo("t", session_id_name="q")],
        {"ne": "ne", "ndcg": "ndcg"},
        window_size=window_size,
        throughput=False,
    )
    weighted = {
        "prediction": torch.tensor([0.9, 0.2]),
        "label": torch.tensor([1, 0]),
        "q": torch.tensor([0, 0]),
        "weight": torch.tensor([2.0, 2.0]),
    }
    plain = {"prediction": torch.tensor([0.3, 0.6]), "label": torch.tensor([1, 0]), "q": torch.tensor([1, 1])}
    for step in (weighted, plain) if weighted_first else (plain, weighted):
        module.update(step)
    # query 0: relevant row first (NDCG 1), weight 2; query 1: relevant row second (1 / log2 3), weight 1
    expected = (2 * 1.0 + 1 * (1 / np.log2(3))) / 3
    values = module.compute()
    keys = ["ndcg/t"] + ([] if window_size is None else ["ndcg/t/window"])
    for key in keys:
        np.testing.assert_allclose(values[key].item(), expected, rtol=1e-12, err_msg=key)
    module.update(plain)  # and every later compute works
    assert all(torch.isfinite(module.compute()[key]) for key in keys)


@pytest.mark.parametrize("window_size", [None, 100])
def test_ranking_keeps_its_rows_when_the_step_buffers_are_reused(window_size):
    """One dict of preallocated buffers overwritten every step: the ranking rows kept from earlier steps
    are the metric's own copies (they read the last step's rows for every step). Two tasks share the
    session id and weight columns: each is copied once for both tasks, not kept as the caller's tensor."""
    tasks = [
        tmx.RecTaskInfo("a", "la", "pa", "w", session_id_name="q"),
        tmx.RecTaskInfo("b", "lb", "pb", "w", session_id_name="q"),
    ]
    module = tmx.RecMetricModule(tasks, {"mrr": "mrr", "ndcg": "ndcg"}, window_size=window_size, throughput=False)
    steps = [
        {"pa": [0.9, 0.1, 0.5], "la": [1, 0, 0], "pb": [0.2, 0.8, 0.4], "lb": [0, 0, 1], "q": 0, "w": 2.0},
        {"pa": [0.2, 0.8, 0.4], "la": [1, 0, 0], "pb": [0.9, 0.1, 0.5], "lb": [0, 1, 0], "q": 1, "w": 1.0},
    ]
    buffers = {
        "pa": torch.empty(3),
        "pb": torch.empty(3),
        "la": torch.empty(3, dtype=torch.int8),
        "lb": torch.empty(3, dtype=torch.int8),
        "q": torch.empty(3, dtype=torch.int32),
        "w": torch.empty(3),
    }
    for step in steps:
        for key, buffer in buffers.items():
            buffer.copy_(torch.as_tensor(step[key]).expand(3))
        module.update(buffers)
    for buffer in buffers.values():
        buffer.fill_(1)
    values = module.compute()

    def reciprocal_rank(p, y):  # first relevant row in descending score order (no ties here)
        return 1.0 / (1 + int(np.flatnonzero(np.asarray(y)[np.argsort(-np.asarray(p))])[0]))

    def ndcg(p, y):  # binary gains, one relevant row: 1 / log2(1 + its rank)
        return 1.0 / np.log2(1 + 1 / reciprocal_rank(p, y))

    for task in ("a", "b"):
        weights = [s["w"] for s in steps]
        expected = {
            "mrr": np.average([reciprocal_rank(s[f"p{task}"], s[f"l{task}"]) for s in steps], weights=weights),
            "ndcg": np.average([ndcg(s[f"p{task}"], s[f"l{task}"]) for s in steps], weights=weights),
        }
        for name, value in expected.items():
            keys = [f"{name}/{task}"] + ([] if window_size is None else [f"{name}/{task}/window"])
            for key in keys:
                np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)
    units = [m for m in module.modules() if isinstance(m, tmx.MRR) and isinstance(m.indexes, list) and m.indexes]
    assert len(units) >= 2
    for name in ("indexes", "weights"):
        kept = {id(chunk) for unit in units for chunk in getattr(unit, name)}
        assert len(kept) == len(steps), name  # one copy per step, shared by the tasks
        assert all(
            chunk.untyped_storage().data_ptr() != buffers[{"indexes": "q", "weights": "w"}[name]].data_ptr()
            for unit in units
            for chunk in getattr(unit, name)
        )


def test_ranking_tasks_share_their_joined_id_and_weight_chunks():
    """Small chunks are joined as they arrive; tasks that shared a step's id and weight copies share their join.

    300 steps of one 3-row session for two tasks: each metric keeps a few joined chunks, and the
    id and weight chunks are the same tensors in both tasks (joined, each task had its own copy).
    Values: mean reciprocal rank by hand, weighted by the session weight.
    """
    tasks = [
        tmx.RecTaskInfo("a", "la", "pa", "w", session_id_name="q"),
        tmx.RecTaskInfo("b", "lb", "pb", "w", session_id_name="q"),
    ]
    module = tmx.RecMetricModule(tasks, {"mrr": "mrr"}, throughput=False)
    rng = np.random.default_rng(3)
    steps = []
    for q in range(300):
        step = {f"p{t}": rng.random(3) for t in "ab"}
        step |= {f"l{t}": np.eye(3, dtype=np.int64)[rng.integers(3)] for t in "ab"}
        step |= {"q": np.full(3, q), "w": np.full(3, rng.random() + 0.5)}
        steps.append(step)
        module.update({key: torch.from_numpy(value) for key, value in step.items()})
    units = [m for m in module.modules() if isinstance(m, tmx.MRR)]
    assert len(units) == 2 and all(len(unit.indexes) <= 80 for unit in units)
    for name in ("indexes", "weights"):
        assert [id(c) for c in units[0].__dict__[name]] == [id(c) for c in units[1].__dict__[name]], name
    values = module.compute()
    for task in "ab":
        rr = [1.0 / (1 + np.argsort(-s[f"p{task}"]).tolist().index(int(np.argmax(s[f"l{task}"])))) for s in steps]
        expected = np.average(rr, weights=[s["w"][0] for s in steps])
        np.testing.assert_allclose(values[f"mrr/{task}"].item(), expected, rtol=1e-12)


def test_calling_the_module_says_how_to_use_it():
    module = build({"ne": "ne"})
    with pytest.raises(TypeError, match=r"feed each step with `update\(model_out\)`"):
        module(make_data(1))


def test_a_checkpoint_resumes_with_another_compute_interval():
    """The own throughput's warm-up follows the interval; its checkpoint still loads (counts kept)."""
    saved = tmx.RecMetricModule(["click"], {"ne": "ne"}, compute_interval_steps=100)
    for _ in range(3):
        saved.update({"prediction": torch.full((4,), 0.5), "label": torch.tensor([0.0, 1.0, 1.0, 0.0])})
    resumed = tmx.RecMetricModule(["click"], {"ne": "ne"}, compute_interval_steps=20)
    resumed.load_state_dict(copy.deepcopy(saved.state_dict()))  # strict
    with pytest.warns(tmx.UndefinedMetricWarning, match="no timed step"):  # 3 steps: still warming up
        assert resumed.local_compute()["throughput/total_examples"].item() == 12


def test_a_checkpoint_without_a_metrics_states_is_refused():
    """Calibration built with from_logits=True shared CTR's states in the saved module (one compute group):
    the checkpoint holds none of its own, which must be missing keys, not a silent restart from zero."""
    saved = tmx.RecMetricModule(["t"], {"ctr": "ctr", "cal": "calibration"}, throughput=False)
    saved.update({"prediction": torch.tensor([0.9, 0.2]), "label": torch.tensor([1, 0])})
    other = tmx.RecMetricModule(["t"], {"ctr": "ctr", "cal": tmx.Calibration(from_logits=True)}, throughput=False)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*metrics\.cal\."):
        other.load_state_dict(saved.state_dict())
    missing = other.load_state_dict(copy.deepcopy(saved.state_dict()), strict=False).missing_keys
    assert sorted(k.split(".")[1] for k in missing) == ["cal"] * 3


def test_a_metric_raising_midway_through_a_load_leaves_the_module_as_it_was(monkeypatch):
    """A child whose load raises (rather than reporting an error) ends the load before the module's post-hook:
    the metrics loaded before it are put back all the same, and nothing of the load is kept on the module."""
    import torchmetrics

    tasks = [tmx.RecTaskInfo("a", "la", "pa"), tmx.RecTaskInfo("b", "lb", "pb")]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "ne": "ne", "auc": "auc"}, window_size=100, throughput=False)
    g = torch.Generator().manual_seed(0)
    steps = [{k: torch.rand(8, generator=g) for k in ("pa", "pb")} for _ in range(5)]
    for step in steps:
        step.update(la=(step["pa"] > 0.5).float(), lb=(torch.rand(8, generator=g) < 0.5).float())
    for step in steps[:3]:
        module.update(step)
    saved = module.state_dict()
    for step in steps[3:]:
        module.update(step)
    labels = torch.cat([s["la"] for s in steps]).double().numpy()
    last = [m for m in module.modules() if isinstance(m, torchmetrics.Metric)][-1]  # loads after the others

    def fail(*args, **kwargs):
        raise KeyError("a child that raises")

    monkeypatch.setattr(last, "_load_from_state_dict", fail)
    with pytest.raises(KeyError, match="a child that raises"):
        module.load_state_dict(saved)
    assert "_load_guard" not in module.__dict__
    assert module.compute()["ctr/a"].item() == pytest.approx(labels.mean(), rel=1e-12)  # all five steps


def _five_steps_module():
    """A two-task module (CTR, NE, AUC, a window) inside a parent ``nn.Module``, its steps and the labels of task a."""
    import torchmetrics

    tasks = [tmx.RecTaskInfo("a", "la", "pa"), tmx.RecTaskInfo("b", "lb", "pb")]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "ne": "ne", "auc": "auc"}, window_size=100, throughput=False)
    parent = torch.nn.Module()
    parent.add_module("rec", module)
    g = torch.Generator().manual_seed(0)
    steps = [{k: torch.rand(8, generator=g) for k in ("pa", "pb")} for _ in range(5)]
    for step in steps:
        step.update(la=(step["pa"] > 0.5).float(), lb=(torch.rand(8, generator=g) < 0.5).float())
    labels = [s["la"].double().numpy() for s in steps]
    metrics = [m for m in module.modules() if isinstance(m, torchmetrics.Metric)]
    return parent, module, steps, labels, metrics


def _shadowed_loads(module):
    """The modules under ``module`` whose ``_load_from_state_dict`` is an instance attribute (a load's wrapper)."""
    return [m for m in module.modules() if "_load_from_state_dict" in m.__dict__]


@pytest.mark.parametrize("which", ["wrapper", "last"])
def test_a_metric_raising_midway_through_a_parent_load_leaves_the_module_as_it_was(monkeypatch, which):
    """``parent.load_state_dict`` (Lightning's restore) loads the module's metrics one by one; one that raised
    ended the load before the module's post-hook, and the metrics loaded before it stayed loaded (the CTR of
    the checkpoint's three steps, not of the module's five). Its exception now puts the module back first."""
    parent, module, steps, labels, metrics = _five_steps_module()
    for step in steps[:3]:
        module.update(step)
    saved = parent.state_dict()
    for step in steps[3:]:
        module.update(step)

    def fail(*args, **kwargs):
        raise KeyError("a child that raises")

    # the metrics load in the collection's order (auc, ctr, ne): NE's wrapper itself, or its window metric
    failing = metrics[-1] if which == "last" else module.metrics["ne"]
    monkeypatch.setattr(failing, "_load_from_state_dict", fail)
    with pytest.raises(KeyError, match="a child that raises"):
        parent.load_state_dict(saved)
    values = module.compute()  # of the five steps: AUC and CTR, loaded before NE, are put back
    assert values["ctr/a"].item() == pytest.approx(np.concatenate(labels).mean(), rel=1e-12)
    p = torch.cat([s["pa"] for s in steps]).double().numpy()
    assert values["auc/a"].item() == pytest.approx(roc_auc_score(np.concatenate(labels), p), rel=1e-12)
    assert "_load_guard" not in module.__dict__
    assert _shadowed_loads(module) == [failing]  # the test's own patch only: no wrapper is left
    monkeypatch.undo()
    parent.load_state_dict(saved)  # the same checkpoint, nothing raising: the saved three steps
    assert _shadowed_loads(module) == []
    assert module.compute()["ctr/a"].item() == pytest.approx(np.concatenate(labels[:3]).mean(), rel=1e-12)


def test_a_load_leaves_no_wrapper_on_the_metrics_and_copies_load_into_themselves():
    """The wrappers that catch a raising descendant live for one load: none after a load (direct or through
    a parent, refused or not), so a copy of the module loads its own metrics, not the original's."""
    parent, module, steps, labels, _ = _five_steps_module()
    module.update(steps[0])
    saved = parent.state_dict()
    parent.load_state_dict(saved)
    module.load_state_dict({k[len("rec.") :]: v for k, v in saved.items()})
    bad = dict(saved)
    key = "rec.metrics.ctr.lifetime.weighted_label_sum"
    bad[key] = bad[key].long()
    with pytest.raises(RuntimeError, match=rf"dtype mismatch for {re.escape(key)}: the checkpoint holds torch.int64"):
        parent.load_state_dict(bad)
    assert _shadowed_loads(module) == []
    twin = copy.deepcopy(parent)
    twin.load_state_dict(saved)
    module.update(steps[1])
    assert twin.rec.compute()["ctr/a"].item() == pytest.approx(labels[0].mean(), rel=1e-12)
    assert module.compute()["ctr/a"].item() == pytest.approx(np.concatenate(labels[:2]).mean(), rel=1e-12)


def _load_post_hooks(module):
    """Every load post-hook under ``module`` (not its own), as registered: ``{(module name, key): hook}``."""
    return {
        (name, key): hook
        for name, m in module.named_modules()
        if m is not module
        for key, hook in m._load_state_dict_post_hooks.items()
    }


@pytest.mark.parametrize("through", ["parent", "module"])
@pytest.mark.parametrize("where", ["first", "wrapper"])
def test_a_descendant_post_hook_raising_midway_through_a_load_leaves_the_module_as_it_was(through, where):
    """A descendant's load post-hook is called by torch, outside every method of the descendant: one that raised
    (a user's check of the loaded states) ended a parent's load with the wrappers still on the metrics not yet
    loaded and the metrics loaded before it kept loaded. The guard now wraps those hooks for the load too: the
    module is put back (the CTR of its own two steps, not the checkpoint's one), no wrapper is left and every
    hook is the one registered, and the next load, the hook quiet, loads as usual."""
    parent, module, steps, labels, metrics = _five_steps_module()
    module.update(steps[0])
    saved = parent.state_dict()
    module.update(steps[1])
    raising = [True]

    def check(mod, incompatible_keys):  # a user's hook; a Windowed has a hook of its own before it
        if raising[0]:
            raise OSError("a post-hook that raises")

    # the metrics load in the collection's order (auc, ctr, ne): the first one's, or NE's wrapper's, after its children
    (metrics[0] if where == "first" else module.metrics["ne"]).register_load_state_dict_post_hook(check)
    registered = _load_post_hooks(module)
    assert check in registered.values() and len(registered) > 1  # the windows' own hooks too
    load = parent.load_state_dict if through == "parent" else module.load_state_dict
    checkpoint = saved if through == "parent" else {k[len("rec.") :]: v for k, v in saved.items()}
    with pytest.raises(OSError, match="a post-hook that raises"):
        load(checkpoint)
    assert _shadowed_loads(module) == [] and "_load_guard" not in module.__dict__
    assert _load_post_hooks(module) == registered  # the registered callables themselves, in their order
    values = module.compute()  # AUC, CTR and NE of the module's two steps, as before the load
    both = np.concatenate(labels[:2])
    p = torch.cat([s["pa"] for s in steps[:2]]).double().numpy()
    assert values["ctr/a"].item() == pytest.approx(both.mean(), rel=1e-12)
    assert values["auc/a"].item() == pytest.approx(roc_auc_score(both, p), rel=1e-12)
    assert values["ne/a"].item() == pytest.approx(ref_ne(p, both, np.ones_like(p)), rel=1e-12)
    raising[0] = False
    load(checkpoint)
    assert _shadowed_loads(module) == [] and _load_post_hooks(module) == registered
    assert module.compute()["ctr/a"].item() == pytest.approx(labels[0].mean(), rel=1e-12)


def test_strict_false_starts_a_metric_whose_checkpoint_holds_some_of_its_states_afresh():
    """The error recommends strict=False to "start them afresh": a Calibration checkpoint loaded into
    Calibration(from_logits=True) kept the label and weight sums of the saved run next to a zero prediction sum."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 100, generator=g)
    y = (torch.rand(6, 100, generator=g) < torch.sigmoid(z)).long()
    old = tmx.RecMetricModule(["click"], {"calibration": "calibration", "mse": "mse"}, throughput=False)
    for i in range(3):
        old.update({"prediction": torch.sigmoid(z[i]), "label": y[i]})
    logits = {"calibration": functools.partial(tmx.Calibration, from_logits=True), "mse": "mse"}
    new = tmx.RecMetricModule(["click"], logits, throughput=False)
    with pytest.raises(
        RuntimeError, match=r"(?s)metrics\.calibration: the checkpoint holds .*start those metrics afresh"
    ):
        new.load_state_dict(copy.deepcopy(old.state_dict()))
    new = tmx.RecMetricModule(["click"], logits, throughput=False)
    with pytest.warns(UserWarning, match="metrics.calibration: .*starts afresh"):
        result = new.load_state_dict(copy.deepcopy(old.state_dict()), strict=False)
    assert sorted(k.rsplit(".", 1)[1] for k in result.missing_keys if ".calibration." in k) == sorted(
        ["weighted_pred_sum_logits", "weighted_label_sum", "weighted_num_samples"]
    )
    assert result.unexpected_keys == ["metrics.calibration.weighted_pred_sum"]
    for i in range(3, 6):
        new.update({"prediction": z[i], "label": y[i]})
    values = new.compute()
    p, t = 1.0 / (1.0 + np.exp(-z.double().numpy())), y.numpy()
    np.testing.assert_allclose(values["calibration/click"].item(), p[3:].sum() / t[3:].sum(), rtol=1e-6)  # afresh
    mse = np.mean((p - t) ** 2)  # resumed: all six batches
    np.testing.assert_allclose(values["mse/click"].item(), mse, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # the added metrics before a step
@pytest.mark.parametrize("window_size", [None, 4])
def test_strict_false_starts_a_metric_added_since_afresh_in_a_module_that_had_steps(window_size):
    """strict=False "starts those metrics afresh": a metric of which the checkpoint holds no state at all loaded
    nothing, so a module loaded after steps of its own kept that metric's earlier steps next to the resumed ones
    (and the resumed step counter). Now it starts at its defaults, as the metric holding some states does."""
    saved_step = {"prediction": torch.tensor([0.2, 0.7, 0.4]), "label": torch.tensor([0.0, 1.0, 1.0])}
    saved = tmx.RecMetricModule(["click"], ["ne"], window_size=window_size, throughput=False)
    saved.update(saved_step)
    module = tmx.RecMetricModule(["click"], ["ne", "ctr", "auc"], window_size=window_size, throughput=False)
    for _ in range(2):  # steps before the load, none of which the loaded module should report
        module.update({"prediction": torch.tensor([0.9, 0.1]), "label": torch.tensor([1.0, 1.0])})
    result = module.load_state_dict(saved.state_dict(), strict=False)
    assert {k.split(".")[1] for k in result.missing_keys} == {"ctr", "auc"}
    assert all(math.isnan(v.item()) for k, v in module.compute().items() if not k.startswith("ne/"))
    new_step = {"prediction": torch.tensor([0.6, 0.3, 0.8, 0.5]), "label": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    module.update(new_step)
    values = module.compute()
    y = new_step["label"].numpy()
    assert values["ctr/click"].item() == pytest.approx(y.mean(), rel=1e-12)  # the step after the load only
    assert values["auc/click"].item() == pytest.approx(roc_auc_score(y, new_step["prediction"].numpy()), rel=1e-12)
    p = torch.cat([saved_step["prediction"], new_step["prediction"]]).double().numpy()
    t = torch.cat([saved_step["label"], new_step["label"]]).double().numpy()
    base = t.mean()
    ne = log_loss(t, p) / -(base * np.log(base) + (1 - base) * np.log(1 - base))  # resumed: the saved step too
    assert values["ne/click"].item() == pytest.approx(ne, rel=1e-9)
    assert module._step == 2  # the checkpoint's step, then this one


@pytest.mark.parametrize("strict", [True, False])
def test_with_a_window_a_metric_of_another_from_logits_is_refused_saying_so(strict):
    """docs/module.md said strict=False starts a metric of another `from_logits` afresh; with `window_size`
    its ring holds the other setting's states and the load is refused, strict or not (as docs/windows.md
    says of a wrapped metric with other settings): the error now says so, and nothing of it loads."""
    b1 = {"label": torch.tensor([1.0, 0, 1]), "prediction": torch.tensor([0.9, 0.2, 0.6])}
    logits = functools.partial(tmx.NormalizedEntropy, from_logits=True)
    saved = tmx.RecMetricModule(["t"], {"ne": logits}, throughput=False, window_size=4)
    saved.update(b1)
    module = tmx.RecMetricModule(["t"], {"ne": "ne"}, throughput=False, window_size=4)
    b2 = {"label": torch.tensor([0.0, 1, 1, 0]), "prediction": torch.tensor([0.3, 0.8, 0.4, 0.1])}
    module.update(b2)
    match = r"(?s)metrics\.ne\._extra_state: .*cross_entropy_sum_logits.*other settings \(another `from_logits`"
    with pytest.raises(RuntimeError, match=match):
        module.load_state_dict(copy.deepcopy(saved.state_dict()), strict=strict)
    p, y = b2["prediction"].double().numpy(), b2["label"].double().numpy()  # its own batch only
    ctr = y.mean()
    expected = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))) / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    values = module.compute()
    for key in ("ne/t", "ne/t/window"):
        np.testing.assert_allclose(values[key].item(), expected, rtol=1e-12)


def test_tied_logits_stay_tied_for_pairwise_concordance():
    """RegressionAUC/XAUC rank the logits themselves: a CPU sigmoid of equal logits may differ by an ulp
    (vector and scalar paths), which used to break their ties depending on the batch sizes."""
    z, y = torch.full((32,), -5.875), (torch.arange(32) < 16).long()
    results = []
    for split in ([32], [31, 1], [5, 27]):
        module = tmx.RecMetricModule(
            ["t"],
            {"auc": tmx.AUC(from_logits=True), "rauc": "regression_auc", "xauc": "xauc", "mse": "mse"},
            throughput=False,
        )
        start = 0
        for n in split:
            module.update({"prediction": z[start : start + n], "label": y[start : start + n]})
            start += n
        results.append({k: v.item() for k, v in module.compute().items()})
    p = 1 / (1 + np.exp(5.875))  # every example's probability
    for values in results:
        assert values["auc/t"] == 0.5 and values["rauc/t"] == 0.5  # every score tied: half of every pair
        assert values["xauc/t"] == results[0]["xauc/t"]  # not a function of the batch sizes
        np.testing.assert_allclose(values["mse/t"], np.mean((p - y.numpy()) ** 2), rtol=1e-12)


def test_an_instance_given_to_two_live_modules_is_rejected():
    """Train and val modules built from one dict of instances shared one object: a val reset wiped training."""
    metrics = {"auc": tmx.AUC(num_tasks=1), "ndcg": tmx.NDCG()}
    tasks = [tmx.RecTaskInfo("click", "y", "p", session_id_name="q")]
    train = tmx.RecMetricModule(tasks, metrics, throughput=False, prefix="train/")
    with pytest.raises(ValueError, match="already belongs to another RecMetricModule"):
        tmx.RecMetricModule(tasks, metrics, throughput=False, prefix="val/")
    # factories and names give each module its own objects; a copy of a module owns its copies
    factories = {"auc": lambda num_tasks: tmx.AUC(num_tasks=num_tasks), "ndcg": "ndcg"}
    a, b = (tmx.RecMetricModule(tasks, factories, throughput=False) for _ in range(2))
    copy.deepcopy(train)
    batch = {
        "p": torch.tensor([0.9, 0.2, 0.6, 0.3]),
        "y": torch.tensor([1, 0, 1, 0]),
        "q": torch.zeros(4, dtype=torch.long),
    }
    a.update(batch)
    b.reset()
    assert a.compute()["auc/click"].item() == 1.0  # sklearn: every positive above every negative
    del train
    gc.collect()
    tmx.RecMetricModule(tasks, metrics, throughput=False)  # the first owner is gone


def test_every_metric_the_module_takes_reports_one_number_per_key():
    """Every public metric class is refused at construction or gives scalar values (Reliability gave bin 0)."""
    from tests.test_pointwise_contract import _EVERY_METRIC

    task = tmx.RecTaskInfo("click", group_id_name="user", session_id_name="query")
    step = {
        "prediction": torch.tensor([0.1, 0.4, 0.8, 0.6]),
        "label": torch.tensor([0, 1, 1, 0]),
        "weight": torch.tensor([1.0, 2.0, 1.0, 0.5]),
        "user": torch.tensor([0, 0, 1, 1]),
        "query": torch.tensor([0, 0, 1, 1]),
    }
    accepted = []
    for name, (factory, _) in sorted(_EVERY_METRIC.items()):
        try:
            module = tmx.RecMetricModule([task], {"m": factory()}, throughput=False)
        except TypeError as error:
            assert any(
                part in str(error)
                for part in (
                    "standalone metric",
                    "not one of the package's",
                    "the module has its own",
                    "windows its metrics itself",
                )
            ), name
            continue
        module.update(step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = module.compute()
        assert values and all(v.ndim == 0 for v in values.values()), (name, values)
        accepted.append(name)
    refused = {"Reliability", "TensorWeightedAverage", "NumMissingLabels", "TowerQPS"}
    # Segmented(CTR): one key per segment, its ids read from the group id column
    assert not refused & set(accepted)
    assert {"HindsightTargetPR", "RankingMetrics", "NDCG", "AUC", "Segmented(CTR)"} <= set(accepted)


@pytest.mark.parametrize(
    ("window_size", "member_rings"),
    [(None, False), (100, False), (100, True)],
    ids=["no-window", "window", "window-member-rings"],
)
@pytest.mark.parametrize(
    ("saved", "loaded"),
    [
        ({"log_loss": "log_loss"}, {"ne": "ne", "log_loss": "log_loss"}),  # NE added in front of its group
        ({"ne": "ne", "log_loss": "log_loss"}, {"log_loss": "log_loss", "ne": "ne"}),  # reordered
        ({"ctr": "ctr"}, {"calibration": "calibration", "ctr": "ctr"}),
        ({"ne": "ne", "log_loss": "log_loss"}, {"log_loss": "log_loss"}),  # the saved first member removed
        ({"calibration": "calibration", "ctr": "ctr", "ne": "ne"}, {"ctr": "ctr", "ne": "ne"}),
    ],
)
def test_a_group_saved_under_another_first_member_resumes(saved, loaded, window_size, member_rings):
    """A compute group's states are saved under its first metric; a checkpoint with another first member
    lost the group's history on resume (strict=False) or was refused as "added since" (strict).

    ``member_rings``: versions before f568a16 also wrote an empty window ring alone
    (``metrics.<member>._extra_state``) for every other member of the group, which made a member moved to
    the front look as if it had saved the group's states itself."""
    import torch.nn as nn
    from sklearn.metrics import log_loss

    b1 = {"prediction": torch.tensor([0.9, 0.2, 0.6, 0.3]), "label": torch.tensor([1, 0, 1, 0])}
    b2 = {"prediction": torch.tensor([0.1, 0.7]), "label": torch.tensor([1, 0])}
    old = tmx.RecMetricModule(["click"], saved, throughput=False, window_size=window_size)
    old.update(b1)
    saved_state = old.state_dict()
    if member_rings:  # as those versions wrote it: an empty ring under each member, nothing else
        for group in old.compute_groups:
            for member in group[1:]:
                saved_state[f"metrics.{member}._extra_state"] = old._unit(member)._ring.state()
    for through_parent in (False, True):  # Lightning loads the LightningModule that holds the module
        new = tmx.RecMetricModule(["click"], loaded, throughput=False, window_size=window_size)
        if through_parent:
            parent, state = nn.ModuleDict({"metrics": new}), {f"metrics.{k}": v for k, v in saved_state.items()}
            result = parent.load_state_dict(state)
        else:
            result = new.load_state_dict(copy.copy(saved_state))
        assert not result.missing_keys and not result.unexpected_keys, result
        new.update(b2)
        values = new.compute()
        y = np.array([1, 0, 1, 0, 1, 0])
        p = np.array([0.9, 0.2, 0.6, 0.3, 0.1, 0.7], dtype=np.float32).astype(np.float64)  # the tensors given
        references = {
            "log_loss": log_loss(y, p),
            "ne": log_loss(y, p) / -(0.5 * np.log(0.5) + 0.5 * np.log(0.5)),
            "ctr": y.mean(),
            "calibration": p.mean() / y.mean(),
        }
        for name in loaded:
            np.testing.assert_allclose(values[f"{name}/click"].item(), references[name], rtol=1e-12)
            if window_size:
                np.testing.assert_allclose(values[f"{name}/click/window"].item(), references[name], rtol=1e-12)


def test_from_config_takes_a_ranking_cutoff_as_an_option():
    """``{"ndcg": {"k": 5}}`` is ``ndcg@5``: the same values as the registry name with the cutoff."""
    tasks = [{"name": "click", "session_id_name": "q"}]
    g = torch.Generator().manual_seed(2)
    step = {
        "prediction": torch.rand(40, generator=g),
        "label": torch.randint(0, 2, (40,), generator=g),
        "q": torch.randint(0, 6, (40,), generator=g),
    }
    values = []
    for metrics in ({"ndcg": {"k": 5}}, {"ndcg": {"metric": "ndcg@5"}}):
        module = tmx.RecMetricModule.from_config({"tasks": tasks, "metrics": metrics, "throughput": False})
        module.update(step)
        values.append(module.compute()["ndcg/click"])
    reference = tmx.NDCG(k=5)
    reference.update(step["prediction"], step["label"], indexes=step["q"])
    for value in values:
        torch.testing.assert_close(value, reference.compute(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        (None, "must return a real scalar"),
        ("0.1", "must return a real scalar"),
        ({"lr": None}, "must return a real scalar"),
        ({"group": {"lr": 0.1}}, "must return a real scalar"),
        ({"a/b": 0.1}, "entry named 'a/b'"),
        ({"": 0.1}, "entry named ''"),
        ({"x|y": 0.1}, "entry named 'x|y'"),
    ],
)
def test_a_state_metric_returning_something_else_is_named(returned, match):
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False, state_metrics={"opt": lambda: returned})
    module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})
    with pytest.raises(ValueError, match=f"State metric 'opt'.*{match}"):
        module.compute()


@pytest.mark.parametrize("window_size", [None, 50])
def test_a_copied_module_owns_its_metric_copies(window_size):
    """A deep copy's metrics were not recorded as owned: one of them could be given to a second live module."""
    tasks = [tmx.RecTaskInfo("click", "y", "p", session_id_name="q")]
    module = tmx.RecMetricModule(
        tasks, {"auc": tmx.AUC(), "ndcg": tmx.NDCG()}, throughput=tmx.Throughput(), window_size=window_size
    )
    copied = copy.deepcopy(module)
    auc = copied.metrics["auc"]
    auc = auc.lifetime if window_size else auc
    for metric in (auc, copied.ranking["ndcg"][0].lifetime if window_size else copied.ranking["ndcg"][0]):
        with pytest.raises(ValueError, match="already belongs to another RecMetricModule"):
            tmx.RecMetricModule(tasks, {"m": metric}, throughput=False)
    with pytest.raises(ValueError, match="already belongs to another RecMetricModule"):
        tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=copied.throughput)


def test_a_module_that_fails_to_build_leaves_its_metrics_free(monkeypatch):
    """A Windowed built before the failure held the caller's metric while the traceback lived (a notebook's)."""
    built = []
    windowed = module_mod._windowed

    def failing_second(metric, window_size, options):
        if built:
            raise RuntimeError("boom")
        built.append(windowed(metric, window_size, options))
        return built[-1]

    ne, ctr = tmx.NormalizedEntropy(), tmx.CTR()
    with monkeypatch.context() as patch:
        patch.setattr(module_mod, "_windowed", failing_second)
        with pytest.raises(RuntimeError, match="boom") as failure:
            tmx.RecMetricModule(["click"], {"ne": ne, "ctr": ctr}, throughput=False, window_size=10)
    assert failure.value is not None and built  # the traceback and the first Windowed are alive
    module = tmx.RecMetricModule(["click"], {"ne": ne, "ctr": ctr}, throughput=False, window_size=10)
    module.update({"prediction": torch.tensor([0.25, 0.75]), "label": torch.tensor([0, 1])})
    assert module.compute()["ctr/click"].item() == 0.5


def test_one_throughput_for_two_modules_is_refused():
    throughput = tmx.Throughput(warmup_steps=1)
    train = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=throughput)  # live: it owns the throughput
    with pytest.raises(ValueError, match="already belongs to another RecMetricModule"):
        tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=throughput)
    for spec in (tmx.Throughput(), tmx.Throughput):
        with pytest.raises(TypeError, match="is a Throughput: the module has its own"):
            tmx.RecMetricModule(["click"], {"t": spec})
    assert train.throughput is throughput


@pytest.mark.parametrize("name", ["recall", "precision", "hit_rate", "f1", "ndcg", "mrr", "map"])
def test_a_ranking_cutoff_as_an_option_for_every_ranking_name(name):
    """``k=`` is the cutoff for required-cutoff names too (recall with k=5 said it needed a cutoff)."""
    from torchmetrics_ext.registry import build_metric

    assert build_metric(name, k=5).k == 5
    with pytest.raises(ValueError, match="positive integer"):
        build_metric(name, k=0)


def test_a_module_of_ranking_metrics_takes_infinite_scores():
    """Ranking metrics accept ±inf scores (masked candidates); a module of them refused them as not finite.
    A module with a metric that needs finite values still refuses them."""
    p = torch.tensor([float("-inf"), 0.5, 2.0, 0.2, float("inf"), 0.1])
    y, s = torch.tensor([1, 0, 1, 0, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2])
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo("a", session_id_name="s")], {"ndcg": "ndcg@3", "mrr": "mrr"}, throughput=False
    )
    module.update({"prediction": p, "label": y, "s": s})
    values = module.compute()
    # by hand (relevant candidates of a tie last): query 0 ranks the relevant one 2nd, query 1 1st, query 2 2nd
    np.testing.assert_allclose(values["mrr/a"].item(), (1 / 2 + 1 + 1 / 2) / 3, rtol=1e-15)
    np.testing.assert_allclose(values["ndcg/a"].item(), (1 / np.log2(3) + 1 + 1 / np.log2(3)) / 3, rtol=1e-15)
    with pytest.raises(ValueError, match="without NaN"):
        module.update({"prediction": torch.tensor([float("nan"), 0.1]), "label": y[:2], "s": s[:2]})
    mixed = tmx.RecMetricModule(
        [tmx.RecTaskInfo("a", session_id_name="s")], {"ndcg": "ndcg@3", "mse": "mse"}, throughput=False
    )
    with pytest.raises(ValueError, match="to be finite"):
        mixed.update({"prediction": p, "label": y, "s": s})


def test_ranking_that_raises_in_its_own_update_is_refused():
    """empty_target_action='error' with queries scored in update raised after the other metrics took the step."""
    factory = lambda num_tasks: tmx.NDCG(k=3, empty_target_action="error", queries_complete_per_batch=True)  # noqa: E731
    with pytest.raises(ValueError, match="rejects a step before any metric changes"):
        tmx.RecMetricModule([tmx.RecTaskInfo("a", session_id_name="s")], {"ctr": "ctr", "ndcg": factory})
    # rows kept until compute: 'error' raises there, which changes no state
    kept = lambda num_tasks: tmx.NDCG(k=3, empty_target_action="error")  # noqa: E731
    tmx.RecMetricModule([tmx.RecTaskInfo("a", session_id_name="s")], {"ctr": "ctr", "ndcg": kept})


@pytest.mark.parametrize(
    "spec",
    [
        functools.partial(tmx.NDCG, k=3, padding_value=-1.0),
        lambda num_tasks: tmx.RankingMetrics(ks=(1,), padding_value=-1.0),
    ],
)
def test_ranking_with_a_padding_value_is_refused_at_construction(spec):
    """The module feeds flat rows, which refuse ``padding_value`` (it was ignored: rows scored -1 ranked as
    candidates); refused in update it would come after the other metrics took the step."""
    with pytest.raises(ValueError, match=r"built with padding_value=-1\.0.*build it without padding_value"):
        tmx.RecMetricModule([tmx.RecTaskInfo("a", session_id_name="s")], {"ctr": "ctr", "ndcg": spec})
    tmx.RecMetricModule(
        [tmx.RecTaskInfo("a", session_id_name="s")], {"ctr": "ctr", "ndcg": functools.partial(tmx.NDCG, k=3)}
    )


@pytest.mark.parametrize("factory", [lambda T: tmx.AUC(T), lambda: tmx.AUC(), lambda num_tasks, k: tmx.AUC(num_tasks)])
def test_a_factory_that_cannot_take_num_tasks_is_refused_naming_the_metric(factory):
    """It was called ``factory(num_tasks=T)`` and failed with Python's bare TypeError from inside the lambda."""
    with pytest.raises(TypeError, match=r"Metric 'auc': the module calls its factory as `<lambda>\(num_tasks=T\)`"):
        tmx.RecMetricModule(["t"], {"ctr": "ctr", "auc": factory}, throughput=False)
    for fine in (lambda num_tasks: tmx.AUC(num_tasks), lambda **kwargs: tmx.AUC(**kwargs), tmx.AUC):
        assert isinstance(tmx.RecMetricModule(["t"], {"auc": fine}, throughput=False).metrics["auc"], tmx.AUC)

    def broken(num_tasks):
        raise TypeError("the factory's own error")

    with pytest.raises(TypeError, match=r"^the factory's own error$"):  # raised inside the factory: not rewritten
        tmx.RecMetricModule(["t"], {"auc": broken}, throughput=False)


_TWO = [tmx.RecTaskInfo(t, label_name=f"{t}_label", prediction_name=f"{t}_pred") for t in "ab"]


def _auc_factory(num_tasks, **kwargs):
    return tmx.AUC(num_tasks=num_tasks, **kwargs)


@pytest.mark.parametrize(
    "factory, label",
    [
        (functools.partial(tmx.AUC, 2), "AUC"),
        (functools.partial(tmx.AUC, 1, num_bins=10), "AUC"),
        (functools.partial(_auc_factory, 2), "_auc_factory"),
    ],
)
def test_a_partial_that_binds_num_tasks_positionally_is_refused_naming_the_metric(factory, label):
    """``functools.partial(tmx.AUC, 2)`` got Python's "multiple values for argument 'num_tasks'" from inside AUC."""
    with pytest.raises(
        TypeError,
        match=rf"Metric 'auc': the module calls its factory as `functools\.partial\({label}, \.\.\.\)\(num_tasks=T\)`, "
        r"but the partial already binds `num_tasks` positionally \((2|1)\); .*leave it out of the partial",
    ):
        tmx.RecMetricModule(_TWO, {"ctr": "ctr", "auc": factory}, throughput=False)
    # partials that leave num_tasks to the module (or give it by keyword: the module's call overrides it)
    for fine in (functools.partial(tmx.AUC, num_bins=10), functools.partial(tmx.AUC, num_tasks=5), _auc_factory):
        auc = tmx.RecMetricModule(_TWO, {"auc": fine}, throughput=False).metrics["auc"]
        assert isinstance(auc, tmx.AUC) and auc.num_tasks == 2  # the module's two tasks


def test_a_metric_key_clashing_with_the_throughputs_is_refused_at_construction():
    """Was found at the first compute(), after a run had started."""
    with pytest.raises(ValueError, match=r"task 'total_examples' would be logged as throughput/total_examples"):
        tmx.RecMetricModule([tmx.RecTaskInfo("total_examples")], {"throughput": "ctr"})
    # no clash: no throughput, TorchRec's keys (the metric's namespace is its class's), other task names
    tmx.RecMetricModule(["total_examples"], {"throughput": "ctr"}, throughput=False)
    tmx.RecMetricModule(["total_examples"], {"throughput": "ctr"}, key_style="torchrec")
    tmx.RecMetricModule(["click"], {"throughput": "ctr"})


def test_public_signatures_hold_no_private_parameters():
    """DESIGN.md gives RecMetricModule's signature; TorchRec's window rules are not constructor arguments."""
    import inspect

    for obj in (tmx.RecMetricModule, tmx.Windowed):
        private = [p for p in inspect.signature(obj).parameters if p.startswith("_")]
        assert private == [], (obj.__name__, private)


def test_the_logits_error_inside_a_module_says_how_to_pass_logits():
    """The standalone advice ("pass from_logits=True") named an argument the module does not have."""
    module = tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=False)
    with pytest.raises(ValueError, match=r"build the module's metrics with from_logits=True") as info:
        module.update({"prediction": torch.tensor([2.0, -1.0, 0.5]), "label": torch.tensor([1, 0, 1])})
    assert "Pass `from_logits=True`" not in str(info.value)


def test_a_step_on_another_device_than_the_module_names_the_move_and_changes_nothing():
    """Columns on one device and the module's metrics on another (a module used outside a LightningModule,
    never moved) reached the kernels: torch's bare "Expected all tensors to be on the same device" (or, on
    the meta device, no error at all) after some metrics had taken the step. The module now refuses the step
    first and names the move. Reference: sklearn on the accepted steps only."""
    rng = np.random.default_rng(4)
    p, y = rng.random(64), (rng.random(64) < 0.3).astype(np.int64)
    module = tmx.RecMetricModule(["click"], ["ne", "auc"], window_size=32, throughput=False)
    module.update({"prediction": torch.tensor(p[:32]), "label": torch.tensor(y[:32])})
    elsewhere = {"prediction": torch.empty(16, device="meta"), "label": torch.empty(16, device="meta")}
    with pytest.raises(ValueError, match=re.escape("the device of the module's metrics, got them on meta")) as info:
        module.update(elsewhere)
    assert "Move the module to the inputs' device first, `module.to('meta')`" in str(info.value)
    assert not module.should_compute() and module._step == 1  # the rejected step was not counted
    module.update({"prediction": torch.tensor(p[32:]), "label": torch.tensor(y[32:])})
    values = module.compute()
    assert np.isclose(float(values["auc/click"]), roc_auc_score(y, p), rtol=1e-12, atol=0)
    assert np.isclose(float(values["auc/click/window"]), roc_auc_score(y[32:], p[32:]), rtol=1e-12, atol=0)
    assert _module_columns._same_device(torch.device("cuda"), torch.device("cuda", 1))
    assert not _module_columns._same_device(torch.device("cuda", 0), torch.device("cuda", 1))
    assert not _module_columns._same_device(torch.device("cpu"), torch.device("cuda", 0))


@pytest.mark.parametrize(
    ("num_tasks", "shape", "hint"),
    [(1, (2, 6), "build the metric with num_tasks=2"), (2, (6, 2), r"pass the transpose, shape \(2, 6\)")],
)
def test_task_shape_errors_say_what_to_do(num_tasks, shape, hint):
    metric = tmx.NormalizedEntropy(num_tasks=num_tasks)
    with pytest.raises(ValueError, match=hint):
        metric.update(torch.full(shape, 0.5), torch.ones(shape))


def test_numpy_bools_are_flags_for_the_module_and_session_metrics():
    assert tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=np.True_).throughput is not None
    assert tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=np.False_).throughput is None
    assert (
        tmx.RecMetricModule.from_config({"tasks": ["click"], "metrics": ["ne"], "throughput": np.False_}).throughput
        is None
    )
    assert type(tmx.SessionPrecisionAtK(k=2, rank_labels=np.True_).rank_labels) is bool
    with pytest.raises(ValueError, match="`throughput` to be a bool"):
        tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=1)


def test_tasks_and_metric_names_as_arrays_build_what_lists_build():
    """A 1-D NumPy array or pandas Index of tasks or registry names is the list it holds; other containers are refused."""
    pd = pytest.importorskip("pandas")
    tasks = np.array([tmx.RecTaskInfo("click", "y1", "p1"), tmx.RecTaskInfo("buy", "y2", "p2")], dtype=object)
    batch = {"p1": torch.tensor([0.2, 0.7, 0.4, 0.9]), "y1": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    batch |= {"p2": torch.tensor([0.6, 0.1, 0.8, 0.3]), "y2": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    listed = tmx.RecMetricModule(list(tasks), ["ne", "auc"], throughput=False)
    for given_tasks, given_metrics in [
        (tasks, np.array(["ne", "auc"])),
        (pd.Series(list(tasks)), pd.Index(["ne", "auc"])),
        (tuple(tasks), ("ne", "auc")),
    ]:
        module = tmx.RecMetricModule(given_tasks, given_metrics, throughput=False)
        assert module.tasks == listed.tasks
        module.update(batch)
        listed.reset()
        listed.update(batch)
        got, want = module.compute(), listed.compute()
        assert list(got) == list(want) and {k: v.item() for k, v in got.items()} == {
            k: v.item() for k, v in want.items()
        }
    assert tmx.RecMetricModule(np.array(["click"]), ["ne"], throughput=False).tasks == (tmx.RecTaskInfo("click"),)
    for bad in ["click", {"click"}, np.array("click"), np.array([["click"]]), np.array([]), tmx.RecTaskInfo("click")]:
        with pytest.raises(ValueError, match="`tasks` to be a non-empty list"):
            tmx.RecMetricModule(bad, ["ne"], throughput=False)
    collection = torchmetrics.MetricCollection({"auc": tmx.AUC(num_bins=10)})  # iterating one gives its keys: not names
    for bad in [collection, {"ne"}, np.array([]), "ne"]:
        with pytest.raises(ValueError, match="`metrics` to be a non-empty dict"):
            tmx.RecMetricModule(["click"], bad, throughput=False)


def test_undefined_warnings_name_the_tasks() -> None:
    """Inside the module, undefined-value warnings name the metric's key and the tasks, not their positions."""
    tasks = [
        tmx.RecTaskInfo("click", "y1", "p1", session_id_name="s"),
        tmx.RecTaskInfo("buy", "y2", "p2", session_id_name="s"),
    ]
    module = tmx.RecMetricModule(
        tasks, {"ne": "ne", "calibration": "calibration", "ndcg@3": "ndcg@3"}, window_size=16, throughput=False
    )
    module.update(
        {"p1": torch.rand(8), "y1": torch.ones(8), "p2": torch.rand(8), "y2": torch.zeros(8), "s": torch.arange(8) // 4}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    messages = {str(w.message) for w in caught if issubclass(w.category, tmx.UndefinedMetricWarning)}
    assert messages == {
        f"{metric}{part} is undefined for task(s) {tasks}: {reason}; returning nan."
        for metric, tasks, reason in [
            ("ne", ["click", "buy"], "the labels seen hold a single class (or no weight)"),
            ("calibration", ["buy"], "no positive label weight"),
            (
                "ndcg@3",
                ["buy"],
                "no query counted (no query with a relevant candidate, or all query weights are zero)",
            ),
        ]
        for part in ("", " (window)")  # the window's value is undefined too, and its warning says so
    }
    assert math.isnan(values["ndcg@3/buy"]) and values["ndcg@3/click"] == 1.0
    # the same metric outside a module still names its class and positions
    ne = tmx.NormalizedEntropy(num_tasks=2)
    ne.update(torch.rand(2, 8), torch.stack([torch.ones(8), torch.zeros(8)]))
    with pytest.warns(tmx.UndefinedMetricWarning, match=r"^NormalizedEntropy is undefined for task\(s\) \[0, 1\]"):
        ne.compute()


def _undefined_messages(compute) -> list[str]:
    """The undefined-value warnings ``compute()`` shows under Python's default filter, in order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        compute()
    return [str(w.message) for w in caught if issubclass(w.category, tmx.UndefinedMetricWarning)]


_SINGLE_CLASS = "the labels seen hold a single class (or no weight); returning nan."


def test_two_keys_of_one_class_warn_apart_under_their_keys() -> None:
    """Two metrics of one class (an exact and a binned AUC) warned word for word alike ("AUC is undefined..."),
    so Python's default filter showed one and neither said which key is ``nan``: each names its key, prefix
    included, the window part and the task as before. The same class alone still names itself."""

    def make() -> tmx.RecMetricModule:
        module = tmx.RecMetricModule(
            ["click"],
            {"auc_exact": tmx.AUC(), "auc_binned": tmx.AUC(num_bins=64), "ne": "ne"},
            window_size=4,
            throughput=False,
            prefix="val/",
        )
        module.update({"prediction": torch.tensor([0.2, 0.7, 0.4]), "label": torch.ones(3)})
        return module

    expected = [
        f"val/{key}{part} is undefined for task(s) ['click']: {_SINGLE_CLASS}"
        for key in ("auc_exact", "auc_binned", "ne")
        for part in ("", " (window)")
    ]
    assert _undefined_messages(make().local_compute) == expected
    module = make()
    assert _undefined_messages(module.compute) == expected
    values = module.compute()
    assert {k for k, v in values.items() if math.isnan(v)} == {
        f"val/{key}/click{window}" for key in ("auc_exact", "auc_binned", "ne") for window in ("", "/window")
    }
    alone = tmx.AUC(num_bins=64)
    alone.update(torch.tensor([0.2, 0.7]), torch.ones(2))
    assert _undefined_messages(alone.compute) == [f"AUC is undefined: {_SINGLE_CLASS}"]


def test_a_dict_valued_metric_warns_under_its_key_with_its_entries() -> None:
    """A RankingMetrics under a key names the key and keeps the entries it names (``rank (ndcg@2, mrr@2)``)."""
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo("click", session_id_name="q")],
        {"rank": tmx.RankingMetrics(ks=[2], metrics=["ndcg", "mrr"])},
        throughput=False,
    )
    module.update(
        {"prediction": torch.tensor([0.2, 0.7]), "label": torch.zeros(2), "q": torch.zeros(2, dtype=torch.long)}
    )
    assert _undefined_messages(module.compute) == [
        "rank (ndcg@2, mrr@2) is undefined for task(s) ['click']: no query counted (no query with a relevant "
        "candidate, or all query weights are zero); returning nan."
    ]


def test_an_entry_of_a_dict_valued_metric_warns_under_its_output_key() -> None:
    """HindsightTargetPR's precision/recall warnings under key ``hind`` name ``hind.precision``, as the values' keys."""
    module = tmx.RecMetricModule(
        ["click"], {"hind": tmx.HindsightTargetPR(target_precision=0.5, num_thresholds=5)}, throughput=False
    )
    module.update({"prediction": torch.tensor([0.2, 0.7]), "label": torch.zeros(2)})  # no positive label
    messages = _undefined_messages(module.compute)
    assert [m.split(" is undefined")[0] for m in messages] == ["hind.precision", "hind.recall"], messages
    assert {"hind.precision/click", "hind.recall/click"} <= set(module.compute())
    standalone = tmx.HindsightTargetPR(target_precision=0.5, num_thresholds=5)
    standalone.update(torch.tensor([0.2, 0.7]), torch.zeros(2))
    named = [m.split(" is undefined")[0] for m in _undefined_messages(standalone.compute)]
    assert named == ["HindsightTargetPR.precision", "HindsightTargetPR.recall"]


def _ddp_named_warnings(rank: int, world_size: int) -> dict:
    module = tmx.RecMetricModule(
        ["click"], {"auc_exact": tmx.AUC(), "auc_binned": tmx.AUC(num_bins=64)}, window_size=4, throughput=False
    )
    if rank == 0:  # rank 1 has no rows: the synced values are rank 0's
        module.update({"prediction": torch.tensor([0.2, 0.7, 0.4, 0.9]), "label": torch.tensor([0.0, 1, 1, 1])})
        module.update({"prediction": torch.tensor([0.3, 0.8]), "label": torch.ones(2)})
    else:
        module.update({"prediction": torch.zeros(0), "label": torch.zeros(0)})
    return {"synced": _undefined_messages(module.compute), "values": module.compute()}


@pytest.mark.ddp
def test_ddp_compute_warns_under_the_keys_on_every_rank(ddp_pool) -> None:
    """Under DDP the synced compute is unchanged (rank 0's rows give the values on both ranks) and each rank's
    warnings name the keys: the window (4 positives, one class) is undefined for both AUCs, the lifetime is not."""
    labels, preds = [0, 1, 1, 1, 1, 1], [0.2, 0.7, 0.4, 0.9, 0.3, 0.8]
    for result in ddp_pool.run(_ddp_named_warnings):
        assert result["synced"] == [
            f"{key} (window) is undefined for task(s) ['click']: {_SINGLE_CLASS}" for key in ("auc_exact", "auc_binned")
        ]
        assert result["values"]["auc_exact/click"].item() == pytest.approx(roc_auc_score(labels, preds), abs=1e-12)
        assert math.isnan(result["values"]["auc_exact/click/window"])


def test_undefined_warnings_skip_tasks_not_reported() -> None:
    """A TorchRec config reporting a metric for some tasks warns only for those tasks."""
    cfg = {
        "rec_tasks": [
            {"name": "click", "label_name": "yc", "prediction_name": "pc", "weight_name": "w"},
            {"name": "buy", "label_name": "yb", "prediction_name": "pb", "weight_name": "w"},
        ],
        "rec_metrics": {"precision": {"rec_task_indices": [0], "window_size": 100}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(cfg)
    # precision at 0.5: click has a positive prediction, buy none (undefined, but not reported)
    step = {"pc": torch.tensor([0.9, 0.2]), "yc": torch.tensor([1.0, 0.0]), "pb": torch.tensor([0.1, 0.2])}
    module.update(step | {"yb": torch.tensor([1.0, 0.0]), "w": torch.ones(2)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    assert [k for k in values if "precision" in k] == [
        "precision-click|lifetime_precision",
        "precision-click|window_precision",
    ]
    assert not [w for w in caught if issubclass(w.category, tmx.UndefinedMetricWarning)]
    module.reset()
    module.update(
        {"pc": torch.tensor([0.1, 0.2]), "yc": torch.tensor([1.0, 0.0]), "pb": torch.tensor([0.9, 0.2])}
        | {"yb": torch.tensor([1.0, 0.0]), "w": torch.ones(2)}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.compute()
    assert sorted(str(w.message).split(":")[0] for w in caught) == [
        "precision (window) is undefined for task(s) ['click']",
        "precision is undefined for task(s) ['click']",
    ]


def test_a_lifetime_only_name_computes_and_warns_for_its_lifetime_only() -> None:
    """TorchRec's binned auprc reports its lifetime only: its window is neither computed nor warned for."""
    cfg = {
        "rec_tasks": [{"name": "click", "label_name": "cl", "prediction_name": "cp"}],
        "rec_metrics": {"auprc": {"rec_task_indices": [0], "window_size": 4}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(cfg)
    module.update({"cp": torch.tensor([0.2, 0.7, 0.4, 0.5]), "cl": torch.tensor([0.0, 1, 1, 0])})
    module.update({"cp": torch.tensor([0.2, 0.7, 0.4, 0.5]), "cl": torch.zeros(4)})  # the window: one class
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    undefined = [str(w.message) for w in caught if issubclass(w.category, tmx.UndefinedMetricWarning)]
    assert undefined == [
        "auprc (window) is undefined for task(s) ['click']: no positive label weight; returning nan."
    ]  # the exact window's, once
    assert math.isnan(values["auprc-click|window_auprc"])
    assert values["auprc-click|lifetime_auprc"] == pytest.approx(
        average_precision_score([0, 1, 1, 0, 0, 0, 0, 0], [0.2, 0.7, 0.4, 0.5] * 2), abs=2e-3
    )  # TorchRec's lifetime: 1000 probability bins


def test_a_partial_of_throughput_is_refused_as_the_class() -> None:
    with pytest.raises(TypeError, match="is a Throughput: the module has its own"):
        tmx.RecMetricModule(["click"], {"t": functools.partial(tmx.Throughput, warmup_steps=0)}, throughput=False)


def test_compute_leaves_the_process_warning_filters_alone() -> None:
    """A warning shown once (Python's default filter) is not shown again by later computes: the module
    silences TorchMetrics' "compute before update" of its group members without a warnings filter
    (a filter change makes Python forget every warning it has shown)."""
    module = tmx.RecMetricModule(["click"], {"ne": "ne", "ll": "log_loss"}, window_size=10, throughput=False)
    module.update({"prediction": torch.tensor([0.3, 0.6]), "label": torch.tensor([0.0, 0.0])})  # NE undefined

    def step() -> None:
        warnings.warn("the user's own warning", stacklevel=1)
        module.compute()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(5):
            step()
    assert sorted(str(w.message) for w in caught) == [
        "ne (window) is undefined for task(s) ['click']: the labels seen hold a single class "
        "(or no weight); returning nan.",
        "ne is undefined for task(s) ['click']: the labels seen hold a single class (or no weight); returning nan.",
        "the user's own warning",
    ]
    # no "compute before update" warning from a module that never updated (nor from group members)
    fresh = tmx.RecMetricModule(["click"], {"ne": "ne", "ll": "log_loss"}, throughput=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.compute()
    assert not [w for w in caught if "before the ``update``" in str(w.message)]
    assert fresh.metrics["ll"]._update_count == 0  # put back after the compute


def test_state_metric_tensors_are_snapshots():
    """A tensor a state metric returns is copied and detached: a scheduler's later in-place write
    to a tensor learning rate does not change a dict already returned, and no graph is logged."""
    lr = torch.tensor(0.5)
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    module = build({"ne": "ne"}, state_metrics={"lr": lambda: lr, "norm": lambda: weight.norm()})
    values = run(module, [make_data(1)])
    lr.mul_(0.5)  # StepLR on a tensor learning rate
    assert values["lr"].item() == 0.5
    assert not values["norm"].requires_grad and values["norm"].item() == 5.0


# ---------------------------------------------------------------- the shared ring of the additive windows

ADDITIVE = {"ne": "ne", "calibration": "calibration", "ctr": "ctr", "mse": "mse", "accuracy": "accuracy"}


def _one_window_per_unit(module: tmx.RecMetricModule) -> tmx.RecMetricModule:
    """``module`` with each windowed unit pushing into its own ring (as outside a module)."""
    module._joint_window = lambda n: None  # type: ignore[method-assign]
    return module


def _same_bits(left: tmx.RecMetricModule, right: tmx.RecMetricModule) -> None:
    a, b = run(left, []), run(right, [])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)
    sa, sb = left.state_dict(), right.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, sb[key], rtol=0, atol=0, equal_nan=True, msg=key)


@pytest.mark.parametrize("seed", range(4))
def test_the_shared_ring_gives_the_bits_of_one_ring_per_metric(seed, tmp_path):
    """Batches of every size (empty, one sample, past the window share: cut), the buffer grown many
    times, a save/load, deepcopy and pickle mid-window, a reset, a unit loaded alone: the module's
    values and checkpoint equal, bit for bit, those of each metric keeping its own window (whose
    window values the tests above check against the metric over the kept samples)."""
    import pickle

    rng = np.random.default_rng(seed)
    specs = {**ADDITIVE, "auc_binned": METRICS["auc_binned"]}
    joint = build(specs, window_size=257)
    alone = _one_window_per_unit(build(specs, window_size=257))
    used = 0
    for step in range(90):
        n = int(rng.choice([0, 1, 3, 17, 64, 256, 257, 300, 700]))
        part = make_data(1000 * seed + step, n=n)
        used += joint._joint_window(n) is not None
        joint.update(part)
        alone.update(part)
        if step == 30:
            torch.save(joint.state_dict(), tmp_path / "mid.pt")
            joint = build(specs, window_size=257)
            joint.load_state_dict(torch.load(tmp_path / "mid.pt", weights_only=False))
        elif step == 45:
            joint = copy.deepcopy(joint)
        elif step == 55:
            joint = pickle.loads(pickle.dumps(joint))
        elif step == 60:
            joint.reset()
            alone.reset()
        elif step == 70:  # one unit's window replaced on its own: the others go on, the layout is made again
            unit = joint._unit("calibration")
            unit.load_state_dict(copy.deepcopy(unit.state_dict()))
        if step % 10 == 9:
            _same_bits(joint, alone)
    _same_bits(joint, alone)
    assert used > 40  # the steps within the window share went through the shared ring


def test_the_shared_ring_is_used_only_by_additive_units_with_one_window_rule():
    module = build({**ADDITIVE, "auc": "auc", "gauc": "gauc", "ndcg@3": "ndcg@3"}, window_size=100)
    joint = module._joint_window(10)
    assert joint is not None
    assert {type(unit.lifetime).__name__ for unit in joint.units} == {
        "NormalizedEntropy",
        "Calibration",
        "WeightedMSE",
        "WeightedAccuracy",
    }  # CTR shares Calibration's states (one compute group); exact AUC, GAUC and ranking keep samples
    assert module._joint_window(101) is None  # a step past the window share is cut by each unit
    assert build(ADDITIVE)._joint_window(10) is None  # no window
    assert build({"ne": "ne", "auc": "auc"}, window_size=100)._joint_window(10) is None  # one additive unit


@pytest.mark.parametrize("order", [("mse", "ne"), ("ne", "mse")])
def test_the_shared_ring_keeps_each_metrics_statistics_whatever_order_the_step_feeds_them(order):
    """MSE of probabilities (fed ``sigmoid(logits)``, after the metrics of logits) listed before NE of logits:
    both share the ring, and each window and lifetime holds its own statistics (they were written into each
    other's columns, in the order the step called the metrics, when that order was not the layout's)."""
    specs = {"mse": "mse", "ne": {"from_logits": True}}
    module = build({name: specs[name] for name in order}, window_size=10_000)
    steps = []
    for seed in range(4):
        step = make_data(seed, n=50)
        step["click_pred"] = torch.logit(step["click_pred"].clamp(0.01, 0.99))
        step["buy_pred"] = torch.logit(step["buy_pred"].clamp(0.01, 0.99))
        steps.append(step)
    assert module._joint_window(50) is not None and len(module._joint_window(50).units) == 2
    values = run(module, steps)
    for task in ("click", "buy"):
        z = np.concatenate([s[f"{task}_pred"].double().numpy() for s in steps])
        y = np.concatenate([s[f"{task}_label"].double().numpy() for s in steps])
        w = np.concatenate([s[f"{task}_w"].numpy() for s in steps])
        p = 1 / (1 + np.exp(-z))
        mse = mean_squared_error(y, p, sample_weight=w)
        ne = log_loss(y, p, sample_weight=w) / log_loss(y, np.full_like(p, np.average(y, weights=w)), sample_weight=w)
        for suffix in ("", "/window"):  # the window holds every step
            assert values[f"mse/{task}{suffix}"].item() == pytest.approx(mse, rel=1e-9)
            assert values[f"ne/{task}{suffix}"].item() == pytest.approx(ne, rel=1e-9)


def test_the_step_costs_the_same_operations_for_two_or_four_additive_windows():
    """The windows' bookkeeping is one push for all of them: adding windowed metrics to the module
    adds no more operations than adding the same metrics without a window (their statistics)."""

    def ops_per_step(specs: dict, window_size: int | None) -> int:
        module = build(specs, window_size=window_size)
        part = make_data(5, n=64)
        for _ in range(12):
            module.update(part)
        with H.AtenOps() as counted:
            module.update(part)
        return counted.count

    two = {"ne": "ne", "mse": "mse"}
    four = {**two, "calibration": "calibration", "accuracy": "accuracy"}
    added_windowed = ops_per_step(four, 1000) - ops_per_step(two, 1000)
    added_plain = ops_per_step(four, None) - ops_per_step(two, None)
    assert 0 < added_windowed <= added_plain


class _RebindingSum(TaskMetric):
    """A metric written as docs/contributing.md shows, whose ``update`` rebinds its state (``s = s + ...``)
    and which keeps a 0-dim sum next to its per-task ones."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False
    input_domains = InputDomains(preds="probability", target="unit")

    def __init__(self, num_tasks: int = 1, **kwargs) -> None:
        super().__init__(num_tasks, **kwargs)
        self._add_task_state("w_sum")
        self.add_state("samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds, target, weights=None) -> None:
        w = torch.ones_like(preds, dtype=torch.float64) if weights is None else weights.to(torch.float64)
        self.w_sum = self.w_sum + w.expand_as(preds).reshape(self.num_tasks, -1).sum(-1)  # rebinds
        self.samples += preds.shape[-1]

    def compute(self) -> torch.Tensor:
        return self._squeeze_tasks(self.w_sum / self.samples)


def test_the_shared_ring_takes_metrics_that_rebind_their_states_and_scalar_states():
    steps = [make_data(s, n=6) for s in range(12)]
    module = build({"ne": "ne", "wsum": _RebindingSum}, window_size=50)
    assert len(module._joint_window(1).units) == 2
    values = run(module, steps)
    kept = steps[-8:]  # 8 steps of 6 samples: the newest whole updates within 50
    for task in ("click", "buy"):
        lifetime = sum(float(p[f"{task}_w"].sum()) for p in steps) / (6 * len(steps))
        window = sum(float(p[f"{task}_w"].sum()) for p in kept) / (6 * len(kept))
        assert values[f"wsum/{task}"].item() == pytest.approx(lifetime, rel=1e-12)
        assert values[f"wsum/{task}/window"].item() == pytest.approx(window, rel=1e-12)


def _steps_with_a_lone_update(steps, modules, extra):
    """Each step into both ``modules``, with ``extra`` into their ``mse`` alone after the sixth; for each step,
    whether the first module's additive windows took it through their shared buffer."""
    shared = []
    for i, part in enumerate(steps):
        shared.append(modules[0]._joint_window(7) is not None)
        for module in modules:
            module.update(part)
        if i == 5:
            for module in modules:
                module.metrics["mse"].update(
                    torch.stack([extra["click_pred"], extra["buy_pred"]]).double(),
                    torch.stack([extra["click_label"], extra["buy_label"]]).double(),
                )
    return shared


def test_a_unit_updated_outside_the_step_leaves_the_others_windows_right():
    """One unit of the module updated on its own (its own window moves): the other metrics' windows
    still hold the module's steps only, and the module goes on as one ring per metric would."""
    specs = {"ne": "ne", "calibration": "calibration", "mse": "mse"}
    joint, alone = build(specs, window_size=100), _one_window_per_unit(build(specs, window_size=100))
    steps = [make_data(s, n=7) for s in range(40)]
    _steps_with_a_lone_update(steps, (joint, alone), make_data(99, n=7))
    _same_bits(joint, alone)
    kept = steps[-14:]  # 14 steps of 7 samples: the newest whole updates within 100
    expected = run(build({"ne": "ne"}), [_window_data(kept, 10**6)])
    values = run(joint, [])
    for task in ("click", "buy"):
        torch.testing.assert_close(values[f"ne/{task}/window"], expected[f"ne/{task}"], rtol=1e-12, atol=0)


def test_a_unit_updated_outside_the_step_shares_the_buffer_again_once_that_update_left_its_window():
    """A unit updated on its own leaves the shared buffer; once that update has left its window (the
    windows hold the same steps again, whatever each ring's two-stack split) the step goes through the
    shared buffer again (it stayed one ring per unit for good: a few times slower per step), with the
    values of one ring per metric, bit for bit, and of the metric over the kept samples."""
    specs = {"ne": "ne", "calibration": "calibration", "mse": "mse"}
    joint, alone = build(specs, window_size=100), _one_window_per_unit(build(specs, window_size=100))
    steps = [make_data(s, n=7) for s in range(60)]
    shared = _steps_with_a_lone_update(steps, (joint, alone), make_data(99, n=3))
    # 14 steps of 7 samples in a window of 100: the lone update has left it by step 21
    assert all(shared[25:])
    _same_bits(joint, alone)
    kept = steps[-14:]
    expected = run(build(specs), [_window_data(kept, 10**6)])
    values = run(joint, [])
    for name in specs:
        for task in ("click", "buy"):
            torch.testing.assert_close(values[f"{name}/{task}/window"], expected[f"{name}/{task}"], rtol=1e-12, atol=0)


def test_the_shared_buffer_is_freed_by_reset_and_when_the_units_left_it():
    """The shared buffer is not kept next to the rings' own: ``reset()`` empties every window, and a
    layout that no longer holds (a unit updated alone) is given up; the values stay those of a fresh module."""
    specs = {"ne": "ne", "calibration": "calibration", "mse": "mse"}
    module = build(specs, window_size=1000)
    for s in range(40):
        module.update(make_data(s, n=5))
    joint = module._joint_window(5)
    assert joint is not None and joint.buffer is not None
    module.reset()
    assert joint.buffer is None and joint.back is None and joint.staging is None
    fresh = build(specs, window_size=1000)
    steps = [make_data(100 + s, n=5) for s in range(12)]
    _same_bits(module, fresh)
    for part in steps:
        module.update(part)
        fresh.update(part)
    assert module._joint_window(5) is joint and joint.intact()
    _same_bits(module, fresh)
    extra = make_data(99, n=3)
    module.metrics["mse"].update(
        torch.stack([extra["click_pred"], extra["buy_pred"]]).double(),
        torch.stack([extra["click_label"], extra["buy_label"]]).double(),
    )
    module.update(steps[0])
    assert not joint.intact() and joint.buffer is None  # the units update their own rings; no stale copy kept


@pytest.mark.parametrize(
    ("specs", "synced"),
    [
        ({"ne": "ne", "mse": "mse"}, "mse"),
        ({"mse": "mse", "auc": "auc", "ctr": "ctr"}, "mse"),
        # units the module steps itself (`Windowed._step`, no `update` and its own check): exact and grouped AUC
        ({"mse": "mse", "auc": "auc", "gauc": "gauc"}, "auc"),
        ({"mse": "mse", "auc": "auc", "gauc": "gauc"}, "gauc"),
    ],
)
def test_a_step_while_a_windowed_metric_is_synced_by_hand_is_refused_whole(specs, synced):
    """``Windowed.update`` refuses a batch between ``sync()`` and ``unsync()``. In the module the shared
    ring took it (the gathered lifetime, dropped by ``unsync()``, and the window, kept: MSE's window then
    held 4 updates and its lifetime 3), or the unit refused it after the others had taken it."""
    from torchmetrics.utilities.exceptions import TorchMetricsUserError

    steps = [make_data(s, n=5) for s in range(4)]
    module, reference = build(specs, window_size=100), build(specs, window_size=100)
    run(module, steps[:3])
    unit = module.metrics[synced]
    unit.sync(dist_sync_fn=lambda tensor, group=None: [tensor, tensor], distributed_available=lambda: True)
    with pytest.raises(TorchMetricsUserError, match="synced"):
        module.update(steps[3])
    unit.unsync()
    _same_bits(module, run_module(reference, steps[:3]))
    values = run(module, steps[3:])  # and the module goes on
    whole = run(build(specs), [_window_data(steps, 10**6)])
    for key, value in whole.items():
        torch.testing.assert_close(values[key], value, rtol=1e-12, atol=0, equal_nan=True, msg=key)
        torch.testing.assert_close(values[f"{key}/window"], value, rtol=1e-12, atol=0, equal_nan=True, msg=key)


@pytest.mark.filterwarnings("ignore:throughput is undefined:torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize("synced", ["ne", "auc", "mse", "ndcg@3", "throughput"])
def test_a_step_while_a_plain_metric_or_the_throughput_is_synced_by_hand_is_refused_whole(synced):
    """The refusal above, without a window. A unit synced by hand took the step into its gathered states,
    which ``unsync()`` dropped, after the units before it had taken it (NE updated, MSE not: a step half
    applied), an exact one (AUC, a ranking copy) failed with ``AttributeError: 'Tensor' object has no attribute
    'append'`` after the others had taken the step, and the throughput refused it after every metric had."""
    from torchmetrics.utilities.exceptions import TorchMetricsUserError

    specs = {"ne": "ne", "auc": "auc", "mse": "mse", "ndcg@3": "ndcg@3"}
    steps = [make_data(s, n=12) for s in range(3)]
    module = tmx.RecMetricModule(TASKS, specs)
    module.update(steps[0])
    module.update(steps[1])
    before = {k: v for k, v in module.local_compute().items() if not k.startswith("throughput")}
    units = {"throughput": module.throughput, "ndcg@3": module.ranking["ndcg@3"][1]}  # the ranking copy of "buy"
    unit = units[synced] if synced in units else module.metrics[synced]
    unit.sync(dist_sync_fn=lambda tensor, group=None: [tensor, tensor], distributed_available=lambda: True)
    with pytest.raises(TorchMetricsUserError, match=r"synced .*no metric took the step"):
        module.update(steps[2])
    unit.unsync()
    after = module.local_compute()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    assert after["throughput/total_examples"].item() == 24
    module.update(steps[2])  # and the module goes on, each step once
    values = module.compute()
    whole = {k: torch.cat([s[k] for s in steps]).numpy() for k in steps[0]}
    p, y, w = whole["click_pred"].astype(np.float64), whole["click_label"], whole["click_w"]
    assert values["ne/click"].item() == pytest.approx(ref_ne(p, y, w), rel=1e-9)
    # the exact AUC keeps float32 weights (docs/auc.md)
    assert values["auc/click"].item() == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-6)
    assert values["mse/click"].item() == pytest.approx(np.average((p - y) ** 2, weights=w), rel=1e-9)
    assert values["throughput/total_examples"].item() == 36


def run_module(module: tmx.RecMetricModule, parts) -> tmx.RecMetricModule:
    for part in parts:
        module.update(part)
    return module


def test_moving_the_module_where_it_is_keeps_the_shared_layout_and_copies_stay_compact():
    import pickle

    module = build(ADDITIVE, window_size=10**6)
    for s in range(300):
        module.update(make_data(s, n=4))
    joint = module._joint_window(4)
    module.to("cpu")  # `metrics.to(preds.device)` at every step: nothing moves, nothing is laid out again
    module.to(torch.float64)
    assert joint.intact()
    per_unit = _one_window_per_unit(build(ADDITIVE, window_size=10**6))
    for s in range(300):
        per_unit.update(make_data(s, n=4))
    del per_unit._joint_window  # picklable again (its rings are its own: a plain module's pickle)
    # each ring pickles its own slots, not the whole shared buffer once per state
    assert len(pickle.dumps(module)) <= 1.1 * len(pickle.dumps(per_unit))
    copied = copy.deepcopy(module.metrics["mse"])
    assert all(ring.untyped_storage().nbytes() == ring.numel() * 8 for ring in copied._ring.rings.values())
    _same_bits(pickle.loads(pickle.dumps(module)), per_unit)


# ----------------------------------------------------------------------------- cached compute


def _counted_computes(monkeypatch, classes) -> dict[str, int]:
    """Count the calls of each class's own ``compute`` (TorchMetrics' cache sits outside it)."""
    calls = dict.fromkeys((cls.__name__ for cls in classes), 0)
    for cls in classes:

        def counted(self, *args, _original=cls.compute, _name=cls.__name__, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "compute", counted)
    return calls


_EXPENSIVE = (tmx.AUC, tmx.AUPRC, tmx.GroupedAUC, tmx.NDCG)


def _cached_module(**kwargs) -> tmx.RecMetricModule:
    # AUPRC is a member of AUC's compute group (it reads AUC's samples at compute)
    metrics = {"auc": "auc", "auprc": tmx.AUPRC, "gauc": "gauc", "ndcg@3": "ndcg@3", "ne": "ne", "log_loss": "log_loss"}
    return tmx.RecMetricModule(TASKS, metrics, throughput=False, **kwargs)


def _references(data: dict[str, torch.Tensor]) -> dict[str, float]:
    """scikit-learn and brute-force references of every key of :func:`_cached_module` over ``data``."""
    from tests.test_ranking import ref_mean

    out = {}
    for task in TASKS:
        p, y, w = (data[f"{task.name}_{s}"].double().numpy() for s in ("pred", "label", "w"))
        out[f"auc/{task.name}"] = roc_auc_score(y, p, sample_weight=w)
        out[f"auprc/{task.name}"] = average_precision_score(y, p, sample_weight=w)
        out[f"gauc/{task.name}"] = ref_grouped(p, y, data["user"].numpy(), w)
        out[f"ne/{task.name}"] = ref_ne(p, y, w)
        out[f"log_loss/{task.name}"] = log_loss(y, p, sample_weight=w)
        queries = {"preds": p, "target": y, "indexes": data["query"].numpy(), "weights": w}
        out[f"ndcg@3/{task.name}"] = ref_mean(queries, [("ndcg", 3)])[0]
    return out


def _assert_references(values: dict[str, torch.Tensor], data: dict[str, torch.Tensor]) -> None:
    """The values are the references; a window (wider than ``data``) holds all of it too."""
    expected = _references(data)
    if any(key.endswith("/window") for key in values):
        expected |= {f"{key}/window": value for key, value in expected.items()}
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-7, err_msg=key)


@pytest.mark.parametrize("window_size", [None, 10_000])
def test_a_second_compute_without_a_change_reuses_the_values(monkeypatch, window_size):
    """``compute()`` twice without an update recomputed exact AUC, AUPRC, grouped AUC and NDCG every time.

    The module entered each metric's ``synced_from`` (which drops TorchMetrics' cached value) also
    where nothing is communicated, and refilled each compute group member from its leader. A value
    computed after a new update is that of all the data (scikit-learn and brute-force references).
    """
    calls = _counted_computes(monkeypatch, _EXPENSIVE)
    module = _cached_module(window_size=window_size)
    data = make_data(0)
    first_half, second_half = batches(data, [0, 300, 600])
    module.update(first_half)
    first = run(module, [])
    counted = dict(calls)
    assert all(counted[cls.__name__] > 0 for cls in _EXPENSIVE)
    again = run(module, [])
    assert calls == counted  # nothing recomputed
    assert sorted(again) == sorted(first) and all(torch.equal(again[k], first[k]) for k in first)
    _assert_references(first, first_half)
    assert module.local_compute().keys() == first.keys() and calls == counted  # one process: the same values
    module.update(second_half)
    after = run(module, [])
    assert all(calls[name] > counted[name] for name in counted)  # every one recomputed
    _assert_references(after, data)


@pytest.mark.parametrize("window_size", [None, 4])
def test_changing_a_returned_value_in_place_leaves_the_next_compute_alone(window_size):
    """``out[key] *= 100`` on ``compute()``'s dict changed the value every later ``compute()`` returned.

    The keys were views of the metrics' cached values (a stacked metric's ``(T,)`` value, a ranking
    copy's scalar), so scaling logged values in place (to percent, say) also scaled the next
    compute's, until an update. Independent references: NumPy's NE, scikit-learn's AUC, NDCG by hand.
    """
    tasks = [tmx.RecTaskInfo(name, f"{name}_y", f"{name}_p", session_id_name="q") for name in ("click", "buy")]
    module = tmx.RecMetricModule(
        tasks, {"ne": "ne", "auc": "auc", "ndcg": "ndcg"}, window_size=window_size, throughput=False
    )
    step = {
        "click_p": torch.tensor([0.9, 0.2, 0.6, 0.4]),
        "click_y": torch.tensor([1, 0, 0, 1]),
        "buy_p": torch.tensor([0.3, 0.8, 0.1, 0.5]),
        "buy_y": torch.tensor([0, 1, 0, 0]),
        "q": torch.tensor([0, 0, 1, 1]),
    }
    module.update(step)
    first = module.compute()
    for key in first:
        first[key] *= 100  # e.g. percentages for a dashboard
    again = module.compute()
    for task in ("click", "buy"):
        p, y = step[f"{task}_p"].double().numpy(), step[f"{task}_y"].double().numpy()
        expected = {"ne": ref_ne(p, y, np.ones_like(p)), "auc": roc_auc_score(y, p)}
        # NDCG of the queries with a relevant row: click q0 (relevant first) 1, q1 (relevant at rank 2)
        # 1/log2(3); buy q0 (relevant first) 1, q1 has none (skipped)
        expected["ndcg"] = (1 + 1 / math.log2(3)) / 2 if task == "click" else 1.0
        for name, value in expected.items():
            keys = [f"{name}/{task}"] + ([f"{name}/{task}/window"] if window_size else [])
            for key in keys:
                np.testing.assert_allclose(again[key].item(), value, rtol=1e-12, err_msg=key)
                np.testing.assert_allclose(first[key].item(), 100 * value, rtol=1e-12, err_msg=key)


def test_the_reused_values_follow_reset_load_merge_and_a_metric_updated_alone(monkeypatch):
    """Each change of the states is seen by the next ``compute``: reset, ``load_state_dict`` (of another
    run's checkpoint), a ``merge_state`` into a group leader, and a leader updated directly."""
    _counted_computes(monkeypatch, _EXPENSIVE)
    data, other = make_data(0), make_data(1)
    module = _cached_module()
    run(module, [data])
    module.reset()
    run(module, [])  # nothing: every value undefined, and cached
    module.update(other)
    _assert_references(run(module, []), other)
    saved = _cached_module()
    run(saved, [data])
    module.load_state_dict(saved.state_dict())
    _assert_references(run(module, []), data)
    # states merged into the leader of a compute group (AUC; AUPRC reads its samples)
    extra = tmx.AUC(num_tasks=2)
    tail = {k: v[:200] for k, v in other.items()}
    extra.update(
        torch.stack([tail["click_pred"], tail["buy_pred"]]),
        torch.stack([tail["click_label"], tail["buy_label"]]),
        weights=torch.stack([tail["click_w"], tail["buy_w"]]),
    )
    module.metrics["auc"].merge_state(extra)
    values = run(module, [])
    joined = {k: torch.cat([data[k], tail[k]]) for k in data}
    for task in TASKS:
        y, p, w = (joined[f"{task.name}_{s}"].double().numpy() for s in ("label", "pred", "w"))
        np.testing.assert_allclose(values[f"auc/{task.name}"].item(), roc_auc_score(y, p, sample_weight=w), rtol=1e-7)
        np.testing.assert_allclose(
            values[f"auprc/{task.name}"].item(), average_precision_score(y, p, sample_weight=w), rtol=1e-7
        )
    module.set_extra_state({"step": 7, "tasks": [t.name for t in TASKS]})
    assert torch.equal(run(module, [])["auc/click"], values["auc/click"]) and module._step == 7


@pytest.mark.parametrize("window_size", [150, 1000])
def test_reused_values_follow_a_window_that_moves(window_size):
    """Computing twice after every step gives, at the end, what a module computed only then gives (its first
    compute, nothing cached): the window's evictions and the lifetime's new samples are seen."""
    data = make_data(2)
    parts = batches(data, [0, 100, 250, 330, 600])
    stepped, fresh = _cached_module(window_size=window_size), _cached_module(window_size=window_size)
    for part in parts:
        stepped.update(part)
        fresh.update(part)
        run(stepped, [])
        run(stepped, [])
    values, expected = run(stepped, []), run(fresh, [])
    assert sorted(values) == sorted(expected)
    for key in expected:
        torch.testing.assert_close(values[key], expected[key], rtol=0, atol=0, equal_nan=True, msg=key)
    lifetime = {k: v for k, v in values.items() if not k.endswith("/window")}
    _assert_references(lifetime, data)


def _ddp_computed_twice(rank: int, world_size: int) -> list[dict[str, torch.Tensor]]:
    data = make_data(21)
    module = _cached_module()
    module.update(batches(data, [0, 200, 400])[rank])  # rank 0 rows 0-200, rank 1 rows 200-400
    out = [run(module, []), run(module, [])]
    if rank == 0:  # one rank alone updates, then computes locally: every rank still joins the same gathers
        module.update(batches(data, [400, 600])[0])
        module.local_compute()
    out.append(run(module, []))
    return out


@pytest.mark.ddp
def test_ddp_computes_twice_and_after_one_rank_updated_alone(ddp_pool):
    """Under DDP every compute() gathers (a rank cannot know whether another updated): the values are of
    every rank's rows each time, those one rank added alone included, and no rank waits for another."""
    data = make_data(21)
    first, last = {k: v[:400] for k, v in data.items()}, data
    for values in ddp_pool.run(_ddp_computed_twice, timeout=120):
        _assert_references(values[0], first)
        assert all(torch.equal(values[1][k], values[0][k]) for k in values[0])
        _assert_references(values[2], last)


@pytest.mark.parametrize(
    ("extra_state", "described"),
    [
        (7, "got an object of type int"),
        ({"tasks": ["click", "buy"]}, "a dict without 'step'"),
        ({"step": -1, "tasks": ["click", "buy"]}, "'step': -1"),
        ({"step": 2.5, "tasks": ["click", "buy"]}, "'step': 2.5"),
        ({"step": 3, "tasks": "click"}, "'tasks': 'click'"),
    ],
)
def test_an_unreadable_extra_state_is_refused_naming_it_and_loads_nothing(extra_state, described):
    """A hand-edited or foreign `_extra_state` raised a bare `KeyError: 'step'` (or a TypeError) from
    set_extra_state; it is now an error naming what the module saves, and nothing loads."""
    infos = [tmx.RecTaskInfo(name, f"{name}_l", f"{name}_p", session_id_name="q") for name in ("click", "buy")]

    def make() -> tmx.RecMetricModule:
        return tmx.RecMetricModule(infos, {"auc": "auc", "ne": "ne"}, throughput=False)

    first, second = _three_task_steps()
    saved = make()
    saved.update(first)
    state = copy.deepcopy(saved.state_dict())
    state["_extra_state"] = extra_state
    other = make()
    other.update(second)
    before, values = copy.deepcopy(other.state_dict()), other.compute()
    for strict in (True, False):
        with pytest.raises(
            RuntimeError, match=rf"unreadable _extra_state for RecMetricModule: .*{re.escape(described)}"
        ):
            other.load_state_dict(copy.deepcopy(state), strict=strict)
    after = other.state_dict()
    assert after.keys() == before.keys() and all(_same_value(after[k], before[k]) for k in before)
    assert all(torch.equal(v, values[k]) for k, v in other.compute().items())
    with pytest.raises(ValueError, match=r"set_extra_state: expected what get_extra_state saves"):
        other.set_extra_state(extra_state)
    assert other.get_extra_state()["step"] == 1
    # what get_extra_state saves, and a step held as a 0-dim integer tensor, restore the step
    other.set_extra_state({"step": torch.tensor(5), "tasks": ["click", "buy"]})
    assert other.get_extra_state() == {"step": 5, "tasks": ["click", "buy"], "rank": 0, "world_size": 1}


def _windowed_module(eta: float = 1e-3, num_bins: int = 100, tasks: list = TASKS) -> tmx.RecMetricModule:
    """Windowed units (NE, CTR and MSE share one ring buffer), a binned AUC, ranking copies per task, a throughput."""
    metrics = {
        "ne": "ne",
        "ctr": "ctr",
        "mse": "mse",
        "auc": "auc",
        "ne_eta": lambda num_tasks: tmx.NormalizedEntropy(num_tasks=num_tasks, eta=eta),
        "auc_binned": lambda num_tasks: tmx.AUC(num_tasks=num_tasks, num_bins=num_bins),
        "ndcg@3": "ndcg@3",
    }
    return tmx.RecMetricModule(tasks, metrics, window_size=150, throughput=True)


def _equal_values(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Equal keys and bit-equal values (a nan equals a nan: the throughput before its warm-up ends)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) or (a[k].isnan() & b[k].isnan()).all() for k in a)


def _without_clock(values: dict) -> dict:
    """The keys that do not read the clock: all but the throughput's times and rates (its example count stays)."""
    return {k: v for k, v in values.items() if not k.startswith("throughput") or k.endswith("total_examples")}


class _Parent(torch.nn.Module):
    """A model holding a ``RecMetricModule`` as ``self.metrics`` (a LightningModule's layout), and a layer of its own."""

    def __init__(self, metrics: tmx.RecMetricModule) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 1)
        self.metrics = metrics


def _as_parents(parent: _Parent, checkpoint: dict) -> dict:
    """``checkpoint`` (the module's) as the parent's state_dict would hold it: its keys and metadata under ``metrics``."""
    whole = parent.state_dict()
    metadata = whole._metadata  # type: ignore[attr-defined]
    for key in [k for k in whole if k.startswith("metrics.")]:
        del whole[key]
    whole.update((f"metrics.{k}", v) for k, v in checkpoint.items())
    for key, value in getattr(checkpoint, "_metadata", {}).items():
        metadata["metrics" + (f".{key}" if key else "")] = value
    return whole


def _assert_refused_load_changes_nothing(
    checkpoint: dict, strict: bool, error: type, match: str | None, through_parent: bool = False
) -> None:
    """A module with its own history refuses ``checkpoint``: its states, values, step and next steps are as before.

    ``through_parent``: the checkpoint is loaded by a model holding the module (Lightning's restore), where
    nn.Module loads each child in turn and raises at the end.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # the throughput, still warming up
        parts = batches(make_data(31, n=500), [0, 100, 200, 300, 400, 500])
        module, reference = _windowed_module(), _windowed_module()
        for each in (module, reference):
            for part in parts[:2]:
                each.update(part)
        before, values = copy.deepcopy(module.state_dict()), module.compute()
        with pytest.raises(error, match=match):
            if through_parent:
                parent = _Parent(module)
                parent.load_state_dict(_as_parents(parent, checkpoint), strict=strict)
            else:
                module.load_state_dict(checkpoint, strict=strict)
        after = module.state_dict()
        assert after.keys() == before.keys()
        assert [k for k in before if not _same_value(after[k], before[k])] == []
        assert _equal_values(module.compute(), values)
        assert module.get_extra_state()["step"] == 2
        for part in parts[2:]:
            module.update(part)
            reference.update(part)
        assert module._joint_window(100) is not None  # the steps after it still go through the shared ring
        assert _equal_values(_without_clock(module.compute()), _without_clock(reference.compute()))
        assert _same_value(_without_clock(module.state_dict()), _without_clock(reference.state_dict()))


def _saved_state(**settings) -> dict:
    """The state_dict of a module (its settings changed by ``settings``) after one step of other data."""
    saved = _windowed_module(**settings)
    saved.update(make_data(7, n=80))
    return copy.deepcopy(saved.state_dict())


REFUSED_KINDS = [
    "eta",
    "num_bins",
    "metric_class",
    "num_tasks",
    "missing_key",
    "unexpected_key",
    "window_ring",
    "throughput_extra_state",
]


def _refused(kind: str) -> tuple[dict, bool, type, str]:
    """A checkpoint one of the module's last units refuses: ``(checkpoint, strict, error, match)``."""
    state = _saved_state()
    if kind == "eta":
        return _saved_state(eta=1e-2), False, RuntimeError, r"metrics\.ne_eta\._extra_state: .*other settings .*`eta`"
    if kind == "num_bins":
        match = r"metrics\.auc_binned\._extra_state: size mismatch for the window's histogram: .*\(2, 2, 50\)"
        return _saved_state(num_bins=50), False, RuntimeError, match
    if kind == "metric_class":
        state._metadata["metrics.auc_binned.lifetime"]["torchmetrics_ext_metric"] = "AUPRC"
        match = r"metric mismatch for (metrics\.)?metrics\.auc_binned\.lifetime: the checkpoint holds the states of an AUPRC"
        return state, False, RuntimeError, match
    if kind == "num_tasks":  # a one-task module's, saved by a version that recorded no task names
        state = _saved_state(tasks=TASKS[:1])
        state["_extra_state"] = {"step": state["_extra_state"]["step"]}
        match = r"setting mismatch for (metrics\.)?metrics\.ne\.num_tasks: the checkpoint was saved with num_tasks=1"
        return state, False, RuntimeError, match
    if kind == "missing_key":  # the copy of the last task starts afresh before strict refuses the checkpoint
        del state["ranking.ndcg@3.1.lifetime.weight_sum"]
        return state, True, RuntimeError, r"Missing key\(s\) in state_dict: .*ranking\.ndcg@3\.1\.lifetime\.weight_sum"
    if kind == "unexpected_key":  # a state the ranking copy does not hold
        state["ranking.ndcg@3.1.lifetime.bogus_sum"] = torch.zeros(1)
        return (
            state,
            True,
            RuntimeError,
            r"Unexpected key\(s\) in state_dict: .*ranking\.ndcg@3\.1\.lifetime\.bogus_sum",
        )
    if kind == "window_ring":
        state["ranking.ndcg@3.1._extra_state"] = {"sizes": []}
        return state, False, RuntimeError, r"ranking\.ndcg@3\.1\._extra_state: Window state must be a dict holding"
    assert kind == "throughput_extra_state"  # refused by the throughput, after every metric has loaded
    state["throughput._extra_state"] = {"steps": None, "recent": []}
    match = r"unreadable _extra_state for (metrics\.)?throughput: expected what Throughput\.get_extra_state saves, .*'steps': None"
    return state, False, RuntimeError, match


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_a_refused_load_leaves_every_metric_window_and_the_throughput_as_they_were(kind):
    """Units load one after another: a checkpoint refused by one of the last left the others loaded (the
    shared ring's windows, the lifetime sums, the step counter: another run's values), or a strict load's
    missing keys left a metric started afresh. A refused load now changes nothing, and the next steps give
    what a module that never saw the checkpoint gives."""
    _assert_refused_load_changes_nothing(*_refused(kind))


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_a_refused_load_through_a_parent_module_leaves_every_metric_as_it_was(kind):
    """A model holding the module (Lightning's checkpoint restore) loads it child by child and raises only at
    the end: a checkpoint refused by one of the last units (or, strict, one missing or unexpected key) left the
    metrics before it loaded with the checkpoint's values and the rest with their own. Now the module is left
    as it was, strict or not, and its next steps give what a module that never saw the checkpoint gives."""
    _assert_refused_load_changes_nothing(*_refused(kind), through_parent=True)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # the throughput, still warming up
def test_a_strict_false_load_through_a_parent_still_starts_a_metric_without_states_afresh():
    """strict=False through a parent: a missing state is no error, so the module is not put back: the other
    metrics resume the checkpoint (the saved module's values) and the one without its states starts afresh."""
    saved = _windowed_module()
    saved.update(make_data(7, n=80))
    state = copy.deepcopy(saved.state_dict())
    expected = saved.compute()
    del state["ranking.ndcg@3.1.lifetime.weight_sum"]
    module = _windowed_module()
    module.update(make_data(31, n=100))
    parent = _Parent(module)
    with pytest.warns(UserWarning, match=r"ranking\.ndcg@3\.1"):
        result = parent.load_state_dict(_as_parents(parent, state), strict=False)
    assert "metrics.ranking.ndcg@3.1.lifetime.weight_sum" in result.missing_keys
    values = _without_clock(module.compute())
    fresh = {k for k in values if k.startswith("ndcg@3/buy")}
    assert fresh and all(values[k].isnan() for k in fresh)  # no query seen since the load
    assert _equal_values(
        {k: v for k, v in values.items() if k not in fresh},
        {k: v for k, v in _without_clock(expected).items() if k not in fresh},
    )


def test_a_refused_load_through_a_parent_runs_the_modules_other_load_hooks_and_raises_its_error():
    """The module is put back from its load post-hook, while torch iterates over the module's post-hooks: with
    another hook registered after it, putting back the hook table ended the load with "OrderedDict mutated during
    iteration" instead of the checkpoint's error. The hook table is left alone: the next hook runs, the error
    names the missing key."""
    state = _saved_state()
    del state["ranking.ndcg@3.1.lifetime.weight_sum"]
    module = _windowed_module()
    module.update(make_data(31, n=100))
    before = copy.deepcopy(module.state_dict())
    calls = []
    module.register_load_state_dict_post_hook(lambda _, keys: calls.append(sorted(keys.missing_keys)))
    parent = _Parent(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the note on the metric that would start afresh
        with pytest.raises(
            RuntimeError, match=r"Missing key\(s\) in state_dict: .*metrics\.ranking\.ndcg@3\.1\.lifetime"
        ):
            parent.load_state_dict(_as_parents(parent, state))
    assert len(calls) == 1 and "metrics.ranking.ndcg@3.1.lifetime.weight_sum" in calls[0]
    after = module.state_dict()
    assert [k for k in before if not _same_value(after[k], before[k])] == []


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_load_refused_for_any_one_key_changes_nothing(data):
    """Whichever one entry of the checkpoint is dropped (strict) or replaced by a value of another shape, the
    refused load leaves the module as it was, loaded by itself or by a model holding it."""
    state = _saved_state()
    through_parent = data.draw(st.booleans(), label="through_parent")
    if data.draw(st.booleans(), label="drop"):
        # not NE's `neg_labels`: a checkpoint without it is an older format, loaded with it derived (total - pos)
        key = data.draw(st.sampled_from(sorted(k for k in state if not k.endswith(".neg_labels"))), label="key")
        del state[key]
        _assert_refused_load_changes_nothing(state, True, RuntimeError, re.escape(key), through_parent)
    else:  # a tensor state of another shape, or an _extra_state that is not the unit's
        key = data.draw(st.sampled_from(sorted(k for k, v in state.items() if not isinstance(v, list))), label="key")
        state[key] = {"bogus": 1} if key.endswith("_extra_state") else torch.zeros(3, 7)
        _assert_refused_load_changes_nothing(state, False, Exception, None, through_parent)


@pytest.mark.parametrize(
    "key",
    [
        "ranking.ndcg@3.0.lifetime.weights",
        "ranking.ndcg@3.0.window.weights",
        "ranking.ndcg@3.1.lifetime.preds",
        "ranking.ndcg@3.1.window.target",
        "ranking.ndcg@3.0.window.indexes",
    ],
)
def test_a_ranking_row_state_of_another_length_is_refused_and_changes_nothing(key):
    """A ranking unit's row state replaced by an unrelated tensor (21 rows where the others hold 80) loaded
    silently and compute() failed later ("`weights` are kept for 21 of 80 rows"); the module refuses the
    checkpoint naming the key, and its states, values and next steps are as before."""
    state = _saved_state()
    state[key] = [torch.zeros(21, dtype=torch.int64 if key.endswith(("indexes", "target")) else torch.float32)]
    name = key.rsplit(".", 1)[1]
    counts = ", ".join(f"{n}={21 if n == name else 80}" for n in ("preds", "target", "indexes", "weights"))
    for strict in (True, False):
        for through_parent in (False, True):  # a model holding the module has it under `metrics.`
            match = re.escape(
                f"state mismatch for {'metrics.' if through_parent else ''}{key}: the checkpoint holds 21 rows, "
                f"expected 80 as in its other row states ({counts}): this NDCG (num_tasks=1, "
                "queries_complete_per_batch=False) keeps one value per row in `preds`, `target`, `indexes` and "
                "`weights` (`weights` may be empty: every row weighs 1)."
            )
            _assert_refused_load_changes_nothing(copy.deepcopy(state), strict, RuntimeError, match, through_parent)


def test_the_shared_ring_adds_each_step_into_lifetime_states_replaced_since():
    """The shared ring adds a step into every lifetime state at once (views of one row): states replaced since
    (a reset, a state set by hand) are laid out again and count on from their new values. The lifetime CTR and
    MSE equal the weighted formulas over the batches added since the reset (the hand-set state held its value)."""
    module = build({"ctr": "ctr", "mse": "mse", "ne": "ne"}, window_size=10_000)
    parts = [make_data(900 + i, n=50) for i in range(6)]
    for part in parts[:2]:
        module.update(part)
    module.reset()
    for part in parts[2:4]:
        module.update(part)
    life = module._unit("ctr")._child("lifetime")
    for name in life._state_keys:  # the same values in new tensors (no longer the row's views)
        setattr(life, name, getattr(life, name).clone())
    for part in parts[4:]:
        module.update(part)
    assert module._joint_window(50) is not None  # the steps went through the shared ring
    values = module.compute()
    kept = {k: np.concatenate([p[k].numpy() for p in parts[2:]]) for k in parts[0]}
    for task in ("click", "buy"):
        p, y, w = (kept[f"{task}_{c}"].astype(np.float64) for c in ("pred", "label", "w"))
        ctr = values[f"ctr/{task}"].item()
        mse = values[f"mse/{task}"].item()
        assert ctr == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)
        assert mse == pytest.approx(np.sum(w * (p - y) ** 2) / np.sum(w), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_a_state_of_another_dtype_is_refused_naming_it_and_the_module_keeps_its_states(dtype):
    """The hunter's case: a bool `weighted_label_sum` loaded, and the next update failed with "result
    type Double can't be cast to the desired output type Bool". The load is refused, naming the key and
    both dtypes, nothing of the checkpoint loads, and the module updates on as if it never was tried."""
    tasks = [
        tmx.RecTaskInfo("a", label_name="a_label", prediction_name="a_pred"),
        tmx.RecTaskInfo("b", label_name="b_label", prediction_name="b_pred"),
    ]
    g = torch.Generator().manual_seed(0)

    def step():
        p = torch.rand(2, 30, generator=g)
        y = (torch.rand(2, 30, generator=g) < p).double()
        return {"a_pred": p[0], "b_pred": p[1], "a_label": y[0], "b_label": y[1]}

    def build_module():
        return tmx.RecMetricModule(tasks, {"ctr": "ctr", "ne": "ne"}, window_size=100)

    saved, module = build_module(), build_module()
    steps = [step() for _ in range(4)]
    for batch in steps[:2]:
        saved.update(batch)
    module.update(steps[2])
    checkpoint = saved.state_dict()
    key = "metrics.ctr.lifetime.weighted_label_sum"
    checkpoint[key] = checkpoint[key].to(dtype)
    before = copy.deepcopy(module.state_dict())
    match = rf"dtype mismatch for {re.escape(key)}: the checkpoint holds {dtype}, this CTR .* keeps it as torch.float64"
    with pytest.raises(RuntimeError, match=match):
        module.load_state_dict(checkpoint)
    assert _same_value(dict(module.state_dict()), dict(before))
    module.update(steps[3])
    labels = torch.stack([torch.stack([s["a_label"], s["b_label"]]) for s in steps[2:]], 1).reshape(2, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # throughput: no timed step
        values = module.compute()
    for i, task in enumerate("ab"):  # the mean label of the module's own two steps, not the checkpoint's
        assert values[f"ctr/{task}"].item() == pytest.approx(labels[i].mean().item(), rel=1e-12)


# ----------------------------------------------------------------------------- clone, weight names, window notes


def test_clone_copies_every_state_under_its_own_prefix():
    """``clone(prefix=...)`` (MetricCollection's idiom for train/val copies): the copy carries the states seen,
    then each module follows its own batches: NE against numpy's, AUC against sklearn's, keys under each prefix."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.95, 60)
    y = (rng.uniform(size=60) < p).astype(float)
    train = tmx.RecMetricModule(["c"], {"ne": "ne", "auc": "auc"}, throughput=False, prefix="train/")
    train.update({"prediction": torch.tensor(p[:30]), "label": torch.tensor(y[:30])})
    val = train.clone(prefix="val/")
    val.update({"prediction": torch.tensor(p[30:]), "label": torch.tensor(y[30:])})
    same = train.clone()
    ones = np.ones(30)
    got_train, got_val, got_same = train.compute(), val.compute(), same.compute()
    assert sorted(got_train) == ["train/auc/c", "train/ne/c"] and sorted(got_val) == ["val/auc/c", "val/ne/c"]
    assert got_train["train/ne/c"].item() == pytest.approx(_ne_reference(p[:30], y[:30], ones), rel=1e-12)
    assert got_train["train/auc/c"].item() == pytest.approx(roc_auc_score(y[:30], p[:30]), rel=1e-12)
    assert got_val["val/ne/c"].item() == pytest.approx(_ne_reference(p, y, np.ones(60)), rel=1e-12)
    assert got_val["val/auc/c"].item() == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert {k: v.item() for k, v in got_same.items()} == {k: v.item() for k, v in got_train.items()}
    assert same.prefix == "train/"
    with pytest.raises(ValueError, match=r"Expected `prefix` to be a string or None, got 3"):
        train.clone(prefix=3)


def test_a_copy_of_the_module_reads_the_same_state_metrics():
    """A state metric reads an object outside the module: ``clone`` and ``copy.deepcopy(module)`` (the callback's
    copy per extra dataloader) read that same object, not a copy frozen when the module was copied: an optimizer's
    learning rate changed after the copy, a running ``MeanMetric`` updated after it (mean of 3 and 5 is 4). A copy
    of an object holding the module copies what the state metrics read along with it, as any attribute."""
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    class Rates:
        def __init__(self, opt: torch.optim.Optimizer) -> None:
            self.opt = opt

        def get_metrics(self) -> dict[str, float]:
            return {"lr": self.opt.param_groups[0]["lr"]}

    loss = torchmetrics.MeanMetric()
    state = {"opt": Rates(optimizer).get_metrics, "loss": loss, "loss_value": loss.compute}
    train = tmx.RecMetricModule(["c"], {"ctr": "ctr"}, throughput=False, prefix="train/", state_metrics=state)
    copies = {"val/": train.clone(prefix="val/"), "train/": copy.deepcopy(train)}
    optimizer.param_groups[0]["lr"] = 0.5
    loss.update(torch.tensor([3.0, 5.0]))
    for prefix, module in [("train/", train), *copies.items()]:
        module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})
        values = {key: value.item() for key, value in module.compute().items()}
        assert values == {
            f"{prefix}ctr/c": 1.0,
            f"{prefix}opt/lr": 0.5,
            f"{prefix}loss": 4.0,
            f"{prefix}loss_value": 4.0,
        }
        assert module.state_metrics["loss"] is loss
    holder = torch.nn.Module()
    holder.loss, holder.metrics = torchmetrics.MeanMetric(), None
    holder.metrics = tmx.RecMetricModule(["c"], {"ctr": "ctr"}, throughput=False, state_metrics={"loss": holder.loss})
    twin = copy.deepcopy(holder)
    assert twin.metrics.state_metrics["loss"] is twin.loss and twin.loss is not holder.loss


def test_a_module_with_a_metrics_compute_as_state_metric_pickles():
    """``state_metrics={"loss": loss.compute}`` (documented next to the metric itself) made the module unpicklable
    (TorchMetrics' wrapped ``compute`` is a closure): ``ddp_spawn`` and ``torch.save(model)`` pickle it. The copy
    reads its own copy of the metric, the one its ``"loss"`` entry holds: the mean of 3 and 5, then of 3, 5 and 10."""
    import pickle

    loss = torchmetrics.MeanMetric()
    loss.update(torch.tensor([3.0, 5.0]))
    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr"}, throughput=False, state_metrics={"loss": loss, "v": loss.compute}
    )
    module.update({"prediction": torch.tensor([0.5]), "label": torch.tensor([1])})
    for copied in (pickle.loads(pickle.dumps(module)), copy.deepcopy(torch.nn.ModuleList([module]))[0]):
        own = copied.state_metrics["loss"]
        assert own is not loss
        assert {key: value.item() for key, value in copied.compute().items()} == {"ctr/c": 1.0, "loss": 4.0, "v": 4.0}
        own.update(torch.tensor([10.0]))
        assert {key: value.item() for key, value in copied.compute().items()} == {"ctr/c": 1.0, "loss": 6.0, "v": 6.0}
    assert module.state_metrics["v"] == loss.compute and loss.compute().item() == 4.0


def test_a_weight_name_missing_from_the_first_step_is_warned_for_once():
    """A task's own ``weight_name`` absent from ``model_out`` means weight 1, said once at the first step (a typo
    would otherwise leave the task unweighted silently); the default ``"weight"`` absent says nothing (but for a
    key like it, ``"click_weight"``: test_module_weight_lookalikes.py)."""
    task = tmx.RecTaskInfo("c", "y", "p", weight_name="click_w")
    step = {"p": torch.tensor([0.2, 0.7, 0.4]), "y": torch.tensor([0.0, 1.0, 1.0]), "click_weight": torch.ones(3)}
    module = tmx.RecMetricModule([task], {"ctr": "ctr"}, throughput=False)
    with pytest.warns(
        UserWarning,
        match=r"Task 'c': `model_out` has no weight column 'click_w' \(did you mean "
        r"'click_weight'\?\).* Its samples weigh 1",
    ):
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.update(step)  # once only
        plain = tmx.RecMetricModule([tmx.RecTaskInfo("c", "y", "p")], {"ctr": "ctr"}, throughput=False)
        # "weight" (the default) absent: no word, unless a key like it is there (test_module_weight_lookalikes.py)
        plain.update({"p": step["p"], "y": step["y"]})
        named = tmx.RecMetricModule([task], {"ctr": "ctr"}, throughput=False)
        named.update({**step, "click_w": torch.tensor([1.0, 0.0, 3.0])})
    assert module.compute()["ctr/c"].item() == pytest.approx(2 / 3)
    assert named.compute()["ctr/c"].item() == pytest.approx((0 * 1 + 1 * 0 + 1 * 3) / 4)


def test_a_weight_name_missing_is_warned_for_after_an_empty_first_step():
    """A first step without columns (a ``training_step`` that returned None: ``RecMetricCallback`` counts it as an
    empty step) does not use up the check: the first step with columns is still read for the weight names."""
    task = tmx.RecTaskInfo("c", "y", "p", weight_name="click_w")
    step = {"p": torch.tensor([0.2, 0.7, 0.4]), "y": torch.tensor([0.0, 1.0, 1.0])}
    module = tmx.RecMetricModule([task], {"ctr": "ctr"}, throughput=False)
    module._empty_step()
    with pytest.warns(UserWarning, match=r"Task 'c': `model_out` has no weight column 'click_w'.* Its samples weigh 1"):
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.update(step)  # once only
    assert module.compute()["ctr/c"].item() == pytest.approx(2 / 3)


def test_the_weight_name_warning_is_said_once_per_module_object_across_checkpoints():
    """Whether it was said is a plain attribute of the object, outside ``state_dict``: loading a checkpoint (its own
    or another module's), ``reset``, ``pickle`` and ``deepcopy`` keep it, so the same object never says it twice; a
    fresh module (a new process resuming) has not said it yet and says it once at its first step."""
    task = tmx.RecTaskInfo("c", "y", "p", weight_name="click_w")
    step = {"p": torch.tensor([0.2, 0.7, 0.4]), "y": torch.tensor([0.0, 1.0, 1.0])}
    module = tmx.RecMetricModule([task], {"ctr": "ctr", "ne": "ne"}, window_size=4, throughput=False)
    with pytest.warns(UserWarning, match=r"no weight column 'click_w'"):
        module.update(step)
    checkpoint = module.state_dict()
    other = tmx.RecMetricModule([task], {"ctr": "ctr", "ne": "ne"}, window_size=4, throughput=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.load_state_dict(checkpoint)
        module.update(step)
        module.load_state_dict(other.state_dict())  # another module's (empty) checkpoint
        module.update(step)
        module.reset()
        module.update(step)
        for copied in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
            copied.load_state_dict(checkpoint)
            copied.update(step)
    other.load_state_dict(checkpoint)
    with pytest.warns(UserWarning, match=r"no weight column 'click_w'"):
        other.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.update(step)
    assert other.compute()["ctr/c"].item() == pytest.approx(2 / 3)  # weight 1: (0 + 1 + 1) / 3 on every step


# one weighted task; "ne" and "log_loss" share their states (a compute group), "auc" keeps every sample
_RESUME_TASK = [tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w")]
_PRE, _POST = [0, 8, 16, 24], [24, 30, 36]  # steps before the checkpoint, and after the resume


def _resume_module(window_size, names=("ne", "log_loss", "auc")):
    return tmx.RecMetricModule(_RESUME_TASK, {n: n for n in names}, window_size=window_size, throughput=False)


def _resume_refs(data, lo, hi) -> dict[str, float]:
    """numpy/sklearn values of the three metrics over samples ``lo:hi``."""
    p, y, w = (data[k][lo:hi].double().numpy() for k in ("click_pred", "click_label", "click_w"))
    return {
        "ne": ref_ne(p, y, w),
        "log_loss": log_loss(y, p, sample_weight=w, labels=[0, 1]),
        "auc": roc_auc_score(y, p, sample_weight=w),
    }


def _load_through(saved, loading, through_parent: bool):
    """``loading.load_state_dict(saved.state_dict())`` (strict), or so through parent modules; also returns
    whether the checkpoint's metadata was left as it was given."""
    if through_parent:
        saved, loading = torch.nn.ModuleDict({"rec": saved}), torch.nn.ModuleDict({"rec": loading})
    state = saved.state_dict()
    metadata = copy.deepcopy(dict(state._metadata))
    result = loading.load_state_dict(state)
    return result, dict(state._metadata) == metadata


@pytest.mark.parametrize("through_parent", [False, True])
@pytest.mark.parametrize("saved_names", [("ne", "log_loss", "auc"), ("log_loss", "auc", "ne")])
@pytest.mark.parametrize(("saved_window", "window"), [(6, None), (None, 12)])
def test_a_checkpoint_resumes_its_lifetime_across_a_window_added_or_dropped(
    saved_window, window, saved_names, through_parent
):
    """A module trained with ``window_size`` resumed without one (or the reverse) could not carry the lifetime over:
    strict refused, strict=False started every metric afresh (``nan``). Now the lifetime resumes (strict, no key
    missing or unexpected, also through a parent module and with the compute group saved under its other member),
    and a window added at resume holds the steps after it."""
    data = make_data(21, n=_POST[-1])
    saved = _resume_module(saved_window, saved_names)
    for step in batches(data, _PRE):
        saved.update(step)
    module = _resume_module(window)
    result, metadata_kept = _load_through(saved, module, through_parent)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert metadata_kept  # the caller's checkpoint is not edited
    for step in batches(data, _POST):
        module.update(step)
    values = module.compute()
    lifetime, recent = _resume_refs(data, 0, _POST[-1]), _resume_refs(data, _PRE[-1], _POST[-1])
    for name in ("ne", "log_loss", "auc"):
        assert values[f"{name}/click"].item() == pytest.approx(lifetime[name], rel=1e-6), name
        if window is None:
            assert f"{name}/click/window" not in values
        else:  # the window started empty: the steps after the resume (12 samples, the window)
            assert values[f"{name}/click/window"].item() == pytest.approx(recent[name], rel=1e-6), name


@pytest.mark.parametrize("through_parent", [False, True])
@pytest.mark.parametrize(("saved_window", "window"), [(20, 6), (6, 20)])
def test_a_group_saved_under_another_member_resumes_across_a_window_resize(saved_window, window, through_parent):
    """A compute group saved under a metric removed since (log_loss, replaced by NE: the same statistics) and
    loaded with another ``window_size``: its states were moved to NE without the checkpoint's record of the old
    window, so the resize went unseen and the old ring was kept (a window of 6 held 24 samples after the load).
    The lifetime resumes and the window starts empty, as for a group saved under the same name."""
    data = make_data(23, n=_POST[-1])
    saved = _resume_module(saved_window, ("log_loss", "auc"))
    for step in batches(data, _PRE):
        saved.update(step)
    module = _resume_module(window, ("ne", "auc"))
    result, metadata_kept = _load_through(saved, module, through_parent)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert metadata_kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty windows are undefined
        empty = module.compute()
    assert math.isnan(empty["ne/click/window"].item()) and math.isnan(empty["auc/click/window"].item())
    for step in batches(data, _POST[:2]):  # 6 samples: the window
        module.update(step)
    values = module.compute()
    lifetime, recent = _resume_refs(data, 0, _POST[1]), _resume_refs(data, _PRE[-1], _POST[1])
    for name in ("ne", "auc"):
        assert values[f"{name}/click"].item() == pytest.approx(lifetime[name], rel=1e-6), name
        assert values[f"{name}/click/window"].item() == pytest.approx(recent[name], rel=1e-6), name


@pytest.mark.parametrize("updated_before", [False, True])
@pytest.mark.parametrize(("saved_window", "window"), [(None, 12), (6, 12), (12, None)])
def test_a_resume_across_a_window_change_gives_no_leader_reset_warning(saved_window, window, updated_before):
    """A load across a window change empties each unit's window (``unit.reset()``, then the loaded lifetime merged
    back): the module's own resets, over the whole group. The leader's was taken for one of it alone, and the first
    ``compute`` after such a resume warned that ``ne`` had been reset on its own and cleared ``log_loss``'s states.
    No warning; the values are the lifetime over every step and the window over the steps after the resume."""
    data = make_data(24, n=_POST[-1])
    saved, module = _resume_module(saved_window), _resume_module(window)
    assert ["ne", "log_loss"] in module.compute_groups
    for step in batches(data, _PRE):
        saved.update(step)
    if updated_before:  # a module that ran before the resume (its steps are replaced by the checkpoint's)
        for step in batches(make_data(25, n=_PRE[-1]), _PRE):
            module.update(step)
        module.compute()
    module.load_state_dict(saved.state_dict())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in batches(data, _POST):
            module.update(step)
        values = module.compute()
    assert not [str(r.message) for r in record if "reset on its own" in str(r.message)]
    lifetime, recent = _resume_refs(data, 0, _POST[-1]), _resume_refs(data, _PRE[-1], _POST[-1])
    for name in ("ne", "log_loss", "auc"):
        assert values[f"{name}/click"].item() == pytest.approx(lifetime[name], rel=1e-6), name
        if window is not None:
            assert values[f"{name}/click/window"].item() == pytest.approx(recent[name], rel=1e-6), name


@pytest.mark.parametrize("refusal", ["unexpected key", "a metric's load raises"])
@pytest.mark.parametrize("through_parent", [False, True])
@pytest.mark.parametrize(("saved_window", "window"), [(None, 12), (6, None), (6, 12)])
def test_a_load_refused_across_a_window_change_changes_nothing(saved_window, window, through_parent, refusal):
    """The window emptied for a resume across a window change is put back with the rest when the load is refused
    (an unexpected key, strict) or raises in the last metric, and the checkpoint's metadata is left as it was given."""
    data = make_data(22, n=_POST[-1])
    saved, module = _resume_module(saved_window), _resume_module(window)
    for step in batches(data, _PRE):
        saved.update(step)
    for step in batches(data, _POST):
        module.update(step)
    own = module
    if through_parent:
        saved, module = torch.nn.ModuleDict({"rec": saved}), torch.nn.ModuleDict({"rec": module})
    state = saved.state_dict()
    if refusal == "unexpected key":
        state[("rec." if through_parent else "") + "bogus"] = torch.zeros(1)
        error, match = RuntimeError, "Unexpected key"
    else:
        auc = own.metrics.auc
        auc = auc.lifetime if window is not None else auc

        def broken(*args, **kwargs):
            raise MemoryError("out of memory while loading")

        auc._load_from_state_dict = broken
        error, match = MemoryError, "out of memory"
    metadata = copy.deepcopy(dict(state._metadata))
    with pytest.raises(error, match=match):
        module.load_state_dict(state)
    assert dict(state._metadata) == metadata
    values, recent = own.compute(), _resume_refs(data, _PRE[-1], _POST[-1])  # its own steps, as before
    for name in ("ne", "log_loss", "auc"):
        assert values[f"{name}/click"].item() == pytest.approx(recent[name], rel=1e-6), name
        if window is not None:
            assert values[f"{name}/click/window"].item() == pytest.approx(recent[name], rel=1e-6), name


def test_a_strict_load_of_another_metric_still_says_added_since():
    """Across a window change the strict load resumes; a metric the checkpoint does not hold is still named as one
    added since it was saved (the window is not blamed)."""
    step = {"prediction": torch.tensor([0.2, 0.7, 0.4]), "label": torch.tensor([0.0, 1.0, 1.0])}
    windowed = tmx.RecMetricModule(["c"], {"ne": "ne", "auc": "auc"}, window_size=5, throughput=False)
    windowed.update(step)
    other = tmx.RecMetricModule(["c"], {"ne": "ne", "ctr": "ctr"}, throughput=False)
    with pytest.raises(RuntimeError, match=r"added since it was saved") as caught:
        other.load_state_dict(windowed.state_dict())
    message = str(caught.value)
    assert "metrics.ne." not in message  # resumed: its lifetime, without the window
    assert '"metrics.ctr.weighted_pred_sum"' in message and '"metrics.auc.lifetime.preds"' in message
    assert "saved with a window" not in message and "without a window" not in message


def test_a_windows_undefined_value_warning_says_window():
    """The window's warning is not the lifetime's word for word (Python's default filter would show only one of
    two identical warnings): NE's window of one class is ``nan`` and the warning says ``(window)``."""
    module = tmx.RecMetricModule(["c"], {"ne": "ne"}, window_size=2, throughput=False)
    module.update({"prediction": torch.tensor([0.2, 0.7]), "label": torch.tensor([0.0, 1.0])})
    module.update({"prediction": torch.tensor([0.2, 0.7]), "label": torch.tensor([1.0, 1.0])})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    assert [str(w.message).split(":")[0] for w in caught] == ["ne (window) is undefined for task(s) ['c']"]
    assert math.isnan(values["ne/c/window"]) and not math.isnan(values["ne/c"])
    metric = tmx.Windowed(tmx.CTR(), window_size=2)
    metric.update(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric.compute()
    assert sorted(str(w.message).split(" is")[0] for w in caught) == ["CTR", "CTR (window)"]


# ----------------------------------------------------------------------------- DDP audit: 3 tasks, uneven ranks

_AUDIT_TASKS = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", f"{t}_w") for t in ("a", "b", "c")]
_AUDIT_METRICS = {"ne": "ne", "auc": "auc", "calibration": "calibration", "ctr": "ctr"}
_AUDIT_WINDOW = 100  # 50 samples per rank


def _audit_data(seed: int, n: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for t in ("a", "b", "c"):
        out[f"{t}_pred"] = torch.rand(n, generator=gen) * 0.98 + 0.01
        out[f"{t}_label"] = (torch.rand(n, generator=gen) < out[f"{t}_pred"]).float()
        out[f"{t}_w"] = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    return out


# rank 0: three batches (20, 30, 40 rows); rank 1: one batch of 25 rows or none
_AUDIT_BOUNDS = {0: [0, 20, 50, 90], 1: [90, 115]}


def _audit_shard(data: dict[str, torch.Tensor], rank: int, rank1_batches: int) -> list[dict[str, torch.Tensor]]:
    return batches(data, _AUDIT_BOUNDS[rank]) if rank == 0 or rank1_batches else []


def _audit_reference(data: dict[str, torch.Tensor]) -> dict[str, float]:
    """NumPy/scikit-learn values of the four metrics per task (weighted)."""
    out = {}
    for t in ("a", "b", "c"):
        p, y, w = (data[f"{t}_{s}"].double().numpy() for s in ("pred", "label", "w"))
        ctr = (w * y).sum() / w.sum()
        loss = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum()
        out[f"ne/{t}"] = loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr))
        out[f"auc/{t}"] = roc_auc_score(y, p, sample_weight=w)
        out[f"calibration/{t}"] = (w * p).sum() / (w * y).sum()
        out[f"ctr/{t}"] = ctr
    return out


def _audit_module(key_style: str) -> tmx.RecMetricModule:
    return tmx.RecMetricModule(
        _AUDIT_TASKS, dict(_AUDIT_METRICS), window_size=_AUDIT_WINDOW, throughput=False, key_style=key_style
    )


def _audit_job(rank: int, world_size: int, rank1_batches: int, key_style: str) -> dict[str, dict[str, float]]:
    """Update, compute; a state_dict round trip into a fresh module, compute; reset, new data, compute."""
    module = _audit_module(key_style)
    for part in _audit_shard(_audit_data(0, 115), rank, rank1_batches):
        module.update(part)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = {k: v.item() for k, v in module.compute().items()}
        resumed = _audit_module(key_style)
        resumed.load_state_dict(module.state_dict())
        loaded = {k: v.item() for k, v in resumed.compute().items()}
        module.reset()
        for part in _audit_shard(_audit_data(1, 115), rank, rank1_batches):
            module.update(part)
        after_reset = {k: v.item() for k, v in module.compute().items()}
    return {"first": first, "loaded": loaded, "after_reset": after_reset}


def _audit_expected(seed: int, rank1_batches: int) -> dict[str, float]:
    """Lifetime over every rank's rows; window over each rank's newest whole updates within 50 samples."""
    data = _audit_data(seed, 115)
    shards = [_audit_shard(data, rank, rank1_batches) for rank in (0, 1)]
    everything = {k: torch.cat([p[k] for s in shards for p in s]) for k in data}
    window = {}
    for k in data:
        kept = [(s, _kept([len(p["a_pred"]) for p in s], _AUDIT_WINDOW // 2)) for s in shards if s]
        window[k] = torch.cat([s[i][k][len(s[i][k]) - n :] for s, rule in kept for i, n in sorted(rule)])
    return {**_audit_reference(everything), **{f"{k}/window": v for k, v in _audit_reference(window).items()}}


def _torchrec_key(key: str) -> str:
    name, task, *window = key.split("/")
    return f"{name}-{task}|{'window' if window else 'lifetime'}_{name}"


@pytest.mark.ddp
@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
@pytest.mark.parametrize("rank1_batches", [0, 1])
def test_ddp_three_tasks_with_a_window_resume_and_reset_equal_references(ddp_pool, rank1_batches, key_style):
    """Rank 0 three batches, rank 1 one or none: lifetime and window values on every rank equal the
    references over every rank's rows (the window: each rank's newest ``window_size // 2``), also after a
    state_dict round trip on each rank and after ``reset()`` and new data."""
    expected = {"first": _audit_expected(0, rank1_batches), "after_reset": _audit_expected(1, rank1_batches)}
    expected["loaded"] = expected["first"]
    for rank, result in enumerate(ddp_pool.run(_audit_job, rank1_batches, key_style, timeout=120)):
        for what, want in expected.items():
            keys = {(_torchrec_key(k) if key_style == "torchrec" else k): v for k, v in want.items()}
            assert sorted(result[what]) == sorted(keys), (rank, what)
            for key, value in keys.items():
                np.testing.assert_allclose(result[what][key], value, rtol=1e-7, err_msg=f"rank {rank} {what} {key}")


@pytest.mark.parametrize("window_size", [None, 8])
@pytest.mark.parametrize("change", ["update", "merge_state", "load_state_dict"])
def test_a_compute_group_member_changed_directly_is_warned_for_and_reports_its_group(window_size, change):
    """``module.metrics["calibration"].update(...)`` (``merge_state``, ``load_state_dict``) was dropped at compute silently.

    A compute group member reads its leader's states at compute: whatever was put into it directly is
    replaced, now with a ``UserWarning`` naming it and its leader. The values stay those of the
    module's steps only (NumPy references), and a module used as documented warns for nothing.
    """
    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr", "calibration": "calibration"}, window_size=window_size, throughput=False
    )
    assert module.compute_groups == [["ctr", "calibration"]]
    p, y = np.array([0.2, 0.7, 0.4, 0.9]), np.array([0.0, 1.0, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the documented use: nothing to warn for
        module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
        module.compute()
        module.compute()
        module.reset()
        module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
        module.compute()
    member = module.metrics["calibration"]
    if change == "update":
        member.update(torch.tensor([0.9, 0.9]), torch.tensor([0.0, 0.0]))
    else:
        other = tmx.Windowed(tmx.Calibration(), window_size) if window_size else tmx.Calibration()
        other.update(torch.tensor([0.9, 0.9]), torch.tensor([0.0, 0.0]))
        if change == "merge_state":
            member.merge_state(other)
        else:  # strict: every key of the other metric's checkpoint is read (and then replaced)
            assert not member.load_state_dict(other.persistent(True) or other.state_dict()).unexpected_keys
    with pytest.warns(UserWarning, match=r"metric 'calibration' was changed outside the module .* with 'ctr'"):
        values = module.compute()
    expected = {"ctr/c": y.mean(), "calibration/c": p.sum() / y.sum()}
    if window_size:
        expected |= {f"{key}/window": value for key, value in expected.items()}
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: it holds its group's states again
        module.compute()


@pytest.mark.parametrize("window_size", [None, 8])
@pytest.mark.parametrize(
    "how",
    [
        "member alone",
        "member alone, no compute before",
        "collection",
        "each, member first",
        "member before any step",
        "module",
    ],
)
def test_a_compute_group_member_reset_alone_is_warned_for_and_a_group_reset_is_not(window_size, how):
    """``module.metrics["calibration"].reset()`` was overridden at compute silently: the member reads its leader's
    states, which still hold the steps before the reset. It now warns, as a member's own update, merge or load
    does, and reports its group's states (NumPy references over every step). Resetting the whole group (the
    module, ``module.metrics.reset()``, each metric in any order) or a member before the group held anything
    drops nothing: no warning, and the values are those of the steps after the reset."""
    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr", "calibration": "calibration"}, window_size=window_size, throughput=False
    )
    g = np.random.default_rng(5)
    steps = [(g.uniform(0.05, 0.95, 4), np.array([1.0, 0.0, 1.0, float(i % 2)])) for i in range(4)]

    def step(i):
        module.update({"prediction": torch.tensor(steps[i][0]), "label": torch.tensor(steps[i][1])})

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if how == "member before any step":
            module.metrics["calibration"].reset()
        else:
            step(0)
            step(1)
            if how != "member alone, no compute before":
                module.compute()
            if how.startswith("member alone"):
                module.metrics["calibration"].reset()
            elif how == "collection":
                module.metrics.reset()
            elif how == "each, member first":
                module.metrics["calibration"].reset()
                module.metrics["ctr"].reset()
            else:
                module.reset()
        step(2)
        step(3)
    alone = how.startswith("member alone")
    if alone:
        with pytest.warns(UserWarning, match=r"metric 'calibration' was reset on its own .* with 'ctr'.* not reset"):
            values = module.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: it holds its group's states again; a group reset: never
        values = module.compute()
    kept = steps if alone else steps[2:]  # the steps the group has seen since its last reset
    expected = {}
    for suffix, seen in [("", kept), ("/window", steps[2:])][: 2 if window_size else 1]:
        p, y = (np.concatenate(v) for v in zip(*seen))
        expected |= {f"ctr/c{suffix}": y.mean(), f"calibration/c{suffix}": p.sum() / y.sum()}
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("window_size", [None, 8])
@pytest.mark.parametrize(
    "how",
    [
        "leader alone",
        "leader alone, no compute before",
        "leader alone twice",
        "each, leader first",
        "each, member first",
        "collection",
        "module",
        "leader before any step",
    ],
)
def test_a_compute_group_leader_reset_alone_is_warned_for_and_a_group_reset_is_not(window_size, how):
    """``module.metrics["ctr"].reset()`` of a group's first metric, whose states its members read, cleared the
    members' values silently (the mirror of a member reset alone). It now warns at compute, naming the leader and
    the members it cleared. Resetting the whole group (the module, ``module.metrics.reset()``, each metric in either
    order) or the leader before the group held anything warns for nothing. The values are those of the steps after
    the reset in every case (NumPy references): the leader's reset cleared the states the group shares."""
    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr", "calibration": "calibration"}, window_size=window_size, throughput=False
    )
    g = np.random.default_rng(11)
    steps = [(g.uniform(0.05, 0.95, 4), np.array([1.0, 0.0, 1.0, float(i % 2)])) for i in range(4)]

    def step(i):
        module.update({"prediction": torch.tensor(steps[i][0]), "label": torch.tensor(steps[i][1])})

    leader, member = module.metrics["ctr"], module.metrics["calibration"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if how == "leader before any step":
            leader.reset()
        else:
            step(0)
            step(1)
            if how != "leader alone, no compute before":
                module.compute()
            if how.startswith("leader alone"):
                leader.reset()
                if how == "leader alone twice":  # the second reset clears nothing: the first one is still said
                    leader.reset()
            elif how == "each, leader first":
                leader.reset()
                member.reset()
            elif how == "each, member first":
                member.reset()
                leader.reset()
            elif how == "collection":
                module.metrics.reset()
            else:
                module.reset()
        step(2)
        step(3)
    if how.startswith("leader alone"):
        match = r"metric 'ctr' was reset on its own, and that reset also cleared the states of 'calibration'.*"
        with pytest.warns(UserWarning, match=match + r"Reset the module \(`module.reset\(\)`\) or every metric"):
            module.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once; a group reset: never
        values = module.compute()
    p, y = (np.concatenate(v) for v in zip(*steps[2:]))
    expected = {"ctr/c": y.mean(), "calibration/c": p.sum() / y.sum()}
    if window_size:
        expected |= {f"{key}/window": value for key, value in expected.items()}
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


def test_a_leader_reset_alone_after_a_member_reset_and_a_step_is_warned_for():
    """A member reset, then a step, then the leader reset alone: the leader's reset cleared the step the member had
    seen since its own reset, so it is said (the member's earlier reset is not: the leader was reset after it)."""
    module = tmx.RecMetricModule(["c"], {"ctr": "ctr", "calibration": "calibration"}, throughput=False)
    data = {"prediction": torch.tensor([0.2, 0.7]), "label": torch.tensor([0, 1])}
    module.update(data)
    module.metrics["calibration"].reset()
    module.update(data)
    module.metrics["ctr"].reset()
    module.update(data)
    with pytest.warns(UserWarning, match="metric 'ctr' was reset on its own") as record:
        module.compute()
    assert not [w for w in record if "'calibration' was reset on its own" in str(w.message)]


@pytest.mark.parametrize("window_size", [None, 4])
@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
def test_a_copied_compute_group_member_is_a_standalone_metric_of_the_groups_states(window_size, copier):
    """``copy.deepcopy(module.metrics["calibration"])`` of a group member copied its leader along (a member refers
    to it) and held the states of the module's last ``compute`` (``nan`` before the first, and without the steps
    since). The copy is now a metric of its own holding the group's states: the value the module reports, then
    updated on its own like a fresh metric fed the same rows (NumPy references), without touching the module. A
    module copied whole keeps its groups: its members read its own leaders, and it warns for nothing."""
    import pickle

    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr", "calibration": "calibration"}, window_size=window_size, throughput=False
    )
    copy_of = copy.deepcopy if copier == "deepcopy" else lambda obj: pickle.loads(pickle.dumps(obj))
    g = np.random.default_rng(3)
    steps = [(g.uniform(0.05, 0.95, 3), np.array([1.0, 0.0, float(i % 2)])) for i in range(4)]

    def calibration(seen):
        p, y = (np.concatenate(v) for v in zip(*seen))
        return p.sum() / y.sum()

    def value(metric):
        out = metric.compute()
        return out["lifetime"].item() if window_size else out.item()

    for i, (p, y) in enumerate(steps[:3]):
        module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
        if i == 0:
            module.compute()  # the member holds the states of step 0, then steps 1 and 2 come
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copied = copy_of(module.metrics["calibration"])
        whole = copy_of(module)
    parts = [copied.lifetime, copied.window] if window_size else [copied]
    assert all("_states_source" not in part.__dict__ for part in parts)  # no leader (nor module) came along
    np.testing.assert_allclose(value(copied), calibration(steps[:3]), rtol=1e-12)
    p, y = steps[3]
    copied.update(torch.tensor(p), torch.tensor(y))
    np.testing.assert_allclose(value(copied), calibration(steps), rtol=1e-12)
    if window_size:  # the window: the newest 4 rows, as a Windowed fed the same steps
        reference = tmx.Windowed(tmx.Calibration(), window_size)
        for p, y in steps:
            reference.update(torch.tensor(p), torch.tensor(y))
        np.testing.assert_allclose(copied.compute()["window"].item(), reference.compute()["window"].item(), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = module.compute()
        whole_values = whole.compute()
    np.testing.assert_allclose(values["calibration/c"].item(), calibration(steps[:3]), rtol=1e-12)  # untouched
    assert {k: v.item() for k, v in whole_values.items()} == {k: v.item() for k, v in values.items()}
    for member, leader in whole._member_parts():  # linked to the copy's own leaders
        assert member.__dict__["_states_source"] is leader
        assert leader in [*whole._parts(whole.metrics["ctr"]).values()]
    whole.metrics["ctr"].reset()
    whole.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
    with pytest.warns(UserWarning, match="metric 'ctr' was reset on its own"):
        whole.compute()


@pytest.mark.parametrize("window_size", [None, 8])
@pytest.mark.parametrize("copier", ["deepcopy", "pickle", "clone"])
@pytest.mark.parametrize("pending", ["leader reset", "member reset", "member update"])
def test_a_copy_of_a_module_carries_a_pending_compute_group_warning(pending, copier, window_size):
    """A module copied (``copy.deepcopy``, pickle, ``clone``) after a group's leader was reset alone, a member
    reset alone or a member updated on its own, and before ``compute()``: the copy re-marked its members as it
    loaded, so its first compute said nothing although it dropped (or had lost) the same states as the original,
    which warns. The copy now carries what is pending: its first compute warns as the original's does, its
    values are the original's (NumPy references: the leader's steps since its last reset), and its second
    compute warns no more."""
    import pickle

    module = tmx.RecMetricModule(
        ["c"], {"ctr": "ctr", "calibration": "calibration"}, window_size=window_size, throughput=False
    )
    g = np.random.default_rng(21)
    steps = [(g.uniform(0.05, 0.95, 4), np.array([1.0, 0.0, 1.0, float(i % 2)])) for i in range(4)]

    def step(i):
        module.update({"prediction": torch.tensor(steps[i][0]), "label": torch.tensor(steps[i][1])})

    step(0)
    step(1)
    module.compute()
    if pending == "leader reset":
        module.metrics["ctr"].reset()
        match, kept = r"metric 'ctr' was reset on its own, and that reset also cleared the states of 'calibration'", 2
    elif pending == "member reset":
        module.metrics["calibration"].reset()
        match, kept = r"metric 'calibration' was reset on its own and that reset is dropped", 0
    else:
        module.metrics["calibration"].update(torch.tensor([0.5]), torch.tensor([1.0]))
        match, kept = r"metric 'calibration' was changed outside the module", 0
    step(2)
    step(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # copying says nothing
        if copier == "deepcopy":
            copied = copy.deepcopy(module)
        elif copier == "pickle":
            copied = pickle.loads(pickle.dumps(module))
        else:
            copied = module.clone(prefix="val/")
    prefix = "val/" if copier == "clone" else ""
    p, y = (np.concatenate(v) for v in zip(*steps[kept:]))
    expected = {"ctr/c": y.mean(), "calibration/c": p.sum() / y.sum()}
    for current, key_prefix in ((copied, prefix), (module, "")):
        with pytest.warns(UserWarning, match=match):
            values = current.compute()
        for key, value in expected.items():
            np.testing.assert_allclose(values[key_prefix + key].item(), value, rtol=1e-12, err_msg=key)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            again = current.compute()
        assert {k: v.item() for k, v in again.items()} == {k: v.item() for k, v in values.items()}


_GROUP_PAIRS = {  # compute group pairs -> the NumPy / scikit-learn value of each on (p, y)
    ("ctr", "calibration"): (lambda p, y: y.mean(), lambda p, y: p.sum() / y.sum()),
    ("ne", "log_loss"): (lambda p, y: _ne_reference(p, y, np.ones_like(p)), lambda p, y: log_loss(y, p)),
    ("auc", "auprc"): (roc_auc_score.__call__, average_precision_score.__call__),
}


def _pair_reference(name, p, y):
    for pair, refs in _GROUP_PAIRS.items():
        if name in pair:
            fn = refs[pair.index(name)]
            return fn(p, y) if name not in ("auc", "auprc") else fn(y, p)
    raise KeyError(name)


@pytest.mark.parametrize("window_size", [None, 8])
@pytest.mark.parametrize("how", ["update", "merge_state", "load_state_dict"])
@pytest.mark.parametrize("first", [True, False], ids=["given-first", "given-second"])
@pytest.mark.parametrize("pair", list(_GROUP_PAIRS), ids="-".join)
def test_a_compute_group_metric_given_already_updated_starts_empty_whatever_the_order(pair, first, how, window_size):
    """A metric instance holding samples (updated, merged into or loaded) given to a module where it shares a
    compute group: as the group's first metric its samples were every member's (``calibration`` computed with
    ``ctr``'s earlier row, silently), as a later one they were dropped with a warning at compute. Now it is reset
    when the module is built, with a warning naming it, in both orders: every metric of the group reports the
    module's steps alone (NumPy / scikit-learn references), and ``compute`` says nothing more."""
    given_name, other = pair
    metric = build_metric(given_name)
    earlier_p, earlier_y = torch.tensor([0.9, 0.15, 0.8]), torch.tensor([0.0, 1.0, 0.0])
    if how == "update":
        metric.update(earlier_p, earlier_y)
    else:
        source = build_metric(given_name)
        source.update(earlier_p, earlier_y)
        if how == "merge_state":
            metric.merge_state(source)
        else:
            source.persistent(True)
            metric.persistent(True)
            metric.load_state_dict(source.state_dict())
    metrics = {given_name: metric, other: other} if first else {other: other, given_name: metric}
    with pytest.warns(UserWarning, match=rf"metric\(s\) {given_name!r} \(with {other!r}\) were given already updated"):
        module = tmx.RecMetricModule(["c"], metrics, window_size=window_size, throughput=False)
    assert module.compute_groups == [list(metrics)]
    g = np.random.default_rng(5)
    p, y = g.uniform(0.05, 0.95, 6), np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, at construction
        values = module.compute()
    for name in pair:
        reference = _pair_reference(name, p, y)
        for suffix in ("", "/window") if window_size else ("",):
            np.testing.assert_allclose(values[f"{name}/c{suffix}"].item(), reference, rtol=1e-6, err_msg=name + suffix)


def test_a_metric_given_already_updated_keeps_its_samples_outside_a_compute_group_or_a_failed_build():
    """Only a compute group resets a metric given with samples: alone in the module it keeps them (its value is
    that of all its rows, NumPy's), and a construction refused later (a ``throughput`` another module holds)
    leaves it as it was, without a warning."""
    earlier_p, earlier_y = np.array([0.5, 0.25]), np.array([1.0, 1.0])
    ctr = tmx.CTR()
    ctr.update(torch.tensor(earlier_p), torch.tensor(earlier_y))
    taken = tmx.Throughput()
    holder = tmx.RecMetricModule(["c"], {"ne": "ne"}, throughput=taken)  # noqa: F841 (alive: it holds `taken`)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="`throughput`"):
            tmx.RecMetricModule(["c"], {"ctr": ctr, "calibration": "calibration"}, throughput=taken)
        assert ctr._update_count == 1
        module = tmx.RecMetricModule(["c"], {"ctr": ctr, "auc": "auc"}, throughput=False)
        p, y = np.array([0.2, 0.6, 0.7]), np.array([0.0, 0.0, 1.0])
        module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
        values = module.compute()
    np.testing.assert_allclose(values["ctr/c"].item(), np.concatenate([earlier_y, y]).mean(), rtol=1e-12)
    np.testing.assert_allclose(values["auc/c"].item(), roc_auc_score(y, p), rtol=1e-6)


@pytest.mark.parametrize("window_size", [None, 8])
def test_a_build_refused_by_the_carried_samples_warning_as_an_error_leaves_the_metric_as_it_was(window_size):
    """Under ``-W error`` (pytest's ``filterwarnings = error``) the compute group warning refuses the module: it was
    raised after the metric had been reset and taken by the half-built module, so the refused construction had
    wiped the user's samples. It is said before anything changes: the metric keeps its rows (NumPy's mean), is
    free for the next module, and a module built with the warning allowed resets it as before."""
    earlier_y = np.array([1.0, 1.0, 0.0])
    ctr = tmx.CTR()
    ctr.update(torch.tensor([0.5, 0.25, 0.75]), torch.tensor(earlier_y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match=r"metric\(s\) 'ctr' \(with 'calibration'\) were given already updated"):
            tmx.RecMetricModule(["c"], {"ctr": ctr, "calibration": "calibration"}, window_size=window_size)
    assert ctr.update_count == 1
    np.testing.assert_allclose(ctr.compute().item(), earlier_y.mean(), rtol=1e-12)
    with pytest.warns(UserWarning, match="were given already updated"):
        module = tmx.RecMetricModule(["c"], {"ctr": ctr, "calibration": "calibration"}, window_size=window_size)
    assert ctr.update_count == 0
    p, y = np.array([0.2, 0.6, 0.7]), np.array([0.0, 0.0, 1.0])
    module.update({"prediction": torch.tensor(p), "label": torch.tensor(y)})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=tmx.UndefinedMetricWarning)  # the throughput before warm-up
        values = module.compute()
    np.testing.assert_allclose(values["ctr/c"].item(), y.mean(), rtol=1e-12)
    np.testing.assert_allclose(values["calibration/c"].item(), p.sum() / y.sum(), rtol=1e-6)


@pytest.mark.parametrize("device_path", [False, True])
def test_a_module_of_unvalidated_metrics_equals_a_validating_one_whatever_its_weight_columns(device_path, monkeypatch):
    """A module whose every metric has ``validate_args=False`` trusts its steps: it looks for all-ones weight
    columns on the CPU only (the unweighted kernels then skip their passes) and takes them as given on a device.
    Steps whose columns are all ones, then not, in float32, float16, bfloat16 or float64, or missing for one task,
    give the validating module's values (bit for bit on the CPU, to rounding on the device path) and the float64
    NumPy and scikit-learn references on all the data."""
    tasks = [tmx.RecTaskInfo(name, f"{name}_y", f"{name}_p", f"{name}_w") for name in ("a", "b")]
    names = {"ne": "ne", "calibration": "calibration", "ctr": "ctr", "mse": "mse", "auc": "auc"}

    def build(validate: bool) -> tmx.RecMetricModule:
        metrics = {key: build_metric(name, num_tasks=2, validate_args=validate) for key, name in names.items()}
        return tmx.RecMetricModule(tasks, metrics, throughput=False)

    gen = torch.Generator().manual_seed(3)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
    steps, seen = [], {t.name: ([], [], []) for t in tasks}
    for i in range(8):
        n = 200 + 37 * i
        step = {}
        for t, task in enumerate(("a", "b")):
            p = torch.rand(n, generator=gen).clamp(0.01, 0.99)
            y = (torch.rand(n, generator=gen) < p).float()
            step[f"{task}_p"], step[f"{task}_y"] = p, y
            kind = (i + t) % 3  # all ones, any weights, or no column (weight 1)
            w = torch.ones(n) if kind != 1 else torch.rand(n, generator=gen) * 3
            if kind != 2:
                step[f"{task}_w"] = w.to(dtypes[(i + t) % 4])
                w = step[f"{task}_w"]
            for store, value in zip(seen[task], (p, y, w)):
                store.append(value.double().numpy())
        steps.append(step)
    found = []  # what the trusted steps found (all-ones columns or not)
    real = tmx.RecMetricModule._trusted_unit_weights
    monkeypatch.setattr(
        tmx.RecMetricModule, "_trusted_unit_weights", staticmethod(lambda *a: found.append(real(*a)) or found[-1])
    )
    with force_device_path(device_path):
        trusted, checked = build(False), build(True)
        for step in steps:
            trusted.update(step)
            checked.update(step)
        got, expected = trusted.compute(), checked.compute()
    assert len(found) == len(steps) and any(found) != device_path and not all(found)  # the trusted path ran
    assert sorted(got) == sorted(expected)
    for key in expected:
        if device_path:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-14, atol=0)
        else:
            assert torch.equal(got[key], expected[key]), key
    for task, (ps, ys, ws) in seen.items():
        p, y, w = (np.concatenate(v) for v in (ps, ys, ws))
        references = {
            "ne": ref_ne(p, y, w),
            "calibration": (p * w).sum() / (y * w).sum(),
            "ctr": (y * w).sum() / w.sum(),
            "mse": ((p - y) ** 2 * w).sum() / w.sum(),
            "auc": roc_auc_score(y, p, sample_weight=w),
        }
        for name, value in references.items():
            np.testing.assert_allclose(got[f"{name}/{task}"].item(), value, rtol=1e-12, err_msg=f"{name}/{task}")


@pytest.mark.parametrize("window_size", [None, 100])
def test_module_step_leaves_every_unit_validating_its_own_updates(window_size):
    """The trust a module step gives its units ends with the step: each unit's own `update` validates again."""
    infos = [tmx.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}", f"w{i}") for i in range(2)]
    module = tmx.RecMetricModule(infos, {"ne": "ne", "ctr": "ctr"}, window_size=window_size, throughput=False)
    g = torch.Generator().manual_seed(0)
    batch = {}
    for i in range(2):
        batch[f"p{i}"], batch[f"y{i}"] = torch.rand(8, generator=g), (torch.rand(8, generator=g) < 0.5).float()
    module.update(batch)
    for unit, *_ in module._plan().updated:
        holder = unit._scratch if isinstance(unit, tmx.Windowed) else unit
        assert holder.__dict__["_inputs_checked"] is False
        with pytest.raises(ValueError):
            unit.update(torch.full((2, 4), 2.0), torch.zeros(2, 4), None)  # probabilities above 1


@pytest.mark.parametrize("window_size", [None, 12])
def test_unweighted_steps_of_changing_sizes_and_task_counts_count_their_own_samples(window_size):
    """The unweighted total of a step (``N`` per task) is kept between steps of one shape: steps of other
    sizes, another module with other tasks in between, and inference mode count their own samples.

    Reference: numpy's CTR, MSE and accuracy of every task over all steps (and the window's CTR over the
    newest steps that fit in 12 samples).
    """
    gen = torch.Generator().manual_seed(5)

    def module_of(tasks: int) -> tmx.RecMetricModule:
        infos = [tmx.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}") for i in range(tasks)]
        specs = {"ctr": "ctr", "mse": "mse", "accuracy": "accuracy"}
        return tmx.RecMetricModule(infos, specs, window_size=window_size, throughput=False)

    modules = {2: module_of(2), 3: module_of(3)}
    fed: dict[int, list[dict[str, torch.Tensor]]] = {2: [], 3: []}
    for k, (tasks, n) in enumerate([(3, 8), (2, 8), (3, 8), (3, 5), (2, 5), (3, 8), (2, 1), (3, 8)]):
        step = {}
        for i in range(tasks):
            step[f"p{i}"] = torch.rand(n, generator=gen)
            step[f"y{i}"] = (torch.rand(n, generator=gen) < 0.4).float()
        if k == 5:
            with torch.inference_mode():
                modules[tasks].update(step)
        else:
            modules[tasks].update(step)
        fed[tasks].append(step)
    for tasks, module in modules.items():
        values = module.compute()
        for i in range(tasks):
            p, y = (torch.cat([s[f"{c}{i}"] for s in fed[tasks]]).double().numpy() for c in "py")
            np.testing.assert_allclose(values[f"ctr/t{i}"], y.mean(), rtol=1e-12)
            np.testing.assert_allclose(values[f"mse/t{i}"], np.mean((p - y) ** 2), rtol=1e-12)
            np.testing.assert_allclose(values[f"accuracy/t{i}"], np.mean((p >= 0.5) == (y == 1)), rtol=1e-12)
            if window_size is not None:  # the window keeps the newest whole steps of at most 12 samples
                kept = len(fed[tasks][-1]["y0"])
                for s in reversed(fed[tasks][:-1]):
                    if kept + len(s["y0"]) > 12:
                        break
                    kept += len(s["y0"])
                np.testing.assert_allclose(values[f"ctr/t{i}/window"], y[-kept:].mean(), rtol=1e-12)


def test_a_module_pickled_with_a_plan_of_another_version_finds_its_plan_again():
    """A step plan pickled before the plan named its units' trust holders is dropped on load and found again:
    the loaded module's steps trust and update every unit as the original's do (same bits)."""
    import pickle

    steps = [make_data(s, n=40) for s in range(3)]
    module, reference = build(window_size=60), build(window_size=60)
    run(module, steps[:1])
    run(reference, steps[:1])
    module.__dict__["_step_plan"] = module.__dict__["_step_plan"]._replace(trusted=())  # as an older version left it
    loaded = pickle.loads(pickle.dumps(module))
    assert "_step_plan" not in loaded.__dict__
    run(loaded, steps[1:])
    run(reference, steps[1:])
    _same_bits(loaded, reference)
    for unit, *_ in loaded._plan().updated:
        holder = unit._scratch if isinstance(unit, tmx.Windowed) else unit
        assert holder.__dict__["_inputs_checked"] is False


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ([], False),
        ([()], False),
        ([(), ()], False),
        ([(1.0, 1.0)], True),
        ([(), (1.0, 1.0)], True),
        ([(1.0, 1.0), (0.5, 1.0)], False),
        ([(1.0, 2.0), (1.0, 1.0)], False),
        ([(float("nan"), float("nan"))], False),
        ([(1.0, 1.0), (0.0, 0.0)], False),
    ],
)
def test_all_unit_weights_needs_a_given_column_and_every_given_one_exactly_one(bounds, expected):
    from torchmetrics_ext.utilities.checks import all_unit_weights

    assert all_unit_weights(bounds) is expected


@pytest.mark.parametrize("n", [8, 1366, 1367])  # 2 x 3 x 1366 = 8196 entries: past the small stacks' 8192
def test_stacked_columns_are_checked_in_float64_when_small_and_in_their_own_dtype_when_large(n):
    """``_stack_and_widen``: the float64 ``(T, N)`` stacks, and the form the step's check reads.

    Reference: ``torch.stack`` of the columns, cast. Columns of one narrow dtype are checked in their
    float64 stack up to 8192 stacked entries (the same numbers), in their own dtype beyond; float64
    columns and columns of several dtypes as before.
    """
    gen = torch.Generator().manual_seed(3)
    preds = [torch.rand(n, generator=gen) for _ in range(3)]
    labels = [(torch.rand(n, generator=gen) < 0.5).float() for _ in range(3)]
    wide_p, wide_y, check_p, check_y = _module_stack._stack_and_widen(preds, labels)
    assert torch.equal(wide_p, torch.stack(preds).double()) and torch.equal(wide_y, torch.stack(labels).double())
    assert wide_p.dtype == wide_y.dtype == torch.float64
    small = 2 * 3 * n <= 8192
    assert (check_p.dtype, check_y.dtype) == ((torch.float64,) * 2 if small else (torch.float32,) * 2)
    assert torch.equal(check_p.double(), wide_p) and torch.equal(check_y.double(), wide_y)
    assert [t.aminmax() for t in (check_p.double(), check_y.double())] == [t.aminmax() for t in (wide_p, wide_y)]
    # float64 columns: one stack read by both; int64 labels next to float32 predictions: float32 and float64
    doubles = [p.double() for p in preds]
    out = _module_stack._stack_and_widen(doubles, [y.double() for y in labels])
    assert out[2] is out[0] and out[3] is out[1]
    out = _module_stack._stack_and_widen(preds, [y.long() for y in labels])
    assert (out[2].dtype, out[3].dtype) == (torch.float32, torch.float64)
    assert torch.equal(out[2], torch.stack(preds)) and torch.equal(out[3], wide_y)


@pytest.mark.parametrize("n", [8, 2000])
@pytest.mark.parametrize(
    ("column", "value", "match"), [("b_p", float("nan"), "finite"), ("b_p", 1.5, r"\[0, 1\]"), ("c_y", 0.5, "0 or 1")]
)
def test_a_refused_value_of_a_small_or_large_narrow_step_is_named_and_changes_nothing(n, column, value, match):
    """Small float32 steps are checked in their float64 stack, large ones in float32: both refuse the same values.

    Reference: numpy's CTR and scikit-learn's AUC over the accepted step; the refused step names its task's column.
    """
    gen = torch.Generator().manual_seed(9)
    tasks = [tmx.RecTaskInfo(t, f"{t}_y", f"{t}_p") for t in "abc"]
    module = tmx.RecMetricModule(tasks, {"ctr": "ctr", "auc": "auc"}, throughput=False)
    step = {}
    for t in "abc":
        step[f"{t}_p"] = torch.rand(n, generator=gen)
        step[f"{t}_y"] = (torch.arange(n) % 2).float()
    module.update(step)
    before = copy.deepcopy(module.state_dict())
    wrong = {k: v.clone() for k, v in step.items()}
    wrong[column][n // 2] = value
    with pytest.raises(ValueError, match=rf"Task '{column[0]}'.*'{column}'.*{match}"):
        module.update(wrong)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))
    values = module.compute()
    for t in "abc":
        p, y = step[f"{t}_p"].double().numpy(), step[f"{t}_y"].double().numpy()
        np.testing.assert_allclose(values[f"ctr/{t}"], y.mean(), rtol=1e-12)
        np.testing.assert_allclose(values[f"auc/{t}"], roc_auc_score(y, p), rtol=1e-12)


def test_small_weight_stack_only_for_own_columns_of_one_floating_dtype():
    """The one-read check of a small step's weights takes distinct columns of one floating dtype, nothing else."""
    stack = _module_stack._small_weight_stack
    a, b = torch.rand(8), torch.rand(8)
    assert torch.equal(stack([a, b]), torch.stack([a, b]))
    assert stack([a, a]) is None  # one column shared by every task
    assert stack([a, None]) is None and stack([None, a]) is None
    assert stack([a, b.double()]) is None
    assert stack([a]) is None
    assert stack([torch.ones(8, dtype=torch.long), torch.ones(8, dtype=torch.long)]) is None
    assert stack([torch.rand(5000), torch.rand(5000)]) is None  # past 8192 entries


@pytest.mark.parametrize("column", ["prediction", "label", "weight", "query"])
def test_a_sparse_step_column_is_a_type_error_naming_it(column):
    """A sparse ``model_out`` column (``x.to_sparse()``) reached the value checks' ``aminmax`` (PyTorch's internal
    ``NotImplementedError``) or, as an id column, ``reshape`` (``RuntimeError``): a ``TypeError`` naming the key and
    its layout, and the module's values afterwards are those of the good step alone (sklearn's AUC and grouped AUC)."""
    task = tmx.RecTaskInfo("c", group_id_name="query")
    module = tmx.RecMetricModule([task], {"auc": "auc", "gauc": "gauc"}, throughput=False, window_size=10)
    good = {
        "prediction": torch.tensor([0.1, 0.9, 0.4, 0.6, 0.3, 0.8]),
        "label": torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0]),
        "weight": torch.ones(6),
        "query": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    module.update(good)
    with pytest.raises(TypeError, match=rf"`model_out\['{column}'\]`: expected a dense tensor, got layout"):
        module.update(dict(good, **{column: good[column].to_sparse()}))
    values = {key: value.item() for key, value in module.compute().items()}
    p, y = good["prediction"].numpy(), good["label"].numpy()
    auc = roc_auc_score(y, p)
    gauc = np.mean([roc_auc_score(y[i : i + 2], p[i : i + 2]) for i in (0, 2, 4)])
    np.testing.assert_allclose([values["auc/c"], values["auc/c/window"]], [auc, auc], rtol=1e-9)
    np.testing.assert_allclose([values["gauc/c"], values["gauc/c/window"]], [gauc, gauc], rtol=1e-9)


def _plain_mrr(rows: list[tuple[int, float, int]]) -> float:
    """Mean over queries with a relevant row of 1 / rank of the first one (plain Python; no ties in the scores)."""
    queries: dict[int, list[tuple[float, int]]] = {}
    for query, score, label in rows:
        queries.setdefault(query, []).append((score, label))
    ranks = []
    for rows_of_query in queries.values():
        ordered = sorted(rows_of_query, key=lambda row: -row[0])
        labels = [label for _, label in ordered]
        if any(labels):
            ranks.append(1.0 / (labels.index(1) + 1))
    return sum(ranks) / len(ranks)


def test_a_ranking_metric_given_already_updated_to_several_tasks_is_refused_and_keeps_its_rows():
    """A ranking metric has no task dimension: the module keeps a copy per task, and the copies of one given with
    rows had each counted those rows (fed for no task) in every task's value (both tasks' MRR 0.75 instead of
    the 1.0 of their own rows). Refused by name, the metric unchanged; one task keeps them, as a metric outside a
    compute group does (its value over all its rows), and the metric reset is taken for any number of tasks."""
    earlier = [(0, 0.9, 0), (0, 0.1, 1)]  # MRR 0.5
    mrr = tmx.MRR()
    mrr.update(
        torch.tensor([s for _, s, _ in earlier]),
        torch.tensor([y for *_, y in earlier]),
        indexes=torch.tensor([q for q, *_ in earlier]),
    )
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", session_id_name="query") for t in ("click", "buy")]
    with pytest.raises(ValueError, match=r"Metric 'mrr' \(MRR\) already holds rows .*every one of the 2 tasks"):
        tmx.RecMetricModule(tasks, {"mrr": mrr}, throughput=False)
    assert mrr.update_count == 1
    assert mrr.compute().item() == pytest.approx(_plain_mrr(earlier), rel=1e-12)

    step = {"query": torch.tensor([7, 7, 7]), "click_pred": torch.tensor([0.9, 0.2, 0.4])}
    step |= {"click_label": torch.tensor([1, 0, 0]), "buy_pred": torch.tensor([0.3, 0.8, 0.1])}
    step |= {"buy_label": torch.tensor([0, 0, 1])}
    single = tmx.RecMetricModule(tasks[:1], {"mrr": mrr}, throughput=False)
    single.update({k: v for k, v in step.items() if not k.startswith("buy")})
    click = [(7, s, y) for s, y in zip(step["click_pred"].tolist(), step["click_label"].tolist())]
    assert single.compute()["mrr/click"].item() == pytest.approx(_plain_mrr(earlier + click), rel=1e-12)

    fresh = tmx.MRR()
    fresh.update(torch.tensor([0.9, 0.1]), torch.tensor([0, 1]), indexes=torch.tensor([0, 0]))
    fresh.reset()
    module = tmx.RecMetricModule(tasks, {"mrr": fresh}, throughput=False)
    module.update(step)
    values = module.compute()
    buy = [(7, s, y) for s, y in zip(step["buy_pred"].tolist(), step["buy_label"].tolist())]
    assert values["mrr/click"].item() == pytest.approx(_plain_mrr(click), rel=1e-12)
    assert values["mrr/buy"].item() == pytest.approx(_plain_mrr(buy), rel=1e-12)


def test_a_ranking_metric_updated_with_no_rows_is_taken_for_several_tasks():
    """An empty batch (or a fresh metric's checkpoint) leaves a ranking metric's states as built: its copies
    per task count nothing fed for no task, so the module takes it (it was refused as "already holds rows")."""
    empty = tmx.MRR()
    empty.update(torch.tensor([]), torch.tensor([], dtype=torch.long), indexes=torch.tensor([], dtype=torch.long))
    loaded = tmx.MRR()
    loaded.persistent(True)
    source = tmx.MRR()
    source.persistent(True)
    loaded.load_state_dict(source.state_dict())
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", session_id_name="query") for t in ("click", "buy")]
    step = {"query": torch.tensor([7, 7, 7]), "click_pred": torch.tensor([0.9, 0.2, 0.4])}
    step |= {"click_label": torch.tensor([0, 0, 1]), "buy_pred": torch.tensor([0.3, 0.8, 0.1])}
    step |= {"buy_label": torch.tensor([0, 1, 0])}
    for metric in (empty, loaded):
        module = tmx.RecMetricModule(tasks, {"mrr": metric}, throughput=False)
        module.update(step)
        values = module.compute()
        for task in ("click", "buy"):
            rows = [(7, s, y) for s, y in zip(step[f"{task}_pred"].tolist(), step[f"{task}_label"].tolist())]
            assert values[f"mrr/{task}"].item() == pytest.approx(_plain_mrr(rows), rel=1e-12)
