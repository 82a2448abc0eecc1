"""Windowed (lifetime + window values) for every metric family, through the shared window checks."""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import gc
import importlib
import io
import math
import pickle
import statistics
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import MeanSquaredError

import torchmetrics_ext as tmx
from tests.helpers import ranking_reference as R
from tests.helpers import tester as H
from tests.helpers import window as W
from tests.test_threshold_and_session import L as SESSION_LENGTH
from tests.test_threshold_and_session import ref_session, session_data
from torchmetrics_ext import Windowed
from torchmetrics_ext.aggregation import Distribution, Max, Min
from torchmetrics_ext.utilities.device import force_device_path
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

# family test module -> the cases whose window is checked (every metric class is represented)
FAMILIES = {
    "tests.test_pointwise": [
        "ne-w",
        "ne-3task-w",
        "logloss-logits-w",
        "calibration-3task-shared-w",
        "ctr-soft-w",
        "average-3task-w",
        "accuracy-3task-w",
        "precision-t0.3-w",
        "recall-3task-w",
        "mse-3task-w",
        "rmse-w",
        "mae-3task-shared-w",
    ],
    "tests.test_auc": [
        "auc-3task-w",
        "auprc-w",
        "auc-bins-3task-shared-w",
        "auprc-bins-logits-w",
        "gauc-w",
        "gauc-3task-w",
        "gauprc-weighted-groups-w",
    ],
    "tests.test_sum_metrics": [
        "cali_free-logits-w",
        "cali_free-torchrec-3task-w",
        "ne_positive-3task-w",
        "recal_ne-logits-w",
        "recal_cal-3task-shared-w",
        "r2-3task-w",
        "nmse-mean-w",
        "nrmse-w",
        "label_avg-w",
        "sum_weights-w",
        "positives-3task-w",
        "pred_sum-3task-shared-w",
        "serving-w",
        "missing-unweighted-3task-w",
        "tensor_avg-mixed-3task-w",
    ],
    "tests.test_threshold_and_session": ["hindsight-3task-w", "multi_label-3task-shared-w"],
    "tests.test_aggregation_metrics": ["distribution", "distribution-offset"],
    "tests.test_reliability": ["edges-3task-w"],
    "tests.test_pairwise_auc": ["rauc-3task-w", "xauc-w"],
    "tests.test_ranking": [
        "flat-ndcg@5",
        "flat-ties-map",
        "flat-mrr-one-w",
        "flat-ndcg-torchrec",
        "flat-all-w",
        "flat-grouped-all-w",
        "flat-precision-adaptive@10",
        "padded-all-w",
        "padded-pad-ndcg@3",
        "padded-recall@3",
        "multiclass@3-ties-w",
        "multiclass@1",
        "flat-r_precision-one-w",
        "flat-f1-adaptive@10-w",
        "padded-hit_rate@2",
    ],
}


def _window_case(module, cid):
    case = importlib.import_module(module).CASES[cid]
    return dataclasses.replace(case, id=f"{module.removeprefix('tests.test_')}:{cid}")


def _session_rows(rng, weights="shared"):
    """The session cases' ``(S, L)`` data as the flat rows users feed, session ids ``0..S-1``, ``L`` rows each."""
    data = session_data(rng, weights=weights)
    num_sessions, length = data["preds"].shape
    return {
        "preds": data["preds"].reshape(-1),
        "target": data["target"].reshape(-1),
        "sessions": torch.arange(num_sessions).repeat_interleave(length),
        "weights": data["weights"].reshape(-1),
    }


def _ref_session_rows(data, **kw):
    """``ref_session`` over the rows of each session id."""
    ids = np.unique(data["sessions"])
    rows = [data["sessions"] == sid for sid in ids]
    p, y, w = ([data[key][r] for r in rows] for key in ("preds", "target", "weights"))
    return ref_session(p, y, w, **kw)


def _session_rows_case(cid, cls, kind, **kw):
    """A session metric on flat rows; a session lies within one update, so every batch (and the window)
    is a whole number of sessions (``extra["unit"]``)."""
    return H.MetricCase(
        id=cid,
        metric=functools.partial(cls, **kw),
        data=_session_rows,
        reference=functools.partial(_ref_session_rows, kind=kind, **{"average": "session", **kw}),
        min_batch=2 * SESSION_LENGTH,
        extra={"unit": SESSION_LENGTH},
    )


SESSION_CASES = [
    _session_rows_case("session:precision-rows-w", tmx.SessionPrecisionAtK, "precision", k=3),
    _session_rows_case("session:recall-micro-rows-w", tmx.SessionRecallAtK, "recall", k=3, average="micro"),
]
CASES = {case.id: case for case in (_window_case(m, cid) for m, ids in FAMILIES.items() for cid in ids)}
CASES.update({case.id: case for case in SESSION_CASES})
IDS = [cid for cid in CASES if cid != "auc:gauc-3task-w"]  # its per-group reference is slow: DDP only
DDP_IDS = [
    "pointwise:ne-3task-w",
    "pointwise:accuracy-3task-w",
    "auc:auc-3task-w",
    "auc:auc-bins-3task-shared-w",
    "auc:gauc-3task-w",
    "pairwise_auc:rauc-3task-w",
    "ranking:flat-all-w",
    "ranking:padded-all-w",
    "ranking:multiclass@3-ties-w",
    "ranking:flat-f1-adaptive@10-w",
    "sum_metrics:r2-3task-w",
    "sum_metrics:tensor_avg-mixed-3task-w",
    "threshold_and_session:hindsight-3task-w",
    "reliability:edges-3task-w",
    "session:precision-rows-w",
    "aggregation_metrics:distribution-offset",  # each rank's sums about its own shift: the sync re-shifts them
]


SLOW_REFERENCE = {"auc:gauc-w", "auc:gauprc-weighted-groups-w"}  # per-group scikit-learn loops


@pytest.mark.parametrize("cid", IDS)
def test_window_values(cid):
    W.check_window(CASES[cid], stride=4 if cid in SLOW_REFERENCE else 1)


@pytest.mark.parametrize("cid", IDS)
def test_window_state_dict_resume_and_reset(cid):
    W.check_window_state_dict(CASES[cid])


@pytest.mark.parametrize("cid", IDS)
def test_window_set_dtype(cid):
    W.check_window_set_dtype(CASES[cid])
    W.check_window_casts_keep_states(CASES[cid])


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("cid", DDP_IDS)
def test_window_ddp(ddp_pool, cid, empty_rank):
    W.check_window_ddp(ddp_pool, __name__, CASES[cid], empty_rank=empty_rank)


# ----------------------------------------------------------------------------- beyond the family cases


