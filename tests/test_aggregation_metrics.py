"""Per-type aggregation metrics (Sum, Mean, Max, Min, Distribution, CategoricalCount) via the harness.

References are numpy: sums, weighted means, extremes, ``np.percentile`` (within the sketch's stated
1% relative error) and ``np.unique`` counts.
"""

from __future__ import annotations

import math
import pickle
import statistics
import threading
import warnings
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torchmetrics import MetricCollection

from tests.helpers import tester as H
from torchmetrics_ext.aggregation import CategoricalCount, Distribution, Max, Mean, Min, Sum
from torchmetrics_ext.aggregation.scalar import saved_state_names
from torchmetrics_ext.functional import distribution
from torchmetrics_ext.functional.distribution import SketchSpec
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import SketchRangeWarning, UndefinedMetricWarning

N = 700
ALPHA = 0.01  # the sketch's relative accuracy (default)


# ----------------------------------------------------------------------------- data


def values_data(rng: np.random.Generator, weights: bool = False) -> H.Data:
    out: H.Data = {"value": torch.tensor(rng.normal(5.0, 20.0, size=N), dtype=torch.float32)}
    if weights:
        out["weight"] = torch.tensor(rng.uniform(0.0, 2.0, size=N))
    return out


def skewed_data(rng: np.random.Generator) -> H.Data:
    """Sequence-length-like values: lognormal magnitudes, 20% negative, 5% exact zeros."""
    magnitude = rng.lognormal(4.0, 1.2, size=N)
    sign = np.where(rng.random(N) < 0.2, -1.0, 1.0)
    values = magnitude * sign
    values[rng.random(N) < 0.05] = 0.0
    return {"value": torch.tensor(values, dtype=torch.float32)}


def offset_data(rng: np.random.Generator) -> H.Data:
    """Values with a large common offset, float64: sums about 0 cancel their std away (1e9 + N(0, 3): nan)."""
    return {"value": torch.tensor(1e9 + rng.normal(0.0, 3.0, size=N))}


def category_data(rng: np.random.Generator) -> H.Data:
    """Integer categories whose range drifts along the data, so DDP shards see different categories."""
    drift = np.linspace(0, 6, N).astype(np.int64)
    return {"categories": torch.tensor(rng.integers(0, 4, size=N) + drift)}


# ----------------------------------------------------------------------------- numpy references


def ref_distribution(data: H.Data, percentiles=(5, 50, 95)) -> dict:
    v = data["value"].astype(np.float64)
    if v.size == 0:
        return {k: np.nan for k in ("mean", "min", "max", "std", *(f"p{p:02d}" for p in percentiles))}
    out = {"mean": v.mean(), "min": v.min(), "max": v.max(), "std": v.std(ddof=1) if v.size > 1 else np.nan}
    for p, q in zip(percentiles, np.percentile(v, percentiles), strict=True):
        out[f"p{p:02d}"] = q
    return out


def ref_counts(data: H.Data) -> dict:
    keys, counts = np.unique(data["categories"], return_counts=True)
    return {int(k): float(c) for k, c in zip(keys, counts, strict=True)}


def _case(cid, metric, data, reference, **kw):
    kw.setdefault("weight_key", None)
    kw.setdefault("dtype_keys", ("value",))
    return H.MetricCase(id=cid, metric=metric, data=data, reference=reference, **kw)


_ALL = [
    _case("sum", Sum, values_data, lambda d: d["value"].sum()),
    _case("mean", Mean, values_data, lambda d: d["value"].mean()),
    _case(
        "mean-w",
        Mean,
        lambda rng: values_data(rng, weights=True),
        lambda d: np.average(d["value"], weights=d["weight"]),
        weight_key="weight",
    ),
    _case("max", Max, values_data, lambda d: d["value"].max()),
    _case("min", Min, values_data, lambda d: d["value"].min()),
    _case("distribution", Distribution, skewed_data, ref_distribution, rtol=ALPHA, atol=1e-9),
    _case(
        "distribution-p1-99",
        lambda: Distribution(percentiles=(1, 25, 75, 99)),
        skewed_data,
        lambda d: ref_distribution(d, (1, 25, 75, 99)),
        rtol=ALPHA,
        atol=1e-9,
    ),
    # the percentiles' 1% of 1e7 is loose for the std: the tight checks of it are in test_windowed.py
    _case("distribution-offset", Distribution, offset_data, ref_distribution, rtol=ALPHA, atol=1e-9, dtype_keys=()),
    _case("categorical", CategoricalCount, category_data, ref_counts, dtype_keys=()),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
SCALAR_IDS = ["max", "mean", "mean-w", "min", "sum"]


globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=[i for i in IDS if CASES[i].dtype_keys],
        collection=[*SCALAR_IDS, "distribution"],
        no_arithmetic=["distribution"],
        invariances=["mean-w"],
        ddp=["sum", "mean-w", "max", "min", "distribution", "categorical"],
        device_path=IDS,
        ddp_scenarios=IDS,
    )
)


# ----------------------------------------------------------------------------- bad input


BAD = [
    ("sum", {"value": "abc"}, TypeError, "`value`"),
    ("sum", {"value": torch.tensor([1.0, math.nan])}, ValueError, "finite"),
    ("sum", {"value": torch.tensor([1.0, math.inf])}, ValueError, "finite"),
    ("sum", {"value": torch.tensor([1 + 1j])}, TypeError, "real tensor"),
    ("sum", {"value": None}, TypeError, "`value`"),
    ("max", {"value": [1.0, "x"]}, TypeError, "`value`"),
    ("min", {"value": torch.tensor([-math.inf])}, ValueError, "finite"),
    ("mean-w", {"value": torch.ones(3), "weight": -torch.ones(3)}, ValueError, "non-negative"),
    ("mean-w", {"value": torch.ones(3), "weight": torch.ones(4)}, ValueError, "broadcastable"),
    (
        "mean-w",
        {"value": torch.ones(3), "weight": torch.tensor([1.0, math.nan, 1.0])},
        ValueError,
        "`weight`.*finite",
    ),
    ("distribution", {"value": torch.tensor([1.0, math.nan])}, ValueError, "finite"),
    ("distribution", {"value": "seq"}, TypeError, "`value`"),
    ("categorical", {"categories": torch.tensor([1.5])}, TypeError, "integer tensor"),
    ("categorical", {"categories": torch.tensor([True])}, TypeError, "integer tensor"),
    ("categorical", {"categories": [1, 2.5]}, TypeError, "str or int categories, got 2.5"),
    ("categorical", {"categories": [True]}, TypeError, "str or int categories, got True"),
    ("categorical", {"categories": "abc"}, TypeError, "sequence"),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_rejects(cid, bad, exc, match):
    H.check_rejects(CASES[cid], bad, exc, match)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"relative_accuracy": 0.0}, "relative_accuracy"),
        ({"relative_accuracy": 1.5}, "relative_accuracy"),
        ({"min_value": 0.0}, "min_value"),
        ({"min_value": 10.0, "max_value": 1.0}, "max_value"),
        ({"percentiles": ()}, "percentiles"),
        ({"percentiles": (50, 101)}, "percentiles"),
        ({"percentiles": (50, 50.0)}, "distinct"),
    ],
)
def test_distribution_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distribution(**kwargs)


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
@pytest.mark.parametrize("option", ["state_name", "fn", "default_value"])
def test_an_option_torchmetrics_aggregators_pass_themselves_is_named_like_any_unknown_option(cls, option):
    """``Sum(state_name=...)`` gave Python's bare "got multiple values for keyword argument" (TorchMetrics'
    aggregators pass ``fn``, ``default_value`` and ``state_name`` themselves): now the metrics' option error,
    naming the class and the options it takes. TorchMetrics' own options are still taken."""
    name = cls.__name__
    with pytest.raises(
        ValueError,
        match=rf"^Unexpected keyword arguments: `{option}` for {name}\. {name} takes nan_strategy, validate_args, "
        r"and TorchMetrics' compute_on_cpu, ",
    ):
        cls(**{option: "x"})
    with pytest.raises(ValueError, match=rf"`nan_stratgy` for {name} \(did you mean `nan_strategy`\?\)"):
        cls(nan_stratgy="warn")
    assert cls(sync_on_compute=False, compute_with_cache=False).sync_on_compute is False


def test_nan_strategy_ignore_drops_nan():
    metric = Sum(nan_strategy="ignore")
    metric.update(torch.tensor([1.0, math.nan, 2.0]))
    assert metric.compute().item() == 3.0
    with pytest.raises(ValueError, match="finite"):
        metric.update(torch.tensor([math.inf]))


_SCALARS = {"sum": Sum, "mean": Mean, "mean-w": Mean, "max": Max, "min": Min}


def _nan_reference(cid: str, strategy: object, batches: list[tuple[np.ndarray, np.ndarray | None]]) -> float:
    """TorchMetrics' documented ``nan_strategy`` in numpy: drop the NaN rows (value or weight), or fill them (weight 1)."""
    values, weights = [], []
    for v, w in batches:
        w = np.ones_like(v) if w is None else np.broadcast_to(w, v.shape).astype(np.float64)
        nan = np.isnan(v) | np.isnan(w)
        if strategy in ("ignore", "warn"):
            v, w = v[~nan], w[~nan]
        elif isinstance(strategy, float):
            v, w = np.where(nan, strategy, v), np.where(nan, 1.0, w)
        values.append(v)
        weights.append(w)
    v, w = np.concatenate(values), np.concatenate(weights)
    return {
        "sum": lambda: v.sum(),
        "mean": lambda: v.sum() / v.size,
        "mean-w": lambda: (v * w).sum() / w.sum(),
        "max": lambda: v.max(),
        "min": lambda: v.min(),
    }[cid]()


@pytest.mark.parametrize("validate_args", [True, False], ids=["validated", "unvalidated"])
@pytest.mark.parametrize(
    ("cid", "strategy"),
    [
        (cid, strategy)
        for cid in sorted(_SCALARS)
        for strategy in ("ignore", "warn", -2.5, "disable")
        if not (strategy == "disable" and cid in ("max", "min"))  # a kept NaN's extreme is not defined
    ],
)
def test_nan_strategy_matches_numpy(cid, strategy, validate_args):
    """NaN rows are dropped (weight 0 and a neutral value) or filled with ``torch.where``, not compacted (a
    host read): the values of TorchMetrics' documented strategies, validated or not (``"warn"`` warns
    only when validating: the warning needs a read). A row whose weight alone is NaN counts as a NaN row."""
    rng = np.random.default_rng(3)
    batches = []
    for n in (50, 31, 1):
        v, w = rng.normal(size=n), rng.uniform(0, 2, size=n).astype(np.float32).astype(np.float64)  # float32 weights
        v[rng.random(n) < 0.2] = np.nan
        w[rng.random(n) < 0.2] = np.nan
        batches.append((v, w if cid == "mean-w" else None))
    batches.append((np.full(3, np.nan), np.full(3, 1.0) if cid == "mean-w" else None))  # only NaN
    metric = _SCALARS[cid](nan_strategy=strategy, validate_args=validate_args)
    for v, w in batches:
        args = [torch.tensor(v)] + ([] if w is None else [torch.tensor(w, dtype=torch.float32)])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            metric.update(*args)
        nan_warnings = [x for x in seen if "nan" in str(x.message)]
        has_nan = bool(np.isnan(v).any() or (w is not None and np.isnan(w).any()))
        assert len(nan_warnings) == (strategy == "warn" and validate_args and has_nan), [str(x.message) for x in seen]
    expected = _nan_reference(cid, strategy, batches)
    if strategy == "disable":
        assert math.isnan(metric.compute().item()) and math.isnan(expected)
    else:
        H.assert_close(metric.compute(), expected, 1e-12, 1e-12, f"{cid} {strategy}")


def test_nan_strategy_fill_leaves_the_callers_tensor_alone():
    """TorchMetrics writes the fill value into the tensor it is given (the caller's, when it is float64)."""
    value = torch.tensor([1.0, math.nan, 2.0], dtype=torch.float64)
    weight = torch.tensor([1.0, 1.0, math.nan], dtype=torch.float64)
    for metric, args in ((Sum(nan_strategy=5.0), (value,)), (Mean(nan_strategy=5.0), (value, weight))):
        metric.update(*args)
        assert torch.equal(value.isnan(), torch.tensor([False, True, False]))
        assert torch.equal(weight.isnan(), torch.tensor([False, False, True]))
    assert metric.compute().item() == pytest.approx((1.0 + 5.0 + 5.0) / 3)


@pytest.mark.parametrize(
    ("strategy", "args", "match"),
    [
        # the range named is the values' without NaN (NaN once showed as a 0 that is not in the data)
        (
            "ignore",
            (torch.tensor([math.nan, math.inf, 1.0]),),
            r"`value` to hold finite numbers.*inf \(in \[1, inf\]\)",
        ),
        ("ignore", (torch.ones(3), torch.tensor([math.nan, -1.0, 1.0])), r"`weight` to be non-negative.*\[-1, 1\]"),
        (0.0, (torch.ones(3), torch.tensor([math.nan, math.inf, 1.0])), r"`weight` to hold finite numbers.*inf"),
        ("error", (torch.ones(3), torch.tensor([math.nan, 1.0, 1.0])), r"`weight` to hold finite.*NaN"),
        ("error", (torch.tensor(1.0), torch.ones(3)), r"`weight` broadcastable to `value` of shape \(\)"),
    ],
)
def test_nan_strategy_still_rejects_inf_and_negative_weights(strategy, args, match):
    """A tensor that holds NaN under a strategy that accepts NaN is checked again without its NaN; a
    weight must broadcast to ``value``'s shape (a larger weight was a RuntimeError after validation)."""
    metric = Mean(nan_strategy=strategy)
    metric.update(torch.tensor([4.0]))
    before = H._state_snapshot(metric)
    with pytest.raises(ValueError, match=match):
        metric.update(*args)
    H.assert_same_state(metric, before)


