"""``validate_args`` keeps metrics apart in MetricCollection compute groups; checkpoints stay the same."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx

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


@pytest.mark.parametrize(
    ("unchecked", "checked", "reference", "bad"),
    [
        (lambda: tmx.CTR(validate_args=False), tmx.CTR, lambda p, t: t.mean(), 1.5),
        (lambda: tmx.Calibration(validate_args=False), tmx.CTR, lambda p, t: t.mean(), 1.5),
        (
            lambda: tmx.WeightedMSE(validate_args=False),
            tmx.WeightedMSE,
            lambda p, t: ((p - t) ** 2).mean(),
            float("nan"),
        ),
    ],
)
def test_pointwise_families_never_group_across_validate_args(unchecked, checked, reference, bad):
    collection = MetricCollection({"a": unchecked(), "b": checked()}, compute_groups=True)
    collection.update(PREDS, TARGET)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        collection.update(torch.tensor([bad, 0.9]), BAD_TARGET)
    expected = reference(PREDS.double().numpy(), TARGET.double().numpy())
    assert collection["b"].compute().item() == pytest.approx(float(np.asarray(expected)), rel=1e-12)


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


def test_grouped_auc_never_groups_across_validate_args():
    groups = torch.tensor([0, 0, 1, 1])
    collection = MetricCollection(
        {"a": tmx.GroupedAUC(validate_args=False), "b": tmx.GroupedAUC()}, compute_groups=True
    )
    collection.update(PREDS, TARGET, groups)
    assert collection.compute_groups == {0: ["a"], 1: ["b"]}
    with pytest.raises(ValueError, match="preds"):
        collection.update(BAD_PREDS, BAD_TARGET, torch.tensor([0, 1]))


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
