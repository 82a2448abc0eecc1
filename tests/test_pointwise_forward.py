"""``forward`` of the sum-state (pointwise) metrics: one update instead of TorchMetrics' reset/update/compute/reduce.

The reference is TorchMetrics' own ``forward`` path (``TaskMetric.forward``, which the package used
for every metric before), run on a twin metric, and for values sklearn / numpy formulas.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext.metrics._checkpoints import resets_taken
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.pointwise import _PointwiseMetric
from torchmetrics_ext.utilities.warnings import safe_divide

_NAMES = sorted(
    name
    for name in dir(tmx)
    if isinstance(getattr(tmx, name), type)
    and issubclass(getattr(tmx, name), _PointwiseMetric)  # every exported pointwise class
)


def _batch(seed: int, n: int, tasks: int | None, weighted: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if tasks is None else (tasks, n)
    p = torch.rand(shape, generator=g)
    batch = {"preds": p, "target": (torch.rand(shape, generator=g) < p).float()}
    if weighted:
        batch["weights"] = torch.rand(shape, generator=g) * 2
    return batch


def _args(metric: _PointwiseMetric, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(metric, tmx.TensorWeightedAverage):
        return {"values": batch["preds"], **({"weights": batch["weights"]} if "weights" in batch else {})}
    return batch


def _slow_forward(metric: _PointwiseMetric, **batch: torch.Tensor) -> torch.Tensor:
    """TorchMetrics' own round: ``TaskMetric.forward`` with its sums path refused."""
    metric.__dict__["_sums_forward"] = lambda: False
    try:
        return TaskMetric.forward(metric, **batch)
    finally:
        del metric.__dict__["_sums_forward"]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)))


@pytest.mark.parametrize("tasks", [None, 2])
@pytest.mark.parametrize("name", _NAMES)
def test_forward_equals_torchmetrics_forward_bit_for_bit(name, tasks):
    """Every pointwise class: value, states, update count, reset note and ``_forward_cache`` of a ``forward``
    (after updates, weighted and not, an empty batch, a batch of zero weight) are those of TorchMetrics' path."""
    cls = getattr(tmx, name)
    kwargs = {} if tasks is None else {"num_tasks": tasks}
    fast, slow = cls(**kwargs), cls(**kwargs)
    steps = [
        ("update", _batch(0, 6, tasks, True)),
        ("forward", _batch(1, 5, tasks, True)),
        ("forward", _batch(2, 7, tasks, False)),
        ("forward", _batch(3, 0, tasks, True)),  # empty
        ("forward", {**_batch(4, 3, tasks, True), "weights": torch.zeros((3,) if tasks is None else (tasks, 3))}),
        ("update", _batch(5, 4, tasks, False)),
        ("forward", _batch(6, 16, tasks, True)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, batch in steps:
            if kind == "update":
                fast.update(**_args(fast, batch))
                slow.update(**_args(slow, batch))
                continue
            value = fast(**_args(fast, batch))
            expected = _slow_forward(slow, **_args(slow, batch))
            assert _same(value, expected), (name, value, expected)
            assert _same(fast._forward_cache, slow._forward_cache)
            for key, state in slow.metric_state.items():
                assert _same(fast.metric_state[key], state), key
            assert fast.update_count == slow.update_count
            assert resets_taken(fast) == resets_taken(slow)
            assert (fast._to_sync, fast._should_unsync, fast._computed) == (slow._to_sync, slow._should_unsync, None)
        assert _same(fast.compute(), slow.compute())


def test_forward_skips_torchmetrics_copy_and_reset(monkeypatch):
    """The cut itself: ``forward`` of a sum-state metric copies no state and resets nothing (it did both)."""
    metric = tmx.WeightedMSE()
    metric.update(torch.tensor([0.5, 0.2]), torch.tensor([1.0, 0.0]))

    def refuse(*args, **kwargs):
        raise AssertionError("TorchMetrics' forward round was taken")

    # on the instance: the class's own methods decide whether the round may be skipped
    monkeypatch.setitem(metric.__dict__, "_copy_state_dict", refuse)
    monkeypatch.setitem(metric.__dict__, "reset", refuse)
    metric(torch.tensor([0.9]), torch.tensor([1.0]))


def test_forward_value_and_total_against_sklearn():
    p = torch.tensor([0.1, 0.7, 0.4, 0.9, 0.3])
    y = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.2])
    w = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0])
    metric = tmx.WeightedMSE()
    first = metric(p[:2], y[:2], w[:2])
    second = metric(p[2:], y[2:], w[2:])
    p, y, w = (x.double().numpy() for x in (p, y, w))  # sklearn on the float64 values the metric sums
    mse = skm.mean_squared_error
    np.testing.assert_allclose(first.item(), mse(y[:2], p[:2], sample_weight=w[:2]), rtol=1e-12)
    np.testing.assert_allclose(second.item(), mse(y[2:], p[2:], sample_weight=w[2:]), rtol=1e-12)
    np.testing.assert_allclose(metric.compute().item(), mse(y, p, sample_weight=w), rtol=1e-12)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({"preds": torch.tensor([0.5, 1.5]), "target": torch.tensor([1.0, 0.0])}, "`preds`"),
        ({"preds": torch.tensor([0.5, 0.5]), "target": torch.tensor([1.0, 0.0, 1.0])}, "`target`"),
        (
            {
                "preds": torch.tensor([0.5, 0.5]),
                "target": torch.tensor([1.0, 0.0]),
                "weights": torch.tensor([1.0, -1.0]),
            },
            "`weights`",
        ),
    ],
)
def test_rejected_forward_leaves_the_metric_as_it_was(batch, match):
    metric = tmx.NormalizedEntropy()
    metric.update(torch.tensor([0.3, 0.6]), torch.tensor([0.0, 1.0]))
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    count, resets = metric.update_count, resets_taken(metric)
    with pytest.raises(ValueError, match=match):
        metric(**batch)
    assert all(torch.equal(metric.metric_state[k], v) for k, v in before.items())
    assert (metric.update_count, resets_taken(metric), metric._inputs_checked) == (count, resets, False)


