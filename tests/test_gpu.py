"""The device path: no host sync in ``update``, one per step for a collection, CUDA == CPU.

Machines without a GPU (CI) run the device path on CPU tensors (``force_device_path``) and count
the calls that would make the host wait for a device (``Tensor.item``/``tolist``/``__bool__``,
``nonzero``, ``unique``, ``bincount``, boolean-mask indexing, ...). Tests marked ``cuda`` run
the real thing where a GPU exists, with ``torch.cuda.set_sync_debug_mode("error")`` around
``update``.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests import test_auc, test_pairwise_auc, test_pointwise
from tests.helpers import tester as H
from torchmetrics_ext import aggregation as agg
from torchmetrics_ext.metrics import counters, pointwise
from torchmetrics_ext.utilities import checks
from torchmetrics_ext.utilities.device import force_device_path, on_device_path

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ----------------------------------------------------------------------------- counting host syncs

_TENSOR_SYNCS = (
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "numpy",
    "nonzero",
    "unique",
    "bincount",
    "masked_select",
    "repeat_interleave",
)
_TORCH_SYNCS = ("nonzero", "unique", "unique_consecutive", "bincount", "masked_select", "repeat_interleave")


@contextlib.contextmanager
def count_syncs() -> Iterator[list[str]]:
    """Record every call that reads a device value on the host (list of names, in call order)."""
    calls: list[str] = []
    inside = [False]  # the mode below hands a counted call back to its wrapper: count it once

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if inside[0] or (
                name.endswith("repeat_interleave") and not isinstance(args[1] if len(args) > 1 else None, torch.Tensor)
            ):
                return fn(*args, **kwargs)  # integer repeats: sizes known on the host
            calls.append(name)
            inside[0] = True
            try:
                return fn(*args, **kwargs)
            finally:
                inside[0] = False

        return wrapper

    def boolean(index: Any) -> bool:
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)

    class Indexing(TorchFunctionMode):
        """Boolean-mask indexing, seen through a mode.

        Patching ``Tensor.__getitem__``/``__setitem__`` on the class, even undone, leaves CPython's
        sequence slot on ``torch.Tensor``, after which ``torch.as_tensor([0-dim tensors])`` raises
        "len() of a 0-d tensor" in every later test of the process (a CI flake).
        """

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.Tensor.__getitem__ and boolean(args[1]):
                calls.append("boolean mask")
            elif func is torch.Tensor.__setitem__ and boolean(args[1]):
                value = args[2]
                if isinstance(value, torch.Tensor) and value.numel() != 1:
                    calls.append("boolean mask assignment")  # x[mask] = values: the mask's count is read
            return func(*args, **(kwargs or {}))

    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for name in _TENSOR_SYNCS:
            mp.setattr(torch.Tensor, name, counted(f"Tensor.{name}", getattr(torch.Tensor, name)))
        for name in _TORCH_SYNCS:
            mp.setattr(torch, name, counted(f"torch.{name}", getattr(torch, name)))
        stack.enter_context(Indexing())
        yield calls


def test_count_syncs_sees_the_usual_suspects():
    x = torch.tensor([0.0, 1.0, 2.0])
    with count_syncs() as calls:
        x.tolist()
        bool(x.any())
        x[x > 0]
        torch.nonzero(x)
        torch.bincount(x.long())
        torch.repeat_interleave(x, torch.tensor([1, 2, 0]))
        torch.repeat_interleave(x, 2)  # not a sync
        x.sum() * 2  # not a sync
        x.long().bincount()
        x.repeat_interleave(torch.tensor([1, 2, 0]))
        y = x.clone()
        y[x > 0] = torch.tensor([5.0, 6.0])
        y[x > 0] = 0.0  # a fill: no count read
    expected = ["Tensor.tolist", "Tensor.__bool__", "boolean mask", "torch.nonzero", "torch.bincount"]
    more = ["Tensor.bincount", "Tensor.repeat_interleave", "boolean mask assignment"]
    assert calls == [*expected, "torch.repeat_interleave", *more]


# ----------------------------------------------------------------------------- the metrics and their batches


def _batch(seed: int, num_tasks: int, n: int = 257, weighted: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (num_tasks, n) if num_tasks > 1 else (n,)
    # (T, N) predictions as a model emits them: the transpose of an (N, T) output, not contiguous
    preds = torch.rand(n, num_tasks, generator=g).T if num_tasks > 1 else torch.rand(n, generator=g)
    out = {"preds": preds, "target": (torch.rand(shape, generator=g) < preds).float()}
    if weighted:
        weights = torch.rand(n, generator=g) * 2
        weights[::7] = 0.0  # rows of zero weight: dropped on the CPU path, kept on the device path
        out["weights"] = weights
    out["groups"] = torch.randint(0, 40, (n,), generator=g)
    return out


POINTWISE = [getattr(tmx, name) for name in pointwise.__all__]
# the counters of (preds, target, weights); NumMissingLabels reads NaN-aware bounds of the labels
COUNTERS = [getattr(tmx, name) for name in counters.__all__ if name != "TensorWeightedAverage"]
AUC_FAMILY = {
    "auc": tmx.AUC,
    "auprc": tmx.AUPRC,
    "auc-bins": partial(tmx.AUC, num_bins=1000),
    "auprc-bins": partial(tmx.AUPRC, num_bins=64),
    "gauc": tmx.GroupedAUC,
    "gauprc-complete": partial(tmx.GroupedAUPRC, groups_complete_per_batch=True),
    "gauc-complete-weighted": partial(tmx.GroupedAUC, groups_complete_per_batch=True, weight_groups=True),
    "rauc": tmx.RegressionAUC,
    "xauc": tmx.XAUC,
}
METRICS = {cls.__name__: cls for cls in [*POINTWISE, *COUNTERS]} | AUC_FAMILY


def _collection(num_tasks: int, validate_args: bool) -> MetricCollection:
    return MetricCollection(
        {name: factory(num_tasks=num_tasks, validate_args=validate_args) for name, factory in METRICS.items()},
        compute_groups=True,
    )


# ----------------------------------------------------------------------------- no sync in update (CPU, device path)


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_update_without_validation_never_syncs(name, num_tasks):
    metric = METRICS[name](num_tasks=num_tasks, validate_args=False)
    with force_device_path():
        for seed in range(3):
            batch = _batch(seed, num_tasks)
            if not name.startswith("g"):
                batch.pop("groups")
            with count_syncs() as calls:
                metric.update(**batch)
            assert calls == [], f"{name}: host syncs in update: {calls}"
        value = metric.compute()
    expected = METRICS[name](num_tasks=num_tasks)
    for seed in range(3):
        batch = _batch(seed, num_tasks)
        if not name.startswith("g"):
            batch.pop("groups")
        expected.update(**batch)
    H.assert_close(value, expected.compute().numpy(), 1e-12, 1e-14, f"{name} device path vs CPU path")


def _ranking_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "preds": torch.rand(300, generator=g),
        "target": torch.randint(0, 3, (300,), generator=g),
        "indexes": torch.randint(0, 30, (300,), generator=g),
    }


def _padded_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    return {
        "preds": torch.rand(30, 10, generator=g),
        "target": torch.randint(0, 3, (30, 10), generator=g),
        "mask": torch.rand(30, 10, generator=g) < 0.8,
        "weights": torch.rand(30, generator=g),
    }


_ALL_RANKING = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map", "r_precision", "f1")

OTHER_FAMILIES = {
    # exact modes store the rows in update and rank them at compute; the padded and
    # queries_complete_per_batch ranking modes rank in update with the device path's dense kernel
    "ndcg": (partial(tmx.NDCG, k=10), _ranking_batch),
    "ranking-metrics": (partial(tmx.RankingMetrics, ks=(1, 10), metrics=("ndcg", "recall", "mrr")), _ranking_batch),
    "ranking-complete": (
        partial(tmx.RankingMetrics, ks=(1, 10, None), metrics=_ALL_RANKING, queries_complete_per_batch=True),
        _ranking_batch,
    ),
    "ranking-padded": (partial(tmx.RankingMetrics, ks=(1, 3, None), metrics=_ALL_RANKING), _padded_batch),
    "ndcg-padding-value": (
        partial(tmx.NDCG, k=5, padding_value=0.0),
        lambda: {k: v for k, v in _padded_batch().items() if k != "mask"},
    ),
    "multiclass-recall": (
        partial(tmx.MulticlassRecallAtK, k=3, num_classes=12),
        lambda: {"preds": torch.rand(40, 12), "target": torch.randint(0, 12, (40,))},
    ),
    "distribution": (agg.Distribution, lambda: {"value": torch.randn(300)}),
}


@pytest.mark.parametrize("name", sorted(OTHER_FAMILIES))
def test_other_families_update_without_sync(name):
    factory, batch = OTHER_FAMILIES[name]
    metric = factory(validate_args=False)
    with force_device_path():
        metric.update(**batch())
        with count_syncs() as calls:
            metric.update(**batch())
    assert calls == [], f"{name}: host syncs in update: {calls}"


@pytest.mark.parametrize("seed", range(40))
def test_ranking_in_update_device_path_equals_cpu_path(seed):
    """The device path's dense kernel (every row kept, one slot per row, no host read) against the
    sort path on the CPU (checked against ranx/pytrec_eval in test_ranking): padded lists with masks,
    padding values and query weights, complete queries with ties, float relevance, every option."""
    g = torch.Generator().manual_seed(seed)
    opts = {
        "ks": (1, 3, None) if seed % 3 else (2, 5),
        "metrics": _ALL_RANKING if seed % 3 else tuple(m for m in _ALL_RANKING if m != "r_precision"),
        "exponential_gain": seed % 4 == 1,
        "adaptive_k": seed % 5 == 2,
        "empty_target_action": ("skip", "zero", "one")[seed % 3],
        "remove_single_length_sessions": seed % 7 == 3,
    }
    if seed % 2 == 0:  # padded (Q, L)
        q, length = 1 + seed % 11, 1 + seed % 8
        preds = (
            torch.randint(0, 4, (q, length), generator=g) / 4 if seed % 4 == 0 else torch.rand(q, length, generator=g)
        )
        target = (
            torch.randint(0, 4, (q, length), generator=g)
            if seed % 3
            else torch.rand(q, length, generator=g).round(decimals=1)
        )
        batch = {"preds": preds, "target": target}
        if seed % 5 == 0:
            batch["mask"] = torch.rand(q, length, generator=g) < 0.7
        if seed % 6 == 2:
            opts["padding_value"] = 0.0
            batch["preds"] = torch.where(torch.rand(q, length, generator=g) < 0.2, 0.0, preds)
            # no relevant candidate scored `padding_value` (refused: it would be dropped with the padding)
            batch["target"] = torch.where(batch["preds"] == 0.0, torch.zeros((), dtype=target.dtype), target)
        if seed % 4 == 2:
            batch["weights"] = torch.rand(q, generator=g)
    else:  # flat rows of complete queries
        n = 1 + (seed * 7) % 80
        preds = torch.randint(0, 5, (n,), generator=g).double() if seed % 4 == 1 else torch.rand(n, generator=g)
        target = torch.randint(0, 3, (n,), generator=g) if seed % 3 else torch.rand(n, generator=g) < 0.3
        batch = {"preds": preds, "target": target, "indexes": torch.randint(-5, 9, (n,), generator=g)}
        if seed % 5 == 1:
            batch["mask"] = torch.rand(n, generator=g) < 0.7
        if seed % 4 == 3:
            batch["weights"] = torch.rand(n, generator=g)
        opts["queries_complete_per_batch"] = True
    for validate_args in (True, False):
        cpu, device = (tmx.RankingMetrics(validate_args=validate_args, **opts) for _ in range(2))
        for _ in range(2):
            cpu.update(**batch)
            with force_device_path(), count_syncs() as calls:
                device.update(**batch)
            if not validate_args:
                assert calls == [], calls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected, got = cpu.compute(), device.compute()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-14, equal_nan=True, msg=key)


@pytest.mark.parametrize(
    "factory", [tmx.NormalizedEntropy, partial(tmx.AUC, num_bins=100), tmx.AUC], ids=["ne", "binned-auc", "exact-auc"]
)
def test_windowed_batch_larger_than_the_window_validates_once(factory):
    """The newest samples of a batch larger than the window were validated again (new views: a second read)."""
    from torchmetrics_ext import Windowed

    g = torch.Generator().manual_seed(4)
    p, y = torch.rand(100, generator=g), (torch.rand(100, generator=g) < 0.4).float()
    metric = Windowed(factory(), 50)
    with force_device_path():
        with count_syncs() as calls:
            metric.update(p, y)
        value = metric.compute()
    assert calls == ["Tensor.tolist"], calls
    expected = factory()
    expected.update(p[50:], y[50:])
    torch.testing.assert_close(value["window"], expected.compute(), rtol=1e-12, atol=0)
    bad = p.clone()
    bad[10] = 2.0  # outside [0, 1] among the samples the window drops: still rejected, nothing changes
    with force_device_path(), pytest.raises(ValueError, match="probabilities"):
        metric.update(bad, y)
    torch.testing.assert_close(metric.compute()["window"], expected.compute(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_multi_label_precision_reads_its_bounds_once(weighted):
    """Codes, weights and the float copy of the codes were read in two or three host reads per update."""
    g = torch.Generator().manual_seed(8)
    preds, target = torch.randint(0, 8, (2, 50), generator=g), torch.randint(0, 8, (2, 50), generator=g)
    weights = torch.rand(50, generator=g) if weighted else None
    metric = tmx.MultiLabelPrecision(num_labels=3, num_tasks=2)
    with force_device_path():
        with count_syncs() as calls:
            metric.update(preds, target, weights)
        value = metric.compute()
    assert calls == ["Tensor.tolist"], calls
    # by hand: per task and label, the weight of predicted-and-true over the weight of predicted
    w = np.ones(50) if weights is None else weights.numpy()
    bits = np.arange(3)
    predicted, actual = (preds.numpy()[..., None] >> bits) & 1, (target.numpy()[..., None] >> bits) & 1
    expected = (predicted * actual * w[:, None]).sum(1) / (predicted * w[:, None]).sum(1)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)
    bad = weights.clone() if weighted else torch.ones(50)
    bad[3] = -1.0
    with force_device_path(), pytest.raises(ValueError, match="weights"):
        metric.update(preds, target, bad)


def test_ranking_device_path_empty_query_error_counts_queries():
    metric = tmx.NDCG(k=3, empty_target_action="error")
    preds, target = torch.rand(4, 3), torch.tensor([[1, 0, 0], [0, 0, 0], [0, 2, 0], [1, 1, 0]])
    with force_device_path(), pytest.raises(ValueError, match=r"row 1 of the padded `preds`\."):
        metric.update(preds, target)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_tasks", [1, 2])
def test_collection_syncs_once_per_step(num_tasks, weighted):
    """Every metric validates, but the batch's bounds are read from the device once per step."""
    collection = _collection(num_tasks, validate_args=True)
    with force_device_path():
        for seed in range(3):
            batch = _batch(seed, num_tasks, weighted=weighted)
            with count_syncs() as calls:
                collection.update(**batch)
            assert calls == ["Tensor.tolist"], calls
    unvalidated = _collection(num_tasks, validate_args=False)
    with force_device_path():
        for seed in range(3):
            with count_syncs() as calls:
                unvalidated.update(**_batch(seed, num_tasks, weighted=weighted))
            assert calls == []


