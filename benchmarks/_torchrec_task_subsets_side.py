"""TorchRec's side of ``bench_module_task_subsets.py``: run with TorchRec's own venv, prints JSON lines.

TorchRec 1.9.2's ``RecMetricModule`` built by its ``generate_metric_module`` from a ``MetricsConfig``
whose binary metrics (NE, AUC, AUPRC, calibration, CTR) name the binary tasks and whose regression
metrics (MSE with R², MAE) name the regression task, by ``rec_task_indices``; fused-tasks mode. It
reads the steps the benchmark saved (``torch.save``: the very same tensors), warms up, then for each
``round`` line on stdin runs one round and prints the median microseconds per ``update`` (each update
timed alone); ``compute`` times one ``compute()``. Kept apart because TorchRec pins its own
torchmetrics and FBGEMM (see ``compare_torchrec.py`` for the venv).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from torchrec.metrics.metric_module import RecMetricModule, generate_metric_module
from torchrec.metrics.metrics_config import (
    MetricsConfig,
    RecComputeMode,
    RecMetricDef,
    RecMetricEnum,
    RecTaskInfo,
)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    steps = torch.load(cfg["steps_file"])
    tasks = [
        RecTaskInfo(name=t, label_name=f"{t}_label", prediction_name=f"{t}_pred", weight_name=f"{t}_w")
        for t in cfg["tasks"]
    ]
    binary = list(range(len(tasks) - 1))
    regression = [len(tasks) - 1]
    window = cfg["window"]

    def metric(indices: list[int], **arguments: object) -> RecMetricDef:
        return RecMetricDef(rec_task_indices=indices, window_size=window, arguments=arguments or None)

    config = MetricsConfig(
        rec_tasks=tasks,
        rec_metrics={
            RecMetricEnum.NE: metric(binary),
            RecMetricEnum.AUC: metric(binary),
            RecMetricEnum.AUPRC: metric(binary),
            RecMetricEnum.CALIBRATION: metric(binary),
            RecMetricEnum.CTR: metric(binary),
            RecMetricEnum.MSE: metric(regression, include_r_squared=True),
            RecMetricEnum.MAE: metric(regression),
        },
        throughput_metric=None,
        rec_compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
    )
    batch = steps[0][next(iter(steps[0]))].shape[0]
    module = generate_metric_module(
        RecMetricModule,
        config,
        batch_size=batch,
        world_size=1,
        my_rank=0,
        state_metrics_mapping={},
        device=torch.device("cpu"),
    )
    for i in range(cfg["warmup"]):
        module.update(steps[i % len(steps)])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        what = line.strip()
        if what == "compute":
            start = time.perf_counter()
            module.compute()
            print(json.dumps({"compute_us": 1e6 * (time.perf_counter() - start)}), flush=True)
        elif what == "round":
            times = []
            for i in range(cfg["steps"]):
                step = steps[i % len(steps)]
                start = time.perf_counter()
                module.update(step)
                times.append(time.perf_counter() - start)
            print(json.dumps({"update_us": 1e6 * statistics.median(times)}), flush=True)
        else:
            break


if __name__ == "__main__":
    main()
