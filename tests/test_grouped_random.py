"""Property-based checks of the grouped AUC family and ``Segmented`` against references written here.

Hypothesis draws small multi-task batches (tied scores, float16/bfloat16/float32/float64 scores,
probabilities or logits, zero/tiny/huge weights shared or per task, int32/int64 group ids that
are negative, at the int32 edges or anywhere in int64) and splits them over several updates
(empty ones included). ``GroupedAUC``/``GroupedAUPRC`` and ``grouped_auc``/``grouped_auprc``
are compared with a per-group loop over scikit-learn's ``roc_auc_score`` and
``average_precision_score`` (step-wise AP, as ``docs/auc.md`` defines it) on the scores as the
metric ranks them (float32) and the weights as it keeps them (float32), averaged as written in
``docs/auc.md``: over the groups holding positive and negative weight, or with
``average_groups="all"`` over every group (one without both classes worth 0.5 for AUC, 1 with
positive weight only and 0 without for AUPRC, a group of zero-weight rows included), each group
weighted 1 or by its total weight (``weight_groups``). With ``groups_complete_per_batch=True``
every group lies in one batch. ``Segmented(NormalizedEntropy/CTR)`` is compared per
``(task, segment)`` with the formulas of ``docs/pointwise.md`` (NE ``nan`` where a segment's
label weight is on one class, ``docs/policies.md``). Every case also resumes from a ``state_dict``
taken midway and merges two metrics over the two halves (``merge_state``); the grouped cases
also check ``forward``'s batch values, both grouped metrics in one ``MetricCollection``, the
device path on CPU tensors (``force_device_path``), tiny kernel blocks (so tie runs, tasks and
groups span block edges) and batches whose ids come in int16, int32 and int64.

100 examples per test by default (about 10 s in all); ``GROUPFUZZ_EXAMPLES=3000`` runs more locally.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.auc import _device as D
from torchmetrics_ext.functional.auc import _kernels as K
from torchmetrics_ext.functional.auc import grouped as FG
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import SamplesFirstWarning, UndefinedMetricWarning

EXAMPLES = int(os.environ.get("GROUPFUZZ_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# group id pools: small, negative, int32 edges, int64 edges and hashed-looking ids
ID_POOLS = [
    [0, 1, 2, 3],
    [-7, -1, 0, 5, 1000],
    [-(2**31), -1, 2**31 - 1, 12345],
    [-(2**63), -(2**62), 0, 2**62, 2**63 - 1],
    [-6_917_529_027_641_081_856, 4_611_686_018_427_387_904, 123_456_789_012_345, -3],
]
PROBS = [0.0, 1e-8, 0.1, 0.25, 0.5, 0.5 + 1e-12, 0.7, 0.999, 1.0]  # 0.5 + 1e-12 ties 0.5 in float32
LOGITS = [-40.0, -3.0, -0.5, 0.0, 0.5, 2.0, 40.0, 1e4]
WEIGHTS = [0.0, 1e-30, 1e-3, 0.5, 1.0, 3.0, 1e30]
SCORE_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _fits_int32(ids: list[int]) -> bool:
    return all(-(2**31) <= i < 2**31 for i in ids)


@st.composite
def grouped_cases(draw: st.DrawFn) -> dict:
    num_tasks = draw(st.sampled_from([None, 1, 2, 3]))  # None: 1-D inputs
    t = 1 if num_tasks is None else num_tasks
    n = draw(st.integers(1, draw(st.sampled_from([8, 30, 120]))))
    pool = draw(st.sampled_from(ID_POOLS))
    ids = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    id_dtype = torch.int32 if _fits_int32(ids) and draw(st.booleans()) else torch.int64
    from_logits = draw(st.booleans())
    dtype = draw(st.sampled_from(SCORE_DTYPES))
    scores = draw(st.lists(st.sampled_from(LOGITS if from_logits else PROBS), min_size=t * n, max_size=t * n))
    labels = draw(st.lists(st.sampled_from([0, 1]), min_size=t * n, max_size=t * n))
    weights_kind = draw(st.sampled_from([None, "shared", "task"]))
    weights = None
    if weights_kind is not None:
        size = n if weights_kind == "shared" else t * n
        weights = draw(st.lists(st.sampled_from(WEIGHTS), min_size=size, max_size=size))
    weights_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    if weights is not None and weights_dtype == torch.float32:  # float32 subnormals are kept as given
        weights = [1e-40 if w == 1e-30 else w for w in weights] if draw(st.booleans()) else weights
    shape = (n,) if num_tasks is None else (t, n)
    return {
        "num_tasks": num_tasks,
        "preds": torch.tensor(scores, dtype=torch.float64).reshape(shape).to(dtype),
        "target": torch.tensor(labels).reshape(shape),
        "groups": torch.tensor(ids, dtype=torch.int64).to(id_dtype),
        "weights": None
        if weights is None
        else torch.tensor(weights, dtype=weights_dtype).reshape((n,) if weights_kind == "shared" else shape),
        "from_logits": from_logits,
        "kind": draw(st.sampled_from(["auc", "auprc"])),
        "weight_groups": draw(st.booleans()),
        "average_groups": draw(st.sampled_from(["defined", "all"])),
        "complete": draw(st.booleans()),
        "num_batches": draw(st.integers(1, 4)),
        "batch_seed": draw(st.integers(0, 2**16)),
        "device_path": draw(st.booleans()),
        "mixed_ids": draw(st.booleans()),  # each batch's ids in a dtype of its own (where they fit)
        # tiny kernel blocks / group blocks / packed device keys (the device path's second sort)
        "blocks": draw(st.sampled_from([None, (3, 4, 0), (7, 2, 1 << 31)])),
    }


@contextlib.contextmanager
def _blocks(sizes: tuple[int, int, int] | None) -> Iterator[None]:
    """Tiny blocks of the exact kernels, so tie runs, tasks and groups span block edges; and the
    device path's sort by score then segment (without packed keys) when the third size is 0."""
    if sizes is None:
        yield
        return
    saved = K._BLOCK, FG._GROUP_BLOCK, D._PACKED_SEGMENTS
    K._BLOCK, FG._GROUP_BLOCK, D._PACKED_SEGMENTS = sizes
    try:
        yield
    finally:
        K._BLOCK, FG._GROUP_BLOCK, D._PACKED_SEGMENTS = saved


