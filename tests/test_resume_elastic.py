"""A training module resumed on another number of ranks carries its lifetime values; its windows restart.

``RecMetricCallback.on_load_checkpoint`` given a complete checkpoint of W ranks in a run of W' != W
ranks merges every saved rank's lifetime states into the new rank 0 (each metric's own
``merge_state``) and starts the other ranks empty: the synced lifetime values then equal one process
over every sample seen before and after the resume. Windows, and the throughput's rates, restart;
its ``total_examples`` carries.

Unit level (no Lightning): a module holding every metric of the registry, saved at W ranks and
restored at W' as Lightning does, in a real gloo group of 2 spawned ranks or in one process, for
W -> W' in 1 -> 2, 2 -> 1, 3 -> 2, 4 -> 2; compared, key by key on every rank, with one process
fed every saved and resumed step (the lifetime) and one fed the resumed steps alone (the window), and
NE / AUC / CTR with numpy and scikit-learn. A checkpoint that cannot be merged, an incomplete one and one
lacking the module keep the restart. Lightning level: a real fit of 2 ranks resumed on 3, and that one
resumed on 2, every training value logged after each resume against numpy / scikit-learn / pandas over
the rows fed before the checkpoint and since.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.helpers import resume_elastic as job
from torchmetrics_ext.integrations.lightning import RecMetricCallback

pytest.importorskip("lightning")

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[1]


def _saved(world: int) -> list[dict[str, Any]]:
    """Each rank's saved training module ``state_dict`` of a fit of ``world`` ranks.

    Built in this process, one rank after the other: a rank's states before a save are its own (no sync
    happens in ``update``; the interval compute's sync leaves them as they were), so they are those a
    rank of a real group saves. The resumed side runs in real gloo groups.
    """
    if world not in _SAVED:
        _SAVED[world] = [job.save_job(rank, world) for rank in range(world)]
    return _SAVED[world]


_SAVED: dict[int, list[dict[str, Any]]] = {}


def _resume(pool: Any, world: int, checkpoint: dict[str, Any], model_state: dict[str, Any]) -> list[dict[str, Any]]:
    if world == 1:
        return [job.resume_job(0, 1, checkpoint, model_state)]
    assert world == 2
    return pool.run(job.resume_job, checkpoint, model_state)


def _checkpoint(saved: list[dict[str, Any]]) -> dict[str, Any]:
    """What the callback writes: rank 0's entry ``None`` (the model's ``state_dict``), the others' states."""
    return {"rec_metric_modules": [{"train_metrics": None}] + [{"train_metrics": s} for s in saved[1:]]}


def _fed(world: int, steps: int, resumed: bool) -> list[dict[str, torch.Tensor]]:
    return [job.step(world, rank, i, resumed) for rank in range(world) for i in range(steps)]


def _one_process(batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    m = job.module()
    for batch in batches:
        m.update(batch)
    return job.values(m)


def _numpy(batches: list[dict[str, torch.Tensor]], task: str) -> dict[str, float]:
    """NE, AUC and CTR of one task over ``batches`` (numpy formulas, scikit-learn)."""
    p, y, w = (torch.cat([b[f"{task}_{c}"] for b in batches]).double().numpy() for c in ("p", "l", "w"))
    base = (w * y).sum() / w.sum()
    entropy = -(base * math.log(base) + (1 - base) * math.log(1 - base))
    return {
        "ne": float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum() / entropy),
        "auc": float(roc_auc_score(y, p, sample_weight=w)),
        "ctr": float(base),
    }


