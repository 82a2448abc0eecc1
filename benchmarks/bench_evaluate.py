"""Offline evaluation of a 5M-row Parquet file: ``torchmetrics_ext.evaluate`` vs pandas + scikit-learn + ranx.

Run: ``python benchmarks/bench_evaluate.py`` (``--rows 500000`` for a quick run). The data is a
generated 8-column Parquet file (two tasks with float32 scores and int8 labels, float32 weights,
user ids, session ids with 5-60 candidates each, a country column) written once to ``--path``.
Each side runs in its own fresh process (``--side``), so its peak RSS is its own:

* ours: ``evaluate(path, ...)`` streams record batches through ``RecMetricModule``;
* the natural alternative: ``pandas.read_parquet`` of the whole file, scikit-learn ``log_loss``
  and ``roc_auc_score`` (weighted), NE from the log loss, GAUC as a pandas ``groupby`` over users
  of weighted ``roc_auc_score``, and ranx ``ndcg@10``/``recall@20``/``mrr@10`` from the DataFrame
  (queries with a positive, weighted by their largest row weight, as ours).

Both compute the same 14 values (7 metrics x 2 tasks); the script prints time, rows/s, peak RSS,
the speed ratio and the largest difference between the values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

TASKS = ("click", "like")
METRICS = ("ne", "log_loss", "auc", "gauc", "ndcg@10", "recall@20", "mrr@10")
MAP_LARGE_BUFFERS = True  # --glibc-defaults turns it off


def generate(path: str, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 61, rows // 5)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), rows) + 1]
    session = np.repeat(np.arange(len(sizes)), sizes)[:rows]
    affinity = rng.normal(size=rows)
    columns = {}
    for task, base in zip(TASKS, (-1.5, -2.5)):
        truth = 1 / (1 + np.exp(-(base + affinity)))
        columns[f"p_{task}"] = (1 / (1 + np.exp(-(base + affinity + 0.8 * rng.normal(size=rows))))).astype(np.float32)
        columns[f"y_{task}"] = (rng.uniform(size=rows) < truth).astype(np.int8)
    columns["weight"] = np.where(rng.uniform(size=rows) < 0.1, 2.0, 1.0).astype(np.float32)
    columns["user_id"] = rng.integers(0, rows // 100, rows)
    columns["session_id"] = session
    countries = np.array(["br", "de", "fr", "in", "jp", "us"])
    columns["country"] = pa.array(countries[rng.integers(0, len(countries), rows)]).dictionary_encode()
    pq.write_table(pa.table(columns), path, row_group_size=1 << 19)


def ours(path: str) -> dict[str, float]:
    from torchmetrics_ext.evaluate import evaluate
    from torchmetrics_ext.evaluate.memory import map_large_buffers

    if MAP_LARGE_BUFFERS:
        map_large_buffers()  # as the `torchmetrics-ext evaluate` command does
    tasks = [f"{t}=p_{t}:y_{t}" for t in TASKS]
    result = evaluate(path, tasks, METRICS, weights="weight", user="user_id", session="session_id")
    return result.values


def pandas_side(path: str) -> dict[str, float]:
    import pandas as pd
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate
    from sklearn.metrics import log_loss, roc_auc_score

    df = pd.read_parquet(path)
    w = df["weight"].to_numpy(np.float64)
    out: dict[str, float] = {}
    for task in TASKS:
        p, y = df[f"p_{task}"].to_numpy(np.float64), df[f"y_{task}"].to_numpy()
        ll = log_loss(y, p, sample_weight=w)
        ctr = np.average(y, weights=w)
        out[f"ne/{task}"] = ll / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
        out[f"log_loss/{task}"] = ll
        out[f"auc/{task}"] = roc_auc_score(y, p, sample_weight=w)

        def group_auc(g: pd.DataFrame, task: str = task) -> float:
            y = g[f"y_{task}"].to_numpy()
            if y.min() == y.max():
                return np.nan
            return roc_auc_score(y, g[f"p_{task}"].to_numpy(np.float64), sample_weight=g["weight"].to_numpy(np.float64))

        per_user = df.groupby("user_id")[[f"p_{task}", f"y_{task}", "weight"]].apply(group_auc)
        out[f"gauc/{task}"] = float(per_user.mean())  # mean over users with both classes (NaN skipped)

        positives = df.groupby("session_id")[f"y_{task}"].transform("sum") > 0
        ranked = df.loc[positives, ["session_id", f"p_{task}", f"y_{task}"]].copy()
        ranked["q"] = ranked["session_id"].astype(str).astype(object)  # ranx wants object-dtype strings
        ranked["d"] = ranked.index.astype(str).astype(object)
        qrels = Qrels.from_df(ranked[ranked[f"y_{task}"] > 0].astype({f"y_{task}": np.int64}), "q", "d", f"y_{task}")
        run = Run.from_df(ranked.astype({f"p_{task}": np.float64}), "q", "d", f"p_{task}")
        scores = ranx_evaluate(qrels, run, ["ndcg@10", "recall@20", "mrr@10"], return_mean=False)
        query_weight = df.loc[positives].groupby("session_id")["weight"].max()
        query_weight.index = query_weight.index.astype(str)
        weights = query_weight.loc[list(run.keys())].to_numpy(np.float64)
        for name, values in scores.items():
            out[f"{name}/{task}"] = float(np.average(values, weights=weights))
    return out


def run_side(side: str, path: str) -> None:
    start = time.perf_counter()
    values = ours(path) if side == "ours" else pandas_side(path)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "values": values}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--path", default="/tmp/bench_evaluate.parquet")
    parser.add_argument("--side", choices=("ours", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--glibc-defaults", action="store_true", help="ours without map_large_buffers (glibc's default heap)"
    )
    args = parser.parse_args()
    global MAP_LARGE_BUFFERS
    MAP_LARGE_BUFFERS = not args.glibc_defaults
    if args.side:
        run_side(args.side, args.path)
        return
    import pyarrow.parquet as pq

    if not os.path.exists(args.path) or pq.ParquetFile(args.path).metadata.num_rows != args.rows:
        print(f"writing {args.rows:,} rows to {args.path}", flush=True)
        generate(args.path, args.rows)
    results = {}
    for side in ("ours", "pandas"):
        done = subprocess.run(
            [sys.executable, __file__, "--side", side, "--path", args.path]
            + (["--glibc-defaults"] if args.glibc_defaults else []),
            capture_output=True,
            text=True,
            check=True,
        )
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    ours_r, ref = results["ours"], results["pandas"]
    diff = max(abs(ours_r["values"][k] - v) for k, v in ref["values"].items())
    print(f"{args.rows:,} rows, {len(METRICS)} metrics x {len(TASKS)} tasks, one process per side")
    print(f"{'side':38s} {'seconds':>9s} {'rows/s':>12s} {'peak RSS':>10s}")
    for name, r in (("torchmetrics_ext evaluate", ours_r), ("pandas + sklearn + groupby GAUC + ranx", ref)):
        rate = args.rows / r["seconds"]
        print(f"{name:38s} {r['seconds']:9.2f} {rate:12,.0f} {r['peak_rss_mb']:8.0f} MB")
    ratio = ref["seconds"] / ours_r["seconds"]
    print(f"speed ratio (alternative / ours): {ratio:.1f}x; largest value difference {diff:.1e}")
    for key in sorted(ref["values"]):
        print(f"  {key:18s} ours {ours_r['values'][key]:.12f}  alternative {ref['values'][key]:.12f}")


if __name__ == "__main__":
    main()
