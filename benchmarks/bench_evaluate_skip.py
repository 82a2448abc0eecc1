"""``evaluate(..., on_invalid="skip")`` against ``on_invalid="error"`` for 2 to 4 tasks: one module per task.

Run: ``python benchmarks/bench_evaluate_skip.py`` (``--rows 300000`` for a quick run). With
``on_invalid="skip"`` tasks reading different columns (here: each its own label column) are fed to a
module of their own, so that a row invalid in one task's label is dropped for that task alone
(``docs/evaluate.md``, "Invalid rows"); ``"error"`` feeds one module for every task. The data is an
in-memory ``pyarrow.Table`` without an invalid row (both modes give the same values): 4 tasks (float32
scores, int8 labels), float32 weights, user ids, sessions of 20 rows, a 4-value ``country`` column.
Metrics: ``ne, log_loss, auc, gauc, ndcg@10``. For each number of tasks, without and with
``by="country"``, the script prints the best-of-3 CPU time of each mode (one torch thread, so the
time is not that of the other processes of a shared machine) and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import torch

from torchmetrics_ext.evaluate import evaluate

METRICS = ["ne", "log_loss", "auc", "gauc", "ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = args.rows
    columns = {}
    for t in range(4):
        columns[f"p{t}"] = rng.uniform(0.01, 0.99, n).astype(np.float32)
        columns[f"y{t}"] = (rng.uniform(size=n) < 0.2).astype(np.int8)
    columns["w"] = np.ones(n, np.float32)
    columns["user"] = rng.integers(0, max(n // 100, 1), n)
    columns["session"] = np.arange(n) // 20
    columns["country"] = np.array(["br", "de", "fr", "us"])[rng.integers(0, 4, n)]
    table = pa.table(columns)
    kwargs = {"weights": "w", "user": "user", "session": "session"}
    for by in (None, "country"):
        for tasks in (2, 3, 4):
            spec = [f"t{t}=p{t}:y{t}" for t in range(tasks)]
            best = {}
            for _ in range(args.repeats):
                for mode in ("error", "skip"):  # interleaved: a burst of load hits both
                    start = time.process_time()
                    evaluate(table, spec, METRICS, by=by, on_invalid=mode, **kwargs)
                    spent = time.process_time() - start
                    best[mode] = min(best.get(mode, spent), spent)
            print(
                f"by={by!s:8} tasks={tasks}  error {best['error']:.2f} s  skip {best['skip']:.2f} s  "
                f"ratio {best['skip'] / best['error']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
