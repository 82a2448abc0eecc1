"""Under Lightning's ``strategy="ddp_spawn"`` the callback's warnings name the user's ``trainer.fit`` line.

The ranks that ``ddp_spawn`` starts run the callback's hooks with no frame of the user's on their stack (the
``trainer.fit`` call is the parent process's), so the stack walk of ``user_stacklevel`` ended in
``multiprocessing``'s bootstrap and every warning of the callback named ``multiprocessing/process.py:108``.
They now name the line that called ``trainer.fit`` in the parent, as under ``strategy="ddp"`` (whose ranks run
the user's script). Reference: Python's own record of each warning (``warnings.showwarning``'s ``filename`` and
``lineno``), in each spawned rank, against the line of ``tests/helpers/spawn_warnings_run.py`` that calls fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "spawn_warnings_run.py"


def _fit_line() -> int:
    lines = SCRIPT.read_text().splitlines()
    (line,) = [i + 1 for i, text in enumerate(lines) if "trainer.fit(" in text]
    return line


@pytest.mark.ddp
def test_the_callbacks_warnings_in_ddp_spawn_ranks_name_the_fit_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LOCAL_RANK", None)
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    per_process = {
        path.name: [json.loads(line) for line in path.read_text().splitlines()]
        for path in tmp_path.glob("warnings_*.jsonl")
    }
    ours = {
        name: [
            w
            for w in caught
            if w["message"].startswith("RecMetricCallback") or w["category"] == "UndefinedMetricWarning"
        ]
        for name, caught in per_process.items()
    }
    padding = [w for caught in ours.values() for w in caught if "pads its 5 samples to 6 over 2 ranks" in w["message"]]
    assert len(padding) == 1, per_process  # rank 0 alone
    undefined = [name for name, caught in ours.items() if any("val/auc is undefined" in w["message"] for w in caught)]
    assert len(undefined) == 2, per_process  # both ranks compute the validation module
    for caught in ours.values():
        for w in caught:
            assert (w["file"], w["line"]) == (str(SCRIPT), _fit_line()), w


def _origin_in_child(inbox, outbox) -> None:
    """A spawned process: unpickle the callback sent to it, report the line its warnings would name."""
    from torchmetrics_ext.utilities import warnings as package_warnings

    inbox.get(timeout=60)
    outbox.put(package_warnings._spawned_from)


@pytest.mark.ddp  # a spawned process: about 20 s on a loaded box
def test_a_callback_sent_through_a_queue_records_no_spawn_line():
    """A ``multiprocessing.Queue`` pickles in its feeder thread: no user line there, none recorded.

    The walk out of the feeder thread ended in ``threading.py``'s bootstrap, recorded as the "user's line" that
    spawned the process, so a warning there without a user frame named ``threading.py:982`` (Python 3.11).
    """
    import multiprocessing

    from torchmetrics_ext.integrations.lightning import RecMetricCallback

    context = multiprocessing.get_context("spawn")
    inbox, outbox = context.Queue(), context.Queue()
    child = context.Process(target=_origin_in_child, args=(inbox, outbox))
    child.start()
    try:
        inbox.put(RecMetricCallback())
        assert outbox.get(timeout=60) is None
    finally:
        child.join(timeout=60)
