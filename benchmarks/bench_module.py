"""RecMetricModule against TorchRec's RecMetricModule (fused tasks) and a hand-written floor.

3 tasks x {NE, calibration, CTR, MSE, accuracy, AUC} (binned AUC for us, TorchRec's windowed exact
AUC), batch 8192, a 1M-sample window, 1 thread. Three sides, each timed the same way (warm-up,
then ``--repeats`` rounds of ``--steps`` updates; the per-step time of each round):

* ``ours``: ``RecMetricModule.update`` (stacking, one validation, every compute group);
* ``floor``: a hand-written stacked float64 update of the same statistics (three NE sums,
  prediction/label/weight sums, squared and absolute errors, the confusion counts at 0.5, and a
  10k-bin logit histogram per task and class), with no validation and no metric objects;
* ``torchrec``: TorchRec 1.9.2's ``RecMetricModule`` in ``FUSED_TASKS_COMPUTATION`` mode, run by
  ``_torchrec_side.py`` in TorchRec's own interpreter (``--torchrec-python``, default
  ``$TORCHREC_PYTHON`` or the first of ``/work/venv-torchrec-parity/bin/python`` and
  ``/work/venv-torchrec/bin/python`` that exists; ``compare_torchrec.py`` says how to build it),
  since TorchRec pins its own torchmetrics and FBGEMM.

The sides take turns round by round (TorchRec's module waits in its own process between its
rounds), so a change of machine load hits all of them alike; the script prints the best round
of each side and the median over rounds of the per-round ratios. ``compute()`` is timed
single-process after all rounds: the median of five for ours (each after one more step) and of
three for TorchRec (each after one more round: TorchRec is faster when nothing was added since).

    python benchmarks/bench_module.py            # all three sides
    python benchmarks/bench_module.py --no-torchrec
    python benchmarks/bench_module.py --baseline /tmp/base   # also another checkout's module, in turn
    python benchmarks/bench_module.py --phases      # where ours spends a step (with and without window)
    python benchmarks/bench_module.py --compiled-floor   # also the floor compiled by torch.compile
    python benchmarks/bench_module.py --weights random   # weights other than 1 (every side weights)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from _baseline import load_checkout

import torchmetrics_ext as tmx

HERE = Path(__file__).resolve().parent
BINS = 10_000
# TorchRec's interpreter: the tests' rule (tests/helpers/torchrec_venv.py), the venv of compare_torchrec.py first
TORCHREC_PYTHON = next(
    (
        p
        for p in (
            os.environ.get("TORCHREC_PYTHON", ""),
            "/work/venv-torchrec-parity/bin/python",
            "/work/venv-torchrec/bin/python",
        )
        if p and Path(p).exists()
    ),
    "/work/venv-torchrec-parity/bin/python",
)


def make_batches(tasks: int, batch: int, count: int, seed: int, weights: str = "ones") -> list[dict[str, torch.Tensor]]:
    """``count`` steps of ``tasks`` columns each; weights all 1 (TorchRec's default) or uniform in [0, 2)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        step = {}
        for i in range(tasks):
            step[f"pred{i}"] = torch.rand(batch, generator=gen)
            step[f"label{i}"] = (torch.rand(batch, generator=gen) < 0.3).float()
            step[f"weight{i}"] = 2 * torch.rand(batch, generator=gen) if weights == "random" else torch.ones(batch)
        out.append(step)
    return out


def build_ours(tasks: int, window: int | None, package: ModuleType = tmx) -> tmx.RecMetricModule:
    """The module under test (``package``: this checkout's ``torchmetrics_ext`` or a baseline's)."""
    infos = [package.RecTaskInfo(f"task{i}", f"label{i}", f"pred{i}", f"weight{i}") for i in range(tasks)]
    metrics = {
        "ne": "ne",
        "calibration": "calibration",
        "ctr": "ctr",
        "mse": "mse",
        "accuracy": "accuracy",
        "auc": package.AUC(num_tasks=tasks, num_bins=BINS),
    }
    return package.RecMetricModule(infos, metrics, window_size=window, throughput=False)


class Floor:
    """The same statistics as ``ours``, hand-written over stacked float64 tensors."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.sums = torch.zeros(12, tasks, dtype=torch.float64)
        self.hist = torch.zeros(2 * tasks * BINS, dtype=torch.float64)
        self.offset = torch.arange(tasks).unsqueeze(1) * BINS

    def update(self, step: dict[str, torch.Tensor]) -> None:
        t = self.tasks
        p = torch.stack([step[f"pred{i}"] for i in range(t)])
        y = torch.stack([step[f"label{i}"] for i in range(t)])
        w = torch.stack([step[f"weight{i}"] for i in range(t)])
        sums, index, w = self.statistics(p, y, w)
        self.sums[:9] += sums
        self.hist.index_add_(0, index.reshape(-1), w.reshape(-1))

    def statistics(self, p: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-sample part: nine weighted sums per task and each sample's histogram index."""
        t = self.tasks
        p, y, w = p.to(torch.float64), y.to(torch.float64), w.to(torch.float64)
        pc = p.clamp(1e-12, 1 - 1e-12)
        log_p, log_q = torch.log(pc), torch.log1p(-pc)
        ce = torch.lerp(log_q, log_p, y).neg_()
        hard = (p >= 0.5).to(torch.float64)
        err = p - y
        stats = torch.stack(
            [ce, w.new_ones(()).expand_as(p), y, p, err * err, err.abs(), hard * y, hard, (1 - hard) * (1 - y)]
        )
        z = (log_p - log_q).add_(16.0).mul_(BINS / 32.0).clamp_(0, BINS - 1).to(torch.int64)
        return (stats * w).sum(-1), z + self.offset + (y > 0).to(torch.int64) * (t * BINS), w


class CompiledFloor(Floor):
    """The floor with its per-sample part compiled by ``torch.compile`` (inductor: fused C++ loops).

    Not a contender: it shows what fusing every per-sample pass into compiled kernels would buy
    (the first call compiles, ~40 s on this machine; needs a C++ compiler).
    """

    def __init__(self, tasks: int) -> None:
        super().__init__(tasks)
        self.statistics = torch.compile(self.statistics, dynamic=False)  # type: ignore[method-assign]


def phases(tasks: int, batch: int, window: int | None, steps: int = 200, weights: str = "ones") -> dict[str, float]:
    """Microseconds per step of each part of ``RecMetricModule.update`` (reading and stacking the
    columns, the one validation, each compute group's update with its window bookkeeping), and in total."""
    import torchmetrics_ext.module as module_code

    batches = make_batches(tasks, batch, 20, seed=0, weights=weights)
    module = build_ours(tasks, window)
    spent: dict[str, float] = {}

    def timed(owner: object, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, attr, run)

    timed(module, "_read", "read and stack columns")
    timed(module_code, "_check_values_bounds", "validation")
    for unit, *_ in module._updated_units():
        kind = type(getattr(unit, "lifetime", unit)).__name__
        timed(unit, "update_unwrapped" if hasattr(unit, "update_unwrapped") else "update", kind)
    time_steps(module.update, batches, 130, 0, 0)
    spent.clear()
    total = time_steps(module.update, batches, 0, steps, 1)[0]
    return {**{k: 1e6 * v / steps for k, v in spent.items()}, "total": 1e6 * total}


def time_steps(update, batches, warmup: int, steps: int, repeats: int) -> list[float]:
    for i in range(warmup):
        update(batches[i % len(batches)])
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            update(batches[i % len(batches)])
        rounds.append((time.perf_counter() - start) / steps)
    return rounds


class TorchRecSide:
    """TorchRec's module in its own interpreter, one round of steps per request (see ``_torchrec_side.py``)."""

    def __init__(self, python: str, cfg: dict) -> None:
        self.proc = subprocess.Popen(
            [python, str(HERE / "_torchrec_side.py"), json.dumps({**cfg, "serve": True})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"])),
        )

    def ask(self, what: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["compute_s" if what == "compute" else "update_s"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--window", type=int, default=1_000_000, help="0: lifetime values only")
    parser.add_argument("--warmup", type=int, default=130)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-torchrec", action="store_true")
    parser.add_argument("--torchrec-python", default=TORCHREC_PYTHON)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's module, run in turn with ours")
    parser.add_argument("--phases", action="store_true", help="only print where ours spends a step")
    parser.add_argument(
        "--weights",
        choices=["ones", "random"],
        default="ones",
        help="weight columns: all 1 (TorchRec's default; ours then skips the weight passes) or uniform in [0, 2)",
    )
    parser.add_argument(
        "--compiled-floor", action="store_true", help="also the floor with its per-sample part torch.compile'd"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.phases:
        windowed = phases(args.tasks, args.batch, args.window or None, weights=args.weights)
        plain = phases(args.tasks, args.batch, None, weights=args.weights)
        print(f"{'us per step':32s} {'window ' + str(args.window or None):>14s} {'no window':>10s}")
        for name in plain:
            print(f"{name:32s} {windowed.get(name, float('nan')):14.0f} {plain[name]:10.0f}")
        return 0
    batches = make_batches(args.tasks, args.batch, 20, seed=0, weights=args.weights)
    window = args.window or None
    rec = None
    if not args.no_torchrec:
        cfg = dict(
            threads=args.threads,
            tasks=args.tasks,
            batch=args.batch,
            window=args.window or 1_000_000,
            seed=0,
            weights=args.weights,
            distinct_batches=20,
            warmup=args.warmup,
            repeats=args.repeats,
            steps=args.steps,
            compute_repeats=1,
        )
        rec = TorchRecSide(args.torchrec_python, cfg)  # warms up while ours does

    module = build_ours(args.tasks, window)
    floor = Floor(args.tasks)
    sides: dict[str, Callable[[], float]] = {
        "ours": lambda: time_steps(module.update, batches, 0, args.steps, 1)[0],
        "floor": lambda: time_steps(floor.update, batches, 0, args.steps, 1)[0],
    }
    if rec is not None:
        sides["torchrec"] = lambda: rec.ask("round")
    updates = [module.update, floor.update]
    if args.compiled_floor:
        compiled = CompiledFloor(args.tasks)
        sides["compiled floor"] = lambda: time_steps(compiled.update, batches, 0, args.steps, 1)[0]
        updates.append(compiled.update)
    if args.baseline is not None:
        baseline = build_ours(args.tasks, window, load_checkout(args.baseline.resolve()))
        sides["baseline"] = lambda: time_steps(baseline.update, batches, 0, args.steps, 1)[0]
        updates.append(baseline.update)
    for update in updates:
        time_steps(update, batches, args.warmup, 0, 0)
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):  # the sides take turns, round by round, under the same load
        for name, run in sides.items():
            rounds[name].append(run())
    ours_computes = []
    for i in range(5):  # one compute is noisy on a shared machine: the median of five, each after a new step
        module.update(batches[i])
        start = time.perf_counter()
        module.compute()
        ours_computes.append(time.perf_counter() - start)
    ours_compute = statistics.median(ours_computes)
    rec_compute = None
    if rec is not None:  # TorchRec caches between computes without updates: each after one more round
        rec_compute = statistics.median(
            [rec.ask("compute"), *((rec.ask("round"), rec.ask("compute"))[1] for _ in range(2))]
        )
    if rec is not None:
        rec.close()

    def ms(values: list[float]) -> str:
        return f"{1e3 * min(values):.3f} ms (median {1e3 * statistics.median(values):.3f})"

    ours, low = rounds["ours"], rounds["floor"]
    print(
        f"{args.tasks} tasks x 6 metrics, batch {args.batch}, window {window}, {args.threads} thread(s), "
        f"weights {args.weights}"
    )
    print(f"ours   update/step: {ms(ours)}   compute: {1e3 * ours_compute:.1f} ms")
    print(f"floor  update/step: {ms(low)}")
    print(
        f"ours / floor: {min(ours) / min(low):.2f}x (best rounds), "
        f"{_median_ratio(ours, low):.2f}x (median of round ratios)"
    )
    if args.baseline is not None:
        before = rounds["baseline"]
        print(f"baseline update/step: {ms(before)}")
        print(
            f"ours / baseline: {min(ours) / min(before):.2f}x (best rounds), "
            f"{_median_ratio(ours, before):.2f}x (median of round ratios)"
        )
    if args.compiled_floor:
        fused = rounds["compiled floor"]
        print(f"compiled floor update/step: {ms(fused)}")
        print(f"compiled floor / floor: {min(fused) / min(low):.2f}x (best rounds)")
        if rec is not None:
            print(
                f"compiled floor / torchrec: {min(fused) / min(rounds['torchrec']):.2f}x (best rounds), "
                f"{_median_ratio(fused, rounds['torchrec']):.2f}x (median of round ratios)"
            )
    if rec_compute is not None:
        theirs = rounds["torchrec"]
        print(f"torchrec update/step: {ms(theirs)}   compute: {1e3 * rec_compute:.1f} ms")
        print(
            f"ours / torchrec: {min(ours) / min(theirs):.2f}x update (best rounds), "
            f"{_median_ratio(ours, theirs):.2f}x (median of round ratios), {ours_compute / rec_compute:.3f}x compute"
        )


def _median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a / b`` for rounds run back to back (robust to load that drifts)."""
    return statistics.median(x / y for x, y in zip(a, b))


if __name__ == "__main__":
    sys.exit(main())
