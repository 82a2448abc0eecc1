"""``article(name)``: the indefinite article of the package's messages ("Cannot merge an AUC", "got an ndarray").

The reference is the English reading of each name, written out by hand: an acronym letter by letter ("an
MRR" is "an em-ar-ar"), a word by its first sound ("a Unit", "an Update"), a number as said ("an 8", "an 11").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
from torchmetrics_ext.utilities.formatting import article

READINGS = {
    # acronyms, read letter by letter
    "AUC": "an",
    "AUPRC": "an",
    "NDCG": "an",
    "MRR": "an",
    "NEPositive": "an",
    "RPrecision": "an",
    "XAUC": "an",
    "CTR": "a",
    "GAUC": "a",
    "QPS": "a",
    # capitals read as words (the aggregation types)
    "SUM": "a",
    "MEAN": "a",
    "MAX": "a",
    "MIN": "a",
    "DISTRIBUTION": "a",
    "CATEGORICAL_COUNT": "a",
    # words
    "NormalizedEntropy": "a",
    "Windowed": "a",
    "HitRate": "a",
    "int": "an",
    "object": "an",
    "ndarray": "an",
    "Tensor": "a",
    "list": "a",
    "Update": "an",
    "Unit": "a",
    "one": "a",
    "'sum'": "a",
    # numbers
    "1-D": "a",
    "2-D": "a",
    "8-D": "an",
    "11": "an",
    "18": "an",
    "80": "an",
    "110": "a",
}


@pytest.mark.parametrize("name", list(READINGS))
def test_article_reads_the_name_as_said(name: str) -> None:
    assert article(name) == f"{READINGS[name]} {name}"


def test_the_merge_refusal_reads_an_auprc_into_an_auc() -> None:
    with pytest.raises(ValueError, match=r"^Cannot merge an AUPRC into an AUC: merge_state takes an AUC \("):
        tmx.AUC().merge_state(tmx.AUPRC())


def test_the_aggregator_names_an_ndarray() -> None:
    with pytest.raises(TypeError, match=r"got an ndarray of shape \(2,\)"):
        MetricsAggregator().update([Metric("alpaca", "x", np.array([1.0, 2.0]), AggregationType.SUM)])
    with pytest.raises(TypeError, match=r"got a Tensor of shape \(2,\)"):
        MetricsAggregator().update([Metric("alpaca", "x", torch.tensor([1.0, 2.0]), AggregationType.SUM)])
