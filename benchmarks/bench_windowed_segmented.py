"""Cost of a per-segment window: ``Windowed(Segmented(CTR(), S), 100_000).update`` against ``Segmented`` alone.

Run: ``python benchmarks/bench_windowed_segmented.py [--base /tmp/base]`` (``--steps 60`` for a quicker run;
``--rows 8 --window 1000 --segments 10 100`` for the fixed cost of small batches).
Batches of 4,096 rows, ``S`` in (100, 10,000, 1,000,000) segment ids drawn uniformly, a 100,000-sample
window (about 25 updates), one thread. The contenders (``Segmented`` alone, this checkout's window and,
with ``--base``, another checkout's: ``git archive <rev> torchmetrics_ext | tar -x -C /tmp/base``)
alternate step by step on the same batch; the table gives the median µs per ``update`` of each and the
peak bytes the window's store held over the run (its ring's slots, or its per-sample entries, block sums
and lifetime base; the lifetime and window metrics' own ``(T, S)`` states are not counted). A final check
asserts the windows computed the same values.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
from _baseline import load_checkout

import torchmetrics_ext as tmx


def held_bytes(store: Any) -> int:
    """Bytes of the distinct tensor storages an object's attributes hold (lists, deques, dicts of tensors too)."""
    seen: dict[int, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, (list, tuple, deque)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    if store is not None:
        walk(vars(store))
    return sum(seen.values())


def window_bytes(metric: Any) -> int:
    hist = metric.__dict__.get("_hist")
    return held_bytes(hist) + (0 if hist is not None else held_bytes(metric.__dict__["_ring"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout's root (holding torchmetrics_ext/)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--segments", type=int, nargs="+", default=[100, 10_000, 1_000_000])
    parser.add_argument("--rows", type=int, default=4096, help="rows per batch")
    parser.add_argument("--window", type=int, default=100_000, help="window_size, in samples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*undefined for segment")  # most segments of 1M see no row
    base = load_checkout(args.base) if args.base else None
    print(f"{'S':>9} | {'Segmented':>10} | {'Windowed':>10} | {'base Windowed':>13} | {'peak MB':>8} | {'base MB':>8}")
    for segments in args.segments:
        g = torch.Generator().manual_seed(0)
        batches = [
            (
                torch.rand(args.rows, generator=g),
                torch.randint(0, 2, (args.rows,), generator=g),
                torch.rand(args.rows, generator=g, dtype=torch.float64),
                torch.randint(0, segments, (args.rows,), generator=g),
            )
            for _ in range(8)
        ]
        contenders: dict[str, Any] = {
            "plain": tmx.Segmented(tmx.CTR(), num_segments=segments),
            "new": tmx.Windowed(tmx.Segmented(tmx.CTR(), num_segments=segments), args.window),
        }
        if base is not None:
            contenders["base"] = base.Windowed(base.Segmented(base.CTR(), num_segments=segments), args.window)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        peak = dict.fromkeys(contenders, 0)
        for step in range(args.steps):
            p, y, w, s = batches[step % len(batches)]
            for name, metric in contenders.items():
                start = time.perf_counter()
                metric.update(p, y, w, segments=s)
                times[name].append(time.perf_counter() - start)
                if name != "plain":
                    peak[name] = max(peak[name], window_bytes(metric))
        if base is not None:
            new, old = contenders["new"].compute(), contenders["base"].compute()
            for key in ("lifetime", "window"):
                torch.testing.assert_close(new[key], old[key], equal_nan=True, rtol=1e-12, atol=0)

        us = {name: f"{statistics.median(t) * 1e6:,.0f}" for name, t in times.items()}
        base_mb = f"{peak['base'] / 2**20:,.1f}" if base is not None else "-"
        print(
            f"{segments:>9,} | {us['plain']:>10} | {us['new']:>10} | {us.get('base', '-'):>13} | "
            f"{peak['new'] / 2**20:>8,.1f} | {base_mb:>8}"
        )


if __name__ == "__main__":
    main()
