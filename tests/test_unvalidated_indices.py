"""``validate_args=False`` never turns data into an index outside a state.

An unchecked batch is the caller's promise, but a broken promise must not end the process: an index
outside a histogram is an ``IndexError`` on the CPU and a device-side assert on CUDA (which poisons
the whole CUDA context of a training job). Binned ``AUC``/``AUPRC`` give every score a bin: scores
below the bins' range in the first bin, NaN and scores above it in the last. The references are
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
    """Each score's bin as the docstrings say, computed with NumPy: NaN in the last bin, the rest clipped to the range."""
    x = np.array(scores, dtype=np.float64)
    nan = np.isnan(x)
    if bin_space == "probability":
        q = 1.0 / (1.0 + np.exp(-x)) if from_logits else np.clip(x, 0.0, 1.0)
        low, high = 0.0, 1.0
    else:
        low, high = FB.DEFAULT_LOGIT_RANGE
        with np.errstate(divide="ignore", invalid="ignore"):
            q = x if from_logits else np.log(np.clip(x, 0, 1)) - np.log1p(-np.clip(x, 0, 1))
    q = np.clip(np.where(nan, high, q), low, high)
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
    """NaN (an ``IndexError`` on the CPU path before), ±inf and scores outside
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
@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_unchecked_half_scores_signed_zeros_and_subnormals_land_in_the_documented_bins(
    bin_space, from_logits, device_path, dtype
):
    """The half dtypes (their own edges on the device path), ``-0.0`` (on the edge at logit 0 of these bins, as
    ``+0.0``), subnormals of each dtype and a half ``inf``: NumPy's bins of the scores as the dtype holds them."""
    tiny = torch.finfo(dtype).smallest_normal / 4  # a subnormal of the dtype
    extra = [-0.0, 0.0, tiny, -tiny, 1 - tiny, NAN, INF, -INF]
    scores = (LOGITS if from_logits else PROBS) + extra
    labels = np.array([*LABELS, 1, 0, 1, 0, 1, 1, 0, 1])
    preds = torch.tensor(scores, dtype=torch.float64).to(dtype)
    held = preds.to(torch.float64).tolist()  # the values the dtype holds (rounded; -0.0 kept)
    assert math.copysign(1.0, held[len(PROBS)]) == -1.0 and 0 < abs(held[len(PROBS) + 2]) < torch.finfo(dtype).tiny
    bins = _documented_bins(held, bin_space, from_logits)
    opts = {"num_bins": NUM_BINS, "bin_space": bin_space, "from_logits": from_logits, "validate_args": False}
    auc = tmx.AUC(**opts)
    with force_device_path(device_path):
        auc.update(preds, torch.tensor(labels))
    np.testing.assert_array_equal(auc._hist[:, 0].numpy(), _histogram(bins, labels))
    assert auc.compute().item() == pytest.approx(skm.roc_auc_score(labels, bins), rel=1e-12)


@pytest.mark.parametrize(("bin_space", "from_logits"), CASES)
def test_unchecked_value_equals_the_checked_value_of_the_replaced_scores(bin_space, from_logits):
    """The same metric, validated, fed the scores replaced by ones of their documented bins: the same states."""
    preds, target = _inputs(from_logits)
    if from_logits:  # a logit far outside the range is an end bin's; NaN the last
        replaced = torch.nan_to_num(preds, nan=1e6, posinf=1e6, neginf=-1e6)
    else:
        replaced = torch.nan_to_num(preds, nan=1.0).clamp(0.0, 1.0)
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
    the functional twins and curves) places NaN in the last bin: scikit-learn's values of the documented bins."""
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
    """``RecMetricModule`` whose metrics all skip validation: NaN scores of each task in its last bin."""
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


# ----------------------------------------------------------------------------- the other unchecked id and bin paths


