"""Pointwise metrics through the shared harness, against scikit-learn and numpy formulas."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path

N = 900


# ----------------------------------------------------------------------------- data


def binary_data(
    rng: np.random.Generator,
    num_tasks: int | None = None,
    weights: str | None = None,
    logits: bool = False,
    soft: bool = False,
    real: bool = False,
) -> H.Data:
    """Click-like data: beta-distributed scores (with ties), labels drawn from them."""
    shape = (N,) if num_tasks is None else (num_tasks, N)
    p = rng.beta(2.0, 5.0, size=shape)
    p[..., : N // 5] = np.round(p[..., : N // 5], 2)  # ties
    y = (rng.random(shape) < p).astype(np.int64)
    out: H.Data = {}
    if real:
        out["preds"] = torch.tensor(rng.normal(size=shape) * 3, dtype=torch.float32)
        out["target"] = torch.tensor(rng.normal(size=shape) * 3, dtype=torch.float32)
    else:
        out["preds"] = torch.tensor(np.log(p / (1 - p)) if logits else p, dtype=torch.float32)
        out["target"] = torch.tensor(rng.random(shape), dtype=torch.float32) if soft else torch.tensor(y)
    out["weights"] = H.random_weights(rng, weights, shape)
    return out


# ----------------------------------------------------------------------------- references (numpy / sklearn)


def _w(p, w):
    return np.ones_like(p) if w is None else w


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_cross_entropy(p, y, w, eta=1e-12, logits=False):
    """Weighted CE sum (nats), weight sum, positive weight."""
    w = _w(p, w)
    if logits:
        ce = np.logaddexp(0.0, p) - y * p  # -[y log s(z) + (1-y) log(1-s(z))]
    else:
        q = np.clip(p, eta, 1 - eta)
        ce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return (w * ce).sum(), w.sum(), (w * y).sum()


def ref_ne(p, y, w, **kw):
    ce, total, pos = ref_cross_entropy(p, y, w, **kw)
    base = pos / total
    return (ce / total) / -(base * np.log(base) + (1 - base) * np.log(1 - base))


def ref_log_loss(p, y, w, logits=False):
    if logits or not np.isin(y, (0, 1)).all():
        ce, total, _ = ref_cross_entropy(p, y, w, logits=logits)
        return ce / total
    return skm.log_loss(y, p, sample_weight=w, labels=[0, 1])


def ref_calibration(p, y, w, logits=False):
    w = _w(p, w)
    q = _sigmoid(p) if logits else p
    return (w * q).sum() / (w * y).sum()


def ref_ctr(p, y, w):
    w = _w(p, w)
    return (w * y).sum() / w.sum()


def ref_average(p, w):
    return np.average(p, weights=_w(p, w))


def _labels(p, t, logits):
    return (_sigmoid(p) if logits else p) >= t


def ref_accuracy(p, y, w, t=0.5, logits=False):
    return skm.accuracy_score(y, _labels(p, t, logits), sample_weight=w)


def ref_precision(p, y, w, t=0.5, logits=False):
    return skm.precision_score(y, _labels(p, t, logits), sample_weight=w, zero_division=np.nan)


def ref_recall(p, y, w, t=0.5, logits=False):
    return skm.recall_score(y, _labels(p, t, logits), sample_weight=w, zero_division=np.nan)


def ref_mse(p, y, w):
    return skm.mean_squared_error(y, p, sample_weight=w)


def ref_rmse(p, y, w):
    return skm.root_mean_squared_error(y, p, sample_weight=w)


def ref_mae(p, y, w):
    return skm.mean_absolute_error(y, p, sample_weight=w)


PYW = ("preds", "target", "weights")


def _case(cid, cls, fn, ref, keys=PYW, data_kw=None, metric_kw=None, fn_kw=None, ref_kw=None, num_tasks=None):
    metric_kw = dict(metric_kw or {})
    if num_tasks is not None:
        metric_kw["num_tasks"] = num_tasks
    return H.MetricCase(
        id=cid,
        metric=partial(cls, **metric_kw),
        data=partial(binary_data, num_tasks=num_tasks, **(data_kw or {})),
        reference=H.per_task(ref, *keys, **(ref_kw or {})),
        functional=partial(fn, **(fn_kw or {})),
    )


def _variants(name, cls, fn, ref, real=False, logits=True, soft=False, **kw):
    base = {"real": True} if real else {}
    out = [
        _case(f"{name}", cls, fn, ref, data_kw=dict(base), **kw),
        _case(f"{name}-w", cls, fn, ref, data_kw=dict(base, weights="task"), **kw),
        _case(f"{name}-3task-w", cls, fn, ref, data_kw=dict(base, weights="task"), num_tasks=3, **kw),
        _case(f"{name}-3task-shared-w", cls, fn, ref, data_kw=dict(base, weights="shared"), num_tasks=3, **kw),
    ]
    if logits:
        out.append(
            _case(
                f"{name}-logits-w",
                cls,
                fn,
                ref,
                data_kw={"weights": "task", "logits": True},
                metric_kw={**kw.pop("metric_kw", {}), "from_logits": True},
                fn_kw={**kw.pop("fn_kw", {}), "from_logits": True},
                ref_kw={**kw.pop("ref_kw", {}), "logits": True},
                **kw,
            )
        )
    if soft:
        out.append(_case(f"{name}-soft-w", cls, fn, ref, data_kw={"weights": "task", "soft": True}, **kw))
    return out


_ALL = [
    *_variants("ne", tmx.NormalizedEntropy, tmf.normalized_entropy, ref_ne, soft=True),
    *_variants("logloss", tmx.LogLoss, tmf.log_loss, ref_log_loss, soft=True),
    *_variants("calibration", tmx.Calibration, tmf.calibration, ref_calibration, soft=True),
    *_variants("ctr", tmx.CTR, tmf.ctr, ref_ctr, logits=False, soft=True),
    *_variants(
        "average",
        tmx.WeightedAverage,
        tmf.weighted_average,
        ref_average,
        real=True,
        logits=False,
        keys=("preds", "weights"),
    ),
    *_variants("accuracy", tmx.WeightedAccuracy, tmf.weighted_accuracy, ref_accuracy),
    *_variants("precision", tmx.WeightedPrecision, tmf.weighted_precision, ref_precision),
    *_variants("recall", tmx.WeightedRecall, tmf.weighted_recall, ref_recall),
    *_variants("mse", tmx.WeightedMSE, tmf.weighted_mse, ref_mse, real=True, logits=False),
    *_variants("rmse", tmx.WeightedRMSE, tmf.weighted_rmse, ref_rmse, real=True, logits=False),
    *_variants("mae", tmx.WeightedMAE, tmf.weighted_mae, ref_mae, real=True, logits=False),
    # a threshold that ties with many scores (ties were rounded to 2 decimals)
    _case(
        "precision-t0.3-w",
        tmx.WeightedPrecision,
        tmf.weighted_precision,
        ref_precision,
        data_kw={"weights": "task"},
        metric_kw={"threshold": 0.3},
        fn_kw={"threshold": 0.3},
        ref_kw={"t": 0.3},
    ),
    _case(
        "recall-t0.3-w",
        tmx.WeightedRecall,
        tmf.weighted_recall,
        ref_recall,
        data_kw={"weights": "task"},
        metric_kw={"threshold": 0.3},
        fn_kw={"threshold": 0.3},
        ref_kw={"t": 0.3},
    ),
    _case(
        "ne-eta",
        tmx.NormalizedEntropy,
        tmf.normalized_entropy,
        ref_ne,
        data_kw={"weights": "task"},
        metric_kw={"eta": 0.05},
        fn_kw={"eta": 0.05},
        ref_kw={"eta": 0.05},
    ),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
# the weighted single-task and multi-task cases cover DDP and dtypes; the rest run the cheap checks
DDP_IDS = [i for i in IDS if i.endswith("-3task-w") or i in ("ne-w", "logloss-logits-w", "ctr-soft-w")]


globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=[i for i in IDS if i.endswith("-3task-w")],
        collection=[i for i in IDS if i.endswith("-3task-w") or i.endswith("-logits-w")],
        invariances=[i for i in IDS if i.endswith("-w")],
        ddp=DDP_IDS,
        # the validation's device path (bounds read in one copy, remembered): shared weights, logits, no weights
        device_path=[i for i in IDS if i.endswith(("-3task-shared-w", "-logits-w", "-soft-w")) or "-" not in i],
        # every case never run under DDP (unweighted, shared weights, logits, soft labels), and one that is
        ddp_scenarios=[i for i in IDS if i not in DDP_IDS] + ["ne-3task-w"],
    )
)


# ----------------------------------------------------------------------------- logits: both tails exact


def _mp_cross_entropy(z, y):
    """softplus(z) - y·z in nats, the formula as written, with 400 digits (mpmath): enough for |z| <= 700."""
    import mpmath

    with mpmath.workdps(400):
        z, y = mpmath.mpf(float(z)), mpmath.mpf(float(y))
        return float(mpmath.log1p(mpmath.exp(z)) - y * z)


def test_log_loss_equals_sklearn_exactly_when_probabilities_are_within_eta():
    """Documented: sklearn's log_loss (float64 input) is matched for p in [eta, 1 - eta]; beyond, the clamps differ."""
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 400)
    p = np.concatenate([[1e-12, 1 - 1e-12, 1e-12, 1 - 1e-12], rng.uniform(1e-12, 1 - 1e-12, 396)])
    y[:4] = [1, 0, 0, 1]  # both edges, on either label
    w = rng.uniform(0.0, 2.0, 400)
    got = tmf.log_loss(torch.tensor(p), torch.tensor(y), torch.tensor(w)).item()
    np.testing.assert_allclose(got, skm.log_loss(y, p, sample_weight=w), rtol=1e-12)
    # outside: ours clamps 1e-14 to eta = 1e-12, sklearn (float64 eps 2.2e-16) keeps it
    p, y = np.array([1e-14, 0.7, 0.2]), np.array([1, 0, 1])
    got = tmf.log_loss(torch.tensor(p), torch.tensor(y)).item()
    clamped = -(np.log(1e-12) + np.log(1 - 0.7) + np.log(0.2)) / 3
    np.testing.assert_allclose(got, clamped, rtol=1e-12)
    assert abs(got - skm.log_loss(y, p)) > 0.5  # 10.148 against 11.683
    # eta below 1e-14 and above sklearn's eps: the same interval, the same value
    np.testing.assert_allclose(tmf.log_loss(torch.tensor(p), torch.tensor(y), eta=1e-15).item(), skm.log_loss(y, p))


