"""A metric loaded through a parent module (a user's model, Lightning's checkpoint restore) loads all or nothing.

``nn.Module.load_state_dict`` calls each submodule's ``_load_from_state_dict`` and raises for missing
keys only at the end: a metric that starts afresh on another setting's checkpoint used to be reset
by then, so a refused strict load left it reset. The references are computed here from the data
(numpy formulas, sklearn), never taken from the metric.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext.wrappers.windowed import Windowed


class _Model(torch.nn.Module):
    """A user's model holding a metric next to a layer of its own (a LightningModule's layout)."""

    def __init__(self, metric: torch.nn.Module) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 1)
        self.metric = metric


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    """Normalized entropy of probabilities ``p`` for labels ``y`` (unit weights)."""
    cross_entropy = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    rate = y.mean()
    return float(cross_entropy / -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)))


def _recall_at_k(scores: np.ndarray, target: np.ndarray, k: int) -> float:
    """Share of the rows whose target class is among their ``k`` highest scores."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(target, top)]))


def _batch(kind: str, seed: int, n: int) -> tuple[tuple[torch.Tensor, ...], dict]:
    """``(update arguments, the data as numpy)`` for a metric of ``kind``."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "recall":
        scores = torch.rand(n, 20, generator=gen)
        target = torch.randint(0, 20, (n,), generator=gen)
        return (scores, target), {"scores": scores.double().numpy(), "target": target.numpy()}
    if kind == "auc":  # at the centres of the 200 bins: the binned AUC is the exact one
        preds = (torch.randint(0, 200, (n,), generator=gen).double() + 0.5) / 200
    else:
        preds = torch.rand(n, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(n, generator=gen, dtype=torch.float64) < preds).long()
    target[:2] = torch.tensor([0, 1])  # both classes in every batch
    return (preds, target), {"preds": preds.numpy(), "target": target.numpy()}


def _reference(kind: str, batches: list[dict]) -> float:
    """The metric's value over ``batches``, from the data."""
    data = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    if kind == "recall":
        return _recall_at_k(data["scores"], data["target"], 10)
    if kind == "auc":
        return float(roc_auc_score(data["target"], data["preds"]))
    return _ne(data["preds"], data["target"])


# (kind, the saved metric (another setting), the loaded one, what the strict load's error names, strict=False loads)
CASES = [
    (
        "recall",
        lambda: tmx.MulticlassRecallAtK(k=5, num_classes=20),
        lambda: tmx.MulticlassRecallAtK(k=10, num_classes=20),
        r"Missing key\(s\) in state_dict: .*metric\.hit_sum_k10_of20(.|\n)*saved with k=5",
        True,
    ),
    (
        "auc",
        lambda: tmx.AUC(num_bins=100, bin_space="probability"),
        lambda: tmx.AUC(num_bins=200, bin_space="probability"),
        r"size mismatch for metric\.hist",
        False,
    ),
    (
        "ne",
        lambda: tmx.NormalizedEntropy(from_logits=True),
        lambda: tmx.NormalizedEntropy(from_logits=False),
        r"Missing key\(s\) in state_dict: .*metric\.cross_entropy_sum(.|\n)*a checkpoint of other settings",
        True,
    ),
]


def _updated(make, kind: str, seed: int, n: int = 64) -> tuple[tmx.Metric, dict]:
    metric = make()
    metric.persistent(True)
    args, data = _batch(kind, seed, n)
    metric.update(*args)
    return metric, data


@pytest.mark.parametrize(("kind", "saved", "loaded", "match", "afresh"), CASES, ids=[c[0] for c in CASES])
def test_a_strict_parent_load_of_another_settings_checkpoint_leaves_the_metric_as_it_was(
    kind, saved, loaded, match, afresh
):
    """The parent's strict load raises naming the states (and, for a metric that would start afresh, why)
    and the metric keeps its value, its update count and its next updates add to them."""
    source, _ = _updated(saved, kind, seed=1)
    checkpoint = _Model(source).state_dict()
    metric, first = _updated(loaded, kind, seed=2)
    model = _Model(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note is in the error, not warned besides
        with pytest.raises(RuntimeError, match=match):
            model.load_state_dict(checkpoint)
    assert metric._update_count == 1
    assert metric.compute().item() == pytest.approx(_reference(kind, [first]), rel=1e-12)
    args, second = _batch(kind, seed=3, n=48)
    metric.update(*args)
    assert metric._update_count == 2
    assert metric.compute().item() == pytest.approx(_reference(kind, [first, second]), rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "saved", "loaded", "match", "afresh"), [c for c in CASES if c[4]], ids=["recall", "ne"]
)
def test_a_non_strict_parent_load_of_another_settings_checkpoint_starts_the_metric_afresh(
    kind, saved, loaded, match, afresh
):
    """strict=False: the rest of the model loads, the metric starts afresh with the note as a warning."""
    source, _ = _updated(saved, kind, seed=1)
    checkpoint = _Model(source).state_dict()
    metric, _ = _updated(loaded, kind, seed=2)
    model = _Model(metric)
    with pytest.warns(
        UserWarning,
        match=r"metric: the checkpoint holds .*strict=False resumes the rest of it and the "
        r"metric starts afresh",
    ):
        result = model.load_state_dict(checkpoint, strict=False)
    assert result.missing_keys and all(key.startswith("metric.") for key in result.missing_keys)
    assert torch.equal(model.head.weight, checkpoint["head.weight"])
    assert metric._update_count == 0
    args, data = _batch(kind, seed=3, n=48)
    metric.update(*args)
    assert metric.compute().item() == pytest.approx(_reference(kind, [data]), rel=1e-12)


