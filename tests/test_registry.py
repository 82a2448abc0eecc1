"""Registry-wide contract: every exported metric class declares what TorchMetrics needs and documents itself."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import Metric

import torchmetrics_ext
import torchmetrics_ext as tmx
from tests.helpers.torchrec_venv import TORCHREC_PYTHON
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.registry import (
    _NEWER_SELF_NAMED,
    TORCHREC_SELF_NAMED,
    build_metric,
    lookup,
    metric_names,
    torchrec_names,
)

METRIC_CLASSES = sorted(
    (
        obj
        for name in torchmetrics_ext.__all__
        if inspect.isclass(obj := getattr(torchmetrics_ext, name))
        and issubclass(obj, Metric)
        and not inspect.isabstract(obj)
        and obj is not torchmetrics_ext.TaskMetric
    ),
    key=lambda cls: cls.__name__,
)
IDS = [cls.__name__ for cls in METRIC_CLASSES]


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=IDS)
def test_metric_declares_torchmetrics_contract(cls):
    # full_state_update=True doubles TorchMetrics' forward cost; a metric may set it only with its own
    # forward (one update), to keep TorchMetrics' Running away (Throughput, TowerQPS, Windowed)
    assert cls.full_state_update is False or cls.forward is not Metric.forward, (
        "full_state_update must be False (it doubles forward cost otherwise)"
    )
    assert isinstance(cls.is_differentiable, bool)
    assert cls.higher_is_better in (True, False, None)
    assert "higher_is_better" in {k for c in cls.__mro__ if c is not Metric and issubclass(c, Metric) for k in vars(c)}


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=IDS)
def test_metric_is_documented_with_an_example(cls):
    doc = inspect.getdoc(cls) or ""
    assert "Example" in doc and ">>>" in doc, f"{cls.__name__} needs a runnable Example"
    assert "Args:" in doc


@pytest.mark.parametrize("name", tmf.__all__)
def test_functional_is_documented_with_an_example(name):
    doc = inspect.getdoc(getattr(tmf, name)) or ""
    assert ">>>" in doc and "Args:" in doc and "Returns:" in doc


def test_every_class_has_a_functional_twin_or_says_why():
    snake = {name.replace("_", "") for name in tmf.__all__}
    missing = [cls.__name__ for cls in METRIC_CLASSES if cls.__name__.lower() not in snake]
    # names whose twin is spelled differently are listed here explicitly
    aliases = {"NormalizedEntropy": "normalized_entropy", "MAP": "map_at_k"}
    # classes that cannot have one, and why
    no_twin = {
        "Segmented": "a wrapper: its twin is the wrapped metric's function on each segment's rows",
        "TowerQPS": "a rate over wall-clock time between updates, not a function of one set of tensors",
        "Throughput": "a clock-driven rate",
        "Windowed": "a wrapper of any metric",
    }
    missing = [m for m in missing if aliases.get(m) not in tmf.__all__ and m not in no_twin]
    assert not missing, f"no functional twin for {missing}"


_FLAGGED = [
    (lambda flag: tmx.NDCG(k=5, exponential_gain=flag), "exponential_gain"),
    (lambda flag: tmx.PrecisionAtK(k=5, adaptive_k=flag), "adaptive_k"),
    (lambda flag: tmx.MRR(queries_complete_per_batch=flag), "queries_complete_per_batch"),
    (lambda flag: tmx.RankingMetrics(ks=(1,), remove_single_length_sessions=flag), "remove_single_length_sessions"),
    (lambda flag: tmx.AUC(from_logits=flag), "from_logits"),
    (lambda flag: tmx.GroupedAUC(weight_groups=flag), "weight_groups"),
    (lambda flag: tmx.NormalizedEntropy(from_logits=flag), "from_logits"),
    (lambda flag: tmx.WeightedMSE(from_logits=flag), "from_logits"),
    (lambda flag: tmx.XAUC(from_logits=flag), "from_logits"),
    (lambda flag: tmx.CalibrationFreeNE(torchrec_scaling=flag), "torchrec_scaling"),
    (lambda flag: tmx.NumMissingLabels(count_zero_weight=flag), "count_zero_weight"),
    (lambda flag: tmx.CTR(validate_args=flag), "validate_args"),
]


@pytest.mark.parametrize(("build", "name"), _FLAGGED)
def test_numpy_bools_are_flags_and_are_kept_as_python_bools(build, name):
    """Options accept NumPy bools (as `k` accepts NumPy integers); 1 and 0 stay refused."""
    for flag in (np.True_, np.False_):
        value = getattr(build(flag), name)
        assert type(value) is bool and value is bool(flag)
    with pytest.raises(ValueError, match=f"`{name}` to be a bool"):
        build(1)


def test_functional_flags_take_numpy_bools():
    from torchmetrics_ext.functional import auc, ndcg

    preds, target = torch.tensor([0.3, 0.2, 0.9]), torch.tensor([1, 0, 1])
    indexes = torch.tensor([0, 0, 0])
    # gains 2^1 - 1 = 1: the same value as linear gain; relevant at ranks 1 and 2 of 3
    assert ndcg(preds, target, indexes, k=3, exponential_gain=np.True_).item() == pytest.approx(1.0)
    assert auc(torch.tensor([-1.0, 1.0]), torch.tensor([0, 1]), from_logits=np.True_).item() == pytest.approx(1.0)


@pytest.mark.parametrize("k", [torch.tensor(5), np.int64(5)], ids=["tensor", "numpy"])
def test_a_cutoff_option_takes_a_tensor_or_numpy_integer(k):
    """`k` as a 0-dim integer tensor or a NumPy integer is the cutoff 5 (a tensor used to be refused)."""
    metric = build_metric("recall", k=k)
    assert isinstance(metric, tmx.RecallAtK) and type(metric.k) is int and metric.k == 5
    with pytest.raises(ValueError, match=r"Metric 'recall@3' names its cutoff \(3\); got `k=.*5.*` too"):
        build_metric("recall@3", k=k)


def test_no_public_class_shows_a_private_parameter():
    """``inspect.signature`` (help(), IDEs, the API pages) shows public parameters only.

    The pointwise constructors showed their base's ``_setting`` and ``_from_logits``
    (``CTR(num_tasks=1, *, _setting='', _from_logits=False, **kwargs)``).
    """
    shown = {}
    for name in torchmetrics_ext.__all__:
        obj = getattr(torchmetrics_ext, name)
        if not inspect.isclass(obj):
            continue
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # a class without a Python signature (none today)
            continue
        for parameter in signature.parameters:
            if parameter.startswith("_"):
                shown[(name, parameter)] = str(signature)
    assert shown == {}


@pytest.mark.parametrize(
    "name", ["ctr", "weighted_average", "mse", "rmse", "mae", "r_squared", "nmse", "nrmse", "regression_auc", "xauc"]
)
def test_registry_names_take_from_logits(name):
    """build_metric / from_config options pass `from_logits` to the pointwise metrics that gained it."""
    from torchmetrics_ext.registry import build_metric

    metric = build_metric(name, num_tasks=2, from_logits=True)
    assert metric.from_logits is True and metric.input_domains.from_logits
    assert build_metric(name, num_tasks=2).from_logits is False


@pytest.mark.parametrize("template", [name for name in metric_names() if name.endswith("@k")])
def test_a_cutoff_template_of_the_known_names_is_refused_saying_what_k_stands_for(template):
    """The errors listed ``ndcg@k`` among the known names, then refused ``ndcg@k`` as an unknown name."""
    stem = template.removesuffix("@k")
    assert build_metric(f"{stem}@10").k == 10
    for call in (
        lambda: lookup(template),
        lambda: build_metric(template),
        lambda: tmx.RecMetricModule.from_config(
            {"tasks": [{"name": "t", "session_id_name": "q"}], "metrics": [template]}
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(f"positive integer cutoff in {template!r}")) as error:
            call()
        assert f"{stem}@10" in str(error.value) and "Unknown" not in str(error.value)
    with pytest.raises(ValueError, match="Expected a positive integer cutoff in 'ndcg@ten'"):
        lookup("ndcg@ten")
    with pytest.raises(ValueError, match="'ne' takes no cutoff, got 'ne@k'"):
        lookup("ne@k")
    with pytest.raises(ValueError, match=r"Unknown metric name 'nope@k'; known names: .*\(k: a positive integer"):
        lookup("nope@k")


def test_a_misspelt_option_names_the_metric_and_what_it_takes():
    """A typo gave TorchMetrics' bare "Unexpected keyword arguments: `num_bin`": no metric, no valid options."""
    config = {
        "tasks": [{"name": "click", "session_id_name": "query"}],
        "metrics": {"ne": {"eta": 1e-9}, "auc_binned": {"metric": "auc", "num_bin": 100}, "ndcg@10": {}},
        "throughput": False,
    }
    auc_options = "num_tasks, num_bins, logit_range, bin_space, from_logits, validate_args"  # AUC's documented Args
    with pytest.raises(ValueError) as info:
        tmx.RecMetricModule.from_config(config)
    message = str(info.value)
    assert message.startswith(
        "Metric 'auc_binned' (auc): Unexpected keyword arguments: `num_bin` for AUC (did you mean `num_bins`?). "
        f"AUC takes {auc_options}, and TorchMetrics' compute_on_cpu, "
    )
    assert "sync_on_compute" in message
    config["metrics"]["auc_binned"] = {"metric": "auc", "num_bins": 100}  # following it
    assert tmx.RecMetricModule.from_config(config).metric_names == ["ne", "auc_binned", "ndcg@10"]
    with pytest.raises(
        ValueError, match=rf"^Unexpected keyword arguments: `num_bin` for AUC .*AUC takes {auc_options},"
    ):
        tmx.AUC(num_bin=100)
    ndcg_options = (
        "k, exponential_gain, report_as_loss, empty_target_action, padding_value, queries_complete_per_batch, "
        "remove_single_length_sessions, validate_args, and TorchMetrics'"
    )
    with pytest.raises(
        ValueError, match=r"`exponential` for NDCG \(did you mean `exponential_gain`\?\)\. NDCG takes "
    ) as info:
        tmx.NDCG(k=10, exponential=True)
    assert ndcg_options in str(info.value) and "num_tasks" not in str(info.value)  # NDCG has no task dimension
    with pytest.raises(ValueError, match=r"^Unexpected keyword arguments: `colour` for CTR\. CTR takes num_tasks"):
        tmx.CTR(colour=1)


