"""``forward`` of binned ``AUC``/``AUPRC``: the batch value from the batch's non-empty bins, not the whole histogram.

The binned value of a batch is the exact value of the batch whose scores are replaced by their bin
index. References: scikit-learn's ``roc_auc_score`` / ``average_precision_score`` on bin indices
computed here with numpy (the documented rule), and ``update`` + ``compute`` of a twin metric (the
``(2, T, B)`` histogram pass). The held histogram after ``forward`` must stay what it was: the held one plus the batch's histogram
(the batch's own update into zeros), bit for bit (the updates' own sums for unit weights).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.functional.auc import binary as F
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

LOGIT_RANGE = (-16.0, 16.0)


def _bins(preds: np.ndarray, num_bins: int, bin_space: str, from_logits: bool) -> np.ndarray:
    """Each score's bin by the documented rule, in numpy (float64 logit; float32 probability times B)."""
    if bin_space == "probability":
        p = 1.0 / (1.0 + np.exp(-preds.astype(np.float64))) if from_logits else preds
        position = (p.astype(np.float32) * np.float32(num_bins)).astype(np.float64)
    else:
        x = preds.astype(np.float64)
        z = x if from_logits else np.log(x / (1.0 - x))
        lo, hi = LOGIT_RANGE
        position = (z - lo) * (num_bins / (hi - lo))
    return np.floor(np.clip(position, 0, num_bins - 1))


