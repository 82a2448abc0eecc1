"""What a preemption drill found: evaluation loaders that every rank reads whole, the throughput after an elastic resume.

* ``Trainer(use_distributed_sampler=False)`` keeps a validation loader's ``SequentialSampler`` under DDP:
  every rank reads the whole set and the synced counts are ``world`` times the set's (ratios such as NE
  are not changed). ``RecMetricCallback`` warns of it on rank 0, as it warns of a padding
  ``DistributedSampler``; a sampler of the user's own, a ``DistributedSampler`` and an
  ``IterableDataset`` are not reported. (A real 2-rank ``ddp_spawn`` validation with such a loader
  logged ``sum_weights`` 202 for a set of 101 rows, NE and AUC equal to scikit-learn's.)
* A training module resumed on another number of ranks restarts its throughput's clock at the first
  step after the resume, as any load does, and does not warm up again: the rates are those of a fake
  clock's steps since the resume, computed by hand, and ``total_examples`` is the whole run's.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, Sampler, SequentialSampler, TensorDataset

import torchmetrics_ext as tmx

L = pytest.importorskip("lightning")

from lightning.fabric.utilities.data import sized_len  # noqa: E402
from lightning.pytorch.trainer.states import TrainerFn  # noqa: E402

from torchmetrics_ext.integrations import UnpaddedDistributedSampler  # noqa: E402
from torchmetrics_ext.integrations.lightning import RecMetricCallback  # noqa: E402

DATA = TensorDataset(torch.rand(101), torch.ones(101))


class _Stream(IterableDataset):
    def __iter__(self):  # type: ignore[override]
        return iter(range(10))


class _Shard(Sampler[int]):
    """A sampler of the user's own (it may shard by rank): never reported."""

    def __iter__(self):  # type: ignore[override]
        return iter(range(0, 101, 2))

    def __len__(self) -> int:
        return 51


class _Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.val_metrics = tmx.RecMetricModule(["c"], ["ctr"], throughput=False, prefix="val/")


