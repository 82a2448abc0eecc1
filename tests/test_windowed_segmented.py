"""``Windowed(Segmented(...))`` keeps each window sample's ``(task, segment)`` position and terms, not a dense
``(T, S)`` copy of every state per update: values against plain references, checkpoints old and new.

References: a fresh ``Segmented`` fed only the window's updates (chosen by the window rule written here in
plain Python), and per-segment sums written with NumPy.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import Segmented, Windowed

FIXTURE = Path(__file__).parent / "fixtures" / "windowed_segmented_ring_c4c0a92.pt"

INNER = {
    "CTR": lambda t: tmx.CTR(num_tasks=t),
    "NE": lambda t: tmx.NormalizedEntropy(num_tasks=t),
    "Calibration": lambda t: tmx.Calibration(num_tasks=t),
}


def _batches(seed: int, sizes: list[int], tasks: int, segments: int, zero: tuple[int, ...] = ()) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(sizes):
        shape = (n,) if tasks == 1 else (tasks, n)
        weights = torch.randint(1, 4, (n,), generator=g).double()
        out.append(
            {
                "preds": torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01,
                "target": torch.randint(0, 2, shape, generator=g),
                "weights": weights * 0 if i in zero else weights,
                "segments": torch.randint(0, segments, (n,), generator=g),
            }
        )
    return out


def _window_of(batches: list[dict], window: int, max_updates: int | None = None) -> list[dict]:
    """The window rule in plain Python: newest whole updates within ``window`` samples (at most ``max_updates``),
    a newest update larger than the window cut to its newest samples; all-zero-weight updates take no room."""
    kept: list[dict] = []
    used = 0
    for batch in reversed([b for b in batches if bool(b["weights"].any())]):
        n = batch["preds"].shape[-1]
        if not kept and n > window:
            return [{k: v[..., n - window :] for k, v in batch.items()}]
        if used + n > window or (max_updates is not None and len(kept) == max_updates):
            break
        kept.insert(0, batch)
        used += n
    return kept


def _fresh(factory, tasks: int, segments: int, batches: list[dict]) -> torch.Tensor:
    metric = Segmented(factory(tasks), num_segments=segments)
    for b in batches:
        metric.update(b["preds"], b["target"], b["weights"], segments=b["segments"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # segments without data: nan, as the windowed metric's
        return metric.compute()


def _feed(metric: Windowed, batches: list[dict]) -> None:
    for b in batches:
        metric.update(b["preds"], b["target"], b["weights"], segments=b["segments"])


def _values(metric: Windowed) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("kind", list(INNER))
@pytest.mark.parametrize(("tasks", "segments"), [(1, 1), (1, 6), (3, 4)])
@pytest.mark.parametrize("max_updates", [None, 3])
def test_window_is_a_fresh_segmented_over_the_window_updates(kind, tasks, segments, max_updates):
    """After every update (one larger than the window, one of zero weights among them)."""
    sizes = [5, 9, 3, 12, 7, 1, 25, 4, 8, 6, 2, 10]
    batches = _batches(3, sizes, tasks, segments, zero=(5, 9))
    metric = Windowed(Segmented(INNER[kind](tasks), num_segments=segments), 20, max_updates=max_updates)
    assert metric._hist is not None  # the histogram-entries path, not a dense ring slot per update
    for i, b in enumerate(batches):
        _feed(metric, [b])
        values = _values(metric)
        _close(values["window"], _fresh(INNER[kind], tasks, segments, _window_of(batches[: i + 1], 20, max_updates)))
        _close(values["lifetime"], _fresh(INNER[kind], tasks, segments, batches[: i + 1]))


def test_window_ctr_against_numpy_per_segment_sums():
    """Multi-task ``(T, N)`` segment ids; CTR = sum(w·y) / sum(w) per (task, segment) of the window's samples."""
    tasks, segments, window = 2, 5, 30
    g = torch.Generator().manual_seed(5)
    metric = Windowed(Segmented(tmx.CTR(num_tasks=tasks), num_segments=segments), window)
    rows = []
    for n in [8, 11, 6, 13, 9, 4]:
        y = torch.randint(0, 2, (tasks, n), generator=g)
        w = torch.rand(n, generator=g, dtype=torch.float64)
        s = torch.randint(0, segments, (tasks, n), generator=g)
        metric.update(torch.rand(tasks, n, generator=g), y, w, segments=s)
        rows.append((y.numpy(), w.numpy(), s.numpy()))
    kept, used = [], 0
    for y, w, s in reversed(rows):
        if used + len(w) > window:
            break
        kept.append((y, w, s))
        used += len(w)
    clicks, total = np.zeros((tasks, segments)), np.zeros((tasks, segments))
    for y, w, s in kept:
        for t in range(tasks):
            np.add.at(clicks[t], s[t], w * y[t])
            np.add.at(total[t], s[t], w)
    with np.errstate(invalid="ignore"):
        expected = clicks / total
    np.testing.assert_allclose(_values(metric)["window"].numpy(), expected, rtol=1e-12)


