"""A metric loaded through a parent module (a user's model, Lightning's checkpoint restore) loads all or nothing.

``nn.Module.load_state_dict`` calls each submodule's ``_load_from_state_dict`` and raises for missing
keys only at the end: a metric that starts afresh on another setting's checkpoint used to be reset
by then, so a refused strict load left it reset. The references are computed here from the data
(numpy formulas, sklearn), never taken from the metric.
"""

from __future__ import annotations

import copy
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics import Metric, MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext.wrappers.windowed import Windowed


class _Model(torch.nn.Module):
    """A user's model holding a metric next to a layer of its own (a LightningModule's layout)."""

    def __init__(self, metric: torch.nn.Module) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 1)
        self.metric = metric


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    """Normalized entropy of probabilities ``p`` for labels ``y`` (unit weights)."""
    cross_entropy = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    rate = y.mean()
    return float(cross_entropy / -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)))


def _recall_at_k(scores: np.ndarray, target: np.ndarray, k: int) -> float:
    """Share of the rows whose target class is among their ``k`` highest scores."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(target, top)]))


def _batch(kind: str, seed: int, n: int) -> tuple[tuple[torch.Tensor, ...], dict]:
    """``(update arguments, the data as numpy)`` for a metric of ``kind``."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "recall":
        scores = torch.rand(n, 20, generator=gen)
        target = torch.randint(0, 20, (n,), generator=gen)
        return (scores, target), {"scores": scores.double().numpy(), "target": target.numpy()}
    if kind == "auc":  # at the centres of the 200 bins: the binned AUC is the exact one
        preds = (torch.randint(0, 200, (n,), generator=gen).double() + 0.5) / 200
    else:
        preds = torch.rand(n, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(n, generator=gen, dtype=torch.float64) < preds).long()
    target[:2] = torch.tensor([0, 1])  # both classes in every batch
    return (preds, target), {"preds": preds.numpy(), "target": target.numpy()}


def _reference(kind: str, batches: list[dict]) -> float:
    """The metric's value over ``batches``, from the data."""
    data = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    if kind == "recall":
        return _recall_at_k(data["scores"], data["target"], 10)
    if kind == "auc":
        return float(roc_auc_score(data["target"], data["preds"]))
    return _ne(data["preds"], data["target"])


# (kind, the saved metric (another setting), the loaded one, what the strict load's error names, strict=False loads)
CASES = [
    (
        "recall",
        lambda: tmx.MulticlassRecallAtK(k=5, num_classes=20),
        lambda: tmx.MulticlassRecallAtK(k=10, num_classes=20),
        r"Missing key\(s\) in state_dict: .*metric\.hit_sum_k10_of20(.|\n)*saved with k=5",
        True,
    ),
    (
        "auc",
        lambda: tmx.AUC(num_bins=100, bin_space="probability"),
        lambda: tmx.AUC(num_bins=200, bin_space="probability"),
        r"size mismatch for metric\.hist",
        False,
    ),
    (
        "ne",
        lambda: tmx.NormalizedEntropy(from_logits=True),
        lambda: tmx.NormalizedEntropy(from_logits=False),
        r"Missing key\(s\) in state_dict: .*metric\.cross_entropy_sum(.|\n)*a checkpoint of other settings",
        True,
    ),
]


def _updated(make, kind: str, seed: int, n: int = 64) -> tuple[tmx.Metric, dict]:
    metric = make()
    metric.persistent(True)
    args, data = _batch(kind, seed, n)
    metric.update(*args)
    return metric, data


