"""``Distribution``: the class twin of :mod:`torchmetrics_ext.functional.distribution` (same sketch, same kernels)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import mul, sub
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import as_values, check_numbers, exact_sum, plain_numbers
from torchmetrics_ext.functional.distribution import (
    _BAND_SHIFT,
    _ROW_PARTS,
    DEFAULT_PERCENTILES,
    SketchBatch,
    SketchSpec,
    _check_finite,
    _check_percentiles,
    _distribution_compute,
    _distribution_fold,
    _distribution_update,
    _distribution_values,
    _host_shift,
    _magnitude_band,
    _no_scaled_sums,
    _rebased,
    _reshift_parts,
    _sketch_index,
    _SketchStates,
    _stat_names,
    _state_parts,
    _warn_range,
    _window_moments,
)
from torchmetrics_ext.metrics.base import _tag, one_task
from torchmetrics_ext.utilities.summation import compensated_add_

__all__ = ["Distribution"]

Values = float | int | Tensor | Sequence[float]
# the states of the sums about a shift, with it and the count (the parts a sketch row holds: _ROW_PARTS)
_SHIFTED_STATES = ("count", "shift", *_ROW_PARTS)


class Distribution(AggregationMetric[SketchBatch]):
    r"""Lifetime mean, min, max, std and percentiles of a stream of values, mergeable across ranks.

    .. math::
        \bar x = c + \frac{1}{n}\sum_i (x_i - c),\quad
        s = \sqrt{\tfrac{1}{n-1}\big(\textstyle\sum_i (x_i - c)^2 - n(\bar x - c)^2\big)},\quad
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
        relative_accuracy: relative error bound :math:`\alpha` of the percentiles (default 1%):
            :math:`|P_q - \text{np.percentile}(x, q)| \le \alpha\,((1-f)|x_{(j)}| + f|x_{(j+1)}|)` with
            :math:`j + f = q(n-1)/100`, reached by values at a bucket's edge; merging ranks adds no
            error (summed counts: the single-process percentiles, bit for bit).
        min_value: magnitudes below this count as 0 (absolute error below ``min_value``).
        max_value: magnitudes above this fall in the last bucket (no relative bound; estimates
            are still clipped to the exact max). Values beyond either end that a percentile may read
            warn at ``compute`` (:class:`~torchmetrics_ext.utilities.warnings.SketchRangeWarning`,
            once until ``reset``), naming the ``min_value``/``max_value`` that cover them.
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
        ``scaled_sums_compensation``: all ``sum``), the shift (``shift``, see below), min
        (``min``), max (``max``) and the bucket counts (``sum``); constant memory, independent of
        the number of values (about 60 kB per metric with the defaults: the 38.7 kB of counts and
        the metric object; the counts' default for ``reset`` is one element, not a second copy).
        The sum and the sum of squares are compensated (Kahan-Neumaier: each update's rounding
        error is kept and added back at ``compute``; ``forward`` and ``merge_state`` join them the
        same way), so their error stays that of one update however many updates they collect
        (plain float64 running sums collect one rounding per update: at mean 1e5 and std 1, 20
        times the std's bound below after 20,000 updates of 8 values).
        The sums are of :math:`x_i - c`, where the shift :math:`c` (state ``shift``, reduced with
        ``max`` once every part is brought to one) is the first value seen, kept until ``reset``
        (0 when that first batch has values of both signs or a zero). So the std of values with a
        large common offset is right (1e7, 1e7+1, ..., 1e7+9: 3.0277 as ``statistics.stdev``;
        1e9 + ``arange(100)``, 1e15 + a spread of 100), and its relative error, about
        :math:`10^{-16} ((\bar x - c)/s)^2`, stays below about :math:`2n \cdot 10^{-16}` since
        :math:`c` lies between the min and the max. Each :math:`x_i - c` is rounded once (exact
        within a factor 2 of :math:`c`): the mean is within about :math:`2^{-53}` of the mean of
        :math:`|x_i - c|` (exactly rounded ``math.fsum`` sums for batches of plain values through
        :meth:`summarize`); min and max are exact. ``merge_state``, ``forward`` and a DDP sync
        bring parts about different shifts to one exactly (fractions, one rounding; a rank without
        values takes it as it is). Equal values give exactly 0. Inside a
        :class:`~torchmetrics_ext.Windowed` the lifetime's shift is kept for good once chosen,
        ``-inf`` until then, and the lifetime folds every batch about it (compensated); the ring
        keeps every update's count, shift and sums, each update's about its own first value, and
        the window joins them about its oldest update's shift when it is read
        (:meth:`_window_states`): the window's std has the bound of sums about one of its own
        values, whatever the lifetime's first value (an outlier first record of 1e9, then values
        near 100: ``statistics.stdev``'s). The window is a fresh sum over the updates it holds (its
        error grows with their number, not with the run's length). A checkpoint written before the compensations,
        the scaled sums or the shift were kept loads them as zeros (the error it had collected
        stays; its sums stay about 0 and give exactly the values they gave; so do a ``Windowed``'s
        written before it kept a shift, checkpoint or pickle; one saved without values, or once
        reset, chooses its shift from its first values). No value: every output ``nan``; one value,
        or a spread below the rounding of the sums: ``std`` is ``nan`` (each with an
        ``UndefinedMetricWarning``; states cast to float32 with ``set_dtype`` round each update's
        shifted sums to float32, and the warning names float32).
        Range: any finite magnitude. A batch whose largest magnitude is below :math:`2^{-485}` (about
        1.0e-146) or above :math:`2^{485}` (about 1.0e146) adds the sums of its values times
        :math:`2^{600}` or :math:`2^{-600}` to ``scaled_sums``, where their squares neither underflow
        nor overflow (plain float64 squares do below ~1e-154 and above ~1e154); ``compute`` joins the
        three scales exactly (powers of two), so the mean and std of 1e-200- or 1e306-sized values are
        as accurate as those of values near 1.

    Examples:
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
    _dict_value_entry = '"mean"'  # a dict value: no metric arithmetic (TensorArithmetic)
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
    shift: Tensor
    # whether the shift, once chosen, is kept whatever the count (-inf until then): a Windowed's lifetime,
    # window and per-update states (each update's shift its own, chosen from -inf; the lifetime's for good)
    _pinned: bool = False
    # the states whose ring identity is the metric's default (-inf: no shift yet); a Windowed of an
    # earlier version's ring (no raw states) starts each update from the lifetime's values of them
    _window_pinned_states: ClassVar[tuple[str, ...]] = ("shift",)
    # the states a Windowed's ring keeps as each update's own, about the update's own shift, joined by
    # `_window_states` when the window is read (plain addition would join sums about different shifts)
    _window_raw_states: ClassVar[tuple[str, ...]] = _SHIFTED_STATES
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
        # and validate_args, in memory only (see TaskMetric._unchecked_state_name): an unvalidated one
        # first in a compute group took the NaN/inf a validated one refuses alone
        self._counts_state = self._unchecked_state_name(self._setting_state_name("bucket_counts", tag))
        self.add_state(
            self._counts_state, default=torch.zeros(self.spec.size, dtype=torch.float64), dist_reduce_fx="sum"
        )
        # the value the sums are taken about (the first value seen, kept until reset): merges and
        # syncs bring every part to one shift first, so "max" of equal shifts is that shift;
        # checkpoints written before it was kept load it as 0 (their sums are of the values)
        self.add_state("shift", default=zero.clone(), dist_reduce_fx="max")
        self._derived_states["shift"] = (torch.zeros_like, ("total",))

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
            batch = _distribution_update(values, self.spec, self.count, self.shift, pinned=self._pinned)
            lifetime = self.__dict__.get("_window_lifetime")
            if lifetime is not None:  # a Windowed's update: the batch about its lifetime's shift too
                self.__dict__["_lifetime_batch"] = _rebased(values, batch, lifetime.count, lifetime.shift)
            self._fold(batch)

    def _window_states(self, rows: dict[str, Tensor]) -> dict[str, Tensor]:
        """The window's shift and sums from a ``Windowed`` ring's rows of :attr:`_window_raw_states`.

        Each update's sums are about its own shift (its first value); they are brought to the shift of
        the oldest one and added (:func:`~torchmetrics_ext.functional.distribution._window_moments`),
        so the window's std has the bound of sums about one of its values, not about the lifetime's
        first value (a first record of 1e9, then values near 100, had lost the window's std).
        """
        return {name: value.to(getattr(self, name).dtype) for name, value in _window_moments(rows).items()}

    def summarize(self, values: Sequence[Any]) -> SketchBatch:
        """Exact (``math.fsum``) moments, extremes and the sketch's bucket index of a batch of plain numbers.

        Any finite magnitude is accepted: a batch whose largest magnitude is below :math:`2^{-485}`
        or above :math:`2^{485}` is summed scaled by :math:`2^{600}` or :math:`2^{-600}` (its band,
        see :class:`~torchmetrics_ext.functional.distribution.SketchBatch`).

        Raises:
            TypeError: on a value that is not a number.
            ValueError: on NaN/inf.
        """
        try:
            total = exact_sum(values)  # checks every value
        except ValueError:
            # a bad value raises; else the plain sum overflowed: band 1, summed below
            check_numbers(plain_numbers(values))
            total = math.inf
        try:
            floats = list(map(float, values))
        except TypeError:  # NumPy refuses float() of a one-element array with dimensions: its element
            floats = list(map(float, plain_numbers(values)))
        if not floats:
            return SketchBatch(0.0, 0.0, 0.0, math.inf, -math.inf, torch.zeros(0, dtype=torch.long, device=self.device))
        low, high = min(floats), max(floats)
        # the state's shift once it holds values (pinned: once chosen), else this batch's (see _host_shift)
        count, state_shift = self.count, self.shift
        if self._pinned:
            shift = _host_shift(floats, count, state_shift, low, high, pinned=True)
        else:
            shift = state_shift.item() if count.item() > 0 else _host_shift(floats, count, state_shift, low, high)
        band = _magnitude_band(max(high - shift, shift - low))
        scaled = floats
        if band > 0:  # the scaled values minus the scaled shift: no overflow
            scaled = list(map(sub, map(mul, floats, repeat(2.0**-_BAND_SHIFT)), repeat(shift * 2.0**-_BAND_SHIFT)))
        elif shift:
            scaled = [x - shift for x in floats]
        if band < 0:
            scaled = list(map(mul, scaled, repeat(2.0**_BAND_SHIFT)))
        if band or shift:
            total = math.fsum(scaled)
        total_sq = math.fsum(map(mul, scaled, scaled))
        index = _sketch_index(torch.tensor(floats, dtype=torch.float64, device=self.device), self.spec)
        return SketchBatch(float(len(floats)), total, total_sq, low, high, index, band, shift)

    def _sketch_states(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(count, total, total_sq, scaled_sums, min, max, bucket counts)``: the states in the kernels' order."""
        counts = getattr(self, self._counts_state)
        return self.count, self.total, self.total_sq, self.scaled_sums, self.min_value, self.max_value, counts

    def _compensations(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.total_compensation, self.total_sq_compensation, self.scaled_sums_compensation

    def _fold(self, summary: SketchBatch) -> None:
        _distribution_fold(*self._sketch_states(), summary, self._compensations(), self.shift)

    def _sums(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.total, self.total_sq, self.scaled_sums

    def _enter_window(self) -> None:
        """Called by :class:`~torchmetrics_ext.Windowed` on the metric it wraps: keep one shift for good.

        The lifetime's shift is the first value seen (the first batch's rule), kept until ``reset``
        whatever the count, and ``-inf`` (the default, the ring's identity) until then; each update
        of the ring starts from ``-inf`` and so takes its own first value (:attr:`_window_raw_states`),
        and the lifetime folds the batch about its own shift. A metric wrapped with values keeps its
        shift (and its sums).
        """
        self.__dict__["_pinned"] = True
        self._defaults["shift"] = torch.full_like(self.shift, -math.inf)
        if self.count.item() == 0:
            self.shift.fill_(-math.inf)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load the states; a pinned metric (a ``Windowed``'s) loaded without values chooses its shift afresh.

        It holds the shift ``reset`` gives it (``-inf``: none yet), so its first values choose one.
        A checkpoint of an empty ``Windowed`` written before the window kept a shift holds 0 there
        (saved, or derived for a checkpoint without the state): kept, it pinned every later sum
        about 0, and values with a large common offset (1e9 + N(0, 3)) had a ``nan`` std.
        """
        super()._load_from_state_dict(state_dict, prefix, *args)
        default = self._defaults["shift"]
        if self._pinned and isinstance(default, Tensor) and self.count.item() == 0:
            self.shift.copy_(default)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickle's; one pickled inside a ``Windowed`` by an earlier version (``_shifts=False``) is made a current one.

        Its sums are about 0 and its shift's default is 0: the values it holds stay about 0 (pinned, as
        checkpoints of that time load), but ``reset`` gives it no shift (``-inf``, see :meth:`_enter_window`),
        nor does loading it empty, so its next first value chooses one: kept at 0, values with a large
        common offset (1e9 + N(0, 3)) had a ``nan`` std for the rest of the run.
        """
        unshifted = state.pop("_shifts", True) is False  # pickled inside a Windowed by an earlier version
        super().__setstate__(state)
        if unshifted:
            self._enter_window()

    def _align_shift(self, target: float) -> None:
        """Re-express this metric's sums about ``target`` (exactly, on the host) and make it the shift."""
        n, shift = self.count.item(), self.shift.item()
        if n > 0 and shift != target:
            parts = _reshift_parts(_state_parts(self._sums(), self._compensations()), n, shift, target)
            _write_parts(self._sums(), self._compensations(), parts)
        self.shift.fill_(target)

    def _merge_shift(self, incoming_state: dict[str, Any]) -> dict[str, Any]:
        """Bring this metric's sums and ``incoming_state``'s to one shift (this metric's once it holds values).

        Returns the incoming states with their sums re-shifted (new tensors; the caller's are untouched).
        """
        theirs = incoming_state.get("shift")
        n_theirs = incoming_state["count"].item()
        s_theirs = 0.0 if theirs is None else theirs.item()
        mine = self.shift.item()
        held = math.isfinite(mine) if self._pinned else self.count.item() > 0
        target = mine if held or n_theirs == 0 else s_theirs
        self._align_shift(target)
        out = dict(incoming_state)
        if n_theirs > 0 and s_theirs != target:
            sums = [incoming_state[name].clone() for name in ("total", "total_sq", "scaled_sums")]
            errors = [incoming_state[name].clone() for name in self._compensated_sums]
            parts = _reshift_parts(_state_parts(sums, errors), n_theirs, s_theirs, target)
            _write_parts(sums, errors, parts)
            out.update(zip(("total", "total_sq", "scaled_sums"), sums, strict=True))
            out.update(zip(self._compensated_sums, errors, strict=True))
        out["shift"] = torch.full_like(self.shift, target)
        return out

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """TorchMetrics' join of another state into this one (``forward``, ``merge_state``), sums compensated.

        The plain ``incoming + local`` of the sum and the sum of squares would add one rounding per
        ``forward``; they are joined with :func:`~torchmetrics_ext.utilities.summation.compensated_add_`
        instead (the compensations themselves add up as the other ``sum`` states do).
        """
        incoming_state = self._merge_shift(incoming_state)
        local = [getattr(self, total) for total in self._compensated_sums.values()]
        super()._reduce_states(incoming_state)
        sums = [incoming_state[total].clone() for total in self._compensated_sums.values()]
        compensated_add_(sums, [getattr(self, error) for error in self._compensated_sums], local)
        for total, value in zip(self._compensated_sums.values(), sums, strict=True):
            setattr(self, total, value)

    def compute(self) -> dict[str, Tensor]:
        """``{"mean", "min", "max", "std", "p05", "p50", "p95"}`` (per ``percentiles``) of everything seen.

        Warns (:class:`~torchmetrics_ext.utilities.warnings.SketchRangeWarning`, once until ``reset``)
        where values outside ``[min_value, max_value]`` may make the percentiles far off.
        """
        return _distribution_compute(self._all_states(), self.percentiles, self.spec, on_range=self._range_warning())

    def _logged_value(self) -> dict[str, float]:
        """:meth:`compute`'s values as host floats (the aggregator's logging: no tensor per value)."""
        if type(self).compute is not Distribution.compute:  # a subclass's own compute is what it logs
            return super()._logged_value()
        values = _distribution_values(self._all_states(), self.percentiles, self.spec, on_range=self._range_warning())
        return dict(zip(_stat_names(self.percentiles), values, strict=True))

    def _range_warning(self) -> Callable[[str, str], None] | None:
        """What :func:`_distribution_values` calls for values outside the range: a warning, once until ``reset``."""
        if self.__dict__.get("_range_warned", False):
            return None

        def warn_once(metric: str, note: str) -> None:
            self.__dict__["_range_warned"] = True
            _warn_range(metric, note)

        return warn_once

    def reset(self) -> None:
        """TorchMetrics' ``reset``; the next values outside the sketch's range warn again."""
        self.__dict__.pop("_range_warned", None)
        super().reset()

    def _all_states(self) -> _SketchStates:
        """The sketch's states with the compensations and the shift (what compute reads)."""
        return _SketchStates(*self._sketch_states(), self._compensations(), self.shift)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        """TorchMetrics' sync, every rank's sums brought to one shift before they are added (:meth:`_fix_gathered`)."""
        self.__dict__["_gathered_parts"] = {}
        try:
            super()._sync_dist(dist_sync_fn, process_group)
        finally:
            self.__dict__["_gathered_parts"] = {}

    def _fix_gathered(self, name: str, per_rank: list[Tensor]) -> list[Tensor]:
        """Collect the gathered sums; once all are in, re-shift every rank's to the first rank with values.

        TorchMetrics gathers every state before it reduces any, so the per-rank lists are
        rewritten in place here; a rank without values takes the shift as it is.
        """
        per_rank = super()._fix_gathered(name, per_rank)
        pending = self.__dict__.setdefault("_gathered_parts", {})
        if name in _SHIFTED_STATES:
            pending[name] = per_rank
            if len(pending) == len(_SHIFTED_STATES):
                _common_shift(pending)
        return per_rank


def _write_parts(sums: Sequence[Tensor], errors: Sequence[Tensor], parts: Sequence[float]) -> None:
    """Write parts (:func:`~torchmetrics_ext.functional.distribution._reshift_parts`) into sums and errors, in place."""
    total, total_sq, scaled = sums
    e1, e2, e3 = errors
    total.fill_(parts[0])
    total_sq.fill_(parts[1])
    scaled.copy_(torch.tensor(parts[2:6], dtype=scaled.dtype).view(scaled.shape))
    e1.fill_(parts[6])
    e2.fill_(parts[7])
    e3.copy_(torch.tensor(parts[8:12], dtype=e3.dtype).view(e3.shape))


def _common_shift(gathered: dict[str, list[Tensor]]) -> None:
    """Re-shift every rank's gathered sums (in place in the lists) to the shift of the first rank with values.

    Without values on any rank the states are left as they are (every sum is 0).
    """
    counts = [c.item() for c in gathered["count"]]
    shifts_seen = [s.item() for s in gathered["shift"]]
    holding = [s for n, s in zip(counts, shifts_seen, strict=True) if n > 0]
    if not holding:
        return
    target = holding[0]
    sum_names, error_names = _SHIFTED_STATES[2:5], _SHIFTED_STATES[5:]
    for rank, (n, shift) in enumerate(zip(counts, shifts_seen, strict=True)):
        if n > 0 and shift != target:
            sums = [gathered[name][rank].clone() for name in sum_names]
            errors = [gathered[name][rank].clone() for name in error_names]
            parts = _reshift_parts(_state_parts(sums, errors), n, shift, target)
            _write_parts(sums, errors, parts)
            for name, value in zip((*sum_names, *error_names), (*sums, *errors), strict=True):
                gathered[name][rank] = value
        gathered["shift"][rank] = torch.full_like(gathered["shift"][rank], target)
