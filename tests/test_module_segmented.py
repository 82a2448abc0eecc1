"""``RecMetricModule`` feeding ``Segmented`` metrics: segment ids from the tasks' ``group_id_name`` column.

Every value is checked against pandas/NumPy formulas written here, per segment and task (NE = the
weighted cross entropy over the entropy of the segment's weighted CTR; CTR; calibration), never
against a value the package computed. Windows are checked against a plain-Python window over the
same updates, DDP (2 gloo processes) against one process over the concatenated data.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext._module_keys import ModuleKeys

S = 3
TASKS = [
    tmx.RecTaskInfo("click", "click_label", "click_pred", "w", group_id_name="country"),
    tmx.RecTaskInfo("buy", "buy_label", "buy_pred", "buy_w", group_id_name="country"),
]
NAMES = [t.name for t in TASKS]


def make_steps(sizes, seed: int = 0, zero_weight_at: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Steps of the given sizes, both classes in every segment of the data overall; one all-zero-weight step."""
    gen = torch.Generator().manual_seed(seed)
    steps = []
    for i, n in enumerate(sizes):
        out = {"country": torch.randint(0, S, (n,), generator=gen)}
        for task in TASKS:
            p = torch.rand(n, generator=gen).clamp(0.02, 0.98)
            out[task.prediction_name] = p
            out[task.label_name] = (torch.rand(n, generator=gen) < p).float()
            w = torch.rand(n, generator=gen) * 2 + 0.1
            out[task.weight_name] = torch.zeros(n) if i == zero_weight_at else w
        steps.append(out)
    return steps


