"""TorchMetrics' own features around the package's metrics: metric arithmetic with dict values, wrappers."""

from __future__ import annotations

import itertools
import operator
import pickle
import re
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics import MeanSquaredError, Metric, MetricCollection, SumMetric
from torchmetrics.metric import CompositionalMetric
from torchmetrics.wrappers import ClasswiseWrapper, MetricTracker, MinMaxMetric, MultitaskWrapper

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import CategoricalCount, Distribution, Sum
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

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


@pytest.mark.parametrize("entry", ["window", "lifetime"])
def test_an_entry_that_is_itself_a_dict_is_refused_and_can_be_indexed_again(entry):
    """``Windowed(RankingMetrics(...))["window"] * 100`` built a metric that failed at ``compute()`` inside
    torch (the entry is a dict of ranking values); now the expression raises, naming the entry and the
    index to pick next, and ``windowed["window"]["ndcg@2"] * 100`` computes."""
    windowed = tmx.Windowed(tmx.RankingMetrics(ks=(2,), metrics=("recall", "ndcg")), window_size=3)
    match = rf'\(`\*`\).*Windowed\["{entry}"\]\.compute\(\) returns a dict.*`metric\["recall@2"\]`'
    with pytest.raises(TypeError, match=match):
        windowed[entry] * 100
    with pytest.raises(TypeError, match=match.replace("`\\*`", "`-`")):
        1 - windowed[entry]
    recall = windowed[entry]["recall@2"] * 100
    # query 0 (kept by the window of 3 rows): relevant rows 1 and 2, top 2 = rows 0, 1 -> 1/2
    recall.update(torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([[0, 1, 1]]))
    assert recall.compute().item() == pytest.approx(50.0)
    # a tensor-valued wrapped metric: its entries are tensors, TorchMetrics' indexing as before
    plain = tmx.Windowed(tmx.CTR(), window_size=3)[entry] * 100
    plain.update(torch.tensor([0.2, 0.7]), torch.tensor([0.0, 1.0]))
    assert plain.compute().item() == pytest.approx(50.0)


@pytest.mark.parametrize(
    "index", [np.array([0, 1]), torch.tensor([0, 1]), 0, slice(0, 1)], ids=["ndarray", "tensor", "int", "slice"]
)
def test_non_string_index_of_a_window_is_torchmetrics_indexing(index):
    """``windowed[idx]`` with an index that is not an entry name is TorchMetrics' metric of ``value[idx]`` as before
    (a NumPy array raised "The truth value of an array ... is ambiguous" while the entry was looked up)."""
    windowed = tmx.Windowed(tmx.RankingMetrics(ks=(2,)), window_size=3)
    entry = windowed[index]
    assert isinstance(entry, CompositionalMetric) and entry.metric_a is windowed


def test_per_task_entry_of_a_tensor_value_takes_part_in_arithmetic():
    """``CTR(num_tasks=3)[1] * 100``: TorchMetrics' indexing of a ``(T,)`` value, then arithmetic."""
    preds = np.array([[0.2, 0.7], [0.9, 0.4], [0.5, 0.5]])
    target = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    scaled = tmx.CTR(num_tasks=3)[1] * 100
    scaled.update(torch.tensor(preds), torch.tensor(target))
    assert scaled.compute().item() == pytest.approx(target[1].mean() * 100)


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


def _ndcg_minus_recall_at_2() -> float:
    """NDCG@2 - recall@2 (means over two queries) of the rows of ``_ONE_USE_CASES["ranking"]``, written out.

    Query 0: scores 0.9, 0.8, 0.1, labels 0, 1, 1: the top 2 hold one of its 2 relevant rows, at rank 2.
    Query 1: scores 0.7, 0.2, 0.4, labels 1, 0, 0: its relevant row at rank 1.
    """
    ndcg_0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    return float((ndcg_0 + 1.0) / 2 - (0.5 + 1.0) / 2)


_RANKING_ROWS = {
    "preds": torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2, 0.4]),
    "target": torch.tensor([0, 1, 1, 1, 0, 0]),
    "indexes": torch.tensor([0, 0, 0, 1, 1, 1]),
}
# an expression using one metric twice: its batches (as keyword dicts) and the expected value
_ONE_USE_CASES: dict[str, tuple[Callable[[], Metric], list[dict[str, Any]], float]] = {
    "ranking": (
        lambda: (lambda r: r["ndcg@2"] - r["recall@2"])(tmx.RankingMetrics(ks=(2,), metrics=("ndcg", "recall"))),
        [_RANKING_ROWS],
        _ndcg_minus_recall_at_2(),
    ),
    "windowed": (  # window of 4 rows: the last two updates (CTR 1/2); lifetime 3/6
        lambda: (lambda w: w["window"] - w["lifetime"])(tmx.Windowed(tmx.CTR(), window_size=4)),
        [{"preds": torch.full((2,), 0.5), "target": torch.tensor(t)} for t in ([1.0, 0.0], [1.0, 1.0], [0.0, 0.0])],
        0.5 - 0.5,
    ),
    "sum": (
        lambda: (lambda s: s * 1 + s)(Sum()),
        [{"value": torch.tensor([1.0, 2.0])}, {"value": torch.tensor([4.0])}],
        2 * 7.0,
    ),
    "throughput": (
        lambda: (lambda t: t["total_examples"] + t["total_examples"])(
            tmx.Throughput(warmup_steps=0, clock=itertools.count().__next__)  # a clock ticking 1 s per reading
        ),
        [{"batch": 5}, {"batch": 3}],
        2 * 8.0,
    ),
}


