"""``RecMetricModule.from_torchrec_config``: TorchRec's config in, TorchRec's keys out.

The expected key lists below are literal: they were produced by TorchRec 1.9.2 itself, running
``tests/helpers/torchrec_side.py`` in ``/work/venv-torchrec-parity`` on these configs and the steps of
``make_steps`` (``generate_metric_module`` + ``update`` per step + ``compute``; keys sorted). The last
test repeats that run and compares keys and values live; it skips, saying why, where that virtual
environment is absent (CI), so nothing here needs TorchRec.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import math
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

import torchmetrics_ext as tmx
from tests.helpers.torchrec_venv import TORCHREC_PYTHON
from torchmetrics_ext.torchrec_config import TORCHREC_METRICS

SIDE = Path(__file__).parent / "helpers" / "torchrec_side.py"

# TorchRec's DefaultMetricsConfig (torchrec/metrics/metrics_config.py), field for field
DEFAULT_TASK = {"name": "DefaultTask", "label_name": "label", "prediction_name": "prediction", "weight_name": "weight"}
DEFAULT_CONFIG: dict[str, Any] = {
    "rec_tasks": [DEFAULT_TASK],
    "rec_metrics": {"ne": {"rec_tasks": [DEFAULT_TASK], "window_size": 10_000_000}},
    "throughput_metric": {"window_size": 100, "warmup_steps": 100},
    "state_metrics": [],
}

TASKS = [
    {"name": "click", "label_name": "click_label", "prediction_name": "click_pred", "weight_name": "w"},
    {"name": "buy", "label_name": "buy_label", "prediction_name": "buy_pred", "weight_name": "w"},
    {"name": "like", "label_name": "like_label", "prediction_name": "like_pred", "weight_name": "like_w"},
]
WINDOW = 1000
MULTI_CONFIG: dict[str, Any] = {
    "rec_tasks": TASKS,
    "rec_metrics": {
        "ne": {"rec_task_indices": [0, 1, 2], "window_size": WINDOW, "arguments": {"include_logloss": True}},
        "ctr": {"rec_task_indices": [0, 1, 2], "window_size": WINDOW},
        "calibration": {"rec_tasks": TASKS[:2], "window_size": WINDOW},
        "auc": {"rec_task_indices": [0, 1, 2], "window_size": WINDOW, "arguments": {"grouped_auc": True}},
        "auprc": {"rec_task_indices": [0, 2], "window_size": WINDOW},
        "mse": {"rec_task_indices": [0, 1, 2], "window_size": WINDOW, "arguments": {"include_r_squared": True}},
        "accuracy": {"rec_task_indices": [1], "window_size": WINDOW, "arguments": {"threshold": 0.4}},
        "serving_ne": {"rec_task_indices": [2], "window_size": WINDOW},
        "cali_free_ne": {"rec_task_indices": [0, 1], "window_size": WINDOW},
        "average": {"rec_task_indices": [0], "window_size": WINDOW},
    },
    "throughput_metric": {"window_size": 100, "warmup_steps": 1},
    "state_metrics": ["optimizers"],
    "compute_interval_steps": 3,
}

# a regression head (watch time in seconds) next to a binary one: each metric reads its own tasks
# (`rec_task_indices`), as TorchRec feeds them; values checked against TorchRec itself
WATCH_TIME = {"name": "watch_time", "label_name": "wt_label", "prediction_name": "wt_pred", "weight_name": "wt_w"}
REGRESSION_CONFIG: dict[str, Any] = {
    "rec_tasks": [TASKS[0], WATCH_TIME],
    "rec_metrics": {
        "ne": {"rec_task_indices": [0], "window_size": 100},
        "calibration": {"rec_task_indices": [0], "window_size": 100},
        "mse": {"rec_task_indices": [1], "window_size": 100, "arguments": {"include_r_squared": True}},
    },
    "compute_interval_steps": 1,
}

# segmented_ne: NE and log loss per segment id of the `grouping_keys` column, two tasks
SEGMENTS = 4
SEGMENTED_CONFIG: dict[str, Any] = {
    "rec_tasks": TASKS[:2],
    "rec_metrics": {
        "segmented_ne": {
            "rec_task_indices": [0, 1],
            "window_size": WINDOW,
            "arguments": {"num_groups": SEGMENTS, "include_logloss": True},
        },
        "ne": {"rec_task_indices": [0], "window_size": WINDOW},
    },
}
# as TorchRec 1.9.2 printed them (tests/helpers/torchrec_side.py), segment by segment
EXPECTED_SEGMENTED_KEYS = sorted(
    [
        f"segmented_ne-{task}|{part}_{name}_{g}"
        for task in ("click", "buy")
        for part in ("lifetime", "window")
        for name in ("segmented_ne", "logloss")
        for g in range(SEGMENTS)
    ]
    + ["ne-click|lifetime_ne", "ne-click|window_ne"]
)

EXPECTED_DEFAULT_KEYS = [
    "ne-DefaultTask|lifetime_ne",
    "ne-DefaultTask|window_ne",
    "throughput-throughput|attempt_examples",
    "throughput-throughput|attempt_throughput",
    "throughput-throughput|lifetime_throughput",
    "throughput-throughput|total_examples",
    "throughput-throughput|window_throughput",
]
EXPECTED_MULTI_KEYS = [
    "accuracy-buy|lifetime_accuracy",
    "accuracy-buy|window_accuracy",
    "auc-buy|window_auc",
    "auc-buy|window_grouped_auc",
    "auc-click|window_auc",
    "auc-click|window_grouped_auc",
    "auc-like|window_auc",
    "auc-like|window_grouped_auc",
    "auprc-click|lifetime_auprc",
    "auprc-click|window_auprc",
    "auprc-like|lifetime_auprc",
    "auprc-like|window_auprc",
    "average-click|lifetime_label_average",
    "average-click|lifetime_prediction_average",
    "average-click|window_label_average",
    "average-click|window_prediction_average",
    "cali_free_ne-buy|lifetime_cali_free_ne",
    "cali_free_ne-buy|window_cali_free_ne",
    "cali_free_ne-click|lifetime_cali_free_ne",
    "cali_free_ne-click|window_cali_free_ne",
    "calibration-buy|lifetime_calibration",
    "calibration-buy|window_calibration",
    "calibration-click|lifetime_calibration",
    "calibration-click|window_calibration",
    "ctr-buy|lifetime_ctr",
    "ctr-buy|window_ctr",
    "ctr-click|lifetime_ctr",
    "ctr-click|window_ctr",
    "ctr-like|lifetime_ctr",
    "ctr-like|window_ctr",
    "mse-buy|lifetime_mse",
    "mse-buy|lifetime_r_squared",
    "mse-buy|lifetime_rmse",
    "mse-buy|window_mse",
    "mse-buy|window_r_squared",
    "mse-buy|window_rmse",
    "mse-click|lifetime_mse",
    "mse-click|lifetime_r_squared",
    "mse-click|lifetime_rmse",
    "mse-click|window_mse",
    "mse-click|window_r_squared",
    "mse-click|window_rmse",
    "mse-like|lifetime_mse",
    "mse-like|lifetime_r_squared",
    "mse-like|lifetime_rmse",
    "mse-like|window_mse",
    "mse-like|window_r_squared",
    "mse-like|window_rmse",
    "ne-buy|lifetime_logloss",
    "ne-buy|lifetime_ne",
    "ne-buy|window_logloss",
    "ne-buy|window_ne",
    "ne-click|lifetime_logloss",
    "ne-click|lifetime_ne",
    "ne-click|window_logloss",
    "ne-click|window_ne",
    "ne-like|lifetime_logloss",
    "ne-like|lifetime_ne",
    "ne-like|window_logloss",
    "ne-like|window_ne",
    "optimizers-optimizers|lr",
    "serving_ne-like|lifetime_ne",
    "serving_ne-like|total_examples",
    "serving_ne-like|window_ne",
    "throughput-throughput|attempt_examples",
    "throughput-throughput|attempt_throughput",
    "throughput-throughput|lifetime_throughput",
    "throughput-throughput|total_examples",
    "throughput-throughput|window_throughput",
]


class Optimizers:
    """A TorchRec state metric: ``get_metrics()``."""

    def get_metrics(self) -> dict[str, float]:
        return {"lr": 0.01}


def make_steps(config: dict[str, Any], num_steps: int | None = None, batch: int = 64, seed: int = 0) -> list:
    """Model outputs with every column the config names; some zero weights; group ids; session ids."""
    g = torch.Generator().manual_seed(seed)
    warmup = (config.get("throughput_metric") or {}).get("warmup_steps", 0)
    steps = []
    for _ in range(num_steps or warmup + 2):
        out: dict[str, torch.Tensor] = {}
        for task in config["rec_tasks"]:
            out[task["prediction_name"]] = torch.rand(batch, generator=g).clamp(0.01, 0.99)
            out[task["label_name"]] = (torch.rand(batch, generator=g) < out[task["prediction_name"]]).float()
            w = torch.rand(batch, generator=g) * 2
            out[task["weight_name"]] = torch.where(torch.rand(batch, generator=g) < 0.1, 0.0, w)
            if task["name"] == "watch_time":  # a regression head: seconds, far outside [0, 1]
                out[task["prediction_name"]] = out[task["prediction_name"]] * 300.0
                out[task["label_name"]] = (torch.rand(batch, generator=g) * 600.0).round()
        # some groups hold a single class; segmented_ne's ids lie in [0, num_groups)
        out["grouping_keys"] = torch.randint(0, _id_range(config), (batch,), generator=g)
        out["session_id"] = torch.arange(batch) // 8  # session_pairwise_auc's default column (no draw: g unchanged)
        steps.append(out)
    return steps


def _id_range(config: dict[str, Any]) -> int:
    """The group ids' range: segmented_ne's ``num_groups`` where the config has it, else 40 groups."""
    segmented = config["rec_metrics"].get("segmented_ne")
    return 40 if segmented is None else (segmented.get("arguments") or {}).get("num_groups", 1)


def run(module: tmx.RecMetricModule, steps: list) -> dict[str, torch.Tensor]:
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return module.compute()


def ours(config: dict[str, Any], steps: list | None = None) -> dict[str, torch.Tensor]:
    module = tmx.RecMetricModule.from_torchrec_config(config, state_metrics_mapping={"optimizers": Optimizers()})
    return run(module, make_steps(config) if steps is None else steps)


def test_segmented_ne_gives_torchrecs_keys_per_segment():
    """segmented_ne (num_groups, include_logloss) reads the `grouping_keys` column as segment ids; the keys are
    TorchRec's, ``segmented_ne-{task}|lifetime_segmented_ne_{g}`` (checked live by the test against TorchRec)."""
    values = ours(SEGMENTED_CONFIG)
    assert sorted(values) == EXPECTED_SEGMENTED_KEYS
    module = tmx.RecMetricModule.from_torchrec_config(SEGMENTED_CONFIG)
    assert {t.group_id_name for t in module.tasks} == {"grouping_keys"}
    assert module.compute_groups == [["segmented_ne", "segmented_ne_logloss"], ["ne"]]  # one update for both


