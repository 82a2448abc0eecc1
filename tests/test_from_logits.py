"""``from_logits`` on every metric of DESIGN.md's pointwise list, and on the functional twins.

DESIGN.md: "Pointwise (binary/regression), ``update(preds, target, weights=None)``; ``preds`` are
probabilities unless ``from_logits=True``" for NE, LogLoss, AUC, AUPRC, Calibration, CTR,
WeightedAverage, the thresholded metrics, MSE/MAE/RMSE, RegressionAUC and XAUC. Values are checked
against NumPy formulas on ``sigmoid(z)`` (the regression errors, the average) or on ``z`` itself
(pairwise concordance, which depends on the order of the predictions alone).
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.test_auc import ref_grouped
from tests.test_pairwise_auc import ref_rauc, ref_xauc
from tests.test_pointwise_contract import _first_batch_leaves_states_equal
from torchmetrics_ext import functional as tmf

# DESIGN.md's pointwise list and each class's functional twin
DESIGN_POINTWISE = {
    "NormalizedEntropy": "normalized_entropy",
    "LogLoss": "log_loss",
    "AUC": "auc",
    "AUPRC": "auprc",
    "Calibration": "calibration",
    "CTR": "ctr",
    "WeightedAverage": "weighted_average",
    "WeightedAccuracy": "weighted_accuracy",
    "WeightedPrecision": "weighted_precision",
    "WeightedRecall": "weighted_recall",
    "WeightedMSE": "weighted_mse",
    "WeightedMAE": "weighted_mae",
    "WeightedRMSE": "weighted_rmse",
    "RegressionAUC": "regression_auc",
    "XAUC": "xauc",
    # not in the list, but on the MSE kernel and states: the option comes with it
    "WeightedR2": "weighted_r2",
    "WeightedNMSE": "weighted_nmse",
    "WeightedNRMSE": "weighted_nrmse",
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-z)`` written from ``e^-|z|`` (no overflow), float64."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _data(seed: int, num_tasks: int = 2, n: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (a few confident ones, ±40), labels mixing 0/1 and values in [0, 1], shared weights."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num_tasks, n, generator=gen, dtype=torch.float64) * 3
    z[:, :4] = torch.tensor([40.0, -40.0, 25.0, -25.0], dtype=torch.float64)
    y = torch.rand(num_tasks, n, generator=gen, dtype=torch.float64)
    y[:, ::2] = (y[:, ::2] > 0.5).double()
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 2
    return z.float(), y, w  # float32 logits, as a model emits them


def _mean(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (values * w).sum(-1) / np.broadcast_to(w, values.shape).sum(-1)


# (class, functional, reference on p = sigmoid(z), labels y and weights w; per task)
VALUE_CASES = {
    "WeightedMSE": (tmx.WeightedMSE, tmf.weighted_mse, lambda p, y, w: _mean((p - y) ** 2, w)),
    "WeightedMAE": (tmx.WeightedMAE, tmf.weighted_mae, lambda p, y, w: _mean(np.abs(p - y), w)),
    "WeightedRMSE": (tmx.WeightedRMSE, tmf.weighted_rmse, lambda p, y, w: np.sqrt(_mean((p - y) ** 2, w))),
    "WeightedAverage": (tmx.WeightedAverage, tmf.weighted_average, lambda p, y, w: _mean(p, w)),
    "WeightedR2": (
        tmx.WeightedR2,
        tmf.weighted_r2,
        lambda p, y, w: 1 - _mean((p - y) ** 2, w) / _mean((y - _mean(y, w)[:, None]) ** 2, w),
    ),
    "WeightedNMSE": (
        tmx.WeightedNMSE,
        tmf.weighted_nmse,
        lambda p, y, w: _mean((p - y) ** 2, w) / _mean((y - 1) ** 2, w),
    ),
    "WeightedNRMSE": (
        tmx.WeightedNRMSE,
        tmf.weighted_nrmse,
        lambda p, y, w: np.sqrt(_mean((p - y) ** 2, w) / _mean((y - 1) ** 2, w)),
    ),
}


@pytest.mark.parametrize("name", sorted(DESIGN_POINTWISE))
def test_every_design_pointwise_metric_and_its_twin_take_from_logits(name):
    """``cls(from_logits=True)`` is accepted and kept; class and function name the option alike, default False."""
    cls, fn = getattr(tmx, name), getattr(tmf, DESIGN_POINTWISE[name])
    for signature in (inspect.signature(cls), inspect.signature(fn)):
        parameter = signature.parameters["from_logits"]
        assert parameter.kind is parameter.KEYWORD_ONLY and parameter.default is False, name
    assert cls(from_logits=True).from_logits is True
    assert cls().from_logits is False
    with pytest.raises(ValueError, match="from_logits"):
        cls(from_logits=1)
    with pytest.raises(ValueError, match="from_logits"):
        fn(torch.tensor([0.2, 0.7]), torch.tensor([0.0, 1.0]), from_logits="yes")


@pytest.mark.parametrize("name", sorted(VALUE_CASES))
def test_from_logits_scores_sigmoid_of_the_logits(name):
    """The error (or average) of ``sigmoid(z)``: NumPy on the same float64 sigmoid, class over batches and function."""
    cls, fn, reference = VALUE_CASES[name]
    z, y, w = _data(1)
    expected = reference(_sigmoid(z.double().numpy()), y.numpy(), w.numpy())
    metric = cls(num_tasks=2, from_logits=True)
    for part in (slice(0, 100), slice(100, 101), slice(101, 300)):
        metric.update(z[:, part], y[:, part], w[part])
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(fn(z, y, w, from_logits=True).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(cls(from_logits=True)(z[0], y[0], w).item(), expected[0], rtol=1e-12)


def test_errors_of_confident_logits_keep_their_precision():
    """``sigmoid(40) - 1`` is ``-sigmoid(-40)``, not the 0 that rounding ``sigmoid(40)`` to 1 gives."""
    z = torch.tensor([40.0, -40.0, 700.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    tail = np.exp(-np.array([40.0, 40.0, 700.0])) / (1 + np.exp(-np.array([40.0, 40.0, 700.0])))
    np.testing.assert_allclose(tmf.weighted_mae(z, y, from_logits=True).item(), tail.mean(), rtol=1e-14)
    np.testing.assert_allclose(tmf.weighted_mse(z, y, from_logits=True).item(), (tail**2).mean(), rtol=1e-14)
    metric = tmx.WeightedMAE(from_logits=True)
    metric.update(z, y)
    np.testing.assert_allclose(metric.compute().item(), tail.mean(), rtol=1e-14)


def test_ctr_takes_from_logits_and_its_value_is_the_label_rate():
    z, y, w = _data(2)
    labels = (y > 0.5).double()
    expected = (labels.numpy() * w.numpy()).sum(-1) / w.numpy().sum()
    metric = tmx.CTR(num_tasks=2, from_logits=True)
    metric.update(z, labels, w)
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(tmf.ctr(z, labels, w, from_logits=True).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("cls", "fn", "reference"),
    [(tmx.XAUC, tmf.xauc, ref_xauc), (tmx.RegressionAUC, tmf.regression_auc, ref_rauc)],
)
def test_pairwise_concordance_ranks_the_logits(cls, fn, reference):
    """The logits' own order, also where a float64 sigmoid saturates (40, 45, 50 all give 1.0: ties)."""
    rng = np.random.default_rng(3)
    z = np.concatenate([[40.0, 45.0, 50.0, -800.0, -900.0], rng.normal(0, 3, 195)])
    y = np.round(rng.gamma(1.0, 2.0, 200), 1)
    y[:5] = [1.0, 2.0, 3.0, 0.5, 0.2]  # the saturated logits ordered like their labels
    w = rng.uniform(0, 2, 200)
    assert _sigmoid(z[:3]).tolist() == [1.0, 1.0, 1.0]  # probabilities would tie
    metric = cls(from_logits=True)
    metric.update(torch.tensor(z[:120]), torch.tensor(y[:120]), torch.tensor(w[:120]))
    metric.update(torch.tensor(z[120:]), torch.tensor(y[120:]), torch.tensor(w[120:]))
    np.testing.assert_allclose(metric.compute().item(), reference(z, y, w), rtol=1e-12)
    value = fn(torch.tensor(z), torch.tensor(y), torch.tensor(w), from_logits=True)
    np.testing.assert_allclose(value.item(), reference(z, y, w), rtol=1e-12)
    # where the sigmoid does not saturate, the value of the probabilities
    moderate = slice(5, None)
    np.testing.assert_allclose(
        fn(torch.tensor(z[moderate]), torch.tensor(y[moderate]), from_logits=True).item(),
        reference(_sigmoid(z[moderate]), y[moderate]),
        rtol=1e-12,
    )


