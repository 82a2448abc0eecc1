"""Four real gloo ranks holding uneven shares: what a world of two cannot show.

Production runs on 8 to 64 GPUs; the other DDP tests use two ranks, where "the other rank",
a rank-0-only path, a window share of ``window_size // 2`` or two uneven lists gathered cannot
be told from the general case. Here the seeded data is split over four ranks as
``[0, 1, 37, 200]`` rows (rank 0 takes no batch at all, rank 1 one row and an empty batch, rank 2
ends with an empty batch), and the standalone metrics also run with three ranks of no data. Every
value is checked against one process fed the concatenated batches *and* against references
written here: scikit-learn's ``roc_auc_score``/``average_precision_score`` with ``sample_weight``,
the numpy formulas of ``docs/pointwise.md``, pandas ``groupby`` for grouped and segmented values
and ``tests/helpers/ranking_reference`` for ranking. The windows follow ``docs/windows.md``: each
rank keeps ``window_size // world_size`` samples (``from_torchrec_config``: TorchRec's ``ceil``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.ddp import DDPPool, count_collectives
from tests.helpers.ranking_reference import group_rows, reference_values
from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

pytestmark = pytest.mark.ddp

WORLD = 4
LAYOUTS = {  # batch sizes of each rank
    "uneven": [[], [1, 0], [20, 17, 0], [64, 64, 72]],  # [0, 1, 37, 200] rows
    "three_empty": [[], [0], [], [50]],  # one rank holds every row
}
WINDOW = 100  # 25 samples per rank
TORCHREC_WINDOW = 102  # TorchRec's ceil(102 / 4) = 26 per rank (ours would keep 25)
SMALL_WINDOW = 3  # smaller than the world: TorchRec's share is 1 sample, ours is refused
SEGMENTS = 6  # ids 0..3 on every rank, 4 on rank 3 only, 5 on none
CLICK = {"name": "click", "label_name": "y", "prediction_name": "p", "weight_name": "w"}
CONFIG: dict[str, Any] = {
    "tasks": [
        {**CLICK, "group_id_name": "grp", "session_id_name": "sess"},
        {"name": "watch", "label_name": "wl", "prediction_name": "wp", "weight_name": None},
    ],
    "metrics": {
        "ne": {},
        "auc": {},
        "auprc": {},
        "calibration": {},
        "ctr": {},
        "gauc": {},
        "sne": {"metric": "segmented_ne", "num_segments": SEGMENTS},
        "ndcg@10": {},
        "recall@5": {},
        "mse": {},
    },
    "metric_tasks": {
        **{
            key: ["click"] for key in ("ne", "auc", "auprc", "calibration", "ctr", "gauc", "sne", "ndcg@10", "recall@5")
        },
        "mse": ["watch"],
    },
    "throughput": False,
}
TORCHREC_CONFIG = {
    "rec_tasks": [CLICK],
    "rec_metrics": {name: {"rec_task_indices": [0], "window_size": TORCHREC_WINDOW} for name in ("ne", "auc")},
}


def batches(layout: str, rank: int) -> list[dict[str, np.ndarray]]:
    """Rank ``rank``'s batches (seeded per layout, so every rank and the test build the same ones)."""
    rng = np.random.default_rng([4, list(LAYOUTS).index(layout)])
    out: list[list[dict[str, np.ndarray]]] = [[] for _ in range(WORLD)]
    for r, sizes in enumerate(LAYOUTS[layout]):
        for n in sizes:
            tied = rng.random(n) < 0.3  # some scores on a grid: ties within and across ranks
            p = np.where(tied, rng.choice([0.1, 0.5, 0.9], size=n), rng.uniform(0.02, 0.98, size=n))
            out[r].append(
                {
                    "p": p.astype(np.float32),
                    "y": (rng.random(n) < p).astype(np.float32),
                    "w": rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], size=n),
                    "grp": rng.integers(0, 5 if r == 3 else 4, size=n),
                    "sess": rng.integers(0, 12, size=n),
                    "wp": rng.uniform(0.0, 5.0, size=n).astype(np.float32),
                    "wl": rng.exponential(2.0, size=n).astype(np.float32),
                    "p3": rng.uniform(0.02, 0.98, size=(3, n)).astype(np.float32),
                    "y3": (rng.random((3, n)) < 0.4).astype(np.int64),
                }
            )
    return out[rank]


