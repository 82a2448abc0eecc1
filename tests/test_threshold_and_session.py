"""Hindsight target PR, session-level precision/recall and multi-label precision through the shared harness.

References loop over thresholds, sessions and labels in numpy, written here.
"""

from __future__ import annotations

import copy
import math
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_auc import _LargestAllocation
from tests.test_pointwise import binary_data
from tests.test_reliability import near_uniform_grid
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.device import force_device_path

# ----------------------------------------------------------------------------- hindsight


def ref_hindsight(p, y, w, target_precision=0.5, num_thresholds=1000, logits=False):
    """Loop over the thresholds: the first whose precision reaches the target, else the last."""
    w = np.ones_like(p) if w is None else w
    q = 1 / (1 + np.exp(-p)) if logits else p
    thresholds = np.arange(num_thresholds) / (num_thresholds - 1)  # t_j = j/(B-1), correctly rounded
    chosen = num_thresholds - 1
    for i, t in enumerate(thresholds):
        tp, fp = (w * y * (q >= t)).sum(), (w * (1 - y) * (q >= t)).sum()
        if (tp / (tp + fp) if tp + fp > 0 else 0.0) >= target_precision:  # TorchRec: precision 0 where none reaches t
            chosen = i
            break
    t = thresholds[chosen]
    tp, fp, fn = (w * y * (q >= t)).sum(), (w * (1 - y) * (q >= t)).sum(), (w * y * (q < t)).sum()
    return {"threshold": t, "precision": tp / (tp + fp), "recall": tp / (tp + fn)}


def ref_hindsight_tasks(data, **kw):
    p, y, w = data["preds"], data["target"], data["weights"]
    if p.ndim == 1:
        return ref_hindsight(p, y, w, **kw)
    rows = [ref_hindsight(p[t], y[t], None if w is None else (w[t] if w.ndim == 2 else w), **kw) for t in range(len(p))]
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _hindsight_case(cid, num_tasks=None, weights="task", logits=False, **kw):
    metric_kw = dict(kw, **({"num_tasks": num_tasks} if num_tasks else {}), from_logits=logits)
    return H.MetricCase(
        id=cid,
        metric=partial(tmx.HindsightTargetPR, **metric_kw),
        data=partial(binary_data, num_tasks=num_tasks, weights=weights, logits=logits),
        reference=partial(ref_hindsight_tasks, logits=logits, **kw),
        functional=partial(tmf.hindsight_target_pr, from_logits=logits, **kw),
    )


# ----------------------------------------------------------------------------- sessions

S, L = 60, 7  # sessions per data set, items per session


def session_data(rng, num_tasks=None, weights=None, graded=False):
    """(S, L) items per session: a batch is a set of whole sessions, as TorchRec requires."""
    shape = (S, L) if num_tasks is None else (num_tasks, S, L)
    p = rng.random(shape)
    p[..., :3] = np.round(p[..., :3], 1)  # ties within sessions
    y = rng.integers(0, 4, size=shape) if graded else (rng.random(shape) < 0.35).astype(np.int64)
    out = {"preds": torch.tensor(p, dtype=torch.float32), "target": torch.tensor(y)}
    out["weights"] = None if weights is None else torch.tensor(rng.uniform(0.0, 2.0, size=shape[-2:]))
    return out


class _RowSessions:
    """Feeds ``(…, S, L)`` batches to a session metric as flat rows with session ids = row of the batch."""

    def _flat(self, preds, target, weights=None):
        sessions = torch.arange(preds.shape[-2]).repeat_interleave(preds.shape[-1])
        if weights is not None:
            weights = weights.reshape(-1, 1).expand(-1, preds.shape[-1]) if weights.ndim == 1 else weights
            weights = weights.reshape(-1)
        return preds.flatten(-2), target.flatten(-2), sessions, weights


class RowSessionPrecision(_RowSessions, tmx.SessionPrecisionAtK):
    def update(self, preds, target, weights=None):
        super().update(*self._flat(preds, target, weights))

    def _validate(self, preds, target, weights=None):
        super()._validate(*self._flat(preds, target, weights))


class RowSessionRecall(_RowSessions, tmx.SessionRecallAtK):
    def update(self, preds, target, weights=None):
        super().update(*self._flat(preds, target, weights))

    def _validate(self, preds, target, weights=None):
        super()._validate(*self._flat(preds, target, weights))


def ref_session(p, y, w, k, kind, average, rank_labels=False):
    """Per session (a row): rank = number of strictly higher scores among rows of weight; top-k predicted positive."""
    w = np.ones_like(p) if w is None else w
    tp_all = fp_all = fn_all = 0.0
    values = []
    for ps, ys, ws in zip(p, y, w):
        present = ws > 0  # a zero-weight row is an absent row: it takes no top-k place
        pred = np.array([(ps[present] > s).sum() < k for s in ps], dtype=float)
        lab = np.array([(ys[present] > v).sum() < k for v in ys], dtype=float) if rank_labels else ys
        tp, fp, fn = (ws * lab * pred).sum(), (ws * (1 - lab) * pred).sum(), (ws * lab * (1 - pred)).sum()
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        den = tp + fp if kind == "precision" else tp + fn
        if den > 0:
            values.append(tp / den)
    if average == "micro":
        return tp_all / (tp_all + (fp_all if kind == "precision" else fn_all))
    return np.mean(values)


