"""Reliability (per-bin calibration) through the shared harness, against numpy's digitize and sums."""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

N = 900
CTR_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)


def reliability_data(
    rng: np.random.Generator, num_tasks: int | None = None, weights: str | None = None, logits: bool = False
) -> H.Data:
    """Click-like probabilities (some exactly on bin edges, some 0 and 1), soft and hard labels."""
    shape = (N,) if num_tasks is None else (num_tasks, N)
    p = rng.beta(1.0, 6.0, size=shape)
    p[..., :60] = rng.choice([0.0, 0.1, 0.2, 0.5, 1.0], size=(*shape[:-1], 60))  # on edges, and the ends
    y = (rng.random(shape) < p).astype(np.int64)
    if logits:
        p = np.clip(p, 1e-4, 1 - 1e-4)
    return {
        "preds": torch.tensor(np.log(p / (1 - p)) if logits else p, dtype=torch.float32),
        "target": torch.tensor(y),
        "weights": H.random_weights(rng, weights, shape),
    }


def ref_reliability(p, y, w, edges=None, num_bins=10, logits=False):
    """Independent reference: numpy's digitize on the inner edges, then weighted sums per bin."""
    edges = np.linspace(0.0, 1.0, num_bins + 1) if edges is None else np.asarray(edges, dtype=np.float64)
    prob = 1.0 / (1.0 + np.exp(-p)) if logits else p
    w = np.ones_like(prob) if w is None else w
    bins = np.digitize(prob, edges[1:-1], right=False)  # edges[b-1] <= p < edges[b]
    count = len(edges) - 1
    weight = np.bincount(bins, weights=w, minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(weight > 0, np.bincount(bins, weights=w * prob, minlength=count) / weight, np.nan)
        rate = np.where(weight > 0, np.bincount(bins, weights=w * y, minlength=count) / weight, np.nan)
    return {"mean_prediction": mean_pred, "label_rate": rate, "weight": weight}


def ref_per_task(data, **kwargs):
    p, y, w = data["preds"], data["target"], data["weights"]
    if p.ndim == 1:
        return ref_reliability(p, y, w, **kwargs)
    rows = [
        ref_reliability(p[t], y[t], None if w is None else (w[t] if w.ndim == 2 else w), **kwargs)
        for t in range(len(p))
    ]
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _case(cid, data_kwargs, metric_kwargs, ref_kwargs, **extra):
    num_tasks = data_kwargs.get("num_tasks") or 1
    return H.MetricCase(
        id=cid,
        metric=partial(tmx.Reliability, num_tasks, **metric_kwargs),
        data=partial(reliability_data, **data_kwargs),
        reference=partial(ref_per_task, **ref_kwargs),
        functional=partial(tmf.reliability, **metric_kwargs),
        **extra,
    )


CASES = {
    case.id: case
    for case in [
        _case("uniform", {}, {}, {}),
        _case("uniform-w", {"weights": "shared"}, {"num_bins": 7}, {"num_bins": 7}),
        _case("edges-3task-w", {"num_tasks": 3, "weights": "task"}, {"edges": CTR_EDGES}, {"edges": CTR_EDGES}),
        _case(
            "logits-2task-w",
            {"num_tasks": 2, "weights": "shared", "logits": True},
            {"num_bins": 5, "from_logits": True},
            {"num_bins": 5, "logits": True},
            rtol=1e-5,
        ),
        # edges inside (0, 1): predictions outside them fall in the end bins
        _case("inner-edges", {}, {"edges": (0.05, 0.1, 0.3)}, {"edges": (0.05, 0.1, 0.3)}),
    ]
}

globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=["edges-3task-w"],
        collection=list(CASES),
        no_arithmetic=list(CASES),  # a dict of per-bin tensors: no arithmetic
        ddp=["uniform-w", "edges-3task-w"],
        device_path=list(CASES),
        ddp_scenarios=list(CASES),
    )
)


