"""Per-step bookkeeping a windowed ``RecMetricModule`` must not repeat per unit (benchmarks/README, 2026-12-07 afternoon).

The module checks a step's weights once and tells each windowed unit whether its tasks' weights are all
zero; the units' own checks are skipped (their inputs trusted), so a zero-weight note per unit would be
pure per-step cost. The values of such steps are checked against scikit-learn/NumPy in
``test_windowed_zero_weights.py``; here, that the module path takes no note while a standalone
``Windowed`` update still does (the spy works), with all-zero weights in some steps too.
"""

from __future__ import annotations

import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities import checks
from torchmetrics_ext.wrappers import windowed as windowed_module


def _module() -> tmx.RecMetricModule:
    tasks = [
        tmx.RecTaskInfo(f"t{i}", f"y{i}", f"p{i}", f"w{i}", group_id_name="g", session_id_name="q") for i in range(2)
    ]
    metrics = {
        "ne": "ne",
        "calibration": "calibration",
        "auc": tmx.AUC(num_tasks=2),  # exact: list states (the appending path)
        "binned_auc": tmx.AUC(num_tasks=2, num_bins=50),  # the histogram path
        "gauc": "gauc",  # a grouped unit (the slot path)
        "ndcg@10": "ndcg@10",  # per-task ranking copies
    }
    return tmx.RecMetricModule(tasks, metrics, window_size=40, throughput=False)


def _step(seed: int, zero_task: int | None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    step = {"q": torch.arange(8) // 4, "g": torch.arange(8) % 2}
    for i in range(2):
        step[f"p{i}"] = torch.rand(8, generator=gen)
        step[f"y{i}"] = (torch.arange(8) % 2).float()
        step[f"w{i}"] = torch.zeros(8) if i == zero_task else torch.rand(8, generator=gen) + 0.5
    return step


@pytest.mark.parametrize("zero_task", [None, 0, 1])
def test_module_step_takes_no_zero_weight_note(monkeypatch: pytest.MonkeyPatch, zero_task: int | None) -> None:
    calls = []

    def counting() -> checks.ZeroWeightNote:
        calls.append(1)
        return checks.ZeroWeightNote()

    monkeypatch.setattr(windowed_module, "noting_zero_weights", counting)
    module = _module()
    for s in range(3):
        module.update(_step(s, zero_task))
    assert calls == []
    alone = tmx.Windowed(tmx.AUC(), window_size=10)
    alone.update(torch.tensor([0.2, 0.7]), torch.tensor([0, 1]), torch.zeros(2))
    assert calls == [1]