def frame(steps) -> pd.DataFrame:
    """One row per (step row, task): the columns every reference reads."""
    rows = []
    for step in steps:
        for task in TASKS:
            rows.append(
                pd.DataFrame(
                    {
                        "task": task.name,
                        "segment": step["country"].numpy(),
                        "p": step[task.prediction_name].double().numpy(),
                        "y": step[task.label_name].double().numpy(),
                        "w": step[task.weight_name].double().numpy(),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def reference(steps) -> dict[tuple[str, str, int], float]:
    """``{(metric, task, segment): value}`` by pandas groupby and the formulas (natural log)."""
    df = frame(steps)
    df["wy"] = df.w * df.y
    df["wp"] = df.w * df.p
    df["ce"] = -df.w * (df.y * np.log(df.p) + (1 - df.y) * np.log(1 - df.p))
    sums = df.groupby(["task", "segment"])[["w", "wy", "wp", "ce"]].sum()
    out = {}
    for (task, segment), row in sums.iterrows():
        ctr = row.wy / row.w
        with np.errstate(divide="ignore", invalid="ignore"):  # a single-class segment: nan, as the metric's
            baseline = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
        out["ne", task, segment] = row.ce / row.w / baseline
        out["ctr", task, segment] = ctr
        out["cal", task, segment] = row.wp / row.wy
        out["ll", task, segment] = row.ce / row.w
    return out


def metrics() -> dict:
    """The forms the module takes: a factory, an object, the registry name with options, and LogLoss (shares NE's)."""
    return {
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks=num_tasks), num_segments=S),
        "ctr": tmx.Segmented(tmx.CTR(num_tasks=2), num_segments=S),
        "cal": {"metric": "segmented_ne", "num_segments": S},  # replaced below for calibration
        "ll": lambda num_tasks: tmx.Segmented(tmx.LogLoss(num_tasks=num_tasks), num_segments=S),
    }


def build(window_size: int | None = None, **options) -> tmx.RecMetricModule:
    specs = metrics()
    specs["cal"] = lambda num_tasks: tmx.Segmented(tmx.Calibration(num_tasks=num_tasks), S)
    return tmx.RecMetricModule(TASKS, specs, throughput=False, window_size=window_size, **options)


def computed(module: tmx.RecMetricModule, sync: bool = True) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return module.compute() if sync else module.local_compute()


def check_values(values: dict[str, torch.Tensor], expected: dict, suffix: str = "") -> None:
    for (metric, task, segment), value in expected.items():
        key = f"{metric}.{segment}/{task}{suffix}"
        np.testing.assert_allclose(values[key].item(), value, rtol=1e-9, err_msg=key)


# ----------------------------------------------------------------------------- values and keys


def test_values_per_segment_and_task_equal_groupby_formulas():
    steps = make_steps([50, 70, 30])
    module = build()
    for step in steps:
        module.update(step)
    values = computed(module)
    check_values(values, reference(steps))
    # keys: one per metric, segment and task, in the order of the metrics, then segments, then tasks
    expected_keys = [f"{m}.{g}/{t}" for m in ("ne", "ctr", "cal", "ll") for g in range(S) for t in NAMES]
    assert list(values) == expected_keys


def test_the_registry_name_builds_segmented_ne_and_from_config_reports_its_keys():
    config = {
        "tasks": [
            {
                "name": "click",
                "label_name": "click_label",
                "prediction_name": "click_pred",
                "weight_name": "w",
                "group_id_name": "country",
            }
        ],
        "metrics": {"segmented_ne": {"num_segments": S}, "ne": None},
        "throughput": False,
        "window_size": 1000,
    }
    module = tmx.RecMetricModule.from_config(config)
    assert isinstance(module.metrics["segmented_ne"].lifetime, tmx.Segmented)
    steps = make_steps([40, 40], seed=3)
    for step in steps:
        module.update(step)
    values = computed(module)
    expected = {k: v for k, v in reference(steps).items() if k[0] == "ne" and k[1] == "click"}
    check_values(values, {("segmented_ne", *k[1:]): v for k, v in expected.items()})
    check_values(values, {("segmented_ne", *k[1:]): v for k, v in expected.items()}, "/window")
    assert sorted(values) == sorted(
        [f"segmented_ne.{g}/click{s}" for g in range(S) for s in ("", "/window")] + ["ne/click", "ne/click/window"]
    )


def test_the_registry_name_needs_num_segments_and_takes_the_modules_logits():
    with pytest.raises(
        ValueError, match=r"Metric 'segmented_ne': Metric 'segmented_ne' needs the option `num_segments`"
    ):
        tmx.RecMetricModule(TASKS, ["segmented_ne"], throughput=False)
    module = tmx.RecMetricModule(TASKS, {"s": {"metric": "segmented_ne", "num_segments": 2}}, from_logits=True)
    assert module.metrics["s"].metric.from_logits is True


def test_torchrec_key_style_gives_torchrecs_segmented_ne_keys():
    """A Segmented(NormalizedEntropy) computes TorchRec's segmented_ne: its keys, ``..._segmented_ne_{g}``;
    another Segmented metric is keyed by its own name and the segment."""
    module = tmx.RecMetricModule(
        TASKS,
        {
            "sne": {"metric": "segmented_ne", "num_segments": 2},
            "by_country": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), 2),
        },
        throughput=False,
        key_style="torchrec",
        prefix="train/",
    )
    step = make_steps([30], seed=1)[0]
    step["country"] = step["country"] % 2
    module.update(step)
    keys = list(computed(module))
    assert keys == [f"train/segmented_ne-{t}|lifetime_segmented_ne_{g}" for g in (0, 1) for t in NAMES] + [
        f"train/by_country-{t}|lifetime_by_country_{g}" for g in (0, 1) for t in NAMES
    ]
    known = ModuleKeys(module)
    assert all(key in known for key in keys)


def test_module_keys_know_every_segment_key_before_any_update():
    module = build(window_size=100, prefix="val/")
    known = ModuleKeys(module)
    for step in make_steps([20, 20]):
        module.update(step)
    keys = computed(module)
    assert len(keys) == 4 * S * 2 * 2
    assert all(key in known for key in keys)
    assert f"val/ne.{S}/click" not in known and "val/ne/click" not in known


def test_one_task_values_are_one_number_per_segment():
    task = TASKS[0]
    module = tmx.RecMetricModule(
        [task], {"ctr": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), S)}, throughput=False
    )
    steps = make_steps([60])
    module.update({k: v for k, v in steps[0].items() if k in ("country", "click_pred", "click_label", "w")})
    values = computed(module)
    expected = {k: v for k, v in reference(steps).items() if k[0] == "ctr" and k[1] == "click"}
    check_values(values, expected)
    assert all(v.ndim == 0 for v in values.values())