@pytest.mark.parametrize(("kind", "saved", "loaded", "match", "afresh"), CASES, ids=[c[0] for c in CASES])
def test_a_strict_parent_load_of_another_settings_checkpoint_leaves_the_metric_as_it_was(
    kind, saved, loaded, match, afresh
):
    """The parent's strict load raises naming the states (and, for a metric that would start afresh, why)
    and the metric keeps its value, its update count and its next updates add to them."""
    source, _ = _updated(saved, kind, seed=1)
    checkpoint = _Model(source).state_dict()
    metric, first = _updated(loaded, kind, seed=2)
    model = _Model(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note is in the error, not warned besides
        with pytest.raises(RuntimeError, match=match):
            model.load_state_dict(checkpoint)
    assert metric._update_count == 1
    assert metric.compute().item() == pytest.approx(_reference(kind, [first]), rel=1e-12)
    args, second = _batch(kind, seed=3, n=48)
    metric.update(*args)
    assert metric._update_count == 2
    assert metric.compute().item() == pytest.approx(_reference(kind, [first, second]), rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "saved", "loaded", "match", "afresh"), [c for c in CASES if c[4]], ids=["recall", "ne"]
)
def test_a_non_strict_parent_load_of_another_settings_checkpoint_starts_the_metric_afresh(
    kind, saved, loaded, match, afresh
):
    """strict=False: the rest of the model loads, the metric starts afresh with the note as a warning."""
    source, _ = _updated(saved, kind, seed=1)
    checkpoint = _Model(source).state_dict()
    metric, _ = _updated(loaded, kind, seed=2)
    model = _Model(metric)
    with pytest.warns(
        UserWarning,
        match=r"metric: the checkpoint holds .*strict=False resumes the rest of it and the "
        r"metric starts afresh",
    ):
        result = model.load_state_dict(checkpoint, strict=False)
    assert result.missing_keys and all(key.startswith("metric.") for key in result.missing_keys)
    assert torch.equal(model.head.weight, checkpoint["head.weight"])
    assert metric._update_count == 0
    args, data = _batch(kind, seed=3, n=48)
    metric.update(*args)
    assert metric.compute().item() == pytest.approx(_reference(kind, [data]), rel=1e-12)


def _windowed(seed: int, n: int) -> tuple[Windowed, list[dict]]:
    metric = Windowed(tmx.NormalizedEntropy(), window_size=40)
    args, data = _batch("ne", seed, n)
    metric.update(*args)
    return metric, [data]


def test_a_windowed_metric_loaded_through_a_parent_strictly_keeps_its_lifetime_and_window():
    """A checkpoint of the wrapper without its window ring (an older format) starts it afresh: a strict load
    through the parent raises saying so and leaves lifetime, window and ring as they were; strict=False resets."""
    saved, _ = _windowed(seed=1, n=30)
    checkpoint = _Model(saved).state_dict()
    del checkpoint["metric._extra_state"]
    metric, batches = _windowed(seed=2, n=30)
    model = _Model(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=r"Missing key\(s\)(.|\n)*it holds no window ring"):
            model.load_state_dict(checkpoint)
    values = metric.compute()
    assert metric._update_count == 1
    assert values["lifetime"].item() == pytest.approx(_ne(batches[0]["preds"], batches[0]["target"]), rel=1e-12)
    assert values["window"].item() == pytest.approx(values["lifetime"].item(), rel=1e-12)
    args, data = _batch("ne", seed=3, n=20)
    metric.update(*args)  # the window keeps the newest whole updates of at most 40 samples: this one
    values = metric.compute()
    both = {key: np.concatenate([batches[0][key], data[key]]) for key in data}
    assert values["lifetime"].item() == pytest.approx(_ne(both["preds"], both["target"]), rel=1e-12)
    assert values["window"].item() == pytest.approx(_ne(data["preds"], data["target"]), rel=1e-12)
    with pytest.warns(UserWarning, match=r"metric: .*it holds no window ring.*the wrapper starts afresh"):
        model.load_state_dict(checkpoint, strict=False)
    assert metric._update_count == 0


def _module(from_logits: bool) -> tmx.RecMetricModule:
    task = tmx.RecTaskInfo("a", label_name="y", prediction_name="p")
    ne = {"ne": lambda num_tasks: tmx.NormalizedEntropy(num_tasks, from_logits=from_logits)}
    return tmx.RecMetricModule([task], ne, throughput=False)


