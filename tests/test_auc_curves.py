"""ROC and precision-recall curves (exact and binned) against scikit-learn, and their pictures."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_auc import LOGIT_RANGE, _binned, auc_data
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning


def _row(value, t):
    return None if value is None else (value[t] if value.ndim == 2 else value)


def ref_roc(p, y, w, num_bins=None, logits=False):
    """scikit-learn's ROC curve with every point (on bin indices in binned mode), thresholds as documented."""
    scores = p if num_bins is None else _binned(p, num_bins, logits)
    fpr, tpr, thresholds = skm.roc_curve(y, scores, sample_weight=w, drop_intermediate=False)
    if num_bins is not None:
        lo, hi = LOGIT_RANGE
        edges = lo + (hi - lo) / num_bins * thresholds[1:]
        edges[thresholds[1:] == 0] = -np.inf
        thresholds = np.concatenate([[np.inf], edges if logits else 1 / (1 + np.exp(-edges))])
    return fpr, tpr, thresholds


def ref_pr(p, y, w, num_bins=None, logits=False):
    scores = p if num_bins is None else _binned(p, num_bins, logits)
    precision, recall, thresholds = skm.precision_recall_curve(y, scores, sample_weight=w)
    if num_bins is not None:
        lo, hi = LOGIT_RANGE
        edges = lo + (hi - lo) / num_bins * thresholds
        edges[thresholds == 0] = -np.inf
        thresholds = edges if logits else 1 / (1 + np.exp(-edges))
    return precision, recall, thresholds


def assert_curve(actual, expected, what, rtol=1e-9):
    for got, want, name in zip(actual, expected, ("x", "y", "thresholds")):
        assert got.dtype == torch.float64, f"{what} {name} dtype"
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=1e-12, err_msg=f"{what} {name}")


METRIC_RTOL = 1e-6  # the exact metrics store weights as float32 (documented); the functions use float64


SETTINGS = [
    pytest.param({}, id="exact"),
    pytest.param({"weights": "task"}, id="exact-w"),
    pytest.param({"num_tasks": 3, "weights": "shared"}, id="exact-3task-w"),
    pytest.param({"num_bins": 50, "weights": "task"}, id="bins-w"),
    pytest.param({"num_bins": 200, "logits": True, "num_tasks": 2}, id="bins-logits-2task"),
]


def _inputs(setting, seed=0):
    data_kwargs = {k: v for k, v in setting.items() if k in ("num_tasks", "weights", "logits")}
    data = auc_data(np.random.default_rng(seed), **data_kwargs)
    if setting.get("weights"):
        data["weights"][..., :40] = 0.0  # zero-weight samples are absent (sklearn drops them too)
    options = {"num_bins": setting.get("num_bins"), "from_logits": setting.get("logits", False)}
    return data, options


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(
    ("fn", "ref"), [(tmf.roc_curve, ref_roc), (tmf.precision_recall_curve, ref_pr)], ids=["roc", "pr"]
)
def test_functional_curves_equal_sklearn(setting, fn, ref):
    data, options = _inputs(setting)
    curve = fn(data["preds"], data["target"], data["weights"], **options)
    numpy = H.to_numpy(data)
    ref_kwargs = {"num_bins": options["num_bins"], "logits": options["from_logits"]}
    if data["preds"].ndim == 1:
        assert_curve(curve, ref(numpy["preds"], numpy["target"], numpy["weights"], **ref_kwargs), "1 task")
        return
    assert all(isinstance(part, list) and len(part) == len(data["preds"]) for part in curve)
    for t in range(len(data["preds"])):
        expected = ref(numpy["preds"][t], numpy["target"][t], _row(numpy["weights"], t), **ref_kwargs)
        assert_curve([part[t] for part in curve], expected, f"task {t}")


@pytest.mark.parametrize("num_bins", [None, 64])
def test_the_areas_under_the_curves_are_auc_and_auprc(num_bins):
    data, _ = _inputs({"num_tasks": 2, "weights": "task"})
    fpr, tpr, _ = tmf.roc_curve(data["preds"], data["target"], data["weights"], num_bins=num_bins)
    precision, recall, _ = tmf.precision_recall_curve(data["preds"], data["target"], data["weights"], num_bins=num_bins)
    auc = tmf.auc(data["preds"], data["target"], data["weights"], num_bins=num_bins)
    auprc = tmf.auprc(data["preds"], data["target"], data["weights"], num_bins=num_bins)
    for t in range(2):
        x, y = fpr[t].numpy(), tpr[t].numpy()
        np.testing.assert_allclose(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2), auc[t].item(), rtol=1e-9)
        r, p = recall[t].numpy(), precision[t].numpy()
        np.testing.assert_allclose(-np.sum(np.diff(r) * p[:-1]), auprc[t].item(), rtol=1e-9)


