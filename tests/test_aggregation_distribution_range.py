"""``Distribution``'s percentiles at the edges of its sketch, against ``np.percentile`` and the documented bound.

docs/aggregation.md: each percentile follows ``np.percentile``'s linear rule, the two neighbouring
order statistics estimated within ``relative_accuracy`` where they lie in ``[min_value, max_value]``
(``[1e-9, 1e12]`` by default), so the estimate is within
``alpha * ((1 - f) |x_(k)| + f |x_(k+1)|)`` of ``np.percentile`` (``f`` the interpolation
fraction). Checked here for negative values, zeros, mixed signs, the range's ends, equal values,
tiny spreads and 1.6e8 values (through ``merge_state``), through ``update`` and the aggregator.

Beyond the range (losses near 1e-12, token counts above 1e12) the estimates are far off (most of
their value); that used to be silent. A ``SketchRangeWarning`` now says so at ``compute`` (once until
``reset``) and names the ``min_value``/``max_value`` that cover the values, which then give
percentiles within the bound.
"""

from __future__ import annotations

import math
import re
import sys
import warnings

import numpy as np
import pytest
import torch

from torchmetrics_ext.aggregation import AggregationType, Distribution, Metric, MetricsAggregator
from torchmetrics_ext.functional import distribution
from torchmetrics_ext.utilities.warnings import SketchRangeWarning

ALPHA = 0.01
PCTS = (0, 1, 5, 25, 50, 75, 95, 99, 100)
RNG = np.random.default_rng(1234)


def bound(values: np.ndarray, q: float) -> tuple[float, float]:
    """``np.percentile(values, q)`` and the documented bound of the sketch's estimate of it."""
    xs = np.sort(np.asarray(values, dtype=np.float64))
    h = q / 100 * (len(xs) - 1)
    k = math.floor(h)
    f = h - k
    lo, hi = xs[k], xs[min(k + 1, len(xs) - 1)]
    return float(np.percentile(xs, q)), ALPHA * ((1 - f) * abs(lo) + f * abs(hi)) + 1e-15 * abs(float(lo))


def assert_within_bound(out: dict[str, float], values: np.ndarray) -> None:
    for q in PCTS:
        want, tol = bound(values, q)
        got = out[f"p{q:02d}"]
        assert abs(got - want) <= tol, (q, got, want, tol)


def computed(values: np.ndarray, **sketch: float) -> dict[str, float]:
    metric = Distribution(percentiles=PCTS, **sketch)
    metric.update(torch.tensor(values, dtype=torch.float64))
    return {k: v.item() for k, v in metric.compute().items()}


IN_RANGE = {
    "negative": -RNG.uniform(1, 100, 500),
    "rewards in [-1, 1]": RNG.uniform(-1, 1, 500),
    "mixed signs, wide": np.r_[-RNG.uniform(1, 1e6, 200), RNG.uniform(1e-3, 1, 200)],
    "zeros": np.zeros(40),
    "zeros and positives": np.r_[np.zeros(30), RNG.uniform(1, 2, 30)],
    "zeros and negatives": np.r_[np.zeros(30), -RNG.uniform(1, 2, 7)],
    "exactly 1e-9": np.full(10, 1e-9),
    "exactly 1e12": np.full(10, 1e12),
    "-1e12 and 1e12": np.r_[np.full(5, -1e12), np.full(6, 1e12)],
    "from 1e-9 up": RNG.uniform(1e-9, 3e-9, 200),
    "up to 1e12": RNG.uniform(5e11, 1e12, 200),
    "all 3.0": np.full(100, 3.0),
    "all -7.5": np.full(100, -7.5),
    "3.0 + 1e-12 k": 3.0 + np.arange(100) * 1e-12,
    "1e9 + arange": 1e9 + np.arange(50.0),
}
OUTSIDE = {
    "losses 1e-12 .. 1e-10": RNG.uniform(1e-12, 1e-10, 200),
    "negative tiny": -RNG.uniform(1e-12, 1e-10, 200),
    "just below 1e-9": RNG.uniform(0.5e-9, 0.99e-9, 200),
    "zeros and tiny losses": np.r_[np.zeros(50), RNG.uniform(1e-13, 1e-11, 150)],
    "just above 1e12": RNG.uniform(1.01e12, 2e12, 200),
    "token counts 1e13 .. 1e15": RNG.uniform(1e13, 1e15, 200),
    "1e300": RNG.uniform(1e299, 1e300, 200),
    "tiny and huge": np.r_[RNG.uniform(1e-12, 1e-11, 50), RNG.uniform(1e13, 1e14, 50)],
}