def _check(out: list[dict[str, Any]], saved_world: int) -> None:
    world = len(out)
    before, since = _fed(saved_world, job.SAVED_STEPS, False), _fed(world, job.RESUMED_STEPS, True)
    lifetime, window = _one_process(before + since), _one_process(since)
    for rank, result in enumerate(out):
        got = result["values"]
        assert set(got) == set(lifetime), (rank, sorted(set(got) ^ set(lifetime)))
        for key, value in got.items():
            if key.endswith(("_throughput", "/window_throughput")):
                continue  # rates of the run's clock
            expected = window[key] if key.endswith("/window") else lifetime[key]
            np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12, err_msg=f"rank {rank}: {key}")
        for task in job.TASKS:
            for name, value in _numpy(before + since, task).items():
                np.testing.assert_allclose(got[f"{name}/{task}"], value, rtol=1e-9, err_msg=f"rank {rank}")
            for name, value in _numpy(since, task).items():
                np.testing.assert_allclose(got[f"{name}/{task}/window"], value, rtol=1e-9, err_msg=f"rank {rank}")
        rows = job.BATCH * (len(before) + len(since))
        assert got["throughput/total_examples"] == rows, (rank, got["throughput/total_examples"], rows)
        assert result["step"] == job.SAVED_STEPS + job.RESUMED_STEPS  # the update count carries on
        carried = f"lifetime values carried from {saved_world} ranks onto {world}; windows restart"
        assert [w for w in result["warnings"] if carried in w], (rank, result["warnings"])


# grows (1 -> 2) and shrinks (2 -> 1, 3 -> 2, 4 -> 2); the Lightning fits below grow 2 -> 3 and shrink 3 -> 2
CASES = [(1, 2), (2, 1), (3, 2), (4, 2)]


@pytest.mark.parametrize(("saved_world", "world"), CASES)
def test_every_registry_metric_resumes_its_lifetime_on_another_number_of_ranks(saved_world, world, ddp_pool):
    """Found before the change: every lifetime key covered the resumed steps alone (the module restarted)."""
    saved = _saved(saved_world)
    _check(_resume(ddp_pool, world, _checkpoint(saved), saved[0]), saved_world)


def _check_restarted(out: list[dict[str, Any]], why: str) -> None:
    """Every value on every rank, lifetime and window alike, over the steps since the resume alone."""
    since = _one_process(_fed(len(out), job.RESUMED_STEPS, True))
    for rank, result in enumerate(out):
        for key, value in result["values"].items():
            if key.endswith("_throughput"):
                continue
            same = key if key.endswith("/window") or key.startswith("throughput/") else key + "/window"
            np.testing.assert_allclose(value, since[same], rtol=1e-9, atol=1e-12, err_msg=f"rank {rank}: {key}")
        assert [w for w in result["warnings"] if why in w], (rank, result["warnings"])
        assert not [w for w in result["warnings"] if "carried" in w], (rank, result["warnings"])


def test_a_checkpoint_that_cannot_be_merged_starts_the_module_afresh_on_every_rank(ddp_pool):
    """A saved rank's entry that does not load (a state of another shape): rank 0 says so, every rank restarts."""
    saved = _saved(3)
    broken = dict(saved[2])
    broken["metrics.ne.lifetime.cross_entropy_sum"] = torch.zeros(5, dtype=torch.float64)
    out = ddp_pool.run(job.resume_job, _checkpoint([*saved[:2], broken]), saved[0])
    _check_restarted(out, "holds metric states of 3 rank(s), this run has 2, and they cannot be merged")


def test_an_incomplete_checkpoint_of_another_world_starts_the_module_afresh(ddp_pool):
    """Saved in ddp_spawn's main process (``None`` for every rank but 0), resumed on 2 ranks: as before."""
    saved = _saved(3)
    checkpoint = {"rec_metric_modules": [{"train_metrics": None}, None, None]}
    out = ddp_pool.run(job.resume_job, checkpoint, saved[0])
    _check_restarted(out, "holds metric states of 3 rank(s), this run has 2; `train_metrics` starts afresh")


