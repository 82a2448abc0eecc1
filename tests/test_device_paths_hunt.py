"""Issue 14's device kernels on adversarial data and flows, against independent references.

Every test runs on three paths: ``cpu`` (CPU tensors, the CPU kernels), ``device`` (CPU tensors
through the device kernels, :func:`~torchmetrics_ext.utilities.device.force_device_path`) and
``cuda`` (marked ``cuda``, skipped without a GPU; ``benchmarks/gpu_check.sh`` runs them). The
references are written here: scikit-learn with ``sample_weight``, NumPy bin formulas, exact
``Fraction`` pair counts, plain-Python ranking loops, ``numpy.percentile``; never a value of the
code under test.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext import aggregation as agg
from torchmetrics_ext.functional.auc import _device
from torchmetrics_ext.utilities.device import force_device_path

ROOT = Path(__file__).resolve().parents[1]
_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PATHS = ["cpu", "device", pytest.param("cuda", marks=[pytest.mark.cuda, _NO_CUDA])]


@contextlib.contextmanager
def on(path: str) -> Iterator[None]:
    """The kernels of ``path`` (the device path forced for ``device``); undefined-value warnings silenced."""
    with force_device_path(path == "device"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def dev(path: str) -> str:
    return "cuda" if path == "cuda" else "cpu"


def f32(x: np.ndarray) -> np.ndarray:
    """The float64 values of ``x`` rounded to float32 (exact-mode AUC keeps float32 scores and weights)."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def tensors(path: str, *arrays: np.ndarray | None, dtype: torch.dtype | None = None) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for i, a in enumerate(arrays):
        if a is None:
            out.append(None)
            continue
        t = torch.as_tensor(a)
        out.append((t.to(dtype) if dtype is not None and i == 0 else t).to(dev(path)))
    return out


def value(metric: tmx.AUC, path: str) -> np.ndarray:
    with on(path):
        result = metric.compute()
    assert result.device.type == dev(path)
    return result.double().cpu().numpy()


def sk(fn, y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    """scikit-learn's value, ``nan`` where the metric is undefined (as ours)."""
    kept = y if w is None else y[w > 0]
    if fn is roc_auc_score and len(np.unique(kept)) < 2:
        return math.nan
    if fn is average_precision_score and not (kept > 0).any():
        return math.nan
    return fn(y, p, sample_weight=w)


def assert_close(got: float | np.ndarray, want: float | np.ndarray, rtol: float = 1e-9, msg: str = "") -> None:
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=msg)


# ----------------------------------------------------------------------------- gpu_check.sh's scripts


def _gpu_check_scripts() -> list[str]:
    text = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    return sorted(set(re.findall(r"benchmarks/(\w+\.py)", text)))


def test_gpu_check_fits_one_device_call():
    """The device tool stops a command after 600 s: the steps' own timeouts must leave room for start-up."""
    text = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    seconds = [int(s) for s in re.findall(r"^step \w+ (\d+) ", text, flags=re.MULTILINE)]
    assert len(seconds) >= 6
    assert sum(seconds) <= 580


_BARE = """
import os, runpy, sys
# as on a machine where this checkout is not installed (the GPU machines): no editable finder, no checkout on the path
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "torchmetrics_ext"))]
import importlib.util
if importlib.util.find_spec("torchmetrics_ext") is not None:
    sys.exit(77)  # installed for real: nothing to check here
home = list(sys.path)
for script in sys.argv[1:]:
    sys.argv, sys.path[:] = [script, "--help"], [os.path.dirname(script), *home]  # as `python script --help`
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchmetrics_ext", "tests")]:
        del sys.modules[name]  # each script as in a fresh process
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        print(f"{os.path.basename(script)}: exit {stop.code}")
    except BaseException as error:
        print(f"{os.path.basename(script)}: {type(error).__name__}: {error}")
"""


def test_gpu_check_scripts_import_this_checkout_without_an_install(tmp_path):
    """gpu_check.sh runs ``python benchmarks/X.py`` on a GPU machine where the package is not installed.

    ``count_device_launches.py`` imported ``torchmetrics_ext`` from the installed package only: its
    step (launches counted on the GPU) failed with ModuleNotFoundError there.
    """
    scripts = _gpu_check_scripts()
    assert {"bench_gpu.py", "bench_gpu_update.py", "count_device_launches.py"} <= set(scripts)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", _BARE, *(str(ROOT / "benchmarks" / script) for script in scripts)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    if out.returncode == 77:
        pytest.skip("torchmetrics_ext is installed as a regular package")
    assert out.returncode == 0, out.stderr[-2000:]
    for script in scripts:
        assert f"{script}: exit 0" in out.stdout, out.stdout[-2000:]


