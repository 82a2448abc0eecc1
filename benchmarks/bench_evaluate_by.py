"""``evaluate(..., by=[...])`` with many segments: seconds per run and per segment, against a pandas groupby.

Run: ``python benchmarks/bench_evaluate_by.py`` (``--segments 100 10000`` for fewer sizes). The
data is an in-memory ``pyarrow.Table`` of ``--rows`` rows: one task (float32 scores, int8 labels),
sessions of 10 consecutive rows and a segment column of ``S`` uniformly drawn integer ids (so a
session is split over several segments at large ``S``, and many segments hold a single class:
undefined AUC and NE, each named in a warning line). Metrics: ``ctr, ne, auc, ndcg@10``.

For each ``S`` the script prints the time of ``evaluate`` with ``by=["seg"]``, the same without
segments, the number of segments with rows and of warning lines, the time of a pandas
``groupby("seg").mean()`` of the labels (the CTR per segment, the floor of any per-segment
report) and the largest difference between that CTR and ours. To time another version of the
package (before a change), run it with ``PYTHONPATH`` pointing at that checkout.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from torchmetrics_ext.evaluate import evaluate

METRICS = ["ctr", "ne", "auc", "ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--segments", type=int, nargs="+", default=[100, 10_000, 100_000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = args.rows
    p = rng.random(n).astype(np.float32)
    y = (rng.random(n) < 0.3).astype(np.int8)
    session = np.repeat(np.arange(n // 10 + 1), 10)[:n]
    for num_segments in args.segments:
        seg = np.random.default_rng(num_segments).integers(0, num_segments, n)  # the same ids in any run
        table = pa.table({"p": p, "y": y, "session": session, "seg": seg})
        start = time.perf_counter()
        result = evaluate(table, {"click": ("p", "y")}, METRICS, session="session", by=["seg"])
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        evaluate(table, {"click": ("p", "y")}, METRICS, session="session")
        plain = time.perf_counter() - start
        start = time.perf_counter()
        ctr = pd.DataFrame({"y": y, "seg": seg}).groupby("seg")["y"].mean()
        floor = time.perf_counter() - start
        values = result.values
        ours = np.array([values[f"ctr/click/seg={k}"] for k in ctr.index])
        print(
            f"S={num_segments:,}: {len(ctr):,} segments with rows, evaluate by {seconds:.2f} s "
            f"({seconds / len(ctr) * 1e6:.0f} us per segment), without by {plain:.2f} s, "
            f"{len(result.warnings):,} warning lines; pandas groupby CTR {floor * 1e3:.0f} ms, "
            f"largest |CTR difference| {np.abs(ours - ctr.to_numpy()).max():.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
