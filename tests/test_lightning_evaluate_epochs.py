"""``trainer.validate`` / ``trainer.test`` / per-epoch validation with ``RecMetricCallback``, against numpy.

Every value the callback logs for an evaluation (lifetime and ``.../window`` keys) must be that of the samples the
``validation_step`` / ``test_step`` returned in that run alone: the module is reset at each evaluation epoch's
start (docs/module.md, "The callback"). The references are computed here from the predictions each step
returned: NE from its definition (numpy), AUC by scikit-learn, CTR as a weighted mean, and the window as the
documented rule (docs/windows.md: the newest whole updates whose sizes sum to at most ``window_size``). One
process: the callback logs with ``sync_dist=False`` (its ``compute()`` syncs); the documented route without the
callback, ``self.log_dict(module.compute(), sync_dist=True)``, must log the same numbers.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

import torchmetrics_ext as tmx  # noqa: E402
from torchmetrics_ext.integrations.lightning import RecMetricCallback  # noqa: E402

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred")]
WINDOW, BATCH = 10, 4


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    rate = y.mean()
    return float(loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def _window(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The newest whole batches whose sizes sum to at most ``WINDOW`` (docs/windows.md), as plain Python."""
    kept, size = [], 0
    for p, y in reversed(batches):
        if size + len(p) > WINDOW:
            break
        kept.insert(0, (p, y))
        size += len(p)
    return np.concatenate([p for p, _ in kept]), np.concatenate([y for _, y in kept])


def _reference(prefix: str, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    p, y = np.concatenate([p for p, _ in batches]), np.concatenate([y for _, y in batches])
    wp, wy = _window(batches)
    out = {}
    for part, (pp, yy) in {"": (p, y), "/window": (wp, wy)}.items():
        out[f"{prefix}ne/click{part}"] = _ne(pp, yy)
        out[f"{prefix}auc/click{part}"] = float(roc_auc_score(yy, pp))
        out[f"{prefix}ctr/click{part}"] = float(yy.mean())
    return out


def _assert_close(got: dict, expected: dict[str, float]) -> None:
    got = {key: float(value) for key, value in got.items() if key in expected}
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (key, got[key], value)


def _loader(seed: int, n: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (torch.rand(n, generator=g) < 0.45).float()
    y[:2] = torch.tensor([0.0, 1.0])  # both classes in every run and window
    y[-2:] = torch.tensor([0.0, 1.0])
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


class _Model(L.LightningModule):
    def __init__(self, callback_route: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        metrics = ["ne", "auc", "ctr"]
        self.train_metrics = tmx.RecMetricModule(TASKS, metrics, prefix="train/", throughput=False)
        self.val_metrics = tmx.RecMetricModule(TASKS, metrics, prefix="val/", window_size=WINDOW, throughput=False)
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.callback_route = callback_route
        # per stage, per run, per dataloader: the (predictions, labels) of each step
        self.seen: dict[str, list[list[list[tuple[np.ndarray, np.ndarray]]]]] = {"val": [], "test": []}

    def _out(self, batch):
        x, y = batch
        p = torch.sigmoid(self.net(x)).squeeze(1)
        return {"click_pred": p, "click_label": y}

    def training_step(self, batch, batch_idx):
        out = self._out(batch)
        return {"loss": torch.nn.functional.binary_cross_entropy(out["click_pred"], batch[1]), **out}

    def _eval_step(self, stage: str, batch, dataloader_idx: int = 0):
        out = self._out(batch)
        if dataloader_idx >= len(self.seen[stage][-1]):
            self.seen[stage][-1].append([])
        self.seen[stage][-1][dataloader_idx].append(
            (out["click_pred"].detach().double().numpy(), batch[1].double().numpy())
        )
        if not self.callback_route:
            getattr(self, f"{stage}_metrics").update(out)
        return out

    def on_validation_epoch_start(self):
        if not self.trainer.sanity_checking:
            self.seen["val"].append([])
        if not self.callback_route:
            self.val_metrics.reset()

    def on_test_epoch_start(self):
        self.seen["test"].append([])
        if not self.callback_route:
            self.test_metrics.reset()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        if self.trainer.sanity_checking:
            return self._out(batch)
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx):
        return self._eval_step("test", batch)

    def on_validation_epoch_end(self):
        if not self.callback_route and not self.trainer.sanity_checking:
            self.log_dict(self.val_metrics.compute(), sync_dist=True)  # docs/module.md, "Without the callback"

    def on_test_epoch_end(self):
        if not self.callback_route:
            self.log_dict(self.test_metrics.compute(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _trainer(tmp_path: Path | None = None, callback: bool = True, **options) -> L.Trainer:
    return L.Trainer(
        max_epochs=options.pop("max_epochs", 1),
        callbacks=[RecMetricCallback()] if callback else [],
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run", version="") if tmp_path else False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **options,
    )


@pytest.mark.parametrize("callback_route", [True, False], ids=["callback", "log_dict-sync_dist"])
def test_validate_and_test_runs_log_each_runs_samples_alone(callback_route):
    model, trainer = _Model(callback_route), _trainer(callback=callback_route)
    runs = [("validate", 1, 18), ("validate", 2, 13), ("test", 3, 21), ("test", 4, 8), ("validate", 5, 16)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for how, seed, n in runs:
            (result,) = getattr(trainer, how)(model, _loader(seed, n), verbose=False)
            stage, prefix = ("val", "val/") if how == "validate" else ("test", "test/")
            (batches,) = model.seen[stage][-1]
            expected = _reference(prefix, batches)
            assert sum(len(p) for p, _ in batches) == n  # this run's samples alone
            _assert_close(result, expected)  # what trainer.validate()/test() returns
            _assert_close(dict(trainer.callback_metrics), expected)
            _assert_close(dict(trainer.logged_metrics), expected)
    advice = [w for w in caught if "sync_dist=True" in str(w.message)]
    assert not advice, [str(w.message) for w in advice]  # one process: Lightning gives no sync_dist advice


def test_fit_logs_each_validation_epoch_its_own_samples(tmp_path):
    model = _Model()
    trainer = _trainer(tmp_path, max_epochs=3, log_every_n_steps=1, num_sanity_val_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers
        trainer.fit(model, _loader(0, 24), _loader(7, 18))
    assert len(model.seen["val"]) == 3  # the sanity check's steps are not counted
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/ne/click")]
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    for row, (batches,) in zip(rows, model.seen["val"], strict=True):
        expected = _reference("val/", batches)  # the model changed between epochs: each epoch's own predictions
        _assert_close({key: value for key, value in row.items() if value}, expected)
    epochs = [np.concatenate([p for p, _ in batches]) for (batches,) in model.seen["val"]]
    assert not np.allclose(epochs[0], epochs[-1])  # so a module not reset would show in the values


def test_validate_with_two_dataloaders_logs_each_its_own_samples():
    model, trainer = _Model(), _trainer()
    for seeds in [(11, 12), (13, 14)]:  # two runs: each starts afresh
        results = trainer.validate(model, [_loader(seeds[0], 18), _loader(seeds[1], 9)], verbose=False)
        assert len(results) == 2
        for i, (result, batches) in enumerate(zip(results, model.seen["val"][-1], strict=True)):
            expected = {f"{key}/dataloader_idx_{i}": value for key, value in _reference("val/", batches).items()}
            _assert_close(result, expected)
            _assert_close(dict(trainer.callback_metrics), expected)
