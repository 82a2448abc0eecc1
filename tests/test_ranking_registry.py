"""The ranking registry drives everything: one spec per metric, class and functional twins that agree.

* every registered spec has a class and a functional twin, and nothing else is registered;
* each pair takes the same options with the same defaults (the class adds
  ``queries_complete_per_batch`` and TorchMetrics' options) and gives the same values;
* the cutoff rule of the spec applies to both twins alike;
* ``RankingMetrics``/``ranking_metrics`` accept every registered name and reject others with the
  list of known names;
* no module of the ranking packages compares against a metric name (no if/elif dispatch).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.test_ranking import flat_data, padded_data
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional.ranking._registry import DEFAULT_METRICS, SPECS, ranking_spec
from torchmetrics_ext.metrics.ranking._base import _RankingMetric

TWINS = {
    "ndcg": (tmx.NDCG, tmf.ndcg),
    "recall": (tmx.RecallAtK, tmf.recall_at_k),
    "precision": (tmx.PrecisionAtK, tmf.precision_at_k),
    "mrr": (tmx.MRR, tmf.mrr),
    "hit_rate": (tmx.HitRate, tmf.hit_rate),
    "map": (tmx.MAP, tmf.map_at_k),
    "r_precision": (tmx.RPrecision, tmf.r_precision),
    "f1": (tmx.F1AtK, tmf.f1_at_k),
}
PAIRS = {**TWINS, "ranking_metrics": (tmx.RankingMetrics, tmf.ranking_metrics)}
CLASS_ONLY = {"queries_complete_per_batch"}  # per-batch scoring is a property of accumulated state
_EMPTY = inspect.Parameter.empty


def test_every_spec_has_a_class_and_a_functional_twin():
    assert set(TWINS) == set(SPECS)
    for name, (cls, _) in TWINS.items():
        assert cls.spec is SPECS[name]
        assert cls.__name__ == SPECS[name].label
        assert cls.__name__ in tmx.__all__
    assert set(DEFAULT_METRICS) <= set(SPECS)


def _class_options(cls) -> dict[str, object]:
    """The class's options: its own ``__init__`` parameters, then what ``**kwargs`` reaches in the base."""
    own = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    base = {
        p.name: p.default
        for p in inspect.signature(_RankingMetric.__init__).parameters.values()
        if p.kind == p.KEYWORD_ONLY
    }
    return {**base, **own}


