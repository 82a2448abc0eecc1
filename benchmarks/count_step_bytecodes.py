"""Python bytecodes (and torch operators) per ``RecMetricModule`` step: this checkout against another, by function.

A step at batch 8 is all fixed cost (Python and ATen dispatch), and on a shared machine its timings
swing by more than the few per cent a feature adds. The number of bytecodes each function runs
(``sys.settrace`` with ``f_trace_opcodes``) and the number of ``aten::`` operators (``torch.profiler``)
do not swing: they say where a step grew, to be confirmed by ``ab_module.py`` timings. Same modules and
data as ``ab_module.py`` (``--metrics``, ``--ndcg``, ``--window``; 300 warm-up steps, then 20 counted).

    python benchmarks/count_step_bytecodes.py /tmp/base --metrics profile --ndcg --window 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from _baseline import load_checkout
from ab_module import build
from bench_module import make_batches
from torch.profiler import ProfilerActivity, profile


def count(
    module: Any, batches: list[dict[str, torch.Tensor]], steps: int
) -> tuple[dict[tuple[str, str], float], float]:
    """Bytecodes per step by ``(file, function)``, and ``aten::`` operators per step (every nesting level)."""
    counts: dict[tuple[str, str], int] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            key = (Path(frame.f_code.co_filename).name, frame.f_code.co_name)
            counts[key] = counts.get(key, 0) + 1
        return tracer

    sys.settrace(tracer)
    for i in range(steps):
        module.update(batches[i % len(batches)])
    sys.settrace(None)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            module.update(batches[i % len(batches)])
    ops = sum(1 for event in prof.events() if event.name.startswith("aten::"))
    return {key: n / steps for key, n in counts.items()}, ops / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout (e.g. `git archive REV | tar -x -C DIR`)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=1_000_000, help="0: no window")
    parser.add_argument("--metrics", choices=["bench", "profile"], default="bench")
    parser.add_argument("--ndcg", action="store_true")
    parser.add_argument("--top", type=int, default=25, help="functions listed, largest difference first")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import torchmetrics_ext as tmx

    batches = make_batches(3, args.batch, 20, seed=0)
    if args.ndcg:
        for step in batches:
            step["session"] = torch.arange(args.batch) // 4
    results = {}
    for name, package in (("ours", tmx), ("baseline", load_checkout(args.baseline))):
        module = build(3, args.window or None, package, args.metrics, args.ndcg)
        for i in range(300):
            module.update(batches[i % len(batches)])
        results[name] = count(module, batches, 20)
    (ours, ours_ops), (base, base_ops) = results["ours"], results["baseline"]
    print(
        f"per step: bytecodes ours {sum(ours.values()):.0f} baseline {sum(base.values()):.0f}; "
        f"aten ops ours {ours_ops:.0f} baseline {base_ops:.0f}"
    )
    keys = sorted(set(ours) | set(base), key=lambda k: -abs(ours.get(k, 0) - base.get(k, 0)))
    for key in keys[: args.top]:
        diff = ours.get(key, 0) - base.get(key, 0)
        if abs(diff) >= 1:
            print(f"  {diff:+7.0f}  ours {ours.get(key, 0):6.0f}  baseline {base.get(key, 0):6.0f}  {key[0]}:{key[1]}")


if __name__ == "__main__":
    main()
