"""Pointwise metrics: bad input, undefined values, compute groups and the TorchMetrics contract."""

from __future__ import annotations

import copy
import gc
import inspect
import re
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_pointwise import CASES
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning

P = torch.tensor([0.1, 0.4, 0.8, 0.6])
Y = torch.tensor([0, 1, 1, 0])

BAD_INPUTS = [
    # (case id, bad batch, exception, message fragment)
    ("ne-w", {"preds": torch.tensor([0.1, float("nan")]), "target": torch.tensor([0, 1])}, ValueError, "finite"),
    ("ne-w", {"preds": torch.tensor([0.1, float("inf")]), "target": torch.tensor([0, 1])}, ValueError, "finite"),
    (
        "ne-w",
        {"preds": torch.tensor([0.1, 1.2]), "target": torch.tensor([0, 1])},
        ValueError,
        r"probabilities in \[0, 1\]",
    ),
    ("ne-w", {"preds": torch.tensor([-0.1, 0.2]), "target": torch.tensor([0, 1])}, ValueError, "from_logits=True"),
    ("ne-w", {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0, 2])}, ValueError, r"`target`.*\[0, 1\]"),
    (
        "ne-w",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0.0, float("nan")])},
        ValueError,
        r"`target` to hold labels in \[0, 1\] .*got values containing NaN\. If NaN marks rows without a label, give ",
    ),
    (
        "ne-w",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0, 1]), "weights": torch.tensor([1.0, -1.0])},
        ValueError,
        "non-negative",
    ),
    (
        "ne-w",
        {
            "preds": torch.tensor([0.1, 0.2]),
            "target": torch.tensor([0, 1]),
            "weights": torch.tensor([1.0, float("nan")]),
        },
        ValueError,
        r"`weights` to be finite and non-negative, got values containing NaN\.$",
    ),
    (
        "ne-w",
        {
            "preds": torch.tensor([0.1, 0.2]),
            "target": torch.tensor([0, 1]),
            "weights": torch.tensor([1.0, float("inf")]),
        },
        ValueError,
        r"`weights` .*got values containing inf \(in \[1, inf\]\)",
    ),
    ("ne-w", {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0, 1, 1])}, ValueError, "same shape"),
    (
        "ne-w",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0, 1]), "weights": torch.ones(3)},
        ValueError,
        "`weights` of shape",
    ),
    ("ne-w", {"preds": torch.tensor([1, 0]), "target": torch.tensor([0, 1])}, TypeError, "floating point"),
    ("ne-w", {"preds": [0.1, 0.2], "target": torch.tensor([0, 1])}, TypeError, "torch.Tensor"),
    ("ne-w", {"preds": torch.rand(2, 3), "target": torch.ones(2, 3)}, ValueError, "num_tasks=1"),
    ("ne-w", {"preds": torch.rand(2, 3, 1), "target": torch.ones(2, 3, 1)}, ValueError, "shape"),
    ("ne-3task-w", {"preds": torch.rand(2, 5), "target": torch.ones(2, 5)}, ValueError, "num_tasks=3"),
    ("ne-3task-w", {"preds": torch.rand(5), "target": torch.ones(5)}, ValueError, "num_tasks=3"),
    (
        "ne-3task-w",
        {"preds": torch.rand(3, 5), "target": torch.ones(3, 5), "weights": torch.ones(5, 3)},
        ValueError,
        "`weights` of shape",
    ),
    ("ne-logits-w", {"preds": torch.tensor([0.1, float("nan")]), "target": torch.tensor([0, 1])}, ValueError, "finite"),
    (
        "accuracy-w",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0.0, 0.5])},
        ValueError,
        "not all 0 or 1",
    ),
    ("precision-w", {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0, 3])}, ValueError, r"\{0, 1\}"),
    ("mse-w", {"preds": torch.tensor([0.1, float("nan")]), "target": torch.tensor([0.0, 5.0])}, ValueError, "finite"),
    (
        "mse-w",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([0.0, float("inf")])},
        ValueError,
        r"`target` .*got values containing inf \(in \[0, inf\]\)",
    ),
    ("average-w", {"preds": torch.tensor([0.1, float("-inf")])}, ValueError, "finite"),
    ("calibration-w", {"preds": torch.tensor([0.1, 0.2])}, TypeError, "target"),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), BAD_INPUTS)
def test_bad_input_rejected_and_state_untouched(cid, bad, exc, match):
    H.check_rejects(CASES[cid], dict({"weights": None}, **bad), exc, match)


@pytest.mark.parametrize("device_path", [False, True])
def test_nan_labels_and_weights_are_named_as_nan_not_as_a_nan_range(device_path):
    """NaN propagates into the min and max a step reads: the message says NaN, not "values in [nan, nan]"."""
    p, nan = torch.tensor([0.1, 0.5, 0.9, 0.2]), torch.tensor([0.0, float("nan"), 1.0, 0.0])
    with force_device_path(device_path):
        for update in (tmx.CTR().update, tmx.AUC().update, tmx.WeightedMSE().update):
            with pytest.raises(
                ValueError, match=r"^Expected `target` .*got values containing NaN\. If NaN marks rows "
            ):
                update(p, nan)
            with pytest.raises(ValueError, match=r"^Expected `weights` .*got values containing NaN\.$"):
                update(p, torch.tensor([0, 1, 1, 0]), nan)
        with pytest.raises(ValueError, match=r"`target` to hold finite relevance >= 0, got values containing NaN\.$"):
            tmx.NDCG().update(p, nan, indexes=torch.tensor([0, 0, 1, 1]))
        with pytest.raises(ValueError, match=r"`weights` .*got values containing NaN\.$"):
            tmx.MulticlassRecallAtK(k=1, num_classes=2).update(
                torch.stack([p, 1 - p], 1), torch.tensor([0, 1, 1, 0]), nan
            )
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False)
    with pytest.raises(
        ValueError, match=r"^Task 'click', `model_out\['label'\]`: .*got values containing NaN\. If NaN "
    ):
        module.update({"prediction": p, "label": nan})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch():  # pragma: no cover - exercised where a GPU exists
    with pytest.raises(ValueError, match="same device"):
        tmx.LogLoss().update(P.cuda(), Y)


def test_device_mismatch_meta():
    """A tensor on another device is named in the error (the meta device stands in for a GPU)."""
    with pytest.raises(ValueError, match="same device"):
        tmf.log_loss(P, Y.to("meta"))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (tmx.NormalizedEntropy, {"eta": 0.7}, "eta"),
        (tmx.NormalizedEntropy, {"eta": -1e-3}, "eta"),
        (tmx.LogLoss, {"from_logits": "yes"}, "from_logits"),
        (tmx.WeightedPrecision, {"threshold": 1.5}, "threshold"),
        (tmx.WeightedRecall, {"threshold": "0.5"}, "threshold"),
        (tmx.CTR, {"num_tasks": 0}, "num_tasks"),
        (tmx.WeightedMSE, {"num_tasks": 2.0}, "num_tasks"),
        (tmx.WeightedMAE, {"validate_args": 1}, "validate_args"),
    ],
)
def test_bad_constructor_args(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    preds=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=8),
    data=st.data(),
)
def test_hypothesis_probability_inputs(preds, data):
    """Any float vector: accepted iff every value is a probability; a rejection changes nothing."""
    target = data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, -0.5, 2.0]), min_size=len(preds), max_size=len(preds)))
    p, t = torch.tensor(preds), torch.tensor(target)
    metric = tmx.LogLoss()
    metric.update(torch.tensor([0.3, 0.6]), torch.tensor([0.0, 1.0]))
    before = metric.cross_entropy_sum.clone(), metric.weighted_num_samples.clone(), metric._update_count
    valid = bool(((p >= 0) & (p <= 1)).all() and ((t >= 0) & (t <= 1)).all())
    if valid:
        metric.update(p, t)
        assert metric.weighted_num_samples.item() == 2 + len(preds)
    else:
        with pytest.raises(ValueError):
            metric.update(p, t)
        assert torch.equal(metric.cross_entropy_sum, before[0])
        assert torch.equal(metric.weighted_num_samples, before[1])
        assert metric._update_count == before[2]


def test_empty_and_zero_weight_batches_change_nothing():
    metric = tmx.NormalizedEntropy(num_tasks=2)
    p, y = torch.tensor([[0.2, 0.7, 0.4], [0.9, 0.1, 0.5]]), torch.tensor([[0, 1, 1], [1, 0, 0]])
    metric.update(p, y)
    snapshot = {k: v.clone() for k, v in metric.metric_state.items()}
    metric.update(torch.empty(2, 0), torch.empty(2, 0))
    metric.update(torch.rand(2, 4), torch.ones(2, 4), torch.zeros(4))
    for key, value in snapshot.items():
        assert torch.equal(metric.metric_state[key], value), key


UNDEFINED = [
    (tmx.NormalizedEntropy, P, torch.zeros(4), "single class"),
    (tmx.NormalizedEntropy, P, torch.ones(4), "single class"),
    (tmx.LogLoss, P, Y, "no samples seen"),  # with zero weights below
    (tmx.Calibration, P, torch.zeros(4), "no positive label"),
    (tmx.WeightedPrecision, P * 0.1, Y, "no positive prediction"),
    (tmx.WeightedRecall, P, torch.zeros(4, dtype=torch.long), "no positive label"),
]


@pytest.mark.parametrize(("cls", "preds", "target", "match"), UNDEFINED)
def test_undefined_is_nan_with_warning(cls, preds, target, match):
    metric = cls()
    weights = torch.zeros(4) if match == "no samples seen" else None
    metric.update(preds, target, weights)
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert torch.isnan(metric.compute())


def test_undefined_names_the_task_and_keeps_others():
    metric = tmx.NormalizedEntropy(num_tasks=2)
    metric.update(torch.tensor([[0.2, 0.7], [0.3, 0.6]]), torch.tensor([[0, 1], [0, 0]]))
    with pytest.warns(UndefinedMetricWarning, match=r"task\(s\) \[1\]"):
        value = metric.compute()
    assert torch.isnan(value[1]) and torch.isfinite(value[0])


def test_compute_before_update_is_nan():
    with pytest.warns(UndefinedMetricWarning), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("always", UndefinedMetricWarning)
        assert torch.isnan(tmx.CTR().compute())


@pytest.mark.parametrize(
    "family",
    [
        (tmx.NormalizedEntropy, tmx.LogLoss),
        (tmx.Calibration, tmx.CTR),
        (tmx.WeightedAccuracy, tmx.WeightedPrecision, tmx.WeightedRecall),
        (tmx.WeightedMSE, tmx.WeightedRMSE, tmx.WeightedMAE),
    ],
)
def test_family_shares_one_compute_group(family):
    collection = MetricCollection({cls.__name__: cls() for cls in family}, compute_groups=True)
    p = torch.tensor([0.2, 0.7, 0.4, 0.9])
    collection.update(p, torch.tensor([0, 1, 1, 0]))
    assert len(collection.compute_groups) == 1
    values = collection.compute()
    for cls in family:
        alone = cls()
        alone.update(p, torch.tensor([0, 1, 1, 0]))
        torch.testing.assert_close(values[cls.__name__], alone.compute())


@pytest.mark.parametrize("order", ["ctr first", "calibration first"])
def test_a_compute_group_refuses_what_any_member_refuses(order):
    """Only a group's first member updates (and checks) a batch: CTR, sorted first, used to take the
    logits Calibration refuses, and Calibration reported 6.5 instead of an error."""
    names = {"a": tmx.CTR(), "b": tmx.Calibration()}
    if order == "calibration first":
        names = {"a": names["b"], "b": names["a"]}
    collection = MetricCollection(names, compute_groups=True)
    collection.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    assert len(collection.compute_groups) == 1
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*from_logits=True"):
        collection.update(torch.tensor([5.0, 7.0]), torch.tensor([0, 1]))
    values = collection.compute()
    torch.testing.assert_close(values["a" if order == "ctr first" else "b"], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(values["b" if order == "ctr first" else "a"], torch.tensor(1.0, dtype=torch.float64))
    # logits are fine with the option, for both (their states are named apart from the probabilities')
    both = MetricCollection({"a": tmx.CTR(from_logits=True), "b": tmx.Calibration(from_logits=True)})
    both.update(torch.tensor([5.0, -7.0]), torch.tensor([1, 0]))
    torch.testing.assert_close(both.compute()["a"], torch.tensor(0.5, dtype=torch.float64))


def test_ne_and_logloss_not_merged_with_different_eta():
    collection = MetricCollection({"ne": tmx.NormalizedEntropy(eta=0.3), "ll": tmx.LogLoss()}, compute_groups=True)
    collection.update(torch.tensor([0.1, 0.95]), torch.tensor([0, 1]))
    assert len(collection.compute_groups) == 2


def test_settings_keep_compute_groups_apart_even_when_first_batch_agrees():
    """Thresholds 0.5 and 0.3 agree on a batch with no score between them; they must not merge."""
    collection = MetricCollection(
        {
            "p50": tmx.WeightedPrecision(),
            "r50": tmx.WeightedRecall(),
            "p30": tmx.WeightedPrecision(threshold=0.3),
            "ne": tmx.NormalizedEntropy(),
            "ne_eta": tmx.NormalizedEntropy(eta=1e-3),
        },
        compute_groups=True,
    )
    first = (torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([0, 1, 0, 1]))
    second = (torch.tensor([0.4, 0.35, 0.9999, 0.6]), torch.tensor([1, 0, 1, 0]))
    for batch in (first, second):
        collection.update(*batch)
    groups = sorted(sorted(group) for group in collection.compute_groups.values())
    assert groups == [["ne"], ["ne_eta"], ["p30"], ["p50", "r50"]]
    preds, target = torch.cat([first[0], second[0]]).double().numpy(), torch.cat([first[1], second[1]]).numpy()
    values = collection.compute()
    for key, threshold in (("p50", 0.5), ("p30", 0.3)):
        predicted = preds >= threshold
        np.testing.assert_allclose(values[key].item(), (predicted & (target == 1)).sum() / predicted.sum())
    clipped = np.clip(preds, 1e-3, 1 - 1e-3)
    ce = -(target * np.log(clipped) + (1 - target) * np.log(1 - clipped)).mean()
    np.testing.assert_allclose(values["ne_eta"].item(), ce / np.log(2), rtol=1e-12)


def test_from_logits_is_explicit():
    """Logit-looking probabilities are not guessed: without from_logits they are rejected."""
    logits = torch.tensor([-2.0, 3.0])
    with pytest.raises(ValueError, match="from_logits"):
        tmf.log_loss(logits, torch.tensor([0, 1]))
    np.testing.assert_allclose(
        tmf.log_loss(logits, torch.tensor([0, 1]), from_logits=True).item(),
        np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-3.0))]),
        rtol=1e-12,
    )


def test_torchmetrics_kwargs_pass_through():
    metric = tmx.NormalizedEntropy(sync_on_compute=False, compute_on_cpu=True, dist_sync_on_step=False)
    assert metric.sync_on_compute is False and metric.compute_on_cpu is True


def test_plot_works():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    metric = tmx.WeightedAccuracy()
    values = [metric(torch.rand(10), torch.randint(0, 2, (10,))) for _ in range(3)]
    fig, ax = metric.plot(values)
    assert fig is not None and ax is not None
    multi = tmx.LogLoss(num_tasks=2)
    multi.update(torch.rand(2, 10), torch.randint(0, 2, (2, 10)))
    multi.plot()
    # a (T, L) value per task and label: plotted as its entries, one value or over steps
    labels = tmx.MultiLabelPrecision(num_labels=3, num_tasks=2)
    labels.update(torch.tensor([[5, 3, 1], [1, 2, 4]]), torch.tensor([[1, 3, 4], [1, 2, 4]]))
    labels.plot()
    labels.plot([labels.compute(), labels.compute()])
    with pytest.warns(tmx.UndefinedMetricWarning):
        tmx.MultiLabelPrecision(num_labels=3, num_tasks=2).plot()  # nothing seen yet: nan values