def _grouped_complete_case():
    """GroupedAUC with ``groups_complete_per_batch``: rows sorted by group, batches cut at group starts."""
    base = importlib.import_module("tests.test_auc").CASES["gauc-3task-w"]

    def data(rng):
        out = base.data(rng)
        order = torch.argsort(out["groups"], stable=True)
        return {k: (v[..., order] if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    return dataclasses.replace(
        base,
        id="gauc-complete",
        metric=functools.partial(base.metric, groups_complete_per_batch=True),
        data=data,
        forward_check=False,
    )


def test_window_groups_complete_per_batch():
    case = _grouped_complete_case()
    groups = case.make_data(0)["groups"]
    starts = (torch.nonzero(torch.diff(groups) != 0).reshape(-1) + 1).tolist()
    window = W.default_window(case, case.make_data(0))
    cuts, last = [0], 0  # group boundaries ~window/3 apart, one batch above the window (ending at a group end)
    for start in starts:
        if start - last >= (window + 20 if len(cuts) == 3 else window // 3):
            cuts.append(start)
            last = start
    bounds = list(zip(cuts, [*cuts[1:], groups.numel()]))
    W.check_window(case, bounds=bounds, stride=3)


def _values(n, rng, scale=1.0):
    return torch.tensor(rng.normal(size=n) * scale)


def test_window_of_max_min_and_sum_states():
    """``max``/``min`` states (the Distribution sketch) window like sums: recomputed exactly from the ring."""
    rng = np.random.default_rng(0)
    metric = Windowed(Distribution(percentiles=(50.0,)), window_size=50)
    batches = [_values(int(rng.integers(1, 20)), rng) for _ in range(40)] + [_values(70, rng)]
    seen = []
    for batch in batches:
        metric.update(batch)
        seen.append(batch)
        kept = torch.cat(seen[-1:])[-50:] if len(batch) > 50 else _kept_tail(seen, 50)
        value = metric.compute()
        for part, data in (("lifetime", torch.cat(seen)), ("window", kept)):
            np.testing.assert_allclose(value[part]["max"].item(), data.max().item())
            np.testing.assert_allclose(value[part]["min"].item(), data.min().item())
            np.testing.assert_allclose(value[part]["mean"].item(), data.mean().item(), rtol=1e-12)
            np.testing.assert_allclose(value[part]["std"].item(), data.std().item(), rtol=1e-9)


def _window_of(seen, window):
    """The window's values: the newest whole batches within ``window`` samples, or the newest ``window`` of one."""
    return seen[-1][-window:] if len(seen[-1]) > window else _kept_tail(seen, window)


@pytest.mark.parametrize("path", ["update", "device_path"])
@pytest.mark.parametrize("offset", [1e7, -1e7, 1e9, -1e9])
def test_windowed_distribution_of_values_with_a_large_offset(offset, path):
    """A Windowed's ring adds per-update sums as they are, so inside it a Distribution kept its sums about 0
    and they cancelled: 1e9 + N(0, 3) had no std (nan), 1e7 + N(0, 3) one ~1e-3 off. They are taken about one
    shift for good (the first value seen), every update's too: lifetime, window and ``forward``'s batch values
    are numpy's over their values. The first batch is larger than the window: the part it keeps takes the
    whole batch's shift. Reference: numpy's mean and std (ddof=1) over the values."""
    rng = np.random.default_rng(8)
    sizes = [55, *rng.integers(2, 15, 30).tolist(), 70, *rng.integers(2, 15, 10).tolist()]
    batches = [torch.from_numpy(offset + rng.normal(0.0, 3.0, n)) for n in sizes]
    metric = Windowed(Distribution(percentiles=(50.0,)), window_size=50)
    seen = []
    with force_device_path(path == "device_path"):
        for i, batch in enumerate(batches):
            if i % 2:
                value = metric(batch)
                for part, data in (("lifetime", batch), ("window", batch[-50:])):
                    np.testing.assert_allclose(value[part]["std"].item(), np.std(data.numpy(), ddof=1), rtol=1e-9)
            else:
                metric.update(batch)
            seen.append(batch)
            out = metric.compute()
            for part, data in (("lifetime", torch.cat(seen).numpy()), ("window", _window_of(seen, 50).numpy())):
                np.testing.assert_allclose(out[part]["std"].item(), np.std(data, ddof=1), rtol=1e-9, err_msg=part)
                np.testing.assert_allclose(out[part]["mean"].item(), np.mean(data), rtol=1e-15, err_msg=part)
                assert out[part]["min"].item() == data.min() and out[part]["max"].item() == data.max()
    assert metric.lifetime.shift.item() == batches[0][0].item()
    # the window's sums are about a value of its own (its oldest update's first), not the lifetime's
    assert metric.window.shift.item() == _window_of(seen, 50)[0].item()


def test_windowed_distribution_of_the_torchtune_example():
    """1e7, 1e7 + 1, ..., 1e7 + 9 in two updates, a window of the newest 4: statistics.stdev's values
    (the window's std had been nan, its float64 sums about 0 cancelling)."""
    values = [1e7 + i for i in range(10)]
    metric = Windowed(Distribution(), window_size=4)
    metric.update(torch.tensor(values[:6], dtype=torch.float64))
    metric.update(torch.tensor(values[6:], dtype=torch.float64))
    out = metric.compute()
    assert out["lifetime"]["std"].item() == pytest.approx(statistics.stdev(values), rel=1e-14)
    assert out["window"]["std"].item() == pytest.approx(statistics.stdev(values[6:]), rel=1e-14)
    assert out["window"]["mean"].item() == statistics.fmean(values[6:])


def test_windowed_distribution_keeps_the_shift_of_the_metric_it_wraps_until_reset():
    """A metric wrapped with values keeps its shift (its first value) and sums; after ``reset`` the next
    first value is the shift. An empty one holds no shift (-inf) until its first value. Reference: numpy."""
    rng = np.random.default_rng(5)
    held = 1e9 + rng.normal(0.0, 1.0, 30)
    inner = Distribution(percentiles=(50.0,))
    inner.update(torch.from_numpy(held))
    metric = Windowed(inner, window_size=40)
    batches = [torch.from_numpy(1e9 + rng.normal(0.0, 1.0, int(rng.integers(1, 15)))) for _ in range(20)]
    for batch in batches:
        metric.update(batch)
    assert metric.lifetime.shift.item() == held[0]
    assert metric.window.shift.item() == _window_of(batches, 40)[0].item()  # a value of its own
    out = metric.compute()
    lifetime = np.concatenate([held, *[b.numpy() for b in batches]])
    np.testing.assert_allclose(out["lifetime"]["std"].item(), lifetime.std(ddof=1), rtol=1e-9)
    np.testing.assert_allclose(out["window"]["std"].item(), _window_of(batches, 40).numpy().std(ddof=1), rtol=1e-9)
    metric.reset()
    assert metric.lifetime.shift.item() == metric.window.shift.item() == -math.inf
    again = [torch.from_numpy(-5e8 + rng.normal(0.0, 2.0, 12)) for _ in range(6)]
    for batch in again:
        metric.update(batch)
    assert metric.lifetime.shift.item() == again[0][0].item()
    out = metric.compute()
    np.testing.assert_allclose(out["lifetime"]["std"].item(), torch.cat(again).numpy().std(ddof=1), rtol=1e-9)
    np.testing.assert_allclose(out["window"]["std"].item(), _window_of(again, 40).numpy().std(ddof=1), rtol=1e-9)


def test_windowed_distribution_merge_of_lifetimes_about_other_shifts():
    """``merge_state`` joins another Windowed's lifetime, its sums about its own first value, re-shifted
    exactly (as a plain Distribution's merge does): the std of both streams (numpy); the window stays."""
    rng = np.random.default_rng(6)
    a, b = (Windowed(Distribution(), window_size=20) for _ in range(2))
    xa, xb = 1e9 + rng.normal(0.0, 2.0, 60), 1e9 + 7.0 + rng.normal(0.0, 2.0, 45)
    for x, metric in ((xa, a), (xb, b)):
        for chunk in np.array_split(x, 5):
            metric.update(torch.from_numpy(chunk))
    a.merge_state(b)
    out = a.compute()
    np.testing.assert_allclose(out["lifetime"]["std"].item(), np.concatenate([xa, xb]).std(ddof=1), rtol=1e-9)
    np.testing.assert_allclose(out["window"]["std"].item(), np.array_split(xa, 5)[-1].std(ddof=1), rtol=1e-9)
    assert a.lifetime.shift.item() == xa[0]


def _as_before_raw_rows(metric):
    """``metric`` (an empty ``Windowed(Distribution)``) made to update as versions before its ring kept each
    update's own sums did: every update's sums about the lifetime's shift, aggregated by the ring (front rows of
    suffix sums); its checkpoints and pickles then hold what those versions wrote."""
    metric._ring.raw = frozenset()
    metric.__dict__["_raw_states"] = ()
    return metric


@pytest.mark.parametrize("saved", ["shift-0", "no-shift"])
def test_windowed_distribution_checkpoint_with_sums_about_zero_keeps_them_and_its_values(saved):
    """Checkpoints written before the window kept a shift hold sums about 0 in the lifetime, the window and the
    ring (shift 0, or no shift state before the shift existed): they load and give the values they gave (to
    float64 rounding: the window's rows are joined in another order), the lifetime keeps its sums about 0 for
    good; later updates are summed about their own first values in the window. (A first batch of both signs is
    summed about 0 by the shift rule: the metric written here holds what those versions wrote.)
    References: the written metric's values, numpy's over the values."""
    rng = np.random.default_rng(4)
    batches = [torch.tensor([-1.0, 1.0])] + [
        torch.from_numpy(1e3 + rng.normal(0, 3, int(rng.integers(1, 20)))) for _ in range(30)
    ]
    metric = _as_before_raw_rows(Windowed(Distribution(), window_size=50))
    for batch in batches[:20]:
        metric.update(batch)
    assert metric.lifetime.shift.item() == 0.0
    state = metric.state_dict()
    if saved == "no-shift":
        state = {k: v for k, v in state.items() if not k.endswith(".shift")}
        ring = state["_extra_state"] = dict(state["_extra_state"])
        for part in ("rings", "back"):
            ring[part] = {n: v for n, v in ring[part].items() if n != "shift"}
    assert "raw" not in state["_extra_state"]  # the ring as those versions wrote it
    again = Windowed(Distribution(), window_size=50)
    again.load_state_dict(state)
    torch.testing.assert_close(again.compute(), metric.compute(), rtol=1e-15, atol=0)
    seen = list(batches[:20])
    for batch in batches[20:]:
        again.update(batch)
        seen.append(batch)
        out = again.compute()
        for part, data in (("lifetime", torch.cat(seen).numpy()), ("window", _window_of(seen, 50).numpy())):
            np.testing.assert_allclose(out[part]["std"].item(), data.std(ddof=1), rtol=1e-9, err_msg=part)
            np.testing.assert_allclose(out[part]["mean"].item(), data.mean(), rtol=1e-14, err_msg=part)
    assert again.lifetime.shift.item() == 0.0


def _old_empty_windowed_distribution_checkpoint(saved):
    """An empty ``Windowed(Distribution)``'s checkpoint as versions before the window kept a shift wrote it:
    shift 0 in the lifetime, the window and the ring's back (``shift-0``), or no shift state (``no-shift``)."""
    state = Windowed(Distribution(), window_size=50).state_dict()
    ring = state["_extra_state"] = dict(state["_extra_state"])
    if saved == "no-shift":
        state = {k: v for k, v in state.items() if not k.endswith(".shift")}
        for part in ("rings", "back"):
            ring[part] = {n: v for n, v in ring[part].items() if n != "shift"}
    else:
        state = {k: torch.zeros_like(v) if k.endswith(".shift") else v for k, v in state.items()}
        ring["back"] = {**ring["back"], "shift": torch.zeros_like(ring["back"]["shift"])}
    return state


@pytest.mark.parametrize("path", ["update", "device_path"])
@pytest.mark.parametrize("offset", [1e9, -1e9])
@pytest.mark.parametrize("saved", ["shift-0", "no-shift"])
def test_windowed_distribution_empty_old_checkpoint_chooses_its_shift_from_the_first_data(saved, offset, path):
    """Bug: an empty ``Windowed(Distribution)`` checkpoint written before the window kept a shift loaded pinned
    at shift 0, so later values 1e9 + N(0, 3) were summed about 0 and their std cancelled (nan); the ring's
    back held 0 too, which ``max`` kept as the window's shift (a window mean of 0.5 for -1e9 + ...). Loaded
    empty, it chooses the shift from its first value; mean and std of lifetime and window match numpy's."""
    again = Windowed(Distribution(), window_size=50)
    again.load_state_dict(_old_empty_windowed_distribution_checkpoint(saved))
    assert again.lifetime.shift.item() == again.window.shift.item() == -math.inf
    rng = np.random.default_rng(9)
    batches = [offset + rng.normal(0.0, 3.0, int(rng.integers(5, 15))) for _ in range(12)]
    with warnings.catch_warnings(), force_device_path(path == "device_path"):
        warnings.simplefilter("error")  # nothing is undefined: no cancelled std
        for i, batch in enumerate(batches):
            again.update(torch.from_numpy(batch))
            out = again.compute()
            lifetime = np.concatenate(batches[: i + 1])
            window = _window_of([torch.from_numpy(b) for b in batches[: i + 1]], 50).numpy()
            for part, x in (("lifetime", lifetime), ("window", window)):
                np.testing.assert_allclose(out[part]["std"].item(), x.std(ddof=1), rtol=1e-9, err_msg=part)
                np.testing.assert_allclose(out[part]["mean"].item(), x.mean(), rtol=1e-15, err_msg=part)
    assert again.lifetime.shift.item() == batches[0][0]
    assert again.window.shift.item() == window[0]  # a value of its own (its oldest update's first)


def _pickled_as_before_the_window_kept_a_shift(metric):
    """``metric`` (a ``Windowed(Distribution)`` whose values are summed about 0) as versions before the window
    kept a shift pickled it, loaded by this one: each Distribution (lifetime, window, scratch) unshifted
    (``_shifts=False``, no ``_pinned``) with shift 0 and a shift default of 0, the ring's identity (and an empty
    ring's back) 0, the wrapper without ``_pinned_states``."""
    for part in (metric.lifetime, metric.window, metric._scratch):
        assert part.count.item() == 0 or part.shift.item() == 0.0  # sums about 0, as those versions kept them
        del part.__dict__["_pinned"]
        part.__dict__["_shifts"] = False
        part._defaults["shift"] = torch.zeros_like(part._defaults["shift"])
        part.shift.fill_(0.0)
    ring = metric._ring
    ring.defaults["shift"] = torch.zeros_like(ring.defaults["shift"])
    if ring.count == 0:
        ring.back["shift"] = torch.zeros_like(ring.back["shift"])
    del metric.__dict__["_pinned_states"]
    del metric.__dict__["_raw_states"]  # nor raw states (see _as_before_raw_rows), in the ring neither
    del ring.__dict__["raw"], ring.__dict__["legacy"]
    return pickle.loads(pickle.dumps(metric))


@pytest.mark.parametrize("offset", [1e9, -1e9])
@pytest.mark.parametrize("held", [False, True])
def test_windowed_distribution_old_pickle_chooses_its_shift_after_reset(held, offset):
    """Bug: a ``Windowed(Distribution)`` pickled by a version that kept the sums about 0 (``_shifts=False``) loaded
    pinned, with its shift's default and its ring's identity still 0: after ``reset()`` (or loaded empty) it stayed
    at shift 0, so 1e9 + N(0, 3) had a ``nan`` std (and the ring's 0 won ``max`` over a -1e9 shift). Such a pickle
    now keeps the values it holds (about 0) and, once reset or loaded empty, chooses its shift from its first values
    as a current one does. References: numpy's mean and std (ddof=1) of the values."""
    rng = np.random.default_rng(12)
    metric = _as_before_raw_rows(Windowed(Distribution(percentiles=(50.0,)), window_size=40))
    small = [np.array([-1.0, 1.0])] + [rng.normal(5.0, 2.0, int(rng.integers(2, 9))) for _ in range(6)]
    if held:  # a first batch of both signs is summed about 0: what those versions held
        for batch in small:
            metric.update(torch.from_numpy(batch))
    loaded = _pickled_as_before_the_window_kept_a_shift(metric)
    if held:
        out = loaded.compute()
        np.testing.assert_allclose(out["lifetime"]["std"].item(), np.concatenate(small).std(ddof=1), rtol=1e-12)
        assert loaded.lifetime.shift.item() == 0.0
        loaded.reset()
    assert loaded.lifetime.shift.item() == loaded.window.shift.item() == -math.inf
    batches = [offset + rng.normal(0.0, 3.0, int(rng.integers(5, 15))) for _ in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is undefined: no cancelled std
        for i, batch in enumerate(batches):
            loaded.update(torch.from_numpy(batch))
            out = loaded.compute()
            lifetime = np.concatenate(batches[: i + 1])
            window = _window_of([torch.from_numpy(b) for b in batches[: i + 1]], 40).numpy()
            for part, x in (("lifetime", lifetime), ("window", window)):
                np.testing.assert_allclose(out[part]["std"].item(), x.std(ddof=1), rtol=1e-9, err_msg=part)
                np.testing.assert_allclose(out[part]["mean"].item(), x.mean(), rtol=1e-15, err_msg=part)
    assert loaded.lifetime.shift.item() == batches[0][0]
    assert loaded.window.shift.item() == window[0]  # a value of its own (its oldest update's first)


def _two_pass_std(x):
    """``(std, mean)`` (``ddof=1``) by two ``math.fsum`` passes: the reference without cancellation."""
    mean = math.fsum(x) / x.size
    return math.sqrt(math.fsum((x - mean) ** 2) / (x.size - 1)), mean


def test_windowed_distribution_lifetime_keeps_the_one_update_std_error():
    """The lifetime's sums are added compensated (as Distribution's own update does), not by the plain fold.

    10,000 updates of 8 values at mean 1e5, std 1: the documented bound 1e-16 (mean/std)^2 = 1e-6
    relative; the plain fold of the lifetime was off by 1.9e-5. The window (the newest 100
    updates) is a fresh, uncompensated sum over its updates: its error grows with their number
    (documented), not with the run's. References: two-pass ``math.fsum``.
    """
    rows = np.random.default_rng(0).normal(1e5, 1.0, (10000, 8))
    metric = Windowed(Distribution(percentiles=(50.0,)), window_size=800)
    for row in rows:
        metric.update(torch.from_numpy(row))
    out = metric.compute()
    for part, data, updates in (("lifetime", rows.ravel(), 1), ("window", rows[-100:].ravel(), 100)):
        std, mean = _two_pass_std(data)
        assert abs(out[part]["std"].item() - std) <= updates * 1e-16 * (mean / std) ** 2 * std, part
        assert abs(out[part]["mean"].item() - mean) <= 1e-15 * mean, part


def test_windowed_distribution_checkpoint_without_compensations_loads():
    """A Windowed(Distribution) checkpoint written before the compensation states (ring too) resumes exactly."""
    rng = np.random.default_rng(4)
    batches = [torch.tensor(rng.normal(1e3, 3.0, int(rng.integers(1, 20)))) for _ in range(30)]
    metric = Windowed(Distribution(), window_size=50)
    for batch in batches[:20]:
        metric.update(batch)
    names = (*Distribution._compensated_sums, "scaled_sums")  # states added since
    old = {k: v for k, v in metric.state_dict().items() if not k.endswith(names)}
    ring = old["_extra_state"] = dict(old["_extra_state"])
    for part in ("rings", "back"):
        ring[part] = {n: v for n, v in ring[part].items() if n not in names}
    again = Windowed(Distribution(), window_size=50)
    again.load_state_dict(old)  # strict: the compensations are derived as zeros
    for batch in batches[20:]:
        metric.update(batch)
        again.update(batch)
    resumed, uninterrupted = again.compute(), metric.compute()
    for part in ("lifetime", "window"):
        for key, value in uninterrupted[part].items():
            if key != "std":  # the rounding the old sums had collected stays in them (20 updates' worth)
                torch.testing.assert_close(resumed[part][key], value, rtol=1e-14, atol=0)
    torch.testing.assert_close(resumed["window"]["std"], uninterrupted["window"]["std"], rtol=1e-14, atol=0)
    std, mean = _two_pass_std(torch.cat(batches).numpy())
    assert abs(resumed["lifetime"]["std"].item() - std) <= 20 * 1e-16 * (mean / std) ** 2 * std


def _storages(chunks):
    return {chunk.untyped_storage().data_ptr() for chunk in chunks}


def test_exact_window_shares_the_lifetime_storage_and_the_lifetime_list_stays_short():
    """An exact window's chunks are the lifetime's own; the lifetime list is a plain AUC's plus the window's.

    2 tasks, batches of 256 (512-element chunks, 64 of which join into a large one), a window of
    10 updates: the lifetime joined its newest 64 chunks, window ones included, into a copy the
    window did not share (about half the window stored twice), and each joined chunk blocked the
    next join, leaving one list entry per 2 updates (670 after 1,300 updates; a plain AUC: 40).
    Values: scikit-learn over all the samples and over the window's.
    """
    g = torch.Generator().manual_seed(5)
    metric, plain = Windowed(tmx.AUC(num_tasks=2), window_size=2560), tmx.AUC(num_tasks=2)
    preds, target = [], []
    for _ in range(1300):
        p = torch.rand(2, 256, generator=g)
        y = (torch.rand(2, 256, generator=g) < p).float()
        metric.update(p, y)
        plain.update(p, y)
        preds.append(p)
        target.append(y)
    life, ring = metric.lifetime, metric._ring
    for name in ("preds", "signed_weights"):
        window_chunks = ring.window_chunks(name)
        assert sum(c.numel() for c in window_chunks) == 2 * 2560
        assert _storages(window_chunks) <= _storages(getattr(life, name))  # nothing stored twice
        assert len(getattr(life, name)) <= len(getattr(plain, name)) + ring.num_chunks[name]
    p, y = torch.cat(preds, 1).numpy(), torch.cat(target, 1).numpy()
    value = metric.compute()
    for part, cols in (("lifetime", slice(None)), ("window", slice(-2560, None))):
        want = [skm.roc_auc_score(y[t, cols], p[t, cols]) for t in range(2)]
        np.testing.assert_allclose(value[part].numpy(), want, rtol=1e-6)


def _one_sample_run(metric, n, seed, sizes=(1,)):
    g = torch.Generator().manual_seed(seed)
    preds, target = [], []
    for i in range(n):
        b = sizes[i % len(sizes)]
        p = torch.rand(b, generator=g)
        y = (torch.rand(b, generator=g) < p).float()
        metric.update(p, y)
        preds.append(p)
        target.append(y)
    return torch.cat(preds).numpy(), torch.cat(target).numpy()


def test_exact_window_of_one_sample_updates_holds_few_tensors():
    """5,000 one-sample updates into an exact AUC window of 3,000: the window held one chunk per update
    per list state (3,000 tensors each, ~2 KB apiece, and compute/state_dict walking all of them);
    its small updates are now joined into segments (64 at a time, the lifetime's rule), which the
    lifetime shares. Values: scikit-learn over the lifetime's and the window's samples."""
    metric, plain = Windowed(tmx.AUC(), window_size=3000), tmx.AUC()
    p, y = _one_sample_run(metric, 5000, 11)
    _one_sample_run(plain, 5000, 11)
    life, ring = metric.lifetime, metric._ring
    for name in ring.list_names:
        window_chunks = ring.window_chunks(name)
        assert len(window_chunks) <= 2 * 64, (name, len(window_chunks))
        assert len(getattr(metric.window, name)) == len(window_chunks)
        assert sum(c.shape[0] for c in window_chunks) == 3000
        assert _storages(window_chunks) <= _storages(getattr(life, name))  # the lifetime's own, not a copy
        assert len(getattr(life, name)) <= len(getattr(plain, name)) + len(window_chunks)
    value = metric.compute()
    assert value["lifetime"].item() == pytest.approx(skm.roc_auc_score(y, p), rel=1e-9)
    assert value["window"].item() == pytest.approx(skm.roc_auc_score(y[-3000:], p[-3000:]), rel=1e-9)


def _grouped_auc_reference(y, p, groups):
    """Mean of scikit-learn's ROC AUC over the groups that hold both classes."""
    values = [skm.roc_auc_score(y[groups == g], p[groups == g]) for g in np.unique(groups)]
    return np.mean([v for g, v in zip(np.unique(groups), values, strict=True) if 0 < y[groups == g].mean() < 1])


@pytest.mark.parametrize("grouped", [False, True], ids=["AUC", "GroupedAUC"])
def test_exact_window_of_many_small_updates_keeps_the_lifetime_list_short_and_shares_it(grouped):
    """6,000 updates of 8 samples into an exact window of 1,000 (125 updates).

    The window's partly evicted oldest segment was joined, whole, with its newer ones again and
    again: that lifetime chunk grew to 32,768 elements, the window then joined a copy of its own
    (up to its whole 1,000 samples held by the window alone) and the lifetime's join point jumped
    by 63 chunks, leaving runs of 63 small chunks never joined (the lifetime list grew by ~6
    entries per 1,000 updates: 248 entries more than a plain metric's plus the window's).
    Checked every 250 updates: the lifetime list is a plain metric's (fed the same batches) plus
    the window's, within one join's 64 entries; every window chunk lies in a lifetime chunk's
    storage. Values: scikit-learn over all the samples and over the window's 1,000.
    """
    g = torch.Generator().manual_seed(21)
    make = tmx.GroupedAUC if grouped else tmx.AUC
    metric, plain = Windowed(make(), window_size=1000), make()
    preds, target, groups = [], [], []
    for step in range(1, 6001):
        p = torch.rand(8, generator=g)
        y = (torch.rand(8, generator=g) < p).float()
        args = (p, y, torch.randint(0, 5, (8,), generator=g)) if grouped else (p, y)
        metric.update(*args)
        plain.update(*args)
        preds.append(p)
        target.append(y)
        if grouped:
            groups.append(args[2])
        if step % 250:
            continue
        life = metric._child("lifetime")
        for name in metric._ring.list_names:
            lifetime_chunks, window_chunks = getattr(life, name), metric._ring.window_chunks(name)
            lengths = (len(lifetime_chunks), len(getattr(plain, name)), len(window_chunks))
            assert lengths[0] <= lengths[1] + lengths[2] + 64, (step, name, lengths)
            homes = [(c.untyped_storage().data_ptr(), c.untyped_storage().nbytes()) for c in lifetime_chunks]
            for chunk in window_chunks:
                start = chunk.data_ptr()
                last = sum((size - 1) * stride for size, stride in zip(chunk.shape, chunk.stride(), strict=True))
                stop = start + (last + 1) * chunk.element_size()
                assert any(a <= start and stop <= a + n for a, n in homes), (step, name)  # not held twice
    p, y = torch.cat(preds).numpy(), torch.cat(target).numpy()
    value = metric.compute()
    if grouped:
        gr = torch.cat(groups).numpy()
        assert value["lifetime"].item() == pytest.approx(_grouped_auc_reference(y, p, gr), rel=1e-9)
        assert value["window"].item() == pytest.approx(
            _grouped_auc_reference(y[-1000:], p[-1000:], gr[-1000:]), rel=1e-9
        )
    else:
        assert value["lifetime"].item() == pytest.approx(skm.roc_auc_score(y, p), rel=1e-9)
        assert value["window"].item() == pytest.approx(skm.roc_auc_score(y[-1000:], p[-1000:]), rel=1e-9)


def test_exact_window_joins_the_small_chunks_that_a_large_batch_evicts_at_once():
    """40 one-sample updates, then a batch of 40,000 (a large chunk, evicting the 40 at once), 34 times.

    The lifetime joins its chunks before the window's 64 at a time, looking just before the
    window's: the runs of 40 small chunks between two large ones were never joined (one list
    entry per update, as a plain AUC keeps). They are joined once the chunks before the window's
    have doubled; values are scikit-learn's over all the samples and the window's 100.
    """
    g = torch.Generator().manual_seed(22)
    metric = Windowed(tmx.AUC(), window_size=100)
    preds, target = [], []
    for step in range(34 * 41):
        b = 40_000 if step % 41 == 40 else 1
        p = torch.rand(b, generator=g)
        y = (torch.rand(b, generator=g) < p).float()
        metric.update(p, y)
        preds.append(p)
        target.append(y)
    life = metric._child("lifetime")
    for name in metric._ring.list_names:
        # per 41 updates: the large chunk and at most two of small ones, plus one doubling's 128
        assert len(getattr(life, name)) <= 3 * 34 + 2 * 64 + metric._ring.num_chunks[name], name
    p, y = torch.cat(preds).numpy(), torch.cat(target).numpy()
    value = metric.compute()
    assert value["lifetime"].item() == pytest.approx(skm.roc_auc_score(y, p), rel=1e-9)
    assert value["window"].item() == pytest.approx(skm.roc_auc_score(y[-100:], p[-100:]), rel=1e-9)


@pytest.mark.parametrize("max_updates", [None, 700])
def test_exact_window_of_joined_updates_evicts_update_by_update_and_resumes(max_updates):
    """Updates of 1 to 3 samples: joined segments lose their oldest updates one at a time (the window
    rule, and ``max_updates``), through a ``state_dict`` resume mid-window; scikit-learn over the kept samples."""
    sizes = (1, 3, 2, 1, 1, 2)
    metric = Windowed(tmx.AUC(), window_size=1001, max_updates=max_updates)
    p, y = _one_sample_run(metric, 2500, 12, sizes)
    resumed = Windowed(tmx.AUC(), window_size=1001, max_updates=max_updates)
    resumed.load_state_dict(copy.deepcopy(metric.state_dict()))
    for name in resumed._ring.list_names:
        assert len(resumed._ring.window_chunks(name)) <= 2 * 64
    g = torch.Generator().manual_seed(13)
    later_p, later_y, updates = [], [], [sizes[i % len(sizes)] for i in range(2500)]
    for step in range(300):
        b = 1 + step % 3
        q = torch.rand(b, generator=g)
        t = (torch.rand(b, generator=g) < q).float()
        for m in (metric, resumed):
            m.update(q, t)
        later_p.append(q)
        later_y.append(t)
        updates.append(b)
        if step % 37 == 0 or step == 299:
            allp = np.concatenate([p, torch.cat(later_p).numpy()])
            ally = np.concatenate([y, torch.cat(later_y).numpy()])
            kept_updates = updates if max_updates is None else updates[-max_updates:]
            kept = W.kept_samples(kept_updates, 1001)
            want = skm.roc_auc_score(ally[-kept:], allp[-kept:])
            for m in (metric, resumed):
                assert m.compute()["window"].item() == pytest.approx(want, rel=1e-9)
                assert sum(c.shape[0] for c in m._ring.window_chunks("preds")) == kept


def test_exact_window_checkpoint_of_one_chunk_per_update_loads_joined(monkeypatch):
    """A ring saved one segment per update (earlier versions: no ``spans``/``rows``) loads, joined into
    few tensors, and resumes exactly: scikit-learn over the samples the window keeps."""
    from torchmetrics_ext.wrappers._ring import StateRing

    with monkeypatch.context() as patch:
        patch.setattr(StateRing, "join_newest", lambda self, flat=None, base=None: None)
        old = Windowed(tmx.AUC(), window_size=2000)
        p, y = _one_sample_run(old, 2500, 14)
        saved = old.state_dict()
    ring = dict(saved["_extra_state"])
    assert all(len(segments) == 2000 for segments in ring["chunks"].values())
    del ring["spans"], ring["rows"]
    saved["_extra_state"] = ring
    metric = Windowed(tmx.AUC(), window_size=2000)
    metric.load_state_dict(saved)
    for name in metric._ring.list_names:
        assert len(metric._ring.window_chunks(name)) <= 8
    assert metric.compute()["window"].item() == pytest.approx(skm.roc_auc_score(y[-2000:], p[-2000:]), rel=1e-9)
    q, t = _one_sample_run(metric, 700, 15)
    allp, ally = np.concatenate([p, q]), np.concatenate([y, t])
    assert metric.compute()["window"].item() == pytest.approx(skm.roc_auc_score(ally[-2000:], allp[-2000:]), rel=1e-9)


def test_exact_flat_ranking_window_of_one_row_updates_holds_few_tensors():
    """Flat NDCG rows, one per update: the window's four list states hold a few joined tensors, aligned,
    and its value is scikit-learn's NDCG over the rows it keeps (every query whole: 4 rows per query)."""
    g = torch.Generator().manual_seed(16)
    metric = Windowed(tmx.NDCG(), window_size=2000)
    preds, target = torch.rand(4000, generator=g), torch.randint(0, 4, (4000,), generator=g)
    indexes = torch.arange(4000) // 4
    for i in range(4000):
        metric.update(preds[i : i + 1], target[i : i + 1], indexes=indexes[i : i + 1])
    lengths = {len(metric._ring.window_chunks(name)) for name in metric._ring.list_names}
    assert len(lengths) == 1 and lengths.pop() <= 2 * 64
    rel, score = target[-2000:].view(-1, 4), preds[-2000:].view(-1, 4)
    some = rel.sum(1) > 0  # queries without a relevant row are left out
    want = skm.ndcg_score(rel[some].numpy(), score[some].numpy())
    assert metric.compute()["window"].item() == pytest.approx(want, rel=1e-9)


def test_join_small_tails_joins_before_the_kept_chunks_at_every_append():
    """Called after each append: a list of 768-element chunks keeps one entry per 64 appends (was one per 2)."""
    from torchmetrics_ext.wrappers._ring import join_small_tails

    a, b = [], []
    for i in range(4096):
        a.append(torch.full((768,), float(i)))
        b.append(torch.full((768,), -float(i)))
        join_small_tails([a, b], keep=5)
        assert len(a) == len(b)
    assert len(a) <= 64 + 5 + 63
    assert all(c.numel() == 768 for c in a[-5:])  # the kept ones stay as they were
    torch.testing.assert_close(torch.cat(a), torch.arange(4096.0).repeat_interleave(768))
    tail = [torch.zeros(3) for _ in range(70)]
    join_small_tails([tail], keep=3, kept_first=tail[-4])  # a kept chunk before the last 3: no join
    assert len(tail) == 70
    join_small_tails([tail], keep=3, kept_first=tail[-3])
    assert len(tail) == 1 + 3 + 3 and tail[3].shape == (192,)


def test_join_small_runs_leaves_the_kept_and_frozen_chunks_alone():
    """``keep`` newest chunks and ``frozen`` ones end runs and stay the same objects; the rest join in order."""
    from torchmetrics_ext.utilities.chunks import join_small_runs

    chunks = [torch.full((3,), float(i)) for i in range(100)]
    chunks[50] = torch.zeros(40_000)  # a large chunk ends a run
    a, b = list(chunks), [-c for c in chunks]
    kept, frozen = a[-5:], a[20]
    join_small_runs([a, b], frozen=[frozen], keep=5)
    assert len(a) == len(b) == 1 + 1 + 1 + 1 + 1 + 5  # 0-19, 20, 21-49, 50, 51-94, the 5 kept
    assert all(x is y for x, y in zip(a[-5:], kept, strict=True)) and a[1] is frozen
    torch.testing.assert_close(torch.cat(a), torch.cat(chunks))
    torch.testing.assert_close(torch.cat(b), -torch.cat(chunks))
    short = [torch.zeros(3) for _ in range(4)]
    join_small_runs([short], keep=3)  # one chunk before the kept ones: nothing to join
    assert len(short) == 4


def _kept_tail(seen, window):
    kept, total = [], 0
    for batch in reversed(seen):
        if total + len(batch) > window:
            break
        kept.append(batch)
        total += len(batch)
    return torch.cat(kept[::-1])


def test_window_of_a_torchmetrics_metric():
    """Any TorchMetrics metric with sum/cat states: samples on the last axis of its first tensor."""
    rng = np.random.default_rng(1)
    metric = Windowed(MeanSquaredError(), window_size=30)
    preds, target = _values(200, rng), _values(200, rng)
    edges = [0, 7, 19, 33, 34, 80, 95, 111, 140, 200]
    for lo, hi in zip(edges[:-1], edges[1:]):
        metric.update(preds[lo:hi], target[lo:hi])
        kept = W.kept_ranges(list(zip(edges[:-1], edges[1:]))[: edges.index(hi)], 30)
        idx = torch.cat([torch.arange(a, b) for a, b in kept])
        value = metric.compute()
        np.testing.assert_allclose(value["window"], skm.mean_squared_error(target[idx], preds[idx]), rtol=1e-6)
        np.testing.assert_allclose(value["lifetime"], skm.mean_squared_error(target[:hi], preds[:hi]), rtol=1e-6)


def test_long_run_has_no_drift_or_cancellation():
    """8k updates whose first half weighs 1e15 times the second: the window stays exact (nothing is subtracted)."""
    rng = np.random.default_rng(2)
    metric = Windowed(tmx.Calibration(), window_size=64)
    sizes = rng.integers(1, 9, size=8_000)
    total = int(sizes.sum())
    preds, target = rng.random(total), (rng.random(total) < 0.5).astype(np.float64)
    weights = (rng.random(total) + 0.5) * np.where(np.arange(total) < total // 2, 1e9, 1e-6)
    edges = np.cumsum([0, *sizes]).tolist()
    bounds = list(zip(edges[:-1], edges[1:]))
    for i, (lo, hi) in enumerate(bounds):
        metric.update(*(torch.tensor(x[lo:hi]) for x in (preds, target, weights)))
        if i % 1999 == 0 or i == len(bounds) - 1:
            idx = W._indices(W.kept_ranges(bounds[: i + 1], 64)).numpy()
            expected = math.fsum(weights[idx] * preds[idx]) / math.fsum(weights[idx] * target[idx])
            np.testing.assert_allclose(metric.compute()["window"].item(), expected, rtol=1e-13)


def _capped_ranges(bounds, window, max_updates):
    """TorchRec's WindowBuffer rule in numpy terms: the newest updates, at most ``max_updates`` of them,
    whose sizes sum to at most ``window`` (the newest always; one larger than the window keeps its
    newest ``window`` samples, the package's rule for a single update)."""
    sizes = np.array([hi - lo for lo, hi in bounds])
    nonempty = [b for b, n in zip(bounds, sizes) if n > 0]
    if not nonempty:
        return []
    lo, hi = nonempty[-1]
    if hi - lo > window:
        return [(hi - window, hi)]
    newest_sums = np.cumsum([hi - lo for lo, hi in nonempty[::-1]])
    keep = min(max_updates, int(np.searchsorted(newest_sums, window, side="right")))
    return nonempty[len(nonempty) - keep :]


def _idx(ranges):
    return np.concatenate([np.arange(lo, hi) for lo, hi in ranges]) if ranges else np.zeros(0, dtype=np.int64)


def test_max_updates_1300_updates_of_two_samples_in_a_window_of_5000():
    """The hunt's case: without a limit the window holds all 2600 samples; TorchRec's 1000-update limit
    keeps the newest 1000 updates (2000 samples), so the first 300 clicks have left it."""
    labels = np.repeat(np.where(np.arange(1300) < 300, 1.0, 0.0), 2)
    capped, plain = Windowed(tmx.CTR(), 5000, max_updates=1000), Windowed(tmx.CTR(), 5000)
    for i in range(1300):
        for metric in (capped, plain):
            metric.update(torch.full((2,), 0.5), torch.tensor(labels[2 * i : 2 * i + 2]))
    assert capped.compute()["window"].item() == labels[-2000:].mean() == 0.0
    assert plain.compute()["window"].item() == pytest.approx(labels.mean())  # 600 / 2600
    assert capped.compute()["lifetime"].item() == pytest.approx(labels.mean())  # the lifetime is unchanged


@pytest.mark.parametrize("kind", ["sums", "binned", "exact"])
def test_max_updates_keeps_the_newest_updates_by_both_rules(kind):
    """Ring (sums), binned histogram and exact (cat) windows: numpy/sklearn over the samples the rule keeps,
    after every update, through a checkpoint resume, a deepcopy and a reset."""
    rng = np.random.default_rng(7)
    window, max_updates = 40, 6
    sizes = [int(s) for s in rng.integers(1, 9, size=60)]
    sizes[5], sizes[30] = 0, 55  # an empty update (takes no room, no count) and one larger than the window
    edges = np.cumsum([0, *sizes]).tolist()
    bounds = list(zip(edges[:-1], edges[1:]))
    n = edges[-1]
    preds = rng.random(n).astype(np.float32)
    target = (rng.random(n) < preds).astype(np.float64)
    weights = rng.integers(1, 9, size=n) / 4.0  # exact in float32 (an exact AUC keeps float32 weights)

    def build():
        if kind == "sums":
            return Windowed(tmx.CTR(), window, max_updates=max_updates)
        if kind == "binned":
            return Windowed(tmx.AUC(num_bins=50, bin_space="probability"), window, max_updates=max_updates)
        return Windowed(tmx.AUC(), window, max_updates=max_updates)

    def expected(idx):
        if kind == "sums":
            return np.average(target[idx], weights=weights[idx])
        scores = np.floor(preds[idx] * np.float32(50)) if kind == "binned" else preds[idx]
        return skm.roc_auc_score(target[idx], scores, sample_weight=weights[idx])

    metric = build()
    binding = 0  # updates after which the limit, not the sample rule, decides what the window holds
    for i, (lo, hi) in enumerate(bounds):
        metric.update(*(torch.tensor(x[lo:hi]) for x in (preds, target, weights)))
        if i == 20:  # resume mid-window from a checkpoint, carry on with the copy
            resumed = build()
            resumed.load_state_dict(metric.state_dict())
            metric = copy.deepcopy(resumed)
        kept = _capped_ranges(bounds[: i + 1], window, max_updates)
        binding += kept != _capped_ranges(bounds[: i + 1], window, len(bounds))
        idx = _idx(kept)
        if len(np.unique(target[idx])) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = metric.compute()
        np.testing.assert_allclose(value["window"].item(), expected(idx), rtol=1e-9, err_msg=f"update {i}")
        np.testing.assert_allclose(value["lifetime"].item(), expected(np.arange(hi)), rtol=1e-9)
    assert binding > 20
    metric.reset()
    for lo, hi in bounds[-10:]:  # after a reset the limit holds as before
        metric.update(*(torch.tensor(x[lo:hi]) for x in (preds, target, weights)))
    idx = _idx(_capped_ranges(bounds[-10:], window, max_updates))
    np.testing.assert_allclose(metric.compute()["window"].item(), expected(idx), rtol=1e-9)


def test_max_updates_is_checked_and_part_of_the_checkpoint_settings():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_updates"):
            Windowed(tmx.CTR(), 10, max_updates=bad)
    capped = Windowed(tmx.CTR(), 10, max_updates=3)
    capped.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    for other in (Windowed(tmx.CTR(), 10), Windowed(tmx.CTR(), 10, max_updates=4)):
        with pytest.raises(RuntimeError, match="setting mismatch for max_updates"):
            other.load_state_dict(capped.state_dict())


@pytest.mark.parametrize(
    "make, reference",
    [
        (tmx.CTR, lambda p, y: y.mean()),
        (tmx.AUC, lambda p, y: skm.roc_auc_score(y, p)),
        (functools.partial(tmx.AUC, num_bins=1_000_000), lambda p, y: skm.roc_auc_score(y, p)),
    ],
    ids=["CTR", "exact-AUC", "binned-AUC"],
)
def test_a_ring_of_more_samples_than_the_window_keeps_is_evicted_at_load(make, reference):
    """A checkpoint without its ``_metadata`` (a plain dict of the entries, as prefix-stripping code builds) records
    no ``window_size``: a window of 40 loaded into one of 16 kept its 32 samples until the next update, so a
    ``compute`` right after the load reported a window twice ``window_size``. The load now keeps the newest
    updates the window keeps, as the next update would."""
    g = torch.Generator().manual_seed(5)
    preds = torch.rand(48, generator=g, dtype=torch.float64)
    target = torch.tensor([1, 0] * 24, dtype=torch.float64)[torch.randperm(48, generator=g)]
    saved = Windowed(make(), window_size=40)
    saved.persistent(True)
    for lo in range(0, 32, 8):
        saved.update(preds[lo : lo + 8], target[lo : lo + 8])
    loaded = Windowed(make(), window_size=16)
    loaded.persistent(True)
    loaded.load_state_dict(dict(saved.state_dict()))  # no `_metadata`: nothing records the window of 40
    for hi in (32, 40):  # right after the load, and after one more update of 8
        if hi > 32:
            loaded.update(preds[32:hi], target[32:hi])
        values = loaded.compute()
        p, y = preds.numpy(), target.numpy()
        np.testing.assert_allclose(values["window"].item(), reference(p[hi - 16 : hi], y[hi - 16 : hi]), rtol=1e-5)
        np.testing.assert_allclose(values["lifetime"].item(), reference(p[:hi], y[:hi]), rtol=1e-5)


def _same_entries(a, b):
    """Whether two checkpoint entries are equal (tensors by value and dtype, containers entry by entry)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_entries(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_entries, a, b))
    return a == b


def test_a_plain_dict_of_a_smaller_window_cannot_be_told_from_one_of_this_window_and_fills_from_the_next_updates():
    """Why a window loaded from a plain dict (no ``_metadata``) of a smaller window is not warned for.

    The same 11 samples, as updates of 5, 1 and 5 samples into a window of 10 and as six single samples and 5
    into a window of 6, give equal checkpoint entries: both rings keep the updates of 1 and 5 samples, in the
    same layout, over equal lifetimes. Loaded into a window of 10 the first is exact and the second holds 6
    samples where an uninterrupted run of its updates holds 10; nothing in the entries tells which. The window
    then fills from the next updates by the window rule (NumPy references over the newest samples).
    """
    preds = torch.arange(1, 16, dtype=torch.float64) / 16  # dyadic: every sum is exact, in any order
    target = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1], dtype=torch.float64)

    def run(window_size, sizes):
        metric = Windowed(tmx.Calibration(), window_size=window_size)
        bounds = np.cumsum([0, *sizes])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            metric.update(preds[lo:hi], target[lo:hi])
        return metric

    same = dict(run(10, [5, 1, 5]).state_dict())
    smaller = dict(run(6, [1] * 6 + [5]).state_dict())
    assert _same_entries(same, smaller)
    assert smaller["_extra_state"]["sizes"] == [1, 5]  # what a window of 10 keeps of the (5, 1, 5) updates too
    assert run(10, [1] * 6 + [5])._ring.sizes == collections.deque([1, 1, 1, 1, 1, 5])  # 10 samples, not 6
    loaded = Windowed(tmx.Calibration(), window_size=10)
    loaded.load_state_dict(smaller)
    p, y = preds.numpy(), target.numpy()
    for hi, newest in [(11, 6), (13, 8), (15, 10)]:  # right after the load, then updates of 2 samples
        if hi > 11:
            loaded.update(preds[hi - 2 : hi], target[hi - 2 : hi])
        values = loaded.compute()
        window = slice(hi - newest, hi)
        np.testing.assert_allclose(values["window"].item(), p[window].sum() / y[window].sum(), rtol=1e-12)
        np.testing.assert_allclose(values["lifetime"].item(), p[:hi].sum() / y[:hi].sum(), rtol=1e-12)


# ----------------------------------------------------------------------------- bad input


class _MeanState(Metric):
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("avg", torch.tensor(0.0), dist_reduce_fx="mean")

    def update(self, x):
        self.avg += x.mean()

    def compute(self):
        return self.avg


class _OffsetSum(_MeanState):
    def __init__(self):
        Metric.__init__(self)
        self.add_state("total", torch.tensor(1.0), dist_reduce_fx="sum")


class _FullState(_MeanState):
    full_state_update = True


class _NoState(Metric):
    full_state_update = False

    def update(self, x):
        pass

    def compute(self):
        return torch.tensor(0.0)


@pytest.mark.parametrize(
    "factory, exc, match",
    [
        (lambda: Windowed(tmx.CTR(), 0), ValueError, r"`window_size` to be a positive integer .*got 0"),
        (lambda: Windowed(tmx.CTR(), -5), ValueError, r"`window_size` .*got -5"),
        (lambda: Windowed(tmx.CTR(), 10.0), ValueError, r"`window_size` .*got 10.0"),
        (lambda: Windowed(tmx.CTR(), True), ValueError, r"`window_size` .*got True"),
        (lambda: Windowed(tmx.CTR(), "100"), ValueError, r"`window_size` .*got '100'"),
        (
            lambda: Windowed(tmx.NormalizedEntropy, 10),
            TypeError,
            r"`metric` to be a torchmetrics.Metric instance, got the class NormalizedEntropy",
        ),
        (lambda: Windowed(None, 10), TypeError, r"`metric` .*got NoneType"),
        (lambda: Windowed(_MeanState(), 10), ValueError, r"state `avg` reduces with dim_zero_mean"),
        (lambda: Windowed(_OffsetSum(), 10), ValueError, r"sum state `total` to start at zero"),
        (lambda: Windowed(_FullState(), 10), ValueError, r"full_state_update"),
        (
            lambda: Windowed(Windowed(tmx.CTR(), 5), 10),
            ValueError,
            r"Windowed cannot wrap Windowed: a Windowed cannot be wrapped again .*Wrap the inner metric once",
        ),
        (lambda: Windowed(_NoState(), 10), ValueError, r"_NoState declares none: .*wrap those metrics instead"),
    ],
)
def test_bad_arguments(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


def _snapshot(metric: Windowed):
    return {
        "lifetime": copy.deepcopy(metric.lifetime.metric_state),
        "window": copy.deepcopy(metric.window.metric_state),
        "ring": copy.deepcopy(metric.get_extra_state()),
        "counts": (metric.lifetime._update_count, metric.window._update_count),
    }


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize(
    "cid, bad, exc, match",
    [
        ("pointwise:ne-3task-w", {"preds": torch.full((3, 5), 1.5)}, ValueError, "preds"),
        ("pointwise:ne-3task-w", {"preds": torch.rand(2, 5)}, ValueError, r"`preds` of shape"),
        ("pointwise:mse-3task-w", {"weights": -torch.ones(3, 5)}, ValueError, "weights"),
        ("auc:auc-3task-w", {"target": torch.full((3, 5), 2)}, ValueError, "target"),
        ("auc:gauc-w", {"groups": torch.zeros(4, dtype=torch.int64)}, ValueError, "groups"),
        ("ranking:flat-all-w", {"preds": torch.tensor([0.1, float("nan"), 0.3, 0.4, 0.5])}, ValueError, "preds"),
        ("ranking:multiclass@3-ties-w", {"target": torch.full((5,), 9)}, ValueError, "target"),
    ],
)
def test_rejected_batch_changes_nothing(cid, bad, exc, match):
    """A bad batch raises from update and forward and leaves lifetime, window and ring exactly as they were."""
    case = CASES[cid]
    data = case.make_data(0)
    window = W.default_window(case, data)
    metric = Windowed(case.metric(), window)
    for lo, hi in W.window_bounds(H.num_samples(data, case.sample_axis), np.random.default_rng(0), window, 10)[:6]:
        metric.update(**H.take(data, slice(lo, hi), case.sample_axis))
    good = H.take(data, slice(0, 5), case.sample_axis)
    before = _snapshot(metric)
    for call in (metric.update, metric.forward):
        with pytest.raises(exc, match=match):
            call(**dict(good, **bad))
        assert _same(_snapshot(metric), before)


def test_window_smaller_than_world_size_is_rejected_under_ddp(ddp_pool):
    for message in ddp_pool.run(_tiny_window_job):
        assert "at least the world size (2)" in message


def _tiny_window_job(rank, world_size):
    metric = Windowed(tmx.CTR(), window_size=1)
    try:
        metric.update(torch.tensor([0.5]), torch.tensor([1]))
    except ValueError as err:
        return str(err)
    return "accepted"


test_window_smaller_than_world_size_is_rejected_under_ddp = pytest.mark.ddp(
    test_window_smaller_than_world_size_is_rejected_under_ddp
)


def _tiny_window_one_rank_with_data_job(rank, world_size, call):
    """Rank 0 updates a sample; rank 1 an empty batch, or nothing before ``compute``/``sync``."""
    metric = Windowed(tmx.CTR(), window_size=1)
    calls = {
        "update": metric.update,
        "forward": metric.forward,
        "compute": lambda *batch: metric.compute(),
        "sync": lambda *batch: metric.sync(),
    }
    batch = (
        (torch.tensor([0.5]), torch.tensor([1])) if rank == 0 else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    )
    first = metric.update if rank == 0 else calls[call]
    raised = []
    for step in (first, calls["compute"]):  # then a compute on every rank: no sync is left waiting
        try:
            step(*batch)
        except ValueError as err:
            raised.append(str(err))
    return raised, metric._update_count, len(metric._ring.sizes)


@pytest.mark.ddp
@pytest.mark.parametrize("call", ["update", "forward", "compute", "sync"])
def test_window_smaller_than_world_size_is_rejected_on_every_rank_whatever_its_batch(ddp_pool, call):
    """A rank with no data (an empty batch, or no update before compute/sync) refuses the window too, at the same
    call as the rank with data: it entered the next sync alone and waited there (timeout) before."""
    message = "Expected `window_size` (1) to be at least the world size (2)"
    for raised, updates, held in ddp_pool.run(_tiny_window_one_rank_with_data_job, call, timeout=60):
        assert len(raised) == 2 and all(message in m for m in raised)
        assert updates == 0 and held == 0  # the refused calls changed nothing


def _own_group_job(rank, world_size):
    """Each rank in a process group of its own: values over this rank's samples, window share of one rank."""
    import torch.distributed as dist

    groups = [dist.new_group([r]) for r in range(world_size)]  # every rank creates every group
    group = groups[rank]
    p = torch.full((4,), 0.5)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0]) if rank == 0 else torch.tensor([0.0, 0.0, 1.0, 0.0])
    inner = Windowed(tmx.CTR(process_group=group), window_size=3)  # the group on the wrapped metric
    outer = Windowed(tmx.CTR(), window_size=3, process_group=group)  # or on the wrapper
    module = tmx.RecMetricModule(["t"], {"ctr": tmx.CTR(process_group=group)}, window_size=3, throughput=False)
    for metric in (inner, outer):
        metric.update(p, y)
    module.update({"prediction": p, "label": y})
    return [
        {k: v.item() for k, v in inner.compute().items()},
        {k: v.item() for k, v in outer.compute().items()},
        {k: v.item() for k, v in module.compute().items()},
    ]


@pytest.mark.ddp
def test_windows_sync_over_the_wrapped_metrics_process_group(ddp_pool):
    """A process group (which cannot be deep-copied) reaches the window's copies; the share is the group's."""
    rank0, rank1 = ddp_pool.run(_own_group_job)
    # numpy by hand: mean label over all 4 samples, and over the newest 3 (window 3 // group size 1)
    assert rank0[:2] == [{"lifetime": 0.75, "window": 2 / 3}] * 2
    assert rank1[:2] == [{"lifetime": 0.25, "window": 1 / 3}] * 2
    assert rank0[2] == {"ctr/t": 0.75, "ctr/t/window": 2 / 3}
    assert rank1[2] == {"ctr/t": 0.25, "ctr/t/window": 1 / 3}


def test_a_wrapper_group_other_than_the_metrics_is_rejected():
    class Group:  # any object stands for a group here: it is only compared
        pass

    with pytest.raises(ValueError, match="one process group"):
        Windowed(tmx.CTR(process_group=Group()), window_size=3, process_group=Group())


# ----------------------------------------------------------------------------- TorchMetrics sync options


def _two_ranks(calls=None):
    """TorchMetrics options that fake two ranks holding the same states: a sync doubles every sum.

    ``calls`` (a list) records one entry per gathered tensor.
    """

    def sync(tensor, group=None):
        if calls is not None:
            calls.append(tuple(tensor.shape))
        return [tensor, tensor]

    return {"dist_sync_fn": sync, "distributed_available_fn": lambda: True}


_NO_SYNC = {"sync_on_compute": False}


@pytest.mark.parametrize(
    ("metric_options", "wrapper_options", "synced"),
    [
        pytest.param("two", {}, True, id="metric-options"),
        pytest.param({}, "two", True, id="wrapper-options"),
        pytest.param("two", _NO_SYNC, False, id="wrapper-sync_on_compute=False"),
        pytest.param(_NO_SYNC, "two", False, id="metric-sync_on_compute=False-kept"),
        pytest.param(dict(_NO_SYNC, two=True), {"sync_on_compute": True}, True, id="wrapper-wins"),
    ],
)
def test_windowed_takes_its_own_sync_options_else_the_wrapped_metrics(metric_options, wrapper_options, synced):
    """Each TorchMetrics option is the wrapper's when given to it, else the wrapped metric's."""

    def options(spec):
        if spec == "two":
            return _two_ranks()
        spec = dict(spec)
        return {**spec, **_two_ranks()} if spec.pop("two", False) else spec

    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 4.0, 1.5], dtype=torch.float64)
    p = torch.full((7,), 0.5)
    metric = Windowed(tmx.SumWeights(**options(metric_options)), window_size=5, **options(wrapper_options))
    metric.update(p[:4], weights=w[:4])
    metric.update(p[4:], weights=w[4:])  # the window keeps this update only (4 + 3 > 5)
    factor = 2.0 if synced else 1.0  # by hand: two equal ranks sum to twice the local sums
    values = metric.compute()
    np.testing.assert_allclose(values["lifetime"].item(), factor * w.numpy().sum())
    np.testing.assert_allclose(values["window"].item(), factor * w[4:].numpy().sum())
    assert metric.sync_on_compute is synced
    assert metric.lifetime.sync_on_compute is metric.window.sync_on_compute is synced


@pytest.mark.parametrize("where", ["wrapper", "metric"])
@pytest.mark.parametrize("sync_on_compute", [True, False])
def test_windowed_forward_syncs_batch_values_with_dist_sync_on_step(where, sync_on_compute):
    """dist_sync_on_step (given to the wrapper or the wrapped metric): forward's lifetime and window
    batch values are synced, as TorchMetrics' own forward does; compute follows sync_on_compute."""
    calls = []
    step = {"dist_sync_on_step": True, "sync_on_compute": sync_on_compute, **_two_ranks(calls)}
    metric = Windowed(tmx.SumWeights(**step), 5) if where == "metric" else Windowed(tmx.SumWeights(), 5, **step)
    assert metric.dist_sync_on_step and not metric.lifetime.dist_sync_on_step  # the children never forward
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25, 4.0, 1.5, 2.5, 0.75, 1.25])
    weights, p = torch.tensor(w), torch.full((10,), 0.5)
    uncut = metric(p[:3], weights=weights[:3])
    uncut_calls = len(calls)
    cut = metric(p[3:], weights=weights[3:])  # 7 samples: the window keeps the newest 5
    # by hand: two equal ranks sum to twice the local sums
    np.testing.assert_allclose([uncut["lifetime"].item(), uncut["window"].item()], [2 * w[:3].sum()] * 2)
    np.testing.assert_allclose([cut["lifetime"].item(), cut["window"].item()], [2 * w[3:].sum(), 2 * w[5:].sum()])
    # the same collectives for a batch cut on this rank or not: other ranks (not cut) must match them
    assert uncut_calls == len(calls) - uncut_calls == 2
    factor = 2.0 if sync_on_compute else 1.0
    values = metric.compute()
    np.testing.assert_allclose(
        [values["lifetime"].item(), values["window"].item()], [factor * w.sum(), factor * w[5:].sum()]
    )


