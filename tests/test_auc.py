"""AUC, AUPRC and their grouped variants through the shared harness, against scikit-learn."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import subprocess
import sys
import warnings
import weakref
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torchmetrics
from sklearn import metrics as skm
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.auc import _device as device_kernels
from torchmetrics_ext.functional.auc import _kernels as K
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

N = 900
LOGIT_RANGE = (-16.0, 16.0)


# ----------------------------------------------------------------------------- data


def auc_data(
    rng: np.random.Generator,
    num_tasks: int | None = None,
    weights: str | None = None,
    logits: bool = False,
    grouped: bool = False,
) -> H.Data:
    """Click-like scores with many ties, labels drawn from them; optional group ids."""
    shape = (N,) if num_tasks is None else (num_tasks, N)
    p = rng.beta(2.0, 5.0, size=shape)
    p[..., : N // 3] = np.round(p[..., : N // 3], 2)  # ties
    y = (rng.random(shape) < p).astype(np.int64)
    out: H.Data = {
        "preds": torch.tensor(np.log(p / (1 - p)) if logits else p, dtype=torch.float32),
        "target": torch.tensor(y),
    }
    if grouped:
        # ~110 groups, negative and huge ids, some with a single class
        out["groups"] = torch.tensor((rng.integers(-20, 90, size=N) * 1_000_003_000) % 2**46 - 2**45)
    out["weights"] = H.random_weights(rng, weights, shape)
    return out


# ----------------------------------------------------------------------------- references (sklearn)


def _both_classes(y, w):
    w = np.ones_like(y, dtype=float) if w is None else w
    return (w * y).sum() > 0 and (w * (1 - y)).sum() > 0


def _binned(p, num_bins, logits, bin_space="logit"):
    """The documented bin of each score: equal bins of the logit over LOGIT_RANGE, clipped; or, in
    probability space, the float32 product p * B floored (TorchRec's lifetime AUPRC)."""
    if bin_space == "probability":
        q = (1.0 / (1.0 + np.exp(-p))).astype(np.float32) if logits else np.float32(p)
        return np.clip(np.floor(q * np.float32(num_bins)), 0, num_bins - 1)
    with np.errstate(divide="ignore"):
        z = p if logits else np.log(p / (1.0 - p))
    lo, hi = LOGIT_RANGE
    return np.clip(np.floor((z - lo) * (num_bins / (hi - lo))), 0, num_bins - 1)


def _scores(p, num_bins, logits, bin_space):
    """The probabilities (the sigmoid of logits, in float64), or their documented bins."""
    if num_bins is not None:
        return _binned(p, num_bins, logits, bin_space)
    return 1.0 / (1.0 + np.exp(-p)) if logits else p


def ref_auc(p, y, w, num_bins=None, logits=False, bin_space="logit"):
    if not _both_classes(y, w):
        return np.nan
    scores = _scores(p, num_bins, logits, bin_space)
    return skm.roc_auc_score(y, scores, sample_weight=w)


def ref_auprc(p, y, w, num_bins=None, logits=False, bin_space="logit"):
    if (y * (np.ones_like(p) if w is None else w)).sum() <= 0:
        return np.nan
    scores = _scores(p, num_bins, logits, bin_space)
    return skm.average_precision_score(y, scores, sample_weight=w)


def ref_grouped(p, y, g, w, ref=ref_auc, weight_groups=False, average_groups="defined", logits=False):
    """Per-group loop over scikit-learn (a loop is fine in a test reference).

    ``average_groups="all"`` (TorchRec): every group, even one of zero-weight rows; one without both
    classes counts 0.5 (AUC), or 1 with positive weight only and 0 without (AUPRC).
    """
    values, group_weights = [], []
    for gid in np.unique(g):
        m = g == gid
        wm = None if w is None else w[m]
        total = m.sum() if w is None else wm.sum()
        if _both_classes(y[m], wm):
            values.append(ref(p[m], y[m], wm, logits=logits))
        elif average_groups == "all":
            positives = (y[m] * (1.0 if wm is None else wm)).sum()
            values.append(0.5 if ref is ref_auc else float(positives > 0))
        else:
            continue
        group_weights.append(total if weight_groups else 1.0)
    return np.average(values, weights=group_weights) if values else np.nan


def per_task_grouped(ref, **kw):
    def reference(d):
        p, y, g, w = d["preds"], d["target"], d["groups"], d.get("weights")
        if p.ndim == 1:
            return ref_grouped(p, y, g, w, ref, **kw)
        return np.asarray(
            [
                ref_grouped(p[t], y[t], g, None if w is None else (w[t] if w.ndim == 2 else w), ref, **kw)
                for t in range(p.shape[0])
            ]
        )

    return reference


# ----------------------------------------------------------------------------- cases


def _case(cid, cls, fn, ref, data_kw=None, kw=None, ref_kw=None, num_tasks=None, grouped=False):
    kw = dict(kw or {})
    metric_kw = dict(kw, **({"num_tasks": num_tasks} if num_tasks else {}))
    fn_kw = {k: v for k, v in kw.items() if k != "groups_complete_per_batch"}
    data = partial(auc_data, num_tasks=num_tasks, grouped=grouped, **(data_kw or {}))
    if grouped:
        reference = per_task_grouped(ref, **(ref_kw or {}))
    else:
        reference = H.per_task(ref, "preds", "target", "weights", **(ref_kw or {}))
    return H.MetricCase(
        id=cid,
        metric=partial(cls, **metric_kw),
        data=data,
        reference=reference,
        functional=partial(fn, **fn_kw),
    )


def _variants(name, cls, fn, ref, kw=None, ref_kw=None):
    kw, ref_kw = kw or {}, ref_kw or {}
    return [
        _case(name, cls, fn, ref, kw=kw, ref_kw=ref_kw),
        _case(f"{name}-w", cls, fn, ref, data_kw={"weights": "task"}, kw=kw, ref_kw=ref_kw),
        _case(f"{name}-3task-w", cls, fn, ref, data_kw={"weights": "task"}, kw=kw, ref_kw=ref_kw, num_tasks=3),
        _case(f"{name}-3task-shared-w", cls, fn, ref, {"weights": "shared"}, kw, ref_kw, num_tasks=3),
        _case(
            f"{name}-logits-w",
            cls,
            fn,
            ref,
            data_kw={"weights": "task", "logits": True},
            kw=dict(kw, from_logits=True),
            ref_kw=dict(ref_kw, logits=True),
        ),
    ]


def _grouped_variants(name, cls, fn, ref):
    every = {"average_groups": "all"}
    return [
        _case(f"{name}-all-w", cls, fn, ref, {"weights": "task"}, every, every, grouped=True),
        _case(f"{name}-all-3task-w", cls, fn, ref, {"weights": "task"}, every, every, num_tasks=3, grouped=True),
        _case(
            f"{name}-all-weighted-groups-w",
            cls,
            fn,
            ref,
            {"weights": "task"},
            every | {"weight_groups": True},
            every | {"weight_groups": True},
            grouped=True,
        ),
        _case(name, cls, fn, ref, grouped=True),
        _case(f"{name}-w", cls, fn, ref, data_kw={"weights": "task"}, grouped=True),
        _case(f"{name}-3task-w", cls, fn, ref, data_kw={"weights": "task"}, num_tasks=3, grouped=True),
        _case(f"{name}-3task-shared-w", cls, fn, ref, {"weights": "shared"}, num_tasks=3, grouped=True),
        _case(
            f"{name}-weighted-groups-w",
            cls,
            fn,
            ref,
            {"weights": "task"},
            {"weight_groups": True},
            {"weight_groups": True},
            grouped=True,
        ),
        _case(
            f"{name}-logits-w",
            cls,
            fn,
            ref,
            {"weights": "task", "logits": True},
            {"from_logits": True},
            {"logits": True},
            grouped=True,
        ),
    ]


BINS = {"num_bins": 1000}
PROBABILITY_BINS = {"num_bins": 1000, "bin_space": "probability"}  # TorchRec's lifetime AUPRC
_ALL = [
    *_variants("auc", tmx.AUC, tmf.auc, ref_auc),
    *_variants("auprc", tmx.AUPRC, tmf.auprc, ref_auprc),
    *_variants("auc-bins", tmx.AUC, tmf.auc, ref_auc, kw=BINS, ref_kw=BINS),
    *_variants("auprc-bins", tmx.AUPRC, tmf.auprc, ref_auprc, kw=BINS, ref_kw=BINS),
    *_variants("auprc-pbins", tmx.AUPRC, tmf.auprc, ref_auprc, kw=PROBABILITY_BINS, ref_kw=PROBABILITY_BINS),
    _case("auc-pbins-w", tmx.AUC, tmf.auc, ref_auc, {"weights": "task"}, PROBABILITY_BINS, PROBABILITY_BINS),
    *_grouped_variants("gauc", tmx.GroupedAUC, tmf.grouped_auc, ref_auc),
    *_grouped_variants("gauprc", tmx.GroupedAUPRC, tmf.grouped_auprc, ref_auprc),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
DDP_IDS = [i for i in IDS if i.endswith("-3task-w") or i in ("auc-w", "auprc-logits-w", "gauc-weighted-groups-w")]
LOW_GROUPED = ("gauc-all-w", "gauc-logits-w", "gauprc-w", "gauprc-all-weighted-groups-w")


@pytest.fixture(params=[None, 7], ids=["block-default", "block-7"])
def block(request, monkeypatch):
    """Run the exact kernels also with tiny blocks, so tie runs, tasks and segments span block edges."""
    if request.param is not None:
        monkeypatch.setattr(K, "_BLOCK", request.param)


@pytest.mark.parametrize("cid", IDS)
def test_accumulate(cid, block):
    H.check_accumulate(CASES[cid])


globals().update(
    H.harness_tests(
        __name__,
        CASES,
        accumulate=(),  # test_accumulate above also runs the kernels with tiny blocks
        dtypes=[i for i in IDS if i.endswith("-3task-w")],
        # the grouped references loop over ~110 groups in scikit-learn: a few grouped cases only
        low_precision=[i for i in IDS if not i.endswith("-3task-w") and (not i.startswith("ga") or i in LOW_GROUPED)],
        collection=[i for i in IDS if i.endswith("-3task-w") or i.endswith("-logits-w")],
        # TorchRec's averaging counts a group of zero-weight rows: zero weights are not removed rows
        invariances=[i for i in IDS if i.endswith("-w") and "-all-" not in i],
        ddp=DDP_IDS,
        # unweighted, shared weights, binned logits, probability bins, TorchRec's averaging of every group
        ddp_scenarios=[
            "auc",
            "auprc",
            "auc-3task-shared-w",
            "auc-3task-w",
            "auc-logits-w",
            "auc-bins-logits-w",
            "auprc-bins-logits-w",
            "auc-pbins-w",
            "auprc-pbins-w",
            "gauc",
            "gauc-all-w",
            "gauprc-all-weighted-groups-w",
        ],
        device_path=IDS,
    )
)


# ----------------------------------------------------------------------------- bad input


def _bad(data, **changes):
    return dict(data, **changes)


_BASE = auc_data(np.random.default_rng(5), weights="task")
_BASE3 = auc_data(np.random.default_rng(5), num_tasks=3, weights="task")
_GBASE = auc_data(np.random.default_rng(5), weights="task", grouped=True)
_P, _Y = _BASE["preds"], _BASE["target"]
REJECTS = [
    ("auc-w", _bad(_BASE, preds=[0.5] * N), TypeError, "`preds` to be a torch.Tensor"),
    ("auc-w", _bad(_BASE, preds=torch.ones(N, dtype=torch.int64)), TypeError, "`preds` to be a floating"),
    ("auc-w", _bad(_BASE, preds=_P * 3), ValueError, "probabilities in \\[0, 1\\]"),
    ("auc-w", _bad(_BASE, preds=torch.where(_P > 0.5, float("nan"), _P)), ValueError, "finite"),
    ("auc-w", _bad(_BASE, target=_Y * 2), ValueError, "binary labels"),
    ("auc-w", _bad(_BASE, target=_Y[:-1]), ValueError, "`target` of the same shape"),
    ("auc-w", _bad(_BASE, weights=-_BASE["weights"]), ValueError, "non-negative"),
    ("auc-w", _bad(_BASE, weights=torch.ones(3)), ValueError, "`weights` of shape"),
    ("auprc-bins-w", _bad(_BASE, preds=_P - 1), ValueError, "probabilities"),
    (
        "auc-3task-w",
        _bad(_BASE3, preds=_BASE3["preds"][:2], target=_BASE3["target"][:2], weights=_BASE3["weights"][:2]),
        ValueError,
        "num_tasks=3",
    ),
    ("auc-3task-w", _BASE, ValueError, "num_tasks=3"),
    ("gauc-w", _bad(_GBASE, groups=_GBASE["groups"].double()), TypeError, "`groups` to be an integer"),
    ("gauc-w", _bad(_GBASE, groups=list(range(N))), TypeError, "`groups` to be a torch.Tensor"),
    ("gauc-w", _bad(_GBASE, groups=_GBASE["groups"][:-2]), ValueError, "`groups` of shape"),
    ("gauprc-w", _bad(_GBASE, target=_GBASE["target"] * 3), ValueError, "binary labels"),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), REJECTS, ids=[f"{r[0]}-{r[3][:20]}" for r in REJECTS])
def test_rejects(cid, bad, exc, match):
    H.check_rejects(CASES[cid], bad, exc, match)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (partial(tmx.AUC, num_bins=1), "`num_bins`"),
        (partial(tmx.AUPRC, num_bins=10.0), "`num_bins`"),
        (partial(tmx.AUC, num_bins=True), "`num_bins`"),
        (partial(tmx.AUC, num_bins=10, logit_range=(3.0, -3.0)), "`logit_range`"),
        (partial(tmx.AUC, logit_range=(float("-inf"), 3.0)), "`logit_range`"),
        (partial(tmx.AUC, from_logits=1), "`from_logits`"),
        (partial(tmx.GroupedAUC, weight_groups="yes"), "`weight_groups`"),
        (partial(tmx.AUPRC, num_bins=10, bin_space="prob"), "`bin_space` to be one of"),
        (partial(tmf.auprc, _P, _Y, num_bins=10, bin_space=None), "`bin_space` to be one of"),
        (partial(tmx.GroupedAUPRC, average_groups="every"), "`average_groups` to be one of"),
        (partial(tmf.grouped_auc, _P, _Y, _GBASE["groups"], average_groups=None), "`average_groups` to be one of"),
        (partial(tmx.GroupedAUPRC, groups_complete_per_batch=None), "`groups_complete_per_batch`"),
        (partial(tmx.AUC, num_tasks=0), "`num_tasks`"),
        (partial(tmf.auc, _P, _Y, num_bins=0), "`num_bins`"),
        (partial(tmf.grouped_auc, _P, _Y, _GBASE["groups"], weight_groups=0), "`weight_groups`"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"bin_space": "probability"}, r"`num_bins` \(an integer >= 2\) with `bin_space='probability'`"),
        ({"logit_range": (-4.0, 4.0)}, r"`num_bins` \(an integer >= 2\) with `logit_range=\(-4.0, 4.0\)`"),
        ({"num_bins": 10, "bin_space": "probability", "logit_range": (-4.0, 4.0)}, "bin_space='probability'.*ignored"),
    ],
)
def test_bin_options_that_would_be_ignored_are_refused(options, match):
    """Exact mode has no bins: ``AUC(bin_space="probability")`` silently gave the exact value (and
    ``logit_range`` with probability bins was ignored too)."""
    for build in (
        partial(tmx.AUC, **options),
        partial(tmx.AUPRC, **options),
        partial(tmf.auc, _P, _Y, **options),
        partial(tmf.auprc, _P, _Y, **options),
        partial(tmf.roc_curve, _P, _Y, **options),
        partial(tmf.precision_recall_curve, _P, _Y, **options),
    ):
        with pytest.raises(ValueError, match=match):
            build()
    # the defaults, given explicitly, and the options where they place bins stay fine
    p, y = _P.double().numpy(), _Y.numpy()
    exact = tmx.AUC(logit_range=(-16, 16), bin_space="logit")(_P, _Y)
    np.testing.assert_allclose(exact.item(), skm.roc_auc_score(y, p.astype(np.float32)), rtol=1e-6)
    binned = tmx.AUC(num_bins=10, bin_space="probability", logit_range=(-16.0, 16.0))(_P, _Y)
    bins = np.minimum(np.floor(p.astype(np.float32) * np.float32(10)), 9)
    np.testing.assert_allclose(binned.item(), skm.roc_auc_score(y, bins), rtol=1e-12)
    tmx.AUPRC(num_bins=10, logit_range=(-4.0, 4.0))


