"""The shared metric test harness: every metric of the package goes through these checks.

A :class:`MetricCase` says how to build the metric, how to make a data set (a dict of tensors,
samples along ``sample_axis``) and how to compute the expected value independently (numpy
formulas or scikit-learn, ranx, ...) from that data converted to float64 numpy arrays. The
``check_*`` functions then run the metric the ways users do: random batch splits with an uneven
last batch, ``forward`` vs ``update``, low-precision inputs, ``state_dict``/pickle resume,
``MetricCollection`` with compute groups, arithmetic, sklearn-style weight invariances and real
2-process gloo DDP (``check_ddp``).

Test modules declare ``CASES = {case.id: case, ...}`` at module level; DDP workers import the
module by name and look the case up by id, so cases may use lambdas.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torchmetrics import Metric, MetricCollection

from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

Data = dict[str, Any]


@dataclass
class MetricCase:
    """One metric configuration under test.

    Attributes:
        id: unique id within its module's ``CASES``.
        metric: factory returning a fresh metric.
        data: ``rng -> dict`` of tensors (and plain values) forming the whole data set.
        reference: ``numpy data -> expected compute()`` (float, array or dict of them),
            written independently of the package.
        functional: optional functional twin, called as ``functional(**data)``.
        sample_axis: axis of every tensor along which samples are split into batches.
        dtype_keys: floating inputs re-cast for the half/bfloat16/float32/float64 check.
        weight_key: name of the per-sample weights argument, for the invariance checks
            (``None`` when the metric has no per-sample weights).
        forward_check: whether ``forward``'s batch value should equal the reference on the batch.
        min_batch: smallest batch the random splits produce before the last one.
        rtol, atol: tolerance against the reference.
    """

    id: str
    metric: Callable[[], Metric]
    data: Callable[[np.random.Generator], Data]
    reference: Callable[[Data], Any]
    functional: Callable[..., Any] | None = None
    sample_axis: int = -1
    dtype_keys: tuple[str, ...] = ("preds",)
    weight_key: str | None = "weights"
    forward_check: bool = True
    min_batch: int = 40
    rtol: float = 1e-6
    atol: float = 1e-9
    extra: dict[str, Any] = field(default_factory=dict)

    def make_data(self, seed: int = 0) -> Data:
        return self.data(np.random.default_rng(seed))


# ----------------------------------------------------------------------------- data plumbing


def random_weights(rng: np.random.Generator, kind: str | None, shape: tuple[int, ...]) -> Tensor | None:
    """Sample weights in [0, 2) for a case: ``"task"`` (``shape``), ``"shared"`` (``(N,)``) or ``None``."""
    if kind == "task":
        return torch.tensor(rng.uniform(0.0, 2.0, size=shape))
    if kind == "shared":
        return torch.tensor(rng.uniform(0.0, 2.0, size=shape[-1]))
    if kind is None:
        return None
    raise ValueError(f"unknown weights kind {kind!r}")


class AtenOps(TorchDispatchMode):
    """Counts the ATen operations run inside the block: ``ops`` by name, ``count`` in all."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)

# PyTorch 2.3 (the declared minimum) cannot promote uint16/32/64 to a floating type nor ask a uint16
# dtype `is_signed`; docs/policies.md names 2.4 as the first version where the metrics take them all
_TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
WIDE_UNSIGNED_OK = _TORCH >= (2, 4)


def skip_without_wide_unsigned(dtype: torch.dtype) -> None:
    """Skip the calling test for a uint16/32/64 ``dtype`` on a PyTorch older than 2.4."""
    if dtype in UNSIGNED and not WIDE_UNSIGNED_OK:
        import pytest

        pytest.skip(f"{dtype} inputs need PyTorch 2.4 or newer (docs/policies.md)")


def unsigned(values: np.ndarray, dtype: torch.dtype) -> Tensor:
    """Non-negative integers as a ``dtype`` tensor (uint16/32/64: NumPy's uint64 carries them all)."""
    return torch.from_numpy(np.asarray(values, dtype=np.uint64)).to(dtype)


def unsigned_weights(rng: np.random.Generator, dtype: torch.dtype, shape: tuple[int, ...]) -> tuple[Tensor, np.ndarray]:
    """Weights ``{0, 1, 2, 3} * 2**(bits - 2)`` near the top of ``dtype`` (uint64 ones past 2**63), and as float64.

    Each value is a small integer times a power of two: exact in float64 and float32.
    """
    scale = 2 ** (torch.iinfo(dtype).bits - 2)
    small = rng.integers(0, 4, size=shape)
    small.flat[0] = 3  # at least one weight at the top
    return unsigned(small.astype(np.uint64) * np.uint64(scale), dtype), small * float(scale)


def to_numpy(data: Data) -> Data:
    """Tensors become float64 numpy arrays (integers and bools keep their dtype)."""
    out: Data = {}
    for key, value in data.items():
        if isinstance(value, Tensor):
            value = value.detach().cpu()
            out[key] = value.double().numpy() if value.is_floating_point() else value.numpy()
        else:
            out[key] = value
    return out


def num_samples(data: Data, axis: int) -> int:
    return next(v.shape[axis] for v in data.values() if isinstance(v, Tensor) and v.ndim > 0)