def test_num_missing_labels_reads_its_nan_labels_with_the_step():
    """NumMissingLabels validated a NaN-masked copy of the labels: a second read per step in a collection.

    Now it reads the labels as given (NaN-aware): one read alone, none more next to metrics that read them.
    """
    g = torch.Generator().manual_seed(9)
    preds, weights = torch.rand(2, 300, generator=g), torch.rand(300, generator=g)
    target = (torch.rand(2, 300, generator=g) < 0.3).double()
    target[:, ::7] = float("nan")
    missing, count_all = tmx.NumMissingLabels(num_tasks=2), tmx.NumMissingLabels(num_tasks=2, count_zero_weight=True)
    with force_device_path():
        with count_syncs() as calls:
            missing.update(preds, target, weights)
        assert calls == ["Tensor.tolist"], calls
        with count_syncs() as calls:
            count_all.update(preds, target, weights)  # the same labels: their NaN-aware bounds are remembered
        assert calls == [], calls
        nan = np.isnan(target.numpy())
        np.testing.assert_allclose(missing.compute().numpy(), (nan * weights.double().numpy()).sum(1), rtol=1e-12)
        np.testing.assert_allclose(count_all.compute().numpy(), nan.sum(1), rtol=0)
        for bad_value in (float("inf"), -float("inf")):
            bad = target.clone()
            bad[1, 3] = bad_value  # among NaN labels
            with pytest.raises(ValueError, match="finite real values, got values containing inf"):
                missing.update(preds, bad, weights)
        np.testing.assert_allclose(missing.compute().numpy(), (nan * weights.double().numpy()).sum(1), rtol=1e-12)
        clean = torch.nan_to_num(target, nan=0.0)
        collection = MetricCollection(
            {"ne": tmx.NormalizedEntropy(num_tasks=2), "missing": tmx.NumMissingLabels(num_tasks=2)},
            compute_groups=False,
        )
        with count_syncs() as calls:
            collection.update(preds, clean, weights)
        assert calls == ["Tensor.tolist"], calls
    assert collection["missing"].compute().tolist() == [0.0, 0.0]


