"""``BootStrapper`` around a ranking metric fed flat rows with query ids resamples rows, not queries.

A resampled query holds some candidates twice and loses others (its ideal DCG counts a repeated relevant row
twice), so the bootstrap values are not those of resampled queries: on the lists below their mean sits about one
standard deviation below the full-data NDCG@10, while a query bootstrap (plain-numpy per-query values resampled
with numpy) is centred on it. The metric warns, naming the padded route; padded lists and updates
outside a bootstrap do not warn.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torchmetrics.wrappers import BootStrapper

import torchmetrics_ext as tmx


def _lists(seed: int = 0, queries: int = 300, length: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(queries, length, generator=g) < 0.15).long() * torch.randint(
        1, 4, (queries, length), generator=g
    )
    preds = 0.3 * target + torch.rand(queries, length, generator=g, dtype=torch.float64)
    return preds, target, torch.arange(queries).repeat_interleave(length)


def _ndcg10(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-query NDCG@10 with linear gains, plain numpy (queries without a relevant row: nan)."""
    disc = 1 / np.log2(np.arange(2, 12))
    order = np.argsort(-preds, axis=1, kind="stable")[:, :10]
    dcg = (np.take_along_axis(target, order, 1) * disc[: order.shape[1]]).sum(1)
    ideal = (-np.sort(-target, axis=1))[:, :10]
    idcg = (ideal * disc[: ideal.shape[1]]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


def test_flat_rows_inside_a_bootstrapper_warn_and_the_values_are_off():
    preds, target, indexes = _lists()
    per_query = _ndcg10(preds.numpy(), target.numpy().astype(float))
    per_query = per_query[~np.isnan(per_query)]
    rng = np.random.default_rng(0)
    query_boot = np.array([per_query[rng.integers(0, per_query.size, per_query.size)].mean() for _ in range(200)])
    full = per_query.mean()
    assert abs(query_boot.mean() - full) < 3 * query_boot.std() / np.sqrt(200) + 1e-3

    torch.manual_seed(0)
    boot = BootStrapper(tmx.NDCG(k=10), num_bootstraps=100, sampling_strategy="multinomial")
    with pytest.warns(UserWarning, match=r"resamples rows, not queries.*\(queries, candidates\)"):
        boot.update(preds.flatten(), target.flatten(), indexes=indexes)
    values = boot.compute()
    # the row bootstrap is biased: its mean sits about one query-bootstrap standard deviation from the NDCG,
    # many standard errors of a 100-bootstrap mean
    assert abs(values["mean"].item() - full) > 5 * query_boot.std() / np.sqrt(100)


def test_padded_lists_inside_a_bootstrapper_resample_queries_without_a_warning():
    preds, target, _ = _lists(1)
    per_query = _ndcg10(preds.numpy(), target.numpy().astype(float))
    per_query = per_query[~np.isnan(per_query)]
    rng = np.random.default_rng(1)
    ref = np.array([per_query[rng.integers(0, per_query.size, per_query.size)].mean() for _ in range(300)])
    torch.manual_seed(1)
    boot = BootStrapper(tmx.NDCG(k=10), num_bootstraps=300, sampling_strategy="multinomial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boot.update(preds, target)
    values = boot.compute()
    assert values["mean"].item() == pytest.approx(ref.mean(), abs=3 * ref.std() / np.sqrt(300) + 1e-3)
    assert values["std"].item() == pytest.approx(ref.std(ddof=1), rel=0.2)


@pytest.mark.parametrize("make", [lambda: tmx.NDCG(k=10), lambda: tmx.RankingMetrics(ks=(10,), metrics=("ndcg",))])
def test_flat_rows_outside_a_bootstrapper_do_not_warn(make):
    preds, target, indexes = _lists(2, queries=20)
    metric = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(preds.flatten(), target.flatten(), indexes=indexes)
        metric.update(preds.flatten(), target.flatten(), indexes=indexes)


def test_an_entry_of_ranking_metrics_inside_a_bootstrapper_warns_for_flat_rows():
    preds, target, indexes = _lists(3, queries=20)
    boot = BootStrapper(tmx.RankingMetrics(ks=(10,), metrics=("ndcg",))["ndcg@10"], num_bootstraps=3)
    with pytest.warns(UserWarning, match="resamples rows, not queries"):
        boot.update(preds.flatten(), target.flatten(), indexes=indexes)


def test_the_flat_rows_warning_names_the_callers_line():
    preds, target, indexes = torch.rand(40), torch.randint(0, 2, (40,)), torch.arange(40) // 10
    boot = BootStrapper(tmx.NDCG(k=3), num_bootstraps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boot.update(preds, target, indexes=indexes)
    flagged = [w for w in caught if "resamples rows, not queries" in str(w.message)]
    assert flagged and flagged[0].filename == __file__