@pytest.mark.parametrize("eta", [1e-17, 1e-300, 5e-324])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_with_an_eta_below_float64_resolution_of_one_clamps_both_sides(eta, soft):
    """``1 - eta`` rounds to 1 for eta < 2**-54: p = 1 was not clamped, and LogLoss/NE came out nan."""
    p = np.array([1.0, 0.0, 1.0, 0.0, 0.3, 0.8])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0]) if not soft else np.array([1.0, 0.0, 0.25, 0.75, 0.5, 1.0])
    w = np.array([1.0, 2.0, 0.5, 1.5, 1.0, 3.0])
    # every probability clamped to [eta, 1 - eta] in exact arithmetic: log(1 - p) of p = 1 is log(eta)
    log_p = np.where(p == 0, np.log(eta), np.log(np.where(p == 0, 1.0, p)))
    log_q = np.where(p == 1, np.log(eta), np.log1p(-np.where(p == 1, 0.0, p)))
    ce = -(y * log_p + (1 - y) * log_q)
    expected_ll = math.fsum(w * ce) / w.sum()
    base = (w * y).sum() / w.sum()
    expected_ne = expected_ll / -(base * np.log(base) + (1 - base) * np.log1p(-base))
    args = (torch.tensor(p), torch.tensor(y), torch.tensor(w))
    np.testing.assert_allclose(tmf.log_loss(*args, eta=eta).item(), expected_ll, rtol=1e-12)
    np.testing.assert_allclose(tmf.normalized_entropy(*args, eta=eta).item(), expected_ne, rtol=1e-12)
    metric = tmx.LogLoss(eta=eta)
    metric.update(*args)
    np.testing.assert_allclose(metric.compute().item(), expected_ll, rtol=1e-12)


