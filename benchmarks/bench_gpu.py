"""On the GPU: CUDA vs CPU parity, exact/binned AUC vs TorchMetrics, ranking, per-step cost.

One script for one call on a GPU machine (``python benchmarks/bench_gpu.py``, a few minutes on
an H200); ``--quick`` runs every section with tiny sizes, on the CPU too (a smoke test). Sections:

1. **parity**: every metric of the package, updated with the same batches on the CPU and on the
   device; the largest absolute and relative difference of ``compute()``. On a CPU-only machine
   the device side is the CPU tensors forced through the kernels' device path.
2. **exact / binned AUC and AUPRC** at 10M and 100M samples (click-through-like data made on the
   device, batches of 65,536, default ``validate_args=True`` everywhere) against TorchMetrics'
   ``BinaryAUROC`` / ``BinaryAveragePrecision`` (``thresholds=None``, exact, float32): time of the
   update loop and of ``compute`` (synchronised), and each value's distance to a float64
   reference written here (scikit-learn's algorithm in torch: one sort, cumulative sums at the
   distinct scores).
3. **ranking**: NDCG@10 over 50k and 1M queries (5-50 candidates each), ours against
   TorchMetrics' ``RetrievalNormalizedDCG(top_k=10)`` (at ``--tm-queries`` queries).
4. **per step**: a bf16 training step, alone and followed by the ``update`` of NE, Calibration,
   CTR and AUC(num_bins=10_000) on its ``(2, 8192)`` predictions (validation on and off; also
   the same four in a ``RecMetricModule``, without and with a 1M-sample window), against
   TorchMetrics' ``BinaryAUROC(thresholds=1000)`` and three ``MeanMetric`` (BCE, labels,
   predictions) on the flattened batch. Interleaved rounds, best round per configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torchmetrics_ext as tmx
from torchmetrics_ext import aggregation as agg
from torchmetrics_ext.metrics import pointwise
from torchmetrics_ext.utilities.device import force_device_path

Batch = dict[str, torch.Tensor]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- 1. parity


def _pointwise_batches(n: int, num_batches: int, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(num_batches):
        preds = torch.rand(2, n, generator=g, dtype=torch.float64)
        weights = torch.rand(n, generator=g, dtype=torch.float64) * 2
        weights[::11] = 0.0
        out.append(
            {
                "preds": preds,
                "target": (torch.rand(2, n, generator=g) < preds).double(),
                "weights": weights,
                "groups": torch.randint(0, 200, (n,), generator=g) + 1000 * b,  # groups complete per batch
            }
        )
    return out


def _real_batches(n: int, num_batches: int) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(num_batches):
        target = torch.exp(torch.randn(2, n, generator=g, dtype=torch.float64)).round(decimals=2)
        preds = target + torch.randn(2, n, generator=g, dtype=torch.float64)
        out.append({"preds": preds, "target": target, "weights": torch.rand(n, generator=g, dtype=torch.float64)})
    return out


def _ranking_batches(num_queries: int, num_batches: int) -> list[Batch]:
    g = torch.Generator().manual_seed(2)
    lens = torch.randint(5, 51, (num_queries,), generator=g)
    idx = torch.repeat_interleave(torch.arange(num_queries), lens)
    n = idx.numel()
    target = torch.randint(1, 4, (n,), generator=g) * (torch.rand(n, generator=g) < 0.2)
    preds = torch.rand(n, generator=g)
    cuts = torch.linspace(0, n, num_batches + 1).long().tolist()
    keys = {"preds": preds, "target": target, "indexes": idx}
    return [{k: v[lo:hi] for k, v in keys.items()} for lo, hi in zip(cuts[:-1], cuts[1:])]


def _only(batches: list[Batch], *keys: str, **renamed: str) -> list[Batch]:
    out = []
    for batch in batches:
        item = {k: batch[k] for k in keys}
        item.update({new: batch[old] for new, old in renamed.items()})
        out.append(item)
    return out


def parity_specs(n: int, num_queries: int) -> list[tuple[str, Callable[[], Any], list[Batch]]]:
    """(name, metric factory, CPU batches) for every metric class of the package."""
    pw = _pointwise_batches(n, 4)
    binary = _only(pw, "preds", "target", "weights")
    grouped = _only(pw, "preds", "target", "groups", "weights")
    specs: list[tuple[str, Callable[[], Any], list[Batch]]] = []
    for name in pointwise.__all__:  # every pointwise metric class
        specs.append((name, partial(getattr(tmx, name), num_tasks=2), binary))
    specs += [
        ("AUC", partial(tmx.AUC, num_tasks=2), binary),
        ("AUPRC", partial(tmx.AUPRC, num_tasks=2), binary),
        ("AUC(num_bins=10000)", partial(tmx.AUC, num_tasks=2, num_bins=10_000), binary),
        ("AUPRC(num_bins=10000)", partial(tmx.AUPRC, num_tasks=2, num_bins=10_000), binary),
        ("GroupedAUC", partial(tmx.GroupedAUC, num_tasks=2), grouped),
        ("GroupedAUPRC(weight_groups)", partial(tmx.GroupedAUPRC, num_tasks=2, weight_groups=True), grouped),
        (
            "GroupedAUC(groups_complete_per_batch)",
            partial(tmx.GroupedAUC, num_tasks=2, groups_complete_per_batch=True),
            grouped,
        ),
        ("RegressionAUC", partial(tmx.RegressionAUC, num_tasks=2), _real_batches(n // 4, 3)),
        ("XAUC", partial(tmx.XAUC, num_tasks=2), _real_batches(n // 4, 3)),
    ]
    ranking = _ranking_batches(num_queries, 3)
    for name, factory in (
        ("NDCG(k=10)", partial(tmx.NDCG, k=10)),
        ("RecallAtK(10)", partial(tmx.RecallAtK, k=10)),
        ("PrecisionAtK(10)", partial(tmx.PrecisionAtK, k=10)),
        ("MRR(k=10)", partial(tmx.MRR, k=10)),
        ("HitRate(10)", partial(tmx.HitRate, k=10)),
        ("MAP(k=10)", partial(tmx.MAP, k=10)),
        ("RankingMetrics", partial(tmx.RankingMetrics, ks=(1, 5, 10), metrics=("ndcg", "recall", "mrr"))),
    ):
        specs.append((name, factory, ranking))
    g = torch.Generator().manual_seed(3)
    scores = [{"preds": torch.rand(n // 4, 20, generator=g), "target": torch.randint(0, 20, (n // 4,), generator=g)}]
    specs.append(("MulticlassRecallAtK(3)", partial(tmx.MulticlassRecallAtK, k=3, num_classes=20), scores * 2))
    values = [{"value": torch.randn(n, generator=g, dtype=torch.float64) * 3} for _ in range(3)]
    for cls in (agg.Sum, agg.Max, agg.Min, agg.Distribution):
        specs.append((f"aggregation.{cls.__name__}", cls, values))
    weighted = [dict(v, weight=torch.rand(n, generator=g, dtype=torch.float64)) for v in values]
    specs.append(("aggregation.Mean", agg.Mean, weighted))
    categories = [{"categories": torch.randint(0, 50, (n,), generator=g)} for _ in range(3)]
    specs.append(("aggregation.CategoricalCount", agg.CategoricalCount, categories))
    return specs


def _flat_values(value: Any) -> dict[str, torch.Tensor]:
    if isinstance(value, dict):
        return {str(k): torch.as_tensor(v).detach().double().cpu().reshape(-1) for k, v in value.items()}
    return {"": value.detach().double().cpu().reshape(-1)}


def _run_metric(factory: Callable[[], Any], batches: list[Batch], device: torch.device) -> Any:
    metric = factory().to(device)
    for batch in batches:
        metric.update(**{k: v.to(device) for k, v in batch.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute()


def parity(device: torch.device, n: int, num_queries: int) -> None:
    side = "CUDA" if device.type == "cuda" else "device path on CPU tensors"
    print(f"\n1. parity: every metric, {side} vs CPU (same batches; max |difference|, max relative)")
    worst = 0.0
    for name, factory, batches in parity_specs(n, num_queries):
        try:
            cpu = _flat_values(_run_metric(factory, batches, torch.device("cpu")))
            with force_device_path() if device.type == "cpu" else contextlib.nullcontext():
                dev = _flat_values(_run_metric(factory, batches, device))
        except Exception as error:  # report and go on: one broken metric must not hide the rest
            print(f"  {name:<40} ERROR {type(error).__name__}: {error}")
            continue
        diff, rel = 0.0, 0.0
        for key, a in cpu.items():
            b = dev[key]
            both_nan = torch.isnan(a) & torch.isnan(b)
            d = torch.where(both_nan, 0.0, (a - b).abs())
            diff = max(diff, float(d.max()) if d.numel() else 0.0)
            r = d / a.abs().clamp(min=1e-300)
            rel = max(rel, float(torch.where(d == 0, 0.0, r).max()) if r.numel() else 0.0)
        worst = max(worst, rel)
        print(f"  {name:<40} {diff:9.2e} {rel:9.2e}")
    print(f"  parity: worst relative difference {worst:.2e}")


# ----------------------------------------------------------------------------- 2. AUC


def ctr_data(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Base rate ~2%, scores crowded near 0.003-0.06, AUC ~0.74 (float32 scores, int64 labels)."""
    g = torch.Generator(device=device).manual_seed(seed)
    true_logit = torch.randn(n, generator=g, device=device).mul_(0.95).sub_(4.35)
    target = (torch.rand(n, generator=g, device=device) < torch.sigmoid(true_logit)).to(torch.int64)
    preds = torch.sigmoid(true_logit.add_(torch.randn(n, generator=g, device=device).mul_(0.35)))
    return preds, target


