"""Inputs and calling contexts as training loops make them, for every registry metric, the wrappers and the module.

Lightning runs validation and its hooks under ``torch.inference_mode()``; training steps hand over raw
model outputs (``requires_grad=True``), run under ``torch.autocast``, slice one output tensor per task
(non-contiguous views), reuse preallocated input buffers, and copy metrics in hooks (``clone``,
``MetricTracker.increment()``). Each test runs one of these against a reference computed independently
(numpy and scikit-learn formulas on a contiguous float64 numpy copy of the data), never against the
metric itself on other inputs.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor
from torchmetrics import MetricTracker

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
from torchmetrics_ext.registry import build_metric, lookup, metric_names

T, N, S, Q = 2, 24, 3, 4  # tasks, samples per batch, segments, queries per ranking batch (N // Q rows each)
K = 3  # the cutoff of the ranking names
NAMES = [name.replace("@k", f"@{K}") for name in metric_names()]
RANKING = {"ndcg", "mrr", "map", "recall", "precision", "hit_rate", "f1", "r_precision"}


def _stem(name: str) -> str:
    return name.partition("@")[0]


def _ranking(name: str) -> bool:
    return _stem(name) in RANKING


def build(name: str, windowed: bool = False) -> Any:
    options = {"num_segments": S} if name == "segmented_ne" else {}
    metric = build_metric(name, num_tasks=T, **options)
    return tmx.Windowed(metric, window_size=N) if windowed else metric  # the window: the newest batch


# ----------------------------------------------------------------------------- data


def make_batch(name: str, seed: int) -> dict[str, np.ndarray]:
    """One batch as contiguous numpy arrays; every group, segment and query holds both classes."""
    rng = np.random.default_rng(seed)
    if _ranking(name):
        rel = np.zeros(N, dtype=np.int64)
        rows = np.arange(N).reshape(Q, N // Q)
        rel[rows[:, 0]] = 1  # a relevant and an irrelevant row in every query, in shuffled order
        rel[rows[:, 1:]] = (rng.uniform(size=(Q, N // Q - 1)) < 0.3).astype(np.int64)
        rel[rows[:, -1]] = 0
        return {
            "preds": rng.permutation(N).astype(np.float32) / N + 0.01,  # distinct scores: no ties
            "target": rel,
            "indexes": np.repeat(np.arange(Q), N // Q) + Q * seed,  # each batch its own queries
        }
    target = np.zeros((T, N), dtype=np.float32)
    target[:, ::2] = 1.0  # every group and segment id below takes both parities
    target = rng.permuted(target.reshape(T, N // 6, 6), axis=2).reshape(T, N)
    batch = {
        "preds": rng.uniform(0.02, 0.98, size=(T, N)).astype(np.float32),
        "target": target,
        "weights": rng.uniform(0.5, 2.0, size=(T, N)).astype(np.float32),
    }
    if name in ("regression_auc", "xauc", "session_pairwise_auc"):
        batch["target"] = (target * rng.integers(1, 4, size=(T, N))).astype(np.float32)  # graded labels
    if name == "session_pairwise_auc":  # whole sessions of 6 rows, each batch its own
        batch["sessions"] = np.repeat(np.arange(4), N // 4) + 4 * seed
    if name in ("gauc", "gauprc"):
        batch["groups"] = np.repeat(np.arange(4), N // 4)
    if name == "segmented_ne":
        batch["segments"] = np.tile(np.arange(S), N // S)
    if name in ("gauc", "gauprc", "segmented_ne"):  # both classes in each group and segment
        key = "groups" if "groups" in batch else "segments"
        for t in range(T):
            for g in np.unique(batch[key]):
                rows = np.flatnonzero(batch[key] == g)
                batch["target"][t, rows] = np.arange(len(rows)) % 2
                batch["target"][t, rows] = rng.permutation(batch["target"][t, rows])
    return batch


def tensors(batch: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {key: torch.from_numpy(value.copy()) for key, value in batch.items()}


def feed(metric: Any, batch: dict[str, Tensor], method: str = "update") -> Any:
    call = metric.update if method == "update" else metric
    if "groups" in batch:  # GroupedAUC's positional order: preds, target, groups, weights
        return call(batch["preds"], batch["target"], batch["groups"], batch["weights"])
    return call(**batch)


# ----------------------------------------------------------------------------- references


def _ce(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(-np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))))


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    rate = np.sum(w * y) / np.sum(w)
    return _ce(p, y, w) / -(np.sum(w) * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def _pairs(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(regression AUC, XAUC) over every pair, weighted w_i w_j."""
    i, j = np.triu_indices(len(p), 1)
    pair, dp, dy = w[i] * w[j], np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
    differ = pair * (dy != 0)
    rauc = np.sum(differ * ((dp * dy > 0) + 0.5 * (dp == 0))) / np.sum(differ)
    return float(rauc), float(np.sum(pair * (dp == dy)) / np.sum(pair))


