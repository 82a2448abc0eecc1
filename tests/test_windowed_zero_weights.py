"""A batch whose weights are all zero takes no room in a window (DESIGN, "Bad input": it changes nothing).

Each reference selects the window in plain Python (the newest whole updates fitting ``window_size``,
the all-zero ones skipped) and computes the value with scikit-learn or NumPy over those rows.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

import torchmetrics_ext as tmx
from torchmetrics_ext import Windowed

WINDOW = 10
RTOL = 1e-6  # the exact AUC keeps its weights as float32


def _batches(seed: int, sizes: list[int], zero: set[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Pointwise batches ``(preds, target, weights)``; those at positions ``zero`` weigh 0 everywhere."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(sizes):
        p = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        y = (torch.rand(n, generator=gen) < 0.5).long()
        y[0], y[-1] = 1, 0  # both classes in every batch
        w = (
            torch.zeros(n, dtype=torch.float64)
            if i in zero
            else torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
        )
        out.append((p, y, w))
    return out


def _window_of(batches: list, window_size: int, skip_zero: bool = True) -> list:
    """The rule in plain Python: newest whole updates of at most ``window_size`` samples (a larger newest one cut)."""
    kept = [b for b in batches if not (skip_zero and b[2] is not None and float(b[2].max()) == 0.0)]
    out: list = []
    used = 0
    for batch in reversed(kept):
        n = len(batch[0])
        if not out and n > window_size:
            return [tuple(t[-window_size:] for t in batch)]
        if used + n > window_size:
            break
        out.insert(0, batch)
        used += n
    return out


def _cat(batches: list) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([b[k].numpy() for b in batches]) for k in range(3))


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    ctr = np.sum(w * y) / np.sum(w)
    return log_loss(y, p, sample_weight=w) / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))


def _auc(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(roc_auc_score(y, p, sample_weight=w))


SIZES = [4, 3, 5, 2, 4, 3]
ZERO = {3, 4}  # the two newest but one weigh nothing: counted, they would evict the older ones


@pytest.mark.parametrize(
    ("make", "reference"),
    [
        (lambda **kw: tmx.NormalizedEntropy(**kw), _ne),
        (lambda **kw: tmx.AUC(**kw), _auc),  # exact: the rows themselves
        (lambda **kw: tmx.CTR(**kw), lambda p, y, w: float(np.average(y, weights=w))),
    ],
    ids=["ne", "auc-exact", "ctr"],
)
def test_an_all_zero_weight_batch_takes_no_window_slot(make, reference):
    batches = _batches(0, SIZES, ZERO)
    metric = Windowed(make(), window_size=WINDOW)
    for b in batches:
        metric.update(*b)
    values = metric.compute()
    np.testing.assert_allclose(values["window"].item(), reference(*_cat(_window_of(batches, WINDOW))), rtol=RTOL)
    np.testing.assert_allclose(values["lifetime"].item(), reference(*_cat(batches)), rtol=RTOL)
    # the window counts 5 + 3 samples (batches 2 and 5): the zero batches took none of its room
    assert metric._ring.used == 8


def test_a_binned_auc_window_skips_an_all_zero_weight_batch():
    """The histogram window (bin indices per update) follows the same rule; lifetime as a plain binned AUC."""
    batches = _batches(1, SIZES, ZERO)
    metric = Windowed(tmx.AUC(num_bins=50, bin_space="probability"), window_size=WINDOW)
    plain_window = tmx.AUC(num_bins=50, bin_space="probability")
    plain_life = tmx.AUC(num_bins=50, bin_space="probability")
    for b in batches:
        metric.update(*b)
        plain_life.update(*b)
    for b in _window_of(batches, WINDOW):
        plain_window.update(*b)
    values = metric.compute()
    # the binned value over the kept rows: a plain binned AUC fed those rows alone (checked against sklearn elsewhere)
    torch.testing.assert_close(values["window"], plain_window.compute(), rtol=1e-12, atol=0)
    torch.testing.assert_close(values["lifetime"], plain_life.compute(), rtol=1e-12, atol=0)
    # and within a bin's width of scikit-learn's exact value over the kept rows
    assert abs(values["window"].item() - _auc(*_cat(_window_of(batches, WINDOW)))) < 0.1


def test_a_padded_ranking_window_skips_an_all_zero_weight_batch():
    """Recall@2 of padded (Q, L) lists with per-query weights: the window's queries are the kept batches'."""
    gen = torch.Generator().manual_seed(2)
    batches = []
    for i, q in enumerate([3, 2, 2, 2, 2]):
        p = torch.rand(q, 5, generator=gen, dtype=torch.float64)
        y = (torch.rand(q, 5, generator=gen) < 0.4).long()
        y[:, 0] = 1  # every query has a relevant item
        w = torch.zeros(q, dtype=torch.float64) if i == 3 else torch.rand(q, generator=gen, dtype=torch.float64) + 0.1
        batches.append((p, y, w))
    metric = Windowed(tmx.RecallAtK(k=2), window_size=6)

    def recall(kept: list) -> float:  # NumPy: per query, relevant items in the top 2 over relevant items
        p, y, w = (np.concatenate([b[k].numpy() for b in kept]) for k in range(3))
        top = np.argsort(-p, axis=1, kind="stable")[:, :2]
        per_query = np.take_along_axis(y, top, axis=1).sum(1) / y.sum(1)
        return float(np.sum(w * per_query) / np.sum(w))

    for p, y, w in batches:
        metric.update(p, y, weights=w)
    values = metric.compute()
    np.testing.assert_allclose(values["window"].item(), recall(_window_of(batches, 6)), rtol=RTOL)
    np.testing.assert_allclose(values["lifetime"].item(), recall(batches), rtol=RTOL)


def test_multiclass_recall_window_skips_an_all_zero_weight_batch():
    gen = torch.Generator().manual_seed(3)
    batches = []
    for i, n in enumerate([4, 4, 3, 4]):
        p = torch.rand(n, 6, generator=gen)
        y = torch.randint(0, 6, (n,), generator=gen)
        w = torch.zeros(n) if i == 2 else torch.rand(n, generator=gen) + 0.1
        batches.append((p, y, w))
    metric = Windowed(tmx.MulticlassRecallAtK(k=2, num_classes=6), window_size=8)

    def recall(kept: list) -> float:
        p, y, w = (np.concatenate([b[k].numpy() for b in kept]) for k in range(3))
        hit = np.array([yi in np.argsort(-pi, kind="stable")[:2] for pi, yi in zip(p, y)])
        return float(np.sum(w * hit) / np.sum(w))

    for b in batches:
        metric.update(*b)
    np.testing.assert_allclose(metric.compute()["window"].item(), recall(_window_of(batches, 8)), rtol=RTOL)


def test_with_validate_args_false_an_all_zero_weight_batch_still_takes_a_slot():
    """Nothing is read back without validation: the documented old behaviour (the batch evicts older updates)."""
    batches = _batches(4, SIZES, ZERO)
    metric = Windowed(tmx.CTR(validate_args=False), window_size=WINDOW)
    for b in batches:
        metric.update(*b)
    kept = _window_of(batches, WINDOW, skip_zero=False)  # batches 3, 4, 5: 2 + 4 + 3 samples
    _, y, w = _cat(kept)
    np.testing.assert_allclose(metric.compute()["window"].item(), np.average(y, weights=w), rtol=RTOL)
    assert metric._ring.used == 9


def test_a_task_with_nonzero_weights_keeps_the_batch_in_the_shared_window():
    """(T, N) weights where one task's are all zero: the window is shared by the tasks, so the batch is kept."""
    gen = torch.Generator().manual_seed(5)
    batches = []
    for i in range(3):
        p = torch.rand(2, 4, generator=gen, dtype=torch.float64)
        y = (torch.rand(2, 4, generator=gen) < 0.5).long()
        w = torch.rand(2, 4, generator=gen, dtype=torch.float64) + 0.1
        if i == 2:
            w[0] = 0.0  # task 0 weighs nothing in the newest batch; task 1 does
        batches.append((p, y, w))
    metric = Windowed(tmx.CTR(num_tasks=2), window_size=8)
    for b in batches:
        metric.update(*b)
    kept = batches[1:]  # the newest two batches, 8 samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        window = metric.compute()["window"]
    for task in range(2):
        y = np.concatenate([b[1][task].numpy() for b in kept])
        w = np.concatenate([b[2][task].numpy() for b in kept])
        np.testing.assert_allclose(window[task].item(), np.average(y, weights=w), rtol=RTOL)