@pytest.mark.parametrize("cls", sorted({lookup(n.replace("@k", "@3"))[0].cls for n in metric_names()}, key=str))
def test_every_option_an_unexpected_keyword_error_lists_is_documented(cls):
    """The options listed are the class's documented arguments (never a private or internal base parameter)."""
    kwargs = _REQUIRED_ARGS.get(cls, {"k": 3} if "k" in inspect.signature(cls).parameters else {})
    with pytest.raises(ValueError, match="Unexpected keyword arguments: `not_an_option`") as info:
        cls(**kwargs, not_an_option=1)
    listed = str(info.value).split(" takes ", 1)[1].split(", and TorchMetrics'")[0].split(", ")
    assert listed and all(re.search(rf"\b{name}\b", cls.__doc__) for name in listed), listed


def _option_default(cls: type, name: str) -> Any:
    """The default of option ``name`` in the first ``__init__`` of ``cls``'s MRO that declares one."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        parameter = inspect.signature(init).parameters.get(name) if init is not None else None
        if parameter is not None and parameter.default is not parameter.empty:
            return parameter.default
    return inspect.Parameter.empty


_REQUIRED_ARGS: dict[type, dict[str, Any]] = {
    tmx.Segmented: {"metric": tmx.CTR(), "num_segments": 3},
}


@pytest.mark.parametrize(
    "cls",
    sorted(
        {lookup(n.replace("@k", "@3"))[0].cls for n in metric_names()}
        | {
            tmx.Segmented,
            tmx.aggregation.Distribution,
            tmx.aggregation.Sum,
            tmx.aggregation.Mean,
            tmx.aggregation.Max,
            tmx.aggregation.Min,
            tmx.aggregation.CategoricalCount,
        },
        key=str,
    ),
    ids=lambda cls: cls.__name__,
)
def test_every_option_an_unexpected_keyword_error_lists_is_accepted(cls):
    """Bug: the list (and the "did you mean") named options the metric refuses: `num_tasks` for
    Distribution, Sum, Mean and CategoricalCount (no task dimension), `state_name` for Sum and Mean
    (passed by the class itself), `num_tasks`/`validate_args` for Segmented (taken from the wrapped
    metric). Each listed option, given at its default, builds the metric.
    """
    required = _REQUIRED_ARGS.get(cls, {"k": 3} if "k" in inspect.signature(cls).parameters else {})
    with pytest.raises(ValueError, match="Unexpected keyword arguments: `not_an_option`") as info:
        cls(**required, not_an_option=1)
    listed = str(info.value).split(" takes ", 1)[1].split(", and TorchMetrics'")[0].split(", ")
    for name in listed:
        if name in required or name == "no options of its own":
            continue
        default = _option_default(cls, name)
        assert default is not inspect.Parameter.empty, f"{cls.__name__} lists `{name}`, which has no default"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**required, **{name: default})  # raises for an option the class refuses


@pytest.mark.parametrize(("name", "guess"), [("aucc", "auc"), ("ndgc@10", "ndcg@10"), ("ne_postive", "ne_positive")])
def test_an_unknown_metric_name_suggests_the_closest(name, guess):
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \(did you mean {guess!r}\?\); known names: "):
        lookup(name)
    with pytest.raises(ValueError, match=rf"^Metric 'x' \({name}\): Unknown metric name {name!r} \(did you mean"):
        tmx.RecMetricModule.from_config({"tasks": ["a"], "metrics": {"x": {"metric": name}}})


@pytest.mark.parametrize(
    "name",
    ["throughput ", " qps", "Tower QPS\t", "\nThroughput", "window  qps", "tower-qps ", "tower_ qps", "tower__qps"],
)
def test_a_rate_name_with_stray_spaces_gets_the_rate_hint(name):
    """The hint read the name as written, so a config's ``"throughput "`` (a stray space: the command line strips
    ``--metrics`` names, a Python list or a file does not) listed the known names alone, where ``"throughput"`` got
    the hint: spaces around the name are dropped and runs of spaces, dashes or underscores inside it read as one
    ``_`` (``"tower_ qps"`` and ``"tower__qps"`` had none: a ``_`` beside a space made ``tower__qps``)."""
    with pytest.raises(ValueError, match=r"\(examples per second are no registry metric: "):
        lookup(name)
    with pytest.raises(ValueError, match=r"\(examples per second are no registry metric: "):
        tmx.RecMetricModule.from_config({"tasks": ["a"], "metrics": ["ne", name]})
    with pytest.raises(ValueError, match=r"Unknown metric name 'throughput_x'; known names"):
        lookup("throughput_x")  # not a rate's name: no hint


@pytest.mark.parametrize("name", ["qps", "tower_qps", "throughput", "QPS", "TowerQPS", "Throughput", "window_qps"])
def test_a_rate_name_says_where_examples_per_second_are(tmp_path, capsys, name):
    """``"qps"``/``"tower_qps"``/``"throughput"`` listed the known names only (nothing close enough to guess), from
    the registry, ``from_config`` and ``evaluate --metrics`` alike. The error now says where the rates are; what it
    says is checked here: the module's ``throughput=True`` reports lifetime and window rates, ``TowerQPS`` is an
    exported metric that no registry name builds."""
    from torchmetrics_ext import cli

    hint = (
        "examples per second are no registry metric: RecMetricModule counts them with its `throughput=True` "
        "option (Throughput, lifetime and window rates), and tmx.TowerQPS is the per-task rate as a standalone "
        "metric, not built by the registry"
    )
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \({re.escape(hint)}\); known names: "):
        lookup(name)
    with pytest.raises(ValueError, match=re.escape(hint)):
        tmx.RecMetricModule.from_config({"tasks": ["a"], "metrics": ["ne", name]})
    data = tmp_path / "d.csv"
    data.write_text("p,y\n0.2,0\n0.7,1\n")
    assert cli.main(["evaluate", str(data), "--predictions", "p", "--labels", "y", "--metrics", f"ne,{name}"]) == 2
    assert hint in " ".join(capsys.readouterr().err.split())
    # the hint's claims
    module = tmx.RecMetricModule([tmx.RecTaskInfo("a")], ["ne"], throughput=True)
    module.update({"prediction": torch.tensor([0.2, 0.7]), "label": torch.tensor([0.0, 1.0])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # one step: no timed step yet, the keys are there
        keys = set(module.compute())
    assert any("lifetime_throughput" in k for k in keys) and any("window_throughput" in k for k in keys), keys
    assert "TowerQPS" in tmx.__all__ and all(
        lookup(n)[0].cls is not tmx.TowerQPS for n in metric_names() if "@k" not in n
    )


@pytest.mark.parametrize(
    ("name", "guess"),
    [("AUC", "auc"), ("NE", "ne"), ("NDCG@10", "ndcg@10"), ("MRR@5", "mrr@5"), ("gAUC", "gauc"), ("acu", "auc")],
)
def test_a_name_in_another_case_or_with_swapped_letters_gets_a_hint(name, guess):
    """Class-style spellings (the classes are NE and AUC; the Hugging Face adapter's keys read NDCG@10)
    and a transposition too far from the name for difflib's cutoff got no hint at all."""
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \(did you mean {guess!r}\?\)"):
        lookup(name)
    lookup(guess)


@pytest.mark.parametrize(
    ("name", "guess"),
    [
        ("normalized_entropy", "ne"),
        ("NormalizedEntropy", "ne"),
        ("normalised_entropy", "ne"),
        ("grouped_auc", "gauc"),
        ("GroupedAUC", "gauc"),
        ("weighted_mse", "mse"),
        ("WeightedAccuracy", "accuracy"),
        ("calibration_free_ne", "cali_free_ne"),
        ("map_at_k", "map"),
        ("RecallAtK", "recall@10"),
        ("recall_at_k", "recall@10"),
        ("ndcg_at_10", "ndcg@10"),
        ("HitRate", "hit_rate@10"),
    ],
)
def test_a_class_or_function_name_suggests_its_registry_name(name, guess):
    """A new user types the class or the functional twin ("normalized_entropy", "GroupedAUC"): no hint was given."""
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \(did you mean {guess!r}\?\)"):
        lookup(name)
    lookup(guess)


@pytest.mark.parametrize(
    ("name", "guess"),
    [("reacll", "recall@10"), ("ndgc@0", "ndcg@10"), ("ndgc@k", "ndcg@10"), ("ndgc", "ndcg"), ("aucc@5", "auc")],
)
def test_the_suggested_name_is_one_lookup_accepts(name, guess):
    """'reacll' suggested 'recall' and 'ndgc@0' 'ndcg@0', which lookup then refused."""
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} \(did you mean {guess!r}\?\)"):
        lookup(name)
    lookup(guess)


