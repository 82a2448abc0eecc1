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