def test_segmented_ne_reads_a_named_column_and_casts_float_keys():
    """`grouping_keys="country"` names the column; `cast_keys_to_int` reads float ids as int64 (TorchRec's
    cast), else float ids are refused; the values equal those of integer ids."""
    arguments = {"num_groups": 2, "grouping_keys": "country", "cast_keys_to_int": True}
    config = {
        "rec_tasks": TASKS[:1],
        "rec_metrics": {"segmented_ne": {"rec_task_indices": [0], "arguments": arguments}},
    }
    step = {"click_pred": torch.tensor([0.2, 0.7, 0.4, 0.9]), "click_label": torch.tensor([0, 1, 1, 0])}
    cast = tmx.RecMetricModule.from_torchrec_config(config)
    cast.update(step | {"country": torch.tensor([0.0, 1.0, 0.0, 1.0])})
    exact = tmx.RecMetricModule.from_torchrec_config(config)
    exact.update(step | {"country": torch.tensor([0, 1, 0, 1])})
    assert (
        cast.compute().keys()
        == exact.compute().keys()
        == {f"segmented_ne-click|{part}_segmented_ne_{g}" for part in ("lifetime", "window") for g in (0, 1)}
    )
    for key, value in exact.compute().items():
        torch.testing.assert_close(cast.compute()[key], value)
    arguments["cast_keys_to_int"] = False
    strict = tmx.RecMetricModule.from_torchrec_config(config)
    with pytest.raises(TypeError, match=r"`model_out\['country'\]`: expected integer ids"):
        strict.update(step | {"country": torch.tensor([0.0, 1.0, 0.0, 1.0])})


@pytest.mark.parametrize(
    ("rec_metrics", "match"),
    [
        ({"segmented_ne": {"rec_task_indices": [0], "arguments": {"grouping_keys": ["a", "b"]}}}, "only one grouping"),
        ({"segmented_ne": {"rec_task_indices": [0], "arguments": {"num_groups": 0}}}, "`num_groups` to be a positive"),
        (
            {
                "segmented_ne": {"rec_task_indices": [0], "arguments": {"grouping_keys": "country"}},
                "auc": {"rec_task_indices": [0], "arguments": {"grouped_auc": True}},
            },
            "one id column for every metric",
        ),
    ],
    ids=["list-of-keys", "num-groups", "two-columns"],
)
def test_segmented_ne_arguments_beyond_one_column_are_refused_saying_so(rec_metrics, match):
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule.from_torchrec_config({"rec_tasks": TASKS[:1], "rec_metrics": rec_metrics})


def test_the_default_config_gives_torchrecs_keys():
    assert sorted(ours(DEFAULT_CONFIG)) == EXPECTED_DEFAULT_KEYS


def test_a_multi_metric_multi_task_config_gives_torchrecs_keys():
    values = ours(MULTI_CONFIG)
    assert sorted(values) == EXPECTED_MULTI_KEYS
    module = tmx.RecMetricModule.from_torchrec_config(MULTI_CONFIG, state_metrics_mapping={"optimizers": Optimizers()})
    assert module.compute_interval_steps == 3 and module.window_size == WINDOW
    assert [t.name for t in module.tasks] == ["click", "buy", "like"]
    assert {t.group_id_name for t in module.tasks} == {"grouping_keys"}  # TorchRec's column for grouped AUC


def _column(steps: list, name: str) -> np.ndarray:
    return torch.cat([s[name] for s in steps]).double().numpy()


def test_values_equal_independent_references():
    steps = make_steps(MULTI_CONFIG)
    values = ours(MULTI_CONFIG, steps)
    for task in TASKS:
        p, y, w = (_column(steps, task[k]) for k in ("prediction_name", "label_name", "weight_name"))
        name = task["name"]
        ce = log_loss(y, p, sample_weight=w)
        ctr = np.average(y, weights=w)
        baseline = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
        np.testing.assert_allclose(values[f"ne-{name}|lifetime_ne"], ce / baseline, rtol=1e-9)
        np.testing.assert_allclose(values[f"ne-{name}|lifetime_logloss"], ce / math.log(2), rtol=1e-9)  # bits
        np.testing.assert_allclose(values[f"ctr-{name}|window_ctr"], ctr, rtol=1e-9)  # the window holds every row
        np.testing.assert_allclose(values[f"auc-{name}|window_auc"], roc_auc_score(y, p, sample_weight=w), rtol=1e-9)
        np.testing.assert_allclose(values[f"mse-{name}|lifetime_mse"], np.average((p - y) ** 2, weights=w), rtol=1e-9)
    p, y, w = (_column(steps, TASKS[2][k]) for k in ("prediction_name", "label_name", "weight_name"))
    assert values["serving_ne-like|total_examples"].item() == (w > 0).sum()
    np.testing.assert_allclose(values["accuracy-buy|lifetime_accuracy"].item(), _accuracy(steps, TASKS[1], 0.4))
    assert values["optimizers-optimizers|lr"].item() == pytest.approx(0.01)
    assert values["throughput-throughput|total_examples"].item() == sum(len(s["w"]) for s in steps)


def test_config_tasks_no_metric_names_are_never_read():
    """TorchRec reads a rec_tasks entry only through a metric's indices: steps need no column of the others."""
    config = {"rec_tasks": TASKS, "rec_metrics": {"ne": {"rec_task_indices": [2, 0], "window_size": WINDOW}}}
    module = tmx.RecMetricModule.from_torchrec_config(config)
    assert [t.name for t in module.tasks] == ["click", "like"]  # the config's order
    gen = torch.Generator().manual_seed(0)
    p, y = torch.rand(50, generator=gen), (torch.rand(50, generator=gen) < 0.3).float()
    module.update({"click_pred": p, "click_label": y, "w": torch.ones(50), "like_pred": p, "like_label": y})
    assert sorted(module.compute()) == sorted(
        f"ne-{task}|{part}_ne" for task in ("click", "like") for part in ("lifetime", "window")
    )


@pytest.mark.parametrize(
    ("definition", "match"),
    [
        (
            {"rec_task_indices": [0, 0]},
            r"`rec_task_indices` \[0, 0\] names task 'click' more than once \(indices \[0, 0\]\)",
        ),
        (
            {"rec_task_indices": [1, 0, 1]},
            r"`rec_task_indices` \[1, 0, 1\] names task 'buy' more than once \(indices \[1, 1\]\)",
        ),
        ({"rec_tasks": [TASKS[0], TASKS[1], TASKS[0]]}, r"`rec_tasks` names task 'click' more than once"),
    ],
    ids=["indices", "indices-apart", "rec_tasks"],
)
def test_a_rec_task_repeated_in_one_metric_is_refused_as_metric_tasks_refuses_it(definition, match):
    """``metric_tasks`` refuses a task listed twice; ``rec_task_indices: [0, 0]`` was read as ``[0]`` in silence.

    TorchRec takes the repeat and computes the task twice, both under one key (no second value: see
    ``test_torchrec_reports_a_repeated_index_once``), so the config holds a mistake: refused, naming TorchRec's field.
    """
    config = {"rec_tasks": TASKS, "rec_metrics": {"ne": {**definition, "window_size": WINDOW}}}
    with pytest.raises(ValueError, match=rf"TorchRec metric 'ne': {match}; .*list each task once"):
        tmx.RecMetricModule.from_torchrec_config(config)
    with pytest.raises(ValueError, match="names task 'click' more than once"):  # the module's own rule, for comparison
        tasks = [tmx.RecTaskInfo(**task) for task in TASKS[:2]]
        tmx.RecMetricModule(tasks, ["ne", "ctr"], metric_tasks={"ne": ["click", "click"]}, throughput=False)


