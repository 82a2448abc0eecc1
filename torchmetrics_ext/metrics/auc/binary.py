"""ROC AUC and average precision as :class:`torchmetrics.Metric` objects, exact or binned.

Exact mode (default) keeps every sample in float32 ``cat`` list states (O(N) memory, 8 bytes
per sample and task) and sorts once at ``compute``; ``num_bins=B`` keeps one float64 ``(2, T, B)``
histogram reduced with ``sum`` (constant memory). All math lives in
:mod:`torchmetrics_ext.functional.auc.binary`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat

from torchmetrics_ext.functional.auc import binary as F
from torchmetrics_ext.functional.auc import curves as C
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric, _tag
from torchmetrics_ext.utilities.checks import check_flag, check_pointwise, format_pointwise
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.docstrings import with_sections

__all__ = ["AUC", "AUPRC"]

_Chunks = TypeVar("_Chunks")

# binned forward: the batch value from the batch's non-empty bins (a sort of its N samples per task) when
# 4 N + 5000 <= B, else from the (2, T, B) histogram. On one CPU thread the sort path costs about
# 180 us + 0.1 us per sample and task, the histogram's value about 0.037 us per bin and task: the
# rule's crossover is at or below the measured one (N ~ 1,250 at B = 10,000, ~35,000 at 100,000;
# never below B ~ 5,000). See benchmarks/README.md.
_COMPACT_PER_SAMPLE = 4
_COMPACT_FIXED = 5000


def _take_samples(
    state: list[Tensor] | Tensor, num_tasks: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Concatenate a sample-major ``cat`` state and view it as ``(T, N)``.

    A list state is compacted in place into its single concatenation, so ``compute`` does not
    hold both the chunks and their copy (the list object is kept: compute groups share it). An
    empty list gives ``(T, 0)`` of ``dtype`` on ``device`` (the metric's: compute answers there).
    """
    if isinstance(state, list):
        if not state:
            return torch.zeros(num_tasks, 0, dtype=dtype, device=device)
        flat = dim_zero_cat(state)
        state[:] = [flat]
    else:
        flat = state
    return flat.view(-1, num_tasks).T


class _SharedStats(NamedTuple):
    """The last exact ``CurveStats`` computed and the state chunks they were computed from."""

    chunks: tuple[weakref.ref[Tensor], ...]
    versions: tuple[int, ...]
    split: int  # how many of the chunks are scores
    num_tasks: int
    stats: F.CurveStats


_LAST_EXACT: list[_SharedStats] = []  # at most one entry


def _exact_stats_shared(
    scores: Sequence[Tensor], signed: Sequence[Tensor], num_tasks: int, device: torch.device
) -> F.CurveStats:
    """``F._exact_curve_stats``, reused when asked again for the very same unmodified chunks.

    ``AUC`` and ``AUPRC`` of one compute group (a ``MetricCollection``, a ``RecMetricModule``)
    hold the same chunk tensors, and their sort gives both numerators: the second ``compute``
    reuses the first one's sums instead of sorting every sample again. The entry is keyed on the
    chunks' identity (weak references: it keeps no sample alive) and version counters, so an
    ``update`` (a new chunk, joined chunks), a sync (gathered copies), ``reset``, a load or any
    in-place change of a chunk computes afresh. Inference tensors have no version counter: never
    reused. The returned tensors are shared: read only.
    """
    chunks = (*scores, *signed)
    if not chunks or any(chunk.is_inference() for chunk in chunks):
        return F._exact_curve_stats(scores, signed, num_tasks, device)
    versions = tuple(chunk._version for chunk in chunks)
    for entry in _LAST_EXACT:
        if (
            (entry.split, entry.num_tasks, entry.versions) == (len(scores), num_tasks, versions)
            and len(entry.chunks) == len(chunks)
            and all(ref() is chunk for ref, chunk in zip(entry.chunks, chunks))
        ):
            return entry.stats
    stats = F._exact_curve_stats(scores, signed, num_tasks, device)
    _LAST_EXACT[:] = [_SharedStats(tuple(weakref.ref(c) for c in chunks), versions, len(scores), num_tasks, stats)]
    return stats


