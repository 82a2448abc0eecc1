"""Exact metrics' list states stay short whatever the batch sizes (``utilities/chunks.py``).

The join after ``update`` looked at the newest 64 chunks only, and only when all of them were
small: a large chunk (32,768 elements or more, or an update of 8,192 or more, which skips that
join) at least once in 63 updates left every small chunk unjoined (``AUC()`` fed 62 batches of 50
samples then one of 32,768, 100 times, kept 6,300 chunks per list state). After every update a
metric's lists must now hold at most ``4 W + S / 16384 + 96`` entries, ``W`` the chunks of 8,192
elements or more (never copied) and ``S`` the elements of the smaller ones; a ``Windowed`` lifetime
(which joins chunks up to 32,767 elements) at most ``N / 8192 + 96`` plus the window's chunks.
Values are scikit-learn's or numpy's over all the samples.
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import torchmetrics_ext as tmx
from tests.helpers.window import kept_samples
from torchmetrics_ext import Windowed
from torchmetrics_ext.metrics import base
from torchmetrics_ext.utilities import chunks as C
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning


def _bound(n: int) -> float:
    """The stated bound of a ``Windowed`` lifetime (``join_runs_amortised``): ``N / 8192 + 96`` entries."""
    return n / 8192 + 96


class _Bound:
    """The stated bound of a metric's lists (``TaskMetric._join_small_chunks``): ``4 W + S / 16384 + 96``."""

    def __init__(self, whole: int = 8192, small: int = 1 << 15) -> None:
        self.whole, self.small, self.large, self.rest = whole, small, 0, 0

    def add(self, n: int) -> None:
        if n >= self.whole:
            self.large += 1
        else:
            self.rest += n

    def __float__(self) -> float:
        return 4 * self.large + self.rest / (self.small / 2) + 96


PATTERNS = {
    "periodic-large": [50] * 62 + [32_768],  # the reported case: a large chunk every 63 updates
    "ones-then-large": [1] * 62 + [40_000],
    "alternating-8191-8192": [8191, 8192],
    "whole-only": [8192] * 8,  # every update skips the tail join
    "one-and-large": [1, 33_000],  # runs of one small chunk: nothing to join
    "mixed": [1] * 30 + [33_000] + [7] * 40 + [9000] + [3] * 20,
}
REPEATS = {"periodic-large": 20, "ones-then-large": 16, "alternating-8191-8192": 30, "whole-only": 10}


def _sizes(name: str) -> list[int]:
    if name == "loader-8k-40k":  # a loader of variable batch sizes
        return [int(s) for s in np.random.default_rng(5).integers(8000, 40_001, 40)]
    if name == "one-sample":
        return [1] * 6000
    return PATTERNS[name] * REPEATS.get(name, 12)


ALL = [*PATTERNS, "loader-8k-40k", "one-sample"]


def _batches(sizes: list[int], seed: int):
    rng = np.random.default_rng(seed)
    for n in sizes:
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < p).astype(np.float32)
        yield p, y


def _lengths(metric) -> set[int]:
    return {len(getattr(metric, name)) for name in metric._list_state_dtypes}


@pytest.mark.parametrize("call", ["update", "forward"])
@pytest.mark.parametrize("pattern", ALL)
def test_auc_lists_stay_within_the_bound(pattern, call):
    """``AUC``: after every update (or ``forward``) each list holds at most ``N / 8192 + 96`` entries."""
    sizes = _sizes(pattern)
    if call == "forward" and len(sizes) > 300:
        sizes = sizes[:300]
    metric = tmx.AUC()
    preds, target, seen, bound = [], [], 0, _Bound()
    for p, y in _batches(sizes, 1):
        if call == "update":
            metric.update(torch.from_numpy(p), torch.from_numpy(y))
        else:
            with warnings.catch_warnings():  # a small batch's own value may be undefined
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                metric(torch.from_numpy(p), torch.from_numpy(y))
        preds.append(p)
        target.append(y)
        seen += len(p)
        bound.add(len(p))
        lengths = _lengths(metric)
        assert len(lengths) == 1 and lengths.pop() <= float(bound)
    assert sum(c.numel() for c in metric.preds) == seen
    p, y = np.concatenate(preds), np.concatenate(target)
    np.testing.assert_allclose(metric.compute().item(), skm.roc_auc_score(y, p), rtol=1e-9)


