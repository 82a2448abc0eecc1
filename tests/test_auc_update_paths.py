"""The shortened CPU ``update`` paths of the exact AUC family store what the general path stores.

Each path is checked against an independent reference (the signs and scores written with NumPy,
scikit-learn's ``roc_auc_score`` / ``average_precision_score``, a pairwise count written here) and
against the same metric fed through the general path (``force_device_path``: the kernels' device
path, one kernel each, no lookup table), chunk by chunk and bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.utilities.device import force_device_path


def _chunks(metric: object) -> dict[str, list[list[float]]]:
    return {name: [c.tolist() for c in getattr(metric, name)] for name in metric._defaults}  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.float64, torch.bool, torch.uint8])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.float64])
def test_label_sign_lookup_equals_the_formula(dtype, target_dtype):
    """``lookup=True`` gives ``2 y - 1`` in the asked dtype, a fresh tensor, for every label dtype."""
    labels = np.random.default_rng(0).integers(0, 2, size=257)
    target = torch.tensor(labels).to(dtype)
    signs = FB._label_signs(target, dtype=target_dtype, lookup=True)
    assert signs.dtype == target_dtype and signs.shape == (257,) and signs.is_contiguous()
    np.testing.assert_array_equal(signs.numpy(), 2.0 * labels - 1.0)
    assert signs.data_ptr() != target.data_ptr()
    signs.fill_(7)  # the kept table is never handed out
    np.testing.assert_array_equal(FB._label_signs(target, dtype=target_dtype, lookup=True).numpy(), 2.0 * labels - 1.0)


def test_label_sign_lookup_of_strided_and_grad_labels():
    """Strided integer labels and floating labels that require grad read as the formula says."""
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(FB._label_signs(labels[::3], lookup=True).numpy(), [1.0, 1.0, 1.0])
    floating = labels.float().requires_grad_()
    signs = FB._label_signs(floating, lookup=True)
    assert not signs.requires_grad
    np.testing.assert_array_equal(signs.numpy(), 2.0 * labels.numpy() - 1.0)


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.bool])
@pytest.mark.parametrize("validate_args", [True, False])
def test_one_task_cpu_path_stores_what_the_device_path_stores(cls, dtype, validate_args):
    """Scores and signs bit for bit as the general path, contiguous float32; values as scikit-learn's."""
    rng = np.random.default_rng(1)
    fast, general = cls(validate_args=validate_args), cls(validate_args=validate_args)
    all_p, all_y = [], []
    for n in (1, 7, 300):
        preds = torch.tensor(rng.random(2 * n), dtype=torch.float32)[::2]  # a strided view of the caller's
        labels = rng.integers(0, 2, size=n)
        fast.update(preds, torch.tensor(labels).to(dtype))
        with force_device_path():
            general.update(preds, torch.tensor(labels).to(dtype))
        all_p.append(preds.numpy().copy())
        all_y.append(labels)
    for chunk in [*fast._scores, *fast.signed_weights]:
        assert chunk.dtype == torch.float32 and chunk.is_contiguous() and chunk.ndim == 1
    assert _chunks(fast) == _chunks(general)
    p, y = np.concatenate(all_p), np.concatenate(all_y)
    reference = skm.roc_auc_score(y, p) if cls is tmx.AUC else skm.average_precision_score(y, p)
    np.testing.assert_allclose(fast.compute().item(), reference, rtol=1e-12)


def test_the_stored_scores_are_a_copy():
    """A caller writing its tensors after the update changes nothing stored."""
    preds, target = torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0, 1, 1])
    metric = tmx.AUC()
    metric.update(preds, target)
    preds.fill_(0.5)
    target.fill_(0)
    assert metric._scores[0].tolist() == pytest.approx([0.2, 0.7, 0.4])
    assert metric.signed_weights[0].tolist() == [-1.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [2, -1])
def test_unchecked_integer_labels_outside_0_1_leave_the_states_untouched(bad):
    """``validate_args=False``: a label the sign table has no entry for raises, and nothing is stored."""
    metric = tmx.AUC(validate_args=False)
    metric.update(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))
    before = _chunks(metric)
    with pytest.raises(IndexError):
        metric.update(torch.tensor([0.2, 0.5]), torch.tensor([0, bad]))
    assert _chunks(metric) == before
    assert metric.update_count == 1


