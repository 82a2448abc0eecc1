"""Jobs of ``tests/test_resume_elastic.py`` run on every rank of a spawned gloo group (no scikit-learn here).

A training module holding every metric of the registry (pointwise, exact and binned AUC, pairwise,
grouped, segmented, ranking, dict-valued ranking), windowed, with a throughput, saved under one
number of ranks and restored under another as Lightning does: rank 0's states from the model's
``state_dict`` into every rank, then ``RecMetricCallback.on_load_checkpoint``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.integrations.lightning import RecMetricCallback
from torchmetrics_ext.registry import metric_names

SAVED_STEPS, RESUMED_STEPS, BATCH = 3, 2, 12
WINDOW = 600  # each rank's share holds every step since the resume (a world of 3: 200 rows, 24 fed)
TASKS = ("a", "b")


def metrics() -> dict[str, Any]:
    """Every registry entry (ranking ones at a cutoff of 3), a binned AUC, a segmented NE and a dict-valued ranking."""
    names = [name.replace("@k", "@3") for name in metric_names() if name != "segmented_ne"]
    built: dict[str, Any] = {name.replace("@", "_at"): name for name in names}
    built["auc_binned"] = {"metric": "auc", "num_bins": 50}
    built["seg_ne"] = {"metric": "segmented_ne", "num_segments": 4}
    built["ranks"] = lambda num_tasks: tmx.RankingMetrics(ks=[2, None], metrics=["ndcg", "mrr", "recall"])
    return built


def module(window: int | None = WINDOW) -> tmx.RecMetricModule:
    tasks = [tmx.RecTaskInfo(t, f"{t}_l", f"{t}_p", f"{t}_w", group_id_name="g", session_id_name="s") for t in TASKS]
    return tmx.RecMetricModule(tasks, metrics(), window_size=window, throughput=True, compute_interval_steps=2)


def step(world: int, rank: int, i: int, resumed: bool) -> dict[str, torch.Tensor]:
    """One batch: sessions of 4 rows whose ids repeat on every rank and step (each spans ranks), groups 0..3."""
    gen = torch.Generator().manual_seed(10_000 * resumed + 1000 * world + 100 * rank + i)
    out = {"g": torch.randint(0, 4, (BATCH,), generator=gen), "s": torch.arange(BATCH) // 4 + 3 * (i % 2)}
    for t in TASKS:
        p = torch.rand(BATCH, generator=gen) * 0.98 + 0.01
        out[f"{t}_p"] = p
        out[f"{t}_l"] = (torch.rand(BATCH, generator=gen) < p).float()
        out[f"{t}_w"] = torch.where(torch.rand(BATCH, generator=gen) < 0.25, 2.0, 1.0)
    return out


def values(m: tmx.RecMetricModule) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined values (a group of one class), rates of close steps
        return {key: float(value) for key, value in m.compute().items()}


def save_job(rank: int, world: int) -> dict[str, Any]:
    """This rank's training module ``state_dict`` after its steps and an interval compute."""
    m = module()
    for i in range(SAVED_STEPS):
        m.update(step(world, rank, i, resumed=False))
    values(m)
    return m.state_dict()


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.train_metrics = module()
        self.strict_loading = True


def resume_job(rank: int, world: int, checkpoint: dict[str, Any], model_state: dict[str, Any]) -> dict[str, Any]:
    """Restore as Lightning does (``model_state``: the model's ``state_dict``, into every rank), then step and compute."""
    model = Model()
    model.train_metrics.load_state_dict(model_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    for i in range(RESUMED_STEPS):
        model.train_metrics.update(step(world, rank, i, resumed=True))
    return {
        "values": values(model.train_metrics),
        "warnings": [str(w.message) for w in caught if "RecMetricCallback" in str(w.message)],
        "step": model.train_metrics._step,
    }


def settings_module(eta: float | None) -> tmx.RecMetricModule:
    """NE (with ``eta`` if given: its states are named after it) and CTR, no window, no throughput."""
    tasks = [tmx.RecTaskInfo(t, f"{t}_l", f"{t}_p", f"{t}_w") for t in TASKS]
    ne: Any = "ne" if eta is None else {"metric": "ne", "eta": eta}
    return tmx.RecMetricModule(tasks, {"ne": ne, "ctr": "ctr"}, window_size=None, throughput=False)


def settings_save_job(rank: int, world: int) -> dict[str, Any]:
    m = settings_module(None)
    for i in range(SAVED_STEPS):
        m.update(step(world, rank, i, resumed=False))
    return m.state_dict()


def put_back_job(rank: int, world: int, checkpoint: dict[str, Any], model_state: dict[str, Any]) -> dict[str, float]:
    """Resumed with NE's ``eta`` changed since (``strict_loading = False``): the values put back at ``on_train_start``."""
    model = torch.nn.Module()
    model.train_metrics = settings_module(1e-6)
    model.strict_loading = False
    model.train_metrics.load_state_dict(model_state, strict=False)  # as Lightning loads the model
    callback = RecMetricCallback(val=None, test=None)
    logged = {"ne/a": 0.9, "ctr/a": 0.4}
    callback.load_state_dict({"train_logged_at": SAVED_STEPS, "train_values_at": SAVED_STEPS, "train_values": logged})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callback.on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
        callback.on_train_start(None, model)  # type: ignore[arg-type]
    return dict(callback.state_dict()["train_values"] or {})


class Held(torch.nn.Module):
    """A model holding metrics of its own next to the callback's training module (``held``: which)."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.train_metrics = tmx.RecMetricModule(["c"], ["ctr"], window_size=10, prefix="train/")
        if held in ("windowed", "not-persistent"):
            self.ctr = tmx.Windowed(tmx.CTR(), 100)
            if held == "not-persistent":
                self.ctr.persistent(False)
        elif held == "torchmetrics":
            from torchmetrics.aggregation import SumMetric

            self.seen = SumMetric()
            self.seen.persistent(True)
            self.plain = tmx.CTR()  # not persistent: not in the checkpoint


def held_resume_job(rank: int, world: int, held: str) -> list[str]:
    """Each rank's model ``state_dict`` as Lightning saves it on rank 0; the callback's hook; its warnings."""
    model = Held(held)
    if held in ("windowed", "not-persistent"):
        model.ctr.update(torch.full((4,), 0.5), torch.tensor([1.0, 0.0, 0.0, float(rank)]))
    if held == "torchmetrics":
        model.seen.update(torch.tensor(float(rank + 1)))
    model.train_metrics.update({"prediction": torch.full((4,), 0.5), "label": torch.ones(4)})
    checkpoint = {
        "state_dict": model.state_dict(),
        "rec_metric_modules": [{"train_metrics": None}, {"train_metrics": model.train_metrics.state_dict()}],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    return [str(w.message) for w in caught if "restored from the checkpoint's states" in str(w.message)]
