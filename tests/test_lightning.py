"""Lightning: a RecMetricModule per stage, updated and logged by RecMetricCallback, in real Trainer runs.

The DDP tests start ``tests/helpers/lightning_run.py`` as a script (``Trainer(strategy="ddp",
devices=2, accelerator="cpu")`` re-launches it for rank 1, gloo), read its ``CSVLogger`` output and
the predictions each rank fed to the metrics, and recompute every logged value in this process.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchmetrics
from sklearn.metrics import log_loss, roc_auc_score

import torchmetrics_ext as tmx

L = pytest.importorskip("lightning")

from torchmetrics_ext.integrations.lightning import RecMetricCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "lightning_run.py"
TASKS = ("click", "buy")
WINDOW = ["--window", "300"]  # the training metrics keep a 300-sample window (150 per rank)


# ----------------------------------------------------------------------------- one process


class ClickModel(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_logit") for t in TASKS]
        metrics = {"ne": tmx.NormalizedEntropy(num_tasks=2, from_logits=True), "log_loss": "log_loss", "ctr": "ctr"}
        metrics["log_loss"] = tmx.LogLoss(num_tasks=2, from_logits=True)
        self.train_metrics = tmx.RecMetricModule(
            tasks, metrics, throughput=False, compute_interval_steps=2, prefix="train/"
        )
        self.val_metrics = tmx.RecMetricModule(
            tasks, {"log_loss": tmx.LogLoss(num_tasks=2, from_logits=True)}, throughput=False, prefix="val/"
        )
        self.seen: list[torch.Tensor] = []

    def _out(self, batch):
        x, y = batch
        logits = self.linear(x)
        return {"click_logit": logits[:, 0], "buy_logit": logits[:, 1], "click_label": y[:, 0], "buy_label": y[:, 1]}

    def training_step(self, batch, batch_idx):
        out = self._out(batch)
        logits = torch.stack([out["click_logit"], out["buy_logit"]], 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch[1].float())
        return {"loss": loss, **out}

    def validation_step(self, batch, batch_idx):
        out = self._out(batch)
        self.seen.append(torch.stack([out["click_logit"], out["click_label"].float()]))
        return out

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_logs_the_module_in_a_trainer():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = (torch.rand(256, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    model = ClickModel()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[RecMetricCallback()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    filters = list(warnings.filters)
    trainer.fit(model, loader, loader)
    assert warnings.filters == filters  # the callback's filters of its keys' sync_dist advice are gone
    logged = trainer.callback_metrics
    assert {"train/ne/click", "train/ctr/buy", "train/log_loss/click", "val/log_loss/click", "val/log_loss/buy"} <= set(
        logged
    )
    # the epoch-level validation value is the log loss over every validation sample
    logits, labels = torch.cat(model.seen, dim=1).double().numpy()
    expected = np.mean(np.logaddexp(0.0, logits) - labels * logits)
    np.testing.assert_allclose(logged["val/log_loss/click"].item(), expected, rtol=1e-9)
    np.testing.assert_allclose(logged["train/ctr/buy"].item(), y[:, 1].double().mean().item(), rtol=1e-12)


def test_the_documented_checkpoint_file_name_of_a_key_is_one_file(tmp_path):
    """docs/module.md: a key's `/` in a ModelCheckpoint file name makes directories unless the name is written out."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = (torch.rand(64, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model = ClickModel()
    checkpoint = ModelCheckpoint(
        tmp_path,
        monitor="val/log_loss/click",
        filename="epoch={epoch}-val_log_loss_click={val/log_loss/click:.3f}",
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[RecMetricCallback(), checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader, loader)
    logits, labels = torch.cat(model.seen, dim=1).double().numpy()
    expected = log_loss(labels, 1.0 / (1.0 + np.exp(-logits)))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"epoch=0-val_log_loss_click={expected:.3f}.ckpt"]


@pytest.mark.parametrize(("num_batches", "computes"), [(4, 2), (5, 3)])
def test_callback_logs_each_training_state_once(num_batches, computes):
    """Every 2 steps, and at epoch end only if steps came after the last log (no row logged twice)."""
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(64 * num_batches, 4, generator=gen),
        (torch.rand(64 * num_batches, 2, generator=gen) < 0.3).long(),
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    model = ClickModel()
    calls = []
    compute = model.train_metrics.compute
    model.train_metrics.compute = lambda: calls.append(model.train_metrics._step) or compute()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[RecMetricCallback(val=None)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, loader)
    assert calls == [2, 4, 5][:computes]


def test_a_callback_reused_for_another_fit_logs_its_epoch_end_values():
    """One callback for two fits of fresh models (folds): the second fit's epoch end has the update count
    the first last logged at, and was skipped (no training value in callback_metrics, none monitored)."""
    callback = RecMetricCallback(val=None)
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(48, 4, generator=gen), (torch.rand(48, 2, generator=gen) < 0.3).long()
        trainer = _evaluator(max_epochs=1, callbacks=[callback], enable_checkpointing=False, limit_val_batches=0)
        # one batch: the epoch ends before the first interval compute (every 2 updates)
        trainer.fit(ClickModel(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=48))
        for i, task in enumerate(TASKS):
            expected = y[:, i].double().numpy().mean()
            assert trainer.callback_metrics[f"train/ctr/{task}"].item() == pytest.approx(expected, rel=1e-12), seed


def _csv_trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    """A CPU trainer writing what it logs to ``tmp_path/logs/version_0/metrics.csv`` (no checkpoints, bars, summary)."""
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="logs", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _csv_rows(tmp_path: Path, key: str) -> list[dict[str, str]]:
    """The rows of :func:`_csv_trainer`'s ``metrics.csv`` that hold a value for ``key``."""
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get(key)]


class EpochModel(ClickModel):
    """Records each training step's click logits and labels per epoch; ``per_epoch`` resets its training metrics."""

    def __init__(self, per_epoch: bool) -> None:
        super().__init__()
        self.per_epoch, self.epochs = per_epoch, []

    def on_train_epoch_start(self) -> None:
        self.epochs.append([])
        if self.per_epoch:  # the recipe docs/module.md gives for per-epoch training values
            self.train_metrics.reset()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.epochs[-1].append(torch.stack([out["click_logit"].detach(), out["click_label"].float()]))
        return out


class _EpochEnd(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after RecMetricCallback's (it comes first)
        self.values.append(trainer.callback_metrics["train/log_loss/click"].item())


@pytest.mark.parametrize("per_epoch", [False, True])
def test_training_values_span_every_epoch_unless_the_module_resets_them(per_epoch):
    """As documented: the callback never resets the training module, so an epoch's training values (and a monitor
    on them) cover every batch since the fit began; a reset in `on_train_epoch_start` makes them per epoch."""
    model, seen = EpochModel(per_epoch), _EpochEnd()
    gen = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(
        torch.randn(48, 4, generator=gen), (torch.rand(48, 2, generator=gen) < 0.3).long()
    )
    trainer = _evaluator(max_epochs=3, callbacks=[RecMetricCallback(val=None), seen], enable_checkpointing=False)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))  # 3 batches: the epoch end logs
    expected = []
    for e in range(3):
        steps = model.epochs[e] if per_epoch else [step for epoch in model.epochs[: e + 1] for step in epoch]
        logits, labels = torch.cat(steps, dim=1).double().numpy()
        expected.append(np.mean(np.logaddexp(0.0, logits) - labels * logits))
    np.testing.assert_allclose(seen.values, expected, rtol=1e-9)


