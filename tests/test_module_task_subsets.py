"""``RecMetricModule(metric_tasks=...)``: a metric reads some of the tasks (a regression head next to binary ones).

A module of two binary tasks (click, conversion: probabilities and 0/1 labels) and a regression task
(watch_time: values and labels in seconds): NE, AUC and calibration read the binary tasks, MSE and
R² the regression one. Every value is checked against references written here (scikit-learn's
``log_loss``, ``roc_auc_score``, ``mean_squared_error`` and ``r2_score`` with ``sample_weight``, numpy
sums for calibration), lifetime and window, after a ``state_dict`` round trip, under 2-process gloo
DDP, and built from ``from_config`` and ``from_torchrec_config``. Each task is checked against the
domain of the metrics that read it; bad ``metric_tasks`` are refused before anything is built.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, mean_squared_error, r2_score, roc_auc_score

import torchmetrics_ext as tmx

TASKS = [
    tmx.RecTaskInfo("click", label_name="click_label", prediction_name="click_pred", weight_name="w"),
    tmx.RecTaskInfo("watch_time", label_name="wt_label", prediction_name="wt_pred", weight_name="w"),
    tmx.RecTaskInfo("conversion", label_name="conv_label", prediction_name="conv_pred", weight_name="w"),
]
BINARY = ["click", "conversion"]
METRICS = ["ne", "auc", "calibration", "mse", "r_squared"]
# conversion listed before click: the keys follow the module's task order all the same
SUBSETS = {
    "ne": BINARY,
    "auc": ["conversion", "click"],
    "calibration": BINARY,
    "mse": ["watch_time"],
    "r_squared": ["watch_time"],
}
COLUMNS = {
    "click": ("click_pred", "click_label"),
    "watch_time": ("wt_pred", "wt_label"),
    "conversion": ("conv_pred", "conv_label"),
}


def _steps(seed: int, count: int = 4, n: int = 25) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(count):
        steps.append(
            {
                "click_pred": torch.rand(n, generator=g) * 0.9 + 0.05,
                "click_label": torch.randint(0, 2, (n,), generator=g),
                "conv_pred": (torch.rand(n, generator=g) * 0.9 + 0.05).double(),
                "conv_label": torch.randint(0, 2, (n,), generator=g).bool(),
                "wt_pred": torch.rand(n, generator=g) * 300.0,  # seconds
                "wt_label": (torch.rand(n, generator=g) * 600.0).round(),  # whole seconds, far outside [0, 1]
                "w": torch.randint(1, 4, (n,), generator=g).float(),
            }
        )
    return steps


def _joined(steps: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    return {key: torch.cat([s[key] for s in steps]).double().numpy() for key in steps[0]}


def _reference(data: dict[str, np.ndarray]) -> dict[str, float]:
    """The module's keys, computed here from the concatenated columns."""
    w = data["w"]
    out: dict[str, float] = {}
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        rate = np.sum(w * y) / np.sum(w)
        entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        out[f"ne/{task}"] = log_loss(y, p, sample_weight=w) / entropy
        out[f"auc/{task}"] = roc_auc_score(y, p, sample_weight=w)
        out[f"calibration/{task}"] = np.sum(w * p) / np.sum(w * y)
    p, y = (data[c] for c in COLUMNS["watch_time"])
    out["mse/watch_time"] = mean_squared_error(y, p, sample_weight=w)
    out["r_squared/watch_time"] = r2_score(y, p, sample_weight=w)
    return out


def _module(**kwargs: Any) -> tmx.RecMetricModule:
    return tmx.RecMetricModule(TASKS, METRICS, throughput=False, metric_tasks=SUBSETS, **kwargs)


def _feed(module: tmx.RecMetricModule, steps: list[dict[str, torch.Tensor]]) -> tmx.RecMetricModule:
    for step in steps:
        module.update(step)
    return module


def _floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()}


def _expected_keys(window: bool) -> list[str]:
    keys = []
    for metric in METRICS:
        for task in [t.name for t in TASKS if t.name in SUBSETS[metric]]:
            keys.append(f"{metric}/{task}")
            if window:
                keys.append(f"{metric}/{task}/window")
    return keys


def test_lifetime_and_window_values_equal_sklearn_and_numpy_references() -> None:
    steps = _steps(0)
    module = _feed(_module(window_size=50), steps)  # two steps of 25: the window is the last two
    values = _floats(module.compute())
    assert list(values) == _expected_keys(window=True)
    lifetime = _reference(_joined(steps))
    window = _reference(_joined(steps[-2:]))
    for key, expected in lifetime.items():
        assert values[key] == pytest.approx(expected, rel=1e-9), key
        assert values[f"{key}/window"] == pytest.approx(window[key], rel=1e-9), key
    # the subsets are built for their own tasks, and metrics of other subsets share no compute group
    assert module.metrics["ne"].lifetime.num_tasks == 2
    assert module.metrics["mse"].lifetime.num_tasks == 1
    assert module.compute_groups == [["ne"], ["auc"], ["calibration"], ["mse", "r_squared"]]