def test_torchrec_reports_a_repeated_index_once(tmp_path):
    """TorchRec 1.9.2 itself: ``rec_task_indices: [0, 0]`` gives the keys and values of ``[0]``, nothing more."""
    if not TORCHREC_PYTHON.exists():
        pytest.skip(
            f"TorchRec's parity virtual environment {TORCHREC_PYTHON} is absent (see benchmarks/compare_torchrec.py)"
        )
    once = {"rec_tasks": TASKS[:1], "rec_metrics": {"ne": {"rec_task_indices": [0], "window_size": WINDOW}}}
    twice = {"rec_tasks": TASKS[:1], "rec_metrics": {"ne": {"rec_task_indices": [0, 0], "window_size": WINDOW}}}
    steps = make_steps(once, num_steps=3)
    torch.save(steps, tmp_path / "steps.pt")
    results = []
    for name, config in (("once", once), ("twice", twice)):
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
        result = subprocess.run(
            [str(TORCHREC_PYTHON), str(SIDE), str(tmp_path / f"{name}.json"), str(tmp_path / "steps.pt")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert sorted(results[0]["keys"]) == ["ne-click|lifetime_ne", "ne-click|window_ne"]


def _accuracy(steps: list, task: dict, threshold: float) -> float:
    p, y, w = (_column(steps, task[k]) for k in ("prediction_name", "label_name", "weight_name"))
    return float(np.average((p >= threshold) == (y == 1), weights=w))


def test_window_only_auc_keeps_no_lifetime_samples():
    """TorchRec's AUC has no lifetime value; the module keeps only the window's samples for it."""
    config = {
        "rec_tasks": TASKS[:1],
        "rec_metrics": {
            "auc": {"rec_task_indices": [0], "window_size": 100},
            "ne": {"rec_task_indices": [0], "window_size": 100},
        },
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    steps = make_steps(config, num_steps=5, batch=40)
    values = run(module, steps)
    auc = module.metrics["auc"]
    assert sum(t.numel() for t in auc.lifetime.preds) == 0 and sum(t.numel() for t in auc.window.preds) <= 100
    kept = steps[-2:]  # the newest whole updates within 100 samples
    p, y, w = (_column(kept, TASKS[0][k]) for k in ("prediction_name", "label_name", "weight_name"))
    np.testing.assert_allclose(values["auc-click|window_auc"], roc_auc_score(y, p, sample_weight=w), rtol=1e-9)
    assert set(values) == {"auc-click|window_auc", "ne-click|lifetime_ne", "ne-click|window_ne"}


def _torchrec_window(sizes: list[int], window: int, max_updates: int = 1000) -> list[int]:
    """Indices of the steps TorchRec's WindowBuffer holds (torchrec/metrics/rec_metric.py): a deque of at most
    ``max_updates`` (MAX_BUFFER_COUNT) updates, the oldest dropped while their sizes exceed ``window``."""
    held: list[int] = []
    for step, _ in enumerate(sizes):
        if len(held) == max_updates:
            held.pop(0)
        held.append(step)
        while sum(sizes[i] for i in held) > window and len(held) > 1:
            held.pop(0)
    return held


def _xauc(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted share of the pairs i < j whose prediction and label order agree (ties in both agree)."""
    i, j = np.triu_indices(len(p), k=1)
    pair = w[i] * w[j]
    return float((pair * (np.sign(p[i] - p[j]) == np.sign(y[i] - y[j]))).sum() / pair.sum())


def test_the_window_of_sum_metrics_holds_torchrecs_newest_1000_updates():
    """1300 updates of 2 samples into a window of 5000: TorchRec's sum metrics keep the newest 1000 updates
    (MAX_BUFFER_COUNT), its AUC every sample (its window is counted in samples only); validated all-zero-weight
    updates take no room."""
    config = {
        "rec_tasks": TASKS[:2],
        "rec_metrics": {
            name: {"rec_task_indices": [0, 1], "window_size": 5000}
            for name in ("ctr", "ne", "mse", "auc", "xauc", "rauc")
        },
    }
    steps = make_steps(config, num_steps=1300, batch=2, seed=3)
    for step in steps[:300]:  # the oldest clicks leave the capped window only
        step["click_label"] = torch.ones(2)
        step["w"] = torch.ones(2)
    module = tmx.RecMetricModule.from_torchrec_config(config)
    values = run(module, steps)
    # validated, a step whose weights are all zero takes no window room (DESIGN: it changes nothing), where
    # TorchRec's buffer would hold it: the window holds the newest 1000 of the other steps
    weighed = [i for i, step in enumerate(steps) if float(step["w"].max()) > 0]
    assert len(weighed) < 1300  # some steps weigh nothing (a 10% chance per row): the case this pins
    held = [weighed[i] for i in _torchrec_window([2] * len(weighed), 5000)]
    assert held == weighed[-1000:] and held[0] > 0 and held[0] < 300
    assert module.metrics["ctr"].max_updates == 1000 and module.metrics["auc"].max_updates is None
    assert ["xauc"] in module.compute_groups and ["rauc"] in module.compute_groups  # windowed apart
    for task in TASKS[:2]:
        p, y, w = (_column([steps[i] for i in held], task[k]) for k in ("prediction_name", "label_name", "weight_name"))
        name = task["name"]
        np.testing.assert_allclose(values[f"ctr-{name}|window_ctr"], np.average(y, weights=w), rtol=1e-9)
        np.testing.assert_allclose(values[f"mse-{name}|window_mse"], np.average((p - y) ** 2, weights=w), rtol=1e-9)
        ce = log_loss(y, p, sample_weight=w)
        ctr = np.average(y, weights=w)
        ne = ce / -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
        np.testing.assert_allclose(values[f"ne-{name}|window_ne"], ne, rtol=1e-9)
        np.testing.assert_allclose(values[f"xauc-{name}|window_xauc"], _xauc(p, y, w), rtol=1e-9)
        p, y, w = (_column(steps, task[k]) for k in ("prediction_name", "label_name", "weight_name"))
        np.testing.assert_allclose(values[f"ctr-{name}|lifetime_ctr"], np.average(y, weights=w), rtol=1e-9)
        auc = roc_auc_score(y, p, sample_weight=w)  # every sample: TorchRec's AUC has no update limit
        np.testing.assert_allclose(values[f"auc-{name}|window_auc"], auc, rtol=1e-9)
        np.testing.assert_allclose(values[f"rauc-{name}|window_rauc"], auc, rtol=1e-9)  # 0/1 labels: the ROC AUC
    # the plain module keeps the sample rule with no limit: its window holds all 2600 samples
    plain = tmx.RecMetricModule(
        [tmx.RecTaskInfo(**t) for t in TASKS[:1]], {"ctr": "ctr"}, window_size=5000, throughput=False
    )
    window = run(plain, steps)["ctr/click/window"]
    p, y, w = (_column(steps, TASKS[0][k]) for k in ("prediction_name", "label_name", "weight_name"))
    np.testing.assert_allclose(window, np.average(y, weights=w), rtol=1e-9)


def _validated_steps(config: dict[str, Any], zero: list[int], seed: int = 4) -> list:
    steps = make_steps(config, num_steps=12, batch=4, seed=seed)
    for i in zero:  # every weight column of the step all zero
        for task in config["rec_tasks"]:
            steps[i][task["weight_name"]] = torch.zeros(4)
    return steps


@pytest.mark.parametrize("mode", [None, "FUSED_TASKS_COMPUTATION", 3])
def test_should_validate_update_skips_steps_whose_weights_are_all_zero(mode):
    """TorchRec skips such a step (rec_metric.py, `_check_nonempty_weights`): it takes no room in any window."""
    config = {
        "rec_tasks": TASKS[:2],  # one weight column, "w"
        "rec_metrics": {
            "ctr": {"rec_task_indices": [0, 1], "window_size": 12},
            "serving_ne": {"rec_task_indices": [0, 1], "window_size": 12},
            "auc": {"rec_task_indices": [0, 1], "window_size": 12},
        },
        "throughput_metric": {"window_size": 100, "warmup_steps": 1},
        "should_validate_update": True,
        "rec_compute_mode": mode,
    }
    zero = [7, 9, 10]
    steps = _validated_steps(config, zero)
    values = ours(config, steps)
    kept = [s for i, s in enumerate(steps) if i not in zero][-3:]  # the newest 12 samples of the valid steps
    unskipped = ours(dict(config, should_validate_update=False), steps)
    for task in TASKS[:2]:
        p, y, w = (_column(kept, task[k]) for k in ("prediction_name", "label_name", "weight_name"))
        name = task["name"]
        np.testing.assert_allclose(values[f"ctr-{name}|window_ctr"], np.average(y, weights=w), rtol=1e-9)
        np.testing.assert_allclose(values[f"auc-{name}|window_auc"], roc_auc_score(y, p, sample_weight=w), rtol=1e-9)
        for key in (f"ctr-{name}|lifetime_ctr", f"serving_ne-{name}|lifetime_ne", f"serving_ne-{name}|total_examples"):
            torch.testing.assert_close(values[key], unskipped[key], rtol=1e-12, atol=0)  # zero weights add nothing
    # validated, the module's windows skip such a step without the option too (DESIGN: a batch whose weights are
    # all zero changes nothing), where TorchRec's window would take it: the window is the one above
    for key, value in values.items():
        if "window" in key and "throughput" not in key:
            torch.testing.assert_close(unskipped[key], value, rtol=1e-12, atol=0, equal_nan=True)
    assert values["throughput-throughput|total_examples"].item() == 12 * 4  # a skipped step is still trained on


def test_should_validate_update_with_per_task_weights_in_fused_modes_when_every_metric_reads_every_column():
    """Fused: TorchRec skips a step when all of a metric's tasks have zero weights; when every metric covers
    both weight columns, that is a step whose weights are all zero, as the module skips it."""
    tasks = [TASKS[0], TASKS[2]]  # weight columns "w" and "like_w"
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {"ctr": {"rec_task_indices": [0, 1], "window_size": 8}},
        "should_validate_update": True,
        "rec_compute_mode": "FUSED_TASKS_COMPUTATION",
    }
    steps = _validated_steps(config, zero=[9])
    steps[10]["like_w"] = torch.zeros(4)  # one task only: the step is kept (and takes its room)
    values = ours(config, steps)
    kept = [steps[10], steps[11]]  # the newest 8 samples: step 9 is skipped, step 10 is not
    for task in tasks:
        _, y, w = (_column(kept, task[k]) for k in ("prediction_name", "label_name", "weight_name"))
        np.testing.assert_allclose(values[f"ctr-{task['name']}|window_ctr"], np.average(y, weights=w), rtol=1e-9)


def test_reset_leaves_the_throughput_running_as_torchrecs_does():
    """TorchRec's RecMetricModule.reset() resets its rec metrics only: total_examples goes on, no new warm-up."""
    config = {
        "rec_tasks": TASKS[:1],
        "rec_metrics": {"ctr": {"rec_task_indices": [0]}},
        "throughput_metric": {"window_size": 100, "warmup_steps": 1},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    steps = make_steps(config, num_steps=4, batch=8)
    for step in steps[:3]:
        module.update(step)
    module.reset()
    values = run(module, steps[3:])
    assert values["throughput-throughput|total_examples"].item() == 32  # every step's 8 examples
    assert math.isfinite(values["throughput-throughput|lifetime_throughput"].item())  # the warm-up is not redone
    _, y, w = (_column(steps[3:], TASKS[0][k]) for k in ("prediction_name", "label_name", "weight_name"))
    np.testing.assert_allclose(values["ctr-click|lifetime_ctr"], np.average(y, weights=w), rtol=1e-9)  # reset


def test_compare_torchrec_flags_nan_against_a_number():
    """benchmarks/compare_torchrec.py: nan vs a number is a mismatch, nan vs nan agrees, and ours nan where
    TorchRec reports its fill value for an undefined metric (0, 0.5, 1, a huge NE) is the listed intended
    difference."""
    path = Path(__file__).parents[1] / "benchmarks" / "compare_torchrec.py"
    spec = importlib.util.spec_from_file_location("compare_torchrec", path)
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)
    nan = float("nan")

    def failures(theirs, ours, name="ne-t{}|lifetime_ne"):
        keys = [name.format(t) for t in range(3)]
        return ct.compare(dict(zip(keys, ([v] for v in theirs))), dict(zip(keys, ([v] for v in ours))))

    assert failures([0.8] * 3, [nan] * 3)[1] == ["ne-t0|lifetime_ne: TorchRec 0.8 vs ours nan"]
    assert failures([0.8, 0.8, 0.8], [0.8, 0.8, nan])[1] == ["ne-t2|lifetime_ne: TorchRec 0.8 vs ours nan"]
    assert failures([0.8, 0.8, 0.8], [nan, 0.8, 0.8])[1] == ["ne-t0|lifetime_ne: TorchRec 0.8 vs ours nan"]
    assert failures([nan, 0.8, 0.8], [0.8, 0.8, 0.8])[1] == ["ne-t0|lifetime_ne: TorchRec nan vs ours 0.8"]
    assert failures([nan, 0.8, 0.8], [nan, 0.8, 0.8])[1] == []
    assert failures([0.8, 0.8, 0.8], [0.8, 0.8, 0.9])[1] == ["ne-t2|lifetime_ne: TorchRec 0.8 vs ours 0.9"]
    rows, found = failures([0.8, 3.7e11, 0.8], [0.8, nan, 0.8])  # one-class task: TorchRec's huge NE
    assert found == [] and "t1: intended: undefined" in rows[-1]
    rows, found = failures([0.0, 0.5, 0.8], [nan, nan, 0.8], name="ctr-t{}|lifetime_ctr")
    assert found == [] and "t0, t1: intended: undefined" in rows[-1]
    assert math.isinf(ct._rel(0.8, nan)) and ct._rel(nan, nan) == 0.0 and math.isinf(ct._rel(math.inf, 1.0))


def test_compare_torchrec_session_compat_differs_only_where_zero_weights_apply():
    """Session precision/recall drop zero-weight rows before ranking, TorchRec ranks them: on the data with
    zero weights the micro compat difference is the documented one (the script used to fail on it); on the
    `w>0:` rows, where no weight is zero, a compat difference is still a mismatch."""
    path = Path(__file__).parents[1] / "benchmarks" / "compare_torchrec.py"
    spec = importlib.util.spec_from_file_location("compare_torchrec", path)
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)

    def run(prefix: str, compat: float) -> tuple[list[str], list[str]]:
        keys = [f"{prefix}recall_session_level-t{t}|lifetime_recall_session_level" for t in range(3)]
        theirs = {k: [0.57] for k in keys}
        ours = {**{k: [0.64] for k in keys}, **{k + "#compat": [compat] for k in keys}}
        return ct.compare(theirs, ours)

    rows, found = run("", 0.61)
    assert found == [] and "intended: compat differs on purpose: a zero-weight row takes no top-k place" in rows[-1]
    rows, found = run(ct.POSITIVE, 0.61)
    assert found == [
        "w>0:recall_session_level-t0|lifetime_recall_session_level: compatible option differs: "
        "TorchRec 0.57 vs ours 0.61"
    ]
    assert run(ct.POSITIVE, 0.57)[1] == [] and "compat 0.0e+00" in run(ct.POSITIVE, 0.57)[0][-1]


@dataclasses.dataclass
class RecTaskInfo:  # TorchRec's dataclasses, field for field (TorchRec is not installed in CI)
    name: str = "DefaultTask"
    label_name: str = "label"
    prediction_name: str = "prediction"
    weight_name: str = "weight"
    session_metric_def: Any = None
    is_negative_task: bool = False
    tensor_name: str | None = None
    weighted: bool = True


@dataclasses.dataclass
class RecMetricDef:
    rec_tasks: list = dataclasses.field(default_factory=list)
    rec_task_indices: list = dataclasses.field(default_factory=list)
    window_size: int = 10_000_000
    arguments: dict | None = None


@dataclasses.dataclass
class ThroughputDef:
    window_size: int = 100
    warmup_steps: int = 100


class RecMetricEnum(enum.Enum):
    NE = "ne"
    CTR = "ctr"
    SEGMENTED_NE = "segmented_ne"


class StateMetricEnum(enum.Enum):
    OPTIMIZERS = "optimizers"


@dataclasses.dataclass
class MetricsConfig:
    rec_tasks: list = dataclasses.field(default_factory=list)
    rec_metrics: dict = dataclasses.field(default_factory=dict)
    throughput_metric: ThroughputDef | None = None
    rec_compute_mode: Any = None
    fused_update_limit: int = 0
    state_metrics: list = dataclasses.field(default_factory=list)
    compute_interval_steps: int = 100
    min_compute_interval: float = 0.0
    max_compute_interval: float = float("inf")
    compute_on_all_ranks: bool = False
    should_validate_update: bool = False
    enable_pt2_compile: bool = False
    should_clone_update_inputs: bool = False
    use_cpu_offloaded_rec_metric_module: bool | None = None


def test_torchrecs_dataclasses_read_like_the_dict():
    task = RecTaskInfo()
    config = MetricsConfig(
        rec_tasks=[task],
        rec_metrics={
            RecMetricEnum.NE: RecMetricDef(rec_tasks=[task]),
            RecMetricEnum.CTR: RecMetricDef(rec_task_indices=[0]),
        },
        throughput_metric=ThroughputDef(),
        state_metrics=[StateMetricEnum.OPTIMIZERS],
    )
    module = tmx.RecMetricModule.from_torchrec_config(
        config, state_metrics_mapping={StateMetricEnum.OPTIMIZERS: Optimizers()}
    )
    as_dict = dict(DEFAULT_CONFIG, rec_metrics=DEFAULT_CONFIG["rec_metrics"] | {"ctr": {"rec_task_indices": [0]}})
    twin = tmx.RecMetricModule.from_torchrec_config(
        as_dict | {"state_metrics": ["optimizers"]}, state_metrics_mapping={"optimizers": Optimizers().get_metrics}
    )
    steps = make_steps(DEFAULT_CONFIG, num_steps=3)
    a, b = run(module, steps), run(twin, steps)
    assert list(a) == list(b) and "ctr-DefaultTask|window_ctr" in a and "optimizers-optimizers|lr" in a
    for key in a:
        if "throughput" not in key:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_every_supported_metric_builds_and_reports_its_keys():
    for name, spec in TORCHREC_METRICS.items():
        switches = {v.when: True for v in spec.values if v.when}
        config = {"rec_tasks": TASKS[:1], "rec_metrics": {name: {"rec_task_indices": [0], "arguments": switches}}}
        values = ours(config)
        segment = "_0" if spec.segmented else ""  # segmented_ne: one key per segment id (num_groups=1)
        expected = {
            (f"{name}-click|{v.name}" if part == "bare" else f"{name}-click|{part}_{v.name}{segment}")
            for v in spec.values
            for part in v.parts
        }
        assert set(values) == expected, name


def test_torchrecs_auprc_is_a_binned_lifetime_and_an_exact_window():
    config = {
        "rec_tasks": TASKS[:1],
        "rec_metrics": {"auprc": {"rec_task_indices": [0], "arguments": {"num_bins": 100}}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    lifetime, window = module.metrics["auprc"].lifetime, module.metrics["auprc_window"].window
    assert (lifetime.num_bins, lifetime.bin_space, window.num_bins) == (100, "probability", None)
    steps = make_steps(config, num_steps=2)
    values = run(module, steps)
    p, y, w = (_column(steps, TASKS[0][k]) for k in ("prediction_name", "label_name", "weight_name"))
    floored = np.floor(p.astype(np.float32) * np.float32(100))  # TorchRec's bins
    np.testing.assert_allclose(
        values["auprc-click|lifetime_auprc"], average_precision_score(y, floored, sample_weight=w)
    )
    np.testing.assert_allclose(values["auprc-click|window_auprc"], average_precision_score(y, p, sample_weight=w))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"rec_metrics": {"multiclass_recall": {"rec_task_indices": [0]}}},
            r"'multiclass_recall' is not supported.*supported: .*auc",
        ),
        (
            {"rec_metrics": {"ne": {"rec_task_indices": [0], "arguments": {"eta": 1}}}},
            r"unsupported arguments \['eta'\]",
        ),
        (
            {
                "rec_metrics": {
                    "ne": {"rec_task_indices": [0], "arguments": {"allow_missing_label_with_zero_weight": True}}
                }
            },
            "allow_missing_label_with_zero_weight",
        ),
        ({"rec_metrics": {"ne": {"rec_task_indices": [0], "rec_tasks": TASKS[:1]}}}, "exactly one of `rec_tasks`"),
        ({"rec_metrics": {"ne": {}}}, "exactly one of `rec_tasks`"),
        ({"rec_metrics": {"ne": {"rec_task_indices": [3]}}}, r"\[3\] out of range for 2 rec_tasks"),
        (
            {"rec_metrics": {"ne": {"rec_task_indices": [0]}, "ctr": {"rec_task_indices": [0], "window_size": 5}}},
            "one window size",
        ),
        ({"rec_metrics": {"ne": {"rec_tasks": [TASKS[0] | {"weight_name": "other"}]}}}, "'click' is defined twice"),
        ({"rec_metrics": {"ne": {"rec_task_indices": [0], "windows": 3}}}, r"Unknown fields \['windows'\]"),
        (
            {"rec_metrics": {"auprc": {"rec_task_indices": [0], "arguments": {"min_prediction": 0.1}}}},
            "min_prediction=0",
        ),
        ({"rec_metrics": {}}, "non-empty dict"),
        ({"rec_metrics": {3: {"rec_task_indices": [0]}}}, "RecMetricEnum or its name"),
        ({"rec_metrics": {"ne": 3}}, "TorchRec dataclass or a dict, got int"),
        ({"rec_tasks": [{"label_name": "y"}]}, "to have a name"),
        ({"batch_size": 3}, r"Unknown fields \['batch_size'\] in `config`"),
        ({"state_metrics": ["optimizers"]}, "pass its object in `state_metrics_mapping`"),
        ({"state_metrics": ["lr"]}, "Unknown TorchRec state metric 'lr'"),
        ({"throughput_metric": {"seconds": 3}}, r"Unknown fields \['seconds'\] in `throughput_metric`"),
        ({"fused_update_limit": 2}, r"`fused_update_limit=2` is not supported.*one window entry"),
        ({"fused_update_limit": "2"}, "`fused_update_limit` to be an integer"),
        (
            {
                "rec_tasks": [TASKS[0], TASKS[2]],
                "rec_metrics": {"ne": {"rec_task_indices": [0, 1]}},
                "should_validate_update": True,
            },
            r"every task reads one weight column; the tasks read \{'click': 'w', 'like': 'like_w'\} "
            r"\(UNFUSED_TASKS_COMPUTATION\).*for each task on its own",
        ),
        (
            {
                "rec_tasks": [TASKS[0], TASKS[2]],
                "rec_metrics": {"ne": {"rec_task_indices": [0, 1]}, "ctr": {"rec_task_indices": [1]}},
                "should_validate_update": True,
                "rec_compute_mode": 1,
            },
            r"or the tasks of every metric read all of the weight columns.*for each metric's tasks",
        ),
        ({"rec_compute_mode": "SOMETIMES"}, "RecComputeMode, got 'SOMETIMES'"),
    ],
)
def test_bad_configs_are_rejected_with_the_reason(change, match):
    config = {"rec_tasks": TASKS[:2], "rec_metrics": {"ne": {"rec_task_indices": [0]}}} | change
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule.from_torchrec_config(config)
    with pytest.raises(ValueError, match="TorchRec dataclass or a dict, got list"):
        tmx.RecMetricModule.from_torchrec_config([])
    with pytest.raises(ValueError, match="get_metrics"):
        tmx.RecMetricModule.from_torchrec_config(
            {"rec_tasks": TASKS[:1], "rec_metrics": {"ne": {"rec_task_indices": [0]}}, "state_metrics": ["optimizers"]},
            state_metrics_mapping={"optimizers": 3},
        )


@pytest.mark.parametrize(
    "indices",
    [[np.int64(1), np.int32(0)], np.array([1, 0]), torch.tensor([1, 0]), [torch.tensor(1), np.asarray(0)], (1, 0)],
    ids=["numpy-ints", "numpy-array", "tensor", "0-dim", "tuple"],
)
def test_rec_task_indices_take_numpy_and_0_dim_integers(indices):
    """``np.int64`` indices (a config built with NumPy) were refused as out of range: integers by the settings'
    rule (``as_int``) now choose the same tasks as Python ints, in their order."""
    config = {"rec_tasks": TASKS[:2], "rec_metrics": {"ne": {"rec_task_indices": indices}}}
    expected = {"rec_tasks": TASKS[:2], "rec_metrics": {"ne": {"rec_task_indices": [1, 0]}}}
    tasks = tmx.RecMetricModule.from_torchrec_config(config).tasks
    assert tasks == tmx.RecMetricModule.from_torchrec_config(expected).tasks
    assert [task.name for task in tasks] == ["click", "buy"]  # the module's tasks follow `rec_tasks`
    one = {"rec_tasks": TASKS[:2], "rec_metrics": {"ne": {"rec_task_indices": list(indices)[:1]}}}
    assert [task.name for task in tmx.RecMetricModule.from_torchrec_config(one).tasks] == ["buy"]


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        ([True], r"`rec_task_indices` to hold integers .*got True in \[True\]"),
        ([0, np.True_], r"`rec_task_indices` to hold integers .*got np\.True_ in"),
        ([torch.tensor(True)], r"`rec_task_indices` to hold integers .*got tensor\(True\)"),
        ([1.0], r"`rec_task_indices` to hold integers .*got 1\.0 in \[1\.0\]"),
        ([torch.tensor(0.0)], r"`rec_task_indices` to hold integers .*got tensor\(0\.\)"),
        (["0"], r"`rec_task_indices` to hold integers .*got '0' in \['0'\]"),
        ([None], r"`rec_task_indices` to hold integers .*got None in \[None\]"),
        (0, r"`rec_task_indices` to be a list of integers .*got 0\."),
        (torch.tensor(1), r"`rec_task_indices` to be a list of integers .*got tensor\(1\)\."),
        ("01", r"`rec_task_indices` to be a list of integers .*got '01'\."),
        ([np.int64(2)], r"`rec_task_indices` \[2\] out of range for 2 rec_tasks"),
        ([-1], r"`rec_task_indices` \[-1\] out of range for 2 rec_tasks"),
    ],
    ids=repr,
)
def test_rec_task_indices_that_are_no_integers_are_refused_naming_the_key_and_value(indices, match):
    """``True`` read as task 1 (``isinstance(True, int)``); a float, string or scalar gave an unclear error."""
    config = {"rec_tasks": TASKS[:2], "rec_metrics": {"ne": {"rec_task_indices": indices}}}
    with pytest.raises(ValueError, match=r"TorchRec metric 'ne': .*" + match):
        tmx.RecMetricModule.from_torchrec_config(config)


