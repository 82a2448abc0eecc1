"""A ``Windowed(Distribution)``'s window far from the lifetime's first value keeps its mean and std.

Each update's sums are about its own first value and the window joins them about the shift of its
oldest update: the window's std has the bound of sums about one of its own values,
:math:`10^{-16}\\cdot 2n`, whatever the lifetime's first value (an outlier first loss, a drifting
mean). References: exact fractions over the window's values (mean, and the sample std from
:math:`\\sum (x - \\bar x)^2` in fractions), the window rule written out in plain Python.
``TMX_OFFSET_SEEDS`` runs more seeds.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from decimal import Context
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchmetrics_ext import Windowed
from torchmetrics_ext.aggregation import Distribution
from torchmetrics_ext.utilities.device import force_device_path

SEEDS = range(int(os.environ.get("TMX_OFFSET_SEEDS", "3")))


def _exact(values):
    """``(mean, std)`` of ``values`` (floats) in exact fractions, each rounded once at the end."""
    xs = [Fraction(v) for v in values]
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return float(mean), math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    wide = Context(prec=40, Emax=10**6, Emin=-(10**6))  # squares of 1e200 or 1e-200 values: beyond float64
    return float(mean), float(wide.sqrt(wide.divide(var.numerator, var.denominator)))


def _window_values(batches, window):
    """The window rule: the newest whole batches within ``window`` values, or the newest ``window`` of a larger one."""
    if len(batches[-1]) > window:
        return list(batches[-1][-window:])
    kept, used = [], 0
    for batch in reversed(batches):
        if used + len(batch) > window:
            break
        kept[:0] = batch
        used += len(batch)
    return kept


def _check(metric, batches, window, *, rel_std=1e-12, rel_mean=1e-14):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the std of a window of one value: nan, as for any Distribution
        out = metric.compute()
    lifetime = [v for batch in batches for v in batch]
    for part, values in (("lifetime", lifetime), ("window", _window_values(batches, window))):
        mean, std = _exact(values)
        got_mean, got_std = out[part]["mean"].item(), out[part]["std"].item()
        spread = max(values) - min(values)
        assert abs(got_mean - mean) <= rel_mean * max(abs(mean), spread), (part, got_mean, mean)
        if len(values) > 1 and std > 0:
            assert abs(got_std - std) <= rel_std * std, (part, got_std, std)
        assert out[part]["min"].item() == min(values) and out[part]["max"].item() == max(values)


def _stream(rng, kind):
    """Batches of a stream: an outlier first value then N(100, 10), a drifting mean, or a negative offset."""
    sizes = rng.integers(1, 12, 40).tolist()
    if kind == "outlier":
        rest = [rng.normal(100.0, 10.0, n) for n in sizes]
        return [[1e9], *(b.tolist() for b in rest)]
    if kind == "drift":  # the mean falls from 1e6 to about 0 over the run, std 0.01 around it
        means = np.linspace(1e6, 1.0, len(sizes))
        return [(m + rng.normal(0.0, 0.01, n)).tolist() for m, n in zip(means, sizes, strict=True)]
    return [[-3e12], *((-5.0 + rng.normal(0.0, 0.1, n)).tolist() for n in sizes)]  # negative offsets


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", ["update", "device_path"])
@pytest.mark.parametrize("kind", ["outlier", "drift", "negative"])
def test_window_far_from_the_first_value_keeps_its_mean_and_std(kind, path, seed):
    """Bug: the window's sums were about the lifetime's first value: after a first value of 1e9 then values near
    100 (std 10) the window's std was ``nan`` and its mean ~1e-9 off; a drifting mean lost the window's std
    alike. Now within the bound of sums about a value of the window. Reference: exact fractions."""
    rng = np.random.default_rng(seed)
    batches = _stream(rng, kind)
    metric = Windowed(Distribution(percentiles=(50.0,)), window_size=60)
    with force_device_path(path == "device_path"):
        for i, batch in enumerate(batches):
            metric.update(torch.tensor(batch, dtype=torch.float64))
            if i % 7 == 0 or i == len(batches) - 1:
                _check(metric, batches[: i + 1], 60)


@pytest.mark.parametrize("path", ["update", "device_path"])
def test_window_partly_covering_a_batch_larger_than_it(path):
    """Batches larger than the window (80 values, window 50) after a first value of 1e9: the window keeps the
    newest 50 values of the last batch, summed about their own first. Reference: exact fractions."""
    rng = np.random.default_rng(3)
    batches = [[1e9], *(rng.normal(100.0, 10.0, n).tolist() for n in (80, 7, 80, 3, 20, 90))]
    metric = Windowed(Distribution(), window_size=50)
    with force_device_path(path == "device_path"):
        for i, batch in enumerate(batches):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the std of a batch of one value
                value = metric(torch.tensor(batch, dtype=torch.float64))
            if len(batch) > 1:
                assert value["window"]["std"].item() == pytest.approx(_exact(batch[-50:])[1], rel=1e-12)
                assert value["lifetime"]["std"].item() == pytest.approx(_exact(batch)[1], rel=1e-12)
            _check(metric, batches[: i + 1], 50)


def test_checkpoint_pickle_merge_and_reset_keep_the_window_right():
    """A checkpoint and a pickle taken mid-window resume to the same values; ``merge_state`` joins the lifetimes
    (the window stays this one's); after ``reset`` the next values start afresh. Reference: exact fractions."""
    rng = np.random.default_rng(5)
    batches = _stream(rng, "outlier")
    metric = Windowed(Distribution(), window_size=40)
    for batch in batches[:20]:
        metric.update(torch.tensor(batch, dtype=torch.float64))
    again = Windowed(Distribution(), window_size=40)
    again.load_state_dict(metric.state_dict())
    copied = pickle.loads(pickle.dumps(metric))
    for batch in batches[20:]:
        for m in (metric, again, copied):
            m.update(torch.tensor(batch, dtype=torch.float64))
    for m in (metric, again, copied):
        _check(m, batches, 40)
    torch.testing.assert_close(again.compute(), metric.compute(), rtol=0, atol=0)
    other = Windowed(Distribution(), window_size=40)
    more = [rng.normal(-50.0, 1.0, 5).tolist() for _ in range(4)]
    for batch in more:
        other.update(torch.tensor(batch, dtype=torch.float64))
    metric.merge_state(other)
    out = metric.compute()
    lifetime = [v for b in [*batches, *more] for v in b]
    assert out["lifetime"]["std"].item() == pytest.approx(_exact(lifetime)[1], rel=1e-12)
    assert out["window"]["std"].item() == pytest.approx(_exact(_window_values(batches, 40))[1], rel=1e-12)
    metric.reset()
    tail = [rng.normal(7.0, 0.5, 6).tolist() for _ in range(5)]
    for batch in tail:
        metric.update(torch.tensor(batch, dtype=torch.float64))
    _check(metric, tail, 40)


def test_window_of_tiny_and_huge_magnitudes():
    """Values whose spread lies beyond 2**±485 (scaled sums) in the window: joined exactly in fractions.
    Reference: exact fractions."""
    rng = np.random.default_rng(6)
    for scale in (1e-200, 1e200):
        batches = [[scale * 1e6], *((scale * (1.0 + rng.normal(0.0, 0.01, n))).tolist() for n in (3, 5, 4, 6))]
        metric = Windowed(Distribution(), window_size=12)
        for i, batch in enumerate(batches):
            metric.update(torch.tensor(batch, dtype=torch.float64))
            _check(metric, batches[: i + 1], 12)


@settings(max_examples=25, deadline=None)
@given(
    first=st.floats(-1e12, 1e12, allow_nan=False),
    loc=st.floats(-1e6, 1e6, allow_nan=False),
    log_scale=st.floats(-3.0, 3.0),
    drift=st.floats(-1e3, 1e3, allow_nan=False),
    window=st.integers(5, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_first_value_and_stream_keep_the_windows_std(first, loc, log_scale, drift, window, seed):
    """Any first value, then a stream of batches (1 to 15 values) of a drifting mean: the window's and the
    lifetime's mean and std within their bounds. Reference: exact fractions."""
    rng = np.random.default_rng(seed)
    scale = 10.0**log_scale
    batches = [[first]] + [
        (loc + drift * i + rng.normal(0.0, scale, int(rng.integers(1, 16)))).tolist() for i in range(15)
    ]
    metric = Windowed(Distribution(percentiles=(50.0,)), window_size=window)
    for batch in batches:
        metric.update(torch.tensor(batch, dtype=torch.float64))
    # the window's bound: 1e-16 * 2n; the lifetime's, relative to its own range (its first value among them)
    _check(metric, batches, window, rel_std=1e-11)