@pytest.mark.parametrize("cid", ["uniform-w", "edges-3task-w", "logits-2task-w"])
def test_weight_invariances(cid):
    """sklearn's invariances; scaling every weight scales the bin weights and nothing else."""
    case = CASES[cid]
    data = case.make_data(3)
    rng = np.random.default_rng(4)

    def run(d):
        metric = case.metric()
        for batch in H.split(d, H.random_bounds(H.num_samples(d, -1), rng, 3, 40), -1):
            metric.update(**batch)
        return {k: v.numpy() for k, v in metric.compute().items()}

    def close(a, b, what):
        H.assert_close(a, b, 1e-9, 1e-9, f"{cid} {what}")

    unweighted = dict(data, weights=None)
    close(run(dict(data, weights=torch.ones(N, dtype=torch.float64))), run(unweighted), "unit weights")
    counts = torch.from_numpy(rng.integers(0, 4, size=N))
    repeated = H.take(unweighted, torch.repeat_interleave(torch.arange(N), counts), -1)
    close(run(dict(data, weights=counts.double())), run(repeated), "integer weights == repeats")
    weights = torch.from_numpy(rng.uniform(0.1, 3.0, size=N))
    keep = torch.from_numpy(rng.random(N) < 0.7)
    removed = H.take(dict(data, weights=weights), torch.nonzero(keep).reshape(-1), -1)
    close(run(dict(data, weights=torch.where(keep, weights, 0.0))), run(removed), "zero weights == removed")
    perm = torch.from_numpy(rng.permutation(N))
    close(run(H.take(dict(data, weights=weights), perm, -1)), run(dict(data, weights=weights)), "permuted rows")
    scaled, plain = run(dict(data, weights=weights * 7.25)), run(dict(data, weights=weights))
    close(scaled["weight"], plain["weight"] * 7.25, "scaled bin weights")
    close(
        {k: scaled[k] for k in ("mean_prediction", "label_rate")},
        {k: plain[k] for k in ("mean_prediction", "label_rate")},
        "scaled",
    )


def test_a_bin_whose_weight_overflowed_float64_has_nan_rates_not_zero():
    """Two weights of 1e308 in one bin: the bin weight is inf and its label rate read x / inf = 0 where the
    rate of its labels (1 and 0, equal weights) is 0.5; documented: nan, as the ratio metrics."""
    preds, target = torch.tensor([0.9, 0.9, 0.2]), torch.tensor([1.0, 0.0, 1.0])
    w = torch.tensor([1e308, 1e308, 1.0], dtype=torch.float64)
    out = tmf.reliability(preds, target, w, num_bins=2)
    assert torch.isnan(out["label_rate"][1]) and torch.isnan(out["mean_prediction"][1])
    assert out["label_rate"][0].item() == 1.0  # the other bin keeps its value
    metric = tmx.Reliability(num_bins=2)
    metric.update(preds, target, w)
    assert torch.isnan(metric.compute()["label_rate"][1])


def test_windowed_reliability_is_the_curve_of_the_newest_samples():
    data = reliability_data(np.random.default_rng(7), num_tasks=2, weights="task")
    windowed = tmx.Windowed(tmx.Reliability(2, num_bins=4), window_size=300)
    for lo in range(0, N, 100):
        windowed.update(**H.take(data, slice(lo, lo + 100), -1))
    values = windowed.compute()
    expected = ref_per_task(H.to_numpy(H.take(data, slice(N - 300, N), -1)), num_bins=4)
    H.assert_close(values["window"], expected, 1e-9, 1e-12, "window")
    H.assert_close(values["lifetime"], ref_per_task(H.to_numpy(data), num_bins=4), 1e-9, 1e-12, "lifetime")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_score_on_an_edge_opens_its_bin(dtype):
    """e_b <= p < e_(b+1): the score b / B itself (as the caller's dtype rounds it) is in bin b."""
    num_bins = 10
    scores = torch.arange(num_bins, dtype=torch.float64) / num_bins  # 0.0, 0.1, ..., 0.9 correctly rounded
    values = tmf.reliability(scores.to(dtype), torch.ones(num_bins), num_bins=num_bins)
    expected = torch.ones(num_bins, dtype=torch.float64)  # one score per bin
    if dtype == torch.float32:  # a float32 score below its float64 edge (0.3f < 0.3) lands one bin low
        rounded = scores.to(dtype).double()
        expected = torch.bincount(torch.bucketize(rounded, scores[1:], right=True), minlength=num_bins).double()
    torch.testing.assert_close(values["weight"], expected)


