"""Per-call cost of a small validated CPU ``update``, counted, and what its faster paths must keep.

At 1-256 samples an ``update`` costs its calls (each torch operator about 1 µs on the CPU, plus
the Python around it), not its arithmetic (``benchmarks/README.md``, "Per-call cost against the
anchors"). CI has no quiet clock, so the calls are what it holds to account: counted with a
``TorchFunctionMode`` (deterministic; tensor property reads such as ``.shape`` left out). A change
that adds a call to one of these updates fails here, to be made on purpose (and the budget raised,
with the reason) or avoided. The values of the shortened paths are checked against NumPy float64
formulas and exact fractions; their rejections against the messages of ``docs/policies.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities.chunks import join_small_tails


class _Calls(TorchFunctionMode):
    """Torch functions and tensor methods called inside the block, by name (property reads left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if name != "__get__":
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def _batch(n: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(n, generator=g)
    return {
        "p": p,
        "t": torch.rand(n, generator=g),
        "y": (torch.rand(n, generator=g) < p).long(),
        "w": torch.rand(n, generator=g) + 0.1,
    }


# metric -> (arguments from _batch, most calls per update); the budgets after the 2026-12-05 cuts
# (before them: 27, 27, 25, 32, 27, 19 calls; the error metrics 24 before their values were checked from sums).
# A bounds read of up to 16 values is one `tolist` (was `aminmax` and two `item`s): WeightedAverage 21 -> 17,
# CTR 31 -> 25, NormalizedEntropy 26 -> 22, AUC 17 -> 12 (branch perf-pointwise)
BUDGETS = {
    # the labels' float64 cast (the predictions go uncast: `p - y` promotes them), the (1, N) views; sub,
    # 2 vecdot, abs_, 2 sum; the values' check from sum (p - y)² and sum y (two item: no bounds read); the
    # states' add (17 with the predictions' cast)
    # (15: one task's uncast predictions keep their (N,) shape, `p - y` broadcasts them; 16 with their view)
    "WeightedMSE": (("p", "t"), 15),
    "WeightedMAE": (("p", "t"), 15),
    # weights' sum without a copy per task (one task)
    # no zero label sum made per update without labels (one kept per device and task count)
    "WeightedAverage": (("p", None, "w"), 17),
    "CTR": (("p", "y_float", "w"), 25),
    # no clamp: the validated predictions' bounds lie inside [eta, 1 - eta] (26 with the clamp); one sub,
    # N - sum y, for the label-0 weight kept as its own state (NE near base rate 1; weighted, it is free)
    "NormalizedEntropy": (("p", "y_float"), 22),
    # a float32 copy of the scores, the labels' signs, the bounds
    "AUC": (("p", "y"), 12),
}


@pytest.mark.parametrize("name", list(BUDGETS))
def test_small_cpu_update_stays_within_its_call_budget(name):
    arguments, most = BUDGETS[name]
    batch = _batch()
    batch["y_float"] = batch["y"].float()
    args = [None if key is None else batch[key] for key in arguments]
    metric = getattr(tmx, name)()
    metric.update(*args)  # the first update may build what later ones reuse
    with _Calls() as counted:
        metric.update(*args)
    total = sum(counted.calls.values())
    assert total <= most, f"{name}: {total} calls per update (budget {most}): {dict(counted.calls)}"


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("n", [1, 16, 257])
def test_unweighted_error_sums_match_numpy(num_tasks, n):
    """The unweighted error kernel's shortened path: all five sums against float64 NumPy formulas."""
    g = torch.Generator().manual_seed(n)
    shape = (n,) if num_tasks == 1 else (num_tasks, n)
    preds, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 3
    metric = tmx.WeightedMSE(num_tasks=num_tasks)
    metric.update(preds, target)
    p, y = preds.double().numpy().reshape(num_tasks, n), target.double().numpy().reshape(num_tasks, n)
    expected = {
        "sum_squared_error": ((p - y) ** 2).sum(-1),
        "sum_absolute_error": np.abs(p - y).sum(-1),
        "weighted_num_samples": np.full(num_tasks, float(n)),
        "label_sum": y.sum(-1),
        "label_squared_sum": (y * y).sum(-1),
    }
    for state, value in expected.items():
        np.testing.assert_allclose(getattr(metric, state).numpy(), value, rtol=1e-13, err_msg=state)
        assert getattr(metric, state).dtype == torch.float64 and getattr(metric, state).shape == (num_tasks,)


def test_unweighted_error_path_is_exact_on_dyadic_values():
    """Values whose float64 sums are exact: the states equal the exact fractions."""
    preds = torch.tensor([0.5, -1.25, 3.0, 0.0])
    target = torch.tensor([1.0, 0.75, -2.0, 0.25])
    metric = tmx.WeightedMSE()
    metric.update(preds, target)
    p = [Fraction(v) for v in preds.tolist()]
    y = [Fraction(v) for v in target.tolist()]
    assert Fraction(metric.sum_squared_error.item()) == sum((a - b) ** 2 for a, b in zip(p, y))
    assert Fraction(metric.sum_absolute_error.item()) == sum(abs(a - b) for a, b in zip(p, y))
    assert Fraction(metric.label_squared_sum.item()) == sum(b * b for b in y)
    assert Fraction(metric.label_sum.item()) == sum(y)
    assert metric.compute().item() == float(sum((a - b) ** 2 for a, b in zip(p, y)) / 4)


def test_error_path_with_gradients_keeps_the_square_and_the_graph():
    """``forward`` with grad on: the error's absolute value is not taken in place before its square is summed."""
    preds = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 1.0])
    value = tmx.WeightedMSE()(preds, target)
    assert value.item() == pytest.approx((0.25 + 4.0 + 1.0) / 3, rel=1e-15)
    value.backward()
    np.testing.assert_allclose(preds.grad.numpy(), [2 * (0.5 - 1) / 3, 2 * (-2.0) / 3, 2 * 1.0 / 3], rtol=1e-6)
    mae = tmx.WeightedMAE()
    mae(torch.tensor([0.5, -1.0], requires_grad=True), torch.tensor([1.0, 1.0]))
    assert mae.sum_squared_error.item() == 0.25 + 4.0 and mae.sum_absolute_error.item() == 0.5 + 2.0


