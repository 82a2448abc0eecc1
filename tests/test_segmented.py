"""``Segmented`` through the shared harness: per-segment values against numpy formulas per segment; ``TowerQPS``."""

from __future__ import annotations

import inspect
import itertools
import warnings
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from tests import test_sum_metrics as S
from tests.helpers import tester as H
from tests.test_pointwise import (
    binary_data,
    ref_accuracy,
    ref_calibration,
    ref_ctr,
    ref_log_loss,
    ref_mae,
    ref_mse,
    ref_ne,
    ref_precision,
    ref_recall,
    ref_rmse,
)
from tests.test_sum_metrics import ref_positives
from torchmetrics_ext.metrics.pointwise import _PointwiseMetric
from torchmetrics_ext.utilities.device import force_device_path

SEGMENTS = 5


def segmented_data(rng, num_tasks=None, weights=None, real=False, per_task_segments=False, logits=False):
    out = binary_data(rng, num_tasks=num_tasks, weights=weights, real=real, logits=logits)
    shape = out["preds"].shape if per_task_segments else out["preds"].shape[-1:]
    out["segments"] = torch.tensor(rng.integers(0, SEGMENTS, size=shape))
    return out


def per_segment(ref):
    """Reference: ``ref`` on the rows of each segment, per task -> ``(S,)`` or ``(T, S)``."""

    def reference(data):
        p, y, w, seg = data["preds"], data["target"], data["weights"], data["segments"]

        def one_task(pt, yt, wt, st):
            values = [ref(pt[st == s], yt[st == s], None if wt is None else wt[st == s]) for s in range(SEGMENTS)]
            # a segment without the rows a ratio needs is undefined: nan (the formulas give inf or nan)
            return [v if np.isfinite(v) else np.nan for v in values]

        if p.ndim == 1:
            return np.asarray(one_task(p, y, w, seg))
        rows = []
        for t in range(p.shape[0]):
            wt = None if w is None else (w[t] if w.ndim == 2 else w)
            rows.append(one_task(p[t], y[t], wt, seg[t] if seg.ndim == 2 else seg))
        return np.asarray(rows)

    return reference


def _case(cid, inner, ref, num_tasks=None, weights="task", inner_kw=None, **data_kw):
    metric_kw = dict(inner_kw or {}, **({"num_tasks": num_tasks} if num_tasks else {}))
    return H.MetricCase(
        id=cid,
        metric=lambda: tmx.Segmented(inner(**metric_kw), SEGMENTS),
        data=partial(segmented_data, num_tasks=num_tasks, weights=weights, **data_kw),
        reference=per_segment(ref),
    )


RECAL, MEAN, LOGITS = {"recalibration_coefficient": 0.25}, {"baseline": "mean"}, {"from_logits": True}
_ALL = [
    _case("ne-w", tmx.NormalizedEntropy, ref_ne),
    _case("ne-3task-w", tmx.NormalizedEntropy, ref_ne, num_tasks=3),
    _case("calibration-3task-shared-w", tmx.Calibration, ref_calibration, num_tasks=3, weights="shared"),
    _case("ctr-3task-w", tmx.CTR, ref_ctr, num_tasks=3, per_task_segments=True),
    _case("mse-w", tmx.WeightedMSE, ref_mse, real=True),
    _case("positives-3task-w", tmx.NumPositiveSamples, ref_positives, num_tasks=3),
    # every other family of inner states: log loss, thresholded counts, regression sums, the NE variants
    _case("logloss-3task-w", tmx.LogLoss, ref_log_loss, num_tasks=3),
    _case("accuracy-w", tmx.WeightedAccuracy, ref_accuracy),
    _case("precision-3task-w", tmx.WeightedPrecision, ref_precision, num_tasks=3),
    _case("recall-w", tmx.WeightedRecall, ref_recall),
    _case("rmse-3task-w", tmx.WeightedRMSE, ref_rmse, num_tasks=3, real=True),
    _case("mae-w", tmx.WeightedMAE, ref_mae, real=True),
    _case("cali_free-3task-w", tmx.CalibrationFreeNE, S.ref_cali_free, num_tasks=3),
    _case("ne_positive-w", tmx.NEPositive, S.ref_ne_positive),
    _case("recal_ne-w", tmx.RecalibratedNE, partial(S.ref_recal_ne, c=0.25), inner_kw=RECAL),
    _case(
        "recal_cal-3task-w", tmx.RecalibratedCalibration, partial(S.ref_recal_calibration, c=0.25), 3, inner_kw=RECAL
    ),
    _case("r2-w", tmx.WeightedR2, S.ref_r2, real=True),
    _case("nmse-mean-3task-w", tmx.WeightedNMSE, partial(S.ref_nmse, baseline="mean"), 3, inner_kw=MEAN, real=True),
    _case("nrmse-w", tmx.WeightedNRMSE, partial(S.ref_nmse, root=True), real=True),
    _case("label_avg-w", tmx.LabelAverage, S.ref_label_average, real=True),
    _case("ne-logits-w", tmx.NormalizedEntropy, partial(ref_ne, logits=True), inner_kw=LOGITS, logits=True),
    _case(
        "precision-logits-3task-w",
        tmx.WeightedPrecision,
        partial(ref_precision, logits=True),
        3,
        "shared",
        inner_kw=LOGITS,
        logits=True,
    ),
]
CASES = {case.id: case for case in _ALL}
IDS = sorted(CASES)

globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=["ne-3task-w"],
        collection=IDS,
        invariances=[i for i in IDS if not i.startswith("positives")],
        ddp=["ne-3task-w", "ctr-3task-w", "positives-3task-w", "ne-logits-w", "nmse-mean-3task-w"],
        device_path=["ne-w", "ctr-3task-w", "r2-w", "precision-logits-3task-w"],
        ddp_scenarios=[
            "ne-w",
            "mse-w",
            "calibration-3task-shared-w",
            "ctr-3task-w",
            "recall-w",
            "precision-logits-3task-w",
        ],
    )
)


