"""TorchRec's metrics after 1.9.2, their formulas ported to numpy here, against ours.

Each ``_tr_*`` function is written for this test from reading TorchRec's newer metric files
(``torchrec/metrics/{session_pairwise_auc,uauc,variance}.py`` of meta-pytorch/torchrec, files that
1.9.2 does not have; ``ne_with_recalibration``, ``calibration_with_recalibration``,
``num_missing_labels``, ``ne_positive`` and ``unweighted_ne`` keep 1.9.2's formulas and are ported in
``tests/test_torchrec_formula_ports.py``). Nothing here calls the package's kernels: the references
are the ports, scikit-learn and plain numpy. docs/migration_torchrec.md ("TorchRec after 1.9.2") says
which of our metrics gives each value and why the others differ; each difference it lists that one
process can show has a test below (not the DDP and window remarks on ``variance``, nor the 1e-10 in
``uauc``'s denominators).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import Distribution
from torchmetrics_ext.registry import lookup

# seeds of the randomised comparisons; TMX_TRNEW_SEEDS=50 runs more
SEEDS = range(int(os.environ.get("TMX_TRNEW_SEEDS", "3")))


def _quiet_compute(metric: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return metric.compute()


# ----------------------------------------------------------------------------- session_pairwise_auc


def _tr_session_pairwise_states(
    p: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    sessions: np.ndarray,
    *,
    weight_pairs: bool = True,
    remove_zero_weight_from_pair: bool = True,
    rank_order_label: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One batch, ``(T, N)`` inputs: (correct pair weight, total pair weight) per task.

    Pairs: same session, ``i < j``, labels apart by at least 1e-6, both weights non-zero (unless
    ``remove_zero_weight_from_pair=False``); pair weight ``w_i + w_j`` or 1; concordant 1, a
    prediction tie 1/2. Inputs are float32 as TorchRec casts them, sums float64.
    """
    p, y, w = (np.asarray(a, dtype=np.float32) for a in (p, y, w))
    upper = np.triu(np.ones((p.shape[-1],) * 2, dtype=bool), 1)
    valid = (sessions[:, None] == sessions[None, :]) & upper
    dy = y[:, :, None] - y[:, None, :]
    dy = -dy if rank_order_label else dy
    dp = p[:, :, None] - p[:, None, :]
    valid = valid[None] & (np.abs(dy) >= 1e-6)
    if remove_zero_weight_from_pair:
        valid &= (w[:, :, None] * w[:, None, :]) > 0
    pair_w = (w[:, :, None] + w[:, None, :]) if weight_pairs else np.ones_like(dy)
    pair_w = np.where(valid, pair_w, 0).astype(np.float64)
    concordance = (dp * dy > 0) + 0.5 * (dp == 0)
    return (concordance * pair_w).sum((1, 2)), pair_w.sum((1, 2))