def test_default_is_every_task_and_naming_every_task_is_the_same() -> None:
    tasks = TASKS[::2]  # the binary tasks alone: every metric of the package can read them
    steps = _steps(1)
    binary_steps = [{k: v for k, v in s.items() if not k.startswith("wt_")} for s in steps]
    plain = _feed(tmx.RecMetricModule(tasks, ["ne", "auc"], throughput=False, window_size=30), binary_steps)
    named = tmx.RecMetricModule(
        tasks, ["ne", "auc"], throughput=False, window_size=30, metric_tasks={"ne": ["conversion", "click"]}
    )
    _feed(named, binary_steps)
    assert _floats(plain.compute()) == _floats(named.compute())
    assert "metric_tasks" not in named.get_extra_state()  # a metric naming every task reads every task


def test_regression_head_is_refused_without_metric_tasks_and_named() -> None:
    module = tmx.RecMetricModule(TASKS, ["ne", "mse"], throughput=False)
    with pytest.raises(
        ValueError, match=r"Task 'watch_time', `model_out\['wt_pred'\]`: Expected `preds` to be probabilities"
    ):
        module.update(_steps(2)[0])


def test_a_subset_whose_domain_is_violated_is_refused_naming_the_task_and_nothing_changes() -> None:
    steps = _steps(3)
    module = _feed(_module(window_size=50), steps[:2])
    before = _floats(module.compute())
    bad = dict(steps[2])
    bad["conv_label"] = torch.full((25,), 2.0)  # AUC and NE read conversion: labels must be 0 or 1
    with pytest.raises(ValueError, match=r"Task 'conversion', `model_out\['conv_label'\]`"):
        module.update(bad)
    bad = dict(steps[2])
    bad["wt_pred"] = torch.full((25,), math.nan)  # MSE reads watch_time: finite values
    with pytest.raises(ValueError, match=r"Task 'watch_time', `model_out\['wt_pred'\]`"):
        module.update(bad)
    assert _floats(module.compute()) == before
    assert module._step == 2


def test_state_dict_round_trip_into_a_fresh_module_resumes() -> None:
    steps = _steps(4, count=5)
    module = _feed(_module(window_size=50), steps[:3])
    state = copy.deepcopy(module.state_dict())
    assert state["_extra_state"]["metric_tasks"] == {
        "ne": BINARY,
        "auc": BINARY,
        "calibration": BINARY,
        "mse": ["watch_time"],
        "r_squared": ["watch_time"],
    }
    resumed = _module(window_size=50)
    resumed.load_state_dict(state)
    assert _floats(resumed.compute()) == _floats(module.compute())
    _feed(resumed, steps[3:])
    values = _floats(resumed.compute())
    lifetime, window = _reference(_joined(steps)), _reference(_joined(steps[-2:]))
    for key, expected in lifetime.items():
        assert values[key] == pytest.approx(expected, rel=1e-9), key
        assert values[f"{key}/window"] == pytest.approx(window[key], rel=1e-9), key
    # a module whose metrics read other tasks (same shapes) refuses it: it would resume another task's values
    other = dict(SUBSETS, mse=["click"])
    elsewhere = tmx.RecMetricModule(TASKS, METRICS, throughput=False, window_size=50, metric_tasks=other)
    with pytest.raises(RuntimeError, match="metric_tasks mismatch"):
        elsewhere.load_state_dict(state)
    plain = tmx.RecMetricModule(TASKS[::2], ["ne"], throughput=False)
    with pytest.raises(RuntimeError, match="task mismatch"):
        plain.load_state_dict(state, strict=False)


def test_a_metric_added_since_the_checkpoint_starts_afresh_with_strict_false() -> None:
    """A module with ``metric_tasks`` (every ``from_torchrec_config`` one of tasks of several kinds) given one metric
    more than its checkpoint: with ``strict=False`` the saved metrics resume and the new one starts afresh, as
    without ``metric_tasks`` (it used to be refused as a "metric_tasks mismatch", the new metric's tasks compared
    with a checkpoint that has no such metric); a metric saved with other tasks is still refused."""
    steps = _steps(12)
    saved = _feed(_module(), steps[:2]).state_dict()
    grown = tmx.RecMetricModule(
        TASKS, [*METRICS, "ctr"], throughput=False, metric_tasks={**SUBSETS, "ctr": ["conversion"]}
    )
    result = grown.load_state_dict(saved, strict=False)
    assert sorted(result.missing_keys) == sorted(k for k in grown.state_dict() if k.startswith("metrics.ctr."))
    assert not result.unexpected_keys
    _feed(grown, steps[2:])
    values = _floats(grown.compute())
    lifetime = _reference(_joined(steps))
    for key, expected in lifetime.items():
        assert values[key] == pytest.approx(expected, rel=1e-9), key
    y = _joined(steps[2:])[COLUMNS["conversion"][1]]
    w = _joined(steps[2:])["w"]
    assert values["ctr/conversion"] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-9)  # from the resume on
    # one saved metric reading other tasks: refused as before, nothing loaded
    moved = tmx.RecMetricModule(
        TASKS, [*METRICS, "ctr"], throughput=False, metric_tasks={**SUBSETS, "ctr": ["conversion"], "mse": ["click"]}
    )
    with pytest.raises(RuntimeError, match=r"metric_tasks mismatch.*'mse'"):
        moved.load_state_dict(saved, strict=False)
    # a saved metric that read every task, now some: refused too
    every = _feed(tmx.RecMetricModule(TASKS[:1] + TASKS[2:], ["ne"], throughput=False), steps[:1]).state_dict()
    some = tmx.RecMetricModule(TASKS[:1] + TASKS[2:], ["ne", "ctr"], throughput=False, metric_tasks={"ne": ["click"]})
    with pytest.raises(RuntimeError, match=r"metric_tasks mismatch.*'ne'"):
        some.load_state_dict(every, strict=False)


