"""``ModuleKeys``: the keys a ``RecMetricModule`` reports, read from its configuration before any compute.

References: the keys the module's own ``compute()`` returns after updates (every one of them is
known before the first update), and TorchRec's own key list for a multi-task config
(``EXPECTED_MULTI_KEYS``, produced by TorchRec 1.9.2): keys TorchRec does not report for it
(a window-only AUC's lifetime, a metric of fewer tasks) are not the module's either. Keys of another
prefix, metric, task or part are not the module's.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
from tests.test_module import TASKS, make_data, metric_specs
from tests.test_module import run as compute_after
from tests.test_torchrec_config import EXPECTED_MULTI_KEYS, MULTI_CONFIG, Optimizers
from torchmetrics_ext._module_keys import ModuleKeys
from torchmetrics_ext.metrics.base import TaskMetric
from torchmetrics_ext.registry import metric_names
from torchmetrics_ext.torchrec_config import TORCHREC_METRICS


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


def test_a_dict_valued_metric_has_the_entries_its_settings_name_and_a_number_none():
    """Regression: any entry name was taken for every metric (a key with another cutoff, or a scalar metric's).

    A resumed module whose ``RankingMetrics`` lost a cutoff, or whose ``"rank"`` became one number, would
    get the earlier values of keys it no longer reports back (and TorchRec's ``ne-click|lifetime_logloss``
    with NE alone configured). Reference: the keys RankingMetrics' documentation names (``"{metric}@{k}"``,
    ``"{metric}"`` without a cutoff) and HindsightTargetPR's three.
    """
    tasks = [tmx.RecTaskInfo("click", session_id_name="query")]
    metrics = {
        "ne": "ne",
        "rank": tmx.RankingMetrics(ks=(1, None), metrics=("ndcg", "mrr")),
        "hindsight": tmx.HindsightTargetPR,
    }
    keys = ModuleKeys(tmx.RecMetricModule(tasks, metrics, state_metrics=_state_metrics(), throughput=False))
    named = ["rank.ndcg@1", "rank.ndcg", "rank.mrr@1", "rank.mrr", "hindsight.threshold", "hindsight.precision"]
    assert all(f"{name}/click" in keys for name in [*named, "hindsight.recall", "ne"])
    for other in (
        "rank.ndcg@3/click",  # a cutoff not configured
        "rank.map@1/click",  # a metric not configured
        "rank.ndcg@1@4/click",
        "rank.ndcg@1x/click",
        "rank./click",
        "rank.\n/click",
        "rank/click",  # the metric's value is a dict
        "ne.ne/click",  # NE's value is one number
        "hindsight.auc/click",
        "optim/\n",  # a state metric's entry: printable, no separator
        "optim/",
        "optim/a.b",
    ):
        assert other not in keys, other
    assert "optim/lr@0" in keys and "optim/any entry" in keys  # a state metric's entries are known from its value
    torchrec = ModuleKeys(tmx.RecMetricModule(["click"], {"ne": "ne"}, throughput=False, key_style="torchrec"))
    assert "ne-click|lifetime_ne" in torchrec
    assert "ne-click|lifetime_logloss" not in torchrec and "ne-click|lifetime_x" not in torchrec
    # an entry compute() would refuse to write (TorchRec's own ndcg key for a value that is not TorchRec's):
    # the module refuses it when built (its entries are known from its settings)
    ranking = tmx.RankingMetrics(ks=(None, 2), metrics=("ndcg",))
    with pytest.raises(ValueError, match="'ndcg' would be logged as ndcg-"):
        tmx.RecMetricModule(tasks, {"ndcg": ranking}, throughput=False, key_style="torchrec")


# ---------------------------------------------------------------------------------------------- property
# Random module configurations: every key compute() returns is a key of ModuleKeys, and keys built by
# perturbing them (another prefix, metric, task, part or entry; keys of another configuration) that
# compute() does not return are not. Ground truth: compute()'s own key set, and the documented key
# forms of state metrics (their entries are named only in their values: any valid entry name).

EXAMPLES = int(os.environ.get("KEYFUZZ_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# task names the module accepts: printable, without "/", "|" or "."
TASK_NAMES = ["click", "buy", "a b", "ünï", "x@1", "t-1", "window", "lifetime", "_", "1", "DefaultTask", "lifetime_x"]
PREFIXES = ["", "train/", "a/b/", "val_", "x|y-", "train", "ne/"]
CUSTOM_NAMES = ["m", "my auc", "m-1", "ndcg@10", "auc@2", "ranking", "hindsight", "x@y", "ne_"]
STATES = {
    "lr": lambda: 0.01,
    "optim": lambda: {"lr": 0.01, "momentum@1": 0.9},
    "sched": lambda: {"step-size": 3, "gamma": 0.5},
}


def _registry_name(draw) -> str:
    name = draw(st.sampled_from(metric_names()))
    return name.replace("@k", f"@{draw(st.integers(1, 12))}")


@st.composite
def _metric_spec(draw):
    kind = draw(st.sampled_from(["name", "name", "options", "binned", "ranking", "hindsight", "segmented"]))
    if kind == "name":
        name = _registry_name(draw)
        return name, name
    if kind == "options":
        return draw(st.sampled_from(CUSTOM_NAMES)), {"metric": _registry_name(draw)}
    if kind == "binned":
        bins = draw(st.sampled_from([10, 100, 1000]))
        return draw(st.sampled_from(CUSTOM_NAMES)), {
            "metric": draw(st.sampled_from(["auc", "auprc"])),
            "num_bins": bins,
        }
    if kind == "hindsight":
        return draw(st.sampled_from(CUSTOM_NAMES)), tmx.HindsightTargetPR
    if kind == "segmented":  # one key per segment id of the group column `g` (ids in [0, 5))
        if draw(st.booleans()):
            return draw(st.sampled_from(CUSTOM_NAMES)), {"metric": "segmented_ne", "num_segments": 5}
        return draw(st.sampled_from(CUSTOM_NAMES)), lambda num_tasks: tmx.Segmented(tmx.CTR(num_tasks), 5)
    ks = draw(st.lists(st.one_of(st.none(), st.integers(1, 12)), min_size=1, max_size=4, unique=True))
    ranked = draw(
        st.lists(
            st.sampled_from(["ndcg", "recall", "precision", "mrr", "hit_rate", "map"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    return draw(st.sampled_from(CUSTOM_NAMES)), tmx.RankingMetrics(ks=ks, metrics=ranked)


@st.composite
def module_configs(draw) -> dict:
    names = draw(st.lists(st.sampled_from(TASK_NAMES), min_size=1, max_size=3, unique=True))
    tasks = [
        tmx.RecTaskInfo(name, f"y{i}", f"p{i}", f"w{i}", group_id_name="g", session_id_name="s")
        for i, name in enumerate(names)
    ]
    metrics: dict = {}
    for name, spec in draw(st.lists(_metric_spec(), min_size=1, max_size=4)):
        metrics.setdefault(name, spec)
    states = draw(st.lists(st.sampled_from(sorted(STATES)), max_size=2, unique=True))
    return {
        "tasks": tasks,
        "metrics": metrics,
        "window_size": draw(st.sampled_from([None, 30, 1000])),
        "throughput": draw(st.booleans()),
        "state_metrics": {name: STATES[name] for name in states},
        "prefix": draw(st.sampled_from(PREFIXES)),
        "key_style": draw(st.sampled_from(["torchmetrics_ext", "torchrec"])),
        "from_logits": draw(st.sampled_from([None, True, False])),
    }


def _built(config: dict) -> tmx.RecMetricModule:
    """The module of a drawn configuration; a configuration the module refuses is not drawn."""
    tasks, metrics = config["tasks"], config["metrics"]
    options = {k: v for k, v in config.items() if k not in ("tasks", "metrics")}
    try:
        return tmx.RecMetricModule(tasks, dict(metrics), **options)
    except (ValueError, TypeError):  # e.g. a TorchRec key of another quantity, a window-less ranking option
        reject()


def _steps(tasks, seed: int, n: int = 40) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(2):
        out = {"g": torch.randint(0, 5, (n,), generator=gen), "s": torch.arange(n) // 5}
        for i in range(len(tasks)):
            out[f"p{i}"] = torch.rand(n, generator=gen).clamp(0.01, 0.99)
            out[f"y{i}"] = (torch.rand(n, generator=gen) < out[f"p{i}"]).float()
            out[f"w{i}"] = torch.rand(n, generator=gen) + 0.5
        out["grouping_keys"] = out["g"]
        out["session_id"] = out["s"]  # session_pairwise_auc's default column in a TorchRec config
        steps.append(out)
    return steps


def _computed(module: tmx.RecMetricModule, steps) -> set[str]:
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return set(module.compute())


def _state_entry(module: tmx.RecMetricModule, key: str) -> bool:
    """Whether ``key`` is a state metric's key of some valid entry name (their entries are unknown before)."""
    for name in module.state_metrics:
        head = module.prefix + (f"{name}-{name}|" if module.key_style == "torchrec" else f"{name}/")
        entry = key[len(head) :]
        if key.startswith(head) and entry and entry.isprintable() and not any(c in entry for c in "/|."):
            return True
    return False