def _tr_pairwise_auc(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.where(total > 0, correct / total, 0.5)


def _session_batch(rng: np.random.Generator, n: int, num_sessions: int, tasks: int = 2):
    sessions = rng.integers(0, num_sessions, n)
    y = rng.choice([0.0, 1.0, 1.0, 2.0, 3.5], (tasks, n))  # graded, many label ties
    p = rng.choice(np.round(np.linspace(0.05, 0.95, 12), 2), (tasks, n))  # many score ties
    return sessions, y, p


@pytest.mark.parametrize("rank_order_label", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_session_pairwise_auc_of_one_session_in_one_batch_is_regression_auc_unweighted(seed, rank_order_label):
    """One session, one batch, no weights: TorchRec's within-session pairs are all pairs, as ours.

    ``rank_order_label=True`` (a lower label ranks higher) is ours on ``-target``.
    """
    rng = np.random.default_rng([101, seed])
    sessions, y, p = _session_batch(rng, 40, 1)
    ones = np.ones_like(p)
    theirs = _tr_pairwise_auc(*_tr_session_pairwise_states(p, y, ones, sessions, rank_order_label=rank_order_label))
    metric = tmx.RegressionAUC(2)
    metric.update(torch.tensor(p), torch.tensor(-y if rank_order_label else y))
    np.testing.assert_allclose(metric.compute().numpy(), theirs, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_session_pairwise_auc_unit_pair_weights_are_regression_auc_of_the_nonzero_indicator(seed):
    """``weight_pairs=False`` (or 0/1 weights): every pair of non-zero rows counts 1, ours with ``w > 0``."""
    rng = np.random.default_rng([102, seed])
    sessions, y, p = _session_batch(rng, 48, 1)
    w = rng.choice([0.0, 0.5, 1.0, 3.0], p.shape)
    theirs = _tr_pairwise_auc(*_tr_session_pairwise_states(p, y, w, sessions, weight_pairs=False))
    metric = tmx.RegressionAUC(2)
    metric.update(torch.tensor(p), torch.tensor(y), torch.tensor((w > 0).astype(np.float64)))
    np.testing.assert_allclose(metric.compute().numpy(), theirs, rtol=1e-12)
    # the default additive pair weight w_i + w_j is not ours (w_i * w_j): documented, no option
    additive = _tr_pairwise_auc(*_tr_session_pairwise_states(p, y, w, sessions))
    weighted = tmx.RegressionAUC(2)
    weighted.update(torch.tensor(p), torch.tensor(y), torch.tensor(w))
    assert np.abs(weighted.compute().numpy() - additive).max() > 1e-3


def test_session_pairwise_auc_pools_pairs_over_sessions_as_session_pairwise_auc_does():
    """Binary labels, unit weights: the pair-weighted mean of per-session AUCs (reference: scikit-learn).

    SessionPairwiseAUC computes it; GroupedAUC averages sessions with weight 1 (or their total row
    weight), RegressionAUC pairs rows across sessions too: neither is this value.
    """
    rng = np.random.default_rng(103)
    sessions = np.repeat(np.arange(6), [3, 5, 8, 12, 4, 20])
    y = (rng.random((1, sessions.size)) < 0.4).astype(np.float64)
    y[0, sessions == 0] = 0.0  # a session of one class: no pair
    p = rng.permutation(sessions.size)[None, :] / sessions.size + 0.01
    theirs = _tr_pairwise_auc(*_tr_session_pairwise_states(p, y, np.ones_like(p), sessions))[0]
    pairs = {s: y[0, sessions == s].sum() * (1 - y[0, sessions == s]).sum() for s in np.unique(sessions)}
    both = [s for s in pairs if pairs[s] > 0]
    expected = sum(roc_auc_score(y[0, sessions == s], p[0, sessions == s]) * pairs[s] for s in both)
    assert theirs == pytest.approx(expected / sum(pairs[s] for s in both), rel=1e-12)
    gauc = tmx.GroupedAUC(groups_complete_per_batch=True)
    gauc.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(sessions))
    rauc = tmx.RegressionAUC()
    rauc.update(torch.tensor(p[0]), torch.tensor(y[0]))
    assert abs(gauc.compute().item() - theirs) > 1e-3 and abs(rauc.compute().item() - theirs) > 1e-3
    ours = tmx.SessionPairwiseAUC()
    ours.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(sessions))
    assert ours.compute().item() == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_session_pairwise_auc_is_torchrecs_on_float32_inputs(seed):
    """Several sessions and batches, graded labels, weights with zeros, both options: ours equals the port."""
    rng = np.random.default_rng([104, seed])
    for weight_pairs in (True, False):
        for rank_order_label in (False, True):
            metric = tmx.SessionPairwiseAUC(2, weight_pairs=weight_pairs, rank_order_label=rank_order_label)
            correct, total = np.zeros(2), np.zeros(2)
            for _ in range(3):
                sessions, y, p = _session_batch(rng, 60, 7)
                p = p.astype(np.float32)
                w = rng.choice([0.0, 0.5, 1.0, 3.0], p.shape).astype(np.float32)
                c, t = _tr_session_pairwise_states(
                    p, y, w, sessions, weight_pairs=weight_pairs, rank_order_label=rank_order_label
                )
                correct, total = correct + c, total + t
                metric.update(
                    torch.tensor(p), torch.tensor(y, dtype=torch.float32), torch.tensor(sessions), torch.tensor(w)
                )
            np.testing.assert_allclose(metric.compute().numpy(), _tr_pairwise_auc(correct, total), rtol=1e-12)


def test_session_pairwise_auc_without_a_pair_is_half_there_and_undefined_here():
    sessions, p = np.array([0, 1]), np.array([[0.2, 0.9]])
    y = np.array([[0.0, 1.0]])  # two sessions of one row: no pair within a session
    assert _tr_pairwise_auc(*_tr_session_pairwise_states(p, y, np.ones_like(p), sessions))[0] == 0.5
    metric = tmx.SessionPairwiseAUC()
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(sessions))
    assert np.isnan(_quiet_compute(metric).item())


