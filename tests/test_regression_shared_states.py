"""MSE, RMSE, MAE, R², NMSE, NRMSE share one set of sums exactly where they hold the same ones.

``shared_statistics_key`` (RecMetricModule's explicit compute groups) and TorchMetrics' own
``MetricCollection(compute_groups=True)`` must put the family in one group when the label sums are
about the same point, and never across different ``label_offset`` values or ``from_logits``. The
key is derived from the kernel, the state names and the options; a subclass with another kernel
is not grouped with the family. Values are checked against NumPy formulas and scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import Tensor
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx


def _data(seed: int = 0, n: int = 900, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = offset + rng.normal(2.0, 1.5, n)
    return y + rng.normal(0, 0.7, n), y, rng.uniform(0.2, 2.0, n)


def _refs(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    sse = np.sum(w * (p - y) ** 2)
    mean = np.sum(w * y) / np.sum(w)
    return {
        "mse": mean_squared_error(y, p, sample_weight=w),
        "rmse": np.sqrt(mean_squared_error(y, p, sample_weight=w)),
        "mae": mean_absolute_error(y, p, sample_weight=w),
        "r2": r2_score(y, p, sample_weight=w),
        "nmse": sse / np.sum(w * (y - 1.0) ** 2),
        "nrmse_mean": np.sqrt(sse / np.sum(w * (y - mean) ** 2)),
    }


def _family(offset: float = 0.0) -> dict[str, tmx.TaskMetric]:
    return {
        "mse": tmx.WeightedMSE(),
        "rmse": tmx.WeightedRMSE(),
        "mae": tmx.WeightedMAE(),
        "r2": tmx.WeightedR2(label_offset=offset),
        "nmse": tmx.WeightedNMSE(label_offset=offset),
        "nrmse_mean": tmx.WeightedNRMSE(baseline="mean", label_offset=offset),
    }


def _run(collection: MetricCollection, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, Tensor]:
    for lo in range(0, len(y), 250):
        collection.update(*(torch.tensor(a[lo : lo + 250]) for a in (p, y, w)))
    return collection.compute()


def _groups(collection: MetricCollection) -> list[set[str]]:
    return sorted((set(g) for g in collection.compute_groups.values()), key=lambda g: sorted(g))


def test_the_whole_family_is_one_group_without_an_offset() -> None:
    p, y, w = _data()
    collection = MetricCollection(_family(), compute_groups=True)
    values = _run(collection, p, y, w)
    assert _groups(collection) == [set(_family())]
    for name, ref in _refs(p, y, w).items():
        assert values[name].item() == pytest.approx(ref, rel=1e-12), name


def test_an_offset_splits_the_label_moments_from_mse_and_keeps_each_group_right() -> None:
    p, y, w = _data(1, offset=1e4)
    metrics = {**_family(), **{f"{k}_off": m for k, m in _family(1e4).items() if k in ("r2", "nmse", "nrmse_mean")}}
    collection = MetricCollection(metrics, compute_groups=True)
    values = _run(collection, p, y, w)
    assert _groups(collection) == [set(_family()), {"nmse_off", "nrmse_mean_off", "r2_off"}]
    refs = _refs(p, y, w)
    for name in ("r2", "nmse", "nrmse_mean"):
        assert values[f"{name}_off"].item() == pytest.approx(refs[name], rel=1e-10), name
    for name in ("mse", "rmse", "mae", "nmse"):  # NMSE about 1 is far from the labels: no digit lost either way
        assert values[name].item() == pytest.approx(refs[name], rel=1e-10), name


def test_two_offsets_never_share_states() -> None:
    p, y, w = _data(2, offset=1e6)
    metrics = {
        "r2_a": tmx.WeightedR2(label_offset=1e6),
        "nmse_a": tmx.WeightedNMSE(baseline="mean", label_offset=1e6),
        "r2_b": tmx.WeightedR2(label_offset=1e6 + 0.5),
        "r2_c": tmx.WeightedR2(label_offset=1e6 + 2.0**-20),  # one unit in the last place of a tag's 6 digits
    }
    collection = MetricCollection(metrics, compute_groups=True)
    values = _run(collection, p, y, w)
    assert _groups(collection) == [{"nmse_a", "r2_a"}, {"r2_b"}, {"r2_c"}]
    ref = r2_score(y, p, sample_weight=w)
    for name in ("r2_a", "r2_b", "r2_c"):
        assert values[name].item() == pytest.approx(ref, rel=1e-10), name
    keys = {name: m.shared_statistics_key for name, m in metrics.items()}
    assert keys["r2_a"] == keys["nmse_a"]
    assert len({keys["r2_a"], keys["r2_b"], keys["r2_c"]}) == 3


def test_the_keys_follow_the_states_and_options() -> None:
    family = _family()
    assert len({m.shared_statistics_key for m in family.values()}) == 1
    plain = family["mse"].shared_statistics_key
    assert tmx.WeightedR2(label_offset=0.0).shared_statistics_key == plain  # the default is no offset
    assert tmx.WeightedR2(label_offset=-0.0).shared_statistics_key == plain
    assert tmx.WeightedR2(label_offset=3.0).shared_statistics_key != plain
    assert (
        tmx.WeightedR2(from_logits=True).shared_statistics_key
        == tmx.WeightedMSE(from_logits=True).shared_statistics_key
    )
    assert tmx.WeightedR2(from_logits=True).shared_statistics_key != plain
    assert tmx.WeightedR2(num_tasks=2).shared_statistics_key != plain
    assert tmx.WeightedR2(num_tasks=2).shared_statistics_key == tmx.WeightedMAE(num_tasks=2).shared_statistics_key


class _ClippedLabelR2(tmx.WeightedR2):
    """A user's R² with its own kernel (labels clipped to [0, 3]): its sums are not MSE's."""

    def _batch_stats(self, preds: Tensor, target: Tensor | None, weights: Tensor | None) -> tuple[Tensor, ...]:
        assert target is not None
        return super()._batch_stats(preds, target.clamp(0, 3), weights)


class _NamedR2(tmx.WeightedR2):
    """A user's subclass that changes nothing of the sums (a name for dashboards)."""


