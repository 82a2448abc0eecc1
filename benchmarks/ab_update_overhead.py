"""Fixed cost of one ``update`` of the cheap pointwise metrics: this checkout against another's package.

Per-update thread CPU time of standalone metrics (WeightedMSE (also weighted), WeightedMAE, WeightedAccuracy
(weighted), CTR, Calibration, NE (also
with int64 labels), WeightedAverage (also without labels), exact
AUC and AUPRC, ``Windowed(AUC, 1000)`` and ``(AUC, 100000)``, exact ``GroupedAUC`` on groups of 4 rows, ``XAUC``
(each also windowed);
``NDCG(k=10)``, ``RankingMetrics``, ``MRR``, ``RecallAtK(5)`` and ``Windowed(NDCG(k=10), 1000)`` on
flat weighted rows of 4 per query, the exact mode; ``NDCG(k=10) int64`` on unweighted rows with
int64 labels; the ``padded`` cases on ``(N / 4, 4)`` lists with a mask) at a tiny batch (``N=8``,
where the cost is all fixed: Python and ATen dispatch) and a training-size one (``N=8192``),
validation on and off, one thread. The two versions take turns round by round (the order
alternating) in one process; each round times 200 updates (50 at ``N=8192``) over 8 pre-generated
batches, and the best round of each side is reported with their ratio (this checkout / the other;
below 1 is faster), next to the median of the per-round ratios (the machine is shared: a round that
one side spends descheduled moves the best round of that side only, the median ratio much less).
``--forward`` times ``metric(...)`` (the batch value and the accumulation, what Lightning calls
every step) instead of ``update``; ``AUC binned 1M`` and ``AUPRC binned 3 tasks`` (``(3, N)`` weighted)
are forward's binned cases beside ``AUC binned`` (10,000 bins). ``--reps`` sets the calls per round.

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/ab_update_overhead.py /tmp/base
    python benchmarks/ab_update_overhead.py /tmp/base --forward --sizes 8 --cases "AUC binned" CTR
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _baseline import alternate, load_checkout

import torchmetrics_ext as new

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

CASES: dict[str, tuple[Callable[[ModuleType, bool], Any], bool | str]] = {
    # name: (factory(package, validate_args), whether update takes weights, or "ranking": flat rows with ids,
    # or "grouped": groups of 4 rows)
    "WeightedMSE": (lambda m, va: m.WeightedMSE(validate_args=va), False),
    "WeightedMAE": (lambda m, va: m.WeightedMAE(validate_args=va), False),
    # weighted: the fused sums of w·(p - y)·(p - y) and w·y·y (`BatchSums.product`)
    "WeightedMSE weighted": (lambda m, va: m.WeightedMSE(validate_args=va), True),
    "WeightedAccuracy weighted": (lambda m, va: m.WeightedAccuracy(validate_args=va), True),
    "CTR": (lambda m, va: m.CTR(validate_args=va), True),
    "NE": (lambda m, va: m.NormalizedEntropy(validate_args=va), False),
    "NE int64": (lambda m, va: m.NormalizedEntropy(validate_args=va), "int64"),  # unweighted, int64 labels
    "WeightedAverage": (lambda m, va: m.WeightedAverage(validate_args=va), True),
    "WeightedAverage no labels": (lambda m, va: m.WeightedAverage(validate_args=va), "no labels"),  # (p, None, w)
    "Calibration": (lambda m, va: m.Calibration(validate_args=va), True),
    "CTR bool": (lambda m, va: m.CTR(validate_args=va), "bool"),  # weighted, bool labels
    "NDCG(k=10) unweighted": (lambda m, va: m.NDCG(k=10, validate_args=va), "ranking unweighted"),
    "AUC exact": (lambda m, va: m.AUC(validate_args=va), False),
    "Windowed(AUC, 1000)": (lambda m, va: m.Windowed(m.AUC(validate_args=va), 1000), False),
    # a window larger than the batch at N=8192 too (at 1000 that batch is cut: the general way)
    "Windowed(AUC, 100000)": (lambda m, va: m.Windowed(m.AUC(validate_args=va), 100_000), False),
    "Windowed(GroupedAUC, 1000)": (lambda m, va: m.Windowed(m.GroupedAUC(validate_args=va), 1000), "grouped"),
    "Windowed(XAUC, 1000)": (lambda m, va: m.Windowed(m.XAUC(validate_args=va), 1000), True),
    "AUC binned": (lambda m, va: m.AUC(num_bins=10_000, validate_args=va), False),
    "AUC binned 1M": (lambda m, va: m.AUC(num_bins=1_000_000, validate_args=va), False),
    "AUPRC binned 3 tasks": (lambda m, va: m.AUPRC(num_tasks=3, num_bins=10_000, validate_args=va), "3 tasks"),
    "AUPRC exact": (lambda m, va: m.AUPRC(validate_args=va), True),
    "GroupedAUC exact": (lambda m, va: m.GroupedAUC(validate_args=va), "grouped"),
    "XAUC": (lambda m, va: m.XAUC(validate_args=va), True),
    "Windowed(AUC binned, 1000)": (lambda m, va: m.Windowed(m.AUC(num_bins=10_000, validate_args=va), 1000), False),
    "NDCG(k=10)": (lambda m, va: m.NDCG(k=10, validate_args=va), "ranking"),
    "NDCG(k=10) sums": (lambda m, va: m.NDCG(k=10, queries_complete_per_batch=True, validate_args=va), "ranking"),
    "Reliability": (lambda m, va: m.Reliability(validate_args=va), True),
    "HindsightTargetPR": (lambda m, va: m.HindsightTargetPR(validate_args=va), True),
    "Windowed(NDCG, 1000)": (lambda m, va: m.Windowed(m.NDCG(k=10, validate_args=va), 1000), "ranking"),
    "RankingMetrics": (lambda m, va: m.RankingMetrics(ks=(1, 5, 10), validate_args=va), "ranking"),
    "MRR": (lambda m, va: m.MRR(validate_args=va), "ranking"),
    "RecallAtK(5)": (lambda m, va: m.RecallAtK(5, validate_args=va), "ranking"),
    "NDCG(k=10) int64": (lambda m, va: m.NDCG(k=10, validate_args=va), "ranking int64"),
    "NDCG(k=10) padded": (lambda m, va: m.NDCG(k=10, validate_args=va), "padded"),
    "RankingMetrics padded": (lambda m, va: m.RankingMetrics(ks=(1, 5, 10), validate_args=va), "padded"),
    "Segmented(NE, 100)": (lambda m, va: m.Segmented(m.NormalizedEntropy(validate_args=va), 100), "segmented"),
    "Windowed(Segmented(NE, 100), 1000)": (
        lambda m, va: m.Windowed(m.Segmented(m.NormalizedEntropy(validate_args=va), 100), 1000),
        "segmented",
    ),
}


def batches(n: int) -> list[Batch]:
    out = []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        p = torch.rand(n, generator=g)
        out.append((p, (torch.rand(n, generator=g) < p).float(), torch.rand(n, generator=g) + 0.1))
    return out


def _per_package(
    pkg: ModuleType, make: Callable, validate: bool, data: list[Batch], weighted: bool | str, reps: int, forward: bool
) -> float:
    """:func:`per_update` of a metric made with ``pkg`` (one side of :func:`_baseline.alternate`)."""
    return per_update(make(pkg, validate), data, weighted, reps, forward)


def per_update(metric: Any, data: list[Batch], weighted: bool | str, reps: int, forward: bool = False) -> float:
    """Thread CPU µs per ``update`` (``forward``: per call) over ``reps`` calls (after one untimed update)."""
    args = [b if weighted is True else b[:2] for b in data]
    kwargs: list[dict[str, torch.Tensor]] = [{} for _ in data]
    if weighted == "int64":
        args = [(b[0], b[1].long()) for b in data]
    elif weighted == "no labels":
        args = [(b[0], None, b[2]) for b in data]
    elif weighted == "bool":
        args = [(b[0], b[1].bool(), b[2]) for b in data]
    elif weighted == "ranking unweighted":  # float labels, no weights (the rows keep unit weights)
        ids = torch.arange(data[0][0].shape[0]) // 4
        kwargs = [{"indexes": ids} for _ in data]
    elif weighted == "ranking":
        ids = torch.arange(data[0][0].shape[0]) // 4
        kwargs = [{"indexes": ids, "weights": b[2]} for b in data]
    elif weighted == "ranking int64":  # unweighted, int64 labels (kept as int32 after their bounds are read)
        ids = torch.arange(data[0][0].shape[0]) // 4
        args = [(b[0], b[1].long()) for b in data]
        kwargs = [{"indexes": ids} for _ in data]
    elif weighted == "padded":  # (N / 4, 4) lists, the last candidate of every other list padding
        n = data[0][0].shape[0]
        mask = torch.ones(max(n // 4, 1), 4, dtype=torch.bool)
        mask[::2, -1] = False
        args = [(b[0][: mask.numel()].reshape(mask.shape), b[1][: mask.numel()].reshape(mask.shape)) for b in data]
        kwargs = [{"mask": mask} for _ in data]
    elif weighted == "3 tasks":  # (3, N) weighted: the batch's scores, reversed and rolled, as three tasks
        args = [tuple(torch.stack([x, x.flip(0), x.roll(1)]) for x in b) for b in data]
    elif weighted == "segmented":  # unweighted, 100 segment ids
        ids = torch.arange(data[0][0].shape[0]) % 100
        args = [b[:2] for b in data]
        kwargs = [{"segments": ids} for _ in data]
    elif weighted == "grouped":
        groups = torch.arange(data[0][0].shape[0]) // 4
        args = [(*b[:2], groups, b[2]) for b in data]
    metric.update(*args[0], **kwargs[0])
    call = metric if forward else metric.update
    start = time.thread_time()
    for i in range(reps):
        call(*args[i % len(args)], **kwargs[i % len(args)])
    return (time.thread_time() - start) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a directory holding another checkout's torchmetrics_ext")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 8192])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="a subset of the metrics")
    parser.add_argument("--forward", action="store_true", help="time forward (metric(...)) instead of update")
    parser.add_argument("--reps", type=int, default=None, help="calls per round (default 200, 50 above N=1024)")
    args = parser.parse_args()
    old = load_checkout(args.baseline)
    torch.set_num_threads(1)
    call = "forward" if args.forward else "update"
    for n in args.sizes:
        data = batches(n)
        reps = args.reps if args.reps is not None else 200 if n <= 1024 else 50
        for validate in (True, False):
            for name in args.cases:
                make, weighted = CASES[name]
                timed = functools.partial(
                    _per_package,
                    make=make,
                    validate=validate,
                    data=data,
                    weighted=weighted,
                    reps=reps,
                    forward=args.forward,
                )
                result = alternate(args.rounds, timed, new, old)
                print(f"{call} N={n:<5d} validate_args={validate!s:5s} {name:20s} {result}", flush=True)


if __name__ == "__main__":
    main()
