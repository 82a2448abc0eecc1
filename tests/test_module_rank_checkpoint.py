"""A plain-PyTorch DDP loop that saves the metric module on rank 0 alone and loads it on every rank.

The usual ``if rank == 0: torch.save(model.state_dict())`` checkpoint of a training loop without
Lightning holds rank 0's metric states only; loaded on every rank, the synced values count rank 0's
samples once per rank (``total_examples`` 2 x 30 where the run saw 30 + 40 rows). The module records
the rank that saved its states and warns, at the first ``compute()`` or ``local_compute()`` on a rank
holding another rank's states, rather than report those values without a word. Each rank loading its
own ``state_dict`` resumes exactly (checked against numpy over the concatenated rows) and warns nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

pytestmark = pytest.mark.ddp

ROWS = {0: 30, 1: 40}


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
    found = [w for w in caught if "saved by rank" in str(w.message)]
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


def test_a_checkpoint_saved_in_one_process_records_no_rank():
    module = _module()
    module.update(_step(0, 0))
    assert module.get_extra_state() == {"step": 1, "tasks": ["click"]}
    values, warned = _values(_load(_save(module)))
    assert warned == []
    assert values["ctr/click"] == pytest.approx(_ctr([(0, 0)]), abs=1e-12)


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_an_unreadable_saved_rank_is_refused_by_set_extra_state(bad):
    module = _module()
    with pytest.raises(ValueError, match="'rank'"):
        module.set_extra_state({"step": 0, "tasks": ["click"], "rank": bad, "world_size": 2})
    assert module.get_extra_state() == {"step": 0, "tasks": ["click"]}


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
