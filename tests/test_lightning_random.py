"""Seeded random Lightning fits: every row ``RecMetricCallback`` logs against values recomputed here.

Each seed draws a configuration (tasks, some weighted; metrics from the registry; a window or none;
``compute_interval_steps``; ``accumulate_grad_batches``; epochs, ``limit_train_batches``,
``val_check_interval``, ``check_val_every_n_epoch``; one or two validation dataloaders; steps that
return ``None``; a per-epoch reset; logits or probabilities), fits a tiny model on the CPU and runs
``trainer.test()``. The model records every output its steps return (plain Python lists of numpy
arrays) and logs probes of its own through ``self.log``, so that Lightning's own rows say at which
step each batch, epoch end and evaluation epoch is written. Every logged value is recomputed from
the recorded outputs with formulas written here (NE, calibration, CTR, MSE in numpy; AUC with
scikit-learn, binned AUC as scikit-learn's AUC of the bin indices; grouped AUC per group; NDCG and
MRR with the ranking reference of ``tests/helpers``), the window by the rule of ``docs/windows.md``.

Some seeds also resume from a checkpoint saved mid-fit: the rows after the resume equal those of
the uninterrupted fit (throughput excluded). More seeds: ``TMX_LIGHTNING_SEEDS=0-299 pytest ...``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.ranking_reference import group_rows, reference_values

L = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import GradientAccumulationScheduler, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers.logger import Logger  # noqa: E402

from torchmetrics_ext.integrations.lightning import RecMetricCallback  # noqa: E402

EXTRA = os.environ.get("TMX_LIGHTNING_SEEDS", "")
FAST_SEEDS = [*range(8), 44, 239, 251]  # between them, every option the draw has
RESUME_SEEDS = [0, 32]  # 32: a per-epoch reset, steps returning None, accumulation
ETA = 1e-12


def _seeds(text: str) -> list[int]:
    if not text:
        return []
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


# ----------------------------------------------------------------------------- configuration


@dataclass
class Config:
    seed: int
    tasks: list[str]
    weighted: list[bool]
    metrics: dict[str, Any]
    from_logits: bool
    window: int | None
    val_window: int | None
    interval: int
    accumulate: int
    epochs: int
    batch_size: int
    num_train: int
    limit_train: int | float | None
    val_check: int | float
    val_every: int | None
    val_sizes: list[int]
    test_sizes: list[int]
    limit_val: int | None
    validate_after: bool
    output_key: str | None
    max_steps: int
    manual: bool  # manual optimization (no accumulation)
    unsized: bool  # the last validation (and test) dataloader has no length: every dataloader computes at the end
    schedule: dict[int, int] | None  # a GradientAccumulationScheduler's (then accumulate is 1 in the Trainer)
    skip_train: float
    skip_eval: float
    reset_each_epoch: bool
    throughput: bool
    sanity: int


def _no_single_row_batch(n: int, batch_size: int) -> int:
    """``n``, or one more where the last batch would hold one row (its window, one class alone, has no AUC)."""
    return n + 1 if n % batch_size == 1 else n


def draw(seed: int, resume: bool = False) -> Config:
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(1, 4))
    tasks = [f"t{i}" for i in range(num_tasks)]
    weighted = [False] * num_tasks
    if rng.random() < 0.6:
        weighted[int(rng.integers(num_tasks))] = True
    if rng.random() < 0.3:
        weighted = [True] * num_tasks
    pool: dict[str, Any] = {
        "ne": "ne",
        "auc": "auc",
        "auc_binned": {"metric": "auc", "num_bins": int(rng.choice([8, 50, 1000]))},
        "calibration": "calibration",
        "ctr": "ctr",
        "mse": "mse",
        f"ndcg@{int(rng.integers(1, 5))}": None,
        "mrr": "mrr",
        "gauc": "gauc",
    }
    names = list(pool)
    chosen = rng.choice(len(names), size=int(rng.integers(1, 5)), replace=False)
    metrics = {names[i]: pool[names[i]] for i in sorted(chosen)}
    batch_size = int(rng.integers(4, 13))
    num_batches = int(rng.integers(3, 9))
    remainder = int(rng.choice([0, 0, 2, 3]))
    accumulate = int(rng.choice([1, 1, 2, 3]))
    interval = int(rng.integers(1, 5))
    if accumulate > 1 and rng.random() < 0.8:
        interval = accumulate * int(rng.integers(1, 3))  # a multiple, as docs/module.md asks (mostly)
    manual = not resume and rng.random() < 0.1
    schedule = None
    if manual:
        accumulate = 1
    elif not resume and accumulate == 1 and rng.random() < 0.15:
        schedule = {0: 1, int(rng.integers(1, 3)): int(rng.integers(2, 4))}
    window = None if rng.random() < 0.4 else int(rng.integers(2, 40))
    val_window = None if rng.random() < 0.7 else int(rng.integers(2, 20))
    limit_train: int | float | None = None
    if rng.random() < 0.3:
        limit_train = int(rng.integers(2, num_batches + 1))
    elif rng.random() < 0.15:
        limit_train = 0.6
    epochs = int(rng.integers(1, 4))
    n_batches = num_batches + (remainder > 0)
    if limit_train is not None:
        n_batches = limit_train if isinstance(limit_train, int) else int(n_batches * limit_train)
    val_every: int | None = int(rng.choice([1, 1, 2]))
    if rng.random() < 0.5:
        val_check: int | float = float(rng.choice([1.0, 0.5, 0.34]))
    else:
        val_check = int(rng.integers(1, n_batches + 1))
        if rng.random() < 0.3:
            val_every = None  # counted over the fit's batches
            val_check = int(rng.integers(1, 2 * n_batches + 1))
    val_sizes = [_no_single_row_batch(int(rng.integers(2, 40)), batch_size) for _ in range(int(rng.integers(1, 3)))]
    return Config(
        seed=seed,
        tasks=tasks,
        weighted=weighted,
        metrics=metrics,
        from_logits=bool(rng.random() < 0.4),
        window=window,
        val_window=val_window,
        interval=interval,
        accumulate=accumulate,
        epochs=epochs,
        batch_size=batch_size,
        num_train=batch_size * num_batches + remainder,
        limit_train=limit_train,
        val_check=val_check,
        val_every=val_every,
        val_sizes=val_sizes,
        test_sizes=[_no_single_row_batch(int(rng.integers(2, 30)), batch_size) for _ in range(int(rng.integers(1, 3)))],
        limit_val=None if rng.random() < 0.8 else int(rng.integers(1, 3)),
        validate_after=bool(rng.random() < 0.3),
        output_key=None if rng.random() < 0.8 else "model_out",
        max_steps=-1 if resume or rng.random() < 0.85 else int(rng.integers(1, epochs * n_batches + 1)),
        manual=manual,
        unsized=bool(rng.random() < 0.15),
        schedule=schedule,
        skip_train=float(rng.choice([0.0, 0.0, 0.25])),
        skip_eval=float(rng.choice([0.0, 0.0, 0.3])),
        reset_each_epoch=bool(rng.random() < 0.3),
        throughput=bool(rng.random() < 0.3),
        sanity=int(rng.choice([0, 0, 2])),
    )


def dataset(cfg: Config, n: int, salt: int) -> torch.utils.data.TensorDataset:
    """``n`` rows; each batch's last two rows (and the data's) are a positive and a negative of weight 1.

    So every window and every evaluation run holds both classes in every task, a defined group and a
    session with a relevant row: no value is undefined.
    """
    rng = np.random.default_rng([cfg.seed, salt])
    bs, num_tasks = cfg.batch_size, len(cfg.tasks)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random((n, num_tasks)) < 0.35).astype(np.int64)
    w = rng.uniform(0.2, 2.0, n)
    w[rng.random(n) < 0.15] = 0.0
    sid = rng.integers(0, 5, n) + 100 * (np.arange(n) // bs) * int(rng.random() < 0.5)  # sessions across batches
    gid = rng.integers(0, 4, n)
    for start in range(0, n, bs):
        last = min(start + bs, n) - 1
        if last - start >= 1:  # a positive then a negative, in one session and group
            y[last - 1], y[last], w[last - 1 : last + 1] = 1, 0, 1.0
            sid[last], gid[last] = sid[last - 1], gid[last - 1]
    columns = [
        torch.from_numpy(x),
        torch.from_numpy(y),
        torch.from_numpy(w),
        torch.from_numpy(sid),
        torch.from_numpy(gid),
    ]
    return torch.utils.data.TensorDataset(*columns)


def loader(cfg: Config, data: torch.utils.data.TensorDataset) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=False)


class Unsized(torch.utils.data.IterableDataset):
    """A dataloader's batches without a length (Lightning then cannot tell its last batch)."""

    def __init__(self, batches: torch.utils.data.DataLoader) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        yield from self.batches