@pytest.mark.parametrize("log_every_n_steps", [1, 3])
def test_callback_writes_training_values_only_at_the_steps_that_computed_them(tmp_path, log_every_n_steps):
    """Rows exist at compute steps (every 2 updates) and at epoch end, each with that moment's values."""

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(7 * 16, 4, generator=gen), (torch.rand(7 * 16, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = _csv_trainer(
        tmp_path,
        max_epochs=1,
        devices=1,
        log_every_n_steps=log_every_n_steps,
        callbacks=[RecMetricCallback(val=None)],
        limit_val_batches=0,
    )
    trainer.fit(ClickModel(), loader)
    rows = _csv_rows(tmp_path, "train/ctr/buy")
    # steps 1, 3, 5 (every 2 updates) and the epoch end after the 7th step; the CTR of the labels so far
    expected = {1: 32, 3: 64, 5: 96, 6: 112}
    assert [int(row["step"]) for row in rows] == list(expected)
    for row in rows:
        seen = expected[int(row["step"])]
        assert float(row["train/ctr/buy"]) == pytest.approx(y[:seen, 1].double().mean().item(), rel=1e-12)


@pytest.mark.parametrize(("interval", "accumulate"), [(1, 2), (3, 4), (4, 2)])
def test_accumulated_batches_compute_at_most_once_per_logging_step_or_warn(tmp_path, interval, accumulate):
    """compute_interval_steps counts batches, Lightning's logging step optimizer steps: an interval that is no
    multiple of accumulate_grad_batches computed twice in one optimizer step (interval 1, accumulation 2: two rows,
    with different values, at every step) without a word. Now the callback warns; a multiple logs each step once."""

    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(12 * 8, 4, generator=gen), (torch.rand(12 * 8, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    model = ClickModel()
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_logit") for t in TASKS]
    model.train_metrics = tmx.RecMetricModule(
        tasks, {"ctr": "ctr"}, throughput=False, compute_interval_steps=interval, prefix="train/"
    )
    trainer = _csv_trainer(
        tmp_path,
        max_epochs=1,
        devices=1,
        accumulate_grad_batches=accumulate,
        log_every_n_steps=1,
        callbacks=[RecMetricCallback(val=None)],
        limit_val_batches=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader)
    advice = [str(w.message) for w in caught if "accumulate_grad_batches" in str(w.message)]
    rows = _csv_rows(tmp_path, "train/ctr/buy")
    steps = [int(row["step"]) for row in rows]
    if interval % accumulate:
        assert len(advice) == 1 and f"compute_interval_steps={interval}`" in advice[0], advice
        assert f"compute_interval_steps={accumulate}`" in advice[0]  # the nearest multiple, suggested
        return
    assert advice == []
    # every 2 optimizer steps (4 batches), at the last batch of the step: steps 1, 3, 5 (12 batches, 6 steps)
    assert steps == [1, 3, 5]
    for row in rows:
        seen = (int(row["step"]) + 1) * accumulate * 8
        assert float(row["train/ctr/buy"]) == pytest.approx(y[:seen, 1].double().mean().item(), rel=1e-12)


class _SetsAccumulation(L.Callback):
    """Changes ``trainer.accumulate_grad_batches`` at epoch 1 by hand (no GradientAccumulationScheduler)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            trainer.accumulate_grad_batches = 4


@pytest.mark.parametrize(
    ("schedule", "interval", "bad"),
    [
        ({1: 4}, 2, 4),  # epoch 1 accumulates 4 batches: computes every 2 fall twice in one optimizer step
        ({1: 2, 2: 3}, 4, 3),
        ({1: 2}, 4, None),  # 4 is a multiple of every factor
        ("by hand", 2, 4),
    ],
)
def test_an_accumulation_factor_set_after_setup_is_checked_against_the_interval(tmp_path, schedule, interval, bad):
    """The check read `trainer.accumulate_grad_batches` at setup only (1 there under a GradientAccumulationScheduler,
    which sets it at its epochs' start): interval 2 under {1: 4} wrote two rows at each of epoch 1's steps, unwarned."""
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(8 * 8, 4, generator=gen), (torch.rand(8 * 8, 2, generator=gen) < 0.3).long()
    model = ClickModel()
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_logit") for t in TASKS]
    model.train_metrics = tmx.RecMetricModule(
        tasks, {"ctr": "ctr"}, throughput=False, compute_interval_steps=interval, prefix="train/"
    )
    changer = _SetsAccumulation() if schedule == "by hand" else GradientAccumulationScheduler(schedule)
    trainer = _csv_trainer(
        tmp_path,
        max_epochs=2 if schedule == "by hand" else 3,
        devices=1,
        log_every_n_steps=1,
        callbacks=[changer, RecMetricCallback(val=None)],  # the changer's epoch start runs first
        limit_val_batches=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8))
    advice = [str(w.message) for w in caught if "accumulate_grad_batches" in str(w.message)]
    steps = [int(row["step"]) for row in _csv_rows(tmp_path, "train/ctr/buy")]
    if bad is None:
        assert advice == []
        assert len(steps) == len(set(steps))  # one row per logging step
        return
    assert len(advice) == 1, advice
    assert f"compute_interval_steps={interval}`" in advice[0] and f"`accumulate_grad_batches={bad}`" in advice[0]
    if schedule != "by hand":
        assert f"from epoch {min(e for e, f in schedule.items() if f == bad)}" in advice[0]


class TwoOptimizerModel(ClickModel):
    """Manual optimization with two optimizers (GAN-style): each batch steps both."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.second = torch.nn.Linear(4, 2)
        self.steps: list[tuple[int, int]] = []  # (global_step, _batches_that_stepped) in each training_step

    def training_step(self, batch, batch_idx):
        self.steps.append((self.global_step, self.trainer.fit_loop.epoch_loop._batches_that_stepped))
        out = super().training_step(batch, batch_idx)
        first, second = self.optimizers()
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(out["loss"] + self.second(batch[0]).square().mean())
        first.step()
        second.step()
        self.log("loss", out["loss"])
        return out

    def configure_optimizers(self):
        return torch.optim.SGD(self.linear.parameters(), lr=0.1), torch.optim.SGD(self.second.parameters(), lr=0.1)


def test_the_step_module_md_names_under_manual_optimization_is_lightnings_logging_step(tmp_path):
    """docs/module.md said `self.global_step` in `training_step` is the step Lightning logs the batch at: under
    manual optimization it counts optimizer steps (two per batch here); `_batches_that_stepped` is that step."""

    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(4 * 16, 4, generator=gen), (torch.rand(4 * 16, 2, generator=gen) < 0.3).long()
    model = TwoOptimizerModel()
    trainer = _csv_trainer(
        tmp_path, max_epochs=1, log_every_n_steps=1, callbacks=[RecMetricCallback(val=None)], limit_val_batches=0
    )
    trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    logged_at = [int(row["step"]) for row in _csv_rows(tmp_path, "loss")]  # where Lightning writes self.log's values
    assert [stepped for _, stepped in model.steps] == logged_at == [0, 1, 2, 3]
    assert [global_step for global_step, _ in model.steps] == [0, 2, 4, 6]
    # the callback writes at the same steps: the 2nd and 4th batches computed (every 2 updates)
    assert [int(row["step"]) for row in _csv_rows(tmp_path, "train/ctr/buy")] == [1, 3]


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    base = y.mean()
    cross_entropy = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return cross_entropy / -(base * np.log(base) + (1 - base) * np.log(1 - base))


def test_the_readmes_manual_logging_writes_each_value_once_at_the_step_that_computed_it(tmp_path):
    """The README's LightningModule, run with a CSVLogger writing every step: rows at steps 9 and 19 only."""
    import re

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class Recommender" in b)
    scope: dict = {"__name__": "__readme__"}
    exec(compile(block.split("\ndata = ")[0], "README.md", "exec"), scope)  # the imports and the class
    model = scope["Recommender"]()
    fed: list[dict[str, torch.Tensor]] = []
    update = model.metrics.update
    model.metrics.update = lambda out: fed.append({k: v.clone() for k, v in out.items()}) or update(out)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(2560, 8, generator=gen), (torch.rand(2560, 2, generator=gen) < 0.3).float()
    )
    trainer = _csv_trainer(tmp_path, max_steps=20, log_every_n_steps=1)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=128))
    rows = _csv_rows(tmp_path, "ne/click")
    assert [int(row["step"]) for row in rows] == [9, 19]  # the 10th and 20th steps computed; no stale rows
    for row in rows:
        seen = fed[: int(row["step"]) + 1]
        for task in ("click", "like"):
            for suffix, steps in (("", seen), ("/window", seen[-8:])):  # window: 1024 samples = 8 steps
                p = torch.cat([out[f"{task}_pred"] for out in steps]).double().numpy()
                y = torch.cat([out[f"{task}_label"] for out in steps]).double().numpy()
                assert float(row[f"ne/{task}{suffix}"]) == pytest.approx(_ne(p, y), rel=1e-6)
                assert float(row[f"auc/{task}{suffix}"]) == pytest.approx(roc_auc_score(y, p), rel=1e-6)
                assert float(row[f"calibration/{task}{suffix}"]) == pytest.approx(p.sum() / y.sum(), rel=1e-6)


def test_the_readmes_multi_task_values_log_through_log_dict():
    """The README's `num_tasks=2` collection: its per-task dict is what Lightning's log_dict accepts."""
    import re

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "MetricCollection(" in b)
    scope: dict = {"__name__": "__readme__"}
    exec(compile(block, "README.md", "exec"), scope)

    class Logs(ClickModel):
        def training_step(self, batch, batch_idx):
            self.log_dict(scope["per_task"])
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.zeros(16, 2, dtype=torch.long))
    trainer.fit(Logs(), torch.utils.data.DataLoader(data, batch_size=16))
    preds, target = scope["preds"].double().numpy(), scope["target"].numpy()
    for t, task in enumerate(("click", "like")):
        auc = trainer.callback_metrics[f"auc/{task}"].item()
        assert auc == pytest.approx(roc_auc_score(target[t], preds[t]), rel=1e-6)
        assert trainer.callback_metrics[f"calibration/{task}"].item() == pytest.approx(
            preds[t].sum() / target[t].sum(), rel=1e-5
        )


@pytest.mark.parametrize("recipe", ["forward", "update_on_epoch", "update_default"])
def test_the_readmes_one_task_logging_recipes_write_what_it_says(tmp_path, recipe):
    """README: forward then `self.log` logs each step's batch value; `update` then `self.log(on_step=False,
    on_epoch=True)` the epoch's value; `update` with Lightning's default `on_step=True` logs nothing (it said
    `self.log("ne", self.ne)` after `self.ne.update(...)`, which in `training_step` writes no value at all)."""
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    class OneTask(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
            self.ne = tmx.NormalizedEntropy()

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x).squeeze(-1)
            p = torch.sigmoid(logits.detach())
            batches.append((p, y))
            if recipe == "forward":
                self.ne(p, y)
                self.log("ne", self.ne)
            else:
                self.ne.update(p, y)
                self.log("ne", self.ne, **({"on_step": False, "on_epoch": True} if recipe == "update_on_epoch" else {}))
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(96, 4), (torch.rand(96) < 0.4).float())
    trainer.fit(OneTask(), torch.utils.data.DataLoader(data, batch_size=32))
    path = Path(logger.log_dir) / "metrics.csv"
    rows = [row for row in csv.DictReader(path.open()) if row.get("ne")] if path.exists() else []
    as_numpy = [(p.double().numpy(), y.double().numpy()) for p, y in batches]
    if recipe == "forward":  # one row per step, each the batch's own NE
        assert [int(row["step"]) for row in rows] == [0, 1, 2]
        for row, (p, y) in zip(rows, as_numpy, strict=True):
            assert float(row["ne"]) == pytest.approx(_ne(p, y), rel=1e-6)
    elif recipe == "update_on_epoch":  # one row at the epoch end, over every batch
        p, y = (np.concatenate(parts) for parts in zip(*as_numpy, strict=True))
        assert len(rows) == 1 and float(rows[0]["ne"]) == pytest.approx(_ne(p, y), rel=1e-6)
    else:
        assert rows == [] and "ne" not in trainer.callback_metrics


def test_unpadded_sampler_takes_every_sample_once():
    from torchmetrics_ext.integrations import UnpaddedDistributedSampler

    # no process group (one device): every sample, so a DDP-ready loader runs unchanged
    assert list(UnpaddedDistributedSampler(range(7), shuffle=False)) == list(range(7))
    for shuffle in (False, True):
        parts = [
            list(UnpaddedDistributedSampler(range(1001), num_replicas=3, rank=r, shuffle=shuffle)) for r in range(3)
        ]
        assert sorted(i for part in parts for i in part) == list(range(1001))
        assert [len(part) for part in parts] == [334, 334, 333]
    with pytest.raises(ValueError, match="drop_last"):
        UnpaddedDistributedSampler(range(3), num_replicas=1, rank=0, drop_last=True)


def test_an_unpadded_sampler_with_replicas_but_no_rank_and_no_group_refuses_like_pytorchs():
    """`num_replicas=2` without `rank` and without a process group silently took rank 0's share (3 of 5 samples);
    PyTorch's DistributedSampler raises a ValueError there."""
    from torch.utils.data import DistributedSampler

    from torchmetrics_ext.integrations import UnpaddedDistributedSampler

    with pytest.raises(ValueError):  # the reference: PyTorch refuses the same arguments
        DistributedSampler(range(5), num_replicas=2)
    sampler = UnpaddedDistributedSampler(range(5), num_replicas=2, shuffle=False)
    for read in (list, len, lambda s: s.rank):
        with pytest.raises(ValueError, match=r"no `rank`.*pass `rank=` \(0 to 1\)"):
            read(sampler)
    # the other constructions still work without a group
    assert list(UnpaddedDistributedSampler(range(5), num_replicas=1, shuffle=False)) == [0, 1, 2, 3, 4]
    assert list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)) == [1, 3]


def _sampled_in_rank(rank, world_size, samplers):
    """What each sampler (built in the test process, without a process group) gives in this rank of the group."""
    return [(sampler.num_replicas, sampler.rank, len(sampler), list(sampler)) for sampler in samplers]


