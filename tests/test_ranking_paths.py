"""The three computation paths of the ranking kernels give the same values: top-k merge, first-hit counting, sort.

Each metric's spec says which paths apply to it; these tests force each path on data where it
applies and compare it with the sort path (exactly) and with the brute force of ``test_ranking``.
"""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_ranking import ALL, CASES, FLAT_KEYS, dict_ref, flat_data, padded_data, single_ref
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.ranking import _kernel, _topk, _update
from torchmetrics_ext.functional.ranking._kernel import SortedQueries, rank_rows, sorted_values
from torchmetrics_ext.functional.ranking._registry import SPECS
from torchmetrics_ext.functional.ranking._spec import RankingOptions
from torchmetrics_ext.utilities.device import force_device_path

TOPK_METRICS = [name for name, spec in SPECS.items() if spec.topk_value is not None]
FIRST_HIT_METRICS = [name for name, spec in SPECS.items() if spec.first_hit_value is not None]


def topk_values(preds, target, indexes, weights, requests, **options):
    """The top-k merge on ``(name, k)`` requests (the kernels take specs)."""
    named = [(SPECS[name], k) for name, k in requests]
    fast = _topk.grouped_topk_values(preds, target, indexes, weights, named, RankingOptions(**options))
    if fast is None:
        return None
    columns, num_rel, ranked = fast
    return columns.stacked(), num_rel, ranked


def test_first_hit_path_equals_sort_path():
    """MRR/HitRate alone take the sort-free path; mixed with another metric they take the sort path."""
    assert sorted(FIRST_HIT_METRICS) == ["hit_rate", "mrr"]
    for seed, ties in ((10, False), (11, True)):
        data = flat_data(np.random.default_rng(seed), ties=ties, weights=True)
        args = [data[key] for key in FLAT_KEYS]
        fast = tmf.ranking_metrics(*args, weights=data["weights"], ks=(1, 3, None), metrics=FIRST_HIT_METRICS)
        slow = tmf.ranking_metrics(
            *args, weights=data["weights"], ks=(1, 3, None), metrics=(*FIRST_HIT_METRICS, "recall")
        )
        for key, value in fast.items():
            torch.testing.assert_close(value, slow[key], rtol=1e-12, atol=1e-15)
        for action in ("zero", "one"):
            torch.testing.assert_close(
                tmf.mrr(*args, k=2, empty_target_action=action),
                tmf.ranking_metrics(*args, ks=(2,), metrics=("mrr", "ndcg"), empty_target_action=action)["mrr@2"],
            )


@pytest.fixture
def always_merge(monkeypatch):
    """Take the grouped top-k merge on small data too (by default it needs 1000 rows per round)."""
    monkeypatch.setattr(_topk, "ROWS_PER_ROUND", 0)


def _scores(kind, rng, n):
    """Scores that exercise each key encoding of the top-k merge."""
    if kind == "ties":  # many equal scores, relevant and not: the relevance-ascending tie rule
        return torch.tensor(np.round(rng.normal(size=n), 0), dtype=torch.float32)
    if kind == "signed-zeros":  # -0.0 and +0.0 are one score
        values = np.where(rng.random(n) < 0.5, -0.0, 0.0)
        values[rng.random(n) < 0.3] = 1.0
        return torch.tensor(values, dtype=torch.float32)
    if kind == "wide":  # logits over +-1e30 and +-inf: the keys need more than 31 bits (float64 keys)
        values = rng.normal(size=n) * 10.0 ** rng.integers(-30, 31, size=n)
        values[rng.random(n) < 0.05] = np.inf
        values[rng.random(n) < 0.05] = -np.inf
        return torch.tensor(values, dtype=torch.float32)
    if kind == "bfloat16":  # half precision scores (many ties) are widened exactly
        return torch.tensor(rng.random(n), dtype=torch.float32).bfloat16()
    if kind == "float64-exact":  # float64 scores that are float32 values take the 32-bit keys
        return torch.tensor(rng.random(n), dtype=torch.float32).double()
    return torch.tensor(rng.random(n), dtype=torch.float32)  # probabilities: int32 keys


