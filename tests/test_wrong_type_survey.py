"""Every public entry point given arguments of a wrong type: ``WrongTypeError`` naming the argument, state untouched.

docs/policies.md ("Wrong types"): a wrong type given to one of the package's arguments raises
``tmx.WrongTypeError`` (a ``TypeError`` and a ``ValueError``), and its message names the argument. The reference
is Python's convention, read off each parameter's annotation: a float or a bool where an ``int`` goes, a string
or an int where a flag goes, a string where a number goes, a string or an int where a sequence goes, a string, a
list or an int where a tensor goes, and ``None`` where a value is required are wrong types. The survey walks
every metric class of ``tmx.__all__`` (constructor and ``update``) and every function of ``tmx.functional``, so a
parameter added later is checked without a new line here; a refused ``update`` must leave ``state_dict`` (every
state made persistent) and the update count as they were.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import torch
import torchmetrics

import torchmetrics_ext as tmx
import torchmetrics_ext.functional as F
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
from torchmetrics_ext.evaluate import evaluate

_REQUIRED = {"k": 2, "num_classes": 3, "num_labels": 3, "num_segments": 2, "window_size": 4}
_RANKING = {"NDCG", "RecallAtK", "PrecisionAtK", "MRR", "HitRate", "MAP", "F1AtK", "RPrecision", "RankingMetrics"}
_RANKING |= {"ndcg", "recall_at_k", "precision_at_k", "mrr", "hit_rate", "map_at_k", "f1_at_k", "r_precision"}
_RANKING |= {"ranking_metrics"}
_TENSORS = ("preds", "target", "weights", "indexes", "mask", "groups", "sessions", "values", "segments", "batch")
_TENSORS += ("num_examples",)


def _batch(name: str) -> dict[str, Any]:
    """A valid batch for the class or function ``name``, by keyword."""
    p = torch.tensor([0.2, 0.7, 0.4, 0.9, 0.1, 0.6])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    if name in _RANKING:
        if name[0].isupper():  # the classes: padded lists with a mask and a weight per query
            return {"preds": p.reshape(2, 3), "target": y.reshape(2, 3), "mask": torch.ones(2, 3, dtype=torch.bool)}
        return {"preds": p, "target": y, "indexes": ids, "weights": torch.ones(6)}  # the functions: flat rows
    if name in ("GroupedAUC", "GroupedAUPRC", "grouped_auc", "grouped_auprc"):
        return {"preds": p, "target": y, "groups": ids, "weights": torch.ones(6)}
    if name in (
        "SessionPrecisionAtK",
        "SessionRecallAtK",
        "SessionPairwiseAUC",
        "session_precision_at_k",
        "session_recall_at_k",
        "session_pairwise_auc",
    ):
        return {"preds": p, "target": y, "sessions": ids, "weights": torch.ones(6)}
    if name in ("MulticlassRecallAtK", "multiclass_recall_at_k"):
        return {"preds": p.reshape(2, 3), "target": torch.tensor([0, 2])}
    if name in ("MultiLabelPrecision", "multi_label_precision"):
        return {"preds": torch.tensor([5, 3, 1]), "target": torch.tensor([1, 3, 4])}  # label sets as bit codes
    if name in ("TensorWeightedAverage", "tensor_weighted_average"):
        return {"values": p, "weights": torch.ones(6)}
    if name == "distribution":
        return {"values": p}
    if name == "Throughput":
        return {"batch": p}
    if name == "TowerQPS":
        return {"preds": p, "target": y, "num_examples": 6}
    if name == "Segmented":
        return {"preds": p, "target": y, "segments": torch.tensor([0, 1, 0, 1, 0, 1])}
    return {"preds": p, "target": y, "weights": torch.ones(6)}


def _wrong_settings(parameter: inspect.Parameter) -> list[object]:
    """Values of a wrong Python type for a setting, from its annotation (Python's convention)."""
    annotation = str(parameter.annotation)
    if "Tensor" in annotation and "Sequence" not in annotation:
        wrong: list[object] = ["x", [0.5, 0.5]]
    elif annotation.startswith("int"):
        wrong = [2.5, "2", True]
    elif annotation.startswith("bool") and "Sequence" not in annotation and "Throughput" not in annotation:
        wrong = [1, "yes"]
    elif any(word in annotation for word in ("Sequence", "tuple", "list")):
        wrong = ["ab", 3]
    elif annotation.startswith("float"):
        wrong = ["0.5", True]
    elif any(word in annotation for word in ("str", "Average", "Baseline", "LogUnit", "Callable")):
        wrong = [3]
    else:
        wrong = []
    if parameter.default is parameter.empty and "None" not in annotation:
        wrong.append(None)
    return wrong


def _wrong_inputs(name: str, argument: str) -> list[object]:
    """Values of a wrong Python type for a tensor input: a string, a list, an int; ``None`` where one is required."""
    if (name, argument) == ("Throughput", "batch"):  # an int is a count, a list of tensors a batch
        return ["x", 2.5, None, [0.5, 0.5]]
    if (name, argument) == ("TowerQPS", "num_examples"):  # an int is a count
        return ["x", 2.5, True, [6]]
    wrong: list[object] = ["x", [0.5] * 6, 3]
    optional = argument in ("weights", "mask") or (argument == "target" and _target_optional(name))
    if not optional and (name, argument) != ("TowerQPS", "preds"):  # `num_examples` stands for TowerQPS's preds
        wrong.append(None)
    return wrong


def _target_optional(name: str) -> bool:
    target = _signature(name).get("target")
    return target is not None and target.default is None


def _signature(name: str) -> dict[str, inspect.Parameter]:
    entry = getattr(tmx, name, None) if name[0].isupper() else getattr(F, name)
    function = entry.update if inspect.isclass(entry) else entry
    return dict(inspect.signature(function).parameters)


def _classes() -> list[str]:
    return sorted(
        name
        for name in tmx.__all__
        if inspect.isclass(cls := getattr(tmx, name))
        and issubclass(cls, torchmetrics.Metric)
        and not inspect.isabstract(cls)
        and name not in ("GuardedMetric", "TaskMetric")  # bases
    )


def _required(cls: type) -> dict[str, Any]:
    return {
        p.name: tmx.CTR() if p.name == "metric" else _REQUIRED[p.name]
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _cases() -> list[tuple[str, str, str]]:
    """``(entry point, argument, kind)``: kind ``"setting"`` (constructor or function keyword) or ``"input"``."""
    cases = []
    for name in _classes():
        cls = getattr(tmx, name)
        for p in inspect.signature(cls).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and _wrong_settings(p):
                cases.append((name, p.name, "setting"))
        if name not in ("Windowed", "Segmented"):  # the wrappers take the wrapped metric's
            cases.append((name, "validate_args", "setting"))
        cases += [(name, argument, "input") for argument in _batch(name)]
    for name in F.__all__:
        inputs = _batch(name)
        cases += [(name, argument, "input") for argument in inputs]
        for p in inspect.signature(getattr(F, name)).parameters.values():
            if p.name not in inputs and p.name not in _TENSORS and _wrong_settings(p):
                cases.append((name, p.name, "setting"))
    return cases


def _raised(call: Callable[[], Any]) -> Exception:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as error:  # the class is what is checked
            return error
    raise AssertionError("nothing raised")


def _assert_wrong_type(error: Exception, argument: str, given: object) -> None:
    assert type(error) is tmx.WrongTypeError, (argument, given, type(error), error)
    assert isinstance(error, TypeError) and isinstance(error, ValueError)
    message = str(error)
    assert f"`{argument}" in message or f"'{argument}'" in message, (argument, given, message)


def _snapshot(metric: torchmetrics.Metric) -> tuple[dict[str, Any], int]:
    state = {}
    for key, value in metric.state_dict().items():
        if isinstance(value, torch.Tensor):
            state[key] = value.clone()
        elif isinstance(value, list):
            state[key] = [v.clone() for v in value]
        else:
            state[key] = value
    return state, metric._update_count


def _assert_same(before: tuple[dict[str, Any], int], after: tuple[dict[str, Any], int]) -> None:
    assert before[1] == after[1]
    assert before[0].keys() == after[0].keys()
    for key, value in before[0].items():
        other = after[0][key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value.nan_to_num(), other.nan_to_num()) and value.dtype == other.dtype, key
        elif isinstance(value, list):
            assert len(value) == len(other) and all(torch.equal(a, b) for a, b in zip(value, other)), key
        else:
            assert value == other, key


@pytest.mark.parametrize(("entry", "argument", "kind"), _cases(), ids=lambda x: str(x))
def test_every_wrong_type_is_a_wrong_type_error_naming_the_argument(entry: str, argument: str, kind: str) -> None:
    batch = _batch(entry)
    if entry[0].isupper():
        cls = getattr(tmx, entry)
        required = _required(cls)
        if kind == "setting":
            parameter = inspect.signature(cls).parameters.get(argument)
            wrong = [1, "yes"] if parameter is None else _wrong_settings(parameter)  # validate_args: a flag
            for given in wrong:
                _assert_wrong_type(_raised(lambda given=given: cls(**{**required, argument: given})), argument, given)
            return
        metric = cls(**required)
        metric.update(**batch)
        metric.persistent(True)
        for given in _wrong_inputs(entry, argument):
            before = _snapshot(metric)
            _assert_wrong_type(
                _raised(lambda given=given: metric.update(**{**batch, argument: given})), argument, given
            )
            _assert_same(before, _snapshot(metric))
        return
    function = getattr(F, entry)
    keywords = {
        p.name: _REQUIRED[p.name]
        for p in inspect.signature(function).parameters.values()
        if p.default is p.empty and p.kind is p.KEYWORD_ONLY
    }
    function(**batch, **keywords)  # the batch is valid
    if kind == "setting":
        wrong = _wrong_settings(inspect.signature(function).parameters[argument])
        for given in wrong:
            _assert_wrong_type(
                _raised(lambda given=given: function(**batch, **{**keywords, argument: given})), argument, given
            )
        return
    for given in _wrong_inputs(entry, argument):
        _assert_wrong_type(
            _raised(lambda given=given: function(**{**batch, argument: given}, **keywords)), argument, given
        )


def test_the_survey_reaches_every_entry_point() -> None:
    """Every metric class and every function is surveyed, each with its inputs and its settings."""
    cases = _cases()
    entries = {entry for entry, _, _ in cases}
    assert entries == set(_classes()) | set(F.__all__)
    assert len(cases) > 600
    assert ("AUC", "num_bins", "setting") in cases and ("ndcg", "indexes", "input") in cases
    assert ("normalized_entropy", "validate_args", "setting") in cases


FRAME = pd.DataFrame({"p": [0.2, 0.7, 0.4], "y": [0, 1, 1]})


# entry points outside the metric classes and functions, with arguments the survey above does not reach
@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: tmx.Throughput().update([0.5, 0.5]), "batch"),  # a list holding no tensor (was a plain ValueError)
        (lambda: tmx.Throughput().update({"a": [1, 2]}), "batch"),
        (lambda: tmx.TowerQPS().update(torch.rand(3), "x"), "target"),  # TorchRec's unread `target` (was taken)
        (lambda: tmx.TowerQPS().update("x", num_examples=3), "preds"),
        (lambda: MetricsAggregator().update([Metric("ds", "loss", 1.0, "sum")]), "agg_type"),  # was a ValueError
        (lambda: MetricsAggregator().update([Metric("ds", "loss", 1.0, None)]), "agg_type"),
        (lambda: MetricsAggregator().load_state_dict("state.pt"), "state dict"),  # a path, not the dict
        (lambda: evaluate(FRAME, {"c": ("p", "y")}, ["ctr"], progress="no"), "progress"),  # printed progress
    ],
)
def test_wrong_types_of_the_other_entry_points(call: Callable[[], Any], argument: str) -> None:
    error = _raised(call)
    assert type(error) is tmx.WrongTypeError, (type(error), error)
    assert argument in str(error), str(error)