def test_exact_auc_float64_weights_with_zeros_read_once():
    """Exact AUC keeps float32 weights; float64 weights with zeros needed a second read for their
    smallest positive value (per task in the module). Now it is part of the step's one read."""
    from torchmetrics_ext.module import RecMetricModule, RecTaskInfo

    g = torch.Generator().manual_seed(3)
    p, y = torch.rand(2, 200, generator=g), (torch.rand(2, 200, generator=g) < 0.4).float()
    w = torch.rand(2, 200, generator=g, dtype=torch.float64)
    w[:, ::5] = 0.0
    tasks = [RecTaskInfo(t, f"{t}_y", f"{t}_p", f"{t}_w", group_id_name="g") for t in "ab"]
    module = RecMetricModule(tasks, {"auc": "auc", "gauc": "gauc", "ne": "ne"}, throughput=False)
    out = {f"{t}_{c}": v[i] for i, t in enumerate("ab") for c, v in (("p", p), ("y", y), ("w", w))}
    out["g"] = torch.arange(200) % 9
    for make in (lambda: tmx.AUC(num_tasks=2), lambda: tmx.AUPRC(num_tasks=2)):
        metric = make()
        with force_device_path(), count_syncs() as calls:
            metric.update(p, y, w.clone())
        assert calls == ["Tensor.tolist"], calls
    with force_device_path(), count_syncs() as calls:
        module.update(out)
    assert calls == ["Tensor.tolist"], calls
    bad = w.clone()
    bad[1, 3] = 1e-46  # non-zero, below float32's smallest normal value
    with force_device_path(), pytest.raises(ValueError, match=r"Task 'b', `model_out\['b_w'\]`.*float32's range"):
        module.update({**out, "b_w": bad[1]})


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("padded", [False, True], ids=["flat", "padded"])
def test_ranking_collection_reads_bounds_once_per_step(weighted, padded):
    """Ranking metrics given the same batch share one read of its bounds (each read its own before)."""
    g = torch.Generator().manual_seed(5)
    shape = (30, 10) if padded else (300,)
    batch = {"preds": torch.rand(shape, generator=g), "target": torch.randint(0, 3, shape, generator=g)}
    if not padded:
        batch["indexes"] = torch.randint(0, 30, shape, generator=g)
    if weighted:
        batch["weights"] = torch.rand(shape[0], generator=g)
    collection = MetricCollection(
        {"ndcg": tmx.NDCG(k=10), "mrr": tmx.MRR(), "recall": tmx.RecallAtK(k=5)}, compute_groups=False
    )
    with force_device_path():
        with count_syncs() as calls:
            collection.update(**batch)
        value = collection.compute()
    assert calls.count("Tensor.tolist") == 1, calls
    for name, metric in {"ndcg": tmx.NDCG(k=10), "mrr": tmx.MRR(), "recall": tmx.RecallAtK(k=5)}.items():
        torch.testing.assert_close(value[name], metric(**batch), rtol=1e-12, atol=1e-14)  # CPU path's kernel
    bad = dict(batch, preds=batch["preds"].clone())
    bad["preds"].view(-1)[7] = float("nan")
    with force_device_path(), pytest.raises(ValueError, match="NaN"):
        collection.update(**bad)


