"""Windowed exact AUC-family metrics updated from the chunks their ``_list_update`` gives (no ring slot).

``AUC``/``AUPRC`` (exact), ``GroupedAUC``/``GroupedAUPRC`` (exact) and ``RegressionAUC``/``XAUC``
only append samples: ``Windowed`` asks them for the chunks an update would append and commits
them without a slot of statistics. Checked here: the path is taken (and not taken where it must
not be), lifetime and window values equal scikit-learn / the pairwise brute force on the samples
the window rule keeps (written out in the test), and equal bit for bit what the general path of
the same wrapper gives; rejected batches leave everything as it was; checkpoints load.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.test_auc import ref_auc, ref_auprc, ref_grouped
from tests.test_pairwise_auc import ref_rauc, ref_xauc
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.wrappers.windowed import Windowed

WINDOW = 24
# batch sizes: small ones, an empty one, one exactly the window, one larger than the window (cut)
SIZES = (8, 5, 0, 9, 24, 3, 40, 7, 6, 1, 11)


def _per_task(ref: Callable[..., float], num_tasks: int) -> Callable[..., Any]:
    def value(p: np.ndarray, y: np.ndarray, w: np.ndarray | None, g: np.ndarray | None) -> np.ndarray:
        if num_tasks == 1:
            return np.array(ref(p, y, w) if g is None else ref_grouped(p, y, g, w, ref))
        if g is None:
            return np.array([ref(p[t], y[t], w) for t in range(num_tasks)])
        return np.array([ref_grouped(p[t], y[t], g, w, ref) for t in range(num_tasks)])

    return value


# name -> (factory(num_tasks), reference(num_tasks), grouped, regression labels)
CASES: dict[str, tuple[Callable[[int], Any], Callable[..., float], bool, bool]] = {
    "AUC": (lambda t: tmx.AUC(num_tasks=t), ref_auc, False, False),
    "AUPRC": (lambda t: tmx.AUPRC(num_tasks=t), ref_auprc, False, False),
    "AUC-logits": (lambda t: tmx.AUC(num_tasks=t, from_logits=True), ref_auc, False, False),
    "GroupedAUC": (lambda t: tmx.GroupedAUC(num_tasks=t), ref_auc, True, False),
    "GroupedAUPRC": (lambda t: tmx.GroupedAUPRC(num_tasks=t), ref_auprc, True, False),
    "RegressionAUC": (lambda t: tmx.RegressionAUC(num_tasks=t), ref_rauc, False, True),
    "XAUC": (lambda t: tmx.XAUC(num_tasks=t), ref_xauc, False, True),
}


def _batches(name: str, num_tasks: int, weighted: bool, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Float32 scores with ties (so the stored float32 copies are the values the references see)."""
    rng = np.random.default_rng(seed)
    regression = CASES[name][3]
    out = []
    for k, n in enumerate(SIZES):
        shape = (n,) if num_tasks == 1 else (num_tasks, n)
        p = np.round(rng.random(shape), 1).astype(np.float32)
        if name.endswith("logits"):
            p = (p * 8 - 4).astype(np.float32)
        y = np.round(rng.random(shape) * 3, 0) if regression else (rng.random(shape) < 0.4).astype(np.int64)
        batch = {"preds": torch.from_numpy(p), "target": torch.from_numpy(y)}
        if CASES[name][2]:
            batch["groups"] = torch.from_numpy(rng.integers(0, 3, n))
        if weighted:
            w = rng.integers(1, 5, n).astype(np.float32) / 4
            if k % 3 == 1:
                w[: n // 2] = 0.0  # rows of zero weight (dropped by the exact CPU paths)
            if k == 7:
                w[:] = 0.0  # a batch of zero weights only: it adds nothing and takes no room in the window
            batch["weights"] = torch.from_numpy(w)
        out.append(batch)
    return out


def _kept(sizes: list[int], window: int) -> list[tuple[int, int]]:
    """The window rule, written out: (batch index, newest samples kept) for each batch in the window."""
    kept: list[tuple[int, int]] = []
    used = 0
    for i in range(len(sizes) - 1, -1, -1):
        n = sizes[i]
        if n == 0:
            continue
        if not kept and n > window:
            return [(i, window)]
        if used + n > window:
            break
        kept.append((i, n))
        used += n
    return kept[::-1]


def _joined(batches: list[dict[str, torch.Tensor]], parts: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for i, n in parts:
        for key, value in batches[i].items():
            out.setdefault(key, []).append(value[..., value.shape[-1] - n :].numpy())
    return {key: np.concatenate(values, axis=-1).astype(np.float64) for key, values in out.items()}


def _reference(name: str, num_tasks: int, data: dict[str, np.ndarray]) -> np.ndarray:
    ref = _per_task(CASES[name][1], num_tasks)
    g = data.get("groups")
    return ref(data["preds"], data["target"], data.get("weights"), None if g is None else g.astype(np.int64))


def _update(metric: Windowed, batch: dict[str, torch.Tensor]) -> None:
    kwargs = {k: v for k, v in batch.items() if k not in ("preds", "target")}
    metric.update(batch["preds"], batch["target"], **kwargs)


def _values(metric: Windowed) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():  # an undefined window warns: not what is tested here
        warnings.simplefilter("ignore")
        return metric.compute()


@pytest.fixture
def slots(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Counts the ring slots filled (``Windowed._batch_into`` calls), per wrapper id."""
    counts: dict[int, int] = {}
    original = Windowed._batch_into

    def counting(self: Windowed, *args: Any, **kwargs: Any) -> Any:
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Windowed, "_batch_into", counting)
    return counts


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_list_updates_match_the_references_and_the_slot_path(name, num_tasks, weighted, device_path, slots):
    if device_path and (weighted or num_tasks == 3) and name not in ("AUC", "XAUC"):
        pytest.skip("the device path is covered by AUC and XAUC for weights and tasks")
    factory = CASES[name][0]
    fast = tmx.Windowed(factory(num_tasks), window_size=WINDOW)
    general = tmx.Windowed(factory(num_tasks), window_size=WINDOW)
    assert fast.__dict__["_zero_sums"]
    general.__dict__["_zero_sums"] = False  # the slot path, as before the metrics had `_list_update`
    batches = _batches(name, num_tasks, weighted)
    sizes: list[int] = []
    with force_device_path(device_path):
        for batch in batches:
            _update(fast, batch)
            _update(general, batch)
            sizes.append(batch["preds"].shape[-1])
            got, want = _values(fast), _values(general)
            for part in ("lifetime", "window"):
                assert torch.equal(got[part].isnan(), want[part].isnan())
                assert torch.equal(got[part].nan_to_num(), want[part].nan_to_num()), part  # bit for bit
            lifetime = _joined(batches, [(i, n) for i, n in enumerate(sizes) if n])
            # a batch whose weights are all zero takes no room (DESIGN: it changes nothing)
            room = [0 if "weights" in b and not b["weights"].any() else n for b, n in zip(batches, sizes)]
            window = _joined(batches, _kept(room, WINDOW))
            np.testing.assert_allclose(got["lifetime"].numpy(), _reference(name, num_tasks, lifetime), rtol=1e-9)
            np.testing.assert_allclose(got["window"].numpy(), _reference(name, num_tasks, window), rtol=1e-9)
    # only the batch larger than the window filled a slot (its cut takes the general way: the whole
    # batch for the lifetime, then its newest samples for the window)
    cuts = sum(n > WINDOW for n in SIZES)
    assert slots.get(id(fast), 0) == 2 * cuts
    assert slots[id(general)] == len(SIZES) + cuts
    assert fast._ring.zero_slots is False  # the cut batch's slot was written
    for part in ("lifetime", "window"):
        got_states, want_states = getattr(fast, part).metric_state, getattr(general, part).metric_state
        for state, value in want_states.items():
            joined = torch.cat([c.reshape(-1) for c in got_states[state]]) if got_states[state] else None
            expected = torch.cat([c.reshape(-1) for c in value]) if value else None
            assert (joined is None) == (expected is None) or joined.numel() == expected.numel() == 0
            if joined is not None and expected is not None:
                assert torch.equal(joined, expected), (part, state)


def test_small_batches_fill_no_slot_and_keep_the_ring_zero(slots):
    metric = tmx.Windowed(tmx.AUC(num_tasks=2), window_size=WINDOW)
    for batch in _batches("AUC", 2, True)[:4]:
        _update(metric, batch)
    assert slots.get(id(metric), 0) == 0
    assert metric._ring.zero_slots


@pytest.mark.parametrize(
    ("metric", "args"),
    [
        (tmx.AUC(num_bins=100), (torch.rand(4), torch.ones(4))),
        (tmx.GroupedAUC(groups_complete_per_batch=True), (torch.rand(4), torch.ones(4), torch.zeros(4, dtype=int))),
        (tmx.AUC(compute_on_cpu=True), (torch.rand(4), torch.ones(4))),
        (tmx.XAUC(compute_on_cpu=True), (torch.rand(4), torch.ones(4))),
        (tmx.AUC().set_dtype(torch.float64), (torch.rand(4), torch.ones(4))),
        (tmx.AUC(), (torch.rand(4), None)),
        (tmx.GroupedAUC(), (torch.rand(4), torch.ones(4), None)),
    ],
    ids=[
        "binned",
        "groups-complete",
        "auc-compute-on-cpu",
        "xauc-compute-on-cpu",
        "set-dtype",
        "no-target",
        "no-groups",
    ],
)
def test_list_update_leaves_to_update_what_update_must_do_itself(metric, args):
    assert metric._list_update(*args) is None


@pytest.mark.parametrize(
    ("name", "change", "exc", "match"),
    [
        ("AUC", {"preds": torch.tensor([0.5, float("nan"), 0.1])}, ValueError, "preds"),
        ("AUC", {"preds": torch.tensor([0.5, 1.5, 0.1])}, ValueError, "preds"),
        ("AUC", {"target": torch.tensor([0, 2, 1])}, ValueError, "target"),
        ("AUC", {"weights": torch.tensor([1.0, -1.0, 1.0])}, ValueError, "weights"),
        ("AUC", {"target": torch.tensor([0, 1])}, ValueError, "target"),
        ("GroupedAUC", {"groups": torch.tensor([0.5, 1.0, 0.0])}, (TypeError, ValueError), "groups"),
        ("GroupedAUC", {"groups": torch.tensor([0, 1])}, ValueError, "groups"),
        ("XAUC", {"target": torch.tensor([0.0, float("inf"), 1.0])}, ValueError, "target"),
        ("XAUC", {"weights": torch.tensor([1.0, -2.0, 1.0])}, ValueError, "weights"),
    ],
)
def test_a_rejected_batch_changes_nothing(name, change, exc, match, slots):
    metric = tmx.Windowed(CASES[name][0](1), window_size=WINDOW)
    for batch in _batches(name, 1, True)[:3]:
        _update(metric, batch)
    before = copy.deepcopy(metric.state_dict())
    values, count = _values(metric), metric._ring.count
    lengths = {
        part: {k: len(v) for k, v in getattr(metric, part).metric_state.items()} for part in ("lifetime", "window")
    }
    bad = {"preds": torch.tensor([0.5, 0.2, 0.1]), "target": torch.tensor([0, 1, 1]), "weights": torch.ones(3)}
    if CASES[name][2]:
        bad["groups"] = torch.tensor([0, 1, 1])
    bad.update(change)
    with pytest.raises(exc, match=match):
        _update(metric, bad)
    assert metric._ring.count == count
    assert {
        part: {k: len(v) for k, v in getattr(metric, part).metric_state.items()} for part in ("lifetime", "window")
    } == lengths
    after = metric.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert type(value) is type(after[key])
    for part, value in _values(metric).items():
        assert torch.equal(value.nan_to_num(), values[part].nan_to_num())


@pytest.mark.parametrize("name", ["AUC", "GroupedAUPRC", "XAUC"])
def test_scores_that_require_grad_keep_no_graph(name):
    metric = tmx.Windowed(CASES[name][0](1), window_size=WINDOW)
    batch = _batches(name, 1, True)[0]
    batch["preds"] = batch["preds"].clone().requires_grad_(True)
    batch["weights"] = batch["weights"].clone().requires_grad_(True)
    with torch.enable_grad():
        _update(metric, batch)
    for part in ("lifetime", "window"):
        for chunks in getattr(metric, part).metric_state.values():
            assert not any(c.requires_grad for c in chunks)


@pytest.mark.parametrize("saved_by_slots", [False, True], ids=["list-updates", "slot-updates"])
@pytest.mark.parametrize("name", ["AUC", "GroupedAUC", "RegressionAUC"])
def test_checkpoint_of_list_updates_loads_and_goes_on(name, saved_by_slots):
    """Saved after list updates, or by the slot path (what earlier versions wrote): loads, goes on alike."""
    factory = CASES[name][0]
    batches = _batches(name, 3, True, seed=1)
    metric = tmx.Windowed(factory(3), window_size=WINDOW)
    metric.__dict__["_zero_sums"] = not saved_by_slots
    metric.persistent(True)
    for batch in batches[:6]:
        _update(metric, batch)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    restored = tmx.Windowed(factory(3), window_size=WINDOW)
    restored.persistent(True)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.__dict__["_zero_sums"]
    for batch in batches[6:]:
        _update(metric, batch)
        _update(restored, batch)
    sizes = [b["preds"].shape[-1] for b in batches]
    got = _values(restored)
    want = _values(metric)
    for part in ("lifetime", "window"):
        assert torch.equal(got[part].nan_to_num(), want[part].nan_to_num())
    window = _joined(batches, _kept(sizes, WINDOW))
    np.testing.assert_allclose(got["window"].numpy(), _reference(name, 3, window), rtol=1e-9)


def test_a_subclass_with_its_own_update_takes_the_general_way(slots):
    """An inherited ``_list_update`` would bypass the subclass's ``update``: its window is fed by ``update``."""

    class Flipped(tmx.AUC):
        def update(self, preds, target, weights=None):
            super().update(1 - preds, target, weights)

    class Plain(tmx.AUC):
        pass

    flipped, plain = tmx.Windowed(Flipped(), window_size=WINDOW), tmx.Windowed(Plain(), window_size=WINDOW)
    assert not flipped.__dict__["_zero_sums"]
    assert plain.__dict__["_zero_sums"]
    p, y = torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([1, 1, 0, 0])
    flipped.update(p, y)
    plain.update(p, y)
    assert slots.get(id(plain), 0) == 0
    want = ref_auc(1 - p.numpy().astype(np.float64), y.numpy(), None)
    for value in flipped.compute().values():
        assert value.item() == pytest.approx(want, abs=1e-12)