def test_a_weight_total_past_float64_range_is_nan_not_a_finite_value():
    """Finite weights whose float64 total overflows to inf: x / inf made MSE, MAE, precision and recall
    report 0 (true values 0.225, 0.4, 0.5, 0.5 for this batch, whose every weight is the same); documented: nan."""
    big = 1.5e308  # each weight finite, any two of them sum past float64's largest number
    p = torch.tensor([0.9, 0.4, 0.7, 0.2], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    w = torch.full((4,), big, dtype=torch.float64)
    # at weight 1 (the same values: every weight is equal) the values are finite
    assert tmf.weighted_mse(p, y).item() == pytest.approx((0.01 + 0.36 + 0.49 + 0.04) / 4)
    for fn, cls in (
        (tmf.weighted_mse, tmx.WeightedMSE),
        (tmf.weighted_mae, tmx.WeightedMAE),
        (tmf.weighted_rmse, tmx.WeightedRMSE),
        (tmf.weighted_precision, tmx.WeightedPrecision),
        (tmf.weighted_recall, tmx.WeightedRecall),
        (tmf.weighted_accuracy, tmx.WeightedAccuracy),
        (tmf.ctr, tmx.CTR),
        (tmf.log_loss, tmx.LogLoss),
        (tmf.normalized_entropy, tmx.NormalizedEntropy),
    ):
        assert math.isnan(fn(p, y, w).item()), fn.__name__
        metric = cls()
        metric.update(p, y, w)
        assert math.isnan(metric.compute().item()), cls.__name__
    # one heavy row among light ones: precision's tp is finite, tp + fp overflows
    w = torch.tensor([1.0, 1.0, big, big], dtype=torch.float64)
    assert math.isnan(tmf.weighted_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), y, w).item())