BAD_INPUTS = [
    ({"segments": torch.tensor([0.0, 1.0])}, TypeError, "integer ids"),
    ({"segments": torch.tensor([0, 5])}, ValueError, r"\[0, 5\)"),
    ({"segments": torch.tensor([-1, 0])}, ValueError, r"got values in \[-1, 0\]"),
    ({"segments": torch.tensor([0, 5], dtype=torch.uint32)}, ValueError, r"got values in \[0, 5\]"),
    # past 2**63: named as it is, not wrapped to a negative int64
    (
        {"segments": torch.tensor([0, 2**63], dtype=torch.uint64)},
        ValueError,
        r"got values in \[0, 9223372036854775808\]",
    ),
    ({"segments": torch.tensor([0, 1, 2])}, ValueError, "`segments` of shape"),
    # the meta device stands in for a GPU: the ids must be on the device of `preds`
    (
        {"segments": torch.tensor([0, 1], device="meta")},
        ValueError,
        r"`segments` on the same device as `preds` \(cpu\)",
    ),
    ({"segments": None}, TypeError, "requires `segments`"),
    ({"preds": torch.tensor([0.1, 1.5])}, ValueError, "probabilities"),
]


@pytest.mark.parametrize(("bad", "exc", "match"), BAD_INPUTS)
def test_bad_input_rejected_and_state_untouched(bad, exc, match):
    batch = {"preds": torch.tensor([0.1, 0.8]), "target": torch.tensor([0, 1]), "weights": None}
    H.check_rejects(CASES["ne-w"], {**batch, "segments": torch.tensor([0, 1]), **bad}, exc, match)


UNCHECKED_BAD_IDS = [
    (torch.tensor([0, 5]), r"got values in \[0, 5\]"),
    (torch.tensor([-1, 0]), r"got values in \[-1, 0\]"),
    (torch.tensor([[0, 1], [0, 1], [7, 0]]), r"got values in \[0, 7\]"),  # one task's row of (T, N) ids
    (torch.tensor([0, 2**63], dtype=torch.uint64), r"got values in \[0, 9223372036854775808\]"),
]


def _unchecked_case(segments: Any) -> tuple[H.MetricCase, dict[str, Any]]:
    """Segmented NE of 3 tasks with ``validate_args=False``, and a batch of those ``segments``."""
    case = H.MetricCase(
        id="ne-3task-w-unchecked",
        metric=lambda: tmx.Segmented(tmx.NormalizedEntropy(3, validate_args=False), SEGMENTS),
        data=partial(segmented_data, num_tasks=3, weights="task"),
        reference=per_segment(ref_ne),
    )
    return case, {"preds": torch.full((3, 2), 0.3), "target": torch.ones(3, 2), "weights": None, "segments": segments}


@pytest.mark.parametrize(("segments", "match"), UNCHECKED_BAD_IDS, ids=["above", "negative", "one-task", "uint64"])
def test_unvalidated_ids_outside_the_segments_are_refused_before_anything_is_added(segments, match):
    """validate_args=False: an id outside [0, S) raised torch's bare RuntimeError from the scatter after
    adding part of the batch to the first state; now a ValueError naming them, nothing added (CPU)."""
    case, batch = _unchecked_case(segments)
    H.check_rejects(case, batch, ValueError, r"`segments` in \[0, 5\) \(num_segments=5\).*" + match)


UNCHECKED_BAD_ID_TYPES = [
    (torch.tensor([0.0, 2.7]), TypeError, r"`segments` to hold integer ids, got dtype torch\.float32"),
    (torch.tensor([1.0, 2.0], dtype=torch.float64), TypeError, r"integer ids, got dtype torch\.float64"),
    (torch.tensor([True, False]), TypeError, r"integer ids, got dtype torch\.bool"),
    (torch.tensor([1 + 0j, 0j]), TypeError, r"`segments` to be a real tensor"),
    ([0, 1], TypeError, r"`segments` to be a torch\.Tensor, got list"),
]


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize(
    ("segments", "exc", "match"), UNCHECKED_BAD_ID_TYPES, ids=["f32", "f64", "bool", "c64", "list"]
)
def test_unvalidated_ids_that_are_no_integers_are_refused_as_validated_ones_are(segments, exc, match, device_path):
    """The docstring promises a TypeError for segment ids that are not integers, with the range check the only
    one `validate_args=False` skips on the device; such ids were cast silently instead (2.7 went to segment 2,
    True to segment 1; a list raised AttributeError). The dtype is host metadata: refused in both modes, no
    value read, nothing added."""
    case, batch = _unchecked_case(segments)
    with force_device_path(device_path):
        H.check_rejects(case, batch, exc, match)


