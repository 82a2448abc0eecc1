"""Seeded random configurations of per-segment metrics against per-segment formulas written here.

Each seed draws a wrapped metric (NE, log loss, calibration, CTR, MSE, MAE, accuracy, precision,
recall; probabilities or logits, a threshold), a number of segments (1 to 6, some never seen, some
seen with zero weight only), 1 to 3 tasks, weights (none, random, some zeros, per task or shared),
id dtypes (int8 ... int64, uint8), shared ``(N,)``/``(1, N)`` or per-task ``(T, N)`` ids, batches of
random sizes (empty ones and single rows among them; a few or many small ones), ``forward`` or
``update`` per batch, a window or none (``max_updates`` too), a resume mid-stream (``state_dict`` into a
fresh object, through ``torch.save`` or not, ``deepcopy``, pickle), a ``reset`` and a ``merge_state``.
Checked: ``Segmented`` / ``Windowed(Segmented)`` alone, ``Windowed(Segmented(TensorWeightedAverage))``
with per-task ``weighted`` flags, a ``MetricCollection`` of segmented metrics (compute groups), a
``RecMetricModule`` with two segmented metrics (of different segment counts) and a plain one (ids from
the tasks' ``group_id_name`` column; ``metric_tasks`` subsets, unvalidated metrics, the registry's
``segmented_ne``), and one configuration on 2 gloo ranks.

References: NumPy sums per ``(task, segment)`` (``np.bincount``) and the metrics' formulas, with the
documented ``nan`` where a segment's value is undefined; the window is the newest whole updates whose
sizes sum to at most ``window_size`` (an update larger than the window alone: its newest samples; an
empty or all-zero-weight update takes no room unless unvalidated or averaged unweighted; each DDP rank
keeps ``window_size // world_size``; docs/windows.md), written again here. Bad input (ids out of range,
float ids, mismatched shapes, also of an empty batch) must raise naming ``segments`` (the module: the id
column) and leave every state as it was. Module steps never have all-zero weights for every task.

More seeds than the suite runs: ``SEGMENTED_RANDOM_SEEDS=400 pytest tests/test_segmented_random.py``.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx

SEEDS = range(int(os.environ.get("SEGMENTED_RANDOM_SEEDS", "24")))
ID_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]

# ----------------------------------------------------------------------------- the references


def _sums(
    p: np.ndarray, y: np.ndarray, w: np.ndarray, seg: np.ndarray, num_segments: int, threshold: float
) -> dict[str, np.ndarray]:
    """Per-segment float64 sums of one task's rows (``np.bincount``, nothing from the package)."""

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(seg, weights=values, minlength=num_segments).astype(np.float64)

    positive = p >= threshold
    return {
        "w": total(w),
        "wy": total(w * y),
        "wn": total(w * (1 - y)),
        "wp": total(w * p),
        "ce": total(-w * (y * np.log(p) + (1 - y) * np.log(1 - p))),
        "se": total(w * (p - y) ** 2),
        "ae": total(w * np.abs(p - y)),
        "tp": total(w * (positive & (y == 1))),
        "fp": total(w * (positive & (y == 0))),
        "fn": total(w * (~positive & (y == 1))),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, ``nan`` where ``den`` is zero (the package's undefined value)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _ne(s: dict[str, np.ndarray]) -> np.ndarray:
    """NE: mean cross-entropy over the entropy of the base rate; ``nan`` unless both classes have weight."""
    ctr = _ratio(s["wy"], s["w"])
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
        value = _ratio(s["ce"], s["w"]) / entropy
    return np.where((s["wy"] > 0) & (s["wn"] > 0), value, np.nan)


REFERENCES: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "ne": _ne,
    "log_loss": lambda s: _ratio(s["ce"], s["w"]),
    "calibration": lambda s: _ratio(s["wp"], s["wy"]),
    "ctr": lambda s: _ratio(s["wy"], s["w"]),
    "mse": lambda s: _ratio(s["se"], s["w"]),
    "mae": lambda s: _ratio(s["ae"], s["w"]),
    "accuracy": lambda s: _ratio(s["w"] - s["fp"] - s["fn"], s["w"]),
    "precision": lambda s: _ratio(s["tp"], s["tp"] + s["fp"]),
    "recall": lambda s: _ratio(s["tp"], s["tp"] + s["fn"]),
}
INNER: dict[str, Callable[..., tmx.Metric]] = {
    "ne": tmx.NormalizedEntropy,
    "log_loss": tmx.LogLoss,
    "calibration": tmx.Calibration,
    "ctr": tmx.CTR,
    "mse": tmx.WeightedMSE,
    "mae": tmx.WeightedMAE,
    "accuracy": tmx.WeightedAccuracy,
    "precision": tmx.WeightedPrecision,
    "recall": tmx.WeightedRecall,
}
KINDS = sorted(INNER)


@dataclass
class Batch:
    """One update: ``p``, ``y``, ``w`` as float64 ``(T, N)`` arrays (``w`` of ones when unweighted), ids ``(T, N)``."""

    p: np.ndarray
    y: np.ndarray
    w: np.ndarray
    seg: np.ndarray
    preds: torch.Tensor | None = None  # as fed, (T, N): logits for from_logits=True
    args: dict[str, Any] = field(default_factory=dict)  # the tensors fed

    @property
    def size(self) -> int:
        return int(self.p.shape[1])

    @property
    def all_zero_weight(self) -> bool:
        return self.size > 0 and not bool((self.w > 0).any())

    def tail(self, n: int) -> Batch:
        return Batch(self.p[:, -n:], self.y[:, -n:], self.w[:, -n:], self.seg[:, -n:])


def reference(kind: str, batches: list[Batch], num_tasks: int, num_segments: int, threshold: float = 0.5) -> np.ndarray:
    """``kind`` per ``(task, segment)`` over ``batches``: ``(S,)`` for one task, ``(T, S)`` otherwise.

    ``Batch.p`` holds probabilities (the sigmoid of the logits fed, for ``from_logits=True``).
    """
    rows = []
    for t in range(num_tasks):

        def column(name: str, t: int = t) -> np.ndarray:
            return np.concatenate([getattr(b, name)[t] for b in batches]) if batches else np.zeros(0)

        seg = column("seg").astype(np.int64)
        sums = _sums(column("p"), column("y"), column("w"), seg, num_segments, threshold)
        rows.append(REFERENCES[kind](sums))
    out = np.stack(rows)
    return out[0] if num_tasks == 1 else out


def window_of(batches: list[Batch], window: int, validated: bool = True, max_updates: int | None = None) -> list[Batch]:
    """The window rule (docs/windows.md): newest whole updates within ``window`` samples, a newest update larger
    than the window cut to its newest samples; empty updates take no room, nor do all-zero-weight ones when
    validated (``validate_args=False`` reads nothing: they take their room); at most ``max_updates`` updates."""
    kept: list[Batch] = []
    used = 0
    for batch in reversed([b for b in batches if b.size > 0 and not (validated and b.all_zero_weight)]):
        if not kept and batch.size > window:
            return [batch.tail(window)]
        if used + batch.size > window or len(kept) == max_updates:
            break
        kept.insert(0, batch)
        used += batch.size
    return kept


def expect(cfg: Config, batches: list[Batch], kind: str | None = None, num_segments: int | None = None) -> np.ndarray:
    """:func:`reference` with ``cfg``'s metric, tasks, segments and threshold unless given."""
    segments = cfg.num_segments if num_segments is None else num_segments
    return reference(kind or cfg.kind, batches, cfg.num_tasks, segments, cfg.threshold)


def close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-9, atol=1e-12, err_msg=what)