@pytest.mark.parametrize("device_path", [False, True])
def test_forward_is_differentiable(device_path):
    """Validation reads the bounds of inputs that require grad too (on a GPU, in one stacked copy)."""
    preds = torch.tensor([0.2, 0.7, 0.4], requires_grad=True)
    with force_device_path(device_path):
        value = tmx.LogLoss()(preds, torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 1.0]))
    value.backward()
    assert preds.grad is not None and torch.isfinite(preds.grad).all()


class _GradModeSeen(tmx.TaskMetric):
    """Records whether gradients were on inside ``update``; raises when told to (after recording)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.seen: list[bool] = []

    def update(self, preds: torch.Tensor, fail: bool = False) -> None:
        self.seen.append(torch.is_grad_enabled())
        if fail:
            raise ValueError("refused")
        self.total += preds.detach().sum()

    def compute(self) -> torch.Tensor:
        return self.total


@pytest.mark.parametrize("outside", [True, False])
def test_update_runs_with_the_grad_mode_of_torchmetrics_wrapper(outside):
    """TorchMetrics' ``update`` wrapper runs ``update`` under ``torch.set_grad_enabled(_enable_grad)`` (off, or
    on inside ``forward``) and puts the caller's mode back afterwards, also when ``update`` raises."""
    metric = _GradModeSeen()
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with torch.set_grad_enabled(outside):
        metric.update(x)
        assert torch.is_grad_enabled() is outside
        with pytest.raises(ValueError, match="refused"):
            metric.update(x, fail=True)
        assert torch.is_grad_enabled() is outside
        metric(x)  # forward: TorchMetrics' batch update with `_enable_grad` on
        assert torch.is_grad_enabled() is outside
    # update and the raising update: gradients off; forward's two updates (full_state_update=False: one) on
    assert metric.seen[:2] == [False, False]
    assert metric.seen[2:] == [True]
    assert metric.update_count == 2 and metric.compute().item() == 6.0


def test_lifetime_huge_counts_stay_exact():
    """float64 states: a billion-sample weight total still counts single samples."""
    metric = tmx.CTR()
    metric.update(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([1e9]))
    metric.update(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0]))
    assert metric.weighted_num_samples.item() == 1e9 + 1
    np.testing.assert_allclose(metric.compute().item(), 1e9 / (1e9 + 1), rtol=1e-15)


def test_validate_args_false_skips_checks():
    metric = tmx.WeightedMSE(validate_args=False)
    metric.update(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))
    np.testing.assert_allclose(metric.compute().item(), 2.0)


UNIT_WEIGHT_METRICS = [
    tmx.NormalizedEntropy,
    tmx.LogLoss,
    tmx.Calibration,
    tmx.CTR,
    tmx.WeightedAccuracy,
    tmx.WeightedPrecision,
    tmx.WeightedRecall,
    tmx.WeightedMSE,
    tmx.WeightedRMSE,
    tmx.WeightedMAE,
    tmx.AUC,
    tmx.AUPRC,
    lambda num_tasks: tmx.AUC(num_tasks=num_tasks, num_bins=100),
]


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("factory", UNIT_WEIGHT_METRICS)
def test_weights_of_exactly_one_give_the_unweighted_states(factory, device_path):
    """Validated weights that are all 1 take the unweighted kernels: the same states, bit for bit."""
    gen = torch.Generator().manual_seed(7)
    p, y = torch.rand(2, 50, generator=gen), (torch.rand(2, 50, generator=gen) < 0.4).long()
    unweighted, per_task, shared, integer = (factory(num_tasks=2) for _ in range(4))
    with force_device_path(device_path):
        unweighted.update(p, y)
        per_task.update(p, y, torch.ones(2, 50, dtype=torch.float64))
        shared.update(p, y, torch.ones(50))
        integer.update(p, y, torch.ones(2, 50, dtype=torch.long))
    for metric in (per_task, shared, integer):
        for key, value in unweighted.metric_state.items():
            other = metric.metric_state[key]
            if isinstance(value, list):
                assert len(value) == len(other) and all(torch.equal(a, b) for a, b in zip(value, other)), key
            else:
                assert torch.equal(value, other), key
    # one weight that is not 1 keeps the weighted path: the same as weighting by hand
    w = torch.ones(2, 50)
    w[1, 3] = 2.0
    weighted, repeated = factory(num_tasks=2), factory(num_tasks=2)
    with force_device_path(device_path):
        weighted.update(p, y, w)
    repeated.update(
        torch.cat([p, p[:, 3:4]], 1), torch.cat([y, y[:, 3:4]], 1), torch.cat([w.clamp(max=1), w[:, 3:4] - 1], 1)
    )
    torch.testing.assert_close(weighted.compute(), repeated.compute(), rtol=1e-12, atol=1e-12, equal_nan=True)


ONE_CLASS_METRICS = [
    (tmx.NormalizedEntropy, tmf.normalized_entropy, {}),
    (tmx.NEPositive, tmf.ne_positive, {}),
    (tmx.RecalibratedNE, tmf.recalibrated_ne, {"recalibration_coefficient": 0.5}),
]


@pytest.mark.parametrize("layout", ["shared", "per_task"])
@pytest.mark.parametrize("label", [0, 1])
def test_one_class_is_undefined_whatever_the_weights(layout, label):
    """Every weighted label on one class: NE is nan (not 1e12 from a rounding residue), CTR exactly 0 or 1.

    Zero-weight rows of the other class are absent rows. Weights are random float64 with many
    digits, so ``sum w`` and ``sum w·y`` taken in different orders would differ in the last bit.
    """
    rng = np.random.default_rng(label + 10 * len(layout))
    for trial in range(20):
        n = int(rng.integers(3, 300))
        p = torch.tensor(rng.uniform(0.05, 0.95, size=(2, n)))
        y = torch.full((2, n), float(label), dtype=torch.float64)
        shape = (n,) if layout == "shared" else (2, n)
        w = torch.tensor(rng.uniform(0, 1, size=shape) * 10.0 ** rng.integers(-3, 4))
        absent = torch.tensor(rng.random(n) < 0.2)  # zero-weight rows holding the other class
        y[:, absent] = 1.0 - label
        w[..., absent] = 0.0
        for cls, fn, kwargs in ONE_CLASS_METRICS:
            metric = cls(num_tasks=2, **kwargs)
            metric.update(p[:, : n // 2], y[:, : n // 2], w[..., : n // 2])
            metric.update(p[:, n // 2 :], y[:, n // 2 :], w[..., n // 2 :])
            with pytest.warns(UndefinedMetricWarning, match="single class"):
                values = [metric.compute(), fn(p, y, w, **kwargs)]
            for value in values:
                assert torch.isnan(value).all(), (cls.__name__, trial, value)
        rate = tmf.ctr(p, y, w)
        assert torch.equal(rate, torch.full((2,), float(label), dtype=torch.float64)), (trial, rate)


def test_one_class_warns():
    p, y = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1, 1, 1])
    w = torch.tensor([0.06, 0.806, 0.547], dtype=torch.float64)
    with pytest.warns(UndefinedMetricWarning, match="single class"):
        assert torch.isnan(tmf.normalized_entropy(p, y, w))
    assert tmf.ctr(p, y, w).item() == 1.0


def test_one_class_is_undefined_in_the_module():
    """The module's shared sums give the same class-exact totals as each metric alone."""
    rng = np.random.default_rng(5)
    n = 257
    batch = {
        "p": torch.tensor(rng.uniform(0.05, 0.95, size=n)),
        "y": torch.ones(n),
        "w": torch.tensor(rng.uniform(0, 3, size=n)),
    }
    module = tmx.RecMetricModule([tmx.RecTaskInfo("t", "y", "p", "w")], {"ne": "ne", "ctr": "ctr"}, throughput=False)
    module.update(batch)
    with pytest.warns(UndefinedMetricWarning):
        values = module.compute()
    ne = next(v for k, v in values.items() if k.startswith("ne/"))
    ctr = next(v for k, v in values.items() if k.startswith("ctr/"))
    assert torch.isnan(ne) and ctr.item() == 1.0


def test_weighted_average_total_ignores_real_targets():
    """WeightedAverage takes any real target: its total is a plain sum w, not sum w·y + sum w·(1 - y)."""
    rng = np.random.default_rng(3)
    p, y, w = rng.normal(size=50), rng.normal(size=50) * 1e20, rng.uniform(0, 2, size=50)
    metric = tmx.WeightedAverage()
    metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(w))
    np.testing.assert_allclose(metric.compute().item(), np.average(p, weights=w), rtol=1e-12)
    np.testing.assert_allclose(
        tmf.weighted_average(torch.tensor(p), torch.tensor(y), torch.tensor(w)).item(),
        np.average(p, weights=w),
        rtol=1e-12,
    )


@pytest.mark.parametrize("order", ["average first", "ctr first"])
def test_weighted_average_never_shares_ctrs_states(order):
    """WeightedAverage's total is a plain sum w, CTR's the class-exact one: merged, CTR of all-positive
    labels came out 0.9999999999999999 (the states are named apart now, so TorchMetrics never merges them)."""
    rng = np.random.default_rng(2)
    w = torch.tensor(rng.random(1000))
    p, y = torch.tensor(rng.random((2, 1000))), torch.ones(2, 1000)
    members = {
        "avg": tmx.WeightedAverage(num_tasks=2),
        "ctr": tmx.CTR(num_tasks=2),
        "cal": tmx.Calibration(num_tasks=2),
    }
    if order == "ctr first":
        members = dict(reversed(members.items()))
    collection = MetricCollection(members, compute_groups=True)
    for _ in range(2):
        collection.update(p, y, w)
    assert sorted(map(sorted, collection.compute_groups.values())) == [["avg"], ["cal", "ctr"]]
    values = collection.compute()
    assert values["ctr"].tolist() == [1.0, 1.0]  # exactly
    expected = [2 * (p[t].numpy() * w.numpy()).sum() / (2 * w.numpy().sum()) for t in range(2)]
    np.testing.assert_allclose(values["avg"].numpy(), expected, rtol=1e-13)
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo(f"t{t}", f"y{t}", f"p{t}", "w") for t in range(2)],
        {"avg": "weighted_average", "ctr": "ctr"},
        throughput=False,
    )
    batch = {"w": w, **{f"p{t}": p[t] for t in range(2)}, **{f"y{t}": y[t] for t in range(2)}}
    for _ in range(2):
        module.update(batch)
    out = module.compute()
    for t in range(2):
        assert next(v for k, v in out.items() if k.startswith("ctr") and k.endswith(f"t{t}")).item() == 1.0
        avg = next(v for k, v in out.items() if k.startswith("avg") and k.endswith(f"t{t}"))
        np.testing.assert_allclose(avg.item(), expected[t], rtol=1e-13)


@pytest.mark.parametrize("metadata", ["version 2", "none"])
def test_weighted_average_checkpoint_with_the_former_total_name_loads(metadata):
    """Checkpoints written while the total was named `weighted_num_samples` (as CTR's) still load, windows too."""
    p, w = torch.tensor([0.2, 0.7, 0.4, 0.9, 0.55, 0.1]), torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 0.25])
    trained = tmx.WeightedAverage()
    trained.persistent(True)
    trained.update(p, weights=w)
    saved = trained.state_dict()
    old = OrderedDict((k.replace("weighted_num_samples_plain", "weighted_num_samples"), v) for k, v in saved.items())
    if metadata == "version 2":
        old._metadata = saved._metadata  # type: ignore[attr-defined]
        assert old._metadata[""]["version"] == 2
    resumed = tmx.WeightedAverage()
    resumed.persistent(True)
    resumed.load_state_dict(old)  # strict
    assert resumed.compute().item() == np.average(p.double().numpy(), weights=w.double().numpy())

    windowed = tmx.Windowed(tmx.WeightedAverage(), window_size=4)
    windowed.update(p[:3], weights=w[:3])
    windowed.update(p[3:], weights=w[3:])
    saved = windowed.state_dict()
    old = OrderedDict((k.replace("_plain", ""), v) for k, v in saved.items())
    ring = old["_extra_state"] = dict(old["_extra_state"])
    for part in ("rings", "back"):
        ring[part] = {n.replace("_plain", ""): v for n, v in ring[part].items()}
    if metadata == "version 2":
        old._metadata = saved._metadata  # type: ignore[attr-defined]
    again = tmx.Windowed(tmx.WeightedAverage(), window_size=4)
    again.load_state_dict(old)
    torch.testing.assert_close(again.compute(), windowed.compute(), rtol=0, atol=0)


def _sigmoid_np(z):
    return 1.0 / (1.0 + np.exp(-z))


def _first_batch_leaves_states_equal(collection, preds, target, first):
    """Feed a first batch that changes no state (``first``: "empty" or "zero weights"), then the data."""
    if first == "empty":
        collection.update(preds[:0], target[:0])
    else:
        collection.update(preds, target, torch.zeros(len(preds)))
    collection.update(preds, target)
    return collection.compute()


@pytest.mark.parametrize("first", ["empty", "zero weights"])
def test_from_logits_keeps_compute_groups_apart(first):
    """Metrics reading the same tensor as logits and as probabilities never share states."""
    z = torch.tensor([-2.0, 0.5, 3.0, -1.0, 0.25, 0.75])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    probs = torch.tensor([0.2, 0.5, 0.9, 0.1, 0.3, 0.6])
    collection = MetricCollection(
        {
            "cal_logits": tmx.Calibration(from_logits=True),
            "mean_logit": tmx.WeightedAverage(),
        },
        compute_groups=True,
    )
    values = _first_batch_leaves_states_equal(collection, z, y, first)
    zn, yn = z.double().numpy(), y.double().numpy()
    np.testing.assert_allclose(values["mean_logit"].item(), zn.mean(), rtol=1e-12)
    np.testing.assert_allclose(values["cal_logits"].item(), _sigmoid_np(zn).sum() / yn.sum(), rtol=1e-12)

    collection = MetricCollection(
        {
            "ne": tmx.NormalizedEntropy(),
            "ne_logits": tmx.NormalizedEntropy(from_logits=True),
            "ll_logits": tmx.LogLoss(from_logits=True),
            "prec": tmx.WeightedPrecision(threshold=0.55),
            "prec_logits": tmx.WeightedPrecision(threshold=0.55, from_logits=True),
            "cal": tmx.Calibration(),
            "cal_logits": tmx.Calibration(from_logits=True),
            "ctr": tmx.CTR(),
            "ne_pos": tmx.NEPositive(),
            "ne_pos_logits": tmx.NEPositive(from_logits=True),
            "recal": tmx.RecalibratedNE(recalibration_coefficient=2.0),
            "recal_logits": tmx.RecalibratedNE(recalibration_coefficient=2.0, from_logits=True),
            "free": tmx.CalibrationFreeNE(),
            "free_logits": tmx.CalibrationFreeNE(from_logits=True),
        },
        compute_groups=True,
    )
    values = _first_batch_leaves_states_equal(collection, probs, y, first)
    groups = sorted(sorted(g) for g in collection.compute_groups.values())
    assert ["cal", "ctr"] in groups and ["ll_logits", "ne_logits"] in groups
    assert all(len(g) == 1 for g in groups if g not in (["cal", "ctr"], ["ll_logits", "ne_logits"])), groups
    p, t = probs.double().numpy(), y.double().numpy()
    q = _sigmoid_np(p)
    base = t.mean()
    base_entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base))

    def ce(prob):
        return -(t * np.log(prob) + (1 - t) * np.log(1 - prob))

    recal = 2.0 * p / (2.0 * p + 1 - p)
    recal_logits = _sigmoid_np(p + np.log(2.0))
    expected = {
        "ne": ce(p).mean() / base_entropy,
        "ne_logits": ce(q).mean() / base_entropy,
        "ll_logits": ce(q).mean(),
        "prec": (t * (p >= 0.55)).sum() / (p >= 0.55).sum(),
        "prec_logits": (t * (q >= 0.55)).sum() / (q >= 0.55).sum(),
        "cal": p.sum() / t.sum(),
        "cal_logits": q.sum() / t.sum(),
        "ctr": base,
        "ne_pos": -(t * np.log(p)).mean() / base_entropy,
        "ne_pos_logits": -(t * np.log(q)).mean() / base_entropy,
        "recal": ce(recal).mean() / base_entropy,
        "recal_logits": ce(recal_logits).mean() / base_entropy,
        "free": ce(p).mean() / ce(np.full_like(p, p.mean())).mean(),
        "free_logits": ce(q).mean() / ce(np.full_like(q, q.mean())).mean(),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-10, err_msg=key)


