"""Wide padded lists (a catalogue of candidates per query): first-hit counting and the top-k candidates.

MRR and hit rate of padded ``(Q, L)`` lists count each list's first relevant entry in place
(:func:`~torchmetrics_ext.functional.ranking._first_hit.grid_first_hit_values`); cutoff metrics of
wide lists key only the entries scored at least each list's ``k``-th best score
(:func:`~torchmetrics_ext.functional.ranking._topk._wide_candidates`). Both are checked bit for
bit against the row-by-row sort these lists took before (:func:`~._kernel.rank_grid`, kept as the
reference by switching the new kernels off), on seeded random grids with heavy ties, ``-inf``,
signed zeros, NaN under the mask, half-precision scores, graded and bool relevance, weights and
padding; then against the numpy brute force of the tie rule and pytrec_eval. The widths are kept
small by lowering ``WIDE_LIST`` (the kernels do not depend on it); ``TMX_WIDE_SEEDS`` runs more grids.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.test_ranking import dict_ref
from torchmetrics_ext.functional.ranking import _first_hit, _topk, _update
from torchmetrics_ext.functional.ranking._inputs import PaddedGrid
from torchmetrics_ext.functional.ranking._registry import SPECS
from torchmetrics_ext.utilities.device import force_device_path

SEEDS = int(os.environ.get("TMX_WIDE_SEEDS", "12"))
KS = (1, 3, 10, 70)  # 70 > the merge's MAX_K; lists from 16 x 70 entries take the candidates
METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map", "f1")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _wide_grid(rng: np.random.Generator, form: str, dtype: torch.dtype) -> dict:
    """A random ``(Q, L)`` batch: heavy ties, ``-inf``, signed zeros; lists of every length under a mask."""
    num_queries, width = int(rng.integers(3, 9)), int(rng.integers(900, 1300))
    levels = int(rng.choice([2, 3, 8]))  # distinct scores in a heavily tied row
    scores = rng.normal(size=(num_queries, width))
    tied = rng.random(num_queries) < 0.5
    scores[tied] = rng.integers(0, levels, size=(int(tied.sum()), width)) / 4.0
    scores[rng.random((num_queries, width)) < 0.02] = -np.inf
    scores[rng.random((num_queries, width)) < 0.01] = -0.0
    if rng.random() < 0.3:
        scores[0] = 1.0  # one list of equal scores: every cutoff ends in a tie (the keyed fallback)
    density = rng.choice([0.01, 0.002])  # ~10 relevant entries per list, or ~2 (ranked by counting)
    grades = rng.integers(0, 4, size=(num_queries, width)) * (rng.random((num_queries, width)) < density)
    grades[rng.random(num_queries) < 0.15] = 0  # lists without a relevant entry
    target = torch.tensor(grades)
    kind = rng.integers(3)
    if kind == 1:
        target = target > 0
    elif kind == 2:
        target = target.double()
    batch = {"preds": torch.tensor(scores).to(dtype), "target": target}
    if form in ("mask", "weighted"):
        lens = rng.integers(0, width + 1, size=num_queries)
        lens[rng.random(num_queries) < 0.3] = rng.integers(0, 12)  # shorter than the cutoffs (or empty)
        mask = torch.tensor(np.arange(width)[None, :] < lens[:, None])
        batch["preds"] = batch["preds"].masked_fill(~mask, float("nan"))  # never read under the mask
        batch["mask"] = mask
    if form == "weighted":
        batch["weights"] = torch.tensor(rng.choice([0.0, 0.5, 2.0], size=num_queries))
    return batch


def _options(rng: np.random.Generator) -> dict:
    return {
        "empty_target_action": str(rng.choice(["skip", "zero", "one"])),
        "exponential_gain": bool(rng.random() < 0.3),
        "adaptive_k": bool(rng.random() < 0.3),
        "remove_single_length_sessions": bool(rng.random() < 0.2),
        "queries_complete_per_batch": True,  # ranked in `update`: the sums are the states compared
    }


def _sums(batch: dict, ks, metrics, options) -> tuple[torch.Tensor, torch.Tensor]:
    metric = tmx.RankingMetrics(ks=ks, metrics=metrics, **options)
    metric.update(**batch)
    return metric.value_sum.clone(), metric.weight_sum.clone()


def _reference_sums(monkeypatch, batch, ks, metrics, options):
    """The sums of the row-by-row sort (every list sorted whole), the kernel these lists took before."""
    with monkeypatch.context() as patch:
        patch.setattr(_update, "grid_topk_values", lambda *args, **kwargs: None)
        patch.setattr(_update, "grid_first_hit_values", lambda *args, **kwargs: None)
        patch.setattr(_update, "grid_relevant_ranks", lambda *args, **kwargs: None)
        return _sums(batch, ks, metrics, options)


def _assert_bits(ours, theirs, label):
    for mine, other in zip(ours, theirs, strict=True):
        assert torch.equal(mine.view(torch.int64), other.view(torch.int64)), (label, mine, other)


@pytest.fixture
def spies(monkeypatch):
    """Lists from 64 entries count as wide; records whether each new kernel took a batch."""
    monkeypatch.setattr(_topk, "WIDE_LIST", 64)
    monkeypatch.setattr(_update, "COUNTED_WIDTH", 64)
    taken = {"candidates": 0, "first_hit": 0, "counted": 0}
    real_candidates, real_first = _topk._wide_candidates, _update.grid_first_hit_values
    real_counted = _update.grid_relevant_ranks

    def counted(*args):
        out = real_counted(*args)
        taken["counted"] += out is not None
        return out

    monkeypatch.setattr(_update, "grid_relevant_ranks", counted)

    def candidates(*args):
        found = real_candidates(*args)
        taken["candidates"] += found is not None
        return found

    def first_hit(*args):
        out = real_first(*args)
        taken["first_hit"] += out is not None
        return out

    monkeypatch.setattr(_topk, "_wide_candidates", candidates)
    monkeypatch.setattr(_update, "grid_first_hit_values", first_hit)
    return taken


@pytest.mark.parametrize("form", ["plain", "mask", "weighted"])
def test_wide_lists_equal_the_row_sort_bit_for_bit(monkeypatch, spies, form):
    """Every cutoff metric and MRR/hit rate (with and without cutoff) of wide lists: the row sort's sums exactly."""
    rng = np.random.default_rng(40 + ["plain", "mask", "weighted"].index(form))
    for seed in range(SEEDS):
        batch = _wide_grid(rng, form, DTYPES[seed % len(DTYPES)])
        options = _options(rng)
        for ks, metrics in (
            (KS, METRICS),  # k = 70 > the merge's MAX_K: torch.topk on the lists since this change
            ((10,), ("ndcg", "map")),
            ((1, 10, None), ("mrr", "hit_rate")),  # first-hit counting, any cutoff
            ((None,), ("mrr",)),
            ((None, 5), ("ndcg", "map", "r_precision", "recall")),  # whole lists: counted ranks or the sort
        ):
            ours = _sums(batch, ks, metrics, options)
            _assert_bits(ours, _reference_sums(monkeypatch, batch, ks, metrics, options), (form, seed, ks, metrics))
    assert min(spies.values()) > 0  # each new kernel ran (not only their fallbacks)