# ----------------------------------------------------------------------------- random data


@dataclass
class Config:
    seed: int
    kind: str
    num_tasks: int
    num_segments: int
    id_dtype: torch.dtype
    per_task_ids: bool
    weights: str  # "none", "random", "zeros" (some zero rows, a segment of zero weight only)
    per_task_weights: bool
    window: int | None
    float32: bool
    logits: bool  # from_logits=True: preds are logits, every formula reads their sigmoid
    threshold: float  # the thresholded metrics'
    row_ids: bool  # shared ids given as (1, N)
    updates: int  # batches fed: a few, or many small ones (the window's blocks of updates close and leave)
    max_batch: int
    max_updates: int | None = None  # Windowed's limit on the updates its window holds


def draw_config(seed: int) -> Config:
    rng = np.random.default_rng(seed)
    return Config(
        seed=seed,
        kind=KINDS[rng.integers(len(KINDS))],
        num_tasks=int(rng.integers(1, 4)),
        num_segments=int(rng.integers(1, 7)),
        id_dtype=ID_DTYPES[rng.integers(len(ID_DTYPES))],
        per_task_ids=bool(rng.random() < 0.3),
        weights=["none", "random", "zeros"][rng.integers(3)],
        per_task_weights=bool(rng.random() < 0.5),
        float32=bool(rng.random() < 0.3),
        logits=bool(rng.random() < 0.25),
        threshold=float(rng.choice([0.5, 0.3, 0.75])),
        row_ids=bool(rng.random() < 0.2),
        **(
            {"updates": int(rng.integers(2, 9)), "max_batch": 30}
            if rng.random() < 0.7
            else {"updates": int(rng.integers(10, 41)), "max_batch": 8}
        ),
        window=None if rng.random() < 0.3 else int(rng.integers(1, 60)),
        max_updates=None if rng.random() < 0.7 else int(rng.integers(1, 6)),
    )