@pytest.mark.parametrize("num_tasks", [1, 3])
def test_weighted_totals_match_numpy(num_tasks):
    """``weight_total`` without its per-task copy (one weight row per task) and with it (one row shared)."""
    g = torch.Generator().manual_seed(5)
    preds = torch.rand(num_tasks, 9, generator=g)
    for weights in (torch.rand(9, generator=g), torch.rand(num_tasks, 9, generator=g)):
        metric = tmx.WeightedAverage(num_tasks=num_tasks)
        metric.update(preds if num_tasks > 1 else preds[0], weights=weights if num_tasks > 1 else weights.view(-1))
        w = np.broadcast_to(weights.double().numpy(), (num_tasks, 9))
        np.testing.assert_allclose(metric.weighted_num_samples_plain.numpy(), w.sum(-1), rtol=1e-14)
        p = preds.double().numpy()
        np.testing.assert_allclose(metric.weighted_pred_sum.numpy(), (w * p).sum(-1), rtol=1e-14)


_BAD = [
    # (update arguments, error, message) for WeightedMSE: the checks of the shortened validation path
    ((torch.tensor([1, 2]), torch.tensor([0.0, 1.0])), TypeError, "`preds` to be a floating point tensor"),
    (([0.5, 0.5], torch.tensor([0.0, 1.0])), TypeError, "`preds` to be a torch.Tensor, got list"),
    ((torch.tensor([0.5, 0.5]), [0.0, 1.0]), TypeError, "`target` to be a torch.Tensor, got list"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([1j, 0j])), TypeError, "`target` to be a real tensor"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), [1.0, 1.0]), TypeError, "`weights` to be a torch.Tensor"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([1j, 1j])), TypeError, "`weights` to be a real"),
    ((torch.tensor([0.5, float("nan")]), torch.tensor([0.0, 1.0])), ValueError, "`preds` to be finite, got values containing NaN"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([0.0, float("inf")])), ValueError, "`target` to hold finite real values"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, -1.0])), ValueError, "`weights` to be finite and non-negative"),
    ((torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0, 1.0])), ValueError, "`target` of the same shape as `preds` (2,)"),
    ((torch.tensor([[0.5, 0.5]] * 2), torch.tensor([[0.0, 1.0]] * 2)), ValueError, "`preds` of shape (N,) with num_tasks=1"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "error", "message"), _BAD, ids=lambda v: str(v)[:40])
def test_rejected_batch_names_the_argument_and_changes_nothing(args, error, message):
    metric = tmx.WeightedMSE()
    metric.update(torch.tensor([0.25, 0.75]), torch.tensor([0.0, 1.0]))
    before = {name: value.clone() for name, value in metric.metric_state.items()}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        metric.update(*args)
    for name, value in metric.metric_state.items():
        assert torch.equal(value, before[name]), name
    assert metric.update_count == 1


_NAN, _INF = float("nan"), float("inf")