def test_many_segments_few_touched_keep_the_window_samples_not_dense_copies():
    """S = 1M: the window holds each sample's position and terms (O(window samples)), no (T, S) slot per update."""
    segments, window = 1_000_000, 600
    batches = _batches(8, [100] * 12, 2, 50)
    for b in batches:
        b["segments"] = b["segments"] * 20_000 + 7  # 50 segments of the million touched
    metric = Windowed(Segmented(tmx.CTR(num_tasks=2), num_segments=segments), window)
    _feed(metric, batches)
    values = _values(metric)
    reference = _fresh(INNER["CTR"], 2, segments, _window_of(batches, window))
    touched = torch.unique(torch.cat([b["segments"] for b in batches]))
    _close(values["window"][:, touched], reference[:, touched])
    assert bool(values["window"].isnan().sum() == 2 * (segments - touched.numel()))
    hist = metric._hist
    assert all(index is not None and index.numel() == 200 for index in hist.indices)  # 2 tasks x 100 samples
    assert all(v is not None and tuple(v.shape) == (3, 200) for v in hist.values)  # CTR's three sums
    assert not hist.slots  # no dense block: the window's entries are far fewer than the positions


def test_forward_batch_values_are_the_batch_and_its_kept_part():
    batches = _batches(4, [6, 15], 2, 3)
    metric = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=3), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric(**batches[0])
        out = metric(**batches[1])
    _close(out["lifetime"], _fresh(INNER["NE"], 2, 3, [batches[1]]))
    _close(out["window"], _fresh(INNER["NE"], 2, 3, _window_of(batches, 10)))


def test_state_dict_mid_window_resumes_exactly():
    batches = _batches(6, [7, 12, 5, 9, 11, 6, 10, 8, 12, 4, 3, 5], 2, 4, zero=(6,))
    whole = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=4), 40)
    _feed(whole, batches[:7])
    saved = copy.deepcopy(whole.state_dict())
    resumed = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=4), 40)
    resumed.load_state_dict(saved)
    _feed(whole, batches[7:])
    _feed(resumed, batches[7:])
    for key, value in _values(whole).items():
        assert torch.equal(value.nan_to_num(-1), _values(resumed)[key].nan_to_num(-1))
    _close(_values(resumed)["window"], _fresh(INNER["NE"], 2, 4, _window_of(batches, 40)))