def ref_session_tasks(data, **kw):
    p, y, w = data["preds"], data["target"], data["weights"]
    if w is not None:
        w = np.broadcast_to(w[:, None] if w.ndim == 1 else w, p.shape[-2:])
    if p.ndim == 2:
        return ref_session(p, y, w, **kw)
    return np.asarray([ref_session(p[t], y[t], w, **kw) for t in range(len(p))])


def _session_case(cid, kind, num_tasks=None, weights="shared", graded=False, **kw):
    cls = RowSessionPrecision if kind == "precision" else RowSessionRecall
    metric_kw = dict(kw, **({"num_tasks": num_tasks} if num_tasks else {}))
    fn = tmf.session_precision_at_k if kind == "precision" else tmf.session_recall_at_k

    def functional(preds, target, weights=None):
        return fn(*_RowSessions()._flat(preds, target, weights), **kw)

    return H.MetricCase(
        id=cid,
        metric=partial(cls, **metric_kw),
        data=partial(session_data, num_tasks=num_tasks, weights=weights, graded=graded),
        reference=partial(ref_session_tasks, kind=kind, **{"average": "session", **kw}),
        functional=functional,
        sample_axis=-2,
        min_batch=8,
    )


# ----------------------------------------------------------------------------- multi-label


def label_set_data(rng, num_tasks=None, weights=None, num_labels=4):
    shape = (900,) if num_tasks is None else (num_tasks, 900)
    return {
        "preds": torch.tensor(rng.integers(0, 2**num_labels, size=shape)),
        "target": torch.tensor(rng.integers(0, 2**num_labels, size=shape)),
        "weights": H.random_weights(rng, weights, shape),
    }


def ref_multi_label(p, y, w, num_labels=4):
    w = np.ones(p.shape) if w is None else w
    out = []
    for j in range(num_labels):
        pj, yj = (p >> j) & 1, (y >> j) & 1
        out.append((w * pj * yj).sum() / (w * pj).sum())
    return np.asarray(out)


def _multi_label_case(cid, num_tasks=None, weights="task"):
    return H.MetricCase(
        id=cid,
        metric=partial(tmx.MultiLabelPrecision, num_labels=4, **({"num_tasks": num_tasks} if num_tasks else {})),
        data=partial(label_set_data, num_tasks=num_tasks, weights=weights),
        reference=H.per_task(ref_multi_label, "preds", "target", "weights"),
        functional=partial(tmf.multi_label_precision, num_labels=4),
        dtype_keys=(),
    )


_ALL = [
    _hindsight_case("hindsight-w"),
    _hindsight_case("hindsight-3task-w", num_tasks=3, target_precision=0.4),
    _hindsight_case("hindsight-3task-shared-w", num_tasks=3, weights="shared", target_precision=0.45),
    _hindsight_case("hindsight-coarse-w", target_precision=0.5, num_thresholds=11),
    _hindsight_case("hindsight-logits-w", logits=True, target_precision=0.35),
    _session_case("session_precision-w", "precision", k=3),
    _session_case("session_precision-micro-w", "precision", k=3, average="micro"),
    _session_case("session_precision-3task-w", "precision", num_tasks=3, k=2),
    _session_case("session_precision-ranked-w", "precision", k=2, rank_labels=True, graded=True),
    _session_case("session_recall-w", "recall", k=3),
    _session_case("session_recall-micro-w", "recall", k=3, average="micro"),
    _session_case("session_recall-3task-w", "recall", num_tasks=3, k=4),
    _multi_label_case("multi_label-w"),
    _multi_label_case("multi_label-3task-w", num_tasks=3),
    _multi_label_case("multi_label-3task-shared-w", num_tasks=3, weights="shared"),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)
DICT_IDS = [i for i in IDS if i.startswith("hindsight")]

globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=["hindsight-3task-w", "session_precision-3task-w", "session_recall-3task-w"],
        collection=[i for i in IDS if "3task" in i],
        no_arithmetic=DICT_IDS,
        # the harness's invariances split 1-D weights along the sample axis, which sessions' (S, L)
        # layout does not have: test_session_weight_invariances covers them
        invariances=[i for i in IDS if not i.startswith("session")],
        ddp=[i for i in IDS if "3task-w" in i or "micro" in i],
        device_path=[
            "hindsight-3task-shared-w",
            "hindsight-logits-w",
            "session_precision-ranked-w",
            "session_recall-3task-w",
            "multi_label-3task-shared-w",
        ],
        ddp_scenarios=[i for i in IDS if not ("3task-w" in i or "micro" in i)] + ["hindsight-3task-w"],
    )
)


# ----------------------------------------------------------------------------- bad input and behaviour

