"""``AggregatorCheckpoint``: a ``MetricsAggregator`` resumed from Lightning's checkpoint, in real fits.

``tests/helpers/lightning_aggregator.py`` fits docs/aggregation.md's ``DataMetricsModel`` (executed from the
page) one epoch, saves a checkpoint, and resumes a fresh model to two epochs with ``trainer.fit(ckpt_path=...)``,
in one process and under ``Trainer(strategy="ddp", devices=2, accelerator="cpu")`` (gloo; the ranks see other
datasets in other numbers). Every rank's ``get_metrics_for_logging`` at the resumed fit's end must equal plain
Python over every sample of both epochs (sums, ``max``, ``Counter``, ``statistics``; ``numpy.percentile``
within the sketch's 1%): with the callback (the page's recommended way) and with the page's hooks. Without
either, the resumed totals start from 0 (the page's reason for them). The other tests call the hooks
directly: a checkpoint without the states, another number of ranks, one saved in ``ddp_spawn``'s main process,
bad arguments.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

import lightning as L

from tests.helpers import lightning_aggregator as run
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator
from torchmetrics_ext.integrations.lightning import AggregatorCheckpoint

ROOT = Path(__file__).resolve().parents[1]


def _expected(samples: list[int], epochs: int) -> dict[str, float]:
    """torchtune's keys and values for the training samples numbered ``samples``, seen ``epochs`` times."""
    values: dict[tuple, list] = defaultdict(list)
    for i in samples * epochs:
        for record in run.sample(i, "train")["metrics"]:
            values[(record.dataset_name, record.name, record.agg_type)].append(record.value)
    out: dict[str, float] = {}
    for (dataset, name, agg_type), seen in values.items():
        key = f"train_{dataset}/{name}"
        if agg_type is AggregationType.SUM:
            out[key] = float(sum(seen))
        elif agg_type is AggregationType.MAX:
            out[key] = float(max(seen))
        elif agg_type is AggregationType.DISTRIBUTION:
            out |= {f"{key}_stat_mean": statistics.fmean(seen), f"{key}_stat_std": statistics.stdev(seen)}
            out |= {f"{key}_stat_min": float(min(seen)), f"{key}_stat_max": float(max(seen))}
            out |= {f"{key}_stat_p{q:02d}": float(np.percentile(seen, q)) for q in (5, 50, 95)}
        else:
            out |= {f"{key}_count_{category}": float(count) for category, count in Counter(seen).items()}
    return out