def test_a_subclass_with_its_own_kernel_is_not_grouped_with_the_family() -> None:
    """The former key swapped MSE's class name in for any R² subclass: a changed kernel shared MSE's group."""
    p, y, w = _data(3)
    assert _ClippedLabelR2().shared_statistics_key != tmx.WeightedMSE().shared_statistics_key
    assert _NamedR2().shared_statistics_key == tmx.WeightedMSE().shared_statistics_key
    tasks = [tmx.RecTaskInfo("t", "y", "p", weight_name="w")]
    metrics = {"mse": "mse", "r2": tmx.WeightedR2, "clipped": _ClippedLabelR2, "named": _NamedR2}
    module = tmx.RecMetricModule(tasks, metrics, throughput=False)
    assert sorted(map(sorted, module.compute_groups)) == [["clipped"], ["mse", "named", "r2"]]
    for lo in range(0, len(y), 300):
        module.update(
            {
                "p": torch.tensor(p[lo : lo + 300]),
                "y": torch.tensor(y[lo : lo + 300]),
                "w": torch.tensor(w[lo : lo + 300]),
            }
        )
    values = module.compute()
    assert values["clipped/t"].item() == pytest.approx(r2_score(np.clip(y, 0, 3), p, sample_weight=w), rel=1e-10)
    assert values["named/t"].item() == pytest.approx(r2_score(y, p, sample_weight=w), rel=1e-10)


def test_the_module_groups_by_offset() -> None:
    tasks = [tmx.RecTaskInfo("t", "y", "p", weight_name=None)]
    metrics = {
        "mse": "mse",
        "r2": "r_squared",
        "nmse": "nmse",
        "r2_off": lambda num_tasks: tmx.WeightedR2(num_tasks, label_offset=100.0),
        "nrmse_off": lambda num_tasks: tmx.WeightedNRMSE(num_tasks, baseline="mean", label_offset=100.0),
        "r2_other": lambda num_tasks: tmx.WeightedR2(num_tasks, label_offset=200.0),
    }
    module = tmx.RecMetricModule(tasks, metrics, throughput=False)
    assert sorted(map(sorted, module.compute_groups)) == [["mse", "nmse", "r2"], ["nrmse_off", "r2_off"], ["r2_other"]]