@pytest.mark.parametrize("from_logits", [False, True])
def test_rec_metric_module_syncs_once_per_step(from_logits):
    """The module validates the stacked step once; its metrics then update without a sync.

    With logits, the metrics without ``from_logits`` (CTR, MSE) get ``sigmoid(logits)``, without a sync either.
    """
    from torchmetrics_ext.module import RecMetricModule, RecTaskInfo
    from torchmetrics_ext.registry import build_metric

    tasks = [RecTaskInfo(t, label_name=f"{t}_label", prediction_name=f"{t}_pred") for t in ("click", "like")]
    metrics = {"ne": "ne", "calibration": "calibration", "ctr": "ctr", "auc": "auc"}
    if from_logits:
        metrics = {name: build_metric(name, num_tasks=2, from_logits=True) for name in ("ne", "calibration", "auc")}
        metrics |= {"ctr": "ctr", "mse": "mse"}
    module = RecMetricModule(tasks, metrics, throughput=False)

    def model_out(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = {}
        for task in ("click", "like"):
            p = torch.rand(256, generator=g)
            out[f"{task}_pred"] = torch.logit(p) if from_logits else p
            out[f"{task}_label"] = (torch.rand(256, generator=g) < p).float()
        return out

    with force_device_path():
        module.update(model_out(0))
        for seed in (1, 2):
            with count_syncs() as calls:
                module.update(model_out(seed))
            assert calls == ["Tensor.tolist"], calls


# ----------------------------------------------------------------------------- remembered bounds are never stale


@pytest.fixture
def device_path() -> Iterator[None]:
    """Bounds are remembered on the device path only (on the CPU reading them costs nothing)."""
    with force_device_path():
        yield


def test_bounds_are_not_kept_on_the_cpu_path():
    preds, target = torch.rand(50), torch.ones(50, dtype=torch.int64)
    with count_syncs() as calls:
        tmx.AUC().update(preds, target)
        tmx.NormalizedEntropy().update(preds, target)
    assert id(preds) not in checks._CHECKED
    assert calls == ["Tensor.item"] * 8  # read directly: (min, max) of preds and target, twice


def _pair() -> tuple[tmx.AUC, tmx.NormalizedEntropy]:
    return tmx.AUC(), tmx.NormalizedEntropy()


def test_second_metric_reuses_the_bounds_of_the_same_tensors(device_path):
    preds, target = torch.rand(50), (torch.rand(50) < 0.5).float()
    first, second = _pair()
    with count_syncs() as calls:
        first.update(preds, target)
        second.update(preds, target)
    assert calls == ["Tensor.tolist"]


def test_a_tensor_modified_in_place_is_checked_again(device_path):
    preds, target = torch.rand(50), (torch.rand(50) < 0.5).float()
    first, second = _pair()
    first.update(preds, target)
    preds[3] = float("nan")  # an in-place write bumps the version counter
    with pytest.raises(ValueError, match="`preds` to be finite"):
        second.update(preds, target)
    view = preds[:10]
    preds.fill_(0.5)
    second.update(preds, target)  # checked and remembered again
    view.mul_(4)  # a write through a view bumps the same counter
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        second.update(preds, target)
    preds.fill_(0.5)
    second.update(preds, target)
    preds.set_(torch.full((50,), -1.0))  # the same object on new storage
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        second.update(preds, target)


def test_a_new_tensor_with_a_reused_id_is_checked_again(device_path):
    """An entry whose weak reference no longer points at the tensor (the id was reused) never matches."""
    good, bad = torch.rand(50), torch.full((50,), 2.0)
    target = torch.ones(50)
    tmx.AUC().update(good, target)
    entry = checks._CHECKED[id(good)]
    # what a reused id would look like: the entry of a dead tensor, under the new tensor's id
    checks._CHECKED[id(bad)] = (entry[0], checks._signature(bad), entry[2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        tmx.NormalizedEntropy().update(bad, target)
    del good
    assert all(ref() is not None for ref, _, _ in checks._CHECKED.values())  # dead entries are dropped


def test_a_view_is_checked_on_its_own(device_path):
    preds, target = torch.rand(2, 50), torch.ones(2, 50)
    tmx.AUC(num_tasks=2).update(preds, target)
    preds[1, 7] = 1.5
    with pytest.raises(ValueError, match="probabilities"):
        tmx.AUC().update(preds[1], target[1])


def test_inference_tensors_are_never_remembered(device_path):
    with torch.inference_mode():
        preds, target = torch.rand(50), torch.ones(50)
    first, second = _pair()
    with count_syncs() as calls:
        first.update(preds, target)
        second.update(preds, target)
    assert calls == ["Tensor.tolist", "Tensor.tolist"]
    assert id(preds) not in checks._CHECKED


def test_memory_is_bounded(device_path):
    for _ in range(3 * checks._CHECKED_SIZE):
        tensor = torch.rand(3)
        checks.checked_bounds([tensor], labels=[False])
        kept = tensor  # noqa: F841 - alive while the next ones are checked
    assert len(checks._CHECKED) <= checks._CHECKED_SIZE


def test_bounds_of_every_dtype_are_exact(device_path):
    """One host copy for several dtypes: a float16 tensor next to large int64 labels must not overflow."""
    preds = torch.tensor([0.5, 1.0], dtype=torch.float16)
    target = torch.tensor([0, 100_000])
    weights = torch.tensor([0.25, 3.0], dtype=torch.bfloat16)
    bounds = checks.checked_bounds([preds, target, weights, None], labels=[False, True, False, False])
    assert bounds == [(0.5, 1.0), (0.0, 100_000.0), (0.25, 3.0), ()]
    metric = tmx.RegressionAUC()
    metric.update(preds, target)  # real-valued labels: 100000 is finite
    soft = torch.tensor([0.0, 0.5, 1.0])
    assert checks.checked_bounds([soft], labels=[True]) == [(0.0, 1.0, 0.0, 0.5)]


_EDGE_VALUES = [0.0, -0.0, 1.0, -2.5, 3.0e38, -1.0e-45, float("inf"), float("-inf"), float("nan")]


def _same_bound(got: float, expected: float) -> bool:
    """Equal as floats (the CPU path reads integers as ints), NaN to NaN, and the sign of a zero kept."""
    expected = float(expected)
    if math.isnan(got) or math.isnan(expected):
        return math.isnan(got) and math.isnan(expected)
    return got == expected and math.copysign(1, got) == math.copysign(1, expected)


def _bounds_cases() -> list[torch.Tensor]:
    floats = [torch.tensor(_EDGE_VALUES[:-1], dtype=torch.float64), torch.tensor(_EDGE_VALUES, dtype=torch.float64)]
    cases = [values.to(dtype) for values in floats for dtype in (torch.float64, torch.float32, torch.float16)]
    cases += [torch.tensor([0.5, -7.25, 1.0e38]).to(torch.bfloat16), torch.tensor([1.0, float("nan")]).bfloat16()]
    extremes = torch.tensor([0, 1, -(2**63), 2**63 - 1])
    cases += [extremes, extremes[:2].int(), extremes[:2].short(), extremes[:2].to(torch.int8)]
    cases += [torch.tensor([3, 0, 255], dtype=torch.uint8), torch.tensor([True, False]), torch.tensor([True])]
    cases += [torch.tensor([7, 2**16 - 1], dtype=torch.uint16), torch.tensor([2**32 - 1, 5], dtype=torch.uint32)]
    cases += [torch.tensor([2**63 + 2**11, 1], dtype=torch.uint64)]
    return cases


@pytest.mark.parametrize("label", [False, True, checks.MISSING])
def test_device_bounds_equal_the_cpu_path_for_every_dtype(label):
    """The device path's one byte copy, decoded on the host, gives the CPU path's exact bounds, NaN, inf and -0.0 too."""
    for tensor in _bounds_cases():
        if label == checks.MISSING and not tensor.is_floating_point():
            continue  # integer labels cannot be missing
        expected = checks.checked_bounds([tensor], [label], device_path=False)[0]
        checks._CHECKED.clear()
        got = checks.checked_bounds([tensor], [label], device_path=True)[0]
        checks._CHECKED.clear()
        assert len(got) == len(expected), (tensor.dtype, got, expected)
        assert all(type(g) is float for g in got)
        assert all(map(_same_bound, got, expected)), (tensor.dtype, got, expected)


def test_device_bounds_of_several_dtypes_come_back_in_one_read(device_path):
    tensors = [
        torch.tensor([0.25, 1.0]).bfloat16(),
        torch.tensor([0, 3]),
        torch.tensor([2.0, 0.5], dtype=torch.float64),
    ]
    with count_syncs() as calls:
        bounds = checks.checked_bounds(tensors, [False, True, False])
    assert calls == ["Tensor.tolist"]
    assert bounds == [(0.25, 1.0), (0.0, 3.0), (0.5, 2.0)]


def test_device_bounds_of_a_dtype_without_host_format_go_through_float64(device_path, monkeypatch):
    monkeypatch.setattr(checks, "_HOST_FORMATS", {k: v for k, v in checks._HOST_FORMATS.items() if k != torch.float16})
    preds = torch.tensor([0.5, 0.125], dtype=torch.float16)
    assert checks.checked_bounds([preds, torch.tensor([1, 0])], [False, True]) == [(0.125, 0.5), (0.0, 1.0)]


def test_device_bounds_buffers_are_per_thread_and_bounded(device_path):
    """The kept byte buffer is written and read within one call: each thread has its own, and few are kept."""
    import threading

    preds = torch.tensor([0.25, 0.75])
    mine = checks._slots(preds.device, (torch.float32,))
    theirs: list[object] = []
    worker = threading.Thread(target=lambda: theirs.append(checks._slots(preds.device, (torch.float32,))))
    worker.start()
    worker.join()
    assert theirs[0][0] is not mine[0]
    assert checks._slots(preds.device, (torch.float32,))[0] is mine[0]  # kept for the next call
    for count in range(1, 2 * checks._SLOTS_KEPT):
        checks._slots(preds.device, (torch.float32,) * count)
    assert len(checks._SLOTS.kept) <= checks._SLOTS_KEPT
    assert checks.checked_bounds([preds], [False]) == [(0.25, 0.75)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("label", [False, True, checks.MISSING])
def test_cuda_bounds_equal_the_cpu_path_for_every_dtype(label):
    for tensor in _bounds_cases():
        if label == checks.MISSING and not tensor.is_floating_point():
            continue
        expected = checks.checked_bounds([tensor], [label])[0]
        got = checks.checked_bounds([tensor.cuda()], [label])[0]
        checks._CHECKED.clear()
        assert len(got) == len(expected) and all(map(_same_bound, got, expected)), (tensor.dtype, got, expected)


def test_a_tensor_checked_as_labels_then_as_weights_gives_two_bounds(device_path):
    """Bounds kept with the fractional parts of labels serve a later non-label check as ``(min, max)``.

    (They came back whole: one tensor given as labels and as weights crashed the weight check.)
    """
    column = torch.tensor([0.0, 0.5, 2.0])
    assert checks.checked_bounds([column], labels=[True]) == [(0.0, 2.0, 0.0, 0.5)]
    assert checks.checked_bounds([column], labels=[False]) == [(0.0, 2.0)]
    metric = tmx.WeightedMSE()
    metric.update(torch.tensor([0.1, 0.2, 0.3]), column, column)  # labels and weights: one tensor
    expected = np.average((np.array([0.1, 0.2, 0.3]) - column.numpy()) ** 2, weights=column.numpy())
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- the benchmark script


def test_bench_gpu_quick_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for line in ("parity", "exact AUC", "binned AUC", "NDCG@10", "per step"):
        assert line in out.stdout, out.stdout[-3000:]


# ----------------------------------------------------------------------------- on a real GPU


def _cuda_batches(num_tasks: int, name: str) -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in range(3):
        batch = {k: v.cuda() for k, v in _batch(seed, num_tasks).items()}
        if not name.startswith("g"):
            batch.pop("groups")
        batches.append(batch)
    return batches


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_cuda_update_without_validation_never_syncs(name, num_tasks):
    metric = METRICS[name](num_tasks=num_tasks, validate_args=False).cuda()
    batches = _cuda_batches(num_tasks, name)
    metric.update(**batches[0])  # first call: allocator and lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            metric.update(**batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on_device_path(batches[0]["preds"])


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("name", sorted(OTHER_FAMILIES))
def test_cuda_other_families_update_without_sync(name):
    """Ranking (every mode, the dense kernel in update), multiclass recall and Distribution on CUDA: no sync."""
    factory, batch = OTHER_FAMILIES[name]
    metric = factory(validate_args=False).cuda()
    inputs = {key: value.cuda() for key, value in batch().items()}
    metric.update(**inputs)  # first call: allocator and lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(**inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = factory(validate_args=False)
    cpu_inputs = {key: value.cpu() for key, value in inputs.items()}  # the same batch (some draw unseeded)
    expected.update(**cpu_inputs)
    expected.update(**cpu_inputs)
    got, want = metric.compute(), expected.compute()
    for key in want if isinstance(want, dict) else [None]:
        a, b = (got, want) if key is None else (got[key], want[key])
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12, equal_nan=True, check_dtype=False)


@pytest.mark.cuda
@CUDA
def test_cuda_collection_syncs_once_per_step():
    collection = _collection(2, validate_args=True).cuda()
    batches = _cuda_batches(2, "g")
    collection.update(**batches[0])
    with count_syncs() as calls:
        for batch in batches[1:]:
            collection.update(**batch)
    assert calls == ["Tensor.tolist"] * 2


def _harness_cases() -> list[tuple[Any, str]]:
    return [(module, cid) for module in (test_auc, test_pairwise_auc, test_pointwise) for cid in sorted(module.CASES)]


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize(("module", "cid"), _harness_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_cuda_equals_cpu(module, cid):
    """Every harness case of the AUC and pointwise families: the same value on CUDA as on the CPU."""
    case = module.CASES[cid]
    data = case.make_data(0)
    bounds = H.random_bounds(H.num_samples(data, case.sample_axis), np.random.default_rng(1), 4, case.min_batch)
    values = []
    for device in ("cpu", "cuda"):
        metric = case.metric().to(device)
        for batch in H.split(data, bounds, case.sample_axis):
            metric.update(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values.append(metric.compute())
    assert values[1].device.type == "cuda"
    H.assert_close(values[1], values[0].numpy(), 1e-12, 1e-14, f"{cid} CUDA vs CPU")


@pytest.mark.cuda
@CUDA
def test_cuda_references_are_gone():
    """The weak references of remembered bounds do not keep CUDA batches alive."""
    preds = torch.rand(1000, device="cuda")
    tmx.AUC().cuda().update(preds, torch.ones(1000, device="cuda"))
    ref = weakref.ref(preds)
    del preds
    assert ref() is None


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("name", ["auc", "gauc", "rauc", "xauc"])
def test_state_never_aliases_the_callers_tensors(name, device_path):
    """Inputs already of the stored dtype are copied: changing them after update changes nothing."""
    g = torch.Generator().manual_seed(0)
    dtype = torch.float64 if name in ("rauc", "xauc") else torch.float32
    preds = torch.rand(60, generator=g, dtype=dtype)
    batch = {"preds": preds, "target": (torch.rand(60, generator=g) < preds).to(dtype)}
    if name == "gauc":
        batch["groups"] = torch.randint(0, 5, (60,), generator=g)
    with force_device_path(device_path):
        metric = METRICS[name]()
        metric.update(**batch)
        before = metric.compute()
        preds.mul_(0.5).add_(0.25)
        batch["target"].fill_(1.0)
        metric.update(**{k: v[:0] for k, v in batch.items()})  # an empty batch: compute() is not cached
        assert torch.equal(metric.compute(), before)


# ----------------------------------------------------------------------------- the module on a device


def _module_values(device: str, forced: bool = False, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Every metric family of the module (windowed), fed the same steps, computed on ``device``
    (moved there with ``.to(device, dtype)`` when ``dtype`` is given: Lightning's true precision)."""
    from tests import test_module as TM

    data = TM.make_data(3, n=900)
    steps = TM.batches(data, [0, 120, 333, 600, 777, 900])
    module = TM.build(window_size=400)
    module = module.to(device) if dtype is None else module.to(device, dtype)
    with force_device_path(forced), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in steps:
            module.update({k: v.to(device) for k, v in step.items()})
        values = module.compute()
    assert all(v.device.type == device for v in values.values())
    return {k: float(v) for k, v in values.items()}


def _assert_same_values(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=key)


def test_module_device_path_equals_cpu_path():
    """RecMetricModule's lifetime and window values are the same through the kernels' device path."""
    _assert_same_values(_module_values("cpu", forced=True), _module_values("cpu"))


@pytest.mark.cuda
@CUDA
def test_cuda_module_equals_cpu():
    """RecMetricModule on CUDA: every key, lifetime and window, equal to the CPU's."""
    _assert_same_values(_module_values("cuda"), _module_values("cpu"))


@pytest.mark.cuda
@CUDA
def test_cuda_module_moved_with_a_dtype_keeps_its_states():
    """``module.to("cuda", torch.bfloat16)`` moves every state (window rings included) and casts none:
    every key equal to the CPU's."""
    _assert_same_values(_module_values("cuda", dtype=torch.bfloat16), _module_values("cpu"))


@pytest.mark.cuda
@CUDA
def test_cuda_module_validates_once_per_step():
    """Validation on: one host read per module step on CUDA, whatever the number of metrics."""
    from tests import test_module as TM

    module = TM.build(window_size=400).cuda()
    steps = [{k: v.cuda() for k, v in step.items()} for step in TM.batches(TM.make_data(4), [0, 200, 400, 600])]
    module.update(steps[0])
    for step in steps[1:]:
        with count_syncs() as calls:
            module.update(step)
        assert calls == ["Tensor.tolist"], calls


def test_constants_reach_the_device_once_not_every_update():
    """TowerQPS, Reliability and TensorWeightedAverage copied a CPU constant to the device in every update
    (a synchronising copy on CUDA). On the meta device, every host-to-device ``.to`` is seen."""
    from torch.overrides import TorchFunctionMode

    class HostToDevice(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.copies: list[tuple[int, ...]] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            targets = [*args[1:], *kwargs.values()]
            if func.__name__ == "to" and args[0].device.type == "cpu" and any(str(a) == "meta" for a in targets):
                self.copies.append(tuple(args[0].shape))
            return func(*args, **kwargs)

    p, y = torch.rand(64, device="meta"), torch.rand(64, device="meta")
    cases = [
        (tmx.TowerQPS(warmup_steps=1, validate_args=False), (p,), 0),
        (tmx.Reliability(validate_args=False), (p, y), 1),
        (
            tmx.TensorWeightedAverage(num_tasks=2, weighted=[True, False], validate_args=False),
            (torch.rand(2, 64, device="meta"), p),
            1,
        ),
        # the binned AUC's bin edges (made on the CPU at the first update of a setting and dtype)
        (tmx.AUC(num_bins=1000, validate_args=False), (p, y), 1),
        (tmx.AUPRC(num_bins=1000, num_tasks=2, validate_args=False), (torch.rand(2, 64, device="meta"),) * 2, 1),
    ]
    for metric, args, first in cases:
        metric = metric.to("meta")
        with HostToDevice() as seen:
            for _ in range(3):
                metric.update(*args)
        assert len(seen.copies) <= first, (type(metric).__name__, seen.copies)  # at most once, at the first update


def test_segmented_metrics_of_a_collection_read_the_segment_ids_once():
    """Each Segmented read its ids' bounds with two syncs; now one read with the inputs, remembered for the same ids."""
    from torchmetrics import MetricCollection

    gen = torch.Generator().manual_seed(0)
    p, y = torch.rand(50, generator=gen), (torch.rand(50, generator=gen) < 0.5).float()
    s = torch.randint(0, 3, (50,), generator=gen)
    counts = []
    for names in (("ne", "ctr"), ("ne", "ctr", "calibration", "mse")):
        classes = {"ne": tmx.NormalizedEntropy, "ctr": tmx.CTR, "calibration": tmx.Calibration, "mse": tmx.WeightedMSE}
        collection = MetricCollection({n: tmx.Segmented(classes[n](), 3) for n in names}, compute_groups=False)
        with force_device_path(), count_syncs() as calls:
            collection.update(p.clone(), y.clone(), segments=s.clone())  # fresh tensors: nothing remembered yet
        counts.append(len(calls))
    assert counts == [1, 1]  # the inputs' and the ids' bounds in one copy, whatever the number of metrics


_AGGREGATIONS = {"sum": agg.Sum, "mean": agg.Mean, "mean-w": agg.Mean, "max": agg.Max, "min": agg.Min}


def _aggregation_args(name: str, with_nan: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    value, weight = torch.randn(300, generator=g), torch.rand(300, generator=g)
    if with_nan:
        value[::7] = float("nan")
        weight[::11] = float("nan")
    return (value, weight) if name == "mean-w" else (value,)


@pytest.mark.parametrize("strategy", ["error", "warn", "ignore", "disable", 0.5])
@pytest.mark.parametrize("name", sorted(_AGGREGATIONS))
def test_aggregation_update_without_validation_never_syncs(name, strategy):
    """Sum/Mean/Max/Min read the device twice per update (TorchMetrics' ``if nans.any()``), validated or
    not; NaN is now dropped or filled with ``torch.where``. On ``meta`` (where any read raises) too."""
    with_nan = strategy not in ("error", "disable")
    metric = _AGGREGATIONS[name](nan_strategy=strategy, validate_args=False)
    expected = _AGGREGATIONS[name](nan_strategy=strategy)  # validated, on the CPU path
    for seed in range(2):
        args = _aggregation_args(name, with_nan, seed)
        with force_device_path(), count_syncs() as calls:
            metric.update(*args)
        assert calls == [], calls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "warn"
            expected.update(*args)
    torch.testing.assert_close(metric.compute(), expected.compute(), rtol=1e-12, atol=1e-12)
    meta = _AGGREGATIONS[name](nan_strategy=strategy, validate_args=False).to("meta")
    meta.update(*(arg.to("meta") for arg in _aggregation_args(name, with_nan)))  # reading would raise
    assert all(state.device.type == "meta" for state in meta.metric_state.values())


@pytest.mark.parametrize("weighted", [False, True])
def test_aggregation_collection_validates_with_one_read(weighted):
    """Validated, the bounds of ``value`` (and ``weight``) are read once, through ``checked_bounds``, and
    shared by the metrics given the same tensors (3 to 5 reads per metric before). A metric reads the
    tensors it is given: the collection runs the weighted mean first (keys in sorted order), so that
    Sum, Max and Min, which take no weight, find the values' bounds already read."""
    collection = MetricCollection(
        {"a_mean": agg.Mean(), "sum": agg.Sum(), "max": agg.Max(), "min": agg.Min()}, compute_groups=False
    )
    for seed in range(2):
        args = _aggregation_args("mean-w" if weighted else "mean", with_nan=False, seed=seed)
        with force_device_path(), count_syncs() as calls:
            collection.update(args[0], **({"weight": args[1]} if weighted else {}))
        assert calls == ["Tensor.tolist"], calls
        with force_device_path(), count_syncs() as calls:
            agg.Mean().update(*(arg.clone() for arg in args))  # alone, fresh tensors
        assert calls == ["Tensor.tolist"], calls
    # a batch holding NaN under a strategy that accepts it: the rest is read once more (checked for inf)
    value = _aggregation_args("sum", with_nan=True)[0]
    with force_device_path(), count_syncs() as calls:
        agg.Sum(nan_strategy="ignore").update(value)
    assert calls == ["Tensor.tolist"] * 2, calls


@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_recall_collection_reads_bounds_once_per_step(weighted):
    """Each MulticlassRecallAtK read its bounds with its own ``stack(...).tolist()``, never remembered:
    two of them in a collection read twice per step. Now through ``checked_bounds``: once."""
    from sklearn.metrics import top_k_accuracy_score

    collection = MetricCollection(
        {f"r{k}": tmx.MulticlassRecallAtK(k=k, num_classes=12) for k in (1, 5)}, compute_groups=False
    )
    batches = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        batch = {"preds": torch.randn(40, 12, generator=g), "target": torch.randint(0, 12, (40,), generator=g)}
        if weighted:
            batch["weights"] = torch.rand(40, generator=g, dtype=torch.float64)
        batches.append(batch)
        with force_device_path(), count_syncs() as calls:
            collection.update(**batch)  # fresh tensors every step
        assert calls == ["Tensor.tolist"], calls
    values = collection.compute()
    for k in (1, 5):
        expected = top_k_accuracy_score(
            torch.cat([b["target"] for b in batches]).numpy(),
            torch.cat([b["preds"] for b in batches]).numpy(),
            k=k,
            labels=np.arange(12),
            sample_weight=torch.cat([b["weights"] for b in batches]).numpy() if weighted else None,
        )
        np.testing.assert_allclose(values[f"r{k}"].item(), expected, rtol=1e-12)
    bad_cases = [
        ({"preds": batches[0]["preds"].clone().index_fill_(1, torch.tensor([3]), float("nan"))}, "without NaN"),
        ({"target": batches[0]["target"] + 12}, r"class ids in \[0, 11\]"),
        ({"weights": -torch.ones(40)}, "`weights` to be finite and non-negative"),
    ]
    for change, match in bad_cases:
        with force_device_path(), pytest.raises(ValueError, match=match):
            collection.update(**(batches[0] | change))


@pytest.mark.parametrize("inference", [False, True], ids=["grad-mode", "inference-mode"])
@pytest.mark.parametrize("in_collection", [False, True], ids=["alone", "collection"])
def test_segmented_validates_with_one_read_per_step(in_collection, inference):
    """Segmented read its ids' bounds in a second ``checked_bounds`` call after the wrapped metric's
    read (2 per step with fresh tensors); the ids now join that read (``read_along``). Inference
    tensors are never remembered: the ids' bounds come back from the read itself. In a collection
    the metrics run in sorted key order: here the Segmented one first (the limit is tested below)."""
    metric = tmx.Segmented(tmx.CTR(), num_segments=5)
    target: Any = MetricCollection({"ctr_by": metric, "ne": tmx.NormalizedEntropy()}) if in_collection else metric
    labels, ids, weights = [], [], []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        p = torch.rand(97, generator=g)
        y, s, w = (torch.rand(97, generator=g) < p).float(), torch.randint(0, 5, (97,), generator=g), torch.rand(97)
        labels.append(y)
        ids.append(s)
        weights.append(w)
        with torch.inference_mode(inference), force_device_path(), count_syncs() as calls:
            target.update(p, y, w, segments=s)  # fresh tensors every step
        assert calls == ["Tensor.tolist"], calls
    y, s, w = (torch.cat(x).double().numpy() for x in (labels, ids, weights))
    expected = [np.sum(w[s == k] * y[s == k]) / np.sum(w[s == k]) for k in range(5)]  # weighted CTR per segment
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)
    g = torch.Generator().manual_seed(9)
    p, y = torch.rand(20, generator=g), (torch.rand(20, generator=g) < 0.5).float()
    before = {name: value.clone() for name, value in metric.metric_state.items()}
    for bad, match in ((torch.full((20,), 5), r"in \[0, 5\).*\[5, 5\]"), (torch.full((20,), -1), r"\[-1, -1\]")):
        with force_device_path(), pytest.raises(ValueError, match=match):
            metric.update(p, y, segments=bad)
    for name, value in metric.metric_state.items():
        assert torch.equal(value, before[name]), name


def test_segmented_after_a_metric_without_ids_reads_them_alone():
    """The documented limit: a metric that runs before Segmented in a collection (sorted keys) and does
    not take the ids reads the inputs before the ids are known; the ids then take a read of their own."""
    collection = MetricCollection({"ne": tmx.NormalizedEntropy(), "seg": tmx.Segmented(tmx.CTR(), num_segments=5)})
    g = torch.Generator().manual_seed(0)
    p = torch.rand(50, generator=g)
    y, s = (torch.rand(50, generator=g) < p).float(), torch.randint(0, 5, (50,), generator=g)
    with force_device_path(), count_syncs() as calls:
        collection.update(p, y, segments=s)
    assert calls == ["Tensor.tolist"] * 2, calls


def _no_undefined_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the undefined-value warning, whose ``bool(any)`` cannot run on ``meta`` (a read)."""
    import importlib

    import torchmetrics_ext.utilities.warnings as W

    def never(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(W, "warn_undefined", never)
    monkeypatch.setattr(importlib.import_module("torchmetrics_ext.functional.auc.binary"), "warn_undefined", never)


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_exact_auc_compute_before_any_sample_is_on_the_metrics_device(monkeypatch, num_tasks):
    """Exact AUC/AUPRC with no sample made their zero sums on the CPU (the empty list state fell through to
    the CPU kernels' packing), so compute() of a metric on a GPU returned a CPU tensor; the empty window of
    ``Windowed(AUC())`` too. ``meta`` stands in for the GPU."""
    _no_undefined_warning(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TorchMetrics: compute before update
        for factory in (tmx.AUC, tmx.AUPRC):
            value = factory(num_tasks=num_tasks).to("meta").compute()
            assert value.device.type == "meta" and value.shape == ((num_tasks,) if num_tasks > 1 else ())
        window = tmx.Windowed(tmx.AUC(num_tasks=num_tasks), window_size=10).to("meta").compute()
        assert {key: value.device.type for key, value in window.items()} == {"lifetime": "meta", "window": "meta"}
        # and on the CPU the value is still nan (with the warning, skipped here)
        assert torch.isnan(tmx.AUC(num_tasks=num_tasks).compute()).all()


@pytest.mark.parametrize("factory", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_grouped_exact_compute_before_any_sample_runs_on_the_metrics_device(monkeypatch, factory):
    """GroupedAUC/GroupedAUPRC with no sample handed CPU ``(T, 0)`` tensors to the kernel (``torch.unique``
    has no ``meta`` kernel: a spy records the devices it is given)."""
    import importlib

    grouped = importlib.import_module("torchmetrics_ext.metrics.auc.grouped")
    seen: list[tuple[str, ...]] = []

    def spy(scores: torch.Tensor, signed: torch.Tensor, groups: torch.Tensor, *args: Any) -> Any:
        seen.append((scores.device.type, signed.device.type, groups.device.type, str(groups.dtype)))
        zeros = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
        return zeros, zeros.clone()

    monkeypatch.setattr(grouped.F, "_grouped_update", spy)
    _no_undefined_warning(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = factory(num_tasks=2).to("meta").compute()
    assert value.device.type == "meta"
    assert seen == [("meta", "meta", "meta", "torch.int64")]


@pytest.mark.cuda
@CUDA
def test_cuda_exact_auc_before_any_sample_answers_on_the_gpu():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for metric in (tmx.AUC(), tmx.AUPRC(), tmx.GroupedAUC(), tmx.GroupedAUPRC()):
            assert metric.cuda().compute().is_cuda, type(metric).__name__
        for metric in (tmx.AUC(), tmx.AUPRC()):
            assert all(part.is_cuda for part in metric.cuda().curve()), type(metric).__name__
        assert tmx.Windowed(tmx.AUC(), window_size=10).cuda().compute()["window"].is_cuda


@pytest.mark.parametrize("weighted", [False, True])
def test_rec_metric_module_of_unvalidated_metrics_reads_nothing_back(weighted):
    """Every metric built with ``validate_args=False``: the module checks no value and reads nothing per step.

    Its values equal those of the module whose metrics validate (the same steps), weights of exactly 1
    included (taken as given, not detected), and sklearn's AUC.
    """
    from sklearn.metrics import roc_auc_score

    from torchmetrics_ext.module import RecMetricModule, RecTaskInfo
    from torchmetrics_ext.registry import build_metric

    names = ("ne", "calibration", "ctr", "mse", "auc", "auc_binned", "gauc", "ndcg@5")

    def module(validate: bool) -> RecMetricModule:
        tasks = [
            RecTaskInfo(
                t, f"{t}_y", f"{t}_p", f"{t}_w" if weighted else "absent", group_id_name="g", session_id_name="q"
            )
            for t in ("click", "like")
        ]
        metrics = {}
        for name in names:
            entry, kwargs = ("auc", {"num_bins": 64}) if name == "auc_binned" else (name, {})
            metrics[name] = build_metric(entry, num_tasks=2, validate_args=validate, **kwargs)
        return RecMetricModule(tasks, metrics, window_size=500, throughput=False)

    def step(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = {"g": torch.randint(0, 7, (200,), generator=g), "q": torch.arange(200) // 8}
        for t in ("click", "like"):
            out[f"{t}_p"] = torch.rand(200, generator=g)
            out[f"{t}_y"] = (torch.rand(200, generator=g) < 0.4).float()
            out[f"{t}_w"] = torch.ones(200) if seed % 2 else torch.rand(200, generator=g)
        return out

    trusted, checked = module(False), module(True)
    steps = [step(seed) for seed in range(4)]
    with force_device_path():
        trusted.update(steps[0])
        checked.update(steps[0])
        for data in steps[1:]:
            with count_syncs() as calls:
                trusted.update(data)
            assert calls == [], calls
            checked.update(data)
        got, want = trusted.compute(), checked.compute()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-15, equal_nan=True)
    y = torch.cat([s["click_y"] for s in steps]).numpy()
    p = torch.cat([s["click_p"] for s in steps]).numpy()
    w = torch.cat([s["click_w"] for s in steps]).numpy() if weighted else None
    assert got["auc/click"].item() == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-12)


def test_rec_metric_module_validates_unless_every_metric_is_unvalidated():
    """One validating metric (or TorchRec's zero-weight skip) keeps the step's check: a bad value is refused."""
    from torchmetrics_ext.module import RecMetricModule, RecTaskInfo
    from torchmetrics_ext.registry import build_metric

    tasks = [RecTaskInfo("click", "y", "p", "w")]
    good = {"p": torch.tensor([0.2, 0.7, 0.4]), "y": torch.tensor([0.0, 1.0, 1.0]), "w": torch.ones(3)}
    bad = dict(good, p=torch.tensor([0.2, 1.7, 0.4]))
    mixed = RecMetricModule(
        tasks, {"ne": build_metric("ne", validate_args=False), "ctr": build_metric("ctr")}, throughput=False
    )
    with pytest.raises(ValueError, match=r"Task 'click', `model_out\['p'\]`.*probabilities in \[0, 1\]"):
        mixed.update(bad)
    skipping = RecMetricModule(
        tasks,
        {"ne": build_metric("ne", validate_args=False), "ctr": build_metric("ctr", validate_args=False)},
        throughput=False,
    )
    skipping._skip_zero_weight_steps = True  # from_torchrec_config's should_validate_update
    with force_device_path(), count_syncs() as calls:
        skipping.update(good)
    assert calls == ["Tensor.tolist"], calls
    skipping.update(dict(good, w=torch.zeros(3)))  # all-zero weights: skipped, as TorchRec skips it
    assert skipping.compute()["ctr/click"].item() == pytest.approx(2 / 3, rel=1e-15)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("module_on_cuda", [False, True])
def test_cuda_module_refuses_a_step_on_the_other_device_and_changes_nothing(module_on_cuda):
    """A RecMetricModule on one device given columns on the other names the move before any metric takes the step."""
    from sklearn.metrics import roc_auc_score

    from torchmetrics_ext.module import RecMetricModule

    module = RecMetricModule(["click"], ["ne", "auc"], window_size=64, throughput=False)
    if module_on_cuda:
        module = module.cuda()
    home, other = (
        (torch.device("cuda"), torch.device("cpu")) if module_on_cuda else (torch.device("cpu"), torch.device("cuda"))
    )
    p = torch.rand(32, dtype=torch.float64)
    y = (torch.rand(32) < p).long()
    module.update({"prediction": p.to(home), "label": y.to(home)})
    with pytest.raises(ValueError, match="the device of the module's metrics"):
        module.update({"prediction": p.to(other), "label": y.to(other)})
    assert module._step == 1
    values = module.compute()
    assert math.isclose(float(values["auc/click"]), roc_auc_score(y.numpy(), p.numpy()), rel_tol=1e-12)


# ----------------------------------------------------------------------------- metric_tasks: tasks of several domains


def _two_domain_module(validated: bool, segmented: bool, device: str = "cpu") -> Any:
    """NE and AUC read click (probabilities, 0/1 labels), MSE reads watch_time (seconds): two domains;
    with ``segmented``, a Segmented NE on click reads segment ids along."""
    tasks = [
        tmx.RecTaskInfo("click", "click_label", "click_pred", "w", group_id_name="country" if segmented else None),
        tmx.RecTaskInfo("watch_time", "wt_label", "wt_pred", "w", group_id_name="country" if segmented else None),
    ]
    options = {} if validated else {"validate_args": False}
    metrics: dict[str, Any] = {name: dict(options) for name in ("ne", "auc", "mse")}
    subsets = {"ne": ["click"], "auc": ["click"], "mse": ["watch_time"]}
    if segmented:
        metrics["sne"] = {"metric": "segmented_ne", "num_segments": 3, **options}
        subsets["sne"] = ["click"]
    module = tmx.RecMetricModule(tasks, metrics, throughput=False, window_size=100, metric_tasks=subsets)
    return module.to(device)


def _two_domain_steps(count: int, device: str = "cpu", n: int = 40) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(21)
    steps = []
    for _ in range(count):
        p = torch.rand(n, generator=g) * 0.9 + 0.05
        step = {
            "click_pred": p,
            "click_label": (torch.rand(n, generator=g) < p).float(),
            "wt_pred": torch.rand(n, generator=g) * 300.0,
            "wt_label": (torch.rand(n, generator=g) * 600.0).round(),
            "w": torch.randint(1, 4, (n,), generator=g).float(),
            "country": torch.randint(0, 3, (n,), generator=g),
        }
        steps.append({key: value.to(device) for key, value in step.items()})
    return steps


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("validated", [True, False])
def test_module_of_tasks_of_two_domains_reads_the_host_once_per_step(validated, segmented):
    """``metric_tasks`` with a regression head next to a binary one: the validated step read each domain's
    bounds in a read of its own (two host syncs); now one read for every domain (and the segment ids), none
    unvalidated. A bad value of either domain is still refused from that read, and nothing changes."""
    module = _two_domain_module(validated, segmented)
    steps = _two_domain_steps(4)
    with force_device_path():
        module.update(steps[0])
        for step in steps[1:]:
            with count_syncs() as calls:
                module.update(step)
            assert calls == (["Tensor.tolist"] if validated else []), calls
        if validated:
            before = {key: float(value) for key, value in module.compute().items()}
            for key, value, match in (
                ("click_label", 2.0, r"Task 'click', `model_out\['click_label'\]`: Expected `target` to hold"),
                ("wt_pred", math.nan, r"Task 'watch_time', `model_out\['wt_pred'\]`: Expected `preds` to be finite"),
            ):
                bad = dict(steps[0], **{key: torch.full_like(steps[0][key], value)})
                with pytest.raises(ValueError, match=match):
                    module.update(bad)
            if segmented:
                with pytest.raises(ValueError, match=r"segment ids in \[0, 3\)"):
                    module.update(dict(steps[0], country=steps[0]["country"] + 1))
            assert {key: float(value) for key, value in module.compute().items()} == before
            assert module._step == len(steps)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("validated", [True, False])
def test_cuda_module_of_tasks_of_two_domains_reads_the_host_once_per_step(validated, segmented):
    """On CUDA: one host read per validated ``metric_tasks`` step of two domains, none unvalidated; values
    equal the CPU's."""
    module = _two_domain_module(validated, segmented, "cuda")
    steps = _two_domain_steps(4, "cuda")
    module.update(steps[0])
    for step in steps[1:]:
        with count_syncs() as calls:
            module.update(step)
        assert calls == (["Tensor.tolist"] if validated else []), calls
    on_cpu = _two_domain_module(validated, segmented)
    for step in _two_domain_steps(4):
        on_cpu.update(step)
    _assert_same_values(
        {k: float(v) for k, v in module.compute().items()}, {k: float(v) for k, v in on_cpu.compute().items()}
    )
