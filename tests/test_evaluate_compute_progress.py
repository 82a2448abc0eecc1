"""The compute phase's progress: a line redrawn every few seconds, per metric and segmentation, never per segment.

Once reading ends, ``evaluate`` printed one line (``evaluate: computing ...``) and then nothing until the table,
while exact AUC, GAUC and the ranking sorts over many segments may run for minutes. The phase now shows its step
(a metric's pass over every segment, the records) and the time since it began, on stderr, where stderr is a
terminal or where asked (``--progress``, ``progress=True``), as the read phase's line does; the steps are
counted from the arguments (groups of tasks, segmentations, metrics), so their number does not grow with the
segments. References: the step count written out by hand, and the values of the same run without progress.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import evaluate, report
from torchmetrics_ext.evaluate.report import Progress

STEP = re.compile(r"evaluate: computing (?P<what>.+?) \(step (?P<step>\d+) of (?P<steps>\d+)\), [\d.,]+ s")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _frame(n: int = 3000, countries: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, n)
    return pd.DataFrame(
        {
            "p": p,
            "y": (rng.random(n) < p).astype(np.int64),
            "country": rng.integers(0, countries, n),
            "device": rng.choice(["ios", "web"], n),
            "user": rng.integers(0, 300, n),
        }
    )


def _steps(err: str) -> list[tuple[str, int, int]]:
    return [(m["what"], int(m["step"]), int(m["steps"])) for m in STEP.finditer(err)]


@pytest.fixture
def every_step(monkeypatch):
    monkeypatch.setattr(report, "COMPUTE_INTERVAL", 0.0)  # each step draws its line at once


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
def test_the_steps_are_metrics_and_segmentations_not_segments(every_step, capsys):
    frame = _frame()
    args = (frame, {"click": ("p", "y")}, ["ne", "auc", "gauc"])
    kwargs = {"user": "user", "by": [["country"], ["device"]]}
    result = evaluate(*args, **kwargs, progress=True)
    err = capsys.readouterr().err
    # the values over all rows, then per segmentation each metric's pass and the records: 1 + 2 x (3 + 1)
    expected = 1 + 2 * (3 + 1)
    steps = _steps(err)
    assert {total for *_, total in steps} == {expected}
    assert sorted({step for _, step, _ in steps}) == list(range(1, expected + 1))  # every step drawn once or more
    named = list(dict.fromkeys(what for what, *_ in steps))
    assert named == [
        "the values over all rows",
        "ne of 200 segments by country",
        "auc of 200 segments by country",
        "gauc of 200 segments by country",
        "the records of 200 segments by country",
        "ne of 2 segments by device",
        "auc of 2 segments by device",
        "gauc of 2 segments by device",
        "the records of 2 segments by device",
    ]
    assert re.search(rf"evaluate: computed {expected} steps in [\d.,]+ s *\n", err)
    assert result.to_pandas().equals(evaluate(*args, **kwargs).to_pandas())  # the values do not depend on it (nan too)


def test_tasks_fed_apart_name_their_group(every_step, capsys):
    frame = _frame(600, 5).assign(z=lambda f: f["y"].where(f.index % 9 > 0, -100))
    evaluate(frame, {"click": ("p", "y"), "like": ("p", "z")}, ["ctr"], by="device", ignore_index=-100, progress=True)
    steps = _steps(capsys.readouterr().err)
    assert {total for *_, total in steps} == {2 * (1 + 1 * (1 + 1))}
    assert "ctr of 2 segments by device of task 'like'" in {what for what, *_ in steps}


def test_auto_shows_the_compute_steps_only_on_a_terminal():
    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        progress = Progress(10, stream=stream, compute=None)
        progress.start_steps(2)
        progress.step("auc by country")
        progress.finish_steps()
        assert ("computed 1 step in" in stream.getvalue()) is shown
    forced = io.StringIO()
    progress = Progress(10, stream=forced, compute=True)  # --progress: a log file too
    progress.start_steps(1)
    progress.finish_steps()
    assert "evaluate: computed 0 steps in" in forced.getvalue()
    off = io.StringIO()
    progress = Progress(10, stream=off, enabled=False, compute=True)  # --no-progress: nothing at all
    progress.start_steps(1)
    progress.step("x")
    progress.finish_steps()
    assert off.getvalue() == ""


def test_a_shorter_line_is_padded_over_a_longer_one(every_step):
    stream = _Terminal()
    progress = Progress(None, stream=stream)
    progress.start_steps(2)
    progress.step("a long name of a step")
    progress.step("b")
    progress.finish_steps()
    first, second, last = stream.getvalue().split("\r")[1:]
    assert len(second) >= len(first) and second.startswith("evaluate: computing b (step 2 of 2)")
    assert last.endswith("\n") and len(last.rstrip("\n")) >= len(second)


def test_the_command_line_shows_the_steps_with_progress_only(every_step, tmp_path, capsys):
    _frame(400, 4).to_parquet(tmp_path / "d.parquet")
    base = ["evaluate", str(tmp_path / "d.parquet"), "--task", "click=p:y", "--metrics", "ctr,auc", "--by", "country"]
    assert main(base) == 0  # stderr is no terminal here: the read line and the computing line alone
    err = capsys.readouterr().err
    assert "rows (100.0%)" in err and "evaluate: computing 2 metrics" in err and not _steps(err)
    assert main([*base, "--progress"]) == 0
    assert {total for *_, total in _steps(capsys.readouterr().err)} == {1 + 1 * (2 + 1)}
    assert main([*base, "--no-progress"]) == 0
    assert "evaluate:" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*base, "--progress", "--no-progress"])
    assert exited.value.code == 2


@pytest.mark.parametrize(("value", "error"), [("yes", ValueError), (1, TypeError), (None, TypeError)])
def test_a_progress_that_is_no_flag_nor_auto_is_refused_naming_it(value, error):
    with pytest.raises(error, match="`progress`"):
        evaluate(_frame(10, 2), {"click": ("p", "y")}, ["ctr"], progress=value)