@pytest.mark.parametrize("path", ["update", "forward"])
@pytest.mark.parametrize("name", list(_ONE_USE_CASES))
def test_an_expression_gives_each_batch_to_each_of_its_metrics_once(name, path):
    """``ranking["ndcg@2"] - ranking["recall@2"]`` (the entries the arithmetic error points to) updated
    ``ranking`` once per operand, so every row came twice to its query (0.27 instead of 0.04 here); a
    window held each update twice, a ``Sum`` or a throughput counted twice. Now each metric of the
    expression takes each batch once, through ``update`` and ``forward`` alike."""
    factory, batches, expected = _ONE_USE_CASES[name]
    expression = factory()
    for batch in batches:
        if path == "update":
            expression.update(**batch)
        else:
            expression(**batch)
    assert expression.compute().item() == pytest.approx(expected)
    expression.reset()
    expression.update(**batches[-1])
    again = factory()
    again.update(**batches[-1])
    assert expression.compute().item() == pytest.approx(again.compute().item())


def test_the_forward_value_of_an_expression_is_the_batchs():
    """``forward`` returns the expression of each metric's value on the batch, each metric called once."""
    ranking = tmx.RankingMetrics(ks=(2,), metrics=("ndcg", "recall"))
    gap = ranking["ndcg@2"] - ranking["recall@2"]
    assert gap(**_RANKING_ROWS).item() == pytest.approx(_ndcg_minus_recall_at_2())
    assert ranking.update_count == 1


