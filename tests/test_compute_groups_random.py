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

import torch
from torchmetrics import MetricCollection

from torchmetrics_ext.aggregation import CategoricalCount


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
