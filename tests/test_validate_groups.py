"""``validate_args`` keeps metrics apart in MetricCollection compute groups; checkpoints stay the same."""

import copy
import inspect
import itertools
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx
import torchmetrics_ext.aggregation as agg

PREDS, TARGET = torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([0, 1, 0, 1])
BAD_PREDS, BAD_TARGET = torch.tensor([1.5, 0.9]), torch.tensor([0, 1])


def test_validated_log_loss_behind_unvalidated_ne_refuses_the_batch():
    """The repro: LogLoss grouped behind an unvalidated NE took preds of 1.5."""
    collection = MetricCollection(
        {"a": tmx.NormalizedEntropy(validate_args=False), "b": tmx.LogLoss()}, compute_groups=True
    )
    collection.update(PREDS, TARGET)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        collection.update(BAD_PREDS, BAD_TARGET)
    expected = log_loss(TARGET.numpy(), PREDS.double().numpy())
    assert collection["b"].compute().item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("validate_args", [True, False])
def test_same_setting_still_groups(validate_args):
    collection = MetricCollection(
        {"a": tmx.NormalizedEntropy(validate_args=validate_args), "b": tmx.LogLoss(validate_args=validate_args)},
        compute_groups=True,
    )
    collection.update(PREDS, TARGET)
    assert collection.compute_groups == {0: ["a", "b"]}
    assert collection["b"].compute().item() == pytest.approx(
        log_loss(TARGET.numpy(), PREDS.double().numpy()), rel=1e-12
    )


@pytest.mark.parametrize("factory", [tmx.NormalizedEntropy, tmx.LogLoss, tmx.CTR, tmx.Calibration])
def test_checkpoints_same_keys_and_load_across_validate_args(factory):
    checked, unchecked = factory(), factory(validate_args=False)
    checked.persistent(True)
    unchecked.persistent(True)
    unchecked.update(PREDS, TARGET)
    assert list(unchecked.state_dict()) == list(checked.state_dict())
    checked.load_state_dict(unchecked.state_dict())
    torch.testing.assert_close(checked.compute(), unchecked.compute())
    again = factory(validate_args=False)
    again.persistent(True)
    again.load_state_dict(checked.state_dict())
    torch.testing.assert_close(again.compute(), unchecked.compute())
    merged = factory()
    merged.merge_state(unchecked)
    merged.merge_state(again.metric_state)
    single = factory()
    single.update(torch.cat([PREDS, PREDS]), torch.cat([TARGET, TARGET]))
    torch.testing.assert_close(merged.compute(), single.compute())


def test_windowed_and_segmented_keep_checkpoint_names_and_load_across_validate_args():
    """Windowed's ring (``_extra_state``) and Segmented's per-segment sums keep the names of either setting."""
    windows = [tmx.Windowed(tmx.LogLoss(validate_args=v), window_size=4) for v in (False, True)]
    for window in windows:
        window.persistent(True)
        window.update(PREDS[:3], TARGET[:3])
    unchecked, checked = (w.state_dict() for w in windows)
    assert list(unchecked) == list(checked)
    assert list(unchecked["_extra_state"]["rings"]) == list(checked["_extra_state"]["rings"])
    resumed = tmx.Windowed(tmx.LogLoss(), window_size=4)
    resumed.load_state_dict(unchecked)
    resumed.update(PREDS[3:], TARGET[3:])  # the window now holds the last 4 samples: all of them
    expected = log_loss(TARGET.numpy(), PREDS.double().numpy())
    assert resumed.compute()["window"].item() == pytest.approx(expected, rel=1e-12)

    segments = torch.tensor([0, 1, 0, 1])
    collection = MetricCollection(
        {
            "a": tmx.Segmented(tmx.LogLoss(validate_args=False), num_segments=2),
            "b": tmx.Segmented(tmx.LogLoss(), num_segments=2),
        },
        compute_groups=True,
    )
    collection.update(PREDS, TARGET, segments=segments)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        collection.update(BAD_PREDS, BAD_TARGET, segments=torch.tensor([0, 1]))
    per_segment = [log_loss(TARGET[i::2].numpy(), PREDS[i::2].double().numpy(), labels=[0, 1]) for i in (0, 1)]
    torch.testing.assert_close(collection["b"].compute(), torch.tensor(per_segment, dtype=torch.float64))
    a, b = collection["a"], collection["b"]
    a.persistent(True)
    b.persistent(True)
    assert list(a.state_dict()) == list(b.state_dict())