def eval_loaders(cfg: Config, sizes: list[int], salt: int) -> list[Any]:
    loaders: list[Any] = [loader(cfg, dataset(cfg, n, salt + i)) for i, n in enumerate(sizes)]
    if cfg.unsized:
        loaders[-1] = torch.utils.data.DataLoader(Unsized(loaders[-1]), batch_size=None)
    return loaders


class Batches:
    """The training batches in a fixed order; Lightning saves how many of the epoch were trained on (its ``_Stateful``).

    A fit resumed mid-epoch then trains on the batches the whole fit trains on (a plain DataLoader restarts the epoch).
    """

    def __init__(self, data: torch.utils.data.TensorDataset, batch_size: int, limit: int | float | None) -> None:
        tensors = data.tensors
        self.batches = [tuple(t[i : i + batch_size] for t in tensors) for i in range(0, len(tensors[0]), batch_size)]
        self.trained = self.start = 0
        # the batches of an epoch under `limit_train_batches`: a position at its end starts the next epoch afresh
        n = len(self.batches)
        self.per_epoch = n if limit is None else min(limit, n) if isinstance(limit, int) else int(n * limit)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        start, self.start = self.start, 0  # a restored position holds for the resumed epoch alone
        start = 0 if start >= self.per_epoch else start
        for i in range(start, len(self.batches)):
            self.trained = i + 1  # asked for the next batch only after this one's step and callbacks
            yield self.batches[i]

    def state_dict(self) -> dict[str, int]:
        return {"trained": self.trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start = self.trained = state["trained"]


# ----------------------------------------------------------------------------- model and logger


class Rows(Logger):
    """Every ``log_metrics`` call, in order: ``(step, {key: float})``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "rows"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step if step is not None else -1), {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


def module_for(cfg: Config, prefix: str, window: int | None, throughput: bool) -> tmx.RecMetricModule:
    infos = [
        tmx.RecTaskInfo(
            t,
            label_name=f"{t}_label",
            prediction_name=f"{t}_pred",
            weight_name="w" if weighted else None,
            session_id_name="sid",
            group_id_name="gid",
        )
        for t, weighted in zip(cfg.tasks, cfg.weighted)
    ]
    return tmx.RecMetricModule(
        infos,
        dict(cfg.metrics),
        window_size=window,
        throughput=throughput,
        compute_interval_steps=cfg.interval,
        prefix=prefix,
        from_logits=cfg.from_logits,
    )


class Model(L.LightningModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.net = torch.nn.Linear(4, len(cfg.tasks))
        self.train_metrics = module_for(cfg, "train/", cfg.window, cfg.throughput)
        self.val_metrics = module_for(cfg, "val/", cfg.val_window, False)
        self.test_metrics = module_for(cfg, "test/", cfg.val_window, False)
        # what the steps returned: ("train", epoch, batch, out | None), ("val"/"test", run, dataloader, out | None)
        self.events: list[tuple[str, int, int, dict[str, np.ndarray] | None]] = []
        self.runs = {"val": -1, "test": -1}
        self.automatic_optimization = not cfg.manual

    def _out(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y, w, sid, gid = batch
        z = self.net(x)
        out = {}
        for i, t in enumerate(self.cfg.tasks):
            out[f"{t}_pred"] = z[:, i] if self.cfg.from_logits else torch.sigmoid(z[:, i])
            out[f"{t}_label"] = y[:, i]
        out.update(w=w, sid=sid, gid=gid)
        return out

    def _skip(self, *key: int, rate: float) -> bool:
        return rate > 0 and np.random.default_rng([self.cfg.seed, *key]).random() < rate

    def _record(self, stage: str, a: int, b: int, out: dict[str, torch.Tensor] | None) -> None:
        copy = None if out is None else {k: v.detach().double().numpy().copy() for k, v in out.items()}
        self.events.append((stage, a, b, copy))

    def on_train_epoch_start(self) -> None:
        if self.cfg.reset_each_epoch:
            self.train_metrics.reset()
            self.events.append(("reset", self.current_epoch, -1, None))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        g = self.trainer.fit_loop.total_batch_idx
        self.log("probe/batch", float(g), on_step=True, on_epoch=False)
        self.log("probe/epoch", float(self.current_epoch), on_step=False, on_epoch=True)
        out = self._out(batch)
        # never the first batch of an epoch: a module reset at the epoch start then has samples at every compute
        if batch_idx > 0 and self._skip(0, g, rate=self.cfg.skip_train):
            self._record("train", self.current_epoch, g, None)
            return None
        self._record("train", self.current_epoch, g, out)
        returned = out if self.cfg.output_key is None else {self.cfg.output_key: out}
        preds = torch.stack([out[f"{t}_pred"] for t in self.cfg.tasks], 1)
        target = batch[1].float()
        if self.cfg.from_logits:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(preds, target)
        else:
            loss = torch.nn.functional.binary_cross_entropy(preds, target)
        if self.cfg.manual:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            return returned
        return {"loss": loss, **returned}

    def _eval_step(self, stage: str, batch: Any, batch_idx: int, dataloader_idx: int) -> Any:
        if self.trainer.sanity_checking:
            return self._out(batch)
        run = self.runs[stage]
        self.log(f"probe/{stage}", float(run), on_step=False, on_epoch=True, batch_size=1)
        out = self._out(batch)
        # never the first batch: every run of every dataloader has samples
        # which steps return None: the same in a resumed fit (whose run counts start afresh) as in the whole one
        trained = self.trainer.fit_loop.total_batch_idx + 1
        where = (1, stage == "test", trained, dataloader_idx, batch_idx)
        if batch_idx > 0 and self._skip(*where, rate=self.cfg.skip_eval):
            self._record(stage, run, dataloader_idx, None)
            return None
        self._record(stage, run, dataloader_idx, out)
        return out if self.cfg.output_key is None else {self.cfg.output_key: out}

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.runs["val"] += 1

    def on_test_epoch_start(self) -> None:
        self.runs["test"] += 1

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step("val", batch, batch_idx, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step("test", batch, batch_idx, dataloader_idx)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Saves(L.Callback):
    """Where in the logger's rows each checkpoint was saved; the training values a monitor sees at each batch start."""

    def __init__(self, logger: Rows) -> None:
        self.logger = logger
        self.marks: list[int] = []
        self.seen: dict[int, dict[str, float]] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        values = {k: float(v) for k, v in metrics.items() if k.startswith("train/") and "throughput" not in k}
        self.seen[trainer.fit_loop.total_batch_idx] = values

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        self.marks.append(len(self.logger.rows))


def trainer_for(cfg: Config, logger: Rows, callbacks: list[Any], checkpoint_dir: Path | None = None) -> Any:
    extra: dict[str, Any] = {}
    if cfg.limit_train is not None:
        extra["limit_train_batches"] = cfg.limit_train
    if cfg.limit_val is not None:
        extra["limit_val_batches"] = cfg.limit_val
    if cfg.schedule is not None:
        callbacks = [*callbacks, GradientAccumulationScheduler(cfg.schedule)]
    if checkpoint_dir is not None:
        callbacks = [*callbacks, ModelCheckpoint(checkpoint_dir, every_n_train_steps=2, save_top_k=-1, save_last=False)]
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[RecMetricCallback(output_key=cfg.output_key), *callbacks],
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        accumulate_grad_batches=cfg.accumulate,
        val_check_interval=cfg.val_check,
        check_val_every_n_epoch=cfg.val_every,
        num_sanity_val_steps=cfg.sanity,
        log_every_n_steps=1,
        enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        **extra,
    )


