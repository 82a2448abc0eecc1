"""RegressionAUC and XAUC against brute-force O(N^2) pair enumeration, sklearn and scipy."""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.auc.pairwise import _pairwise_counts
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning, UndefinedMetricWarning

N = 400


# ----------------------------------------------------------------------------- brute-force references


def ref_pair_counts(p, y, w=None):
    """(C, D, T_p, T_y, T_py, P, pairs of different labels): weighted totals over pairs i < j."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(p) if w is None else np.asarray(w, dtype=np.float64)
    i, j = np.triu_indices(len(p), k=1)
    ww = w[i] * w[j]
    dp, dy = np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
    return np.array(
        [
            ww[(dp * dy) > 0].sum(),
            ww[(dp * dy) < 0].sum(),
            ww[(dp == 0) & (dy != 0)].sum(),
            ww[(dp != 0) & (dy == 0)].sum(),
            ww[(dp == 0) & (dy == 0)].sum(),
            ww.sum(),
            ww[dy != 0].sum(),
        ]
    )


def ref_rauc(p, y, w=None):
    """Share of pairs with different labels ordered alike; prediction ties count 1/2."""
    c, d, tp, *_ = ref_pair_counts(p, y, w)
    return (c + 0.5 * tp) / (c + d + tp) if c + d + tp > 0 else np.nan


def ref_xauc(p, y, w=None):
    """TorchRec's rule: sign(dp) == sign(dy) over all pairs (ties in both agree)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(p) if w is None else np.asarray(w, dtype=np.float64)
    i, j = np.triu_indices(len(p), k=1)
    ww = w[i] * w[j]
    agree = np.sign(p[i] - p[j]) == np.sign(y[i] - y[j])
    return (ww * agree).sum() / ww.sum() if ww.sum() > 0 else np.nan


# ----------------------------------------------------------------------------- data


def watch_time_data(rng: np.random.Generator, num_tasks: int | None = None, weights: str | None = None) -> H.Data:
    """Zero-inflated, rounded labels and partly rounded predictions: ties of every kind."""
    shape = (N,) if num_tasks is None else (num_tasks, N)
    y = np.where(rng.random(shape) < 0.35, 0.0, np.round(np.exp(rng.normal(1.0, 1.0, size=shape)), 1))
    p = np.log1p(y) + rng.normal(0.0, 0.8, size=shape)
    p[..., : N // 3] = np.round(p[..., : N // 3], 1)  # prediction ties
    out: H.Data = {
        "preds": torch.tensor(p, dtype=torch.float32),
        "target": torch.tensor(y, dtype=torch.float32),
    }
    out["weights"] = H.random_weights(rng, weights, shape)
    return out


def _case(cid, cls, fn, ref, num_tasks=None, weights=None):
    kw = {} if num_tasks is None else {"num_tasks": num_tasks}
    return H.MetricCase(
        id=cid,
        metric=partial(cls, **kw),
        data=partial(watch_time_data, num_tasks=num_tasks, weights=weights),
        reference=H.per_task(ref, "preds", "target", "weights"),
        functional=fn,
    )


def _variants(name, cls, fn, ref):
    return [
        _case(name, cls, fn, ref),
        _case(f"{name}-w", cls, fn, ref, weights="task"),
        _case(f"{name}-3task-w", cls, fn, ref, num_tasks=3, weights="task"),
        _case(f"{name}-3task-shared-w", cls, fn, ref, num_tasks=3, weights="shared"),
    ]


_ALL = [
    *_variants("rauc", tmx.RegressionAUC, tmf.regression_auc, ref_rauc),
    *_variants("xauc", tmx.XAUC, tmf.xauc, ref_xauc),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
DDP_IDS = [i for i in IDS if i.endswith("-w") and "shared" not in i]


# ----------------------------------------------------------------------------- the shared harness


globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=[i for i in IDS if i.endswith("-3task-w")],
        collection=[i for i in IDS if "3task" in i],
        # XAUC does not claim 'integer weights == repeated rows': test_invariances_xauc below
        invariances=[i for i in IDS if i.startswith("rauc") and i.endswith("-w")],
        ddp=DDP_IDS,
        ddp_scenarios=[i for i in IDS if i not in DDP_IDS] + ["xauc-w"],
        device_path=IDS,
    )
)


# ----------------------------------------------------------------------------- XAUC weights


def _run(case, data, rng):
    metric = case.metric()
    n = H.num_samples(data, case.sample_axis)
    for batch in H.split(data, H.random_bounds(n, rng, 3, case.min_batch), case.sample_axis):
        metric.update(**batch)
    return metric.compute().double().numpy()