BAD_INPUTS = [
    ("hindsight-w", {"preds": torch.tensor([0.1, 1.2]), "target": torch.tensor([0, 1])}, ValueError, "probabilities"),
    ("hindsight-3task-w", {"preds": torch.rand(2, 4), "target": torch.ones(2, 4)}, ValueError, "num_tasks=3"),
    ("multi_label-w", {"preds": torch.tensor([1.0, 2.0]), "target": torch.tensor([1, 2])}, TypeError, "integer"),
    ("multi_label-w", {"preds": torch.tensor([1, 16]), "target": torch.tensor([1, 2])}, ValueError, r"2\*\*4"),
    ("multi_label-w", {"preds": torch.tensor([1, -1]), "target": torch.tensor([1, 2])}, ValueError, r"\[0, 2\*\*4\)"),
    ("multi_label-w", {"preds": torch.tensor([1, 2]), "target": torch.tensor([1, 2, 3])}, ValueError, "same shape"),
    (  # the meta device stands in for a GPU
        "multi_label-w",
        {"preds": torch.tensor([1, 2]), "target": torch.tensor([1, 2], device="meta")},
        ValueError,
        r"`target` on the same device as `preds` \(cpu\), got meta",
    ),
    (
        "multi_label-3task-w",
        {"preds": torch.ones(2, 3, dtype=torch.long), "target": torch.ones(2, 3, dtype=torch.long)},
        ValueError,
        "num_tasks=3",
    ),
]


@pytest.mark.parametrize(("cid", "bad", "exc", "match"), BAD_INPUTS)
def test_bad_input_rejected_and_state_untouched(cid, bad, exc, match):
    H.check_rejects(CASES[cid], dict({"weights": None}, **bad), exc, match)


SESSION_BAD = [
    ({"sessions": torch.tensor([0.0, 1.0, 1.0])}, TypeError, "integer ids"),
    ({"sessions": torch.tensor([0, 1])}, ValueError, "`sessions` of shape"),
    # the meta device stands in for a GPU: the ids must be on the device of `preds`
    (
        {"sessions": torch.tensor([0, 0, 1], device="meta")},
        ValueError,
        r"`sessions` on the same device as `preds` \(cpu\)",
    ),
    ({"sessions": None}, TypeError, "sessions"),
    ({"preds": torch.tensor([0.1, float("nan"), 0.3])}, ValueError, "finite"),
    ({"target": torch.tensor([0, 2, 1])}, ValueError, "`target`"),
]


@pytest.mark.parametrize(("bad", "exc", "match"), SESSION_BAD)
@pytest.mark.parametrize("cls", [tmx.SessionPrecisionAtK, tmx.SessionRecallAtK])
def test_session_bad_input_rejected_and_state_untouched(cls, bad, exc, match):
    metric = cls(k=1)
    good = {
        "preds": torch.tensor([0.9, 0.2, 0.4]),
        "target": torch.tensor([1, 0, 1]),
        "sessions": torch.tensor([0, 0, 1]),
    }
    metric.update(**good)
    snapshot = H._state_snapshot(metric)
    for method in ("update", "forward"):
        with pytest.raises(exc, match=match):
            getattr(metric, method)(**dict(good, **bad))
        H.assert_same_state(metric, snapshot)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: tmx.HindsightTargetPR(target_precision=1.5), "target_precision"),
        (lambda: tmx.HindsightTargetPR(num_thresholds=1), "num_thresholds"),
        (lambda: tmx.HindsightTargetPR(from_logits=1), "from_logits"),
        (lambda: tmx.SessionPrecisionAtK(k=0), "`k`"),
        (lambda: tmx.SessionRecallAtK(k=2, average="macro"), "average"),
        (lambda: tmx.SessionRecallAtK(k=2, rank_labels="no"), "rank_labels"),
        (lambda: tmx.MultiLabelPrecision(num_labels=0), "num_labels"),
        (lambda: tmx.MultiLabelPrecision(num_labels=2, label_names=["a"]), "label_names"),
    ],
)
def test_bad_constructor_args(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("average", ["session", "micro"])
def test_session_cutoffs_beyond_int64_are_rejected_not_wrapped(average):
    """A `k` of 2**63 or more wrapped in the int64 rank comparison: precision read nan, recall 0
    (2**64 + 1 raised a bare OverflowError). Any `k` below 2**63 at least every session's length
    predicts every item positive: precision is the share of positive labels, recall 1."""
    p = torch.tensor([0.9, 0.2, 0.6, 0.3, 0.5, 0.1, 0.7])
    y = torch.tensor([1, 0, 1, 0, 1, 1, 0])
    s = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    labels, ids = y.numpy().astype(float), s.numpy()
    per_session = [labels[ids == g].mean() for g in np.unique(ids)]
    precision = np.mean(per_session) if average == "session" else labels.mean()
    for k in (3, 2**62, 2**63 - 1, np.int64(2**63 - 1)):
        for cls, fn, value in (
            (tmx.SessionPrecisionAtK, tmf.session_precision_at_k, precision),
            (tmx.SessionRecallAtK, tmf.session_recall_at_k, 1.0),
        ):
            metric = cls(k, average=average)
            metric.update(p, y, s)
            assert metric.compute().item() == pytest.approx(value, rel=1e-15)
            assert fn(p, y, s, k=k, average=average).item() == pytest.approx(value, rel=1e-15)
    for k in (2**63, 2**64 + 1, np.uint64(2**63)):
        for cls, fn in (
            (tmx.SessionPrecisionAtK, tmf.session_precision_at_k),
            (tmx.SessionRecallAtK, tmf.session_recall_at_k),
        ):
            with pytest.raises(ValueError, match=r"`k` below 2\*\*63"):
                cls(k, average=average)
            with pytest.raises(ValueError, match=r"`k` below 2\*\*63"):
                fn(p, y, s, k=k, average=average)


def test_session_ranks_ties_share_the_better_rank():
    """TorchRec's rule: rank = number of strictly higher scores, so a tie at the cut-off adds positives."""
    preds = torch.tensor([0.9, 0.5, 0.5, 0.1])
    target = torch.tensor([1, 0, 1, 0])
    sessions = torch.zeros(4, dtype=torch.long)
    # k=2: 0.9 (rank 0) and both 0.5 (rank 1) are predicted positive -> precision 2/3
    assert tmf.session_precision_at_k(preds, target, sessions, k=2).item() == pytest.approx(2 / 3)


def test_session_metrics_share_one_compute_group():
    collection = MetricCollection(
        {"p": tmx.SessionPrecisionAtK(k=2), "r": tmx.SessionRecallAtK(k=2, average="micro")}, compute_groups=True
    )
    for seed in range(2):
        rng = np.random.default_rng(seed)
        collection.update(torch.rand(20), torch.tensor(rng.integers(0, 2, 20)), torch.tensor(rng.integers(0, 4, 20)))
    assert len(collection.compute_groups) == 1


def test_hindsight_fixes_torchrec_equal_threshold_double_count():
    """A score equal to the chosen threshold is a true positive only (TorchRec also counts it a false negative)."""
    out = tmf.hindsight_target_pr(
        torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 1, 0]), target_precision=1.0, num_thresholds=3
    )
    assert out["threshold"].item() == 0.5
    assert out["recall"].item() == 1.0


