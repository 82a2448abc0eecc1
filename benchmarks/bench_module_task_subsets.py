"""RecMetricModule with ``metric_tasks`` (a regression head beside binary heads) against two modules.

A multi-task recommender's training step: three binary heads (click, like, share: probabilities, or
logits with ``--logits``) and a regression head (watch_time, in seconds), a weight column per task
(uniform in [0, 2), or all 1 with ``--weights ones``). NE, AUC, AUPRC (both binned, 10k bins; exact
with ``--auc exact``), calibration and CTR read the binary tasks; MSE, MAE and R² read watch_time.
Contenders, in one process, fed the same pre-generated steps:

* ``one module``: one ``RecMetricModule`` of the four tasks with ``metric_tasks`` (the feature);
* ``two modules``: the workaround before it, a module of the binary tasks and one of the regression
  task, both updated with the same dict (and both computed);
* ``baseline`` (``--baseline DIR``): another checkout's one module, to measure a change of ours;
* ``torchrec``: TorchRec 1.9.2's ``RecMetricModule`` (``rec_task_indices``, fused tasks, its exact
  windowed AUC and AUPRC; a window always: TorchRec has no lifetime-only mode) run by
  ``_torchrec_task_subsets_side.py`` in its own interpreter and process on the same saved steps.
  A separate-process timing (its rounds take turns with ours), probabilities only.

For each case (batch ``--batch``, window ``--windows``: 0 is none) every contender is warmed up,
then ``--rounds`` rounds of ``--steps`` steps: at each step every in-process contender updates with
the same batch, one after another, the order turning at each step (so each goes first as often),
each update timed on its own. A round's figure is a contender's median microseconds per update; the
script prints the median over rounds, the best round and the median (and range) of the per-round
ratios to ``two modules``. ``compute()`` is timed after each round, three times per contender (each
after one more step of its own: no cached values; the order turning), medians over rounds of each
round's median. Before timing, the contenders' ``compute()`` values are checked
to agree (they do the same work). ``--launches``: ATen operators and host reads of one update on the
device path forced on CPU tensors (``count_device_launches.py``'s counter), and the operators of the
``compute()`` after it, per contender.

    python benchmarks/bench_module_task_subsets.py                  # batch 8192 and 256, window 1M and none
    python benchmarks/bench_module_task_subsets.py --logits --no-torchrec
    python benchmarks/bench_module_task_subsets.py --baseline /tmp/base --no-torchrec
    python benchmarks/bench_module_task_subsets.py --launches --batch 8192
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from bench_module import TORCHREC_PYTHON

import torchmetrics_ext as tmx

HERE = Path(__file__).resolve().parent
BINARY = ("click", "like", "share")
REGRESSION = "watch_time"
BINARY_METRICS = ("ne", "auc", "auprc", "calibration", "ctr")
REGRESSION_METRICS = ("mse", "mae", "r_squared")
BINS = 10_000


def make_steps(batch: int, count: int, seed: int, logits: bool, weights: str) -> list[dict[str, torch.Tensor]]:
    """``count`` steps: per binary head scores (Beta-like, CTRs 10%, 4%, 1%), 0/1 labels; watch time in seconds."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        step: dict[str, torch.Tensor] = {}
        for task, rate in zip(BINARY, (0.10, 0.04, 0.01)):
            p = torch.rand(batch, generator=gen).pow(4).clamp(1e-4, 1 - 1e-4)  # skewed towards 0, as CTRs are
            step[f"{task}_pred"] = torch.logit(p) if logits else p
            step[f"{task}_label"] = (torch.rand(batch, generator=gen) < rate).float()
        seconds = -60.0 * torch.log(torch.rand(batch, generator=gen).clamp_min(1e-12))  # exponential, mean 60 s
        step[f"{REGRESSION}_label"] = seconds.round()
        step[f"{REGRESSION}_pred"] = seconds + 20.0 * torch.randn(batch, generator=gen)
        for task in (*BINARY, REGRESSION):
            step[f"{task}_w"] = 2 * torch.rand(batch, generator=gen) if weights == "random" else torch.ones(batch)
        out.append(step)
    return out


def _infos(package: ModuleType, names: tuple[str, ...]) -> list:
    return [package.RecTaskInfo(t, f"{t}_label", f"{t}_pred", f"{t}_w") for t in names]


def _binary_metrics(logits: bool, auc: str) -> dict[str, dict]:
    extra = {"from_logits": True} if logits else {}
    binned = {"num_bins": BINS} if auc == "binned" else {}
    return {name: {"metric": name, **extra, **(binned if name in ("auc", "auprc") else {})} for name in BINARY_METRICS}