@pytest.mark.parametrize("cid", [i for i in IDS if i.startswith("xauc") and i.endswith("-w")])
def test_invariances_xauc(cid):
    """All of check_invariances except 'integer weights == repeats', which XAUC does not claim."""
    case = CASES[cid]
    data = case.make_data(0)
    rng = np.random.default_rng(3)
    n = H.num_samples(data, -1)
    unweighted = dict(data, weights=None)
    np.testing.assert_allclose(
        _run(case, dict(data, weights=torch.ones(n, dtype=torch.float64)), rng),
        _run(case, unweighted, rng),
        rtol=1e-9,
    )
    weights = torch.from_numpy(rng.uniform(0.1, 3.0, size=n))
    keep = torch.from_numpy(rng.random(n) < 0.7)
    zeroed = dict(data, weights=torch.where(keep, weights, 0.0))
    removed = H.take(dict(data, weights=weights), torch.nonzero(keep).reshape(-1), -1)
    np.testing.assert_allclose(_run(case, zeroed, rng), _run(case, removed, rng), rtol=1e-9)
    weighted = dict(data, weights=weights)
    np.testing.assert_allclose(
        _run(case, dict(data, weights=weights * 7.25), rng), _run(case, weighted, rng), rtol=1e-9
    )
    perm = torch.from_numpy(rng.permutation(n))
    np.testing.assert_allclose(_run(case, H.take(weighted, perm, -1), rng), _run(case, weighted, rng), rtol=1e-9)


@pytest.mark.parametrize("call", ["update", "forward"])
def test_one_sample_updates_keep_few_chunks_of_24_bytes_per_sample(call):
    """Bug: one chunk per list and update, never joined: 3.6 KB per sample (24 B documented), and
    ``compute`` 750 ms for 20k one-sample updates against 18 ms for one update.

    2,000 one-sample updates of two tasks: three short aligned lists holding 3 x 8 bytes per
    sample and task; values: the brute-force pair references.
    """
    rng = np.random.default_rng(12)
    p, y, w = rng.random((2, 2000)), rng.integers(0, 5, (2, 2000)).astype(float), rng.random((2, 2000))
    metrics = {"rauc": tmx.RegressionAUC(num_tasks=2), "xauc": tmx.XAUC(num_tasks=2)}
    for metric in metrics.values():
        for i in range(2000):
            batch = [torch.from_numpy(a[:, i : i + 1]) for a in (p, y, w)]
            if call == "update":
                metric.update(*batch)
            else:
                with warnings.catch_warnings():  # one sample has no pair: its own value is undefined
                    warnings.simplefilter("ignore", UndefinedMetricWarning)
                    metric(*batch)
        lists = [metric.pair_preds, metric.pair_target, metric.pair_weights]
        assert len({len(chunks) for chunks in lists}) == 1 and len(metric.pair_preds) <= 100
        assert all(sum(c.untyped_storage().nbytes() for c in chunks) == 8 * 2 * 2000 for chunks in lists)
    for name, ref in (("rauc", ref_rauc), ("xauc", ref_xauc)):
        expected = [ref(p[t], y[t], w[t]) for t in range(2)]
        np.testing.assert_allclose(metrics[name].compute().numpy(), expected, rtol=1e-9)


def test_xauc_integer_weights_vs_repeats():
    """The documented difference: k copies of a row add k(k-1)/2 pairs tied in both (which agree)."""
    rng = np.random.default_rng(5)
    data = watch_time_data(rng)
    p, y = data["preds"].double().numpy(), data["target"].double().numpy()
    k = rng.integers(0, 4, size=N)
    c, _, _, _, t_py, total, _ = ref_pair_counts(p, y, k.astype(float))
    self_pairs = (k * (k - 1) / 2).sum()
    repeated = np.repeat(np.arange(N), k)
    value = tmf.xauc(torch.tensor(p[repeated]), torch.tensor(y[repeated]))
    np.testing.assert_allclose(value, (c + t_py + self_pairs) / (total + self_pairs), rtol=1e-9)
    weighted = tmf.xauc(torch.tensor(p), torch.tensor(y), torch.tensor(k.astype(float)))
    np.testing.assert_allclose(weighted, (c + t_py) / total, rtol=1e-9)
    # RegressionAUC ignores label-tied pairs, so integer weights are repeats there
    np.testing.assert_allclose(
        tmf.regression_auc(torch.tensor(p[repeated]), torch.tensor(y[repeated])),
        tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(k.astype(float))),
        rtol=1e-9,
    )


# ----------------------------------------------------------------------------- other references