def _states(metric: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in metric.metric_state.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("probs", [[0.1, NAN, 0.9, 0.4], [0.1, 1.5, -2.0, 0.4], [INF, -INF, 0.9, 0.4]])
def test_unchecked_reliability_and_hindsight_bins_exist(probs, device_path):
    """Reliability's bins and HindsightTargetPR's threshold counts of unchecked NaN/out-of-range scores stay in
    their histograms: every sample's weight is counted once (a plain count), nothing raises."""
    preds, target = torch.tensor(probs), torch.tensor([0, 1, 1, 0])
    reliability = tmx.Reliability(num_bins=4, validate_args=False)
    hindsight = tmx.HindsightTargetPR(num_thresholds=5, validate_args=False)
    with force_device_path(device_path):
        reliability.update(preds, target)
        hindsight.update(preds, target)
    assert reliability.bin_weight.sum().item() == len(probs)
    assert reliability.bin_target_sum.sum().item() == sum([0, 1, 1, 0])
    assert (hindsight.pos_hist_5.sum() + hindsight.neg_hist_5.sum()).item() == len(probs)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize(
    "settings", [{"num_bins": 4}, {"edges": (0.0, 0.1, 0.5, 1.0)}, {"num_bins": 4, "from_logits": True}]
)
def test_an_unchecked_nan_score_lands_in_reliabilitys_last_bin(settings, device_path):
    """Documented (``Reliability``'s Note, policies.md): an unchecked NaN score goes to the last bin, whose weight
    and label rate count it and whose mean prediction is ``nan`` from then on (until ``reset``); every other bin
    is that of the other rows. The same in the class, the functional twin and a ``Windowed`` window. Reference:
    NumPy's ``digitize`` and weighted sums of the finite rows, written here."""
    from torchmetrics_ext.functional import reliability

    scores = [0.1, NAN, 0.9, 0.3, 0.45, NAN] if not settings.get("from_logits") else [-2.0, NAN, 2.5, -0.4, 0.2, NAN]
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 1.5])
    x = np.array(scores)
    q = 1.0 / (1.0 + np.exp(-x)) if settings.get("from_logits") else x
    edges = np.array(settings.get("edges", np.arange(5) / 4))
    nan = np.isnan(q)
    bins = np.where(nan, len(edges) - 2, np.clip(np.digitize(np.nan_to_num(q), edges[1:-1]), 0, len(edges) - 2))
    count = len(edges) - 1
    weight = np.bincount(bins, weights=w, minlength=count)
    label_rate = np.where(
        weight > 0, np.bincount(bins, weights=w * y, minlength=count) / np.maximum(weight, 1e-300), NAN
    )
    finite_pred = np.bincount(bins[~nan], weights=(w * q)[~nan], minlength=count)
    mean_prediction = np.where(weight > 0, finite_pred / np.maximum(weight, 1e-300), NAN)
    mean_prediction[-1] = NAN  # the NaN rows' bin
    assert weight[-1] > w[nan].sum()  # the last bin holds a finite row too, whose mean the NaN spoils

    args = (torch.tensor(scores, dtype=torch.float64), torch.tensor(y), torch.tensor(w))
    metric = tmx.Reliability(validate_args=False, **settings)
    window = tmx.Windowed(tmx.Reliability(validate_args=False, **settings), window_size=16)
    with force_device_path(device_path):
        metric.update(*args)
        window.update(*args)
    outs = [metric.compute(), reliability(*args, validate_args=False, **settings), window.compute()["window"]]
    for out in outs:
        np.testing.assert_allclose(out["weight"].numpy(), weight, rtol=0, atol=0)
        np.testing.assert_allclose(out["label_rate"].numpy(), label_rate, rtol=1e-15)
        np.testing.assert_allclose(out["mean_prediction"].numpy(), mean_prediction, rtol=1e-15)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_unchecked_negative_and_huge_group_ids_are_just_ids(cls, device_path):
    """Group ids are labels, not indices: negative and 2**40 ids group as any others (scikit-learn per group)."""
    rng = np.random.default_rng(5)
    ids = np.array([-7, 2**40, 3, -1])
    groups = np.repeat(ids, 6)
    y = np.tile([0, 1, 0, 1, 1, 0], 4)
    p = rng.random(groups.size).astype(np.float32)
    score = skm.roc_auc_score if cls is tmx.GroupedAUC else skm.average_precision_score
    expected = np.mean([score(y[groups == g], p[groups == g]) for g in ids])
    metric = cls(validate_args=False)
    with force_device_path(device_path):
        metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(groups))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_unchecked_negative_and_huge_query_ids_are_just_ids(device_path):
    """Ranking ``indexes`` are labels too: the value equals the validated one of the ids relabelled 0..Q-1."""
    preds = torch.tensor([0.1, 0.5, 0.9, 0.4, 0.3, 0.8])
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    odd, plain = torch.tensor([-3, -3, 2**40, 2**40, -1, -1]), torch.tensor([0, 0, 1, 1, 2, 2])
    for make in (lambda va: tmx.NDCG(k=2, validate_args=va), lambda va: tmx.MRR(validate_args=va)):
        unchecked, checked = make(False), make(True)
        with force_device_path(device_path):
            unchecked.update(preds, target, indexes=odd)
        checked.update(preds, target, indexes=plain)
        torch.testing.assert_close(unchecked.compute(), checked.compute(), rtol=0, atol=0)


