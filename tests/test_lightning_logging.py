"""Where ``RecMetricCallback``'s values show up in a real ``Trainer`` fit, and ``self.log`` of a whole module.

The interval values (``compute_interval_steps``) are written to the loggers by the callback itself (a
``pl_module.log(on_step=True)`` from ``on_train_batch_end``, which Lightning allows, would be written again at
every later logging step of the epoch: the last test shows it), so Lightning's own bookkeeping does not list
them unless the callback puts them there. After every compute they must be in ``trainer.callback_metrics``
(what ``ModelCheckpoint``/``EarlyStopping`` monitor) and in ``trainer.logged_metrics`` (what Lightning lists as
sent to the loggers), with numpy's NE of the samples seen so far; not in ``trainer.progress_bar_metrics``
(``self.log``'s default ``prog_bar=False``).
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred")]
KEY = "train/ne/click"
BATCH, BATCHES, INTERVAL = 8, 4, 2  # computes at batches 2 and 4: the epoch end logs nothing of its own


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    """Normalized entropy: mean log loss over the entropy of the base rate (plain numpy)."""
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    rate = y.mean()
    return float(loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


class _Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        self.train_metrics = tmx.RecMetricModule(
            TASKS, {"ne": "ne"}, prefix="train/", compute_interval_steps=INTERVAL, throughput=False
        )
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        p = torch.sigmoid(self.net(x)).squeeze(1)
        self.seen.append((p.detach().double().numpy(), y.double().numpy()))
        return {"loss": torch.nn.functional.binary_cross_entropy(p, y), "click_pred": p, "click_label": y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _Spy(L.Callback):
    """What Lightning's dicts hold after each training batch (the callback runs before it)."""

    def __init__(self) -> None:
        self.after: list[dict[str, dict[str, float]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(
            {
                name: {k: float(v) for k, v in getattr(trainer, name).items()}
                for name in ("callback_metrics", "logged_metrics", "progress_bar_metrics")
            }
        )


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH * BATCHES, 4, generator=g)
    y = (torch.rand(BATCH * BATCHES, generator=g) < 0.4).float()
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


def _fit(tmp_path: Path, callbacks: list, logger: bool = True):
    model, spy = _Model(), _Spy()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[RecMetricCallback(val=None), spy, *callbacks],
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run", version="") if logger else False,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and the like
        trainer.fit(model, _loader())
    return trainer, model, spy


def _expected(model: _Model, batches: int) -> float:
    p = np.concatenate([p for p, _ in model.seen[:batches]])
    y = np.concatenate([y for _, y in model.seen[:batches]])
    return _ne(p, y)


@pytest.mark.parametrize("logger", [True, False])
def test_interval_values_are_in_callback_and_logged_metrics_after_each_compute(tmp_path, logger):
    trainer, model, spy = _fit(tmp_path, [], logger=logger)
    assert KEY not in spy.after[0]["logged_metrics"] and KEY not in spy.after[0]["callback_metrics"]
    for batch in (2, 4):  # the computes
        for name in ("callback_metrics", "logged_metrics"):
            assert spy.after[batch - 1][name][KEY] == pytest.approx(_expected(model, batch), rel=1e-9), (batch, name)
        assert KEY not in spy.after[batch - 1]["progress_bar_metrics"]
    assert spy.after[2]["logged_metrics"][KEY] == spy.after[1]["logged_metrics"][KEY]  # until the next compute
    assert float(trainer.logged_metrics[KEY]) == pytest.approx(_expected(model, 4), rel=1e-9)
    assert float(trainer.callback_metrics[KEY]) == pytest.approx(_expected(model, 4), rel=1e-9)
    if logger:  # the rows written: the computes' alone (the epoch end repeats none)
        with open(tmp_path / "run" / "metrics.csv") as f:
            rows = [row for row in csv.DictReader(f) if row.get(KEY)]
        assert [float(row[KEY]) for row in rows] == pytest.approx([_expected(model, 2), _expected(model, 4)])


def test_model_checkpoint_and_early_stopping_see_the_interval_values(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", monitor=KEY, every_n_train_steps=INTERVAL, save_top_k=-1
    )
    stopping = EarlyStopping(monitor=KEY, check_on_train_epoch_end=True, patience=5)
    _, model, _ = _fit(tmp_path, [checkpoint, stopping])
    scores = {Path(path).name: float(score) for path, score in checkpoint.best_k_models.items()}
    assert scores == pytest.approx({"step=2.ckpt": _expected(model, 2), "step=4.ckpt": _expected(model, 4)})
    assert float(stopping.best_score) == pytest.approx(min(_expected(model, 2), _expected(model, 4)))


def test_log_from_a_batch_end_hook_repeats_the_value_at_later_logging_steps(tmp_path):
    """Why the callback writes the interval values to the loggers itself: Lightning allows ``log(on_step=True)``
    in ``on_train_batch_end``, but writes that value again at every later logging step of the epoch."""

    class EveryOther(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx % 2 == 1:
                pl_module.log("v", float(batch_idx), on_step=True, on_epoch=False)

    class Plain(_Model):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[EveryOther()],
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="plain", version=""),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Plain(), _loader())
    with open(tmp_path / "plain" / "metrics.csv") as f:
        written = [float(row["v"]) for row in csv.DictReader(f) if row.get("v")]
    assert written == [1.0, 1.0, 3.0]  # batch 1's value written at steps 1 and 2 (batch 2 logged nothing)