@pytest.mark.parametrize("num_thresholds", [11, 21, 101, 1000])
def test_hindsight_score_exactly_on_a_threshold_reaches_it(num_thresholds):
    """A float64 score equal to t_j = j/(B-1) is positive at t_j (linspace's 0.30000000000000004 missed it).

    Task j holds a positive scored exactly t_j and a negative just below it: precision 1 is first
    reached at t_j, where recall is 1.
    """
    b = num_thresholds
    exact = [j / (b - 1) for j in range(1, b)]  # Python's division is correctly rounded
    preds = torch.tensor([[t, math.nextafter(t, 0.0)] for t in exact], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0]] * (b - 1))
    metric = tmx.HindsightTargetPR(num_tasks=b - 1, target_precision=1.0, num_thresholds=b)
    metric.update(preds, target)
    for out in (tmf.hindsight_target_pr(preds, target, target_precision=1.0, num_thresholds=b), metric.compute()):
        assert out["threshold"].tolist() == exact
        assert (out["precision"] == 1).all() and (out["recall"] == 1).all()


def test_hindsight_undefined_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="recall"):
        out = tmf.hindsight_target_pr(torch.tensor([1.0, 0.3]), torch.tensor([0, 0]))
    assert torch.isnan(out["recall"])


def test_hindsight_of_label_weight_past_float64_range_is_nan_not_the_last_threshold():
    """Weights of 1e308 (every value as at weight 1): tp + fp overflowed, precision read x / inf = 0 and the
    last threshold (1.0, recall 0) was reported where threshold 0 reaches precision 0.5 with recall 1."""
    preds, target = torch.tensor([0.9, 0.9, 0.2]), torch.tensor([1.0, 0.0, 0.0])
    plain = tmf.hindsight_target_pr(preds, target, num_thresholds=11)
    # numpy reference at weight 1: precision of p >= t for t = 0, 0.1, ...: 1/3 below 0.3, then 1/2
    t = np.arange(11) / 10
    prec = np.array([target.numpy()[preds.numpy() >= x].mean() if (preds.numpy() >= x).any() else 0 for x in t])
    assert plain["threshold"].item() == pytest.approx(t[np.argmax(prec >= 0.5)])
    out = tmf.hindsight_target_pr(preds, target, torch.full((3,), 1e308, dtype=torch.float64), num_thresholds=11)
    assert all(math.isnan(v.item()) for v in out.values()), out
    metric = tmx.HindsightTargetPR(num_thresholds=11, num_tasks=2)
    metric.update(preds.repeat(2, 1), target.repeat(2, 1), torch.tensor([[1.0] * 3, [1e308] * 3], dtype=torch.float64))
    value = metric.compute()
    assert value["threshold"][0].item() == plain["threshold"].item()  # the other task keeps its value
    assert all(math.isnan(v[1].item()) for v in value.values())