def reference(preds: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Exact float64 AUC and AP, scikit-learn's algorithm: one sort, cumulative sums at distinct scores."""
    p, order = torch.sort(preds, descending=True)
    y = target[order].to(torch.float64)
    last = torch.ones_like(p, dtype=torch.bool)
    last[:-1] = p[1:] != p[:-1]
    idx = torch.nonzero(last).reshape(-1)
    tps = torch.cumsum(y, 0)[idx]
    fps = (idx + 1).to(torch.float64) - tps
    zero = torch.zeros(1, dtype=torch.float64, device=p.device)
    tpr, fpr = torch.cat([zero, tps / tps[-1]]), torch.cat([zero, fps / fps[-1]])
    auc = torch.trapezoid(tpr, fpr)
    ap = torch.sum(torch.diff(tpr) * (tps / (tps + fps)))
    return float(auc), float(ap)


def stream(factory: Callable[[], Any], preds: torch.Tensor, target: torch.Tensor, batch: int) -> dict[str, float]:
    device = preds.device
    metric = factory().to(device)
    sync(device)
    start = time.perf_counter()
    for lo in range(0, preds.numel(), batch):
        metric.update(preds[lo : lo + batch], target[lo : lo + batch])
    sync(device)
    middle = time.perf_counter()
    value = float(metric.compute())
    sync(device)
    end = time.perf_counter()
    del metric
    free(device)
    return {"update": middle - start, "compute": end - middle, "total": end - start, "value": value}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda run: run["total"])