@pytest.mark.parametrize("kind", ["probabilities", "ties", "signed-zeros", "wide", "bfloat16", "float64-exact"])
@pytest.mark.usefixtures("always_merge")
def test_grouped_topk_merge_equals_sort_path_and_reference(kind):
    """Rows grouped by query take the top-k merge; the same rows shuffled take the sort path."""
    rng = np.random.default_rng(13)
    data = flat_data(rng, num_queries=120, max_len=40, weights=True, grouped=True)
    data["preds"] = _scores(kind, rng, data["preds"].numel())
    assert topk_values(data["preds"], data["target"], data["indexes"], None, [("ndcg", 3)]) is not None
    perm = torch.randperm(data["preds"].numel(), generator=torch.Generator().manual_seed(1))
    shuffled = {key: value[perm] for key, value in data.items()}
    ks = (1, 3, 10, 50)
    for kwargs in ({}, {"exponential_gain": True}):
        fast = tmf.ranking_metrics(**data, ks=ks, metrics=TOPK_METRICS, **kwargs)
        slow = tmf.ranking_metrics(**shuffled, ks=ks, metrics=TOPK_METRICS, **kwargs)
        ref = dict_ref(ks, metrics=TOPK_METRICS, **({"exponential": True} if kwargs else {}))(H.to_numpy(data))
        for key, value in fast.items():
            torch.testing.assert_close(value, slow[key], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(value.item(), ref[key], rtol=1e-9, err_msg=key)
    for name, fn in (("precision", tmf.precision_at_k), ("f1", tmf.f1_at_k)):
        adaptive = fn(**data, k=10, adaptive_k=True)
        np.testing.assert_allclose(adaptive.item(), single_ref(name, 10, adaptive=True)(H.to_numpy(data)), rtol=1e-12)
    # the metric class turns its own concatenated copy of the scores into keys, never the caller's
    originals = {key: value.clone() for key, value in data.items()}
    metric = tmx.RankingMetrics(ks=(1, 10), metrics=("recall", "ndcg"))
    half = data["preds"].numel() // 2
    for part in (slice(0, half), slice(half, None)):
        metric.update(data["preds"][part], data["target"][part], data["indexes"][part], weights=data["weights"][part])
    ref = dict_ref((1, 10), metrics=("recall", "ndcg"))(H.to_numpy(data))
    for key, value in metric.compute().items():
        np.testing.assert_allclose(value.item(), ref[key], rtol=1e-9, err_msg=key)
    for key, value in originals.items():
        assert torch.equal(data[key], value), f"caller's {key} was modified"


@pytest.mark.parametrize("max_len", [6, 200])
@pytest.mark.usefixtures("always_merge")
def test_grouped_topk_merge_many_grades_and_bool_target(max_len):
    """Grades up to 40: short queries sort for IDCG, long ones count in several packed words; bool is binary."""
    rng = np.random.default_rng(14)
    data = flat_data(rng, num_queries=80 if max_len == 6 else 30, max_len=max_len, grades=41, grouped=True)
    data["preds"] = data["preds"].float()
    ks = (1, 2, 5)
    for target in (data["target"], data["target"] > 0):
        rows = {**data, "target": target}
        fast = tmf.ranking_metrics(**rows, ks=ks)
        ref = dict_ref(ks)(H.to_numpy({**rows, "target": target.long()}))
        for key, value in fast.items():
            np.testing.assert_allclose(value.item(), ref[key], rtol=1e-9, err_msg=key)


def test_grouped_topk_path_is_taken_only_when_applicable(always_merge, monkeypatch):
    data = H.to_numpy(CASES["flat-grouped-all-w"].make_data())
    grouped = {key: torch.as_tensor(value) for key, value in data.items()}
    args = (grouped["preds"].float(), grouped["target"].double(), grouped["indexes"], grouped["weights"])
    assert topk_values(*args, [("ndcg", 3), ("map", 10)]) is not None
    assert topk_values(*args, [("ndcg", None)]) is None  # whole list: the sort path
    assert topk_values(*args, [("ndcg", _topk.MAX_K + 1)]) is None  # long lists: the sort path
    assert topk_values(args[0].double() + 1e-12, *args[1:], [("ndcg", 3)]) is None  # float64 scores
    shuffled = flat_data(np.random.default_rng(0))
    assert topk_values(shuffled["preds"].float(), shuffled["target"], shuffled["indexes"], None, [("ndcg", 3)]) is None
    assert topk_values(*args, [("ndcg", 3), ("r_precision", None)]) is None  # no top-k value: the sort path
    fractional = args[1] * 0.5
    assert topk_values(args[0], fractional, args[2], None, [("ndcg", 3)]) is None
    monkeypatch.setattr(_topk, "ROWS_PER_ROUND", 1000)  # the default: small inputs are sorted
    assert topk_values(*args, [("ndcg", 3)]) is None


@pytest.mark.parametrize("grouped", [False, True], ids=["sort-path", "topk-merge"])
@pytest.mark.parametrize(("top_grade", "max_len"), [(1, 40), (3, 40), (1, 3), (64, 3), (64, 40), (64, 400)])
def test_ndcg_counts_grades_only_when_the_table_pays(monkeypatch, grouped, top_grade, max_len):
    """IDCG from a (queries, top grade + 1) count table only while it has few cells, else from a sort.

    The table costs every cell per cutoff: one row of grade 64 among many short queries used to
    build 65 cells per query (4-9x slower than sorting). Both routes equal the numpy reference.
    """
    monkeypatch.setattr(_topk, "ROWS_PER_ROUND", 0)
    tables = []  # (route, table shape) of every count table built

    def spy(route, fn):
        def wrapped(counts, *args):
            tables.append((route, tuple(counts.shape)))
            return fn(counts, *args)

        return wrapped

    for module, route in ((_kernel, "sort"), (_topk, "topk")):
        monkeypatch.setattr(module, "ideal_dcg_from_counts", spy(route, module.ideal_dcg_from_counts))
    binary = _kernel._binary_ideal_dcg  # grades 0 and 1: the table's one count column, read as counts of grade 1

    def spy_binary(num_relevant, *args):
        tables.append(("sort", (num_relevant.shape[0], 2)))
        return binary(num_relevant, *args)

    monkeypatch.setattr(_kernel, "_binary_ideal_dcg", spy_binary)
    rng = np.random.default_rng(top_grade * 1000 + max_len)
    num_queries = 300 if max_len < 400 else 20
    data = flat_data(rng, num_queries=num_queries, max_len=max_len, grades=top_grade + 1, grouped=grouped)
    data["preds"] = data["preds"].float()
    data["target"][0] = top_grade
    n, num_rel = data["target"].numel(), int((data["target"] > 0).sum())
    num_groups = int(data["indexes"].unique().numel())
    args = (data["preds"], data["target"], data["indexes"], None)
    assert (topk_values(*args, [("ndcg", 3)]) is not None) == grouped
    ks = (1, 3, 10)
    for exponential in (False, True):
        tables.clear()
        fast = tmf.ranking_metrics(**data, ks=ks, metrics=("ndcg",), exponential_gain=exponential)
        whole = tmf.ndcg(**data, exponential_gain=exponential)  # no cutoff: always the sort path
        ref = dict_ref(ks, metrics=("ndcg",), exponential=exponential)(H.to_numpy(data))
        for key, value in fast.items():
            np.testing.assert_allclose(value.item(), ref[key], rtol=1e-9, err_msg=key)
        whole_ref = single_ref("ndcg", None, exponential=exponential)(H.to_numpy(data))
        np.testing.assert_allclose(whole.item(), whole_ref, rtol=1e-9)
        for route, shape in tables:  # a table has at most as many cells as its route's budget
            assert shape == (num_groups, top_grade + 1)
            assert shape[0] * shape[1] <= (n if route == "topk" else 2 * num_rel), (route, shape, n, num_rel)
        if max_len == 40 and top_grade <= 3:  # the usual case (a few grades, several relevant rows): counts
            assert [route for route, _ in tables] == ["topk" if grouped else "sort", "sort"]
        if top_grade == 64 and max_len <= 40:  # 65 cells per query of ~2 or ~20 rows: sorts
            assert tables == []


@pytest.mark.parametrize("grouped", [False, True], ids=["sort-path", "topk-merge"])
def test_ndcg_count_table_budget_counts_the_cutoffs(monkeypatch, grouped):
    """The count table is read once per cutoff, ten times the sort's cost per cutoff: with many cutoffs
    it must be smaller than its one-cutoff budget. Queries of 4 rows, binary grades, about two relevant
    rows each: the table has half its one-cutoff budget, so IDCG@1..3 count grades while IDCG@1..30 sort
    (counting took 1.5-2x the sort's compute at 30 cutoffs). Values: the numpy reference."""
    monkeypatch.setattr(_topk, "ROWS_PER_ROUND", 0)
    tables = []

    def spy(fn):
        def wrapped(counts, *args):
            tables.append(tuple(counts.shape))
            return fn(counts, *args)

        return wrapped

    for module in (_kernel, _topk):
        monkeypatch.setattr(module, "ideal_dcg_from_counts", spy(module.ideal_dcg_from_counts))
    binary = _kernel._binary_ideal_dcg  # grades 0 and 1: the table's one count column, read as counts of grade 1

    def spy_binary(num_relevant, *args):
        tables.append((num_relevant.shape[0], 2))
        return binary(num_relevant, *args)

    monkeypatch.setattr(_kernel, "_binary_ideal_dcg", spy_binary)
    rng = np.random.default_rng(12)
    num_queries, size = 400, 4
    ids = np.repeat(np.arange(num_queries), size)
    order = np.arange(ids.size) if grouped else rng.permutation(ids.size)
    data = {
        "preds": torch.tensor(rng.random(ids.size)[order], dtype=torch.float32),
        "target": torch.tensor((rng.random(ids.size) < 0.5).astype(np.int64)[order]),
        "indexes": torch.tensor(ids[order]),
    }
    num_rel = int(data["target"].sum())
    budget = ids.size if grouped else 2 * num_rel
    assert 0.4 * budget <= 2 * num_queries <= 0.6 * budget  # the table: about half its one-cutoff budget
    for ks, counted in (((1, 2, 3), True), (tuple(range(1, 31)), False)):
        tables.clear()
        values = tmf.ranking_metrics(**data, ks=ks, metrics=("ndcg",))
        ref = dict_ref(ks, metrics=("ndcg",))(H.to_numpy(data))
        for key, value in values.items():
            np.testing.assert_allclose(value.item(), ref[key], rtol=1e-12, err_msg=key)
        assert tables == ([(num_queries, 2)] if counted else []), (ks, tables)


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=25),
    k=st.integers(1, 25),
    seed=st.integers(0, 2**32 - 1),
    scores=st.sampled_from(["probabilities", "few-values", "logits"]),
    grades=st.integers(1, 6),
)
def test_grouped_topk_merge_matches_sort_path_on_any_shape(sizes, k, seed, scores, grades):
    """Per-query values of every metric at two cutoffs: the merge equals the sort path exactly."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    indexes = torch.repeat_interleave(torch.arange(len(sizes)) * 3 + 7, torch.tensor(sizes))
    if scores == "probabilities":
        preds = torch.tensor(rng.random(n), dtype=torch.float32)
    elif scores == "few-values":  # ties everywhere
        preds = torch.tensor(rng.integers(0, 4, size=n) / 4, dtype=torch.float32)
    else:
        preds = torch.tensor(rng.normal(size=n) * 10, dtype=torch.float32)
    target = torch.tensor(rng.integers(0, grades, size=n) * (rng.random(n) < 0.5))
    weights = torch.tensor(rng.uniform(0.1, 2.0, size=n))
    requests = [(name, cut) for name in TOPK_METRICS for cut in dict.fromkeys((k, max(1, k // 2)))]
    with mock.patch.object(_topk, "ROWS_PER_ROUND", 0):
        fast = topk_values(preds, target, indexes, weights, requests)
    if n < 2:
        assert fast is None
        return
    assert fast is not None
    values, num_rel, ranked = fast
    sorted_rows = rank_rows(preds, target, indexes, weights)
    expected, expected_rel = sorted_values(
        SortedQueries(sorted_rows, RankingOptions()), [(SPECS[name], cut) for name, cut in requests]
    )
    torch.testing.assert_close(values, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(num_rel, expected_rel)
    torch.testing.assert_close(ranked.size, sorted_rows.size)
    torch.testing.assert_close(ranked.weight, sorted_rows.weight)


# ----------------------------------------------------------------------------- small batches ranked row by row

ROW_BY_ROW_FORMS = ["padded", "mask", "padding_value", "weighted", "one_query", "equal_runs", "equal_runs_weighted"]


def _small_batch(rng, form):
    """One small batch of ``form``: ``(update kwargs, reference data)``; ties, graded or bool relevance."""
    num_queries = 1 if form == "one_query" else int(rng.integers(1, 9))
    width = int(rng.integers(1, 11))
    preds = rng.normal(size=(num_queries, width))
    if rng.random() < 0.5:  # ties, -0.0 and 0.0 among them
        preds = np.round(preds, 0) * rng.choice([1.0, -1.0], size=preds.shape)
    target = rng.integers(0, int(rng.choice([2, 4])), size=(num_queries, width)) * (rng.random(preds.shape) < 0.5)
    p = torch.tensor(preds, dtype=torch.float32 if rng.random() < 0.7 else torch.float64)
    t = torch.tensor(target)
    if rng.random() < 0.25:
        t = t > 0
    data = {"preds": p, "target": t}
    if form in ("mask", "padding_value"):
        keep = torch.tensor(rng.random(preds.shape) < 0.7)
        if num_queries > 1:
            keep[0] = False  # a query with no candidate: no query
        if form == "mask":
            data["mask"] = keep
        else:  # relevance 0 in the padded slots (a relevant candidate scored `padding_value` is refused)
            data["preds"] = torch.where(keep, p, -7.0)
            data["target"] = torch.where(keep, t, torch.zeros((), dtype=t.dtype))
    if form in ("weighted", "mask"):
        data["weights"] = torch.tensor(rng.uniform(0.0, 3.0, size=num_queries))
    if form in ("one_query", "equal_runs", "equal_runs_weighted"):
        ids = torch.arange(num_queries).repeat_interleave(width) * 2 + 3
        data = {"preds": data["preds"].reshape(-1), "target": data["target"].reshape(-1), "indexes": ids}
        if form == "equal_runs_weighted":
            data["weights"] = torch.tensor(rng.uniform(0.0, 3.0, size=num_queries * width))
    ref = H.to_numpy(data)
    if form == "padding_value":
        ref["_padding_value"] = -7.0
    return data, ref, bool(data["preds"].numel()) if form not in ("mask", "padding_value") else bool(keep.any())


def _random_options(rng, padding_value):
    """Random ``RankingMetrics`` keyword arguments for ranking in ``update`` (empty-query policy, gains, k)."""
    action = str(rng.choice(["skip", "zero", "one"]))
    options = {"exponential_gain": bool(rng.random() < 0.3), "adaptive_k": bool(rng.random() < 0.3)}
    return {
        "empty_target_action": action,
        "remove_single_length_sessions": bool(rng.random() < 0.2),
        "padding_value": padding_value,
        "queries_complete_per_batch": True,
        "validate_args": bool(rng.random() < 0.7),
        **options,
    }


def _assert_same_sums(ours, theirs, label):
    """Two metrics' summed states are equal bit for bit."""
    for mine, other in ((ours.value_sum, theirs.value_sum), (ours.weight_sum, theirs.weight_sum)):
        assert torch.equal(mine.view(torch.int64), other.view(torch.int64)), (label, mine, other)


