"""``Segmented``: any sum-statistic metric computed per integer segment id in one vectorised update.

TorchRec has a segmented NE only; here every metric whose states are per-task sums of
per-sample terms (NE, log loss, calibration, CTR, the averages, MSE/MAE/R², precision/recall
at a threshold, the counters, ...) can be split by segment: NE per country, calibration per
surface, CTR per position. The wrapper asks the metric for its per-sample terms (its kernel with every
``(task, row)`` pair as a task of one sample, per-task settings such as ``TensorWeightedAverage``'s
``weighted`` flags applied first), adds them into ``(T, S)`` states with one ``scatter_add_``, and
hands the ``(T·S,)`` sums back to the metric's own compute. Nothing loops over segments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_sum

from torchmetrics_ext.functional.auc.binary import _task_offsets
from torchmetrics_ext.metrics._arithmetic import keep_direction_and_bounds
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.metrics.pointwise import _PointwiseMetric, add_later_states
from torchmetrics_ext.utilities.checks import (
    Bounds,
    check_int,
    check_state_dtype,
    check_tensor,
    checked_bounds,
    read_along,
)
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.plot import indexed_series
from torchmetrics_ext.utilities.warnings import flat_entries_as
from torchmetrics_ext.wrappers._options import wrapper_options
from torchmetrics_ext.wrappers.windowed import Windowed

__all__ = ["Segmented"]


def _update_inputs(cls: type[Metric]) -> tuple[str, ...]:
    """Names of the positional parameters of ``cls.update`` (``self`` not counted), in order."""
    parameters = list(inspect.signature(cls.update).parameters.values())[1:]
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


# the ids tensor a caller has just checked with _unchecked_ids_fit for every Segmented metric it feeds (a module's
# step): those metrics skip their own pass over it
_IDS_FIT: ContextVar[Tensor | None] = ContextVar("segment_ids_fit", default=None)


@contextmanager
def _ids_known_to_fit(ids: Tensor) -> Iterator[None]:
    """Within the block, unvalidated Segmented metrics fed this very ``ids`` tensor do not check it again.

    For a caller that checked it (:func:`_unchecked_ids_fit`) against the smallest ``num_segments`` of
    the metrics it feeds: :class:`~torchmetrics_ext.RecMetricModule`, once per step.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR, Segmented
        >>> ids = torch.tensor([0, 1, 1])
        >>> metrics = [Segmented(CTR(validate_args=False), 2), Segmented(CTR(validate_args=False), 3)]
        >>> assert _unchecked_ids_fit(ids, 2)  # against the smallest num_segments, once
        >>> with _ids_known_to_fit(ids):
        ...     for metric in metrics:
        ...         metric.update(torch.tensor([0.2, 0.6, 0.9]), torch.tensor([1, 0, 1]), segments=ids)
        >>> metrics[0].compute()
        tensor([1.0000, 0.5000], dtype=torch.float64)
    """
    token = _IDS_FIT.set(ids)
    try:
        yield
    finally:
        _IDS_FIT.reset(token)


def _unchecked_ids_fit(ids: Tensor, num_segments: int) -> bool:
    """Whether unchecked integer ``ids`` on the CPU all lie in ``[0, num_segments)``, read without a value read.

    An ``index_select`` from a zero-stride probe of ``num_segments`` entries raises on the CPU for
    an id outside (and writes nothing): the check ``validate_args=False`` skips, at the cost of one
    pass over the ids and no host read on the happy path. On the device path (another device, or
    forced: :func:`~torchmetrics_ext.utilities.device.on_device_path`) ``True``: a device-side assert
    of the scatter cannot be caught, nothing is checked there.

    Examples:
        >>> import torch
        >>> _unchecked_ids_fit(torch.tensor([0, 2, 1]), 3), _unchecked_ids_fit(torch.tensor([0, 3]), 3)
        (True, False)
        >>> _unchecked_ids_fit(torch.tensor([-1]), 3)
        False
    """
    if on_device_path(ids) or ids.numel() == 0:
        return True
    flat = ids.reshape(-1)
    if flat.dtype not in (torch.int32, torch.int64):  # index_select's index dtypes
        flat = flat.to(torch.int64)
    try:
        torch.zeros((), dtype=torch.bool).expand(num_segments).index_select(0, flat)
    except (IndexError, RuntimeError):
        return False
    return True


class Segmented(TaskMetric):
    r"""Compute a sum-statistic metric separately for each of ``num_segments`` integer segment ids.

    ``update`` takes the wrapped metric's own ``update`` arguments, in its order and under its
    names, plus ``segments`` (by keyword, or positionally after them): ``update(preds, target,
    weights, segments=...)`` for most metrics, ``update(values, weights, segments=...)`` for
    :class:`~torchmetrics_ext.TensorWeightedAverage`. ``segments`` are integer ids in
    ``[0, num_segments)``, shape ``(N,)`` or ``(1, N)`` (shared by every task) or ``(T, N)``. ``compute()``
    returns ``(S,)`` for a one-task metric and ``(T, S)`` otherwise.

    State: every state of the wrapped metric with a trailing segment dimension, float64
    ``(T, S)`` sums (constant memory in the number of rows), synced with ``sum``.

    Args:
        metric: a metric whose states are per-task sums of per-sample terms (the pointwise
            family, the counters, the NE variants, R²/NMSE). Its settings (``eta``,
            ``threshold``, ``from_logits``, ``num_tasks``, ``validate_args``, per-task ones such
            as ``TensorWeightedAverage(weighted=[...])``) apply unchanged.
        num_segments: number of segments ``S``.
        kwargs: TorchMetrics options (``sync_on_compute``, ``dist_sync_on_step``, ``dist_sync_fn``,
            ``distributed_available_fn``, ``process_group``, ``compute_on_cpu``,
            ``compute_with_cache``). Segmented holds the states and syncs them; **one rule** (as
            :class:`~torchmetrics_ext.Windowed`'s): an option given here is Segmented's, an option
            not given here is ``metric``'s. So ``Segmented(CTR(sync_on_compute=False), S)`` and
            ``Segmented(CTR(), S, sync_on_compute=False)`` both skip the sync, and
            ``Segmented(CTR(dist_sync_on_step=True), S)``'s ``forward`` returns synced batch values.

    Raises:
        TypeError: if ``metric`` does not hold per-task sum statistics (AUC's sorted scores,
            ranking rows, binned histograms and quantile sketches are not per-task sums).
        ValueError: for a bad ``num_segments``, two different process groups (``metric``'s and
            ``process_group``), or (in ``update``) segment ids outside ``[0, num_segments)`` (with
            ``validate_args=False`` too, on the CPU: see the note), not of shape ``(N,)`` or
            ``(T, N)``, or not on ``preds``' device.
        TypeError: ``num_tasks`` or ``validate_args`` given to Segmented (they are the wrapped
            metric's), or (in ``update``) segment ids that are not an integer tensor (with
            ``validate_args=False`` too: the dtype is host metadata, no value is read), an argument the
            wrapped metric's ``update`` does not take (a ``target`` for
            ``TensorWeightedAverage``), or missing ``segments``.

    Note:
        A segment that saw no data is undefined for ratio metrics (``nan`` with the metric's
        ``UndefinedMetricWarning``, naming ``segment(s) [1]`` for one task and
        ``(task, segment) [(0, 1)]`` otherwise);
        counters report 0 there.

        With the wrapped metric's ``validate_args=False`` the ids' values are not validated (their
        type and dtype are: a float or bool tensor is refused, never cast) and must lie in
        ``[0, num_segments)``: an id outside has no segment to go to (no natural answer). On the
        CPU such a batch is still refused with a ``ValueError`` naming ``segments`` and
        ``num_segments``, before anything is added (one pass over the ids, no value read unless
        refused); on CUDA it is a device-side assert of the scatter, which cannot be caught and
        ends the process's CUDA context (validate the ids there, or keep ``validate_args=True``).

        Host reads: none in ``update`` with ``validate_args=False``; with validation one per step,
        the ids' bounds read in the same copy as the wrapped metric's inputs (and remembered for
        the ids tensor on the device path). In a ``MetricCollection`` (which runs its metrics in
        sorted key order) a metric that does not take the ids and runs before this one reads the
        inputs first, and the ids then take a read of their own.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR, Segmented
        >>> ctr_by_country = Segmented(CTR(), num_segments=3)
        >>> preds = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        >>> target = torch.tensor([1, 0, 1, 1, 0, 0])
        >>> ctr_by_country.update(preds, target, segments=torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> ctr_by_country.compute()
        tensor([0.5000, 1.0000, 0.0000], dtype=torch.float64)
    """

    full_state_update: bool = False
    is_differentiable = False  # that of the wrapped metric, per instance
    _keeps_value_shape = True  # (S,) also for one segment
    higher_is_better = None  # that of the wrapped metric, per instance
    _refused_options: ClassVar[tuple[str, ...]] = ("num_tasks", "validate_args")  # the wrapped metric's
    value_ndim = 1  # one value per segment

    def __init__(self, metric: TaskMetric, num_segments: int, **kwargs: Any) -> None:
        if isinstance(metric, type):
            raise WrongTypeError(
                f"Expected `metric` to be a metric instance, got the class {metric.__name__}: "
                f"Segmented({metric.__name__}(...), num_segments)."
            )
        if not isinstance(metric, _PointwiseMetric):
            why = (
                "wrap the inner metric once (Windowed(Segmented(metric, S), n) gives windows of segments)"
                if isinstance(metric, (Segmented, Windowed))
                else "its states are not per-task sums of the pointwise kind Segmented splits by segment id"
            )
            raise WrongTypeError(
                "Expected `metric` to hold per-task sum statistics (a pointwise, counter, NE-variant or "
                f"regression metric), got {type(metric).__name__}: {why}."
            )
        not_sums = [name for name in metric._state_keys if metric._reductions[name] is not dim_zero_sum]
        if not_sums:
            raise WrongTypeError(
                f"Expected `metric` states reduced with 'sum', got {type(metric).__name__} with {not_sums} reduced "
                "otherwise."
            )
        num_segments = check_int("num_segments", num_segments, 1)
        own = sorted(set(kwargs) & {"num_tasks", "validate_args"})
        if own:
            raise WrongTypeError(
                f"Segmented takes {own} from the wrapped metric: set them there, e.g. "
                f"Segmented({type(metric).__name__}({own[0]}=...), num_segments)."
            )
        # Segmented holds the states: it syncs with the options given to it, else the metric's
        super().__init__(
            metric.num_tasks, validate_args=metric.validate_args, **wrapper_options(metric, kwargs, "Segmented")
        )
        self.metric = metric
        self.num_segments = num_segments
        # the metric's kernels: gradients flow where its do (TorchMetrics guards the class constant)
        object.__setattr__(self, "is_differentiable", metric.is_differentiable)
        # and a value is better higher where the metric's is (MetricTracker infers `maximize` from it), within its
        # plot bounds
        keep_direction_and_bounds(self, metric)
        # update's inputs: the wrapped metric's own (names and order), then the segment ids
        self._input_names = (*_update_inputs(type(metric)), "segments")
        self._state_keys = metric._state_keys
        for name in self._state_keys:
            self.add_state(
                name, default=torch.zeros(self.num_tasks, num_segments, dtype=torch.float64), dist_reduce_fx="sum"
            )
        # the states are the metric's: so are their former names and the states derived at load
        # from checkpoints written before them
        self._renamed_states.update(metric._renamed_states)
        self._former_patterns.extend(metric._former_patterns)
        self._derived_states.update(metric._derived_states)
        self._default_settings_names.update(metric._default_settings_names)
        self._saved_state_names.update(metric._saved_state_names)  # named after validate_args in memory only

    def _settings_text(self) -> str:
        """`` (metric=CTR, num_tasks=1, num_segments=3)``: the settings a state of another shape is told against.

        ``num_segments`` sizes every state but is no recorded setting (the shapes show it): messages
        name it, and the wrapped metric, so a checkpoint of another segment count says so.
        """
        settings = {**self._checkpoint_settings(), "num_segments": self.num_segments}
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        return f" (metric={type(self.metric).__name__}, {shown})"

    def _merge_derivations(self) -> dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]]:
        """The wrapped metric's (per segment): its sums added since, derived as a load derives them."""
        return self._derived_states

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickle's; one pickled before the wrapped metric's class gained states (NE's ``neg_labels``) gets them.

        The wrapped metric, unpickled first, has them already; these per-segment ones are derived
        from this metric's other states by the same rule (see ``metrics.pointwise.add_later_states``).
        """
        super().__setstate__(state)
        keys = self.metric._state_keys
        if len(self._state_keys) < len(keys):
            added = keys[len(self._state_keys) :]
            self._state_keys = keys
            self._derived_states.update(self.metric._derived_states)
            add_later_states(self, added, self.metric)

    def set_dtype(self, dst_type: str | torch.dtype) -> Segmented:
        """Cast the per-segment states to ``dst_type``, and the wrapped metric with them (as a metric's ``set_dtype``).

        The wrapped metric computes every value of this one: cast with it, its ``dtype`` and states
        say what this one's do (``nn.Module``'s recursion reaches it as a device move only).

        Raises:
            TypeError: ``dst_type`` is not a floating dtype the states can sum in; nothing changes
                (:func:`~torchmetrics_ext.utilities.checks.check_state_dtype`).
        """
        check_state_dtype(dst_type)  # before either changes
        super().set_dtype(dst_type)
        self.metric.set_dtype(dst_type)
        return self

    @property
    def _series_axes(self) -> tuple[str, ...]:
        """The dimensions of a value, named for its plot's series: ``segment1``, or ``task0/segment1``."""
        return ("segment",) if self.num_tasks == 1 else ("task", "segment")

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot one value or a list of them (over steps), one series per segment; ``compute()`` when ``val`` is None.

        Each series is named by its task and segment: ``segment0`` ... ``segment{S-1}`` for one task,
        ``task0/segment1`` ... for ``(T, S)`` values (the flat positions ``0`` ... ``T·S-1`` said neither).
        Needs matplotlib.

        Args:
            val: a value returned by ``compute``/``forward`` (``(S,)`` or ``(T, S)``), or a list of them.
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.

        Raises:
            ValueError: ``val`` (or one of its entries) is a tensor of another shape.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR, Segmented
            >>> metric = Segmented(CTR(num_tasks=2), num_segments=2)
            >>> target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 1]])
            >>> metric.update(torch.rand(2, 4), target, segments=torch.tensor([0, 1, 0, 1]))
            >>> fig, ax = metric.plot()  # doctest: +SKIP
        """
        if val is None:
            val = self.compute()
        shape = (self.num_segments,) if self.num_tasks == 1 else (self.num_tasks, self.num_segments)

        def named(value: Any) -> Any:
            if not isinstance(value, Tensor):
                return value
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"Expected `val` of shape {shape} (a value of this Segmented metric), got {tuple(value.shape)}."
                )
            return indexed_series(value, self._series_axes)

        if isinstance(val, Sequence) and not isinstance(val, (str, bytes)):
            return self._plot([named(v) for v in val], ax)
        return self._plot(named(val), ax)

    @property
    def input_domains(self) -> InputDomains | None:
        """The wrapped metric's: what its ``(preds, target, weights)`` must satisfy (the ids are checked apart).

        A :class:`~torchmetrics_ext.RecMetricModule` feeds a Segmented metric each task's columns and the
        segment ids of the tasks' ``group_id_name`` column, checking them with the step's one read.
        """
        return self.metric.input_domains

    @property
    def shared_statistics_key(self) -> Hashable | None:
        """Two Segmented metrics whose wrapped metrics share statistics, over as many segments, hold equal states.

        ``Segmented(NormalizedEntropy(), S)`` and ``Segmented(LogLoss(), S)`` add the same per-sample
        terms at the same ``(task, segment)`` positions: a module updates them once (a compute group).
        """
        inner = self.metric.shared_statistics_key
        return None if inner is None else ("Segmented", inner, self.num_segments)

    @property
    def _zero_weight_batches_count(self) -> bool:
        """The wrapped metric's: whether an all-zero-weight batch changes its value (``Windowed`` keeps it then)."""
        return bool(getattr(self.metric, "_zero_weight_batches_count", False))

    def _merged_kind(self) -> str:
        """``Segmented(NormalizedEntropy)``: a Segmented over another metric holds its sums under the same names."""
        return f"Segmented({type(self.metric).__name__})"

    def _format_segments(
        self, segments: Tensor | None, preds: Tensor, validate: bool, bounds: Bounds | None = None
    ) -> Tensor:
        """``segments`` as int64 ids of the formatted ``(T, N)`` ``preds``' shape; checked when ``validate``.

        ``bounds``: the ids' bounds if already read (with the wrapped metric's inputs, see :meth:`_inputs`).
        """
        shape = preds.shape
        if segments is None:
            raise WrongTypeError("Segmented.update() requires `segments` (integer ids, shape (N,) or (T, N)).")
        # the type and dtype are host metadata: checked whatever validate_args (no value read); a float or bool
        # id was cast to int64 in silence (2.7 to segment 2, True to 1)
        if (
            not isinstance(segments, Tensor)
            or segments.is_floating_point()
            or segments.is_complex()
            or segments.dtype == torch.bool
        ):
            check_tensor("segments", segments)  # names what arrived: no tensor, or a complex one
            raise WrongTypeError(f"Expected `segments` to hold integer ids, got dtype {segments.dtype}.")
        if validate:
            check_tensor("segments", segments)
            if segments.shape not in (shape, shape[-1:], (1, shape[-1])):
                raise ValueError(
                    f"Expected `segments` of shape {tuple(shape[-1:])} or {tuple(shape)}, got {tuple(segments.shape)}."
                )
            if segments.device != preds.device:
                raise ValueError(
                    f"Expected `segments` on the same device as `preds` ({preds.device}), got {segments.device}."
                )
            if segments.numel() > 0:
                # read with the wrapped metric's inputs (one copy), else here; remembered on the device
                # path for this tensor: the other Segmented metrics of a collection read nothing
                low, high = bounds if bounds else checked_bounds([segments], [False])[0]
                low_v, high_v = int(low), int(high)
                if low_v < 0 or high_v >= self.num_segments:
                    raise ValueError(
                        f"Expected `segments` in [0, {self.num_segments}) (num_segments={self.num_segments}), "
                        f"got values in [{low_v}, {high_v}]."
                    )
        ids = segments.to(torch.int64)
        # validate_args=False: on the CPU, refused before anything is added (the scatter would raise a bare
        # RuntimeError after adding part of the batch); a validating metric's ids were checked by it or its caller
        unchecked = not validate and not self.validate_args and segments is not _IDS_FIT.get()
        if unchecked and not _unchecked_ids_fit(ids, self.num_segments):
            low, high = checked_bounds([segments], [False])[0]  # as given: uint64 past 2**63 stays positive
            raise ValueError(
                f"Expected `segments` in [0, {self.num_segments}) (num_segments={self.num_segments}), got values in "
                f"[{int(low)}, {int(high)}] (not validated: validate_args=False); nothing was added."
            )
        return (ids if ids.ndim == 2 else ids.unsqueeze(0)).expand(shape)

    def _inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], validate: bool) -> tuple[Tensor, ...]:
        """``(preds, target, weights, segments)`` formatted from ``update``'s arguments in the metric's layout."""
        names = self._input_names
        if len(args) > len(names):
            raise WrongTypeError(
                f"Segmented({type(self.metric).__name__}).update() takes {len(names)} positional arguments "
                f"({', '.join(names)}), got {len(args)}."
            )
        bound = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in bound:
                problem = "got multiple values for" if key in bound else "got an unexpected keyword argument"
                raise WrongTypeError(
                    f"Segmented({type(self.metric).__name__}).update() {problem} `{key}`; it takes "
                    f"{', '.join(names)} (the wrapped metric's inputs, then the segment ids)."
                )
            bound[key] = value
        first = names[0]  # errors name the argument as this update calls it (`values` for TensorWeightedAverage)
        preds, segments = bound.get(first), bound.get("segments")
        # ids fit for a read (an integer tensor on preds' device) join the read of the metric's inputs:
        # one host sync per step; anything else is rejected by _format_segments after the metric's checks
        along = (
            validate
            and isinstance(segments, Tensor)
            and isinstance(preds, Tensor)
            and segments.device == preds.device
            and not (segments.is_floating_point() or segments.is_complex() or segments.dtype == torch.bool)
        )
        target, weights, ids_bounds = bound.get("target"), bound.get("weights"), None
        if along:
            with read_along([segments]) as read:
                p, t, w = self.metric._format(preds, target, weights, True, first)  # type: ignore[arg-type]
            ids_bounds = read.bounds[0] if read.bounds else None
        else:  # None preds: a TypeError naming them
            p, t, w = self.metric._format(preds, target, weights, validate, first)  # type: ignore[arg-type]
        return p, t, w, self._format_segments(segments, p, validate, ids_bounds)  # type: ignore[return-value]

    def _filter_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """The keyword arguments this ``update`` takes (a ``MetricCollection`` passes all of them)."""
        return {key: value for key, value in kwargs.items() if key in self._input_names}

    def _validate(self, *args: Any, **kwargs: Any) -> None:
        self._inputs(args, kwargs, validate=True)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate one batch: the wrapped metric's ``update`` arguments plus integer ``segments``."""
        p, t, w, seg = self._inputs(args, kwargs, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return
        # the metric's per-sample terms, (T, N) per state (its per-task settings applied), added by segment
        terms = self.metric._sample_terms(p, t, w)
        for name, term in zip(self._state_keys, terms, strict=True):
            state = getattr(self, name)  # float64 unless cast by `set_dtype`
            state.scatter_add_(1, seg, term.to(state.dtype))

    @property
    def _histogram_states(self) -> tuple[str, ...]:
        """Every state: each sample adds its terms at one ``(task, segment)`` position of each.

        :class:`~torchmetrics_ext.Windowed` keeps each update's flat positions and terms (the
        window's samples) instead of a dense ``(T, S)`` copy of every state per update.
        """
        return tuple(self._state_keys)

    # Windowed resumes a checkpoint of the ring it kept before (one dense (T, S) slot of every
    # state per update): each slot becomes an update kept dense (see HistogramWindow.from_ring)
    _histogram_resumes_rings = True

    def _histogram_entries(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor] | None:
        """What ``update`` would add to the states, validated as ``update`` does, without adding it.

        Returns:
            ``(flat index (T, N), values)`` with index ``task · S + segment`` and values the
            per-sample terms in the states' dtype, ``(T, N)`` for one state, else ``(K, T, N)`` in
            the order of the states; ``None`` for an empty batch.
        """
        p, t, w, seg = self._inputs(args, kwargs, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return None
        if self.num_tasks > 1:  # row t's positions start at t·S
            seg = seg + _task_offsets(self.num_tasks, self.num_segments, seg.device)  # kept per device
        dtype = getattr(self, self._state_keys[0]).dtype  # float64 unless cast by `set_dtype`
        terms = self.metric._sample_terms(p, t, w)
        if len(terms) == 1:
            return seg, terms[0].to(dtype).expand(seg.shape)
        return seg, torch.stack([term.to(dtype).expand(seg.shape) for term in terms])

    def compute(self) -> Tensor:
        """Per-segment values: ``(S,)`` for one task, ``(T, S)`` otherwise."""
        states = [getattr(self, name).reshape(-1) for name in self._state_keys]
        # the inner metric sees T·S tasks: its warnings name (task, segment) pairs instead
        with flat_entries_as((self.num_tasks, self.num_segments), ("task", "segment")):
            value = self.metric._compute_value(*states).reshape(self.num_tasks, self.num_segments)
        return value.squeeze(0) if self.num_tasks == 1 else value
