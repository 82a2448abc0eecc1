"""Windowed (lifetime + window values) for every metric family, through the shared window checks."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from tests.helpers import window as W

# family test module -> the cases whose window is checked (every metric class is represented)
FAMILIES = {
    "tests.test_pointwise": [
        "ne-w",
        "ne-3task-w",
        "logloss-logits-w",
        "calibration-3task-shared-w",
        "ctr-soft-w",
        "average-3task-w",
        "accuracy-3task-w",
        "precision-t0.3-w",
        "recall-3task-w",
        "mse-3task-w",
        "rmse-w",
        "mae-3task-shared-w",
    ],
    "tests.test_auc": [
        "auc-3task-w",
        "auprc-w",
        "auc-bins-3task-shared-w",
        "auprc-bins-logits-w",
        "gauc-w",
        "gauc-3task-w",
        "gauprc-weighted-groups-w",
    ],
    "tests.test_pairwise_auc": ["rauc-3task-w", "xauc-w"],
    "tests.test_ranking": [
        "flat-ndcg@5",
        "flat-ties-map",
        "flat-mrr-one-w",
        "flat-ndcg-torchrec",
        "flat-all-w",
        "flat-grouped-all-w",
        "flat-precision-adaptive@10",
        "padded-all-w",
        "padded-pad-ndcg@3",
        "padded-recall@3",
        "multiclass@3-ties-w",
        "multiclass@1",
    ],
}


def _rows_are_samples(factory):
    """Padded ``(Q, L)`` ranking lists and ``(N, C)`` class scores: a sample is a row (``sample_axis = 0``).

    ``metrics/ranking.py`` is being moved by another branch; until its classes declare
    ``sample_axis = 0`` themselves, the instances get it here (flat rows are 1-D, so axis 0 is
    also their last axis).
    """

    def build():
        metric = factory()
        if type(metric).sample_axis != 0:
            metric.sample_axis = 0
        return metric

    return build


def _window_case(module, cid):
    case = importlib.import_module(module).CASES[cid]
    metric = _rows_are_samples(case.metric) if module == "tests.test_ranking" else case.metric
    return dataclasses.replace(case, id=f"{module.removeprefix('tests.test_')}:{cid}", metric=metric)


CASES = {case.id: case for case in (_window_case(m, cid) for m, ids in FAMILIES.items() for cid in ids)}
IDS = [cid for cid in CASES if cid != "auc:gauc-3task-w"]  # its per-group reference is slow: DDP only
DDP_IDS = [
    "pointwise:ne-3task-w",
    "pointwise:accuracy-3task-w",
    "auc:auc-3task-w",
    "auc:auc-bins-3task-shared-w",
    "auc:gauc-3task-w",
    "pairwise_auc:rauc-3task-w",
    "ranking:flat-all-w",
    "ranking:padded-all-w",
    "ranking:multiclass@3-ties-w",
]


SLOW_REFERENCE = {"auc:gauc-w", "auc:gauprc-weighted-groups-w"}  # per-group scikit-learn loops


@pytest.mark.parametrize("cid", IDS)
def test_window_values(cid):
    W.check_window(CASES[cid], stride=4 if cid in SLOW_REFERENCE else 1)


@pytest.mark.parametrize("cid", IDS)
def test_window_state_dict_resume_and_reset(cid):
    W.check_window_state_dict(CASES[cid])


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("cid", DDP_IDS)
def test_window_ddp(ddp_pool, cid, empty_rank):
    W.check_window_ddp(ddp_pool, __name__, CASES[cid], empty_rank=empty_rank)
