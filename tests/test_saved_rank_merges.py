"""Per-rank checkpoints merged by hand, loaded in one process, or empty: what ``RecMetricModule`` says at compute.

docs/module.md ("Under DDP without Lightning") saves one ``state_dict()`` per rank. The module records
the rank and world size that saved its states and warns, at its next ``compute()``, where a rank's
values miss or repeat samples. Three cases it got wrong, each checked here against numpy over the
rows themselves:

* rank 0 loading its own file of another number of ranks and merging every other saved rank's file
  into it by hand (each metric's ``merge_state``, the metric-level recipe of docs/windows.md applied
  to the module; the other ranks empty) holds the whole run, and was still warned of;
* one saved rank's file loaded in one process (no process group) holds that rank's share alone, and
  was not warned of: the values silently left out the other ranks' samples;
* a one-process checkpoint saved before any update, loaded on every rank, double counts nothing,
  and was warned of on every rank but 0.

Files of a run of 3 ranks are written in one process with the record a rank of 3 writes
(``{"rank": r, "world_size": 3}`` in ``_extra_state``); files of a run of 2 ranks by real gloo ranks.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

ROWS = (30, 40, 50)


def _module() -> tmx.RecMetricModule:
    metrics = {"ctr": "ctr", "ne": "ne", "log_loss": "log_loss", "auc": "auc"}  # NE and LogLoss: one compute group
    return tmx.RecMetricModule(["click"], metrics, window_size=20)


def _step(rank: int, part: int) -> dict[str, torch.Tensor]:
    gen = np.random.default_rng(100 + 10 * rank + part)
    n = ROWS[rank]
    return {
        "prediction": torch.from_numpy(gen.uniform(0.05, 0.95, n)),
        "label": torch.from_numpy((gen.uniform(size=n) < 0.4).astype(np.float64)),
    }


def _reference(parts: list[tuple[int, int]]) -> dict[str, float]:
    """CTR, NE (numpy) and AUC (scikit-learn) over the rows of ``parts``, ``(rank, part)`` each."""
    from sklearn.metrics import roc_auc_score  # here: the spawned ranks import this file without it

    p = np.concatenate([_step(rank, part)["prediction"].numpy() for rank, part in parts])
    y = np.concatenate([_step(rank, part)["label"].numpy() for rank, part in parts])
    ctr = y.mean()
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    ne = ce / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return {
        "ctr/click": float(ctr),
        "ne/click": float(ne),
        "log_loss/click": float(ce),
        "auc/click": float(roc_auc_score(y, p)),
        "rows": len(y),
    }


def _trained(rank: int, world_size: int) -> dict[str, object]:
    module = _module()
    module.update(_step(rank, 0))
    states = module.state_dict()
    states["_extra_state"] = {**states["_extra_state"], "rank": rank, "world_size": world_size}
    return states


def _bytes(states: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    torch.save(states, buffer)
    return buffer.getvalue()


def _load(data: bytes) -> tmx.RecMetricModule:
    module = _module()
    module.load_state_dict(torch.load(io.BytesIO(data)))
    return module


def _merge_by_hand(module: tmx.RecMetricModule, files: list[bytes]) -> None:
    """Each other saved rank's file loaded into a module of its own and merged into ``module`` (docs/module.md)."""
    for data in files:
        other = _load(data)
        for group in module.compute_groups:
            module.metrics[group[0]].merge_state(other.metrics[group[0]])
        module.throughput.merge_state(other.throughput)


