"""Cross-entropy from probabilities at tiny predictions and base rates, against 50-digit mpmath references.

A label-0 term is computed as ``log(1 - p)`` (not ``log1p(-p)``, about twice as slow): ``1 - p`` rounds
by up to ``2**-54`` for ``p < 1/2``, so the cross-entropy sum may be off by ``2**-53`` nats per unit of
label-0 weight (the documented bound, see ``_cross_entropy_update`` and the Notes of ``NormalizedEntropy``
and ``LogLoss``). These tests hold every path (the functions, the classes, ``RecMetricModule``'s 0/1-label
path) to that bound, and the gradients to float64 precision, near 0 and 1.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf

ETA = 1e-12
DIGITS = 50
# every other rounding (the logs, lerp, the weights' products, float64 sums of a few thousand terms)
SLACK = 1e-13


def _mp_reference(p: np.ndarray, y: np.ndarray, w: np.ndarray | None, eta: float = ETA) -> tuple:
    """``(cross-entropy sum, total weight, label-0 weight, LogLoss, NE)`` of one task, the formulas with 50 digits.

    Probabilities are clamped to ``[eta, 1 - eta]`` (``1 - eta`` as float64 rounds it, as the metric's bound);
    the base rate inside the denominator's logs too (TorchRec's rule).
    """
    with mpmath.workdps(DIGITS):
        mpf = mpmath.mpf
        low, high = mpf(eta), mpf(1 - eta)
        w = np.ones_like(p) if w is None else w
        ce = total = pos = neg = mpf(0)
        for a, b, c in zip(p.tolist(), y.tolist(), w.tolist()):
            q, b, c = min(max(mpf(a), low), high), mpf(b), mpf(c)
            ce -= c * (b * mpmath.log(q) + (1 - b) * mpmath.log1p(-q))
            total, pos, neg = total + c, pos + c * b, neg + c * (1 - b)
        base = min(max(pos / total, low), high)
        norm = -(pos * mpmath.log(base) + (total - pos) * mpmath.log1p(-base))
        return ce, total, neg, ce / total, ce / norm if pos > 0 else None


def _assert_within_bound(got: float, expected, ce_sum, label0_weight, what: str) -> None:
    """``got`` within the documented bound of ``expected``: relative ``2**-53 · label-0 weight / CE sum`` (+ slack)."""
    with mpmath.workdps(DIGITS):
        bound = mpmath.mpf(2) ** -53 * label0_weight / ce_sum + SLACK
        error = abs((mpmath.mpf(got) - expected) / expected)
        assert error <= bound, f"{what}: relative error {float(error):.3g} above the bound {float(bound):.3g}"


def _tiny_data(rng: np.random.Generator, n: int, base_rate: float, mode: str, low: float, high: float) -> tuple:
    """Predictions log-uniform in ``[low, high]``; labels and weights giving about ``base_rate``.

    ``weighted``: four positives of weight 1, negatives weighted to the base rate (0/1 labels);
    ``soft``: unweighted soft labels with mean ``base_rate``; ``binary``: unweighted 0/1 labels;
    ``negatives``: label 0 alone (LogLoss only, NE is undefined).
    """
    p = np.exp(rng.uniform(np.log(low), np.log(high), n))
    w = None
    if mode == "weighted":
        y = np.zeros(n)
        y[:4] = 1
        w = rng.uniform(0.5, 1.5, n)
        w[:4] = 1
        w[4:] *= (4 / base_rate - 4) / w[4:].sum()
    elif mode == "soft":
        y = rng.uniform(0, 2 * base_rate, n)
    elif mode == "binary":
        y = np.zeros(n)
        y[: max(1, round(base_rate * n))] = 1
    else:
        y = np.zeros(n)
    return p, y, w


CASES = [
    # (mode, base rate, n, prediction range)
    ("weighted", 1e-9, 1500, (1e-12, 1e-6)),
    ("weighted", 1e-9, 1500, (1e-12, 1.0001e-12)),  # at the clamp: label-0 terms off by up to 5.6e-5 relative
    ("weighted", 1e-9, 1500, (1e-9, 1.0001e-9)),
    ("weighted", 1e-6, 1500, (1e-12, 1e-6)),
    ("weighted", 1e-4, 1500, (1e-12, 1e-6)),
    ("soft", 1e-9, 1500, (1e-12, 1e-6)),
    ("soft", 1e-6, 1500, (1e-12, 1e-9)),
    ("binary", 1e-4, 20000, (1e-12, 1e-6)),
    ("negatives", 0.0, 1500, (1e-12, 1e-6)),
    ("negatives", 0.0, 1500, (1e-12, 1.0001e-12)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_log_loss_and_ne_at_tiny_predictions_and_base_rates_within_the_documented_bound(case, dtype):
    mode, base_rate, n, bounds = CASES[case]
    rng = np.random.default_rng(case)
    p, y, w = _tiny_data(rng, n, base_rate, mode, *bounds)
    preds, target = torch.tensor(p, dtype=dtype), torch.tensor(y, dtype=dtype)
    weights = None if w is None else torch.tensor(w, dtype=dtype)
    # the reference sees exactly the values the metric gets (float32 values are exact in float64)
    as64 = lambda t: None if t is None else t.double().numpy()  # noqa: E731
    ce, _, label0, log_loss, ne = _mp_reference(as64(preds), as64(target), as64(weights))
    what = f"{mode} base rate {base_rate} p in {bounds} {dtype}"
    _assert_within_bound(tmf.log_loss(preds, target, weights).item(), log_loss, ce, label0, f"log_loss {what}")
    metric = tmx.LogLoss()
    metric.update(preds, target, weights)
    _assert_within_bound(metric.compute().item(), log_loss, ce, label0, f"LogLoss {what}")
    if ne is None:
        return
    _assert_within_bound(tmf.normalized_entropy(preds, target, weights).item(), ne, ce, label0, f"ne {what}")
    metric = tmx.NormalizedEntropy()
    for part in range(3):  # several batches: the states' sums
        s = slice(part * n // 3, (part + 1) * n // 3)
        metric.update(preds[s], target[s], None if weights is None else weights[s])
    _assert_within_bound(metric.compute().item(), ne, ce, label0, f"NormalizedEntropy {what}")
    # recalibration by 1 changes nothing: the same kernel
    value = tmf.recalibrated_ne(preds, target, weights, recalibration_coefficient=1.0).item()
    _assert_within_bound(value, ne, ce, label0, f"recalibrated_ne {what}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_multi_task_and_module_0_1_label_path_at_tiny_base_rates(weighted, dtype):
    """Two tasks at base rates 1e-9 and 1e-5 (weighted) or 1e-4 and 1e-3 (unweighted), through the functions,
    the classes and ``RecMetricModule`` (whose validated 0/1 labels take the one-log path)."""
    rng = np.random.default_rng(11 + weighted)
    n = 3000
    rates = (1e-9, 1e-5) if weighted else (1e-4, 1e-3)
    tasks = [_tiny_data(rng, n, rate, "weighted" if weighted else "binary", 1e-12, 1e-6) for rate in rates]
    preds = torch.tensor(np.stack([t[0] for t in tasks]), dtype=dtype)
    target = torch.tensor(np.stack([t[1] for t in tasks]), dtype=dtype)
    weights = torch.tensor(np.stack([t[2] for t in tasks]), dtype=dtype) if weighted else None
    as64 = lambda t: None if t is None else t.double().numpy()  # noqa: E731
    refs = [
        _mp_reference(as64(preds[i]), as64(target[i]), None if weights is None else as64(weights[i])) for i in range(2)
    ]
    ne_fn = tmf.normalized_entropy(preds, target, weights)
    ll_fn = tmf.log_loss(preds, target, weights)
    ne_cls, ll_cls = tmx.NormalizedEntropy(num_tasks=2), tmx.LogLoss(num_tasks=2)
    ne_cls.update(preds, target, weights)
    ll_cls.update(preds, target, weights)
    # unweighted: the default weight column "weight", absent from the steps (weight 1, no warning)
    infos = [tmx.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}", f"w{i}" if weighted else "weight") for i in range(2)]
    module = tmx.RecMetricModule(infos, {"ne": "ne", "log_loss": "log_loss"}, throughput=False)
    # integer labels: the module knows them to be 0/1 and takes the one-log path
    step = {f"p{i}": preds[i] for i in range(2)} | {f"y{i}": target[i].long() for i in range(2)}
    if weights is not None:
        step |= {f"w{i}": weights[i] for i in range(2)}
    module.update(step)
    values = module.compute()
    for i, (ce, _, label0, log_loss, ne) in enumerate(refs):
        for name, got in (("fn", ne_fn[i]), ("class", ne_cls.compute()[i]), ("module", values[f"ne/t{i}"])):
            _assert_within_bound(got.item(), ne, ce, label0, f"NE {name} task {i}")
        for name, got in (("fn", ll_fn[i]), ("class", ll_cls.compute()[i]), ("module", values[f"log_loss/t{i}"])):
            _assert_within_bound(got.item(), log_loss, ce, label0, f"LogLoss {name} task {i}")


def test_label_0_error_is_absolute_not_relative_to_p():
    """The documented limit itself: label-0 samples alone near the clamp, where one term's relative error may
    reach 5.6e-17 / p (2e-5 here, an identical p: the same rounding of ``1 - p`` in every term). Their mean is
    within 2**-53 nats of the true value (a more precise form passes too)."""
    p = np.full(64, 3e-12)
    y = np.zeros(64)
    _, _, _, log_loss, _ = _mp_reference(p, y, None)
    got = tmf.log_loss(torch.tensor(p), torch.tensor(y)).item()
    with mpmath.workdps(DIGITS):
        assert abs(mpmath.mpf(got) - log_loss) <= mpmath.mpf(2) ** -53 + SLACK * log_loss


# ----------------------------------------------------------------------------- gradients


P_GRAD = [0.0, 1e-12, 1.5e-12, 1e-9, 0.3, 0.5, 1 - 1e-9, 1 - 1.5e-12, 1.0]


def _mp_grad_ce(p: float, y: float, eta: float = ETA) -> float:
    """d CE / dp of one sample by mpmath's numerical derivative of ``-(y log q + (1 - y) log1p(-q))``, 50 digits.

    Outside ``[eta, 1 - eta]`` (p exactly 0 or 1) the clamp holds the value still: 0.
    """
    with mpmath.workdps(DIGITS):
        if not eta <= p <= 1 - eta:
            return 0.0
        return float(mpmath.diff(lambda q: -(y * mpmath.log(q) + (1 - y) * mpmath.log1p(-q)), mpmath.mpf(p)))


@pytest.mark.parametrize("label", [0.0, 1.0, 0.25])
def test_gradients_near_0_and_1_match_mpmath(label):
    """d LogLoss / dp and d NE / dp at p near 0 and 1, and 0 at p exactly 0 or 1 (clamped by eta)."""
    p = torch.tensor(P_GRAD, dtype=torch.float64)
    # a second label so that NE is defined: the sample at 0.5 takes the other class
    y = torch.full_like(p, label)
    y[5] = 1.0 - label if label in (0.0, 1.0) else 1.0
    w = torch.linspace(0.5, 2.0, len(p), dtype=torch.float64)
    ce_grad = np.array([_mp_grad_ce(a, b) for a, b in zip(p.tolist(), y.tolist())])
    wn, yn = w.numpy(), y.numpy()
    with mpmath.workdps(DIGITS):
        total, pos = mpmath.fsum(wn.tolist()), mpmath.fsum((wn * yn).tolist())
        base = pos / total
        norm = float(-(pos * mpmath.log(base) + (total - pos) * mpmath.log1p(-base)))
    expected = {"log_loss": wn * ce_grad / float(total), "normalized_entropy": wn * ce_grad / norm}
    for name, fn in (("log_loss", tmf.log_loss), ("normalized_entropy", tmf.normalized_entropy)):
        leaf = p.clone().requires_grad_()
        (grad,) = torch.autograd.grad(fn(leaf, y, w), leaf)
        np.testing.assert_allclose(grad.numpy(), expected[name], rtol=4e-15, atol=0, err_msg=name)
    # the classes' forward carries the same gradients
    for name, cls in (("log_loss", tmx.LogLoss), ("normalized_entropy", tmx.NormalizedEntropy)):
        leaf = p.clone().requires_grad_()
        cls()(leaf, y, w).backward()
        np.testing.assert_allclose(leaf.grad.numpy(), expected[name], rtol=4e-15, atol=0, err_msg=f"{name} class")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_of_float32_leaves_at_tiny_p(dtype):
    """A float32 leaf gets the float64 kernel's gradient, rounded once to its dtype."""
    p = torch.tensor([1e-11, 1e-9, 1e-7, 0.5], dtype=dtype)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=dtype)
    leaf = p.clone().requires_grad_()
    (grad,) = torch.autograd.grad(tmf.log_loss(leaf, y), leaf)
    expected = np.array([_mp_grad_ce(a, b) / 4 for a, b in zip(p.double().tolist(), y.double().tolist())])
    rtol = 1.2e-7 if dtype == torch.float32 else 4e-15
    np.testing.assert_allclose(grad.double().numpy(), expected, rtol=rtol, atol=0)


