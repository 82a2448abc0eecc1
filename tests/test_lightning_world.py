"""RecMetricCallback and UnpaddedDistributedSampler in real Lightning fits of 3 and 4 CPU ranks.

Production runs 8 to 64 GPUs; the other Lightning DDP tests run 2 ranks, where shares always
divide by two and "the other rank" is one rank. Each case here starts
``tests/helpers/lightning_world.py`` (``Trainer(devices=3 or 4, accelerator="cpu")``, gloo) and
reads what every rank fed the metrics and logged: the training rows are dealt out ``rank::world``
so the last ranks' last batch is shorter; validation sets of sizes no multiple of the world,
smaller than it (a rank with no sample, one with one), with several dataloaders and
``limit_val_batches``. Every value logged on every rank (training lifetime and window keys at each
interval compute and epoch end, each validation dataloader) must be the same on all ranks and equal
numpy / scikit-learn / pandas formulas written here over the concatenated rows, and each rank's
validation rows must be its documented share of the sampler's order (every sample once).

The default run launches three fits (about 20 s each on a quiet 2-core box): 3 ranks under ``ddp``
saving a checkpoint at each epoch end, the same fit resumed from the first one (each rank's states
restored), and 4 ranks under ``ddp_spawn``. ``TMX_W3_SEEDS=N`` adds a 4-rank fit under
``limit_val_batches``, ``trainer.validate`` on 3 and 4 ranks and ``N`` drawn fits (world, strategy,
sizes, limits, windows, validation every K batches) to the hunt; none is drawn that Lightning itself
cannot run (``_runnable``: a rank without any validation batch is one, see ``docs/module.md``).
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DistributedSampler

from tests.helpers.ranking_reference import group_rows, reference_values

pytest.importorskip("lightning")

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "lightning_world.py"
TASKS = ("click", "buy")
INTERVAL = 2  # the script's training compute interval
METRICS = ("ne", "ctr", "calibration", "auc", "gauc", "ndcg@10")


def _launch(out: Path, args: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(name, None)
    command = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    world = int(args[args.index("--devices") + 1])
    dumps = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
    for dump in dumps:  # never silently one process
        assert (dump["world"], dump["group"]) == (world, world)
    return dumps


# ----------------------------------------------------------------------------- references


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    if (w * y).sum() == 0 or (w * (1 - y)).sum() == 0:
        return math.nan
    return float(roc_auc_score(y, p, sample_weight=w))


def reference(rows: dict[str, np.ndarray], task: str) -> dict[str, float]:
    """Every metric of one task over ``rows`` in one process (docs/pointwise.md's formulas, sklearn, pandas)."""
    p, y, w = rows[f"{task}_pred"], rows[f"{task}_label"], rows["weight"]
    base, positive = (w * y).sum() / w.sum(), (w * y).sum()
    # undefined (docs/policies.md: nan): NE with every label on one class, calibration without a positive
    both = 0 < base < 1
    entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base)) if both else math.nan
    frame = pd.DataFrame({"p": p, "y": y, "w": w, "g": rows["group"]})
    per_group = frame.groupby("g")[["p", "y", "w"]].apply(
        lambda d: _auc(d.y.to_numpy(), d.p.to_numpy(), d.w.to_numpy())
    )
    (ndcg,) = reference_values(group_rows(list(rows["session"]), p, y, w), [("ndcg", 10)])
    return {
        "ne": float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum() / entropy),
        "ctr": float(base),
        "calibration": float((w * p).sum() / positive) if positive > 0 else math.nan,
        "auc": _auc(y, p, w),
        "gauc": float(per_group.dropna().mean()) if per_group.notna().any() else math.nan,
        "ndcg@10": ndcg,
    }


def _joined(batches: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {key: torch.cat([b["rows"][key] for b in batches]).numpy() for key in batches[0]["rows"]}


def _close(got: dict[str, float], expected: dict[str, float], what: str) -> None:
    assert set(got) == set(expected), (what, sorted(set(got) ^ set(expected)))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=f"{what}: {key}")


