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

A fit whose compute interval and checkpoints line up with the epoch's end (a checkpoint saved right
after a compute at an epoch's last batch) is resumed from that checkpoint too: Lightning then runs
that epoch's end with no batch left, and the callback, which keeps when it last logged in the
checkpoint, logs no row there (the whole fit logs none). Two callbacks of other attribute names keep
their own state in a checkpoint, and a checkpoint without that state (an earlier version's) resumes.

A ``ModelCheckpoint(monitor="train/ne/click", every_n_train_steps=k)`` of a fit resumed between two
computes saves at the whole fit's steps with its values (each checked against numpy's NE of the
samples up to the last log before the save), under DDP and in one process, with validation at each
epoch's end and inside the epoch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

import torchmetrics_ext as tmx
from tests.helpers import lightning_resume as run
from torchmetrics_ext.integrations.lightning import RecMetricCallback

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "lightning_resume.py"
TASKS = ("click", "buy")
TIMED = ("train/throughput/lifetime_throughput", "train/throughput/window_throughput")  # rates of the run's clock

Rows = list[tuple[int, dict[str, float]]]
Seen = list[tuple[int, dict[str, torch.Tensor]]]

# a resumed fit's ModelCheckpoint writes elsewhere than the whole fit's (Lightning says it keeps only the best path)
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")
DDP_MONITOR_EVERY = 4


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
    # and ModelCheckpoint(monitor="train/ne/click", every_n_train_steps=4): the resume at 7 saves at 8, before a compute
    monitor = ("--monitor-every", str(DDP_MONITOR_EVERY))
    whole = _launch(root / "whole", *monitor)
    ckpt = root / "whole" / "ckpt"
    runs = {
        "whole": whole,
        "mid": _launch(root / "mid", *monitor, "--resume", str(ckpt / "step" / "step=10.ckpt")),  # epoch 1, batch 3
        "epoch_end": _launch(root / "epoch_end", *monitor, "--resume", str(ckpt / "epoch" / "epoch=0.ckpt")),  # step 7
        "added": _launch(root / "added", "--add-metric", "--resume", str(ckpt / "step" / "step=5.ckpt")),
    }
    monitored = {name: _monitored(root / name, world=2) for name in ("whole", "mid", "epoch_end")}
    return {**runs, "monitored": monitored, "root": root}


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
        "root": root,
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


def _check_whole(rows: Rows, seen: Seen, world: int, interval: int = run.INTERVAL) -> None:
    """The uninterrupted fit the resumes are held to: its training values are those of the samples fed so far."""
    per_rank = run.TRAIN // world // run.BATCH  # batches per epoch and rank
    steps = [step for step, row in rows if "train/ctr/click" in row]
    computes = [s for s in range(run.EPOCHS * per_rank) if (s + 1) % interval == 0]
    epoch_ends = [e * per_rank - 1 for e in range(1, run.EPOCHS + 1) if (e * per_rank) % interval]
    assert steps == sorted(computes + epoch_ends)  # every interval compute, and each epoch end that is none
    # the default interval is no divisor of an epoch: epoch ends log values of their own; a lined-up one is
    assert bool(epoch_ends) == (per_rank % interval != 0)
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
    _same_rows(got, expected)
    assert any(key.endswith("/window") for _, row in got for key in row)
    assert sum("val/ne/click" in row for _, row in got) >= 2


def _same_rows(got: Rows, expected: Rows) -> None:
    """The same rows at the same steps, key for key; values equal (a count exactly), the throughput's rates aside."""
    assert [(step, sorted(row)) for step, row in got] == [(step, sorted(row)) for step, row in expected]
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


# ------------------------------------------------------------ compute, checkpoint and epoch end at one batch


def _lined_up(world: int) -> tuple[int, int]:
    """``(interval, ckpt_every)`` for a fit of ``world`` ranks whose epoch ends are computes and checkpoints."""
    per_rank = run.TRAIN // world // run.BATCH  # 14 in one process, 7 under 2 ranks
    interval = run.TRAIN // 2 // run.BATCH  # 7: divides both
    assert per_rank % interval == 0
    return interval, per_rank