def draw_batches(cfg: Config, rng: np.random.Generator, count: int, all_zero_ok: bool) -> list[Batch]:
    """``count`` batches; segments drawn from a random subset, one of them (``zeros``) seen with weight 0 only."""
    t, s = cfg.num_tasks, cfg.num_segments
    seen = rng.choice(s, size=int(rng.integers(1, s + 1)), replace=False)
    zero_segment = int(seen[0]) if cfg.weights == "zeros" and len(seen) > 1 else None
    # a segment of zero weight in every task: per-task weights where the tasks' ids differ
    per_task_weights = cfg.per_task_weights or (zero_segment is not None and cfg.per_task_ids)
    out = []
    for _ in range(count):
        n = int(rng.choice([0, 1, int(rng.integers(2, cfg.max_batch))], p=[0.15, 0.15, 0.7]))
        ids = rng.choice(seen, size=(t if cfg.per_task_ids else 1, n))
        dtype = torch.float32 if cfg.float32 else torch.float64
        if cfg.logits:
            fed = torch.tensor(rng.normal(0.0, 2.0, size=(t, n)), dtype=dtype)
            p = 1.0 / (1.0 + np.exp(-fed.double().numpy()))  # the probabilities the formulas read
        else:
            fed = torch.tensor(rng.uniform(0.01, 0.99, size=(t, n)), dtype=dtype)
            p = fed.double().numpy()
        y = (rng.random((t, n)) < p).astype(np.float64)
        if cfg.weights == "none":
            w = np.ones((t, n))
        else:
            w = rng.uniform(0.1, 3.0, size=(t if per_task_weights else 1, n))
            if cfg.weights == "zeros":
                w = np.where(rng.random(w.shape) < 0.3, 0.0, w)
                if zero_segment is not None:
                    w = np.where(ids == zero_segment, 0.0, w)  # shared ids broadcast over tasks
                if all_zero_ok and n and rng.random() < 0.15:
                    w = np.zeros_like(w)
                elif not all_zero_ok and n and not (w > 0).any():
                    w[..., -1] = 1.0  # never a whole update of zero weight (see the module's note)
        w = np.broadcast_to(w, (t, n)).copy()
        batch = Batch(p, y, w, np.broadcast_to(ids, (t, n)).copy(), preds=fed)
        preds = fed
        target = torch.tensor(y).long() if rng.random() < 0.5 else torch.tensor(y)
        ids_t = torch.tensor(ids[0] if not cfg.per_task_ids else ids).to(cfg.id_dtype)
        weight_t = None
        if cfg.weights != "none":
            weight_t = torch.tensor(w) if per_task_weights else torch.tensor(w[0])
        if cfg.row_ids and not cfg.per_task_ids:
            ids_t = ids_t.reshape(1, n)  # shared ids as one row: (1, N)
        if t == 1:
            preds, target = preds[0], target[0]
            ids_t = ids_t if cfg.row_ids else ids_t.reshape(-1)
            weight_t = None if weight_t is None else weight_t.reshape(-1)
        batch.args = {"preds": preds, "target": target, "weights": weight_t, "segments": ids_t}
        out.append(batch)
    return out


def quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return fn()


# ----------------------------------------------------------------------------- Segmented / Windowed(Segmented)


