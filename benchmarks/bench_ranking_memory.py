"""Peak memory of ``RankingMetrics`` with many requests: ks = 1..64 x 6 metrics = 384 ``(metric, k)`` values.

``--queries`` queries (default 200,000) of 5-15 candidates, float32 scores, graded relevance;
each layout runs in a fresh process (rows grouped by query: the top-k merge; shuffled: the sort
path; padded ``(Q, 15)`` lists with a padding value) and reports the process's peak RSS growth
over ``compute`` (``update`` too for padded lists, ranked there). glibc's malloc is told to map
large blocks directly (``MALLOC_MMAP_THRESHOLD_``), so freed memory leaves the process and the
peak is that of live tensors, not of the allocator's reuse pattern.

    python benchmarks/bench_ranking_memory.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_ranking_memory.py  # another version
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")
KS = tuple(range(1, 65))
WIDTH = 15


def one_layout(queries: int, layout: str) -> None:
    """Build the rows, update, and print the peak RSS growth of ``compute`` for ``layout``."""
    import torchmetrics_ext as tmx

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    lens = rng.integers(5, WIDTH + 1, size=queries)
    idx = np.repeat(np.arange(queries), lens)
    n = idx.size
    preds = torch.from_numpy(rng.random(n, dtype=np.float32))
    target = torch.from_numpy(rng.integers(1, 4, size=n) * (rng.random(n) < 0.2))
    indexes = torch.from_numpy(idx)
    pad = -1.0 if layout == "padded" else None
    metric = tmx.RankingMetrics(ks=KS, metrics=METRICS, padding_value=pad)
    if layout == "shuffled":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        preds, target, indexes = preds[perm], target[perm], indexes[perm]
    args: tuple[torch.Tensor, ...] = (preds, target, indexes)
    if layout == "padded":
        starts = torch.cumsum(torch.from_numpy(lens), 0) - torch.from_numpy(lens)
        column = torch.arange(n) - torch.repeat_interleave(starts, torch.from_numpy(lens))
        grid_p, grid_t = torch.full((queries, WIDTH), pad), torch.zeros((queries, WIDTH), dtype=torch.int64)
        grid_p[indexes, column], grid_t[indexes, column] = preds, target
        args = (grid_p, grid_t)
    else:
        metric.update(*args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if layout == "padded":
        metric.update(*args)
    out = metric.compute()
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(
        f"{layout:<9} {queries} queries, {n} rows, {len(metric.requests)} requests: "
        f"+{grown:.0f} MiB peak RSS, {seconds:.2f} s; ndcg@10 {float(out['ndcg@10']):.12f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--layout", choices=("grouped", "shuffled", "padded"), help="run one layout here")
    args = parser.parse_args()
    if args.layout:
        one_layout(args.queries, args.layout)
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for layout in ("grouped", "shuffled", "padded"):
        command = [sys.executable, __file__, "--queries", str(args.queries), "--layout", layout]
        subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