def test_unvalidated_windowed_segmented_refuses_ids_outside_and_keeps_its_window():
    """Windowed(Segmented) with validate_args=False: a bad id is refused with nothing pushed; the next good
    update's lifetime and window equal a NumPy per-segment NE of the rows each holds."""
    rng = np.random.default_rng(3)
    first, last = segmented_data(rng, weights="task"), segmented_data(rng, weights="task")
    n = first["preds"].shape[-1]
    metric = tmx.Windowed(tmx.Segmented(tmx.NormalizedEntropy(validate_args=False), SEGMENTS), window_size=n)
    metric.update(**first)
    before = {k: v.clone() for k, v in metric.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match=r"`segments` in \[0, 5\) \(num_segments=5\), got values in \[9, 9\]"):
        metric.update(**{**first, "segments": first["segments"].clone().fill_(9)})
    after = metric.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    metric.update(**last)
    joined = {k: np.concatenate([H.to_numpy(first)[k], H.to_numpy(last)[k]], axis=-1) for k in first}
    out = metric.compute()
    np.testing.assert_allclose(out["lifetime"].numpy(), per_segment(ref_ne)(joined), rtol=1e-9)
    np.testing.assert_allclose(out["window"].numpy(), per_segment(ref_ne)(H.to_numpy(last)), rtol=1e-9)


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("dtype", H.UNSIGNED)
def test_unsigned_segment_ids_labels_and_weights_are_accepted(dtype, device_path):
    """uint16/32/64 segment ids (and labels, weights) raised NotImplementedError (no min/max kernel on the CPU)."""
    rng = np.random.default_rng(53)
    data = segmented_data(rng)
    weights, w = H.unsigned_weights(rng, dtype, data["preds"].shape)
    expected = per_segment(ref_ne)({**H.to_numpy(data), "weights": w})
    with force_device_path(device_path):
        metric = tmx.Segmented(tmx.NormalizedEntropy(), SEGMENTS)
        metric.update(data["preds"], data["target"].to(dtype), weights, segments=data["segments"].to(dtype))
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: tmx.Segmented(tmx.AUC(), 3), TypeError, "per-task sum statistics"),
        (lambda: tmx.Segmented(tmx.NDCG(), 3), TypeError, "per-task sum statistics"),
        (lambda: tmx.Segmented(tmx.HindsightTargetPR(), 3), TypeError, "not per-task sums of the pointwise kind"),
        (lambda: tmx.Segmented(tmx.CTR(), 0), ValueError, "num_segments"),
        # the wrapped metric's settings: named, not "got multiple values for keyword argument"
        (lambda: tmx.Segmented(tmx.CTR(), 3, validate_args=False), TypeError, r"\['validate_args'\] from the wrapped"),
        (lambda: tmx.Segmented(tmx.CTR(), 3, num_tasks=2), TypeError, r"\['num_tasks'\] from the wrapped"),
        (lambda: tmx.Segmented(tmx.CTR(), True), ValueError, "num_segments"),
    ],
)
def test_bad_constructor_args(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


def test_empty_segment_is_nan_with_warning_and_counters_zero():
    ne = tmx.Segmented(tmx.CTR(), 3)
    ne.update(torch.tensor([0.2, 0.4]), torch.tensor([1, 0]), segments=torch.tensor([0, 0]))
    with pytest.warns(tmx.UndefinedMetricWarning, match="CTR"):
        value = ne.compute()
    assert value[0] == 0.5 and torch.isnan(value[1:]).all()
    counts = tmx.Segmented(tmx.SumWeights(), 3)
    counts.update(torch.tensor([0.2, 0.4]), weights=torch.tensor([2.0, 1.0]), segments=torch.tensor([2, 0]))
    torch.testing.assert_close(counts.compute(), torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64))


def test_undefined_warnings_name_segments_not_flat_positions():
    """The inner metric sees T·S flat tasks; its warning names (task, segment) pairs, or segments for one task."""
    one = tmx.Segmented(tmx.CTR(), 3)
    one.update(torch.tensor([0.2, 0.4]), torch.tensor([1, 0]), segments=torch.tensor([0, 2]))
    with pytest.warns(tmx.UndefinedMetricWarning, match=r"CTR is undefined for segment\(s\) \[1\]:"):
        one.compute()
    two = tmx.Segmented(tmx.NormalizedEntropy(num_tasks=2), 3)
    # task 0: both classes in segment 0 only; task 1: a single class everywhere
    preds = torch.tensor([[0.2, 0.7, 0.4], [0.4, 0.6, 0.3]])
    two.update(preds, torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), segments=torch.tensor([0, 0, 2]))
    # segment 1 saw no row (either task): said apart from the single class of the others
    unseen = r"\(task, segment\) \[\(0, 1\), \(1, 1\)\]: no samples seen"
    one_class = r"\(task, segment\) \[\(0, 2\), \(1, 0\), \(1, 2\)\]: the labels seen hold a single class"
    with (
        pytest.warns(tmx.UndefinedMetricWarning, match=unseen),
        pytest.warns(tmx.UndefinedMetricWarning, match=one_class),
    ):
        two.compute()


def test_segmented_keeps_the_inner_settings():
    """eta, thresholds and logits of the wrapped metric apply per segment."""
    preds, target = torch.tensor([-2.0, 0.5, 3.0, -1.0]), torch.tensor([0, 1, 1, 0])
    seg = tmx.Segmented(tmx.WeightedPrecision(threshold=0.3, from_logits=True), 2)
    seg.update(preds, target, segments=torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(seg.compute(), torch.tensor([1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("windowed", [False, True], ids=["alone", "windowed"])
@pytest.mark.parametrize("how", ["set_dtype", "to"])
@pytest.mark.parametrize(("cast", "rtol"), [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("cid", ["ctr-3task-w", "ne-w"])
def test_updates_after_a_lower_precision_cast(cid, cast, rtol, how, windowed):
    """Cast to a lower precision mid-stream with ``set_dtype``, the per-segment sums take the batch in their
    own dtype; ``.to(dtype)`` (Lightning's true precision) keeps the float64 sums and the case's tolerance."""
    case = CASES[cid]
    data = case.make_data(0)
    first, second = H.split(data, [0, 300, H.num_samples(data, -1)], -1)
    metric = tmx.Windowed(case.metric(), 10_000) if windowed else case.metric()
    metric.update(**first)
    metric = metric.set_dtype(cast) if how == "set_dtype" else metric.to(cast)
    metric.update(**second)
    value = metric.compute()
    dtype, rtol, atol = (cast, rtol, 1e-6) if how == "set_dtype" else (torch.float64, case.rtol, case.atol)
    for part in ("lifetime", "window") if windowed else ("",):
        got = value[part] if windowed else value
        assert got.dtype == dtype
        H.assert_close(got, case.reference(H.to_numpy(data)), rtol, atol, f"{cid} {cast} {how} {part}")


@pytest.mark.parametrize("cast", [torch.float32, torch.float64, "torch.FloatTensor"])
def test_set_dtype_casts_the_wrapped_metric_too(cast):
    """``set_dtype`` casts the wrapped metric (which computes every value) with the per-segment sums: its
    ``dtype`` and states were left as they were (``nn.Module`` reaches a child as a device move only)."""
    seg = tmx.Segmented(tmx.CTR(num_tasks=2), 3)
    preds = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.1, 0.3, 0.5, 0.7]])
    target = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]])
    segments = torch.tensor([0, 0, 2, 2])
    seg.update(preds, target, segments=segments)
    seg.set_dtype(cast)
    dtype = torch.float32 if cast == "torch.FloatTensor" else cast
    seg.update(preds, target, segments=segments)
    assert seg.dtype == seg.metric.dtype == dtype
    assert {getattr(seg.metric, name).dtype for name in seg.metric._state_keys} == {dtype}
    assert {getattr(seg, name).dtype for name in seg._state_keys} == {dtype}
    # CTR per (task, segment): labels over rows; segment 1 saw none (nan)
    y, ids = target.numpy().astype(float), segments.numpy()
    expected = np.array([[y[t][ids == s].mean() if (ids == s).any() else np.nan for s in range(3)] for t in range(2)])
    with pytest.warns(UserWarning):
        value = seg.compute()
    assert value.dtype == dtype
    np.testing.assert_allclose(value.double().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, torch.complex64, "torch.LongTensor"])
