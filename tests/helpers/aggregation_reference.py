"""A reference for ``MetricsAggregator`` written from ``docs/aggregation.md`` and torchtune's data metrics README.

The reference keeps, per ``(dataset, name)``, its aggregation type and the plain values of its
records (over every batch and, under DDP, every rank) and derives the logging dict from the
documented definitions: SUM ``math.fsum`` (exact: the pools' values are dyadic), MEAN the mean
of exact fractions, MAX/MIN the extremes (exact), DISTRIBUTION the mean, min, max, the sample std
from exact fractions (left out for one value, exactly 0 for equal values) and ``numpy.percentile``
within the sketch's documented bound, CATEGORICAL_COUNT the counts (an ``int`` whose text is also
a ``str`` category as ``{category}(int)``). Used by the single-process state machine
(``tests/test_aggregation_stateful.py``) and the DDP scenarios (``tests/test_aggregation_ddp_random.py``).
"""

from __future__ import annotations

import enum
import json
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics.aggregation import MeanMetric

from torchmetrics_ext.aggregation import AggregationType, Distribution, Mean, MetricsAggregator

A = AggregationType
# SUM values: dyadic, so every sum is exact in float64
SUM_VALUES = [0, 1, 2, 7, 100, -3, 0.5, 0.125, 2.25, 1e6, True, False]
# MEAN and DISTRIBUTION: inside the sketch's range [1e-9, 1e12] (or 0), with a large common offset
# (1 + 2**-30 rounds to 1 in float32: next to a float32 1.0, it must still count as the larger)
REAL_VALUES = [0, 1, 1 + 2**-30, 2, 3.5, -3, 0.1, 1e-3, 12345.678, 1e9, 1e9 + 0.5, -2.5e6, 7, True]
# MAX / MIN never sum: any finite value
EXTREME_VALUES = [*REAL_VALUES, 1e300, -1e308, 1e308, 5e-324, -0.0]
# DISTRIBUTION: any finite magnitude for the moments (scaled sums), outside the sketch's range too
DIST_VALUES = [*REAL_VALUES, 1e15 + 1, 1e200, -1e308, 1e-200, 5e-324, -0.0]
SKETCH_RANGE = (1e-9, 1e12)  # Distribution's default min_value / max_value


class Source(str, enum.Enum):
    WEB = "web"
    BOOK = "book"
    ONE = "1"


class Level(enum.IntEnum):
    ZERO = 0
    ONE = 1
    NEG = -7


CATEGORIES: list[str | int] = ["web", "book", "1", "", "i1", "é", 1, 2, 0, -7, 2**70, -(2**63)]

# handler options: name -> (factory, the reference's settings)
HANDLERS: dict[AggregationType, dict[str, Any]] = {
    A.SUM: {"default": None, "mean": lambda: Mean()},
    A.MEAN: {"default": None, "torchmetrics": MeanMetric},
    A.MAX: {"default": None},
    A.MIN: {"default": None},
    A.DISTRIBUTION: {
        "default": None,
        "p50_p99.9": lambda: Distribution(percentiles=(50, 99.9)),
        "fine": lambda: Distribution(percentiles=(25, 75), relative_accuracy=0.002),
    },
    A.CATEGORICAL_COUNT: {"default": None},
}
# (percentiles, alpha) of each DISTRIBUTION option
SKETCHES = {"default": ((5, 50, 95), 0.01), "p50_p99.9": ((50, 99.9), 0.01), "fine": ((25, 75), 0.002)}


def percentile_key(q: float) -> str:
    return f"p{int(q):02d}" if float(q).is_integer() else f"p{q}"


def ref_std(values: list[float]) -> float:
    """The sample std from exact fractions, scaled by a power of two so that no square over- or underflows."""
    exponent = math.frexp(max(abs(v) for v in values))[1]
    exact = [Fraction(v) / Fraction(2) ** exponent for v in values]
    mean = sum(exact) / len(exact)
    return math.ldexp(math.sqrt(sum((x - mean) ** 2 for x in exact) / (len(exact) - 1)), exponent)


def ref_mean(values: list[float]) -> float:
    return float(sum(map(Fraction, values)) / len(values))


def sketch_error(x: float, alpha: float) -> float:
    """The documented error of the sketch's estimate of ``x`` (``inf``: no bound beyond ``max_value``)."""
    lo, hi = SKETCH_RANGE
    return alpha * abs(x) if lo <= abs(x) <= hi else lo if abs(x) < lo else math.inf