def test_session_pairwise_auc_takes_labels_closer_than_1e_6_as_equal_where_regression_auc_pairs_them():
    p, y, sessions = np.array([[0.2, 0.9]]), np.array([[0.5, 0.5000001]]), np.zeros(2, dtype=np.int64)
    assert _tr_session_pairwise_states(p, y, np.ones_like(p), sessions)[1][0] == 0.0  # no pair: 0.5 reported
    metric = tmx.RegressionAUC()
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]))
    assert metric.compute().item() == 1.0
    ours = tmx.SessionPairwiseAUC()
    ours.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(sessions))
    assert np.isnan(_quiet_compute(ours).item())  # no pair, as TorchRec (which reports 0.5)


# ----------------------------------------------------------------------------- uauc


def _tr_uauc_states(p: np.ndarray, y: np.ndarray, w: np.ndarray, users: np.ndarray) -> dict[str, np.ndarray]:
    """One batch, ``(T, N)`` inputs: TorchRec's four per-task sums (users of this batch only).

    A (task, user) group counts when it has positive and negative weight, two rows or more and
    scores that are not all equal (a group holding a 0 score never is: its min/max are NaN). Rows are
    ordered by the float64 key ``group * 1e12 + score`` (stable), and each positive is credited the
    negative weight at or before it in that order, over ``w_pos * w_neg + 1e-10``.
    """
    num_tasks = p.shape[0]
    _, user = np.unique(users, return_inverse=True)
    num_users = int(user.max()) + 1
    group = (np.arange(num_tasks)[:, None] * num_users + user[None, :]).reshape(-1)
    num_groups = num_tasks * num_users
    flat_p = p.astype(np.float32).astype(np.float64).reshape(-1)  # the model's float32 scores
    flat_y, flat_w = y.reshape(-1).astype(np.float64), w.reshape(-1).astype(np.float64)
    w_pos = np.bincount(group, flat_w * flat_y, num_groups)
    w_neg = np.bincount(group, flat_w * (1 - flat_y), num_groups)
    count = np.bincount(group, minlength=num_groups)
    masked = np.where(flat_p == 0, np.nan, flat_p)
    high, low = np.full(num_groups, -np.inf), np.full(num_groups, np.inf)
    with np.errstate(invalid="ignore"):
        np.maximum.at(high, group, masked)  # NaN propagates, as torch's scatter_reduce does
        np.minimum.at(low, group, masked)
    identical = (high <= low) | (high == -np.inf)
    valid = (w_pos > 0) & (w_neg > 0) & (count >= 2) & ~identical
    order = np.argsort(group.astype(np.float64) * 1e12 + flat_p, kind="stable")
    g, yo, wo = group[order], flat_y[order], flat_w[order]
    cum_neg = np.cumsum(wo * (1 - yo))
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    offsets = (cum_neg - wo * (1 - yo))[starts]
    cum_neg -= np.repeat(offsets, np.diff(np.r_[starts, g.size]))
    numerator = np.bincount(g, yo * wo * cum_neg, num_groups)
    auc = numerator / (w_pos * w_neg + 1e-10) * valid
    user_weight = (w_pos + w_neg).reshape(num_tasks, num_users)
    valid2 = valid.reshape(num_tasks, num_users)
    auc2 = auc.reshape(num_tasks, num_users)
    return {
        "auc_sum": auc2.sum(1),
        "weighted_auc_sum": (auc2 * user_weight).sum(1),
        "num_users": valid2.sum(1).astype(np.float64),
        "total_weight": (user_weight * valid2).sum(1),
    }


