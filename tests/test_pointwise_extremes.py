"""Pointwise and regression metrics at the edges of the float ranges, against independent references.

Rows of weight 0 are the same as absent rows (DESIGN: a zero-weight batch changes nothing), even where
their squared error or squared label overflows float64: ``inf · 0`` must not reach a sum as ``nan``.
References are scikit-learn and NumPy float64 formulas over the rows that carry weight.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import torchmetrics_ext as tmx
from torchmetrics_ext import functional as tmf


def _nmse_one(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """TorchRec's NMSE (baseline 1), the float64 formula."""
    return float(np.sum(w * (p - y) ** 2) / np.sum(w * (y - 1) ** 2))


# name: (class, functional, reference over the weighted rows)
REGRESSION = {
    "mse": (tmx.WeightedMSE, tmf.weighted_mse, lambda p, y, w: mean_squared_error(y, p, sample_weight=w)),
    "rmse": (tmx.WeightedRMSE, tmf.weighted_rmse, lambda p, y, w: np.sqrt(mean_squared_error(y, p, sample_weight=w))),
    "mae": (tmx.WeightedMAE, tmf.weighted_mae, lambda p, y, w: mean_absolute_error(y, p, sample_weight=w)),
    "r2": (tmx.WeightedR2, tmf.weighted_r2, lambda p, y, w: r2_score(y, p, sample_weight=w)),
    "nmse": (tmx.WeightedNMSE, tmf.weighted_nmse, _nmse_one),
    "nrmse": (tmx.WeightedNRMSE, tmf.weighted_nrmse, lambda p, y, w: np.sqrt(_nmse_one(p, y, w))),
    "average": (tmx.WeightedAverage, tmf.weighted_average, lambda p, y, w: np.average(p, weights=w)),
}

KEPT_P = np.array([1.0, 2.0, 3.5, -0.5])
KEPT_Y = np.array([0.0, 4.0, 3.0, 0.25])
KEPT_W = np.array([1.0, 0.5, 2.0, 1.5])
# (dtype, size of the zero-weight rows' values): squares overflow float64 above ~1.3e154; a float16 6e4
# or a float32 1e38 is squared in float64 (no overflow), kept here as cases a user would try
HUGE = [(torch.float64, 1e200), (torch.float64, -1e300), (torch.float32, 1e38), (torch.float16, 6e4)]


