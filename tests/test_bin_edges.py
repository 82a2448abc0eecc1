"""The binned AUC's device path: each score's bin looked up among kept edges is the documented bin.

References: the bin formula written here in NumPy (float64 logit, shift, scale, clip, floor; or
TorchRec's float32 ``p * B`` in probability space) for every float16 and bfloat16 value, and the
CPU path's arithmetic next to every edge of float32 and float64 scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
from torchmetrics_ext.functional.auc import binary as FB
from torchmetrics_ext.functional.auc._bin_edges import _keys, _values, smallest_reaching
from torchmetrics_ext.utilities.device import force_device_path

# (num_bins, logit_range, from_logits, bin_space)
RULES = [
    (2, (-16.0, 16.0), False, "logit"),
    (7, (-2.0, 3.5), False, "logit"),
    (1000, (-16.0, 16.0), False, "logit"),
    (10_000, (-16.0, 16.0), False, "logit"),
    (1000, (-16.0, 16.0), True, "logit"),
    (10_000, (-3.0, 1.0), True, "logit"),
    (1000, (-16.0, 16.0), False, "probability"),
    (10_000, (-16.0, 16.0), False, "probability"),
    (1000, (-16.0, 16.0), True, "probability"),
]
RULE_IDS = [f"B{b}-{r[0]:g}:{r[1]:g}-{'logits' if f else 'probs'}-{s}" for b, r, f, s in RULES]
# narrow, far-off and two-bin rules, checked exhaustively on every 16-bit score against the formula too
EXTREME_RULES = [
    (2, (-16.0, 16.0), False, "logit"),
    (2, (-16.0, 16.0), True, "probability"),
    (1000, (-1e-3, 1e-3), False, "logit"),
    (1000, (-1e-3, 1e-3), True, "logit"),
    (1000, (5.0, 40.0), False, "logit"),
    (1000, (-40.0, -5.0), True, "logit"),
    (100_000, (-16.0, 16.0), True, "probability"),
]


def _numpy_bins(x: np.ndarray, num_bins: int, logit_range: tuple[float, float], from_logits: bool, space: str):
    """The documented bin of each score (float64 ``x`` holding values of the scores' dtype)."""
    with np.errstate(divide="ignore", over="ignore"):
        if space == "probability":
            p = (1.0 / (1.0 + np.exp(-x))).astype(np.float32) if from_logits else x.astype(np.float32)
            position = (p * np.float32(num_bins)).astype(np.float64)
        else:
            z = x if from_logits else np.log(x / (1.0 - x))
            lo, hi = logit_range
            position = (z - lo) * (num_bins / (hi - lo))
    return np.floor(np.clip(position, 0, num_bins - 1)).astype(np.int64)


def _domain(dtype: torch.dtype, from_logits: bool) -> torch.Tensor:
    """Every value of a 16-bit float ``dtype`` that is a valid score (logits: finite; probabilities: [0, 1], -0.0 too)."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    keep = torch.isfinite(x) if from_logits else (x >= 0) & (x <= 1)
    return x[keep]


def _device_index(preds: torch.Tensor, target: torch.Tensor, rule: tuple, int64: bool = False) -> torch.Tensor:
    with force_device_path():
        return FB._binned_index(preds, target, *rule, int64=int64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("rule", RULES + EXTREME_RULES, ids=RULE_IDS + [str(rule) for rule in EXTREME_RULES])
def test_every_half_precision_score_gets_its_documented_bin(dtype, rule):
    num_bins, logit_range, from_logits, space = rule
    x = _domain(dtype, from_logits)  # -0.0 too (the dtype's order puts it below 0.0)
    target = torch.zeros_like(x, dtype=torch.int64)
    expected = _numpy_bins(x.double().numpy(), num_bins, logit_range, from_logits, space)
    looked_up = _device_index(x[None], target[None], rule)[0]
    np.testing.assert_array_equal(looked_up.numpy(), expected)
    np.testing.assert_array_equal(FB._binned_index(x[None], target[None], *rule)[0].numpy(), expected)  # CPU path


def _cpu_bins(x: torch.Tensor, rule: tuple) -> torch.Tensor:
    """The CPU path's bins, each score evaluated in ATen's vectorised loop (16 copies, calls of 2**15).

    The float64 logarithm and sigmoid of one value can round one ulp apart in the loop's scalar tail,
    which can move a float64 score lying within one rounding of an edge; the edges follow the
    vectorised loop, where (nearly) every score of a large batch is binned.
    """
    copies = x.repeat_interleave(16)
    parts = [FB._bin_positions(part[None], *rule)[0] for part in copies.split(1 << 15)]
    return torch.cat(parts)[::16].long()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_scores_next_to_every_edge_get_the_cpu_paths_bin(dtype, rule):
    num_bins, from_logits = rule[0], rule[2]
    edges = FB._edges(dtype, *rule)
    assert edges.shape == (num_bins - 1,) and bool((edges[1:] >= edges[:-1]).all())
    keys = _keys(edges, dtype)
    near = torch.cat([_values(keys + step, dtype) for step in range(-3, 4)])
    g = torch.Generator().manual_seed(num_bins)
    scattered = torch.randn(5000, generator=g, dtype=torch.float64) * 6
    if not from_logits:
        scattered = torch.sigmoid(scattered)
    ends = [-math.inf, math.inf] if from_logits else [0.0, 1.0]
    x = torch.cat([near, scattered.to(dtype), torch.tensor(ends, dtype=dtype)])
    x = x[(x >= ends[0]) & (x <= ends[1])]
    target = torch.zeros_like(x, dtype=torch.int64)
    np.testing.assert_array_equal(_device_index(x[None], target[None], rule)[0].numpy(), _cpu_bins(x, rule).numpy())
    if dtype == torch.float32:  # and the documented formula (float32 scores lie far from float64 roundings)
        expected = _numpy_bins(x.double().numpy(), *rule)
        np.testing.assert_array_equal(_device_index(x[None], target[None], rule)[0].numpy(), expected)


LABEL_DTYPES = [torch.bool, torch.uint8, torch.int32, torch.int64, torch.uint16, torch.float32, torch.float64]


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=str)
@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("int64", [False, True])
def test_label_and_task_offsets_match_the_cpu_path(label_dtype, num_tasks, int64):
    rule = (1000, (-16.0, 16.0), False, "logit")
    g = torch.Generator().manual_seed(num_tasks)
    preds = torch.rand(num_tasks, 4000, generator=g)
    preds[:, :4] = torch.tensor([0.0, 1.0, 0.5, 1e-30])
    target = (torch.rand(num_tasks, 4000, generator=g) < 0.3).to(label_dtype)
    expected = FB._binned_index(preds, target, *rule, int64=int64)
    looked_up = _device_index(preds, target, rule, int64=int64)
    assert looked_up.dtype == expected.dtype == (torch.int64 if int64 else torch.int32)
    assert torch.equal(looked_up, expected)
    # a transposed view (the module's sample-major batch) gives the same bins
    assert torch.equal(_device_index(preds.T.contiguous().T, target, rule, int64=int64), expected)


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cls", [tmx.AUC, tmx.AUPRC])
def test_device_histogram_equals_the_cpu_histogram_bit_for_bit(cls, weighted, num_tasks):
    """Scores on and next to the edges of 1,000 logit bins, in batches: the same histogram, hence the same value."""
    edges = FB._edges(torch.float32, 1000, (-16.0, 16.0), False, "logit")
    keys = _keys(edges, torch.float32)
    x = torch.cat([_values(keys + step, torch.float32) for step in (-1, 0, 1)])
    x = x[(x >= 0) & (x <= 1)]
    g = torch.Generator().manual_seed(3)
    preds = x[torch.randint(0, x.numel(), (num_tasks, 6000), generator=g)].squeeze(0)
    target = (torch.rand(preds.shape, generator=g) < 0.4).long()
    weights = torch.rand(preds.shape[-1], generator=g) if weighted else None
    cpu, device = cls(num_bins=1000, num_tasks=num_tasks), cls(num_bins=1000, num_tasks=num_tasks)
    for part in range(3):
        cut = slice(2000 * part, 2000 * (part + 1))
        batch = (preds[..., cut], target[..., cut], None if weights is None else weights[cut])
        cpu.update(*batch)
        with force_device_path():
            device.update(*batch)
    assert torch.equal(device._hist, cpu._hist)
    assert torch.equal(device.compute(), cpu.compute())


def test_unvalidated_nan_and_infinite_scores_on_the_device_path():
    """NaN (refused when validated) falls in the last bin, where the search puts it, on both paths (the CPU
    path raised IndexError before); infinite logits fall in the end bins, as on the CPU path."""
    rule = (10, (-16.0, 16.0), True, "logit")
    preds = torch.tensor([[math.nan, -math.inf, math.inf, 0.0]])
    target = torch.zeros_like(preds, dtype=torch.int64)
    assert _device_index(preds, target, rule).tolist() == [[9, 0, 9, 5]]
    assert FB._binned_index(preds, target, *rule).tolist() == [[9, 0, 9, 5]]
    strided = torch.tensor([[math.nan, 1.0, -math.inf, 1.0, math.inf, 1.0, 0.0, 1.0]])[:, ::2]  # non-contiguous
    assert _device_index(strided, target, rule).tolist() == [[9, 0, 9, 5]]
    metric = tmx.AUC(num_bins=10, from_logits=True, validate_args=False)
    with force_device_path():
        metric.update(preds[0], torch.tensor([1, 0, 1, 0]))
    assert metric._hist.sum().item() == 4


def test_edges_made_in_inference_mode_serve_later_steps_with_autograd():
    rule = (123, (-5.0, 7.0), False, "logit")
    preds, target = torch.rand(1, 50), torch.randint(0, 2, (1, 50))
    with torch.inference_mode():
        first = _device_index(preds, target, rule)
    scores = preds.clone().requires_grad_(True)
    assert torch.equal(_device_index(scores, target, rule), first)
    assert torch.equal(first, FB._binned_index(preds, target, *rule))


@settings(max_examples=60, deadline=None)
@given(
    thresholds=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_smallest_reaching_finds_the_thresholds_of_a_step_rule(thresholds, dtype):
    """A rule counting the thresholds at or below ``x``: its edges are the thresholds, in order, repeats kept."""
    steps = np.sort(np.asarray(thresholds, dtype=np.float64))

    def rule(values: torch.Tensor) -> torch.Tensor:
        x = values.double().numpy()
        return torch.from_numpy((x[:, None] >= steps[None, :]).sum(1))

    edges = smallest_reaching(len(steps) + 1, dtype, (-math.inf, math.inf), rule)
    assert edges.dtype == dtype
    np.testing.assert_array_equal(edges.double().numpy(), steps)


def test_edges_are_made_on_the_cpu_whatever_the_default_device():
    """Edges first asked for under another default device (``torch.set_default_device``, ``with
    torch.device(...)``) were made there, by that device's arithmetic, and kept for every later update:
    under ``meta`` they held no values, and every later device-path update of that rule raised."""
    rule = (37, (-3.25, 2.5), False, "logit")  # a rule no other test asks for: built here first
    with torch.device("meta"):
        edges = FB._edges(torch.float32, *rule)
    assert edges.device.type == "cpu"
    x = torch.rand(1, 4000, generator=torch.Generator().manual_seed(37))
    target = torch.zeros_like(x, dtype=torch.int64)
    expected = _numpy_bins(x.double().numpy(), *rule)
    np.testing.assert_array_equal(_device_index(x, target, rule).numpy(), expected)
    with torch.device("meta"):
        assert smallest_reaching(4, torch.float64, (0.0, 1.0), lambda v: (v * 4).floor().clamp(0, 3)).is_cpu


def test_each_probed_value_is_binned_in_a_vector_lane_and_the_lookup_ignores_layout():
    """float64 logits next to the edges of probability bins: ATen's scalar loop (a strided column, or a
    batch's last few scores) and its vector loop round the sigmoid one ulp apart for some of them (92 of
    100,899 on AVX-512), which can change the float32 probability and so the bin. The edges follow the
    vector loop (the test's 16-copy reference): each probed value, even one alone, is evaluated in a lane,
    never in the scalar tail; and the lookup gives a strided column the bins of its contiguous copy."""
    rule = (1000, (-16.0, 16.0), True, "probability")
    keys = _keys(FB._edges(torch.float64, *rule), torch.float64)
    x = _values((keys[:, None] + torch.arange(-50, 51)[None, :]).reshape(-1), torch.float64)
    vector = _cpu_bins(x, rule)
    scalar = FB._bin_positions(torch.stack([x, x], 1)[:, 0][None], *rule)[0].long()  # strided: the scalar loop
    apart = x[scalar != vector]
    for value, expected in zip(apart[:8], vector[scalar != vector][:8]):
        assert FB._lane_bins(value[None], *rule).long().item() == expected  # alone: padded into a lane
    assert torch.equal(FB._lane_bins(x, *rule).long(), vector)
    column = torch.stack([x, -x], 1)[:, 0]  # e.g. one output column of a (N, 2) model output
    target = torch.zeros(1, x.numel(), dtype=torch.int64)
    assert torch.equal(_device_index(column[None], target, rule)[0].long(), vector)


@pytest.mark.parametrize(
    "label_dtype",
    [torch.int8, torch.int16, torch.uint32, torch.uint64, torch.float16, torch.bfloat16],
    ids=str,
)
def test_labels_of_the_other_dtypes_give_the_documented_flat_index(label_dtype):
    """``(y, task, bin)`` flat indices ``y·T·B + t·B + bin`` (NumPy), T = 3, for the label dtypes the
    offsets test above leaves out (some added as they are, others converted first)."""
    rule = (1000, (-16.0, 16.0), False, "logit")
    g = torch.Generator().manual_seed(5)
    preds = torch.rand(3, 700, generator=g)
    labels = torch.rand(3, 700, generator=g) < 0.5
    bins = _numpy_bins(preds.double().numpy(), *rule)
    expected = labels.numpy() * 3 * 1000 + np.arange(3)[:, None] * 1000 + bins
    for int64 in (False, True):
        index = _device_index(preds, labels.to(label_dtype), rule, int64=int64)
        assert index.dtype == (torch.int64 if int64 else torch.int32)
        np.testing.assert_array_equal(index.numpy(), expected)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_cuda_bins_equal_the_cpu_paths(dtype, rule):
    """On a GPU: every half-precision score, and the neighbours of every edge, in the CPU path's bin; no host sync."""
    from_logits = rule[2]
    if dtype in (torch.float16, torch.bfloat16):
        x = _domain(dtype, from_logits)
    else:
        keys = _keys(FB._edges(dtype, *rule), dtype)
        x = torch.cat([_values(keys + step, dtype) for step in range(-2, 3)])
        x = x[torch.isfinite(x) if from_logits else (x >= 0) & (x <= 1)]
    target = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0))
    expected = _cpu_bins(x, rule) + target * rule[0]
    cuda_x, cuda_target = x.cuda()[None], target.cuda()[None]
    FB._binned_index(cuda_x, cuda_target, *rule)  # first call: the edges copied to the device once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        index = FB._binned_index(cuda_x, cuda_target, *rule)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_array_equal(index[0].cpu().numpy(), expected.numpy())