def test_wide_lists_match_the_tie_rule_brute_force(spies):
    """The numpy brute force of the tie rule (score descending, relevance ascending) on tied float32 and float16 lists."""
    rng = np.random.default_rng(7)
    for seed in range(max(SEEDS // 3, 2)):
        batch = _wide_grid(rng, "mask" if seed % 2 else "plain", (torch.float32, torch.float16)[seed % 2])
        batch["target"] = batch["target"].long()
        ref_data = {key: value.double().numpy() if key == "preds" else value.numpy() for key, value in batch.items()}
        metric = tmx.RankingMetrics(ks=KS, metrics=METRICS, empty_target_action="zero")
        metric.update(**batch)
        got = metric.compute()
        expected = dict_ref(KS, metrics=METRICS, action="zero")(ref_data)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key].item(), value, rtol=1e-12, atol=1e-12, err_msg=f"{seed} {key}")
    assert spies["candidates"] > 0


def test_heavy_ties_at_the_cutoff_fall_back_to_every_key(spies):
    """Lists whose k-th score is shared by more than ``WIDE_CANDIDATES * k`` entries key every entry (same values)."""
    preds = torch.zeros(2, 2000)
    preds[0, :5] = 1.0
    target = torch.zeros(2, 2000, dtype=torch.long)
    target[0, 3], target[0, 100], target[1, 1999] = 2, 1, 1  # relevant entries inside the tie rank after it
    got = tmx.RankingMetrics(ks=(10,), metrics=("ndcg", "recall", "precision"))(preds, target)
    expected = dict_ref((10,), metrics=("ndcg", "recall", "precision"))(
        {"preds": preds.double().numpy(), "target": target.numpy()}
    )
    for key, value in expected.items():
        np.testing.assert_allclose(got[key].item(), value, rtol=1e-12, err_msg=key)
    assert spies["candidates"] == 0  # declined: the tie at the cutoff is 1,995 entries


