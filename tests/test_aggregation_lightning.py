"""The aggregator in a LightningModule: docs/aggregation.md's "In Lightning" class, run in real Trainer fits.

Every logged value is checked against plain Python over the samples the loaders gave (sums, ``Counter``,
``statistics.stdev``, ``numpy.percentile`` within the sketch's 1%). The last tests keep the page's four
statements about Lightning true: each names what a model without that part of the class logs or raises.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from torchmetrics_ext.aggregation import AggregationType, DefaultTrainingMetricTransform, MetricTransform

L = pytest.importorskip("lightning")

ROOT = Path(__file__).resolve().parents[1]
BIG = 2**24 + 1  # tokens of the first training sample: float32 rounds it to 2**24


def _doc_namespace() -> dict:
    """The python blocks under docs/aggregation.md's "### In Lightning" (the class with its callback, then the
    class with the checkpoint hooks instead), executed as a reader would paste them."""
    text = (ROOT / "docs" / "aggregation.md").read_text()
    section = text[text.index("### In Lightning") : text.index("### Compute groups")]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 2
    namespace: dict = {"__name__": "__aggregation_lightning__"}
    for block in blocks:
        exec(compile(block, "docs/aggregation.md", "exec"), namespace)
    return namespace


class _Source(MetricTransform):
    def _generate_metrics(self, sample):
        return [self.new_metric("source", sample["source"], AggregationType.CATEGORICAL_COUNT)]


def _samples(split: str, n: int) -> list[dict]:
    rng = np.random.default_rng(0 if split == "train" else 1)
    out = []
    for i in range(n):
        dataset = ("alpaca", "slimorca")[int(rng.integers(2))]
        length = BIG if (split == "train" and i == 0) else int(rng.integers(1, 200))
        sample: dict = {"tokens": range(length), "source": ("web", "books", 7)[int(rng.integers(3))]}
        for transform in (DefaultTrainingMetricTransform(), _Source()):
            transform.set_dataset_name(dataset)
            sample = transform(sample)
        sample["x"] = torch.randn(4, generator=torch.Generator().manual_seed(i))
        out.append(sample)
    return out


TRAIN, VAL = _samples("train", 24), _samples("val", 10)


def _collate(samples: list[dict]) -> dict:
    return {"x": torch.stack([s["x"] for s in samples]), "metrics": [m for s in samples for m in s["metrics"]]}


def _loaders():
    return DataLoader(TRAIN, batch_size=4, collate_fn=_collate), DataLoader(VAL, batch_size=4, collate_fn=_collate)


def _expected(samples: list[dict], prefix: str, times: int = 1) -> dict[str, float]:
    """torchtune's keys and values, from the samples' records in plain Python."""
    values = defaultdict(list)
    for sample in samples * times:
        for record in sample["metrics"]:
            values[(record.dataset_name, record.name, record.agg_type)].append(record.value)
    out = {}
    for (dataset, name, agg_type), seen in values.items():
        key = f"{prefix}_{dataset}/{name}"
        if agg_type is AggregationType.SUM:
            out[key] = float(sum(seen))
        elif agg_type is AggregationType.DISTRIBUTION:
            out |= {f"{key}_stat_mean": statistics.fmean(seen), f"{key}_stat_std": statistics.stdev(seen)}
            out |= {f"{key}_stat_min": float(min(seen)), f"{key}_stat_max": float(max(seen))}
            out |= {f"{key}_stat_p{q:02d}": float(np.percentile(seen, q)) for q in (5, 50, 95)}
        else:
            out |= {f"{key}_count_{category}": float(count) for category, count in Counter(seen).items()}
    return out


def _assert_logged(row: dict[str, float], expected: dict[str, float]) -> None:
    assert {k for k in row if k.split("_")[0] in {"train", "val"}} == set(expected)
    for key, value in expected.items():
        tolerance = 0.01 * value if "_stat_p" in key else 1e-9 * max(abs(value), 1.0)
        assert abs(row[key] - value) <= tolerance, (key, row[key], value)


def _fit(
    model,
    tmp_path: Path,
    max_epochs: int,
    ckpt_path: str | None = None,
    name: str = "run",
    every: int = 1,
    callbacks: list | None = None,
):
    trainer = L.Trainer(
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name=name, version=""),
        log_every_n_steps=every,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and the like
        trainer.fit(model, *_loaders(), ckpt_path=ckpt_path)
    rows = []
    with open(tmp_path / name / "metrics.csv") as f:
        for row in csv.DictReader(f):
            rows.append({k: float(v) for k, v in row.items() if v != ""})
    return trainer, rows


def _last(rows: list[dict], key: str) -> dict[str, float]:
    return [row for row in rows if key in row][-1]


@pytest.fixture(scope="module")
def doc_namespace():
    return _doc_namespace()


@pytest.fixture(scope="module")
def doc_model(doc_namespace):
    return doc_namespace["DataMetricsModel"]


def test_the_documented_model_logs_torchtunes_keys_and_the_exact_totals(doc_model, tmp_path):
    """Two epochs of 6 steps (a sanity check first), written every 3 steps: training totals at steps 2, 5, 8
    and 11, validation once per epoch."""
    _, rows = _fit(doc_model(), tmp_path, max_epochs=2, every=3)
    train_rows = [row for row in rows if "train_alpaca/tokens_seen" in row]
    assert [row["step"] for row in train_rows] == [2, 5, 8, 11]
    _assert_logged(train_rows[0], _expected(TRAIN[:12], "train"))  # the first three batches
    last = train_rows[-1]
    _assert_logged(last, _expected(TRAIN, "train", times=2))
    tokens = sum(len(s["tokens"]) for s in TRAIN if s["metrics"][0].dataset_name == TRAIN[0]["metrics"][0].dataset_name)
    assert last[f"train_{TRAIN[0]['metrics'][0].dataset_name}/tokens_seen"] == 2 * tokens  # past 2**24, exact
    val_rows = [row for row in rows if "val_alpaca/tokens_seen" in row]
    assert len(val_rows) == 2  # one per epoch; the sanity check's records were reset, not carried
    for row in val_rows:
        _assert_logged(row, _expected(VAL, "val"))


@pytest.mark.parametrize("way", ["callback", "hooks"])
def test_a_lightning_checkpoint_resumes_the_totals(doc_namespace, tmp_path, way):
    """One epoch, a checkpoint, a fresh model resumed to two epochs: the uninterrupted run's totals, with the
    page's callback (its recommended way) and with its hooks."""
    if way == "callback":
        model, callbacks = doc_namespace["DataMetricsModel"], doc_namespace["callbacks"]
    else:
        model, callbacks = doc_namespace["DataMetricsModelWithHooks"], []
    trainer, _ = _fit(model(), tmp_path, max_epochs=1, name="first", callbacks=callbacks)
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = str(tmp_path / "epoch1.ckpt")
    _, rows = _fit(model(), tmp_path, max_epochs=2, ckpt_path=resumed, name="resumed", callbacks=callbacks)
    _assert_logged(_last(rows, "train_alpaca/tokens_seen"), _expected(TRAIN, "train", times=2))


