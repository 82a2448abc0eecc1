"""A ``LightningModule`` set up by ``lightning.fabric.Fabric``: its ``self.log_dict`` goes through Fabric.

Lightning's route through Fabric (``LightningModule._log_dict_through_fabric``) reads ``dictionary.values()``
before it checks each value, where the Trainer's route reads ``items()``: a ``RecMetricModule`` or a dict-valued
metric given to ``self.log_dict`` failed there with Python's bare "object has no attribute 'values'". These run
a real ``Fabric`` (one CPU process here; two spawned ranks in ``test_fabric_ddp_spawn.py``), and the values it
logs are checked against scikit-learn and numpy over the same rows.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

L = pytest.importorskip("lightning")
from lightning.fabric import Fabric  # noqa: E402
from lightning.fabric.loggers import CSVLogger  # noqa: E402

import torchmetrics_ext as tmx  # noqa: E402

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred")]


class _Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(1, 1)
        self.val_metrics = tmx.RecMetricModule(TASKS, {"ne": "ne", "auc": "auc"}, prefix="val/", throughput=False)
        self.ranking = tmx.RankingMetrics(ks=(2,), metrics=("ndcg",))
        self.windowed = tmx.Windowed(tmx.CTR(), window_size=8)


def _fabric(tmp_path) -> tuple[Fabric, _Model]:
    fabric = Fabric(accelerator="cpu", devices=1, loggers=CSVLogger(tmp_path, name="fabric", version=0))
    model = fabric.setup(_Model())
    return fabric, model.module if hasattr(model, "module") else model


@pytest.mark.parametrize(
    ("attribute", "match"),
    [
        ("val_metrics", r"A RecMetricModule is not a dict of metrics: log its values, `self.log_dict\(module.compute"),
        ("ranking", r"RankingMetrics is a metric, not a dict of metrics: its compute\(\) returns a dict"),
        ("windowed", r"Windowed is a metric, not a dict of metrics: its compute\(\) returns a dict"),
    ],
)
def test_log_dict_of_a_module_or_dict_metric_through_fabric_names_what_to_log(tmp_path, attribute, match):
    _, model = _fabric(tmp_path)
    with pytest.raises(TypeError, match=match):
        model.log_dict(getattr(model, attribute))


def test_log_of_a_module_through_fabric_names_the_call(tmp_path):
    _, model = _fabric(tmp_path)
    with pytest.raises(ValueError, match=r"`self.log\('v', ...\)` was given a RecMetricModule"):
        model.log("v", model.val_metrics)


def test_log_dict_of_compute_through_fabric_writes_the_reference_values(tmp_path):
    fabric, model = _fabric(tmp_path)
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 37)
    y = (rng.uniform(size=37) < p).astype(np.float64)
    for rows in np.array_split(np.arange(37), 3):
        model.val_metrics.update({"click_pred": torch.tensor(p[rows]), "click_label": torch.tensor(y[rows])})
    model.log_dict(model.val_metrics.compute())
    fabric.loggers[0].finalize("success")
    with open(tmp_path / "fabric" / "version_0" / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    base = y.mean()
    ne = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) / -(base * np.log(base) + (1 - base) * np.log(1 - base))
    np.testing.assert_allclose(float(row["val/ne/click"]), ne, rtol=1e-9)
    np.testing.assert_allclose(float(row["val/auc/click"]), roc_auc_score(y, p), rtol=1e-12)