def test_windowed_binned_forward_syncs_every_rank_alike_with_dist_sync_on_step():
    """A binned AUC's window (histogram path) syncs both batch values on every forward, cut or not."""
    calls = []
    metric = Windowed(tmx.AUC(num_bins=20, bin_space="probability"), 4, dist_sync_on_step=True, **_two_ranks(calls))
    p = torch.tensor([0.12, 0.37, 0.62, 0.87, 0.22, 0.77, 0.47, 0.52])
    y = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1])
    uncut = metric(p[:3], y[:3])
    uncut_calls = len(calls)
    cut = metric(p[3:], y[3:])  # 5 samples: the window keeps the newest 4
    assert uncut_calls == len(calls) - uncut_calls > 0
    # sklearn: every score in its own bin, and a doubled histogram has the same AUC
    assert uncut["lifetime"].item() == pytest.approx(skm.roc_auc_score(y[:3], p[:3]))
    assert uncut["window"].item() == pytest.approx(skm.roc_auc_score(y[:3], p[:3]))
    assert cut["lifetime"].item() == pytest.approx(skm.roc_auc_score(y[3:], p[3:]))
    assert cut["window"].item() == pytest.approx(skm.roc_auc_score(y[4:], p[4:]))


@pytest.mark.parametrize("num_bins", [None, 10])
def test_forward_names_the_window_in_the_warning_of_an_undefined_kept_part(num_bins):
    """A batch larger than the window whose kept part holds one class: forward's window value is nan and
    its warning says "(window)", as compute's does (it read "AUC is undefined" beside a defined batch value)."""
    metric = Windowed(tmx.AUC() if num_bins is None else tmx.AUC(num_bins=num_bins, bin_space="probability"), 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = metric(torch.tensor([0.15, 0.35, 0.55, 0.75]), torch.tensor([0, 1, 1, 1]))
    assert values["lifetime"].item() == 1.0 and math.isnan(values["window"].item())
    messages = [str(w.message).split(":")[0] for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert messages == ["AUC (window) is undefined"]


def test_windowed_rejects_a_bad_sync_option_and_leaves_the_metric_alone():
    metric = tmx.CTR()
    with pytest.raises(ValueError, match="sync_on_compute"):
        Windowed(metric, window_size=3, sync_on_compute="no")
    with pytest.raises(ValueError, match="Unexpected keyword arguments: `sync_on_computes`"):
        Windowed(metric, window_size=3, sync_on_computes=False)
    assert metric.sync_on_compute is True and metric.dist_sync_fn is None


def test_a_misspelt_windowed_option_names_windowed_and_what_it_takes():
    """Windowed gave TorchMetrics' bare "Unexpected keyword arguments" (the metrics name themselves and their options)."""
    with pytest.raises(
        ValueError,
        match=r"^Unexpected keyword arguments: `max_update` for Windowed \(did you mean `max_updates`\?\)\. "
        r"Windowed takes metric, window_size, max_updates, and TorchMetrics' .*sync_on_compute",
    ):
        Windowed(tmx.CTR(), window_size=3, max_update=2)
    assert Windowed(tmx.CTR(), window_size=3, max_updates=2).max_updates == 2  # the suggestion is accepted


def _sync_options_job(rank, world_size):
    """Rank 0's batch is cut by its window share (3 of window 6), rank 1's is not."""
    p = torch.tensor([0.12, 0.37, 0.62, 0.87]) if rank == 0 else torch.tensor([0.22, 0.77])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0]) if rank == 0 else torch.tensor([0.0, 1.0])
    out = {}
    for where in ("wrapper", "metric"):
        local = (
            Windowed(tmx.CTR(), 6, sync_on_compute=False)
            if where == "wrapper"
            else Windowed(tmx.CTR(sync_on_compute=False), 6)
        )
        local.update(p, y)
        out[f"local-{where}"] = {k: v.item() for k, v in local.compute().items()}
        step = (
            Windowed(tmx.CTR(), 6, dist_sync_on_step=True)
            if where == "wrapper"
            else Windowed(tmx.CTR(dist_sync_on_step=True), 6)
        )
        out[f"step-{where}"] = {k: v.item() for k, v in step(p, y).items()}
        out[f"step-{where}-compute"] = {k: v.item() for k, v in step.compute().items()}
    auc = Windowed(tmx.AUC(num_bins=20, bin_space="probability"), 6, dist_sync_on_step=True)
    out["auc-step"] = {k: v.item() for k, v in auc(p, y).items()}
    return out


@pytest.mark.ddp
def test_windowed_sync_options_under_ddp(ddp_pool):
    """sync_on_compute=False gives each rank's own values; dist_sync_on_step syncs forward's batch values."""
    rank0, rank1 = ddp_pool.run(_sync_options_job)
    y0, y1 = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0])
    p0, p1 = np.array([0.12, 0.37, 0.62, 0.87]), np.array([0.22, 0.77])
    for where in ("wrapper", "metric"):  # numpy: the mean label of this rank's samples, and of its newest 3
        assert rank0[f"local-{where}"] == pytest.approx({"lifetime": y0.mean(), "window": y0[1:].mean()})
        assert rank1[f"local-{where}"] == pytest.approx({"lifetime": y1.mean(), "window": y1.mean()})
        synced = {"lifetime": np.r_[y0, y1].mean(), "window": np.r_[y0[1:], y1].mean()}
        for out in (rank0, rank1):
            assert out[f"step-{where}"] == pytest.approx(synced)
            assert out[f"step-{where}-compute"] == pytest.approx(synced)
    auc = {  # every score in its own bin: the binned AUC is the exact one
        "lifetime": skm.roc_auc_score(np.r_[y0, y1], np.r_[p0, p1]),
        "window": skm.roc_auc_score(np.r_[y0[1:], y1], np.r_[p0[1:], p1]),
    }
    assert rank0["auc-step"] == pytest.approx(auc) and rank1["auc-step"] == pytest.approx(auc)


def _manual_sync_job(rank, world_size):
    """sync_on_compute=False, then TorchMetrics' manual patterns: sync()/unsync(), sync() + compute(), sync_context()."""
    p = torch.tensor([0.12, 0.37, 0.62, 0.87]) if rank == 0 else torch.tensor([0.22, 0.77])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0]) if rank == 0 else torch.tensor([0.0, 1.0])
    out = {}
    for name, metric in (
        ("ctr", Windowed(tmx.CTR(), 6, sync_on_compute=False)),
        ("auc", Windowed(tmx.AUC(num_bins=20, bin_space="probability"), 6, sync_on_compute=False)),
        ("exact", Windowed(tmx.AUC(), 6, sync_on_compute=False)),
    ):
        metric.update(p, y)
        metric.sync()
        metric.unsync()  # as TorchMetrics does: this rank's own states again
        out[f"{name}-local"] = {k: v.item() for k, v in metric.compute().items()}
        metric.sync()  # compute() unsyncs a synced metric after computing (TorchMetrics' rule)
        out[f"{name}-synced"] = {k: v.item() for k, v in metric.compute().items()}
        with metric.sync_context():
            out[f"{name}-context"] = {k: v.item() for k, v in metric.compute().items()}
        metric.update(p, y)  # after the unsync the window goes on from this rank's own states
        out[f"{name}-after"] = {k: v.item() for k, v in metric.compute().items()}
    plain = tmx.CTR(sync_on_compute=False)  # a value computed before a manual sync is not kept
    plain.update(p, y)
    out["plain-local"] = plain.compute().item()
    plain.sync()
    out["plain-synced"] = plain.compute().item()
    return out


def _rows(state):
    """Rows of an exact list state: its chunks, or one tensor once synced."""
    return state.numel() if torch.is_tensor(state) else sum(chunk.numel() for chunk in state)


def _two_equal_ranks(tensor, group=None):
    """A gather of two ranks that hold the same states (a second process simulated in this one)."""
    return [tensor, tensor.clone()]


@pytest.mark.parametrize(
    ("inner", "ref", "samples"),
    [
        (lambda: tmx.CTR(), lambda y, p: y.mean(), lambda states: states["weighted_num_samples"].sum()),
        (lambda: tmx.AUC(), skm.roc_auc_score, lambda states: _rows(states["preds"])),
        (
            lambda: tmx.AUC(num_bins=20, bin_space="probability"),
            skm.roc_auc_score,
            lambda states: states["hist_probability"].sum(),
        ),
    ],
)
@pytest.mark.parametrize("sync_on_compute", [True, False])
def test_sync_context_restores_the_local_lifetime_and_window(inner, ref, samples, sync_on_compute):
    """TorchMetrics' ``sync_context`` unsyncs where the metric's own ``_is_synced`` is set, never a wrapper's:
    the lifetime and window stayed synced after the context (weights of both ranks), the next compute()
    raised "already synced" and updates went into the gathered states."""
    p, y = np.array([0.12, 0.37, 0.62, 0.87, 0.55]), np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    metric = Windowed(inner(), 3, sync_on_compute=sync_on_compute)
    metric.update(torch.tensor(p[:2]), torch.tensor(y[:2]))
    metric.update(torch.tensor(p[2:]), torch.tensor(y[2:]))
    with metric.sync_context(dist_sync_fn=_two_equal_ranks, distributed_available=lambda: True):
        assert float(samples(metric.lifetime.metric_state)) == 2 * len(p)  # both ranks' samples inside
        assert float(samples(metric.window.metric_state)) == 2 * 3
    assert float(samples(metric.lifetime.metric_state)) == len(p)
    values = metric.compute()  # this rank's own states again
    assert values["lifetime"].item() == pytest.approx(ref(y, p))
    assert values["window"].item() == pytest.approx(ref(y[2:], p[2:]))
    metric.update(torch.tensor(p[:2]), torch.tensor(y[:2]))  # into the local states, not the gathered ones
    values = metric.compute()
    assert values["lifetime"].item() == pytest.approx(ref(np.r_[y, y[:2]], np.r_[p, p[:2]]))
    assert values["window"].item() == pytest.approx(ref(y[:2], p[:2]))


@pytest.mark.parametrize("method", ["forward", "update"])
@pytest.mark.parametrize(
    "inner", [lambda: tmx.CTR(), lambda: tmx.AUC(), lambda: tmx.AUC(num_bins=20, bin_space="probability")]
)
def test_a_batch_between_sync_and_unsync_is_refused(inner, method):
    """After a manual sync() the lifetime and window hold both ranks' states and unsync() restores the local
    ones cached before: a batch added in between was dropped from the lifetime but kept in the window. It is refused as TorchMetrics refuses ``forward`` on a synced metric."""
    from torchmetrics.utilities.exceptions import TorchMetricsUserError

    p, y = np.array([0.2, 0.6, 0.9]), np.array([0.0, 1.0, 1.0])
    metric = Windowed(inner(), 10)
    metric.update(torch.tensor(p), torch.tensor(y))
    metric.sync(dist_sync_fn=_two_equal_ranks, distributed_available=lambda: True)
    with pytest.raises(TorchMetricsUserError, match=f"shouldn't be synced when performing ``{method}``"):
        getattr(metric, method)(torch.tensor([0.5, 0.3]), torch.tensor([0.0, 1.0]))
    metric.unsync()
    ref = skm.roc_auc_score if isinstance(metric.lifetime, tmx.AUC) else (lambda y, p: y.mean())
    values = metric.compute()
    assert values["lifetime"].item() == pytest.approx(ref(y, p))
    assert values["window"].item() == pytest.approx(ref(y, p))
    getattr(metric, method)(torch.tensor([0.5, 0.3]), torch.tensor([0.0, 1.0]))  # accepted again, into both
    values = metric.compute()
    assert values["lifetime"].item() == pytest.approx(ref(np.r_[y, 0.0, 1.0], np.r_[p, 0.5, 0.3]))
    assert values["window"].item() == pytest.approx(ref(np.r_[y, 0.0, 1.0], np.r_[p, 0.5, 0.3]))


