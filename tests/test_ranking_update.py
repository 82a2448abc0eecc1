"""The exact ranking metrics' ``update`` of flat rows without a mask: checked as given, copied once.

``update`` checks such rows without formatting them (``_flat_rows_checked``: the structural checks
of ``_ranking_format`` in one expression, the bounds read directly on the CPU) and keeps one copy of
each tensor. These tests pin what that path must keep: every rejection is the functional's
(``_ranking_format``'s) message and leaves the state untouched; values of every accepted dtype
equal scikit-learn's ``ndcg_score`` / NumPy formulas on the rows as given; the kept rows are the
metric's own (a caller's in-place write after ``update`` changes nothing); and the checks run as
few torch calls as they need (counted, no clock).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

import torchmetrics_ext as tmx
from tests.test_update_overhead import _Calls
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path


def _rows(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "preds": torch.rand(n, generator=g),
        "target": (torch.rand(n, generator=g) < 0.4).long(),
        "indexes": torch.arange(n) // 4,
        "weights": torch.rand(n, generator=g) + 0.1,
    }


def _states(metric):
    return {name: [t.clone() for t in getattr(metric, name)] for name in ("preds", "target", "indexes", "weights")}


def _bad(name):
    """A batch with one defect, named; each is refused by ``_ranking_format`` with its own message."""
    rows = _rows()
    n = rows["preds"].numel()
    nan = rows["preds"].clone()
    nan[5] = float("nan")
    negative = rows["target"].clone()
    negative[3] = -1
    inf_weight = rows["weights"].clone()
    inf_weight[0] = float("inf")
    changes = {
        "preds list": {"preds": rows["preds"].tolist()},
        "int preds": {"preds": rows["target"]},
        "complex preds": {"preds": rows["preds"].to(torch.complex64)},
        "2-D target": {"target": rows["target"].view(3, 4)},
        "short target": {"target": rows["target"][:-1]},
        "complex target": {"target": rows["target"].to(torch.complex64)},
        "float indexes": {"indexes": rows["indexes"].float()},
        "bool indexes": {"indexes": rows["indexes"] > 0},
        "short indexes": {"indexes": rows["indexes"][:-1]},
        "indexes list": {"indexes": rows["indexes"].tolist()},
        "short weights": {"weights": rows["weights"][:-1]},
        "complex weights": {"weights": rows["weights"].to(torch.complex64)},
        "weights list": {"weights": rows["weights"].tolist()},
        "meta target": {"target": torch.empty(n, dtype=torch.int64, device="meta")},
        "NaN preds": {"preds": nan},
        "NaN float16 preds": {"preds": nan.half()},
        "NaN bfloat16 preds": {"preds": nan.bfloat16()},
        "NaN float64 preds": {"preds": nan.double()},
        "negative target": {"target": negative},
        "negative int8 target": {"target": negative.to(torch.int8)},
        "inf target": {"target": rows["target"].double().index_fill(0, torch.tensor([2]), float("inf"))},
        "NaN target": {"target": rows["target"].float().index_fill(0, torch.tensor([2]), float("nan"))},
        "negative weights": {"weights": -rows["weights"]},
        "inf weights": {"weights": inf_weight},
        "NaN int target with NaN preds first": {"preds": nan, "target": negative},
    }
    return {**rows, **changes[name]}


BAD = [
    "preds list",
    "int preds",
    "complex preds",
    "2-D target",
    "short target",
    "complex target",
    "float indexes",
    "bool indexes",
    "short indexes",
    "indexes list",
    "short weights",
    "complex weights",
    "weights list",
    "meta target",
    "NaN preds",
    "NaN float16 preds",
    "NaN bfloat16 preds",
    "NaN float64 preds",
    "negative target",
    "negative int8 target",
    "inf target",
    "NaN target",
    "negative weights",
    "inf weights",
    "NaN int target with NaN preds first",
]


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize(
    "factory", [tmx.NDCG, tmx.MRR, lambda: tmx.RecallAtK(5), lambda: tmx.RankingMetrics(ks=(1, 5))]
)
def test_rejections_are_the_functionals_and_leave_the_state(factory, name, device_path):
    batch = _bad(name)
    with force_device_path(device_path):
        with pytest.raises((TypeError, ValueError)) as expected:
            tmf.ndcg(batch["preds"], batch["target"], indexes=batch["indexes"], weights=batch["weights"])
        metric = factory()
        metric.update(**_rows(seed=1))
        before, count = _states(metric), metric.update_count
        with pytest.raises(expected.type) as got:
            metric.update(**batch)
    assert str(got.value) == str(expected.value)
    after = _states(metric)
    assert metric.update_count == count
    for key, chunks in before.items():
        assert len(after[key]) == len(chunks)
        for a, b in zip(after[key], chunks):
            assert a.dtype == b.dtype and torch.equal(a, b), key


def _numpy_ndcg(preds, target, indexes, weights=None):
    """Mean (query-weighted: a query weighs its rows' largest weight) of sklearn's ndcg_score per query.

    Queries without a relevant row are skipped, the metric's default ``empty_target_action``.
    """
    values, query_weights = [], []
    for q in np.unique(indexes):
        rows = indexes == q
        if target[rows].sum() == 0:
            continue
        if rows.sum() == 1:
            values.append(1.0)
        else:
            values.append(ndcg_score(target[rows][None], preds[rows][None]))
        query_weights.append(1.0 if weights is None else weights[rows].max())
    return float(np.average(values, weights=query_weights))


SCORES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LABELS = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.float32]
IDS = [torch.uint8, torch.int32, torch.int64, torch.uint64]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    ("score", "label", "ids"),
    [(s, lb, ids) for s in SCORES for lb in LABELS for ids in IDS[:1]]
    + [(torch.float32, torch.int64, ids) for ids in IDS],
)
def test_every_accepted_dtype_gives_sklearns_ndcg_on_rows_reused_by_the_caller(score, label, ids, weighted):
    """Several batches written into the same buffers (then scribbled over before ``compute``): each kept
    as it was given. Scores rounded to the score dtype first, so the reference ranks what the metric saw."""
    rng = np.random.default_rng(7)
    n, parts = 64, 4
    preds = torch.tensor(rng.permutation(n * parts) / (n * parts), dtype=score)  # distinct in every dtype here
    target = torch.tensor(rng.integers(0, 2 if label == torch.bool else 4, n * parts))
    indexes = torch.arange(n * parts) // 8
    weights = torch.tensor(rng.random(n * parts) + 0.1, dtype=torch.float32)
    buffers = {
        "preds": torch.empty(n, dtype=score),
        "target": torch.empty(n, dtype=label),
        "indexes": torch.empty(n, dtype=ids),
    }
    if weighted:
        buffers["weights"] = torch.empty(n, dtype=torch.float32)
    metric = tmx.NDCG()
    for i in range(parts):
        part = slice(i * n, (i + 1) * n)
        buffers["preds"].copy_(preds[part])
        buffers["target"].copy_(target[part].to(label))
        buffers["indexes"].copy_(indexes[part].to(ids))
        if weighted:
            buffers["weights"].copy_(weights[part])
        metric.update(**buffers)
    for buffer in buffers.values():
        buffer.fill_(1 if buffer.dtype == torch.bool else 3)
    expected = _numpy_ndcg(
        preds.double().numpy(), target.numpy(), indexes.numpy(), weights.double().numpy() if weighted else None
    )
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6)


def test_int64_relevance_is_kept_as_int32_only_below_2_31():
    rows = _rows()
    metric = tmx.NDCG()
    metric.update(rows["preds"], rows["target"], indexes=rows["indexes"])
    assert metric.target[-1].dtype == torch.int32
    big = rows["target"].clone()
    big[0] = 2**31
    metric.update(rows["preds"], big, indexes=rows["indexes"])
    assert metric.target[-1].dtype == torch.int64 and metric.target[-1][0].item() == 2**31


def test_kept_rows_are_copies_even_when_nothing_is_converted():
    """float32 scores/relevance, int64 ids and float32 weights need no conversion: still copied."""
    g = torch.Generator().manual_seed(3)
    preds, target = torch.rand(8, generator=g), (torch.rand(8, generator=g) < 0.5).float()
    indexes, weights = torch.arange(8) // 4, torch.rand(8, generator=g)
    metric = tmx.RankingMetrics(ks=(2,))
    metric.update(preds, target, indexes=indexes, weights=weights)
    for name, given in zip(("preds", "target", "indexes", "weights"), (preds, target, indexes, weights)):
        kept = getattr(metric, name)[0]
        assert kept.untyped_storage().data_ptr() != given.untyped_storage().data_ptr(), name
        assert torch.equal(kept, given), name


# most torch calls per update of 16 flat rows (after the first): the grad-mode switch of the update
# wrapper (2), the checks (one `tolist` per tensor: rows up to 16 are read as lists) and one copy per
# tensor (int64 relevance by its int32 conversion; unit weights a cached view, no call).
# Before the cuts: 23 (unweighted int64 relevance), 28 (weighted), 18 (bool relevance); then 11, 15, 8
# (the checks' reductions: scores' max + item, relevance and weights aminmax + 2 items; an `expand` for
# unit weights).
FLAT_BUDGETS = {"int64": 7, "weighted": 9, "bool": 6}


@pytest.mark.parametrize("case", list(FLAT_BUDGETS))
@pytest.mark.parametrize(
    "factory", [tmx.NDCG, tmx.MRR, lambda: tmx.RecallAtK(5), lambda: tmx.RankingMetrics(ks=(1, 5))]
)
def test_flat_update_stays_within_its_call_budget(factory, case):
    rows = _rows(16)
    kwargs = {"indexes": rows["indexes"]}
    target = rows["target"].bool() if case == "bool" else rows["target"]
    if case == "weighted":
        kwargs["weights"] = rows["weights"]
    metric = factory()
    metric.update(rows["preds"], target, **kwargs)
    with _Calls() as counted:
        metric.update(rows["preds"], target, **kwargs)
    total = sum(counted.calls.values())
    assert total <= FLAT_BUDGETS[case], f"{total} calls: {dict(counted.calls)}"
    if case == "bool":
        assert "aminmax" not in counted.calls  # bool relevance cannot be out of range: not read


_SPARSE_RANKING = {
    "ndcg": lambda: tmx.NDCG(k=2),
    "mrr": tmx.MRR,
    "map": tmx.MAP,
    "recall": lambda: tmx.RecallAtK(k=2),
    "ranking-metrics": lambda: tmx.RankingMetrics(ks=(2,), metrics=("ndcg", "mrr")),
    "windowed-ndcg": lambda: tmx.Windowed(tmx.NDCG(k=2), window_size=5),
}


@pytest.mark.parametrize("argument", ["preds", "target", "indexes", "weights"])
@pytest.mark.parametrize("name", sorted(_SPARSE_RANKING))
def test_a_sparse_flat_ranking_input_is_a_type_error_naming_it(name, argument):
    """Flat rows (``indexes``) took the exact update's shortcut check, which never looked at the layout: a sparse
    ``preds``/``target``/``weights`` raised PyTorch's ``NotImplementedError`` (no ``max``/``aminmax`` kernel for the
    sparse backend) and a sparse ``indexes`` a ``RuntimeError`` ("unsupported memory format option") from the copy.
    It is the ``TypeError`` naming the argument and its layout that padded rows and the functional twin give, and
    the state is left as it was: the value afterwards is sklearn's NDCG@2 / MRR of the good batch alone."""
    good = {
        "preds": torch.tensor([0.1, 0.9, 0.4, 0.6, 0.3, 0.8]),
        "target": torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0]),
        "indexes": torch.tensor([0, 0, 1, 1, 2, 2]),
        "weights": torch.ones(6),
    }
    metric = _SPARSE_RANKING[name]()
    metric.update(**good)
    bad = dict(good, **{argument: good[argument].to_sparse()})
    for call in (metric.update, metric):
        with pytest.raises(TypeError, match=rf"`{argument}` to be a dense tensor, got layout torch\.sparse_coo"):
            call(**bad)
    value = metric.compute()
    p, y = good["preds"].numpy().reshape(3, 2), good["target"].numpy().reshape(3, 2)
    ndcg = np.mean([ndcg_score(y[i : i + 1], p[i : i + 1], k=2) for i in range(3)])
    # first relevant item's reciprocal rank per query: (1 + 1 + 1/2) / 3
    expected = {"ndcg": ndcg, "windowed-ndcg": ndcg, "recall": 1.0, "mrr": 2.5 / 3, "map": 2.5 / 3}
    if name == "ranking-metrics":
        np.testing.assert_allclose(value["ndcg@2"].item(), ndcg, rtol=1e-6)
        np.testing.assert_allclose(value["mrr@2"].item(), 2.5 / 3, rtol=1e-6)
    elif name == "windowed-ndcg":
        np.testing.assert_allclose(value["lifetime"].item(), ndcg, rtol=1e-6)
        np.testing.assert_allclose(value["window"].item(), ndcg, rtol=1e-6)
    else:
        np.testing.assert_allclose(value.item(), expected[name], rtol=1e-6)


