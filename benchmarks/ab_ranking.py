"""Before/after of our ranking metrics in one process: two checkouts' packages, runs interleaved.

A shared, loaded machine makes separate runs of ``bench_ranking.py`` drift by tens of percent
between one process and the next. Here both versions of ``torchmetrics_ext`` are imported into
one process (each from its own checkout) and every case alternates between them in random order,
round after round, so a load change hits both alike. Same data and cases as
``bench_ranking.py`` (50,000 queries, 1.37M rows grouped by query, batches of 8192, one thread).

``--flat``: the same long lists given as flat rows (``indexes``: TorchMetrics' retrieval form),
ids grouped or shuffled, unequal or equal lengths, with or without weights; one ``update`` +
``compute`` per run.

``--padded``: long padded lists instead (``bench_ranking.padded_lists``: 64 lists of 5,000 slots, or
``--shape Q L``, each real up to a random length in [2,500, 5,000], given with ``mask`` or ``padding_value``; one
``update`` + ``compute`` per run).

``--small``: the fixed per-call cost. ``compute()`` of NDCG, MRR, RecallAtK(5), MAP and
RankingMetrics(ks=(5, 10)) after one update of 1, 16, 256 or 8,192 flat rows (8 per query,
``indexes=arange(n) // 8``), and ``forward`` of the same batch flat and as ``(n / 8, 8)`` padded
lists; thread CPU time per call (many calls per sample), both sides' values checked equal bit for bit.

Run: ``python benchmarks/ab_ranking.py /path/to/other/checkout [--rounds 10] [--padded]``; prints the min
and median wall time per case and version, and the median ratios (this checkout / the other),
wall and CPU time.
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

HERE = Path(__file__).resolve().parents[1]


def load(root: Path) -> ModuleType:
    """Import ``torchmetrics_ext`` from ``root``; the previously imported version stays usable."""
    for name in [m for m in sys.modules if m == "torchmetrics_ext" or m.startswith("torchmetrics_ext.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("torchmetrics_ext")
    finally:
        sys.path.pop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("other", type=Path, help="the other checkout (the 'before')")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--padded", action="store_true", help="long padded lists (mask or padding_value)")
    parser.add_argument("--flat", action="store_true", help="few long queries as flat rows (grouped or shuffled)")
    parser.add_argument("--small", action="store_true", help="compute/forward at 1 to 8,192 rows (fixed cost)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=(64, 5_000),
        metavar=("Q", "L"),
        help="--padded: Q lists of L slots (default 64 5000; e.g. 1000000 10 for many short lists)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    sides = {"before": load(args.other), "after": load(HERE)}
    if args.small:
        small_cases(sides, args.rounds)
        return
    sys.path.insert(0, str(HERE / "benchmarks"))
    import bench_ranking as bench  # data helpers

    if args.padded:
        padded_cases(sides, bench, args.rounds, tuple(args.shape))
        return
    if args.flat:
        flat_cases(sides, bench, args.rounds)
        return
    data = bench.make_data(50_000)
    parts = bench.batches(data)
    perm = torch.randperm(data["preds"].numel(), generator=torch.Generator().manual_seed(0))
    shuffled = bench.batches({key: value[perm] for key, value in data.items()})
    cases: dict[str, tuple[Callable[[Any], Any], list[dict[str, torch.Tensor]]]] = {
        "NDCG@10": (lambda t: t.NDCG(k=10), parts),
        "Recall@10": (lambda t: t.RecallAtK(k=10), parts),
        "MRR@10": (lambda t: t.MRR(k=10), parts),
        "RankingMetrics, 9 values": (
            lambda t: t.RankingMetrics(ks=(1, 5, 10), metrics=("ndcg", "recall", "mrr")),
            parts,
        ),
        "NDCG@10 per-batch sums": (lambda t: t.NDCG(k=10, queries_complete_per_batch=True), parts),
        "NDCG@10 shuffled (sort)": (lambda t: t.NDCG(k=10), shuffled),
        "MRR@10 shuffled (first hit)": (lambda t: t.MRR(k=10), shuffled),
    }

    def run(tmx: Any, factory: Callable[[Any], Any], batches: list[dict[str, torch.Tensor]]) -> Any:
        metric = factory(tmx)
        for part in batches:
            metric.update(part["preds"], part["target"], indexes=part["indexes"])
        return metric.compute()

    for tmx in sides.values():  # warm-up
        run(tmx, cases["Recall@10"][0], parts[:5])
    report(
        sides,
        {
            case: (lambda tmx, f=factory, b=parts_of_case: run(tmx, f, b))
            for case, (factory, parts_of_case) in cases.items()
        },
        args.rounds,
    )


def padded_cases(sides: dict[str, ModuleType], bench: ModuleType, rounds: int, shape: tuple[int, int]) -> None:
    """``--padded``: one ``update`` + ``compute`` of ``(Q, L)`` padded lists per run, ``mask`` or ``padding_value``."""
    grid = bench.padded_lists(*shape)
    keep = grid.pop("mask")
    with_value = {"preds": grid["preds"].masked_fill(~keep, -1.0), "target": grid["target"]}
    cases: dict[str, tuple[Callable[[Any], Any], dict[str, torch.Tensor]]] = {
        "NDCG@10 mask": (lambda t: t.NDCG(k=10), {**grid, "mask": keep}),
        "Recall@10 mask": (lambda t: t.RecallAtK(k=10), {**grid, "mask": keep}),
        "MRR@10 mask": (lambda t: t.MRR(k=10), {**grid, "mask": keep}),
        "RankingMetrics 9, mask": (
            lambda t: t.RankingMetrics(ks=(1, 5, 10), metrics=("ndcg", "recall", "mrr")),
            {**grid, "mask": keep},
        ),
        "NDCG@10 padding_value": (lambda t: t.NDCG(k=10, padding_value=-1.0), with_value),
        "NDCG@10 full lists": (lambda t: t.NDCG(k=10), grid),
        "MRR (no cutoff) mask": (lambda t: t.MRR(), {**grid, "mask": keep}),
        "NDCG@10 float labels, mask": (
            lambda t: t.NDCG(k=10),
            {"preds": grid["preds"], "target": grid["target"] / 4, "mask": keep},
        ),
    }
    report_single_batches(sides, cases, rounds)


def flat_cases(sides: dict[str, ModuleType], bench: ModuleType, rounds: int) -> None:
    """``--flat``: one ``update`` + ``compute`` of few long queries given as flat rows with ``indexes``."""
    grid = bench.padded_lists()  # 64 lists of 5,000 slots, each real up to a random length in [2,500, 5,000]
    keep = grid["mask"]
    ids = torch.arange(keep.shape[0])[:, None].expand(keep.shape)
    unequal = {"preds": grid["preds"][keep], "target": grid["target"][keep], "indexes": ids[keep]}
    equal = {"preds": grid["preds"].reshape(-1), "target": grid["target"].reshape(-1), "indexes": ids.reshape(-1)}
    generator = torch.Generator().manual_seed(0)

    def shuffled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        perm = torch.randperm(batch["preds"].numel(), generator=generator)
        return {key: value[perm] for key, value in batch.items()}

    weighted = {**unequal, "weights": torch.rand(unequal["preds"].numel(), generator=generator, dtype=torch.float64)}
    cases: dict[str, tuple[Callable[[Any], Any], dict[str, torch.Tensor]]] = {
        "NDCG@10 grouped": (lambda t: t.NDCG(k=10), unequal),
        "NDCG@10 shuffled": (lambda t: t.NDCG(k=10), shuffled(unequal)),
        "NDCG@10 equal, grouped": (lambda t: t.NDCG(k=10), equal),
        "NDCG@10 equal, shuffled": (lambda t: t.NDCG(k=10), shuffled(equal)),
        "NDCG@10 grouped, weights": (lambda t: t.NDCG(k=10), weighted),
        "MRR@10 shuffled": (lambda t: t.MRR(k=10), shuffled(unequal)),
        "RankingMetrics 9, grouped": (
            lambda t: t.RankingMetrics(ks=(1, 5, 10), metrics=("ndcg", "recall", "mrr")),
            unequal,
        ),
    }
    report_single_batches(sides, cases, rounds)


SMALL_METRICS: dict[str, Callable[[Any], Any]] = {
    "NDCG": lambda t: t.NDCG(),
    "MRR": lambda t: t.MRR(),
    "Recall@5": lambda t: t.RecallAtK(k=5),
    "MAP": lambda t: t.MAP(),
    "RankingMetrics(5,10)": lambda t: t.RankingMetrics(ks=(5, 10)),
}


def small_cases(sides: dict[str, ModuleType], rounds: int) -> None:
    """``--small``: thread CPU time of one ``compute()`` (and ``forward``) at 1 to 8,192 rows, interleaved."""
    import warnings

    warnings.simplefilter("ignore")  # a 1-row batch may have no relevant row (nan, warned)
    generator = torch.Generator().manual_seed(0)
    calls: dict[str, dict[str, Callable[[], Any]]] = {}
    for n in (1, 16, 256, 8192):
        preds, target = torch.rand(n, generator=generator), torch.randint(0, 3, (n,), generator=generator)
        flat = {"preds": preds, "target": target, "indexes": torch.arange(n) // 8}
        width = min(n, 8)
        grid = {"preds": preds.reshape(-1, width), "target": target.reshape(-1, width)}
        for name, factory in SMALL_METRICS.items():
            for what in ("compute", "forward flat", "forward 2-D"):
                per_side: dict[str, Callable[[], Any]] = {}
                values = []
                for side, tmx in sides.items():
                    metric = factory(tmx)
                    if what == "compute":
                        metric.update(**flat)

                        def call(m: Any = metric) -> Any:
                            m._computed = None  # compute again, not the cached value
                            return m.compute()
                    else:

                        def call(
                            m: Any = metric, batch: dict[str, torch.Tensor] = flat if "flat" in what else grid
                        ) -> Any:
                            m.reset()
                            return m(**batch)

                    value = call()
                    values.append(torch.stack(list(value.values())) if isinstance(value, dict) else value)
                    per_side[side] = call
                assert torch.equal(values[0].view(torch.int64), values[1].view(torch.int64)), (name, n, what, values)
                calls[f"{name} {what} n={n}"] = per_side
    times: dict[tuple[str, str], list[float]] = {(s, c): [] for s in sides for c in calls}
    rng = random.Random(0)
    for _ in range(rounds):
        for case, per_side in calls.items():
            order = list(sides)
            rng.shuffle(order)
            reps = 10 if "8192" in case else 50
            for side in order:
                call = per_side[side]
                start = time.thread_time()
                for _ in range(reps):
                    call()
                times[(side, case)].append((time.thread_time() - start) / reps)
    load_avg = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{rounds} interleaved rounds, load average {load_avg}; thread CPU time per call, median of rounds")
    print(f"{'case':44s}{'before us':>11s}{'after us':>10s}{'after/before':>14s}")
    for case in calls:
        before, after = (statistics.median(times[(side, case)]) * 1e6 for side in ("before", "after"))
        print(f"{case:44s}{before:11.1f}{after:10.1f}{after / before:13.2f}x")


def report_single_batches(
    sides: dict[str, ModuleType],
    cases: dict[str, tuple[Callable[[Any], Any], dict[str, torch.Tensor]]],
    rounds: int,
) -> None:
    """:func:`report` of one ``update`` + ``compute`` per run (after a warm-up that prints both sides' values)."""

    def once(tmx: Any, factory: Callable[[Any], Any], batch: dict[str, torch.Tensor]) -> Any:
        metric = factory(tmx)
        metric.update(**batch)
        return metric.compute()

    for tmx in sides.values():  # warm-up, and the same value on both sides
        values = [
            float(once(tmx, *case)["ndcg@10"] if "Metrics" in name else once(tmx, *case))
            for name, case in cases.items()
        ]
        print(f"values {values}")
    report(sides, {case: (lambda tmx, c=pair: once(tmx, *c)) for case, pair in cases.items()}, rounds)


def report(sides: dict[str, ModuleType], cases: dict[str, Callable[[Any], Any]], rounds: int) -> None:
    """Time every case on both sides, in random order round after round; print min/median and ratios."""
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(s, c): [] for s in sides for c in cases}
    rng = random.Random(0)
    for _ in range(rounds):
        for case, fn in cases.items():
            order = list(sides)
            rng.shuffle(order)
            for side in order:
                cpu, wall = time.process_time(), time.perf_counter()
                fn(sides[side])
                times[(side, case)].append((time.perf_counter() - wall, time.process_time() - cpu))
    load_avg = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{rounds} interleaved rounds, load average {load_avg}")
    print(f"{'case':30s}{'before ms min/med':>20s}{'after ms min/med':>20s}{'after/before wall':>19s}{'cpu':>7s}")
    for case in cases:
        before, after = times[("before", case)], times[("after", case)]
        wall_b, wall_a = [w for w, _ in before], [w for w, _ in after]
        ratio_wall = statistics.median(wall_a) / statistics.median(wall_b)
        ratio_cpu = statistics.median(c for _, c in after) / statistics.median(c for _, c in before)
        print(
            f"{case:30s}{min(wall_b) * 1e3:9.1f} /{statistics.median(wall_b) * 1e3:7.1f}"
            f"{min(wall_a) * 1e3:11.1f} /{statistics.median(wall_a) * 1e3:7.1f}"
            f"{ratio_wall:18.2f}x{ratio_cpu:6.2f}x"
        )


if __name__ == "__main__":
    main()