# ----------------------------------------------------------------------------- base rates within 1e-9 of 1


def _near_all_positive(case: str, dtype: torch.dtype) -> list[tuple]:
    """Batches ``(preds, target, weights)`` whose labels are nearly all 1 and whose weights are not integers.

    ``fractional``: ~1.04e9 of positive weight in fractions, 0.3 of negative weight (base rate 1 - 3e-10);
    ``huge``: weights of 1e30 beside a negative weight of 3e21 (1 - 1.5e-9); ``soft``: weighted soft labels
    ``1 - 1e-10`` (``1 - 2**-24`` in float32, where ``1 - 1e-10`` rounds to 1); ``many``: 2,000 updates of
    positives of weight 12.3 with three negatives of weight 0.1 among 16,000 samples.
    """
    t = lambda *v: torch.tensor(v, dtype=dtype)  # noqa: E731
    if case == "fractional":
        return [
            (t(0.999, 0.9, 0.5), t(1.0, 1.0, 0.0), t(4.1e8 + 0.3, 6.3e8 + 0.7, 0.1)),
            (t(0.3, 0.99), t(0.0, 1.0), t(0.2, 1e3 + 0.1)),
        ]
    if case == "huge":
        return [(t(0.9, 0.5, 0.1), t(1.0, 1.0, 0.0), t(1e30, 1e30, 3e21))]
    if case == "soft":
        soft = 1 - 1e-10 if dtype == torch.float64 else 1 - 2**-24
        return [(t(1 - 1e-10, 0.9, 0.99), t(soft, soft, 1.0), t(3e8 + 0.3, 1.7e7 + 0.1, 2.5))] * 2
    p, y, w = t(*[0.9] * 8), t(*[1.0] * 8), t(*[12.3] * 8)
    negative, negative_weights = y.clone(), w.clone()
    negative[3], negative_weights[3] = 0.0, 0.1
    return [(p, negative, negative_weights) if i in (10, 1000, 1999) else (p, y, w) for i in range(2000)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["fractional", "huge", "soft", "many"])
