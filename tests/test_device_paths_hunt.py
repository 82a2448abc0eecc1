"""Issue 14's device kernels on adversarial data and flows, against independent references.

Every test runs on three paths: ``cpu`` (CPU tensors, the CPU kernels), ``device`` (CPU tensors
through the device kernels, :func:`~torchmetrics_ext.utilities.device.force_device_path`) and
``cuda`` (marked ``cuda``, skipped without a GPU; ``benchmarks/gpu_check.sh`` runs them). The
references are written here: scikit-learn with ``sample_weight``, NumPy bin formulas, exact
``Fraction`` pair counts, plain-Python ranking loops, ``numpy.percentile``; never a value of the
code under test.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities.device import force_device_path

ROOT = Path(__file__).resolve().parents[1]
_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PATHS = ["cpu", "device", pytest.param("cuda", marks=[pytest.mark.cuda, _NO_CUDA])]


@contextlib.contextmanager
def on(path: str) -> Iterator[None]:
    """The kernels of ``path`` (the device path forced for ``device``); undefined-value warnings silenced."""
    with force_device_path(path == "device"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def dev(path: str) -> str:
    return "cuda" if path == "cuda" else "cpu"


def f32(x: np.ndarray) -> np.ndarray:
    """The float64 values of ``x`` rounded to float32 (exact-mode AUC keeps float32 scores and weights)."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def tensors(path: str, *arrays: np.ndarray | None, dtype: torch.dtype | None = None) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for i, a in enumerate(arrays):
        if a is None:
            out.append(None)
            continue
        t = torch.as_tensor(a)
        out.append((t.to(dtype) if dtype is not None and i == 0 else t).to(dev(path)))
    return out


def value(metric: tmx.AUC, path: str) -> np.ndarray:
    with on(path):
        result = metric.compute()
    assert result.device.type == dev(path)
    return result.double().cpu().numpy()


def sk(fn, y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    """scikit-learn's value, ``nan`` where the metric is undefined (as ours)."""
    kept = y if w is None else y[w > 0]
    if fn is roc_auc_score and len(np.unique(kept)) < 2:
        return math.nan
    if fn is average_precision_score and not (kept > 0).any():
        return math.nan
    return fn(y, p, sample_weight=w)


def assert_close(got: float | np.ndarray, want: float | np.ndarray, rtol: float = 1e-9, msg: str = "") -> None:
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=msg)


# ----------------------------------------------------------------------------- gpu_check.sh's scripts


def _gpu_check_scripts() -> list[str]:
    text = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    return sorted(set(re.findall(r"benchmarks/(\w+\.py)", text)))


_BARE = """
import os, runpy, sys
# as on a machine where this checkout is not installed (the GPU machines): no editable finder, no checkout on the path
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "torchmetrics_ext"))]
import importlib.util
if importlib.util.find_spec("torchmetrics_ext") is not None:
    sys.exit(77)  # installed for real: nothing to check here
home = list(sys.path)
for script in sys.argv[1:]:
    sys.argv, sys.path[:] = [script, "--help"], [os.path.dirname(script), *home]  # as `python script --help`
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchmetrics_ext", "tests")]:
        del sys.modules[name]  # each script as in a fresh process
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        print(f"{os.path.basename(script)}: exit {stop.code}")
    except BaseException as error:
        print(f"{os.path.basename(script)}: {type(error).__name__}: {error}")
"""


def test_gpu_check_scripts_import_this_checkout_without_an_install(tmp_path):
    """gpu_check.sh runs ``python benchmarks/X.py`` on a GPU machine where the package is not installed.

    ``count_device_launches.py`` imported ``torchmetrics_ext`` from the installed package only: its
    step (launches counted on the GPU) failed with ModuleNotFoundError there.
    """
    scripts = _gpu_check_scripts()
    assert {"bench_gpu.py", "bench_gpu_update.py", "count_device_launches.py"} <= set(scripts)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", _BARE, *(str(ROOT / "benchmarks" / script) for script in scripts)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    if out.returncode == 77:
        pytest.skip("torchmetrics_ext is installed as a regular package")
    assert out.returncode == 0, out.stderr[-2000:]
    for script in scripts:
        assert f"{script}: exit 0" in out.stdout, out.stdout[-2000:]