@pytest.mark.parametrize("strict", [True, False])
def test_a_checkpoint_of_another_world_without_the_module_follows_strict_loading(strict):
    saved = _saved(2)
    model = job.Model()
    model.train_metrics.load_state_dict(saved[0])
    model.strict_loading = strict
    checkpoint = {"rec_metric_modules": [{"train_metrics": None}, {"other_metrics": saved[1]}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if strict:
            with pytest.raises(RuntimeError, match="holds no per-rank states of `train_metrics`"):
                RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
            return
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    assert any("`train_metrics` starts afresh" in str(w.message) for w in caught)
    for i in range(job.RESUMED_STEPS):
        model.train_metrics.update(job.step(1, 0, i, resumed=True))
    got = job.values(model.train_metrics)
    expected = _numpy(_fed(1, job.RESUMED_STEPS, True), "a")
    np.testing.assert_allclose(got["ne/a"], expected["ne"], rtol=1e-9)


def test_rank_zeros_own_entry_is_merged_where_the_model_state_is_not_its_own():
    """A strategy saving the model its own way: rank 0's entry holds its states, the model's may be another rank's."""
    saved = _saved(2)
    model = job.Model()
    model.train_metrics.load_state_dict(saved[1])  # not rank 0's
    checkpoint = {"rec_metric_modules": [{"train_metrics": s} for s in saved]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    for i in range(job.RESUMED_STEPS):
        model.train_metrics.update(job.step(1, 0, i, resumed=True))
    got = job.values(model.train_metrics)
    for name, value in _numpy(_fed(2, job.SAVED_STEPS, False) + _fed(1, job.RESUMED_STEPS, True), "b").items():
        np.testing.assert_allclose(got[f"{name}/b"], value, rtol=1e-9)
    assert got["throughput/total_examples"] == job.BATCH * (2 * job.SAVED_STEPS + job.RESUMED_STEPS)


def test_the_lifetime_values_logged_before_go_back_but_not_the_windows_or_the_throughput():
    """``on_train_start`` puts back the values last logged that the carried states still stand for."""
    saved = _saved(2)
    model = job.Model()
    model.train_metrics.load_state_dict(saved[0])
    callback = RecMetricCallback(val=None, test=None)
    logged = {"ne/a": 0.9, "ne/a/window": 0.8, "throughput/total_examples": 72.0}
    callback.load_state_dict({"train_logged_at": 3, "train_values_at": 3, "train_values": logged})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callback.on_load_checkpoint(None, model, _checkpoint(saved))  # type: ignore[arg-type]
        callback.on_train_start(None, model)  # type: ignore[arg-type]
    assert callback.state_dict()["train_values"] == {"ne/a": 0.9}


# ----------------------------------------------------------------------------- real Lightning fits


def _fit(out: Path, devices: int, extra: list[str]) -> tuple[list[dict[str, Any]], str]:
    """``tests/helpers/lightning_world.py`` on ``devices`` CPU ranks (gloo): each rank's dump and the output."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default", OMP_NUM_THREADS="1")
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(name, None)
    args = ["--out", str(out), "--devices", str(devices), "--batch", "20", "--limit-val", "0", "--window", "452"]
    command = [sys.executable, str(ROOT / "tests" / "helpers" / "lightning_world.py"), *args, *extra]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    dumps = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(devices)]
    for dump in dumps:  # never silently one process
        assert (dump["world"], dump["group"]) == (devices, devices)
    return dumps, done.stderr


def _train_rows(dumps: list[dict[str, Any]], epoch: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The training batches every rank fed in ``epoch``, and the rank of each."""
    fed = [(r, b) for r, d in enumerate(dumps) for b in d["fed"] if b["stage"] == "train" and b["epoch"] == epoch]
    return [b for _, b in fed], [r for r, _ in fed]


def _check_resumed_fit(dumps: list[dict[str, Any]], before: list[dict[str, Any]], epoch: int) -> None:
    """Every training value logged after the resume: lifetime over ``before`` and the rows since, windows since alone."""
    from tests.test_lightning_world import TASKS, _close, _joined, _window_rows, reference

    since, rank_of = _train_rows(dumps, epoch)
    logged = [*dumps[0]["computed"], *(e for e in dumps[0]["logged"] if e["hook"] == "on_train_epoch_end")]
    assert logged and all(e["update"] > before[-1]["update"] for e in logged)
    for entry in logged:
        upto = entry["update"]
        lifetime = _joined(before + [b for b in since if b["update"] <= upto])
        window = _window_rows(since, rank_of, upto, 452 // len(dumps))
        expected = {f"train/{n}/{t}": v for t in TASKS for n, v in reference(lifetime, t).items()}
        expected.update({f"train/{n}/{t}/window": v for t in TASKS for n, v in reference(window, t).items()})
        _close(entry["values"], expected, f"at update {upto}")
    for dump in dumps[1:]:  # the same on every rank
        np.testing.assert_equal(dump["logged"], dumps[0]["logged"])


def test_lightning_fits_resumed_on_more_and_on_fewer_ranks_carry_the_lifetime(tmp_path):
    """A 2-rank fit checkpointed at its first epoch end, resumed on 3 ranks (checkpointed again at its epoch
    end), that resumed on 2: every training value logged after each resume against numpy / scikit-learn /
    pandas over every row fed before the checkpoint and since (the windows: each rank's newest rows since)."""
    saved, _ = _fit(tmp_path / "a", 2, ["--save-dir", str(tmp_path / "ckpt_a"), "--epochs", "1"])
    grown, err = _fit(
        tmp_path / "b",
        3,
        ["--resume", str(tmp_path / "ckpt_a" / "epoch=0.ckpt"), "--save-dir", str(tmp_path / "ckpt_b")],
    )
    assert err.count("lifetime values carried from 2 ranks onto 3; windows restart") == 3
    before, _ = _train_rows(saved, 0)
    _check_resumed_fit(grown, before, 1)
    shrunk, err = _fit(tmp_path / "c", 2, ["--resume", str(tmp_path / "ckpt_b" / "epoch=1.ckpt"), "--epochs", "3"])
    assert err.count("lifetime values carried from 3 ranks onto 2; windows restart") == 2
    _check_resumed_fit(shrunk, before + _train_rows(grown, 1)[0], 2)


def test_a_rank_other_than_0_without_states_of_the_module_starts_it_afresh():
    """Only rank 0 saves ``None`` (its states are the model's): another rank's ``None`` leaves nothing to merge."""
    saved = _saved(2)
    model = job.Model()
    model.train_metrics.load_state_dict(saved[0])
    checkpoint = {"rec_metric_modules": [{"train_metrics": None}, {"train_metrics": None}, {"train_metrics": saved[1]}]}
    with pytest.warns(UserWarning, match="a rank other than 0 saved no states of it.*`train_metrics` starts afresh"):
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    model.train_metrics.update(job.step(1, 0, 0, resumed=True))
    got = job.values(model.train_metrics)
    for name, value in _numpy([job.step(1, 0, 0, resumed=True)], "a").items():
        np.testing.assert_allclose(got[f"{name}/a"], value, rtol=1e-9)


def test_every_rank_leaves_out_the_logged_value_of_a_metric_its_load_started_afresh(ddp_pool):
    """NE rebuilt with another ``eta`` (its states named after it) and ``strict_loading = False``, 3 ranks onto 2.

    Found before the fix: rank 1, started empty, forgot what the model's load had started afresh and put
    NE's old value back in ``trainer.callback_metrics`` (rank 0 did not): only CTR's, whose states carried, goes back.
    """
    saved = [job.settings_save_job(rank, 3) for rank in range(3)]
    out = ddp_pool.run(job.put_back_job, _checkpoint(saved), saved[0])
    assert out == [{"ctr/a": 0.4}, {"ctr/a": 0.4}]


HELD = {
    "windowed": ["`Held.ctr` was restored from the checkpoint's states on every rank"],
    "torchmetrics": ["`Held.seen` was restored from the checkpoint's states on every rank"],
    "not-persistent": [],
    "module-only": [],
}


@pytest.mark.parametrize("held", sorted(HELD))
def test_a_ddp_resume_warns_of_the_metrics_restored_from_rank_zeros_states(ddp_pool, held):
    """Lightning writes rank 0's ``state_dict`` and loads it into every rank: a ``Windowed`` (saved by default) held by
    the model then counts rank 0's samples once per rank (a 2-rank ``ddp_spawn`` fit resumed at its first epoch's end
    logged CTR 0.26 where the uninterrupted fit logs 0.25, over the same 400 samples). Rank 0 says so, naming it; the
    callback's own module, a metric left out of the checkpoint, and the other ranks say nothing."""
    out = ddp_pool.run(job.held_resume_job, held)
    assert out[1] == []
    assert len(out[0]) == len(HELD[held]), out[0]
    for message, said in zip(out[0], HELD[held], strict=True):
        assert message.startswith(f"RecMetricCallback: {said}"), message
        assert "rank 0's samples before the checkpoint 2 times" in message and "persistent(False)" in message