@pytest.mark.parametrize("first", ["empty", "zero weights"])
def test_settings_seven_digits_apart_keep_compute_groups_apart(first):
    """A setting is named exactly: thresholds or bin ranges that agree to six digits are still two settings."""
    p = torch.tensor([0.30000001, 0.3000002, 0.9, 0.1, 0.5])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    collection = MetricCollection(
        {"a": tmx.WeightedPrecision(threshold=0.3), "b": tmx.WeightedPrecision(threshold=0.3000004)},
        compute_groups=True,
    )
    values = _first_batch_leaves_states_equal(collection, p, y, first)
    assert len(collection.compute_groups) == 2
    pn, yn = p.double().numpy(), y.double().numpy()
    for key, threshold in (("a", 0.3), ("b", 0.3000004)):
        predicted = pn >= threshold
        np.testing.assert_allclose(values[key].item(), (yn * predicted).sum() / predicted.sum(), rtol=1e-12)
    collection = MetricCollection(
        {"a": tmx.AUC(num_bins=8, logit_range=(-3, 3)), "b": tmx.AUC(num_bins=8, logit_range=(-3, 3.000004))},
        compute_groups=True,
    )
    _first_batch_leaves_states_equal(collection, p, y, first)
    assert len(collection.compute_groups) == 2


@pytest.mark.parametrize("first", ["empty", "zero weights"])
def test_bin_settings_keep_compute_groups_apart(first):
    """Binned AUCs over other bin ranges, spaces or logit inputs, and reliability edges, never merge."""
    logits = np.array([-12.0, -3.9, -3.4, -3.1, 4.0, 12.0, -3.6, 5.0])
    y = torch.tensor([0, 0, 1, 0, 1, 1, 1, 0])
    probs = torch.tensor(_sigmoid_np(logits))
    collection = MetricCollection(
        {
            "auc": tmx.AUC(num_bins=4),
            "auprc": tmx.AUPRC(num_bins=4),
            "auc_narrow": tmx.AUC(num_bins=4, logit_range=(-4, -3)),
            "auc_prob": tmx.AUC(num_bins=4, bin_space="probability"),
        },
        compute_groups=True,
    )
    values = _first_batch_leaves_states_equal(collection, probs, y, first)
    groups = sorted(sorted(g) for g in collection.compute_groups.values())
    assert groups == [["auc", "auprc"], ["auc_narrow"], ["auc_prob"]]
    yn = y.numpy()
    # bins by hand: uniform in the logit over (-16, 16) and (-4, -3), uniform in probability
    np.testing.assert_allclose(values["auc"].item(), skm.roc_auc_score(yn, [0, 1, 1, 1, 2, 3, 1, 2]))
    np.testing.assert_allclose(values["auprc"].item(), skm.average_precision_score(yn, [0, 1, 1, 1, 2, 3, 1, 2]))
    np.testing.assert_allclose(values["auc_narrow"].item(), skm.roc_auc_score(yn, [0, 0, 2, 3, 3, 3, 1, 3]))
    np.testing.assert_allclose(
        values["auc_prob"].item(), skm.roc_auc_score(yn, np.minimum(probs.numpy() * 4, 3).astype(int))
    )

    collection = MetricCollection(
        {"auc": tmx.AUC(num_bins=4, from_logits=True), "auc_probs": tmx.AUC(num_bins=4)}, compute_groups=True
    )
    p = torch.tensor([0.05, 0.3, 0.45, 0.6, 0.8, 0.97, 0.51, 0.2])
    values = _first_batch_leaves_states_equal(collection, p, y, first)
    assert len(collection.compute_groups) == 2
    np.testing.assert_allclose(values["auc"].item(), 0.5)  # every logit in [0, 8): one bin
    np.testing.assert_allclose(values["auc_probs"].item(), skm.roc_auc_score(yn, (p.numpy() >= 0.5).astype(int)))

    collection = MetricCollection(
        {
            "low": tmx.Reliability(edges=[0.0, 0.3, 1.0]),
            "high": tmx.Reliability(edges=[0.0, 0.7, 1.0]),
            "logits": tmx.Reliability(num_bins=2, from_logits=True),
            "probs": tmx.Reliability(num_bins=2),
        },
        compute_groups=True,
    )
    _first_batch_leaves_states_equal(collection, p, y, first)  # (its dict values share key names)
    assert len(collection.compute_groups) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # sigmoid of probabilities: no score below 0.5
        values = {key: collection[key].compute() for key in ("low", "high", "logits", "probs")}
    pn, tn = p.double().numpy(), y.double().numpy()
    for key, prob, edge in (("low", pn, 0.3), ("high", pn, 0.7), ("logits", _sigmoid_np(pn), 0.5), ("probs", pn, 0.5)):
        upper = prob >= edge
        rates = [tn[mask].mean() if mask.any() else np.nan for mask in (~upper, upper)]
        np.testing.assert_allclose(values[key]["label_rate"].numpy(), rates, err_msg=key)


@pytest.mark.parametrize(
    ("factory", "renamed"),
    [
        (lambda: tmx.NormalizedEntropy(from_logits=True), {"cross_entropy_sum_logits": "cross_entropy_sum"}),
        (
            lambda: tmx.NormalizedEntropy(from_logits=True, eta=1e-3),
            {"cross_entropy_sum_eta_0p001_logits": "cross_entropy_sum_eta_0p001"},
        ),
        (lambda: tmx.Calibration(from_logits=True), {"weighted_pred_sum_logits": "weighted_pred_sum"}),
        (
            lambda: tmx.WeightedPrecision(threshold=0.3, from_logits=True),
            {f"{n}_at_0p3_logits": f"{n}_at_0p3" for n in ("true_positives", "false_positives")},
        ),
        (lambda: tmx.AUC(num_bins=4, from_logits=True), {"hist_logits": "hist"}),
        (
            lambda: tmx.AUC(num_bins=4, logit_range=(-4, -3), from_logits=True),
            {"hist_logit_m4_m3_logits": "hist_logit_m4_m3"},
        ),
        (
            lambda: tmx.AUPRC(num_bins=4, bin_space="probability", from_logits=True),
            {"hist_probability_logits": "hist_probability"},
        ),
        (lambda: tmx.Reliability(num_bins=2, from_logits=True), {"bin_weight_logits": "bin_weight"}),
        (
            lambda: tmx.Reliability(edges=[0.0, 0.3, 1.0], from_logits=True),
            {f"{n}_logits": n for n in tmx.Reliability(edges=[0.0, 0.3, 1.0])._names},
        ),
    ],
)
def test_checkpoints_from_before_settings_named_the_states_load(factory, renamed):
    """A state renamed after its setting still loads from a checkpoint that holds its former name."""
    p, y = torch.tensor([0.2, 0.7, 0.4, 0.9, 0.55]), torch.tensor([0, 1, 1, 0, 1])
    trained = factory()
    trained.update(p, y)
    assert set(renamed) <= set(trained._defaults)
    trained.persistent(True)
    old = {}
    for key, value in MetricCollection({"m": trained}).state_dict().items():
        for new, former in renamed.items():
            key = key[: -len(new)] + former if key.endswith(new) else key
        old[key] = value
    assert sum(key.endswith(tuple(renamed.values())) for key in old) == len(renamed)
    resumed = MetricCollection({"m": factory()})
    resumed.load_state_dict(old)  # strict: nothing missing, nothing unexpected
    for key, value in trained.metric_state.items():
        assert torch.equal(resumed["m"].metric_state[key], value), key


def test_windowed_checkpoint_from_before_from_logits_named_the_states_loads():
    """A window ring saved with a state's former name resumes under its new name."""
    p, y = torch.tensor([0.2, -0.7, 0.4, 0.9, -0.55, 1.5]), torch.tensor([0, 1, 1, 0, 1, 0])
    trained = tmx.Windowed(tmx.NormalizedEntropy(from_logits=True), window_size=4)
    trained.update(p[:3], y[:3])
    trained.update(p[3:], y[3:])
    saved = trained.state_dict()
    old = {key.replace("cross_entropy_sum_logits", "cross_entropy_sum"): value for key, value in saved.items()}
    ring = old["_extra_state"]
    for part in ("rings", "back"):
        ring[part] = {n.replace("_logits", ""): v for n, v in ring[part].items()}
    resumed = tmx.Windowed(tmx.NormalizedEntropy(from_logits=True), window_size=4)
    resumed.load_state_dict(old)
    expected = trained.compute()
    got = resumed.compute()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def _pointwise_batch(num_tasks, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if num_tasks == 1 else (num_tasks, n)
    preds = torch.rand(shape, generator=g)
    target = (torch.rand(shape, generator=g) < preds).long()
    target[..., :2] = torch.tensor([0, 1])  # both classes in every task
    return {"preds": preds, "target": target}


def _batch_for(metric, num_tasks):
    batch = _pointwise_batch(num_tasks)
    if isinstance(metric, tmx.GroupedAUC):
        batch["groups"] = torch.arange(12) % 3
    if isinstance(metric, tmx.Segmented):
        batch["segments"] = torch.arange(12) % 3
    if isinstance(metric, tmx.MultiLabelPrecision):  # integer-encoded label sets of 3 labels
        batch = {"preds": torch.arange(12) % 8, "target": torch.arange(12).flip(0) % 8}
    return batch


# (saved metric, its number of tasks, the metric loading it, the message)
MISMATCHED_CHECKPOINTS = [
    (
        lambda: tmx.AUC(num_tasks=1),
        1,
        lambda: tmx.AUC(num_tasks=2),
        r"setting mismatch for num_tasks: the checkpoint was saved with num_tasks=1, this AUC has num_tasks=2",
    ),
    (lambda: tmx.AUC(num_tasks=3), 3, lambda: tmx.AUC(), r"num_tasks=3, this AUC has num_tasks=1"),
    (lambda: tmx.GroupedAUC(num_tasks=3), 3, lambda: tmx.GroupedAUC(), r"num_tasks=3, this GroupedAUC has num_tasks=1"),
    (lambda: tmx.XAUC(num_tasks=3), 3, lambda: tmx.XAUC(), r"num_tasks=3, this XAUC has num_tasks=1"),
    (
        lambda: tmx.NormalizedEntropy(num_tasks=3),
        3,
        lambda: tmx.NormalizedEntropy(),
        r"num_tasks=3, this NormalizedEntropy has num_tasks=1",
    ),
    (
        lambda: tmx.AUC(num_bins=16),
        1,
        lambda: tmx.AUC(num_bins=32),
        r"size mismatch for hist: the checkpoint's state has shape \(2, 1, 16\), this AUC \(num_tasks=1\) expects \(2, 1, 32\)",
    ),
    (
        lambda: tmx.Reliability(num_bins=4),
        1,
        lambda: tmx.Reliability(num_bins=5),
        r"size mismatch for bin_weight: .*\(1, 4\).*expects \(1, 5\)",
    ),
    (
        lambda: tmx.MultiLabelPrecision(num_labels=3),
        1,
        lambda: tmx.MultiLabelPrecision(num_labels=4),
        r"size mismatch for true_positives: .*\(1, 3\).*expects \(1, 4\)",
    ),
    (
        lambda: tmx.Segmented(tmx.CTR(), 3),
        1,
        lambda: tmx.Segmented(tmx.CTR(), 4),
        r"size mismatch for weighted_pred_sum: .*\(1, 3\).*expects \(1, 4\)",
    ),
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("saved", "num_tasks", "loading", "match"), MISMATCHED_CHECKPOINTS)
def test_checkpoint_of_other_settings_is_refused(saved, num_tasks, loading, match, strict, tmp_path):
    """Like nn.Module's size mismatch: an error with strict and non-strict loading, naming state and shapes; nothing loads."""
    trained = saved()
    trained.persistent(True)
    trained.update(**_batch_for(trained, num_tasks))
    path = tmp_path / "metric.pt"
    torch.save(trained.state_dict(), path)
    state = torch.load(path, weights_only=True)  # the settings travel in the state_dict's metadata
    metric = loading()
    metric.persistent(True)
    fresh = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in metric.metric_state.items()}
    with pytest.raises(RuntimeError, match=match):
        metric.load_state_dict(state, strict=strict)
    for key, value in metric.metric_state.items():  # the metric's own states are left as they were
        assert type(value) is type(fresh[key]) and (
            torch.equal(value, fresh[key]) if isinstance(value, torch.Tensor) else value == fresh[key]
        ), key


@pytest.mark.parametrize(
    ("saved", "loading"),
    [
        (lambda: tmx.AUC(num_bins=16), lambda: tmx.AUC(num_bins=16, from_logits=True)),
        (lambda: tmx.NormalizedEntropy(), lambda: tmx.NormalizedEntropy(eta=1e-3)),
        (lambda: tmx.Reliability(num_bins=2), lambda: tmx.Reliability(edges=[0.0, 0.3, 1.0])),
    ],
)
def test_current_checkpoint_of_another_setting_is_not_read_as_a_renamed_state(saved, loading):
    """The former-name mapping is for checkpoints written before the names carried settings (version 1) only."""
    batch = _pointwise_batch(1)
    trained = saved()
    trained.persistent(True)
    trained.update(**batch)
    state = trained.state_dict()
    metric = loading()
    metric.persistent(True)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\)"):
        metric.load_state_dict(state)
    with warnings.catch_warnings(record=True) as caught:  # NE holds some of its states only: none is read
        warnings.simplefilter("always")
        metric.load_state_dict(state, strict=False)  # nn.Module's non-strict: unexpected keys are skipped
    assert all("starts afresh" in str(w.message) for w in caught)
    fresh = loading().metric_state
    named = [key for key in metric.metric_state if key not in state]  # the states named after the setting
    assert named and all(torch.equal(metric.metric_state[key], fresh[key]) for key in named)


# (default settings, other settings whose states are named after a setting that changes their values, batch)
_DEFAULT_NAMED = [
    (lambda: tmx.AUC(num_bins=16), lambda: tmx.AUC(num_bins=16, bin_space="probability"), "pointwise"),
    (lambda: tmx.AUC(num_bins=16), lambda: tmx.AUC(num_bins=16, logit_range=(-4, 4)), "pointwise"),
    (
        lambda: tmx.AUPRC(num_bins=16),
        lambda: tmx.AUPRC(num_bins=16, bin_space="probability", from_logits=True),
        "pointwise",
    ),
    (lambda: tmx.Reliability(num_bins=2), lambda: tmx.Reliability(edges=[0.0, 0.3, 1.0]), "pointwise"),
    (lambda: tmx.NDCG(k=2), lambda: tmx.NDCG(k=2, padding_value=-1.0), "ranking"),
]


def _default_named_batch(kind):
    if kind == "ranking":
        return {
            "preds": torch.tensor([[0.9, 0.1, -1.0], [0.2, 0.8, 0.5]]),
            "target": torch.tensor([[0, 1, 1], [1, 0, 1]]),
        }
    return _pointwise_batch(1)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("saved", "loading", "kind"), _DEFAULT_NAMED)