def make_inner(cfg: Config, kind: str, num_tasks: int, **options: Any) -> tmx.Metric:
    """The wrapped metric of ``kind`` with ``cfg``'s ``from_logits`` (and threshold, for the thresholded ones)."""
    if kind in ("accuracy", "precision", "recall"):
        options["threshold"] = cfg.threshold
    return INNER[kind](num_tasks=num_tasks, from_logits=cfg.logits, **options)


def make_metric(cfg: Config, validate_args: bool = True) -> tmx.Metric:
    inner = make_inner(cfg, cfg.kind, cfg.num_tasks, validate_args=validate_args)
    metric = tmx.Segmented(inner, cfg.num_segments)
    if cfg.window is None:
        metric.persistent(True)  # TorchMetrics leaves states out of state_dict by default (a Windowed saves them)
        return metric
    return tmx.Windowed(metric, cfg.window, max_updates=cfg.max_updates)


def check_values(
    cfg: Config, value: Any, history: list[Batch], what: str, validated: bool = True, merged: list[Batch] | None = None
) -> None:
    """``value`` of ``make_metric(cfg)`` after ``history`` (and ``merged``: another metric's, in its lifetime only)."""
    lifetime = expect(cfg, history + (merged or []))
    if cfg.window is None:
        close(value, lifetime, what)
        return
    close(value["lifetime"], lifetime, f"{what} lifetime")
    window = expect(cfg, window_of(history, cfg.window, validated, cfg.max_updates))
    close(value["window"], window, f"{what} window")


def snapshot(metric: tmx.Metric) -> dict[str, torch.Tensor]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in metric.state_dict().items()}


def same_state(a: Any, b: Any) -> bool:
    """Equal state dicts (tensors, nested dicts and lists of them), ``nan`` equal to ``nan``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.nan_to_num(), b.nan_to_num())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def bad_inputs(cfg: Config, batch: Batch) -> list[tuple[dict[str, Any], type[Exception]]]:
    """Variants of ``batch``'s arguments that must be refused: ids outside, float ids, mismatched shapes."""
    args, n = batch.args, batch.size
    ids = args["segments"]
    out: list[tuple[dict[str, Any], type[Exception]]] = []
    if n == 0:  # an empty batch's ids are checked too
        out.append(({**args, "segments": ids.float()}, TypeError))
        out.append(({**args, "segments": torch.zeros((*ids.shape[:-1], 1), dtype=ids.dtype)}, ValueError))
        return out
    high = ids.clone()
    high[..., -1] = cfg.num_segments
    out.append(({**args, "segments": high}, ValueError))
    if ids.dtype != torch.uint8:
        low = ids.clone()
        low[..., 0] = -1
        out.append(({**args, "segments": low}, ValueError))
    out.append(({**args, "segments": ids.double()}, TypeError))
    out.append(({**args, "segments": torch.cat([ids, ids[..., :1]], dim=-1)}, ValueError))
    if cfg.num_tasks > 1:
        out.append(({**args, "segments": ids.reshape(-1, n)[:1].expand(cfg.num_tasks + 1, n)}, ValueError))
    return out


RESUMES = ["state_dict", "torch.save", "deepcopy", "pickle"]


def resumed(metric: Any, fresh: Callable[[], Any], how: str) -> Any:
    """``metric`` carried on: its ``state_dict`` loaded into ``fresh()`` (directly or through ``torch.save``), or a copy."""
    if how == "deepcopy":
        return copy.deepcopy(metric)
    if how == "pickle":
        return pickle.loads(pickle.dumps(metric))
    state = copy.deepcopy(metric.state_dict())
    if how == "torch.save":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        state = torch.load(buffer)
    out = fresh()
    out.load_state_dict(state)
    return out


