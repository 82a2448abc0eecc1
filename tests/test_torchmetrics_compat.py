"""TorchMetrics' own features around the package's metrics: metric arithmetic with dict values."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import Metric

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import CategoricalCount, Distribution

# every metric of the package whose compute() returns a dict, and the entry the error names
DICT_VALUED: dict[str, tuple[Callable[[], Metric], str]] = {
    "ranking": (lambda: tmx.RankingMetrics(ks=(5,), metrics=("recall", "ndcg")), '"recall@5"'),
    "windowed": (lambda: tmx.Windowed(tmx.NormalizedEntropy(), window_size=10), '"window"'),
    "throughput": (lambda: tmx.Throughput(), '"lifetime_throughput"'),
    "reliability": (lambda: tmx.Reliability(), '"label_rate"'),
    "hindsight": (lambda: tmx.HindsightTargetPR(), '"threshold"'),
    "distribution": (lambda: Distribution(), '"mean"'),
    "categorical": (lambda: CategoricalCount(), "category"),
}

BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "-": operator.sub,
    "+": operator.add,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
    "<": operator.lt,
}
UNARY: dict[str, Callable[[Any], Any]] = {"abs()": abs, "unary -": operator.neg, "~": operator.invert}


@pytest.mark.parametrize("symbol", list(BINARY))
@pytest.mark.parametrize("name", list(DICT_VALUED))
def test_arithmetic_with_a_dict_valued_metric_is_refused_where_it_is_written(name, symbol):
    """``ranking * 100`` built a metric that failed only at ``compute()``, inside torch (``mul(): argument
    'input' (position 1) must be Tensor, not dict``), naming no metric; now the expression raises a
    ``TypeError`` naming the class and the entry to pick, with the dict-valued metric on either side."""
    factory, entry = DICT_VALUED[name]
    metric = factory()
    op = BINARY[symbol]
    match = rf"\(`{re.escape(symbol)}`\).*{type(metric).__name__}\.compute\(\) returns a dict.*`metric\[{entry}\]`"
    with pytest.raises(TypeError, match=match):
        op(metric, 100)
    with pytest.raises(TypeError, match=match.replace("<", ">")):  # 100 < m is m > 100
        op(100, metric)
    with pytest.raises(TypeError, match=match):  # a tensor-valued metric of the package on the left
        op(tmx.NormalizedEntropy(), metric)


@pytest.mark.parametrize("symbol", list(UNARY))
@pytest.mark.parametrize("name", list(DICT_VALUED))
def test_unary_arithmetic_of_a_dict_valued_metric_is_refused(name, symbol):
    factory, entry = DICT_VALUED[name]
    with pytest.raises(TypeError, match=rf"returns a dict.*`metric\[{entry}\]`"):
        UNARY[symbol](factory())


def test_an_entry_of_a_dict_valued_metric_takes_part_in_arithmetic():
    """The way out the error names: TorchMetrics' indexing gives a metric of one entry."""
    ranking = tmx.RankingMetrics(ks=(2,), metrics=("recall",))
    percent = ranking["recall@2"] * 100
    # query 0: relevant rows 1 and 2, top 2 = rows 0, 1 -> 1/2; query 1: relevant row 0 at rank 1 -> 1/1
    percent.update(torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.4]]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert percent.compute().item() == pytest.approx(float(Fraction(1, 2) * (Fraction(1, 2) + 1) * 100))

    preds = np.array([0.2, 0.7, 0.9, 0.4, 0.6])
    target = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    windowed, plain = tmx.Windowed(tmx.CTR(), window_size=2), tmx.CTR()
    gap = windowed["window"] - plain  # the window's CTR (last 2 rows) minus the lifetime CTR
    gap.update(torch.tensor(preds), torch.tensor(target))
    assert gap.compute().item() == pytest.approx(target[-2:].mean() - target.mean())


def test_tensor_valued_metrics_keep_their_arithmetic_and_equality():
    """Only dict values are refused: ``a - b`` of tensor-valued metrics, and ``==`` / ``in`` (which
    containers use), are TorchMetrics' as before."""
    preds, target = np.array([0.2, 0.7, 0.9, 0.4]), np.array([0.0, 1.0, 1.0, 0.0])
    diff = tmx.WeightedMSE() - tmx.WeightedMAE()
    diff.update(torch.tensor(preds), torch.tensor(target))
    expected = np.mean((preds - target) ** 2) - np.mean(np.abs(preds - target))
    assert diff.compute().item() == pytest.approx(expected)
    ranking, ne = tmx.RankingMetrics(), tmx.NormalizedEntropy()
    assert ranking in [ne, ranking]
    assert ranking["ndcg@5"] is not None
