"""``forward`` of every sum-state metric outside the pointwise family: one update instead of TorchMetrics' round.

``TaskMetric.forward`` updates the batch into fresh states and adds them to the held ones for any metric
whose states are all tensors reduced by ``sum`` (``tests/test_pointwise_forward.py`` covers the pointwise
classes). The reference is TorchMetrics' own path (``Metric.forward``'s copy/reset/update/compute/reduce
round, which ``TaskMetric.forward`` takes when ``_sums_forward`` says no) run on a twin, and for batch values
sklearn / numpy formulas.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx
import torchmetrics_ext.aggregation as agg
from tests.helpers.forward_paths import assert_forward_skips_round, forward_outcomes, torchmetrics_forward
from torchmetrics_ext.metrics._checkpoints import resets_taken
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.metrics.pointwise import _PointwiseMetric

Batch = dict[str, torch.Tensor]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(tasks: int | None = None) -> Callable[[int, int], Batch]:
    def make(seed: int, n: int) -> Batch:
        g = _gen(seed)
        shape = (n,) if tasks is None else (tasks, n)
        p = torch.rand(shape, generator=g)
        return {
            "preds": p,
            "target": (torch.rand(shape, generator=g) < p).float(),
            "weights": torch.rand(shape, generator=g) * 2,
        }

    return make


def _grouped(seed: int, n: int) -> Batch:
    batch = _binary()(seed, n)
    # new group ids in every batch: each batch holds its groups whole (groups_complete_per_batch)
    return {**batch, "groups": seed * 10 + torch.randint(0, 3, (n,), generator=_gen(seed + 50))}


def _sessions(seed: int, n: int) -> Batch:
    batch = _binary()(seed, n)
    sessions = torch.sort(torch.randint(0, 3, (n,), generator=_gen(seed + 50))).values
    return {"preds": batch["preds"], "target": batch["target"], "sessions": sessions, "weights": batch["weights"]}


def _ranking(seed: int, n: int) -> Batch:
    g = _gen(seed)
    return {
        "preds": torch.rand(n, generator=g),
        "target": torch.randint(0, 3, (n,), generator=g).float(),
        "indexes": seed * 100 + torch.arange(n) // 4,  # every query whole in its batch
    }


def _bits(tasks: int | None = None) -> Callable[[int, int], Batch]:
    def make(seed: int, n: int) -> Batch:
        g = _gen(seed)
        shape = (n,) if tasks is None else (tasks, n)
        return {
            "preds": torch.randint(0, 8, shape, generator=g),
            "target": torch.randint(0, 8, shape, generator=g),
            "weights": torch.rand(shape, generator=g),
        }

    return make


def _classes(seed: int, n: int) -> Batch:
    g = _gen(seed)
    return {
        "preds": torch.rand(n, 4, generator=g),
        "target": torch.randint(0, 4, (n,), generator=g),
        "weights": torch.rand(n, generator=g),
    }


def _segmented(seed: int, n: int) -> Batch:
    return {**_binary()(seed, n), "segments": torch.randint(0, 3, (n,), generator=_gen(seed + 50))}


def _values(weighted: bool) -> Callable[[int, int], Batch]:
    def make(seed: int, n: int) -> Batch:
        g = _gen(seed)
        batch = {"value": torch.randn(n, generator=g, dtype=torch.float64)}
        if weighted:
            batch["weight"] = torch.rand(n, generator=g, dtype=torch.float64)
        return batch

    return make


# every non-pointwise configuration whose forward takes the sums path: (factory, batch maker)
CASES: dict[str, tuple[Callable[[], TaskMetric], Callable[[int, int], Batch]]] = {
    "AUC(num_bins)": (lambda: tmx.AUC(num_bins=64), _binary()),
    "AUC(num_bins, tasks=2)": (lambda: tmx.AUC(num_tasks=2, num_bins=64), _binary(2)),
    "AUPRC(num_bins)": (lambda: tmx.AUPRC(num_bins=64), _binary()),
    "GroupedAUC(groups_complete)": (lambda: tmx.GroupedAUC(groups_complete_per_batch=True), _grouped),
    "GroupedAUPRC(groups_complete)": (lambda: tmx.GroupedAUPRC(groups_complete_per_batch=True), _grouped),
    "HindsightTargetPR": (lambda: tmx.HindsightTargetPR(num_thresholds=50), _binary()),
    "Reliability": (lambda: tmx.Reliability(), _binary()),
    "Reliability(tasks=2)": (lambda: tmx.Reliability(num_tasks=2, num_bins=5), _binary(2)),
    "SessionPrecisionAtK": (lambda: tmx.SessionPrecisionAtK(k=2), _sessions),
    "SessionRecallAtK": (lambda: tmx.SessionRecallAtK(k=2, average="micro"), _sessions),
    "SessionPairwiseAUC": (lambda: tmx.SessionPairwiseAUC(), _sessions),
    "MultiLabelPrecision": (lambda: tmx.MultiLabelPrecision(num_labels=3), _bits()),
    "MultiLabelPrecision(tasks=2)": (lambda: tmx.MultiLabelPrecision(num_labels=3, num_tasks=2), _bits(2)),
    "MulticlassRecallAtK": (lambda: tmx.MulticlassRecallAtK(k=2, num_classes=4), _classes),
    "NDCG(queries_complete)": (lambda: tmx.NDCG(k=3, queries_complete_per_batch=True), _ranking),
    "MRR(queries_complete)": (lambda: tmx.MRR(k=3, queries_complete_per_batch=True), _ranking),
    "MAP(queries_complete)": (lambda: tmx.MAP(k=3, queries_complete_per_batch=True), _ranking),
    "RecallAtK(queries_complete)": (lambda: tmx.RecallAtK(k=3, queries_complete_per_batch=True), _ranking),
    "PrecisionAtK(queries_complete)": (lambda: tmx.PrecisionAtK(k=3, queries_complete_per_batch=True), _ranking),
    "HitRate(queries_complete)": (lambda: tmx.HitRate(k=3, queries_complete_per_batch=True), _ranking),
    "F1AtK(queries_complete)": (lambda: tmx.F1AtK(k=3, queries_complete_per_batch=True), _ranking),
    "Segmented(WeightedMSE)": (lambda: tmx.Segmented(tmx.WeightedMSE(), num_segments=3), _segmented),
    "Segmented(NormalizedEntropy)": (lambda: tmx.Segmented(tmx.NormalizedEntropy(), num_segments=3), _segmented),
    "aggregation.Sum": (lambda: agg.Sum(), _values(False)),
    "aggregation.Mean": (lambda: agg.Mean(), _values(True)),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.requires_grad == b.requires_grad
        and bool(torch.equal(a.detach().nan_to_num(7.0), b.detach().nan_to_num(7.0)))
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_equals_torchmetrics_forward_bit_for_bit(name):
    """Value, warnings, errors, states, update count, reset note, ``_forward_cache`` and flags of each ``forward``
    (after updates, an empty batch, a small and a larger one) are those of TorchMetrics' path."""
    factory, make = CASES[name]
    fast, slow = factory(), factory()
    assert fast._sums_forward()
    steps = [("update", 6), ("forward", 5), ("forward", 0), ("forward", 1), ("update", 4), ("forward", 16)]
    for seed, (kind, n) in enumerate(steps):
        batch = make(seed, n)
        if kind == "update":
            fast.update(**batch)
            slow.update(**batch)
            continue
        (value, error, _), (expected, _, _) = forward_outcomes(fast, slow, batch)
        if error is None:
            assert _same(value, expected), (name, n, value, expected)
            assert _same(fast._forward_cache, slow._forward_cache)
        for key, state in slow.metric_state.items():
            assert _same(fast.metric_state[key], state), key
        assert (fast.update_count, resets_taken(fast)) == (slow.update_count, resets_taken(slow))
        assert (fast._to_sync, fast._should_unsync, fast._computed, fast._is_synced, fast._enable_grad) == (
            slow._to_sync,
            slow._should_unsync,
            slow._computed,
            slow._is_synced,
            slow._enable_grad,
        )
        assert fast._inputs_checked is slow._inputs_checked is False
        assert "_validated_target" not in fast.__dict__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _same(fast.compute(), slow.compute())


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if "aggregation" not in n])
def test_rejected_forward_leaves_the_metric_as_it_was(name):
    factory, make = CASES[name]
    metric = factory()
    metric.update(**make(0, 6))
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    count, resets = metric.update_count, resets_taken(metric)
    bad = make(1, 4)
    bad["preds"] = bad["preds"].double().fill_(float("nan"))
    with pytest.raises((ValueError, TypeError), match="`preds`"):
        metric(**bad)
    assert all(torch.equal(metric.metric_state[k], v) for k, v in before.items())
    assert (metric.update_count, resets_taken(metric), metric._inputs_checked, metric._enable_grad) == (
        count,
        resets,
        False,
        False,
    )