def build_one(package: ModuleType, window: int | None, logits: bool, auc: str):
    """One module of the four tasks; ``metric_tasks`` gives the binary metrics the heads and the others watch_time."""
    metrics: dict = {**_binary_metrics(logits, auc), **{name: name for name in REGRESSION_METRICS}}
    subsets = {**{n: list(BINARY) for n in BINARY_METRICS}, **{n: [REGRESSION] for n in REGRESSION_METRICS}}
    return package.RecMetricModule(
        _infos(package, (*BINARY, REGRESSION)), metrics, metric_tasks=subsets, window_size=window, throughput=False
    )


def build_two(window: int | None, logits: bool, auc: str) -> tuple[tmx.RecMetricModule, tmx.RecMetricModule]:
    """The workaround before ``metric_tasks``: a module of the binary tasks and one of the regression task."""
    binary = tmx.RecMetricModule(
        _infos(tmx, BINARY), _binary_metrics(logits, auc), window_size=window, throughput=False
    )
    regression = tmx.RecMetricModule(
        _infos(tmx, (REGRESSION,)), list(REGRESSION_METRICS), window_size=window, throughput=False
    )
    return binary, regression


class Pair:
    """The two modules as one contender: ``update`` and ``compute`` call both."""

    def __init__(self, modules: tuple[tmx.RecMetricModule, tmx.RecMetricModule]) -> None:
        self.modules = modules

    def update(self, step: dict[str, torch.Tensor]) -> None:
        for module in self.modules:
            module.update(step)

    def compute(self) -> dict[str, torch.Tensor]:
        return {key: value for module in self.modules for key, value in module.compute().items()}


