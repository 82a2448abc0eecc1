"""MetricsAggregator with wrapper handlers (``register_handler(t, lambda: Windowed(inner, window_size=...))``).

What each handler logs, as flat floats, against numpy over the same records (the window written from
``Windowed``'s rule: the newest whole updates whose sizes sum to at most ``window_size``, or the newest
``window_size`` values of one larger update); a batch refused part-way leaves every handler as it was,
the metrics inside a wrapper and its ring included; real 2-process gloo DDP.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from torchmetrics_ext import Windowed
from torchmetrics_ext.aggregation import (
    AggregationType,
    CategoricalCount,
    Distribution,
    Max,
    Mean,
    Metric,
    MetricsAggregator,
    Min,
    Sum,
)

A = AggregationType
ALPHA = 0.01  # Distribution's default relative accuracy (its percentiles)
INNER = {A.SUM: Sum, A.MEAN: Mean, A.MAX: Max, A.MIN: Min, A.DISTRIBUTION: Distribution}
NAMES = {A.SUM: "tokens", A.MEAN: "loss", A.MAX: "max_len", A.MIN: "min_len", A.DISTRIBUTION: "seq_len"}


def windowed_aggregator(window_size: int, types=tuple(INNER)) -> MetricsAggregator:
    aggregator = MetricsAggregator()
    for agg_type in types:
        aggregator.register_handler(agg_type, lambda inner=INNER[agg_type]: Windowed(inner(), window_size=window_size))
    return aggregator


def window_of(batches: list[list[float]], size: int) -> list[float]:
    """``Windowed``'s window over one key's updates (oldest first), written from its docstring."""
    kept: list[float] = []
    for batch in reversed(batches):
        if not kept and len(batch) > size:  # the newest update alone is larger: its newest `size` values
            return batch[-size:]
        if len(kept) + len(batch) > size:
            break
        kept = batch + kept
    return kept


def numpy_entries(agg_type: AggregationType, values: list[float]) -> dict[str, float]:
    """What one key logs (suffix -> value), from numpy: the inner metric's definition."""
    v = np.asarray(values, dtype=np.float64)
    if agg_type is A.SUM:
        return {"": float(v.sum())}
    if agg_type is A.MEAN:
        return {"": float(v.mean())}
    if agg_type is A.MAX:
        return {"": float(v.max())}
    if agg_type is A.MIN:
        return {"": float(v.min())}
    out = {"_stat_mean": v.mean(), "_stat_min": v.min(), "_stat_max": v.max()}
    if v.size > 1:
        out["_stat_std"] = v.std(ddof=1)
    out.update({f"_stat_p{q:02d}": p for q, p in zip((5, 50, 95), np.percentile(v, [5, 50, 95]), strict=True)})
    return {k: float(x) for k, x in out.items()}


def expected_logged(updates: dict[tuple[str, str, AggregationType], list[list[float]]], window) -> dict[str, float]:
    """``{logging key: numpy value}``: ``{name}_lifetime{entry}`` and ``{name}_window{entry}`` per key.

    ``window(key, batches)`` gives the key's window values (one process: :func:`window_of`).
    """
    out = {}
    for (ds, name, agg_type), batches in updates.items():
        lifetime = [x for batch in batches for x in batch]
        for part, values in (("lifetime", lifetime), ("window", window((ds, name, agg_type), batches))):
            for entry, value in numpy_entries(agg_type, values).items():
                out[f"train_{ds}/{name}_{part}{entry}"] = value
    return out


def assert_logged(logged: dict[str, float], expected: dict[str, float]) -> None:
    assert set(logged) == set(expected), sorted(set(logged) ^ set(expected))
    assert all(type(value) is float for value in logged.values())  # flat floats, ready for a logger
    for key, value in expected.items():
        rtol = ALPHA if "_stat_p" in key else 1e-12
        np.testing.assert_allclose(logged[key], value, rtol=rtol, err_msg=key)


def random_updates(seed: int, steps: int, large_at: int | None = None):
    """Per step, a batch of records: each key gets 0 to 9 values (``large_at``: 30 values for every key)."""
    rng = np.random.default_rng(seed)
    steps_out = []
    for step in range(steps):
        records = []
        for agg_type, name in NAMES.items():
            for ds in ("alpaca", "dolly"):
                n = 30 if step == large_at else int(rng.integers(0, 10))
                records += [Metric(ds, name, float(rng.integers(1, 4096)), agg_type) for _ in range(n)]
        steps_out.append(records)
    return steps_out


def fed(steps) -> dict[tuple[str, str, AggregationType], list[list[float]]]:
    """One key's updates as the aggregator makes them: one per step that has values for it, in record order."""
    updates: dict[tuple[str, str, AggregationType], list[list[float]]] = defaultdict(list)
    for records in steps:
        batch: dict[tuple[str, str, AggregationType], list[float]] = defaultdict(list)
        for r in records:
            batch[r.dataset_name, r.name, r.agg_type].append(r.value)
        for key, values in batch.items():
            updates[key].append(values)
    return updates


# ----------------------------------------------------------------------------- what each wrapper logs


@pytest.mark.parametrize("large_at", [None, 7], ids=["small-updates", "an-update-larger-than-the-window"])
def test_windowed_handlers_log_flat_floats_of_the_lifetime_and_the_window(large_at):
    """``Windowed(Distribution())`` made ``get_metrics_for_logging`` raise (its compute is a dict of the lifetime's
    and the window's dicts); now every ``Windowed`` handler logs ``{name}_lifetime...`` and ``{name}_window...``
    (a DISTRIBUTION's ``_stat_`` entries after them), as ``Windowed(Sum())`` logged ``{name}_window``."""
    window_size = 20
    steps = random_updates(3, 12, large_at)
    aggregator = windowed_aggregator(window_size)
    for records in steps:
        aggregator.update(records)
    expected = expected_logged(fed(steps), lambda key, batches: window_of(batches, window_size))
    assert "train_alpaca/seq_len_window_stat_p50" in expected and "train_dolly/tokens_window" in expected
    assert_logged(aggregator.get_metrics_for_logging(), expected)


def test_a_windowed_distribution_next_to_a_metric_named_like_its_entry_is_a_clash():
    """A nested entry's logging key is checked for clashes like any other."""
    aggregator = windowed_aggregator(4, (A.DISTRIBUTION,))
    aggregator.update([Metric("d", "x", 1.0, A.DISTRIBUTION), Metric("d", "x_window_stat_mean", 2.0, A.SUM)])
    with pytest.raises(ValueError, match="'train_d/x_window_stat_mean' from"):
        aggregator.get_metrics_for_logging()


def test_windowed_categorical_count_is_refused_at_the_first_update_naming_why():
    """``Windowed`` refuses ``CategoricalCount`` (its counts vector is aligned to first-seen categories): the
    handler's first metric raises that reason out of ``update``, and the batch changes nothing."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.CATEGORICAL_COUNT, lambda: Windowed(CategoricalCount(), window_size=8))
    aggregator.update([Metric("d", "n", 1, A.SUM)])
    with pytest.raises(ValueError, match=r"Windowed cannot wrap CategoricalCount: .*reset it every N steps"):
        aggregator.update([Metric("d", "n", 5, A.SUM), Metric("d", "source", "web", A.CATEGORICAL_COUNT)])
    assert aggregator.get_metrics_for_logging() == {"train_d/n": 1.0}
