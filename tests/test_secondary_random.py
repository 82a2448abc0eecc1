"""Randomised checks of the less-fuzzed metric families against references written here from the docs.

Families: ``RegressionAUC``/``XAUC`` (``docs/pairwise_auc.md``), ``SessionPrecisionAtK``/
``SessionRecallAtK``, ``HindsightTargetPR``, ``MultiLabelPrecision``, the counters and
``Segmented`` over them (``docs/torchrec_parity.md``), and ``Reliability`` (its docstring). Every
reference is a plain Python/numpy loop over pairs, sessions, thresholds, bins, labels or segments,
in exact ``Fraction`` arithmetic where a comparison or a rounding would decide the value (pair
weights of 1e-280 and threshold/bin edges such as 3/10); scikit-learn's ``roc_auc_score`` checks
RegressionAUC on binary labels.

Hypothesis draws small multi-task data (1-D or ``(T, N)``, tied and duplicated scores,
float16/bfloat16/float32/float64 predictions, logits, zero/tiny/huge weights shared or per task,
one-class and empty batches) split over several updates, and each draw goes through one
life cycle: ``forward`` per batch (== the reference on that batch), ``compute`` (== the
reference on everything), a ``state_dict`` resume midway, ``merge_state`` of two halves, the
forced device path (:func:`~torchmetrics_ext.utilities.device.force_device_path`) against the
CPU path, the functional twin, and a bad batch that raises and leaves the states exactly as a
deepcopy taken before it. ``MetricCollection`` with compute groups is checked per family.

``SECONDARY_EXAMPLES`` (default 25 per test, about 15 s in all) runs more locally.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning, UndefinedMetricWarning

EXAMPLES = int(os.environ.get("SECONDARY_EXAMPLES", "25"))
# (T, 1) batches are read tasks-first on purpose here
pytestmark = pytest.mark.filterwarnings(f"ignore::{SamplesFirstWarning.__module__}.{SamplesFirstWarning.__name__}")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

Batch = dict[str, Any]
Tensor = torch.Tensor

# ----------------------------------------------------------------------------- life cycle


def _as_numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_numpy(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _has_nan(value: Any) -> bool:
    value = _as_numpy(value)
    return any(_has_nan(v) for v in value.values()) if isinstance(value, dict) else bool(np.isnan(value).any())


def _shape(value: Any) -> Any:
    return {k: v.shape for k, v in value.items()} if isinstance(value, dict) else value.shape


def _drop_axis(value: Any) -> Any:
    return {k: v[0] for k, v in value.items()} if isinstance(value, dict) else value[0]


def assert_close(actual: Any, expected: Any, rtol: float, atol: float, what: str) -> None:
    actual, expected = _as_numpy(actual), _as_numpy(expected)
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{what}: keys {actual} vs {expected}"
        for key in expected:
            assert_close(actual[key], expected[key], rtol, atol, f"{what}[{key}]")
        return
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _states(metric: Metric) -> dict[str, Tensor]:
    out = {}
    for name, value in metric.metric_state.items():
        if isinstance(value, list):
            value = torch.cat([v.reshape(-1) for v in value]) if value else torch.zeros(0, dtype=torch.float64)
        out[name] = value.clone()
    return out


def _update(metric: Metric, batch: Batch) -> None:
    metric.update(**batch)


def _is_empty(batch: Batch) -> bool:
    first = next(iter(batch.values()))
    return first.shape[-1] == 0


def check_life_cycle(
    make: Callable[[], Metric],
    batches: Sequence[Batch],
    reference: Callable[[Sequence[Batch]], Any],
    *,
    functional: Callable[[Batch], Any] | None = None,
    bad: Sequence[tuple[Batch, type[Exception], str]] = (),
    rtol: float = 1e-9,
    atol: float = 1e-12,
    warns: Callable[[Any], bool] | None = None,
) -> None:
    """Every way users feed a metric gives the reference value (see the module docstring).

    ``compute`` warns (``UndefinedMetricWarning``) exactly where ``warns(expected)`` says: by
    default where the expected value has a ``nan``.
    """
    expected_nan = warns or _has_nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = make()
        for batch in batches:
            _update(fresh, batch)
        fresh.compute()
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        should = expected_nan(reference(batches))
    assert bool(undefined) == should, (
        f"UndefinedMetricWarning {[str(w.message) for w in undefined]}, expected: {should}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = reference(batches)
        metric = make()
        for i, batch in enumerate(batches):
            if _is_empty(batch):
                _update(metric, batch)
            else:
                assert_close(metric(**batch), reference([batch]), rtol, atol, f"forward of batch {i}")
        assert_close(metric.compute(), expected, rtol, atol, "compute")
        cpu_value = metric.compute()
        assert_close(pickle.loads(pickle.dumps(metric)).compute(), expected, rtol, atol, "pickled")
        metric.reset()
        for batch in batches:
            _update(metric, batch)
        assert_close(metric.compute(), expected, rtol, atol, "after reset")

        half = len(batches) // 2
        first = make()
        first.persistent(True)
        for batch in batches[:half]:
            _update(first, batch)
        state = copy.deepcopy(first.state_dict())
        resumed = make()
        resumed.persistent(True)
        resumed.load_state_dict(state)
        second = make()
        for batch in batches[half:]:
            _update(resumed, batch)
            _update(second, batch)
        assert_close(resumed.compute(), expected, rtol, atol, "state_dict resume")
        first.merge_state(second)
        assert_close(first.compute(), expected, rtol, atol, "merge_state")

        with force_device_path():
            device = make()
            for batch in batches:
                _update(device, batch)
            assert_close(device.compute(), cpu_value, 1e-12, 1e-14, "device path vs CPU path")

        if functional is not None and batches:
            joined = {k: torch.cat([b[k] for b in batches], -1) for k in batches[0]}
            value, want = _as_numpy(functional(joined)), _as_numpy(reference([joined]))
            # a functional keeps the task axis of (1, N) inputs, a metric of one task does not
            value = _drop_axis(value) if _shape(value) != _shape(want) else value
            assert_close(value, want, rtol, atol, "functional")

        snapshot = copy.deepcopy(_states(metric))
        for bad_batch, exc, match in bad:
            for call in (metric.update, metric.forward):
                with pytest.raises(exc, match=match):
                    call(**bad_batch)
                after = _states(metric)
                assert set(after) == set(snapshot)
                for name in snapshot:
                    assert torch.equal(after[name], snapshot[name]), f"bad batch {match!r} changed {name}"
        if bad:
            assert_close(metric.compute(), expected, rtol, atol, "compute after rejected batches")


def bad_batches(
    num_tasks: int | None, preds: float = 0.5, label_domain: str = "unit", **extra: Tensor
) -> list[tuple[Batch, type[Exception], str]]:
    """Rejected ``(preds, target, weights)`` batches of 2 rows: NaN/inf values, negative weights, bad shapes.

    ``extra`` are further arguments of 2 rows each (session ids).
    """
    t = num_tasks or 1
    shape = (t, 2) if num_tasks else (2,)
    ok = {"preds": torch.full(shape, preds), "target": torch.zeros(shape), **extra}
    out: list[tuple[Batch, type[Exception], str]] = [
        ({**ok, "preds": torch.full(shape, math.nan)}, ValueError, "preds"),
        ({**ok, "target": torch.full(shape, math.nan)}, ValueError, "target"),
        ({**ok, "weights": torch.tensor([1.0, -1.0])}, ValueError, "weights"),
        ({**ok, "weights": torch.tensor([1.0, math.inf])}, ValueError, "weights"),
        ({**ok, "weights": torch.ones(3)}, ValueError, "weights"),
        ({**ok, "target": torch.zeros(*shape[:-1], 3)}, ValueError, "target"),
        ({**ok, "preds": torch.zeros(shape, dtype=torch.int64)}, TypeError, "preds"),
        ({**ok, "preds": torch.full((t + 1, 2), preds), "target": torch.zeros(t + 1, 2)}, ValueError, "preds"),
    ]
    if label_domain == "unit":
        out.append(({**ok, "target": torch.full(shape, 2.0)}, ValueError, "target"))
    return out


def _split(rng_sizes: list[int], n: int) -> list[tuple[int, int]]:
    """Cumulative bounds ``[(0, a), (a, b), ...]`` from batch sizes (the last takes the rest)."""
    bounds, start = [], 0
    for size in rng_sizes:
        bounds.append((start, min(n, start + size)))
        start = min(n, start + size)
    bounds.append((start, n))
    return bounds


@st.composite
def layouts(draw: st.DrawFn, max_n: int = 12) -> tuple[int | None, int, list[tuple[int, int]]]:
    """``(num_tasks or None for 1-D, n, batch bounds)`` with empty batches possible."""
    num_tasks = draw(st.sampled_from([None, 1, 2, 3]))
    n = draw(st.integers(0, max_n))
    sizes = draw(st.lists(st.integers(0, max(n, 1)), min_size=0, max_size=3))
    return num_tasks, n, _split(sizes, n)


def _draw_matrix(draw: st.DrawFn, pool: Sequence[float], t: int, n: int) -> np.ndarray:
    return np.asarray(draw(st.lists(st.sampled_from(pool), min_size=t * n, max_size=t * n)), dtype=np.float64).reshape(
        t, n
    )


def _draw_weights(draw: st.DrawFn, pool: Sequence[float], t: int, n: int) -> np.ndarray | None:
    """``None``, shared ``(1, n)`` or per task ``(t, n)`` weights from ``pool``."""
    kind = draw(st.sampled_from(["none", "shared", "task"]))
    if kind == "none":
        return None
    return _draw_matrix(draw, pool, 1 if kind == "shared" else t, n)


def _batches(
    num_tasks: int | None, bounds: list[tuple[int, int]], **arrays: tuple[np.ndarray | None, torch.dtype]
) -> list[Batch]:
    """Tensors per batch: ``(n,)`` for 1-D, ``(T, n)`` otherwise (``(1, n)`` arrays become shared ``(n,)``)."""
    out = []
    for lo, hi in bounds:
        batch: Batch = {}
        for key, (array, dtype) in arrays.items():
            if array is None:
                continue
            part = array[:, lo:hi]
            if num_tasks is None or (part.shape[0] == 1 and key in ("weights", "sessions", "segments")):
                part = part[0]
            batch[key] = torch.tensor(part).to(dtype)
        out.append(batch)
    return out


def _rows(batches: Sequence[Batch], key: str, t: int) -> list[np.ndarray]:
    """Per task, the float64 values of ``key`` over all batches (``None`` weights: ones)."""
    parts = []
    for batch in batches:
        value = batch.get(key)
        n = next(iter(batch.values())).shape[-1]
        if value is None:
            value = torch.ones(n, dtype=torch.float64)
        value = value.double() if value.is_floating_point() else value.to(torch.int64)
        rows = value.reshape(1, n) if value.ndim == 1 else value
        parts.append(rows.expand(t, n).numpy())
    if not parts:
        return [np.zeros(0) for _ in range(t)]
    joined = np.concatenate(parts, -1)
    return [joined[i] for i in range(t)]


def _per_task(values: list[Any], num_tasks: int | None) -> Any:
    if isinstance(values[0], dict):
        return {k: _per_task([v[k] for v in values], num_tasks) for k in values[0]}
    # one task: a scalar (a (B,)/(L,) curve) whatever the input layout; several: a leading task axis
    return values[0] if num_tasks in (None, 1) else np.asarray(values, dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------------------- pairwise: RegressionAUC, XAUC


def ref_pairs(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``(RegressionAUC, XAUC)`` of one task over every pair ``i < j``, in exact rational arithmetic."""
    c = d = tp = ty = tpy = Fraction(0)
    for i in range(len(p)):
        for j in range(i + 1, len(p)):
            pair = Fraction(w[i]) * Fraction(w[j])
            dp, dy = np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
            if dp == 0 and dy == 0:
                tpy += pair
            elif dp == 0:
                tp += pair
            elif dy == 0:
                ty += pair
            elif dp == dy:
                c += pair
            else:
                d += pair
    comparable, total = c + d + tp, c + d + tp + ty + tpy
    rauc = float((c + tp / 2) / comparable) if comparable > 0 else math.nan
    xauc = float((c + tpy) / total) if total > 0 else math.nan
    return rauc, xauc