def test_catalogue_sized_lists_without_lowered_width():
    """The default thresholds on a 20k-item catalogue, one-hot targets and a model's float32 scores."""
    rng = np.random.default_rng(3)
    num_queries, width = 16, 20_000
    preds = torch.tensor(rng.normal(size=(num_queries, width)), dtype=torch.float32)
    item = torch.tensor(rng.integers(0, width, size=num_queries))
    target = torch.nn.functional.one_hot(item, width).bool()
    rank = (preds > preds[torch.arange(num_queries), item].unsqueeze(1)).sum(1).double() + 1  # no ties: 1-based
    ref = {
        "mrr": (1 / rank).mean(),
        "mrr@10": torch.where(rank <= 10, 1 / rank, 0.0).mean(),
        "ndcg@10": torch.where(rank <= 10, 1 / torch.log2(rank + 1), 0.0).mean(),
        "recall@100": (rank <= 100).double().mean(),
    }
    assert tmx.MRR()(preds, target).item() == pytest.approx(ref["mrr"].item(), rel=1e-12)
    assert tmx.MRR(k=10)(preds, target).item() == pytest.approx(ref["mrr@10"].item(), rel=1e-12, abs=1e-15)
    assert tmx.NDCG(k=10)(preds, target).item() == pytest.approx(ref["ndcg@10"].item(), rel=1e-12, abs=1e-15)
    assert tmx.RecallAtK(k=100)(preds, target).item() == pytest.approx(ref["recall@100"].item(), rel=1e-12)


def test_wide_lists_agree_with_pytrec_eval(spies):
    """Tie-free wide lists: trec_eval's recip_rank, ndcg_cut, P, recall, map_cut and success."""
    import pytrec_eval

    rng = np.random.default_rng(11)
    num_queries, width = 4, 2000
    preds = rng.permutation(num_queries * width).reshape(num_queries, width).astype(np.float32)  # distinct scores
    target = rng.integers(0, 3, size=(num_queries, width)) * (rng.random((num_queries, width)) < 0.01)
    target[:, 0] = 1  # every query has a relevant entry
    qrel = {str(q): {f"d{i}": int(target[q, i]) for i in range(width)} for q in range(num_queries)}
    run = {str(q): {f"d{i}": float(preds[q, i]) for i in range(width)} for q in range(num_queries)}
    measures = {"recip_rank", "ndcg_cut.10,100", "P.10", "recall.100", "map_cut.10", "success.10"}
    per_query = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
    ours = tmx.RankingMetrics(ks=(10, 100), metrics=("ndcg", "precision", "recall", "map", "hit_rate"))(
        torch.tensor(preds), torch.tensor(target)
    )
    ours["mrr"] = tmx.MRR()(torch.tensor(preds), torch.tensor(target))
    for key, theirs in (
        ("mrr", "recip_rank"),
        ("ndcg@10", "ndcg_cut_10"),
        ("ndcg@100", "ndcg_cut_100"),
        ("precision@10", "P_10"),
        ("recall@100", "recall_100"),
        ("map@10", "map_cut_10"),
        ("hit_rate@10", "success_10"),
    ):
        expected = np.mean([values[theirs] for values in per_query.values()])
        np.testing.assert_allclose(ours[key].item(), expected, rtol=1e-9, err_msg=key)
    assert spies["candidates"] > 0 and spies["first_hit"] > 0