@pytest.mark.parametrize("name", ["ne", "ctr"])
def test_a_checkpoint_of_the_dense_ring_main_kept_loads_and_resumes(name):
    """tests/fixtures: a state_dict written by c4c0a92, whose window kept a dense (T, S) slot per update
    (NE's ring mid-turn: 4 of its 5 slots suffix sums). It now loads (was: an older format, started afresh)."""
    saved = torch.load(FIXTURE, weights_only=False)
    batches = saved["batches"]
    if name == "ne":
        metric, window = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=5), 40), 40
        factory, tasks, segments = INNER["NE"], 2, 5
    else:
        metric, window = Windowed(Segmented(tmx.CTR(), num_segments=3), 30), 30
        factory, tasks, segments = INNER["CTR"], 1, 3
        batches = [
            {"preds": b["preds"][0], "target": b["target"][0], "weights": b["weights"], "segments": b["segments"] % 3}
            for b in batches
        ]
    assert "indices" not in saved[name]["_extra_state"]  # the ring's layout
    metric.load_state_dict(saved[name])
    assert metric._hist.state()["sizes"] == list(saved[name]["_extra_state"]["sizes"])
    values = _values(metric)
    _close(values["window"], _fresh(factory, tasks, segments, _window_of(batches, window)))
    _close(values["lifetime"], _fresh(factory, tasks, segments, batches))
    more = _batches(9, [9, 14, 6, 11], tasks, segments)
    _feed(metric, more)  # the loaded updates leave the window as the run's would
    values = _values(metric)
    _close(values["window"], _fresh(factory, tasks, segments, _window_of(batches + more, window)))
    _close(values["lifetime"], _fresh(factory, tasks, segments, batches + more))


def test_set_dtype_move_reset_and_merge_state():
    batches = _batches(2, [6, 9, 7], 1, 3)
    metric = Windowed(Segmented(tmx.CTR(), num_segments=3), 16)
    _feed(metric, batches[:2])
    metric.set_dtype(torch.float32)
    metric.to("cpu")
    _feed(metric, batches[2:])
    values = _values(metric)
    assert values["window"].dtype == torch.float32
    torch.testing.assert_close(values["window"], _fresh(INNER["CTR"], 1, 3, _window_of(batches, 16)).float())
    other = Windowed(Segmented(tmx.CTR(), num_segments=3), 16)
    _feed(other, batches[:1])
    mine = Windowed(Segmented(tmx.CTR(), num_segments=3), 16)
    _feed(mine, batches[1:])
    mine.merge_state(other)
    values = _values(mine)
    _close(values["lifetime"], _fresh(INNER["CTR"], 1, 3, batches))  # merged lifetime; the window its own
    _close(values["window"], _fresh(INNER["CTR"], 1, 3, _window_of(batches[1:], 16)))
    mine.reset()
    assert mine._hist.state()["sizes"] == [] and not bool(mine.lifetime.weighted_num_samples.any())


def _ddp_sizes(rank: int) -> list[int]:
    return [5, 9, 3, 12, 7] if rank == 0 else [8, 2, 11]


def _ddp_job(rank, world_size):
    batches = _batches(20 + rank, _ddp_sizes(rank), 2, 4, zero=(1,) if rank == 1 else ())
    metric = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=4), 40)  # 20 samples a rank
    _feed(metric, batches)
    saved = metric.state_dict()
    resumed = Windowed(Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=4), 40)
    resumed.load_state_dict(saved)
    return [{k: v.tolist() for k, v in _values(m).items()} for m in (metric, resumed)]


@pytest.mark.ddp
def test_ddp_window_is_each_ranks_share_synced(ddp_pool):
    """Two gloo ranks, uneven batches (rank 1 with a zero-weight one): each keeps 40 // 2 samples of its own
    updates; the synced window is a fresh Segmented over both ranks' kept updates, the lifetime over all."""
    results = ddp_pool.run(_ddp_job)
    batches = [_batches(20 + r, _ddp_sizes(r), 2, 4, zero=(1,) if r == 1 else ()) for r in range(2)]
    window = _fresh(INNER["NE"], 2, 4, [b for r in range(2) for b in _window_of(batches[r], 20)])
    lifetime = _fresh(INNER["NE"], 2, 4, batches[0] + batches[1])
    for rank_values in results:
        for values in rank_values:  # uninterrupted, and resumed from each rank's state_dict
            _close(torch.tensor(values["window"], dtype=torch.float64), window)
            _close(torch.tensor(values["lifetime"], dtype=torch.float64), lifetime)