def _batch(dtype: torch.dtype, huge: float, tasks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept rows with two zero-weight rows holding ``huge`` values interleaved; ``tasks`` copies of them."""
    p = np.insert(KEPT_P, [1, 3], [huge, -huge])
    y = np.insert(KEPT_Y, [1, 3], [-huge, huge])
    w = np.insert(KEPT_W, [1, 3], [0.0, 0.0])
    p_t, y_t, w_t = (torch.tensor(x, dtype=dtype) for x in (p, y, w))
    if tasks > 1:
        p_t, y_t = p_t.expand(tasks, -1).contiguous(), y_t.expand(tasks, -1).contiguous()
    return p_t, y_t, w_t


def _kept(dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept rows as ``dtype`` rounds them, in float64."""
    return tuple(torch.tensor(x, dtype=dtype).double().numpy() for x in (KEPT_P, KEPT_Y, KEPT_W))


@pytest.mark.parametrize("validate_args", [True, False])
@pytest.mark.parametrize(("dtype", "huge"), HUGE)
@pytest.mark.parametrize("name", list(REGRESSION))
def test_zero_weight_rows_with_overflowing_squares_change_nothing(name, dtype, huge, validate_args):
    cls, fn, reference = REGRESSION[name]
    expected = reference(*_kept(dtype))
    for tasks, weights_per_task in ((1, False), (3, False), (3, True)):
        p, y, w = _batch(dtype, huge, tasks)
        if weights_per_task:
            w = w.expand(tasks, -1).contiguous()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no undefined-value warning either
            metric = cls(num_tasks=tasks, validate_args=validate_args)
            metric.update(p, y, w)
            got = metric.compute()
            functional = fn(p, y, w, validate_args=validate_args)
        expected_t = torch.full((tasks,), expected, dtype=torch.float64)
        expected_t = expected_t[0] if tasks == 1 else expected_t
        torch.testing.assert_close(got, expected_t, rtol=1e-12, atol=0, msg=f"{name} class, {tasks} tasks")
        torch.testing.assert_close(functional, expected_t, rtol=1e-12, atol=0, msg=f"{name} function, {tasks} tasks")


@pytest.mark.parametrize("name", ["mse", "r2", "nmse"])
def test_zero_weight_huge_rows_in_forward_module_and_window(name):
    """``forward``, a :class:`~torchmetrics_ext.RecMetricModule` (shared batch sums) and a window agree too."""
    cls, _, reference = REGRESSION[name]
    expected = torch.tensor(reference(*_kept(torch.float64)), dtype=torch.float64)
    p, y, w = _batch(torch.float64, 1e200, 1)
    metric = cls()
    torch.testing.assert_close(metric(p, y, w), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(metric.compute(), expected, rtol=1e-12, atol=0)
    window = tmx.Windowed(cls(), window_size=100)
    window.update(p, y, w)
    for value in window.compute().values():
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    module = tmx.RecMetricModule(["t"], {"a": cls, "b": tmx.WeightedMAE}, throughput=False)
    module.update({"prediction": p, "label": y, "weight": w})
    values = module.compute()
    torch.testing.assert_close(values["a/t"], expected, rtol=1e-12, atol=0)
    p_kept, y_kept, w_kept = _kept(torch.float64)
    mae = torch.tensor(mean_absolute_error(y_kept, p_kept, sample_weight=w_kept), dtype=torch.float64)
    torch.testing.assert_close(values["b/t"], mae, rtol=1e-12, atol=0)


def test_an_overflow_of_a_weighted_row_is_still_nan():
    """Only weight 0 is absent: a weighted row whose squared error overflows float64 leaves no finite MSE."""
    p, y = torch.tensor([1e200, 1.0], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)
    w = torch.tensor([1e-300, 1.0], dtype=torch.float64)  # w·e·e = 1e100: no overflow once weighted first
    expected = (1e-300 * 1e200 * 1e200 + 1.0) / (1e-300 + 1.0)
    torch.testing.assert_close(
        tmf.weighted_mse(p, y, w), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert torch.isnan(tmf.weighted_mse(p, y, torch.ones(2, dtype=torch.float64)))


# (input dtype, size of the values): their squares overflow the input dtype (float16 above ~256, bfloat16 and
# float32 above ~1.8e19), and a total weight of 2**20 rows of weight 1200 or 0.5 (~1.08e9) is no float32 integer
SMALL_FLOATS = [(torch.float16, 6e4), (torch.bfloat16, 1e30), (torch.float32, 1e30)]


@pytest.mark.parametrize(("dtype", "size"), SMALL_FLOATS)
def test_half_and_single_precision_inputs_are_summed_in_float64(dtype, size):
    """DESIGN "accumulate sums in float64": the regression family's five sums (``BatchSums``' weighted squares
    among them) of float16/bfloat16/float32 inputs are formed in float64, never in the input dtype first (which
    would overflow the squares to inf and round a total of ~1e9 to float32's 64 ulp). States of the class (one and
    three tasks, a shared and a per-task weight row), the functional twin and a ``RecMetricModule``'s shared sums,
    validated or not, against NumPy float64 sums of the values as the dtype rounds them."""
    rng = np.random.default_rng(23)
    n = 2**20
    p_t = torch.tensor(rng.uniform(-size, size, (3, n)), dtype=dtype)
    y_t = torch.tensor(rng.uniform(-size, size, (3, n)), dtype=dtype)
    w_t = torch.full((n,), 1200.0, dtype=dtype)
    w_t[::7] = 0.5  # not all equal: no unit-weight shortcut
    p, y, w = (x.double().numpy() for x in (p_t, y_t, w_t))
    assert not torch.isfinite((p_t * p_t)[0]).all()  # squared in the input dtype, they overflow
    expected = np.stack(
        [
            np.sum(w * (p - y) ** 2, -1),
            np.sum(w * np.abs(p - y), -1),
            np.full(3, np.sum(w)),
            np.sum(w * y, -1),
            np.sum(w * y * y, -1),
        ]
    )
    assert expected[2, 0] > 1e9 and float(np.float32(expected[2, 0])) != expected[2, 0]
    for validate_args in (True, False):
        for tasks, weights in ((1, w_t), (3, w_t), (3, w_t.expand(3, -1).contiguous())):
            metric = tmx.WeightedMSE(num_tasks=tasks, validate_args=validate_args)
            metric.update(p_t[0] if tasks == 1 else p_t, y_t[0] if tasks == 1 else y_t, weights)
            states = torch.stack([getattr(metric, name).reshape(-1) for name in metric.metric_state])
            assert states.dtype == torch.float64
            np.testing.assert_allclose(states.numpy(), expected[:, :tasks], rtol=1e-12, atol=0)
    mse = (expected[0] / expected[2])[0]
    np.testing.assert_allclose(tmf.weighted_mse(p_t[0], y_t[0], w_t).item(), mse, rtol=1e-12)
    module = tmx.RecMetricModule(["t"], ["mse", "mae", "r_squared"], throughput=False)
    module.update({"prediction": p_t[0], "label": y_t[0], "weight": w_t})
    values = module.compute()
    r2 = 1 - expected[0, 0] / (expected[4, 0] - expected[3, 0] ** 2 / expected[2, 0])
    np.testing.assert_allclose(values["mse/t"].item(), mse, rtol=1e-12)
    np.testing.assert_allclose(values["mae/t"].item(), expected[1, 0] / expected[2, 0], rtol=1e-12)
    np.testing.assert_allclose(values["r_squared/t"].item(), r2, rtol=1e-9)