# ----------------------------------------------------------------------------- undefined values


@pytest.mark.parametrize("num_bins", [None, 100])
def test_single_class_is_nan_with_warning(num_bins):
    preds = torch.tensor([[0.2, 0.4, 0.9], [0.2, 0.4, 0.9]])
    target = torch.tensor([[0, 0, 0], [0, 1, 1]])
    for cls, expected in ((tmx.AUC, [np.nan, 1.0]), (tmx.AUPRC, [np.nan, 1.0])):
        metric = cls(num_tasks=2, num_bins=num_bins)
        metric.update(preds, target)
        with pytest.warns(UndefinedMetricWarning, match=r"undefined for task\(s\) \[0\]"):
            H.assert_close(metric.compute(), expected, 1e-12, 0)
    # positives only: AUC undefined, AP is 1 (scikit-learn) with no warning
    with pytest.warns(UndefinedMetricWarning, match="single class"):
        assert torch.isnan(tmf.auc(preds[1], torch.ones(3, dtype=torch.int64), num_bins=num_bins))
    assert tmf.auprc(preds[1], torch.ones(3, dtype=torch.int64), num_bins=num_bins) == 1.0


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC, tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_no_update_is_nan(cls):
    with pytest.warns(UndefinedMetricWarning):
        assert torch.isnan(cls().compute())


@pytest.mark.parametrize("complete", [False, True])
def test_grouped_without_any_two_class_group_is_nan(complete):
    metric = tmx.GroupedAUC(groups_complete_per_batch=complete)
    metric.update(torch.tensor([0.1, 0.7, 0.3]), torch.tensor([0, 1, 0]), torch.tensor([1, 2, 3]))
    with pytest.warns(UndefinedMetricWarning, match="no group holds both classes"):
        assert torch.isnan(metric.compute())


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        (torch.tensor([0.2, 1.5, 0.7]), torch.tensor([0, 1, 1]), "probabilities"),
        (torch.tensor([0.2, float("nan"), 0.7]), torch.tensor([0, 1, 1]), "finite"),
        (torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0, 2, 1]), "binary labels"),
        (torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.0, 0.5, 1.0]), "not all 0 or 1"),
        (torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0, 1]), "`target` of the same shape"),
    ],
)
def test_one_task_unweighted_rejects_leave_the_states_untouched(cls, preds, target, match, device_path):
    """The one-task unweighted update copies the batch before its bounds are read: nothing of it is stored."""
    metric = cls()
    metric.update(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0, 1, 1]))
    before = {name: [chunk.clone() for chunk in getattr(metric, name)] for name in metric._defaults}
    with force_device_path(device_path), pytest.raises(ValueError, match=match):
        metric.update(preds, target)
    for name, chunks in before.items():
        assert [c.tolist() for c in getattr(metric, name)] == [c.tolist() for c in chunks]
    assert metric.update_count == 1


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize(
    "dtype",
    [torch.int64, torch.int32, torch.bool, torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16],
)
@pytest.mark.parametrize("num_tasks", [1, 3])
def test_unweighted_signs_of_every_label_dtype(dtype, num_tasks, device_path):
    """+1/-1 per label, stored float32 and sample-major, whatever the labels' dtype and the number of tasks."""
    rng = np.random.default_rng(num_tasks)
    labels = rng.integers(0, 2, size=(num_tasks, 40))
    preds = torch.tensor(rng.random((num_tasks, 40)), dtype=torch.float32)
    metric = tmx.AUC(num_tasks=num_tasks)
    target = torch.tensor(labels).to(dtype)
    with force_device_path(device_path):
        metric.update(preds.squeeze(0) if num_tasks == 1 else preds, target.squeeze(0) if num_tasks == 1 else target)
    (signs,) = metric.signed_weights
    assert signs.dtype == torch.float32 and signs.is_contiguous()
    np.testing.assert_array_equal(signs.numpy(), np.where(labels == 1, 1.0, -1.0).T.reshape(-1))
    expected = [skm.roc_auc_score(labels[k], preds[k].numpy()) for k in range(num_tasks)]
    np.testing.assert_allclose(metric.compute().reshape(-1).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("target_shape", "weights_shape"), [((5,), (5,)), ((3, 5), (5,)), ((3, 5), (1, 5)), ((5,), (3, 5))]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_weights_broadcast_and_round_as_the_weights(target_shape, weights_shape, dtype):
    """``+w`` for labels 1, ``-w`` for labels 0, in the broadcast shape, each ``w`` rounded to ``dtype`` once."""
    rng = np.random.default_rng(0)
    target = torch.tensor(rng.integers(0, 2, size=target_shape))
    weights = torch.tensor(rng.random(weights_shape) * 3 + 1e-3, dtype=torch.float64)
    got = FB._signed_weights(target, weights, dtype)
    expected = np.where(target.numpy() == 1, 1.0, -1.0) * weights.numpy().astype(
        np.float32 if dtype == torch.float32 else np.float64
    )
    assert got.dtype == dtype and tuple(got.shape) == np.broadcast_shapes(target_shape, weights_shape)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("kw", [{}, {"num_bins": 50}])
def test_empty_and_zero_weight_batches_change_nothing(kw):
    data = auc_data(np.random.default_rng(0), weights="task")
    metric = tmx.AUC(**kw)
    metric.update(**data)
    before = metric.compute()
    metric.update(torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    metric.update(data["preds"], 1 - data["target"], torch.zeros(N))
    assert torch.equal(metric.compute(), before)
    if not kw:
        assert sum(chunk.numel() for chunk in metric.preds) == N  # zero-weight rows are not stored


def test_tie_rule_is_order_independent():
    """All tied: TorchRec's order-dependent AUC gives 0 or 1 here; the tie rule gives 1/2 either way."""
    preds = torch.full((6,), 0.3)
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    assert tmf.auc(preds, target) == 0.5
    assert tmf.auc(preds, target.flip(0)) == 0.5
    assert tmf.auprc(preds, target) == 0.5  # one curve point: precision 1/2 at recall 1


def test_float32_scores_tie():
    """Documented: scores are compared as float32, so differences below float32 precision tie."""
    preds = torch.tensor([0.5, 0.5 + 1e-12], dtype=torch.float64)
    assert tmf.auc(preds, torch.tensor([1, 0])) == 0.5
    assert tmf.auc(torch.tensor([0.0, -0.0]), torch.tensor([1, 0]), from_logits=True) == 0.5  # -0.0 == 0.0


# ----------------------------------------------------------------------------- binned accuracy


def ctr_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Click-through-like data: base rate ~2%, scores crowded near 0.003-0.06, AUC ~0.74."""
    rng = np.random.default_rng(seed)
    true_logit = -4.35 + 0.95 * rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.int64)
    p = 1 / (1 + np.exp(-(true_logit + rng.normal(scale=0.35, size=n))))
    return torch.tensor(p, dtype=torch.float32), torch.tensor(y)


def test_binned_is_close_to_exact_on_ctr_data():
    preds, target = ctr_data(1_000_000, 0)
    assert 0.015 < target.double().mean() < 0.025
    exact = skm.roc_auc_score(target.numpy(), preds.numpy())
    assert 0.7 < exact < 0.8
    hist = FB._binned_update(preds.double()[None], target.double()[None], None, 10_000, LOGIT_RANGE, False)
    bound = FB._binned_error_bound(hist).item()
    binned = tmx.AUC(num_bins=10_000)
    binned.update(preds, target)
    error = abs(binned.compute().item() - exact)
    assert error <= bound < 1e-3
    assert error < 1e-4
    ap_error = abs(tmf.auprc(preds, target, num_bins=10_000).item() - skm.average_precision_score(target, preds))
    assert ap_error < 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_binned_error_bound_holds(seed):
    rng = np.random.default_rng(seed)
    preds = torch.tensor(rng.beta(0.5, 0.5, size=(2, 500)))
    target = torch.tensor((rng.random((2, 500)) < preds.numpy()).astype(np.int64))
    weights = torch.tensor(rng.uniform(0, 2, size=500))
    exact = tmf.auc(preds, target, weights)
    hist = FB._binned_update(preds, target.double(), weights[None], 7, LOGIT_RANGE, False)
    error = (tmf.auc(preds, target, weights, num_bins=7) - exact).abs()
    assert (error <= FB._binned_error_bound(hist) + 1e-12).all()


# ----------------------------------------------------------------------------- groups complete per batch


def _group_batches(data: H.Data, rng: np.random.Generator, num_batches: int) -> list[H.Data]:
    """Rows sorted by group, cut only at group boundaries."""
    order = torch.argsort(data["groups"], stable=True)
    data = H.take(data, order, -1)
    starts = torch.nonzero(torch.diff(data["groups"]) != 0).reshape(-1).numpy() + 1
    cuts = np.sort(rng.choice(starts, size=num_batches - 1, replace=False))
    return H.split(data, [0, *cuts.tolist(), N], -1)


COMPLETE_IDS = [i for i in IDS if i.startswith("g") and i.endswith("-w")]


def _complete_case(cid: str) -> H.MetricCase:
    case = CASES[cid]
    return H.MetricCase(
        id=f"{cid}-complete",
        metric=partial(case.metric, groups_complete_per_batch=True),
        data=case.data,
        reference=case.reference,
    )


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("cid", COMPLETE_IDS)
def test_groups_complete_per_batch(cid, device_path):
    with force_device_path(device_path):
        _check_groups_complete_per_batch(cid)


def _check_groups_complete_per_batch(cid):
    case = _complete_case(cid)
    data = case.make_data(0)
    expected = H._expected(case, data)
    rng = np.random.default_rng(1)
    for num_batches in (1, 3, 8):
        batches = _group_batches(data, rng, num_batches)
        metric, forwarded = case.metric(), case.metric()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            for batch in batches:
                metric.update(**batch)
                H.assert_close(forwarded(**batch), H._expected(case, batch), 1e-6, 1e-9, "forward")
        H.assert_close(metric.compute(), expected, 1e-6, 1e-9, f"{cid} {num_batches} batches")
        H.assert_close(forwarded.compute(), expected, 1e-6, 1e-9, f"{cid} forward {num_batches} batches")
        # resume from a mid-stream checkpoint
        resumed = case.metric()
        half = case.metric()
        half.persistent(True)
        for batch in batches[: num_batches // 2]:
            half.update(**batch)
        resumed.persistent(True)
        resumed.load_state_dict(half.state_dict())
        for batch in batches[num_batches // 2 :]:
            resumed.update(**batch)
        H.assert_close(resumed.compute(), expected, 1e-6, 1e-9, f"{cid} resumed")
    fresh = case.metric()
    assert len(fresh.metric_state) == 2 and all(k.startswith("group_") for k in fresh.metric_state)  # constant memory
    assert all(v.shape == (fresh.num_tasks,) for v in fresh.metric_state.values())


def _complete_ddp_job(rank: int, world_size: int, cid: str, empty_rank: bool) -> np.ndarray:
    case = _complete_case(cid)
    batches = _group_batches(case.make_data(0), np.random.default_rng(1), 5)
    mine = batches if (empty_rank and rank == 0) else ([] if empty_rank else batches[rank::world_size])
    metric = case.metric()
    for batch in mine:
        metric.update(**batch)
    return metric.compute().double().numpy()


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("cid", ["gauc-3task-w", "gauprc-weighted-groups-w"])
def test_groups_complete_per_batch_ddp(ddp_pool, cid, empty_rank):
    case = _complete_case(cid)
    expected = H._expected(case, case.make_data(0))
    for value in ddp_pool.run(_complete_ddp_job, cid, empty_rank):
        H.assert_close(value, expected, 1e-6, 1e-9, f"{cid} complete DDP")


@pytest.mark.parametrize("seed", range(10))
def test_auc_matches_pairwise_definition(seed):
    """The double sum over (positive, negative) pairs of the docs, written out by brute force."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    p = np.round(rng.random(n), 1).astype(np.float32)
    y = rng.integers(0, 2, n)
    w = rng.integers(0, 4, n).astype(np.float64)
    pos, neg = (y == 1) & (w > 0), (y == 0) & (w > 0)
    if not pos.any() or not neg.any():
        return
    wp, wn = w[pos][:, None], w[neg][None, :]
    sp, sn = p[pos][:, None], p[neg][None, :]
    expected = (wp * wn * ((sp > sn) + 0.5 * (sp == sn))).sum() / (wp.sum() * wn.sum())
    got = tmf.auc(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(w))
    assert abs(got.item() - expected) < 1e-12


@pytest.mark.parametrize("given", ["metric", "dict"])
def test_many_merges_are_joined(given):
    """``merge_state`` puts the other's chunks first, where the join after ``update`` never looked:
    3,000 merges of one-sample metrics kept 3,000 chunks. Now the list stays short; values are sklearn's."""
    rng = np.random.default_rng(11)
    n = 3000
    preds, target = rng.random(n).astype(np.float32), (rng.random(n) < 0.4).astype(np.float32)
    sizes = [1] * (n - 400) + [100] * 4  # mostly single samples, a few larger metrics
    merged = tmx.AUC()
    merged.update(torch.tensor(preds[:5]), torch.tensor(target[:5]))
    start = 5
    for i, size in enumerate(sizes):
        stop = min(start + size, n)
        src = tmx.AUC()
        src.update(torch.tensor(preds[start:stop]), torch.tensor(target[start:stop]))
        merged.merge_state(src if given == "metric" else src.metric_state)
        if i % 500 == 0:  # updates in between
            merged.update(torch.tensor(preds[stop : stop + 1]), torch.tensor(target[stop : stop + 1]))
            stop += 1
        start = stop
    assert start == n
    assert len(merged.preds) == len(merged.signed_weights) <= 2 * 64 + 1 + 2  # was one chunk per merge
    np.testing.assert_allclose(merged.compute().item(), skm.roc_auc_score(target, preds), rtol=1e-9)


@pytest.mark.parametrize("call", ["update", "forward"])
@pytest.mark.parametrize("cls", [tmx.AUC, tmx.GroupedAUPRC])
def test_many_small_batches_are_joined(cls, call):
    """Small chunks of the list states are joined, through ``forward`` too; values are unchanged.

    ``forward`` appends the batch's chunks after its update (TorchMetrics joins the batch's
    states to the accumulated ones): it kept one chunk per batch.
    """
    data = auc_data(np.random.default_rng(3), num_tasks=2, weights="shared", grouped=True)
    if cls is tmx.AUC:
        data.pop("groups")
    metric = cls(num_tasks=2)
    for batch in H.split(data, [*range(0, N, 6), N], -1):  # 150 batches
        if call == "update":
            metric.update(**batch)
        else:
            with warnings.catch_warnings():  # a 6-sample batch's own value may be undefined
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                metric(**batch)
    assert len(metric.preds) < 64
    case = CASES["auc-3task-shared-w" if cls is tmx.AUC else "gauprc-3task-shared-w"]
    H.assert_close(metric.compute(), H._expected(case, data), 1e-6, 1e-9, cls.__name__)


def _copies_per_element(sizes):
    """Append chunks of ``sizes`` elements, joining after each append: copies of each element, list length."""
    from torchmetrics_ext.wrappers._ring import join_small_tails

    copies = {}  # id(chunk) -> (chunk, copies of each of its elements)
    real_cat = torch.cat

    def counting_cat(chunks, *args, **kwargs):
        out = real_cat(chunks, *args, **kwargs)
        copies[id(out)] = (out, np.concatenate([copies.pop(id(c))[1] for c in chunks]) + 1)
        return out

    state = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "cat", counting_cat)
        for n in sizes:
            chunk = torch.zeros(int(n))
            copies[id(chunk)] = (chunk, np.zeros(int(n), dtype=np.int64))
            state.append(chunk)
            join_small_tails([state])
    per_element = np.concatenate([copies[id(c)][1] for c in state])
    assert per_element.size == sum(sizes) and sum(c.numel() for c in state) == sum(sizes)
    return per_element, len(state)


@pytest.mark.parametrize(
    ("sizes", "most"),
    [
        ([1] * 40_000, 10),  # was 260 copies on average, 521 at most
        ([7] * 10_000, 7),
        ([64] * 4_000, 4),
        ([512] * 400, 1),
        (np.random.default_rng(0).integers(1, 1000, 3_000), 2),
        (np.exp(np.random.default_rng(1).uniform(0, np.log(30_000), 2_000)).astype(int), 1),
        (([100] + [1] * 63) * 300, 8),  # one larger batch in every 64
    ],
    ids=["1", "7", "64", "512", "uniform", "log-uniform", "periodic"],
)
def test_joined_chunks_copy_each_element_a_few_times(sizes, most):
    """Joining small chunks copies each element a few times, and the list stays short.

    A joined chunk still below ``_SMALL`` was joined again with the next 63 chunks: one-sample
    batches copied each element 260 times on average (docs/auc.md said "at most once more").
    Now the oldest of the chunks to join may hold no more elements than the others together.
    """
    per_element, length = _copies_per_element(sizes)
    assert per_element.max() <= most
    assert length <= 64 + 16 + sum(sizes) // (1 << 15)


@pytest.mark.parametrize("cid", ["auc-3task-shared-w", "auprc-bins-logits-w", "gauc-3task-w"])
def test_without_validation_same_values(cid):
    case = CASES[cid]
    data = case.make_data(0)
    metric = case.metric.func(**dict(case.metric.keywords, validate_args=False))
    for batch in H.split(data, [0, 300, 650, N], -1):
        metric.update(**batch)
    H.assert_close(metric.compute(), H._expected(case, data), case.rtol, case.atol, cid)


def test_complete_per_batch_grouped_metrics_never_share_a_compute_group():
    """Per-group AUC and AP are both 1 on perfectly ranked groups; their running sums must not merge."""
    from torchmetrics import MetricCollection

    kwargs = {"groups_complete_per_batch": True}
    collection = MetricCollection(
        {
            "gauc": tmx.GroupedAUC(**kwargs),
            "gauprc": tmx.GroupedAUPRC(**kwargs),
            "gauc_weighted": tmx.GroupedAUC(weight_groups=True, **kwargs),
        },
        compute_groups=True,
    )
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    perfect = (torch.tensor([0.9, 0.2, 0.1, 0.8, 0.7, 0.3]), torch.tensor([1, 0, 0, 1, 1, 0]))
    mixed = (torch.tensor([0.2, 0.9, 0.5, 0.1, 0.7, 0.8]), torch.tensor([1, 0, 1, 1, 0, 0]))
    for preds, target in (perfect, mixed):
        collection.update(preds, target, groups=groups)
    assert len(collection.compute_groups) == 3
    values = collection.compute()
    for key, metric in (("gauc", tmx.GroupedAUC(**kwargs)), ("gauprc", tmx.GroupedAUPRC(**kwargs))):
        for preds, target in (perfect, mixed):
            metric.update(preds, target, groups)
        torch.testing.assert_close(values[key], metric.compute())
    # each batch's groups are whole groups: the mean of the four per-group sklearn AUCs
    from sklearn.metrics import roc_auc_score

    per_group = [
        roc_auc_score(target[groups == g].numpy(), preds[groups == g].numpy())
        for preds, target in (perfect, mixed)
        for g in (0, 1)
    ]
    np.testing.assert_allclose(values["gauc"].item(), np.mean(per_group))


@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_hashed_64bit_group_ids(cls):
    """Hashed user ids use the whole int64 range; the value is sklearn's per group, across batches."""
    data = auc_data(np.random.default_rng(11), weights="task", grouped=True)
    dense = data["groups"]
    hashed = dense * 0x5851F42D4C957F2D - 2**62  # wraps around int64: distinct, huge, negative too
    assert hashed.abs().max() > 2**60 and hashed.unique().numel() == dense.unique().numel()
    metric = cls()
    for lo in range(0, N, 97):
        metric.update(
            data["preds"][lo : lo + 97],
            data["target"][lo : lo + 97],
            hashed[lo : lo + 97],
            data["weights"][lo : lo + 97],
        )
    ref = ref_auc if cls is tmx.GroupedAUC else ref_auprc
    expected = ref_grouped(
        *(H.to_numpy({"p": data["preds"], "y": data["target"], "g": dense, "w": data["weights"]})[k] for k in "pygw"),
        ref=ref,
    )
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6)


