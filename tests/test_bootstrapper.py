"""TorchMetrics' ``BootStrapper`` around the package's metrics.

``BootStrapper`` resamples dimension 0 of every input tensor. For the package's single-task inputs
``(N,)`` that is the samples, and each bootstrap must be the metric of the resampled rows, checked
here against scikit-learn and a NumPy NE on rows drawn with the same generator calls. For a
multi-task ``(T, N)`` input dimension 0 is the tasks: each "bootstrap" would be a reshuffle of the
task rows (``multinomial``) or a batch with another task count (``poisson``), so the package
refuses such an update with a ``ValueError`` that names the input and the per-task workaround,
and leaves the metric as it was.
"""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.wrappers import BootStrapper, MultitaskWrapper

import torchmetrics_ext as tmx

_gen = torch.Generator().manual_seed(11)
N = 80
P = torch.rand(N, generator=_gen).clamp(0.02, 0.98)
Y = (torch.rand(N, generator=_gen) < P).long()
P2 = torch.rand(2, N, generator=_gen).clamp(0.02, 0.98)
Y2 = (torch.rand(2, N, generator=_gen) < P2).long()


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cross_entropy = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    c = y.mean()
    return float(cross_entropy / -(c * np.log(c) + (1 - c) * np.log(1 - c)))


def _multinomial_rows(seed: int, size: int, count: int) -> list[np.ndarray]:
    """The rows ``BootStrapper(sampling_strategy="multinomial")`` draws after ``torch.manual_seed(seed)``:
    one ``torch.multinomial`` of ``size`` uniform draws with replacement per bootstrap, in order."""
    torch.manual_seed(seed)
    return [torch.multinomial(torch.ones(size), num_samples=size, replacement=True).numpy() for _ in range(count)]


@pytest.mark.parametrize(
    ("make", "reference"),
    [(tmx.AUC, lambda p, y: roc_auc_score(y, p)), (tmx.NormalizedEntropy, _ne)],
    ids=["auc", "ne"],
)
def test_each_bootstrap_of_a_single_task_metric_is_the_metric_of_its_resampled_rows(make, reference):
    torch.manual_seed(3)
    boot = BootStrapper(make(), num_bootstraps=6, sampling_strategy="multinomial", raw=True)
    boot.update(P, Y)
    raw = boot.compute()["raw"]
    p, y = P.numpy(), Y.numpy()
    expected = [reference(p[rows], y[rows]) for rows in _multinomial_rows(3, N, 6)]
    torch.testing.assert_close(raw, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(boot.compute()["mean"], torch.tensor(np.mean(expected), dtype=torch.float64))


def test_the_documented_per_task_workaround_resamples_each_tasks_rows():
    """``MultitaskWrapper`` of one single-task ``BootStrapper`` per task (docs/getting_started.md)."""
    torch.manual_seed(5)
    boot = MultitaskWrapper(
        {task: BootStrapper(tmx.AUC(), num_bootstraps=4, sampling_strategy="multinomial", raw=True) for task in "ab"}
    )
    boot.update({"a": P2[0], "b": P2[1]}, {"a": Y2[0], "b": Y2[1]})
    value = boot.compute()
    rows = _multinomial_rows(5, N, 8)  # task a's 4 draws, then task b's 4
    for t, task in enumerate("ab"):
        p, y = P2[t].numpy(), Y2[t].numpy()
        expected = [roc_auc_score(y[r], p[r]) for r in rows[4 * t : 4 * t + 4]]
        torch.testing.assert_close(value[task]["raw"], torch.tensor(expected, dtype=torch.float64))


def _states(metric: BootStrapper) -> list[dict[str, list[torch.Tensor]]]:
    """Every bootstrap's states, list states as their chunks (a ``Windowed``'s: its lifetime's and window's)."""
    metric.persistent(True)
    return [
        {
            k: [c.clone() for c in v] if isinstance(v, list) else [v.clone()]
            for k, v in m.state_dict(keep_vars=True).items()
            if isinstance(v, (torch.Tensor, list))
        }
        for m in metric.metrics
    ]


def _same(first: list[dict[str, list[torch.Tensor]]], second: list[dict[str, list[torch.Tensor]]]) -> bool:
    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(len(a[k]) == len(b[k]) and all(map(torch.equal, a[k], b[k])) for k in a)
        for a, b in zip(first, second)
    )