def test_hindsight_plot_names_each_task():
    """With num_tasks=2 one value was drawn as 2 steps and a list's legend repeated 'threshold' unnamed per task.

    Each number is now one series named as Windowed names it (``precision/1``), its y the numpy reference's.
    """
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(4)
    scores = [rng.random((2, 40)) for _ in range(2)]
    batches = [(q, (rng.random((2, 40)) < q).astype(np.int64)) for q in scores]  # calibrated: precision rises
    metric = tmx.HindsightTargetPR(num_tasks=2, num_thresholds=11, target_precision=0.6)
    values, refs = [], []
    for step in range(2):
        metric.update(torch.tensor(batches[step][0]), torch.tensor(batches[step][1]))
        values.append(metric.compute())
        p, y = (np.concatenate([b[i] for b in batches[: step + 1]], axis=1) for i in (0, 1))
        refs.append([ref_hindsight(p[t], y[t], None, 0.6, 11) for t in range(2)])
    names = [f"{key}/{t}" for key in ("threshold", "precision", "recall") for t in range(2)]

    _, ax = metric.plot()  # one point per number
    assert [line.get_label() for line in ax.get_lines()] == names
    expected = [refs[-1][int(n[-1])][n[:-2]] for n in names]
    np.testing.assert_allclose([line.get_ydata()[0] for line in ax.get_lines()], expected)

    _, ax = metric.plot(values)  # over steps: one line per number
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == names
    for line, name in zip(lines, names, strict=True):
        np.testing.assert_allclose(line.get_ydata(), [ref[int(name[-1])][name[:-2]] for ref in refs])
    plt.close("all")


def test_multi_label_never_predicted_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="MultiLabelPrecision"):
        value = tmf.multi_label_precision(torch.tensor([1, 1]), torch.tensor([1, 3]), num_labels=2)
    assert value[0] == 1 and torch.isnan(value[1])


def test_multi_label_warning_names_tasks_and_labels():
    """The warning named flat (task, label) positions as tasks ("task(s) [6, 7]" with 3 tasks)."""
    metric = tmx.MultiLabelPrecision(num_labels=3, num_tasks=3)
    metric.update(torch.tensor([[7, 7], [7, 7], [4, 4]]), torch.tensor([[7, 7], [7, 7], [4, 4]]))
    with pytest.warns(UndefinedMetricWarning, match=r"for \(task, label\) \[\(2, 0\), \(2, 1\)\]:"):
        value = metric.compute()
    assert torch.isnan(value).nonzero().tolist() == [[2, 0], [2, 1]]
    with pytest.warns(UndefinedMetricWarning, match=r"for label\(s\) \[1\]:"):
        tmf.multi_label_precision(torch.tensor([1, 1]), torch.tensor([1, 3]), num_labels=2)


def test_empty_batches_change_nothing():
    for metric, batch in (
        (tmx.HindsightTargetPR(), (torch.zeros(0), torch.zeros(0))),
        (tmx.SessionPrecisionAtK(k=1), (torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long))),
        (tmx.MultiLabelPrecision(num_labels=2), (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))),
    ):
        before = H._state_snapshot(metric)
        metric.update(*batch)
        for key, value in before["states"].items():
            assert torch.equal(value, metric.metric_state[key])


@pytest.mark.parametrize("average", ["session", "micro"])
@pytest.mark.parametrize("fn", [tmf.session_precision_at_k, tmf.session_recall_at_k])
def test_session_weight_invariances(fn, average):
    """Scaled weights change nothing; a zero-weight session equals a removed one (except as a session count)."""
    rng = np.random.default_rng(7)
    preds, target = torch.tensor(rng.random(60)), torch.tensor(rng.integers(0, 2, 60))
    sessions = torch.arange(60) // 6
    weights = torch.tensor(rng.uniform(0.1, 2.0, 60))
    base = fn(preds, target, sessions, weights, k=2, average=average)
    torch.testing.assert_close(fn(preds, target, sessions, weights * 3.5, k=2, average=average), base)
    keep = sessions != 3
    zeroed = fn(preds, target, sessions, torch.where(keep, weights, 0.0), k=2, average=average)
    removed = fn(preds[keep], target[keep], sessions[keep], weights[keep], k=2, average=average)
    torch.testing.assert_close(zeroed, removed)


def _ref_multi_label_sums(p, y, w, num_labels):
    """Weighted ``(TP, FP)`` of each task (rows) and label, one bit at a time in numpy."""
    w = np.ones(p.shape) if w is None else np.broadcast_to(w, p.shape)
    tp, fp = np.zeros((p.shape[0], num_labels)), np.zeros((p.shape[0], num_labels))
    for j in range(num_labels):
        pj, yj = (p >> j) & 1, (y >> j) & 1
        tp[:, j] = (w * (pj * yj)).sum(-1)
        fp[:, j] = (w * (pj * (1 - yj))).sum(-1)
    return tp, fp


