"""The public contract of /work/shared/DESIGN.md, name by name: signatures, defaults, exports and docstrings.

Each expectation below is written from DESIGN.md's "Public contract" section (and the torchtune
seed's aggregator example), never from what the code returns.
"""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch
from torchmetrics import Metric

import torchmetrics_ext as tmx
import torchmetrics_ext.aggregation as agg
import torchmetrics_ext.functional as tmf

EMPTY = inspect.Parameter.empty

POINTWISE = [
    "NormalizedEntropy",
    "LogLoss",
    "AUC",
    "AUPRC",
    "Calibration",
    "CTR",
    "WeightedAverage",
    "WeightedAccuracy",
    "WeightedPrecision",
    "WeightedRecall",
    "WeightedMSE",
    "WeightedMAE",
    "WeightedRMSE",
    "RegressionAUC",
    "XAUC",
]
GROUPED = ["GroupedAUC", "GroupedAUPRC"]
RANKING = ["NDCG", "RecallAtK", "PrecisionAtK", "MRR", "HitRate", "MAP", "RankingMetrics"]


def _params(func) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(func).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_update_takes_preds_target_weights(name):
    """DESIGN: ``update(preds, target, weights=None)``; ``from_logits`` defaults to False; ``(T, N)`` via ``num_tasks``."""
    cls = getattr(tmx, name)
    assert name in tmx.__all__ and issubclass(cls, Metric)
    params = _params(cls.update)
    assert [n for n, _ in params] == ["preds", "target", "weights"]
    assert params[2][1] is None
    init = inspect.signature(cls.__init__).parameters
    assert init["num_tasks"].default == 1
    assert init["from_logits"].default is False


@pytest.mark.parametrize("name", GROUPED)
def test_grouped_update_takes_groups_before_weights(name):
    cls = getattr(tmx, name)
    assert name in tmx.__all__
    assert _params(cls.update) == [("preds", EMPTY), ("target", EMPTY), ("groups", EMPTY), ("weights", None)]


@pytest.mark.parametrize("name", ["AUC", "AUPRC"])
def test_auc_is_exact_by_default(name):
    """DESIGN: exact by default; ``num_bins=B`` switches to a constant-memory histogram."""
    assert inspect.signature(getattr(tmx, name).__init__).parameters["num_bins"].default is None


@pytest.mark.parametrize("name", RANKING)
def test_ranking_update_takes_indexes_and_mask(name):
    """DESIGN: ``update(preds, target, indexes=None, mask=None)`` (more keyword options may follow)."""
    params = _params(getattr(tmx, name).update)
    assert params[:4] == [("preds", EMPTY), ("target", EMPTY), ("indexes", None), ("mask", None)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NDCG", [("k", None), ("exponential_gain", False)]),
        ("RecallAtK", [("k", EMPTY)]),
        ("PrecisionAtK", [("k", EMPTY)]),
        ("MRR", [("k", None)]),
        ("HitRate", [("k", EMPTY)]),
        ("MAP", [("k", None)]),
        ("MulticlassRecallAtK", [("k", EMPTY), ("num_classes", EMPTY)]),
    ],
)
def test_ranking_constructors_take_the_documented_leading_arguments(name, expected):
    params = _params(getattr(tmx, name).__init__)
    assert params[: len(expected)] == expected


def test_ranking_metrics_keys_are_name_at_k():
    """DESIGN: ``RankingMetrics(ks, metrics)`` returns a dict keyed ``"ndcg@10"``, ...; positional ``ks, metrics``."""
    metric = tmx.RankingMetrics([2, 10], ["ndcg", "recall"])
    metric.update(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[1, 0, 1]]))
    assert set(metric.compute()) == {"ndcg@2", "ndcg@10", "recall@2", "recall@10"}


def test_rec_task_info_fields_in_documented_order():
    """DESIGN: ``RecTaskInfo(name, label_name, prediction_name, weight_name)``."""
    names = [n for n, _ in _params(tmx.RecTaskInfo)]
    assert names[:4] == ["name", "label_name", "prediction_name", "weight_name"]
    task = tmx.RecTaskInfo("click", "y", "p", "w")
    assert (task.name, task.label_name, task.prediction_name, task.weight_name) == ("click", "y", "p", "w")


def test_rec_metric_module_keys_follow_the_documented_format():
    """DESIGN: keys ``"{prefix}{metric}/{task}"`` and ``".../window"``, scalar tensors."""
    tasks = [tmx.RecTaskInfo("click", "y", "p", None)]
    module = tmx.RecMetricModule(tasks, ["ne", "auc"], window_size=8, prefix="train/", throughput=False)
    module.update({"p": torch.tensor([0.2, 0.7, 0.4, 0.9]), "y": torch.tensor([0.0, 1.0, 0.0, 1.0])})
    values = module.compute()
    assert set(values) == {"train/ne/click", "train/ne/click/window", "train/auc/click", "train/auc/click/window"}
    assert all(v.shape == () for v in values.values())
    assert callable(tmx.RecMetricModule.from_config)
    assert inspect.signature(tmx.RecMetricModule.__init__).parameters["key_style"].default == "torchmetrics_ext"