_MULTI_TASK = {
    "ne": (lambda: tmx.NormalizedEntropy(num_tasks=2), (P2, Y2)),
    "auc": (lambda: tmx.AUC(num_tasks=2), (P2, Y2)),
    "auc_binned": (lambda: tmx.AUC(num_tasks=2, num_bins=100), (P2, Y2)),
    "gauc": (lambda: tmx.GroupedAUC(num_tasks=2), (P2, Y2, torch.arange(N) % 5)),
    "xauc": (lambda: tmx.XAUC(num_tasks=2), (P2, Y2.double())),
    "ctr_one_task_as_1_by_n": (tmx.CTR, (P[None], Y[None])),  # (1, N): every bootstrap the same one row
    "windowed": (lambda: tmx.Windowed(tmx.NormalizedEntropy(num_tasks=2), window_size=50), (P2, Y2)),
    "windowed_entry": (lambda: tmx.Windowed(tmx.AUC(num_tasks=2), window_size=50)["window"], (P2, Y2)),
}


@pytest.mark.parametrize("path", ["update", "forward"])
@pytest.mark.parametrize("strategy", ["multinomial", "poisson"])
@pytest.mark.parametrize("name", list(_MULTI_TASK))
def test_a_task_first_input_is_refused_and_changes_nothing(name, strategy, path):
    make, batch = _MULTI_TASK[name]
    boot = BootStrapper(make(), num_bootstraps=3, sampling_strategy=strategy)
    before = _states(boot)
    with pytest.raises(
        ValueError, match=r"BootStrapper resamples dimension 0.*`preds` \(here of shape \(\d+, 80\).*is its tasks"
    ):
        boot.update(*batch) if path == "update" else boot(*batch)
    assert _same(_states(boot), before)
    assert all(metric.update_count == 0 for metric in boot.metrics)


def test_a_task_first_input_is_refused_inside_an_expression():
    """``BootStrapper(ne[0])``: the entry's metric is updated by the expression, still inside the bootstrap."""
    boot = BootStrapper(tmx.NormalizedEntropy(num_tasks=2)[0], num_bootstraps=2, sampling_strategy="multinomial")
    with pytest.raises(ValueError, match="BootStrapper resamples dimension 0"):
        boot.update(P2, Y2)


def test_a_metric_updated_before_it_is_bootstrapped_is_still_refused():
    """The check is skipped for an object once updated outside a bootstrap; BootStrapper's copies check again."""
    metric = tmx.AUC(num_tasks=2)
    metric.update(P2, Y2)
    boot = BootStrapper(metric, num_bootstraps=2, sampling_strategy="multinomial")
    with pytest.raises(ValueError, match="BootStrapper resamples dimension 0"):
        boot.update(P2, Y2)


def test_task_first_inputs_outside_a_bootstrapper_are_unaffected():
    metric = tmx.NormalizedEntropy(num_tasks=2)
    metric.update(P2[:, :40], Y2[:, :40])
    metric.update(P2[:, 40:], Y2[:, 40:])
    expected = [_ne(P2[t].numpy(), Y2[t].numpy()) for t in range(2)]
    torch.testing.assert_close(metric.compute(), torch.tensor(expected, dtype=torch.float64))


def test_a_single_task_metric_updated_with_rows_before_it_is_bootstrapped_is_still_refused():
    """The first checked update marks the object (whatever ``preds``' shape); BootStrapper's copies check again."""
    metric = tmx.CTR()
    metric.update(P, Y)  # (N,): marks this object as updated outside a bootstrap
    boot = BootStrapper(metric, num_bootstraps=2, sampling_strategy="multinomial")
    boot.update(P, Y)  # (N,) rows are resampled correctly
    with pytest.raises(ValueError, match=r"BootStrapper resamples dimension 0.*\(1, 80\)"):
        boot.update(P[None], Y[None])  # (1, N) inside: every bootstrap the same row


@pytest.mark.parametrize("make", [tmx.CTR, lambda: tmx.Windowed(tmx.CTR(), window_size=50)], ids=["metric", "windowed"])
def test_a_bootstrapped_copy_fed_rows_first_still_refuses_a_task_first_batch(make):
    """A copy inside BootStrapper that saw ``(N,)`` rows is marked as inside, not as cleared."""
    boot = BootStrapper(make(), num_bootstraps=2, sampling_strategy="multinomial")
    boot.update(P, Y)
    boot.update(P, Y)
    before = _states(boot)
    with pytest.raises(ValueError, match="BootStrapper resamples dimension 0"):
        boot.update(P[None], Y[None])
    assert _same(_states(boot), before)