@pytest.mark.parametrize("first", ["empty", "zero weights"])
def test_from_logits_keeps_the_new_options_compute_groups_apart(first):
    """States of sigmoid(z) never merge with states of the raw values, even when the first batch left them equal."""
    z = torch.tensor([-2.0, 0.5, 3.0, -1.0, 0.25, 0.75])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    collection = MetricCollection(
        {
            "mse": tmx.WeightedMSE(),
            "mse_logits": tmx.WeightedMSE(from_logits=True),
            "mae_logits": tmx.WeightedMAE(from_logits=True),
            "avg": tmx.WeightedAverage(),
            "avg_logits": tmx.WeightedAverage(from_logits=True),
            "ctr_logits": tmx.CTR(from_logits=True),
            "cal_logits": tmx.Calibration(from_logits=True),
        },
        compute_groups=True,
    )
    values = _first_batch_leaves_states_equal(collection, z, y, first)
    groups = sorted(sorted(g) for g in collection.compute_groups.values())
    assert ["mae_logits", "mse_logits"] in groups and ["cal_logits", "ctr_logits"] in groups, groups
    zn, yn = z.double().numpy(), y.double().numpy()
    p = _sigmoid(zn)
    expected = {
        "mse": np.mean((zn - yn) ** 2),
        "mse_logits": np.mean((p - yn) ** 2),
        "mae_logits": np.mean(np.abs(p - yn)),
        "avg": zn.mean(),
        "avg_logits": p.mean(),
        "ctr_logits": yn.mean(),
        "cal_logits": p.sum() / yn.sum(),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-12, err_msg=key)


