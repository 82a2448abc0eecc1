"""TorchMetrics' retrieval options given to the ranking metrics are refused naming what replaces them here.

A user migrating from ``torchmetrics.retrieval`` (or ``MulticlassAccuracy(top_k=...)``) writes the
arguments they know; each refusal says what the guide's Arguments table says (docs/migration_torchmetrics.md),
and the recipe it names gives TorchMetrics' value (checked against TorchMetrics itself or a numpy reference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf

_RANKING_CLASSES = [
    lambda **kw: tmx.NDCG(k=3, **kw),
    lambda **kw: tmx.RecallAtK(k=3, **kw),
    lambda **kw: tmx.PrecisionAtK(k=3, **kw),
    lambda **kw: tmx.MRR(**kw),
    lambda **kw: tmx.HitRate(k=3, **kw),
    lambda **kw: tmx.MAP(**kw),
    lambda **kw: tmx.RPrecision(**kw),
    lambda **kw: tmx.F1AtK(k=3, **kw),
    lambda **kw: tmx.RankingMetrics(ks=(3,), **kw),
]


@pytest.mark.parametrize("build", _RANKING_CLASSES)
@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("ignore_index", -100, r"`ignore_index=-100` is `mask=\(target != -100\)` in `update`"),
        ("aggregation", "median", r"the \(weighted\) mean over queries only"),
    ],
)
def test_torchmetrics_retrieval_options_are_refused_naming_their_counterpart(build, option, value, hint):
    with pytest.raises(ValueError, match=rf"Unexpected keyword arguments: `{option}`.*{hint}"):
        build(**{option: value})


@pytest.mark.parametrize("build", [*_RANKING_CLASSES, lambda **kw: tmf.ndcg(torch.rand(1, 3), torch.ones(1, 3), **kw)])
@pytest.mark.parametrize(("theirs", "ours"), [("neg", "zero"), ("pos", "one")])
def test_torchmetrics_empty_target_actions_are_refused_naming_ours(build, theirs, ours):
    match = rf"Expected `empty_target_action` to be one of .*got '{theirs}'.*TorchMetrics' '{theirs}' is '{ours}' here"
    with pytest.raises(ValueError, match=match):
        build(empty_target_action=theirs)


def test_multiclass_average_is_refused_saying_the_value_is_micro():
    with pytest.raises(ValueError, match=r"Unexpected keyword arguments: `average`.*average=\"micro\"\)"):
        tmx.MulticlassRecallAtK(k=2, num_classes=4, average="macro")


@pytest.mark.parametrize("mark", [-1, -100])
def test_negative_relevance_marks_are_refused_with_the_mask_recipe_for_flat_rows_too(mark):
    """-100 is TorchMetrics' and Hugging Face's usual ``ignore_index``: the refusal names ``mask``, flat rows
    included, and that mask gives TorchMetrics' ``ignore_index`` value."""
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    gen = torch.Generator().manual_seed(0)
    indexes = torch.arange(40) // 8
    preds = torch.rand(40, generator=gen) + 0.01  # positive, tie-free
    target = torch.randint(0, 3, (40,), generator=gen)
    target[indexes * 8] = 2  # every query keeps a relevant candidate
    target[torch.arange(40) % 5 == 3] = mark
    metric = tmx.NDCG(k=4)
    for args, kwargs in [((preds, target), {"indexes": indexes}), ((preds.view(5, 8), target.view(5, 8)), {})]:
        with pytest.raises(ValueError, match=rf"If {mark} marks padded or unlabelled candidates.*`mask=target >= 0`"):
            metric.update(*args, **kwargs)
    metric.update(preds, target, indexes=indexes, mask=target >= 0)
    reference = RetrievalNormalizedDCG(top_k=4, ignore_index=mark)(preds, target, indexes)
    assert metric.compute().item() == pytest.approx(reference.item(), abs=1e-6)
    kept = (target >= 0).numpy()
    assert metric.update_count == 1 and np.count_nonzero(kept) == 32
