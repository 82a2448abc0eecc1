"""``ModuleKeys``: the keys a ``RecMetricModule`` reports, read from its configuration before any compute.

References: the keys the module's own ``compute()`` returns after updates (every one of them is
known before the first update), and TorchRec's own key list for a multi-task config
(``EXPECTED_MULTI_KEYS``, produced by TorchRec 1.9.2): keys TorchRec does not report for it
(a window-only AUC's lifetime, a metric of fewer tasks) are not the module's either. Keys of another
prefix, metric, task or part are not the module's.
"""

from __future__ import annotations

import pytest

import torchmetrics_ext as tmx
from tests.test_module import TASKS, make_data, metric_specs
from tests.test_module import run as compute_after
from tests.test_torchrec_config import EXPECTED_MULTI_KEYS, MULTI_CONFIG, Optimizers
from torchmetrics_ext._module_keys import ModuleKeys


def _state_metrics() -> dict:
    return {"lr": lambda: 0.01, "optim": lambda: {"lr": 0.01, "momentum": 0.9}}


def _module(**options) -> tmx.RecMetricModule:
    metrics = {**metric_specs(), "ranking": tmx.RankingMetrics(ks=(1, 3), metrics=("ndcg", "mrr"))}
    if options.get("key_style") == "torchrec":  # TorchRec's own key for another grouped AUC: refused there
        del metrics["gauc"]
    return tmx.RecMetricModule(TASKS, metrics, state_metrics=_state_metrics(), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": "train/"},
        {"prefix": "train/", "window_size": 300, "throughput": False},
        {"key_style": "torchrec", "window_size": 300},
    ],
    ids=["lifetime", "window", "torchrec"],
)
def test_every_key_compute_returns_is_known_before_the_first_update(options):
    module = _module(**options)
    keys = ModuleKeys(module)  # before any update
    values = compute_after(module, [make_data(0), make_data(1)])
    assert len(values) > 40
    assert [key for key in values if key not in keys] == []
    # dict-valued metrics and state metrics: their entries are in the keys
    if options.get("key_style") != "torchrec":
        assert {"train/ranking.ndcg@3/buy", "train/optim/momentum", "train/lr"} <= set(values)


def test_keys_of_another_prefix_metric_task_or_part_are_not_the_modules():
    keys = ModuleKeys(_module(prefix="train/", throughput=False))
    assert "train/ne/click" in keys and "train/ranking.mrr@1/click" in keys and "train/optim/lr" in keys
    for other in (
        "val/ne/click",  # another prefix
        "ne/click",
        "train/mae/click",  # a metric not configured
        "train/ne/like",  # a task not configured
        "train/ne/click/window",  # no window
        "train/throughput/total_examples",  # no throughput
        "train/ranking.a.b/click",  # entry names hold no separator
        "train/ranking./click",
        "train/optim/lr/x",
        "train/ne/click/dataloader_idx_0",
        1,
    ):
        assert other not in keys, other


def test_torchrec_keys_are_torchrecs_own_for_a_multi_task_config():
    module = tmx.RecMetricModule.from_torchrec_config(MULTI_CONFIG, state_metrics_mapping={"optimizers": Optimizers()})
    keys = ModuleKeys(module)
    assert all(key in keys for key in EXPECTED_MULTI_KEYS)
    # TorchRec reports AUC's window alone, calibration for two tasks, accuracy for one: nothing else of those
    for missing in ("auc-buy|lifetime_auc", "calibration-like|lifetime_calibration", "accuracy-click|window_accuracy"):
        assert missing not in EXPECTED_MULTI_KEYS
        assert missing not in keys