def test_state_names_follow_from_logits_and_stay_for_the_default():
    """The default keeps the names checkpoints hold; from_logits names the states of the predictions."""
    assert list(tmx.WeightedMSE().metric_state) == [
        "sum_squared_error",
        "sum_absolute_error",
        "weighted_num_samples",
        "label_sum",
        "label_squared_sum",
    ]
    assert list(tmx.WeightedR2(from_logits=True).metric_state) == [
        "sum_squared_error_logits",
        "sum_absolute_error_logits",
        "weighted_num_samples",
        "label_sum",
        "label_squared_sum",
    ]
    assert list(tmx.CTR().metric_state) == ["weighted_pred_sum", "weighted_label_sum", "weighted_num_samples"]
    assert next(iter(tmx.CTR(from_logits=True).metric_state)) == "weighted_pred_sum_logits"
    assert list(tmx.WeightedAverage(from_logits=True).metric_state) == [
        "weighted_pred_sum_logits",
        "weighted_label_sum",
        "weighted_num_samples_plain",
    ]
    # the pairwise states are the scores as given, whatever they are
    assert list(tmx.XAUC(from_logits=True).metric_state) == list(tmx.XAUC().metric_state)


@pytest.mark.parametrize("metadata", ["version 2", "none"])
@pytest.mark.parametrize("factory", [tmx.WeightedMSE, tmx.WeightedAverage, tmx.CTR])
def test_a_checkpoint_of_raw_values_is_not_loaded_as_logit_states(factory, metadata):
    """Those metrics had no from_logits before states were named after it: no checkpoint's plain name is a logit state."""
    trained = factory()
    trained.persistent(True)
    trained.update(torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0]))
    saved = trained.state_dict()
    checkpoint = OrderedDict(saved)
    if metadata == "version 2":
        checkpoint._metadata = saved._metadata  # type: ignore[attr-defined]
    resumed = factory(from_logits=True)
    resumed.persistent(True)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\)"):
        resumed.load_state_dict(checkpoint)