def test_device_path_counts_first_hits_too():
    """On the device path (forced on the CPU) padded MRR without a mask is counted in place: the same sums."""
    rng = np.random.default_rng(5)
    batch = _wide_grid(rng, "plain", torch.float32)
    with force_device_path():
        on_device = _sums(batch, (1, None), ("mrr", "hit_rate"), {"queries_complete_per_batch": True})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_update, "grid_first_hit_values", lambda *args, **kwargs: None)
        patch.setattr(_update, "grid_topk_values", lambda *args, **kwargs: None)
        by_sort = _sums(batch, (1, None), ("mrr", "hit_rate"), {"queries_complete_per_batch": True})
    for mine, other in zip(on_device, by_sort, strict=True):
        torch.testing.assert_close(mine, other, rtol=0, atol=1e-12)


def test_first_hit_relevant_count_is_a_flag():
    """The grid first-hit kernel returns 1/0 for 'has a relevant entry' (all the empty-query policy reads)."""
    preds = torch.tensor([[0.5, 0.9, 0.1, 0.9], [0.2, 0.2, 0.2, 0.2]])
    target = torch.tensor([[1, 0, 3, 0], [0, 0, 0, 0]])
    columns, has_rel, _ranked = _first_hit.grid_first_hit_values(
        PaddedGrid(preds, target, None, None), [(SPECS["mrr"], None)]
    )
    assert has_rel.tolist() == [1.0, 0.0]
    assert columns(0)[0].item() == 1 / 3  # two entries scored 0.9 rank ahead of the relevant 0.5


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.uint8])
def test_a_numeric_mask_is_refused_with_the_fix(dtype):
    """A Hugging Face ``attention_mask`` (int64) or a float mask: the TypeError says ``mask.bool()``."""
    preds, target = torch.rand(2, 5), torch.randint(0, 2, (2, 5))
    attention_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=dtype)
    metric = tmx.MRR()
    with pytest.raises(TypeError, match=r"Expected `mask` to be a bool tensor, got dtype .*`mask\.bool\(\)`"):
        metric.update(preds, target, mask=attention_mask)
    metric.update(preds, target, mask=attention_mask.bool())  # the suggested fix is accepted
    assert metric.compute().isfinite()


@pytest.mark.parametrize("target_dtype", [torch.bool, torch.int64])
def test_mask_validation_reads_nan_only_in_kept_slots(target_dtype):
    """Scores are checked for NaN without copying the grid when none has NaN; NaN under the mask stays accepted."""
    preds = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    target = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0]]).to(target_dtype)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    padded = preds.clone()
    padded[0, 3] = float("nan")  # under the mask: never read
    metric = tmx.MRR()
    metric.update(padded, target, mask=mask)
    assert metric.compute().item() == pytest.approx((1 / 3 + 1 / 4) / 2)  # 0.1 ranks third, 0.2 fourth
    kept_nan = preds.clone()
    kept_nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="Expected `preds` without NaN"):
        metric.update(kept_nan, target, mask=mask)
    assert metric.compute().item() == pytest.approx((1 / 3 + 1 / 4) / 2)  # the rejected batch changed nothing


@pytest.mark.parametrize("layout", ["one_query", "few_queries"])
def test_flat_long_queries_take_cutoffs_above_64_bit_for_bit(monkeypatch, layout):
    """Flat rows of long queries (one query, or a few with ids in any order) at cutoffs 65..1024: the sort's sums."""
    rng = np.random.default_rng(9 + (layout == "few_queries"))
    calls = []
    real = _update.grid_topk_values

    def selected(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(_update, "grid_topk_values", selected)
    for _ in range(3):
        num_queries = 1 if layout == "one_query" else 3
        n = 1200 * num_queries
        batch = {
            "preds": torch.tensor(np.round(rng.normal(size=n), 1), dtype=torch.float32),  # heavy ties
            "target": torch.tensor(rng.integers(0, 3, size=n) * (rng.random(n) < 0.05)),
            "indexes": torch.tensor(rng.permutation(np.repeat(np.arange(num_queries) * 7, 1200))),
        }
        options = {"queries_complete_per_batch": True, "exponential_gain": bool(rng.random() < 0.5)}
        calls.clear()
        ours = _sums(batch, (70, 150), ("ndcg", "recall", "precision", "map"), options)
        assert any(calls)  # the lists' torch.topk took them, not the sort
        with monkeypatch.context() as patch:
            patch.setattr(_update, "grid_topk_values", lambda *args, **kwargs: None)
            theirs = _sums(batch, (70, 150), ("ndcg", "recall", "precision", "map"), options)
        _assert_bits(ours, theirs, layout)
