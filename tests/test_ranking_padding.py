"""Padded ``(Q, L)`` ranking input marked by ``padding_value``: a relevant candidate in a padded slot is refused.

References are plain Python: recall and precision of each query computed from lists, with the
padded slots left out by hand.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path

PAD = -10.0
# query 0's only relevant candidate (slot 2) has the padding score: dropping it loses the query
PREDS = [[0.9, 0.3, PAD], [0.1, 0.8, 0.2]]
TARGET = [[0, 0, 1], [1, 0, 0]]
GOOD_PREDS = [[0.9, 0.3, 0.5], [0.1, 0.8, 0.2]]


def _ref_query(scores, rels, k):
    """Plain-Python (recall@k, precision@k) of one query, its candidates given as lists; None without positives."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    relevant = sum(1 for r in rels if r > 0)
    if relevant == 0:
        return None
    cut = len(order) if k is None else k
    hits = sum(1 for i in order[:cut] if rels[i] > 0)
    return hits / relevant, hits / cut


def _ref(preds, target, k, keep):
    """Mean recall and precision over the queries with a relevant kept candidate (``skip``)."""
    values = []
    for scores, rels, kept in zip(preds, target, keep, strict=True):
        query = _ref_query([s for s, m in zip(scores, kept) if m], [r for r, m in zip(rels, kept) if m], k)
        if query is not None:
            values.append(query)
    if not values:
        return math.nan, math.nan
    return sum(v[0] for v in values) / len(values), sum(v[1] for v in values) / len(values)


def _path(device_path):
    return force_device_path() if device_path else contextlib.nullcontext()


BUILDS = {
    "collection": lambda **kw: tmx.RankingMetrics(ks=(1, 2), metrics=("recall", "precision"), **kw),
    "ndcg": lambda **kw: tmx.NDCG(k=2, **kw),
    "recall": lambda **kw: tmx.RecallAtK(k=2, **kw),
    "precision": lambda **kw: tmx.PrecisionAtK(k=2, **kw),
    "mrr": lambda **kw: tmx.MRR(**kw),
    "recall_session": lambda **kw: tmx.RecallAtK(k=2, queries_complete_per_batch=True, **kw),
}


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_relevant_candidate_with_padding_score_is_refused_state_untouched(name, device_path):
    metric = BUILDS[name](padding_value=PAD)
    with _path(device_path):
        metric.update(torch.tensor(GOOD_PREDS), torch.tensor(TARGET))
        before = {
            key: [v.clone() for v in value] if isinstance(value, list) else value.clone()
            for key, value in metric.metric_state.items()
        }
        with pytest.raises(ValueError, match=r"query 0 whose candidate 2 is relevant and scores `padding_value`"):
            metric.update(torch.tensor(PREDS), torch.tensor(TARGET))
        after = metric.metric_state
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, list):
            assert len(value) == len(after[key]) and all(torch.equal(a, b) for a, b in zip(value, after[key]))
        else:
            assert torch.equal(value, after[key]), key


@pytest.mark.parametrize("device_path", [False, True])
def test_refused_in_forward_functional_and_bool_float_relevance(device_path):
    preds = torch.tensor(PREDS)
    with _path(device_path):
        for target in (torch.tensor(TARGET, dtype=torch.bool), torch.tensor(TARGET, dtype=torch.float32)):
            with pytest.raises(ValueError, match="query 0 whose candidate 2"):
                tmx.RecallAtK(k=2, padding_value=PAD)(preds, target)
            with pytest.raises(ValueError, match="query 0 whose candidate 2"):
                tmf.recall_at_k(preds, target, k=2, padding_value=PAD)
        with pytest.raises(ValueError, match="query 0 whose candidate 2"):
            tmf.ranking_metrics(preds, torch.tensor(TARGET), ks=(1,), padding_value=PAD)


def test_a_batch_of_padding_only_is_refused_too():
    """No candidate is kept (no bounds are read): the relevant padded one is still refused."""
    with pytest.raises(ValueError, match="query 1 whose candidate 0"):
        tmx.RecallAtK(k=1, padding_value=PAD).update(torch.full((2, 2), PAD), torch.tensor([[0, 0], [1, 0]]))