def run_standalone(seed: int) -> None:
    cfg = draw_config(seed)
    rng = np.random.default_rng(10_000 + seed)
    batches = draw_batches(cfg, rng, cfg.updates, all_zero_ok=True)
    metric = make_metric(cfg)
    history: list[Batch] = []
    merged: list[Batch] = []  # another metric's batches, merged in (its lifetime only: docs/windows.md)
    reload_at, reset_at = int(rng.integers(len(batches) + 1)), int(rng.integers(-len(batches), len(batches)))
    merge_at = int(rng.integers(-len(batches), len(batches)))
    for i, batch in enumerate(batches):
        what = f"seed {seed} {cfg} batch {i}"
        if i == reload_at:  # a fresh object resumes from the state_dict, or a copy goes on
            metric = resumed(metric, lambda: make_metric(cfg), str(rng.choice(RESUMES)))
        if i == reset_at:
            metric.reset()
            history, merged = [], []
        if i == merge_at:
            other, others = make_metric(cfg), draw_batches(cfg, rng, int(rng.integers(1, 4)), all_zero_ok=True)
            for extra in others:
                other.update(**extra.args)
            metric.merge_state(other)
            merged += others
        for bad, error in bad_inputs(cfg, batch):
            before = snapshot(metric)
            with pytest.raises(error, match="segments"):
                metric(**bad) if rng.random() < 0.5 else metric.update(**bad)
            assert same_state(before, snapshot(metric)), f"{what}: a refused batch changed the state"
        history.append(batch)
        if rng.random() < 0.5:
            out = quiet(lambda m=metric, b=batch: m(**b.args))
            if cfg.window is None:
                close(out, expect(cfg, [batch]), f"{what} forward")
            else:
                close(out["lifetime"], expect(cfg, [batch]), what)
                kept = window_of([batch], cfg.window, max_updates=cfg.max_updates)
                close(out["window"], expect(cfg, kept), f"{what} fw")
        else:
            metric.update(**batch.args)
        check_values(cfg, quiet(metric.compute), history, what, merged=merged)


@pytest.mark.parametrize("seed", SEEDS)
def test_segmented_and_windowed_segmented_equal_per_segment_formulas(seed):
    run_standalone(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_unvalidated_ids_outside_the_segments_are_refused_and_change_nothing(seed):
    cfg = draw_config(seed)
    rng = np.random.default_rng(20_000 + seed)
    batches = [b for b in draw_batches(cfg, rng, 4, all_zero_ok=True) if b.size]
    metric = make_metric(cfg, validate_args=False)
    for batch in batches:
        before = snapshot(metric)
        high = batch.args["segments"].clone()
        high[..., -1] = cfg.num_segments
        with pytest.raises(ValueError, match="segments"):
            metric.update(**{**batch.args, "segments": high})
        assert same_state(before, snapshot(metric))
        metric.update(**batch.args)
    check_values(cfg, quiet(metric.compute), batches, f"seed {seed} {cfg}", validated=False)


@pytest.mark.parametrize("seed", SEEDS[::2])
def test_windowed_segmented_tensor_weighted_average_keeps_zero_weight_updates_its_unweighted_tasks_average(seed):
    """``update(values, weights, segments=)``: a task whose ``weighted`` flag is false averages every row, so an
    all-zero-weight update changes its value and keeps its room in the window (docs/windows.md); with every
    task weighted such an update takes no room."""
    rng = np.random.default_rng(60_000 + seed)
    t, s, window = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 40))
    flags = [bool(rng.random() < 0.5) for _ in range(t)]
    metric = tmx.Windowed(tmx.Segmented(tmx.TensorWeightedAverage(num_tasks=t, weighted=flags), s), window)
    history: list[Batch] = []
    for _ in range(int(rng.integers(1, 12))):
        n = int(rng.choice([0, 1, int(rng.integers(2, 20))]))
        values = rng.normal(size=(t, n))
        w = rng.uniform(0.1, 2.0, size=n) * (rng.random(n) < 0.7) * (rng.random() >= 0.2)  # some all-zero updates
        seg = rng.integers(0, s, n)
        args = (torch.tensor(values[0] if t == 1 else values), torch.tensor(w))
        ids = torch.tensor(seg)
        if rng.random() < 0.5:
            metric.update(*args, segments=ids)
        else:
            quiet(lambda a=args, g=ids: metric(*a, segments=g))
        unweighted = np.ones(n)
        rows_w = np.stack([w if flag else unweighted for flag in flags])  # the weights each task averages with
        history.append(Batch(values, np.zeros((t, n)), rows_w, np.broadcast_to(seg, (t, n)).copy()))

    def averages(rows: list[Batch]) -> np.ndarray:
        out = []
        for j in range(t):
            v = np.concatenate([b.p[j] for b in rows]) if rows else np.zeros(0)
            w = np.concatenate([b.w[j] for b in rows]) if rows else np.zeros(0)
            seg = np.concatenate([b.seg[j] for b in rows]).astype(np.int64) if rows else np.zeros(0, np.int64)
            out.append(_ratio(np.bincount(seg, w * v, s), np.bincount(seg, w, s)))
        return np.stack(out)[0] if t == 1 else np.stack(out)

    values = quiet(metric.compute)
    close(values["lifetime"], averages(history), f"seed {seed} flags {flags} lifetime")
    # an all-zero-weight update takes its room when a task averages without weights (validated=False: the rule
    # under which such updates count)
    kept = window_of(history, window, validated=all(flags))
    close(values["window"], averages(kept), f"seed {seed} flags {flags} window")