@pytest.mark.parametrize("name", list(IN_RANGE))
def test_percentiles_in_the_range_are_within_the_documented_bound_of_np_percentile(name):
    values = IN_RANGE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SketchRangeWarning)  # in the range: nothing to warn
        out = computed(values)
        aggregator = MetricsAggregator()
        aggregator.register_handler(AggregationType.DISTRIBUTION, lambda: Distribution(percentiles=PCTS))
        for chunk in np.array_split(values, 3):  # the aggregator's summarize/fold path, several batches
            aggregator.update([Metric("d", "x", float(v), AggregationType.DISTRIBUTION) for v in chunk])
        logged = aggregator.get_metrics_for_logging()
    assert_within_bound(out, values)
    assert_within_bound({k.removeprefix("train_d/x_stat_"): v for k, v in logged.items()}, values)
    assert out["min"] == values.min() and out["max"] == values.max()


def test_equal_values_give_that_value_at_every_percentile_however_many():
    """1.6e8 values of 3.0 (merged in doublings): every percentile exactly 3.0 (within the bound: exact here)."""
    metric = Distribution(percentiles=PCTS)
    metric.update(torch.full((10_000,), 3.0, dtype=torch.float64))
    for _ in range(14):
        metric.merge_state(metric.clone())
    out = {k: v.item() for k, v in metric.compute().items()}
    assert metric.count.item() == 10_000 * 2**14
    assert all(out[f"p{q:02d}"] == 3.0 for q in PCTS)
    assert (out["mean"], out["min"], out["max"], out["std"]) == (3.0, 3.0, 3.0, 0.0)


