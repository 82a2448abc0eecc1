"""TorchRec's own ``RecMetricModule`` on a config given as a dict and saved steps; prints its results as JSON.

Runs in TorchRec's virtual environment (``/work/venv-torchrec-parity``), never in the project's:
``python tests/helpers/torchrec_side.py CONFIG.json STEPS.pt`` prints ``{"keys": [...], "values": {...}}``.
``tests/test_torchrec_config.py`` runs it to prove that ``RecMetricModule.from_torchrec_config`` reports
TorchRec's keys (and values), and the literal key lists in that test were produced with it.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def to_metrics_config(config: dict[str, Any]) -> Any:  # pragma: no cover - TorchRec's venv only
    """The ``MetricsConfig`` dataclass with the fields of ``config`` (the dict form ours accepts)."""
    from torchrec.metrics.metrics_config import (
        MetricsConfig,
        RecComputeMode,
        RecMetricDef,
        RecMetricEnum,
        RecTaskInfo,
        StateMetricEnum,
        ThroughputDef,
    )

    rec_metrics = {}
    for name, d in config["rec_metrics"].items():
        rec_metrics[RecMetricEnum(name)] = RecMetricDef(
            rec_tasks=[RecTaskInfo(**t) for t in d.get("rec_tasks", [])],
            rec_task_indices=list(d.get("rec_task_indices", [])),
            window_size=d.get("window_size", 10_000_000),
            arguments=dict(d["arguments"]) if d.get("arguments") is not None else None,
        )
    throughput = config.get("throughput_metric")
    return MetricsConfig(
        rec_tasks=[RecTaskInfo(**t) for t in config.get("rec_tasks", [])],
        rec_metrics=rec_metrics,
        throughput_metric=None if throughput is None else ThroughputDef(**throughput),
        state_metrics=[StateMetricEnum(s) for s in config.get("state_metrics", [])],
        compute_interval_steps=config.get("compute_interval_steps", 100),
        rec_compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
    )


class Optimizers:
    """A state metric: TorchRec calls ``get_metrics()``."""

    def get_metrics(self) -> dict[str, float]:
        return {"lr": 0.01}


def main() -> None:  # pragma: no cover - TorchRec's venv only
    import torch
    from torchrec.metrics.metric_module import RecMetricModule, generate_metric_module
    from torchrec.metrics.metrics_config import StateMetricEnum

    config = json.loads(open(sys.argv[1]).read())
    steps = torch.load(sys.argv[2])
    module = generate_metric_module(
        RecMetricModule,
        to_metrics_config(config),
        batch_size=steps[0][next(iter(steps[0]))].shape[0],
        world_size=1,
        my_rank=0,
        state_metrics_mapping={StateMetricEnum.OPTIMIZERS: Optimizers()},
        device=torch.device("cpu"),
    )
    for step in steps:
        module.update(step)
    result = module.compute()
    values = {k: torch.as_tensor(v).double().item() for k, v in result.items()}
    print(json.dumps({"keys": list(result), "values": values}))


if __name__ == "__main__":
    main()