def _windowed(seed: int, n: int) -> tuple[Windowed, list[dict]]:
    metric = Windowed(tmx.NormalizedEntropy(), window_size=40)
    args, data = _batch("ne", seed, n)
    metric.update(*args)
    return metric, [data]


def test_a_windowed_metric_loaded_through_a_parent_strictly_keeps_its_lifetime_and_window():
    """A checkpoint of the wrapper without its window ring (an older format) starts it afresh: a strict load
    through the parent raises saying so and leaves lifetime, window and ring as they were; strict=False resets."""
    saved, _ = _windowed(seed=1, n=30)
    checkpoint = _Model(saved).state_dict()
    del checkpoint["metric._extra_state"]
    metric, batches = _windowed(seed=2, n=30)
    model = _Model(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=r"Missing key\(s\)(.|\n)*it holds no window ring"):
            model.load_state_dict(checkpoint)
    values = metric.compute()
    assert metric._update_count == 1
    assert values["lifetime"].item() == pytest.approx(_ne(batches[0]["preds"], batches[0]["target"]), rel=1e-12)
    assert values["window"].item() == pytest.approx(values["lifetime"].item(), rel=1e-12)
    args, data = _batch("ne", seed=3, n=20)
    metric.update(*args)  # the window keeps the newest whole updates of at most 40 samples: this one
    values = metric.compute()
    both = {key: np.concatenate([batches[0][key], data[key]]) for key in data}
    assert values["lifetime"].item() == pytest.approx(_ne(both["preds"], both["target"]), rel=1e-12)
    assert values["window"].item() == pytest.approx(_ne(data["preds"], data["target"]), rel=1e-12)
    with pytest.warns(UserWarning, match=r"metric: .*it holds no window ring.*the wrapper starts afresh"):
        model.load_state_dict(checkpoint, strict=False)
    assert metric._update_count == 0


def _module(from_logits: bool) -> tmx.RecMetricModule:
    task = tmx.RecTaskInfo("a", label_name="y", prediction_name="p")
    ne = {"ne": lambda num_tasks: tmx.NormalizedEntropy(num_tasks, from_logits=from_logits)}
    return tmx.RecMetricModule([task], ne, throughput=False)


def test_a_rec_metric_module_loaded_through_a_parent_strictly_keeps_its_metrics():
    """The same through a ``RecMetricModule`` (which puts itself back whole): its NE keeps its steps."""
    saved = _module(from_logits=True)
    args, _ = _batch("ne", seed=1, n=50)
    saved.update({"p": torch.logit(args[0]), "y": args[1]})
    checkpoint = _Model(saved).state_dict()
    module = _module(from_logits=False)
    args, first = _batch("ne", seed=2, n=50)
    module.update({"p": args[0], "y": args[1]})
    model = _Model(module)
    with pytest.raises(RuntimeError, match=re.escape("metric.metrics.ne.cross_entropy_sum")):
        model.load_state_dict(checkpoint)
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(first["preds"], first["target"]), rel=1e-12)
    args, second = _batch("ne", seed=3, n=30)
    module.update({"p": args[0], "y": args[1]})
    both = {key: np.concatenate([first[key], second[key]]) for key in first}
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(both["preds"], both["target"]), rel=1e-12)
    with pytest.warns(UserWarning, match=r"metric\.metrics\.ne: the checkpoint holds .*starts afresh"):
        model.load_state_dict(checkpoint, strict=False)
    module.update({"p": args[0], "y": args[1]})
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(second["preds"], second["target"]), rel=1e-12)


@pytest.mark.parametrize("raises", ["lifetime pre-hook", "window post-hook"])
def test_a_parent_load_that_a_wrapped_metric_ends_leaves_the_wrapper_picklable(raises: str) -> None:
    """A load ended by an exception in the wrapper's child (a user's hook) runs none of the wrapper's post-hooks:
    what its load kept for them is no part of a copy (pickle, deepcopy, torch.save, ``ddp_spawn``)."""
    import copy
    import io
    import pickle

    metric, batches = _windowed(seed=1, n=30)
    model = _Model(metric)
    checkpoint = model.state_dict()
    child = metric._modules["lifetime" if "lifetime" in raises else "window"]

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a user's hook")

    if "pre" in raises:
        handle = child._register_load_state_dict_pre_hook(broken)
    else:
        handle = child.register_load_state_dict_post_hook(broken)
    with pytest.raises(KeyError, match="a user's hook"):
        model.load_state_dict(checkpoint)
    handle.remove()
    expected = _ne(batches[0]["preds"], batches[0]["target"])
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert copied.metric.compute()["lifetime"].item() == pytest.approx(expected, rel=1e-12)
        copied.load_state_dict(checkpoint)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    model.load_state_dict(checkpoint)  # the next load is not disturbed by what the ended one kept
    assert metric.compute()["lifetime"].item() == pytest.approx(expected, rel=1e-12)
