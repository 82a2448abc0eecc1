"""Bit-for-bit A/B of ranking values between two checkouts (for changes meant to leave every value as it was).

Random small and medium inputs (1 to 6,000 rows; ids grouped, shuffled, one query, offset; ties;
no relevant row; int64/int32/bool/float relevance with grades up to 700; row weights; padded
lists with a mask) through NDCG (linear and exponential gain), MRR, MAP, RecallAtK and
RankingMetrics at k = None, 1, 3, 10; every value compared as its float64 bits.

Run: ``python benchmarks/ab_ranking_values.py BEFORE_ROOT AFTER_ROOT [--seed 0] [--trials 300]``
(each root holds a ``torchmetrics_ext`` package); prints each difference and the count.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

import torch


def load(root: str) -> ModuleType:
    """Import ``torchmetrics_ext`` from ``root``; the previously imported version stays usable."""
    for name in [m for m in sys.modules if m == "torchmetrics_ext" or m.startswith("torchmetrics_ext.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module("torchmetrics_ext")
    finally:
        sys.path.pop(0)


def build(tmx: Any, kind: str, exponential: bool, k: int | None) -> Any:
    if kind == "ndcg":
        return tmx.NDCG(k=k, exponential_gain=exponential)
    if kind == "mrr":
        return tmx.MRR(k=k)
    if kind == "map":
        return tmx.MAP(k=k)
    if kind == "recall":
        return tmx.RecallAtK(k or 5)
    return tmx.RankingMetrics(ks=(1, 5, k), exponential_gain=exponential)


def value(metric: Any, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    for batch in batches:
        metric.update(**batch)
    out = metric.compute()
    if isinstance(out, dict):
        out = torch.stack(list(out.values()))
    return out.reshape(-1).double()


def inputs(trial: int, g: torch.Generator) -> list[list[dict[str, torch.Tensor]]]:
    """One trial's input forms: flat rows, and for some trials the same rows as masked padded lists."""
    n = int(torch.randint(1, 300 if trial % 5 else 6000, (1,), generator=g))
    width = int(torch.randint(1, 12, (1,), generator=g))
    top = [1, 2, 4, 70, 700][trial % 5]
    dtype = [torch.int64, torch.float32, torch.bool, torch.int32, torch.float64][(trial // 5) % 5]
    preds = torch.rand(n, generator=g)
    if trial % 3 == 0:
        preds = (preds * 4).round() / 4  # ties
    target = torch.randint(0, top + 1, (n,), generator=g)
    if trial % 7 == 0:
        target = torch.zeros(n, dtype=torch.int64)
    if dtype == torch.bool:
        target = target > 0
    elif dtype.is_floating_point:
        target = target.to(dtype) * (0.5 if trial % 2 else 1.0)
    else:
        target = target.to(dtype)
    ids = [
        torch.arange(n) // width,
        torch.randint(0, max(1, n // width), (n,), generator=g),
        torch.zeros(n, dtype=torch.int64),
        (torch.arange(n) // width) * 3 + 5,
    ][trial % 4]
    flat = {"preds": preds, "target": target, "indexes": ids}
    if trial % 4 == 1:
        flat["weights"] = torch.rand(n, generator=g)
    forms = [[flat]]
    if trial % 6 == 0:
        q = max(1, n // width)
        length = n // q
        mask = torch.rand(q, length, generator=g) > 0.2
        grid = {"preds": preds[: q * length].reshape(q, length), "target": target[: q * length].reshape(q, length)}
        forms.append([{**grid, "mask": mask}])
    return forms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # undefined values (no relevant row) are compared too: nan bits
    before, after = load(args.before), load(args.after)
    g = torch.Generator().manual_seed(args.seed)
    checked = differences = 0
    for trial in range(args.trials):
        for batches in inputs(trial, g):
            for kind in ("ndcg", "mrr", "map", "recall", "rm"):
                for exponential in (False, True) if kind in ("ndcg", "rm") else (False,):
                    for k in (None, 1, 3, 10):
                        if kind == "recall" and k is None:
                            continue
                        a = value(build(before, kind, exponential, k), batches)
                        b = value(build(after, kind, exponential, k), batches)
                        checked += 1
                        if not torch.equal(a.view(torch.int64), b.view(torch.int64)):
                            differences += 1
                            print("DIFF", trial, kind, exponential, k, a, b)
    print(f"checked {checked} values, {differences} differences")


if __name__ == "__main__":
    main()