def take(data: Data, index: Tensor | slice, axis: int) -> Data:
    """Rows ``index`` along ``axis`` of every tensor whose length there is the sample count."""
    n = num_samples(data, axis)
    out: Data = {}
    for key, value in data.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[axis] == n:
            dim = axis % value.ndim
            out[key] = value[(slice(None),) * dim + (index,)]
        else:
            out[key] = value
    return out


def split(data: Data, bounds: Sequence[int], axis: int) -> list[Data]:
    """Batches ``[bounds[i], bounds[i+1])``."""
    return [take(data, slice(lo, hi), axis) for lo, hi in zip(bounds[:-1], bounds[1:])]


def random_bounds(n: int, rng: np.random.Generator, num_batches: int, min_batch: int) -> list[int]:
    """Cut points for ``num_batches`` batches of random sizes >= ``min_batch`` and a short uneven last one."""
    if num_batches <= 1 or n < (num_batches - 1) * min_batch + 1:
        return [0, n]
    last = int(rng.integers(1, min_batch + 1))
    body = n - last
    cuts = np.sort(rng.choice(np.arange(1, body // min_batch), size=num_batches - 2, replace=False)) * min_batch
    cuts = cuts + rng.integers(0, min_batch // 2, size=cuts.shape)
    return [0, *sorted(set(int(c) for c in cuts if 0 < c < body)), body, n]


def assert_close(actual: Any, expected: Any, rtol: float, atol: float, what: str = "") -> None:
    """Compare tensors/arrays/floats/dicts of them; ``nan`` equals ``nan``."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{what}: expected a dict, got {type(actual).__name__}"
        assert set(actual) == set(expected), f"{what}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_close(actual[key], expected[key], rtol, atol, f"{what}[{key}]")
        return
    if isinstance(actual, Tensor):
        actual = actual.detach().cpu().double().numpy()
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol, err_msg=what
    )


def _call(metric: Metric, batch: Data, method: str = "update") -> Any:
    return getattr(metric, method)(**batch)


def _expected(case: MetricCase, data: Data) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return case.reference(to_numpy(data))


def _state_snapshot(metric: Metric) -> dict[str, Any]:
    return {"states": copy.deepcopy(metric.metric_state), "count": metric._update_count}


def assert_same_state(metric: Metric, snapshot: dict[str, Any]) -> None:
    """The metric's states and update counter equal a snapshot taken with :func:`_state_snapshot`."""
    assert metric._update_count == snapshot["count"], "update counter changed"
    for key, before in snapshot["states"].items():
        after = metric.metric_state[key]
        if isinstance(before, Tensor):
            assert torch.equal(before, after), f"state {key} changed"
        else:
            assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after)), (
                f"list state {key} changed"
            )


# ----------------------------------------------------------------------------- the checks


def check_accumulate(case: MetricCase, seed: int = 0) -> None:
    """``update`` over several random splits (uneven last batch) then ``compute`` == reference on all data."""
    data = case.make_data(seed)
    expected = _expected(case, data)
    rng = np.random.default_rng(seed + 1)
    n = num_samples(data, case.sample_axis)
    for num_batches in (1, 3, 6):
        metric = case.metric()
        bounds = random_bounds(n, rng, num_batches, case.min_batch)
        for batch in split(data, bounds, case.sample_axis):
            _call(metric, batch)
        assert_close(metric.compute(), expected, case.rtol, case.atol, f"{case.id} split {bounds}")
    if case.functional is not None:
        assert_close(case.functional(**data), expected, case.rtol, case.atol, f"{case.id} functional")


def check_forward(case: MetricCase, seed: int = 0) -> None:
    """``forward`` returns the batch value and accumulates exactly like ``update``."""
    data = case.make_data(seed)
    n = num_samples(data, case.sample_axis)
    bounds = random_bounds(n, np.random.default_rng(seed + 2), 4, case.min_batch)
    metric = case.metric()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for batch in split(data, bounds, case.sample_axis):
            value = _call(metric, batch, "forward")
            if case.forward_check:
                assert_close(value, _expected(case, batch), case.rtol, case.atol, f"{case.id} forward batch")
    assert_close(metric.compute(), _expected(case, data), case.rtol, case.atol, f"{case.id} after forward")
    check_missing_arguments(metric, data)
    assert_close(metric.compute(), _expected(case, data), case.rtol, case.atol, f"{case.id} after missing arguments")
    check_differentiable(case, data)


def check_differentiable(case: MetricCase, data: Data) -> None:
    """``is_differentiable`` says whether ``forward``'s value carries gradients (TorchMetrics' tester rule).

    The floating inputs (``dtype_keys``) require grad; the batch value must then require grad
    exactly when ``is_differentiable`` (a dict value: some entry, as Reliability's mean predictions,
    whose label rates and weights do not depend on them), and a differentiable value backpropagates.
    """
    keys = [k for k in case.dtype_keys if isinstance(data.get(k), Tensor) and data[k].is_floating_point()]
    if not keys:
        return
    batch = dict(data, **{k: data[k].detach().double().requires_grad_() for k in keys})
    metric = case.metric()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = _call(metric, batch, "forward")
    carrying = [v for v in (value.values() if isinstance(value, Mapping) else [value]) if v.requires_grad]
    assert bool(carrying) == bool(metric.is_differentiable), (
        f"{case.id}: is_differentiable={metric.is_differentiable}, forward's value carries gradients: {bool(carrying)}"
    )
    if carrying:
        sum(v[v.isfinite()].sum() for v in carrying).backward()
        assert any(batch[k].grad is not None for k in keys), f"{case.id}: no gradient reached the inputs"


def check_missing_arguments(metric: Metric, batch: Data) -> None:
    """A required ``update`` argument given as ``None`` raises ``TypeError`` naming it and changes nothing.

    Without validation the batch fails wherever it fails (``update`` may then have appended part
    of it: the user vouched for the inputs); ``forward``, which resets the states before its
    update, still puts back what was accumulated.
    """
    import inspect

    import pytest

    params = list(inspect.signature(type(metric).update).parameters.values())[1:]
    required = [p.name for p in params if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    snapshot = _state_snapshot(metric)
    for name in (n for n in required if n in batch):
        for method in ("update", "forward"):
            with pytest.raises(TypeError, match=f"requires `{name}`"):
                _call(metric, dict(batch, **{name: None}), method)
            assert_same_state(metric, snapshot)
        probe = copy.deepcopy(metric)
        probe.validate_args = False
        try:
            _call(probe, dict(batch, **{name: None}), "forward")
        except Exception:  # wherever the kernel fails (some take a missing target as "no labels")
            assert_same_state(probe, snapshot)


# floating inputs cast with ``dtype_keys`` in :func:`check_dtype`: weights (per sample, per query or
# shared) and float labels or values arrive in low precision too (a float16 weight column, bfloat16 soft labels)
LOW_PRECISION_KEYS = ("weights", "weight", "target", "values")


def low_precision_keys(case: MetricCase, data: Data) -> list[str]:
    """``dtype_keys`` and every floating weight, target or values tensor of the case's data."""
    keys = list(case.dtype_keys)
    for key in (case.weight_key, *LOW_PRECISION_KEYS):
        value = data.get(key) if key else None
        if key not in keys and isinstance(value, Tensor) and value.is_floating_point():
            keys.append(key)
    return keys


def check_dtype(case: MetricCase, dtype: torch.dtype, seed: int = 0) -> None:
    """Half, bfloat16, float32 and float64 inputs give the reference value of the cast inputs.

    Every floating input is cast (:func:`low_precision_keys`): predictions, weights and float
    labels or values; the reference sees the same rounded numbers in float64.
    """
    data = case.make_data(seed)
    for key in low_precision_keys(case, data):
        data[key] = data[key].to(dtype)
    expected = _expected(case, data)
    metric = case.metric()
    n = num_samples(data, case.sample_axis)
    for batch in split(data, random_bounds(n, np.random.default_rng(seed), 3, case.min_batch), case.sample_axis):
        _call(metric, batch)
    assert_close(metric.compute(), expected, case.rtol, case.atol, f"{case.id} {dtype}")


def state_values(metric: Metric) -> dict[str, list[Tensor]]:
    """Every state as its list of tensors (a tensor state is one), for :func:`assert_same_values`."""
    return {k: [v.clone()] if isinstance(v, Tensor) else [c.clone() for c in v] for k, v in metric.metric_state.items()}


def assert_same_values(metric: Metric, before: dict[str, list[Tensor]], what: str) -> None:
    """The states hold bit for bit what :func:`state_values` saw (``nan`` equals ``nan``).

    Dtypes must agree too, except where ``compute`` joined a list state's chunks into fewer
    (some compact them): then the concatenated values are compared.
    """
    after = state_values(metric)
    assert set(after) == set(before), f"{what}: states {sorted(after)} != {sorted(before)}"
    for key, old in before.items():
        new = after[key]
        if len(new) == len(old):
            assert [t.dtype for t in new] == [t.dtype for t in old], f"{what}: state {key} changed dtype"
        if old or new:
            joined_old = torch.cat([t.reshape(-1) for t in old]) if old else torch.zeros(0)
            joined_new = torch.cat([t.reshape(-1) for t in new]) if new else torch.zeros(0)
            torch.testing.assert_close(
                joined_new, joined_old, rtol=0, atol=0, equal_nan=True, check_dtype=False, msg=f"{what}: state {key}"
            )


def assert_integers_kept(before: dict[str, list[Tensor]], after: dict[str, list[Tensor]], what: str) -> None:
    """Every integer or bool tensor of ``before`` (states as :func:`state_values` gives them) is in ``after`` unchanged."""
    for key, old in before.items():
        assert len(after[key]) == len(old), f"{what}: state {key} lost chunks"
        for chunk, new in zip(old, after[key]):
            if not (chunk.is_floating_point() or chunk.is_complex()):
                assert new.dtype == chunk.dtype, f"{what}: integer state {key} cast to {new.dtype}"
                assert torch.equal(new, chunk), f"{what}: integer state {key} changed"


def _convert(metric: Metric, how: str, dtype: torch.dtype) -> Metric:
    """``metric.set_dtype(dtype)`` (``how="set_dtype"``) or ``metric.to(dtype)`` (``how="to"``)."""
    return metric.set_dtype(dtype) if how == "set_dtype" else metric.to(dtype)


def check_set_dtype(case: MetricCase, seed: int = 0) -> None:
    """``compute`` is a pure function of the states, also after ``set_dtype(float64)``/``.to(float64)``.

    Half the batches go in, the metric is converted (or not), the rest go in; then ``compute``
    runs twice (its cache dropped in between): both values equal the reference and the states
    are bit for bit what they were before each ``compute``. A kernel that writes into a view of
    a state (``.to(dtype)`` is no copy when the state already has that dtype) fails here.
    """
    data = case.make_data(seed)
    expected = _expected(case, data)
    n = num_samples(data, case.sample_axis)
    batches = split(data, random_bounds(n, np.random.default_rng(seed + 5), 4, case.min_batch), case.sample_axis)
    half = len(batches) // 2
    for how in ("none", "set_dtype", "to"):
        metric = case.metric()
        for batch in batches[:half]:
            _call(metric, batch)
        if how != "none":
            metric = _convert(metric, how, torch.float64)
        for batch in batches[half:]:
            _call(metric, batch)
        for attempt in range(2):
            before = state_values(metric)
            metric._computed = None  # run the kernels again, not TorchMetrics' cache
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                value = metric.compute()
            what = f"{case.id} after {how}(float64), compute #{attempt + 1}"
            assert_close(value, expected, case.rtol, case.atol, what)
            assert_same_values(metric, before, what)


def check_exact_states(case: MetricCase, seed: int = 0) -> None:
    """Casting a metric to a lower precision never casts its integer states (ids, counts, encoded keys).

    ``set_dtype`` and ``.to`` with float16, bfloat16 and float32 (and float64) change the floating
    states only; every integer or bool state keeps its dtype and values, and the metric still
    updates and computes.
    """
    data = case.make_data(seed)
    n = num_samples(data, case.sample_axis)
    batches = split(data, random_bounds(n, np.random.default_rng(seed + 6), 3, case.min_batch), case.sample_axis)
    for how in ("set_dtype", "to"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            metric = case.metric()
            for batch in batches[:-1]:
                _call(metric, batch)
            before = state_values(metric)
            metric = _convert(metric, how, dtype)
            assert_integers_kept(before, state_values(metric), f"{case.id} {how}({dtype})")
            _call(metric, batches[-1])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metric.compute()


# dtype conversions other than ``set_dtype``: Lightning's "bf16-true"/"16-true" precision calls
# ``module.to(dtype)`` on the model, metrics included
CASTS: dict[str, Callable[[Metric], Metric]] = {
    "to(bfloat16)": lambda m: m.to(torch.bfloat16),
    "to(float16)": lambda m: m.to(torch.float16),
    "to('cpu', bfloat16)": lambda m: m.to("cpu", torch.bfloat16),
    "bfloat16()": lambda m: m.bfloat16(),
}


def _numpy_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _numpy_value(v) for k, v in value.items()}
    return value.detach().cpu().double().numpy()


def check_casts_keep_states(case: MetricCase, seed: int = 0) -> None:
    """A dtype cast that is not ``set_dtype`` changes no state: later updates accumulate as without it.

    Half the batches go in, the metric is cast (:data:`CASTS`): every state keeps its dtype and
    values bit for bit, ``metric.dtype`` stays; the rest go in; ``compute`` equals the reference
    and, exactly, the value of a metric never cast. (A bfloat16 sum of ones stops at 256.)
    """
    data = case.make_data(seed)
    expected = _expected(case, data)
    n = num_samples(data, case.sample_axis)
    batches = split(data, random_bounds(n, np.random.default_rng(seed + 7), 4, case.min_batch), case.sample_axis)
    half = len(batches) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        plain = case.metric()
        for batch in batches:
            _call(plain, batch)
        uncast = _numpy_value(plain.compute())
        for name, cast in CASTS.items():
            metric = case.metric()
            for batch in batches[:half]:
                _call(metric, batch)
            before, dtype = state_values(metric), metric.dtype
            metric = cast(metric)
            what = f"{case.id} after .{name}"
            assert_same_values(metric, before, what)
            assert metric.dtype == dtype, f"{what}: metric.dtype {metric.dtype} != {dtype}"
            for batch in batches[half:]:
                _call(metric, batch)
            value = metric.compute()
            assert_close(value, expected, case.rtol, case.atol, what)
            assert_close(value, uncast, 0.0, 0.0, f"{what} vs never cast")


def check_state_dict(case: MetricCase, seed: int = 0) -> None:
    """Mid-stream ``state_dict`` (``persistent(True)``) and pickle resume exactly; ``reset`` starts over."""
    data = case.make_data(seed)
    expected = _expected(case, data)
    n = num_samples(data, case.sample_axis)
    batches = split(data, random_bounds(n, np.random.default_rng(seed), 4, case.min_batch), case.sample_axis)
    half = len(batches) // 2

    metric = case.metric()
    metric.persistent(True)
    for batch in batches[:half]:
        _call(metric, batch)
    state = copy.deepcopy(metric.state_dict())
    pickled = pickle.dumps(metric)

    resumed = case.metric()
    resumed.persistent(True)
    resumed.load_state_dict(state)
    unpickled = pickle.loads(pickled)
    for target in (resumed, unpickled, metric):
        for batch in batches[half:]:
            _call(target, batch)
        assert_close(target.compute(), expected, case.rtol, case.atol, f"{case.id} resumed")

    metric.reset()
    fresh = case.metric()
    for key, value in fresh.metric_state.items():
        current = metric.metric_state[key]
        if isinstance(value, Tensor):
            assert torch.equal(current, value), f"reset did not restore {key}"
        else:
            assert len(current) == len(value) == 0, f"reset did not empty {key}"
    for batch in batches:
        _call(metric, batch)
    assert_close(metric.compute(), expected, case.rtol, case.atol, f"{case.id} after reset")


def check_collection(case: MetricCase, seed: int = 0, arithmetic: bool = True) -> None:
    """Inside a ``MetricCollection`` with compute groups, and in metric arithmetic."""
    data = case.make_data(seed)
    expected = _expected(case, data)
    n = num_samples(data, case.sample_axis)
    batches = split(data, random_bounds(n, np.random.default_rng(seed), 3, case.min_batch), case.sample_axis)
    collection = MetricCollection({"first": case.metric(), "second": case.metric()}, compute_groups=True)
    for batch in batches:
        collection.update(**batch)
    values = collection.compute()
    for key in ("first", "second"):
        value = values[key] if key in values else {k[len(key) + 1 :]: v for k, v in values.items() if k.startswith(key)}
        assert_close(value, expected, case.rtol, case.atol, f"{case.id} collection {key}")
    if arithmetic:
        scaled = case.metric() * 100
        diff = case.metric() - case.metric()
        for batch in batches:
            scaled.update(**batch)
            diff.update(**batch)
        assert_close(scaled.compute(), np.asarray(expected) * 100, case.rtol, case.atol, f"{case.id} * 100")
        assert_close(diff.compute(), np.asarray(expected) * 0, case.rtol, case.atol, f"{case.id} a - b")


def check_invariances(case: MetricCase, seed: int = 0) -> None:
    """sklearn-style weight invariances, plus row permutation.

    unit weights == no weights; integer weights == repeated rows; zero weights == removed rows;
    scaling every weight changes nothing; permuting rows changes nothing.
    """
    assert case.weight_key is not None, f"{case.id} has no per-sample weights"
    data = case.make_data(seed)
    rng = np.random.default_rng(seed + 3)
    n = num_samples(data, case.sample_axis)
    key = case.weight_key

    def run(d: Data) -> Any:
        metric = case.metric()
        for batch in split(
            d, random_bounds(num_samples(d, case.sample_axis), rng, 3, case.min_batch), case.sample_axis
        ):
            _call(metric, batch)
        return metric.compute()

    def close(a: Any, b: Any, what: str) -> None:
        assert_close(
            a, b.cpu().double().numpy() if isinstance(b, Tensor) else b, case.rtol, case.atol, f"{case.id} {what}"
        )

    unweighted = dict(data, **{key: None})
    close(run(dict(data, **{key: torch.ones(n, dtype=torch.float64)})), run(unweighted), "unit weights")

    counts = torch.from_numpy(rng.integers(0, 4, size=n))
    repeated = take(unweighted, torch.repeat_interleave(torch.arange(n), counts), case.sample_axis)
    close(run(dict(data, **{key: counts.double()})), run(repeated), "integer weights == repeats")

    weights = torch.from_numpy(rng.uniform(0.1, 3.0, size=n))
    keep = torch.from_numpy(rng.random(n) < 0.7)
    zeroed = dict(data, **{key: torch.where(keep, weights, 0.0)})
    removed = take(dict(data, **{key: weights}), torch.nonzero(keep).reshape(-1), case.sample_axis)
    close(run(zeroed), run(removed), "zero weights == removed rows")

    weighted = dict(data, **{key: weights})
    close(run(dict(data, **{key: weights * 7.25})), run(weighted), "scaled weights")
    perm = torch.from_numpy(rng.permutation(n))
    close(run(take(weighted, perm, case.sample_axis)), run(weighted), "permuted rows")


def check_group_invariances(case: MetricCase, seed: int = 0, group_key: str = "indexes", key: str = "weights") -> None:
    """Per-group weights (one weight for every row of a query, flat ranking) against the case's reference.

    Scaling every weight changes nothing; zero-weight groups are removed groups; integer weights are
    groups repeated that many times (under fresh ids); permuting rows and relabelling the group ids
    changes nothing. Each metric value is compared with the reference on the equivalent data.
    """
    data = case.make_data(seed)
    rng = np.random.default_rng(seed + 3)
    groups, inverse = torch.unique(data[group_key], return_inverse=True)
    per_group = torch.from_numpy(rng.uniform(0.1, 3.0, size=len(groups)))
    weighted = dict(data, **{key: per_group[inverse]})
    expected = _expected(case, weighted)

    def run(d: Data, what: str, want: Any) -> None:
        metric = case.metric()
        n = num_samples(d, case.sample_axis)
        for batch in split(d, random_bounds(n, rng, 3, case.min_batch), case.sample_axis):
            _call(metric, batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            assert_close(metric.compute(), want, case.rtol, case.atol, f"{case.id} {what}")

    run(dict(weighted, **{key: weighted[key] * 7.25}), "scaled group weights", expected)

    keep = torch.from_numpy(rng.random(len(groups)) < 0.7)[inverse]
    zeroed = dict(weighted, **{key: torch.where(keep, weighted[key], 0.0)})
    removed = take(weighted, torch.nonzero(keep).reshape(-1), case.sample_axis)
    run(zeroed, "zero-weight groups == removed groups", _expected(case, removed))

    counts = torch.from_numpy(rng.integers(0, 4, size=len(groups)))[inverse]
    offset = int(data[group_key].abs().max()) + 1
    copies = [take(data, torch.nonzero(counts > r).reshape(-1), case.sample_axis) for r in range(3)]
    repeated = {
        k: torch.cat([c[k] + (r + 1) * offset if k == group_key else c[k] for r, c in enumerate(copies)])
        for k in (k for k, v in data.items() if isinstance(v, Tensor) and k != key)
    }
    run(dict(data, **{key: counts.double()}), "integer group weights == repeated groups", _expected(case, repeated))

    perm = torch.from_numpy(rng.permutation(num_samples(data, case.sample_axis)))
    relabel = torch.from_numpy(rng.permutation(len(groups)) * 7 - 3 * len(groups))  # negative ids too
    shuffled = take(dict(weighted, **{group_key: relabel[inverse]}), perm, case.sample_axis)
    run(shuffled, "permuted rows, relabelled groups", expected)


def check_rejects(case: MetricCase, bad: Data, exc: type[Exception], match: str, seed: int = 0) -> None:
    """A bad batch raises ``exc`` (message matching ``match``) from update and forward and changes nothing."""
    import pytest

    data = case.make_data(seed)
    metric = case.metric()
    _call(metric, data)
    snapshot = _state_snapshot(metric)
    for method in ("update", "forward"):
        with pytest.raises(exc, match=match):
            _call(metric, bad, method)
        assert_same_state(metric, snapshot)
    assert_close(metric.compute(), _expected(case, data), case.rtol, case.atol, f"{case.id} after rejection")


# ----------------------------------------------------------------------------- device path


def check_device_path(case: MetricCase, invariances: bool = False, seed: int = 0) -> None:
    """CPU tensors forced through the kernels' device path: the checks above pass there too, and
    the values equal the CPU path's to rounding (``update`` over random splits, and the functional).
    """
    from torchmetrics_ext.utilities.device import force_device_path

    data = case.make_data(seed)
    bounds = random_bounds(num_samples(data, case.sample_axis), np.random.default_rng(seed + 4), 4, case.min_batch)

    def values() -> list[Any]:
        metric = case.metric()
        for batch in split(data, bounds, case.sample_axis):
            _call(metric, batch)
        return [metric.compute()] + ([case.functional(**data)] if case.functional is not None else [])

    cpu = values()
    with force_device_path():
        device = values()
        check_accumulate(case, seed)
        check_forward(case, seed)
        if invariances:
            check_invariances(case, seed)
    for what, a, b in zip(("update", "functional"), device, cpu):
        pairs = [(k, a[k], b[k]) for k in b] if isinstance(b, dict) else [("", a, b)]  # a dict of values
        for key, x, y in pairs:
            assert_close(x, y.cpu().double().numpy(), 1e-12, 1e-14, f"{case.id}{key} device path vs CPU path ({what})")


# ----------------------------------------------------------------------------- DDP


def ddp_shards(n: int, world_size: int, empty_rank: bool, min_batch: int) -> list[list[tuple[int, int]]]:
    """Per-rank lists of batch bounds: uneven shards and batch counts; optionally rank 1 gets nothing."""
    rng = np.random.default_rng(n)
    bounds = random_bounds(n, rng, 7, min_batch)
    batches = list(zip(bounds[:-1], bounds[1:]))
    if empty_rank:
        return [batches] + [[] for _ in range(world_size - 1)]
    # rank r takes a contiguous run; the first rank takes more batches than the others
    cut = [0, (len(batches) + 1) // 2 + 1] + [len(batches)] * (world_size - 1)
    return [batches[cut[r] : cut[r + 1]] for r in range(world_size)]


def _ddp_job(rank: int, world_size: int, module: str, case_id: str, seed: int, shards: list) -> Any:
    """Runs inside each spawned rank: update on this rank's batches, then a synced ``compute``."""
    case = importlib.import_module(module).CASES[case_id]
    data = case.make_data(seed)
    metric = case.metric()
    for lo, hi in shards[rank]:
        _call(metric, take(data, slice(lo, hi), case.sample_axis))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TorchMetrics warns when a rank saw no update
        value = metric.compute()
    if isinstance(value, Mapping):
        return {k: v.detach().cpu().double().numpy() for k, v in value.items()}
    return value.detach().cpu().double().numpy()


def check_ddp(pool: Any, module: str, case: MetricCase, empty_rank: bool = False, seed: int = 0) -> None:
    """Real 2-process gloo DDP equals one process over the concatenated data, on every rank."""
    data = case.make_data(seed)
    expected = _expected(case, data)
    shards = ddp_shards(num_samples(data, case.sample_axis), 2, empty_rank, case.min_batch)
    for rank, value in enumerate(pool.run(_ddp_job, module, case.id, seed, shards)):
        assert_close(value, expected, case.rtol, case.atol, f"{case.id} DDP rank {rank} (empty_rank={empty_rank})")


# the scenarios of :func:`check_ddp_scenarios`, each as (what rank 0 does, what rank 1 does)
DDP_SCENARIOS = ("midway", "one-sided", "empty-update", "idle")


def _ddp_scenario_plan(case: MetricCase, data: Data, world_size: int) -> dict[str, list[list[tuple[int, int]]]]:
    """Per scenario, per rank, the batch bounds fed before the final ``compute``.

    ``midway``: batches dealt round-robin (uneven sizes and counts); every rank computes after the
    first half of its batches (twice), then updates on the rest.
    ``one-sided``: as ``midway``, but after the computes rank 0 updates on every rank's rest and the
    others update no more (TorchMetrics would return their cached value without syncing, leaving
    rank 0 in the sync alone).
    ``empty-update``: rank 0 takes everything, the others call ``update`` once with an empty batch.
    ``idle``: rank 0 takes everything, the others never call ``update``.
    """
    n = num_samples(data, case.sample_axis)
    everything = ddp_shards(n, world_size, True, case.min_batch)[0]
    dealt = [everything[r::world_size] for r in range(world_size)]
    assert all(len(shard) >= 2 for shard in dealt), f"{case.id}: too few batches for the midway scenario"
    empty = [(0, 0)]
    return {
        "midway": dealt,
        "one-sided": dealt,
        "empty-update": [everything] + [empty] * (world_size - 1),
        "idle": [everything] + [[] for _ in range(world_size - 1)],
    }


def _first_half(shard: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return shard[: (len(shard) + 1) // 2]


def _ddp_scenarios_job(rank: int, world_size: int, module: str, case_ids: Sequence[str], seed: int) -> Any:
    """Runs inside each spawned rank: every scenario of every case, one after the other (same order on
    every rank, so the collectives line up); ``midway`` and ``one-sided`` return their three computes,
    the others one."""
    cases = importlib.import_module(module).CASES
    out: dict[str, dict[str, list[Any]]] = {}
    for cid in case_ids:
        case = cases[cid]
        data = case.make_data(seed)
        for scenario, shards in _ddp_scenario_plan(case, data, world_size).items():
            metric = case.metric()
            mine = shards[rank]
            parts = [_first_half(mine), mine[len(_first_half(mine)) :]] if scenario == "midway" else [mine]
            if scenario == "one-sided":
                rest = [r for shard in shards for r in shard[len(_first_half(shard)) :]]
                parts = [_first_half(mine), rest if rank == 0 else []]
            values = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a rank without updates; undefined values
                for k, part in enumerate(parts):
                    for lo, hi in part:
                        _call(metric, take(data, slice(lo, hi), case.sample_axis))
                    values.append(_numpy_value(metric.compute()))
                    if k == 0 and scenario in ("midway", "one-sided"):
                        values.append(_numpy_value(metric.compute()))  # a second compute before more updates
            out.setdefault(cid, {})[scenario] = values
    return out


def check_ddp_scenarios(pool: Any, module: str, cases: Mapping[str, MetricCase], seed: int = 0) -> None:
    """Real 2-process gloo DDP over several cases in one job, each through :data:`DDP_SCENARIOS`.

    Every rank's values equal the reference over the samples all ranks fed: ``midway``'s first two
    computes the first halves of every rank's batches, its last compute everything (``one-sided``
    alike); ``empty-update`` and ``idle`` everything. Mismatches are collected over all cases, then reported together.
    """
    ids = sorted(cases)
    results = pool.run(_ddp_scenarios_job, module, ids, seed)
    failures: list[str] = []
    for cid in ids:
        case = cases[cid]
        data = case.make_data(seed)
        expected = _expected(case, data)
        plan = _ddp_scenario_plan(case, data, len(results))
        first = [r for shard in plan["midway"] for r in _first_half(shard)]
        index = torch.cat([torch.arange(lo, hi) for lo, hi in first])
        midway = _expected(case, take(data, index, case.sample_axis))
        wanted = {
            "midway": [midway, midway, expected],
            "one-sided": [midway, midway, expected],
            "empty-update": [expected],
            "idle": [expected],
        }
        for rank, values in enumerate(results):
            for scenario, want in wanted.items():
                for k, (value, ref) in enumerate(zip(values[cid][scenario], want, strict=True)):
                    try:
                        assert_close(value, ref, case.rtol, case.atol, f"{cid} {scenario} compute #{k + 1} rank {rank}")
                    except AssertionError as err:
                        failures.append(str(err))
    assert not failures, f"{len(failures)} DDP scenario mismatches:\n" + "\n".join(failures)


def per_task(fn: Callable[..., float], *keys: str, **kwargs: Any) -> Callable[[Data], Any]:
    """Reference over ``(T, N)`` (or ``(N,)``) arrays from a 1-D reference ``fn(*columns, **kwargs)``.

    A key whose value is ``None`` is passed as ``None``; a 1-D value next to 2-D ones is shared
    by every task (shared weights).
    """

    def reference(data: Data) -> Any:
        values = [data.get(k) for k in keys]
        first = values[0]
        if first.ndim == 1:
            return fn(*values, **kwargs)
        rows = []
        for t in range(first.shape[0]):
            rows.append(fn(*[None if v is None else (v[t] if v.ndim == 2 else v) for v in values], **kwargs))
        return np.asarray(rows)

    return reference


# ----------------------------------------------------------------------------- the standard test set

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def harness_tests(
    module: str,
    cases: Mapping[str, MetricCase],
    *,
    accumulate: Sequence[str] | None = None,
    forward: Sequence[str] | None = None,
    dtypes: Sequence[str] = (),
    low_precision: Sequence[str] | None = None,
    state_dict: Sequence[str] | None = None,
    collection: Sequence[str] = (),
    no_arithmetic: Sequence[str] = (),
    invariances: Sequence[str] = (),
    group_invariances: Sequence[str] = (),
    ddp: Sequence[str] = (),
    ddp_scenarios: Sequence[str] = (),
    device_path: Sequence[str] = (),
    set_dtype: Sequence[str] | None = None,
) -> dict[str, Callable[..., None]]:
    """Every ``check_*`` above as parametrised pytest functions, for a test module's namespace.

    Each keyword selects the case ids a check runs on (``None``: every case; empty: no test).
    ``dtypes`` cases run :func:`check_dtype` with all four dtypes; ``low_precision`` cases (every
    case not in ``dtypes`` unless narrowed) run it once, float16 and bfloat16 taking turns over the
    sorted ids, so every weighted case meets low-precision weights and labels at a small cost.
    ``no_arithmetic`` lists collection cases whose value is not a tensor (dicts) and so skip the
    arithmetic part. ``group_invariances`` cases (flat ranking with per-query weights) run
    :func:`check_group_invariances`. ``device_path`` cases also run through the kernels' device path
    (:func:`check_device_path`, with the invariances where selected). ``ddp_scenarios`` cases run
    together in one DDP job (:func:`check_ddp_scenarios`: a ``compute`` part-way, a rank whose only
    update is an empty batch, an idle rank). ``set_dtype`` cases (every
    case unless narrowed) run :func:`check_set_dtype`, :func:`check_exact_states` and
    :func:`check_casts_keep_states`. Usage, at
    the top level of ``tests/test_<family>.py``::

        globals().update(H.harness_tests(__name__, CASES, dtypes=[...], ddp=[...]))
    """
    import pytest

    every = sorted(cases)

    def pick(selection: Sequence[str] | None) -> list[str]:
        return every if selection is None else list(selection)

    tests: dict[str, Callable[..., None]] = {}
    if ids := pick(accumulate):

        @pytest.mark.parametrize("cid", ids)
        def test_accumulate(cid: str) -> None:
            check_accumulate(cases[cid])

        tests["test_accumulate"] = test_accumulate
    if ids := pick(forward):

        @pytest.mark.parametrize("cid", ids)
        def test_forward(cid: str) -> None:
            check_forward(cases[cid])

        tests["test_forward"] = test_forward
    if ids := pick(dtypes):

        @pytest.mark.parametrize("dtype", _DTYPES)
        @pytest.mark.parametrize("cid", ids)
        def test_dtypes(cid: str, dtype: torch.dtype) -> None:
            check_dtype(cases[cid], dtype)

        tests["test_dtypes"] = test_dtypes
    low = [i for i in every if i not in dtypes] if low_precision is None else list(low_precision)
    if low:
        pairs = [(cid, _DTYPES[k % 2]) for k, cid in enumerate(low)]

        @pytest.mark.parametrize(
            ("cid", "dtype"), pairs, ids=[f"{c}-{str(d).removeprefix('torch.')}" for c, d in pairs]
        )
        def test_low_precision(cid: str, dtype: torch.dtype) -> None:
            check_dtype(cases[cid], dtype)

        tests["test_low_precision"] = test_low_precision
    if ids := pick(state_dict):

        @pytest.mark.parametrize("cid", ids)
        def test_state_dict(cid: str) -> None:
            check_state_dict(cases[cid])

        tests["test_state_dict"] = test_state_dict
    if ids := pick(set_dtype):

        @pytest.mark.parametrize("cid", ids)
        def test_set_dtype(cid: str) -> None:
            check_set_dtype(cases[cid])
            check_exact_states(cases[cid])
            check_casts_keep_states(cases[cid])

        tests["test_set_dtype"] = test_set_dtype
    if ids := pick(collection):

        @pytest.mark.parametrize("cid", ids)
        def test_collection(cid: str) -> None:
            check_collection(cases[cid], arithmetic=cid not in no_arithmetic)

        tests["test_collection"] = test_collection
    if ids := pick(invariances):

        @pytest.mark.parametrize("cid", ids)
        def test_invariances(cid: str) -> None:
            check_invariances(cases[cid])

        tests["test_invariances"] = test_invariances
    if ids := pick(group_invariances):

        @pytest.mark.parametrize("cid", ids)
        def test_group_invariances(cid: str) -> None:
            check_group_invariances(cases[cid])

        tests["test_group_invariances"] = test_group_invariances
    if ids := pick(device_path):

        @pytest.mark.parametrize("cid", ids)
        def test_device_path(cid: str) -> None:
            check_device_path(cases[cid], invariances=cid in pick(invariances))

        tests["test_device_path"] = test_device_path
    if ids := pick(ddp):

        @pytest.mark.ddp
        @pytest.mark.parametrize("empty_rank", [False, True], ids=["uneven", "empty-rank"])
        @pytest.mark.parametrize("cid", ids)
        def test_ddp(ddp_pool: Any, cid: str, empty_rank: bool) -> None:
            check_ddp(ddp_pool, module, cases[cid], empty_rank=empty_rank)

        tests["test_ddp"] = test_ddp
    if ddp_scenarios:
        chosen = {cid: cases[cid] for cid in ddp_scenarios}

        @pytest.mark.ddp
        def test_ddp_scenarios(ddp_pool: Any) -> None:
            check_ddp_scenarios(ddp_pool, module, chosen)

        tests["test_ddp_scenarios"] = test_ddp_scenarios
    return tests