# ----------------------------------------------------------------------------- compute groups, refusals


def test_segmented_ne_and_log_loss_of_as_many_segments_update_once():
    module = build()
    assert module.compute_groups == [
        ["ne", "ll"],
        ["ctr", "cal"],
    ]  # as NormalizedEntropy and LogLoss, CTR and Calibration
    other = tmx.RecMetricModule(
        TASKS,
        {
            "a": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks), 2),
            "b": lambda num_tasks: tmx.Segmented(tmx.LogLoss(num_tasks), 3),
        },
        throughput=False,
    )
    assert other.compute_groups == [["a"], ["b"]]  # other segment counts: other states


def test_metrics_the_module_cannot_feed_and_tasks_without_the_column_are_refused():
    with pytest.raises(TypeError, match=r"Metric 's' \(Segmented\(TensorWeightedAverage\)\) cannot be fed"):
        tmx.RecMetricModule(["click"], {"s": tmx.Segmented(tmx.TensorWeightedAverage(), 2)}, throughput=False)
    with pytest.raises(ValueError, match=r"Metric 's' needs ids: task 'click' must set RecTaskInfo.group_id_name"):
        tmx.RecMetricModule(["click"], {"s": tmx.Segmented(tmx.CTR(), 2)}, throughput=False)


def _state(module: tmx.RecMetricModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"country": torch.tensor([0, 1, S, 0])}, ValueError, rf"segment ids in \[0, {S}\).*got values in \[0, {S}\]"),
        ({"country": torch.tensor([0, -1, 2, 0])}, ValueError, r"got values in \[-1, 2\]"),
        ({"country": torch.tensor([0.0, 1.0, 2.0, 0.0])}, TypeError, r"`model_out\['country'\]`: expected integer ids"),
        ({"country": torch.tensor([0, 1, 2])}, ValueError, r"`model_out\['country'\]` of shape \(4,\)"),
        ({"buy_pred": torch.tensor([0.5, 0.5, 1.5, 0.5])}, ValueError, r"buy_pred"),
    ],
    ids=["above", "negative", "float", "shape", "bad-pred"],
)
@pytest.mark.parametrize("window_size", [None, 10])
def test_a_bad_step_raises_and_changes_no_metric(change, error, match, window_size):
    module = build(window_size=window_size)
    first = make_steps([12])[0]
    module.update(first)
    before, values = _state(module), computed(module)
    step = {k: v[:4] for k, v in make_steps([12], seed=5)[0].items()} | change
    with pytest.raises(error, match=match):
        module.update(step)
    after = _state(module)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(computed(module), values, equal_nan=True)
    with pytest.raises(KeyError, match="no group id column 'country'"):
        module.update({k: v for k, v in first.items() if k != "country"})


def test_unvalidated_metrics_give_the_same_values():
    """validate_args=False everywhere: nothing checked nor read back, the values are the validated module's."""
    specs = {
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks, validate_args=False), S),
        "ctr": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks, validate_args=False), S),
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False)
    assert module._trusted
    steps = make_steps([30, 30], seed=2)
    for step in steps:
        module.update(step)
    expected = {k: v for k, v in reference(steps).items() if k[0] in ("ne", "ctr")}
    check_values(computed(module), expected)