@pytest.mark.parametrize("seed", range(4))
def test_rauc_binary_labels_is_roc_auc(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(700) < 0.3).astype(np.int64)
    p = np.round(rng.normal(size=700) + y, 1)  # ties between and within classes
    w = rng.uniform(0.0, 3.0, size=700)
    expected = roc_auc_score(y, p, sample_weight=w)
    np.testing.assert_allclose(
        tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(w)), expected, rtol=1e-12
    )
    metric = tmx.RegressionAUC()
    for chunk in np.array_split(np.arange(700), 5):
        metric.update(torch.tensor(p[chunk]), torch.tensor(y[chunk]), torch.tensor(w[chunk]))
    np.testing.assert_allclose(metric.compute(), expected, rtol=1e-12)


def test_no_ties_is_kendall_tau():
    rng = np.random.default_rng(0)
    y = rng.normal(size=3000)
    p = y + rng.normal(size=3000)
    tau = stats.kendalltau(p, y).statistic  # no ties: tau-b == tau-a
    for fn in (tmf.regression_auc, tmf.xauc):
        np.testing.assert_allclose(fn(torch.tensor(p), torch.tensor(y)), (1 + tau) / 2, rtol=1e-12)


def test_docstring_example_by_hand():
    preds, target = torch.tensor([0.1, 0.3, 0.5, 0.5]), torch.tensor([0.0, 1.0, 1.0, 2.0])
    # concordant pairs (0,1), (0,2), (0,3), (1,3); label tie (1,2); prediction tie (2,3)
    np.testing.assert_allclose(tmf.regression_auc(preds, target), 4.5 / 5)
    np.testing.assert_allclose(tmf.xauc(preds, target), 4 / 6)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda t: st.integers(0, 12).flatmap(
            lambda n: st.tuples(
                st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=t, max_size=t),
                st.lists(st.lists(st.integers(-2, 2), min_size=n, max_size=n), min_size=t, max_size=t),
                st.lists(
                    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), min_size=n, max_size=n),
                    min_size=t,
                    max_size=t,
                ),
            )
        )
    )
)
def test_counts_match_brute_force(arrays):
    p, y, w = (np.asarray(a, dtype=np.float64) for a in arrays)
    got = torch.stack(list(_pairwise_counts(torch.tensor(p), torch.tensor(y), torch.tensor(w)))).T.numpy()
    expected = np.stack([ref_pair_counts(p[t], y[t], w[t]) for t in range(p.shape[0])])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", SamplesFirstWarning)  # (T, 1): T one-sample tasks, as meant here
        rauc = tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(w))
        xa = tmf.xauc(torch.tensor(p), torch.tensor(y), torch.tensor(w))
    np.testing.assert_allclose(rauc, [ref_rauc(p[t], y[t], w[t]) for t in range(p.shape[0])], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xa, [ref_xauc(p[t], y[t], w[t]) for t in range(p.shape[0])], rtol=1e-12, atol=1e-14)


def test_large_label_range_many_levels():
    """Many distinct labels (deep radix refinement) and large magnitudes."""
    rng = np.random.default_rng(11)
    y = rng.normal(size=1500) * 1e6
    p = np.round(y / 1e5 + rng.normal(size=1500), 0)
    w = rng.uniform(0, 1, size=1500)
    np.testing.assert_allclose(
        tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(w)), ref_rauc(p, y, w), rtol=1e-12
    )
    np.testing.assert_allclose(
        tmf.xauc(torch.tensor(p), torch.tensor(y), torch.tensor(w)), ref_xauc(p, y, w), rtol=1e-12
    )


def exact_pair_counts(p, y, w):
    """(C, D, T_p, T_y, T_py) over pairs i < j as exact Fractions of the float64 weights (O(N^2))."""
    w = [Fraction(float(v)) for v in w]
    c = d = tp = ty = tpy = Fraction(0)
    for i, j in itertools.combinations(range(len(p)), 2):
        ww, dp, dy = w[i] * w[j], np.sign(p[i] - p[j]), np.sign(y[i] - y[j])
        if dp * dy > 0:
            c += ww
        elif dp * dy < 0:
            d += ww
        elif dp == 0 and dy != 0:
            tp += ww
        elif dp != 0:
            ty += ww
        else:
            tpy += ww
    return c, d, tp, ty, tpy


def exact_rauc_xauc(p, y, w):
    c, d, tp, ty, tpy = exact_pair_counts(p, y, w)
    rauc = float((c + tp / 2) / (c + d + tp)) if c + d + tp > 0 else np.nan
    total = c + d + tp + ty + tpy
    return rauc, float((c + tpy) / total) if total > 0 else np.nan