@pytest.mark.ddp
def test_windowed_sync_and_unsync_sync_the_lifetime_and_the_window(ddp_pool):
    """The wrapper's sync() syncs its children (it holds no state itself): was a silent no-op."""
    rank0, rank1 = ddp_pool.run(_manual_sync_job)
    y0, y1 = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0])
    p0, p1 = np.array([0.12, 0.37, 0.62, 0.87]), np.array([0.22, 0.77])
    # each rank keeps 6 // 2 = 3 samples: rank 0 its newest 3, rank 1 both of its own
    kept = (np.r_[y0[1:], y1], np.r_[p0[1:], p1])
    expected = {
        "ctr": {"lifetime": np.r_[y0, y1].mean(), "window": kept[0].mean()},
        "auc": {
            "lifetime": skm.roc_auc_score(np.r_[y0, y1], np.r_[p0, p1]),
            "window": skm.roc_auc_score(*kept),
        },
    }
    expected["exact"] = expected["auc"]  # every score in its own bin: binned is exact
    local = {
        "ctr": [{"lifetime": y0.mean(), "window": y0[1:].mean()}, {"lifetime": y1.mean(), "window": y1.mean()}],
        "auc": [
            {"lifetime": skm.roc_auc_score(y0, p0), "window": skm.roc_auc_score(y0[1:], p0[1:])},
            {"lifetime": skm.roc_auc_score(y1, p1), "window": skm.roc_auc_score(y1, p1)},
        ],
    }
    local["exact"] = local["auc"]
    after = [  # the same batch twice: rank 0's window holds its newest 3 samples, rank 1's its second batch
        {"ctr": {"lifetime": y0.mean(), "window": y0[1:].mean()}, "auc": skm.roc_auc_score(y0[1:], p0[1:])},
        {"ctr": {"lifetime": y1.mean(), "window": y1.mean()}, "auc": skm.roc_auc_score(y1, p1)},
    ]
    assert [rank0["plain-local"], rank1["plain-local"]] == pytest.approx([y0.mean(), y1.mean()])
    assert [rank0["plain-synced"], rank1["plain-synced"]] == pytest.approx([np.r_[y0, y1].mean()] * 2)
    for rank, out in enumerate((rank0, rank1)):
        for name in ("ctr", "auc", "exact"):
            assert out[f"{name}-synced"] == pytest.approx(expected[name])
            assert out[f"{name}-context"] == pytest.approx(expected[name])
            assert out[f"{name}-local"] == pytest.approx(local[name][rank])
        assert out["ctr-after"] == pytest.approx(after[rank]["ctr"])
        for name in ("auc", "exact"):
            assert out[f"{name}-after"]["window"] == pytest.approx(after[rank]["auc"])


def _torchmetrics_empty_rank_job(rank, world_size):
    from torchmetrics.classification import BinaryAUROC

    metric = Windowed(BinaryAUROC(), window_size=12)
    if rank == 1:  # only an empty batch: the window's list states must still sync as int64 targets
        metric.update(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    else:
        metric.update(torch.tensor([0.1, 0.6, 0.35, 0.8]), torch.tensor([0, 1, 0, 1]))
    return {k: v.item() for k, v in metric.compute().items()}


@pytest.mark.ddp
def test_a_rank_with_only_empty_batches_syncs_a_torchmetrics_window(ddp_pool):
    expected = skm.roc_auc_score([0, 1, 0, 1], [0.1, 0.6, 0.35, 0.8])
    assert ddp_pool.run(_torchmetrics_empty_rank_job) == [{"lifetime": expected, "window": expected}] * 2


# rank 0's batches for the rank-that-never-updates jobs: 5 then 6 rows; window 16 (8 per rank) keeps the 6
_IDLE_Y = [np.array([0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 0])]
_IDLE_P = [np.array([0.3, 0.7, 0.45, 0.5, 0.9]), np.array([0.55, 0.2, 0.65, 0.8, 0.4, 0.35])]
_IDLE_C = [np.array([0, 2, 1, 2, 0]), np.array([1, 1, 0, 2, 2, 0])]
_GATHERED: list[torch.dtype] = []  # dtypes a user's dist_sync_fn was given (per process)


def _recording_gather(tensor, group=None):
    """A user's ``dist_sync_fn``: TorchMetrics' gather, recording each tensor's dtype."""
    from torchmetrics.utilities.distributed import gather_all_tensors

    _GATHERED.append(tensor.dtype)
    return gather_all_tensors(tensor, group)


def _idle_probs(seed):
    """(N, 3) class probabilities of rank 0's multiclass batches (rows summing to one, as sklearn needs)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(len(c), 3, generator=gen, dtype=torch.float64), 1).float() for c in _IDLE_C]


def _torchmetrics_idle_rank_job(rank, world_size):
    """Rank 1 never calls update: TorchMetrics sends its empty list states as 1-D float32 tensors."""
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, MulticlassAUROC

    _GATHERED.clear()
    binary = {
        "auroc": Windowed(BinaryAUROC(), 16),
        "ap": Windowed(BinaryAveragePrecision(), 16),
        "fn-wrapper": Windowed(BinaryAUROC(), 16, dist_sync_fn=_recording_gather),
        "fn-metric": Windowed(BinaryAUROC(dist_sync_fn=_recording_gather), 16),
        "manual": Windowed(BinaryAUROC(), 16, sync_on_compute=False),
    }
    multiclass = Windowed(MulticlassAUROC(num_classes=3, average="macro"), 16)  # (N, 3) score rows
    if rank == 0:
        for y, p, c, probs in zip(_IDLE_Y, _IDLE_P, _IDLE_C, _idle_probs(0)):
            for metric in binary.values():
                metric.update(torch.tensor(p, dtype=torch.float32), torch.tensor(y))
            multiclass.update(probs, torch.tensor(c))
    out = {}
    for name, metric in binary.items():
        if name == "manual":
            metric.sync()  # the wrapper's manual sync: TorchMetrics' own gather, agreed on first
        out[name] = {k: v.item() for k, v in metric.compute().items()}
    out["multiclass"] = {k: v.item() for k, v in multiclass.compute().items()}
    # the children's own compute (each syncs alone), as a logger holding `metric.window` calls it
    auroc = Windowed(BinaryAUROC(), 16)
    if rank == 0:
        auroc.update(torch.tensor(_IDLE_P[1], dtype=torch.float32), torch.tensor(_IDLE_Y[1]))
    out["children"] = [auroc.window.compute().item(), auroc.lifetime.compute().item()]
    out["gathered"] = [str(dtype) for dtype in _GATHERED]
    return out


@pytest.mark.ddp
def test_a_rank_that_never_updates_syncs_a_torchmetrics_window(ddp_pool):
    """A TorchMetrics metric with list states (int64 targets, (N, C) scores) on a rank without update:
    every rank gets the value over rank 0's samples (the gather aborted the process before)."""
    y, p = np.concatenate(_IDLE_Y), np.concatenate(_IDLE_P)
    auroc = {"lifetime": skm.roc_auc_score(y, p), "window": skm.roc_auc_score(_IDLE_Y[1], _IDLE_P[1])}
    ap = {"lifetime": skm.average_precision_score(y, p), "window": skm.average_precision_score(_IDLE_Y[1], _IDLE_P[1])}
    probs = [t.double().numpy() for t in _idle_probs(0)]
    multiclass = {
        "lifetime": skm.roc_auc_score(np.concatenate(_IDLE_C), np.concatenate(probs), multi_class="ovr"),
        "window": skm.roc_auc_score(_IDLE_C[1], probs[1], multi_class="ovr"),
    }
    window_only = skm.roc_auc_score(_IDLE_Y[1], _IDLE_P[1])
    for out in ddp_pool.run(_torchmetrics_idle_rank_job):
        for name in ("auroc", "fn-wrapper", "fn-metric", "manual"):
            assert out[name] == pytest.approx(auroc)
        assert out["ap"] == pytest.approx(ap)
        assert out["multiclass"] == pytest.approx(multiclass)
        assert out["children"] == pytest.approx([window_only, window_only])
        # the user's sync function gathers, given the agreed dtypes: scores and int64 targets, lifetime
        # and window, for each of the two metrics
        assert out["gathered"] == ["torch.float32", "torch.int64"] * 4


def test_a_torchmetrics_window_syncs_with_a_faked_sync_function_without_a_process_group():
    """No process group (a dist_sync_fn faking two equal ranks): only the given function runs; the
    wrapper and its copies keep it, and the package's own metrics get no extra step."""
    from torchmetrics.classification import BinaryAUROC

    calls = []
    metric = Windowed(BinaryAUROC(), 8, **_two_ranks(calls))
    metric.update(torch.tensor(_IDLE_P[0], dtype=torch.float32), torch.tensor(_IDLE_Y[0]))
    metric.update(torch.tensor(_IDLE_P[1], dtype=torch.float32), torch.tensor(_IDLE_Y[1]))
    y, p = np.concatenate(_IDLE_Y), np.concatenate(_IDLE_P)
    expected = {"lifetime": skm.roc_auc_score(y, p), "window": skm.roc_auc_score(_IDLE_Y[1], _IDLE_P[1])}
    for copied in (metric, copy.deepcopy(metric)):  # the faked function is a closure: no pickle
        assert {k: v.item() for k, v in copied.compute().items()} == pytest.approx(expected)  # doubled ranks
    assert len(calls) == 8  # two states of the lifetime and the window, for each of the two metrics
    assert Windowed(tmx.AUC(), 8).lifetime.dist_sync_fn is None  # ours declare their list dtypes
    plain = pickle.loads(pickle.dumps(Windowed(BinaryAUROC(), 8)))
    plain.update(torch.tensor(_IDLE_P[1], dtype=torch.float32), torch.tensor(_IDLE_Y[1]))
    assert plain.compute()["window"].item() == pytest.approx(expected["window"])


# ----------------------------------------------------------------------------- TorchMetrics integration


def test_in_a_metric_collection_with_compute_groups():
    """Windowed metrics hold no state of their own, so compute groups never merge two of them."""
    case = CASES["pointwise:ne-3task-w"]
    data = case.make_data(0)
    collection = MetricCollection(
        {
            "ne": Windowed(tmx.NormalizedEntropy(num_tasks=3), 300),
            "logloss": Windowed(tmx.LogLoss(num_tasks=3), 300),
            "ne_short": Windowed(tmx.NormalizedEntropy(num_tasks=3), 100),
        },
        compute_groups=True,
    )
    singles = {
        "ne": Windowed(tmx.NormalizedEntropy(num_tasks=3), 300),
        "logloss": Windowed(tmx.LogLoss(num_tasks=3), 300),
        "ne_short": Windowed(tmx.NormalizedEntropy(num_tasks=3), 100),
    }
    for lo in range(0, 900, 150):
        batch = H.take(data, slice(lo, lo + 150), -1)
        collection.update(**batch)
        for metric in singles.values():
            metric.update(**batch)
    values = collection.compute()
    for name, metric in singles.items():
        expected = metric.compute()
        for part in ("lifetime", "window"):
            torch.testing.assert_close(values[f"{name}_{part}"], expected[part])


def test_inputs_validated_skips_the_checks():
    metric = Windowed(tmx.CTR(), 4)
    with metric.inputs_validated():
        metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
    assert metric.window.weighted_num_samples.item() == 2.0


def test_window_states_are_current_whenever_read():
    """The window's tensor states are written when read, not per update: every way of reading them sees them current."""
    rng = np.random.default_rng(5)
    batches = [
        (torch.tensor(rng.random(n)), torch.tensor((rng.random(n) < 0.4).astype(np.int64))) for n in (7, 5, 9, 4)
    ]

    def fed():
        metric = Windowed(tmx.AUC(num_bins=50), 12)
        for preds, target in batches:
            metric.update(preds, target)
        return metric

    # expected: a plain metric over the samples the rule keeps (the last update: 9 + 4 samples > 12)
    kept = tmx.AUC(num_bins=50)
    kept.update(batches[3][0], batches[3][1])
    saved = fed().state_dict()  # nothing read before saving
    assert torch.equal(saved["window.hist"], kept.hist)
    resumed = Windowed(tmx.AUC(num_bins=50), 12)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.window.hist, kept.hist)
    assert torch.equal(fed().window.hist, kept.hist)  # the attribute
    assert torch.equal(fed().compute()["window"], kept.compute())
    copied = copy.deepcopy(fed())
    assert torch.equal(copied.window.hist, kept.hist)


@pytest.mark.parametrize("factory", [tmx.WeightedMSE, Max, Min], ids=["sum", "max", "min"])
def test_the_two_stack_flip_whether_or_not_the_window_wraps_the_buffer(monkeypatch, factory):
    """The flip scans the window's slots in order, also when they wrap around the ring buffer."""
    from torchmetrics_ext.wrappers import _ring

    seen = {"wraps": 0, "in one piece": 0}
    flip = _ring.StateRing._flip

    def counting_flip(self):
        if self.count > 1:
            seen["wraps" if self.head + self.count > self.capacity else "in one piece"] += 1
        flip(self)

    monkeypatch.setattr(_ring.StateRing, "_flip", counting_flip)
    rng = np.random.default_rng(0)
    metric, kept = Windowed(factory(), 50), []
    for _ in range(300):
        n = int(rng.integers(1, 12))
        p, y = torch.from_numpy(rng.random(n)), torch.from_numpy(rng.random(n))
        if factory is tmx.WeightedMSE:
            metric.update(p, y)
        else:
            metric.update(p)
        kept.append((p.numpy(), y.numpy()))
        while sum(len(a) for a, _ in kept) > 50 and len(kept) > 1:
            kept.pop(0)
        p_all, y_all = np.concatenate([a for a, _ in kept]), np.concatenate([b for _, b in kept])
        expected = {tmx.WeightedMSE: np.mean((p_all - y_all) ** 2), Max: p_all.max(), Min: p_all.min()}[factory]
        np.testing.assert_allclose(float(metric.compute()["window"]), expected, rtol=1e-12)
    assert seen["wraps"] > 0 and seen["in one piece"] > 0


def _tensors_held(root):
    """Tensor objects reachable from ``root`` through its ``__dict__`` and plain containers."""
    seen, stack, found = set(), [root.__dict__], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found += 1
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, collections.deque)):
            stack.extend(obj)
    return found


def test_the_ring_keeps_no_python_object_per_update_in_the_window():
    """Bug: every slot of the ring kept a dict of views, one per state (~2.7 KB per update, 120x the rows).

    4,000 one-sample updates into a window that holds them all: the ring holds its buffers (a few
    tensors), not one view per state and update. Value: NumPy over the window.
    """
    gen = torch.Generator().manual_seed(0)
    p, y = torch.rand(4000, generator=gen, dtype=torch.float64), torch.rand(4000, generator=gen, dtype=torch.float64)
    metric = Windowed(tmx.WeightedMSE(), window_size=1_000_000)
    for i in range(4000):
        metric.update(p[i : i + 1], y[i : i + 1])
    ring = metric._ring
    assert ring.count == 4000 and ring.capacity >= 4000
    assert _tensors_held(ring) <= 4 * (len(ring.tensor_names) + 1)
    expected = np.mean((p.numpy() - y.numpy()) ** 2)
    np.testing.assert_allclose(float(metric.compute()["window"]), expected, rtol=1e-12)


def test_the_ring_grows_and_saves_its_slots_in_order_when_they_wrap_around_the_buffer():
    """The ring grows and writes its checkpoint from two slices when the window wraps around its buffer.

    Large updates first move the oldest slot along the buffer, then one-sample updates fill it
    while it wraps: it grows, and checkpoints are taken, in both layouts. Each checkpoint resumes
    the window's value (NumPy over the window's samples).
    """
    from torchmetrics_ext.wrappers import _ring

    seen = {"grew wrapped": 0, "saved wrapped": 0}
    grow, state = _ring.StateRing._grow_buffers, _ring.StateRing.state

    def counting_grow(self):
        seen["grew wrapped"] += self.count > 0 and self.head + self.count > self.capacity
        grow(self)

    def counting_state(self):
        seen["saved wrapped"] += self.head + self.count > self.capacity
        return state(self)

    rng = np.random.default_rng(4)
    sizes = [int(rng.integers(8, 12)) for _ in range(10)] + [1] * 60 + [int(rng.integers(1, 6)) for _ in range(60)]
    metric, kept = Windowed(tmx.WeightedMSE(), 40), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_ring.StateRing, "_grow_buffers", counting_grow)
        patch.setattr(_ring.StateRing, "state", counting_state)
        for n in sizes:
            p, y = rng.random(n), rng.random(n)
            metric.update(torch.from_numpy(p), torch.from_numpy(y))
            kept.append((p, y))
            while sum(len(a) for a, _ in kept) > 40 and len(kept) > 1:
                kept.pop(0)
            resumed = Windowed(tmx.WeightedMSE(), 40)
            resumed.load_state_dict(metric.state_dict())
            p_all, y_all = np.concatenate([a for a, _ in kept]), np.concatenate([b for _, b in kept])
            expected = np.mean((p_all - y_all) ** 2)
            for value in (metric.compute()["window"], resumed.compute()["window"]):
                np.testing.assert_allclose(float(value), expected, rtol=1e-12)
    assert seen["grew wrapped"] > 0 and seen["saved wrapped"] > 0


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_a_copied_window_keeps_its_ring_when_it_grows(clone):
    """A copy taken while the ring is small grows it later and evicts: the same values as the original.

    (pickle does not keep a view's storage shared with its base tensor; the ring's slot views are
    rebuilt on load, so the copy's slots, its growth and its checkpoint see the same memory.)
    """
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(5, generator=gen), (torch.rand(5, generator=gen) < 0.4).long()) for _ in range(40)]
    original = Windowed(tmx.Calibration(), 60)  # 12 updates in the window; 8 slots at first
    for p, y in batches[:3]:
        original.update(p, y)
    copied = pickle.loads(pickle.dumps(original)) if clone == "pickle" else copy.deepcopy(original)
    resumed = None
    for step, (p, y) in enumerate(batches[3:]):
        original.update(p, y)
        copied.update(p, y)
        if resumed is not None:
            resumed.update(p, y)
        if step == 4:  # a checkpoint of the copy, after its own updates
            resumed = Windowed(tmx.Calibration(), 60)
            resumed.load_state_dict(copied.state_dict())
        expected = original.compute()
        for other in (copied, resumed):
            if other is not None:
                for key in ("lifetime", "window"):
                    torch.testing.assert_close(other.compute()[key], expected[key], rtol=0, atol=0)


def test_a_held_window_reference_stays_current():
    """``w.window`` kept across updates (a MetricCollection, a logger, a variable) computes and saves current values.

    A value computed from a reference before an update is never served after it (no stale cache).
    """
    metric = Windowed(tmx.CTR(), 4)
    window = metric.window
    metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 1]))
    assert window.compute().item() == 1.0
    metric.update(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
    assert window.compute().item() == 0.5  # through the held reference
    assert metric.window.compute().item() == 0.5  # and afresh
    metric.update(torch.tensor([0.5]), torch.tensor([0]))  # 5 samples: the first update leaves
    assert window.state_dict()["weighted_num_samples"].item() == 3.0
    collection = MetricCollection({"ctr_window": window})
    metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 1]))  # window: [0, 0, 0], [1, 1] -> 5 > 4
    # numpy reference: the window keeps the newest whole updates within 4 samples: [0], [1, 1]
    assert collection.compute()["ctr_window"].item() == pytest.approx(np.mean([0, 1, 1]))
    copied = copy.deepcopy(metric)  # the copy's window follows the copy, not the original
    held = copied.window
    copied.update(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([0, 0, 0, 0]))
    assert held.compute().item() == 0.0
    assert metric.window.compute().item() == pytest.approx(np.mean([0, 1, 1]))


def _binned_auc(p: np.ndarray, y: np.ndarray, bins: int = 100) -> float:
    """scikit-learn's AUC of float32 probabilities floored to ``bins`` equal bins (``bin_space="probability"``)."""
    position = (p.astype(np.float32) * np.float32(bins)).astype(np.float32)
    return skm.roc_auc_score(y, np.clip(np.floor(position), 0, bins - 1))


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    p = p.astype(np.float64)  # the float32 inputs, in float64 as the metric sums them
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    base = y.mean()
    return ce / -(base * np.log(base) + (1 - base) * np.log(1 - base))


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p >= 0.5) == (y == 1)).mean())


def _torch_save(metric):
    buffer = io.BytesIO()
    torch.save(metric, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


_HELD_COPIES = {
    "deepcopy": copy.deepcopy,
    "clone": lambda m: m.clone(),
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "torch.save": _torch_save,
}
# the wrapped metric and the reference value of some samples (every family of deferred states: the
# window's sums and a TorchMetrics metric's, the binned lifetime histogram, exact samples)
_HELD_KINDS = {
    "ne": (tmx.NormalizedEntropy, _ne),
    "auc-binned": (lambda: tmx.AUC(num_bins=100, bin_space="probability"), _binned_auc),
    "auc-exact": (tmx.AUC, lambda p, y: skm.roc_auc_score(y, p)),
    "torchmetrics-accuracy": (
        lambda: importlib.import_module("torchmetrics.classification").BinaryAccuracy(),
        _accuracy,
    ),
}


@pytest.mark.parametrize("how", list(_HELD_COPIES))
@pytest.mark.parametrize("kind", list(_HELD_KINDS))
def test_a_copy_or_merge_of_a_held_reference_has_its_current_states(kind, how):
    """``w.window`` (and a binned ``w.lifetime``) kept across updates: its copies (clone, deepcopy, pickle,
    torch.save), its ``metric_state`` and a merge of it held the states of its last refresh (nan: none)."""
    factory, reference = _HELD_KINDS[kind]
    rtol = 1e-6 if kind == "torchmetrics-accuracy" else 1e-9  # TorchMetrics' value is float32
    rng = np.random.default_rng(5)
    batches = [
        (rng.uniform(0.02, 0.98, 50).astype(np.float32), (rng.random(50) < 0.4).astype(np.int64)) for _ in range(5)
    ]
    metric = Windowed(factory(), 120)
    window, lifetime = metric.window, metric.lifetime  # held before any update
    for p, y in batches:
        metric.update(torch.from_numpy(p), torch.from_numpy(y))
    # numpy reference: the window keeps the newest whole updates within 120 samples (two batches of 50)
    p_all, y_all = (np.concatenate(part) for part in zip(*batches))
    expected = {"window": reference(p_all[-100:], y_all[-100:]), "lifetime": reference(p_all, y_all)}
    extra_p, extra_y = batches[0]
    for name, held in (("window", window), ("lifetime", lifetime)):
        copied = _HELD_COPIES[how](held)
        np.testing.assert_allclose(float(copied.compute()), expected[name], rtol=rtol, err_msg=name)
        # a metric of its own: its update leaves the wrapper alone, and adds to what it holds
        copied.update(torch.from_numpy(extra_p), torch.from_numpy(extra_y))
        seen = slice(-100, None) if name == "window" else slice(None)
        grown = reference(np.r_[p_all[seen], extra_p], np.r_[y_all[seen], extra_y])
        np.testing.assert_allclose(float(copied.compute()), grown, rtol=rtol, err_msg=name)
    values = metric.compute()
    for name in ("window", "lifetime"):
        np.testing.assert_allclose(float(values[name]), expected[name], rtol=rtol, err_msg=name)
    metric.update(torch.from_numpy(extra_p), torch.from_numpy(extra_y))  # 150 samples: the window is 5 and this one
    p_win, y_win = np.r_[p_all[-50:], extra_p], np.r_[y_all[-50:], extra_y]
    if kind == "torchmetrics-accuracy":
        return  # TorchMetrics' own metric_state has no hook: read it as metric.window.metric_state (documented)
    states, fresh = window.metric_state, metric.window.metric_state
    assert states.keys() == fresh.keys()
    assert all(
        torch.equal(
            torch.as_tensor(torch.cat(v) if isinstance(v, list) else v),
            torch.as_tensor(torch.cat(fresh[n]) if isinstance(fresh[n], list) else fresh[n]),
        )
        for n, v in states.items()
    )
    other = factory()  # a plain metric merging the held window: its batch and the window's samples
    other.update(torch.from_numpy(extra_p), torch.from_numpy(extra_y))
    other.merge_state(window)
    expected_merge = reference(np.r_[extra_p, p_win], np.r_[extra_y, y_win])
    np.testing.assert_allclose(float(other.compute()), expected_merge, rtol=rtol)


def test_the_metric_given_to_a_windowed_module_copies_with_its_current_states():
    """A binned AUC given to ``RecMetricModule(window_size=...)`` becomes its lifetime: a copy of it was empty (nan)."""
    rng = np.random.default_rng(2)
    batches = [(rng.random(50).astype(np.float32), (rng.random(50) < 0.5).astype(np.int64)) for _ in range(4)]
    auc = tmx.AUC(num_bins=100, bin_space="probability")  # the user keeps this object
    module = tmx.RecMetricModule(["click"], {"auc": auc}, throughput=False, window_size=1000)
    for p, y in batches:
        module.update({"prediction": torch.from_numpy(p), "label": torch.from_numpy(y)})
    expected = _binned_auc(np.concatenate([p for p, _ in batches]), np.concatenate([y for _, y in batches]))
    for how, copier in _HELD_COPIES.items():
        np.testing.assert_allclose(float(copier(auc).compute()), expected, rtol=1e-12, err_msg=how)
    np.testing.assert_allclose(float(auc.compute()), expected, rtol=1e-12)
    np.testing.assert_allclose(float(module.compute()["auc/click"]), expected, rtol=1e-12)


def test_one_metric_object_cannot_be_wrapped_twice():
    """Two wrappers of one object (train and val) shared its lifetime: each counted the other's samples."""
    ctr = tmx.CTR()
    first = Windowed(ctr, 100)
    for other in (ctr, first.window, first.lifetime):
        with pytest.raises(ValueError, match="already belongs to a live Windowed"):
            Windowed(other, 100)
    with pytest.raises(ValueError, match=r"'ctr' .* already belongs to a live Windowed"):
        tmx.RecMetricModule(["click"], {"ctr": ctr}, throughput=False, window_size=50)
    held = tmx.CTR()
    module = tmx.RecMetricModule(["click"], {"ctr": held}, throughput=False, window_size=50)
    with pytest.raises(ValueError, match="already belongs to a live RecMetricModule"):
        Windowed(held, 100)
    copied = copy.deepcopy(first)  # a copy owns its copies
    with pytest.raises(ValueError, match="already belongs to a live Windowed"):
        Windowed(copied.lifetime, 100)
    # each wrapper over its own object: values of its own samples only (numpy: the label rate)
    second = Windowed(copy.deepcopy(ctr), 100)
    first.update(torch.rand(10), torch.ones(10))
    second.update(torch.rand(10), torch.zeros(10))
    module.update({"prediction": torch.rand(10), "label": torch.zeros(10)})
    assert {k: v.item() for k, v in first.compute().items()} == {"lifetime": 1.0, "window": 1.0}
    assert {k: v.item() for k, v in second.compute().items()} == {"lifetime": 0.0, "window": 0.0}
    assert module.compute()["ctr/click"].item() == 0.0
    del first, copied, module
    gc.collect()
    Windowed(ctr, 100)  # its owner is gone
    Windowed(held, 100)


@pytest.mark.parametrize("binned", [False, True], ids=["ring", "histogram"])
def test_device_moves_and_dtype_casts_keep_the_ring(binned):
    """``.to()`` moves lifetime, window, ring and scratch together; ``.half()`` changes no state dtype."""
    metric = Windowed(tmx.AUC(num_bins=100) if binned else tmx.Calibration(), 10)
    metric.update(torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0, 1, 1]))
    metric = metric.to(torch.device("cpu")).half()
    state = metric.get_extra_state()
    if binned:  # bin indices per update (int32), dense sums per block in the state's dtype
        assert state["indices"][0].dtype == torch.int32 and metric._hist.open.dtype == torch.float64
    else:
        assert state["rings"]["weighted_pred_sum"].dtype == torch.float64
    metric.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    # AUC: every positive (0.7, 0.4, 0.9) above every negative (0.2, 0.1); calibration: sum p / sum y
    expected = 1.0 if binned else np.sum([0.2, 0.7, 0.4, 0.9, 0.1]) / 3
    torch.testing.assert_close(metric.compute()["window"], torch.tensor(expected, dtype=torch.float64))


