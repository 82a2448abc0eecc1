"""TorchRec's side of ``bench_module.py``: run with TorchRec's own venv, prints JSON lines.

Kept apart because TorchRec pins its own torchmetrics (1.0.3) and FBGEMM; ``bench_module.py``
starts this file in that interpreter. With ``"serve": true`` in the config it warms up, then runs
one round of steps per ``round`` line on stdin (``compute`` times one compute), so the sides'
rounds interleave under the same machine load; otherwise it runs all rounds and prints once.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torchrec.metrics.accuracy import AccuracyMetric
from torchrec.metrics.auc import AUCMetric
from torchrec.metrics.calibration import CalibrationMetric
from torchrec.metrics.ctr import CTRMetric
from torchrec.metrics.metric_module import RecMetricModule
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.mse import MSEMetric
from torchrec.metrics.ne import NEMetric
from torchrec.metrics.rec_metric import RecMetricList


def main() -> None:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    tasks = [
        RecTaskInfo(name=f"task{i}", label_name=f"label{i}", prediction_name=f"pred{i}", weight_name=f"weight{i}")
        for i in range(cfg["tasks"])
    ]
    common = dict(
        world_size=1,
        my_rank=0,
        batch_size=cfg["batch"],
        tasks=tasks,
        compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
        window_size=cfg["window"],
    )
    metrics = [cls(**common) for cls in (NEMetric, CalibrationMetric, CTRMetric, MSEMetric, AccuracyMetric, AUCMetric)]
    module = RecMetricModule(batch_size=cfg["batch"], world_size=1, rec_tasks=tasks, rec_metrics=RecMetricList(metrics))
    gen = torch.Generator().manual_seed(cfg["seed"])
    batches = []
    for _ in range(cfg["distinct_batches"]):
        out = {}
        for i in range(cfg["tasks"]):
            out[f"pred{i}"] = torch.rand(cfg["batch"], generator=gen)
            out[f"label{i}"] = (torch.rand(cfg["batch"], generator=gen) < 0.3).float()
            if cfg.get("weights") == "random":
                out[f"weight{i}"] = 2 * torch.rand(cfg["batch"], generator=gen)
            else:
                out[f"weight{i}"] = torch.ones(cfg["batch"])
        batches.append(out)
    for i in range(cfg["warmup"]):
        module.update(batches[i % len(batches)])
    if cfg.get("serve"):  # one round per "round" line on stdin, interleaved with the other sides
        for line in sys.stdin:
            if line.strip() == "compute":
                start = time.perf_counter()
                module.compute()
                print(json.dumps({"compute_s": time.perf_counter() - start}), flush=True)
                continue
            if line.strip() != "round":
                break
            start = time.perf_counter()
            for i in range(cfg["steps"]):
                module.update(batches[i % len(batches)])
            print(json.dumps({"update_s": (time.perf_counter() - start) / cfg["steps"]}), flush=True)
        return
    step_times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        for i in range(cfg["steps"]):
            module.update(batches[i % len(batches)])
        step_times.append((time.perf_counter() - start) / cfg["steps"])
    compute_times = []
    for _ in range(cfg["compute_repeats"]):
        start = time.perf_counter()
        module.compute()
        compute_times.append(time.perf_counter() - start)
    print(json.dumps({"update_s": step_times, "compute_s": compute_times}))


if __name__ == "__main__":
    main()