def test_report_cases_one_dominant_weight():
    """A weight 1e12 times the others: (S^2 - sum w^2)/2 and C = (C + T_p) - T_p used to cancel."""
    rauc = tmf.regression_auc(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 2.0, 2.0]), torch.tensor([1, 1, 1e12]))
    assert rauc.item() == pytest.approx((1 + 0.5e12) / (1 + 1e12), rel=1e-15)
    # no concordant pair and no pair tied in both: exactly 0 (was 3.1e-4)
    x = tmf.xauc(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 1.0]), torch.tensor([0.04, 0.0137, 7.25e11]))
    assert x.item() == 0.0


def _task_arrays(
    tasks: int, size: int, preds: tuple[int, int], labels: tuple[int, int], weights: list[float]
) -> st.SearchStrategy:
    """``(preds, labels, weights)`` lists of 1..``tasks`` rows of 2..``size`` values: integer scores and labels
    in the given ranges (ties of every kind), weights drawn from ``weights``."""

    def rows(n: int, t: int, values: st.SearchStrategy) -> st.SearchStrategy:
        return st.lists(st.lists(values, min_size=n, max_size=n), min_size=t, max_size=t)

    return st.integers(1, tasks).flatmap(
        lambda t: st.integers(2, size).flatmap(
            lambda n: st.tuples(
                rows(n, t, st.integers(*preds)), rows(n, t, st.integers(*labels)), rows(n, t, st.sampled_from(weights))
            )
        )
    )