_P, _Y = torch.tensor([0.2, 0.7, 0.4, 0.9]), torch.tensor([0, 1, 1, 0])
_MOVED = {
    "ring": (tmx.Calibration, {"preds": _P, "target": _Y}),
    "exact-auc": (tmx.AUC, {"preds": _P, "target": _Y}),
    "histogram": (functools.partial(tmx.AUC, num_bins=10), {"preds": _P, "target": _Y}),
    "ranking": (functools.partial(tmx.NDCG, k=2), {"preds": _P, "target": _Y, "indexes": torch.tensor([0, 0, 1, 1])}),
    "torchmetrics-mse": (MeanSquaredError, {"preds": _P, "target": _Y.float()}),
}


@pytest.mark.parametrize("kind", list(_MOVED))
def test_a_move_with_a_dtype_moves_every_tensor_and_keeps_every_dtype(kind):
    """``.to(device, dtype)`` (Lightning's true precision on an accelerator) moves the lifetime, window and
    scratch metrics and the ring to the device and keeps every dtype, a TorchMetrics metric's too (the ring
    once stayed on its device on a dtype cast). The meta device stands for an accelerator."""
    factory, batch = _MOVED[kind]
    metric = Windowed(factory(), 10)
    metric.update(**batch)

    def tensors(m: Windowed) -> list[torch.Tensor]:
        children = [m._child("lifetime"), m._child("window"), m._scratch]
        states = [v for c in children for x in c.metric_state.values() for v in (x if isinstance(x, list) else [x])]
        return W.ring_tensors(m) + states

    dtypes = [t.dtype for t in tensors(metric)]
    metric = metric.to("meta", torch.bfloat16)
    moved = tensors(metric)
    assert [t.dtype for t in moved] == dtypes
    assert {t.device.type for t in moved} == {"meta"}


def _newest_whole_updates(updates: list[tuple], window: int) -> list[tuple]:
    """The window rule on ``(preds (T, n), ...)`` updates already cut to their newest ``window`` samples:
    the newest whole updates whose sizes sum to at most ``window``, newest first."""
    kept, total = [], 0
    for update in reversed(updates):
        if total + update[0].shape[1] > window:
            break
        kept.append(update)
        total += update[0].shape[1]
    return kept


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_binned_window_keeps_bin_indices_and_block_sums(weighted):
    """Binned AUC's window: per-update bin indices and ~sqrt(U) dense block sums, equal to a fresh histogram
    of the kept samples (numpy) after every update, through several turns of the window."""
    rng = np.random.default_rng(11)
    bins, window, tasks = 40, 300, 2
    metric = Windowed(tmx.AUC(num_tasks=tasks, num_bins=bins), window)
    updates = []
    for step in range(160):
        n = int(rng.integers(1, 25)) if step != 90 else 400  # one update larger than the window
        preds = rng.random((tasks, n))
        target = (rng.random((tasks, n)) < 0.35).astype(np.int64)
        weights = rng.random(n) * 3 if weighted else None
        args = (torch.tensor(preds), torch.tensor(target)) + ((torch.tensor(weights),) if weighted else ())
        metric.update(*args)
        updates.append((preds[:, -window:], target[:, -window:], None if weights is None else weights[-window:]))
        kept = _newest_whole_updates(updates, window)
        if step % 7 == 0 or step > 150:
            p = np.concatenate([k[0] for k in kept], axis=1)
            y = np.concatenate([k[1] for k in kept], axis=1)
            w = np.concatenate([np.ones(k[0].shape[1]) if k[2] is None else k[2] for k in kept])
            z = np.clip((np.log(p / (1 - p)) + 16.0) * bins / 32.0, 0, bins - 1).astype(np.int64)
            expected = np.zeros((2, tasks, bins))
            for t in range(tasks):
                np.add.at(expected, (y[t], t, z[t]), w)
            got = metric.window.hist.numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
            if not weighted:  # counts are whole numbers: the block sums are exact
                assert np.array_equal(got, expected)
    hist = metric._hist
    assert len(hist.sizes) == len(kept)
    assert len(hist.slots) <= len(kept) // min(8, math.isqrt(len(kept))) + 2  # dense sums per block, not per update
    assert all(index.dtype == torch.int32 for index in hist.indices)


def test_ring_grows_and_turns_over():
    """1-sample updates into a 1000-sample window: the ring doubles up to 1024 slots and keeps turning."""
    rng = np.random.default_rng(3)
    preds, target = rng.random(3000), (rng.random(3000) < 0.3).astype(np.int64)
    metric = Windowed(tmx.Calibration(), 1000)
    for i in range(3000):
        metric.update(torch.tensor(preds[i : i + 1]), torch.tensor(target[i : i + 1]))
    assert metric._ring.capacity == 1024 and metric._ring.count == 1000
    kept = slice(2000, 3000)
    np.testing.assert_allclose(metric.compute()["window"].item(), preds[kept].sum() / target[kept].sum(), rtol=1e-12)


# ----------------------------------------------------------------------------- CUDA (runs where a GPU is present)

_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _on(batch, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@_CUDA
@pytest.mark.parametrize(
    "cid",
    ["pointwise:ne-3task-w", "auc:auc-bins-3task-shared-w", "auc:auc-3task-w", "auc:gauc-w", "ranking:flat-all-w"],
)
def test_cuda_matches_cpu(cid):
    """On the GPU, from the start or moved there mid-stream, and resumed on the CPU from a GPU checkpoint."""
    case = CASES[cid]
    data = case.make_data(0)
    window = W.default_window(case, data)
    bounds = W.window_bounds(H.num_samples(data, case.sample_axis), np.random.default_rng(0), window, case.min_batch)
    cpu, gpu, moved = (Windowed(case.metric(), window) for _ in range(3))
    gpu = gpu.to("cuda")
    resumed = None
    for i, (lo, hi) in enumerate(bounds):
        batch = H.take(data, slice(lo, hi), case.sample_axis)
        if i == 3:
            moved = moved.to("cuda")
            resumed = Windowed(case.metric(), window)
            buffer = io.BytesIO()
            torch.save(gpu.state_dict(), buffer)
            buffer.seek(0)
            resumed.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=False))
        cpu.update(**batch)
        gpu.update(**_on(batch, "cuda"))
        moved.update(**_on(batch, "cuda" if i >= 3 else "cpu"))
        if resumed is not None:
            resumed.update(**batch)
        expected = _computed(cpu)
        for name, other in (("gpu", gpu), ("moved", moved), ("resumed", resumed)):
            if other is not None:
                H.assert_close(_computed(other), expected, case.rtol, case.atol, f"{cid} {name} batch {i}")


def _computed(metric):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = metric.compute()
    return {k: {kk: vv.cpu() for kk, vv in v.items()} if isinstance(v, dict) else v.cpu() for k, v in out.items()}


