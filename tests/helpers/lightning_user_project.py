"""A recommender engineer's first project, under ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``.

Started as a script by ``tests/test_lightning_user_project.py`` (Lightning's DDP launcher re-runs this
file for rank 1). A three-head model (click and like: binary; watch: regression in seconds) whose like
and watch heads are defined on clicked rows only (weight 0 elsewhere, a weight column per task) is
trained with one training ``RecMetricModule`` built by ``from_config`` (NE, AUC, calibration, CTR and
grouped AUC by user on click and like, MSE on watch through ``metric_tasks``, a window) and validated
over per-user candidate lists (NE, AUC, grouped AUC, NDCG@5, recall@3, MRR) through
``RecMetricCallback``; then ``trainer.test`` runs on a set that Lightning's padding
``DistributedSampler`` must repeat a sample of (first under ``limit_test_batches=1``, then whole). Each rank dumps what it fed the metrics, the rows its
logger got (with how many training and evaluation batches it had seen) and its warnings.
"""

from __future__ import annotations

import argparse
import os
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback, UnpaddedDistributedSampler

USERS, ITEMS, DIM = 24, 200, 6
TRAIN, BATCH, CANDIDATES = 1000, 64, 10
WINDOW = 300  # 150 samples per rank: the newest two whole updates of 64
SHORT = 6  # every fourth user's candidate list holds 6 items
TASKS = [
    {"name": "click", "prediction_name": "click_pred", "label_name": "click", "weight_name": "w_click"},
    {"name": "like", "prediction_name": "like_pred", "label_name": "like", "weight_name": "w_like"},
    {"name": "watch", "prediction_name": "watch_pred", "label_name": "watch", "weight_name": "w_watch"},
]
BINARY = ["click", "like"]
TRAIN_CONFIG = {
    "tasks": [{**t, "group_id_name": "user"} if t["name"] in BINARY else t for t in TASKS],
    "metrics": ["ne", "auc", "calibration", "ctr", "mse", "gauc"],
    "metric_tasks": {
        "ne": BINARY,
        "auc": BINARY,
        "calibration": BINARY,
        "ctr": BINARY,
        "gauc": BINARY,
        "mse": ["watch"],
    },
    "window_size": WINDOW,
    "compute_interval_steps": 3,
    "prefix": "train/",
}
EVAL_CONFIG = {
    "tasks": [{**t, "weight_name": None, "group_id_name": "user", "session_id_name": "user"} for t in TASKS[:2]],
    "metrics": ["ne", "auc", "gauc", "ndcg@5", "recall@3", "mrr"],
    "throughput": False,
}