# ----------------------------------------------------------------------------- MetricCollection


@pytest.mark.parametrize("seed", SEEDS[::3])
def test_a_collection_with_compute_groups_gives_each_metric_its_formula(seed):
    cfg = draw_config(seed)
    rng = np.random.default_rng(30_000 + seed)
    kinds = [*rng.choice(KINDS, size=4, replace=False), "ne", "log_loss"]  # NE/log loss share states

    def member(kind: str) -> tmx.Metric:
        return make_metric(Config(**{**cfg.__dict__, "kind": kind}))  # from_logits, threshold alike

    def build() -> MetricCollection:
        collection = MetricCollection({kind: member(kind) for kind in dict.fromkeys(kinds)}, compute_groups=True)
        collection.persistent(True)  # the Segmented members' states in its state_dict
        return collection

    collection = build()
    history: list[Batch] = []
    batches = draw_batches(cfg, rng, cfg.updates, all_zero_ok=True)
    reload_at = int(rng.integers(len(batches) + 1))
    for i, batch in enumerate(batches):
        if i == reload_at:
            collection = resumed(collection, build, str(rng.choice(RESUMES)))
        for bad, error in bad_inputs(cfg, batch)[:2]:
            before = snapshot(collection)
            with pytest.raises(error, match="segments"):
                collection(**bad) if rng.random() < 0.5 else collection.update(**bad)
            assert same_state(before, snapshot(collection)), f"seed {seed} batch {i}: a refused batch changed it"
        history.append(batch)
        if rng.random() < 0.5:
            collection.update(**batch.args)
        else:
            quiet(lambda c=collection, b=batch: c(**b.args))
        values = quiet(collection.compute)
        for kind in dict.fromkeys(kinds):
            if cfg.window is None:
                close(values[kind], expect(cfg, history, kind), f"{seed} {kind}")
            else:
                expected = expect(cfg, window_of(history, cfg.window, max_updates=cfg.max_updates), kind)
                close(values[f"{kind}_window"], expected, f"{seed} {kind} window")
                close(values[f"{kind}_lifetime"], expect(cfg, history, kind), kind)


# ----------------------------------------------------------------------------- RecMetricModule

TASK_NAMES = ["click", "like", "buy"]


