"""Import another checkout's ``torchmetrics_ext`` as ``tmx_baseline``, to run it beside this one in one process.

The benchmarks compare a change with its baseline round by round in the same process (so both see
the same machine load): ``load_checkout(Path("/tmp/base"), "aggregation")`` is the baseline's
``torchmetrics_ext.aggregation``. The copy lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def load_checkout(checkout: Path, module: str = "", name: str = "tmx_baseline") -> ModuleType:
    """``torchmetrics_ext[.module]`` of the checkout at ``checkout``, imported as ``name[.module]``.

    ``name`` (default ``tmx_baseline``) lets one process hold two baselines (``ab_module.py --also``).
    """
    root = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / name
    shutil.copytree(checkout / "torchmetrics_ext", package)
    for source in package.rglob("*.py"):
        source.write_text(source.read_text().replace("torchmetrics_ext", name))
    sys.path.insert(0, str(root))
    return importlib.import_module(name + (f".{module}" if module else ""))


def alternate(rounds: int, time_one: Callable[[ModuleType], float], new: ModuleType, old: ModuleType) -> str:
    """Time both checkouts ``rounds`` times, the order alternating; ``this / other / ratio`` of the best rounds.

    ``time_one(package)`` returns one round's µs with a checkout's package (``new``: this checkout, ``old``:
    the baseline). The text ends with the median of the per-round ratios (the machine is shared).
    """
    best = {"new": float("inf"), "old": float("inf")}
    ratios = []
    for r in range(rounds):
        order = [("new", new), ("old", old)] if r % 2 else [("old", old), ("new", new)]
        times = {side: time_one(pkg) for side, pkg in order}
        best = {side: min(best[side], times[side]) for side in best}
        ratios.append(times["new"] / times["old"])
    return (
        f"this {best['new']:7.1f} us  other {best['old']:7.1f} us  ratio {best['new'] / best['old']:.2f}x"
        f"  (median of round ratios {statistics.median(ratios):.2f}x)"
    )
