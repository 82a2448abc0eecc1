"""``torchmetrics-ext evaluate --by`` peak memory: resident bytes per row above the same run without ``--by``.

Run: ``python benchmarks/bench_evaluate_by_memory.py`` (``--rows 1000000 4000000``, ``--metrics ne ne,auc,gauc``).
It writes a Parquet file of ``--rows`` rows to a temporary folder (float32 scores, int8 labels, int64
user ids of about 20 rows each, a text column ``country`` of 50 values and ``dataset`` of 4), then runs the
command in a fresh process per case, without ``--by``, with ``--by country`` and with
``--by country,dataset``, and prints each process's peak resident memory (``ru_maxrss``) and the extra
bytes per row of the ``--by`` runs (``--country-per-user``: each user's rows in one country, so
that GAUC's ``(country, user)`` groups are the users, not about one per row). The file is deleted at the end.
To measure another version of the package (before a change), run it with ``PYTHONPATH`` pointing at that checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# the command in this process, then its peak resident memory (KiB on Linux) on the last line of stderr
CHILD = (
    "import resource, sys\n"
    "from torchmetrics_ext.cli import main\n"
    "sys.argv = ['torchmetrics-ext', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def _write(path: str, n: int, country_per_user: bool = False) -> None:
    rng = np.random.default_rng(0)
    countries = np.array([f"c{i:02d}" for i in range(50)])
    user = rng.integers(0, max(n // 20, 1), n)
    table = pa.table(
        {
            "p": rng.random(n, dtype=np.float32),
            "y": (rng.random(n) < 0.3).astype(np.int8),
            "user": user,
            "country": countries[user % 50 if country_per_user else rng.integers(0, 50, n)],
            "dataset": np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)],
        }
    )
    pq.write_table(table, path, row_group_size=1 << 20)


def _peak_kib(path: str, metrics: str, by: str | None) -> int:
    args = ["evaluate", path, "--task", "click=p:y", "--metrics", metrics]
    if "gauc" in metrics:
        args += ["--user", "user"]
    if by:
        args += ["--by", by]
    # run in the data's folder: `python -c` puts the working directory first on sys.path, so from a
    # checkout's root the child would import that checkout's package whatever PYTHONPATH names
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True, cwd=os.path.dirname(path)
    )
    return int(done.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--metrics", nargs="+", default=["ne", "ne,auc,gauc"])
    # each user in one country (as real users mostly are): (country, user) groups as many as users, not
    # about one per row as with a country drawn per row, which sets the GAUC --by peak by its per-group arrays
    parser.add_argument("--country-per-user", action="store_true", help="each user's rows in one country")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for n in args.rows:
            path = os.path.join(folder, f"rows_{n}.parquet")
            _write(path, n, args.country_per_user)
            for metrics in args.metrics:
                plain = _peak_kib(path, metrics, None)
                cells = [f"{n:,} rows, {metrics}: without --by {plain / 1024:.0f} MiB"]
                for by in ("country", "country,dataset"):
                    peak = _peak_kib(path, metrics, by)
                    cells.append(f"--by {by} {peak / 1024:.0f} MiB ({(peak - plain) * 1024 / n:.0f} B/row more)")
                print("; ".join(cells), flush=True)
            os.remove(path)


if __name__ == "__main__":
    main()