def test_set_dtype_refuses_a_non_floating_dtype_before_anything_changes(bad):
    seg = tmx.Segmented(tmx.CTR(), 2).set_dtype(torch.float32)
    with pytest.raises(TypeError, match="dst_type"):
        seg.set_dtype(bad)
    assert seg.dtype == seg.metric.dtype == torch.float32
    assert {getattr(m, n).dtype for m in (seg, seg.metric) for n in seg._state_keys} == {torch.float32}


@pytest.mark.parametrize("windowed", [False, True], ids=["alone", "windowed"])
@pytest.mark.parametrize("tasks", [1, 2])
def test_plot_names_each_series_by_task_and_segment(tasks, windowed):
    """A ``(T, S)`` value was plotted as series ``0`` ... ``T·S-1`` (its flat positions): each is named by its task
    and segment, ``task0/segment1`` (``segment1`` for one task), under ``lifetime/``/``window/`` in a window."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    gen = torch.Generator().manual_seed(3)
    seg = tmx.Segmented(tmx.CTR(num_tasks=tasks), 3)
    metric = tmx.Windowed(seg, window_size=4) if windowed else seg
    preds = torch.rand(tasks, 6, generator=gen).squeeze(0)
    metric.update(preds, (torch.rand(tasks, 6, generator=gen) < 0.5).squeeze(0), segments=torch.arange(6) % 3)
    cells = (
        [f"task{t}/segment{s}" for t in range(tasks) for s in range(3)]
        if tasks == 2
        else ["segment0", "segment1", "segment2"]
    )
    names = [f"{part}/{cell}" for part in ("lifetime", "window") for cell in cells] if windowed else cells
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        value = metric.compute()
        _, ax = metric.plot()
        assert [line.get_label() for line in ax.get_lines()] == names
        _, ax = metric.plot([value, value])  # over steps: one line per (task, segment)
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == names
    if not windowed:
        with pytest.raises(ValueError, match=r"Expected `val` of shape"):
            metric.plot(torch.zeros(7))
    matplotlib.pyplot.close("all")


# ----------------------------------------------------------------------------- TowerQPS


def _clock(ticks):
    it = iter(ticks)
    return lambda: next(it)


def test_qps_counts_after_warmup_per_task():
    qps = tmx.TowerQPS(num_tasks=2, warmup_steps=2, clock=_clock([0.0, 1.0, 3.0, 7.0]))
    for n in (10, 10, 30, 50):
        qps.update(torch.zeros(2, n))
    # steps 3 and 4 count: 80 examples in 6 seconds since the end of warm-up
    torch.testing.assert_close(qps.compute(), torch.tensor([80 / 6, 80 / 6], dtype=torch.float64))


def test_qps_per_task_counts_and_reset():
    qps = tmx.TowerQPS(num_tasks=2, warmup_steps=0, clock=_clock([0.0, 2.0, 10.0, 11.0]))
    qps.update(num_examples=torch.tensor([5, 1]))
    qps.update(num_examples=torch.tensor([8, 2]))
    torch.testing.assert_close(qps.compute(), torch.tensor([4.0, 1.0], dtype=torch.float64))
    qps.reset()
    qps.update(torch.zeros(2, 3))
    assert (qps.compute() == 0).all()  # warm-up restarted: no timed step yet
    assert qps(torch.zeros(2, 4)).tolist() == [4.0, 4.0]


@pytest.mark.parametrize("validate_args", [True, False])
@pytest.mark.parametrize(
    "dtype",
    [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64, torch.uint64],
)
def test_qps_counts_of_any_integer_dtype(dtype, validate_args):
    """uint16/32/64 counts raised NotImplementedError ('ge_cpu' has no unsigned kernel) though policies accept them."""
    big = 2**63 + 2**20 if dtype == torch.uint64 else 100  # past int64: must stay positive
    counts = [[5, 7], [big, 3]]
    qps = tmx.TowerQPS(num_tasks=2, warmup_steps=0, clock=_clock([0.0, 4.0]), validate_args=validate_args)
    for row in counts:
        qps.update(num_examples=torch.tensor(row, dtype=dtype))
    # warmup 0 still starts the clock at the first update: only the second counts, over 4 seconds
    np.testing.assert_array_equal(qps.compute().numpy(), np.array(counts[1], dtype=np.float64) / 4.0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda q: q.update(), TypeError, "preds"),
        (lambda q: q.update(torch.zeros(3, 4)), ValueError, r"\(2, N\)"),
        (lambda q: q.update(num_examples=torch.ones(3)), ValueError, "num_examples"),
        (lambda q: q.update(num_examples=[1, 2]), TypeError, "num_examples"),
        (lambda q: q.update(num_examples=torch.tensor(float("nan"))), ValueError, "finite and non-negative"),
        (lambda q: q.update(num_examples=torch.tensor([3.0, -5.0])), ValueError, "finite and non-negative"),
        (lambda q: q.update(num_examples=torch.tensor([3.0, float("inf")])), ValueError, "finite and non-negative"),
    ],
)
def test_qps_bad_input(call, exc, match):
    qps = tmx.TowerQPS(num_tasks=2, clock=_clock(itertools.count()))
    with pytest.raises(exc, match=match):
        call(qps)
    assert qps.num_examples.sum() == 0


def test_qps_clock_reading_that_is_no_number_changes_nothing():
    """A clock reading ``None`` raises before the step counter or the example count move (it was half-applied)."""
    qps = tmx.TowerQPS(warmup_steps=1, clock=_clock([0.0, 1.0, None, 3.0]))
    qps.update(torch.zeros(10))
    qps.update(torch.zeros(10))  # timed: 10 examples in 1 s
    with pytest.raises(TypeError):
        qps.update(torch.zeros(10))
    assert qps._steps == 2 and qps.num_examples_warmup1.item() == 10.0
    qps.update(torch.zeros(30))  # timed: 30 examples in the 2 s since the last good reading
    assert qps.compute().item() == (10 + 30) / (1.0 + 2.0)


def test_qps_of_different_warmups_never_share_a_compute_group():
    """Both warm-ups leave the states zero after the first update; each must still count its own steps."""
    from torchmetrics import MetricCollection

    col = MetricCollection(
        {
            "w1": tmx.TowerQPS(warmup_steps=1, clock=_clock(itertools.count())),
            "w3": tmx.TowerQPS(warmup_steps=3, clock=_clock(itertools.count())),
        },
        compute_groups=True,
    )
    for n in (10, 20, 30, 40, 50):
        col.update(torch.zeros(n))
    # one second per update: w1 times updates 2-5 (140 examples, 4 s), w3 updates 4-5 (90, 2 s)
    assert {k: v.item() for k, v in col.compute().items()} == {"w1": 35.0, "w3": 45.0}


def test_qps_reads_checkpoints_of_the_former_state_names():
    old = {"num_examples": torch.tensor([6.0]), "seconds": torch.tensor([2.0])}
    qps = tmx.TowerQPS(warmup_steps=3)
    qps.persistent(True)
    qps.load_state_dict(old)
    assert qps.compute().item() == 3.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"warmup_steps": -1}, ValueError, "warmup_steps"),
        ({"clock": 3}, TypeError, "`clock` to be callable, got int"),  # the wrong kind of object, as in Throughput
    ],
)
def test_qps_bad_constructor_args(kwargs, error, match):
    with pytest.raises(error, match=match):
        tmx.TowerQPS(**kwargs)


def _qps_job(rank, world_size):
    seconds = [4.0, 10.0][rank]  # rank 1 is the slowest
    ticks = iter([0.0, seconds / 2, seconds])
    qps = tmx.TowerQPS(warmup_steps=1, clock=lambda: next(ticks))
    for _ in range(3):
        qps.update(torch.zeros(100 * (rank + 1)))
    return qps.compute().item()


@pytest.mark.ddp
def test_qps_ddp_sums_examples_over_the_slowest_rank(ddp_pool):
    """Examples summed over ranks (2·100 + 2·200) over the slowest rank's 10 seconds."""
    assert ddp_pool.run(_qps_job) == [60.0, 60.0]