def _session_pairs(p: np.ndarray, y: np.ndarray, w: np.ndarray, s: np.ndarray) -> float:
    """Newer TorchRec's session pairwise AUC: pairs of one session, labels 1e-6 apart, weighted w_i + w_j."""
    i, j = np.triu_indices(len(p), 1)
    dp, dy = p[i] - p[j], y[i] - y[j]
    pair = (s[i] == s[j]) & (np.abs(dy) >= 1e-6) & (w[i] * w[j] > 0)
    pair_w = np.where(pair, w[i] + w[j], 0.0)
    return float(np.sum(pair_w * ((dp * dy > 0) + 0.5 * (dp == 0))) / np.sum(pair_w))


def _grouped(score: Callable[..., float], p: np.ndarray, y: np.ndarray, w: np.ndarray, g: np.ndarray) -> float:
    return float(np.mean([score(y[g == k], p[g == k], sample_weight=w[g == k]) for k in np.unique(g)]))


def _pointwise(name: str, p: np.ndarray, y: np.ndarray, w: np.ndarray, extra: dict[str, np.ndarray]) -> Any:
    sw = np.sum(w)
    err = p - y
    hard = p >= 0.5
    formulas: dict[str, Callable[[], Any]] = {
        "ne": lambda: _ne(p, y, w),
        "log_loss": lambda: _ce(p, y, w) / sw,
        "calibration": lambda: np.sum(w * p) / np.sum(w * y),
        "ctr": lambda: np.sum(w * y) / sw,
        "weighted_average": lambda: np.sum(w * p) / sw,
        "accuracy": lambda: np.sum(w * (hard == (y > 0))) / sw,
        "weighted_precision": lambda: np.sum(w * hard * y) / np.sum(w * hard),
        "weighted_recall": lambda: np.sum(w * hard * y) / np.sum(w * y),
        "mse": lambda: np.sum(w * err**2) / sw,
        "rmse": lambda: math.sqrt(np.sum(w * err**2) / sw),
        "mae": lambda: np.sum(w * np.abs(err)) / sw,
        "r_squared": lambda: 1 - np.sum(w * err**2) / np.sum(w * (y - np.sum(w * y) / sw) ** 2),
        "nmse": lambda: np.sum(w * err**2) / np.sum(w * (y - 1) ** 2),
        "nrmse": lambda: math.sqrt(np.sum(w * err**2) / np.sum(w * (y - 1) ** 2)),
        "ne_positive": lambda: -np.sum(w * y * np.log(p)) / (_ce(p, y, w) / _ne(p, y, w)),
        "cali_free_ne": lambda: _ce(p, y, w) / _ce(np.full_like(p, np.sum(w * p) / sw), y, w),
        "recalibrated_ne": lambda: _ne(p, y, w),  # recalibration coefficient 1: the predictions as they are
        "recalibrated_calibration": lambda: np.sum(w * p) / np.sum(w * y),
        "label_average": lambda: np.sum(w * y) / sw,
        "sum_weights": lambda: sw,
        "num_positive_samples": lambda: np.sum(w * y),
        "weighted_sum_predictions": lambda: np.sum(w * p),
        "auc": lambda: roc_auc_score(y, p, sample_weight=w),
        "auprc": lambda: average_precision_score(y, p, sample_weight=w),
        "gauc": lambda: _grouped(roc_auc_score, p, y, w, extra["groups"]),
        "gauprc": lambda: _grouped(average_precision_score, p, y, w, extra["groups"]),
        "segmented_ne": lambda: [_ne(*(a[extra["segments"] == s] for a in (p, y, w))) for s in range(S)],
        "regression_auc": lambda: _pairs(p, y, w)[0],
        "xauc": lambda: _pairs(p, y, w)[1],
        "session_pairwise_auc": lambda: _session_pairs(p, y, w, extra["sessions"]),
    }
    return formulas[name]()


