"""Metric arithmetic (TorchMetrics' ``CompositionalMetric``) over the package's metrics, seeded and random.

The random test draws expressions over the package's metrics: registry metrics (NE, CTR, AUC, log loss, MSE),
``Windowed(...)`` entries (its value is a dict), ``RankingMetrics`` entries and ``NDCG`` over flat rows with
``indexes``, 3-task metrics whose value is ``(T,)`` (``metric[1]``), ``Segmented`` ``(T, S)`` values; with Python
numbers and tensors on either side, ``abs``/unary minus/plus, nested expressions, one metric used twice
(``ne - ne``) and one metric in two expressions of one tree. It runs random ``forward`` and ``update`` steps,
``compute`` in between, ``reset``, ``state_dict`` into a freshly built expression, ``deepcopy``, pickle,
``MetricCollection`` with expressions as members and rejected batches (every metric's states unchanged), and
compares ``forward``'s batch value and ``compute`` with each metric run alone on the same steps combined with
plain torch arithmetic; NE, CTR and AUC alone are also checked against NumPy / scikit-learn written here.

TorchMetrics' explicit compute groups (``compute_groups=[["a", "b"]]``) update only a group's first member and
share the states that member declares itself; ``Windowed`` and expressions keep theirs in the metrics they wrap,
so the others of such a group never saw a batch (``nan``). The collection's ``update`` now refuses such a group
before any member changes, naming it; automatic groups and explicit groups of other metrics are as before.

``TMX_AR_SEEDS=N`` runs N random sequences (default 40); ``TMX_AR_SEEDS=A-B`` runs seeds A..B.
"""

from __future__ import annotations

import copy
import operator
import os
import pickle
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx


def _seeds() -> list[int]:
    spec = os.environ.get("TMX_AR_SEEDS", "40")
    if "-" in spec:
        first, last = (int(part) for part in spec.split("-"))
        return list(range(first, last + 1))
    return list(range(int(spec)))


# ----------------------------------------------------------------------------------------------- references


def _ne_ref(p: np.ndarray, t: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    loss = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    c = t.mean()
    return float(loss / -(c * np.log(c) + (1 - c) * np.log(1 - c)))


_NUMPY_REFS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "ne": _ne_ref,
    "ctr": lambda p, t: float(t.mean()),
    "auc": lambda p, t: float(roc_auc_score(t, p)),
}

# ----------------------------------------------------------------------------------------------- leaves

# (name, factory, entry) per family: a leaf is factory() or factory()[entry]
_SINGLE: list[tuple[str, Callable[[], Metric], Any]] = [
    ("ne", tmx.NormalizedEntropy, None),
    ("ctr", tmx.CTR, None),
    ("auc", tmx.AUC, None),
    ("log_loss", tmx.LogLoss, None),
    ("mse", tmx.WeightedMSE, None),
    ("windowed_ctr", lambda: tmx.Windowed(tmx.CTR(), 12), "window"),
    ("windowed_ne", lambda: tmx.Windowed(tmx.NormalizedEntropy(), 20), "lifetime"),
    ("ranking", lambda: tmx.RankingMetrics(ks=[2, 3], metrics=["ndcg", "mrr"]), "ndcg@2"),
    ("ranking_mrr", lambda: tmx.RankingMetrics(ks=[2, 3], metrics=["ndcg", "mrr"]), "mrr@3"),
    ("ndcg", lambda: tmx.NDCG(k=3), None),
]
_TASKS: list[tuple[str, Callable[[], Metric], Any]] = [
    ("ne", lambda: tmx.NormalizedEntropy(num_tasks=3), None),
    ("ctr", lambda: tmx.CTR(num_tasks=3), None),
    ("auc", lambda: tmx.AUC(num_tasks=3), None),
    ("ne_task", lambda: tmx.NormalizedEntropy(num_tasks=3), 1),
    ("windowed_ctr", lambda: tmx.Windowed(tmx.CTR(num_tasks=3), 15), "lifetime"),
]
_SEGMENTED: list[tuple[str, Callable[[], Metric], Any]] = [
    ("segmented_ne", lambda: tmx.Segmented(tmx.NormalizedEntropy(), num_segments=3), None),
    ("segmented_ctr", lambda: tmx.Segmented(tmx.CTR(), num_segments=3), None),
    ("ne", tmx.NormalizedEntropy, None),
]
_FAMILIES = {"single": _SINGLE, "tasks": _TASKS, "segmented": _SEGMENTED}