def test_ne_at_base_rates_within_1e_9_of_1_keeps_the_negative_weight(case, dtype):
    """NE's normaliser from the label-0 weight summed as such, not as ``total - pos``.

    That difference keeps only ``ulp(total)`` of a negative weight of 0.3 beside 1e9 (relative ``1.5e-7`` in
    NE before; ``3e-9`` at weights of 1e30; ``5e-11`` over 100,000 updates). Expected now: a few float64
    roundings of sums of a handful of terms and of the logs (``1e-14``); ``many`` adds 2,000 roundings of
    the accumulated states (``2000 * 2**-53 = 2.2e-13`` at most).
    """
    batches = _near_all_positive(case, dtype)
    as64 = lambda t: t.double().numpy()  # noqa: E731
    p, y, w = (np.concatenate([as64(b[i]) for b in batches]) for i in range(3))
    ce, _, _, log_loss, ne = _mp_reference(p, y, w)
    with mpmath.workdps(DIGITS):  # NE_+ over the same normaliser, p clamped to [eta, 1 - eta] as the metric's
        q = np.clip(p, ETA, 1 - ETA)
        positive = -mpmath.fsum(mpmath.mpf(c) * mpmath.mpf(b) * mpmath.log(mpmath.mpf(a)) for a, b, c in zip(q, y, w))
        ne_positive = positive * ne / ce
    bound = 3e-13 if case == "many" else 1e-14
    metrics = {
        "NormalizedEntropy": (tmx.NormalizedEntropy(), ne),
        "RecalibratedNE": (tmx.RecalibratedNE(recalibration_coefficient=1.0), ne),
        "NEPositive": (tmx.NEPositive(), ne_positive),
        "LogLoss": (tmx.LogLoss(), log_loss),
    }
    for name, (metric, expected) in metrics.items():
        for batch in batches:
            metric.update(*batch)
        with mpmath.workdps(DIGITS):
            error = abs((mpmath.mpf(metric.compute().item()) - expected) / expected)
        assert error <= bound, f"{name} {case} {dtype}: relative error {float(error):.3g}"
    if case != "many":
        preds, target, weights = (torch.cat([b[i] for b in batches]) for i in range(3))
        for name, fn, expected in (
            ("normalized_entropy", tmf.normalized_entropy, ne),
            ("ne_positive", tmf.ne_positive, ne_positive),
            ("recalibrated_ne", tmf.recalibrated_ne, ne),
        ):
            with mpmath.workdps(DIGITS):
                error = abs((mpmath.mpf(fn(preds, target, weights).item()) - expected) / expected)
            assert error <= bound, f"{name} {case} {dtype}: relative error {float(error):.3g}"