@dataclass
class Run:
    model: Model
    rows: list[tuple[int, dict[str, float]]]
    marks: list[int]
    checkpoints: list[Path]
    after_fit: dict[str, float]  # trainer.callback_metrics after the fit
    returned: dict[str, list[dict[str, float]]]  # what trainer.test (and trainer.validate) returned
    seen: dict[int, dict[str, float]]  # the training values in trainer.callback_metrics at each batch start
    told: list[str]  # the callback's warnings of an interval that is no multiple of an accumulation factor


def fit(cfg: Config, tmp_path: Path | None = None, ckpt_path: Path | None = None, test: bool = True) -> Run:
    model = Model(cfg)
    logger = Rows()
    saves = Saves(logger)
    trainer = trainer_for(cfg, logger, [saves], tmp_path)
    train = Batches(dataset(cfg, cfg.num_train, 0), cfg.batch_size, cfg.limit_train)
    vals = eval_loaders(cfg, cfg.val_sizes, 1)
    tests = eval_loaders(cfg, cfg.test_sizes, 10)
    returned = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, vals if len(vals) > 1 else vals[0], ckpt_path=ckpt_path)
        after_fit = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if test:
            returned["test"] = trainer.test(model, tests, verbose=False)
            if cfg.validate_after:
                returned["val"] = trainer.validate(model, vals, verbose=False)
    files = sorted(tmp_path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns) if tmp_path is not None else []
    told = [str(w.message) for w in caught if str(w.message).startswith("RecMetricCallback: `train_metrics.compute_")]
    return Run(model, logger.rows, saves.marks, files, after_fit, returned, saves.seen, told)


