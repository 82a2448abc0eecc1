"""Per-``update`` cost on a device: ours (validated or not, exact or binned) against TorchMetrics.

``python benchmarks/bench_gpu_update.py`` (CUDA when present; ``--device cpu`` runs it here too).
Batches of 65,536 click-through-like samples, fresh tensors every call (so remembered bounds never
serve), best of 3 loops of 64 updates, synchronised. The second table times ways of reading one
batch's bounds back (what validation costs on a device: the host waits for it once per call).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torchmetrics_ext as tmx
from torchmetrics_ext.utilities import checks

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call_us(fn: Callable[[torch.Tensor, torch.Tensor], Any], batches: Batches, device: torch.device) -> float:
    """Best of 3 loops over ``batches``: microseconds per call, synchronised at both ends."""
    for preds, target in batches[:4]:
        fn(preds, target)
    best = float("inf")
    for _ in range(3):
        checks._CHECKED.clear()  # fresh tensors: nothing remembered from the previous loop
        sync(device)
        start = time.perf_counter()
        for preds, target in batches:
            fn(preds, target)
        sync(device)
        best = min(best, (time.perf_counter() - start) / len(batches) * 1e6)
    return best


def updates(device: torch.device) -> dict[str, Callable[[], Any]]:
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    return {
        "ours AUC (exact)": lambda: tmx.AUC(),
        "ours AUC (exact, validate_args=False)": lambda: tmx.AUC(validate_args=False),
        "ours AUC (num_bins=10000)": lambda: tmx.AUC(num_bins=10_000),
        "ours AUC (num_bins=10000, validate_args=False)": lambda: tmx.AUC(num_bins=10_000, validate_args=False),
        "ours NE": lambda: tmx.NormalizedEntropy(),
        "ours NE (validate_args=False)": lambda: tmx.NormalizedEntropy(validate_args=False),
        "TM BinaryAUROC": lambda: BinaryAUROC(),
        "TM BinaryAUROC (validate_args=False)": lambda: BinaryAUROC(validate_args=False),
        "TM BinaryAveragePrecision": lambda: BinaryAveragePrecision(),
    }


def bound_readers(device: torch.device) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    def current(p: torch.Tensor, t: torch.Tensor) -> Any:
        return checks.checked_bounds([p, t, None], [False, True, False], True)

    def stack_then_cast(p: torch.Tensor, t: torch.Tensor) -> Any:
        return torch.stack([*torch.aminmax(p), *torch.aminmax(t)]).to(torch.float64).tolist()

    def separate_min_max(p: torch.Tensor, t: torch.Tensor) -> Any:
        out = torch.empty(4, dtype=torch.float64, device=device)
        return torch.stack([p.min(), p.max(), t.min(), t.max()], out=out).tolist()

    def labels_as_float32(p: torch.Tensor, t: torch.Tensor) -> Any:
        out = torch.empty(4, dtype=torch.float64, device=device)
        return torch.stack([*torch.aminmax(p), *torch.aminmax(t.to(torch.float32))], out=out).tolist()

    return {
        "checked_bounds (ours)": current,
        "aminmax, stack, then cast": stack_then_cast,
        "min and max separately": separate_min_max,
        "labels cast to float32 first": labels_as_float32,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--calls", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    batches = []
    for _ in range(args.calls):
        preds = torch.rand(args.batch, generator=g, device=device)
        batches.append((preds, (torch.rand(args.batch, generator=g, device=device) < 0.05 + 0.1 * preds).long()))
    sync(device)
    print(f"torch {torch.__version__}, device {device}, {args.calls} calls of {args.batch:,} samples")
    print("| update | µs per call |\n|---|---|")
    for name, make in updates(device).items():
        metric = make().to(device)
        print(f"| {name} | {per_call_us(metric.update, batches, device):.1f} |")
    print("\n| reading one batch's bounds (scores float32, labels int64) | µs per call |\n|---|---|")
    for name, fn in bound_readers(device).items():
        print(f"| {name} | {per_call_us(fn, batches, device):.1f} |")


if __name__ == "__main__":
    main()
