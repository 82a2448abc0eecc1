"""Window checks for the shared harness: any family's ``CASES`` get lifetime + window tests for free.

Each check wraps a case's metric in :class:`~torchmetrics_ext.Windowed`, feeds batches of varying
sizes (one larger than the window) and compares, after every batch, the lifetime value with the
case's independent reference over everything seen and the window value with the reference over
the samples the window rule keeps. The rule is written again here, independently of the
package: walking from the newest update back, keep whole updates while their sizes sum to at
most the window; a newest update larger than the window keeps its newest ``window`` samples.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tests.helpers import tester as H
from torchmetrics_ext import Windowed
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning


def kept_ranges(bounds: Sequence[tuple[int, int]], window: int) -> list[tuple[int, int]]:
    """Sample ranges ``[lo, hi)`` the window holds after the updates ``bounds`` (oldest first).

    An empty update takes no room (docs/windows.md): after a batch larger than the window and an
    empty update, the window still holds the big batch's newest samples.
    """
    bounds = [(lo, hi) for lo, hi in bounds if hi > lo]
    if not bounds:
        return []
    lo, hi = bounds[-1]
    if hi - lo > window:
        return [(hi - window, hi)]
    out, total = [], 0
    for lo, hi in reversed(bounds):
        if total + hi - lo > window:
            break
        total += hi - lo
        out.append((lo, hi))
    return out[::-1]


def kept_samples(sizes: Sequence[int], window: int) -> int:
    """Samples the window rule keeps of updates of ``sizes`` (oldest first): the newest whole updates summing to at most ``window``."""
    kept = 0
    for size in reversed(sizes):
        if kept + size > window:
            break
        kept += size
    return kept


def window_bounds(n: int, rng: np.random.Generator, window: int, min_batch: int) -> list[tuple[int, int]]:
    """Consecutive batches of random sizes up to half the window, one empty and one larger than the window."""
    sizes: list[int] = []
    big_at = int(rng.integers(2, 5))
    while sum(sizes) < n:
        if len(sizes) == big_at:
            sizes.append(window + int(rng.integers(1, window // 2 + 2)))
        elif len(sizes) == 1:
            sizes.append(0)  # an empty update changes nothing
        else:
            sizes.append(int(rng.integers(max(1, min_batch // 2), max(2, window // 2) + 1)))
    sizes[-1] -= sum(sizes) - n
    edges = np.cumsum([0, *sizes]).tolist()
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def case_bounds(case: H.MetricCase, n: int, rng: np.random.Generator, window: int) -> list[tuple[int, int]]:
    """:func:`window_bounds` for a case; a case with ``extra["unit"] = u`` (session rows: ``u`` rows per
    session, a session within one update) gets every batch a whole number of units, the window too."""
    unit = case.extra.get("unit", 1)
    if unit == 1:
        return window_bounds(n, rng, window, case.min_batch)
    assert n % unit == 0 and window % unit == 0, f"{case.id}: {n} samples, window {window}, unit {unit}"
    units = window_bounds(n // unit, rng, window // unit, max(1, case.min_batch // unit))
    return [(lo * unit, hi * unit) for lo, hi in units]


def _indices(ranges: Sequence[tuple[int, int]]) -> torch.Tensor:
    parts = [torch.arange(lo, hi) for lo, hi in ranges]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _reference(case: H.MetricCase, data: H.Data, ranges: Sequence[tuple[int, int]]) -> Any:
    return H._expected(case, H.take(data, _indices(ranges), case.sample_axis))


def default_window(case: H.MetricCase, data: H.Data) -> int:
    """About a fifth of the data set (an even number of units, so two DDP ranks keep equal shares)."""
    unit = case.extra.get("unit", 1)
    return max(2 * case.min_batch, H.num_samples(data, case.sample_axis) // (10 * unit) * 2 * unit)


def _compare(metric: Windowed, case: H.MetricCase, data: H.Data, seen: list, window: int, what: str) -> None:
    """Lifetime and window against the independent reference (case tolerance), and the window against a
    fresh metric fed the kept samples in the same pieces (1e-9 relative: the same statistics, summed anew)."""
    kept = kept_ranges(seen, window)
    fresh = case.metric()
    for lo, hi in kept:
        fresh.update(**H.take(data, slice(lo, hi), case.sample_axis))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        values = metric.compute()
        recomputed = fresh.compute()
    H.assert_close(values["lifetime"], _reference(case, data, seen), case.rtol, case.atol, f"{what} lifetime")
    H.assert_close(values["window"], _reference(case, data, kept), case.rtol, case.atol, f"{what} window {kept}")
    H.assert_close(values["window"], _as_numpy(recomputed), 1e-9, 1e-12, f"{what} window vs recomputed {kept}")


def _as_numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.detach().cpu().double().numpy() for k, v in value.items()}
    return value.detach().cpu().double().numpy()


def check_window(
    case: H.MetricCase, seed: int = 0, bounds: Sequence[tuple[int, int]] | None = None, stride: int = 1
) -> None:
    """Lifetime == reference on all batches so far, window == reference on the kept samples, after every batch.

    Batches alternate between ``update`` and ``forward``; ``forward`` returns the batch's values.
    ``stride > 1`` compares after every ``stride``-th batch only (and always after the larger-than-window
    batch, the one after it and the last one), for cases whose reference is slow.
    """
    data = case.make_data(seed)
    window = default_window(case, data)
    n = H.num_samples(data, case.sample_axis)
    bounds = list(bounds or case_bounds(case, n, np.random.default_rng(seed + 5), window))
    assert any(hi - lo > window for lo, hi in bounds), "the check needs a batch larger than the window"
    big = next(i for i, (lo, hi) in enumerate(bounds) if hi - lo > window)
    checked = {*range(0, len(bounds), stride), big, big + 1, len(bounds) - 1}
    metric = Windowed(case.metric(), window)
    for i, (lo, hi) in enumerate(bounds):
        batch = H.take(data, slice(lo, hi), case.sample_axis)
        if i % 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                value = metric(**batch)
            if case.forward_check and hi > lo and i in checked:
                H.assert_close(value["lifetime"], _reference(case, data, [(lo, hi)]), case.rtol, case.atol, "fwd")
                kept = kept_ranges([(lo, hi)], window)
                H.assert_close(value["window"], _reference(case, data, kept), case.rtol, case.atol, "fwd window")
        else:
            metric.update(**batch)
        if i in checked:
            _compare(metric, case, data, bounds[: i + 1], window, f"{case.id} after batch {i} of {bounds}")


def _values(metric: Windowed) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = metric.compute()
    return {
        k: {kk: vv.double().numpy() for kk, vv in v.items()} if isinstance(v, dict) else v.double().numpy()
        for k, v in value.items()
    }


def _assert_identical(a: Any, b: Any, what: str) -> None:
    H.assert_close(a, b, 0.0, 0.0, what)


def check_window_state_dict(case: H.MetricCase, seed: int = 0) -> None:
    """Resume mid-window from ``state_dict``, pickle or deepcopy: identical values at every later step; ``reset``."""
    data = case.make_data(seed)
    window = default_window(case, data)
    n = H.num_samples(data, case.sample_axis)
    bounds = case_bounds(case, n, np.random.default_rng(seed + 6), window)
    batches = [H.take(data, slice(lo, hi), case.sample_axis) for lo, hi in bounds]
    half = max(3, len(batches) // 2)

    metric = Windowed(case.metric(), window)
    for batch in batches[:half]:
        metric.update(**batch)
    _values(metric)  # a compute (sync, list compaction) before saving must not matter
    state = copy.deepcopy(metric.state_dict())
    assert any(k.startswith("lifetime.") for k in state) and any(k.startswith("window.") for k in state)
    resumed = Windowed(case.metric(), window)
    resumed.load_state_dict(state)
    copies = [resumed, pickle.loads(pickle.dumps(metric)), copy.deepcopy(metric)]
    for step, batch in enumerate(batches[half:]):
        metric.update(**batch)
        expected = _values(metric)
        for k, other in enumerate(copies):
            other.update(**batch)
            _assert_identical(_values(other), expected, f"{case.id} copy {k} step {step}")

    metric.reset()
    fresh = Windowed(case.metric(), window)
    for child in ("lifetime", "window"):
        for key, value in getattr(fresh, child).metric_state.items():
            current = getattr(metric, child).metric_state[key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(current, value), f"reset did not restore {child}.{key}"
            else:
                assert len(current) == len(value) == 0, f"reset did not empty {child}.{key}"
    assert metric.get_extra_state()["sizes"] == []
    for batch in batches:
        metric.update(**batch)
        fresh.update(**batch)
    _assert_identical(_values(metric), _values(fresh), f"{case.id} after reset")


def check_window_set_dtype(case: H.MetricCase, seed: int = 0) -> None:
    """``set_dtype(float64)``/``.to(float64)`` mid-stream: lifetime and window equal the reference,
    ``compute`` twice leaves every state bit for bit as it was; a float16 cast keeps integer states.
    """
    data = case.make_data(seed)
    window = default_window(case, data)
    n = H.num_samples(data, case.sample_axis)
    bounds = case_bounds(case, n, np.random.default_rng(seed + 7), window)
    half = len(bounds) // 2
    for how in ("set_dtype", "to"):
        metric = Windowed(case.metric(), window)
        for lo, hi in bounds[:half]:
            metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
        metric = H._convert(metric, how, torch.float64)
        for lo, hi in bounds[half:]:
            metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
        for attempt in range(2):
            metric.lifetime._computed = metric.window._computed = None  # run the kernels again
            children = {name: H.state_values(getattr(metric, name)) for name in ("lifetime", "window")}
            _compare(metric, case, data, bounds, window, f"{case.id} after {how}(float64), compute #{attempt + 1}")
            for name, before in children.items():
                H.assert_same_values(getattr(metric, name), before, f"{case.id} {how} {name}")

    metric = Windowed(case.metric(), window)
    for lo, hi in bounds[:half]:
        metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
    children = {name: H.state_values(getattr(metric, name)) for name in ("lifetime", "window")}
    ring = {k: [c for update in v for c in update] for k, v in metric.get_extra_state().get("chunks", {}).items()}
    metric.set_dtype(torch.float16)
    for name, before in children.items():
        H.assert_integers_kept(before, H.state_values(getattr(metric, name)), f"{case.id} {name}")
    ring_after = {k: [c for update in v for c in update] for k, v in metric.get_extra_state().get("chunks", {}).items()}
    H.assert_integers_kept(ring, ring_after, f"{case.id} ring")
    for lo, hi in bounds[half:]:
        metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
    _values(metric)


def ring_tensors(metric: Windowed) -> list[torch.Tensor]:
    """Every tensor of the ring (or a binned metric's histogram window) as ``get_extra_state`` gives them."""
    out: list[torch.Tensor] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out.append(value.clone())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(metric.get_extra_state())
    return out


def check_window_casts_keep_states(case: H.MetricCase, seed: int = 0) -> None:
    """A dtype cast that is not ``set_dtype`` (``H.CASTS``: Lightning's true precision) mid-stream changes no
    tensor of the lifetime, the window or the ring; lifetime and window then equal the reference and, exactly,
    a ``Windowed`` never cast."""
    data = case.make_data(seed)
    window = default_window(case, data)
    n = H.num_samples(data, case.sample_axis)
    bounds = case_bounds(case, n, np.random.default_rng(seed + 8), window)
    half = len(bounds) // 2
    plain = Windowed(case.metric(), window)
    for lo, hi in bounds:
        plain.update(**H.take(data, slice(lo, hi), case.sample_axis))
    uncast = _values(plain)
    for name, cast in H.CASTS.items():
        what = f"{case.id} after .{name}"
        metric = Windowed(case.metric(), window)
        for lo, hi in bounds[:half]:
            metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
        children = {child: H.state_values(getattr(metric, child)) for child in ("lifetime", "window")}
        ring = ring_tensors(metric)
        metric = cast(metric)
        for child, before in children.items():
            H.assert_same_values(getattr(metric, child), before, f"{what} {child}")
        after = ring_tensors(metric)
        assert [t.dtype for t in after] == [t.dtype for t in ring], f"{what}: ring dtypes changed"
        for old, new in zip(ring, after, strict=True):
            torch.testing.assert_close(new, old, rtol=0, atol=0, equal_nan=True, msg=f"{what}: ring")
        for lo, hi in bounds[half:]:
            metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
        _compare(metric, case, data, bounds, window, what)
        _assert_identical(_values(metric), uncast, f"{what} vs never cast")


# ----------------------------------------------------------------------------- DDP


def _ddp_plan(case: H.MetricCase, data: H.Data, empty_rank: bool, world_size: int) -> tuple[int, list]:
    window = default_window(case, data)
    n = H.num_samples(data, case.sample_axis)
    bounds = case_bounds(case, n, np.random.default_rng(11), window // world_size)
    if empty_rank:
        return window, [bounds] + [[] for _ in range(world_size - 1)]
    cut = (len(bounds) + 1) // 2 + 1  # uneven: rank 0 takes more batches
    return window, [bounds[:cut], bounds[cut:]]


def _window_ddp_job(rank: int, world_size: int, module: str, case_id: str, seed: int, empty_rank: bool) -> Any:
    case = importlib.import_module(module).CASES[case_id]
    data = case.make_data(seed)
    window, shards = _ddp_plan(case, data, empty_rank, world_size)
    metric = Windowed(case.metric(), window)
    for lo, hi in shards[rank]:
        metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TorchMetrics warns when a rank saw no update
        return _values(metric)


def check_window_ddp(pool: Any, module: str, case: H.MetricCase, empty_rank: bool = False, seed: int = 0) -> None:
    """2-process gloo: each rank keeps ``window // 2``; values equal one process over each rank's kept samples."""
    data = case.make_data(seed)
    window, shards = _ddp_plan(case, data, empty_rank, 2)
    everything = [r for shard in shards for r in shard]
    kept = [r for shard in shards for r in kept_ranges(shard, window // 2)]
    expected = {"lifetime": _reference(case, data, everything), "window": _reference(case, data, kept)}
    for rank, value in enumerate(pool.run(_window_ddp_job, module, case.id, seed, empty_rank)):
        H.assert_close(value, expected, case.rtol, case.atol, f"{case.id} window DDP rank {rank} (empty={empty_rank})")
