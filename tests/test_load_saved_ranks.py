"""A plain-PyTorch job resumed on another number of ranks: ``RecMetricModule.load_saved_ranks``.

docs/module.md ("Under DDP without Lightning") saves one ``state_dict()`` per rank. Resumed on
another number of ranks, the module's lifetime must equal one process fed every sample before the
checkpoint and since, its windows restart, and every rank must keep one compute cadence (a module
loaded on rank 0 and fresh elsewhere computed at other steps than the others, which then wait in the
sync). References: numpy and scikit-learn over the rows themselves (``tests/test_reset_lifetime.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.test_reset_lifetime import FACTORIES, _check, _module, _rank_batch, _reference, _window

SAVED_AT, END = 20, 30  # the checkpoint after 20 steps; computes every 5 steps


def _feed(module: tmx.RecMetricModule, step: int, rank: int) -> None:
    p, y, w = _rank_batch(step, rank)
    module.update({"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.tensor(w)})


def _values(module: tmx.RecMetricModule) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return {k: v.item() for k, v in module.compute().items()}


def _expected(got: dict[str, float], before: list, after: list, window: int, what: str) -> None:
    for name in FACTORIES:
        _check(got[f"{name}/click"], _reference(name, before + after), f"{what} {name}")
        _check(got[f"{name}/click/window"], _reference(name, _window(after, window)), f"{what} {name} window")
    assert got["throughput/total_examples"] == sum(len(u[0]) for u in before + after), what


def _saved_by_two_ranks(rank: int, world: int) -> dict:
    module = _module()
    for step in range(SAVED_AT):
        _feed(module, step, rank)
        if module.should_compute():
            module.compute()
    return module.state_dict()


def _resumed_on_two_ranks(rank: int, world: int, saved: list) -> dict[int, dict[str, float]]:
    module = _module()
    module.load_saved_ranks(saved)
    logged = {}
    for step in range(SAVED_AT, END):
        _feed(module, step, rank)
        if module.should_compute():  # both ranks at the same steps, or the sync would wait
            logged[step] = _values(module)
    return logged


def _before() -> list:
    return [_rank_batch(s, r) for r in range(2) for s in range(SAVED_AT)]


@pytest.mark.ddp
def test_two_ranks_resumed_in_one_process(ddp_pool):
    saved = ddp_pool.run(_saved_by_two_ranks)
    module = _module()
    module.load_saved_ranks(saved)
    after = []
    for step in range(SAVED_AT, END):
        _feed(module, step, 0)
        after.append(_rank_batch(step, 0))
        if step in (24, 29):
            assert module.should_compute(), step  # the saved cadence goes on
            _expected(_values(module), _before(), after, 301, f"step {step}")


@pytest.mark.ddp
def test_one_process_resumed_on_two_ranks(ddp_pool):
    saved = []
    for rank in range(2):  # the two shares run in one process, saved as two files would be
        module = _module()
        for step in range(SAVED_AT):
            _feed(module, step, rank)
        saved.append(module.state_dict())
    per_rank = ddp_pool.run(_resumed_on_two_ranks, saved)
    assert per_rank[0] == per_rank[1]
    assert sorted(per_rank[0]) == [24, 29]
    for step, got in per_rank[0].items():
        after = {r: [_rank_batch(s, r) for s in range(SAVED_AT, step + 1)] for r in range(2)}
        window = [u for r in range(2) for u in _window(after[r], 301 // 2)]
        for name in FACTORIES:
            _check(got[f"{name}/click"], _reference(name, _before() + after[0] + after[1]), f"{step} {name}")
            _check(got[f"{name}/click/window"], _reference(name, window), f"{step} {name} window")


def test_bad_saved_states_are_refused_and_change_nothing():
    module = _module()
    _feed(module, 0, 0)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in module.state_dict().items()}
    other_tasks = tmx.RecMetricModule(["buy"], {"ne": "ne"}, window_size=301).state_dict()
    cases = [
        # a wrong type is a WrongTypeError (TypeError and ValueError: docs/policies.md, "Wrong types")
        (module.state_dict(), tmx.WrongTypeError, "`saved` to be a list.*got OrderedDict"),
        ([], ValueError, "at least one"),
        ([{"x": torch.zeros(1)}], ValueError, r"`saved\[0\]`.*step counter"),
        ([3], tmx.WrongTypeError, r"`saved\[0\]`.*got int"),
        ([module.state_dict(), other_tasks], RuntimeError, "cannot be merged"),
    ]
    for bad, error, match in cases:
        with pytest.raises(error, match=match):
            module.load_saved_ranks(bad)
        after = module.state_dict()
        assert after.keys() == before.keys()
        for key, value in before.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(after[key], value), key
    assert module._step == 1
    got = _values(module)
    assert got["ctr/click"] == pytest.approx(_reference("ctr", [_rank_batch(0, 0)]), rel=1e-12)
    assert not np.isnan(got["ctr/click/window"])