# ----------------------------------------------------------------------------- the batch protocol (summarize, fold)

PLAIN = [12, 7.5, 3, True, np.float32(0.25), 4096, 7.5]  # plain values as records carry them
PLAIN_REFERENCE = {
    "sum": math.fsum(float(v) for v in PLAIN),
    "mean": math.fsum(float(v) for v in PLAIN) / len(PLAIN),
    "max": 4096.0,
    "min": 0.25,
}


@pytest.mark.parametrize("cid", ["sum", "mean", "max", "min", "distribution"])
def test_summarize_then_fold_is_an_update(cid):
    """``fold(summarize(values))`` equals ``update(tensor of values)`` and counts as one update."""
    by_update, by_fold = CASES[cid].metric(), CASES[cid].metric()
    by_update.update(torch.tensor([float(v) for v in PLAIN], dtype=torch.float64))
    before = H._state_snapshot(by_fold)
    summary = by_fold.summarize(PLAIN)
    H.assert_same_state(by_fold, before)  # summarizing changes nothing
    by_fold.fold(summary)
    assert by_fold.update_count == by_update.update_count == 1
    H.assert_close(by_fold.compute(), by_update.compute(), 1e-12, 1e-12, cid)
    if cid in PLAIN_REFERENCE:
        assert by_fold.compute().item() == PLAIN_REFERENCE[cid]
    else:
        H.assert_close(by_fold.compute(), ref_distribution({"value": np.array(PLAIN, dtype=float)}), ALPHA, 1e-12)


def test_categorical_summarize_then_fold_is_an_update():
    by_update, by_fold = CategoricalCount(), CategoricalCount()
    values = ["web", 3, "web", "3", 3, 3]
    by_update.update(values)
    by_fold.fold(by_fold.summarize(values))
    assert by_fold.update_count == 1
    assert by_fold.categories == by_update.categories == ["web", 3, "3"]
    assert {k: v.item() for k, v in by_fold.compute().items()} == dict(Counter(values))


def test_fold_drops_a_cached_compute():
    metric = Sum()
    metric.update(torch.tensor([1.0]))
    assert metric.compute().item() == 1.0  # cached by TorchMetrics until the next update
    metric.fold(metric.summarize([2]))
    assert metric.compute().item() == 3.0


SUMMARIZE_BAD = [
    ("sum", ["ten"], TypeError, r"Expected a number, got 'ten' \(str\)"),
    ("mean", [1.0, math.nan], ValueError, r"Expected a finite number, got nan \(float\)"),
    ("max", [None], TypeError, r"Expected a finite number, got None"),
    ("min", [1, math.inf], ValueError, "got inf"),
    ("min", [torch.tensor([1.0, 2.0])], TypeError, "Expected a finite number"),
    ("sum", [1e308, 1e308], ValueError, "overflows float64"),
    ("distribution", [3, "x"], TypeError, "Expected a number, got 'x'"),
    ("categorical", ["a", 2.5], TypeError, r"str or int categories, got 2.5 \(float\)"),
    ("categorical", [False], TypeError, "str or int categories, got False"),
]


@pytest.mark.parametrize(
    ("cid", "values", "exc", "match"), SUMMARIZE_BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(SUMMARIZE_BAD)]
)
def test_summarize_rejects_bad_values(cid, values, exc, match):
    metric = CASES[cid].metric()
    metric.update(**CASES[cid].make_data())
    before = H._state_snapshot(metric)
    with pytest.raises(exc, match=match):
        metric.summarize(values)
    H.assert_same_state(metric, before)


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Max, [1e308, 1e308]),
        (Min, [-1e308, -1e308]),
        (Max, [-1.5e308, 1.7e308, 1.7e308, 3]),
        (Min, [2**1023, -(2**1023), -1e308]),
    ],
)
def test_extremes_of_values_whose_sum_overflows(cls, values):
    """Max and Min never sum: finite values whose float64 sum overflows are valid (np.max/np.min)."""
    expected = (np.max if cls is Max else np.min)(np.array(values, dtype=np.float64))
    metric = cls()
    metric.fold(metric.summarize(values))
    assert metric.compute().item() == expected
    for bad, exc in (([1e308, 1e308, math.inf], ValueError), ([1e308, 1e308, "x"], TypeError), ([10**400], ValueError)):
        with pytest.raises(exc, match=r"Expected a (finite )?number"):
            metric.summarize(bad)


def test_percentile_keys_name_the_percentile_exactly():
    """A key gives its percentile back (``p99.99999`` is not the max's ``p100``); values are np.percentile's."""
    percentiles = (5, 12.3456789, 50, 99.9, 99.99999, 100)
    keys = ["p05", "p12.3456789", "p50", "p99.9", "p99.99999", "p100"]
    data = np.arange(1.0, 11.0)
    metric = Distribution(percentiles=percentiles)
    metric.update(torch.tensor(data))
    for stats in (metric.compute(), distribution(torch.tensor(data), percentiles=percentiles)):
        assert list(stats)[4:] == keys
        for key, q in zip(keys, percentiles, strict=True):
            assert float(key[1:]) == q  # the name gives the percentile back
            np.testing.assert_allclose(stats[key].item(), np.percentile(data, q), rtol=ALPHA)
    assert metric.compute()["p99.99999"].item() < data.max()


# ----------------------------------------------------------------------------- undefined values


@pytest.mark.parametrize("cls", [Max, Min, Mean])
def test_empty_extremes_and_mean_are_nan(cls):
    metric = cls()
    with pytest.warns(UndefinedMetricWarning, match="undefined"):
        assert math.isnan(metric.compute().item())


def _storage_bytes(metric):
    """Bytes of the distinct tensor storages a metric holds in its states and their defaults."""
    tensors = [t for t in (*metric._defaults.values(), *metric.metric_state.values()) if isinstance(t, torch.Tensor)]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


@pytest.mark.parametrize("move", ["none", "to", "set_dtype", "pickle"])
def test_distribution_keeps_one_sketch_not_a_second_default_copy(move):
    """Bug: TorchMetrics kept a full copy of the 38.7 kB bucket counts as their default (``reset``'s):
    ~98 kB per DISTRIBUTION key where the aggregator said 38.7 kB. The default is one element now,
    through device moves, ``set_dtype`` and pickling; ``reset`` still gives a full writable sketch.
    Values: NumPy's mean and percentiles (within the sketch's 1%) after a reset.
    """
    metric = Distribution()
    sketch = 4839 * 8
    if move == "to":
        metric = metric.to("cpu")
    elif move == "set_dtype":
        metric.set_dtype(torch.float32)
        sketch = 4839 * 4
    elif move == "pickle":
        metric = pickle.loads(pickle.dumps(metric))
    assert _storage_bytes(metric) <= sketch + 8 * 32  # and 15 float64 moments, extremes, count, with defaults
    metric.update(torch.arange(1.0, 11.0))
    metric.reset()
    counts = getattr(metric, metric._counts_state)
    assert counts.shape == (4839,) and counts.is_contiguous() and not counts.any()
    values = np.random.default_rng(0).lognormal(size=2000)
    metric.update(torch.from_numpy(values))
    assert _storage_bytes(metric) <= sketch + 8 * 32
    out = metric.compute()
    np.testing.assert_allclose(out["mean"].item(), values.mean(), rtol=1e-6 if move == "set_dtype" else 1e-12)
    for q in (5, 50, 95):
        assert abs(out[f"p{q:02d}"].item() / np.percentile(values, q) - 1) <= 0.01 + 1e-3


def test_distribution_empty_and_single_value():
    metric = Distribution()
    with pytest.warns(UndefinedMetricWarning, match="no value"):
        stats = metric.compute()
    assert all(math.isnan(v.item()) for v in stats.values())
    metric.update(7.0)
    with pytest.warns(UndefinedMetricWarning, match="single value"):
        stats = metric.compute()
    assert math.isnan(stats["std"].item())
    assert {k: v.item() for k, v in stats.items() if k != "std"} == {
        "mean": 7.0,
        "min": 7.0,
        "max": 7.0,
        "p05": 7.0,
        "p50": 7.0,
        "p95": 7.0,
    }


def test_empty_batches_change_nothing():
    metric = Distribution()
    metric.update(torch.tensor([1.0, 2.0, 3.0]))
    metric.update(torch.tensor([]))
    assert metric.compute()["mean"].item() == 2.0
    counts = CategoricalCount()
    counts.update([])
    counts.update(torch.tensor([], dtype=torch.long))
    assert counts.compute() == {}


# ----------------------------------------------------------------------------- the sketch against numpy


@pytest.mark.parametrize("seed", range(4))
def test_sketch_percentiles_within_relative_error(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [
            rng.lognormal(2.0, 3.0, 5000),
            -rng.lognormal(0.0, 2.0, 2000),
            np.zeros(50),
            rng.integers(1, 4000, 3000).astype(np.float64),
        ]
    )
    qs = [0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100]
    stats = distribution(torch.tensor(rng.permutation(x)), percentiles=qs)
    expected = np.percentile(x, qs)
    for q, e in zip(qs, expected, strict=True):
        key = f"p{int(q):02d}" if float(q).is_integer() else f"p{q:g}"
        assert abs(stats[key].item() - e) <= ALPHA * abs(e) + 1e-12, (q, stats[key].item(), e)
    np.testing.assert_allclose(stats["mean"].item(), x.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats["std"].item(), x.std(ddof=1), rtol=1e-8)
    assert stats["p00"].item() == x.min() and stats["p100"].item() == x.max()


@pytest.mark.parametrize("value", [0.3, 1e6 + 0.1, 1.7e9 + 3])
def test_distribution_std_of_equal_values_is_exactly_zero(value):
    """Equal values: min == max, so std is 0, not the rounding of sum x^2 - n mean^2 (7.5e-9 for 0.3)."""
    metric = Distribution()
    for _ in range(10):
        metric.update(torch.full((100,), value, dtype=torch.float64))
    assert metric.compute()["std"].item() == 0.0
    assert distribution(torch.full((1000,), value, dtype=torch.float64))["std"].item() == 0.0


# values with a large common offset: the torchtune issue's 1e7 + arange(10) (sample std ~3.03),
# 1e9 + a spread of 1, 1e15 + a spread of 100 (float64 holds them exactly), a negative offset,
# mixed signs, values on both sides of the first value (the shift), one huge outlier first, and
# 1e300-sized values of a 1e299 spread (the scaled sums)
OFFSET_DATA = {
    "1e7+arange(10)": 1e7 + np.arange(10.0),
    "1e9+arange(100)": 1e9 + np.arange(100.0),
    "1e9+spread1": 1e9 + np.random.default_rng(11).uniform(0, 1, 500),
    "1e15+spread100": 1e15 + np.round(np.random.default_rng(12).uniform(0, 100, 300)),
    "-3e12+spread1": -3e12 + np.random.default_rng(13).uniform(0, 1, 400),
    "mixed_signs": np.random.default_rng(14).normal(0.0, 1.0, 300) * 1e3,
    "crossing_the_shift": 5e8 + np.random.default_rng(15).normal(0.0, 1.0, 300)[::-1],
    "outlier_first": np.concatenate([[1e12], 1e9 + np.random.default_rng(16).uniform(0, 1, 200)]),
    "1e300+spread1e299": 1e300 + 1e299 * np.random.default_rng(17).uniform(-1, 1, 300),
    "-1e-300+spread": -1e-300 + 1e-303 * np.random.default_rng(18).uniform(0, 1, 300),
}


