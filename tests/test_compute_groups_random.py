"""``MetricCollection(compute_groups=True)`` over the package's metrics: every member as if run alone.

TorchMetrics links the states of a compute group's members to the first member's tensors after the first
``update``: only that member runs ``update``, while ``forward`` runs every member's own ``forward``. A
``forward`` that writes a held (shared) state in place therefore counts the batch once per member. These
tests run random sequences of ``forward``/``update``/``compute``/``reset``, rejected batches, checkpoints,
copies and pickles through collections of 2 to 4 members (several of one class and setting: a group; one
class with other settings: not) and compare each member with the same metric run alone, which its own
tests check against references; the focused tests check against plain Python / NumPy counts.

``TMX_CG_SEEDS`` (default 40) sets the number of random sequences.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

from tests.helpers.forward_paths import torchmetrics_forward
from torchmetrics_ext.aggregation import CategoricalCount
from torchmetrics_ext.registry import build_metric


def _counts(value: dict) -> dict:
    return {str(k): float(v) for k, v in value.items()}


def test_categorical_forward_in_a_compute_group_counts_the_batch_once():
    """After the ``update`` that forms the group, ``forward`` of every member added the batch to the shared
    counts in place: a group of three counted a ``forward``'s batch three times."""
    collection = MetricCollection({k: CategoricalCount() for k in "abc"}, compute_groups=True)
    batches = [torch.tensor([0, 1, 1, 2]), torch.tensor([1, 3]), torch.tensor([2, 2, 0]), torch.tensor([3])]
    collection.update(batches[0])
    assert collection.compute_groups == {0: ["a", "b", "c"]}
    value = collection(batches[1])
    assert {k: float(v) for k, v in value.items()} == {f"{m}_{c}": 1.0 for m in "abc" for c in (1, 3)}
    collection.update(batches[2])
    collection(batches[3])
    expected = {str(k): float(c) for k, c in Counter(v for b in batches for v in b.tolist()).items()}
    values = collection.compute()
    for member in "abc":
        assert {k[2:]: float(v) for k, v in values.items() if k.startswith(member + "_")} == expected


POINTWISE = [
    "ne", "log_loss", "calibration", "ctr", "weighted_average", "accuracy", "weighted_precision", "weighted_recall",
    "mse", "rmse", "mae", "r_squared", "nmse", "nrmse", "ne_positive", "cali_free_ne", "recalibrated_ne",
    "recalibrated_calibration", "label_average", "sum_weights", "num_positive_samples", "weighted_sum_predictions",
    "auc", "auprc", "regression_auc", "xauc",
]  # fmt: skip


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", POINTWISE)
def test_forward_after_set_dtype_keeps_the_states_dtype(name, num_tasks):
    """After ``set_dtype(torch.float32)`` a ``forward`` gave the sum states back their float64 (the batch statistics
    of the update were taken as the batch states in their own dtype): the cast was silently undone, and a
    checkpoint of the collection then failed to load into a fresh one cast the same way. TorchMetrics' round
    (reset, update, add) keeps float32, and the values are that round's."""
    rng = np.random.default_rng(3)
    shape = (num_tasks, 40) if num_tasks > 1 else (40,)
    batches = [
        {
            "preds": torch.tensor(rng.uniform(0.01, 0.99, size=shape), dtype=torch.float32),
            "target": torch.tensor((rng.uniform(size=shape) < 0.4).astype(np.float32)),
            "weights": torch.tensor(rng.uniform(0, 2, size=shape)),
        }
        for _ in range(3)
    ]

    def make() -> MetricCollection:
        members = {k: build_metric(name, num_tasks=num_tasks) for k in ("a", "b")}
        collection = MetricCollection(members, compute_groups=True)
        collection.set_dtype(torch.float32)
        return collection

    collection, twin = make(), build_metric(name, num_tasks=num_tasks).set_dtype(torch.float32)
    collection.update(**batches[0])
    twin.update(**batches[0])
    value = collection(**batches[1])
    expected = torchmetrics_forward(twin, **batches[1])
    dtypes = {k: _dtypes(v) for k, v in twin.metric_state.items()}
    assert torch.float64 not in {d for v in dtypes.values() for d in v}
    for key in ("a", "b"):
        assert {k: _dtypes(v) for k, v in collection[key].metric_state.items()} == dtypes
        torch.testing.assert_close(value[key], expected, rtol=0, atol=0, equal_nan=True)
    collection.persistent(True)
    resumed = make()
    resumed.persistent(True)
    resumed.load_state_dict(collection.state_dict())
    resumed.update(**batches[2])
    twin.update(**batches[2])
    for key, got in resumed.compute().items():
        torch.testing.assert_close(got, twin.compute(), rtol=0, atol=0, equal_nan=True, msg=key)


def _dtypes(value: Any) -> set[torch.dtype]:
    """The floating dtypes a state holds (each chunk's, for a list state)."""
    chunks = [value] if isinstance(value, torch.Tensor) else value
    return {chunk.dtype for chunk in chunks if chunk.is_floating_point()}