def _t(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def _kept(steps: list[dict[str, np.ndarray]], share: int) -> list[dict[str, np.ndarray]]:
    """The rows a rank's window keeps (docs/windows.md): the newest whole updates within ``share``
    samples, or the newest ``share`` samples of a newest update at least that large; empty ones take no room."""
    steps = [s for s in steps if len(s["p"])]
    assert all(s["w"].any() for s in steps), "a step of zero weights takes no room in a metric's window: not modelled"
    if steps and len(steps[-1]["p"]) >= share:
        return [{k: v[..., len(steps[-1]["p"]) - share :] for k, v in steps[-1].items()}]
    kept: list[dict[str, np.ndarray]] = []
    for step in reversed(steps):
        if sum(len(s["p"]) for s in kept) + len(step["p"]) > share:
            break
        kept.insert(0, step)
    return kept


def _cat(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The steps' rows as one batch (along the sample axis, the last)."""
    return {k: np.concatenate([s[k] for s in steps], axis=-1) for k in steps[0]} if steps else {}


def _values(out: Any) -> Any:
    if isinstance(out, dict):
        return {k: _values(v) for k, v in out.items()}
    if isinstance(out, torch.Tensor):
        return out.double().tolist()
    return out


def _quiet(fn: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        warnings.filterwarnings("ignore", ".*was called before the ``update`` method")  # a rank without data
        return fn(*args)


# ----------------------------------------------------------------------------- references


def ne_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """docs/pointwise.md: weighted log loss over the entropy of the weighted CTR."""
    p, y = p.astype(np.float64), y.astype(np.float64)
    if w.sum() == 0:
        return math.nan
    ctr = (w * y).sum() / w.sum()
    if ctr in (0.0, 1.0):
        return math.nan
    loss = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum()
    return float(loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log1p(-ctr)))


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    both = (w * y).sum() > 0 and (w * (1 - y)).sum() > 0
    return float(roc_auc_score(y, p, sample_weight=w)) if both else math.nan


def gauc_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray) -> float:
    """The mean AUC of the groups holding both classes with positive weight (pandas groupby)."""
    frame = pd.DataFrame({"p": p.astype(np.float64), "y": y.astype(np.float64), "w": w, "g": groups})
    per_group = frame.groupby("g")[["p", "y", "w"]].apply(
        lambda d: _auc(d.y.to_numpy(), d.p.to_numpy(), d.w.to_numpy())
    )
    return float(per_group.dropna().mean()) if per_group.notna().any() else math.nan


def module_ref(rows: dict[str, np.ndarray]) -> dict[str, float]:
    """The module's values over ``rows`` (one process's view) by the formulas written here."""
    nan = math.nan
    p, y, w = rows["p"].astype(np.float64), rows["y"].astype(np.float64), rows["w"]
    ndcg, recall = reference_values(group_rows(list(rows["sess"]), p, y, w), [("ndcg", 10), ("recall", 5)])
    frame = pd.DataFrame({"p": p, "y": y, "w": w, "g": rows["grp"]})
    sne = frame.groupby("g")[["p", "y", "w"]].apply(lambda d: ne_ref(d.p.to_numpy(), d.y.to_numpy(), d.w.to_numpy()))
    both = (w * y).sum() > 0 and (w * (1 - y)).sum() > 0
    return {
        "ne/click": ne_ref(p, y, w),
        "auc/click": _auc(y, p, w),
        "auprc/click": float(average_precision_score(y, p, sample_weight=w)) if both else nan,
        "calibration/click": float((w * p).sum() / (w * y).sum()),
        "ctr/click": float((w * y).sum() / w.sum()),
        "gauc/click": gauc_ref(p, y, w, rows["grp"]),
        **{f"sne.{g}/click": float(sne.get(g, nan)) for g in range(SEGMENTS)},
        "ndcg@10/click": ndcg,
        "recall@5/click": recall,
        "mse/watch": float(((rows["wp"].astype(np.float64) - rows["wl"]) ** 2).mean()),
    }


def xauc_ref(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """XAUC's docstring formula over every pair i < j of distinct samples."""
    i, j = np.triu_indices(len(p), k=1)
    agree = np.sign(p[i] - p[j]) == np.sign(y[i] - y[j])
    pair = w[i] * w[j]
    return float((pair * agree).sum() / pair.sum())


def _close(got: dict[str, Any], want: dict[str, float], where: str, rel: float = 1e-9) -> None:
    for key, value in want.items():
        assert key in got, f"{where}: {key} missing from {sorted(got)}"
        if math.isnan(value):
            assert math.isnan(got[key]), f"{where} {key}: {got[key]!r}, expected nan"
        else:
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), f"{where} {key}: {got[key]!r} != {value!r}"


def _same(per_rank: list[Any], where: str) -> Any:
    """Every rank returned the same thing (nan equal to nan); the common value."""
    for rank in range(1, WORLD):
        np.testing.assert_equal(per_rank[rank], per_rank[0], err_msg=f"{where}: rank {rank} vs rank 0")
    return per_rank[0]


# ----------------------------------------------------------------------------- jobs (run on every rank)


def _module_job(rank: int, world_size: int) -> dict[str, Any]:
    assert world_size == WORLD
    steps = [_t(s) for s in batches("uneven", rank)]
    out: dict[str, Any] = {}
    for window in (None, WINDOW):
        config = {**CONFIG, "window_size": window}
        module = tmx.RecMetricModule.from_config(config)
        for step in steps:
            module.update(step)
        first, second = _quiet(module.compute), _quiet(module.compute)
        fresh = tmx.RecMetricModule.from_config(config)
        fresh.load_state_dict(module.state_dict())
        loaded = _quiet(fresh.compute)
        module.reset()
        emptied = _quiet(module.compute)  # every rank's lists empty
        for step in steps:
            module.update(step)
        out[str(window)] = {
            name: _values(value)
            for name, value in zip(
                ("first", "second", "loaded", "emptied", "again"),
                (first, second, loaded, emptied, _quiet(module.compute)),
                strict=True,
            )
        }
        # one fused sync: as many collectives for two metrics as for ten (float64, float32 and int64 states)
        small = {"tasks": config["tasks"][:1], "metrics": ["ne", "gauc"], "metric_tasks": None}
        few = tmx.RecMetricModule.from_config({**config, **small})
        for step in steps:
            few.update(step)
        out[str(window)]["collectives"] = (
            count_collectives(lambda f=few: _quiet(f.compute)),  # type: ignore[misc]
            count_collectives(lambda m=module: _quiet(m.compute)),  # type: ignore[misc]
        )
    for window in (TORCHREC_WINDOW, SMALL_WINDOW):
        rec_metrics = {
            name: {**options, "window_size": window} for name, options in TORCHREC_CONFIG["rec_metrics"].items()
        }
        torchrec = tmx.RecMetricModule.from_torchrec_config({**TORCHREC_CONFIG, "rec_metrics": rec_metrics})
        for step in steps:
            torchrec.update(step)
        out[f"torchrec{window}"] = _values(_quiet(torchrec.compute))
    # ours refuses a window smaller than the world on every rank (at the first update, or at compute on a
    # rank without one), before any collective: no rank is left waiting
    small = tmx.RecMetricModule.from_config({**CONFIG, "window_size": SMALL_WINDOW})
    try:
        for step in steps:
            small.update(step)
        small.compute()
    except ValueError as error:
        out["small_window"] = str(error)
    return out


def _standalone_job(rank: int, world_size: int, layout: str) -> dict[str, Any]:
    steps = [_t(s) for s in batches(layout, rank)]
    metrics: dict[str, Any] = {
        "auc3": tmx.AUC(num_tasks=3),
        "gauc": tmx.GroupedAUC(),
        "ndcg": tmx.NDCG(),
        "xauc": tmx.XAUC(),
        "windowed": tmx.Windowed(tmx.NormalizedEntropy(), window_size=WINDOW),
    }
    now = [0.0]
    throughput = tmx.Throughput(warmup_steps=0, window_seconds=5.0, clock=lambda: now[0])
    qps = tmx.TowerQPS(num_tasks=1, warmup_steps=1, clock=lambda: now[0])
    for step in steps:
        metrics["auc3"].update(step["p3"], step["y3"], step["w"])
        metrics["gauc"].update(step["p"], step["y"], step["grp"], step["w"])
        metrics["ndcg"].update(step["p"], step["y"], indexes=step["sess"])
        metrics["xauc"].update(step["wp"], step["wl"], step["w"])
        metrics["windowed"].update(step["p"], step["y"], step["w"])
        now[0] += rank + 1.0  # rank r's steps take r + 1 seconds
        throughput.update(step["p"])
        qps.update(step["y"][None])
    out = {name: _values(_quiet(metric.compute)) for name, metric in metrics.items()}
    out["throughput"] = _values(_quiet(throughput.compute))
    out["qps"] = _values(_quiet(qps.compute))
    aggregator = MetricsAggregator()
    records = [Metric("all", "loss", float(len(s["p"])), AggregationType.MEAN) for s in steps]
    records += [Metric("all", "source", f"r{rank}", AggregationType.CATEGORICAL_COUNT) for _ in steps]
    if rank == 2:  # a dataset one rank of four sees
        records += [
            Metric("rare", "tokens", 5.0, AggregationType.SUM),
            Metric("rare", "peak", 7.5, AggregationType.MAX),
        ]
        records += [Metric("rare", "len", v, AggregationType.DISTRIBUTION) for v in (1.0, 2.0, 6.0)]
    aggregator.update(records)
    out["aggregator"] = aggregator.get_metrics_for_logging(prefix="train")
    return out


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def pool4() -> Iterator[DDPPool]:
    """Four spawned gloo ranks shared by this file's tests."""
    pool = DDPPool(world_size=WORLD)
    yield pool
    pool.close()


def test_module_over_four_uneven_ranks_matches_one_process_and_references(pool4):
    result = _same(pool4.run(_module_job, timeout=240), "module")
    everything = [s for rank in range(WORLD) for s in batches("uneven", rank)]
    for window in (None, WINDOW):
        config = {**CONFIG, "window_size": window}
        got = result[str(window)]
        single = tmx.RecMetricModule.from_config(config)
        for step in everything:
            single.update(_t(step))
        one = _values(_quiet(single.compute))
        assert list(got["first"]) == list(one)
        lifetime = {k: v for k, v in one.items() if not k.endswith("/window")}
        _close(got["first"], lifetime, f"window={window} vs one process")
        _close(got["first"], module_ref(_cat(everything)), f"window={window} vs reference")
        for what in ("second", "loaded", "again"):
            np.testing.assert_equal(got[what], got["first"], err_msg=f"window={window} {what}")
        assert all(math.isnan(v) for v in got["emptied"].values()), got["emptied"]
        few, many = got["collectives"]
        assert few == many and 0 < few <= 4, (window, few, many)
        if window is not None:
            kept = _cat([s for r in range(WORLD) for s in _kept(batches("uneven", r), window // WORLD)])
            windowed = {f"{k}/window": v for k, v in module_ref(kept).items()}
            _close(got["first"], windowed, "window vs reference over the kept rows")
    # from_torchrec_config: each rank keeps ceil(window_size / 4) samples (TorchRec's share: 26, and 1 of 3)
    rows = _cat(everything)
    for window in (TORCHREC_WINDOW, SMALL_WINDOW):
        kept = _cat([s for r in range(WORLD) for s in _kept(batches("uneven", r), -(-window // WORLD))])
        want = {
            "ne-click|lifetime_ne": ne_ref(rows["p"], rows["y"], rows["w"]),
            "ne-click|window_ne": ne_ref(kept["p"], kept["y"], kept["w"]),
            "auc-click|window_auc": _auc(kept["y"], kept["p"], kept["w"]),
        }
        _close(result[f"torchrec{window}"], want, f"torchrec keys, window {window}")
    assert "window_size` (3) to be at least the world size (4)" in result["small_window"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_standalone_metrics_over_four_ranks(pool4, layout):
    got = _same(pool4.run(_standalone_job, layout, timeout=240), layout)
    per_rank = [batches(layout, r) for r in range(WORLD)]
    rows = _cat([s for steps in per_rank for s in steps])
    p, y, w = rows["p"].astype(np.float64), rows["y"].astype(np.float64), rows["w"]
    want = {
        "auc3": [_auc(rows["y3"][t], rows["p3"][t], w) for t in range(3)],
        "gauc": gauc_ref(p, y, w, rows["grp"]),
        "ndcg": reference_values(group_rows(list(rows["sess"]), p, y, np.ones_like(w)), [("ndcg", None)])[0],
        "xauc": xauc_ref(rows["wp"].astype(np.float64), rows["wl"].astype(np.float64), w),
    }
    kept = _cat([s for steps in per_rank for s in _kept(steps, WINDOW // WORLD)])
    want_window = {"lifetime": ne_ref(p, y, w), "window": ne_ref(kept["p"], kept["y"], kept["w"])}
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-9, err_msg=f"{layout} {name}")
    _close(got["windowed"], want_window, f"{layout} windowed")
    # examples summed over ranks, time the slowest rank's (rank r's steps take r + 1 seconds)
    seconds = max([(r + 1.0) * len(steps) for r, steps in enumerate(per_rank)])
    assert got["throughput"]["total_examples"] == len(p)
    assert got["throughput"]["lifetime_throughput"] == pytest.approx(len(p) / seconds, rel=1e-12)
    # window: each rank's updates that started within its last 5 seconds (and its newest); examples
    # summed, seconds the longest rank's
    recent = [
        [i for i in range(len(steps)) if i == len(steps) - 1 or (r + 1.0) * i >= (r + 1.0) * len(steps) - 5.0]
        for r, steps in enumerate(per_rank)
    ]
    window_examples = sum(len(per_rank[r][i]["p"]) for r in range(WORLD) for i in recent[r])
    window_seconds = max((r + 1.0) * len(recent[r]) for r in range(WORLD))
    assert got["throughput"]["window_throughput"] == pytest.approx(window_examples / window_seconds, rel=1e-12)
    # TowerQPS: each rank's first update starts its clock and counts nothing
    counted = sum(sum(len(s["p"]) for s in steps[1:]) for steps in per_rank)
    timed = max([(r + 1.0) * (len(steps) - 1) for r, steps in enumerate(per_rank) if steps])
    assert got["qps"] == pytest.approx(counted / timed if timed else 0.0, rel=1e-12)  # 0 untimed (documented)
    sizes = [len(s["p"]) for steps in per_rank for s in steps]
    sources = {f"train_all/source_count_r{r}": float(len(steps)) for r, steps in enumerate(per_rank) if steps}
    rare = {f"train_rare/len_stat_{stat}": value for stat, value in (("mean", 3.0), ("min", 1.0), ("max", 6.0))}
    want_logged = {"train_all/loss": sum(sizes) / len(sizes), "train_rare/tokens": 5.0, "train_rare/peak": 7.5}
    assert {k: v for k, v in got["aggregator"].items() if "_stat_" not in k or k in rare} == pytest.approx(
        {**want_logged, **sources, **rare}
    )
    assert got["aggregator"]["train_rare/len_stat_std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