def test_every_sum_state_configuration_is_compared():
    """Each exported class (but the pointwise ones, compared in ``test_pointwise_forward.py``) that takes the sums
    path with sum states only in the configurations below has a case above: no class switches untested (those
    with list states too are compared in ``test_forward_by_lists.py``)."""
    configs: list[dict[str, Any]] = [
        {},
        {"num_bins": 16},
        {"k": 2},
        {"k": 2, "queries_complete_per_batch": True},
        {"groups_complete_per_batch": True},
        {"num_labels": 3},
        {"k": 2, "num_classes": 4},
    ]
    covered = {type(factory()) for factory, _ in CASES.values()}
    missing = []
    for module in (tmx, agg):
        for name in dir(module):
            cls = getattr(module, name)
            if not (isinstance(cls, type) and issubclass(cls, Metric)) or inspect.isabstract(cls):
                continue
            if issubclass(cls, _PointwiseMetric) or cls in covered:
                continue
            for kwargs in configs:
                try:
                    metric = cls(**kwargs)
                except (TypeError, ValueError):
                    continue
                if (
                    isinstance(metric, TaskMetric)
                    and metric._sums_forward()
                    and not metric.__dict__["_forward_states"][1]
                ):
                    missing.append((name, kwargs))
    assert not missing


@pytest.mark.parametrize(
    "metric",
    [
        agg.Max(),  # max reduction
        agg.Distribution(),  # min/max and a compensated join (_reduce_states)
        tmx.WeightedMSE(dist_sync_on_step=True),
        tmx.WeightedMSE(compute_on_cpu=True),
    ],
    ids=lambda m: type(m).__name__,
)
def test_torchmetrics_round_kept_where_it_must_be(metric):
    assert not metric._sums_forward()