# ----------------------------------------------------------------------------- the reference


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def window_rows(sizes: list[int], window: int | None) -> list[tuple[int, int]]:
    """(update, first row kept) of the newest whole updates whose sizes sum to at most ``window`` (docs/windows.md)."""
    if window is None:
        return [(i, 0) for i in range(len(sizes))]
    kept: list[tuple[int, int]] = []
    total = 0
    for i in range(len(sizes) - 1, -1, -1):
        if not kept and sizes[i] > window:  # the newest update alone is larger: its newest `window` samples
            return [(i, sizes[i] - window)]
        if total + sizes[i] > window:
            break
        total += sizes[i]
        kept.append((i, 0))
    return kept[::-1]


def binned(p: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each probability: uniform in the logit over (-16, 16) (docs/auc.md), the end bins open."""
    with np.errstate(divide="ignore"):
        logit = np.log(p / (1.0 - p))
    return np.clip(np.floor((logit + 16.0) / 32.0 * bins), 0, bins - 1)


def metric_value(
    name: str, spec: Any, raw: np.ndarray, p: np.ndarray, y: np.ndarray, w: np.ndarray, sid: np.ndarray, gid: np.ndarray
) -> float:
    """One task's value of ``name`` over its rows: ``raw`` the predictions as given (float32 values), ``p`` probabilities.

    The exact AUCs rank the given float32 scores (logits as logits) with float32 weights, as docs/auc.md says.
    """
    w32 = w.astype(np.float32).astype(np.float64)
    if name == "ne":
        q = np.clip(p, ETA, 1 - ETA)
        loss = -(w * (y * np.log(q) + (1 - y) * np.log(1 - q))).sum()
        c = np.clip((w * y).sum() / w.sum(), ETA, 1 - ETA)
        return float(loss / (w.sum() * -(c * math.log(c) + (1 - c) * math.log(1 - c))))
    if name == "calibration":
        return float((w * p).sum() / (w * y).sum())
    if name == "ctr":
        return float((w * y).sum() / w.sum())
    if name == "mse":
        return float((w * (p - y) ** 2).sum() / w.sum())
    if name == "auc":
        return float(roc_auc_score(y, raw, sample_weight=w32))
    if name == "auc_binned":
        return float(roc_auc_score(y, binned(p, spec["num_bins"]), sample_weight=w))
    if name == "gauc":
        values = []
        for g in np.unique(gid):
            rows = (gid == g) & (w > 0)
            if len(np.unique(y[rows])) == 2:
                values.append(roc_auc_score(y[rows], raw[rows], sample_weight=w32[rows]))
        return float(np.mean(values)) if values else math.nan
    if name.startswith("ndcg@") or name == "mrr":
        stem, _, k = name.partition("@")
        queries = group_rows(list(sid), raw, y.astype(np.float64), w)
        return reference_values(queries, [(stem, int(k) if k else None)])[0]
    raise KeyError(name)


def values(cfg: Config, prefix: str, outs: list[dict[str, np.ndarray]], window: int | None) -> dict[str, float]:
    """Every value key of a module fed ``outs`` (the steps with samples since its last reset)."""
    sizes = [len(out["sid"]) for out in outs]
    spans = {"": window_rows(sizes, None)} | ({"/window": window_rows(sizes, window)} if window is not None else {})
    result: dict[str, float] = {}
    for name, spec in cfg.metrics.items():
        for i, t in enumerate(cfg.tasks):
            for suffix, kept in spans.items():

                def cat(key: str, kept: list[tuple[int, int]] = kept) -> np.ndarray:
                    return np.concatenate([outs[j][key][start:] for j, start in kept])

                raw = cat(f"{t}_pred")
                p = sigmoid(raw) if cfg.from_logits else raw
                w = cat("w") if cfg.weighted[i] else np.ones_like(p)
                result[f"{prefix}{name}/{t}{suffix}"] = metric_value(
                    name, spec, raw, p, cat(f"{t}_label"), w, cat("sid"), cat("gid")
                )
    return result


def train_values(cfg: Config, since: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The training module's values over ``since``; with throughput, its examples count (a reset clears it)."""
    result = values(cfg, "train/", since, cfg.window)
    if cfg.throughput:
        result["train/throughput/total_examples"] = float(sum(len(out["sid"]) for out in since))
    return result


def _prefixed(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if k.startswith(prefix)}


def compare(got: dict[str, float], want: dict[str, float], what: str, rtol: float = 1e-9) -> None:
    rates = ("train/throughput/lifetime_throughput", "train/throughput/window_throughput")  # timings
    got = {k: v for k, v in got.items() if not k.startswith("probe/") and k not in rates and k != "epoch"}
    assert sorted(got) == sorted(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=1e-12, err_msg=f"{what}: {key}")


def check_run(cfg: Config, run: Run) -> None:
    """Every row the callback wrote, against the recorded outputs."""
    rows = run.rows
    # Lightning writes its row of a batch at the end of an accumulation only; the batches of one share its step
    written = {int(r["probe/batch"]): s for s, r in rows if "probe/batch" in r}
    trained = [b for stage, _, b, _ in run.model.events if stage == "train"]
    step_of = {b: written[min(g for g in written if g >= b)] for b in trained}
    # training: the interval rows (written before Lightning's row of the batch) and the epoch-end rows
    train_rows = [(i, s, r) for i, (s, r) in enumerate(rows) if any(k.startswith("train/") for k in r)]
    expected: list[tuple[int, int, dict[str, float]]] = []  # (step, batch, values)
    since: list[dict[str, np.ndarray]] = []  # the steps with samples since the last reset
    count = 0  # the module's updates, steps without samples too
    epochs: dict[int, tuple[int, int, list[dict[str, np.ndarray]]]] = {}  # epoch: (last batch, count, since)
    current: dict[str, float] = {}  # the training values last logged: what trainer.callback_metrics holds
    for stage, a, b, out in run.model.events:
        if stage == "reset":
            since = []
        if stage != "train":
            continue
        if a not in epochs and epochs and epochs[a - 1][1] % cfg.interval:  # the last epoch's end logged
            current = train_values(cfg, epochs[a - 1][2])
        monitored = {k: v for k, v in current.items() if "throughput" not in k}
        compare(run.seen[b], monitored, f"seed {cfg.seed}: callback_metrics at the start of batch {b}")
        count += 1
        if out is not None:
            since.append(out)
        if count % cfg.interval == 0:
            current = train_values(cfg, since)
            expected.append((step_of[b], b, current))
        epochs[a] = (b, count, list(since))
    # an epoch's end logs unless its last batch just did
    ends = {epoch: train_values(cfg, outs) for epoch, (_, at, outs) in epochs.items() if at % cfg.interval != 0}
    # match: interval rows are followed by Lightning's row of their batch
    interval_rows = [(i, s, r) for i, s, r in train_rows if "probe/epoch" not in r]
    assert len(interval_rows) == len(expected), (
        f"seed {cfg.seed}: {len(interval_rows)} interval rows, expected {len(expected)}"
    )
    for (i, s, r), (step, b, want) in zip(interval_rows, expected, strict=True):
        assert s == step, f"seed {cfg.seed}: batch {b} written at step {s}, Lightning writes it at {step}"
        following = next(r.get("probe/batch") for _, r in rows[i + 1 :] if "probe/batch" in r)
        assert following == min(g for g in written if g >= b), f"seed {cfg.seed}: row of batch {b} out of place"
        compare(r, want, f"seed {cfg.seed} batch {b}")
    epoch_rows = [(s, r) for s, r in rows if "probe/epoch" in r]
    assert len(epoch_rows) == len(epochs), f"seed {cfg.seed}: {len(epoch_rows)} epoch rows for {len(epochs)} epochs"
    for s, r in epoch_rows:
        epoch = int(r["probe/epoch"])
        assert s == step_of[epochs[epoch][0]], f"seed {cfg.seed}: epoch {epoch} row at step {s}"
        if epoch in ends:
            compare(r, ends[epoch], f"seed {cfg.seed} epoch {epoch} end")
        else:
            assert not any(k.startswith("train/") for k in r), f"seed {cfg.seed}: epoch {epoch} repeats a row: {r}"
    # evaluation runs: one row per run, each dataloader's own values
    last_run: dict[str, dict[str, float]] = {}
    for stage, sizes in (("val", cfg.val_sizes), ("test", cfg.test_sizes)):
        several = len(sizes) > 1
        runs: dict[int, dict[int, list[dict[str, np.ndarray]]]] = {}
        for kind, run_index, dl, out in run.model.events:
            if kind == stage:
                runs.setdefault(run_index, {}).setdefault(dl, [])
                if out is not None:
                    runs[run_index][dl].append(out)
        probe = f"probe/{stage}/dataloader_idx_0" if several else f"probe/{stage}"
        # no row of the stage outside its epochs (the sanity check's, say)
        assert all(probe in r for _, r in rows if _prefixed(r, f"{stage}/")), f"seed {cfg.seed}: a {stage} row alone"
        stage_rows = [r for _, r in rows if probe in r]
        assert len(stage_rows) == len(runs), f"seed {cfg.seed}: {len(stage_rows)} {stage} rows, {len(runs)} runs"
        for r in stage_rows:
            run_index = int(r[probe])
            want: dict[str, float] = {}
            for dl, outs in runs[run_index].items():
                suffix = f"/dataloader_idx_{dl}" if several else ""
                for key, value in values(cfg, f"{stage}/", outs, cfg.val_window).items():
                    want[key + suffix] = value
            compare(r, want, f"seed {cfg.seed} {stage} run {run_index}")
            last_run[stage] = want
        # trainer.test/validate return each dataloader's own values in its own dict
        if stage in run.returned:
            dicts = run.returned[stage]
            assert len(dicts) == len(sizes)
            for dl, got in enumerate(dicts):
                suffix = f"/dataloader_idx_{dl}" if several else ""
                # computed at the epoch end (a dataloader without length), every dict holds every dataloader's
                own = {k: v for k, v in last_run[stage].items() if k.endswith(suffix) or (several and cfg.unsized)}
                compare(_prefixed(got, f"{stage}/"), own, f"seed {cfg.seed} {stage} dict {dl}")
    # after the fit, trainer.callback_metrics holds the last training values and the last validation run's
    # (checked against the rows, which equal the reference values above)
    last_epoch = max(epochs)
    last_train = ends[last_epoch] if last_epoch in ends else expected[-1][2]
    compare(_prefixed(run.after_fit, "train/"), last_train, f"seed {cfg.seed} after fit")
    fit_rows = rows[
        : next((i for i, (_, r) in enumerate(rows) if any(k.startswith("probe/test") for k in r)), len(rows))
    ]
    val_rows = [_prefixed(r, "val/") for _, r in fit_rows if _prefixed(r, "val/")]
    compare(_prefixed(run.after_fit, "val/"), val_rows[-1] if val_rows else {}, f"seed {cfg.seed} val after fit")
    # an interval that is no multiple of an accumulation factor of the fit is warned of, once per factor
    factors = {cfg.accumulate, *(cfg.schedule or {}).values()}
    bad = sorted(f for f in factors if f > 1 and cfg.interval % f)
    assert len(run.told) == len(bad), (bad, run.told)
    for factor, message in zip(bad, sorted(run.told, key=lambda m: int(m.split("accumulate_grad_batches=")[1][0]))):
        assert f"accumulate_grad_batches={factor}`" in message, message
    if cfg.throughput:
        keys = {k for _, r in rows for k in r if k.startswith("train/throughput/")}
        assert keys >= {"train/throughput/lifetime_throughput", "train/throughput/total_examples"}, keys


def comparable(rows: list[tuple[int, dict[str, float]]]) -> list[tuple[int, dict[str, float]]]:
    """The rows without throughput, and without the evaluation probes' run counts (a resumed model counts afresh)."""
    return [
        (s, {k: 0.0 if k.startswith(("probe/val", "probe/test")) else v for k, v in r.items() if "throughput" not in k})
        for s, r in rows
    ]


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", FAST_SEEDS + _seeds(EXTRA))
def test_every_logged_row_equals_the_recorded_outputs_values(seed):
    cfg = draw(seed)
    check_run(cfg, fit(cfg))


@pytest.mark.parametrize("seed", RESUME_SEEDS)
def test_a_fit_resumed_mid_way_logs_the_rows_of_the_uninterrupted_fit(seed, tmp_path):
    cfg = draw(seed, resume=True)
    whole = fit(cfg, tmp_path / "whole")
    check_run(cfg, whole)
    # Lightning (2.6) resumes a checkpoint saved at an epoch's last batch without that epoch's end (validation, epoch
    # end rows) nor the next epoch's start (a reset there): resume from one saved inside an epoch
    ends = {}
    for stage, epoch, batch, _ in whole.model.events:
        if stage == "train":
            ends[epoch] = batch
    saved_at = [next(int(r["probe/batch"]) for _, r in whole.rows[mark:] if "probe/batch" in r) for mark in whole.marks]
    usable = [i for i, batch in enumerate(saved_at) if batch not in ends.values()]
    if not usable:
        pytest.skip("no checkpoint saved inside an epoch")
    middle = usable[len(usable) // 2]
    resumed = fit(cfg, tmp_path / "resumed", ckpt_path=whole.checkpoints[middle])
    after = comparable(whole.rows[whole.marks[middle] :])
    rows = comparable(resumed.rows)
    saved = after[0][0]  # the step of the batch saved at (Lightning's own row of it follows the save)
    assert [row for row in rows if row[0] > saved] == [row for row in after if row[0] > saved]
    # a monitor of a training key sees the values of the whole fit at every batch (docs/module.md)
    assert resumed.seen == {batch: values for batch, values in whole.seen.items() if batch in resumed.seen}
    # trainer.callback_metrics after the fit: the same training values (validation: a resumed fit that ran none has none)
    assert _prefixed(resumed.after_fit, "train/").keys() == _prefixed(whole.after_fit, "train/").keys()
    for key, value in resumed.after_fit.items():
        if "throughput" not in key and not key.startswith("probe/"):
            assert value == whole.after_fit[key], key
    # at the saved step: Lightning runs no validation again, but the epoch end of a checkpoint saved at an epoch's
    # last batch is the resumed fit's: the same rows, the training values in them too
    again = [row for row in rows if row[0] == saved]
    assert all(row in after for row in again), again
    assert [r for _, r in again if any(k.startswith("train/") for k in r)] == [
        r for s, r in after if s == saved and any(k.startswith("train/") for k in r)
    ]


@pytest.mark.parametrize("stage", ["val", "test"])
def test_a_dataloader_without_length_under_a_batch_limit_computes_every_dataloader_at_the_epoch_end(stage):
    """``limit_*_batches=2`` makes Lightning count 2 batches for a dataloader without length, one it may not reach.

    The callback took that count for the dataloader's last batch (as for a sized one): here the second
    dataloader has 1 batch, so it was computed at the epoch end while the first was computed after
    its last batch, and the dicts held different keys (under DDP a rank reaching the count and one
    not reaching it computed in different orders). Without a length every dataloader is computed at
    the epoch end, as the docs say: each returned dict holds every dataloader's values.
    """
    cfg = dataclasses.replace(draw(1), val_sizes=[30, 5], test_sizes=[30, 5], limit_val=2, skip_eval=0.0, unsized=True)
    cfg.batch_size = 6
    model = Model(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=Rows(),
        callbacks=[RecMetricCallback()],
        limit_val_batches=2,
        limit_test_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loaders = eval_loaders(cfg, cfg.val_sizes, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = (trainer.validate if stage == "val" else trainer.test)(model, loaders, verbose=False)
    outs: dict[int, list[dict[str, np.ndarray]]] = {0: [], 1: []}
    for kind, _, dl, out in model.events:
        if kind == stage and out is not None:
            outs[dl].append(out)
    assert [len(outs[0]), len(outs[1])] == [2, 1]
    want = {
        f"{key}/dataloader_idx_{dl}": value
        for dl in (0, 1)
        for key, value in values(cfg, f"{stage}/", outs[dl], cfg.val_window).items()
    }
    for result in results:
        compare(_prefixed(result, f"{stage}/"), want, f"{stage} dict")
