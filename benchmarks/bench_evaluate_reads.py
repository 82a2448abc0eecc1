"""How often ``evaluate(..., by=[...])`` reads a file, and what ``by`` costs on a large CSV and Parquet file.

Run: ``python benchmarks/bench_evaluate_reads.py`` (``--rows 2000000``; the files are generated
once under ``--dir``). The data: one task (float scores, 0/1 labels), a text column ``country``
(5 values), an integer column ``hour`` (24 values), a float column ``price`` (200 values) and an
integer id ``user`` (about 0.43 distinct values per row: 865k in 2M rows, as a per-user ``--by``),
written as one CSV file and one Parquet file (row groups of 262,144 rows).

For each file and each ``by`` (none, ``country``, ``hour``, ``price``, ``country,hour``, ``user``) the
script counts the passes over the file (a CSV reader opened, a Parquet row-group read, each
counted with the columns it asked for) and times ``evaluate`` with ``ctr, ne`` (best of
``--rounds``). To measure another version of the package (before a change), run it with
``PYTHONPATH`` pointing at that checkout: the counters patch the reader classes by name.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch

from torchmetrics_ext.evaluate import evaluate, sources

BYS: list[list[str]] = [[], ["country"], ["hour"], ["price"], ["country", "hour"], ["user"]]


def generate(directory: str, rows: int) -> tuple[str, str]:
    os.makedirs(directory, exist_ok=True)
    csv, parquet = os.path.join(directory, f"by2_{rows}.csv"), os.path.join(directory, f"by2_{rows}.parquet")
    if os.path.exists(csv) and os.path.exists(parquet):
        return csv, parquet
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "p": rng.random(rows).round(6),
            "y": (rng.random(rows) < 0.3).astype(np.int8),
            "country": rng.choice(np.array(["de", "fr", "jp", "us", "br"]), rows),
            "hour": rng.integers(0, 24, rows),
            "price": rng.integers(0, 200, rows) / 4,  # 0.0, 0.25, ... 49.75
            "user": rng.integers(0, max(1, rows // 2), rows),  # 1 - e^-2 of rows // 2 ids appear
        }
    )
    pa_csv.write_csv(table, csv)
    pq.write_table(table, parquet, row_group_size=262_144)
    return csv, parquet


class Passes:
    """Counts the passes over files: a CSV reader opened, a Parquet row group read (with its columns)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        csv_open, parquet_read = sources.CsvSource._open, sources.ParquetSource.read
        counts = self.counts

        def counted_open(self, columns, batch_size, types):
            counts["csv " + ("header" if columns is None else ",".join(columns))] += 1
            return csv_open(self, columns, batch_size, types)

        def counted_read(self, chunk, columns, batch_size, types=None):
            if chunk.part == 0:  # one count per pass over the file's row groups
                counts["parquet " + ",".join(columns)] += 1
            return parquet_read(self, chunk, columns, batch_size, types)

        sources.CsvSource._open = counted_open  # type: ignore[method-assign]
        sources.ParquetSource.read = counted_read  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = generate(args.dir, args.rows)
    passes = Passes()
    for path in paths:
        base = None
        for by in BYS:
            passes.counts.clear()
            evaluate(path, {"t": ("p", "y")}, ["ctr", "ne"], by=by)
            reads = dict(passes.counts)
            best = float("inf")
            for _ in range(args.rounds):
                start = time.perf_counter()
                evaluate(path, {"t": ("p", "y")}, ["ctr", "ne"], by=by)
                best = min(best, time.perf_counter() - start)
            base = base or best
            name = os.path.basename(path)
            print(f"{name:24s} by={','.join(by) or '-':13s} {best:7.2f} s  {best / base:5.2f}x  passes {reads}")


if __name__ == "__main__":
    main()