def auc_section(device: torch.device, sizes: list[int], batch: int, big_batch: int, repeat: int) -> None:
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    contenders = {
        "ours AUC (exact)": tmx.AUC,
        "ours AUC (exact, validate_args=False)": partial(tmx.AUC, validate_args=False),
        "TM BinaryAUROC": partial(BinaryAUROC, thresholds=None),
        "ours AUPRC (exact)": tmx.AUPRC,
        "TM BinaryAveragePrecision": partial(BinaryAveragePrecision, thresholds=None),
        "ours AUC (num_bins=10000)": partial(tmx.AUC, num_bins=10_000),
        "ours AUPRC (num_bins=10000)": partial(tmx.AUPRC, num_bins=10_000),
    }
    warm_p, warm_t = ctr_data(3 * batch, device, seed=99)
    for factory in contenders.values():  # lazy CUDA initialisation, kernels' first launches
        stream(factory, warm_p, warm_t, batch)
    for n in sizes:
        preds, target = ctr_data(n, device)
        ref_auc, ref_ap = reference(preds, target)
        print(
            f"\n2. AUC / AUPRC: {n:,} samples, batches of {batch:,}; "
            f"float64 reference AUC {ref_auc:.12f}, AP {ref_ap:.12f}"
        )
        rows = {}
        for name, factory in contenders.items():
            rows[name] = best([stream(factory, preds, target, batch) for _ in range(repeat)])
            row = rows[name]
            ref = ref_ap if "AUPRC" in name or "Precision" in name else ref_auc
            print(
                f"  {name:<40} {row['total']:8.4f} s  (update {row['update']:.4f}, compute {row['compute']:.4f})"
                f"  |value - reference| {abs(row['value'] - ref):.1e}"
            )
        tm_auc, tm_ap = rows["TM BinaryAUROC"]["total"], rows["TM BinaryAveragePrecision"]["total"]
        print(f"  exact AUC speed-up vs TorchMetrics: {tm_auc / rows['ours AUC (exact)']['total']:.2f}x")
        print(f"  exact AUPRC speed-up vs TorchMetrics: {tm_ap / rows['ours AUPRC (exact)']['total']:.2f}x")
        print(f"  binned AUC time / TorchMetrics exact: {rows['ours AUC (num_bins=10000)']['total'] / tm_auc:.3f}")
        print(f"  binned AUPRC time / TorchMetrics exact: {rows['ours AUPRC (num_bins=10000)']['total'] / tm_ap:.3f}")
        if n == sizes[-1]:  # the same data in larger batches: fewer calls, the kernels' own speed shows
            print(f"  the same {n:,} samples in batches of {big_batch:,}:")
            big = {}
            for name in ("ours AUC (exact)", "TM BinaryAUROC", "ours AUC (num_bins=10000)"):
                big[name] = best([stream(contenders[name], preds, target, big_batch) for _ in range(repeat)])
                row = big[name]
                print(f"  {name:<40} {row['total']:8.4f} s  (update {row['update']:.4f}, compute {row['compute']:.4f})")
            tm_big = big["TM BinaryAUROC"]["total"]
            print(f"  exact AUC speed-up vs TorchMetrics: {tm_big / big['ours AUC (exact)']['total']:.2f}x")
            print(f"  binned AUC time / TorchMetrics exact: {big['ours AUC (num_bins=10000)']['total'] / tm_big:.3f}")
        del preds, target
        free(device)