def test_percentiles_of_1e8_values_follow_the_rank_rule():
    """1..100 each repeated 2**20 times: the reference is the linear rule on the ranks of the repeated data."""
    base = np.arange(1.0, 101.0)
    metric = Distribution(percentiles=PCTS)
    metric.update(torch.tensor(base))
    for _ in range(20):
        metric.merge_state(metric.clone())
    m = 2**20
    n = len(base) * m
    out = {k: v.item() for k, v in metric.compute().items()}
    for q in PCTS:
        h = q / 100 * (n - 1)
        k = math.floor(h)
        f = h - k
        lo, hi = base[k // m], base[min(k + 1, n - 1) // m]
        want = lo + f * (hi - lo)
        assert abs(out[f"p{q:02d}"] - want) <= ALPHA * ((1 - f) * lo + f * hi) + 1e-9, q


def _suggested(message: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(min_value|max_value)=([0-9.e+-]+)", message.split("Pass ")[1])}


@pytest.mark.parametrize("name", list(OUTSIDE))
def test_values_outside_the_range_warn_once_until_reset_and_the_suggested_range_covers_them(name):
    values = OUTSIDE[name]
    metric = Distribution(percentiles=PCTS)
    metric.update(torch.tensor(values))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = {k: v.item() for k, v in metric.compute().items()}
        metric.compute()  # once per metric
    ranged = [w for w in caught if w.category is SketchRangeWarning]
    assert len(ranged) == 1, [str(w.message) for w in caught]
    message = str(ranged[0].message)
    assert message.startswith("Distribution: its percentiles may be far off")
    assert "[min_value, max_value] = [1e-09, 1e+12]" in message
    # what the warning is about: the default sketch is off by more than its bound here
    assert any(abs(out[f"p{q:02d}"] - bound(values, q)[0]) > bound(values, q)[1] for q in PCTS)
    metric.reset()
    metric.update(torch.tensor(values))
    with pytest.warns(SketchRangeWarning):  # again after reset
        metric.compute()
    # the range the message names covers the values: within the bound, no warning
    suggested = _suggested(message)
    assert suggested
    if "min_value" in suggested:  # "or less, down to the smallest" nonzero magnitude (a min of 0 hides it)
        smallest = np.abs(values[values != 0]).min()
        suggested["min_value"] = min(suggested["min_value"], 10.0 ** math.floor(math.log10(smallest)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SketchRangeWarning)
        assert_within_bound(computed(values, **suggested), values)


@pytest.mark.parametrize(
    "values",
    [np.array([1e13, 1e14]), np.full(10, 1e15), np.full(7, 3e-12), np.array([2e-12, 5.0]), np.array([-1e14])],
    ids=["two values", "equal huge", "equal tiny", "tiny and in range, two", "one value"],
)
def test_no_warning_where_every_percentile_reads_the_exact_min_or_max(values):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SketchRangeWarning)
        warnings.simplefilter("ignore", UserWarning)  # the std of one value is undefined
        out = computed(values)
    for q in PCTS:
        assert out[f"p{q:02d}"] == pytest.approx(np.percentile(values, q), rel=1e-15, abs=0)


def test_the_aggregator_warns_once_naming_the_logged_key_and_logs_as_before():
    aggregator = MetricsAggregator()
    values = OUTSIDE["token counts 1e13 .. 1e15"]
    aggregator.update([Metric("web", "tokens", float(v), AggregationType.DISTRIBUTION) for v in values])
    aggregator.update([Metric("web", "ok", 2.0, AggregationType.DISTRIBUTION)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = aggregator.get_metrics_for_logging(prefix="val")
        second = aggregator.get_metrics_for_logging(prefix="val")
    ranged = [str(w.message) for w in caught if w.category is SketchRangeWarning]
    assert len(ranged) == 1 and ranged[0].startswith("val_web/tokens: its percentiles may be far off"), ranged
    assert "Pass max_value=1e+15" in ranged[0]
    assert first == second
    assert first["val_web/tokens_stat_max"] == values.max() and first["val_web/tokens_stat_min"] == values.min()


def test_the_functional_twin_warns_too():
    with pytest.warns(SketchRangeWarning, match=r"^Distribution: its percentiles may be far off.*min_value=1e-12"):
        distribution(torch.tensor(OUTSIDE["losses 1e-12 .. 1e-10"]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_and_change_nothing(bad):
    metric = Distribution(percentiles=PCTS)
    metric.update(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    with pytest.raises(ValueError, match="`value` to hold finite numbers"):
        metric.update(torch.tensor([3.0, bad], dtype=torch.float64))
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "x", 1.0, AggregationType.DISTRIBUTION)])
    with pytest.raises(ValueError, match="finite"):
        aggregator.update([Metric("d", "x", v, AggregationType.DISTRIBUTION) for v in (2.0, bad)])
    assert all(torch.equal(before[k], v) for k, v in metric.metric_state.items())
    assert aggregator.get_metrics_for_logging()["train_d/x_stat_max"] == 1.0


@pytest.mark.parametrize(
    "values",
    [[1e300, 1e307, 1.5e307, 1.7e307], [1e308, 1.2e308, 1.5e308, 1.7e308], [-1e308, -1.5e308, -1.7e308, 5.0]],
    ids=["below 2e307", "above 1e308", "negative, above 1e308"],
)
def test_a_range_up_to_the_largest_float_keeps_the_bound_where_gamma_powers_overflow(values):
    """Bug: with ``max_value`` near 1.8e308 (what the warning names for such values) the top buckets'
    representatives were ``2 * gamma**k / (gamma + 1)`` with ``gamma**k`` overflowing: ``inf``, clipped to the max,
    so a p50 of 1.25e308 read 1.7e308."""
    values = np.array(values)
    metric = Distribution()
    metric.update(torch.tensor(values))
    with pytest.warns(SketchRangeWarning) as caught:
        metric.compute()
    suggested = _suggested(str(caught[0].message))
    assert suggested["max_value"] in (1e308, sys.float_info.max)  # the next power of ten, or the largest float
    with warnings.catch_warnings():
        warnings.simplefilter("error", SketchRangeWarning)
        assert_within_bound(computed(values, **suggested), values)
        assert_within_bound(computed(values, max_value=sys.float_info.max), values)
