"""A Hypothesis state machine drives `MetricsAggregator` and checks every logged key against a reference.

The reference (``tests/helpers/aggregation_reference.py``, shared with the DDP scenarios) keeps, per ``(dataset, name)``, its aggregation type, the plain values of its records
and the number of batches that touched it, and derives the logging dict from the definitions of
``docs/aggregation.md`` and torchtune's data metrics README: SUM ``math.fsum`` (exact: the values
are dyadic), MEAN the mean, MAX/MIN the extremes (exact), DISTRIBUTION ``{name}_stat_mean``,
``_stat_min``, ``_stat_max``, ``_stat_std`` (sample std from exact fractions, left out for one
value, exactly 0 for equal values) and one ``_stat_pXX`` per percentile (``p05``, ``p50``, ``p95``
by default) within the documented bound of ``numpy.percentile``'s linear rule (the sketch estimates
the two neighbouring order statistics within relative accuracy ``alpha`` each and interpolates, so
the error is at most ``alpha * ((1 - f)|x_(k)| + f|x_(k+1)|)``), and CATEGORICAL_COUNT
``{name}_count_{category}`` (an ``int`` whose text is also a ``str`` category as ``{category}(int)``).
Keys are ``f"{prefix}_{dataset}/{key}"`` and values Python floats.

Rules: a batch of 0..12 records over one to three datasets and a few names (values as Python
ints, floats and bools, NumPy scalars, one-element NumPy arrays and tensors of any shape and of a
dtype that holds them exactly; categories as ``str``/``int``, their enum subclasses, NumPy
integers and one-element integer tensors), passed as a list, a tuple or a generator;
``get_metrics_for_logging(prefix)`` (which changes no state); ``state_dict`` into a fresh
aggregator with the same handlers (the dict, or ``torch.save``/``torch.load(weights_only=True)``
with the metadata through JSON), which the machine goes on with; an earlier snapshot loaded back
(refused with ``ValueError`` and changing nothing where a handler's states no longer fit);
``reset``; ``register_handler`` (a ``Mean`` for SUM, TorchMetrics' ``MeanMetric`` for MEAN,
``Distribution``\\ s of other percentiles or accuracy; refused while the type is in use); and a
rejected batch (a type conflict with a held key or inside the batch, NaN/inf, a string for a
number, a float or bool category, an overflowing SUM batch, a non-record, an unknown type, a
non-``str`` dataset, an array of two elements) that raises as documented and changes nothing
(``state_dict`` compared before and after).

``STATEFUL_EXAMPLES`` (default 100) sets how many runs Hypothesis tries.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from tests.helpers.aggregation_reference import (
    CATEGORIES,
    DIST_VALUES,
    EXTREME_VALUES,
    HANDLERS,
    REAL_VALUES,
    SUM_VALUES,
    A,
    Level,
    Reference,
    Source,
    assert_logged,
    assert_same_snapshot,
    build,
    ref_logged,
    snapshot,
)
from torchmetrics_ext.aggregation import AggregationType, Distribution, Mean, Metric, MetricsAggregator, Sum

DATASETS = ("alpaca", "dolly", "oasst")
NAMES = ("tokens", "len", "src", "loss")
# logged under the key of another metric's entry (a ValueError at logging until a reset: drawn rarely)
CLASHING_NAMES = ("len_stat_mean", "src_count_web")
DRAWN_NAMES = NAMES * 6 + CLASHING_NAMES
# two handlers of a type whose checkpoints do not fit each other (their states differ)
INCOMPATIBLE = {
    (A.SUM, "default", "mean"),
    (A.SUM, "mean", "default"),
    (A.DISTRIBUTION, "default", "fine"),
    (A.DISTRIBUTION, "fine", "default"),
    (A.DISTRIBUTION, "p50_p99.9", "fine"),
    (A.DISTRIBUTION, "fine", "p50_p99.9"),
}

STATEFUL = settings(
    max_examples=int(os.environ.get("STATEFUL_EXAMPLES", 100)),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def logged_or_clash(aggregator: MetricsAggregator, prefix: str = "train") -> dict[str, float] | str:
    """The logging dict, or the message of the ``ValueError`` of two metrics logged under one key."""
    try:
        return aggregator.get_metrics_for_logging(prefix=prefix)
    except ValueError as err:
        assert "logged under one key" in str(err)
        return str(err)


# ----------------------------------------------------------------------------------------- values


def number_form(data: st.DataObject, raw: float | int | bool) -> Any:
    """``raw`` as one of the documented number forms that hold it exactly."""
    forms = ["python", "np_scalar", "np_array", "tensor64", "tensor64_shaped"]
    if abs(float(raw)) < 3e38 and float(np.float32(raw)) == float(raw):
        forms += ["tensor32", "np_float32"]
    if abs(float(raw)) < 65504 and float(np.float16(raw)) == float(raw):
        forms.append("tensor16")
    if isinstance(raw, int) and not isinstance(raw, bool):
        forms += ["tensor_int", "np_int"]
    if isinstance(raw, bool):
        forms.append("tensor_bool")
    form = data.draw(st.sampled_from(forms), label="form")
    if form == "python":
        return raw
    if form == "np_scalar":
        return np.float64(raw)
    if form == "np_array":
        return np.array([float(raw)])
    if form == "tensor64":
        return torch.tensor(float(raw), dtype=torch.float64)
    if form == "tensor64_shaped":
        return torch.tensor([[float(raw)]], dtype=torch.float64)
    if form == "tensor32":
        return torch.tensor([float(raw)], dtype=torch.float32)
    if form == "np_float32":
        return np.float32(raw)
    if form == "tensor16":
        return torch.tensor(float(raw), dtype=torch.float16)
    if form == "tensor_int":
        return torch.tensor(raw)
    if form == "np_int":
        return np.int64(raw)
    return torch.tensor(raw)  # bool tensor


def category_form(data: st.DataObject, raw: str | int) -> Any:
    if isinstance(raw, str):
        forms = ["python", "np_str"] + (["enum"] if raw in {s.value for s in Source} else [])
    elif abs(raw) >= 2**63:
        forms = ["python"]
    else:
        forms = ["python", "np_int", "tensor", "tensor_shaped", "np_array"] + (
            ["enum"] if raw in {m.value for m in Level} else []
        )
    form = data.draw(st.sampled_from(forms), label="category_form")
    if form == "python":
        return raw
    if form == "np_str":
        return np.str_(raw)
    if form == "enum":
        return Source(raw) if isinstance(raw, str) else Level(raw)
    if form == "np_int":
        return np.int64(raw)
    if form == "tensor":
        return torch.tensor(raw)
    if form == "tensor_shaped":
        return torch.tensor([[raw]])
    return np.array([raw])


def draw_value(data: st.DataObject, agg_type: AggregationType) -> tuple[Any, Any]:
    """A record value of ``agg_type`` and the plain value the reference keeps of it."""
    if agg_type is A.CATEGORICAL_COUNT:
        raw = data.draw(st.sampled_from(CATEGORIES), label="category")
        return category_form(data, raw), raw
    pools = {A.SUM: SUM_VALUES, A.MAX: EXTREME_VALUES, A.MIN: EXTREME_VALUES, A.DISTRIBUTION: DIST_VALUES}
    pool = pools.get(agg_type, REAL_VALUES)
    raw = data.draw(st.sampled_from(pool), label="value")
    return number_form(data, raw), float(raw)


# ----------------------------------------------------------------------------------------- the machine


class AggregatorMachine(RuleBasedStateMachine):
    """One aggregator and the reference of everything it accepted since its last reset."""

    @initialize()
    def start(self) -> None:
        self.aggregator = MetricsAggregator()
        self.ref = Reference()
        self.saved: list[tuple[dict[str, Any], Reference]] = []

    def _good_records(
        self, data: st.DataObject, max_size: int = 12
    ) -> tuple[list[Metric], dict[tuple[str, str], AggregationType], dict[tuple[str, str], list[Any]]]:
        """Valid records: each key with the type it has (held, or drawn once for the batch)."""
        n = data.draw(st.integers(0, max_size), label="n")
        datasets = data.draw(st.lists(st.sampled_from(DATASETS), min_size=1, max_size=3, unique=True), label="ds")
        records, types, plain = [], {}, {}
        for _ in range(n):
            key = (data.draw(st.sampled_from(datasets), label="dataset"), data.draw(st.sampled_from(DRAWN_NAMES)))
            if key not in types:
                types[key] = self.ref.types.get(key) or data.draw(st.sampled_from(list(A)), label="agg_type")
            value, raw = draw_value(data, types[key])
            records.append(Metric(key[0], key[1], value, types[key]))
            plain.setdefault(key, []).append(raw)
        return records, types, plain

    def _accept(self, types: dict[tuple[str, str], AggregationType], plain: dict[tuple[str, str], list[Any]]) -> None:
        for key, values in plain.items():
            self.ref.types[key] = types[key]
            self.ref.values.setdefault(key, []).extend(values)
            self.ref.updates[key] = self.ref.updates.get(key, 0) + 1

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        records, types, plain = self._good_records(data)
        how = data.draw(st.sampled_from(["list", "tuple", "generator"]), label="container")
        batch: Any = records if how == "list" else tuple(records) if how == "tuple" else (r for r in records)
        self.aggregator.update(batch)
        self._accept(types, plain)
        self.check_logging(data.draw(st.sampled_from(["train", "val", ""]), label="prefix"))

    @rule(data=st.data())
    def rejected_batch(self, data: st.DataObject) -> None:
        records, types, _ = self._good_records(data, max_size=6)
        before = snapshot(self.aggregator)
        held = {**self.ref.types, **types}
        ds = data.draw(st.sampled_from(DATASETS), label="bad_dataset")
        name = data.draw(st.sampled_from([*NAMES, "fresh"]), label="bad_name")
        key = (ds, name)
        kinds = ["nan", "inf", "string", "not_a_record", "unknown_type", "dataset_not_str", "two_elements", "within"]
        kinds += ["conflict"] if key in held else []
        kinds += (
            ["float_category", "bool_category"] if held.get(key, A.CATEGORICAL_COUNT) is A.CATEGORICAL_COUNT else []
        )
        kinds += ["overflow"] if held.get(key, A.SUM) is A.SUM else []
        kind = data.draw(st.sampled_from(kinds), label="bad_kind")
        numeric = [t for t in A if t is not A.CATEGORICAL_COUNT]
        agg_type = held.get(key) or data.draw(
            st.sampled_from(numeric if kind in {"nan", "inf", "string", "two_elements"} else list(A)), label="t"
        )
        if kind == "nan" and self.ref.handlers.get(agg_type) == "torchmetrics":
            # TorchMetrics' MeanMetric (nan_strategy="warn") takes NaN records and drops them, as documented
            # (docs/aggregation.md, "NaN records and the handler's nan_strategy"): no rejected batch; inf is
            kind = "inf"
        if kind in {"nan", "inf", "string", "two_elements"} and agg_type is A.CATEGORICAL_COUNT:
            kind = "float_category"  # a number of no kind is no category either: a TypeError as well
        bad: list[Any]
        if kind == "nan":
            nan = data.draw(st.sampled_from([math.nan, np.nan, torch.tensor(math.nan), np.array([math.nan])]))
            bad, error = [Metric(ds, name, nan, agg_type)], ValueError
        elif kind == "inf":
            inf = data.draw(st.sampled_from([math.inf, -math.inf, torch.tensor([math.inf]), np.float64(-np.inf)]))
            bad, error = [Metric(ds, name, inf, agg_type)], ValueError
        elif kind == "string":
            bad, error = [Metric(ds, name, data.draw(st.sampled_from(["ten", "1", ""])), agg_type)], TypeError
        elif kind == "two_elements":
            pair = data.draw(st.sampled_from([np.array([1.0, 2.0]), torch.tensor([1.0, 2.0])]))
            bad, error = [Metric(ds, name, pair, agg_type)], TypeError
        elif kind == "float_category":
            value = data.draw(st.sampled_from([1.5, 2.0, torch.tensor(1.0), np.float64(3.0)]))
            bad, error = [Metric(ds, name, value, A.CATEGORICAL_COUNT)], TypeError
        elif kind == "bool_category":
            value = data.draw(st.sampled_from([True, False, np.bool_(True), torch.tensor(True)]))
            bad, error = [Metric(ds, name, value, A.CATEGORICAL_COUNT)], TypeError
        elif kind == "overflow":
            bad, error = [Metric(ds, name, 1e308, A.SUM), Metric(ds, name, 1e308, A.SUM)], ValueError
        elif kind == "not_a_record":
            bad, error = [(ds, name, 1, A.SUM)], TypeError
        elif kind == "unknown_type":
            bad, error = [Metric(ds, name, 1, "sum")], ValueError
        elif kind == "dataset_not_str":
            bad, error = [Metric(data.draw(st.sampled_from([1, None, b"alpaca"])), name, 1, A.SUM)], TypeError
        elif kind == "conflict":
            other = data.draw(st.sampled_from([t for t in A if t is not held[key]]), label="other_type")
            value, _ = draw_value(data, other)
            bad, error = [Metric(ds, name, value, other)], ValueError
        else:  # "within": one new key, two types in the batch
            fresh = (ds, "twice")
            first, second = data.draw(st.lists(st.sampled_from(list(A)), min_size=2, max_size=2, unique=True))
            bad = [
                Metric(*fresh, draw_value(data, first)[0], first),
                Metric(*fresh, draw_value(data, second)[0], second),
            ]
            error = ValueError
        batch = list(records)
        for record in bad:
            batch.insert(data.draw(st.integers(0, len(batch)), label="at"), record)
        logged = logged_or_clash(self.aggregator)
        with pytest.raises(error):
            self.aggregator.update(batch)
        assert_same_snapshot(snapshot(self.aggregator), before)
        assert logged_or_clash(self.aggregator) == logged

    @rule(prefix=st.sampled_from(["train", "val", ""]))
    def check_logging(self, prefix: str) -> None:
        before = snapshot(self.aggregator)
        expected = ref_logged(self.ref, prefix)
        if expected is None:
            with pytest.raises(ValueError, match="logged under one key"):
                self.aggregator.get_metrics_for_logging(prefix=prefix)
            assert_same_snapshot(snapshot(self.aggregator), before)
            return
        logged = self.aggregator.get_metrics_for_logging(prefix=prefix)
        assert_same_snapshot(snapshot(self.aggregator), before)  # logging changes no state
        assert_logged(logged, expected)

    @rule()
    def check_update_counts(self) -> None:
        metadata = self.aggregator.state_dict()["metadata"]
        json.dumps(metadata)
        counts = {(e["dataset_name"], e["name"]): (A(e["agg_type"]), e["update_count"]) for e in metadata["metrics"]}
        assert counts == {key: (t, self.ref.updates[key]) for key, t in self.ref.types.items()}

    @rule(data=st.data())
    def empty_update(self, data: st.DataObject) -> None:
        before = snapshot(self.aggregator)
        self.aggregator.update(data.draw(st.sampled_from([[], (), iter([])])))
        assert_same_snapshot(snapshot(self.aggregator), before)

    @rule(how=st.sampled_from(["dict", "torch.save"]), stale=st.booleans())
    def checkpoint(self, how: str, stale: bool) -> None:
        state = self.aggregator.state_dict()
        if how == "torch.save":
            buffer = io.BytesIO()
            torch.save({"metadata": json.loads(json.dumps(state["metadata"])), "tensors": state["tensors"]}, buffer)
            buffer.seek(0)
            state = torch.load(buffer, weights_only=True)
        resumed = build(self.ref.handlers)
        if stale:  # replaced by the checkpoint
            resumed.update([Metric("stale", "x", 1, A.SUM)])
        resumed.load_state_dict(state)
        assert resumed.state_dict()["metadata"] == self.aggregator.state_dict()["metadata"]
        assert logged_or_clash(resumed) == logged_or_clash(self.aggregator)
        self.aggregator = resumed

    @rule()
    def save(self) -> None:
        self.saved.append((self.aggregator.state_dict(), copy.deepcopy(self.ref)))

    @precondition(lambda self: bool(self.saved))
    @rule(data=st.data())
    def load_saved(self, data: st.DataObject) -> None:
        state, ref = data.draw(st.sampled_from(self.saved), label="saved")
        unfit = any((t, ref.handlers[t], self.ref.handlers[t]) in INCOMPATIBLE for t in set(ref.types.values()))
        unknown = any(
            ref.handlers[t] != self.ref.handlers[t] and (t, ref.handlers[t], self.ref.handlers[t]) not in INCOMPATIBLE
            for t in set(ref.types.values())
        )
        if unknown and not unfit:  # e.g. MeanMetric's states against Mean's: not documented either way
            return
        if unfit:
            before = snapshot(self.aggregator)
            with pytest.raises(ValueError):
                self.aggregator.load_state_dict(state)
            assert_same_snapshot(snapshot(self.aggregator), before)
            return
        self.aggregator.load_state_dict(state)
        handlers = self.ref.handlers
        self.ref = copy.deepcopy(ref)
        self.ref.handlers = handlers  # a checkpoint is loaded with the current handlers

    @rule()
    def reset(self) -> None:
        self.aggregator.reset()
        self.ref.reset()
        assert self.aggregator.get_metrics_for_logging() == {}

    @rule(data=st.data())
    def register_handler(self, data: st.DataObject) -> None:
        agg_type = data.draw(st.sampled_from([t for t in A if len(HANDLERS[t]) > 1]), label="handler_type")
        option = data.draw(st.sampled_from(sorted(HANDLERS[agg_type])), label="option")
        factory = HANDLERS[agg_type][option] or {A.SUM: Sum, A.MEAN: Mean, A.DISTRIBUTION: Distribution}[agg_type]
        if agg_type in self.ref.types.values():
            before = snapshot(self.aggregator)
            with pytest.raises(ValueError, match="reset"):
                self.aggregator.register_handler(agg_type, factory)
            assert_same_snapshot(snapshot(self.aggregator), before)
            return
        self.aggregator.register_handler(agg_type, factory)
        self.ref.handlers[agg_type] = option


AggregatorMachine.TestCase.settings = STATEFUL
TestAggregatorMachine = AggregatorMachine.TestCase