def _messages(loaders: list[Any], world: int = 2, rank_zero: bool = True, testing: bool = False) -> list[str]:
    """The warnings of ``RecMetricCallback``'s evaluation-epoch check for ``loaders`` (a trainer stand-in)."""
    combined = SimpleNamespace(_combined_loader=SimpleNamespace(flattened=loaders))
    counts = [float("inf") if sized_len(loader) is None else sized_len(loader) for loader in loaders]
    trainer = SimpleNamespace(
        world_size=world,
        is_global_zero=rank_zero,
        testing=testing,
        state=SimpleNamespace(fn=TrainerFn.TESTING if testing else TrainerFn.VALIDATING),
        validate_loop=combined,
        test_loop=combined,
        num_val_batches=counts,
        num_test_batches=counts,
    )
    callback = RecMetricCallback(train=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback._check_padding(trainer, _Model(), "val_metrics")  # type: ignore[arg-type]
        callback._check_padding(trainer, _Model(), "val_metrics")  # type: ignore[arg-type]  # once per stage
    return [str(w.message) for w in caught if "RecMetricCallback" in str(w.message)]


@pytest.mark.parametrize(
    ("loader", "sampler"),
    [
        (DataLoader(DATA, batch_size=16), "SequentialSampler"),
        (DataLoader(DATA, batch_size=16, shuffle=True), "RandomSampler"),
        (
            DataLoader(DATA, batch_sampler=BatchSampler(SequentialSampler(DATA), 16, drop_last=False)),
            "SequentialSampler",
        ),
    ],
)
def test_an_evaluation_loader_that_every_rank_reads_whole_is_warned_of_once(loader, sampler) -> None:
    messages = _messages([loader])
    assert len(messages) == 1, messages
    assert f"validation dataloader 0 reads its 101 samples with a {sampler}, not a DistributedSampler" in messages[0]
    assert "`_Model.val_metrics` counts every sample 2 times" in messages[0]
    assert "UnpaddedDistributedSampler" in messages[0]
    assert "use_distributed_sampler=False" in messages[0]


def test_the_warning_names_the_stage_the_dataloader_and_the_world() -> None:
    loaders = [DataLoader(DATA, sampler=UnpaddedDistributedSampler(DATA, num_replicas=4, rank=0)), DataLoader(DATA)]
    messages = _messages(loaders, world=4, testing=True)
    assert len(messages) == 1, messages
    assert messages[0].startswith("RecMetricCallback: test dataloader 1 reads its 101 samples")
    assert "counts every sample 4 times" in messages[0]


@pytest.mark.parametrize(
    "loader",
    [
        DataLoader(DATA, sampler=UnpaddedDistributedSampler(DATA, num_replicas=2, rank=0)),
        DataLoader(DATA, sampler=_Shard()),
        DataLoader(_Stream(), batch_size=4),
    ],
    ids=["unpadded", "own-sampler", "iterable"],
)
def test_a_sharding_sampler_or_a_stream_is_not_warned_of(loader) -> None:
    assert _messages([loader]) == []


def test_one_process_and_ranks_other_than_zero_warn_of_nothing() -> None:
    assert _messages([DataLoader(DATA)], world=1) == []
    assert _messages([DataLoader(DATA)], rank_zero=False) == []


# ----------------------------------------------------------------------------- throughput after an elastic resume


def _module(clock: Any) -> tmx.RecMetricModule:
    return tmx.RecMetricModule(["a"], ["ctr"], throughput=tmx.Throughput(warmup_steps=3, clock=clock), prefix="t/")


def _step(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"prediction": torch.rand(n, generator=g), "label": (torch.rand(n, generator=g) < 0.3).float()}


class _Trained(L.LightningModule):
    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.train_metrics = _module(clock)


def test_a_resume_on_fewer_ranks_restarts_the_throughput_clock_without_a_second_warm_up() -> None:
    saved = []
    for rank in range(2):  # two ranks' training modules, 6 steps of 10 rows each, saved
        ticks = iter(float(i) for i in range(10))
        module = _module(lambda ticks=ticks: next(ticks))
        for i in range(6):
            module.update(_step(10, 10 * rank + i))
        saved.append(module.state_dict())
    ticks = iter([100.0, 101.0, 103.0, 106.0])  # the resumed process's clock, read once per step
    model = _Trained(lambda: next(ticks))
    model.train_metrics.load_state_dict(saved[0])  # what Lightning loads: the model's state_dict, rank 0's
    checkpoint = {"rec_metric_modules": [{"train_metrics": None}, {"train_metrics": saved[1]}]}
    with pytest.warns(UserWarning, match="carried from 2 ranks onto 1; windows restart"):
        RecMetricCallback(val=None, test=None).on_load_checkpoint(None, model, checkpoint)  # type: ignore[arg-type]
    rows, expected = [7, 11, 13, 17], []
    examples = seconds = 0.0
    for i, n in enumerate(rows):  # the first step after the resume restarts the clock; each later one is timed
        if i > 0:
            examples, seconds = examples + n, seconds + [1.0, 2.0, 3.0][i - 1]
        expected.append(examples / seconds if seconds else float("nan"))
    got = []
    for i, n in enumerate(rows):
        model.train_metrics.update(_step(n, 100 + i))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the first step's rates are undefined
            values = model.train_metrics.compute()
        got.append(values["t/throughput/lifetime_throughput"].item())
        assert values["t/throughput/total_examples"].item() == 120 + sum(rows[: i + 1])
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), equal_nan=True)
    assert expected[1] == 11.0  # a rate at the second step: the 3 warm-up steps are not repeated


# ----------------------------------------------------------------------------- a resume into another configuration


def _saved_module(metrics: dict[str, Any]) -> tmx.RecMetricModule:
    module = tmx.RecMetricModule(["c"], metrics, throughput=False, window_size=4)
    module.update({"prediction": torch.tensor([0.2, 0.7, 0.4]), "label": torch.tensor([0.0, 1.0, 1.0])})
    return module


