"""A reset of the window alone (``metric.window.reset()``): the window restarts, the lifetime goes on.

``ne.window.reset()`` through a kept reference to a ``Windowed`` metric's window (or Lightning resetting a
logged ``metric.window`` at an epoch's end) used to be undone at the next read: the window's states are
written from the ring when read, so a CTR window read 0.667 where the samples after the reset give 0.0.
Now it empties the ring too: the window holds the updates from the reset on (by the window rule), and the
lifetime keeps everything. References are computed here (numpy, scikit-learn, plain Python), over the
samples that should remain; the window rule is the docs' (``tests/test_reset_lifetime.py``'s ``_window``).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import warnings

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests import test_reset_lifetime as ref

SEEDS = range(int(os.environ.get("RESET_WINDOW_SEEDS", "2")))
WINDOW = 300


def _ndcg(p: np.ndarray, y: np.ndarray, q: np.ndarray) -> float:
    """Mean NDCG (linear gain, all positions) over the queries with a positive label: plain Python."""
    values = []
    for query in np.unique(q):
        scores, labels = p[q == query], y[q == query]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # distinct scores: no ties
        dcg = sum(labels[i] / math.log2(r + 2) for r, i in enumerate(order))
        ideal = sum(v / math.log2(r + 2) for r, v in enumerate(sorted(labels, reverse=True)))
        if ideal > 0:
            values.append(dcg / ideal)
    return float(np.mean(values)) if values else float("nan")


def _segment_ctr(rows: list) -> np.ndarray:
    _, y, w, s = (np.concatenate([r[i] for r in rows]) for i in range(4))
    with np.errstate(invalid="ignore"):
        return np.array([(w * y)[s == k].sum() / w[s == k].sum() for k in range(3)])


class _Kind:
    """A metric kind: its factory, a batch of ``n`` samples, how to feed it, and the reference over rows."""

    def __init__(self, make, batch, feed, reference) -> None:
        self.make, self.batch, self.feed, self.reference = make, batch, feed, reference


def _pointwise(name: str) -> _Kind:
    return _Kind(
        ref.FACTORIES[name],
        ref._batch,
        lambda m, b: m.update(*(torch.tensor(a) for a in b)),
        lambda rows: ref._reference(name, rows),
    )


_QUERY_IDS = itertools.count(0, 1000)  # each batch's own queries (ids never shared between batches)


def _ranking_batch(g: np.random.Generator, n: int) -> tuple:
    q = next(_QUERY_IDS) + np.sort(g.integers(0, max(n // 4, 1), n))
    return g.permutation(n) / n, g.integers(0, 3, n).astype(np.float64), q


def _segmented_batch(g: np.random.Generator, n: int) -> tuple:
    return (*ref._batch(g, n), g.integers(0, 3, n))


KINDS = {
    **{name: _pointwise(name) for name in sorted(ref.FACTORIES)},
    "ndcg": _Kind(
        tmx.NDCG,
        _ranking_batch,
        lambda m, b: m.update(torch.tensor(b[0]), torch.tensor(b[1]), indexes=torch.tensor(b[2])),
        lambda rows: _ndcg(*(np.concatenate([r[i] for r in rows]) for i in range(3))),
    ),
    "segmented_ctr": _Kind(
        lambda: tmx.Segmented(tmx.CTR(), num_segments=3),
        _segmented_batch,
        lambda m, b: m.update(
            torch.tensor(b[0]), torch.tensor(b[1]), weights=torch.tensor(b[2]), segments=torch.tensor(b[3])
        ),
        _segment_ctr,
    ),
}


def _close(got: torch.Tensor, expected, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    got_np = got.double().numpy()
    keep = ~np.isnan(expected)  # one class alone: the package warns, nothing to compare
    np.testing.assert_allclose(got_np[keep], expected[keep], rtol=1e-9, err_msg=what)


def _compute(metric) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined values in small windows, compute before an update
        return metric.compute()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_reset_of_the_kept_window_restarts_the_window_and_keeps_the_lifetime(kind, seed):
    spec = KINDS[kind]
    g = np.random.default_rng(200 + seed)
    metric = tmx.Windowed(spec.make(), window_size=WINDOW)
    window = metric.window  # kept, as a logger or a MetricCollection keeps it
    updates: list = []
    life_since = win_since = 0
    for step in range(70):
        n = int(g.integers(1, 400)) if step % 17 == 5 else int(g.integers(1, 60))  # some larger than the window
        batch = spec.batch(g, n)
        spec.feed(metric, batch)
        updates.append(batch)
        if step % 19 == 7:
            window.reset()
            win_since = len(updates)
        if step == 30:
            metric.reset_lifetime()
            life_since = len(updates)
        if step == 45:  # resumed after a window reset: the resumed metric's own window, kept again
            resumed = tmx.Windowed(spec.make(), window_size=WINDOW)
            resumed.load_state_dict(metric.state_dict())
            metric, window = resumed, resumed.window
        if step % 3 or win_since == len(updates) or life_since == len(updates):
            continue
        got, kept = _compute(metric), _compute(window)
        expected_window = spec.reference(ref._window(updates[win_since:], WINDOW))
        _close(got["lifetime"], spec.reference(updates[life_since:]), f"step {step}: lifetime")
        _close(got["window"], expected_window, f"step {step}: window")
        _close(kept, expected_window, f"step {step}: the kept window")
    # a copy's window is its own: its reset leaves this metric's window alone
    twin, extra = copy.deepcopy(metric), spec.batch(g, 20)
    twin.window.reset()
    spec.feed(twin, extra)
    _close(_compute(twin)["window"], spec.reference([extra]), "the copy's window")
    _close(
        _compute(metric)["window"], spec.reference(ref._window(updates[win_since:], WINDOW)), "the original's window"
    )


def test_the_window_reset_of_the_issue_ctr():
    """The report's case: CTR read 0.667 after the reset, from the ring; the samples after it give 0.0."""
    ctr = tmx.Windowed(tmx.CTR(), window_size=10)
    window = ctr.window
    ctr.update(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1, 1, 0]))
    window.reset()
    ctr.update(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
    got = ctr.compute()
    assert got["window"].item() == 0.0
    assert window.compute().item() == 0.0
    assert got["lifetime"].item() == pytest.approx(2 / 5, rel=1e-12)


@pytest.mark.parametrize("name", ["bauc", "auc", "ctr"])
def test_a_window_reset_with_max_updates_and_empty_reads(name):
    """An empty window reads its metric's undefined value; ``max_updates`` counts the updates from the reset on."""
    g = np.random.default_rng(11)
    metric = tmx.Windowed(ref.FACTORIES[name](), window_size=1000, max_updates=3)
    updates = [ref._batch(g, int(g.integers(10, 30))) for _ in range(8)]
    for i, batch in enumerate(updates):
        if i == 5:
            metric.window.reset()
            metric.window.reset()  # twice: nothing more
            empty = _compute(metric)
            _close(empty["lifetime"], ref._reference(name, updates[:5]), "lifetime at the reset")
        metric.update(*(torch.tensor(a) for a in batch))
    got = _compute(metric)
    _close(got["window"], ref._reference(name, updates[5:]), "window: the three updates after the reset")
    _close(got["lifetime"], ref._reference(name, updates), "lifetime: all of them")
    metric.reset()  # everything, as before
    assert metric.lifetime._update_count == metric.window._update_count == 0


def test_a_window_reset_under_inference_mode_and_a_reset_of_both_children():
    """Both children reset through references (Lightning logging both): the same as ``reset()``."""
    g = np.random.default_rng(3)
    metric = tmx.Windowed(tmx.AUC(num_bins=ref.BINS), window_size=50)
    first, second = ref._batch(g, 40), ref._batch(g, 30)
    metric.update(*(torch.tensor(a) for a in first))
    with torch.inference_mode():
        metric.lifetime.reset()
        metric.window.reset()
    metric.update(*(torch.tensor(a) for a in second))
    got = _compute(metric)
    _close(got["lifetime"], ref._reference("bauc", [second]), "lifetime")
    _close(got["window"], ref._reference("bauc", [second]), "window")


def test_a_reset_of_a_windowed_modules_window_restarts_that_window():
    """A window kept from a ``RecMetricModule`` unit: its reset restarts that window, other metrics go on."""
    module = tmx.RecMetricModule(
        ref._tasks(), {"bauc": tmx.AUC(num_bins=ref.BINS), "ctr": "ctr", "ne": "ne"}, window_size=301, throughput=False
    )
    units = [m for m in module.modules() if isinstance(m, tmx.Windowed)]
    windows = {
        type(unit.lifetime).__name__ + str(getattr(unit.lifetime, "num_bins", None) or ""): unit.window
        for unit in units
    }
    assert sorted(windows) == ["AUC64", "CTR", "NormalizedEntropy"], windows
    g = np.random.default_rng(9)
    updates = [ref._batch(g, int(g.integers(20, 80))) for _ in range(12)]
    for i, (p, y, w) in enumerate(updates):
        if i == 7:
            for name, window in windows.items():
                if name != "CTR":
                    window.reset()
        module.update({"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.tensor(w)})
    got = module.compute()
    for name in ("bauc", "ne"):
        _close(got[f"{name}/click"], ref._reference(name, updates), f"{name} lifetime")
        _close(got[f"{name}/click/window"], ref._reference(name, ref._window(updates[7:], 301)), f"{name} window")
    _close(got["ctr/click/window"], ref._reference("ctr", ref._window(updates, 301)), "ctr's window is left alone")


def test_lightning_resets_a_logged_window_at_each_epochs_end(tmp_path):
    """``self.log(name, metric.window)`` in a real ``Trainer``: Lightning computes it at the epoch's end, then resets it.

    Each epoch's logged window is then the window over that epoch's samples (here all of them: the
    window is larger than an epoch); before the fix the second epoch's value held the first epoch's
    samples too (the ring was kept). A logged ``metric.lifetime`` restarts each epoch alike.
    """
    lightning = pytest.importorskip("lightning")
    import csv

    from torch.utils.data import DataLoader, TensorDataset

    g = np.random.default_rng(4)
    epochs = [ref._batch(g, 48) for _ in range(3)]  # the rows of each epoch, in order

    class Model(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(1, 1)
            self.ctr = tmx.Windowed(tmx.CTR(), window_size=100)
            self.bauc = tmx.Windowed(tmx.AUC(num_bins=ref.BINS), window_size=100)

        def training_step(self, batch, batch_idx):
            p, y, w = batch
            for metric in (self.ctr, self.bauc):
                metric.update(p, y, w)
            self.log("ctr_window", self.ctr.window, on_step=False, on_epoch=True)
            self.log("ctr_lifetime", self.ctr.lifetime, on_step=False, on_epoch=True)
            self.log("bauc_window", self.bauc.window, on_step=False, on_epoch=True)
            return self.net(p.float()[:, None]).sum() * 0

        def train_dataloader(self):
            e = self.current_epoch
            rows = TensorDataset(*(torch.tensor(a) for a in epochs[e]))
            return DataLoader(rows, batch_size=16, shuffle=False)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    logger = lightning.pytorch.loggers.CSVLogger(tmp_path, name="run")
    trainer = lightning.Trainer(
        max_epochs=3,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints about workers and logging intervals
        trainer.fit(Model())
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r.get("ctr_window")]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for row, batch in zip(rows, epochs):
        expected = {"ctr_window": ref._reference("ctr", [batch]), "ctr_lifetime": ref._reference("ctr", [batch])}
        expected["bauc_window"] = ref._reference("bauc", [batch])
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-6), (row["epoch"], key)
