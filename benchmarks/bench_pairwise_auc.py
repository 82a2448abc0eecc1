"""RegressionAUC / XAUC speed against pure-Python and brute-force pair counting, one thread.

Run: ``python benchmarks/bench_pairwise_auc.py`` (1M samples for ours, about 1-2 minutes) or
``--quick`` (200k). The O(N^2) methods cannot run at 1M, so each runs at a feasible size and
the table reports time per sample and the ratio to ours per sample:

* ``python-inversions``: TorchRec's RAUC recipe, re-written here: ``.tolist()``, sort
  ``(label, pred)`` by (prediction, label) in Python, count label inversions with a recursive
  merge sort over Python lists (O(N log N), unweighted), at the same 1M samples;
* ``numpy-all-pairs``: exact weighted brute force over every pair (chunked numpy, O(N^2));
* ``torchrec-xauc-batch``: TorchRec's XAUC update style, an N x N comparison per batch in torch
  (it only pairs samples of the same batch; O(B) per sample for batch size B).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchmetrics_ext as tmx


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.round(np.exp(rng.normal(1.0, 1.0, size=n)), 3)  # watch-time-like, some ties
    p = np.log1p(y) + rng.normal(0.0, 0.8, size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    return p.astype(np.float32), y.astype(np.float32), w


def ours(metric_cls: type, p: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch: int) -> tuple[float, float]:
    metric = metric_cls()
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    wt = None if w is None else torch.from_numpy(w)
    start = time.perf_counter()
    for lo in range(0, len(p), batch):
        metric.update(pt[lo : lo + batch], yt[lo : lo + batch], None if wt is None else wt[lo : lo + batch])
    value = float(metric.compute())
    return time.perf_counter() - start, value


def _count_inversions(values: list[float], lo: int, hi: int) -> int:
    """Sort ``values[lo:hi + 1]`` in place; return its pairs i < j with values[i] > values[j]."""
    if lo >= hi:
        return 0
    mid = (lo + hi) // 2
    count = _count_inversions(values, lo, mid) + _count_inversions(values, mid + 1, hi)
    left, right = values[lo : mid + 1], values[mid + 1 : hi + 1]
    i = j = 0
    k = lo
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            values[k] = left[i]
            i += 1
        else:
            values[k] = right[j]
            j += 1
            count += len(left) - i
        k += 1
    values[k : hi + 1] = left[i:] + right[j:]
    return count


def python_inversions(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """TorchRec's RAUC recipe: labels ordered by (prediction, label) in Python, merge-sort inversions."""
    start = time.perf_counter()
    labels, preds = torch.from_numpy(y).tolist(), torch.from_numpy(p).tolist()
    ordered = [label for label, _ in sorted(zip(labels, preds, strict=True), key=lambda lp: (lp[1], lp[0]))]
    inversions = _count_inversions(ordered, 0, len(ordered) - 1)
    n = len(p)
    value = 1 - inversions / (n * (n - 1) / 2)
    return time.perf_counter() - start, value


def numpy_all_pairs(p: np.ndarray, y: np.ndarray, w: np.ndarray, chunk: int = 512) -> tuple[float, float]:
    start = time.perf_counter()
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    num = den = 0.0
    for lo in range(0, len(p), chunk):
        dp = np.sign(p64[lo : lo + chunk, None] - p64[None, :])
        dy = np.sign(y64[lo : lo + chunk, None] - y64[None, :])
        ww = w[lo : lo + chunk, None] * w[None, :]
        diff = dy != 0  # ordered pairs, each unordered pair counted twice on both sides
        num += (ww * (((dp * dy) > 0) + 0.5 * (dp == 0)) * diff).sum()
        den += (ww * diff).sum()
    return time.perf_counter() - start, num / den


def torchrec_style_xauc(p: np.ndarray, y: np.ndarray, w: np.ndarray, batch: int) -> float:
    """Per-batch N x N agreement matrix (TorchRec's XAUC update), timed over all batches."""
    start = time.perf_counter()
    for lo in range(0, len(p), batch):
        pb = torch.from_numpy(p[lo : lo + batch]).double()
        yb = torch.from_numpy(y[lo : lo + batch]).double()
        wb = torch.from_numpy(w[lo : lo + batch])
        agree = torch.sign(pb[:, None] - pb[None, :]) == torch.sign(yb[:, None] - yb[None, :])
        ww = torch.triu(wb[:, None] * wb[None, :], diagonal=1)
        _ = (ww * agree).sum(), ww.sum()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_ours, n_py, n_brute, n_xauc = (
        (200_000, 200_000, 4_000, 16_384) if args.quick else (1_000_000, 1_000_000, 20_000, 65_536)
    )
    batch = 8192

    p, y, w = make_data(n_ours)
    # peak memory of one weighted RegressionAUC (state + compute), first, while the peak is low
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ours(tmx.RegressionAUC, p, y, w, batch)
    peak_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    rows = []
    # best of three runs for ours, two for the Python count: the machine may be shared
    t_rauc, v_rauc = min(ours(tmx.RegressionAUC, p, y, w, batch) for _ in range(3))
    rows.append(("ours RegressionAUC (weighted)", n_ours, t_rauc))
    t_xauc, _ = min(ours(tmx.XAUC, p, y, w, batch) for _ in range(3))
    rows.append(("ours XAUC (weighted)", n_ours, t_xauc))
    t_unw, _ = min(ours(tmx.RegressionAUC, p, y, None, batch) for _ in range(3))
    rows.append(("ours RegressionAUC (unweighted)", n_ours, t_unw))

    t_py, v_py = min(python_inversions(p[:n_py], y[:n_py]) for _ in range(2))
    rows.append(("python-inversions (TorchRec RAUC style)", n_py, t_py))
    t_bf, v_bf = numpy_all_pairs(p[:n_brute], y[:n_brute], w[:n_brute])
    rows.append(("numpy-all-pairs (brute force, weighted)", n_brute, t_bf))
    t_tx = torchrec_style_xauc(p[:n_xauc], y[:n_xauc], w[:n_xauc], 2048)
    rows.append(("torchrec-xauc-batch (N x N per batch of 2048)", n_xauc, t_tx))

    # sanity: same definitions on the same subsets
    _, v_small = ours(tmx.RegressionAUC, p[:n_brute], y[:n_brute], w[:n_brute], batch)
    assert abs(v_small - v_bf) < 1e-9, (v_small, v_bf)

    per_ours = t_unw / n_ours
    print(f"torch {torch.__version__}, 1 thread; ours on {n_ours:,} samples in batches of {batch}")
    print(f"{'method':48s} {'N':>10s} {'seconds':>9s} {'us/sample':>10s} {'x ours/sample':>14s}")
    for name, n, t in rows:
        print(f"{name:48s} {n:>10,d} {t:>9.3f} {1e6 * t / n:>10.3f} {t / n / per_ours:>14.1f}")
    print(f"ours peak memory above the input arrays (state + compute): {peak_bytes / n_ours:.0f} B/sample")
    print(
        f"(ratios are against ours unweighted; RAUC here = {v_rauc:.6f}, "
        f"python-inversions value on its subset = {v_py:.6f})"
    )


if __name__ == "__main__":
    main()