def test_a_rec_metric_module_loaded_through_a_parent_strictly_keeps_its_metrics():
    """The same through a ``RecMetricModule`` (which puts itself back whole): its NE keeps its steps."""
    saved = _module(from_logits=True)
    args, _ = _batch("ne", seed=1, n=50)
    saved.update({"p": torch.logit(args[0]), "y": args[1]})
    checkpoint = _Model(saved).state_dict()
    module = _module(from_logits=False)
    args, first = _batch("ne", seed=2, n=50)
    module.update({"p": args[0], "y": args[1]})
    model = _Model(module)
    with pytest.raises(RuntimeError, match=re.escape("metric.metrics.ne.cross_entropy_sum")):
        model.load_state_dict(checkpoint)
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(first["preds"], first["target"]), rel=1e-12)
    args, second = _batch("ne", seed=3, n=30)
    module.update({"p": args[0], "y": args[1]})
    both = {key: np.concatenate([first[key], second[key]]) for key in first}
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(both["preds"], both["target"]), rel=1e-12)
    with pytest.warns(UserWarning, match=r"metric\.metrics\.ne: the checkpoint holds .*starts afresh"):
        model.load_state_dict(checkpoint, strict=False)
    module.update({"p": args[0], "y": args[1]})
    assert module.compute()["ne/a"].item() == pytest.approx(_ne(second["preds"], second["target"]), rel=1e-12)


@pytest.mark.parametrize("raises", ["lifetime pre-hook", "window post-hook"])
def test_a_parent_load_that_a_wrapped_metric_ends_leaves_the_wrapper_picklable(raises: str) -> None:
    """A load ended by an exception in the wrapper's child (a user's hook) runs none of the wrapper's post-hooks:
    what its load kept for them is no part of a copy (pickle, deepcopy, torch.save, ``ddp_spawn``)."""
    import copy
    import io
    import pickle

    metric, batches = _windowed(seed=1, n=30)
    model = _Model(metric)
    checkpoint = model.state_dict()
    child = metric._modules["lifetime" if "lifetime" in raises else "window"]

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a user's hook")

    if "pre" in raises:
        handle = child._register_load_state_dict_pre_hook(broken)
    else:
        handle = child.register_load_state_dict_post_hook(broken)
    with pytest.raises(KeyError, match="a user's hook"):
        model.load_state_dict(checkpoint)
    handle.remove()
    expected = _ne(batches[0]["preds"], batches[0]["target"])
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert copied.metric.compute()["lifetime"].item() == pytest.approx(expected, rel=1e-12)
        copied.load_state_dict(checkpoint)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    model.load_state_dict(checkpoint)  # the next load is not disturbed by what the ended one kept
    assert metric.compute()["lifetime"].item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- every route of a refused load