class TorchRecSide:
    """TorchRec's module in its own interpreter: a round of timed updates per request."""

    def __init__(self, python: str, cfg: dict) -> None:
        self.proc = subprocess.Popen(
            [python, str(HERE / "_torchrec_task_subsets_side.py"), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"])),
        )

    def ask(self, what: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if what:
            self.proc.stdin.write(what + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("TorchRec's side ended early (see its error above)")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def check_same(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    """The contenders do the same work: the same keys, values equal to 1e-9 relative."""
    if set(one) != set(two):
        raise AssertionError(f"keys differ: {sorted(set(one) ^ set(two))}")
    for key in one:
        a, b = one[key].double(), two[key].double()
        if not torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True):
            raise AssertionError(f"{key}: one module {a.item()!r}, two modules {b.item()!r}")


def launches(
    contenders: dict[str, tuple[Callable, Callable, ModuleType]], steps: list[dict[str, torch.Tensor]]
) -> dict[str, tuple[int, int, int]]:
    """ATen operators that launch a kernel, and host reads, of one update per contender on the forced device path;
    and the operators of the ``compute()`` after it (which reads its values back: its reads are not counted).

    ``contenders``: ``{name: (update, compute, the package it comes from)}``: each package's own switch forces
    its path.
    """
    from count_device_launches import NO_KERNEL, Counted

    def launched(counted: Counted) -> int:
        return sum(k for op, k in counted.ops.items() if op not in NO_KERNEL and op != "_local_scalar_dense")

    out = {}
    for name, (update, compute, package) in contenders.items():
        # fresh tensors for each contender: the device path remembers the bounds of the tensors it checked, and
        # would not reduce again the columns a contender counted before had checked
        first, second = ({key: value.clone() for key, value in step.items()} for step in steps[:2])
        with package.utilities.device.force_device_path(True):
            update(first)  # one untimed update on the device path first
            with Counted() as counted:
                update(second)
            with Counted() as computed:
                compute()
        out[name] = (launched(counted), counted.reads, launched(computed))
    return out


def run_case(args: argparse.Namespace, batch: int, window: int | None) -> None:
    steps = make_steps(batch, 20, seed=0, logits=args.logits, weights=args.weights)
    one = build_one(tmx, window, args.logits, args.auc)
    two = Pair(build_two(window, args.logits, args.auc))
    contenders: dict[str, tuple[Callable, Callable]] = {
        "one module": (one.update, one.compute),
        "two modules": (two.update, two.compute),
    }
    packages = {"one module": tmx, "two modules": tmx}
    if args.baseline is not None:
        from _baseline import load_checkout

        packages["baseline"] = load_checkout(args.baseline.resolve())
        base = build_one(packages["baseline"], window, args.logits, args.auc)
        contenders["baseline"] = (base.update, base.compute)
    label = (
        f"batch {batch}, window {window}, {'logits' if args.logits else 'probabilities'}, weights {args.weights}, "
        f"{args.auc} AUC/AUPRC, {args.threads} thread(s)"
    )
    if args.launches:
        counts = launches({name: (*pair, packages[name]) for name, pair in contenders.items()}, steps)
        print(f"{label}: operators per update on the forced device path (+ host reads), per compute after it")
        for name, (ops, reads, computed) in counts.items():
            print(f"  {name:12s} {ops:5d} (+{reads} reads) {computed:6d}")
        return
    rec = None
    if args.torchrec and not args.logits:
        steps_file = Path(tempfile.mkdtemp(prefix="bench_subsets_")) / "steps.pt"
        torch.save(steps, steps_file)
        cfg = dict(
            threads=args.threads,
            tasks=[*BINARY, REGRESSION],
            window=window or args.torchrec_window,
            steps_file=str(steps_file),
            warmup=args.warmup,
            steps=args.steps,
        )
        rec = TorchRecSide(args.torchrec_python, cfg)  # warms up while ours does
    for _, (update, _compute) in contenders.items():
        for i in range(args.warmup):
            update(steps[i % len(steps)])
    values = {name: compute() for name, (_, compute) in contenders.items()}
    for name in contenders:
        if name != "two modules":
            check_same(values[name], values["two modules"])
    if rec is not None:
        rec.ask("")  # its warm-up is done
    names = list(contenders)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    computes: dict[str, list[float]] = {name: [] for name in names}
    rec_rounds: list[float] = []
    rec_computes: list[float] = []
    for _ in range(args.rounds):
        times: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.steps):
            step = steps[i % len(steps)]
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                update = contenders[name][0]
                start = time.perf_counter()
                update(step)
                times[name].append(time.perf_counter() - start)
        for name in names:
            rounds[name].append(1e6 * statistics.median(times[name]))
        # computes after the round: each contender's in turn, each after one more step of its own (no cached
        # values), the order turning; a round's figure is the median of three
        spent: dict[str, list[float]] = {name: [] for name in names}
        for j in range(3):
            for name in names if j % 2 == 0 else names[::-1]:
                contenders[name][0](steps[j])
                start = time.perf_counter()
                contenders[name][1]()
                spent[name].append(time.perf_counter() - start)
        for name in names:
            computes[name].append(1e6 * statistics.median(spent[name]))
        if rec is not None:
            rec_rounds.append(rec.ask("round")["update_us"])
            rec_computes.append(rec.ask("compute")["compute_us"])
    if rec is not None:
        rec.close()
    print(label)
    print(f"  {'us':12s} {'update median':>13s} {'best round':>10s} {'/ two modules':>22s} {'compute':>9s}")
    for name in names:
        ratios = [a / b for a, b in zip(rounds[name], rounds["two modules"])]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(
            f"  {name:12s} {statistics.median(rounds[name]):13.0f} {min(rounds[name]):10.0f} {spread:>22s}"
            f" {statistics.median(computes[name]):9.0f}"
        )
        if name == "one module":
            c = [a / b for a, b in zip(computes[name], computes["two modules"])]
            print(f"  {'':12s} compute / two modules: {statistics.median(c):.2f}x ({min(c):.2f}-{max(c):.2f})")
    if "baseline" in names:  # this checkout's one module against the other's, round by round
        u = [a / b for a, b in zip(rounds["one module"], rounds["baseline"])]
        c = [a / b for a, b in zip(computes["one module"], computes["baseline"])]
        print(
            f"  one module / baseline: update {statistics.median(u):.2f}x ({min(u):.2f}-{max(u):.2f}), "
            f"compute {statistics.median(c):.2f}x ({min(c):.2f}-{max(c):.2f})"
        )
    if rec is not None:
        print(
            f"  torchrec (own process, window {window or args.torchrec_window}, exact AUC/AUPRC): update median "
            f"{statistics.median(rec_rounds):.0f} best round {min(rec_rounds):.0f}, "
            f"compute {statistics.median(rec_computes):.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8192, 256])
    parser.add_argument("--windows", type=int, nargs="+", default=[1_000_000, 0], help="window sizes; 0: none")
    parser.add_argument("--warmup", type=int, default=130)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--logits", action="store_true", help="the binary heads give logits (from_logits=True)")
    parser.add_argument("--weights", choices=["random", "ones"], default="random")
    parser.add_argument("--auc", choices=["binned", "exact"], default="binned", help="our AUC and AUPRC")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's one module, in turn")
    parser.add_argument("--launches", action="store_true", help="only count operators per update (device path)")
    parser.add_argument("--no-torchrec", dest="torchrec", action="store_false")
    parser.add_argument("--torchrec-python", default=TORCHREC_PYTHON)
    parser.add_argument(
        "--torchrec-window", type=int, default=1_000_000, help="TorchRec's window in the cases without ours"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.torchrec and not Path(args.torchrec_python).exists():
        print(f"no TorchRec interpreter at {args.torchrec_python}: TorchRec left out")
        args.torchrec = False
    for batch in args.batch:
        for window in args.windows:
            run_case(args, batch, window or None)


if __name__ == "__main__":
    main()