# ----------------------------------------------------------------------------- exact AUC / AUPRC

_RNG = np.random.default_rng(2026)
_N = 3000


def _adversarial() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(14)
    y = rng.integers(0, 2, _N).astype(np.float64)
    one_positive = np.zeros(_N)
    one_positive[1717] = 1.0
    huge = rng.random(_N)
    huge[::3] = 0.0
    huge[5] = 1e30
    return {
        "all-tied": (np.full(_N, 0.5), y, None),
        "all-tied-weighted": (np.full(_N, 0.5), y, rng.random(_N)),
        "tie-runs": (np.round(rng.random(_N) * 4) / 4, y, rng.random(_N)),
        "one-positive": (rng.random(_N), one_positive, None),
        "one-class": (rng.random(_N), np.ones(_N), None),
        "weights-0-and-1e30": (rng.random(_N), y, huge),
        "tiny-weights": (rng.random(_N), y, rng.random(_N) * 1e-30),
        "signed-zeros": (
            np.where(rng.random(_N) < 0.5, 0.0, -0.0) + (np.arange(_N) % 10 == 0) * 0.5,
            y,
            rng.random(_N),
        ),
    }


_CASES = _adversarial()
_SPLITS = {"one": [0, _N], "ragged": [0, 1, 1000, 1001, _N], "even": [*range(0, _N, 700), _N]}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", sorted(_CASES))
def test_exact_auc_and_auprc_on_adversarial_data(case, dtype, path):
    """Ties (within and across batches), one class, one positive, zero and huge weights, every score dtype."""
    p, y, w = _CASES[case]
    scores = torch.as_tensor(p).to(dtype).double().numpy()  # the values the dtype holds
    for cls, fn in ((tmx.AUC, roc_auc_score), (tmx.AUPRC, average_precision_score)):
        want = sk(fn, y, f32(scores), None if w is None else f32(w))
        for split, cuts in _SPLITS.items():
            metric = cls().to(dev(path))
            with on(path):
                for a, b in itertools.pairwise(cuts):
                    metric.update(*tensors(path, p[a:b], y[a:b], None if w is None else w[a:b], dtype=dtype))
            assert_close(value(metric, path), want, msg=f"{cls.__name__} {split}")


def _one_positive_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 1 << 18  # four blocks of the CPU path's block-wise passes
    rng = np.random.default_rng(3)
    p = rng.random(n).astype(np.float32)
    p[:150_000] = 0.25  # a tie run across blocks and batches
    y = np.zeros(n, np.float32)
    y[123_456] = 1.0  # inside the tie run: the only positive
    w = np.ones(n, np.float32)
    w[::3] = 0.5
    return p, y, w


_ONE_POSITIVE = _one_positive_data()
_ONE_POSITIVE_WANT = {
    fn: fn(_ONE_POSITIVE[1], _ONE_POSITIVE[0], sample_weight=_ONE_POSITIVE[2])
    for fn in (roc_auc_score, average_precision_score)
}


@pytest.mark.parametrize("path", PATHS)
def test_exact_auc_one_positive_in_a_quarter_million_and_a_long_tie_run(path):
    p, y, w = _ONE_POSITIVE
    for cls, fn in ((tmx.AUC, roc_auc_score), (tmx.AUPRC, average_precision_score)):
        metric = cls().to(dev(path))
        with on(path):
            for a in range(0, len(p), 100_000):
                metric.update(*tensors(path, p[a : a + 100_000], y[a : a + 100_000], w[a : a + 100_000]))
        assert_close(value(metric, path), _ONE_POSITIVE_WANT[fn], msg=cls.__name__)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("num_bins", [None, 1000])
def test_many_tasks_with_few_samples_and_tasks_without_weight(num_bins, path):
    """T=64 tasks of 7 samples, a task of zero weights (undefined: nan), ties, a weight of 1e30."""
    rng = np.random.default_rng(64)
    t, n = 64, 7
    p = f32(rng.random((t, n)))
    p[::5] = 0.5
    y = rng.integers(0, 2, (t, n)).astype(np.float64)
    w = f32(rng.random((t, n)))
    w[3] = 0.0
    w[10, :3] = 0.0
    w[11, 2] = f32(1e30)
    if num_bins is None:
        ranked = p
    else:  # the logit bins of (-16, 16), written here
        ranked = np.clip(np.floor((np.log(p) - np.log1p(-p) + 16) * num_bins / 32), 0, num_bins - 1)
    for cls, fn in ((tmx.AUC, roc_auc_score), (tmx.AUPRC, average_precision_score)):
        want = [sk(fn, y[k], ranked[k], w[k]) for k in range(t)]
        metric = cls(num_tasks=t, num_bins=num_bins).to(dev(path))
        with on(path):
            for a, b in ((0, 1), (1, 1), (1, 4), (4, n)):
                metric.update(*tensors(path, p[:, a:b], y[:, a:b], w[:, a:b], dtype=torch.float32))
        assert_close(value(metric, path), want, msg=cls.__name__)