def test_undefined_curves_are_nan_with_a_warning():
    preds, positives = torch.tensor([0.2, 0.7]), torch.tensor([1, 1])
    with pytest.warns(UndefinedMetricWarning, match="no negative label weight"):
        fpr, tpr, _ = tmf.roc_curve(preds, positives)
    assert torch.isnan(fpr).all() and tpr.tolist() == [0.0, 0.5, 1.0]
    with pytest.warns(UndefinedMetricWarning, match="no positive label weight"):
        fpr, tpr, _ = tmf.roc_curve(preds, 1 - positives)
    assert torch.isnan(tpr).all() and fpr.tolist() == [0.0, 0.5, 1.0]
    with pytest.warns(UndefinedMetricWarning, match="no positive label weight"):
        precision, recall, _ = tmf.precision_recall_curve(preds, 1 - positives)
    assert torch.isnan(recall[:-1]).all() and precision.tolist() == [0.0, 0.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision, recall, _ = tmf.precision_recall_curve(preds, positives)
    assert precision.tolist() == [1.0, 1.0, 1.0] and recall.tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("num_bins", [None, 100])
@pytest.mark.parametrize("scale", [1e-40, 1e39, "mixed"])
@pytest.mark.parametrize(
    ("fn", "ref"), [(tmf.roc_curve, ref_roc), (tmf.precision_recall_curve, ref_pr)], ids=["roc", "pr"]
)
def test_curves_take_float64_weights_outside_float32s_range(fn, ref, scale, num_bins):
    """The curves sum float64 weights (exact AUC keeps float32 ones): no float32 range applies to them."""
    rng = np.random.default_rng(11)
    p = rng.random(200).astype(np.float32).astype(np.float64)  # scores are compared as float32
    y = rng.integers(0, 2, 200)
    w = rng.uniform(0.5, 2.0, 200)
    w = np.where(np.arange(200) % 5 == 0, 1e-40, w) if scale == "mixed" else w * scale
    w[:10] = 0.0
    got = fn(torch.tensor(p), torch.tensor(y), torch.tensor(w), num_bins=num_bins)
    assert_curve(got, ref(p, y, w, num_bins), f"{fn.__name__} weights {scale}")
    if num_bins is None:  # exact AUC itself still refuses them (its states are float32)
        area = tmf.auc if fn is tmf.roc_curve else tmf.auprc
        with pytest.raises(ValueError, match=r"weights.*float32's range"):
            area(torch.tensor(p), torch.tensor(y), torch.tensor(w))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"preds": [0.5, 0.2]}, TypeError, "`preds` to be a torch.Tensor"),
        ({"preds": torch.tensor([0.5, 1.5])}, ValueError, "probabilities in \\[0, 1\\]"),
        ({"target": torch.tensor([0, 2])}, ValueError, "binary labels"),
        ({"weights": torch.tensor([1.0, -1.0])}, ValueError, "non-negative"),
        ({"num_bins": 1}, ValueError, "`num_bins`"),
        ({"logit_range": (2.0, 1.0)}, ValueError, "`logit_range`"),
        ({"from_logits": "yes"}, ValueError, "`from_logits`"),
    ],
)
@pytest.mark.parametrize("fn", [tmf.roc_curve, tmf.precision_recall_curve], ids=["roc", "pr"])
def test_curves_reject_bad_input(fn, kwargs, exc, match):
    args = {"preds": torch.tensor([0.5, 0.2]), "target": torch.tensor([1, 0])} | kwargs
    with pytest.raises(exc, match=match):
        fn(**args)