def test_ne_multi_task_with_an_all_positive_task_and_a_nearly_all_positive_one():
    """One task all positive (undefined: ``nan`` with a warning), one at a base rate of ``1 - 3e-10``."""
    batches = _near_all_positive("fractional", torch.float64)
    metric = tmx.NormalizedEntropy(num_tasks=2)
    for p, y, w in batches:
        metric.update(torch.stack([p, p]), torch.stack([torch.ones_like(y), y]), w)
    with pytest.warns(tmx.UndefinedMetricWarning):
        value = metric.compute()
    p, y, w = (np.concatenate([b[i].numpy() for b in batches]) for i in range(3))
    ne = _mp_reference(p, y, w)[4]
    assert torch.isnan(value[0])
    with mpmath.workdps(DIGITS):
        assert abs((mpmath.mpf(value[1].item()) - ne) / ne) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_calibration_free_ne_with_base_rate_and_mean_prediction_within_1e_9_of_1(dtype):
    """CalibrationFreeNE's constant-prediction cross-entropy weighs the label-0 weight by ``-log(1 - p̄)`` (~20 here):
    as ``total - pos`` it was off by ``5e-8`` relative; expected now: a few float64 roundings (``1e-14``)."""
    batches = [
        tuple(torch.tensor(v, dtype=dtype) for v in vs)
        for vs in (
            ((1 - 1e-9, 1 - 2e-9, 0.5), (1.0, 1.0, 0.0), (4.1e8 + 0.3, 6.3e8 + 0.7, 0.1)),
            ((0.3, 0.99), (0.0, 1.0), (0.2, 1e3 + 0.1)),
        )
    ]
    p, y, w = (np.concatenate([b[i].double().numpy() for b in batches]) for i in range(3))
    with mpmath.workdps(DIGITS):
        mpf = mpmath.mpf
        q = [min(max(mpf(a), mpf(ETA)), mpf(1 - ETA)) for a in p]
        ce = -mpmath.fsum(
            mpf(c) * (mpf(b) * mpmath.log(a) + (1 - mpf(b)) * mpmath.log1p(-a)) for a, b, c in zip(q, y, w)
        )
        total = mpmath.fsum(mpf(c) for c in w)
        pos = mpmath.fsum(mpf(c) * mpf(b) for b, c in zip(y, w))
        mean = mpmath.fsum(mpf(c) * mpf(a) for a, c in zip(p, w)) / total
        expected = ce / -(pos * mpmath.log(mean) + (total - pos) * mpmath.log1p(-mean))
    metric = tmx.CalibrationFreeNE()
    for batch in batches:
        metric.update(*batch)
    function = tmf.calibration_free_ne(*(torch.cat([b[i] for b in batches]) for i in range(3)))
    for name, got in (("class", metric.compute()), ("function", function)):
        with mpmath.workdps(DIGITS):
            error = abs((mpmath.mpf(got.item()) - expected) / expected)
        assert error <= 1e-14, f"{name} {dtype}: relative error {float(error):.3g}"