def rows(users: torch.Tensor, items: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Features and the three heads' labels and weights; like and watch exist on clicked rows only."""
    world = torch.Generator().manual_seed(0)
    user_emb, item_emb = torch.randn(USERS, DIM, generator=world), torch.randn(ITEMS, DIM, generator=world)
    gen = torch.Generator().manual_seed(seed)
    n = len(users)
    affinity = (user_emb[users] * item_emb[items]).sum(1) / 2
    click = (torch.rand(n, generator=gen) < torch.sigmoid(affinity - 0.5)).float()
    like = ((torch.rand(n, generator=gen) < torch.sigmoid(affinity - 1.0)) & (click > 0)).float()
    watch = click * torch.exp(0.5 * affinity + 0.3 * torch.randn(n, generator=gen))
    w_click = 1.0 + (torch.rand(n, generator=gen) < 0.3).float()
    x = torch.cat([user_emb[users], item_emb[items]], 1)
    return x, users, click, like, watch, w_click, click.clone(), click * 0.5


def train_set() -> TensorDataset:
    gen = torch.Generator().manual_seed(1)
    users, items = torch.randint(0, USERS, (TRAIN,), generator=gen), torch.randint(0, ITEMS, (TRAIN,), generator=gen)
    return TensorDataset(*rows(users, items, 2))


def candidate_set(seed: int, drop_last_row: bool = False) -> TensorDataset:
    """Per-user candidate lists (``SHORT`` items for every fourth user, ``CANDIDATES`` for the others)."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.arange(USERS).repeat_interleave(CANDIDATES)
    items = torch.randint(0, ITEMS, (len(users),), generator=gen)
    keep = torch.arange(len(users)) % CANDIDATES < torch.where(torch.arange(USERS) % 4 == 0, SHORT, CANDIDATES)[users]
    tensors = [t[keep] for t in rows(users, items, seed + 1)]
    return TensorDataset(*(t[:-1] if drop_last_row else t for t in tensors))


class Project(L.LightningModule):
    def __init__(self, dump: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2 * DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.train_metrics = tmx.RecMetricModule.from_config(TRAIN_CONFIG)
        self.val_metrics = tmx.RecMetricModule.from_config({**EVAL_CONFIG, "prefix": "val/"})
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.dump = dump
        self.seen: dict[str, list] = {"train": [], "val": [], "test": [], "logged": [], "warnings": []}
        self.test_runs = 0

    def on_test_epoch_start(self) -> None:
        self.test_runs += 1

    def on_test_epoch_end(self) -> None:  # the warnings given up to each test run's end
        self.seen.setdefault("warnings_by_test_run", []).append(len(self.caught))

    def _out(self, batch, stage: str) -> dict[str, torch.Tensor]:
        x, users, click, like, watch, w_click, w_like, w_watch = batch
        out = self.net(x)
        columns = {
            "click_pred": torch.sigmoid(out[:, 0]),
            "like_pred": torch.sigmoid(out[:, 1]),
            "watch_pred": torch.nn.functional.softplus(out[:, 2]),
            "click": click,
            "like": like,
            "watch": watch,
            "w_click": w_click,
            "w_like": w_like,
            "w_watch": w_watch,
            "user": users,
        }
        run = self.current_epoch if stage != "test" else self.test_runs  # each trainer.test call apart
        self.seen[stage].append((run, {k: v.detach().clone() for k, v in columns.items()}))
        return columns

    def training_step(self, batch, batch_idx):
        out = self._out(batch, "train")
        loss = (
            sum(
                (
                    torch.nn.functional.binary_cross_entropy(out[f"{t}_pred"], out[t], reduction="none") * out[f"w_{t}"]
                ).mean()
                for t in BINARY
            )
            + ((out["watch_pred"] - out["watch"]) ** 2 * out["w_watch"]).mean()
        )
        return {"loss": loss, **{k: v.detach() for k, v in out.items()}}

    def validation_step(self, batch, batch_idx):
        return {k: v.detach() for k, v in self._out(batch, "val").items()}

    def test_step(self, batch, batch_idx):
        return {k: v.detach() for k, v in self._out(batch, "test").items()}

    def setup(self, stage: str) -> None:
        if not hasattr(self, "caught"):
            self.catcher = warnings.catch_warnings(record=True)
            self.caught = self.catcher.__enter__()
            warnings.simplefilter("always")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def save(self) -> None:
        self.seen["warnings"] = [str(w.message) for w in self.caught]
        torch.save(self.seen, os.path.join(self.dump, f"seen_rank{self.global_rank}.pt"))


class Recorder(L.pytorch.loggers.Logger):
    """Every row the trainer writes, with the batches of each stage the rank had fed the metrics by then."""

    def __init__(self, model: Project) -> None:
        super().__init__()
        self.model = model

    name = "recorder"
    version = 0

    def log_hyperparams(self, params) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        counts = {stage: len(self.model.seen[stage]) for stage in ("train", "val", "test")}
        self.model.seen["logged"].append({"step": step, **counts, "values": {k: float(v) for k, v in metrics.items()}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Project(args.out)
    trainer = L.Trainer(
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        logger=Recorder(model),
        callbacks=[RecMetricCallback()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    val_set = candidate_set(3)
    trainer.fit(
        model,
        DataLoader(train_set(), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(4)),
        DataLoader(val_set, batch_size=50, sampler=UnpaddedDistributedSampler(val_set, shuffle=False)),
    )
    # left to Lightning's padding DistributedSampler: an odd number of rows, one of them counted twice; first
    # under limit_test_batches=1, which stops before the repeated row (no warning), then whole
    test_loader = DataLoader(candidate_set(5, drop_last_row=True), batch_size=50)
    trainer.limit_test_batches = 1
    trainer.test(model, test_loader)
    trainer.limit_test_batches = 1.0
    trainer.test(model, test_loader)
    model.save()


if __name__ == "__main__":
    main()