def _batch(seed: int, n: int, tasks: int, weighted: bool, from_logits: bool, ties: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if tasks == 1 else (tasks, n)
    p = torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01
    if ties:  # few distinct scores: ties within and across bins
        p = torch.round(p * 8) / 8 * 0.98 + 0.01
    target = (torch.rand(shape, generator=g, dtype=torch.float64) < p).long()
    preds = torch.logit(p) if from_logits else p
    batch = {"preds": preds.float(), "target": target}
    if weighted:
        w = torch.rand(shape, generator=g, dtype=torch.float64) * 3
        w[..., :: max(n // 3, 1)] = 0.0  # some zero weights
        batch["weights"] = w
    return batch


def _sklearn_values(batch, num_bins, bin_space, from_logits, tasks):
    """(AUC, AP) per task by scikit-learn on the bin indices; ``nan`` where a class has no weight."""
    preds = batch["preds"].double().numpy().reshape(tasks, -1)
    target = batch["target"].numpy().reshape(tasks, -1)
    weights = batch.get("weights")
    w = np.ones_like(preds) if weights is None else weights.numpy().reshape(tasks, -1)
    aucs, aps = [], []
    for t in range(tasks):  # the reference loops; the code under test does not
        score = _bins(preds[t], num_bins, bin_space, from_logits)
        pos, neg = (w[t] * target[t]).sum(), (w[t] * (1 - target[t])).sum()
        aucs.append(roc_auc_score(target[t], score, sample_weight=w[t]) if pos > 0 and neg > 0 else np.nan)
        aps.append(average_precision_score(target[t], score, sample_weight=w[t]) if pos > 0 else np.nan)
    return np.array(aucs), np.array(aps)


def _forward_value(metric, batch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric(**batch)
    return value, [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]


def _update_value(metric, batch):
    """The histogram pass: a twin updated with the batch alone, then ``compute``."""
    metric.reset()
    metric.update(**batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    return value, [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]


@pytest.mark.parametrize("num_bins", [10, 1000, 10_000, 1_000_000])
@pytest.mark.parametrize("tasks", [1, 3])
@pytest.mark.parametrize(
    ("bin_space", "from_logits"), [("logit", False), ("logit", True), ("probability", False), ("probability", True)]
)
def test_forward_values_equal_sklearn_on_bins_and_the_histogram(num_bins, tasks, bin_space, from_logits):
    rng = np.random.default_rng(num_bins + tasks)
    kw = {"num_bins": num_bins, "bin_space": bin_space, "from_logits": from_logits}
    if tasks > 1:
        kw["num_tasks"] = tasks
    for cls, which in ((tmx.AUC, 0), (tmx.AUPRC, 1)):
        metric, twin = cls(**kw), cls(**kw)
        held = torch.zeros_like(metric._hist)
        sizes = [1, 2, int(rng.integers(3, 40)), int(rng.integers(40, 3000))]
        for k, n in enumerate(sizes):
            batch = _batch(
                1000 * num_bins + 10 * k + which, n, tasks, weighted=k % 2 == 1, from_logits=from_logits, ties=k == 2
            )
            value, warned = _forward_value(metric, batch)
            reference, ref_warned = _update_value(twin, batch)
            held = held + twin._hist
            expected = _sklearn_values(batch, num_bins, bin_space, from_logits, tasks)[which]
            np.testing.assert_allclose(value.numpy().reshape(-1), reference.numpy().reshape(-1), rtol=1e-12, atol=0)
            np.testing.assert_allclose(value.numpy().reshape(-1), expected, rtol=1e-12, atol=1e-15)
            assert len(warned) == len(ref_warned) == (1 if np.isnan(expected).any() else 0)
            # the held histogram is the held one plus the batch's, bit for bit
            assert torch.equal(metric._hist, held)


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
@pytest.mark.parametrize("num_bins", [10, 1_000_000])
@pytest.mark.parametrize(
    ("target", "weights", "expected"),
    [
        ([0, 0, 0], None, {"AUC": np.nan, "AUPRC": np.nan}),  # one class: negatives only
        ([1, 1, 1], None, {"AUC": np.nan, "AUPRC": 1.0}),  # positives only: AP is 1 (scikit-learn)
        ([0, 1, 1], [0.0, 0.0, 0.0], {"AUC": np.nan, "AUPRC": np.nan}),  # no weight at all
    ],
)
def test_undefined_batches_warn_and_give_nan(cls, num_bins, target, weights, expected):
    metric, updated = cls(num_bins=num_bins), cls(num_bins=num_bins)
    batch = {"preds": torch.tensor([0.2, 0.5, 0.9]), "target": torch.tensor(target)}
    if weights is not None:
        batch["weights"] = torch.tensor(weights)
    value, warned = _forward_value(metric, batch)
    want = expected[cls.__name__]
    assert (np.isnan(want) and torch.isnan(value)) or value.item() == want
    assert len(warned) == (1 if np.isnan(want) else 0)
    updated.update(**batch)
    assert torch.equal(metric._hist, updated._hist)


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.utilities.warnings.UndefinedMetricWarning")
@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_states_after_forwards_are_the_updates_bit_for_bit(device_path):
    """Unit weights: whole-number sums, so forward's held + batch histogram is the updates' histogram."""
    metric, updated = tmx.AUPRC(num_tasks=3, num_bins=1000), tmx.AUPRC(num_tasks=3, num_bins=1000)
    with force_device_path(device_path):
        for seed, n in enumerate([1, 5, 17, 100, 2000]):
            batch = _batch(seed, n, 3, weighted=False, from_logits=False, ties=seed == 2)
            metric(**batch)
            updated.update(**batch)
            assert torch.equal(metric._hist, updated._hist)
    assert metric.update_count == updated.update_count == 5
    assert torch.equal(metric.compute(), updated.compute())


def test_forward_value_skips_the_full_histogram(monkeypatch):
    """A batch of N samples much smaller than B is valued from at most N bins per task, not the B-bin pass."""
    widths = []
    original = F._binned_curve_stats

    def recording(hist):
        widths.append(hist.shape[-1])
        return original(hist)

    monkeypatch.setattr(F, "_binned_curve_stats", recording)
    metric = tmx.AUC(num_tasks=2, num_bins=1_000_000)
    batch = _batch(3, 64, 2, weighted=True, from_logits=False, ties=False)
    value = metric(**batch)
    assert widths and max(widths) <= 64
    np.testing.assert_allclose(value.numpy(), _sklearn_values(batch, 1_000_000, "logit", False, 2)[0], rtol=1e-12)
    widths.clear()
    metric.compute()  # the accumulated value takes the histogram
    assert widths == [1_000_000]


def test_windowed_binned_forward_equals_sklearn():
    metric = tmx.Windowed(tmx.AUC(num_bins=10_000), window_size=50)
    batch = _batch(7, 30, 1, weighted=True, from_logits=False, ties=True)
    values = metric(**batch)
    expected = _sklearn_values(batch, 10_000, "logit", False, 1)[0]
    for value in values.values():
        np.testing.assert_allclose(value.numpy().reshape(-1), expected, rtol=1e-12)
