"""``MetricCollection(compute_groups=True)`` over the package's metrics: every member as if run alone.

TorchMetrics links the states of a compute group's members to the first member's tensors after the first
``update``: only that member runs ``update``, while ``forward`` runs every member's own ``forward`` (each must
rebind its states, never write the shared ones in place), and ``compute``, ``reset``, checkpoints, copies,
pickles and ``set_dtype`` go through each member. The random test draws collections of 2 to 4 members from one
family (every registry metric, ``Windowed``, ``Segmented``, ``RankingMetrics``, ``MulticlassRecallAtK``, the
aggregation metrics, the secondary metrics, metric arithmetic, TorchMetrics' ``MeanMetric`` and
``BinaryAUROC``), several of one class and setting (a group), one class with other settings (never one) and
classes that share their statistics (NE and log loss, MSE and RMSE: a group across classes), 1 or 3 tasks,
weights, float16/bfloat16/float64 inputs; it runs random ``forward`` (under ``no_grad`` and
``inference_mode`` too) and ``update`` steps with ``compute``, ``reset``, rejected batches (every member's
states unchanged), ``state_dict`` into a fresh collection (``persistent(True)``), ``deepcopy``, pickle,
``clone``, ``.to``, ``set_dtype``, ``.half()`` and the collection's state-copying ``__getitem__`` in between
(groups found by TorchMetrics, or named with ``compute_groups=[[...]]``),
and compares every member's ``forward`` value and ``compute`` with the same metric run alone on the same
steps (which its own tests check against references). The focused tests check the collection against
references written here (``collections.Counter``, NumPy, scikit-learn).

``TMX_CG_SEEDS=N`` runs N random sequences (default 100, a few seconds); ``TMX_CG_SEEDS=A-B`` runs seeds A..B;
``TMX_CG_MODULE_SEEDS=N`` the module's (default 12).
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC

import torchmetrics_ext as tmx
from tests.helpers.forward_paths import torchmetrics_forward
from torchmetrics_ext import aggregation as agg
from torchmetrics_ext.aggregation import CategoricalCount
from torchmetrics_ext.registry import build_metric

POINTWISE = [
    "ne", "log_loss", "calibration", "ctr", "weighted_average", "accuracy", "weighted_precision", "weighted_recall",
    "mse", "rmse", "mae", "r_squared", "nmse", "nrmse", "ne_positive", "cali_free_ne", "recalibrated_ne",
    "recalibrated_calibration", "label_average", "sum_weights", "num_positive_samples", "weighted_sum_predictions",
    "auc", "auprc", "regression_auc", "xauc",
]  # fmt: skip

RANKING = [
    "ndcg",
    "ndcg@3",
    "mrr",
    "mrr@2",
    "map",
    "map@3",
    "recall@3",
    "precision@2",
    "hit_rate@3",
    "f1@3",
    "r_precision",
]
Batch = dict[str, Any]
Factory = Callable[[], Metric]
# members from outside the registry, built for T tasks
SECONDARY: dict[str, Callable[[int], Metric]] = {
    "hindsight": lambda t: tmx.HindsightTargetPR(num_tasks=t, num_thresholds=50),
    "hindsight_0.7": lambda t: tmx.HindsightTargetPR(num_tasks=t, num_thresholds=50, target_precision=0.7),
    "missing": lambda t: tmx.NumMissingLabels(num_tasks=t),
    "serving": lambda t: tmx.NumServingExamples(num_tasks=t),
    "reliability": lambda t: tmx.Reliability(num_tasks=t, num_bins=5),
    "reliability_3": lambda t: tmx.Reliability(num_tasks=t, num_bins=3),
    "session_p@2": lambda t: tmx.SessionPrecisionAtK(k=2, num_tasks=t),
    "session_r@2": lambda t: tmx.SessionRecallAtK(k=2, num_tasks=t),
    "session_r@2_micro": lambda t: tmx.SessionRecallAtK(k=2, num_tasks=t, average="micro"),
    "tensor_avg": lambda t: tmx.TensorWeightedAverage(num_tasks=t),
    "gauc_complete": lambda t: tmx.GroupedAUC(num_tasks=t, groups_complete_per_batch=True),
    "ne*100": lambda t: tmx.NormalizedEntropy(num_tasks=t) * 100,
    "ctr-calibration": lambda t: tmx.CTR(num_tasks=t) - tmx.Calibration(num_tasks=t),
}
TORCHMETRICS = ("MeanMetric", "BinaryAUROC")  # TorchMetrics' own: no rejected batch, no inference mode


def _seeds() -> list[int]:
    given = os.environ.get("TMX_CG_SEEDS", "100")
    if "-" in given:
        first, last = given.split("-")
        return list(range(int(first), int(last) + 1))
    return list(range(int(given)))


# ----------------------------------------------------------------------------- batches


def _pointwise_batch(rng: np.random.Generator, tasks: int, n: int, dtype: torch.dtype, weighted: bool) -> Batch:
    shape = (tasks, n) if tasks > 1 else (n,)
    batch: Batch = {
        "preds": torch.tensor(rng.uniform(0.01, 0.99, size=shape)).to(dtype),
        "target": torch.tensor((rng.uniform(size=shape) < 0.4).astype(np.float32)),
    }
    if weighted:
        batch["weights"] = torch.tensor(rng.uniform(0, 2, size=shape if rng.uniform() < 0.5 else (n,)))
    ids = torch.tensor(rng.integers(0, 4, size=n))
    batch.update(groups=ids, sessions=ids, segments=torch.tensor(rng.integers(0, 3, size=n)))
    batch["values"] = torch.tensor(rng.uniform(0, 5, size=shape)).to(dtype)
    if tasks == 1:
        batch["indexes"] = ids
    return batch


def _multiclass_batch(rng: np.random.Generator, tasks: int, n: int, dtype: torch.dtype, weighted: bool) -> Batch:
    batch: Batch = {
        "preds": torch.tensor(rng.uniform(size=(n, 5))).to(dtype),
        "target": torch.tensor(rng.integers(0, 5, size=n)),
    }
    if weighted:
        batch["weights"] = torch.tensor(rng.uniform(0, 2, size=n))
    return batch


def _values_batch(rng: np.random.Generator, tasks: int, n: int, dtype: torch.dtype, weighted: bool) -> Batch:
    batch: Batch = {"value": torch.tensor(rng.uniform(0.1, 5, size=n)).to(dtype)}
    if weighted:
        batch["weight"] = torch.tensor(rng.uniform(0, 2, size=n))
    batch["categories"] = torch.tensor(rng.integers(0, 4, size=n))
    return batch


def _bad(batch: Batch) -> Batch:
    """The batch with one input every member refuses (checked on copies of the members alone before use)."""
    bad = dict(batch)
    if "target" in bad:
        bad["target"] = bad["target"][..., :-1]
    if "value" in bad:
        value = bad["value"].clone()
        value[0] = float("nan")
        bad["value"] = value
    if "categories" in bad:
        bad["categories"] = torch.tensor([0.5])
    return bad


# ----------------------------------------------------------------------------- collections


def _collection_of(rng: np.random.Generator) -> tuple[str, int, list[tuple[str, Factory]], Callable[..., Batch]]:
    """A family, its number of tasks, 2 to 4 (name, factory) members and its batch maker."""
    family = str(rng.choice(["pointwise", "pointwise", "window", "segmented", "ranking", "ranking_dict",
                             "multiclass", "aggregation", "categorical", "mixed", "mixed"]))  # fmt: skip
    tasks = int(rng.choice([1, 3])) if family in ("pointwise", "window", "segmented", "mixed") else 1
    size = int(rng.integers(2, 5))
    members: list[tuple[str, Factory]] = []

    def add(name: str, factory: Factory) -> None:
        members.append((name, factory))

    if family in ("pointwise", "window"):
        names = [str(n) for n in rng.choice(POINTWISE + (["gauc", "gauprc"] if family == "pointwise" else []), size=2)]
        for _ in range(size):
            name = names[int(rng.uniform() < 0.4)]
            draw = rng.uniform()
            if family == "window":
                window = int(rng.choice([7, 30]))
                add(f"{name}/w{window}", lambda n=name, w=window: tmx.Windowed(build_metric(n, num_tasks=tasks), w))
            elif name in ("auc", "auprc") and draw < 0.4:
                add(f"{name}/bins", lambda n=name: build_metric(n, num_tasks=tasks, num_bins=64))
            elif name in ("accuracy", "weighted_precision") and draw < 0.4:
                add(f"{name}/0.3", lambda n=name: build_metric(n, num_tasks=tasks, threshold=0.3))
            elif draw > 0.85:
                add(f"{name}/unvalidated", lambda n=name: build_metric(n, num_tasks=tasks, validate_args=False))
            else:
                add(name, lambda n=name: build_metric(n, num_tasks=tasks))
        if tasks == 1 and family == "pointwise" and rng.uniform() < 0.4:
            add("BinaryAUROC", BinaryAUROC)
        return family, tasks, members, _pointwise_batch
    if family == "segmented":
        for _ in range(size):
            inner = str(rng.choice(["ne", "ctr", "calibration", "mse", "accuracy"]))
            add(f"segmented_{inner}", lambda n=inner: tmx.Segmented(build_metric(n, num_tasks=tasks), num_segments=3))
        return family, tasks, members, _pointwise_batch
    if family == "ranking":
        names = [str(n) for n in rng.choice(RANKING, size=2)]
        for _ in range(size):
            name = names[int(rng.uniform() < 0.4)]
            add(name, lambda n=name: build_metric(n))
        return family, tasks, members, _pointwise_batch
    if family == "ranking_dict":
        settings = [
            {"ks": [2, 5], "metrics": ["ndcg", "recall"]},
            {"ks": [3], "metrics": ["mrr", "map", "precision"]},
            {"ks": [2, 5], "metrics": ["ndcg", "recall"], "exponential_gain": True},
        ]
        for _ in range(size):
            i = int(rng.integers(0, 3))
            add(f"ranking_metrics_{i}", lambda c=settings[i]: tmx.RankingMetrics(**c))
        if rng.uniform() < 0.5:
            add("ndcg@2", lambda: tmx.NDCG(k=2))
        return family, tasks, members, _pointwise_batch
    if family == "multiclass":
        for _ in range(size):
            k = int(rng.choice([1, 2]))
            add(f"recall@{k}", lambda k=k: tmx.MulticlassRecallAtK(k=k, num_classes=5))
        return family, tasks, members, _multiclass_batch
    if family == "aggregation":
        for _ in range(size):
            name = str(rng.choice(["Sum", "Mean", "Max", "Min", "Distribution", "Mean", "MeanMetric"]))
            add(name, MeanMetric if name == "MeanMetric" else getattr(agg, name))
        return family, tasks, members, _values_batch
    if family == "categorical":
        for _ in range(size):
            add("CategoricalCount", CategoricalCount)
        return family, tasks, members, _values_batch
    pool = [*SECONDARY, *(str(n) for n in rng.choice(POINTWISE, size=3))]
    if tasks == 1:
        pool += [*(str(n) for n in rng.choice(RANKING, size=2)), "ranking_metrics", "BinaryAUROC"]
    picks = [str(n) for n in rng.choice(pool, size=3)]
    for _ in range(size):
        name = picks[int(rng.integers(0, 3))]
        if name in SECONDARY:
            add(name, lambda n=name: SECONDARY[n](tasks))
        elif name == "ranking_metrics":
            add(name, lambda: tmx.RankingMetrics(ks=[2], metrics=["ndcg", "mrr"]))
        elif name == "BinaryAUROC":
            add(name, BinaryAUROC)
        elif name in RANKING:
            add(name, lambda n=name: build_metric(n))
        else:
            add(name, lambda n=name: build_metric(n, num_tasks=tasks))
    return "mixed", tasks, members, _pointwise_batch


# ----------------------------------------------------------------------------- comparisons


def _member_values(out: dict[str, Any], refs: dict[str, Any]) -> dict[str, Any]:
    """Each member's value in the collection's flat output (a dict value's entries under ``key_entry`` or ``entry``)."""
    values = {}
    for key, ref in refs.items():
        if key in out:
            values[key] = out[key]
        else:
            values[key] = {str(k): out.get(f"{key}_{k}", out.get(str(k))) for k in ref}
    return values


def _assert_same(got: Any, expected: Any, what: str, rtol: float) -> None:
    if isinstance(expected, dict):
        expected = {str(k): v for k, v in expected.items()}
        got = {str(k): v for k, v in got.items()}
        assert got.keys() == expected.keys(), (what, got, expected)
        for k in expected:
            _assert_same(got[k], expected[k], f"{what}[{k}]", rtol)
        return
    got, expected = torch.as_tensor(got).double(), torch.as_tensor(expected).double()
    assert got.shape == expected.shape, (what, got, expected)
    assert torch.allclose(got, expected, rtol=rtol, atol=1e-12, equal_nan=True), (what, got, expected)


def _snapshot(metric: Metric) -> dict[str, Tensor]:
    """Every state of ``metric`` and its submodules, copied (list states joined)."""
    states: dict[str, Tensor] = {}
    for name in metric._defaults:
        value = getattr(metric, name)
        if isinstance(value, list):
            value = torch.cat([c.reshape(-1).double() for c in value]) if value else torch.zeros(0)
        states[name] = value.detach().clone().double()
    for child_name, child in metric.named_children():
        if isinstance(child, Metric):
            states.update({f"{child_name}.{k}": v for k, v in _snapshot(child).items()})
    return states


def _rejected_by_all(alone: dict[str, Metric], batch: Batch) -> bool:
    for metric in alone.values():
        twin = copy.deepcopy(metric)
        try:
            twin.update(**twin._filter_kwargs(**batch))
        except (ValueError, TypeError):
            continue
        return False
    return True


# ----------------------------------------------------------------------------- the random sequences


def _run(seed: int, steps: int = 12) -> None:
    rng = np.random.default_rng(seed)
    family, tasks, members, make_batch = _collection_of(rng)
    keys = [f"m{i}" for i in range(len(members))]
    factories = dict(zip(keys, (factory for _, factory in members)))
    names = [name for name, _ in members]
    foreign = any(name in TORCHMETRICS for name in names)
    dtype = torch.float32
    if family not in ("categorical",) and rng.uniform() < 0.5:
        dtype = [torch.float64, torch.float16, torch.bfloat16][int(rng.integers(0, 3))]
    weighted = bool(rng.uniform() < 0.5) and family not in ("ranking", "ranking_dict")
    cast: list[torch.dtype] = []

    # explicit groups of the members of one class and setting, for members with states of their own (TorchMetrics
    # links a group by the first member's own states: a wrapper's, in its submodules, are not linked)
    groups: bool | list[list[str]] = True
    if rng.uniform() < 0.3 and family != "window" and not any(name in ("ne*100", "ctr-calibration") for name in names):
        by_name: dict[str, list[str]] = {}
        for key, name in zip(keys, names):
            by_name.setdefault(name, []).append(key)
        groups = list(by_name.values())

    def fresh() -> MetricCollection:
        collection = MetricCollection({k: f() for k, f in factories.items()}, compute_groups=groups)
        if cast:
            collection.set_dtype(cast[-1])
        return collection

    collection = fresh()
    alone = {k: f() for k, f in factories.items()}
    # the wrappers take any keyword (TorchMetrics then passes them all): only the wrapped metric's
    wrapped = {"window": ("preds", "target", "weights"), "segmented": ("preds", "target", "weights", "segments")}
    make_any = make_batch

    def make_batch(*args: Any) -> Batch:
        batch = make_any(*args)
        return {k: v for k, v in batch.items() if k in wrapped[family]} if family in wrapped else batch

    rtol = 1e-9
    trail = [f"seed {seed}: {family}, {tasks} task(s), {dtype}, weighted={weighted}, members {names}, groups {groups}"]
    unvalidated = any(name.endswith("/unvalidated") for name in names)
    ops = ["forward", "update", "compute", "reset", "bad", "checkpoint", "deepcopy", "pickle", "getitem", "clone",
           "to", "dtype"]  # fmt: skip
    odds = np.array([0.3, 0.3, 0.15, 0.04, 0.07, 0.04, 0.02, 0.02, 0.03, 0.02, 0.01, 0.04])
    for op in rng.choice(ops, size=steps, p=odds / odds.sum()):
        trail.append(str(op))
        what = " -> ".join(trail)
        if op in ("forward", "update"):
            batch = make_batch(rng, tasks, int(rng.integers(4, 30)), dtype, weighted)
            mode = int(rng.integers(0, 3)) if not foreign else int(rng.integers(0, 2))
            context = (torch.enable_grad(), torch.no_grad(), torch.inference_mode())[mode]
            with context:
                if op == "forward":
                    out = collection(**batch)
                    refs = {k: m(**m._filter_kwargs(**batch)) for k, m in alone.items()}
                    for key, value in _member_values(out, refs).items():
                        _assert_same(value, refs[key], f"{what}: forward value of {key}", rtol)
                else:
                    collection.update(**batch)
                    for metric in alone.values():
                        metric.update(**metric._filter_kwargs(**batch))
        elif op == "compute":
            try:
                refs = {k: m.compute() for k, m in alone.items()}
            except ValueError:  # BinaryAUROC without samples
                continue
            for key, value in _member_values(collection.compute(), refs).items():
                _assert_same(value, refs[key], f"{what}: compute of {key}", rtol)
        elif op == "reset":
            collection.reset()
            for metric in alone.values():
                metric.reset()
        elif op == "bad":
            batch = _bad(make_batch(rng, tasks, 6, dtype, weighted))
            if foreign or unvalidated or not _rejected_by_all(alone, batch):
                continue
            before = {k: _snapshot(m) for k, m in collection.items(keep_base=True, copy_state=False)}
            with pytest.raises((ValueError, TypeError)):
                (collection if rng.uniform() < 0.5 else collection.update)(**batch)
            for key, metric in collection.items(keep_base=True, copy_state=False):
                after = _snapshot(metric)
                assert after.keys() == before[key].keys(), what
                for name, value in before[key].items():
                    assert torch.equal(value.nan_to_num(7.0), after[name].nan_to_num(7.0)), (what, key, name)
        elif op == "checkpoint":
            collection.persistent(True)
            resumed = fresh()
            resumed.persistent(True)
            resumed.load_state_dict(collection.state_dict())
            collection = resumed
        elif op == "deepcopy":
            collection = copy.deepcopy(collection)
        elif op == "pickle":
            collection = pickle.loads(pickle.dumps(collection))
        elif op == "getitem":  # TorchMetrics copies the group's states into the members it hands out
            collection[keys[int(rng.integers(0, len(keys)))]]
        elif op == "clone":
            collection = collection.clone()
        elif op == "to":
            collection = collection.to("cpu")
        elif op == "dtype" and not foreign:
            how = str(rng.choice(["float64", "float32", "half", "bfloat16"]))
            trail.append(how)
            if how in ("float64", "float32"):
                cast.append(getattr(torch, how))
                collection.set_dtype(cast[-1])
                for metric in alone.values():
                    metric.set_dtype(cast[-1])
                # a value cached before the cast is cast with the states (TorchMetrics): a member whose cache
                # the collection dropped computes it again from the cast states
                rtol = 1e-9 if how == "float64" and rtol == 1e-9 else 1e-5
            else:  # a model's cast: only moves the states
                collection = getattr(collection, how)()
                alone = {k: getattr(m, how)() for k, m in alone.items()}
    try:
        refs = {k: m.compute() for k, m in alone.items()}
    except ValueError:
        return
    for key, value in _member_values(collection.compute(), refs).items():
        _assert_same(value, refs[key], f"{' -> '.join(trail)}: final compute of {key}", rtol)


@pytest.mark.parametrize("seed", _seeds())
def test_random_collection_members_equal_the_metrics_alone(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(seed)


@pytest.mark.parametrize("seed", range(3))
def test_long_random_sequences_join_list_chunks_alike(seed):
    """150 steps: the list states' chunk joins (after 64 chunks) run in the group's leader and in each
    ``forward``, on lists the members share."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(10_000 + seed, steps=150)


# ----------------------------------------------------------------------------- against references


def test_categorical_forward_in_a_compute_group_counts_the_batch_once():
    """After the ``update`` that forms the group, ``forward`` of every member added the batch to the shared
    counts in place: a group of three counted a ``forward``'s batch three times."""
    collection = MetricCollection({k: CategoricalCount() for k in "abc"}, compute_groups=True)
    batches = [torch.tensor([0, 1, 1, 2]), torch.tensor([1, 3]), torch.tensor([2, 2, 0]), torch.tensor([3])]
    collection.update(batches[0])
    assert collection.compute_groups == {0: ["a", "b", "c"]}
    value = collection(batches[1])
    assert {k: float(v) for k, v in value.items()} == {f"{m}_{c}": 1.0 for m in "abc" for c in (1, 3)}
    collection.update(batches[2])
    collection(batches[3])
    expected = {str(k): float(c) for k, c in Counter(v for b in batches for v in b.tolist()).items()}
    values = collection.compute()
    for member in "abc":
        assert {k[2:]: float(v) for k, v in values.items() if k.startswith(member + "_")} == expected


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", POINTWISE)
def test_forward_after_set_dtype_keeps_the_states_dtype(name, num_tasks):
    """After ``set_dtype(torch.float32)`` a ``forward`` gave the sum states back their float64 (the batch statistics
    of the update were taken as the batch states in their own dtype): the cast was silently undone, and a
    checkpoint of the collection then failed to load into a fresh one cast the same way. TorchMetrics' round
    (reset, update, add) keeps float32, and the values are that round's."""
    rng = np.random.default_rng(3)
    shape = (num_tasks, 40) if num_tasks > 1 else (40,)
    batches = [
        {
            "preds": torch.tensor(rng.uniform(0.01, 0.99, size=shape), dtype=torch.float32),
            "target": torch.tensor((rng.uniform(size=shape) < 0.4).astype(np.float32)),
            "weights": torch.tensor(rng.uniform(0, 2, size=shape)),
        }
        for _ in range(3)
    ]

    def make() -> MetricCollection:
        members = {k: build_metric(name, num_tasks=num_tasks) for k in ("a", "b")}
        collection = MetricCollection(members, compute_groups=True)
        collection.set_dtype(torch.float32)
        return collection

    collection, twin = make(), build_metric(name, num_tasks=num_tasks).set_dtype(torch.float32)
    collection.update(**batches[0])
    twin.update(**batches[0])
    value = collection(**batches[1])
    expected = torchmetrics_forward(twin, **batches[1])
    dtypes = {k: _dtypes(v) for k, v in twin.metric_state.items()}
    assert torch.float64 not in {d for v in dtypes.values() for d in v}
    for key in ("a", "b"):
        assert {k: _dtypes(v) for k, v in collection[key].metric_state.items()} == dtypes
        torch.testing.assert_close(value[key], expected, rtol=0, atol=0, equal_nan=True)
    collection.persistent(True)
    resumed = make()
    resumed.persistent(True)
    resumed.load_state_dict(collection.state_dict())
    resumed.update(**batches[2])
    twin.update(**batches[2])
    for key, got in resumed.compute().items():
        torch.testing.assert_close(got, twin.compute(), rtol=0, atol=0, equal_nan=True, msg=key)


def _dtypes(value: Any) -> set[torch.dtype]:
    """The floating dtypes a state holds (each chunk's, for a list state)."""
    chunks = [value] if isinstance(value, torch.Tensor) else value
    return {chunk.dtype for chunk in chunks if chunk.is_floating_point()}


def test_a_collection_of_groups_against_numpy_and_sklearn():
    """Groups of NE, log loss, CTR, calibration, exact AUC and the aggregation ``Sum``/``Max``/``Mean`` members (two
    of each setting, NE and log loss grouped across classes), TorchMetrics' ``BinaryAUROC`` and ``MeanMetric``
    beside them, driven by ``forward``
    and ``update`` in turn with weights: each ``forward`` value is the batch's and each ``compute`` the
    running data's, by the formulas (NE: weighted log loss over the entropy of the weighted positive rate)."""
    rng = np.random.default_rng(11)
    members = {
        "ne_a": tmx.NormalizedEntropy(), "ne_b": tmx.NormalizedEntropy(), "logloss": tmx.LogLoss(),
        "ctr_a": tmx.CTR(), "ctr_b": tmx.CTR(), "calibration": tmx.Calibration(),
        "auc_a": tmx.AUC(), "auc_b": tmx.AUC(), "auroc": BinaryAUROC(), "mean": MeanMetric(),
        "sum_a": agg.Sum(), "sum_b": agg.Sum(), "max_a": agg.Max(), "max_b": agg.Max(), "wmean_a": agg.Mean(),
        "wmean_b": agg.Mean(),
    }  # fmt: skip
    collection = MetricCollection(members, compute_groups=True)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def expected(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
        rate = np.average(y, weights=w)
        entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
        ll = log_loss(y, p, sample_weight=w, labels=[0, 1])
        return {
            "ne": ll / entropy, "logloss": ll, "ctr": rate, "calibration": np.average(p, weights=w) / rate,
            "auc": roc_auc_score(y, p, sample_weight=w), "auroc": roc_auc_score(y, p), "mean": np.average(p, weights=w),
            "sum": np.sum(p), "max": np.max(p), "wmean": np.average(p, weights=w),
        }  # fmt: skip

    def check(values: dict[str, Tensor], ref: dict[str, float], what: str) -> None:
        for key, value in values.items():
            family = key.split("_")[0]
            # float32 scores (and the exact AUC's float32 weights, TorchMetrics' float32 states): a float32 margin
            rtol = 1e-5 if family in ("auroc", "mean", "auc") else 1e-7
            np.testing.assert_allclose(value.item(), ref[family], rtol=rtol, err_msg=f"{what} {key}")

    for step in range(8):
        n = int(rng.integers(20, 60))
        p = rng.uniform(0.01, 0.99, size=n).astype(np.float32)
        y = (rng.uniform(size=n) < 0.35).astype(np.float32)
        w = rng.uniform(0.1, 2.0, size=n)
        seen.append((p, y, w))
        tensors = {"preds": torch.tensor(p), "target": torch.tensor(y), "weights": torch.tensor(w)}
        if step % 3 == 1:
            collection.update(**tensors, value=torch.tensor(p), weight=torch.tensor(w))
        else:
            value = collection(**tensors, value=torch.tensor(p), weight=torch.tensor(w))
            check(value, expected(p, y, w), f"forward {step}")
        if step == 1:  # the first update forms the groups
            assert sorted(map(sorted, collection.compute_groups.values())) == sorted(
                [
                    ["auc_a", "auc_b"],
                    ["auroc"],
                    ["calibration", "ctr_a", "ctr_b"],
                    ["logloss", "ne_a", "ne_b"],
                    ["max_a", "max_b"],
                    ["mean"],
                    ["sum_a", "sum_b"],
                    ["wmean_a", "wmean_b"],
                ]
            )
        if step % 2:
            everything = [np.concatenate(column) for column in zip(*seen)]
            check(collection.compute(), expected(*everything), f"compute {step}")


# ----------------------------------------------------------------------------- RecMetricModule

MODULE_METRICS: dict[str, Any] = {
    "ne": "ne", "log_loss": "log_loss", "ctr": "ctr", "calibration": "calibration", "mse": "mse", "rmse": "rmse",
    "mae": "mae", "auc": "auc", "auprc": "auprc", "nmse": "nmse", "r_squared": "r_squared", "accuracy": "accuracy",
    "ne_positive": "ne_positive", "label_average": "label_average", "gauc": "gauc", "ndcg@3": "ndcg@3", "mrr": "mrr",
    "auc_binned": {"name": "auc", "num_bins": 64}, "auprc_binned": {"name": "auprc", "num_bins": 64},
    "ne_eta": {"name": "ne", "eta": 1e-3}, "segmented_ne": {"name": "segmented_ne", "num_segments": 3},
}  # fmt: skip


def _module_spec(spec: Any) -> Any:
    if isinstance(spec, str):
        return spec
    options = dict(spec)
    name = options.pop("name")
    return lambda num_tasks: build_metric(name, num_tasks=num_tasks, **options)


def _module_step(rng: np.random.Generator, tasks: int, n: int) -> dict[str, Tensor]:
    step = {
        "user": torch.tensor(rng.integers(0, 3, size=n)),
        "query": torch.tensor(np.sort(rng.integers(0, 4, size=n))),
    }
    for i in range(tasks):
        step[f"p{i}"] = torch.tensor(rng.uniform(0.01, 0.99, size=n), dtype=torch.float32)
        step[f"y{i}"] = torch.tensor((rng.uniform(size=n) < 0.4).astype(np.int64))
        step[f"w{i}"] = torch.tensor(rng.uniform(0, 2, size=n))
    return step


@pytest.mark.parametrize("seed", range(int(os.environ.get("TMX_CG_MODULE_SEEDS", "12"))))
def test_random_module_compute_groups_equal_each_metric_in_a_module_of_its_own(seed):
    """``RecMetricModule``'s compute groups (NE with log loss, CTR with calibration, MSE with RMSE, AUC with
    AUPRC...), with or without windows, through updates (empty ones too), ``compute``, ``reset``, rejected steps,
    ``state_dict`` into a module built in another metric order, copies, pickles and ``clone``: every key equals the
    same metric in a module of its own fed the same steps."""
    rng = np.random.default_rng(seed)
    tasks = int(rng.integers(1, 4))
    names = list(dict.fromkeys(str(n) for n in rng.choice(list(MODULE_METRICS), size=int(rng.integers(2, 7)))))
    window = None if rng.uniform() < 0.4 else int(rng.integers(5, 80))
    infos = [tmx.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}", f"w{i}", group_id_name="user", session_id_name="query")
             for i in range(tasks)]  # fmt: skip

    def module_of(order: list[str]) -> tmx.RecMetricModule:
        specs = {name: _module_spec(MODULE_METRICS[name]) for name in order}
        return tmx.RecMetricModule(infos, specs, window_size=window, throughput=False)

    module = module_of(names)
    alone = {name: module_of([name]) for name in names}
    trail = [f"seed {seed}: {tasks} task(s), window {window}, groups {module.compute_groups}"]

    def check(what: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = module.compute()
            for metric in alone.values():
                for key, value in metric.compute().items():
                    torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-12, equal_nan=True, msg=what)

    ops = ["update", "compute", "reset", "checkpoint", "deepcopy", "pickle", "clone", "bad"]
    odds = np.array([0.5, 0.15, 0.05, 0.08, 0.04, 0.04, 0.04, 0.1])
    for op in rng.choice(ops, size=14, p=odds / odds.sum()):
        trail.append(str(op))
        if op == "update":
            step = _module_step(rng, tasks, int(rng.integers(0, 40)))
            module.update(step)
            for metric in alone.values():
                metric.update(step)
        elif op == "compute":
            check(" -> ".join(trail))
        elif op == "reset":
            module.reset()
            for metric in alone.values():
                metric.reset()
        elif op == "checkpoint":
            resumed = module_of(list(rng.permutation(names)))
            resumed.load_state_dict(module.state_dict())
            module = resumed
        elif op == "deepcopy":
            module = copy.deepcopy(module)
        elif op == "pickle":
            module = pickle.loads(pickle.dumps(module))
        elif op == "clone":
            module = module.clone()
        else:
            step = _module_step(rng, tasks, 6)
            step["p0"][0] = float("nan")
            with pytest.raises(ValueError):
                module.update(step)
    check(" -> ".join(trail))
