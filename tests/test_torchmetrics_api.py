"""TorchMetrics' documented ``Metric`` API and wrappers, used on the package's metrics as a user would.

Each behaviour is checked against a reference computed here, independently of the package: sklearn
(``roc_auc_score``, ``ndcg_score``, ``mean_squared_error``), numpy formulas (NE, calibration, CTR, XAUC's pair
counts, recall at k, multiclass recall), or the same metric fed
all the data at once where the behaviour is a way of feeding it (``merge_state``, checkpoints).
Where the package refuses a TorchMetrics feature on purpose, the refusal and its message are pinned.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error, ndcg_score, roc_auc_score
from torchmetrics import Metric, MetricCollection, MetricTracker
from torchmetrics.classification import BinaryAUROC
from torchmetrics.wrappers import BootStrapper, ClasswiseWrapper, MinMaxMetric, MultitaskWrapper, Running

import torchmetrics_ext as tmx

N = 64
HALVES = (slice(0, 32), slice(32, 64))
EVERYTHING = slice(0, 64)
_gen = torch.Generator().manual_seed(7)
P = torch.rand(N, generator=_gen).clamp(0.02, 0.98)
Y = (torch.rand(N, generator=_gen) < P).long()
GROUPS = torch.randint(0, 4, (N,), generator=_gen)
P3 = torch.rand(3, N, generator=_gen).clamp(0.02, 0.98)
Y3 = (torch.rand(3, N, generator=_gen) < P3).long()
QP = torch.rand(N // 4, 4, generator=_gen)  # 16 queries of 4 candidates, graded relevance
QY = torch.randint(0, 3, (N // 4, 4), generator=_gen)
R = 10 * torch.rand(N, generator=_gen)  # real-valued labels (watch time)
CS = torch.rand(N, 5, generator=_gen)  # class scores of 5 classes
CY = torch.randint(0, 5, (N,), generator=_gen)


# ----------------------------------------------------------------------------- independent references


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cross_entropy = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    c = y.mean()
    return float(cross_entropy / -(c * np.log(c) + (1 - c) * np.log(1 - c)))


def _grouped_auc(p: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    values = [roc_auc_score(y[g == k], p[g == k]) for k in np.unique(g) if len(np.unique(y[g == k])) == 2]
    return float(np.mean(values))


def _ndcg(p: np.ndarray, y: np.ndarray, k: int) -> float:
    return float(np.mean([ndcg_score(y[i : i + 1], p[i : i + 1], k=k) for i in range(len(p))]))


def _recall(p: np.ndarray, y: np.ndarray, k: int) -> float:
    """Mean over queries with a relevant candidate of the share of relevant ones in the top k (tie-free scores)."""
    values = [(y[i][np.argsort(-p[i])[:k]] > 0).sum() / (y[i] > 0).sum() for i in range(len(p)) if (y[i] > 0).any()]
    return float(np.mean(values))


def _xauc(p: np.ndarray, y: np.ndarray) -> float:
    """Share of pairs i < j ordered alike by prediction and label (TorchRec's rule: a tie in both agrees)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    i, j = np.triu_indices(len(p), k=1)
    return float(np.mean(np.sign(p[i] - p[j]) == np.sign(y[i] - y[j])))


def _multiclass_recall(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true class has fewer than k classes scoring at least as high (ties rank ahead)."""
    true = scores[np.arange(len(labels)), labels]
    rank = (scores >= true[:, None]).sum(axis=1) - 1
    return float(np.mean(rank < k))


@dataclass
class Case:
    """A representative metric: how to build it, the keyword batch of rows ``rows``, the reference of rows."""

    make: Callable[..., Metric]
    batch: Callable[[slice], dict[str, torch.Tensor]]
    reference: Callable[[slice], Any]


def _pointwise(s: slice) -> dict[str, torch.Tensor]:
    return {"preds": P[s], "target": Y[s]}


def _queries(s: slice) -> slice:
    return slice(s.start // 4, s.stop // 4)  # the rows of a slice of samples, 4 candidates a query


CASES: dict[str, Case] = {
    "ne": Case(tmx.NormalizedEntropy, _pointwise, lambda s: _ne(P[s], Y[s])),
    "auc": Case(tmx.AUC, _pointwise, lambda s: roc_auc_score(Y[s], P[s])),
    # 100_000 logit bins: no two of these 64 scores share a bin, so the histogram is exact here
    "auc_binned": Case(lambda **kw: tmx.AUC(num_bins=100_000, **kw), _pointwise, lambda s: roc_auc_score(Y[s], P[s])),
    "grouped_auc": Case(
        tmx.GroupedAUC,
        lambda s: {"preds": P[s], "target": Y[s], "groups": GROUPS[s]},
        lambda s: _grouped_auc(P[s].numpy(), Y[s].numpy(), GROUPS[s].numpy()),
    ),
    "calibration": Case(tmx.Calibration, _pointwise, lambda s: float(P[s].double().sum() / Y[s].sum())),
    "ctr": Case(tmx.CTR, _pointwise, lambda s: float(Y[s].double().mean())),
    "ndcg": Case(
        lambda **kw: tmx.NDCG(k=3, **kw),
        lambda s: {"preds": QP[_queries(s)], "target": QY[_queries(s)]},
        lambda s: _ndcg(QP[_queries(s)].numpy(), QY[_queries(s)].numpy(), 3),
    ),
    "ne_3_tasks": Case(
        lambda **kw: tmx.NormalizedEntropy(num_tasks=3, **kw),
        lambda s: {"preds": P3[:, s], "target": Y3[:, s]},
        lambda s: [_ne(P3[t, s], Y3[t, s]) for t in range(3)],
    ),
    "segmented_ne": Case(
        lambda **kw: tmx.Segmented(tmx.NormalizedEntropy(), num_segments=4, **kw),
        lambda s: {"preds": P[s], "target": Y[s], "segments": GROUPS[s]},
        lambda s: [_ne(P[s][GROUPS[s] == k], Y[s][GROUPS[s] == k]) for k in range(4)],
    ),
    "mse": Case(
        tmx.WeightedMSE,
        lambda s: {"preds": P[s], "target": R[s]},
        lambda s: mean_squared_error(R[s].numpy(), P[s].numpy()),
    ),
    "xauc": Case(tmx.XAUC, lambda s: {"preds": P[s], "target": R[s]}, lambda s: _xauc(P[s].numpy(), R[s].numpy())),
    "ranking_dict": Case(
        lambda **kw: tmx.RankingMetrics(ks=(2, 3), metrics=("ndcg", "recall"), **kw),
        lambda s: {"preds": QP[_queries(s)], "target": QY[_queries(s)]},
        lambda s: {
            f"{name}@{k}": fn(QP[_queries(s)].numpy(), QY[_queries(s)].numpy(), k)
            for name, fn in (("ndcg", _ndcg), ("recall", _recall))
            for k in (2, 3)
        },
    ),
    "multiclass_recall": Case(
        lambda **kw: tmx.MulticlassRecallAtK(k=2, num_classes=5, **kw),
        lambda s: {"preds": CS[s], "target": CY[s]},
        lambda s: _multiclass_recall(CS[s].numpy(), CY[s].numpy(), 2),
    ),
    # fed in updates of 16 rows or more: the window is the newest 16 rows of the last update
    "windowed_ne": Case(
        lambda **kw: tmx.Windowed(tmx.NormalizedEntropy(), window_size=16, **kw),
        _pointwise,
        lambda s: {"lifetime": _ne(P[s], Y[s]), "window": _ne(P[s][-16:], Y[s][-16:])},
    ),
}
# a window is one stream's newest rows: merged (lifetime only), gathered and Running are their own tests
STREAMS = [name for name in CASES if name != "windowed_ne"]


def _close(value: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert isinstance(value, dict)
        assert value.keys() == expected.keys()
        for key in expected:
            _close(value[key], expected[key])
        return
    torch.testing.assert_close(_float64(value), _float64(expected))


def _float64(value: Any) -> torch.Tensor:
    """A value, or a list of values (0-dim tensors, numbers, arrays), as one float64 tensor.

    Element by element: in CI ``torch.as_tensor`` of a list of 0-dim tensors failed once inside torch
    ("len() of a 0-d tensor", after some other test file in the same worker; not reproduced alone).
    """
    if isinstance(value, (list, tuple)):
        return torch.stack([_float64(v) for v in value])
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def _feed(metric: Metric, case: Case, rows: slice) -> None:
    metric.update(**case.batch(rows))


# ----------------------------------------------------------------------------- Metric API


@pytest.mark.parametrize("as_dict", [False, True], ids=["metric", "dict"])
@pytest.mark.parametrize("name", STREAMS)
def test_merge_state_of_two_halves_is_the_value_of_all_rows(name, as_dict):
    """``merge_state(other)`` and ``merge_state(other.metric_state)`` (TorchMetrics >= 1.3), list states included."""
    case = CASES[name]
    first, second = case.make(), case.make()
    _feed(first, case, HALVES[0])
    first.compute()  # a cached value must not survive the merge
    _feed(second, case, HALVES[1])
    first.merge_state(second.metric_state if as_dict else second)
    _close(first.compute(), case.reference(EVERYTHING))


@pytest.mark.parametrize(
    "options",
    [{"compute_on_cpu": True}, {"sync_on_compute": False}, {"compute_with_cache": False}, {"dist_sync_on_step": True}],
    ids=lambda options: next(iter(options)),
)
@pytest.mark.parametrize("name", list(CASES))
def test_torchmetrics_options_keep_the_values(name, options):
    """TorchMetrics' constructor options: ``forward`` gives the batch's value, ``compute`` all rows'."""
    case = CASES[name]
    metric = case.make(**options)
    _close(metric(**case.batch(HALVES[0])), case.reference(HALVES[0]))
    _feed(metric, case, HALVES[1])
    _close(metric.compute(), case.reference(EVERYTHING))
    _close(metric.compute(), case.reference(EVERYTHING))  # cached or not, the same


def _two_equal_ranks(tensor: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """A ``dist_sync_fn`` of two ranks that hold the same rows (TorchMetrics' ``gather_all_tensors`` signature)."""
    return [tensor, tensor.clone()]


@pytest.mark.parametrize("manual", [False, True], ids=["compute", "sync"])
@pytest.mark.parametrize("name", STREAMS)
def test_a_custom_dist_sync_fn_gathers_every_state(name, manual):
    """TorchMetrics' ``dist_sync_fn`` / ``sync(dist_sync_fn=...)``: two ranks of the same rows are every row twice."""
    case = CASES[name]
    if manual:
        metric = case.make(sync_on_compute=False)
        _feed(metric, case, HALVES[0])
        metric.sync(dist_sync_fn=_two_equal_ranks, distributed_available=lambda: True)
    else:
        metric = case.make(dist_sync_fn=_two_equal_ranks, distributed_available_fn=lambda: True)
        _feed(metric, case, HALVES[0])
    twice = case.make()
    _feed(twice, case, HALVES[0])
    _feed(twice, case, HALVES[0])
    if manual:  # every state gathered (a ratio of sums alone would not tell: the value of rows twice is theirs)
        for key, value in twice.metric_state.items():
            gathered = metric.metric_state[key]
            torch.testing.assert_close(_joined(gathered), _joined(value), msg=key)
    _close(metric.compute(), twice.compute())
    _feed(metric, case, HALVES[1])  # unsynced after compute: this rank's own rows again
    if manual:
        _close(metric.compute(), case.reference(EVERYTHING))


def _joined(state: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | None:
    joined = (torch.cat(state) if state else None) if isinstance(state, list) else state
    return None if joined is None or (joined.numel() == 0 and joined.ndim == 1) else joined  # an empty list, synced


@pytest.mark.parametrize(
    "resume",
    [
        lambda m, make: m.clone(),
        lambda m, make: pickle.loads(pickle.dumps(m)),
        lambda m, make: copy.deepcopy(m),
    ],
    ids=["clone", "pickle", "deepcopy"],
)
@pytest.mark.parametrize("name", list(CASES))
def test_a_copy_taken_mid_stream_goes_on_as_the_metric(name, resume):
    case = CASES[name]
    metric = case.make()
    _feed(metric, case, HALVES[0])
    copied = resume(metric, case.make)
    _feed(copied, case, HALVES[1])
    _close(copied.compute(), case.reference(EVERYTHING))
    _close(metric.compute(), case.reference(HALVES[0]))  # the original is its own


@pytest.mark.parametrize("name", list(CASES))
def test_persistent_state_dict_loads_into_a_fresh_metric(name):
    case = CASES[name]
    metric = case.make()
    metric.persistent(True)
    _feed(metric, case, HALVES[0])
    fresh = case.make()
    fresh.persistent(True)
    fresh.load_state_dict(metric.state_dict())
    _feed(fresh, case, HALVES[1])
    _close(fresh.compute(), case.reference(EVERYTHING))


@pytest.mark.parametrize("name", list(CASES))
def test_reset_after_compute_set_dtype_and_module_casts(name):
    """``reset`` forgets the rows; ``set_dtype(float64)`` casts; ``half()``/``double()`` leave states (TM's rule)."""
    case = CASES[name]
    metric = case.make()
    _feed(metric, case, HALVES[0])
    metric.compute()
    metric.reset()
    metric.set_dtype(torch.float64)
    dtypes = {key: value.dtype for key, value in metric.metric_state.items() if isinstance(value, torch.Tensor)}
    metric.half()
    metric.double()
    assert {key: value.dtype for key, value in metric.metric_state.items() if isinstance(value, torch.Tensor)} == dtypes
    _feed(metric, case, EVERYTHING)
    _close(metric.compute(), case.reference(EVERYTHING))
    assert isinstance(hash(metric), int)


@pytest.mark.parametrize("name", ["ne", "ne_3_tasks"])
def test_plot_of_a_scalar_and_a_per_task_value(name):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = CASES[name]
    metric = case.make()
    values = []
    for rows in HALVES:
        values.append(metric(**case.batch(rows)))
    fig, ax = metric.plot()
    assert fig is not None
    fig, ax = metric.plot(values)
    assert len(ax.lines) >= 1
    plt.close("all")


# ----------------------------------------------------------------------------- Windowed


def _windowed_auc() -> tmx.Windowed:
    return tmx.Windowed(tmx.AUC(), window_size=20)


def test_merge_state_of_a_windowed_merges_the_lifetime_and_keeps_its_own_window():
    """Documented: the window of two independent streams has no order, so only the lifetime is merged."""
    first, second = _windowed_auc(), _windowed_auc()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    second.update(P[HALVES[1]], Y[HALVES[1]])
    first.merge_state(second)
    value = first.compute()
    _close(value["lifetime"], roc_auc_score(Y, P))
    _close(value["window"], roc_auc_score(Y[12:32], P[12:32]))  # its own newest 20 samples, as before the merge


def test_merge_state_of_a_windowed_given_the_lifetimes_states_as_a_dict():
    first, second = _windowed_auc(), _windowed_auc()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    second.update(P[HALVES[1]], Y[HALVES[1]])
    first.merge_state(second.lifetime.metric_state)
    _close(first.compute()["lifetime"], roc_auc_score(Y, P))


def test_merge_state_of_a_windowed_given_a_windowed_metric_state_says_what_to_pass():
    """``other.metric_state`` of a ``Windowed`` is ``{}`` (its states are its children's): the refusal said
    "a metric of another mode or setting"; it now names what to pass, and nothing changes."""
    first, second = _windowed_auc(), _windowed_auc()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    second.update(P[HALVES[1]], Y[HALVES[1]])
    before = first.compute()
    assert second.metric_state == {}
    with pytest.raises(ValueError, match=r"empty dict.*`other\.lifetime\.metric_state`.*or the Windowed itself"):
        first.merge_state(second.metric_state)
    first._computed = None
    _close(first.compute()["lifetime"], before["lifetime"])


def test_running_refuses_a_windowed_with_torchmetrics_message():
    """``Running`` keeps copies of its metric's own states; a ``Windowed`` has none (its window is the running one)."""
    with pytest.raises(ValueError, match="full_state_update"):
        Running(_windowed_auc(), window=2)


# ----------------------------------------------------------------------------- TorchMetrics' wrappers


def test_metric_tracker_takes_each_metrics_direction():
    tracker = MetricTracker(MetricCollection({"auc": tmx.AUC(), "ne": tmx.NormalizedEntropy()}))
    epochs = [slice(0, 20), slice(20, 40), slice(40, 60)]
    for rows in epochs:
        tracker.increment()
        tracker.update(P[rows], Y[rows])
    assert tracker.maximize == [True, False]
    best, step = tracker.best_metric(return_step=True)
    aucs = [roc_auc_score(Y[rows], P[rows]) for rows in epochs]
    nes = [_ne(P[rows], Y[rows]) for rows in epochs]
    assert step == {"auc": int(np.argmax(aucs)), "ne": int(np.argmin(nes))}
    _close([best["auc"], best["ne"]], [max(aucs), min(nes)])


@pytest.mark.parametrize("name", STREAMS)
def test_running_is_the_value_of_the_last_updates(name):
    case = CASES[name]
    running = Running(case.make(), window=2)
    for rows in (slice(0, 16), slice(16, 32), slice(32, 64)):
        _feed(running, case, rows)
    _close(running.compute(), case.reference(slice(16, 64)))


def test_multitask_classwise_and_minmax_wrappers():
    wrapper = MultitaskWrapper({"click": tmx.AUC(), "like": tmx.NormalizedEntropy()})
    wrapper.update({"click": P3[0], "like": P3[1]}, {"click": Y3[0], "like": Y3[1]})
    value = wrapper.compute()
    _close([value["click"], value["like"]], [roc_auc_score(Y3[0], P3[0]), _ne(P3[1], Y3[1])])

    classwise = ClasswiseWrapper(tmx.AUC(num_tasks=3), labels=["a", "b", "c"])
    classwise.update(P3, Y3)
    value = classwise.compute()
    _close([value[f"auc_{t}"] for t in "abc"], [roc_auc_score(Y3[t], P3[t]) for t in range(3)])

    minmax = MinMaxMetric(tmx.NormalizedEntropy())
    for end in (20, 40, 64):
        minmax.update(P[end - 20 if end < 64 else 40 : end], Y[end - 20 if end < 64 else 40 : end])
        value = minmax.compute()
    lifetimes = [_ne(P[:end], Y[:end]) for end in (20, 40, 64)]
    _close([value["raw"], value["max"], value["min"]], [lifetimes[-1], max(lifetimes), min(lifetimes)])


def test_bootstrapper_of_one_task_resamples_its_rows():
    """Each bootstrap is the metric over a resample of rows: its AUC lies within the rows' possible range."""
    torch.manual_seed(0)
    boot = BootStrapper(tmx.AUC(), num_bootstraps=8, sampling_strategy="multinomial", raw=True)
    boot.update(P, Y)
    raw = boot.compute()["raw"]
    assert raw.shape == (8,)
    assert not torch.allclose(raw, raw[0].expand(8))  # resampled, not 8 copies


# a multi-task metric inside BootStrapper (which resamples dimension 0, the tasks of a (T, N) input) is refused:
# tests/test_bootstrapper.py


def test_metric_collection_compute_groups_with_torchmetrics_metrics_prefix_postfix_and_add_metrics():
    collection = MetricCollection(
        {"auc": tmx.AUC(), "ne": tmx.NormalizedEntropy(), "log_loss": tmx.LogLoss(), "tm_auc": BinaryAUROC()},
        compute_groups=True,
        prefix="val/",
        postfix="_x",
    )
    collection.add_metrics({"ctr": tmx.CTR(), "cal": tmx.Calibration()})
    batch_value = collection(P[HALVES[0]], Y[HALVES[0]])
    collection.update(P[HALVES[1]], Y[HALVES[1]])
    value = collection.compute()
    assert ["ne", "log_loss"] in [sorted(group, reverse=True) for group in collection.compute_groups.values()]
    _close(batch_value["val/auc_x"], roc_auc_score(Y[HALVES[0]], P[HALVES[0]]))
    expected = {
        "auc": roc_auc_score(Y, P),
        "ne": _ne(P, Y),
        "log_loss": -np.mean(Y.numpy() * np.log(P.double().numpy()) + (1 - Y.numpy()) * np.log(1 - P.double().numpy())),
        "ctr": Y.double().mean(),
        "cal": P.double().sum() / Y.sum(),
    }
    for key, reference in expected.items():
        _close(value[f"val/{key}_x"], reference)
    torch.testing.assert_close(value["val/tm_auc_x"].double(), torch.tensor(roc_auc_score(Y, P), dtype=torch.float64))


# ----------------------------------------------------------------------------- metric arithmetic


def test_arithmetic_values_forward_and_checkpoints():
    diff = tmx.AUC() - tmx.NormalizedEntropy()
    distance = abs(tmx.Calibration() - 1)
    _close(
        diff(P[HALVES[0]], Y[HALVES[0]]), roc_auc_score(Y[HALVES[0]], P[HALVES[0]]) - _ne(P[HALVES[0]], Y[HALVES[0]])
    )
    distance.update(P[HALVES[0]], Y[HALVES[0]])
    diff.persistent(True)
    fresh = tmx.AUC() - tmx.NormalizedEntropy()
    fresh.persistent(True)
    fresh.load_state_dict(diff.state_dict())
    for metric in (diff, fresh, distance):
        metric.update(P[HALVES[1]], Y[HALVES[1]])
    _close([diff.compute(), fresh.compute()], [roc_auc_score(Y, P) - _ne(P, Y)] * 2)
    _close(distance.compute(), abs(float(P.double().sum() / Y.sum()) - 1))


def _expression() -> Metric:
    return 2 * tmx.AUC() - abs(tmx.NormalizedEntropy(num_tasks=1) - 1)


def test_merge_state_of_an_expression_merges_each_of_its_metrics():
    """TorchMetrics' ``merge_state`` refused every expression (``full_state_update``: "Please overwrite the
    merge_state method"); an expression of the package merges each metric with the other's."""
    first, second = _expression(), _expression()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    first.compute()
    second.update(P[HALVES[1]], Y[HALVES[1]])
    first.merge_state(second)
    _close(first.compute(), 2 * roc_auc_score(Y, P) - abs(_ne(P, Y) - 1))


def test_merge_state_of_an_expression_over_a_windowed_merges_its_lifetime_and_keeps_its_window():
    """An expression merges each metric by its own ``merge_state``: a ``Windowed`` entry's lifetime is that of
    both streams, its window stays this expression's own newest samples (as a ``Windowed`` alone keeps it)."""

    def expression() -> Metric:
        windowed = _windowed_auc()
        return windowed["lifetime"] - windowed["window"]

    first, second = expression(), expression()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    second.update(P[HALVES[1]], Y[HALVES[1]])
    first.merge_state(second)
    _close(first.compute(), roc_auc_score(Y, P) - roc_auc_score(Y[12:32], P[12:32]))


def _two_tasks_expression() -> Metric:
    auc, ne = tmx.AUC(), tmx.NormalizedEntropy(num_tasks=2)
    auc.update(P[HALVES[1]], Y[HALVES[1]])
    ne.update(P3[:2, HALVES[1]], Y3[:2, HALVES[1]])
    return 2 * auc - abs(ne - 1)


def _fed(expression: Metric) -> Metric:
    expression.update(P[HALVES[1]], Y[HALVES[1]])
    return expression


@pytest.mark.parametrize(
    ("incoming", "error", "match"),
    [
        (
            lambda: _fed(2 * tmx.AUC() - abs(tmx.LogLoss() - 1)),
            ValueError,
            r"\[AUC, NormalizedEntropy\], the other \[AUC, LogLoss\]",
        ),
        (lambda: _fed(2 * tmx.AUC(num_bins=100) - abs(tmx.NormalizedEntropy() - 1)), ValueError, "AUC"),
        (_two_tasks_expression, ValueError, "NormalizedEntropy"),
        (lambda: _fed(2 * tmx.AUC()), ValueError, r"same metrics.*\[AUC, NormalizedEntropy\].*\[AUC\]"),
        (lambda: {"preds": []}, TypeError, r"Expected `incoming_state` to be an expression.*got dict"),
        (lambda: tmx.AUC(), TypeError, r"Expected `incoming_state` to be an expression.*got AUC"),
    ],
    ids=["other-class", "other-mode", "other-tasks", "other-count", "dict", "metric"],
)
def test_merge_state_of_an_expression_refuses_another_and_changes_nothing(incoming, error, match):
    """A refusal by the expression or by one of its metrics (the first or a later one) leaves every metric as it was."""
    first = _expression()
    first.update(P[HALVES[0]], Y[HALVES[0]])
    with pytest.raises(error, match=match):
        first.merge_state(incoming())
    _close(first.compute(), 2 * roc_auc_score(Y[HALVES[0]], P[HALVES[0]]) - abs(_ne(P[HALVES[0]], Y[HALVES[0]]) - 1))
    first.update(P[HALVES[1]], Y[HALVES[1]])
    _close(first.compute(), 2 * roc_auc_score(Y, P) - abs(_ne(P, Y) - 1))


def test_plot_of_an_expression():
    """TorchMetrics' ``CompositionalMetric.plot`` raised a bare ``NotImplementedError``."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    expression = tmx.AUC(num_tasks=3) - tmx.NormalizedEntropy(num_tasks=3)
    values = [expression(P3[:, rows], Y3[:, rows]) for rows in HALVES]
    fig, ax = expression.plot()
    assert fig is not None
    fig, ax = expression.plot(values)
    assert len(ax.lines) >= 1
    plt.close("all")
