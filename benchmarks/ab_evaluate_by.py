"""Wall and CPU seconds of ``torchmetrics-ext evaluate --by`` for two checkouts, run in turn on one file.

Run: ``python benchmarks/ab_evaluate_by.py FILE BASE AFTER --rounds 4 [-- evaluate options]``, with
``BASE`` and ``AFTER`` package checkouts (``git worktree add --detach /tmp/base COMMIT``). Each round
runs both (the order turned round by round), each in a fresh process started in ``FILE``'s folder
with ``PYTHONPATH`` naming its checkout; CPU time is the child's user + system time. Prints each
run and the per-round ratios AFTER / BASE with their median. The default options are the GAUC case
of ``bench_evaluate_by_memory.py --country-per-user`` (``--metrics gauc --user user --by country``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

CHILD = "import sys\nfrom torchmetrics_ext.cli import main\nsys.argv = ['torchmetrics-ext', *sys.argv[1:]]\nmain()\n"
DEFAULT = ["--task", "click=p:y", "--metrics", "gauc", "--user", "user", "--by", "country", "--no-progress"]


def _run(path: str, checkout: str, options: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CHILD, "evaluate", path, *options],
        check=True,
        capture_output=True,
        cwd=os.path.dirname(os.path.abspath(path)),
        env={**os.environ, "PYTHONPATH": checkout},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("base")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("options", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    sides = {"base": args.base, "after": args.after}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            times[name].append(_run(args.file, sides[name], args.options))
            wall, cpu = times[name][-1]
            print(f"round {r} {name}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
    for i, label in enumerate(("wall", "cpu")):
        ratios = [a[i] / b[i] for a, b in zip(times["after"], times["base"])]
        print(
            f"{label}: base median {statistics.median(t[i] for t in times['base']):.1f} s, after median "
            f"{statistics.median(t[i] for t in times['after']):.1f} s, after / base per round "
            f"{[round(x, 3) for x in ratios]}, median {statistics.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