class _Parent(torch.nn.Module):
    def __init__(self, metrics: dict[str, Any]) -> None:
        super().__init__()
        self.train_metrics = tmx.RecMetricModule(["c"], metrics, throughput=False, window_size=4)


SAVED = {"ne": "ne", "mse": "mse"}
CONFIGS = {  # resumed with: the note names the metrics
    "removed": ({"ne": "ne"}, "it holds the states of ['mse'], which this module does not have (removed since"),
    "added": ({**SAVED, "auc": "auc"}, "the checkpoint has no states, or not all of them, for ['auc']: added since"),
    "both": (
        {"ne": "ne", "auc": "auc"},
        "for ['auc']: added since it was saved, built with other settings, or saved in",
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_a_strict_load_through_a_parent_names_the_metrics_added_or_removed_and_strict_loading(config) -> None:
    """Lightning's restore loads the LightningModule, whose child the module is: torch's bare "Missing key(s)" or
    "Unexpected key(s)" said nothing of a metric added or removed since the checkpoint, nor of ``strict_loading``."""
    metrics, said = CONFIGS[config]
    saved = {f"train_metrics.{k}": v for k, v in _saved_module(SAVED).state_dict().items()}
    parent = _Parent(metrics)
    before = {k: v.clone() for k, v in parent.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError) as caught:
        parent.load_state_dict(saved)
    message = str(caught.value)
    assert "train_metrics: " in message and said in message
    assert "load with strict=False (in Lightning: set `self.strict_loading = False` in the LightningModule)" in message
    after = {k: v for k, v in parent.state_dict().items() if isinstance(v, torch.Tensor)}
    assert all(torch.equal(before[k], after[k]) for k in before)  # refused: nothing loaded
    parent.load_state_dict(saved, strict=False)  # the way on the note gives
    parent.train_metrics.update({"prediction": torch.tensor([0.9]), "label": torch.tensor([1.0])})
    p, y = torch.tensor([0.2, 0.7, 0.4, 0.9], dtype=torch.float64), torch.tensor([0.0, 1.0, 1.0, 1.0])
    ne = -(y * p.log() + (1 - y) * (1 - p).log()).mean() / -(
        0.75 * torch.tensor(0.75).log() + 0.25 * torch.tensor(0.25).log()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an AUC added since has one label class
        values = parent.train_metrics.compute()
    torch.testing.assert_close(values["ne/c"], ne.double())  # resumed lifetime


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_a_strict_load_of_the_module_itself_names_them_after_the_metrics_notes(config) -> None:
    metrics, said = CONFIGS[config]
    module = tmx.RecMetricModule(["c"], metrics, throughput=False, window_size=4)
    with pytest.raises(RuntimeError) as caught:
        module.load_state_dict(_saved_module(SAVED).state_dict())
    last = str(caught.value).splitlines()[-1]
    assert last.startswith("RecMetricModule: "), last
    assert said in last and "load with strict=False" in last
    assert "_strict_keys_hint" not in module.__dict__


def test_a_lightning_resume_with_a_metric_removed_says_strict_loading(tmp_path) -> None:
    class Fit(L.LightningModule):
        def __init__(self, metrics: dict[str, Any]) -> None:
            super().__init__()
            self.net = torch.nn.Linear(1, 1)
            self.train_metrics = tmx.RecMetricModule(["c"], metrics, throughput=False)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            p = torch.sigmoid(self.net(x)).squeeze(-1)
            return {"loss": p.mean(), "prediction": p.detach(), "label": (x[:, 0] > 0).float()}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def trainer() -> Any:
        return L.Trainer(
            max_steps=2,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            callbacks=[RecMetricCallback(val=None, test=None)],
        )

    loader = DataLoader(TensorDataset(torch.randn(8, 1)), batch_size=4)
    first = trainer()
    first.fit(Fit(SAVED), loader)
    first.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(RuntimeError, match=r"(?s)Unexpected key.*train_metrics: it holds the states of \['mse'\].*"):
        trainer().fit(Fit({"ne": "ne"}), loader, ckpt_path=tmp_path / "a.ckpt")