def test_an_entry_of_a_metric_pickles_and_prints():
    """``metric[1]`` held TorchMetrics' lambda, which ``pickle`` (``torch.save``, DDP spawn) refuses."""
    preds = torch.tensor([[0.2, 0.7], [0.9, 0.4]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    scaled = tmx.CTR(num_tasks=2)[1] * 100
    scaled.update(preds, target)
    copy = pickle.loads(pickle.dumps(scaled))
    assert copy.compute().item() == pytest.approx(100.0)
    assert "getitem" in repr(copy)


def test_set_dtype_of_an_expression_casts_each_of_its_metrics_once():
    """``(ctr * 100).set_dtype(torch.float16)`` (and a ``MetricCollection``'s ``set_dtype`` of such a member) cast
    nothing: TorchMetrics' ``CompositionalMetric`` only casts its own buffers, so the float64 sums of its metrics
    stayed as they were while every other metric of the collection was cast. Now each metric of the expression
    takes the ``set_dtype`` once (a rate metric's keeps its float64 counts, its own rule), and a dtype the states
    cannot sum in is refused before any metric changes."""
    ctr, other = tmx.CTR(), tmx.Calibration()
    collection = MetricCollection({"ctr": (ctr * 100 + ctr) / 101, "calibration": other})
    collection.set_dtype(torch.float16)
    assert set(_state_dtypes(ctr).values()) == set(_state_dtypes(other).values()) == {torch.float16}
    target = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    collection.update(torch.full((5,), 0.5), torch.tensor(target))
    assert collection.compute()["ctr"].item() == pytest.approx(target.mean(), rel=1e-3)
    kept = tmx.Throughput(warmup_steps=0)
    examples = kept["total_examples"] * 1
    examples.set_dtype(torch.float16)
    assert set(_state_dtypes(kept).values()) == {torch.float64}
    examples.update(torch.zeros(70_000))  # past float16's 65,504
    assert examples.compute().item() == 70_000
    sum_metric = SumMetric()
    mixed = ctr + sum_metric
    with pytest.raises(TypeError, match=r"Expected `dst_type` to be a floating dtype"):
        mixed.set_dtype(torch.int32)
    assert sum_metric.sum_value.dtype == torch.float32
    assert set(_state_dtypes(ctr).values()) == {torch.float16}
    assert mixed.set_dtype(torch.float64) is mixed
    assert sum_metric.sum_value.dtype == torch.float64
    assert set(_state_dtypes(ctr).values()) == {torch.float64}


def _auc(preds: np.ndarray, target: np.ndarray) -> float:
    return float(roc_auc_score(target, preds))


def _window_of_4_ctr_minus_auc(preds: np.ndarray, target: np.ndarray) -> float:
    """The window of 4 samples holds the newest whole updates that fit: the last batch, its 3 rows."""
    return float(target[-3:].mean() - roc_auc_score(target, preds))


def _two_task_ne_minus_auc(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.array([_normalized_entropy(p, t) - roc_auc_score(t, p) for p, t in zip(preds, target)])


# an expression one of whose later metrics refuses soft labels, its metrics (in update order) with each one's
# value written out, and the expression's value written out; labels are (N,) or (T, N)
_REFUSED_CASES: dict[str, tuple[Callable[[], tuple[Metric, list[Metric]]], list[Callable], Callable, bool]] = {
    "ctr - auc": (
        lambda: (lambda a, b: (a - b, [a, b]))(tmx.CTR(), tmx.AUC()),
        [lambda p, t: t.mean(), _auc],
        lambda p, t: t.mean() - roc_auc_score(t, p),
        False,
    ),
    "unvalidated auc + ctr + mse - auc": (  # list states, in-place sums, a TorchMetrics metric, then the refusal
        lambda: (lambda a, b, c, d: ((a + b + c) - d, [a, b, c, d]))(
            tmx.AUC(validate_args=False), tmx.CTR(validate_args=False), MeanSquaredError(), tmx.AUC()
        ),
        [
            _auc,
            lambda p, t: t.mean(),
            lambda p, t: np.mean((p - t) ** 2),
            _auc,
        ],
        lambda p, t: t.mean() + np.mean((p - t) ** 2),
        False,
    ),
    "binned auc - exact auc": (
        lambda: (lambda a, b: (a - b, [a, b]))(
            tmx.AUC(num_bins=4, bin_space="probability", validate_args=False), tmx.AUC()
        ),
        # predictions in the middle of the 4 bins of [0, 1] (0.125, 0.375, ...) rank the same binned and exact
        [_auc, _auc],
        lambda p, t: 0.0,
        False,
    ),
    "windowed ctr - auc": (
        lambda: (lambda w, b: (w["window"] - b, [w, b]))(tmx.Windowed(tmx.CTR(), window_size=4), tmx.AUC()),
        [lambda p, t: {"lifetime": t.mean(), "window": t[-3:].mean()}, _auc],
        _window_of_4_ctr_minus_auc,
        False,
    ),
    "two-task ne - auc": (
        lambda: (lambda a, b: (a - b, [a, b]))(tmx.NormalizedEntropy(num_tasks=2), tmx.AUC(num_tasks=2)),
        [
            lambda p, t: np.array([_normalized_entropy(pp, tt) for pp, tt in zip(p, t)]),
            lambda p, t: np.array([roc_auc_score(tt, pp) for pp, tt in zip(p, t)]),
        ],
        _two_task_ne_minus_auc,
        True,
    ),
}


def _refused_case_batches(two_tasks: bool) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple]:
    """Two accepted batches of 4 and 3 rows (binary labels, predictions on bin midpoints), and one of soft labels."""
    preds = np.array([0.125, 0.625, 0.375, 0.875, 0.375, 0.875, 0.125])
    target = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    if two_tasks:
        preds, target = np.stack([preds, preds[::-1]]), np.stack([target, 1 - target])
    p, t = torch.tensor(preds), torch.tensor(target)
    good = [(p[..., :4], t[..., :4]), (p[..., 4:], t[..., 4:])]
    return good, (p[..., :2], torch.full_like(t[..., :2], 0.3))


def _operand_values(metric: Metric) -> Any:
    value = metric.compute()
    return {k: v.numpy() for k, v in value.items()} if isinstance(value, dict) else value.numpy()


@pytest.mark.parametrize("path", ["update", "forward"])
@pytest.mark.parametrize("name", list(_REFUSED_CASES))
def test_a_batch_one_metric_refuses_changes_no_metric_of_the_expression(name, path):
    """``(ctr - auc).update(preds, soft_labels)``: CTR takes soft labels, AUC refuses them. CTR had taken the
    batch when AUC refused it, so CTR's value and the expression's were wrong for the rest of the run (DESIGN:
    a rejected batch is never half-applied). Now every metric of the expression is as before the batch, whatever
    holds it (list states, in-place sums, ``validate_args=False``, a window, a TorchMetrics metric), through
    ``update`` and ``forward``; each value is the numpy/sklearn one of the accepted batches alone."""
    factory, operand_refs, expression_ref, two_tasks = _REFUSED_CASES[name]
    expression, operands = factory()
    (first, second), bad = _refused_case_batches(two_tasks)
    step = expression.update if path == "update" else expression
    step(*first)
    counts = [operand.update_count for operand in operands] + [expression.update_count]
    with pytest.raises(ValueError, match="target"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # an unvalidated AUC's forward value of soft labels
        step(*bad)
    assert [operand.update_count for operand in operands] + [expression.update_count] == counts
    step(*second)
    preds, target = (torch.cat([a, b], dim=-1).numpy() for a, b in zip(first, second))
    for operand, reference in zip(operands, operand_refs):
        value, expected = _operand_values(operand), reference(preds, target)
        if isinstance(expected, dict):
            assert value.keys() == expected.keys()
            for key in expected:
                np.testing.assert_allclose(value[key], expected[key], rtol=1e-6)
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-6)  # float32 MSE
    np.testing.assert_allclose(expression.compute().numpy(), expression_ref(preds, target), rtol=1e-6, atol=1e-7)


# operator -> what it computes of the metrics' values, in numpy (`%` is TorchMetrics' torch.fmod)
_NUMPY_OPERATORS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "+": (operator.add, np.add),
    "-": (operator.sub, np.subtract),
    "*": (operator.mul, np.multiply),
    "/": (operator.truediv, np.divide),
    "//": (operator.floordiv, np.floor_divide),
    "%": (operator.mod, np.fmod),
    "**": (operator.pow, np.power),
    "<": (operator.lt, np.less),
    ">=": (operator.ge, np.greater_equal),
}


@pytest.mark.parametrize("other", ["number", "tensor", "metric"])
@pytest.mark.parametrize("reflected", [False, True], ids=["metric-first", "metric-second"])
@pytest.mark.parametrize("symbol", list(_NUMPY_OPERATORS))
def test_binary_arithmetic_is_the_operator_of_the_values(symbol, reflected, other):
    """Every operator with a number, a 0-dim tensor or another metric on either side, on a two-task CTR whose
    values are 0.75 and 0.25 (written out). ``2.0 % ctr`` failed in TorchMetrics' ``torch.fmod(2.0, value)``
    (no number first); it is now an expression like the others."""
    op, np_op = _NUMPY_OPERATORS[symbol]
    preds = np.array([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    target = np.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    operand: Any = {"number": 1.5, "tensor": torch.tensor(1.5), "metric": tmx.WeightedMSE(num_tasks=2)}[other]
    operand_value = np.mean((preds - target) ** 2, axis=1) if other == "metric" else 1.5  # MSE 0.25 and 0.75
    ctr, ctr_value = tmx.CTR(num_tasks=2), target.mean(1)
    expression = op(operand, ctr) if reflected else op(ctr, operand)
    expected = np_op(operand_value, ctr_value) if reflected else np_op(ctr_value, operand_value)
    expression.update(torch.tensor(preds), torch.tensor(target))
    np.testing.assert_allclose(expression.compute().numpy().astype(float), expected.astype(float), rtol=1e-12)


@pytest.mark.parametrize("symbol", ["unary -", "unary +", "abs()"])
def test_unary_arithmetic_is_the_operator_of_the_value(symbol):
    """``-(ctr - auc)`` was ``-|ctr - auc|`` and ``+(ctr - auc)`` ``|ctr - auc|`` (TorchMetrics' "absolute negative"
    operators); they are Python's minus and plus now, on a value of each sign (numpy/sklearn written out)."""
    op, np_op = {
        "unary -": (operator.neg, np.negative),
        "unary +": (operator.pos, np.positive),
        "abs()": (abs, np.abs),
    }[symbol]
    preds = np.array([[0.2, 0.7, 0.9, 0.4], [0.6, 0.3, 0.8, 0.1]])
    target = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    expression = op(tmx.CTR(num_tasks=2) - tmx.AUC(num_tasks=2))
    assert expression(torch.tensor(preds), torch.tensor(target)) is not None
    difference = target.mean(1) - np.array([roc_auc_score(t, p) for p, t in zip(preds, target)])  # -0.5 and 0.25
    np.testing.assert_allclose(expression.compute().numpy(), np_op(difference), rtol=1e-12)
    copy = pickle.loads(pickle.dumps(expression))
    np.testing.assert_allclose(copy.compute().numpy(), np_op(difference), rtol=1e-12)


# ----------------------------------------------------------------------------- wrappers


def _normalized_entropy(preds: np.ndarray, target: np.ndarray) -> float:
    """NE written out: mean log loss over the entropy of the label rate."""
    log_loss = -np.mean(target * np.log(preds) + (1 - target) * np.log(1 - preds))
    rate = target.mean()
    return float(log_loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def _epochs(seed: int = 0, num: int = 4, size: int = 300) -> list[tuple[np.ndarray, np.ndarray]]:
    """Epochs of (preds, labels) whose quality differs: a noisier model some epochs."""
    rng = np.random.default_rng(seed)
    epochs = []
    for noise in rng.permutation(np.linspace(0.2, 2.0, num)):
        target = (rng.random(size) < 0.3).astype(np.float64)
        logits = (2 * target - 1) + noise * rng.normal(size=size)
        epochs.append((1 / (1 + np.exp(-logits)), target))
    return epochs


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (tmx.NormalizedEntropy, False),
        (tmx.LogLoss, False),
        (tmx.WeightedMSE, False),
        (tmx.WeightedMAE, False),
        (tmx.WeightedRMSE, False),
        (tmx.AUC, True),
        (tmx.AUPRC, True),
        (tmx.GroupedAUC, True),
        (tmx.WeightedR2, True),
        (lambda: tmx.NDCG(k=5), True),
        (tmx.MRR, True),
        (tmx.Calibration, None),
        (tmx.CTR, None),
        (lambda: tmx.Segmented(tmx.NormalizedEntropy(), 2), False),
        (lambda: tmx.Windowed(tmx.AUC(), 10), True),
    ],
)
def test_higher_is_better_gives_the_direction_of_each_metric(factory, expected):
    """The direction ``MetricTracker`` and ``ModelCheckpoint`` read: a loss is lower-better, a ranking quality
    higher-better, a ratio to aim at 1 (calibration) or a rate (CTR) neither."""
    assert factory().higher_is_better is expected


def test_metric_tracker_picks_the_best_epoch_in_each_metrics_direction():
    """``MetricTracker`` over epochs: ``compute_all`` is each epoch's value (sklearn and numpy references) and
    ``best_metric`` the lowest NE and the highest AUC, with their epochs."""
    epochs = _epochs()
    ne, auc = MetricTracker(tmx.NormalizedEntropy()), MetricTracker(tmx.AUC())
    for preds, target in epochs:
        for tracker in (ne, auc):
            tracker.increment()
            half = len(preds) // 2  # two updates per epoch
            tracker.update(torch.tensor(preds[:half]), torch.tensor(target[:half]))
            tracker.update(torch.tensor(preds[half:]), torch.tensor(target[half:]))
    ne_values = np.array([_normalized_entropy(p, y) for p, y in epochs])
    auc_values = np.array([roc_auc_score(y, p) for p, y in epochs])
    np.testing.assert_allclose(ne.compute_all().numpy(), ne_values, rtol=1e-9)
    np.testing.assert_allclose(auc.compute_all().numpy(), auc_values, rtol=1e-9)
    best, step = ne.best_metric(return_step=True)
    assert (best, step) == (pytest.approx(ne_values.min(), rel=1e-9), int(ne_values.argmin()))
    best, step = auc.best_metric(return_step=True)
    assert (best, step) == (pytest.approx(auc_values.max(), rel=1e-9), int(auc_values.argmax()))


@pytest.mark.parametrize(
    ("factory", "expected", "bounds"),
    [
        (lambda: tmx.Windowed(tmx.NormalizedEntropy(), 100)["window"], False, (0.0, None)),
        (lambda: tmx.Windowed(tmx.AUC(), 100)["lifetime"], True, (0.0, 1.0)),
        (lambda: tmx.NormalizedEntropy(num_tasks=2)[1], False, (0.0, None)),
        (lambda: tmx.AUC(num_tasks=2)[0], True, (0.0, 1.0)),
        (lambda: tmx.RankingMetrics(ks=(2,), metrics=("ndcg",))["ndcg@2"], True, (0.0, 1.0)),
        (lambda: tmx.NDCG(k=2, report_as_loss=True)[...], False, (0.0, 1.0)),
        (lambda: tmx.Calibration(num_tasks=2)[0], None, (0.0, None)),
        (lambda: tmx.Windowed(tmx.AUC(), 100), True, (0.0, 1.0)),  # the wrappers take the metric's bounds too
        (lambda: tmx.Segmented(tmx.WeightedR2(), 3), True, (None, 1.0)),
        (lambda: tmx.AUC() * 100, None, (None, None)),  # an expression's direction is TorchMetrics' (none)
        (lambda: tmx.NormalizedEntropy() - tmx.LogLoss(), None, (None, None)),
    ],
    ids=[
        "window-ne",
        "lifetime-auc",
        "task-ne",
        "task-auc",
        "ranking-entry",
        "loss-entry",
        "task-cal",
        "windowed-auc",
        "segmented-r2",
        "auc*100",
        "ne-ll",
    ],
)
def test_an_entry_keeps_the_direction_and_plot_bounds_of_its_metric(factory, expected, bounds):
    """``metric[key]`` picks one number of the value, so it is better in the same direction (``MetricTracker``
    refused ``windowed["window"]``: "The metric '_Expression' does not have a 'higher_is_better' attribute")."""
    entry = factory()
    assert entry.higher_is_better is expected
    assert (entry.plot_lower_bound, entry.plot_upper_bound) == bounds


def test_metric_tracker_of_a_window_entry_picks_the_lowest_window_ne():
    epochs = _epochs(seed=2, num=3, size=200)
    tracker = MetricTracker(tmx.Windowed(tmx.NormalizedEntropy(), window_size=100)["window"])
    for preds, target in epochs:
        tracker.increment()
        tracker.update(torch.tensor(preds), torch.tensor(target))
    window_values = np.array([_normalized_entropy(p[-100:], y[-100:]) for p, y in epochs])
    np.testing.assert_allclose(tracker.compute_all().numpy(), window_values, rtol=1e-9)
    best, step = tracker.best_metric(return_step=True)
    assert tracker.maximize is False
    assert (best, step) == (pytest.approx(window_values.min(), rel=1e-9), int(window_values.argmin()))


def test_min_max_metric_keeps_the_extremes_of_the_lifetime_values():
    """``MinMaxMetric(AUC())``: ``raw`` is the AUC over every batch so far, ``min``/``max`` the extremes of the
    values computed after each batch (sklearn)."""
    epochs = _epochs(seed=1, num=3)
    metric = MinMaxMetric(tmx.AUC())
    seen_p, seen_y, values = np.zeros(0), np.zeros(0), []
    for preds, target in epochs:
        metric.update(torch.tensor(preds), torch.tensor(target))
        out = metric.compute()
        seen_p, seen_y = np.concatenate([seen_p, preds]), np.concatenate([seen_y, target])
        values.append(roc_auc_score(seen_y, seen_p))
        assert out["raw"].item() == pytest.approx(values[-1], rel=1e-9)
        assert out["min"].item() == pytest.approx(min(values), rel=1e-9)
        assert out["max"].item() == pytest.approx(max(values), rel=1e-9)


def test_classwise_and_multitask_wrappers_give_each_tasks_value():
    """``ClasswiseWrapper`` over ``AUC(num_tasks=2)`` names each task; ``MultitaskWrapper`` of one-task metrics
    takes each task's ``(N,)`` inputs: both equal sklearn and numpy per task, in ``forward`` and ``compute``."""
    (p0, y0), (p1, y1) = _epochs(seed=2, num=2)
    classwise = ClasswiseWrapper(tmx.AUC(num_tasks=2), labels=["click", "like"])
    out = classwise(torch.tensor(np.stack([p0, p1])), torch.tensor(np.stack([y0, y1])))
    assert out.keys() == {"auc_click", "auc_like"}
    assert out["auc_click"].item() == pytest.approx(roc_auc_score(y0, p0), rel=1e-9)
    assert out["auc_like"].item() == pytest.approx(roc_auc_score(y1, p1), rel=1e-9)

    multitask = MultitaskWrapper({"click": tmx.AUC(), "like": tmx.NormalizedEntropy()})
    half = len(p0) // 2
    batch = multitask(
        {"click": torch.tensor(p0[:half]), "like": torch.tensor(p1[:half])},
        {"click": torch.tensor(y0[:half]), "like": torch.tensor(y1[:half])},
    )
    assert batch["click"].item() == pytest.approx(roc_auc_score(y0[:half], p0[:half]), rel=1e-9)
    assert batch["like"].item() == pytest.approx(_normalized_entropy(p1[:half], y1[:half]), rel=1e-9)
    multitask.update(
        {"click": torch.tensor(p0[half:]), "like": torch.tensor(p1[half:])},
        {"click": torch.tensor(y0[half:]), "like": torch.tensor(y1[half:])},
    )
    total = multitask.compute()
    assert total["click"].item() == pytest.approx(roc_auc_score(y0, p0), rel=1e-9)
    assert total["like"].item() == pytest.approx(_normalized_entropy(p1, y1), rel=1e-9)


# ----------------------------------------------------------------------------- set_dtype

SET_DTYPE_METRICS: dict[str, Callable[[], Metric]] = {
    "ne": tmx.NormalizedEntropy,
    "auc": tmx.AUC,
    "auc-binned": lambda: tmx.AUC(num_bins=64),
    "windowed": lambda: tmx.Windowed(tmx.NormalizedEntropy(), window_size=1000),
    "segmented": lambda: tmx.Segmented(tmx.NormalizedEntropy(), 1),
}


def _state_dtypes(metric: Metric) -> dict[str, Any]:
    return {
        f"{prefix}.{name}": [c.dtype for c in value] if isinstance(value, list) else value.dtype
        for prefix, module in metric.named_modules()
        if isinstance(module, Metric)
        for name in module._defaults
        for value in [getattr(module, name)]
    }


def _binary_batch(seed: int, size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    preds = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size)  # far apart: in distinct bins of a binned AUC
    return preds, (rng.random(size) < preds).astype(np.float64)


def _value(metric: Metric) -> float:
    value = metric.compute()
    value = value["lifetime"] if isinstance(value, dict) else value
    return float(value.reshape(-1)[0])


@pytest.mark.parametrize(
    "dst_type", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.float8_e4m3fn, "torch.IntTensor", "f64"]
)
@pytest.mark.parametrize("name", list(SET_DTYPE_METRICS))
def test_set_dtype_refuses_a_dtype_the_states_cannot_sum_in_and_changes_nothing(name, dst_type):
    """``set_dtype(torch.int32)`` cast the float64 sums to int32 (a log loss sum of 140.2 became 140, a
    probability 0) and the next update failed inside torch ("result type Double can't be cast to the desired
    output type Int"); bool, complex and float8 states no update could add into. Now a ``TypeError`` names
    ``dst_type`` and the metric goes on as if it had not been called (numpy and sklearn references)."""
    (p0, y0), (p1, y1) = _binary_batch(0), _binary_batch(1)
    metric = SET_DTYPE_METRICS[name]()
    segments = {"segments": torch.zeros(len(p0), dtype=torch.long)} if name == "segmented" else {}
    metric.update(torch.tensor(p0), torch.tensor(y0), **segments)
    before = _state_dtypes(metric)
    with pytest.raises(TypeError, match=r"Expected `dst_type` to be a floating dtype"):
        metric.set_dtype(dst_type)
    assert _state_dtypes(metric) == before
    metric.update(torch.tensor(p1), torch.tensor(y1), **segments)
    preds, target = np.concatenate([p0, p1]), np.concatenate([y0, y1])
    expected = roc_auc_score(target, preds) if name.startswith("auc") else _normalized_entropy(preds, target)
    assert _value(metric) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("dst_type", "dtype"), [("torch.DoubleTensor", torch.float64), ("torch.FloatTensor", torch.float32)]
)
def test_windowed_set_dtype_takes_a_tensor_type_name(dst_type, dtype):
    """TorchMetrics' ``set_dtype`` takes a tensor type name as well as a dtype. ``Windowed`` cast its lifetime
    and window with it, then passed it to ``Tensor.to`` for the ring, which read it as a device ("Invalid
    device string: 'torch.DoubleTensor'"): a half-cast metric. Now every state and the ring are cast, and
    the lifetime and window values are numpy's."""
    preds = np.array([0.5, 0.25, 0.75, 0.5, 0.125, 0.625])
    target = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    metric = tmx.Windowed(tmx.CTR(), window_size=4)
    metric.update(torch.tensor(preds[:3]), torch.tensor(target[:3]))
    metric.set_dtype(dst_type)
    assert {d for dtypes in _state_dtypes(metric).values() for d in np.atleast_1d(dtypes)} == {dtype}
    metric.update(torch.tensor(preds[3:]), torch.tensor(target[3:]))
    out = metric.compute()
    assert out["lifetime"].item() == pytest.approx(target.mean(), rel=1e-6)
    assert out["window"].item() == pytest.approx(target[3:].mean(), rel=1e-6)  # the second update: 3 rows