@pytest.mark.parametrize(
    "options", [{}, {"num_bins": 1000}, {"from_logits": True}, {"num_bins": 1000, "from_logits": True}]
)
def test_auc_never_groups_across_validate_args(options):
    """Exact and binned AUC: a validated one behind an unvalidated one refused nothing (binned: IndexError)."""
    from sklearn.metrics import roc_auc_score

    preds = torch.logit(PREDS) if options.get("from_logits") else PREDS
    bad = torch.tensor([float("nan"), 0.9]) if options.get("from_logits") else BAD_PREDS
    unchecked, checked = tmx.AUC(validate_args=False, **options), tmx.AUC(**options)
    # before the fix the validated one joined the unvalidated one's group whichever sorted first
    collection = MetricCollection({"a": checked, "b": unchecked}, compute_groups=True)
    collection.update(preds, TARGET)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        collection.update(bad, BAD_TARGET)
    # 1,000 bins keep these four scores apart: the binned value is the exact one
    expected = roc_auc_score(TARGET.numpy(), PREDS.double().numpy())
    assert checked.compute().item() == pytest.approx(expected, rel=1e-12)
    # checkpoints under the same names, loading into either setting
    for metric in (checked, unchecked):
        metric.persistent(True)
    assert list(unchecked.state_dict()) == list(checked.state_dict())
    fresh = tmx.AUC(validate_args=False, **options)
    fresh.load_state_dict(checked.state_dict())
    assert fresh.compute().item() == pytest.approx(expected, rel=1e-12)
    merged = tmx.AUC(**options)
    merged.merge_state(fresh)
    assert merged.compute().item() == pytest.approx(expected, rel=1e-12)


def _ndcg_reference(scores, relevance, k):
    """NDCG@k of each query (rows), linear gain and log2 discount, in numpy."""
    order = np.argsort(-scores, axis=1, kind="stable")
    discount = 1.0 / np.log2(np.arange(2, scores.shape[1] + 2))[:k]
    dcg = (np.take_along_axis(relevance, order, 1)[:, :k] * discount).sum(1)
    idcg = (-np.sort(-relevance, axis=1)[:, :k] * discount).sum(1)
    return dcg / idcg


@pytest.mark.parametrize("queries_complete_per_batch", [False, True])
def test_ranking_never_groups_across_validate_args(queries_complete_per_batch):
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
    relevance = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    checked = tmx.NDCG(k=2, queries_complete_per_batch=queries_complete_per_batch)
    unchecked = tmx.NDCG(k=2, queries_complete_per_batch=queries_complete_per_batch, validate_args=False)
    collection = MetricCollection({"a": unchecked, "b": checked}, compute_groups=True)
    collection.update(scores, relevance)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="target"):
        collection.update(scores, torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, 0.0]]))
    expected = _ndcg_reference(scores.numpy().astype(np.float64), relevance.numpy().astype(np.float64), 2).mean()
    assert checked.compute().item() == pytest.approx(expected, rel=1e-12)
    for metric in (checked, unchecked):
        metric.persistent(True)
    assert list(unchecked.state_dict()) == list(checked.state_dict())
    fresh = tmx.NDCG(k=2, queries_complete_per_batch=queries_complete_per_batch, validate_args=False)
    fresh.load_state_dict(checked.state_dict())
    assert fresh.compute().item() == pytest.approx(expected, rel=1e-12)


def test_multiclass_recall_and_reliability_never_group_across_validate_args():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    labels = torch.tensor([1, 2])
    collection = MetricCollection(
        {
            "a": tmx.MulticlassRecallAtK(k=1, num_classes=3, validate_args=False),
            "b": tmx.MulticlassRecallAtK(k=1, num_classes=3),
        },
        compute_groups=True,
    )
    collection.update(logits, labels)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    reliability = MetricCollection(
        {"a": tmx.Reliability(validate_args=False), "b": tmx.Reliability()}, compute_groups=True
    )
    reliability.update(PREDS, TARGET)
    assert reliability.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        reliability.update(BAD_PREDS, BAD_TARGET)
    a, b = reliability["a"], reliability["b"]
    a.persistent(True)
    b.persistent(True)
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())


# --- every exported metric taking validate_args ------------------------------------------------------------
# Each case: (factory taking validate_args, a good batch, bad batches). The validated metric alone must
# refuse at least one bad batch; every batch it refuses alone a MetricCollection(compute_groups=True)
# must refuse too, whatever shares its group (an unvalidated metric of its class, another class).