# (preds, target) an unweighted validated CPU update refuses, for the error metrics and WeightedAverage, whose
# values are checked from two of the batch's sums (`_PointwiseMetric._finite_sums`) and, when one is not
# finite, by the inputs' own bounds: the messages of docs/policies.md, as with weights (which read the bounds)
_NON_FINITE = [
    ([0.5, _NAN], [0.0, 1.0], "`preds` to be finite, got values containing NaN"),
    ([0.5, _INF], [0.0, 1.0], "`preds` to be finite, got values containing inf (in ["),
    ([-_INF, 0.5], [0.0, 1.0], "`preds` to be finite, got values containing inf (in [-inf, "),
    ([0.5, 0.5], [_NAN, 1.0], "`target` to hold finite real values, got values containing NaN"),
    ([0.5, 0.5], [0.0, -_INF], "`target` to hold finite real values, got values containing inf"),
    ([0.5, _INF], [0.0, _INF], "`preds` to be finite, got values containing inf"),  # inf - inf: NaN error
    ([_NAN, 0.5], [_INF, 1.0], "`preds` to be finite, got values containing NaN"),  # preds named first
]


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("name", ["WeightedMSE", "WeightedMAE", "WeightedRMSE", "WeightedR2", "WeightedAverage"])
@pytest.mark.parametrize(("preds", "target", "message"), _NON_FINITE, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("call", ["update", "forward"])
def test_non_finite_inputs_found_from_the_sums_are_refused_as_by_their_bounds(
    preds, target, message, name, num_tasks, call
):
    metric = getattr(tmx, name)(num_tasks=num_tasks)
    shape = (num_tasks, 2) if num_tasks > 1 else (2,)
    good = torch.tensor([0.25, 0.75]).expand(shape)
    metric.update(good, torch.tensor([0.0, 1.0]).expand(shape))
    before = {key: value.clone() for key, value in metric.metric_state.items()}
    # the bad values in the last task only: the other tasks' sums are finite
    p, y = good.clone(), torch.tensor([0.0, 1.0]).expand(shape).clone()
    p.view(-1, 2)[-1], y.view(-1, 2)[-1] = torch.tensor(preds), torch.tensor(target)
    with pytest.raises(ValueError, match=re.escape(message)):
        metric.update(p, y) if call == "update" else metric(p, y)
    for key, value in metric.metric_state.items():
        assert torch.equal(value, before[key]), key
    assert metric.update_count == 1
    # the same batch with weights reads the bounds: the same message
    with pytest.raises(ValueError, match=re.escape(message)):
        metric.update(p, y, torch.ones(2))


@pytest.mark.parametrize("name", ["WeightedMSE", "WeightedAverage"])
def test_finite_inputs_whose_sums_overflow_are_accepted_as_before(name):
    """Finite float64 inputs whose sums overflow: the bounds check passes them, the states hold NumPy's sums."""
    preds = torch.tensor([1e300, -1e300, 3.0], dtype=torch.float64)
    target = torch.tensor([-1e300, 1e308, 1e308], dtype=torch.float64)
    metric = getattr(tmx, name)()
    with np.errstate(over="ignore", invalid="ignore"):
        metric.update(preds, target)
        p, y = preds.numpy(), target.numpy()
        if name == "WeightedMSE":
            expected = {"sum_squared_error": ((p - y) ** 2).sum(), "label_sum": y.sum(), "weighted_num_samples": 3.0}
        else:
            expected = {"weighted_pred_sum": p.sum(), "weighted_label_sum": y.sum()}
    for key, value in expected.items():
        np.testing.assert_array_equal(getattr(metric, key).numpy(), [value], err_msg=key)
    assert metric.update_count == 1


def test_logits_and_the_device_path_still_read_the_bounds():
    """sigmoid(inf) is finite: with from_logits an inf logit is refused by the bounds, not missed by the sums."""
    from torchmetrics_ext.utilities.device import force_device_path

    metric = tmx.WeightedMSE(from_logits=True)
    with pytest.raises(ValueError, match="`preds` to be finite, got values containing inf"):
        metric.update(torch.tensor([0.5, _INF]), torch.tensor([0.0, 1.0]))
    assert metric.update_count == 0
    with force_device_path(), pytest.raises(ValueError, match="`preds` to be finite, got values containing NaN"):
        tmx.WeightedMSE().update(torch.tensor([0.5, _NAN]), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("eta", [1e-12, 0.05, 0.0])
@pytest.mark.parametrize("inside", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_validated_cross_entropy_skips_only_a_clamp_that_changes_nothing(eta, inside, weighted):
    """NE/LogLoss validated (the clamp skipped where the read bounds lie in [eta, 1 - eta]) against unvalidated
    (always clamped): the same states bit for bit, and the clamped formula in NumPy."""
    g = torch.Generator().manual_seed(21)
    n = 300
    preds = torch.rand(2, n, generator=g, dtype=torch.float64) * (1 - 2 * eta) + eta  # inside [eta, 1 - eta]
    if not inside:  # sure and near-sure predictions, outside for every eta
        preds[1, :4] = torch.tensor([0.0, 1.0, 1e-13, 1 - 1e-13], dtype=torch.float64)
    target = torch.rand(2, n, generator=g, dtype=torch.float64)
    weights = torch.rand(n, generator=g, dtype=torch.float64) if weighted else None
    for cls in (tmx.NormalizedEntropy, tmx.LogLoss):
        checked, trusted = cls(num_tasks=2, eta=eta), cls(num_tasks=2, eta=eta, validate_args=False)
        checked.update(preds, target, weights)
        trusted.update(preds, target, weights)
        for key, value in checked.metric_state.items():
            # metric_state names the states as checkpoints do under either validate_args
            assert torch.equal(value, trusted.metric_state[key]), key
    p, y = np.clip(preds.numpy(), eta, 1 - eta), target.numpy()
    w = np.ones(n) if weights is None else weights.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(y > 0, y * np.log(p), 0.0) + np.where(y < 1, (1 - y) * np.log(1 - p), 0.0)
    ce_key = next(key for key in checked.metric_state if key.startswith("cross_entropy_sum"))
    np.testing.assert_allclose(checked.metric_state[ce_key].numpy(), -(w * terms).sum(-1), rtol=1e-12)


_FLOAT8 = [getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)]


@pytest.mark.parametrize("dtype", _FLOAT8, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["WeightedMSE", "WeightedAverage", "NormalizedEntropy"])
def test_float8_inputs_are_checked_like_any_float(name, weighted, dtype):
    """float8 has no min/max kernel: the bounds read raised NotImplementedError for every validated update,
    while an unweighted MSE (values checked from sums) took finite float8 batches, so a NaN batch there was
    refused with NotImplementedError instead of the ValueError of docs/policies.md. The bounds are read in
    float32 (exact): a NaN is refused by the same ValueError on every path, finite values are taken."""
    nan = float("nan")
    weights = torch.tensor([1.0, 3.0, 2.0]) if weighted else None
    metric = getattr(tmx, name)()
    target = torch.tensor([0.0, 1.0, 1.0]).to(dtype)
    with pytest.raises(ValueError, match=re.escape("Expected `preds` to be finite, got values containing NaN")):
        metric.update(torch.tensor([0.25, nan, 0.5]).to(dtype), target, weights)
    assert metric.update_count == 0
    assert all(value.eq(0).all() for value in metric.metric_state.values())
    preds = torch.tensor([0.25, 0.75, 0.5]).to(dtype)  # exact in both float8 formats
    metric.update(preds, target, weights)
    p, y = np.array([0.25, 0.75, 0.5]), np.array([0.0, 1.0, 1.0])
    w = np.ones(3) if weights is None else weights.numpy().astype(np.float64)
    if name == "WeightedMSE":
        expected = (w * (p - y) ** 2).sum() / w.sum()
    elif name == "WeightedAverage":
        expected = (w * p).sum() / w.sum()
    else:
        base = (w * y).sum() / w.sum()
        ce = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum()
        expected = ce / (-w.sum() * (base * np.log(base) + (1 - base) * np.log(1 - base)))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_probability_and_label_ranges_still_refused():
    with pytest.raises(ValueError, match=r"`preds` to be probabilities in \[0, 1\], got values in \[0.5, 1.5\]"):
        tmx.CTR().update(torch.tensor([0.5, 1.5]), torch.tensor([0.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"`target` to hold labels in \[0, 1\] \(soft labels allowed\), got values in \[0, 2\]"
    ):
        tmx.NormalizedEntropy().update(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"`target` to hold binary labels in \{0, 1\}, got values in \[0, 0.5\]"):
        tmx.AUC().update(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 0.5]))


def _reference_join(sizes: list[int]) -> bool:
    """The join rule of ``utilities/chunks.py``'s docstring, written out: all 64 small, the oldest at most the rest."""
    window = sizes[-64:]
    return len(window) == 64 and max(window) < 1 << 15 and window[0] <= sum(window[1:])


@pytest.mark.parametrize(
    "sizes",
    [
        [1] * 64,  # joined
        [64] + [1] * 63,  # the oldest outweighs the other 63 together: not joined
        [63] + [1] * 63,  # equal: joined
        [1] * 63,  # too few
        [5] + [1] * 62 + [1 << 15],  # the newest too large
        [100] * 10 + [1] * 30 + [40000] + [1] * 33,  # a large chunk inside the window
        [7, 3] + [2] * 63,  # the window starts at the second chunk
    ],
    ids=lambda s: f"{len(s)} chunks",
)
def test_join_rule_against_its_written_form(sizes):
    chunks = [torch.zeros(size) for size in sizes]
    lists = [list(chunks)]
    join_small_tails(lists)
    assert (len(lists[0]) < len(sizes)) == _reference_join(sizes)
    assert sum(c.numel() for c in lists[0]) == sum(sizes)


@pytest.mark.parametrize("weighting", ["none", "row", "per_task"])
@pytest.mark.parametrize("num_tasks", [1, 2])
def test_weighted_sums_match_numpy(weighting, num_tasks):
    """CTR's and Calibration's three sums (the own-batch path for no weights or one row) against NumPy."""
    g = torch.Generator().manual_seed(11)
    n = 37
    preds = torch.rand(num_tasks, n, generator=g)
    target = (torch.rand(num_tasks, n, generator=g) < preds).float()
    weights = {"none": None, "row": torch.rand(n, generator=g), "per_task": torch.rand(num_tasks, n, generator=g)}[
        weighting
    ]
    if weighting == "per_task" and num_tasks == 1:
        weights = weights.view(-1)  # type: ignore[union-attr]
    squeeze = (lambda x: x[0]) if num_tasks == 1 else (lambda x: x)
    for cls in (tmx.CTR, tmx.Calibration):
        metric = cls(num_tasks=num_tasks)
        metric.update(squeeze(preds), squeeze(target), weights)
        w = np.ones((num_tasks, n)) if weights is None else np.broadcast_to(weights.double().numpy(), (num_tasks, n))
        p, y = preds.double().numpy(), target.double().numpy()
        np.testing.assert_allclose(metric.weighted_pred_sum.numpy(), (w * p).sum(-1), rtol=1e-13)
        np.testing.assert_allclose(metric.weighted_label_sum.numpy(), (w * y).sum(-1), rtol=1e-13)
        np.testing.assert_allclose(metric.weighted_num_samples.numpy(), w.sum(-1), rtol=1e-13)


@pytest.mark.parametrize("weighted", [False, True])
def test_all_positive_labels_keep_a_class_exact_total(weighted):
    """All labels 1: the total equals the positive weight exactly, so CTR is exactly 1 (the class-exact total)."""
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(101, generator=g) * 7 if weighted else None
    metric = tmx.CTR()
    metric.update(torch.rand(101, generator=g), torch.ones(101), weights)
    assert metric.weighted_num_samples.item() == metric.weighted_label_sum.item()
    assert metric.compute().item() == 1.0


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("weighting", ["none", "row"])
def test_own_batch_paths_give_the_shared_paths_bits(from_logits, weighting):
    """A kernel's own BatchSums and the module's shared one (one code path since 2026-12-05): the same bits."""
    from torchmetrics_ext.functional import pointwise as F
    from torchmetrics_ext.functional._sums import sharing_sums

    g = torch.Generator().manual_seed(9)
    preds = torch.randn(1, 301, generator=g, dtype=torch.float64)
    target = torch.rand(1, 301, generator=g, dtype=torch.float64)
    weights = None if weighting == "none" else torch.rand(1, 301, generator=g, dtype=torch.float64)
    kernels = [
        lambda: F._weighted_sums_update(preds, target, weights, from_logits),
        lambda: F._weighted_sums_update(preds, target, weights, from_logits, unit_target=False),
        lambda: F._error_update(preds, target, weights, from_logits),
    ]
    for kernel in kernels:
        own = kernel()
        with sharing_sums(preds, target, weights):
            shared = kernel()
        assert all(torch.equal(a, b) for a, b in zip(own, shared, strict=True))


@pytest.mark.parametrize("eta", [1e-12, 0.0, 1e-20])
@pytest.mark.parametrize("weighting", ["none", "row"])
def test_own_batch_cross_entropy_gives_the_shared_paths_bits(eta, weighting):
    """NE/LogLoss's kernel on its own BatchSums and on a shared one: the same statistics, bit for bit."""
    from torchmetrics_ext.functional import pointwise as F
    from torchmetrics_ext.functional._sums import sharing_sums

    g = torch.Generator().manual_seed(4)
    preds = torch.rand(1, 257, generator=g, dtype=torch.float64)
    preds[0, :3] = torch.tensor([0.0, 1.0, 0.5])
    target = torch.rand(1, 257, generator=g, dtype=torch.float64)
    weights = None if weighting == "none" else torch.rand(1, 257, generator=g, dtype=torch.float64)
    for from_logits in (False, True):
        own = F._cross_entropy_update(preds, target, weights, eta, from_logits)
        with sharing_sums(preds, target, weights):
            shared = F._cross_entropy_update(preds, target, weights, eta, from_logits)
        assert all(torch.equal(a, b) for a, b in zip(own, shared, strict=True))


def test_normalized_entropy_matches_numpy():
    """NE of soft labels, weighted by one row, on the own-batch path: the formula of its docstring in NumPy."""
    g = torch.Generator().manual_seed(8)
    p, y, w = torch.rand(500, generator=g), torch.rand(500, generator=g), torch.rand(500, generator=g)
    metric = tmx.NormalizedEntropy()
    metric.update(p, y, w)
    pn = np.clip(p.double().numpy(), 1e-12, 1 - 1e-12)
    yn, wn = y.double().numpy(), w.double().numpy()
    ce = -(wn * (yn * np.log(pn) + (1 - yn) * np.log(1 - pn))).sum()
    base = (wn * yn).sum() / wn.sum()
    expected = ce / (-(wn.sum()) * (base * np.log(base) + (1 - base) * np.log(1 - base)))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_a_subclass_with_a_bounded_domain_keeps_the_bounds_read_of_its_values():
    """Checking values from sums stands in for finiteness checks only: a subclass of an error metric whose
    predictions must be probabilities still refuses 1.5 (the sums of such a batch are finite)."""
    import torchmetrics_ext as tmx

    class ProbabilityMSE(tmx.WeightedMSE):
        _preds_domain = "probability"

    metric = ProbabilityMSE()
    with pytest.raises(ValueError, match="preds"):
        metric.update(torch.tensor([0.5, 1.5]), torch.tensor([0.0, 1.0]))
    assert metric.sum_squared_error.item() == 0.0


def test_a_subclass_with_its_own_sums_keeps_the_value_checks_and_its_kernel_signature():
    """A user's subclass of an error metric with another layout of sums (here: its squared errors doubled
    through an extra term) still refuses NaN from the inputs' bounds, and a subclass of NE whose
    ``_batch_stats`` takes the three arguments of the template is called with three."""

    class Doubled(tmx.WeightedMSE):
        def _batch_stats(self, preds, target, weights):
            squared, absolute, total, label, label_sq = super()._batch_stats(preds, target, weights)
            # a NaN label gives a finite first and fourth sum here: only the inputs' bounds can tell
            return torch.nan_to_num(squared), absolute, total, torch.nan_to_num(label), label_sq

    metric = Doubled()
    with pytest.raises(ValueError, match="target"):
        metric.update(torch.tensor([0.5, 0.25]), torch.tensor([0.0, float("nan")]))
    assert metric.sum_squared_error.item() == 0.0 and metric.update_count == 0

    class ThreeArguments(tmx.NormalizedEntropy):
        def _batch_stats(self, preds, target, weights):
            return super()._batch_stats(preds, target, weights)

    preds, target = np.array([0.2, 0.7, 0.9, 0.4]), np.array([0.0, 1.0, 1.0, 0.0])
    ne = ThreeArguments()
    ne.update(torch.tensor(preds), torch.tensor(target))
    rate = target.mean()
    expected = -np.mean(target * np.log(preds) + (1 - target) * np.log(1 - preds)) / -(
        rate * np.log(rate) + (1 - rate) * np.log(1 - rate)
    )
    assert ne.compute().item() == pytest.approx(expected)


@pytest.mark.parametrize("name", ["WeightedMSE", "WeightedMAE", "WeightedAverage"])
@pytest.mark.parametrize("num_tasks", [1, 3])
def test_values_checked_from_the_sums_add_no_tensor(name, num_tasks):
    """One task: the two sums that stand in for the finiteness check are read each as it is, not added first
    (an operator call of ~1 µs against two reads of ~0.15 µs); several tasks keep their one total."""
    g = torch.Generator().manual_seed(3)
    shape = (num_tasks, 16) if num_tasks > 1 else (16,)
    p, t = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    metric = getattr(tmx, name)(num_tasks=num_tasks)
    metric.update(p, t)
    with _Calls() as counted:
        metric.update(p, t)
    assert ("add" in counted.calls) == (num_tasks > 1), dict(counted.calls)
    assert counted.calls["item"] == (2 if num_tasks == 1 else 1)
    if name == "WeightedAverage":
        expected = 2 * p.double().sum(-1).numpy()
        np.testing.assert_allclose(metric.weighted_pred_sum.numpy(), np.atleast_1d(expected), rtol=1e-15)


def test_weighted_average_without_labels_makes_no_zero_label_sum_per_update():
    """A batch without labels adds a zero label sum kept per device and task count: no ``zeros`` per update,
    and the kept zero never becomes a state (``forward``'s batch states are added out of place)."""
    from torchmetrics_ext.functional.pointwise import _zero_sums

    g = torch.Generator().manual_seed(5)
    p, w = torch.rand(2, 16, generator=g), torch.rand(2, 16, generator=g)
    metric = tmx.WeightedAverage(num_tasks=2)
    metric.update(p, weights=w)
    with _Calls() as counted:
        metric.update(p, weights=w)
    assert "zeros" not in counted.calls, dict(counted.calls)
    value = metric(p, weights=w)  # forward: the batch's statistics, the kept zero among them, as batch states
    metric.update(p, None, w)
    kept = _zero_sums(p)
    assert metric.weighted_label_sum is not kept and torch.equal(kept, torch.zeros(2, dtype=torch.float64))
    pn, wn = p.double().numpy(), w.double().numpy()
    np.testing.assert_array_equal(metric.weighted_label_sum.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(value.numpy(), (pn * wn).sum(-1) / wn.sum(-1), rtol=1e-14)
    np.testing.assert_allclose(metric.compute().numpy(), (pn * wn).sum(-1) / wn.sum(-1), rtol=1e-14)


@pytest.mark.parametrize("name", ["NormalizedEntropy", "LogLoss"])
@pytest.mark.parametrize("eta", [1e-12, 0.0, 1e-20, 0.2])
@pytest.mark.parametrize("weighting", ["none", "row"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_labels_take_one_log_per_sample_with_the_float_labels_bits(name, eta, weighting, dtype):
    """Validated labels of an integer or bool dtype are 0 or 1: the cross-entropy takes one log per sample
    (``log(lerp(1 - p, p, y))``, not a lerp of two logs), with the statistics of the same labels as floats,
    bit for bit, and NumPy's float64 formula."""
    g = torch.Generator().manual_seed(6)
    p = torch.rand(257, generator=g, dtype=torch.float64)
    p[:4] = torch.tensor([0.0, 1.0, 0.5, 1e-30])  # the clamp, the floor (eta 1e-20) and eta = 0's sure predictions
    y = torch.rand(257, generator=g) < 0.4
    y[:4] = torch.tensor([False, True, True, True])
    w = None if weighting == "none" else torch.rand(257, generator=g, dtype=torch.float64)
    labels = y.to(dtype)
    ours, floats = getattr(tmx, name)(eta=eta), getattr(tmx, name)(eta=eta)
    with _Calls() as counted:
        ours.update(p, labels, w)
    floats.update(p, y.double(), w)
    assert counted.calls["log"] + counted.calls["log_"] == 1, dict(counted.calls)
    for key in ours.metric_state:
        assert torch.equal(getattr(ours, key), getattr(floats, key)), key
    pn, yn = p.numpy(), y.double().numpy()
    wn = np.ones_like(pn) if w is None else w.numpy()
    clamped = np.clip(pn, eta, 1 - eta)
    chosen = np.where(yn == 1, clamped, np.maximum(1 - clamped, eta) if eta else 1 - clamped)
    with np.errstate(divide="ignore"):
        ce = -(wn * np.log(chosen)).sum()
    np.testing.assert_allclose(getattr(ours, ours._state_keys[0]).numpy(), [ce], rtol=1e-13)  # the CE sum


@pytest.mark.parametrize("name", ["NormalizedEntropy", "LogLoss"])
def test_integer_labels_with_predictions_that_require_grad_keep_the_graph(name):
    """Predictions that require gradients keep the out-of-place form (the one-log form writes in place):
    ``forward``'s value carries the graph, with the gradient of the float labels' value."""
    g = torch.Generator().manual_seed(7)
    p = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    y = (torch.rand(64, generator=g) < 0.3).long()
    values = []
    for labels in (y, y.double()):
        leaf = p.clone().requires_grad_()
        value = getattr(tmx, name)()(leaf, labels)
        value.backward()
        values.append((value.detach(), leaf.grad))
    assert torch.equal(values[0][0], values[1][0]) and torch.equal(values[0][1], values[1][1])


def test_zero_label_sums_are_kept_per_task_count_when_task_counts_alternate():
    """The kept zero label sum was one per device, keyed by the last call's task count: metrics alternating task
    counts (two ``WeightedAverage`` of other ``num_tasks``, ``Segmented(WeightedAverage())``, whose sums are per
    sample, beside them) made a ``torch.zeros`` on every update. One per (device, task count) now, a few kept;
    the values are numpy's weighted means."""
    from torchmetrics_ext.functional import pointwise as kernels

    g = torch.Generator().manual_seed(11)
    two, three = tmx.WeightedAverage(num_tasks=2), tmx.WeightedAverage(num_tasks=3)
    segmented = tmx.Segmented(tmx.WeightedAverage(), num_segments=3)
    batches = [
        (torch.rand(2, 8, generator=g), torch.rand(2, 8, generator=g) + 0.1),
        (torch.rand(3, 5, generator=g), torch.rand(3, 5, generator=g) + 0.1),
        (torch.rand(12, generator=g), torch.rand(12, generator=g) + 0.1, torch.arange(12) % 3),
    ]

    def step() -> None:
        two.update(batches[0][0], weights=batches[0][1])
        three.update(batches[1][0], weights=batches[1][1])
        segmented.update(batches[2][0], weights=batches[2][1], segments=batches[2][2])

    with torch.inference_mode():  # the kept zeros are made outside inference mode all the same
        step()
    with _Calls() as counted:
        for _ in range(3):
            step()
    assert "zeros" not in counted.calls, dict(counted.calls)
    probes = [batches[0][0], batches[1][0], batches[2][0]]  # 2, 3 and 12 (one per sample: Segmented's) tasks
    kept = [kernels._zero_sums(p) for p in probes]
    step()
    assert all(kernels._zero_sums(p) is zero for p, zero in zip(probes, kept, strict=True))
    assert not any(zero.is_inference() for zero in kept)
    for metric, (p, w) in ((two, batches[0]), (three, batches[1])):
        pn, wn = p.double().numpy(), w.double().numpy()
        np.testing.assert_allclose(metric.compute().numpy(), (pn * wn).sum(-1) / wn.sum(-1), rtol=1e-14)
        np.testing.assert_array_equal(metric.weighted_label_sum.numpy(), np.zeros(len(pn)))
    p, w, s = (x.double().numpy() for x in batches[2])
    expected = [(p * w)[s == k].sum() / w[s == k].sum() for k in range(3)]
    np.testing.assert_allclose(segmented.compute().numpy(), expected, rtol=1e-14)


def test_the_kept_zero_label_sums_are_few():
    """Any number of task counts keeps a few zeros (the newest), each a float64 zero of its count (numpy's)."""
    from torchmetrics_ext.functional import pointwise as kernels

    for tasks in range(1, 40):
        zero = kernels._zero_sums(torch.rand(tasks, 3))
        np.testing.assert_array_equal(zero.numpy(), np.zeros(tasks))
        assert zero.dtype == torch.float64
        assert len(kernels._ZERO_SUMS) <= 8  # a few
    assert kernels._zero_sums(torch.rand(39, 3)) is zero  # the newest is kept


# ----------------------------------------------------------------------------- small batches' bounds as lists


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17])
@pytest.mark.parametrize(
    "dtype",
    [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool],
)
def test_small_cpu_bounds_read_as_a_list_match_numpy(n, dtype):
    """Up to 16 values a 1-D CPU tensor's bounds come from ``tolist()``: NumPy's min and max of the same values."""
    from torchmetrics_ext.utilities.checks import checked_bounds

    g = torch.Generator().manual_seed(n)
    values = (torch.rand(n, generator=g) * 200 - 100).to(dtype) if dtype != torch.bool else torch.rand(n) < 0.5
    reference = values.float().numpy() if dtype == torch.bfloat16 else values.numpy()
    assert checked_bounds([values], labels=[False], device_path=False) == [(reference.min(), reference.max())]
    # labels of an integer or bool dtype too (their fractional parts are never read)
    if not dtype.is_floating_point:
        assert checked_bounds([values], labels=[True], device_path=False) == [(reference.min(), reference.max())]


@pytest.mark.parametrize("position", range(16))
def test_nan_anywhere_in_a_small_batch_is_refused(position):
    """``min``/``max`` of a list skip NaN depending on where it is: the list's sum finds it at every position."""
    preds = torch.linspace(0.05, 0.95, 16)
    preds[position] = float("nan")
    target = (torch.arange(16) % 2).float()
    for metric, args in (
        (tmx.NormalizedEntropy(), (preds, target)),
        (tmx.CTR(), (preds, target)),
        (tmx.WeightedAverage(), (preds, None, torch.ones(16))),  # weighted: read by the bounds, not the sums
    ):
        with pytest.raises(ValueError, match=re.escape("`preds` to be finite, got values containing NaN")):
            metric.update(*args)
        assert metric.update_count == 0
    weights = torch.ones(16)
    weights[position] = float("nan")
    metric = tmx.CTR()
    with pytest.raises(
        ValueError, match=re.escape("`weights` to be finite and non-negative, got values containing NaN")
    ):
        metric.update(torch.full((16,), 0.5), target, weights)
    assert all(torch.equal(v, torch.zeros(1, dtype=torch.float64)) for v in metric.metric_state.values())


def test_both_infinities_in_a_small_batch_give_the_reductions_message():
    """``inf`` and ``-inf`` sum to NaN: such a list goes to ``aminmax``, whose bounds name both infinities."""
    metric = tmx.WeightedAverage()
    preds = torch.tensor([0.5, float("inf"), float("-inf"), 0.25])
    with pytest.raises(ValueError, match=re.escape("`preds` to be finite, got values containing inf (in [-inf, inf])")):
        metric.update(preds, None, torch.ones(4))
    with pytest.raises(ValueError, match=re.escape("`preds` to be finite, got values containing inf (in [0.25, inf])")):
        metric.update(torch.tensor([0.5, float("inf"), 0.25]), None, torch.ones(3))


# ----------------------------------------------------------------------------- error metrics' uncast predictions

# (dtype, its epsilon, a small value it holds): 1 + eps - tiny is exact in float64, rounded in the dtype
_LOW_PRECISION = [
    (torch.float32, 2.0**-23, 2.0**-30),
    (torch.float16, 2.0**-10, 2.0**-20),
    (torch.bfloat16, 2.0**-7, 2.0**-20),
]


@pytest.mark.parametrize(("dtype", "eps", "tiny"), _LOW_PRECISION, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("name", ["WeightedMSE", "WeightedMAE", "WeightedR2"])
def test_error_of_low_precision_predictions_is_taken_in_float64(dtype, eps, tiny, weighted, validate, name):
    """Predictions reach the error kernel uncast (its ``preds - target`` promotes them): the error is float64's.

    Against exact fractions: a subtraction in the predictions' own dtype would round ``1 + eps - tiny``.
    """
    preds = torch.tensor([1 + eps, 0.5, -2.0], dtype=dtype)
    target = torch.tensor([tiny, -0.25, 1.0], dtype=dtype)
    weights = torch.tensor([2.0, 1.0, 0.5]) if weighted else None
    metric = getattr(tmx, name)(validate_args=validate)
    metric.update(preds, target, weights)
    p = [Fraction(v) for v in preds.tolist()]
    y = [Fraction(v) for v in target.tolist()]
    w = [Fraction(v) for v in weights.tolist()] if weighted else [Fraction(1)] * 3
    assert p[0] - y[0] == 1 + Fraction(eps) - Fraction(tiny)  # the values the test means
    assert Fraction(metric.sum_absolute_error.item()) == sum(c * abs(a - b) for a, b, c in zip(p, y, w))
    squared = sum(c * (a - b) ** 2 for a, b, c in zip(p, y, w))
    assert metric.sum_squared_error.item() == pytest.approx(float(squared), rel=2e-16)
    assert Fraction(metric.label_sum.item()) == sum(c * b for b, c in zip(y, w))
    assert metric.sum_squared_error.dtype == torch.float64 and metric.sum_squared_error.shape == (1,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_uncast_predictions_give_the_float64_predictions_bits(dtype):
    """The same numbers as float64 predictions (which the kernel always took): every state bit for bit, 3 tasks."""
    g = torch.Generator().manual_seed(7)
    preds = torch.randn(3, 40, generator=g).to(dtype)
    target = torch.randn(3, 40, generator=g)
    for weights in (None, torch.rand(40, generator=g), torch.rand(3, 40, generator=g)):
        uncast, cast = tmx.WeightedMSE(num_tasks=3), tmx.WeightedMSE(num_tasks=3)
        uncast.update(preds, target, weights)
        cast.update(preds.double(), target, weights)
        for key, value in cast.metric_state.items():
            assert torch.equal(uncast.metric_state[key], value), key


def test_float32_logits_are_still_cast_first():
    """Logits take the float64 sigmoid error (cast first): a confident logit keeps its tiny error, not float32's 0."""
    metric = tmx.WeightedMAE(from_logits=True)
    metric.update(torch.tensor([40.0, -3.0]), torch.tensor([1.0, 0.0]))
    expected = math.exp(-40) / (1 + math.exp(-40)) + 1 / (1 + math.exp(3))
    assert metric.sum_absolute_error_logits.item() == pytest.approx(expected, rel=1e-15)
    assert torch.sigmoid(torch.tensor(-40.0)).item() > 0 and 1 - torch.sigmoid(torch.tensor(40.0)).item() == 0


# ----------------------------------------------------------------------------- bool labels (perf-small-two)

# (metric, labels, samples) -> most calls per validated weighted update. Bool labels are not read at all (every
# bool is 0 or 1): 23 at 16 samples (was 25: their `tolist`), 27 at 64 (was 31: their `aminmax` and two reads);
# float labels at 64 stay at 31 (an `aminmax` and two reads per tensor)
_WIDER_BUDGETS = {
    ("CTR", "y_float", 64): 31,
    ("CTR", "y_bool", 64): 27,
    ("Calibration", "y_bool", 64): 27,
    ("CTR", "y_bool", 16): 23,
    ("Calibration", "y_bool", 16): 23,
}


@pytest.mark.parametrize(("name", "labels", "n"), list(_WIDER_BUDGETS), ids=str)
def test_wider_and_bool_label_updates_stay_within_their_call_budget(name, labels, n):
    batch = _batch(n)
    batch["y_float"], batch["y_bool"] = batch["y"].float(), batch["y"].bool()
    metric = getattr(tmx, name)()
    metric.update(batch["p"], batch[labels], batch["w"])
    with _Calls() as counted:
        metric.update(batch["p"], batch[labels], batch["w"])
    total, most = sum(counted.calls.values()), _WIDER_BUDGETS[name, labels, n]
    assert total <= most, f"{name}: {total} calls per update (budget {most}): {dict(counted.calls)}"


def _numpy_weighted_sums(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    p, y, w = (np.asarray(a, dtype=np.float64) for a in (p, y, w))
    return float((w * p).sum()), float((w * y).sum()), float(w.sum())


@pytest.mark.parametrize("n", [16, 17, 64, 256, 257, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("labels", ["float", "bool", "int64"])
@pytest.mark.parametrize("shape", ["flat", "tasks"])
def test_label_reads_keep_the_numpy_sums(n, dtype, labels, shape):
    """CTR/Calibration sums against NumPy float64: bool labels (unread) and others, lists and reductions."""
    g = torch.Generator().manual_seed(n)
    tasks = 1 if shape == "flat" else 2
    p = torch.rand(tasks, n, generator=g).to(dtype)
    y = torch.rand(tasks, n, generator=g) < 0.3
    y = {"float": y.to(dtype), "bool": y, "int64": y.long()}[labels]
    w = torch.rand(n, generator=g) + 0.25
    if shape == "flat":
        p, y = p[0], y[0]
    for name in ("CTR", "Calibration"):
        metric = getattr(tmx, name)(num_tasks=tasks)
        metric.update(p, y, w)
        pf = p.float().numpy().reshape(tasks, n)  # (bfloat16 has no NumPy dtype; float32 holds it exactly)
        yf = y.float().numpy().reshape(tasks, n)
        for task in range(tasks):
            pred_sum, label_sum, total = _numpy_weighted_sums(pf[task], yf[task], w.numpy())
            assert metric.weighted_pred_sum[task].item() == pytest.approx(pred_sum, rel=1e-12)
            assert metric.weighted_label_sum[task].item() == pytest.approx(label_sum, rel=1e-12)
            assert metric.weighted_num_samples[task].item() == pytest.approx(total, rel=1e-12)


_OUT_OF_RANGE = [
    # (preds value, labels value, message): one bad value among 64 otherwise valid ones (read by reductions,
    # not lists), anywhere: the message names the input
    (float("nan"), None, "`preds` to be finite, got values containing NaN"),
    (float("inf"), None, "`preds` to be finite, got values containing inf"),
    (1.5, None, "`preds` to be probabilities in [0, 1], got values in [0"),
    (-0.5, None, "`preds` to be probabilities in [0, 1], got values in [-0.5"),
    (None, float("nan"), "`target` to hold labels in [0, 1] (soft labels allowed), got values containing NaN"),
    (None, 2.0, "`target` to hold labels in [0, 1] (soft labels allowed), got values in [0, 2]"),
    (None, -1.0, "`target` to hold labels in [0, 1] (soft labels allowed), got values in [-1, 1]"),
    (1.5, 2.0, "`preds` to be probabilities in [0, 1]"),  # the predictions are named first, as before
]


@pytest.mark.parametrize("position", [0, 31, 63])
@pytest.mark.parametrize(("bad_pred", "bad_label", "message"), _OUT_OF_RANGE, ids=str)
@pytest.mark.parametrize("name", ["CTR", "Calibration"])
def test_a_bad_value_among_64_names_the_input_and_changes_nothing(position, bad_pred, bad_label, message, name):
    preds = torch.linspace(0.0, 1.0, 64)
    target = (torch.arange(64) % 2).float()
    if bad_pred is not None:
        preds[position] = bad_pred
    if bad_label is not None:
        target[position] = bad_label
    metric = getattr(tmx, name)()
    metric.update(torch.full((64,), 0.5), (torch.arange(64) % 2).float())
    before = {key: value.clone() for key, value in metric.metric_state.items()}
    with pytest.raises(ValueError, match=re.escape(message)):
        metric.update(preds, target, torch.ones(64))
    assert all(torch.equal(value, before[key]) for key, value in metric.metric_state.items())
    assert metric.update_count == 1


def test_bool_labels_skip_only_the_labels_read():
    """Bool labels are in [0, 1] whatever they hold; predictions and weights beside them are still read."""
    labels = torch.tensor([True, False] * 20)
    for name, args, message in (
        ("CTR", (torch.full((40,), 1.5), labels), "`preds` to be probabilities in [0, 1], got values in [1.5, 1.5]"),
        ("NormalizedEntropy", (torch.full((40,), float("nan")), labels), "`preds` to be finite, got values containing NaN"),
        ("CTR", (torch.full((40,), 0.5), labels, -torch.ones(40)), "`weights` to be finite and non-negative, got values in [-1, -1]"),
    ):  # fmt: skip
        metric = getattr(tmx, name)()
        with pytest.raises(ValueError, match=re.escape(message)):
            metric.update(*args)
        assert metric.update_count == 0
    # every label domain takes bool labels: binary (AUC), unit (NE), with NaN allowed (missing labels)
    auc, ne = tmx.AUC(), tmx.NormalizedEntropy()
    scores = torch.linspace(0.1, 0.9, 40)
    auc.update(scores, labels)
    ne.update(scores, labels)
    from sklearn.metrics import log_loss, roc_auc_score

    assert auc.compute().item() == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    p = float(labels.float().mean())
    baseline = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    expected = log_loss(labels.numpy(), scores.double().numpy()) / baseline
    assert ne.compute().item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("validate", [True, False])
def test_one_task_uncast_predictions_keep_their_shape_and_the_states_theirs(dtype, weighted, validate):
    """One task's ``(N,)`` predictions reach the error kernel unviewed: the states stay ``(1,)``, the sums NumPy's."""
    g = torch.Generator().manual_seed(3)
    preds = torch.randn(50, generator=g).to(dtype)
    target = torch.randn(50, generator=g)
    weights = torch.rand(50, generator=g) if weighted else None
    metric = tmx.WeightedMSE(validate_args=validate)
    for _ in range(2):
        metric.update(preds, target, weights)
    p = preds.double().numpy()
    y = target.double().numpy()
    w = np.ones(50) if weights is None else weights.double().numpy()
    expected = {
        "sum_squared_error": 2 * (w * (p - y) ** 2).sum(),
        "sum_absolute_error": 2 * (w * np.abs(p - y)).sum(),
        "weighted_num_samples": 2 * w.sum(),
        "label_sum": 2 * (w * y).sum(),
        "label_squared_sum": 2 * (w * y * y).sum(),
    }
    for key, value in expected.items():
        state = getattr(metric, key)
        assert state.shape == (1,) and state.dtype == torch.float64, key
        assert state.item() == pytest.approx(value, rel=1e-12), key
    # forward's batch value: the same batch alone
    batch_value = tmx.WeightedMSE(validate_args=validate)(preds, target, weights)
    assert batch_value.shape == () and batch_value.item() == pytest.approx(
        expected["sum_squared_error"] / expected["weighted_num_samples"], rel=1e-12
    )


_FIRST_WEIGHTED_UPDATES = """
import json, sys
import torch
import torchmetrics_ext as tmx
from torchmetrics_ext.aggregation import Mean

before = set(sys.modules)
tasks = [tmx.RecTaskInfo(t, f"{t}_label", f"{t}_pred", weight_name="w") for t in ("click", "like")]
module = tmx.RecMetricModule(tasks, ["auc"], throughput=False)
module.update({
    "click_pred": torch.tensor([0.9, 0.2, 0.6, 0.3]), "click_label": torch.tensor([1, 0, 1, 0]),
    "like_pred": torch.tensor([0.2, 0.7, 0.4, 0.3]), "like_label": torch.tensor([0, 1, 0, 1]),
    "w": torch.tensor([1.0, 2.0, 0.5, 3.0]),
})
mean = Mean()
mean.update(torch.tensor([1.0, 4.0]), torch.tensor([3.0, 1.0]))
values = {key: value.item() for key, value in module.compute().items()}
values["mean"] = mean.compute().item()
print(json.dumps({"imported": sorted(set(sys.modules) - before), "values": values}))
"""


def test_first_weighted_update_imports_no_sympy():
    """A weighted multi-task AUC or aggregation ``Mean`` update imported SymPy (``torch.broadcast_shapes``), ~0.5 s."""
    from sklearn.metrics import roc_auc_score

    root = str(Path(__file__).resolve().parents[1])  # the checkout under test, first on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-c", _FIRST_WEIGHTED_UPDATES], capture_output=True, text=True, check=True, env=env, cwd=root
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not [name for name in out["imported"] if name.split(".")[0] == "sympy"]
    w = [1.0, 2.0, 0.5, 3.0]
    assert out["values"]["auc/click"] == pytest.approx(
        roc_auc_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.3], sample_weight=w)
    )
    assert out["values"]["auc/like"] == pytest.approx(
        roc_auc_score([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.3], sample_weight=w)
    )
    assert out["values"]["mean"] == pytest.approx((1.0 * 3.0 + 4.0 * 1.0) / 4.0)


@pytest.mark.parametrize(
    "shapes",
    [((3,), (2, 3)), ((2, 1), (1, 4)), ((2,), (3,)), ((), (5,)), ((0,), (1,)), ((0,), (2,)), ((4, 1, 3), (5, 1))],
)
def test_broadcast_shape_matches_numpy(shapes):
    from torchmetrics_ext.utilities.checks import broadcast_shape

    try:
        expected = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        expected = None
    got = broadcast_shape(*shapes)
    assert (None if got is None else tuple(got)) == expected


def test_weights_that_do_not_broadcast_are_still_refused():
    mean = tmx.aggregation.Mean()
    with pytest.raises(ValueError, match=r"`weight` broadcastable to `value` of shape \(3,\), got shape \(2,\)"):
        mean.update(torch.ones(3), torch.ones(2))
    mean.update(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0]))  # the refused batch left nothing behind
    assert mean.compute().item() == pytest.approx((1.0 + 9.0) / 4.0)
    auc = tmx.AUC(num_tasks=2)
    with pytest.raises((ValueError, RuntimeError)):
        auc.update(torch.rand(2, 4), torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]]), weights=torch.ones(3))
