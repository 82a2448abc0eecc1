"""How much of an exact AUC update on a GPU is its state's new device memory (issue 14's 100M row).

``python benchmarks/bench_gpu_alloc.py`` (CUDA; ~20 s on an H200). The same data as
``bench_gpu.py``'s section 2 (click-through-like float32 scores made on the device, int64 labels,
batches of 65,536 sliced from one pre-made tensor), each contender timed twice per pass: with the
allocator's cache emptied first ("cold": the exact state's chunks are requested from the driver
while timed, as in section 2) and with the cache already holding as many blocks of a chunk's size
as the state will keep ("warm"). TorchMetrics appends views of the pre-made tensor, so it
allocates nothing while timed either way. Two passes; the second is the one to read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_gpu import stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torchmetrics_ext as tmx


def run(
    make: Callable[[], Any], preds: torch.Tensor, target: torch.Tensor, batch: int, warm: bool
) -> tuple[float, float]:
    """Seconds of the update loop and of ``compute`` (``bench_gpu.stream``), the allocator's cache emptied first."""
    torch.cuda.empty_cache()
    if warm:  # blocks of a chunk's size (float32 scores and signs), freed into the allocator's cache
        chunks = 2 * -(-preds.numel() // batch)
        keep = [torch.empty(batch, dtype=torch.float32, device=preds.device) for _ in range(chunks)]
        del keep
    timed = stream(make, preds, target, batch)
    return timed["update"], timed["compute"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000_000)
    parser.add_argument("--batch", type=int, default=65_536)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (the allocator measured is CUDA's)")
    from torchmetrics.classification import BinaryAUROC

    g = torch.Generator(device="cuda").manual_seed(0)
    preds = torch.rand(args.samples, generator=g, device="cuda")
    target = (torch.rand(args.samples, generator=g, device="cuda") < 0.02 + 0.05 * preds).long()
    calls = -(-args.samples // args.batch)
    contenders: dict[str, Callable[[], Any]] = {
        "ours, validate_args=False": lambda: tmx.AUC(validate_args=False),
        "ours": tmx.AUC,
        "TM BinaryAUROC": BinaryAUROC,
    }
    device_name = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {device_name}, {args.samples:,} samples, batches of {args.batch:,}")
    for rep in range(2):
        print(f"pass {rep + 1}")
        for name, make in contenders.items():
            for warm in (False, True):
                update, compute = run(make, preds, target, args.batch, warm)
                state = "warm" if warm else "cold"
                print(
                    f"  {name:26s} allocator {state}  update {update:.4f} s  compute {compute:.4f} s"
                    f"  total {update + compute:.4f} s  ({update / calls * 1e6:.1f} µs per update)"
                )


if __name__ == "__main__":
    main()