def test_a_version_1_checkpoint_of_the_default_settings_is_not_read_as_another_settings(saved, loading, kind, strict):
    """Names carried settings from 9995e8c (padding: 4c295bc), the checkpoint version became 2 only at 884756f:
    a version-1 `hist` is the default bins' histogram as often as a pre-settings one, and read as
    `hist_probability` it gave wrong values. Such names are read as the default settings' only."""
    trained = saved()
    trained.persistent(True)
    trained.update(**_default_named_batch(kind))
    old = dict(trained.state_dict())  # no metadata: version 1, as every version before 884756f
    metric = loading()
    metric.persistent(True)
    fresh = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in loading().metric_state.items()}
    note = r"in a version-1 checkpoint .* are the states of the default settings.*loads once its keys are renamed"
    if strict:
        with pytest.raises(RuntimeError, match=r"(?s)Unexpected key.*" + note):
            metric.load_state_dict(old)
    else:
        with pytest.warns(UserWarning) as caught:  # this note, and "starts afresh" where some states were held
            result = metric.load_state_dict(old, strict=False)
        assert any(re.search(note, str(w.message), re.S) for w in caught)
        assert result.missing_keys and result.unexpected_keys
        for key, value in metric.metric_state.items():  # nothing of the checkpoint read
            assert torch.equal(value, fresh[key]) if isinstance(value, torch.Tensor) else value == fresh[key], key
    # a checkpoint written before the names carried the settings, with these settings: renamed, it loads
    renamed = {}
    for key, value in old.items():
        renamed[metric._default_settings_names.get(key, key)] = value
    again = loading()
    again.persistent(True)
    again.load_state_dict(renamed)  # strict
    for key, value in trained.metric_state.items():
        loaded = again.metric_state[metric._default_settings_names.get(key, key)]
        assert torch.equal(loaded, value) if isinstance(value, torch.Tensor) else len(loaded) == len(value), key


def _binned_probability_auc(p, y, num_bins):
    """AUC of ``num_bins`` uniform probability bins: positives over negatives in lower bins, half a pair when tied."""
    bins = np.minimum(np.floor(p * num_bins), num_bins - 1).astype(int)
    pos = np.bincount(bins[y == 1], minlength=num_bins).astype(float)
    neg = np.bincount(bins[y == 0], minlength=num_bins).astype(float)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * below).sum() + 0.5 * (pos * neg).sum()) / (pos.sum() * neg.sum())