def test_the_pages_statements_about_lightning_hold(doc_model, tmp_path):
    """What a model without each part of the class gets: the reasons the page gives for it."""

    class RecordsInTheBatch(doc_model):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            return batch

        def training_step(self, batch, batch_idx):
            self.data_metrics["train"].update(batch["metrics"])
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match="frozen dataclass"):
        _fit(RecordsInTheBatch(), tmp_path, max_epochs=1, name="records")

    class PlainFloatsEachStep(doc_model):
        def training_step(self, batch, batch_idx):
            self.log_dict(self.data_metrics["train"].get_metrics_for_logging(prefix="train"))
            return self.net(batch["x"]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log_dict(self.data_metrics["val"].get_metrics_for_logging(prefix="val"), batch_size=4)

        def on_validation_epoch_end(self):
            self.data_metrics["val"].reset()

    _, rows = _fit(PlainFloatsEachStep(), tmp_path, max_epochs=1, name="plain")
    first = rows[0]  # the first step's totals: the first batch, BIG tokens among them
    dataset = TRAIN[0]["metrics"][0].dataset_name
    exact = sum(len(s["tokens"]) for s in TRAIN[:4] if s["metrics"][0].dataset_name == dataset)
    assert first[f"train_{dataset}/tokens_seen"] == float(np.float32(exact)) != exact  # float32 rounded it
    val = _last(rows, "val_alpaca/samples_seen")["val_alpaca/samples_seen"]
    counts = np.cumsum([sum(s["metrics"][0].dataset_name == "alpaca" for s in VAL[i : i + 4]) for i in (0, 4, 8)])
    # logged with batch_size=4 at each step, so Lightning's epoch value is the plain mean of the running totals
    assert math.isclose(val, counts.mean()) and val != counts[-1], (val, counts)