def _sample_major(values: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A fresh sample-major ``(n * T,)`` copy of a ``(T, n)`` (or ``(n,)``) tensor: never a view of the caller's.

    Detached: ``forward`` runs ``update`` with grad enabled, and a state copied from scores that
    require grad would keep the batch's autograd graph alive until ``reset()``.
    """
    if values.requires_grad:  # no `detach` op otherwise: update's fixed cost
        values = values.detach()
    if values.ndim == 1:  # one task; `clone` of a 1-D tensor is contiguous (a kwarg costs its parse, ~0.2 µs)
        return values.clone() if values.dtype == dtype else values.to(dtype=dtype)
    rows = values.reshape(-1) if values.shape[0] == 1 else values.T
    if rows.dtype == dtype:  # the same copy; `.to(..., copy=True)` parses its overloads first (~2 µs a call)
        return rows.clone(memory_format=torch.contiguous_format).view(-1)
    return rows.to(dtype=dtype, memory_format=torch.contiguous_format).view(-1)


def appended_by(metric: TaskMetric, chunks_of: Callable[..., _Chunks], *args: Any) -> _Chunks:
    """``chunks_of(*args)``: the chunks an exact ``update`` appends, made as that ``update`` makes them.

    For the metrics' ``_list_update`` (:class:`~torchmetrics_ext.Windowed`'s update without a slot of
    statistics): ``None`` is returned by the caller instead where ``update`` must run itself (list
    states moved to the CPU after each update, new chunks cast after ``set_dtype``). The chunks are
    made with gradients as TorchMetrics' update wrapper sets them (off unless the metric enables
    them), so no chunk keeps a batch's autograd graph alive.
    """
    grad, enabled = metric.__dict__["_enable_grad"], torch.is_grad_enabled()
    if enabled == grad:
        return chunks_of(*args)
    torch._C._set_grad_enabled(grad)
    try:
        return chunks_of(*args)
    finally:
        torch._C._set_grad_enabled(enabled)


def keeps_own_lists(metric: TaskMetric) -> bool:
    """Whether the list states' new chunks are moved or cast after ``update`` (``compute_on_cpu``, ``set_dtype``).

    ``_list_update`` then answers ``None``: the chunks go through ``update`` and its wrapper.
    """
    return bool(metric.compute_on_cpu) or "_cast_dtype" in metric.__dict__


def _one_task(preds: object, target: object) -> bool:
    """Whether a batch is non-empty ``(n,)`` floating scores and ``(n,)``-dimensional labels (checked or not)."""
    return (
        isinstance(preds, Tensor)
        and isinstance(target, Tensor)
        and preds.ndim == 1
        and target.ndim == 1
        and preds.shape[0] > 0
        and preds.is_floating_point()
    )


class _CurveMetric(TaskMetric):
    """Shared states and update of :class:`AUC` and :class:`AUPRC` (identical states: one compute group)."""

    is_differentiable: bool = False
    higher_is_better: bool = True
    plot_lower_bound: float = 0.0
    plot_upper_bound: float = 1.0

    signed_weights: list[Tensor]

    def _values_per_sample(self) -> dict[str, int]:
        """Exact mode: one score and one signed weight per task for each sample (sample-major rows)."""
        if self.num_bins is not None:
            return {}
        return {self._preds_state: self.num_tasks, "signed_weights": self.num_tasks}

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        num_bins: int | None = None,
        logit_range: tuple[float, float] = F.DEFAULT_LOGIT_RANGE,
        bin_space: str = "logit",
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        num_bins, self.logit_range, bin_space = F._check_bins(num_bins, logit_range, bin_space)
        from_logits = check_flag("from_logits", from_logits)
        self.num_bins = num_bins
        self.bin_space = bin_space
        self.from_logits = from_logits
        if num_bins is None:
            # the scores as given, logits or probabilities: named after from_logits (`preds_logits`), so a
            # MetricCollection never merges the two settings into one compute group, whose members but
            # the first skip their own input checks (probabilities in [0, 1] or any finite logit).
            # Checkpoints written before hold `preds` with either setting (and record from_logits).
            # (and after validate_args, in memory only: see TaskMetric._unchecked_state_name)
            preds = self._setting_state_name("preds", "logits" if from_logits else "")
            self._preds_state = self._unchecked_state_name(preds)
            if from_logits:
                self._load_former_names(self._preds_state, "preds")
            self._add_list_state(self._preds_state, torch.float32)
            self._add_list_state("signed_weights", torch.float32)
        else:
            # (negative, positive) label weight per task and bin. Which bin a score falls in depends
            # on the bin range and space and on from_logits: non-default ones are part of the state's
            # name, so a MetricCollection never merges histograms that the first batch left equal.
            if bin_space == "probability":
                bins = "hist_probability"
            elif self.logit_range != F.DEFAULT_LOGIT_RANGE:
                bins = f"hist_logit_{_tag(self.logit_range[0])}_{_tag(self.logit_range[1])}"
            else:
                bins = "hist"
            # from_logits changes how scores arrive, not their bins: a version-1 checkpoint's histogram
            # without it is this one's; the plain `hist` of a version-1 checkpoint is the default bins'
            self._hist_name = self._setting_state_name(bins, "logits" if from_logits else "")
            if bins != "hist":
                self._default_settings_name("hist", self._hist_name)
            # and after validate_args, in memory only (see TaskMetric._unchecked_state_name)
            self._hist_name = self._unchecked_state_name(self._hist_name)
            hist = torch.zeros(2, num_tasks, num_bins, dtype=torch.float64)
            self.add_state(self._hist_name, hist, dist_reduce_fx="sum")

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        self._unit_weights(preds, target, weights)

    def _unit_weights(self, preds: Tensor, target: Tensor, weights: Tensor | None) -> bool:
        """Validate the batch (exact mode: float64 weights that float32 holds, same read); whether weights are all 1."""
        return check_pointwise(
            preds,
            target,
            weights,
            self.num_tasks,
            target_domain="binary",
            from_logits=self.from_logits,
            float32_weights=self.num_bins is None,
        )

    @property
    def input_domains(self) -> InputDomains:
        """Probabilities (or logits) and binary labels; exact mode keeps float32 weights."""
        return InputDomains("probability", "binary", self.from_logits, float32_weights=self.num_bins is None)

    @property
    def shared_statistics_key(self) -> Hashable:
        """``AUC`` and ``AUPRC`` with the same mode and settings hold equal states."""
        binning = None if self.num_bins is None else (self.num_bins, self.logit_range, self.bin_space)
        return ("_CurveMetric", binning, self.from_logits, self.num_tasks)

    def _checkpoint_settings(self) -> dict[str, Any]:
        """``num_tasks``, and ``from_logits`` in exact mode, whose ``preds`` are the scores as given.

        Exact states keep probabilities or logits under the same names: a checkpoint of the other
        ``from_logits`` would rank logits among probabilities (binned mode names its histogram
        after ``from_logits`` instead). Checkpoints that recorded no ``from_logits`` (earlier
        versions, or a plain dict without the state_dict's metadata) are not checked for it.
        """
        settings = super()._checkpoint_settings()
        return settings if self.num_bins is not None else {**settings, "from_logits": self.from_logits}

    def _settings_shown_by(self, saved: Collection[str]) -> dict[str, Any]:
        """Exact mode: ``from_logits`` of a checkpoint holding ``preds_logits`` (``preds`` may be either's)."""
        return {"from_logits": True} if self.num_bins is None and "preds_logits" in saved else {}

    @property
    def _scores(self) -> list[Tensor]:
        """Exact mode's scores state (``preds``, or ``preds_logits`` with ``from_logits``; one tensor once synced)."""
        return getattr(self, self._preds_state)

    @property
    def _hist(self) -> Tensor:
        """The binned mode's histogram state (named after the bin settings)."""
        return getattr(self, self._hist_name)

    @property
    def _histogram_state(self) -> str | None:
        """The state filled sample by sample in binned mode (``None`` when exact).

        :class:`~torchmetrics_ext.Windowed` keeps each update's bin indices for it instead of a
        dense histogram per update.
        """
        return None if self.num_bins is None else self._hist_name

    def _histogram_entries(
        self, preds: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None] | None:
        """What ``update`` would add to ``hist`` (binned mode), validated as ``update`` does, without adding it.

        Returns:
            ``(flat index, values)`` with ``values`` ``None`` for all ones; ``None`` for an empty batch.
        """
        batch = self._formatted(preds, target, weights)
        if batch is None:
            return None
        assert self.num_bins is not None
        return F._binned_entries(
            *batch, self.num_bins, self.logit_range, self.from_logits, self.bin_space, validated=self.validate_args
        )

    def _formatted(
        self, preds: Tensor, target: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """The batch validated (unless checked already) as ``(T, N)`` views in its own dtypes; ``None`` if empty."""
        weights = self._checked_weights(preds, target, weights)
        if preds.shape[-1] == 0:
            return None
        return self._as_rows(preds, target, weights)

    def _checked_weights(self, preds: Tensor, target: Tensor, weights: Tensor | None) -> Tensor | None:
        """Validate the batch (unless checked already); its weights, ``None`` for weights all exactly 1.

        The unweighted kernels give the same statistics for weights all 1, in fewer passes.
        """
        if self._check_inputs and self._unit_weights(preds, target, weights):
            return None
        return weights

    def _as_rows(self, preds: Tensor, target: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """A checked batch as ``(T, N)`` views in its own dtypes (each kernel casts what it reads)."""
        p, t, w = format_pointwise(preds, target, weights, self.num_tasks, validate=False, dtype=None)
        assert t is not None
        return p, t, w

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds``/``target`` ``(N,)`` or ``(T, N)``, optional ``weights``."""
        if self.num_bins is None:
            chunks = self._exact_chunks(preds, target, weights)
            if chunks is not None:
                scores, signed = chunks
                self._scores.append(scores)  # small chunks are joined after the update (TaskMetric)
                self.signed_weights.append(signed)
            return
        weights = self._checked_weights(preds, target, weights)
        if preds.shape[-1] == 0:
            return
        p, t, w = self._as_rows(preds, target, weights)
        handed = self.__dict__.get("_forward_batch")
        if handed is None:
            # unchecked (validate_args=False) NaN scores count in the last bin; checked ones spend no pass on it
            F._binned_update(
                p,
                t,
                w,
                self.num_bins,
                self.logit_range,
                self.from_logits,
                out=self._hist,
                bin_space=self.bin_space,
                validated=self.validate_args,
            )
            return
        # forward (TaskMetric._update_hands_statistics): the batch's histogram, made as the update of fresh
        # states makes it, handed over; its entries kept for the batch value (_curve_stats)
        rule = (
            self.num_bins,
            self.logit_range,
            self.from_logits,
            self.bin_space,
            on_device_path(p),
            self.validate_args,
        )
        index, values = F._binned_entries(p, t, w, *rule)
        fresh = self._defaults[self._hist_name]  # what forward's fresh states would start from
        assert isinstance(fresh, Tensor)
        hist = torch.zeros_like(fresh)
        F._add_entries(hist, index, values)
        handed.append(((self._hist_name,), (hist,)))
        self.__dict__["_forward_entries"] = (hist, index, values)

    @classmethod
    def _update_hands_statistics(cls) -> bool:
        """Binned ``update`` hands its batch histogram to ``forward`` (exact mode: list states, never asked)."""
        return cls.update is _CurveMetric.update

    def _batch_value(self) -> Any:
        """``forward``'s batch value; the batch's entries kept by its ``update`` are dropped afterwards."""
        try:
            return super()._batch_value()
        finally:
            self.__dict__.pop("_forward_entries", None)

    def _list_update(
        self, preds: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> dict[str, list[Tensor]] | None:
        """The chunks exact-mode ``update`` would append to each list state, appending nothing.

        For :class:`~torchmetrics_ext.Windowed`, which puts them into the lifetime and the window
        itself (no slot of statistics: the metric has no other state). Validates as ``update``
        does (a rejected batch raises, nothing appended anywhere); empty lists for an empty batch.
        ``None`` where ``update`` must run itself: binned mode, a missing argument (``update``
        names it), list states kept on the CPU or cast by ``set_dtype``.
        """
        if self.num_bins is not None or target is None or keeps_own_lists(self):
            return None
        chunks = appended_by(self, self._exact_chunks, preds, target, weights)
        if chunks is None:
            return {self._preds_state: [], "signed_weights": []}
        return {self._preds_state: [chunks[0]], "signed_weights": [chunks[1]]}

    def _exact_chunks(self, preds: Tensor, target: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """Exact mode: the batch validated (unless checked already) as its (scores, signed weights) chunks.

        Sample-major float32 copies, as ``update`` appends them; ``None`` for an empty batch.
        """
        if weights is None and _one_task(preds, target):
            # one task, unweighted (the common case): the (n,) inputs are sample-major already and the
            # update is two kernels (a float32 copy of the scores, the labels' signs), no views.
            if not on_device_path(preds):
                # checked first: integer labels then take their signs from a table (one pass, no float
                # copy of the labels), which only labels 0 and 1 index (others raise IndexError there)
                if self._check_inputs:
                    self._validate(preds, target)
                return _sample_major(preds), F._label_signs(target, lookup=True)
            # on a device both are queued before the batch is checked, so that the device runs them
            # while the host waits for the batch's bounds; they are stored only once the batch passed
            scores, signs = _sample_major(preds), F._label_signs(target)
            if self._check_inputs:
                self._validate(preds, target)
            return scores, signs
        weights = self._checked_weights(preds, target, weights)
        if preds.shape[-1] == 0:
            return None
        p, t, w = self._as_rows(preds, target, weights)
        if w is None:  # (T, n) labels: their signs written sample-major in the one kernel
            signs = torch.empty(t.shape[::-1], dtype=torch.float32, device=t.device)
            return _sample_major(p), F._label_signs(t.T, out=signs).view(-1)
        if not on_device_path(p):
            signed = F._signed_weights(t, w, lookup=True)  # checked labels (or IndexError, nothing stored)
            # rows of zero weight in every task change nothing: on the CPU they are not stored (on
            # a device, finding them would wait for it; stored, they add nothing to any sum). The
            # labels are not indexed (PyTorch 2.3 and 2.4 have no index kernel for uint16/32/64).
            # Weights all non-zero (the common case) are told by one reduction.
            if not bool(w.all()):
                keep = (w != 0).any(0)
                if not bool(keep.all()):
                    p, signed = p[:, keep], signed[:, keep]
        else:
            signed = F._signed_weights(t, w)
        # sample-major (n * T,) float32: a rank's empty-list placeholder at sync is float32 (0,) too
        return _sample_major(p), signed.view(-1) if signed.shape[0] == 1 else _sample_major(signed)

    def _curve_stats(self) -> F.CurveStats:
        if self.num_bins is not None:
            hist = self._hist
            batch = self.__dict__.get("_forward_entries")
            if batch is not None and batch[0] is hist:
                # forward's batch value: the histogram holds this one batch. Its non-empty bins alone give
                # the same value at O(T N log N), cheaper than the O(T B) pass when N is small against B
                _, index, values = batch
                if _COMPACT_PER_SAMPLE * index.shape[-1] + _COMPACT_FIXED <= hist.shape[-1]:
                    return F._binned_curve_stats(F._compacted_histogram(index, values, hist.shape[-1], hist.dtype))
            return F._binned_curve_stats(hist)
        # chunks are packed straight into the sort keys: no concatenated copy of the states
        scores, signed = self._scores, self.signed_weights
        if isinstance(scores, Tensor):  # synced across ranks: already one tensor
            scores, signed = [scores], [signed]
        return _exact_stats_shared(scores, signed, self.num_tasks, self.device)

    def _curve_points(self) -> C.Points:
        """Per task: distinct thresholds (descending) and the label weights at each, from the synced states."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            if self.num_bins is not None:
                return C._binned_points(self._hist, self.logit_range, self.from_logits, self.bin_space)
            scores, signed = self._scores, self.signed_weights
            if isinstance(scores, Tensor):  # synced across ranks: already one tensor
                scores, signed = [scores], [signed]
            return C._exact_points(scores, signed, self.num_tasks, self.device)

    def curve(self) -> C.Curve:
        """The metric's curve (ROC for :class:`AUC`, precision-recall for :class:`AUPRC`)."""
        raise NotImplementedError

    def _draw(self, kind: str, val: Any, ax: Any, labels: Sequence[str] | None) -> Any:
        """The curve for ``val=None`` (this metric's) or a ``curve()`` tuple; else TorchMetrics' value plot."""
        if val is not None and not (isinstance(val, tuple) and len(val) == 3):
            return super().plot(val, ax)
        from torchmetrics_ext.utilities.plot import plot_roc_or_pr

        score = self.compute() if val is None else None
        curve = self.curve() if val is None else val
        return plot_roc_or_pr(curve, kind, score=score, ax=ax, labels=labels)


# The Args and Raises of AUC and AUPRC, which take the same arguments (see utilities/docstrings.py)
_CURVE_METRIC_SECTIONS = """
Args:
    num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
    num_bins: ``None`` (default) for the exact value; ``B`` for a constant-memory histogram of
        ``B`` bins uniform in logit space over ``logit_range``.
    logit_range: ``(low, high)`` logits covered by the bins (default ``(-16, 16)``, i.e.
        probabilities 1.1e-7 to 1 - 1.1e-7); scores outside fall in the end bins. Binned
        ``"logit"`` bins only: another value without ``num_bins`` or with
        ``bin_space="probability"`` is a ``ValueError`` (it would be ignored).
    bin_space: ``"logit"`` (default) or ``"probability"``: ``B`` bins uniform in probability
        over [0, 1] (binned mode only: without ``num_bins`` it is a ``ValueError``).
        ``AUPRC(num_bins=1000, bin_space="probability")`` is TorchRec's lifetime AUPRC (the AP
        of scores floored to 1000 bins).
    from_logits: ``preds`` are logits (exact mode ranks them as given).
    validate_args: check each batch; a rejected batch raises and changes nothing. Unchecked
        scores are the caller's promise, yet never end the process: binned, a score above the bins'
        range (a probability above 1, ``inf``) counts in the last bin, one below it (a probability
        below 0, ``-inf``) in the first, and NaN in the last (where a sorted search puts it, as in
        ``Reliability``; TorchMetrics' ``thresholds=`` curves count it below every threshold).
        Unchecked labels must be 0 or 1: another label has no class to count in (an
        ``IndexError`` on the CPU, nothing stored; a device-side assert on CUDA).
    kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

Raises:
    ValueError: NaN/inf ``preds``, probabilities outside [0, 1], labels not in {0, 1},
        negative weights, mismatched shapes/devices, a wrong task dimension, or a bad
        ``num_bins``/``logit_range``/``bin_space`` (or one that would be ignored).
    TypeError: non-tensor inputs or non-floating ``preds``.
"""


@with_sections(_CURVE_METRIC_SECTIONS, before="Note")
class AUC(_CurveMetric):
    r"""Area under the ROC curve: weighted, tie-aware, equal to scikit-learn's ``roc_auc_score``.

    .. math::
        \mathrm{AUC} = \frac{1}{P N}\sum_{i: y_i=1}\sum_{j: y_j=0} w_i w_j
        \left(\mathbb{1}[s_i > s_j] + \tfrac12\,\mathbb{1}[s_i = s_j]\right)

    with :math:`P`, :math:`N` the positive and negative label weight, i.e. the trapezoidal area
    under the ROC curve with one point per distinct score. ``update(preds, target, weights=None)``.

    Note:
        **Exact mode** (default) stores each sample's float32 score and float32 signed weight in
        ``cat`` list states (8 bytes per sample and task; rows whose weight is zero in every task
        are dropped) and sorts them once in ``compute`` through an order-preserving ``int32`` key
        (on CPU +8 bytes per sample and task, whatever the ties; all tasks in one pass). Scores
        are compared as float32, so scores that differ only beyond float32 precision tie. Ranks
        with different numbers of batches, or none, sync correctly.

        **Binned mode** (``num_bins=B``) stores one float64 ``(2, T, B)`` histogram (constant
        memory, ``sum`` across ranks) filled in O(N) per batch with one ``scatter_add_``. The value is
        the exact AUC of the scores rounded to their bin, so it differs from the exact value by at
        most half the share of (positive, negative) pairs that fall into the same bin,
        :math:`\frac{1}{2PN}\sum_b P_b N_b`. Bins are uniform in the logit, so click-through
        data with scores crowded near 0.01-0.05 spreads over hundreds of bins; at ``B = 10_000``
        the error there is well below 1e-3 (see ``docs/auc.md``).

        Undefined (``nan`` plus ``UndefinedMetricWarning``) for a task without both classes;
        TorchMetrics returns 0 and torcheval 0.5 there. Unlike TorchRec's AUC, ties do not depend
        on input order.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import AUC
        >>> metric = AUC()
        >>> metric.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([0.4, 0.8]), torch.tensor([1, 1]))
        >>> metric.compute()  # the tie at 0.4 counts one half
        tensor(0.8750, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """AUC over everything accumulated (and synced across ranks)."""
        pos, neg, auc_num, _ = self._curve_stats()
        return self._squeeze_tasks(F._auc_compute(pos, neg, auc_num))

    def curve(self) -> C.Curve:
        """The ROC curve over everything accumulated (and synced): ``(fpr, tpr, thresholds)``.

        Exact mode equals scikit-learn's ``roc_curve(target, preds, sample_weight=weights,
        drop_intermediate=False)``; binned mode is the exact curve of the scores rounded to their
        bins (one point per non-empty bin, its lower edge as threshold). Its trapezoidal area is
        :meth:`compute`. See :func:`~torchmetrics_ext.functional.roc_curve` for the layout:
        float64 tensors for one task, lists of one tensor per task otherwise. The states keep
        float32 scores, so exact thresholds are float32 values: for float64 ``preds``,
        ``preds.float() >= threshold`` selects the samples of a point (the functional
        :func:`~torchmetrics_ext.functional.roc_curve` reports float64 scores as given).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import AUC
            >>> metric = AUC()
            >>> metric.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
            >>> fpr, tpr, thresholds = metric.curve()
            >>> fpr.tolist(), tpr.tolist()
            ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
        """
        return C._as_curve(C._roc_from_points(self._curve_points()), self.num_tasks == 1)

    def plot(self, val: Any = None, ax: Any = None, labels: Sequence[str] | None = None) -> Any:
        """Draw the ROC curve (``val=None`` or a :meth:`curve` tuple), or values of :meth:`compute` over time.

        Args:
            val: ``None`` (this metric's curve, its AUC in the legend), a :meth:`curve` tuple, or a
                value / list of values of :meth:`compute` (TorchMetrics' value plot).
            ax: an existing matplotlib axis.
            labels: one legend label per task (curves only).

        Returns:
            ``(figure, axis)`` as in TorchMetrics (``figure`` is ``None`` when ``ax`` is given).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import AUC
            >>> metric = AUC(num_tasks=2)
            >>> metric.update(torch.rand(2, 100), torch.randint(0, 2, (2, 100)))
            >>> fig, ax = metric.plot(labels=["click", "like"])
        """
        return self._draw("roc", val, ax, labels)


@with_sections(_CURVE_METRIC_SECTIONS, before="Note")
class AUPRC(_CurveMetric):
    r"""Average precision, equal to scikit-learn's ``average_precision_score`` (weighted, tie-aware).

    .. math::
        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k, \qquad
        R_k = \frac{TP_k}{P}, \quad P_k = \frac{TP_k}{TP_k + FP_k}

    over one curve point per distinct score in decreasing order (no interpolation).
    ``update(preds, target, weights=None)``. Holds the same states as :class:`AUC`, so both
    share one compute group in a :class:`~torchmetrics.MetricCollection`.

    Note:
        Memory, ties and DDP as for :class:`AUC`. In binned mode the value is the exact AP of the
        binned scores. Undefined (``nan`` plus ``UndefinedMetricWarning``) for a task without
        positive label weight; with positives only the value is 1, as in scikit-learn.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import AUPRC
        >>> metric = AUPRC()
        >>> metric.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        >>> metric.compute()
        tensor(0.8333, dtype=torch.float64)
    """

    def compute(self) -> Tensor:
        """Average precision over everything accumulated (and synced across ranks)."""
        pos, neg, _, ap_num = self._curve_stats()
        return self._squeeze_tasks(F._auprc_compute(pos, ap_num, neg_total=neg))

    def curve(self) -> C.Curve:
        r"""The precision-recall curve over everything accumulated (and synced): ``(precision, recall, thresholds)``.

        Exact mode equals scikit-learn's ``precision_recall_curve(target, preds,
        sample_weight=weights)`` (thresholds increasing, a last point ``(1, 0)`` without
        threshold); binned mode is the exact curve of the binned scores. :meth:`compute` is
        :math:`\sum_k (R_k - R_{k-1}) P_k` over these points. See
        :func:`~torchmetrics_ext.functional.precision_recall_curve` for the layout. Exact
        thresholds are the float32 scores the states keep (see :meth:`AUC.curve`).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import AUPRC
            >>> metric = AUPRC()
            >>> metric.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
            >>> precision, recall, thresholds = metric.curve()
            >>> recall.tolist()
            [1.0, 1.0, 0.5, 0.5, 0.0]
        """
        return C._as_curve(C._pr_from_points(self._curve_points()), self.num_tasks == 1)

    def plot(self, val: Any = None, ax: Any = None, labels: Sequence[str] | None = None) -> Any:
        """Draw the precision-recall curve (``val=None`` or a :meth:`curve` tuple), or values over time.

        Args:
            val: ``None`` (this metric's curve, its area in the legend), a :meth:`curve` tuple,
                or a value / list of values of :meth:`compute` (TorchMetrics' value plot).
            ax: an existing matplotlib axis.
            labels: one legend label per task (curves only).

        Returns:
            ``(figure, axis)`` as in TorchMetrics (``figure`` is ``None`` when ``ax`` is given).
        """
        return self._draw("pr", val, ax, labels)
