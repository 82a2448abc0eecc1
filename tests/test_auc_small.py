"""The small-input paths of the exact AUC family's compute: bit-identical to the general path, right against sklearn.

``_kernels._small_curve_stats`` (one task of at most ``_SMALL`` CPU samples, in NumPy) must give
the very bits of ``_pack`` + ``_sort_rows`` + ``_row_curve_sums``; ``_auc_compute`` /
``_auprc_compute`` on the host the very bits of their tensor formulas. Values of tiny inputs
are checked against scikit-learn.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import torchmetrics_ext as tmx
from torchmetrics_ext.functional.auc import _kernels as K
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning, collecting_undefined


def _bits(x: torch.Tensor) -> list[int]:
    return x.to(torch.float64).contiguous().view(torch.int64).tolist()


def _general(scores: list[torch.Tensor], signed: list[torch.Tensor], num_tasks: int = 1) -> tuple[torch.Tensor, ...]:
    packed, pos_total, neg_total = K._pack(scores, signed, num_tasks)
    if packed.shape[-1] == 0:
        return pos_total, neg_total, torch.zeros_like(pos_total), torch.zeros_like(pos_total)
    return (pos_total, neg_total, *K._row_curve_sums(K._sort_rows(packed), neg_total))


def _random_case(rng: np.random.Generator, n: int, num_tasks: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Scores with ties (few levels, ±0.0) and signed float32 weights with zeros, sample-major, split in chunks."""
    shape = (n, num_tasks)
    kind = rng.integers(4)
    if kind == 0:
        p = rng.random(shape)
    elif kind == 1:
        p = rng.integers(0, max(1, n // 3) + 1, shape) / max(1, n // 3)  # many ties
    elif kind == 2:
        p = rng.choice([0.0, -0.0, 0.5, 1.0], shape)
    else:
        p = np.full(shape, 0.25)  # all tied
    y = rng.random(shape) < rng.random()
    wkind = rng.integers(6)
    if wkind == 0:
        w = np.ones(shape)
    elif wkind == 4:
        w = rng.integers(0, 4, shape).astype(float)  # whole weights with zeros: P, N read off the curve
    elif wkind == 5:
        w = np.zeros(shape)
    elif wkind == 1:
        w = rng.random(shape) * 10.0 ** rng.uniform(-30, 30)
    elif wkind == 2:
        w = np.where(rng.random(shape) < 0.3, 0.0, rng.exponential(size=shape))  # zeros
    else:
        w = rng.choice([0.0, 1e-30, 1.0, 3e30], shape)
    scores = torch.tensor(p, dtype=torch.float32).reshape(-1)
    signed = torch.tensor(np.where(y, w, -w), dtype=torch.float32).reshape(-1)
    cuts = sorted(rng.integers(0, n + 1, rng.integers(0, 3)).tolist())
    bounds = [num_tasks * b for b in [0, *cuts, n]]
    return (
        [scores[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
        [signed[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_tasks", [1, 2, 3, 16])
def test_small_curve_stats_bit_identical_to_general_path(seed: int, num_tasks: int) -> None:
    rng = np.random.default_rng(seed)
    for n in [0, 1, 2, 3, 7, 8, 9, 16, 31, 100, 257, 1000, K._SMALL // num_tasks]:
        for _ in range(8 if n < 1000 else 2):
            scores, signed = _random_case(rng, n, num_tasks)
            small = K._small_curve_stats(scores, signed, num_tasks)
            general = _general(scores, signed, num_tasks)
            for got, want in zip(small, general, strict=True):
                assert got.shape == want.shape == (num_tasks,) and got.dtype == want.dtype == torch.float64
                assert _bits(got) == _bits(want), (n, seed)


def test_exact_curve_stats_takes_small_path_only_for_small_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(K, "_small_curve_stats", lambda s, w, t: calls.append(t) or _general(s, w, t))
    FB._exact_curve_stats([torch.rand(8)], [torch.ones(8)], 1)
    FB._exact_curve_stats([torch.rand(K._SMALL + 1)], [torch.ones(K._SMALL + 1)], 1)
    FB._exact_curve_stats([torch.rand(24)], [torch.ones(24)], 3)
    FB._exact_curve_stats([torch.rand(34)], [torch.ones(34)], 17)  # more tasks than one cumsum each
    assert calls == [1, 3]


def _tensor_auc(pos: torch.Tensor, neg: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
    undefined = (pos <= 0) | (neg <= 0)
    value = (num / torch.where(undefined, 1.0, pos * neg)).clamp_(0.0, 1.0)
    return torch.where(undefined, math.nan, value)


def _tensor_auprc(pos: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
    undefined = pos <= 0
    return torch.where(undefined, math.nan, (num / torch.where(undefined, 1.0, pos)).clamp_(0.0, 1.0))


def test_host_compute_bit_identical_to_tensor_formula() -> None:
    rng = np.random.default_rng(7)
    specials = [0.0, 5e-324, 1e-300, 1e-170, 0.5, 1.0, 3.0, 1e160, 1e300, math.inf]
    for _ in range(300):
        t = int(rng.integers(1, FB._HOST_TASKS + 1))
        pos, neg = (torch.tensor(rng.choice(specials, t) * rng.random(t) ** rng.integers(0, 2)) for _ in range(2))
        num = pos * neg * torch.tensor(rng.uniform(-1e-15, 1 + 1e-15, t))
        num = torch.where(torch.tensor(rng.random(t) < 0.1), torch.tensor(rng.choice([0.0, -1e-300, 1e-300], t)), num)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert _bits(FB._auc_compute(pos, neg, num)) == _bits(_tensor_auc(pos, neg, num))
            assert _bits(FB._auprc_compute(pos, num)) == _bits(_tensor_auprc(pos, num))


def test_host_compute_warns_and_collects_as_tensor_path() -> None:
    one = torch.ones(2, dtype=torch.float64)
    pos = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(UndefinedMetricWarning, match=r"task\(s\) \[0\]"):
        FB._auc_compute(pos, one, one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FB._auc_compute(one, one, one)  # nothing undefined: no warning
        with collecting_undefined() as collected:
            FB._auprc_compute(one, one)
            FB._auprc_compute(pos, one)
    assert [entry.undefined.tolist() for entry in collected] == [[False, False], [True, False]]


def _sk_auc(y, p, w=None):
    return skm.roc_auc_score(y, p, sample_weight=w)


@pytest.mark.parametrize(
    ("preds", "target", "weights"),
    [
        ([0.3, 0.7], [0, 1], None),
        ([0.5, 0.5, 0.5], [0, 1, 1], None),  # all tied
        ([0.2, 0.9, 0.4, 0.4], [1, 0, 1, 0], [0.0, 2.0, 1.0, 0.0]),  # zero weights
        ([0.1, 0.4, 0.35, 0.8, 0.8], [0, 0, 1, 1, 0], [1.0, 3.0, 0.5, 2.0, 2.0**-10]),
        ([-0.0, 0.0, 0.0, 1.0], [1, 0, 1, 0], None),  # ±0 scores tie
    ],
)
def test_tiny_inputs_against_sklearn(preds, target, weights) -> None:
    p, t = torch.tensor(preds), torch.tensor(target)
    w = None if weights is None else torch.tensor(weights)
    keep = np.ones(len(preds), bool) if weights is None else np.asarray(weights) > 0
    want_auc = _sk_auc(
        np.asarray(target)[keep], np.asarray(preds)[keep], None if w is None else np.asarray(weights)[keep]
    )
    want_ap = skm.average_precision_score(
        np.asarray(target)[keep],
        np.asarray(preds)[keep],
        sample_weight=None if w is None else np.asarray(weights)[keep],
    )
    args = (p, t) if w is None else (p, t, w)
    for metric, want in ((tmx.AUC(), want_auc), (tmx.AUPRC(), want_ap)):
        assert metric(*args).item() == pytest.approx(want, abs=1e-12)  # forward: the batch's compute
        assert metric.compute().item() == pytest.approx(want, abs=1e-12)
    assert tmx.functional.auc(*args).item() == pytest.approx(want_auc, abs=1e-12)
    assert tmx.functional.auprc(*args).item() == pytest.approx(want_ap, abs=1e-12)


def test_one_sample_and_one_class_are_nan_with_a_warning() -> None:
    for args in [(torch.tensor([0.3]), torch.tensor([1])), (torch.tensor([0.3, 0.6]), torch.tensor([0, 0]))]:
        with pytest.warns(UndefinedMetricWarning):
            assert math.isnan(tmx.AUC()(*args).item())
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(tmx.AUPRC()(torch.tensor([0.3, 0.6]), torch.tensor([0, 0])).item())
    assert tmx.AUPRC()(torch.tensor([0.3]), torch.tensor([1])).item() == 1.0  # positives only, as sklearn


def test_three_tiny_tasks_against_sklearn() -> None:
    p = torch.tensor([[0.1, 0.9, 0.5], [0.5, 0.5, 0.5], [0.3, 0.2, 0.2]])
    t = torch.tensor([[0, 1, 1], [1, 0, 1], [1, 0, 0]])
    w = torch.tensor([[1.0, 0.5, 2.0], [1.0, 1.0, 0.0], [0.25, 4.0, 1.0]])
    metric = tmx.AUC(num_tasks=3)
    got = metric(p, t, w)
    want = [_sk_auc(t[i].numpy(), p[i].numpy(), w[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(metric.compute().numpy(), want, rtol=0, atol=1e-12)


def test_grouped_singleton_groups_against_sklearn() -> None:
    # groups 0 and 3 are singletons (undefined, left out of the mean); 1 and 2 hold both classes
    p = torch.tensor([0.4, 0.1, 0.8, 0.3, 0.6, 0.6, 0.9])
    t = torch.tensor([1, 0, 1, 1, 0, 1, 0])
    g = torch.tensor([0, 1, 1, 1, 2, 2, 3])
    metric = tmx.GroupedAUC()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        got = metric(p, t, g).item()
    parts = [_sk_auc(t[g == k].numpy(), p[g == k].numpy()) for k in (1, 2)]
    assert got == pytest.approx(float(np.mean(parts)), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_small_segment_stats_bit_identical_to_general_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """GroupedAUC's per-segment kernel: the NumPy path against the PyTorch path on the same inputs."""
    from torchmetrics_ext.functional.auc import grouped as FG

    rng = np.random.default_rng(100 + seed)
    cases = [(1, 1), (3, 1), (8, 2), (20, 5), (64, 17), (300, 40), (600, 3), (2000, 30), (5000, 1), (6000, 18)]
    for n, num_segments in cases:
        for _ in range(4):
            scores, signed = _random_case(rng, n)
            scores, signed = torch.cat(scores).reshape(1, n), torch.cat(signed).reshape(1, n)
            seg = torch.as_tensor(rng.integers(0, num_segments, n))
            small = FG._segment_stats(scores, signed, seg, num_segments)
            with monkeypatch.context() as patch:
                patch.setattr(K, "_SMALL", -1)
                general = FG._segment_stats(scores, signed, seg, num_segments)
            assert small.shape == general.shape == (4, num_segments)
            assert _bits(small.reshape(-1)) == _bits(general.reshape(-1)), (n, num_segments)
    # which path each shape takes: one segment, a grid of <= 16, the flat scan, the caller's long scan
    ones = torch.ones(1, 6000)
    for num_segments, taken in ((1, True), (3, True), (30, True), (18, False)):
        seg = torch.arange(6000) * num_segments // 6000
        assert (FG._small_segment_stats(torch.rand(1, 6000), ones, seg, num_segments) is not None) == taken


@pytest.mark.parametrize("num_tasks", [1, 3])
def test_one_group_stats_small_path_bit_identical(num_tasks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block of one group (GroupedAUC of a batch of one group): the small kernel against the packed path."""
    from torchmetrics_ext.functional.auc import grouped as FG

    rng = np.random.default_rng(9)
    for n in [1, 2, 5, 40, 700]:
        for _ in range(6):
            scores, signed = _random_case(rng, n, num_tasks)
            scores = torch.cat(scores).reshape(n, num_tasks).T
            signed = torch.cat(signed).reshape(n, num_tasks).T
            rows = torch.as_tensor(rng.permutation(n))
            small = FG._one_group_stats(scores, signed, rows)
            with monkeypatch.context() as patch:
                patch.setattr(K, "_SMALL", -1)
                general = FG._one_group_stats(scores, signed, rows)
            assert _bits(small.reshape(-1)) == _bits(general.reshape(-1)), n


@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
def test_small_compute_is_made_on_the_cpu_whatever_the_default_device(cls) -> None:
    """A small CPU compute under another default device (``torch.set_default_device("cuda")``) stays on the CPU.

    The NumPy kernel's aligned buffer and the host division's result were made without a device:
    under a meta (or cuda) default the compute raised (``.numpy()`` of a meta tensor) or returned a
    tensor on the default device, where the general path computes on the states' device.
    """
    rng = np.random.default_rng(11)
    p, y = rng.random(30).astype(np.float32), rng.integers(0, 2, size=30)
    y[:2] = [0, 1]
    metric, empty = cls(), cls()
    metric.update(torch.tensor(p), torch.tensor(y))
    empty.update(torch.tensor(p), torch.zeros(30, dtype=torch.long))  # one class: nan and a warning
    score = skm.roc_auc_score if cls is tmx.AUC else skm.average_precision_score
    with torch.device("meta"):
        value = metric.compute()
        with pytest.warns(UndefinedMetricWarning):
            undefined = empty.compute()
    assert value.is_cpu and undefined.is_cpu
    np.testing.assert_allclose(value.item(), score(y, p), rtol=1e-12)
    assert math.isnan(undefined.item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_functional_inputs_requiring_grad_against_sklearn(dtype) -> None:
    """``auc``/``auprc`` of small inputs that require gradients (a model's outputs) give sklearn's value.

    The NumPy path read them with ``.numpy()``, which refuses a tensor that requires gradients: a
    small functional call on a model's outputs raised ``RuntimeError`` where larger ones did not.
    """
    rng = np.random.default_rng(5)
    p, y, w = rng.random(40), rng.integers(0, 2, size=40), rng.random(40) + 0.1
    y[:2] = [0, 1]
    preds = torch.tensor(p, dtype=dtype, requires_grad=True)
    weights = torch.tensor(w, dtype=dtype, requires_grad=True)
    p32, w32 = p.astype(np.float32), w.astype(np.float32)  # exact mode reads scores and weights as float32
    target = torch.tensor(y)
    np.testing.assert_allclose(
        tmx.functional.auc(preds, target, weights).item(), skm.roc_auc_score(y, p32, sample_weight=w32), rtol=1e-12
    )
    np.testing.assert_allclose(
        tmx.functional.auprc(preds, target).item(), skm.average_precision_score(y, p32), rtol=1e-12
    )