def _perturbed(module: tmx.RecMetricModule, key: str) -> list[str]:
    """Keys near ``key``: another prefix, task, metric, part or entry, a character more or less."""
    out = [key + suffix for suffix in ("/window", "/x", "x", ".", "@1", "|", "/")]
    out += [key[1:], key[:-1], key.replace("/window", ""), key.replace("lifetime_", "window_")]
    out += [key.replace("window_", "lifetime_"), key.replace("|lifetime_", "|"), key.replace("|window_", "|")]
    rest = key[len(module.prefix) :]
    out += [other + rest for other in PREFIXES if other != module.prefix]
    for task in module.tasks:
        out += [key.replace(task.name, other) for other in ("zz", "click2", "") if other != task.name]
    for name in module.metric_names:
        out += [key.replace(name, other) for other in ("ne", "auc", "zz", name + "x") if other != name]
    for mark in (".", "|", "/"):  # the entry (after a "." or "|"): changed, emptied, given a separator
        head, sep, tail = key.partition(mark)
        if sep:
            entry, slash, after = tail.partition("/")
            for other in ("", entry + "@4", entry + ".x", entry + "|y", entry + "/z", "\n", entry + "\t"):
                out.append(head + sep + other + slash + after)
    return out


def _check_consistent(module: tmx.RecMetricModule, keys: ModuleKeys, computed: set[str], others: set[str]) -> None:
    assert sorted(k for k in computed if k not in keys) == []
    candidates = {p for k in computed for p in _perturbed(module, k)} | others
    wrong = sorted(p for p in candidates if p not in computed and not _state_entry(module, p) and p in keys)
    assert wrong == []