def _two_task_batch(seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """``(preds, target)`` of shape ``(2, n)``: probabilities and labels of both classes per task."""
    gen = torch.Generator().manual_seed(seed)
    preds = torch.rand(2, n, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(2, n, generator=gen, dtype=torch.float64) < preds).long()
    target[:, :2] = torch.tensor([0, 1])
    return preds, target


def _metrics(*metrics: tmx.Metric) -> list[tmx.Metric]:
    for metric in metrics:
        if not isinstance(metric, Windowed):
            metric.persistent(True)
    return list(metrics)


def _module_of_two_tasks() -> tmx.RecMetricModule:
    tasks = [tmx.RecTaskInfo(t, label_name=f"y{t}", prediction_name=f"p{t}") for t in "ab"]
    return tmx.RecMetricModule(tasks, ["ne", "ctr", "auc"], window_size=60, throughput=False)


class _Nested(torch.nn.Module):
    """Windowed metrics two levels down in plain modules: no load guard of the package above them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 1)
        inner = torch.nn.ModuleDict({"ne": Windowed(tmx.NormalizedEntropy(2), window_size=60)})
        self.blocks = torch.nn.ModuleDict({"ctr": Windowed(tmx.CTR(2), window_size=60), "inner": inner})


# route -> a fresh model of that route (metrics only where the route is a metric)
ROUTES = {
    "direct metric": lambda: _metrics(tmx.NormalizedEntropy(2))[0],
    "direct Windowed": lambda: Windowed(tmx.AUC(2), window_size=60),
    "RecMetricModule": _module_of_two_tasks,
    "RecMetricModule in a plain parent": lambda: _Model(_module_of_two_tasks()),
    "plain parent": lambda: torch.nn.ModuleDict(
        {
            "head": torch.nn.Linear(2, 1),
            "metrics": torch.nn.ModuleList(_metrics(tmx.CTR(2), tmx.AUC(2), tmx.NormalizedEntropy(2))),
        }
    ),
    "nested Windowed": _Nested,
    "MetricCollection": lambda: MetricCollection(
        {"ctr": _metrics(tmx.CTR(2))[0], "ne": Windowed(tmx.NormalizedEntropy(2), window_size=60)}
    ),
    "MetricCollection in a plain parent": lambda: _Model(
        MetricCollection({"auc": _metrics(tmx.AUC(2))[0], "ctr": Windowed(tmx.CTR(2), window_size=60)})
    ),
}


def _feed(model: torch.nn.Module, seed: int) -> None:
    """Update every metric of ``model`` with the two-task batch of ``seed`` (a module takes it by column)."""
    preds, target = _two_task_batch(seed)
    if isinstance(model, tmx.RecMetricModule):
        model.update({"pa": preds[0], "ya": target[0], "pb": preds[1], "yb": target[1]})
        return
    for module in model.modules():
        if isinstance(module, tmx.RecMetricModule):
            _feed(module, seed)
            return
    if isinstance(model, MetricCollection):
        model.update(preds, target)
        return
    owned = {id(m) for w in model.modules() if isinstance(w, Windowed) for m in w.modules() if m is not w}
    for module in model.modules():
        if isinstance(module, Metric) and id(module) not in owned and not isinstance(module, MetricCollection):
            module.update(preds, target)


def _assert_same(a, b, where: str) -> None:
    """``a`` and ``b`` (tensors in dicts, lists, tuples) hold equal tensors of equal dtypes, and equal other values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _metric_entries(model: torch.nn.Module) -> dict:
    """``model``'s state_dict without the entries of its layers (a failed load leaves those loaded, as torch does)."""
    return {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}


def _assert_as_before(model: torch.nn.Module, before: torch.nn.Module) -> None:
    """Every metric of ``model`` holds what the copy ``before`` (a deepcopy taken before the load) holds."""
    _assert_same(_metric_entries(model), _metric_entries(before), "state_dict")
    pairs = list(zip(model.named_modules(), before.named_modules()))
    assert [name for (name, _), _ in pairs] == [name for _, (name, _) in pairs]
    for (name, now), (_, then) in pairs:
        if isinstance(now, Metric) and not isinstance(now, MetricCollection):
            assert now._update_count == then._update_count, name
            _assert_same(dict(now.metric_state), dict(then.metric_state), f"{name}.metric_state")


def _assert_no_load_left(model: torch.nn.Module) -> None:
    """Nothing of a load stays on any module: no load in progress, no load wrapper, no wrapped hook."""
    for name, module in model.named_modules():
        assert "_pending_load" not in module.__dict__, name
        assert "_load_guard" not in module.__dict__, name
        assert "_load_from_state_dict" not in module.__dict__, name
        hooks = module._load_state_dict_post_hooks.values()
        assert all(getattr(hook, "__name__", "") != "guarded_hook" for hook in hooks), name


def _refused(checkpoint: dict, how: str) -> tuple[dict, str]:
    """``checkpoint`` with its last metric state missing (a strict load refuses it) or of another shape (an error).

    Also the key refused.
    """
    bad = dict(checkpoint)
    # not NE's `neg_labels`: a checkpoint without it is an older format, loaded with it derived (total - pos)
    derived = ("neg_labels", ".neg_labels")
    key = [k for k in bad if not k.endswith(("_extra_state", *derived)) and not k.startswith("head.")][-1]
    if how == "missing":
        del bad[key]
    else:
        bad[key] = torch.zeros(7, dtype=torch.float64)
    return bad, key


def _guarded(model: torch.nn.Module, key: str) -> torch.nn.Module:
    """The outermost module of the package above ``key`` (a metric, ``Windowed``, ``RecMetricModule``).

    A load that fails for ``key`` puts back all of it: a plain parent (``MetricCollection`` included) is
    torch's, which leaves its other children loaded when it raises.
    """
    for name, module in model.named_modules():
        ours = isinstance(module, tmx.RecMetricModule) or (
            isinstance(module, Metric) and not isinstance(module, MetricCollection)
        )
        if ours and key.startswith(f"{name}." if name else ""):
            return module
    raise AssertionError(key)


@pytest.mark.parametrize("how", ["missing", "error"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_a_refused_strict_load_leaves_every_metric_as_it_was(route: str, how: str) -> None:
    """Whichever module is loaded (the metric, its ``Windowed``, a ``RecMetricModule``, a plain parent of any depth,
    a ``MetricCollection``), a strict load that a metric's entries make fail leaves it, and everything of the package
    holding it, as a deepcopy taken before the load holds it (the metrics of a ``RecMetricModule`` or ``Windowed``
    loaded before it included), and its next updates add to that."""
    saved, model = ROUTES[route](), ROUTES[route]()
    _feed(saved, seed=1)
    _feed(model, seed=2)
    checkpoint, key = _refused(saved.state_dict(), how)
    guarded = _guarded(model, key)
    before = copy.deepcopy(guarded)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\)" if how == "missing" else r"size mismatch|mismatch"):
        model.load_state_dict(checkpoint)
    _assert_as_before(guarded, before)
    _assert_no_load_left(model)
    _feed(guarded, seed=3)
    _feed(before, seed=3)
    _assert_as_before(guarded, before)
    model.load_state_dict(saved.state_dict())  # the checkpoint as saved loads
    _assert_same(dict(model.state_dict()), dict(saved.state_dict()), "state_dict")
    _assert_no_load_left(model)


def _raise(*args: object, **kwargs: object) -> None:
    raise KeyError("a user's hook")


# ending -> (install it on (model, the last metric leaf): the hook's handle or None, the error the load raises)
ENDINGS = {
    "success": (lambda model, leaf: None, None),
    "strict refusal": (lambda model, leaf: None, r"Missing key\(s\)"),
    "error refusal": (lambda model, leaf: None, r"size mismatch|mismatch"),
    "a child's pre-hook raises": (lambda model, leaf: leaf._register_load_state_dict_pre_hook(_raise), "a user's hook"),
    "a child's post-hook raises": (lambda model, leaf: leaf.register_load_state_dict_post_hook(_raise), "a user's"),
    "a child's post-hook returns a value": (
        lambda model, leaf: leaf.register_load_state_dict_post_hook(lambda module, keys: keys),
        "not expected to return new values",
    ),
    "the parent's post-hook raises": (lambda model, leaf: model.register_load_state_dict_post_hook(_raise), "a user's"),
}
ENDING_ROUTES = ["direct Windowed", "RecMetricModule in a plain parent", "nested Windowed", "plain parent"]


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("route", ENDING_ROUTES)
def test_a_load_leaves_nothing_of_it_however_it_ends(route: str, ending: str) -> None:
    """What a load keeps from a module's ``_load_from_state_dict`` to its post-hook (its state before the load, the
    wrappers on its children) is gone once the load ends, whether it loads, is refused, or an exception in a child's
    or the parent's hook (or a hook returning a value, which torch raises for) ends it. A module of the package whose
    child's hook raised is put back whole (a deepcopy taken before the load is the reference), and loads next time."""
    saved, model = ROUTES[route](), ROUTES[route]()
    _feed(saved, seed=1)
    _feed(model, seed=2)
    checkpoint = saved.state_dict()
    if "refusal" in ending:
        checkpoint, _ = _refused(checkpoint, "missing" if ending == "strict refusal" else "error")
    leaf_name, leaf = [(n, m) for n, m in model.named_modules() if isinstance(m, Metric) and not m._modules][-1]
    guarded = _guarded(model, f"{leaf_name}.")
    before = copy.deepcopy(guarded)
    install, error = ENDINGS[ending]
    handle = install(model, leaf)
    if error is None:
        model.load_state_dict(checkpoint)
        _assert_same(dict(model.state_dict()), dict(saved.state_dict()), "state_dict")
    else:
        with pytest.raises((RuntimeError, KeyError, AssertionError), match=error):
            model.load_state_dict(checkpoint)
    _assert_no_load_left(model)
    # a module's own post-hooks (and its parent's) run after its load has ended, put back only by its own
    # load_state_dict; a child's run within it
    ended = ending == "the parent's post-hook raises" or ("post-hook" in ending and leaf is guarded)
    if error is not None and (guarded is model or not ended):
        _assert_as_before(guarded, before)
    if handle is not None:
        handle.remove()
    model.load_state_dict(saved.state_dict())
    _assert_same(dict(model.state_dict()), dict(saved.state_dict()), "state_dict")
    _assert_no_load_left(model)


# ----------------------------------------------------------------------------- what a load records


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("direct metric", 1),  # its own load_state_dict
        ("direct Windowed", 1),  # its own load_state_dict: not its lifetime and window
        ("RecMetricModule", 1),  # the module: none of its metrics
        ("RecMetricModule in a plain parent", 1),
        ("plain parent", 3),  # each metric: nothing of the package above them
        ("nested Windowed", 2),  # each Windowed
        ("MetricCollection", 2),  # the CTR and the Windowed
    ],
)
def test_a_load_records_the_state_once_per_outermost_module_of_the_package(route, expected, monkeypatch) -> None:
    """A load records a module's state (to put it back) only where no enclosing guard of the package puts it back: a
    module of many windowed metrics used to record every metric, its lifetime and its window besides itself (about
    half of the load's time)."""
    from torchmetrics_ext import _module_loading
    from torchmetrics_ext.metrics import _checkpoints
    from torchmetrics_ext.wrappers import windowed

    model = ROUTES[route]()
    _feed(model, seed=1)
    checkpoint = model.state_dict()
    recorded: list[str] = []
    record = _checkpoints.snapshot

    def counted(module: torch.nn.Module):
        recorded.append(type(module).__name__)
        return record(module)

    for where in (_checkpoints, windowed, _module_loading):
        monkeypatch.setattr(where, "snapshot", counted)
    model.load_state_dict(checkpoint)
    assert len(recorded) == expected, recorded