# every metric Segmented accepts, wrapped as Windowed(Segmented(m)): its own inputs (TensorWeightedAverage's
# values and weights, NumMissingLabels' NaN labels), unweighted batches, and the two that count zero-weight rows
_POINTWISE = (
    "CTR Calibration CalibrationFreeNE LabelAverage LogLoss NEPositive NormalizedEntropy NumMissingLabels "
    "NumPositiveSamples NumServingExamples RecalibratedCalibration RecalibratedNE SumWeights TensorWeightedAverage "
    "WeightedAccuracy WeightedAverage WeightedMAE WeightedMSE WeightedNMSE WeightedNRMSE WeightedPrecision "
    "WeightedR2 WeightedRMSE WeightedRecall WeightedSumPredictions"
).split()
_COUNTS_ZERO_WEIGHT = {
    "TensorWeightedAverage(weighted=False)": lambda t: tmx.TensorWeightedAverage(num_tasks=t, weighted=[False] * t),
    "NumMissingLabels(count_zero_weight=True)": lambda t: tmx.NumMissingLabels(num_tasks=t, count_zero_weight=True),
}
_EVERY = {**{n: (lambda name: lambda t: getattr(tmx, name)(num_tasks=t))(n) for n in _POINTWISE}, **_COUNTS_ZERO_WEIGHT}


def _every_batches(name: str, seed: int, sizes: list[int], tasks: int, segments: int, weighted: bool) -> list:
    """``(args, segments, all weights zero)`` per update, in the wrapped metric's own argument layout."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(sizes):
        shape = (n,) if tasks == 1 else (tasks, n)
        preds = torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01
        target = torch.randint(0, 2, shape, generator=g).double()
        if name.startswith("NumMissingLabels"):
            target[torch.rand(shape, generator=g) < 0.3] = float("nan")
        zero = weighted and i % 4 == 3
        weights = torch.randint(1, 4, (n,), generator=g).double() * (0 if zero else 1) if weighted else None
        ids = torch.randint(0, segments, shape if i % 2 else (n,), generator=g)  # (T, N) and (N,) ids
        args = (preds, weights) if name.startswith("TensorWeightedAverage") else (preds, target, weights)
        out.append((args, ids, zero))
    return out


def _every_window(batches: list, window: int, counts_zero: bool) -> list:
    """The window rule in plain Python (as ``_window_of``) over ``_every_batches``' updates."""
    kept: list = []
    used = 0
    for args, ids, zero in reversed(batches):
        n = args[0].shape[-1]
        if n == 0 or (zero and not counts_zero):
            continue
        if not kept and n > window:
            return [(tuple(a if a is None else a[..., n - window :] for a in args), ids[..., n - window :], zero)]
        if used + n > window:
            break
        kept.insert(0, (args, ids, zero))
        used += n
    return kept