def test_self_log_of_a_whole_module_names_what_to_log_instead(tmp_path):
    """``self.log("v", module)``: Lightning's own error printed the module's whole repr; ours names the way."""

    class LogsTheModule(_Model):
        def training_step(self, batch, batch_idx):
            self.log("v", self.train_metrics)
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as caught:
            trainer.fit(LogsTheModule(), _loader())
    message = str(caught.value)
    assert re.search(r"self\.log\('v', \.\.\.\)", message)
    assert "self.log_dict(module.compute())" in message and "RecMetricCallback" in message
    assert "NormalizedEntropy" not in message and len(message) < 600


def test_the_module_formats_as_before_anywhere_else():
    module = tmx.RecMetricModule(TASKS, {"ne": "ne"}, prefix="train/")
    assert f"{module}" == format(module, "") == str(module) == repr(module)
    with pytest.raises(TypeError):  # as any nn.Module: object.__format__ takes no spec
        format(module, ">10")


# --------------------------------------------- the module inside a dict or list given to `self.log`, and formatting


def _refusal_of(log) -> str:
    """The message of the error a real fit raises when its ``training_step`` calls ``log(self)`` first."""

    class Logs(_Model):
        def training_step(self, batch, batch_idx):
            log(self)
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as caught:
            trainer.fit(Logs(), _loader())
    return str(caught.value)


@pytest.mark.parametrize(
    ("log", "call"),
    [
        (lambda self: self.log("v", {"a": self.train_metrics}), "self.log('v', ...)"),  # Lightning: `dict` values
        (lambda self: self.log("v", [self.train_metrics]), "self.log('v', ...)"),  # `list` values
        (lambda self: self.log("v", {"a": {"b": self.train_metrics}}), "self.log('v', ...)"),  # nested dictionaries
        (lambda self: self.log_dict({"a": self.train_metrics}), "self.log('a', ...)"),
        (lambda self: self.log_dict({"a": [self.train_metrics]}), "self.log('a', ...)"),
    ],
    ids=["log-dict", "log-list", "log-nested-dict", "log_dict", "log_dict-list"],
)
def test_a_module_inside_what_self_log_refuses_names_what_to_log_instead(log, call):
    """Lightning's refusal formatted the container, whose ``repr`` printed the module's whole ``nn.Module`` tree."""
    message = _refusal_of(log)
    assert message.startswith(f"`{call}` was given a RecMetricModule"), message
    assert "self.log_dict(module.compute())" in message and "RecMetricCallback" in message
    assert "NormalizedEntropy" not in message and "MetricCollection" not in message and len(message) < 600