def test_unchecked_categorical_counts_of_negative_and_huge_ids():
    """``CategoricalCount`` keys by value: negative and huge integer ids are categories (a plain count)."""
    values = [0, -1, 2, 2**40, -1]
    metric = tmx.aggregation.CategoricalCount(validate_args=False)
    metric.update(torch.tensor(values))
    counts = {k: v.item() for k, v in metric.compute().items()}
    assert counts == {k: float(values.count(k)) for k in set(values)}


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("value", [NAN, INF, -INF, -1.0])
def test_unchecked_distribution_of_non_finite_values_raises_nothing(value, device_path):
    """The sketch's bucket of an unchecked NaN/inf/negative value exists: the update and compute run."""
    metric = tmx.aggregation.Distribution(validate_args=False)
    with force_device_path(device_path), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the std of a non-finite sum of squares: nan, with a warning
        metric.update(torch.tensor([1.0, value, 3.0]))
        out = metric.compute()
    assert set(out) >= {"mean", "min", "max"}


@pytest.mark.parametrize("segments", [[0, -1, 1, 1], [0, 3, 1, 1]])
def test_unchecked_segment_ids_outside_the_segments_raise(segments):
    """No segment to put them in (no natural answer): on the CPU a ValueError naming num_segments before anything
    is added (the scatter's bare RuntimeError came after part of the batch was; on CUDA a device-side assert,
    documented). Validated: a ValueError."""
    metric = tmx.Segmented(tmx.CTR(validate_args=False), 3)
    with pytest.raises(ValueError, match=r"`segments` in \[0, 3\) \(num_segments=3\)"):
        metric.update(torch.tensor([0.1, 0.5, 0.9, 0.4]), torch.tensor([0, 1, 1, 0]), segments=torch.tensor(segments))
    assert all(not getattr(metric, name).any() for name in metric._state_keys)  # nothing of the batch added
    checked = tmx.Segmented(tmx.CTR(), 3)
    with pytest.raises(ValueError, match="segment"):
        checked.update(torch.tensor([0.1, 0.5, 0.9, 0.4]), torch.tensor([0, 1, 1, 0]), segments=torch.tensor(segments))


@pytest.mark.parametrize("target", [[0, -1, 2, 1], [0, 3, 2, 1]])
def test_unchecked_multiclass_ids_outside_the_classes_raise_and_change_nothing(target):
    metric = tmx.MulticlassRecallAtK(2, 3, validate_args=False)
    metric.update(torch.rand(2, 3), torch.tensor([0, 2]))
    before = _states(metric)
    with pytest.raises((RuntimeError, IndexError)):
        metric.update(torch.rand(4, 3), torch.tensor(target))
    assert _states(metric).keys() == before.keys()
    for name, value in _states(metric).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


@pytest.mark.parametrize("label", [2, -1])
@pytest.mark.parametrize("num_bins", [None, 100])
def test_unchecked_labels_outside_0_1_raise_and_change_nothing(label, num_bins):
    """Binned and exact: a label with no class raises on the CPU (documented: on CUDA a device-side assert)."""
    metric = tmx.AUC(num_bins=num_bins, validate_args=False)
    metric.update(torch.tensor([0.2, 0.6]), torch.tensor([0, 1]))
    value = metric.compute()
    with pytest.raises(IndexError):
        metric.update(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0, label, 1]))
    torch.testing.assert_close(metric.compute(), value, rtol=0, atol=0)
