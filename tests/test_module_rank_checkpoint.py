"""A plain-PyTorch DDP loop that saves the metric module on rank 0 alone and loads it on every rank.

The usual ``if rank == 0: torch.save(model.state_dict())`` checkpoint of a training loop without
Lightning holds rank 0's metric states only; loaded on every rank, the synced values count rank 0's
samples once per rank (``total_examples`` 2 x 30 where the run saw 30 + 40 rows). The module records
the rank and world size that saved its states (rank 0 of 1 in one process) and warns, at the first
``compute()`` or ``local_compute()`` on a rank holding another rank's states (a one-process checkpoint
on a rank other than 0) or its own of another number of ranks, rather than report those values without
a word. Each rank loading its own ``state_dict`` resumes exactly (checked against numpy over the
concatenated rows) and warns nothing; so does ``RecMetricCallback``'s merge onto another number of ranks.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.helpers.ddp import DDPPool

pytestmark = pytest.mark.ddp

ROWS = {0: 30, 1: 40, 2: 50}
ONE_PROCESS = 5  # the part of a run in one process (rank 0's rows, other values)


def _module() -> tmx.RecMetricModule:
    return tmx.RecMetricModule(["click"], {"ctr": "ctr", "ne": "ne"}, window_size=20)


def _step(rank: int, part: int) -> dict[str, torch.Tensor]:
    gen = np.random.default_rng(10 * rank + part)
    n = ROWS[rank]
    return {
        "prediction": torch.from_numpy(gen.uniform(0.05, 0.95, n)),
        "label": torch.from_numpy((gen.uniform(size=n) < 0.4).astype(np.float64)),
    }


def _save(module: tmx.RecMetricModule) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _load(data: bytes) -> tmx.RecMetricModule:
    module = _module()
    module.load_state_dict(torch.load(io.BytesIO(data)))  # torch.load's default weights_only=True
    return module


def _values(module: tmx.RecMetricModule, local: bool = False) -> tuple[dict[str, float], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.local_compute() if local else module.compute()
    found = [w for w in caught if "its states were saved" in str(w.message)]
    assert all(w.filename == __file__ for w in found), [w.filename for w in found]  # the user's line
    return {k: float(v) for k, v in values.items() if "throughput/" not in k or "total" in k}, [
        str(w.message) for w in found
    ]


def _job(rank: int, world_size: int) -> dict[str, object]:
    import torch.distributed as dist

    trained = _module()
    trained.update(_step(rank, 0))
    own = _save(trained)
    # rank 0's checkpoint, as `if rank == 0: torch.save(...)` writes it, read by every rank
    box = [own if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    out: dict[str, object] = {"extra": trained.get_extra_state()}
    out["rank0"] = _values(_load(box[0]))
    out["rank0_local"] = _values(_load(box[0]), local=True)
    restarted = _load(box[0])
    restarted.reset()  # the documented way on: start the values over
    restarted.update(_step(rank, 1))
    out["reset"] = _values(restarted)
    resumed = _load(own)  # each rank its own states
    resumed.update(_step(rank, 1))
    out["own"] = _values(resumed)
    out["own_again"] = _values(resumed)
    return out


def _ctr(parts: list[tuple[int, int]]) -> float:
    labels = np.concatenate([_step(rank, part)["label"].numpy() for rank, part in parts])
    return float(labels.mean())


def test_a_rank_zero_checkpoint_loaded_on_every_rank_warns_on_the_other_ranks_at_compute(ddp_pool):
    results = ddp_pool.run(_job)
    for rank, out in enumerate(results):
        assert out["extra"] == {"step": 1, "tasks": ["click"], "rank": rank, "world_size": 2}
        values, warned = out["rank0"]
        # the silent wrong number: rank 0's 30 rows on both ranks, not the run's 30 + 40
        assert values["throughput/total_examples"] == 2 * ROWS[0]
        assert values["ctr/click"] == pytest.approx(_ctr([(0, 0)]), abs=1e-12)
        if rank == 0:
            assert warned == []
        else:
            assert len(warned) == 1
            assert "saved by rank 0 of 2" in warned[0] and "rank 1 of 2" in warned[0]
            assert "reset()" in warned[0] and "own `state_dict()`" in warned[0]
        assert len(out["rank0_local"][1]) == (rank != 0)
        # after reset() the values start over, with no warning
        values, warned = out["reset"]
        assert warned == []
        assert values["ctr/click"] == pytest.approx(_ctr([(0, 1), (1, 1)]), abs=1e-12)
        # each rank's own states: the uninterrupted run's values, no warning
        for key in ("own", "own_again"):
            values, warned = out[key]
            assert warned == []
            assert values["ctr/click"] == pytest.approx(_ctr([(0, 0), (1, 0), (0, 1), (1, 1)]), abs=1e-12)
            assert values["throughput/total_examples"] == 2 * (ROWS[0] + ROWS[1])


def test_a_checkpoint_saved_in_one_process_records_rank_0_of_1():
    module = _module()
    module.update(_step(0, 0))
    assert module.get_extra_state() == {"step": 1, "tasks": ["click"], "rank": 0, "world_size": 1}
    values, warned = _values(_load(_save(module)))
    assert warned == []
    assert values["ctr/click"] == pytest.approx(_ctr([(0, 0)]), abs=1e-12)


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_an_unreadable_saved_rank_is_refused_by_set_extra_state(bad):
    module = _module()
    with pytest.raises(ValueError, match="'rank'"):
        module.set_extra_state({"step": 0, "tasks": ["click"], "rank": bad, "world_size": 2})
    assert module.get_extra_state() == {"step": 0, "tasks": ["click"], "rank": 0, "world_size": 1}


def _old_format(data: bytes) -> dict[str, torch.Tensor]:
    """The checkpoint as a version before the module saved its ``_extra_state`` wrote it: no rank recorded."""
    states = torch.load(io.BytesIO(data))
    del states["_extra_state"]
    return states


def _job_then_old_format(rank: int, world_size: int) -> dict[str, object]:
    import torch.distributed as dist

    trained = _module()
    trained.update(_step(rank, 0))
    own = _save(trained)
    box = [own if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    module = _load(box[0])  # rank 0's states: the other rank's record says so
    module.load_state_dict(_old_format(own), strict=False)  # then this rank's own, in the older format
    out: dict[str, object] = {"own_old": _values(module)}
    again = _load(box[0])
    again.load_state_dict({}, strict=False)  # holds nothing of the module: rank 0's states stay, and the record
    out["nothing"] = _values(again)
    return out


def test_a_later_load_without_a_recorded_rank_clears_the_record_of_the_earlier_one(ddp_pool):
    results = ddp_pool.run(_job_then_old_format)
    for rank, out in enumerate(results):
        values, warned = out["own_old"]
        assert warned == []  # each rank holds its own states now
        assert values["ctr/click"] == pytest.approx(_ctr([(0, 0), (1, 0)]), abs=1e-12)
        values, warned = out["nothing"]
        assert len(warned) == (rank != 0)
        assert values["ctr/click"] == pytest.approx(_ctr([(0, 0)]), abs=1e-12)


def _rows(parts: list[tuple[int, int]]) -> int:
    return sum(ROWS[rank] for rank, _ in parts)


def _job_one_process_checkpoint(rank: int, world_size: int, data: bytes) -> dict[str, object]:
    everywhere = _load(data)  # the one-process run's file, loaded on every rank
    everywhere.update(_step(rank, 1))
    alone = _load(data) if rank == 0 else _module()  # on rank 0 alone, the other ranks empty
    alone.update(_step(rank, 1))
    return {"everywhere": _values(everywhere), "alone": _values(alone)}


def test_a_one_process_checkpoint_loaded_on_every_rank_warns_on_every_rank_but_0(ddp_pool):
    single = _module()
    single.update(_step(0, ONE_PROCESS))
    results = ddp_pool.run(_job_one_process_checkpoint, _save(single))
    run = [(0, ONE_PROCESS), (0, 1), (1, 1)]  # every row the two runs saw, once
    for rank, out in enumerate(results):
        values, warned = out["everywhere"]
        # what was reported without a word: the one-process rows counted once per rank
        doubled = [(0, ONE_PROCESS), *run]
        assert values["throughput/total_examples"] == _rows(doubled) != _rows(run)
        assert values["ctr/click"] == pytest.approx(_ctr(doubled), abs=1e-12)
        assert abs(_ctr(doubled) - _ctr(run)) > 1e-3
        if rank == 0:
            assert warned == []  # the whole one-process run is rank 0's to hold
        else:
            assert len(warned) == 1
            assert "saved in one process (no process group), and this is rank 1 of 2" in warned[0]
            assert "2 times" in warned[0] and "rank 0 alone" in warned[0] and "reset()" in warned[0]
        # loaded on rank 0 alone: the uninterrupted count, and no warning
        values, warned = out["alone"]
        assert warned == []
        assert values["throughput/total_examples"] == _rows(run)
        assert values["ctr/click"] == pytest.approx(_ctr(run), abs=1e-12)


@pytest.fixture(scope="module")
def pool3() -> Iterator[DDPPool]:
    """Three spawned gloo ranks for this file's tests of another world size."""
    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


