"""A ``RecMetricModule`` built in the parent and handed to spawned ranks: each rank's states are its own.

``fabric.launch(fn, module)`` under ``strategy="ddp_spawn"`` and ``torch.multiprocessing.spawn(fn, args=(module,))``
pickle the module into the ranks through ``torch.multiprocessing``, which puts every CPU tensor in shared memory:
the ranks held one storage per state and added into each other's (a synced ``throughput/total_examples`` of 40
for 20 samples, a window NE of 0.5991 for 0.4558). The module now copies shared storages at its first write in a
spawned process. References: numpy and scikit-learn over the 20 rows, each once; the window is each rank's
newest update of 6 rows (``window_size=12``: 6 per rank).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers import spawn_shared_module
from torchmetrics_ext.utilities.distributed import own_storages_in_spawned_process

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "spawn_shared_module.py"


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    base = y.mean()
    ce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(ce / -(base * np.log(base) + (1 - base) * np.log(1 - base)))


def _expected(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"ne": _ne(p, y), "ctr": float(y.mean()), "bauc": float(roc_auc_score(y, np.floor(p * 32)))}


@pytest.mark.ddp
def test_a_module_built_in_the_parent_keeps_its_own_states_in_each_spawned_rank(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    per_rank = [json.loads((tmp_path / f"values_rank{r}.json").read_text()) for r in (0, 1)]
    assert per_rank[0] == per_rank[1]
    got = per_rank[0]
    p, y = (t.numpy() for t in spawn_shared_module.data())
    window = np.r_[4:10, 14:20]  # each rank's newest update (6 rows): its share of the window
    assert got["throughput/total_examples"] == 20  # 40 when the ranks shared the counter
    for name, value in _expected(p, y).items():
        assert got[f"{name}/click"] == pytest.approx(value, rel=1e-9), name
    for name, value in _expected(p[window], y[window]).items():
        assert got[f"{name}/click/window"] == pytest.approx(value, rel=1e-9), f"{name} window"


def test_nothing_is_copied_in_the_main_process_and_a_spawned_process_copies_shared_states(monkeypatch):
    """The check reads nothing in the main process; in a spawned one it copies shared storages once, values kept."""
    module = spawn_shared_module.build()
    p, y = spawn_shared_module.data()
    module.update({"click_pred": p[:4], "click_label": y[:4]})
    states = [t for m in module.modules() if isinstance(m, tmx.NormalizedEntropy) for t in m.metric_state.values()]
    for state in states:
        state.share_memory_()  # what pickling the module for a spawned process does
    assert own_storages_in_spawned_process(module) == 0  # the main process: left alone
    assert all(state.is_shared() for state in states)
    monkeypatch.setattr("multiprocessing.parent_process", lambda: object())  # as in a spawned rank
    assert own_storages_in_spawned_process(module) > 0
    assert not any(state.is_shared() for state in states)
    assert own_storages_in_spawned_process(module) == 0  # a second call copies nothing
    module.update({"click_pred": p[4:10], "click_label": y[4:10]})
    got = module.compute()
    assert got["ne/click"].item() == pytest.approx(_ne(p[:10].numpy(), y[:10].numpy()), rel=1e-9)
    assert torch.is_tensor(got["throughput/total_examples"])