@pytest.mark.parametrize(
    "path", ["update", "small_updates", "device_path", "fold", "functional", "merge", "forward", "stale_fold"]
)
@pytest.mark.parametrize("name", list(OFFSET_DATA))
def test_distribution_mean_and_std_of_values_with_a_large_offset(name, path):
    """Bug: the std came from float64 sums of x and x^2, which cancel when the mean is large relative to the
    spread: 1e7 + arange(10) had no std (``nan``, left out of the logging dict; torchtune logs 3.03),
    1e9 + arange(100) and 1e15 offsets gave ``nan``. The sums are now taken about a shift (the first value
    seen), and parts with different shifts (merges, forward, summaries made before the shift was set) are
    re-shifted exactly. Reference: exact fractions (statistics.stdev agrees)."""
    x = OFFSET_DATA[name]
    mean, std = _exact_mean_std(x)
    if abs(mean) < 1e300:
        assert std == pytest.approx(statistics.stdev(x.tolist()), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is undefined here
        # beyond the sketch's range the percentiles say so (the mean and std are what this is about)
        warnings.filterwarnings("ignore", category=SketchRangeWarning)
        if path == "functional":
            out = distribution(torch.from_numpy(x))
        else:
            metric, other = Distribution(), Distribution()
            chunks = np.array_split(x, 7 if path != "small_updates" else -(-x.size // 5))  # 5: the host sums
            with force_device_path(path == "device_path"):
                if path == "stale_fold":  # summarized before the first fold set the shift
                    summaries = [metric.summarize(chunk.tolist()) for chunk in chunks]
                    for summary in summaries:
                        metric.fold(summary)
                for i, chunk in enumerate(chunks if path != "stale_fold" else []):
                    target = other if path == "merge" and i % 2 else metric
                    if path == "fold":
                        target.fold(target.summarize(chunk.tolist()))
                    elif path == "forward":
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # a batch of one value has no std
                            target(torch.from_numpy(chunk))
                    else:
                        target.update(torch.from_numpy(chunk))
                if path == "merge":
                    metric.merge_state(other)
                out = metric.compute()
    assert out["min"].item() == x.min() and out["max"].item() == x.max()
    # each x - shift is rounded once: within 2^-53 of |x - shift| (exact for x within a factor 2 of the shift)
    np.testing.assert_allclose(out["mean"].item(), mean, rtol=1e-15, atol=2.0**-51 * np.abs(x - x[0]).mean())
    np.testing.assert_allclose(out["std"].item(), std, rtol=1e-13)


@pytest.mark.parametrize("path", ["update", "device_path", "fold"])
def test_distribution_of_one_value_with_a_large_offset(path):
    """One value: its mean exactly and no std (``nan`` with a warning), however large; a second value gives the std."""
    metric = Distribution()
    with force_device_path(path == "device_path"):
        if path == "fold":
            metric.fold(metric.summarize([1e15 + 3.0]))
        else:
            metric.update(torch.tensor([1e15 + 3.0], dtype=torch.float64))
        with pytest.warns(UndefinedMetricWarning, match="single value"):
            out = metric.compute()
        assert out["mean"].item() == 1e15 + 3.0 and math.isnan(out["std"].item())
        metric.update(torch.tensor([1e15 + 5.0], dtype=torch.float64))
        assert metric.compute()["std"].item() == statistics.stdev([1e15 + 3.0, 1e15 + 5.0])


def test_distribution_states_saved_before_the_shift_give_the_values_they_gave():
    """A checkpoint without ``shift`` holds sums of the values: it loads with shift 0 and gives what it gave
    (1e9 + arange(100) ``nan`` with the cancellation warning, as the float64 sums of x and x^2 can tell no
    more; well-spread values numpy's std), also after further updates (they stay about 0)."""
    tight, spread = 1e9 + np.arange(100.0), np.random.default_rng(3).normal(5.0, 2.0, 200)
    for data in (tight, spread):
        source = Distribution()
        source.persistent(True)
        source.update(torch.from_numpy(data))
        saved = {k: v.clone() for k, v in source.state_dict().items()}
        # the states an earlier version wrote: plain sums of the values and of their squares
        saved["total"] = torch.tensor(math.fsum(data.tolist()), dtype=torch.float64)
        saved["total_sq"] = torch.tensor(math.fsum((data * data).tolist()), dtype=torch.float64)
        for name in ("total_compensation", "total_sq_compensation", "scaled_sums_compensation"):
            saved[name].zero_()
        del saved["shift"]
        resumed = Distribution()
        resumed.persistent(True)
        resumed.load_state_dict(saved)
        assert resumed.shift.item() == 0.0
        n, s1, s2 = float(data.size), saved["total"].item(), saved["total_sq"].item()
        if data is tight:
            with pytest.warns(UndefinedMetricWarning, match="below the rounding of their float64 sums"):
                out = resumed.compute()
            assert math.isnan(out["std"].item())
        else:
            out = resumed.compute()
            np.testing.assert_allclose(out["std"].item(), math.sqrt((s2 - s1 * s1 / n) / (n - 1)), rtol=1e-15)
            np.testing.assert_allclose(out["std"].item(), data.std(ddof=1), rtol=1e-13)
        assert out["mean"].item() == s1 / n
        if data is not tight:
            resumed.update(torch.from_numpy(data))
            assert resumed.shift.item() == 0.0
            np.testing.assert_allclose(
                resumed.compute()["std"].item(), np.concatenate([data, data]).std(ddof=1), rtol=1e-13
            )


@pytest.mark.parametrize("path", ["update", "device_path"])
def test_distribution_std_warnings_name_the_dtype_of_the_states(path):
    """After ``set_dtype(torch.float32)`` the std warnings said "float64 sums", and the cancellation
    threshold was float64's: values 1e5 + N(0, 1) gave a std of ~3.9 (numpy: ~1.0) without a word,
    each update's sums being rounded to float32. The warnings name float32 and the threshold is
    float32's; a spread well above it matches numpy, and float64 states are unchanged. Since the sums
    are taken about a shift (the first value), float32 states give numpy's std there too; sums about 0
    (a checkpoint saved before the shift) still cancel, with the float32 warning."""
    x = np.random.default_rng(3).normal(1e5, 1.0, size=(20, 8))
    shifted = Distribution()
    shifted.set_dtype(torch.float32)
    metric = Distribution()
    metric.set_dtype(torch.float32)
    metric._align_shift(0.0)  # sums about 0 for good, as a checkpoint saved before the shift holds them
    metric.__dict__["_pinned"] = True
    with force_device_path(path == "device_path"):
        for row in x:
            metric.update(torch.from_numpy(row))
            shifted.update(torch.from_numpy(row))
    np.testing.assert_allclose(shifted.compute()["std"].item(), x.std(ddof=1), rtol=1e-4)
    with pytest.warns(
        UndefinedMetricWarning, match=r"below the rounding of their float32 sums \(a spread below ~8e-3 "
    ):
        assert math.isnan(metric.compute()["std"].item())
    # the workaround the warning names: float64 states (the default)
    float64 = Distribution()
    for row in x:
        float64.update(torch.from_numpy(row))
    np.testing.assert_allclose(float64.compute()["std"].item(), x.std(ddof=1), rtol=1e-6)
    # a spread well above float32's rounding: numpy's std, within float32 sums' precision
    y = np.random.default_rng(4).normal(10.0, 3.0, size=(20, 8))
    metric.reset()
    for row in y:
        metric.update(torch.from_numpy(row))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        np.testing.assert_allclose(metric.compute()["std"].item(), y.std(ddof=1), rtol=1e-4)
    metric.reset()
    metric.update(torch.tensor([1.0, 2.0, 1e20]))  # 1e20 squared overflows float32
    with pytest.warns(UndefinedMetricWarning, match="float32 sum of squares is not finite .values whose squares"):
        assert math.isnan(metric.compute()["std"].item())


@pytest.mark.parametrize(
    ("dtype", "mean", "rtol"), [(torch.float32, 100.0, 1e-3), (torch.float16, 0.0, 1e-2), (torch.bfloat16, 0.0, 1e-2)]
)
def test_distribution_std_of_narrow_states_where_their_sums_tell_it(dtype, mean, rtol):
    """States cast with ``set_dtype`` keep compensated sums: float32 tells the std of 100 +- 1 (batches of
    100), half dtypes that of zero-mean values. A cut of 2^12 roundings of the dtype gave nan for both."""
    x = np.random.default_rng(0).normal(mean, 1.0, 10_000 if dtype == torch.float32 else 1000)
    metric = Distribution()
    metric.set_dtype(dtype)
    for chunk in np.array_split(x, len(x) // 100):
        metric.update(torch.tensor(chunk))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        np.testing.assert_allclose(metric.compute()["std"].item(), x.std(ddof=1), rtol=rtol)


def _refuse_clamp(*args, **kwargs):
    raise RuntimeError("value cannot be converted to type at::Half without overflow")


@pytest.mark.parametrize("refused", [False, True])
@pytest.mark.parametrize("path", ["update", "fold", "device_path"])
@pytest.mark.parametrize(("dtype", "big"), [(torch.float16, 1e9), (torch.bfloat16, 1e39), (torch.float32, 1e300)])
def test_distribution_extremes_past_a_narrow_states_range_are_stored_as_inf(dtype, big, path, refused, monkeypatch):
    """A min/max beyond the range of states cast with ``set_dtype`` is kept as -inf/inf (what a cast to the
    dtype gives: numpy's float32/float16 of it), one within it as the dtype rounds it, on the host and device
    paths. ``clamp_`` refuses a Python float past a narrow state's range (and ``fill_`` did before PyTorch 2.4):
    ``refused`` makes it refuse every call, so the float64 fallback is what writes every extreme."""
    reference = np.float32 if dtype == torch.float32 else np.float16
    with np.errstate(over="ignore"):
        assert reference(big) == np.inf  # the cast the state's dtype makes of it (bfloat16: as float16, past 1e39)
    metric = Distribution()
    metric.set_dtype(dtype)
    batches = [[3.0, 5.0], [-big, 4.0], [2.0, big]]
    with force_device_path(path == "device_path"), monkeypatch.context() as patch:
        if refused:
            patch.setattr(torch.Tensor, "clamp_", _refuse_clamp)
        for i, batch in enumerate(batches):
            if path == "fold":
                metric.fold(metric.summarize(batch))
            else:
                metric.update(torch.tensor(batch, dtype=torch.float64))
            expected_min, expected_max = min(min(b) for b in batches[: i + 1]), max(max(b) for b in batches[: i + 1])
            with np.errstate(over="ignore"):
                assert metric.min_value.item() == float(reference(expected_min))
                assert metric.max_value.item() == float(reference(expected_max))
    assert metric.min_value.dtype == metric.max_value.dtype == dtype
    assert metric.count.item() == sum(map(len, batches))


def test_distribution_host_and_device_reads_of_the_states_agree():
    """``compute`` reads the states one by one on the CPU path and as one concatenated tensor on the device
    path: the same floats, bit for bit, with compensations and a scaled band in use; numpy agrees."""
    rng = np.random.default_rng(11)
    chunks = [np.array([-1.0, 1.0])] + [rng.normal(0.0, 2.0, 9) / 3 for _ in range(40)]  # shift 0
    chunks += [1e-200 * rng.normal(0.0, 1.0, 5)]  # band -1 (scaled sums)
    metric = Distribution(percentiles=(10.0, 50.0, 99.0))
    for chunk in chunks:
        metric.update(torch.from_numpy(chunk))
    assert metric.shift.item() == 0.0 and metric.scaled_sums[1].item() > 0
    assert metric.total_compensation.item() != 0 and metric.total_sq_compensation.item() != 0
    host = {k: v.item() for k, v in metric.compute().items()}
    logged = metric._logged_value()
    metric._computed = None
    with force_device_path():
        device = {k: v.item() for k, v in metric.compute().items()}
        device_logged = metric._logged_value()
    assert host == device == logged == device_logged
    x = np.concatenate(chunks)
    np.testing.assert_allclose(host["std"], x.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(host["mean"], x.mean(), rtol=1e-9)


@pytest.mark.parametrize("offset", [1e2, 1e4])
def test_distribution_std_with_an_offset_within_the_documented_precision(offset):
    """Relative error about 1e-16 (mean / std)^2 (documented), over many updates, against numpy."""
    x = offset + np.random.default_rng(2).normal(0.0, 1.0, 20000)
    metric = Distribution()
    for chunk in np.array_split(x, 50):
        metric.update(torch.tensor(chunk))
    np.testing.assert_allclose(metric.compute()["std"].item(), x.std(ddof=1), rtol=1e-15 * offset**2)


def _two_pass_std(x: np.ndarray) -> tuple[float, float]:
    """``(std, mean)`` of ``x`` (``ddof=1``) by two ``math.fsum`` passes: no cancellation, one rounding each."""
    mean = math.fsum(x) / x.size
    return math.sqrt(math.fsum((x - mean) ** 2) / (x.size - 1)), mean


def _exact_mean_std(x: np.ndarray) -> tuple[float, float]:
    """``(mean, std ddof=1)`` of float64 values of any magnitude, in exact rational arithmetic.

    The values are brought near 1 by a power of two (exact for fractions), so that neither the
    mean nor the variance underflows or overflows on the way back to floats.
    """
    exponent = math.frexp(float(np.max(np.abs(x))))[1]
    scaled = [Fraction(float(v)) / Fraction(2) ** exponent for v in x]
    mean = sum(scaled, Fraction(0)) / len(scaled)
    var = sum(((v - mean) ** 2 for v in scaled), Fraction(0)) / (len(scaled) - 1)
    return math.ldexp(float(mean), exponent), math.ldexp(math.sqrt(float(var)), exponent)


# magnitudes whose float64 squares underflow (below ~1e-154; subnormal values at 1e-310) or whose
# squares or sum overflow (above ~1e154; 1000 values of 1e306)
MAGNITUDES = [1e-310, 1e-300, 1e-200, 1e-165, 1e-160, 1e-150, 1.0, 1e150, 1e160, 1e200, 1e300, 1e306]


@pytest.mark.parametrize("path", ["update", "device_path", "fold", "functional"])
@pytest.mark.parametrize("scale", MAGNITUDES)
def test_distribution_mean_and_std_of_tiny_and_huge_magnitudes(scale, path):
    """Bug: the float64 sum of squares underflowed below ~1e-154 (std off by 5.5e-5 at 1e-160, ``nan``
    blaming the spread at 1e-165) and the sum overflowed (mean ``inf`` for 1000 values of 1e306).
    The mean and std are those of values near 1 at any magnitude. Reference: exact fractions.
    """
    x = np.random.default_rng(6).normal(3.0, 1.0, 1000) * scale
    mean, std = _exact_mean_std(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is undefined here
        # beyond the sketch's range the percentiles say so (the mean and std are what this is about)
        warnings.filterwarnings("ignore", category=SketchRangeWarning)
        if path == "functional":
            out = distribution(torch.from_numpy(x))
        else:
            metric = Distribution()
            with force_device_path(path == "device_path"):
                for chunk in np.array_split(x, 7):
                    if path == "fold":
                        metric.fold(metric.summarize(chunk.tolist()))
                    else:
                        metric.update(torch.from_numpy(chunk))
                out = metric.compute()
    assert out["min"].item() == x.min() and out["max"].item() == x.max()
    np.testing.assert_allclose(out["mean"].item(), mean, rtol=1e-14)
    np.testing.assert_allclose(out["std"].item(), std, rtol=1e-14)


def test_distribution_moments_of_batches_of_very_different_magnitudes_merge():
    """Batches at 1e-200, 1 and 1e200 (each summed at its own scale) on two merged metrics: the exact moments."""
    rng = np.random.default_rng(7)
    batches = [rng.normal(3.0, 1.0, 50) * scale for scale in (1e-200, 1.0, 1e200, 1e-200, 1e180)]
    small = np.concatenate([batches[0], batches[1], batches[3]])
    first, second = Distribution(), Distribution()
    for i, batch in enumerate(batches):
        (first if i % 2 else second).update(torch.from_numpy(batch))
    first.merge_state(second)
    for data, metric in ((np.concatenate(batches), first), (small, None)):
        if metric is None:  # the small batches alone: the huge ones would hide them
            metric = Distribution()
            for batch in (batches[0], batches[1], batches[3]):
                metric.fold(metric.summarize(batch.tolist()))
        mean, std = _exact_mean_std(data)
        out = metric.compute()
        np.testing.assert_allclose(out["mean"].item(), mean, rtol=1e-14)
        np.testing.assert_allclose(out["std"].item(), std, rtol=1e-14)


@pytest.mark.parametrize("path", ["update", "device_path", "fold"])
@pytest.mark.parametrize(
    "batches",
    [
        [[1e140, -1e140], [1e-200, 1e-200]],  # a band-1 sum cancels to 0 exactly; band -1 survives
        [[1e300, -1e300], [2.0], [3e-250]],  # band 1 cancels; band 0 and band -1 survive
        [[1e200, -1e200], [1e-300], [1.5, -1.0]],  # band 1 cancels; band 0 survives, band -1 is below it
    ],
)
def test_distribution_mean_survives_exact_cancellation_of_large_values(batches, path):
    """Bug: compute scaled every band's sum by 2**-E with E from the largest magnitude, so the small
    sum left once huge values cancelled underflowed: mean 0.0 for [1e140, -1e140, 1e-200, 1e-200].
    Reference: the exact mean in fractions, rounded once.
    """
    values = [v for batch in batches for v in batch]
    exact = float(sum(map(Fraction, values), Fraction(0)) / len(values))
    metric = Distribution()
    with warnings.catch_warnings(), force_device_path(path == "device_path"):
        warnings.simplefilter("ignore")  # the std may be undefined (cancelled spread): not the point here
        for batch in batches:
            if path == "fold":
                metric.fold(metric.summarize(batch))
            else:
                metric.update(torch.tensor(batch, dtype=torch.float64))
        out = metric.compute()
    assert out["mean"].item() == exact


def _feed_distribution(metric: Distribution, rows: np.ndarray, path: str) -> None:
    for i, row in enumerate(rows):
        if path == "update":
            metric.update(torch.from_numpy(row))
        elif path == "fold":  # the aggregator's path: exact batch sums of plain values
            metric.fold(metric.summarize(row.tolist()))
        else:  # forward, every other batch; a plain update otherwise
            metric(torch.from_numpy(row)) if i % 2 else metric.update(torch.from_numpy(row))


@pytest.mark.parametrize(("path", "updates"), [("update", 20000), ("fold", 20000), ("forward", 5000)])
def test_distribution_std_error_stays_at_one_update_over_many_updates(path, updates):
    """The compensated sums keep the documented one-update error 1e-16 (mean/std)^2 however many updates.

    8 values per update at mean 1e5, std 1 (bound 1e-6 relative): plain float64 running sums
    collected one rounding per update, 2.0e-5 after 20,000 updates (9.6e-6 after 5,000 with
    ``forward``). Reference: a two-pass ``math.fsum`` std of all the values.
    """
    rows = np.random.default_rng(0).normal(1e5, 1.0, (updates, 8))
    metric = Distribution()
    _feed_distribution(metric, rows, path)
    out = metric.compute()
    std, mean = _two_pass_std(rows.ravel())
    assert abs(out["std"].item() - std) <= 1e-16 * (mean / std) ** 2 * std
    assert abs(out["mean"].item() - mean) <= 1e-15 * mean


def test_distribution_merges_and_syncs_its_compensated_sums():
    """Merged metrics (as a DDP sync sums states) keep the one-update error: compensations are ``sum`` states."""
    rows = np.random.default_rng(1).normal(1e5, 1.0, (8000, 8))
    merged = Distribution()
    for part in np.array_split(rows, 4):
        single = Distribution()
        _feed_distribution(single, part, "fold")
        merged.merge_state(single)
    std, mean = _two_pass_std(rows.ravel())
    assert abs(merged.compute()["std"].item() - std) <= 1e-16 * (mean / std) ** 2 * std
    assert {"total_compensation", "total_sq_compensation"} <= set(merged._reductions)
    assert all(merged._reductions[n] is merged._reductions["total"] for n in Distribution._compensated_sums)


def test_distribution_checkpoint_written_before_the_compensations_loads_and_resumes():
    """An older checkpoint (no compensation, no ``scaled_sums`` states) loads with ``strict=True``: zero
    compensations and scaled sums, the sums resume."""
    rng = np.random.default_rng(2)
    first, second = rng.normal(1e3, 3.0, 500), rng.normal(1e3, 3.0, 700)
    source = Distribution()
    source.persistent(True)
    source.update(torch.tensor(first))
    state = source.state_dict()
    for name in (*Distribution._compensated_sums, "scaled_sums"):
        del state[name]
    restored = Distribution()
    restored.persistent(True)
    restored.load_state_dict(state)
    assert restored.total_compensation.item() == 0.0 and restored.total_sq_compensation.item() == 0.0
    assert restored.scaled_sums.shape == (4,) and not restored.scaled_sums.any()
    assert restored.scaled_sums_compensation.shape == (4,) and not restored.scaled_sums_compensation.any()
    restored.update(torch.tensor(second))
    both = np.concatenate([first, second])
    std, mean = _two_pass_std(both)
    out = restored.compute()
    assert abs(out["mean"].item() - mean) <= 1e-15 * mean
    assert abs(out["std"].item() - std) <= 1e-16 * (mean / std) ** 2 * std  # the documented bound
    assert set(Distribution._compensated_sums) <= set(restored.state_dict())  # saved from now on


def test_compensated_add_on_the_host_and_in_kernels_agree_bit_for_bit():
    """The CPU host path and the ``_foreach`` kernels (other devices) are the same float64 TwoSum."""
    from torchmetrics_ext.utilities.summation import _compensated_add_kernels, _compensated_add_on_host

    rng = np.random.default_rng(3)
    terms = rng.normal(0.0, 1.0, (300, 2)) * 10.0 ** rng.integers(-8, 9, (300, 2))
    states = [[torch.zeros((), dtype=torch.float64) for _ in range(4)] for _ in range(2)]
    for row in terms:
        for (s1, s2, e1, e2), as_tensor in zip(states, (False, True), strict=True):
            add = _compensated_add_kernels if as_tensor else _compensated_add_on_host
            add([s1, s2], [e1, e2], [torch.tensor(v, dtype=torch.float64) for v in row] if as_tensor else list(row))
    assert [t.item() for t in states[0]] == [t.item() for t in states[1]]
    exact = [math.fsum(terms[:, 0]), math.fsum(terms[:, 1])]
    got = [states[0][0].item() + states[0][2].item(), states[0][1].item() + states[0][3].item()]
    assert got == exact  # one rounding of the compensated sum: here the correctly rounded fsum


def test_compensated_add_of_small_vectors_on_the_host_and_in_kernels_agree_bit_for_bit():
    """Sums of a few elements (Distribution's ``scaled_sums``) take the host path on the CPU: the same TwoSum."""
    from torchmetrics_ext.utilities.summation import _compensated_add_kernels, _compensated_add_on_host

    rng = np.random.default_rng(4)
    terms = rng.normal(0.0, 1.0, (300, 4)) * 10.0 ** rng.integers(-8, 9, (300, 4))
    terms[::3] = 0.0  # zero terms (a batch of another band) change nothing
    states = [[torch.zeros(4, dtype=torch.float64) for _ in range(2)] for _ in range(2)]
    for row in terms:
        for (total, error), add in zip(states, (_compensated_add_on_host, _compensated_add_kernels), strict=True):
            add([total], [error], [torch.from_numpy(row.copy())])
    assert states[0][0].tolist() == states[1][0].tolist() and states[0][1].tolist() == states[1][1].tolist()
    got = (states[0][0] + states[0][1]).tolist()
    assert got == [math.fsum(terms[:, j]) for j in range(4)]  # one rounding: here the correctly rounded fsum


@pytest.mark.parametrize("path", ["host", "device_path"])
@pytest.mark.parametrize("numel", [1, 4])
def test_compensated_add_of_float32_sums_keeps_the_float32_rounding_error(numel, path):
    """Bug: the CPU host path added a float32 sum in Python float64 floats: the float64 sum was stored
    rounded to float32 and its float32 rounding error was lost (1e8 plus ten ones stayed 1e8, no
    compensation). Reference: the exact integer sum, 10**8 + 10.
    """
    from torchmetrics_ext.utilities.summation import compensated_add_

    total, error = torch.full((numel,), 1e8, dtype=torch.float32), torch.zeros(numel, dtype=torch.float32)
    total, error = (total[0], error[0]) if numel == 1 else (total, error)  # 0-dim: the scalar host path
    with force_device_path(path == "device_path"):
        for _ in range(10):
            compensated_add_([total], [error], [torch.ones_like(total, dtype=torch.float64)])
    assert total.dtype == error.dtype == torch.float32
    assert [int(t) + int(e) for t, e in zip(total.reshape(-1).tolist(), error.reshape(-1).tolist())] == [
        10**8 + 10
    ] * numel


@pytest.mark.parametrize("path", ["update", "device_path"])
def test_distribution_in_float32_takes_a_value_whose_square_overflows_float32(path):
    """Bug: after ``set_dtype(torch.float32)`` a finite float32 whose square overflows float32 raised
    RuntimeError from the host path's ``fill_`` after count and total had changed. It is added as on
    the device path: the sum of squares is inf, so ``std`` is nan with a warning. Reference: NumPy.
    """
    values = np.array([1.0, 2.0, 1e20], dtype=np.float32)
    metric = Distribution()
    metric.set_dtype(torch.float32)
    with force_device_path(path == "device_path"):
        metric.update(torch.from_numpy(values[:2]))
        metric.update(torch.from_numpy(values[2:]))
    assert metric.count.item() == 3
    with pytest.warns(UndefinedMetricWarning, match="sum of squares is not finite"):
        out = metric.compute()
    assert math.isnan(out["std"].item())
    np.testing.assert_allclose(out["mean"].item(), values.astype(np.float64).mean(), rtol=1e-6)
    assert out["max"].item() == float(values[2]) and out["min"].item() == 1.0


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.002])
def test_sketch_relative_accuracy_is_configurable(alpha):
    x = np.random.default_rng(1).lognormal(5.0, 2.0, 20000)
    stats = distribution(torch.tensor(x), percentiles=(10, 50, 90), relative_accuracy=alpha)
    for q in (10, 50, 90):
        e = np.percentile(x, q)
        assert abs(stats[f"p{q}"].item() - e) <= alpha * e
    assert SketchSpec(alpha).size == 2 * SketchSpec(alpha).buckets_per_sign + 1


def test_sketch_small_values_count_as_zero_and_large_values_clip_to_max():
    x = torch.tensor([1e-12, -1e-11, 0.0, 5e13, 1.0], dtype=torch.float64)
    stats = distribution(x, percentiles=(0, 25, 50, 75, 100))
    assert stats["p25"].item() == 0.0 and stats["p50"].item() == 0.0  # |x| < min_value -> 0
    assert stats["p100"].item() == 5e13 and stats["p00"].item() == -1e-11  # exact extremes


def test_sketch_is_mergeable():
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(3.0, 1.0, n) for n in (10, 500, 1)]
    merged = Distribution()
    for part in parts:
        single = Distribution()
        single.update(torch.tensor(part))
        merged.merge_state(single)
    whole = Distribution()
    whole.update(torch.tensor(np.concatenate(parts)))
    for key, value in whole.compute().items():
        torch.testing.assert_close(merged.compute()[key], value, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- categorical specifics


def test_categorical_strings_and_ints_are_distinct():
    metric = CategoricalCount()
    metric.update(["a", "1", 1, "a"])
    metric.update(("b",))
    metric.update(torch.tensor([1, 1, 5]))
    assert {k: v.item() for k, v in metric.compute().items()} == {
        "a": 2.0,
        "1": 1.0,
        1: 3.0,
        "b": 1.0,
        5: 1.0,
    }
    assert metric.categories == ["a", "1", 1, "b", 5]


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
def test_categorical_plot_over_steps_draws_every_category(reverse):
    """A category first seen after step 0 was dropped from the plot (or raised KeyError, the list reversed).

    One line per category of any step, 0 where a step had not seen it; 1 and "1" stay two lines.
    """
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [["a", "a", 1], ["b", "b", "b", "1"], ["a", "c"]]
    metric, values, seen = CategoricalCount(), [], []
    for batch in batches:
        metric.update(batch)
        values.append(metric.compute())
        seen += batch
    steps = [Counter(seen[: sum(map(len, batches[: i + 1]))]) for i in range(len(batches))]  # running counts
    if reverse:
        values, steps = values[::-1], steps[::-1]
    _, ax = metric.plot(values)
    drawn = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    categories = ["a", 1, "b", "1", "c"]  # first-seen order
    assert [line.get_label() for line in drawn] == [str(c) for c in categories]
    for line, category in zip(drawn, categories, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), [step[category] for step in steps])
    plt.close("all")


def test_categorical_enum_categories_are_their_plain_values():
    """(str, Enum) and IntEnum members count as the str/int they equal; keys are plain and survive a merge."""
    import enum

    class Source(str, enum.Enum):
        WEB = "web"

    class Shard(enum.IntEnum):
        ONE = 1

    metric = CategoricalCount()
    metric.update([Source.WEB, "web", Shard.ONE])
    metric.fold(metric.summarize([1, Source.WEB]))
    out = metric.compute()
    assert [(type(k), k) for k in out] == [(str, "web"), (int, 1)]
    assert {k: v.item() for k, v in out.items()} == dict(Counter(["web", "web", 1, 1, "web"]))
    other = CategoricalCount()
    other.update([Source.WEB])
    other.merge_state(metric)
    assert {k: v.item() for k, v in other.compute().items()} == {"web": 4.0, 1: 2.0}


def test_categorical_numpy_and_tensor_integers_are_their_int():
    """A list of np.int64 / 0-dim integer tensors (labels from a numpy or tensor column) counts the ints they equal."""
    metric = CategoricalCount()
    metric.update([np.int64(2), torch.tensor(2), 5])
    metric.fold(metric.summarize([np.int32(5), torch.tensor(2, dtype=torch.uint8)]))
    out = metric.compute()
    assert [(type(k), k) for k in out] == [(int, 2), (int, 5)]
    assert {k: v.item() for k, v in out.items()} == dict(Counter([2, 2, 5, 5, 2]))
    with pytest.raises(TypeError, match=r"str or int categories, got np.True_"):
        metric.update([1, np.True_])
    assert {k: v.item() for k, v in metric.compute().items()} == {2: 3.0, 5: 2.0}


@pytest.mark.parametrize("validate_args", [True, False])
def test_categorical_numpy_arrays_count_their_elements(validate_args):
    """A NumPy array of int or str labels (any shape) counts like the list of its elements."""
    ints, strs = np.array([[1, 2], [2, 7]]), np.array(["pos", "neg", "pos"])
    metric = CategoricalCount(validate_args=validate_args)
    metric.update(ints)
    metric.update(strs)
    expected = Counter([*ints.reshape(-1).tolist(), *strs.tolist()])  # {1: 1, 2: 2, 7: 1, "pos": 2, "neg": 1}
    out = metric.compute()
    assert [(type(k), k) for k in out] == [(type(k), k) for k in expected]
    assert {k: v.item() for k, v in out.items()} == dict(expected)
    if validate_args:
        with pytest.raises(TypeError, match=r"str or int categories, got 1.5 \(float\)"):
            metric.update(np.array([1.5]))
        assert {k: v.item() for k, v in metric.compute().items()} == dict(expected)


def test_categorical_forward_merges_new_categories():
    metric = CategoricalCount()
    assert {k: v.item() for k, v in metric(["x", "y"]).items()} == {"x": 1.0, "y": 1.0}
    assert {k: v.item() for k, v in metric(["z", "x"]).items()} == {"z": 1.0, "x": 1.0}
    assert {k: v.item() for k, v in metric.compute().items()} == {"x": 2.0, "y": 1.0, "z": 1.0}


def test_categorical_state_dict_pickle_and_merge_keep_names():
    metric = CategoricalCount()
    metric.persistent(True)
    metric.update(["éclair", "b", 3])
    state = metric.state_dict()
    other = CategoricalCount()
    other.persistent(True)
    other.load_state_dict(state)
    clone = pickle.loads(pickle.dumps(metric))
    for m in (other, clone):
        m.update(["b"])
        assert {k: v.item() for k, v in m.compute().items()} == {"éclair": 1.0, "b": 2.0, 3: 1.0}
    extra = CategoricalCount()
    extra.update(["new", "b"])
    metric.merge_state(extra)
    assert {k: v.item() for k, v in metric.compute().items()} == {"éclair": 1.0, "b": 2.0, 3: 1.0, "new": 1.0}


def test_categorical_syncs_through_the_dist_sync_fn_it_is_given():
    """``CategoricalCount(dist_sync_fn=..., distributed_available_fn=...)`` (TorchMetrics' way to sync over
    a backend other than ``torch.distributed``) gathered its categories with ``torch.distributed``'s
    ``all_gather_object`` anyway: "Default process group has not been initialized". Two threads play two
    ranks through the gather they are given; each computes the counts of both ranks' records."""
    records = [["éclair", "b", 3, "b"], ["b", "日本", -7]]
    barrier, slots = threading.Barrier(2), [None, None]

    def gather(rank):
        def exchange(tensor, group=None):
            slots[rank] = tensor.clone()
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out

        return exchange

    values, errors = [None, None], []

    def run(rank):
        try:
            metric = CategoricalCount(dist_sync_fn=gather(rank), distributed_available_fn=lambda: True)
            metric.update(records[rank])
            values[rank] = {k: v.item() for k, v in metric.compute().items()}
        except Exception as error:  # re-raised below, in the test's thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    expected = {k: float(v) for k, v in Counter(records[0] + records[1]).items()}
    for value in values:
        assert value == expected
        assert list(value) == ["éclair", "b", 3, "日本", -7]  # rank 0's categories first, then the new ones


class _LargestOtherTensor(TorchDispatchMode):
    """The most elements of any tensor an op reads or makes, other than the watched state ``skip``."""

    def __init__(self, skip: torch.Tensor) -> None:
        super().__init__()
        self.skip, self.largest = skip, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in [*pytree.tree_leaves((args, kwargs)), *pytree.tree_leaves(out)]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() != self.skip.untyped_storage().data_ptr():
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("as_tensor", [False, True])
def test_categorical_update_touches_only_the_batch_categories(as_tensor):
    """An update of known categories costs the batch's work, not the number of categories seen: no op reads
    or makes a tensor with one entry per category (a dense increment vector did: 0.5 ms per update at 10k)."""
    rng = np.random.default_rng(0)
    known = 5000
    metric = CategoricalCount()
    metric.update(torch.arange(known) if as_tensor else list(range(known)))
    # categories already known (a new one still extends the counts vector by a copy)
    batches = [rng.integers(0, known, size=int(rng.integers(1, 6))).tolist() for _ in range(30)]
    for batch in batches:
        with _LargestOtherTensor(metric.counts) as probe:
            metric.update(torch.tensor(batch) if as_tensor else batch)
        assert probe.largest <= 2 * len(batch), probe.largest  # not ~known
    metric.update(torch.tensor([known + 1, 3]) if as_tensor else [known + 1, 3])  # a new category too
    expected = Counter(range(known)) + Counter(v for b in [*batches, [known + 1, 3]] for v in b)
    assert {k: v.item() for k, v in metric.compute().items()} == {k: float(c) for k, c in expected.items()}
    assert metric.categories == list(expected)  # first-seen order


class _NewElements(TorchDispatchMode):
    """Elements of the tensors ATen ops make in new storage (views and in-place results not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.count += t.numel()
        return out


@pytest.mark.parametrize("as_tensor", [False, True])
def test_categorical_new_categories_cost_the_batch_not_the_categories_seen(as_tensor):
    """A stream of updates that each bring new categories (new ids) makes O(categories) elements in all, not
    O(categories) per update: each update's ``torch.cat`` of the three states copied every category seen so
    far (2,000 updates of 10 new ids: ~1.6e8 elements made, 0.5 ms per update at 300k categories and
    growing). The states grow into buffers with room (doubling); copies and checkpoints carry no room."""
    import copy
    import io

    metric, updates, per_update = CategoricalCount(), 2000, 10
    with _NewElements() as made:
        for step in range(updates):
            new = range(step * per_update, (step + 1) * per_update)
            metric.update(torch.tensor(new) if as_tensor else [f"id{i}" for i in new])
    total = updates * per_update
    assert made.count <= 60 * total, made.count  # was ~8 * total**2 / (2 * per_update) = 1.6e8
    metric.update(torch.tensor([3, total]) if as_tensor else ["id3", total])  # a known and a new category
    expected = {(i if as_tensor else f"id{i}"): 1.0 for i in range(total)}
    expected[3 if as_tensor else "id3"] = 2.0
    expected[total] = 1.0
    assert _counts(metric.compute()) == expected
    assert metric.categories == list(expected)  # first-seen order
    # the room is no part of what is saved or copied: every saved state's storage is its own size
    metric.persistent(True)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    for state in (metric.state_dict(), torch.load(buffer)):
        for name, value in state.items():
            assert value.untyped_storage().nbytes() == value.numel() * value.element_size(), name
    for other in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        for name in ("counts", "category_bytes", "category_ends"):
            value = getattr(other, name)
            assert value.untyped_storage().nbytes() == value.numel() * value.element_size(), name
        other.update(["late"])
        assert _counts(other.compute()) == {**expected, "late": 1.0}
    assert _counts(metric.compute()) == expected  # the copies' updates did not write into this one's buffers


@pytest.mark.parametrize("compute_groups", [True, False])
def test_categorical_in_collection(compute_groups):
    """Compute groups share the category list with the counts (both are states), so values stay right."""
    collection = MetricCollection({"a": CategoricalCount(), "b": CategoricalCount()}, compute_groups=compute_groups)
    collection.update(["x", "y", "x"])
    collection.update(["z"])  # a category unseen at the first update, after groups were formed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = collection.compute()
    for prefix in ("a", "b"):
        assert {k: v.item() for k, v in values.items() if k.startswith(prefix + "_")} == {
            f"{prefix}_x": 2.0,
            f"{prefix}_y": 1.0,
            f"{prefix}_z": 1.0,
        }


_BIG = 2.0**24 + 1  # float32 rounds it to 2**24: a float32 sum of it loses 1 per term


@pytest.mark.parametrize("ours_first", [True, False])
@pytest.mark.parametrize(
    ("ours", "theirs", "reference"),
    [
        (Sum, "SumMetric", lambda rows: math.fsum(v for row in rows for v in row)),
        (Mean, "MeanMetric", lambda rows: float(sum(Fraction(v) for row in rows for v in row) / sum(map(len, rows)))),
        (Max, "MaxMetric", lambda rows: max(v for row in rows for v in row)),
        (Min, "MinMetric", lambda rows: min(v for row in rows for v in row)),
    ],
)
def test_aggregators_never_join_torchmetrics_own_in_a_compute_group(ours, theirs, reference, ours_first):
    """Sum/Mean/Max/Min kept TorchMetrics' state names, so MetricCollection grouped them with TorchMetrics'
    float32 SumMetric/...: sorted second, Sum reported 100663296 for 6 x (2**24 + 1) = 100663302."""
    import torchmetrics.aggregation as tm_aggregation

    members = {"a": ours(), "b": getattr(tm_aggregation, theirs)()}
    if not ours_first:
        members = {"a": members["b"], "b": members["a"]}
    collection = MetricCollection(members, compute_groups=True)
    rows = [[_BIG] * 3, [_BIG, _BIG + 2, _BIG - 4]]
    for row in rows:
        collection.update(torch.tensor(row, dtype=torch.float64))
    assert sorted(map(sorted, collection.compute_groups.values())) == [["a"], ["b"]]
    value = collection.compute()["a" if ours_first else "b"]
    assert value.dtype == torch.float64 and value.item() == reference(rows)


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
def test_nan_settings_keep_compute_groups_apart_and_equal_settings_together(cls):
    """Settings that take NaN or inf otherwise agree on a batch without them; grouped, every member reported the
    first member's states (Sum(nan_strategy=5.0) behind Sum(nan_strategy="ignore") gave 1 for [1], [nan], not 6).
    Members of one setting (and "warn"/"ignore" each with itself) still share one group."""
    settings = {
        "ignore": {"nan_strategy": "ignore"},
        "ignore2": {"nan_strategy": "ignore"},
        "fill": {"nan_strategy": 5.0},
        "keep": {"nan_strategy": "disable"},
        "unchecked": {"nan_strategy": "ignore", "validate_args": False},
        "unchecked2": {"nan_strategy": "warn", "validate_args": False},  # drops NaN without a word too
    }
    collection = MetricCollection({name: cls(**kw) for name, kw in settings.items()}, compute_groups=True)
    rows = [[1.0, 2.0], [math.nan, 3.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in rows:
            collection.update(torch.tensor(row, dtype=torch.float64))
        values = collection.compute()
    groups = sorted(map(sorted, collection.compute_groups.values()))
    assert groups == [["fill"], ["ignore", "ignore2"], ["keep"], ["unchecked", "unchecked2"]]
    reduce = {
        Sum: math.fsum,
        Mean: lambda v: float(sum(map(Fraction, v)) / len(v)),
        Max: max,
        Min: min,
    }[cls]
    dropped, filled = [1.0, 2.0, 3.0], [1.0, 2.0, 5.0, 3.0]
    for name, expected in (("ignore", dropped), ("unchecked", dropped), ("fill", filled)):
        assert values[name].item() == reduce(expected), name
    assert math.isnan(values["keep"].item())


def test_a_member_that_refuses_nan_is_not_grouped_behind_one_that_keeps_it():
    """Sum() behind Sum(validate_args=False) (or nan_strategy="disable") took the NaN it refuses alone."""
    collection = MetricCollection({"a": Sum(validate_args=False), "b": Sum()}, compute_groups=True)
    collection.update(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="`value` to hold finite numbers"):
        collection.update(torch.tensor([math.nan]))
    assert len(collection.compute_groups) == 2
    assert collection["b"].compute().item() == 3.0


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
def test_checkpoints_and_merges_ignore_the_nan_setting_in_state_names(cls):
    """The states carry their NaN setting in memory only: state_dict keeps TorchMetrics' names, and any setting's
    checkpoint, metric or dict of TorchMetrics' states loads and merges into any other's."""
    import torchmetrics.aggregation as tm_aggregation

    theirs = getattr(tm_aggregation, f"{cls.__name__}Metric")()
    source = cls(nan_strategy="ignore")
    source.persistent(True)
    source.update(torch.tensor([1.0, 4.0]))
    assert set(source.state_dict()) == set(theirs._defaults)
    target = cls()
    target.persistent(True)
    target.load_state_dict(source.state_dict())
    target.merge_state(source)
    target.merge_state({name: getattr(theirs, name) for name in theirs._defaults})  # an empty one: changes nothing
    target.update(torch.tensor([2.0]))
    seen = [1.0, 4.0, 1.0, 4.0, 2.0]  # loaded, merged, updated
    expected = {Sum: math.fsum(seen), Mean: math.fsum(seen) / len(seen), Max: max(seen), Min: min(seen)}[cls]
    assert target.compute().item() == expected


@pytest.mark.parametrize(
    ("cls", "names"),
    [(Sum, ("sum_value",)), (Mean, ("mean_value", "weight")), (Max, ("max_value",)), (Min, ("min_value",))],
)
def test_states_read_under_torchmetrics_names(cls, names):
    """The states are renamed in memory, yet read as on TorchMetrics' aggregators (``Sum().sum_value``)."""
    import torchmetrics.aggregation as tm_aggregation

    theirs = getattr(tm_aggregation, f"{cls.__name__}Metric")()
    ours = cls(nan_strategy="ignore")
    for metric in (ours, theirs):
        metric.update(torch.tensor([1.0, 4.0]))
    for name in names:
        assert getattr(ours, name).item() == getattr(theirs, name).item()
    with pytest.raises(AttributeError, match="no_such_state"):
        ours.no_such_state  # noqa: B018


def _counts(value):
    """A ``{category: 0-dim tensor}`` value as ``{category: float}`` (to compare with a Counter)."""
    return {k: v.item() for k, v in value.items()}


_POOLS = {
    "str": [f"c{i}" for i in range(30)],
    "int": list(range(-5, 25)),
    "mixed": ["1", 1, "a", 2, "2", "é", 0, ""],
}


@pytest.mark.parametrize("kind", ["str", "int", "mixed", "int tensor"])
def test_categorical_forward_returns_the_batch_counts_and_accumulates(kind):
    """``forward`` returns the batch's own counts (a ``Counter`` of the batch) and adds the batch to the states:
    ``compute`` after a mix of ``forward`` and ``update`` is the ``Counter`` of everything seen."""
    rng = np.random.default_rng(3)
    pool = _POOLS["int" if kind == "int tensor" else kind]
    metric, seen = CategoricalCount(), Counter()
    for step in range(14):
        batch = [pool[i] for i in rng.integers(0, len(pool), size=int(rng.integers(0, 9)))]
        arg = torch.tensor(batch, dtype=torch.long) if kind == "int tensor" else batch
        if step % 4 == 0:
            metric.compute()  # a cached value is dropped by the next forward or update
        if step % 3 == 2:
            metric.update(arg)
        else:
            value = metric(arg)
            assert _counts(value) == {k: float(c) for k, c in Counter(batch).items()}
            assert all(v.dtype == torch.float64 and v.ndim == 0 for v in value.values())
        seen.update(batch)
        assert metric.update_count == step + 1
        assert _counts(metric.compute()) == {k: float(c) for k, c in seen.items()}
    if kind != "int tensor":  # a tensor batch's categories come in sorted order
        assert metric.categories == list(seen)  # first-seen order


def test_categorical_forward_in_a_collection_and_rejected_batches():
    """Through ``MetricCollection.forward`` (what Lightning's ``self.log`` calls) the values are the batch's; a
    rejected batch changes no state and is not counted."""
    collection = MetricCollection({"a": CategoricalCount(), "b": CategoricalCount()})
    batches = [["x", "y", "x"], ["z"], [3, "3", 3]]
    for batch in batches:
        value = collection(batch)
        for prefix in ("a", "b"):
            assert {k: v.item() for k, v in value.items() if k.startswith(prefix + "_")} == {
                f"{prefix}_{k}": float(c) for k, c in Counter(batch).items()
            }
    total = Counter(v for batch in batches for v in batch)
    assert _counts(collection["a"].compute()) == {k: float(c) for k, c in total.items()}
    metric = collection["a"]
    before = H._state_snapshot(metric)
    for bad in (["x", 2.5], torch.tensor([1.5]), "xyz", None):
        with pytest.raises(TypeError):
            metric(bad)
    H.assert_same_state(metric, before)
    assert metric.update_count == len(batches)
    assert _counts(metric.compute()) == {k: float(c) for k, c in total.items()}


@pytest.mark.parametrize("method", ["update", "forward"])
def test_categorical_new_categories_under_inference_mode_stay_ordinary_states(method):
    """A new category seen under ``torch.inference_mode()`` (a Lightning validation step) grew the counts into an
    inference tensor: the next update outside it failed ("Inplace update to inference tensor")."""
    metric, batches = CategoricalCount(), [["a"], ["b", "a"], ["c"]]
    metric.update(["x"])
    with torch.inference_mode():
        for batch in batches[:2]:
            if method == "update":
                metric.update(batch)
            else:
                metric(batch)
    assert not any(state.is_inference() for state in metric.metric_state.values())
    metric.update(batches[2])
    metric(["a"])
    expected = Counter(["x", *(v for batch in batches for v in batch), "a"])
    assert _counts(metric.compute()) == {k: float(c) for k, c in expected.items()}


@pytest.mark.parametrize("new", [False, True], ids=["known", "new category"])
def test_categorical_forward_cost_does_not_grow_with_the_categories_seen(new):
    """``forward`` of a small batch runs as many ATen operations and Python calls after 2,000 categories as after
    200: its cost is the batch's. TorchMetrics' ``forward`` copied, reset and merged every state, one
    ``detach`` and two ``clone`` per category seen (419 operations at 200 categories, 4,019 at 2,000; 0.7 s
    per call at 100k). The budgets are counts, not times."""
    import gc
    import sys

    def cost(known: int) -> tuple[int, int]:
        metric = CategoricalCount()
        metric.update([f"c{i}" for i in range(known)])
        metric(["c1", "c1", "new" if new else "c2"])
        with H.AtenOps() as ops:
            metric(["c3", "c3", "newer" if new else "c4"])
        calls: list[str] = []
        gc.collect()  # no garbage collection inside the count (its callbacks would count as calls)
        gc.disable()
        sys.setprofile(lambda frame, event, arg: calls.append(frame.f_code.co_name) if event == "call" else None)
        try:
            value = metric(["c5", "newest" if new else "c6"])
        finally:
            sys.setprofile(None)
            gc.enable()
        assert _counts(value) == {"c5": 1.0, ("newest" if new else "c6"): 1.0}
        return ops.count, len(calls)

    cost(200)  # one-time work (caches of the first call in the process)
    small, large = cost(200), cost(2000)
    assert small == large, (small, large)
    assert small[0] <= 25 and small[1] <= 250, small


def test_categorical_state_dict_is_three_tensors_whatever_the_categories():
    """The keys are one flat ``uint8`` tensor and each key's int64 end in it, in the documented encoding
    (``b"s"`` + UTF-8, ``b"i"`` + digits), not one tensor per category (``state_dict``, ``deepcopy`` and
    ``pickle`` took seconds at 100k categories); copies and checkpoints keep the counts."""
    import copy

    categories = ["é", 12, "12", "", -3]
    metric = CategoricalCount()
    metric.persistent(True)
    metric.update([*categories, "é", 12])
    state = metric.state_dict()
    assert sorted(state) == ["category_bytes", "category_ends", "counts"]
    keys = [b"s\xc3\xa9", b"i12", b"s12", b"s", b"i-3"]
    assert bytes(state["category_bytes"].tolist()) == b"".join(keys)
    assert state["category_ends"].tolist() == np.cumsum([len(k) for k in keys]).tolist()
    assert state["category_bytes"].dtype == torch.uint8 and state["category_ends"].dtype == torch.int64
    expected = {k: float(c) for k, c in Counter([*categories, "é", 12, "é", "new"]).items()}
    loaded = CategoricalCount()
    loaded.load_state_dict(state)
    for other in (loaded, copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        other.update(["é", "new"])
        assert _counts(other.compute()) == expected
        assert other.categories == [*categories, "new"]


@pytest.mark.parametrize("strict", [True, False])
def test_categorical_loads_checkpoints_of_one_tensor_per_category(strict):
    """A checkpoint of an earlier version (``category_keys``: a list of one ``uint8`` tensor per category,
    written here by hand) still loads, strictly too, and resumes its counts."""

    def key(raw: bytes) -> torch.Tensor:
        return torch.tensor(list(raw), dtype=torch.uint8)

    old = {
        "counts": torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64),
        "category_keys": [key(b"sweb"), key(b"i7"), key(b"s7")],
    }
    metric = CategoricalCount()
    metric.persistent(True)
    result = metric.load_state_dict(old, strict=strict)
    assert not result.missing_keys and not result.unexpected_keys
    metric.update(["web", 7, "new"])
    assert _counts(metric.compute()) == {"web": 3.0, 7: 2.0, "7": 3.0, "new": 1.0}
    empty = CategoricalCount()
    empty.load_state_dict({"counts": torch.zeros(0, dtype=torch.float64), "category_keys": []}, strict=strict)
    assert empty.compute() == {}


def test_categorical_compute_makes_its_dict_without_a_step_per_category():
    """``compute`` runs as many ATen operations and Python calls at 2,000 categories as at 200: TorchMetrics'
    compute wrapper squeezed and cloned each 0-dim value of the dict (two operations per category, ~1 s at
    100k). The value is still ``{category: 0-dim float64 count}``, equal to a Counter, each count a tensor
    of its own (not a view of one vector: ``pickle`` writes a view's whole storage) that later updates leave
    alone. The budgets are counts, not times."""
    import gc
    import sys

    def cost(known: int) -> tuple[int, int]:
        seen = [f"c{i}" for i in range(known)] + [7, "7", 7]
        metric = CategoricalCount()
        metric.update(seen)
        metric.compute()
        metric.update(["c1", 7])
        seen += ["c1", 7]
        with H.AtenOps() as ops:
            value = metric.compute()
        assert _counts(value) == {k: float(c) for k, c in Counter(seen).items()}
        assert list(value) == list(Counter(seen))  # first-seen order
        for count in value.values():
            assert count.dtype == torch.float64 and count.shape == ()
            assert count.untyped_storage().nbytes() == count.element_size()  # its own storage
        assert metric.compute() is value  # the cached value, as TorchMetrics returns it
        metric.update(["c1"])
        assert value["c1"].item() == 2.0  # not changed by the update
        assert metric.compute()["c1"].item() == 3.0
        metric.update(["c1"])
        calls: list[str] = []
        # no garbage collection inside the count: a collection (due after however many allocations came
        # before) runs weakref callbacks and finalizers of unrelated objects, counted as calls of compute
        gc.collect()
        gc.disable()
        sys.setprofile(lambda frame, event, arg: calls.append(frame.f_code.co_name) if event == "call" else None)
        try:
            metric.compute()
        finally:
            sys.setprofile(None)
            gc.enable()
        return ops.count, len(calls)

    cost(200)  # one-time work (caches of the first call in the process)
    small, large = cost(200), cost(2000)
    assert small == large, (small, large)
    assert CategoricalCount().compute() == {}


def test_categorical_copies_after_compute_do_not_carry_the_value():
    """``pickle``/``deepcopy``/``clone`` right after ``compute`` do not carry the cached dict (one tensor per
    category: 2-7 s at 100k categories): the pickle is as small as before ``compute``, and a copy computes
    its value again from its states, equal to a Counter, before and after more updates."""
    import copy

    seen = [f"c{i % 1500}" for i in range(4000)] + [3, "3", "é"]
    metric = CategoricalCount()
    metric.update(seen)
    before = len(pickle.dumps(metric))
    value = metric.compute()
    assert len(pickle.dumps(metric)) < before + 500  # a dict of 1,503 tensors is hundreds of kB
    expected = Counter(seen)
    for other in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric)), metric.clone()):
        assert other._computed is None
        assert _counts(other.compute()) == {k: float(c) for k, c in expected.items()}
        other.update(["c1", "new", 3])
        assert _counts(other.compute()) == {k: float(c) for k, c in (expected + Counter(["c1", "new", 3])).items()}
    assert metric.compute() is value  # the original keeps its cached value
    assert _counts(value) == {k: float(c) for k, c in expected.items()}