def _function_options(fn) -> dict[str, object]:
    """The function's options: its keyword-only parameters (the inputs come first, positionally)."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_twins_take_the_same_options_with_the_same_defaults(name):
    cls, fn = PAIRS[name]
    class_options = _class_options(cls)
    assert set(class_options) - set(_function_options(fn)) == CLASS_ONLY
    assert {key: value for key, value in class_options.items() if key not in CLASS_ONLY} == _function_options(fn)
    inputs = [p.name for p in inspect.signature(fn).parameters.values() if p.kind != p.KEYWORD_ONLY]
    assert inputs == ["preds", "target", "indexes", "mask", "weights"]
    assert [p.name for p in inspect.signature(cls.update).parameters.values()][1:] == inputs


@pytest.mark.parametrize("name", sorted(TWINS))
def test_spec_options_and_cutoff_are_the_signature(name):
    """The spec lists exactly the extra options the twins take; ``k`` follows its cutoff rule."""
    spec = SPECS[name]
    shared = set(_function_options(tmf.r_precision))  # the options every ranking function takes
    options = _function_options(TWINS[name][1])
    assert set(options) - shared - {"k"} == set(spec.options)
    if spec.cutoff == "none":
        assert "k" not in options
    else:
        assert options["k"] is (None if spec.cutoff == "optional" else _EMPTY)


def _option_sets(name):
    spec = SPECS[name]
    k = {} if spec.cutoff == "none" else {"k": 3}
    sets = [k, {**k, "empty_target_action": "zero", "remove_single_length_sessions": True}]
    sets += [{**k, option: True} for option in spec.options]
    if spec.cutoff == "optional":
        sets.append({"k": None})
    return sets


@pytest.mark.parametrize("name", sorted(TWINS))
def test_twins_give_the_same_values(name):
    cls, fn = TWINS[name]
    rng = np.random.default_rng(0)
    for data in (flat_data(rng, ties=True, weights=True), padded_data(rng, ties=True)):
        for options in _option_sets(name):
            metric = cls(**options)
            metric.update(**data)
            torch.testing.assert_close(metric.compute(), fn(**data, **options), rtol=0, atol=0, msg=str(options))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_cutoff_rule_applies_to_both_twins(name):
    cls, fn = TWINS[name]
    data = flat_data(np.random.default_rng(1))
    cutoff = SPECS[name].cutoff
    if cutoff == "required":
        for call in (lambda: cls(k=None), lambda: fn(**data, k=None), lambda: cls(), lambda: fn(**data)):
            with pytest.raises((ValueError, TypeError), match=r"positive integer|required|missing"):
                call()
    elif cutoff == "optional":
        metric = cls(k=None)
        metric.update(**data)
        torch.testing.assert_close(metric.compute(), fn(**data, k=None))
        torch.testing.assert_close(fn(**data), fn(**data, k=None))
    else:  # no cutoff: k is no argument of either twin
        with pytest.raises((TypeError, ValueError)):
            cls(k=3)
        with pytest.raises(TypeError):
            fn(**data, k=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises((ValueError, TypeError)):
            cls(k=bad)
        with pytest.raises((ValueError, TypeError)):
            fn(**data, k=bad)


def test_options_of_other_metrics_are_rejected():
    with pytest.raises(ValueError, match="exponential_gain"):
        tmx.RecallAtK(k=3, exponential_gain=True)
    with pytest.raises(TypeError, match="adaptive_k"):
        tmf.ndcg(torch.rand(2, 3), torch.ones(2, 3), adaptive_k=True)


def test_unknown_metric_names_raise_listing_every_known_name():
    data = flat_data(np.random.default_rng(2))
    calls = (
        lambda: tmx.RankingMetrics(metrics=("ndcg", "auc")),
        lambda: tmf.ranking_metrics(**data, metrics=("ndcg", "auc")),
        lambda: ranking_spec("auc"),
        lambda: tmx.RankingMetrics(metrics=(None,)),
    )
    for call in calls:
        with pytest.raises(ValueError, match="`metrics`") as info:
            call()
        assert all(repr(name) in str(info.value) for name in SPECS)


def test_ranking_metrics_accept_every_registered_name_and_equal_the_single_twins():
    data = flat_data(np.random.default_rng(3), ties=True, weights=True)
    ks = (1, 4, None)
    out = tmf.ranking_metrics(**data, ks=ks, metrics=tuple(SPECS), exponential_gain=True, adaptive_k=True)
    metric = tmx.RankingMetrics(ks=ks, metrics=tuple(SPECS), exponential_gain=True, adaptive_k=True)
    metric.update(**data)
    assert metric.compute().keys() == out.keys()
    expected_keys = set()
    for name, spec in SPECS.items():
        fn = TWINS[name][1]
        options = {option: True for option in spec.options if option != "report_as_loss"}
        cutoffs = [None] if spec.cutoff == "none" else [k for k in ks if k is not None or spec.cutoff == "optional"]
        for k in cutoffs:
            key = name if k is None else f"{name}@{k}"
            expected_keys.add(key)
            single = fn(**data, **options) if spec.cutoff == "none" else fn(**data, k=k, **options)
            # one (queries, requests) reduction: the sums may differ from the single metric's in the last bit
            torch.testing.assert_close(out[key], single, rtol=1e-12, atol=1e-15, msg=key)
            torch.testing.assert_close(metric.compute()[key], single, rtol=1e-12, atol=1e-15, msg=key)
    # None in ks is the whole list for every metric with a cutoff (recall 1); R-precision gives one key
    assert set(out) - expected_keys == {"recall", "precision", "hit_rate", "f1"}
    assert out["recall"].item() == pytest.approx(1.0, rel=1e-12) and "r_precision@1" not in out


_PACKAGES = [
    Path(tmx.__file__).parent / "functional" / "ranking",
    Path(tmx.__file__).parent / "metrics" / "ranking",
]


def _name_comparisons(path: Path) -> list[str]:
    """``x == "ndcg"``, ``x in ("mrr", "map")``, ``match`` cases, ... against registered names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            strings = [
                value.value
                for operand in operands
                for value in ([operand] if isinstance(operand, ast.Constant) else getattr(operand, "elts", []))
                if isinstance(value, ast.Constant) and isinstance(value.value, str)
            ]
            found += [f"{path.name}:{node.lineno} {s!r}" for s in strings if s in SPECS]
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value in SPECS:
            found.append(f"{path.name}:{node.lineno} case {node.value.value!r}")
    return found