@pytest.mark.parametrize("ids", [torch.int32, torch.int64])
def test_grouped_auc_in_blocks_of_whole_groups(monkeypatch, ids):
    """Compute walks whole groups in bounded blocks (here of ~60 samples); values are sklearn's per group."""
    monkeypatch.setattr(importlib.import_module("torchmetrics_ext.functional.auc.grouped"), "_GROUP_BLOCK", 60)
    rng = np.random.default_rng(11)
    n = 1500
    groups = rng.integers(0, 40, n) * 1_000  # sparse ids: blocks follow the dense order of the ids
    preds = rng.random((2, n)).astype(np.float32)
    target = (rng.random((2, n)) < 0.3).astype(np.int64)
    weights = rng.choice([0.5, 1.0, 2.0], n)
    metric = tmx.GroupedAUC(num_tasks=2)
    for lo in range(0, n, 400):
        part = slice(lo, lo + 400)
        metric.update(
            torch.tensor(preds[:, part]),
            torch.tensor(target[:, part]),
            groups=torch.tensor(groups[part], dtype=ids),
            weights=torch.tensor(weights[part]),
        )
    assert metric.groups[0].dtype == ids  # ids given in 32 bits are kept in 32 bits
    expected = []
    for task in range(2):
        values = [
            skm.roc_auc_score(target[task, groups == g], preds[task, groups == g], sample_weight=weights[groups == g])
            for g in np.unique(groups)
            if 0 < target[task, groups == g].sum() < (groups == g).sum()
        ]
        expected.append(np.mean(values))
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)