def test_a_weighted_sum_past_float64_range_over_a_finite_denominator_is_nan_not_inf():
    """A numerator of finite terms that overflowed (weights near 1e308) over a finite denominator: ``inf / x``
    reported inf where the true ratio is finite (calibration 4, MSE 4, MAE 2, log loss ~34); documented: nan."""
    from fractions import Fraction

    big = torch.tensor([1e308, 1e308], dtype=torch.float64)
    p, y = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.5, 0.0], dtype=torch.float64)
    # sum w·p = 2e308 (past float64), sum w·y = 5e307: the exact ratio is finite
    exact = sum(Fraction(1e308) * Fraction(v) for v in p.tolist()) / (Fraction(1e308) * Fraction(0.5))
    assert math.isfinite(float(exact))
    assert math.isnan(tmf.calibration(p, y, big).item())
    metric = tmx.Calibration()
    metric.update(p, y, big)
    assert math.isnan(metric.compute().item())
    # one weight of 1e308 on an error of 2 (real-valued regression): sum w·e² overflows, sum w does not
    w, pr, tr = torch.tensor([1e308], dtype=torch.float64), torch.tensor([2.0]), torch.tensor([0.0])
    assert float(Fraction(1e308) * 4 / Fraction(1e308)) == 4.0
    for fn, cls in (
        (tmf.weighted_mse, tmx.WeightedMSE),
        (tmf.weighted_mae, tmx.WeightedMAE),
        (tmf.weighted_rmse, tmx.WeightedRMSE),
    ):
        assert math.isnan(fn(pr, tr, w).item()), fn.__name__
        metric = cls()
        metric.update(pr, tr, w)
        assert math.isnan(metric.compute().item()), cls.__name__
    # log loss: every term at most -log(eta), weights 1e307: sum w·CE overflows, sum w = 2e307 does not
    p = torch.tensor([1e-30, 1.0 - 1e-16], dtype=torch.float64)
    y, w = torch.tensor([1.0, 0.0]), torch.tensor([1e307, 1e307], dtype=torch.float64)
    ce = -np.log(np.clip(p.numpy(), 1e-12, 1 - 1e-12)) * np.array([1.0, 0.0]) - np.log1p(
        -np.clip(p.numpy(), 1e-12, 1 - 1e-12)
    ) * np.array([0.0, 1.0])
    assert np.isfinite(ce.mean())
    for fn, cls in ((tmf.log_loss, tmx.LogLoss), (tmf.normalized_entropy, tmx.NormalizedEntropy)):
        assert math.isnan(fn(p, y, w).item()), fn.__name__
        metric = cls()
        metric.update(p, y, w)
        assert math.isnan(metric.compute().item()), cls.__name__
    # from logits every term is finite (800 each here): 1.6e310 overflows, the mean 800 does not
    assert math.isnan(tmf.log_loss(torch.tensor([-800.0, 800.0]), y, w, from_logits=True).item())
    # a term that is itself infinite keeps its value: eta=0, a sure wrong probability
    assert tmf.log_loss(torch.tensor([1.0, 0.3]), torch.tensor([0.0, 1.0]), eta=0.0).item() == math.inf
    # label and tensor averages: a weighted mean of finite values is finite
    heavy = torch.tensor([1e308], dtype=torch.float64)
    assert math.isnan(tmf.label_average(torch.tensor([0.5]), torch.tensor([2.0]), heavy).item())
    assert math.isnan(tmf.tensor_weighted_average(torch.tensor([2.0]), heavy).item())


