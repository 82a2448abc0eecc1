"""Lightning: a fit resumed from a checkpoint logs what the uninterrupted fit logs, step for step.

``tests/helpers/lightning_resume.py`` fits a two-task model with :class:`RecMetricCallback`: the
training module keeps a window and a throughput and computes every 3 batches (epoch ends log values
of their own), the validation module logs each epoch, and ``ModelCheckpoint`` saves mid-epoch
(every 5 steps) and at each training epoch end. The same fit is then resumed
(``trainer.fit(ckpt_path=...)``) from a mid-epoch and an epoch-end checkpoint, under
``Trainer(strategy="ddp", devices=2, accelerator="cpu")`` (gloo, the helper run as a script) and in
one process. Every training row logged after the checkpoint (lifetime and window values of both
tasks, ``throughput/total_examples``, epoch ends) and every validation row equals the whole fit's
at the same step; only the throughput's rates, which time the run, may differ. A resume with a
metric added since the checkpoint and ``strict_loading = False`` starts that metric afresh and
resumes the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from tests.helpers import lightning_resume as run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "lightning_resume.py"
TASKS = ("click", "buy")
TIMED = ("train/throughput/lifetime_throughput", "train/throughput/window_throughput")  # rates of the run's clock

Rows = list[tuple[int, dict[str, float]]]
Seen = list[tuple[int, dict[str, torch.Tensor]]]

# a resumed fit's ModelCheckpoint writes elsewhere than the whole fit's (Lightning says it keeps only the best path)
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")


def _launch(out: Path, *args: str) -> tuple[Rows, Seen]:
    """Run the helper under 2-process DDP; rank 0's logged rows and both ranks' training outputs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    return ranks[0]["rows"], [entry for rank in ranks for entry in rank["seen"]]


def _fit(out: Path, resume: Path | None = None, add_metric: bool = False) -> tuple[Rows, Seen]:
    """Run the helper in this process (one device)."""
    model, recorder = run.fit(str(out), 1, None if resume is None else str(resume), add_metric)
    return recorder.rows, model.seen


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    whole = _launch(root / "whole")
    ckpt = root / "whole" / "ckpt"
    return {
        "whole": whole,
        "mid": _launch(root / "mid", "--resume", str(ckpt / "step" / "step=10.ckpt")),  # epoch 1, batch 3 of 7
        "epoch_end": _launch(root / "epoch_end", "--resume", str(ckpt / "epoch" / "epoch=0.ckpt")),  # step 7
        "added": _launch(root / "added", "--add-metric", "--resume", str(ckpt / "step" / "step=5.ckpt")),
    }


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    whole = _fit(root / "whole")
    ckpt = root / "whole" / "ckpt"
    return {
        "whole": whole,
        "mid": _fit(root / "mid", ckpt / "step" / "step=20.ckpt"),  # epoch 1, batch 6 of 14
        "epoch_end": _fit(root / "epoch_end", ckpt / "epoch" / "epoch=0.ckpt"),  # step 14
        "added": _fit(root / "added", ckpt / "step" / "step=5.ckpt", add_metric=True),
    }


def _weighted(batches: list[dict[str, torch.Tensor]], task: str) -> dict[str, float]:
    """Lifetime CTR, calibration and MSE of one task over the batches (numpy, float64)."""
    p, y, w = (
        torch.cat([b[key] for b in batches]).double().numpy() for key in (f"{task}_pred", f"{task}_label", "weight")
    )
    return {
        "ctr": (w * y).sum() / w.sum(),
        "calibration": (w * p).sum() / (w * y).sum(),
        "mse": (w * (p - y) ** 2).sum() / w.sum(),
    }