@pytest.mark.ddp
def test_an_unpadded_sampler_built_before_the_process_group_takes_its_ranks_share(ddp_pool):
    """A sampler built before the group (a loader made at the top of a script that `strategy="ddp"` launches per
    rank, or in ddp_spawn's main process) fixed `num_replicas=1, rank=0`: every rank took every sample, so synced
    metrics counted each sample once per rank."""
    from torchmetrics_ext.integrations import UnpaddedDistributedSampler

    samplers = [UnpaddedDistributedSampler(range(7), shuffle=False), UnpaddedDistributedSampler(range(7), seed=3)]
    assert [list(s) for s in samplers] == [
        list(range(7)),
        torch.randperm(7, generator=torch.Generator().manual_seed(3)).tolist(),
    ]
    given = UnpaddedDistributedSampler(range(7), num_replicas=1, rank=0, shuffle=False)  # given: kept as given
    ranks = ddp_pool.run(_sampled_in_rank, [*samplers, given])
    for i in range(2):
        assert [r[i][:2] for r in ranks] == [(2, 0), (2, 1)]
        assert [r[i][2] for r in ranks] == [4, 3] == [len(r[i][3]) for r in ranks]
        assert sorted(ranks[0][i][3] + ranks[1][i][3]) == list(range(7))  # every sample once over the ranks
    assert ranks[0][0][3] == [0, 2, 4, 6]
    assert [r[2] for r in ranks] == [(1, 0, 7, list(range(7)))] * 2


def test_the_integration_without_lightning_names_the_extra_to_install():
    """Without lightning the import failed with a bare "No module named 'lightning.pytorch'"."""
    code = "import sys; sys.modules['lightning'] = None\nimport torchmetrics_ext.integrations.lightning\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 1
    assert "ImportError: torchmetrics_ext.integrations.lightning needs lightning" in result.stderr
    assert "pip install 'torchmetrics-ext[lightning]'" in result.stderr
    # the sampler needs PyTorch alone
    code = "import sys; sys.modules['lightning'] = None\nfrom torchmetrics_ext.integrations import UnpaddedDistributedSampler\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env).returncode == 0


def test_callback_names_a_missing_module():
    callback = RecMetricCallback(train="nope")
    with pytest.raises(
        AttributeError, match=r"`ClickModel\.nope` is missing.*RecMetricCallback\(train=\.\.\., val=None\)"
    ):
        callback.on_train_batch_end(None, ClickModel(), {}, None, 0)


def _fit(model, callback, **kwargs):
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(64, 4, generator=gen), (torch.rand(64, 2, generator=gen) < 0.3).long()
    )
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(model, loader, loader)