def run_module(seed: int) -> None:
    """Two segmented metrics (of different segment counts) and a plain one, ids from the ``seg`` column."""
    cfg = draw_config(seed)
    rng = np.random.default_rng(40_000 + seed)
    t = cfg.num_tasks
    s_small = cfg.num_segments
    s_large = s_small + int(rng.integers(0, 3))
    kind_a, kind_b, plain = (str(k) for k in rng.choice(KINDS, size=3))
    weighted = [cfg.weights != "none" and bool(rng.random() < 0.8) for _ in range(t)]
    # metric_tasks: each metric reads some tasks, in any order (the plain one the tasks no other reads)
    reads = {name: list(range(t)) for name in ("a", "b", "plain")}
    if t > 1 and rng.random() < 0.4:
        reads = {name: [int(j) for j in rng.permutation(t)[: rng.integers(1, t + 1)]] for name in reads}
        reads["plain"] += [j for j in range(t) if all(j not in reads[m] for m in reads)]
    read_by_segmented = set(reads["a"]) | set(reads["b"])
    # a task no Segmented metric reads may name no id column, or one the steps lack (docs/module.md)
    id_columns = ["seg" if j in read_by_segmented else [None, "seg", "other"][int(rng.integers(3))] for j in range(t)]
    tasks = [
        tmx.RecTaskInfo(
            name, f"{name}_y", f"{name}_p", f"{name}_w" if weighted[i] else None, group_id_name=id_columns[i]
        )
        for i, name in enumerate(TASK_NAMES[:t])
    ]
    metric_tasks = (
        {name: [TASK_NAMES[j] for j in reads[name]] for name in reads}
        if any(listed != list(range(t)) for listed in reads.values())
        else None
    )

    prefix = str(rng.choice(["", "val_"]))
    options = {} if rng.random() < 0.75 else {"validate_args": False}  # unvalidated: the module checks the ids
    registry = kind_a == "ne" and not options and bool(rng.random() < 0.5)  # "segmented_ne" by name

    def build() -> tmx.RecMetricModule:
        specs: dict[str, Any] = {
            "a": lambda num_tasks: tmx.Segmented(make_inner(cfg, kind_a, num_tasks, **options), s_small),
            "b": lambda num_tasks: tmx.Segmented(make_inner(cfg, kind_b, num_tasks, **options), s_large),
            "plain": lambda num_tasks: make_inner(cfg, plain, num_tasks, **options),
        }
        if registry:
            specs["a"] = {"metric": "segmented_ne", "num_segments": s_small, "from_logits": cfg.logits}
        return tmx.RecMetricModule(
            tasks, specs, throughput=False, window_size=cfg.window, metric_tasks=metric_tasks, prefix=prefix
        )

    shared = Config(**{**cfg.__dict__, "per_task_ids": False})
    batches = draw_batches(shared, rng, cfg.updates, all_zero_ok=False)
    for batch in batches:  # the module's rows: unweighted tasks weigh 1
        for i in range(t):
            if not weighted[i]:
                batch.w[i] = 1.0
        if batch.size and not (batch.w > 0).any():
            batch.w[0, -1] = 1.0  # never a whole step of zero weight (the lead's change, see the brief)
        if batch.size and metric_tasks is not None:
            batch.w[:, -1] = np.maximum(batch.w[:, -1], 1.0)  # nor of a metric's tasks (a skip per metric to come)
    module = build()
    history: list[Batch] = []
    reload_at, reset_at = int(rng.integers(len(batches) + 1)), int(rng.integers(-len(batches), len(batches)))
    for i, batch in enumerate(batches):
        what = f"seed {seed} module {cfg} a={kind_a} b={kind_b} plain={plain} reads={metric_tasks} batch {i}"
        step = {"seg": batch.args["segments"].reshape(-1)}
        for j, task in enumerate(tasks):
            step[task.prediction_name] = batch.preds[j]
            step[task.label_name] = torch.tensor(batch.y[j])
            if weighted[j]:
                step[f"{task.name}_w"] = torch.tensor(batch.w[j])
        if i == reload_at:
            module = resumed(module, build, str(rng.choice(RESUMES)))
        if i == reset_at:
            module.reset()
            history = []
        if batch.size:
            ids = step["seg"]
            bad_steps: list[tuple[dict[str, torch.Tensor], type[Exception], str]] = [
                (dict(step, seg=_with_last(ids, s_small)), ValueError, r"`model_out\['seg'\]`: expected segment ids"),
                (dict(step, seg=ids.double()), TypeError, "seg"),
                (dict(step, seg=torch.cat([ids, ids[:1]])), ValueError, "seg"),
            ]
            if ids.dtype != torch.uint8:
                bad_steps.append((dict(step, seg=_with_last(ids, -1)), ValueError, "expected segment ids"))
            for bad, error, match in bad_steps:
                before = snapshot(module)
                with pytest.raises(error, match=match):
                    module.update(bad)
                assert same_state(before, snapshot(module)), f"{what}: a refused step changed the module"
        module.update(step)
        history.append(batch)
        values = quiet(module.compute)
        parts = [("", history)]
        if cfg.window is not None:
            parts.append(("/window", window_of(history, cfg.window)))
        for suffix, rows in parts:
            for name, kind, segments in (("a", kind_a, s_small), ("b", kind_b, s_large), ("plain", plain, 1)):
                fed = [_one_segment(b) for b in rows] if name == "plain" else rows  # plain: every row in one
                expected = expect(cfg, fed, kind, segments).reshape(t, segments)
                for j, task in enumerate(tasks):
                    for g in range(segments):
                        entry = name if name == "plain" else f"{name}.{g}"
                        key = f"{prefix}{entry}/{task.name}{suffix}"
                        if j in reads[name]:
                            close(values[key], expected[j, g], f"{what} {key}")
                        else:
                            assert key not in values, f"{what}: {key} of a task the metric does not read"
        expected_keys = sum(len(reads[m]) * n for m, n in (("a", s_small), ("b", s_large), ("plain", 1)))
        assert len(values) == expected_keys * len(parts), what