def _tr_uauc(batches: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """``uauc``, ``wuauc``, ``uauc_num_users`` over batches (states summed, as its lifetime value)."""
    states = [_tr_uauc_states(*batch) for batch in batches]
    total = {k: sum(s[k] for s in states) for k in states[0]}
    return {
        "uauc": total["auc_sum"] / (total["num_users"] + 1e-10),
        "wuauc": total["weighted_auc_sum"] / (total["total_weight"] + 1e-10),
        "num_users": total["num_users"],
    }


def _user_batches(rng: np.random.Generator, num_batches: int = 3, tasks: int = 2):
    """Batches of 8 users, ids reused by every batch; scores distinct within a batch; some one-class users."""
    out = []
    for _ in range(num_batches):
        users = np.repeat(rng.permutation(8), rng.integers(1, 7, 8))
        n = users.size
        p = rng.permutation(n)[None, :].repeat(tasks, 0) / n * 0.98 + 0.01
        p = np.stack([rng.permutation(row) for row in p])
        y = (rng.random((tasks, n)) < 0.45).astype(np.float64)
        w = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], (tasks, n), p=[0.1, 0.2, 0.4, 0.2, 0.1])
        out.append((p, y, w, users))
    return out


@pytest.mark.parametrize("weight_groups", [False, True], ids=["uauc", "wuauc"])
@pytest.mark.parametrize("seed", SEEDS)
def test_uauc_is_grouped_auc_scored_per_batch(seed, weight_groups):
    """``uauc`` = GroupedAUC(groups_complete_per_batch=True); ``wuauc`` also weight_groups=True."""
    rng = np.random.default_rng([201, seed])
    batches = _user_batches(rng)
    theirs = _tr_uauc(batches)
    metric = tmx.GroupedAUC(2, groups_complete_per_batch=True, weight_groups=weight_groups)
    for p, y, w, users in batches:
        metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(users), torch.tensor(w))
    expected = theirs["wuauc" if weight_groups else "uauc"]
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-8)
    # the reference for both: scikit-learn's AUC of each batch's users of both classes, averaged
    for t in range(2):
        per_user = [
            (roc_auc_score(y[t, m], p[t, m], sample_weight=w[t, m]), w[t, m].sum())
            for p, y, w, users in batches
            for u in np.unique(users)
            if 0 < (w[t] * y[t] * (m := users == u)).sum() < (w[t] * m).sum()
        ]
        values, sizes = np.array(per_user).T
        assert theirs["num_users"][t] == len(per_user)
        reference = (values * sizes).sum() / sizes.sum() if weight_groups else values.mean()
        assert expected[t] == pytest.approx(reference, rel=1e-8)


def test_uauc_ties_within_a_user_count_in_row_order_there_and_half_here():
    """Scores 0.5, 0.5, 0.2: TorchRec credits the tied negative only when it comes first (0.5 or 1.0)."""
    p, users = np.array([[0.5, 0.5, 0.2]]), np.zeros(3, dtype=np.int64)
    w = np.ones((1, 3))
    positive_first, negative_first = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])
    assert _tr_uauc([(p, positive_first, w, users)])["uauc"][0] == pytest.approx(0.5)
    assert _tr_uauc([(p, negative_first, w, users)])["uauc"][0] == pytest.approx(1.0)
    for y in (positive_first, negative_first):
        metric = tmx.GroupedAUC(groups_complete_per_batch=True)
        metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(users))
        assert metric.compute().item() == pytest.approx(0.75)  # scikit-learn's value
        assert roc_auc_score(y[0], p[0]) == pytest.approx(0.75)


def test_uauc_skips_a_user_whose_scores_are_all_equal_where_ours_counts_half():
    p = np.array([[0.9, 0.1, 0.4, 0.4]])
    y, w, users = np.array([[1.0, 0.0, 1.0, 0.0]]), np.ones((1, 4)), np.array([0, 0, 1, 1])
    theirs = _tr_uauc([(p, y, w, users)])
    assert theirs["uauc"][0] == pytest.approx(1.0) and theirs["num_users"][0] == 1
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(users))
    assert metric.compute().item() == pytest.approx((1.0 + 0.5) / 2)