def _save_job(rank: int, world_size: int) -> bytes:
    trained = _module()
    trained.update(_step(rank, 0))
    return _save(trained)


def _own_file_job(rank: int, world_size: int, saved: list[bytes]) -> dict[str, object]:
    """Each rank loads the file saved by the rank of its number, where there is one (else starts empty)."""
    module = _load(saved[rank]) if rank < len(saved) else _module()
    module.update(_step(rank, 1))
    return {"own": _values(module)}


def _callback_job(rank: int, world_size: int, saved: list[bytes]) -> dict[str, object]:
    """A Lightning resume: rank 0's states through the model on every rank, then the callback merges onto rank 0."""
    from torchmetrics_ext.integrations.lightning import RecMetricCallback  # Lightning imported by this job alone

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.train_metrics = _module()

    model = Model()
    model.train_metrics.load_state_dict(torch.load(io.BytesIO(saved[0])))
    checkpoint = {"rec_metric_modules": [None] + [{"train_metrics": torch.load(io.BytesIO(s))} for s in saved[1:]]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the callback's own note: lifetime values carried, windows restart
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    model.train_metrics.update(_step(rank, 1))
    return {"merged": _values(model.train_metrics)}


def test_own_files_of_three_ranks_loaded_on_two_warn_and_the_callback_merge_does_not(ddp_pool, pool3):
    saved = pool3.run(_save_job)
    for rank, out in enumerate(ddp_pool.run(_own_file_job, saved)):
        values, warned = out["own"]
        # what was reported without a word: saved rank 2's rows are in no rank's states
        run = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]
        kept = [(0, 0), (1, 0), (0, 1), (1, 1)]
        assert values["throughput/total_examples"] == _rows(kept) != _rows(run)
        assert values["ctr/click"] == pytest.approx(_ctr(kept), abs=1e-12)
        assert abs(_ctr(kept) - _ctr(run)) > 1e-3
        assert len(warned) == 1
        assert f"saved by rank {rank} of 3, and this is rank {rank} of 2" in warned[0]
        assert "load_saved_ranks" in warned[0] and "Under DDP without Lightning" in warned[0]
        assert "reset()" in warned[0]
    # RecMetricCallback's resume on another number of ranks merges every saved rank's states: nothing to warn of
    for out in ddp_pool.run(_callback_job, saved):
        values, warned = out["merged"]
        assert warned == []
        run = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]
        assert values["throughput/total_examples"] == _rows(run)
        assert values["ctr/click"] == pytest.approx(_ctr(run), abs=1e-12)


def test_own_files_of_two_ranks_loaded_on_three_warn_on_the_ranks_that_load_them(ddp_pool, pool3):
    saved = ddp_pool.run(_save_job)
    for rank, out in enumerate(pool3.run(_own_file_job, saved)):
        values, warned = out["own"]
        run = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)]  # rank 2 saved nothing and starts empty
        assert values["throughput/total_examples"] == _rows(run)
        assert values["ctr/click"] == pytest.approx(_ctr(run), abs=1e-12)
        if rank == 2:
            assert warned == []
        else:
            assert len(warned) == 1
            assert f"saved by rank {rank} of 2, and this is rank {rank} of 3" in warned[0]
            assert "load_saved_ranks" in warned[0]