# a metric per kind of state: float64 sums, exact list states (scores and ids), an aggregation
_SYNCED_BY_HAND: dict[str, Callable[[], Metric]] = {
    "ne": lambda: tmx.NormalizedEntropy(),
    "auc": lambda: tmx.AUC(),
    "ndcg": lambda: tmx.NDCG(k=2),
    "sum": lambda: Sum(),
}


def _synced_by_hand_batch(name: str, rank: int, part: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(10 * rank + part)
    preds = torch.tensor(rng.random(6))
    if name == "sum":
        return {"value": preds}
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    queries = {"indexes": torch.tensor([0, 0, 0, 1, 1, 1]) + 2 * (2 * rank + part)} if name == "ndcg" else {}
    return {"preds": preds, "target": target, **queries}


def _update_while_synced_by_hand(rank: int, world_size: int, name: str) -> dict[str, Any]:
    """Update, ``sync()`` by hand, try to update / merge / fold, ``unsync()``, update again, compute."""
    metric = _SYNCED_BY_HAND[name]()
    metric.update(**_synced_by_hand_batch(name, rank, 0))
    metric.sync()
    refused = []
    attempts: list[Callable[[], Any]] = [
        lambda: metric.update(**_synced_by_hand_batch(name, rank, 1)),
        lambda: metric.merge_state(_SYNCED_BY_HAND[name]()),
    ]
    if name == "sum":
        attempts.append(lambda: metric.fold(metric.summarize([1.0, 2.0])))
    for attempt in attempts:
        try:
            attempt()
            refused.append("accepted")
        except Exception as error:  # the error is the result
            refused.append(f"{type(error).__name__}: {error}")
    metric.unsync()
    metric.update(**_synced_by_hand_batch(name, rank, 1))
    return {"refused": refused, "value": metric.compute(), "update_count": metric.update_count}


@pytest.mark.ddp
@pytest.mark.parametrize("name", sorted(_SYNCED_BY_HAND))
def test_an_update_between_a_manual_sync_and_unsync_is_refused_and_changes_nothing(ddp_pool, name):
    """Real gloo, 2 ranks. Between ``sync()`` and ``unsync()`` (``sync_on_compute=False``'s manual pattern)
    the states are every rank's; ``unsync`` puts the local ones back. An ``update`` then was kept in the
    gathered sums and dropped by ``unsync`` without a word (NE, Sum), or failed inside TorchMetrics with
    ``AttributeError: 'Tensor' object has no attribute 'append'`` (AUC, NDCG: a gathered list state is one
    tensor). ``update``, ``merge_state`` and ``fold`` are now refused as TorchMetrics refuses ``forward``
    (and ``Windowed`` its ``update``), and the value is the numpy/sklearn one over both ranks' batches."""
    results = ddp_pool.run(_update_while_synced_by_hand, name)
    batches = [_synced_by_hand_batch(name, rank, part) for rank in (0, 1) for part in (0, 1)]
    if name == "sum":
        expected = float(sum(b["value"].sum().item() for b in batches))
    else:
        preds = np.concatenate([b["preds"].numpy() for b in batches])
        target = np.concatenate([b["target"].numpy() for b in batches])
        if name == "ne":
            expected = _normalized_entropy(preds, target)
        elif name == "auc":
            expected = roc_auc_score(target, preds)
        else:  # NDCG@2 of the 8 queries (each batch's two queries of 3), binary gains, no ties
            values = []
            for query in range(len(preds) // 3):
                p, y = preds[3 * query : 3 * query + 3], target[3 * query : 3 * query + 3]
                gains = y[np.argsort(-p, kind="stable")][:2]
                ideal = np.sort(y)[::-1][:2]
                discounts = 1 / np.log2(np.arange(2, 4))
                values.append((gains * discounts).sum() / (ideal * discounts).sum())
            expected = float(np.mean(values))
    for rank, result in enumerate(results):
        assert all("shouldn't be synced" in text and "unsync" in text for text in result["refused"]), (
            rank,
            result["refused"],
        )
        assert result["update_count"] == 2, rank
        assert result["value"].item() == pytest.approx(expected, rel=1e-6), rank


def _expression_batches(rank: int) -> list[dict[str, torch.Tensor]]:
    """Rank 0: two batches of 4 rows; rank 1: one batch of 3 (uneven shards)."""
    preds = torch.tensor([0.1, 0.8, 0.35, 0.6, 0.9, 0.2, 0.45, 0.7, 0.3, 0.55, 0.05])
    target = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    cuts = [(0, 4), (4, 8)] if rank == 0 else [(8, 11)]
    return [{"preds": preds[a:b], "target": target[a:b]} for a, b in cuts]


def _expressions_on_rank(rank: int, world_size: int) -> dict[str, Any]:
    """``ctr - auc`` fed by update and by forward, a batch of soft labels refused on rank 1 between its batches;
    ``ndcg - recall`` of flat rows on rank 0 only (rank 1 has no batch)."""
    by_update, by_forward = tmx.CTR() - tmx.AUC(), tmx.CTR() - tmx.AUC()
    refused = []
    for i, batch in enumerate(_expression_batches(rank)):
        if rank == 1 and i == 0:
            soft = {"preds": batch["preds"], "target": torch.full_like(batch["target"], 0.3)}
            for step in (by_update.update, by_forward):
                try:
                    step(**soft)
                    refused.append(False)
                except ValueError:
                    refused.append(True)
        by_update.update(**batch)
        by_forward(**batch)
    ranking = tmx.NDCG(k=2) - tmx.RecallAtK(k=2)
    if rank == 0:
        ranking.update(
            torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2, 0.4]),
            torch.tensor([0, 1, 1, 1, 0, 0]),
            indexes=torch.tensor([0, 0, 0, 1, 1, 1]),
        )
    return {
        "refused": refused,
        "update": by_update.compute().item(),
        "forward": by_forward.compute().item(),
        "ranking": ranking.compute().item(),
    }


