"""The mistakes of a first hour with the module, the callback, ``evaluate`` and the HF builders.

Each test is a plausible mistake whose error used to mislead (a suggestion of another metric, a
``TypeError`` from ``build_metric``'s own arguments, a hint for the wrong layout) or to say nothing
(a validation epoch whose steps all returned ``None``). The error must name the argument or key and
say what to do, and a refused step must leave the module as it was.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.registry import build_metric

TASKS = [tmx.RecTaskInfo("click", label_name="click_label", prediction_name="click_pred")]
STEP = {"click_pred": torch.tensor([0.9, 0.2, 0.6, 0.3]), "click_label": torch.tensor([1, 0, 1, 0])}


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):  # a `cat` state: a list of tensors
        return [_copy(v) for v in value]
    if isinstance(value, dict):  # a metric's extra state
        return {k: _copy(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
        )
    return bool(a == b)


def _states(module: tmx.RecMetricModule) -> dict[str, Any]:
    """A copy of every state of the module (tensors cloned), with its step count."""
    return {"states": {k: _copy(v) for k, v in module.state_dict().items()}, "step": module._step}


def _unchanged(module: tmx.RecMetricModule, before: dict[str, Any]) -> bool:
    after = _states(module)
    if after["step"] != before["step"] or after["states"].keys() != before["states"].keys():
        return False
    return all(_same(v, after["states"][k]) for k, v in before["states"].items())


def _suggested(message: str) -> str:
    match = re.search(r"did you mean '([^']+)'\?", message)
    assert match, message
    return match.group(1)


# ----------------------------------------------------------------------------- metric names of other libraries

# (typed name, the registry name it stands for): scikit-learn's and TorchMetrics' names, and the usual
# abbreviations; by spelling alone "auroc" was nearest "auprc" and "average_precision" "r_precision"
OTHER_NAMES = [
    ("auroc", "auc"),
    ("roc_auc", "auc"),
    ("BinaryAUROC", "auc"),
    ("average_precision", "auprc"),
    ("BinaryAveragePrecision", "auprc"),
    ("pr_auc", "auprc"),
    ("gauroc", "gauc"),
    ("hit@10", "hit_rate@10"),
    ("hr@5", "hit_rate@5"),
    ("bce", "log_loss"),
    ("RetrievalNormalizedDCG@10", "ndcg@10"),
    ("mean_reciprocal_rank@10", "mrr@10"),
    ("r2", "r_squared"),
    # spellings that were right before, kept right
    ("nDCG@10", "ndcg@10"),
    ("logloss", "log_loss"),
    ("acu", "auc"),
]


@pytest.mark.parametrize(("typed", "meant"), OTHER_NAMES)
def test_module_suggests_the_metric_another_library_names(typed: str, meant: str) -> None:
    with pytest.raises(ValueError, match=rf"Metric '{re.escape(typed)}': Unknown metric name") as info:
        tmx.RecMetricModule(TASKS, [typed], throughput=False)
    assert _suggested(str(info.value)) == meant


def test_suggested_names_compute_what_sklearn_calls_them() -> None:
    """The suggestion for sklearn's name computes sklearn's value (AUPRC or R-precision would not)."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 200)
    preds = np.clip(0.3 * target + 0.7 * rng.random(200), 0, 1)
    for typed, reference in (("roc_auc", roc_auc_score), ("average_precision", average_precision_score)):
        with pytest.raises(ValueError) as info:
            build_metric(typed)
        metric = build_metric(_suggested(str(info.value)))
        metric.update(torch.tensor(preds), torch.tensor(target))
        assert metric.compute().item() == pytest.approx(reference(target, preds), abs=1e-12), typed


def test_evaluate_suggests_auc_for_auroc() -> None:
    pd = pytest.importorskip("pandas")
    from torchmetrics_ext.evaluate import evaluate

    frame = pd.DataFrame({"p": [0.9, 0.2, 0.6, 0.3], "y": [1, 0, 1, 0]})
    with pytest.raises(ValueError, match=r"Unknown metric name 'auroc' \(did you mean 'auc'\?\)"):
        evaluate(frame, ["click=p:y"], ["auroc"])


# ----------------------------------------------------------------------------- an option dict's 'name'


@pytest.mark.parametrize(
    ("options", "example"),
    [({"name": "auc"}, "{'a': {'metric': 'auc', ...}}"), ({"metric": "auc", "name": "x"}, "{'a': {'metric': 'auc'")],
)
def test_module_option_name_says_the_option_is_metric(options: dict[str, str], example: str) -> None:
    # was: TypeError "build_metric() got multiple values for argument 'name'"
    with pytest.raises(ValueError, match=r"Metric 'a': got the option 'name'") as info:
        tmx.RecMetricModule(TASKS, {"a": options}, throughput=False)
    assert example in str(info.value)
    assert "option 'metric' names its registry entry" in str(info.value)


def test_evaluate_option_name_says_the_option_is_metric() -> None:
    pd = pytest.importorskip("pandas")
    from torchmetrics_ext.evaluate import evaluate

    frame = pd.DataFrame({"p": [0.9, 0.2, 0.6, 0.3], "y": [1, 0, 1, 0]})
    with pytest.raises(ValueError, match=r"Metric 'binned': got the option 'name' \('auc'\)"):
        evaluate(frame, ["click=p:y"], {"binned": {"name": "auc", "num_bins": 10}})
    # the form the message gives builds, and scores what sklearn does on these four rows
    result = evaluate(frame, ["click=p:y"], {"binned": {"metric": "auc", "num_bins": 10}})
    assert result.values["binned/click"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.3]))