@pytest.mark.parametrize(
    ("window_size", "match"),
    [
        (10.7, r"`window_size` to be a positive integer, got 10\.7\."),  # was truncated to 10
        (True, r"`window_size` to be a positive integer, got True\."),  # was a window of 1 sample
        ("100", r"`window_size` to be a positive integer, got '100'\."),  # was read as 100
        (None, r"`window_size` to be a positive integer, got None\."),  # was int()'s TypeError
        (0, r"`window_size` to be a positive integer, got 0\."),
    ],
    ids=repr,
)
def test_a_window_size_that_is_no_positive_integer_is_refused_naming_the_metric(window_size, match):
    """A RecMetricDef's ``window_size`` goes by the settings' rule, as ``RecMetricModule(window_size=...)``'s:
    ``int()`` truncated floats and read bools and text; NumPy and 0-dim integers are integers."""
    config = {"rec_tasks": TASKS[:1], "rec_metrics": {"ne": {"rec_task_indices": [0], "window_size": window_size}}}
    with pytest.raises(ValueError, match=r"TorchRec metric 'ne': expected " + match):
        tmx.RecMetricModule.from_torchrec_config(config)
    for size in (np.int64(7), torch.tensor(7)):
        config["rec_metrics"]["ne"]["window_size"] = size
        assert tmx.RecMetricModule.from_torchrec_config(config).window_size == 7


