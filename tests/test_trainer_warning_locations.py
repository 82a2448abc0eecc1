"""Warnings raised inside a Trainer's hooks name the user's line, not one of Lightning's or transformers'.

A warning the package raises while Lightning or the Hugging Face Trainer runs one of its hooks (the
``RecMetricCallback`` and ``AggregatorCheckpoint`` callbacks, a ``RecMetricModule``'s compute or load called from
them, ``pointwise_compute_metrics``' check of the scores, its ``callback()``) passes over the frames of the package,
TorchMetrics, torch, Lightning and transformers/accelerate, as ``user_stacklevel`` documents: it names the user's
``LightningModule`` method where one is on the stack, else the line that called ``trainer.fit`` /
``validate`` / ``evaluate``. The reference is Python's own record of the warning (``warnings.catch_warnings(
record=True)``): its ``filename`` must be this file, at the line of the one-line lambda that ran the Trainer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

import torchmetrics_ext as tmx  # noqa: E402
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator  # noqa: E402
from torchmetrics_ext.integrations.lightning import AggregatorCheckpoint, RecMetricCallback  # noqa: E402
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning, user_stacklevel  # noqa: E402

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred")]


def _caught(call: Callable[[], Any], match: str, category: type[Warning] = UserWarning) -> list[tuple[str, int]]:
    """``(filename, lineno)`` of every warning of ``category`` whose message holds ``match`` (at least one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = [(w.filename, w.lineno) for w in caught if issubclass(w.category, category) and match in str(w.message)]
    assert found, [str(w.message)[:120] for w in caught]
    return found


def _here(call: Callable[[], Any]) -> tuple[str, int]:
    return __file__, call.__code__.co_firstlineno


def _loader(n: int = 16, labels: torch.Tensor | None = None) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (torch.rand(n, generator=g) < 0.4).float() if labels is None else labels
    return DataLoader(TensorDataset(x, y), batch_size=4)


class _Model(L.LightningModule):
    def __init__(self, val_prefix: str = "val/", val_returns: bool = True, interval: int = 100) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.train_metrics = tmx.RecMetricModule(
            TASKS, ["ne"], prefix="train/", throughput=False, compute_interval_steps=interval
        )
        self.val_metrics = tmx.RecMetricModule(TASKS, ["ne", "auc"], prefix=val_prefix, throughput=False)
        self.val_returns = val_returns

    def _out(self, batch):
        x, y = batch
        p = torch.sigmoid(self.net(x)).squeeze(1)
        return {"click_pred": p, "click_label": y}

    def training_step(self, batch, batch_idx):
        out = self._out(batch)
        return {"loss": torch.nn.functional.binary_cross_entropy(out["click_pred"], batch[1]), **out}

    def validation_step(self, batch, batch_idx):
        out = self._out(batch)
        return out if self.val_returns else None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**options) -> L.Trainer:
    options = {
        "max_epochs": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "callbacks": [RecMetricCallback()],
        **options,
    }
    return L.Trainer(**options)


def test_barebones_warning_names_the_fit_line():
    trainer, model = _trainer(barebones=True, logger=None, enable_progress_bar=None, enable_model_summary=None,
                              enable_checkpointing=None), _Model()  # fmt: skip
    fit = lambda: trainer.fit(model, _loader())  # noqa: E731
    assert set(_caught(fit, "barebones=True")) == {_here(fit)}


def test_accumulation_warning_names_the_fit_line():
    trainer, model = _trainer(accumulate_grad_batches=3), _Model(interval=2)
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    fit = lambda: trainer.fit(model, _loader())  # noqa: E731
    assert set(_caught(fit, "compute_interval_steps=2", PossibleUserWarning)) == {_here(fit)}


def test_same_keys_warning_names_the_fit_line():
    trainer, model = _trainer(), _Model(val_prefix="train/")
    fit = lambda: trainer.fit(model, _loader(), _loader(8))  # noqa: E731
    assert set(_caught(fit, "log the same keys")) == {_here(fit)}


def test_eval_steps_returning_none_warning_names_the_validate_line():
    trainer, model = _trainer(), _Model(val_returns=False)
    validate = lambda: trainer.validate(model, _loader(8), verbose=False)  # noqa: E731
    assert set(_caught(validate, "returned None")) == {_here(validate)}


def test_an_undefined_value_computed_by_the_callback_names_the_validate_line():
    """The module's own ``UndefinedMetricWarning`` (AUC of one class), computed in the callback's epoch end."""
    trainer, model = _trainer(), _Model()
    validate = lambda: trainer.validate(model, _loader(8, labels=torch.ones(8)), verbose=False)  # noqa: E731
    assert set(_caught(validate, "undefined", UndefinedMetricWarning)) == {_here(validate)}