# ----------------------------------------------------------------------------- windows over the new metrics


@pytest.mark.parametrize(
    ("make", "fn", "extra"),
    [
        (lambda: tmx.NEPositive(2), tmx.functional.ne_positive, {}),
        (lambda: tmx.SessionRecallAtK(2, 2), tmx.functional.session_recall_at_k, {"k": 2}),
        (lambda: tmx.Segmented(tmx.CTR(2), 3), None, {}),
    ],
)
def test_windowed_new_metrics_match_the_newest_rows(make, fn, extra):
    """Windowed lifetime and window values equal the metric on all rows and on the newest rows."""
    rng = np.random.default_rng(11)
    batches = []
    for _ in range(4):
        p = torch.tensor(rng.random((2, 50)))
        batch = {"preds": p, "target": (torch.tensor(rng.random((2, 50))) < p).long()}
        if isinstance(make(), tmx.SessionRecallAtK):
            batch["sessions"] = torch.arange(50) // 5
        if isinstance(make(), tmx.Segmented):
            batch["segments"] = torch.tensor(rng.integers(0, 3, 50))
        batches.append(batch)
    windowed = tmx.Windowed(make(), window_size=100)
    for batch in batches:
        windowed.update(**batch)
    out = windowed.compute()

    def plain(selected):
        metric = make()
        for batch in selected:
            metric.update(**batch)
        return metric.compute()

    torch.testing.assert_close(out["lifetime"], plain(batches))
    torch.testing.assert_close(out["window"], plain(batches[-2:]))
    if fn is not None:
        joined = {k: torch.cat([b[k] for b in batches], dim=-1) for k in batches[0]}
        if "sessions" in joined:  # sessions restart per batch: make their ids unique over the data set
            joined["sessions"] = torch.cat([b["sessions"] + 100 * i for i, b in enumerate(batches)])
        torch.testing.assert_close(out["lifetime"], fn(**joined, **extra))


# ----------------------------------------------------------------------------- per-task settings


def test_tensor_weighted_average_per_task_flags():
    """`weighted=[True, False]`: task 0 averages with the weights, task 1 without, in every segment."""
    rng = np.random.default_rng(3)
    values, weights = rng.normal(size=(2, 60)), rng.uniform(0.1, 3.0, size=60)
    segments = rng.integers(0, SEGMENTS, size=60)
    seg = tmx.Segmented(tmx.TensorWeightedAverage(num_tasks=2, weighted=[True, False]), SEGMENTS)
    for chunk in np.array_split(np.arange(60), 3):
        seg.update(torch.tensor(values[:, chunk]), torch.tensor(weights[chunk]), torch.tensor(segments[chunk]))
    expected = [
        [np.average(values[0, segments == s], weights=weights[segments == s]) for s in range(SEGMENTS)],
        [values[1, segments == s].mean() for s in range(SEGMENTS)],
    ]
    np.testing.assert_allclose(seg.compute(), expected, rtol=1e-12)


