"""The documentation site builds with every warning treated as an error (mkdocs --strict), and its
API reference documents every public name of the package."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# every module whose ``__all__`` is public API; a new public module goes here (and in docs/api/)
PUBLIC_MODULES = [
    "torchmetrics_ext",
    "torchmetrics_ext.functional",
    "torchmetrics_ext.aggregation",
    "torchmetrics_ext.wrappers",
    "torchmetrics_ext.module",
    "torchmetrics_ext.registry",
    "torchmetrics_ext.torchrec_config",
    "torchmetrics_ext.demo",
    "torchmetrics_ext.evaluate",
    "torchmetrics_ext.integrations",
    "torchmetrics_ext.integrations.lightning",
    "torchmetrics_ext.integrations.huggingface",
    "torchmetrics_ext.utilities.distributed",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: install the `docs` extra (the `test` extra includes it)")
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def test_docs_site_builds_strictly(site: Path) -> None:
    assert (site / "api" / "metrics" / "index.html").exists()
    assert (site / "getting_started" / "index.html").exists()


def _resolve(path: str) -> object:
    """The object a dotted path names (the longest importable module prefix, then attributes)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_api_reference_documents_every_public_name(site: Path) -> None:
    """Every name in a public ``__all__`` has an entry (a heading anchored at its path) in docs/api/."""
    anchors = set()
    for page in (site / "api").rglob("index.html"):
        anchors |= set(re.findall(r'id="(torchmetrics_ext(?:\.\w+)+)"', page.read_text()))
    documented = {id(_resolve(anchor)) for anchor in anchors}
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) not in documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"add these to a page of docs/api/ (a `::: module` block): {missing}"


def _api_page_modules() -> list[str]:
    """The modules docs/api/ renders with a ``::: module`` block (objects named there are skipped)."""
    modules = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for target in re.findall(r"^::: ([\w.]+)", page.read_text(), re.M):
            if inspect.ismodule(_resolve(target)):
                modules.append(target)
    return modules


def test_every_public_class_and_function_has_an_example() -> None:
    """contributing.md: "a runnable ``Examples:`` in every public docstring" (run by ``--doctest-modules``).

    Checked: the classes and functions of every public ``__all__`` and of every module an API page
    renders (its ``__all__``, else what it defines without a leading underscore). Methods are
    left to judgement: overrides of TorchMetrics' and Lightning's own methods are shown through
    their class's example.
    """
    names = {}
    for module_name in [*PUBLIC_MODULES, *_api_page_modules()]:
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [n for n, v in vars(module).items() if getattr(v, "__module__", None) == module_name]
        for name in exported:
            obj = getattr(module, name)
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                names.setdefault(id(obj), (f"{module_name}.{name}", obj))
    missing = sorted(path for path, obj in names.values() if ">>>" not in (obj.__doc__ or ""))
    assert not missing, f"add an `Examples:` section with `>>>` lines to: {missing}"


def test_docstring_examples_are_under_an_examples_heading() -> None:
    """The docs' Google-style parser renders ``>>>`` lines as code only under ``Examples:``.

    Under ``Example:`` (singular) it makes an admonition of them: every example of an API page
    showed as run-together nested quotes. Checked on the sources, every docstring heading line.
    """
    package = Path(__file__).resolve().parents[1] / "torchmetrics_ext"
    singular = re.compile(r"^\s*Example:\s*$", re.MULTILINE)
    found = [
        f"{path.relative_to(package.parent)}:{text[: match.start()].count(chr(10)) + 1}"
        for path in sorted(package.rglob("*.py"))
        for text in [path.read_text(encoding="utf-8")]
        for match in singular.finditer(text)
    ]
    assert not found, f"write `Examples:` (the docs render `Example:` as a quote, not code): {found}"


def test_every_public_module_is_listed_here() -> None:
    """A new package or top-level module with an ``__all__`` of its own names joins PUBLIC_MODULES.

    Checked: every package, every module directly in ``torchmetrics_ext/`` and in
    ``integrations/``. A module whose names are all re-exported by a listed one (the metric
    families through ``torchmetrics_ext``) needs no entry of its own.
    """
    exported = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        exported |= {id(getattr(module, name)) for name in module.__all__}
    package = ROOT / "torchmetrics_ext"
    files = [*package.rglob("__init__.py"), *package.glob("*.py"), *(package / "integrations").glob("*.py")]
    unlisted = []
    for path in files:
        parts = path.with_suffix("").relative_to(ROOT).parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        module_name = ".".join(parts)
        if any(part.startswith("_") for part in parts) or module_name in PUBLIC_MODULES:
            continue
        module = importlib.import_module(module_name)
        if any(id(getattr(module, name)) not in exported for name in getattr(module, "__all__", [])):
            unlisted.append(module_name)
    assert not unlisted, f"public modules missing from PUBLIC_MODULES (and maybe docs/api/): {sorted(unlisted)}"


def test_pointwise_state_table_names_every_state_of_its_classes():
    """docs/pointwise.md's table lists each class's states (its default settings) as the code names them."""
    import torchmetrics_ext as tmx

    text = (ROOT / "docs" / "pointwise.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `\w+` \| [^|]+ \| ([^|]+) \|$", text, re.M)
    aliases = {"NE": "NormalizedEntropy", "accuracy": "WeightedAccuracy", "MSE": "WeightedMSE"}
    documented: dict[str, set[str]] = {}
    for name, cell in rows:
        same = re.fullmatch(r"same as (\w+)", cell.strip())
        if same:
            documented[name] = documented[aliases.get(same.group(1), same.group(1))]
        else:
            documented[name] = set(re.findall(r"`(\w+)`", cell))
    assert len(documented) >= 11
    for name, states in documented.items():
        assert states == set(getattr(tmx, name)().metric_state), name
