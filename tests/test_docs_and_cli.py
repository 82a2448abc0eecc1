"""The README example and the CLI demo run, the public surface is what DESIGN.md names, and what the docs show a user (links, command lines, Args sections) is true (notebooks: test_notebooks.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import torchmetrics_ext
from torchmetrics_ext import cli
from torchmetrics_ext import functional as tmf

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs():
    import re

    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", readme, re.S):
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_demo_prints_every_metric(capsys):
    values = cli.run_demo(samples=20_000, batch_size=4096, seed=1)
    out = capsys.readouterr().out
    for name in values:
        assert name in out
    assert "click" in out and "conversion" in out
    assert all(value.shape == (2,) for value in values.values())


def test_the_quick_demos_words_say_how_many_metrics_it_runs(capsys):
    """The docstring, `demo --help`, README and getting_started said `demo --quick` scores "every metric" ("every
    pointwise and AUC metric") but it ran 15, without XAUC, RegressionAUC, GroupedAUPRC, WeightedR2, WeightedNMSE."""
    import inspect
    import re

    import torchmetrics

    collection = cli.demo_metrics(2)
    run = {type(metric) for metric in collection.values()}
    tmx = torchmetrics_ext
    exported = {getattr(tmx, name) for name in tmx.__all__ if isinstance(getattr(tmx, name), type)}
    left_out = {cls.__name__ for cls in exported if issubclass(cls, torchmetrics.Metric)} - {c.__name__ for c in run}
    assert {"XAUC", "RegressionAUC", "GroupedAUPRC", "WeightedR2", "WeightedNMSE"} <= left_out  # so not "every"
    defaults = inspect.signature(tmx.RankingMetrics).parameters["metrics"].default
    assert tuple(cli.RANKING_METRICS) == defaults  # the ranking table: RankingMetrics' defaults
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    texts = {
        "cli docstring": cli.__doc__,
        "demo --help": capsys.readouterr().out,
        "README.md": (ROOT / "README.md").read_text(),
        "getting_started.md": (ROOT / "docs" / "getting_started.md").read_text(),
    }
    said = f"{len(collection)} pointwise and AUC metrics"
    for where, text in texts.items():
        flat = " ".join(text.split())
        quick = flat[flat.index("--quick") :]
        assert said in quick, f"{where}: {said!r} not said of --quick"
        assert f"{len(cli.RANKING_METRICS)} ranking metrics" in quick, where
        assert not re.search(r"every (pointwise|ranking )?(and AUC )?metric", quick[:600]), where


def test_ranking_demo_prints_every_metric_at_every_k(capsys):
    values = cli.run_ranking_demo(queries=300, batch_size=1000, seed=2)
    assert set(values) == {f"{m}@{k}" for m in cli.RANKING_METRICS for k in cli.RANKING_KS}
    out = capsys.readouterr().out
    assert all(name in out for name in cli.RANKING_METRICS)


def test_cli_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "torchmetrics_ext.cli", "demo", "--quick", "--samples", "5000", "--queries", "200"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "ne" in result.stdout and "calibration" in result.stdout


def test_cli_version_prints_the_package_version_and_exits_0(capsys):
    """``torchmetrics-ext --version`` was an unknown option (exit 2). The reference is pyproject.toml's version,
    read here as text (no tomllib on Python 3.10), and the installed distribution's (importlib.metadata) where
    it is installed."""
    import importlib.metadata
    import re

    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1]
    expected = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE).group(1)
    try:
        assert importlib.metadata.version("torchmetrics-ext") == expected
    except importlib.metadata.PackageNotFoundError:
        pass  # a source tree: the package's __version__ is printed
    assert torchmetrics_ext.__version__ == expected
    result = subprocess.run(
        [sys.executable, "-m", "torchmetrics_ext.cli", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"torchmetrics-ext {expected}\n", "")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out == f"torchmetrics-ext {expected}\n"


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--samples", "0"])


def test_evaluate_without_pyarrow_names_the_extra_to_install():
    """A core install (torch + torchmetrics) gave a bare "No module named 'pyarrow'"."""
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from torchmetrics_ext import cli\n"
        "cli.main(['evaluate', 'x.parquet', '--predictions', 'p', '--labels', 'y'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "pip install 'torchmetrics-ext[evaluate]'" in result.stderr
    code = "import sys; sys.modules['pyarrow'] = None\nimport torchmetrics_ext.evaluate\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "ImportError: torchmetrics_ext.evaluate needs pyarrow, from the `evaluate` extra" in result.stderr


def test_cli_help_shows_no_markup(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_cli_without_a_command_names_the_commands(capsys):
    """``torchmetrics-ext`` (or ``python -m torchmetrics_ext``) alone said "the following arguments are required:
    command", a word the usage line (``{demo,evaluate}``) never shows."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == "torchmetrics-ext: error: the following arguments are required: {demo,evaluate}"


def test_public_surface_is_sorted_and_importable():
    for module in (torchmetrics_ext, tmf):
        # built from the family modules' lists, then sorted
        assert list(module.__all__) == sorted(module.__all__) and len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_documented_installs_bring_what_the_commands_after_them_need():
    """A bash block that runs the training demo installs an extra with Lightning and matplotlib."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    needs = {"lightning", "matplotlib"}  # cli.DEMO_REQUIRES, as distribution names
    assert set(cli.DEMO_REQUIRES) == needs
    checked = 0
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            installed: set[str] = set()
            for line in block.splitlines():
                for group in re.findall(r"\.\[([a-z,]+)\]", line):
                    for extra in group.split(","):
                        assert extra in extras, f"{path.name}: unknown extra {extra!r}"
                        installed |= {re.split(r"[<>=\[]", dep)[0] for dep in extras[extra]}
                if re.search(r"torchmetrics-ext demo(?! --quick)", line):
                    checked += 1
                    assert needs <= installed, f"{path.name}: `{line.strip()}` runs without {needs - installed}"
    assert checked >= 2  # README and getting_started


def test_subpackages_the_docs_use_as_attributes_exist_after_a_plain_import():
    """``import torchmetrics_ext as tmx`` then ``tmx.aggregation...``/``tmx.functional...``, as the docs write.

    In a fresh interpreter: an earlier ``import torchmetrics_ext.aggregation`` in this process
    would set the attribute and hide a missing import. The optional dependencies stay unimported.
    """
    import re

    texts = [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]]
    used = sorted({m for text in texts for m in re.findall(r"\btmx\.([a-z_]+)\b", text)})
    assert {"aggregation", "functional"} <= set(used)
    code = (
        "import sys, torchmetrics_ext as tmx\n"
        f"missing = [name for name in {used!r} if not hasattr(tmx, name)]\n"
        "optional = [name for name in ('pyarrow', 'lightning', 'pandas') if name in sys.modules]\n"
        "print(missing, optional)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[] []", result.stdout + result.stderr


def test_every_public_class_shows_its_constructor_signature():
    """``inspect.signature(cls)`` (help(), IDEs) is the constructor's, not a ``__new__``'s ``(*args, **kwargs)``."""
    import inspect
    from enum import Enum

    from torchmetrics_ext import aggregation

    for module in (torchmetrics_ext, aggregation):
        for name in module.__all__:
            cls = getattr(module, name)
            if not isinstance(cls, type) or not inspect.isfunction(cls.__init__) or issubclass(cls, Enum):
                continue  # exceptions, enums: no constructor of the package's
            init = inspect.signature(cls.__init__)
            expected = init.replace(parameters=list(init.parameters.values())[1:])
            assert inspect.signature(cls) == expected, name
    assert (
        str(inspect.signature(torchmetrics_ext.MulticlassRecallAtK))
        == "(k: 'int', num_classes: 'int', **kwargs: 'Any') -> 'None'"
    )


# hides a module as an install without it does: no importable spec, no distribution metadata (which
# torchmetrics consults before importing transformers for its BERTScore)
_HIDE_MODULE = """
import importlib.machinery as m, importlib.metadata as md, sys
HIDDEN = {hidden!r}
class Hide(m.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] == HIDDEN else m.PathFinder.find_spec(name, path, target)
sys.meta_path = [Hide if f is m.PathFinder else f for f in sys.meta_path]
_from_name = md.Distribution.from_name.__func__
def from_name(cls, name):
    if name == HIDDEN:
        raise md.PackageNotFoundError(name)
    return _from_name(cls, name)
md.Distribution.from_name = classmethod(from_name)
"""


@pytest.mark.parametrize(
    ("hidden", "extra", "targets", "skipped"),
    [
        # examples that import it: four docstrings (callback() among them) and a page
        (
            "transformers",
            "huggingface",
            ["torchmetrics_ext/integrations/huggingface.py", "docs/migration_trainer.md"],
            {"torchmetrics_ext/integrations/huggingface.py": 4, "docs/migration_trainer.md": 1},
        ),
        # modules that import it: their doctests could not even be collected
        (
            "lightning",
            "lightning",
            ["torchmetrics_ext/integrations", "torchmetrics_ext/demo"],
            {"torchmetrics_ext/integrations/lightning.py": 1, "torchmetrics_ext/demo/train.py": 1},
        ),
        # examples whose code needs it (metric.plot()) without importing it
        (
            "matplotlib",
            "plot",
            ["torchmetrics_ext/metrics/auc/binary.py", "torchmetrics_ext/utilities/plot.py"],
            {"torchmetrics_ext/metrics/auc/binary.py": 1, "torchmetrics_ext/utilities/plot.py": 1},
        ),
    ],
)
def test_doctests_of_an_extra_skip_naming_it_where_it_is_missing(tmp_path, hidden, extra, targets, skipped):
    """Without an extra its doctests failed (transformers, matplotlib) or broke the collection (lightning)."""
    pytest.importorskip(hidden)  # with it they run (and pass) in the suite itself
    (tmp_path / "sitecustomize.py").write_text(_HIDE_MODULE.format(hidden=hidden))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for target, count in skipped.items():
        assert f"SKIPPED [{count}] {target}: needs {hidden}: pip install 'torchmetrics-ext[{extra}]'" in result.stdout
    assert "failed" not in result.stdout and "error" not in result.stdout


def test_the_zero_weight_exceptions_of_the_policies_hold():
    """docs/policies.md said a batch of zero weights changes nothing, with windows the only exception;
    `average_groups="all"` counts a group of zero-weight rows on purpose (TorchRec's grouped AUC)."""
    import torch

    import torchmetrics_ext as tmx

    text = " ".join((Path(__file__).parents[1] / "docs" / "policies.md").read_text().split())
    assert (
        '`GroupedAUC(average_groups="all")` / `GroupedAUPRC(average_groups="all")` count a group of zero-weight' in text
    )
    assert "api/metrics.md#torchmetrics_ext.metrics.auc.grouped.GroupedAUC" in text
    preds, target, groups = torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), torch.tensor([1, 1])
    # by hand: group 1 ranks its positive first (AUC 1, average precision 1); the zero-weight group 2
    # counts 0.5 (AUC) or 0 (AUPRC, no positive weight) with "all", and nothing by default
    expected = {(tmx.GroupedAUC, "all"): (1 + 0.5) / 2, (tmx.GroupedAUPRC, "all"): (1 + 0) / 2}
    for cls in (tmx.GroupedAUC, tmx.GroupedAUPRC):
        for average in ("defined", "all"):
            metric = cls(average_groups=average)
            metric.update(preds, target, groups)
            metric.update(torch.tensor([0.5, 0.6]), torch.tensor([1, 0]), torch.tensor([2, 2]), torch.zeros(2))
            assert metric.compute().item() == expected.get((cls, average), 1.0), (cls.__name__, average)


def test_bool_labels_and_weights_are_taken_and_bool_ids_refused_as_the_policies_say():
    """docs/policies.md said ids may be bool; every id argument refuses them (a mask in the wrong place)."""
    import torch

    import torchmetrics_ext as tmx

    text = " ".join((Path(__file__).parents[1] / "docs" / "policies.md").read_text().split())
    assert "A bool tensor of ids (`groups`, `indexes`, `sessions`, `segments`) is refused with a `TypeError`" in text
    preds = torch.tensor([0.9, 0.2, 0.6, 0.4])
    labels = torch.tensor([True, False, False, True])
    weights = torch.tensor([True, True, False, True])
    # bool labels and weights: the values of their 0/1 floats (by hand: pairs (0.9, 0.2), (0.4, 0.2) ordered)
    assert tmf.auc(preds, labels, weights).item() == 1.0
    assert tmf.ctr(preds, labels, weights).item() == 2 / 3
    ids = torch.tensor([True, True, False, False])
    calls = {
        "groups": lambda: tmf.grouped_auc(preds, labels.float(), ids),
        "indexes": lambda: tmf.mrr(preds, labels, ids),
        "sessions": lambda: tmf.session_precision_at_k(preds, labels.long(), ids, k=1),
        "segments": lambda: tmx.Segmented(tmx.CTR(), num_segments=2).update(preds, labels.float(), segments=ids),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"`{name}`.*torch\.bool"):
            call()


# --- what the docs tell a user, checked without running it: links, command lines, Args sections

_USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def _heading_anchors(path: Path) -> set[str]:
    """GitHub's (and mkdocs' toc) slugs of a Markdown file's headings and its ``<a id>`` anchors, fenced code left out."""
    import re

    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        suffix, n = slug, 0
        while suffix in anchors:  # a repeated heading gets -1, -2, ...
            n += 1
            suffix = f"{slug}-{n}"
        anchors.add(suffix)
    return anchors | set(re.findall(r'<a (?:id|name)="([^"]+)"', text))


def test_relative_links_of_the_docs_resolve_to_a_file_and_heading():
    """README.md and benchmarks/README.md are outside the mkdocs site, whose strict build checks docs/ only."""
    import json
    import re

    pages = [(path, path.read_text()) for path in _USER_DOCS]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        pages.append((notebook, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")))
    checked, broken = 0, []
    for path, text in pages:
        for url in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", url):
                continue  # https:, mailto:
            target, _, anchor = url.partition("#")
            resolved = (path.parent / target).resolve() if target else path
            checked += 1
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {url} (no such file)")
            elif anchor and resolved.suffix == ".md" and "." not in anchor:  # api/ anchors are object paths
                if anchor not in _heading_anchors(resolved):
                    broken.append(f"{path.relative_to(ROOT)}: {url} (no such heading)")
    assert checked > 50 and not broken, broken


def _documented_commands() -> list[tuple[str, str, str]]:
    """``(where, script or "cli", arguments)`` of every command line the docs and the benchmarks' docstrings show."""
    import re

    sources = [*_USER_DOCS, *sorted((ROOT / "benchmarks").glob("*.py"))]
    commands = []
    for path in sources:
        lines, pending, start = [], "", 0
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.endswith("\\"):  # a shell line continuation: the command goes on
                pending, start = pending + line[:-1] + " ", start if pending else number
                continue
            lines.append((start if pending else number, pending + line))
            pending = ""
        for number, line in lines:
            where = f"{path.relative_to(ROOT)}:{number}"
            for match in re.finditer(r"python[0-9.]*\s+((?:benchmarks/)?\w+\.py)([^`\n|;&#]*)", line):
                script = match.group(1)
                if "/" not in script:  # after `cd benchmarks`; a bare name elsewhere is not ours
                    if not (ROOT / "benchmarks" / script).is_file():
                        continue
                    script = f"benchmarks/{script}"
                commands.append((where, script, match.group(2)))
            for match in re.finditer(r"(?:torchmetrics-ext|-m torchmetrics_ext\.cli)\s+([^`\n|;&#]*)", line):
                commands.append((where, "cli", match.group(1)))
    return commands


def _script_flags(script: Path) -> set[str]:
    """The ``--options`` a benchmark's argparse declares, read from its source (nothing is run)."""
    import ast

    flags = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def test_documented_command_lines_name_existing_scripts_and_options(capsys):
    """Every ``python benchmarks/...`` and ``torchmetrics-ext ...`` line a user may copy takes its options."""
    import re

    cli_flags = {}
    for command in ("demo", "evaluate"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        cli_flags[command] = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", capsys.readouterr().out))
    commands, wrong = _documented_commands(), []
    for where, script, arguments in commands:
        flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", arguments))
        if script == "cli":
            words = arguments.split()
            if not words or words[0] not in cli_flags:
                continue  # prose such as "`torchmetrics-ext` command line"
            known = cli_flags[words[0]]
        elif not (ROOT / script).is_file():
            wrong.append(f"{where}: {script} does not exist")
            continue
        else:
            known = _script_flags(ROOT / script) | {"--help"}
        wrong += [f"{where}: {script} has no option {flag}" for flag in sorted(flags - known)]
    assert len(commands) > 100 and not wrong, wrong


def _args_section(doc: str | None) -> list[str] | None:
    """The names a Google-style ``Args:`` section documents (``None`` without one)."""
    import inspect
    import re

    lines = inspect.cleandoc(doc or "").splitlines()
    if "Args:" not in [line.strip() for line in lines]:
        return None
    start = [line.strip() for line in lines].index("Args:") + 1
    names, indent = [], None
    for line in lines[start:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        match = re.match(r"\s*\**(\w+)(?: \(.*?\))?:", line)
        if depth == indent and match:
            names.append(match.group(1))
    return names


def test_docstring_args_sections_match_the_signatures():
    """Each public class's and function's ``Args:`` names its parameters, and only those.

    A class may also document the options it forwards through ``**kwargs`` (``validate_args``, the
    ranking options), which its constructor must then take.
    """
    import importlib
    import inspect

    modules = ["torchmetrics_ext", "torchmetrics_ext.functional", "torchmetrics_ext.aggregation"]
    modules += ["torchmetrics_ext.wrappers", "torchmetrics_ext.module", "torchmetrics_ext.registry"]
    modules += ["torchmetrics_ext.evaluate", "torchmetrics_ext.integrations", "torchmetrics_ext.demo"]
    checked, wrong = 0, []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            targets = [(name, obj)]
            if inspect.isclass(obj):
                targets += [(f"{name}.{m}", f) for m, f in vars(obj).items() if inspect.isfunction(f) and m[0] != "_"]
            for label, target in targets:
                documented = _args_section(target.__doc__)
                if documented is None or not callable(target):
                    continue
                try:
                    parameters = inspect.signature(target).parameters.values()
                except (TypeError, ValueError):
                    continue
                named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                named = [p for p in named if p not in ("self", "cls")]
                variadic = {p.name for p in parameters if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
                forwards = any(p.kind == p.VAR_KEYWORD for p in parameters)
                checked += 1
                extra = [a for a in documented if a not in named and a not in variadic and not forwards]
                missing = [p for p in named if p not in documented]
                if extra or missing:
                    wrong.append(f"{module_name}.{label}: documents {extra} not in the signature, leaves out {missing}")
    assert checked > 100 and not wrong, wrong


def test_getting_started_lists_every_extra():
    """Its install line listed the extras without `bench`, which benchmarks/README.md asks for."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = re.search(r"# from a clone; extras: ([\w, ]+)", (ROOT / "docs" / "getting_started.md").read_text())
    assert listed is not None
    assert sorted(listed.group(1).split(", ")) == sorted(extras)


def test_evaluate_page_names_every_ranking_name_of_the_registry():
    """docs/evaluate.md's `--metrics` list of names that need `--session` left out `f1@k`, `r_precision`
    and the cutoff-less `ndcg`, `mrr`, `map`, which the command takes (and refuses without `--session`)."""
    import re

    from torchmetrics_ext.metrics.ranking._base import _RankingMetric
    from torchmetrics_ext.registry import lookup, metric_names

    ranking = {n for n in metric_names() if issubclass(lookup(n.replace("@k", "@1"))[0].cls, _RankingMetric)}
    text = " ".join((ROOT / "docs" / "evaluate.md").read_text().split())
    paragraph = re.search(r"ranking names \((`ndcg@k`[^()]*(?:\([^()]*\)[^()]*)*)\) need `--session`", text)
    assert paragraph is not None
    named = set(re.findall(r"`([a-z][a-z0-9_]*(?:@k)?)`", paragraph.group(1))) - {"k"}  # `k` a positive integer
    assert ranking == named


def test_quick_demo_piped_into_a_reader_that_leaves_ends_quietly():
    """`torchmetrics-ext demo --quick | head -5` ended with a BrokenPipeError traceback and status 1
    (`evaluate` already ended such a run quietly, with a shell's 128 + SIGPIPE)."""
    command = [sys.executable, "-m", "torchmetrics_ext", "demo", "--quick", "--samples", "2000", "--queries", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before the first table is printed
    err = process.stderr.read().decode()
    code = process.wait(timeout=300)
    process.stderr.close()
    assert "Traceback" not in err and code == 141, (code, err)


def test_the_evaluate_pages_install_line_names_what_the_evaluate_extra_installs():
    """docs/evaluate.md said pandas came "only if you pass frames"; pyproject's `evaluate` extra installs it."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = {re.split(r"[<>=\[;]", dep)[0].strip() for dep in extras["evaluate"]}
    assert installed == {"pyarrow", "pandas"}
    text = (ROOT / "docs" / "evaluate.md").read_text()
    sentence = " ".join(text.split("Needs the `evaluate` extra", 1)[1].split("\n\n", 1)[0].split())
    stated = sentence.split("which installs ", 1)[1].split(":", 1)[0]
    assert set(re.findall(r"[a-z]+", stated)) - {"and"} == installed, stated
    assert "only if" not in sentence