class _LiveBytes(TorchDispatchMode):
    """Total bytes of the storages that operations inside the block allocate (each counted while it
    lives, freed ones subtracted), the largest total at any moment (``peak``), the total ever
    allocated and the largest single storage (``largest``; views and in-place results excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.allocated = self.largest = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            a.untyped_storage().data_ptr() for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)
        }
        for result in pytree.tree_leaves(out):
            if isinstance(result, torch.Tensor) and result.untyped_storage().data_ptr() not in inputs:
                storage = result.untyped_storage()
                self.live += storage.nbytes()
                self.allocated += storage.nbytes()
                self.largest = max(self.largest, storage.nbytes())
                weakref.finalize(storage, self._free, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


_LargestAllocation = _LiveBytes  # read for `largest` only


def _grouped_stats_data(n: int, large: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(T=2, n)`` scores (ties included) and signed weights; ``large`` samples in one group, ~10 per other group."""
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.rand(2, n, generator=gen) * 50).round() / 50
    weights = torch.rand(2, n, generator=gen) + 0.5
    signed = torch.where(torch.rand(2, n, generator=gen) < 0.3, weights, -weights)
    groups = torch.randint(0, max(1, (n - large) // 10), (n,), generator=gen) * 3
    groups[torch.randperm(n, generator=gen)[:large]] = 7  # the large group (7 is no other group's id)
    return scores, signed, groups


def test_grouped_compute_is_linear_in_samples_with_bounded_blocks(monkeypatch):
    """Exact grouped compute walks blocks of whole groups as slices of one sort of the ids: the work
    (bytes allocated) grows linearly with the samples at a fixed block size (a mask over every sample
    per block made it O(N * blocks): 10M samples in 1M groups took 4.6 s, 2.4 s of it masks), and a
    group larger than a block is packed and sorted in place (its block held ~60 bytes per element of
    temporaries). Values: scikit-learn's per group, averaged."""
    grouped = importlib.import_module("torchmetrics_ext.functional.auc.grouped")
    monkeypatch.setattr(grouped, "_GROUP_BLOCK", 64)
    monkeypatch.setattr(K, "_BLOCK", 64)
    per_sample = []
    for n in (4_000, 64_000):
        scores, signed, groups = _grouped_stats_data(n, large=0)
        with _LiveBytes() as mode:
            grouped._grouped_curve_stats(scores, signed, groups)
        per_sample.append(mode.allocated / n)
    # 16x the samples: 16x the bytes allocated (~440 per sample), not 87x (634 then 3,445 per sample)
    assert per_sample[1] <= 1.25 * per_sample[0], per_sample

    block = 256
    monkeypatch.setattr(grouped, "_GROUP_BLOCK", block)
    n, large = 6_000, 3_000
    scores, signed, groups = _grouped_stats_data(n, large)
    with _LiveBytes() as mode:
        pos, neg, auc_num, ap_num = grouped._grouped_curve_stats(scores, signed, groups)
    # the sort of the ids (sorted ids + order, 16 bytes/sample, and a flag per sample), the large group's
    # packed keys (8 bytes per element, one task at a time) and a few blocks of temporaries
    assert mode.peak <= 17 * n + 8 * large + 64 * 2 * block, mode.peak / n
    p, w, g = scores.numpy(), signed.abs().numpy(), groups.numpy()
    y = (signed > 0).numpy().astype(np.int64)
    valid = (pos > 0) & (neg > 0)
    for task in range(2):
        expected_auc = ref_grouped(p[task], y[task], g, w[task], ref=ref_auc)
        expected_ap = ref_grouped(p[task], y[task], g, w[task], ref=ref_auprc)
        got = valid[task]
        np.testing.assert_allclose(
            (auc_num[task][got] / (pos[task][got] * neg[task][got])).mean().item(), expected_auc, rtol=1e-12
        )
        np.testing.assert_allclose((ap_num[task][got] / pos[task][got]).mean().item(), expected_ap, rtol=1e-12)
        large_slot = int((torch.unique(groups) < 7).sum())  # slot g holds the g-th smallest id
        in_large = g == 7
        np.testing.assert_allclose(
            (auc_num[task, large_slot] / (pos[task, large_slot] * neg[task, large_slot])).item(),
            skm.roc_auc_score(y[task, in_large], p[task, in_large], sample_weight=w[task, in_large]),
            rtol=1e-12,
        )


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("kind", ["auc", "auprc"])
def test_a_group_of_huge_weights_leaves_the_other_groups_exact(device_path, kind):
    """A group's AUC/AP does not depend on other groups' weights, however large (scans over every group)."""
    rng = np.random.default_rng(3)
    n = 3000
    groups = rng.integers(0, 60, n)
    preds = rng.random(n).astype(np.float32)
    target = (rng.random(n) < 0.4).astype(np.int64)
    scale = 10.0 ** rng.integers(-20, 25, 60)  # each group's weights: up to 45 orders of magnitude apart
    weights = rng.random(n) * scale[groups]
    ref = ref_auc if kind == "auc" else ref_auprc
    fn = tmf.grouped_auc if kind == "auc" else tmf.grouped_auprc
    expected = ref_grouped(preds, target, groups, weights, ref=ref)
    for ids in (groups, 59 - groups):  # the heavy groups before or after the others
        with force_device_path(device_path):
            value = fn(torch.tensor(preds), torch.tensor(target), torch.tensor(ids), torch.tensor(weights))
        np.testing.assert_allclose(value.item(), expected, rtol=1e-9)


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("kind", ["auc", "auprc"])
def test_extreme_weight_ratios_within_a_task_stay_exact(device_path, kind):
    """Positives of weight 1e-20 against negatives of 1e20 (both float32): the task's scaling stays exact."""
    rng = np.random.default_rng(4)
    preds = rng.random((2, 40)).astype(np.float32)
    target = (rng.random((2, 40)) < 0.5).astype(np.int64)
    weights = np.where(target == 1, 1e-20, 1e20).astype(np.float32)
    weights[1] = 1.0
    ref = ref_auc if kind == "auc" else ref_auprc
    expected = [ref(preds[t], target[t], weights[t].astype(np.float64)) for t in range(2)]
    metric = tmx.AUC(num_tasks=2) if kind == "auc" else tmx.AUPRC(num_tasks=2)
    with force_device_path(device_path):
        metric.update(torch.tensor(preds), torch.tensor(target), torch.tensor(weights))
        value = metric.compute()
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- no cancellation across groups or tasks

TINY_P = torch.tensor([0.3, 0.6, 0.9, 0.5, 0.1])
TINY_Y = torch.tensor([0, 1, 1, 0, 1])
TINY_W = torch.tensor([5e5, 5e5, 1e-11, 1.0, 1e-11])  # group 1's positives: 1e-11 next to group 0's 1e6


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("kind", ["auc", "auprc"])
def test_a_group_of_tiny_class_weight_after_a_heavy_group(device_path, kind):
    """A group's TP/FP are sums within the group: its positives of weight 1e-11 are not lost next to the
    cumulative weight of the groups sorted before it, and relabelling the groups changes nothing."""
    ref = ref_auc if kind == "auc" else ref_auprc
    fn = tmf.grouped_auc if kind == "auc" else tmf.grouped_auprc
    cls = tmx.GroupedAUC if kind == "auc" else tmx.GroupedAUPRC
    w64 = TINY_W.numpy().astype(np.float64)  # the float32 weights the exact modes keep
    for ids in ([0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [7, 7, -(2**40), -(2**40), -(2**40)]):
        g = torch.tensor(ids)
        expected = ref_grouped(TINY_P.numpy(), TINY_Y.numpy(), np.asarray(ids), w64, ref=ref)
        with force_device_path(device_path):
            values = [fn(TINY_P, TINY_Y, g, TINY_W).item()]
            for complete in (False, True):
                metric = cls(groups_complete_per_batch=complete)
                metric.update(TINY_P, TINY_Y, g, TINY_W)
                values.append(metric.compute().item())
        np.testing.assert_allclose(values, expected, rtol=1e-13, err_msg=str(ids))


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("seed", range(4))
def test_grouped_values_with_weights_over_21_orders_of_magnitude(monkeypatch, device_path, seed):
    """Seeded fuzz: weights in [1e-15, 1e6] (some zero; a scale per group and class), ties, many small groups; each group's
    value is scikit-learn's on that group alone, whatever the ids (permuted, negative, 2^40 apart) and
    however the CPU path cuts its blocks (carried sums, the one-cumsum-per-segment and scan branches)."""
    rng = np.random.default_rng(100 + seed)
    monkeypatch.setattr(K, "_BLOCK", [5, 37, 1 << 16][seed % 3])
    monkeypatch.setattr(K, "_FEW_SEGMENTS", [16, 0][seed % 2])
    monkeypatch.setattr(K, "_FLAT_SCAN", [4, 256][seed // 2])
    monkeypatch.setattr(K, "_SCAN_WIDTH", [2, 64][seed // 2])
    n, num_groups = 700, 40
    g = rng.integers(0, num_groups, n)
    p = rng.random((2, n)).astype(np.float32)
    p[:, ::3] = np.round(p[:, ::3], 1)  # ties within groups
    y = (rng.random((2, n)) < 0.4).astype(np.int64)
    class_scale = 10.0 ** rng.uniform(-13, 4, (2, num_groups, 2))  # (task, group, label): heavy and light groups
    w = 10.0 ** rng.uniform(-2, 2, (2, n)) * class_scale[np.arange(2)[:, None], g, y]
    w = w.astype(np.float32).astype(np.float64)
    w[rng.random((2, n)) < 0.1] = 0.0
    relabelled = [g, rng.permutation(num_groups)[g], -(g * 2**40) - 5]
    for kind, fn, ref in (("auc", tmf.grouped_auc, ref_auc), ("auprc", tmf.grouped_auprc, ref_auprc)):
        expected = [ref_grouped(p[t], y[t], g, w[t], ref=ref) for t in range(2)]
        for ids in relabelled:
            with force_device_path(device_path):
                got = fn(torch.tensor(p), torch.tensor(y), torch.tensor(ids), torch.tensor(w))
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-13, err_msg=kind)


@pytest.mark.parametrize("seed", range(2))
def test_device_grouped_sort_without_packed_keys(monkeypatch, seed):
    """Past 2**31 (task, group) segments the packed sort key would overflow int64; the device path then
    sorts by score and stably by segment. Forced here on a small batch: sklearn's per-group values."""
    monkeypatch.setattr(device_kernels, "_PACKED_SEGMENTS", 0)
    rng = np.random.default_rng(300 + seed)
    n = 500
    g = rng.integers(0, 30, n)
    p = rng.random((3, n)).astype(np.float32)
    p[:, ::2] = np.round(p[:, ::2], 1)  # ties within groups
    y = (rng.random((3, n)) < 0.4).astype(np.int64)
    w = rng.random((3, n)).astype(np.float32).astype(np.float64)
    w[:, ::9] = 0.0
    for fn, ref in ((tmf.grouped_auc, ref_auc), (tmf.grouped_auprc, ref_auprc)):
        expected = [ref_grouped(p[t], y[t], g, w[t], ref=ref) for t in range(3)]
        with force_device_path():
            got = fn(torch.tensor(p), torch.tensor(y), torch.tensor(g), torch.tensor(w))
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_a_task_of_tiny_class_weight_after_another_task(device_path):
    """Exact AUC/AUPRC with several tasks: a task's cumulative sums never include another task's weight
    (the device path once scanned all tasks at once: task 1 gave 0.5551 instead of 0.5)."""
    p = torch.tensor([[0.3, 0.6, 0.5], [0.9, 0.5, 0.1]])
    y = torch.tensor([[0, 1, 1], [1, 0, 1]])
    w = torch.tensor([[1.0, 1.0, 1.0], [1e-15, 1.0, 1e-15]])
    w64 = w.numpy().astype(np.float64)
    for fn, cls, ref in ((tmf.auc, tmx.AUC, ref_auc), (tmf.auprc, tmx.AUPRC, ref_auprc)):
        expected = [ref(p[t].numpy(), y[t].numpy(), w64[t]) for t in range(2)]
        with force_device_path(device_path):
            metric = cls(num_tasks=2)
            metric.update(p, y, w)
            values = [fn(p, y, w), metric.compute()]
        for value in values:
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("seed", range(3))
def test_multi_task_exact_values_with_weights_over_21_orders_of_magnitude(device_path, seed):
    """Seeded fuzz over 4 tasks, weights in 1e-15..1e6: each class of each task has its own scale (one
    class can weigh 1e-13 of the other, or of the other tasks) and the weights spread 4 orders of
    magnitude around it; each task's exact AUC/AUPRC is scikit-learn's on that task alone, on both paths."""
    rng = np.random.default_rng(200 + seed)
    num_tasks, n = 4, 500
    p = rng.random((num_tasks, n)).astype(np.float32)
    p[:, ::4] = np.round(p[:, ::4], 1)
    y = (rng.random((num_tasks, n)) < 0.3).astype(np.int64)
    class_scale = 10.0 ** rng.uniform(-13, 4, (num_tasks, 2))  # (task, label)
    w = 10.0 ** rng.uniform(-2, 2, (num_tasks, n)) * np.take_along_axis(class_scale, y, axis=1)
    w = w.astype(np.float32).astype(np.float64)
    for fn, ref in ((tmf.auc, ref_auc), (tmf.auprc, ref_auprc)):
        expected = [ref(p[t], y[t], w[t]) for t in range(num_tasks)]
        with force_device_path(device_path):
            got = fn(torch.tensor(p), torch.tensor(y), torch.tensor(w))
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
@pytest.mark.parametrize("seed", range(3))
def test_segmented_cumsum_matches_a_per_segment_cumsum(monkeypatch, device_path, seed):
    """The scan behind both paths: each segment's own cumulative sum (numpy), for short and long
    segments, rows of any width, and a bound on the segment length from shapes only."""
    rng = np.random.default_rng(300 + seed)
    monkeypatch.setattr(K, "_FLAT_SCAN", [2, 8, 256][seed])
    monkeypatch.setattr(K, "_SCAN_WIDTH", [2, 4, 64][seed])
    for size in (1, 2, 63, 64, 65, 1000, 3001):
        seg = np.sort(np.minimum(rng.zipf(1.3, size), 40))
        values = 10.0 ** rng.uniform(-15, 6, (2, size))
        expected = np.concatenate([np.cumsum(values[:, seg == s], axis=1) for s in np.unique(seg)], axis=1)
        longest = int(np.bincount(seg).max())
        for bound in (longest, size):
            got = K._segmented_cumsum_(torch.tensor(values), torch.tensor(seg), bound)
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("how", ["logits", "float64-probabilities", "windowed"])
def test_binned_ties_share_a_bin_whatever_the_label_and_task(num_tasks, how):
    """A logit one float64 ulp below a bin edge: the label and task offsets are added after the position is
    floored, so equal scores land in one bin (AUC 1/2, not 1) and the error bound holds."""
    edge = -16.0 + 32.0 / 1000  # bin 1 starts at this logit with B = 1000 over (-16, 16)
    z = torch.full((num_tasks, 2), float(np.nextafter(edge, -np.inf)), dtype=torch.float64)
    y = torch.tensor([[1, 0]] * num_tasks)
    preds = z if how != "float64-probabilities" else torch.sigmoid(z)
    logits = how != "float64-probabilities"
    expected = [ref_auc(preds[t].numpy(), y[t].numpy(), None, 1000, logits) for t in range(num_tasks)]
    assert expected == [0.5] * num_tasks  # the documented bins (floored positions) tie the two scores
    metric = tmx.AUC(num_bins=1000, from_logits=logits, num_tasks=num_tasks)
    if how == "windowed":
        metric = tmx.Windowed(metric, window_size=10)
    metric.update(preds.squeeze(0), y.squeeze(0))
    value = metric.compute()["window"] if how == "windowed" else metric.compute()
    np.testing.assert_array_equal(np.atleast_1d(value.numpy()), expected)
    np.testing.assert_array_equal(
        np.atleast_1d(tmf.auc(preds.squeeze(0), y.squeeze(0), num_bins=1000, from_logits=logits).numpy()), expected
    )
    bins = (FB._binned_index(preds, y, 1000, LOGIT_RANGE, logits) % 1000).view(num_tasks, 2)
    assert torch.equal(bins[:, 0], bins[:, 1])


FLOAT32_WEIGHT_CASES = [
    ("auc", lambda: tmx.AUC(num_tasks=2), lambda p, y, w: tmf.auc(p, y, w)),
    ("auprc", lambda: tmx.AUPRC(num_tasks=2), lambda p, y, w: tmf.auprc(p, y, w)),
    ("gauc", lambda: tmx.GroupedAUC(num_tasks=2), lambda p, y, w: tmf.grouped_auc(p, y, GROUPS4, w)),
    (
        "gauc_batch",
        lambda: tmx.GroupedAUPRC(num_tasks=2, groups_complete_per_batch=True),
        lambda p, y, w: tmf.grouped_auprc(p, y, GROUPS4, w),
    ),
]
GROUPS4 = torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize(("name", "factory", "functional"), FLOAT32_WEIGHT_CASES)
@pytest.mark.parametrize("bad", [1e39, 1e-46])
def test_exact_modes_reject_weights_outside_float32(name, factory, functional, bad):
    """Exact modes keep float32 weights: a float64 weight that would become inf or 0 is a clear error."""
    p = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.6, 0.7, 0.4]])
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]])
    w = torch.tensor([1.0, bad, 0.0, 2.0], dtype=torch.float64)
    metric = factory()
    args = (p, y, GROUPS4) if name.startswith("gauc") else (p, y)
    metric.update(*args)
    before = {k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in metric.metric_state.items()}
    # the reason given holds for every mode: groups_complete_per_batch stores float64 sums, yet scores
    # each batch with float32 weights (it said "exact AUC/AUPRC store them as float32")
    reason = r"exact AUC/AUPRC and the grouped metrics read them as float32"
    with pytest.raises(ValueError, match=r"weights.*float32's range.*" + reason):
        metric.update(*args, w)
    with pytest.raises(ValueError, match=r"weights.*float32's range"):
        metric(*args, w)  # forward checks before it swaps the state
    for key, value in metric.metric_state.items():
        if isinstance(value, list):
            assert len(value) == len(before[key]) and all(torch.equal(a, b) for a, b in zip(value, before[key]))
        else:
            assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match=r"weights.*float32's range"):
        functional(p, y, w)


