"""NaN records and a handler's ``nan_strategy``: the aggregator leaves NaN to a handler that takes it.

References are plain Python (``math.fsum``, ``statistics.fmean``, ``max``/``min`` of the values that
are not NaN, or of the values with NaN replaced by the fill) and torchtune-style logging dicts.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric, SumMetric

from torchmetrics_ext.aggregation import AggregationType, Max, Mean, Metric, MetricsAggregator, Min, Sum

A = AggregationType
NAN = float("nan")
OURS: dict[AggregationType, Callable[..., Any]] = {A.SUM: Sum, A.MEAN: Mean, A.MAX: Max, A.MIN: Min}
THEIRS: dict[AggregationType, Callable[..., Any]] = {
    A.SUM: SumMetric,
    A.MEAN: MeanMetric,
    A.MAX: MaxMetric,
    A.MIN: MinMetric,
}
REDUCE: dict[AggregationType, Callable[[list[float]], float]] = {
    A.SUM: math.fsum,
    A.MEAN: statistics.fmean,
    A.MAX: max,
    A.MIN: min,
}
VALUES = [1.5, NAN, -2.0, 4.25, NAN, 0.5]


def _aggregator(classes: dict[AggregationType, Callable[..., Any]], strategy: Any) -> MetricsAggregator:
    aggregator = MetricsAggregator()
    for agg_type, cls in classes.items():
        aggregator.register_handler(agg_type, lambda cls=cls: cls(nan_strategy=strategy))
    return aggregator


def _records(values: list[float], dataset: str = "alpaca") -> list[Metric]:
    return [Metric(dataset, t.name.lower(), v, t) for t in REDUCE for v in values]


def _expected(values: list[float], dataset: str = "alpaca") -> dict[str, float]:
    return {f"train_{dataset}/{t.name.lower()}": REDUCE[t](values) for t in REDUCE}


def _close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():  # TorchMetrics' own classes keep float32 states
        assert math.isclose(got[key], value, rel_tol=1e-6), (key, got[key], value)


@pytest.mark.parametrize("classes", [OURS, THEIRS], ids=["ours", "torchmetrics"])
def test_ignore_skips_nan_records(classes):
    aggregator = _aggregator(classes, "ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "ignore" says nothing
        # about NaN: TorchMetrics' float32 SumMetric is told apart, once (tests/test_aggregation_aggregator.py)
        warnings.filterwarnings("ignore", message=".*SUM handler's SumMetric keeps float32")
        aggregator.update(_records(VALUES))
        aggregator.update(_records([NAN]))  # a batch of NaN alone changes nothing
    _close(aggregator.get_metrics_for_logging(), _expected([v for v in VALUES if not math.isnan(v)]))


@pytest.mark.parametrize("classes", [OURS, THEIRS], ids=["ours", "torchmetrics"])
def test_warn_warns_once_per_update_of_a_key_and_skips(classes):
    aggregator = _aggregator({A.MEAN: classes[A.MEAN]}, "warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aggregator.update([Metric("alpaca", "loss", v, A.MEAN) for v in VALUES])  # two NaN records
    nan_warnings = [w for w in caught if "nan" in str(w.message).lower()]
    assert len(nan_warnings) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aggregator.update([Metric("alpaca", "loss", 3.0, A.MEAN)])  # no NaN: no warning
    assert not caught
    want = statistics.fmean([v for v in VALUES if not math.isnan(v)] + [3.0])
    assert math.isclose(aggregator.get_metrics_for_logging()["train_alpaca/loss"], want, rel_tol=1e-6)


@pytest.mark.parametrize("classes", [OURS, THEIRS], ids=["ours", "torchmetrics"])
def test_a_float_strategy_replaces_nan(classes):
    aggregator = _aggregator(classes, 7.0)
    aggregator.update(_records(VALUES))
    _close(aggregator.get_metrics_for_logging(), _expected([7.0 if math.isnan(v) else v for v in VALUES]))


@pytest.mark.parametrize("classes", [OURS, THEIRS], ids=["ours", "torchmetrics"])
def test_disable_keeps_nan_and_logs_it(classes):
    aggregator = _aggregator(classes, "disable")
    aggregator.update([*_records([1.0, 2.0]), Metric("other", "clean", 2.0, A.SUM)])
    aggregator.update(_records([NAN, 3.0]))
    logged = aggregator.get_metrics_for_logging()
    assert logged.keys() == _expected([0.0]).keys() | {"train_other/clean"}
    assert logged["train_other/clean"] == 2.0
    assert all(math.isnan(logged[key]) for key in _expected([0.0]))


def test_torchmetrics_classes_registered_without_arguments_take_nan_as_their_default_warn():
    """TorchMetrics' aggregation classes default to ``nan_strategy="warn"``: registered bare, they warn and drop NaN
    (as they do outside the aggregator); ``nan_strategy="error"`` keeps NaN refused."""
    taking = MetricsAggregator()
    taking.register_handler(A.MEAN, MeanMetric)
    with pytest.warns(UserWarning, match="nan"):
        taking.update([Metric("alpaca", "loss", v, A.MEAN) for v in (1.0, NAN, 2.0)])
    assert taking.get_metrics_for_logging() == {"train_alpaca/loss": 1.5}
    refusing = MetricsAggregator()
    refusing.register_handler(A.MEAN, lambda: MeanMetric(nan_strategy="error"))
    refusing.update([Metric("alpaca", "loss", 1.0, A.MEAN)])
    with pytest.raises(ValueError, match="is a MEAN: expected a finite number, got nan"):
        refusing.update([Metric("alpaca", "loss", v, A.MEAN) for v in (3.0, NAN)])
    assert refusing.get_metrics_for_logging() == {"train_alpaca/loss": 1.0}


@pytest.mark.parametrize("strategy", ["error", None])
def test_default_and_error_handlers_still_refuse_nan_with_state_untouched(strategy):
    aggregator = MetricsAggregator() if strategy is None else _aggregator(OURS, strategy)
    aggregator.update(_records([1.0, 2.0]))
    before = aggregator.state_dict()
    for agg_type in REDUCE:
        with pytest.raises(ValueError, match=rf"is a {agg_type.name}: expected a finite number, got nan"):
            aggregator.update([Metric("alpaca", agg_type.name.lower(), v, agg_type) for v in (5.0, NAN)])
    after = aggregator.state_dict()
    assert after["metadata"] == before["metadata"]
    assert all(torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items())
    _close(aggregator.get_metrics_for_logging(), _expected([1.0, 2.0]))


def test_distribution_and_categorical_count_refuse_nan_whatever_the_other_handlers():
    aggregator = _aggregator(OURS, "ignore")
    with pytest.raises(ValueError, match="is a DISTRIBUTION: expected a finite number, got nan"):
        aggregator.update([Metric("alpaca", "len", NAN, A.DISTRIBUTION)])
    with pytest.raises(TypeError, match="is a CATEGORICAL_COUNT"):
        aggregator.update([Metric("alpaca", "src", NAN, A.CATEGORICAL_COUNT)])
    assert aggregator.get_metrics_for_logging() == {}


def test_a_mixed_batch_refused_for_one_key_changes_nothing():
    aggregator = _aggregator({A.MEAN: Mean}, "ignore")  # MEAN takes NaN, SUM (default) refuses it
    aggregator.update([Metric("alpaca", "loss", 2.0, A.MEAN), Metric("alpaca", "tokens", 10, A.SUM)])
    before = aggregator.state_dict()
    batch = [
        Metric("alpaca", "loss", NAN, A.MEAN),  # taken by its handler, planned first
        Metric("alpaca", "loss", 4.0, A.MEAN),
        Metric("dolly", "new", 1.0, A.MAX),  # a new key
        Metric("alpaca", "tokens", NAN, A.SUM),  # refused
    ]
    with pytest.raises(ValueError, match="'tokens' of dataset 'alpaca' is a SUM: expected a finite number, got nan"):
        aggregator.update(batch)
    after = aggregator.state_dict()
    assert after["metadata"] == before["metadata"]
    assert all(torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items())
    assert aggregator.get_metrics_for_logging() == {"train_alpaca/loss": 2.0, "train_alpaca/tokens": 10.0}


_REFUSED = [
    (math.inf, ValueError, "expected a finite number, got inf"),
    ("x", TypeError, "expected a number, got 'x'"),
]


@pytest.mark.parametrize(
    ("classes", "bad", "error", "match"),
    [pytest.param(OURS, *case, id=f"ours-{case[0]}") for case in _REFUSED]
    + [pytest.param(THEIRS, *case, id=f"torchmetrics-{case[0]}") for case in _REFUSED]
    # the package's SUM refuses an overflowing batch, as without NaN (TorchMetrics' SumMetric takes it, NaN or not)
    + [pytest.param(OURS, 1e308, ValueError, "sum overflows float64", id="ours-overflow")],
)
def test_inf_and_non_numbers_next_to_nan_are_still_refused(classes, bad, error, match):
    aggregator = _aggregator(classes, "ignore")
    aggregator.update([Metric("alpaca", "loss", 1.0, A.SUM)])
    with pytest.raises(error, match=match):
        aggregator.update([Metric("alpaca", "loss", v, A.SUM) for v in (NAN, 1e308, bad)])
    assert aggregator.get_metrics_for_logging() == {"train_alpaca/loss": 1.0}


def test_nan_records_of_a_taking_handler_checkpoint_and_resume():
    aggregator = _aggregator(OURS, "ignore")
    aggregator.update(_records([1.0, NAN]))
    resumed = _aggregator(OURS, "ignore")
    resumed.load_state_dict(aggregator.state_dict())
    resumed.update(_records([NAN, 5.0]))
    _close(resumed.get_metrics_for_logging(), _expected([1.0, 5.0]))


def _rank_values(rank: int) -> list[float]:
    return [1.0, NAN, 2.5] if rank == 0 else [4.0, -1.0]


def _nan_on_one_rank(rank: int, world: int) -> dict[str, float]:
    aggregator = _aggregator(OURS, "ignore")
    aggregator.update(_records(_rank_values(rank)))
    if rank == 1:
        aggregator.update([Metric("rank1", "only", NAN, A.MEAN), Metric("rank1", "only", 3.0, A.MEAN)])
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
def test_ddp_nan_on_one_rank_equals_one_process_over_all_records(ddp_pool):
    logged0, logged1 = ddp_pool.run(_nan_on_one_rank)
    single = _aggregator(OURS, "ignore")
    single.update(_records(_rank_values(0) + _rank_values(1)))
    single.update([Metric("rank1", "only", NAN, A.MEAN), Metric("rank1", "only", 3.0, A.MEAN)])
    want = _expected([1.0, 2.5, 4.0, -1.0]) | {"train_rank1/only": 3.0}
    assert logged0 == logged1 == single.get_metrics_for_logging()
    _close(logged0, want)


def _window_over_kept(updates: list[list[float]], window_size: int) -> list[float]:
    """docs/windows.md's rule over the records that are not NaN: the newest whole updates of at most
    ``window_size`` values (an update without any takes no room)."""
    kept: list[list[float]] = []
    for update in (u for u in ([v for v in vs if not math.isnan(v)] for vs in updates) if u):
        kept.append(update)
        while sum(map(len, kept)) > window_size and len(kept) > 1:
            kept.pop(0)
    return [v for update in kept for v in update][-window_size:]


@pytest.mark.parametrize("agg_type", list(REDUCE))
def test_a_windowed_handler_refuses_nan_naming_why_and_changes_nothing(agg_type):
    """`Windowed(Mean(nan_strategy="ignore"))` drops NaN in its lifetime and window, but its window counts
    each dropped record as a sample: the window would not be the one over the records kept (TorchMetrics'
    "ignore": a dropped sample does not count). So the aggregator keeps refusing NaN for a Windowed handler,
    and now says why (it said only "expected a finite number, got nan", as if the metric's strategy were "error")."""
    from torchmetrics_ext import Windowed

    cls = OURS[agg_type]
    aggregator = MetricsAggregator()
    aggregator.register_handler(agg_type, lambda: Windowed(cls(nan_strategy="ignore"), window_size=3))
    name = agg_type.name.lower()
    updates = [[1.0, 2.0], [4.0]]
    for values in updates:
        aggregator.update([Metric("alpaca", name, v, agg_type) for v in values])
    before = aggregator.state_dict()
    with pytest.raises(ValueError, match=r"expected a finite number, got nan") as caught:
        aggregator.update([Metric("alpaca", name, v, agg_type) for v in (5.0, NAN)])
    assert "Windowed handler refuses NaN whatever its metric's nan_strategy ('ignore')" in str(caught.value)
    after = aggregator.state_dict()
    assert after["metadata"] == before["metadata"]
    assert all(torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items())
    got = aggregator.get_metrics_for_logging()
    lifetime = [v for values in updates for v in values]
    assert math.isclose(got[f"train_alpaca/{name}_lifetime"], REDUCE[agg_type](lifetime))
    assert math.isclose(got[f"train_alpaca/{name}_window"], REDUCE[agg_type](_window_over_kept(updates, 3)))