def test_a_version_1_default_bins_checkpoint_resumes_nothing_in_probability_bins():
    """The hunter's case: AUC(num_bins=64) saved by 66e22c4 (`hist`, version 1) loaded into
    AUC(num_bins=64, bin_space="probability") with all keys matched and gave 0.80 for 0.83."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(8, 200, generator=g)
    y = (torch.rand(8, 200, generator=g) < p).long()
    saved = tmx.AUC(num_bins=64)
    saved.persistent(True)
    for i in range(4):
        saved.update(p[i], y[i])
    state = saved.state_dict()
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]  # as 66e22c4 wrote it
    assert list(state) == ["hist"]
    metric = tmx.AUC(num_bins=64, bin_space="probability")
    metric.persistent(True)
    with pytest.warns(UserWarning, match="version-1 checkpoint"):
        result = metric.load_state_dict(state, strict=False)
    assert result.missing_keys == ["hist_probability"] and result.unexpected_keys == ["hist"]
    for i in range(4, 8):
        metric.update(p[i], y[i])
    expected = _binned_probability_auc(p[4:].numpy().ravel(), y[4:].numpy().ravel(), 64)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def _logit_batches(n_batches=6, n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_batches, n, generator=g)
    y = (torch.rand(n_batches, n, generator=g) < torch.sigmoid(z)).long()
    return z, y


@pytest.mark.parametrize("strict", [True, False])
def test_a_checkpoint_of_some_states_only_starts_the_metric_afresh(strict):
    """Calibration's checkpoint into Calibration(from_logits=True) holds two of its three states: strict=False
    loaded those two next to a zero prediction sum (a ratio of a 3-batch and a 6-batch sum: 0.49 for 0.92)."""
    z, y = _logit_batches()
    saved = tmx.Calibration()
    saved.persistent(True)
    for i in range(3):
        saved.update(torch.sigmoid(z[i]), y[i])
    metric = tmx.Calibration(from_logits=True)
    metric.persistent(True)
    metric.update(z[5], y[5])  # what it held before the load is not kept either: it starts afresh
    note = r"holds \['weighted_label_sum', 'weighted_num_samples'\] of this Calibration.*other settings.*starts afresh"
    if strict:
        with pytest.raises(RuntimeError, match=r"(?s)Missing key\(s\).*" + note):
            metric.load_state_dict(saved.state_dict())
        return
    with pytest.warns(UserWarning, match=note):
        result = metric.load_state_dict(saved.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(metric._defaults)  # every state: none was read
    assert result.unexpected_keys == ["weighted_pred_sum"]
    for i in range(3, 6):
        metric.update(z[i], y[i])
    p = 1.0 / (1.0 + np.exp(-z[3:].double().numpy()))  # afresh: the batches after the load only
    np.testing.assert_allclose(metric.compute().item(), p.sum() / y[3:].numpy().sum(), rtol=1e-6)


@pytest.mark.parametrize("strict", [True, False])
def test_an_older_format_checkpoint_starts_the_metric_afresh(strict):
    """WeightedMSE gained label_sum/label_squared_sum: a checkpoint written before holds the other three only
    (as 6da4f1c wrote it: no metadata); it cannot be resumed, so nothing of it is read."""
    z, y = _logit_batches(seed=4)
    p = torch.sigmoid(z)
    saved = tmx.WeightedMSE()
    saved.persistent(True)
    for i in range(3):
        saved.update(p[i], y[i])
    old = {k: v for k, v in saved.state_dict().items() if k not in ("label_sum", "label_squared_sum")}
    assert sorted(old) == ["sum_absolute_error", "sum_squared_error", "weighted_num_samples"]
    metric = tmx.WeightedMSE()
    metric.persistent(True)
    note = r"WeightedMSE: the checkpoint holds .*states only: an older format of this metric.*starts afresh"
    if strict:
        with pytest.raises(RuntimeError, match=note):
            metric.load_state_dict(old)
        return
    with pytest.warns(UserWarning, match=note):
        result = metric.load_state_dict(old, strict=False)
    assert sorted(result.missing_keys) == sorted(metric._defaults) and not result.unexpected_keys
    for i in range(3, 6):
        metric.update(p[i], y[i])
    expected = np.mean((p[3:].double().numpy() - y[3:].numpy()) ** 2)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def test_merge_state_drops_the_cached_value_and_refuses_other_settings():
    """TorchMetrics kept a compute value cached across merge_state and broadcast (1,) with (3,) states."""
    a, b = tmx.CTR(), tmx.CTR()
    a.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 1]))
    b.update(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0, 0, 1]))
    assert a.compute().item() == 1.0
    a.merge_state(b)
    assert a.compute().item() == 3 / 5  # the mean label of all five rows
    three = tmx.CTR(num_tasks=3)
    three.update(torch.full((3, 2), 0.5), torch.ones(3, 2))
    before = {k: v.clone() for k, v in a.metric_state.items()}
    with pytest.raises(ValueError, match=r"settings \{'num_tasks': 3\} into one with \{'num_tasks': 1\}"):
        a.merge_state(three)
    with pytest.raises(ValueError, match=r"size mismatch for weighted_label_sum: .*\(3,\).*expects \(1,\)"):
        a.merge_state(three.metric_state)
    assert all(torch.equal(v, before[k]) for k, v in a.metric_state.items())


def test_checkpoint_without_the_metrics_states_checks_nothing():
    """States are not persistent by default (TorchMetrics): such a checkpoint loads nothing and is not refused."""
    trained = tmx.AUC(num_tasks=3)
    trained.update(**_pointwise_batch(3))
    state = trained.state_dict()  # metadata only: num_tasks=3
    assert not list(state)
    metric = tmx.AUC(num_tasks=2)
    metric.load_state_dict(state)
    batch = _pointwise_batch(2, seed=4)
    metric.update(**batch)
    expected = [skm.roc_auc_score(batch["target"][t].numpy(), batch["preds"][t].numpy()) for t in range(2)]
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)


def test_checkpoint_of_the_same_settings_loads_and_matches_sklearn(tmp_path):
    """The checks pass what they should: a 3-task exact AUC resumed from disk equals sklearn on all its data."""
    first, second = _pointwise_batch(3, seed=1), _pointwise_batch(3, seed=2)
    trained = tmx.AUC(num_tasks=3)
    trained.persistent(True)
    trained.update(**first)
    torch.save(trained.state_dict(), tmp_path / "auc.pt")
    resumed = tmx.AUC(num_tasks=3)
    resumed.persistent(True)
    resumed.load_state_dict(torch.load(tmp_path / "auc.pt", weights_only=True))
    resumed.update(**second)
    preds = torch.cat([first["preds"], second["preds"]], dim=1).numpy()
    target = torch.cat([first["target"], second["target"]], dim=1).numpy()
    expected = [skm.roc_auc_score(target[t], preds[t]) for t in range(3)]
    np.testing.assert_allclose(resumed.compute().numpy(), expected, rtol=1e-12)


def test_eta_zero_takes_zero_log_zero_as_zero():
    """eta=0: a prediction of exactly 0 or 1 on its own label costs 0 (xlogy), a sure wrong one +inf."""
    from scipy.special import xlogy

    rng = np.random.default_rng(11)
    n = 200
    p = rng.uniform(0, 1, size=n)
    y = rng.uniform(0, 1, size=n)  # soft labels
    y[:40] = rng.integers(0, 2, size=40)
    p[:40] = y[:40]  # sure and right
    p[40:50], y[40:50] = 0.0, 0.0
    w = rng.uniform(0, 2, size=n)
    ce = -(xlogy(y, p) + xlogy(1 - y, 1 - p))
    base = np.average(y, weights=w)
    entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    tp, ty, tw = torch.tensor(p), torch.tensor(y), torch.tensor(w)
    np.testing.assert_allclose(tmf.log_loss(tp, ty, tw, eta=0.0).item(), np.average(ce, weights=w), rtol=1e-12)
    np.testing.assert_allclose(
        tmf.normalized_entropy(tp, ty, tw, eta=0.0).item(), np.average(ce, weights=w) / entropy, rtol=1e-12
    )
    positive = -xlogy(y, p)
    np.testing.assert_allclose(
        tmf.ne_positive(tp, ty, tw, eta=0.0).item(), np.average(positive, weights=w) / entropy, rtol=1e-12
    )
    metric = tmx.LogLoss(eta=0.0)
    metric.update(tp[:100], ty[:100], tw[:100])
    metric.update(tp[100:], ty[100:], tw[100:])
    np.testing.assert_allclose(metric.compute().item(), np.average(ce, weights=w), rtol=1e-12)
    # 0/1 labels only (the one-log form): the same values
    binary = (ty[:40], tp[:40])
    assert tmf.log_loss(binary[1], binary[0], eta=0.0).item() == 0.0
    wrong = tmf.log_loss(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, 1.0]), eta=0.0)
    assert wrong.item() == float("inf")
    # ... unless its weight is 0: a zero-weight sample changes nothing (not inf * 0 = nan)
    sure_wrong = (torch.tensor([0.0, 1.0, 0.3, 0.6], dtype=torch.float64), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    zero_first = torch.tensor([0.0, 0.0, 1.0, 1.0])
    expected_ll = -(np.log(0.3) + np.log(0.4)) / 2
    expected_pos = -np.log(0.3) / 2 / -(0.5 * np.log(0.5) * 2)
    np.testing.assert_allclose(tmf.log_loss(*sure_wrong, zero_first, eta=0.0).item(), expected_ll, rtol=1e-12)
    np.testing.assert_allclose(
        tmf.normalized_entropy(*sure_wrong, zero_first, eta=0.0).item(), expected_ll / np.log(2), rtol=1e-12
    )
    np.testing.assert_allclose(tmf.ne_positive(*sure_wrong, zero_first, eta=0.0).item(), expected_pos, rtol=1e-12)
    # the module's one-log form for labels known to be 0/1
    module = tmx.RecMetricModule(["t"], {"ll": lambda num_tasks: tmx.LogLoss(num_tasks, eta=0.0)}, throughput=False)
    module.update({"prediction": sure_wrong[0], "label": sure_wrong[1].long(), "weight": zero_first})
    np.testing.assert_allclose(module.compute()["ll/t"].item(), expected_ll, rtol=1e-12)
    # eta > 0 keeps the clamp
    np.testing.assert_allclose(
        tmf.log_loss(tp, ty, tw, eta=1e-3).item(),
        np.average(-(xlogy(y, np.clip(p, 1e-3, 1 - 1e-3)) + xlogy(1 - y, 1 - np.clip(p, 1e-3, 1 - 1e-3))), weights=w),
        rtol=1e-12,
    )


# ----------------------------------------------------------------------------- functionals: non-tensor input


def _functional_arguments(fn):
    """A list as the first argument, small valid tensors and numbers for the other required ones."""
    import inspect

    args, kwargs = [], {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = [0.1, 0.7] if i == 0 else 2 if p.name in ("k", "num_classes", "num_labels") else torch.tensor([0, 1])
        if p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return args, kwargs


@pytest.mark.parametrize("name", [n for n in tmf.__all__ if callable(getattr(tmf, n))])
def test_every_functional_names_a_non_tensor_first_argument(name):
    """A Python list is a TypeError naming the argument, never an AttributeError from inside a kernel."""
    fn = getattr(tmf, name)
    args, kwargs = _functional_arguments(fn)
    with pytest.raises(TypeError, match=r"Expected `(preds|values)` to be a torch.Tensor, got list"):
        fn(*args, **kwargs)


def _needs_target(name):
    parameter = inspect.signature(getattr(tmf, name)).parameters.get("target")
    return parameter is not None and parameter.default is inspect.Parameter.empty


# functionals whose class twin is spelled differently (the curves are their AUC class's `curve()`)
_TWIN_ALIASES = {"map_at_k": "MAP", "roc_curve": "AUC", "precision_recall_curve": "AUPRC"}


def _class_twin(name):
    classes = {n.lower(): getattr(tmx, n) for n in tmx.__all__ if isinstance(getattr(tmx, n), type)}
    return getattr(tmx, _TWIN_ALIASES[name]) if name in _TWIN_ALIASES else classes[name.replace("_", "")]


def _missing_target_call(name):
    """Valid inputs for ``name`` with ``target=None``: ``(positional args, keyword-only settings)``."""
    parameters = inspect.signature(getattr(tmf, name)).parameters
    preds = {
        "multiclass_recall_at_k": torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
        "multi_label_precision": torch.tensor([1, 2, 3, 0]),
    }.get(name, torch.tensor([[0.1, 0.4], [0.35, 0.8]]) if "indexes" in parameters else P)
    args, settings = [], {}
    for p in parameters.values():
        if p.default is not inspect.Parameter.empty:
            continue
        if p.kind == p.KEYWORD_ONLY:
            settings[p.name] = 2  # k, num_classes, num_labels
        else:
            args.append({"preds": preds, "target": None}.get(p.name, torch.tensor([0, 0, 1, 1])))  # groups, sessions
    return args, settings


@pytest.mark.parametrize("name", [n for n in tmf.__all__ if _needs_target(n)])
def test_every_functional_that_needs_labels_rejects_a_missing_target_as_its_class_does(name):
    """``target=None`` is a TypeError naming `target` in the functional and in its class, never a crash or a nan."""
    args, settings = _missing_target_call(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent nan with a warning is a failure too
        with pytest.raises(TypeError, match="`target`"):
            getattr(tmf, name)(*args, **settings)
        cls = _class_twin(name)
        accepted = inspect.signature(cls.__init__).parameters
        metric = cls(**{k: v for k, v in settings.items() if k in accepted})
        with pytest.raises(TypeError, match="`target`"):
            metric.update(*args)


def test_functionals_with_an_optional_target_match_their_class():
    """A functional whose ``target`` may be omitted has a class whose ``update`` takes none either."""
    for name in tmf.__all__:
        if "target" in inspect.signature(getattr(tmf, name)).parameters and not _needs_target(name):
            target = inspect.signature(_class_twin(name).update).parameters["target"]
            assert target.default is None, name
            assert float(getattr(tmf, name)(P)) == float(getattr(tmf, name)(P, None)), name


def test_weights_shape_error_names_each_accepted_shape_once():
    """1-D preds accept one weights shape: the message said "(4,) or (4,) (shared by all tasks)"."""
    p, y = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"^Expected `weights` of shape \(4,\), got \(3,\)\.$"):
        tmf.auc(p, y, torch.ones(3))
    with pytest.raises(ValueError, match=r"^Expected `weights` of shape \(4,\), got \(3,\)\.$"):
        tmx.NormalizedEntropy().update(p, y, torch.ones(3))
    two = r"^Expected `weights` of shape \(2, 4\) or \(4,\) \(shared by all tasks\), got \(3,\)\.$"
    with pytest.raises(ValueError, match=two):
        tmf.auc(p.repeat(2, 1), y.repeat(2, 1), torch.ones(3))


# the functionals over pointwise inputs (ranking functionals take (queries, candidates): a (Q, 1) batch is theirs)
_POINTWISE_FUNCTIONALS = [
    n
    for n in tmf.__all__
    if "indexes" not in inspect.signature(getattr(tmf, n)).parameters
    and n not in ("distribution", "multiclass_recall_at_k")
]


@pytest.mark.parametrize("name", _POINTWISE_FUNCTIONALS)
def test_every_pointwise_functional_warns_of_a_samples_first_column(name):
    """An (N, 1) column (a model head's output) is read as N one-sample tasks: `ctr` returned the labels, silently."""
    column = {"preds": P.unsqueeze(1), "values": P.unsqueeze(1), "target": Y.unsqueeze(1).double()}
    if name == "multi_label_precision":
        column = {"preds": torch.tensor([[1], [2], [3], [0]]), "target": torch.tensor([[1], [0], [3], [2]])}
    args, settings = [], {}
    for p in inspect.signature(getattr(tmf, name)).parameters.values():
        if p.default is not inspect.Parameter.empty:
            continue
        if p.kind == p.KEYWORD_ONLY:
            settings[p.name] = 2  # k, num_labels
        else:
            args.append(column.get(p.name, torch.tensor([0])))  # groups, sessions: one id per sample
    hint = r"of shape \(4, 1\) is read tasks-first: 4 tasks of one sample each\. For one task of 4 samples pass"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one-sample tasks: many values are undefined
        with pytest.warns(SamplesFirstWarning, match=hint + r" `(preds|values)\.squeeze\(1\)`.*shape \(4,\)"):
            getattr(tmf, name)(*args, **settings)


def test_functional_column_is_one_sample_tasks_with_a_warning_and_the_hint_gives_one_task():
    """(N, 1) keeps the contract's meaning (N one-sample tasks) and warns; the squeezed column is one task."""
    rng = np.random.default_rng(0)
    p, y, w = rng.random(6), (rng.random(6) < 0.5).astype(float), rng.random(6)
    preds, target, weights = (torch.tensor(a).unsqueeze(1) for a in (p, y, w))
    with pytest.warns(SamplesFirstWarning, match=r"`preds\.squeeze\(1\)`"):
        per_sample = tmf.weighted_mse(preds, target, weights)
    np.testing.assert_allclose(per_sample.numpy(), (p - y) ** 2, rtol=1e-12, atol=0)
    ctr = tmf.ctr(preds.squeeze(1), target.squeeze(1), weights.squeeze(1))
    assert ctr.shape == () and np.isclose(float(ctr), (w * y).sum() / w.sum(), rtol=1e-12, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplesFirstWarning)  # neither the transpose, (1, 1) nor a class warns
        mse = tmf.weighted_mse(preds.T, target.T, weights.T)  # the transpose: one task
        assert mse.shape == (1,) and np.isclose(float(mse[0]), (w * (p - y) ** 2).sum() / w.sum(), rtol=1e-12, atol=0)
        one = tmf.weighted_mse(preds[:1], target[:1])  # (1, 1): one task of one sample
        assert one.shape == (1,) and np.isclose(float(one[0]), (p[0] - y[0]) ** 2, rtol=1e-12, atol=0)
        metric = tmx.WeightedMSE(num_tasks=6)  # a class knows its tasks: (6, 1) is six one-sample tasks
        metric.update(preds, target, weights)
        np.testing.assert_allclose(metric.compute().numpy(), (p - y) ** 2, rtol=1e-12, atol=0)


def test_a_samples_first_batch_for_a_one_task_metric_is_told_to_transpose_first():
    """(N, T) for a one-task metric suggested num_tasks=N, which silently computed N tasks of T samples."""
    rng = np.random.default_rng(0)
    p, y = rng.random((64, 2)), (rng.random((64, 2)) < 0.4).astype(np.int64)
    metric = tmx.AUC()
    metric.update(torch.tensor(p[:8, 0]), torch.tensor(y[:8, 0]))
    before = {k: [t.clone() for t in (v if isinstance(v, list) else [v])] for k, v in metric.metric_state.items()}
    hint = r"got shape \(64, 2\)\. Tasks go first: for 2 tasks of 64 samples pass the transpose, shape \(2, 64\), "
    with pytest.raises(ValueError, match=hint + r"and build the metric with num_tasks=2; for 64 tasks .*num_tasks=64"):
        metric.update(torch.tensor(p), torch.tensor(y))
    assert metric.update_count == 1
    for key, value in metric.metric_state.items():
        for got, old in zip(value if isinstance(value, list) else [value], before[key], strict=True):
            torch.testing.assert_close(got, old, rtol=0, atol=0)
    following = tmx.AUC(num_tasks=2)
    following.update(torch.tensor(p).T, torch.tensor(y).T)
    expected = [skm.roc_auc_score(y[:, task], p[:, task]) for task in range(2)]
    np.testing.assert_allclose(following.compute().numpy(), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"For 3 tasks build the metric with num_tasks=3\.$"):  # tasks first: as before
        tmx.NormalizedEntropy().update(torch.full((3, 8), 0.5), torch.ones(3, 8))


def test_the_two_commonest_task_shape_mistakes_are_told_the_fix_that_works():
    """A one-output head's ``(N, 1)`` column was told to pass the transpose ``(1, N)``, which the ``(N,)``
    target then refused; a multi-task metric fed one task's ``(N,)`` column was told no fix at all. Each
    message now names the fix, the rejected batch changes nothing, and the fix it names gives sklearn's
    values."""
    rng = np.random.default_rng(3)
    p, y = rng.random((2, 32)), (rng.random((2, 32)) < 0.4).astype(np.int64)
    column = tmx.AUC()
    with pytest.raises(
        ValueError,
        match=re.escape("got shape (32, 1). A model head of one output: pass `preds.squeeze(-1)`, shape (32,)"),
    ):
        column.update(torch.tensor(p[0]).unsqueeze(-1), torch.tensor(y[0]))
    assert column.update_count == 0
    column.update(torch.tensor(p[0]).unsqueeze(-1).squeeze(-1), torch.tensor(y[0]))  # the fix, as written
    assert np.isclose(float(column.compute()), skm.roc_auc_score(y[0], p[0]), rtol=1e-12, atol=0)
    stacked = tmx.AUC(num_tasks=2)
    stacked.update(torch.tensor(p), torch.tensor(y))
    before = [t.clone() for t in stacked.metric_state.values() for t in (t if isinstance(t, list) else [t])]
    message = "got shape (32,). Stack the tasks' columns first: `torch.stack([...])` of 2 tensors of shape (32,) gives shape (2, 32)"
    with pytest.raises(ValueError, match=re.escape(message)):
        stacked.update(torch.tensor(p[0]), torch.tensor(y[0]))
    after = [t for t in stacked.metric_state.values() for t in (t if isinstance(t, list) else [t])]
    assert stacked.update_count == 1 and all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    expected = [skm.roc_auc_score(y[t], p[t]) for t in range(2)]
    np.testing.assert_allclose(stacked.compute().numpy(), expected, rtol=1e-12, atol=0)


def test_a_persistent_state_absent_from_the_checkpoint_is_a_missing_key():
    saved = tmx.NormalizedEntropy()
    saved.persistent(True)
    saved.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
    state = saved.state_dict()
    del state["cross_entropy_sum"]
    target = tmx.NormalizedEntropy()
    target.persistent(True)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "cross_entropy_sum"'):
        target.load_state_dict(state)
    # states not persistent (TorchMetrics' default): not expected; those present are not half-read either
    with pytest.warns(UserWarning, match="starts afresh"):
        tmx.NormalizedEntropy().load_state_dict(state)


class _MeanWithScratch(tmx.metrics.base.GuardedMetric):
    """A user metric that saves its sums and declares a bookkeeping state ``persistent=False``."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        self.add_state("calls", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")  # never saved

    def update(self, x):
        self.total += x.double().sum()
        self.count += x.numel()
        self.calls += 1

    def compute(self):
        return self.total / self.count


@pytest.mark.parametrize("windowed", [False, True])
def test_a_state_declared_not_persistent_does_not_make_every_checkpoint_start_afresh(windowed):
    """All of a metric's states or none counts the states a checkpoint holds: the persistent ones. A state
    declared persistent=False is never saved, so its checkpoints always started afresh (the sums lost)."""

    def make():
        metric = _MeanWithScratch()
        return tmx.Windowed(metric, window_size=100) if windowed else metric

    saved = make()
    saved.update(torch.tensor([1.0, 2.0, 3.0]))
    metric = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no starts-afresh note
        result = metric.load_state_dict(saved.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    metric.update(torch.tensor([6.0]))
    value = metric.compute()
    for got in value.values() if windowed else [value]:
        assert got.item() == np.mean([1.0, 2.0, 3.0, 6.0])
    partial_state = {k: v for k, v in saved.state_dict().items() if not k.endswith("count")}
    with pytest.raises(RuntimeError, match="starts afresh"):  # a saved state absent: still all or none
        make().load_state_dict(partial_state)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: tmx.NormalizedEntropy(num_tasks=2),
        lambda: tmx.AUC(num_tasks=2),
        lambda: tmx.AUC(num_tasks=2, num_bins=16),
        lambda: tmx.Windowed(tmx.NormalizedEntropy(num_tasks=2), window_size=5),
    ],
)
def test_loaded_states_are_copies_not_the_checkpoint_tensors(factory):
    """Updating a metric loaded from another's ``state_dict()`` changes neither that metric nor the dict.

    TorchMetrics makes the checkpoint's tensors the states themselves, and ``state_dict()``
    returns the states' storage: the second metric's in-place updates wrote into the first.
    """
    gen = torch.Generator().manual_seed(0)
    p, y = torch.rand(2, 6, generator=gen), (torch.rand(2, 6, generator=gen) < 0.5).float()
    source = factory()
    source.persistent(True)
    source.update(p[:, :3], y[:, :3])
    saved = source.state_dict()
    before = {
        k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in saved.items() if k != "_extra_state"
    }
    loaded = factory()
    loaded.load_state_dict(saved)
    loaded.update(p[:, 3:], y[:, 3:])
    for key, value in before.items():
        for now in (saved[key], source.state_dict()[key]):
            if isinstance(value, list):
                assert len(now) == len(value) and all(torch.equal(a, b) for a, b in zip(now, value)), key
            else:
                assert torch.equal(now, value), key


_NUMPY_SETTINGS = [
    (tmx.WeightedAccuracy, {"threshold": np.float64(0.7)}),
    (tmx.NormalizedEntropy, {"eta": np.float64(1e-6), "num_tasks": np.int64(2)}),
    (tmx.AUC, {"num_bins": np.int64(100), "logit_range": (np.float32(-8), np.int32(8))}),
    (tmx.HindsightTargetPR, {"target_precision": np.float32(0.5), "num_thresholds": np.int64(11)}),
    (tmx.Reliability, {"num_bins": np.int64(4)}),
    (tmx.NDCG, {"k": np.int64(5), "padding_value": np.float32(-1)}),
    (tmx.RankingMetrics, {"ks": [np.int64(3), 5], "metrics": ["ndcg", "recall"]}),
    (tmx.MulticlassRecallAtK, {"k": np.int64(2), "num_classes": np.int64(3)}),
    (tmx.RecalibratedNE, {"recalibration_coefficient": np.float64(2.0)}),
    (tmx.Throughput, {"warmup_steps": np.int64(2), "window_seconds": np.float32(5)}),
    (lambda **kw: tmx.Windowed(tmx.CTR(), **kw), {"window_size": np.int64(5)}),
    (lambda **kw: tmx.Segmented(tmx.CTR(), **kw), {"num_segments": np.int64(3)}),
]


@pytest.mark.parametrize(("factory", "settings"), _NUMPY_SETTINGS)
def test_numpy_scalar_settings_are_accepted_as_python_numbers(factory, settings, tmp_path):
    """A NumPy scalar setting (a config read with NumPy) builds the same metric as the Python number.

    The checkpoint of either loads with ``weights_only=True`` (which refuses NumPy scalars).
    """

    def plain(value):
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value.item() if isinstance(value, np.generic) else value

    metric, expected = factory(**settings), factory(**{k: plain(v) for k, v in settings.items()})
    assert list(metric._defaults) == list(expected._defaults)  # same state names (settings in them)
    for name, value in settings.items():
        got = getattr(metric, name, None)
        if got is not None and not isinstance(got, (list, tuple, torch.Tensor)):
            assert type(got) in (int, float) and got == plain(value), name
    metric.persistent(True)
    torch.save(metric.state_dict(), tmp_path / "m.pt")
    expected.persistent(True)
    expected.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))


@pytest.mark.parametrize(
    ("factory", "settings"),
    [
        (tmx.WeightedAccuracy, {"threshold": True}),
        (tmx.NormalizedEntropy, {"eta": False}),
        (tmx.AUC, {"num_bins": 10.0}),
        (tmx.NDCG, {"k": True}),
        (lambda **kw: tmx.Windowed(tmx.CTR(), **kw), {"window_size": 5.0}),
    ],
)
def test_bool_and_float_settings_where_numbers_or_integers_are_expected_are_rejected(factory, settings):
    with pytest.raises(ValueError, match=f"`{next(iter(settings))}`"):
        factory(**settings)


_W = torch.tensor([1.0, 2.0, 1.0, 0.5])


def _with_k(cls):
    return lambda: cls(k=2)


_IDS = torch.tensor([0, 0, 1, 1])
_POINTWISE = {"preds": P, "target": Y, "weights": _W}
_RANKING = {"preds": P, "target": Y, "indexes": _IDS}
# every public metric class: (factory, a batch as keyword arguments of update); its floating
# predictions (values) are made to require grad
_EVERY_METRIC = {
    **{
        name: (getattr(tmx, name), _POINTWISE)
        for name in (
            "AUC AUPRC CTR Calibration CalibrationFreeNE HindsightTargetPR LabelAverage LogLoss NEPositive "
            "NormalizedEntropy NumPositiveSamples NumServingExamples RecalibratedCalibration RecalibratedNE "
            "RegressionAUC Reliability SumWeights WeightedAccuracy WeightedAverage WeightedMAE WeightedMSE "
            "WeightedNMSE WeightedNRMSE WeightedPrecision WeightedR2 WeightedRMSE WeightedRecall "
            "WeightedSumPredictions XAUC"
        ).split()
    },
    **{name: (getattr(tmx, name), _RANKING) for name in ("MAP", "MRR", "NDCG", "RPrecision")},
    **{name: (_with_k(getattr(tmx, name)), _RANKING) for name in ("F1AtK", "HitRate", "PrecisionAtK", "RecallAtK")},
    "RankingMetrics": (lambda: tmx.RankingMetrics(ks=(1, 2)), _RANKING),
    "GroupedAUC": (tmx.GroupedAUC, {**_POINTWISE, "groups": _IDS}),
    "GroupedAUPRC": (tmx.GroupedAUPRC, {**_POINTWISE, "groups": _IDS}),
    "SessionPrecisionAtK": (lambda: tmx.SessionPrecisionAtK(k=1), {"preds": P, "target": Y, "sessions": _IDS}),
    "SessionRecallAtK": (lambda: tmx.SessionRecallAtK(k=1), {"preds": P, "target": Y, "sessions": _IDS}),
    "SessionPairwiseAUC": (lambda: tmx.SessionPairwiseAUC(), {"preds": P, "target": Y, "sessions": _IDS}),
    "NumMissingLabels": (tmx.NumMissingLabels, {"preds": P, "target": torch.tensor([0.0, float("nan"), 1.0, 0.0])}),
    "TensorWeightedAverage": (tmx.TensorWeightedAverage, {"values": P, "weights": _W}),
    "MultiLabelPrecision": (lambda: tmx.MultiLabelPrecision(num_labels=2), {"preds": _IDS, "target": _IDS}),
    "MulticlassRecallAtK": (
        lambda: tmx.MulticlassRecallAtK(k=1, num_classes=2),
        {"preds": torch.stack([P, 1 - P], 1), "target": Y},
    ),
    "TowerQPS": (lambda: tmx.TowerQPS(warmup_steps=0), {"preds": P}),
    "Throughput": (lambda: tmx.Throughput(warmup_steps=0), {"batch": P}),
    "Segmented(NE)": (lambda: tmx.Segmented(tmx.NormalizedEntropy(), 2), {**_POINTWISE, "segments": _IDS}),
    "Segmented(CTR)": (lambda: tmx.Segmented(tmx.CTR(), 2), {**_POINTWISE, "segments": _IDS}),
    "Windowed(NE)": (lambda: tmx.Windowed(tmx.NormalizedEntropy(), 3), _POINTWISE),
    "Windowed(AUC)": (lambda: tmx.Windowed(tmx.AUC(), 3), _POINTWISE),
    **{
        name: (getattr(tmx.aggregation, name), {"value": P, **({"weight": _W} if name == "Mean" else {})})
        for name in ("Max", "Mean", "Min", "Sum", "Distribution")
    },
    "CategoricalCount": (tmx.aggregation.CategoricalCount, {"categories": ["a", "b", "a"]}),
}


def test_every_public_metric_class_is_in_the_differentiability_table():
    from torchmetrics import Metric

    public = {
        name
        for module in (tmx, tmx.aggregation)
        for name in module.__all__
        if isinstance(getattr(module, name), type)
        and issubclass(getattr(module, name), Metric)
        and name not in ("AggregationMetric", "GuardedMetric", "TaskMetric")  # bases
    }
    listed = {name.split("(")[0] for name in _EVERY_METRIC}
    assert public == listed


@pytest.mark.parametrize("name", sorted(_EVERY_METRIC))
def test_is_differentiable_says_whether_forward_carries_gradients(name):
    """TorchMetrics' rule: ``forward``'s value requires grad exactly when ``is_differentiable`` (preds requiring grad).

    For a dict value, some entry carries gradients (Reliability's label rates and weights do not
    depend on the predictions); a differentiable value backpropagates to the inputs.
    """
    factory, batch = _EVERY_METRIC[name]
    batch = {
        k: v.double().requires_grad_()
        if k in ("preds", "values", "value") and torch.is_tensor(v) and v.is_floating_point()
        else v
        for k, v in batch.items()
    }
    metric = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metric(**batch)
    leaves = []
    pending = [value]
    while pending:  # dicts (Windowed's lifetime/window, Reliability's entries) hold tensors
        item = pending.pop()
        pending.extend(item.values()) if isinstance(item, dict) else leaves.append(item)
    carries = any(torch.is_tensor(v) and v.requires_grad for v in leaves)
    assert carries == bool(metric.is_differentiable), f"is_differentiable={metric.is_differentiable}"
    if carries:
        sum(v[torch.isfinite(v)].sum() for v in leaves if torch.is_tensor(v) and v.requires_grad).backward()
        assert any(v.grad is not None for v in batch.values() if torch.is_tensor(v) and v.requires_grad)


@pytest.mark.parametrize("mode", ["update", "forward"])
@pytest.mark.parametrize("name", sorted(_EVERY_METRIC))
def test_states_keep_no_autograd_graph(name, mode):
    """docs/policies.md: inputs may require grad, states never keep an autograd graph. ``forward`` runs
    ``update`` with grad enabled: the exact AUC/AUPRC, grouped and pairwise states kept each batch's
    graph (``CloneBackward``) until ``reset()``, the model's activations with it, step after step."""
    factory, batch = _EVERY_METRIC[name]
    batch = {
        k: v.double().requires_grad_() if torch.is_tensor(v) and v.is_floating_point() and k != "target" else v
        for k, v in batch.items()
    }
    metric = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric(**batch) if mode == "forward" else metric.update(**batch)
    kept = [
        f"{child}.{state}"
        for child, module in metric.named_modules()
        if isinstance(module, Metric)
        for state, value in module.metric_state.items()
        for tensor in (value if isinstance(value, list) else [value])
        if torch.is_tensor(tensor) and (tensor.requires_grad or tensor.grad_fn is not None)
    ]
    assert not kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_tasks", [1, 2])
@pytest.mark.parametrize("mode", ["update", "forward"])
@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
def test_exact_curve_labels_requiring_grad_keep_no_graph(cls, mode, num_tasks, dtype):
    """Unweighted exact AUC/AUPRC given float labels that require grad: the labels' signs kept the batch's
    graph (one task, labels of the state's float32), or ``forward`` raised (several tasks, or labels of
    another dtype: the signs are written with an ``out=`` kernel, which refuses such inputs)."""
    preds = torch.tensor([[0.1, 0.8, 0.4, 0.35, 0.9, 0.2], [0.7, 0.3, 0.6, 0.1, 0.5, 0.95]])[:num_tasks]
    target = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]])[:num_tasks]
    p, y = preds.clone().requires_grad_(), target.to(dtype, copy=True).requires_grad_()
    if num_tasks == 1:
        p, y = p[0], y[0]
    metric = cls(num_tasks=num_tasks)
    metric(p, y) if mode == "forward" else metric.update(p, y)
    kept = [c for c in metric.metric_state["signed_weights"] + metric.metric_state["preds"] if c.grad_fn is not None]
    assert not kept
    score = skm.roc_auc_score if cls is tmx.AUC else skm.average_precision_score
    expected = [score(target[t].numpy(), preds[t].numpy()) for t in range(num_tasks)]
    np.testing.assert_allclose(metric.compute().reshape(-1).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(_EVERY_METRIC))