@pytest.mark.parametrize("window_size", [None, 50])
@pytest.mark.parametrize("bad_ids", [[0, 1, 3, 0], [0, -1, 1, 2]], ids=["above", "negative"])
def test_unvalidated_module_refuses_ids_outside_the_segments_and_changes_no_metric(bad_ids, window_size):
    """validate_args=False everywhere: an id outside [0, S) raised torch's bare RuntimeError from the scatter
    after the metrics before the Segmented one (sorted keys: "a_ctr") took the step; now the module's
    ValueError naming the column and num_segments, before any metric changes (CPU)."""
    specs = {
        "a_ctr": {"metric": "ctr", "validate_args": False},
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks, validate_args=False), S),
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False, window_size=window_size)
    assert module._trusted
    steps = make_steps([20, 20], seed=4)
    module.update(steps[0])
    before = _state(module)
    bad = {k: v[:4] for k, v in steps[1].items()} | {"country": torch.tensor(bad_ids)}
    with pytest.raises(
        ValueError, match=r"`model_out\['country'\]`: expected segment ids in \[0, 3\) \(num_segments=3"
    ):
        module.update(bad)
    after = _state(module)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    module.update(steps[1])
    expected = {k: v for k, v in reference(steps).items() if k[0] == "ne"}
    check_values(computed(module), expected)
    df = frame(steps)  # the plain CTR per task, by pandas
    for task, rows in df.groupby("task"):
        np.testing.assert_allclose(computed(module)[f"a_ctr/{task}"].item(), (rows.w * rows.y).sum() / rows.w.sum())


@pytest.mark.parametrize("window_size", [None, 50])
def test_unvalidated_module_checks_the_ids_once_per_step(window_size, monkeypatch):
    """One pass over the step's ids (the module's, before any metric), not one more per Segmented metric."""
    import torchmetrics_ext.module as module_mod
    from torchmetrics_ext.wrappers import segmented

    calls: list[int] = []
    real = segmented._unchecked_ids_fit

    def counted(ids: torch.Tensor, num_segments: int) -> bool:
        calls.append(num_segments)
        return real(ids, num_segments)

    monkeypatch.setattr(segmented, "_unchecked_ids_fit", counted)
    monkeypatch.setattr(module_mod, "_unchecked_ids_fit", counted)
    specs = {
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks, validate_args=False), S),
        "ctr": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks, validate_args=False), S + 2),
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False, window_size=window_size)
    module.update(make_steps([20])[0])
    assert calls == [S]  # against the smallest num_segments


# ----------------------------------------------------------------------------- windows, reset, checkpoints


def kept_steps(sizes: list[int], window: int, skipped: set[int]) -> list[int]:
    """Indices of the steps the window keeps: the newest whole steps whose sizes sum to at most ``window``,
    an all-zero-weight step taking no room (skipped by the module); written here as a plain loop."""
    kept, total = [], 0
    for i in reversed(range(len(sizes))):
        if i in skipped:
            continue
        if total + sizes[i] > window:
            break
        total += sizes[i]
        kept.append(i)
    return sorted(kept)


def test_window_values_per_segment_equal_a_plain_python_window():
    sizes, window = [40, 30, 25, 35, 20], 80
    steps = make_steps(sizes, seed=4, zero_weight_at=3)
    module = build(window_size=window)
    for step in steps:
        module.update(step)
    values = computed(module)
    check_values(values, reference(steps))
    kept = kept_steps(sizes, window, skipped={3})
    assert kept == [1, 2, 4]  # the zero-weight step took no room: three steps fit
    check_values(values, reference([steps[i] for i in kept]), "/window")


def test_reset_clears_every_segment_and_the_step_after_counts_alone():
    module = build(window_size=50)
    for step in make_steps([30, 30]):
        module.update(step)
    module.reset()
    steps = make_steps([45], seed=9)
    module.update(steps[0])
    values = computed(module)
    check_values(values, reference(steps))
    check_values(values, reference(steps), "/window")


@pytest.mark.parametrize("window_size", [None, 60])
def test_a_checkpoint_resumes_every_segment(window_size, tmp_path):
    steps = make_steps([30, 40, 25], seed=6)
    module = build(window_size=window_size)
    for step in steps[:2]:
        module.update(step)
    torch.save(module.state_dict(), tmp_path / "ckpt.pt")
    resumed = build(window_size=window_size)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    resumed.update(steps[2])
    values = computed(resumed)
    check_values(values, reference(steps))
    if window_size is not None:
        check_values(values, reference([steps[i] for i in kept_steps([30, 40, 25], window_size, set())]), "/window")
    # a copy and a pickle compute the same values
    for twin in (copy.deepcopy(resumed), pickle.loads(pickle.dumps(resumed))):
        torch.testing.assert_close(computed(twin), values, equal_nan=True)