def test_tensor_weighted_average_takes_its_own_argument_layout():
    """TensorWeightedAverage.update(values, weights): Segmented read the weights as a target and dropped them."""
    v, w = torch.tensor([1.0, 3.0, 5.0, 7.0, 2.0]), torch.tensor([3.0, 1.0, 1.0, 3.0, 0.5])
    s = torch.tensor([0, 0, 1, 1, 1])
    expected = [np.average(v[s == g].numpy(), weights=w[s == g].numpy()) for g in range(2)]  # [1.5, 5.9]
    calls = [
        lambda m: m.update(v, w, segments=s),
        lambda m: m.update(v, w, s),
        lambda m: m.update(v, weights=w, segments=s),
        lambda m: m.update(values=v, weights=w, segments=s),
        lambda m: m(v, w, segments=s),
        lambda m: MetricCollection({"m": m}).update(v, weights=w, segments=s, unused=v),
    ]
    for call in calls:
        seg = tmx.Segmented(tmx.TensorWeightedAverage(), num_segments=2)
        call(seg)
        np.testing.assert_allclose(seg.compute().numpy(), expected, rtol=1e-15)
    window = tmx.Windowed(tmx.Segmented(tmx.TensorWeightedAverage(), num_segments=2), window_size=10)
    window.update(v, w, segments=s)
    np.testing.assert_allclose(window.compute()["lifetime"].numpy(), expected, rtol=1e-15)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f, v, w, s: f(v, None, w, s), r"takes 3 positional arguments \(values, weights, segments\)"),
        (lambda f, v, w, s: f(v, target=v, weights=w, segments=s), r"unexpected keyword argument `target`"),
        (lambda f, v, w, s: f(v, w, weights=w, segments=s), r"multiple values for `weights`"),
        (lambda f, v, w, s: f(v, w), r"requires `segments`"),
    ],
)
def test_arguments_outside_the_wrapped_metrics_layout_are_rejected(call, match):
    """A target for a metric that takes none is a TypeError naming it, in update and forward; nothing changes."""
    seg = tmx.Segmented(tmx.TensorWeightedAverage(), num_segments=2)
    v, w, s = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0]), torch.tensor([0, 1])
    for entry in (seg.update, seg.forward):
        with pytest.raises(TypeError, match=match):
            call(entry, v, w, s)
    assert seg._update_count == 0 and not seg.weighted_sum.any()


def _pointwise_classes():
    found = [getattr(tmx, n) for n in tmx.__all__]
    return [c for c in found if inspect.isclass(c) and issubclass(c, _PointwiseMetric)]


@pytest.mark.parametrize(
    "factory",
    [partial(cls, num_tasks=2) for cls in _pointwise_classes()]
    + [partial(tmx.TensorWeightedAverage, num_tasks=2, weighted=[False, True])],
    ids=lambda f: f.func.__name__ + ("-flags" if "weighted" in f.keywords else ""),
)
def test_every_sum_metric_with_two_tasks_equals_the_metric_on_each_segment(factory):
    """Segmented(metric) per segment == the metric on that segment's rows, for every metric Segmented accepts."""
    rng = np.random.default_rng(4)
    probe = factory()  # the class's own domains (input_domains is None for those a RecMetricModule cannot feed)
    preds_domain, target_domain = probe._preds_domain, probe._target_domain
    preds = rng.uniform(0.05, 0.95, size=(2, 80)) if preds_domain == "probability" else rng.normal(size=(2, 80))
    target = rng.integers(0, 2, size=(2, 80)).astype(np.float64)
    if target_domain == "real":
        target += rng.normal(size=(2, 80))
        target[rng.random((2, 80)) < 0.3] = np.nan if factory.func is tmx.NumMissingLabels else 0.0
    weights = rng.uniform(0.0, 2.0, size=(2, 80))
    segments = rng.integers(0, 3, size=(2, 80))
    segments[:, :3] = [0, 1, 2]  # every segment of every task has rows
    has_target = factory.func is not tmx.TensorWeightedAverage

    def batch(cols):  # the wrapped metric's own update layout (TensorWeightedAverage: values, weights)
        p, w = torch.tensor(preds[:, cols]), torch.tensor(weights[:, cols])
        return (p, torch.tensor(target[:, cols]), w) if has_target else (p, w)

    seg = tmx.Segmented(factory(), 3)
    for chunk in np.array_split(np.arange(80), 2):
        seg.update(*batch(chunk), segments=torch.tensor(segments[:, chunk]))
    got = seg.compute()
    for t, s in itertools.product(range(2), range(3)):
        alone = factory()
        alone.update(*batch(np.nonzero(segments[t] == s)[0]))
        torch.testing.assert_close(got[t, s], alone.compute()[t], rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_segment_ids_on_another_device():  # pragma: no cover - exercised where a GPU exists
    with pytest.raises(ValueError, match="`segments` on the same device"):
        tmx.Segmented(tmx.CTR(), 2).update(
            torch.tensor([0.5]).cuda(), torch.tensor([1.0]).cuda(), segments=torch.tensor([0])
        )


@pytest.mark.parametrize("name", ["CTR", "Calibration", "NormalizedEntropy", "WeightedAccuracy", "NumPositiveSamples"])
def test_a_wrapped_metric_that_needs_labels_rejects_a_missing_target(name):
    """Segmented's own `target` is optional (TensorWeightedAverage has none); the wrapped metric's is not."""
    seg = tmx.Segmented(getattr(tmx, name)(), 2)
    p, segments = torch.tensor([0.2, 0.7, 0.4, 0.9]), torch.tensor([0, 1, 0, 1])
    seg.update(p, torch.tensor([0.0, 1.0, 1.0, 1.0]), segments=segments)
    before = {k: v.clone() for k, v in seg.metric_state.items()}
    for call in (seg.update, seg.forward):
        with pytest.raises(TypeError, match="Expected `target`"):
            call(p, None, segments=segments)
        assert all(torch.equal(before[k], v) for k, v in seg.metric_state.items())


def _segmented_own_group_job(rank, world_size):
    """Each rank in a process group of its own, given to the wrapped metric or to Segmented."""
    import torch.distributed as dist

    groups = [dist.new_group([r]) for r in range(world_size)]  # every rank creates every group
    p = torch.full((4,), 0.5)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0]) if rank == 0 else torch.tensor([0.0, 0.0, 1.0, 0.0])
    seg = torch.tensor([0, 0, 1, 1])
    inner = tmx.Segmented(tmx.CTR(process_group=groups[rank]), num_segments=2)
    outer = tmx.Segmented(tmx.CTR(), num_segments=2, process_group=groups[rank])
    for metric in (inner, outer):
        metric.update(p, y, segments=seg)
    return [inner.compute().tolist(), outer.compute().tolist()]