def test_exact_auc_weights_at_the_edges_of_float32():
    """Weights within float32's range, however large or small, give scikit-learn's value."""
    rng = np.random.default_rng(4)
    p, y = rng.random(300), rng.integers(0, 2, 300)
    for scale in (1e-37, 1e37):
        w = rng.uniform(0.5, 2.0, 300) * scale
        w[:30] = 0.0
        got = tmf.auc(torch.tensor(p), torch.tensor(y), torch.tensor(w))
        np.testing.assert_allclose(got.item(), skm.roc_auc_score(y, p.astype(np.float32), sample_weight=w), rtol=1e-6)
    # the module rejects the step before updating any metric
    module = tmx.RecMetricModule(
        [tmx.RecTaskInfo("t", "y", "p", "w", group_id_name="g")],
        {"ne": "ne", "auc": "auc", "gauc": "gauc"},
        throughput=False,
    )
    good = {"p": torch.tensor(p), "y": torch.tensor(y), "w": torch.ones(300), "g": torch.arange(300) % 7}
    module.update(good)
    before = {k: v.clone() for k, v in module.compute().items()}
    for bad in (1e39, 1e-46):
        weights = torch.tensor(np.where(np.arange(300) % 3 == 0, bad, 1.0))
        with pytest.raises(ValueError, match=r"weights.*float32's range"):
            module.update({**good, "w": weights})
    after = module.compute()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("scale", ["mixed", "all-subnormal"])
def test_float32_subnormal_weights_are_kept_exactly(scale):
    """docs/auc.md: weights given as float32 are kept as given, subnormals (below 1.18e-38) included: there is
    no conversion, so no precision is lost. Exact AUC/AUPRC (class and function) and the grouped metrics equal
    scikit-learn's float64 value on the same float32 weights read as float64 (exactly their values)."""
    rng = np.random.default_rng(11)
    n = 400
    p = rng.random(n).astype(np.float32)
    y = rng.integers(0, 2, n)
    g = rng.integers(0, 5, n)
    k = rng.integers(1, 1000, n).astype(np.float64)
    if scale == "mixed":  # a third subnormal, the rest normal: the tiny ones count for (almost) nothing
        w32 = np.where(np.arange(n) % 3 == 0, np.float32(1e-40), rng.uniform(0.5, 2.0, n)).astype(np.float32)
    else:  # k * 2**-149: float32 subnormals, exact, proportional to k (a scale-free value)
        w32 = (k * 2.0**-149).astype(np.float32)
        assert np.all(w32 < np.finfo(np.float32).tiny) and np.array_equal(w32.astype(np.float64), k * 2.0**-149)
    w = w32.astype(np.float64)  # the reference reads the very values kept
    tp, ty, tw, tg = torch.tensor(p), torch.tensor(y), torch.tensor(w32), torch.tensor(g)
    expected_auc = skm.roc_auc_score(y, p, sample_weight=w)
    expected_ap = skm.average_precision_score(y, p, sample_weight=w)
    if scale == "all-subnormal":  # the value does not depend on the weights' scale
        np.testing.assert_allclose(expected_auc, skm.roc_auc_score(y, p, sample_weight=k), rtol=1e-12)
    for got, expected in (
        (tmf.auc(tp, ty, tw), expected_auc),
        (tmf.auprc(tp, ty, tw), expected_ap),
        (tmx.AUC()(tp, ty, tw), expected_auc),
        (tmx.AUPRC()(tp, ty, tw), expected_ap),
    ):
        np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    for fn, ref in ((tmf.grouped_auc, skm.roc_auc_score), (tmf.grouped_auprc, skm.average_precision_score)):
        per_group = [ref(y[g == j], p[g == j], sample_weight=w[g == j]) for j in range(5)]
        np.testing.assert_allclose(fn(tp, ty, tg, tw).item(), np.mean(per_group), rtol=1e-12)


def test_float64_weights_are_rounded_to_float32_within_half_an_ulp():
    """docs/auc.md: float64 weights in float32's normal range are kept as float32 (relative error at most
    2**-24 < 1e-7 each); the exact AUC is then scikit-learn's value on the float32-rounded weights."""
    rng = np.random.default_rng(12)
    p, y = rng.random(300).astype(np.float32), rng.integers(0, 2, 300)
    w = rng.uniform(0.5, 2.0, 300) * 10.0 ** rng.integers(-30, 30, 300)
    rounded = w.astype(np.float32).astype(np.float64)
    assert np.max(np.abs(rounded - w) / w) <= 2.0**-24 < 1e-7
    got = tmf.auc(torch.tensor(p), torch.tensor(y), torch.tensor(w)).item()
    np.testing.assert_allclose(got, skm.roc_auc_score(y, p, sample_weight=rounded), rtol=1e-12)


@pytest.mark.parametrize("how", ["set_dtype", "windowed"])
@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_exact_grouped_metrics_in_float64_keep_their_states(cls, how):
    """Cast to float64 (``set_dtype``: ``.to(float64)`` keeps the float32 weights), the exact grouped metrics
    give sklearn's per-group mean at every compute, and ``compute`` leaves the stored signed weights as
    they were (it once negated them in place)."""
    p = torch.tensor([0.9, 0.2, 0.8, 0.3, 0.7, 0.1])
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    ref = skm.roc_auc_score if cls is tmx.GroupedAUC else skm.average_precision_score
    expected = np.mean([ref(y[g == k].numpy(), p[g == k].numpy()) for k in (0, 1)])  # 0.5 / 0.6667
    metric = tmx.Windowed(cls(), 100) if how == "windowed" else cls()
    metric.update(p, y, g)
    metric = metric.set_dtype(torch.float64)
    inner = metric.lifetime if how == "windowed" else metric
    stored = [chunk.clone() for chunk in inner.signed_weights]
    assert stored[0].dtype == torch.float64
    for _ in range(3):
        inner._computed = None
        value = metric.compute()["lifetime"] if how == "windowed" else metric.compute()
        np.testing.assert_allclose(value.item(), expected, rtol=1e-12)
        torch.testing.assert_close(torch.cat(inner.signed_weights), torch.cat(stored), rtol=0, atol=0)


@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_a_lower_precision_never_merges_group_ids(cls, cast):
    """``set_dtype`` casts scores and weights, never the group ids: ids that a float16 (above 2048) or
    float32 (above 2**24) copy would merge stay distinct groups (``.to`` casts no state at all)."""
    p = torch.tensor([0.75, 0.25, 0.75, 0.25])
    y = torch.tensor([1, 0, 0, 1])
    ref = skm.roc_auc_score if cls is tmx.GroupedAUC else skm.average_precision_score
    expected = np.mean([ref(y[k : k + 2].numpy(), p[k : k + 2].numpy()) for k in (0, 2)])  # groups of two
    merged = 0
    for base in (5001, 2**25 + 1, 2**62 + 1):
        g = torch.tensor([base, base, base + 1, base + 1])
        merged += bool(g.to(cast)[0] == g.to(cast)[2])  # a cast copy of the ids would merge the two groups
        for how in ("set_dtype", "to"):
            metric = cls()
            metric.update(p, y, g)
            metric = metric.set_dtype(cast) if how == "set_dtype" else metric.to(cast)
            assert metric.groups[0].dtype == torch.int64 and torch.equal(metric.groups[0], g)
            metric.update(p, y, g + 2)  # two more groups, after the cast
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6, err_msg=f"{base} {how}")
    assert merged >= 2


@pytest.mark.parametrize("device_path", [False, True])
def test_kernels_never_write_their_inputs(device_path):
    """Every AUC kernel reads its float64 inputs (a metric's states after ``set_dtype``) without writing to
    them: ``.to(torch.float64)`` of a float64 tensor is no copy, so no in-place work may follow it."""
    from torchmetrics_ext.functional.auc import grouped as FG

    rng = np.random.default_rng(5)
    scores = torch.tensor(rng.random((2, 300)).round(2))
    signed = torch.tensor(rng.uniform(0.5, 2.0, (2, 300)) * rng.choice([-1.0, 1.0], (2, 300)))
    signed[:, :40] *= 1e7  # group totals far apart
    groups = torch.tensor(rng.integers(0, 9, 300))
    inputs = (scores, signed, groups)
    saved = [t.clone() for t in inputs]
    with force_device_path() if device_path else contextlib.nullcontext():
        FG._grouped_curve_stats(scores, signed, groups)
        FB._exact_curve_stats([scores.T], [signed.T], 2)
        order = torch.argsort(groups, stable=True)
        key = (groups[order] << 32) | (K._descending_keys(scores[0][order]).to(torch.int64) + 2**31)
        key, within = torch.sort(key)
        ordered = signed[0][order][within]
        before = ordered.clone()
        K._curve_sums(key, ordered, torch.bincount(groups, weights=(-signed[0]).clamp(min=0)))
        assert torch.equal(ordered, before)
    for tensor, copy in zip(inputs, saved):
        assert torch.equal(tensor, copy)


@pytest.mark.parametrize(("ids", "id_bytes"), [(torch.int16, 4), (torch.int32, 4), (torch.int64, 8)])
def test_exact_grouped_memory_is_as_documented(ids, id_bytes):
    """Exact GAUC keeps 8·T bytes of scores and signed weights plus a 4-byte (ids of 32 bits or fewer) or
    8-byte group id per sample (the docstring's and docs/auc.md's figures), the ids as exact integers."""
    num_tasks, n = 3, 50
    metric = tmx.GroupedAUC(num_tasks=num_tasks)
    groups = torch.arange(n, dtype=ids) % 7
    for _ in range(2):
        metric.update(torch.rand(num_tasks, n), torch.randint(0, 2, (num_tasks, n)), groups)
    size = {name: sum(c.numel() * c.element_size() for c in getattr(metric, name)) for name in metric._defaults}
    assert size == {"preds": 2 * n * 4 * num_tasks, "signed_weights": 2 * n * 4 * num_tasks, "groups": 2 * n * id_bytes}
    assert not any(chunk.is_floating_point() for chunk in metric.groups)


# ----------------------------------------------------------------------------- scaling: tasks and tie runs


def _ops_per_call(make, run) -> int:
    obj = make()
    with H.AtenOps() as mode:
        run(obj)
    return mode.count


@pytest.mark.parametrize("what", ["auc", "auprc", "grouped-compute", "grouped-complete-update"])
def test_exact_kernels_do_not_loop_over_tasks(what, monkeypatch):
    """Tasks are vectorised, never looped over in Python: with 20 samples per task, the exact kernels
    dispatch about as many tensor operations for 2,000 tasks as for 50 (CPU path; a loop over tasks
    issued a few per task, over 10,000 more at 2,000 tasks, and took 0.4 ms per task and update).
    Both sizes take the PyTorch path (the small inputs' NumPy path, whose calls this count does not
    see, would otherwise take the 50 tasks)."""
    monkeypatch.setattr(K, "_SMALL", -1)
    counts = []
    for num_tasks in (50, 2000):
        gen = torch.Generator().manual_seed(num_tasks)
        p = torch.rand(num_tasks, 20, generator=gen)
        y = (torch.rand(num_tasks, 20, generator=gen) < 0.4).to(torch.int64)
        g = torch.arange(20) // 5
        if what in ("auc", "auprc"):
            cls = tmx.AUC if what == "auc" else tmx.AUPRC

            def make(cls=cls, num_tasks=num_tasks, p=p, y=y):
                metric = cls(num_tasks=num_tasks)
                metric.update(p, y)
                return metric

            counts.append(_ops_per_call(make, lambda m: m.compute()))
        elif what == "grouped-compute":

            def make(num_tasks=num_tasks, p=p, y=y, g=g):
                metric = tmx.GroupedAUC(num_tasks=num_tasks)
                metric.update(p, y, g)
                return metric

            counts.append(_ops_per_call(make, lambda m: m.compute()))
        else:
            counts.append(
                _ops_per_call(
                    lambda num_tasks=num_tasks: tmx.GroupedAUC(num_tasks=num_tasks, groups_complete_per_batch=True),
                    lambda m, p=p, y=y, g=g: m.update(p, y, g),
                )
            )
    assert counts[1] <= counts[0] + 20, counts