# ----------------------------------------------------------------------------- DDP


def _shard(steps, rank: int) -> list:
    return steps[:3] if rank == 0 else steps[3:]  # uneven: three steps on rank 0, one on rank 1


def _ddp_values(rank: int, world_size: int) -> dict:
    module, windowed = build(), build(window_size=10_000)  # a window holding every rank's samples
    for step in _shard(make_steps([30, 20, 25, 40], seed=8), rank):
        module.update(step)
        windowed.update(step)
    return {"synced": computed(module), "local": computed(module, sync=False), "windowed": computed(windowed)}


def _ddp_collectives(rank: int, world_size: int, num_metrics: int) -> int:
    import torch.distributed as dist

    specs = {
        f"m{i}": (lambda num_tasks, i=i: tmx.Segmented(tmx.WeightedAccuracy(num_tasks, threshold=0.1 * i), S))
        for i in range(num_metrics)
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False)
    for step in _shard(make_steps([30, 20, 25, 40], seed=8), rank):
        module.update(step)
    count = [0]
    real = dist.all_gather, dist.all_reduce

    def counted(fn):
        def wrapper(*args, **kwargs):
            count[0] += 1
            return fn(*args, **kwargs)

        return wrapper

    dist.all_gather, dist.all_reduce = counted(real[0]), counted(real[1])
    try:
        computed(module)
    finally:
        dist.all_gather, dist.all_reduce = real
    return count[0]


@pytest.mark.ddp
def test_ddp_equals_one_process_over_the_concatenated_data(ddp_pool):
    steps = make_steps([30, 20, 25, 40], seed=8)
    results = ddp_pool.run(_ddp_values)
    for rank, result in enumerate(results):
        check_values(result["synced"], reference(steps))
        check_values(result["local"], reference(_shard(steps, rank)))
        check_values(result["windowed"], reference(steps))
        check_values(result["windowed"], reference(steps), "/window")


@pytest.mark.ddp
def test_ddp_sync_is_one_fused_gather_whatever_the_number_of_segmented_metrics(ddp_pool):
    few = ddp_pool.run(_ddp_collectives, 1)
    many = ddp_pool.run(_ddp_collectives, 8)
    assert few == many and 0 < few[0] <= 3


# ----------------------------------------------------------------------------- the device path


@pytest.mark.parametrize("validated", [True, False])
def test_the_device_path_reads_the_ids_with_the_step_or_not_at_all(validated):
    """On the device path (forced on CPU tensors) a validated step waits for the device once, the ids' bounds
    read in the same copy as the columns'; an unvalidated one never; a bad id is refused from that read."""
    from tests.test_gpu import count_syncs
    from torchmetrics_ext.utilities.device import force_device_path

    specs = {
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks, validate_args=validated), S),
        "ctr": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks, validate_args=validated), S),
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False)
    steps = make_steps([64, 64, 64], seed=11)
    with force_device_path():
        module.update(steps[0])
        for step in steps[1:]:
            with count_syncs() as calls:
                module.update(step)
            assert calls == (["Tensor.tolist"] if validated else []), calls
        if validated:
            bad = dict(steps[0], country=steps[0]["country"] + 1)  # S among the ids
            with pytest.raises(ValueError, match=rf"segment ids in \[0, {S}\)"):
                module.update(bad)
    expected = {k: v for k, v in reference(steps).items() if k[0] in ("ne", "ctr")}
    check_values(computed(module), expected)


def test_a_module_pickled_before_segmented_metrics_were_fed_unpickles_and_updates():
    """A module pickled by the version before (no `_segments`, a step plan of bool id flags) reads none, finds
    its step plan again and keeps its values."""
    module = tmx.RecMetricModule(
        TASKS, {"ctr": "ctr", "gauc": "gauc"}, throughput=False, window_size=50
    )  # groups read, no segments
    steps = make_steps([20, 20], seed=12)
    module.update(steps[0])
    state = module.__getstate__()
    del state["_segments"], state["_cast_segment_ids"]
    plan = state["_step_plan"]
    state["_step_plan"] = plan._replace(updated=[(u, bool(ids), fed) for u, ids, fed in plan.updated])
    old = tmx.RecMetricModule.__new__(tmx.RecMetricModule)
    old.__setstate__(copy.deepcopy(state))
    assert old._segments == {} and old._cast_segment_ids is False
    for each in (module, old):
        each.update(steps[1])
    torch.testing.assert_close(computed(old), computed(module), equal_nan=True)