@settings(max_examples=120, deadline=None)
@given(_task_arrays(3, 14, (0, 3), (-2, 2), [0.0, 1e-15, 3e-12, 0.7, 1.0, 2.5, 4e8, 1e12, 7.25e15]))
def test_extreme_weight_ratios_with_ties_match_exact_fractions(arrays):
    """Weight ratios up to 1e31 with ties of every kind: values within 1e-12 of exact rational counts."""
    p, y, w = (np.asarray(a, dtype=np.float64) for a in arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", SamplesFirstWarning)  # (T, 1): T one-sample tasks, as meant here
        rauc = tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(w)).numpy()
        xa = tmf.xauc(torch.tensor(p), torch.tensor(y), torch.tensor(w)).numpy()
    expected = np.array([exact_rauc_xauc(p[t], y[t], w[t]) for t in range(len(p))])
    np.testing.assert_allclose(rauc, expected[:, 0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(xa, expected[:, 1], rtol=1e-12, atol=1e-15)


FAR_APART = [
    ([0.1, 0.9], [0.0, 1.0], [1e160, 1e-200]),  # the one pair weighs 1e-40: 1e-360 of the largest weight squared
    ([0.1, 0.9, 0.5], [0.0, 1.0, 2.0], [1e200, 1e-130, 1e-130]),
    ([0.9, 0.1, 0.5], [0.0, 1.0, 1.0], [1e300, 1e-300, 1e-300]),
    # the heaviest pair has equal labels; every pair of different labels is 1e-400 of it (RegressionAUC)
    ([0.2, 0.1, 0.3, 0.4, 0.0], [0.0, 0.0, 1.0, 2.0, 1.0], [1e200, 1e150, 1e-200, 1e-250, 3e-201]),
    ([0.0, 1.0, 2.0, 2.0], [1.0, 0.0, 1.0, 1.0], [1.7e308, 1e-300, 1e-300, 2e-290]),
    # near RegressionAUC's documented limit: sqrt(w1 w2) / p = 1e440
    ([0.0, 1.0, 2.0, 0.5], [0.0, 0.0, 1.0, 1.0], [1e300, 1e300, 1e-140, 3e-141]),
]


@pytest.mark.parametrize(("p", "y", "w"), FAR_APART, ids=[str(i) for i in range(len(FAR_APART))])
def test_weights_further_apart_than_float64_range_match_exact_fractions(p, y, w):
    """Weights more than 2**1074 apart (a pair w_i w_j still finite, or not): exact rational values, no false nan."""
    p, y, w = (np.asarray(a, dtype=np.float64) for a in (p, y, w))
    rauc, xa = exact_rauc_xauc(p, y, w)
    args = (torch.tensor(p), torch.tensor(y), torch.tensor(w))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        np.testing.assert_allclose(tmf.regression_auc(*args), rauc, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(tmf.xauc(*args), xa, rtol=1e-12, atol=1e-15)
        for metric, expected in ((tmx.RegressionAUC(), rauc), (tmx.XAUC(), xa)):
            metric.update(*args)
            np.testing.assert_allclose(metric.compute(), expected, rtol=1e-12, atol=1e-15)


@settings(max_examples=80, deadline=None)
@given(_task_arrays(2, 9, (0, 2), (-1, 1), [0.0, 1e-300, 1e-220, 3e-200, 1e-160, 0.7, 2.5, 1e160, 4e200, 1e220, 1e300]))
def test_any_weight_ratio_with_ties_matches_exact_fractions(arrays):
    """Weights from 1e-300 to 1e300 with ties of every kind: exact rational values within the documented limits.

    XAUC: any of these weights (ratios up to 1e600). RegressionAUC: weights within 1e440 of each
    other (its limit, sqrt(w1 w2) / p below 2**(1531 - 2 log2 N), is 1e458 here).
    """
    p, y, w = (np.asarray(a, dtype=np.float64) for a in arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", SamplesFirstWarning)  # (T, 1): T one-sample tasks, as meant here
        rauc = tmf.regression_auc(torch.tensor(p), torch.tensor(y), torch.tensor(w)).numpy()
        xa = tmf.xauc(torch.tensor(p), torch.tensor(y), torch.tensor(w)).numpy()
    expected = np.array([exact_rauc_xauc(p[t], y[t], w[t]) for t in range(len(p))])
    np.testing.assert_allclose(xa, expected[:, 1], rtol=1e-12, atol=1e-15)
    positive = [np.log10(w[t][w[t] > 0]) for t in range(len(p))]  # (1e440 itself is no float64)
    within = [t for t, lg in enumerate(positive) if lg.size == 0 or lg.max() - lg.min() <= 440]
    np.testing.assert_allclose(rauc[within], expected[within, 0], rtol=1e-12, atol=1e-15)


def test_extreme_weight_ratio_counts_at_scale():
    """One weight 1e15 among 300 of ~1 (and ties): each pair total within 1e-12 of the exact one's task total."""
    rng = np.random.default_rng(21)
    p = np.round(rng.normal(size=(2, 300)), 1)
    y = np.round(p + rng.normal(size=(2, 300)), 0)
    w = rng.uniform(0.5, 2.0, size=(2, 300))
    w[0, 17], w[1, 3] = 1e15, 3e-13
    got = torch.stack(list(_pairwise_counts(torch.tensor(p), torch.tensor(y), torch.tensor(w))))[:5].T.numpy()
    for t in range(2):
        exact = exact_pair_counts(p[t], y[t], w[t])
        np.testing.assert_allclose(got[t], [float(v) for v in exact], rtol=0, atol=1e-12 * float(sum(exact)))
        rauc, xa = exact_rauc_xauc(p[t], y[t], w[t])
        np.testing.assert_allclose(
            tmf.regression_auc(torch.tensor(p[t]), torch.tensor(y[t]), torch.tensor(w[t])), rauc, rtol=1e-12
        )
        np.testing.assert_allclose(tmf.xauc(torch.tensor(p[t]), torch.tensor(y[t]), torch.tensor(w[t])), xa, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-160, 1e160, 1e200, 1e300, 4e307])
def test_finite_weights_of_extreme_scale(scale):
    """Weights near the ends of float64 (pair weights w_i w_j under/overflow) give the unit-scale values."""
    rng = np.random.default_rng(22)
    p = np.round(rng.normal(size=(2, 200)), 1)
    y = (rng.random((2, 200)) < 0.4).astype(np.float64)
    y[1] = np.round(p[1] + rng.normal(size=200), 0)
    w = rng.uniform(0.1, 4.0, size=200)
    expected_roc = roc_auc_score(y[0], p[0], sample_weight=w)
    for fn, ref in ((tmf.regression_auc, ref_rauc), (tmf.xauc, ref_xauc)):
        value = fn(torch.tensor(p), torch.tensor(y), torch.tensor(w * scale))
        np.testing.assert_allclose(value, [ref(p[t], y[t], w) for t in range(2)], rtol=1e-12)
        metric = tmx.RegressionAUC(num_tasks=2) if fn is tmf.regression_auc else tmx.XAUC(num_tasks=2)
        metric.update(torch.tensor(p), torch.tensor(y), torch.tensor(w * scale))
        torch.testing.assert_close(metric.compute(), value, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        tmf.regression_auc(torch.tensor(p[0]), torch.tensor(y[0]), torch.tensor(w * scale)), expected_roc, rtol=1e-12
    )


# ----------------------------------------------------------------------------- metric behaviour


def test_collection_shares_one_compute_group():
    data = watch_time_data(np.random.default_rng(2), num_tasks=2, weights="task")
    coll = MetricCollection(
        {"rauc": tmx.RegressionAUC(num_tasks=2), "xauc": tmx.XAUC(num_tasks=2)}, compute_groups=True
    )
    coll.update(**data)
    coll.update(**data)
    assert coll.compute_groups == {0: ["rauc", "xauc"]}
    values = coll.compute()
    both = {k: torch.cat([v, v], -1) if torch.is_tensor(v) else v for k, v in data.items()}
    np_data = H.to_numpy(both)
    for key, ref in (("rauc", ref_rauc), ("xauc", ref_xauc)):
        expected = [ref(np_data["preds"][t], np_data["target"][t], np_data["weights"][t]) for t in range(2)]
        np.testing.assert_allclose(values[key], expected, rtol=1e-9)


def test_zero_weight_rows_are_not_stored():
    metric = tmx.RegressionAUC()
    metric.update(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 2.0]))
    assert sum(t.numel() for t in metric.pair_preds) == 2
    metric.update(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0]))
    metric.update(torch.tensor([]), torch.tensor([]))
    assert sum(t.numel() for t in metric.pair_preds) == 2
    np.testing.assert_allclose(metric.compute(), 1.0)