def test_a_load_a_hook_starts_inside_a_guarded_load_guards_itself() -> None:
    """Inside a load whose guard puts its modules back (a ``Windowed``'s own), a load of other metrics that a user's
    hook starts is not covered by that guard: its refused metric is put back by its own record."""
    other, _ = _updated(lambda: tmx.NormalizedEntropy(from_logits=False), "ne", seed=4)
    source, _ = _updated(lambda: tmx.NormalizedEntropy(from_logits=True), "ne", seed=5)
    refused = _Model(source).state_dict()  # another setting's states: a strict load leaves `other` reset, then raises
    holder = _Model(other)
    before = copy.deepcopy(other)
    raised: list[BaseException] = []

    def load_other(*args: object) -> None:
        try:
            holder.load_state_dict(refused)
        except RuntimeError as error:
            raised.append(error)

    metric, _ = _windowed(seed=1, n=30)
    checkpoint = metric.state_dict()
    metric._modules["lifetime"]._register_load_state_dict_pre_hook(load_other)
    with warnings.catch_warnings():  # the inner load's note goes to the outer load's notes (warned): not checked here
        warnings.simplefilter("ignore", UserWarning)
        metric.load_state_dict(checkpoint)
    assert len(raised) == 1
    _assert_as_before(other, before)
    _assert_no_load_left(holder)


