"""Doctests of optional extras skip, naming the extra, where that extra is not installed.

The suite runs every docstring and Markdown example (``--doctest-modules --doctest-glob=*.md``).
An example that needs an optional dependency (``from transformers import EvalPrediction``,
``metric.plot()``), or a module that imports one (``integrations/lightning.py``), would fail or
stop the collection without it, as if the code were broken; it is skipped instead, with the
module and the extra to install in the reason (``-ra`` lists it), and runs wherever the extra is
installed. Only the optional dependencies below, and only when they are missing, are skipped so:
any other missing module, ours included, still fails.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import torch
from _pytest.doctest import DoctestItem, DoctestModule

# optional top-level module -> the extra that installs it (pyproject's optional-dependencies)
OPTIONAL = {
    "accelerate": "huggingface",
    "lightning": "lightning",
    "matplotlib": "plot",
    "pandas": "evaluate",
    "pyarrow": "evaluate",
    "transformers": "huggingface",
}
_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)
_QUOTED = re.compile(r"[`'\"]([A-Za-z_][\w.]*)[`'\"]")  # a module an error names: 'lightning.pytorch'


def _missing(modules: Iterable[str]) -> list[str]:
    """The optional modules among ``modules`` that are not installed (in order, once each)."""
    named = dict.fromkeys(top for top in (m.split(".")[0] for m in modules) if top in OPTIONAL)
    return [module for module in named if importlib.util.find_spec(module) is None]


def missing_optional(sources: list[str]) -> list[str]:
    """The optional modules that ``sources`` (example code) import and that are not installed."""
    return _missing(m for source in sources for m in _IMPORT.findall(source))


def missing_in_error(text: str) -> list[str]:
    """The missing optional modules an import error's text names (``No module named 'x'``, ``expects `x```)."""
    return _missing(_QUOTED.findall(text))


def _reason(missing: list[str]) -> str:
    install = " ".join(f"'torchmetrics-ext[{extra}]'" for extra in sorted({OPTIONAL[m] for m in missing}))
    return f"needs {', '.join(missing)}: pip install {install}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the doctests whose examples import an optional module that is not installed."""
    for item in items:
        if isinstance(item, DoctestItem) and item.dtest is not None:
            missing = missing_optional([example.source for example in item.dtest.examples])
            if missing:
                item.add_marker(pytest.mark.skip(reason=_reason(missing)))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """A module whose import needs a missing optional module has its doctests skipped, not a collection error."""
    report: pytest.CollectReport = yield
    if report.failed and isinstance(collector, DoctestModule):
        missing = missing_in_error(str(report.longrepr))
        if missing:
            longrepr = (str(collector.path), None, f"Skipped: {_reason(missing)}")
            return pytest.CollectReport(report.nodeid, "skipped", longrepr, [], sections=report.sections)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A doctest that fails because an optional module is missing (``metric.plot()``) is skipped."""
    report: pytest.TestReport = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if report.failed and isinstance(item, DoctestItem) and isinstance(error, doctest.UnexpectedException):
        names: list[str] = []
        cause: BaseException | None = error.exc_info[1]
        while isinstance(cause, ModuleNotFoundError):  # its module, or the one it was raised from
            names += [cause.name or "", *_QUOTED.findall(str(cause))]
            cause = cause.__cause__ or cause.__context__
        missing = _missing(names)
        if missing:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), None, f"Skipped: {_reason(missing)}")
    return report


# ----------------------------------------------------------------------------- process-wide state


def _process_state() -> dict[str, Any]:
    """Process-wide torch settings a test must leave as it found them (each read is cheap)."""
    try:
        torch.as_tensor([torch.zeros(()), torch.zeros(())])  # the list-of-0-dim-tensors conversion
        conversion = "works"
    except TypeError as error:  # e.g. Tensor.__getitem__ patched on the class, even undone
        conversion = f"raises {error}"
    return {
        "torch.as_tensor([0-dim tensors])": conversion,
        "default dtype": torch.get_default_dtype(),
        "default device": torch.empty(0).device,
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        # (private counters: read where this torch has them, 0 elsewhere)
        "torch function modes": getattr(torch._C, "_len_torch_function_stack", int)(),
        "torch dispatch modes": getattr(torch._C, "_len_torch_dispatch_stack", int)(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "anomaly detection": torch.is_anomaly_enabled(),
        # the package's own process-wide flag (`force_device_path`), once a test has imported it
        "forced device path": getattr(sys.modules.get("torchmetrics_ext.utilities.device"), "_FORCED", [False])[0],
    }


_CLEAN_STATE = _process_state()


@pytest.fixture(autouse=True)
def _leaves_process_state_alone() -> Iterator[None]:
    """A test (or doctest) that changes process-wide torch state fails here.

    Not the unrelated test run after it in the same worker: CI once failed that way
    (``Tensor.__getitem__`` patched on the class and restored leaves CPython's sequence slot, and
    ``torch.as_tensor`` of a list of 0-dim tensors raised "len() of a 0-d tensor" in a later file).
    """
    yield
    now = _process_state()
    changed = {name: (_CLEAN_STATE[name], now[name]) for name in now if now[name] != _CLEAN_STATE[name]}
    if changed:
        pytest.fail(f"the test left process-wide torch state changed (before, after): {changed}", pytrace=False)