@pytest.mark.ddp
def test_segmented_syncs_over_the_wrapped_metrics_process_group(ddp_pool):
    rank0, rank1 = ddp_pool.run(_segmented_own_group_job)
    # by hand: each rank's own mean label per segment (no other rank's rows)
    assert rank0 == [[1.0, 0.5]] * 2
    assert rank1 == [[0.0, 0.5]] * 2


def test_segmented_rejects_two_process_groups():
    class Group:  # any object stands for a group here: it is only compared
        pass

    with pytest.raises(ValueError, match="one process group"):
        tmx.Segmented(tmx.CTR(process_group=Group()), num_segments=2, process_group=Group())


def _two_ranks():
    """TorchMetrics options that fake two ranks holding the same states: a sync doubles every sum."""
    return {"dist_sync_fn": lambda tensor, group=None: [tensor, tensor], "distributed_available_fn": lambda: True}


@pytest.mark.parametrize(
    ("metric_options", "segmented_options", "synced"),
    [
        pytest.param(_two_ranks(), {}, True, id="metric-options"),
        pytest.param({}, _two_ranks(), True, id="segmented-options"),
        pytest.param(_two_ranks(), {"sync_on_compute": False}, False, id="segmented-sync_on_compute=False"),
        pytest.param({"sync_on_compute": False}, _two_ranks(), False, id="metric-sync_on_compute=False-kept"),
        pytest.param({"sync_on_compute": False, **_two_ranks()}, {"sync_on_compute": True}, True, id="segmented-wins"),
    ],
)
def test_segmented_takes_its_own_sync_options_else_the_wrapped_metrics(metric_options, segmented_options, synced):
    """Each TorchMetrics option is Segmented's when given to it, else the wrapped metric's."""
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    s = np.array([0, 1, 1, 0, 1])
    seg = tmx.Segmented(tmx.SumWeights(**metric_options), 2, **segmented_options)
    seg.update(torch.full((5,), 0.5), weights=torch.tensor(w), segments=torch.tensor(s))
    factor = 2.0 if synced else 1.0  # by hand: two equal ranks sum to twice the local sums
    expected = factor * np.array([w[s == 0].sum(), w[s == 1].sum()])
    np.testing.assert_allclose(seg.compute().numpy(), expected)
    assert seg.sync_on_compute is synced


def test_segmented_forward_syncs_with_the_wrapped_metrics_dist_sync_on_step():
    """dist_sync_on_step on the wrapped metric: forward returns the synced batch value, as the metric's would."""
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    s = np.array([0, 1, 1, 0, 1])
    seg = tmx.Segmented(tmx.SumWeights(dist_sync_on_step=True, sync_on_compute=False, **_two_ranks()), 2)
    batch = seg(torch.full((5,), 0.5), weights=torch.tensor(w), segments=torch.tensor(s))
    local = np.array([w[s == 0].sum(), w[s == 1].sum()])  # by hand, per segment
    np.testing.assert_allclose(batch.numpy(), 2 * local)  # synced batch value
    np.testing.assert_allclose(seg.compute().numpy(), local)  # sync_on_compute=False: the local value


def _segmented_sync_options_job(rank, world_size):
    p = torch.full((4,), 0.5)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0]) if rank == 0 else torch.tensor([0.0, 0.0, 1.0, 0.0])
    seg = torch.tensor([0, 0, 1, 1])
    local = tmx.Segmented(tmx.CTR(sync_on_compute=False), num_segments=2)
    local.update(p, y, segments=seg)
    step = tmx.Segmented(tmx.CTR(dist_sync_on_step=True, sync_on_compute=False), num_segments=2)
    return [local.compute().tolist(), step(p, y, segments=seg).tolist(), step.compute().tolist()]


@pytest.mark.ddp
def test_segmented_sync_options_of_the_wrapped_metric_under_ddp(ddp_pool):
    rank0, rank1 = ddp_pool.run(_segmented_sync_options_job)
    y0, y1 = np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    seg = np.array([0, 0, 1, 1])
    local0 = [y0[seg == 0].mean(), y0[seg == 1].mean()]  # numpy: each rank's mean label per segment
    local1 = [y1[seg == 0].mean(), y1[seg == 1].mean()]
    synced = [np.r_[y0, y1][np.r_[seg, seg] == g].mean() for g in (0, 1)]
    np.testing.assert_allclose(rank0, [local0, synced, local0])
    np.testing.assert_allclose(rank1, [local1, synced, local1])


def test_one_segment_keeps_its_segment_dimension():
    """num_segments=1 gives (1,) (TorchMetrics squeezed every one-element value to 0-dim), (T, 1) for T tasks;
    through compute, forward, a cached compute and a window alike."""
    p, y, s = torch.tensor([0.2, 0.6, 0.9]), torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3, dtype=torch.long)
    seg = tmx.Segmented(tmx.CTR(), num_segments=1)
    batch = seg(p, y, segments=s)
    assert batch.shape == (1,) and seg.compute().shape == (1,) and seg.compute().shape == (1,)
    np.testing.assert_allclose(seg.compute().numpy(), [2 / 3])  # by hand: 2 of 3 labels
    two = tmx.Segmented(tmx.CTR(num_tasks=2), num_segments=1)
    assert two(torch.stack([p, p]), torch.stack([y, 1 - y]), segments=s).shape == (2, 1)
    window = tmx.Windowed(tmx.Segmented(tmx.CTR(), num_segments=1), window_size=2)
    assert {k: v.shape for k, v in window(p, y, segments=s).items()} == {"lifetime": (1,), "window": (1,)}
    assert {k: v.shape for k, v in window.compute().items()} == {"lifetime": (1,), "window": (1,)}