def test_uauc_counts_a_user_whose_equal_scores_are_zero_in_row_order():
    """Its equal-score check skips zeros by making them NaN, which its max/min then propagate: never equal."""
    users, w = np.zeros(2, dtype=np.int64), np.ones((1, 2))
    zeros, y = np.zeros((1, 2)), np.array([[1.0, 0.0]])
    theirs = _tr_uauc([(zeros, y, w, users)])
    assert theirs["num_users"][0] == 1 and theirs["uauc"][0] == pytest.approx(0.0)  # the positive comes first
    assert _tr_uauc([(zeros + 0.3, y, w, users)])["num_users"][0] == 0  # equal non-zero scores: skipped
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(torch.tensor(zeros[0]), torch.tensor(y[0]), torch.tensor(users))
    assert metric.compute().item() == pytest.approx(0.5)


def test_uauc_without_a_user_of_both_classes_is_zero_there_and_undefined_here():
    p, y, w, users = np.array([[0.9, 0.2]]), np.array([[1.0, 1.0]]), np.ones((1, 2)), np.array([0, 0])
    assert _tr_uauc([(p, y, w, users)])["uauc"][0] == 0.0
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(users))
    assert np.isnan(_quiet_compute(metric).item())


def test_uauc_loses_the_score_order_of_users_far_down_a_batch():
    """Its sort key ``user * 1e12 + score`` is float64: score differences below its step are lost.

    The step is 2**-13 for (task, user) group 1 of a batch, 1/64 from group 71, 1/8 from group 563 and
    1 from group 4504 (numbered from 0): scores closer than it tie and count in row order (here, positives last
    in each user's rows, random scores score 0.61 instead of 0.50). Ours, and the reference (each
    user's share of positive-negative pairs ordered right, in numpy), do not depend on the batch.
    """
    rng = np.random.default_rng(202)
    num_users, rows = 5000, 6
    users = np.repeat(np.arange(num_users), rows)
    y = np.tile([0.0, 0.0, 1.0, 0.0, 1.0, 1.0], num_users)[None, :]
    p = (rng.random(users.size) * 0.9 + 0.05)[None, :]
    scores = p[0].reshape(num_users, rows)
    positives, negatives = scores[:, [2, 4, 5]], scores[:, [0, 1, 3]]
    reference = (positives[:, :, None] > negatives[:, None, :]).mean((1, 2)).mean()
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(users))
    assert metric.compute().item() == pytest.approx(reference, rel=1e-12)
    in_one_batch = _tr_uauc([(p, y, np.ones_like(p), users)])["uauc"][0]
    assert abs(in_one_batch - reference) > 0.05, (in_one_batch, reference)


# ----------------------------------------------------------------------------- variance