def test_many_short_tasks_in_one_pass(monkeypatch):
    """Exact AUC/AUPRC and grouped values over 100 tasks of 13 samples (ties, weights over six orders of
    magnitude, a task of positives only, one of zero weight): a block of the CPU pass holds many tasks or
    cuts one, and every task's value is scikit-learn's on that task alone."""
    rng = np.random.default_rng(17)
    num_tasks, n = 100, 13
    p = rng.random((num_tasks, n)).round(1).astype(np.float32)
    y = (rng.random((num_tasks, n)) < 0.4).astype(np.int64)
    y[5] = 1
    w = (10.0 ** rng.uniform(-3, 3, (num_tasks, n))).astype(np.float32).astype(np.float64)
    w[9] = 0.0
    g = rng.integers(0, 4, n)
    args = [torch.tensor(a) for a in (p, y, w)]
    for fn, grouped_fn, ref in ((tmf.auc, tmf.grouped_auc, ref_auc), (tmf.auprc, tmf.grouped_auprc, ref_auprc)):
        expected = np.array([ref(p[t], y[t], w[t]) for t in range(num_tasks)])
        expected_grouped = np.array([ref_grouped(p[t], y[t], g, w[t], ref=ref) for t in range(num_tasks)])
        for block_size in (7, 64, 1 << 16):
            monkeypatch.setattr(K, "_BLOCK", block_size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                got = fn(*args).numpy()
                got_grouped = grouped_fn(args[0], args[1], torch.tensor(g), args[2]).numpy()
                metric = (tmx.GroupedAUC if fn is tmf.auc else tmx.GroupedAUPRC)(
                    num_tasks=num_tasks, groups_complete_per_batch=True
                )
                metric.update(args[0], args[1], torch.tensor(g), args[2])
                got_complete = metric.compute().numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15, err_msg=str(block_size))
            np.testing.assert_allclose(got_grouped, expected_grouped, rtol=1e-12, atol=1e-15, err_msg=str(block_size))
            np.testing.assert_allclose(got_complete, expected_grouped, rtol=1e-12, atol=1e-15, err_msg=str(block_size))


@pytest.mark.parametrize("block_size", [16, 64])
def test_tie_runs_longer_than_a_block(monkeypatch, block_size):
    """Tie runs of hundreds of samples cross many blocks (carried, never loaded whole): scikit-learn's
    values, binary over two tasks and grouped."""
    monkeypatch.setattr(K, "_BLOCK", block_size)
    rng = np.random.default_rng(23)
    n = 3000
    p = rng.integers(0, 6, (2, n)).astype(np.float32) / 5  # runs of ~500 tied scores
    y = (rng.random((2, n)) < p * 0.8 + 0.1).astype(np.int64)
    w = rng.uniform(0.5, 2.0, (2, n)).astype(np.float32).astype(np.float64)
    g = rng.integers(0, 3, n)
    args = [torch.tensor(a) for a in (p, y, w)]
    for fn, grouped_fn, ref in ((tmf.auc, tmf.grouped_auc, ref_auc), (tmf.auprc, tmf.grouped_auprc, ref_auprc)):
        np.testing.assert_allclose(fn(*args).numpy(), [ref(p[t], y[t], w[t]) for t in range(2)], rtol=1e-12)
        np.testing.assert_allclose(
            grouped_fn(args[0], args[1], torch.tensor(g), args[2]).numpy(),
            [ref_grouped(p[t], y[t], g, w[t], ref=ref) for t in range(2)],
            rtol=1e-12,
        )


def test_grouped_kernel_temporaries_are_bounded_by_a_block_whatever_the_tie_run(monkeypatch):
    """The grouped CPU pass over 20,000 tied scores in two segments allocates nothing larger than a few
    blocks of 256 (a block extended to the end of its tie run allocated float64 temporaries of the whole
    run); values: AUC 1/2 and AP = P / (P + N) per segment, the closed forms of an all-tied segment."""
    monkeypatch.setattr(K, "_BLOCK", 256)
    n = 20_000
    seg = torch.arange(n) * 2 // n  # two segments of 10,000
    signed = torch.where(torch.arange(n) % 3 == 0, 2.0, -1.0).to(torch.float32)
    key = (seg << 32) | (2**31 + 7)  # one score everywhere
    neg_total = torch.bincount(seg, weights=(-signed.double()).clamp(min=0))
    pos_total = torch.bincount(seg, weights=signed.double().clamp(min=0))
    with _LargestAllocation() as mode:
        auc_num, ap_num = K._curve_sums(key, signed, neg_total)
    assert mode.largest <= 4 * 8 * 256, mode.largest
    np.testing.assert_allclose((auc_num / (pos_total * neg_total)).numpy(), [0.5, 0.5], rtol=1e-15)
    np.testing.assert_allclose((ap_num / pos_total).numpy(), (pos_total / (pos_total + neg_total)).numpy(), rtol=1e-15)


_TIED_MEMORY_SCRIPT = """
import torch, torchmetrics_ext as tmx
torch.set_num_threads(1)
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024
n = 2_000_000
target = (torch.rand(n, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.float32)
metric = tmx.AUC()
metric.update(torch.full((n,), 0.5), target)
del target
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
value = float(metric.compute())
print(status("VmHWM:") - base, value)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_exact_auc_compute_memory_with_every_score_tied():
    """Exact AUC compute over 2M tied scores adds the documented 8 bytes per sample (the packed keys) plus
    block temporaries of a few MB, as with distinct scores (the tie run's temporaries took 49 B/sample)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _TIED_MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    added, value = int(out[0]), float(out[1])
    assert value == 0.5
    assert added <= 8 * 2_000_000 + 16 * 2**20, added / 2_000_000


_GROUPED_MEMORY_SCRIPT = """
import ctypes, sys, torch, torchmetrics_ext as tmx
from torchmetrics_ext.functional.auc import grouped
torch.set_num_threads(1)
grouped._GROUP_BLOCK = 2**14  # blocks of a few hundred kB: the peak is the sort of the ids
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024
n, span = 3_000_000, int(sys.argv[1])
gen = torch.Generator().manual_seed(0)
metric = tmx.GroupedAUC()
ids = 10**12 + torch.randint(0, 20_000, (n,), generator=gen) * (span // 20_000)  # 20k int64 ids far from 0
metric.update(torch.rand(n, generator=gen), (torch.rand(n, generator=gen) < 0.3).float(), ids)
del ids
metric.compute()  # joins the state's chunks into one, once
metric._computed = None
ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed by the first compute leaves the process
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
metric.compute()
print(status("VmHWM:") - base)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize(("span", "id_sort_bytes"), [(200, 18), (20_000, 20), (2_000_000, 24), (2**40, 32)])
def test_grouped_compute_sorts_ids_as_narrow_offsets(span, id_sort_bytes):
    """The CPU sort of the ids at compute takes the bytes per sample docs/auc.md states: 18 / 20 / 24 for
    offsets from the smallest id below 2**8 / 2**15 / 2**31 (uint8 / int16 / int32 keys), 32 for wider spans
    (int64 ids were always sorted as int64: 32 B/sample). Every allocation
    of 64 kB or more is its own mapping, so freed blocks are not counted and reused ones are."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _GROUPED_MEMORY_SCRIPT, str(span)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
    ).stdout.split()
    n = 3_000_000
    added = int(out[0])
    assert added <= id_sort_bytes * n + 8 * 2**20, added / n


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (torch.uint8, 0, 255),
        (torch.int8, -128, 127),  # offsets up to 255: not exact in int8, sorted as given
        (torch.int8, -60, 60),
        (torch.int16, -(2**15), 2**15 - 1),
        (torch.int16, 1000, 1200),
        (torch.int32, -(2**31), 2**31 - 1),  # a span of 2**32 - 1: sorted as given
        (torch.int32, -(2**20), 2**14),
        (torch.int64, 2**62, 2**62 + 2**31 - 1),  # offsets just within int32
        (torch.int64, -(2**62), 2**62),
        (torch.uint16, 0, 2**16 - 1),  # the CPU sorts no uint16/32/64: read as int64
        (torch.uint32, 2**31, 2**32 - 1),
        (torch.uint64, 0, 2**63 - 1),
    ],
)
def test_grouped_values_whatever_the_ids_span_and_dtype(dtype, low, high, device_path):
    """sklearn's per-group AUC and AP (every group, and TorchRec's all-groups averaging) for ids of each
    integer dtype at its extremes, over more samples than PyTorch sorts with its radix sort (32,768): the
    ids are sorted as offsets from the smallest in narrower keys, which must keep every group apart
    (uint16/32/64 ids raised NotImplementedError from the CPU sort at this size)."""
    H.skip_without_wide_unsigned(dtype)
    rng = np.random.default_rng(7)
    n, num_groups = 40_000, 23
    choices = np.unique(np.r_[low, high, rng.integers(low, high, num_groups - 2, endpoint=True, dtype=np.int64)])
    if dtype in (torch.uint32, torch.uint64):
        choices = np.unique(np.r_[low, high, rng.integers(0, 2**20, num_groups - 2) + low]).astype(np.uint64)
    picked = rng.integers(0, choices.size, n)
    ids = H.unsigned(choices[picked], dtype) if not dtype.is_signed else torch.tensor(choices[picked]).to(dtype)
    assert choices.min() == low and choices.max() == high
    p = torch.tensor(rng.random(n).round(2), dtype=torch.float32)  # ties within groups
    y = torch.tensor(rng.random(n) < 0.3, dtype=torch.float32)
    w = torch.tensor(rng.uniform(0.5, 2.0, n), dtype=torch.float32)
    p_np, y_np, w_np = p.double().numpy(), y.numpy().astype(np.int64), w.double().numpy()
    with force_device_path(device_path):
        for fn, ref in ((tmf.grouped_auc, ref_auc), (tmf.grouped_auprc, ref_auprc)):
            for average_groups in ("defined", "all"):
                expected = ref_grouped(p_np, y_np, picked, w_np, ref, average_groups=average_groups)
                got = fn(p, y, ids, w, average_groups=average_groups).item()
                np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{fn.__name__} {average_groups}")


@pytest.mark.parametrize("device_path", [False, True])
def test_all_groups_averaging_takes_no_second_sort_of_the_ids(monkeypatch, device_path):
    """``average_groups="all"`` reads which slots hold a group from the statistics' own sort of the ids:
    as many sorts as the default averaging (it sorted every id a second time to count them), with
    TorchRec's value (sklearn per group)."""
    grouped = importlib.import_module("torchmetrics_ext.functional.auc.grouped")
    sorts = []
    real_sort = torch.sort

    def counting_sort(*args, **kwargs):
        sorts.append(args[0].numel() if args else kwargs["input"].numel())
        return real_sort(*args, **kwargs)

    rng = np.random.default_rng(3)
    n = 5_000
    p = torch.tensor(rng.random(n), dtype=torch.float32)
    y = torch.tensor(rng.random(n) < 0.3, dtype=torch.float32)
    g = torch.tensor(rng.integers(0, 400, n))
    y[g == 7] = 1.0  # a group with one class, which "all" averages as 0.5
    monkeypatch.setattr(torch, "sort", counting_sort)
    counts = {}
    with force_device_path(device_path):
        for average_groups in ("defined", "all"):
            sorts.clear()
            value = grouped.grouped_auc(p, y, g, average_groups=average_groups).item()
            counts[average_groups] = list(sorts)
            expected = ref_grouped(p.double().numpy(), y.numpy(), g.numpy(), None, average_groups=average_groups)
            np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert counts["all"] == counts["defined"], counts


# ----------------------------------------------------------------------------- unsigned labels, weights and ids


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_labels_weights_and_group_ids_are_accepted(dtype, device_path):
    """uint16/32/64 labels, weights and group ids raised NotImplementedError (no min/max kernel on the CPU).

    Weights and ids reach the top of each dtype (uint64 ones past 2**63); sklearn on float64 weights.
    """
    H.skip_without_wide_unsigned(dtype)
    rng = np.random.default_rng(41)
    data = auc_data(rng)
    p, y = data["preds"], data["target"]
    weights, w = H.unsigned_weights(rng, dtype, (N,))
    small_ids = rng.integers(0, 30, size=N)
    ids = H.unsigned(np.uint64(torch.iinfo(dtype).max) - small_ids.astype(np.uint64), dtype)  # near the top
    p_np, y_np = p.double().numpy(), y.numpy()
    uy = y.to(dtype)
    cases = [
        (tmx.AUC(), lambda: tmf.auc(p, uy, weights), ref_auc(p_np, y_np, w)),
        (tmx.AUC(num_bins=50), lambda: tmf.auc(p, uy, weights, num_bins=50), ref_auc(p_np, y_np, w, num_bins=50)),
        (tmx.AUPRC(), lambda: tmf.auprc(p, uy, weights), ref_auprc(p_np, y_np, w)),
        (tmx.AUPRC(num_bins=50), lambda: tmf.auprc(p, uy, weights, num_bins=50), ref_auprc(p_np, y_np, w, num_bins=50)),
    ]
    with force_device_path(device_path):
        for metric, functional, expected in cases:
            metric.update(p, uy, weights)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6, err_msg=repr(metric))
            np.testing.assert_allclose(functional().item(), expected, rtol=1e-6, err_msg=repr(metric))
        for cls, fn, ref in (
            (tmx.GroupedAUC, tmf.grouped_auc, ref_auc),
            (tmx.GroupedAUPRC, tmf.grouped_auprc, ref_auprc),
        ):
            expected = ref_grouped(p_np, y_np, small_ids, w, ref)
            metric = cls()
            metric.update(p, uy, ids, weights)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-6, err_msg=cls.__name__)
            np.testing.assert_allclose(fn(p, uy, ids, weights).item(), expected, rtol=1e-6, err_msg=fn.__name__)


# ----------------------------------------------------------------------------- values stay in [0, 1]

