"""Metrics given a process group of ranks 0 and 1 in a world of three (real gloo, spawned ranks).

Every rank calls ``dist.new_group([0, 1])``; rank 2 gets torch's placeholder for a rank outside
the group. Ranks 0 and 1 must report the values of one process over their concatenated samples;
rank 2 its own samples' values (it has no other rank to sync with), as ``MetricsAggregator`` does.
Before the fix rank 2 failed: TorchMetrics gathered from no rank ("stack expects a non-empty
TensorList"), ``Windowed`` refused even the update (the placeholder is an ``int``), the module's
fused gather, the aggregation metrics' own collectives and a ``MetricsAggregator``'s TorchMetrics
handler failed alike.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import ndcg_score, roc_auc_score
from torchmetrics.aggregation import MaxMetric

import torchmetrics_ext as tmx
from tests.helpers.ddp import DDPPool
from torchmetrics_ext.aggregation import AggregationType, CategoricalCount, Distribution, Metric, MetricsAggregator

WINDOW = 8  # each of the group's two ranks keeps its newest 4 samples; rank 2 alone keeps 8


def _data(rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s samples: 3 groups of 6 rows with both classes in each, 3 queries shared by every rank."""
    g = torch.Generator().manual_seed(11 + rank)
    n = 18
    target = torch.tensor([1, 0, 1, 0, 0, 1] * 3)[torch.randperm(n, generator=g)]
    groups = torch.arange(n) % 3
    target[groups == 0] = torch.tensor([1, 0, 0, 1, 0, 0])  # both classes in every group
    target[groups == 1] = torch.tensor([0, 1, 0, 0, 1, 1])
    target[groups == 2] = torch.tensor([1, 1, 0, 0, 0, 1])
    centers = (torch.randint(0, 10, (n,), generator=g).double() + 0.5) / 10  # one bin centre each: binned == exact
    scores = torch.rand(n, generator=g, dtype=torch.float64)  # distinct: no ties in the rankings
    return {"preds": centers.float(), "target": target, "groups": groups, "scores": scores.float()}


def _values(rank: int, world_size: int) -> dict[str, Any]:
    group = dist.new_group([0, 1], backend="gloo")  # every rank creates every group
    d = _data(rank)
    p, t, grp, s = d["preds"], d["target"], d["groups"], d["scores"]
    metrics: dict[str, Any] = {
        "ctr": tmx.CTR(process_group=group),
        "auc": tmx.AUC(process_group=group),
        "auc_binned": tmx.AUC(num_bins=10, bin_space="probability", process_group=group),
        "gauc": tmx.GroupedAUC(process_group=group),
        "ndcg": tmx.NDCG(process_group=group),
        "windowed": tmx.Windowed(tmx.CTR(process_group=group), window_size=WINDOW),
        "segmented": tmx.Segmented(tmx.CTR(process_group=group), num_segments=3),
    }
    metrics["ctr"].update(p, t)
    metrics["auc"].update(p, t)
    metrics["auc_binned"].update(p, t)
    metrics["gauc"].update(p, t, grp)
    metrics["ndcg"].update(s, t, indexes=grp)
    metrics["windowed"].update(p, t)
    metrics["segmented"].update(p, t, segments=grp)
    out = {name: _plain(metric.compute()) for name, metric in metrics.items()}
    task = tmx.RecTaskInfo("click", session_id_name="query")
    module = tmx.RecMetricModule(
        [task],
        {
            "ctr": tmx.CTR(process_group=group),
            "auc": tmx.AUC(process_group=group),
            "ndcg": tmx.NDCG(process_group=group),
        },
        window_size=WINDOW,
        throughput=False,
    )
    module.update({"prediction": s, "label": t, "query": grp})
    out["module"] = {key: value.item() for key, value in module.compute().items()}
    # the aggregation metrics and the throughput sync by hand-written collectives of their own
    categories, distribution = CategoricalCount(process_group=group), Distribution(process_group=group)
    categories.update(["shared", f"rank{rank}"])
    distribution.update(p.tolist())
    throughput = tmx.Throughput(process_group=group)
    throughput.update(len(p) * (rank + 1))
    out["categories"] = {name: count.item() for name, count in categories.compute().items()}
    out["distribution"] = {name: distribution.compute()[name].item() for name in ("mean", "min", "max")}
    out["total_examples"] = throughput.compute()["total_examples"].item()
    aggregator = MetricsAggregator(process_group=group)
    aggregator.register_handler(AggregationType.MAX, MaxMetric)  # a TorchMetrics metric syncs by itself
    aggregator.update(
        [
            Metric("d", "n", float(rank + 1), AggregationType.SUM),
            Metric("d", "top", float(rank + 1), AggregationType.MAX),
        ]
    )
    out["aggregator"] = aggregator.get_metrics_for_logging(prefix="train")
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.double().tolist()