def _query(name: str, k: int | None, scores: np.ndarray, rel: np.ndarray) -> float:
    hits = rel[np.argsort(-scores, kind="stable")] > 0
    num_rel, cut = int(hits.sum()), len(hits) if k is None else k
    top = hits[:cut]
    if name == "ndcg":
        gains = 1 / np.log2(np.arange(2, len(hits) + 2))
        return float(np.sum(top * gains[:cut]) / np.sum(gains[: min(num_rel, cut)]))
    if name == "mrr":
        return float(1 / (np.argmax(top) + 1)) if top.any() else 0.0
    if name == "map":
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        return float(np.sum((precision * hits)[:cut]) / num_rel)
    if name == "recall":
        return float(top.sum() / num_rel)
    if name == "precision":
        return float(top.sum() / cut)
    if name == "hit_rate":
        return float(top.any())
    if name == "f1":
        return float(2 * top.sum() / (cut + num_rel))
    assert name == "r_precision"
    return float(hits[:num_rel].sum() / num_rel)


def reference(name: str, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The value over ``batches`` (numpy arrays, concatenated along the samples), in float64."""
    data = {key: np.concatenate([b[key] for b in batches], axis=-1).astype(np.float64) for key in batches[0]}
    if _ranking(name):
        stem, _, cut = name.partition("@")
        k = int(cut) if cut else None
        ids = data["indexes"]
        queries = np.unique(ids)
        values = [_query(stem, k, data["preds"][ids == q], data["target"][ids == q]) for q in queries]
        # a query weighs its largest row weight (docs/ranking.md); unweighted: 1
        weights = [np.max(data["weights"][ids == q]) if "weights" in data else 1.0 for q in queries]
        return np.array(np.average(values, weights=weights))
    extra = {key: data[key].astype(np.int64) for key in ("groups", "segments", "sessions") if key in data}
    return np.array(
        [_pointwise(name, data["preds"][t], data["target"][t], data["weights"][t], extra) for t in range(T)]
    )


def assert_matches(value: Any, name: str, batches: list[dict[str, np.ndarray]], windowed: bool = False) -> None:
    """``value`` (``compute()``) against the reference: a window of one batch holds the newest batch alone."""
    if windowed:
        assert_matches(value["lifetime"], name, batches)
        assert_matches(value["window"], name, batches[-1:])
        return
    np.testing.assert_allclose(value.detach().double().numpy(), reference(name, batches), rtol=2e-6, atol=1e-9)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `torch.from_numpy` of a read-only array warns
        yield


def all_tensors(obj: Any, path: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, Tensor]]:
    """Every tensor an object holds: module states and buffers, list chunks, a window's ring and histograms."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in list(obj.items()):
            if key not in ("_forward_cache", "_computed"):  # forward's value: a graph where differentiable
                yield from all_tensors(value, f"{path}.{key}", seen)
    elif isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
        for i, value in enumerate(obj):
            yield from all_tensors(value, f"{path}[{i}]", seen)
    elif type(obj).__module__.startswith(("torchmetrics", "torch.nn")) and hasattr(obj, "__dict__"):
        yield from all_tensors(vars(obj), path, seen)


KINDS = [pytest.param(False, id="plain"), pytest.param(True, id="windowed")]


# ----------------------------------------------------------------------------- 1. inference mode


def _cloned(how: str, metric: Any) -> Any:
    if how == "clone":
        return metric.clone()
    assert how == "pickle"
    return pickle.loads(pickle.dumps(metric))


@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_inference_mode_then_normal_mode_and_back(name, windowed):
    """Update, forward, compute and reset under inference mode, then the other calls outside it, and the reverse."""
    b1, b2, b3 = (make_batch(name, seed) for seed in (1, 2, 3))
    metric = build(name, windowed)
    with torch.inference_mode():
        feed(metric, tensors(b3))
        metric.compute()
        metric.reset()
        feed(metric, tensors(b1), "forward")
        assert_matches(metric.compute(), name, [b1], windowed)
    feed(metric, tensors(b2))
    assert_matches(metric.compute(), name, [b1, b2], windowed)
    metric.persistent(True)
    state = metric.state_dict()
    other = build(name, windowed)
    other.persistent(True)
    with torch.inference_mode():  # loaded under inference mode, updated outside it
        other.load_state_dict(state)
    feed(other, tensors(b3))
    assert_matches(other.compute(), name, [b1, b2, b3], windowed)
    # normal mode first: update and compute, then inference mode, then normal mode again
    metric = build(name, windowed)
    feed(metric, tensors(b1), "forward")
    metric.compute()
    with torch.inference_mode():
        feed(metric, tensors(b2))
        assert_matches(metric.compute(), name, [b1, b2], windowed)
        metric.persistent(True)
        state = metric.state_dict()  # a checkpoint taken in a validation hook
    feed(metric, tensors(b3))
    assert_matches(metric.compute(), name, [b1, b2, b3], windowed)
    other = build(name, windowed)
    other.persistent(True)
    other.load_state_dict(state)
    feed(other, tensors(b3))
    assert_matches(other.compute(), name, [b1, b2, b3], windowed)
    # merged from a metric updated under inference mode
    part = build(name, windowed)
    with torch.inference_mode():
        feed(part, tensors(b2))
    merged = build(name, windowed)
    feed(merged, tensors(b1))
    merged.merge_state(part)
    merged_value = merged.compute()
    assert_matches(merged_value["lifetime"] if windowed else merged_value, name, [b1, b2])
    feed(merged, tensors(b3))
    merged.compute()


@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_metric_built_under_inference_mode_is_used_outside_it(name, windowed):
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    with torch.inference_mode():
        metric = build(name, windowed)
        feed(metric, tensors(b1))
        metric.compute()
    feed(metric, tensors(b2))
    assert_matches(metric.compute(), name, [b1, b2], windowed)


@pytest.mark.parametrize("how", ["clone", "pickle"])  # (deepcopy is clone; torch.load pickles)
@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_copy_made_under_inference_mode_updates_outside_it(name, windowed, how):
    """A copy made in a validation hook (``clone``, ``MetricTracker.increment()``) or unpickled there
    held inference tensors: its first update in a training step raised "Inplace update to inference
    tensor outside InferenceMode"."""
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    metric = build(name, windowed)
    feed(metric, tensors(b1))
    with torch.inference_mode():
        copied = _cloned(how, metric)
    feed(copied, tensors(b2))
    assert_matches(copied.compute(), name, [b1, b2], windowed)
    copied.reset()  # and the copy's reset states take updates too
    feed(copied, tensors(b2))
    assert_matches(copied.compute(), name, [b2], windowed)
    feed(metric, tensors(b2))  # the original is its own
    assert_matches(metric.compute(), name, [b1, b2], windowed)


@pytest.mark.parametrize("name", NAMES)
def test_metric_tracker_incremented_in_a_validation_hook(name):
    """TorchMetrics' ``MetricTracker.increment()`` deep-copies its metric; Lightning calls hooks such as
    ``on_validation_epoch_start`` under inference mode, and the copy is then updated in training steps."""
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    tracker = MetricTracker(build(name), maximize=True)
    with torch.inference_mode():
        tracker.increment()
    feed(tracker, tensors(b1))
    feed(tracker, tensors(b2))
    assert_matches(tracker.compute(), name, [b1, b2])
    with torch.inference_mode():
        tracker.increment()
    feed(tracker, tensors(b2))
    assert_matches(tracker.compute(), name, [b2])


@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_raw_model_outputs_keep_no_graph_in_the_states(name, windowed):
    """Predictions with ``requires_grad=True`` (update, forward, and under ``no_grad``): no state keeps a graph.

    A window of ``Segmented`` metrics kept the step's graph in its histograms (their entries are the
    per-sample terms of the predictions), and its next ``compute`` failed."""
    b1, b2, b3 = (make_batch(name, seed) for seed in (1, 2, 3))
    metric = build(name, windowed)
    for batch, method in ((b1, "update"), (b2, "forward")):
        inputs = tensors(batch)
        inputs["preds"].requires_grad_(True)
        feed(metric, inputs, method)
        held = [path for path, t in all_tensors(metric) if t.requires_grad or t.grad_fn is not None]
        assert not held, held
    with torch.no_grad():
        feed(metric, tensors(b3))
    assert_matches(metric.compute(), name, [b1, b2, b3], windowed)


# ----------------------------------------------------------------------------- 2. autocast


@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_autocast_bfloat16_changes_nothing(name, windowed):
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    metric = build(name, windowed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feed(metric, tensors(b1))
        feed(metric, tensors(b2), "forward")
        value = metric.compute()
    assert_matches(value, name, [b1, b2], windowed)


# ----------------------------------------------------------------------------- 3. layouts


def _laid_out(value: np.ndarray, layout: str) -> Tensor:
    """``value`` (contiguous numpy) as a tensor of the same shape and values in another memory layout."""
    if layout == "transposed":  # a (T, N) model output stored (N, T), or one column of an (N, 2) tensor
        stacked = np.stack([value, value], axis=-1)
        return (
            torch.from_numpy(np.ascontiguousarray(stacked)).transpose(-1, -2)[..., 0, :]
            if value.ndim == 1
            else (torch.from_numpy(np.ascontiguousarray(value.T)).T)
        )
    if layout == "every_other":
        return torch.from_numpy(np.repeat(value, 2, axis=-1))[..., ::2]
    if layout == "storage_offset":
        return torch.from_numpy(np.concatenate([value, value], axis=-1))[..., value.shape[-1] :]
    if layout == "fortran":
        return torch.from_numpy(np.asfortranarray(value))
    assert layout == "read_only"
    frozen = value.copy()
    frozen.flags.writeable = False
    return torch.from_numpy(frozen)


LAYOUTS = ["transposed", "every_other", "storage_offset", "fortran", "read_only"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_input_layouts_give_the_values_of_contiguous_inputs(name, layout):
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    for windowed in (False, True):
        metric = build(name, windowed)
        for batch in (b1, b2):
            inputs = {key: _laid_out(value, layout) for key, value in batch.items()}
            if layout == "storage_offset":
                assert all(t.storage_offset() > 0 for t in inputs.values())
            elif layout in ("transposed", "every_other"):
                assert not any(t.is_contiguous() for t in inputs.values())
            feed(metric, inputs)
        assert_matches(metric.compute(), name, [b1, b2], windowed)


@pytest.mark.parametrize("layout", ["transposed", "every_other", "storage_offset", "fortran"])
@pytest.mark.parametrize("name", [n for n in NAMES if _ranking(n)])
def test_padded_ranking_rows_in_other_layouts(name, layout):
    """``(queries, candidates)`` scores, labels and padding mask as a model gives them: a ``(C, Q)`` output
    transposed, strided or offset views, Fortran order; each row's unmasked candidates are its query."""
    rng = np.random.default_rng(7)
    rows, cols = 5, 7
    preds = rng.permutation(rows * cols).reshape(rows, cols).astype(np.float32) / (rows * cols)
    target = np.zeros((rows, cols), dtype=np.int64)
    target[:, 0], target[:, 1] = 1, 0  # a relevant and an irrelevant candidate per row, never padding
    target[:, 2:] = rng.uniform(size=(rows, cols - 2)) < 0.4
    mask = np.ones((rows, cols), dtype=bool)
    mask[:, 2:] = rng.uniform(size=(rows, cols - 2)) < 0.7  # padding
    flat = [
        {
            "preds": preds[mask],
            "target": target[mask],
            "indexes": np.repeat(np.arange(rows), mask.sum(1)),
        }
    ]
    metric = build(name)
    feed(
        metric,
        {"preds": _laid_out(preds, layout), "target": _laid_out(target, layout), "mask": _laid_out(mask, layout)},
    )
    assert_matches(metric.compute(), name, flat)


@pytest.mark.parametrize("name", [n for n in NAMES if not _ranking(n)])
def test_expanded_weights_of_stride_zero(name):
    b1, b2 = make_batch(name, 1), make_batch(name, 2)
    for batch in (b1, b2):
        batch["weights"] = np.full_like(batch["weights"], 1.5)
    for windowed in (False, True):
        metric = build(name, windowed)
        for batch in (b1, b2):
            inputs = tensors(batch)
            inputs["weights"] = torch.tensor([1.5]).expand(T, N)  # one weight, stride 0
            feed(metric, inputs)
        assert_matches(metric.compute(), name, [b1, b2], windowed)


@pytest.mark.parametrize("name", NAMES)
def test_one_sample_batches_and_zero_dim_inputs(name):
    """Batches of one sample add up to the reference; 0-dim inputs are refused, naming `preds`, state untouched."""
    batches = [make_batch(name, 1)]
    metric = build(name)
    for i in range(N):
        one = {key: value[..., i : i + 1] for key, value in batches[0].items()}
        feed(metric, tensors(one))
    if name == "session_pairwise_auc":  # a session lies within one batch: one row each, no pair (nan)
        assert torch.isnan(metric.compute()).all()
    else:
        assert_matches(metric.compute(), name, batches)
    zero_dim = {
        key: torch.tensor(value[..., 0] if value.ndim == 1 else value[0, 0]) for key, value in batches[0].items()
    }
    before = {key: (v.clone() if isinstance(v, Tensor) else list(v)) for key, v in metric.metric_state.items()}
    assert all(t.ndim == 0 for t in zero_dim.values())
    with pytest.raises(ValueError, match="`preds`"):
        feed(metric, zero_dim)
    for key, value in metric.metric_state.items():
        if isinstance(value, Tensor):
            assert torch.equal(value, before[key]), key
        else:
            assert len(value) == len(before[key]), key
    if name != "session_pairwise_auc":
        assert_matches(metric.compute(), name, batches)


# ----------------------------------------------------------------------------- 4. inputs overwritten after the call


@pytest.mark.parametrize("method", ["update", "forward"])
@pytest.mark.parametrize("windowed", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_overwriting_the_passed_buffers_changes_nothing(name, windowed, method):
    """A reused input buffer (a static CUDA-graph input, a preallocated batch) is overwritten after the call;
    list states (exact AUC, pairs, ranking rows, window chunks) must not alias it. float64 inputs, which the
    states need not cast."""
    batches = [make_batch(name, seed) for seed in (1, 2, 3)]
    for batch in batches:
        for key, value in batch.items():
            if value.dtype == np.float32:
                batch[key] = value.astype(np.float64)
    metric = build(name, windowed)
    buffers = tensors(batches[0])
    for batch in batches:
        for key, value in tensors(batch).items():
            buffers[key].copy_(value)
        feed(metric, buffers, method)
    for value in buffers.values():  # the next step's data arrives in the same buffers
        value.copy_(value.flip(-1))
    assert_matches(metric.compute(), name, batches, windowed)


# ----------------------------------------------------------------------------- RecMetricModule


TASKS = [
    tmx.RecTaskInfo(task, f"{task}_y", f"{task}_p", weight_name=f"{task}_w", group_id_name="g", session_id_name="s")
    for task in ("a", "b")
]
MODULE_METRICS: dict[str, Any] = {name.replace("@", "_at_"): name for name in NAMES}
MODULE_METRICS["segmented_ne"] = {"metric": "segmented_ne", "num_segments": S}


def module_batch(seed: int) -> dict[str, np.ndarray]:
    """One step's columns: each task's predictions, labels and weights; group ids ``g`` (the segments of
    segmented_ne, the groups of gauc) and query ids ``s`` (4 queries of 6 rows).

    Rows ``i`` and ``i + 3`` of each block of 6 share a group id and hold one label of each class:
    every group, segment and query holds both classes."""
    rng = np.random.default_rng(seed)
    out = {"g": np.tile(np.arange(N) % 3, 1), "s": np.repeat(np.arange(Q), N // Q) + Q * seed}
    for task in ("a", "b"):
        first = rng.integers(0, 2, size=(Q, 3))
        out[f"{task}_y"] = np.concatenate([first, 1 - first], axis=1).reshape(N).astype(np.float32)
        out[f"{task}_p"] = rng.uniform(0.02, 0.98, size=N).astype(np.float32)
        out[f"{task}_w"] = rng.uniform(0.5, 2.0, size=N).astype(np.float32)
    return out


def module_reference(batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    expected = {}
    for key, spec in MODULE_METRICS.items():
        name = spec if isinstance(spec, str) else spec["metric"]
        for t, task in enumerate(("a", "b")):
            if _ranking(name):  # the task's predictions and labels ranked within the query ids
                data = [
                    {"preds": b[f"{task}_p"], "target": b[f"{task}_y"], "indexes": b["s"], "weights": b[f"{task}_w"]}
                    for b in batches
                ]
                value = reference(name, data)
            else:
                data = [
                    {
                        "preds": np.stack([b["a_p"], b["b_p"]]),
                        "target": np.stack([b["a_y"], b["b_y"]]),
                        "weights": np.stack([b["a_w"], b["b_w"]]),
                        "groups": b["g"],
                        "segments": b["g"],
                        "sessions": b["s"],
                    }
                    for b in batches
                ]
                value = reference(name, data)[t]
            if name == "segmented_ne":
                expected.update({f"{key}.{s}/{task}": float(v) for s, v in enumerate(value)})
            else:
                expected[f"{key}/{task}"] = float(value)
    return expected


def build_module(window: bool) -> tmx.RecMetricModule:
    return tmx.RecMetricModule(TASKS, MODULE_METRICS, throughput=False, **({"window_size": 10 * N} if window else {}))


def assert_module_matches(values: dict[str, Tensor], batches: list[dict[str, np.ndarray]]) -> None:
    expected = module_reference(batches)
    got = {key: float(v) for key, v in values.items() if not key.endswith("/window")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=2e-6, abs=1e-9), key
    for key, value in values.items():  # a window larger than everything seen: the lifetime value
        if key.endswith("/window"):
            assert float(value) == pytest.approx(expected[key.removesuffix("/window")], rel=2e-6, abs=1e-9), key


CONTEXTS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
    "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


@pytest.mark.parametrize("window", [False, True], ids=["lifetime", "window"])
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_module_in_each_context_then_outside(context, window):
    batches = [module_batch(seed) for seed in (1, 2, 3)]
    with CONTEXTS[context]():
        module = build_module(window)
        module.update(tensors(batches[0]))
        module.compute()
        copied = copy.deepcopy(module)
        pickled = pickle.loads(pickle.dumps(module))
        state = module.state_dict()
    for target in (module, copied, pickled):
        target.update(tensors(batches[1]))
        assert_module_matches(target.compute(), batches[:2])
    loaded = build_module(window)
    loaded.load_state_dict(state)
    loaded.update(tensors(batches[1]))
    with CONTEXTS[context]():
        loaded.update(tensors(batches[2]))
        assert_module_matches(loaded.compute(), batches)
    loaded.reset()
    loaded.update(tensors(batches[2]))
    assert_module_matches(loaded.compute(), batches[2:])


@pytest.mark.parametrize("window", [False, True], ids=["lifetime", "window"])
def test_module_raw_outputs_strided_columns_and_reused_buffers(window):
    batches = [module_batch(seed) for seed in (1, 2, 3)]
    module = build_module(window)
    outputs = torch.zeros(N, 2, requires_grad=False)  # a model's (N, 2) head: one column per task
    buffers = tensors(batches[0])
    for batch in batches:
        for key, value in tensors(batch).items():
            buffers[key].copy_(value)
        with torch.no_grad():
            outputs.copy_(torch.stack([buffers["a_p"], buffers["b_p"]], 1))
        logits = outputs.clone().requires_grad_(True)  # raw outputs: a graph hangs on them
        step = dict(buffers, a_p=logits[:, 0], b_p=logits[:, 1])  # strided columns
        module.update(step)
        held = [path for path, t in all_tensors(module) if t.requires_grad or t.grad_fn is not None]
        assert not held, held
    for value in buffers.values():
        value.zero_()
    assert_module_matches(module.compute(), batches)


# ----------------------------------------------------------------------------- MetricsAggregator


def records(seed: int) -> list[Metric]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(5):
        out += [
            Metric("ds", "tokens", float(rng.integers(1, 100)), AggregationType.SUM),
            Metric("ds", "loss", torch.tensor(rng.uniform(1, 3), dtype=torch.float64), AggregationType.MEAN),
            Metric("ds", "seq_len", int(rng.integers(1, 50)), AggregationType.MAX),
            Metric("ds", "lr", float(rng.uniform(0.1, 1)), AggregationType.MIN),
            Metric("ds", "len", float(rng.integers(1, 9)), AggregationType.DISTRIBUTION),
            Metric("ds", "source", str(rng.choice(["a", "b", "c"])), AggregationType.CATEGORICAL_COUNT),
        ]
    return out


def aggregator_reference(batches: list[list[Metric]]) -> dict[str, float]:
    values: dict[str, list[Any]] = {}
    for batch in batches:
        for record in batch:
            values.setdefault(record.name, []).append(float(record.value) if record.name != "source" else record.value)
    lengths = np.array(values["len"])
    expected = {
        "train_ds/tokens": sum(values["tokens"]),
        "train_ds/loss": float(np.mean(values["loss"])),
        "train_ds/seq_len": max(values["seq_len"]),
        "train_ds/lr": min(values["lr"]),
        "train_ds/len_stat_mean": float(lengths.mean()),
        "train_ds/len_stat_min": float(lengths.min()),
        "train_ds/len_stat_max": float(lengths.max()),
        "train_ds/len_stat_std": float(lengths.std(ddof=1)),
    }
    for source in sorted(set(values["source"])):
        expected[f"train_ds/source_count_{source}"] = float(values["source"].count(source))
    return expected


def assert_aggregator_matches(aggregator: MetricsAggregator, batches: list[list[Metric]]) -> None:
    got = aggregator.get_metrics_for_logging(prefix="train")
    for key, value in aggregator_reference(batches).items():  # the percentiles: a sketch, checked elsewhere
        assert got[key] == pytest.approx(value, rel=1e-9), key


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_aggregator_in_each_context_then_outside(context):
    batches = [records(seed) for seed in (1, 2, 3)]
    with CONTEXTS[context]():
        aggregator = MetricsAggregator()
        aggregator.update(batches[0])
        aggregator.get_metrics_for_logging()
        copied = copy.deepcopy(aggregator)
        pickled = pickle.loads(pickle.dumps(aggregator))
        state = aggregator.state_dict()
    for target in (aggregator, copied, pickled):
        target.update(batches[1])
        assert_aggregator_matches(target, batches[:2])
    loaded = MetricsAggregator()
    loaded.load_state_dict(state)
    loaded.update(batches[1])
    with CONTEXTS[context]():
        loaded.update(batches[2])
    assert_aggregator_matches(loaded, batches)


def test_aggregator_values_with_graphs_and_overwritten_afterwards():
    batches = [records(seed) for seed in (1, 2)]
    aggregator = MetricsAggregator()
    live = [
        Metric(
            r.dataset_name, r.name, torch.tensor(float(r.value), dtype=torch.float64, requires_grad=True), r.agg_type
        )
        if r.name not in ("source",)
        else r
        for r in batches[0]
    ]
    aggregator.update(live)
    held = [path for path, t in all_tensors(aggregator.metrics) if t.requires_grad or t.grad_fn is not None]
    assert not held, held
    with torch.no_grad():
        for record in live:
            if isinstance(record.value, Tensor):
                record.value.zero_()  # a reused scalar buffer
    aggregator.update(batches[1])
    assert_aggregator_matches(aggregator, batches)


def test_registry_covers_every_name():
    assert {lookup(name)[0].name for name in NAMES} == {lookup(n.replace("@k", "@1"))[0].name for n in metric_names()}


def test_unpickled_state_views_of_one_buffer_stay_views_of_one_ordinary_buffer():
    """``ordinary_tensors`` (what every class's ``__setstate__`` calls) under inference mode: each inference
    tensor becomes an ordinary one, views of one storage keep sharing one copy of it, lists are left
    unless asked, and nothing is touched outside inference mode."""
    from torchmetrics_ext.utilities.inference import ordinary_tensors

    with torch.inference_mode():
        buffer = torch.arange(12.0).reshape(3, 4)
        chunk = torch.ones(2)
        state = {"rows": {"a": buffer[0], "b": buffer[1:]}, "pair": (buffer.T, 3), "chunks": [chunk]}
        ordinary_tensors(state)
        listed = {"chunks": [chunk]}
        ordinary_tensors(listed, lists=True)
    a, b, t = state["rows"]["a"], state["rows"]["b"], state["pair"][0]
    assert not any(x.is_inference() for x in (a, b, t, listed["chunks"][0]))
    assert state["chunks"][0] is chunk  # list states are never written in place: left as read
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    np.testing.assert_array_equal(t.numpy(), np.arange(12.0).reshape(3, 4).T)
    b.add_(100.0)  # in place outside inference mode, seen through the other views of the buffer
    assert t[0, 1].item() == 104.0 and a.sum().item() == 6.0
    with torch.inference_mode():
        kept = {"x": torch.zeros(1)}
    ordinary_tensors(kept)  # outside inference mode nothing is read
    assert kept["x"].is_inference()