# weights (float32, one decimal) for which a perfect ranking summed to 1 + 2**-52 before the clamp,
# each on one path or mode at least (exact / binned / device, AUC / AUPRC / grouped)
_PERFECT_RANKING_WEIGHTS = [
    [8.8, 2.7, 4.1, 7.9, 1.1, 5.8, 6.5, 0.2],
    [9.7, 5.2, 0.4, 1.5, 5.0, 2.3, 2.0, 5.1],
    [2.3, 1.4, 0.1, 4.1, 2.9, 3.5, 5.1, 6.9],
    [5.6, 5.6, 0.9, 2.1, 0.1, 0.4, 9.9, 9.1],
    [5.0, 4.4, 0.1, 5.1, 7.6, 1.4, 1.0, 1.0],
]


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("weights", _PERFECT_RANKING_WEIGHTS)
def test_a_perfect_ranking_is_exactly_one_never_more(weights, device_path):
    """AUC, AUPRC (exact, binned, device path) and the grouped metrics returned 1.0000000000000002."""
    p = torch.tensor([0.9, 0.85, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05])
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    w = torch.tensor(weights)
    assert skm.roc_auc_score(y.numpy(), p.numpy(), sample_weight=w.numpy()) == 1.0
    assert skm.average_precision_score(y.numpy(), p.numpy(), sample_weight=w.numpy()) == 1.0
    one_group, two_groups = torch.zeros(8, dtype=torch.long), torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    with force_device_path(device_path):
        values = {}
        for name, fn, cls in (("auc", tmf.auc, tmx.AUC), ("auprc", tmf.auprc, tmx.AUPRC)):
            for bins in (None, 100):
                values[f"{name} bins={bins}"] = fn(p, y, w, num_bins=bins)
                metric = cls(num_bins=bins)
                metric.update(p, y, w)
                values[f"{cls.__name__} bins={bins}"] = metric.compute()
        for fn, cls in ((tmf.grouped_auc, tmx.GroupedAUC), (tmf.grouped_auprc, tmx.GroupedAUPRC)):
            for groups in (one_group, two_groups):
                values[f"{fn.__name__} {groups.tolist()}"] = fn(p, y, groups, w)
                metric = cls()
                metric.update(p, y, groups, w)
                values[f"{cls.__name__} {groups.tolist()}"] = metric.compute()
    assert {key: value.item() for key, value in values.items()} == dict.fromkeys(values, 1.0)


@pytest.mark.parametrize("scale", [1e160, 1e-170, 1e300, 1e-300])
def test_binned_values_do_not_depend_on_the_weights_scale(scale):
    """P·N overflowed (nan) or underflowed (0) for weights near 1e160 or 1e-170 (docs: scaling changes nothing)."""
    # a perfect ranking, every score in its own bin: AUC and AP are 1 at any weight scale
    p, y = torch.tensor([0.1, 0.6, 0.9]), torch.tensor([0, 1, 1])
    for fn in (tmf.auc, tmf.auprc):
        assert fn(p, y, torch.full((3,), scale, dtype=torch.float64), num_bins=100).item() == pytest.approx(1.0)
    # random data: the same values as with weights of order 1 (a power-of-two scale is exact; others round)
    gen = torch.Generator().manual_seed(3)
    p, y = torch.rand(2, 200, generator=gen), (torch.rand(2, 200, generator=gen) < 0.3).long()
    w = torch.rand(200, generator=gen, dtype=torch.float64) + 0.5
    for fn in (tmf.auc, tmf.auprc):
        assert torch.allclose(fn(p, y, w * scale, num_bins=64), fn(p, y, w, num_bins=64), rtol=1e-12, atol=0)
    hist = FB._binned_update(p.double(), y.double(), w * scale, 64, LOGIT_RANGE, False)
    bound = FB._binned_error_bound(hist)
    assert torch.isfinite(bound).all() and (bound > 0).all()


def test_binned_values_of_subnormal_weights_match_sklearn():
    """Weights whose totals are subnormal (below 2.2e-308) needed a scale past 2**1023: inf, and nan with no warning."""
    rng = np.random.default_rng(11)
    p = rng.choice([0.05, 0.3, 0.5, 0.7, 0.95], 300)  # five scores, each in its own bin: binned = exact
    y = (rng.random(300) < p).astype(np.int64)
    k = rng.integers(1, 1000, 300)  # weights k * 2**-1074: exact subnormals, proportional to k
    w = torch.tensor(k * math.ldexp(1.0, -1074), dtype=torch.float64)
    assert (w > 0).all() and (w.sum() < 2.2e-308)
    args = (torch.tensor(p), torch.tensor(y), w)
    for fn, cls, ref in ((tmf.auc, tmx.AUC, skm.roc_auc_score), (tmf.auprc, tmx.AUPRC, skm.average_precision_score)):
        expected = ref(y, p, sample_weight=k)
        for bin_space in ("logit", "probability"):
            np.testing.assert_allclose(fn(*args, num_bins=100, bin_space=bin_space).item(), expected, rtol=1e-12)
            metric = cls(num_bins=100, bin_space=bin_space)
            metric.update(*args)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def test_power_of_two_is_exact_over_the_whole_float64_range():
    """The binned and pairwise AUCs scale by ``2 ** e``: ``torch.ldexp`` with integer exponents made it
    in float32 before PyTorch 2.4 (on the declared minimum 2.3: 0 or inf past 2**±127, so those
    weight scales gave nan); ``math.ldexp`` is the reference, for every exponent float64 has."""
    from torchmetrics_ext.utilities.summation import power_of_two

    exponents = list(range(-1074, 1024))
    got = power_of_two(torch.tensor(exponents, dtype=torch.int32), torch.float64)
    assert got.dtype == torch.float64
    assert got.tolist() == [math.ldexp(1.0, e) for e in exponents]