@pytest.mark.parametrize("torchrec_scaling", [False, True])
@pytest.mark.parametrize("mean_gap", [5.05e-14, 1e-15])  # 1 - p̄, below eta: the clamp binds
def test_calibration_free_ne_clamps_a_mean_prediction_within_eta_of_1_as_1_minus_the_clamp(mean_gap, torchrec_scaling):
    """The constant prediction p̄ is clamped to ``c = min(p̄, 1 - eta)`` (1 - eta as float64 rounds it), and its
    complement is ``1 - c`` (TorchRec's ``log(1 - clamp(p̄))``, the numerator's ``1 - p``), not ``eta``: those differ by
    ``ulp(1)/eta ~ 1e-4`` relative, ``8.5e-12`` in the value here; expected now: a few float64 roundings."""
    p = np.array([1 - 2 * mean_gap + 1e-16, 1 - 1e-16])
    y = np.array([1 - 1e-12, 1 - 3e-12])
    w = np.array([2.0, 0.5])
    with mpmath.workdps(DIGITS):
        mpf = mpmath.mpf
        high = mpf(1 - ETA)  # float64's 1 - 1e-12
        q = [min(max(mpf(a), mpf(ETA)), high) for a in p]
        ce = -mpmath.fsum(
            mpf(c) * (mpf(b) * mpmath.log(a) + (1 - mpf(b)) * mpmath.log1p(-a)) for a, b, c in zip(q, y, w)
        )
        total = mpmath.fsum(mpf(c) for c in w)
        pos, neg = (
            mpmath.fsum(mpf(c) * mpf(b) for b, c in zip(y, w)),
            mpmath.fsum(mpf(c) * (1 - mpf(b)) for b, c in zip(y, w)),
        )
        mean = min(max(mpmath.fsum(mpf(c) * mpf(a) for a, c in zip(p, w)) / total, mpf(ETA)), high)
        constant = -(pos * mpmath.log(mean) + neg * mpmath.log1p(-mean))
        expected = ce / constant
        if torchrec_scaling:  # NE over the summed constant cross-entropy in bits
            base = min(max(pos / total, mpf(ETA)), high)
            ne = ce / -(pos * mpmath.log(base) + neg * mpmath.log1p(-base))
            expected = ne / (constant / mpmath.log(2))
    # weighted: the label-0 weight is then summed as such (unweighted soft labels take it as N - sum y,
    # off by ~N·1e-16, relative 3e-5 here: a documented limit, not what this test is about; unit weights
    # are read as no weights)
    preds, target, weights = torch.tensor(p), torch.tensor(y), torch.tensor(w)
    got_function = tmf.calibration_free_ne(preds, target, weights, torchrec_scaling=torchrec_scaling)
    got_class = tmx.CalibrationFreeNE(torchrec_scaling=torchrec_scaling)(preds, target, weights)
    for name, got in (("function", got_function), ("class", got_class)):
        with mpmath.workdps(DIGITS):
            error = abs((mpmath.mpf(got.item()) - expected) / expected)
        assert error <= 1e-14, f"{name}: relative error {float(error):.3g}"