# ----------------------------------------------------------------------------- review: a migrating user's cases


def test_segmented_next_to_grouped_auc_and_ranking_metrics_reads_its_own_ids():
    """One module: Segmented NE and CTR on the group id column grouped AUC reads too, NDCG on the session
    column; the segments' values are the groupby formulas' (the session ids do not leak into the segments)."""
    tasks = [
        tmx.RecTaskInfo(t.name, t.label_name, t.prediction_name, t.weight_name, "country", session_id_name="query")
        for t in TASKS
    ]
    specs = {
        "ne": lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks), S),
        "gauc": "gauc",
        "ndcg": "ndcg@3",
        "ctr": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), S),
    }
    module = tmx.RecMetricModule(tasks, specs, throughput=False, window_size=1000)
    steps = make_steps([40, 50], seed=21)
    gen = torch.Generator().manual_seed(22)
    for step in steps:
        step["query"] = torch.randint(0, 7, step["country"].shape, generator=gen)
        module.update(step)
    values = computed(module)
    expected = {k: v for k, v in reference(steps).items() if k[0] in ("ne", "ctr")}
    check_values(values, expected)
    check_values(values, expected, "/window")
    assert [k for k in values if k.startswith(("gauc", "ndcg"))] == [
        f"{m}/{t}{s}" for m in ("gauc", "ndcg") for t in NAMES for s in ("", "/window")
    ]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int8])
def test_narrow_integer_ids_give_the_int64_values(dtype):
    steps = make_steps([30, 30], seed=23)
    module = build()
    for step in steps:
        module.update(dict(step, country=step["country"].to(dtype)))
    check_values(computed(module), reference(steps))