def test_collection_forward_with_a_compute_group_counts_each_batch_once():
    """A MetricCollection links the states of a compute group after ``update``; ``forward`` then runs on each
    member: the batch is added to each once (states are rebound, not written in place)."""
    p, y = torch.tensor([0.1, 0.7, 0.4, 0.9]), torch.tensor([0.0, 1.0, 0.5, 1.0])
    collection = MetricCollection({"mse": tmx.WeightedMSE(), "mae": tmx.WeightedMAE()})
    collection.update(p[:2], y[:2])
    out = collection(p[2:], y[2:])
    values = collection.compute()
    p64, y64 = p.double().numpy(), y.double().numpy()
    np.testing.assert_allclose(out["mse"].item(), skm.mean_squared_error(y64[2:], p64[2:]), rtol=1e-12)
    np.testing.assert_allclose(values["mse"].item(), skm.mean_squared_error(y64, p64), rtol=1e-12)
    np.testing.assert_allclose(values["mae"].item(), skm.mean_absolute_error(y64, p64), rtol=1e-12)


def test_forward_with_inputs_requiring_grad_keeps_the_gradient():
    p = torch.tensor([0.2, 0.6, 0.9], requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0])
    metric = tmx.WeightedMSE()
    value = metric(p, y)
    value.backward()
    np.testing.assert_allclose(p.grad.numpy(), (2 * (p - y) / 3).detach().numpy(), rtol=1e-6)
    assert not any(s.requires_grad for s in metric.metric_state.values())


_SPECIAL = [0.0, -0.0, 1.0, -2.5, 3.0e-310, 1.0e308, 7.0, math.inf, -math.inf, math.nan, 0.1, 1.0 / 3.0]


@pytest.mark.parametrize("finite_terms", [True, False])
def test_safe_divide_of_one_cpu_value_is_the_tensor_division(finite_terms):
    """``safe_divide`` of one float64 CPU value (computed on the host) gives the bits, shape and warnings of the
    elementwise tensor path (the same division taken on two entries), for zero, signed zero, subnormal, huge,
    infinite and NaN operands; the reference is IEEE division in numpy."""
    for n in _SPECIAL:
        for d in _SPECIAL:
            for shape in [(), (1,)]:
                num = torch.full(shape, n, dtype=torch.float64)
                den = torch.full(shape, d, dtype=torch.float64)
                with warnings.catch_warnings(record=True) as one:
                    warnings.simplefilter("always")
                    value = safe_divide(num, den, "M", "why", finite_terms=finite_terms)
                with warnings.catch_warnings(record=True) as two:
                    warnings.simplefilter("always")
                    pair = safe_divide(
                        num.reshape(-1).repeat(2), den.reshape(-1).repeat(2), "M", "why", finite_terms=finite_terms
                    )
                assert value.shape == num.shape and value.dtype == torch.float64
                assert len(one) == (d == 0) and len(two) == (d == 0)
                with np.errstate(all="ignore"):
                    unknown = d == 0 or math.isinf(d) or (finite_terms and math.isinf(n))
                    expected = np.float64(math.nan) if unknown else np.float64(n) / np.float64(d)
                got = value.reshape(-1)[0].item()
                if math.isnan(expected):
                    assert math.isnan(got) and math.isnan(pair[0].item()), (n, d)
                else:
                    assert np.float64(got).tobytes() == expected.tobytes() == np.float64(pair[0].item()).tobytes()


