"""A regression head next to logit heads: ``RecMetricModule(from_logits=True)`` with ``metric_tasks``.

The module's own ``from_logits=True`` reads every prediction column as logits (docs/module.md,
"Metrics of some tasks"), so an ``"mse"`` that ``metric_tasks`` gives a watch-time head alone scores
``sigmoid`` of the seconds, while ``evaluate(..., from_logits=True, metric_tasks=...)`` reads that head
as values. The module said nothing; it now warns, naming the head and the per-metric spelling that
keeps its values (whose numbers equal ``evaluate``'s). References: numpy formulas over the columns.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx

TASKS = [
    tmx.RecTaskInfo("click", label_name="click", prediction_name="click_logit"),
    tmx.RecTaskInfo("watch", label_name="watch", prediction_name="watch_pred"),
]
STEP = {
    "click_logit": torch.tensor([2.0, -1.0, 0.5, -0.3, 1.2, -2.2]),
    "click": torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
    "watch_pred": torch.tensor([30.0, 5.0, 120.0, 0.0, 60.0, 10.0]),
    "watch": torch.tensor([42.0, 0.0, 95.0, 3.0, 50.0, 20.0]),
}
SUBSETS = {"ne": ["click"], "auc": ["click"], "mse": ["watch"]}


def _mse(pred: np.ndarray, label: np.ndarray) -> float:
    return float(((pred - label) ** 2).mean())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_a_regression_head_read_as_logits_by_the_modules_option_is_warned_of_naming_it() -> None:
    with pytest.warns(UserWarning, match=r"task 'watch' by \['mse'\]\): they score sigmoid\(watch_pred\)"):
        module = tmx.RecMetricModule(
            TASKS, ["ne", "auc", "mse"], metric_tasks=SUBSETS, from_logits=True, throughput=False
        )
    module.update(STEP)
    value = module.compute()["mse/watch"].item()  # the documented reading is unchanged: sigmoid of the seconds
    watch, label = STEP["watch_pred"].double().numpy(), STEP["watch"].double().numpy()
    assert value == pytest.approx(_mse(_sigmoid(watch), label), rel=1e-12)


def test_from_config_warns_the_same() -> None:
    config = {
        "tasks": [{"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name} for t in TASKS],
        "metrics": ["ne", "mse"],
        "metric_tasks": {"ne": ["click"], "mse": ["watch"]},
        "from_logits": True,
        "throughput": False,
    }
    with pytest.warns(UserWarning, match=r"sigmoid\(watch_pred\)"):
        tmx.RecMetricModule.from_config(config)


def test_the_per_metric_spelling_the_warning_gives_keeps_the_values_and_equals_evaluate() -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from torchmetrics_ext.evaluate import evaluate

    metrics = {"ne": {"from_logits": True}, "auc": {"from_logits": True}, "mse": "mse"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = tmx.RecMetricModule(TASKS, metrics, metric_tasks=SUBSETS, throughput=False)
    module.update(STEP)
    online = {key: value.item() for key, value in module.compute().items()}
    p, y = _sigmoid(STEP["click_logit"].double().numpy()), STEP["click"].double().numpy()
    base = y.mean()
    ne = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean() / -(base * np.log(base) + (1 - base) * np.log(1 - base))
    assert online["ne/click"] == pytest.approx(ne, rel=1e-12)
    assert online["mse/watch"] == pytest.approx(
        _mse(STEP["watch_pred"].double().numpy(), STEP["watch"].double().numpy()), rel=1e-12
    )
    frame = pd.DataFrame({k: v.numpy() for k, v in STEP.items()})
    offline = evaluate(
        frame,
        ["click=click_logit:click", "watch=watch_pred:watch"],
        ["ne", "auc", "mse"],
        metric_tasks=SUBSETS,
        from_logits=True,
        progress=False,
    ).values
    for key, value in online.items():
        assert offline[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize(
    ("metrics", "subsets", "from_logits"),
    [
        (["ne", "mse"], None, True),  # no metric_tasks: every metric reads every head, logits as documented
        (["ne", "mse"], {"ne": ["click", "watch"], "mse": ["watch"]}, True),  # NE reads watch: a binary head
        (["ne", "mse"], {"ne": ["click"], "mse": ["watch"]}, None),  # no module option: nothing read as logits
        (["ne", "regression_auc"], {"ne": ["click"], "regression_auc": ["watch"]}, True),  # order only
        (["ne", "ctr"], {"ne": ["click"], "ctr": ["watch"]}, True),  # CTR reads no predictions (binary labels)
    ],
)
def test_nothing_is_warned_where_no_head_is_scored_by_metrics_of_values_alone(metrics, subsets, from_logits) -> None:
    tasks = TASKS
    if subsets is None or "watch" in subsets.get("ne", []) or "ctr" in metrics:
        tasks = [TASKS[0], tmx.RecTaskInfo("watch", label_name="click", prediction_name="watch_pred")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tmx.RecMetricModule(tasks, metrics, metric_tasks=subsets, from_logits=from_logits, throughput=False)