# ----------------------------------------------------------------------------- batch values against references


def _np(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.double().numpy() for t in tensors]


def test_binned_auc_batch_value_against_sklearn():
    """Scores on distinct bins: the binned AUC is the exact one (sklearn), for the batch and for all of it."""
    g = _gen(0)
    p = torch.randint(1, 20, (40,), generator=g) / 20.0
    y = (torch.rand(40, generator=g) < p).float()
    w = torch.rand(40, generator=g)
    metric = tmx.AUC(num_bins=10_000)
    metric.update(p[:15], y[:15], w[:15])
    value = metric(p[15:], y[15:], w[15:])
    pn, yn, wn = _np(p, y, w)
    np.testing.assert_allclose(value.item(), skm.roc_auc_score(yn[15:], pn[15:], sample_weight=wn[15:]), rtol=1e-12)
    np.testing.assert_allclose(metric.compute().item(), skm.roc_auc_score(yn, pn, sample_weight=wn), rtol=1e-12)


def test_grouped_auc_batch_value_against_sklearn():
    batch = _grouped(3, 60)
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(**_grouped(2, 30))
    value = metric(**batch)
    p, y, w, groups = _np(batch["preds"], batch["target"], batch["weights"], batch["groups"])
    per_group = [
        skm.roc_auc_score(y[groups == g], p[groups == g], sample_weight=w[groups == g])
        for g in np.unique(groups)
        if len(np.unique(y[groups == g])) == 2
    ]
    np.testing.assert_allclose(value.item(), np.mean(per_group), rtol=1e-12)