def _values(module: tmx.RecMetricModule) -> tuple[dict[str, float], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    found = [str(w.message) for w in caught if "its states were saved" in str(w.message)]
    assert all(w.filename == __file__ for w in caught if "its states were saved" in str(w.message))
    return {k: float(v) for k, v in values.items()}, found


def _check(values: dict[str, float], parts: list[tuple[int, int]]) -> None:
    expected = _reference(parts)
    for key in ("ctr/click", "ne/click", "log_loss/click", "auc/click"):
        assert values[key] == pytest.approx(expected[key], rel=1e-9), key
    assert values["throughput/total_examples"] == expected["rows"]


def _resumed_by_hand(rank: int, world_size: int, files: list[bytes], merged: int) -> dict[str, object]:
    """Rank 0 loads saved rank 0's file and merges ``merged`` of the others into it; the other ranks start empty."""
    module = _module()
    if rank == 0:
        module.load_state_dict(torch.load(io.BytesIO(files[0])))
        _merge_by_hand(module, files[1 : 1 + merged])
    module.update(_step(rank, 1))
    return {"values": _values(module)}


@pytest.mark.ddp
def test_own_file_and_the_other_ranks_merged_by_hand_on_another_world_size_warn_of_nothing(ddp_pool):
    files = [_bytes(_trained(rank, 3)) for rank in range(3)]
    run = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]  # every row, once
    for out in ddp_pool.run(_resumed_by_hand, files, 2):
        values, warned = out["values"]
        assert warned == []  # the false warning: "saved by rank 0 of 3, and this is rank 0 of 2"
        _check(values, run)
    # one of the other files forgotten: the values leave its rows out, and rank 0 still says so
    for rank, out in enumerate(ddp_pool.run(_resumed_by_hand, files, 1)):
        values, warned = out["values"]
        _check(values, [(0, 0), (1, 0), (0, 1), (1, 1)])
        assert len(warned) == (rank == 0)


def _saved_by_two_ranks(rank: int, world_size: int) -> bytes:
    module = _module()
    module.update(_step(rank, 0))
    return _bytes(module.state_dict())


@pytest.mark.ddp
def test_one_saved_rank_loaded_in_one_process_warns_naming_load_saved_ranks(ddp_pool):
    files = ddp_pool.run(_saved_by_two_ranks)
    alone = _load(files[1])
    values, warned = _values(alone)
    _check(values, [(1, 0)])  # what was reported without a word: rank 1's share of the run alone
    assert len(warned) == 1
    assert "saved by rank 1 of 2, and this is one process (no process group)" in warned[0]
    assert "saved rank 1 alone" in warned[0] and "load_saved_ranks" in warned[0] and "reset()" in warned[0]
    assert _values(alone)[1] == []  # once per load
    # every saved rank's file: merged by hand onto rank 0's, or by load_saved_ranks, nothing to warn of
    by_hand = _load(files[0])
    _merge_by_hand(by_hand, files[1:])
    resumed = _module()
    resumed.load_saved_ranks([torch.load(io.BytesIO(data)) for data in files])
    for module in (by_hand, resumed):
        values, warned = _values(module)
        assert warned == []
        _check(values, [(0, 0), (1, 0)])
    # a merge by hand that left metrics out: those leave out rank 1's rows, and the warning says so
    partly = _load(files[0])
    partly.metrics["ctr"].merge_state(_load(files[1]).metrics["ctr"])
    values, warned = _values(partly)
    _check({**values, "ctr/click": _reference([(0, 0)])["ctr/click"]}, [(0, 0)])
    assert values["ctr/click"] == pytest.approx(_reference([(0, 0), (1, 0)])["ctr/click"], rel=1e-9)
    assert len(warned) == 1 and "not every metric holds the samples of every rank" in warned[0]
    # reset() after the load starts the values over, and clears the record
    restarted = _load(files[0])
    restarted.reset()
    restarted.update(_step(2, 1))
    values, warned = _values(restarted)
    assert warned == []
    _check(values, [(2, 1)])


