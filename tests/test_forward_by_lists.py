"""``forward`` of metrics with exact (``cat`` list) states: one update instead of TorchMetrics' round.

``TaskMetric.forward`` updates the batch into fresh states (empty lists, zero sums), computes its value, then
rebinds each held list to ``held + batch chunks`` and each sum to ``held + batch`` for any metric whose states
are all ``sum`` tensors or ``cat`` lists (``tests/test_forward_by_sums.py`` covers the sums-only ones). The
reference is TorchMetrics' own path (``Metric.forward``'s copy/reset/update/compute/reduce round, which
``TaskMetric.forward`` takes when ``_sums_forward`` says no) run on a twin, and for values sklearn formulas.
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

Batch = dict[str, torch.Tensor]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(tasks: int | None = None, weighted: bool = True) -> Callable[[int, int], Batch]:
    def make(seed: int, n: int) -> Batch:
        g = _gen(seed)
        shape = (n,) if tasks is None else (tasks, n)
        p = torch.rand(shape, generator=g)
        batch = {"preds": p, "target": (torch.rand(shape, generator=g) < p).float()}
        if weighted:
            batch["weights"] = torch.rand(shape, generator=g) * 2
        return batch

    return make


def _grouped(seed: int, n: int) -> Batch:
    # groups spread over batches (the exact mode's reason to keep samples)
    return {**_binary()(seed, n), "groups": torch.randint(0, 3, (n,), generator=_gen(seed + 50))}


def _continuous(seed: int, n: int) -> Batch:
    g = _gen(seed)
    preds = torch.rand(n, generator=g)
    target = (preds + torch.rand(n, generator=g)).round(decimals=1)  # ties in the labels
    return {"preds": preds, "target": target, "weights": torch.rand(n, generator=g)}


def _ranking(seed: int, n: int) -> Batch:
    g = _gen(seed)
    return {
        "preds": torch.rand(n, generator=g),
        "target": torch.randint(0, 3, (n,), generator=g).float(),
        "indexes": torch.randint(0, 4, (n,), generator=g),  # queries spread over batches
    }


def _padded(seed: int, n: int) -> Batch:
    g = _gen(seed)
    rows = (n + 3) // 4
    mask = torch.rand(rows, 4, generator=g) < 0.8
    return {
        "preds": torch.rand(rows, 4, generator=g),
        "target": torch.randint(0, 3, (rows, 4), generator=g).float(),
        "mask": mask,
    }


def _cast(metric: TaskMetric) -> TaskMetric:
    metric.set_dtype(torch.float64)
    return metric


# every list-state configuration whose forward skips TorchMetrics' round: (factory, batch maker)
CASES: dict[str, tuple[Callable[[], TaskMetric], Callable[[int, int], Batch]]] = {
    "AUC": (lambda: tmx.AUC(), _binary(weighted=False)),
    "AUC(weighted)": (lambda: tmx.AUC(), _binary()),
    "AUC(tasks=2)": (lambda: tmx.AUC(num_tasks=2), _binary(2)),
    "AUPRC": (lambda: tmx.AUPRC(), _binary()),
    "AUPRC(set_dtype float64)": (lambda: _cast(tmx.AUPRC()), _binary()),  # new chunks cast after each update
    "GroupedAUC": (lambda: tmx.GroupedAUC(), _grouped),
    "GroupedAUPRC": (lambda: tmx.GroupedAUPRC(), _grouped),
    "RegressionAUC": (lambda: tmx.RegressionAUC(), _continuous),
    "XAUC": (lambda: tmx.XAUC(), _continuous),
    "NDCG": (lambda: tmx.NDCG(), _ranking),
    "NDCG(k=3)": (lambda: tmx.NDCG(k=3), _ranking),
    "NDCG(k=3, padded)": (lambda: tmx.NDCG(k=3), _padded),
    "MRR": (lambda: tmx.MRR(), _ranking),
    "MAP(k=3)": (lambda: tmx.MAP(k=3), _ranking),
    "RecallAtK": (lambda: tmx.RecallAtK(k=3), _ranking),
    "PrecisionAtK": (lambda: tmx.PrecisionAtK(k=3), _ranking),
    "HitRate": (lambda: tmx.HitRate(k=3), _ranking),
    "F1AtK": (lambda: tmx.F1AtK(k=3), _ranking),
    "RPrecision": (lambda: tmx.RPrecision(), _ranking),
    "RankingMetrics": (lambda: tmx.RankingMetrics(ks=(1, 3)), _ranking),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):  # a list state: the same chunks, in order
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.requires_grad == b.requires_grad
        and a.is_inference() == b.is_inference()
        and bool(torch.equal(a.detach().nan_to_num(7.0), b.detach().nan_to_num(7.0)))
    )


def _assert_twins(fast: TaskMetric, slow: TaskMetric, where: Any, counts: bool = True) -> None:
    for key, state in slow.metric_state.items():
        assert _same(fast.metric_state[key], state), (where, key)
        if isinstance(state, list):
            assert not any(chunk.requires_grad for chunk in fast.metric_state[key]), (where, key)
    if counts:  # a metric loaded from a checkpoint counts its own updates and resets
        assert (fast.update_count, resets_taken(fast)) == (slow.update_count, resets_taken(slow)), where
    assert (fast._to_sync, fast._should_unsync, fast._computed, fast._is_synced, fast._enable_grad) == (
        slow._to_sync,
        slow._should_unsync,
        slow._computed,
        slow._is_synced,
        slow._enable_grad,
    ), where
    assert fast._inputs_checked is slow._inputs_checked is False
    assert "_validated_target" not in fast.__dict__


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_equals_torchmetrics_forward_bit_for_bit(name):
    """Value, warnings, errors, every state chunk by chunk, update count, reset note, ``_forward_cache`` and flags
    of each ``forward`` (after updates, an empty batch, a one-sample and larger ones) are TorchMetrics' path's."""
    factory, make = CASES[name]
    fast, slow = factory(), factory()
    assert fast._sums_forward()
    steps = [("update", 6), ("forward", 5), ("forward", 0), ("forward", 1), ("update", 4), ("forward", 16)]
    steps += [("forward", 2)] * 70  # enough small chunks for joins
    for seed, (kind, n) in enumerate(steps):
        batch = make(seed, n)
        if kind == "update":
            fast.update(**batch)
            slow.update(**batch)
            continue
        (value, error, _), (expected, _, _) = forward_outcomes(fast, slow, batch)
        if error is None:
            assert _same(value, expected), (name, seed, value, expected)
            assert _same(fast._forward_cache, slow._forward_cache)
        _assert_twins(fast, slow, (name, seed))
    lists = [s for s in fast.metric_state.values() if isinstance(s, list)]
    assert lists and all(len(chunks) < 40 for chunks in lists)  # joined: far fewer chunks than the 74 batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _same(fast.compute(), slow.compute())


@pytest.mark.parametrize("name", ["AUC", "GroupedAUC", "XAUC", "NDCG(k=3)", "RankingMetrics"])
def test_rejected_forward_leaves_the_metric_as_it_was(name):
    """A batch the validation rejects, and one that fails inside ``update`` with ``validate_args=False``: the same
    state objects (a holder's binding stays valid), the same chunks, count and reset note."""
    factory, make = CASES[name]
    for validate in (True, False):
        metric = factory()
        metric.validate_args = validate
        metric.update(**make(0, 6))
        metric(**make(1, 5))
        before = dict(metric.metric_state)
        chunks = {k: list(v) for k, v in before.items() if isinstance(v, list)}
        count, resets, cache = metric.update_count, resets_taken(metric), metric._forward_cache
        bad = make(2, 4)
        if validate:
            bad["preds"] = bad["preds"].double().fill_(float("nan"))
            with pytest.raises((ValueError, TypeError), match="`preds`"):
                metric(**bad)
        else:
            bad["target"] = bad["target"][..., :2]  # shapes that disagree: the update's kernels fail
            with pytest.raises((RuntimeError, ValueError, IndexError)):
                metric(**bad)
        for key, state in before.items():
            assert metric.metric_state[key] is state, key
        assert {k: list(v) for k, v in metric.metric_state.items() if isinstance(v, list)} == chunks
        assert (metric.update_count, resets_taken(metric), metric._forward_cache) == (count, resets, cache)
        assert metric._inputs_checked is metric._enable_grad is False


def test_compute_error_leaves_the_metric_as_it_was(monkeypatch):
    """A batch value that raises (here a compute made to fail): the held lists come back as the same objects."""
    metric = tmx.AUC()
    metric.update(**_binary()(0, 6))
    before = dict(metric.metric_state)
    count = metric.update_count

    def fail(self):
        raise RuntimeError("compute failed")

    monkeypatch.setattr(tmx.AUC, "compute", fail)
    with pytest.raises(RuntimeError, match="compute failed"):
        metric(**_binary()(1, 5))
    assert all(metric.metric_state[k] is v for k, v in before.items())
    assert all(len(v) == 1 for v in metric.metric_state.values())
    assert metric.update_count == count


def test_every_list_state_configuration_is_compared():
    """Each exported class that takes this path with list states in the configurations below has a case above."""
    configs: list[dict[str, Any]] = [{}, {"k": 2}, {"num_tasks": 2}]
    covered = {type(factory()) for factory, _ in CASES.values()}
    missing = []
    for module in (tmx, agg):
        for name in dir(module):
            cls = getattr(module, name)
            if not (isinstance(cls, type) and issubclass(cls, Metric)) or inspect.isabstract(cls) or cls in covered:
                continue
            for kwargs in configs:
                try:
                    metric = cls(**kwargs)
                except (TypeError, ValueError):
                    continue
                if isinstance(metric, TaskMetric) and metric._sums_forward() and metric.__dict__["_forward_states"][1]:
                    missing.append((name, kwargs))
    assert not missing


def test_torchmetrics_round_kept_for_other_list_states():
    """A list state with another reduction (none, a function), or a held list state that is one tensor, keeps the
    round."""

    class _Joined(tmx.AUC):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_state("seen", default=[], dist_reduce_fx=lambda chunks: chunks)

    class _Stacked(tmx.AUC):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_state("seen", default=[], dist_reduce_fx=None)

    assert tmx.AUC()._sums_forward()
    assert not _Joined()._sums_forward()
    assert not _Stacked()._sums_forward()
    metric = tmx.AUC()
    metric.update(**_binary()(0, 4))
    metric.__dict__["preds"] = torch.cat(metric.preds)  # as a sync leaves it
    assert not metric._sums_forward()


# ----------------------------------------------------------------------------- the contexts forward runs in


def test_grad_carrying_inputs():
    """Inputs requiring grad: the same value (no graph: these values are not differentiable) and states without
    graph, as TorchMetrics' path."""
    for name in ("AUC(weighted)", "XAUC", "NDCG(k=3)", "RankingMetrics"):
        factory, make = CASES[name]
        fast, slow = factory(), factory()
        for seed in range(3):
            batch = make(seed, 8)
            batch["preds"] = batch["preds"].clone().requires_grad_(True)
            assert _same(fast(**batch), torchmetrics_forward(slow, **batch)), name
            _assert_twins(fast, slow, name)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize("name", ["AUC", "GroupedAUC", "NDCG(k=3)"])
def test_inference_mode_astorchmetrics_forward(name):
    factory, make = CASES[name]
    fast, slow = factory(), factory()
    fast.update(**make(0, 5))
    slow.update(**make(0, 5))
    with torch.inference_mode():
        for seed in (1, 2):
            assert _same(fast(**make(seed, 6)), torchmetrics_forward(slow, **make(seed, 6)))
            _assert_twins(fast, slow, seed)
    assert not any(s.is_inference() for s in fast.metric_state.values() if isinstance(s, torch.Tensor))
    for metric in (fast, slow):  # outside inference mode again: updates and forwards go on
        metric.update(**make(3, 4))
    assert _same(fast(**make(4, 4)), torchmetrics_forward(slow, **make(4, 4)))
    _assert_twins(fast, slow, "after")
    assert _same(fast.compute(), slow.compute())


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize(
    "members",
    [
        {"auc": lambda: tmx.AUC(), "auprc": lambda: tmx.AUPRC()},
        {"gauc": lambda: tmx.GroupedAUC(), "gauprc": lambda: tmx.GroupedAUPRC()},
    ],
    ids=["AUC+AUPRC", "GroupedAUC+GroupedAUPRC"],
)
def test_collection_compute_groups_astorchmetrics_forward(members):
    """Members of a compute group share their list objects after an update; each forward adds the batch to each
    member once, and the sharing after forwards and updates is TorchMetrics' path's."""
    make = _grouped if "gauc" in members else _binary()
    fast = MetricCollection({k: f() for k, f in members.items()})
    slow = MetricCollection({k: f() for k, f in members.items()})
    for metric in slow.values(copy_state=False):
        metric.__dict__["_sums_forward"] = lambda: False
    data = [make(seed, n) for seed, n in enumerate([7, 5, 0, 3, 9])]
    for i, batch in enumerate(data):
        if i % 2 == 0:
            fast.update(**batch)
            slow.update(**batch)
        else:
            out, expected = fast(**batch), slow(**batch)
            assert out.keys() == expected.keys() and all(_same(out[k], expected[k]) for k in out)
        assert fast.compute_groups == slow.compute_groups == {0: list(members)}
        a, b = (fast[k] for k in members)
        sa, sb = (slow[k] for k in members)
        for state in a._defaults:
            assert (getattr(a, state) is getattr(b, state)) == (getattr(sa, state) is getattr(sb, state)), (i, state)
        for key in members:
            _assert_twins(fast[key], slow[key], (i, key))
        values, expected = fast.compute(), slow.compute()
        assert all(_same(values[k], expected[k]) for k in values)
    if "auc" in members:  # each batch counted once: sklearn over everything
        p = torch.cat([b["preds"] for b in data]).double().numpy()
        y = torch.cat([b["target"] for b in data]).double().numpy()
        w = torch.cat([b["weights"] for b in data]).double().numpy()
        np.testing.assert_allclose(values["auc"].item(), skm.roc_auc_score(y, p, sample_weight=w), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize("name", ["AUC(tasks=2)", "GroupedAUPRC", "XAUC", "RankingMetrics"])
def test_state_dict_round_trip(name):
    factory, make = CASES[name]
    fast, slow = factory(), factory()
    for metric in (fast, slow):
        metric.persistent(True)
    for seed in range(5):
        fast(**make(seed, 6))
        torchmetrics_forward(slow, **make(seed, 6))
    saved, expected = fast.state_dict(), slow.state_dict()
    assert saved.keys() == expected.keys() and all(_same(saved[k], expected[k]) for k in saved)
    loaded = factory()
    loaded.load_state_dict(saved)
    assert _same(loaded.compute(), slow.compute())
    batch = make(9, 6)
    assert _same(loaded(**batch), torchmetrics_forward(slow, **batch))
    _assert_twins(loaded, slow, "loaded", counts=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_skips_torchmetrics_round(name, monkeypatch):
    factory, make = CASES[name]
    assert_forward_skips_round(factory, make, monkeypatch)


# ----------------------------------------------------------------------------- values against references


def _np(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.double().numpy() for t in tensors]


@pytest.mark.parametrize(
    ("factory", "reference"), [(tmx.AUC, skm.roc_auc_score), (tmx.AUPRC, skm.average_precision_score)]
)
def test_exact_auc_and_auprc_against_sklearn(factory, reference):
    """Each forward's value is the batch's sklearn value; ``compute`` after them is sklearn's over every batch."""
    metric = factory()
    data = [_binary()(seed, n) for seed, n in enumerate([9, 14, 1, 20])]
    metric.update(**data[0])
    for batch in data[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one-sample batch's value is undefined (nan)
            value = metric(**batch)
        p, y, w = _np(batch["preds"], batch["target"], batch["weights"])
        if len(np.unique(y)) == 2:
            np.testing.assert_allclose(value.item(), reference(y, p, sample_weight=w), rtol=1e-6)
    p, y, w = _np(*(torch.cat([b[k] for b in data]) for k in ("preds", "target", "weights")))
    np.testing.assert_allclose(metric.compute().item(), reference(y, p, sample_weight=w), rtol=1e-6)


def test_ndcg_against_sklearn_with_queries_across_batches():
    """Exact NDCG: a query split over two forwards is scored whole by ``compute`` (sklearn's ``ndcg_score``)."""
    g = _gen(11)
    preds = torch.rand(6, 5, generator=g)
    target = torch.randint(0, 3, (6, 5), generator=g).float()
    target[:, 0] = 1.0  # every query has a relevant item
    metric = tmx.NDCG(k=3)
    # the first forward: queries 0-2 whole and the first two rows of queries 3-5; the second: the rest
    value = metric(
        torch.cat([preds[:3].reshape(-1), preds[3:, :2].reshape(-1)]),
        torch.cat([target[:3].reshape(-1), target[3:, :2].reshape(-1)]),
        indexes=torch.cat([torch.arange(3).repeat_interleave(5), torch.arange(3, 6).repeat_interleave(2)]),
    )
    p, t = _np(preds, target)
    seen = [(p[q], t[q]) for q in range(3)] + [(p[q, :2], t[q, :2]) for q in range(3, 6)]
    np.testing.assert_allclose(
        value.item(), np.mean([skm.ndcg_score(y[None], s[None], k=3) for s, y in seen]), rtol=1e-6
    )
    metric(preds[3:, 2:].reshape(-1), target[3:, 2:].reshape(-1), indexes=torch.arange(3, 6).repeat_interleave(3))
    whole = np.mean([skm.ndcg_score(y[None], s[None], k=3) for s, y in zip(p, t)])
    np.testing.assert_allclose(metric.compute().item(), whole, rtol=1e-6)


class _Tagged(TaskMetric):
    """A user's subclass whose list state holds Python objects (TorchMetrics' ``cat`` list of anything)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(1)
        self.add_state("tags", [], dist_reduce_fx="cat")
        self.add_state("scores", [], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, tags: list[str]) -> None:
        self.tags.extend(tags)
        self.scores.append(preds)

    def compute(self) -> torch.Tensor:
        return torch.cat(self.scores).sum() / len(self.tags)


def test_subclass_list_state_of_python_objects():
    """A list state holding strings (and chunks requiring grad): forward keeps them as TorchMetrics' round does
    (it raised AttributeError: 'str' object has no attribute 'requires_grad')."""
    fast, slow = _Tagged(), _Tagged()
    for seed in range(3):
        preds = torch.rand(2, generator=_gen(seed)).requires_grad_(True)
        tags = [f"a{seed}", f"b{seed}"]
        assert _same(fast(preds, tags), torchmetrics_forward(slow, preds, tags))
        assert fast.tags == slow.tags == [t for s in range(seed + 1) for t in (f"a{s}", f"b{s}")]
        assert _same([c.detach() for c in fast.scores], [c.detach() for c in slow.scores])
        assert not any(c.requires_grad for c in fast.scores)  # the states keep no graph
    assert _same(fast.compute(), slow.compute().detach())


_DDP_CASES = ("AUC(weighted)", "AUC(tasks=2)", "GroupedAUC", "XAUC", "NDCG(k=3)", "NDCG(k=3, padded)", "RankingMetrics")
_DDP_SIZES = ((6, 0, 5), (3, 7, 2))  # per rank: uneven batches, an empty one


def _ddp_forwards(rank: int, world_size: int, name: str) -> dict[str, Any]:
    """Forward each of this rank's batches, compute (synced), forward again, compute again."""
    factory, make = CASES[name]
    metric = factory()
    sizes = _DDP_SIZES[rank]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch_values = [metric(**make(100 * rank + i, n)) for i, n in enumerate(sizes[:2])]
        first = metric.compute()
        batch_values.append(metric(**make(100 * rank + 2, sizes[2])))
        second = metric.compute()
    return {"batch": batch_values, "first": first, "second": second}


@pytest.mark.ddp
@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize("name", _DDP_CASES)
def test_forward_then_ddp_sync(ddp_pool, name):
    """Real gloo, 2 ranks: states left by forward sync as after updates (the value over both ranks' batches),
    and each batch value is the batch's own (forward after a synced compute too)."""
    results = ddp_pool.run(_ddp_forwards, name)
    factory, make = CASES[name]
    batches = {(r, i): make(100 * r + i, n) for r, sizes in enumerate(_DDP_SIZES) for i, n in enumerate(sizes)}

    def updated(keys: list[tuple[int, int]]) -> Any:
        metric = factory()
        for key in keys:
            metric.update(**batches[key])
        return metric.compute()

    def close(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        return bool(torch.allclose(a.double(), b.double(), rtol=1e-12, atol=1e-12, equal_nan=True))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = updated([(r, i) for r in (0, 1) for i in (0, 1)])
        second = updated([(r, i) for r in (0, 1) for i in (0, 1, 2)])
        for rank, result in enumerate(results):
            assert close(result["first"], first) and close(result["second"], second), (name, rank)
            for i, value in enumerate(result["batch"]):
                assert close(value, updated([(rank, i)])), (name, rank, i)