def _tr_variance(batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(T, N)`` label batches: TorchRec's (variance, scalar = mean) after every batch's merge.

    Its merge adds ``n / (n + b) * sum((x - old_mean)^2)`` per batch (``n`` rows so far, ``b`` in the
    batch): exact for batches of one row, short of the batch's own spread otherwise.
    """
    n = s = m2 = 0.0
    for x in batches:
        b = x.shape[-1]
        mean = s / max(n, 1)
        m2 = m2 + ((x - np.asarray(mean)[..., None]) ** 2).sum(-1) * (n / max(n + b, 1))
        n, s = n + b, s + x.sum(-1)
    return m2 / max(n - 1, 1), s / max(n, 1)


def _distributions(batches: list[np.ndarray]) -> list[Distribution]:
    out = [Distribution() for _ in range(batches[0].shape[0])]
    for x in batches:
        for task, metric in enumerate(out):
            metric.update(torch.tensor(x[task]))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_variance_in_batches_of_one_row_is_the_sample_variance_of_distribution_and_numpy(seed):
    rng = np.random.default_rng([301, seed])
    labels = rng.gamma(2.0, 30.0, (2, 40))
    variance, mean = _tr_variance([labels[:, i : i + 1] for i in range(40)])
    np.testing.assert_allclose(variance, labels.var(-1, ddof=1), rtol=1e-10)
    for task, metric in enumerate(_distributions([labels[:, i : i + 1] for i in range(40)])):
        out = metric.compute()
        assert out["std"].item() ** 2 == pytest.approx(variance[task], rel=1e-10)
        assert out["mean"].item() == pytest.approx(mean[task], rel=1e-12)
    average = tmx.LabelAverage(2)  # TorchRec's `scalar` key of this metric: the unweighted label mean
    average.update(torch.zeros(2, 40), torch.tensor(labels))
    np.testing.assert_allclose(average.compute().numpy(), mean, rtol=1e-12)


def test_variance_in_larger_batches_falls_short_there_and_not_here():
    """One batch: TorchRec's variance is 0. Several: each batch's own spread is scaled by n/(n+b)."""
    rng = np.random.default_rng(302)
    labels = rng.normal(5.0, 2.0, (1, 64))
    batches = [labels[:, i : i + 16] for i in range(0, 64, 16)]
    assert _tr_variance(batches[:1])[0][0] == 0.0
    theirs = _tr_variance(batches)[0][0]
    assert theirs < 0.9 * labels.var(ddof=1)
    (metric,) = _distributions(batches)
    assert metric.compute()["std"].item() ** 2 == pytest.approx(labels.var(ddof=1), rel=1e-10)


# ----------------------------------------------------------------------------- auprc's newer lifetime value


def test_auprc_out_of_range_score_is_refused_here_where_newer_torchrec_makes_the_lifetime_nan():
    """Newer TorchRec turns a task's binned lifetime AUPRC into NaN for good after one score outside
    [min_prediction, max_prediction]; ours refuses the batch (state untouched), and ``from_logits=True``
    takes scores of any range."""
    metric = tmx.AUPRC(num_bins=1000, bin_space="probability")
    metric.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="preds"):
        metric.update(torch.tensor([1.5, 0.1]), torch.tensor([1, 0]))
    assert metric.compute().item() == pytest.approx(1.0)


def test_num_missing_labels_without_weights_counts_each_nan_label_once():
    """TorchRec's ``weights is None`` case: unit weights."""
    y = np.array([[np.nan, 1.0, np.nan, 0.0], [0.0, np.nan, 1.0, 1.0]])
    metric = tmx.NumMissingLabels(2)
    metric.update(torch.rand(2, 4), torch.tensor(y))
    np.testing.assert_array_equal(metric.compute().numpy(), np.isnan(y).sum(-1))


# ----------------------------------------------------------------------------- the names, refused naming what to use


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("uauc", "'gauc' with the option groups_complete_per_batch=True"),
        ("wuauc", "groups_complete_per_batch=True and weight_groups=True"),
        ("variance", "tmx.aggregation.Distribution"),
        ("unweighted_ne", "'ne' on a task whose weight_name is None"),
    ],
)
def test_newer_torchrec_names_are_refused_naming_what_computes_them(name, what):
    """The registry and ``from_torchrec_config`` refused these with the list of known names only."""
    said = rf"TorchRec's metric of that name [^;]*{re.escape(what)}"
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \(no registry metric of that name; {said}"):
        lookup(name)
    config = {"rec_tasks": [{"name": "t"}], "rec_metrics": {name: {"rec_task_indices": [0]}}}
    with pytest.raises(
        ValueError, match=rf"^TorchRec metric {name!r} is not supported by from_torchrec_config \({said}"
    ):
        tmx.RecMetricModule.from_torchrec_config(config)


def test_session_pairwise_auc_is_a_registry_name_and_from_torchrec_config_builds_it():
    """The registry builds it; so does from_torchrec_config (it refused it), keyed as TorchRec keys it.

    Values against the port of TorchRec's pair loop: tests/test_session_pairwise_kernel.py.
    """
    entry, _ = lookup("session_pairwise_auc")
    assert entry.cls is tmx.SessionPairwiseAUC
    config = {"rec_tasks": [{"name": "t"}], "rec_metrics": {"session_pairwise_auc": {"rec_task_indices": [0]}}}
    module = tmx.RecMetricModule.from_torchrec_config(config)
    assert isinstance(module.metrics["session_pairwise_auc"].lifetime, tmx.SessionPairwiseAUC)
    assert [t.session_id_name for t in module.tasks] == ["session_id"]  # TorchRec's default session_key
    module.update(
        {
            "prediction": torch.tensor([0.9, 0.2, 0.4]),
            "label": torch.tensor([1.0, 0.0, 2.0]),
            "weight": torch.ones(3),
            "session_id": torch.tensor([0, 0, 0]),
        }
    )
    values = module.compute()
    assert sorted(values) == [
        "session_pairwise_auc-t|lifetime_session_pairwise_auc",
        "session_pairwise_auc-t|window_session_pairwise_auc",
    ]
    assert float(values["session_pairwise_auc-t|lifetime_session_pairwise_auc"]) == pytest.approx(2 / 3)


def test_from_torchrec_config_names_the_class_of_a_standalone_torchrec_metric():
    config = {"rec_tasks": [{"name": "t"}], "rec_metrics": {"num_missing_labels": {"rec_task_indices": [0]}}}
    with pytest.raises(ValueError, match=r"\(TorchRec's metric of that name is tmx\.NumMissingLabels, .*; supported: "):
        tmx.RecMetricModule.from_torchrec_config(config)


def test_the_uauc_hint_builds_torchrecs_uauc_through_the_registry():
    rng = np.random.default_rng(203)
    batches = _user_batches(rng, tasks=1)
    module = tmx.RecMetricModule.from_config(
        {
            "tasks": [{"name": "click", "group_id_name": "user"}],
            "metrics": {"gauc": {"groups_complete_per_batch": True}},
            "throughput": False,
        }
    )
    for p, y, w, users in batches:
        module.update(
            {
                "prediction": torch.tensor(p[0]),
                "label": torch.tensor(y[0]),
                "weight": torch.tensor(w[0]),
                "user": torch.tensor(users),
            }
        )
    assert module.compute()["gauc/click"].item() == pytest.approx(_tr_uauc(batches)["uauc"][0], rel=1e-8)


def test_the_unweighted_ne_hint_is_torchrecs_unweighted_ne():
    """A second task on the same columns without a weight column: NE of unit weights (plain numpy NE)."""
    rng = np.random.default_rng(204)
    y, p, w = (rng.random(50) < 0.3).astype(np.float64), rng.random(50) * 0.98 + 0.01, rng.choice([0.0, 2.0], 50)
    module = tmx.RecMetricModule.from_config(
        {
            "tasks": [{"name": "click"}, {"name": "click_unweighted", "weight_name": None}],
            "metrics": ["ne"],
            "throughput": False,
        }
    )
    module.update({"prediction": torch.tensor(p), "label": torch.tensor(y), "weight": torch.tensor(w)})
    cross_entropy = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()
    rate = y.mean()
    expected = cross_entropy / (-(y.sum() * np.log(rate) + (1 - y).sum() * np.log(1 - rate)))
    assert module.compute()["ne/click_unweighted"].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_uauc_num_users_is_the_group_count_state_of_the_uauc_metric(seed):
    """docs/migration_torchrec.md: ``metric_state["group_count_sum"]`` is TorchRec's ``uauc_num_users``."""
    rng = np.random.default_rng([207, seed])
    batches = _user_batches(rng)
    metric = tmx.GroupedAUC(2, groups_complete_per_batch=True)
    for p, y, w, users in batches:
        metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(users), torch.tensor(w))
    # numpy: each batch's users with positive and negative weight, per task, summed over batches
    expected = np.zeros(2)
    for _, y, w, users in batches:
        ids = np.unique(users, return_inverse=True)[1]
        pos = np.stack([np.bincount(ids, w[t] * y[t]) for t in range(2)])
        neg = np.stack([np.bincount(ids, w[t] * (1 - y[t])) for t in range(2)])
        expected += ((pos > 0) & (neg > 0)).sum(1)
    count = metric.metric_state["group_count_sum"]
    assert count.dtype == torch.float64
    np.testing.assert_array_equal(count.numpy(), expected)
    np.testing.assert_array_equal(count.numpy(), _tr_uauc(batches)["num_users"])  # scores distinct in a batch
    with metric.sync_context():  # the documented read of every rank's count (one process here: the same)
        np.testing.assert_array_equal(metric.metric_state["group_count_sum"].numpy(), expected)


def test_uauc_num_users_leaves_out_a_user_of_equal_scores_there_and_counts_it_here():
    p, y = np.array([[0.9, 0.1, 0.4, 0.4]]), np.array([[1.0, 0.0, 1.0, 0.0]])
    users = np.array([0, 0, 1, 1])
    assert _tr_uauc([(p, y, np.ones((1, 4)), users)])["num_users"][0] == 1
    metric = tmx.GroupedAUC(groups_complete_per_batch=True)
    metric.update(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(users))
    assert metric.metric_state["group_count_sum"].tolist() == [2.0]