@pytest.mark.parametrize(
    ("name", "guess"),
    [
        ("ndcg10", "ndcg@10"),
        ("recall20", "recall@20"),
        ("recall_20", "recall@20"),
        ("MRR-5", "mrr@5"),
        ("hitrate5", "hit_rate@5"),
        ("precision 5", "precision@5"),
        ("auc10", "auc"),  # no cutoff to keep
    ],
)
def test_a_cutoff_written_without_its_at_sign_is_suggested_with_it(name, guess):
    """'ndcg10' suggested 'ndcg' (the whole list) and 'recall20' 'recall@10': the cutoff typed was lost."""
    with pytest.raises(ValueError, match=rf"^Unknown metric name {re.escape(repr(name))} \(did you mean {guess!r}\?\)"):
        lookup(name)
    lookup(guess)


@pytest.mark.parametrize("suffix", ["", "@5", "@0", "@k", "@"])
def test_every_suggestion_for_a_misspelt_name_is_accepted(suffix):
    """Every registry name with two letters swapped, under every kind of cutoff: any hint given is a valid name."""
    stems = sorted({n.removesuffix("@k") for n in metric_names()})
    hints = 0
    for stem in stems:
        typo = stem[0] + stem[2] + stem[1] + stem[3:] if len(stem) > 3 else stem + "x"
        try:
            lookup(typo + suffix)
        except ValueError as err:
            found = re.search(r"did you mean '([^']+)'\?", str(err))
            if found:
                hints += 1
                lookup(found.group(1))  # raises if the hint is refused
    assert hints > len(stems) // 2


