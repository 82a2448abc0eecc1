"""Per-call cost of ``update`` and ``forward`` against the anchors, at batch sizes 1, 16, 256 and 8192.

Inside a training step every metric call costs model time, so the per-call overhead matters as much
as the throughput of a long run. Each case pairs one of our metrics with its nearest anchor
(TorchMetrics or torcheval), fed the *same* pre-made batches (one target dtype per pair: integer
labels where the anchor is TorchMetrics, which refuses float labels; float labels where it is
torcheval, which wants them). One thread (``torch.set_num_threads(1)``); each round builds every
contender afresh, makes one untimed call, then times ``--calls`` calls over 8 batches; contenders
take turns within a round (the order alternating round by round) and the best round of each is kept,
with thread CPU time (``time.thread_time``) and wall time. Validation is on (the defaults) for
both sides, and off for both where the anchor has ``validate_args`` (torcheval has no switch, and
``MeanMetric`` none either: those pairs run with validation on only).

The one-task ``RecMetricModule`` of ne, calibration, ctr and auc is compared with a
``MetricCollection`` of the nearest TorchMetrics metrics, all called with ``(preds, target)``:
``BinaryAUROC(thresholds=None)`` for auc, ``BinaryCalibrationError`` for calibration, and two
``MeanMetric`` (``value=preds, weight=target``: a weighted mean, the cost of CTR's and NE's sums,
which TorchMetrics lacks). ``RecMetricModule`` has no ``forward`` (it is not called): that row shows
``update`` only, as do the torcheval pairs (torcheval metrics are not callable).

    python benchmarks/bench_small_batch.py              # all cases, 4 sizes, 7 rounds
    python benchmarks/bench_small_batch.py --quick      # 3 rounds, fewer calls
    python benchmarks/bench_small_batch.py --only AUC NDCG --batches 1 16

Printed: µs per call of each side (best round, thread and wall) and the ratio ours / anchor (below
1 is faster). The machine is shared: read the ratios of one run, not the microseconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import torchmetrics_ext as tmx

Factory = Callable[[bool], Any]  # validate_args -> a metric


@dataclass
class Case:
    """One of our metrics and its anchor, and how both are fed."""

    name: str
    ours: Factory
    anchor: Factory
    anchor_name: str
    feed: str  # "int" | "float" (binary labels), "reg" (real targets), "mean"/"ctr" (weighted means), "rank", "module"
    switch: bool = True  # whether the anchor has validate_args (then both also run with it off)
    forward: bool = True


def _tm() -> Any:
    import torchmetrics

    return torchmetrics


def _te() -> Any:
    import torcheval.metrics as te

    return te


def _module(va: bool) -> Any:
    names = ("ne", "calibration", "ctr", "auc")
    return tmx.RecMetricModule(
        ["click"], {n: {"validate_args": va} for n in names}, throughput=False, compute_interval_steps=10**9
    )


def _collection(va: bool) -> Any:
    tm = _tm()
    c = tm.classification
    return tm.MetricCollection(
        {
            "ne": tm.MeanMetric(),
            "calibration": c.BinaryCalibrationError(validate_args=va),
            "ctr": tm.MeanMetric(),
            "auc": c.BinaryAUROC(thresholds=None, validate_args=va),
        }
    )


def _cases() -> list[Case]:
    tm = _tm()
    c = tm.classification
    r = tm.retrieval
    return [
        Case(
            "NE",
            lambda va: tmx.NormalizedEntropy(validate_args=va),
            lambda va: _te().BinaryNormalizedEntropy(),
            "te BinaryNormalizedEntropy",
            "float",
            switch=False,
            forward=False,
        ),
        Case(
            "AUC exact",
            lambda va: tmx.AUC(validate_args=va),
            lambda va: c.BinaryAUROC(thresholds=None, validate_args=va),
            "BinaryAUROC(None)",
            "int",
        ),
        Case(
            "AUC exact",
            lambda va: tmx.AUC(validate_args=va),
            lambda va: _te().BinaryAUROC(),
            "te BinaryAUROC",
            "float",
            switch=False,
            forward=False,
        ),
        Case(
            "AUC(num_bins=1000)",
            lambda va: tmx.AUC(num_bins=1000, validate_args=va),
            lambda va: c.BinaryAUROC(thresholds=1000, validate_args=va),
            "BinaryAUROC(1000)",
            "int",
        ),
        Case(
            "AUC(num_bins=1000)",
            lambda va: tmx.AUC(num_bins=1000, validate_args=va),
            lambda va: _te().BinaryBinnedAUROC(threshold=1000),
            "te BinaryBinnedAUROC(1000)",
            "float",
            switch=False,
            forward=False,
        ),
        Case(
            "AUPRC",
            lambda va: tmx.AUPRC(validate_args=va),
            lambda va: c.BinaryAveragePrecision(thresholds=None, validate_args=va),
            "BinaryAveragePrecision",
            "int",
        ),
        Case(
            "CTR", lambda va: tmx.CTR(validate_args=va), lambda va: tm.MeanMetric(), "MeanMetric", "ctr", switch=False
        ),
        Case(
            "WeightedAverage",
            lambda va: tmx.WeightedAverage(validate_args=va),
            lambda va: tm.MeanMetric(),
            "MeanMetric",
            "mean",
            switch=False,
        ),
        Case(
            "WeightedMSE",
            lambda va: tmx.WeightedMSE(validate_args=va),
            lambda va: tm.MeanSquaredError(),
            "MeanSquaredError",
            "reg",
            switch=False,
        ),
        Case(
            "WeightedMAE",
            lambda va: tmx.WeightedMAE(validate_args=va),
            lambda va: tm.MeanAbsoluteError(),
            "MeanAbsoluteError",
            "reg",
            switch=False,
        ),
        Case(
            "WeightedAccuracy",
            lambda va: tmx.WeightedAccuracy(validate_args=va),
            lambda va: c.BinaryAccuracy(validate_args=va),
            "BinaryAccuracy",
            "int",
        ),
        Case(
            "WeightedPrecision",
            lambda va: tmx.WeightedPrecision(validate_args=va),
            lambda va: c.BinaryPrecision(validate_args=va),
            "BinaryPrecision",
            "int",
        ),
        Case(
            "WeightedRecall",
            lambda va: tmx.WeightedRecall(validate_args=va),
            lambda va: c.BinaryRecall(validate_args=va),
            "BinaryRecall",
            "int",
        ),
        Case(
            "NDCG",
            lambda va: tmx.NDCG(validate_args=va),
            lambda va: r.RetrievalNormalizedDCG(),
            "RetrievalNDCG",
            "rank",
            switch=False,
        ),
        Case(
            "MRR",
            lambda va: tmx.MRR(validate_args=va),
            lambda va: r.RetrievalMRR(),
            "RetrievalMRR",
            "rank",
            switch=False,
        ),
        Case(
            "RecallAtK(5)",
            lambda va: tmx.RecallAtK(5, validate_args=va),
            lambda va: r.RetrievalRecall(top_k=5),
            "RetrievalRecall(5)",
            "rank",
            switch=False,
        ),
        Case("RecMetricModule", _module, _collection, "MetricCollection", "module", forward=False),
    ]


def make_batches(n: int, feed: str) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """8 batches of size ``n``: (our arguments, the anchor's arguments), the same tensors on both sides."""
    out = []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        p = torch.rand(n, generator=g)
        y = (torch.rand(n, generator=g) < p).to(torch.int64)
        if feed == "int":
            out.append(((p, y), (p, y)))
        elif feed == "float":
            out.append(((p, y.float()), (p, y.float())))
        elif feed == "reg":
            t = torch.rand(n, generator=g)
            out.append(((p, t), (p, t)))
        elif feed == "mean":  # WeightedAverage(preds, weights=w) against MeanMetric(preds, w)
            w = torch.rand(n, generator=g) + 0.1
            out.append(((p, None, w), (p, w)))
        elif feed == "ctr":  # CTR(preds, labels, w): the weighted mean of the labels, MeanMetric(labels, w)
            w = torch.rand(n, generator=g) + 0.1
            out.append(((p, y.float(), w), (y.float(), w)))
        elif feed == "rank":  # flat rows, ~8 candidates per query, sorted query ids
            ids = torch.arange(n) // 8
            out.append(((p, y, ids), (p, y, ids)))
        elif feed == "module":
            out.append((({"prediction": p, "label": y},), (p, y)))
        else:
            raise ValueError(feed)
    return out


def per_call(metric: Any, args: list[tuple[Any, ...]], calls: int, forward: bool) -> tuple[float, float]:
    """(thread µs, wall µs) per call over ``calls`` calls, after one untimed call."""
    fn = metric if forward else metric.update
    fn(*args[0])
    k = len(args)
    t0, w0 = time.thread_time(), time.perf_counter()
    for i in range(calls):
        fn(*args[i % k])
    t1, w1 = time.thread_time(), time.perf_counter()
    return (t1 - t0) / calls * 1e6, (w1 - w0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 8192], help="batch sizes")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per round (a quarter at 8192)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 40 calls")
    parser.add_argument("--only", nargs="+", help="the cases whose name holds one of these")
    parser.add_argument("--no-forward", action="store_true", help="time update only")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 3, 40
    torch.set_num_threads(1)
    cases = [c for c in _cases() if not args.only or any(s in c.name for s in args.only)]
    print("case | anchor | N | call | validate | ours thread µs | anchor thread µs | ratio thread | ratio wall")
    worst: dict[str, float] = {}
    for n in args.batches:
        calls = args.calls if n <= 1024 else max(args.calls // 4, 5)
        for case in cases:
            data = make_batches(n, case.feed)
            ours_args = [d[0] for d in data]
            anchor_args = [d[1] for d in data]
            modes = [m for m in ("update", "forward") if m == "update" or (case.forward and not args.no_forward)]
            for mode in modes:
                for va in (True, False) if case.switch else (True,):
                    best = {"ours": [float("inf")] * 2, "anchor": [float("inf")] * 2}
                    for rnd in range(args.rounds):
                        sides = [("ours", case.ours, ours_args), ("anchor", case.anchor, anchor_args)]
                        for side, make, a in sides if rnd % 2 == 0 else sides[::-1]:
                            thread, wall = per_call(make(va), a, calls, mode == "forward")
                            best[side] = [min(best[side][0], thread), min(best[side][1], wall)]
                    rt = best["ours"][0] / best["anchor"][0]
                    rw = best["ours"][1] / best["anchor"][1]
                    key = f"{case.name} vs {case.anchor_name}"
                    worst[key] = max(worst.get(key, 0.0), rt)
                    print(
                        f"{case.name:18s} | {case.anchor_name:26s} | {n:5d} | {mode:7s} | {va!s:5s} | "
                        f"{best['ours'][0]:8.1f} | {best['anchor'][0]:8.1f} | {rt:5.2f}x | {rw:5.2f}x",
                        flush=True,
                    )
    print("\nworst thread-time ratio (ours / anchor) per pair over sizes, calls and validation:")
    for key, value in worst.items():
        print(f"  {key:55s} {value:5.2f}x{'  <- slower' if value > 1.0 else ''}")


if __name__ == "__main__":
    main()
