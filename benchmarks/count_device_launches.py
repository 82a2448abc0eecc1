"""Kernel launches per ``update`` on the device path, counted on the CPU: a GPU's per-step cost without a GPU.

On a GPU each operator that runs a kernel costs the host about 10 µs in ``update`` (benchmarks/README.md,
"On the GPU"), so the number of such operators per update is what a machine without a GPU can measure
of that cost. This script runs each metric's device path on CPU tensors
(:func:`~torchmetrics_ext.utilities.device.force_device_path`) and counts the ATen operators one
``update`` dispatches (fresh tensors each update, after one untimed update), leaving out those that
only make views or read metadata; ``reads`` counts the values brought back to the host (a GPU waits
there) through ``item``/``tolist``/``bool``, and ``waits`` every operator after which the host must wait
for a device: a scalar read by any route (``int(t)`` too) or an output whose size depends on the values
(``torch.unique``, ``nonzero``, boolean masks...), which CPU tensors hide. With ``--baseline DIR``
(another checkout's package, as ``ab_update_overhead.py`` takes it) both are counted side by side.

    mkdir -p /tmp/base && git archive <rev> torchmetrics_ext | tar -x -C /tmp/base
    python benchmarks/count_device_launches.py --baseline /tmp/base
    python benchmarks/count_device_launches.py --device cuda    # the same count on a GPU
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, installed or not (gpu_check.sh)
import torchmetrics_ext as new

# operators that launch nothing (views, metadata, aliases)
NO_KERNEL = {
    "view", "_unsafe_view", "alias", "unsqueeze", "squeeze", "slice", "select", "expand", "t", "transpose",
    "permute", "detach", "as_strided", "split", "unbind", "diagonal", "view_as_real", "_reshape_alias",
    "lift_fresh", "empty", "empty_strided", "empty_like", "is_same_size", "sym_size", "sym_stride", "sym_numel",
}  # fmt: skip
READS = ("item", "tolist", "__bool__")  # Tensor methods that bring a value back to the host
# operators that make the host wait for a device: a scalar copied back, or an output sized by the values
WAITS = {
    "_local_scalar_dense", "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "nonzero", "masked_select", "repeat_interleave", "bincount", "_assert_async",
}  # fmt: skip


class Counted(TorchDispatchMode):
    """Every ATen operator dispatched inside the block, by name, the host reads (``reads``) and waits (``waits``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.reads = 0
        self.waits = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> Counted:
        for name in READS:
            original = self._saved[name] = getattr(torch.Tensor, name)

            def read(tensor: torch.Tensor, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.reads += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        super().__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        self.waits += name in WAITS
        return func(*args, **(kwargs or {}))


def batch(num_tasks: int, n: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (num_tasks, n) if num_tasks > 1 else (n,)
    p = torch.rand(shape, generator=g)
    return {"preds": p.to(device), "target": (torch.rand(shape, generator=g) < 0.1).long().to(device)}


def ranked(n: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Flat rows of about 4 per query (ids sorted), graded relevance 0-2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.sort(torch.randint(0, max(1, n // 4), (n,), generator=g)).values
    inputs = {"preds": torch.rand(n, generator=g), "target": torch.randint(0, 3, (n,), generator=g), "indexes": ids}
    return {key: value.to(device) for key, value in inputs.items()}


def grouped(n: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """One task's scores and labels with a group id per row (500 groups)."""
    inputs = batch(1, n, seed)
    inputs["groups"] = torch.randint(0, 500, (n,), generator=torch.Generator().manual_seed(seed))
    return {key: value.to(device) for key, value in inputs.items()}


def sessions(n: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """One task's scores, graded labels 0-3 and weights, in sessions of about 20 rows (ids unsorted)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "preds": torch.rand(n, generator=g),
        "target": torch.randint(0, 4, (n,), generator=g).double(),
        "sessions": torch.randint(0, max(1, n // 20), (n,), generator=g),
        "weights": torch.rand(n, generator=g),
    }
    return {key: value.to(device) for key, value in inputs.items()}


def module_step(n: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for task in ("click", "like"):
        out[f"{task}_pred"] = torch.rand(n, generator=g).to(device)
        out[f"{task}_label"] = (torch.rand(n, generator=g) < 0.1).float().to(device)
    out["country"] = torch.randint(0, 4, (n,), generator=g).to(device)  # segment ids (Segmented metrics)
    return out


Case = tuple[Callable[[ModuleType, bool, int], Any], str]  # (factory(package, validate_args, tasks), kind)

CASES: dict[str, Case] = {
    "AUC exact": (lambda m, va, t: m.AUC(num_tasks=t, validate_args=va), "metric"),
    "AUC(num_bins=10_000)": (lambda m, va, t: m.AUC(num_bins=10_000, num_tasks=t, validate_args=va), "metric"),
    "AUPRC(num_bins=10_000)": (lambda m, va, t: m.AUPRC(num_bins=10_000, num_tasks=t, validate_args=va), "metric"),
    "NormalizedEntropy": (lambda m, va, t: m.NormalizedEntropy(num_tasks=t, validate_args=va), "metric"),
    "Calibration": (lambda m, va, t: m.Calibration(num_tasks=t, validate_args=va), "metric"),
    "CTR": (lambda m, va, t: m.CTR(num_tasks=t, validate_args=va), "metric"),
    "WeightedMSE": (lambda m, va, t: m.WeightedMSE(num_tasks=t, validate_args=va), "metric"),
    "Windowed(AUC(), 100_000)": (lambda m, va, t: m.Windowed(m.AUC(num_tasks=t, validate_args=va), 100_000), "metric"),
    "Windowed(AUC(num_bins=10_000), 100_000)": (
        lambda m, va, t: m.Windowed(m.AUC(num_bins=10_000, num_tasks=t, validate_args=va), 100_000),
        "metric",
    ),
    "GroupedAUC": (lambda m, va, t: m.GroupedAUC(validate_args=va), "grouped"),
    "NDCG(k=10)": (lambda m, va, t: m.NDCG(k=10, validate_args=va), "ranking"),
    "RecallAtK(k=10)": (lambda m, va, t: m.RecallAtK(k=10, validate_args=va), "ranking"),
    "SessionPairwiseAUC": (lambda m, va, t: m.SessionPairwiseAUC(validate_args=va), "session"),
    "module: NE, calibration, CTR, binned AUC": (
        lambda m, va, t: m.RecMetricModule(
            tasks=[m.RecTaskInfo(x, label_name=f"{x}_label", prediction_name=f"{x}_pred") for x in ("click", "like")],
            metrics={
                "ne": {"metric": "ne", "validate_args": va},
                "calibration": {"metric": "calibration", "validate_args": va},
                "ctr": {"metric": "ctr", "validate_args": va},
                "auc": {"metric": "auc", "num_bins": 10_000, "validate_args": va},
            },
        ),
        "module",
    ),
    "module: NE, segmented NE": (
        lambda m, va, t: m.RecMetricModule(
            tasks=[
                m.RecTaskInfo(x, label_name=f"{x}_label", prediction_name=f"{x}_pred", group_id_name="country")
                for x in ("click", "like")
            ],
            metrics={
                "ne": {"metric": "ne", "validate_args": va},
                "segmented_ne": {"metric": "segmented_ne", "num_segments": 4, "validate_args": va},
            },
        ),
        "module",
    ),
}


def count(
    package: ModuleType, name: str, validate: bool, num_tasks: int, n: int, device: str = "cpu"
) -> tuple[int, int, str, int]:
    """(launching operators, reads, the launching operators in order, waits) of one update, the second one.

    On ``device`` (``"cuda"``: the real device path; ``"cpu"``: the device path forced on CPU tensors).
    """
    factory, kind = CASES[name]
    metric = factory(package, validate, num_tasks).to(device)
    with package.utilities.device.force_device_path(device == "cpu"):
        for seed in range(2):
            make = {"module": module_step, "ranking": ranked, "grouped": grouped, "session": sessions}.get(kind)
            inputs = make(n, seed, device) if make is not None else batch(num_tasks, n, seed, device)
            with Counted() as counted:
                metric.update(inputs) if kind == "module" else metric.update(**inputs)
    launches = {op: k for op, k in counted.ops.items() if op not in NO_KERNEL and op != "_local_scalar_dense"}
    listed = " ".join(f"{op}x{k}" if k > 1 else op for op, k in launches.items())
    return sum(launches.values()), counted.reads, listed, counted.waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout's directory holding torchmetrics_ext")
    parser.add_argument("--n", type=int, default=8192, help="samples per update (default 8192)")
    parser.add_argument("--device", default="cpu", help="cuda: count on a GPU (default: CPU tensors, device path)")
    args = parser.parse_args()
    base = None
    if args.baseline:
        from _baseline import load_checkout  # this script's folder (tests load the script from elsewhere)

        base = load_checkout(args.baseline)
    where = "CPU tensors" if args.device == "cpu" else args.device
    print(
        f"launching operators per update on the device path ({where}), N={args.n}; reads: values read back; "
        "waits: operators the host waits on"
    )
    header = "| update | tasks | validated | " + ("baseline | " if base else "") + "this checkout | operators |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (_, kind) in CASES.items():
        for num_tasks in (1, 3) if kind == "metric" else (1,):
            for validate in (True, False):
                ours, reads, ops, waits = count(new, name, validate, num_tasks, args.n, args.device)
                cells = [name, str(2 if kind == "module" else num_tasks), "yes" if validate else "no"]
                if base is not None:
                    theirs, their_reads, _, their_waits = count(base, name, validate, num_tasks, args.n, args.device)
                    cells.append(f"{theirs} (+{their_reads} reads, {their_waits} waits)")
                cells += [f"{ours} (+{reads} reads, {waits} waits)", ops]
                print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