@pytest.mark.parametrize(
    "fn",
    [
        partial(tmf.log_loss, eta=0.0),
        partial(tmf.log_loss, eta=0.0, unit="bits"),
        partial(tmf.normalized_entropy, eta=0.0),
        partial(tmf.ne_positive, eta=0.0),
    ],
    ids=["log_loss", "log_loss-bits", "ne", "ne_positive"],
)
def test_perfect_predictions_with_eta_zero_give_plus_zero(fn):
    """With eta=0 a sure correct prediction costs 0·log 0 = 0: the loss is +0.0 (it came back as -0.0,
    the negated sum of zero log-likelihoods from the functional twins)."""
    preds, target = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    value = fn(preds, target).item()
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["log_loss", "ne"])
def test_eta_zero_gradients_at_sure_predictions_are_the_derivative(metric, dtype):
    """With eta=0 a sure prediction (p exactly 0 or 1) gave a nan gradient, even on its own label: the lerp of
    logs made 0·(-inf) there, and the branch not chosen sent its nan through ``where``. The gradient of the mean
    cross-entropy is now the derivative (1-y)/(1-p) - y/p, over N, wherever that is finite."""
    p = torch.tensor([0.0, 1.0, 0.3, 0.0, 1.0, 0.7, 0.0], dtype=dtype)
    y = torch.tensor([0.0, 1.0, 1.0, 0.25, 0.0, 0.0, 1.0], dtype=dtype)
    pp, yy = p.double().numpy(), y.double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        # the derivative of -(y·log p + (1-y)·log(1-p)), its terms with a zero label weight left out
        d = np.where(yy == 1, 0.0, (1 - yy) / (1 - pp)) - np.where(yy == 0, 0.0, yy / pp)
    for rows in ([0, 1, 2, 5], [0, 1, 2, 3, 4, 5, 6]):  # sure correct only, then sure wrong too (infinite loss)
        leaf = p[rows].clone().requires_grad_(True)
        if metric == "log_loss":
            value = tmf.log_loss(leaf, y[rows], eta=0.0)
            expected = d[rows] / len(rows)
        else:  # NE = mean CE / H(base rate): the denominator does not depend on p
            value = tmf.normalized_entropy(leaf, y[rows], eta=0.0)
            rate = yy[rows].mean()
            expected = d[rows] / len(rows) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
        value.backward()
        got = leaf.grad.double().numpy()
        assert not np.isnan(got).any(), got
        np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == torch.float32 else 1e-14)


def test_log_loss_from_logits_is_exact_in_both_tails():
    """Confident correct negatives (y = 0, z ≪ 0) lost every digit: log_loss(-40, 0) was 0, not 4.2e-18."""
    z = torch.tensor([-700.0, -300.0, -40.0, -37.5, -20.0, -10.0, -1e-3, 0.0, 3.0, 20.0, 40.0, 300.0])
    z = torch.cat([z, -z]).double()
    for y in (0.0, 1.0, 0.25, 0.5, 0.9, 1e-6, 1 - 1e-6):  # hard and soft labels
        target = torch.full_like(z, y)
        expected = np.array([_mp_cross_entropy(a, y) for a in z.tolist()])
        got = np.array([tmf.log_loss(a.reshape(1), t.reshape(1), from_logits=True).item() for a, t in zip(z, target)])
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0, err_msg=f"y={y}")
        # the class (states summed over a batch of one task per sample)
        metric = tmx.LogLoss(num_tasks=len(z), from_logits=True)
        metric.update(z.reshape(-1, 1), target.reshape(-1, 1))
        np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-14, atol=0, err_msg=f"y={y}")