def test_the_reported_pattern_keeps_few_chunks():
    """62 batches of 50 samples then one of 32,768, 100 times: 6,300 chunks per list state before."""
    metric = tmx.AUC()
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        for _ in range(62):
            metric.update(torch.rand(50, generator=g), torch.randint(0, 2, (50,), generator=g))
        metric.update(torch.rand(32_768, generator=g), torch.randint(0, 2, (32_768,), generator=g))
    assert len(metric.preds) == len(metric.signed_weights) <= 4 * 100 + 100 * 62 * 50 / 16_384 + 96 < 600  # was 6,300


class _CopyCounter:
    """Counts, through ``base.join_chunks``, how many times each stored element was copied by a join."""

    def __init__(self) -> None:
        self.copies: dict[int, tuple[weakref.ref, np.ndarray]] = {}

    def counts(self, chunk: torch.Tensor) -> np.ndarray:
        entry = self.copies.get(id(chunk))
        if entry is not None and entry[0]() is chunk:
            return entry[1]
        return np.zeros(chunk.shape[0], dtype=np.int64)

    def __call__(self, chunks):
        out = C.join_chunks(chunks)
        self.copies[id(out)] = (weakref.ref(out), np.concatenate([self.counts(c) for c in chunks]) + 1)
        return out


@pytest.mark.parametrize(("pattern", "most"), [(name, 16) for name in ALL])
def test_auc_joins_copy_each_element_a_bounded_number_of_times(monkeypatch, pattern, most):
    """The amortised run join copies an element once where a large chunk closes its run, and at most
    about 15 times more while it sits at the list's open end (its chunk at least doubles per copy)."""
    counter = _CopyCounter()
    monkeypatch.setattr(base, "join_chunks", counter)
    metric = tmx.AUC()
    for p, y in _batches(_sizes(pattern), 2):
        metric.update(torch.from_numpy(p), torch.from_numpy(y))
    per_element = np.concatenate([counter.counts(c) for c in metric.preds])
    assert per_element.size == sum(_sizes(pattern))
    assert per_element.max() <= most


def test_small_runs_leaves_the_open_end_to_grow_geometrically():
    """A run a large item ends is joined whole; at the end (or before a kept item) the oldest items
    that outweigh the newer ones of the group stay out."""
    assert C.small_runs([16_384, 8192, 4096, 1, 1]) == [(3, 5)]
    assert C.small_runs([16_384, 8192, 4096, 1, 1, 40_000]) == [(0, 5)]
    assert C.small_runs([5, 3, 40_000, 6, 2, 2, 1, 1]) == [(0, 2), (3, 8)]
    assert C.small_runs([5, 3, 40_000, 7, 2, 2, 1, 1]) == [(0, 2), (4, 8)]  # 7 outweighs the rest
    assert C.small_runs([9, 3, 3, 2], kept=[False, False, False, True]) == [(1, 3)]
    assert C.small_runs([20_000, 20_000, 5]) == [(0, 2)]  # a group that reaches 32,768 is joined whole


def test_grouped_auc_lists_stay_within_the_bound():
    """``GroupedAUC``, large chunks every 63 updates: bounded lists, the numpy mean of sklearn's per-group AUC."""
    rng = np.random.default_rng(7)
    metric = tmx.GroupedAUC()
    preds, target, groups, bound = [], [], [], _Bound()
    for n in ([20] * 62 + [33_000] + [9000, 5]) * 8:
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < p).astype(np.float32)
        gr = rng.integers(0, 50, n)
        metric.update(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(gr))
        preds.append(p)
        target.append(y)
        groups.append(gr)
        bound.add(n)
        lengths = _lengths(metric)
        assert len(lengths) == 1 and lengths.pop() <= float(bound)
    p, y, gr = np.concatenate(preds), np.concatenate(target), np.concatenate(groups)
    per_group = [skm.roc_auc_score(y[gr == g], p[gr == g]) for g in np.unique(gr) if 0 < y[gr == g].mean() < 1]
    np.testing.assert_allclose(metric.compute().item(), np.mean(per_group), rtol=1e-9)