def _reference(ranks: tuple[int, ...], window_share: int) -> dict[str, Any]:
    """One process over the ranks' samples concatenated: sklearn and numpy formulas."""
    data = [{k: v.double().numpy() for k, v in _data(r).items()} for r in ranks]
    p, t, grp, s = (np.concatenate([d[k] for d in data]) for k in ("preds", "target", "groups", "scores"))
    recent = np.concatenate([d["target"][-window_share:] for d in data])
    ndcg = np.mean([ndcg_score(t[grp == q][None], s[grp == q][None]) for q in range(3)])
    auc_s = roc_auc_score(t, s)
    return {
        "ctr": t.mean(),
        "auc": roc_auc_score(t, p),
        "auc_binned": roc_auc_score(t, p),
        "gauc": np.mean([roc_auc_score(t[grp == g], p[grp == g]) for g in range(3)]),
        "ndcg": ndcg,
        "windowed": {"lifetime": t.mean(), "window": recent.mean()},
        "segmented": [t[grp == g].mean() for g in range(3)],
        "module": {"ctr/click": t.mean(), "auc/click": auc_s, "ndcg/click": ndcg, "ctr/click/window": recent.mean()},
        "distribution": {"mean": p.mean(), "min": p.min(), "max": p.max()},
        "total_examples": sum(len(d["preds"]) * (r + 1) for r, d in zip(ranks, data, strict=True)),
    }


@pytest.fixture(scope="module")
def ddp_pool3() -> Iterator[DDPPool]:
    pool = DDPPool(world_size=3)
    yield pool
    pool.close()


@pytest.mark.ddp
def test_a_group_of_two_ranks_syncs_over_them_and_a_rank_outside_it_computes_its_own_values(ddp_pool3):
    results = ddp_pool3.run(_values, timeout=240)
    for rank, result in enumerate(results):
        ranks, share = ((0, 1), WINDOW // 2) if rank < 2 else ((2,), WINDOW)
        expected = _reference(ranks, share)
        for name, value in expected.items():
            got = result[name]
            if name == "module":
                got = {key: got[key] for key in value}  # the window keys of auc and ndcg aside
            np.testing.assert_allclose(_flat(got), _flat(value), rtol=1e-12, atol=1e-12, err_msg=f"rank {rank}: {name}")


def _flat(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in _flat(value[key])]
    return list(np.atleast_1d(np.asarray(value, dtype=np.float64)))


def _world(rank: int, world_size: int) -> tuple[int, int]:
    return dist.get_rank(), dist.get_world_size()


@pytest.mark.ddp
def test_a_pool_whose_port_is_taken_starts_again_on_a_fresh_port(monkeypatch):
    """Two xdist workers may pick one free port: the pool whose rank 0 cannot listen on it (EADDRINUSE) stops its
    ranks and starts on another port, instead of waiting out the start timeout. Real gloo: the first port is held
    by a listening socket of this test."""
    from tests.helpers import ddp

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        given = iter([port])
        fresh = ddp._free_port
        monkeypatch.setattr(ddp, "_free_port", lambda: next(given, None) or fresh())
        pool = DDPPool()
    try:
        assert pool.ports[0] == port and len(pool.ports) == 2 and pool.ports[1] != port
        assert pool.run(_world) == [(0, 2), (1, 2)]
    finally:
        pool.close()


@pytest.mark.ddp
def test_a_pool_that_fails_to_start_otherwise_raises_without_a_retry(monkeypatch):
    """Only a taken port is retried: another start failure (here a port out of range) raises at once, as before."""
    from tests.helpers import ddp

    monkeypatch.setattr(ddp, "_free_port", lambda: 70000)
    with pytest.raises(RuntimeError, match=r"(?s)failed to start the gloo process group:\nrank \d:.*Port out of range"):
        DDPPool()


def _one_rank_fails_to_start(rank: int, world_size: int, port: int, jobs: Any, results: Any) -> None:
    """A pool worker whose rank 1 fails to start (not on a taken port) while rank 0 starts and waits for jobs."""
    if rank == 1:
        results.put((rank, False, "RuntimeError: deliberately failed to start"))
        return
    results.put((rank, True, "ready"))
    while jobs.get() is not None:
        pass


def _no_rank_reports(rank: int, world_size: int, port: int, jobs: Any, results: Any) -> None:
    """A pool worker that never reports its start (a rank stuck in its rendezvous): the pool's start times out."""
    while jobs.get() is not None:
        pass


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("worker", "timeout", "match"),
    [
        (_one_rank_fails_to_start, 120.0, r"(?s)failed to start the gloo process group:\nrank 1:.*deliberately failed"),
        (_no_rank_reports, 2.0, r"timed out after 2s waiting to start the gloo process group"),
    ],
    ids=["a-rank-fails", "timeout"],
)
def test_a_pool_that_fails_to_start_leaves_no_rank_running(monkeypatch, worker, timeout, match):
    """Only a taken port stopped the ranks of a failed start: any other failure raised with the started ranks
    (daemons) still running, rank 0 waiting for jobs for the rest of the session. The original error is raised
    once they are stopped and joined."""
    import multiprocessing

    from tests.helpers import ddp

    before = set(multiprocessing.active_children())  # the session's own pools aside
    monkeypatch.setattr(ddp, "_worker", worker)  # spawned by reference: the ranks import it from this module
    monkeypatch.setattr(ddp, "_START_TIMEOUT", timeout)
    with pytest.raises(RuntimeError, match=match):
        DDPPool()
    left = [proc for proc in multiprocessing.active_children() if proc not in before]
    assert left == []