# ----------------------------------------------------------------------------- binned AUC: scores on the edges


def _numpy_bins(x: np.ndarray, num_bins: int, space: str, from_logits: bool) -> np.ndarray:
    """The documented bin of each score (float64 values of the scores' dtype), written with NumPy."""
    if space == "probability":
        with np.errstate(over="ignore"):  # exp(1e4): inf, a probability of 0 as float64's sigmoid gives
            q = (1 / (1 + np.exp(-x))).astype(np.float32) if from_logits else x.astype(np.float32)
        position = (q * np.float32(num_bins)).astype(np.float64)
    else:
        z = x if from_logits else np.log(x / (1 - x))
        position = (z + 16.0) * (num_bins / 32.0)
    return np.clip(np.floor(position), 0, num_bins - 1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("space", ["probability", "logit"])
def test_binned_scores_on_the_bin_edges(space, from_logits, dtype, path):
    """Every bin edge (as the dtype rounds it) and its upper neighbour: the bins of the formula, both classes."""
    rng = np.random.default_rng(7)
    for num_bins in (10, 64, 1000):
        k = np.arange(1, num_bins)
        edges = k / num_bins if space == "probability" else -16 + k * 32 / num_bins
        if (space == "probability") == from_logits:  # the edge as the scores express it
            edges = np.log(edges / (1 - edges)) if from_logits else 1 / (1 + np.exp(-edges))
        on_edge = torch.as_tensor(edges).to(dtype)
        scores = torch.cat([on_edge, torch.nextafter(on_edge, torch.tensor(math.inf, dtype=dtype))])
        if not from_logits:
            scores = scores[(scores > 0) & (scores < 1)]
        scores = torch.cat([scores, scores])
        x = scores.double().numpy()
        y = rng.permutation(np.arange(len(x)) % 2).astype(np.float64)
        w = f32(rng.random(len(x)))
        want = roc_auc_score(y, _numpy_bins(x, num_bins, space, from_logits), sample_weight=w)
        metric = tmx.AUC(num_bins=num_bins, bin_space=space, from_logits=from_logits).to(dev(path))
        with on(path):
            metric.update(scores.to(dev(path)), *tensors(path, y, w))
        assert_close(value(metric, path), want, msg=f"{num_bins} bins")


@pytest.mark.parametrize("path", PATHS)
def test_logits_of_1e4_exact_and_binned(path):
    rng = np.random.default_rng(4)
    n = 2000
    z = rng.normal(size=n) * 5
    z[:200], z[200:400], z[400:450] = 1e4, -1e4, 30.0
    y = rng.integers(0, 2, n).astype(np.float64)
    w = f32(rng.random(n))
    z32 = f32(z)
    for cls, fn in ((tmx.AUC, roc_auc_score), (tmx.AUPRC, average_precision_score)):
        for kw in ({}, {"num_bins": 1000}, {"num_bins": 1000, "bin_space": "probability"}):
            ranked = z32 if not kw else _numpy_bins(z32, 1000, kw.get("bin_space", "logit"), True)
            metric = cls(from_logits=True, **kw).to(dev(path))
            with on(path):
                metric.update(*tensors(path, z[:777], y[:777], w[:777], dtype=torch.float32))
                metric.update(*tensors(path, z[777:], y[777:], w[777:], dtype=torch.float32))
            assert_close(value(metric, path), fn(y, ranked, sample_weight=w), msg=f"{cls.__name__} {kw}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("space", ["probability", "logit"])
def test_unvalidated_binned_nan_scores_count_in_the_last_bin(space, path):
    """validate_args=False: NaN scores in the last bin (the device path's search puts them there, since f7870c3).

    On CUDA this is the CUDA ``searchsorted``'s placement of NaN, which no test ran before.
    """
    rng = np.random.default_rng(5)
    n, num_bins = 600, 100
    p = rng.random(n)
    p[::7] = np.nan
    y = rng.integers(0, 2, n).astype(np.float64)
    w = rng.random(n)
    bins = _numpy_bins(np.clip(p, 1e-12, 1 - 1e-12), num_bins, space, False)
    bins[np.isnan(p)] = num_bins - 1
    for cls, fn in ((tmx.AUC, roc_auc_score), (tmx.AUPRC, average_precision_score)):
        metric = cls(num_bins=num_bins, bin_space=space, validate_args=False).to(dev(path))
        with on(path):
            metric.update(*tensors(path, p, y, w, dtype=torch.float32))
        assert_close(value(metric, path), fn(y, bins, sample_weight=w), rtol=1e-6, msg=cls.__name__)


# ----------------------------------------------------------------------------- grouped AUC


def _grouped_reference(fn, p, y, w, g, cuts, complete_per_batch) -> float:
    """Mean per-group value over the groups with both classes (per batch when groups are complete per batch)."""
    parts = itertools.pairwise(cuts) if complete_per_batch else [(0, len(g))]
    values = []
    for a, b in parts:
        for gid in np.unique(g[a:b]):
            m = np.zeros(len(g), bool)
            m[a:b] = g[a:b] == gid
            if len(np.unique(y[m & (w > 0)])) == 2:
                values.append(fn(y[m], p[m], sample_weight=w[m]))
    return np.mean(values) if values else math.nan


_GROUPED_WANT: dict[tuple[object, object], list[float]] = {}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("packed", [True, False], ids=["packed-key", "past-2**31-segments"])
@pytest.mark.parametrize("complete", [False, True], ids=["exact", "complete-per-batch"])
def test_grouped_one_sample_groups_groups_across_batches_and_id_dtypes(complete, packed, path, monkeypatch):
    """Groups of one sample, groups spanning batches, ids of other widths per batch (negative int8 included).

    ``past-2**31-segments``: the device kernel's branch for more (task, group) segments than a packed
    sort key holds (only reached past 2**31 samples x tasks on a GPU), forced by a lowered limit.
    """
    if not packed:
        if path == "cpu":
            pytest.skip("the packed-key limit is the device kernel's")
        monkeypatch.setattr(_device, "_PACKED_SEGMENTS", 7)
    rng = np.random.default_rng(11)
    t, n = 3, 500
    p = f32(np.round(rng.random((t, n)) * 6) / 6)
    y = rng.integers(0, 2, (t, n)).astype(np.float64)
    w = f32(rng.random(n))
    w[::9] = 0.0
    g = rng.integers(-60, 60, n)
    g[:40] = np.arange(1000, 1040)  # one sample each
    g[40:60] = -100  # one group across both batches
    g[480:500] = -100
    cuts = [0, 200, n]
    id_types = [torch.int8 if not complete else torch.int64, torch.int64]
    g[:40] -= 1000 if not complete else 0  # int8 ids: keep them in range
    for cls, fn in ((tmx.GroupedAUC, roc_auc_score), (tmx.GroupedAUPRC, average_precision_score)):
        metric = cls(num_tasks=t, groups_complete_per_batch=complete).to(dev(path))
        with on(path):
            for (a, b), id_type in zip(itertools.pairwise(cuts), id_types, strict=True):
                preds, target, weights = tensors(path, p[:, a:b], y[:, a:b], w[a:b], dtype=torch.float32)
                metric.update(preds, target, torch.as_tensor(g[a:b]).to(id_type).to(dev(path)), weights)
        key = (fn, complete)
        if key not in _GROUPED_WANT:  # the same data for every path and branch
            _GROUPED_WANT[key] = [_grouped_reference(fn, p[k], y[k], w, g, cuts, complete) for k in range(t)]
        assert_close(value(metric, path), _GROUPED_WANT[key], msg=cls.__name__)


def _big_group_data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(12)
    n = 20_000
    g = np.concatenate([np.zeros(17_000, np.int64), rng.integers(10, 70, n - 17_000)])
    rng.shuffle(g)
    p = f32(np.round(rng.random(n) * 100) / 100)
    y = rng.integers(0, 2, n).astype(np.float64)
    w = f32(rng.random(n))
    w[::5] = 0.0
    w[7] = f32(1e30)
    return p, y, w, g


_BIG_GROUP = _big_group_data()


@pytest.mark.parametrize("path", PATHS)
def test_grouped_group_longer_than_the_scan_rows_of_rows(path):
    """A group of 17,000 samples: the device kernel's segmented scan carries sums across rows of rows (two levels)."""
    p, y, w, g = _BIG_GROUP
    cuts = [0, 9_000, len(g)]
    for cls, fn in ((tmx.GroupedAUC, roc_auc_score), (tmx.GroupedAUPRC, average_precision_score)):
        key = (fn, "big")
        if key not in _GROUPED_WANT:
            _GROUPED_WANT[key] = [_grouped_reference(fn, p, y, w, g, cuts, False)]
        metric = cls().to(dev(path))
        with on(path):
            for a, b in itertools.pairwise(cuts):
                metric.update(*tensors(path, p[a:b], y[a:b], g[a:b], w[a:b], dtype=torch.float32))
        assert_close(value(metric, path), _GROUPED_WANT[key][0], msg=cls.__name__)


# ----------------------------------------------------------------------------- RegressionAUC / XAUC


def _pair_reference(p, y, w, regression: bool) -> float:
    """Exact pair sums with Fractions: RAUC over pairs of different labels, XAUC over all pairs."""
    num = den = Fraction(0)
    for i, j in itertools.combinations(range(len(p)), 2):
        if regression and y[i] == y[j]:
            continue
        pair = Fraction(w[i]) * Fraction(w[j])
        den += pair
        if regression:
            s = (p[i] - p[j]) * (y[i] - y[j])
            num += pair * (1 if s > 0 else Fraction(1, 2) if p[i] == p[j] else 0)
        else:
            num += pair * (np.sign(p[i] - p[j]) == np.sign(y[i] - y[j]))
    return float(num / den) if den else math.nan


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", range(4))
def test_pairwise_auc_against_exact_pair_counts(case, path):
    rng = np.random.default_rng(case)
    n = 40
    p = f32(np.round(rng.random(n) * [10, 1, 100, 3][case]) / [10, 1, 100, 3][case])
    y = np.round(rng.random(n) * [3, 4, 1, 0][case])
    w = f32(rng.random(n))
    w[::4] = 0.0
    for cls, regression in ((tmx.RegressionAUC, True), (tmx.XAUC, False)):
        metric = cls().to(dev(path))
        with on(path):
            for a, b in ((0, 1), (1, 20), (20, 21), (21, n)):
                metric.update(*tensors(path, p[a:b], y[a:b], w[a:b], dtype=torch.float32))
        assert_close(value(metric, path), _pair_reference(p, y, w, regression), rtol=1e-7, msg=cls.__name__)


# ----------------------------------------------------------------------------- ranking


def _ranking_reference(queries, k, metric) -> float:
    """Plain Python: descending score, ties with the relevant candidates last; queries without relevance skipped."""
    values = []
    for s, r in queries:
        ranked = [r[i] for i in sorted(range(len(s)), key=lambda i: (-s[i], r[i]))]
        top = len(ranked) if k is None else min(k, len(ranked))
        if not any(x > 0 for x in r):
            continue
        if metric == "ndcg":
            ideal = sorted(r, reverse=True)
            dcg = sum(ranked[i] / math.log2(i + 2) for i in range(top))
            values.append(dcg / sum(ideal[i] / math.log2(i + 2) for i in range(top)))
        elif metric == "recall":
            values.append(sum(x > 0 for x in ranked[:top]) / sum(x > 0 for x in r))
        elif metric == "hit_rate":
            values.append(float(any(x > 0 for x in ranked[:top])))
        else:  # mrr
            values.append(next((1 / (i + 1) for i, x in enumerate(ranked[:top]) if x > 0), 0.0))
    return sum(values) / len(values) if values else math.nan


def _queries(case: str, rng: np.random.Generator) -> list[tuple[list[float], list[float]]]:
    queries = []
    for q in range(30):
        size = int(rng.integers(1, 12))
        scores = [0.5] * size if case == "all-equal" else list(f32(np.round(rng.random(size) * 3) / 3))
        relevance = list(rng.integers(0, 3, size).astype(float)) if q % 4 else [0.0] * size  # empty queries
        queries.append((scores, relevance))
    return queries


_RANKING = {"ndcg": tmx.NDCG, "recall": tmx.RecallAtK, "hit_rate": tmx.HitRate, "mrr": tmx.MRR}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", ["all-equal", "ties"])
@pytest.mark.parametrize("layout", ["flat", "padded", "padded-complete", "ranking-metrics"])
def test_ranking_empty_queries_ties_and_k_past_the_list(layout, case, path):
    queries = _queries(case, np.random.default_rng(len(case)))
    size = max(len(s) for s, _ in queries)
    flat = [torch.tensor([x for s, _ in queries for x in s]), torch.tensor([x for _, r in queries for x in r])]
    index = torch.tensor([q for q, (s, _) in enumerate(queries) for _ in s])
    scores, relevance = torch.zeros(len(queries), size), torch.zeros(len(queries), size)
    mask = torch.zeros(len(queries), size, dtype=torch.bool)
    for q, (s, r) in enumerate(queries):
        scores[q, : len(s)], relevance[q, : len(r)], mask[q, : len(s)] = torch.tensor(s), torch.tensor(r), True
    scores[5, :], mask[5, :] = 0.0, False  # a row of padding only: no query
    d = dev(path)
    for name, k in itertools.product(_RANKING, (1, 3, 50)):  # 50: past every list
        flat_rows = layout in ("flat", "ranking-metrics")  # the padded layout lost query 5 to padding
        want = _ranking_reference([q for i, q in enumerate(queries) if i != 5 or flat_rows], k, name)
        if layout == "ranking-metrics":
            metric = tmx.RankingMetrics(ks=(k,), metrics=(name,)).to(d)
        else:
            metric = _RANKING[name](k=k, queries_complete_per_batch=layout == "padded-complete").to(d)
        with on(path):
            if flat_rows:
                cut = 37
                metric.update(flat[0][:cut].to(d), flat[1][:cut].to(d), indexes=index[:cut].to(d))
                metric.update(flat[0][cut:].to(d), flat[1][cut:].to(d), indexes=index[cut:].to(d))
            else:
                for rows in (slice(0, 10), slice(10, None)):
                    metric.update(scores[rows].to(d), relevance[rows].to(d), mask=mask[rows].to(d))
            got = metric.compute()
        got = next(iter(got.values())) if isinstance(got, dict) else got
        assert got.device.type == d
        assert_close(float(got), want, msg=f"{name}@{k}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", ["flat", "padded", "padded-complete"])
def test_ranking_query_weights(layout, path):
    """Weighted mean over queries: a flat query weighs its largest row weight, a padded one its own; zeros included."""
    queries = _queries("ties", np.random.default_rng(3))
    weights = np.random.default_rng(4).random(len(queries))
    weights[[2, 9]] = 0.0
    weights[7] = 50.0
    size = max(len(s) for s, _ in queries)
    d = dev(path)
    for name, k in itertools.product(_RANKING, (1, 3, 50)):
        per_query = [_ranking_reference([q], k, name) for q in queries]
        kept = [i for i, v in enumerate(per_query) if not math.isnan(v)]
        want = np.dot([per_query[i] for i in kept], weights[kept]) / weights[kept].sum()
        metric = _RANKING[name](k=k, queries_complete_per_batch=layout == "padded-complete").to(d)
        with on(path):
            if layout == "flat":  # query 7's rows: one of weight 50, the others 25; a query split across the batches
                rows = [(q, j) for q, (s, _) in enumerate(queries) for j in range(len(s))]
                preds = torch.tensor([queries[q][0][j] for q, j in rows])
                target = torch.tensor([queries[q][1][j] for q, j in rows])
                index = torch.tensor([q for q, _ in rows])
                row_weights = torch.tensor([weights[q] / (2 if j else 1) for q, j in rows])
                for part in (slice(0, 20), slice(20, None)):
                    metric.update(
                        preds[part].to(d),
                        target[part].to(d),
                        indexes=index[part].to(d),
                        weights=row_weights[part].to(d),
                    )
            else:
                scores, relevance = torch.zeros(len(queries), size), torch.zeros(len(queries), size)
                mask = torch.zeros(len(queries), size, dtype=torch.bool)
                for q, (s, r) in enumerate(queries):
                    scores[q, : len(s)], relevance[q, : len(r)], mask[q, : len(s)] = (
                        torch.tensor(s),
                        torch.tensor(r),
                        True,
                    )
                for rows in (slice(0, 10), slice(10, None)):
                    metric.update(
                        scores[rows].to(d),
                        relevance[rows].to(d),
                        mask=mask[rows].to(d),
                        weights=torch.as_tensor(weights[rows]).to(d),
                    )
            got = metric.compute()
        assert got.device.type == d
        assert_close(float(got), want, msg=f"{name}@{k}")


# ----------------------------------------------------------------------------- flows across the paths

_FLOW_N, _FLOW_CUT = 1200, 500


def _flow_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    n = _FLOW_N
    return {
        "p": f32(np.clip(np.round(rng.random(n) * 50) / 50, 0.01, 0.99)),
        "y": rng.integers(0, 2, n).astype(np.float64),
        "w": np.where(np.arange(n) % 5 == 0, 0.0, f32(rng.random(n))),
        "g": rng.integers(0, 40, n),
        "x": rng.normal(0, 5, n),
    }


_D = _flow_data()


def _probability_bins(p: np.ndarray) -> np.ndarray:
    return _numpy_bins(p, 64, "probability", False)


def _group_mean(sl: slice) -> float:
    p, y, w, g = _D["p"][sl], _D["y"][sl], _D["w"][sl], _D["g"][sl]
    return _grouped_reference(roc_auc_score, p, y, w, g, [0, len(g)], False)


# name -> (factory, whether update takes groups, reference over a slice of the data)
_FLOWS = {
    "auc": (tmx.AUC, False, lambda s: roc_auc_score(_D["y"][s], _D["p"][s], sample_weight=_D["w"][s])),
    "auprc": (tmx.AUPRC, False, lambda s: average_precision_score(_D["y"][s], _D["p"][s], sample_weight=_D["w"][s])),
    "auc-bins": (
        lambda: tmx.AUC(num_bins=64, bin_space="probability"),
        False,
        lambda s: roc_auc_score(_D["y"][s], _probability_bins(_D["p"][s]), sample_weight=_D["w"][s]),
    ),
    "gauc": (tmx.GroupedAUC, True, _group_mean),
    "rauc": (tmx.RegressionAUC, False, lambda s: roc_auc_score(_D["y"][s], _D["p"][s], sample_weight=_D["w"][s])),
}


def _flow_args(name: str, a: int, b: int, path: str) -> list[torch.Tensor | None]:
    p, y, w = tensors(path, _D["p"][a:b], _D["y"][a:b], _D["w"][a:b], dtype=torch.float32)
    return [p, y, torch.as_tensor(_D["g"][a:b]).to(dev(path)), w] if _FLOWS[name][1] else [p, y, w]


_PAIRS = [
    ("cpu", "device"),
    ("device", "cpu"),
    pytest.param("cuda", "cpu", marks=[pytest.mark.cuda, _NO_CUDA]),
    pytest.param("cpu", "cuda", marks=[pytest.mark.cuda, _NO_CUDA]),
]


@pytest.mark.parametrize(("saved_on", "loaded_on"), _PAIRS)
@pytest.mark.parametrize("name", sorted(_FLOWS))
def test_checkpoint_of_one_path_resumes_on_the_other(name, saved_on, loaded_on):
    """A checkpoint saved on a GPU loads on a CPU machine and resumes there, and the other way round."""
    make, _, reference = _FLOWS[name]
    first = make().to(dev(saved_on))
    first.persistent(True)
    with on(saved_on):
        first.update(*_flow_args(name, 0, _FLOW_CUT, saved_on))
    checkpoint = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in first.state_dict().items()}
    if saved_on == "cuda":  # as torch.load(map_location="cpu") gives it
        checkpoint = copy.deepcopy(checkpoint)
    second = make().to(dev(loaded_on))
    second.persistent(True)
    second.load_state_dict(first.state_dict() if saved_on != "cuda" else checkpoint)
    with on(loaded_on):
        second.update(*_flow_args(name, _FLOW_CUT, _FLOW_N, loaded_on))
    assert_close(value(second, loaded_on), reference(slice(None)), rtol=1e-7)


@pytest.mark.parametrize(("first_path", "second_path"), [("cpu", "device"), ("device", "cpu"), ("device", "device")])
@pytest.mark.parametrize("name", sorted(_FLOWS))
def test_merge_state_of_the_two_paths(name, first_path, second_path):
    make, _, reference = _FLOWS[name]
    first, second = make(), make()
    with on(first_path):
        first.update(*_flow_args(name, 0, _FLOW_CUT, "cpu"))
    with on(second_path):
        second.update(*_flow_args(name, _FLOW_CUT, _FLOW_N, "cpu"))
        first.merge_state(second)
    assert_close(value(first, second_path), reference(slice(None)), rtol=1e-7)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(_FLOWS))
