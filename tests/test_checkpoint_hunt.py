"""Checkpoint edges found by an adversarial hunt: each test fails without its fix.

References are independent of the code under test: scikit-learn's ``roc_auc_score`` and NumPy
formulas written here.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.regression import MeanSquaredError

import torchmetrics_ext as tmx


def _two_equal_ranks(tensor, group=None):
    """A fake gather over two ranks holding the same states (no process group needed)."""
    return [tensor, tensor]


def _batches(seed: int, count: int = 3, size: int = 40):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, generator=gen), (torch.rand(size, generator=gen) > 0.5).float()) for _ in range(count)]


def _ne_reference(batches) -> float:
    p = np.concatenate([b[0].double().numpy() for b in batches])
    y = np.concatenate([b[1].double().numpy() for b in batches])
    ce = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()
    q = y.mean()
    return float(ce / -(q * np.log(q) + (1 - q) * np.log1p(-q)))


def _auc_reference(batches) -> float:
    p = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    return float(roc_auc_score(y, p))


def _mse_reference(batches) -> float:
    p = np.concatenate([b[0].double().numpy() for b in batches])
    y = np.concatenate([b[1].double().numpy() for b in batches])
    return float(((p - y) ** 2).mean())


def _saved(metric) -> dict:
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


_FACTORIES = {
    "ne": (lambda: tmx.NormalizedEntropy(), _ne_reference),
    "auc": (lambda: tmx.AUC(), _auc_reference),
    "binned_auc": (lambda: tmx.AUC(num_bins=1 << 14, bin_space="probability"), _auc_reference),
    "windowed_ne": (lambda: tmx.Windowed(tmx.NormalizedEntropy(), 1000), _ne_reference),
    "windowed_auc": (lambda: tmx.Windowed(tmx.AUC(), 1000), _auc_reference),
    # a TorchMetrics metric in the window: the wrapper's own check (its children do not check)
    "windowed_torchmetrics_mse": (lambda: tmx.Windowed(MeanSquaredError(), 1000), _mse_reference),
}


def _value(metric) -> float:
    value = metric.compute()
    return float(value["lifetime"] if isinstance(value, dict) else value)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("name", sorted(_FACTORIES))
def test_a_load_into_a_metric_synced_by_hand_is_refused_and_changes_nothing(name: str, strict: bool) -> None:
    """``load_state_dict`` between ``sync()`` and ``unsync()`` was taken, then ``unsync()`` put back the
    states from before the sync: the checkpoint was dropped without a word. It is refused (as
    ``update`` and ``merge_state`` are), and after ``unsync()`` the same load resumes the checkpoint."""
    make, reference = _FACTORIES[name]
    saved_batches, own_batches = _batches(0), _batches(1, count=1)
    source = make()
    source.persistent(True)
    for preds, target in saved_batches:
        source.update(preds, target)
    checkpoint = _saved(source)

    metric = make()
    metric.persistent(True)
    for preds, target in own_batches:
        metric.update(preds, target)
    metric.sync(dist_sync_fn=_two_equal_ranks, distributed_available=lambda: True)
    with pytest.raises(RuntimeError, match=r"synced.*unsync\(\)"):
        metric.load_state_dict(checkpoint, strict=strict)
    metric.unsync()
    assert _value(metric) == pytest.approx(reference(own_batches), rel=1e-4)  # as it was

    metric.load_state_dict(checkpoint, strict=strict)
    assert _value(metric) == pytest.approx(reference(saved_batches), rel=1e-4)
    more = _batches(2, count=1)
    metric.update(*more[0])
    assert _value(metric) == pytest.approx(reference(saved_batches + more), rel=1e-4)


def test_a_load_of_a_checkpoint_without_the_synced_metrics_states_is_not_refused() -> None:
    """A checkpoint holding nothing of the synced metric (saved without persistent states) loads nothing
    into it, so it need not be refused."""
    metric = tmx.NormalizedEntropy()
    batches = _batches(3, count=1)
    metric.update(*batches[0])
    metric.sync(dist_sync_fn=_two_equal_ranks, distributed_available=lambda: True)
    assert not metric.load_state_dict(tmx.NormalizedEntropy().state_dict()).missing_keys
    metric.unsync()
    assert _value(metric) == pytest.approx(_ne_reference(batches), rel=1e-6)


@pytest.mark.parametrize("load_before", [3, 5, 8])
def test_tower_qps_keeps_its_warm_up_and_window_through_a_load_without_its_states(load_before: int) -> None:
    """A ``TowerQPS`` (not persistent by default) in a model whose weights alone are loaded mid-run
    (``strict=False``, fine-tuning style) restarted its warm-up and rebuilt its window: the steps after
    the load went untimed (lifetime 15.0 instead of 14.21 here). A load holding none of its states
    leaves it as it was, as the checkpoint policy says; the rates are written out by hand below."""
    ticks = [i + (0.5 if i % 2 else 0.0) for i in range(10)]  # steps of 1.5 s and 0.5 s in turn
    sizes = [10 + i for i in range(10)]
    window_seconds = 4.0
    reading = iter(ticks)
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(2, 2)
    model.qps = tmx.TowerQPS(warmup_steps=1, window_seconds=window_seconds, clock=lambda: next(reading))
    for step, size in enumerate(sizes):
        if step == load_before:
            result = model.load_state_dict(
                {"linear.weight": torch.zeros(2, 2), "linear.bias": torch.zeros(2)}, strict=False
            )
            assert result.missing_keys == []  # TorchMetrics' default: the rate's states are not persistent
        model.qps.update(preds=torch.rand(size))
    values = model.qps.compute()

    # the first update starts the clock; every later one is timed from the one before
    seconds = np.diff(ticks)
    examples = np.array(sizes[1:], dtype=float)
    lifetime = examples.sum() / seconds.sum()
    newest = 1  # the newest updates whose seconds sum to at most the window (at least one)
    while newest < len(seconds) and seconds[-(newest + 1) :].sum() <= window_seconds:
        newest += 1
    window = examples[-newest:].sum() / seconds[-newest:].sum()
    assert values["lifetime_qps"].item() == pytest.approx(lifetime, rel=1e-12)
    assert values["window_qps"].item() == pytest.approx(window, rel=1e-12)
    assert values["total_examples"].item() == sum(sizes)


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("front", -1),
        ("front", 3),
        ("front", "2"),
        ("front", torch.tensor(True)),
        ("front", torch.tensor([1])),
        ("sizes", [-5, 40]),
        ("sizes", [40.0, 40.0]),
        ("sizes", [True, 40]),
        ("sizes", [torch.tensor(True), 40]),
    ],
)
def test_a_windowed_ring_of_malformed_sizes_or_front_is_refused(part: str, value) -> None:
    """A hand-edited or foreign ring whose ``front`` lay outside ``0..updates`` (or whose sizes were no
    whole numbers) loaded, and the window then read stale suffix aggregates: a wrong window value
    with no error. It is refused naming ``_extra_state``, and the metric keeps its own states."""
    saved_batches, own_batches = _batches(4, count=2), _batches(5, count=1)
    source = tmx.Windowed(tmx.NormalizedEntropy(), 100)
    for preds, target in saved_batches:
        source.update(preds, target)
    checkpoint = source.state_dict()
    assert len(checkpoint["_extra_state"]["sizes"]) == 2  # two updates: a front of 3 is out of range
    checkpoint["_extra_state"][part] = value

    metric = tmx.Windowed(tmx.NormalizedEntropy(), 100)
    metric.update(*own_batches[0])
    with pytest.raises(RuntimeError, match=r"_extra_state.*`sizes`.*`front`"):
        metric.load_state_dict(checkpoint)
    values = metric.compute()
    assert values["lifetime"].item() == pytest.approx(_ne_reference(own_batches), rel=1e-9)
    assert values["window"].item() == pytest.approx(_ne_reference(own_batches), rel=1e-9)


@pytest.mark.parametrize(
    "sizes", [[-5, 40], [40.0, 40.0], [True, 40], [torch.tensor(False), 40], [torch.tensor([20]), 40]]
)
def test_a_binned_windowed_ring_of_malformed_sizes_is_refused(sizes) -> None:
    """A binned AUC's window ring with a negative size loaded, and its next update kept three updates of
    40 samples in a window of 100 (a wrong window AUC). It is refused and the metric keeps its states."""
    saved_batches, own_batches = _batches(6, count=2), _batches(7, count=1)
    source = tmx.Windowed(tmx.AUC(num_bins=1 << 14, bin_space="probability"), 100)
    for preds, target in saved_batches:
        source.update(preds, target)
    checkpoint = source.state_dict()
    checkpoint["_extra_state"]["sizes"] = sizes

    metric = tmx.Windowed(tmx.AUC(num_bins=1 << 14, bin_space="probability"), 100)
    metric.update(*own_batches[0])
    with pytest.raises(RuntimeError, match=r"_extra_state.*whole numbers"):
        metric.load_state_dict(checkpoint)
    values = metric.compute()
    assert values["lifetime"].item() == pytest.approx(_auc_reference(own_batches), abs=1e-3)
    assert values["window"].item() == pytest.approx(_auc_reference(own_batches), abs=1e-3)


def test_a_rec_metric_module_loads_a_checkpoint_whose_extra_state_is_none() -> None:
    """``_extra_state: None`` is documented as "nothing to restore from it", but ``set_extra_state`` then
    read ``None["step"]`` and the load failed with a bare ``TypeError``. The metrics' states load and the
    step counter stays as it was."""
    batches = _batches(8, count=3, size=16)
    source = tmx.RecMetricModule(["click"], ["ne"], throughput=False)
    for preds, target in batches:
        source.update({"prediction": preds, "label": target})
    checkpoint = source.state_dict()
    checkpoint["_extra_state"] = None

    module = tmx.RecMetricModule(["click"], ["ne"], throughput=False)
    module.update({"prediction": batches[0][0], "label": batches[0][1]})
    assert not module.load_state_dict(checkpoint).missing_keys
    assert module.compute()["ne/click"].item() == pytest.approx(_ne_reference(batches), rel=1e-9)
    assert module.get_extra_state()["step"] == 1  # the module's own count, none being saved


def test_a_windowed_torchmetrics_metric_restored_from_a_checkpoint_computes_without_the_before_update_warning() -> None:
    """The package's metrics count a checkpoint's states as data (no "compute before update" warning),
    but a ``Windowed`` over a TorchMetrics metric warned twice (lifetime and window) at the first compute
    after every resume, the wrapped metric's update count being 0. It computes quietly, with the values
    of the saved batches; an empty checkpoint still warns, as TorchMetrics does before any update."""
    batches = _batches(9, count=3)
    source = tmx.Windowed(MeanSquaredError(), 1000)
    for preds, target in batches:
        source.update(preds, target)
    metric = tmx.Windowed(MeanSquaredError(), 1000)
    metric.load_state_dict(source.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = metric.compute()
    assert not [w for w in caught if "before the ``update``" in str(w.message)]
    assert values["lifetime"].item() == pytest.approx(_mse_reference(batches), rel=1e-6)
    assert values["window"].item() == pytest.approx(_mse_reference(batches), rel=1e-6)

    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        metric.compute()
    empty = tmx.Windowed(MeanSquaredError(), 1000)
    empty.load_state_dict(tmx.Windowed(MeanSquaredError(), 1000).state_dict())
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty.compute()