@pytest.mark.ddp
def test_an_expression_over_two_ranks_is_the_formula_of_all_their_rows(ddp_pool):
    """Real gloo, 2 ranks with uneven shards: each metric of ``ctr - auc`` syncs in its own ``compute``, and a
    batch refused on one rank leaves nothing behind there (CTR had kept it); ``ndcg - recall`` with no batch on
    one rank. Values are numpy/sklearn of both ranks' accepted rows."""
    results = ddp_pool.run(_expressions_on_rank)
    rows = [batch for rank in (0, 1) for batch in _expression_batches(rank)]
    preds = torch.cat([b["preds"] for b in rows]).numpy()
    target = torch.cat([b["target"] for b in rows]).numpy()
    expected = target.mean() - roc_auc_score(target, preds)
    for rank, result in enumerate(results):
        assert result["refused"] == ([True, True] if rank == 1 else []), rank
        assert result["update"] == pytest.approx(expected, rel=1e-6), rank
        assert result["forward"] == pytest.approx(expected, rel=1e-6), rank
        assert result["ranking"] == pytest.approx(_ndcg_minus_recall_at_2(), rel=1e-6), rank


@pytest.mark.parametrize("path", ["update", "forward"])
@pytest.mark.parametrize("num_bins", [None, 4], ids=["exact", "binned"])
def test_a_refused_batch_leaves_a_compute_group_shared_by_two_operands_as_it_was(num_bins, path):
    """``auc - auprc + ndcg`` where AUC and AUPRC are one compute group of a ``MetricCollection`` (one histogram, or
    one pair of lists, for both) and NDCG refuses the batch: each operand was held before its update, AUPRC's hold
    after AUC had added the batch to their shared state. Putting the holds back first to last left AUPRC's copy, so
    the shared state kept the batch once (the histogram's counts, the lists' rows grew). Now the counts and rows are
    those of the accepted rows alone, counted by numpy."""
    preds = np.array([0.125, 0.625, 0.375, 0.875, 0.375, 0.875])
    target = np.array([0, 1, 0, 1, 1, 0])
    collection = MetricCollection(
        {"auc": tmx.AUC(num_bins=num_bins), "auprc": tmx.AUPRC(num_bins=num_bins)}, compute_groups=True
    )
    collection.update(torch.tensor(preds), torch.tensor(target))
    collection.compute()  # the group's states are now shared by its two metrics
    auc, auprc = collection._modules["auc"], collection._modules["auprc"]
    assert all(getattr(auc, name) is getattr(auprc, name) for name in auc._defaults)
    expression = auc - auprc + tmx.NDCG()
    step = expression.update if path == "update" else expression
    bad_indexes = torch.tensor([0, 0, 1])  # not the shape of preds: NDCG refuses, after AUC and AUPRC took the batch
    with pytest.raises(ValueError, match="indexes"):
        step(torch.tensor(preds[:4]), torch.tensor(target[:4]), indexes=bad_indexes)
    for metric in (auc, auprc):
        if num_bins is None:
            kept = torch.cat(metric.signed_weights).numpy()
            assert (kept.size, (kept > 0).sum()) == (target.size, target.sum())
        else:  # (class, task, bin) counts: negatives, then positives
            counts = metric.hist.sum(dim=(1, 2)).numpy()
            np.testing.assert_array_equal(counts, [(target == 0).sum(), (target == 1).sum()])
        np.testing.assert_allclose(auc.compute().item(), roc_auc_score(target, preds))