def test_reset_and_clone_keep_the_subsets() -> None:
    steps = _steps(5)
    module = _feed(_module(), steps[:2])
    clone = module.clone(prefix="val/")
    module.reset()
    _feed(module, steps[2:])
    expected = _reference(_joined(steps[2:]))
    values = _floats(module.compute())
    assert list(values) == _expected_keys(window=False)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-9), key
    cloned = _floats(clone.compute())
    assert list(cloned) == ["val/" + key for key in _expected_keys(window=False)]
    for key, value in _reference(_joined(steps[:2])).items():
        assert cloned["val/" + key] == pytest.approx(value, rel=1e-9), key


def test_logits_of_the_binary_heads_leave_the_regression_values_as_they_are() -> None:
    steps = _steps(6, count=2)
    logit_steps = []
    for step in steps:
        step = dict(step)
        for task in BINARY:
            column = COLUMNS[task][0]
            step[column] = torch.logit(step[column].double())
        logit_steps.append(step)
    metrics = {"ne": {"from_logits": True}, "mse": "mse"}
    module = tmx.RecMetricModule(TASKS, metrics, throughput=False, metric_tasks={"ne": BINARY, "mse": ["watch_time"]})
    values = _floats(_feed(module, logit_steps).compute())
    expected = _reference(_joined(steps))
    assert values["mse/watch_time"] == pytest.approx(expected["mse/watch_time"], rel=1e-9)
    for task in BINARY:
        assert values[f"ne/{task}"] == pytest.approx(expected[f"ne/{task}"], rel=1e-9)


def test_segmented_ne_and_grouped_auc_read_their_subset() -> None:
    tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", group_id_name="user") for t in TASKS]
    steps = _steps(7)
    g = torch.Generator().manual_seed(70)
    for step in steps:
        step["user"] = torch.randint(0, 3, (25,), generator=g)
    metrics = {"gauc": "gauc", "sne": {"metric": "segmented_ne", "num_segments": 3}, "mse": "mse"}
    module = tmx.RecMetricModule(
        tasks,
        metrics,
        throughput=False,
        window_size=50,
        metric_tasks={"gauc": BINARY, "sne": BINARY, "mse": ["watch_time"]},
    )
    values = _floats(_feed(module, steps).compute())
    data = _joined(steps)
    w, users = data["w"], data["user"]
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        for user in range(3):
            rows = users == user
            rate = np.sum(w[rows] * y[rows]) / np.sum(w[rows])
            entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
            expected = log_loss(y[rows], p[rows], sample_weight=w[rows], labels=[0, 1]) / entropy
            assert values[f"sne.{user}/{task}"] == pytest.approx(expected, rel=1e-9)
        # GroupedAUC of the subset: sklearn per user, averaged as docs/auc.md defines it (float32 scores kept)
        expected = _grouped_auc(y, p.astype(np.float32).astype(np.float64), w, users)
        assert values[f"gauc/{task}"] == pytest.approx(expected, rel=1e-6)
        assert f"gauc/{task}/window" in values
    assert not any("watch_time" in key for key in values if not key.startswith("mse"))


def test_gauc_of_a_subset_equals_a_module_of_those_tasks() -> None:
    tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", group_id_name="user") for t in TASKS]
    steps = _steps(8)
    g = torch.Generator().manual_seed(80)
    for step in steps:
        step["user"] = torch.randint(0, 4, (25,), generator=g)
    module = tmx.RecMetricModule(
        tasks, {"gauc": "gauc", "mse": "mse"}, throughput=False, metric_tasks={"gauc": BINARY, "mse": ["watch_time"]}
    )
    alone = tmx.RecMetricModule([tasks[0], tasks[2]], {"gauc": "gauc"}, throughput=False)
    for step in steps:
        module.update(step)
        alone.update({k: v for k, v in step.items() if not k.startswith("wt_")})
    values, expected = _floats(module.compute()), _floats(alone.compute())
    assert {k: v for k, v in values.items() if k.startswith("gauc")} == expected


def test_ranking_metric_reads_its_tasks_one_copy_each() -> None:
    from tests.helpers.ranking_reference import group_rows, reference_values

    tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", session_id_name="q") for t in TASKS]
    metrics = {"ndcg@5": "ndcg@5", "mse": "mse"}
    module = tmx.RecMetricModule(
        tasks, metrics, throughput=False, window_size=50, metric_tasks={"ndcg@5": BINARY, "mse": ["watch_time"]}
    )
    assert len(module.ranking["ndcg@5"]) == 2  # click and conversion (positions 0 and 2), not watch_time
    steps = _steps(15)
    for i, step in enumerate(steps):
        step["q"] = torch.arange(25) // 5 + 10 * i  # five sessions of five rows per step
    values = _floats(_feed(module, steps).compute())
    assert list(values) == [
        "ndcg@5/click",
        "ndcg@5/click/window",
        "ndcg@5/conversion",
        "ndcg@5/conversion/window",
        "mse/watch_time",
        "mse/watch_time/window",
    ]
    data = _joined(steps)
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        (expected,) = reference_values(group_rows(list(data["q"]), p, y, data["w"]), [("ndcg", 5)])
        assert values[f"ndcg@5/{task}"] == pytest.approx(expected, rel=1e-9)
    p, y = (data[c] for c in COLUMNS["watch_time"])
    assert values["mse/watch_time"] == pytest.approx(mean_squared_error(y, p, sample_weight=data["w"]), rel=1e-9)
    resumed = tmx.RecMetricModule(
        tasks, metrics, throughput=False, window_size=50, metric_tasks={"ndcg@5": BINARY, "mse": ["watch_time"]}
    )
    resumed.load_state_dict(module.state_dict())
    assert _floats(resumed.compute()) == values