def _update_any(metric, preds, target):
    """Update a metric of the AUC family (grouped ones with two groups of samples)."""
    if isinstance(getattr(metric, "lifetime", metric), tmx.GroupedAUC | tmx.GroupedAUPRC):
        metric.update(preds, target, torch.arange(preds.shape[-1]) // 2)
    else:
        metric.update(preds, target)


@pytest.mark.parametrize(
    "cls",
    [tmx.AUC, tmx.AUPRC, tmx.GroupedAUC, tmx.GroupedAUPRC, tmx.XAUC, tmx.RegressionAUC],
)
@pytest.mark.parametrize("windowed", [False, True])
def test_merging_the_flat_rows_of_another_num_tasks_is_refused(cls, windowed):
    """Exact modes keep flat sample-major rows (no task dimension in their shapes): the states of a
    one-task metric merged as a dict into a 3-task one were read as rows of 3 tasks (a wrong value,
    or a crash at compute, the metric broken). Rows that are not whole samples are now refused."""
    gen = torch.Generator().manual_seed(0)
    three, one = cls(num_tasks=3), cls()
    preds = torch.rand(3, 4, generator=gen)
    target = torch.tensor([[0.0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0]])
    _update_any(three, preds, target)
    expected = three.compute()
    if windowed:
        three = tmx.Windowed(cls(num_tasks=3), window_size=100)
        _update_any(three, preds, target)
    _update_any(one, torch.rand(5, generator=gen), torch.tensor([0.0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="another num_tasks"):
        three.merge_state(one.metric_state)
    got = three.compute()["lifetime"] if windowed else three.compute()
    torch.testing.assert_close(got, expected)  # nothing merged


@pytest.mark.parametrize(
    ("receiver", "incoming", "states"),
    [
        (
            lambda: tmx.AUC(),
            lambda: tmx.AUC(num_bins=200),
            r"\['hist'\] are not this metric's \['preds', 'signed_weights'\]",
        ),
        (
            lambda: tmx.AUC(num_bins=200),
            lambda: tmx.AUC(),
            r"\['preds', 'signed_weights'\] are not this metric's \['hist'\]",
        ),
        (lambda: tmx.AUPRC(), lambda: tmx.AUPRC(num_bins=50), r"\['hist'\] are not this metric's"),
        (
            lambda: tmx.GroupedAUC(),
            lambda: tmx.GroupedAUC(groups_complete_per_batch=True),
            r"'group_count_sum'\] are not",
        ),
    ],
)
@pytest.mark.parametrize("windowed", [False, True])
def test_merging_the_other_mode_names_the_states_not_alike_settings(receiver, incoming, states, windowed):
    """An exact and a binned AUC (or grouped AUC per batch) record different settings *keys*: the refusal
    read "Cannot merge a AUC with settings {'num_tasks': 1} into one with {'num_tasks': 1, 'from_logits':
    False}", settings that look equal. It now names the states of the other mode; nothing is merged."""

    def wrap(metric):
        return tmx.Windowed(metric, window_size=100) if windowed else metric

    grouped = isinstance(receiver(), tmx.GroupedAUC)
    preds, target = torch.tensor([0.9, 0.2, 0.7, 0.4]), torch.tensor([1, 0, 0, 1])
    extra = (torch.tensor([0, 0, 1, 1]),) if grouped else ()
    a, b = wrap(receiver()), wrap(incoming())
    a.update(preds, target, *extra)
    b.update(preds.flip(0), target, *extra)
    expected = 0.5 if grouped else skm.roc_auc_score(target.numpy(), preds.numpy())
    with pytest.raises(ValueError, match=states):
        a.merge_state(b)
    got = a.compute()["lifetime"] if windowed else a.compute()
    if isinstance(a.lifetime if windowed else a, tmx.AUPRC):
        expected = skm.average_precision_score(target.numpy(), preds.numpy())
    np.testing.assert_allclose(got.item(), expected, rtol=1e-6)  # nothing merged


def test_a_windowed_metric_merged_into_a_plain_one_is_refused_with_the_way_to_merge_it():
    """``AUC().merge_state(Windowed(AUC()))`` read the wrapper's own states (none): "the incoming states []
    are not this metric's ... another mode or setting". It now says what was given and to merge its lifetime."""
    preds, target = torch.tensor([0.9, 0.2, 0.7, 0.4]), torch.tensor([1, 0, 0, 1])
    plain, windowed = tmx.AUC(), tmx.Windowed(tmx.AUC(), window_size=10)
    plain.update(preds, target)
    windowed.update(preds.flip(0), target)
    with pytest.raises(ValueError, match=r"Cannot merge a Windowed into AUC.*merge_state\(other\.lifetime\)"):
        plain.merge_state(windowed)
    np.testing.assert_allclose(plain.compute().item(), skm.roc_auc_score(target.numpy(), preds.numpy()))
    plain.merge_state(windowed.lifetime)  # the way the message gives: sklearn's AUC over both
    both = torch.cat([preds, preds.flip(0)]).numpy(), torch.cat([target, target]).numpy()
    np.testing.assert_allclose(plain.compute().item(), skm.roc_auc_score(both[1], both[0]), rtol=1e-9)


@pytest.mark.parametrize(("functional", "ref"), [(tmf.grouped_auc, ref_auc), (tmf.grouped_auprc, ref_auprc)])
@pytest.mark.parametrize("device_path", [False, True])
def test_grouped_functionals_take_weights_that_require_grad(functional, ref, device_path):
    """Weights from a model (requiring grad) are read detached, as the classes and ``auc`` read them: the
    value is scikit-learn's per-group average (the kernels' in-place work raised on such a view)."""
    rng = np.random.default_rng(12)
    p, y, g = rng.random(60).round(2), rng.integers(0, 2, 60), rng.integers(0, 6, 60)
    w = rng.uniform(0.1, 3.0, 60)
    weights = torch.tensor(w, requires_grad=True)
    preds = torch.tensor(p, requires_grad=True)
    with force_device_path() if device_path else contextlib.nullcontext():
        value = functional(preds, torch.tensor(y), torch.tensor(g), weights)
    assert value.item() == pytest.approx(ref_grouped(p, y, g, w, ref), rel=1e-6)
    assert not value.requires_grad


def test_forward_does_not_copy_the_samples_kept_so_far():
    """TorchMetrics' ``forward`` cloned every stored chunk per call (a cost growing with the run); they are shared."""
    gen = torch.Generator().manual_seed(0)
    auc = tmx.AUC()
    batches = [(torch.rand(40_000, generator=gen), torch.rand(40_000, generator=gen) < 0.3) for _ in range(3)]
    auc(*batches[0])
    first = auc.metric_state[next(name for name, v in auc.metric_state.items() if isinstance(v, list))][0]
    for preds, target in batches[1:]:
        auc(preds, target)
    kept = next(v for v in auc.metric_state.values() if isinstance(v, list))
    assert kept[0].data_ptr() == first.data_ptr()  # the first batch's chunk, not a copy of it
    preds, target = (torch.cat(parts) for parts in zip(*batches))
    assert auc.compute().item() == pytest.approx(skm.roc_auc_score(target.numpy(), preds.numpy()), abs=1e-12)


# ----------------------------------------------------------------------------- one sort for a compute group


def _count_exact_sorts(monkeypatch) -> list[int]:
    """Calls of the exact kernel (one sort of every sample each) from now on."""
    calls = []
    kernel = FB._exact_curve_stats

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(FB, "_exact_curve_stats", counted)
    return calls


def _auc_auprc_data(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    preds = torch.randint(0, 40, (2, n), generator=gen).to(torch.float32) / 40  # ties
    target = (torch.rand(2, n, generator=gen) < 0.2 + 0.6 * preds).to(torch.int64)
    weights = (torch.rand(2, n, generator=gen) + 0.1).to(torch.float64)  # float32 values: as kept
    return preds, target, weights


def _sklearn_auc_auprc(preds, target, weights) -> dict[str, np.ndarray]:
    p, y, w = (t.numpy() for t in (preds, target, weights))
    return {
        "auc": np.array([skm.roc_auc_score(y[t], p[t], sample_weight=w[t]) for t in range(2)]),
        "auprc": np.array([skm.average_precision_score(y[t], p[t], sample_weight=w[t]) for t in range(2)]),
    }


def test_auc_and_auprc_of_one_compute_group_sort_once(monkeypatch):
    """AUC and AUPRC in one MetricCollection share their states; the sort at compute gives both numerators,
    so the second compute reuses the first's (10M samples: ~0.5 s -> ~0.25 s for the pair). Any new
    update, or an in-place change of a kept chunk, sorts again; values are scikit-learn's throughout."""
    calls = _count_exact_sorts(monkeypatch)
    preds, target, weights = _auc_auprc_data(5, 900)
    collection = torchmetrics.MetricCollection({"auc": tmx.AUC(num_tasks=2), "auprc": tmx.AUPRC(num_tasks=2)})
    for lo, hi in ((0, 300), (300, 600)):
        collection.update(preds[:, lo:hi], target[:, lo:hi], weights[:, lo:hi])
    assert collection.compute_groups == {0: ["auc", "auprc"]}

    def check(n: int) -> None:
        got = collection.compute()
        expected = _sklearn_auc_auprc(preds[:, :n], target[:, :n], weights[:, :n])
        for name in ("auc", "auprc"):
            np.testing.assert_allclose(got[name].numpy(), expected[name], rtol=1e-12, err_msg=name)

    check(600)
    assert len(calls) == 1  # one sort for the pair (two before)
    collection.update(preds[:, 600:], target[:, 600:], weights[:, 600:])
    check(900)
    assert len(calls) == 2  # the update invalidated the shared sums

    # an in-place change of a kept chunk (its version counter moves) is seen too
    kept = collection._modules["auc"].preds[0]
    kept.mul_(0.5)
    for metric in collection.values(copy_state=False):
        metric._computed = None
    halved = preds.clone()
    halved[:, : kept.numel() // 2] *= 0.5  # the chunk holds the first samples, sample-major
    preds = halved
    check(900)
    assert len(calls) == 3


def test_exact_auc_states_under_inference_mode_are_never_reused(monkeypatch):
    """Inference tensors have no version counter (an in-place change could not be seen): each compute sorts."""
    calls = _count_exact_sorts(monkeypatch)
    preds, target, weights = _auc_auprc_data(6, 400)
    with torch.inference_mode():
        auc, auprc = tmx.AUC(num_tasks=2), tmx.AUPRC(num_tasks=2)
        for metric in (auc, auprc):
            metric.update(preds, target, weights)
        auprc.preds = auc.preds  # the same chunks, as a compute group shares them
        auprc.signed_weights = auc.signed_weights
        expected = _sklearn_auc_auprc(preds, target, weights)
        np.testing.assert_allclose(auc.compute().numpy(), expected["auc"], rtol=1e-12)
        np.testing.assert_allclose(auprc.compute().numpy(), expected["auprc"], rtol=1e-12)
    assert len(calls) == 2


# ----------------------------------------------------------------------------- DDP: one class per rank


def _one_class_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    n = 40
    preds = torch.rand(n, generator=gen)
    target = (torch.rand(n, generator=gen) < preds).long()
    return {"preds": preds, "target": target, "groups": torch.arange(n) % 5, "weights": torch.rand(n, generator=gen)}


def _one_class_metrics() -> dict[str, torchmetrics.Metric]:
    return {
        "auc": tmx.AUC(),
        "auprc": tmx.AUPRC(),
        "gauc": tmx.GroupedAUC(),
        "gauprc": tmx.GroupedAUPRC(),
        "auc_bins": tmx.AUC(num_bins=50),
        "auprc_bins": tmx.AUPRC(num_bins=50),
    }


def _one_class_job(rank: int, world_size: int, layout: str) -> dict[str, float]:
    """``split``: rank 0 every positive row, rank 1 every negative row (each group on both ranks);
    ``lonely``: rank 0 the positive rows only, rank 1 nothing."""
    data = _one_class_data()
    rows = (data["target"] == 1) if rank == 0 else (data["target"] == 0)
    if layout == "lonely" and rank == 1:
        rows = torch.zeros_like(rows)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for name, metric in _one_class_metrics().items():
            batch = {k: v[rows] for k, v in data.items() if name.startswith("g") or k != "groups"}
            if batch["preds"].numel():
                metric.update(**batch)
            out[name] = metric.compute().item()
    return out


@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["split", "lonely"])
def test_exact_auc_with_one_class_per_rank_ddp(ddp_pool, layout):
    """Exact (and binned) AUC/AUPRC and the grouped forms when each rank holds one class (every group split across the
    two ranks), or one rank only positives and the other nothing: every rank gets scikit-learn's value over
    the rows of all ranks (nan where only one class exists anywhere)."""
    data = {k: v.numpy() for k, v in _one_class_data().items()}
    if layout == "lonely":
        data = {k: v[data["target"] == 1] for k, v in data.items()}
    p, y, g, w = data["preds"], data["target"], data["groups"], data["weights"]
    expected = {
        "auc": ref_auc(p, y, w),
        "auprc": ref_auprc(p, y, w),
        "gauc": ref_grouped(p, y, g, w),
        "gauprc": ref_grouped(p, y, g, w, ref=ref_auprc),
        "auc_bins": ref_auc(p, y, w, num_bins=50),
        "auprc_bins": ref_auprc(p, y, w, num_bins=50),
    }
    if layout == "split":
        assert not any(np.isnan(v) for v in expected.values())
    for rank, values in enumerate(ddp_pool.run(_one_class_job, layout)):
        for name, value in expected.items():
            np.testing.assert_allclose(values[name], value, rtol=1e-6, err_msg=f"rank {rank} {layout} {name}")


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
def test_exact_value_follows_every_change_of_the_states_that_the_shared_sort_could_miss(cls):
    """The exact kernels reuse the last sort of the very same unmodified chunks. Through one metric's life
    (a compute under inference mode then updates outside it, ``merge_state``, a sync from another rank's
    states and the compute that unsyncs, ``load_state_dict``, ``reset``) the value is scikit-learn's on the
    data the states hold."""
    reference = skm.roc_auc_score if cls is tmx.AUC else skm.average_precision_score
    gen = torch.Generator().manual_seed(11)

    def batch(n: int = 60) -> tuple[torch.Tensor, ...]:
        p = torch.rand(n, generator=gen)
        return p, (torch.rand(n, generator=gen) < p).long(), torch.rand(n, generator=gen)

    def check(metric: tmx.AUC, batches: list[tuple[torch.Tensor, ...]]) -> None:
        p, y, w = (torch.cat(parts).double().numpy() for parts in zip(*batches))
        np.testing.assert_allclose(metric.compute().item(), reference(y, p, sample_weight=w), rtol=1e-12)

    metric, seen = cls(sync_on_compute=False), [batch()]
    with torch.inference_mode():
        metric.update(*seen[-1])
        check(metric, seen)
    for _ in range(2):
        seen.append(batch())
        metric.update(*seen[-1])
        check(metric, seen)
    other, other_batches = cls(), [batch(), batch()]
    for each in other_batches:
        other.update(*each)
    other.compute()
    metric.merge_state(other)
    check(metric, seen + other_batches)
    seen += other_batches
    remote = batch()  # another rank's states, replayed as its gather would return them
    rank1 = cls()
    rank1.update(*remote)
    theirs = {
        name: torch.cat(value) if isinstance(value, list) else value for name, value in rank1.metric_state.items()
    }
    names = list(metric._reductions)
    metric.sync(
        dist_sync_fn=lambda tensor, group=None: [tensor, theirs[names.pop(0)]], distributed_available=lambda: True
    )
    check(metric, [*seen, remote])
    check(metric, seen)  # that compute unsynced (as TorchMetrics): the local states again
    loaded = cls()
    loaded.update(*batch())
    loaded.compute()  # a sort of its own states before the load
    metric.persistent(True)
    loaded.persistent(True)
    loaded.load_state_dict(metric.state_dict())
    check(loaded, seen)
    fresh = batch()
    loaded.update(*fresh)
    check(loaded, [*seen, fresh])
    loaded.reset()
    loaded.update(*fresh)
    check(loaded, [fresh])


def test_binned_unit_weights_are_ones_of_each_size_asked():
    """The kept ones (and the view of the last size asked) are ones of exactly the size asked, sizes changing."""
    from torchmetrics_ext.functional.auc.binary import _unit_weights

    device = torch.device("cpu")
    for size in [5, 5, 7, 2000, 7, (1 << 20) + 3, 5, 0, 5]:
        got = _unit_weights(device, size)
        assert got.shape == (size,) and got.dtype == torch.float64
        assert torch.equal(got, torch.ones(size, dtype=torch.float64))


def test_float64_probabilities_near_one_tie_as_float32_and_logits_keep_them_apart():
    """docs/auc.md: above 1 - 2**-25 every float32 probability is 1.0; logits with from_logits stay ranked."""
    logits = torch.tensor([17.5, 18.0, 19.0, 25.0, -1.0], dtype=torch.float64)
    target = torch.tensor([0, 1, 0, 1, 0])
    probs = torch.sigmoid(logits)
    assert torch.unique(probs).numel() == 5  # distinct in float64
    assert (probs[:4].float() == 1.0).all()  # all four are 1.0 in float32
    y = target.numpy()
    # the exact mode ranks the float32 probabilities: scikit-learn on them
    expected_tied = skm.roc_auc_score(y, probs.float().double().numpy())
    assert tmf.auc(probs, target).item() == pytest.approx(expected_tied, abs=1e-15)
    assert tmx.AUC()(probs, target).item() == pytest.approx(expected_tied, abs=1e-15)
    # the logits keep their order: scikit-learn on the logits (= on the float64 probabilities)
    expected = skm.roc_auc_score(y, logits.numpy())
    assert expected == skm.roc_auc_score(y, probs.numpy()) != expected_tied
    assert tmf.auc(logits, target, from_logits=True).item() == pytest.approx(expected, abs=1e-15)
    assert tmx.AUC(from_logits=True)(logits.float(), target).item() == pytest.approx(expected, abs=1e-15)
    expected_ap = skm.average_precision_score(y, logits.numpy())
    assert tmf.auprc(logits, target, from_logits=True).item() == pytest.approx(expected_ap, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_are_ranked_as_given(dtype):
    """docs/auc.md: float16/bfloat16 scores whose float32 originals differ tie as the given dtype does."""
    gen = torch.Generator().manual_seed(5)
    scores32 = 0.5 + 0.01 * torch.rand(2000, generator=gen)
    target = torch.randint(0, 2, (2000,), generator=gen)
    scores = scores32.to(dtype)
    assert torch.unique(scores).numel() < torch.unique(scores32).numel() // 4  # many ties appear
    y, s = target.numpy(), scores.double().numpy()
    groups = torch.randint(0, 20, (2000,), generator=gen)
    assert tmf.auc(scores, target).item() == pytest.approx(skm.roc_auc_score(y, s), abs=1e-14)
    assert tmf.auprc(scores, target).item() == pytest.approx(skm.average_precision_score(y, s), abs=1e-14)
    per_group = [
        skm.roc_auc_score(y[mask], s[mask])
        for mask in (groups.numpy() == g for g in range(20))
        if len(np.unique(y[mask])) == 2
    ]
    assert tmf.grouped_auc(scores, target, groups).item() == pytest.approx(np.mean(per_group), abs=1e-14)


def test_binned_compute_temporaries_stay_within_a_block_of_tasks_and_match_sklearn(monkeypatch):
    """The binned compute took all tasks in one pass, holding four to five times the histogram's
    16 bytes per bin and task at its peak (1M bins and 256 tasks: a 4 GB state and 16 GB or more
    at ``compute``, past the 24 GB of the machine it was found on). Tasks now go in blocks of at most
    ``_BINNED_BLOCK_ELEMENTS`` entries per class: the temporaries alive at once stay those of a block,
    and every task's AUC and AP are scikit-learn's on its histogram (each bin one score, its two
    class weights two weighted rows)."""
    num_tasks, num_bins = 24, 500
    rng = np.random.default_rng(5)
    hist = rng.random((2, num_tasks, num_bins)) * (rng.random((2, num_tasks, num_bins)) < 0.7)
    hist[:, 3] *= 1e-200  # a task of tiny weights next to unit ones: each block scales its tasks alone
    hist_t = torch.tensor(hist)
    monkeypatch.setattr(FB, "_BINNED_BLOCK_ELEMENTS", 5 * num_bins)  # blocks of 5 tasks: 5, 5, 5, 5, 4
    with _LiveBytes() as mode:
        pos_total, neg_total, auc_num, ap_num = FB._binned_curve_stats(hist_t)
    block_bytes = 2 * 5 * num_bins * 8  # one block's slice of the histogram, both classes
    assert mode.peak <= 10 * block_bytes  # about 8 of them alive at the peak (all 24 tasks at once: about 24)
    auc = FB._auc_compute(pos_total, neg_total, auc_num)
    ap = ap_num / pos_total
    scores = np.tile(np.arange(num_bins), 2)
    labels = np.repeat([0, 1], num_bins)
    for t in range(num_tasks):
        w = np.concatenate([hist[0, t], hist[1, t]])
        np.testing.assert_allclose(auc[t].item(), skm.roc_auc_score(labels, scores, sample_weight=w), rtol=1e-12)
        np.testing.assert_allclose(
            ap[t].item(), skm.average_precision_score(labels, scores, sample_weight=w), rtol=1e-12
        )


@pytest.mark.parametrize("bin_space", ["logit", "probability"])
@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_unvalidated_binned_probabilities_outside_0_1_land_in_an_end_bin(bin_space, device_path):
    """``validate_args=False``: a probability of 1.5 or -0.5 had a NaN logit and so an index outside the histogram
    (``IndexError`` on the CPU path). It counts in the last / first bin now, as numpy's histogram of the clipped
    scores says (logit space: the logits inf / -inf of 1 / 0, clipped into the logit range)."""
    p = np.array([1.5, -0.5, 0.33, 0.57, 2.0, -3.0, 0.91, 1.0, 0.0])  # inside [0, 1]: away from every bin edge
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1])
    num_bins = 10
    q = np.clip(p, 0.0, 1.0)
    if bin_space == "probability":
        values, low, high = q, 0.0, 1.0
    else:
        low, high = FB.DEFAULT_LOGIT_RANGE
        with np.errstate(divide="ignore"):
            values = np.clip(np.log(q) - np.log1p(-q), low, high)
    expected = np.stack([np.histogram(values[y == c], bins=num_bins, range=(low, high))[0] for c in (0, 1)])
    metric = tmx.AUC(num_bins=num_bins, bin_space=bin_space, validate_args=False)
    with force_device_path(device_path):
        metric.update(torch.tensor(p), torch.tensor(y, dtype=torch.float32))
    hist = next(iter(metric.metric_state.values()))[:, 0]
    np.testing.assert_array_equal(hist.numpy(), expected)