def test_validate_args_false_gives_same_value():
    data = watch_time_data(np.random.default_rng(4), weights="task")
    for cls in (tmx.RegressionAUC, tmx.XAUC):
        a, b = cls(), cls(validate_args=False)
        a.update(**data)
        b.update(**data)
        assert torch.equal(a.compute(), b.compute())


@pytest.mark.parametrize(
    ("cls", "fn", "preds", "target", "weights", "match"),
    [
        (tmx.RegressionAUC, tmf.regression_auc, [1.0, 2.0], [3.0, 3.0], None, "RegressionAUC is undefined"),
        (
            tmx.RegressionAUC,
            tmf.regression_auc,
            [1.0, 2.0],
            [1.0, 3.0],
            [0.0, 1.0],
            "RegressionAUC is undefined",
        ),
        (tmx.XAUC, tmf.xauc, [1.0], [1.0], None, "XAUC is undefined"),
        (tmx.XAUC, tmf.xauc, [1.0, 2.0], [1.0, 3.0], [0.0, 1.0], "XAUC is undefined"),
    ],
)
def test_undefined_is_nan_with_warning(cls, fn, preds, target, weights, match):
    args = [torch.tensor(preds), torch.tensor(target)] + ([torch.tensor(weights)] if weights else [])
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert torch.isnan(fn(*args))
    metric = cls()
    metric.update(*args)
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert torch.isnan(metric.compute())


def test_xauc_defined_when_all_labels_tie():
    # every pair is a label tie: agreement only where predictions tie too
    np.testing.assert_allclose(tmf.xauc(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([5.0, 5.0, 5.0])), 1 / 3)


def test_undefined_per_task_and_before_update():
    metric = tmx.RegressionAUC(num_tasks=2)
    with pytest.warns(UndefinedMetricWarning, match=r"task\(s\) \[0, 1\]"):
        assert torch.isnan(metric.compute()).all()
    metric.update(torch.tensor([[0.1, 0.2], [0.1, 0.2]]), torch.tensor([[1.0, 2.0], [3.0, 3.0]]))
    with pytest.warns(UndefinedMetricWarning, match=r"task\(s\) \[1\]"):
        value = metric.compute()
    assert value[0] == 1.0 and torch.isnan(value[1])


# ----------------------------------------------------------------------------- bad input


_BAD = [
    (
        "nan-preds",
        {"preds": torch.tensor([0.1, float("nan")]), "target": torch.tensor([1.0, 2.0])},
        ValueError,
        "`preds` to be finite",
    ),
    (
        "inf-target",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([1.0, float("inf")])},
        ValueError,
        "`target` to hold finite real values",
    ),
    (
        "neg-weights",
        {
            "preds": torch.tensor([0.1, 0.2]),
            "target": torch.tensor([1.0, 2.0]),
            "weights": torch.tensor([1.0, -1.0]),
        },
        ValueError,
        "`weights` to be finite and non-negative",
    ),
    (
        "shape",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([1.0, 2.0, 3.0])},
        ValueError,
        "`target` of the same shape",
    ),
    (
        "weights-shape",
        {
            "preds": torch.tensor([0.1, 0.2]),
            "target": torch.tensor([1.0, 2.0]),
            "weights": torch.tensor([1.0]),
        },
        ValueError,
        "`weights` of shape",
    ),
    (
        "task-dim",
        {"preds": torch.rand(2, 3), "target": torch.rand(2, 3)},
        ValueError,
        r"`preds` of shape \(N,\)",
    ),
    ("3d", {"preds": torch.rand(1, 2, 3), "target": torch.rand(1, 2, 3)}, ValueError, "`preds` of shape"),
    (
        "int-preds",
        {"preds": torch.tensor([1, 2]), "target": torch.tensor([1.0, 2.0])},
        TypeError,
        "`preds` to be a floating point tensor",
    ),
    (
        "list-target",
        {"preds": torch.tensor([0.1, 0.2]), "target": [1.0, 2.0]},
        TypeError,
        "`target` to be a torch",
    ),
    (
        "device",
        {"preds": torch.tensor([0.1, 0.2]), "target": torch.tensor([1.0, 2.0], device="meta")},
        ValueError,
        "same device as `preds`",
    ),
]


