"""How ``evaluate`` walks directories and globs: link cycles, links reached twice, broken links.

References are independent: the files each test writes (plain Python lists of paths), Python's own
``glob.glob`` on trees without links, and pandas over the rows written.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchmetrics_ext.evaluate import InvalidDataError, evaluate
from torchmetrics_ext.evaluate import sources as sources_module
from torchmetrics_ext.evaluate.sources import open_sources


def _symlink(target: str | Path, link: Path) -> None:
    if not hasattr(os, "symlink"):
        pytest.skip("no os.symlink")
    try:
        os.symlink(target, link, target_is_directory=not str(target).endswith(".csv"))
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links unsupported here")


def _frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"p": rng.uniform(0.05, 0.95, n), "y": rng.integers(0, 2, n)})


@pytest.fixture
def listed(monkeypatch):
    """The real directories listed (``os.scandir``), counted; more than 200 listings fail at once.

    Both ``os.walk`` and Python's ``glob`` list directories with ``os.scandir``, so a walk that
    explodes fails here by its count, not by a time limit.
    """
    counts: Counter[str] = Counter()
    scandir = os.scandir

    def counting(path=".", *args, **kwargs):
        counts[os.path.realpath(path)] += 1
        if sum(counts.values()) > 200:
            raise AssertionError("more than 200 directory listings: the walk does not end")
        return scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", counting)
    return counts


@pytest.mark.parametrize("pattern", ["data/**", "data/**/*.csv", "data/**/", "data/*/**/x.csv"])
def test_a_recursive_glob_over_two_link_cycles_lists_each_directory_once(tmp_path, monkeypatch, listed, pattern):
    """``glob("data/**")`` follows links, so two cycles (``a/up -> ..``, ``a/b/up2 -> ../..``) made it list paths
    exponentially many (it did not end in minutes). A ``**`` is matched over the directory walk now, which
    lists each real directory once and skips cycles (then once more to read the matched directories);
    the files are those written, each read once."""
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    frames = {"a/b/x.csv": _frame(1, 30), "top.csv": _frame(2, 20)}
    for name, frame in frames.items():
        frame.to_csv(data / name, index=False)
    _symlink("..", data / "a" / "up")
    _symlink("../..", data / "a" / "b" / "up2")
    monkeypatch.chdir(tmp_path)
    wanted = ["data/a/b/x.csv"] if "x.csv" in pattern else ["data/a/b/x.csv", "data/top.csv"]
    assert [source.label for source in open_sources(pattern)] == wanted
    assert set(listed) <= {str(data.resolve()), str((data / "a").resolve()), str((data / "a" / "b").resolve())}
    assert max(listed.values()) <= 2  # once to match the glob, once to read the directories it matched
    rows = pd.concat([frames[path.removeprefix("data/")] for path in wanted])
    result = evaluate(pattern, {"t": ("p", "y")}, ["ctr"])
    assert result.rows_read == len(rows)
    assert result.values["ctr/t"] == pytest.approx(rows.y.mean(), rel=1e-12)


def test_a_glob_matching_two_paths_to_one_directory_walks_it_once(tmp_path, monkeypatch, listed):
    """``data/*`` matching ``a`` and ``b -> a`` read ``a``'s files once but walked ``a`` twice (every
    directory below it listed again). The real directories walked are kept across a glob's matches now."""
    data = tmp_path / "data"
    (data / "a" / "deep").mkdir(parents=True)
    _frame(3, 10).to_csv(data / "a" / "deep" / "x.csv", index=False)
    _symlink("a", data / "b")
    monkeypatch.chdir(tmp_path)
    assert [source.label for source in open_sources("data/*")] == ["data/a/deep/x.csv"]
    assert listed[str((data / "a").resolve())] == 1
    assert listed[str((data / "a" / "deep").resolve())] == 1


def test_a_glob_skips_a_matched_link_cycle_as_a_directory_walk_does(tmp_path, monkeypatch):
    """``data/a/*`` matched ``data/a/up -> ..`` and read all of ``data`` through it (``data/top.csv``, not named),
    where naming ``data/a`` skips that cycle. A matched link to its own directory or an ancestor is skipped."""
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    frames = {"a/b/x.csv": _frame(4, 12), "a/y.csv": _frame(5, 8), "top.csv": _frame(6, 9)}
    for name, frame in frames.items():
        frame.to_csv(data / name, index=False)
    _symlink("..", data / "a" / "up")
    _symlink(".", data / "a" / "self")
    monkeypatch.chdir(tmp_path)
    named = [source.label for source in open_sources("data/a")]
    assert named == ["data/a/b/x.csv", "data/a/y.csv"]
    assert [source.label for source in open_sources("data/a/*")] == named
    rows = pd.concat([frames["a/b/x.csv"], frames["a/y.csv"]])
    result = evaluate("data/a/*", {"t": ("p", "y")}, ["ctr"])
    assert result.rows_read == len(rows)
    assert result.values["ctr/t"] == pytest.approx(rows.y.mean(), rel=1e-12)


@pytest.mark.parametrize("named", ["data", "data/", "data/*", "data/*.csv", "data/**", "data/broken.csv"])
def test_a_broken_link_fails_naming_it_whether_a_directory_or_a_glob_reaches_it(tmp_path, monkeypatch, named):
    """A link ``broken.csv -> moved.csv`` was listed by a directory (then failed as an unreadable CSV file) but
    skipped by a glob, silently reading fewer files. Both fail now, before any row is read, naming the link."""
    data = tmp_path / "data"
    data.mkdir()
    _frame(7, 5).to_csv(data / "ok.csv", index=False)
    _symlink("moved.csv", data / "broken.csv")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidDataError, match=r"^data/broken\.csv: broken symbolic link \(to 'moved\.csv'"):
        open_sources(named)
    with pytest.raises(InvalidDataError, match=r"data/broken\.csv: broken symbolic link"):
        evaluate(named, {"t": ("p", "y")}, ["ctr"])


@pytest.mark.parametrize(
    "pattern",
    [
        "d/**",
        "d/**/",
        "d/**/*.csv",
        "**/*.csv",
        "d/**/_u/*",
        "d/**/b",
        "d/a/**/*",
        "d/*/**/z.csv",
        "d/**/.g/*",
        "d/**/*/",
        "./d/**/*.csv",
        "{root}/d/**/*.csv",
        "d/*.csv/**",  # a trailing `**` after a file: Python's glob lists nothing (no name after the file)
        "**/*.csv/**",
    ],
)
def test_a_recursive_glob_matches_what_pythons_glob_matches_without_links(tmp_path, monkeypatch, pattern):
    """The walk's ``**`` matches the paths Python's ``glob.glob(recursive=True)`` gives on a tree without links
    (hidden names, ``**`` as zero directories, a trailing separator, absolute and ``./`` patterns)."""
    for name in ("d/x.csv", "d/a/y.parquet", "d/a/b/z.csv", "d/.h/c/q.csv", "d/_u/e/r.csv", "d/a/.g/s.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("p,y\n")
    for name in ("d/.t.csv", "d/_v.csv", "d/a/b/n.txt"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    pattern = pattern.format(root=tmp_path)
    assert sources_module._glob(pattern) == sorted(glob.glob(pattern, recursive=True))


def test_a_trailing_recursive_part_after_a_file_reads_no_file(tmp_path, monkeypatch):
    """``data/*.csv/**`` read ``data/x.csv`` (its ``**`` matched nothing after the file), where Python's glob,
    which the docs promise, matches nothing: the glob fails as one matching nothing."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("p,y\n0.2,0\n0.7,1\n")
    monkeypatch.chdir(tmp_path)
    assert glob.glob("data/*.csv/**", recursive=True) == []  # the reference
    with pytest.raises(InvalidDataError, match=r"no such file, directory or glob match"):
        evaluate("data/*.csv/**", {"t": ("p", "y")}, ["ctr"])
    assert evaluate("data/**", {"t": ("p", "y")}, ["ctr"]).rows_read == 2  # the file itself still matched
