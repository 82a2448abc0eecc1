"""Wrong types found in review: each raised a plain ``ValueError`` (or no argument error) where docs/policies.md
("Wrong types") asks for ``tmx.WrongTypeError`` (a ``TypeError`` and a ``ValueError``).

The reference is Python's convention as the policy spells it: a string where a list goes (``metrics="ndcg"``),
a mapping where a list goes, an int where a name goes, an int where a tensor goes are wrong types; an empty
list is a wrong value (plain ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.functional import ndcg, recall_at_k
from torchmetrics_ext.registry import torchrec_name_hint


def _torchrec(rec_metrics: Any) -> tmx.RecMetricModule:
    return tmx.RecMetricModule.from_torchrec_config({"rec_tasks": [{"name": "a"}], "rec_metrics": rec_metrics})


P = torch.tensor([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3]])
Y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
FRAME = pd.DataFrame({"p": [0.2, 0.7], "y": [0, 1]})

# name -> (call, text the message names, "type" or "value")
CASES: dict[str, tuple[Callable[[], Any], str, str]] = {
    "module_tasks_str": (lambda: tmx.RecMetricModule("click", ["ne"]), "`tasks`", "type"),
    "module_tasks_mapping": (lambda: tmx.RecMetricModule({"click": 1}, ["ne"]), "`tasks`", "type"),
    "module_tasks_item_int": (lambda: tmx.RecMetricModule([3], ["ne"]), "`tasks`", "type"),
    "module_tasks_empty": (lambda: tmx.RecMetricModule([], ["ne"]), "`tasks`", "value"),
    "module_metrics_str": (lambda: tmx.RecMetricModule(["click"], "ne"), "`metrics`", "type"),
    "module_metrics_int": (lambda: tmx.RecMetricModule(["click"], 3), "`metrics`", "type"),
    "module_metrics_empty_dict": (lambda: tmx.RecMetricModule(["click"], {}), "`metrics`", "value"),
    "module_metrics_empty_list": (lambda: tmx.RecMetricModule(["click"], []), "`metrics`", "value"),
    "config_task_int": (
        lambda: tmx.RecMetricModule.from_config({"tasks": [3], "metrics": ["ne"]}),
        "a task name",
        "type",
    ),
    "task_info_name_int": (lambda: tmx.RecTaskInfo(3), "`RecTaskInfo.name`", "type"),
    "task_info_name_empty": (lambda: tmx.RecTaskInfo(""), "`RecTaskInfo.name`", "value"),
    "task_info_label_name_int": (lambda: tmx.RecTaskInfo("a", label_name=3), "`RecTaskInfo.label_name`", "type"),
    "task_info_weight_name_empty": (lambda: tmx.RecTaskInfo("a", weight_name=""), "`RecTaskInfo.weight_name`", "value"),
    "state_metrics_value_int": (
        lambda: tmx.RecMetricModule(["c"], ["ne"], state_metrics={"x": 3}),
        "`state_metrics`",
        "type",
    ),
    "state_metrics_name_int": (
        lambda: tmx.RecMetricModule(["c"], ["ne"], state_metrics={3: lambda: 1.0}),
        "`state_metrics`",
        "type",
    ),
    "state_metrics_name_empty": (
        lambda: tmx.RecMetricModule(["c"], ["ne"], state_metrics={"": lambda: 1.0}),
        "`state_metrics`",
        "value",
    ),
    "state_metrics_list": (lambda: tmx.RecMetricModule(["c"], ["ne"], state_metrics=[1]), "`state_metrics`", "type"),
    "evaluate_tasks_int": (lambda: evaluate(FRAME, 3, ["ctr"]), "`tasks`", "type"),
    "evaluate_tasks_empty_dict": (lambda: evaluate(FRAME, {}, ["ctr"]), "`tasks`", "value"),
    "evaluate_task_columns_int": (lambda: evaluate(FRAME, {"c": 3}, ["ctr"]), "task 'c'", "type"),
    "evaluate_task_columns_three": (lambda: evaluate(FRAME, {"c": ("p", "y", "y")}, ["ctr"]), "task 'c'", "value"),
    "evaluate_on_invalid_int": (
        lambda: evaluate(FRAME, {"c": ("p", "y")}, ["ctr"], on_invalid=1),
        "`on_invalid`",
        "type",
    ),
    "evaluate_on_invalid_unknown": (
        lambda: evaluate(FRAME, {"c": ("p", "y")}, ["ctr"], on_invalid="drop"),
        "`on_invalid`",
        "value",
    ),
    "torchrec_metric_key_int": (lambda: _torchrec({3: {}}), "TorchRec metric", "type"),
    "torchrec_metric_key_unknown": (lambda: _torchrec({"nope": {}}), "TorchRec metric", "value"),
    "torchrec_rec_metrics_list": (lambda: _torchrec(["ne"]), "`rec_metrics`", "type"),
    "torchrec_rec_metrics_empty": (lambda: _torchrec({}), "`rec_metrics`", "value"),
    "torchrec_name_hint_int": (lambda: torchrec_name_hint(3), "`name`", "type"),  # type: ignore[arg-type]
    "evaluate_weights_int": (lambda: evaluate(FRAME, {"c": ("p", "y")}, ["ctr"], weights=3), "`weights`", "type"),
    "evaluate_weights_empty": (lambda: evaluate(FRAME, {"c": ("p", "y")}, ["ctr"], weights=""), "`weights`", "value"),
    "ndcg_indexes_int_2d": (lambda: ndcg(P, Y, 3), "`indexes=None`", "type"),
    "recall_indexes_list_2d": (lambda: recall_at_k(P, Y, [0, 1], k=2), "`indexes=None`", "type"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_wrong_type_is_a_wrong_type_error_and_a_wrong_value_a_plain_value_error(name: str) -> None:
    call, argument, given = CASES[name]
    with pytest.raises(ValueError) as info:  # every refused argument is a ValueError
        call()
    error = info.value
    assert argument in str(error), str(error)
    if given == "type":
        assert type(error) is tmx.WrongTypeError, (type(error), error)
    else:
        assert type(error) is ValueError, (type(error), error)


def test_a_tensor_indexes_with_2d_preds_is_still_refused_as_a_wrong_value() -> None:
    """The 2-D layout takes no ``indexes`` tensor: that stays the value error it was (unchanged)."""
    with pytest.raises(ValueError) as info:
        ndcg(P, Y, torch.tensor([0, 1]))
    assert type(info.value) is ValueError and "indexes" in str(info.value)