def test_curve_pictures_draw_the_curve_points():
    import matplotlib

    matplotlib.use("Agg")
    from torchmetrics_ext.utilities.plot import plot_roc_or_pr

    data, _ = _inputs({"num_tasks": 2})
    curve = tmf.roc_curve(data["preds"], data["target"])
    score = tmf.auc(data["preds"], data["target"])
    _, ax = plot_roc_or_pr(curve, "roc", score=score, labels=["click", "like"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"click AUC={score[0]:0.3f}", f"like AUC={score[1]:0.3f}", "chance"}
    np.testing.assert_allclose(lines[f"click AUC={score[0]:0.3f}"].get_xdata(), curve[0][0])
    precision, recall, thresholds = tmf.precision_recall_curve(data["preds"][0], data["target"][0])
    _, ax = plot_roc_or_pr((precision, recall, thresholds), "pr")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), recall)
    np.testing.assert_allclose(line.get_ydata(), precision)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Recall", "Precision")
    ap = tmf.auprc(data["preds"], data["target"])
    _, ax = plot_roc_or_pr(
        tmf.precision_recall_curve(data["preds"], data["target"]), "pr", score=ap, labels=["click AUC=", "like"]
    )
    expected = [f"click AUC= AUPRC={ap[0]:0.3f}", f"like AUPRC={ap[1]:0.3f}"]  # the average precision, not "AUC="
    assert [line.get_label() for line in ax.get_lines()] == expected
    assert [text.get_text() for text in ax.get_legend().get_texts()] == expected
    _, ax = plot_roc_or_pr(curve, "roc", score=score, labels=["click", "like"])
    plot_roc_or_pr(tmf.precision_recall_curve(data["preds"], data["target"]), "pr", score=ap, ax=ax)
    assert f"click AUC={score[0]:0.3f}" in [line.get_label() for line in ax.get_lines()]  # not drawn by the PR call
    with pytest.raises(ValueError, match="'roc' or 'pr'"):
        plot_roc_or_pr(curve, "det")
    with pytest.raises(ValueError, match="one per task"):
        plot_roc_or_pr(curve, "roc", labels=["click"])


def test_metric_classes_are_exported():
    assert tmx.Reliability.__module__ == "torchmetrics_ext.metrics.reliability"


# ----------------------------------------------------------------------------- AUC.curve / AUPRC.curve


def _metric_for(cls, data, options):
    num_tasks = 1 if data["preds"].ndim == 1 else data["preds"].shape[0]
    return cls(num_tasks=num_tasks, num_bins=options["num_bins"], from_logits=options["from_logits"])


def _update_in_batches(metric, data, size=37):
    n = data["preds"].shape[-1]
    for lo in range(0, n, size):
        metric.update(**H.take(data, slice(lo, lo + size), -1))


def _expected_per_task(ref, data, options):
    numpy = H.to_numpy(data)
    ref_kwargs = {"num_bins": options["num_bins"], "logits": options["from_logits"]}
    if data["preds"].ndim == 1:
        return [ref(numpy["preds"], numpy["target"], numpy["weights"], **ref_kwargs)]
    return [
        ref(numpy["preds"][t], numpy["target"][t], _row(numpy["weights"], t), **ref_kwargs)
        for t in range(len(data["preds"]))
    ]


def _per_task(curve):
    if isinstance(curve[0], list):
        return [tuple(part[t] for part in curve) for t in range(len(curve[0]))]
    return [curve]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(("cls", "ref"), [(tmx.AUC, ref_roc), (tmx.AUPRC, ref_pr)], ids=["auc", "auprc"])
def test_metric_curves_over_batches_equal_sklearn(setting, cls, ref):
    """Exact: scikit-learn's curve; binned: scikit-learn's curve of the scores rounded to their bins."""
    data, options = _inputs(setting, seed=3)
    metric = _metric_for(cls, data, options)
    _update_in_batches(metric, data)
    curve = metric.curve()
    for t, (actual, expected) in enumerate(zip(_per_task(curve), _expected_per_task(ref, data, options), strict=True)):
        assert_curve(actual, expected, f"task {t}", rtol=METRIC_RTOL)
    assert metric.compute() is not None  # curve() left the states usable


