"""RecMetricModule's step, this checkout against a baseline checkout, interleaved round by round.

Three sides in one process, taking turns (a change of machine load hits all of them alike): this
checkout's module with a window, the baseline's with the same window, and this checkout's without
one (what the windows cost). Same metrics and data as ``bench_module.py``. Prints the best and the
median round of each side (wall clock and ``time.thread_time``) and the median of the per-round
ratios ours / baseline.

    python benchmarks/ab_module.py /tmp/base            # batch 8192
    python benchmarks/ab_module.py /tmp/base --batch 8  # fixed cost only
    python benchmarks/ab_module.py /tmp/base --batch 8 --window 1000 --metrics profile --ndcg
        # the per-step profile's set (NE, calibration, CTR, exact and binned AUC) and `ndcg@10`

``--metrics profile`` is the set the twenty-eighth session profiled; ``--ndcg`` adds ``ndcg@10``
(one windowed ranking copy per task, fed a session-id column of 4 rows per session shared by the
tasks), and the other sides are then each checkout's module without it (what the ranking copies
add to a step, printed for both) instead of the one without a window.

The side timed first in a round reads a few per cent slower on a small machine: ``--rotate`` turns the
order round by round. ``--also DIR`` adds a second baseline checkout (its module only, same window and
metrics), printed as ``ours / also`` too:

    python benchmarks/ab_module.py /tmp/base --also /tmp/base2 --rotate --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import ModuleType

import torch
from _baseline import load_checkout
from bench_module import BINS, build_ours, make_batches, time_steps


def build(tasks: int, window: int | None, package: ModuleType, metrics: str, ndcg: bool):
    """The module of ``metrics`` (``bench``: ``bench_module``'s set; ``profile``: the profile's), with ``ndcg@10``."""
    if metrics == "bench" and not ndcg:
        return build_ours(tasks, window, package)
    infos = [
        package.RecTaskInfo(
            f"task{i}", f"label{i}", f"pred{i}", f"weight{i}", session_id_name="session" if ndcg else None
        )
        for i in range(tasks)
    ]
    if metrics == "bench":
        chosen = {name: name for name in ("ne", "calibration", "ctr", "mse", "accuracy")}
        chosen["auc"] = package.AUC(num_tasks=tasks, num_bins=BINS)
    else:
        chosen = {name: name for name in ("ne", "calibration", "ctr")}
        chosen["auc"] = package.AUC(num_tasks=tasks)
        chosen["binned_auc"] = package.AUC(num_tasks=tasks, num_bins=BINS)
    if ndcg:
        chosen["ndcg@10"] = "ndcg@10"
    return package.RecMetricModule(infos, chosen, window_size=window, throughput=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout (e.g. `git archive REV | tar -x -C DIR`)")
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--window", type=int, default=1_000_000, help="0: no window on any side")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--metrics", choices=["bench", "profile"], default="bench", help="the metric set (see above)")
    parser.add_argument("--ndcg", action="store_true", help="add ndcg@10 (per-task windowed ranking copies)")
    parser.add_argument("--also", type=Path, default=None, help="a second baseline checkout")
    parser.add_argument("--rotate", action="store_true", help="turn the order of the sides round by round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    window = args.window or None
    base = load_checkout(args.baseline)
    also = load_checkout(args.also, name="tmx_also") if args.also is not None else None
    batches = make_batches(3, args.batch, 20, seed=0)
    if args.ndcg:
        for step in batches:
            step["session"] = torch.arange(args.batch) // 4
    import torchmetrics_ext as tmx

    sides = {
        "ours": build(3, window, tmx, args.metrics, args.ndcg).update,
        "baseline": build(3, window, base, args.metrics, args.ndcg).update,
    }
    if also is not None:
        sides["also"] = build(3, window, also, args.metrics, args.ndcg).update
    if args.ndcg:
        sides["ours, no ndcg"] = build(3, window, tmx, args.metrics, False).update
        sides["baseline, no ndcg"] = build(3, window, base, args.metrics, False).update
    else:
        sides["ours, no window"] = build(3, None, tmx, args.metrics, False).update
    for update in sides.values():
        time_steps(update, batches, 130, 0, 0)
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides.items())
    for r in range(args.rounds):
        turn = r % len(order) if args.rotate else 0
        for name, update in order[turn:] + order[:turn]:
            start = time.thread_time()
            wall[name] += time_steps(update, batches, 0, args.steps, 1)
            cpu[name].append((time.thread_time() - start) / args.steps)
    metrics = args.metrics + (" + ndcg@10" if args.ndcg else "")
    print(f"3 tasks, metrics {metrics}, batch {args.batch}, window {args.window}, 1 thread, us per step")
    for name in sides:
        print(
            f"{name:18s} wall best {min(wall[name]) * 1e6:7.0f} median {statistics.median(wall[name]) * 1e6:7.0f}"
            f" | thread best {min(cpu[name]) * 1e6:7.0f} median {statistics.median(cpu[name]) * 1e6:7.0f}"
        )
    for other in ("baseline", "also") if also is not None else ("baseline",):
        for label, times in (("wall", wall), ("thread", cpu)):
            ratio = statistics.median(a / b for a, b in zip(times["ours"], times[other]))
            print(f"ours / {other} ({label}): {ratio:.3f}x median of round ratios")
    if args.ndcg:  # what ndcg@10 adds to a step: each side less the module without it (best rounds, medians)
        for name in ("ours", "baseline"):
            added = [
                f"{label} {(pick(times[name]) - pick(times[name + ', no ndcg'])) * 1e6:.0f}"
                for label, times, pick in (
                    ("wall best", wall, min),
                    ("wall median", wall, statistics.median),
                    ("thread best", cpu, min),
                    ("thread median", cpu, statistics.median),
                )
            ]
            print(f"ndcg@10 adds ({name}), us: {', '.join(added)}")


if __name__ == "__main__":
    main()