def test_state_dict_round_trip_after_an_all_zero_weight_batch():
    """The resumed window evicts what an uninterrupted run evicts, the zero batch having taken no slot."""
    batches = _batches(6, [2, 3, 3, 2, 2, 2], {3})  # counted, the zero batch would evict batch 1
    whole = Windowed(tmx.AUC(), window_size=WINDOW)
    first = Windowed(tmx.AUC(), window_size=WINDOW)
    for b in batches[:4]:
        whole.update(*b)
        first.update(*b)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Windowed(tmx.AUC(), window_size=WINDOW)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for b in batches[4:]:
        whole.update(*b)
        resumed.update(*b)
    expected = _auc(*_cat(_window_of(batches, WINDOW)))
    for metric in (whole, resumed):
        np.testing.assert_allclose(metric.compute()["window"].item(), expected, rtol=RTOL)
        np.testing.assert_allclose(metric.compute()["lifetime"].item(), _auc(*_cat(batches)), rtol=RTOL)


TASKS = [tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w")]


def _module_steps() -> list[dict[str, torch.Tensor]]:
    return [{"click_pred": p, "click_label": y, "click_w": w} for p, y, w in _batches(7, SIZES, ZERO)]


@pytest.mark.parametrize("validate", [True, False])
def test_module_window_skips_an_all_zero_weight_step(validate):
    steps = _module_steps()
    metrics = {
        "ne": tmx.NormalizedEntropy(validate_args=validate),
        "auc": tmx.AUC(validate_args=validate),
    }
    module = tmx.RecMetricModule(TASKS, metrics, window_size=WINDOW, throughput=tmx.Throughput(warmup_steps=0))
    for step in steps:
        module.update(step)
    values = module.compute()
    batches = [(s["click_pred"], s["click_label"], s["click_w"]) for s in steps]
    kept = _window_of(batches, WINDOW, skip_zero=validate)  # unvalidated: the zero steps still take room
    np.testing.assert_allclose(values["ne/click/window"].item(), _ne(*_cat(kept)), rtol=RTOL)
    np.testing.assert_allclose(values["auc/click/window"].item(), _auc(*_cat(kept)), rtol=RTOL)
    np.testing.assert_allclose(values["ne/click"].item(), _ne(*_cat(batches)), rtol=RTOL)
    np.testing.assert_allclose(values["auc/click"].item(), _auc(*_cat(batches)), rtol=RTOL)
    assert module.throughput is not None
    assert module.throughput.total_examples.item() == sum(SIZES)  # the skipped steps' examples still count


@pytest.mark.parametrize("older", [False, True], ids=["pickled", "pickled-with-the-module-wide-flags"])
def test_module_window_skips_zero_weight_steps_after_unpickling(older):
    """A module copied mid-run (pickle) still skips an all-zero-weight step; one pickled by a version
    that decided it for the whole module (its ``_window_skips_zero_weight_steps`` and
    ``_zero_weight_steps_count`` flags) follows each metric's rule after the load.

    Reference: the plain-Python window rule (``_window_of``) and scikit-learn over its rows.
    """
    steps = _module_steps()
    module = tmx.RecMetricModule(TASKS, {"ne": tmx.NormalizedEntropy()}, window_size=WINDOW, throughput=False)
    for step in steps[:3]:
        module.update(step)
    state = pickle.loads(pickle.dumps(module.__getstate__()))
    if older:
        state.update(_window_skips_zero_weight_steps=False, _zero_weight_steps_count=True)  # stale flags: unread
    copied = tmx.RecMetricModule.__new__(tmx.RecMetricModule)
    copied.__setstate__(state)
    for step in steps[3:]:  # the two zero steps come after the copy
        copied.update(step)
    batches = [(s["click_pred"], s["click_label"], s["click_w"]) for s in steps]
    values = copied.compute()
    np.testing.assert_allclose(values["ne/click/window"].item(), _ne(*_cat(_window_of(batches, WINDOW))), rtol=RTOL)
    np.testing.assert_allclose(values["ne/click"].item(), _ne(*_cat(batches)), rtol=RTOL)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"_window_skips_zero_weight_steps": True},
        {"_window_skips_zero_weight_steps": True, "_zero_weight_steps_count": False},
    ],
    ids=["pickled", "with-a-stale-skip-flag", "with-stale-flags"],
)
def test_module_unpickled_keeps_a_zero_weight_step_for_grouped_average_all(flags):
    """A pickle of a module holding GroupedAUC(average_groups="all") keeps the zero-weight step in its window,
    also one of an earlier version carrying module-wide flags that said otherwise (its metric's flag decides).

    Reference: plain Python + scikit-learn (``_grouped_all``) over both batches, which fit the window.
    """
    tasks = [tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w", group_id_name="user")]
    module = tmx.RecMetricModule(
        tasks, {"gauc_all": tmx.GroupedAUC(average_groups="all")}, window_size=6, throughput=False
    )
    state = pickle.loads(pickle.dumps(module.__getstate__()))
    state.update(flags)
    copied = tmx.RecMetricModule.__new__(tmx.RecMetricModule)
    copied.__setstate__(state)
    for p, y, g, w in GROUPED_BATCHES:
        copied.update({"click_pred": p, "click_label": y, "click_w": w, "user": g})
    np.testing.assert_allclose(
        copied.compute()["gauc_all/click/window"].item(), _grouped_all(GROUPED_BATCHES), rtol=1e-6
    )


def _ddp_zero_batch_job(rank: int, world_size: int) -> dict[str, float]:
    """Both ranks see weighted batches; rank 1's newest batch weighs nothing (it must not evict rank 1's first)."""
    batches = _batches(8 + rank, [3, 2, 2] if rank == 0 else [2, 2, 2], {2} if rank == 1 else set())
    out = {}
    for name, make in (("ne", tmx.NormalizedEntropy), ("auc", tmx.AUC)):
        metric = Windowed(make(), window_size=8)  # 4 samples per rank
        for b in batches:
            metric.update(*b)
        out.update({f"{name}/{k}": v.item() for k, v in metric.compute().items()})
    return out


@pytest.mark.ddp
def test_ddp_a_rank_with_an_all_zero_weight_batch_keeps_its_window(ddp_pool):
    per_rank = [
        _batches(8 + rank, [3, 2, 2] if rank == 0 else [2, 2, 2], {2} if rank == 1 else set()) for rank in (0, 1)
    ]
    kept = [row for batches in per_rank for row in _window_of(batches, 4)]
    everything = [row for batches in per_rank for row in batches]
    for out in ddp_pool.run(_ddp_zero_batch_job):
        for name, reference in (("ne", _ne), ("auc", _auc)):
            np.testing.assert_allclose(out[f"{name}/window"], reference(*_cat(kept)), rtol=RTOL)
            np.testing.assert_allclose(out[f"{name}/lifetime"], reference(*_cat(everything)), rtol=RTOL)


@pytest.mark.parametrize("count_zero_weight", [False, True])
def test_a_metric_counting_zero_weight_rows_keeps_the_batch_in_its_window(count_zero_weight):
    """NumMissingLabels(count_zero_weight=True) counts NaN labels whatever their weight: an all-zero-weight batch
    changes its value, so its window keeps the batch; the weighted count skips it like every other metric."""
    nan = float("nan")
    batches = [
        (torch.zeros(3), torch.tensor([nan, 1.0, 0.0]), torch.tensor([1.0, 2.0, 1.0])),
        (torch.zeros(2), torch.tensor([nan, nan]), torch.tensor([0.5, 1.0])),
        (torch.zeros(2), torch.tensor([nan, 0.0]), torch.zeros(2)),
    ]
    metric = Windowed(tmx.NumMissingLabels(count_zero_weight=count_zero_weight), window_size=4)
    for b in batches:
        metric.update(*b)
    kept = _window_of(batches, 4, skip_zero=not count_zero_weight)

    def count(rows: list) -> float:  # plain Python: NaN labels, each counted once or by its weight
        return sum(
            (1.0 if count_zero_weight else float(w)) for _, y, ws in rows for t, w in zip(y, ws) if math.isnan(t)
        )

    values = metric.compute()
    assert values["window"].item() == count(kept)
    assert values["lifetime"].item() == count(batches)


@pytest.mark.parametrize("weighted", [False, [True, False], [False, False]])
def test_tensor_weighted_average_with_an_unweighted_task_keeps_an_all_zero_weight_batch(weighted):
    """A task of TensorWeightedAverage(weighted=False) averages without weights: an all-zero-weight batch
    changes its value, so the window keeps the batch (the tasks share it); weighted tasks then weigh it 0."""
    flags = [weighted] if isinstance(weighted, bool) else weighted
    num_tasks = len(flags)
    values = [[1.0, 1.0], [3.0, 3.0], [5.0, 7.0]]
    weights = [[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]]
    batches = [(torch.tensor([v] * num_tasks).squeeze(0), torch.tensor(w), None) for v, w in zip(values, weights)]
    metric = Windowed(tmx.TensorWeightedAverage(num_tasks=num_tasks, weighted=weighted), window_size=4)
    for v, w, _ in batches:
        metric.update(v, w)
    kept = _window_of(batches, 4, skip_zero=False)  # the newest two updates: (3, 3) at weight 0, (5, 7)

    def average(rows: list, flag: bool) -> float:  # plain Python: weighted or plain mean of the values
        pairs = [(x, w if flag else 1.0) for v, ws, _ in rows for x, w in zip(v.reshape(-1, 2)[0].tolist(), ws)]
        return sum(x * w for x, w in pairs) / sum(w for _, w in pairs)

    out = metric.compute()
    expected_window = [average(kept, flag) for flag in flags]
    expected_lifetime = [average(batches, flag) for flag in flags]
    np.testing.assert_allclose(out["window"].reshape(-1).numpy(), expected_window)
    np.testing.assert_allclose(out["lifetime"].reshape(-1).numpy(), expected_lifetime)


def test_segmented_counting_zero_weight_rows_keeps_an_all_zero_weight_batch():
    """Segmented(NumMissingLabels(count_zero_weight=True)) counts like the metric it wraps: the window keeps
    an all-zero-weight batch (its NaN labels count), as it does for the metric alone."""
    nan = float("nan")
    batches = [
        (torch.zeros(2), torch.tensor([nan, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0, 1])),
        (torch.zeros(2), torch.tensor([nan, nan]), torch.zeros(2), torch.tensor([0, 1])),
    ]
    metric = Windowed(tmx.Segmented(tmx.NumMissingLabels(count_zero_weight=True), num_segments=2), window_size=4)
    for b in batches:
        metric.update(*b)
    # plain Python: NaN labels per segment, each once (both updates fit the window of 4)
    expected = [
        sum(1.0 for b in batches for y, s in zip(b[1], b[3]) if math.isnan(y) and int(s) == seg) for seg in (0, 1)
    ]
    out = metric.compute()
    assert out["window"].reshape(-1).tolist() == expected
    assert out["lifetime"].reshape(-1).tolist() == expected


def _grouped_all(rows: list) -> float:
    """GroupedAUC(average_groups="all") in plain Python + sklearn: the mean over every group, a group of
    zero-weight rows counting 0.5 (docs/policies.md); each group here holds both classes."""
    p, y, g, w = (np.concatenate([r[k].numpy() for r in rows]) for k in range(4))
    values = []
    for group in np.unique(g):
        at = g == group
        if w[at].sum() == 0:
            values.append(0.5)
        else:
            values.append(roc_auc_score(y[at], p[at], sample_weight=w[at]))
    return float(np.mean(values))


GROUPED_BATCHES = [
    (torch.tensor([0.9, 0.2, 0.8, 0.3]), torch.tensor([1, 0, 1, 0]), torch.tensor([0, 0, 1, 1]), torch.ones(4)),
    (torch.tensor([0.1, 0.9]), torch.tensor([1, 0]), torch.tensor([2, 2]), torch.zeros(2)),
]


def test_grouped_average_all_keeps_an_all_zero_weight_batch_in_its_window():
    """GroupedAUC(average_groups="all") counts a group of zero-weight rows (TorchRec's grouped AUC): an
    all-zero-weight batch of new groups changes the value, so the window keeps it; "defined" skips it."""
    for average in ("all", "defined"):
        metric = Windowed(tmx.GroupedAUC(average_groups=average), window_size=6)
        for p, y, g, w in GROUPED_BATCHES:
            metric.update(p, y, g, w)
        out = metric.compute()
        if average == "all":
            expected = _grouped_all(GROUPED_BATCHES)  # both batches fit the window of 6
            np.testing.assert_allclose(out["window"].item(), expected, rtol=1e-6)
            np.testing.assert_allclose(out["lifetime"].item(), expected, rtol=1e-6)
        else:  # only groups holding weight: the first batch's
            np.testing.assert_allclose(out["window"].item(), _grouped_all(GROUPED_BATCHES[:1]), rtol=1e-6)


@pytest.mark.parametrize("average", ["all", "defined"])
def test_windowed_unpickled_without_the_flag_reads_the_metrics_own(average):
    """A ``Windowed`` pickled before the zero-weight rule (no ``_skips_zero_weights``) reads it from its
    metric on unpickling: GroupedAUC(average_groups="all") keeps the all-zero-weight batch, "defined" skips it.

    Reference: plain Python + scikit-learn (``_grouped_all``) over the batches the window holds.
    """
    metric = Windowed(tmx.GroupedAUC(average_groups=average), window_size=6)
    state = pickle.loads(pickle.dumps(metric.__getstate__()))
    del state["_skips_zero_weights"]
    copied = Windowed.__new__(Windowed)
    copied.__setstate__(state)
    for p, y, g, w in GROUPED_BATCHES:
        copied.update(p, y, g, w)
    held = GROUPED_BATCHES if average == "all" else GROUPED_BATCHES[:1]
    np.testing.assert_allclose(copied.compute()["window"].item(), _grouped_all(held), rtol=1e-6)


def test_module_window_keeps_a_zero_weight_step_for_grouped_average_all():
    """A module holding GroupedAUC(average_groups="all") keeps an all-zero-weight step (it changes that metric's
    lifetime and window values) rather than skipping it for every metric."""
    tasks = [tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w", group_id_name="user")]
    module = tmx.RecMetricModule(
        tasks, {"gauc_all": tmx.GroupedAUC(average_groups="all")}, window_size=6, throughput=False
    )
    for p, y, g, w in GROUPED_BATCHES:
        module.update({"click_pred": p, "click_label": y, "click_w": w, "user": g})
    values = module.compute()
    expected = _grouped_all(GROUPED_BATCHES)
    np.testing.assert_allclose(values["gauc_all/click"].item(), expected, rtol=1e-6)
    np.testing.assert_allclose(values["gauc_all/click/window"].item(), expected, rtol=1e-6)


@pytest.mark.parametrize("nan_strategy", ["error", "ignore"])
def test_aggregation_mean_all_zero_weight_batch_takes_no_window_room(nan_strategy):
    """``aggregation.Mean``'s ``weight`` follows the rule: a validated all-zero-weight batch evicts nothing.

    Reference: the plain-Python weighted mean over the updates the rule keeps (the zero batch skipped).
    """
    from torchmetrics_ext.aggregation import Mean

    metric = Windowed(Mean(nan_strategy=nan_strategy), window_size=4)
    metric.update(torch.tensor([1.0, 2.0, 6.0]), torch.tensor([1.0, 1.0, 2.0]))
    zero_values = [10.0, float("nan")] if nan_strategy == "ignore" else [10.0, 20.0]
    metric.update(torch.tensor(zero_values), torch.zeros(2))  # counted, 3 + 2 > 4 would evict the first
    expected = (1.0 * 1 + 2.0 * 1 + 6.0 * 2) / (1 + 1 + 2)
    values = metric.compute()
    assert values["window"].item() == pytest.approx(expected)
    assert values["lifetime"].item() == pytest.approx(expected)
    metric.update(torch.tensor([4.0, 4.0]))  # 3 + 2 > 4: now the first update leaves
    assert metric.compute()["window"].item() == pytest.approx(4.0)


def test_aggregation_mean_keeps_an_all_zero_weight_batch_that_changes_its_value():
    """A float ``nan_strategy`` fills a NaN row with weight 1 (TorchMetrics' meaning): that batch does count.

    Reference: the plain-Python mean of the second update (the fill 5.0 once, weight 1), which alone fits.
    """
    from torchmetrics_ext.aggregation import Mean

    metric = Windowed(Mean(nan_strategy=5.0), window_size=4)
    metric.update(torch.tensor([1.0, 2.0, 6.0]))
    metric.update(torch.tensor([float("nan"), 7.0]), torch.zeros(2))  # 3 + 2 > 4: the first update leaves
    values = metric.compute()
    assert values["window"].item() == pytest.approx(5.0)
    assert values["lifetime"].item() == pytest.approx((1.0 + 2.0 + 6.0 + 5.0) / 4)


NAN = float("nan")
# (values, weights or None): updates of Mean(nan_strategy="ignore"/"warn"), some adding nothing once NaN rows drop
NAN_UPDATES: list[tuple[list[float], list[float] | None]] = [
    ([1.0, 2.0, 6.0], [1.0, 1.0, 2.0]),
    ([3.0, 5.0], None),
    ([10.0, 20.0], [NAN, NAN]),  # every weight NaN: adds nothing
    ([NAN, NAN, NAN], None),  # every value NaN, unweighted: adds nothing
    ([NAN, 7.0], [3.0, 0.0]),  # the weighted row's value is NaN, the other weighs 0: adds nothing
    ([NAN, NAN], [1.0, 2.0]),  # every value NaN, positive weights: adds nothing
    ([4.0, NAN], [2.0, 1.0]),  # one row kept
]


def _mean_nan_window(updates: list, window_size: int) -> tuple[float, float]:
    """Plain Python: (window, lifetime) weighted means, rows with a NaN value or weight dropped; an update whose
    kept rows weigh nothing takes no room; the window is the newest whole updates of at most ``window_size`` rows."""
    rows = []
    for values, weights in updates:
        ws = weights if weights is not None else [1.0] * len(values)
        rows.append([(v, w) for v, w in zip(values, ws) if not (math.isnan(v) or math.isnan(w))])
    counted = [(len(u[0]), r) for u, r in zip(updates, rows) if sum(w for _, w in r) > 0]
    window: list = []
    used = 0
    for n, r in reversed(counted):
        if used + n > window_size:
            break
        window += r
        used += n

    def mean(rs: list) -> float:
        return sum(v * w for v, w in rs) / sum(w for _, w in rs)

    return mean(window), mean([x for r in rows for x in r])


@pytest.mark.parametrize("nan_strategy", ["ignore", "warn"])
@pytest.mark.parametrize("last", range(3, len(NAN_UPDATES) + 1))
def test_aggregation_mean_update_adding_nothing_takes_no_window_room(nan_strategy, last):
    """With NaN dropped, an update whose rows all drop (NaN weights, NaN values) or weigh 0 takes no room.

    Reference: the plain-Python window of the updates that add something (``_mean_nan_window``).
    """
    from torchmetrics_ext.aggregation import Mean

    updates = NAN_UPDATES[:last]
    metric = Windowed(Mean(nan_strategy=nan_strategy), window_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "warn": "Encountered `nan` values"
        for values, weights in updates:
            metric.update(torch.tensor(values), None if weights is None else torch.tensor(weights))
        out = metric.compute()
    window, lifetime = _mean_nan_window(updates, 5)
    assert out["window"].item() == pytest.approx(window)
    assert out["lifetime"].item() == pytest.approx(lifetime)


def _random_nan_updates(seed: int, count: int) -> list[list[float]]:
    """Batches of 1 to 4 values, each drawn all NaN, partly NaN (at least one value kept) or finite, a third each."""
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(count):
        values = [float(v) for v in np.round(rng.normal(0.0, 10.0, int(rng.integers(1, 5))), 3)]
        kind = int(rng.integers(0, 3))
        if kind == 0:  # every value NaN: adds nothing
            values = [NAN] * len(values)
        elif kind == 1 and len(values) > 1:  # some NaN, at least one value kept
            values = [NAN if rng.random() < 0.5 else v for v in values[:-1]] + values[-1:]
        updates.append(values)
    return updates


def _scalar_nan_window(updates: list[list[float]], window_size: int, reduce) -> tuple[float, float]:
    """Plain Python: (window, lifetime) of ``reduce`` over the values that are not NaN. An update whose every value
    is NaN adds nothing and takes no room; the window is the newest whole updates (NaN rows counted) of at most
    ``window_size`` rows among the others. ``nan`` where no value is left (Max/Min of nothing)."""
    counted = [u for u in updates if any(not math.isnan(v) for v in u)]
    window: list[float] = []
    used = 0
    for update in reversed(counted):
        if used + len(update) > window_size:
            break
        window += [v for v in update if not math.isnan(v)]
        used += len(update)
    lifetime = [v for u in updates for v in u if not math.isnan(v)]
    return reduce(window), reduce(lifetime)


def _plain_sum(values: list[float]) -> float:
    return math.fsum(values)


def _plain_max(values: list[float]) -> float:
    return max(values) if values else NAN


def _plain_min(values: list[float]) -> float:
    return min(values) if values else NAN


@pytest.mark.parametrize("name", ["Sum", "Max", "Min"])
@pytest.mark.parametrize("nan_strategy", ["ignore", "warn"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregation_sum_max_min_update_of_nan_only_takes_no_window_room(name, nan_strategy, seed):
    """Sum/Max/Min with NaN dropped: a validated update whose every value is NaN adds nothing and took its window
    room, evicting older updates (a Max window could read nan). Now it takes none, as Mean's. Every prefix of a random
    sequence of all-NaN, partly-NaN and finite batches, updates and ``forward`` alternating, against the plain-Python
    window of the newest updates that add something (``_scalar_nan_window``)."""
    from torchmetrics_ext import aggregation

    reduce = {"Sum": _plain_sum, "Max": _plain_max, "Min": _plain_min}[name]
    updates = _random_nan_updates(seed, 14)
    assert any(all(map(math.isnan, u)) for u in updates) and any(not any(map(math.isnan, u)) for u in updates)
    metric = Windowed(getattr(aggregation, name)(nan_strategy=nan_strategy), window_size=6)
    for step, values in enumerate(updates):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "warn": "Encountered `nan` values"; Max/Min of nothing: nan
            if step % 2:
                metric(torch.tensor(values, dtype=torch.float64))
            else:
                metric.update(torch.tensor(values, dtype=torch.float64))
            out = metric.compute()
        window, lifetime = _scalar_nan_window(updates[: step + 1], 6, reduce)
        for key, expected in (("window", window), ("lifetime", lifetime)):
            got = out[key].item()
            assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, rel=1e-12, abs=1e-12), (
                step,
                key,
            )


@pytest.mark.parametrize("name", ["Sum", "Max", "Min"])
def test_aggregation_sum_max_min_nan_only_update_still_counts_unvalidated_or_filled(name):
    """What the rule leaves alone: with ``validate_args=False`` nothing is read, so an all-NaN update takes its room
    (TorchRec's rule); a float ``nan_strategy`` fills NaN, so the update adds its fill values and takes its room."""
    from torchmetrics_ext import aggregation

    cls = getattr(aggregation, name)
    unchecked = Windowed(cls(nan_strategy="ignore", validate_args=False), window_size=2)
    filled = Windowed(cls(nan_strategy=4.0), window_size=2)
    for metric in (unchecked, filled):
        metric.update(torch.tensor([1.0, 2.0]))
        metric.update(torch.tensor([NAN, NAN]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Max/Min of nothing: nan
        assert math.isnan(unchecked.compute()["window"].item()) or name == "Sum"
        assert unchecked.compute()["window"].item() == 0.0 or name != "Sum"
    assert filled.compute()["window"].item() == {"Sum": 8.0, "Max": 4.0, "Min": 4.0}[name]


@pytest.mark.parametrize("name", ["Sum", "Max", "Min"])
def test_aggregation_sum_max_min_window_rule_reads_nothing_more(name, monkeypatch):
    """The rule rides on the reads validation already takes: one bounds read for a finite update (as before), the
    NaN path's second one for an update holding NaN (its kept rows read with its fills), no other."""
    from torchmetrics_ext import aggregation
    from torchmetrics_ext.aggregation import scalar

    reads: list[int] = []
    original = scalar.checked_bounds
    monkeypatch.setattr(scalar, "checked_bounds", lambda *a, **k: reads.append(1) or original(*a, **k))
    metric = Windowed(getattr(aggregation, name)(nan_strategy="ignore"), window_size=6)
    metric.update(torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert len(reads) == 1
    metric.update(torch.tensor([NAN, NAN], dtype=torch.float64))
    metric.update(torch.tensor([NAN, 3.0], dtype=torch.float64))
    assert len(reads) == 5


def test_torchmetrics_mean_metric_gives_an_all_zero_weight_update_its_room_as_documented():
    """A wrapped TorchMetrics ``MeanMetric`` is not told an all-zero ``weight`` (nothing notes it; reading it would
    be a host sync per GPU step): the update takes its room and the oldest leaves (docs/windows.md), while the
    package's ``aggregation.Mean`` (same ``update(value, weight)``) takes none.

    Reference: plain-Python weighted means over the updates each rule keeps in a window of 4 rows.
    """
    import torchmetrics

    from torchmetrics_ext.aggregation import Mean

    updates = [
        ([1.0, 2.0], [1.0, 1.0]),
        ([3.0, 4.0], [1.0, 3.0]),
        ([100.0, 100.0], [0.0, 0.0]),
        ([5.0, 6.0], [2.0, 1.0]),
    ]

    def mean(kept: list) -> float:
        rows = [(v, w) for values, weights in kept for v, w in zip(values, weights)]
        return sum(v * w for v, w in rows) / sum(w for _, w in rows)

    theirs = Windowed(torchmetrics.MeanMetric(nan_strategy="error"), window_size=4)
    ours = Windowed(Mean(), window_size=4)
    for i, (values, weights) in enumerate(updates):
        for metric in (theirs, ours):
            metric.update(torch.tensor(values), torch.tensor(weights))
        if i == 2:  # the zero update: theirs took its room (the first update left), ours none
            assert theirs.compute()["window"].item() == pytest.approx(mean(updates[1:3]))
            assert ours.compute()["window"].item() == pytest.approx(mean(updates[:2]))
    assert theirs.compute()["window"].item() == pytest.approx(mean(updates[2:]))
    assert ours.compute()["window"].item() == pytest.approx(mean(updates[1:2] + updates[3:]))
    for metric in (theirs, ours):  # the lifetime is the same either way
        assert metric.compute()["lifetime"].item() == pytest.approx(mean(updates))


def _ranking_reference(rows: list[tuple[float, int, int, float]], k: int) -> tuple[float, float]:
    """Plain Python NDCG@k (linear gain) and MRR@k of flat ``(score, relevance, query, weight)`` rows: per query,
    ties by relevance ascending, a query's weight the largest of its rows', queries without a relevant row
    skipped; the weighted mean over queries (``nan`` when they weigh nothing), as docs/ranking.md writes them."""
    queries: dict[int, list[tuple[float, int, float]]] = {}
    for score, relevance, query, weight in rows:
        queries.setdefault(query, []).append((score, relevance, weight))
    ndcg = mrr = total = 0.0
    for candidates in queries.values():
        ranked = [r for _, r, _ in sorted(candidates, key=lambda c: (-c[0], c[1]))]
        if not any(ranked):
            continue
        weight = max(w for *_, w in candidates)
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
        ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(ranked, reverse=True)[:k]))
        first = next(i for i, r in enumerate(ranked) if r) + 1
        ndcg += weight * dcg / ideal
        mrr += weight * (1.0 / first if first <= k else 0.0)
        total += weight
    return (ndcg / total, mrr / total) if total > 0 else (NAN, NAN)


def _ranking_window(updates: list[list[tuple]], window_size: int, skip_zero: bool) -> list[tuple]:
    """The window rule over flat rows: newest whole updates of at most ``window_size`` rows (zero-weight rows
    counted), a larger newest one cut to its newest rows; an update whose rows all weigh 0 skipped (validated)."""
    kept: list[tuple] = []
    used = 0
    for update in reversed(updates):
        if skip_zero and all(row[3] == 0 for row in update):
            continue
        if used == 0 and len(update) > window_size:
            return update[-window_size:]
        if used + len(update) > window_size:
            break
        kept = update + kept
        used += len(update)
    return kept


@pytest.mark.parametrize("how", ["update", "forward", "unvalidated"])
@pytest.mark.parametrize("seed", range(6))
def test_flat_ranking_window_with_zero_weight_rows_follows_the_window_rule(seed, how):
    """Flat ranking rows (``indexes``) of weight 0 beside weighted ones, all-zero-weight updates (adding rows to
    queries other updates weigh) and an update larger than the window: lifetime and window NDCG@3/MRR@3 equal the
    plain-Python reference over every row and over the rows the documented rule keeps (docs/windows.md: a
    validated all-zero update takes no room, its rows the lifetime's only; with validate_args=False it takes room).
    """
    rng = np.random.default_rng(seed)
    window, k = 12, 3
    updates = []
    for i in range(8):
        n = 15 if i == 5 else int(rng.integers(2, 9))
        scores = rng.permutation(1000)[:n] / 1000 + i  # distinct: no tie to break
        relevance, queries = rng.integers(0, 3, n), rng.integers(0, 4, n)
        kind = int(rng.integers(0, 3))
        weights = np.zeros(n) if kind == 0 else np.where(rng.random(n) < 0.4, 0.0, rng.random(n) + 0.5)
        updates.append(
            [(float(s), int(r), int(q), float(w)) for s, r, q, w in zip(scores, relevance, queries, weights)]
        )
    ranking = tmx.RankingMetrics(ks=(k,), metrics=("ndcg", "mrr"), validate_args=how != "unvalidated")
    metric = Windowed(ranking, window_size=window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # a batch or window without a relevant row
        for update in updates:
            s, w = (torch.tensor([row[j] for row in update], dtype=torch.float64) for j in (0, 3))
            y, q = (torch.tensor([row[j] for row in update]) for j in (1, 2))
            (metric if how == "forward" else metric.update)(s, y, indexes=q, weights=w)
        values = metric.compute()
    kept = _ranking_window(updates, window, skip_zero=how != "unvalidated")
    for part, rows in (("lifetime", [row for update in updates for row in update]), ("window", kept)):
        expected = _ranking_reference(rows, k)
        got = (values[part][f"ndcg@{k}"].item(), values[part][f"mrr@{k}"].item())
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=part)


# ----------------------------------------------------------------------------- each metric of a module alone


def _ids_step(batch: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
    p, y, w = batch
    n = len(p)
    return {
        "click_pred": p,
        "click_label": y,
        "click_w": w,
        "query": torch.arange(n) % 2 + 2 * step,  # two queries per step, none shared between steps
        "user": torch.full((n,), step),  # a group per step: both classes in each (see `_batches`)
    }


@pytest.mark.parametrize("neighbour", [None, "ndcg@3", "gauc_all", "gauc_weighted_all", "gauc_weighted_all+ndcg@3"])
def test_module_window_of_a_metric_does_not_depend_on_its_neighbours(neighbour):
    """An all-zero-weight step takes no room in NE's window whatever else the module holds: a ranking metric
    (whose lifetime keeps the step's rows) or a GAUC counting groups of zero weight (whose window keeps the step)
    leaves NE's window as NE alone has it (the step used to take room in every window next to them).

    Reference: the plain-Python window rule and scikit-learn over its rows; the neighbours' windows by their own
    rule (plain-Python NDCG over the rows the ranking window keeps, GAUC over every step's groups).
    """
    tasks = [
        tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w", group_id_name="user", session_id_name="query")
    ]
    metrics: dict[str, object] = {"ne": "ne"}
    neighbour = neighbour or ""
    if neighbour == "ndcg@3":
        metrics[neighbour] = "ndcg@3"
    elif neighbour == "gauc_all":
        metrics[neighbour] = tmx.GroupedAUC(average_groups="all")
    elif neighbour.startswith("gauc_weighted_all"):
        metrics["gauc_weighted_all"] = tmx.GroupedAUC(average_groups="all", weight_groups=True)
        if neighbour.endswith("ndcg@3"):
            metrics["ndcg@3"] = "ndcg@3"
    module = tmx.RecMetricModule(tasks, metrics, window_size=WINDOW, throughput=False)
    batches = _batches(7, SIZES, ZERO)
    for step, batch in enumerate(batches):
        module.update(_ids_step(batch, step))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        values = module.compute()
    np.testing.assert_allclose(values["ne/click/window"].item(), _ne(*_cat(_window_of(batches, WINDOW))), rtol=RTOL)
    np.testing.assert_allclose(values["ne/click"].item(), _ne(*_cat(batches)), rtol=RTOL)
    if neighbour == "ndcg@3":
        updates = [
            [(float(p), int(y), int(q), float(w)) for p, y, q, w in zip(b[0], b[1], _ids_step(b, i)["query"], b[2])]
            for i, b in enumerate(batches)
        ]
        kept = _ranking_window(updates, WINDOW, skip_zero=True)
        np.testing.assert_allclose(values["ndcg@3/click/window"].item(), _ranking_reference(kept, 3)[0], rtol=1e-12)
    if neighbour == "gauc_all":  # counts the zero steps' groups (0.5 each): its window keeps them
        rows = [(*b[:2], _ids_step(b, i)["user"], b[2]) for i, b in enumerate(batches)]
        kept_steps = _window_of(batches, WINDOW, skip_zero=False)
        held = rows[len(batches) - len(kept_steps) :]
        np.testing.assert_allclose(values["gauc_all/click/window"].item(), _grouped_all(held), rtol=RTOL)
    if neighbour.startswith("gauc_weighted_all"):  # groups (one per step) weighted by their weight: as NE's window
        kept = _window_of(batches, WINDOW)
        weights = [float(b[2].sum()) for b in kept]
        aucs = [_auc(*(t.numpy() for t in b)) for b in kept]
        np.testing.assert_allclose(
            values["gauc_weighted_all/click/window"].item(), np.average(aucs, weights=weights), rtol=RTOL
        )


def _two_task_steps(dtypes: tuple[torch.dtype, torch.dtype]) -> list[dict[str, torch.Tensor]]:
    """Steps of tasks a and b; task a weighs nothing in steps 3 and 4, task b nothing in step 5."""
    a = _batches(11, SIZES, {3, 4})
    b = _batches(12, SIZES, {5})
    return [
        {
            "a_pred": pa,
            "a_label": ya,
            "a_w": wa.to(dtypes[0]),
            "b_pred": pb,
            "b_label": yb,
            "b_w": wb.to(dtypes[1]),
            "query": torch.arange(len(pa)) % 2 + 2 * step,
        }
        for step, ((pa, ya, wa), (pb, yb, wb)) in enumerate(zip(a, b))
    ]


TWO_TASKS = [
    tmx.RecTaskInfo("a", "a_label", "a_pred", "a_w", session_id_name="query"),
    tmx.RecTaskInfo("b", "b_label", "b_pred", "b_w", session_id_name="query"),
]


def _task_batches(steps: list[dict[str, torch.Tensor]], task: str) -> list[tuple[torch.Tensor, ...]]:
    return [(s[f"{task}_pred"], s[f"{task}_label"], s[f"{task}_w"].double()) for s in steps]


@pytest.mark.parametrize(
    "dtypes", [(torch.float64, torch.float64), (torch.float32, torch.float64)], ids=["stacked", "per-column"]
)
def test_module_metric_of_some_tasks_skips_a_step_where_its_tasks_weigh_nothing(dtypes):
    """``metric_tasks``: an AUC reading task a alone gives no room to a step where a weighs nothing and b does (as
    the AUC alone over a would), while NE over both tasks keeps that step (one window for its tasks), and skips
    the step where neither does not occur; a ranking metric's per-task copies each follow their own task.

    Reference: the plain-Python window rule per metric and scikit-learn / plain-Python NDCG over its rows.
    """
    steps = _two_task_steps(dtypes)
    module = tmx.RecMetricModule(
        TWO_TASKS,
        {"auc_a": {"metric": "auc"}, "ne": "ne", "calibration": "calibration", "ndcg@3": "ndcg@3"},
        metric_tasks={"auc_a": ["a"]},
        window_size=WINDOW,
        throughput=False,
    )
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        values = module.compute()
    a, b = _task_batches(steps, "a"), _task_batches(steps, "b")
    np.testing.assert_allclose(values["auc_a/a/window"].item(), _auc(*_cat(_window_of(a, WINDOW))), rtol=RTOL)
    # NE reads both tasks: no step weighs nothing for both, so every step takes its room
    both = _window_of(a, WINDOW, skip_zero=False)
    kept = len(both)
    for task, batches in (("a", a), ("b", b)):
        window = batches[len(batches) - kept :]
        np.testing.assert_allclose(values[f"ne/{task}/window"].item(), _ne(*_cat(window)), rtol=RTOL)
        p, y, w = _cat(window)
        np.testing.assert_allclose(values[f"calibration/{task}/window"].item(), (w * p).sum() / (w * y).sum())
        updates = [
            [(float(p), int(y), int(q), float(w)) for p, y, q, w in zip(*batch[:2], s["query"], batch[2])]
            for batch, s in zip(batches, steps)
        ]
        rows = _ranking_window(updates, WINDOW, skip_zero=True)  # the task's own zero steps skipped
        np.testing.assert_allclose(values[f"ndcg@3/{task}/window"].item(), _ranking_reference(rows, 3)[0], rtol=1e-12)
        everything = [row for update in updates for row in update]
        np.testing.assert_allclose(values[f"ndcg@3/{task}"].item(), _ranking_reference(everything, 3)[0], rtol=1e-12)


def test_module_shared_window_stays_laid_out_across_an_all_zero_weight_step():
    """The module's additive windows share one ring; a step whose weights are all zero goes through each metric's
    own window (taking no room in any) and leaves that layout in place for the next step, values as references."""
    steps = _module_steps()
    metrics = {"ne": "ne", "calibration": "calibration", "ctr": "ctr", "mse": "mse"}
    module = tmx.RecMetricModule(TASKS, metrics, window_size=WINDOW, throughput=False)
    shared = []
    for step in steps:
        module.update(step)
        shared.append(module.__dict__.get("_shared_window"))
    assert shared[0] is not None and all(s is shared[0] for s in shared)
    assert shared[0].intact()
    batches = [(s["click_pred"], s["click_label"], s["click_w"]) for s in steps]
    p, y, w = _cat(_window_of(batches, WINDOW))
    values = module.compute()
    np.testing.assert_allclose(values["ne/click/window"].item(), _ne(p, y, w), rtol=RTOL)
    np.testing.assert_allclose(values["ctr/click/window"].item(), np.average(y, weights=w), rtol=1e-12)
    np.testing.assert_allclose(values["mse/click/window"].item(), np.average((p - y) ** 2, weights=w), rtol=1e-12)


def _ddp_module_job(rank: int, world_size: int) -> dict[str, float]:
    """Rank 1's third step weighs nothing: NE's window there keeps rank 1's first step, next to an NDCG."""
    batches = _batches(8 + rank, [3, 2, 2] if rank == 0 else [2, 2, 2], {2} if rank == 1 else set())
    tasks = [tmx.RecTaskInfo("click", "click_label", "click_pred", "click_w", session_id_name="query")]
    module = tmx.RecMetricModule(tasks, {"ne": "ne", "ndcg@3": "ndcg@3"}, window_size=8, throughput=False)
    for step, batch in enumerate(batches):
        module.update(_ids_step(batch, step + 10 * rank))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        return {key: value.item() for key, value in module.compute().items()}


@pytest.mark.ddp
def test_ddp_module_metric_window_does_not_depend_on_its_neighbours(ddp_pool):
    """Under DDP each rank's share of NE's window (4 samples) skips that rank's all-zero-weight step next to a
    ranking metric, as NE's window alone does; the ranking window follows the same rule over its rows.

    Reference: the plain-Python window rule per rank, scikit-learn NE and plain-Python NDCG over the kept rows.
    """
    per_rank = [
        _batches(8 + rank, [3, 2, 2] if rank == 0 else [2, 2, 2], {2} if rank == 1 else set()) for rank in (0, 1)
    ]
    kept = [row for batches in per_rank for row in _window_of(batches, 4)]
    updates = [
        [(float(p), int(y), int(q), float(w)) for p, y, q, w in zip(*b[:2], _ids_step(b, i + 10 * rank)["query"], b[2])]
        for rank, batches in enumerate(per_rank)
        for i, b in enumerate(batches)
    ]
    ranked = [row for rank in (0, 1) for row in _ranking_window(updates[3 * rank : 3 * rank + 3], 4, skip_zero=True)]
    for out in ddp_pool.run(_ddp_module_job):
        np.testing.assert_allclose(out["ne/click/window"], _ne(*_cat(kept)), rtol=RTOL)
        np.testing.assert_allclose(out["ndcg@3/click/window"], _ranking_reference(ranked, 3)[0], rtol=1e-12)
        everything = [row for update in updates for row in update]
        np.testing.assert_allclose(out["ndcg@3/click"], _ranking_reference(everything, 3)[0], rtol=1e-12)
