"""One rule for a wrong type (docs/policies.md, "Wrong types"): ``WrongTypeError``, a ``TypeError`` and a ``ValueError``.

The reference is Python's own convention, read off each argument in the table below: a value whose Python
type (or tensor dtype/layout) the argument does not take is a wrong type (``TypeError``); a value of a type
it takes, refused for what it is (out of range, an unknown name, an empty list), is a wrong value
(``ValueError`` only). Before the rule, settings, configs and most module checks raised ``ValueError``
for a wrong type and tensor, aggregation and Hugging Face checks ``TypeError``: each wrong type is now
caught by both, so a caller's ``except ValueError`` or ``except TypeError`` written against either
answer still catches it. Every family is covered: metric settings, tensor inputs, wrappers,
``RecMetricModule`` (constructor, ``from_config``, ``from_torchrec_config``, ``update``), the aggregation
records and transforms, ``evaluate``'s arguments and the Hugging Face builders.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import (
    AggregationType,
    DefaultTrainingMetricTransform,
    Distribution,
    Mean,
    Metric,
    MetricsAggregator,
)
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics

FRAME = pd.DataFrame({"p": [0.2, 0.7, 0.4], "y": [0, 1, 1]})
HEADS = [tmx.RecTaskInfo("click", "y_click", "p_click"), tmx.RecTaskInfo("like", "y_like", "p_like")]


def _module() -> tmx.RecMetricModule:
    return tmx.RecMetricModule(["click"], ["ne"], throughput=False)


def _aggregate(value: Any) -> None:
    MetricsAggregator().update([Metric("ds", "loss", value, AggregationType.SUM)])


# name -> (the call, the argument its message names, what the argument was given: "type" or "value")
CASES: dict[str, tuple[Callable[[], Any], str, str]] = {
    # metric settings: a str or float where an int goes, 1 where a flag goes, a str or mapping where a sequence goes
    "k_str": (lambda: tmx.NDCG(k="10"), "`k`", "type"),
    "k_zero": (lambda: tmx.NDCG(k=0), "`k`", "value"),
    "num_bins_float": (lambda: tmx.AUC(num_bins=10.0), "`num_bins`", "type"),
    "num_bins_one": (lambda: tmx.AUC(num_bins=1), "`num_bins`", "value"),
    "bin_space_int": (lambda: tmx.AUC(num_bins=8, bin_space=3), "`bin_space`", "type"),
    "bin_space_unknown": (lambda: tmx.AUC(num_bins=8, bin_space="prob"), "`bin_space`", "value"),
    "eta_str": (lambda: tmx.NormalizedEntropy(eta="0.1"), "`eta`", "type"),
    "eta_too_large": (lambda: tmx.NormalizedEntropy(eta=0.7), "`eta`", "value"),
    "adaptive_k_int": (lambda: tmx.RankingMetrics(ks=(5,), metrics=("ndcg",), adaptive_k=1), "`adaptive_k`", "type"),
    "ranking_metrics_str": (lambda: tmx.RankingMetrics(ks=(5,), metrics="ndcg"), "`metrics`", "type"),
    "ranking_metrics_unknown": (lambda: tmx.RankingMetrics(ks=(5,), metrics=("nope",)), "`metrics`", "value"),
    "ks_item_str": (lambda: tmx.RankingMetrics(ks=("5",), metrics=("ndcg",)), "`ks`", "type"),
    "ks_item_zero": (lambda: tmx.RankingMetrics(ks=(0,), metrics=("ndcg",)), "`ks`", "value"),
    "percentiles_str": (lambda: Distribution(percentiles="50"), "`percentiles`", "type"),
    "percentiles_mapping": (lambda: Distribution(percentiles={"p": 50}), "`percentiles`", "type"),
    "percentiles_out_of_range": (lambda: Distribution(percentiles=(150,)), "`percentiles`", "value"),
    "nan_strategy_list": (lambda: Mean(nan_strategy=[1]), "`nan_strategy`", "type"),
    "nan_strategy_unknown": (lambda: Mean(nan_strategy="bogus"), "`nan_strategy`", "value"),
    "window_size_str": (lambda: tmx.Windowed(tmx.AUC(), window_size="8"), "`window_size`", "type"),
    "window_size_zero": (lambda: tmx.Windowed(tmx.AUC(), window_size=0), "`window_size`", "value"),
    # tensor inputs: a list or an integer tensor where floats go, float ids
    "preds_list": (lambda: tmx.AUC().update([0.1, 0.9], torch.tensor([1, 0])), "`preds`", "type"),
    "preds_int_tensor": (lambda: tmx.AUC().update(torch.tensor([1, 0]), torch.tensor([1, 0])), "`preds`", "type"),
    "preds_out_of_range": (
        lambda: tmx.AUC().update(torch.tensor([0.5, 2.0]), torch.tensor([1, 0])),
        "`preds`",
        "value",
    ),
    "groups_float": (
        lambda: tmx.GroupedAUC().update(torch.tensor([0.5, 0.2]), torch.tensor([1, 0]), torch.tensor([0.0, 1.0])),
        "`groups`",
        "type",
    ),
    "merge_state_str": (lambda: tmx.AUC().merge_state("auc"), "incoming state", "type"),
    # RecMetricModule: its settings, configs and steps
    "prefix_int": (lambda: tmx.RecMetricModule(["click"], ["ne"], prefix=3), "`prefix`", "type"),
    "key_style_unknown": (lambda: tmx.RecMetricModule(["click"], ["ne"], key_style="x"), "`key_style`", "value"),
    "throughput_int": (lambda: tmx.RecMetricModule(["click"], ["ne"], throughput=1), "`throughput`", "type"),
    "from_logits_str": (lambda: tmx.RecMetricModule(["click"], ["ne"], from_logits="yes"), "`from_logits`", "type"),
    "metric_tasks_list": (lambda: tmx.RecMetricModule(HEADS, ["ne"], metric_tasks=["click"]), "`metric_tasks`", "type"),
    "metric_tasks_empty": (
        lambda: tmx.RecMetricModule(HEADS, ["ne"], metric_tasks={"ne": []}),
        "metric_tasks",
        "value",
    ),
    "config_str": (lambda: tmx.RecMetricModule.from_config("ne"), "config", "type"),
    "config_unknown_key": (
        lambda: tmx.RecMetricModule.from_config({"tasks": ["click"], "metrics": ["ne"], "bogus": 1}),
        "config keys",
        "value",
    ),
    "config_metric_int": (
        lambda: tmx.RecMetricModule.from_config({"tasks": ["click"], "metrics": [3]}),
        "'metrics'",
        "type",
    ),
    "config_tasks_str": (
        lambda: tmx.RecMetricModule.from_config({"tasks": "click", "metrics": ["ne"]}),
        "'tasks'",
        "type",
    ),
    "torchrec_config_str": (lambda: tmx.RecMetricModule.from_torchrec_config("ne"), "`config`", "type"),
    "model_out_list": (lambda: _module().update([0.2, 0.7]), "`model_out`", "type"),
    "model_out_column_list": (
        lambda: _module().update({"prediction": [0.2], "label": torch.tensor([1.0])}),
        "`model_out['prediction']`",
        "type",
    ),
    "model_out_column_out_of_range": (
        lambda: _module().update({"prediction": torch.tensor([2.0]), "label": torch.tensor([1.0])}),
        "`model_out['prediction']`",
        "value",
    ),
    # aggregation: records, transforms, logging
    "record_value_str": (lambda: _aggregate("a"), "'loss'", "type"),
    "record_value_nan": (lambda: _aggregate(math.nan), "'loss'", "value"),
    "logging_prefix_int": (lambda: MetricsAggregator().get_metrics_for_logging(prefix=3), "`prefix`", "type"),
    "dataset_name_none": (lambda: DefaultTrainingMetricTransform().set_dataset_name(None), "`dataset_name`", "type"),
    "dataset_name_empty": (lambda: DefaultTrainingMetricTransform().set_dataset_name(""), "`dataset_name`", "value"),
    # evaluate's Python API
    "evaluate_task_name_bool": (lambda: evaluate(FRAME, {True: ("p", "y")}, ["ctr"]), "`tasks`", "type"),
    "evaluate_metrics_str": (lambda: evaluate(FRAME, {"click": ("p", "y")}, "ctr,ne"), "`metrics`", "type"),
    "evaluate_metrics_empty": (lambda: evaluate(FRAME, {"click": ("p", "y")}, []), "`metrics`", "value"),
    "evaluate_by_int": (lambda: evaluate(FRAME, {"click": ("p", "y")}, ["ctr"], by=3), "`by`", "type"),
    # the Hugging Face builders
    "hf_metrics_mapping": (lambda: pointwise_compute_metrics(metrics={"auc": {}}), "`metrics`", "type"),
    "hf_key_names_list": (lambda: ranking_compute_metrics(key_names=["Recall"]), "`key_names`", "type"),
    "hf_label_names_str": (lambda: pointwise_compute_metrics(["auc"], label_names="labels"), "`label_names`", "type"),
}


def _raised(call: Callable[[], Any]) -> Exception:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as error:  # the class is what is checked
            return error
    raise AssertionError("nothing raised")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_wrong_type_is_both_errors_and_a_wrong_value_a_value_error(name: str) -> None:
    call, argument, given = CASES[name]
    error = _raised(call)
    assert argument in str(error), str(error)
    assert isinstance(error, ValueError), type(error)  # `except ValueError` catches every refused argument
    if given == "type":
        assert type(error) is tmx.WrongTypeError
        assert isinstance(error, TypeError)
    else:
        assert type(error) is ValueError


def test_the_class_is_public_and_both_builtin_errors() -> None:
    assert "WrongTypeError" in tmx.__all__
    assert issubclass(tmx.WrongTypeError, TypeError) and issubclass(tmx.WrongTypeError, ValueError)
    assert tmx.WrongTypeError.__module__ == "torchmetrics_ext"  # how tracebacks print it: where users import it


def test_a_call_python_itself_refuses_stays_a_plain_type_error() -> None:
    """Calling a ``RecMetricModule`` is no argument's value: Python's own ``TypeError`` (docs/policies.md)."""
    step = {"prediction": torch.tensor([0.2]), "label": torch.tensor([1.0])}
    error = _raised(lambda: _module()(step))
    assert type(error) is TypeError, (type(error), error)


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda: tmx.NDCG(top_k=10), "`top_k`"),
        (lambda: tmx.NDCG(top_k=5.0), "`top_k`"),
        (lambda: tmx.HitRate(top_k="5"), "`top_k`"),
        (lambda: tmx.RankingMetrics(top_k=5), "`top_k`"),
        (lambda: tmx.Throughput(num_tasks=2), "`num_tasks`"),
        (lambda: tmx.MulticlassRecallAtK(2, 3, num_tasks=2.0), "`num_tasks`"),
    ],
)
def test_a_keyword_refused_by_name_is_caught_by_both_except_clauses(call: Callable[[], Any], named: str) -> None:
    """`top_k` (TorchMetrics' cutoff) and `num_tasks` on a metric without tasks were a plain ``TypeError``, which
    ``except ValueError`` (what every other unknown keyword on a metric raises, TorchMetrics' rule) missed."""
    error = _raised(call)
    assert type(error) is tmx.WrongTypeError, (type(error), error)
    assert named in str(error), str(error)


def test_a_rejected_argument_leaves_the_state_untouched() -> None:
    """The rule changes the class only: a rejected update still changes nothing."""
    auc = tmx.AUC()
    auc.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    before = {k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in auc.metric_state.items()}
    with pytest.raises(tmx.WrongTypeError, match="`preds`"):
        auc.update(torch.tensor([1, 0]), torch.tensor([1, 0]))
    after = auc.metric_state
    for key, value in before.items():
        if isinstance(value, list):
            assert len(value) == len(after[key]) and all(torch.equal(a, b) for a, b in zip(value, after[key]))
        else:
            assert torch.equal(value, after[key])
    assert auc.compute().item() == 1.0  # the one batch it took: sklearn's roc_auc_score([0, 1], [0.2, 0.8])


_REQUIRED = {"k": 1, "num_classes": 3, "num_labels": 3, "window_size": 3, "num_segments": 2}


def _metric_classes() -> list[str]:
    import inspect

    import torchmetrics

    return sorted(
        name
        for name in tmx.__all__
        if inspect.isclass(cls := getattr(tmx, name))
        and issubclass(cls, torchmetrics.Metric)
        and not inspect.isabstract(cls)
    )


@pytest.mark.parametrize("name", _metric_classes())
def test_an_unknown_keyword_on_a_metric_is_torchmetrics_plain_value_error(name: str) -> None:
    """docs/policies.md: every metric takes `**kwargs`, so TorchMetrics' "Unexpected keyword arguments" ValueError."""
    import inspect

    cls = getattr(tmx, name)
    params = inspect.signature(cls).parameters
    required = [p.name for p in params.values() if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
    args = {p: tmx.CTR() if p == "metric" else _REQUIRED[p] for p in required}
    error = _raised(lambda: cls(**args, batch_size=1))
    assert type(error) is ValueError, (type(error), error)  # not a TypeError: `except ValueError` code relies on it
    assert str(error).startswith(f"Unexpected keyword arguments: `batch_size` for {name}."), error


def test_an_unknown_keyword_on_a_class_without_kwargs_stays_python_type_error() -> None:
    for call in (
        lambda: tmx.RecMetricModule(["click"], ["ne"], batch_size=1),
        lambda: tmx.RecTaskInfo("click", batch_size=1),
    ):
        error = _raised(call)
        assert type(error) is TypeError and "batch_size" in str(error), (type(error), error)