@_CUDA
def test_cuda_update_adds_no_host_sync():
    """Windowed.update reads shapes only: on a metric whose own update does not sync, neither does the window."""
    p = torch.rand(3, 4096, device="cuda")
    y = (torch.rand(3, 4096, device="cuda") < p).to(torch.int64)
    plain = tmx.NormalizedEntropy(num_tasks=3, validate_args=False).to("cuda")
    windowed = Windowed(tmx.NormalizedEntropy(num_tasks=3, validate_args=False), 20_000).to("cuda")
    for metric in (plain, windowed):
        for _ in range(12):  # past ring growth and a few turns of the window
            metric.update(p, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        plain.update(p, y)
        for _ in range(12):
            windowed.update(p, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- TorchMetrics metrics of (N, ...) inputs


def test_a_torchmetrics_metric_of_rows_counts_rows():
    """TorchMetrics' inputs are (N, ...): a sample is a row, and a batch larger than the window keeps its last rows."""
    from torchmetrics.classification import MulticlassAccuracy

    gen = torch.Generator().manual_seed(5)
    mse = Windowed(MeanSquaredError(num_outputs=2), window_size=3)
    p, t = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.randn(5, 2, generator=gen, dtype=torch.float64)
    mse.update(p, t)
    expected = ((p[-3:] - t[-3:]) ** 2).mean(0)  # the newest 3 rows
    torch.testing.assert_close(mse.compute()["window"].double(), expected)  # TorchMetrics keeps float32 states
    torch.testing.assert_close(mse.compute()["lifetime"].double(), ((p - t) ** 2).mean(0))

    acc = Windowed(MulticlassAccuracy(num_classes=4, average="micro"), window_size=8)
    batches = [(torch.randn(5, 4, generator=gen), torch.randint(0, 4, (5,), generator=gen)) for _ in range(2)]
    for scores, labels in batches:
        acc.update(scores, labels)
    scores, labels = batches[-1]  # 5 + 5 rows > 8: the newest update only
    expected = (scores.argmax(1) == labels).double().mean().item()
    assert acc.compute()["window"].item() == pytest.approx(expected)


def test_a_torchmetrics_metric_of_scalars_counts_each_update_as_one_sample():
    from torchmetrics import MeanMetric

    mean = Windowed(MeanMetric(), window_size=3)
    for loss in (1.0, 2.0, torch.tensor(3.0), torch.tensor(4.0)):  # a step's loss
        mean.update(loss)
    values = mean.compute()
    assert values["lifetime"].item() == 2.5 and values["window"].item() == 3.0  # the newest three
    highest = Windowed(Max(), window_size=2)  # ours (with its own sample hook) too
    for loss in (5.0, torch.tensor(1.0), 2.0):
        highest.update(loss)
    values = highest.compute()
    assert values["lifetime"].item() == 5.0 and values["window"].item() == 2.0


@pytest.mark.parametrize(
    "kind", ["list", "tuple", "numpy", "numpy scalar", "numpy 0-d array", "nested list", "numpy 2-D"]
)
def test_lists_and_numpy_inputs_the_metric_takes_are_windowed(kind):
    """Windowed refused lists, tuples and NumPy values that the wrapped metric accepts (a
    TypeError: no tensor to count samples in); the window is the newest samples, cut as given."""
    from torchmetrics import SumMetric
    from torchmetrics.text import WordErrorRate

    from torchmetrics_ext.aggregation import Mean, Sum

    steps = [[1.0, 2.0, 3.0], [4.0], [5.0, 6.0]]  # a window of 3 keeps [4] and [5, 6]: 15
    as_given = {
        "list": list,
        "tuple": tuple,
        "numpy": np.array,
        "numpy scalar": lambda v: np.float32(sum(v)),  # one sample per update: the newest three
        "numpy 0-d array": lambda v: np.array(sum(v)),  # likewise (it raised: no array to count in)
        "nested list": lambda v: [[x, 10 * x] for x in v],  # rows of values: Mean over axis 0
        "numpy 2-D": lambda v: np.array([[x, 10 * x] for x in v]),
    }[kind]
    two_d = kind in ("nested list", "numpy 2-D")
    ours, theirs = Windowed(Mean() if two_d else Sum(), window_size=3), Windowed(SumMetric(), window_size=3)
    for values in steps:
        ours.update(as_given(values))
        if not two_d:
            theirs.update(as_given(values))
    flat = [x for values in steps for x in values]
    if kind in ("numpy scalar", "numpy 0-d array"):
        expected = 6.0 + 4.0 + 11.0  # the three updates, one sample each
    elif two_d:
        expected = np.mean([[x, 10 * x] for x in (4.0, 5.0, 6.0)])
    else:
        expected = sum(flat[-3:])
    assert ours.compute()["window"].item() == pytest.approx(expected, rel=1e-12)
    assert ours.compute()["lifetime"].item() == pytest.approx(
        np.mean([[x, 10 * x] for x in flat]) if two_d else sum(flat), rel=1e-12
    )
    if not two_d:
        assert theirs.compute()["window"].item() == pytest.approx(expected, rel=1e-6)
    # a TorchMetrics text metric takes lists of sentences: the newest two pairs
    wer = Windowed(WordErrorRate(), window_size=2)
    wer.update(["a b", "c", "x"], ["a b", "d", "x"])
    reference = WordErrorRate()
    reference.update(["c", "x"], ["d", "x"])
    assert wer.compute()["window"].item() == pytest.approx(reference.compute().item())


def test_set_dtype_casts_the_window_and_its_ring():
    from torchmetrics import SumMetric

    metric = Windowed(SumMetric(), window_size=10)
    metric.set_dtype(torch.float64)
    metric.update(torch.tensor([1e8, 1.0, 1.0], dtype=torch.float64))
    values = metric.compute()
    assert values["lifetime"].item() == 100000002.0 and values["window"].item() == 100000002.0
    binned = Windowed(tmx.AUC(num_bins=8), window_size=10)
    binned.set_dtype(torch.float32)  # the histogram in float32: unit weights follow its dtype
    binned.update(torch.tensor([0.1, 0.9, 0.2, 0.8]), torch.tensor([0, 1, 0, 1]))
    assert binned.compute()["window"].item() == 1.0


@pytest.mark.parametrize("binned", [False, True], ids=["ring", "histogram"])
def test_set_dtype_under_inference_mode_leaves_ordinary_tensors(binned):
    """Bug: ``Windowed.set_dtype`` under ``torch.inference_mode()`` left inference tensors in the ring,
    so the next update outside it raised "Inplace update to inference tensor outside InferenceMode".
    Reference: sklearn's AUC (each score in its own bin) / sum of preds over sum of targets.
    """
    preds = torch.tensor([0.05, 0.3, 0.45, 0.7, 0.2, 0.9])  # one per bin of 8
    target = torch.tensor([0, 1, 0, 1, 1, 0])
    auc = tmx.AUC(num_bins=8, bin_space="probability")
    metric = Windowed(auc if binned else tmx.Calibration(), window_size=10)
    metric.update(preds[:3], target[:3])
    with torch.inference_mode():
        metric.set_dtype(torch.float32)
    metric.update(preds[3:], target[3:])  # in place into the cast states: raised
    p, y = preds.double().numpy(), target.numpy()
    expected = skm.roc_auc_score(y, p) if binned else p.sum() / y.sum()
    values = metric.compute()
    for key in ("lifetime", "window"):
        np.testing.assert_allclose(values[key].item(), expected, rtol=1e-6)


def _sum_ratio(p: np.ndarray, y: np.ndarray) -> float:
    return float(p.sum() / y.sum())


def _mse(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


_UNDER_INFERENCE = {  # metric, reference over the samples (calibration: sum of preds over sum of targets)
    "ours": (tmx.Calibration, _sum_ratio),
    "binned": (functools.partial(tmx.AUC, num_bins=8, bin_space="probability"), lambda p, y: skm.roc_auc_score(y, p)),
    "torchmetrics": (MeanSquaredError, _mse),
}


@pytest.mark.parametrize("kind", list(_UNDER_INFERENCE))
@pytest.mark.parametrize("how", ["move", "merge", "merge-dict", "load"])
def test_moves_merges_and_loads_under_inference_mode_leave_ordinary_tensors(kind, how):
    """Bug: a device move (``_apply``, here a copy of every tensor as a move to an accelerator makes),
    ``merge_state`` or ``load_state_dict`` (of a ``state_dict`` taken) under ``torch.inference_mode()``
    left inference tensors in the ring, the lifetime or the window, so the next update outside it raised
    "Inplace update to inference tensor outside InferenceMode" (a plain TorchMetrics metric keeps
    working). Reference: the metric's formula over the samples each value holds, in numpy (binned
    AUC: sklearn's, every score in its own bin of eight)."""
    factory, reference = _UNDER_INFERENCE[kind]
    preds = np.array([0.1, 0.6, 0.3, 0.9, 0.2, 0.8, 0.45, 0.7])  # one per bin of 8
    target = np.array([0, 1, 1, 0, 0, 1, 0, 1])
    b = [(torch.tensor(preds[i : i + 2]), torch.tensor(target[i : i + 2])) for i in range(0, 8, 2)]
    if kind == "torchmetrics":
        b = [(p, y.double()) for p, y in b]
    metric, other = Windowed(factory(), 4), Windowed(factory(), 4)  # the window: the newest two updates
    metric.update(*b[0])
    other.update(*b[1])
    with torch.inference_mode():
        if how == "move":
            metric._apply(torch.clone)
        elif how == "merge":
            metric.merge_state(other)
        elif how == "merge-dict":
            metric.merge_state(other.lifetime.metric_state)
        else:
            metric.load_state_dict(other.state_dict())
        metric.update(*b[2])
    metric.update(*b[3])  # in place into the states and the ring: raised
    lifetime = {"move": [0, 2, 3], "merge": [0, 1, 2, 3], "merge-dict": [0, 1, 2, 3], "load": [1, 2, 3]}[how]
    rows = np.concatenate([np.arange(2 * i, 2 * i + 2) for i in lifetime])
    values = metric.compute()
    np.testing.assert_allclose(values["lifetime"].item(), reference(preds[rows], target[rows]), rtol=1e-6)
    np.testing.assert_allclose(values["window"].item(), reference(preds[4:], target[4:]), rtol=1e-6)


# ----------------------------------------------------------------------------- collections, merging, checkpoints


def _binary(rng, n, values=None):
    preds = rng.uniform(size=n) if values is None else rng.choice(values, size=n)
    target = (rng.uniform(size=n) < preds).astype(np.int64)
    target[:2] = (0, 1)  # both classes in every batch
    return torch.tensor(preds), torch.tensor(target)


def _group_mean_auc(preds, target, groups):
    """Mean of sklearn's per-group AUC over the groups holding both classes."""
    values = [
        skm.roc_auc_score(target[groups == g], preds[groups == g])
        for g in np.unique(groups)
        if len(np.unique(target[groups == g])) == 2
    ]
    return float(np.mean(values))


def test_in_a_metric_collection_with_members_that_take_other_keywords():
    """A MetricCollection passes every keyword to every member; Windowed takes only its metric's (as ClasswiseWrapper)."""
    rng = np.random.default_rng(5)
    batches = [(*_binary(rng, 20), torch.tensor(rng.integers(0, 4, 20))) for _ in range(3)]
    collection = MetricCollection(
        {"auc": Windowed(tmx.AUC(), 30), "gauc": tmx.GroupedAUC(), "ctr": Windowed(tmx.CTR(), 30)}
    )
    for i, (p, y, g) in enumerate(batches):
        if i == 1:
            collection(p, y, groups=g)  # forward filters the same way
        else:
            collection.update(p, y, groups=g)
    values = collection.compute()
    p, y, g = (torch.cat(parts).numpy() for parts in zip(*batches))
    last_p, last_y = batches[-1][0].numpy(), batches[-1][1].numpy()  # 20 + 20 > 30: the window is the last batch
    np.testing.assert_allclose(values["auc_lifetime"].item(), skm.roc_auc_score(y, p), rtol=1e-12)
    np.testing.assert_allclose(values["auc_window"].item(), skm.roc_auc_score(last_y, last_p), rtol=1e-12)
    np.testing.assert_allclose(values["gauc"].item(), _group_mean_auc(p, y, g), rtol=1e-12)
    np.testing.assert_allclose(values["ctr_window"].item(), last_y.mean(), rtol=1e-12)


def _auc_ref(p, y):
    return skm.roc_auc_score(y, p)


def _ctr_ref(p, y):
    return y.mean()


MERGE_CASES = {
    "sums": (lambda: tmx.CTR(), _ctr_ref, None),
    "exact": (lambda: tmx.AUC(), _auc_ref, None),
    # five scores in five different bins: the binned AUC is the exact one of these tied scores
    "binned": (lambda: tmx.AUC(num_bins=64), _auc_ref, [0.1, 0.3, 0.5, 0.7, 0.9]),
}


@pytest.mark.parametrize("given", ["metric", "dict"])
@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_merge_state_merges_the_lifetime_and_keeps_this_window(case, given):
    """The lifetime equals one metric over both streams; the window stays this metric's (two streams have no order)."""
    factory, reference, values = MERGE_CASES[case]
    rng = np.random.default_rng(7)
    ours = [_binary(rng, n, values) for n in (5, 4)]
    theirs = [_binary(rng, n, values) for n in (6, 3)]
    later = _binary(rng, 3, values)
    a, b = Windowed(factory(), 8), Windowed(factory(), 8)
    for batch in ours:
        a.update(*batch)
    for batch in theirs:
        b.update(*batch)
    a.merge_state(b if given == "metric" else b.lifetime.metric_state)

    def ref(batches):
        return reference(*(torch.cat(parts).numpy() for parts in zip(*batches)))

    values_now = a.compute()
    np.testing.assert_allclose(values_now["lifetime"].item(), ref(ours + theirs), rtol=1e-12)
    np.testing.assert_allclose(values_now["window"].item(), ref(ours[-1:]), rtol=1e-12)  # 5 + 4 > 8
    a.update(*later)  # the window goes on from its own updates: 4 + 3 <= 8
    values_next = a.compute()
    np.testing.assert_allclose(values_next["lifetime"].item(), ref([*ours, *theirs, later]), rtol=1e-12)
    np.testing.assert_allclose(values_next["window"].item(), ref([ours[-1], later]), rtol=1e-12)
    again = Windowed(factory(), 8)  # and it checkpoints like any window
    again.load_state_dict(a.state_dict())
    assert all(torch.equal(again.compute()[k], values_next[k]) for k in values_next)


def test_many_merges_keep_the_lifetime_short_and_the_window_shared():
    """Merged chunks are joined (3,000 one-sample merges kept 3,000 lifetime chunks); the window's
    chunks, the lifetime's own, are never joined into copies. Values are sklearn's."""
    rng = np.random.default_rng(5)
    n = 3000
    preds, target = rng.random(n).astype(np.float32), (rng.random(n) < 0.4).astype(np.float32)
    a = Windowed(tmx.AUC(), 50)
    for i in range(100):  # the window holds the last 50 of these one-sample updates
        a.update(torch.tensor(preds[i : i + 1]), torch.tensor(target[i : i + 1]))
    for i in range(100, n):
        src = tmx.AUC()
        src.update(torch.tensor(preds[i : i + 1]), torch.tensor(target[i : i + 1]))
        a.merge_state(src.metric_state)
    life, window = a.lifetime.preds, a.window.preds
    assert len(life) <= 2 * 64 + 2 + len(window)
    assert all(any(c is w for c in life) for w in window)  # still the lifetime's own chunks
    values = a.compute()
    np.testing.assert_allclose(values["lifetime"].item(), skm.roc_auc_score(target, preds), rtol=1e-9)
    np.testing.assert_allclose(values["window"].item(), skm.roc_auc_score(target[50:100], preds[50:100]), rtol=1e-9)


@pytest.mark.parametrize(
    ("incoming", "exc", "match"),
    [
        (lambda: Windowed(tmx.NormalizedEntropy(), 8), TypeError, r"Windowed over CTR to merge, got one over Normali"),
        (lambda: Windowed(tmx.CTR(num_tasks=2), 8), ValueError, r"settings \{'num_tasks': 2\}"),
        (
            lambda: {"weighted_pred_sum": torch.zeros(1)},
            ValueError,
            r"missing \['weighted_label_sum', 'weighted_num_samples'\]",
        ),
        (
            lambda: {
                name: torch.zeros(2) for name in ("weighted_pred_sum", "weighted_label_sum", "weighted_num_samples")
            },
            ValueError,
            r"size mismatch for weighted_pred_sum",
        ),
        (lambda: 3, TypeError, r"a Windowed or a dict of the wrapped metric's states, got int"),
    ],
)
def test_merge_state_of_something_else_is_refused(incoming, exc, match):
    metric = Windowed(tmx.CTR(), 8)
    metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    before = _snapshot(metric)
    with pytest.raises(exc, match=match):
        metric.merge_state(incoming())
    assert _same(before, _snapshot(metric))


def _two_tasks_batch(rng, num_tasks, n):
    p = torch.tensor(rng.uniform(size=(num_tasks, n)))
    y = (torch.tensor(rng.uniform(size=(num_tasks, n))) < p).long()
    y[:, :2] = torch.tensor([0, 1])
    return (p.squeeze(0), y.squeeze(0))


# (saved, its number of tasks, loading, the message)
WINDOW_MISMATCHES = [
    (
        lambda: Windowed(tmx.CTR(), 30),
        1,
        lambda: Windowed(tmx.CTR(), 10),
        r"setting mismatch for window_size: the checkpoint was saved with window_size=30, this Windowed\(CTR\) has window_size=10",
    ),
    (
        lambda: Windowed(tmx.NormalizedEntropy(num_tasks=3), 30),
        3,
        lambda: Windowed(tmx.NormalizedEntropy(), 30),
        r"setting mismatch for num_tasks: the checkpoint was saved with num_tasks=3, this Windowed\(NormalizedEntropy\)",
    ),
    (
        lambda: Windowed(tmx.AUC(num_tasks=3), 30),
        3,
        lambda: Windowed(tmx.AUC(), 30),
        r"setting mismatch for num_tasks: .*this Windowed\(AUC\) has num_tasks=1",
    ),
    (
        lambda: Windowed(tmx.AUC(num_bins=16), 30),
        1,
        lambda: Windowed(tmx.AUC(num_bins=32), 30),
        r"_extra_state: size mismatch for the window's histogram: the checkpoint's has shape \(2, 1, 16\), this metric's \(2, 1, 32\)",
    ),
    # the same histogram shape, other bins: the state names carry the bin settings
    (
        lambda: Windowed(tmx.AUC(num_bins=16), 30),
        1,
        lambda: Windowed(tmx.AUC(num_bins=16, bin_space="probability"), 30),
        r"state mismatch for lifetime.hist_probability: the checkpoint's lifetime holds \['hist'\]",
    ),
    (
        lambda: Windowed(tmx.AUPRC(num_bins=16, logit_range=(-4, 4)), 30),
        1,
        lambda: Windowed(tmx.AUPRC(num_bins=16), 30),
        r"state mismatch for lifetime.hist: the checkpoint's lifetime holds \['hist_logit_m4_4'\]",
    ),
    (
        lambda: Windowed(tmx.AUC(num_bins=16, from_logits=True), 30),
        1,
        lambda: Windowed(tmx.AUC(num_bins=16), 30),
        r"state mismatch for window.hist: the checkpoint's window holds \['hist_logits'\]",
    ),
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("saved", "num_tasks", "loading", "match"), WINDOW_MISMATCHES)
def test_checkpoint_of_another_window_or_wrapped_setting_is_refused(saved, num_tasks, loading, match, strict, tmp_path):
    rng = np.random.default_rng(9)
    trained = saved()
    for n in (12, 9):
        trained.update(*_two_tasks_batch(rng, num_tasks, n))
    torch.save(trained.state_dict(), tmp_path / "window.pt")
    state = torch.load(tmp_path / "window.pt", weights_only=True)
    metric = loading()
    before = _snapshot(metric)
    with pytest.raises(RuntimeError, match=match) as raised:
        metric.load_state_dict(state, strict=strict)
    assert _same(before, _snapshot(metric))  # neither the ring nor the lifetime and window states loaded
    # the states withheld from the children are not reported missing (they are in the checkpoint)
    assert "Missing key" not in str(raised.value)


def test_ring_of_another_shape_is_refused_without_metadata():
    """A checkpoint stripped of its metadata (a plain dict) still cannot load a ring of another task count."""
    rng = np.random.default_rng(10)
    trained = Windowed(tmx.NormalizedEntropy(num_tasks=3), 30)
    trained.update(*_two_tasks_batch(rng, 3, 12))
    metric = Windowed(tmx.NormalizedEntropy(), 30)
    before = _snapshot(metric)
    with pytest.raises(RuntimeError, match=r"_extra_state: size mismatch for the window's `cross_entropy_sum`"):
        metric.load_state_dict(dict(trained.state_dict()))
    assert metric._ring.count == 0 and _same(before, _snapshot(metric))


def _older_mse_window(window_size):
    """A Windowed(WeightedMSE) checkpoint as 6da4f1c wrote it: no metadata, and neither in the lifetime and window
    states nor in the ring the `label_sum`/`label_squared_sum` states added since; plus the three batches it saw."""
    g = torch.Generator().manual_seed(8)
    p, y = torch.rand(6, 30, generator=g), torch.rand(6, 30, generator=g)
    saved = Windowed(tmx.WeightedMSE(), window_size)
    for i in range(3):
        saved.update(p[i], y[i])
    added = ("label_sum", "label_squared_sum")
    old = {k: v for k, v in saved.state_dict().items() if not k.endswith(added)}
    ring = old["_extra_state"]
    old["_extra_state"] = {
        part: {n: v for n, v in value.items() if n not in added} if part in ("rings", "back") else value
        for part, value in ring.items()
    }
    assert sorted(old["_extra_state"]["rings"]) == ["sum_absolute_error", "sum_squared_error", "weighted_num_samples"]
    return old, p, y


def test_an_older_format_window_is_refused_with_strict_saying_what_to_do():
    """The older ring was refused strict or not, its message naming neither the older format nor strict=False."""
    old, _, _ = _older_mse_window(45)
    metric = Windowed(tmx.WeightedMSE(), 45)
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*an older format.*strict=False resumes the rest"):
        metric.load_state_dict(old)


def test_an_older_format_window_starts_afresh_with_strict_false():
    old, p, y = _older_mse_window(60)
    metric = Windowed(tmx.WeightedMSE(), 60)
    metric.update(p[5], y[5])  # what it held before the load is not kept: it starts afresh
    with pytest.warns(UserWarning, match=r"Windowed\(WeightedMSE\).*window is of an older format.*starts afresh"):
        result = metric.load_state_dict(old, strict=False)
    states = ("sum_squared_error", "sum_absolute_error", "weighted_num_samples", "label_sum", "label_squared_sum")
    expected = ["_extra_state"] + [f"{child}.{name}" for child in ("lifetime", "window") for name in states]
    assert sorted(result.missing_keys) == sorted(expected) and not result.unexpected_keys
    for i in range(3, 6):
        metric.update(p[i], y[i])
    values = metric.compute()
    pn, yn = p.double().numpy(), y.double().numpy()
    np.testing.assert_allclose(values["lifetime"].item(), np.mean((pn[3:] - yn[3:]) ** 2), rtol=1e-12)  # afresh
    np.testing.assert_allclose(values["window"].item(), np.mean((pn[4:] - yn[4:]) ** 2), rtol=1e-12)  # the last 60


@pytest.mark.parametrize("strict", [True, False])
def test_an_older_binned_window_layout_starts_afresh(strict):
    """Before the window kept each sample's bin index it kept one dense histogram per update (a ring's parts):
    those updates cannot be split into samples again. The lifetime and window start afresh with it."""
    g = torch.Generator().manual_seed(9)
    p, y = torch.rand(2, 50, generator=g), torch.randint(0, 2, (2, 50), generator=g)
    saved = Windowed(tmx.AUC(num_bins=8), 120)
    saved.update(p[0], y[0])
    saved.update(p[1], y[1])
    hist = saved.lifetime.metric_state["hist"]
    old = {  # as 6da4f1c wrote it: no metadata, its ring of per-update histograms
        "_extra_state": {
            "sizes": [50, 50],
            "front": 1,
            "rings": {"hist": torch.stack([hist / 2, hist / 2])},
            "back": {"hist": torch.zeros_like(hist)},
            "chunks": {},
        },
        "lifetime.hist": hist.clone(),
        "window.hist": hist.clone(),
    }
    metric = Windowed(tmx.AUC(num_bins=8), 120)
    fresh = _snapshot(metric)
    if strict:
        with pytest.raises(RuntimeError, match=r"(?s)Missing key.*Windowed\(AUC\).*window is of an older format"):
            metric.load_state_dict(old)
        return
    with pytest.warns(UserWarning, match="window is of an older format"):
        result = metric.load_state_dict(old, strict=False)
    assert sorted(result.missing_keys) == ["_extra_state", "lifetime.hist", "window.hist"]
    assert _same(fresh, _snapshot(metric))  # nothing of it read: lifetime, window and ring as built
    assert metric._hist.state()["sizes"] == []


def test_a_module_with_an_older_format_window_resumes_the_rest_with_strict_false():
    """A RecMetricModule(window_size=...) holding `mse` saved by 6da4f1c could not be resumed at all."""
    old_window, p, y = _older_mse_window(60)
    saved = tmx.RecMetricModule(["click"], {"ne": "ne", "mse": "mse"}, window_size=60, throughput=False)
    for i in range(3):
        saved.update({"prediction": p[i], "label": (y[i] > 0.5).long()})
    state = {k: v for k, v in saved.state_dict().items() if not k.startswith("metrics.mse.")}
    state.update({f"metrics.mse.{k}": v for k, v in old_window.items()})  # its mse as the older version wrote it
    module = tmx.RecMetricModule(["click"], {"ne": "ne", "mse": "mse"}, window_size=60, throughput=False)
    with pytest.raises(RuntimeError, match=r"(?s)metrics\.mse: .*older format.*start those metrics afresh"):
        module.load_state_dict(copy.copy(state))
    with pytest.warns(UserWarning, match=r"metrics\.mse: .*older format"):
        result = module.load_state_dict(copy.copy(state), strict=False)
    assert result.missing_keys and all(k.startswith("metrics.mse.") for k in result.missing_keys)
    for i in range(3, 6):
        module.update({"prediction": p[i], "label": (y[i] > 0.5).long()})
    values = module.compute()
    labels = (y > 0.5).double().numpy()
    pn = p.double().numpy()
    np.testing.assert_allclose(values["mse/click"].item(), np.mean((pn[3:] - labels[3:]) ** 2), rtol=1e-12)  # afresh
    ne = skm.log_loss(labels.ravel(), pn.ravel()) / skm.log_loss(labels.ravel(), np.full(labels.size, labels.mean()))
    np.testing.assert_allclose(values["ne/click"].item(), ne, rtol=1e-9)  # resumed: all six batches


def _resize_module(window_size, task, names):
    specs = {
        "ne": "ne",
        "ctr": "ctr",
        "auc": "auc",
        "auc_binned": lambda num_tasks: tmx.AUC(num_tasks=num_tasks, num_bins=10, bin_space="probability"),
        "hit_rate@2": "hit_rate@2",
    }
    return tmx.RecMetricModule([task], {n: specs[n] for n in names}, window_size=window_size, throughput=False)


def _resize_refs(p, y, w, ranges) -> dict[str, float]:
    """numpy/sklearn values of NE, CTR, exact and binned AUC over the samples in ``ranges``."""
    pick = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
    p, y, w = p[pick], y[pick], w[pick]
    ne = skm.log_loss(y, p, sample_weight=w) / skm.log_loss(
        y, np.full(y.size, np.average(y, weights=w)), sample_weight=w
    )
    return {
        "ne": ne,
        "ctr": float((w * y).sum() / w.sum()),
        "auc": skm.roc_auc_score(y, p, sample_weight=w),
        "auc_binned": skm.roc_auc_score(y, _probability_bins(p, 10), sample_weight=w),
    }


@pytest.mark.parametrize("through_parent", [False, True])
@pytest.mark.parametrize(("saved_window", "window"), [(6, 16), (16, 4), (None, 16)])
def test_a_module_resumes_its_lifetime_with_another_window_size(saved_window, window, through_parent):
    """A module checkpoint of ``window_size=W1`` was refused by a module of ``W2`` (strict or not): now the lifetime
    resumes and the window, which a ring of another size cannot carry exactly, starts empty and holds the steps
    after the resume by the window rule (sums on one shared ring, exact samples, a binned histogram)."""
    rng = np.random.default_rng(5)
    n, pre, post = 40, [(0, 8), (8, 16), (16, 24)], [(24, 30), (30, 35), (35, 40)]
    p, w = rng.uniform(0.05, 0.95, n), rng.uniform(0.5, 2.0, n)
    y = (rng.uniform(size=n) < p).astype(float)
    task = tmx.RecTaskInfo("click", "y", "p", "w")
    names = ("ne", "ctr", "auc", "auc_binned")

    def step(lo, hi):
        return {"p": torch.tensor(p[lo:hi]), "y": torch.tensor(y[lo:hi]), "w": torch.tensor(w[lo:hi])}

    saved, module = _resize_module(saved_window, task, names), _resize_module(window, task, names)
    for lo, hi in pre:
        saved.update(step(lo, hi))
    if through_parent:  # as Lightning restores a LightningModule holding the module
        saved, module = torch.nn.ModuleDict({"rec": saved}), torch.nn.ModuleDict({"rec": module})
    state = saved.state_dict()
    metadata = copy.deepcopy(dict(state._metadata))
    result = module.load_state_dict(state)  # strict
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert dict(state._metadata) == metadata  # the caller's checkpoint is not edited
    module = module["rec"] if through_parent else module
    for lo, hi in post:
        module.update(step(lo, hi))
    values = module.compute()
    lifetime, recent = _resize_refs(p, y, w, [(0, n)]), _resize_refs(p, y, w, W.kept_ranges(post, window))
    for name in names:
        np.testing.assert_allclose(values[f"{name}/click"].item(), lifetime[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(values[f"{name}/click/window"].item(), recent[name], rtol=1e-6, err_msg=name)


def _ref_hit_rate(p, y, k, queries) -> float:
    """The mean over queries holding a positive of whether one is among the ``k`` highest scores."""
    hits = []
    for q in np.unique(queries):
        order = np.argsort(-p[queries == q], kind="stable")
        labels = y[queries == q][order]
        if labels.any():
            hits.append(labels[:k].any())
    return float(np.mean(hits))


@pytest.mark.parametrize(("saved_window", "window"), [(None, 24), (24, None), (12, 24)])
def test_a_ranking_metric_resumes_its_lifetime_across_a_window_change(saved_window, window):
    """The per-task copies of a ranking metric (``ranking.<name>.<i>``) resume across a window change as well."""
    rng = np.random.default_rng(6)
    n, pre, post = 48, [(0, 12), (12, 24)], [(24, 36), (36, 48)]  # queries of 6 rows, whole in each step
    p, queries = rng.uniform(size=n), np.arange(n) // 6
    y = (rng.uniform(size=n) < 0.3).astype(float)
    task = tmx.RecTaskInfo("click", "y", "p", session_id_name="q")
    names = ("ctr", "hit_rate@2")

    def step(lo, hi):
        return {"p": torch.tensor(p[lo:hi]), "y": torch.tensor(y[lo:hi]), "q": torch.tensor(queries[lo:hi])}

    saved, module = _resize_module(saved_window, task, names), _resize_module(window, task, names)
    for lo, hi in pre:
        saved.update(step(lo, hi))
    result = module.load_state_dict(saved.state_dict())
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    for lo, hi in post:
        module.update(step(lo, hi))
    values = module.compute()
    assert values["hit_rate@2/click"].item() == pytest.approx(_ref_hit_rate(p, y, 2, queries))
    assert values["ctr/click"].item() == pytest.approx(y.mean())
    if window is not None:
        kept = np.concatenate([np.arange(lo, hi) for lo, hi in W.kept_ranges(post, window)])
        assert values["hit_rate@2/click/window"].item() == pytest.approx(
            _ref_hit_rate(p[kept], y[kept], 2, queries[kept])
        )
        assert values["ctr/click/window"].item() == pytest.approx(y[kept].mean())


def _probability_bins(p, num_bins):
    """Independent bin index of probabilities in ``num_bins`` uniform probability bins (the top edge in the last)."""
    return np.minimum(np.floor(np.asarray(p) * num_bins), num_bins - 1)


BIN_SETTINGS = [
    {"bin_space": "probability"},
    {"logit_range": (-4.0, 4.0)},
    {"from_logits": True},
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("legacy", [False, True], ids=["ring-names-its-state", "ring-saved-before"])
@pytest.mark.parametrize(
    ("saved", "loading"),
    [({}, s) for s in BIN_SETTINGS] + [(s, {}) for s in BIN_SETTINGS],
    ids=[f"{d}-{next(iter(s))}" for d in ("to", "from") for s in BIN_SETTINGS],
)
def test_binned_window_of_other_bin_settings_is_refused_before_anything_loads(saved, loading, legacy, strict):
    """Same histogram shape, other bins: the checkpoint's bin indices mean other scores, so nothing loads.

    It used to load the ring (then raise for the missing keys with ``strict=True``, or go on with the
    other setting's bin indices read as its own with ``strict=False``).
    """
    p_src = torch.tensor([0.05, 0.3, 0.45, 0.55, 0.7, 0.95], dtype=torch.float64)
    source = Windowed(tmx.AUC(num_bins=10, **saved), window_size=100)
    source.update(p_src, torch.tensor([0, 1, 0, 1, 0, 1]))
    state = source.state_dict()
    if legacy:  # a ring written before it recorded its state's name: checked by the children's keys
        state["_extra_state"] = {k: v for k, v in state["_extra_state"].items() if k != "state"}
    p = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.65], dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 0, 0])
    metric = Windowed(tmx.AUC(num_bins=10, **loading), window_size=100)
    metric.update(p, y)
    before = _snapshot(metric)
    with pytest.raises(RuntimeError, match=r"state mismatch for (lifetime|window)\.hist"):
        metric.load_state_dict(state, strict=strict)
    assert _same(before, _snapshot(metric))  # neither the ring nor the lifetime and window states
    metric.update(p, y)
    if loading.get("bin_space") == "probability":  # its own data twice: sklearn over its own bins
        expected = skm.roc_auc_score(np.r_[y, y], np.r_[_probability_bins(p, 10), _probability_bins(p, 10)])
        values = metric.compute()
        assert values["lifetime"].item() == pytest.approx(expected, abs=1e-12)
        assert values["window"].item() == pytest.approx(expected, abs=1e-12)


def test_a_binned_ring_of_other_bin_settings_is_refused_by_set_extra_state():
    source = Windowed(tmx.AUC(num_bins=10), window_size=100)
    source.update(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    metric = Windowed(tmx.AUC(num_bins=10, bin_space="probability"), window_size=100)
    metric.update(torch.tensor([0.9, 0.1, 0.3]), torch.tensor([1, 0, 0]))
    before = _snapshot(metric)
    with pytest.raises(
        ValueError, match=r"bin indices are those of `hist`, this metric's histogram is `hist_probability`"
    ):
        metric.set_extra_state(source.get_extra_state())
    assert _same(before, _snapshot(metric))


WINDOW_KINDS = {
    "sum ring": lambda: tmx.CTR(),
    "exact samples": lambda: tmx.AUC(),
    "binned histogram": lambda: tmx.AUC(num_bins=10, bin_space="probability"),
}


def _reference(kind, p, y):
    """Independent value over the samples ``p``, ``y`` (numpy / scikit-learn)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if kind == "sum ring":
        return y.mean()
    scores = p if kind == "exact samples" else _probability_bins(p, 10)
    return skm.roc_auc_score(y, scores)


def _window_values(metric):
    return {k: v.item() for k, v in metric.compute().items()}


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_a_non_persistent_window_saves_nothing_and_its_checkpoint_loads_nothing(kind):
    """``persistent(False)``: no ring in ``state_dict`` either; loading it leaves the metric as it was.

    The ring used to be saved alone: loaded, it restored a window of samples the lifetime never saw.
    """
    p_a, y_a = [0.2, 0.7, 0.6, 0.9], [0, 1, 0, 1]
    p_b, y_b = [0.3, 0.8, 0.4], [1, 1, 0]
    p_c, y_c = [0.1, 0.55], [0, 1]
    saved = Windowed(WINDOW_KINDS[kind](), window_size=8)
    saved.update(torch.tensor(p_a), torch.tensor(y_a))
    saved.persistent(False)
    assert saved.get_extra_state() is None
    state = saved.state_dict()
    assert list(state) == []
    for persistent in (False, True):
        metric = Windowed(WINDOW_KINDS[kind](), window_size=8)
        metric.update(torch.tensor(p_b), torch.tensor(y_b))
        metric.persistent(persistent)
        before = _snapshot(metric)
        result = metric.load_state_dict(state, strict=False)
        assert _same(before, _snapshot(metric))
        assert "_extra_state" not in result.missing_keys
        if not persistent:
            metric.load_state_dict(state)  # strict: a non-persistent metric expects nothing
        metric.update(torch.tensor(p_c), torch.tensor(y_c))
        expected = _reference(kind, p_b + p_c, y_b + y_c)  # its own samples only: 5 in a window of 8
        assert _window_values(metric) == pytest.approx({"lifetime": expected, "window": expected}, abs=1e-12)


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_a_ring_saved_without_the_lifetime_loads_nothing(kind):
    """A non-persistent Windowed's checkpoint of earlier versions: the ring alone, without the lifetime states."""
    saved = Windowed(WINDOW_KINDS[kind](), window_size=8)
    saved.update(torch.tensor([0.2, 0.7, 0.6, 0.9]), torch.tensor([0, 1, 0, 1]))
    state = {"_extra_state": saved.get_extra_state()}
    p, y = [0.3, 0.8, 0.4], [1, 1, 0]
    for persistent in (False, True):
        metric = Windowed(WINDOW_KINDS[kind](), window_size=8)
        metric.persistent(persistent)
        metric.update(torch.tensor(p), torch.tensor(y))
        before = _snapshot(metric)
        metric.load_state_dict(state, strict=False)
        assert _same(before, _snapshot(metric))
        metric.update(torch.tensor(p), torch.tensor(y))
        expected = _reference(kind, p + p, y + y)
        assert _window_values(metric) == pytest.approx({"lifetime": expected, "window": expected}, abs=1e-12)


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_a_non_persistent_window_loads_a_full_checkpoint_whole(kind):
    """As TorchMetrics loads the states a checkpoint holds: lifetime, window and ring together."""
    batches = [([0.2, 0.7, 0.6, 0.9], [0, 1, 0, 1]), ([0.3, 0.8, 0.4], [1, 1, 0]), ([0.1, 0.55, 0.35], [0, 1, 1])]
    saved = Windowed(WINDOW_KINDS[kind](), window_size=7)
    for p, y in batches[:2]:
        saved.update(torch.tensor(p), torch.tensor(y))
    metric = Windowed(WINDOW_KINDS[kind](), window_size=7)
    metric.persistent(False)
    metric.load_state_dict(saved.state_dict())
    p, y = batches[2]
    metric.update(torch.tensor(p), torch.tensor(y))
    everything = [[v for b in batches for v in b[i]] for i in (0, 1)]
    window = [[v for b in batches[1:] for v in b[i]] for i in (0, 1)]  # 6 samples of 7: the first batch left
    assert _window_values(metric) == pytest.approx(
        {"lifetime": _reference(kind, *everything), "window": _reference(kind, *window)}, abs=1e-12
    )


def test_clock_metrics_are_refused():
    """TowerQPS/Throughput seconds add up within a rank and take the max across ranks: no per-update statistic."""
    for metric in (tmx.TowerQPS(), tmx.Throughput()):
        with pytest.raises(ValueError, match=f"Windowed cannot wrap {type(metric).__name__}: its elapsed seconds"):
            Windowed(metric, window_size=300)
    # a counts vector aligned to first-seen categories does not add up per update (it once failed on
    # its list state's reduction, an internal message)
    with pytest.raises(ValueError, match="Windowed cannot wrap CategoricalCount: its counts vector grows"):
        Windowed(tmx.aggregation.CategoricalCount(), window_size=300)


def test_a_binned_histogram_held_before_wrapping_stays_in_the_lifetime():
    rng = np.random.default_rng(7)
    p1, y1 = rng.random(50), rng.integers(0, 2, 50)
    p2, y2 = rng.random(4), np.array([0, 1, 1, 1])
    metric = tmx.AUC(num_bins=1000)
    metric.update(torch.tensor(p1), torch.tensor(y1))  # before wrapping: "stays in the lifetime value"
    windowed = Windowed(metric, window_size=10)
    windowed.update(torch.tensor(p2), torch.tensor(y2))
    values = windowed.compute()
    # 1000 bins over the logit range: a few ties differ from sklearn's exact value, so compare loosely
    np.testing.assert_allclose(values["lifetime"].item(), skm.roc_auc_score(np.r_[y1, y2], np.r_[p1, p2]), atol=0.02)
    assert windowed.lifetime.metric_state[metric._histogram_state].sum().item() == 54  # every sample counted


def test_compute_after_load_state_dict_gives_the_loaded_value():
    """A value cached by compute() before the load is not served afterwards (plain and windowed)."""
    p_a, y_a = torch.tensor([0.2, 0.9, 0.4]), torch.tensor([0, 1, 1])
    p_b, y_b = torch.tensor([0.9, 0.2, 0.4, 0.1]), torch.tensor([0, 1, 1, 0])
    for make in (lambda: Windowed(tmx.CTR(), 4), lambda: tmx.CTR()):
        a, b = make(), make()
        if isinstance(b, tmx.CTR):
            a.persistent(True)
            b.persistent(True)
        a.update(p_a, y_a)
        b.update(p_b, y_b)
        a.compute()
        a.load_state_dict(b.state_dict())
        value = a.compute()
        expected = 0.5  # b's labels: 2 of 4
        if isinstance(value, dict):
            assert {k: v.item() for k, v in value.items()} == {"lifetime": expected, "window": expected}
        else:
            assert value.item() == expected


@pytest.mark.parametrize("kind", ["ctr", "exact auc", "binned auc"])
def test_a_checkpoint_without_the_update_limit_keeps_the_newest_updates_when_loaded_with_one(kind):
    """A ring saved before ``max_updates`` was recorded (more updates than the limit) keeps the newest ones."""
    from sklearn.metrics import roc_auc_score

    from torchmetrics_ext.metrics._checkpoints import _SETTINGS_KEY

    factory = {"ctr": tmx.CTR, "exact auc": tmx.AUC, "binned auc": lambda: tmx.AUC(num_bins=8)}[kind]
    gen = torch.Generator().manual_seed(3)
    steps = [(torch.rand(3, generator=gen), torch.tensor([0.0, 1.0, float(i % 2)])) for i in range(5)]
    saved = Windowed(factory(), window_size=1000)
    for p, y in steps:
        saved.update(p, y)
    state = saved.state_dict()
    del state._metadata[""][_SETTINGS_KEY]["max_updates"]  # what a checkpoint of an earlier version records
    loaded = Windowed(factory(), window_size=1000, max_updates=2)
    loaded.load_state_dict(state)
    p, y = torch.cat([s[0] for s in steps[3:]]), torch.cat([s[1] for s in steps[3:]])
    if kind == "ctr":
        expected = y.mean().item()
    elif kind == "exact auc":
        expected = roc_auc_score(y.numpy(), p.numpy())
    else:  # the exact AUC of the 8-bin logit histogram's bins: sklearn over the bin indices
        bins = ((torch.logit(p.double()) + 16) * (8 / 32)).clamp(0, 7).floor()
        expected = roc_auc_score(y.numpy(), bins.numpy())
    assert loaded.compute()["window"].item() == pytest.approx(expected, abs=1e-12)


def test_a_merge_of_other_settings_says_merged_not_checkpoint():
    a, b = Windowed(tmx.AUC(num_bins=10), 5), Windowed(tmx.AUC(num_bins=20), 5)
    with pytest.raises(ValueError, match=r"merged metric's state has shape \(2, 1, 20\)") as info:
        a.merge_state(b)
    assert "checkpoint" not in str(info.value)


@pytest.mark.parametrize("name", ["Sum", "Mean", "Max", "Min"])
def test_aggregation_metrics_count_rows_of_their_values_as_samples(name):
    """A (5, 3) value larger than a window of 4 keeps its newest 4 rows (was cut by column: 3 samples)."""
    from torchmetrics_ext import aggregation as ag

    batches = [np.ones((2, 3)), 2 * np.ones((2, 3)), np.arange(15.0).reshape(5, 3)]
    metric = Windowed(getattr(ag, name)(), window_size=4)
    for batch in batches:
        metric.update(torch.tensor(batch))
    kept = batches[-1][-4:]  # the last update alone is larger than the window: its newest 4 rows
    reduce = {"Sum": np.sum, "Mean": np.mean, "Max": np.max, "Min": np.min}[name]
    assert metric.compute()["window"].item() == pytest.approx(reduce(kept))
    assert metric.compute()["lifetime"].item() == pytest.approx(reduce(np.concatenate(batches)))


@pytest.mark.parametrize("kind", ["one task", "two tasks", "dict value"])
def test_a_window_plots_its_lifetime_and_window_values(kind):
    """Windowed.plot raised NotImplementedError (README: every metric plots); each number is a series."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    gen = torch.Generator().manual_seed(3)
    if kind == "dict value":
        metric = Windowed(tmx.RankingMetrics(ks=(1, 3), metrics=("ndcg",)), window_size=6)
        metric.update(
            torch.rand(6, generator=gen), torch.tensor([1, 0, 0, 0, 1, 1]), indexes=torch.tensor([0] * 3 + [1] * 3)
        )
        names = ["lifetime/ndcg@1", "lifetime/ndcg@3", "window/ndcg@1", "window/ndcg@3"]
    else:
        tasks = 2 if kind == "two tasks" else 1
        metric = Windowed(tmx.CTR(num_tasks=tasks), window_size=4)
        metric.update(
            torch.rand(tasks, 6, generator=gen).squeeze(0), (torch.rand(tasks, 6, generator=gen) < 0.5).squeeze(0)
        )
        names = ["lifetime/0", "lifetime/1", "window/0", "window/1"] if tasks == 2 else ["lifetime", "window"]
    _, ax = metric.plot()
    assert [line.get_label() for line in ax.get_lines()] == names
    _, ax = metric.plot([metric.compute(), metric.compute()])  # over steps: one line per number
    assert sorted(line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")) == sorted(names)
    with pytest.raises(TypeError, match=r"dict returned by Windowed\.compute"):
        metric.plot(torch.tensor(0.5))
    matplotlib.pyplot.close("all")


def test_binned_window_keeps_few_spare_blocks() -> None:
    """Blocks dropped while a binned window first fills are not all kept: memory follows the window."""
    window = tmx.Windowed(tmx.AUC(num_bins=100), window_size=2_000)
    for _ in range(300):  # block sizes grow with the updates: many blocks leave at once
        window.update(torch.rand(16), (torch.rand(16) < 0.3).float())
    hist = window._hist
    assert len(hist.spare) <= 2
    assert len(hist.slots) + len(hist.spare) <= 2 * math.isqrt(len(hist.sizes)) + 3


def test_binned_window_of_small_batches_keeps_few_dense_blocks() -> None:
    """Batches far smaller than the bins: a dense block stands for at least half its size in bin indices.

    Batches of 4 into a 100k-sample window of 3 tasks x 1000 bins used to close a 48 KB dense block
    every 8 updates (12 MB for 96 KB of indices after 2000 updates); the window's value is the
    histogram of its samples (numpy) all the same.
    """
    rng = np.random.default_rng(5)
    tasks, bins = 3, 1000
    window = tmx.Windowed(tmx.AUC(num_tasks=tasks, num_bins=bins), window_size=100_000)
    preds, target = rng.random((tasks, 2000 * 4)), (rng.random((tasks, 2000 * 4)) < 0.3).astype(np.int64)
    for i in range(2000):
        cut = slice(4 * i, 4 * i + 4)
        window.update(torch.tensor(preds[:, cut]), torch.tensor(target[:, cut]))
    hist = window._hist
    entries = sum(index.numel() for index in hist.indices)
    assert entries == tasks * 2000 * 4
    assert len(hist.slots) * hist.default.numel() <= 2 * entries  # was 250 blocks: 12x the indices
    z = np.clip((np.log(preds / (1 - preds)) + 16.0) * bins / 32.0, 0, bins - 1).astype(np.int64)
    expected = np.zeros((2, tasks, bins))
    for t in range(tasks):
        np.add.at(expected, (target[t], t, z[t]), 1.0)
    assert np.array_equal(window.window.hist.numpy(), expected)
    assert np.array_equal(window.lifetime.hist.numpy(), expected)


# ----------------------------------------------------------------------------- histograms sharing bin indices
# Reliability's three sums and HindsightTargetPR's two histograms take one bin per sample: their windows keep
# per-update bin indices and values (or an update's dense histograms when those are smaller), not a dense
# slot of every state per update.


def _reliability_reference(p, y, w, bins):
    """numpy: per task and bin (e_b <= p < e_{b+1}, the last bin holding 1) the weight, weighted prediction and
    weighted label sums, ``(3, T, B)``."""
    edges = np.arange(bins + 1) / bins  # each b / B correctly rounded
    out = np.zeros((3, p.shape[0], bins))
    for t in range(p.shape[0]):
        z = np.clip(np.searchsorted(edges, p[t], side="right") - 1, 0, bins - 1)
        for k, v in enumerate((w, w * p[t], w * y[t])):
            np.add.at(out[k, t], z, v)
    return out


def _hindsight_reference(p, y, w, thresholds):
    """numpy: per task, positive and negative label weight by the number of thresholds j / (B - 1) a score
    reaches, ``(2, T, B + 1)``."""
    grid = np.arange(thresholds) / (thresholds - 1)
    out = np.zeros((2, p.shape[0], thresholds + 1))
    for t in range(p.shape[0]):
        reached = np.searchsorted(grid, p[t], side="right")
        np.add.at(out[0, t], reached, w * y[t])
        np.add.at(out[1, t], reached, w * (1 - y[t]))
    return out


SHARED_BINS = {
    "reliability": (lambda bins: tmx.Reliability(num_tasks=3, num_bins=bins), _reliability_reference),
    "hindsight": (lambda bins: tmx.HindsightTargetPR(num_tasks=3, num_thresholds=bins), _hindsight_reference),
}


def _shared_states(metric):
    return np.stack([getattr(metric, name).numpy() for name in metric._names])


def _held_bytes(metric: Windowed) -> int:
    """Bytes of every tensor the wrapper keeps for its window (whatever its layout), each storage once."""
    seen, total = set(), 0

    def walk(value):
        nonlocal total
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, collections.deque)):
            for item in value:
                walk(item)
        elif hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
            walk(vars(value))

    walk({k: v for k, v in vars(metric).items() if k in ("_ring", "_hist")})
    return total


@pytest.mark.parametrize("kind", list(SHARED_BINS))
def test_window_of_shared_bin_histograms_takes_memory_of_its_samples(kind):
    """Batches of 16 into a 1M-sample window of 3 tasks x 1000 bins: the ring kept a dense (T, B) slot of every
    state per update (295 MB for Reliability after 4000 updates, 4.5 GB once full). The window now keeps about
    what its samples' bin indices and values take (4 + 8 K bytes per sample and task) and dense block sums of
    at most twice that; lifetime and window are the numpy histograms of the samples all the same."""
    factory, reference = SHARED_BINS[kind]
    rng = np.random.default_rng(21)
    tasks, bins, n, updates = 3, 1000, 16, 1500
    metric = Windowed(factory(bins), window_size=1_000_000)
    preds = rng.random((tasks, n * updates))
    target = (rng.random((tasks, n * updates)) < 0.3).astype(np.float64)
    for i in range(updates):
        cut = slice(n * i, n * (i + 1))
        metric.update(torch.tensor(preds[:, cut]), torch.tensor(target[:, cut]))
    states = len(metric.lifetime._names)
    entry_bytes = tasks * n * updates * (4 + 8 * states)
    dense_bytes = states * getattr(metric.lifetime, metric.lifetime._names[0]).numel() * 8
    assert _held_bytes(metric) <= 3 * entry_bytes + 8 * dense_bytes  # was 2048 slots: 147 MB, 25x the bound
    expected = reference(preds, target, np.ones(n * updates), bins)
    np.testing.assert_allclose(_shared_states(metric.window), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_shared_states(metric.lifetime), expected, rtol=1e-12, atol=1e-12)
    if kind == "hindsight":  # unweighted hard labels: whole numbers, summed exactly
        assert np.array_equal(_shared_states(metric.window), expected)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", list(SHARED_BINS))
def test_window_of_shared_bin_histograms_equals_numpy_over_the_kept_samples(kind, weighted):
    """Batches of 0..80 samples (kept as bin indices or, larger than the bins, as dense histograms) and one
    larger than the window: window and lifetime equal numpy over exactly the samples the window rule keeps,
    after every few updates through several turns of the window; ``forward`` gives the batch's value."""
    factory, reference = SHARED_BINS[kind]
    rng = np.random.default_rng(13)
    tasks, bins, window = 3, 60, 300  # a batch of more than ~50 samples is kept as its dense histograms
    metric = Windowed(factory(bins), window)
    updates, seen = [], []
    for step in range(220):
        n = 400 if step == 120 else int(rng.integers(0, 81))
        preds = np.floor(rng.random((tasks, n)) * 64) / 64 if not weighted else rng.random((tasks, n))
        target = (rng.random((tasks, n)) < 0.35).astype(np.float64)
        weights = np.floor(rng.random(n) * 4) if weighted else np.ones(n)
        args = (torch.tensor(preds), torch.tensor(target)) + ((torch.tensor(weights),) if weighted else ())
        if step % 4 == 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                metric(*args)
        else:
            metric.update(*args)
        seen.append((preds, target, weights))
        updates.append((preds[:, -window:], target[:, -window:], weights[-window:]))
        kept = _newest_whole_updates(updates, window)
        if step % 9 == 0 or step in (120, 121) or step > 210:
            for got, parts in ((metric.window, kept), (metric.lifetime, seen)):
                p, y, w = (np.concatenate([part[i] for part in parts], axis=-1) for i in range(3))
                expected = reference(p, y, w, bins)
                np.testing.assert_allclose(_shared_states(got), expected, rtol=1e-12, atol=1e-12)
                exact = 2 if kind == "hindsight" else (1 if weighted else 3)  # dyadic or whole: summed exactly
                assert np.array_equal(_shared_states(got)[:exact], expected[:exact])
    hist = metric._hist
    assert {index is None for index in hist.indices} == {False, True}  # both layouts in the window


@pytest.mark.parametrize("kind", list(SHARED_BINS))
def test_window_of_shared_bin_histograms_resumes_mid_window(kind):
    """state_dict, pickle and deepcopy mid-window (bin indices, dense updates, blocks, loose updates): every
    later step has the states of the uninterrupted run, bit for bit; reset empties everything."""
    factory, _ = SHARED_BINS[kind]
    rng = np.random.default_rng(4)
    batches = []
    for step in range(160):
        n = 500 if step == 70 else int(rng.integers(0, 50))
        batches.append(
            (
                torch.tensor(rng.random((3, n))),
                torch.tensor((rng.random((3, n)) < 0.4).astype(np.float64)),
                torch.tensor(rng.random(n) * 2),
            )
        )
    metric = Windowed(factory(30), 400)
    for batch in batches[:90]:
        metric.update(*batch)
    state = copy.deepcopy(metric.state_dict())
    resumed = Windowed(factory(30), 400)
    resumed.load_state_dict(state)
    copies = [resumed, pickle.loads(pickle.dumps(metric)), copy.deepcopy(metric)]
    for step, batch in enumerate(batches[90:]):
        metric.update(*batch)
        for k, other in enumerate(copies):
            other.update(*batch)
            for child in ("lifetime", "window"):
                assert np.array_equal(_shared_states(getattr(other, child)), _shared_states(getattr(metric, child))), (
                    f"copy {k} {child} step {step}"
                )
    metric.reset()
    assert metric.get_extra_state()["sizes"] == []
    assert not _shared_states(metric.lifetime).any() and not _shared_states(metric.window).any()


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("kind", list(SHARED_BINS))
def test_an_older_ring_of_shared_bin_histograms_starts_afresh(kind, strict):
    """Before, these windows kept a dense slot of every state per update (a ring's parts): such a checkpoint's
    updates cannot be split into samples again, so lifetime and window start afresh, with the note AUC gives."""
    factory, _ = SHARED_BINS[kind]
    g = torch.Generator().manual_seed(2)
    batches = [
        (torch.rand(3, 20, generator=g, dtype=torch.float64), torch.randint(0, 2, (3, 20), generator=g))
        for _ in range(2)
    ]
    saved = Windowed(factory(8), 100)
    per_update = []
    for p, y in batches:
        saved.update(p, y.double())
        one = factory(8)
        one.update(p, y.double())
        per_update.append(one.metric_state)
    names = saved.lifetime._names
    old = saved.state_dict()  # its metadata and lifetime / window states, with the ring the earlier version wrote
    old["_extra_state"] = {
        "sizes": [20, 20],
        "front": 0,
        "rings": {n: torch.stack([u[n] for u in per_update]) for n in names},
        "back": {n: per_update[0][n] + per_update[1][n] for n in names},
        "chunks": {},
    }
    metric = Windowed(factory(8), 100)
    fresh = _snapshot(metric)
    owner = type(metric.lifetime).__name__
    if strict:
        with pytest.raises(RuntimeError, match=rf"(?s)Missing key.*Windowed\({owner}\).*window is of an older format"):
            metric.load_state_dict(old)
        assert _same(fresh, _snapshot(metric))
        return
    with pytest.warns(UserWarning, match="window is of an older format"):
        result = metric.load_state_dict(old, strict=False)
    assert sorted(result.missing_keys) == sorted(
        ["_extra_state", *(f"{c}.{n}" for c in ("lifetime", "window") for n in names)]
    )
    assert _same(fresh, _snapshot(metric))  # nothing of it read: lifetime, window and ring as built
    metric.update(*batches[1][:1], batches[1][1].double())  # and it runs on from there
    assert metric.window.metric_state[names[0]].sum() > 0


@pytest.mark.parametrize(
    ("factory", "reference"),
    [(tmx.AUC, skm.roc_auc_score), (tmx.AUPRC, skm.average_precision_score)],
    ids=["auc", "auprc"],
)
@pytest.mark.parametrize("cut", [False, True])
def test_binned_window_takes_weights_that_require_grad(factory, reference, cut):
    """Weights from a model (requiring grad) are read detached into the histogram window: every compute
    gives scikit-learn's value of the binned scores (no autograd graph kept, no error, no nan), and
    ``forward`` as well. With ``cut`` the batch is larger than the window (the window keeps its newest rows)."""
    rng = np.random.default_rng(17)
    n, window = 40, (25 if cut else 100)
    p = rng.uniform(0.02, 0.98, n)
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    y[-2:] = (0, 1)
    w = rng.uniform(0.2, 3.0, n)
    weights = torch.tensor(w, requires_grad=True)
    metric = Windowed(factory(num_bins=20, bin_space="probability"), window)
    bins = np.clip(np.floor(p.astype(np.float32) * np.float32(20)), 0, 19)  # the documented probability bins
    expected = {
        "lifetime": reference(y, bins, sample_weight=w),
        "window": reference(y[-min(n, window) :], bins[-min(n, window) :], sample_weight=w[-min(n, window) :]),
    }
    batch = (torch.tensor(p), torch.tensor(y), weights)
    value = metric(*batch)
    for part, expect in expected.items():
        assert value[part].item() == pytest.approx(expect, rel=1e-12), f"forward {part}"
    metric.update(*batch)
    for _ in range(2):  # the first compute raised; every later one gave a nan window
        out = metric.compute()
        for part, expect in expected.items():
            assert out[part].grad_fn is None, part
            assert out[part].item() == pytest.approx(expect, rel=1e-12), part


def _one_sided_job(rank, world_size):
    """Both ranks update and compute; then only rank 0 updates, and both compute again."""
    from torchmetrics import SumMetric

    metrics = {"torchmetrics": Windowed(SumMetric(), 100), "ours": Windowed(tmx.CTR(), 100)}
    first = torch.tensor([0.25, 0.5]) + rank
    for name, metric in metrics.items():
        metric.update(first / 4, (first > 1).float()) if name == "ours" else metric.update(first)
    before = {name: {k: v.item() for k, v in m.compute().items()} for name, m in metrics.items()}
    if rank == 0:
        metrics["torchmetrics"].update(torch.tensor([4.0]))
        metrics["ours"].update(torch.tensor([0.5]), torch.tensor([1.0]))
    after = {name: {k: v.item() for k, v in m.compute().items()} for name, m in metrics.items()}
    return before, after


@pytest.mark.ddp
def test_a_rank_that_did_not_update_since_compute_syncs_again(ddp_pool):
    """A rank without update since its last compute joins the others' sync (TorchMetrics' cached value
    would be stale on it, and leave the updated rank waiting in the sync alone)."""
    sums = [0.25 + 0.5 + 1.25 + 1.5, 0.25 + 0.5 + 1.25 + 1.5 + 4.0]
    ctr = [2 / 4, 3 / 5]  # labels: rank 1's two rows, then rank 0's one more
    for before, after in ddp_pool.run(_one_sided_job):
        for part in ("lifetime", "window"):
            assert before["torchmetrics"][part] == pytest.approx(sums[0])
            assert after["torchmetrics"][part] == pytest.approx(sums[1])
            assert before["ours"][part] == pytest.approx(ctr[0])
            assert after["ours"][part] == pytest.approx(ctr[1])


def _manual_sync_then_local_job(rank, world_size):
    """sync_on_compute=False: a compute inside sync_context() (or after sync()) is of every rank; the next
    compute() of this rank's own states; and a synced exact metric merges into another (all ranks' rows)."""
    p, y = torch.tensor([0.5, 0.5]), torch.tensor([float(rank), 1.0])
    plain, windowed = tmx.CTR(sync_on_compute=False), Windowed(tmx.CTR(), 10, sync_on_compute=False)
    out = {}
    for name, metric in (("plain", plain), ("windowed", windowed)):
        metric.update(p, y)
        with metric.sync_context():
            synced = metric.compute()
        after = metric.compute()
        metric.sync()
        synced_again = metric.compute()
        out[name] = [_scalars(v) for v in (synced, after, synced_again, metric.compute())]
    auc = tmx.AUC()
    auc.update(
        torch.tensor([0.2, 0.8]) + 0.05 * rank, torch.tensor([0.0, 1.0]) if rank == 0 else torch.tensor([1.0, 0.0])
    )
    auc.sync()  # its list states are now single tensors of every rank's rows
    merged = tmx.AUC(sync_on_compute=False)
    merged.merge_state(auc)
    out["merged"] = merged.compute().item()
    return out


def _scalars(value):
    return {k: v.item() for k, v in value.items()} if isinstance(value, dict) else value.item()


@pytest.mark.ddp
def test_a_compute_of_synced_states_is_not_kept_after_the_unsync(ddp_pool):
    rows = ([0.2, 0.8, 0.25, 0.85], [0, 1, 1, 0])
    for rank, out in enumerate(ddp_pool.run(_manual_sync_then_local_job)):
        own = (rank + 1.0) / 2  # this rank's CTR: labels (rank, 1) over weight 2
        assert out["plain"] == pytest.approx([0.75, own, 0.75, own])
        both = {"lifetime": 0.75, "window": 0.75}
        mine = {"lifetime": own, "window": own}
        assert out["windowed"] == [pytest.approx(v) for v in (both, mine, both, mine)]
        assert out["merged"] == pytest.approx(skm.roc_auc_score(rows[1], rows[0]))


@pytest.mark.parametrize("how", ["update", "forward"])
def test_torchmetrics_running_keeps_each_batch_of_exact_metrics(how):
    """TorchMetrics' ``Running`` keeps each batch's states, then resets the metric: list states must survive.

    TorchMetrics empties list states in place at ``reset()``, which emptied the rows ``Running``
    kept (``nan`` through ``update``, the last batch's value through ``forward``).
    """
    from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score
    from torchmetrics.wrappers import Running

    gen = torch.Generator().manual_seed(0)
    preds, target = torch.rand(90, generator=gen), (torch.rand(90, generator=gen) < 0.4).long()
    scores = torch.rand(3, 4, 6, generator=gen)  # 3 batches of 4 queries x 6 candidates
    relevance = torch.randint(0, 3, (3, 4, 6), generator=gen)
    relevance[..., 0] = 1  # every query has a relevant candidate
    auc, ap = Running(tmx.AUC(), window=2), Running(tmx.AUPRC(), window=2)
    ndcg = Running(tmx.NDCG(k=3), window=2)
    for i in range(3):
        rows = slice(30 * i, 30 * (i + 1))
        for running, args in ((auc, (preds[rows], target[rows])), (ap, (preds[rows], target[rows]))):
            getattr(running, how)(*args)
        getattr(ndcg, how)(scores[i], relevance[i])
    last = slice(30, 90)
    assert auc.compute().item() == pytest.approx(roc_auc_score(target[last], preds[last]), abs=1e-12)
    assert ap.compute().item() == pytest.approx(average_precision_score(target[last], preds[last]), abs=1e-12)
    expected = ndcg_score(relevance[1:].reshape(8, 6).numpy(), scores[1:].reshape(8, 6).numpy(), k=3)
    assert ndcg.compute().item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "build",
    [
        lambda: tmx.Throughput(),
        lambda: tmx.TowerQPS(num_tasks=1),
        lambda: tmx.Windowed(tmx.NormalizedEntropy(), 40),
    ],
    ids=["Throughput", "TowerQPS", "Windowed"],
)
def test_torchmetrics_running_refuses_what_it_cannot_window(build):
    """``Running`` combines batches with the ranks' reductions and resets after every batch: it gave
    ``Throughput`` twice the rate (the max of the seconds), ``TowerQPS`` 0 (its warm-up restarted) and
    ``Windowed`` nan (its states are its children's). They are marked so that ``Running`` refuses them."""
    from torchmetrics.wrappers import Running

    with pytest.raises(ValueError, match="full_state_update"):
        Running(build(), window=2)


def test_torchmetrics_tracker_and_bootstrapper_around_the_wrappers():
    """``MetricTracker`` infers ``maximize`` from the wrapped metric; ``BootStrapper`` takes float64 quantiles."""
    from torchmetrics.wrappers import BootStrapper, MetricTracker

    assert MetricTracker(tmx.Windowed(tmx.AUC(), 10)).maximize is True
    assert MetricTracker(tmx.Segmented(tmx.NormalizedEntropy(), 2)).maximize is False
    gen = torch.Generator().manual_seed(0)
    preds = torch.rand(300, generator=gen)
    target = (torch.rand(300, generator=gen) < preds).long()
    torch.manual_seed(0)
    boot = BootStrapper(tmx.AUC(), num_bootstraps=10, quantile=torch.tensor([0.05, 0.95], dtype=torch.float64))
    boot.update(preds, target)
    low, high = boot.compute()["quantile"]
    assert 0.5 < low <= high < 1.0


@pytest.mark.parametrize("how", ["update", "forward"])
def test_a_ranking_batch_cut_to_the_window_keeps_what_an_update_keeps(how):
    """A flat ranking batch larger than the window: its newest rows went into the ring with int64
    relevance (the cut is updated trusting its inputs, so the validated bound that lets an update
    keep int32 was never read), twice the memory of what an update of the same rows keeps. The
    ring now holds the dtypes of an update of those rows, and the window value is sklearn's NDCG
    over the rows it keeps (linear gain, every query whole)."""
    preds = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6, 0.4, 0.95])
    target = torch.tensor([1, 0, 2, 0, 1, 3, 2, 1, 0, 3])
    indexes = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    metric = Windowed(tmx.NDCG(), window_size=4)  # keeps the newest 4 rows: queries 2 and 3
    getattr(metric, how)(preds, target, indexes=indexes)
    alone = tmx.NDCG()
    alone.update(preds[-4:], target[-4:], indexes=indexes[-4:])
    ring = metric.get_extra_state()["chunks"]
    for name in ("preds", "target", "indexes", "weights"):
        assert [c.dtype for cs in ring[name] for c in cs] == [c.dtype for c in getattr(alone, name)], name
    assert ring["target"][0][0].dtype == torch.int32
    expected = skm.ndcg_score(target[-4:].view(2, 2).numpy(), preds[-4:].view(2, 2).numpy())
    assert metric.compute()["window"].item() == pytest.approx(expected, rel=1e-12)


def _assert_equal_nested(a, b, where: str = "state_dict") -> None:
    """``a`` and ``b`` (tensors in dicts, lists and tuples) hold equal tensors of equal dtypes, and equal other values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_nested(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _bin_centre_batches(num_bins: int, count: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Weighted batches of 6 whose scores are bin centres (``bin_space="probability"``): the binned AUC is exact."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        p = ((torch.randint(0, num_bins, (6,), generator=g).double() + 0.5) / num_bins).float()
        batches.append((p, (torch.rand(6, generator=g) < p).long(), torch.rand(6, generator=g) + 0.5))
    return batches


@pytest.mark.parametrize(
    ("part", "dtype", "what", "expected"),
    [
        ("values", torch.int64, "sparse updates' values", torch.float64),
        ("values", torch.bool, "sparse updates' values", torch.float64),
        ("values", torch.complex64, "sparse updates' values", torch.float64),
        ("indices", torch.float32, "sparse updates' bin indices", torch.int64),
        ("indices", torch.bool, "sparse updates' bin indices", torch.int64),
    ],
)
def test_a_binned_windows_sparse_updates_of_another_kind_are_refused(part, dtype, what, expected):
    """A binned window keeps each small update as bin indices and weights; only its dense sums were
    dtype-checked at load: float indices were truncated into bins, bool or integer weights summed as
    ones. Both are now a list state's chunks under the checkpoint rule: refused naming the part, nothing
    of the metric loads. The checkpoint as saved resumes (scikit-learn's weighted AUC over its batches)."""
    num_bins = 32
    batches = _bin_centre_batches(num_bins, 4)
    saved = Windowed(tmx.AUC(num_bins=num_bins, bin_space="probability"), 100)
    for batch in batches[:3]:
        saved.update(*batch)
    checkpoint = saved.state_dict()
    assert all(i is not None for i in checkpoint["_extra_state"]["indices"])  # small updates: kept sparse
    bad = copy.deepcopy(checkpoint)
    bad["_extra_state"][part] = [t.to(dtype) for t in bad["_extra_state"][part]]
    metric = Windowed(tmx.AUC(num_bins=num_bins, bin_space="probability"), 100)
    metric.update(*batches[3])
    before, value = copy.deepcopy(metric.state_dict()), metric.compute()
    match = (
        rf"_extra_state: dtype mismatch for the window's histogram \({what}\): the checkpoint holds {dtype}, "
        rf"this window keeps it as {expected} \(the chunks of a list state are floating if it is"
    )
    with pytest.raises(RuntimeError, match=match):
        metric.load_state_dict(bad)
    _assert_equal_nested(metric.state_dict(), before)
    assert metric.compute() == value
    metric.load_state_dict(checkpoint)
    p, y, w = (torch.cat(parts).double().numpy() for parts in zip(*batches[:3]))
    expected_auc = skm.roc_auc_score(y, p, sample_weight=w)
    values = metric.compute()
    np.testing.assert_allclose(values["lifetime"].item(), expected_auc, rtol=1e-12)
    np.testing.assert_allclose(values["window"].item(), expected_auc, rtol=1e-12)


@pytest.mark.parametrize(
    ("part", "match"),
    [
        ("values", r"holds an update whose values do not fit its bin indices"),
        ("indices", r"holds an update whose values do not fit its bin indices"),
        ("base", r"holds a list as its base, not a tensor"),
    ],
)
def test_a_binned_window_part_that_is_not_a_tensor_is_refused_not_raised(part, match):
    """A sparse update's indices or values (or the base) that are not tensors raised AttributeError
    (``.shape``) from inside the load, past the error list: now refused like any other mismatch."""
    batches = _bin_centre_batches(32, 2)
    saved = Windowed(tmx.AUC(num_bins=32, bin_space="probability"), 100)
    for batch in batches:
        saved.update(*batch)
    bad = copy.deepcopy(saved.state_dict())
    ring = bad["_extra_state"]
    ring[part] = ring[part].tolist() if part == "base" else [t.tolist() for t in ring[part]]
    metric = Windowed(tmx.AUC(num_bins=32, bin_space="probability"), 100)
    metric.update(*batches[0])
    before = copy.deepcopy(metric.state_dict())
    with pytest.raises(RuntimeError, match=rf"_extra_state: .*{match}"):
        metric.load_state_dict(bad)
    _assert_equal_nested(metric.state_dict(), before)


# ----------------------------------------------------------------------------- DDP: ranks holding different window shares

# window 20, 10 samples per rank: rank 0's updates of 6, 7, 8 rows keep the last (8), rank 1's one update of 3 keeps 3
_SHARE_BOUNDS = {0: [(0, 6), (6, 13), (13, 21)], 1: [(21, 24)]}


def _share_rows() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    preds = torch.rand(24, generator=gen) * 0.9 + 0.05
    return preds, (torch.rand(24, generator=gen) < preds).float()


def _different_shares_job(rank, world_size):
    preds, target = _share_rows()
    out = {}
    for name, metric in (("ne", tmx.NormalizedEntropy()), ("auc", tmx.AUC()), ("ctr", tmx.CTR())):
        windowed = Windowed(metric, 20)
        for lo, hi in _SHARE_BOUNDS[rank]:
            windowed.update(preds[lo:hi], target[lo:hi])
        out[name] = {k: v.item() for k, v in windowed.compute().items()}
    return out


@pytest.mark.ddp
def test_windowed_ranks_holding_different_numbers_of_window_samples(ddp_pool):
    """Rank 0 holds 8 window samples and rank 1 3 (both under their share of 10): the window value on every rank
    is NumPy's/scikit-learn's over those 11 rows, the lifetime over all 24."""
    preds, target = (t.double().numpy() for t in _share_rows())

    def ne(p, y):
        ctr = y.mean()
        return -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean() / -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr))

    refs = {"ne": ne, "auc": lambda p, y: skm.roc_auc_score(y, p), "ctr": lambda p, y: y.mean()}
    window = np.r_[13:21, 21:24]
    for rank, values in enumerate(ddp_pool.run(_different_shares_job)):
        for name, ref in refs.items():
            np.testing.assert_allclose(
                values[name]["lifetime"], ref(preds, target), rtol=1e-6, err_msg=f"{rank} {name}"
            )
            np.testing.assert_allclose(
                values[name]["window"], ref(preds[window], target[window]), rtol=1e-6, err_msg=f"{rank} {name}"
            )


