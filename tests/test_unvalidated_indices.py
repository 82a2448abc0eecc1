"""``validate_args=False`` never turns data into an index outside a state.

An unchecked batch is the caller's promise, but a broken promise must not end the process: an index
outside a histogram is an ``IndexError`` on the CPU and a device-side assert on CUDA (which poisons
the whole CUDA context of a training job). Binned ``AUC``/``AUPRC`` give every score a bin: NaN
and scores below the bins' range in the first bin, scores above it in the last. The references are
NumPy histograms of the scores replaced by their documented bins and scikit-learn's values of
those bins, written here, or the same metric fed the replaced scores with validation on.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.functional import auc as auc_fn
from torchmetrics_ext.functional import auprc as auprc_fn
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.utilities.device import force_device_path

NAN, INF = math.nan, math.inf
# probabilities away from every bin edge of 10 bins in either space, then the unchecked ones
PROBS = [0.33, 0.57, 0.91, 0.04, 0.62, 0.18, NAN, 1.5, -2.0, INF, -INF, NAN]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0]
LOGITS = [-0.7, 0.3, 2.3, -3.1, 0.5, -1.5, NAN, 40.0, -40.0, INF, -INF, NAN]
NUM_BINS = 10


def _documented_bins(scores: list[float], bin_space: str, from_logits: bool) -> np.ndarray:
    """Each score's bin as the docstrings say, computed with NumPy: NaN in bin 0, the rest clipped to the range."""
    x = np.array(scores, dtype=np.float64)
    nan = np.isnan(x)
    if bin_space == "probability":
        q = 1.0 / (1.0 + np.exp(-x)) if from_logits else np.clip(x, 0.0, 1.0)
        low, high = 0.0, 1.0
    else:
        low, high = FB.DEFAULT_LOGIT_RANGE
        with np.errstate(divide="ignore", invalid="ignore"):
            q = x if from_logits else np.log(np.clip(x, 0, 1)) - np.log1p(-np.clip(x, 0, 1))
    q = np.clip(np.where(nan, low, q), low, high)
    return np.minimum(np.floor((q - low) / (high - low) * NUM_BINS), NUM_BINS - 1).astype(np.int64)