def _ndcg_and_ap(scores: np.ndarray, relevance: np.ndarray) -> tuple[float, float]:
    """Whole-list NDCG (linear gain, log2 discount) and average precision of one query without ties."""
    order = np.argsort(-scores)
    gains, discounts = relevance[order], 1 / np.log2(np.arange(2, len(scores) + 2))
    ndcg = (gains * discounts).sum() / (np.sort(relevance)[::-1] * discounts).sum()
    hits = gains > 0
    ap = (np.cumsum(hits) / np.arange(1, len(scores) + 1))[hits].mean()
    return ndcg, ap


def test_k_none_is_the_whole_list_as_a_registry_or_config_option():
    """``k=None`` (YAML's ``k: null``), the classes' whole-list default, was refused as not a positive integer."""
    rng = np.random.default_rng(3)
    q = np.repeat(np.arange(6), 7)
    p, y = rng.permutation(len(q)) / len(q), (rng.random(len(q)) < 0.4).astype(np.int64)
    y[q == 0] = np.r_[1, np.zeros(6, dtype=np.int64)]  # every query has a relevant candidate
    y[q == 1] = np.r_[np.zeros(6, dtype=np.int64), 1]
    ndcg, ap = np.mean([_ndcg_and_ap(p[q == i], y[q == i]) for i in range(6)], axis=0)
    preds, target, indexes = torch.tensor(p), torch.tensor(y), torch.tensor(q)
    for name, expected in (("ndcg", ndcg), ("map", ap)):
        metric = build_metric(name, k=None)
        assert metric.k is None
        metric.update(preds, target, indexes=indexes)
        np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)
    assert build_metric("mrr", k=None).k is None
    module = tmx.RecMetricModule.from_config(
        {
            "tasks": [{"name": "t", "session_id_name": "q"}],
            "metrics": {"ndcg": {"k": None}, "map": {"k": None}},
            "throughput": False,
        }
    )
    module.update({"prediction": preds, "label": target, "q": indexes})
    values = {key: value.item() for key, value in module.compute().items()}
    assert values == pytest.approx({"ndcg/t": ndcg, "map/t": ap}, rel=1e-12)
    for name, match in (
        ("ne", "'ne' takes no cutoff, got `k=None`"),
        ("recall", "needs a cutoff: use recall@k"),
        ("ndcg@5", r"names its cutoff \(5\); got `k=None`"),
    ):
        with pytest.raises(ValueError, match=match):
            build_metric(name, k=None)
    with pytest.raises(
        ValueError, match=r"positive integer \(its cutoff\) or None \(the whole list, for ndcg, mrr, map"
    ):
        build_metric("ndcg", k=0)