def test_exact_ranking_window_of_appended_rows_matches_the_reference():
    """Flat exact-ranking batches enter the window as appended rows and zero sums (no slot of statistics filled).

    Mixed with `forward` and cut batches (which fill a slot), empty batches, trusted batches (a caller that
    validated them) and a checkpoint round trip, lifetime and window values stay those of the numpy reference
    (`tests/helpers/ranking_reference.py`) over every row and over the rows the window rule keeps.
    """
    from tests.helpers.ranking_reference import group_rows, reference_values

    rng = np.random.default_rng(7)
    window = 40
    metric = Windowed(tmx.NDCG(k=3), window_size=window)
    every, kept = [], []  # (scores, relevance, ids, weights) of every update, and of the window's updates
    for step in range(160):
        n = int(rng.choice([0, 3, 5, 8, 12, 55]))
        p = torch.from_numpy(rng.random(n)).float()
        y = torch.from_numpy(rng.integers(0, 3, n))
        ids = torch.from_numpy(rng.integers(0, 6, n))
        w = torch.from_numpy(rng.random(n) * 2).float() if rng.random() < 0.5 else None
        how = rng.choice(["update", "trusted", "forward"])
        if how == "forward":
            with warnings.catch_warnings():  # the batch's own value may be undefined (no relevant row)
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                metric(p, y, indexes=ids, weights=w)
        elif how == "trusted":
            with metric.inputs_validated():
                metric.update(p, y, indexes=ids, weights=w)
        else:
            metric.update(p, y, indexes=ids, weights=w)
        rows = (p.double().numpy(), y.double().numpy(), ids.numpy(), np.ones(n) if w is None else w.double().numpy())
        every.append(rows)
        if n:
            kept.append(tuple(a[-window:] for a in rows))
            while sum(len(r[0]) for r in kept) > window and len(kept) > 1:
                kept.pop(0)
        if step == 80:  # a checkpoint round trip: the ring's slots are read back, the run goes on
            state = metric.state_dict()
            metric = Windowed(tmx.NDCG(k=3), window_size=window)
            metric.load_state_dict(state)
        if step % 10 == 9:
            with warnings.catch_warnings():  # a window without a relevant row is nan, as the reference's
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                values = metric.compute()
            for part, updates in (("lifetime", every), ("window", kept)):
                scores, relevance, keys, weights = (np.concatenate([u[i] for u in updates]) for i in range(4))
                (expected,) = reference_values(group_rows(keys.tolist(), scores, relevance, weights), [("ndcg", 3)])
                np.testing.assert_allclose(float(values[part]), expected, rtol=1e-12, err_msg=f"{part} at {step}")
    # updates of flat rows alone (the path of a module's ranking copies) write no slot of the ring at all
    plain = Windowed(tmx.NDCG(k=3), window_size=window)
    for scores, relevance, keys, _ in every[:60]:
        if len(scores) <= window:  # an empty batch too (a cut one fills a slot)
            plain.update(torch.from_numpy(scores), torch.from_numpy(relevance), indexes=torch.from_numpy(keys))
    assert plain._ring.zero_slots and plain._ring.count > 1