def _lightning_refusal(function_name: str, module_name: str = "lightning.pytorch.core.module"):
    """A function named ``function_name`` in a module named ``module_name`` formatting its ``value`` as Lightning's
    ``__check_allowed`` does (a stand-in for a Lightning whose private refusal has another name, or another module)."""
    namespace: dict = {"__name__": module_name}
    source = f"def {function_name}(v, name, value):\n    return f'`self.log({{name}}, {{value}})` was called'\n"
    exec(compile(source, f"<{module_name}>", "exec"), namespace)
    return namespace[function_name]


def test_the_module_formats_as_any_module_in_user_code():
    module = tmx.RecMetricModule(TASKS, {"ne": "ne"}, prefix="train/")
    tree = torch.nn.Module.__repr__(module)  # nn.Module's own repr, the reference
    assert f"{module}" == f"{module!s}" == f"{module!r}" == format(module, "") == tree
    templates = ["{}", "{!r}", "{!s}", "{0}", "{value}"]  # str.format, as a user's logging template calls it
    assert {template.format(module, value=module) for template in templates} == {tree}
    assert str(module) == repr(module) == tree
    assert str({"a": module}) == f"{ {'a': module} }".strip() == "{'a': " + tree + "}"
    assert repr([module]) == "[" + tree + "]"
    holder = torch.nn.Module()
    holder.train_metrics = module
    assert tree.replace("\n", "\n  ") in repr(holder)  # a parent module's repr holds the child's, indented
    with pytest.raises(TypeError):  # as any nn.Module: object.__format__ takes no spec
        format(module, ">10")


@pytest.mark.parametrize(
    ("function_name", "module_name"),
    [
        ("_check_allowed", "lightning.pytorch.core.module"),  # Lightning renamed its private refusal
        ("__check_value", "lightning.pytorch.core.module"),
        ("__check_allowed", "lightning.pytorch.core.lightning_module"),  # moved it to another module
        ("__check_allowed", "user_project.logging"),  # a user's function of that name
    ],
)
def test_an_unrecognised_refusal_formats_the_module_as_usual(function_name, module_name):
    module = tmx.RecMetricModule(TASKS, {"ne": "ne"}, prefix="train/")
    refusal = _lightning_refusal(function_name, module_name)
    tree = torch.nn.Module.__repr__(module)
    assert refusal(module, "v", module) == f"`self.log(v, {tree})` was called"
    assert refusal({"a": module}, "v", {"a": module}) == f"`self.log(v, {{'a': {tree}}})` was called"


def test_the_recognised_refusal_raises_ours_and_a_failed_look_formats_as_usual(monkeypatch):
    module = tmx.RecMetricModule(TASKS, {"ne": "ne"}, prefix="train/")
    refusal = _lightning_refusal("__check_allowed")
    with pytest.raises(ValueError, match=r"^`self\.log\('v', \.\.\.\)` was given a RecMetricModule"):
        refusal(module, "v", module)
    with pytest.raises(ValueError, match=r"^`self\.log\('v', \.\.\.\)` was given a RecMetricModule"):
        refusal({"a": module}, "v", {"a": module})
    assert _lightning_refusal("__check_allowed")(module, 3, module).endswith("` was called")  # a name of no str

    def no_frames(depth=0):
        raise ValueError("call stack is not deep enough")  # a Python without frame access, say

    tree = torch.nn.Module.__repr__(module)
    monkeypatch.setattr("sys._getframe", no_frames)
    assert f"{module}" == repr(module) == tree
    assert refusal(module, "v", module) == f"`self.log(v, {tree})` was called"