@pytest.mark.parametrize(
    "call",
    [
        lambda: tmx.Throughput().update([]),  # a sequence, empty: a wrong value
        lambda: tmx.Throughput().update({"loss": torch.tensor(0.3)}),  # tensors, none with a batch dimension
        lambda: MetricsAggregator().load_state_dict({"tensors": {}}),  # a dict of another format
    ],
)
def test_wrong_values_of_a_right_type_stay_plain_value_errors(call: Callable[[], Any]) -> None:
    assert type(_raised(call)) is ValueError


def test_a_refused_aggregator_record_changes_nothing() -> None:
    aggregator = MetricsAggregator()
    aggregator.update([Metric("ds", "loss", 2.0, AggregationType.SUM)])
    before = aggregator.state_dict()
    with pytest.raises(tmx.WrongTypeError, match="agg_type"):
        aggregator.update([Metric("ds", "loss", 1.0, AggregationType.SUM), Metric("ds", "n", 1.0, "sum")])
    after = aggregator.state_dict()
    assert before["metadata"] == after["metadata"]
    assert aggregator.get_metrics_for_logging(prefix="train") == {"train_ds/loss": 2.0}  # 2.0: the first record only


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda: tmx.NDCG(top_k=10), "has no `top_k` argument"),
        (lambda: tmx.Throughput(num_tasks=2), "takes no `num_tasks`"),
        (lambda: tmx.RPrecision(k=3), "takes no `k`"),
        (lambda: tmx.RecalibratedCalibration(eta=0.1), "has no `eta`"),
        (lambda: evaluate([], {"c": ("p", "y")}, ["ctr"]), "got an empty list"),
        (lambda: tmx.Throughput().plot([]), "got an empty list"),  # said "got list"
        (lambda: tmx.Windowed(tmx.CTR(), window_size=4).plot([]), "got an empty list"),
    ],
)
def test_wrong_type_errors_kept_for_compatibility_say_the_problem(call: Callable[[], Any], said: str) -> None:
    """docs/policies.md lists them: not wrong types, kept both errors so no `except` breaks; the message says what."""
    error = _raised(call)
    assert type(error) is tmx.WrongTypeError, (type(error), error)
    assert said in str(error), str(error)
    assert "to be a torch.Tensor" not in str(error) and "type" not in str(error).lower().replace("dtype", "")