@pytest.mark.parametrize("path", ["update", "forward"])
def test_the_operand_with_the_largest_state_is_not_copied_and_a_refused_batch_still_changes_nothing(path, monkeypatch):
    """``auc_binned - ndcg``: each operand but the last was held (its tensor states copied) before its step, so a
    histogram of many bins written first was copied at every batch, as long as the update itself. Now the operand
    with the most tensor state goes last and is never copied; a batch NDCG refuses still changes neither, and the
    values are sklearn's and numpy's of the accepted batches."""
    from torchmetrics_ext.metrics import _arithmetic

    copied: list[int] = []
    held = _arithmetic._Held.__init__

    def recording(self: Any, metric: Metric) -> None:
        copied.append(sum(v.numel() for n, v in vars(metric).items() if n in metric._defaults and torch.is_tensor(v)))
        held(self, metric)

    monkeypatch.setattr(_arithmetic._Held, "__init__", recording)
    auc, ndcg = tmx.AUC(num_bins=2**16), tmx.NDCG()
    expression = auc - ndcg
    step = expression.update if path == "update" else expression
    preds = np.array([0.9, 0.2, 0.6, 0.4, 0.8, 0.3])
    target = np.array([1, 0, 1, 1, 0, 0])
    indexes = np.array([0, 0, 0, 1, 1, 1])
    step(torch.tensor(preds[:3]), torch.tensor(target[:3]), indexes=torch.tensor(indexes[:3]))
    with pytest.raises(ValueError, match="indexes"):
        step(torch.tensor(preds), torch.tensor(target), indexes=torch.tensor([0, 1]))
    step(torch.tensor(preds[3:]), torch.tensor(target[3:]), indexes=torch.tensor(indexes[3:]))
    assert copied and max(copied) < 2**16  # NDCG's few sums held, never AUC's histogram
    gains = [target[indexes == q][np.argsort(-preds[indexes == q])] for q in (0, 1)]
    discounts = 1 / np.log2(np.arange(2, 5))
    ndcgs = [(g * discounts).sum() / (np.sort(g)[::-1] * discounts).sum() for g in gains]
    np.testing.assert_allclose(auc.compute().item(), roc_auc_score(target, preds))
    np.testing.assert_allclose(ndcg.compute().item(), np.mean(ndcgs))
    np.testing.assert_allclose(expression.compute().item(), roc_auc_score(target, preds) - np.mean(ndcgs))


def test_an_update_interrupted_by_keyboard_interrupt_leaves_the_expression_and_its_metrics_as_they_were(monkeypatch):
    """A ``KeyboardInterrupt`` inside the last metric's update: every metric was put back (``_each_once`` catches
    any exception) but the expression's own update counter kept the call, so it said one more update than its
    metrics. Now both are as before, and the values are the numpy/sklearn ones of the accepted batch."""
    ctr, auc = tmx.CTR(), tmx.AUC(num_bins=4)
    expression = ctr - auc
    preds, target = np.array([0.125, 0.625, 0.375, 0.875]), np.array([0, 1, 0, 1])
    expression.update(torch.tensor(preds), torch.tensor(target))

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(auc, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        expression.update(torch.tensor(preds), torch.tensor(1 - target))
    monkeypatch.undo()
    assert (expression.update_count, ctr.update_count, auc.update_count) == (1, 1, 1)
    np.testing.assert_allclose(expression.compute().item(), target.mean() - roc_auc_score(target, preds))
