"""One answer for "nothing seen", for every registry name and every public metric class (docs/policies.md).

A metric that saw no sample gives the same value and the same warning whether it was never updated (a),
was reset (b), or saw only empty / zero-weight batches (c); in a multi-task metric (d) and in a
``RecMetricModule`` (e) only the task that saw nothing says so; under DDP (f) a rank without a batch
reports the other rank's value with no warning at all, and two ranks that saw nothing both say so.

The expected answers are the table of docs/policies.md written as plain Python rules (``RULES``):
``"nan"`` (every entry ``nan``, one ``UndefinedMetricWarning`` whose reason is ``NO_SAMPLES``),
``"nan_or"`` (``nan``, the reason names its own cause *or* ``NO_SAMPLES``: states that cannot tell them
apart), ``"zero"`` (a count or sum of nothing: 0, no warning). Defined values (task 0 in (d) and (e), the
DDP rank with data) are checked against numpy / scikit-learn (``tests/test_contexts.py``'s references)
over the data fed. No TorchMetrics "compute before update" warning comes from any of these metrics.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import torchmetrics_ext as tmx
from tests.test_contexts import MODULE_METRICS, NAMES, TASKS, K, make_batch, module_batch, module_reference, reference
from torchmetrics_ext.registry import build_metric, metric_names
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

NO_SAMPLES = "no samples seen (no update, or only empty / zero-weight batches)"  # the reason, as documented
BEFORE_UPDATE = "was called before the ``update`` method"  # TorchMetrics' warning: never from our metrics
T, S = 2, 3  # tasks, segments (as tests/test_contexts.py)
RANKING = {"ndcg", "mrr", "map", "recall", "precision", "hit_rate", "f1", "r_precision"}
COUNTERS = {"sum_weights", "num_positive_samples", "weighted_sum_predictions"}


def _stem(name: str) -> str:
    return name.partition("@")[0]


def rule_of(name: str) -> str:
    """The docs table's answer for a registry name that saw nothing."""
    if name in COUNTERS:
        return "zero"
    if _stem(name) in RANKING:
        return "nan_or"  # the sums of queries summed per batch read as those of no sample
    return "nan"


def build_name(name: str) -> Any:
    return build_metric(name, num_tasks=T, **({"num_segments": S} if name == "segmented_ne" else {}))