def _batch(rng: np.random.Generator, family: str, size: int) -> dict[str, Tensor]:
    shape = (3, size) if family == "tasks" else (size,)
    preds = rng.uniform(0.02, 0.98, shape)
    target = (rng.uniform(size=shape) < preds).astype(np.float64)
    target[..., 0], target[..., 1] = 1.0, 0.0  # both labels in every batch (AUC, NE defined)
    batch = {"preds": torch.tensor(preds, dtype=torch.float32), "target": torch.tensor(target, dtype=torch.float32)}
    if family == "single":
        batch["indexes"] = torch.tensor(np.sort(rng.integers(0, max(2, size // 4), size)))
    if family == "segmented":
        batch["segments"] = torch.tensor(rng.integers(0, 3, size))
    return batch


def _bad_batch(rng: np.random.Generator, family: str, size: int, every_metric_refuses: bool) -> dict[str, Tensor]:
    """A batch some metrics refuse (soft labels, a probability above 1) or every metric does (a shorter target)."""
    batch = _batch(rng, family, size)
    kind = 2 if every_metric_refuses else rng.integers(0, 3)
    if kind == 0:  # soft labels: AUC refuses them, CTR/NE take them
        batch["target"] = torch.full_like(batch["target"], 0.5)
    elif kind == 1:  # a probability above 1
        batch["preds"] = batch["preds"].clone()
        batch["preds"][..., -1] = 1.5
    else:  # a shorter target
        batch["target"] = batch["target"][..., :-1]
    return batch


# ----------------------------------------------------------------------------------------------- expressions

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_UNARY: dict[str, Callable[[Any], Any]] = {"abs": abs, "neg": operator.neg, "pos": operator.pos}


def _random_tree(rnd: random.Random, num_leaves: int, depth: int, vector: bool = False) -> Any:
    """A tree of ("leaf", i), ("num", x), ("tensor", x), ("bin", op, a, b), ("un", op, a), ("idx", i, a)."""
    if depth == 0 or rnd.random() < 0.3:
        return ("leaf", rnd.randrange(num_leaves))
    if rnd.random() < 0.25:
        return ("un", rnd.choice(list(_UNARY)), _random_tree(rnd, num_leaves, depth - 1, vector))
    if vector and rnd.random() < 0.2:  # one entry of a (T,) or (S,) value: (ne - ctr)[1]
        return ("idx", rnd.randrange(3), _random_tree(rnd, num_leaves, depth - 1, vector))
    op = rnd.choice(list(_BINARY))
    left = _random_tree(rnd, num_leaves, depth - 1, vector)
    kind = rnd.random()
    if kind < 0.25:
        right: Any = ("num", rnd.choice([2, 0.5, 100, -3.0]))
    elif kind < 0.4:
        right = ("tensor", rnd.choice([2.0, 0.25, -1.5]))
    else:
        right = _random_tree(rnd, num_leaves, depth - 1, vector)
    if right[0] in ("num", "tensor") and rnd.random() < 0.5:
        left, right = right, left  # reflected: 2 - metric
    if op == "/" and right[0] == "leaf":
        op = "*"  # a metric's value may be 0 (NDCG of a batch): keep divisions by constants and expressions
    return ("bin", op, left, right)


def _leaves_of(tree: Any) -> set[int]:
    if tree[0] == "leaf":
        return {tree[1]}
    if tree[0] in ("un", "idx"):
        return _leaves_of(tree[2])
    if tree[0] == "bin":
        return _leaves_of(tree[2]) | _leaves_of(tree[3])
    return set()


def _renumbered(tree: Any, numbers: dict[int, int]) -> Any:
    if tree[0] == "leaf":
        return ("leaf", numbers[tree[1]])
    if tree[0] in ("un", "idx"):
        return (tree[0], tree[1], _renumbered(tree[2], numbers))
    if tree[0] == "bin":
        return ("bin", tree[1], _renumbered(tree[2], numbers), _renumbered(tree[3], numbers))
    return tree


def _evaluate(tree: Any, leaf: Callable[[int], Any]) -> Any:
    """The tree over the leaves' values, in plain torch arithmetic (a metric, or a reference value)."""
    kind = tree[0]
    if kind == "leaf":
        return leaf(tree[1])
    if kind == "num":
        return tree[1]
    if kind == "tensor":
        return torch.tensor(tree[1], dtype=torch.float64)
    if kind == "un":
        return _UNARY[tree[1]](_evaluate(tree[2], leaf))
    if kind == "idx":
        return _evaluate(tree[2], leaf)[tree[1]]
    return _BINARY[tree[1]](_evaluate(tree[2], leaf), _evaluate(tree[3], leaf))


class _Case:
    """A random expression spec: its leaves (family entries) and trees; ``build`` gives fresh metrics."""

    def __init__(self, seed: int) -> None:
        rnd = random.Random(seed)
        self.family = rnd.choice(list(_FAMILIES))
        entries = _FAMILIES[self.family]
        self.leaves = [rnd.choice(entries) for _ in range(rnd.randint(1, 3))]
        trees = []
        while len(trees) < rnd.randint(1, 2):
            tree = _random_tree(rnd, len(self.leaves), rnd.randint(1, 3), self.family != "single")
            if tree[0] != "leaf" and _leaves_of(tree) and self._indexes_vectors(tree):
                trees.append(tree)
        if rnd.random() < 0.3:  # one metric used twice: ne - ne
            trees.append(("bin", "-", ("leaf", 0), ("leaf", 0)))
        used = sorted(set().union(*(_leaves_of(tree) for tree in trees)))
        self.leaves = [self.leaves[i] for i in used]  # the metrics the trees use, renumbered
        self.trees = [_renumbered(tree, {old: new for new, old in enumerate(used)}) for tree in trees]
        # one tree whose metrics are shared by the others: `first + second` of the same metric objects
        self.joined = rnd.random() < 0.3 and len(trees) > 1
        self.in_collection = rnd.random() < 0.4 and not self.joined

    def _indexes_vectors(self, tree: Any) -> bool:
        """Whether every ``[i]`` of the tree picks from a (3,) value (not from a scalar metric's value)."""

        def shape(i: int) -> Tensor:
            name, _, entry = self.leaves[i]
            family = self.family
            scalar = family == "single" or isinstance(entry, int) or (family == "segmented" and name == "ne")
            return torch.ones(()) if scalar else torch.ones(3)

        try:
            _evaluate(tree, shape)
        except IndexError:
            return False
        return True

    def build(self) -> tuple[list[Metric], list[Metric], Any]:
        """(the metrics, the leaves' metric or entry metric, the expression driven)."""
        metrics = [factory() for _, factory, _ in self.leaves]
        operands = [m if entry is None else m[entry] for m, (_, _, entry) in zip(metrics, self.leaves, strict=True)]
        expressions = [_evaluate(tree, operands.__getitem__) for tree in self.trees]
        if self.joined:
            driven: Any = expressions[0]
            for other in expressions[1:]:
                driven = driven + other
        elif self.in_collection:
            driven = MetricCollection({f"e{i}": e for i, e in enumerate(expressions)}, compute_groups=False)
        else:
            driven = expressions[0] if len(expressions) == 1 else None
            if driven is None:
                driven = MetricCollection({f"e{i}": e for i, e in enumerate(expressions)}, compute_groups=True)
        return metrics, operands, driven

    def reference(self, leaf_values: list[Any]) -> Any:
        """What ``driven`` should give for these leaf values (the metric alone's values, entries picked)."""
        values = [v if entry is None else v[entry] for v, (_, _, entry) in zip(leaf_values, self.leaves, strict=True)]
        results = [_evaluate(tree, values.__getitem__) for tree in self.trees]
        if self.joined:
            total = results[0]
            for other in results[1:]:
                total = total + other
            return total
        if len(results) == 1 and not self.in_collection:
            return results[0]
        return {f"e{i}": r for i, r in enumerate(results)}


def _shared_leaves(case: _Case) -> bool:
    """Whether some metric is in two members of a collection (the collection would feed it twice)."""
    if case.joined or len(case.trees) == 1:
        return False
    seen: set[int] = set()
    for tree in case.trees:
        used = _leaves_of(tree)
        if used & seen:
            return True
        seen |= used
    return False


def _assert_close(actual: Any, expected: Any, what: str) -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected), what
        for key in expected:
            _assert_close(actual[key], expected[key], f"{what}[{key}]")
        return
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = torch.as_tensor(actual).to(torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, equal_nan=True, msg=what)


def _states(metric: Metric) -> list[Any]:
    """Every state of the metric and the metrics it wraps, copied (lists as lists of tensors)."""
    out = []
    for module in metric.modules():
        if isinstance(module, Metric):
            for name in module._defaults:
                value = getattr(module, name)
                out.append((name, [v.clone() for v in value] if isinstance(value, list) else value.clone()))
            out.append(("_update_count", module._update_count))
    return out


def _same_states(before: list[Any], after: list[Any]) -> bool:
    if len(before) != len(after):
        return False
    for (name_a, a), (name_b, b) in zip(before, after, strict=True):
        if name_a != name_b:
            return False
        if isinstance(a, list):
            if len(a) != len(b) or not all(torch.equal(x, y) for x, y in zip(a, b, strict=True)):
                return False
        elif isinstance(a, Tensor):
            if a.shape != b.shape or not torch.equal(a, b):
                return False
        elif a != b:
            return False
    return True


def _leaf_kwargs(metric: Metric, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return metric._filter_kwargs(**batch)


def _run_case(seed: int) -> None:
    case = _Case(seed)
    if _shared_leaves(case):
        case.in_collection = False
        case.joined = True
    rng = np.random.default_rng(seed)
    _, _, driven = case.build()
    alone = [factory() for _, factory, _ in case.leaves]
    accepted: list[dict[str, Tensor]] = []  # batches since the last reset, for the NumPy references
    what = f"seed {seed}: {case.family} {[name for name, _, _ in case.leaves]} {case.trees}"

    def check_compute(step: int) -> None:
        expected = case.reference([m.compute() for m in alone])
        _assert_close(driven.compute(), expected, f"{what}, step {step}: compute")
        for (name, _, _), metric in zip(case.leaves, alone, strict=True):
            if name in _NUMPY_REFS and accepted and case.family != "segmented":
                preds = torch.cat([b["preds"] for b in accepted], -1).double().numpy()
                target = torch.cat([b["target"] for b in accepted], -1).double().numpy()
                ref = _NUMPY_REFS[name]
                expected_value = ref(preds, target) if preds.ndim == 1 else [ref(p, t) for p, t in zip(preds, target)]
                _assert_close(metric.compute(), expected_value, f"{what}, step {step}: {name} alone vs numpy")

    for step in range(rng.integers(4, 9)):
        action = rng.choice(["update", "forward", "compute", "reset", "reload", "copy", "pickle", "bad"],
                            p=[0.3, 0.25, 0.1, 0.05, 0.1, 0.07, 0.06, 0.07])  # fmt: skip
        size = int(rng.integers(6, 14))
        if action in ("update", "forward"):
            batch = _batch(rng, case.family, size)
            if action == "update":
                driven.update(**batch)
                for metric in alone:
                    metric.update(**_leaf_kwargs(metric, batch))
            else:
                value = driven(**batch)
                expected = case.reference([metric(**_leaf_kwargs(metric, batch)) for metric in alone])
                _assert_close(value, expected, f"{what}, step {step}: forward's batch value")
            accepted.append(batch)
        elif action == "compute" and accepted:
            check_compute(step)
        elif action == "reset":
            driven.reset()
            for metric in alone:
                metric.reset()
            accepted = []
        elif action == "reload":
            _, _, fresh = case.build()
            for module in (*driven.modules(), *fresh.modules()):
                if isinstance(module, Metric):
                    module.persistent(True)
            fresh.load_state_dict(driven.state_dict())
            driven = fresh
        elif action in ("copy", "pickle"):
            driven = copy.deepcopy(driven) if action == "copy" else pickle.loads(pickle.dumps(driven))
        elif action == "bad":
            # a MetricCollection updates its members one after another (TorchMetrics'): one refused by a later member
            # stays in the earlier ones, as for any metrics; each expression is checked alone here
            batch = _bad_batch(rng, case.family, size, isinstance(driven, MetricCollection))
            before = _states(driven)
            path = driven.update if rng.random() < 0.5 else driven
            try:
                path(**batch)
            except (ValueError, TypeError, RuntimeError):
                assert _same_states(before, _states(driven)), f"{what}, step {step}: a refused batch changed a state"
            else:  # every metric took it: so does each alone
                for metric in alone:
                    metric.update(**_leaf_kwargs(metric, batch))
                accepted.append(batch)
    if accepted:
        check_compute(-1)


@pytest.mark.parametrize("seed", _seeds())
def test_random_expressions_are_the_arithmetic_of_their_metrics_run_alone(seed):
    """See the module docstring: every value an expression gives is its metrics' values alone, combined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run_case(seed)


# ----------------------------------------------------------------------------------------------- explicit groups

_P = torch.tensor([0.2, 0.7, 0.9, 0.4, 0.6])
_T = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])

_WRAPPED_PAIRS: dict[str, Callable[[], dict[str, Metric]]] = {
    "windowed": lambda: {"a": tmx.Windowed(tmx.CTR(), 30), "b": tmx.Windowed(tmx.CTR(), 30)},
    "expressions": lambda: {"a": tmx.CTR() * 100, "b": tmx.CTR() * 100},
    "metric_then_expression": lambda: {"a": tmx.CTR(), "b": tmx.CTR() * 100},
    "windowed_then_metric": lambda: {"a": tmx.Windowed(tmx.CTR(), 30), "b": tmx.CTR()},
    "entries": lambda: {"a": tmx.Windowed(tmx.CTR(), 30)["window"], "b": tmx.Windowed(tmx.CTR(), 30)["window"]},
}


@pytest.mark.parametrize("pair", list(_WRAPPED_PAIRS))
def test_an_explicit_compute_group_with_a_wrapping_member_is_refused_before_any_member_changes(pair):
    """TorchMetrics updated only ``a`` and shared none of a wrapper's states: ``b`` reported nan after one update."""
    members = _WRAPPED_PAIRS[pair]()
    collection = MetricCollection({**members, "c": tmx.NormalizedEntropy()}, compute_groups=[["a", "b"]])
    before = {name: _states(metric) for name, metric in members.items()}
    with pytest.raises(ValueError, match=r"compute_groups.*'[ab]'.*\['a', 'b'\]"):
        collection.update(_P, _T)
    for name, metric in members.items():
        assert _same_states(before[name], _states(metric)), name
    assert collection["c"]._update_count == 0


@pytest.mark.parametrize("pair", list(_WRAPPED_PAIRS))
def test_automatic_compute_groups_keep_wrapping_members_apart_with_their_own_values(pair):
    """``compute_groups=True`` as before: no group joins these members, and each is its value alone (NumPy)."""
    collection = MetricCollection(_WRAPPED_PAIRS[pair](), compute_groups=True)
    collection.update(_P, _T)
    collection.update(_P[:3], _T[:3])
    assert all(len(group) == 1 for group in collection.compute_groups.values())
    ctr = float(torch.cat([_T, _T[:3]]).mean())
    values = collection.compute()
    for name in ("a", "b"):
        value = collection[name].compute()
        if isinstance(value, dict):
            assert float(value["lifetime"]) == float(value["window"]) == pytest.approx(ctr), name
        else:
            assert float(value) == pytest.approx(
                ctr * (100.0 if getattr(collection[name], "op", None) is torch.mul else 1.0)
            ), name
    assert all(torch.isfinite(torch.as_tensor(value)) for value in values.values())


def test_an_explicit_group_of_plain_metrics_beside_a_windowed_member_is_as_before():
    """A group of metrics declaring their states (two CTRs) still shares them; a ``Windowed`` left out of every
    group is its own group and takes each batch."""
    collection = MetricCollection(
        {"a": tmx.CTR(), "b": tmx.CTR(), "w": tmx.Windowed(tmx.CTR(), 4), "e": tmx.CTR() * 100},
        compute_groups=[["a", "b"]],
    )
    collection.update(_P, _T)
    collection.update(_P[:2], _T[:2])
    values = collection.compute()
    ctr = float(torch.cat([_T, _T[:2]]).mean())
    assert float(values["a"]) == float(values["b"]) == pytest.approx(ctr)
    assert float(values["e"]) == pytest.approx(100 * ctr)
    assert float(values["lifetime"]) == pytest.approx(ctr)
    assert float(values["window"]) == pytest.approx(float(torch.cat([_T[3:], _T[:2]]).mean()))


def test_forward_through_an_explicit_group_with_a_wrapping_member_feeds_each_member():
    """``collection(batch)`` runs every member's own ``forward`` (no sharing): values are right, and a later
    ``update`` is refused, naming the group."""
    collection = MetricCollection(_WRAPPED_PAIRS["windowed"](), compute_groups=[["a", "b"]])
    collection(_P, _T)
    values = collection.compute()
    assert float(values["b_lifetime"]) == pytest.approx(float(_T.mean()))
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        collection.update(_P, _T)
    assert float(collection.compute()["b_lifetime"]) == pytest.approx(float(_T.mean()))


# ----------------------------------------------------------------------------------------------- DDP


def _ddp_batches(rank: int) -> list[dict[str, Tensor]]:
    rng = np.random.default_rng(100 + rank)
    return [_batch(rng, "tasks", 9) for _ in range(2 if rank == 0 else 1)]


def _ddp_expressions_on_rank(rank: int, world_size: int) -> dict[str, Any]:
    """``ne[1] - ctr[2] * 100`` and ``abs(-windowed['lifetime'])`` of 3 tasks, fed by update and by forward."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ne, ctr = tmx.NormalizedEntropy(num_tasks=3), tmx.CTR(num_tasks=3)
        first = ne[1] - ctr[2] * 100 + 2 * ne[0]
        windowed = tmx.Windowed(tmx.AUC(num_tasks=3), 30)
        second = abs(-windowed["lifetime"]) / 2
        for i, batch in enumerate(_ddp_batches(rank)):
            for expression in (first, second):
                if i % 2:
                    expression(**batch)
                else:
                    expression.update(**batch)
        return {"first": first.compute(), "second": second.compute()}


@pytest.mark.ddp
def test_expressions_over_two_ranks_are_the_arithmetic_of_all_their_rows(ddp_pool):
    """Real gloo, uneven shards: each metric syncs in its own ``compute``; values are NumPy/sklearn of both ranks'
    rows."""
    results = ddp_pool.run(_ddp_expressions_on_rank)
    rows = _ddp_batches(0) + _ddp_batches(1)
    preds = torch.cat([b["preds"] for b in rows], -1).double().numpy()
    target = torch.cat([b["target"] for b in rows], -1).double().numpy()
    first = _ne_ref(preds[1], target[1]) - target[2].mean() * 100 + 2 * _ne_ref(preds[0], target[0])
    second = np.array([roc_auc_score(t, p) for p, t in zip(preds, target, strict=True)]) / 2
    for rank, result in enumerate(results):
        _assert_close(result["first"], first, f"rank {rank}: first")
        _assert_close(result["second"], second, f"rank {rank}: second")