def test_value_ndim_counts_the_dimensions_of_each_tasks_value(name):
    """``TaskMetric.value_ndim``: 0 for one number per task (what RecMetricModule reports), 1 for curves."""
    from torchmetrics_ext.metrics.base import TaskMetric

    factory, batch = _EVERY_METRIC[name]
    metric = factory()
    if not isinstance(metric, TaskMetric):
        return  # Windowed, Throughput: not task metrics
    metric.update(**batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metric.compute()
    for entry in value.values() if isinstance(value, dict) else [value]:
        assert entry.ndim == metric.value_ndim  # one task: no task dimension


def _multi_task(factory):
    """``factory`` with ``num_tasks=2`` where it takes it (a class), else ``None``."""
    if not isinstance(factory, type) or "num_tasks" not in inspect.signature(factory).parameters:
        return None
    return lambda: factory(num_tasks=2)


_BUILT = {
    **{name: factory for name, (factory, _) in _EVERY_METRIC.items()},
    **{f"{name}[2 tasks]": _multi_task(f) for name, (f, _) in _EVERY_METRIC.items() if _multi_task(f)},
    "Windowed(AUC)[2 tasks, binned]": lambda: tmx.Windowed(tmx.AUC(num_tasks=2, num_bins=8), 3),
}


def _states(metric):
    """``{(module, state): (shape, dtype)}`` of every Metric module's states (a wrapper's children too)."""
    from torchmetrics import Metric

    out = {}
    for prefix, module in metric.named_modules():
        if isinstance(module, Metric):
            for name in module._defaults:
                value = getattr(module, name)
                out[prefix, name] = (tuple(value.shape), value.dtype) if torch.is_tensor(value) else type(value)
    return out


@pytest.mark.parametrize("name", sorted(_BUILT))
def test_every_metric_builds_on_the_meta_device(name):
    """Under ``with torch.device("meta")`` (a model built before its weights) every metric builds, with its states.

    Multi-task metrics and Windowed read their default states at construction (whether a default
    repeats one value, whether a sum starts at zero) and Reliability its uniform edges (built on
    the meta device): they raised, where TorchMetrics' metrics build.
    """
    reference = _BUILT[name]()
    with torch.device("meta"):
        metric = _BUILT[name]()
    assert _states(metric) == _states(reference)
    for module in metric.modules():
        for value in getattr(module, "metric_state", {}).values():
            assert not torch.is_tensor(value) or value.device.type == "meta"


_TWO_TASKS = {"preds": torch.stack([P, P.flip(0)]), "target": torch.stack([Y, 1 - Y]), "weights": _W.expand(2, -1)}


@pytest.mark.parametrize("name", [*sorted(_EVERY_METRIC), "NormalizedEntropy[2 tasks]", "Windowed(AUC)[2 tasks]"])
def test_a_metric_built_under_inference_mode_updates_outside_it(name):
    """Built under ``torch.inference_mode()`` (a validation hook, an evaluation script), updated after it.

    Its states were inference tensors, so the first in-place ``update`` outside inference mode
    raised (TorchMetrics' own ``SumMetric``/``MeanMetric`` still do). The values are those of the
    same metric built outside inference mode.
    """
    factory, batch = _EVERY_METRIC.get(name, (None, _TWO_TASKS))
    if factory is None:
        factory = {
            "NormalizedEntropy[2 tasks]": lambda: tmx.NormalizedEntropy(num_tasks=2),
            "Windowed(AUC)[2 tasks]": lambda: tmx.Windowed(tmx.AUC(num_tasks=2, num_bins=8), 3),
        }[name]
    reference = factory()
    with torch.inference_mode():
        metric = factory()
    values = []
    for m in (metric, reference):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.update(**batch)
            m(**batch)  # forward too
            values.append(m.compute())
    if name not in _TIMED:
        flat = [v if isinstance(v, dict) else {"": v} for v in values]
        assert flat[0].keys() == flat[1].keys()
        for key in flat[0]:
            torch.testing.assert_close(flat[0][key], flat[1][key], equal_nan=True, msg=key)


_BEFORE_UPDATE = "was called before the ``update`` method"


@pytest.mark.parametrize("name", sorted(_EVERY_METRIC))
def test_a_resumed_metric_computes_without_the_compute_before_update_warning(name):
    """A metric loaded from a checkpoint (or merged into) holds data: its first ``compute()`` gave TorchMetrics'
    "compute before update" warning, which is for a forgotten ``update``. The resumed value is the saved metric's.
    After a ``reset`` it is not given either: the package answers "nothing seen" itself (docs/policies.md), with
    ``UndefinedMetricWarning`` where the value is undefined (tests/test_nothing_seen.py)."""
    factory, batch = _EVERY_METRIC[name]
    saved = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved.update(**batch)
        expected = saved.compute()
    saved.persistent(True)
    for how in ("load", "merge"):
        resumed = factory()
        resumed.persistent(True)
        if how == "load":
            resumed.load_state_dict(copy.deepcopy(saved.state_dict()))
        elif isinstance(resumed, tmx.Windowed):  # its merge takes the lifetime only (an empty window computes nan)
            continue
        elif hasattr(resumed, "merge_state"):
            try:
                resumed.merge_state(saved)
            except (TypeError, ValueError, NotImplementedError):  # a metric that cannot merge says so
                continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = resumed.compute()
        assert not [w for w in caught if _BEFORE_UPDATE in str(w.message)], how
        if name not in _TIMED:
            flat = [v if isinstance(v, dict) else {"": v} for v in (value, expected)]
            for key in flat[1]:
                torch.testing.assert_close(flat[0][key], flat[1][key], equal_nan=True, msg=f"{how} {key}")
        resumed.reset()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed.compute()
        assert not [w for w in caught if _BEFORE_UPDATE in str(w.message)], how


@pytest.mark.parametrize(
    ("factory", "reference"),
    [
        (tmx.XAUC, None),
        (tmx.RegressionAUC, None),
        (tmx.AUC, "auc"),
    ],
)
def test_updates_after_set_dtype_store_their_chunks_in_the_new_dtype(factory, reference):
    """policies.md: after ``set_dtype`` later updates go into the states in the new dtype (ties stay ties)."""
    p, y = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    if reference == "auc":
        y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    cast = factory()
    cast.update(p, y)
    cast.set_dtype(torch.float16)
    cast.update(p, y)
    for name in cast._list_state_dtypes:
        chunks = getattr(cast, name)
        assert {c.dtype for c in chunks if c.is_floating_point()} <= {torch.float16}, name
    whole = factory()  # the same 8 rows, all stored in float16
    whole.set_dtype(torch.float16)
    whole.update(torch.cat([p, p]), torch.cat([y, y]))
    assert cast.compute().item() == whole.compute().item()


def _flat_values(value):
    """A value's numbers in a fixed order (dicts of tensors included), for comparing two runs."""
    if isinstance(value, dict):
        return [number for key in sorted(value) for number in _flat_values(value[key])]
    return torch.as_tensor(value).detach().double().reshape(-1).tolist()


_INFERENCE_EXTRA = {
    "Windowed(AUC(num_bins))": (lambda: tmx.Windowed(tmx.AUC(num_bins=8), 3), _POINTWISE),
    "Windowed(NDCG)": (lambda: tmx.Windowed(tmx.NDCG(), 3), _RANKING),
}
_TIMED = ("Throughput", "TowerQPS")  # values depend on the clock: checked to run, not compared


@pytest.mark.parametrize("step", ["reset", "compute-reset", "forward", "move", "merge", "load"])
@pytest.mark.parametrize("name", sorted({**_EVERY_METRIC, **_INFERENCE_EXTRA}))
def test_reset_or_forward_under_inference_mode_leaves_ordinary_states(name, step):
    """A ``reset()`` (after a ``compute()``), a ``forward``, a device move (``_apply``: here a copy of every
    tensor, as a move to an accelerator makes), a ``merge_state`` or a ``load_state_dict`` under
    ``torch.inference_mode()`` (Lightning's validation and sanity-check hooks) leaves ordinary tensors: the
    next ``update`` outside inference mode raised "Inplace update to inference tensor outside InferenceMode".
    Values equal a run without inference mode."""
    from torchmetrics import Metric

    factory, batch = {**_EVERY_METRIC, **_INFERENCE_EXTRA}[name]
    metric, reference, other = factory(), factory(), factory()
    for m in (metric, other):
        m.persistent(True)  # a load reads the states
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(**batch)
        other.update(**batch)
        with torch.inference_mode():
            if step == "forward":
                metric(**batch)
            elif step == "move":
                metric._apply(torch.clone)
            elif step == "merge":
                metric.merge_state(other)
            elif step == "load":
                metric.load_state_dict(other.state_dict())
            else:
                if step == "compute-reset":
                    metric.compute()
                metric.reset()
        metric.update(**batch)
        for _ in range({"forward": 3, "merge": 3, "move": 2, "load": 2}.get(step, 1)):
            reference.update(**batch)
        states = [value for m in metric.modules() if isinstance(m, Metric) for value in m.metric_state.values()]
        assert not any(torch.is_tensor(value) and value.is_inference() for value in states)
        value, expected = metric.compute(), reference.compute()
    if name not in _TIMED:
        # forward adds the batch's states to the others': the same sums, up to the order of additions
        np.testing.assert_allclose(_flat_values(value), _flat_values(expected), rtol=1e-12)


# ----------------------------------------------------------------------------- the update wrapper and its cost


def _grad_probes():
    """A metric of the package and a plain TorchMetrics one that record the grad mode each ``update`` runs in.

    ``update`` raises the ``RuntimeError`` TorchMetrics rephrases when asked to (``fail``).
    """
    from torchmetrics import Metric

    from torchmetrics_ext.metrics.base import TaskMetric

    def body(metric, x, fail=False):
        metric.modes.append(torch.is_grad_enabled())
        if fail:
            raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices")
        metric.total += x.detach().double().sum()

    def built_on(base):
        class Counted(base):
            full_state_update = False

            def __init__(self):
                super().__init__()
                self.modes = []
                self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

            def update(self, x, fail=False):
                body(self, x, fail)

            def compute(self):
                return self.total

        return Counted()

    return built_on(TaskMetric), built_on(Metric)


def test_update_wrapper_keeps_torchmetrics_bookkeeping_and_grad_modes():
    """The package writes TorchMetrics' update wrapper out (plain attribute writes, the grad-mode switch only
    when it changes the mode): ``update`` runs under the grad mode TorchMetrics' own wrapper gives it (off in
    ``update`` whatever the caller's mode, on for ``forward``'s batch value), counts the call and drops the
    cached value as TorchMetrics does, and rephrases a device mismatch in TorchMetrics' words. Reference: a
    plain ``torchmetrics.Metric`` with the same ``update``."""
    ours, theirs = _grad_probes()
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    for metric in (ours, theirs):
        with torch.enable_grad():
            metric.update(x)
        with torch.no_grad():
            metric.update(x)
        metric(x)  # forward: the batch's update runs with gradients enabled
        metric.compute()
        metric.update(x)
    assert ours.modes == theirs.modes
    assert ours.update_called and ours._update_count == theirs._update_count
    assert ours._computed is None and theirs._computed is None
    assert torch.equal(ours.compute(), theirs.compute())
    errors = []
    for metric in (ours, theirs):
        with pytest.raises(RuntimeError) as caught:
            metric.update(x, fail=True)
        errors.append(str(caught.value).replace(type(metric).__name__, "M"))
        assert isinstance(caught.value.__cause__, RuntimeError)
    assert errors[0] == errors[1] and "Encountered different devices" in errors[0]
    assert ours._update_count == theirs._update_count - 1  # a rejected call is not counted here


def test_update_wrapper_moves_list_states_with_compute_on_cpu():
    """``compute_on_cpu=True``: list states are moved to the CPU after each update, as TorchMetrics' wrapper does."""
    metric = tmx.AUC(compute_on_cpu=True)
    moved = []
    metric._move_list_states_to_cpu = lambda: moved.append(True)  # the hook TorchMetrics' wrapper calls
    metric.update(P, Y)
    assert moved == [True]


# (metric, whether update takes weights, at most this many ATen operations and Python function calls per
# validated update, host reads). The error metrics check an unweighted batch's values from two of its sums
# (no bounds: `_PointwiseMetric._finite_sums`), each read directly (two reads at ~0.15 µs on the CPU, where
# adding them first was an operation of ~0.9 µs); they read the four bounds before (20 operations), and
# take their predictions uncast (`p - y` promotes them to float64: 15 operations with the cast). Up to 16
# values a 1-D input's bounds are one `tolist` (no scalar reads; `aminmax` and two reads before: CTR and
# Calibration 22 operations and 6 reads, AUC 12 and 6, its float labels' fractional parts still reduced).
_FIXED_COST = [
    ("WeightedMSE", tmx.WeightedMSE, False, 14, 50, 2),
    ("WeightedMAE", tmx.WeightedMAE, False, 14, 50, 2),
    ("CTR", tmx.CTR, True, 13, 60, 0),
    ("Calibration", tmx.Calibration, True, 13, 60, 0),
    ("AUC", tmx.AUC, False, 18, 38, 4),
    ("Windowed(AUC)", lambda: tmx.Windowed(tmx.AUC(), 1000), False, 18, 68, 4),
]


@pytest.mark.parametrize(
    ("name", "factory", "weighted", "aten_budget", "python_budget", "reads"),
    _FIXED_COST,
    ids=[c[0] for c in _FIXED_COST],
)
def test_update_fixed_cost_in_operations_and_calls(name, factory, weighted, aten_budget, python_budget, reads):
    """A small validated batch's ``update`` runs few ATen operations and Python calls: its cost is all fixed.

    Each ATen operation costs 1-3 µs whatever the batch, each Python call a fraction of one: no ``detach``
    of inputs that do not require grad, one selection of a shared weight row for all weighted sums, and on
    the CPU one read per bound (``(min, max)`` of each input, and of the labels' fractional parts for
    binary labels); TorchMetrics' update wrapper written out, no per-sample-kernel closures nested three
    deep. The budgets are counts, not times (the test cannot be flaky); they were 20-27 operations and
    53-92 Python calls per update before the fixed cost was cut. The sums stay float64 (the value tests).
    """
    import sys

    g = torch.Generator().manual_seed(0)
    p = torch.rand(8, generator=g)
    batch = (p, (torch.rand(8, generator=g) < p).float(), torch.rand(8, generator=g) + 0.1)
    metric = factory()
    args = batch if weighted else batch[:2]
    metric.update(*args)
    with H.AtenOps() as counted:
        metric.update(*args)
    assert "aten.detach" not in counted.ops
    assert counted.ops.get("aten.select", 0) <= 1
    assert counted.ops.get("aten._local_scalar_dense", 0) == reads
    assert sum(counted.ops.values()) <= aten_budget, counted.ops
    calls = []
    gc.collect()  # no garbage collection inside the count (its callbacks would count as calls)
    gc.disable()
    sys.setprofile(lambda frame, event, arg: calls.append(frame.f_code.co_name) if event == "call" else None)
    try:
        metric.update(*args)
    finally:
        sys.setprofile(None)
        gc.enable()
    assert len(calls) <= python_budget, calls


def _merge_kind_names(metric) -> list[str]:
    """The class names a refused merge must name for ``metric``: its class, and a wrapper's wrapped class."""
    inner = getattr(metric, "metric", None) or getattr(metric, "lifetime", None)
    return [type(metric).__name__] + ([type(inner).__name__] if inner is not None else [])


def _every_metric_updated(persistent: bool = False) -> tuple[list[str], dict[str, Metric]]:
    """Each public metric of ``_EVERY_METRIC`` (sorted names) built and updated with its batch (warnings hidden)."""
    names = sorted(_EVERY_METRIC)
    built = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            factory, batch = _EVERY_METRIC[name]
            built[name] = factory()
            if persistent:
                built[name].persistent(True)
            built[name].update(**batch)
    return names, built


def test_merge_state_refuses_every_metric_of_another_class_and_changes_nothing():
    """Every ordered pair of different public metrics (or wrappers over different metrics) is refused.

    ``AUC().merge_state(AUPRC())`` was accepted (their states share names: the scored samples), and so
    were 56 pairs more (NE and LogLoss, CTR and Calibration, the regression errors among themselves,
    XAUC and RegressionAUC, a RecalibratedNE's recalibrated sums into a NormalizedEntropy,
    Segmented(NE) and Segmented(LogLoss)...): TorchMetrics refuses another class, ours read the merged
    metric as a dict of states first. The error names both metrics; the receiver's states are unchanged.
    """
    names, built = _every_metric_updated()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, theirs in ((a, b) for a in names for b in names if a != b):
            receiver, incoming = built[ours], built[theirs]
            snapshot = H._state_snapshot(receiver)
            with pytest.raises((ValueError, TypeError)) as refused:
                receiver.merge_state(incoming)
            message = str(refused.value)
            same_wrapper = type(receiver) is type(incoming)  # then named by the metrics they wrap
            pair = (receiver, incoming)
            wanted = (
                {n for m in pair for n in _merge_kind_names(m)} if same_wrapper else {type(m).__name__ for m in pair}
            )
            for named in wanted:
                assert named in message, (ours, theirs, message)
            H.assert_same_state(receiver, snapshot)


@pytest.mark.parametrize(
    ("ours", "theirs", "match"),
    [
        (
            tmx.AUC,
            tmx.AUPRC,
            r"Cannot merge an AUPRC into an AUC: merge_state takes an AUC \(or a dict of its states\)",
        ),
        (tmx.NormalizedEntropy, tmx.RecalibratedNE, r"Cannot merge a RecalibratedNE into a NormalizedEntropy"),
        (tmx.WeightedNMSE, tmx.WeightedNRMSE, r"Cannot merge a WeightedNRMSE into a WeightedNMSE"),  # a subclass
        (
            lambda: tmx.Segmented(tmx.NormalizedEntropy(), 2),
            lambda: tmx.Segmented(tmx.LogLoss(), 2),
            r"Cannot merge a Segmented\(LogLoss\) into a Segmented\(NormalizedEntropy\)",
        ),
    ],
)
def test_merge_state_of_another_class_names_both(ours, theirs, match):
    receiver, incoming = ours(), theirs()
    segmented = isinstance(receiver, tmx.Segmented)
    batch = {**_POINTWISE, "segments": _IDS} if segmented else _POINTWISE
    receiver.update(**batch)
    incoming.update(**batch)
    snapshot = H._state_snapshot(receiver)
    with pytest.raises(ValueError, match=match):
        receiver.merge_state(incoming)
    H.assert_same_state(receiver, snapshot)


def test_merge_state_of_a_dict_and_of_options_read_only_at_compute_still_merges():
    """A dict of states (TorchMetrics' other form) merges as before; so does a metric whose other options
    change only what ``compute`` reports from the same states (LogLoss's ``unit``): sklearn's log loss of
    both batches, in bits."""
    a_p, a_y = torch.tensor([0.1, 0.4, 0.8]), torch.tensor([0, 1, 1])
    b_p, b_y = torch.tensor([0.3, 0.9]), torch.tensor([1, 0])
    expected = skm.log_loss(np.r_[a_y, b_y], np.r_[a_p, b_p].astype(np.float64)) / np.log(2)
    for form in ("dict", "metric"):
        bits, nats = tmx.LogLoss(unit="bits"), tmx.LogLoss()
        bits.update(a_p, a_y)
        nats.update(b_p, b_y)
        bits.merge_state(nats.metric_state if form == "dict" else nats)
        np.testing.assert_allclose(bits.compute().item(), expected, rtol=1e-6)


def test_load_state_dict_refuses_another_metrics_checkpoint_and_changes_nothing():
    """A checkpoint records the metric that saved it: another class's states of the same names (an AUC's
    samples read by an AUPRC, a RecalibratedNE's recalibrated sums by a NormalizedEntropy, a
    Segmented(NE)'s by a Segmented(LogLoss)) were loaded without a word. Every such ordered pair of
    public metrics is refused with strict=True and strict=False, naming both; a plain dict (no
    metadata) still loads by its state names."""
    names, built = _every_metric_updated(persistent=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked = 0
        for ours, theirs in ((a, b) for a in names for b in names if a != b):
            receiver, saved = built[ours], built[theirs].state_dict()
            own_keys = set(receiver.state_dict())
            if set(saved) != own_keys or type(receiver) is type(built[theirs]) is tmx.Windowed:
                continue  # refused by its state names already (a Windowed's children are checked on their own)
            checked += 1
            snapshot = H._state_snapshot(receiver)
            for strict in (True, False):
                with pytest.raises(RuntimeError, match=r"metric mismatch for .*the checkpoint holds the states of a"):
                    receiver.load_state_dict(saved, strict=strict)
                H.assert_same_state(receiver, snapshot)
        assert checked >= 40  # AUC/AUPRC, the NE family, the regression errors, Segmented(NE)/(CTR)...
    auc, auprc = tmx.AUC(), tmx.AUPRC()
    auc.persistent(True)
    auprc.persistent(True)
    auc.update(P, Y)
    with pytest.raises(RuntimeError, match=r"metric mismatch for AUPRC: the checkpoint holds the states of an AUC"):
        auprc.load_state_dict(auc.state_dict())
    auprc.load_state_dict(dict(auc.state_dict()))  # no metadata: checked by its state names and shapes only
    np.testing.assert_allclose(auprc.compute().item(), skm.average_precision_score(Y.numpy(), P.numpy()))


# ---------------------------------------------------------------- checkpoint state dtypes


def _dtype_batch(kind: str, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(40, generator=g)
    y = (torch.rand(40, generator=g) < p).long()
    if kind == "grouped":
        return p, y, torch.arange(40) % 4
    if kind == "ranking":
        return p.view(4, 10), y.view(4, 10)
    return p, y


def _windowed(metric):
    return lambda: tmx.Windowed(metric(), window_size=60)


# (id, metric, batch kind, where the state is in the state_dict, what it holds, the key the error names)
# what it holds: "float" a floating tensor state, "float-list"/"int-list" the chunks of a list state
_RING = "_extra_state"
_DTYPE_CASES = [
    ("ne", tmx.NormalizedEntropy, "pointwise", ("pos_labels",), "float", "pos_labels"),
    ("ctr", tmx.CTR, "pointwise", ("weighted_label_sum",), "float", "weighted_label_sum"),
    ("auc-binned", lambda: tmx.AUC(num_bins=16), "pointwise", ("hist",), "float", "hist"),
    ("auc-exact", tmx.AUC, "pointwise", ("preds",), "float-list", "preds"),
    ("gauc-exact-groups", tmx.GroupedAUC, "grouped", ("groups",), "int-list", "groups"),
    ("ndcg", lambda: tmx.NDCG(k=3), "ranking", ("value_sum_ndcg3_skip",), "float", "value_sum_ndcg3_skip"),
    ("win-ctr", _windowed(tmx.CTR), "pointwise", ("lifetime.weighted_label_sum",), "float", "lifetime.weighted_label_sum"),
    ("win-ctr-back", _windowed(tmx.CTR), "pointwise", (_RING, "back", "weighted_label_sum"), "float", "the window's `weighted_label_sum` (back)"),
    ("win-ctr-ring", _windowed(tmx.CTR), "pointwise", (_RING, "rings", "weighted_label_sum"), "float", "the window's `weighted_label_sum` (updates)"),
    ("win-auc-binned", _windowed(lambda: tmx.AUC(num_bins=8)), "pointwise", (_RING, "base"), "float", "the window's histogram (base)"),
    ("win-auc-exact", _windowed(tmx.AUC), "pointwise", (_RING, "chunks", "preds"), "float-list", "_extra_state.chunks.preds"),
    ("win-gauc-exact", _windowed(tmx.GroupedAUC), "grouped", (_RING, "chunks", "groups"), "int-list", "_extra_state.chunks.groups"),
]  # fmt: skip
# the rule, written here independently of the code: dtypes each kind of state refuses, and the dtype it names
_REFUSED = {
    "float": {torch.bool, torch.int64},
    "float-list": {torch.bool, torch.int64},
    "int-list": {torch.bool, torch.float32, torch.float16},  # bool ids used to load as 0/1 ids
}
_STATE_DTYPE = {"float": torch.float64, "float-list": torch.float32, "int-list": torch.int64}


def _cast_all(value, dtype):
    """``value`` (a tensor or nested lists of tensors) with every tensor cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    return [_cast_all(v, dtype) for v in value]


def _with_cast(state, path, dtype):
    """A copy of the checkpoint ``state`` (metadata kept) with the entry at ``path`` cast to ``dtype``."""
    state = copy.deepcopy(state)
    holder = state
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = _cast_all(holder[path[-1]], dtype)
    return state


def _states_of(metric):
    """Every state of ``metric`` (a Windowed's ring too), as detached copies, to compare after a refused load."""
    saved = metric.state_dict()
    return copy.deepcopy({k: v for k, v in saved.items()})


def _assert_same(a, b, what):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _assert_same(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    ("factory", "kind", "path", "holds", "key"), [c[1:] for c in _DTYPE_CASES], ids=[c[0] for c in _DTYPE_CASES]
)
def test_a_checkpoint_state_of_a_dtype_it_does_not_hold_is_refused_naming_key_and_dtypes(
    factory, kind, path, holds, key, dtype
):
    """A bool or integer sum loaded and failed at the next update ("result type Double can't be cast to
    the desired output type Bool"); now the load raises naming the key, this state's dtype and the
    checkpoint's, and the metric keeps its states and value. A floating state takes a narrower floating
    dtype (exact), cast to its own; a list state's chunks must be of its kind."""
    trained = factory()
    trained.persistent(True)
    for seed in (1, 2):
        trained.update(*_dtype_batch(kind, seed))
    state = trained.state_dict()
    metric = factory()
    metric.persistent(True)
    metric.update(*_dtype_batch(kind, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value_before = metric.compute()
    states_before = _states_of(metric)
    bad = _with_cast(state, path, dtype)
    if dtype in _REFUSED[holds]:
        pattern = rf"dtype mismatch for {re.escape(key)}: the checkpoint holds {dtype}, this .* keeps it as {_STATE_DTYPE[holds]}"
        with pytest.raises(RuntimeError, match=pattern):
            metric.load_state_dict(bad)
        _assert_same(_states_of(metric), states_before, "states after a refused load")
        metric._computed = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            torch.testing.assert_close(metric.compute(), value_before, rtol=0, atol=0, equal_nan=True)
    else:  # an exact cast: it loads, and the metric keeps its states' dtypes
        metric.load_state_dict(bad)
        for name, default in metric.state_dict().items():
            if isinstance(default, torch.Tensor):
                assert default.dtype == states_before[name].dtype, name
        metric.update(*_dtype_batch(kind, 4))  # and updates on
    # the checkpoint as saved still loads, and resumes the saved value
    again = factory()
    again.persistent(True)
    again.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        torch.testing.assert_close(again.compute(), trained.compute(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("saved_dtype", [torch.float32, torch.float64])
def test_a_wider_floating_checkpoint_is_refused_by_a_metric_cast_to_a_narrower_dtype(saved_dtype):
    """A float16 metric (set_dtype) would round a float32/float64 checkpoint's sums: refused, nothing loads."""
    trained = tmx.CTR()
    trained.persistent(True)
    trained.update(*_dtype_batch("pointwise", 1))
    trained.set_dtype(saved_dtype)
    metric = tmx.CTR().set_dtype(torch.float16)
    metric.persistent(True)
    metric.update(*_dtype_batch("pointwise", 2))
    before = _states_of(metric)
    match = rf"dtype mismatch for weighted_pred_sum: the checkpoint holds {saved_dtype}, .* keeps it as torch.float16"
    with pytest.raises(RuntimeError, match=match):
        metric.load_state_dict(trained.state_dict())
    _assert_same(_states_of(metric), before, "states after a refused load")


def test_a_checkpoint_saved_after_set_dtype_float32_resumes_a_float64_metric_in_float64():
    """What loaded before still loads: a set_dtype(float32) metric's checkpoint, its sums widened exactly."""
    first, second = _dtype_batch("pointwise", 1), _dtype_batch("pointwise", 2)
    trained = tmx.CTR()
    trained.persistent(True)
    trained.update(*first)
    trained.set_dtype(torch.float32)
    metric = tmx.CTR()
    metric.persistent(True)
    metric.load_state_dict(trained.state_dict())
    assert all(v.dtype == torch.float64 for v in metric.metric_state.values())
    metric.update(*second)
    labels = np.concatenate([first[1].numpy(), second[1].numpy()])
    np.testing.assert_allclose(metric.compute().item(), labels.mean(), rtol=1e-12)


# the cases whose state is one of the metric's own (not the window's ring): the dict merge_state takes
_MERGE_CASES = [c for c in _DTYPE_CASES if c[3][0] != _RING]


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    ("factory", "kind", "path", "holds", "key"), [c[1:] for c in _MERGE_CASES], ids=[c[0] for c in _MERGE_CASES]
)
def test_merge_state_of_a_dtype_a_checkpoint_may_not_hold_is_refused_and_changes_nothing(
    factory, kind, path, holds, key, dtype
):
    """``merge_state`` took any dtype: a bool or integer sum merged into a float64 one (or bool ids into int64
    ones) was accepted. It now applies the checkpoint rule: the same states are refused with the same message
    (``the merged metric holds``), raised before anything is merged; what a load takes is merged."""
    trained = factory()
    for seed in (1, 2):
        trained.update(*_dtype_batch(kind, seed))
    source = trained.lifetime if isinstance(trained, tmx.Windowed) else trained
    name = key.split(".")[-1]
    states = {n: copy.deepcopy(v) for n, v in source.metric_state.items()}
    states[name] = _cast_all(states[name], dtype)
    metric = factory()
    metric.update(*_dtype_batch(kind, 3))
    before = copy.deepcopy(metric.state_dict())
    if dtype in _REFUSED[holds]:
        pattern = (
            rf"Cannot merge into .*dtype mismatch for {re.escape(name)}: the merged metric holds {dtype}, "
            rf"this .* keeps it as {_STATE_DTYPE[holds]}"
        )
        with pytest.raises(ValueError, match=pattern):
            metric.merge_state(states)
        _assert_same(copy.deepcopy(metric.state_dict()), before, "states after a refused merge")
    else:  # a narrower floating state is widened, as a load widens it: the metric keeps its dtypes
        merged = metric.lifetime if isinstance(metric, tmx.Windowed) else metric
        dtypes = {n: v.dtype for n, v in merged.metric_state.items() if isinstance(v, torch.Tensor)}
        metric.merge_state(states)
        assert {n: v.dtype for n, v in merged.metric_state.items() if isinstance(v, torch.Tensor)} == dtypes


def test_merge_state_widens_a_float32_ctr_and_refuses_a_wider_one_into_float16():
    """A float32 state merges into a float64 CTR exactly (the label mean of all batches, NumPy); a float16
    CTR (``set_dtype``) refused nothing before and rounded the float64 sums it took: now refused, untouched."""
    first, second = _dtype_batch("pointwise", 1), _dtype_batch("pointwise", 2)
    other = tmx.CTR()
    other.update(*second)
    metric = tmx.CTR()
    metric.update(*first)
    metric.merge_state({n: v.float() for n, v in other.metric_state.items()})
    assert all(v.dtype == torch.float64 for v in metric.metric_state.values())
    labels = np.concatenate([first[1].numpy(), second[1].numpy()]).astype(np.float64)
    np.testing.assert_allclose(metric.compute().item(), labels.mean(), rtol=1e-12)

    half = tmx.CTR().set_dtype(torch.float16)
    half.update(*first)
    before = copy.deepcopy(half.metric_state)
    match = (
        r"Cannot merge into CTR: dtype mismatch for weighted_pred_sum: the merged metric holds torch.float64, "
        r"this CTR \(num_tasks=1\) keeps it as torch.float16 \(a floating state takes a floating dtype it holds exactly\)"
    )
    with pytest.raises(ValueError, match=match):
        half.merge_state(other)  # the metric itself, as a dict
    _assert_same(half.metric_state, before, "float16 states after a refused merge")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex128], ids=str)
def test_merge_state_refuses_counts_of_another_kind_and_changes_nothing(dtype):
    """CategoricalCount's float64 counts took any dtype in a merge (cast, complex ones losing their imaginary
    part with a warning) where a load refuses them: the same rule now, and the same message."""
    metric = tmx.aggregation.CategoricalCount()
    metric.update(["a", "b", "a"])
    other = tmx.aggregation.CategoricalCount()
    other.update(["c", "a"])
    states = dict(other.metric_state)
    states["counts"] = states["counts"].to(dtype)
    before = copy.deepcopy(metric.metric_state)
    match = (
        rf"Cannot merge into CategoricalCount: dtype mismatch for counts: the merged metric holds "
        rf"{dtype}, this CategoricalCount.* keeps it as torch.float64 \(a floating state takes a floating dtype"
    )
    with pytest.raises(ValueError, match=match):
        metric.merge_state(states)
    _assert_same(metric.metric_state, before, "states after a refused merge")
    metric.merge_state(other)  # as saved, it merges: the counts of both
    counts = {k: v.item() for k, v in metric.compute().items()}
    assert counts == {"a": 3.0, "b": 1.0, "c": 1.0}


def test_windowed_merge_state_refuses_a_lifetime_state_of_another_kind():
    """A ``Windowed`` merges its lifetime through the wrapped metric's checks: an int64 sum is refused there."""
    metric = tmx.Windowed(tmx.CTR(), window_size=60)
    metric.update(*_dtype_batch("pointwise", 1))
    other = tmx.CTR()
    other.update(*_dtype_batch("pointwise", 2))
    states = {n: v.long() for n, v in other.metric_state.items()}
    before = copy.deepcopy(metric.state_dict())
    with pytest.raises(ValueError, match=r"Cannot merge into Windowed\(CTR\): dtype mismatch for weighted_pred_sum"):
        metric.merge_state(states)
    _assert_same(copy.deepcopy(metric.state_dict()), before, "states after a refused merge")


# ----------------------------------------------------------------------------- DDP: TorchMetrics' sync options per family

# rows 0-16 in queries of four; step 1: rank 0 rows 0-5, rank 1 rows 12-16; step 2: rank 0 rows 5-12, rank 1 nothing
_STEPS = {0: [(0, 5), (5, 12)], 1: [(12, 16), (16, 16)]}


def _options_rows() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(8)
    preds = torch.rand(16, generator=gen) * 0.9 + 0.05
    target = (torch.rand(16, generator=gen) < preds).float()
    target[::2] = 1.0  # every query's part in every step has a relevant row
    target[1::4] = 0.0  # and an irrelevant one (both classes in each step)
    return {"preds": preds, "target": target, "indexes": torch.arange(16) // 4}


def _options_metrics(**options) -> dict[str, Metric]:
    from torchmetrics_ext.aggregation import Distribution

    return {
        "ne": tmx.NormalizedEntropy(**options),
        "auc": tmx.AUC(**options),
        "ndcg": tmx.NDCG(k=2, **options),
        "distribution": Distribution(**options),
    }


def _options_call(name: str, metric: Metric, rows: dict[str, torch.Tensor], lo: int, hi: int, forward: bool):
    args = {k: v[lo:hi] for k, v in rows.items() if name == "ndcg" or k != "indexes"}
    if name == "distribution":
        args = {"value": rows["preds"][lo:hi]}
    return metric(**args) if forward else metric.update(**args)


def _values(value) -> dict[str, float] | float:
    return {k: v.item() for k, v in value.items()} if isinstance(value, dict) else value.item()


def _options_job(rank: int, world_size: int) -> dict:
    rows = _options_rows()
    out: dict = {"step": {}, "cpu": {}, "local": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for option, kwargs in (("step", {"dist_sync_on_step": True}), ("cpu", {"compute_on_cpu": True})):
            for name, metric in _options_metrics(**kwargs).items():
                forwarded = [_options_call(name, metric, rows, lo, hi, True) for lo, hi in _STEPS[rank]]
                out[option][name] = [_values(v) for v in forwarded] + [_values(metric.compute())]
        for name, metric in _options_metrics(sync_on_compute=False).items():
            for lo, hi in _STEPS[rank]:
                _options_call(name, metric, rows, lo, hi, False)
            out["local"][name] = _values(metric.compute())
        throughput = {k: tmx.Throughput(warmup_steps=0, **kw) for k, kw in (("cpu", {"compute_on_cpu": True}),)}
        throughput["local"] = tmx.Throughput(warmup_steps=0, sync_on_compute=False)
        for key, metric in throughput.items():
            for lo, hi in _STEPS[rank]:
                metric.update(hi - lo)
            out[key]["throughput"] = metric.compute()["total_examples"].item()
    return out


def _options_reference(rows: dict[str, np.ndarray], index: np.ndarray) -> dict[str, float | dict[str, float]]:
    """NumPy/scikit-learn values over the rows ``index`` (NDCG@2 per query id, then the mean)."""
    p, y, q = rows["preds"][index], rows["target"][index], rows["indexes"][index]
    ctr = y.mean()
    ne = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean() / -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr))
    gains = []
    for query in np.unique(q):
        scores, rels = p[q == query], y[q == query]
        ranked = rels[np.argsort(-scores, kind="stable")][:2]
        discounts = 1 / np.log2(np.arange(2, 2 + len(ranked)))
        gains.append((ranked @ discounts) / (np.sort(rels)[::-1][:2] @ discounts))
    stats = {"mean": p.mean(), "min": p.min(), "max": p.max(), "std": p.std(ddof=1)}
    return {"ne": ne, "auc": skm.roc_auc_score(y, p), "ndcg": float(np.mean(gains)), "distribution": stats}


def _assert_option(value, expected, what: str) -> None:
    if isinstance(expected, dict):  # the distribution's exact statistics (its percentiles are a sketch's)
        for key, ref in expected.items():
            np.testing.assert_allclose(value[key], ref, rtol=1e-6, err_msg=f"{what} {key}")
    else:
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=what)


@pytest.mark.ddp
def test_sync_options_of_each_family_under_ddp(ddp_pool):
    """One metric per family (pointwise, AUC, ranking, aggregation, throughput) under 2 gloo ranks, rank 1 with
    an empty second step: ``dist_sync_on_step=True`` makes each ``forward`` the value over both ranks' batches
    of that step and ``compute`` the value over everything; ``compute_on_cpu=True`` syncs as usual;
    ``sync_on_compute=False`` gives each rank its own rows' value."""
    rows = {k: v.double().numpy() for k, v in _options_rows().items()}
    steps = [np.r_[0:5, 12:16], np.r_[5:12]]
    everything = np.arange(16)
    own = {0: np.arange(12), 1: np.arange(12, 16)}
    whole = _options_reference(rows, everything)
    for rank, result in enumerate(ddp_pool.run(_options_job)):
        for name, value in whole.items():
            per_step = [_options_reference(rows, s)[name] for s in steps]
            for k, want in enumerate([*per_step, value]):
                _assert_option(result["step"][name][k], want, f"rank {rank} dist_sync_on_step {name} #{k}")
            _assert_option(result["cpu"][name][-1], value, f"rank {rank} compute_on_cpu {name}")
            _assert_option(result["local"][name], _options_reference(rows, own[rank])[name], f"rank {rank} local")
        assert result["cpu"]["throughput"] == 16.0
        assert result["local"]["throughput"] == (12.0, 4.0)[rank]


_GROUPS = torch.tensor([0, 0, 1, 1])
_DENSE_FAMILY = {
    # factory, extra inputs after (preds, target) as keywords, functional twin
    "ne": (tmx.NormalizedEntropy, {}, tmf.normalized_entropy),
    "accuracy": (tmx.WeightedAccuracy, {}, tmf.weighted_accuracy),
    "mse": (tmx.WeightedMSE, {}, tmf.weighted_mse),
    "auc": (tmx.AUC, {}, tmf.auc),
    "auc-binned": (lambda: tmx.AUC(num_bins=8), {}, lambda *a, **k: tmf.auc(*a, num_bins=8, **k)),
    "grouped-auc": (tmx.GroupedAUC, {"groups": _GROUPS}, tmf.grouped_auc),
    "xauc": (tmx.XAUC, {}, tmf.xauc),
    "reliability": (tmx.Reliability, {}, tmf.reliability),
    "hindsight": (tmx.HindsightTargetPR, {}, tmf.hindsight_target_pr),
    "session": (lambda: tmx.SessionPrecisionAtK(k=1), {"sessions": _GROUPS}, None),
    "windowed-auc": (lambda: tmx.Windowed(tmx.AUC(), window_size=3), {}, None),
    "windowed-ne": (lambda: tmx.Windowed(tmx.NormalizedEntropy(), window_size=3), {}, None),
}
_SPARSE_CASES = [
    (family, argument, layout)
    for family, (_, extra, _) in sorted(_DENSE_FAMILY.items())
    for argument in ("preds", "target", "weights", *extra)
    for layout in ("sparse_coo", "sparse_csr")
]


def _same_tree(a: object, b: object) -> bool:
    """Equal nested states (tensors compared exactly, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.nan_to_num(), b.nan_to_num())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")
@pytest.mark.parametrize(("family", "argument", "layout"), _SPARSE_CASES)
def test_a_sparse_input_is_a_type_error_naming_it(family, argument, layout):
    """A sparse tensor (``x.to_sparse()``) raised an internal ``NotImplementedError`` from ``aminmax`` (or a
    ``RuntimeError`` from ``reshape``) deep in the value checks: a ``TypeError`` naming the argument and its
    layout instead, from ``update``, ``forward`` and the functional twin, and the state is left as it was."""
    factory, extra, functional = _DENSE_FAMILY[family]
    good = {"preds": P, "target": Y, "weights": torch.tensor([1.0, 2.0, 0.5, 1.0]), **extra}
    value = good[argument]
    sparse = value.to_sparse() if layout == "sparse_coo" else value.unsqueeze(0).to_sparse_csr()
    bad = dict(good, **{argument: sparse})
    match = rf"`{argument}` to be a dense tensor, got layout torch\.{layout}"
    metric = factory()
    metric.persistent(True)
    metric.update(**good)
    before, saved = metric.compute(), copy.deepcopy(metric.state_dict())
    count = metric._update_count
    for call in (metric.update, metric):
        with pytest.raises(TypeError, match=match):
            call(**bad)
        assert metric._update_count == count
        assert _same_tree(metric.state_dict(), saved), f"{family}: a rejected batch changed the state"
    assert _same_tree(metric.compute(), before)
    if functional is not None:
        with pytest.raises(TypeError, match=match):
            functional(**bad)