def test_no_module_dispatches_on_metric_names():
    files = [path for package in _PACKAGES for path in sorted(package.glob("*.py"))]
    assert len(files) >= 10
    assert [hit for path in files for hit in _name_comparisons(path)] == []


def test_map_twin_is_also_named_map_without_shadowing_the_builtin():
    """``tmx.functional.map`` is ``map_at_k`` (MAP's snake_case name); ``import *`` leaves Python's ``map``."""
    import builtins

    namespace: dict[str, object] = {}
    exec("from torchmetrics_ext.functional import *", namespace)
    assert namespace.get("map", builtins.map) is builtins.map
    assert tmx.functional.map is tmx.functional.map_at_k
    preds, target = torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([[0, 1, 1]])
    # AP of ranks 2 and 3 relevant: (1/2 + 2/3) / 2
    assert tmx.functional.map(preds, target).item() == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("NDCG", " (did you mean 'ndcg'?)."),
        ("Recall@10", " (did you mean 'recall'?; the cutoff 10 goes in `ks`)."),
        ("hit-rate", " (did you mean 'hit_rate'?)."),
        ("hitrate", " (did you mean 'hit_rate'?)."),
        ("mAP", " (did you mean 'map'?)."),
        ("xyz", "got 'xyz'."),
    ],
)
def test_an_unknown_ranking_name_suggests_the_one_meant(given, hint):
    """`RankingMetrics(metrics=("NDCG", "Recall@10"))`, names as TorchMetrics' classes and the Hugging Face
    adapter's own keys write them, got the list of names alone (the module's registry names a guess)."""
    for build in (
        lambda: tmx.RankingMetrics(ks=(1,), metrics=("ndcg", given)),
        lambda: tmf.ranking_metrics(torch.rand(1, 3), torch.tensor([[0, 1, 0]]), ks=(1,), metrics=(given,)),
    ):
        with pytest.raises(
            ValueError, match=r"^Expected `metrics` entries from \(.*\), got " + re.escape(f"{given!r}")
        ) as caught:
            build()
        assert str(caught.value).endswith(hint)


@pytest.mark.parametrize(
    ("ks", "metrics", "argument", "repeated"),
    [
        ((1, 1), ("ndcg",), "ks", "1"),
        ((10, 5, 10), ("ndcg", "recall"), "ks", "10"),
        ((None, 3, None), ("mrr",), "ks", "None"),
        ((np.int64(2), 2), ("mrr",), "ks", "2"),  # the same cutoff however it is written
        ((1, 5), ("ndcg", "ndcg"), "metrics", "'ndcg'"),
        ((1,), ("mrr", "map", "mrr", "map"), "metrics", "'mrr', 'map'"),
    ],
)
def test_a_repeated_cutoff_or_metric_name_is_refused(ks, metrics, argument, repeated):
    """`ks=(10, 5, 10)` or `metrics=("ndcg", "ndcg")` gave one key per distinct value, the typo unseen:
    refused by name, with the repeated values, in the class, its functional twin and the Hugging Face adapter."""
    from torchmetrics_ext.integrations.huggingface import ranking_compute_metrics

    data = flat_data(np.random.default_rng(4))
    for build in (
        lambda: tmx.RankingMetrics(ks=ks, metrics=metrics),
        lambda: tmf.ranking_metrics(**data, ks=ks, metrics=metrics),
        lambda: ranking_compute_metrics(ks=ks, metrics=metrics),
    ):
        with pytest.raises(ValueError, match=rf"^Expected `{argument}` without repeats") as caught:
            build()
        assert f"repeats {repeated}" in str(caught.value)