def test_input_domains_declare_logits():
    """With from_logits a metric of real values declares logits of probabilities (any finite value)."""
    for metric in (
        tmx.WeightedMSE(from_logits=True),
        tmx.XAUC(from_logits=True),
        tmx.WeightedAverage(from_logits=True),
    ):
        domains = metric.input_domains
        assert domains.preds == "probability" and domains.from_logits and domains.target == "real"
    assert tmx.CTR(from_logits=True).input_domains.from_logits
    for metric in (tmx.WeightedMSE(), tmx.XAUC(), tmx.WeightedAverage(), tmx.CTR()):
        assert metric.input_domains.preds == "real" and not metric.input_domains.from_logits
    # logits are any finite value: large ones pass, NaN does not (named as for NE)
    tmx.WeightedMSE(from_logits=True).update(torch.tensor([-300.0, 300.0]), torch.tensor([0.0, 1.0]))
    metric = tmx.XAUC(from_logits=True)
    with pytest.raises(ValueError, match="finite"):
        metric.update(torch.tensor([0.0, float("nan")]), torch.tensor([0.0, 1.0]))
    assert metric.pair_preds == []


# ----------------------------------------------------------------------------- exact-mode checkpoints


def _score_data(n: int = 400) -> dict[str, torch.Tensor]:
    """Logits, binary labels drawn from them, real-valued labels, and group ids."""
    g = torch.Generator().manual_seed(7)
    z = torch.randn(n, generator=g) * 2
    y = (torch.rand(n, generator=g) < torch.sigmoid(z)).float()
    return {"z": z, "y": y, "r": torch.rand(n, generator=g) + 2 * y, "groups": torch.randint(0, 6, (n,), generator=g)}


def _binary_ref(score):
    return lambda p, d: score(d["y"].numpy(), p)


def _grouped_ref(score):
    return lambda p, d: ref_grouped(p, d["y"].numpy(), d["groups"].numpy(), None, ref=score)


def _sk_auc(p, y, w=None, logits=False):
    """scikit-learn's AUC of the scores fed (``logits``: ref_grouped's flag; the sigmoid keeps their order)."""
    return roc_auc_score(y, p, sample_weight=w)


def _sk_ap(p, y, w=None, logits=False):
    return average_precision_score(y, p, sample_weight=w)


# name -> (factory, update arguments besides the predictions, reference of all the scores fed)
EXACT_SCORE_METRICS = {
    "AUC": (tmx.AUC, lambda d: (d["y"],), _binary_ref(roc_auc_score)),
    "AUPRC": (tmx.AUPRC, lambda d: (d["y"],), _binary_ref(average_precision_score)),
    "GroupedAUC": (tmx.GroupedAUC, lambda d: (d["y"], d["groups"]), _grouped_ref(_sk_auc)),
    "GroupedAUPRC": (tmx.GroupedAUPRC, lambda d: (d["y"], d["groups"]), _grouped_ref(_sk_ap)),
    "XAUC": (tmx.XAUC, lambda d: (d["r"],), lambda p, d: ref_xauc(p, d["r"].numpy())),
    "RegressionAUC": (tmx.RegressionAUC, lambda d: (d["r"],), lambda p, d: ref_rauc(p, d["r"].numpy())),
    "Windowed(AUC)": (
        lambda **kw: tmx.Windowed(tmx.AUC(**kw), 10_000),
        lambda d: (d["y"],),
        _binary_ref(roc_auc_score),
    ),
}