def _assert_values(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        tolerance = 0.01 * abs(value) if "_stat_p" in key else 1e-9 * max(abs(value), 1.0)
        assert abs(got[key] - value) <= tolerance, (key, got[key], value)


ALL = list(range(run.TRAIN))


def _one_process(tmp_path: Path, recipe: str) -> tuple[dict, dict]:
    first = run.fit(str(tmp_path), 1, recipe, 1, None)
    resumed = run.fit(str(tmp_path), 1, recipe, 2, str(tmp_path / "epoch=0.ckpt"))
    return first, resumed


@pytest.mark.parametrize("recipe", ["callback", "hooks"])
def test_one_process_resume_gives_the_uninterrupted_totals(tmp_path, recipe):
    first, resumed = _one_process(tmp_path, recipe)
    _assert_values(first["values"], _expected(ALL, 1))
    _assert_values(resumed["values"], _expected(ALL, 2))
    # the last training row the model logged (its last step) holds the same totals
    row = [row for _, row in resumed["rows"] if "train_alpaca/tokens_seen" in row][-1]
    _assert_values({k: v for k, v in row.items() if k.startswith("train_")}, _expected(ALL, 2))


def test_without_the_callback_or_hooks_a_resume_starts_the_totals_from_zero(tmp_path):
    """What the page warns of: the aggregator is not in the model's state_dict."""
    _, resumed = _one_process(tmp_path, "none")
    _assert_values(resumed["values"], _expected(ALL, 1))  # the resumed epoch alone


@pytest.mark.ddp
def test_ddp_resume_gives_every_rank_the_uninterrupted_totals(tmp_path):
    """Two gloo ranks: each rank resumes its own states, so the synced totals are those of both epochs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "lightning_aggregator.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        first = torch.load(tmp_path / f"callback-1-rank{rank}.pt", weights_only=False)
        resumed = torch.load(tmp_path / f"callback-2-rank{rank}.pt", weights_only=False)
        assert first["world"] == resumed["world"] == 2
        _assert_values(first["values"], _expected(ALL, 1))
        _assert_values(resumed["values"], _expected(ALL, 2))
    # the saved states are each rank's own: rank 1's entry holds its samples' records, not rank 0's
    saved = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)["metrics_aggregators"]
    alone = []
    for rank in (0, 1):
        aggregator = MetricsAggregator()
        aggregator.load_state_dict(saved[rank]["data_metrics['train']"])
        alone.append(aggregator.get_metrics_for_logging(prefix="train"))  # one process: no sync
    for rank in (0, 1):
        _assert_values(alone[rank], _expected(run.shard(run.TRAIN, "train", rank, 2), 1))


# ---------------------------------------------------------------- the hooks alone


class _Model(L.LightningModule):
    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.data_metrics = {"train": MetricsAggregator(), "val": MetricsAggregator()}
        self.other = MetricsAggregator()
        self.strict_loading = strict


def _records(n: int, dataset: str = "alpaca") -> list[Metric]:
    return [Metric(dataset, "tokens", float(i), AggregationType.SUM) for i in range(1, n + 1)]


def _fitting(world: int = 1) -> SimpleNamespace:
    return SimpleNamespace(world_size=world)


def test_a_saved_checkpoint_holds_every_named_aggregator_and_loads_back():
    model = _Model()
    model.data_metrics["train"].update(_records(4))
    model.other.update(_records(2, "dolly"))
    checkpoint: dict = {}
    AggregatorCheckpoint("data_metrics").on_save_checkpoint(_fitting(), model, checkpoint)
    AggregatorCheckpoint("other").on_save_checkpoint(_fitting(), model, checkpoint)  # a second one adds its own
    assert sorted(checkpoint["metrics_aggregators"][0]) == ["data_metrics['train']", "data_metrics['val']", "other"]
    resumed = _Model()
    AggregatorCheckpoint(["data_metrics", "other"]).on_load_checkpoint(_fitting(), resumed, checkpoint)
    assert resumed.data_metrics["train"].get_metrics_for_logging() == {"train_alpaca/tokens": 10.0}
    assert resumed.other.get_metrics_for_logging() == {"train_dolly/tokens": 3.0}
    assert resumed.data_metrics["val"].get_metrics_for_logging() == {}


def test_a_checkpoint_without_the_states_follows_strict_loading():
    checkpoint = {"state_dict": {}}  # saved without the callback
    with pytest.raises(RuntimeError, match=r"no states of \[\"data_metrics\['train'\]\".*strict_loading = False"):
        AggregatorCheckpoint().on_load_checkpoint(_fitting(), _Model(), checkpoint)
    model = _Model(strict=False)
    model.data_metrics["train"].update(_records(3))
    with pytest.warns(UserWarning, match="they start empty"):
        AggregatorCheckpoint().on_load_checkpoint(_fitting(), model, checkpoint)
    assert model.data_metrics["train"].get_metrics_for_logging() == {}


def test_a_checkpoint_of_more_ranks_resumes_this_ranks_own_and_names_the_lost_ones():
    saved = []
    for n in (3, 5):  # rank 0 saw 1 + 2 + 3, rank 1 saw 1 + ... + 5
        model = _Model()
        model.data_metrics["train"].update(_records(n))
        checkpoint: dict = {}
        AggregatorCheckpoint().on_save_checkpoint(_fitting(), model, checkpoint)
        saved.append(checkpoint["metrics_aggregators"][0])
    model = _Model()
    with pytest.warns(UserWarning, match=r"2 ranks, this run has 1: the records of saved rank\(s\) \[1\]"):
        AggregatorCheckpoint().on_load_checkpoint(_fitting(), model, {"metrics_aggregators": saved})
    assert model.data_metrics["train"].get_metrics_for_logging() == {"train_alpaca/tokens": 6.0}


def test_a_checkpoint_saved_in_ddp_spawns_main_process_starts_the_aggregators_empty():
    model = _Model()
    model.data_metrics["train"].update(_records(3))  # the main process's own, none of the ranks'
    checkpoint: dict = {}
    with pytest.warns(UserWarning, match="outside the 2 ranks of the fit"):
        AggregatorCheckpoint().on_save_checkpoint(_fitting(world=2), model, checkpoint)
    assert checkpoint["metrics_aggregators"] == [None, None]
    with pytest.warns(UserWarning, match="start empty"):
        AggregatorCheckpoint().on_load_checkpoint(_fitting(), model, checkpoint)
    assert model.data_metrics["train"].get_metrics_for_logging() == {}


@pytest.mark.parametrize(
    ("attributes", "error", "match"),
    [
        (3, TypeError, "attribute name or a sequence"),
        ([None], TypeError, "attribute name or a sequence"),
        ([], ValueError, "to name attributes"),
        ("", ValueError, "to name attributes"),
    ],
)
def test_bad_attributes_are_refused(attributes, error, match):
    with pytest.raises(error, match=match):
        AggregatorCheckpoint(attributes)


@pytest.mark.parametrize(
    ("attribute", "error", "match"),
    [
        ("missing", AttributeError, r"`_Model` has no attribute 'missing'"),
        ("strict_loading", TypeError, r"`_Model.strict_loading` is bool, expected a MetricsAggregator"),
    ],
)
def test_setup_names_an_attribute_that_holds_no_aggregator(attribute, error, match):
    with pytest.raises(error, match=match):
        AggregatorCheckpoint(attribute).setup(_fitting(), _Model(), "fit")