@pytest.mark.parametrize("device_path", [False, True])
def test_validate_args_false_keeps_dropping_the_slot(device_path):
    metric = tmx.RankingMetrics(ks=(1, 2), metrics=("recall", "precision"), padding_value=PAD, validate_args=False)
    with _path(device_path):
        metric.update(torch.tensor(PREDS), torch.tensor(TARGET))
    keep = [[s != PAD for s in row] for row in PREDS]
    for k in (1, 2):
        recall, precision = _ref(PREDS, TARGET, k, keep)
        values = metric.compute()
        assert values[f"recall@{k}"].item() == pytest.approx(recall)
        assert values[f"precision@{k}"].item() == pytest.approx(precision)


@pytest.mark.parametrize("device_path", [False, True])
def test_mask_stays_the_callers_choice(device_path):
    """A slot that `mask` drops is not refused whatever its score; one it keeps but the value pads is."""
    preds, target = torch.tensor(PREDS), torch.tensor(TARGET)
    dropped = torch.tensor([[True, True, False], [True, True, True]])
    with _path(device_path):
        metric = tmx.RankingMetrics(ks=(2,), metrics=("recall", "precision"), padding_value=PAD)
        metric.update(preds, target, mask=dropped)
        recall, precision = _ref(PREDS, TARGET, 2, dropped.tolist())
        values = metric.compute()
        assert values["recall@2"].item() == pytest.approx(recall)
        assert values["precision@2"].item() == pytest.approx(precision)
        assert tmx.RecallAtK(k=2)(preds, target, mask=dropped).item() == pytest.approx(recall)  # no padding_value
        with pytest.raises(ValueError, match="query 0 whose candidate 2"):
            tmx.RecallAtK(k=2, padding_value=PAD).update(preds, target, mask=torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("device_path", [False, True])
def test_padding_with_relevance_zero_matches_reference(device_path):
    preds = [[0.9, PAD, 0.3, PAD], [0.1, 0.8, 0.2, 0.4], [PAD, 0.5, PAD, 0.7]]
    target = [[1, 0, 1, 0], [0, 0, 2, 1], [0, 1, 0, 0]]
    keep = [[s != PAD for s in row] for row in preds]
    metric = tmx.RankingMetrics(ks=(1, 2, None), metrics=("recall", "precision"), padding_value=PAD)
    with _path(device_path):
        metric.update(torch.tensor(preds), torch.tensor(target))
    values = metric.compute()
    for k in (1, 2, None):
        recall, precision = _ref(preds, target, k, keep)
        suffix = "" if k is None else f"@{k}"
        assert values[f"recall{suffix}"].item() == pytest.approx(recall)
        assert values[f"precision{suffix}"].item() == pytest.approx(precision)


@pytest.mark.parametrize("fill", [float("-inf"), torch.finfo(torch.float32).min])
def test_unnamed_padding_counts_in_whole_list_precision(fill):
    """As docs/ranking.md says: padding is what `padding_value` or `mask` names; other fill values are candidates."""
    preds = [[0.9, 0.3, fill], [0.1, 0.8, 0.2]]
    target = [[1, 0, 0], [1, 0, 0]]
    p, t = torch.tensor(preds), torch.tensor(target)
    build = lambda **kw: tmx.RankingMetrics(ks=(None,), metrics=("precision",), **kw)  # noqa: E731
    everything = [[True] * 3, [True] * 3]
    named = [[True, True, False], [True] * 3]
    assert build()(p, t)["precision"].item() == pytest.approx(_ref(preds, target, None, everything)[1])
    assert build(padding_value=fill)(p, t)["precision"].item() == pytest.approx(_ref(preds, target, None, named)[1])
    assert build()(p, t, mask=torch.tensor(named))["precision"].item() == pytest.approx(
        _ref(preds, target, None, named)[1]
    )