def test_checkpoints_from_before_a_wrapped_metric_renamed_or_added_a_state_load():
    """Segmented's states are its metric's: former names and states derived at load apply to it too."""
    from collections import OrderedDict

    gen = torch.Generator().manual_seed(0)
    p, y, s = torch.rand(40, generator=gen), (torch.rand(40, generator=gen) < 0.4).float(), torch.arange(40) % 3
    cases = {
        "weighted average": (tmx.WeightedAverage, {"weighted_num_samples_plain": "weighted_num_samples"}, None),
        "calibration-free NE": (tmx.CalibrationFreeNE, {}, "weighted_pred_complement_sum"),
    }
    for name, (cls, renamed, dropped) in cases.items():
        first = tmx.Segmented(cls(), num_segments=3)
        first.persistent(True)
        first.update(p[:20], y[:20], segments=s[:20])
        saved = first.state_dict()
        old = OrderedDict((renamed.get(k, k), v) for k, v in saved.items() if k != dropped)  # an earlier layout
        old._metadata = saved._metadata
        resumed = tmx.Segmented(cls(), num_segments=3)
        resumed.load_state_dict(old)  # strict: nothing missing, nothing unexpected
        resumed.update(p[20:], y[20:], segments=s[20:])
        whole = tmx.Segmented(cls(), num_segments=3)
        whole.update(p, y, segments=s)
        torch.testing.assert_close(resumed.compute(), whole.compute(), rtol=1e-12, atol=0, msg=name)


def test_refusals_say_what_went_wrong():
    """A class was reported as "got ABCMeta"; nested wrappers were told about sorted scores and sketches."""
    with pytest.raises(TypeError, match=r"got the class CTR: Segmented\(CTR\(\.\.\.\), num_segments\)"):
        tmx.Segmented(tmx.CTR, 3)
    for inner in (tmx.Segmented(tmx.CTR(), 2), tmx.Windowed(tmx.CTR(), 4)):
        with pytest.raises(TypeError, match="wrap the inner metric once"):
            tmx.Segmented(inner, 3)


def test_undefined_warning_of_a_million_segments_lists_ten():
    """The warning lists the first entries and the count, not a megabyte of positions (kept per text by Python)."""
    ctr = tmx.Segmented(tmx.CTR(), 1_000_000)
    ctr.update(torch.tensor([0.5]), torch.tensor([1.0]), segments=torch.tensor([3]))
    with pytest.warns(tmx.UndefinedMetricWarning) as caught:
        value = ctr.compute()
    message = str(caught[0].message)
    assert "segment(s) [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, ...] (999,999 in all):" in message
    assert len(message) < 200 and value[3] == 1.0 and int(torch.isnan(value).sum()) == 999_999


def test_windowed_segmented_per_task_ids_cut_batches_and_forward_match_numpy():
    """``Windowed(Segmented(CTR(2), 3))`` with ``(T, N)`` ids, weights, batches of 1, of the window's size and larger
    (cut to their newest rows), ``update`` and ``forward`` mixed, a resume mid-window: numpy per (task, segment) over
    the rows the window rule keeps (the newest whole updates that fit, or the newest rows of a larger one)."""
    rng = np.random.default_rng(29)
    window, num_tasks, num_segments = 7, 2, 3

    def weighted_ctr(target, weights, ids):
        out = np.full((num_tasks, num_segments), np.nan)
        for t in range(num_tasks):
            for s in range(num_segments):
                rows = ids[t] == s
                if weights[rows].sum() > 0:
                    out[t, s] = np.average(target[t, rows], weights=weights[rows])
        return out

    def kept(batches):
        if batches[-1][0].shape[1] > window:
            return [tuple(x[..., -window:] for x in batches[-1])]
        out, total = [], 0
        for batch in reversed(batches):
            if total + batch[0].shape[1] > window:
                break
            total += batch[0].shape[1]
            out.insert(0, batch)
        return out

    def joined(batches):
        return weighted_ctr(*(np.concatenate([b[k] for b in batches], axis=-1) for k in range(3)))

    metric = tmx.Windowed(tmx.Segmented(tmx.CTR(num_tasks), num_segments), window_size=window)
    seen = []
    for step, n in enumerate([3, 1, 7, 2, 12, 1, 1, 4, 9, 2, 5]):
        target = (rng.random((num_tasks, n)) < 0.5).astype(np.float64)
        weights = rng.uniform(0.1, 2.0, n)
        ids = rng.integers(0, num_segments, (num_tasks, n))
        seen.append((target, weights, ids))
        args = (torch.rand(num_tasks, n), torch.tensor(target), torch.tensor(weights))
        if step % 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
                out = metric(*args, segments=torch.tensor(ids))
            np.testing.assert_allclose(out["lifetime"].numpy(), joined(seen[-1:]), rtol=1e-12)
            np.testing.assert_allclose(out["window"].numpy(), joined(kept(seen[-1:])), rtol=1e-12)
        else:
            metric.update(*args, segments=torch.tensor(ids))
        if step == 5:
            resumed = tmx.Windowed(tmx.Segmented(tmx.CTR(num_tasks), num_segments), window_size=window)
            resumed.load_state_dict(metric.state_dict())
            metric = resumed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
            values = metric.compute()
        np.testing.assert_allclose(values["lifetime"].numpy(), joined(seen), rtol=1e-12)
        np.testing.assert_allclose(values["window"].numpy(), joined(kept(seen)), rtol=1e-12)


def _refusal(call) -> str:
    with pytest.raises((RuntimeError, ValueError)) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("windowed", [False, True])
def test_states_of_another_num_segments_are_refused_naming_num_segments(windowed):
    """A checkpoint or merged metric of 4 segments into one of 3 said "size mismatch ... this Segmented
    (num_tasks=2) expects (2, 3)": the setting that explains the shapes was not named."""

    def make(num_segments):
        metric = tmx.Segmented(tmx.NormalizedEntropy(num_tasks=2), num_segments=num_segments)
        out = tmx.Windowed(metric, window_size=10) if windowed else metric
        out.persistent(True)
        return out

    ours, theirs = make(3), make(4)
    theirs.update(torch.tensor([[0.2, 0.7], [0.4, 0.9]]), torch.tensor([[1, 0], [0, 1]]), segments=torch.tensor([0, 3]))
    before = {k: v.clone() for k, v in ours.state_dict().items() if isinstance(v, torch.Tensor)}
    for call in (lambda: ours.load_state_dict(theirs.state_dict()), lambda: ours.merge_state(theirs)):
        text = _refusal(call)
        assert "this Segmented (metric=NormalizedEntropy, num_tasks=2, num_segments=3) expects (2, 3)" in text, text
        assert "state has shape (2, 4)" in text
        for key, value in ours.state_dict().items():  # nothing of the refused states loaded
            if key in before:
                torch.testing.assert_close(value, before[key])