def test_forward_and_windowed(name, path):
    """``forward`` gives the batch's value and accumulates; ``Windowed`` gives the lifetime and the last whole updates."""
    make, _, reference = _FLOWS[name]
    metric = make().to(dev(path))
    with on(path):
        batch_value = metric(*_flow_args(name, 0, _FLOW_CUT, path))
        metric(*_flow_args(name, _FLOW_CUT, _FLOW_N, path))
    assert_close(batch_value.cpu().numpy(), reference(slice(0, _FLOW_CUT)), rtol=1e-7, msg="batch")
    assert_close(value(metric, path), reference(slice(None)), rtol=1e-7, msg="lifetime")
    windowed = tmx.Windowed(make(), window_size=700).to(dev(path))
    with on(path):
        for a in range(0, _FLOW_N, 100):
            windowed.update(*_flow_args(name, a, a + 100, path))
        out = windowed.compute()
    assert_close(out["lifetime"].cpu().numpy(), reference(slice(None)), rtol=1e-7, msg="windowed lifetime")
    assert_close(out["window"].cpu().numpy(), reference(slice(_FLOW_N - 700, None)), rtol=1e-7, msg="window")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["auc", "auc-bins", "gauc"])
def test_an_all_zero_weight_update_takes_no_window_room(name, path):
    """A validated batch whose weights are all 0 changes nothing, window included (read from the step's bounds)."""
    make = _FLOWS[name][0]
    windowed = tmx.Windowed(make(), window_size=400).to(dev(path))
    zero = _D["w"].copy()
    zero[800:1000] = 0.0
    with on(path):
        for a in range(0, _FLOW_N, 100):
            args = _flow_args(name, a, a + 100, path)
            args[-1] = torch.as_tensor(zero[a : a + 100]).to(dev(path))
            windowed.update(*args)
        out = windowed.compute()
    # the window: the last 400 samples of the updates that kept weight (600-800 and 1000-1200)
    kept = np.r_[600:800, 1000:1200]
    p, y, w, g = _D["p"][kept], _D["y"][kept], zero[kept], _D["g"][kept]
    if name == "auc":
        want = roc_auc_score(y, p, sample_weight=w)
    elif name == "auc-bins":
        want = roc_auc_score(y, _probability_bins(p), sample_weight=w)
    else:
        want = _grouped_reference(roc_auc_score, p, y, w, g, [0, len(g)], False)
    assert_close(out["window"].cpu().numpy(), want, rtol=1e-7)


