"""A recommender engineer's first project under real Lightning DDP (2 gloo ranks), checked number by number.

``tests/helpers/lightning_user_project.py`` trains a click / like / watch-time model whose like and watch
heads weigh 0 on unclicked rows, with ONE training module from ``from_config`` (``metric_tasks``: NE, AUC,
calibration, CTR and grouped AUC by user on the binary heads, MSE on watch time; a window), validates it
over per-user candidate lists (ranking and pointwise), then tests it on a set that Lightning's padding
``DistributedSampler`` must repeat a row of. Every value the rank-0 logger received equals one process over
the rows the ranks fed (scikit-learn ``roc_auc_score`` with ``sample_weight``, numpy NE, calibration, CTR
and MSE, a pandas groupby for grouped AUC, a numpy NDCG/recall/MRR written from docs/ranking.md with its
tie rule), the window the newest whole updates of ``WINDOW // 2`` samples per rank (docs/windows.md); and
``RecMetricCallback`` warns of the padded test loader (its values count one row twice) on rank 0 only,
and of nothing for the validation loader under ``UnpaddedDistributedSampler``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.helpers import lightning_user_project as project

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "lightning_user_project.py"
WEIGHTS = {"click": "w_click", "like": "w_like", "watch": "w_watch"}

pytestmark = pytest.mark.ddp


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("user_project")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [torch.load(out / f"seen_rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def _cat(batches: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    return {k: torch.cat([b[k] for b in batches]).double().numpy() for k in batches[0]}


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    base = (w * y).sum() / w.sum()
    loss = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()
    return loss / -(base * np.log(base) + (1 - base) * np.log(1 - base))


def _gauc(p: np.ndarray, y: np.ndarray, w: np.ndarray, users: np.ndarray) -> float:
    """Unweighted mean of the per-user AUCs over the users with positive and negative weight (docs/auc.md)."""
    frame = pd.DataFrame({"p": p, "y": y, "w": w, "user": users})
    frame = frame[frame.w > 0]
    per_user = [
        roc_auc_score(g.y, g.p, sample_weight=g.w)
        for _, g in frame.groupby("user")
        if (g.w * g.y).sum() > 0 and (g.w * (1 - g.y)).sum() > 0
    ]
    return float(np.mean(per_user))


def _ranking(p: np.ndarray, y: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """NDCG@5, recall@3 and MRR per user list (ties: the less relevant first), users without a positive skipped."""
    values: dict[str, list[float]] = {"ndcg@5": [], "recall@3": [], "mrr": []}
    for user in np.unique(users):
        scores, relevance = p[users == user], y[users == user]
        if relevance.sum() == 0:
            continue
        ranked = relevance[np.lexsort((relevance, -scores))]
        discount = 1 / np.log2(np.arange(2, len(ranked) + 2))
        ideal = np.sort(relevance)[::-1]
        values["ndcg@5"].append((ranked[:5] * discount[:5]).sum() / (ideal[:5] * discount[:5]).sum())
        values["recall@3"].append(ranked[:3].sum() / ranked.sum())
        values["mrr"].append(1 / (np.argmax(ranked > 0) + 1))
    return {name: float(np.mean(v)) for name, v in values.items()}


def _pointwise(batches: list[dict[str, torch.Tensor]], prefix: str, weighted: bool) -> dict[str, float]:
    c = _cat(batches)
    expected = {}
    for task in ("click", "like", "watch"):
        p, y = c[f"{task}_pred"], c[task]
        w = c[WEIGHTS[task]] if weighted else np.ones_like(p)
        if task == "watch":
            if weighted:
                expected[f"{prefix}mse/watch"] = (w * (p - y) ** 2).sum() / w.sum()
            continue
        kept = w > 0
        expected[f"{prefix}ne/{task}"] = _ne(p, y, w)
        expected[f"{prefix}auc/{task}"] = roc_auc_score(y[kept], p[kept], sample_weight=w[kept])
        expected[f"{prefix}gauc/{task}"] = _gauc(p, y, w, c["user"])
        if weighted:
            expected[f"{prefix}calibration/{task}"] = (w * p).sum() / (w * y).sum()
            expected[f"{prefix}ctr/{task}"] = (w * y).sum() / w.sum()
        else:
            expected.update({f"{prefix}{k}/{task}": v for k, v in _ranking(p, y, c["user"]).items()})
    return expected


def _window(batches: list[dict[str, torch.Tensor]], share: int) -> list[dict[str, torch.Tensor]]:
    """The newest whole updates whose sizes sum to at most ``share`` (every update here weighs something)."""
    kept, size = [], 0
    for batch in reversed(batches):
        size += len(batch["click"])
        if size > share:
            break
        kept.append(batch)
    return kept


def test_every_logged_training_value_equals_one_process_over_what_the_ranks_fed(run) -> None:
    checked = 0
    for row in run[0]["logged"]:
        if "train/ne/click" not in row["values"]:
            continue
        per_rank = [[b for _, b in seen["train"][: row["train"]]] for seen in run]
        expected = _pointwise([b for batches in per_rank for b in batches], "train/", weighted=True)
        window = [b for batches in per_rank for b in _window(batches, project.WINDOW // 2)]
        expected |= {f"{k}/window": v for k, v in _pointwise(window, "train/", weighted=True).items()}
        expected["train/throughput/total_examples"] = sum(len(b["click"]) for batches in per_rank for b in batches)
        got = {k: v for k, v in row["values"].items() if "_throughput" not in k and k != "epoch"}
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-9, err_msg=f"{key} after {row['train']} batches")
        checked += 1
    assert checked == 7  # 8 batches per rank and epoch: computes after 3, 6, 9, 12 and 15 and at the epoch ends (8, 16)


@pytest.mark.parametrize("stage", ["val", "test"])
def test_every_evaluation_value_equals_one_process_over_what_the_ranks_fed(run, stage) -> None:
    rows = [row for row in run[0]["logged"] if f"{stage}/ne/click" in row["values"]]
    assert len(rows) == 2  # two validation epochs; two test runs (one batch per rank, then the whole set)
    for row in rows:
        epoch = run[0][stage][row[stage] - 1][0]
        batches = [b for seen in run for e, b in seen[stage] if e == epoch]
        expected = _pointwise(batches, f"{stage}/", weighted=False)
        got = {k: v for k, v in row["values"].items() if k.startswith(f"{stage}/")}
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-9, err_msg=key)
    sizes = {"val": len(project.candidate_set(3)), "test": len(project.candidate_set(5, drop_last_row=True))}
    fed = sum(len(b["click"]) for seen in run for e, b in seen[stage] if e == run[0][stage][-1][0])
    # validation under UnpaddedDistributedSampler: each row once; the test loader's sampler repeats one
    assert fed == sizes[stage] + (stage == "test")


def test_the_padded_test_loader_is_warned_of_on_rank_zero_alone(run) -> None:
    size = len(project.candidate_set(5, drop_last_row=True))
    padding = [[w for w in seen["warnings"] if "DistributedSampler that pads" in w] for seen in run]
    first = [i for i, w in enumerate(run[0]["warnings"]) if "DistributedSampler that pads" in w]
    assert first and first[0] >= run[0]["warnings_by_test_run"][0]  # given in the second, whole test run
    assert padding[1] == []
    # the whole test run only: validation's UnpaddedDistributedSampler repeats nothing, and the first test run,
    # limited to one batch per rank, never reaches the repeated row
    assert len(padding[0]) == 1
    assert sum(len(b["click"]) for seen in run for r, b in seen["test"] if r == 1) == 2 * 50
    assert (
        f"test dataloader 0 has a DistributedSampler that pads its {size} samples to {size + 1} over 2" in padding[0][0]
    )
    assert "`Project.test_metrics` counts 1 sample(s) twice" in padding[0][0]
    assert "UnpaddedDistributedSampler" in padding[0][0]