def test_ne_from_logits_of_confident_correct_predictions_matches_mpmath():
    """A batch of sure, correct predictions: NE's numerator was half the true value (negatives counted 0)."""
    z = torch.tensor([38.0, -38.0, 41.0, -45.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ce = sum(_mp_cross_entropy(a, b) for a, b in zip(z.tolist(), y.tolist()))
    expected = ce / (4 * np.log(2))  # base rate 1/2: the entropy of one sample is log 2
    np.testing.assert_allclose(tmf.normalized_entropy(z, y, from_logits=True).item(), expected, rtol=1e-14)
    metric = tmx.NormalizedEntropy(from_logits=True)
    metric.update(z, y)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-14)


def _logit_gradient(fn, z, y, w):
    """d fn(z, y, w) / dz and / dy by autograd (float64 leaves)."""
    z, y = z.clone().requires_grad_(), y.clone().requires_grad_()
    return torch.autograd.grad(fn(z, y, w), (z, y))


def test_from_logits_gradients_are_right_at_a_logit_of_zero():
    """The logit kernels take ``-|z|`` apart from ``max(z, 0)`` or a ``z >= 0`` branch; autograd gave ``|z|``
    the gradient 0 at ``z = 0`` (a zero-initialised output layer), so the log loss's gradient there was
    ``1 - 2y`` instead of ``sigmoid(0) - y = 0.5 - y`` and the squared error's 0 instead of ``±1/8``.
    Reference: the analytic derivatives (numpy), and central differences for calibration-free NE."""
    z = torch.tensor([0.0, -0.0, 0.0, 0.0, 1.5, -2.0, 40.0, -40.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 0.3, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    zn, yn, wn = z.numpy(), y.numpy(), w.numpy()
    s, c, total = _sigmoid(zn), _sigmoid(-zn), wn.sum()  # c = 1 - s without its rounding
    pos, neg = (wn * yn).sum(), (wn * (1 - yn)).sum()
    entropy = -(pos * np.log(pos / total) + neg * np.log(neg / total))
    cases = {  # d value / dz and d value / dy
        "log_loss": (tmf.log_loss, wn * (s - yn) / total, -wn * zn / total),
        "normalized_entropy": (tmf.normalized_entropy, wn * (s - yn) / entropy, None),
        "ne_positive": (tmf.ne_positive, -wn * yn * c / entropy, None),
        "weighted_mse": (tmf.weighted_mse, 2 * wn * (s - yn) * s * c / total, -2 * wn * (s - yn) / total),
        "weighted_mae": (tmf.weighted_mae, wn * np.sign(s - yn) * s * c / total, None),
    }
    for name, (fn, dz, dy) in cases.items():
        grad_z, grad_y = _logit_gradient(partial(fn, from_logits=True), z, y, w)
        np.testing.assert_allclose(grad_z.numpy(), dz, rtol=1e-12, atol=1e-300, err_msg=name)
        if dy is not None:
            np.testing.assert_allclose(grad_y.numpy(), dy, rtol=1e-12, atol=1e-15, err_msg=name)
    # the class's forward carries the same gradient
    leaf = z.clone().requires_grad_()
    tmx.LogLoss(from_logits=True)(leaf, y, w).backward()
    np.testing.assert_allclose(leaf.grad.numpy(), cases["log_loss"][1], rtol=1e-12)
    # calibration-free NE (its mean prediction's sigmoid too): central differences of its value
    fn = partial(tmf.calibration_free_ne, from_logits=True)
    grad_z, _ = _logit_gradient(fn, z, y, w)
    step, numeric = 1e-6, np.zeros(len(z))
    for i in range(len(z)):
        up, down = z.clone(), z.clone()
        up[i] += step
        down[i] -= step
        numeric[i] = (fn(up, y, w) - fn(down, y, w)).item() / (2 * step)
    np.testing.assert_allclose(grad_z.numpy(), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("flip", [False, True])
def test_ne_clamps_a_base_rate_beyond_eta_inside_the_logs_only(flip):
    """A base rate within ``eta`` of 0 or 1 (TorchRec's clamp): the denominator is the labels' cross-entropy
    against the clamped rate ``c``, ``-W[y log c + (1 - y) log(1 - c)]``, not the entropy of ``c`` that
    docs/pointwise.md's formula read as (10.93 where it gave 6.44)."""
    rng = np.random.default_rng(5)
    y = np.r_[1.0, np.zeros(199)]
    p, w, eta = rng.uniform(0.05, 0.6, 200), rng.uniform(0.5, 1.5, 200), 0.01
    w[0] = 0.6  # base rate 0.6 / sum(w) < eta
    if flip:  # base rate above 1 - eta
        y, p = 1 - y, 1 - p
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
    rate = (w * y).sum() / w.sum()
    c = np.clip(rate, eta, 1 - eta)
    assert c != rate
    expected = ce / -(w.sum() * (rate * np.log(c) + (1 - rate) * np.log(1 - c)))
    preds, target, weights = torch.tensor(p), torch.tensor(y), torch.tensor(w)
    np.testing.assert_allclose(tmf.normalized_entropy(preds, target, weights, eta=eta).item(), expected, rtol=1e-12)
    metric = tmx.NormalizedEntropy(eta=eta)
    metric.update(preds, target, weights)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)
    # the docs write that formula: the clamped rate inside the logs only
    definition = next(
        line
        for line in (Path(__file__).parents[1] / "docs" / "pointwise.md").read_text().splitlines()
        if line.startswith("- `NormalizedEntropy`")
    )
    assert r"\bar y \log c + (1-\bar y)\log(1-c)" in definition
    # NEPositive divides by the same normaliser (TorchRec's ne_positive); its docstrings wrote the
    # unclamped entropy of the base rate, 0.191 where the value is 0.182 (no flip)
    positive = -(w * y * np.log(p)).sum() / -(w.sum() * (rate * np.log(c) + (1 - rate) * np.log(1 - c)))
    np.testing.assert_allclose(tmf.ne_positive(preds, target, weights, eta=eta).item(), positive, rtol=1e-12)
    metric = tmx.NEPositive(eta=eta)
    metric.update(preds, target, weights)
    np.testing.assert_allclose(metric.compute().item(), positive, rtol=1e-12)
    for documented in (tmx.NEPositive, tmf.ne_positive):
        assert r"\bar y \log c + (1-\bar y)\log(1-c)" in (documented.__doc__ or ""), documented


# ----------------------------------------------------------------------------- unsigned labels and weights

_UNSIGNED_POINTWISE = [
    (tmx.NormalizedEntropy, tmf.normalized_entropy, ref_ne),
    (tmx.CTR, tmf.ctr, ref_ctr),
    (tmx.Calibration, tmf.calibration, ref_calibration),
    (tmx.WeightedAccuracy, tmf.weighted_accuracy, ref_accuracy),
    (tmx.WeightedMSE, tmf.weighted_mse, ref_mse),
]


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_labels_and_weights_are_accepted(dtype, device_path):
    """uint16/32/64 labels and weights raised NotImplementedError (no min/max kernel for them on the CPU).

    The weights reach the top of each dtype (uint64 ones past 2**63, which must not read as negative).
    """
    data = binary_data(np.random.default_rng(31))
    p, y = data["preds"], data["target"]
    weights, w = H.unsigned_weights(np.random.default_rng(32), dtype, (N,))
    p_np, y_np = p.double().numpy(), y.numpy().astype(np.float64)
    with force_device_path(device_path):
        for cls, fn, ref in _UNSIGNED_POINTWISE:
            expected = ref(p_np, y_np, w)
            metric = cls()
            metric.update(p, y.to(dtype), weights)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12, err_msg=cls.__name__)
            got = fn(p, y.to(dtype), weights).item()
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=fn.__name__)


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_labels_out_of_range_are_rejected_with_their_true_range(dtype, device_path):
    """A uint64 label of 2**63 is named as such (not wrapped to -2**63); the state is untouched."""
    top = 2**63 if dtype == torch.uint64 else torch.iinfo(dtype).max
    p = torch.tensor([0.2, 0.7, 0.4])
    with force_device_path(device_path):
        metric = tmx.NormalizedEntropy()
        metric.update(p, torch.tensor([0, 1, 1]))
        before = H.state_values(metric)
        shown = f"{float(top):.6g}".replace("+", r"\+")
        with pytest.raises(ValueError, match=rf"`target` to hold labels in \[0, 1\].*values in \[0, {shown}\]"):
            metric.update(p, H.unsigned([0, top, 1], dtype))
        H.assert_same_values(metric, before, "rejected batch")


_ZERO_WEIGHT_NAN = (
    "LogLoss",
    "CTR",
    "WeightedAverage",
    "WeightedAccuracy",
    "WeightedMSE",
    "WeightedRMSE",
    "WeightedMAE",
)


@pytest.mark.parametrize("name", _ZERO_WEIGHT_NAN)
def test_docstring_says_zero_total_weight_is_nan_and_it_is(name):
    """These classes' docstrings said nothing of an undefined value; each now states it, and it holds."""
    cls = getattr(tmx, name)
    note = " ".join(cls.__doc__.split("Note:")[1].split("Examples:")[0].split())
    assert "``nan`` plus ``UndefinedMetricWarning`` while the total weight is zero" in note
    metric = cls()
    metric.update(torch.tensor([0.2, 0.7]), torch.tensor([0.0, 1.0]), torch.zeros(2))
    with pytest.warns(tmx.UndefinedMetricWarning):
        assert math.isnan(metric.compute().item())


def _exact_accuracy(preds, target, weights, threshold=0.5):
    """Weighted accuracy in exact rationals from the float64 values of the inputs."""
    p, t, w = (x.double().flatten().tolist() for x in (preds, target, weights))
    right = sum(
        (Fraction(wi) for pi, ti, wi in zip(p, t, w, strict=True) if (pi >= threshold) == (ti == 1)), Fraction(0)
    )
    return right / sum(map(Fraction, w), Fraction(0))


@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        ("all_wrong_huge", torch.float64),  # exact 1e-300: TN = W - (TP+FP+FN) is rounding noise of ~1e-14 W
        ("one_wrong_huge", torch.float64),  # exact 1 - 1e-300
        ("lognormal", torch.float64),  # weights over 1e-150 .. 1e150
        ("random", torch.float16),
        ("random", torch.bfloat16),
        ("near_zero", torch.bfloat16),
    ],
)
def test_weighted_accuracy_error_is_rounding_of_the_total(case, dtype):
    """The documented bound (docs/pointwise.md): TN as a difference of float64 sums leaves an absolute error of the
    order of the sums' rounding relative to the total weight (2e-13 allowed, for 1e6 rows; 2e4 rows here), never
    more, whatever the weights' magnitude or the inputs' dtype; every prediction right is exactly 1."""
    g = torch.Generator().manual_seed(7)
    n = 20_000
    p = torch.rand(n, generator=g, dtype=torch.float64)
    if case in ("all_wrong_huge", "one_wrong_huge"):
        t = (p < 0.5).double() if case == "all_wrong_huge" else (p >= 0.5).double()
        w = torch.full((n,), 1e300 / n, dtype=torch.float64)
        p[0], t[0], w[0] = 0.9, float(case == "all_wrong_huge"), 1.0
    elif case == "lognormal":
        t = (torch.rand(n, generator=g) < 0.3).double()
        w = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 60).clamp(max=1e300 / n)
    elif case == "random":
        t = (torch.rand(n, generator=g) < 0.5).double()
        w = torch.rand(n, generator=g, dtype=torch.float64) * 60000
    else:  # near_zero: one right row of the lowest weight
        t = (p < 0.5).double()
        t[0] = float(p[0] >= 0.5)
        w = torch.rand(n, generator=g, dtype=torch.float64) * 60000 + 1
    p, t, w = p.to(dtype), t.to(dtype), w.to(dtype)
    metric = tmx.WeightedAccuracy()
    half = n // 3
    metric.update(p[:half], t[:half], w[:half])
    metric.update(p[half:], t[half:], w[half:])
    got = metric.compute().item()
    assert abs(Fraction(got) - _exact_accuracy(p, t, w)) <= Fraction(2e-13), (got, float(_exact_accuracy(p, t, w)))
    right = (p.double() >= 0.5).to(dtype)
    assert tmf.weighted_accuracy(p, right, w).item() == 1.0


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("ne", None),
        ("auc", lambda y, p, w: skm.roc_auc_score(y, p, sample_weight=w)),
        ("log_loss", lambda y, p, w: skm.log_loss(y, p, sample_weight=w)),
    ],
)
def test_labels_of_minus_one_are_refused_with_the_weight_zero_recipe_that_then_gives_the_labelled_rows(name, reference):
    """A label of -1 ("no label", a common logging convention) is refused naming the fix: weight 0 and a label in
    [0, 1]; following it gives the values of the labelled rows alone (sklearn; NE as numpy's formula)."""
    rng = np.random.default_rng(11)
    p = rng.uniform(0.05, 0.95, 200)
    y = rng.integers(-1, 2, 200).astype(np.float64)  # -1, 0 or 1
    module = tmx.RecMetricModule(["click"], [name], throughput=False)
    step = {"prediction": torch.from_numpy(p), "label": torch.from_numpy(y)}
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]\. If -1 marks rows without a label, give them"):
        module.update(step)
    # nothing of the refused step stays: the values below are those of the accepted step alone
    labels = torch.from_numpy(y)
    module.update({**step, "label": labels.clamp(min=0), "weight": (labels >= 0).double()})
    got = float(module.compute()[f"{name}/click"])
    kept = y >= 0
    yk, pk = y[kept], p[kept]
    if reference is None:
        base = yk.mean()
        want = -np.mean(yk * np.log(pk) + (1 - yk) * np.log(1 - pk)) / -(
            base * np.log(base) + (1 - base) * np.log(1 - base)
        )
    else:
        want = reference(yk, pk, None)
    assert got == pytest.approx(want, rel=1e-12)