@pytest.mark.parametrize(
    ("metric_tasks", "match"),
    [
        ({"nee": BINARY}, r"`metric_tasks` names metric 'nee'.*did you mean 'ne'"),
        ({"ne": ["click", "clik"]}, r"`metric_tasks\['ne'\]` names task 'clik'.*did you mean 'click'"),
        ({"ne": []}, r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),
        ({"ne": "click"}, r"`metric_tasks\['ne'\]`: expected a non-empty list of task names, got 'click'"),
        ({"ne": ["click", "click"]}, r"`metric_tasks\['ne'\]` names task 'click' more than once"),
        (["ne"], r"Expected `metric_tasks` to be a dict"),
        ({"ne": BINARY, "auc": BINARY}, r"Task 'watch_time' is read by no metric"),
    ],
)
def test_bad_metric_tasks_are_refused_before_anything_is_built(metric_tasks: Any, match: str) -> None:
    auc = tmx.AUC(num_tasks=2)
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule(TASKS, {"ne": "ne", "auc": auc}, throughput=False, metric_tasks=metric_tasks)
    # the instance was not taken by a module that does not exist: another module can use it
    tmx.RecMetricModule(TASKS, {"ne": "ne", "auc": auc}, throughput=False, metric_tasks={"auc": BINARY})


@pytest.mark.parametrize("kind", ["numpy", "index", "series", "tuple"])
def test_task_lists_as_numpy_arrays_or_pandas_columns_read_as_lists(kind: str) -> None:
    """A list of tasks may be a NumPy array or a pandas ``Index``/``Series`` (as ``tasks`` and ``metrics`` may)."""
    pd = pytest.importorskip("pandas")
    make = {"numpy": np.array, "index": pd.Index, "series": pd.Series, "tuple": tuple}[kind]
    steps = _steps(11)
    module = tmx.RecMetricModule(
        TASKS, METRICS, throughput=False, metric_tasks={name: make(listed) for name, listed in SUBSETS.items()}
    )
    values = _floats(_feed(module, steps).compute())
    assert list(values) == _expected_keys(window=False)  # keys name plain task names
    for key, expected in _reference(_joined(steps)).items():
        assert values[key] == pytest.approx(expected, rel=1e-9), key


