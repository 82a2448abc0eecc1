"""A Hypothesis state machine: ``MetricsAggregator`` with every ``nan_strategy`` against a plain-Python model.

``tests/test_aggregation_stateful.py`` drives the default handlers (which refuse NaN) and
``tests/test_aggregation_nan.py`` checks each ``nan_strategy`` in fixed scenarios. Here the
SUM/MEAN/MAX/MIN handlers get a strategy each (``"error"``, ``"ignore"``, ``"warn"``,
``"disable"`` or a fill value, on ``Sum``/``Mean``/``Max``/``Min`` and on TorchMetrics' ``MeanMetric``),
next to default DISTRIBUTION and CATEGORICAL_COUNT keys of two datasets, through random sequences of
batches with NaN records, logging, checkpoints (the dict, or ``torch.save`` and ``weights_only``
loading into a fresh aggregator) and ``reset``. The model follows docs/aggregation.md ("NaN records
and the handler's nan_strategy") and torchtune's definitions: ``"error"`` refuses the whole batch and
changes nothing; ``"ignore"``/``"warn"`` drop the NaN records (``"warn"`` with one warning per key
and batch); a float replaces each; ``"disable"`` keeps them, and the key logs ``nan`` until
``reset``; an undefined value (a mean or an extreme of no record) is left out, a sum of none is 0.
SUM is ``math.fsum`` and MEAN the sum over the count (the values are dyadic: exact), MAX/MIN the
extremes, DISTRIBUTION mean/min/max/``statistics.stdev`` and ``np.percentile`` within the documented
bound, CATEGORICAL_COUNT ``collections.Counter``.

``NAN_STATEFUL_EXAMPLES`` (default 40) sets how many runs Hypothesis tries.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import warnings
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from torchmetrics.aggregation import MeanMetric

from torchmetrics_ext.aggregation import AggregationType, Max, Mean, Metric, MetricsAggregator, Min, Sum

A = AggregationType
NAN = math.nan
VALUES = [0.0, 1.0, -3.0, 0.5, 2.25, 7.0, 100.0, -0.125]
DIST_VALUES = [1.0, 2.5, 3.0, 17.0, 100.0, 0.0, -4.0, 1e6]
CATEGORIES = ["web", "book", 3]
STRATEGIES = ["error", "ignore", "warn", "disable", 2.5]
CLASSES = {A.SUM: Sum, A.MEAN: Mean, A.MAX: Max, A.MIN: Min}
SCALARS = tuple(CLASSES)
ALPHA = 0.01


def _handler(agg_type: AggregationType, strategy: Any, torchmetrics_mean: bool) -> Any:
    if agg_type is A.MEAN and torchmetrics_mean:
        return lambda: MeanMetric(nan_strategy=strategy)
    cls = CLASSES[agg_type]
    return lambda: cls(nan_strategy=strategy)


def _expected(
    types: dict[tuple[str, str], AggregationType],
    kept: dict[tuple[str, str], list[Any]],
    disabled: set[tuple[str, str]],
) -> dict[str, Any]:
    """``{logged key: value}`` of the model; a DISTRIBUTION percentile as ``(reference, tolerance)``."""
    out: dict[str, Any] = {}
    for key, agg_type in types.items():
        base = f"train_{key[0]}/{key[1]}"
        xs = kept[key]
        if key in disabled:
            out[base] = NAN
        elif agg_type is A.SUM:
            out[base] = math.fsum(xs)
        elif agg_type is A.MEAN:
            if xs:
                out[base] = math.fsum(xs) / len(xs)
        elif agg_type in (A.MAX, A.MIN):
            if xs:
                out[base] = max(xs) if agg_type is A.MAX else min(xs)
        elif agg_type is A.DISTRIBUTION:
            out[f"{base}_stat_mean"] = math.fsum(xs) / len(xs)
            out[f"{base}_stat_min"], out[f"{base}_stat_max"] = min(xs), max(xs)
            if len(xs) > 1:
                out[f"{base}_stat_std"] = statistics.stdev(xs)
            ordered = sorted(xs)
            for q in (5, 50, 95):
                h = q / 100 * (len(xs) - 1)
                k = math.floor(h)
                f = h - k
                lo, hi = ordered[k], ordered[min(k + 1, len(xs) - 1)]
                out[f"{base}_stat_p{q:02d}"] = (float(np.percentile(xs, q)), ALPHA * ((1 - f) * abs(lo) + f * abs(hi)))
        else:
            for category, count in Counter(xs).items():
                out[f"{base}_count_{category}"] = float(count)
    return out


class NanMachine(RuleBasedStateMachine):
    """One aggregator with drawn NaN strategies and the model of what it accepted since its last reset."""

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        self.strategies = {t: data.draw(st.sampled_from(STRATEGIES), label=f"{t.name} strategy") for t in SCALARS}
        self.torchmetrics_mean = data.draw(st.booleans(), label="MeanMetric for MEAN")
        self.aggregator = self._fresh()
        self.types: dict[tuple[str, str], AggregationType] = {}
        self.kept: dict[tuple[str, str], list[Any]] = {}
        self.disabled: set[tuple[str, str]] = set()

    def _fresh(self) -> MetricsAggregator:
        aggregator = MetricsAggregator()
        for agg_type, strategy in self.strategies.items():
            aggregator.register_handler(agg_type, _handler(agg_type, strategy, self.torchmetrics_mean))
        return aggregator

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(0, 10), label="n")
        records: list[Metric] = []
        batch: dict[tuple[str, str], list[float]] = {}
        for _ in range(n):
            agg_type = data.draw(st.sampled_from(list(A)), label="type")
            key = (data.draw(st.sampled_from(["alpaca", "dolly"]), label="dataset"), f"m_{agg_type.name.lower()}")
            if agg_type is A.CATEGORICAL_COUNT:
                value: Any = data.draw(st.sampled_from(CATEGORIES), label="category")
            elif agg_type is A.DISTRIBUTION:
                value = data.draw(st.sampled_from(DIST_VALUES), label="value")
            else:
                value = data.draw(st.sampled_from([*VALUES, NAN]), label="value")
            records.append(Metric(key[0], key[1], value, agg_type))
            batch.setdefault(key, []).append(value)
        refused = any(
            math.isnan(v) and self.strategies[_type_of(key)] == "error"
            for key, vs in batch.items()
            if _type_of(key) in SCALARS
            for v in vs
        )
        before = self._logged()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if refused:
                with pytest.raises(ValueError, match=r"NaN|nan"):
                    self.aggregator.update(records)
            else:
                self.aggregator.update(records)
        if refused:  # nothing changed
            assert _same(self._logged(), before)
            return
        warned = 0
        for key, vs in batch.items():
            agg_type = _type_of(key)
            self.types[key] = agg_type
            kept = self.kept.setdefault(key, [])
            if agg_type not in SCALARS:
                kept.extend(vs)
                continue
            strategy = self.strategies[agg_type]
            has_nan = any(math.isnan(v) for v in vs)
            if strategy in ("ignore", "warn"):
                kept.extend(v for v in vs if not math.isnan(v))
                warned += strategy == "warn" and has_nan
            elif strategy == "disable":
                kept.extend(v for v in vs if not math.isnan(v))
                if has_nan:
                    self.disabled.add(key)
            else:  # a fill value
                kept.extend(strategy if math.isnan(v) else v for v in vs)
        nan_warnings = [w for w in caught if "nan" in str(w.message).lower() and issubclass(w.category, UserWarning)]
        if not (self.torchmetrics_mean and self.strategies[A.MEAN] == "warn"):  # TorchMetrics' own warning text
            assert len(nan_warnings) == warned, [str(w.message) for w in caught]

    def _logged(self) -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.aggregator.get_metrics_for_logging()

    @rule()
    def check_logging(self) -> None:
        logged = self._logged()
        expected = _expected(self.types, self.kept, self.disabled)
        assert set(logged) == set(expected), (sorted(set(logged) ^ set(expected)), self.strategies)
        for key, want in expected.items():
            got = logged[key]
            assert type(got) is float, key
            if isinstance(want, tuple):
                assert abs(got - want[0]) <= want[1], (key, got, want)
            elif math.isnan(want):
                assert math.isnan(got), (key, got)
            elif "/m_mean" in key and self.torchmetrics_mean:  # TorchMetrics' MeanMetric keeps float32 sums
                assert got == pytest.approx(want, rel=1e-6), (key, got, want)
            elif key.endswith(("_stat_mean", "_stat_std")) or "/m_mean" in key:
                assert got == pytest.approx(want, rel=1e-13, abs=1e-300), (key, got, want)
            else:
                assert got == want, (key, got, want)

    @rule(how=st.sampled_from(["dict", "torch.save"]))
    def checkpoint(self, how: str) -> None:
        state = self.aggregator.state_dict()
        if how == "torch.save":
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            state = torch.load(buffer, weights_only=True)
        fresh = self._fresh()
        fresh.load_state_dict(state)
        self.aggregator = fresh

    @rule()
    def reset(self) -> None:
        self.aggregator.reset()
        self.types, self.kept, self.disabled = {}, {}, set()


def _type_of(key: tuple[str, str]) -> AggregationType:
    return A[key[1].removeprefix("m_").upper()]


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(), b.values())
    )


NanMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("NAN_STATEFUL_EXAMPLES", 40)),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_nan_strategies_in_random_sequences = NanMachine.TestCase