def _empty_everywhere(rank: int, world_size: int, empty: bytes, full: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, data in (("empty", empty), ("full", full)):
        module = _load(data)  # the one-process file, loaded on every rank
        module.update(_step(rank, 1))
        out[name] = _values(module)
    return out


@pytest.mark.ddp
def test_an_empty_one_process_checkpoint_loaded_on_every_rank_warns_of_nothing(ddp_pool):
    empty = _module()  # saved before its first update: nothing to count twice
    full = _module()
    full.update(_step(2, 0))
    for rank, out in enumerate(ddp_pool.run(_empty_everywhere, _bytes(empty.state_dict()), _bytes(full.state_dict()))):
        values, warned = out["empty"]
        assert warned == []
        _check(values, [(0, 1), (1, 1)])
        # one that holds rows counts them once per rank: still warned of on every rank but 0
        values, warned = out["full"]
        _check(values, [(2, 0), (2, 0), (0, 1), (1, 1)])
        assert len(warned) == (rank != 0)


@pytest.mark.parametrize("window_size", [20, None])
def test_a_merged_module_reset_after_its_load_holds_no_saved_rank(window_size):
    """The module merged in by hand was reset after loading saved rank 1's file: it holds none of rank 1's rows.

    Its metrics (Windowed or plain) kept the record of the load through ``reset()``, so rank 0's file plus
    those fresh rows passed for the whole run of 2 ranks, without a word.
    """

    def load(data: bytes) -> tmx.RecMetricModule:
        module = tmx.RecMetricModule(
            ["click"], {"ctr": "ctr", "ne": "ne", "log_loss": "log_loss", "auc": "auc"}, window_size=window_size
        )
        module.load_state_dict(torch.load(io.BytesIO(data)))
        return module

    def trained(rank: int) -> bytes:
        module = tmx.RecMetricModule(
            ["click"], {"ctr": "ctr", "ne": "ne", "log_loss": "log_loss", "auc": "auc"}, window_size=window_size
        )
        module.update(_step(rank, 0))
        states = module.state_dict()
        states["_extra_state"] = {**states["_extra_state"], "rank": rank, "world_size": 2}
        return _bytes(states)

    files = [trained(rank) for rank in range(2)]
    module = load(files[0])
    other = load(files[1])
    other.reset()
    other.update(_step(0, 1))
    for group in module.compute_groups:
        module.metrics[group[0]].merge_state(other.metrics[group[0]])
    module.throughput.merge_state(other.throughput)
    values, warned = _values(module)
    _check(values, [(0, 0), (0, 1)])  # rank 0's saved rows and the fresh ones: rank 1's rows are missing
    assert len(warned) == 1 and "saved rank 0 alone" in warned[0]


def test_a_metric_forgets_its_saved_ranks_at_reset_and_keeps_them_through_forward():
    """``forward`` by TorchMetrics' round (``compute_on_cpu``) resets the metric inside: the record stays."""
    from torchmetrics_ext.metrics._checkpoints import note_saved_ranks, saved_ranks

    for metric in (tmx.CTR(compute_on_cpu=True), tmx.CTR()):
        note_saved_ranks(metric, frozenset({(0, 2)}))
        metric(torch.tensor([0.2, 0.7]), torch.tensor([0.0, 1.0]))
        assert saved_ranks(metric) == {(0, 2)}
        metric.reset()
        assert saved_ranks(metric) is None


def test_files_saved_without_a_window_merged_by_hand_into_windowed_modules_warn_of_nothing():
    """A window change restarts each unit's window over the loaded lifetime: its saved ranks are still held."""
    metrics = {"ctr": "ctr", "ne": "ne", "log_loss": "log_loss", "auc": "auc"}
    files = []
    for rank in range(3):
        plain = tmx.RecMetricModule(["click"], metrics)
        plain.update(_step(rank, 0))
        states = plain.state_dict()
        states["_extra_state"] = {**states["_extra_state"], "rank": rank, "world_size": 3}
        files.append(_bytes(states))
    module = _load(files[0])  # window_size=20: the window starts empty over each loaded lifetime
    _merge_by_hand(module, files[1:])
    values, warned = _values(module)
    assert warned == []
    _check(values, [(0, 0), (1, 0), (2, 0)])