def _histogram(bins: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(2, B)`` counts of the negatives and positives per bin."""
    return np.stack([np.bincount(bins[labels == c], minlength=NUM_BINS) for c in (0, 1)]).astype(np.float64)


def _inputs(from_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS if from_logits else PROBS), torch.tensor(LABELS)


CASES = [(space, logits) for space in ("logit", "probability") for logits in (False, True)]


@pytest.mark.parametrize(("bin_space", "from_logits"), CASES)
@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unchecked_nan_and_out_of_range_scores_land_in_the_documented_bins(bin_space, from_logits, device_path, dtype):
    """NaN (an ``IndexError`` on the CPU path, the last bin on the device path before), ±inf and scores outside
    the range: the histogram is NumPy's of the documented bins, the values scikit-learn's of those bins."""
    preds, target = _inputs(from_logits)
    bins = _documented_bins(LOGITS if from_logits else PROBS, bin_space, from_logits)
    labels = np.array(LABELS)
    opts = {"num_bins": NUM_BINS, "bin_space": bin_space, "from_logits": from_logits, "validate_args": False}
    auc, ap = tmx.AUC(**opts), tmx.AUPRC(**opts)
    with force_device_path(device_path):
        auc.update(preds.to(dtype), target)
        ap.update(preds.to(dtype), target)
    np.testing.assert_array_equal(auc._hist[:, 0].numpy(), _histogram(bins, labels))
    assert auc.compute().item() == pytest.approx(skm.roc_auc_score(labels, bins), rel=1e-12)
    assert ap.compute().item() == pytest.approx(skm.average_precision_score(labels, bins), rel=1e-12)


@pytest.mark.parametrize(("bin_space", "from_logits"), CASES)
def test_unchecked_value_equals_the_checked_value_of_the_replaced_scores(bin_space, from_logits):
    """The same metric, validated, fed the scores replaced by ones of their documented bins: the same states."""
    preds, target = _inputs(from_logits)
    if from_logits:  # a logit far outside the range is an end bin's; NaN the first
        replaced = torch.nan_to_num(preds, nan=-1e6, posinf=1e6, neginf=-1e6)
    else:
        replaced = torch.nan_to_num(preds, nan=0.0).clamp(0.0, 1.0)
    opts = {"num_bins": NUM_BINS, "bin_space": bin_space, "from_logits": from_logits}
    for cls in (tmx.AUC, tmx.AUPRC):
        unchecked, checked = cls(validate_args=False, **opts), cls(**opts)
        unchecked.update(preds, target)
        checked.update(replaced, target)
        torch.testing.assert_close(unchecked._hist, checked._hist, rtol=0, atol=0)
        torch.testing.assert_close(unchecked.compute(), checked.compute(), rtol=0, atol=0)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_unchecked_nan_in_forward_windowed_multitask_and_functional(device_path):
    """Every path into the histogram (forward's batch value, a window's kept indices, ``(T, N)`` tasks, weights,
    the functional twins and curves) places NaN in the first bin: scikit-learn's values of the documented bins."""
    p0, target = _inputs(False)
    p1 = p0.flip(0)
    preds, labels = torch.stack([p0, p1]), torch.stack([target, target])
    weights = torch.linspace(0.5, 2.0, len(PROBS), dtype=torch.float64)
    bins = np.stack([_documented_bins(p.tolist(), "logit", False) for p in (p0, p1)])
    y, w = labels.numpy(), weights.numpy()
    ref_auc = [skm.roc_auc_score(y[t], bins[t], sample_weight=w) for t in range(2)]
    ref_ap = [skm.average_precision_score(y[t], bins[t], sample_weight=w) for t in range(2)]
    opts = {"num_tasks": 2, "num_bins": NUM_BINS, "validate_args": False}
    with force_device_path(device_path):
        auc, ap = tmx.AUC(**opts), tmx.AUPRC(**opts)
        np.testing.assert_allclose(auc(preds, labels, weights).numpy(), ref_auc, rtol=1e-12)
        np.testing.assert_allclose(ap(preds, labels, weights).numpy(), ref_ap, rtol=1e-12)
        window = tmx.Windowed(tmx.AUC(**opts), 100)
        window.update(preds, labels, weights)
        out = window.compute()
        functional = auc_fn(preds, labels, weights, num_bins=NUM_BINS, validate_args=False)
        functional_ap = auprc_fn(preds, labels, weights, num_bins=NUM_BINS, validate_args=False)
        roc = tmx.functional.roc_curve(p0, target, num_bins=NUM_BINS, validate_args=False)
    np.testing.assert_allclose(auc.compute().numpy(), ref_auc, rtol=1e-12)
    np.testing.assert_allclose(ap.compute().numpy(), ref_ap, rtol=1e-12)
    np.testing.assert_allclose(out["lifetime"].numpy(), ref_auc, rtol=1e-12)
    np.testing.assert_allclose(out["window"].numpy(), ref_auc, rtol=1e-12)
    np.testing.assert_allclose(functional.numpy(), ref_auc, rtol=1e-12)
    np.testing.assert_allclose(functional_ap.numpy(), ref_ap, rtol=1e-12)
    fpr, tpr, _ = roc  # the area under the binned curve is the binned AUC
    assert float(np.trapezoid(tpr.numpy(), fpr.numpy())) == pytest.approx(skm.roc_auc_score(LABELS, bins[0]), rel=1e-12)


def test_unchecked_nan_through_a_module():
    """``RecMetricModule`` whose metrics all skip validation: NaN scores of each task in its first bin."""
    tasks = [tmx.RecTaskInfo(name, label_name=f"{name}_y", prediction_name=f"{name}_p") for name in "ab"]
    opts = {"num_tasks": 2, "num_bins": NUM_BINS, "validate_args": False}
    module = tmx.RecMetricModule(tasks, {"auc": tmx.AUC(**opts), "auprc": tmx.AUPRC(**opts)}, window_size=100)
    p0, target = _inputs(False)
    p1 = p0.flip(0)
    module.update({"a_p": p0, "a_y": target, "b_p": p1, "b_y": target})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # throughput of one step: undefined
        out = module.compute()
    for name, p in (("a", p0), ("b", p1)):
        bins = _documented_bins(p.tolist(), "logit", False)
        for key in (f"auc/{name}", f"auc/{name}/window"):
            assert out[key].item() == pytest.approx(skm.roc_auc_score(LABELS, bins), rel=1e-12)
        assert out[f"auprc/{name}"].item() == pytest.approx(skm.average_precision_score(LABELS, bins), rel=1e-12)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_checked_nan_is_still_refused_and_changes_nothing(device_path):
    metric = tmx.AUC(num_bins=NUM_BINS)
    metric.update(torch.tensor([0.2, 0.7]), torch.tensor([0, 1]))
    before = metric._hist.clone()
    with force_device_path(device_path), pytest.raises(ValueError, match="preds"):
        metric.update(torch.tensor([0.1, NAN]), torch.tensor([0, 1]))
    torch.testing.assert_close(metric._hist, before, rtol=0, atol=0)