def _weights(rng: np.random.Generator, shape: tuple[int, ...], zeros: bool) -> np.ndarray:
    w = rng.random(shape).astype(np.float32) + np.float32(0.1)
    if zeros:
        w[..., ::3] = 0.0  # every third row zero in every task
        if len(shape) == 2:
            w[0, 1::3] = 0.0  # zero in one task only: kept
    return w


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.uint8])
@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("zeros", [False, True])
def test_weighted_cpu_path_stores_signed_weights_and_drops_zero_rows(cls, dtype, num_tasks, zeros):
    """``±w`` per task as float32, rows of zero weight in every task dropped; values as scikit-learn's."""
    rng = np.random.default_rng(2)
    n = 30
    shape = (n,) if num_tasks == 1 else (num_tasks, n)
    p = rng.random(shape).astype(np.float32)
    y = rng.integers(0, 2, size=shape)
    w = _weights(rng, shape, zeros)
    metric = cls(num_tasks=num_tasks)
    metric.update(torch.tensor(p), torch.tensor(y).to(dtype), torch.tensor(w))
    p2, y2, w2 = (a.reshape(num_tasks, n) for a in (p, y, w))
    kept = (w2 != 0).any(0)
    (scores,), (signed,) = metric._scores, metric.signed_weights
    np.testing.assert_array_equal(scores.numpy(), p2[:, kept].T.reshape(-1))
    np.testing.assert_array_equal(signed.numpy(), np.where(y2 == 1, w2, -w2)[:, kept].T.reshape(-1))
    score = skm.roc_auc_score if cls is tmx.AUC else skm.average_precision_score
    expected = [score(y2[k], p2[k], sample_weight=w2[k]) for k in range(num_tasks)]
    np.testing.assert_allclose(metric.compute().reshape(-1).numpy(), expected, rtol=1e-10)


def test_weighted_unchecked_integer_labels_outside_0_1_leave_the_states_untouched():
    metric = tmx.AUPRC(validate_args=False)
    metric.update(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    before = _chunks(metric)
    with pytest.raises(IndexError):
        metric.update(torch.tensor([0.2, 0.5]), torch.tensor([0, 3]), torch.tensor([1.0, 2.0]))
    assert _chunks(metric) == before


@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32])
@pytest.mark.parametrize("weighted", ["none", "float32", "float64", "grad"])
@pytest.mark.parametrize("validate_args", [True, False])
def test_grouped_one_task_path_stores_what_the_general_path_stores(cls, dtype, weighted, validate_args):
    """``(N,)`` inputs store, chunk for chunk and bit for bit, what ``(1, N)`` inputs (the general path) and
    the device path store: scores, ``±w`` as float32 (float64 weights rounded alike), a copy of the ids; the
    value is the mean per-group score."""
    rng = np.random.default_rng(3)
    n = 60
    p = rng.random(n).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    g = rng.integers(0, 6, size=n)
    w = rng.random(n) + 0.1
    weights = {
        "none": None,
        "float32": torch.tensor(w, dtype=torch.float32),
        "float64": torch.tensor(w),
        "grad": torch.tensor(w, dtype=torch.float32).requires_grad_(),
    }[weighted]
    preds, target, ids = torch.tensor(p), torch.tensor(y).to(dtype), torch.tensor(g)
    fast, general, device = (cls(validate_args=validate_args) for _ in range(3))
    fast.update(preds, target, ids, weights)
    general.update(preds[None], target[None], ids, None if weights is None else weights[None])
    with force_device_path():
        device.update(preds, target, ids, weights)
    assert _chunks(fast) == _chunks(general) == _chunks(device)
    for chunk in [*fast.preds, *fast.signed_weights]:
        assert chunk.dtype == torch.float32 and chunk.is_contiguous() and not chunk.requires_grad
    assert fast.groups[0].dtype == torch.int64 and fast.groups[0].data_ptr() != ids.data_ptr()  # int64 ids kept
    if weights is not None:
        w = weights.detach().to(torch.float32).numpy()  # the weights as the states keep them
    score = skm.roc_auc_score if cls is tmx.GroupedAUC else skm.average_precision_score
    values = [
        score(y[g == k], p[g == k], sample_weight=None if weights is None else w[g == k])
        for k in np.unique(g)
        if len(np.unique(y[g == k])) == 2
    ]
    np.testing.assert_allclose(fast.compute().item(), np.mean(values), rtol=1e-10)