def _with_last(ids: torch.Tensor, value: int) -> torch.Tensor:
    out = ids.clone()
    out[-1] = value
    return out


def _one_segment(batch: Batch) -> Batch:
    return Batch(batch.p, batch.y, batch.w, np.zeros_like(batch.seg))


@pytest.mark.parametrize("seed", SEEDS[::2])
def test_module_with_two_segmented_metrics_and_a_plain_one_equals_the_formulas(seed):
    run_module(seed)


# ----------------------------------------------------------------------------- DDP (2 gloo ranks)

DDP_CONFIG = Config(
    seed=7,
    kind="ne",
    num_tasks=2,
    num_segments=5,
    id_dtype=torch.int16,
    per_task_ids=False,
    weights="zeros",
    per_task_weights=True,
    window=25,
    float32=False,
    logits=False,
    threshold=0.5,
    row_ids=False,
    updates=9,
    max_batch=12,
)


def _ddp_batches() -> list[list[Batch]]:
    """Each rank's batches: rank 0 the first six (empty and single-row ones among them), rank 1 the other three."""
    batches = draw_batches(DDP_CONFIG, np.random.default_rng(50_000), DDP_CONFIG.updates, all_zero_ok=False)
    return [batches[:6], batches[6:]]


def _ddp_job(rank: int, world_size: int) -> dict[str, Any]:
    cfg = DDP_CONFIG
    windowed = make_metric(cfg)
    collection = MetricCollection(
        {kind: make_metric(Config(**{**cfg.__dict__, "kind": kind})) for kind in ("ne", "log_loss", "calibration")}
    )
    tasks = [
        tmx.RecTaskInfo(name, f"{name}_y", f"{name}_p", f"{name}_w", group_id_name="seg") for name in TASK_NAMES[:2]
    ]
    module = tmx.RecMetricModule(
        tasks,
        {
            "a": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), cfg.num_segments),
            "b": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks), cfg.num_segments + 1),
            "plain": "calibration",
        },
        throughput=False,
        window_size=cfg.window,
    )
    for batch in _ddp_batches()[rank]:
        windowed.update(**batch.args)
        collection.update(**batch.args)
        step = {"seg": batch.args["segments"]}
        for j, task in enumerate(tasks):
            step |= {task.prediction_name: batch.preds[j], task.label_name: torch.tensor(batch.y[j])}
            step[task.weight_name] = torch.tensor(batch.w[j])
        module.update(step)
    out = {f"windowed_{k}": v for k, v in quiet(windowed.compute).items()}
    out |= {f"collection_{k}": v for k, v in quiet(collection.compute).items()}
    return out | {f"module_{k}": v for k, v in quiet(module.compute).items()}


@pytest.mark.ddp
def test_ddp_ranks_sync_to_the_formulas_over_every_ranks_rows(ddp_pool):
    cfg, shards = DDP_CONFIG, _ddp_batches()
    every = shards[0] + shards[1]
    share = cfg.window // 2  # each rank keeps window_size // world_size samples (docs/windows.md)
    window = window_of(shards[0], share) + window_of(shards[1], share)
    for result in ddp_pool.run(_ddp_job):
        close(result["windowed_lifetime"], expect(cfg, every), "lifetime")
        close(result["windowed_window"], expect(cfg, window), "window")
        for kind in ("ne", "log_loss", "calibration"):
            close(result[f"collection_{kind}_lifetime"], expect(cfg, every, kind), kind)
            close(result[f"collection_{kind}_window"], expect(cfg, window, kind), f"{kind} window")
        for suffix, rows in (("", every), ("/window", window)):
            for name, kind, segments in (("a", "ctr", 5), ("b", "ne", 6), ("plain", "calibration", 1)):
                fed = [_one_segment(b) for b in rows] if name == "plain" else rows
                expected = expect(cfg, fed, kind, segments).reshape(2, segments)
                for j, task in enumerate(TASK_NAMES[:2]):
                    for g in range(segments):
                        key = f"{name}/{task}{suffix}" if name == "plain" else f"{name}.{g}/{task}{suffix}"
                        close(result[f"module_{key}"], expected[j, g], key)