class _LogsAMetric(_Model):
    """``self.log("auc", metric)``: Lightning computes the metric object itself, at the epoch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.auc = tmx.AUC()

    def validation_step(self, batch, batch_idx):
        out = self._out(batch)
        self.auc.update(out["click_pred"], out["click_label"])
        self.log("auc", self.auc)


def test_a_metric_object_lightning_computes_names_the_validate_line():
    trainer, model = _trainer(callbacks=[]), _LogsAMetric()
    validate = lambda: trainer.validate(model, _loader(8, labels=torch.ones(8)), verbose=False)  # noqa: E731
    assert set(_caught(validate, "undefined", UndefinedMetricWarning)) == {_here(validate)}


class _Aggregating(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.data_metrics = MetricsAggregator()
        self.strict_loading = False

    def training_step(self, batch, batch_idx):
        self.data_metrics.update([Metric("alpaca", "tokens", 4.0, AggregationType.SUM)])
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_aggregator_checkpoint_warning_names_the_resuming_fit_line(tmp_path):
    """A checkpoint saved without ``AggregatorCheckpoint``, resumed with it and ``strict_loading = False``."""
    first = _trainer(callbacks=[], max_steps=2, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first.fit(_Aggregating(), _loader())
    first.save_checkpoint(tmp_path / "saved.ckpt")
    trainer, model = _trainer(callbacks=[AggregatorCheckpoint()], max_steps=4), _Aggregating()
    fit = lambda: trainer.fit(model, _loader(), ckpt_path=tmp_path / "saved.ckpt")  # noqa: E731
    assert set(_caught(fit, "AggregatorCheckpoint: the checkpoint holds no states")) == {_here(fit)}


def _in_lightning(function_name: str, body: str) -> Callable:
    """A function compiled as if it were a file of Lightning's: its frames lie in Lightning's folder."""
    folder = os.path.dirname(L.__file__)
    namespace: dict = {"__name__": "lightning.pytorch.loops._stand_in"}
    source = f"def {function_name}(hook):\n    {body}\n"
    exec(compile(source, os.path.join(folder, "pytorch", "loops", "_stand_in.py"), "exec"), namespace)
    return namespace[function_name]


def _warn_from_the_package():
    warnings.warn("from a hook", UserWarning, stacklevel=user_stacklevel())


_warn_from_the_package.__code__ = _warn_from_the_package.__code__.replace(
    co_filename=os.path.join(os.path.dirname(tmx.__file__), "integrations", "_stand_in.py")
)


def test_a_lightning_module_method_on_the_stack_is_named_before_the_fit_line():
    """user's method -> Lightning's loop -> the package's hook: the method's line (the fit line is further out)."""
    loop = _in_lightning("run_hook", "return hook()")

    class Model:
        def on_something(self):
            return loop(_warn_from_the_package)  # the line the warning must name

    line = Model.on_something.__code__.co_firstlineno + 1
    assert set(_caught(lambda: Model().on_something(), "from a hook")) == {(__file__, line)}
    fit = lambda: loop(_warn_from_the_package)  # noqa: E731  # no user method: the line that called into Lightning
    assert set(_caught(fit, "from a hook")) == {_here(fit)}


# ------------------------------------------------------------------------------ Hugging Face Trainer

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics  # noqa: E402


class _Sigmoid(torch.nn.Module):
    """A model whose head ends in a sigmoid: probabilities, read as logits by the default builder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        p = torch.sigmoid(self.linear(x)).squeeze(-1)
        return {"loss": torch.nn.functional.binary_cross_entropy(p, labels.float()), "probs": p}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 24, with_labels: bool = True) -> None:
        rng = np.random.default_rng(3)
        self.x = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        self.y = torch.tensor((rng.uniform(size=n) < 0.5).astype(np.int64))
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]} if self.with_labels else {"x": self.x[i]}


def _hf_trainer(tmp_path: Path, compute_metrics, callbacks=()) -> Any:
    args = transformers.TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=8, report_to=[], use_cpu=True, remove_unused_columns=False
    )
    return transformers.Trainer(model=_Sigmoid(), args=args, compute_metrics=compute_metrics, callbacks=list(callbacks))


def test_probabilities_read_as_logits_warning_names_the_evaluate_line(tmp_path):
    trainer = _hf_trainer(tmp_path, pointwise_compute_metrics(["ne", "auc"]))
    evaluate = lambda: trainer.evaluate(_Rows())  # noqa: E731
    assert set(_caught(evaluate, "lies in [0, 1]")) == {_here(evaluate)}


def test_skipped_compute_metrics_warning_names_the_evaluate_line(tmp_path):
    compute_metrics = pointwise_compute_metrics(["ne"])
    trainer = _hf_trainer(tmp_path, compute_metrics, [compute_metrics.callback()])
    trainer.model.forward = lambda x, labels=None: {"probs": torch.sigmoid(trainer.model.linear(x)).squeeze(-1)}
    evaluate = lambda: trainer.evaluate(_Rows(with_labels=False))  # noqa: E731
    assert set(_caught(evaluate, "compute_metrics was not called")) == {_here(evaluate)}