_P = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.6, 0.3])
_T = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
_IDS = torch.tensor([0, 0, 0, 1, 1, 1])
_FLAT_GOOD = {"preds": _P, "target": _T}
_VALUES_GOOD = {"value": torch.tensor([1.0, 2.0, 0.5])}
_GROUPS_GOOD = {"preds": _P, "target": _T, "groups": _IDS}
_SESSIONS_GOOD = {"preds": _P, "target": _T, "sessions": _IDS}
_TWO = torch.tensor([0.5, 0.9]), torch.tensor([0.0, 1.0])
_NAN = float("nan")
_FLAT_BAD: list[dict[str, torch.Tensor]] = [
    {"preds": torch.tensor([1.5, 0.9]), "target": _TWO[1]},
    {"preds": torch.tensor([-0.5, 0.9]), "target": _TWO[1]},
    {"preds": torch.tensor([_NAN, 0.9]), "target": _TWO[1]},
    {"preds": torch.tensor([float("inf"), 0.9]), "target": _TWO[1]},
    {"preds": _TWO[0], "target": torch.tensor([2.0, 1.0])},
    {"preds": _TWO[0], "target": torch.tensor([-1.0, 1.0])},
    {"preds": _TWO[0], "target": torch.tensor([0.5, 1.0])},
    {"preds": _TWO[0], "target": torch.tensor([_NAN, 1.0])},
    {"preds": _TWO[0], "target": _TWO[1], "weights": torch.tensor([-1.0, 1.0])},
    {"preds": _TWO[0], "target": _TWO[1], "weights": torch.tensor([_NAN, 1.0])},
    {"preds": _TWO[0], "target": torch.tensor([0.0, 1.0, 1.0])},
]
_RANK_GOOD = {"preds": torch.tensor([[0.1, 0.9, 0.8], [0.2, 0.6, 0.3]]), "target": torch.tensor([[0, 1, 0], [1, 1, 0]])}
_ROW = torch.tensor([[0.1, 0.9, 0.8]])
_RANK_BAD: list[dict[str, torch.Tensor]] = [
    {"preds": torch.tensor([[_NAN, 0.9, 0.8]]), "target": torch.tensor([[0, 1, 0]])},
    {"preds": _ROW, "target": torch.tensor([[-1, 1, 0]])},
    {"preds": _ROW, "target": torch.tensor([[0, 1]])},
    {"preds": _ROW, "target": torch.tensor([[0, 1, 0]]), "weights": torch.tensor([-1.0])},
    {"preds": _ROW, "target": torch.tensor([[0, 1, 0]]), "weights": torch.tensor([_NAN])},
]


