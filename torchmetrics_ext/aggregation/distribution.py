"""``Distribution``: the class twin of :mod:`torchmetrics_ext.functional.distribution` (same sketch, same kernels)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import as_values, check_numbers, exact_sum, plain_numbers
from torchmetrics_ext.functional.distribution import (
    _BAND_SHIFT,
    DEFAULT_PERCENTILES,
    SketchBatch,
    SketchSpec,
    _check_finite,
    _check_percentiles,
    _distribution_compute,
    _distribution_fold,
    _distribution_update,
    _magnitude_band,
    _no_scaled_sums,
    _sketch_index,
)
from torchmetrics_ext.metrics.base import _tag, one_task
from torchmetrics_ext.utilities.summation import compensated_add_

__all__ = ["Distribution"]

Values = float | int | Tensor | Sequence[float]


class Distribution(AggregationMetric[SketchBatch]):
    r"""Lifetime mean, min, max, std and percentiles of a stream of values, mergeable across ranks.

    .. math::
        \bar x = \frac{1}{n}\sum_i x_i,\quad
        s = \sqrt{\tfrac{1}{n-1}\big(\textstyle\sum_i x_i^2 - n\bar x^2\big)},\quad
        P_q = \text{np.percentile}(x, q) \text{ within relative error } \alpha

    Percentiles come from a log-bucket sketch (DDSketch-style, see
    :mod:`torchmetrics_ext.functional.distribution`): a fixed float64 vector of
    :math:`2B + 1` bucket counts, :math:`B = \lceil\log_\gamma \text{max\_value}\rceil -
    \lceil\log_\gamma \text{min\_value}\rceil + 1` per sign plus a zero bucket (4,839 buckets,
    38.7 kB with the defaults), that is summed across batches and ranks, so the percentiles of a DDP run are
    those of all ranks' data, not an average of per-rank percentiles (torchtune's approximation).

    Args:
        percentiles: percentiles in [0, 100] to report, named ``p05``, ``p50``, ``p95``, ``p99.9``,
            ``p99.99999``, ... (exact names, see :func:`~torchmetrics_ext.functional.distribution.percentile_key`).
        relative_accuracy: relative error bound :math:`\alpha` of the percentiles (default 1%).
        min_value: magnitudes below this count as 0 (absolute error below ``min_value``).
        max_value: magnitudes above this fall in the last bucket (no relative bound; estimates
            are still clipped to the exact max).
        validate_args: reject non-numbers and NaN/inf before any state changes.
        kwargs: TorchMetrics options.

    Returns:
        ``compute()`` returns a dict of float64 scalars: ``mean``, ``min``, ``max``, ``std``
        (sample std, ``ddof=1`` as ``torch.std``) and one entry per percentile.

    Raises:
        TypeError: if ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: on NaN/inf values or invalid sketch arguments.

    Note:
        States: count, sum, sum of squares, the scaled sums of batches of tiny or huge
        magnitudes (``scaled_sums``, four elements, see Range below), the running rounding
        errors of the three sums (``total_compensation``, ``total_sq_compensation``,
        ``scaled_sums_compensation``: all ``sum``), min
        (``min``), max (``max``) and the bucket counts (``sum``); constant memory, independent of
        the number of values (about 60 kB per metric with the defaults: the 38.7 kB of counts and
        the metric object; the counts' default for ``reset`` is one element, not a second copy).
        The sum and the sum of squares are compensated (Kahan-Neumaier: each update's rounding
        error is kept and added back at ``compute``; ``forward`` and ``merge_state`` join them the
        same way), so their error stays that of one update however many updates they collect
        (plain float64 running sums collect one rounding per update: at mean 1e5 and std 1, 20
        times the std's bound below after 20,000 updates of 8 values).
        The mean is exact up to float64 rounding (exactly rounded ``math.fsum`` sums for batches
        of plain values through :meth:`summarize`); min and max are exact. The std comes from the
        sum and sum of squares, which cancel when the mean is large relative to the spread
        (relative error about :math:`10^{-16} (\text{mean}/\text{std})^2`, after one update or
        many; subtract a common offset from the values when it matters); equal values give
        exactly 0. Inside a :class:`~torchmetrics_ext.Windowed` the lifetime is compensated too;
        the window is a fresh sum over the updates it holds (its error grows with their number,
        not with the run's length). A checkpoint written before the compensations or the scaled
        sums were kept loads them as zeros (the error it had collected stays). No value: every
        output ``nan``; one value, or a spread below ~1e-6 of the mean: ``std`` is ``nan`` (each
        with an ``UndefinedMetricWarning``; states cast to float32 with ``set_dtype`` round each
        update's sums to float32: ``nan`` below ~8e-3 of the mean, and the warning names float32).
        Range: any finite magnitude. A batch whose largest magnitude is below :math:`2^{-485}` (about
        1.0e-146) or above :math:`2^{485}` (about 1.0e146) adds the sums of its values times
        :math:`2^{600}` or :math:`2^{-600}` to ``scaled_sums``, where their squares neither underflow
        nor overflow (plain float64 squares do below ~1e-154 and above ~1e154); ``compute`` joins the
        three scales exactly (powers of two), so the mean and std of 1e-200- or 1e306-sized values are
        as accurate as those of values near 1.

    Example:
        >>> import torch
        >>> from torchmetrics_ext.aggregation import Distribution
        >>> metric = Distribution()
        >>> metric.update(torch.arange(1, 51))
        >>> metric.fold(metric.summarize(list(range(51, 101))))  # a batch of plain values
        >>> {k: round(v.item(), 1) for k, v in metric.compute().items()}  # np.percentile: 5.95, 50.5, 95.05
        {'mean': 50.5, 'min': 1.0, 'max': 100.0, 'std': 29.0, 'p05': 5.9, 'p50': 50.4, 'p95': 94.7}
    """

    is_differentiable = False
    higher_is_better = None
    _refused_options: ClassVar[tuple[str, ...]] = ("num_tasks",)  # no task dimension (one_task)
    full_state_update: bool = False
    count: Tensor
    total: Tensor
    total_sq: Tensor
    scaled_sums: Tensor
    min_value: Tensor
    max_value: Tensor
    bucket_counts: Tensor
    total_compensation: Tensor
    total_sq_compensation: Tensor
    scaled_sums_compensation: Tensor
    # compensation state -> the running sum whose rounding errors it keeps (Windowed folds the
    # lifetime's sums through compensated_add_ when the wrapped metric declares them)
    _compensated_sums: ClassVar[dict[str, str]] = {
        "total_compensation": "total",
        "total_sq_compensation": "total_sq",
        "scaled_sums_compensation": "scaled_sums",
    }

    def __init__(
        self,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-9,
        max_value: float = 1e12,
        *,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(one_task(self, kwargs), validate_args=validate_args, **kwargs)
        self.spec = SketchSpec(relative_accuracy, min_value, max_value)
        self.percentiles = _check_percentiles(percentiles)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total_sq", default=zero.clone(), dist_reduce_fx="sum")
        # the sums of batches of magnitudes below 2**-485 / above 2**485, scaled (see SketchBatch);
        # checkpoints written before they were kept load them as zeros (their sums are all plain)
        self.add_state("scaled_sums", default=_no_scaled_sums(zero), dist_reduce_fx="sum")
        self._derived_states["scaled_sums"] = (_no_scaled_sums, ("total",))
        # the rounding errors of the running sums (see compensated_add_): sum-reducible like
        # them; checkpoints written before they were kept load them as zeros
        for name, source in self._compensated_sums.items():
            self.add_state(name, default=torch.zeros_like(getattr(self, source)), dist_reduce_fx="sum")
            self._derived_states[name] = (torch.zeros_like, (source,))
        self._derived_states["scaled_sums_compensation"] = (_no_scaled_sums, ("total",))
        self.add_state("min_value", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("max_value", default=torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")
        # the buckets mean other ranges under another sketch (two of them may have as many buckets):
        # a non-default sketch names the counts, so compute groups, merges and checkpoints of
        # another sketch never mix them
        default = SketchSpec()
        tag = "_".join(
            f"{short}{_tag(getattr(self.spec, name))}"
            for name, short in (("relative_accuracy", "acc"), ("min_value", "min"), ("max_value", "max"))
            if getattr(self.spec, name) != getattr(default, name)
        )
        self._counts_state = self._setting_state_name("bucket_counts", tag)
        self.add_state(
            self._counts_state, default=torch.zeros(self.spec.size, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def _checkpoint_settings(self) -> dict[str, Any]:
        """The sketch's geometry (what its bucket counts mean), besides the tasks."""
        return {
            **super()._checkpoint_settings(),
            "relative_accuracy": self.spec.relative_accuracy,
            "min_value": self.spec.min_value,
            "max_value": self.spec.max_value,
        }

    def _validate(self, value: Values) -> None:
        _check_finite("value", as_values("value", value))

    def update(self, value: Values) -> None:
        """Add ``value`` (a number, a sequence of numbers or a tensor of any shape)."""
        if self._check_inputs:
            self._validate(value)
        values = torch.as_tensor(value, dtype=torch.float64, device=self.device).reshape(-1)
        if values.numel():
            self._fold(_distribution_update(values, self.spec))

    def summarize(self, values: Sequence[Any]) -> SketchBatch:
        """Exact (``math.fsum``) moments, extremes and the sketch's bucket index of a batch of plain numbers.

        Any finite magnitude is accepted: a batch whose largest magnitude is below :math:`2^{-485}`
        or above :math:`2^{485}` is summed scaled by :math:`2^{600}` or :math:`2^{-600}` (its band,
        see :class:`~torchmetrics_ext.functional.distribution.SketchBatch`).

        Raises:
            TypeError: on a value that is not a number.
            ValueError: on NaN/inf.
        """
        values = plain_numbers(values)
        try:
            total = exact_sum(values)  # checks every value
        except ValueError:
            check_numbers(values)  # a bad value raises; else the plain sum overflowed: band 1, summed below
            total = math.inf
        floats = list(map(float, values))
        if not floats:
            return SketchBatch(0.0, 0.0, 0.0, math.inf, -math.inf, torch.zeros(0, dtype=torch.long, device=self.device))
        low, high = min(floats), max(floats)
        band = _magnitude_band(max(high, -low))
        scaled = [x * 2.0 ** (-_BAND_SHIFT * band) for x in floats] if band else floats
        if band:
            total = math.fsum(scaled)
        total_sq = math.fsum(map(mul, scaled, scaled))
        index = _sketch_index(torch.tensor(floats, dtype=torch.float64, device=self.device), self.spec)
        return SketchBatch(float(len(floats)), total, total_sq, low, high, index, band)

    def _sketch_states(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(count, total, total_sq, scaled_sums, min, max, bucket counts)``: the states in the kernels' order."""
        counts = getattr(self, self._counts_state)
        return self.count, self.total, self.total_sq, self.scaled_sums, self.min_value, self.max_value, counts

    def _compensations(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.total_compensation, self.total_sq_compensation, self.scaled_sums_compensation

    def _fold(self, summary: SketchBatch) -> None:
        _distribution_fold(*self._sketch_states(), summary, self._compensations())

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """TorchMetrics' join of another state into this one (``forward``, ``merge_state``), sums compensated.

        The plain ``incoming + local`` of the sum and the sum of squares would add one rounding per
        ``forward``; they are joined with :func:`~torchmetrics_ext.utilities.summation.compensated_add_`
        instead (the compensations themselves add up as the other ``sum`` states do).
        """
        local = [getattr(self, total) for total in self._compensated_sums.values()]
        super()._reduce_states(incoming_state)
        sums = [incoming_state[total].clone() for total in self._compensated_sums.values()]
        compensated_add_(sums, [getattr(self, error) for error in self._compensated_sums], local)
        for total, value in zip(self._compensated_sums.values(), sums, strict=True):
            setattr(self, total, value)

    def compute(self) -> dict[str, Tensor]:
        """``{"mean", "min", "max", "std", "p05", "p50", "p95"}`` (per ``percentiles``) of everything seen."""
        states = self._sketch_states()
        return _distribution_compute(*states, self.percentiles, self.spec, compensations=self._compensations())
