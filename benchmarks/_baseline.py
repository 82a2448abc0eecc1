"""Import another checkout's ``torchmetrics_ext`` as ``tmx_baseline``, to run it beside this one in one process.

The benchmarks compare a change with its baseline round by round in the same process (so both see
the same machine load): ``load_checkout(Path("/tmp/base"), "aggregation")`` is the baseline's
``torchmetrics_ext.aggregation``. The copy lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def load_checkout(checkout: Path, module: str = "") -> ModuleType:
    """``torchmetrics_ext[.module]`` of the checkout at ``checkout``, imported as ``tmx_baseline[.module]``."""
    root = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / "tmx_baseline"
    shutil.copytree(checkout / "torchmetrics_ext", package)
    for source in package.rglob("*.py"):
        source.write_text(source.read_text().replace("torchmetrics_ext", "tmx_baseline"))
    sys.path.insert(0, str(root))
    return importlib.import_module("tmx_baseline" + (f".{module}" if module else ""))
