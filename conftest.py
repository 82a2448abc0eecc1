"""Doctests of optional integrations skip, naming the extra, where that extra is not installed.

The suite runs every docstring and Markdown example (``--doctest-modules --doctest-glob=*.md``).
An example that imports an optional dependency (``from transformers import EvalPrediction``)
would fail without it, as if the code were broken; it is skipped instead, with the module and
the extra to install in the reason (``-ra`` lists it), and runs wherever the extra is installed.
Only the optional dependencies below are skipped so: a missing module of our own still fails.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from _pytest.doctest import DoctestItem

# optional top-level module -> the extra that installs it (pyproject's optional-dependencies)
OPTIONAL = {"transformers": "huggingface", "accelerate": "huggingface"}
_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)


def missing_optional(sources: list[str]) -> list[str]:
    """The optional modules (of :data:`OPTIONAL`) that ``sources`` import and that are not installed."""
    named = dict.fromkeys(m for source in sources for m in _IMPORT.findall(source) if m in OPTIONAL)
    return [module for module in named if importlib.util.find_spec(module) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the doctests whose examples import an optional module that is not installed."""
    for item in items:
        if not isinstance(item, DoctestItem) or item.dtest is None:
            continue
        missing = missing_optional([example.source for example in item.dtest.examples])
        if missing:
            extras = sorted({OPTIONAL[m] for m in missing})
            install = " ".join(f"'torchmetrics-ext[{extra}]'" for extra in extras)
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}: pip install {install}"))