def test_ndcg_batch_value_against_sklearn():
    g = _gen(4)
    preds = torch.rand(5, 4, generator=g)
    target = torch.randint(0, 3, (5, 4), generator=g).float()
    target[:, 0] = 1.0  # every query has a relevant item
    metric = tmx.NDCG(k=3, queries_complete_per_batch=True)
    metric.update(**_ranking(0, 8))
    value = metric(preds.reshape(-1), target.reshape(-1), torch.arange(20) // 4 + 1000)
    expected = np.mean([skm.ndcg_score(t[None], p[None], k=3) for p, t in zip(*_np(preds, target))])
    np.testing.assert_allclose(value.item(), expected, rtol=1e-12)


def test_weighted_r2_batch_value_against_sklearn():
    first, second = _binary()(0, 10), _binary()(1, 12)
    metric = tmx.WeightedR2()
    metric.update(**first)
    value = metric(**second)
    p, y, w = _np(second["preds"], second["target"], second["weights"])
    np.testing.assert_allclose(value.item(), skm.r2_score(y, p, sample_weight=w), rtol=1e-12)


def test_multilabel_precision_batch_value_against_sklearn():
    batch = _bits()(2, 30)
    metric = tmx.MultiLabelPrecision(num_labels=3)
    metric.update(**_bits()(1, 10))
    value = metric(**batch)
    p, y = batch["preds"].numpy(), batch["target"].numpy()
    bits = 1 << np.arange(3)
    expected = skm.precision_score(
        (y[:, None] & bits) > 0, (p[:, None] & bits) > 0, average=None, sample_weight=batch["weights"].double().numpy()
    )
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


def test_segmented_mse_batch_value_against_numpy():
    batch = _segmented(5, 30)
    metric = tmx.Segmented(tmx.WeightedMSE(), num_segments=3)
    metric.update(**_segmented(4, 9))
    value = metric(**batch)
    p, y, w, s = _np(batch["preds"], batch["target"], batch["weights"], batch["segments"])
    expected = [np.average((p - y)[s == k] ** 2, weights=w[s == k]) for k in range(3)]
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


def test_aggregation_sum_and_mean_batch_values_against_numpy():
    first, second = _values(True)(0, 7), _values(True)(1, 9)
    total, mean = agg.Sum(), agg.Mean()
    total.update(first["value"])
    mean.update(**first)
    v, w = second["value"].numpy(), second["weight"].numpy()
    np.testing.assert_allclose(total(second["value"]).item(), v.sum(), rtol=1e-12)
    np.testing.assert_allclose(mean(**second).item(), np.average(v, weights=w), rtol=1e-12)
    allv = np.concatenate([first["value"].numpy(), v])
    allw = np.concatenate([first["weight"].numpy(), w])
    np.testing.assert_allclose(total.compute().item(), allv.sum(), rtol=1e-12)
    np.testing.assert_allclose(mean.compute().item(), np.average(allv, weights=allw), rtol=1e-12)


def test_mean_forward_gradient_equalstorchmetrics_forward():
    """Values requiring grad: the batch value's graph and gradient are those of TorchMetrics' path."""
    grads = []
    for call in (lambda m, **b: m(**b), torchmetrics_forward):
        metric = agg.Mean()
        metric.update(torch.tensor([1.0, 2.0], dtype=torch.float64))
        value = torch.tensor([0.5, 3.0, -1.0], dtype=torch.float64, requires_grad=True)
        out = call(metric, value=value, weight=torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))
        out.backward()
        grads.append(value.grad)
        assert not any(s.requires_grad for s in metric.metric_state.values())
    np.testing.assert_allclose(grads[0].numpy(), [0.25, 0.5, 0.25], rtol=1e-15)
    assert torch.equal(grads[0], grads[1])