@pytest.mark.parametrize(
    ("listed", "match"),
    [
        (np.array([], dtype=str), r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),
        (np.array(["click", "click"]), r"`metric_tasks\['ne'\]` names task 'click' more than once"),
        (np.array(["click", "clik"]), r"`metric_tasks\['ne'\]` names task 'clik'.*did you mean 'click'"),
        (np.array([["click"], ["conversion"]]), r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),
        (np.array("click"), r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),  # one name, 0-D
        ({"click", "conversion"}, r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),
        ([["click"]], r"`metric_tasks\['ne'\]`: expected a non-empty list of task names"),
    ],
)
def test_task_lists_as_arrays_keep_the_refusals(listed: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule(TASKS, METRICS, throughput=False, metric_tasks={**SUBSETS, "ne": listed})


def test_an_instance_built_for_another_number_of_tasks_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Metric 'auc' is built for 3 task\(s\), `metric_tasks` gives it 2"):
        tmx.RecMetricModule(
            TASKS, {"ne": "ne", "auc": tmx.AUC(num_tasks=3)}, throughput=False, metric_tasks={"auc": BINARY}
        )


def test_from_config_takes_metric_tasks() -> None:
    steps = _steps(9)
    config = {
        "tasks": [
            {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": "w"}
            for t in TASKS
        ],
        "metrics": METRICS,
        "metric_tasks": SUBSETS,
        "throughput": False,
        "window_size": 50,
    }
    values = _floats(_feed(tmx.RecMetricModule.from_config(config), steps).compute())
    expected = _reference(_joined(steps))
    assert list(values) == _expected_keys(window=True)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-9), key
    with pytest.raises(ValueError, match=r"`metric_tasks` names metric 'auprc'"):
        tmx.RecMetricModule.from_config(dict(config, metric_tasks={"auprc": BINARY}))


def test_from_torchrec_config_reads_each_metric_s_tasks() -> None:
    steps = _steps(10)
    config = {
        "rec_tasks": [
            {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": "w"}
            for t in TASKS
        ],
        "rec_metrics": {
            "ne": {"rec_task_indices": [0, 2], "window_size": 50},
            "mse": {
                "rec_tasks": [
                    {"name": "watch_time", "label_name": "wt_label", "prediction_name": "wt_pred", "weight_name": "w"}
                ],
                "window_size": 50,
                "arguments": {"include_r_squared": True},
            },
            "auc": {"rec_task_indices": [2], "window_size": 50},
        },
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    values = _floats(_feed(module, steps).compute())
    assert sorted(values) == sorted(
        [
            "ne-click|lifetime_ne",
            "ne-click|window_ne",
            "ne-conversion|lifetime_ne",
            "ne-conversion|window_ne",
            "mse-watch_time|lifetime_mse",
            "mse-watch_time|window_mse",
            "mse-watch_time|lifetime_rmse",
            "mse-watch_time|window_rmse",
            "mse-watch_time|lifetime_r_squared",
            "mse-watch_time|window_r_squared",
            "auc-conversion|window_auc",
        ]
    )
    lifetime, window = _reference(_joined(steps)), _reference(_joined(steps[-2:]))
    for task in BINARY:
        assert values[f"ne-{task}|lifetime_ne"] == pytest.approx(lifetime[f"ne/{task}"], rel=1e-9)
        assert values[f"ne-{task}|window_ne"] == pytest.approx(window[f"ne/{task}"], rel=1e-9)
    assert values["auc-conversion|window_auc"] == pytest.approx(window["auc/conversion"], rel=1e-9)
    assert values["mse-watch_time|lifetime_mse"] == pytest.approx(lifetime["mse/watch_time"], rel=1e-9)
    assert values["mse-watch_time|lifetime_rmse"] == pytest.approx(math.sqrt(lifetime["mse/watch_time"]), rel=1e-9)
    assert values["mse-watch_time|window_r_squared"] == pytest.approx(window["r_squared/watch_time"], rel=1e-9)


# ----------------------------------------------------------------------------- DDP


def _ddp_job(rank: int, world_size: int, seed: int) -> dict[str, float]:
    steps = _steps(seed, count=6)
    mine = steps[rank::world_size][: 3 - rank]  # rank 0: 3 steps, rank 1: 2 (uneven)
    module = _feed(_module(), mine)
    values = _floats(module.compute())
    module.reset()
    return values


@pytest.mark.ddp
def test_two_process_ddp_equals_one_process_over_every_rank_s_steps(ddp_pool: Any) -> None:
    seed = 11
    per_rank = ddp_pool.run(_ddp_job, seed, timeout=240)
    steps = _steps(seed, count=6)
    used = steps[0::2][:3] + steps[1::2][:2]
    one = _floats(_feed(_module(), used).compute())
    expected = _reference(_joined(used))
    for values in per_rank:
        assert list(values) == list(one)
        for key, value in one.items():
            assert values[key] == pytest.approx(value, rel=1e-12), key
            assert values[key] == pytest.approx(expected[key], rel=1e-9), key


def test_keys_name_only_the_tasks_a_metric_reads_in_torchrec_style() -> None:
    module = _module(window_size=50, key_style="torchrec")
    _feed(module, _steps(12, count=1))
    keys = list(module.compute())
    assert all(re.match(r"(ne|auc|calibration)-(click|conversion)\||(mse|r_squared)-watch_time\|", k) for k in keys)
    assert len(keys) == 2 * (3 * 2 + 2)


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
def test_module_keys_are_the_keys_compute_returns(key_style: str) -> None:
    from torchmetrics_ext._module_keys import ModuleKeys

    module = _module(window_size=50, key_style=key_style)
    keys = ModuleKeys(module)  # before any update, as RecMetricCallback's resume reads them
    values = _feed(module, _steps(13, count=1)).compute()
    assert all(key in keys for key in values)
    unread = "mse/click" if key_style == "torchmetrics_ext" else "mse-click|lifetime_mse"
    assert unread not in keys and unread not in values


@pytest.mark.parametrize("validate", [True, False])
def test_own_weight_columns_a_task_without_weights_and_unvalidated_metrics(validate: bool) -> None:
    # click and conversion (positions 0 and 2: rows taken by index_select) weigh by columns of their own,
    # watch_time has no weight column
    tasks = [
        tmx.RecTaskInfo("click", "click_label", "click_pred", weight_name="w_click"),
        tmx.RecTaskInfo("watch_time", "wt_label", "wt_pred", weight_name=None),
        tmx.RecTaskInfo("conversion", "conv_label", "conv_pred", weight_name="w_conv"),
    ]
    options = {"validate_args": False} if not validate else {}
    metrics = {name: dict(options) for name in METRICS}
    module = tmx.RecMetricModule(tasks, metrics, throughput=False, window_size=50, metric_tasks=SUBSETS)
    steps = _steps(14)
    g = torch.Generator().manual_seed(140)
    for step in steps:
        step["w_click"] = torch.rand(25, generator=g) * 2
        step["w_conv"] = torch.randint(0, 3, (25,), generator=g).double()
        step["w"] = torch.full((25,), 7.0)  # read by no task
    values = _floats(_feed(module, steps).compute())
    data = _joined(steps)
    for task, column in (("click", "w_click"), ("conversion", "w_conv")):
        w = data[column]
        p, y = (data[c] for c in COLUMNS[task])
        assert values[f"auc/{task}"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-9)
        assert values[f"calibration/{task}"] == pytest.approx(np.sum(w * p) / np.sum(w * y), rel=1e-9)
        rate = np.sum(w * y) / np.sum(w)
        entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        assert values[f"ne/{task}"] == pytest.approx(log_loss(y, p, sample_weight=w) / entropy, rel=1e-9)
    p, y = (data[c] for c in COLUMNS["watch_time"])
    assert values["mse/watch_time"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-9)
    assert values["r_squared/watch_time"] == pytest.approx(r2_score(y, p), rel=1e-9)


def _count_collectives(rank: int, world_size: int, extra: int) -> int:
    from tests.helpers.ddp import count_collectives

    metrics: dict[str, Any] = {name: name for name in METRICS}
    subsets = dict(SUBSETS)
    for i in range(extra):  # more metrics of other task lists and settings: statistics that are not shared
        metrics[f"acc{i}"] = {"metric": "accuracy", "threshold": 0.05 * (i + 1)}
        subsets[f"acc{i}"] = [BINARY[i % 2]] if i % 3 else BINARY
    module = tmx.RecMetricModule(TASKS, metrics, throughput=False, window_size=50, metric_tasks=subsets)
    _feed(module, _steps(16 + rank, count=2))
    return count_collectives(module.compute)


@pytest.mark.ddp
def test_one_fused_sync_whatever_the_number_of_metrics_and_task_lists(ddp_pool: Any) -> None:
    few = ddp_pool.run(_count_collectives, 0)
    many = ddp_pool.run(_count_collectives, 9)
    assert few == many
    assert 0 < few[0] <= 4  # shapes + one per state dtype


def test_the_refusal_names_only_the_metrics_that_read_the_task() -> None:
    # AUC reads watch_time by mistake; NE (0/1 labels too, in [0, 1]) does not read it and is not named
    module = tmx.RecMetricModule(
        TASKS, ["ne", "auc", "mse"], throughput=False, metric_tasks={"ne": BINARY, "auc": ["click", "watch_time"]}
    )
    with pytest.raises(ValueError, match=r"Task 'watch_time'.*Metric\(s\) \['auc'\] read this task") as error:
        module.update(_steps(17, count=1)[0])
    assert "'ne'" not in str(error.value)


def test_a_metric_of_values_reads_sigmoid_only_of_the_tasks_that_hold_logits() -> None:
    """MSE over every task, NE of logits on click: the watch time's errors stay in seconds."""
    steps = _steps(21)
    logit_steps = [{**s, "click_pred": torch.logit(s["click_pred"])} for s in steps]
    module = tmx.RecMetricModule(
        TASKS, {"ne": {"from_logits": True}, "mse": "mse"}, metric_tasks={"ne": ["click"]}, throughput=False
    )
    values = _floats(_feed(module, logit_steps).compute())
    data = _joined(steps)  # the probabilities the logits stand for
    for task, (pred, label) in COLUMNS.items():
        assert values[f"mse/{task}"] == pytest.approx(
            mean_squared_error(data[label], data[pred], sample_weight=data["w"]), rel=1e-6
        ), task
    assert values["ne/click"] == pytest.approx(_reference(data)["ne/click"], rel=1e-6)


def test_metrics_of_different_tasks_may_disagree_on_from_logits() -> None:
    """Click's head gives logits, conversion's probabilities: each read by metrics that say so."""
    steps = _steps(22)
    logit_steps = [{**s, "click_pred": torch.logit(s["click_pred"])} for s in steps]
    metrics = {"ne_logits": {"metric": "ne", "from_logits": True}, "ne": "ne", "mse": "mse"}
    subsets = {"ne_logits": ["click"], "ne": ["conversion"], "mse": ["watch_time"]}
    module = tmx.RecMetricModule(TASKS, metrics, metric_tasks=subsets, throughput=False)
    values = _floats(_feed(module, logit_steps).compute())
    want = _reference(_joined(steps))
    assert list(values) == ["ne_logits/click", "ne/conversion", "mse/watch_time"]
    assert values["ne_logits/click"] == pytest.approx(want["ne/click"], rel=1e-6)
    assert values["ne/conversion"] == pytest.approx(want["ne/conversion"], rel=1e-9)
    assert values["mse/watch_time"] == pytest.approx(want["mse/watch_time"], rel=1e-9)
    # the metrics that read one task still agree, and the refusal names the task
    with pytest.raises(ValueError, match=r"Task 'click': Metrics disagree on `from_logits`.*ne_logits=True, ne=False"):
        tmx.RecMetricModule(TASKS, metrics, metric_tasks={**subsets, "ne": ["click", "conversion"]}, throughput=False)


def _grouped_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray, groups: np.ndarray) -> float:
    """docs/auc.md's GroupedAUC: the plain mean of sklearn's per-group AUC over groups holding both classes."""
    values = [
        roc_auc_score(y[groups == g], p[groups == g], sample_weight=w[groups == g])
        for g in np.unique(groups)
        if 0 < y[groups == g].sum() < len(y[groups == g])
    ]
    return float(np.mean(values))


def _tasks_with_ids(**ids: str) -> list[tmx.RecTaskInfo]:
    """TASKS with weights "w"; the binary tasks name the id columns ``ids``, watch_time names none."""
    return [
        tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", **(ids if t.name in BINARY else {}))
        for t in TASKS
    ]


def test_grouped_metrics_need_the_group_ids_of_the_tasks_they_read_only() -> None:
    # watch_time, which no grouped metric reads, names no group id column
    tasks = _tasks_with_ids(group_id_name="user")
    metrics = {"gauc": "gauc", "sne": {"metric": "segmented_ne", "num_segments": 4}, "mse": "mse"}
    subsets = {"gauc": BINARY, "sne": BINARY, "mse": ["watch_time"]}
    module = tmx.RecMetricModule(tasks, metrics, throughput=False, window_size=50, metric_tasks=subsets)
    steps = _steps(21)
    g = torch.Generator().manual_seed(210)
    for step in steps:
        step["user"] = torch.randint(0, 4, (25,), generator=g)
    values = _floats(_feed(module, steps).compute())
    for data, suffix in ((_joined(steps), ""), (_joined(steps[-2:]), "/window")):
        w, users = data["w"], data["user"]
        for task in BINARY:
            p, y = (data[c] for c in COLUMNS[task])
            p = p.astype(np.float32).astype(np.float64)  # the exact GroupedAUC keeps float32 scores
            expected = _grouped_auc(y, p, w, users)
            assert values[f"gauc/{task}{suffix}"] == pytest.approx(expected, rel=1e-6), (task, suffix)
        p, y = (data[c] for c in COLUMNS["watch_time"])
        assert values[f"mse/watch_time{suffix}"] == pytest.approx(mean_squared_error(y, p, sample_weight=w), rel=1e-9)
    assert sorted({key.split("/")[1] for key in values}) == ["click", "conversion", "watch_time"]
    assert not any("watch_time" in key for key in values if not key.startswith("mse"))


def test_a_task_no_grouped_metric_reads_may_name_another_group_column_missing_from_model_out() -> None:
    tasks = _tasks_with_ids(group_id_name="user")
    tasks[1] = tmx.RecTaskInfo("watch_time", "wt_label", "wt_pred", "w", group_id_name="device")
    module = tmx.RecMetricModule(
        tasks, {"gauc": "gauc", "mse": "mse"}, throughput=False, metric_tasks={"gauc": BINARY, "mse": ["watch_time"]}
    )
    steps = _steps(22)
    g = torch.Generator().manual_seed(220)
    for step in steps:
        step["user"] = torch.randint(0, 3, (25,), generator=g)  # no "device" column
    values = _floats(_feed(module, steps).compute())
    data = _joined(steps)
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        expected = _grouped_auc(y, p.astype(np.float32).astype(np.float64), data["w"], data["user"])
        assert values[f"gauc/{task}"] == pytest.approx(expected, rel=1e-6)


def test_ranking_metrics_need_the_session_ids_of_the_tasks_they_read_only() -> None:
    from tests.helpers.ranking_reference import group_rows, reference_values

    tasks = _tasks_with_ids(session_id_name="q")  # watch_time names no session column
    metrics = {"ndcg@5": "ndcg@5", "mse": "mse"}
    module = tmx.RecMetricModule(
        tasks, metrics, throughput=False, metric_tasks={"ndcg@5": BINARY, "mse": ["watch_time"]}
    )
    steps = _steps(23)
    for i, step in enumerate(steps):
        step["q"] = torch.arange(25) // 5 + 10 * i
    values = _floats(_feed(module, steps).compute())
    assert list(values) == ["ndcg@5/click", "ndcg@5/conversion", "mse/watch_time"]
    data = _joined(steps)
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        (expected,) = reference_values(group_rows(list(data["q"]), p, y, data["w"]), [("ndcg", 5)])
        assert values[f"ndcg@5/{task}"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"gauc": "gauc", "mse": "mse"}, "group_id_name"),
        ({"sne": {"metric": "segmented_ne", "num_segments": 2}, "mse": "mse"}, "group_id_name"),
        ({"mrr": "mrr", "mse": "mse"}, "session_id_name"),
    ],
)
def test_a_task_a_grouped_or_ranking_metric_reads_still_needs_its_ids(metrics: dict[str, Any], field: str) -> None:
    name = next(iter(metrics))
    # conversion, which the metric reads, names no id column; click does
    tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", **{field: "ids"}) for t in TASKS[:2]]
    tasks.append(TASKS[2])
    with pytest.raises(ValueError, match=rf"Metric '{name}' needs ids: task 'conversion' must set RecTaskInfo.{field}"):
        tmx.RecMetricModule(tasks, metrics, throughput=False, metric_tasks={name: BINARY, "mse": ["watch_time"]})
    # and the tasks a grouped metric reads share one group id column
    if field == "group_id_name":
        tasks[2] = tmx.RecTaskInfo("conversion", "conv_label", "conv_pred", "w", group_id_name="other")
        with pytest.raises(ValueError, match=r"shares one group id column across the tasks it reads"):
            tmx.RecMetricModule(tasks, metrics, throughput=False, metric_tasks={name: BINARY, "mse": ["watch_time"]})