def _every_fresh(factory, tasks: int, segments: int, batches: list) -> torch.Tensor:
    metric = Segmented(factory(tasks), num_segments=segments)
    for args, ids, _ in batches:
        metric.update(*args, segments=ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute()


@pytest.mark.parametrize("name", list(_EVERY))
@pytest.mark.parametrize(("tasks", "weighted"), [(1, True), (2, True), (3, False)])
def test_every_segmented_metric_window_lifetime_and_forward(name, tasks, weighted):
    """Each metric Segmented accepts: window and lifetime after every update, forward's batch values (an update
    larger than the window, zero-weight updates, an empty one), across a pickle and a state_dict load mid-run."""
    factory, segments, window = _EVERY[name], 4, 12
    counts_zero = name in _COUNTS_ZERO_WEIGHT
    batches = _every_batches(name, 11 + tasks, [3, 5, 0, 7, 25, 2, 4, 8, 1, 6], tasks, segments, weighted)
    metric = Windowed(Segmented(factory(tasks), num_segments=segments), window)
    assert metric._hist is not None
    for i, (args, ids, _) in enumerate(batches):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = metric(*args, segments=ids)
        if args[0].shape[-1]:
            _close(out["lifetime"], _every_fresh(factory, tasks, segments, [batches[i]]))
            kept = _every_window([batches[i]], window, counts_zero)
            if kept:
                _close(out["window"], _every_fresh(factory, tasks, segments, kept))
        values = _values(metric)
        _close(
            values["window"],
            _every_fresh(factory, tasks, segments, _every_window(batches[: i + 1], window, counts_zero)),
        )
        _close(values["lifetime"], _every_fresh(factory, tasks, segments, batches[: i + 1]))
        if i == 4:
            metric = pickle.loads(pickle.dumps(metric))
        if i == 6:
            resumed = Windowed(Segmented(factory(tasks), num_segments=segments), window)
            resumed.update(*batches[1][0], segments=batches[1][1])  # mid-run: the load replaces its progress
            resumed.load_state_dict(metric.state_dict())
            metric = resumed


# rank sizes: one rank without updates; one whose first update is empty and one of zero weight;
# equal step counts with dist_sync_on_step (a rank's update larger than its share, an empty one)
_DDP_CASES = {"empty_rank": ([5, 9, 3, 12, 7], []), "uneven": ([0, 4], [8, 2, 0, 11]), "on_step": ([30, 2], [3, 0])}


def _ddp_case_batches(case: str, rank: int) -> list[dict]:
    return _batches(50 + rank, list(_DDP_CASES[case][rank]), 2, 4, zero=(1,) if rank == 1 else ())


def _ddp_case_job(rank, world_size, case):
    metric = Windowed(Segmented(tmx.CTR(num_tasks=2), num_segments=4), 20, dist_sync_on_step=case == "on_step")
    batches, forwarded = _ddp_case_batches(case, rank), []
    for b in batches:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = metric(b["preds"], b["target"], b["weights"], segments=b["segments"])
        forwarded.append({k: v.tolist() for k, v in out.items()})
    return {k: v.tolist() for k, v in _values(metric).items()}, forwarded


@pytest.mark.ddp
@pytest.mark.parametrize("case", list(_DDP_CASES))
def test_ddp_uneven_and_empty_ranks_sync_the_window(ddp_pool, case):
    """Two gloo ranks, each keeping 20 // 2 samples of its own updates: the synced window is a fresh Segmented
    over both ranks' kept updates, the lifetime over all; forward's batch values are the rank's own batch, or
    with dist_sync_on_step the step's batches of both ranks (each cut to its share)."""
    results = ddp_pool.run(_ddp_case_job, case)
    batches = [_ddp_case_batches(case, r) for r in range(2)]
    window = _fresh(INNER["CTR"], 2, 4, [b for r in range(2) for b in _window_of(batches[r], 10)])
    lifetime = _fresh(INNER["CTR"], 2, 4, batches[0] + batches[1])
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for rank, (values, forwarded) in enumerate(results):
        _close(as_tensor(values["window"]), window)
        _close(as_tensor(values["lifetime"]), lifetime)
        for i, out in enumerate(forwarded):
            step = [batches[r][i] for r in range(2)] if case == "on_step" else [batches[rank][i]]
            _close(as_tensor(out["lifetime"]), _fresh(INNER["CTR"], 2, 4, step))
            kept = [k for b in step for k in _window_of([b], 10)]
            _close(as_tensor(out["window"]), _fresh(INNER["CTR"], 2, 4, kept))


def test_multi_task_positions_made_once_not_per_update(monkeypatch):
    """The ``(T, 1)`` task offsets of the flat positions are kept (an ``arange`` per step cost a small update
    ~3 %); kept per device, and right after a pickle. Values against NumPy per-(task, segment) sums."""
    tasks, segments = 3, 4
    metric = Windowed(Segmented(tmx.SumWeights(num_tasks=tasks), num_segments=segments), 1000)
    batches = _batches(17, [8, 8, 8, 8], tasks, segments)
    _feed(metric, batches[:1])
    made = []
    real = torch.arange
    monkeypatch.setattr(torch, "arange", lambda *a, **k: made.append(a) or real(*a, **k))
    _feed(metric, batches[1:2])
    assert made == []
    metric = pickle.loads(pickle.dumps(metric))
    _feed(metric, batches[2:])
    monkeypatch.undo()
    expected = np.zeros((tasks, segments))
    for b in batches:
        for t in range(tasks):
            np.add.at(expected[t], b["segments"].numpy(), b["weights"].numpy())
    np.testing.assert_allclose(_values(metric)["window"].numpy(), expected, rtol=1e-12)