@SETTINGS
@given(config=module_configs(), other=module_configs(), seed=st.integers(0, 2**16))
def test_module_keys_are_exactly_what_compute_returns_for_random_configurations(config, other, seed):
    module = _built(config)
    keys = ModuleKeys(module)  # before any update
    computed = _computed(module, _steps(config["tasks"], seed))
    # keys of another configuration (another prefix, metrics, tasks, window, key style)
    elsewhere = _built(other)
    others = _computed(elsewhere, _steps(other["tasks"], seed + 1))
    _check_consistent(module, keys, computed, others)


# TorchRec's boolean arguments that switch a value on, per metric (torchrec_config.TORCHREC_METRICS)
SWITCHES = {
    "ne": "include_logloss",
    "auc": "grouped_auc",
    "auprc": "grouped_auprc",
    "mse": "include_r_squared",
    "session_pairwise_auc": "report_batch_coverage",  # a dict value: three keys per part
}


@st.composite
def torchrec_configs(draw) -> dict:
    names = draw(st.lists(st.sampled_from(TASK_NAMES), min_size=1, max_size=3, unique=True))
    tasks = [
        {"name": name, "label_name": f"y{i}", "prediction_name": f"p{i}", "weight_name": f"w{i}"}
        for i, name in enumerate(names)
    ]
    window = draw(st.sampled_from([50, 1000]))
    rec_metrics = {}
    for metric in draw(st.lists(st.sampled_from(sorted(TORCHREC_METRICS)), min_size=1, max_size=4, unique=True)):
        indices = draw(st.lists(st.integers(0, len(tasks) - 1), min_size=1, max_size=len(tasks), unique=True))
        definition: dict = {"rec_task_indices": indices, "window_size": window}
        if metric in SWITCHES:
            definition["arguments"] = {SWITCHES[metric]: draw(st.booleans())}
        if metric == "segmented_ne":  # ids of `grouping_keys` in [0, 5)
            definition["arguments"] = {"num_groups": 5, "include_logloss": draw(st.booleans())}
        rec_metrics[metric] = definition
    config = {"rec_tasks": tasks, "rec_metrics": rec_metrics}
    if draw(st.booleans()):
        config["throughput_metric"] = {"window_size": 100, "warmup_steps": 1}
    if draw(st.booleans()):
        config["state_metrics"] = ["optimizers"]
    return {"config": config, "prefix": draw(st.sampled_from(PREFIXES))}