@pytest.mark.parametrize(
    ("arguments", "shown"), [(["x"], r"\['x'\]"), ([], r"\[\]"), (0, "0"), (False, "False"), ("", "''")]
)
def test_arguments_that_are_no_dict_are_refused_naming_them(arguments, shown):
    """``arguments=["include_logloss"]`` raised ``dict()``'s own "dictionary update sequence" error, and a falsy
    non-dict (``[]``, ``0``, ``False``, ``""``) was read as no arguments (TorchRec's ``**arguments`` refuses each);
    ``None`` is TorchRec's default, no arguments."""
    config = {"rec_tasks": TASKS[:1], "rec_metrics": {"ne": {"rec_task_indices": [0], "arguments": arguments}}}
    with pytest.raises(ValueError, match=rf"TorchRec metric 'ne': expected `arguments` to be a dict .*got {shown}\.$"):
        tmx.RecMetricModule.from_torchrec_config(config)
    config["rec_metrics"]["ne"]["arguments"] = None
    assert list(tmx.RecMetricModule.from_torchrec_config(config).metrics) == ["ne"]


# ----------------------------------------------------------------------------- TorchRec itself

# keys whose values differ from TorchRec's on purpose even with the compatible options on
# (time-based: throughput rates)
NOT_COMPARED = ("lifetime_throughput", "window_throughput", "attempt_throughput")


