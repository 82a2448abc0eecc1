"""The paired bootstrap of a difference between two models (docs/getting_started.md, "TorchMetrics wrappers").

One Poisson(1) count per row and bootstrap, shared by both models, multiplies the row's weight: every bootstrap
value must be the metric of the rows weighted ``count * weight`` (scikit-learn's ``sample_weight``, numpy
formulas), and the interval of ``A - B`` must match a numpy bootstrap that resamples row indices (the same
scheme as TorchMetrics' ``BootStrapper``) in distribution. ``TMX_PAIRED_BOOTSTRAP_SEEDS`` runs more seeds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

import torchmetrics_ext as tmx

SEEDS = range(int(os.environ.get("TMX_PAIRED_BOOTSTRAP_SEEDS", "2")))


def _two_models(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(z - 1.0)))).astype(np.int64)
    score_a = 1 / (1 + np.exp(-(z - 1.0 + rng.normal(0, 0.5, n))))
    score_b = 1 / (1 + np.exp(-(z - 1.0 + rng.normal(0, 0.9, n))))  # correlated with A, noisier
    weight = rng.choice([0.5, 1.0, 2.0], n)
    return label, score_a, score_b, weight


def _paired(
    metric: tmx.metrics.base.TaskMetric, boots: int, counts: torch.Tensor, *columns: np.ndarray
) -> torch.Tensor:
    label, score_a, score_b, weight = (torch.from_numpy(c) for c in columns)
    n = label.numel()
    metric.update(
        torch.cat([score_a.expand(boots, n), score_b.expand(boots, n)]),
        label.expand(2 * boots, n),
        weights=(counts * weight).repeat(2, 1),
    )
    return metric.compute().view(2, boots)


def _ne(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    rate = np.average(y, weights=w)
    return log_loss(y, p, sample_weight=w, labels=[0, 1]) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("make", "reference"),
    [
        (lambda t: tmx.AUC(num_tasks=t), lambda y, p, w: roc_auc_score(y, p, sample_weight=w)),
        (lambda t: tmx.NormalizedEntropy(num_tasks=t), _ne),
        (lambda t: tmx.Calibration(num_tasks=t), lambda y, p, w: np.sum(w * p) / np.sum(w * y)),
    ],
    ids=["auc", "ne", "calibration"],
)
def test_each_paired_bootstrap_is_the_metric_of_its_count_weighted_rows(seed, make, reference):
    label, score_a, score_b, weight = _two_models(seed, 400)
    boots = 8
    counts = torch.poisson(
        torch.ones(boots, label.size, dtype=torch.float64), generator=torch.Generator().manual_seed(seed)
    )
    values = _paired(make(2 * boots), boots, counts, label, score_a, score_b, weight)
    for k in range(boots):
        w = counts[k].numpy() * weight
        assert values[0, k].item() == pytest.approx(reference(label, score_a, w), rel=1e-9, abs=1e-12)
        assert values[1, k].item() == pytest.approx(reference(label, score_b, w), rel=1e-9, abs=1e-12)


def test_two_batches_with_their_own_counts_equal_one_update_of_all_rows():
    label, score_a, score_b, weight = _two_models(7, 600)
    boots = 6
    counts = torch.poisson(torch.ones(boots, 600, dtype=torch.float64), generator=torch.Generator().manual_seed(7))
    whole = _paired(tmx.AUC(num_tasks=2 * boots), boots, counts, label, score_a, score_b, weight)
    metric = tmx.AUC(num_tasks=2 * boots)
    for rows in (slice(0, 250), slice(250, 600)):
        n = rows.stop - rows.start
        cols = [torch.from_numpy(c[rows]) for c in (label, score_a, score_b, weight)]
        metric.update(
            torch.cat([cols[1].expand(boots, n), cols[2].expand(boots, n)]),
            cols[0].expand(2 * boots, n),
            weights=(counts[:, rows] * cols[3]).repeat(2, 1),
        )
    torch.testing.assert_close(metric.compute().view(2, boots), whole)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_interval_of_the_difference_matches_a_row_resampling_bootstrap(seed):
    label, score_a, score_b, weight = _two_models(100 + seed, 1000)
    boots = 200
    gen = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.ones(boots, label.size, dtype=torch.float64), generator=gen)
    auc_a, auc_b = _paired(tmx.AUC(num_tasks=2 * boots), boots, counts, label, score_a, score_b, weight)
    diff = (auc_a - auc_b).numpy()

    rng = np.random.default_rng(seed)  # the reference: resample row indices, both models on the same rows
    ref = np.empty(boots)
    for k in range(boots):
        idx = rng.integers(0, label.size, label.size)
        ref[k] = roc_auc_score(label[idx], score_a[idx], sample_weight=weight[idx]) - roc_auc_score(
            label[idx], score_b[idx], sample_weight=weight[idx]
        )
    full = roc_auc_score(label, score_a, sample_weight=weight) - roc_auc_score(label, score_b, sample_weight=weight)
    # bootstrap means sit at the full-data difference, within a few standard errors of the mean
    assert abs(diff.mean() - full) < 4 * ref.std() / np.sqrt(boots) + 2e-3
    assert abs(ref.mean() - full) < 4 * ref.std() / np.sqrt(boots) + 2e-3
    assert diff.std() == pytest.approx(ref.std(), rel=0.2)
    # pairing matters: the independent bootstraps' spread of the difference is much wider
    unpaired = np.sqrt(auc_a.numpy().var() + auc_b.numpy().var())
    assert diff.std() < 0.8 * unpaired


def test_per_segment_paired_bootstraps_through_segmented():
    label, score_a, score_b, weight = _two_models(3, 900)
    segment = np.random.default_rng(3).integers(0, 3, label.size)
    boots = 5
    counts = torch.poisson(
        torch.ones(boots, label.size, dtype=torch.float64), generator=torch.Generator().manual_seed(3)
    )
    metric = tmx.Segmented(tmx.NormalizedEntropy(num_tasks=2 * boots), num_segments=3)
    n = label.size
    metric.update(
        torch.cat([torch.from_numpy(score_a).expand(boots, n), torch.from_numpy(score_b).expand(boots, n)]),
        torch.from_numpy(label).expand(2 * boots, n),
        weights=(counts * torch.from_numpy(weight)).repeat(2, 1),
        segments=torch.from_numpy(segment),
    )
    values = metric.compute()
    assert values.shape == (2 * boots, 3)
    for k in range(boots):
        w = counts[k].numpy() * weight
        for s in range(3):
            rows = segment == s
            assert values[k, s].item() == pytest.approx(_ne(label[rows], score_a[rows], w[rows]), rel=1e-9)
            assert values[boots + k, s].item() == pytest.approx(_ne(label[rows], score_b[rows], w[rows]), rel=1e-9)