def test_a_load_that_ends_unseen_is_dropped_by_the_next_load() -> None:
    """An exception in torch's own code between a module's ``_load_from_state_dict`` and its post-hook (a
    ``KeyboardInterrupt``) ends the load where no code of the package runs: simulated by calling only the former.
    What it keeps stays until the next load (the documented limit); a child's own load meanwhile is not guarded by
    it (it would put the wrapper back to before that ended load), and the next load leaves nothing."""
    metric, _ = _windowed(seed=1, n=30)
    other, _ = _windowed(seed=2, n=30)
    model = _Model(metric)
    checkpoint = _Model(other).state_dict()
    ended = dict(checkpoint)
    metric._load_from_state_dict(ended, "metric.", checkpoint._metadata.get("metric", {}), True, [], [], [])
    assert "_pending_load" in metric.__dict__
    loaded = copy.deepcopy(metric)  # what the ended load left: the other metric's ring (its children not loaded)
    _assert_same(loaded.state_dict()["_extra_state"], other.state_dict()["_extra_state"], "ring")
    bad = dict(metric.lifetime.state_dict())
    bad[next(iter(bad))] = torch.zeros(7, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="size mismatch"):
        metric.lifetime.load_state_dict(bad)
    _assert_as_before(metric, loaded)
    model.load_state_dict(_Model(_windowed(seed=3, n=30)[0]).state_dict())
    _assert_no_load_left(model)