@pytest.mark.parametrize(
    ("num_tasks", "n", "num_labels"),
    [(1, 100, 3), (1, 300, 62), (3, 200, 62), (3, 4000, 62), (2, 5000, 9), (1, 40000, 1), (4, 3000, 16)],
)
@pytest.mark.parametrize("weights", [None, "shared", "task"])
def test_multi_label_sums_match_numpy(num_tasks, n, num_labels, weights):
    """The (T, L) sums of small batches (every bit at once) and large ones (byte histograms), with codes up
    to 2**num_labels - 1 (every byte of a 62-label code in use): counts exact, weighted sums to float64 rounding."""
    rng = np.random.default_rng(num_tasks * n + num_labels)
    p = rng.integers(0, 2**num_labels, size=(num_tasks, n), dtype=np.int64)
    y = rng.integers(0, 2**num_labels, size=(num_tasks, n), dtype=np.int64)
    p[:, :2], y[:, 1] = 2**num_labels - 1, 2**num_labels - 1  # all labels on
    w = {None: None, "shared": rng.uniform(0.0, 3.0, n), "task": rng.uniform(0.0, 3.0, (num_tasks, n))}[weights]
    metric = tmx.MultiLabelPrecision(num_labels=num_labels, num_tasks=num_tasks)
    metric.update(torch.tensor(p), torch.tensor(y), None if w is None else torch.tensor(w))
    tp, fp = _ref_multi_label_sums(p, y, w, num_labels)
    if w is None:
        assert np.array_equal(metric.true_positives.numpy(), tp) and np.array_equal(metric.false_positives.numpy(), fp)
    else:
        np.testing.assert_allclose(metric.true_positives.numpy(), tp, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(metric.false_positives.numpy(), fp, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("n", [100, 20000])  # every bit at once, and byte histograms
def test_multi_label_precision_of_a_label_always_predicted_right_is_one_not_above(n):
    """Label 0 is in every true set, so each of its predictions is right: precision exactly 1 (numpy: fp = 0).
    FP was a difference of two sums grouped by different bytes and rounded below 0: 1.0000000000000009."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        target = torch.randint(0, 2**8, (n,), generator=gen) | 1
        preds = torch.randint(0, 2**8, (n,), generator=gen) | 1
        w = torch.rand(n, generator=gen, dtype=torch.float64) * 10 ** (
            torch.rand(n, generator=gen, dtype=torch.float64) * 12
        )
        _, fp = _ref_multi_label_sums(preds.numpy()[None], target.numpy()[None], w.numpy(), 8)
        assert fp[0, 0] == 0.0
        value = tmf.multi_label_precision(preds, target, w, num_labels=8)
        assert 0.0 <= value.min() and value.max() <= 1.0, value
        assert value[0].item() == 1.0
        metric = tmx.MultiLabelPrecision(num_labels=8)
        metric.update(preds, target, w)
        assert metric.false_positives[0, 0].item() >= 0.0 and metric.compute()[0].item() == 1.0


@pytest.mark.parametrize("weighted", [False, True])
def test_multi_label_update_memory_does_not_grow_with_labels(weighted):
    """An update of (T, N) codes allocates nothing larger than two (T, N) int64 tensors, whatever L (it made
    several (T, N, L) float64 bit tensors: +1.7 GB for T=3, N=400k, L=62, a 27 MB batch)."""
    rng = np.random.default_rng(3)
    num_tasks, n, num_labels = 3, 20000, 62
    preds = torch.tensor(rng.integers(0, 2**num_labels, size=(num_tasks, n), dtype=np.int64))
    target = torch.tensor(rng.integers(0, 2**num_labels, size=(num_tasks, n), dtype=np.int64))
    weights = torch.tensor(rng.uniform(0.0, 1.0, (num_tasks, n))) if weighted else None
    metric = tmx.MultiLabelPrecision(num_labels=num_labels, num_tasks=num_tasks)
    with _LargestAllocation() as mode:
        metric.update(preds, target, weights)
    assert mode.largest <= 2 * preds.nbytes


def test_one_label_keeps_its_label_dimension():
    """MultiLabelPrecision(num_labels=1) is (1,) as its functional twin (TorchMetrics squeezed it to 0-dim)."""
    preds, target = torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0])
    expected = tmf.multi_label_precision(preds, target, num_labels=1)
    assert expected.shape == (1,) and expected.item() == 0.5  # by hand: 2 predicted, 1 right
    metric = tmx.MultiLabelPrecision(num_labels=1)
    assert metric(preds, target).shape == (1,)
    torch.testing.assert_close(metric.compute(), expected)
    assert tmx.MultiLabelPrecision(num_labels=1, num_tasks=2)(preds.repeat(2, 1), target.repeat(2, 1)).shape == (2, 1)
    # copies made after compute carry the cached value and its shape (they once came back 0-dim)
    copies = [metric.clone(), copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))]
    segmented = tmx.Segmented(tmx.CTR(), 1)
    segmented.update(preds.float(), target.float(), segments=torch.zeros(3, dtype=torch.long))
    segmented.compute()
    copies += [copy.deepcopy(segmented), pickle.loads(pickle.dumps(segmented))]
    for other in copies:
        assert other.compute().shape == (1,), type(other).__name__


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-path", "device-path"])
def test_codes_of_up_to_62_labels_are_in_range(device_path):
    """Codes near 2**62 round in float64: the range check reads the bits from num_labels up instead
    (54 and 62 labels with every bit set were refused for a day)."""
    from torchmetrics_ext.utilities.device import force_device_path

    with force_device_path(device_path):
        for num_labels in (53, 54, 62):
            codes = torch.tensor([2**num_labels - 1, 1, 2**num_labels - 2])
            value = tmf.multi_label_precision(codes, codes, num_labels=num_labels)
            assert value.shape == (num_labels,) and bool((value == 1).all())  # every predicted label is right
            metric = tmx.MultiLabelPrecision(num_labels=num_labels)
            metric.update(codes, codes)
            assert bool((metric.compute() == 1).all())
            for bad in (
                torch.tensor([2**num_labels]),
                torch.tensor([-1]),
                torch.tensor([2**63 + 5], dtype=torch.uint64),
            ):
                with pytest.raises(ValueError, match=rf"codes in \[0, 2\*\*{num_labels}\)"):
                    tmf.multi_label_precision(bad, torch.zeros_like(bad), num_labels=num_labels)


def test_session_zero_weight_row_takes_no_top_k_place():
    """The top item has weight 0: without it the second item is the top 1 (a hit), as if the row were absent."""
    p, y, s = torch.tensor([0.9, 0.8, 0.1]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0, 0, 0])
    w = torch.tensor([0.0, 1.0, 1.0])
    # by hand: rows 2 and 3 only; row 2 is the top 1 and the one positive -> precision 1, recall 1
    for fn in (tmf.session_precision_at_k, tmf.session_recall_at_k):
        for average in ("session", "micro"):
            assert fn(p, y, s, w, k=1, average=average).item() == 1.0
    metric = tmx.SessionRecallAtK(k=1)
    metric.update(p, y, s, w)
    assert metric.compute().item() == 1.0


@pytest.mark.parametrize("rank_labels", [False, True])
@pytest.mark.parametrize("average", ["session", "micro"])
@pytest.mark.parametrize("kind", ["precision", "recall"])
def test_session_zero_weight_rows_are_absent_rows(kind, average, rank_labels):
    """Zero-weight rows inside sessions (scattered ids, several tasks): equal to the rows removed and to numpy."""
    rng = np.random.default_rng(12)
    preds = np.round(rng.random((2, S, L)), 1)  # ties
    target = rng.integers(0, 4, size=(2, S, L)) if rank_labels else (rng.random((2, S, L)) < 0.4).astype(np.int64)
    weights = rng.uniform(0.1, 2.0, size=(2, S, L))
    weights[rng.random((2, S, L)) < 0.35] = 0.0
    weights[:, 0] = 0.0  # a whole session of weight 0
    expected = [ref_session(preds[t], target[t], weights[t], 2, kind, average, rank_labels) for t in range(2)]
    order = rng.permutation(S * L)  # sessions interleaved within the batch
    flat = [torch.tensor(x.reshape(2, -1)[:, order]) for x in (preds, target, weights)]
    sessions = torch.arange(S).repeat_interleave(L)[order]
    fn = tmf.session_precision_at_k if kind == "precision" else tmf.session_recall_at_k
    got = fn(flat[0], flat[1], sessions, flat[2], k=2, average=average, rank_labels=rank_labels)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    for t in range(2):  # each task without its zero-weight rows
        keep = flat[2][t] > 0
        removed = fn(
            flat[0][t][keep],
            flat[1][t][keep],
            sessions[keep],
            flat[2][t][keep],
            k=2,
            average=average,
            rank_labels=rank_labels,
        )
        np.testing.assert_allclose(removed.item(), got[t].item(), rtol=1e-12)


@pytest.mark.parametrize("fn", [tmf.session_precision_at_k, tmf.session_recall_at_k])
def test_session_functionals_check_the_device_of_sessions(fn):
    """The meta device stands in for a GPU: ids elsewhere than `preds` are named in a ValueError."""
    preds, target = torch.tensor([0.9, 0.2, 0.4]), torch.tensor([1, 0, 1])
    with pytest.raises(ValueError, match=r"`sessions` on the same device as `preds` \(cpu\), got meta"):
        fn(preds, target, torch.tensor([0, 0, 1], device="meta"), k=1)


def test_multi_label_functional_checks_the_device_of_target():
    """Codes elsewhere than `preds` are the package's ValueError naming both devices, not torch's RuntimeError."""
    with pytest.raises(ValueError, match=r"`target` on the same device as `preds` \(cpu\), got meta"):
        tmf.multi_label_precision(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3], device="meta"), num_labels=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_session_ids_on_another_device():  # pragma: no cover - exercised where a GPU exists
    with pytest.raises(ValueError, match="`sessions` on the same device"):
        tmx.SessionRecallAtK(k=1).update(
            torch.tensor([0.9, 0.2]).cuda(), torch.tensor([1, 0]).cuda(), torch.tensor([0, 0])
        )


# ----------------------------------------------------------------------------- unsigned inputs


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_labels_weights_sessions_and_codes_are_accepted(dtype, device_path):
    """uint16/32/64 labels, weights, session ids and label-set codes raised NotImplementedError
    (no min/max kernel for them on the CPU), and codes of two unsigned dtypes failed to stack."""
    rng = np.random.default_rng(47)
    data = binary_data(rng)
    p, y = data["preds"], data["target"]
    weights, w = H.unsigned_weights(rng, dtype, (p.numel(),))
    p_np, y_np = p.double().numpy(), y.numpy().astype(np.float64)
    sess = session_data(rng)
    sp, sy = sess["preds"], sess["target"]
    session_weights, sw = H.unsigned_weights(rng, dtype, (S,))
    rows = torch.arange(S).repeat_interleave(L)
    ids = H.unsigned(np.uint64(torch.iinfo(dtype).max) - rows.numpy().astype(np.uint64), dtype)  # near the top
    codes = label_set_data(rng)
    cp, cy = codes["preds"], codes["target"]
    other = torch.uint16 if dtype != torch.uint16 else torch.uint32
    with force_device_path(device_path):
        expected = ref_hindsight(p_np, y_np, w)
        metric = tmx.HindsightTargetPR()
        metric.update(p, y.to(dtype), weights)
        for got in (metric.compute(), tmf.hindsight_target_pr(p, y.to(dtype), weights)):
            for key, value in expected.items():
                np.testing.assert_allclose(got[key].item(), value, rtol=1e-12, err_msg=key)
        for kind, cls, fn in (
            ("precision", tmx.SessionPrecisionAtK, tmf.session_precision_at_k),
            ("recall", tmx.SessionRecallAtK, tmf.session_recall_at_k),
        ):
            expected = ref_session(
                sp.double().numpy(), sy.numpy(), np.repeat(sw[:, None], L, axis=1), k=2, kind=kind, average="session"
            )
            args = (sp.reshape(-1), sy.reshape(-1).to(dtype), ids, session_weights.repeat_interleave(L))
            metric = cls(k=2)
            metric.update(*args)
            np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12, err_msg=kind)
            np.testing.assert_allclose(fn(*args, k=2).item(), expected, rtol=1e-12, err_msg=kind)
        expected = ref_multi_label(cp.numpy(), cy.numpy(), w)
        got = tmf.multi_label_precision(cp.to(dtype), cy.to(other), weights, num_labels=4)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
        metric = tmx.MultiLabelPrecision(num_labels=4)
        metric.update(cp.to(dtype), cy.to(other), weights)
        np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("device_path", [False, True])
def test_uint64_label_set_codes_past_2_63_are_named_as_they_are(device_path):
    """A uint64 code past 2**63 was reported as a negative number (wrapped through int64)."""
    codes = torch.tensor([2**63 + 2**40, 3], dtype=torch.uint64)
    with force_device_path(device_path), pytest.raises(ValueError, match=r"got values in \[1, 9223373136366403584\]"):
        tmf.multi_label_precision(codes, torch.tensor([1, 1], dtype=torch.uint64), num_labels=4)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_thresholds_reached_are_searchsorted_counts(data):
    """The arithmetic count of uniform thresholds a score reaches is torch.searchsorted's, bit for bit: on and
    next to every threshold (as float16/bfloat16/float32/float64 round it), ±0, subnormals, out of range, ±inf, NaN."""
    from torchmetrics_ext.functional._uniform import thresholds_reached

    b = data.draw(st.one_of(st.integers(2, 40), st.sampled_from([100, 999, 1000, 1001, 4096, 10_000])))
    values = data.draw(st.lists(near_uniform_grid(b, b - 1), min_size=1, max_size=60))
    probs = torch.tensor(values, dtype=torch.float64)
    thresholds = torch.arange(b, dtype=torch.float64) / (b - 1)
    expected = torch.searchsorted(thresholds, probs, right=True)
    assert torch.equal(thresholds_reached(probs, b), expected)
    assert torch.equal(thresholds_reached(probs.reshape(1, -1).expand(2, -1).T, b), expected.expand(2, -1).T)


@pytest.mark.parametrize("num_thresholds", [11, 1000])
def test_hindsight_thresholds_are_found_without_a_search(num_thresholds, monkeypatch):
    """Each score's thresholds were counted with torch.searchsorted, whose CPU cost grows with num_thresholds
    (0.55 ms per 8192 scores at the default 1000); they are now counted arithmetically, with the same result."""
    rng = np.random.default_rng(12)
    b = num_thresholds
    p = rng.random((2, 3000))
    p[:, :b] = np.arange(b) / (b - 1)  # every threshold itself, and just below it
    p[:, b : 2 * b - 1] = np.nextafter(np.arange(1, b) / (b - 1), -1.0)
    y = (rng.random((2, 3000)) < p).astype(np.int64)
    monkeypatch.setattr(torch, "searchsorted", None)  # any search would fail
    metric = tmx.HindsightTargetPR(num_tasks=2, target_precision=0.8, num_thresholds=b)
    metric.update(torch.tensor(p), torch.tensor(y))
    for out in (
        metric.compute(),
        tmf.hindsight_target_pr(torch.tensor(p), torch.tensor(y), target_precision=0.8, num_thresholds=b),
    ):
        for task in range(2):
            expected = ref_hindsight(p[task], y[task], None, target_precision=0.8, num_thresholds=b)
            for key, want in expected.items():
                np.testing.assert_allclose(out[key][task].item(), want, rtol=1e-12, err_msg=key)