def test_ring_update_of_zero_sums_after_written_slots_keeps_the_window_sums():
    """`StateRing.push_zero` among ordinary pushes of non-zero statistics, across a reload: exact window sums."""
    from torchmetrics_ext.wrappers._ring import StateRing

    rng = np.random.default_rng(3)
    defaults = {"s": torch.zeros(2, dtype=torch.float64), "rows": []}

    def fresh() -> StateRing:
        return StateRing({"s": "sum", "rows": "cat"}, defaults)

    ring, history, limit = fresh(), [], 20
    for step in range(300):
        size = int(rng.integers(1, 6))
        chunk = torch.arange(size) + 100 * step
        if step < 150 and rng.random() < 0.5:  # statistics written into a slot (zero slots no longer)
            stat = rng.random(2)
            slot = ring.next_slot()
            ring.reset(slot)
            slot["s"].copy_(torch.from_numpy(stat))
            ring.push(slot, {"rows": [chunk]}, size)
        else:
            stat = np.zeros(2)
            ring.push_zero({"rows": [chunk]}, size)
        history.append((stat, chunk))
        ring.evict(limit)
        kept = [history[-1]]
        for stat_chunk in reversed(history[:-1]):
            if sum(len(c) for _, c in kept) + len(stat_chunk[1]) > limit:
                break
            kept.insert(0, stat_chunk)
        out = {"s": torch.empty(2, dtype=torch.float64)}
        ring.window_into(out)
        np.testing.assert_allclose(out["s"].numpy(), np.sum([s for s, _ in kept], axis=0), rtol=1e-12, atol=1e-15)
        rows = torch.cat(ring.window_chunks("rows"))
        assert torch.equal(rows, torch.cat([c for _, c in kept])), step
        if step % 60 == 59:  # the loaded slots are read back: zero slots only once no written one is left
            loaded = fresh()
            loaded.load(ring.state(), torch.device("cpu"))
            assert loaded.zero_slots == (not any(s.any() for s, _ in kept))
            ring = loaded
    assert ring.zero_slots  # the last 150 updates wrote no slot: the written ones left the window and were reloaded


def test_merge_state_of_a_segmented_over_another_metric_is_refused():
    """Windowed(Segmented(CTR)) took a Windowed(Segmented(Calibration))'s lifetime: both classes are Segmented
    and their sums share names and shapes, so the calibration sums were added into the CTR's."""
    preds = np.array([0.2, 0.7, 0.4, 0.9, 0.6])
    target = np.array([1, 0, 1, 1, 0])
    segments = np.array([0, 1, 2, 2, 0])
    metric = Windowed(tmx.Segmented(tmx.CTR(), 3), 8)
    metric.update(torch.tensor(preds), torch.tensor(target), segments=torch.tensor(segments))
    other = Windowed(tmx.Segmented(tmx.Calibration(), 3), 8)
    other.update(torch.tensor([0.3, 0.8]), torch.tensor([1, 1]), segments=torch.tensor([0, 1]))
    before = _snapshot(metric)
    with pytest.raises(TypeError, match=r"Windowed over Segmented\(CTR\) to merge, got one over Segmented\(Calibr"):
        metric.merge_state(other)
    assert _same(before, _snapshot(metric))
    # unchanged: the CTR of each segment's own samples (numpy), window and lifetime alike
    expected = [target[segments == s].mean() for s in range(3)]
    for value in metric.compute().values():
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)
    # a Windowed over the same Segmented(CTR) still merges: the lifetime over both streams, the window its own
    same = Windowed(tmx.Segmented(tmx.CTR(), 3), 8)
    same.update(torch.tensor([0.3, 0.8]), torch.tensor([0, 1]), segments=torch.tensor([0, 1]))
    metric.merge_state(same)
    both_target, both_segments = np.r_[target, [0, 1]], np.r_[segments, [0, 1]]
    values = metric.compute()
    np.testing.assert_allclose(
        values["lifetime"].numpy(), [both_target[both_segments == s].mean() for s in range(3)], rtol=1e-12
    )
    np.testing.assert_allclose(values["window"].numpy(), expected, rtol=1e-12)


def _kept_rows(sizes, window):
    """Row indices the window holds after updates of ``sizes`` (docs/windows.md's rule, written again here)."""
    ends = np.cumsum([0, *sizes])
    updates = [(int(ends[i]), int(ends[i + 1])) for i, n in enumerate(sizes) if n > 0]
    if not updates:
        return np.zeros(0, dtype=np.int64)
    lo, hi = updates[-1]
    if hi - lo > window:
        return np.arange(hi - window, hi)
    kept, room = [], window
    for lo, hi in reversed(updates):
        if hi - lo > room:
            break
        kept.append(np.arange(lo, hi))
        room -= hi - lo
    return np.concatenate(kept[::-1])


def _gauc_reference(preds, target, groups):
    """Mean scikit-learn AUC over the groups holding both classes (GroupedAUC's default); nan if none."""
    values = [
        skm.roc_auc_score(target[groups == g], preds[groups == g])
        for g in np.unique(groups)
        if 0 < target[groups == g].sum() < (groups == g).sum()
    ]
    return float(np.mean(values)) if values else math.nan


@pytest.mark.parametrize("kind", ["ndcg", "gauc"])
def test_an_exact_window_scores_the_rows_it_holds_of_a_query_that_straddles_its_edge(kind):
    """docs/windows.md: a query (group) whose older updates left the window is scored over its rows still in it;
    the lifetime joins all of its rows. Checked after every update against references over those rows."""
    rng = np.random.default_rng(5)
    window = 9
    sizes = [3, 4, 0, 1, 5, 2, 12, 1, 4, 3, 9, 2, 6]  # queries of 3 ids span most updates; one cut update
    n = sum(sizes)
    preds = rng.random(n)
    target = rng.integers(0, 2 if kind == "gauc" else 3, n)
    ids = rng.integers(0, 3, n)
    metric = Windowed(tmx.NDCG(k=3) if kind == "ndcg" else tmx.GroupedAUC(), window)
    start = 0
    for i, size in enumerate(sizes):
        rows = slice(start, start + size)
        batch = (torch.tensor(preds[rows]), torch.tensor(target[rows]))
        if kind == "ndcg":
            metric.update(*batch, indexes=torch.tensor(ids[rows]))
        else:
            metric.update(*batch, torch.tensor(ids[rows]))
        start += size
        values = {}
        for name, held in (("lifetime", np.arange(start)), ("window", _kept_rows(sizes[: i + 1], window))):
            p, y, g = preds[held], target[held], ids[held]
            if kind == "ndcg":
                queries = R.group_rows(list(g), p, y.astype(np.float64), np.ones(len(held)))
                values[name] = R.reference_values(queries, [("ndcg", 3)])[0]
            else:
                values[name] = _gauc_reference(p, y, g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            got = metric.compute()
        for name, want in values.items():
            np.testing.assert_allclose(got[name].item(), want, rtol=1e-9, err_msg=f"{kind} {name} after update {i}")


@pytest.mark.parametrize("given", ["windowed", "dict"])
@pytest.mark.parametrize("name", ["Sum", "Mean", "Max", "Min"])
def test_windowed_aggregator_merges_one_of_another_nan_strategy(name, given):
    """``Sum().merge_state(Sum(nan_strategy="ignore"))`` merges (the states' names carry the NaN setting in memory
    only), but ``Windowed(Sum())`` refused ``Windowed(Sum(nan_strategy="ignore"))`` ("the incoming states
    ['sum_value_nanignore'] are not this metric's ['sum_value_nanerror']"), as it refused a dict under TorchMetrics'
    names. Now the lifetime merges as the wrapped metric does; the window stays this metric's own (Python's
    sum/mean/max/min of its newest values)."""
    from torchmetrics_ext import aggregation

    cls = getattr(aggregation, name)
    reduce = {"Sum": math.fsum, "Mean": statistics.fmean, "Max": max, "Min": min}[name]
    ours = tmx.Windowed(cls(), window_size=2)
    theirs = tmx.Windowed(cls(nan_strategy="ignore"), window_size=2)
    for value in (5.0, 7.0, 11.0):
        ours.update(torch.tensor([value]))
    for batch in ([1.0, 2.0], [math.nan, 3.0]):
        theirs.update(torch.tensor(batch))
    states = theirs.lifetime.metric_state
    if given == "dict":  # TorchMetrics' names, as in a checkpoint of the wrapped metric
        states = {name: value for name, value in theirs.lifetime.state_dict(keep_vars=True).items()}
        assert not set(states) & set(ours.lifetime._defaults)
    ours.merge_state(theirs if given == "windowed" else states)
    value = ours.compute()
    assert value["lifetime"].item() == reduce([5.0, 7.0, 11.0, 1.0, 2.0, 3.0])
    assert value["window"].item() == reduce([7.0, 11.0])


def test_a_torchmetrics_metrics_checkpoint_of_other_state_shapes_is_refused_state_untouched():
    """``Windowed(MeanSquaredError())`` loaded a ``lifetime.sum_squared_error`` of shape (2,) (a ``num_outputs=2``
    metric's, or a malformed one) without a word: TorchMetrics' own load takes any tensor, and the lifetime then
    computed two values. Refused now (its key, shape and the expected one), ``strict`` or not, nothing loaded; a
    merge of such states too. The same metric's checkpoint still loads (numpy's mean squared error)."""
    preds, target = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.0, 0.0, 1.0])
    source = Windowed(MeanSquaredError(), window_size=100)
    source.persistent(True)
    source.update(preds, target)
    mse = float(np.mean((preds.numpy() - target.numpy()) ** 2))
    for key in ("lifetime.sum_squared_error", "window.sum_squared_error"):
        for strict in (True, False):
            saved = source.state_dict()
            saved[key] = torch.tensor([1.0, 2.0])
            metric = Windowed(MeanSquaredError(), window_size=100)
            metric.persistent(True)
            metric.update(torch.tensor([3.0]), torch.tensor([0.0]))
            before = copy.deepcopy(metric.state_dict())
            with pytest.raises(RuntimeError, match=rf"size mismatch for {key}: .*shape \(2,\).* expects \(1,\)"):
                metric.load_state_dict(saved, strict=strict)
            after = metric.state_dict()
            assert all(torch.equal(after[k], v) for k, v in before.items() if isinstance(v, torch.Tensor))
            assert {k: v.item() for k, v in metric.compute().items()} == {"lifetime": 9.0, "window": 9.0}
    other = Windowed(MeanSquaredError(num_outputs=2), window_size=100)
    other.update(torch.rand(3, 2), torch.rand(3, 2))
    for incoming in (other, {"sum_squared_error": torch.tensor([1.0, 2.0]), "total": torch.tensor(2)}):
        with pytest.raises(ValueError, match=r"size mismatch for sum_squared_error: .*shape \(2,\).* expects \(1,\)"):
            metric.merge_state(incoming)
        assert {k: v.item() for k, v in metric.compute().items()} == {"lifetime": 9.0, "window": 9.0}
    metric.load_state_dict(source.state_dict())
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx({"lifetime": mse, "window": mse})


def test_a_torchmetrics_metrics_list_states_load_whatever_their_length():
    """List (``cat``) states hold any number of samples: a checkpoint of more samples loads (scikit-learn's AUC)."""
    from torchmetrics.classification import BinaryAUROC

    preds, target = torch.tensor([0.1, 0.8, 0.4, 0.3, 0.9]), torch.tensor([0, 1, 1, 0, 1])
    source = Windowed(BinaryAUROC(), window_size=100)
    source.persistent(True)
    source.update(preds, target)
    metric = Windowed(BinaryAUROC(), window_size=100)
    metric.persistent(True)
    metric.update(torch.tensor([0.5, 0.2]), torch.tensor([1, 0]))
    metric.load_state_dict(source.state_dict())
    expected = skm.roc_auc_score(target.numpy(), preds.numpy())
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(
        {"lifetime": expected, "window": expected}
    )


def test_a_ring_of_other_update_shapes_names_the_shape_it_holds():
    """A ring whose per-update rows have another shape (here (2,), the running sum's kept right) was refused with
    "updates have shape (1,), this metric's (1,)" (the running sum's shape); the message names the rows' shape."""
    source = Windowed(MeanSquaredError(), window_size=100)
    source.persistent(True)
    source.update(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    saved = source.state_dict()
    rings = saved["_extra_state"]["rings"]
    rings["sum_squared_error"] = torch.zeros(rings["sum_squared_error"].shape[0], 2)
    metric = Windowed(MeanSquaredError(), window_size=100)
    metric.persistent(True)
    with pytest.raises(RuntimeError, match=r"`sum_squared_error`: the checkpoint's updates have shape \(2,\), this"):
        metric.load_state_dict(saved)


@pytest.mark.parametrize(
    "front",
    [True, np.True_, np.asarray(True), torch.tensor(True), torch.tensor([1]), 1.0, torch.tensor(1, device="meta")],
    ids=repr,
)
def test_a_ring_front_that_is_no_count_is_refused_naming_the_window(front):
    """A count read from a checkpoint follows the settings' rule (``as_int``): no bool in any form, no one-element
    tensor with dimensions, no float, and no tensor without data (a meta tensor raised a bare RuntimeError from
    ``item()``); each is refused with the ring's message and the metric as it was."""
    saved = Windowed(tmx.CTR(), 10)
    saved.update(torch.tensor([0.5, 0.2]), torch.tensor([1.0, 0.0]))
    saved.update(torch.tensor([0.5]), torch.tensor([1.0]))
    state = saved.state_dict()
    metric = Windowed(tmx.CTR(), 10)
    metric.update(torch.tensor([0.25]), torch.tensor([0.0]))
    before = _snapshot(metric)
    bad = {**state, "_extra_state": {**state["_extra_state"], "front": front}}
    with pytest.raises(RuntimeError, match=r"`front` one from 0 to the number of updates \(2\).*not one ring"):
        metric.load_state_dict(bad)
    assert _same(before, _snapshot(metric))


@pytest.mark.parametrize("front", [0, np.int64(0), np.asarray(0), torch.tensor(0), torch.tensor(0, dtype=torch.uint8)])
def test_a_ring_front_of_any_integer_form_loads(front):
    """The integer forms a count may take in a checkpoint load: the window's values are those of its samples."""
    preds, target = [torch.tensor([0.5, 0.2]), torch.tensor([0.5])], [torch.tensor([1.0, 0.0]), torch.tensor([1.0])]
    saved = Windowed(tmx.CTR(), 10)
    for p, y in zip(preds, target):
        saved.update(p, y)
    state = saved.state_dict()
    assert state["_extra_state"]["front"] == 0
    metric = Windowed(tmx.CTR(), 10)
    metric.load_state_dict({**state, "_extra_state": {**state["_extra_state"], "front": front}})
    values = metric.compute()
    assert values["window"].item() == pytest.approx(np.mean([1.0, 0.0, 1.0]))  # CTR: the mean label