PAIR_PREDS = [-2.0, -0.5, 0.0, 0.1, 0.1 + 1e-9, 0.3, 1.0, 3.5]  # 0.1 + 1e-9 ties 0.1 below float64
PAIR_LABELS = [0.0, 1.0, 2.5, 2.5 + 1e-12, 7.0]
PAIR_WEIGHTS = [0.0, 1e-30, 0.5, 1.0, 3.0, 1e30]
# one task's weights 1e300 apart: within the documented range of exactness for N < 16
# (docs/pairwise_auc.md: w(1)/w(2) <= 2^(2042 - 2L), sqrt(w(1) w(2))/p <= 2^(1531 - 2L))
WIDE_WEIGHTS = [0.0, 1e-150, 1e-20, 1.0, 1e20, 1e150]


@st.composite
def pairwise_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    preds = _draw_matrix(draw, PAIR_PREDS, t, n)
    binary = draw(st.booleans())
    target = _draw_matrix(draw, [0.0, 1.0] if binary else PAIR_LABELS, t, n)
    wide = draw(st.booleans())
    weights = _draw_weights(draw, WIDE_WEIGHTS if wide else PAIR_WEIGHTS, t, n)
    # pair weights beyond float64's range
    scale = draw(st.sampled_from([1.0, 1e-150, 1e150] if wide else [1.0, 1e-250, 1e250]))
    if weights is not None:
        weights = weights * scale
    dtype = draw(st.sampled_from(FLOATS))
    target_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batches = _batches(
        num_tasks,
        bounds,
        preds=(preds, dtype),
        target=(target, target_dtype),
        weights=(weights, torch.float64),
    )
    return {"num_tasks": num_tasks, "batches": batches, "from_logits": draw(st.booleans()), "scale": scale}