def test_collection_compute_group_counts_each_batch_once():
    """Binned AUC and AUPRC share one histogram in a MetricCollection: a forward adds the batch to it once."""
    g = _gen(7)
    p = torch.randint(1, 20, (50,), generator=g) / 20.0
    y = (torch.rand(50, generator=g) < p).float()
    collection = MetricCollection({"auc": tmx.AUC(num_bins=10_000), "auprc": tmx.AUPRC(num_bins=10_000)})
    collection.update(p[:20], y[:20])
    assert collection.compute_groups == {0: ["auc", "auprc"]}
    out = collection(p[20:], y[20:])
    values = collection.compute()
    pn, yn = _np(p, y)
    np.testing.assert_allclose(out["auc"].item(), skm.roc_auc_score(yn[20:], pn[20:]), rtol=1e-12)
    np.testing.assert_allclose(values["auc"].item(), skm.roc_auc_score(yn, pn), rtol=1e-12)
    twin = tmx.AUPRC(num_bins=10_000)
    twin.update(p, y)
    assert torch.equal(values["auprc"], twin.compute())


def test_inference_mode_leaves_ordinary_states():
    metric = tmx.AUC(num_bins=16)
    with torch.inference_mode():
        metric(**_binary()(0, 5))
    assert not any(s.is_inference() for s in metric.metric_state.values())
    metric.update(**_binary()(1, 5))  # in-place sums outside inference mode


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_skips_torchmetrics_round(name, monkeypatch):
    """The cut itself: ``forward`` does not enter TorchMetrics' copy/reset/update/compute/reduce round (the twin of
    the comparisons above does)."""
    factory, make = CASES[name]
    assert_forward_skips_round(factory, make, monkeypatch)


class _MSEWithCount(tmx.WeightedMSE):
    """A pointwise subclass with a state of its own, added by its own ``update``: nothing handed over."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("calls", default=torch.zeros(1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        super().update(preds, target, weights)
        self.calls += 1

    def compute(self) -> torch.Tensor:
        return super().compute() * self.calls


class _MSEWithIdle(tmx.WeightedMSE):
    """A pointwise subclass with a state ``update`` never writes: the handed statistics cover some states only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("idle", default=torch.full((1,), 2.0, dtype=torch.float64), dist_reduce_fx="sum")

    def compute(self) -> torch.Tensor:
        return super().compute() + self.idle


@pytest.mark.parametrize("cls", [_MSEWithCount, _MSEWithIdle])
def test_pointwise_subclasses_with_states_of_their_own(cls):
    """Statistics handed over by the pointwise ``update`` are taken as the batch states only when they are all of
    them and nothing else writes a state; else fresh states as TorchMetrics' reset makes them."""
    fast, slow = cls(), cls()
    assert fast._sums_forward()
    for seed, n in enumerate([4, 0, 3, 5]):
        batch = _binary()(seed, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the empty batch's value is nan, with a warning
            value = fast(**batch)
            expected = torchmetrics_forward(slow, **batch)
        assert _same(value, expected), (value, expected)
        for key, state in slow.metric_state.items():
            assert _same(fast.metric_state[key], state), key
    p, y, w = _np(batch["preds"], batch["target"], batch["weights"])
    mse = skm.mean_squared_error(y, p, sample_weight=w)
    np.testing.assert_allclose(value.item(), mse * 1 if cls is _MSEWithCount else mse + 2.0, rtol=1e-12)