def test_empty_bins_are_nan_without_warning_and_no_weight_warns():
    metric = tmx.Reliability(num_bins=4)
    metric.update(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metric.compute()
    assert out["weight"].tolist() == [2.0, 0.0, 0.0, 0.0]
    assert torch.isnan(out["label_rate"][1:]).all() and out["label_rate"][0] == 0.5
    metric.reset()
    with pytest.warns(UndefinedMetricWarning, match="Reliability is undefined"):
        out = metric.compute()
    assert torch.isnan(out["mean_prediction"]).all() and (out["weight"] == 0).all()


def test_a_reliability_metric_plots_a_diagram():
    import matplotlib

    matplotlib.use("Agg")
    metric = tmx.Reliability(2, edges=CTR_EDGES)
    data = reliability_data(np.random.default_rng(1), num_tasks=2)
    metric.update(data["preds"], data["target"])
    _, ax = metric.plot(labels=["click", "like"])
    lines = [line for line in ax.get_lines() if line.get_label() in ("click", "like")]
    values = metric.compute()
    assert len(lines) == 2
    for t, line in enumerate(lines):
        keep = values["weight"][t] > 0
        np.testing.assert_allclose(line.get_xdata(), values["mean_prediction"][t][keep])
        np.testing.assert_allclose(line.get_ydata(), values["label_rate"][t][keep])
    assert ax.get_xlabel() == "Mean prediction in bin"
    with pytest.raises(ValueError, match="one per task"):
        metric.plot(labels=["only one"])
    with pytest.raises(ValueError, match="missing key"):
        metric.plot({"weight": values["weight"]})


def test_a_list_of_reliability_values_is_refused_with_the_way_to_plot_them():
    """A list (values over steps) said 'missing key(s)' although it held compute() dicts; one diagram is one value.

    The way the message gives, each value into one axis named by ``labels``, draws each step's curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchmetrics_ext.utilities.plot import plot_reliability

    metric = tmx.Reliability(edges=CTR_EDGES)
    batches = [reliability_data(np.random.default_rng(seed)) for seed in (2, 3)]
    values = []
    for batch in batches:
        metric.update(batch["preds"], batch["target"])
        values.append(metric.compute())
    for bad in (values, tuple(values)):
        with pytest.raises(
            TypeError, match=r"`val` to be one dict returned by Reliability\.compute\(\).*got (list|tuple)"
        ):
            metric.plot(bad)
        with pytest.raises(TypeError, match=r"`values` to be one dict .*got (list|tuple)"):
            plot_reliability(bad)
    _, ax = metric.plot(values[0], labels=["step 0"])
    metric.plot(values[1], ax=ax, labels=["step 1"])
    for step in range(2):
        seen = [np.concatenate([d[k].numpy() for d in batches[: step + 1]]) for k in ("preds", "target")]
        ref = ref_reliability(*seen, None, edges=CTR_EDGES)
        (line,) = [line for line in ax.get_lines() if line.get_label() == f"step {step}"]
        keep = ref["weight"] > 0
        np.testing.assert_allclose(line.get_xdata(), ref["mean_prediction"][keep])
        np.testing.assert_allclose(line.get_ydata(), ref["label_rate"][keep])
    plt.close("all")


# ----------------------------------------------------------------------------- bad input

_BASE = reliability_data(np.random.default_rng(5), weights="task")
_P, _Y = _BASE["preds"], _BASE["target"]
_BASE3 = reliability_data(np.random.default_rng(5), num_tasks=3, weights="task")
REJECTS = [
    ("uniform-w", dict(_BASE, preds=[0.5] * N), TypeError, "`preds` to be a torch.Tensor"),
    ("uniform-w", dict(_BASE, preds=torch.ones(N, dtype=torch.int64)), TypeError, "`preds` to be a floating"),
    ("uniform-w", dict(_BASE, preds=_P + 1.5), ValueError, "probabilities in \\[0, 1\\]"),
    ("uniform-w", dict(_BASE, preds=torch.where(_P > 0.5, float("nan"), _P)), ValueError, "finite"),
    ("uniform-w", dict(_BASE, target=_Y * 2), ValueError, "\\[0, 1\\]"),
    ("uniform-w", dict(_BASE, target=_Y[:-1]), ValueError, "`target` of the same shape"),
    ("uniform-w", dict(_BASE, weights=-_BASE["weights"]), ValueError, "non-negative"),
    ("uniform-w", dict(_BASE, weights=torch.ones(3)), ValueError, "`weights` of shape"),
    ("edges-3task-w", _BASE, ValueError, "num_tasks=3"),
    (
        "edges-3task-w",
        dict(_BASE3, preds=_BASE3["preds"][:2], target=_BASE3["target"][:2], weights=_BASE3["weights"][:2]),
        ValueError,
        "num_tasks=3",
    ),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), REJECTS, ids=[f"{r[0]}-{r[3][:20]}" for r in REJECTS])
def test_rejects(cid, bad, exc, match):
    H.check_rejects(CASES[cid], bad, exc, match)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (partial(tmx.Reliability, num_bins=0), "`num_bins`"),
        (partial(tmx.Reliability, num_bins=2.5), "`num_bins`"),
        (partial(tmx.Reliability, num_bins=True), "`num_bins`"),
        (partial(tmx.Reliability, edges=(0.0, 0.5, 0.5, 1.0)), "strictly increasing"),
        (partial(tmx.Reliability, edges=(0.5,)), "at least 2"),
        (partial(tmx.Reliability, edges=(0.0, float("nan"))), "finite"),
        (partial(tmx.Reliability, edges="0,1"), "`edges`"),
        (partial(tmx.Reliability, edges=[[0.0, 1.0]]), "1-D"),
        (partial(tmx.Reliability, from_logits="no"), "`from_logits`"),
        (partial(tmx.Reliability, num_tasks=0), "`num_tasks`"),
        (partial(tmf.reliability, _P, _Y, num_bins=-1), "`num_bins`"),
        (partial(tmf.reliability, _P, _Y, edges=(1.0, 0.0)), "strictly increasing"),
    ],
)
def test_rejects_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_one_bin_keeps_its_bin_dimension():
    """Reliability(num_bins=1) gives (1,) curves, as its functional twin (TorchMetrics squeezed them to 0-dim)."""
    p, y = torch.tensor([0.2, 0.7, 0.4], dtype=torch.float64), torch.tensor([1, 0, 1])
    metric = tmx.Reliability(num_bins=1)
    batch = metric(p, y)
    expected = {"mean_prediction": [1.3 / 3], "label_rate": [2 / 3], "weight": [3.0]}  # by hand: one bin
    for values in (batch, metric.compute(), tmf.reliability(p, y, num_bins=1)):
        for key, want in expected.items():
            assert values[key].shape == (1,), key
            np.testing.assert_allclose(values[key].numpy(), want, rtol=1e-15)


def test_edges_tensor_is_copied():
    """The caller's float64 edges tensor is copied: a later in-place write to it changes no bin."""
    edges = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=torch.float64)
    metric = tmx.Reliability(edges=edges)
    edges[1] = 0.9  # the caller reuses its tensor
    p, y = torch.tensor([0.1, 0.3, 0.6, 0.95]), torch.tensor([0.0, 1.0, 1.0, 1.0])
    metric.update(p, y)
    expected = ref_reliability(p.numpy(), y.numpy(), None, edges=[0.0, 0.2, 0.5, 1.0])
    assert metric.edges.tolist() == [0.0, 0.2, 0.5, 1.0]
    np.testing.assert_allclose(metric.compute()["weight"].numpy(), expected["weight"])