# ----------------------------------------------------------------------------- a (T, N) or (N, T) column


@pytest.mark.parametrize("shape", [(2, 4), (4, 2)])
def test_module_two_dim_column_hint_names_both_layouts(shape: tuple[int, int]) -> None:
    module = tmx.RecMetricModule(TASKS, ["ne", "auc"], throughput=False, window_size=8)
    module.update(STEP)
    before = _states(module)
    with pytest.raises(ValueError, match=r"`model_out\['click_pred'\]\[t\]` of a \(T, N\) one") as info:
        module.update({"click_pred": torch.rand(shape), "click_label": torch.randint(0, 2, shape)})
    assert "`model_out['click_pred'][:, t]` of an (N, T) head" in str(info.value)
    assert _unchanged(module, before)


# ----------------------------------------------------------------------------- Hugging Face builders


def test_pointwise_builder_num_tasks_comes_from_tasks() -> None:
    from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics

    # was: TypeError "build_metric() got multiple values for keyword argument 'num_tasks'"
    with pytest.raises(ValueError, match=r"`num_tasks` comes from `tasks=`"):
        pointwise_compute_metrics(["ne"], num_tasks=2)


@pytest.mark.parametrize(
    ("kwargs", "meant"),
    [({"task": ("click",)}, "tasks"), ({"ignore_idx": -100}, "ignore_index"), ({"metric": ("ne",)}, "metrics")],
)
def test_pointwise_builder_names_its_own_argument(kwargs: dict[str, Any], meant: str) -> None:
    from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics

    (typed,) = kwargs
    # was: the metric's closest option alone (`num_tasks` for `task`, none for `ignore_idx`)
    pattern = rf"pointwise_compute_metrics\(\) has no argument `{typed}` \(did you mean `{meant}=`\?\)"
    with pytest.raises(ValueError, match=pattern):
        pointwise_compute_metrics(["ne"], **kwargs)


def test_ranking_builder_names_its_own_argument() -> None:
    from torchmetrics_ext.integrations.huggingface import ranking_compute_metrics

    with pytest.raises(ValueError, match=r"has no argument `key_name` \(did you mean `key_names=`\?\)"):
        ranking_compute_metrics(ks=(1,), key_name={"recall": "R"})


# ----------------------------------------------------------------------------- Lightning callback


def _lightning_model() -> Any:
    L = pytest.importorskip("lightning")

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.train_metrics = tmx.RecMetricModule(TASKS, ["ne", "auc"], throughput=False, window_size=8)

    return Model()


def test_callback_nested_output_names_output_key() -> None:
    from torchmetrics_ext.integrations.lightning import RecMetricCallback

    model = _lightning_model()
    model.train_metrics.update(STEP)
    before = _states(model.train_metrics)
    outputs = {"loss": torch.tensor(0.5), "outputs": dict(STEP)}
    with pytest.raises(
        TypeError, match=r"`outputs\['outputs'\]` holds them: RecMetricCallback\(output_key='outputs'\)"
    ):
        RecMetricCallback().on_train_batch_end(None, model, outputs, None, 0)  # type: ignore[arg-type]
    assert _unchanged(model.train_metrics, before)


def test_callback_wrong_output_key_lists_the_keys() -> None:
    from torchmetrics_ext.integrations.lightning import RecMetricCallback

    model = _lightning_model()
    before = _states(model.train_metrics)
    outputs = {"loss": torch.tensor(0.5), "outputs": dict(STEP)}
    # was: "got NoneType", as if the step had returned nothing
    pattern = (
        r"under 'output' .*got a dict without that key: its keys are \['loss', 'outputs'\] "
        r"\(did you mean RecMetricCallback\(output_key='outputs'\)\?\)"
    )
    with pytest.raises(TypeError, match=pattern):
        RecMetricCallback(output_key="output").on_train_batch_end(None, model, outputs, None, 0)  # type: ignore[arg-type]
    assert _unchanged(model.train_metrics, before)


@pytest.mark.parametrize("returns", [True, False])
def test_callback_warns_when_every_validation_step_returned_none(returns: bool) -> None:
    L = pytest.importorskip("lightning")
    from torchmetrics_ext.integrations.lightning import RecMetricCallback

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(1, 1)
            self.val_metrics = tmx.RecMetricModule(TASKS, ["ne"], throughput=False, prefix="val/")

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            out = {"click_pred": x[:, 0], "click_label": (x[:, 0] > 0.5).long()}
            return out if returns else None  # the mistake: the step computes its columns, and drops them

    data = torch.utils.data.TensorDataset(torch.tensor([[0.9], [0.2], [0.6], [0.3]]))
    trainer = L.Trainer(
        callbacks=[RecMetricCallback()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(Model(), torch.utils.data.DataLoader(data, batch_size=2), verbose=False)
    ours = [str(w.message) for w in caught if "returned None" in str(w.message)]
    if returns:
        assert not ours
        assert trainer.callback_metrics["val/ne/click"].isfinite()
    else:
        assert len(ours) == 1
        assert "every validation step of this epoch (2 on this rank) returned None" in ours[0]
        assert "`Model.val_metrics` saw no sample" in ours[0]
        assert "`return model_out`" in ours[0]