def _xauc_reference(p: np.ndarray, y: np.ndarray) -> float:
    """XAUC by its definition: the share of pairs ``i < j`` whose prediction and label signs agree."""
    agree = np.sign(p[:, None] - p[None, :]) == np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(agree), k=1)
    return float((agree & upper).sum() / upper.sum())


def test_xauc_lists_stay_within_the_bound_at_scaled_down_sizes(monkeypatch):
    """``XAUC`` with the size thresholds scaled down 128 times (a pairwise numpy reference stays cheap):
    large chunks every 63 updates and updates at the never-copied size, lists bounded, numpy's value."""
    monkeypatch.setattr(C, "_SMALL", 256)
    monkeypatch.setattr(base, "_WHOLE", 64)
    rng = np.random.default_rng(9)
    metric = tmx.XAUC()
    preds, target, bound = [], [], _Bound(whole=64, small=256)
    for n in ([1] * 62 + [300] + [64, 63] * 10) * 6:
        p = rng.integers(0, 50, n).astype(np.float32)
        y = rng.integers(0, 8, n).astype(np.float32)
        metric.update(torch.from_numpy(p), torch.from_numpy(y))
        preds.append(p)
        target.append(y)
        bound.add(n)
        lengths = _lengths(metric)
        assert len(lengths) == 1 and lengths.pop() <= float(bound)
    np.testing.assert_allclose(
        metric.compute().item(), _xauc_reference(np.concatenate(preds), np.concatenate(target)), rtol=1e-12
    )


def test_flat_ndcg_rows_stay_within_the_bound():
    """Flat NDCG rows (4 per query) with variable query counts: the four lists stay aligned and bounded;
    sklearn's NDCG over the queries with a relevant row."""
    rng = np.random.default_rng(11)
    metric = tmx.NDCG()
    scores, rels, bound, q = [], [], _Bound(), 0
    for queries in ([3] * 62 + [8500] + [2100] * 5) * 4:
        rows = 4 * queries
        s = rng.random(rows).astype(np.float32)
        r = rng.integers(0, 4, rows)
        idx = np.repeat(np.arange(q, q + queries), 4)
        metric.update(torch.from_numpy(s), torch.from_numpy(r), indexes=torch.from_numpy(idx))
        scores.append(s)
        rels.append(r)
        bound.add(rows)
        q += queries
        lengths = _lengths(metric)
        assert len(lengths) == 1 and lengths.pop() <= float(bound)
    s, r = np.concatenate(scores).reshape(-1, 4), np.concatenate(rels).reshape(-1, 4)
    some = r.sum(1) > 0
    np.testing.assert_allclose(metric.compute().item(), skm.ndcg_score(r[some], s[some]), rtol=1e-9)


def test_merges_and_updates_stay_within_the_bound_and_round_trip():
    """Updates with large chunks every 63, merges of small and large metrics in between: bounded lists;
    a ``state_dict`` round trip keeps the value (sklearn's) and later updates stay bounded."""
    rng = np.random.default_rng(13)
    metric, preds, target, bound = tmx.AUC(), [], [], _Bound()

    def batch(n):
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < p).astype(np.float32)
        preds.append(p)
        target.append(y)
        return torch.from_numpy(p), torch.from_numpy(y)

    for step, n in enumerate(([5] * 62 + [33_000]) * 6):
        metric.update(*batch(n))
        bound.add(n)
        if step % 3 == 0:
            other = tmx.AUC()
            size = 40_000 if step % 45 == 0 else 2
            other.update(*batch(size))
            metric.merge_state(other)
            bound.add(size)
        lengths = _lengths(metric)
        assert len(lengths) == 1 and lengths.pop() <= float(bound)
    p, y = np.concatenate(preds), np.concatenate(target)
    metric.persistent(True)
    assert "preds" in metric.state_dict()
    loaded = tmx.AUC()
    loaded.persistent(True)
    loaded.load_state_dict(metric.state_dict())
    want = skm.roc_auc_score(y, p)
    np.testing.assert_allclose(metric.compute().item(), want, rtol=1e-9)
    np.testing.assert_allclose(loaded.compute().item(), want, rtol=1e-9)
    for n in [7] * 62 + [33_000]:
        loaded.update(*batch(n))
        bound.add(n)
        assert len(loaded.preds) <= float(bound)
    p, y = np.concatenate(preds), np.concatenate(target)
    np.testing.assert_allclose(loaded.compute().item(), skm.roc_auc_score(y, p), rtol=1e-9)