# ----------------------------------------------------------------------------- uniform bins without a search

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
_SPECIAL = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0]


@st.composite
def near_uniform_grid(draw: st.DrawFn, size: int, steps: int) -> float:
    """A value next to a grid point ``k / steps`` (a few steps of the drawn dtype away), a special value or any float."""
    kind = draw(st.sampled_from(["grid", "grid", "grid", "special", "any"]))
    if kind == "special":
        return draw(st.sampled_from(_SPECIAL))
    if kind == "any":
        return draw(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
    dtype = draw(st.sampled_from(_DTYPES))
    value = torch.tensor(draw(st.integers(-1, size)) / steps, dtype=torch.float64).to(dtype)
    toward = torch.tensor(math.inf if draw(st.booleans()) else -math.inf, dtype=dtype)
    for _ in range(draw(st.integers(0, 3))):
        value = torch.nextafter(value, toward)
    return value.item()  # exact: every dtype here is a subset of float64


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_uniform_bins_are_bucketize_bins(data):
    """The arithmetic bin of uniform edges is torch.bucketize's, bit for bit: on and next to every edge (as
    float16/bfloat16/float32/float64 round it), at ±0, subnormals, outside [0, 1], ±inf and NaN."""
    from torchmetrics_ext.functional._uniform import uniform_bins

    num_bins = data.draw(st.one_of(st.integers(1, 40), st.sampled_from([100, 999, 1000, 4096, 10_000, 65_537])))
    values = data.draw(st.lists(near_uniform_grid(num_bins + 1, num_bins), min_size=1, max_size=60))
    probs = torch.tensor(values, dtype=torch.float64)
    inner = (torch.arange(num_bins + 1, dtype=torch.float64) / num_bins)[1:-1]
    expected = torch.bucketize(probs, inner, right=True)
    assert torch.equal(uniform_bins(probs, num_bins), expected)
    assert torch.equal(uniform_bins(probs.reshape(1, -1).expand(2, -1).T, num_bins), expected.expand(2, -1).T)


def test_the_device_path_searches_the_grid_and_agrees_with_the_cpu_path(monkeypatch):
    """`force_device_path()` did not reach the accelerator's branch of the uniform grid (chosen by the tensor's
    device type instead of `on_device_path`): CI never ran the search that Reliability and HindsightTargetPR
    do on a GPU. Now it does, with the CPU path's values, on and next to every edge."""
    from torchmetrics_ext.utilities.device import force_device_path

    rng = np.random.default_rng(5)
    p = rng.random(3000)
    p[:100] = np.arange(100) / 100
    p[100:200] = np.nextafter(np.arange(1, 101) / 100, -1.0)
    y = torch.tensor((rng.random(3000) < p).astype(np.int64))
    p = torch.tensor(p)
    searches = []
    for name in ("bucketize", "searchsorted"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _f=original, _n=name, **k: searches.append(_n) or _f(*a, **k))
    values = []
    for device_path in (False, True):
        searches.clear()
        with force_device_path(device_path):
            reliability, hindsight = tmx.Reliability(num_bins=100), tmx.HindsightTargetPR(num_thresholds=101)
            reliability.update(p, y)
            hindsight.update(p, y)
        assert sorted(set(searches)) == (["bucketize", "searchsorted"] if device_path else [])
        values.append((reliability.compute(), hindsight.compute()))
    expected = ref_reliability(p.numpy(), y.numpy(), None, edges=np.arange(101) / 100)
    H.assert_close(values[1][0], expected, 1e-12, 1e-15, "reliability on the device path")
    H.assert_close(values[1][1], values[0][1], 0, 0, "hindsight on the device path")


@pytest.mark.parametrize("num_bins", [10, 1000])
def test_uniform_bins_are_found_without_a_search(num_bins, monkeypatch):
    """Uniform bins were found with torch.bucketize, whose CPU cost grows with num_bins (0.2 -> 0.75 ms per
    8192 scores from 10 to 10,000 bins); they are now found arithmetically, with the same bins."""
    rng = np.random.default_rng(11)
    p = rng.random(2000)
    p[:num_bins] = np.arange(num_bins) / num_bins  # every edge itself, and next to it
    p[num_bins : 2 * num_bins] = np.nextafter(np.arange(1, num_bins + 1) / num_bins, -1.0)
    y = (rng.random(2000) < p).astype(np.int64)
    expected = ref_reliability(p, y, None, edges=np.arange(num_bins + 1) / num_bins)
    monkeypatch.setattr(torch, "bucketize", None)  # any search would fail
    metric = tmx.Reliability(num_bins=num_bins)
    metric.update(torch.tensor(p), torch.tensor(y))
    for values in (metric.compute(), tmf.reliability(torch.tensor(p), torch.tensor(y), num_bins=num_bins)):
        H.assert_close(values, expected, 1e-12, 1e-15, "reliability")