@pytest.mark.parametrize(
    "cls", [tmx.NormalizedEntropy, tmx.NEPositive, tmx.RecalibratedNE, tmx.LogLoss, tmx.CalibrationFreeNE]
)
def test_checkpoint_without_neg_labels_loads_it_as_total_minus_pos(cls):
    """Checkpoints written before ``neg_labels`` existed (three states) load strictly, the state derived."""
    old, new = cls(), cls()
    old.persistent(True)
    new.persistent(True)
    p = torch.tensor([0.2, 0.7, 0.9, 0.4], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0, 0.25], dtype=torch.float64)
    w = torch.tensor([1.5, 2.0, 0.5, 4.0], dtype=torch.float64)
    old.update(p, y, w)
    checkpoint = old.state_dict()
    assert "neg_labels" in checkpoint
    del checkpoint["neg_labels"]
    new.load_state_dict(checkpoint, strict=True)
    total, pos = float(w.sum()), float((w * y).sum())  # 8 and 3.5: exact in binary, so is their difference
    assert new.neg_labels.tolist() == [total - pos] == [4.5]
    torch.testing.assert_close(new.compute(), old.compute(), rtol=1e-15, atol=0)
    new.update(p, y, w)  # the next updates add to it
    assert new.neg_labels.tolist() == [9.0]