def test_metric_curve_in_a_compute_group_and_after_reset():
    data, options = _inputs({"num_tasks": 2, "weights": "task"})
    collection = MetricCollection({"auc": tmx.AUC(num_tasks=2), "auprc": tmx.AUPRC(num_tasks=2)}, compute_groups=True)
    _update_in_batches(collection, data)
    for name, ref in (("auc", ref_roc), ("auprc", ref_pr)):
        for actual, expected in zip(_per_task(collection[name].curve()), _expected_per_task(ref, data, options)):
            assert_curve(actual, expected, name, rtol=METRIC_RTOL)
    collection.reset()
    with pytest.warns(UndefinedMetricWarning):
        _, _, thresholds = collection["auc"].curve()
    assert [t.tolist() for t in thresholds] == [[math.inf], [math.inf]]


def _ddp_curves(rank, world_size, data, num_bins):
    options = {"num_bins": num_bins, "from_logits": False}
    shard = H.take(data, slice(rank * 150, (rank + 1) * 150 if rank == 0 else None), -1)  # uneven shards
    out = {}
    for cls in (tmx.AUC, tmx.AUPRC):
        metric = _metric_for(cls, shard, options)
        if rank == 0:
            _update_in_batches(metric, shard, size=64)
        else:
            _update_in_batches(metric, shard, size=101)
        out[cls.__name__] = metric.curve()
    return out


@pytest.mark.ddp
@pytest.mark.parametrize("num_bins", [None, 100], ids=["exact", "binned"])
def test_metric_curves_sync_across_ranks(ddp_pool, num_bins):
    data, options = _inputs({"num_tasks": 2, "weights": "task", **({"num_bins": num_bins} if num_bins else {})})
    results = ddp_pool.run(_ddp_curves, data, num_bins)
    for name, ref in (("AUC", ref_roc), ("AUPRC", ref_pr)):
        expected = _expected_per_task(ref, data, options)
        for rank_result in results:
            for t, (actual, want) in enumerate(zip(_per_task(rank_result[name]), expected, strict=True)):
                assert_curve(actual, want, f"{name} task {t}", rtol=METRIC_RTOL)


def test_metric_plots_draw_the_curve_or_the_values():
    import matplotlib

    matplotlib.use("Agg")
    data, _ = _inputs({"num_tasks": 2})
    metric = tmx.AUC(num_tasks=2)
    metric.update(data["preds"], data["target"])
    _, ax = metric.plot(labels=["click", "like"])
    score = metric.compute()
    labels = {line.get_label() for line in ax.get_lines()}
    assert labels == {f"click AUC={score[0]:0.3f}", f"like AUC={score[1]:0.3f}", "chance"}
    pr = tmx.AUPRC()
    pr.update(data["preds"][0], data["target"][0])
    _, ax = pr.plot()
    (line,) = ax.get_lines()
    _, recall, _ = pr.curve()
    np.testing.assert_allclose(line.get_xdata(), recall)
    assert ax.get_xlabel() == "Recall"
    fig, ax = pr.plot(pr.curve())
    assert fig is not None
    fig, ax = tmx.AUC().plot([torch.tensor(0.6), torch.tensor(0.7)])  # values over time: TorchMetrics' plot
    assert fig is not None and ax.get_lines()[0].get_ydata().tolist() == pytest.approx([0.6, 0.7])


@pytest.mark.parametrize(
    ("fn", "sk_fn"), [(tmf.roc_curve, skm.roc_curve), (tmf.precision_recall_curve, skm.precision_recall_curve)]
)
def test_probability_bins_give_the_curve_of_the_binned_scores(fn, sk_fn):
    """``bin_space="probability"``: scikit-learn's curve of ``floor(float32(p) * B)``, thresholds ``b / B``."""
    num_bins = 40
    data, _ = _inputs({"weights": "task"})
    numpy = H.to_numpy(data)
    bins = np.clip(np.floor(numpy["preds"].astype(np.float32) * np.float32(num_bins)), 0, num_bins - 1)
    kwargs = {"drop_intermediate": False} if sk_fn is skm.roc_curve else {}
    x, y, thresholds = sk_fn(numpy["target"], bins.astype(np.float64), sample_weight=numpy["weights"], **kwargs)
    finite = np.isfinite(thresholds)
    thresholds[finite] = thresholds[finite] / num_bins
    got = fn(data["preds"], data["target"], data["weights"], num_bins=num_bins, bin_space="probability")
    assert_curve(got, (x, y, thresholds), "probability bins")
    metric = (tmx.AUC if fn is tmf.roc_curve else tmx.AUPRC)(num_bins=num_bins, bin_space="probability")
    metric.update(data["preds"], data["target"], data["weights"])
    assert_curve(metric.curve(), (x, y, thresholds), "metric, probability bins")
    # logits: the same bins (centres, far from any edge), thresholds the logits of the lower edges
    centres = torch.tensor([0.5, 3.5, 3.5, 17.5, 39.5], dtype=torch.float64) / num_bins
    target = torch.tensor([0, 1, 0, 1, 1])
    *_, got_thresholds = fn(centres.logit(), target, num_bins=num_bins, bin_space="probability", from_logits=True)
    edges = torch.tensor([0.0, 3.0, 17.0, 39.0], dtype=torch.float64) / num_bins
    want = (
        edges.logit()
        if fn is tmf.precision_recall_curve
        else torch.cat([torch.tensor([math.inf]), edges.logit().flip(0)])
    )
    torch.testing.assert_close(got_thresholds, want)