def _valid_numpy(preds, target, weights):
    """Whether ``_ranking_format`` accepts these values, by NumPy: no NaN score; relevance and weights finite, >= 0."""
    ok = not np.isnan(preds).any()
    ok = ok and np.isfinite(target).all() and (target >= 0).all()
    return bool(ok and (weights is None or (np.isfinite(weights).all() and (weights >= 0).all())))


_SPECIALS = [float("nan"), float("inf"), -float("inf"), -1.0, -0.0, 0.0, 2.0]


@pytest.mark.parametrize("label", [torch.int64, torch.int8, torch.uint8, torch.float32, torch.float16, torch.bool])
@pytest.mark.parametrize("score", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_small_batches_read_as_lists_accept_and_refuse_as_numpy_says(score, label):
    """Up to 16 rows the CPU checks read the values as lists (``_listed_top``), where ``min``/``max`` skip a NaN
    depending on its place: random batches of 1-17 rows with NaN, ±inf, negatives and signed zeros put anywhere
    are accepted exactly when NumPy finds them valid. An accepted batch's value is sklearn's NDCG and its int64
    relevance is kept as int32 (its largest value was read); a refused one raises the functional's message
    (read by the reductions of the device path) and changes nothing."""
    rng = np.random.default_rng(11)
    floating = label.is_floating_point
    for trial in range(60):
        n = int(rng.integers(1, 18))
        preds = rng.random(n)
        target = rng.integers(0, 3, n).astype(np.float64)
        weights = rng.random(n) + 0.1 if trial % 2 else None
        for array, allowed in ((preds, True), (target, floating), (weights, True)):
            if array is not None and rng.random() < 0.5:
                specials = _SPECIALS if allowed else [-1.0, 0.0, 5.0]
                spots = rng.integers(0, n, int(rng.integers(1, 3)))
                array[spots] = rng.choice(specials, spots.size)
        if label == torch.bool:
            target = (target > 0).astype(np.float64)
        p, t = torch.tensor(preds).to(score), torch.tensor(target).to(label)
        w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        indexes = torch.arange(n) // 4
        valid = _valid_numpy(p.double().numpy(), t.double().numpy(), None if w is None else w.double().numpy())
        metric = tmx.NDCG(empty_target_action="zero")
        if not valid:
            with force_device_path(), pytest.raises(ValueError) as expected:
                tmf.ndcg(p, t, indexes=indexes, weights=w)
            with pytest.raises(ValueError) as got:
                metric.update(p, t, indexes=indexes, weights=w)
            assert str(got.value) == str(expected.value)
            assert metric.update_count == 0 and metric.preds == []
            continue
        metric.update(p, t, indexes=indexes, weights=w)
        if label == torch.int64:
            assert metric.target[0].dtype == torch.int32
        q_weights = None if w is None else w.double().numpy()
        tn, ids = t.double().numpy(), indexes.numpy()
        pn = np.unique(p.double().numpy(), return_inverse=True)[1].astype(np.float64)  # ±inf by rank (ties kept)
        values, kept = [], []
        for q in np.unique(ids):
            rows = ids == q
            value = (
                0.0 if tn[rows].sum() == 0 else 1.0 if rows.sum() == 1 else ndcg_score(tn[rows][None], pn[rows][None])
            )
            values.append(value)
            kept.append(1.0 if q_weights is None else q_weights[rows].max())
        if sum(kept) == 0:
            continue
        expected_value = float(np.average(values, weights=kept))
        np.testing.assert_allclose(metric.compute().item(), expected_value, rtol=1e-6, atol=1e-12)


def test_unit_weight_views_are_cached_per_row_count_and_bounded():
    """Unweighted batches keep a cached stride-0 view per row count (no ``expand`` per update), at most 8 held;
    batches of 20 sizes, weighted and not, still give sklearn's query-weighted NDCG."""
    rng = np.random.default_rng(5)
    metric, parts = tmx.NDCG(), []
    for i, n in enumerate(list(range(1, 21)) * 2):
        preds, target = torch.rand(n, dtype=torch.float64), torch.tensor(rng.integers(0, 3, n))
        indexes = torch.arange(n) // 3 + 100 * i
        weights = torch.rand(n, dtype=torch.float64) + 0.5 if i % 3 == 0 else None
        metric.update(preds, target, indexes=indexes, weights=weights)
        parts.append((preds, target, indexes, torch.ones(n, dtype=torch.float64) if weights is None else weights))
    assert 0 < len(metric.__dict__["_unit_views"]) <= 8
    preds, target, indexes, weights = (torch.cat(column).numpy() for column in zip(*parts))
    # each row weighs its query's largest weight (one weight per query here)
    expected = _numpy_ndcg(preds, target, indexes, weights)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-9)