class _Bundle(tmx.GuardedMetric):
    """A user's metric of the package holding package metrics in a plain module (its own state besides)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("rows", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        self.parts = torch.nn.ModuleDict({"ctr": tmx.CTR(), "ne": tmx.NormalizedEntropy()})
        for part in self.parts.values():
            part.persistent(True)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.rows += preds.numel()
        for part in self.parts.values():
            part.update(preds, target)

    def compute(self) -> dict:
        return {"rows": self.rows, **{name: part.compute() for name, part in self.parts.items()}}


def _bundle_reference(preds: torch.Tensor, target: torch.Tensor) -> dict:
    p, y = preds.numpy(), target.numpy().astype(np.float64)
    return {"rows": float(p.size), "ctr": float(y.mean()), "ne": _ne(p, y)}


@pytest.mark.parametrize("refused", ["own state", "a child's state"])
def test_a_refused_own_entry_of_a_metric_holding_metrics_leaves_its_children_as_they_were(refused: str) -> None:
    """Bug: a metric of the package holding metrics (a user's ``GuardedMetric`` of several), loaded through a parent
    with a checkpoint whose entry of its own state it refuses (another shape), let torch load its children after
    that refusal and kept them: its put-back counted only the errors its children added. It is left whole, as the
    data it was fed says (numpy reference), and loads the checkpoint as saved."""
    data = {seed: _two_task_batch(seed) for seed in (1, 2)}
    saved, model = _Model(_Bundle()), _Model(_Bundle())
    saved.metric.update(data[1][0][0], data[1][1][0])
    model.metric.update(data[2][0][0], data[2][1][0])
    checkpoint = saved.state_dict()
    bad = dict(checkpoint)
    key = "metric.rows" if refused == "own state" else "metric.parts.ne.cross_entropy_sum"
    assert key in bad
    bad[key] = torch.zeros(7, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(bad)
    _assert_no_load_left(model)
    values = {name: float(value) for name, value in model.metric.compute().items()}
    assert values == pytest.approx(_bundle_reference(data[2][0][0], data[2][1][0]), rel=1e-9)
    model.load_state_dict(checkpoint)
    values = {name: float(value) for name, value in model.metric.compute().items()}
    assert values == pytest.approx(_bundle_reference(data[1][0][0], data[1][1][0]), rel=1e-9)


class _CopyDuringLoad:
    """A user's load post-hook that deep-copies and pickles ``model`` (copied or pickled itself, it does nothing)."""

    def __init__(self, model: torch.nn.Module | None) -> None:
        self.model, self.copies = model, []

    def __call__(self, module: torch.nn.Module, keys: object) -> None:
        if self.model is not None:
            self.copies.extend([copy.deepcopy(self.model), pickle.loads(pickle.dumps(self.model))])

    def __reduce__(self) -> tuple:
        return (_CopyDuringLoad, (None,))


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_copy_made_from_a_hook_during_a_load_holds_nothing_of_it(route: str) -> None:
    """Bug: a deepcopy or pickle of the model made while a load is in progress (a user's load hook) took along the
    wrappers a guard had put on the metrics for that load (a ``Windowed``'s lifetime and window): the pickle failed
    (local functions), and a later load of the copy's metric loaded the original's instead. The copies hold the
    metrics' own methods and hooks; loading one changes it alone."""
    saved, model, other = ROUTES[route](), ROUTES[route](), ROUTES[route]()
    _feed(saved, seed=1)
    _feed(model, seed=2)
    _feed(other, seed=3)
    hook = _CopyDuringLoad(model)
    leaves = [name for name, m in model.named_modules() if isinstance(m, Metric) and not m._modules]
    handle = model.get_submodule(leaves[0]).register_load_state_dict_post_hook(hook)
    model.load_state_dict(saved.state_dict())
    handle.remove()
    _assert_same(dict(model.state_dict()), dict(saved.state_dict()), "state_dict")
    assert len(hook.copies) == 2
    for copied in hook.copies:
        for module in copied.modules():
            module._load_state_dict_post_hooks.pop(handle.id, None)  # the user's hook, copied with the model
        _assert_no_load_left(copied)
        for name in leaves:  # each metric of the copy loads on its own, into the copy: the original stays
            copied.get_submodule(name).load_state_dict(other.get_submodule(name).state_dict())
            _assert_same(dict(model.state_dict()), dict(saved.state_dict()), f"the original, {name} loaded")
        copied.load_state_dict(other.state_dict())
        _assert_same(dict(model.state_dict()), dict(saved.state_dict()), "the original")
        _assert_same(_metric_entries(copied), _metric_entries(other), "the copy")
