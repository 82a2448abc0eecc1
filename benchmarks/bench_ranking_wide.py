"""Ranking metrics on wide padded lists (next-item prediction over a catalogue), against TorchMetrics.

Each query is one row of ``(Q, C)`` float32 scores (normal logits plus 10, the next item boosted
by up to 4) over a ``C``-item catalogue with a one-hot bool target (the recipe of
``docs/migration_torchmetrics.md`` for torcheval's ``ReciprocalRank``). One ``update`` +
``compute`` per metric, best of ``--rounds``; with ``--baseline`` another checkout's package
(``git archive main torchmetrics_ext | tar -x -C /tmp/wide_base``) runs on the same data in the
same process, its rounds interleaved with this checkout's. TorchMetrics' retrieval metrics get
the same data flattened with ``indexes``, one round (``--skip-torchmetrics`` leaves them out;
they loop over queries in Python). Every contender's value is printed (stderr) to check that they agree.

    python benchmarks/bench_ranking_wide.py --baseline /tmp/wide_base
    python benchmarks/bench_ranking_wide.py --shapes 64x10000 1024x10000 64x200000 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baseline import load_checkout

import torchmetrics_ext as tmx

# (label, our metric factory, TorchMetrics retrieval class name and arguments or None)
CASES: list[tuple[str, Callable[[ModuleType], object], tuple[str, dict] | None]] = [
    ("MRR()", lambda m: m.MRR(), ("RetrievalMRR", {})),
    ("MRR(k=10)", lambda m: m.MRR(k=10), ("RetrievalMRR", {"top_k": 10})),
    ("HitRate(10)", lambda m: m.HitRate(k=10), ("RetrievalHitRate", {"top_k": 10})),
    ("RecallAtK(10)", lambda m: m.RecallAtK(k=10), ("RetrievalRecall", {"top_k": 10})),
    ("PrecisionAtK(10)", lambda m: m.PrecisionAtK(k=10), ("RetrievalPrecision", {"top_k": 10})),
    ("NDCG(10)", lambda m: m.NDCG(k=10), ("RetrievalNormalizedDCG", {"top_k": 10})),
    ("NDCG()", lambda m: m.NDCG(), ("RetrievalNormalizedDCG", {})),
    ("MAP(10)", lambda m: m.MAP(k=10), ("RetrievalMAP", {"top_k": 10})),
    (
        "RankingMetrics([1,10,100])",
        lambda m: m.RankingMetrics(ks=[1, 10, 100], metrics=("ndcg", "recall", "mrr")),
        None,
    ),
]


def _time(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def _ours(package: ModuleType, make: Callable[[ModuleType], object], preds, target) -> Callable[[], object]:
    def run() -> object:
        metric = make(package)
        metric.update(preds, target)  # type: ignore[attr-defined]
        value = metric.compute()  # type: ignore[attr-defined]
        return {k: round(float(v), 6) for k, v in value.items()} if isinstance(value, dict) else round(float(value), 6)

    return run


def _theirs(name: str, kwargs: dict, preds, target) -> Callable[[], object]:
    import torchmetrics.retrieval as tr

    flat_preds, flat_target = preds.reshape(-1), target.reshape(-1)
    indexes = torch.arange(preds.shape[0]).repeat_interleave(preds.shape[1])  # made once, not timed

    def run() -> object:
        metric = getattr(tr, name)(empty_target_action="skip", **kwargs)
        metric.update(flat_preds, flat_target, indexes=indexes)
        return round(float(metric.compute()), 6)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["256x50000"], help="QxC padded shapes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout (the folder holding torchmetrics_ext/)")
    parser.add_argument("--skip-torchmetrics", action="store_true")
    parser.add_argument("--only", nargs="+", help="labels of the cases to run (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    old = load_checkout(args.baseline) if args.baseline else None
    for shape in args.shapes:
        num_queries, width = (int(v) for v in shape.split("x"))
        # a model's logits, shifted positive (TorchMetrics counts scores <= 0 as not retrieved), the next item
        # boosted so that its rank varies from 1 to a few thousand
        preds = torch.randn(num_queries, width) + 10.0
        item = torch.randint(0, width, (num_queries,))
        preds[torch.arange(num_queries), item] += 4.0 * torch.rand(num_queries)
        target = torch.nn.functional.one_hot(item, width).bool()
        floor, _ = _time(lambda p=preds, t=target: (p > p[t].unsqueeze(1)).sum(1), args.rounds)
        print(f"\n({num_queries}, {width}) float32, one-hot bool target; `(preds > best).sum(1)`: {floor * 1e3:.1f} ms")
        before = "baseline ms | " if old else ""
        print(f"| metric | ours ms | {before}TorchMetrics ms | ours / baseline | TorchMetrics / ours |")
        print(f"|---|---|{'---|' if old else ''}---|---|---|")
        for label, make, theirs in CASES:
            if args.only and label not in args.only:
                continue
            new_s = old_s = float("nan")
            values = []
            for r in range(args.rounds):  # interleaved: both checkouts see the same load
                order = [("new", tmx), ("old", old)] if r % 2 else [("old", old), ("new", tmx)]
                for side, package in order:
                    if package is None:
                        continue
                    seconds, value = _time(_ours(package, make, preds, target), 1)
                    if side == "new":
                        new_s = seconds if new_s != new_s else min(new_s, seconds)
                    else:
                        old_s = seconds if old_s != old_s else min(old_s, seconds)
                    values.append((side, value))
            tm_s = float("nan")
            if theirs is not None and not args.skip_torchmetrics:
                tm_s, tm_value = _time(_theirs(*theirs, preds, target), 1)
                values.append(("torchmetrics", tm_value))
            ratio_old = f"{new_s / old_s:.3f}x" if old else ""
            print(
                f"| {label} | {new_s * 1e3:.1f} | {f'{old_s * 1e3:.1f} | ' if old else ''}{tm_s * 1e3:.1f} | "
                f"{ratio_old} | {tm_s / new_s:.1f}x |"
            )
            print(f"  values: {dict(values)}", file=sys.stderr)


if __name__ == "__main__":
    main()
