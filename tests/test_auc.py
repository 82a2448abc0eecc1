"""AUC, AUPRC and their grouped variants through the shared harness, against scikit-learn."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning
from tests.helpers import tester as H

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
    if weights == "task":
        out["weights"] = torch.tensor(rng.uniform(0.0, 2.0, size=shape))
    elif weights == "shared":
        out["weights"] = torch.tensor(rng.uniform(0.0, 2.0, size=N))
    else:
        out["weights"] = None
    return out


# ----------------------------------------------------------------------------- references (sklearn)


def _both_classes(y, w):
    w = np.ones_like(y, dtype=float) if w is None else w
    return (w * y).sum() > 0 and (w * (1 - y)).sum() > 0


def _binned(p, num_bins, logits):
    """The documented bin of each score: equal bins of the logit over LOGIT_RANGE, clipped."""
    with np.errstate(divide="ignore"):
        z = p if logits else np.log(p) - np.log1p(-p)
    lo, hi = LOGIT_RANGE
    return np.clip(np.floor((z - lo) * (num_bins / (hi - lo))), 0, num_bins - 1)


def ref_auc(p, y, w, num_bins=None, logits=False):
    if not _both_classes(y, w):
        return np.nan
    scores = p if num_bins is None else _binned(p, num_bins, logits)
    return skm.roc_auc_score(y, scores, sample_weight=w)


def ref_auprc(p, y, w, num_bins=None, logits=False):
    if (y * (np.ones_like(p) if w is None else w)).sum() <= 0:
        return np.nan
    scores = p if num_bins is None else _binned(p, num_bins, logits)
    return skm.average_precision_score(y, scores, sample_weight=w)


def ref_grouped(p, y, g, w, ref=ref_auc, weight_groups=False):
    """Per-group loop over scikit-learn (a loop is fine in a test reference)."""
    values, group_weights = [], []
    for gid in np.unique(g):
        m = g == gid
        wm = None if w is None else w[m]
        if _both_classes(y[m], wm):
            values.append(ref(p[m], y[m], wm))
            group_weights.append((m.sum() if w is None else wm.sum()) if weight_groups else 1.0)
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
        id=cid, metric=partial(cls, **metric_kw), data=data, reference=reference, functional=partial(fn, **fn_kw)
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
            ref_kw=dict(ref_kw, logits=True) if "num_bins" in ref_kw else ref_kw,
        ),
    ]


def _grouped_variants(name, cls, fn, ref):
    return [
        _case(name, cls, fn, ref, grouped=True),
        _case(f"{name}-w", cls, fn, ref, data_kw={"weights": "task"}, grouped=True),
        _case(f"{name}-3task-w", cls, fn, ref, data_kw={"weights": "task"}, num_tasks=3, grouped=True),
        _case(f"{name}-3task-shared-w", cls, fn, ref, {"weights": "shared"}, num_tasks=3, grouped=True),
        _case(f"{name}-weighted-groups-w", cls, fn, ref, {"weights": "task"}, {"weight_groups": True},
              {"weight_groups": True}, grouped=True),
        _case(f"{name}-logits-w", cls, fn, ref, {"weights": "task", "logits": True}, {"from_logits": True},
              grouped=True),
    ]


BINS = {"num_bins": 1000}
_ALL = [
    *_variants("auc", tmx.AUC, tmf.auc, ref_auc),
    *_variants("auprc", tmx.AUPRC, tmf.auprc, ref_auprc),
    *_variants("auc-bins", tmx.AUC, tmf.auc, ref_auc, kw=BINS, ref_kw=BINS),
    *_variants("auprc-bins", tmx.AUPRC, tmf.auprc, ref_auprc, kw=BINS, ref_kw=BINS),
    *_grouped_variants("gauc", tmx.GroupedAUC, tmf.grouped_auc, ref_auc),
    *_grouped_variants("gauprc", tmx.GroupedAUPRC, tmf.grouped_auprc, ref_auprc),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
DDP_IDS = [i for i in IDS if i.endswith("-3task-w") or i in ("auc-w", "auprc-logits-w", "gauc-weighted-groups-w")]


@pytest.fixture(params=[None, 7], ids=["block-default", "block-7"])
def block(request, monkeypatch):
    """Run the exact kernels also with tiny blocks, so tie runs and segments span block edges."""
    if request.param is not None:
        monkeypatch.setattr(FB, "_BLOCK", request.param)


@pytest.mark.parametrize("cid", IDS)
def test_accumulate(cid, block):
    H.check_accumulate(CASES[cid])


@pytest.mark.parametrize("cid", IDS)
def test_forward(cid):
    H.check_forward(CASES[cid])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("cid", [i for i in IDS if i.endswith("-3task-w")])
def test_dtypes(cid, dtype):
    H.check_dtype(CASES[cid], dtype)


@pytest.mark.parametrize("cid", IDS)
def test_state_dict(cid):
    H.check_state_dict(CASES[cid])


@pytest.mark.parametrize("cid", [i for i in IDS if i.endswith("-3task-w") or i.endswith("-logits-w")])
def test_collection(cid):
    H.check_collection(CASES[cid])


@pytest.mark.parametrize("cid", [i for i in IDS if i.endswith("-w")])
def test_invariances(cid):
    H.check_invariances(CASES[cid])


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("cid", DDP_IDS)
def test_ddp(ddp_pool, cid, empty_rank):
    H.check_ddp(ddp_pool, __name__, CASES[cid], empty_rank=empty_rank)