# ----------------------------------------------------------------------------- 3. ranking


def ranking_data(num_queries: int, device: torch.device) -> Batch:
    g = torch.Generator(device=device).manual_seed(0)
    lens = torch.randint(5, 51, (num_queries,), generator=g, device=device)
    idx = torch.repeat_interleave(torch.arange(num_queries, device=device), lens)
    n = idx.numel()
    target = torch.randint(1, 4, (n,), generator=g, device=device) * (torch.rand(n, generator=g, device=device) < 0.2)
    return {"preds": torch.rand(n, generator=g, device=device), "target": target, "indexes": idx}


def rank_stream(factory: Callable[[], Any], data: Batch, batch: int) -> tuple[float, float]:
    device = data["preds"].device
    metric = factory().to(device)
    sync(device)
    start = time.perf_counter()
    for lo in range(0, data["preds"].numel(), batch):
        metric.update(**{k: v[lo : lo + batch] for k, v in data.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(metric.compute())
    sync(device)
    return time.perf_counter() - start, value


def ranking_section(device: torch.device, queries: list[int], tm_queries: int, batch: int, repeat: int) -> None:
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    print(f"\n3. ranking: NDCG@10, 5-50 candidates per query, batches of {batch:,} rows (update loop + compute)")
    rank_stream(partial(tmx.NDCG, k=10), ranking_data(200, device), batch)  # warm-up
    ours = {}
    for q in sorted(set([*queries, tm_queries])):
        data = ranking_data(q, device)
        seconds, value = min(rank_stream(partial(tmx.NDCG, k=10), data, batch) for _ in range(repeat))
        ours[q] = seconds
        rows = data["preds"].numel()
        print(f"  ours NDCG(k=10)            {q:>9,} queries / {rows:>11,} rows  {seconds:8.4f} s  value {value:.6f}")
    if tm_queries > 0:
        data = ranking_data(tm_queries, device)
        seconds, value = rank_stream(partial(RetrievalNormalizedDCG, top_k=10), data, batch)
        rows = data["preds"].numel()
        q = tm_queries
        print(f"  TM RetrievalNormalizedDCG  {q:>9,} queries / {rows:>11,} rows  {seconds:8.4f} s  value {value:.6f}")
        print(f"  NDCG@10 speed-up vs TorchMetrics at {tm_queries:,} queries: {seconds / ours[tm_queries]:.0f}x")


# ----------------------------------------------------------------------------- 4. per step


class _TorchMetricsSet:
    """TorchMetrics' nearest set of the same size: AUROC(1000 thresholds) and three means."""

    def __init__(self, device: torch.device) -> None:
        from torchmetrics import MeanMetric
        from torchmetrics.classification import BinaryAUROC

        self.metrics = [BinaryAUROC(thresholds=1000).to(device)] + [MeanMetric().to(device) for _ in range(3)]

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        p, y = preds.reshape(-1), target.reshape(-1)
        auroc, bce, ctr, mean_pred = self.metrics
        auroc.update(p, y.long())
        bce.update(torch.nn.functional.binary_cross_entropy(p, y, reduction="none"))
        ctr.update(y)
        mean_pred.update(p)


def _ours(device: torch.device, validate: bool) -> Any:
    from torchmetrics import MetricCollection

    return MetricCollection(
        {
            "ne": tmx.NormalizedEntropy(num_tasks=2, validate_args=validate),
            "calibration": tmx.Calibration(num_tasks=2, validate_args=validate),
            "ctr": tmx.CTR(num_tasks=2, validate_args=validate),
            "auc": tmx.AUC(num_tasks=2, num_bins=10_000, validate_args=validate),
        },
        compute_groups=True,
    ).to(device)


def _module(device: torch.device, window: int | None) -> Callable[..., None]:
    """The same four metrics in a :class:`RecMetricModule` fed the step's output dict (one validation)."""
    tasks = [tmx.RecTaskInfo(f"t{i}", label_name=f"t{i}_label", prediction_name=f"t{i}_pred") for i in range(2)]
    metrics = {
        "ne": "ne",
        "calibration": "calibration",
        "ctr": "ctr",
        "auc": lambda num_tasks: tmx.AUC(num_tasks=num_tasks, num_bins=10_000),
    }
    module = tmx.RecMetricModule(tasks, metrics, window_size=window, throughput=False).to(device)

    def update(preds: torch.Tensor, target: torch.Tensor) -> None:
        module.update({"t0_pred": preds[0], "t1_pred": preds[1], "t0_label": target[0], "t1_label": target[1]})

    return update


def step_section(device: torch.device, hidden: int, batch: int, steps: int, rounds: int) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU()
    )
    head = torch.nn.Linear(hidden, 2)
    net = torch.nn.Sequential(model, head).to(device=device, dtype=dtype)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = torch.randn(batch, hidden, generator=g, device=device, dtype=dtype)
    target = (torch.rand(2, batch, generator=g, device=device) < 0.1).float()

    def train_step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = net(x).float().T  # (2, batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        opt.step()
        return torch.sigmoid(logits.detach())

    configs: dict[str, Callable[[], Callable[[torch.Tensor], None]]] = {
        "training step alone": lambda: lambda preds: None,
        "+ ours NE, Calibration, CTR, AUC(bins)": lambda: partial(_ours(device, True).update, target=target),
        "+ ours, validate_args=False": lambda: partial(_ours(device, False).update, target=target),
        "+ ours, in a RecMetricModule": lambda: partial(_module(device, None), target=target),
        "+ ours, in a RecMetricModule, 1M window": lambda: partial(_module(device, 1 << 20), target=target),
        "+ TorchMetrics AUROC(1000) + 3 MeanMetric": lambda: partial(_TorchMetricsSet(device).update, target=target),
    }
    times = {name: math.inf for name in configs}
    for _ in range(rounds):
        for name, make in configs.items():
            update = make()
            for _ in range(5):
                update(train_step())
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                update(train_step())
            sync(device)
            times[name] = min(times[name], (time.perf_counter() - start) / steps)
    print(
        f"\n4. per step: bf16 MLP ({hidden} wide, batch {batch}) training step + metric updates on (2, {batch}); "
        f"best of {rounds} rounds of {steps} steps"
    )
    base = times["training step alone"]
    for name, seconds in times.items():
        extra = "" if name == "training step alone" else f"   +{(seconds - base) * 1e3:.3f} ms per step"
        print(f"  {name:<44} {seconds * 1e3:8.3f} ms{extra}")


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that runs on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default="1234", help="which sections to run, e.g. 24")
    parser.add_argument("--tm-queries", type=int, default=None, help="queries for TorchMetrics' NDCG (0: skip)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.quick:
        sizes, auc_batch, big_batch, queries, tm_queries, rank_batch = (
            [20_000, 50_000],
            4096,
            16_384,
            [300, 1000],
            300,
            4096,
        )
        parity_n, parity_queries, hidden, step_batch, steps, rounds = 2000, 200, 64, 512, 5, 1
    else:
        sizes, auc_batch, big_batch, rank_batch = [10_000_000, 100_000_000], 65_536, 1 << 20, 65_536
        queries, tm_queries = [50_000, 1_000_000], 50_000
        parity_n, parity_queries, hidden, step_batch, steps, rounds = 200_000, 5_000, 2048, 8192, 200, 3
    if args.tm_queries is not None:
        tm_queries = args.tm_queries
    print(f"torch {torch.__version__}, device {device}", end="")
    if device.type == "cuda":
        print(f" ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})", end="")
    import torchmetrics

    print(f", torchmetrics {torchmetrics.__version__}")
    if "1" in args.sections:
        parity(device, parity_n, parity_queries)
    if "2" in args.sections:
        auc_section(device, sizes, auc_batch, big_batch, args.repeat)
    if "3" in args.sections:
        ranking_section(device, queries, tm_queries, rank_batch, args.repeat)
    if "4" in args.sections:
        step_section(device, hidden, step_batch, steps, rounds)


if __name__ == "__main__":
    main()