def _pairwise_reference(num_tasks: int | None, which: int) -> Callable[[Sequence[Batch]], Any]:
    def reference(batches: Sequence[Batch]) -> Any:
        t = num_tasks or 1
        rows = zip(_rows(batches, "preds", t), _rows(batches, "target", t), _rows(batches, "weights", t))
        return _per_task([ref_pairs(p, y, w)[which] for p, y, w in rows], num_tasks)

    return reference


@SETTINGS
@given(pairwise_cases())
def test_pairwise_random(case: dict) -> None:
    num_tasks, batches, logits = case["num_tasks"], case["batches"], case["from_logits"]
    t = num_tasks or 1
    kwargs = {"num_tasks": num_tasks} if num_tasks else {}
    n = sum(b["preds"].shape[-1] for b in batches)
    bad = bad_batches(num_tasks, label_domain="real")
    for which, cls, fn in ((0, tmx.RegressionAUC, tmf.regression_auc), (1, tmx.XAUC, tmf.xauc)):
        check_life_cycle(
            lambda cls=cls: cls(**kwargs, from_logits=logits),
            batches,
            _pairwise_reference(num_tasks, which),
            functional=lambda b, fn=fn: fn(**b, from_logits=logits),
            bad=bad,
            rtol=0,
            atol=1e-13,
        )
    # binary labels: RegressionAUC is the weighted ROC AUC (docs/pairwise_auc.md)
    if n and case["scale"] == 1.0:
        rows = zip(*(_rows(batches, key, t) for key in ("preds", "target", "weights")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            for task, (p, y, w) in enumerate(rows):
                if set(np.unique(y)) <= {0.0, 1.0} and (w * y).sum() > 0 and (w * (1 - y)).sum() > 0:
                    joined = {k: torch.cat([b[k] for b in batches], -1) for k in batches[0]}
                    value = tmf.regression_auc(**joined)
                    value = value if num_tasks is None else value[task]
                    assert value.item() == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)


@SETTINGS
@given(pairwise_cases())
def test_pairwise_collection_shares_samples(case: dict) -> None:
    """RegressionAUC and XAUC (and a from_logits XAUC) in one compute group give their own references."""
    num_tasks, batches = case["num_tasks"], case["batches"]
    kwargs = {"num_tasks": num_tasks} if num_tasks else {}
    collection = MetricCollection(
        {"rauc": tmx.RegressionAUC(**kwargs), "xauc": tmx.XAUC(**kwargs), "xl": tmx.XAUC(**kwargs, from_logits=True)},
        compute_groups=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in batches:
            collection.update(**batch)
        values = collection.compute()
        assert_close(values["rauc"], _pairwise_reference(num_tasks, 0)(batches), 0, 1e-13, "collection rauc")
        assert_close(values["xauc"], _pairwise_reference(num_tasks, 1)(batches), 0, 1e-13, "collection xauc")
        assert_close(values["xl"], values["xauc"], 0, 0, "collection from_logits xauc")


# ----------------------------------------------------------------------------- sessions


def ref_sessions(
    batches: Sequence[Batch], t: int, k: int, rank_labels: bool
) -> list[tuple[float, float, float, list[tuple[float, float, float]]]]:
    """Per task: pooled TP/FP/FN and per-session (TP, FP, FN); a session is an id within one batch."""
    out = []
    for task in range(t):
        sessions: list[tuple[float, float, float]] = []
        for batch in batches:
            p, y, w, s = (_rows([batch], key, t)[task] for key in ("preds", "target", "weights", "sessions"))
            for sid in np.unique(s):
                rows = [i for i in range(len(s)) if s[i] == sid and w[i] > 0]  # a zero weight: an absent row
                tp = fp = fn = 0.0
                for i in rows:
                    predicted = sum(p[j] > p[i] for j in rows) < k
                    label = (sum(y[j] > y[i] for j in rows) < k) if rank_labels else y[i]
                    tp += w[i] * label * predicted
                    fp += w[i] * (1 - label) * predicted
                    fn += w[i] * label * (not predicted)
                sessions.append((tp, fp, fn))
        totals = [sum(x[i] for x in sessions) for i in range(3)]
        out.append((*totals, sessions))
    return out


def _session_reference(num_tasks: int | None, k: int, average: str, rank_labels: bool, recall: bool):
    def reference(batches: Sequence[Batch]) -> Any:
        values = []
        for tp, fp, fn, sessions in ref_sessions(batches, num_tasks or 1, k, rank_labels):
            if average == "micro":
                den = tp + (fn if recall else fp)
                values.append(tp / den if den > 0 else math.nan)
            else:
                rates = [a / (a + (c if recall else b)) for a, b, c in sessions if a + (c if recall else b) > 0]
                values.append(sum(rates) / len(rates) if rates else math.nan)
        return _per_task(values, num_tasks)

    return reference


@st.composite
def session_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts(max_n=14))
    t = num_tasks or 1
    rank_labels = draw(st.booleans())
    preds = _draw_matrix(draw, [-1.0, 0.1, 0.5, 0.5, 0.9, 3.0], t, n)
    target = _draw_matrix(draw, [-1.0, 0.0, 1.0, 2.0, 2.0, 5.5] if rank_labels else [0.0, 1.0, 1.0, 0.5], t, n)
    weights = _draw_weights(draw, [0.0, 0.0, 0.25, 1.0, 1.0, 3.0, 1e-30, 1e30], t, n)  # zero weights: absent rows
    shared_ids = num_tasks is None or draw(st.booleans())
    id_pool = draw(st.sampled_from([[-5, 0, 1, 7, 2**40], [0, 3]]))  # many small sessions, or two large ones
    ids = _draw_matrix(draw, id_pool, 1 if shared_ids else t, n)
    id_dtype = torch.int64 if (np.abs(ids) > 2**31).any() or draw(st.booleans()) else torch.int32
    batches = _batches(
        num_tasks,
        bounds,
        preds=(preds, draw(st.sampled_from(FLOATS))),
        target=(target, torch.float64),
        sessions=(ids.astype(np.int64), id_dtype),
        weights=(weights, torch.float64),
    )
    return {
        "num_tasks": num_tasks,
        "batches": batches,
        "k": draw(st.sampled_from([1, 1, 2, 3, 50])),
        "average": draw(st.sampled_from(["session", "micro"])),
        "rank_labels": rank_labels,
    }


@SETTINGS
@given(session_cases())
def test_sessions_random(case: dict) -> None:
    num_tasks, batches = case["num_tasks"], case["batches"]
    t = num_tasks or 1
    options = {"k": case["k"], "average": case["average"], "rank_labels": case["rank_labels"]}
    tasks = {"num_tasks": num_tasks} if num_tasks else {}
    shape = (t, 2) if num_tasks else (2,)
    bad = [
        *bad_batches(
            num_tasks,
            label_domain="real" if case["rank_labels"] else "unit",
            sessions=torch.zeros(2, dtype=torch.int64),
        ),
        (
            {"preds": torch.zeros(shape), "target": torch.zeros(shape), "sessions": torch.zeros(shape)},
            TypeError,
            "sessions",
        ),
        (
            {"preds": torch.zeros(shape), "target": torch.zeros(shape), "sessions": torch.zeros(3, dtype=torch.int64)},
            ValueError,
            "sessions",
        ),
    ]
    for recall, cls, fn in (
        (False, tmx.SessionPrecisionAtK, tmf.session_precision_at_k),
        (True, tmx.SessionRecallAtK, tmf.session_recall_at_k),
    ):
        check_life_cycle(
            lambda cls=cls: cls(**tasks, **options),
            batches,
            _session_reference(num_tasks, recall=recall, **options),
            functional=lambda b, fn=fn: fn(**b, **options),
            bad=bad,
        )
    collection = MetricCollection(
        {"p": tmx.SessionPrecisionAtK(**tasks, **options), "r": tmx.SessionRecallAtK(**tasks, **options)},
        compute_groups=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in batches:
            collection.update(**batch)
        values = collection.compute()
        assert_close(values["p"], _session_reference(num_tasks, recall=False, **options)(batches), 1e-9, 1e-12, "p")
        assert_close(values["r"], _session_reference(num_tasks, recall=True, **options)(batches), 1e-9, 1e-12, "r")


# ----------------------------------------------------------------------------- hindsight target PR

# scores on grid points j / s (s = 10, 20, 100, ...) and one unit in the last place either side of them,
# -0.0 and the smallest subnormal: where the arithmetic bin search could be one off
GRID_SCORES = [
    -0.0,
    0.0,
    5e-324,
    0.1,
    0.3,
    float(np.nextafter(0.3, 0.0)),
    float(np.nextafter(0.3, 1.0)),
    0.5,
    float(np.nextafter(0.5, 0.0)),
    0.7,
    float(np.nextafter(0.7, 1.0)),
    float(np.nextafter(1.0, 0.0)),
    1.0,
]


def ref_hindsight(q: np.ndarray, y: np.ndarray, w: np.ndarray, target_precision: float, b: int) -> dict:
    """Loop over the thresholds, each the float64 ``j/(b-1)`` (correctly rounded), compared exactly with each probability."""
    exact = [Fraction(float(x)) for x in q]

    def counts(j: int) -> tuple[float, float]:
        reached = [x >= Fraction(j / (b - 1)) for x in exact]
        return (
            float(sum(wi * yi for wi, yi, r in zip(w, y, reached) if r)),
            float(sum(wi * (1 - yi) for wi, yi, r in zip(w, y, reached) if r)),
        )

    chosen = b - 1
    for j in range(b):
        tp, fp = counts(j)
        if (tp / (tp + fp) if tp + fp > 0 else 0.0) >= target_precision:  # TorchRec: precision 0 where none reaches t
            chosen = j
            break
    tp, fp = counts(chosen)
    positives = float((w * y).sum())
    return {
        "threshold": chosen / (b - 1),
        "precision": tp / (tp + fp) if tp + fp > 0 else math.nan,
        "recall": tp / positives if positives > 0 else math.nan,
    }


@st.composite
def hindsight_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    logits = draw(st.booleans())
    pool = [-3.0, -0.5, 0.0, 0.5, 2.0, 40.0] if logits else [*GRID_SCORES, 0.35, 0.7, 1 / 3, 0.2999999]
    preds = _draw_matrix(draw, pool, t, n)
    target = _draw_matrix(draw, [0.0, 1.0, 1.0, 0.5], t, n)
    weights = _draw_weights(draw, [0.0, 0.25, 0.5, 1.0, 3.0, 2.0**20], t, n)  # sums exact in float64
    batches = _batches(
        num_tasks,
        bounds,
        preds=(preds, draw(st.sampled_from(FLOATS))),
        target=(target, draw(st.sampled_from([torch.float32, torch.float64]))),
        weights=(weights, torch.float64),
    )
    return {
        "num_tasks": num_tasks,
        "batches": batches,
        "from_logits": logits,
        "num_thresholds": draw(st.sampled_from([2, 3, 4, 11, 21, 101])),
        "target_precision": draw(st.sampled_from([0.0, 0.3, 0.5, 2 / 3, 0.75, 1.0])),
    }


@SETTINGS
@given(hindsight_cases())
def test_hindsight_random(case: dict) -> None:
    num_tasks, batches, logits = case["num_tasks"], case["batches"], case["from_logits"]
    t = num_tasks or 1
    options = {"num_thresholds": case["num_thresholds"], "target_precision": case["target_precision"]}
    tasks = {"num_tasks": num_tasks} if num_tasks else {}

    def reference(parts: Sequence[Batch]) -> Any:
        rows = zip(*(_rows(parts, key, t) for key in ("preds", "target", "weights")))
        return _per_task(
            [
                ref_hindsight(_sigmoid(p) if logits else p, y, w, case["target_precision"], case["num_thresholds"])
                for p, y, w in rows
            ],
            num_tasks,
        )

    shape = (t, 2) if num_tasks else (2,)
    bad = bad_batches(num_tasks)
    if not logits:
        bad.append(({"preds": torch.full(shape, 1.5), "target": torch.zeros(shape)}, ValueError, "preds"))
    check_life_cycle(
        lambda: tmx.HindsightTargetPR(**tasks, **options, from_logits=logits),
        batches,
        reference,
        functional=lambda b: tmf.hindsight_target_pr(**b, **options, from_logits=logits),
        bad=bad,
    )
    # the target precision is a choice of compute: two of them share one compute group
    other = dict(options, target_precision=1.0 - case["target_precision"])
    collection = MetricCollection(
        {
            "a": tmx.HindsightTargetPR(**tasks, **options, from_logits=logits),
            "b": tmx.HindsightTargetPR(**tasks, **other, from_logits=logits),
        },
        compute_groups=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in batches:
            collection.update(**batch)
        values = collection.compute()
        for key, opts in (("a", options), ("b", other)):
            case_b = dict(case, target_precision=opts["target_precision"])
            rows = zip(*(_rows(batches, k, t) for k in ("preds", "target", "weights")))
            expected = _per_task(
                [
                    ref_hindsight(
                        _sigmoid(p) if logits else p, y, w, case_b["target_precision"], case["num_thresholds"]
                    )
                    for p, y, w in rows
                ],
                num_tasks,
            )
            got = {name[len(key) + 1 :]: value for name, value in values.items() if name.startswith(key + "_")}
            assert_close(got, expected, 1e-9, 1e-12, f"collection {key}")


# ----------------------------------------------------------------------------- reliability

EDGE_SETS = [None, [0.0, 0.01, 0.1, 0.5, 1.0], [0.2, 0.5, 0.8], [-1.0, 0.3, 2.0], [0.0, 0.3, 0.35, 1.0]]


def _bin(x: float, edges: Sequence[float]) -> int:
    """``e_b <= x < e_{b+1}``, compared exactly; below/above the inner edges: the end bins."""
    exact = Fraction(float(x))
    inner = [Fraction(e) for e in edges[1:-1]]
    return sum(exact >= e for e in inner)


def ref_reliability(q: np.ndarray, y: np.ndarray, w: np.ndarray, edges: Sequence[Any]) -> dict:
    num_bins = len(edges) - 1
    weight, pred, label = np.zeros(num_bins), np.zeros(num_bins), np.zeros(num_bins)
    for x, yi, wi in zip(q, y, w):
        b = _bin(x, edges)
        weight[b] += wi
        pred[b] += wi * x
        label[b] += wi * yi
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = weight <= 0
        return {
            "mean_prediction": np.where(empty, np.nan, pred / np.where(empty, 1, weight)),
            "label_rate": np.where(empty, np.nan, label / np.where(empty, 1, weight)),
            "weight": weight,
        }


@st.composite
def reliability_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    logits = draw(st.booleans())
    pool = [-3.0, -0.5, 0.0, 0.5, 2.0, 40.0] if logits else [*GRID_SCORES, 0.005, 0.35, 0.8, 0.9999]
    preds = _draw_matrix(draw, pool, t, n)
    target = _draw_matrix(draw, [0.0, 1.0, 0.25], t, n)
    weights = _draw_weights(draw, [0.0, 1e-30, 0.5, 1.0, 3.0, 1e30], t, n)
    batches = _batches(
        num_tasks,
        bounds,
        preds=(preds, draw(st.sampled_from(FLOATS))),
        target=(target, torch.float64),
        weights=(weights, draw(st.sampled_from([torch.float32, torch.float64]))),
    )
    edges = draw(st.sampled_from(EDGE_SETS))
    num_bins = draw(st.sampled_from([1, 2, 3, 10, 20]))
    return {"num_tasks": num_tasks, "batches": batches, "from_logits": logits, "edges": edges, "num_bins": num_bins}


@SETTINGS
@given(reliability_cases())
def test_reliability_random(case: dict) -> None:
    num_tasks, batches, logits, edges = case["num_tasks"], case["batches"], case["from_logits"], case["edges"]
    t = num_tasks or 1
    # uniform edges: each the float64 b / B, correctly rounded (a score of exactly 0.3 is in [0.3, 0.4))
    grid = edges if edges is not None else [b / case["num_bins"] for b in range(case["num_bins"] + 1)]
    options = {"edges": edges} if edges is not None else {"num_bins": case["num_bins"]}
    tasks = {"num_tasks": num_tasks} if num_tasks else {}

    def reference(parts: Sequence[Batch]) -> Any:
        rows = zip(*(_rows(parts, key, t) for key in ("preds", "target", "weights")))
        return _per_task([ref_reliability(_sigmoid(p) if logits else p, y, w, grid) for p, y, w in rows], num_tasks)

    shape = (t, 2) if num_tasks else (2,)
    bad = bad_batches(num_tasks)
    if not logits:
        bad.append(({"preds": torch.full(shape, -0.25), "target": torch.zeros(shape)}, ValueError, "preds"))
    check_life_cycle(
        lambda: tmx.Reliability(**tasks, **options, from_logits=logits),
        batches,
        reference,
        functional=lambda b: tmf.reliability(**b, **options, from_logits=logits),
        bad=bad,
        # an empty bin is nan without a warning; a task without any weight warns
        warns=lambda value: bool((np.atleast_2d(_as_numpy(value)["weight"]).sum(-1) <= 0).any()),
    )


# ----------------------------------------------------------------------------- multi-label precision


def ref_multilabel(pred_codes: np.ndarray, true_codes: np.ndarray, w: np.ndarray, num_labels: int) -> np.ndarray:
    out = np.zeros(num_labels)
    for j in range(num_labels):
        tp = fp = 0.0
        for pc, tc, wi in zip(pred_codes, true_codes, w):
            if (int(pc) >> j) & 1:
                if (int(tc) >> j) & 1:
                    tp += wi
                else:
                    fp += wi
        out[j] = tp / (tp + fp) if tp + fp > 0 else math.nan
    return out


@st.composite
def multilabel_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    num_labels = draw(st.sampled_from([1, 3, 8, 9, 31, 62]))
    codes = st.integers(0, 2**num_labels - 1)
    preds = np.asarray(draw(st.lists(codes, min_size=t * n, max_size=t * n)), dtype=np.int64).reshape(t, n)
    target = np.asarray(draw(st.lists(codes, min_size=t * n, max_size=t * n)), dtype=np.int64).reshape(t, n)
    repeat = draw(st.sampled_from([1, 1, 80]))  # 80: n * L past 2**15 bits takes the byte-histogram path
    preds, target = np.tile(preds, repeat), np.tile(target, repeat)
    bounds = [(lo * repeat, hi * repeat) for lo, hi in bounds]
    weights = _draw_weights(draw, [0.0, 0.25, 1.0, 3.0], t, n)
    weights = None if weights is None else np.tile(weights, repeat)
    dtypes = [torch.int64] + ([torch.int32] if num_labels <= 31 else []) + ([torch.uint8] if num_labels <= 8 else [])
    dtype = draw(st.sampled_from(dtypes))
    batches = _batches(
        num_tasks, bounds, preds=(preds, dtype), target=(target, dtype), weights=(weights, torch.float64)
    )
    return {"num_tasks": num_tasks, "batches": batches, "num_labels": num_labels}


@SETTINGS
@given(multilabel_cases())
def test_multilabel_random(case: dict) -> None:
    num_tasks, batches, num_labels = case["num_tasks"], case["batches"], case["num_labels"]
    t = num_tasks or 1
    tasks = {"num_tasks": num_tasks} if num_tasks else {}

    def reference(parts: Sequence[Batch]) -> Any:
        rows = zip(*(_rows(parts, key, t) for key in ("preds", "target", "weights")))
        return _per_task([ref_multilabel(p, y, w, num_labels) for p, y, w in rows], num_tasks)

    shape = (t, 2) if num_tasks else (2,)
    too_big = torch.full(shape, 2**num_labels, dtype=torch.int64)
    check_life_cycle(
        lambda: tmx.MultiLabelPrecision(num_labels, **tasks),
        batches,
        reference,
        functional=lambda b: tmf.multi_label_precision(**b, num_labels=num_labels),
        bad=[
            ({"preds": too_big, "target": torch.zeros_like(too_big)}, ValueError, "codes"),
            ({"preds": -torch.ones_like(too_big), "target": torch.zeros_like(too_big)}, ValueError, "codes"),
            ({"preds": too_big.double(), "target": torch.zeros_like(too_big)}, TypeError, "preds"),
            (
                {"preds": torch.zeros_like(too_big), "target": torch.zeros_like(too_big), "weights": -torch.ones(2)},
                ValueError,
                "weights",
            ),
            (
                {"preds": torch.zeros_like(too_big), "target": torch.zeros(*shape[:-1], 3, dtype=torch.int64)},
                ValueError,
                "target",
            ),
        ],
    )


# ----------------------------------------------------------------------------- counters and Segmented


def _sum(x: np.ndarray) -> float:
    return float(np.sum(x))


def _by_segment(
    formula: Callable[..., Any], num_tasks: int | None, keys: Sequence[str], per_task: bool = False
) -> Callable[[Sequence[Batch]], Any]:
    """Per task and segment id in [0, 3): ``formula(*columns, weights)`` over that segment's rows."""

    def reference(parts: Sequence[Batch]) -> Any:
        t = num_tasks or 1
        values = []
        for task in range(t):
            columns = [_rows(parts, key, t)[task] for key in (*keys, "weights", "segments")]
            fn = formula(task) if per_task else formula
            values.append([fn(*(c[columns[-1] == s] for c in columns[:-1])) for s in range(3)])
        return np.asarray(values[0] if num_tasks in (None, 1) else values)

    return reference


# name -> (class, functional, (p, y, w) -> value, needs target)
COUNTERS: dict[str, tuple[Any, Any, Callable[..., float], bool]] = {
    "sum_weights": (tmx.SumWeights, tmf.sum_weights, lambda p, y, w: _sum(w), False),
    "num_positive": (tmx.NumPositiveSamples, tmf.num_positive_samples, lambda p, y, w: _sum(w * y), True),
    "sum_predictions": (tmx.WeightedSumPredictions, tmf.weighted_sum_predictions, lambda p, y, w: _sum(w * p), False),
    "serving": (tmx.NumServingExamples, tmf.num_serving_examples, lambda p, y, w: float((w > 0).sum()), False),
    "label_average": (
        tmx.LabelAverage,
        tmf.label_average,
        lambda p, y, w: _sum(w * y) / _sum(w) if _sum(w) > 0 else math.nan,
        True,
    ),
}


@st.composite
def counter_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    preds = _draw_matrix(draw, [-2.0, 0.0, 0.1, 0.5, 1.0, 7.0], t, n)
    target = _draw_matrix(draw, [0.0, 1.0, 0.5], t, n)
    weights = _draw_weights(draw, [0.0, 1e-30, 0.5, 1.0, 3.0, 1e30], t, n)
    segments = _draw_matrix(draw, [0, 1, 2], 1 if num_tasks is None or draw(st.booleans()) else t, n)
    batches = _batches(
        num_tasks,
        bounds,
        preds=(preds, draw(st.sampled_from(FLOATS))),
        target=(target, draw(st.sampled_from([torch.float32, torch.float64]))),
        weights=(weights, torch.float64),
        segments=(segments.astype(np.int64), torch.int64),
    )
    return {"num_tasks": num_tasks, "batches": batches}


@SETTINGS
@given(counter_cases())
def test_counters_random(case: dict) -> None:
    for name in sorted(COUNTERS):
        _check_counter(case, name)


def _check_counter(case: dict, name: str) -> None:
    num_tasks = case["num_tasks"]
    cls, fn, formula, _ = COUNTERS[name]
    t = num_tasks or 1
    tasks = {"num_tasks": num_tasks} if num_tasks else {}
    batches = [{k: v for k, v in b.items() if k != "segments"} for b in case["batches"]]

    def reference(parts: Sequence[Batch]) -> Any:
        rows = zip(*(_rows(parts, key, t) for key in ("preds", "target", "weights")))
        return _per_task([formula(p, y, w) for p, y, w in rows], num_tasks)

    bad = bad_batches(num_tasks, label_domain="unit" if name == "num_positive" else "real")
    check_life_cycle(lambda: cls(**tasks), batches, reference, functional=lambda b: fn(**b), bad=bad)

    # Segmented: the same sums per segment id; counters report 0 in an empty segment, averages nan
    def per_segment(parts: Sequence[Batch]) -> Any:
        values = []
        for task in range(t):
            p, y, w, g = (_rows(parts, key, t)[task] for key in ("preds", "target", "weights", "segments"))
            values.append([formula(p[g == s], y[g == s], w[g == s]) for s in range(3)])
        return np.asarray(values[0] if num_tasks in (None, 1) else values)

    check_life_cycle(lambda: tmx.Segmented(cls(**tasks), num_segments=3), case["batches"], per_segment, rtol=1e-12)
    collection = MetricCollection(
        {"plain": cls(**tasks), "seg": tmx.Segmented(cls(**tasks), 3), "seg2": tmx.Segmented(cls(**tasks), 3)},
        compute_groups=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in case["batches"]:
            collection.update(**batch)  # the plain metric's update takes no `segments`: filtered out
        assert_close(collection["plain"].compute(), reference(batches), 1e-12, 1e-12, "collection plain")
        assert_close(collection["seg"].compute(), per_segment(case["batches"]), 1e-12, 1e-12, "collection seg")


@st.composite
def missing_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    target = _draw_matrix(draw, [0.0, 1.0, math.nan, 3.5], t, n)
    weights = _draw_weights(draw, [0.0, 0.5, 1.0, 3.0], t, n)
    arrays = {
        "preds": (np.zeros((t, n)), torch.float32),
        "target": (target, draw(st.sampled_from(FLOATS))),
        "weights": (weights, torch.float64),
    }
    segments = (_draw_matrix(draw, [0, 1, 2], t, n).astype(np.int64), torch.int64)
    return {
        "num_tasks": num_tasks,
        "batches": _batches(num_tasks, bounds, **arrays),
        "segmented": _batches(num_tasks, bounds, **arrays, segments=segments),
        "count_zero_weight": draw(st.booleans()),
    }


@SETTINGS
@given(missing_cases())
def test_missing_labels_random(case: dict) -> None:
    num_tasks, batches, unweighted = case["num_tasks"], case["batches"], case["count_zero_weight"]
    t = num_tasks or 1
    tasks = {"num_tasks": num_tasks} if num_tasks else {}

    def reference(parts: Sequence[Batch]) -> Any:
        rows = zip(*(_rows(parts, key, t) for key in ("target", "weights")))
        return _per_task([_sum(np.isnan(y) * (1.0 if unweighted else w)) for y, w in rows], num_tasks)

    shape = (t, 2) if num_tasks else (2,)
    bad = [b for b in bad_batches(num_tasks, label_domain="real") if not torch.isnan(b[0]["target"]).any()]
    bad.append(({"preds": torch.zeros(shape), "target": torch.full(shape, math.inf)}, ValueError, "target"))
    bad.append(({"preds": torch.zeros(shape), "target": torch.zeros(shape, dtype=torch.int64)}, TypeError, "target"))
    check_life_cycle(
        lambda: tmx.NumMissingLabels(**tasks, count_zero_weight=unweighted),
        batches,
        reference,
        functional=lambda b: tmf.num_missing_labels(**b, count_zero_weight=unweighted),
        bad=bad,
    )
    check_life_cycle(
        lambda: tmx.Segmented(tmx.NumMissingLabels(**tasks, count_zero_weight=unweighted), 3),
        case["segmented"],
        _by_segment(lambda p, y, w: _sum(np.isnan(y) * (1.0 if unweighted else w)), num_tasks, ("preds", "target")),
    )


@st.composite
def tensor_average_cases(draw: st.DrawFn) -> dict:
    num_tasks, n, bounds = draw(layouts())
    t = num_tasks or 1
    values = _draw_matrix(draw, [-2.0, 0.0, 0.5, 7.0], t, n)
    weights = _draw_weights(draw, [0.0, 0.5, 1.0, 3.0, 1e30], t, n)
    flags = draw(st.lists(st.booleans(), min_size=t, max_size=t))
    arrays = {"values": (values, draw(st.sampled_from(FLOATS))), "weights": (weights, torch.float64)}
    segments = (_draw_matrix(draw, [0, 1, 2], 1, n).astype(np.int64), torch.int64)
    return {
        "num_tasks": num_tasks,
        "batches": _batches(num_tasks, bounds, **arrays),
        "segmented": _batches(num_tasks, bounds, **arrays, segments=segments),
        "weighted": flags,
    }


@SETTINGS
@given(tensor_average_cases())
def test_tensor_weighted_average_random(case: dict) -> None:
    num_tasks, batches, flags = case["num_tasks"], case["batches"], case["weighted"]
    t = num_tasks or 1
    tasks = {"num_tasks": num_tasks} if num_tasks else {}

    def reference(parts: Sequence[Batch]) -> Any:
        out = []
        for task, (v, w) in enumerate(zip(*(_rows(parts, key, t) for key in ("values", "weights")))):
            w = w if flags[task] else np.ones_like(w)
            out.append(_sum(w * v) / _sum(w) if _sum(w) > 0 else math.nan)
        return _per_task(out, num_tasks)

    shape = (t, 2) if num_tasks else (2,)
    check_life_cycle(
        lambda: tmx.TensorWeightedAverage(**tasks, weighted=flags),
        batches,
        reference,
        functional=lambda b: tmf.tensor_weighted_average(**b, weighted=flags),
        bad=[
            ({"values": torch.full(shape, math.nan)}, ValueError, "values"),
            ({"values": torch.zeros(shape), "weights": torch.tensor([1.0, -1.0])}, ValueError, "weights"),
            ({"values": torch.zeros(shape), "target": torch.zeros(shape)}, TypeError, "target"),
        ],
    )

    def average(task: int) -> Callable[..., float]:
        def value(v: np.ndarray, w: np.ndarray) -> float:
            w = w if flags[task] else np.ones_like(w)
            return _sum(w * v) / _sum(w) if _sum(w) > 0 else math.nan

        return value

    check_life_cycle(
        lambda: tmx.Segmented(tmx.TensorWeightedAverage(**tasks, weighted=flags), 3),
        case["segmented"],
        _by_segment(average, num_tasks, ("values",), per_task=True),
    )


# ----------------------------------------------------------------------------- compute groups across settings


@st.composite
def alike_cases(draw: st.DrawFn) -> dict:
    """Batches whose first update makes many states look alike (constant scores, unit or no weights)."""
    n = draw(st.integers(1, 8))
    score = draw(st.sampled_from([0.0, 0.5, 1.0]))
    constant = draw(st.booleans())
    preds = np.full((1, n), score) if constant else _draw_matrix(draw, [0.0, 0.3, 0.5, 1.0], 1, n)
    target = _draw_matrix(draw, [0.0, 1.0], 1, n)
    weights = None if draw(st.booleans()) else np.ones((1, n))
    sessions = _draw_matrix(draw, [0, 1], 1, n).astype(np.int64)
    bounds = _split(draw(st.lists(st.integers(1, n), max_size=2)), n)
    arrays = {"preds": (preds, torch.float32), "target": (target, torch.float32), "weights": (weights, torch.float64)}
    return {"batches": _batches(None, bounds, **arrays, sessions=(sessions, torch.int64))}


@SETTINGS
@given(alike_cases())
def test_compute_groups_keep_settings_apart(case: dict) -> None:
    """One MetricCollection with compute groups of metrics whose settings differ: each gets its own reference."""
    batches = case["batches"]
    metrics: dict[str, tuple[Metric, Callable[[Sequence[Batch]], Any]]] = {}
    for name, k, average, rank_labels, recall in (
        ("sp2", 2, "session", False, False),
        ("sp3", 3, "session", False, False),
        ("sp2m", 2, "micro", False, False),
        ("sr2", 2, "session", False, True),
        ("sr2r", 2, "session", True, True),
    ):
        cls = tmx.SessionRecallAtK if recall else tmx.SessionPrecisionAtK
        ref = _session_reference(None, k, average, rank_labels, recall)
        metrics[name] = (cls(k=k, average=average, rank_labels=rank_labels), ref)
    for name, b, tp, logits in (("h11", 11, 0.5, False), ("h11l", 11, 0.5, True), ("h5", 5, 0.5, False)):

        def hindsight(parts: Sequence[Batch], b: int = b, tp: float = tp, logits: bool = logits) -> Any:
            p, y, w = (_rows(parts, key, 1)[0] for key in ("preds", "target", "weights"))
            return ref_hindsight(_sigmoid(p) if logits else p, y, w, tp, b)

        metrics[name] = (tmx.HindsightTargetPR(num_thresholds=b, target_precision=tp, from_logits=logits), hindsight)
    for name, options, logits in (
        ("rel10", {"num_bins": 10}, False),
        ("rel10e", {"edges": [b / 10 for b in range(11)]}, False),
        ("rel5", {"num_bins": 5}, False),
        ("relc", {"edges": [0.0, 0.4, 1.0]}, False),
        ("rel10l", {"num_bins": 10}, True),
    ):
        grid = options.get("edges", [b / options.get("num_bins", 1) for b in range(options.get("num_bins", 0) + 1)])

        def curve(parts: Sequence[Batch], grid: list = grid, logits: bool = logits) -> Any:
            p, y, w = (_rows(parts, key, 1)[0] for key in ("preds", "target", "weights"))
            return ref_reliability(_sigmoid(p) if logits else p, y, w, grid)

        metrics[name] = (tmx.Reliability(**options, from_logits=logits), curve)
    for name in sorted(COUNTERS):
        cls, _, formula, _ = COUNTERS[name]

        def counter(parts: Sequence[Batch], formula: Callable = formula) -> Any:
            return formula(*(_rows(parts, key, 1)[0] for key in ("preds", "target", "weights")))

        metrics[name] = (cls(), counter)
    for name, cls in (("rauc", tmx.RegressionAUC), ("xauc", tmx.XAUC)):
        metrics[name] = (cls(), lambda parts, which=int(name == "xauc"): _pairwise_reference(None, which)(parts))

    collection = MetricCollection({name: metric for name, (metric, _) in metrics.items()}, compute_groups=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in batches:
            collection.update(**batch)
        values = collection.compute()
        for name, (_, reference) in metrics.items():
            expected = reference(batches)
            got = (
                values[name]
                if name in values
                else {k[len(name) + 1 :]: v for k, v in values.items() if k.startswith(name + "_")}
            )
            assert_close(got, expected, 1e-9, 1e-12, f"collection {name}")