def _check_lined_up(whole: Rows, seen: Seen, resumed: Rows, world: int) -> None:
    """The whole fit logs each epoch end once (its compute); the fit resumed at the first epoch's last batch too.

    Resumed from that checkpoint, Lightning (2.6) counts epoch 0, whose last batch the checkpoint
    followed, as done, and yet runs an epoch end with no batch (the training loader resumes at its
    end): the callback must log nothing there, as the whole fit logged nothing after that compute.
    Lightning numbers that empty epoch as epoch 1, so the resumed fit's ``epoch`` values are one
    ahead and it stops one epoch early: the rows it logs are the whole fit's from the checkpoint on
    (the epoch number aside), each once, and no other.
    """
    interval, ckpt_every = _lined_up(world)
    _check_whole(whole, seen, world, interval)  # values against numpy; epoch ends log nothing of their own
    last = resumed[-1][0]
    expected = [(s, {k: v for k, v in r.items() if k != "epoch"}) for s, r in whole if ckpt_every <= s <= last]
    got = [(s, {k: v for k, v in r.items() if k != "epoch"}) for s, r in resumed]
    _same_rows(got, expected)
    assert any("train/ctr/click" in row for _, row in got) and any("val/ne/click" in row for _, row in got)


@pytest.fixture(scope="module")
def ddp_lined_up(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_lined_up")
    interval, ckpt_every = _lined_up(2)
    flags = ("--interval", str(interval), "--ckpt-every", str(ckpt_every))
    whole = _launch(root / "whole", *flags)
    ckpt = root / "whole" / "ckpt" / "step" / f"step={ckpt_every}.ckpt"  # after the last batch of epoch 0
    return whole, _launch(root / "resumed", *flags, "--resume", str(ckpt))


@pytest.mark.ddp
def test_ddp_resume_at_a_computed_epoch_end_logs_no_row_again(ddp_lined_up):
    (rows, seen), (resumed, _) = ddp_lined_up
    _check_lined_up(rows, seen, resumed, world=2)


def test_one_process_resume_at_a_computed_epoch_end_logs_no_row_again(tmp_path):
    interval, ckpt_every = _lined_up(1)
    model, whole = run.fit(str(tmp_path / "whole"), 1, interval=interval, ckpt_every=ckpt_every)
    ckpt = tmp_path / "whole" / "ckpt" / "step" / f"step={ckpt_every}.ckpt"  # after the last batch of epoch 0
    _, resumed = run.fit(str(tmp_path / "resumed"), 1, str(ckpt), interval=interval, ckpt_every=ckpt_every)
    _check_lined_up(whole.rows, model.seen, resumed.rows, world=1)


# ------------------------------------------------------------ the callback's own state in checkpoints


class _TwoModules(run.Model):
    """The helper's model with a second training module (computed every 4 batches, the first every 3).

    Records what each ``RecMetricCallback`` holds at ``on_fit_start``: after Lightning restored the
    checkpoint, before the first batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.aux_metrics = tmx.RecMetricModule(
            run.TASKS, {"ctr": "ctr"}, compute_interval_steps=4, throughput=False, prefix="aux/"
        )
        self.at_fit_start: dict[str | None, int | None] = {}

    def on_fit_start(self) -> None:
        callbacks = [cb for cb in self.trainer.callbacks if isinstance(cb, RecMetricCallback)]
        self.at_fit_start = {cb.train: cb.state_dict()["train_logged_at"] for cb in callbacks}


def _fit_two(out: Path, max_steps: int, resume: Path | None = None) -> L.Trainer:
    """Fit ``_TwoModules`` with a callback per training module; a checkpoint every 9 steps under ``out``."""
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=run.Recorder(),
        callbacks=[
            RecMetricCallback(),
            RecMetricCallback(train="aux_metrics", val=None, test=None),
            ModelCheckpoint(dirpath=out, filename="{step}", every_n_train_steps=9, save_top_k=-1),
        ],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_TwoModules(), ckpt_path=resume)
    return trainer


def test_two_callbacks_keep_their_own_state_in_a_checkpoint(tmp_path):
    _fit_two(tmp_path / "whole", max_steps=9)
    path = tmp_path / "whole" / "step=9.ckpt"  # saved after batch 9, before the fit's end
    main, aux = RecMetricCallback(), RecMetricCallback(train="aux_metrics", val=None, test=None)
    assert main.state_key != aux.state_key
    saved = torch.load(path, weights_only=False)["callbacks"]
    # each module last logged at the last multiple of its interval: 9 (every 3 batches), 8 (every 4)
    assert saved[main.state_key]["train_logged_at"] == saved[main.state_key]["train_values_at"] == 9
    assert saved[aux.state_key]["train_logged_at"] == saved[aux.state_key]["train_values_at"] == 8
    assert sorted(saved[aux.state_key]["train_values"]) == ["aux/ctr/buy", "aux/ctr/click"]  # each its own values
    trainer = _fit_two(tmp_path / "resumed", max_steps=14, resume=path)
    assert trainer.lightning_module.at_fit_start == {"train_metrics": 9, "aux_metrics": 8}
    # Lightning refuses two stateful callbacks of one key: two callbacks need other attribute names
    with pytest.raises(RuntimeError, match="state_key"):
        L.Trainer(callbacks=[RecMetricCallback(), RecMetricCallback()])


def test_a_checkpoint_without_the_callback_state_resumes(tmp_path):
    _fit_two(tmp_path / "whole", max_steps=9)
    checkpoint = torch.load(tmp_path / "whole" / "step=9.ckpt", weights_only=False)
    # as an earlier version saved it: no state of the callback
    checkpoint["callbacks"] = {k: v for k, v in checkpoint["callbacks"].items() if "RecMetricCallback" not in k}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    trainer = _fit_two(tmp_path / "resumed", max_steps=14, resume=tmp_path / "old.ckpt")
    assert trainer.lightning_module.at_fit_start == {"train_metrics": None, "aux_metrics": None}
    assert trainer.global_step == 14
    # the training module continued from the checkpoint: it logged at 12 (its 4th compute) and at the epoch end
    assert [step for step, row in trainer.logger.rows if "train/ctr/click" in row] == [11, 13]


def test_the_logged_at_count_holds_only_for_a_module_restored_at_it():
    model = run.Model()
    callback = RecMetricCallback()
    for step, kept in ((14, 14), (0, None)):  # the module restored at the count; one restored without it
        model.train_metrics.set_extra_state({"step": step, "tasks": ["click", "buy"]})
        callback.load_state_dict({"train_logged_at": 14})
        callback.on_train_start(None, model)  # type: ignore[arg-type]
        assert callback.state_dict()["train_logged_at"] == kept


@pytest.mark.parametrize(
    "state",
    [
        {"train_logged_at": -1},
        {"train_logged_at": 1.5},
        {"train_logged_at": "9"},
        [9],
        {"train_logged_at": 3, "train_values_at": 3},  # values missing
        {"train_logged_at": 3, "train_values": {"train/ne/click": 0.5}},  # their count missing
        {"train_logged_at": 3, "train_values_at": -3, "train_values": {"train/ne/click": 0.5}},
        {"train_logged_at": 3, "train_values_at": 3, "train_values": {"train/ne/click": "0.5"}},
        {"train_logged_at": 3, "train_values_at": 3, "train_values": {"train/ne/click": True}},
        {"train_logged_at": 3, "train_values_at": 3, "train_values": {1: 0.5}},
        {"train_logged_at": 3, "train_values_at": 3, "train_values": [0.5]},
    ],
)
def test_a_malformed_callback_state_is_refused(state):
    callback = RecMetricCallback()
    kept = {"train_logged_at": 3, "train_values_at": 3, "train_values": {"train/ne/click": 0.25}}
    callback.load_state_dict(kept)
    with pytest.raises(ValueError, match="expected what state_dict saves"):
        callback.load_state_dict(state)
    assert callback.state_dict() == kept


# ------------------------------------------------------------ ModelCheckpoint(monitor=<training key>) after a resume
#
# Lightning starts ``trainer.callback_metrics`` empty at every fit; the training values were in it only
# from the resumed fit's first compute on. A ``ModelCheckpoint(monitor="train/ne/click",
# every_n_train_steps=k)`` due before that compute found no key: Lightning (2.6) then defers the save
# to the next validation end, which with validation at each epoch's end never comes (the save is
# skipped without a word), and with validation inside the epoch saves there (another step, another
# value) or, the key still missing, stops the fit with a MisconfigurationException. The callback
# keeps the values last logged in its state and puts them back at the fit's start.


def _monitored(out: Path, world: int = 1) -> dict[int, float]:
    """``{step: monitored value}`` of every monitored checkpoint of a fit (each rank saw the same)."""
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False)["monitored"] for rank in range(world)]
    assert all(saved == ranks[0] for saved in ranks)
    return ranks[0]


def _ne(batches: list[dict[str, torch.Tensor]], task: str) -> float:
    """Weighted normalized entropy of one task over the batches (numpy, float64)."""
    p, y, w = (
        torch.cat([b[key] for b in batches]).double().numpy() for key in (f"{task}_pred", f"{task}_label", "weight")
    )
    log_loss = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum()
    ctr = (w * y).sum() / w.sum()
    return float(log_loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr)))


def _check_monitored(saved: dict[int, float], seen: Seen, world: int, interval: int) -> None:
    """Each save holds the NE of the samples up to the last log before it: an interval compute or an earlier epoch end.

    A save after batch ``s`` follows that batch's interval compute; an epoch's end logs after the
    checkpoints of its last batch.
    """
    per_rank = run.TRAIN // world // run.BATCH
    assert saved
    for step, value in saved.items():
        logs = [c for c in range(1, step + 1) if c % interval == 0]
        logs += [e * per_rank for e in range(1, run.EPOCHS + 1) if e * per_rank < step]
        last = max(logs)  # the update count of those values: the batches of global steps below it
        expected = _ne([b for s, b in seen if s < last], "click")
        np.testing.assert_allclose(value, expected, rtol=1e-10, err_msg=f"save at step {step}")


def _same_saves(resumed: dict[int, float], whole: dict[int, float], after: int) -> None:
    """The resumed fit's saves are the whole fit's after step ``after``: the same steps, the same values."""
    expected = {step: value for step, value in whole.items() if step > after}
    assert sorted(resumed) == sorted(expected)
    for step, value in resumed.items():
        np.testing.assert_allclose(value, expected[step], rtol=1e-12, atol=0, err_msg=f"save at step {step}")


# (compute interval, monitored checkpoint every k steps, resume from the checkpoint at step, validate every n)
MONITORED = {
    # resumed at 5, computed at 4: the save at 7 comes before the compute at 8 (skipped without a word before)
    "at_epoch_end_validation": (4, 7, 5, None),
    # resumed at 25, computed at 20: the save at 27 waited for the validation at 28, where the key was still
    # missing (the next compute is at 40): the resumed fit stopped with a MisconfigurationException before
    "inside_the_epoch_validation": (20, 27, 25, 7),
}


@pytest.mark.ddp
def test_ddp_resume_monitors_the_training_key_as_the_whole_fit(ddp_runs):
    saved = ddp_runs["monitored"]
    _check_monitored(saved["whole"], ddp_runs["whole"][1], world=2, interval=run.INTERVAL)
    assert 8 in saved["whole"]  # after the resume at 7 (an epoch end, logged), before its first compute at 9
    _same_saves(saved["mid"], saved["whole"], after=10)
    _same_saves(saved["epoch_end"], saved["whole"], after=7)


@pytest.mark.parametrize("case", sorted(MONITORED))
def test_one_process_resume_monitors_the_training_key_as_the_whole_fit(tmp_path, case):
    interval, monitor_every, resume, val_every = MONITORED[case]
    options = {"interval": interval, "monitor_every": monitor_every, "val_every": val_every}
    model, whole = run.fit(str(tmp_path / "whole"), 1, **options)
    saved = _monitored(tmp_path / "whole")
    _check_monitored(saved, model.seen, world=1, interval=interval)
    checkpoint = tmp_path / "whole" / "ckpt" / "step" / f"step={resume}.ckpt"
    _, resumed = run.fit(str(tmp_path / "resumed"), 1, str(checkpoint), **options)
    _same_saves(_monitored(tmp_path / "resumed"), saved, after=resume)
    _same_rows(resumed.rows, [(step, row) for step, row in whole.rows if step >= resume])


def test_a_checkpoint_without_the_logged_values_resumes(tmp_path):
    interval, monitor_every, resume, _ = MONITORED["at_epoch_end_validation"]
    options = {"interval": interval, "monitor_every": monitor_every}
    _, whole = run.fit(str(tmp_path / "whole"), 1, **options)
    checkpoint = torch.load(tmp_path / "whole" / "ckpt" / "step" / f"step={resume}.ckpt", weights_only=False)
    key = RecMetricCallback().state_key
    state = checkpoint["callbacks"][key]
    assert state["train_values_at"] == 4  # the compute before the checkpoint at 5
    checkpoint["callbacks"][key] = {"train_logged_at": state["train_logged_at"]}  # as earlier versions saved it
    torch.save(checkpoint, tmp_path / "old.ckpt")
    _, resumed = run.fit(str(tmp_path / "resumed"), 1, str(tmp_path / "old.ckpt"), **options)
    _same_rows(resumed.rows, [(step, row) for step, row in whole.rows if step >= resume])
    # its saves after the gap (the save at 7, before the first compute at 8, is Lightning's to handle) are the whole's
    saved = _monitored(tmp_path / "resumed")
    _same_saves({s: v for s, v in saved.items() if s > 7}, _monitored(tmp_path / "whole"), after=7)


class _Trainer:
    """What ``on_train_start`` reads of a trainer: its ``callback_metrics``."""

    def __init__(self) -> None:
        self.callback_metrics: dict[str, torch.Tensor] = {}


def test_the_logged_values_go_back_only_for_a_module_restored_at_or_after_their_count():
    model = run.Model(interval=4)
    values = {"train/ne/click": 0.75, "train/ctr/buy/window": 0.25, "train/x": 2.0}  # "train/x": no key of the module
    state = {"train_logged_at": 12, "train_values_at": 12, "train_values": values}
    for step, restored in ((12, True), (14, True), (0, False)):  # at, after the compute; a module restored afresh
        model.train_metrics.set_extra_state({"step": step, "tasks": ["click", "buy"]})
        callback, trainer = RecMetricCallback(), _Trainer()
        callback.load_state_dict(state)
        callback.on_train_start(trainer, model)  # type: ignore[arg-type]
        if restored:
            assert trainer.callback_metrics == {
                "train/ne/click": torch.tensor(0.75, dtype=torch.float64),
                "train/ctr/buy/window": torch.tensor(0.25, dtype=torch.float64),
            }
            assert all(v.dtype == torch.float64 for v in trainer.callback_metrics.values())
            kept = {key: value for key, value in values.items() if key != "train/x"}
            assert callback.state_dict()["train_values"] == kept  # kept for the next checkpoint
        else:
            assert trainer.callback_metrics == {}
            assert callback.state_dict()["train_values"] is None
        assert callback.state_dict()["train_logged_at"] == (12 if step == 12 else None)
    callback, trainer = RecMetricCallback(), _Trainer()
    callback.load_state_dict({"train_logged_at": 12})  # an earlier version's state: no values
    model.train_metrics.set_extra_state({"step": 12, "tasks": ["click", "buy"]})
    callback.on_train_start(trainer, model)  # type: ignore[arg-type]
    assert trainer.callback_metrics == {}


def test_the_logged_values_of_entries_of_a_metric_of_one_number_do_not_go_back():
    """Regression: any entry name was taken for every metric, so an entry's key of a metric that was dict-valued
    before the resume (``"ne"`` a ``RankingMetrics`` then) went back although ``compute()`` never returns it now."""
    model = run.Model(interval=4)
    values = {"train/ne/click": 0.75, "train/ne.ndcg@3/click": 0.5, "train/ctr.ctr/buy/window": 0.25}
    model.train_metrics.set_extra_state({"step": 12, "tasks": ["click", "buy"]})
    callback, trainer = RecMetricCallback(), _Trainer()
    callback.load_state_dict({"train_logged_at": 12, "train_values_at": 12, "train_values": values})
    callback.on_train_start(trainer, model)  # type: ignore[arg-type]
    assert trainer.callback_metrics == {"train/ne/click": torch.tensor(0.75, dtype=torch.float64)}


# ------------------------------------------------------------ which values go back: the keys reported, a module kept


class _AtStart(run.Model):
    """The helper's model (another training module if given) recording ``trainer.callback_metrics`` at ``on_train_start``.

    The LightningModule's ``on_train_start`` runs after the callbacks': it sees what the callback put
    back. A module of another configuration loads with ``strict_loading = False`` (metrics removed).
    """

    def __init__(self, **module: Any) -> None:
        super().__init__()
        if module:
            self.train_metrics = tmx.RecMetricModule(run.TASKS, **module)
            self.strict_loading = False
        self.at_start: dict[str, float] = {}
        self.kept: dict[str, float] | None = None

    def on_train_start(self) -> None:
        self.at_start = {key: float(value) for key, value in self.trainer.callback_metrics.items()}
        callback = next(cb for cb in self.trainer.callbacks if isinstance(cb, RecMetricCallback))
        self.kept = callback.state_dict()["train_values"]  # what a checkpoint saved before the first compute holds


def _resume(model: _AtStart, resume: Path, max_steps: int) -> tuple[L.Trainer, run.Recorder]:
    """Resume the fit in this process until ``max_steps``, without validation nor checkpoints."""
    recorder = run.Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        enable_checkpointing=False,
        logger=recorder,
        callbacks=[RecMetricCallback()],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, ckpt_path=resume)
    return trainer, recorder


def _train_values(rows: Rows) -> list[tuple[int, dict[str, float]]]:
    # the metric keys alone: interval rows carry Lightning's "epoch" too
    return [
        (step, {k: v for k, v in row.items() if k != "epoch"})
        for step, row in rows
        if "train/ne/click" in row or "fit/ne/click" in row
    ]


def test_a_resume_with_another_configuration_gets_back_only_the_keys_its_module_reports(one_process_runs):
    """Metrics removed and added, the window and the throughput dropped: the resumed metrics' keys alone go back.

    The checkpoint at 5 follows the compute at 3 (interval 3): its NE and CTR of both tasks (numpy over
    the first 3 batches) are in ``callback_metrics`` from the start; no key of calibration, AUC, a
    window or the throughput, which the resumed module does not report (its first compute, at 6, says
    which keys it reports). Another prefix: none goes back.
    """
    ckpt = one_process_runs["root"] / "whole" / "ckpt" / "step" / "step=5.ckpt"
    whole_seen = one_process_runs["whole"][1]
    changed = _AtStart(
        metrics={"ne": "ne", "ctr": "ctr", "mse": "mse"},
        throughput=False,
        compute_interval_steps=run.INTERVAL,
        prefix="train/",
    )
    trainer, recorder = _resume(changed, ckpt, max_steps=6)
    (step, first), *_ = _train_values(recorder.rows)
    assert step == 5 and sorted(first) == sorted(f"train/{m}/{t}" for m in ("ne", "ctr", "mse") for t in TASKS)
    before = [b for s, b in whole_seen if s < run.INTERVAL]  # the samples of the values logged at 3
    expected = {f"train/ne/{t}": _ne(before, t) for t in TASKS} | {
        f"train/ctr/{t}": _weighted(before, t)["ctr"] for t in TASKS
    }
    assert sorted(changed.at_start) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(changed.at_start[key], value, rtol=1e-10, err_msg=key)
    assert changed.kept == changed.at_start  # a checkpoint before the first compute holds those alone

    renamed = _AtStart(
        metrics=run.METRICS,
        window_size=run.WINDOW,
        throughput=False,
        compute_interval_steps=run.INTERVAL,
        prefix="fit/",
    )
    trainer, _ = _resume(renamed, ckpt, max_steps=6)
    assert renamed.at_start == {} and renamed.kept is None
    # nor at the fit's end: a compute writes its own keys, and Lightning clears none during the fit
    assert sorted(trainer.callback_metrics) == sorted(
        f"fit/{m}/{t}{w}" for m in run.METRICS for t in TASKS for w in ("", "/window")
    )


def test_a_window_resized_since_the_checkpoint_gets_back_its_lifetime_values_alone(one_process_runs):
    """Regression: the window values logged before the checkpoint went back in ``callback_metrics`` although the
    resized window starts empty (they covered samples of a window of the other size, which the module no longer
    holds). The lifetime values (numpy over the first 3 batches) go back; the window keys wait for the first
    compute (at 6), whose window covers the resumed batch alone."""
    ckpt = one_process_runs["root"] / "whole" / "ckpt" / "step" / "step=5.ckpt"
    resized = _AtStart(
        metrics=run.METRICS, window_size=run.WINDOW // 2, compute_interval_steps=run.INTERVAL, prefix="train/"
    )
    _, recorder = _resume(resized, ckpt, max_steps=6)
    before = [b for s, b in one_process_runs["whole"][1] if s < run.INTERVAL]
    expected = {f"train/ne/{t}": _ne(before, t) for t in TASKS} | {
        f"train/{m}/{t}": _weighted(before, t)[m] for m in ("ctr", "calibration") for t in TASKS
    }
    trained = {key: value for key, value in resized.at_start.items() if "/throughput/" not in key}
    assert sorted(trained) == sorted([*expected, *(f"train/auc/{t}" for t in TASKS)])
    for key, value in expected.items():
        np.testing.assert_allclose(trained[key], value, rtol=1e-10, err_msg=key)
    assert resized.kept == resized.at_start  # a checkpoint before the first compute holds those alone
    (step, first), *_ = _train_values(recorder.rows)
    assert step == 5 and [s for s, _ in resized.seen] == [5]
    np.testing.assert_allclose(first["train/ctr/click/window"], _weighted([resized.seen[0][1]], "click")["ctr"])


def test_a_metric_started_afresh_by_a_resume_with_other_settings_gets_no_value_back(one_process_runs):
    """Regression: NE rebuilt under its name with another ``eta`` (a state named after it) starts afresh under
    ``strict_loading = False``, yet its value logged before the checkpoint went back under ``train/ne/<task>``
    until the first compute. Now only CTR (resumed; numpy over the first 3 batches) goes back; NE's first compute
    covers the resumed batch alone (numpy, predictions clipped to ``[eta, 1 - eta]``)."""
    ckpt = one_process_runs["root"] / "whole" / "ckpt" / "step" / "step=5.ckpt"
    eta = 0.25
    changed = _AtStart(
        metrics={"ne": {"metric": "ne", "eta": eta}, "ctr": "ctr"},
        throughput=False,
        compute_interval_steps=run.INTERVAL,
        prefix="train/",
    )
    with pytest.warns(UserWarning, match="a checkpoint of other settings"):
        _, recorder = _resume(changed, ckpt, max_steps=6)
    before = [b for s, b in one_process_runs["whole"][1] if s < run.INTERVAL]
    assert sorted(changed.at_start) == [f"train/ctr/{t}" for t in sorted(TASKS)]
    for task in TASKS:
        np.testing.assert_allclose(changed.at_start[f"train/ctr/{task}"], _weighted(before, task)["ctr"], rtol=1e-12)
    (step, first), *_ = _train_values(recorder.rows)
    assert step == 5 and [s for s, _ in changed.seen] == [5]
    clipped = {k: v.clamp(eta, 1 - eta) if k.endswith("_pred") else v for k, v in changed.seen[0][1].items()}
    for task in TASKS:
        np.testing.assert_allclose(first[f"train/ne/{task}"], _ne([clipped], task), rtol=1e-10)


@pytest.mark.ddp
def test_a_2_rank_checkpoint_resumed_in_one_process_carries_the_lifetime_and_its_values(ddp_runs):
    """A 2-rank checkpoint resumed in one process: both ranks' lifetime states merged, the windows restart.

    The values logged at 9 under DDP go back in ``callback_metrics`` (numpy over both ranks' batches up to
    9: the merged states are those), but not the window or throughput keys, whose states restarted. The
    first compute (12, the cadence kept) covers both ranks' batches before the checkpoint and the resumed
    fit's (numpy). Before, the module started afresh and lost the lifetime.
    """
    ckpt = ddp_runs["root"] / "whole" / "ckpt" / "step" / "step=10.ckpt"
    model = _AtStart()
    with pytest.warns(UserWarning, match=r"lifetime values carried from 2 ranks onto 1; windows restart"):
        _, recorder = _resume(model, ckpt, max_steps=12)
    _, seen = ddp_runs["whole"]
    logged = [b for s, b in seen if s < 9]
    lifetime_keys = {f"train/{n}/{t}" for n in run.METRICS for t in TASKS}  # no window, no throughput key
    assert {k for k in model.at_start if k.startswith("train/")} == lifetime_keys
    [(step, row)] = _train_values(recorder.rows)
    assert step == 11 and [s for s, _ in model.seen] == [10, 11]
    batches = [b for s, b in seen if s < 10] + [b for _, b in model.seen]
    for task in TASKS:
        np.testing.assert_allclose(model.at_start[f"train/ne/{task}"], _ne(logged, task), rtol=1e-10)
        np.testing.assert_allclose(row[f"train/ne/{task}"], _ne(batches, task), rtol=1e-10)
        np.testing.assert_allclose(row[f"train/ctr/{task}"], _weighted(batches, task)["ctr"], rtol=1e-12)


def test_the_logged_values_go_back_for_no_module_started_afresh_on_load():
    """The rule without a fit: each way ``on_load_checkpoint`` starts the module afresh drops the values."""
    model = run.Model(interval=4)
    state = {"train_logged_at": 12, "train_values_at": 12, "train_values": {"train/ne/click": 0.75}}
    # a checkpoint of 2 ranks in one process; one saved in ddp_spawn's main process after a 2-rank fit
    for per_rank in ([{"train_metrics": None}, {"train_metrics": {}}], [{"train_metrics": None}, None]):
        model.train_metrics.set_extra_state({"step": 12, "tasks": ["click", "buy"]})
        callback, trainer = RecMetricCallback(), _Trainer()
        with pytest.warns(UserWarning, match="`train_metrics` starts afresh"):
            callback.on_load_checkpoint(None, model, {"rec_metric_modules": per_rank})  # type: ignore[arg-type]
        callback.load_state_dict(state)
        callback.on_train_start(trainer, model)  # type: ignore[arg-type]
        assert model.train_metrics._step == 12  # the cadence carries on
        assert trainer.callback_metrics == {}
        assert callback.state_dict()["train_values"] is None
    # the same callback in a later fit of a module restored whole: the values go back (nothing carried over)
    callback.setup(trainer, model, "fit")  # type: ignore[arg-type]
    callback.load_state_dict(state)
    callback.on_train_start(trainer, model)  # type: ignore[arg-type]
    assert trainer.callback_metrics == {"train/ne/click": torch.tensor(0.75, dtype=torch.float64)}