@pytest.mark.parametrize("validate", [True, False])
def test_bad_segment_ids_name_the_task_the_segmented_metric_reads_and_change_nothing(validate: bool) -> None:
    # only conversion names the segment column; click (read by ne alone) names none
    tasks = [TASKS[0], tmx.RecTaskInfo("conversion", "conv_label", "conv_pred", "w", group_id_name="seg")]
    sne = {"metric": "segmented_ne", "num_segments": 2, "validate_args": validate}
    module = tmx.RecMetricModule(
        tasks, {"ne": "ne", "sne": sne}, throughput=False, metric_tasks={"sne": ["conversion"]}
    )
    steps = _steps(24, count=2)
    for step in steps:
        step["seg"] = torch.arange(25) % 2
    module.update(steps[0])
    before = _floats(module.compute())
    bad = dict(steps[1], seg=torch.full((25,), 5))
    with pytest.raises(ValueError, match=r"Task 'conversion', `model_out\['seg'\]`: expected segment ids in \[0, 2\)"):
        module.update(bad)
    assert _floats(module.compute()) == before
    data = _joined(steps[:1])
    assert before["ne/click"] == pytest.approx(_reference(data)["ne/click"], rel=1e-9)
    p, y = (data[c] for c in COLUMNS["conversion"])
    for segment in range(2):
        rows = data["seg"] == segment
        w = data["w"][rows]
        rate = np.sum(w * y[rows]) / np.sum(w)
        entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        expected = log_loss(y[rows], p[rows], sample_weight=w, labels=[0, 1]) / entropy
        assert before[f"sne.{segment}/conversion"] == pytest.approx(expected, rel=1e-9)