def test_ne_base_rate_clamped_within_eta_of_1_as_torchrec():
    """Where the base rate is above ``1 - eta`` the normaliser is TorchRec's ``-(pos log c + neg log(1 - c))`` with
    ``c = 1 - eta`` as float64 rounds it (``1 - c = 1.0000889e-12``), as the predictions' clamp: the complement of
    the base rate, summed on its own, is clamped to that same number."""
    eta = 1e-12
    p = torch.tensor([0.9, 0.2], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    w = torch.tensor([1e14, 1.0], dtype=torch.float64)
    with mpmath.workdps(DIGITS):
        mpf = mpmath.mpf
        ce = -(mpf(1e14) * mpmath.log(mpf(0.9)) + mpmath.log1p(-mpf(0.2)))
        c = mpf(1 - eta)  # the float64 1 - eta, exactly
        expected = ce / -(mpf(1e14) * mpmath.log(c) + mpmath.log1p(-c))
        for got in (tmf.normalized_entropy(p, y, w), tmx.NormalizedEntropy()(p, y, w)):
            assert abs((mpmath.mpf(got.item()) - expected) / expected) <= 1e-14


def _strip_neg_labels(obj) -> None:
    """Make a copy's NE-family objects what an earlier version pickled: no ``neg_labels`` state, rule or ring column."""
    from torchmetrics_ext.wrappers._ring import StateRing

    seen: set[int] = set()

    def visit(o) -> None:
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, StateRing) and "neg_labels" in o.kinds:
            del o.kinds["neg_labels"]
            o.groups["sum"].remove("neg_labels")
            o.tensor_names.remove("neg_labels")
            for part in (o.defaults, o.rings, o.back):
                del part["neg_labels"]
            return
        if isinstance(o, torch.nn.Module):
            if "neg_labels" in getattr(o, "_defaults", {}):
                for part in (o._defaults, o._persistent, o._reductions, o._derived_states):
                    part.pop("neg_labels", None)
                del o.__dict__["neg_labels"]
                o._state_keys = tuple(k for k in o._state_keys if k != "neg_labels")
                o.__dict__.pop("_forward_states", None)
            for value in list(o.__dict__.values()) + list(o._modules.values()):
                visit(value)

    visit(obj)