def _pairwise_reference(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted share of pairs with different labels ordered alike (ties in predictions count 1/2)."""
    dp, dy, ww = p[:, None] - p[None, :], y[:, None] - y[None, :], w[:, None] * w[None, :]
    pairs = dy > 0
    return float((ww * pairs * ((dp > 0) + 0.5 * (dp == 0))).sum() / (ww * pairs).sum())


@pytest.mark.parametrize("cls", [tmx.RegressionAUC, tmx.XAUC])
@pytest.mark.parametrize("weights", ["none", "positive", "zeros"])
@pytest.mark.parametrize("num_tasks", [1, 2])
def test_pairwise_cpu_path_stores_float64_rows(cls, weights, num_tasks):
    """Unit weights stored as float64 ones, zero-weight rows dropped, every state a fresh sample-major copy."""
    rng = np.random.default_rng(4)
    n = 25
    shape = (n,) if num_tasks == 1 else (num_tasks, n)
    p = rng.random(shape).astype(np.float32)
    y = rng.integers(0, 5, size=shape).astype(np.float32)
    w = np.ones(shape, np.float32) if weights == "none" else _weights(rng, shape, weights == "zeros")
    metric = cls(num_tasks=num_tasks)
    given = [torch.tensor(p), torch.tensor(y)] + ([] if weights == "none" else [torch.tensor(w)])
    metric.update(*given)
    p2, y2, w2 = (a.reshape(num_tasks, n) for a in (p, y, w))
    kept = (w2 > 0).any(0)
    for name, values in zip(("pair_preds", "pair_target", "pair_weights"), (p2, y2, w2)):
        (chunk,) = getattr(metric, name)
        assert chunk.dtype == torch.float64 and chunk.is_contiguous() and chunk.ndim == 1
        np.testing.assert_array_equal(chunk.numpy(), values[:, kept].T.reshape(-1).astype(np.float64))
    if cls is tmx.RegressionAUC:
        expected = [_pairwise_reference(p2[k], y2[k], w2[k].astype(np.float64)) for k in range(num_tasks)]
        np.testing.assert_allclose(metric.compute().reshape(-1).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 0.0])
def test_pairwise_unchecked_weights_not_positive_are_dropped(bad):
    """``validate_args=False``: rows whose weight is not > 0 (NaN, negative, zero) are dropped, as before."""
    metric = tmx.RegressionAUC(validate_args=False)
    metric.update(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, bad, 2.0]))
    assert metric.pair_weights[0].tolist() == [1.0, 2.0]
    assert metric.pair_preds[0].tolist() == pytest.approx([0.1, 0.9])
    metric.update(torch.tensor([0.3]), torch.tensor([1.0]), torch.tensor([bad]))  # every row dropped: nothing kept
    assert len(metric.pair_preds) == 1


@pytest.mark.parametrize(("n", "joined"), [(8191, True), (8192, False), (20_000, False)])
def test_updates_of_8192_samples_or_more_keep_their_chunks(n, joined):
    """Chunks of 8,192 elements or more are never joined after an update (a copy that cost half the update).

    Smaller ones are joined as before (64 into one); the value equals scikit-learn's either way.
    """
    rng = np.random.default_rng(5)
    metric = tmx.AUC()
    ps, ys = [], []
    for _ in range(65):
        p, y = rng.random(n).astype(np.float32), rng.integers(0, 2, size=n)
        metric.update(torch.tensor(p), torch.tensor(y))
        ps.append(p)
        ys.append(y)
    assert len(metric._scores) == len(metric.signed_weights) == (2 if joined else 65)
    p, y = np.concatenate(ps), np.concatenate(ys)
    np.testing.assert_array_equal(torch.cat(metric._scores).numpy(), p)
    np.testing.assert_allclose(metric.compute().item(), skm.roc_auc_score(y, p), rtol=1e-9)


@pytest.mark.parametrize("cls", [tmx.RegressionAUC, tmx.XAUC])
@pytest.mark.parametrize("weights", ["none", "float32", "float64", "zeros", "grad", "int64", "uint8"])
@pytest.mark.parametrize("validate_args", [True, False])
def test_pairwise_one_task_path_stores_what_the_general_path_stores(cls, weights, validate_args):
    """``(N,)`` inputs store, chunk for chunk and bit for bit, what ``(1, N)`` inputs (the general path) store."""
    rng = np.random.default_rng(6)
    n = 40
    p = torch.tensor(rng.random(n), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 4, size=n))
    w = torch.tensor(rng.random(n) + 0.1)
    if weights == "zeros":
        w[::4] = 0.0
    integers = torch.tensor(rng.integers(0, 3, size=n))  # zeros among them
    given = {
        "none": None,
        "float32": w.float(),
        "float64": w,
        "zeros": w,
        "grad": w.float().requires_grad_(),
        "int64": integers,
        "uint8": integers.to(torch.uint8),
    }[weights]
    fast, general = cls(validate_args=validate_args), cls(validate_args=validate_args)
    fast.update(p, y, given)
    general.update(p[None], y[None], None if given is None else given[None])
    assert _chunks(fast) == _chunks(general)
    kept = np.ones(n, bool) if given is None else given.detach().numpy() > 0
    assert fast.pair_preds[0].tolist() == p.double().numpy()[kept].tolist()
    assert fast.pair_target[0].tolist() == y.double().numpy()[kept].tolist()
    for chunk in (*fast.pair_preds, *fast.pair_target, *fast.pair_weights):
        assert chunk.dtype == torch.float64 and not chunk.requires_grad and chunk.data_ptr() != p.data_ptr()


@pytest.mark.parametrize(
    ("cls", "extra"),
    [
        (tmx.AUC, ()),
        (tmx.AUPRC, ("weights",)),
        (tmx.GroupedAUC, ("groups",)),
        (tmx.GroupedAUPRC, ("groups", "weights")),
    ],
)
def test_sign_table_is_made_on_the_cpu_whatever_the_default_device(monkeypatch, cls, extra):
    """The kept sign table is a CPU tensor even when first made under another default device.

    Made under ``torch.device("meta")`` (as under ``torch.set_default_device("cuda")``) without an
    explicit device, it was kept on that device: that update stored meta signs, and every later CPU
    update of the process failed (``index_select`` of a meta table with CPU labels).
    """
    monkeypatch.setattr(FB, "_SIGN_TABLE", {})  # the table is made on the first lookup: here, below
    rng = np.random.default_rng(7)
    p, y = rng.random(40).astype(np.float32), rng.integers(0, 2, size=40)
    y[:2] = [0, 1]
    w = rng.random(40) + 0.1
    g = np.arange(40) % 2
    inputs = {"weights": torch.tensor(w), "groups": torch.tensor(g)}
    first, later = cls(), cls()
    args = {name: inputs[name] for name in extra}
    with torch.device("meta"):
        first.update(torch.tensor(p, device="cpu"), torch.tensor(y, device="cpu"), **args)
    later.update(torch.tensor(p), torch.tensor(y), **args)
    for metric in (first, later):
        assert all(chunk.is_cpu for chunk in metric.signed_weights)
    ww = w.astype(np.float32) if "weights" in extra else None
    score = skm.roc_auc_score if cls in (tmx.AUC, tmx.GroupedAUC) else skm.average_precision_score
    if "groups" in extra:
        expected = np.mean(
            [score(y[g == k], p[g == k], sample_weight=None if ww is None else ww[g == k]) for k in (0, 1)]
        )
    else:
        expected = score(y, p, sample_weight=ww)
    for metric in (first, later):
        np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-10)
