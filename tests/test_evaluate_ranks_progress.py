"""``evaluate`` under several processes: rank 0's progress line, and who re-reads a CSV for line numbers.

The ranks split Parquet row groups and whole CSV files round-robin (docs/evaluate.md, "Many
processes"). Rank 0's progress counts its own rows while reading (a collective per chunk would make
every rank wait): it says so, and prints every rank's total once the ranks gather their counts at
the end. A CSV file's invalid rows are found by the one rank that read the file; only that rank
reads it again for their line numbers. References: the row counts and lines of the data as written.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.ddp import count_collectives
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.sources import CsvSource

TASKS = {"click": ("p", "y")}
GROUPS = (3, 7)  # rows of the Parquet row groups: rank 0 reads the first, rank 1 the second


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"p": rng.uniform(0.05, 0.95, n), "y": (np.arange(n) % 2).astype(np.int64)})


def _parquet(directory: Path) -> str:
    path = directory / "logs.parquet"
    with pq.ParquetWriter(path, pa.schema([("p", pa.float64()), ("y", pa.int64())])) as writer:
        for i, size in enumerate(GROUPS):
            writer.write_table(pa.Table.from_pandas(_frame(size, i), preserve_index=False))
    return str(path)


def _with_progress(call: Any) -> tuple[Any, str]:
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        result = call()
        return result, sys.stderr.getvalue()
    finally:
        sys.stderr = saved


def _ddp_progress(rank: int, world_size: int, path: str) -> tuple[str, int, int, int, dict]:
    result, text = _with_progress(lambda: evaluate(path, TASKS, ["ctr"], progress=True))
    quiet = count_collectives(lambda: evaluate(path, TASKS, ["ctr"], progress=False))
    loud = count_collectives(lambda: _with_progress(lambda: evaluate(path, TASKS, ["ctr"], progress=True)))
    return text, result.rows_read, quiet, loud, result.provenance


def _read_phase(text: str) -> list[str]:
    """The lines up to the compute phase's start: ``progress=True`` then shows its steps, ending ``computed 1 step``."""
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    assert re.fullmatch(r"evaluate: computed 1 step in [\d.,]+ s *", lines[-1]), lines  # no segments: one step
    return [line for line in lines if not re.match(r"evaluate: comput(ing .* \(step \d|ed )", line)]


@pytest.mark.ddp
def test_rank_0_progress_says_its_own_rows_then_every_rank_s_total(ddp_pool, tmp_path):
    path = _parquet(tmp_path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    outputs = ddp_pool.run(_ddp_progress, path)
    total = sum(GROUPS)
    for _, rows_read, quiet, loud, provenance in outputs:
        assert rows_read == total
        assert provenance["processes"] == 2 and provenance["inputs"] == [path]  # every rank's the same
        assert loud == quiet  # the progress adds no collective
    rank0, rank1 = outputs[0][0], outputs[1][0]
    assert rank1 == ""
    lines = _read_phase(rank0)
    assert all(line.startswith(f"evaluate (rank 0 of 2): {GROUPS[0]} / {GROUPS[0]} rows") for line in lines[:-2])
    assert re.fullmatch(rf"evaluate: {total} rows read by 2 ranks, [\d,]+ rows/s", lines[-2]), lines
    # then, once, the compute phase starting (every rank's rows)
    assert lines[-1] == f"evaluate: computing 1 metric of 1 task on the {total} rows read...", lines


def test_one_process_progress_reads_then_says_the_compute_began(tmp_path):
    path = _parquet(tmp_path)
    _, text = _with_progress(lambda: evaluate(path, TASKS, ["ctr"], progress=True))
    total = sum(GROUPS)
    lines = _read_phase(text)
    assert len(lines) > 1 and re.fullmatch(rf"evaluate: {total} / {total} rows \(100.0%\), [\d,]+ rows/s", lines[-2])
    assert lines[-1] == f"evaluate: computing 1 metric of 1 task on the {total} rows read...", lines


def _csvs(directory: Path) -> tuple[list[str], int]:
    """Two CSV files (one per rank); the second holds probabilities above 1 from its data row 4 on."""
    paths = []
    for i in range(2):
        frame = _frame(8, 10 + i)
        if i == 1:
            frame.loc[4:5, "p"] = [1.5, 2.5]
        path = directory / f"part{i}.csv"
        frame.to_csv(path, index=False)
        paths.append(str(path))
    text = Path(paths[1]).read_text().splitlines()
    line = next(n for n, row in enumerate(text, start=1) if n > 1 and float(row.split(",")[0]) > 1)
    return paths, line


def _ddp_lines(rank: int, world_size: int, paths: list[str]) -> tuple[int, list[tuple[Any, ...]]]:
    calls = [0]
    original = CsvSource.lines

    def counted(self: CsvSource, rows: Any) -> Any:
        calls[0] += 1
        return original(self, rows)

    CsvSource.lines = counted  # type: ignore[method-assign]
    try:
        result = evaluate(paths, TASKS, ["ne"], on_invalid="skip", progress=False)
    finally:
        CsvSource.lines = original  # type: ignore[method-assign]
    return calls[0], [(p.source, p.column, p.count, p.first_row, p.line) for p in result.problems]


@pytest.mark.ddp
def test_only_the_rank_that_read_a_csv_s_invalid_rows_reads_it_again(ddp_pool, tmp_path):
    paths, line = _csvs(tmp_path)
    (calls0, problems0), (calls1, problems1) = ddp_pool.run(_ddp_lines, paths)
    assert (calls0, calls1) == (0, 1)  # file 0 (valid) went to rank 0, file 1 to rank 1
    assert problems0 == problems1
    assert [(p[1], p[2], p[3], p[4]) for p in problems0] == [("p", 2, 4, line)]
    one = evaluate(paths, TASKS, ["ne"], on_invalid="skip", progress=False).problems  # one process: the same
    assert [(p.source, p.column, p.count, p.first_row, p.line) for p in one] == problems0


def _ddp_lines_failing(rank: int, world_size: int, paths: list[str]) -> list[tuple[Any, ...]]:
    original = CsvSource.lines

    def failing(self: CsvSource, rows: Any) -> Any:
        raise RuntimeError("the file went away")

    CsvSource.lines = failing  # type: ignore[method-assign]
    try:
        result = evaluate(paths, TASKS, ["ne"], on_invalid="skip", progress=False)
    finally:
        CsvSource.lines = original  # type: ignore[method-assign]
    return [(p.source, p.column, p.count, p.first_row, p.line) for p in result.problems]


@pytest.mark.ddp
def test_a_csv_that_cannot_be_read_again_leaves_its_line_unknown_on_every_rank(ddp_pool, tmp_path):
    """The line lookup runs on the one rank that read the file, before the ranks gather: raising there alone
    would leave the other rank waiting in the gather. Best effort: the rows are reported without their line."""
    paths, _ = _csvs(tmp_path)
    problems0, problems1 = ddp_pool.run(_ddp_lines_failing, paths)
    assert problems0 == problems1
    assert [(p[1], p[2], p[3], p[4]) for p in problems0] == [("p", 2, 4, None)]