def _from_torchrec(drawn: dict) -> tmx.RecMetricModule:
    return tmx.RecMetricModule.from_torchrec_config(
        drawn["config"], state_metrics_mapping={"optimizers": Optimizers()}, prefix=drawn["prefix"]
    )


@SETTINGS
@given(drawn=torchrec_configs(), other=torchrec_configs(), seed=st.integers(0, 2**16))
def test_module_keys_are_exactly_what_compute_returns_for_random_torchrec_configs(drawn, other, seed):
    """Per-metric task subsets, window-only values, bare counters (``serving_ne``), TorchRec's throughput keys."""
    module = _from_torchrec(drawn)
    keys = ModuleKeys(module)
    computed = _computed(module, _steps(drawn["config"]["rec_tasks"], seed))
    others = _computed(_from_torchrec(other), _steps(other["config"]["rec_tasks"], seed + 1))
    _check_consistent(module, keys, computed, others)


def test_every_metric_class_the_module_feeds_has_its_keys_known():
    """A dict-valued class that names no entries (``TaskMetric._value_entries``) would have its keys missed."""
    tasks = [
        tmx.RecTaskInfo(n, f"y{i}", f"p{i}", f"w{i}", group_id_name="g", session_id_name="s")
        for i, n in enumerate(["a", "b"])
    ]
    fed = 0
    for name in tmx.__all__:
        cls = getattr(tmx, name)
        if not (isinstance(cls, type) and issubclass(cls, TaskMetric)):
            continue
        try:
            module = tmx.RecMetricModule(tasks, {"m": cls}, window_size=50, throughput=False)
        except (TypeError, ValueError):  # one the module cannot feed (other inputs, curves, options needed)
            continue
        keys = ModuleKeys(module)
        fed += 1
        assert sorted(k for k in _computed(module, _steps(tasks, 0)) if k not in keys) == [], name
    assert fed >= 30


class _PairCTR(tmx.CTR):
    """A metric class of the user's own whose value is a dict it does not name ahead (no ``_value_entries``)."""

    def compute(self):
        value = super().compute()
        return {"ctr": value, "twice": 2 * value}


def test_a_users_dict_valued_metric_has_its_computed_keys_known():
    module = tmx.RecMetricModule(["click"], {"pair": _PairCTR(), "ne": "ne"}, throughput=False, window_size=100)
    module.update({"prediction": torch.tensor([0.2, 0.7, 0.5]), "label": torch.tensor([0.0, 1.0, 1.0])})
    computed = set(module.compute())
    keys = ModuleKeys(module)
    assert computed == {f"{m}/click{w}" for m in ("pair.ctr", "pair.twice", "ne") for w in ("", "/window")}
    assert all(key in keys for key in computed)
    # its entries are known only from its value: any valid entry name; a package metric's are exact
    assert "pair.other/click" in keys and "ne.other/click" not in keys and "pair.a/b/click" not in keys


# ------------------------------------------------------------ resumed=True: the keys of what the last load resumed


def _trained(**options) -> tmx.RecMetricModule:
    module = tmx.RecMetricModule(
        ["click"], {"ne": "ne", "log_loss": "log_loss", "label_average": "label_average"}, **options
    )
    module.update({"prediction": torch.tensor([0.2, 0.7, 0.4]), "label": torch.tensor([0.0, 1.0, 1.0])})
    return module


def _resumed_keys(module: tmx.RecMetricModule) -> list[str]:
    keys = ModuleKeys(module, resumed=True)
    return sorted(key for key in compute_after(module, []) if key in keys)