def tensors(batch: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {key: torch.from_numpy(value.copy()) for key, value in batch.items()}


def feed_batch(metric: Any, batch: dict[str, Tensor]) -> None:
    if "groups" in batch:  # GroupedAUC's positional order: preds, target, groups, weights
        metric.update(batch["preds"], batch["target"], batch["groups"], batch["weights"])
    else:
        metric.update(**batch)


def registry_batch(name: str, *, zero_tasks: tuple[int, ...] = (), all_zero: bool = False) -> dict[str, Tensor]:
    """tests/test_contexts.py's batch (both classes in every group, segment and query), some weights zeroed."""
    batch = tensors(make_batch(name, 0))
    if "weights" not in batch:  # ranking rows: unweighted there
        batch["weights"] = torch.ones_like(batch["preds"])
    if all_zero:
        batch["weights"] = torch.zeros_like(batch["weights"])
    for t in zero_tasks:
        batch["weights"][t] = 0.0
    return batch


# ----------------------------------------------------------------------------- the classes outside the registry

N = 12
_P = torch.linspace(0.05, 0.95, N).roll(5).repeat(T, 1)
_Y = (torch.arange(N) % 2).float().repeat(T, 1)
_IDS = torch.arange(N) // 4  # 3 groups / sessions / queries of 4 rows, both classes in each


def _pointwise(m: Any, w: Tensor) -> None:
    m.update(_P, _Y, w)


def _grouped(m: Any, w: Tensor) -> None:
    m.update(_P, _Y, _IDS, w)


def _session(m: Any, w: Tensor) -> None:
    m.update(_P, _Y, _IDS, w)


def _ranked(m: Any, w: Tensor) -> None:
    m.update(_P[0], _Y[0], _IDS, weights=w[0])


def _multilabel(m: Any, w: Tensor) -> None:
    codes = (torch.arange(T * N) % 8).reshape(T, N)
    m.update(codes, codes.roll(1, -1), w)


def _multiclass(m: Any, w: Tensor) -> None:
    m.update(torch.linspace(0, 1, N * 4).reshape(N, 4), torch.arange(N) % 4, w[0])


def _values(m: Any, w: Tensor) -> None:
    m.update(_P, w)


def _windowed(m: Any, w: Tensor) -> None:
    m.update(_P[0], _Y[0], w[0])


def _segmented(m: Any, w: Tensor) -> None:
    m.update(_P, _Y, w, segments=_IDS)


# id -> (factory, feed(metric, weights (T, N)), rule, multi-task); rules as in rule_of, plus the dict-valued ones
CLASSES: dict[str, tuple[Callable[[], Any], Callable[[Any, Tensor], None], str, bool]] = {
    "GroupedAUC(groups_complete_per_batch)": (
        lambda: tmx.GroupedAUC(T, groups_complete_per_batch=True),
        _grouped,
        "nan_or",
        True,
    ),
    "GroupedAUPRC(groups_complete_per_batch)": (
        lambda: tmx.GroupedAUPRC(T, groups_complete_per_batch=True),
        _grouped,
        "nan_or",
        True,
    ),
    "GroupedAUC(average_groups=all)": (lambda: tmx.GroupedAUC(T, average_groups="all"), _grouped, "nan", True),
    "AUC(num_bins)": (lambda: tmx.AUC(T, num_bins=32), _pointwise, "nan", True),
    "AUPRC(num_bins)": (lambda: tmx.AUPRC(T, num_bins=32), _pointwise, "nan", True),
    "HindsightTargetPR": (lambda: tmx.HindsightTargetPR(T, num_thresholds=11), _pointwise, "hindsight", True),
    "Reliability": (lambda: tmx.Reliability(T, num_bins=4), _pointwise, "reliability", True),
    "MultiLabelPrecision": (lambda: tmx.MultiLabelPrecision(3, T), _multilabel, "nan_or", True),
    "SessionPrecisionAtK": (lambda: tmx.SessionPrecisionAtK(2, T), _session, "nan_or", True),
    "SessionRecallAtK": (lambda: tmx.SessionRecallAtK(2, T), _session, "nan_or", True),
    "SessionPairwiseAUC": (lambda: tmx.SessionPairwiseAUC(T), _session, "nan", True),
    "MulticlassRecallAtK": (lambda: tmx.MulticlassRecallAtK(2, 4), _multiclass, "nan", False),
    "TensorWeightedAverage": (lambda: tmx.TensorWeightedAverage(T), _values, "nan", True),
    "NumMissingLabels": (lambda: tmx.NumMissingLabels(T), _pointwise, "zero", True),
    "NumServingExamples": (lambda: tmx.NumServingExamples(T), _pointwise, "zero", True),
    "RankingMetrics": (lambda: tmx.RankingMetrics(ks=(2,), metrics=("ndcg", "mrr")), _ranked, "nan_or", False),
    "NDCG(queries_complete_per_batch)": (
        lambda: tmx.NDCG(k=2, queries_complete_per_batch=True),
        _ranked,
        "nan_or",
        False,
    ),
    "Windowed(AUC)": (lambda: tmx.Windowed(tmx.AUC(), window_size=8), _windowed, "windowed", False),
    "Segmented(NE)": (lambda: tmx.Segmented(tmx.NormalizedEntropy(T), num_segments=S), _segmented, "nan", True),
}


# ----------------------------------------------------------------------------- checks


def computed(compute: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``compute()``'s value and every warning's message; TorchMetrics' "compute before update" is never one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    assert not [w for w in caught if BEFORE_UPDATE in str(w.message)], [str(w.message) for w in caught]
    others = [w for w in caught if w.category is not UndefinedMetricWarning]
    assert not others, [str(w.message) for w in others]
    return value, [str(w.message) for w in caught]


def _entries(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _entries(v)]
    return [float(x) for x in value.reshape(-1).tolist()]


def _reason_ok(message: str, rule: str) -> bool:
    reason = message.split(": ", 1)[1].removesuffix("; returning nan.")
    if rule == "nan_or":
        return reason.endswith(f", or {NO_SAMPLES}") and reason != NO_SAMPLES
    return reason == NO_SAMPLES


def assert_nothing_seen(value: Any, messages: list[str], rule: str) -> None:
    """The docs table's answer for a metric (or the tasks given) that saw nothing."""
    if rule == "zero":
        assert all(x == 0.0 for x in _entries(value)) and messages == [], (value, messages)
        return
    if rule == "hindsight":  # precision and recall nan, each with its warning; threshold: TorchRec's last one
        assert all(math.isnan(x) for key in ("precision", "recall") for x in _entries(value[key]))
        assert all(x == 1.0 for x in _entries(value["threshold"]))
        assert [m.split(" is undefined")[0] for m in messages] == [
            "HindsightTargetPR.precision",
            "HindsightTargetPR.recall",
        ], messages
    elif rule == "reliability":  # every bin's rates nan, its weight 0: one warning
        assert all(math.isnan(x) for key in ("mean_prediction", "label_rate") for x in _entries(value[key]))
        assert all(x == 0.0 for x in _entries(value["weight"])) and len(messages) == 1, messages
    elif rule == "windowed":  # the lifetime and the window, each with its warning
        assert all(math.isnan(x) for x in _entries(value)) and len(messages) == 2, messages
        assert "(window)" in messages[1]
    else:
        assert all(math.isnan(x) for x in _entries(value)) and len(messages) == 1, (value, messages)
    assert all(_reason_ok(m, "nan" if rule != "nan_or" else rule) for m in messages), messages


CASES = ["a: no update", "b: after reset", "c: zero-weight and empty batches"]
ALL = [(name, None) for name in NAMES] + [(None, key) for key in CLASSES]
IDS = [name or key for name, key in ALL]


def _make(name: str | None, key: str | None) -> tuple[Any, Callable[[Any, Tensor | None], None], str]:
    """A fresh metric, a feeder (``None`` weights: the data batch, else these weights) and its rule."""
    if name is not None:

        def feed(metric: Any, weights: Tensor | None) -> None:
            batch = registry_batch(name)
            if weights is not None:
                batch["weights"] = torch.zeros_like(batch["weights"])
            feed_batch(metric, batch)

        return build_name(name), feed, rule_of(name)
    factory, feed_weights, rule, _ = CLASSES[key]  # type: ignore[index]

    def feed_class(metric: Any, weights: Tensor | None) -> None:
        feed_weights(metric, torch.ones(T, N) if weights is None else weights)

    return factory(), feed_class, rule


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("name", "key"), ALL, ids=IDS)
def test_a_metric_that_saw_nothing_answers_the_same_however_it_got_there(name, key, case):
    metric, feed, rule = _make(name, key)
    if case.startswith("b"):
        feed(metric, None)
        computed(metric.compute)
        metric.reset()
    elif case.startswith("c"):
        if key == "GroupedAUC(average_groups=all)":  # documented: a zero-weight group counts 0.5
            feed(metric, torch.zeros(T, N))
            value, messages = computed(metric.compute)
            assert _entries(value) == [0.5] * T and messages == []
            return
        feed(metric, torch.zeros(T, N))
        feed(metric, torch.zeros(T, N))
    value, messages = computed(metric.compute)
    assert_nothing_seen(value, messages, rule)


# (d): task 1 of a multi-task metric saw only zero weight, task 0 data
MULTI = [(name, None) for name in NAMES if _stem(name) not in RANKING] + [
    (None, key) for key, spec in CLASSES.items() if spec[3]
]


@pytest.mark.parametrize(("name", "key"), MULTI, ids=[name or key for name, key in MULTI])
def test_only_the_task_that_saw_nothing_says_so(name, key):
    if name is not None:
        metric, rule = build_name(name), rule_of(name)
        feed_batch(metric, registry_batch(name, zero_tasks=(1,)))
        # task 0's data is unchanged: its value is the reference over it
        expected_0 = np.asarray(reference(name, [make_batch(name, 0)]), dtype=np.float64).reshape(T, -1)[0]
    else:
        factory, feed_weights, rule, _ = CLASSES[key]
        metric, expected_0 = factory(), None
        weights = torch.ones(T, N)
        weights[1] = 0.0
        feed_weights(metric, weights)
    value, messages = computed(metric.compute)
    per_task = _per_task(value)
    if rule not in ("hindsight", "reliability"):  # (their threshold / empty bins: not rates of task 0's data)
        assert all(math.isfinite(x) for x in per_task[0]), value
    if expected_0 is not None:
        np.testing.assert_allclose(per_task[0], expected_0, rtol=2e-6, atol=1e-9)
    if rule == "zero":
        assert all(x == 0.0 for x in per_task[1]) and messages == [], (value, messages)
        return
    if key == "GroupedAUC(average_groups=all)":  # documented: a zero-weight group counts 0.5
        assert per_task[1] == [0.5] and messages == [], (value, messages)
        return
    if rule not in ("hindsight", "reliability"):
        assert all(math.isnan(x) for x in per_task[1]), value
    flagged = [m for m in messages if "task(s) [1]" in m or "(1, " in m]
    assert flagged and all(_reason_ok(m, rule) for m in flagged), messages


def _per_task(value: Any) -> list[list[float]]:
    """The entries of each task (``(T,)``, ``(T, L)`` values; dicts of them entry by entry)."""
    if isinstance(value, dict):
        parts = [_per_task(v) for v in value.values()]
        return [[x for part in parts for x in part[t]] for t in range(T)]
    return [[float(x) for x in row.reshape(-1).tolist()] for row in value.reshape(T, -1)]


# ----------------------------------------------------------------------------- (e) RecMetricModule


def test_a_module_task_column_of_zero_weight_says_so_for_that_task_only():
    """Task ``b``'s weight column is all zeros: each metric warns once, for ``['b']``, with the table's reason."""
    module = tmx.RecMetricModule(TASKS, MODULE_METRICS, throughput=False)
    batches = [module_batch(seed) for seed in (0, 1)]
    for batch in batches:
        columns = {key: torch.from_numpy(value.copy()) for key, value in batch.items()}
        columns["b_w"] = torch.zeros_like(columns["b_w"])
        module.update(columns)
    values, messages = computed(module.compute)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = module_reference(batches)  # task a's data is unchanged
    for key, want in expected.items():
        if key.endswith("/a"):
            assert float(values[key]) == pytest.approx(want, rel=2e-6, abs=1e-9), key
    for metric_key, spec in MODULE_METRICS.items():
        name = spec if isinstance(spec, str) else spec["metric"]
        rule = rule_of(name)
        got = [
            float(v)
            for k, v in values.items()
            if k.startswith((f"{metric_key}/", f"{metric_key}.")) and k.endswith("/b")
        ]
        assert got, metric_key
        mine = [m for m in messages if m.startswith(f"{metric_key} is undefined")]
        if rule == "zero":
            assert all(x == 0.0 for x in got) and mine == [], (metric_key, got, mine)
            continue
        assert all(math.isnan(x) for x in got), (metric_key, got)
        assert len(mine) == 1 and "'b'" in mine[0] and "'a'" not in mine[0], (metric_key, mine)
        assert _reason_ok(mine[0], rule), mine
    assert len(messages) == sum(
        rule_of(s if isinstance(s, str) else s["metric"]) != "zero" for s in MODULE_METRICS.values()
    )


# ----------------------------------------------------------------------------- (f) DDP

# one metric per family: pointwise sums, exact AUC, grouped, pairwise, ranking, session
DDP_NAMES = ["ne", "auc", "gauc", "xauc", f"ndcg@{K}"]


def _ddp_nothing_seen(rank: int, world_size: int, name: str, data_on: tuple[int, ...]) -> dict[str, Any]:
    """Each rank's value and warnings; only the ranks in ``data_on`` update (with one batch)."""
    metric = build_name(name) if name != "SessionRecallAtK" else tmx.SessionRecallAtK(2, T)
    if rank in data_on:
        if name == "SessionRecallAtK":
            metric.update(_P, _Y, _IDS, torch.ones(T, N))
        else:
            feed_batch(metric, registry_batch(name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    return {"value": _entries(value), "messages": [f"{w.category.__name__}: {w.message}" for w in caught]}


@pytest.mark.ddp
def test_ddp_a_rank_without_data_reports_the_other_ranks_value_without_a_warning(ddp_pool):
    """Rank 0 saw nothing (TorchMetrics' warning is rank 0's), rank 1 one batch: both report the value over
    rank 1's batch, the reference over the concatenated data, and neither warns."""
    for name in DDP_NAMES:
        results = ddp_pool.run(_ddp_nothing_seen, name, (1,))
        expected = np.asarray(reference(name, [make_batch(name, 0)]), dtype=np.float64).reshape(-1)
        for result in results:
            assert result["messages"] == [], (name, result)
            np.testing.assert_allclose(result["value"], expected, rtol=2e-6, atol=1e-9, err_msg=name)
    # sessions: recall over the three sessions of 4 rows of one rank (the top 2 of each hold one of its 2 positives)
    results = ddp_pool.run(_ddp_nothing_seen, "SessionRecallAtK", (1,))
    expected_recall = _session_recall_reference(_P[0].tolist(), _Y[0].tolist(), _IDS.tolist(), 2)
    for result in results:
        assert result["messages"] == [] and result["value"] == pytest.approx([expected_recall] * T), result


def _session_recall_reference(preds: list[float], target: list[float], sessions: list[int], k: int) -> float:
    """Mean over sessions with a positive of (positives among the top k) / positives, in plain Python."""
    recalls = []
    for s in sorted(set(sessions)):
        rows = [(p, y) for p, y, g in zip(preds, target, sessions, strict=True) if g == s]
        top = sorted(rows, key=lambda r: -r[0])[:k]
        positives = sum(y for _, y in rows)
        if positives:
            recalls.append(sum(y for _, y in top) / positives)
    return sum(recalls) / len(recalls)


@pytest.mark.ddp
def test_ddp_two_ranks_that_saw_nothing_both_say_so(ddp_pool):
    for name in [*DDP_NAMES, "SessionRecallAtK"]:
        rule = "nan_or" if name == "SessionRecallAtK" else rule_of(name)
        for result in ddp_pool.run(_ddp_nothing_seen, name, ()):
            assert all(math.isnan(x) for x in result["value"]) and len(result["messages"]) == 1, (name, result)
            category, message = result["messages"][0].split(": ", 1)
            assert category == "UndefinedMetricWarning" and _reason_ok(message, rule), (name, result)


def test_the_docs_table_lists_every_registry_name_and_public_class():
    """docs/policies.md's "Nothing seen" table names each registry name and public metric class."""
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("docs", "policies.md").read_text()
    table = text.split("### Nothing seen", 1)[1].split("\n## ", 1)[0]
    classes = [n for n in tmx.__all__ if isinstance(getattr(tmx, n), type) and hasattr(getattr(tmx, n), "compute")]
    classes = [n for n in classes if n not in ("GuardedMetric", "TaskMetric", "InputDomains")]
    registry = metric_names()
    missing = [n for n in itertools.chain(classes, registry) if f"`{n}`" not in table]
    assert not missing, missing


class _Ticks:
    """A clock reading 0, 1, 2, ... seconds."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("case", CASES)
def test_the_rate_metrics_that_saw_nothing(case):
    """Throughput: rates nan with NO_SAMPLES, 0 examples; after timed empty batches 0 examples per second.
    TowerQPS: 0 before any timed step, as TorchRec, without a warning."""
    throughput = tmx.Throughput(warmup_steps=0, clock=_Ticks())
    qps = tmx.TowerQPS(warmup_steps=1, clock=_Ticks())
    if case.startswith("b"):
        throughput.update(torch.zeros(5))
        qps.update(torch.zeros(5))
        qps.update(torch.zeros(5))
        computed(throughput.compute)
        computed(qps.compute)
        throughput.reset()
        qps.reset()
    elif case.startswith("c"):
        for _ in range(2):
            throughput.update(torch.zeros(0))
            qps.update(num_examples=0)
    value, messages = computed(throughput.compute)
    rates = [float(value["lifetime_throughput"]), float(value["window_throughput"])]
    assert float(value["total_examples"]) == 0.0
    if case.startswith("c"):  # two steps timed (1 s each on the clock), no example in them
        assert rates == [0.0, 0.0] and messages == [], (value, messages)
    else:
        assert all(math.isnan(x) for x in rates) and messages == [
            f"Throughput is undefined: {NO_SAMPLES}; returning nan."
        ]
    value, messages = computed(qps.compute)
    assert float(value) == 0.0 and messages == [], (value, messages)