def _assert_reference(data, ref_data, ks, metrics, kwargs):
    """``RankingMetrics`` of one ``update`` with ``kwargs`` equals the brute-force reference."""
    expected = dict_ref(
        ks,
        metrics=metrics,
        action=kwargs["empty_target_action"],
        remove_single=kwargs["remove_single_length_sessions"],
        exponential=kwargs["exponential_gain"],
        adaptive=kwargs["adaptive_k"],
    )(ref_data)
    metric = tmx.RankingMetrics(ks=ks, metrics=metrics, **kwargs)
    metric.update(**data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a batch without any counted query is undefined (nan)
        got = metric.compute()
    for key, value in expected.items():
        np.testing.assert_allclose(got[key].item(), value, rtol=1e-9, atol=1e-12, err_msg=key)


def _rank_as_flat_rows(patch):
    """Within ``patch``, padded lists and equal runs take the kernels of flat rows (the sort path, first-hit counting)."""
    real = _update._update_sums

    def as_flat(rows, *args):
        rows.padded = False  # its grid is then never read: the flat rows (gathered by the mask) are ranked
        return real(rows, *args)

    patch.setattr(_update, "_update_sums", as_flat)
    patch.setattr(_update, "_equal_runs", lambda rows: None)


@pytest.mark.parametrize("form", ROW_BY_ROW_FORMS)
def test_small_batches_ranked_row_by_row_equal_the_sort_path_bit_for_bit(monkeypatch, form):
    """Ranking in ``update``: padded lists, or flat rows in runs of one length, below the top-k merge's sizes
    are ranked one row at a time (:func:`~._kernel.rank_grid`); the sums equal the sort path's (and
    first-hit counting's) bit for bit, over many random small batches, and the brute-force reference."""
    rng = np.random.default_rng(ROW_BY_ROW_FORMS.index(form))
    ranked_by_grid = []
    monkeypatch.setattr(_update, "rank_grid", lambda *a: ranked_by_grid.append(1) or _kernel.rank_grid(*a))
    for _ in range(60):
        data, ref_data, any_row = _small_batch(rng, form)
        ks = (1, 3, None)
        kwargs = _random_options(rng, -7.0 if form == "padding_value" else None)
        for metrics in (tuple(SPECS), ("mrr",), ("ndcg",), ("hit_rate", "recall")):
            by_grid = tmx.RankingMetrics(ks=ks, metrics=metrics, **kwargs)
            calls = len(ranked_by_grid)
            by_grid.update(**data)
            # the row-by-row kernel ran (on any row); MRR alone of padded lists: each list's first hit counted
            # in place instead (its sums are compared below all the same)
            sorted_rows = any_row and not (metrics == ("mrr",) and data["preds"].ndim == 2)
            assert len(ranked_by_grid) == calls + sorted_rows
            with monkeypatch.context() as patch:  # the sort path (and first-hit counting) as before
                _rank_as_flat_rows(patch)
                by_sort = tmx.RankingMetrics(ks=ks, metrics=metrics, **kwargs)
                by_sort.update(**data)
            assert len(ranked_by_grid) == calls + sorted_rows
            _assert_same_sums(by_grid, by_sort, metrics)
        _assert_reference(data, ref_data, ks, tuple(SPECS), kwargs)


@pytest.mark.parametrize(
    ("make", "complete", "limit"),
    [
        (lambda **kw: tmx.NDCG(k=10, **kw), False, 60),
        (lambda **kw: tmx.RecallAtK(k=5, **kw), False, 45),
        (lambda **kw: tmx.MRR(**kw), False, 45),
        (lambda **kw: tmx.RankingMetrics(ks=(1, 10), metrics=("ndcg", "recall", "mrr"), **kw), False, 100),
        (lambda **kw: tmx.NDCG(k=10, **kw), True, 60),
        (lambda **kw: tmx.MRR(**kw), True, 45),
    ],
    ids=["ndcg-padded", "recall-padded", "mrr-padded", "ranking-metrics-padded", "ndcg-complete", "mrr-complete"],
)
def test_ranking_in_update_has_a_small_fixed_cost(make, complete, limit):
    """One query of 8 candidates per step: ``update`` runs few torch operations (each costs microseconds).

    It used to run 140-190 for NDCG and ``RankingMetrics`` (0.25-0.6 ms a step, slower than
    TorchMetrics' update and compute together); the limits leave room for other PyTorch versions.
    """
    preds, target = (
        torch.rand(1, 8, generator=torch.Generator().manual_seed(0)),
        torch.tensor([[0, 1, 0, 2, 0, 0, 1, 0]]),
    )
    indexes = torch.zeros(8, dtype=torch.int64)
    metric = make(queries_complete_per_batch=True) if complete else make()

    def step():
        if complete:
            metric.update(preds.reshape(-1), target.reshape(-1), indexes=indexes)
        else:
            metric.update(preds, target)

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = [event.name for event in prof.events() if event.cpu_parent is None and event.name.startswith("aten::")]
    if not H.WIDE_UNSIGNED_OK:  # PyTorch 2.3 records more top-level ops (a fill_ per wrapped scalar)
        limit = limit * 13 // 10
    assert len(ops) <= limit, (len(ops), ops)


# ----------------------------------------------------------------------------- many requests


_KERNELS = {"merge": (_topk, "_merge_topk"), "sort": (_update, "rank_rows"), "padded": (_update, "rank_grid")}
_KERNELS["device"] = (_update, "rank_rows_dense")


@pytest.mark.parametrize("path", ["merge", "sort", "first_hit", "padded", "device"])
def test_many_requests_are_reduced_one_request_at_a_time(monkeypatch, path):
    """144 requests (24 cutoffs x 6 metrics) on every path: the brute force's values, no (queries, requests) matrix.

    Each request's per-query values are reduced to their weighted sum as soon as they are made,
    so what reaches the reduction is one ``(G,)`` vector per request, never ``(G, 144)``.
    """
    if path == "merge":
        monkeypatch.setattr(_topk, "ROWS_PER_ROUND", 0)  # the merge takes small data too
    rng = np.random.default_rng(21)
    metrics = FIRST_HIT_METRICS if path == "first_hit" else ALL
    if path in ("padded", "device"):
        data = padded_data(rng, num_queries=150, width=30, ties=True)
        if path == "padded":  # full lists: the row-by-row grid (a mask takes the device kernel)
            del data["mask"]
    else:
        data = flat_data(rng, num_queries=150, max_len=30, ties=True, weights=True, grouped=path == "merge")
    ran, shapes = [], []
    for name, (module, attr) in _KERNELS.items():
        real = getattr(module, attr)
        monkeypatch.setattr(module, attr, lambda *a, _real=real, _name=name, **kw: ran.append(_name) or _real(*a, **kw))
    terms = _update._terms
    monkeypatch.setattr(_update, "_terms", lambda values, *a: shapes.append(tuple(values.shape)) or terms(values, *a))
    ks = tuple(range(1, 25))
    metric = tmx.RankingMetrics(ks=ks, metrics=metrics)
    with force_device_path(path == "device"):
        metric.update(**data)
        out = metric.compute()
    assert ran == ([] if path == "first_hit" else [path])
    assert len(shapes) == len(metric.requests) == len(ks) * len(metrics)
    assert all(len(shape) == 1 for shape in shapes), shapes[:3]
    ref = dict_ref(ks, metrics=metrics)(H.to_numpy(data))
    assert list(out) == list(ref)
    for key, value in out.items():
        np.testing.assert_allclose(value.item(), ref[key], rtol=1e-12, err_msg=key)


# ----------------------------------------------------------------------------- few long lists


@pytest.mark.parametrize("form", ["one_flat_query", "one_padded_list", "few_padded_lists"])
@pytest.mark.parametrize("exponential", [False, True])
def test_few_long_lists_select_their_top_k_without_sorting(monkeypatch, form, exponential):
    """One query of 3,000 candidates (or a few of 400): torch.topk of the rank keys, the brute force's values.

    Ties everywhere (scores in 8 values, graded relevance) check the pessimistic tie rule on
    this path; the sort kernels must not run.
    """
    rng = np.random.default_rng(5)
    num_queries, width = (1, 3000) if form != "few_padded_lists" else (3, 400)
    preds = torch.tensor(rng.integers(0, 8, size=(num_queries, width)) / 8, dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 4, size=(num_queries, width)) * (rng.random((num_queries, width)) < 0.2))
    weights = torch.tensor(rng.uniform(0.5, 2.0, size=num_queries))
    if form == "one_flat_query":
        data = {
            "preds": preds[0],
            "target": target[0],
            "indexes": torch.full((width,), 7),
            "weights": weights.expand(width),
        }
    else:
        data = {"preds": preds, "target": target, "weights": weights}
    ran = []
    for module, attr in ((_update, "rank_rows"), (_update, "rank_grid"), (_update, "rank_rows_dense")):
        real = getattr(module, attr)
        monkeypatch.setattr(module, attr, lambda *a, _real=real, _name=attr, **kw: ran.append(_name) or _real(*a, **kw))
    ks = (1, 3, 10, 30)
    metric = tmx.RankingMetrics(ks=ks, exponential_gain=exponential)
    metric.update(**data)
    out = metric.compute()
    single = tmx.NDCG(k=10, exponential_gain=exponential)
    single.update(**data)
    assert ran == []
    ref = dict_ref(ks, exponential=exponential)(H.to_numpy(data))
    for key, value in out.items():
        np.testing.assert_allclose(value.item(), ref[key], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(single.compute().item(), ref["ndcg@10"], rtol=1e-12)
    # a cutoff too long for a selection to pay, or a whole-list request: the sort kernels, the same values
    whole = tmf.ranking_metrics(**data, ks=(10, None), metrics=("ndcg", "recall"), exponential_gain=exponential)
    assert ran
    np.testing.assert_allclose(whole["ndcg@10"].item(), ref["ndcg@10"], rtol=1e-12)


def _long_padded_batch(rng, form):
    """Few long padded lists (256-600 slots): ``(update kwargs, reference data, padding value or None)``.

    Heavy ties (scores in a few values, ``-0.0`` and ``0.0`` among them), lists padded at every
    length (empty, shorter than the cutoffs, full), graded or bool relevance, float32, float64 or
    bfloat16 scores, query weights; padded slots hold garbage (NaN scores, negative relevance) for
    ``mask`` and ``padding_value`` (-inf or a large value) for that form; ``full`` lists are not padded.
    """
    num_queries, width = int(rng.integers(1, 7)), int(rng.integers(256, 601))
    preds = np.round(rng.normal(size=(num_queries, width)) * 2, 0) / 2 * rng.choice([1.0, -1.0], (num_queries, width))
    dtype = rng.choice(["float32", "float64", "bfloat16"])
    p = torch.tensor(preds, dtype=torch.float64 if dtype == "float64" else torch.float32)
    p = p.bfloat16() if dtype == "bfloat16" else p
    target = torch.tensor(rng.integers(0, int(rng.choice([2, 4])), (num_queries, width)) * (rng.random(p.shape) < 0.2))
    lens = rng.choice([0, 1, 2, 5, 9, 29, width // 2, width - 1, width], size=num_queries)
    lens[rng.integers(num_queries)] = width if rng.random() < 0.5 else lens[0]
    keep = torch.tensor(np.arange(width)[None, :] < lens[:, None])
    keep = keep[:, torch.randperm(width, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))]
    pad = None
    if form == "full":  # no padding: the lists the selection took before
        keep[:] = True
    elif form == "mask":
        p = torch.where(keep, p, torch.tensor(np.nan, dtype=p.dtype))
        target = torch.where(keep, target, -1)
    else:
        pad = float(rng.choice([-np.inf, 4096.0]))  # exact in every dtype: the reference compares float64
        p = torch.where(keep, p, torch.tensor(pad, dtype=p.dtype))
        # relevance 0 there (a relevant candidate scored `padding_value` is refused)
        target = torch.where(keep, target, torch.zeros((), dtype=target.dtype))
    if rng.random() < 0.25:
        target = target > 0
    data = {"preds": p, "target": target, "weights": torch.tensor(rng.uniform(0.0, 3.0, size=num_queries))}
    if form == "mask":
        data["mask"] = keep
    ref = H.to_numpy(
        {**data, "preds": p.double(), "target": target.clamp_min(0) if target.dtype != torch.bool else target}
    )
    if pad is not None:
        ref["_padding_value"] = pad
    return data, ref, pad, bool(keep.any())


@pytest.mark.parametrize("form", ["mask", "padding_value", "full"])
def test_long_padded_lists_select_their_top_k_bit_for_bit(monkeypatch, form):
    """Padded long lists take ``torch.topk`` of the rank keys (padded slots ranked last, grade 0), never a sort.

    Over many random grids with heavy ties, lists of every length (empty, shorter than ``k``,
    full), garbage in the padded slots and weights: the sums equal the row-by-row sort's
    (:func:`~._kernel.rank_grid`, the path these lists took before) bit for bit, and the
    brute-force reference. Lists with a mask used to be sorted whole: 3-4x slower than ``topk``.
    """
    rng = np.random.default_rng(21 + (form == "mask"))
    ran = []
    for attr in ("rank_rows", "rank_grid", "rank_rows_dense"):
        real = getattr(_update, attr)
        monkeypatch.setattr(
            _update, attr, lambda *a, _real=real, _name=attr, **kw: ran.append(_name) or _real(*a, **kw)
        )
    ks = (1, 3, 10, 30)
    for _ in range(40):
        data, ref_data, pad, any_row = _long_padded_batch(rng, form)
        kwargs = _random_options(rng, pad)
        for metrics in (tuple(TOPK_METRICS), ("mrr",), ("ndcg",), ("hit_rate", "recall")):
            ran.clear()
            selected = tmx.RankingMetrics(ks=ks, metrics=metrics, **kwargs)
            selected.update(**data)
            assert ran == []
            with monkeypatch.context() as patch:  # the path before: each list sorted on its own
                patch.setattr(_update, "grid_topk_values", lambda *args, **kwargs: None)
                patch.setattr(_update, "grid_first_hit_values", lambda *args, **kwargs: None)  # MRR alone
                by_sort = tmx.RankingMetrics(ks=ks, metrics=metrics, **kwargs)
                by_sort.update(**data)
            assert ran == ["rank_grid"] * any_row
            _assert_same_sums(selected, by_sort, metrics)
        _assert_reference(data, ref_data, ks, tuple(TOPK_METRICS), kwargs)


class _MaskGathers(torch.overrides.TorchFunctionMode):
    """Records every ``tensor[index]`` whose index is a 2-D bool tensor (a padded grid gathered by its mask)."""

    def __init__(self):
        super().__init__()
        self.gathers = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        index = args[1] if func is torch.Tensor.__getitem__ and len(args) > 1 else None
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool and index.ndim == 2:
            self.gathers.append(tuple(index.shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("form", ["mask", "padding_value"])
def test_padded_lists_taking_the_selection_are_never_gathered_by_their_mask(monkeypatch, form):
    """Long padded lists that take ``torch.topk`` are validated and ranked in place: no ``preds[mask]`` gathers.

    The flat rows of the kept entries (scores, relevance, query ids: ~40% of an update of 64 x 5,000)
    were gathered for every batch and read by no kernel on this path. The values are the brute-force
    reference's; the bounds in the messages are those of the kept entries alone; a batch whose
    lists take the flat rows' kernels (1,000+ short lists) still gathers them, with the same values.
    """
    rng = np.random.default_rng(8)
    num_queries, width = 5, 400
    preds = torch.tensor(rng.integers(0, 8, size=(num_queries, width)) / 8, dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 4, size=(num_queries, width)) * (rng.random((num_queries, width)) < 0.2))
    keep = torch.tensor(rng.random((num_queries, width)) < 0.6)
    keep[3] = False  # an empty list: no query
    weights = torch.tensor(rng.uniform(0.5, 2.0, size=num_queries))
    pad = -1.0 if form == "padding_value" else None
    data = {"preds": preds.masked_fill(~keep, pad if pad is not None else np.nan), "target": target, "weights": weights}
    if pad is None:
        data["mask"] = keep
        data["target"] = target.masked_fill(~keep, -1)  # garbage in the padded slots, never validated
    else:
        data["target"] = target.masked_fill(~keep, 0)  # a relevant candidate scored `padding_value` is refused
    ref_data = H.to_numpy({"preds": preds.double(), "target": target, "mask": keep, "weights": weights})
    ks = (1, 3, 10)
    expected = dict_ref(ks, metrics=("ndcg", "recall", "mrr"))(ref_data)
    ran = []
    for attr in ("rank_rows", "rank_grid", "rank_rows_dense"):
        real = getattr(_update, attr)
        monkeypatch.setattr(
            _update, attr, lambda *a, _real=real, _name=attr, **kw: ran.append(_name) or _real(*a, **kw)
        )
    with _MaskGathers() as recorded:
        functional = tmf.ranking_metrics(**data, ks=ks, metrics=("ndcg", "recall", "mrr"), padding_value=pad)
        metric = tmx.RankingMetrics(ks=ks, metrics=("ndcg", "recall", "mrr"), padding_value=pad)
        metric.update(**data)
        metric(**data)  # forward: validated once, then updated trusting its inputs
        got = metric.compute()
    assert recorded.gathers == []
    assert ran == []
    for key, value in expected.items():
        np.testing.assert_allclose(functional[key].item(), value, rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(got[key].item(), value, rtol=1e-12, err_msg=key)
    # the messages read the kept entries' bounds only (a padded slot holds 0 relevance, weight -1 on the empty list)
    bad = {**data, "target": torch.where(keep, 1.0, 0.0).double()}  # kept relevance in [1, inf]
    bad["target"][0, int(keep[0].nonzero()[0])] = float("inf")
    bad_weights = {**data, "weights": torch.tensor([2.0, 3.0, float("inf"), -1.0, 2.5])}
    for batch, message in (
        (bad, r"`target` to hold finite relevance >= 0, got values containing inf \(in \[1, inf\]\)"),
        (bad_weights, r"`weights` to be finite and non-negative, got values containing inf \(in \[2, inf\]\)"),
    ):
        before = [state.clone() for state in (metric.value_sum, metric.weight_sum)]
        with pytest.raises(ValueError, match=message):
            metric.update(**batch)
        assert all(torch.equal(a, b) for a, b in zip(before, (metric.value_sum, metric.weight_sum)))
        with pytest.raises(ValueError, match=message):
            tmf.ranking_metrics(**batch, ks=ks, padding_value=pad)
    # 1,200 short lists (which the top-k merge of flat rows took, gathered by the mask) are selected row by
    # row too: never gathered, the reference's values
    many, short = 1200, 6
    preds = torch.tensor(rng.integers(0, 8, size=(many, short)) / 8, dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 4, size=(many, short)) * (rng.random((many, short)) < 0.3))
    keep = torch.tensor(rng.random((many, short)) < 0.7)
    with _MaskGathers() as recorded:
        values = tmf.ranking_metrics(preds, target, mask=keep, ks=ks, metrics=("ndcg", "recall", "mrr"))
    assert recorded.gathers == []
    expected = dict_ref(ks, metrics=("ndcg", "recall", "mrr"))(
        H.to_numpy({"preds": preds.double(), "target": target, "mask": keep})
    )
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


def _many_short_lists(rng, form, width):
    """1,000-1,400 padded lists of ``width`` slots: ``(update kwargs, reference data, padding value, flat kwargs)``.

    Ties (scores in eighths, ``-0.0`` and ``0.0``), empty lists, graded (int or float, halves
    included), bool relevance, float32 or float64 scores (some not float32-exact), query
    weights; garbage in the padded slots of the ``mask`` form. ``flat``: the kept entries as flat
    rows with ``indexes`` (each list's row number) and each row its query's weight.
    """
    num_queries = int(rng.integers(1000, 1400))
    preds = np.round(rng.normal(size=(num_queries, width)) * 4) / 8 * rng.choice([1.0, -1.0], (num_queries, width))
    if rng.random() < 0.3:
        preds = preds + rng.random(preds.shape) * 1e-9  # float64 scores that are not float32
    p = torch.tensor(preds, dtype=torch.float64 if rng.random() < 0.5 else torch.float32)
    grades = rng.integers(0, int(rng.choice([2, 4, 70])), (num_queries, width)) * (rng.random(p.shape) < 0.3)
    target = torch.tensor(grades)
    kind = rng.choice(["int", "float", "halves", "bool"])
    if kind != "int":
        target = target > 0 if kind == "bool" else target.double() * (0.5 if kind == "halves" else 1.0)
    keep = torch.tensor(rng.random((num_queries, width)) < 0.7)
    keep[rng.integers(num_queries, size=num_queries // 10)] = False  # lists with no real candidate
    weights = torch.tensor(rng.uniform(0.0, 3.0, size=num_queries))
    pad = None
    if form == "full":
        keep[:] = True
    elif form == "mask":
        p = torch.where(keep, p, torch.tensor(np.nan, dtype=p.dtype))
    else:
        pad = -1000.0
        p = torch.where(keep, p, torch.tensor(pad, dtype=p.dtype))
        # relevance 0 there (a relevant candidate scored `padding_value` is refused)
        target = torch.where(keep, target, torch.zeros((), dtype=target.dtype))
    data = {"preds": p, "target": target, "weights": weights}
    if form == "mask":
        data["mask"] = keep
    ids = torch.arange(num_queries).unsqueeze(1).expand(num_queries, width)
    flat = {
        "preds": p[keep],
        "target": target[keep],
        "indexes": ids[keep],
        "weights": weights.unsqueeze(1).expand(num_queries, width)[keep],
    }
    ref = H.to_numpy({**data, "preds": p.double(), "target": target, "mask": keep})
    return data, ref, pad, flat


@pytest.mark.parametrize("width", [1, 5, 10, 30])
@pytest.mark.parametrize("form", ["mask", "padding_value", "full"])
def test_many_short_padded_lists_are_ranked_row_by_row(monkeypatch, form, width):
    """1,000+ short padded lists are ranked row by row: never gathered by their mask nor sorted as flat rows.

    Lists with padding took the top-k merge of flat rows (their kept entries gathered first, ~60%
    of an update of 1M x 10) and, where the merge declines (float relevance, float64 scores that
    are not float32, no cutoff past 64), the sort of every flattened row by (query, score,
    relevance) keys: 2-4x slower than sorting each row. Now they take the row-wise selection or
    :func:`~._kernel.rank_grid`; values equal the same rows given flat (bit for bit) and the
    brute-force reference, for every cutoff (none, 1, past the lists' width, past the merge's 64).
    """
    rng = np.random.default_rng(400 + width + 7 * len(form))
    ran = []
    real = _update.rank_rows
    monkeypatch.setattr(_update, "rank_rows", lambda *a, **kw: ran.append("rank_rows") or real(*a, **kw))
    for _ in range(3):
        data, ref_data, pad, flat = _many_short_lists(rng, form, width)
        kwargs = {**_random_options(rng, pad), "remove_single_length_sessions": False}
        for ks, metrics in (((1, 3, 10), tuple(TOPK_METRICS)), ((2, 70), ("ndcg", "mrr", "map")), ((5,), ALL)):
            for complete in (True, False):
                options = {**kwargs, "queries_complete_per_batch": complete}
                ran.clear()
                with _MaskGathers() as recorded:
                    padded = tmx.RankingMetrics(ks=ks, metrics=metrics, **options)
                    padded.update(**data)
                assert recorded.gathers == []
                assert ran == []
                as_rows = tmx.RankingMetrics(ks=ks, metrics=metrics, **{**options, "padding_value": None})
                as_rows.update(**flat)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # no counted query: nan on both sides
                    got, expected = padded.compute(), as_rows.compute()
                for key, value in expected.items():
                    assert torch.equal(got[key].view(torch.int64), value.view(torch.int64)), (key, got[key], value)
        _assert_reference(data, ref_data, (1, 3, 10), tuple(TOPK_METRICS), kwargs)
        _assert_reference(data, ref_data, (2, 70), ("ndcg", "mrr", "map"), kwargs)


# ----------------------------------------------------------------------------- small one-step batches


def _sklearn_ndcg(preds, target, weights, k):
    """sklearn's ``ndcg_score`` (linear gain) with our pessimistic tie rule, queries without relevance scoring 0.

    Among equal scores the more relevant candidates rank last: each score is lowered by a tiny
    multiple of its relevance (far below the 1/8 steps between distinct scores), so sklearn sees
    no ties and ranks them as we do.
    """
    from sklearn.metrics import ndcg_score

    return ndcg_score(target, preds - 1e-6 * target, k=k, sample_weight=weights, ignore_ties=True)


@pytest.mark.parametrize(("num_queries", "width"), [(1, 1000), (1, 1500), (100, 10), (199, 10), (60, 25), (7, 3)])
def test_small_batch_of_one_step_is_sklearns_ndcg_with_ties_and_weights(monkeypatch, num_queries, width):
    """One query of 1,000+ candidates (a selection of its top k) or runs of one length below 2,000 rows
    (ranked row by row): sklearn's ``ndcg_score``, and the sort path's values bit for bit.

    100 queries of 10 candidates (1,000 rows) used to take the sort path; the cached discounts and
    the fewer operations of a small ``compute`` change no value.
    """
    rng = np.random.default_rng(num_queries * 10_000 + width)
    preds = rng.integers(0, 8, size=(num_queries, width)) / 8  # ties everywhere
    target = rng.integers(0, 4, size=(num_queries, width)) * (rng.random((num_queries, width)) < 0.3)
    target[0] = 0  # a query without relevance (zero with empty_target_action="zero", as sklearn)
    target[-1, 0] = 2  # ... unless it is the only one
    weights = rng.uniform(0.5, 2.0, size=num_queries)
    data = {
        "preds": torch.tensor(preds.reshape(-1), dtype=torch.float32),
        "target": torch.tensor(target.reshape(-1)),
        "indexes": torch.arange(num_queries).repeat_interleave(width) + 5,
        "weights": torch.tensor(weights).repeat_interleave(width),
    }
    ran = []
    for attr in ("rank_rows", "rank_grid"):
        real = getattr(_update, attr)
        monkeypatch.setattr(
            _update, attr, lambda *a, _real=real, _name=attr, **kw: ran.append(_name) or _real(*a, **kw)
        )
    for k in (1, 3, 10):
        ran.clear()
        metric = tmx.NDCG(k=k, empty_target_action="zero")
        metric.update(**data)
        got = metric.compute()
        assert "rank_rows" not in ran  # a selection (one long query) or the row-by-row kernel
        if num_queries > 1:
            assert ran[-1] == "rank_grid"
        expected = _sklearn_ndcg(preds, target, weights, k) if num_queries > 1 else None
        if expected is None:  # sklearn needs two candidates per list; one list is its own batch of one query
            expected = _sklearn_ndcg(np.repeat(preds, 2, 0), np.repeat(target, 2, 0), np.repeat(weights, 2), k)
        np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
        with monkeypatch.context() as patch:  # the sort path, as before: the same bits
            patch.setattr(_update, "_equal_runs", lambda rows: None)
            patch.setattr(_update, "_one_long_query", lambda rows, requests: None)
            by_sort = tmx.NDCG(k=k, empty_target_action="zero")
            by_sort.update(**data)
            assert torch.equal(by_sort.compute().view(torch.int64), got.view(torch.int64))
    ref = dict_ref((1, 3, 10), metrics=ALL, action="zero")(H.to_numpy(data))
    metric = tmx.RankingMetrics(ks=(1, 3, 10), empty_target_action="zero")
    metric.update(**data)
    for key, value in metric.compute().items():
        np.testing.assert_allclose(value.item(), ref[key], rtol=1e-12, err_msg=key)


def test_small_compute_runs_few_torch_operations():
    """NDCG@10 of one flat query of 1,000 candidates: ``compute`` runs few torch operations (each costs microseconds).

    It ran 96 top-level operations (per-call constants such as the discounts made again each time);
    the limit leaves room for other PyTorch versions.
    """
    rng = np.random.default_rng(0)
    preds = torch.tensor(rng.random(1000), dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 4, size=1000) * (rng.random(1000) < 0.2))
    metric = tmx.NDCG(k=10)
    metric.update(preds, target, indexes=torch.zeros(1000, dtype=torch.int64))
    metric.compute()
    metric._computed = None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        metric.compute()
    ops = [event.name for event in prof.events() if event.cpu_parent is None and event.name.startswith("aten::")]
    limit = 86 if H.WIDE_UNSIGNED_OK else 112  # PyTorch 2.3 records more top-level ops (a fill_ per wrapped scalar)
    assert len(ops) <= limit, (len(ops), ops)


def _long_flat_queries(rng, order):
    """Flat rows of a few queries, some long (256-700 rows): ``(update kwargs, reference data)``.

    Heavy ties (a few scores, ``-0.0`` and ``0.0`` among them), float32, float64 or bfloat16
    scores, graded or bool relevance, queries without relevance and shorter than the cutoffs,
    row weights varying within a query; ids (dense or sparse, any integer dtype) ``grouped`` in
    increasing order, grouped in ``reversed`` order or ``shuffled`` rows.
    """
    num_queries = int(rng.integers(1, 12))
    lens = rng.choice([1, 2, 5, 29, 256, 300, 420, 700], size=num_queries)
    lens[rng.integers(num_queries)] = rng.choice([256, 300, 700])
    n = int(lens.sum())
    preds = np.round(rng.normal(size=n) * 2, 0) / 2 * rng.choice([1.0, -1.0], n)
    dtype = rng.choice(["float32", "float64", "bfloat16"])
    p = torch.tensor(preds, dtype=torch.float64 if dtype == "float64" else torch.float32)
    p = p.bfloat16() if dtype == "bfloat16" else p
    target = torch.tensor(rng.integers(0, int(rng.choice([2, 4])), n) * (rng.random(n) < 0.2))
    if rng.random() < 0.25:
        target = target > 0
    step = 1 if rng.random() < 0.8 else n  # sparse ids (span over N): the sort path, as before
    query_ids = rng.permutation(num_queries) * step - int(rng.integers(0, 50))
    if order == "grouped":
        query_ids = np.sort(query_ids)
    ids = torch.tensor(np.repeat(query_ids, lens))
    ids = ids.to(torch.int32) if rng.random() < 0.3 else ids
    weights = torch.tensor(np.repeat(rng.uniform(0.0, 3.0, num_queries), lens) * rng.uniform(0.5, 1.0, n))
    data = {"preds": p, "target": target, "indexes": ids, "weights": weights}
    if order == "shuffled":
        perm = torch.tensor(rng.permutation(n))
        data = {key: value[perm] for key, value in data.items()}
    return data, H.to_numpy({**data, "preds": data["preds"].double()})


@pytest.mark.parametrize("order", ["grouped", "reversed", "shuffled"])
def test_flat_long_queries_grouped_into_lists_bit_for_bit(monkeypatch, order):
    """Flat rows of a few long queries, ids in any order, are grouped into padded lists and take ``torch.topk``.

    Over many random batches (heavy ties, ``±0.0``, three score dtypes, graded or bool relevance,
    empty and short queries, row weights, dense or sparse ids): the sums (ranking in ``update``)
    and the exact mode's ``compute`` over its row states equal the sort path's (the path these rows
    took before) bit for bit, and the brute-force reference. 64 queries of 2,500-5,000 rows took
    12-15 ms sorted, about twice the same lists padded.
    """
    rng = np.random.default_rng(["grouped", "reversed", "shuffled"].index(order) + 40)
    grouped = []
    real = _update._long_queries
    monkeypatch.setattr(_update, "_long_queries", lambda *a: grouped.append(r := real(*a)) or r)
    ks = (1, 3, 10, 30)
    taken = 0
    for _ in range(30):
        data, ref_data = _long_flat_queries(rng, order)
        kwargs = _random_options(rng, None)
        for metrics in (tuple(TOPK_METRICS), ("ndcg",), ("hit_rate", "recall"), ("mrr", "precision")):
            for complete in (True, False):
                grouped.clear()
                selected = tmx.RankingMetrics(
                    ks=ks, metrics=metrics, **{**kwargs, "queries_complete_per_batch": complete}
                )
                selected.update(**data)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # no query counted: nan on both
                    got = selected.compute()
                taken += any(lists is not None for lists in grouped)
                with monkeypatch.context() as patch:  # the path before: the top-k merge or the sort
                    patch.setattr(_update, "_long_queries", lambda *args: None)
                    before = tmx.RankingMetrics(
                        ks=ks, metrics=metrics, **{**kwargs, "queries_complete_per_batch": complete}
                    )
                    before.update(**data)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        expected = before.compute()
                if complete:
                    _assert_same_sums(selected, before, metrics)
                for key, value in expected.items():
                    assert torch.equal(got[key].view(torch.int64), value.view(torch.int64)), (key, got[key], value)
        _assert_reference(data, ref_data, ks, tuple(TOPK_METRICS), kwargs)
    assert taken >= 40  # many batches took the selection (the others: sparse ids, one query, a sparse grid)


def test_flat_long_queries_take_the_selection_only_where_it_pays(monkeypatch):
    """The grouping runs only for long queries: not for many short ones, MRR/hit rate alone, sparse ids or the merge."""
    calls = []
    real = _topk.grid_topk_values
    monkeypatch.setattr(_update, "grid_topk_values", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    rng = np.random.default_rng(3)

    def rows(lens, ids=None, shuffle=False):
        n = int(sum(lens))
        ids = torch.repeat_interleave(torch.arange(len(lens)) if ids is None else ids, torch.tensor(lens))
        data = {"preds": torch.tensor(rng.random(n), dtype=torch.float32), "target": torch.tensor(rng.random(n) < 0.1)}
        data["indexes"] = ids[torch.randperm(n)] if shuffle else ids
        return data

    cases = [
        (rows([400, 300, 10]), tmx.NDCG(k=10), (3, 400)),
        (rows([400, 300, 10], shuffle=True), tmx.NDCG(k=10), (3, 400)),
        (rows([500] * 4), tmx.RecallAtK(k=5), (4, 500)),
        (rows([10] * 500), tmx.NDCG(k=10), None),  # many short queries
        (rows([400, 300, 10], shuffle=True), tmx.MRR(k=10), None),  # first-hit counting
        (rows([400, 300], ids=torch.tensor([0, 10**6]), shuffle=True), tmx.NDCG(k=10), None),  # sparse ids
        (rows([400, 300]), tmx.NDCG(k=60), None),  # a cutoff too long for the lists (8 k > 400)
        (rows([300] + [2] * 400), tmx.NDCG(k=10), None),  # a grid over twice the rows
        (rows([260] * 1100), tmx.NDCG(k=10), None),  # the top-k merge's size
    ]
    for data, metric, shape in cases:
        calls.clear()
        metric.update(**data)
        metric.compute()
        assert calls == ([] if shape is None else [torch.Size(shape)])


def test_flat_long_queries_the_selection_declines_build_no_lists(monkeypatch):
    """Relevance that is not a small integer, or float64 scores that are not float32, keep the sort path with no grid."""
    built = []
    real = _update._as_lists
    monkeypatch.setattr(_update, "_as_lists", lambda *a: built.append(a[0].dtype) or real(*a))
    rng = np.random.default_rng(5)
    n = 700
    ids = torch.repeat_interleave(torch.arange(2), torch.tensor([400, 300]))
    scores = rng.random(n)
    cases = [
        (
            {"preds": torch.tensor(scores, dtype=torch.float32), "target": torch.tensor(rng.integers(0, 3, n) * 0.5)},
            None,
        ),
        ({"preds": torch.tensor(scores), "target": torch.tensor(rng.random(n) < 0.1)}, None),  # float64, not float32
        ({"preds": torch.tensor(scores).float().double(), "target": torch.tensor(rng.random(n) < 0.1)}, torch.float32),
        (
            {"preds": torch.tensor(scores, dtype=torch.float32), "target": torch.tensor(rng.integers(0, 3, n) * 1.0)},
            torch.float32,
        ),
    ]
    for data, grouped_as in cases:
        built.clear()
        metric = tmx.NDCG(k=10)
        metric.update(**data, indexes=ids)
        # the value of numpy's NDCG@10 per query (linear gain, ties ordered by score only: these scores are distinct)
        expected = []
        for q in range(2):
            sel = (ids == q).numpy()
            p, t = data["preds"].double().numpy()[sel], data["target"].double().numpy()[sel]
            gains = t[np.argsort(-p, kind="stable")][:10]
            ideal = np.sort(t)[::-1][:10]
            discount = 1 / np.log2(np.arange(2, 12))
            expected.append((gains * discount[: len(gains)]).sum() / (ideal * discount[: len(ideal)]).sum())
        assert float(metric.compute()) == pytest.approx(np.mean(expected), rel=1e-12)
        assert built == ([] if grouped_as is None else [grouped_as])