def test_barebones_trainer_updates_the_modules_and_warns_once_that_nothing_is_logged():
    """``Trainer(barebones=True)`` forbids logging: the callback says so at setup and only updates."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=gen), (torch.rand(64, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = ClickModel()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", barebones=True, callbacks=[RecMetricCallback()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader, loader)
        trainer.validate(model, loader, verbose=False)
    messages = [str(w.message) for w in caught]
    ours = [m for m in messages if m.startswith("RecMetricCallback: `Trainer(barebones=True)` disables logging")]
    assert len(ours) == 2  # once per run (fit, validate), at setup
    assert "updates `ClickModel.train_metrics`, `ClickModel.val_metrics` at every step" in ours[0]
    assert "`ClickModel.val_metrics` at every step" in ours[1] and "train_metrics" not in ours[1]
    assert "Call their `compute()` after the run" in ours[0]
    assert not [m for m in messages if "You are trying to `self.log()`" in m]  # nothing was logged
    assert dict(trainer.callback_metrics) == {}
    # the modules were updated all the same: the training one over the 3 steps, the validation one
    # over the validation run (sklearn's log loss of its logits)
    values = model.train_metrics.compute()
    np.testing.assert_allclose(values["train/ctr/click"].item(), y[:48, 0].double().mean().item(), rtol=1e-12)
    np.testing.assert_allclose(values["train/ctr/buy"].item(), y[:48, 1].double().mean().item(), rtol=1e-12)
    logits, labels = torch.cat(model.seen, dim=1).double().numpy()
    expected = log_loss(labels, 1 / (1 + np.exp(-logits)), labels=[0, 1])
    np.testing.assert_allclose(model.val_metrics.compute()["val/log_loss/click"].item(), expected, rtol=1e-9)


class LossOnlyModel(ClickModel):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx)["loss"]  # the usual Lightning habit


def test_a_training_step_returning_only_the_loss_is_told_to_return_the_output_dict():
    with pytest.raises(TypeError) as info:
        _fit(LossOnlyModel(), RecMetricCallback(val=None))
    message = str(info.value)
    assert "the training step must return the model output dict" in message
    assert "'click_logit', 'click_label'" in message and "{'loss': loss, **model_out}" in message
    assert "got a dict with keys ['loss']" in message


class RenamedModel(ClickModel):
    def __init__(self) -> None:
        super().__init__()
        self.metrics = self.train_metrics
        del self.train_metrics


@pytest.mark.parametrize(
    ("callback", "named"),
    [
        (RecMetricCallback(), ["`RenamedModel.train_metrics` is missing"]),  # not val_metrics, which exists
        (RecMetricCallback(train="metrics", val="validation"), ["`RenamedModel.validation` is missing"]),
        (
            RecMetricCallback(train="linear", val="nope"),
            ["`RenamedModel.linear` is Linear", "`RenamedModel.nope` is missing"],
        ),
    ],
)
def test_a_misnamed_module_is_reported_before_training_with_the_fix(callback, named):
    model = RenamedModel()
    updates = []
    model.metrics.update = updates.append
    with pytest.raises(AttributeError) as info:
        _fit(model, callback)  # the sanity check's validation steps would run first
    message = str(info.value)
    for part in named:
        assert part in message
    assert "has ['val_metrics', 'metrics']" in message and "`RecMetricCallback(train=..., val=None)`" in message
    assert updates == []  # nothing ran


class AliasedModel(ClickModel):
    """``val_metrics`` is ``train_metrics`` itself (not a ``clone``)."""

    def __init__(self) -> None:
        super().__init__()
        self.val_metrics = self.train_metrics


@pytest.mark.parametrize(
    ("model", "callback", "named"),
    [
        (AliasedModel, RecMetricCallback(), "`AliasedModel.train_metrics` and `AliasedModel.val_metrics` are"),
        (ClickModel, RecMetricCallback(val="train_metrics"), "`ClickModel.train_metrics` is both"),
    ],
    ids=["aliased", "named-twice"],
)
def test_one_module_for_training_and_validation_is_refused_before_training(model, callback, named):
    """The callback resets the validation module at each validation epoch (the sanity check's too) and adds the
    validation samples to it: one module for both stages lost the training values at every validation and logged
    validation samples under the training keys, without a word."""
    model = model()
    earlier = {"click_logit": torch.tensor([0.5, -1.0, 2.0]), "click_label": torch.tensor([1, 0, 0])}
    earlier |= {"buy_logit": torch.tensor([0.1, 0.2, 0.3]), "buy_label": torch.tensor([0, 1, 1])}
    model.train_metrics.update(earlier)  # as restored from a checkpoint
    with pytest.raises(ValueError, match="one RecMetricModule for training and validation") as info:
        _fit(model, callback)
    assert named in str(info.value) and 'clone(prefix="val/")' in str(info.value)
    values = model.train_metrics.compute()  # left as it was: nothing reset, nothing added
    assert values["train/ctr/click"].item() == pytest.approx(1 / 3, rel=1e-12)
    assert values["train/ctr/buy"].item() == pytest.approx(2 / 3, rel=1e-12)
    assert model.train_metrics._step == 1


class SamePrefixModel(ClickModel):
    """``val_metrics`` a copy of ``train_metrics`` that keeps its prefix (``clone()`` without ``prefix``)."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__()
        self.val_metrics = self.train_metrics.clone(prefix=prefix)


@pytest.mark.parametrize(
    ("prefix", "warns"),
    [(None, True), ("", True), ("val/", False)],
    ids=["clone-keeps-prefix", "both-bare", "own-prefix"],
)
def test_training_and_validation_modules_logging_the_same_keys_warn_at_setup(prefix, warns):
    """Two modules with one prefix log the same keys: Lightning keeps the last value per key in
    `callback_metrics`, so a monitor read validation values under training keys, without a word."""
    model = SamePrefixModel(prefix)
    if prefix == "":
        model.train_metrics = model.train_metrics.clone(prefix="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(model, RecMetricCallback())
    same = [w for w in caught if "log the same keys" in str(w.message)]
    if not warns:
        assert same == []
        return
    assert len(same) == 1
    message = str(same[0].message)
    first = f"{prefix if prefix is not None else 'train/'}ne/click"  # the first metric and task: ClickModel's
    assert f"e.g. {first!r}" in message
    assert "`SamePrefixModel.train_metrics` and `SamePrefixModel.val_metrics`" in message
    assert 'clone(prefix="val/")' in message


def test_modules_with_one_prefix_but_no_common_key_do_not_warn():
    model = ClickModel()
    model.val_metrics = tmx.RecMetricModule(
        [tmx.RecTaskInfo("click", "click_label", "click_logit")], {"auc": "auc"}, throughput=False,
        prefix="train/", from_logits=True,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(model, RecMetricCallback())
    assert not [w for w in caught if "log the same keys" in str(w.message)]


class EvalModel(L.LightningModule):
    """One task, a module per evaluation stage; records what each dataloader's steps returned."""

    def __init__(self, test: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 1)
        metrics = {"ctr": "ctr", "log_loss": "log_loss"}
        task = [tmx.RecTaskInfo("click", "label", "prob")]
        self.val_metrics = tmx.RecMetricModule(task, metrics, prefix="val/", throughput=False)
        if test:
            self.test_metrics = tmx.RecMetricModule(task, metrics, prefix="test/", throughput=False)
        self.seen: dict[int, list[torch.Tensor]] = {}

    def _step(self, batch, dataloader_idx):
        x, y = batch
        out = {"prob": torch.sigmoid(self.linear(x))[:, 0], "label": y}
        self.seen.setdefault(dataloader_idx, []).append(torch.stack([out["prob"].double(), y.double()]))
        return out

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return self._step(batch, dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        return self._step(batch, dataloader_idx)

    def reference(self, dataloader_idx: int) -> dict[str, float]:
        p, y = torch.cat(self.seen[dataloader_idx], dim=1).numpy()
        return {"ctr": y.mean(), "log_loss": log_loss(y, p, labels=[0, 1])}


def _loader(n: int, rate: float, seed: int, iterable: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 2, generator=gen), (torch.rand(n, generator=gen) < rate).long()
    if iterable:  # no length: Lightning cannot tell which batch is the last
        return torch.utils.data.DataLoader(Unsized(x, y), batch_size=4)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


class Unsized(torch.utils.data.IterableDataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def _evaluator(**kwargs):
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _check(results, model, stage, suffixed):
    """Each dataloader's dict holds its own values (numpy/sklearn over its own steps' outputs)."""
    assert len(results) == len(model.seen)
    for i, result in enumerate(results):
        suffix = f"/dataloader_idx_{i}" if suffixed else ""
        expected = {f"{stage}/{name}/click{suffix}": value for name, value in model.reference(i).items()}
        assert set(result) >= set(expected)
        for key, value in expected.items():
            assert result[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("stage", ["val", "test"])
def test_each_evaluation_dataloader_logs_its_own_values(stage):
    """Two or three dataloaders (uneven batches): one value per dataloader, under Lightning's own suffixes."""
    loaders = [_loader(10, 0.9, 0), _loader(7, 0.1, 1), _loader(9, 0.5, 2)]
    model = EvalModel()
    run = _evaluator(callbacks=[RecMetricCallback(train=None)])
    results = (run.validate if stage == "val" else run.test)(model, loaders, verbose=False)
    _check(results, model, stage, suffixed=True)
    for i, result in enumerate(results):  # only its own keys: not another dataloader's
        assert all(key.endswith(f"/dataloader_idx_{i}") for key in result), result
    assert model.reference(0)["ctr"] != model.reference(1)["ctr"]  # the dataloaders differ
    # one dataloader: the keys have no suffix, as before
    single = EvalModel()
    results = (run.validate if stage == "val" else run.test)(single, loaders[1], verbose=False)
    assert set(results[0]) == {f"{stage}/ctr/click", f"{stage}/log_loss/click"}
    _check(results, single, stage, suffixed=False)


def test_several_validation_dataloaders_in_fit_log_each_its_own_values(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    class Fitted(EvalModel):
        def __init__(self) -> None:
            super().__init__(test=False)
            self.train_metrics = tmx.RecMetricModule(
                [tmx.RecTaskInfo("click", "label", "prob")], {"ctr": "ctr"}, throughput=False
            )

        def training_step(self, batch, batch_idx):
            out = {"prob": torch.sigmoid(self.linear(batch[0]))[:, 0], "label": batch[1]}
            return {"loss": torch.nn.functional.binary_cross_entropy(out["prob"], batch[1].float()), **out}

        def on_validation_epoch_start(self) -> None:
            self.seen = {}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Fitted()
    run = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="logs", version=0),
        callbacks=[RecMetricCallback()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    run.fit(model, _loader(16, 0.5, 3), [_loader(10, 0.9, 0), _loader(6, 0.1, 1)])
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    (row,) = [row for row in rows if "val/ctr/click/dataloader_idx_0" in row]
    for i in (0, 1):
        for name, value in model.reference(i).items():
            assert row[f"val/{name}/click/dataloader_idx_{i}"] == pytest.approx(value, rel=1e-6)
            assert run.callback_metrics[f"val/{name}/click/dataloader_idx_{i}"].item() == pytest.approx(value, rel=1e-6)
    assert not any(key.startswith("val/") and "dataloader_idx" not in key for key in row)


class MonitoredModel(ClickModel):
    """Records the click logits and labels of each validation epoch (the sanity check's apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[list[torch.Tensor]] = []
        self.sanity: list[torch.Tensor] = []

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.epochs.append([])

    def validation_step(self, batch, batch_idx):
        out = self._out(batch)
        seen = self.sanity if self.trainer.sanity_checking else self.epochs[-1]
        seen.append(torch.stack([out["click_logit"], out["click_label"].float()]))
        return out


def test_sanity_steps_and_validation_every_n_steps_feed_the_monitors_exactly_the_real_epochs_samples(tmp_path):
    """A sanity check adds no sample; validation every 3 training batches logs each run's own value, which
    `ModelCheckpoint` and `EarlyStopping` monitor (checked against numpy over exactly each run's samples)."""
    model = MonitoredModel()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(128, 4, generator=gen), (torch.rand(128, 2, generator=gen) < 0.3).long()
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:64], y[:64]), batch_size=8)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[64:], y[64:]), batch_size=16)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path, monitor="val/log_loss/click", save_top_k=1)
    stopping = L.pytorch.callbacks.EarlyStopping(monitor="val/log_loss/click", patience=100)
    trainer = _evaluator(
        max_epochs=1,
        callbacks=[stopping, checkpoint, RecMetricCallback()],
        val_check_interval=3,
        num_sanity_val_steps=2,
    )
    trainer.fit(model, train, val)
    assert len(model.sanity) == 2 and len(model.epochs) == 2  # validation after training batches 3 and 6

    def log_loss_of(steps):
        logits, labels = torch.cat(steps, dim=1).double().numpy()
        return np.mean(np.logaddexp(0.0, logits) - labels * logits)

    values = [log_loss_of(steps) for steps in model.epochs]
    np.testing.assert_allclose(trainer.callback_metrics["val/log_loss/click"].item(), values[-1], rtol=1e-9)
    np.testing.assert_allclose(checkpoint.best_model_score.item(), min(values), rtol=1e-9)
    np.testing.assert_allclose(stopping.best_score.item(), min(values), rtol=1e-9)


class SkipsEvalBatches(EvalModel):
    """Returns None (Lightning allows it) for odd batches and for every last batch of a dataloader."""

    def _step(self, batch, dataloader_idx):
        stage = self.trainer.num_test_batches if self.trainer.testing else self.trainer.num_val_batches
        index = self._batch_idx
        if index % 2 == 1 or index + 1 == stage[dataloader_idx]:
            return None
        return super()._step(batch, dataloader_idx)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._batch_idx = batch_idx
        return super().validation_step(batch, batch_idx, dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._batch_idx = batch_idx
        return super().test_step(batch, batch_idx, dataloader_idx)


@pytest.mark.parametrize("stage", ["val", "test"])
def test_an_evaluation_step_returning_none_adds_no_sample(stage):
    """A validation/test step that returned None raised the callback's TypeError, while a training step that did
    counted as an empty step: it now adds no sample in every stage (also at a dataloader's last batch, where each
    dataloader's values are logged)."""
    loaders = [_loader(20, 0.9, 0), _loader(15, 0.1, 1)]  # 5 and 4 batches: the last of each returns None
    for given, suffixed in ((loaders, True), (loaders[1], False)):
        model = SkipsEvalBatches()
        run = _evaluator(callbacks=[RecMetricCallback(train=None)])
        results = (run.validate if stage == "val" else run.test)(model, given, verbose=False)
        _check(results, model, stage, suffixed=suffixed)  # numpy/sklearn over the steps that returned outputs
        if suffixed:
            for i, result in enumerate(results):  # logged after each dataloader's last batch: its own keys alone
                assert all(key.endswith(f"/dataloader_idx_{i}") for key in result), result


def test_a_dataloader_without_length_logs_every_dataloader_at_the_epoch_end():
    """No last batch to compute after: each dataloader's values, same keys, all logged at the epoch end."""
    model = EvalModel()
    results = _evaluator(callbacks=[RecMetricCallback(train=None)]).validate(
        model, [_loader(10, 0.9, 0), _loader(7, 0.1, 1, iterable=True)], verbose=False
    )
    _check(results, model, "val", suffixed=True)


def test_test_module_is_named_like_the_others():
    loader = _loader(10, 0.5, 0)
    model = EvalModel(test=False)
    # the default name on a model without it: tested as before the option existed (nothing logged)
    assert _evaluator(callbacks=[RecMetricCallback(train=None)]).test(model, loader, verbose=False) == [{}]
    model.test_metrics = torchmetrics.MetricCollection({"mean": torchmetrics.MeanMetric()})  # a model's own
    assert _evaluator(callbacks=[RecMetricCallback(train=None)]).test(model, loader, verbose=False) == [{}]
    with pytest.raises(
        AttributeError, match=r"`EvalModel\.tst_metrics` is missing.*`RecMetricCallback\(\.\.\., test=None\)`"
    ):
        _evaluator(callbacks=[RecMetricCallback(train=None, test="tst_metrics")]).test(model, loader, verbose=False)
    assert _evaluator(callbacks=[RecMetricCallback(train=None, test=None)]).test(model, loader, verbose=False) == [{}]
    renamed = EvalModel()
    results = _evaluator(callbacks=[RecMetricCallback(train=None, test="val_metrics")]).test(
        renamed, loader, verbose=False
    )
    _check(results, renamed, "val", suffixed=False)


class TrainedEvalModel(EvalModel):
    """EvalModel with a training module and step."""

    def __init__(self) -> None:
        super().__init__()
        self.train_metrics = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, prefix="train/", throughput=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        p = torch.sigmoid(self.linear(x))[:, 0]
        return {"loss": p.mean(), "prediction": p, "label": y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("stage", ["val", "test"])
def test_evaluating_a_checkpoint_needs_no_per_rank_states_of_the_modules_it_does_not_resume(tmp_path, stage):
    """A checkpoint saved with `val=None` failed `trainer.test/validate(ckpt_path=...)` under a default callback
    ("no per-rank states of `val_metrics` ... To resume"): those stages resume nothing. (Checkpoints hold no
    validation states now; one saved with `train=None` lacks the training module's.)"""
    trainer = _evaluator(
        callbacks=[RecMetricCallback(train=None)], max_steps=2, limit_val_batches=0, enable_checkpointing=False
    )
    trainer.fit(TrainedEvalModel(), _loader(8, 0.5, 0), _loader(4, 0.5, 0))
    trainer.save_checkpoint(tmp_path / "no_train.ckpt")
    model, loader = TrainedEvalModel(), _loader(10, 0.5, 1)
    evaluator = _evaluator(callbacks=[RecMetricCallback()])
    run = evaluator.test if stage == "test" else evaluator.validate
    results = run(model, loader, ckpt_path=tmp_path / "no_train.ckpt", verbose=False)
    _check(results, model, stage, suffixed=False)
    # a resume still follows strict loading
    with pytest.raises(RuntimeError, match=r"no per-rank states of `train_metrics`"):
        _evaluator(callbacks=[RecMetricCallback()], max_steps=4).fit(
            TrainedEvalModel(), _loader(8, 0.5, 0), _loader(4, 0.5, 0), ckpt_path=tmp_path / "no_train.ckpt"
        )


class WindowedLogModel(L.LightningModule):
    """Logs a `Windowed` metric as docs/windows.md says: its values at the epoch end (or, `by_object`, the object)."""

    def __init__(self, by_object: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 1)
        self.ne = tmx.Windowed(tmx.NormalizedEntropy(), window_size=8)
        self.by_object = by_object
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        p = torch.sigmoid(self.linear(x))[:, 0]
        self.ne.update(p.detach(), y)
        self.seen.append(torch.stack([p.detach().double(), y.double()]))
        if self.by_object:
            self.log("ne", self.ne, on_epoch=True)
        return p.mean()

    def on_train_epoch_end(self):
        if not self.by_object:
            self.log_dict({f"ne/{key}": value for key, value in self.ne.compute().items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_windowed_metric_logs_through_its_values_as_the_docs_say():
    """Lightning refuses a Windowed metric object (its compute() is a dict); docs/windows.md logs its values."""
    trainer = _evaluator(max_epochs=1, enable_checkpointing=False)
    model = WindowedLogModel()
    trainer.fit(model, _loader(10, 0.5, 1))  # batches of 4, 4, 2: the window (8) holds the newest 6 samples
    p, y = torch.cat(model.seen, dim=1).numpy()
    assert trainer.callback_metrics["ne/lifetime"].item() == pytest.approx(_ne(p, y), rel=1e-9)
    assert trainer.callback_metrics["ne/window"].item() == pytest.approx(_ne(p[-6:], y[-6:]), rel=1e-9)
    with pytest.raises(ValueError, match="logged as 'ne' must be a tensor"):
        _evaluator(max_epochs=1, enable_checkpointing=False).fit(WindowedLogModel(by_object=True), _loader(10, 0.5, 1))


class SpawnedModel(L.LightningModule):
    """Train and val modules with windows (ring buffers), sums, exact AUC samples and a throughput."""

    def __init__(self) -> None:
        super().__init__()
        metrics = {"ctr": "ctr", "ne": "ne", "auc": "auc"}
        throughput = tmx.Throughput(warmup_steps=0)
        self.train_metrics = tmx.RecMetricModule(["click"], metrics, window_size=20, throughput=throughput)
        self.val_metrics = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, window_size=20, throughput=False)


def _spawned(model: L.LightningModule) -> L.LightningModule:
    """What ``ddp_spawn`` hands a rank: the model through ``torch.multiprocessing``'s pickler (shared storages)."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(model)
    return pickle.loads(buffer.getvalue())


def test_ranks_spawned_from_one_model_keep_their_own_metric_states():
    """Two ranks unpickled from one model (ddp_spawn) shared every metric state's storage: each rank's sums
    held the other's samples too. The callback's setup gives each rank its own copies, values kept."""
    parent = SpawnedModel()
    before = {"prediction": torch.tensor([0.25, 0.75]), "label": torch.tensor([0.0, 1.0])}
    parent.train_metrics.update(before)  # states the ranks must keep (as after a restore)
    ranks = [_spawned(parent), _spawned(parent)]
    states = [
        state
        for metric in ranks[0].modules()
        if isinstance(metric, torchmetrics.Metric)
        for state in metric.metric_state.values()
        if isinstance(state, torch.Tensor)
    ]
    assert states and all(state.is_shared() for state in states)  # the hazard
    callback = RecMetricCallback()
    for model in ranks:
        callback.setup(None, model, "fit")
    gen = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(6):
        p = torch.rand(8, generator=gen, dtype=torch.float64).clamp(0.05, 0.95)
        batches.append({"prediction": p, "label": (torch.rand(8, generator=gen, dtype=torch.float64) < p).double()})
    for i, batch in enumerate(batches):
        for module in (ranks[i % 2].train_metrics, ranks[i % 2].val_metrics):
            module.update(batch)
    for r, model in enumerate(ranks):
        own = [before, *batches[r::2]]  # this rank's updates: the window (20 samples) holds the newest 2
        p, y = (torch.cat([b[k] for b in own]).double().numpy() for k in ("prediction", "label"))
        values = model.train_metrics.local_compute()
        window = slice(len(p) - 16, None)
        np.testing.assert_allclose(values["ctr/click"].item(), y.mean(), rtol=1e-12)
        np.testing.assert_allclose(values["ctr/click/window"].item(), y[window].mean(), rtol=1e-12)
        np.testing.assert_allclose(values["ne/click"].item(), _ne(p, y), rtol=1e-9)
        np.testing.assert_allclose(values["ne/click/window"].item(), _ne(p[window], y[window]), rtol=1e-9)
        np.testing.assert_allclose(values["auc/click"].item(), roc_auc_score(y, p), rtol=1e-12)
        assert values["throughput/total_examples"].item() == len(p)
        val = model.val_metrics.local_compute()  # no update before the spawn
        assert val["ctr/click"].item() == pytest.approx(y[2:].mean(), rel=1e-12)
    assert not any(state.is_shared() for state in states)  # the same tensor objects, now private


def _spawned_counts(rank: int, aggregator: Any, expected: dict[str, float]) -> None:
    """A rank started by ``torch.multiprocessing`` (as ``ddp_spawn`` starts it): the aggregator arrived whole."""
    got = aggregator.get_metrics_for_logging("train")
    if got != expected:
        raise AssertionError(f"{got} != {expected}")


@pytest.mark.ddp
def test_an_aggregator_with_category_counts_spawns_into_ranks():
    """``ddp_spawn`` pickles the model into its ranks with ``torch.multiprocessing``, which passes each CPU
    storage as a file descriptor that must stay open until the rank starts. ``CategoricalCount``'s pickle
    held copies of its states made for the pickle alone, freed (their descriptors closed) before the start:
    a model holding an aggregator that had counted a category failed to launch with "bad value(s) in
    fds_to_keep"."""
    from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

    seen = ["web", "app", "web", 7, "web"]
    aggregator = MetricsAggregator()
    aggregator.update([Metric("clicks", "source", value, AggregationType.CATEGORICAL_COUNT) for value in seen])
    expected = {f"train_clicks/source_count_{c}": float(seen.count(c)) for c in dict.fromkeys(seen)}
    assert aggregator.get_metrics_for_logging("train") == expected
    torch.multiprocessing.start_processes(_spawned_counts, args=(aggregator, expected), nprocs=1, start_method="spawn")
    aggregator.update([Metric("clicks", "source", "web", AggregationType.CATEGORICAL_COUNT)])  # the parent goes on
    assert aggregator.get_metrics_for_logging("train") == {**expected, "train_clicks/source_count_web": 4.0}


# ----------------------------------------------------------------------------- DDP, script runs


def _launch(out: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _rows(out: Path) -> list[dict[str, float]]:
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _seen(out: Path, stage: str) -> list[tuple[int, dict[str, torch.Tensor]]]:
    return [entry for rank in (0, 1) for entry in torch.load(out / f"seen_rank{rank}.pt", weights_only=False)[stage]]


def _ndcg_at_10(p: np.ndarray, y: np.ndarray, w: np.ndarray, sessions: np.ndarray) -> float:
    """Mean NDCG@10 (linear gain) over the sessions with a click, each weighted by its largest row weight.

    Rows of one session id are one list wherever (rank, step, epoch) they came from; ties rank the
    less relevant first (docs/ranking.md), which tie-free float scores never need.
    """
    values, weights = [], []
    for session in np.unique(sessions):
        rows = sessions == session
        relevance = y[rows]
        if relevance.sum() == 0:  # no relevant row: skipped (empty_target_action="skip")
            continue
        ranked = relevance[np.lexsort((relevance, -p[rows]))][:10]
        ideal = np.sort(relevance)[::-1][:10]
        discount = 1 / np.log2(np.arange(2, 12))
        values.append((ranked * discount[: len(ranked)]).sum() / (ideal * discount[: len(ideal)]).sum())
        weights.append(w[rows].max())
    return float(np.average(values, weights=weights))


def _reference(batches: list[dict[str, torch.Tensor]], task: str) -> dict[str, float]:
    """NE, CTR, calibration, AUC and NDCG@10 of one task in one process (numpy and scikit-learn)."""
    p = torch.cat([b[f"{task}_pred"] for b in batches]).double().numpy()
    y = torch.cat([b[f"{task}_label"] for b in batches]).double().numpy()
    w = torch.cat([b["weight"] for b in batches]).double().numpy()
    sessions = torch.cat([b["session"] for b in batches]).numpy()
    base = (w * y).sum() / w.sum()
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    return {
        "ne": ce / -(w.sum() * (base * np.log(base) + (1 - base) * np.log(1 - base))),
        "ctr": base,
        "calibration": (w * p).sum() / (w * y).sum(),
        "auc": roc_auc_score(y, p, sample_weight=w),
        "ndcg@10": _ndcg_at_10(p, y, w, sessions),
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    _launch(out, "--checkpoint-every", "6", *WINDOW)  # step 6 is mid-epoch (12 steps per epoch)
    return out


def _check_full_run(out: Path) -> None:
    """Every logged training (lifetime and window) and validation value equals one process over what the ranks fed."""
    rows, train, val = _rows(out), _seen(out, "train"), _seen(out, "val")
    steps = sorted({step for step, _ in train})
    assert len(steps) == 24  # 2 epochs x 12 steps, on both ranks
    checked = 0
    for row in rows:
        step = int(row["step"])
        if "train/ne/click" in row and (step + 1) % 4 == 0:  # computed at this step (every 4 updates)
            for task in TASKS:
                expected = _reference([b for s, b in train if s <= step], task)
                # the window: 150 samples per rank, the newest 3 updates of 50 (whole updates)
                window = _reference([b for s, b in train if step - 3 < s <= step], task)
                for name, value in expected.items():
                    np.testing.assert_allclose(row[f"train/{name}/{task}"], value, rtol=1e-9, err_msg=f"step {step}")
                    key = f"train/{name}/{task}/window"
                    np.testing.assert_allclose(row[key], window[name], rtol=1e-9, err_msg=f"{key} at {step}")
            checked += 1
        if "val/ne/click" in row:  # validation over the 1001 samples, each counted once
            batches = [b for s, b in val if s == step + 1]
            assert sum(len(b["weight"]) for b in batches) == 1001
            for task in TASKS:
                for name, value in _reference(batches, task).items():
                    np.testing.assert_allclose(row[f"val/{name}/{task}"], value, rtol=1e-9, err_msg=f"val {step}")
            checked += 1
    # six interval computes and two validations; each epoch ends on an interval compute (12 steps,
    # every 4), so the epoch-end log is skipped rather than writing the same values twice at one step
    assert checked == 6 + 2
    train_steps = [int(row["step"]) for row in rows if "train/ne/click" in row]
    assert train_steps == sorted(set(train_steps))  # no step logged twice


@pytest.mark.ddp
def test_ddp_training_and_validation_values_equal_one_process(full_run):
    _check_full_run(full_run)


@pytest.mark.ddp
def test_ddp_sync_dist_advice_spares_the_callbacks_keys_alone(full_run):
    """The callback's values are synced by the module: Lightning's advice to log them with sync_dist=True came
    for every one of them anyway (given at the epoch-end reduction, after the callback's catch_warnings block).
    The user's own key, logged with self.log in validation_step, still gets it."""
    caught = torch.load(full_run / "seen_rank0.pt", weights_only=False)["warnings"]
    advice = [message for message in caught if "sync_dist=True" in message]
    assert advice == [  # Lightning's message (it gives each once per process, from rank 0)
        "It is recommended to use `self.log('user/constant', ..., sync_dist=True)` when logging on epoch level in "
        "distributed setting to accumulate the metric across devices."
    ]


@pytest.mark.ddp
def test_ddp_resume_from_a_mid_epoch_checkpoint_logs_the_same_values(full_run, tmp_path):
    # rank 0's training states are the model's state_dict, rank 1's are copied; no validation states
    per_rank = torch.load(full_run / "ckpt" / "step=6.ckpt", weights_only=False)["rec_metric_modules"]
    assert [sorted(entry) for entry in per_rank] == [["train_metrics"], ["train_metrics"]]
    assert per_rank[0]["train_metrics"] is None and per_rank[1]["train_metrics"]
    _launch(tmp_path, "--resume", str(full_run / "ckpt" / "step=6.ckpt"), *WINDOW)
    resumed = tmp_path
    whole = {(int(r["step"]), tuple(sorted(r))): r for r in _rows(full_run)}
    later = [r for r in _rows(resumed) if int(r["step"]) >= 7]
    assert len(later) == 5 + 2  # interval computes at steps 7, 11, 15, 19, 23; two validations
    assert any(key.endswith("/window") for key in later[0])
    for row in later:
        reference = whole[(int(row["step"]), tuple(sorted(row)))]
        for key, value in row.items():
            assert value == pytest.approx(reference[key], rel=1e-12, abs=0), (row["step"], key)


@pytest.mark.ddp
def test_ddp_resume_without_per_rank_states_starts_the_metrics_afresh(full_run, tmp_path):
    """A checkpoint saved without the callback holds rank 0's states alone: loaded on both ranks they
    counted rank 0's samples twice. The callback now warns and starts the modules afresh."""
    checkpoint = torch.load(full_run / "ckpt" / "step=6.ckpt", weights_only=False)
    del checkpoint["rec_metric_modules"]
    torch.save(checkpoint, tmp_path / "no_ranks.ckpt")
    out = tmp_path / "run"
    _launch(out, "--resume", str(tmp_path / "no_ranks.ckpt"), *WINDOW)
    train = _seen(out, "train")
    assert min(step for step, _ in train) == 6  # the resumed run's own batches, both ranks
    checked = 0
    for row in _rows(out):
        step = int(row["step"])
        if "train/ne/click" in row and step < 12:  # the first epoch's interval computes after the resume
            for task in TASKS:  # over the samples since the resume only: the modules started afresh
                expected = _reference([b for s, b in train if s <= step], task)
                for name, value in expected.items():
                    np.testing.assert_allclose(row[f"train/{name}/{task}"], value, rtol=1e-9, err_msg=f"step {step}")
            checked += 1
    assert checked == 2  # steps 7 and 11


@pytest.fixture(scope="module")
def spawn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spawn")
    _launch(out, "--strategy", "ddp_spawn", "--checkpoint-every", "6", *WINDOW)
    return out


@pytest.mark.ddp
def test_ddp_spawn_training_and_validation_values_equal_one_process(spawn_run):
    """Under ddp_spawn the ranks unpickled one model: their metric states shared one storage each, so every
    rank's sums held the other's samples too (CTR 0.3099 for 0.3175, the window off from the first compute)."""
    _check_full_run(spawn_run)


@pytest.mark.ddp
def test_ddp_spawn_resume_from_a_mid_epoch_checkpoint_logs_the_same_values(spawn_run, tmp_path):
    """A resumed ddp_spawn run continues each rank's own states exactly (the restore writes no shared storage)."""
    _launch(tmp_path, "--strategy", "ddp_spawn", "--resume", str(spawn_run / "ckpt" / "step=6.ckpt"), *WINDOW)
    whole = {(int(r["step"]), tuple(sorted(r))): r for r in _rows(spawn_run)}
    later = [r for r in _rows(tmp_path) if int(r["step"]) >= 7]
    assert len(later) == 5 + 2  # interval computes at steps 7, 11, 15, 19, 23; two validations
    for row in later:
        reference = whole[(int(row["step"]), tuple(sorted(row)))]
        for key, value in row.items():
            assert value == pytest.approx(reference[key], rel=1e-12, abs=0), (row["step"], key)


@pytest.mark.ddp
def test_a_checkpoint_saved_in_ddp_spawns_main_process_starts_the_training_metrics_afresh(spawn_run, monkeypatch):
    """After a ddp_spawn fit Lightning loads rank 0's state_dict into the main process's model, whose modules then
    hold rank 0's samples alone. A trainer.save_checkpoint() there was marked as a complete one-rank checkpoint:
    a resume in one process took rank 0's half of the samples for the whole, without a warning."""
    from tests.helpers.lightning_run import ClickModel as RunModel

    warned = torch.load(spawn_run / "after_fit_warnings.pt", weights_only=False)
    assert any("`train_metrics` holds rank 0's metric states alone" in message for message in warned)
    checkpoint = torch.load(spawn_run / "after_fit.ckpt", weights_only=False)
    rank0 = [batch for _, batch in torch.load(spawn_run / "seen_rank0.pt", weights_only=False)["train"]]
    last = rank0[-1]
    for world, match in (
        (1, r"2 rank\(s\), this run has 1"),
        (2, r"rank 0's metric states alone \(saved in ddp_spawn's main process, after the fit\)"),
    ):
        for rank in range(world):
            model = RunModel(str(spawn_run), 300)
            model.load_state_dict(checkpoint["state_dict"])  # what Lightning loads first
            # docs/module.md: the main process's module holds rank 0's samples alone
            held = model.train_metrics.local_compute()["train/ctr/click"].item()
            assert held == pytest.approx(_reference(rank0, "click")["ctr"], rel=1e-9)
            if world > 1:
                _as_rank(monkeypatch, rank)
            with pytest.warns(UserWarning, match=rf"{match}; `train_metrics` starts afresh"):
                RecMetricCallback().on_load_checkpoint(None, model, copy.deepcopy(checkpoint))
            monkeypatch.undo()
            model.train_metrics.update(last)  # afresh: the values of this batch alone
            values = model.train_metrics.local_compute()
            for name, value in _reference([last], "click").items():
                assert values[f"train/{name}/click"].item() == pytest.approx(value, rel=1e-9), (world, rank, name)


def _as_rank(monkeypatch, rank: int) -> None:
    """Make the callback see a 2-rank process group as `rank`; its all-gather puts rank 0's entry (None) first."""
    import torchmetrics_ext.integrations.lightning as integration

    def all_gather_object(out, obj):
        out[:] = [{name: None for name in obj}, obj]

    monkeypatch.setattr(integration.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(integration.dist, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(integration.dist, "get_rank", lambda *args: rank)
    monkeypatch.setattr(integration.dist, "all_gather_object", all_gather_object)


def test_resuming_with_a_metric_added_follows_strict_loading(monkeypatch):
    """RecMetricCallback loads its modules as Lightning loads the model: strict_loading=False starts new metrics.

    Rank 1 of two: in one process, and on rank 0, Lightning's own restore of the model's state_dict loads them."""

    class Model(L.LightningModule):
        def __init__(self, metrics, strict: bool) -> None:
            super().__init__()
            self.train_metrics = tmx.RecMetricModule(["click"], metrics, throughput=False)
            self.strict_loading = strict

    old = Model({"ne": "ne"}, strict=True)
    old.train_metrics.update({"prediction": torch.tensor([0.9, 0.2]), "label": torch.tensor([1, 0])})
    _as_rank(monkeypatch, 1)
    callback, checkpoint = RecMetricCallback(val=None), {"state_dict": old.state_dict()}
    callback.on_save_checkpoint(None, old, checkpoint)
    refused = Model({"ne": "ne", "mse": "mse"}, strict=True)
    refused.train_metrics.update({"prediction": torch.tensor([0.3]), "label": torch.tensor([1])})
    before = copy.deepcopy(refused.train_metrics.state_dict())
    with pytest.raises(RuntimeError, match=r"self\.strict_loading = False"):
        callback.on_load_checkpoint(None, refused, copy.deepcopy(checkpoint))
    after = refused.train_metrics.state_dict()  # NE, loaded before MSE's states were found missing, is put back
    assert after.pop("_extra_state") == before.pop("_extra_state")  # the step counter
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    new = Model({"ne": "ne", "mse": "mse"}, strict=False)
    callback.on_load_checkpoint(None, new, checkpoint)
    monkeypatch.undo()
    new.train_metrics.update({"prediction": torch.tensor([0.6]), "label": torch.tensor([1])})
    values = new.train_metrics.local_compute()
    assert values["mse/click"].item() == pytest.approx(0.16)  # (1 - 0.6)^2: the new metric starts afresh
    p, y = np.array([0.9, 0.2, 0.6], dtype=np.float32).astype(np.float64), np.array([1, 0, 1])  # NE over all three
    expected = log_loss(y, p) / log_loss(y, np.full(3, y.mean()))
    assert values["ne/click"].item() == pytest.approx(expected, rel=1e-12)


class TwoModuleModel(L.LightningModule):
    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.train_metrics = tmx.RecMetricModule(["click"], {"ne": "ne", "ctr": "ctr"}, throughput=False)
        self.val_metrics = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False)
        self.strict_loading = strict


def test_a_module_without_per_rank_states_follows_strict_loading():
    """A checkpoint whose callback did not manage `train_metrics` (train=None) raised a bare KeyError on resume,
    with strict_loading False too (module.md: such a module resumes afresh)."""
    old = TwoModuleModel()
    old.train_metrics.update({"prediction": torch.tensor([0.9, 0.2]), "label": torch.tensor([1, 0])})
    old.val_metrics.update({"prediction": torch.tensor([0.5, 0.5, 0.5]), "label": torch.tensor([1, 0, 0])})
    checkpoint = {"state_dict": old.state_dict()}
    RecMetricCallback(train=None).on_save_checkpoint(None, old, checkpoint)  # the run saved without a train module
    assert checkpoint["rec_metric_modules"] == [{}]  # nor the validation module's: no resume reads them
    with pytest.raises(RuntimeError, match=r"no per-rank states of `train_metrics`.*self\.strict_loading = False"):
        RecMetricCallback().on_load_checkpoint(None, TwoModuleModel(strict=True), copy.deepcopy(checkpoint))
    new = TwoModuleModel(strict=False)
    new.load_state_dict(copy.deepcopy(checkpoint["state_dict"]), strict=False)  # what Lightning does first
    RecMetricCallback().on_load_checkpoint(None, new, copy.deepcopy(checkpoint))
    new.train_metrics.update({"prediction": torch.tensor([0.6]), "label": torch.tensor([1])})
    p, y = np.array([0.9, 0.2, 0.6], dtype=np.float32).astype(np.float64), np.array([1, 0, 1])
    expected = log_loss(y, p) / log_loss(y, np.full(3, y.mean()))
    # one process: what Lightning loaded from the model's state_dict is this rank's, and stays
    assert new.train_metrics.compute()["ne/click"].item() == pytest.approx(expected, rel=1e-12)


def test_a_module_without_per_rank_states_starts_afresh_under_ddp(monkeypatch):
    """Under DDP the module's states Lightning loaded are rank 0's alone: with strict_loading False it starts afresh."""
    old = TwoModuleModel()
    old.train_metrics.update({"prediction": torch.tensor([0.5, 0.5]), "label": torch.tensor([0, 0])})
    _as_rank(monkeypatch, 1)
    checkpoint = {"state_dict": old.state_dict()}
    RecMetricCallback(train=None).on_save_checkpoint(None, old, checkpoint)  # two ranks saved no train module
    assert checkpoint["rec_metric_modules"] == [{}, {}]
    new = TwoModuleModel(strict=False)
    new.load_state_dict(checkpoint["state_dict"], strict=False)  # rank 0's states, loaded on every rank
    with pytest.warns(UserWarning, match="no per-rank states of `train_metrics`.*starts afresh"):
        RecMetricCallback().on_load_checkpoint(None, new, checkpoint)
    monkeypatch.undo()
    new.train_metrics.update({"prediction": torch.tensor([0.5, 0.5, 0.5]), "label": torch.tensor([1, 0, 1])})
    assert new.train_metrics.local_compute()["ctr/click"].item() == pytest.approx(2 / 3)  # afresh (2 / 5 resumed)


def _ctr_states(labels: list[float], module: tmx.RecMetricModule) -> dict[str, Any]:
    """The module's state_dict after one update with these labels (prediction 0.5)."""
    module.update({"prediction": torch.full((len(labels),), 0.5), "label": torch.tensor(labels)})
    return module.state_dict()


class RecordingTrainedModel(TrainedEvalModel):
    """TrainedEvalModel that keeps the labels of its training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.trained: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.trained.append(batch[1].double())
        return super().training_step(batch, batch_idx)


def test_rank_zero_keeps_its_own_states_under_a_strategy_that_saves_the_model_its_own_way(monkeypatch):
    """FSDP's sharded checkpoints write each tensor every rank holds from whichever rank the distributed checkpoint
    planner picks, so the model's state_dict can hold rank 1's metric states. Rank 0 relied on it (its entry was None)
    and resumed with rank 1's samples: CTR 1/6 where its own labels give 3/4. It now saves its own states there."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
    from lightning.pytorch.trainer.states import TrainerFn

    import torchmetrics_ext.integrations.lightning as integration

    rank0_labels, rank1_labels = [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    rank0, rank1 = TrainedEvalModel(), TrainedEvalModel()
    _ctr_states(rank0_labels, rank0.train_metrics)
    rank1_states = _ctr_states(rank1_labels, rank1.train_metrics)
    monkeypatch.setattr(integration.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(integration.dist, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(integration.dist, "get_rank", lambda *args: 0)
    monkeypatch.setattr(
        integration.dist,
        "all_gather_object",
        lambda out, obj: out.__setitem__(slice(None), [obj, {"train_metrics": rank1_states}]),
    )
    fitting = SimpleNamespace(fn=TrainerFn.FITTING)
    fsdp = SimpleNamespace(strategy=FSDPStrategy(state_dict_type="sharded"), world_size=2, state=fitting)
    checkpoint = {"state_dict": rank1.state_dict()}  # the planner wrote rank 1's copy of the metric states
    RecMetricCallback().on_save_checkpoint(fsdp, rank0, checkpoint)
    resumed = TrainedEvalModel()
    resumed.load_state_dict(checkpoint["state_dict"])  # what the strategy loads into every rank
    RecMetricCallback().on_load_checkpoint(fsdp, resumed, checkpoint)
    # under DDP rank 0 writes its own model state_dict: its entry stays None (the states are stored once)
    ddp = SimpleNamespace(strategy=DDPStrategy(), world_size=2, state=fitting)
    plain: dict[str, Any] = {"state_dict": rank0.state_dict()}
    RecMetricCallback().on_save_checkpoint(ddp, rank0, plain)
    monkeypatch.undo()
    assert resumed.train_metrics.local_compute()["train/ctr/click"].item() == pytest.approx(np.mean(rank0_labels))
    assert plain["rec_metric_modules"][0] == {"train_metrics": None}


def test_checkpoints_hold_the_training_states_once_and_resume_them_exactly(tmp_path):
    """One process: the callback copied every module's states next to the model's state_dict (the file held the
    training and validation states twice; exact AUC keeps every sample). Now rank 0's entry names the training
    module alone, without a copy, and the resume continues from the model's state_dict."""
    first = RecordingTrainedModel()
    trainer = _evaluator(callbacks=[RecMetricCallback()], max_steps=2, enable_checkpointing=False)
    trainer.fit(first, _loader(8, 0.5, 0), _loader(4, 0.5, 0))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=False)
    assert checkpoint["rec_metric_modules"] == [{"train_metrics": None}]
    assert any(key.startswith("train_metrics.") for key in checkpoint["state_dict"])
    resumed = _evaluator(callbacks=[RecMetricCallback()], max_steps=4, limit_val_batches=0, enable_checkpointing=False)
    model = RecordingTrainedModel()
    resumed.fit(model, _loader(8, 0.5, 1), ckpt_path=tmp_path / "run.ckpt")
    assert len(first.trained) == len(model.trained) == 2
    labels = torch.cat(first.trained + model.trained).numpy()  # every label since the first step
    assert resumed.callback_metrics["train/ctr/click"].item() == pytest.approx(labels.mean(), rel=1e-12)


def test_checkpoints_of_earlier_versions_still_resume(monkeypatch):
    """Earlier checkpoints held a copy for every rank (rank 0's too) and the validation module's states."""
    rank_labels = ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0])
    built = TwoModuleModel()
    val_states = _ctr_states([1.0, 0.0], built.val_metrics)
    per_rank = [
        {"train_metrics": _ctr_states(labels, copy.deepcopy(built.train_metrics)), "val_metrics": val_states}
        for labels in rank_labels
    ]
    for rank, world in ((0, 1), (1, 2)):
        model = TwoModuleModel()
        if world > 1:
            _as_rank(monkeypatch, rank)
        RecMetricCallback().on_load_checkpoint(None, model, {"rec_metric_modules": copy.deepcopy(per_rank[:world])})
        monkeypatch.undo()
        expected = np.mean(rank_labels[rank])
        assert model.train_metrics.local_compute()["ctr/click"].item() == pytest.approx(expected, rel=1e-12)


class SkipsFirstBatch(ClickModel):
    """Returns None for batch 0: Lightning's documented way to skip a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            return None
        self.counted.append(batch[1][:, 0])
        return super().training_step(batch, batch_idx)


def test_a_skipped_training_step_updates_nothing():
    model = SkipsFirstBatch()
    _fit(model, RecMetricCallback(val=None), limit_val_batches=0)
    labels = torch.cat(model.counted).double().numpy()
    # the skipped batch adds no sample but counts as a step (as on a DDP rank, so every rank computes together)
    assert model.train_metrics._step == len(model.counted) + 1
    values = model.train_metrics.local_compute()
    assert values["train/ctr/click"].item() == pytest.approx(labels.mean())  # numpy over the counted labels


class WeightedModel(L.LightningModule):
    """One weighted task with a window and throughput; updated by the callback, or (``manual``, the README's
    pattern) in ``training_step``, where true precision makes bfloat16/float16 the default dtype."""

    def __init__(self, manual: bool) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.train_metrics = tmx.RecMetricModule(
            [tmx.RecTaskInfo("click", "label", "prediction", "weight")],
            {"ne": "ne", "ctr": "ctr", "sum_weights": "sum_weights", "auc": "auc"},
            window_size=96,
            compute_interval_steps=3,
            prefix="train/",
        )
        self.manual = manual
        self.fed: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y, w = batch
        out = {"prediction": torch.sigmoid(self.linear(x)[:, 0]), "label": y, "weight": w}
        self.fed.append({k: v.detach().clone() for k, v in out.items()})
        if self.manual:
            self.train_metrics.update({k: v.detach() for k, v in out.items()})
        # the loss in float32: PyTorch 2.3 has no CPU binary_cross_entropy in bfloat16/float16
        loss = torch.nn.functional.binary_cross_entropy(out["prediction"].float(), y.float())
        return {"loss": loss, **out}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _weighted_reference(fed: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    p, y, w = (torch.cat([out[k] for out in fed]).double().numpy() for k in ("prediction", "label", "weight"))
    ctr = (w * y).sum() / w.sum()
    cross_entropy = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()
    return {
        "ne": cross_entropy / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)),
        "ctr": ctr,
        "sum_weights": w.sum(),
        "auc": roc_auc_score(y, p, sample_weight=w),
    }


@pytest.mark.parametrize("manual", [False, True], ids=["callback", "manual"])
@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_true_precision_training_leaves_the_metrics_in_their_dtypes(precision, manual):
    """``Trainer(precision="bf16-true")`` casts the model with ``.to(dtype)``: the metrics keep their float64
    sums (in bfloat16 they stopped growing), so the values over the fed half-precision outputs equal numpy's,
    lifetime and window (the last 3 steps), and every state keeps its dtype."""
    gen = torch.Generator().manual_seed(0)
    n = 8 * 32
    x, y, w = (
        torch.randn(n, 4, generator=gen),
        (torch.rand(n, generator=gen) < 0.3).float(),
        torch.rand(n, generator=gen),
    )
    model = WeightedModel(manual)
    dtypes = {k: v.dtype for k, v in model.train_metrics.state_dict().items() if isinstance(v, torch.Tensor)}
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        callbacks=[] if manual else [RecMetricCallback(val=None)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, w), batch_size=32))
    assert model.fed[0]["prediction"].dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float16)
    after = model.train_metrics.state_dict()
    assert {k: v.dtype for k, v in after.items() if isinstance(v, torch.Tensor)} == dtypes
    # the callback's values as logged at the epoch end; the manual module computed here
    logged = model.train_metrics.compute() if manual else trainer.callback_metrics
    for suffix, fed in (("", model.fed), ("/window", model.fed[-3:])):
        for name, expected in _weighted_reference(fed).items():
            key = f"train/{name}/click{suffix}"
            assert logged[key].item() == pytest.approx(expected, rel=1e-9), key
    assert logged["train/throughput/total_examples"].item() == n


def test_log_dict_of_the_module_itself_says_what_to_log():
    """`self.log_dict(module)` (as for a MetricCollection) gave "object has no attribute 'items'"."""
    module = tmx.RecMetricModule(["click"], {"ctr": "ctr"}, throughput=False)
    with pytest.raises(TypeError, match=r"self\.log_dict\(module\.compute\(\)\).*RecMetricCallback"):
        dict(module.items())


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (
            tmx.RankingMetrics(ks=(1,)),
            r"RankingMetrics .*compute\(\) returns a dict of values.*self\.log_dict\(metric\.compute\(\)\)",
        ),
        (tmx.Windowed(tmx.CTR(), window_size=4), r"Windowed .*returns a dict of values"),
        (tmx.AUC(num_tasks=2), r"AUC .*a \(2,\) tensor, one value per task; log one key per task"),
        (tmx.NormalizedEntropy(), r"NormalizedEntropy .*log it with `self\.log\(name, metric\)`"),
    ],
)
def test_log_dict_of_a_metric_says_what_to_log(metric, expected):
    """`self.log_dict(metric)` gave "'RankingMetrics' object has no attribute 'items'" (a dict-valued metric
    reads like a dict of metrics); a real Trainer run raises the message, and leaves the metric usable."""

    class Ranker(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
            self.metric = metric

        def training_step(self, batch, batch_idx):
            self.log_dict(self.metric)
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=8)
    with pytest.raises(TypeError, match=expected):
        trainer.fit(Ranker(), loader)
    assert not isinstance(metric, Mapping)  # still no mapping for isinstance checks (MetricCollection, Lightning)
    collection = torchmetrics.MetricCollection({"m": metric})
    assert list(collection.keys()) == ["m"]


VALIDATE_SCRIPT = ROOT / "tests" / "helpers" / "lightning_validate.py"


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("sizes", "own_dicts", "options"),
    [
        ("101,30", True, []),
        ("101,1,20", False, []),
        ("101,30", True, ["--rank1-skips-last"]),
        ("101,120", False, ["--unsized-limit", "6"]),
    ],
    ids=["uneven-batches", "a-rank-without-batches", "rank1-returns-none-at-last-batches", "unsized-under-a-limit"],
)
def test_ddp_several_validation_dataloaders_each_equal_one_process(tmp_path, sizes, own_dicts, options):
    """Two ranks, several dataloaders: each dataloader's values are numpy/sklearn over its samples of both ranks.

    101 samples in batches of 10 are 6 batches on rank 0 and 5 on rank 1 (each dataloader computed
    after its own last batch); a dataloader of 1 sample has no batch on rank 1 (every dataloader then
    computed at the epoch end, and each returned dict holds them all). A step that returns None (rank 1,
    at each dataloader's last batch) adds nothing, and rank 1 still computes with rank 0 after it.
    Dataloaders without length under ``limit_val_batches=6`` (Lightning's count for each, 6, is the
    last batch of the first dataloader on rank 0 alone, which has 5 on rank 1, and of the second on
    both) are computed at the epoch end: taken for last batches, the counts made rank 0 compute the
    first dataloader while rank 1 computed the second, and the ranks logged each other's mixed values.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(VALIDATE_SCRIPT), "--out", str(tmp_path), "--sizes", sizes, *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    dumps = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    counts = [int(n) for n in sizes.split(",")]
    for i, n in enumerate(counts):
        p, y = torch.cat([batch for dump in dumps for batch in dump["seen"][i]], dim=1).numpy()
        rank1 = n // 2  # samples 1, 3, 5, ... in batches of 10: the last batch holds the rest
        skipped = rank1 - 10 * ((rank1 - 1) // 10) if "--rank1-skips-last" in options else 0
        assert len(y) == n - skipped  # every sample once, but those of the steps that returned None
        base = y.mean()
        entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base)) if 0 < base < 1 else np.nan
        expected = {
            "ctr": base,
            "ne": log_loss(y, p, labels=[0, 1]) / entropy,
            "auc": roc_auc_score(y, p) if 0 < base < 1 else np.nan,
        }
        for dump in dumps:  # every rank logs the synced values
            for result_dict in dump["results"] if not own_dicts else [dump["results"][i]]:
                for name, value in expected.items():
                    key = f"val/{name}/click/dataloader_idx_{i}"
                    np.testing.assert_allclose(result_dict[key], value, rtol=1e-6, err_msg=key)
            if own_dicts:
                assert all(key.endswith(f"/dataloader_idx_{i}") for key in dump["results"][i])


SKIP_SCRIPT = ROOT / "tests" / "helpers" / "lightning_skip.py"


@pytest.mark.ddp
def test_ddp_training_steps_returning_none_on_one_rank_keep_the_ranks_computing_together(tmp_path):
    """Rank 1's training_step returns None at batches 1, 2 and 6 (manual optimisation), rank 0's never.

    The callback used to skip rank 1's update there, so the ranks' update counts, and with them
    ``should_compute()``, drifted apart: rank 0 entered a compute (a collective) that rank 1 did not,
    and the run hung (here: the process group's timeout). A step that returned None now counts as an
    empty step on its rank: both compute after batches 1, 3 and 5 and at the epoch end, each logged
    value over the samples the ranks fed (numpy and scikit-learn in one process).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, str(SKIP_SCRIPT), "--out", str(tmp_path), "--skip", "1,2,6", "--timeout", "60"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks: Lightning started rank 1 in this session
        output, _ = proc.communicate()
        pytest.fail("the DDP run did not end: " + output[-3000:])
    assert proc.returncode == 0, output[-6000:]
    seen = [entry for rank in (0, 1) for entry in torch.load(tmp_path / f"seen_rank{rank}.pt", weights_only=False)]
    assert sorted(i for i, _ in seen) == sorted([*range(7), 0, 3, 4, 5])  # rank 1 fed batches 0, 3, 4, 5
    rows = [row for row in _rows(tmp_path) if "train/ctr/click" in row]
    assert [int(row["step"]) for row in rows] == [1, 3, 5, 6]  # every 2 batches, then the epoch end
    for row in rows:
        upto = int(row["step"])
        p, y = torch.cat([batch for i, batch in seen if i <= upto], dim=1).numpy()
        base = y.mean()
        expected = {
            "ctr": base,
            "ne": log_loss(y, p, labels=[0, 1]) / -(base * np.log(base) + (1 - base) * np.log(1 - base)),
            "auc": roc_auc_score(y, p),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(row[f"train/{name}/click"], value, rtol=1e-9, err_msg=f"{name} at {upto}")


class TrainOnlyModel(L.LightningModule):
    """Training metrics only: no ``val_metrics`` and no ``validation_step`` (Lightning runs no validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_logit") for t in TASKS]
        self.train_metrics = tmx.RecMetricModule(tasks, {"ctr": "ctr"}, throughput=False, prefix="train/")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.linear(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
        return {"loss": loss, "click_logit": logits[:, 0], "buy_logit": logits[:, 1]} | {
            "click_label": y[:, 0],
            "buy_label": y[:, 1],
        }

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_default_callback_fits_a_model_without_validation():
    """``RecMetricCallback()`` refused a model with neither ``val_metrics`` nor a ``validation_step`` at setup
    (the first-run stumble: ``val=None`` was needed although Lightning runs no validation for it)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 4, generator=gen), (torch.rand(128, 2, generator=gen) < 0.3).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[RecMetricCallback()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TrainOnlyModel(), loader)
    logged = trainer.callback_metrics
    np.testing.assert_allclose(logged["train/ctr/click"].item(), y[:, 0].double().mean().item(), rtol=1e-12)
    np.testing.assert_allclose(logged["train/ctr/buy"].item(), y[:, 1].double().mean().item(), rtol=1e-12)


class ValidatedWithoutModule(ClickModel):
    def __init__(self) -> None:
        super().__init__()
        del self.val_metrics


def test_a_model_with_a_validation_step_still_needs_its_validation_module():
    """The default ``val`` name is only skipped for a model without validation: a typo is still caught."""
    with pytest.raises(AttributeError, match=r"`ValidatedWithoutModule\.val_metrics` is missing"):
        _fit(ValidatedWithoutModule(), RecMetricCallback())


@pytest.mark.parametrize("val_ks", [[10], [5]])
def test_same_keys_warning_names_a_key_the_modules_log(val_ks):
    """The warning's example key was the metric's name alone (``'rk/click'``) for a metric whose value is a dict:
    no key the modules log. It names one of them now (``'rk.ndcg@10/click'``, the DESIGN key format with its
    entry); two settings of one metric name with no entry in common (``ks=[10]`` and ``ks=[5]``) log no common
    key and do not warn."""
    task = [tmx.RecTaskInfo("click", "y", "p", weight_name=None, session_id_name="s")]
    model = L.LightningModule()
    model.train_metrics = tmx.RecMetricModule(task, {"rk": tmx.RankingMetrics(ks=[10])}, throughput=False)
    model.val_metrics = tmx.RecMetricModule(task, {"rk": tmx.RankingMetrics(ks=val_ks)}, throughput=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RecMetricCallback().setup(trainer, model, "fit")
    same = [str(w.message) for w in caught if "log the same keys" in str(w.message)]
    if val_ks != [10]:
        assert same == []
        return
    assert len(same) == 1
    assert "(e.g. 'rk.ndcg@10/click')" in same[0]


SUBSET_TASKS = ("click", "conversion", "watch_time")


class SubsetModel(L.LightningModule):
    """Two binary heads and a regression head; each metric reads its tasks (``metric_tasks``), GroupedAUC the
    binary heads' user ids (the regression head names no group id column)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        binary = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_prob", group_id_name="user") for t in SUBSET_TASKS[:2]]
        tasks = [*binary, tmx.RecTaskInfo("watch_time", "watch_time_label", "watch_time_pred")]
        self.train_metrics = tmx.RecMetricModule(
            tasks,
            ["ne", "gauc", "mse"],
            throughput=False,
            window_size=24,
            compute_interval_steps=2,
            prefix="train/",
            metric_tasks={"ne": ["click", "conversion"], "gauc": ["click", "conversion"], "mse": ["watch_time"]},
        )

    def training_step(self, batch, batch_idx):
        x, y, wt, user = batch
        out = self.linear(x)
        probs = torch.sigmoid(out[:, :2])
        loss = torch.nn.functional.binary_cross_entropy(probs, y.float()) + (out[:, 2] - wt).pow(2).mean()
        return {
            "loss": loss,
            "click_prob": probs[:, 0],
            "conversion_prob": probs[:, 1],
            "click_label": y[:, 0],
            "conversion_label": y[:, 1],
            "watch_time_pred": out[:, 2],
            "watch_time_label": wt,
            "user": user,
        }

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _subset_fit(tmp_path: Path, ckpt_path: Path | None = None) -> tuple[L.Trainer, list[dict[str, str]]]:
    from tests.helpers.lightning_run import ResumableShards  # a resume continues at the next batch

    gen = torch.Generator().manual_seed(5)
    n = 64  # 8 batches of 8 in one epoch
    data = ResumableShards(
        (
            torch.randn(n, 4, generator=gen),
            (torch.rand(n, 2, generator=gen) < 0.4).long(),
            torch.rand(n, generator=gen) * 3.0,
            torch.randint(0, 3, (n,), generator=gen),
        ),
        batch=8,
    )
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="logs", version=0),
        callbacks=[RecMetricCallback(val=None), checkpoints],
        max_epochs=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.manual_seed(0)
    trainer.fit(SubsetModel(), data, ckpt_path=ckpt_path)
    return trainer, _csv_rows(tmp_path, "train/ne/click")


def test_a_module_with_metric_tasks_resumes_mid_epoch_as_an_uninterrupted_run(tmp_path):
    """Resumed from a checkpoint after step 3 of 8, the callback logs what the uninterrupted run logged from
    there on (lifetime and window of every metric's subset), and only the keys of the tasks each metric reads."""
    whole, whole_rows = _subset_fit(tmp_path / "whole")
    resumed, resumed_rows = _subset_fit(tmp_path / "resumed", tmp_path / "whole" / "ckpt" / "epoch=0-step=3.ckpt")
    keys = {key for key in whole.callback_metrics if key.startswith("train/")}
    assert keys == {
        f"train/{metric}/{task}{suffix}"
        for metric, tasks in (("ne", SUBSET_TASKS[:2]), ("gauc", SUBSET_TASKS[:2]), ("mse", SUBSET_TASKS[2:]))
        for task in tasks
        for suffix in ("", "/window")
    }
    assert {key for key in resumed.callback_metrics if key.startswith("train/")} == keys
    later = {row["step"]: row for row in whole_rows if int(row["step"]) >= 3}  # the 4th batch on
    assert [row["step"] for row in resumed_rows] == list(later)
    for row in resumed_rows:
        for key in keys:
            assert float(row[key]) == pytest.approx(float(later[row["step"]][key]), rel=1e-12, abs=0), (row, key)
    for key in keys:
        assert resumed.callback_metrics[key].item() == pytest.approx(whole.callback_metrics[key].item(), rel=1e-12)