@pytest.mark.parametrize("pattern", ["periodic-large", "alternating-8191-8192", "mixed", "one-sample"])
def test_windowed_lifetime_stays_within_the_bound(pattern):
    """``Windowed(AUC)``: the lifetime holds at most ``N / 8192 + 96`` entries plus the window's chunks,
    with a merge now and then; lifetime and window values are sklearn's."""
    sizes = _sizes(pattern)[:1500]
    metric = Windowed(tmx.AUC(), window_size=100_000)
    life = metric._child("lifetime")
    preds, target, updates, seen = [], [], [], 0
    for step, (p, y) in enumerate(_batches(sizes, 3)):
        metric.update(torch.from_numpy(p), torch.from_numpy(y))
        preds.append(p)
        target.append(y)
        updates.append(len(p))
        seen += len(p)
        if step % 50 == 25:
            other = tmx.AUC()
            q = np.random.default_rng(step).random(3).astype(np.float32)
            other.update(torch.from_numpy(q), torch.from_numpy((q > 0.5).astype(np.float32)))
            metric.merge_state(other.metric_state)
            preds.insert(0, q)  # merged chunks go before the lifetime's
            target.insert(0, (q > 0.5).astype(np.float32))
            seen += 3
        window = max(metric._ring.num_chunks.values())
        assert len(life.preds) == len(life.signed_weights) <= _bound(seen) + window
    p, y = np.concatenate(preds), np.concatenate(target)
    kept = kept_samples(updates, 100_000)
    value = metric.compute()
    np.testing.assert_allclose(value["lifetime"].item(), skm.roc_auc_score(y, p), rtol=1e-9)
    np.testing.assert_allclose(value["window"].item(), skm.roc_auc_score(y[-kept:], p[-kept:]), rtol=1e-9)


@pytest.mark.parametrize("name", ["auc", "auc-compute-on-cpu", "grouped-auc"])
def test_forward_keeps_the_run_join_amortised(monkeypatch, name):
    """``forward`` updates the reset lists with its batch alone: that update lowered the record of the joined
    length to 1, so after the batch's chunks were put back with the held ones every ``forward`` of never-copied
    chunks (8,192 samples or more: nothing to join) ran a run join over all the chunks (O(N) per call, 235 scans
    of 43,000 chunks in 300 calls; scaled down here). The run joins scan about as many chunks as ``update`` does
    (a few times the chunks appended in all), the lists stay within the bound and the values are sklearn's."""
    monkeypatch.setattr(C, "_SMALL", 256)
    monkeypatch.setattr(base, "_WHOLE", 64)
    scanned = []
    join = C.join_small_runs

    def counted(lists, *args, **kwargs):
        scanned.append(len(lists[0]))
        return join(lists, *args, **kwargs)

    monkeypatch.setattr(C, "join_small_runs", counted)
    factory = {
        "auc": tmx.AUC,
        "auc-compute-on-cpu": lambda: tmx.AUC(compute_on_cpu=True),
        "grouped-auc": tmx.GroupedAUC,
    }[name]
    metric, bound = factory(), _Bound(whole=64, small=256)
    rng = np.random.default_rng(17)
    preds, target, groups = [], [], []
    for step, n in enumerate([64] * 400 + [1] * 30):
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < 0.5).astype(np.float32)
        g = np.full(n, step % 7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            if name == "grouped-auc":
                metric(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(g))
            else:
                metric(torch.from_numpy(p), torch.from_numpy(y))
        preds.append(p)
        target.append(y)
        groups.append(g)
        bound.add(n)
        assert max(_lengths(metric)) <= float(bound)
    assert sum(scanned) <= 3 * 430, f"{len(scanned)} run joins scanned {sum(scanned)} chunks in 430 calls"
    p, y, g = np.concatenate(preds), np.concatenate(target), np.concatenate(groups)
    if name == "grouped-auc":
        expected = np.mean([skm.roc_auc_score(y[g == k], p[g == k]) for k in range(7)])
    else:
        expected = skm.roc_auc_score(y, p)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-9)