def _former_pickle(keys: list[bytes], counts: list[float]) -> bytes:
    """A pickle of a CategoricalCount of the earlier layout: the list state ``category_keys`` (one ``uint8``
    tensor per category) in place of ``category_bytes``/``category_ends``, its attributes written by hand."""
    import copyreg

    state = CategoricalCount().__getstate__()
    for table in ("_defaults", "_reductions", "_persistent"):
        state[table] = {k: v for k, v in state[table].items() if k not in ("category_bytes", "category_ends")}
    del state["category_bytes"], state["category_ends"]
    state["_defaults"]["category_keys"], state["_reductions"]["category_keys"] = [], None
    state["_persistent"]["category_keys"] = False
    state["category_keys"] = [torch.tensor(list(key), dtype=torch.uint8) for key in keys]
    state["counts"] = torch.tensor(counts, dtype=torch.float64)
    state["_lookup"], state["_lookup_of"], state["_update_count"] = {}, (None, -1), 1

    class Former:
        def __reduce__(self):
            return copyreg._reconstructor, (CategoricalCount, object, None), state

    return pickle.dumps(Former())


def test_categorical_unpickles_pickles_of_one_tensor_per_category():
    """A pickle of an earlier version (``category_keys``, one tensor per category; built here by hand) loads
    into a working metric of the current layout: its counts, then more updates, a copy, a state_dict, a reset."""
    import copy

    metric = pickle.loads(_former_pickle([b"sweb", b"i7", b"s7"], [2.0, 1.0, 3.0]))
    assert metric.categories == ["web", 7, "7"]
    assert _counts(metric.compute()) == {"web": 2.0, 7: 1.0, "7": 3.0}
    metric.update(["web", 7, "new"])
    expected = Counter({"web": 2, 7: 1, "7": 3}) + Counter(["web", 7, "new"])
    assert _counts(metric.compute()) == {k: float(c) for k, c in expected.items()}
    assert _counts(copy.deepcopy(metric).compute()) == {k: float(c) for k, c in expected.items()}
    metric.persistent(True)
    assert sorted(metric.state_dict()) == ["category_bytes", "category_ends", "counts"]
    metric.reset()
    assert metric.compute() == {} and metric.category_bytes.dtype == torch.uint8
    empty = pickle.loads(_former_pickle([], []))
    empty.update([1, 1])
    assert _counts(empty.compute()) == {1: 2.0}