def _ne_reference(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """NE per task (rows) by the formula, in numpy: sum w·CE over the entropy of the weighted base rate."""
    ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum(-1)
    total, pos = w.sum(-1), (w * y).sum(-1)
    rate = pos / total
    return ce / -(pos * np.log(rate) + (total - pos) * np.log(1 - rate))


@pytest.mark.parametrize("wrap", ["plain", "windowed", "segmented", "calibration_free"])
def test_metric_pickled_before_neg_labels_computes_updates_and_merges(wrap):
    """A metric pickled by the version before ``neg_labels`` (``torch.save(model)``; made here by stripping the
    state from a copy) gets it on unpickling as ``total - pos``: its ``compute`` raised ``TypeError`` and its
    ``update`` ``RuntimeError``, and a ``Windowed`` one added later batches to a stale label-0 weight."""
    import copy
    import pickle

    rng = np.random.default_rng(5)
    batches = [
        (rng.uniform(0.05, 0.95, (2, 50)), (rng.random((2, 50)) < 0.3).astype(float), rng.uniform(0, 2, (2, 50)))
        for _ in range(4)
    ]
    segments = torch.as_tensor(rng.integers(0, 2, 50))

    def make():
        if wrap == "windowed":
            return tmx.Windowed(tmx.NormalizedEntropy(num_tasks=2), window_size=100)
        if wrap == "segmented":
            return tmx.Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=1)
        return (tmx.CalibrationFreeNE if wrap == "calibration_free" else tmx.NormalizedEntropy)(num_tasks=2)

    def step(metric, batch):
        args = [torch.as_tensor(a) for a in batch]
        metric.update(*args, torch.zeros_like(segments)) if wrap == "segmented" else metric.update(*args)

    metric = make()
    for batch in batches[:2]:
        step(metric, batch)
    old = copy.deepcopy(metric)
    _strip_neg_labels(old)
    restored = pickle.loads(pickle.dumps(old))
    for batch in batches[2:]:
        step(restored, batch)
        step(metric, batch)
    value, expected = restored.compute(), metric.compute()
    if wrap == "calibration_free":
        torch.testing.assert_close(value, expected, rtol=1e-13, atol=0)
        return
    life = value["lifetime"] if wrap == "windowed" else value.reshape(-1)
    p, y, w = (np.concatenate([b[i] for b in batches], -1) for i in range(3))
    np.testing.assert_allclose(life.numpy(), _ne_reference(p, y, w), rtol=1e-13)
    if wrap == "windowed":  # the window: the last two batches, the pickled updates evicted
        np.testing.assert_allclose(
            value["window"].numpy(), _ne_reference(p[:, 100:], y[:, 100:], w[:, 100:]), rtol=1e-13
        )
    fresh = make()
    fresh, restored = (fresh.lifetime, restored.lifetime) if wrap == "windowed" else (fresh, restored)
    fresh.merge_state(restored)  # a metric made now takes the unpickled one's states, neg_labels among them
    torch.testing.assert_close(fresh.compute(), restored.compute(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("wrap", ["plain", "windowed", "calibration_free"])
def test_merge_state_of_a_dict_without_neg_labels_derives_it_as_a_load_does(wrap):
    """A dict of states written before ``neg_labels`` (an older checkpoint's, ``torch.load``-ed) merges with the
    state derived as ``total - pos``, as ``load_state_dict`` takes it: it was refused ("missing ['neg_labels']")."""
    rng = np.random.default_rng(9)
    p, y, w = rng.uniform(0.05, 0.95, (2, 80)), (rng.random((2, 80)) < 0.4).astype(float), rng.uniform(0, 2, (2, 80))
    first, second = (tuple(torch.as_tensor(a[:, s]) for a in (p, y, w)) for s in (slice(0, 30), slice(30, 80)))
    cls = tmx.CalibrationFreeNE if wrap == "calibration_free" else tmx.NormalizedEntropy
    other = cls(num_tasks=2)
    other.update(*second)
    older = {name: value.clone() for name, value in other.metric_state.items() if name != "neg_labels"}
    metric = tmx.Windowed(cls(num_tasks=2), window_size=30) if wrap == "windowed" else cls(num_tasks=2)
    metric.update(*first)
    metric.merge_state(older)
    value = metric.compute()
    value = value["lifetime"] if wrap == "windowed" else value
    if wrap == "calibration_free":
        whole = cls(num_tasks=2)
        whole.update(*(torch.as_tensor(a) for a in (p, y, w)))
        torch.testing.assert_close(value, whole.compute(), rtol=1e-13, atol=0)
    else:
        np.testing.assert_allclose(value.numpy(), _ne_reference(p, y, w), rtol=1e-13)
    with pytest.raises(ValueError, match="missing"):  # without a source of it, still refused, nothing changed
        metric.merge_state({k: v for k, v in older.items() if k != "pos_labels"})
    after = metric.compute()
    torch.testing.assert_close(after["lifetime"] if wrap == "windowed" else after, value, rtol=0, atol=0)