@pytest.mark.parametrize("with_weights", [False, True])
def test_exact_thresholds_are_the_scores_as_given(with_weights):
    """float64 scores were reported rounded to float32: `preds >= threshold` then missed the point's samples."""
    rng = np.random.default_rng(61)
    n = 300
    p_np = rng.random(n)  # float64 values that float32 cannot hold
    p_np[:20] = p_np[20:40] + 1e-12  # pairs that tie as float32 (compared as float32: one point each)
    y_np = (rng.random(n) < p_np).astype(np.int64)
    w_np = rng.uniform(0.5, 2.0, size=n) if with_weights else np.ones(n)
    p, y = torch.tensor(p_np), torch.tensor(y_np)
    w = torch.tensor(w_np) if with_weights else None
    fpr, tpr, thresholds = tmf.roc_curve(p, y, w)
    precision, recall, pr_thresholds = tmf.precision_recall_curve(p, y, w)
    # the scores as compared (float32 runs); each threshold is the smallest float64 score of its run
    runs = np.unique(p_np.astype(np.float32))[::-1]
    smallest = np.array([p_np[p_np.astype(np.float32) == r].min() for r in runs])
    np.testing.assert_array_equal(thresholds.numpy(), np.concatenate([[np.inf], smallest]))
    np.testing.assert_array_equal(pr_thresholds.numpy(), smallest[::-1])
    positives, negatives = (w_np * y_np).sum(), (w_np * (1 - y_np)).sum()
    for k, threshold in enumerate(thresholds.tolist()):
        chosen = p_np >= threshold
        np.testing.assert_allclose(tpr[k].item(), (w_np * y_np)[chosen].sum() / positives, rtol=1e-12, atol=0)
        np.testing.assert_allclose(fpr[k].item(), (w_np * (1 - y_np))[chosen].sum() / negatives, rtol=1e-12, atol=0)
    for k, threshold in enumerate(pr_thresholds.tolist()):
        chosen = p_np >= threshold
        tp = (w_np * y_np)[chosen].sum()
        np.testing.assert_allclose(precision[k].item(), tp / w_np[chosen].sum(), rtol=1e-12)
        np.testing.assert_allclose(recall[k].item(), tp / positives, rtol=1e-12)
    # scores distinct as float32: the thresholds are scikit-learn's, bit for bit
    distinct = p_np[20:]
    _, _, sk_thresholds = skm.roc_curve(y_np[20:], distinct, drop_intermediate=False)
    np.testing.assert_array_equal(tmf.roc_curve(torch.tensor(distinct), y[20:])[2].numpy(), sk_thresholds)


def test_metric_curve_thresholds_are_the_float32_scores_it_keeps():
    """The states keep float32 scores (documented): thresholds are those, selecting `preds.float() >= t`."""
    rng = np.random.default_rng(62)
    p_np = rng.random(200)
    y_np = (rng.random(200) < p_np).astype(np.int64)
    metric = tmx.AUC()
    metric.update(torch.tensor(p_np), torch.tensor(y_np))
    _, tpr, thresholds = metric.curve()
    as_float32 = p_np.astype(np.float32)
    np.testing.assert_array_equal(thresholds.numpy()[1:], np.unique(as_float32)[::-1].astype(np.float64))
    for k, threshold in enumerate(thresholds.tolist()):
        chosen = as_float32 >= threshold
        np.testing.assert_allclose(tpr[k].item(), y_np[chosen].sum() / y_np.sum(), rtol=1e-12, atol=0)