def test_categorical_unvalidated_names_its_states_apart_in_memory_only():
    """``CategoricalCount(validate_args=False)`` holds its states as ``<name>_unchecked`` (a compute group never
    joins it to a validated one, whose float tensors it took in its place), read and written as ``counts``,
    ``category_bytes`` and ``category_ends`` and saved, merged and loaded under those names in either direction."""
    seen = ["web", 7, "7", "web", "é"]
    unchecked, checked = CategoricalCount(validate_args=False), CategoricalCount()
    assert sorted(unchecked._defaults) == ["category_bytes_unchecked", "category_ends_unchecked", "counts_unchecked"]
    unchecked.update(seen)
    assert unchecked.counts is unchecked.__dict__["counts_unchecked"]
    assert unchecked.counts.tolist() == [2.0, 1.0, 1.0, 1.0] and unchecked.categories == ["web", 7, "7", "é"]
    assert [bytes(key.tolist()) for key in unchecked.category_keys] == [b"sweb", b"i7", b"s7", "sé".encode()]
    assert list(unchecked.metric_state) == list(checked.metric_state) == ["counts", "category_bytes", "category_ends"]
    for metric in (unchecked, checked):
        metric.persistent(True)
    assert list(unchecked.state_dict()) == list(checked.state_dict())
    checked.load_state_dict(unchecked.state_dict())
    again = CategoricalCount(validate_args=False)
    again.load_state_dict(checked.state_dict())
    expected = Counter(seen)
    for metric in (checked, again):
        assert _counts(metric.compute()) == {k: float(c) for k, c in expected.items()}
    checked.merge_state(again)  # both directions, a metric and a dict of its states
    again.merge_state(unchecked.metric_state)
    again.merge_state(checked)
    assert _counts(again.compute()) == {k: float(c) for k, c in (expected + expected + expected + expected).items()}
    unchecked.counts = torch.tensor([5.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # the state, not a shadowing attribute
    assert _counts(unchecked.compute()) == {"web": 5.0, 7: 0.0, "7": 0.0, "é": 1.0}


def _pickled_before_the_rename(metric: CategoricalCount) -> CategoricalCount:
    """``metric`` (unvalidated) as a pickle of a version that named its states alike for either setting unpickles."""
    state = metric.__getstate__()
    state.pop("_key_names")
    for ours, theirs in list(state["_saved_state_names"].items()):
        state[theirs] = state.pop(ours)
        for table in ("_defaults", "_reductions", "_persistent"):
            state[table] = {theirs if k == ours else k: v for k, v in state[table].items()}
    state["_saved_state_names"], state["_former_patterns"] = {}, []
    state["_lookup"], state["_lookup_of"] = {}, (None, None, -1)
    old = CategoricalCount.__new__(CategoricalCount)
    old.__setstate__(state)
    return pickle.loads(pickle.dumps(old))


def test_categorical_unvalidated_loads_checkpoints_and_pickles_of_earlier_versions():
    """An unvalidated metric loads a checkpoint of one tensor per category (``category_keys``) strictly, and a
    pickle of a version that held its states under the plain names works on: updates, copies, merges both ways."""
    import copy

    def key(raw: bytes) -> torch.Tensor:
        return torch.tensor(list(raw), dtype=torch.uint8)

    old = {"counts": torch.tensor([2.0, 1.0], dtype=torch.float64), "category_keys": [key(b"sweb"), key(b"i7")]}
    metric = CategoricalCount(validate_args=False)
    metric.persistent(True)
    result = metric.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    metric.update(["web", "new"])
    assert _counts(metric.compute()) == {"web": 3.0, 7: 1.0, "new": 1.0}

    before = CategoricalCount(validate_args=False)
    before.update(["a", 3, "a"])
    pickled = _pickled_before_the_rename(before)
    assert sorted(pickled._defaults) == ["category_bytes", "category_ends", "counts"]
    pickled.update(["b", 3])
    expected = Counter(["a", 3, "a", "b", 3])
    assert _counts(copy.deepcopy(pickled).compute()) == {k: float(c) for k, c in expected.items()}
    for into in (CategoricalCount(), CategoricalCount(validate_args=False)):
        into.merge_state(pickled)
        pickled_copy = pickle.loads(pickle.dumps(pickled))
        pickled_copy.merge_state(into)
        assert _counts(pickled_copy.compute()) == {k: float(2 * c) for k, c in expected.items()}


def test_categorical_refuses_keys_that_do_not_match_the_counts():
    """Counts and keys of other lengths (a hand-made or damaged checkpoint) are refused, nothing loaded."""
    metric = CategoricalCount()
    metric.update(["a"])
    bad = {
        "counts": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "category_bytes": torch.tensor(list(b"sasb"), dtype=torch.uint8),
        "category_ends": torch.tensor([2], dtype=torch.long),
    }
    with pytest.raises(RuntimeError, match="do not describe the same categories"):
        metric.load_state_dict(bad)
    with pytest.raises(ValueError, match="do not describe the same categories"):
        metric.merge_state(bad)
    assert _counts(metric.compute()) == {"a": 1.0}


def _ddp_categorical_forward(rank, world_size):
    metric = CategoricalCount(dist_sync_on_step=True)
    batches = [["a", "b", "a"], [rank, "r"]] if rank == 0 else [["b", "c"], [rank, "1"]]
    values = [{k: v.item() for k, v in metric(batch).items()} for batch in batches]
    total = {k: v.item() for k, v in metric.compute().items()}
    return values, total


@pytest.mark.ddp
def test_ddp_categorical_forward_with_dist_sync_on_step(ddp_pool):
    """``dist_sync_on_step``: ``forward`` returns the batch's counts over every rank's batch; the states keep
    this rank's own, and ``compute`` syncs all of them (references: ``Counter``)."""
    results = ddp_pool.run(_ddp_categorical_forward)
    batches = {0: [["a", "b", "a"], [0, "r"]], 1: [["b", "c"], [1, "1"]]}
    everything = Counter(v for rank in batches.values() for batch in rank for v in batch)
    for values, total in results:
        for step, value in enumerate(values):
            assert value == {k: float(c) for k, c in Counter(batches[0][step] + batches[1][step]).items()}
        assert total == {k: float(c) for k, c in everything.items()}


def test_collection_with_compute_groups_keeps_different_streams_apart():
    """Metrics fed different data never share states, even if they look alike after one update."""
    a, b = Distribution(), Distribution()
    collection = MetricCollection({"a": a, "b": b}, compute_groups=False)
    collection["a"].update(torch.tensor([1.0, 2.0]))
    collection["b"].update(torch.tensor([1.0, 2.0]))
    collection["a"].update(torch.tensor([100.0]))
    values = collection.compute()
    assert values["a_max"].item() == 100.0 and values["b_max"].item() == 2.0


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
def test_float64_survives_to_device(cls):
    """TorchMetrics sets ``dtype`` back to float32 on ``.to(device)``; ours keep accumulating in float64."""
    metric = cls().to("cpu")
    assert metric.dtype == torch.float64
    x = 1.0 + 2.0**-40
    metric.update(torch.tensor([x], dtype=torch.float64))
    assert metric.compute().item() == x


@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("how", ["set_dtype", "to"])
def test_categorical_keys_survive_a_dtype_cast(how, cast):
    """The encoded category keys are integer states: a cast moves the counts' dtype, never the keys'."""
    metric = CategoricalCount()
    metric.update(["code", 5001, 5002, "code"])
    metric = metric.set_dtype(cast) if how == "set_dtype" else metric.to(cast)
    assert all(key.dtype == torch.uint8 for key in metric.category_keys)
    metric.update(["math", 5001])
    metric.update(torch.tensor([5002, 7]))
    counts = {k: v.item() for k, v in metric.compute().items()}
    assert counts == dict(Counter(["code", 5001, 5002, "code", "math", 5001, 5002, 7]))


def test_distributions_of_other_sketch_ranges_never_mix():
    """Two sketches with as many buckets but other ranges: merges, checkpoints and compute groups refuse to mix them."""
    from torchmetrics import MetricCollection

    from torchmetrics_ext.aggregation import Distribution

    x = torch.tensor([1.0, 2.0, 3.0, 100.0, 1000.0])
    a, b = Distribution(min_value=1e-9, max_value=1e12), Distribution(min_value=1e-8, max_value=1e13)
    assert a.spec.size == b.spec.size  # the same shape: only the settings tell them apart
    a.update(x)
    b.update(x)
    with pytest.raises(ValueError):
        a.merge_state(b)
    source = Distribution()
    source.persistent(True)
    source.update(x)
    target = Distribution(min_value=1e-8, max_value=1e13)
    target.persistent(True)
    with pytest.raises(RuntimeError):
        target.load_state_dict(source.state_dict())
    collection = MetricCollection({"a": Distribution(), "b": Distribution(min_value=1e-8, max_value=1e13)})
    collection.update(torch.tensor([0.0]))
    collection.update(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    values = collection.compute()
    assert values["b_p50"].item() == pytest.approx(np.percentile([0.0, 1.0, 2.0, 3.0, 4.0], 50), rel=0.011)


def _ddp_offset_distribution(rank, world_size, name, empty_rank):
    x = OFFSET_DATA[name]
    share = (x[: x.size // 3], x[x.size // 3 :])[rank]  # the ranks' first values (their shifts) differ
    metric = Distribution()
    if rank != empty_rank:
        for chunk in np.array_split(share, 3):
            metric.update(torch.from_numpy(chunk))
    out = {k: v.item() for k, v in metric.compute().items()}
    other = Distribution(sync_on_compute=False)  # the synced states merged into a fresh metric
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty rank's local compute
        metric.sync()
        other.merge_state(metric)
        metric.unsync()
    return out, {k: v.item() for k, v in other.compute().items()}


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [None, 0, 1])
@pytest.mark.parametrize("name", ["1e9+spread1", "-3e12+spread1", "1e300+spread1e299"])
def test_ddp_distribution_of_values_with_a_large_offset(ddp_pool, name, empty_rank):
    """Two gloo ranks whose sums are taken about different shifts (their first values), or a rank without
    values: the sync re-shifts every rank's sums to one shift before adding them, so the std is that of all
    the values (a plain sum of sums about different shifts would be meaningless). Reference: exact fractions."""
    results = ddp_pool.run(_ddp_offset_distribution, name, empty_rank)
    x = OFFSET_DATA[name]
    shares = (x[: x.size // 3], x[x.size // 3 :])
    data = x if empty_rank is None else shares[1 - empty_rank]
    mean, std = _exact_mean_std(data)
    assert results[0][0] == results[1][0]
    for out in (results[0][0], results[0][1]):
        np.testing.assert_allclose(out["mean"], mean, rtol=1e-15, atol=2.0**-51 * np.abs(data - data[0]).mean())
        np.testing.assert_allclose(out["std"], std, rtol=1e-13)
        assert out["min"] == data.min() and out["max"] == data.max()


# ----------------------------------------------------------------------------- the aggregator's logged values


@pytest.mark.parametrize(
    "values",
    [
        [],
        [2.5],
        [1.0, 3.0, 3.0],
        [1e308, 1e308],
        [1e7 + i for i in range(10)],
        [-5e-200, -4e-200, -1e-201],
        [1e300, -1e-300],
    ],
    ids=["empty", "one", "plain", "overflowing-sum", "offset", "tiny-negative", "mixed-bands"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logged_values_are_the_numbers_of_compute_bit_for_bit(values, dtype):
    """``MetricsAggregator`` logs ``_logged_value`` (host floats, no tensor per value): for every state, empty
    and undefined ones included, and states cast with ``set_dtype``, these are ``compute``'s numbers exactly."""
    metrics = [Mean(), Max(), Min(), Sum(), Distribution(percentiles=(0, 5, 50, 99.9, 100))]
    for metric in metrics:
        if values:
            metric.update(torch.tensor(values, dtype=torch.float64))
        if dtype != torch.float64:
            metric.set_dtype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            expected, logged = metric.compute(), metric._logged_value()
        if isinstance(expected, dict):
            assert list(logged) == list(expected)
            assert all(type(v) is float for v in logged.values())
            pairs = [(logged[k], expected[k].item()) for k in expected]
        else:
            pairs = [(float(logged), expected.item())]
        for got, want in pairs:
            assert (math.isnan(got) and math.isnan(want)) or (
                got == want and math.copysign(1, got) == math.copysign(1, want)
            )


def test_logged_distribution_mean_is_the_correctly_rounded_mean_of_integer_values_with_an_offset():
    """Integer values (each x - shift exact, so the sums are exact): the mean is the exact mean rounded once,
    computed here with fractions (the division that replaced a Fraction sum in logging)."""
    rng = np.random.default_rng(3)
    for offset in (0.0, 1e7, -3e12, 2.0**52):
        values = (offset + rng.integers(-1000, 1000, size=333)).tolist()
        metric = Distribution()
        metric.fold(metric.summarize(values[:100]))
        metric.fold(metric.summarize(values[100:]))
        exact = float(sum(map(Fraction, values)) / len(values))
        assert metric._logged_value()["mean"] == exact
        assert metric.compute()["mean"].item() == exact


# ----------------------------------------------------------------------------- TorchMetrics checkpoints


@pytest.mark.parametrize(
    ("ours", "theirs", "reference"),
    [
        (Sum, "SumMetric", lambda v, w: float(np.sum(v))),
        (Mean, "MeanMetric", lambda v, w: float(np.sum(v * w) / np.sum(w))),
        (Max, "MaxMetric", lambda v, w: float(np.max(v))),
        (Min, "MinMetric", lambda v, w: float(np.min(v))),
    ],
)
def test_torchmetrics_aggregator_checkpoints_load_both_ways(ours, theirs, reference) -> None:
    """docs/aggregation.md: a TorchMetrics aggregator's state_dict loads into ours and ours into theirs."""
    import torchmetrics.aggregation as tm_aggregation

    rng = np.random.default_rng(3)
    first, second = rng.normal(0, 10, size=50), rng.normal(0, 10, size=30)
    w1, w2 = rng.uniform(0.5, 2.0, size=50), rng.uniform(0.5, 2.0, size=30)

    def feed(metric, values, weights):
        args = (torch.tensor(values),) + ((torch.tensor(weights),) if ours is Mean else ())
        metric.update(*args)

    weights = np.concatenate([w1, w2]) if ours is Mean else np.ones(80)
    expected = reference(np.concatenate([first, second]), weights)
    for source, target in ((getattr(tm_aggregation, theirs)(), ours()), (ours(), getattr(tm_aggregation, theirs)())):
        source.persistent(True)
        target.persistent(True)
        feed(source, first.astype(np.float32) if not isinstance(source, ours) else first, w1)
        target.load_state_dict(source.state_dict())
        feed(target, second, w2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchMetrics' "compute before update" on a loaded metric of theirs
            value = float(target.compute())
        # the first half went through a float32 metric on one of the two legs
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        if isinstance(target, ours):
            assert all(getattr(target, name).dtype == torch.float64 for name in target._defaults)


def test_running_totals_past_float64_are_documented() -> None:
    """docs/aggregation.md: a SUM total past float64's range logs inf; a MEAN one is left out, with a warning."""
    from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

    aggregator = MetricsAggregator()
    for _ in range(2):  # each batch is finite; the running totals are 2e308
        aggregator.update([Metric("d", "s", 1e308, AggregationType.SUM), Metric("d", "m", 1e308, AggregationType.MEAN)])
    with pytest.warns(UndefinedMetricWarning, match="'train_d/m' is undefined"):
        assert aggregator.get_metrics_for_logging(prefix="train") == {"train_d/s": math.inf}


@pytest.mark.parametrize("metric_cls", [Sum, Mean, Max, Min, Distribution])
@pytest.mark.parametrize(
    "value",
    [np.complex128(1 + 2j), np.complex64(1 + 2j), np.array([1 + 2j, 2]), [1.0, np.complex128(3 + 0j)], (1 + 2j,)],
    ids=["complex128", "complex64", "complex-array", "list", "tuple"],
)
def test_update_refuses_numpy_complex(metric_cls, value):
    """torch.as_tensor(..., dtype=float64) took a NumPy complex (a scalar, an array or one in a list) as its real
    part (a warning only); refused as a complex tensor is, before any state changes."""
    metric = metric_cls()
    metric.update(torch.tensor([1.0, 2.0]))
    before = {name: value.clone() for name, value in metric.metric_state.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=r"Expected `value` to be a real number, a sequence of real numbers"):
            metric.update(value)
    for name, state in metric.metric_state.items():
        assert torch.equal(state, before[name]), name


def _as_pickled_before_the_rename(metric):
    """``metric`` as a pickle of it made before its states were renamed unpickles: TorchMetrics' state names, no map.

    (What ``torch.save`` of a ``Sum``/``Mean``/``Max``/``Min`` at 4630b3d loads as with today's class.)
    """
    state = metric.__dict__
    for ours, theirs in state.pop("_torchmetrics_names").items():
        state[theirs] = state.pop(ours)
        for table in (state["_defaults"], state["_reductions"], state["_persistent"]):
            table[theirs] = table.pop(ours)
        if metric.state_name == ours:
            metric.state_name = theirs
    return pickle.loads(pickle.dumps(metric))


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
def test_a_metric_pickled_before_the_rename_merges_one_made_now(cls):
    """A metric pickled before the states were named after the NaN setting keeps TorchMetrics' names in memory;
    ``old.merge_state(new)`` refused today's metric ("the incoming states ['sum_value_nanignore'] are not this
    metric's ['sum_value']") while ``new.merge_state(old)`` worked. Both merge now, to Python's sum/mean/max/min."""
    old = cls()
    old.update(torch.tensor([1.0, 4.0]))
    old = _as_pickled_before_the_rename(old)
    assert "_torchmetrics_names" not in old.__dict__ and old.state_name in old._defaults
    new = cls(nan_strategy="ignore")
    new.update(torch.tensor([8.0, math.nan, 2.0]))
    old.merge_state(new)
    old.merge_state({name: value for name, value in new.metric_state.items()})
    old.update(torch.tensor([3.0]))
    seen = [1.0, 4.0, 8.0, 2.0, 8.0, 2.0, 3.0]
    expected = {Sum: math.fsum(seen), Mean: math.fsum(seen) / len(seen), Max: max(seen), Min: min(seen)}[cls]
    assert old.compute().item() == expected


@pytest.mark.parametrize(
    ("cls", "name", "reference"),
    [
        (Sum, "sum_value", lambda seen: math.fsum(seen)),
        (Max, "max_value", max),
        (Min, "min_value", min),
        (Mean, "mean_value", lambda seen: math.fsum(seen) / 2.0),  # the weight stays that of the two values
    ],
)
def test_a_state_written_under_its_torchmetrics_name_is_the_state(cls, name, reference):
    """``metric.sum_value`` reads the renamed state (``sum_value_nanignore``), but ``metric.sum_value = t`` made a
    plain attribute that shadowed it: reads gave ``t`` while updates and ``compute`` used the state. Now the write
    sets the state, as on TorchMetrics' aggregators; later updates add to it (Python's sum/max/min/mean)."""
    metric = cls(nan_strategy="ignore")
    metric.update(torch.tensor([2.0, 6.0]))
    setattr(metric, name, torch.tensor(20.0, dtype=torch.float64))
    assert name not in metric.__dict__
    metric.update(torch.tensor([math.nan]))
    assert getattr(metric, name).item() == 20.0
    if cls is Mean:
        assert metric.compute().item() == 20.0 / 2.0
    else:
        metric.update(torch.tensor([3.0]))
        assert metric.compute().item() == reference([20.0, 3.0])


@pytest.mark.parametrize("cls", [Sum, Mean])
@pytest.mark.parametrize("nan_strategy", ["error", "ignore", 0.5])
def test_torchmetrics_aggregators_merge_ours_and_ours_merge_theirs(cls, nan_strategy):
    """``MeanMetric().merge_state(Mean())`` raised "Expected state variable mean_value to be present in incoming
    state {'mean_value_nanerror': ...}": TorchMetrics reads an incoming metric's ``metric_state`` by its own names,
    which held the names carrying the NaN setting. ``metric_state`` names the states as TorchMetrics (and
    ``state_dict``) do; both directions merge, to the exact sum/mean (``Fraction``; dyadic values sum exactly).
    (TorchMetrics' ``MaxMetric``/``MinMetric`` refuse every ``merge_state``: ``full_state_update=True``.)"""
    import torchmetrics.aggregation as tm_aggregation

    ours_values, theirs_values = [0.5, 1.75, 2.0**40, 3.125], [2.5, 0.25]
    theirs = getattr(tm_aggregation, f"{cls.__name__}Metric")()
    theirs.set_dtype(torch.float64)
    theirs.update(torch.tensor(theirs_values, dtype=torch.float64))
    ours = cls(nan_strategy=nan_strategy)
    ours.update(torch.tensor(ours_values, dtype=torch.float64))
    assert list(ours.metric_state) == {Sum: ["sum_value"], Mean: ["mean_value", "weight"]}[cls]

    def reference(*batches):
        seen = [Fraction(v) for batch in batches for v in batch]
        total = sum(seen, Fraction(0))
        return float(total if cls is Sum else total / len(seen))

    assert reference(ours_values, theirs_values) == (
        math.fsum(ours_values + theirs_values) / (1 if cls is Sum else len(ours_values + theirs_values))
    )
    into_theirs = getattr(tm_aggregation, f"{cls.__name__}Metric")()
    into_theirs.set_dtype(torch.float64)
    into_theirs.merge_state(theirs)
    into_theirs.merge_state(ours)  # TorchMetrics' merge_state of our metric
    assert into_theirs.compute().item() == reference(ours_values, theirs_values)

    into_ours = cls()
    into_ours.merge_state(ours)  # ours of another nan_strategy
    into_ours.merge_state(theirs.metric_state)  # a dict of TorchMetrics' states
    assert into_ours.compute().item() == reference(ours_values, theirs_values)
    assert ours.compute().item() == reference(ours_values)  # the merged metric is untouched


@pytest.mark.parametrize("cls", [Sum, Mean, Max, Min])
def test_metric_state_names_are_torchmetrics_and_internal_users_read_them(cls):
    """``metric_state`` under TorchMetrics' names, each name the state's attribute (``metric.sum_value``)."""
    metric = cls(nan_strategy="ignore")
    metric.update(torch.tensor([3.0, math.nan, 5.0]))
    states = metric.metric_state
    assert list(states) == list(saved_state_names(metric).values())
    for name, value in states.items():
        assert getattr(metric, name) is value


@pytest.mark.parametrize("validate_args", [True, False])
@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([1.7, 1.2, 2.0]),  # would be float keys that a checkpoint truncates to 1 (twice) and 2
        torch.tensor([2.0, 3.0], dtype=torch.float64),  # whole numbers are refused too: the dtype is what is read
        torch.tensor([float("nan"), 1.0]),  # failed halfway through an unvalidated update
        torch.tensor([True, False]),  # would be True/False keys that a checkpoint turns into 1/0
        torch.tensor([1 + 2j]),
    ],
    ids=["float", "whole floats", "nan", "bool", "complex"],
)
def test_categorical_refuses_non_integer_tensors_whatever_validate_args(values, validate_args):
    """A float, bool or complex tensor is refused (``TypeError`` naming ``categories``) with ``validate_args=False``
    too, as a list's ``float`` already was, by ``update`` and ``forward``; the counts stay as they were."""
    metric = CategoricalCount(validate_args=validate_args)
    metric.update(torch.tensor([3, 1, 3]))
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    for call in (metric.update, metric.forward):
        with pytest.raises(TypeError, match="`categories` to be an integer tensor"):
            call(values)
        for key, value in before.items():
            assert torch.equal(metric.metric_state[key], value), key
    # integer tensors still count as before, checked against a plain Counter
    more = torch.tensor([1, 2**40, -5, 1], dtype=torch.int64)
    metric.update(more)
    expected = Counter([3, 1, 3, *more.tolist()])
    assert _counts(metric.compute()) == {k: float(c) for k, c in expected.items()}