# ----------------------------------------------------------------------------- TorchRec's keys of the registry names
#
# With key_style="torchrec" a key that names a TorchRec metric holds that metric's value: `recall@k` used
# to be logged under TorchRec's recall_session_level key (TorchRec pools counts over sessions, ours is a
# per-query mean), `log_loss` (nats) under TorchRec's logloss (bits), the default NDCG (queries without
# relevance skipped) under TorchRec's ndcg (counted 0), the default GroupedAUC under TorchRec's grouped_auc
# (which averages every group). The expected keys and values below are TorchRec 1.9.2's own, produced by
# tests/helpers/torchrec_registry_side.py in TorchRec's virtual environment on `torchrec_steps()`; the last
# tests repeat that run live and skip, saying why, where that environment is absent.

TORCHREC_SIDE = Path(__file__).parent / "helpers" / "torchrec_registry_side.py"

# metric key in the module -> from_config options computing TorchRec's value (one task "t")
TORCHREC_OPTIONS: dict[str, dict[str, Any]] = {
    "ne": {},
    "log_loss": {"unit": "bits"},
    "calibration": {},
    "ctr": {},
    "weighted_average": {},
    "accuracy": {"threshold": 0.4},
    "weighted_precision": {"threshold": 0.4},
    "weighted_recall": {"threshold": 0.4},
    "mse": {},
    "rmse": {},
    "mae": {},
    "r_squared": {},
    "nmse": {},
    "nrmse": {},
    "ne_positive": {},
    "cali_free_ne": {"torchrec_scaling": True},
    "recalibrated_ne": {"recalibration_coefficient": 0.8},
    "recalibrated_calibration": {"recalibration_coefficient": 0.8},
    "label_average": {},
    "sum_weights": {},
    "num_positive_samples": {},
    "weighted_sum_predictions": {},
    "auc": {},
    "auprc": {},
    "gauc": {"groups_complete_per_batch": True},  # the groups holding both classes, per batch: TorchRec's GAUCMetric
    "gauc_all": {"metric": "gauc", "average_groups": "all"},  # every group: TorchRec's AUC grouped_auc
    "gauprc": {"average_groups": "all"},
    "ndcg": {"empty_target_action": "zero", "queries_complete_per_batch": True, "report_as_loss": True},
}
# registry names (cutoff 3) that compute no TorchRec value with their default options: keyed by their own names
OWN_KEYS = (
    "log_loss", "gauprc", "ndcg@3", "mrr", "mrr@3", "map", "map@3", "recall@3", "precision@3", "hit_rate@3", "f1@3",
    "r_precision", "regression_auc",
)  # fmt: skip
# registry names defined differently from TorchRec's metric of that key, with no option to match it: refused under
# their own name (TorchRec's key), keyed by any other name the user gives them
REFUSED_NO_OPTION = ("xauc",)
# registry names whose TorchRec keys and values are compared with TorchRec elsewhere: segmented_ne needs segment ids
# in [0, num_segments), which the session ids here are not (tests/test_torchrec_config.py runs TorchRec's own
# segmented_ne on a config of its own; test_segmented_ne_reports_torchrecs_keys_per_segment below checks the keys);
# session_pairwise_auc is newer than the TorchRec 1.9.2 run here: its keys and values are checked against a port of
# TorchRec's formula in tests/test_session_pairwise_auc.py
COMPARED_ELSEWHERE = ("segmented_ne", "session_pairwise_auc")
# registry names whose own name is TorchRec's key of the metric they compute differently by default: refused,
# naming the options that compute TorchRec's value
REFUSED = {
    "ndcg": "NDCG(empty_target_action='zero', queries_complete_per_batch=True)",
    "cali_free_ne": "CalibrationFreeNE(torchrec_scaling=True)",
    "gauc": "GroupedAUC(average_groups='defined', groups_complete_per_batch=True, weight_groups=False)",
}
# TorchRec 1.9.2 on torchrec_steps() (tests/helpers/torchrec_registry_side.py)
TORCHREC_VALUES = {
    "accuracy-t|lifetime_accuracy": 0.5805035053950487,
    "accuracy-t|window_accuracy": 0.5805035053950487,
    "auc-t|window_auc": 0.6586435437202454,
    "auc-t|window_grouped_auc": 0.7373455166816711,
    "auprc-t|lifetime_auprc": 0.6740591884184006,
    "auprc-t|window_auprc": 0.6740591526031494,
    "auprc-t|window_grouped_auprc": 0.8264631628990173,
    "average-t|lifetime_label_average": 0.5224013635751182,
    "average-t|lifetime_prediction_average": 0.4508660564472387,
    "average-t|window_label_average": 0.5224013635751182,
    "average-t|window_prediction_average": 0.4508660564472387,
    "cali_free_ne-t|lifetime_cali_free_ne": 0.02023583659138763,
    "cali_free_ne-t|window_cali_free_ne": 0.02023583659138763,
    "calibration-t|lifetime_calibration": 0.8630644708920381,
    "calibration-t|window_calibration": 0.8630644708920381,
    "ctr-t|lifetime_ctr": 0.5224013635751182,
    "ctr-t|window_ctr": 0.5224013635751182,
    "gauc-t|lifetime_gauc": 0.8646997411437963,
    "gauc-t|lifetime_gauc_num_samples": 12.0,
    "gauc-t|window_gauc": 0.8646997411437963,
    "gauc-t|window_gauc_num_samples": 12.0,
    "mae-t|lifetime_mae": 0.42712448072230835,
    "mae-t|window_mae": 0.42712448072230835,
    "mse-t|lifetime_mse": 0.2594664469875029,
    "mse-t|lifetime_r_squared": -0.039953269883882925,
    "mse-t|lifetime_rmse": 0.5093784908960162,
    "mse-t|window_mse": 0.2594664469875029,
    "mse-t|window_r_squared": -0.039953269883882925,
    "mse-t|window_rmse": 0.5093784908960162,
    "ndcg-t|lifetime_ndcg": 0.18182320562517135,
    "ndcg-t|window_ndcg": 0.18182320562517135,
    "ne-t|lifetime_logloss": 1.0661211476970034,
    "ne-t|lifetime_ne": 1.0676675954842874,
    "ne-t|window_logloss": 1.0661211476970034,
    "ne-t|window_ne": 1.0676675954842874,
    "ne_positive-t|lifetime_ne_positive": 0.6445341463668327,
    "ne_positive-t|window_ne_positive": 0.6445341463668327,
    "nmse-t|lifetime_nmse": 0.543273024473023,
    "nmse-t|lifetime_nrmse": 0.7370705695338967,
    "nmse-t|window_nmse": 0.543273024473023,
    "nmse-t|window_nrmse": 0.7370705695338967,
    "num_positive_samples-t|lifetime_num_positive_samples": 27.198838233947754,
    "num_positive_samples-t|window_num_positive_samples": 27.198838233947754,
    "precision-t|lifetime_precision": 0.5997652233666821,
    "precision-t|window_precision": 0.5997652233666821,
    "rauc-t|window_rauc": 0.8404294848442078,
    "recalibrated_calibration-t|lifetime_calibration": 0.7919896981944176,
    "recalibrated_calibration-t|window_calibration": 0.7919896981944176,
    "recalibrated_ne-t|lifetime_ne": 1.0967317762273305,
    "recalibrated_ne-t|window_ne": 1.0967317762273305,
    "recall-t|lifetime_recall": 0.5921120365556181,
    "recall-t|window_recall": 0.5921120365556181,
    "sum_weights-t|lifetime_sum_weights": 52.06502151489258,
    "sum_weights-t|window_sum_weights": 52.06502151489258,
    "weighted_avg-t|lifetime_weighted_avg": 0.4508660564472387,
    "weighted_avg-t|window_weighted_avg": 0.4508660564472387,
    "weighted_sum_predictions-t|lifetime_weighted_sum_predictions": 23.474350929260254,
    "weighted_sum_predictions-t|window_weighted_sum_predictions": 23.474350929260254,
    "xauc-t|lifetime_xauc": 0.3137957803011739,
    "xauc-t|window_xauc": 0.3137957803011739,
}
# TorchRec keys no registry name reports: GAUC's group count, AVERAGE's prediction average (ours: weighted_avg),
# RAUC and XAUC (ours are defined differently, with no option: docs/migration_torchrec.md)
NOT_REPORTED = {
    "rauc-t|window_rauc",
    "xauc-t|lifetime_xauc",
    "xauc-t|window_xauc",
    "gauc-t|lifetime_gauc_num_samples",
    "gauc-t|window_gauc_num_samples",
    "average-t|lifetime_prediction_average",
    "average-t|window_prediction_average",
}
TASK = {"name": "t", "session_id_name": "session", "group_id_name": "session"}