def test_a_module_pickled_before_the_id_columns_were_read_per_task_reads_every_task_s() -> None:
    import pickle

    tasks = [tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, "w", session_id_name="q") for t in TASKS[::2]]
    module = tmx.RecMetricModule(tasks, {"mrr": "mrr"}, throughput=False)
    steps = _steps(25, count=2)
    for i, step in enumerate(steps):
        step["q"] = torch.arange(25) // 5 + 10 * i
    module.update(steps[0])
    state = module.__getstate__()
    for key in ("_group_tasks", "_session_tasks"):
        del state[key]  # as an earlier version pickled it
    old = tmx.RecMetricModule.__new__(tmx.RecMetricModule)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    old.update(steps[1])
    module.update(steps[1])
    assert _floats(old.compute()) == _floats(module.compute())


def test_rows_of_non_adjacent_tasks_take_an_index_made_once() -> None:
    """click and conversion are not adjacent (watch_time between): their rows come from an ``index_select``
    whose index tensor was built from the host at every step (on a GPU, a copy to the device per step);
    it is made once per task list and device now. Values as sklearn's all the same."""
    from torchmetrics_ext import _module_stack

    steps = _steps(91, count=5)
    module = _module()
    module.update(steps[0])
    before = _module_stack._row_index.cache_info()
    _feed(module, steps[1:])
    after = _module_stack._row_index.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    values = _floats(module.compute())
    expected = _reference(_joined(steps))
    assert values == pytest.approx(expected, rel=1e-9)