@pytest.mark.parametrize("cid", ["rauc-w", "xauc-w"])
@pytest.mark.parametrize(("bad", "exc", "match"), [b[1:] for b in _BAD], ids=[b[0] for b in _BAD])
def test_rejects(cid, bad, exc, match):
    H.check_rejects(CASES[cid], bad, exc, match)


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [b[1:] for b in _BAD if b[0] != "task-dim"],
    ids=[b[0] for b in _BAD if b[0] != "task-dim"],
)
def test_functional_rejects(bad, exc, match):
    for fn in (tmf.regression_auc, tmf.xauc):
        with pytest.raises(exc, match=match):
            fn(**bad)


def test_wrong_task_count_for_multitask_metric():
    metric = tmx.XAUC(num_tasks=3)
    with pytest.raises(ValueError, match=r"\(T, N\) with num_tasks=3"):
        metric.update(torch.rand(2, 5), torch.rand(2, 5))
    with pytest.raises(ValueError, match="num_tasks"):
        tmx.RegressionAUC(num_tasks=0)


def test_plot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    metric = tmx.XAUC(num_tasks=2)
    values = []
    for _ in range(3):
        metric.update(torch.rand(2, 20), torch.rand(2, 20))
        values.append(metric.compute())
    fig, ax = metric.plot(values)
    assert fig is not None and ax is not None
    fig, _ = tmx.RegressionAUC().plot(torch.tensor(0.7))
    assert fig is not None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 16).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
            st.lists(st.sampled_from([0.0, 1.0, 2.5]), min_size=n, max_size=n),
            st.lists(st.integers(0, n), max_size=3),
        )
    )
)
def test_class_batches_match_brute_force(drawn):
    """Any split into batches (including empty ones) gives the brute-force value over all pairs."""
    p, y, w, cuts = drawn
    p, y, w = (np.asarray(a, dtype=np.float64) for a in (p, y, w))
    bounds = [0, *sorted(cuts), len(p)]
    for cls, ref in ((tmx.RegressionAUC, ref_rauc), (tmx.XAUC, ref_xauc)):
        metric = cls()
        for lo, hi in itertools.pairwise(bounds):
            metric.update(torch.tensor(p[lo:hi]), torch.tensor(y[lo:hi]), torch.tensor(w[lo:hi]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = metric.compute()
        np.testing.assert_allclose(value, ref(p, y, w), rtol=1e-12, atol=1e-14)


def test_single_label_task_is_exactly_undefined():
    """Rounding cannot turn 'no pair with different labels' into a tiny denominator."""
    rng = np.random.default_rng(8)
    preds = torch.tensor(rng.normal(size=(3, 500)))
    target = torch.tensor(rng.normal(size=(3, 500)))
    target[1] = 0.3
    weights = torch.tensor(rng.uniform(0.01, 5.0, size=(3, 500)))
    with pytest.warns(UndefinedMetricWarning, match=r"task\(s\) \[1\]"):
        value = tmf.regression_auc(preds, target, weights)
    assert torch.isnan(value[1]) and not torch.isnan(value[[0, 2]]).any()
    expected = [ref_rauc(preds[t].numpy(), target[t].numpy(), weights[t].numpy()) for t in (0, 2)]
    np.testing.assert_allclose(value[[0, 2]], expected, rtol=1e-12)


def test_tasks_with_very_different_weight_scales():
    """Tasks share one cumsum in the kernel; a task's weight scale must not cost another precision."""
    rng = np.random.default_rng(9)
    p = np.round(rng.normal(size=(3, 800)), 1)
    y = np.round(p + rng.normal(size=(3, 800)), 1)
    w = rng.uniform(0.0, 1.0, size=(3, 800)) * np.array([[1e9], [1e-9], [1.0]])
    got = torch.stack(list(_pairwise_counts(torch.tensor(p), torch.tensor(y), torch.tensor(w)))).T.numpy()
    for t in range(3):
        np.testing.assert_allclose(got[t], ref_pair_counts(p[t], y[t], w[t]), rtol=1e-10)


def test_perfect_and_reversed_orders_are_exact():
    rng = np.random.default_rng(12)
    p = torch.tensor(rng.normal(size=(2, 3000)))
    w = torch.tensor(rng.uniform(0.0, 3.0, size=3000))
    for fn in (tmf.regression_auc, tmf.xauc):
        assert torch.equal(fn(p, 2 * p + 1, w), torch.ones(2, dtype=torch.float64))
        assert torch.equal(fn(p, -p, w), torch.zeros(2, dtype=torch.float64))


def _torchrec_style_rauc(p, y):
    """TorchRec's RAUC recipe, re-written: labels by (prediction, label), 1 - inversions / all pairs."""
    labels = [label for _, label in sorted(zip(p.tolist(), y.tolist(), strict=True))]
    inversions = sum(1 for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] > labels[j])
    n = len(labels)
    return 1 - inversions / (n * (n - 1) / 2)


def test_documented_relation_to_torchrec_rauc():
    """docs/pairwise_auc.md: TorchRec's RAUC is 1 - D/P = (C + T_p + T_y + T_py) / P (weights ignored)."""
    data = watch_time_data(np.random.default_rng(13))
    p, y = data["preds"].double().numpy()[:300], data["target"].double().numpy()[:300]
    counts = _pairwise_counts(torch.tensor(p)[None], torch.tensor(y)[None], None)
    np.testing.assert_allclose(1 - counts.discordant / counts.total, _torchrec_style_rauc(p, y), rtol=1e-12)
    # the docstring example: TorchRec gives 1.0 where ours gives 0.9
    assert _torchrec_style_rauc(np.array([0.1, 0.3, 0.5, 0.5]), np.array([0.0, 1.0, 1.0, 2.0])) == 1.0


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_labels_and_weights_are_accepted(dtype, device_path):
    """uint16/32/64 labels and weights raised NotImplementedError (no min/max kernel for them on the CPU).

    Labels and weights reach the top of each dtype (uint64 ones past 2**63, read as float64, not negative).
    """
    rng = np.random.default_rng(43)
    n = 120
    p = torch.tensor(np.round(rng.normal(size=n), 1))  # prediction ties
    labels = rng.integers(0, 6, size=n).astype(np.uint64) * np.uint64(2 ** (torch.iinfo(dtype).bits - 3))
    y_np = labels.astype(np.float64)  # exact: small integers times a power of two
    weights, w = H.unsigned_weights(rng, dtype, (n,))
    target = H.unsigned(labels, dtype)
    with force_device_path(device_path):
        for cls, fn, ref in ((tmx.XAUC, tmf.xauc, ref_xauc), (tmx.RegressionAUC, tmf.regression_auc, ref_rauc)):
            expected = ref(p.numpy(), y_np, w)
            metric = cls()
            metric.update(p, target, weights)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12, err_msg=cls.__name__)
            np.testing.assert_allclose(fn(p, target, weights).item(), expected, rtol=1e-12, err_msg=fn.__name__)