def _half(d: dict[str, torch.Tensor], part: slice, logits: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The predictions of one part of the data (logits or their float32 sigmoid) and its other columns."""
    return (d["z"][part] if logits else torch.sigmoid(d["z"][part])), {k: v[part] for k, v in d.items()}


def _value(metric) -> float:
    value = metric.compute()
    return (value["lifetime"] if isinstance(value, dict) else value).item()


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("saved_logits", [False, True])
@pytest.mark.parametrize("name", list(EXACT_SCORE_METRICS))
def test_an_exact_checkpoint_of_the_other_from_logits_is_refused(name, saved_logits, strict, tmp_path):
    """Exact states keep the scores as given under one name: a probabilities checkpoint loaded into a
    from_logits metric ranked the later logits among the saved probabilities (AUC 0.8447 for sklearn's
    0.8577), all keys matched. The setting travels in the checkpoint's metadata; the same setting resumes."""
    factory, columns, reference = EXACT_SCORE_METRICS[name]
    data, first, second = _score_data(), slice(0, 200), slice(200, 400)
    trained = factory(from_logits=saved_logits)
    trained.persistent(True)
    preds, part = _half(data, first, saved_logits)
    trained.update(preds, *columns(part))
    torch.save(trained.state_dict(), tmp_path / "metric.pt")
    state = torch.load(tmp_path / "metric.pt", weights_only=True)

    other = factory(from_logits=not saved_logits)
    other.persistent(True)
    fresh = copy.deepcopy(other.state_dict())
    with pytest.raises(
        RuntimeError, match=rf"setting mismatch for from_logits: .* saved with from_logits={saved_logits}"
    ):
        other.load_state_dict(state, strict=strict)
    now = other.state_dict()
    assert all(k in now and _same(now[k], fresh[k]) for k in fresh)  # nothing of it loaded
    with pytest.raises(ValueError, match="from_logits"):  # nor merges: the same mix
        other.merge_state(trained)

    resumed = factory(from_logits=saved_logits)  # the checkpoint's own setting resumes exactly
    resumed.persistent(True)
    resumed.load_state_dict(copy.deepcopy(state), strict=strict)
    later, part = _half(data, second, saved_logits)
    resumed.update(later, *columns(part))
    fed = torch.cat([preds, later]).double().numpy()  # the scores as given, float32 values
    np.testing.assert_allclose(_value(resumed), reference(fed, data), rtol=1e-12)


@pytest.mark.parametrize("saved_logits", [False, True])
def test_grouped_sums_of_complete_groups_load_across_from_logits(saved_logits):
    """groups_complete_per_batch keeps per-group AUC sums, the same for logits and their sigmoid: they load
    (either way: the logit setting's sums are named after it, to keep the two out of one compute group)."""
    data = _score_data()
    data["groups"] = torch.cat([data["groups"][:200], data["groups"][200:] + 6])  # each batch its own groups
    saved = tmx.GroupedAUC(groups_complete_per_batch=True, from_logits=saved_logits)
    saved.persistent(True)
    preds, part = _half(data, slice(0, 200), logits=saved_logits)
    saved.update(preds, part["y"], part["groups"])
    resumed = tmx.GroupedAUC(groups_complete_per_batch=True, from_logits=not saved_logits)
    resumed.persistent(True)
    resumed.load_state_dict(saved.state_dict())
    later, part = _half(data, slice(200, 400), logits=not saved_logits)
    resumed.update(later, part["y"], part["groups"])
    fed = torch.cat([preds, later]).double().numpy()
    np.testing.assert_allclose(_value(resumed), _grouped_ref(_sk_auc)(fed, data), rtol=1e-12)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


# ----------------------------------------------------------------------------- curve metrics' state names


CURVE_METRICS = {
    "AUC": (tmx.AUC, {}, _sk_auc),
    "AUPRC": (tmx.AUPRC, {}, _sk_ap),
    "GroupedAUC": (tmx.GroupedAUC, {}, _sk_auc),
    "GroupedAUPRC": (tmx.GroupedAUPRC, {}, _sk_ap),
    "GroupedAUC(complete)": (tmx.GroupedAUC, {"groups_complete_per_batch": True}, _sk_auc),
}


@pytest.mark.parametrize("name", list(CURVE_METRICS))
def test_from_logits_keeps_curve_metrics_compute_groups_apart(name):
    """Exact AUC(from_logits=True) and AUC() kept their scores under one name: TorchMetrics grouped them, and
    the AUC() member, no longer updated itself, accepted logits it refuses alone."""
    cls, kw, score = CURVE_METRICS[name]
    grouped = name.startswith("Grouped")
    g = torch.Generator().manual_seed(11)
    p = torch.rand(40, generator=g)
    y = torch.tensor([0, 1] * 20)
    groups = torch.arange(40) // 10  # four whole groups, both classes in each
    extra = {"groups": groups} if grouped else {}
    collection = MetricCollection({"probs": cls(**kw), "logits": cls(from_logits=True, **kw)}, compute_groups=True)
    collection.update(p, y, **extra)
    assert sorted(sorted(members) for members in collection.compute_groups.values()) == [["logits"], ["probs"]]
    values = collection.compute()
    pn, yn = p.double().numpy(), y.numpy()
    if grouped:
        expected = np.mean([score(pn[groups == i], yn[groups == i]) for i in range(4)])
    else:
        expected = score(pn, yn)
    for key in ("probs", "logits"):  # the probabilities, ranked as given by both
        np.testing.assert_allclose(values[key].item(), expected, rtol=1e-12, err_msg=key)
    with pytest.raises(ValueError, match=r"`preds` to be probabilities in \[0, 1\]"):
        collection.update(torch.logit(p) * 3, y, **extra)


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("name", ["AUC", "AUPRC", "GroupedAUC", "GroupedAUPRC"])
def test_an_exact_from_logits_checkpoint_of_the_former_state_name_resumes(name, windowed):
    """Checkpoints written before the scores' state was named after from_logits hold ``preds``: they resume."""
    factory, columns, reference = EXACT_SCORE_METRICS[name]
    data, first, second = _score_data(), slice(0, 200), slice(200, 400)
    wrap = (lambda m: tmx.Windowed(m, 10_000)) if windowed else (lambda m: m)
    trained = wrap(factory(from_logits=True))
    trained.persistent(True)
    preds, part = _half(data, first, True)
    trained.update(preds, *columns(part))
    saved = trained.state_dict()
    older = OrderedDict((k.replace("preds_logits", "preds"), v) for k, v in saved.items())
    older._metadata = saved._metadata  # type: ignore[attr-defined]  # version 2, from_logits=True recorded
    if windowed:  # the ring names its chunks after the states too
        ring = dict(older["_extra_state"])
        ring["chunks"] = {n.replace("preds_logits", "preds"): c for n, c in ring["chunks"].items()}
        older["_extra_state"] = ring
    assert not any("preds_logits" in k for k in older) and "lifetime.preds" in older if windowed else "preds" in older
    resumed = wrap(factory(from_logits=True))
    resumed.persistent(True)
    resumed.load_state_dict(older)
    later, part = _half(data, second, True)
    resumed.update(later, *columns(part))
    fed = torch.cat([preds, later]).double().numpy()
    np.testing.assert_allclose(_value(resumed), reference(fed, data), rtol=1e-12)
    # no metadata, the new name: a checkpoint of logits, refused by a metric of probabilities
    plain = OrderedDict((k, v) for k, v in saved.items() if not windowed or not k.startswith("_"))
    if not windowed:
        with pytest.raises(RuntimeError, match=r"setting mismatch for from_logits: .*from_logits=True"):
            factory().load_state_dict(plain)