def _window_rows(fed: list[dict[str, Any]], rank_of: list[int], upto: int, share: int) -> dict[str, np.ndarray]:
    """The rows each rank's window holds after update ``upto``: its newest whole updates of at most ``share`` rows."""
    kept = []
    for rank in sorted(set(rank_of)):
        mine = [b for b, r in zip(fed, rank_of) if r == rank and b["update"] <= upto]
        room = share
        for batch in sorted(mine, key=lambda b: -b["update"]):
            size = len(batch["rows"]["weight"])
            if size > room:
                break
            kept.append(batch)
            room -= size
    return _joined(kept)


def _train_expected(dumps: list[dict[str, Any]], upto: int, window: int | None) -> dict[str, float]:
    fed = [b for d in dumps for b in d["fed"] if b["stage"] == "train"]
    rank_of = [r for r, d in enumerate(dumps) for b in d["fed"] if b["stage"] == "train"]
    lifetime = _joined([b for b in fed if b["update"] <= upto])
    expected = {f"train/{n}/{t}": v for t in TASKS for n, v in reference(lifetime, t).items()}
    if window is not None:
        rows = _window_rows(fed, rank_of, upto, window // len(dumps))
        expected.update({f"train/{n}/{t}/window": v for t in TASKS for n, v in reference(rows, t).items()})
    return expected


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The sampler's documented order: ``DistributedSampler``'s of one rank (the dataset's, or its permutation)."""
    sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


# ----------------------------------------------------------------------------- the check


def check(dumps: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    world, sizes, batch = cfg["devices"], cfg["val_sizes"], cfg["val_batch"]
    epochs, limit = cfg["epochs"], cfg["limit_val"]
    # every rank logged the same values (synced by the module), in the same hooks
    for rank, dump in enumerate(dumps[1:], 1):  # (nan where undefined, as on rank 0)
        for part in ("logged", "computed", "validated", "final"):
            np.testing.assert_equal(dump[part], dumps[0][part], err_msg=f"rank {rank}: {part}")
    # each rank took as many training steps; the last ranks' last batch is shorter
    train = [[b for b in d["fed"] if b["stage"] == "train"] for d in dumps]
    assert len({len(t) for t in train}) == 1
    rows = [torch.cat([b["rows"]["row"] for b in t if b["epoch"] == 0]).long().tolist() for t in train]
    assert [r for t in rows for r in t] and sorted(r for t in rows for r in t) == list(range(cfg["train"]))
    checked = 0
    for entry in dumps[0]["computed"]:  # every interval compute: lifetime and window keys
        _close(entry["values"], _train_expected(dumps, entry["update"], cfg["window"]), f"train at {entry['update']}")
        checked += 1
    steps = len(train[0]) // epochs
    assert [e["update"] for e in dumps[0]["computed"]] == list(range(INTERVAL, len(train[0]) + 1, INTERVAL))
    ends = [e for e in dumps[0]["logged"] if e["hook"] == "on_train_epoch_end"]
    # the epoch end logs unless its last batch just computed
    assert [e["update"] for e in ends] == [steps * (i + 1) for i in range(epochs) if steps * (i + 1) % INTERVAL]
    for entry in ends:
        _close(entry["values"], _train_expected(dumps, entry["update"], cfg["window"]), f"epoch end {entry['epoch']}")
        checked += 1
    # validation: each dataloader's rows on each rank are its share of the sampler's order, each once
    val = [[b for b in d["fed"] if b["stage"] == "val"] for d in dumps]
    several = len(sizes) > 1
    runs = dumps[0]["validated"]  # a run per epoch, or every val_every training batches
    per_epoch = 1 if cfg.get("val_every") is None else steps // cfg["val_every"]
    assert [(e["epoch"], e["train_epoch"]) for e in runs] == [(i, i // per_epoch) for i in range(epochs * per_epoch)]
    for epoch, run in enumerate(runs):
        values = run["values"]  # what Lightning holds after the run, as every rank
        expected: dict[str, float] = {}
        for i, n in enumerate(sizes):
            # the sampler's epoch is the training epoch (Lightning's set_epoch before each run)
            order = _order(n, shuffle=i > 0, seed=i, epoch=run["train_epoch"])
            mine = []
            for rank in range(world):
                batches = sorted(
                    (b for b in val[rank] if b["epoch"] == epoch and b["dataloader"] == i), key=lambda b: b["batch"]
                )
                share = order[rank::world][: _batches(n, world, batch, limit)[rank] * batch]
                got = [int(r) for b in batches for r in b["rows"]["row"].tolist()]
                assert got == share, (epoch, i, rank)
                mine.extend(batches)
            if not mine:  # no batch on any rank: nothing logged
                continue
            suffix = f"/dataloader_idx_{i}" if several else ""
            joined = _joined(mine)
            for task in TASKS:
                for name, value in reference(joined, task).items():
                    expected[f"val/{name}/{task}{suffix}"] = value
        _close(values, expected, f"validation epoch {epoch}")
        checked += 1
    # the fit's last values stay in callback_metrics on every rank
    last = dumps[0]["validated"][-1]["values"]
    np.testing.assert_equal({key: dumps[0]["final"][key] for key in last}, last)
    assert checked >= 1 + len(runs)  # a training compute at least, and every validation run


def _args(cfg: dict[str, Any]) -> list[str]:
    args = ["--devices", str(cfg["devices"]), "--strategy", cfg["strategy"], "--train", str(cfg["train"])]
    args += ["--batch", str(cfg["batch"]), "--val-sizes", ",".join(map(str, cfg["val_sizes"]))]
    args += ["--val-batch", str(cfg["val_batch"]), "--epochs", str(cfg["epochs"])]
    if cfg["window"] is not None:
        args += ["--window", str(cfg["window"])]
    if cfg["limit_val"] is not None:
        args += ["--limit-val", str(cfg["limit_val"])]
    if cfg.get("val_every") is not None:
        args += ["--val-every", str(cfg["val_every"])]
    return args


BASE = {"strategy": "ddp", "train": 299, "val_batch": 10, "epochs": 2, "window": None, "limit_val": None}
CASES = {
    # 3 ranks: 100/100/99 training rows in 5 batches of 20 (rank 2 ends on 19), an epoch end between
    # interval computes; dataloaders of 101 (34/34/33 rows, 4 batches each), 2 (rank 2 has none) and 31
    # (rank 0 has one more batch), a window of 452 (150 rows per rank: the newest 7 or 8 updates)
    "w3-ddp": {**BASE, "devices": 3, "batch": 20, "val_sizes": [101, 2, 31], "window": 452},
    # 4 ranks under ddp_spawn: 75/75/75/74 rows in 3 batches of 30 (a window of 50 rows per rank: one
    # update, two after the short one); one dataloader of 5 samples (2/1/1/1: three ranks of one sample)
    "w4-spawn": {**BASE, "devices": 4, "strategy": "ddp_spawn", "batch": 30, "val_sizes": [5], "window": 200},
    # 4 ranks, 2 dataloaders of 41 and 5 under limit_val_batches=2 (11/10/10/10 and 2/1/1/1 rows)
    "w4-limit": {**BASE, "devices": 4, "batch": 30, "val_sizes": [41, 5], "val_batch": 4, "limit_val": 2},
}


def _batches(n: int, world: int, batch: int, limit: int | float | None) -> list[int]:
    """Each rank's number of batches of ``n`` samples shared out by the sampler, under ``limit_val_batches``."""
    counts = [math.ceil(len(range(rank, n, world)) / batch) for rank in range(world)]
    if limit is None:
        return counts
    return [min(c, limit) if isinstance(limit, int) else int(c * limit) for c in counts]


def _runnable(cfg: dict[str, Any]) -> bool:
    """Whether Lightning itself can run ``cfg`` on every rank (see ``docs/module.md``).

    Every rank takes as many training batches (else DDP's gradient all-reduce waits); every rank has a
    batch of some validation dataloader (Lightning runs no validation hook on a rank without one);
    a fractional ``limit_val_batches`` leaves a rank with batches at least one (Lightning refuses it).
    """
    world, limit = cfg["devices"], cfg["limit_val"]
    if len(set(_batches(cfg["train"], world, cfg["batch"], None))) != 1:
        return False
    loaders = [_batches(n, world, cfg["val_batch"], limit) for n in cfg["val_sizes"]]
    if not all(any(counts[rank] for counts in loaders) for rank in range(world)):
        return False
    plain = [_batches(n, world, cfg["val_batch"], None) for n in cfg["val_sizes"]]
    return not isinstance(limit, float) or all(d > 0 for p, q in zip(plain, loaders) for c, d in zip(p, q) if c > 0)


def _drawn(seed: int) -> dict[str, Any]:
    """A configuration drawn from ``seed`` among those Lightning can run (``_runnable``)."""
    rng = random.Random(seed)
    while True:
        world = rng.choice([3, 4])
        batch = rng.choice([7, 13, 20, 30])
        sizes = [rng.choice([1, 2, world - 1, world, world + 1, rng.randint(5, 120)]) for _ in range(rng.randint(1, 3))]
        cfg = {
            **BASE,
            "devices": world,
            "strategy": rng.choice(["ddp", "ddp_spawn"]),
            "train": rng.randint(world * batch, 4 * world * batch),
            "batch": batch,
            "val_sizes": sizes,
            "val_batch": rng.choice([1, 3, 10]),
            "limit_val": rng.choice([None, None, 1, 2, 3, 0.5]),
            "window": rng.choice([None, world * rng.randint(batch, 3 * batch) + rng.randint(0, world - 1)]),
            "epochs": rng.choice([1, 2]),
        }
        steps = _batches(cfg["train"], world, batch, None)[0]
        cfg["val_every"] = rng.choice([None, None, *range(1, steps + 1)])
        if _runnable(cfg):
            return cfg


SEEDS = int(os.environ.get("TMX_W3_SEEDS", "0"))
LONGER = ["w4-limit"]  # run with TMX_W3_SEEDS set (the default run keeps to three launches of 3 and 4 ranks)
ALL = {**{k: v for k, v in CASES.items() if SEEDS or k not in LONGER}, **{f"seed{s}": _drawn(s) for s in range(SEEDS)}}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The ``w3-ddp`` fit, saving a checkpoint at each epoch end: its folder and each rank's dump."""
    out = tmp_path_factory.mktemp("w3-saved")
    return out, _launch(out, [*_args(CASES["w3-ddp"]), "--save-dir", str(out / "ckpt")])


@pytest.mark.parametrize("name", list(ALL))
def test_lightning_fit_on_3_and_4_ranks_logs_one_process_values_on_every_rank(name, tmp_path, request):
    cfg = ALL[name]
    dumps = request.getfixturevalue("saved_run")[1] if name == "w3-ddp" else _launch(tmp_path, _args(cfg))
    check(dumps, cfg)


def test_a_fit_resumed_on_3_ranks_logs_what_the_uninterrupted_fit_logged(saved_run, tmp_path):
    """Resumed from the first epoch's checkpoint, each rank restores its own training states (lifetime and
    window): every later training and validation value equals the uninterrupted fit's, on every rank."""
    out, whole = saved_run
    ckpt = out / "ckpt" / "epoch=0.ckpt"
    resumed = _launch(tmp_path, [*_args(CASES["w3-ddp"]), "--resume", str(ckpt)])
    updates = {e["update"]: e["values"] for e in whole[0]["computed"]}
    epoch_ends = {e["update"]: e["values"] for e in whole[0]["logged"] if e["hook"] == "on_train_epoch_end"}
    for rank, dump in enumerate(resumed):
        computed = dump["computed"]
        assert [e["update"] for e in computed] == [u for u in updates if u > 5]  # epoch 0 is 5 batches
        for entry in computed:
            _close(entry["values"], updates[entry["update"]], f"rank {rank}: resumed train at {entry['update']}")
        ends = [e for e in dump["logged"] if e["hook"] == "on_train_epoch_end"]
        assert [e["update"] for e in ends] == [u for u in epoch_ends if u > 5]
        for entry in ends:
            _close(entry["values"], epoch_ends[entry["update"]], f"rank {rank}: resumed epoch end")
        assert len(dump["validated"]) == 1  # epoch 1's validation, over the sampler's epoch-1 order
        _close(dump["validated"][0]["values"], whole[0]["validated"][1]["values"], f"rank {rank}: resumed val")


# ----------------------------------------------------------------------------- trainer.validate

VALIDATE_SCRIPT = ROOT / "tests" / "helpers" / "lightning_validate.py"
VALIDATE_BATCH = 10  # the script's batch size
VALIDATE_CASES = {  # (world, sizes, options)
    # 81 samples on 4 ranks are 21/20/20/20 rows, 3/2/2/2 batches: a whole-number limit of 3 over
    # dataloaders without length is rank 0's last batch alone; 120 are 3 batches on every rank, and
    # rank 1 returns None at the third (the batch Lightning counts as last)
    "w4-unsized-limit-rank1-skips": (4, "81,7,120", ["--unsized-limit", "3", "--rank1-skips-last"]),
    # 3 ranks, one sized dataloader of one sample (ranks 1 and 2 have none) between two others
    "w3-one-sample": (3, "101,1,20", []),
}


@pytest.mark.skipif(not SEEDS, reason="the longer hunt's: set TMX_W3_SEEDS (the default run's fits validate)")
@pytest.mark.parametrize("name", list(VALIDATE_CASES))
def test_trainer_validate_on_3_and_4_ranks_gives_every_rank_each_dataloaders_one_process_values(name, tmp_path):
    """``trainer.validate`` with several dataloaders: every rank's returned dicts hold numpy/sklearn values.

    Each dataloader's rows are its samples shared out by the sampler (each once), cut to the limit's
    first batches of each rank, less rank 1's last batch of each dataloader where its step returns None.
    """
    world, sizes, options = VALIDATE_CASES[name]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, str(VALIDATE_SCRIPT), "--out", str(tmp_path), "--sizes", sizes, "--devices", str(world)]
    done = subprocess.run([*command, *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    dumps = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
    limit = int(options[options.index("--unsized-limit") + 1]) if "--unsized-limit" in options else None
    for i, n in enumerate(int(s) for s in sizes.split(",")):
        p, y = torch.cat([batch for dump in dumps for batch in dump["seen"][i]], dim=1).numpy()
        counts = _batches(n, world, VALIDATE_BATCH, limit)
        rows = [min(len(range(rank, n, world)), count * VALIDATE_BATCH) for rank, count in enumerate(counts)]
        if "--rank1-skips-last" in options and counts[1]:  # its last batch (Lightning's count) adds nothing
            last = limit if limit is not None else counts[1]
            if counts[1] == last:  # the batch Lightning counts as last is reached on rank 1
                rows[1] = (last - 1) * VALIDATE_BATCH
        assert len(y) == sum(rows), (i, len(y), rows)
        base = y.mean()
        expected = {"ctr": base}
        if 0 < base < 1:
            entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base))
            expected["ne"] = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean() / entropy
            expected["auc"] = roc_auc_score(y, p)
        # every rank returns the synced values, in every dataloader's dict: each case has a dataloader that
        # some rank has no batch of, or none has a length, so every dataloader is computed at the epoch end
        for rank, dump in enumerate(dumps):
            for result in dump["results"]:
                for metric, value in expected.items():
                    key = f"val/{metric}/click/dataloader_idx_{i}"
                    np.testing.assert_allclose(result[key], value, rtol=1e-9, err_msg=f"rank {rank}: {key}")


def test_a_fit_where_a_rank_has_no_validation_batch_is_refused_before_its_first_step(tmp_path):
    """2 validation samples on 3 ranks: rank 2 has none, and Lightning runs no validation hook on a rank whose
    dataloaders are all empty. The other ranks' sync at the validation epoch end found no partner there: rank 2
    went on to its next training step, whose gradient all-reduce met their gather, and gloo aborted every rank
    ("Received data size doesn't match expected size"). The callback now refuses such a fit at its start, on
    every rank (one all-gather of whether each rank has a batch), naming the ranks and the fix."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    cfg = {**BASE, "devices": 3, "batch": 20, "val_sizes": [2], "epochs": 2}
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), *_args(cfg)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # every rank: Lightning started them in this session
        output, _ = proc.communicate()
        pytest.fail("the fit hung (a rank without validation batches): " + output[-3000:])
    assert proc.returncode != 0
    assert "rank(s) [2] of 3 have no batch of any validation dataloader" in output, output[-4000:]
    assert "doesn't match expected size" not in output
    assert not list(tmp_path.glob("rank*.pt"))  # no fit ended