@pytest.mark.parametrize(("functional", "ref"), [(tmf.xauc, ref_xauc), (tmf.regression_auc, ref_rauc)])
@pytest.mark.parametrize("num_tasks", [None, 2])
def test_functionals_take_weights_that_require_grad(functional, ref, num_tasks):
    """Weights from a model (requiring grad) are read detached, as the classes read them: the value is the
    brute-force pair count's (the kernels' ``out=`` work raised on them)."""
    rng = np.random.default_rng(4)
    shape = (60,) if num_tasks is None else (num_tasks, 60)
    p, y, w = rng.random(shape).round(1), rng.integers(0, 4, shape).astype(float), rng.uniform(0.1, 3.0, shape)
    value = functional(torch.tensor(p, requires_grad=True), torch.tensor(y), torch.tensor(w, requires_grad=True))
    expected = ref(p, y, w) if num_tasks is None else [ref(p[t], y[t], w[t]) for t in range(num_tasks)]
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-12)
    assert not value.requires_grad


def test_int64_labels_beyond_2_53_are_compared_as_float64():
    """docs/pairwise_auc.md: labels are float64, so 2**62 and 2**62 + 1 tie; an offset keeps them apart."""
    preds = torch.tensor([0.1, 0.5, 0.3])
    base = 2**62
    target = torch.tensor([base, base + 1, base - 2**40])
    assert float(base) == float(base + 1)
    # pairs (label order): (base - 2**40, base): 0.3 > 0.1 discordant; (base - 2**40, base + 1): concordant;
    # (base, base + 1): a label tie in float64, not counted -> 1 / 2; with the offset removed it is concordant -> 2 / 3
    tied = Fraction(1, 2)
    exact = Fraction(2, 3)
    assert tmf.regression_auc(preds, target).item() == float(tied)
    assert tmx.RegressionAUC()(preds, target).item() == float(tied)
    assert tmf.regression_auc(preds, target - base).item() == pytest.approx(float(exact), abs=1e-15)
