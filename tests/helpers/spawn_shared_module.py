"""A ``RecMetricModule`` built in the parent and passed to ``torch.multiprocessing.spawn`` ranks (2 CPU gloo ranks).

Run by ``tests/test_spawn_shared_states.py``: ``python spawn_shared_module.py OUT``. ``spawn(run, args=(module, ...))``
pickles the module into each rank through ``torch.multiprocessing``, which moves its CPU states into shared memory
(as ``fabric.launch(fn, module)`` under ``strategy="ddp_spawn"`` does: ``fabric_spawn_shared.py``). Each rank feeds
its own 10 rows of :func:`data` (rank ``r``: rows ``10 r`` to ``10 r + 9``, in steps of 4 and 6 rows), then every
rank computes (a sync) and writes the values to ``OUT/values_rank{r}.json``.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

import torchmetrics_ext as tmx

TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred")]


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """20 rows: probabilities and 0/1 labels."""
    g = torch.Generator().manual_seed(3)
    p = torch.rand(20, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return p, (torch.rand(20, generator=g, dtype=torch.float64) < p).double()


def build() -> tmx.RecMetricModule:
    """NE, CTR and a binned AUC (32 bins over [0, 1]) with a window of 12 samples (6 per rank), and the module's throughput."""
    return tmx.RecMetricModule(
        TASKS,
        {"ne": "ne", "ctr": "ctr", "bauc": tmx.AUC(num_bins=32, bin_space="probability")},
        window_size=12,
        throughput=tmx.Throughput(warmup_steps=0),
    )


def feed(module: tmx.RecMetricModule, rank: int) -> None:
    """Rank ``rank``'s two steps."""
    p, y = data()
    first = 10 * rank
    for part in (slice(first, first + 4), slice(first + 4, first + 10)):
        module.update({"click_pred": p[part], "click_label": y[part]})


def run(rank: int, module: tmx.RecMetricModule, out: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        feed(module, rank)
        dist.barrier()  # both ranks have updated before either computes (throughput rates: timing, left out)
        values = {k: v.item() for k, v in module.compute().items() if "throughput" not in k or "total" in k}
        with open(os.path.join(out, f"values_rank{rank}.json"), "w") as f:
            json.dump(values, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    torch.multiprocessing.spawn(run, args=(build(), sys.argv[1], port), nprocs=2)