# ----------------------------------------------------------------------------- references


def _group_value(kind: str, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """sklearn's value of one group holding positive and negative weight (zero-weight rows dropped)."""
    keep = w > 0
    if kind == "auc":
        return roc_auc_score(y[keep], p[keep], sample_weight=w[keep])
    return average_precision_score(y[keep], p[keep], sample_weight=w[keep])


def ref_grouped_task(kind, p, y, g, w, weight_groups, average_groups) -> float:
    """``docs/auc.md``: the (weighted) mean of per-group values over the groups averaged."""
    values, group_weights = [], []
    for gid in np.unique(g):
        m = g == gid
        pos, neg = (w[m] * y[m]).sum(), (w[m] * (1 - y[m])).sum()
        if pos > 0 and neg > 0:
            value = _group_value(kind, p[m], y[m], w[m])
        elif average_groups == "all":
            value = 0.5 if kind == "auc" else float(pos > 0)
        else:
            continue
        values.append(value)
        group_weights.append(w[m].sum() if weight_groups else 1.0)
    total = sum(group_weights)
    if not values or total == 0:
        return math.nan
    return float(np.dot(values, group_weights) / total)


def ref_grouped(data: dict, kind: str, weight_groups: bool, average_groups: str) -> np.ndarray:
    # scores ranked as float32 (logits rank as their probabilities), weights kept as float32
    p = data["preds"].to(torch.float32).double().numpy()
    y = data["target"].numpy().astype(np.float64)
    g = data["groups"].to(torch.int64).numpy()
    p, y = np.atleast_2d(p), np.atleast_2d(y)
    w = data["weights"]
    w = np.ones_like(p) if w is None else np.broadcast_to(w.to(torch.float32).double().numpy(), p.shape)
    return np.array(
        [ref_grouped_task(kind, p[t], y[t], g, w[t], weight_groups, average_groups) for t in range(p.shape[0])]
    )


# ----------------------------------------------------------------------------- helpers


def _take(data: dict, rows: np.ndarray) -> dict:
    idx = torch.from_numpy(rows.astype(np.int64))
    out = {k: data[k].index_select(-1, idx) for k in ("preds", "target", "groups")}
    out["weights"] = None if data["weights"] is None else data["weights"].index_select(-1, idx)
    return out


def _batches(data: dict, num_batches: int, seed: int, by_group: bool, mixed_ids: bool = False) -> list[dict]:
    """Rows dealt to ``num_batches`` batches (some may be empty); whole groups when ``by_group``.

    ``mixed_ids``: each batch's ids as int16, int32 or int64, the narrowest types where they fit.
    """
    rng = np.random.default_rng(seed)
    groups = data["groups"].to(torch.int64).numpy()
    if by_group:
        uniq, inverse = np.unique(groups, return_inverse=True)
        where = rng.integers(0, num_batches, size=uniq.size)[inverse]
    else:
        where = rng.integers(0, num_batches, size=groups.size)
    order = rng.permutation(groups.size)  # rows shuffled within each batch too
    batches = [_take(data, order[where[order] == b]) for b in range(num_batches)]
    if mixed_ids:
        for batch in batches:
            ids = batch["groups"].to(torch.int64)
            options = [d for d in (torch.int16, torch.int32) if ids.numel() and _fits(ids, d)] + [torch.int64]
            batch["groups"] = ids.to(options[rng.integers(len(options))])
    return batches


def _fits(ids: torch.Tensor, dtype: torch.dtype) -> bool:
    info = torch.iinfo(dtype)
    return info.min <= int(ids.min()) and int(ids.max()) <= info.max


def _run(make, batches: list[dict]):
    metric = make()
    for batch in batches:
        metric.update(**batch)
    return metric


def _close(actual, expected, what: str, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    actual = np.atleast_1d(actual.detach().double().numpy())
    np.testing.assert_allclose(actual, np.atleast_1d(expected), rtol=rtol, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------- grouped


@SETTINGS
@given(case=grouped_cases())
def test_grouped_metrics_match_per_group_sklearn(case):
    kind, wg, avg = case["kind"], case["weight_groups"], case["average_groups"]
    data = {k: case[k] for k in ("preds", "target", "groups", "weights")}
    expected = ref_grouped(data, kind, wg, avg)
    cls = tmx.GroupedAUC if kind == "auc" else tmx.GroupedAUPRC
    fn = tmf.grouped_auc if kind == "auc" else tmf.grouped_auprc
    options = {"weight_groups": wg, "average_groups": avg, "from_logits": case["from_logits"]}
    num_tasks = case["num_tasks"] or 1

    def make():
        return cls(num_tasks, groups_complete_per_batch=case["complete"], **options)

    batches = _batches(
        data, case["num_batches"], case["batch_seed"], by_group=case["complete"], mixed_ids=case["mixed_ids"]
    )
    with force_device_path(case["device_path"]), _blocks(case["blocks"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", SamplesFirstWarning)  # (T, 1) given to a functional: T tasks, as meant
        # functional over everything at once
        _close(fn(**data, **options), expected, "functional")
        # one metric over all batches, and forward's batch values
        whole, forwarded = make(), make()
        for batch in batches:
            whole.update(**batch)
            if batch["preds"].shape[-1]:
                _close(forwarded(**batch), ref_grouped(batch, kind, wg, avg), "forward")
        _close(whole.compute(), expected, "metric")
        _close(forwarded.compute(), expected, "forwarded")
        assert whole.compute().dtype == torch.float64
        # resumed from a state_dict taken midway
        half = len(batches) // 2
        first = _run(make, batches[:half])
        first.persistent(True)
        resumed = make()
        resumed.persistent(True)
        resumed.load_state_dict(first.state_dict())
        for batch in batches[half:]:
            resumed.update(**batch)
        _close(resumed.compute(), expected, "resumed")
        # merge_state of two metrics over the two halves
        first.merge_state(_run(make, batches[half:]))
        _close(first.compute(), expected, "merged")
        # GroupedAUC and GroupedAUPRC of one compute group (exact mode: the same states)
        other = "auprc" if kind == "auc" else "auc"
        both = MetricCollection(
            {
                kind: make(),
                other: (tmx.GroupedAUPRC if kind == "auc" else tmx.GroupedAUC)(
                    num_tasks, groups_complete_per_batch=case["complete"], **options
                ),
            }
        )
        for batch in batches:
            both.update(**batch)
        values = both.compute()
        _close(values[kind], expected, "collection")
        _close(values[other], ref_grouped(data, other, wg, avg), "collection (other)")
    if np.isnan(expected).any():  # undefined: nan with a warning
        with pytest.warns(UndefinedMetricWarning), warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplesFirstWarning)
            fn(**data, **options)


@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_a_group_split_across_batches_counts_twice_when_complete_per_batch(cls):
    """``docs/auc.md``: with ``groups_complete_per_batch=True`` a split group is separate groups."""
    preds, target = torch.tensor([0.9, 0.2, 0.3, 0.6]), torch.tensor([1, 0, 1, 0])
    groups = torch.tensor([7, 7, 7, 7])
    metric = cls(groups_complete_per_batch=True)
    metric.update(preds[:2], target[:2], groups[:2])  # 1.0 for both
    metric.update(preds[2:], target[2:], groups[2:])  # AUC 0.0, AP 0.5
    assert metric.compute().item() == pytest.approx(0.5 if cls is tmx.GroupedAUC else 0.75)


# ----------------------------------------------------------------------------- Segmented

EPS = 1e-12  # NE's default eta
SEG_PROBS = [0.0, 1e-6, 0.1, 0.3, 0.5, 0.8, 0.99, 1.0]
SEG_WEIGHTS = [0.0, 1e-3, 0.5, 1.0, 3.0, 1e6]


@st.composite
def segmented_cases(draw: st.DrawFn) -> dict:
    num_tasks = draw(st.sampled_from([1, 2, 3]))
    one_dim = num_tasks == 1 and draw(st.booleans())
    n = draw(st.integers(1, 30))
    s = draw(st.integers(1, 5))
    from_logits = draw(st.booleans())
    size = num_tasks * n
    scores = draw(st.lists(st.sampled_from(LOGITS[:-1] if from_logits else SEG_PROBS), min_size=size, max_size=size))
    labels = draw(st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size))
    segments_per_task = draw(st.booleans())
    segments = draw(st.lists(st.integers(0, s - 1), min_size=size if segments_per_task else n, max_size=size))
    segments = segments[: size if segments_per_task else n]
    weights_kind = draw(st.sampled_from([None, "shared", "task"]))
    shape = (n,) if one_dim else (num_tasks, n)
    weights = None
    if weights_kind is not None:
        wsize = n if weights_kind == "shared" else size
        values = draw(st.lists(st.sampled_from(SEG_WEIGHTS), min_size=wsize, max_size=wsize))
        weights = torch.tensor(values, dtype=torch.float64).reshape((n,) if weights_kind == "shared" else shape)
    return {
        "num_tasks": num_tasks,
        "num_segments": s,
        "preds": torch.tensor(scores, dtype=torch.float64).reshape(shape).to(draw(st.sampled_from(SCORE_DTYPES))),
        "target": torch.tensor(labels).reshape(shape),
        "segments": torch.tensor(segments)
        .reshape(shape if segments_per_task else (n,))
        .to(draw(st.sampled_from([torch.uint8, torch.int16, torch.int32, torch.int64]))),
        "weights": weights,
        "from_logits": from_logits,
        "kind": draw(st.sampled_from(["ne", "ctr"])),
        "num_batches": draw(st.integers(1, 4)),
        "batch_seed": draw(st.integers(0, 2**16)),
    }


def ref_segmented(case: dict) -> np.ndarray:
    t, s = case["num_tasks"], case["num_segments"]
    p = np.atleast_2d(case["preds"].double().numpy())
    y = np.atleast_2d(case["target"].numpy().astype(np.float64))
    seg = np.broadcast_to(case["segments"].numpy(), p.shape)
    w = case["weights"]
    w = np.ones_like(p) if w is None else np.broadcast_to(w.numpy(), p.shape)
    out = np.full((t, s), np.nan)
    for task in range(t):
        for segment in range(s):
            m = seg[task] == segment
            pm, ym, wm = p[task][m], y[task][m], w[task][m]
            total = wm.sum()
            if total == 0:
                continue
            base = (wm * ym).sum() / total
            if case["kind"] == "ctr":
                out[task, segment] = base
                continue
            if not 0 < base < 1:  # NE while all label weight is on one class (docs/policies.md)
                continue
            if case["from_logits"]:  # softplus(z) - y z, unclamped
                ce = np.logaddexp(0.0, pm) - ym * pm
            else:
                q = np.clip(pm, EPS, 1 - EPS)
                ce = -(ym * np.log(q) + (1 - ym) * np.log(1 - q))
            c = min(max(base, EPS), 1 - EPS)
            entropy = -total * (base * np.log(c) + (1 - base) * np.log(1 - c))
            out[task, segment] = (wm * ce).sum() / entropy
    return out[0] if t == 1 else out


def _seg_batches(case: dict) -> list[dict]:
    rng = np.random.default_rng(case["batch_seed"])
    n = case["preds"].shape[-1]
    where = rng.integers(0, case["num_batches"], size=n)
    out = []
    for b in range(case["num_batches"]):
        idx = torch.from_numpy(np.nonzero(where == b)[0])
        batch = {k: case[k].index_select(-1, idx) for k in ("preds", "target", "segments")}
        batch["weights"] = None if case["weights"] is None else case["weights"].index_select(-1, idx)
        out.append(batch)
    return out


@SETTINGS
@given(case=segmented_cases())
def test_segmented_matches_per_segment_references(case):
    expected = ref_segmented(case)

    def make():
        if case["kind"] == "ne":
            inner = tmx.NormalizedEntropy(case["num_tasks"], from_logits=case["from_logits"])
        else:
            inner = tmx.CTR(case["num_tasks"], from_logits=case["from_logits"])
        return tmx.Segmented(inner, case["num_segments"])

    batches = _seg_batches(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        whole = _run(make, batches)
        value = whole.compute()
        assert value.shape == expected.shape
        _close(value, expected, "segmented", rtol=1e-6, atol=1e-9)
        half = len(batches) // 2
        first = _run(make, batches[:half])
        first.persistent(True)
        resumed = make()
        resumed.persistent(True)
        resumed.load_state_dict(first.state_dict())
        for batch in batches[half:]:
            resumed.update(**batch)
        _close(resumed.compute(), expected, "resumed", rtol=1e-6, atol=1e-9)
        first.merge_state(_run(make, batches[half:]))
        _close(first.compute(), expected, "merged", rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("metric", [tmx.AUC(), tmx.GroupedAUC(), tmx.AUPRC(num_bins=10)])
def test_segmented_refuses_metrics_that_are_not_sums(metric):
    """AUC's sorted scores and histograms are not per-task sums (documented ``TypeError``)."""
    with pytest.raises(TypeError, match="per-task sum statistics"):
        tmx.Segmented(metric, 3)
