"""After ``evaluate(..., by=...)`` returns and its result is dropped, no tensor of the computation stays alive.

The segments' compute fed a shared-sums kernel a ``(queries, 1)`` block without weights; the package kept the
last such block's ``N`` per row per device (a cache meant for a training step's ``(T,)`` total), so about 1.6 MiB
per million rows (20 MiB on larger runs) stayed resident until the next differently-shaped call. The check counts
every live tensor's storage through the garbage collector before and after, which nothing in the package can hide.
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pyarrow as pa
import torch

from torchmetrics_ext.evaluate import evaluate


def _live_tensors() -> dict[int, int]:
    gc.collect()
    out = {}
    for obj in gc.get_objects():
        try:
            with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated `reduce_op` warns
                warnings.simplefilter("ignore", FutureWarning)
                is_tensor = isinstance(obj, torch.Tensor)
        except ReferenceError:  # a weak proxy whose object is gone (an earlier test's, in this worker process)
            continue
        if is_tensor:
            storage = obj.untyped_storage()
            out[storage.data_ptr()] = storage.nbytes()
    return out


def test_segments_compute_leaves_no_tensor_behind():
    n = 200_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "p": rng.random(n),
            "y": (rng.random(n) < 0.3).astype(np.float64),
            "u": rng.integers(0, 5000, n),
            "s": rng.integers(0, 50000, n),
            "c": rng.integers(0, 2000, n),
        }
    )
    metrics = ["ctr", "ne", "auc", "gauc", "ndcg@10"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # segments of one class: undefined values, not this test's subject
        evaluate(table, {"click": ("p", "y")}, metrics, user="u", session="s")  # what every run keeps (small)
        before = _live_tensors()
        result = evaluate(table, {"click": ("p", "y")}, metrics, user="u", session="s", by="c")
    assert len(result.records) == 1 + 2000
    del result
    kept = {ptr: size for ptr, size in _live_tensors().items() if ptr not in before}
    assert sum(kept.values()) < 64 << 10, sorted(kept.values())[-5:]