def _with(extra: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [bad | extra for bad in _FLAT_BAD]


_FLAT_NAMES = (
    "AUC AUPRC CTR Calibration CalibrationFreeNE HindsightTargetPR LabelAverage LogLoss NEPositive "
    "NormalizedEntropy NumMissingLabels NumPositiveSamples NumServingExamples RecalibratedCalibration "
    "RecalibratedNE RegressionAUC Reliability SumWeights WeightedAccuracy WeightedAverage WeightedMAE WeightedMSE "
    "WeightedNMSE WeightedNRMSE WeightedPrecision WeightedR2 WeightedRMSE WeightedRecall WeightedSumPredictions XAUC"
).split()


def _flat(name: str, **options: Any) -> tuple[Callable[..., Metric], dict[str, torch.Tensor], list[dict]]:
    return (lambda **kw: getattr(tmx, name)(**options, **kw), _FLAT_GOOD, _FLAT_BAD)


_CASES: dict[str, tuple[Callable[..., Metric], dict[str, torch.Tensor], list[dict]]] = {
    **{name: _flat(name) for name in _FLAT_NAMES},
    "AUC-binned": _flat("AUC", num_bins=100),
    **{
        name: (lambda name=name, **kw: getattr(tmx, name)(k=2, **kw), _RANK_GOOD, _RANK_BAD)
        for name in ("F1AtK", "HitRate", "MAP", "MRR", "NDCG", "PrecisionAtK", "RecallAtK")
    },
    "NDCG-per-batch": (lambda **kw: tmx.NDCG(k=2, queries_complete_per_batch=True, **kw), _RANK_GOOD, _RANK_BAD),
    "RPrecision": (lambda **kw: tmx.RPrecision(**kw), _RANK_GOOD, _RANK_BAD),
    "RankingMetrics": (lambda **kw: tmx.RankingMetrics(ks=[2], **kw), _RANK_GOOD, _RANK_BAD),
    "MulticlassRecallAtK": (
        lambda **kw: tmx.MulticlassRecallAtK(k=2, num_classes=3, **kw),
        {"preds": _RANK_GOOD["preds"], "target": torch.tensor([1, 2])},
        [
            {"preds": _ROW, "target": torch.tensor([3])},
            {"preds": torch.tensor([[_NAN, 0.1, 0.2]]), "target": torch.tensor([1])},
            {"preds": _ROW, "target": torch.tensor([1]), "weights": torch.tensor([-1.0])},
        ],
    ),
    "MultiLabelPrecision": (
        lambda **kw: tmx.MultiLabelPrecision(num_labels=3, **kw),
        {"preds": torch.tensor([5, 3, 1]), "target": torch.tensor([1, 3, 4])},
        [
            {"preds": torch.tensor([8, 1]), "target": torch.tensor([1, 1])},
            {"preds": torch.tensor([-1, 1]), "target": torch.tensor([1, 1])},
            {"preds": torch.tensor([1, 1]), "target": torch.tensor([1, 1]), "weights": torch.tensor([-1.0, 1.0])},
        ],
    ),
    **{
        name: (
            lambda name=name, **kw: getattr(tmx, name)(**kw),
            _GROUPS_GOOD,
            _with({"groups": torch.tensor([0, 0])}),
        )
        for name in ("GroupedAUC", "GroupedAUPRC")
    },
    **{
        name: (
            lambda name=name, **kw: getattr(tmx, name)(k=2, **kw),
            _SESSIONS_GOOD,
            _with({"sessions": torch.tensor([0, 0])}),
        )
        for name in ("SessionPrecisionAtK", "SessionRecallAtK")
    },
    # scores and labels of any finite value: non-finite ones, negative or NaN weights and a length mismatch refused
    "SessionPairwiseAUC": (
        lambda **kw: tmx.SessionPairwiseAUC(**kw),
        _SESSIONS_GOOD,
        [bad | {"sessions": torch.tensor([0, 0])} for bad in _FLAT_BAD[2:4] + _FLAT_BAD[7:]],
    ),
    "TensorWeightedAverage": (
        lambda **kw: tmx.TensorWeightedAverage(**kw),
        {"values": _P},
        [{"values": torch.tensor([_NAN])}, {"values": torch.tensor([1.0]), "weights": torch.tensor([-1.0])}],
    ),
    "TowerQPS": (
        lambda **kw: tmx.TowerQPS(clock=lambda: 1.0, **kw),
        {"preds": _P},
        [{"num_examples": torch.tensor(-1.0)}, {"num_examples": torch.tensor(_NAN)}],
    ),
    "TowerQPS-window": (
        lambda **kw: tmx.TowerQPS(clock=lambda: 1.0, window_seconds=10.0, **kw),
        {"preds": _P},
        [{"num_examples": torch.tensor(-1.0)}],
    ),
    "Windowed": (lambda **kw: tmx.Windowed(tmx.LogLoss(**kw), window_size=4), _FLAT_GOOD, _FLAT_BAD),
    "Windowed-XAUC": (lambda **kw: tmx.Windowed(tmx.XAUC(**kw), window_size=4), _FLAT_GOOD, _FLAT_BAD),
    "Segmented": (
        lambda **kw: tmx.Segmented(tmx.LogLoss(**kw), num_segments=2),
        {"preds": _P, "target": _T, "segments": _IDS % 2},
        _with({"segments": torch.tensor([0, 1])}),
    ),
    "Segmented-WeightedMSE": (
        lambda **kw: tmx.Segmented(tmx.WeightedMSE(**kw), num_segments=2),
        {"preds": _P, "target": _T, "segments": _IDS % 2},
        _with({"segments": torch.tensor([0, 1])}),
    ),
    **{
        name: (
            lambda name=name, **kw: getattr(agg, name)(**kw),
            _VALUES_GOOD,
            [{"value": torch.tensor([_NAN])}, {"value": torch.tensor([float("inf")])}, {"value": "x"}],
        )
        for name in ("Sum", "Mean", "Max", "Min", "Distribution")
    },
    "Mean-weighted": (
        lambda **kw: agg.Mean(**kw),
        {"value": torch.tensor([1.0, 2.0]), "weight": torch.tensor([1.0, 3.0])},
        [{"value": torch.tensor([1.0]), "weight": torch.tensor([-1.0])}],
    ),
    "CategoricalCount": (
        lambda **kw: agg.CategoricalCount(**kw),
        {"categories": ["a", "b"]},
        [{"categories": [1.5]}, {"categories": torch.tensor([1.5])}],
    ),
}
_ABSTRACT = {"GuardedMetric", "TaskMetric", "AggregationMetric"}  # bases, no update of their own
# cases a compute group is known to mix across validate_args (strict xfail): none left
_KNOWN_GAPS: set[str] = set()


def test_every_exported_metric_taking_validate_args_has_a_case():
    takes = set()
    for name, obj in [(n, getattr(tmx, n)) for n in tmx.__all__] + [(n, getattr(agg, n)) for n in agg.__all__]:
        if inspect.isclass(obj) and issubclass(obj, Metric) and name not in _ABSTRACT:
            try:
                obj.__init__  # noqa: B018
                params = inspect.signature(obj.__init__).parameters
            except (TypeError, ValueError):  # pragma: no cover
                continue
            if "validate_args" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
                takes.add(name)
    # Throughput takes no validate_args (its kwargs are TorchMetrics' options)
    takes.discard("Throughput")
    covered = {name.split("-")[0] for name in _CASES}
    assert takes <= covered, sorted(takes - covered)


def _refused(make: Callable[..., Metric], good: dict, bads: list[dict]) -> list[dict]:
    """The bad batches a validated metric alone refuses after the good batch (ValueError/TypeError)."""
    refused = []
    for bad in bads:
        metric = make()
        metric.update(**good)
        try:
            metric.update(**bad)
        except (ValueError, TypeError):
            refused.append(bad)
    return refused


def _states(metric: Metric) -> dict[str, Any]:
    """A metric's states under its checkpoint names (list states concatenated), comparable across settings."""
    metric.persistent(True)
    out = {}
    for key, value in metric.state_dict().items():
        if isinstance(value, list):
            value = torch.cat(value) if value else torch.zeros(0)
        out[key] = value
    return out


def _assert_same_states(metric: Metric, expected: Metric) -> None:
    ours, theirs = _states(metric), _states(expected)
    assert list(ours) == list(theirs)
    for key in ours:
        if isinstance(theirs[key], torch.Tensor):
            torch.testing.assert_close(ours[key], theirs[key], equal_nan=True, msg=key)


@pytest.mark.parametrize(
    ("name", "checked_first"),
    [
        pytest.param(name, first, marks=pytest.mark.xfail(strict=True, reason="_KNOWN_GAPS"))
        if name in _KNOWN_GAPS
        else (name, first)
        for name in _CASES
        for first in (True, False)
    ],
)
def test_collection_refuses_what_the_validated_member_refuses(name, checked_first):
    make, good, bads = _CASES[name]
    refused = _refused(make, good, bads)
    assert refused, f"{name} refuses none of the bad batches: give it one"
    for bad in refused:
        members = {"checked": make(), "unchecked": make(validate_args=False)}
        if not checked_first:
            members = dict(reversed(members.items()))
        collection = MetricCollection(members, compute_groups=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collection.update(**good)
        assert not any(len(group) > 1 for group in collection.compute_groups.values()), collection.compute_groups
        with pytest.raises((ValueError, TypeError)):
            collection.update(**bad)
        # the validated member holds the good batch alone, as a fresh metric fed only it
        fresh = make()
        fresh.update(**good)
        _assert_same_states(collection["checked"], fresh)


@pytest.mark.parametrize("name", list(_CASES))
def test_checkpoints_and_merges_across_validate_args(name):
    """Checkpoints keep their keys and load, and ``metric_state`` merges, across either setting."""
    make, good, _ = _CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source_checked, target_checked in itertools.product((True, False), repeat=2):
            source = make(validate_args=source_checked)
            source.update(**good)
            target = make(validate_args=target_checked)
            target.persistent(True)
            source.persistent(True)
            target.load_state_dict(source.state_dict())
            reference = make()
            reference.update(**good)
            _assert_same_states(target, reference)
            # metric_state names the states as checkpoints do, under either setting
            assert list(source.metric_state) == list(reference.metric_state)
            if isinstance(source, tmx.Windowed):
                # a Windowed merges another Windowed or its lifetime's states
                merged = make(validate_args=target_checked)
                merged.merge_state(source.lifetime.metric_state)
                merged.merge_state(source)
                reference.update(**good)  # the batch twice
                torch.testing.assert_close(merged.lifetime.compute(), reference.lifetime.compute())
                continue
            merged = make(validate_args=target_checked)
            merged.merge_state(source.metric_state)
            merged.merge_state(source)
            doubled = make()
            doubled.update(**good)
            doubled.update(**good)
            _assert_same_states(merged, doubled)


def _pair_cases() -> list[tuple[str, str]]:
    """Pairs of cases of one input kind whose validated metrics hold states of the same names (may group)."""
    pairs = []
    for a, b in itertools.permutations(_CASES, 2):
        (make_a, good_a, _), (make_b, good_b, _) = _CASES[a], _CASES[b]
        if good_a is not good_b:
            continue
        if set(make_a()._defaults) == set(make_b()._defaults):
            pairs.append((a, b))
    return pairs


@pytest.mark.parametrize(("first", "second"), _pair_cases())
@pytest.mark.parametrize("first_checked", [True, False])
def test_metrics_grouped_together_refuse_what_either_refuses(first, second, first_checked):
    """A validated metric grouped behind another class's (NE and LogLoss, the regression errors) is refused for."""
    make_a, good, _ = _CASES[first]
    make_b, _, bads = _CASES[second]
    for bad in _refused(make_b, good, bads):
        collection = MetricCollection({"a": make_a(validate_args=first_checked), "b": make_b()}, compute_groups=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collection.update(**good)
        grouped = collection.compute_groups == {0: ["a", "b"]}
        if not first_checked:
            assert not grouped, collection.compute_groups
        # an unvalidated first member may fail on the batch itself first (a shape it cannot view)
        with pytest.raises((ValueError, TypeError) if first_checked else Exception):
            collection.update(**bad)
        fresh = make_b()
        fresh.update(**good)
        _assert_same_states(collection["b"], fresh)


@pytest.mark.parametrize(
    "metrics",
    [
        {"ne": {"validate_args": False}, "log_loss": {}},
        {"ne": {}, "log_loss": {"validate_args": False}},
        {"mse": {"validate_args": False}, "mae": {}, "ctr": {"validate_args": False}, "calibration": {}},
        {"xauc": {"validate_args": False}, "regression_auc": {}, "auc": {"validate_args": False}},
    ],
)
def test_module_with_mixed_validate_args_refuses_what_a_validated_metric_refuses(metrics):
    """RecMetricModule groups by shared statistics (either setting): one validated metric checks the step for all."""
    module = tmx.RecMetricModule.from_config(
        {"tasks": [{"name": "t", "session_id_name": "session"}], "metrics": metrics, "throughput": False}
    )
    good = {"prediction": _P, "label": _T, "session": _IDS}
    module.update(good)
    for bad in ({"prediction": torch.tensor([1.5, 0.9])}, {"prediction": torch.tensor([_NAN, 0.9])}):
        with pytest.raises(ValueError, match=r"prediction|preds"):
            module.update({"label": _TWO[1], "session": torch.tensor([0, 0])} | bad)
    fresh = tmx.RecMetricModule.from_config(
        {"tasks": [{"name": "t", "session_id_name": "session"}], "metrics": list(metrics), "throughput": False}
    )
    fresh.update(good)
    expected, values = fresh.compute(), module.compute()
    assert list(values) == list(expected)
    for key in expected:
        torch.testing.assert_close(values[key], expected[key], equal_nan=True, msg=key)
    if "log_loss" in metrics:
        assert values["log_loss/t"].item() == pytest.approx(log_loss(_T.numpy(), _P.double().numpy()), rel=1e-12)


def test_cli_demo_collection_refuses_a_batch_any_member_refuses():
    """The CLI's MetricCollection(compute_groups=True): grouped members (CTR/Calibration, the errors) refuse too."""
    from torchmetrics_ext.cli import demo_metrics

    collection = demo_metrics(1)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    collection.update(_P, _T, groups=groups)
    assert any(len(group) > 1 for group in collection.compute_groups.values())
    with pytest.raises(ValueError, match="preds"):
        collection.update(torch.tensor([1.5, 0.9]), _TWO[1], groups=torch.tensor([0, 1]))
    fresh = demo_metrics(1)
    fresh.update(_P, _T, groups=groups)
    for name in fresh:
        _assert_same_states(collection[name], fresh[name])


@pytest.mark.parametrize("leader_validates", [True, False])
@pytest.mark.parametrize("copier", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))], ids=["deepcopy", "pickle"])
def test_module_member_copy_holds_its_leader_states_across_validate_args(leader_validates, copier):
    """A copy of a module's compute-group member holds the leader's states when the two differ in validate_args."""
    first, second = ({}, {"validate_args": False}) if leader_validates else ({"validate_args": False}, {})
    module = tmx.RecMetricModule.from_config(
        {"tasks": ["t"], "metrics": {"mse": first, "mae": second}, "throughput": False}
    )
    preds, target = torch.tensor([0.2, 0.7, 0.4, 0.9]), torch.tensor([0.0, 1.0, 1.0, 0.0])
    module.update({"prediction": preds, "label": target})
    assert module.compute_groups == [["mse", "mae"]]
    copied = copier(module.metrics["mae"])  # no compute since the update: the copy reads the leader's states
    expected = mean_absolute_error(target.numpy(), preds.double().numpy())
    assert copied.compute().item() == pytest.approx(expected, rel=1e-12)