@pytest.mark.parametrize(("even", "odd"), [(torch.int64, torch.uint32), (torch.uint64, torch.int32)])
def test_ranking_ids_of_unpromotable_dtypes_are_never_joined_together(even, odd):
    """Flat ranking rows keep ``indexes`` as given: int64 ids in one update and uint32 in the next counted as
    joinable integers, but ``torch.cat`` promotes no uint16/32/64 with another integer dtype, so the 64th update
    raised its ``RuntimeError`` after joining ``preds`` and ``target`` only (lists of 1, 1, 64 and 64 chunks).
    Every update is taken, the four lists stay aligned, and the value is the MRR by its definition (numpy)."""
    rng = np.random.default_rng(23)
    metric = tmx.MRR()
    ranks = []
    for step in range(130):
        p = rng.permutation(3).astype(np.float32)
        y = np.array([0.0, 1.0, 1.0], dtype=np.float32)
        ids = torch.full((3,), step).to(even if step % 2 == 0 else odd)
        metric.update(torch.from_numpy(p), torch.from_numpy(y), indexes=ids)
        assert len(_lengths(metric)) == 1
        ranks.append(1 + int(np.argmax(y[np.argsort(-p, kind="stable")] > 0)))
    np.testing.assert_allclose(metric.compute().item(), np.mean(1.0 / np.array(ranks)), rtol=1e-12)


def test_a_repeated_unit_view_joins_into_one_view_and_others_are_read_one_by_one():
    """A list of one cached stride-0 view (a ranking metric's unit weights) joins into a stride-0 view of their length.

    Views of the same element made apart join the same way; a list mixing a view with a copy of its values,
    or views of two elements, is concatenated (the values of ``torch.cat`` of the materialised views).
    """
    one, other = torch.ones(()), torch.full((), 2.0)
    view = one.expand(8)
    for chunks in ([view] * 64, [one.expand(8), one.expand(3), one.expand(5)]):
        joined = C.join_chunks(chunks)
        assert joined.stride() == (0,) and joined.data_ptr() == one.data_ptr()
        assert torch.equal(joined, torch.ones(sum(c.shape[0] for c in chunks)))
        assert C._joinable(chunks)
    for chunks in ([view, torch.ones(8)], [view, other.expand(4), view]):
        joined = C.join_chunks(chunks)
        assert joined.stride() == (1,)
        assert torch.equal(joined, torch.cat([c.contiguous() for c in chunks]))
    assert not C._joinable([torch.zeros(C._SMALL)] * 64)  # a repeated large chunk is still refused


def test_flat_ndcg_of_many_small_updates_matches_sklearn():
    """Hundreds of unweighted flat updates (joined unit weights, repeated views) give sklearn's mean NDCG@10."""
    g = torch.Generator().manual_seed(11)
    metric = tmx.NDCG(k=10)
    scores, gains = [], []
    for step in range(200):
        preds = torch.rand(8, generator=g)
        target = torch.randint(0, 3, (8,), generator=g).float()
        target[0] = 1.0  # every query has a positive
        metric.update(preds, target, torch.full((8,), step))
        scores.append(preds.numpy())
        gains.append(target.numpy())
    assert len(metric.weights) < 20  # joined
    expected = np.mean([skm.ndcg_score([y], [p], k=10) for p, y in zip(scores, gains)])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