def ref_entries(ref: Reference, key: tuple[str, str], prefix: str) -> dict[str, tuple[str, Any]]:
    """``{logged key: (kind, expected)}`` of one key: kind ``exact``, ``close`` (value, rtol, atol) or
    ``percentile`` (np.percentile, the documented bound, the exact min and max)."""
    agg_type, values = ref.types[key], ref.values[key]
    handler = ref.handlers[agg_type]
    base = f"{prefix}_{key[0]}/{key[1]}"
    out: dict[str, tuple[str, Any]] = {}
    if agg_type is A.CATEGORICAL_COUNT:
        texts = {c for c in values if isinstance(c, str)}
        for category in dict.fromkeys(values):
            count = float(sum(1 for v in values if type(v) is type(category) and v == category))
            text = f"{category}(int)" if isinstance(category, int) and str(category) in texts else str(category)
            out[f"{base}_count_{text}"] = ("exact", count)
        return out
    floats = [float(v) for v in values]
    lo, hi = min(floats), max(floats)
    if agg_type is A.SUM and handler == "default":
        out[base] = ("exact", math.fsum(floats))
    elif agg_type in (A.SUM, A.MEAN):
        rtol = 1e-5 if handler == "torchmetrics" else 1e-12  # TorchMetrics' MeanMetric: float32 states
        out[base] = ("close", (ref_mean(floats), rtol, rtol * max(-lo, hi) * len(floats)))
    elif agg_type is A.MAX:
        out[base] = ("exact", hi)
    elif agg_type is A.MIN:
        out[base] = ("exact", lo)
    else:
        percentiles, alpha = SKETCHES[handler]
        # the mean: within about 2**-53 of the mean of |x - c|, c a value between min and max
        out[f"{base}_stat_mean"] = ("close", (ref_mean(floats), 1e-12, 1e-12 * hi - 1e-12 * lo))
        out[f"{base}_stat_min"] = ("exact", lo)
        out[f"{base}_stat_max"] = ("exact", hi)
        if len(floats) > 1:  # the std of one value is undefined: left out
            std = ref_std(floats)
            out[f"{base}_stat_std"] = ("exact", 0.0) if std == 0 else ("close", (std, 1e-9, 0.0))
        ordered = sorted(floats)
        n = len(ordered)
        for q in percentiles:
            h = q / 100 * (n - 1)
            k = math.floor(h)
            f = h - k
            below, above = ordered[k], ordered[min(k + 1, n - 1)]
            want = float(np.percentile(np.array(ordered), q))
            bound = (1 - f) * sketch_error(below, alpha) + f * sketch_error(above, alpha)
            bound += 1e-12 * max(abs(below), abs(above))
            out[f"{base}_stat_{percentile_key(q)}"] = ("percentile", (want, bound, lo, hi))
    return out


def ref_logged(ref: Reference, prefix: str) -> dict[str, tuple[str, Any]] | None:
    """Every key's entries; ``None`` where two metrics would be logged under one key (a documented ``ValueError``)."""
    out: dict[str, tuple[str, Any]] = {}
    sources: dict[str, tuple[str, str]] = {}
    for key in ref.types:
        for logged, expected in ref_entries(ref, key, prefix).items():
            if sources.setdefault(logged, key) != key:
                return None
            out[logged] = expected
    return out


class Reference:
    """The keys' types and plain values, the batches that touched each key, and the current handlers."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str], AggregationType] = {}
        self.values: dict[tuple[str, str], list[Any]] = {}
        self.updates: dict[tuple[str, str], int] = {}
        self.handlers: dict[AggregationType, str] = dict.fromkeys(A, "default")

    def reset(self) -> None:
        self.types, self.values, self.updates = {}, {}, {}


def build(handlers: dict[AggregationType, str]) -> MetricsAggregator:
    aggregator = MetricsAggregator()
    for agg_type, option in handlers.items():
        if option != "default":
            aggregator.register_handler(agg_type, HANDLERS[agg_type][option])
    return aggregator


def snapshot(aggregator: MetricsAggregator) -> tuple[str, dict[str, torch.Tensor]]:
    state = aggregator.state_dict()
    return json.dumps(state["metadata"], sort_keys=True), {k: v.clone() for k, v in state["tensors"].items()}


def assert_same_snapshot(got: tuple[str, dict[str, torch.Tensor]], want: tuple[str, dict[str, torch.Tensor]]) -> None:
    assert got[0] == want[0]
    assert got[1].keys() == want[1].keys()
    for key, tensor in got[1].items():
        assert tensor.dtype == want[1][key].dtype, key
        assert torch.equal(tensor, want[1][key]) or torch.allclose(tensor, want[1][key], equal_nan=True), key


def assert_logged(logged: dict[str, float], expected: dict[str, tuple[str, Any]]) -> None:
    """``logged`` (a ``get_metrics_for_logging`` dict) holds exactly the keys of ``expected`` (from
    :func:`ref_logged`), each a Python float equal to, close to or within the percentile bound of its value."""
    assert set(logged) == set(expected), (sorted(set(logged) - set(expected)), sorted(set(expected) - set(logged)))
    for key, (kind, want) in expected.items():
        got = logged[key]
        assert type(got) is float, key
        if kind == "exact":
            assert got == want, (key, got, want)
        elif kind == "close":
            value, rtol, atol = want
            assert got == pytest.approx(value, rel=rtol, abs=atol), (key, got, value)
        else:
            value, bound, lo, hi = want
            assert lo <= got <= hi, (key, got, lo, hi)  # estimates are clipped to the exact min and max
            assert not abs(got - value) > bound, (key, got, value, bound)