_DDP_PREDS = torch.tensor([[0.12, 0.81, 0.47, 0.95, 0.33, 0.64], [0.71, 0.05, 0.58, 0.26, 0.89, 0.42]])
_DDP_TARGET = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]])


def _module_values_mixed_validate_args(rank: int, world_size: int, per_rank: bool) -> dict[str, float]:
    """A module whose compute groups mix validate_args (per rank too with ``per_rank``), computed under DDP."""
    unvalidated_first = rank == 0 if per_rank else True
    metrics = {
        "mse": {"validate_args": not unvalidated_first},
        "mae": {"validate_args": unvalidated_first},
        "auc": {"validate_args": unvalidated_first},
        "auprc": {"validate_args": not unvalidated_first},
    }
    module = tmx.RecMetricModule.from_config({"tasks": ["t"], "metrics": metrics, "throughput": False})
    module.update({"prediction": _DDP_PREDS[rank], "label": _DDP_TARGET[rank]})
    assert module.compute_groups == [["mse", "mae"], ["auc", "auprc"]]
    return {key: value.item() for key, value in module.compute().items()}


@pytest.mark.ddp
@pytest.mark.parametrize("per_rank", [False, True])
def test_ddp_module_groups_mixing_validate_args_compute_every_rank(ddp_pool, per_rank):
    """The fused gather's states of a leader reach members of the other validate_args (named apart in memory)."""
    preds, target = _DDP_PREDS.reshape(-1).double().numpy(), _DDP_TARGET.reshape(-1).numpy()
    expected = {
        "mse/t": mean_squared_error(target, preds),
        "mae/t": mean_absolute_error(target, preds),
        "auc/t": roc_auc_score(target, preds),
        "auprc/t": average_precision_score(target, preds),
    }
    for values in ddp_pool.run(_module_values_mixed_validate_args, per_rank):
        assert values.keys() == expected.keys()
        for key, value in expected.items():
            assert values[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("factory", [tmx.WeightedMSE, tmx.AUC, tmx.NormalizedEntropy])
def test_load_reports_unvalidated_states_under_their_checkpoint_names(factory):
    """Missing keys and load errors name the keys a checkpoint holds (never the in-memory ``_unchecked`` names)."""
    metric = factory(validate_args=False)
    metric.persistent(True)
    keys = list(metric.state_dict())  # the checkpoint names
    assert not any(key.endswith("_unchecked") for key in keys)
    assert metric.load_state_dict({}, strict=False).missing_keys == keys
    broken = dict(metric.state_dict())
    first = keys[0]
    broken[first] = torch.zeros(7, 7, dtype=torch.float64)  # no state of any metric has this shape
    with pytest.raises(RuntimeError) as raised:
        metric.load_state_dict(broken)
    assert "_unchecked" not in str(raised.value)
    assert first in str(raised.value)


@pytest.mark.parametrize("validate_args", [True, False])
def test_module_load_restarts_an_unvalidated_metric_the_checkpoint_lacks(validate_args):
    """A metric added since the module's checkpoint starts afresh at load (strict=False), unvalidated too."""
    first, second = torch.tensor([0.2, 0.7, 0.4, 0.9]), torch.tensor([0.1, 0.3, 0.6])
    labels_first, labels_second = torch.tensor([0.0, 1.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0])
    options = {"validate_args": validate_args}
    saved = tmx.RecMetricModule.from_config({"tasks": ["t"], "metrics": {"ctr": options}, "throughput": False})
    saved.update({"prediction": second, "label": labels_second})
    module = tmx.RecMetricModule.from_config(
        {"tasks": ["t"], "metrics": {"ctr": options, "mse": options}, "throughput": False}
    )
    module.update({"prediction": first, "label": labels_first})  # before the load: not resumed
    missing = module.load_state_dict(saved.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("metrics.mse.") and "_unchecked" not in key for key in missing)
    module.update({"prediction": second, "label": labels_second})
    expected = mean_squared_error(labels_second.numpy(), second.double().numpy())
    assert module.compute()["mse/t"].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("first_validates", [True, False])
def test_explicit_compute_group_across_validate_args_shares_the_states(first_validates):
    """``compute_groups=[[...]]`` names the group: its members read the first one's states under either setting."""
    collection = MetricCollection(
        {
            "mse": tmx.WeightedMSE(validate_args=first_validates),
            "mae": tmx.WeightedMAE(validate_args=not first_validates),
        },
        compute_groups=[["mse", "mae"]],
    )
    preds, target = torch.tensor([0.2, 0.7, 0.4, 0.9]), torch.tensor([0.0, 1.0, 1.0, 0.0])
    collection.update(preds, target)
    collection.update(preds[:2], target[:2])
    all_preds, all_target = torch.cat([preds, preds[:2]]).double().numpy(), torch.cat([target, target[:2]]).numpy()
    values = collection.compute()
    assert values["mae"].item() == pytest.approx(mean_absolute_error(all_target, all_preds), rel=1e-12)
    assert values["mse"].item() == pytest.approx(mean_squared_error(all_target, all_preds), rel=1e-12)


def test_merge_maps_state_names_as_attribute_access_does():
    """One mapping between the two ``validate_args`` spellings (``_memory_name``) for merges and attribute access.

    An unvalidated NDCG names its value sum ``..._unchecked`` in memory and its ``weight_sum`` alike under either
    setting, so no metric holds a ``weight_sum_unchecked``: its merge took one for ``weight_sum`` while
    ``metric.weight_sum_unchecked`` raised. Now the merge refuses it as a state of another metric, its states
    untouched, and the names either setting holds still merge.
    """
    scores, relevance = _RANK_GOOD["preds"], _RANK_GOOD["target"]
    source = tmx.NDCG(k=2)
    source.update(scores, relevance)
    target = tmx.NDCG(k=2, validate_args=False)
    target.update(scores, relevance)
    before = _states(target)
    foreign = dict(source.metric_state)
    foreign["weight_sum_unchecked"] = foreign.pop("weight_sum")
    with pytest.raises(ValueError, match="weight_sum_unchecked"):
        target.merge_state(foreign)
    with pytest.raises(AttributeError, match="weight_sum_unchecked"):
        target.weight_sum_unchecked  # noqa: B018
    after = _states(target)
    assert list(after) == list(before)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, msg=key)
    # the names metrics hold: the checkpoint names, and the validated metric itself
    target.merge_state(source.metric_state)
    target.merge_state(source)
    target.weight_sum  # noqa: B018  # the unrenamed state, read under its one name
    rows = np.tile(scores.numpy().astype(np.float64), (3, 1))
    expected = _ndcg_reference(rows, np.tile(relevance.numpy().astype(np.float64), (3, 1)), 2).mean()
    assert target.compute().item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(_CASES))
def test_each_setting_reads_the_other_settings_states_as_its_own(name):
    """Every state name either ``validate_args`` holds in memory maps onto the other setting's (merges, syncs).

    Sum, Mean, Max and Min name their states after the NaN setting, which ``validate_args`` is part of (their own
    map, through TorchMetrics' names): left out here, their merges across settings are checked above.
    """
    make = _CASES[name][0]
    checked, unchecked = make(), make(validate_args=False)
    for metric, other in ((checked, unchecked), (unchecked, checked)):
        for part, other_part in zip(_metrics_in(metric), _metrics_in(other), strict=True):
            if hasattr(part, "_states_under_own_names") and not part.__dict__.get("_torchmetrics_names"):
                mapped = part._states_under_own_names(dict.fromkeys(other_part._defaults))
                assert set(mapped) == set(part._defaults), (type(part).__name__, sorted(mapped))


def _metrics_in(metric: Metric) -> list[Metric]:
    """``metric`` and the metrics inside it (a wrapper's), in a fixed order."""
    return [part for _, part in metric.named_modules() if isinstance(part, Metric)]