@pytest.mark.parametrize(
    ("make", "module"),
    [
        (lambda: tmx.NormalizedEntropy(), "torchmetrics_ext.metrics.base"),
        (lambda: tmx.Windowed(tmx.AUC(), window_size=50), "torchmetrics_ext.wrappers.windowed"),
    ],
    ids=["metric", "windowed"],
)
def test_the_bootstrap_check_is_not_called_again_once_an_update_was_outside_a_bootstrap(make, module, monkeypatch):
    """Per-call cost: after the first checked update (``(N,)`` rows too) the per-step path reads a mark, no call.

    (Fails before the mark was read inline and set for ``(N,)`` rows: one call of the check per update, ~0.3-0.8 us
    of a ~20 us validated update at N=8.)
    """
    from torchmetrics_ext.metrics import _bootstrap

    calls = []

    def counted(metric, args, kwargs):
        calls.append(1)
        _bootstrap.refuse_bootstrapped_tasks(metric, args, kwargs)

    monkeypatch.setattr(importlib.import_module(module), "refuse_bootstrapped_tasks", counted)
    metric = make()
    metric.update(P, Y)
    assert len(calls) == 1
    for _ in range(3):
        metric.update(P, Y)
        metric(P, Y)
    assert len(calls) == 1
    clone = copy.deepcopy(metric)  # another object: checked again once
    clone.update(P, Y)
    clone.update(P, Y)
    assert len(calls) == 2


def _copies_until_address_reused(trials: int = 300) -> tuple[BootStrapper, int]:
    """A copy of a ``BootStrapper`` whose single bootstrap sits at the address of a freed metric updated outside.

    The freed metric's bootstrap mark was copied into the bootstrap (``BootStrapper`` deep-copies the
    metric it is given); CPython hands the freed address to a later object of the same size every few
    tries. Returns the copy and the number of tries (``trials`` when no address was reused).
    """
    for attempt in range(trials):
        base = tmx.NormalizedEntropy(num_tasks=2)
        base.update(P2[:, :8], Y2[:, :8])  # outside a bootstrap: marked so
        freed = id(base)
        wrapper = BootStrapper(base, num_bootstraps=1, sampling_strategy="multinomial")
        del base
        again = copy.deepcopy(wrapper)
        if id(again.metrics[0]) == freed:
            return again, attempt
    return again, trials


def test_a_copy_at_a_freed_metrics_address_still_refuses_task_first_batches() -> None:
    """The mark of an update outside a bootstrap belongs to its object, not to an address that a copy may reuse.

    An ``id()`` mark let the copy above skip the check, and its one bootstrap took a reshuffle of the
    task rows: a task-first batch must be refused whatever address the copy got.
    """
    wrapper, _ = _copies_until_address_reused()
    before = {k: v.clone() for k, v in wrapper.metrics[0].metric_state.items()}
    with pytest.raises(ValueError, match="BootStrapper resamples dimension 0"):
        wrapper.update(P2, Y2)
    for name, value in wrapper.metrics[0].metric_state.items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "clone"])
def test_copies_carry_no_bootstrap_mark(how: str) -> None:
    """A copy of a metric updated outside a bootstrap checks its own first update (and still pickles)."""
    import pickle

    from torchmetrics_ext.metrics._bootstrap import INSIDE, OUTSIDE

    metric = tmx.NormalizedEntropy(num_tasks=2)
    metric.update(P2[:, :8], Y2[:, :8])
    assert OUTSIDE in metric.__dict__
    copied = {
        "deepcopy": copy.deepcopy,
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
        "clone": lambda m: m.clone(),
    }
    twin = copied[how](metric)
    assert OUTSIDE not in twin.__dict__ and INSIDE not in twin.__dict__
    wrapper = BootStrapper(twin, num_bootstraps=2)
    with pytest.raises(ValueError, match="BootStrapper resamples dimension 0"):
        wrapper.update(P2, Y2)
    twin.update(P2[:, :8], Y2[:, :8])  # the copy's own update outside marks it
    assert twin.__dict__[OUTSIDE]() is twin