@pytest.mark.parametrize("path", PATHS)
def test_distribution_sketch_against_numpy(path):
    rng = np.random.default_rng(31)
    x = np.concatenate([rng.lognormal(0, 3, 2000), -rng.lognormal(0, 1, 1000), np.zeros(500), 1e11 + rng.random(10)])
    rng.shuffle(x)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        values = torch.as_tensor(x).to(dtype)
        values = values[torch.isfinite(values)]
        xv = values.double().numpy()
        metric = agg.Distribution(percentiles=(0.0, 5.0, 50.0, 99.0, 100.0)).to(dev(path))
        with on(path):
            for chunk in values.split(777):
                metric.update(chunk.to(dev(path)))
            out = metric.compute()
        assert_close(out["mean"].item(), xv.mean(), rtol=1e-12, msg=str(dtype))
        assert_close(out["std"].item(), xv.std(ddof=1), rtol=1e-9, msg=str(dtype))
        assert (out["min"].item(), out["max"].item()) == (xv.min(), xv.max())
        for q in (0.0, 5.0, 50.0, 99.0, 100.0):
            low, high = np.percentile(xv, q, method="lower"), np.percentile(xv, q, method="higher")
            slack = 0.01 * max(abs(low), abs(high)) + 1e-9
            got = out[f"p{q:02.0f}" if q < 100 else "p100"].item()
            assert low - slack <= got <= high + slack, (dtype, q, got, low, high)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("window_size", [None, 400])