@pytest.mark.parametrize("grad_mode", [True, False])
@pytest.mark.parametrize("name", ["WeightedMSE", "NormalizedEntropy", "WeightedAverage", "Calibration", "LogLoss"])
def test_forward_gradients_equal_torchmetrics_forward(name, grad_mode):
    """Inputs requiring grad: the batch value, whether it carries a graph, and the gradient it gives are those of
    TorchMetrics' path; no state keeps a graph."""
    cls = getattr(tmx, name)
    fast, slow = cls(), cls()
    batch = _batch(3, 9, None, True)
    results = []
    for metric, call in ((fast, lambda m, **b: m(**b)), (slow, _slow_forward)):
        metric.update(**_batch(4, 5, None, True))
        preds = batch["preds"].clone().requires_grad_()
        with torch.set_grad_enabled(grad_mode):
            value = call(metric, **dict(batch, preds=preds))
        if value.requires_grad:
            value.backward()
        results.append((value.detach(), value.requires_grad, preds.grad))
        assert not any(s.requires_grad for s in metric.metric_state.values())
        assert torch.is_grad_enabled()
    (v1, r1, g1), (v2, r2, g2) = results
    assert _same(v1, v2) and r1 == r2 == (grad_mode and fast.is_differentiable is True)
    assert (g1 is None and g2 is None) or torch.equal(g1, g2)
    assert all(_same(fast.metric_state[k], s) for k, s in slow.metric_state.items())


class _TwiceMSE(tmx.WeightedMSE):
    """A user's subclass whose ``update`` also counts a fixed reference batch (``super().update`` twice)."""

    extra = (torch.tensor([0.5, 0.1]), torch.tensor([1.0, 0.0]))

    def update(self, preds, target, weights=None):
        super().update(preds, target, weights)
        super().update(*self.extra)


class _DirectMSE(tmx.WeightedMSE):
    """A user's subclass whose ``update`` adds its sums to the states itself (no ``super().update``)."""

    def update(self, preds, target, weights=None):
        d, t = preds.double() - target.double(), target.double()
        self.sum_squared_error = self.sum_squared_error + (d * d).sum().reshape(1)
        self.sum_absolute_error = self.sum_absolute_error + d.abs().sum().reshape(1)
        self.weighted_num_samples = self.weighted_num_samples + float(d.numel())
        self.label_sum = self.label_sum + t.sum().reshape(1)
        self.label_squared_sum = self.label_squared_sum + (t * t).sum().reshape(1)


@pytest.mark.parametrize("cls", [_TwiceMSE, _DirectMSE])
def test_forward_of_a_subclass_overriding_update_against_numpy(cls):
    """``forward`` of a user's subclass whose ``update`` is its own: the batch value and the totals are those
    of what its ``update`` accumulates (the one-update path took the first ``super().update`` only, or none)."""
    p = torch.tensor([0.2, 0.9, 0.4, 0.7])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    metric = cls()
    first = metric(p, y)
    second = metric(p, y)
    p64, y64 = p.double().numpy(), y.double().numpy()
    if cls is _TwiceMSE:
        ep, ey = (x.double().numpy() for x in cls.extra)
        p64, y64 = np.concatenate([p64, ep]), np.concatenate([y64, ey])
    expected = np.mean((p64 - y64) ** 2)
    np.testing.assert_allclose([first.item(), second.item()], [expected, expected], rtol=1e-12)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)
    np.testing.assert_allclose(metric.weighted_num_samples.item(), 2 * len(p64), rtol=0)


@pytest.mark.parametrize("name", ["log_loss", "weighted_mse", "calibration"])
def test_functional_under_vmap_without_validation_against_numpy(name):
    """``torch.func.vmap`` over a one-task functional with ``validate_args=False`` (no host read there): the one
    CPU value's host division of ``safe_divide`` must not run on the batched tensors (``.item()`` fails there)."""
    p = torch.tensor([[0.2, 0.7, 0.4], [0.9, 0.1, 0.6]], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    fn = getattr(tmx.functional, name)
    values = torch.func.vmap(lambda row: fn(row, y, validate_args=False))(p)
    rows, y64 = p.numpy(), y.numpy()
    expected = {
        "log_loss": [skm.log_loss(y64, r, labels=[0, 1]) for r in rows],
        "weighted_mse": [skm.mean_squared_error(y64, r) for r in rows],
        "calibration": [r.sum() / y64.sum() for r in rows],
    }[name]
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-12)


def test_every_exported_pointwise_class_keeps_the_one_update_forward():
    """The package's own ``update`` overrides (counters, ``WeightedAverage``) keep the sums ``forward``
    (no TorchMetrics round); a user's ``update`` that calls ``super().update`` twice or adds to the
    states itself runs into fresh states (its whole ``update`` seen), so only the package's own
    ``update`` hands its statistics over."""
    assert [name for name in _NAMES if not getattr(tmx, name)()._sums_forward()] == []
    assert _TwiceMSE()._sums_forward() and _DirectMSE()._sums_forward()
    assert not _TwiceMSE._update_hands_statistics() and not _DirectMSE._update_hands_statistics()
