"""RecMetricCallback under Lightning loop features a real project combines, every logged number against numpy/sklearn.

``precision="bf16-mixed"`` (autocast: the model's probabilities arrive as bfloat16), validation twice per epoch
over two dataloaders after two sanity steps, a window and an interval that is not the epoch's length. The
references take exactly the samples each loop stage saw, recorded in the steps (the bfloat16 values, in float64).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred", weight_name="w", group_id_name="user")]
METRICS = ["ne", "auc", "calibration", "ctr", "gauc"]
BATCH = 16


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    user = torch.randint(0, 4, (n,), generator=gen)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(x[:, 0] + 0.3 * user - 0.8)).float()
    return TensorDataset(x, y, user, torch.rand(n, generator=gen) + 0.5)


def _reference(steps: list[tuple[np.ndarray, ...]]) -> dict[str, float]:
    p, y, w, u = (np.concatenate([s[i] for s in steps]) for i in range(4))
    ctr = (w * y).sum() / w.sum()
    log_loss = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    entropy = -w.sum() * (ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    groups = pd.DataFrame({"p": p, "y": y, "w": w, "u": u}).groupby("u")
    per_group = [roc_auc_score(g.y, g.p, sample_weight=g.w) for _, g in groups if g.y.nunique() == 2]
    return {
        "ne": log_loss / entropy,
        "auc": roc_auc_score(y, p, sample_weight=w),
        "calibration": (w * p).sum() / (w * y).sum(),
        "ctr": ctr,
        "gauc": float(np.mean(per_group)),
    }


class _Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.train_metrics = tmx.RecMetricModule(
            TASKS, METRICS, prefix="train/", window_size=3 * BATCH, compute_interval_steps=3
        )
        self.val_metrics = tmx.RecMetricModule(TASKS, METRICS, prefix="val/", throughput=False)
        self.seen: list[tuple[str, int, int, tuple[np.ndarray, ...]]] = []  # (stage, validation run, loader, step)
        self.runs = 0
        self.dtypes: set[torch.dtype] = set()

    def on_validation_epoch_start(self):
        self.runs += 0 if self.trainer.sanity_checking else 1

    def _out(self, batch, stage, loader=0):
        x, y, user, w = batch
        p = torch.sigmoid(self.net(x)[:, 0])
        self.dtypes.add(p.dtype)
        if not self.trainer.sanity_checking:
            arrays = (p.detach().double().numpy(), y.double().numpy(), w.double().numpy(), user.double().numpy())
            self.seen.append((stage, self.runs, loader, arrays))
        return p, {"click_pred": p, "click_label": y, "w": w, "user": user}

    def training_step(self, batch, batch_idx):
        p, out = self._out(batch, "train")
        return {"loss": torch.nn.functional.binary_cross_entropy(p.float(), batch[1]), **out}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return self._out(batch, "val", dataloader_idx)[1]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_bf16_mixed_mid_epoch_validation_over_two_loaders(tmp_path):
    torch.manual_seed(0)
    model = _Model()
    logger = CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_epochs=2,
        precision="bf16-mixed",
        logger=logger,
        callbacks=[RecMetricCallback()],
        num_sanity_val_steps=2,
        val_check_interval=0.5,
        limit_train_batches=8,
        log_every_n_steps=5,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loaders = [DataLoader(_data(48, 2), batch_size=BATCH), DataLoader(_data(32, 3), batch_size=BATCH)]
    trainer.fit(model, DataLoader(_data(160, 1), batch_size=BATCH), loaders)
    assert torch.bfloat16 in model.dtypes  # the autocast really fed bfloat16 probabilities
    rows = pd.read_csv(f"{logger.log_dir}/metrics.csv")
    train = [s[3] for s in model.seen if s[0] == "train"]
    train_rows = rows[rows["train/throughput/total_examples"].notna()]
    # every 3 batches (3, 6 | 9, 12, 15) and each epoch's end (8, 16)
    assert (train_rows["train/throughput/total_examples"] // BATCH).astype(int).tolist() == [3, 6, 8, 9, 12, 15, 16]
    for _, row in train_rows.iterrows():
        n = int(row["train/throughput/total_examples"]) // BATCH
        lifetime, window = _reference(train[:n]), _reference(train[n - 3 : n])
        for name in METRICS:
            assert row[f"train/{name}/click"] == pytest.approx(lifetime[name], rel=1e-9, abs=1e-12), (n, name)
            assert row[f"train/{name}/click/window"] == pytest.approx(window[name], rel=1e-9, abs=1e-12), (n, name)
    val_rows = rows[rows["val/ne/click/dataloader_idx_0"].notna()]
    assert len(val_rows) == 4 == model.runs  # twice per epoch; the sanity steps log nothing
    for run, (_, row) in enumerate(val_rows.iterrows(), start=1):
        for loader in (0, 1):
            steps = [s[3] for s in model.seen if s[:3] == ("val", run, loader)]
            assert len(steps) == (3, 2)[loader]  # the whole loader, each run, nothing of the sanity check
            expected = _reference(steps)
            for name in METRICS:
                key = f"val/{name}/click/dataloader_idx_{loader}"
                assert row[key] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (run, key)


def test_interval_rows_carry_the_epoch_as_lightnings_rows_do(tmp_path):
    """Lightning writes ``epoch`` in every row it logs; the callback's interval rows (written to the loggers at
    their own step) had none, so a CSV's rows of the interval values showed no epoch."""
    model = _Model()
    logger = CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[RecMetricCallback()],
        limit_train_batches=7,
        limit_val_batches=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, DataLoader(_data(112, 1), batch_size=BATCH))
    rows = pd.read_csv(f"{logger.log_dir}/metrics.csv")
    rows = rows[rows["train/ne/click"].notna()]
    batches = (rows["train/throughput/total_examples"] // BATCH).astype(int).tolist()
    assert batches == [3, 6, 7, 9, 12, 14]  # every 3 batches, and each epoch's end
    assert rows["epoch"].tolist() == [(n - 1) // 7 for n in batches]