def test_resumed_keys_leave_out_a_window_started_empty_by_the_load():
    """A window resized since the checkpoint starts empty: only the lifetime keys (every metric's) were resumed."""
    saved = _trained(window_size=8, throughput=False).state_dict()
    resized = tmx.RecMetricModule(
        ["click"],
        {"ne": "ne", "log_loss": "log_loss", "label_average": "label_average"},
        window_size=4,
        throughput=False,
    )
    assert len(_resumed_keys(resized)) == 6  # never loaded: every key, lifetime and window
    resized.load_state_dict(saved)
    assert _resumed_keys(resized) == ["label_average/click", "log_loss/click", "ne/click"]
    same = tmx.RecMetricModule(
        ["click"],
        {"ne": "ne", "log_loss": "log_loss", "label_average": "label_average"},
        window_size=8,
        throughput=False,
    )
    same.load_state_dict(saved)  # the same window resumes: every key
    assert len(_resumed_keys(same)) == 6


def test_resumed_keys_leave_out_every_key_of_a_metric_started_afresh_and_of_its_compute_group():
    """NE built with other settings (``from_logits``: its states are named after it) starts afresh with
    strict=False, and so does log loss, which reads NE's states (one compute group, saved under NE alone);
    the label average (states named alike under both settings) and the throughput resumed."""
    saved = _trained().state_dict()
    changed = tmx.RecMetricModule(
        ["click"], {"ne": "ne", "log_loss": "log_loss", "label_average": "label_average"}, from_logits=True
    )
    assert changed.compute_groups[0] == ["ne", "log_loss"]
    with pytest.warns(UserWarning, match="other settings"):
        changed.load_state_dict(saved, strict=False)
    keys = ModuleKeys(changed, resumed=True)
    assert "ne/click" not in keys and "log_loss/click" not in keys
    assert "label_average/click" in keys and "throughput/total_examples" in keys
    assert "ne/click" in ModuleKeys(changed)  # without resumed: what the module reports
    changed.load_state_dict(changed.state_dict())  # a later load that resumes everything: every key again
    assert "ne/click" in ModuleKeys(changed, resumed=True)


def test_resumed_keys_leave_out_the_throughput_added_since_the_checkpoint():
    saved = _trained(throughput=False).state_dict()
    module = tmx.RecMetricModule(["click"], {"ne": "ne", "log_loss": "log_loss", "label_average": "label_average"})
    module.load_state_dict(saved, strict=False)
    keys = ModuleKeys(module, resumed=True)
    assert "ne/click" in keys and "throughput/total_examples" not in keys


@pytest.mark.parametrize("key_style", ["torchmetrics_ext", "torchrec"])
def test_compute_orders_keys_by_metric_entry_task_then_lifetime_before_window(key_style):
    """Pointwise metrics listed every task's lifetime value, then every window (``ne/a, ne/b, ne/a/window, ...``),
    ranking metrics each task's lifetime then window (``ndcg@3/a, ndcg@3/a/window, ndcg@3/b, ...``): one order now,
    metric by metric, entry, task, lifetime then window, for pointwise, AUC, ranking and dict-valued metrics."""
    tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", session_id_name="q") for t in ("click", "buy")]
    metrics = {
        "ne": "ne",
        "auc": "auc",
        "ndcg@3": "ndcg@3",
        "rm": tmx.RankingMetrics(ks=[3], metrics=["mrr", "hit_rate"]),
        "log_loss": "log_loss",
    }
    module = tmx.RecMetricModule(tasks, metrics, window_size=100, key_style=key_style, throughput=False)
    gen = torch.Generator().manual_seed(3)
    step = {"q": torch.arange(12) // 4}
    for t in ("click", "buy"):
        step[f"{t}_pred"] = torch.rand(12, generator=gen)
        step[f"{t}_label"] = (torch.arange(12) % 3 == 0).float()
    module.update(step)

    def key(metric: str, entry: str | None, task: str, window: bool) -> str:  # the documented key formats
        if key_style == "torchrec":
            namespace, name = {"ne": ("ne", "ne"), "auc": ("auc", "auc")}.get(metric, (metric, entry or metric))
            return f"{namespace}-{task}|{'window' if window else 'lifetime'}_{name}"
        return f"{metric}{'' if entry is None else '.' + entry}/{task}" + ("/window" if window else "")

    expected = [
        key(metric, entry, task, window)
        for metric, entries in (
            ("ne", [None]),
            ("auc", [None]),
            ("ndcg@3", [None]),
            ("rm", ["mrr@3", "hit_rate@3"]),
            ("log_loss", [None]),
        )
        for entry in entries
        for task in ("click", "buy")
        for window in (False, True)
    ]
    assert list(module.compute()) == expected