@pytest.mark.parametrize(
    "name",
    [
        "normalized_entropy",
        "log_loss",
        "auc",
        "auprc",
        "calibration",
        "ctr",
        "weighted_average",
        "weighted_accuracy",
        "weighted_precision",
        "weighted_recall",
        "weighted_mse",
        "weighted_mae",
        "weighted_rmse",
        "regression_auc",
        "xauc",
        "grouped_auc",
        "grouped_auprc",
        "ndcg",
        "recall_at_k",
        "precision_at_k",
        "mrr",
        "hit_rate",
        "ranking_metrics",
        "multiclass_recall_at_k",
    ],
)
def test_functional_twins_are_exported_in_snake_case(name):
    assert name in tmf.__all__ and callable(getattr(tmf, name))


def test_aggregation_exports_and_record_fields():
    for name in ["AggregationType", "Metric", "MetricTransform", "DefaultTrainingMetricTransform", "MetricsAggregator"]:
        assert name in agg.__all__
    assert {m.name for m in agg.AggregationType} >= {"SUM", "MEAN", "MAX", "MIN", "DISTRIBUTION", "CATEGORICAL_COUNT"}
    assert [n for n, _ in _params(agg.Metric)] == ["dataset_name", "name", "value", "agg_type"]
    for method in ["update", "get_metrics_for_logging", "register_handler", "state_dict", "load_state_dict"]:
        assert callable(getattr(agg.MetricsAggregator, method))


def test_aggregator_logs_the_seed_example():
    """The torchtune seed: two batches of tokens_seen=100 (SUM) and avg_tokens_seen=100 (MEAN)."""
    aggregator = agg.MetricsAggregator()
    for _ in range(2):
        aggregator.update(
            [
                agg.Metric("alpaca", "tokens_seen", 100, agg.AggregationType.SUM),
                agg.Metric("alpaca", "avg_tokens_seen", 100, agg.AggregationType.MEAN),
            ]
        )
    expected = {"train_alpaca/tokens_seen": 100.0 + 100.0, "train_alpaca/avg_tokens_seen": (100.0 + 100.0) / 2}
    assert aggregator.get_metrics_for_logging(prefix="train") == expected


# classes a constructor argument is required for, and one value for it
_REQUIRED = {
    "RecallAtK": {"k": 2},
    "PrecisionAtK": {"k": 2},
    "HitRate": {"k": 2},
    "F1AtK": {"k": 2},
    "SessionPrecisionAtK": {"k": 2},
    "SessionRecallAtK": {"k": 2},
    "MulticlassRecallAtK": {"k": 2, "num_classes": 3},
    "MultiLabelPrecision": {"num_labels": 2},
}
# keep a host-side entry per update in their window of recent seconds (described in their docstrings)
_TIME_WINDOWED = {"Throughput", "TowerQPS"}


def _exported_metrics() -> list[str]:
    names = []
    for name in tmx.__all__:
        obj = getattr(tmx, name)
        if inspect.isclass(obj) and issubclass(obj, Metric) and not inspect.isabstract(obj):
            if name not in {"Windowed", "Segmented"}:  # wrappers: their states are the wrapped metric's
                names.append(name)
    return names


@pytest.mark.parametrize("name", _exported_metrics())
def test_docstring_says_which_state_the_metric_holds(name):
    """DESIGN: "Prefer constant-memory states ... and offer exact ``cat`` states ...; say in the docstring which
    one a metric holds". A metric whose states (default settings) are fixed-size tensors says "constant
    memory"; one with ``cat`` list states says what its memory is.
    """
    cls = getattr(tmx, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = cls(**_REQUIRED.get(name, {}))
    has_lists = any(isinstance(default, list) for default in metric._defaults.values())
    doc = " ".join((cls.__doc__ or "").split())
    if has_lists:
        assert re.search(r"memory", doc, re.IGNORECASE), f"{name}: say the memory of its `cat` states"
    elif name not in _TIME_WINDOWED:
        assert re.search(r"constant[- ]memory", doc, re.IGNORECASE), f"{name}: say it holds constant-memory states"


def test_the_helpers_the_docs_send_users_to_have_an_example():
    """``torchmetrics_ext.utilities.warnings`` is public (its ``__all__``; docs/policies.md and docs/contributing.md
    send users to ``SamplesFirstWarning``, ``safe_divide`` and ``warn_undefined``), and contributing.md sends metric
    authors to ``check_flag``/``check_tensor`` (and ``check_int`` beside them): each shows a runnable example, as
    contributing.md asks of every public docstring.
    """
    from torchmetrics_ext.utilities import checks
    from torchmetrics_ext.utilities import warnings as warnings_module

    names = [(warnings_module, name) for name in warnings_module.__all__]
    names += [(checks, name) for name in ("check_flag", "check_int", "check_tensor")]
    missing = [
        f"{module.__name__}.{name}"
        for module, name in names
        if (inspect.isclass(obj := getattr(module, name)) or callable(obj)) and ">>>" not in (obj.__doc__ or "")
    ]
    assert not missing, f"add an `Examples:` section with `>>>` lines to: {missing}"
