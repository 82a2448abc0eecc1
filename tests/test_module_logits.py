"""RecMetricModule(from_logits=...): every metric it builds reads logits; what it is given must agree.

References are independent of the code under test: scikit-learn's ``roc_auc_score`` and NE, log
loss and Brier score written as numpy formulas over ``sigmoid(logits)``.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx

TASKS = [
    tmx.RecTaskInfo("click", "click_label", "click_logit", "w"),
    tmx.RecTaskInfo("buy", "buy_label", "buy_logit", "w"),
]


def _data(n: int = 500, seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {"w": torch.rand(n, generator=gen, dtype=torch.float64) * 2}
    for task, shift in (("click", -0.5), ("buy", -1.5)):
        z = torch.randn(n, generator=gen, dtype=torch.float64) * 2.5 + shift
        out[f"{task}_logit"] = z.float()
        out[f"{task}_label"] = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(z)).long()
    return out


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    ctr = (w * y).sum() / w.sum()
    cross_entropy = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()
    return float(cross_entropy / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)))


def _columns(data: dict[str, torch.Tensor], task: tmx.RecTaskInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = data[task.prediction_name].double().numpy()
    return 1 / (1 + np.exp(-z)), data[task.label_name].double().numpy(), data["w"].numpy()


def _run(module: tmx.RecMetricModule, data: dict[str, torch.Tensor]) -> dict[str, float]:
    n = len(data["w"])
    for lo, hi in ((0, 130), (130, 131), (131, n)):
        module.update({key: value[lo:hi] for key, value in data.items()})
    return {key: value.item() for key, value in module.compute().items()}


def _logit_factory(num_tasks: int, from_logits: bool = False) -> tmx.NormalizedEntropy:
    return tmx.NormalizedEntropy(num_tasks=num_tasks, from_logits=from_logits)


FORMS = {
    "names": {"ne": "ne", "auc": "auc", "mse": "mse", "sum_p": "weighted_sum_predictions"},
    "list": ["ne", "auc", "mse", "weighted_sum_predictions"],
    "options": {
        "ne": None,
        "auc": {"metric": "auc"},
        "mse": {"from_logits": True},
        "sum_p": {"metric": "weighted_sum_predictions"},
    },
    "factories": {
        "ne": _logit_factory,
        "auc": functools.partial(tmx.AUC),
        "mse": tmx.WeightedMSE,
        "sum_p": lambda num_tasks: tmx.WeightedSumPredictions(num_tasks=num_tasks),  # no option: fed sigmoid
    },
}


@pytest.mark.parametrize("form", FORMS)
def test_every_metric_the_module_builds_reads_logits(form):
    """NE and AUC on logits equal numpy's NE and sklearn's AUC on sigmoid(logits), whatever form names them."""
    data = _data()
    module = tmx.RecMetricModule(TASKS, FORMS[form], throughput=False, from_logits=True)
    values = _run(module, data)
    sum_key = "weighted_sum_predictions" if form == "list" else "sum_p"
    for task in TASKS:
        p, y, w = _columns(data, task)
        np.testing.assert_allclose(values[f"ne/{task.name}"], _ne(p, y, w), rtol=1e-6)
        np.testing.assert_allclose(values[f"auc/{task.name}"], roc_auc_score(y, p, sample_weight=w), rtol=1e-9)
        np.testing.assert_allclose(values[f"mse/{task.name}"], (w * (p - y) ** 2).sum() / w.sum(), rtol=1e-6)
        np.testing.assert_allclose(values[f"{sum_key}/{task.name}"], (w * p).sum(), rtol=1e-6)
    # the metrics given by name, options or a class taking the option were built with it
    for name in ("ne", "auc", "mse"):
        metric = module.metrics[name]
        assert metric.from_logits is True, name


def test_ranking_metrics_rank_the_logits_as_given():
    """NDCG of the logits under from_logits=True equals NDCG of their probabilities (the same order)."""
    data = _data()
    data["query"] = torch.arange(len(data["w"])) // 5
    tasks = [
        tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, t.weight_name, session_id_name="query") for t in TASKS
    ]
    logits = _run(tmx.RecMetricModule(tasks, ["ndcg@3", "auc"], throughput=False, from_logits=True), data)
    probabilities = {**data, **{t.prediction_name: torch.sigmoid(data[t.prediction_name].double()) for t in TASKS}}
    plain = _run(tmx.RecMetricModule(tasks, ["ndcg@3", "auc"], throughput=False), probabilities)
    for task in TASKS:
        assert logits[f"ndcg@3/{task.name}"] == pytest.approx(plain[f"ndcg@3/{task.name}"], rel=1e-12)


def test_an_object_of_values_without_the_option_is_fed_sigmoid_of_the_logits():
    """WeightedMSE() built without from_logits agrees with either: under logits it scores sigmoid(logits)."""
    data = _data()
    module = tmx.RecMetricModule(TASKS, {"mse": tmx.WeightedMSE(num_tasks=2)}, throughput=False, from_logits=True)
    values = _run(module, data)
    for task in TASKS:
        p, y, w = _columns(data, task)
        np.testing.assert_allclose(values[f"mse/{task.name}"], (w * (p - y) ** 2).sum() / w.sum(), rtol=1e-6)


@pytest.mark.parametrize(
    ("metrics", "from_logits", "match"),
    [
        (
            {"ne": "ne", "auc": tmx.AUC(num_tasks=2)},
            True,
            r"from_logits=True .*metric\(s\) \['auc'\] read probabilities",
        ),
        (
            {"ne": "ne", "auc": tmx.AUC(num_tasks=2, from_logits=True)},
            False,
            r"from_logits=False .*metric\(s\) \['auc'\] read logits",
        ),
        ({"auc": {"from_logits": False}}, True, r"Metric 'auc': its option from_logits=False disagrees .*True"),
        (
            {"b": {"metric": "auc", "from_logits": True}},
            False,
            r"Metric 'b' \(auc\): its option from_logits=True disagrees .*False",
        ),
        ({"auc": functools.partial(tmx.AUC, from_logits=False)}, True, r"\['auc'\] read probabilities"),
        ({"auc": lambda num_tasks: tmx.AUC(num_tasks=num_tasks)}, True, r"\['auc'\] read probabilities"),
        ({"ne": "ne"}, "yes", r"Expected `from_logits` to be a bool or None, got 'yes'"),
        ({"ne": "ne"}, 1, r"Expected `from_logits` to be a bool or None, got 1"),
    ],
)
def test_metrics_that_disagree_with_the_module_are_refused(metrics, from_logits, match):
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule(TASKS, metrics, throughput=False, from_logits=from_logits)


def test_a_refused_metric_object_is_left_free_and_the_default_keeps_todays_rule():
    """The refused object belongs to no module; without the keyword the metrics say (as before it existed)."""
    auc = tmx.AUC(num_tasks=2)
    with pytest.raises(ValueError, match="read probabilities"):
        tmx.RecMetricModule(TASKS, {"auc": auc}, throughput=False, from_logits=True)
    assert not tmx.RecMetricModule(TASKS, {"auc": auc}, throughput=False).input_domains.from_logits
    logit_auc = {"auc": tmx.AUC(num_tasks=2, from_logits=True), "ne": {"from_logits": True}}
    assert tmx.RecMetricModule(TASKS, logit_auc, throughput=False).input_domains.from_logits
    # options that agree with the module are kept
    agreeing = {"auc": {"from_logits": True}, "ne": tmx.NormalizedEntropy(num_tasks=2, from_logits=True)}
    assert tmx.RecMetricModule(TASKS, agreeing, throughput=False, from_logits=True).input_domains.from_logits
    probabilities = tmx.RecMetricModule(TASKS, ["ne", "auc"], throughput=False, from_logits=False)
    assert not probabilities.input_domains.from_logits
    assert not probabilities.metrics["ne"].from_logits


def test_from_config_takes_from_logits():
    data = _data(seed=5)
    tasks = [
        {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": "w"}
        for t in TASKS
    ]
    config = {"tasks": tasks, "metrics": {"ne": {}, "auc": None}, "throughput": False, "from_logits": True}
    values = _run(tmx.RecMetricModule.from_config(config), data)
    for task in TASKS:
        p, y, w = _columns(data, task)
        np.testing.assert_allclose(values[f"ne/{task.name}"], _ne(p, y, w), rtol=1e-6)
        np.testing.assert_allclose(values[f"auc/{task.name}"], roc_auc_score(y, p, sample_weight=w), rtol=1e-9)
    with pytest.raises(ValueError, match=r"Metric 'auc': its option from_logits=False disagrees"):
        tmx.RecMetricModule.from_config({**config, "metrics": {"auc": {"from_logits": False}}})
    with pytest.raises(ValueError, match=r"Expected `from_logits` to be a bool or None"):
        tmx.RecMetricModule.from_config({**config, "from_logits": "true"})
    with pytest.raises(ValueError, match=r"Unknown config keys \['from_logit'\] \(did you mean 'from_logits'\?\)"):
        tmx.RecMetricModule.from_config({**{k: v for k, v in config.items() if k != "from_logits"}, "from_logit": True})


# ----------------------------------------------------------------------------- swapped columns

SWAPPED = tmx.RecTaskInfo("click", "click_pred", "click_label")  # label and prediction names given in the wrong order
READS = re.escape(
    "Task 'click' reads labels from 'click_pred' and predictions from 'click_label' "
    "(RecTaskInfo(name, label_name, prediction_name, ...))."
)


@pytest.mark.parametrize(
    ("metrics", "labels", "error", "first"),
    [
        ({"ne": "ne", "auc": "auc"}, torch.tensor([0, 1, 1]), TypeError, "expected floating point predictions"),
        ({"ne": "ne", "auc": "auc"}, torch.tensor([0.0, 1.0, 1.0]), ValueError, "binary labels"),
        ({"ne": "ne"}, torch.tensor([0.0, 2.0, 1.0]), ValueError, r"probabilities in \[0, 1\]"),
    ],
)
def test_a_refused_column_says_which_columns_the_task_reads(metrics, labels, error, first):
    """RecTaskInfo(name, label_name, prediction_name): a swapped pair fails as a dtype or range error that
    now says which columns it read; the rejected step changes nothing."""
    module = tmx.RecMetricModule([SWAPPED], metrics, throughput=False)
    step = {"click_pred": torch.tensor([0.2, 0.7, 0.4]), "click_label": labels}
    with pytest.raises(error, match=f"{first}.*{READS}"):
        module.update(step)
    assert module.metrics["ne"].update_count == 0
    good = tmx.RecMetricModule([tmx.RecTaskInfo("click", "click_label", "click_pred")], {"ne": "ne"}, throughput=False)
    with pytest.raises(ValueError) as info:  # a weight column refused: no label/prediction sentence
        good.update(
            {
                "click_pred": torch.tensor([0.2, 0.7]),
                "click_label": torch.tensor([0, 1]),
                "weight": torch.tensor([-1.0, 1.0]),
            }
        )
    assert "reads labels from" not in str(info.value)


@pytest.mark.parametrize("column", ["click_pred", "click_label"])
def test_a_nan_column_is_not_read_as_swapped_columns(column):
    """NaN in a prediction or label column is a NaN error, not a sign of swapped columns: no sentence naming them."""
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo("click", "click_label", "click_pred")], {"ne": "ne"}, throughput=False
    )
    step = {"click_pred": torch.tensor([0.2, 0.7, 0.4]), "click_label": torch.tensor([0.0, 1.0, 1.0])}
    step[column] = step[column].clone()
    step[column][1] = float("nan")
    with pytest.raises(ValueError, match="NaN") as info:
        module.update(step)
    assert "reads labels from" not in str(info.value)
    assert module.metrics["ne"].update_count == 0
