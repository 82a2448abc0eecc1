"""Peak resident memory of each step of ``torchmetrics-ext evaluate``, in one process.

Run it with ``TRACE=module:qualname,...`` set and, after the script's path, the arguments that
``torchmetrics-ext`` would take (``evaluate FILE`` and its options), from a folder outside the checkout so
that ``PYTHONPATH`` picks the package traced. Each named function (``TRACE``, e.g.
``torchmetrics_ext.evaluate.by_segment:_pair_order`` or ``torchmetrics_ext.evaluate.runner:_Run._segments``)
is wrapped: the kernel's peak mark (``VmHWM``, which ``ru_maxrss`` reads) is reset on entry
(``/proc/self/clear_refs``, Linux) and read on return, so each line says the resident memory on entry
and on return and the peak inside the call. A nested call resets its caller's mark: read the caller's
peak as the larger of its own line and those of the calls inside it. Lines are printed to stderr at exit.
"""

from __future__ import annotations

import functools
import importlib
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

LOG: list[str] = []
DEPTH = [0]


def _status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` in MiB."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024
    return out


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _trace(module: str, qualname: str) -> None:
    owner: Any = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    function: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        before = _status()
        _reset_peak()
        DEPTH[0] += 1
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            DEPTH[0] -= 1
            after = _status()
            LOG.append(
                f"{'  ' * DEPTH[0]}{qualname}: rss {before['VmRSS']} -> {after['VmRSS']} MiB, "
                f"peak inside {after['VmHWM']} MiB ({time.perf_counter() - start:.2f} s)"
            )

    setattr(owner, name, traced)


def main() -> None:
    for item in filter(None, os.environ.get("TRACE", "").split(",")):
        module, qualname = item.split(":")
        _trace(module, qualname)
    from torchmetrics_ext.cli import main as cli

    sys.argv = ["torchmetrics-ext", *sys.argv[1:]]
    try:
        cli()
    finally:
        print(*LOG, sep="\n", file=sys.stderr)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"ru_maxrss since the last reset: {peak} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