def test_windows_of_metrics_of_some_tasks_share_one_ring_and_keep_their_own_values() -> None:
    """The additive windowed metrics of both task lists (NE, calibration of click and conversion; MSE and R² of
    watch_time) take their windows through the module's shared ring, as metrics of every task do (they were
    each pushed on their own); a window that cuts the steps holds the newest whole steps, as sklearn says."""
    steps = _steps(17, count=6)
    module = _module(window_size=60)  # steps of 25: the window keeps the newest two
    joint = module._joint_window(25)
    assert joint is not None
    assert {type(unit.lifetime).__name__ for unit in joint.units} == {
        "NormalizedEntropy",
        "Calibration",
        "WeightedMSE",
    }  # R² is in MSE's compute group; exact AUC keeps samples
    values = _floats(_feed(module, steps).compute())
    lifetime, window = _reference(_joined(steps)), _reference(_joined(steps[-2:]))
    for key, expected in lifetime.items():
        assert values[key] == pytest.approx(expected, rel=1e-9), key
        assert values[f"{key}/window"] == pytest.approx(window[key], rel=1e-9), key


def test_metrics_of_some_tasks_skip_the_clamps_their_rows_bounds_make_useless() -> None:
    """The step's check reads each domain's predictions' bounds; the binary heads' rows (probabilities in
    [0.05, 0.95]) are fed with their own, so NE and the binned AUC skip their clamps, as a module of those
    tasks alone does (they were given none, and clamped: every task's bounds hold watch time in seconds)."""
    from tests.helpers.tester import AtenOps

    module = tmx.RecMetricModule(
        TASKS,
        {"ne": "ne", "auc": {"num_bins": 1000}, "mse": "mse"},
        throughput=False,
        metric_tasks={"ne": BINARY, "auc": BINARY, "mse": ["watch_time"]},
    )
    steps = _steps(23)
    module.update(steps[0])
    with AtenOps() as counted:
        module.update(steps[1])
    assert not {op for op in counted.ops if "clamp" in op}
    _feed(module, steps[2:])
    values = _floats(module.compute())
    data = _joined(steps)
    w = data["w"]
    for task in BINARY:
        p, y = (data[c] for c in COLUMNS[task])
        rate = np.average(y, weights=w)
        ne = log_loss(y, p, sample_weight=w) / log_loss(y, np.full_like(p, rate), sample_weight=w)
        assert values[f"ne/{task}"] == pytest.approx(ne, rel=1e-9)
    p, y = (data[c] for c in COLUMNS["watch_time"])
    assert values["mse/watch_time"] == pytest.approx(mean_squared_error(y, p, sample_weight=w), rel=1e-9)
