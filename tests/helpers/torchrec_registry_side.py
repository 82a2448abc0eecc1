"""TorchRec's own metrics for the registry names that claim TorchRec's keys; prints their keys and values as JSON.

Runs in TorchRec's virtual environment (``tests/helpers/torchrec_venv.py`` finds it), never in the project's:
``python tests/helpers/torchrec_registry_side.py STEPS.npz`` with ``prediction{b}``, ``label{b}``,
``weight{b}``, ``session{b}`` (sorted session ids) and ``lengths{b}`` (their run lengths) per batch
``b``, one task named ``t``. Each TorchRec metric is built directly (fused tasks, one window larger
than the data) with the arguments the test's registry options correspond to, updated with every
batch and computed once. ``tests/test_registry.py`` runs it to prove that the keys
``RecMetricModule(key_style="torchrec")`` gives a registry metric hold TorchRec's value; the literal
table in that test was produced with it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

WINDOW = 1_000_000  # larger than the data: TorchRec's window values are its lifetime values

# RecMetricEnum value (or "gauc", TorchRec's GAUCMetric, not in the enum) -> constructor arguments
METRICS: dict[str, dict[str, Any]] = {
    "ne": {"include_logloss": True},
    "calibration": {},
    "ctr": {},
    "weighted_avg": {},
    "accuracy": {"threshold": 0.4},
    "precision": {"threshold": 0.4},
    "recall": {"threshold": 0.4},
    "mse": {"include_r_squared": True},
    "mae": {},
    "nmse": {},
    "ne_positive": {},
    "cali_free_ne": {},
    "recalibrated_ne": {"recalibration_coefficient": 0.8},
    "recalibrated_calibration": {"recalibration_coefficient": 0.8},
    "average": {},
    "sum_weights": {},
    "num_positive_samples": {},
    "weighted_sum_predictions": {},
    "auc": {"grouped_auc": True},
    "auprc": {"grouped_auprc": True},
    "rauc": {},
    "xauc": {},
    "ndcg": {},
    "gauc": {},
}


def main() -> None:  # pragma: no cover - TorchRec's venv only
    import numpy as np
    import torch
    from torchrec.metrics.gauc import GAUCMetric
    from torchrec.metrics.metric_module import REC_METRICS_MAPPING
    from torchrec.metrics.metrics_config import RecComputeMode, RecMetricEnum, RecTaskInfo

    torch.set_num_threads(1)
    data = np.load(sys.argv[1])
    num_batches = len([k for k in data.files if k.startswith("prediction")])
    out: dict[str, float] = {}
    for name, kwargs in METRICS.items():
        cls = GAUCMetric if name == "gauc" else REC_METRICS_MAPPING[RecMetricEnum(name)]
        metric = cls(
            world_size=1,
            my_rank=0,
            batch_size=len(data["prediction0"]),
            tasks=[RecTaskInfo(name="t")],
            compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
            window_size=WINDOW,
            **kwargs,
        )
        for b in range(num_batches):
            p, y, w, s = (torch.from_numpy(data[f"{c}{b}"]) for c in ("prediction", "label", "weight", "session"))
            extra: dict[str, Any] = {}
            if name == "gauc":
                extra["num_candidates"] = torch.from_numpy(data[f"lengths{b}"])
            metric.update(
                predictions={"t": p},
                labels={"t": y},
                weights={"t": w},
                required_inputs={"grouping_keys": s, "session_id": s[None, :]},
                **extra,
            )
        out.update({key: torch.as_tensor(value).double().item() for key, value in metric.compute().items()})
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