def _check_whole(rows: Rows, seen: Seen, world: int) -> None:
    """The uninterrupted fit the resumes are held to: its training values are those of the samples fed so far."""
    per_rank = run.TRAIN // world // run.BATCH  # batches per epoch and rank
    steps = [step for step, row in rows if "train/ctr/click" in row]
    computes = [s for s in range(run.EPOCHS * per_rank) if (s + 1) % run.INTERVAL == 0]
    epoch_ends = [e * per_rank - 1 for e in range(1, run.EPOCHS + 1) if (e * per_rank) % run.INTERVAL]
    assert steps == sorted(computes + epoch_ends)  # every interval compute, and each epoch end that is none
    assert epoch_ends  # the interval is no divisor of an epoch: epoch ends log values of their own
    window_steps = -(-run.WINDOW // world) // run.BATCH  # each rank's window: its newest updates
    for step, row in rows:
        if "train/ctr/click" not in row:
            continue
        assert row["train/throughput/total_examples"] == run.BATCH * world * (step + 1)
        for task in TASKS:
            lifetime = _weighted([b for s, b in seen if s <= step], task)
            window = _weighted([b for s, b in seen if step - window_steps < s <= step], task)
            for name in ("ctr", "calibration"):
                np.testing.assert_allclose(row[f"train/{name}/{task}"], lifetime[name], rtol=1e-12)
                np.testing.assert_allclose(row[f"train/{name}/{task}/window"], window[name], rtol=1e-12)
    assert sum("val/ne/click" in row for _, row in rows) == run.EPOCHS


def _check_resumed(whole: Rows, resumed: Rows, after: int, added: tuple[str, ...] = ()) -> None:
    """Every row logged after step ``after`` equals the whole fit's, key for key (``added`` keys aside)."""
    expected = [(step, row) for step, row in whole if step >= after]
    got = [(step, {k: v for k, v in row.items() if not k.startswith(added)}) for step, row in resumed]
    assert [(step, sorted(row)) for step, row in got] == [(step, sorted(row)) for step, row in expected]
    assert any(key.endswith("/window") for _, row in got for key in row)
    assert sum("val/ne/click" in row for _, row in got) >= 2
    for (step, row), (_, reference) in zip(got, expected):
        for key, value in row.items():
            if key in TIMED:  # time between updates: another run, another clock
                continue
            if key == "train/throughput/total_examples":  # a count: continues exactly
                assert value == reference[key], step
            else:
                np.testing.assert_allclose(value, reference[key], rtol=1e-12, atol=0, err_msg=f"{key} at {step}")


def _check_added(whole: Rows, resumed: Rows, seen: Seen, world: int, after: int) -> None:
    """The metric added since the checkpoint covers the resumed fit's samples alone; the others resume."""
    _check_resumed(whole, resumed, after, added=("train/mse/", "val/mse/"))
    window_steps = -(-run.WINDOW // world) // run.BATCH
    assert min(step for step, _ in seen) == after  # the resumed fit's own batches
    checked = 0
    for step, row in resumed:
        if "train/mse/click" not in row:
            continue
        for task in TASKS:
            lifetime = _weighted([b for s, b in seen if s <= step], task)["mse"]
            window = _weighted([b for s, b in seen if step - window_steps < s <= step], task)["mse"]
            np.testing.assert_allclose(row[f"train/mse/{task}"], lifetime, rtol=1e-12, err_msg=f"step {step}")
            np.testing.assert_allclose(row[f"train/mse/{task}/window"], window, rtol=1e-12, err_msg=f"step {step}")
        checked += 1
    assert checked >= 4
    assert all("val/mse/click" in row for _, row in resumed if "val/ne/click" in row)


@pytest.mark.ddp
def test_ddp_resumes_log_what_the_whole_fit_logs(ddp_runs):
    rows, seen = ddp_runs["whole"]
    _check_whole(rows, seen, world=2)
    _check_resumed(rows, ddp_runs["mid"][0], after=10)
    _check_resumed(rows, ddp_runs["epoch_end"][0], after=7)


@pytest.mark.ddp
def test_ddp_resume_with_a_metric_added_starts_it_afresh(ddp_runs):
    rows, seen = ddp_runs["added"]
    _check_added(ddp_runs["whole"][0], rows, seen, world=2, after=5)


def test_one_process_resumes_log_what_the_whole_fit_logs(one_process_runs):
    rows, seen = one_process_runs["whole"]
    _check_whole(rows, seen, world=1)
    _check_resumed(rows, one_process_runs["mid"][0], after=20)
    _check_resumed(rows, one_process_runs["epoch_end"][0], after=14)


def test_one_process_resume_with_a_metric_added_starts_it_afresh(one_process_runs):
    rows, seen = one_process_runs["added"]
    _check_added(one_process_runs["whole"][0], rows, seen, world=1, after=5)