def test_two_segmented_metrics_refuse_ids_the_smaller_cannot_hold_and_update_nothing():
    specs = {
        "big": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), 5),
        "small": lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks, validate_args=False), 2),
    }
    module = tmx.RecMetricModule(TASKS, specs, throughput=False, window_size=100)
    step = make_steps([8], seed=24)[0]
    module.update(dict(step, country=step["country"] % 2))
    before = _state(module)
    with pytest.raises(ValueError, match=r"segment ids in \[0, 2\) \(num_segments=2 of Segmented metric 'small'\)"):
        module.update(dict(step, country=step["country"] % 2 + 3 * (torch.arange(8) == 5)))  # a 3 or 4: big's only
    after = _state(module)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_empty_step_changes_no_segment():
    steps = make_steps([30, 0, 20], seed=25)
    module = build(window_size=45)
    for step in steps:
        module.update(step)
    values = computed(module)
    check_values(values, reference(steps))
    check_values(values, reference(steps[1:]), "/window")  # 0 + 20 rows fit; the 30 rows do not


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cast_keys_to_int_truncates_float_ids_toward_zero_as_torchrec(dtype):
    """TorchRec's cast_keys_to_int reads 2.7 as 2 and -0.5 as 0 (truncation); -1.5 (read -1) is refused."""
    arguments = {"num_groups": S, "grouping_keys": "country", "cast_keys_to_int": True, "include_logloss": True}
    tasks = [
        {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": t.weight_name}
        for t in TASKS
    ]
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {"segmented_ne": {"rec_task_indices": [0, 1], "window_size": 1000, "arguments": arguments}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    steps = make_steps([40, 40], seed=26)
    gen = torch.Generator().manual_seed(27)
    for step in steps:
        jitter = torch.rand(step["country"].shape, generator=gen, dtype=torch.float64) * 0.98  # in [0, 0.98)
        floats = torch.where(step["country"] == 0, -jitter, step["country"] + jitter).to(dtype)
        module.update(dict(step, country=floats))
        # the reference reads the ids truncated by NumPy (np.trunc), as TorchRec's int64 cast does
        step["country"] = torch.from_numpy(np.trunc(floats.double().numpy()).astype(np.int64))
    values = computed(module)
    for (metric, task, segment), value in reference(steps).items():
        name = {"ne": "segmented_ne", "ll": "logloss"}.get(metric)
        if name is not None:
            bits = np.log(2) if metric == "ll" else 1.0  # TorchRec's segmented log loss is in bits
            for part in ("lifetime", "window"):
                key = f"segmented_ne-{task}|{part}_{name}_{segment}"
                np.testing.assert_allclose(values[key].item(), value / bits, rtol=1e-6, err_msg=key)
    before = _state(module)
    bad = dict(steps[0], country=torch.full(steps[0]["country"].shape, -1.5, dtype=dtype))
    with pytest.raises(ValueError, match=r"segment ids in \[0, 3\).*got values in \[-1, -1\].*cast_keys_to_int"):
        module.update(bad)
    with pytest.raises(
        ValueError, match=r"cast_keys_to_int, floating ids are read as int64, truncated toward zero"
    ):  # nan: read as -2**63
        module.update(dict(bad, country=torch.full(bad["country"].shape, float("nan"), dtype=dtype)))
    after = _state(module)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_torchrec_window_of_max_updates_holds_the_newest_steps_a_zero_weight_step_taking_no_slot(monkeypatch):
    """from_torchrec_config windows segmented_ne by TorchRec's buffer count (max_updates); a step whose weights
    are all zero is skipped (documented: it changes nothing) and so takes no slot."""
    import torchmetrics_ext.torchrec_config as torchrec_config

    monkeypatch.setattr(torchrec_config, "MAX_BUFFER_COUNT", 2)
    tasks = [
        {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": "w"}
        for t in TASKS
    ]
    arguments = {"num_groups": S, "grouping_keys": "country"}
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {"segmented_ne": {"rec_task_indices": [0, 1], "window_size": 10_000, "arguments": arguments}},
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    steps = make_steps([30, 25, 35, 20, 30], seed=28, zero_weight_at=3)
    for step in steps:
        step["buy_w"] = step["w"]
        module.update(step)
    values = computed(module)
    for window, kept in ((False, steps), (True, [steps[2], steps[4]])):  # the newest two with weight
        for (metric, task, segment), value in reference(kept).items():
            if metric == "ne":
                key = f"segmented_ne-{task}|{'window' if window else 'lifetime'}_segmented_ne_{segment}"
                np.testing.assert_allclose(values[key].item(), value, rtol=1e-9, err_msg=key)


def _ddp_one_empty_rank(rank: int, world_size: int) -> dict:
    """Rank 1 sees only empty steps (and a step of segments rank 0 never sees at the end): values equal
    one process's over every row."""
    steps = make_steps([30, 0, 25, 0], seed=29)
    mine = [steps[0], steps[2]] if rank == 0 else [steps[1], steps[3]]
    module, windowed = build(), build(window_size=10_000)
    for step in mine:
        module.update(step)
        windowed.update(step)
    return {"synced": computed(module), "windowed": computed(windowed), "local": computed(module, sync=False)}


@pytest.mark.ddp
def test_ddp_with_a_rank_that_saw_no_row_equals_one_process(ddp_pool):
    steps = make_steps([30, 0, 25, 0], seed=29)
    results = ddp_pool.run(_ddp_one_empty_rank)
    for result in results:
        check_values(result["synced"], reference(steps))
        check_values(result["windowed"], reference(steps))
        check_values(result["windowed"], reference(steps), "/window")
    assert all(torch.isnan(v) for v in results[1]["local"].values())  # the empty rank alone: no row anywhere


def test_torchrec_segmented_ne_of_some_tasks_reports_those_tasks_and_logged_values_are_copies():
    """segmented_ne on the second task only, NE on both: its keys name that task alone, in TorchRec's order
    (segment, then lifetime before window); changing a logged value in place changes no later compute()."""
    tasks = [
        {"name": t.name, "label_name": t.label_name, "prediction_name": t.prediction_name, "weight_name": "w"}
        for t in TASKS
    ]
    config = {
        "rec_tasks": tasks,
        "rec_metrics": {
            "segmented_ne": {"rec_task_indices": [1], "window_size": 10_000, "arguments": {"num_groups": S}},
            "ne": {"rec_task_indices": [0, 1], "window_size": 10_000},
        },
    }
    module = tmx.RecMetricModule.from_torchrec_config(config)
    steps = make_steps([40, 30], seed=30)
    for step in steps:
        step["grouping_keys"], step["buy_w"] = step["country"], step["w"]
        module.update(step)
    values = computed(module)
    segmented = [k for k in values if k.startswith("segmented_ne")]
    assert segmented == [f"segmented_ne-buy|{p}_segmented_ne_{g}" for g in range(S) for p in ("lifetime", "window")]
    expected = {k[2]: v for k, v in reference(steps).items() if k[:2] == ("ne", "buy")}
    for key in segmented:
        np.testing.assert_allclose(values[key].item(), expected[int(key[-1])], rtol=1e-9, err_msg=key)
    for key in segmented:
        values[key] *= 100
    again = computed(module)
    for key in segmented:
        np.testing.assert_allclose(again[key].item(), expected[int(key[-1])], rtol=1e-9, err_msg=key)


def test_cast_float_ids_in_a_named_column_equal_torchrec_itself(tmp_path):
    """TorchRec (its parity venv) on float ids (-0.9 to 2.99) in a `country` column with cast_keys_to_int and
    include_logloss: the same keys and values, lifetime and window."""
    import json
    import subprocess

    from tests.test_torchrec_config import SIDE, TORCHREC_PYTHON
    from tests.test_torchrec_config import TASKS as TORCHREC_TASKS
    from tests.test_torchrec_config import make_steps as torchrec_steps

    if not TORCHREC_PYTHON.exists():
        pytest.skip(f"TorchRec's parity virtual environment {TORCHREC_PYTHON} is absent")
    arguments = {"num_groups": S, "include_logloss": True, "grouping_keys": "country", "cast_keys_to_int": True}
    config = {
        "rec_tasks": TORCHREC_TASKS[:2],
        "rec_metrics": {"segmented_ne": {"rec_task_indices": [0, 1], "window_size": 100, "arguments": arguments}},
    }
    steps = torchrec_steps({"rec_tasks": config["rec_tasks"], "rec_metrics": {}}, num_steps=4)
    gen = torch.Generator().manual_seed(31)
    for step in steps:
        ids = step.pop("grouping_keys") % S
        jitter = torch.rand(ids.shape, generator=gen) * 0.9
        step["country"] = torch.where(ids == 0, -jitter, ids + jitter)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(steps, tmp_path / "steps.pt")
    side = [str(TORCHREC_PYTHON), str(SIDE), str(tmp_path / "config.json"), str(tmp_path / "steps.pt")]
    result = subprocess.run(side, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    module = tmx.RecMetricModule.from_torchrec_config(config)
    for step in steps:
        module.update(step)
    values = computed(module)
    assert sorted(values) == sorted(theirs["keys"])
    for key, value in values.items():
        np.testing.assert_allclose(value.item(), theirs["values"][key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("window_size", [None, 60])
def test_a_checkpoint_of_another_num_segments_is_refused_naming_it(window_size):
    """A module's checkpoint of 4 segments into one of 3 said "this Segmented (num_tasks=2) expects (2, 3)"
    (with a window: only "the window's histogram ... (4, 2, 3)"), not which setting differs."""

    def make(num_segments):
        segmented = lambda num_tasks: tmx.Segmented(tmx.NormalizedEntropy(num_tasks=num_tasks), num_segments)  # noqa: E731
        return tmx.RecMetricModule(TASKS, {"ne": segmented}, throughput=False, window_size=window_size)

    ours, theirs = make(3), make(4)
    theirs.update(make_steps([20])[0])
    with pytest.raises(RuntimeError) as caught:
        ours.load_state_dict(theirs.state_dict())
    text = str(caught.value)
    assert "this Segmented (metric=NormalizedEntropy, num_tasks=2, num_segments=3) expects (2, 3)" in text, text
    assert "state has shape (2, 4)" in text