@pytest.mark.parametrize(
    "config",
    [DEFAULT_CONFIG, MULTI_CONFIG, SEGMENTED_CONFIG, REGRESSION_CONFIG],
    ids=["default", "multi", "segmented", "regression_head"],
)
def test_torchrec_itself_reports_the_same_keys_and_values(config, tmp_path):
    if not TORCHREC_PYTHON.exists():
        pytest.skip(
            f"TorchRec's parity virtual environment {TORCHREC_PYTHON} is absent (see benchmarks/compare_torchrec.py)"
        )
    steps = make_steps(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(steps, tmp_path / "steps.pt")
    result = subprocess.run(
        [str(TORCHREC_PYTHON), str(SIDE), str(tmp_path / "config.json"), str(tmp_path / "steps.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    values = ours(config, steps)
    assert sorted(values) == sorted(theirs["keys"])
    for key, value in values.items():
        if not key.endswith(NOT_COMPARED):
            np.testing.assert_allclose(value.item(), theirs["values"][key], rtol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------- DDP


def _ddp_run(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    steps = make_steps(MULTI_CONFIG, num_steps=5)
    return ours(MULTI_CONFIG, steps[rank::world_size])  # uneven: 3 steps on rank 0, 2 on rank 1


@pytest.mark.ddp
def test_ddp_equals_one_process(ddp_pool):
    """Two gloo ranks, window-only AUC included (its lifetime is dropped on every rank)."""
    expected = ours(MULTI_CONFIG, make_steps(MULTI_CONFIG, num_steps=5))
    for values in ddp_pool.run(_ddp_run):
        assert sorted(values) == EXPECTED_MULTI_KEYS
        for key, value in expected.items():
            if "throughput" not in key:
                torch.testing.assert_close(values[key], value, rtol=1e-9, atol=1e-12, equal_nan=True, msg=key)


def _ceil_share_run(rank: int, world_size: int) -> list[float]:
    config = {"rec_tasks": TASKS[:1], "rec_metrics": {"ctr": {"rec_task_indices": [0], "window_size": 5}}}
    torchrec = tmx.RecMetricModule.from_torchrec_config(config)
    ours_ = tmx.RecMetricModule([tmx.RecTaskInfo(**TASKS[0])], {"ctr": "ctr"}, window_size=5, throughput=False)
    for label in ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0])[rank]:  # one sample per step
        step = {"click_pred": torch.tensor([0.5]), "click_label": torch.tensor([label]), "w": torch.ones(1)}
        torchrec.update(step)
        ours_.update(step)
    return [torchrec.compute()["ctr-click|window_ctr"].item(), ours_.compute()["ctr/click/window"].item()]


@pytest.mark.ddp
def test_ddp_window_share_is_torchrecs_ceil_and_ours_floor(ddp_pool):
    """Window 5 on 2 ranks: TorchRec keeps ceil(5 / 2) = 3 samples per rank (rec_metric.py), our contract 5 // 2 = 2."""
    labels = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # per rank, oldest first
    torchrec_rule, our_rule = labels[:, -3:].mean(), labels[:, -2:].mean()  # 0.5 and 0.25
    for values in ddp_pool.run(_ceil_share_run):
        assert values == [torchrec_rule, our_rule]


def test_a_window_only_compute_group_gives_no_leader_reset_warning():
    """TorchRec's AUC (window only) shares its exact states with AUPRC's window: the module drops the group's
    lifetime samples after every step (a reset of the leader's lifetime, its own bookkeeping). That reset was
    taken for one of the leader alone and every ``compute`` warned that it cleared ``auprc_window``'s states."""
    config = {
        "rec_tasks": TASKS[:1],
        "rec_metrics": {name: {"rec_task_indices": [0], "window_size": WINDOW} for name in ("auc", "auprc")},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    assert ["auc", "auprc_window"] in module.compute_groups
    steps = make_steps(config, num_steps=4, batch=50, seed=5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for i, step in enumerate(steps):
            module.update(step)
            values = module.compute()
            seen = steps[: i + 1]  # 50 rows a step: all within the window
            p, y, w = (_column(seen, TASKS[0][k]) for k in ("prediction_name", "label_name", "weight_name"))
            np.testing.assert_allclose(
                values["auc-click|window_auc"].item(), roc_auc_score(y, p, sample_weight=w), rtol=1e-9
            )
    assert not [str(r.message) for r in record if "reset on its own" in str(r.message)]


@pytest.mark.parametrize(
    ("bounds", "warns"),
    [
        ({}, False),
        ({"min_compute_interval": 0.0, "max_compute_interval": math.inf}, False),
        ({"min_compute_interval": 60.0}, True),
        ({"max_compute_interval": 300.0}, True),
        ({"min_compute_interval": 30.0, "max_compute_interval": 90.0}, True),
    ],
)
def test_compute_interval_bounds_in_seconds_are_warned_of_as_not_applied(bounds, warns):
    """TorchRec's RecMetricModule, given min/max_compute_interval (seconds), changes compute_interval_steps at run
    time so that the time between computes falls within them (once, from its first two computes); the module took the fields without a word and kept
    the config's steps, so a migrated job logged at another cadence. Now it warns, at the user's call, and still
    keeps the steps (should_compute() fires every compute_interval_steps updates)."""
    config = {
        "rec_tasks": [{"name": "click", "label_name": "y", "prediction_name": "p", "weight_name": "w"}],
        "rec_metrics": {"ctr": {"rec_task_indices": [0], "window_size": 100}},
        "compute_interval_steps": 3,
        **bounds,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = tmx.RecMetricModule.from_torchrec_config(config)
    ours = [w for w in caught if "compute_interval" in str(w.message)]
    assert len(ours) == int(warns)
    if warns:
        assert "not applied" in str(ours[0].message)
        assert "compute_interval_steps=3" in str(ours[0].message)
        assert ours[0].filename == __file__
    step = {"p": torch.tensor([0.2, 0.7]), "y": torch.tensor([0.0, 1.0]), "w": torch.tensor([1.0, 1.0])}
    fired = []
    for _ in range(7):
        module.update(step)
        fired.append(module.should_compute())
    assert fired == [False, False, True, False, False, True, False]


# a migrated production config: three tasks, a weight column each, fused tasks, validated steps, one window
_PROD_TASKS = ["click", "like", "share"]
_PROD_WINDOW = 47  # ceil(47 / 2) = 24 samples per rank (TorchRec), 47 // 2 = 23 (the plain constructor)
_PROD_BATCH = (8, 4)  # rows per step on rank 0 and rank 1
_PROD_STEPS = 12
_PROD_ZERO_STEP = 10  # rank 1's weights are all zero here, for every task: a validated step TorchRec skips
_PROD_CONFIG: dict[str, Any] = {
    "rec_tasks": [
        {"name": t, "label_name": f"{t}_y", "prediction_name": f"{t}_p", "weight_name": f"{t}_w"} for t in _PROD_TASKS
    ],
    "rec_metrics": {
        name: {"rec_task_indices": [0, 1, 2], "window_size": _PROD_WINDOW, **extra}
        for name, extra in [
            ("ne", {"arguments": {"include_logloss": True}}),
            ("calibration", {}),
            ("ctr", {}),
            ("auc", {}),
        ]
    },
    "throughput_metric": None,
    "compute_interval_steps": 4,
    "should_validate_update": True,
    "rec_compute_mode": "FUSED_TASKS_COMPUTATION",
}


def _prod_steps(rank: int) -> list[dict[str, torch.Tensor]]:
    g = np.random.default_rng(1234 + rank)
    steps = []
    for i in range(_PROD_STEPS):
        step = {}
        for j, t in enumerate(_PROD_TASKS):
            p = g.uniform(0.05, 0.95, _PROD_BATCH[rank])
            step[f"{t}_p"] = torch.tensor(p)
            step[f"{t}_y"] = torch.tensor((g.uniform(size=p.size) < p * (0.6 + 0.2 * j)).astype(np.float64))
            w = g.choice([0.0, 0.5, 1.0, 3.0], size=p.size)
            step[f"{t}_w"] = torch.tensor(np.zeros_like(w) if (rank, i) == (1, _PROD_ZERO_STEP) else w)
        steps.append(step)
    return steps


def _prod_run(rank: int, world_size: int) -> tuple[dict[str, float], dict[str, float]]:
    module = tmx.RecMetricModule.from_torchrec_config(_PROD_CONFIG)
    computed = []
    for step in _prod_steps(rank):
        module.update(step)
        if module.should_compute():
            computed.append({k: v.item() for k, v in module.compute().items()})
    assert len(computed) == _PROD_STEPS // 4
    return computed[-1], {k: v.item() for k, v in module.local_compute().items()}


def _prod_reference(steps: list[dict[str, torch.Tensor]], task: str) -> dict[str, float]:
    """NE, log loss (bits), calibration, CTR and AUC over ``steps`` with numpy and scikit-learn."""
    p, y, w = (np.concatenate([s[f"{task}_{c}"].numpy() for s in steps]) for c in "pyw")
    ce_bits = -(y * np.log2(p) + (1 - y) * np.log2(1 - p))
    ctr = (w * y).sum() / w.sum()
    entropy_bits = -(ctr * np.log2(ctr) + (1 - ctr) * np.log2(1 - ctr))
    kept = w > 0
    return {
        "ne": (w * ce_bits).sum() / w.sum() / entropy_bits,
        "logloss": (w * ce_bits).sum() / w.sum(),
        "calibration": (w * p).sum() / (w * y).sum(),
        "ctr": ctr,
        "auc": roc_auc_score(y[kept], p[kept], sample_weight=w[kept]),
    }


@pytest.mark.ddp
def test_a_migrated_production_config_under_ddp_equals_numpy_over_torchrecs_windows(ddp_pool):
    """Three tasks with their own weight columns, fused and validated, ranks with batches of 8 and 4 rows: every
    lifetime and window value on every rank equals numpy/scikit-learn over the samples TorchRec's rules keep: per
    rank the newest whole updates within ceil(47 / 2) = 24 samples (3 of rank 0's, 6 of rank 1's; 47 // 2 would keep
    2 and 5), rank 1's all-zero-weight step skipped (it takes no room), the AUC's window too (24 being a multiple of
    both batch sizes, its sample cut is at an update's edge). local_compute() gives each rank's own values under
    TorchRec's `local_` keys (`ne-click|local_lifetime_ne`); it used the synced values' keys, so a dict holding both
    (`{**module.compute(), **module.local_compute()}`) showed a rank's values under the global keys."""
    share = -(-_PROD_WINDOW // 2)
    every = [_prod_steps(rank) for rank in range(2)]
    kept = [[s for i, s in enumerate(steps) if (rank, i) != (1, _PROD_ZERO_STEP)] for rank, steps in enumerate(every)]
    window = [s for rank in range(2) for s in kept[rank][-(share // _PROD_BATCH[rank]) :]]
    for rank, (values, local) in enumerate(ddp_pool.run(_prod_run)):
        assert len(values) == 3 * 9  # ne, logloss, calibration, ctr: lifetime and window; auc: window only
        # local_compute(): this rank's samples, under TorchRec's `local_` keys (never the synced values' keys)
        assert sorted(local) == sorted("|local_".join(key.rsplit("|", 1)) for key in values)
        local_window = kept[rank][-(share // _PROD_BATCH[rank]) :]
        for task in _PROD_TASKS:
            lifetime, recent = _prod_reference(every[0] + every[1], task), _prod_reference(window, task)
            mine, mine_recent = _prod_reference(every[rank], task), _prod_reference(local_window, task)
            for metric, names in [("ne", ("ne", "logloss")), ("calibration", ("calibration",)), ("ctr", ("ctr",))]:
                for name in names:
                    np.testing.assert_allclose(values[f"{metric}-{task}|lifetime_{name}"], lifetime[name], rtol=1e-12)
                    np.testing.assert_allclose(values[f"{metric}-{task}|window_{name}"], recent[name], rtol=1e-12)
                    np.testing.assert_allclose(local[f"{metric}-{task}|local_lifetime_{name}"], mine[name], rtol=1e-12)
                    np.testing.assert_allclose(
                        local[f"{metric}-{task}|local_window_{name}"], mine_recent[name], rtol=1e-12
                    )
            np.testing.assert_allclose(values[f"auc-{task}|window_auc"], recent["auc"], rtol=1e-12)
            np.testing.assert_allclose(local[f"auc-{task}|local_window_auc"], mine_recent["auc"], rtol=1e-12)


def test_local_compute_keys_carry_torchrecs_local_scope():
    """TorchRec's RecMetric.local_compute() names its keys `{namespace}-{task}|local_{lifetime_|window_}{name}`
    (rec_metric.py: the compute scope "local_" before the metric prefix); ours gave local values the keys of the
    synced ones (`ne-click|lifetime_ne`), so logging both, as a TorchRec job debugging one rank does, overwrote the
    global value with this rank's without a word. Every key of the module's local_compute() now has the scope
    (the bare serving count, the throughput and state metrics too), in one process with compute()'s values."""
    config = {
        "rec_tasks": TASKS[:2],
        "rec_metrics": {
            "ne": {"rec_task_indices": [0, 1], "window_size": 100, "arguments": {"include_logloss": True}},
            "auc": {"rec_task_indices": [0], "window_size": 100},
            "serving_ne": {"rec_task_indices": [1], "window_size": 100},
        },
        "throughput_metric": {"window_size": 100, "warmup_steps": 1},
        "state_metrics": ["optimizers"],
    }
    module = tmx.RecMetricModule.from_torchrec_config(config, state_metrics_mapping={"optimizers": Optimizers()})
    steps = make_steps(config, num_steps=3)
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synced, local = module.compute(), module.local_compute()
    expected = {
        "ne-click|local_lifetime_ne",
        "ne-click|local_window_ne",
        "ne-click|local_lifetime_logloss",
        "auc-click|local_window_auc",
        "serving_ne-buy|local_total_examples",
        "throughput-throughput|local_total_examples",
        "optimizers-optimizers|local_lr",
    }
    assert expected <= set(local)
    assert sorted(local) == sorted("|local_".join(key.rsplit("|", 1)) for key in synced)
    assert not set(local) & set(synced)
    for key, value in synced.items():
        if "throughput" not in key:
            torch.testing.assert_close(local["|local_".join(key.rsplit("|", 1))], value, equal_nan=True, msg=key)
    w, y, p = (torch.cat([s[c] for s in steps]).double().numpy() for c in ("w", "click_label", "click_pred"))
    ce = -(y * np.log2(p) + (1 - y) * np.log2(1 - p))
    base = (w * y).sum() / w.sum()
    ne = (w * ce).sum() / w.sum() / -(base * np.log2(base) + (1 - base) * np.log2(1 - base))
    np.testing.assert_allclose(local["ne-click|local_lifetime_ne"].item(), ne, rtol=1e-9)
    assert local["throughput-throughput|local_total_examples"].item() == sum(len(s["w"]) for s in steps)


# an ads model's conversion task, trained on clicked rows only: its weight column is the click label
CVR_TASKS = [
    {"name": "ctr", "label_name": "click", "prediction_name": "click_pred", "weight_name": "w"},
    {"name": "cvr", "label_name": "conv", "prediction_name": "conv_pred", "weight_name": "click"},
]


def _cvr_steps(num_steps: int, batch: int, no_click: list[int], seed: int = 5) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    steps = []
    for i in range(num_steps):
        click = torch.tensor([1.0, 0.0] * (batch // 2)) if i not in no_click else torch.zeros(batch)
        conv = click * torch.tensor([1.0, 1.0, 0.0, 0.0] * (batch // 4))  # both classes on clicked rows
        steps.append(
            {
                "click": click,
                "click_pred": torch.rand(batch, generator=g).clamp(0.01, 0.99),
                "w": torch.rand(batch, generator=g) + 0.5,
                "conv": conv,
                "conv_pred": torch.rand(batch, generator=g).clamp(0.01, 0.99),
            }
        )
    return steps


def test_a_metric_of_a_task_weighted_by_clicks_skips_a_step_without_clicks_and_warns_once():
    """A cvr task weighted by the click label: a step without a click has cvr weights all zero while ctr's are
    not. TorchRec (should_validate_update=False, its default) gives the step its room in every window; here a
    metric reading only cvr gives it none (a step of zero weight changes nothing) and a metric reading ctr too
    keeps it, so the cvr-only windows differ from TorchRec's: the module says so once, naming the metrics."""
    window, batch = 12, 4
    config = {
        "rec_tasks": CVR_TASKS,
        "rec_metrics": {
            "ne": {"rec_task_indices": [0, 1], "window_size": window},
            "calibration": {"rec_task_indices": [1], "window_size": window},
            "ctr": {"rec_task_indices": [1], "window_size": window},
        },
    }
    no_click = [6, 8]
    steps = _cvr_steps(9, batch, no_click)
    module = tmx.RecMetricModule.from_torchrec_config(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in steps:
            module.update(step)
    notes = [str(w.message) for w in caught if "TorchRec" in str(w.message)]
    assert len(notes) == 1, notes  # once per module, at the first such step
    assert "task(s) ['cvr']" in notes[0] and "windows of ['calibration', 'ctr']" in notes[0]
    assert "['ne'], which read a task with weight too, keep the step" in notes[0]
    assert caught[0].filename == __file__  # pointed at the caller's update
    values = run(module, [])

    def column(kept: list, name: str) -> np.ndarray:
        return torch.cat([s[name] for s in kept]).double().numpy()

    torchrec_window = steps[-3:]  # TorchRec: the newest 12 samples, the step without clicks among them
    ours_window = [s for i, s in enumerate(steps) if i not in no_click][-3:]  # steps 4, 5 and 7
    for kept, key in ((torchrec_window, "ne-cvr|window_ne"), (steps, "ne-cvr|lifetime_ne")):
        y, p, w = column(kept, "conv"), column(kept, "conv_pred"), column(kept, "click")
        rate = np.average(y, weights=w)
        expected = log_loss(y, p, sample_weight=w) / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        np.testing.assert_allclose(values[key], expected, rtol=1e-9)
    for kept, part in ((ours_window, "window"), (steps, "lifetime")):
        y, p, w = column(kept, "conv"), column(kept, "conv_pred"), column(kept, "click")
        np.testing.assert_allclose(values[f"calibration-cvr|{part}_calibration"], (w * p).sum() / (w * y).sum())
        np.testing.assert_allclose(values[f"ctr-cvr|{part}_ctr"], np.average(y, weights=w), rtol=1e-9)
    y, p, w = column(torchrec_window, "conv"), column(torchrec_window, "conv_pred"), column(torchrec_window, "click")
    theirs = (w * p).sum() / (w * y).sum()
    assert abs(values["calibration-cvr|window_calibration"].item() - theirs) > 1e-3  # TorchRec's differs here


def test_no_note_where_torchrec_skips_the_step_too_or_no_metric_skips_it():
    """With one weight column and should_validate_update=True both skip such a step (no note); a metric that
    reads both tasks keeps a step where only cvr weighs nothing, as TorchRec does (no note)."""
    window, batch = 12, 4
    both = {"rec_tasks": CVR_TASKS, "rec_metrics": {"ctr": {"rec_task_indices": [0, 1], "window_size": window}}}
    shared = {
        "rec_tasks": [dict(t, weight_name="w") for t in CVR_TASKS],
        "rec_metrics": {"ctr": {"rec_task_indices": [1], "window_size": window}},
        "should_validate_update": True,
    }
    for config in (both, shared):
        steps = _cvr_steps(5, batch, no_click=[2])
        if config is shared:
            steps[2]["w"] = torch.zeros(batch)
        module = tmx.RecMetricModule.from_torchrec_config(config)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in steps:
                module.update(step)


def test_should_validate_update_refusal_says_which_windows_skip_zero_weight_steps_without_it():
    """The refusal used to say that without the option every zero-weight step takes its room, as in TorchRec:
    a metric whose every task weighs nothing in a step still gives it none."""
    config = {
        "rec_tasks": CVR_TASKS,
        "rec_metrics": {"ctr": {"rec_task_indices": [0, 1], "window_size": 12}},
        "should_validate_update": True,
    }
    with pytest.raises(ValueError, match="should_validate_update") as info:
        tmx.RecMetricModule.from_torchrec_config(config)
    assert "as in TorchRec without it" not in str(info.value)
    assert "every task it reads" in str(info.value)


@pytest.mark.parametrize(
    "mode", ["UNFUSED_TASKS_COMPUTATION", "FUSED_TASKS_COMPUTATION", "FUSED_TASKS_AND_STATES_COMPUTATION"]
)
def test_ads_model_of_three_tasks_over_a_stream_longer_than_the_window(mode):
    """ctr, cvr weighted by clicks, a watch-time regression head; 20 steps of 32 rows, window 100 (not a multiple of
    the batch): every compute mode gives the same keys and numbers, TorchRec's lifetime values (numpy over every
    row) and window values (its WindowBuffer keeps the newest whole steps whose sizes add up to at most 100: 3 steps),
    and should_compute() fires every compute_interval_steps updates."""
    g = np.random.default_rng(0)
    steps = []
    for _ in range(20):
        click = g.integers(0, 2, 32).astype(np.float64)
        conv = click * g.integers(0, 2, 32)
        wt = g.exponential(30.0, 32)
        steps.append(
            {
                "click": click,
                "click_pred": np.clip(0.3 + 0.4 * click + g.normal(0, 0.15, 32), 0.01, 0.99),
                "w": g.uniform(0.5, 2.0, 32),
                "conv": conv,
                "conv_pred": np.clip(0.2 + 0.5 * conv + g.normal(0, 0.1, 32), 0.01, 0.99),
                "wt": wt,
                "wt_pred": wt + g.normal(0, 5.0, 32),
            }
        )
    tasks = [*CVR_TASKS, {"name": "watch", "label_name": "wt", "prediction_name": "wt_pred", "weight_name": "w"}]
    binary = {"rec_task_indices": [0, 1], "window_size": 100}
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {
            "ne": {**binary, "arguments": {"include_logloss": True}},
            "calibration": binary,
            "ctr": binary,
            "mse": {"rec_task_indices": [2], "window_size": 100, "arguments": {"include_r_squared": True}},
        },
        "compute_interval_steps": 5,
        "rec_compute_mode": mode,
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    fired = []
    for step in steps:
        module.update({k: torch.from_numpy(v) for k, v in step.items()})
        fired.append(module.should_compute())
    assert [i + 1 for i, f in enumerate(fired) if f] == [5, 10, 15, 20]
    values = {k: v.item() for k, v in module.compute().items()}
    expected: dict[str, float] = {}
    for part, kept in (("lifetime", steps), ("window", steps[-3:])):
        col = {k: np.concatenate([s[k] for s in kept]) for k in kept[0]}
        for name, y, p, w in (
            ("ctr", col["click"], col["click_pred"], col["w"]),
            ("cvr", col["conv"], col["conv_pred"], col["click"]),
        ):
            rate = np.average(y, weights=w)
            ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()
            expected[f"ne-{name}|{part}_ne"] = ce / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
            expected[f"ne-{name}|{part}_logloss"] = ce / math.log(2)
            expected[f"calibration-{name}|{part}_calibration"] = (w * p).sum() / (w * y).sum()
            expected[f"ctr-{name}|{part}_ctr"] = rate
        y, p, w = col["wt"], col["wt_pred"], col["w"]
        mse = np.average((p - y) ** 2, weights=w)
        expected[f"mse-watch|{part}_mse"] = mse
        expected[f"mse-watch|{part}_rmse"] = math.sqrt(mse)
        expected[f"mse-watch|{part}_r_squared"] = 1 - mse / np.average((y - np.average(y, weights=w)) ** 2, weights=w)
    assert sorted(values) == sorted(expected)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-9), key
