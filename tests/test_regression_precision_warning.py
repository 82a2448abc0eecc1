"""R²/NMSE/NRMSE warn at compute when their float64 label sums cancel (labels far from 0 for their spread).

The classes derive the label variance from sum-reducible sums, ``sum w y^2 - (sum w y)^2 / sum w``,
whose relative error is about ``eps * sum w y^2 / sum w (y - mean)^2``. Past 1e-6 a
``PrecisionLossWarning`` names the metric, the digits left and a ``label_offset`` near the weighted
mean. References: scikit-learn's ``r2_score`` and NumPy two-pass formulas on the same float64 data.
The claim checked: where the value disagrees with the reference beyond a few 1e-6, the warning fires;
where it does not fire, the value agrees to that; data of ordinary scale (labels in [0, 1], counts up
to 1e6) never warns. ``TMX_PRECISION_SEEDS`` sets how many seeds the random property runs (default 4).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

import torchmetrics_ext as tmx
from torchmetrics_ext import Segmented, Windowed
from torchmetrics_ext.utilities.warnings import PrecisionLossWarning

SEEDS = int(os.environ.get("TMX_PRECISION_SEEDS", "4"))
# the estimate is an order of magnitude: measured errors lie between about 0.003x and 3.8x of it
# (440 seeded cases of this file's data), so "beyond ~1e-6" is checked with a factor 5 of margin
FACTOR = 5
AGREES = FACTOR * 1e-6


def _data(offset: float, spread: float, seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = offset + spread * rng.standard_normal(n)
    p = y + 0.5 * spread * rng.standard_normal(n)
    w = rng.uniform(0.0, 2.0, n)
    return p, y, w


def _feed(metric: Any, p: np.ndarray, y: np.ndarray, w: np.ndarray, batch: int = 700) -> list[Any]:
    """Update in batches, then compute; returns the value and the precision warnings of compute."""
    for lo in range(0, len(y), batch):
        metric.update(*(torch.tensor(a[lo : lo + batch]) for a in (p, y, w)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # nan past ~2e-4: not this test's claim
        value = metric.compute()
    return [value, [c for c in caught if c.category is PrecisionLossWarning]]


def _ratio_ref(kind: str, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """The ratio whose relative error the warning speaks of: 1 - R² (scikit-learn) or NMSE (two passes)."""
    sse = np.sum(w * (p - y) ** 2)
    if kind == "r2":
        return 1.0 - r2_score(y, p, sample_weight=w)
    if kind == "nmse_one":
        return sse / np.sum(w * (y - 1.0) ** 2)
    return sse / np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2)


def _metric(kind: str, **kwargs: Any) -> Any:
    if kind == "r2":
        return tmx.WeightedR2(**kwargs)
    return tmx.WeightedNMSE(baseline="one" if kind == "nmse_one" else "mean", **kwargs)


def _as_ratio(kind: str, value: torch.Tensor) -> float:
    return 1.0 - value.item() if kind == "r2" else value.item()


# (kind, label offset, spread): the mean-baseline metrics lose digits for a large common offset,
# TorchRec's baseline 1 for labels close to 1
GRID = [("r2", o, 1.0) for o in (0.0, 1e2, 1e3, 1e4, 3e4, 1e5, 3e5, 1e6)]
GRID += [("nmse_mean", o, 10.0) for o in (1e4, 1e5, 1e6, 3e6)]
GRID += [("nmse_one", 1.0, s) for s in (1e-2, 1e-3, 1e-4, 1e-5, 3e-6)]


@pytest.mark.parametrize(("kind", "offset", "spread"), GRID)
def test_the_warning_fires_where_the_value_disagrees_with_the_reference(
    kind: str, offset: float, spread: float
) -> None:
    for seed in range(SEEDS):
        p, y, w = _data(offset, spread, seed)
        value, caught = _feed(_metric(kind), p, y, w)
        if np.isnan(value.item()):
            continue  # past ~2e-4 the value is nan, warned for as undefined (tested elsewhere)
        ref = _ratio_ref(kind, p, y, w)
        error = abs(_as_ratio(kind, value) - ref) / ref
        if error > AGREES:
            assert len(caught) == 1, (seed, error)
        if not caught:
            assert error <= AGREES, (seed, error)
        if caught:
            # the digits said are those left, within the estimate's factor (a lucky case keeps more)
            said = float(re.search(r"relative error up to about (\S+) ", str(caught[0].message)).group(1))
            assert error <= FACTOR * said


def test_it_fires_exactly_at_the_scales_where_the_reference_disagrees_beyond_1e_6() -> None:
    """Over three seeds per scale, warned scales are those where some seed disagrees beyond 1e-6."""
    warned, disagrees = [], []
    for offset in (1e2, 1e3, 1e4, 3e4, 1e5, 3e5, 1e6):
        errors, fired = [], []
        for seed in range(3):
            p, y, w = _data(offset, 1.0, seed)
            value, caught = _feed(tmx.WeightedR2(), p, y, w)
            ref = 1.0 - r2_score(y, p, sample_weight=w)
            errors.append(abs(1.0 - value.item() - ref) / ref)
            fired.append(bool(caught))
        assert len(set(fired)) == 1  # one scale, one answer
        warned.append(fired[0])
        disagrees.append(max(errors) > 1e-6)
    assert warned == disagrees == [False, False, False, False, True, True, True]


@pytest.mark.parametrize("seed", range(3))
def test_ordinary_labels_never_warn_and_agree_with_scikit_learn(seed: int) -> None:
    """Labels in [0, 1] (clicks, ratings scaled) and counts up to 1e6 (views, watch seconds)."""
    rng = np.random.default_rng(seed)
    n = 20000
    cases = {
        "binary": (rng.uniform(size=n), (rng.uniform(size=n) < 0.1).astype(float)),
        "unit": (rng.uniform(size=n), rng.uniform(size=n)),
        "counts": (lambda y: (y * rng.uniform(0.5, 1.5, n), y))(np.floor(10 ** rng.uniform(0, 6, n))),
        "large counts": (lambda y: (y + rng.normal(0, 1e4, n), y))(rng.integers(900_000, 1_000_001, n).astype(float)),
    }
    for name, (p, y) in cases.items():
        w = rng.uniform(0, 3, n)
        for kind in ("r2", "nmse_mean", "nmse_one"):
            value, caught = _feed(_metric(kind), p, y, w, batch=1024)
            assert not caught, (name, kind, str(caught[0].message))
            ref = _ratio_ref(kind, p, y, w)
            assert abs(_as_ratio(kind, value) - ref) <= 1e-9 * ref, (name, kind)


def test_the_message_says_the_digits_left_and_an_offset_that_keeps_them() -> None:
    p, y, w = _data(3e5, 1.0, 0)
    value, caught = _feed(tmx.WeightedR2(), p, y, w)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("WeightedR2 lost precision")
    assert caught[0].filename == __file__  # the user's compute line (see user_stacklevel)
    ref = 1.0 - r2_score(y, p, sample_weight=w)
    error = abs(1.0 - value.item() - ref) / ref
    digits = int(re.search(r"about (\d+) significant digits left", message).group(1))
    assert error <= FACTOR * 10.0**-digits
    offset = float(re.search(r"label_offset=(\S+) ", message).group(1))
    mean = np.sum(w * y) / np.sum(w)
    assert abs(offset - mean) <= 5.0  # rounded to the power of ten above the spread (1.0)
    value, caught = _feed(tmx.WeightedR2(label_offset=offset), p, y, w)
    assert not caught
    assert abs(1.0 - value.item() - ref) <= 1e-12 * ref


def test_an_offset_far_from_the_mean_still_warns_and_names_the_mean() -> None:
    """Sums about a shift ``c`` lose digits as ``(mean - c) / spread`` grows: the check reads the shifted sums."""
    p, y, w = _data(1e6, 1.0, 1)
    _, caught = _feed(tmx.WeightedR2(label_offset=1e6 - 3e5), p, y, w)
    assert len(caught) == 1
    offset = float(re.search(r"label_offset=(\S+) ", str(caught[0].message)).group(1))
    assert abs(offset - np.sum(w * y) / np.sum(w)) <= 5.0
    _, caught = _feed(tmx.WeightedR2(label_offset=1e6 - 30.0), p, y, w)
    assert not caught


def test_one_warning_for_several_tasks_naming_only_those_that_lost_digits() -> None:
    rng = np.random.default_rng(5)
    offsets = np.array([0.0, 1e5, 3.0, 4e5, 1e2])[:, None]
    y = offsets + rng.standard_normal((5, 4000))
    p = y + 0.3 * rng.standard_normal((5, 4000))
    metric = tmx.WeightedR2(num_tasks=5)
    value, caught = _feed(metric, p, y, np.ones_like(y))
    assert len(caught) == 1
    assert "WeightedR2 for task(s) [1, 3] lost precision" in str(caught[0].message)
    refs = [r2_score(y[t], p[t]) for t in range(5)]
    np.testing.assert_allclose(value.numpy()[[0, 2, 4]], np.array(refs)[[0, 2, 4]], rtol=1e-12)


def test_windowed_warns_once_per_value_and_never_for_ordinary_labels() -> None:
    p, y, w = _data(3e5, 1.0, 2, n=4000)
    value, caught = _feed(Windowed(tmx.WeightedR2(), 2000), p, y, w, batch=500)
    assert [str(c.message).split(" lost")[0] for c in caught] == ["WeightedR2", "WeightedR2 (window)"]
    p, y, w = _data(0.5, 1.0, 2, n=4000)
    value, caught = _feed(Windowed(tmx.WeightedR2(), 2000), p, y, w, batch=500)
    assert not caught
    ref = 1 - r2_score(y[2000:], p[2000:], sample_weight=w[2000:])
    assert abs(1 - value["window"].item() - ref) <= 1e-10 * ref


def _segmented_feed(metric: Segmented, y: np.ndarray, p: np.ndarray, segments: np.ndarray) -> list[Any]:
    for lo in range(0, y.shape[-1], 1000):
        part = slice(lo, lo + 1000)
        metric.update(torch.tensor(p[..., part]), torch.tensor(y[..., part]), segments=torch.tensor(segments[part]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    return [value, [c for c in caught if c.category is PrecisionLossWarning]]


def test_segmented_gives_one_warning_listing_segments_not_one_per_segment() -> None:
    rng = np.random.default_rng(3)
    n, segments = 6000, 40
    seg = rng.integers(0, segments, n)
    offsets = np.where(seg % 3 == 0, 2e5, 1.0)  # every third segment far from 0 for its spread
    y = np.stack([offsets + rng.standard_normal(n), rng.uniform(size=n)])
    p = y + 0.3 * rng.standard_normal((2, n))
    value, caught = _segmented_feed(Segmented(tmx.WeightedR2(num_tasks=2), num_segments=segments), y, p, seg)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "for (task, segment) [(0, 0), (0, 3), (0, 6)" in message and "(14 in all)" in message
    for s in (1, 2, 4):  # the others agree with scikit-learn
        rows = seg == s
        assert abs(value[0, s].item() - r2_score(y[0, rows], p[0, rows])) <= 1e-10
    # ordinary labels in every segment: no warning
    _, caught = _segmented_feed(
        Segmented(tmx.WeightedR2(num_tasks=2), num_segments=segments), y[[1, 1]], p[[1, 1]], seg
    )
    assert not caught


def test_the_module_names_its_key_and_the_task() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    data = {
        "watch_label": torch.tensor(1e5 + rng.standard_normal(n)),
        "click_label": torch.tensor(rng.uniform(size=n)),
    }
    data["watch_pred"] = data["watch_label"] + 0.3
    data["click_pred"] = data["click_label"] + 0.1
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", weight_name=None) for t in ("watch", "click")]
    module = tmx.RecMetricModule(tasks, {"r2": "r_squared", "mse": "mse", "nmse": "nmse"}, throughput=False)
    for lo in range(0, n, 500):
        module.update({k: v[lo : lo + 500] for k, v in data.items()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = module.compute()
    lost = [str(c.message) for c in caught if c.category is PrecisionLossWarning]
    assert len(lost) == 1 and lost[0].startswith("r2 for task(s) ['watch'] lost precision")  # NMSE about 1: fine
    y, p = data["click_label"].numpy(), data["click_pred"].numpy()
    assert abs(values["r2/click"].item() - r2_score(y, p)) <= 1e-12


def test_forward_warns_for_its_batch_only_when_the_batch_lost_digits() -> None:
    p, y, w = _data(0.0, 1.0, 0, n=500)
    metric = tmx.WeightedR2()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionLossWarning)
        batch_value = metric(*(torch.tensor(a) for a in (p, y, w)))
    assert abs(1 - batch_value.item() - (1 - r2_score(y, p, sample_weight=w))) <= 1e-12
    p, y, w = _data(2e5, 1.0, 0, n=5000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for lo in range(0, 5000, 500):  # ten steps of one stream: one text, shown once by Python's default filter
            metric(*(torch.tensor(a[lo : lo + 500]) for a in (p, y, w)))
    texts = {str(c.message) for c in caught if c.category is PrecisionLossWarning}
    assert (
        len(caught) == 10 and len(texts) == 1 and "label_offset=200000 " in texts.pop()
    )  # the mean to the spread's power of ten above


def test_the_functions_sum_about_the_mean_and_never_warn() -> None:
    p, y, w = _data(1e7, 1.0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionLossWarning)
        value = tmx.functional.weighted_r2(*(torch.tensor(a) for a in (p, y, w)))
    assert abs(value.item() - r2_score(y, p, sample_weight=w)) <= 1e-9