def torchrec_steps() -> list[dict[str, np.ndarray]]:
    """Two batches of ten sessions each, the first of each without positives.

    The second batch's first session has the id of the first batch's last one: TorchRec's GAUC and
    NDCG score each batch's sessions apart (two sessions there), its AUC's grouped_auc and AUPRC's
    grouped_auprc join the rows of one id over its window (one group). Weights are in [0.2, 1] with
    each session's first row 1: TorchRec's NDCG scales a session by its largest weight without
    normalising, which then equals our weighted mean.
    """
    rng = np.random.default_rng(11)
    steps, start = [], 0
    for _ in range(2):
        lengths = rng.integers(1, 8, 10)
        session = np.repeat(np.arange(start, start + 10), lengths)
        start += 9  # the next batch starts with this batch's last session id
        p = rng.uniform(0.02, 0.98, len(session)).astype(np.float32)
        y = (rng.random(len(session)) < p).astype(np.float32)
        y[session == session[0]] = 0
        w = rng.uniform(0.2, 1.0, len(session)).astype(np.float32)
        w[np.r_[True, session[1:] != session[:-1]]] = 1.0
        steps.append({"prediction": p, "label": y, "weight": w, "session": session, "lengths": lengths})
    return steps


def torchrec_style(metrics: Any, window_size: int | None = None) -> dict[str, torch.Tensor]:
    module = tmx.RecMetricModule.from_config(
        {"tasks": [TASK], "metrics": metrics, "key_style": "torchrec", "window_size": window_size, "throughput": False}
    )
    for step in torchrec_steps():
        module.update({c: torch.from_numpy(step[c]) for c in ("prediction", "label", "weight", "session")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return module.compute()


def test_every_registry_name_is_checked_against_torchrec():
    """A new registry name must say here whether it computes TorchRec's value under TorchRec's key."""
    checked = {options.get("metric", key) for key, options in TORCHREC_OPTIONS.items()} | set(OWN_KEYS) | set(REFUSED)
    checked |= set(REFUSED_NO_OPTION) | set(COMPARED_ELSEWHERE)
    names = {name.replace("@k", "@3") for name in metric_names()}
    assert names <= checked, sorted(names - checked)


def test_segmented_ne_reports_torchrecs_keys_per_segment():
    """TorchRec's segmented_ne key per segment id g: ``segmented_ne-{task}|lifetime_segmented_ne_{g}``."""
    num_segments = 1 + max(int(step["session"].max()) for step in torchrec_steps())
    values = torchrec_style({"segmented_ne": {"num_segments": num_segments}})
    assert list(values) == [f"segmented_ne-t|lifetime_segmented_ne_{g}" for g in range(num_segments)]


def test_torchrec_keys_of_registry_names_hold_torchrecs_values():
    values = torchrec_style(TORCHREC_OPTIONS, window_size=1_000_000)  # the whole run: window == lifetime
    reported = set()
    for key, value in values.items():
        # TorchRec's AUC family keeps no lifetime samples: its window (the whole run) is compared
        theirs = key if key in TORCHREC_VALUES else key.replace("|lifetime_", "|window_")
        assert theirs in TORCHREC_VALUES, f"{key} is not a key of TorchRec's"
        reported.add(theirs)
        np.testing.assert_allclose(value.item(), TORCHREC_VALUES[theirs], rtol=1e-6, err_msg=key)
    assert set(TORCHREC_VALUES) - reported == NOT_REPORTED


@pytest.mark.parametrize("name", OWN_KEYS)
def test_registry_names_without_torchrecs_value_are_keyed_by_their_own_names(name):
    """``recall@3`` was logged as recall_session_level-t|lifetime_recall_session_level (another metric's key)."""
    keys = list(torchrec_style([name]))
    assert keys == [f"{name}-t|lifetime_{name}"]
    torchrecs = {key.split("|")[0].split("-")[0] for key in TORCHREC_VALUES} | TORCHREC_SELF_NAMED
    assert name not in torchrecs


@pytest.mark.parametrize(("name", "needs"), REFUSED.items())
def test_registry_names_whose_own_name_is_torchrecs_are_refused_with_the_options_to_use(name, needs):
    with pytest.raises(ValueError, match=re.escape(f"build it as {needs}")):
        torchrec_style([name])
    options = dict(TORCHREC_OPTIONS[name], report_as_loss=False) if name == "ndcg" else TORCHREC_OPTIONS[name]
    assert list(torchrec_style({name: options})) == [f"{name}-t|lifetime_{name}"]


def test_torchrec_names_follow_the_instance_options():
    assert torchrec_names(tmx.LogLoss()) is None and torchrec_names(tmx.LogLoss(unit="bits")) == ("ne", "logloss")
    assert torchrec_names(tmx.GroupedAUC()) is None  # a group may span batches: TorchRec's gauc scores each batch's
    assert torchrec_names(tmx.GroupedAUC(groups_complete_per_batch=True)) == ("gauc", "gauc")
    assert torchrec_names(tmx.GroupedAUC(average_groups="all")) == ("auc", "grouped_auc")
    assert torchrec_names(tmx.GroupedAUC(average_groups="all", groups_complete_per_batch=True)) is None
    assert torchrec_names(tmx.GroupedAUPRC(average_groups="all", groups_complete_per_batch=True)) is None
    assert torchrec_names(tmx.GroupedAUC(average_groups="all", weight_groups=True)) is None
    assert torchrec_names(tmx.RecallAtK(3)) is None and torchrec_names(tmx.PrecisionAtK(3)) is None
    assert torchrec_names(tmx.WeightedNMSE(baseline="mean")) is None
    assert torchrec_names(tmx.NDCG(empty_target_action="zero")) is None  # rows of a query may span batches


def test_torchrec_grouped_keys_split_a_session_across_batches_as_torchrec_does():
    """Session 7 spans both batches. TorchRec's GAUCMetric scores each batch's sessions apart (two halves, each
    with one class: skipped); its AUC's grouped_auc joins the rows of an id over the run. The exact
    ``GroupedAUC`` took the ``gauc`` key with its joined value (2/3 where TorchRec gives 1/2)."""
    from sklearn.metrics import roc_auc_score

    batches = [
        (np.array([0.9, 0.2, 0.6]), np.array([1.0, 0.0, 1.0]), np.array([1, 1, 7])),
        (np.array([0.3, 0.4, 0.8]), np.array([0.0, 1.0, 0.0]), np.array([7, 2, 2])),
    ]

    def group_aucs(p: np.ndarray, y: np.ndarray, g: np.ndarray, single_class: float | None) -> list[float]:
        both = [s for s in np.unique(g) if 0 < y[g == s].sum() < (g == s).sum()]
        aucs = [roc_auc_score(y[g == s], p[g == s]) for s in both]
        return aucs + [single_class] * (len(np.unique(g)) - len(both)) if single_class is not None else aucs

    per_batch = [a for p, y, g in batches for a in group_aucs(p, y, g, None)]  # sessions of each batch apart
    joined = group_aucs(*(np.concatenate(c) for c in zip(*batches)), single_class=0.5)  # every id over the run
    config = {"tasks": [{"name": "t", "group_id_name": "g"}], "key_style": "torchrec", "throughput": False}
    metrics = {"gauc": {"groups_complete_per_batch": True}, "gauc_all": {"metric": "gauc", "average_groups": "all"}}
    module = tmx.RecMetricModule.from_config({**config, "metrics": metrics})
    for p, y, g in batches:
        module.update(
            {"prediction": torch.tensor(p), "label": torch.tensor(y), "weight": torch.ones(3), "g": torch.tensor(g)}
        )
    values = {key: value.item() for key, value in module.compute().items()}
    assert values == pytest.approx(
        {"gauc-t|lifetime_gauc": np.mean(per_batch), "auc-t|lifetime_grouped_auc": np.mean(joined)}
    )
    assert np.mean(per_batch) == pytest.approx(0.5) and np.mean(joined) == pytest.approx(2 / 3)
    with pytest.raises(
        ValueError, match=re.escape("GroupedAUC(average_groups='defined', groups_complete_per_batch=True")
    ):
        tmx.RecMetricModule.from_config({**config, "metrics": ["gauc"]})


def _torchrec_run(code: list[str]) -> str:
    if not TORCHREC_PYTHON.exists():
        pytest.skip(f"TorchRec's virtual environment {TORCHREC_PYTHON} is absent (set TORCHREC_PYTHON)")
    result = subprocess.run([str(TORCHREC_PYTHON), *code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_torchrec_itself_gives_the_literal_keys_and_values(tmp_path):
    steps = {f"{c}{b}": v for b, step in enumerate(torchrec_steps()) for c, v in step.items()}
    np.savez(tmp_path / "steps.npz", **steps)
    theirs = json.loads(_torchrec_run([str(TORCHREC_SIDE), str(tmp_path / "steps.npz")]))
    assert sorted(theirs) == sorted(TORCHREC_VALUES)
    for key, value in theirs.items():
        np.testing.assert_allclose(value, TORCHREC_VALUES[key], rtol=1e-12, err_msg=key)


def test_torchrec_self_named_is_torchrecs_namespaces_that_are_metric_names():
    code = (
        "from torchrec.metrics.metrics_namespace import MetricName, MetricNamespace; import json; "
        "print(json.dumps(sorted({n.value for n in MetricNamespace} & {n.value for n in MetricName} - {''})))"
    )
    assert json.loads(_torchrec_run(["-c", code])) == sorted(TORCHREC_SELF_NAMED - _NEWER_SELF_NAMED)


def test_pairwise_concordance_is_never_under_torchrecs_keys_without_an_option_to_match_it():
    """``regression_auc`` and ``xauc`` were logged as ``rauc-t|lifetime_rauc`` and ``xauc-t|lifetime_xauc`` although
    their values differ from TorchRec's (its RAUC counts label-tied pairs and ignores weights; its XAUC counts the
    pairs within each batch): a TorchRec key holds TorchRec's value only. One batch with a label tie, checked against
    TorchRec's documented RAUC (``1 - D/P`` over all pairs, unweighted), which ours is not."""
    p = np.array([0.1, 0.3, 0.5, 0.5])
    y = np.array([0.0, 1.0, 1.0, 2.0])
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    discordant = sum((p[i] - p[j]) * (y[i] - y[j]) < 0 for i, j in pairs)
    theirs = 1 - discordant / len(pairs)  # TorchRec's RAUC: 1.0 here (no inversion)
    module = tmx.RecMetricModule(["t"], {"regression_auc": "regression_auc", "pairs": "xauc"}, key_style="torchrec",
                                 throughput=False)  # fmt: skip
    module.update({"prediction": torch.from_numpy(p), "label": torch.from_numpy(y)})
    values = module.compute()
    assert list(values) == ["regression_auc-t|lifetime_regression_auc", "pairs-t|lifetime_pairs"]
    # ours: the C-index over pairs of different labels, a prediction tie counting one half
    differ = [(i, j) for i, j in pairs if y[i] != y[j]]
    concordant = sum((p[i] - p[j]) * (y[i] - y[j]) > 0 for i, j in differ)
    tied = sum(p[i] == p[j] for i, j in differ)
    ours = (concordant + tied / 2) / len(differ)
    assert values["regression_auc-t|lifetime_regression_auc"].item() == pytest.approx(ours, rel=1e-12)
    assert ours != pytest.approx(theirs)
    for name in REFUSED_NO_OPTION:  # its own name is TorchRec's key
        with pytest.raises(ValueError, match=rf"metric '{name}' would be logged as {name}-{{task}}\|lifetime_{name}, "
                           rf"TorchRec's key .* whose value it does not compute: give it another name"):  # fmt: skip
            tmx.RecMetricModule(["t"], [name], key_style="torchrec", throughput=False)
        assert torchrec_names(build_metric(name)) is None
    assert torchrec_names(build_metric("regression_auc")) is None


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("multiclass_recall", "MulticlassRecallAtK"),
        ("MulticlassRecallAtK", "MulticlassRecallAtK"),
        ("precision_session_level", "SessionPrecisionAtK"),
        ("recall_session_level", "SessionRecallAtK"),
        ("multi_label_precision", "MultiLabelPrecision"),
        ("num_missing_labels", "NumMissingLabels"),
        ("tensor_weighted_avg", "TensorWeightedAverage"),
        ("hindsight_target_pr", "HindsightTargetPR"),
    ],
)
def test_a_torchrec_name_of_a_standalone_metric_names_our_class(name, cls):
    """A TorchRec user writing ``"multiclass_recall"`` in a config got "Unknown metric name" and the list of known
    names only (with ``{"k": 2}`` as its options, under a name never written: ``'multiclass_recall@2'``). The
    registry builds none of these metrics (they read inputs the module's columns do not give), so the error now
    names the class that computes TorchRec's metric."""
    hint = f"(no registry metric; TorchRec's metric of that name is tmx.{cls}"
    with pytest.raises(ValueError, match=rf"^Unknown metric name {name!r} {re.escape(hint)}"):
        lookup(name)
    assert hasattr(tmx, cls)
    with pytest.raises(ValueError, match=re.escape(hint)):
        tmx.RecMetricModule.from_config({"tasks": ["a"], "metrics": {name: {"k": 2}}, "throughput": False})
    with pytest.raises(ValueError, match=r"Unknown metric name 'multiclass_x'; known names"):
        lookup("multiclass_x")  # no such TorchRec metric: no hint
