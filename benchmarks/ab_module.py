"""RecMetricModule's step, this checkout against a baseline checkout, interleaved round by round.

Three sides in one process, taking turns (a change of machine load hits all of them alike): this
checkout's module with a window, the baseline's with the same window, and this checkout's without
one (what the windows cost). Same metrics and data as ``bench_module.py``. Prints the best and the
median round of each side (wall clock and ``time.thread_time``) and the median of the per-round
ratios ours / baseline.

    python benchmarks/ab_module.py /tmp/base            # batch 8192
    python benchmarks/ab_module.py /tmp/base --batch 8  # fixed cost only
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _baseline import load_checkout
from bench_module import build_ours, make_batches, time_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout (e.g. `git archive REV | tar -x -C DIR`)")
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--window", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_checkout(args.baseline)
    batches = make_batches(3, args.batch, 20, seed=0)
    sides = {
        "ours": build_ours(3, args.window).update,
        "baseline": build_ours(3, args.window, base).update,
        "ours, no window": build_ours(3, None).update,
    }
    for update in sides.values():
        time_steps(update, batches, 130, 0, 0)
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, update in sides.items():
            start = time.thread_time()
            wall[name] += time_steps(update, batches, 0, args.steps, 1)
            cpu[name].append((time.thread_time() - start) / args.steps)
    print(f"3 tasks x 6 metrics, batch {args.batch}, window {args.window}, 1 thread, us per step")
    for name in sides:
        print(
            f"{name:16s} wall best {min(wall[name]) * 1e6:7.0f} median {statistics.median(wall[name]) * 1e6:7.0f}"
            f" | thread best {min(cpu[name]) * 1e6:7.0f} median {statistics.median(cpu[name]) * 1e6:7.0f}"
        )
    for label, times in (("wall", wall), ("thread", cpu)):
        ratio = statistics.median(a / b for a, b in zip(times["ours"], times["baseline"]))
        print(f"ours / baseline ({label}): {ratio:.3f}x median of round ratios")


if __name__ == "__main__":
    main()