def test_rec_metric_module(window_size, path):
    rng = np.random.default_rng(41)
    n = 1000
    data = {f"{t}_{s}": f32(rng.random(n)) for t in "ab" for s in "pw"}
    data |= {f"{t}_y": rng.integers(0, 2, n).astype(np.float32) for t in "ab"}
    data["b_p"][:300] = 0.5
    tasks = [tmx.RecTaskInfo(name=t, label_name=f"{t}_y", prediction_name=f"{t}_p", weight_name=f"{t}_w") for t in "ab"]
    module = tmx.RecMetricModule(tasks, ["auc", "auprc", "ctr"], window_size=window_size, throughput=False)
    module = module.to(dev(path))
    with on(path):
        for a in range(0, n, 100):
            module.update(
                {k: torch.as_tensor(v[a : a + 100], dtype=torch.float32).to(dev(path)) for k, v in data.items()}
            )
        out = module.compute()
    for t in "ab":
        p, y, w = data[f"{t}_p"], data[f"{t}_y"], data[f"{t}_w"]
        windows = [("", slice(None))] + ([("/window", slice(n - window_size, None))] if window_size else [])
        for suffix, s in windows:
            assert_close(out[f"auc/{t}{suffix}"].item(), roc_auc_score(y[s], p[s], sample_weight=w[s]), rtol=1e-7)
            assert_close(out[f"ctr/{t}{suffix}"].item(), (w[s] * y[s]).sum() / w[s].sum(), rtol=1e-7)
        assert_close(out[f"auprc/{t}"].item(), average_precision_score(y, p, sample_weight=w), rtol=1e-7)
