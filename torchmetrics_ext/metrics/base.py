"""Base class shared by every metric of the package."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor
from torch.nn import Module
from torchmetrics import Metric
from torchmetrics.utilities.data import _squeeze_if_scalar, apply_to_collection, dim_zero_cat, dim_zero_sum
from torchmetrics.utilities.distributed import gather_all_tensors
from torchmetrics.utilities.exceptions import TorchMetricsUserError

from torchmetrics_ext.metrics._arithmetic import TensorArithmetic
from torchmetrics_ext.metrics._bootstrap import MARKS as _BOOTSTRAP_MARKS
from torchmetrics_ext.metrics._bootstrap import OUTSIDE as _OUTSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import refuse_bootstrapped_tasks
from torchmetrics_ext.metrics._checkpoints import (
    UNCHECKED_SUFFIX,
    CheckpointedStates,
    _count_reset,
    _count_states_written,
    carry_saved_ranks,
    derive_missing,
    fill_from_source,
    held_states,
    note_saved_ranks,
    saved_ranks,
)
from torchmetrics_ext.utilities.checks import PredsDomain, TargetDomain, check_flag, check_int, check_state_dtype
from torchmetrics_ext.utilities.chunks import _JOIN, _RUNS_JOINED, join_chunks, join_runs_amortised, join_small_tails
from torchmetrics_ext.utilities.distributed import outside_group
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.formatting import article, exact_text
from torchmetrics_ext.utilities.inference import deepcopy_ordinary, ordinary_tensors
from torchmetrics_ext.utilities.mapping import not_a_dict_of_metrics
from torchmetrics_ext.utilities.ownership import write_deferred_states
from torchmetrics_ext.utilities.plot import named_series

__all__ = ["GuardedMetric", "InputDomains", "TaskMetric"]

_WHOLE = 8192  # elements: a newest list-state chunk this large is not joined (see `_join_small_chunks`)

_T = TypeVar("_T")

_TARGET_ORDER = ("binary", "unit", "nonnegative", "real")  # strictest first
# what TorchMetrics' ``forward`` sets for the batch and restores afterwards (not when it raises)
_FORWARD_CONTEXT = (
    "_update_count",
    "_computed",
    "_forward_cache",
    "_cache",
    "_is_synced",
    "_to_sync",
    "_should_unsync",
    "_enable_grad",
    "compute_on_cpu",
)
_ABSENT = object()


def _plottable(val: Any) -> Any:
    """A value (or a list of values) in the form TorchMetrics' plot draws: flat tensors, dicts of numbers."""
    if isinstance(val, Mapping):
        return named_series(val)
    if isinstance(val, Tensor):
        return val.flatten() if val.ndim > 1 else val
    if isinstance(val, Sequence) and not isinstance(val, (str, bytes)):
        return [_plottable(v) for v in val]
    return val


@functools.cache
def _required_parameters(cls: type[Metric]) -> tuple[tuple[int, str], ...]:
    """``(position, name)`` of the parameters of ``cls.update`` that have no default (``self`` not counted)."""
    parameters = list(inspect.signature(cls.update).parameters.values())[1:]
    return tuple(
        (i, p.name)
        for i, p in enumerate(parameters)
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


@dataclass(frozen=True)
class InputDomains:
    """What a metric's ``update(preds, target, weights)`` accepts, for a caller that validates once.

    A caller feeding several metrics the same batch (:class:`~torchmetrics_ext.RecMetricModule`)
    checks the strictest of their domains in one pass and then updates every metric inside
    :meth:`TaskMetric.inputs_validated`.

    Attributes:
        preds: ``"probability"`` (``[0, 1]``, or any finite logit when ``from_logits``), ``"real"``
            (finite) or ``"score"`` (any real, ±inf included: ranking scores).
        target: ``"binary"``, ``"unit"`` (``[0, 1]``), ``"nonnegative"`` or ``"real"`` (finite).
        from_logits: whether probability-domain ``preds`` are logits. A metric built with
            ``from_logits=True`` declares ``"probability"`` with ``from_logits``, whatever it takes
            otherwise (``WeightedMSE``, ``XAUC``: ``"real"``): its predictions are logits.
        float32_weights: non-zero weights must keep their value as float32 (exact AUC modes store
            them so): within ``[1.18e-38, 3.4e38]``.

    Examples:
        >>> from torchmetrics_ext import AUC, NDCG
        >>> AUC().input_domains  # probabilities, 0/1 labels, weights stored as float32
        InputDomains(preds='probability', target='binary', from_logits=False, float32_weights=True)
        >>> AUC(from_logits=True).input_domains.from_logits
        True
        >>> NDCG(k=10).input_domains  # any real score (±inf too) and graded relevance >= 0
        InputDomains(preds='score', target='nonnegative', from_logits=False, float32_weights=False)
    """

    preds: PredsDomain
    target: TargetDomain
    from_logits: bool = False
    float32_weights: bool = False

    @classmethod
    def strictest(cls, given: Mapping[str, InputDomains | None]) -> InputDomains:
        """The domains a batch must satisfy to be valid for every one of several metrics.

        Probabilities if any metric takes probabilities, else finite reals if any metric needs them,
        else any real score (ranking metrics alone: ±inf included), and the strictest
        target (``binary`` < ``unit`` < ``nonnegative`` < ``real``). ``None`` entries (metrics
        whose inputs are not expressible so) are left out.

        Args:
            given: ``{metric name: its input_domains}``; the names only label errors.

        Raises:
            ValueError: probability metrics that disagree on ``from_logits`` (the same
                predictions cannot be both probabilities and logits), e.g. ``AUC()`` next to
                ``WeightedMSE(from_logits=True)``. Metrics of finite real predictions built
                without the option (``WeightedMSE()``) agree with either.

        Examples:
            >>> from torchmetrics_ext import AUC, WeightedMSE
            >>> InputDomains.strictest({"auc": AUC().input_domains, "mse": WeightedMSE().input_domains})
            InputDomains(preds='probability', target='binary', from_logits=False, float32_weights=True)
        """
        domains = {name: d for name, d in given.items() if d is not None}
        logit_flags = {n: d.from_logits for n, d in domains.items() if d.preds == "probability"}
        if len(set(logit_flags.values())) > 1:
            raise ValueError(
                "Metrics disagree on `from_logits` for the same predictions: "
                + ", ".join(f"{n}={flag}" for n, flag in logit_flags.items())
                + "; build them all with the same from_logits."
            )
        # probabilities if any metric takes them, else finite values if any metric needs them, else
        # any real score (ranking metrics alone take ±inf)
        finite = not domains or any(d.preds == "real" for d in domains.values())
        preds = "probability" if logit_flags else "real" if finite else "score"
        target = min((d.target for d in domains.values()), key=_TARGET_ORDER.index, default="real")
        float32_weights = any(d.float32_weights for d in domains.values())
        return cls(preds, target, any(logit_flags.values()), float32_weights)  # type: ignore[arg-type]


@contextmanager
def counted_as_updated(metrics: Iterable[Metric]) -> Iterator[None]:
    """Inside, every one of ``metrics`` counts as updated (TorchMetrics' "compute before update" warning silenced).

    For callers whose metrics hold states without an update of their own (a compute group's
    members, a rank without a batch whose states are synced from the others'). Unlike
    ``warnings.catch_warnings`` with a filter, the process's warning filters are not touched: a
    filter change makes Python forget which warnings it has shown, so every later warning (ours
    and the user's) would show again after each call. The update counts are put back on exit.
    """
    counted = [(metric, metric._update_count) for metric in metrics]
    try:
        for metric, count in counted:
            metric.__dict__["_update_count"] = max(count, 1)
        yield
    finally:
        for metric, count in counted:
            metric.__dict__["_update_count"] = count


def recomputed_after(metric: Metric, change: Callable[[], None]) -> None:
    """Run ``change`` (a sync or unsync of ``metric``); if it flipped the synced state, drop the cached value.

    A value cached before is of the other states (TorchMetrics keeps it across a manual ``sync``).
    """
    was = metric._is_synced
    change()
    if metric._is_synced != was:
        metric.__dict__["_computed"] = None


def refuse_while_synced(metric: Metric, method: str) -> None:
    """TorchMetrics' refusal of ``forward`` on a synced metric, for ``method`` (``update``, ``merge_state``...).

    Between a manual ``sync()`` and ``unsync()`` the states hold every rank's statistics and
    ``unsync`` puts back the local ones cached before the sync: a batch added in between was
    dropped without a word (sum states), or failed inside TorchMetrics' list handling (a list state
    gathered into one tensor has no ``append``).

    Raises:
        TorchMetricsUserError: ``metric`` is synced; nothing changes.
    """
    if metric.__dict__.get("_is_synced"):
        raise TorchMetricsUserError(
            f"The Metric shouldn't be synced when performing ``{method}``. HINT: Did you forget to call ``unsync`` ?."
        )


def _one_element(element: Tensor, shape: torch.Size) -> Tensor:
    """A stride-0 view of shape ``shape`` of a one-element tensor (every entry is that element)."""
    return element.reshape(()).expand(shape)


def _is_one_element(value: Tensor) -> bool:
    """Whether a tensor of more than one element stores one (all strides 0), as `GuardedMetric.add_state` keeps."""
    return value.numel() > 1 and all(stride == 0 for stride in value.stride())


# every keyword option torchmetrics.Metric.__init__ takes (messages; wrappers pass the wrapped metric's on)
TORCHMETRICS_OPTIONS = (
    "compute_on_cpu",
    "dist_sync_on_step",
    "process_group",
    "dist_sync_fn",
    "distributed_available_fn",
    "sync_on_compute",
    "compute_with_cache",
)


def accepted_options(cls: type) -> list[str]:
    """The keyword options ``cls(...)`` takes: its own, those its bases take through ``**kwargs``, TorchMetrics'.

    The class's own parameters, then each base's parameters with a default (those without one,
    and private ``_x`` ones, are what the subclass passes itself) while the ``__init__`` above
    forwards ``**kwargs``; ``num_tasks`` only where the metric has a task dimension; never an
    option a class of the MRO names in ``_refused_options`` (one it passes itself, or refuses:
    ``num_tasks`` for a metric built with :func:`one_task`).

    Examples:
        >>> import torchmetrics_ext as tmx
        >>> print(", ".join(accepted_options(tmx.AUC)[:6]))
        num_tasks, num_bins, logit_range, bin_space, from_logits, validate_args
    """
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if klass is Metric or init is None:
            if klass is Metric:
                break
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in parameters:
            own = klass is cls or p.default is not p.empty
            if own and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not p.name.startswith("_"):
                if p.name not in names:
                    names.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    refused = {name for klass in cls.__mro__ for name in klass.__dict__.get("_refused_options", ())}
    if not getattr(cls, "has_task_dim", True):
        refused.add("num_tasks")
    names = [name for name in names if name not in refused]
    return names + [name for name in TORCHMETRICS_OPTIONS if name not in names]


def unexpected_options(cls: type, error: ValueError) -> ValueError:
    """TorchMetrics' "Unexpected keyword arguments" told with the metric's name and the options it takes."""
    text = str(error)
    unknown = re.findall(r"`([^`]+)`", text) if text.startswith("Unexpected keyword arguments") else []
    return options_error(cls, unknown) if unknown else error


def options_error(cls: type, unknown: Sequence[str]) -> ValueError:
    """The error for the options ``unknown`` given to ``cls``: its name, the options it takes, a did-you-mean."""
    options = accepted_options(cls)
    ours = [name for name in options if name not in TORCHMETRICS_OPTIONS]
    guesses = [match for name in unknown for match in difflib.get_close_matches(name, options, n=1)]
    guess = f" (did you mean {', '.join(f'`{g}`' for g in guesses)}?)" if guesses else ""
    return ValueError(
        f"Unexpected keyword arguments: {', '.join(f'`{name}`' for name in unknown)} for {cls.__name__}{guess}. "
        f"{cls.__name__} takes {', '.join(ours) or 'no options of its own'}, and TorchMetrics' "
        f"{', '.join(TORCHMETRICS_OPTIONS)}."
    )


class GuardedMetric(TensorArithmetic, CheckpointedStates):
    """What every stateful metric of the package adds to :class:`torchmetrics.Metric`, task dimension or not.

    * **A rejected update changes nothing.** TorchMetrics' update wrapper counts the call before
      ``update`` runs; when ``update`` raises, the update counter (``update_called``) and the
      cached ``compute`` value are put back.
    * **States named after their settings** (:meth:`_setting_state_name`), so that
      :class:`~torchmetrics.MetricCollection` never merges two settings into one compute group,
      with checkpoints saved before a rename still loading.
    * **Checked merges.** ``merge_state`` refuses states of other settings, shapes or dtypes and drops a
      ``compute`` value cached before the merge.
    * **Checked checkpoints.** ``load_state_dict`` refuses a checkpoint of other settings instead
      of loading states that mean something else: another metric's (the class saved in the
      checkpoint's metadata: ``AUPRC`` reading an ``AUC``'s), a tensor state of another shape (another
      ``num_tasks``, ``num_bins``, ``num_segments``...), a list state that is not a list of
      tensors, or settings recorded in the checkpoint's metadata (:meth:`_checkpoint_settings`,
      e.g. ``num_tasks`` for the exact modes whose list states do not show it, or a ranking
      metric's ``queries_complete_per_batch``, whose sums share names with the other mode's) that
      differ from this metric's, or that its state names show (:meth:`_settings_shown_by`) where
      the metadata does not record them. Like ``nn.Module``'s size mismatch, this is an error
      with ``strict=True`` and ``strict=False`` alike, naming the state, the checkpoint's value and the expected one;
      the metric's own states are then left as they were (other modules of the same
      ``load_state_dict`` may have loaded: start again from a fresh or ``reset`` metric). A
      checkpoint that holds none of the metric's states (TorchMetrics' default: states are not
      persistent) loads nothing into it and is not checked. A checkpoint without metadata (a
      plain dict, or one written before) is checked by its state shapes and by the settings its
      state names show.
    * **All of a metric's states or none.** A checkpoint that holds only some of its saved states
      (the persistent ones; every state if none is persistent: a state declared
      ``persistent=False`` is never saved and so never missed) because it is another setting's,
      such as ``from_logits``, or an older format written before a state was added, loads none of
      them: all of its persistent states are missing keys and a note says which states it held
      (and, where its state names show them, the settings it was saved with, e.g.
      ``MulticlassRecallAtK``'s ``k``), in the error or a ``UserWarning``. ``strict=False``
      resumes the rest of the checkpoint and the metric starts afresh (every state at its default,
      as after ``reset``); ``strict=True`` refuses the checkpoint and, like every load that fails
      for the metric's entries, leaves the metric exactly as it was: states, update count and
      cached value, also in a load through a parent module (a ``LightningModule``'s checkpoint
      restore), whose error then holds the note (:func:`~torchmetrics_ext.metrics._checkpoints.load_own_entries`).
      A parent's load that raises for another module's entries only leaves this metric loaded, as
      ``nn.Module`` leaves the parent's other children. Loading the states it holds next to zeros
      for the others mixed sums of two runs.
    * **States keep their dtypes** under every dtype conversion but ``set_dtype``: ``.to(dtype)``,
      ``.to(device, dtype)``, ``.half()``, ``.bfloat16()`` and the ``model.to(dtype)`` of
      Lightning's ``"bf16-true"``/``"16-true"`` precision move the states to the device asked for
      and leave their dtypes (float64 sums, float32 scores, int64 ids) and ``metric.dtype`` as
      they are (:meth:`_apply`). TorchMetrics guards ``.half()``, ``.float()``, ``.double()``,
      ``.bfloat16()`` and ``.type()`` by name, not ``.to(dtype)``: a model's ``.to(torch.bfloat16)``
      cast the sums of its metrics, which then stopped growing (a bfloat16 sum of ones stays at 256).

    :class:`TaskMetric` builds on it; so does :class:`~torchmetrics_ext.Throughput`, which has no
    task dimension.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import CTR, GuardedMetric
        >>> metric = CTR()
        >>> isinstance(metric, GuardedMetric)
        True
        >>> metric.update(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 0]))
        >>> metric.update(torch.tensor([0.5]), torch.tensor([2]))  # rejected: counts as no update
        Traceback (most recent call last):
        ValueError: Expected `target` to hold labels in [0, 1] (soft labels allowed), got values in [2, 2].
        >>> metric.update_count, metric.compute()  # one click in three rows
        (1, tensor(0.3333, dtype=torch.float64))
        >>> metric.merge_state(CTR(num_tasks=2))  # states of another setting are refused
        Traceback (most recent call last):
        ValueError: Cannot merge a CTR with settings {'num_tasks': 2} into one with {'num_tasks': 1}.
        >>> metric = metric.to(torch.bfloat16)  # a model's cast leaves the float64 sums alone
        >>> sorted({state.dtype for state in metric.metric_state.values()}, key=str)
        [torch.float64]
    """

    # compute's value keeps its shape when it holds one element: TorchMetrics squeezes every such
    # result to 0-dim, which a value documented with a dimension besides the tasks (per segment,
    # label or bin: (S,), (L,), (B,)) must not lose (see keep_value_shapes)
    _keeps_value_shape: ClassVar[bool] = False
    # set with full_state_update=True only to keep TorchMetrics' Running away (Throughput, TowerQPS:
    # states that combine across ranks, not across batches): merge_state still adds them by their
    # reductions, which TorchMetrics' own merge_state refuses for full_state_update metrics
    _merges_by_reductions: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValueError as error:
            raise unexpected_options(type(self), error) from None

    def add_state(
        self,
        name: str,
        default: list | Tensor,
        dist_reduce_fx: str | Callable | None = None,
        persistent: bool = False,
    ) -> None:
        """TorchMetrics' ``add_state``; a floating default that repeats one value is kept as that one element.

        TorchMetrics keeps a full copy of every default for ``reset``, besides the state itself:
        a ``Distribution``'s 4,839 bucket counts (38.7 kB), a binned AUC's histogram or a
        ``Segmented`` metric's ``(T, S)`` sums cost twice their size. A default of zeros (any one
        value) is kept instead as a stride-0 view of one element of that shape: ``reset`` clones it
        into a full, writable state as before, and device moves and ``set_dtype`` keep it one element.
        A default on the meta device (a metric built under ``with torch.device("meta")``) has no values to
        compare and is kept as given.

        The state and its default are ordinary tensors when the metric is built under
        ``torch.inference_mode()`` too (a metric made in a validation hook or ``evaluate``): an
        inference tensor state made the first ``update`` outside inference mode fail ("Inplace
        update to inference tensor outside InferenceMode"), as it does for TorchMetrics' metrics.
        """
        self.__dict__.pop("_forward_states", None)  # asked again by forward (see TaskMetric._sums_forward)
        with torch.inference_mode(False):
            if isinstance(default, Tensor) and default.is_inference():
                default = default.clone()
            super().add_state(name, default, dist_reduce_fx, persistent)
            kept = self._defaults[name]
            if isinstance(kept, Tensor) and kept.is_floating_point() and kept.numel() > 1 and not kept.is_meta:
                first = kept.reshape(-1)[:1]
                if bool((kept == first).all()):
                    self._defaults[name] = _one_element(first.clone(), kept.shape)

    def set_dtype(self, dst_type: str | torch.dtype) -> Metric:
        """TorchMetrics' ``set_dtype``; the states it casts are ordinary tensors under ``torch.inference_mode()`` too.

        A metric that casts its states in its constructor (the float64 aggregations), built under
        inference mode, would otherwise hold inference tensors (see :meth:`add_state`).

        Raises:
            TypeError: ``dst_type`` is not a floating dtype the states can sum in (an integer, bool,
                complex or float8 dtype, or a name torch does not know); nothing changes
                (:func:`~torchmetrics_ext.utilities.checks.check_state_dtype`).
        """
        check_state_dtype(dst_type)
        with torch.inference_mode(False):
            return super().set_dtype(dst_type)

    @torch.inference_mode(False)  # states moved under inference mode stay ordinary tensors (see add_state)
    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> Module:
        """TorchMetrics' ``_apply`` with any dtype cast left out unless it comes from ``set_dtype``.

        ``fn`` is what ``nn.Module`` applies to every tensor (``.to``, ``.cuda``, ``.half``, ...):
        outside ``set_dtype`` only its device move reaches the states, the cached values and the
        submodules (see :func:`move_only`), and ``metric.dtype`` stays (TorchMetrics resets it to
        float32 on any ``.to``). A default kept as one element (see :meth:`add_state`) is moved or
        cast as that element. The moved states are ordinary tensors under ``torch.inference_mode()``
        too: a later update outside it writes into them in place.
        """
        defaults = self._defaults
        compact = {n: d for n, d in defaults.items() if isinstance(d, Tensor) and _is_one_element(d)}
        for name, default in compact.items():
            defaults[name] = default.reshape(-1)[:1]
        try:
            if self._dtype_convert:
                return super()._apply(fn, exclude_state)
            dtype = self._dtype
            this = super()._apply(move_only(fn), exclude_state)
            self._dtype = dtype
            return this
        finally:
            for name, default in compact.items():
                moved = defaults[name]
                defaults[name] = _one_element(moved, default.shape) if isinstance(moved, Tensor) else moved

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = fresh_when_syncing(self, keep_value_shapes(self, compute, super()._wrap_compute))

        @functools.wraps(wrapped)
        def counts_as_updated(*args: Any, **kwargs: Any) -> Any:
            # No TorchMetrics "compute before update" warning: the package answers "nothing seen" itself,
            # from the states that compute reads (synced across ranks), the same way for no update, a
            # reset, only empty or zero-weight batches, and a rank without a batch whose peers saw data
            # (docs/policies.md, "Nothing seen"). TorchMetrics' warning counts this rank's update calls
            # only: it fired on such a rank (when rank 0) though the value was every rank's, never after
            # zero-weight batches, and for states loaded from a checkpoint or merged in (data, not a
            # forgotten update).
            fill_from_source(self)  # a compute group member computed on its own: its leader's states now
            if self.__dict__["_update_count"]:
                return wrapped(*args, **kwargs)
            with counted_as_updated([self]):
                return wrapped(*args, **kwargs)

        return counts_as_updated

    def _wrap_update(self, update: Callable) -> Callable:
        """TorchMetrics' update wrapper, written out, with the bookkeeping put back when ``update`` raises.

        What TorchMetrics' ``wrapped_func`` does (drop the cached value, count the call, run
        ``update`` with gradients as ``_enable_grad`` says, tell a device mismatch plainly, move
        list states with ``compute_on_cpu``), in plain attribute writes (``nn.Module.__setattr__``
        on ``_computed`` and ``_update_count`` cost two of its few microseconds per call) and with
        the grad-mode switch entered only when it changes the mode: per-call cost is part of a
        training step.
        """
        name = type(self).__name__

        @functools.wraps(update)
        def guarded(*args: Any, **kwargs: Any) -> None:
            refuse_while_synced(self, "update")
            self._before_update(args, kwargs)
            state = self.__dict__
            count, computed = state["_update_count"], state["_computed"]
            state["_computed"], state["_update_count"] = None, count + 1
            try:
                grad, enabled = state["_enable_grad"], torch.is_grad_enabled()
                if enabled == grad:
                    update(*args, **kwargs)
                else:  # `with torch.set_grad_enabled(grad)` without its context-manager objects (~1 us a call)
                    torch._C._set_grad_enabled(grad)
                    try:
                        update(*args, **kwargs)
                    finally:
                        torch._C._set_grad_enabled(enabled)
            except Exception as err:
                state["_update_count"], state["_computed"] = count, computed
                if isinstance(err, RuntimeError) and "Expected all tensors to be on" in str(err):
                    raise RuntimeError(  # TorchMetrics' words
                        "Encountered different devices in metric calculation (see stacktrace for details)."
                        " This could be due to the metric class not being on the same device as input."
                        f" Instead of `metric={name}(...)` try to do"
                        f" `metric={name}(...).to(device)` where"
                        " device corresponds to the device of the input."
                    ) from err
                raise
            if state["compute_on_cpu"]:
                self._move_list_states_to_cpu()
            if "_cast_dtype" in state:
                self._cast_new_chunks()
            self._join_small_chunks()

        return guarded

    def _before_update(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Checks of the arguments before TorchMetrics counts the call (none here)."""

    def _cast_new_chunks(self) -> None:
        """After a cast of the states, bring an update's new list-state chunks to it (see :class:`TaskMetric`)."""

    def _join_small_chunks(self) -> None:
        """After an update, join the newest small chunks of the list states (see :class:`TaskMetric`)."""

    def _join_merged_chunks(self) -> None:
        """After ``merge_state``, join the list states' small chunks from time to time (see :class:`TaskMetric`)."""

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """TorchMetrics' ``sync``, dropping a value computed from the local states.

        TorchMetrics keeps a ``compute`` value cached across a manual ``sync()``: with
        ``sync_on_compute=False``, ``compute(); sync(); compute()`` returned the local value
        again. Here the next ``compute`` computes from the synced states.

        A rank outside the metric's process group (``dist.new_group(ranks)`` called on a rank not in
        ``ranks``) has no other rank to sync with: it keeps its own states (TorchMetrics gathered
        from no rank and failed, "stack expects a non-empty TensorList").
        """
        if outside_group(process_group or self.process_group):
            should_sync = False
        sync = super().sync
        recomputed_after(self, lambda: sync(dist_sync_fn, process_group, should_sync, distributed_available))

    def reset(self) -> None:
        """TorchMetrics' ``reset``; the states it makes are ordinary tensors, under ``torch.inference_mode()`` too.

        TorchMetrics clones each default, which under inference mode (a Lightning validation or
        sanity-check hook that resets or logs a metric) gives inference tensors: the next
        ``update`` outside inference mode then failed on its in-place sums ("Inplace update to
        inference tensor outside InferenceMode").

        List states get new empty lists rather than being emptied in place (TorchMetrics'
        ``clear()``): a caller that kept the state it read (TorchMetrics' ``Running`` wrapper
        keeps each batch's states, then resets the metric) keeps its rows. The old lists are
        freed as before once nothing refers to them; a ``MetricCollection`` links its compute
        groups' states again after a reset.

        Each reset is counted (:func:`~torchmetrics_ext.metrics._checkpoints.resets_taken`): a
        ``RecMetricModule`` tells a compute group member reset on its own from one it reset itself, and
        the record of the saved ranks whose states it held (:func:`~torchmetrics_ext.metrics._checkpoints.saved_ranks`)
        is forgotten: it holds none of them now.
        """
        held = held_states(self)
        note_saved_ranks(self, None)
        for name, default in self._defaults.items():
            if isinstance(default, list):
                setattr(self, name, [])
        with torch.inference_mode(False):
            super().reset()
        _count_reset(self, held)

    def _copy_state_dict(self) -> dict[str, Tensor | list[Any]]:
        """TorchMetrics' copy of the states (``forward``, ``sync``), list states copied shallowly.

        TorchMetrics clones every chunk of a list state, so each ``forward`` copied every sample
        kept so far (exact AUC driven by ``forward``: 1.5 ms per call after 50 batches, 6 ms
        after 400, growing with the run). The package never writes a stored chunk in place (an
        update appends new chunks, joins and casts replace them), so the copy shares them.
        """
        copied: dict[str, Tensor | list[Any]] = {}
        for name in self._defaults:
            value = getattr(self, name)
            if isinstance(value, Tensor):
                copied[name] = value.detach().clone()
            else:
                copied[name] = [c.detach() if isinstance(c, Tensor) else deepcopy(c) for c in value]
        return copied

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """TorchMetrics' ``forward``; under ``torch.inference_mode()`` the states are left ordinary tensors.

        TorchMetrics' ``forward`` joins the batch's states to the accumulated ones out of place,
        which under inference mode makes inference tensors (see :meth:`reset`); they are copied
        back into ordinary ones (only under inference mode: a copy of each tensor state).
        """
        ranks = saved_ranks(self)  # TorchMetrics' round resets the metric, then adds the held states back
        try:
            value = super().forward(*args, **kwargs)
        finally:
            note_saved_ranks(self, ranks)
        if torch.is_inference_mode_enabled():
            self._ordinary_states()
        return value

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """``copy.deepcopy`` (``clone``); under ``torch.inference_mode()`` too, the copy's tensors are ordinary.

        A copy made in a Lightning validation hook (``metric.clone()``, TorchMetrics'
        ``MetricTracker.increment()``) held inference tensors, and its first ``update`` outside
        inference mode failed ("Inplace update to inference tensor outside InferenceMode").
        """
        return deepcopy_ordinary(self, memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """TorchMetrics' ``__setstate__``; unpickled under ``torch.inference_mode()`` the tensor states are ordinary.

        ``pickle.loads`` or ``torch.load`` under inference mode rebuild every tensor as an inference
        tensor, which the next ``update`` outside it could not add to (see :meth:`__deepcopy__`).
        """
        ordinary_tensors(state)
        super().__setstate__(state)

    def _ordinary_states(self) -> None:
        """Replace tensor states that are inference tensors by ordinary copies (list chunks are never written)."""
        with torch.inference_mode(False):
            for name in self._defaults:
                value = getattr(self, name)
                if isinstance(value, Tensor) and value.is_inference():
                    setattr(self, name, value.clone())

    def unsync(self, should_unsync: bool = True) -> None:
        """TorchMetrics' ``unsync``, dropping a value computed from the synced states (see :meth:`sync`)."""
        unsync = super().unsync
        recomputed_after(self, lambda: unsync(should_unsync))

    @contextmanager
    def sync_context(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        should_unsync: bool = True,
        distributed_available: Callable | None = None,
    ) -> Iterator[None]:
        """TorchMetrics' ``sync_context``, restoring this rank's own states also when the body raises.

        TorchMetrics unsyncs only when the body returns: a ``compute`` that raised under DDP (out of
        memory on a large exact state, an interrupt) left the metric holding every rank's gathered
        states, so each later ``update``, ``merge_state`` or load was refused as "synced" and a
        retried ``compute`` raised too. Here the states are restored as they are after a body that
        returns (where ``should_unsync`` asks for it and the sync happened).
        """
        self.sync(
            dist_sync_fn=dist_sync_fn,
            process_group=process_group,
            should_sync=should_sync,
            distributed_available=distributed_available,
        )
        try:
            yield
        finally:
            self.unsync(should_unsync=self._is_synced and should_unsync)

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """TorchMetrics' ``merge_state``, refusing states of other settings and dropping a cached value.

        TorchMetrics adds tensor states with broadcasting (a 3-task state merged into a 1-task
        metric gave a ``(3,)`` value) and keeps a ``compute`` value cached before the merge (the
        next ``compute`` returned it, without the merged states).

        Raises:
            ValueError: a metric of another class (``AUC().merge_state(AUPRC())``: states of the same
                names may hold other data or compute another value; only a dict of states is taken
                by its names), of other recorded settings (``num_tasks``), states of other names
                (another mode or setting: an exact ranking metric's samples merged into a
                ``queries_complete_per_batch`` one would be dropped), of another shape or kind
                (see ``load_state_dict``) or of a dtype a checkpoint's state may not have (an
                integer or bool sum, a float64 sum into a metric cast to float16, bool ids: the
                rule of ``utilities/state_dtypes.py``; a narrower floating state is widened
                exactly), or flat sample rows that are not whole samples of this metric's tasks
                (a dict of an exact mode's states records no ``num_tasks``: rows of another
                ``num_tasks`` that divide evenly are only told apart when the metric itself is
                merged); nothing changes.

        Under ``torch.inference_mode()`` the merged states are ordinary tensors (as after
        ``reset``): a later update outside it writes into them in place.
        """
        refuse_while_synced(self, "merge_state")
        merged = incoming_state
        if not isinstance(incoming_state, (dict, Metric)):  # TorchMetrics' check, before anything is read
            raise WrongTypeError(
                f"Expected incoming state to be a dict or an instance of Metric but got {type(incoming_state)}"
            )
        # a Windowed holds no states of its own (they are its lifetime's and window's)
        other = (
            incoming_state if isinstance(incoming_state, Metric) and type(incoming_state) is not type(self) else None
        )
        if isinstance(getattr(other, "lifetime", None), Metric):
            raise ValueError(
                f"Cannot merge {article(type(incoming_state).__name__)} into {type(self).__name__}: it holds no "
                "states of its own; merge its lifetime (`metric.merge_state(other.lifetime)`)."
            )
        if isinstance(incoming_state, Metric):
            # another class's states may share these names (AUC and AUPRC both keep the scored samples, the
            # regression metrics the same error sums) and yet another value is computed from them, or the
            # states hold something else (a RecalibratedNE's sums are of recalibrated predictions)
            theirs_kind, ours_kind = merged_kind(incoming_state), merged_kind(self)
            if theirs_kind != ours_kind:
                raise ValueError(
                    f"Cannot merge {article(theirs_kind)} into {article(ours_kind)}: merge_state takes "
                    f"{article(ours_kind)} (or a dict of its states); {article(theirs_kind)}'s states are not this "
                    "metric's, even where their names are."
                )
        if isinstance(incoming_state, GuardedMetric):
            theirs, ours = incoming_state._checkpoint_settings(), self._checkpoint_settings()
            if merge_settings_differ(
                theirs,
                ours,
                same_states=self._states_under_own_names(dict.fromkeys(incoming_state._defaults)).keys()
                == self._defaults.keys(),
            ):
                raise ValueError(
                    f"Cannot merge {article(type(self).__name__)} with settings {theirs} into one with {ours}."
                )
        states = incoming_state.metric_state if isinstance(incoming_state, Metric) else incoming_state
        if isinstance(states, dict):
            states = self._states_under_own_names(states)
            if not isinstance(incoming_state, Metric):
                # a dict of an earlier version's states (a checkpoint's: NE's without `neg_labels`) lacks the
                # states added since: derived from the others, as load_state_dict derives them
                states = dict(states)
                derive_missing(states, self._merge_derivations())
            states = self._as_list_states(states)
            problems = self._merge_problems(states)
            if problems:
                raise ValueError(f"Cannot merge into {type(self).__name__}: " + " ".join(problems))
            incoming_state = self._in_state_dtypes(states)
        with torch.inference_mode(False):  # the merged states are ordinary tensors, under inference mode too
            if self._merges_by_reductions and not self.dist_sync_on_step:
                if isinstance(incoming_state, Metric):
                    if not isinstance(incoming_state, type(self)):
                        raise WrongTypeError(
                            f"Expected incoming state to be an instance of {type(self).__name__}, "
                            f"got {type(incoming_state).__name__}."
                        )
                    incoming_state = incoming_state.metric_state
                self._reduce_states(incoming_state)
            else:
                super().merge_state(incoming_state)
        self._join_merged_chunks()
        self._computed = None
        _count_states_written(self)
        carry_saved_ranks(self, merged)  # a module's units: the saved ranks whose states they hold

    def _states_under_own_names(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """``states`` under this metric's names: those named as checkpoints or the other ``validate_args`` names them.

        See :meth:`TaskMetric._unchecked_state_name`: only the in-memory names differ. A name is mapped
        as attribute reads and writes map it (:meth:`_memory_name`, the one mapping); any other name is
        left as it is, for :meth:`_merge_problems` to report: an unvalidated metric whose ``weight_sum``
        is named alike for either setting takes no ``weight_sum_unchecked``, which no metric holds.
        """
        states = dict(states)
        defaults = self._defaults
        for name in list(states):
            if name in defaults:
                continue
            ours = self._memory_name(name)
            if ours is not None and ours in defaults and ours not in states:
                states[ours] = states.pop(name)
        return states

    def _merge_derivations(self) -> dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]]:
        """The load rules (``_derived_states``) a dict given to :meth:`merge_state` is completed by: none here.

        Sum states derived linearly from others (NE's ``neg_labels`` as ``total - pos``) merge as they load;
        the classes holding such rules say so (other metrics' merges read the dict's states themselves).
        """
        return {}

    def items(self) -> Any:
        """Not a mapping of metrics: raises ``TypeError`` saying what to log instead.

        ``LightningModule.log_dict(metric)`` (as one would pass a ``MetricCollection``) iterates ``items()``.

        Raises:
            TypeError: always, naming ``self.log_dict(metric.compute())`` for a dict value, ``self.log`` otherwise.
        """
        raise not_a_dict_of_metrics(self)

    def values(self) -> Any:
        """Not a mapping of metrics: raises the ``TypeError`` of :meth:`items`.

        ``LightningModule.log_dict(metric)`` on a model set up by ``lightning.fabric.Fabric`` reads ``values()``
        first (Lightning's route through Fabric), where the missing method failed with Python's bare "object has
        no attribute 'values'".

        Raises:
            TypeError: always, as :meth:`items`.
        """
        raise not_a_dict_of_metrics(self)

    @property
    def metric_state(self) -> dict[str, list[Tensor] | Tensor]:
        """TorchMetrics' ``metric_state`` named as ``state_dict`` saves them; states an owner writes, written first.

        A :class:`~torchmetrics_ext.Windowed`'s window metric (and a binned metric's lifetime) read
        through a reference kept across updates: see
        :func:`~torchmetrics_ext.utilities.ownership.write_deferred_states`. ``merge_state`` of such a
        metric reads its states here. An unvalidated metric names its states ``<name>_unchecked``
        in memory only (:meth:`TaskMetric._unchecked_state_name`): here they are ``<name>`` under
        either ``validate_args``, in the order of ``_defaults``, as ``Sum``'s are TorchMetrics' names.
        """
        write_deferred_states(self)
        states = super().metric_state
        saved_names = self.__dict__.get("_saved_state_names")
        return {saved_names.get(name, name): value for name, value in states.items()} if saved_names else states

    def _as_list_states(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """``states`` with a list state given as one tensor (a synced metric's: its chunks joined) as a list of it."""
        return {
            name: [value] if isinstance(value, Tensor) and isinstance(self._defaults.get(name), list) else value
            for name, value in states.items()
        }

    def _merge_problems(self, states: Mapping[str, Any]) -> list[str]:
        """What keeps ``states`` from merging into this metric: other state names, shapes or kinds.

        The names must be exactly this metric's: TorchMetrics reduces this metric's states only, so
        an incoming state it does not hold would be dropped without a word, and one it lacks
        raises only after the states before it were merged.
        """
        missing = [n for n in self._defaults if n not in states]
        unexpected = [n for n in states if n not in self._defaults]
        if missing or unexpected:
            found = (("missing", missing), ("unexpected", unexpected))
            differences = [f"{what} {names}" for what, names in found if names]
            return [
                f"the incoming states {sorted(states)} are not this metric's {sorted(self._defaults)} "
                f"({', '.join(differences)}): a metric of another mode or setting."
            ]
        origin = "merged metric"
        return self._state_problems(states, "", origin=origin) or self._dtype_problems(states, "", origin=origin)

    def _in_state_dtypes(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """``states`` (checked by :meth:`_dtype_problems`) with each tensor state cast to this metric's dtype of it.

        A narrower floating state merges as a load takes it: widened exactly, so a sum reduced with
        it stays in this metric's dtype (``float32 + float64`` would be ``float64`` anyway, but a
        ``max`` or a custom reduction need not promote). List states' chunks keep their dtypes.
        """
        return {
            name: value.to(default.dtype)
            if isinstance(value, Tensor) and isinstance(default := self._defaults.get(name), Tensor)
            else value
            for name, value in states.items()
        }

    # ------------------------------------------------------------------ checkpoints


def syncs_on_compute(metric: Metric) -> bool:
    """Whether ``metric.compute()`` syncs its states across processes now (as TorchMetrics' ``sync`` decides)."""
    if not metric._to_sync or metric._is_synced:
        return False
    available = metric.distributed_available_fn
    return bool(available()) if callable(available) else False


def fresh_when_syncing(metric: Metric, compute: Callable) -> Callable:
    """``compute`` without TorchMetrics' cached value where it syncs across processes, or unsynced.

    TorchMetrics returns the value cached by the last ``compute()`` when this process has not
    updated since, without syncing. Another rank that did update syncs, and waits for this one in
    a collective it never joins (a hang, or an error from the backend) while this rank returns a
    value without the other's new samples. Every rank that syncs computes afresh instead, so all
    join the same collectives whatever each updated (one more sync where nothing changed).

    And a value computed from states synced by hand (``sync_context()``, ``sync()``) is not kept
    when TorchMetrics' wrapper unsyncs them on its way out: the next ``compute()`` is of this
    rank's own states again (TorchMetrics cached the synced value).
    """

    @functools.wraps(compute)
    def fresh(*args: Any, **kwargs: Any) -> Any:
        return computed_fresh(metric, lambda: compute(*args, **kwargs))

    return fresh


def computed_fresh(metric: Metric, compute: Callable[[], Any]) -> Any:
    """``compute()`` of ``metric`` by the rule of :func:`fresh_when_syncing` (for a metric not wrapped by it)."""
    if metric._computed is not None and syncs_on_compute(metric):
        metric.__dict__["_computed"] = None
    value = None

    def run() -> None:
        nonlocal value
        value = compute()

    recomputed_after(metric, run)  # TorchMetrics unsynced after computing: the value is not of these states
    return value


def keep_value_shapes(metric: Metric, compute: Callable, wrap: Callable[[Callable], Callable]) -> Callable:
    """``wrap(compute)`` (TorchMetrics' compute wrapper), giving back the shapes ``compute`` made when asked.

    TorchMetrics' wrapper squeezes every one-element tensor of the value to 0-dim: a ``(1,)``
    per-segment value of one segment would come back as a scalar, unlike its functional twin.
    When ``metric._keeps_value_shape`` is true, the shapes ``compute`` returned (in any nesting
    of dicts, lists and tuples) are restored on the wrapper's value (cached ones included). The
    shapes are kept in the metric's ``__dict__``, so a copy (``clone``, ``deepcopy``, ``pickle``)
    that carries the cached value carries them too.
    """

    @functools.wraps(compute)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        value = compute(*args, **kwargs)
        metric.__dict__["_value_shapes"] = _shapes(value) if getattr(metric, "_keeps_value_shape", False) else None
        return value

    wrapped = wrap(recorded)

    @functools.wraps(compute)
    def shaped(*args: Any, **kwargs: Any) -> Any:
        value = wrapped(*args, **kwargs)
        shapes = metric.__dict__.get("_value_shapes")
        return value if shapes is None else _reshaped(value, shapes)

    return shaped


def _shapes(value: Any) -> Any:
    """The shape of every tensor of ``value`` (a tensor, or dicts, lists and tuples of them), same nesting."""
    if isinstance(value, Tensor):
        return value.shape
    if isinstance(value, Mapping):
        return {key: _shapes(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return None


def _reshaped(value: Any, shapes: Any) -> Any:
    """``value`` with each tensor viewed in its shape from :func:`_shapes` (other entries unchanged)."""
    if isinstance(value, Tensor):
        return value.reshape(shapes) if isinstance(shapes, torch.Size) and value.shape != shapes else value
    if isinstance(value, Mapping) and isinstance(shapes, Mapping):
        return type(value)({key: _reshaped(v, shapes.get(key)) for key, v in value.items()})  # type: ignore[call-arg]
    if isinstance(value, (list, tuple)) and isinstance(shapes, list) and len(shapes) == len(value):
        items = [_reshaped(v, shape) for v, shape in zip(value, shapes)]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    return value


def merged_kind(metric: Metric) -> str:
    """What ``merge_state`` requires a merged metric to be besides its settings: its class (see ``_merged_kind``)."""
    return metric._merged_kind() if isinstance(metric, GuardedMetric) else type(metric).__name__


def merge_settings_differ(theirs: Mapping[str, Any], ours: Mapping[str, Any], same_states: bool) -> bool:
    """Whether the recorded settings of two metrics of one class refuse a ``merge_state`` before their states are read.

    A setting both record with different values always does. One that only one of them records
    belongs to another mode (an exact AUC records ``from_logits``, a binned one names its
    histogram after it), whose states have other names: the state check then says so (``the
    incoming states ['hist'] are not this metric's ['preds', 'signed_weights']``) instead of
    settings that read alike (``{'num_tasks': 1}`` against ``{'num_tasks': 1, 'from_logits': False}``).
    Such settings refuse here only where the state names are the same (``same_states``).
    """
    if any(name in theirs and theirs[name] != value for name, value in ours.items()):
        return True
    return theirs != ours and same_states


def one_task(metric: object, kwargs: Mapping[str, Any], instead: str | None = None) -> int:
    """``1``, the ``num_tasks`` of a metric without a task dimension; ``WrongTypeError`` if the caller gave one.

    For the ``__init__`` of such a metric: ``super().__init__(one_task(self, kwargs), ..., **kwargs)``.
    ``instead``: what to do instead, for the message (default: build one metric per task). A keyword the
    metric has no parameter for, refused by name: a ``TypeError`` as it always was, and a ``ValueError`` as
    every other unknown keyword on a metric (TorchMetrics'), so ``except ValueError`` catches it too
    (docs/policies.md, "Wrong types").
    """
    if "num_tasks" in kwargs:
        name = type(metric).__name__
        raise WrongTypeError(
            f"{name} has no task dimension, so it takes no `num_tasks` (got {kwargs['num_tasks']!r}): "
            f"{instead or f'build one {name} per task'}."
        )
    return 1


class TaskMetric(GuardedMetric):
    """A :class:`torchmetrics.Metric` with a leading task dimension on every state.

    Subclasses declare their sufficient statistics with :meth:`_add_task_state` (a float64
    ``(num_tasks,)`` tensor reduced with ``sum`` across batches and ranks, or another reduction)
    and implement ``update``/``compute``. On top of :class:`GuardedMetric` (a rejected update
    leaves the update counter alone, states named after their settings, checked checkpoints,
    which record ``num_tasks``) the class adds three guarantees:

    * a rejected batch leaves the metric exactly as it was, and ``forward`` validates its batch
      *before* it swaps the accumulated state out, so a bad batch in ``forward`` never loses
      what was accumulated;
    * ``compute`` results of one task come back as scalars (:meth:`_squeeze_tasks`);
    * ``set_dtype`` casts floating states only: integer states (ids, counts, encoded keys) keep
      their dtype and exact values (:meth:`_apply`); other casts (``.to(dtype)``) change no
      state's dtype (:class:`GuardedMetric`).

    and three hooks for a caller that drives many metrics at once (``RecMetricModule``):
    :meth:`inputs_validated` (skip per-metric validation of a batch already checked),
    :meth:`sync_states` / :meth:`synced_from` (feed ``compute``'s normal sync with states gathered
    by one fused collective instead of per-state collectives; TorchMetrics still stacks and
    reduces them, caches and unsyncs). :attr:`input_domains` and :attr:`shared_statistics_key`
    describe what the caller may validate jointly and which metrics provably share states;
    ``reads_predictions = False`` says the value depends on the labels and weights alone, and
    ``ranks_predictions = True`` that it depends on the order of the predictions alone.

    Why one class for the task dimension and the safe batch: every metric of the package with
    inputs needs both (a metric without tasks, such as the ranking family, says so with
    ``has_task_dim = False`` and is built once per task by the module), and the orchestrators
    (``Windowed``, ``Segmented``, ``RecMetricModule``) rely on both at once; two mixins would be
    inherited together everywhere and only add an MRO to reason about.

    Inputs put tasks first, ``(T, N)``: TorchMetrics' ``BootStrapper``, which resamples dimension
    0, would resample tasks, so ``update`` refuses a 2-D batch that it hands over (``ValueError``);
    bootstrap single-task metrics fed ``(N,)`` inputs instead.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        validate_args: check every input (shapes, dtypes, devices, value ranges) before use.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``,
            ``compute_on_cpu``, ``dist_sync_fn``, ...).

    Examples:
        A metric of its own (the mean prediction per task), written as ``docs/contributing.md``
        says: float64 task states, a ``_validate`` that raises before any state changes, an
        ``update`` that validates only when :attr:`_check_inputs` says so.

        >>> import torch
        >>> from torchmetrics_ext import TaskMetric
        >>> class MeanPrediction(TaskMetric):
        ...     is_differentiable, higher_is_better = False, None
        ...     def __init__(self, num_tasks=1, **kwargs):
        ...         super().__init__(num_tasks, **kwargs)
        ...         self._add_task_state("pred_sum")
        ...         self._add_task_state("num_samples")
        ...     def _validate(self, preds):
        ...         if not torch.isfinite(preds).all():
        ...             raise ValueError("Expected finite `preds`.")
        ...     def update(self, preds):
        ...         if self._check_inputs:
        ...             self._validate(preds)
        ...         preds = preds.reshape(self.num_tasks, -1).double()
        ...         self.pred_sum += preds.sum(-1)
        ...         self.num_samples += preds.shape[-1]
        ...     def compute(self):
        ...         return self._squeeze_tasks(self.pred_sum / self.num_samples)
        >>> metric = MeanPrediction(num_tasks=2)
        >>> metric.update(torch.tensor([[0.2, 0.4], [1.0, 3.0]]))
        >>> metric.update(torch.tensor([[0.6], [float("nan")]]))  # rejected whole
        Traceback (most recent call last):
        ValueError: Expected finite `preds`.
        >>> metric.compute()  # (0.2 + 0.4) / 2, (1 + 3) / 2
        tensor([0.3000, 2.0000], dtype=torch.float64)
        >>> metric.sample_count(torch.zeros(2, 5)), MeanPrediction()(torch.tensor([1.0, 2.0]))
        (5, tensor(1.5000, dtype=torch.float64))
    """

    full_state_update: bool = False
    # False for metrics without a task dimension (ranking): a caller builds one instance per task
    has_task_dim: ClassVar[bool] = True
    # False for metrics whose value depends on the labels and weights alone (CTR, SumWeights...):
    # a caller may feed them the predictions in any form (RecMetricModule keeps logits for them)
    reads_predictions: ClassVar[bool] = True
    # True for metrics whose value depends on the order of the predictions alone (pairwise
    # concordance): a caller feeding probabilities to other metrics keeps the scores for them, since
    # a sigmoid of equal scores is not always equal on the CPU (its vector and scalar paths differ
    # by an ulp) and would break their ties
    ranks_predictions: ClassVar[bool] = False
    # dimensions of each task's value (of each entry of a dict value) beyond the task dimension: 0
    # for one number per task; Reliability's per-bin curves, per-label or per-segment values have 1.
    # A caller that reports one scalar per key (RecMetricModule) feeds only metrics of 0.
    value_ndim: ClassVar[int] = 0

    def _value_entries(self) -> tuple[str, ...] | None:
        """The keys of the dict ``compute()`` returns (``RankingMetrics``: ``"ndcg@10"``...); ``None`` for one value.

        Known from the settings alone, before any update: a caller names the values ahead of a
        compute (``RecMetricModule``'s keys, which ``RecMetricCallback`` checks on resume). A
        dict-valued metric overrides it with the names its ``compute()`` uses.
        """
        return None

    def __init__(self, num_tasks: int = 1, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        num_tasks = check_int("num_tasks", num_tasks, 1)
        self.num_tasks = num_tasks
        self.validate_args = check_flag("validate_args", validate_args)
        self._inputs_checked = False
        self._list_state_dtypes: dict[str, torch.dtype] = {}
        self._gathered: Mapping[str, list[Tensor]] | None = None
        self._sync_locally = False

    def _add_task_state(self, name: str, dist_reduce_fx: str = "sum", fill: float = 0.0) -> None:
        """Declare a float64 ``(num_tasks,)`` state reduced with ``dist_reduce_fx``."""
        self.add_state(
            name,
            default=torch.full((self.num_tasks,), fill, dtype=torch.float64),
            dist_reduce_fx=dist_reduce_fx,
        )

    def _unchecked_state_name(self, name: str) -> str:
        """``name`` in memory: followed by ``_unchecked`` for an unvalidated metric; checkpoints keep ``name``.

        :class:`~torchmetrics.MetricCollection` puts metrics whose states have the same names and
        equal values after the first update into one compute group, whose first member alone
        updates: a validated metric behind an unvalidated one took the batches it refuses alone.
        ``validate_args`` changes what an update accepts, not what the states hold, so it names the
        states in memory only: ``state_dict`` saves them under ``name`` and either setting's
        checkpoint loads (and its ``metric_state`` merges) into the other.
        """
        if self.validate_args:
            return name
        ours = f"{name}{UNCHECKED_SUFFIX}"
        self._saved_state_names[ours] = name
        # former names noted for `name` (older checkpoints' spellings) load into it under either setting
        self._former_patterns[:] = [(p, ours if n == name else n) for p, n in self._former_patterns]
        self._load_former_names(ours, re.escape(name))
        return ours

    def _checkpoint_settings(self) -> dict[str, Any]:
        """``num_tasks``: exact modes keep it in no state shape (their samples are flat, task-major rows)."""
        return {"num_tasks": self.num_tasks}

    def _add_list_state(self, name: str, dtype: torch.dtype) -> None:
        """Declare an exact ``cat`` list state, gathered across ranks as ``dtype`` (O(n) memory).

        Its chunks may be stored in any dtype; at sync each rank concatenates and casts them to
        ``dtype``, and a rank that saw no batch sends an empty tensor of ``dtype`` (TorchMetrics'
        own placeholder is float32, which cannot be gathered with other ranks' int64 or float64).
        """
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._list_state_dtypes[name] = dtype

    def _join_small_chunks(self) -> None:
        """Join the list states' small chunks, all lists together (after ``update`` and ``forward``).

        One chunk per list and update would cost about 1-2 KB per chunk beyond its rows and make
        ``compute`` loop over every update's chunk. Two joins keep the lists short and aligned (both
        with :meth:`_join_chunks`): :func:`~torchmetrics_ext.utilities.chunks.join_small_tails` joins
        the newest 64 chunks when they are all small (each element is copied a few times), and
        :func:`~torchmetrics_ext.utilities.chunks.join_runs_amortised` joins every run of small
        chunks once the lists have doubled (plus 64) since its last join: the runs the first join
        never sees, between large chunks that arrive at least once in 64 updates (62 updates of 50
        samples then one of 32,768, 100 times, kept 6,300 chunks; now 434: about 4 per large chunk
        at most, plus 64).

        A chunk of ``_WHOLE`` (8,192) elements or more is never copied: its overhead is a few
        percent of its rows at most, and joining 64 of them (2 MB of float32 per list, in fresh
        memory) cost 32 µs per update of 8,192 samples, half of an exact AUC update
        (``benchmarks/README.md``; the amortised run join copying each of their elements once cost
        as much). An update whose newest chunk (of the first list) is that large skips the first
        join, and such chunks end the second join's runs. Lists then hold at most 4 entries per
        such chunk plus ``S / 16384 + 96`` for ``S`` elements in smaller ones: at most about
        ``N / 2048 + 96`` entries for ``N`` elements whatever the batch sizes, about one per update
        where updates are all that large, and ``N / 16384 + 96`` where none is.
        """
        names = self._list_state_dtypes
        if not names:
            return
        state = self.__dict__
        first = state[next(iter(names))]
        # most updates, told by the first list alone (no pass over the lists): too short for the
        # tail join (under `_JOIN` chunks) and for the run join (not over twice its last join's
        # length, nor under it)
        if type(first) is list and len(first) < _JOIN and state.get(_RUNS_JOINED, 0) <= len(first):
            return
        lists = [state[name] for name in names]
        if all(isinstance(chunks, list) for chunks in lists):  # not while synced (one tensor each)
            first = lists[0]
            newest = first[-1] if first else None
            # its size from the shape (no torch call: a fixed cost of every update)
            if not (isinstance(newest, Tensor) and math.prod(newest.shape) >= _WHOLE):
                join_small_tails(lists, join=self._join_chunks)
            # `join_runs_amortised`'s test, inline (a fixed cost of every update)
            length, joined = len(first), state.get(_RUNS_JOINED, 0)
            if length > 2 * joined + _JOIN or length < joined:
                join_runs_amortised(
                    lists, state, frozen=state.get("_chunks_in_use", ()), join=self._join_chunks, large=_WHOLE
                )

    def _join_merged_chunks(self) -> None:
        """Join runs of small list-state chunks after ``merge_state`` once the lists doubled in length.

        ``merge_state`` puts the other metric's chunks before this one's, where the join after
        ``update``'s first rule (:func:`~torchmetrics_ext.utilities.chunks.join_small_tails`, at the
        lists' end) never looks: 32,000 merges of one-sample metrics left 32,000 chunks, and
        ``compute`` 70 times slower than after as many updates. The amortised run join of
        :meth:`_join_small_chunks` (:func:`~torchmetrics_ext.utilities.chunks.join_runs_amortised`,
        the same record of the lists' length, chunks of ``_WHOLE`` elements or more never copied)
        runs after a merge too (each merge costs O(1) amortized; an element merged at the front is
        copied at most about ``32768 / 64`` times).
        Chunks listed in ``_chunks_in_use`` (a :class:`~torchmetrics_ext.Windowed` window's, shared
        with its lifetime) are never joined.
        """
        names = self._list_state_dtypes
        if not names:
            return
        state = self.__dict__
        lists = [state[name] for name in names]
        if not all(isinstance(chunks, list) for chunks in lists):  # not while synced (one tensor each)
            return
        join_runs_amortised(lists, state, frozen=state.get("_chunks_in_use", ()), join=self._join_chunks, large=_WHOLE)

    def _join_chunks(self, chunks: list[Tensor]) -> Tensor:
        """One list state's chunks joined into one tensor (:func:`~torchmetrics_ext.utilities.chunks.join_chunks`)."""
        return join_chunks(chunks)

    @torch.inference_mode(False)  # ordinary tensors under inference mode too (see GuardedMetric._apply)
    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> Module:
        """Move the states; cast them in ``set_dtype`` only, and never an integer state.

        Outside ``set_dtype`` a cast (``.to(dtype)``, ``.half()``, ...) only moves the states
        (:class:`GuardedMetric`). ``set_dtype`` casts the floating states only; an integer or bool
        tensor (group, query and session ids, counts, encoded category keys: any chunk of a list
        state too) moves device with the others but keeps its dtype and its exact values. A
        float16 or float32 copy of an id would merge distinct ids (above 2048 or 2**24) into one.
        """
        if not self._dtype_convert:
            return super()._apply(fn, exclude_state)
        excluded = (exclude_state,) if isinstance(exclude_state, str) else tuple(exclude_state)
        exact = [
            name
            for name, default in self._defaults.items()
            if name not in excluded and (_holds_integers(default) or _holds_integers(getattr(self, name)))
        ]
        this = super()._apply(fn, (*excluded, *exact))  # ``self``, as every ``Module._apply``
        for name in exact:
            self._defaults[name] = _keep_integers(fn, self._defaults[name])
            setattr(self, name, _keep_integers(fn, getattr(self, name)))
        # a cast of the floating states (set_dtype): list states' later chunks follow it
        for probe in (torch.float64, torch.float32):
            cast = fn(torch.zeros(0, dtype=probe)).dtype
            if cast != probe:
                self.__dict__["_cast_dtype"] = cast
                break
        return this

    def _cast_new_chunks(self) -> None:
        """Cast the floating chunks an update appended to a list state to the dtype of an earlier cast.

        After ``set_dtype`` the stored chunks are in the new dtype; chunks appended
        later would keep the metric's own (float32 scores, float64 pair values), so equal values
        would no longer compare equal (a float16 0.4 is 0.39990234). Only the newest chunks are
        looked at (those not yet in the dtype); integer chunks (ids) never change.
        """
        dtype = self.__dict__.get("_cast_dtype")
        if dtype is None:
            return
        for name in self._list_state_dtypes:
            chunks = getattr(self, name)
            first = len(chunks)
            while first > 0 and chunks[first - 1].is_floating_point() and chunks[first - 1].dtype != dtype:
                first -= 1
            for i in range(first, len(chunks)):
                chunk = chunks[i]
                if chunk.ndim == 1 and chunk.numel() > 0 and chunk.stride(0) == 0:  # one stored element: a view
                    chunks[i] = chunk[:1].to(dtype).reshape(()).expand(chunk.shape[0])
                else:
                    chunks[i] = chunk.to(dtype)

    def sync_states(self) -> dict[str, Tensor]:
        """The tensor each state sends at a DDP sync, in state order, without communicating.

        Tensor states are returned as they are; a list state as the concatenation of its chunks
        cast to its declared dtype (an empty tensor of that dtype on a rank without samples).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import AUC, CTR
            >>> metric = CTR()
            >>> metric.update(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
            >>> {name: state.tolist() for name, state in metric.sync_states().items()}
            {'weighted_pred_sum': [1.0], 'weighted_label_sum': [1.0], 'weighted_num_samples': [2.0]}
            >>> auc = AUC()
            >>> auc.update(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))
            >>> auc.update(torch.tensor([0.4]), torch.tensor([1]))
            >>> auc.sync_states()["preds"]  # the chunks of two updates, joined
            tensor([0.2000, 0.9000, 0.4000])
        """
        out: dict[str, Tensor] = {}
        for name in self._reductions:
            value = getattr(self, name)
            if isinstance(value, list):
                dtype = self._list_state_dtypes.get(name)  # undeclared list states keep their chunks' dtype
                if not value:
                    value = torch.zeros(0, dtype=dtype or self.dtype, device=self.device)
                else:
                    value = self._sync_chunks(name, value, dtype)
            out[name] = value
        return out

    def _sync_chunks(self, name: str, chunks: list[Tensor], dtype: torch.dtype | None) -> Tensor:
        """What list state ``name`` sends at a sync: its chunks joined as ``dtype`` (a subclass may encode)."""
        return cat_chunks(chunks, dtype)

    def _fix_gathered(self, name: str, per_rank: list[Tensor]) -> list[Tensor]:
        """State ``name``'s per-rank tensors after a gather, before they are reduced (a subclass may decode)."""
        return per_rank

    @contextmanager
    def synced_from(self, gathered: Mapping[str, list[Tensor]] | None) -> Iterator[None]:
        """Let ``compute`` inside this block sync from states gathered by the caller.

        Args:
            gathered: for every state, the per-rank tensors (rank order) that TorchMetrics'
                ``gather_all_tensors`` would return for :meth:`sync_states`; TorchMetrics then
                stacks and reduces them exactly as in its own sync. ``None`` keeps the local
                states (``compute`` without communication).

        ``compute`` results cached before or inside the block are dropped, so a local value is
        never served as the synced one or the other way round. ``gathered`` may name the states as a
        metric of the other ``validate_args`` does in memory (a ``RecMetricModule`` compute group's
        leader's, see :meth:`_unchecked_state_name`): they are read under this metric's names.
        """
        if gathered is not None and gathered.keys() != self._reductions.keys():
            gathered = self._states_under_own_names(gathered)
        self._gathered, self._sync_locally, self._computed = gathered, gathered is None, None
        try:
            yield
        finally:
            self._gathered, self._sync_locally, self._computed = None, False, None

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        if self._sync_locally:
            return
        for name, value in self.sync_states().items():
            if name in self._list_state_dtypes and isinstance(getattr(self, name), list):
                setattr(self, name, [value])
        if self._gathered is not None:
            dist_sync_fn = _replay(self._gathered, list(self._reductions))
        gather, names = dist_sync_fn, iter(list(self._reductions))  # TorchMetrics gathers in state order

        def sync_fn(tensor: Tensor, group: Any = None) -> list[Tensor]:
            return self._fix_gathered(next(names), gather(tensor, group))

        super()._sync_dist(sync_fn, process_group)

    @contextmanager
    def inputs_validated(self) -> Iterator[None]:
        """Within this block ``update`` trusts its inputs: the caller has validated them already.

        For a caller that checks one batch for many metrics at once (``RecMetricModule``); the
        inputs must already be what the metric's own validation would accept.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR, NormalizedEntropy
            >>> preds, target = torch.tensor([0.5, 0.5]), torch.tensor([1, 0])  # checked once by the caller
            >>> metrics = [CTR(), NormalizedEntropy()]
            >>> for metric in metrics:
            ...     with metric.inputs_validated():
            ...         metric.update(preds, target)
            >>> [metric.compute() for metric in metrics]  # NE of the base rate's prediction: 1
            [tensor(0.5000, dtype=torch.float64), tensor(1., dtype=torch.float64)]
        """
        previous = self._trust_inputs(True)
        try:
            yield
        finally:
            self._trust_inputs(previous)

    def _trust_inputs(self, trusted: bool) -> bool:
        """Set whether ``update`` trusts its inputs (:meth:`inputs_validated`); return the previous setting."""
        state = self.__dict__  # a plain attribute: skip nn.Module's __setattr__ on this per-step path
        previous, state["_inputs_checked"] = state["_inputs_checked"], trusted
        return previous

    @property
    def input_domains(self) -> InputDomains | None:
        """The input domains of ``update(preds, target, weights)``; ``None`` if not expressible so."""
        return None

    @property
    def shared_statistics_key(self) -> Hashable | None:
        """Equal keys mean provably equal states after any updates (one compute group); ``None``: never shared.

        Examples:
            >>> from torchmetrics_ext import LogLoss, NormalizedEntropy
            >>> NormalizedEntropy().shared_statistics_key == LogLoss().shared_statistics_key  # the same sums
            True
            >>> LogLoss().shared_statistics_key == LogLoss(from_logits=True).shared_statistics_key
            False
        """
        return None

    @property
    def _check_inputs(self) -> bool:
        """Whether this call of ``update`` must validate (``forward`` validates once up front)."""
        return self.validate_args and not self._inputs_checked

    def _validate(self, *args: Any, **kwargs: Any) -> None:
        """Validate one batch without touching state. Subclasses that validate override this."""

    def _squeeze_tasks(self, value: Tensor) -> Tensor:
        """Return a scalar for a single-task metric and the ``(T,)`` tensor otherwise."""
        return value.squeeze(0) if self.num_tasks == 1 and value.ndim > 0 else value

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot one value or a sequence of values (``compute()`` when ``val`` is None); needs matplotlib.

        Args:
            val: a value returned by ``compute``/``forward``, or a list of them (plotted over steps).
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.

        A value with more than one dimension (``(T, L)`` per task and label) is plotted as its
        flattened entries, task by task. A dict value is plotted as one series per number, named
        as :class:`~torchmetrics_ext.Windowed` names them: a per-task ``(T,)`` entry ``precision``
        gives ``precision/0`` ... ``precision/T-1`` (:func:`~torchmetrics_ext.utilities.plot.named_series`).
        """
        if val is None:
            val = self.compute()
        return self._plot(_plottable(val), ax)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Validate the batch, then add it to the states and return its value (TorchMetrics' ``forward``).

        TorchMetrics' ``forward`` (``full_state_update = False``) copies the states, resets them,
        updates with the batch, computes, then adds the copies back: four passes of Python
        bookkeeping over the states per call. A metric whose states are all fixed-shape tensors
        reduced by ``sum`` and/or list states reduced by ``cat`` (default ``[]``) needs none of it
        (:meth:`_sums_forward`): the batch is updated into fresh default states (what TorchMetrics'
        reset gives: zeros, empty lists), its value is ``compute`` of them, the held sums are rebound
        to ``held + batch`` out of place and the held lists to new lists ``held + batch chunks``, as
        TorchMetrics' reduction does (a ``MetricCollection`` whose compute group shares the states
        sees the same rebinding: the shared objects are never written), and the lists' small chunks
        are then joined as after TorchMetrics' round. The values, warnings, gradients, chunks and the
        context TorchMetrics leaves (``_forward_cache``, sync flags, the reset note of
        :func:`~torchmetrics_ext.metrics._checkpoints.resets_taken`) are the same.

        TorchMetrics' path is kept for the others: ``max``/``min``/custom reductions, list states
        with another default, ``dist_sync_on_step``, ``compute_on_cpu``, synced metrics, classes
        that override ``forward``, ``reset`` or ``_reduce_states`` or set ``full_state_update``.
        Should the update or the batch value raise all the same (``validate_args=False``, or a
        value only ``compute`` rejects), the states accumulated before are put back (the same
        objects): nothing is lost.
        """
        if self._sums_forward():
            return self._forward_by_sums(args, kwargs)
        if self.validate_args:
            self._require_arguments(args, kwargs)
            self._validate(*args, **kwargs)
        # TorchMetrics' reset rebinds tensor states and clears list states in place: keep both
        states = {k: v if isinstance(v, Tensor) else list(v) for k, v in self.metric_state.items()}
        context = {name: self.__dict__[name] for name in _FORWARD_CONTEXT if name in self.__dict__}
        # the held lists' record of the amortised run join: the batch's own update (of the reset lists) lowers it
        runs_joined = self.__dict__.get(_RUNS_JOINED, 0)
        self._inputs_checked = True
        try:
            value = super().forward(*args, **kwargs)
            # TorchMetrics' forward appends the batch's chunks to the lists itself (after the update)
            self.__dict__[_RUNS_JOINED] = runs_joined
            self._join_small_chunks()
            return value
        except BaseException:
            for name, value in states.items():
                current = getattr(self, name)
                if isinstance(current, list):
                    current[:] = value  # the same list object: a caller may hold it (a window's binding)
                else:
                    setattr(self, name, value)
            self.__dict__.update(context)
            self.__dict__[_RUNS_JOINED] = runs_joined
            raise
        finally:
            self._inputs_checked = False
            self._after_forward()

    def _after_forward(self) -> None:
        """Drop what ``_validate`` left for the update of this ``forward`` (none here; ranking's relevance bound)."""

    def _sums_forward(self) -> bool:
        """Whether :meth:`forward` may skip TorchMetrics' copy/reset/update/compute/reduce round (see there).

        Asked per call: the states a metric holds may depend on its settings (``AUC`` keeps
        histograms with ``num_bins`` and lists without) and the flags may change between calls.
        The states' kinds are read once per ``add_state`` (:func:`_forward_states`).
        """
        state = self.__dict__
        if (
            state["_is_synced"]
            or state["compute_on_cpu"]
            or state["dist_sync_on_step"]
            or state["_enable_grad"]
            or not _forwards_by_sums(type(self))
        ):
            return False
        split = state.get("_forward_states", _ABSENT)
        if split is _ABSENT:  # kept until the next add_state
            split = state["_forward_states"] = _forward_states(state["_defaults"], state["_reductions"])
        if split is None:
            return False
        # a list state loaded or merged as one tensor is reduced by torch.cat in TorchMetrics' round
        return all(type(state[name]) is list for name in split[1])

    @classmethod
    def _update_hands_statistics(cls) -> bool:
        """Whether ``update`` hands its batch statistics to :meth:`forward`'s sums path (False here).

        Such an ``update``, while ``_forward_batch`` is in the metric's ``__dict__``, appends there
        ``(state names, tensors)`` (what it would add to each state, distinct names) instead of adding
        them. Its states start at zero and its statistics are sums, never -0.0 (a sum starts from
        +0.0): they are then the batch states bit for bit (``0 + s`` is ``s``), which ``forward`` takes
        as they are, saving a copy and an add of every state; after a ``set_dtype`` cast they are cast to
        the states' dtype first (``0 + s`` in that dtype), so the states keep it.
        """
        return False

    @classmethod
    def _update_validates(cls) -> bool:
        """Whether ``update`` itself runs all of ``_validate``'s checks when :attr:`_check_inputs` (False here).

        :meth:`forward` then leaves the checks to it (the batch is formatted once) instead of
        validating up front and updating with the inputs trusted.
        """
        return False

    def _forward_by_sums(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`forward` of a metric of sum and/or list states: the batch updated into fresh states (see there)."""
        state = self.__dict__
        checked = not _update_validates(type(self))
        if checked and state["validate_args"]:
            self._require_arguments(args, kwargs)
            self._validate(*args, **kwargs)
        held, count, computed = held_states(self), state["_update_count"], state["_computed"]
        defaults = state["_defaults"]
        sum_names, list_names = state["_forward_states"]
        names = tuple(defaults)
        kept = [state[name] for name in names]
        # the kept lists' record of the amortised run join: the batch's own update (of fresh lists) lowers it
        runs_joined = state.get(_RUNS_JOINED, 0)
        handed: list[tuple[Sequence[str], Sequence[Tensor]]] = []
        if not list_names and _hands_statistics(type(self)):
            state["_forward_batch"] = handed  # update hands its statistics over instead of adding them
        else:
            state.update(zip(names, _fresh(defaults)))
        # as TorchMetrics' forward: the batch's update runs with gradients on (the value carries them
        # where the inputs do and the caller's grad mode is on), and its compute does not sync
        state["_inputs_checked"], state["_enable_grad"] = checked, True
        try:
            self.update(*args, **kwargs)  # a batch it rejects leaves the count and cached value as they were
            if "_forward_batch" in state:
                del state["_forward_batch"]
                # the states TorchMetrics' update of the reset metric makes: 0 + statistics, the statistics
                keys, stats = handed[0] if handed else ((), ())
                if len(keys) == len(names):
                    if "_cast_dtype" in state:  # after set_dtype: in the states' dtype, as added to a reset state
                        stats = [stat.to(defaults[key].dtype) for key, stat in zip(keys, stats)]
                    state.update(zip(keys, stats))
                else:  # an empty batch, or statistics of some states only: added to fresh states
                    state.update(zip(names, _fresh(defaults)))
                    if keys:
                        torch._foreach_add_([state[key] for key in keys], list(stats))
            value = self._batch_value()
        except BaseException:  # nothing was added: the held objects are put back (a holder's binding stays valid)
            state.pop("_forward_batch", None)
            state.update(zip(names, kept))
            state["_update_count"], state["_computed"] = count, computed
            raise
        finally:
            state["_inputs_checked"] = state["_enable_grad"] = False
            state[_RUNS_JOINED] = runs_joined
            self._after_forward()
        if list_names:
            self._add_batch_states(dict(zip(names, kept)), sum_names, list_names)
        else:  # sum states only (in the order of `names`)
            # plain attributes (TorchMetrics' states), as its reduction rebinds them
            state.update(zip(names, _sums_added(kept, [state[name] for name in names])))
        _count_reset(self, held)  # what TorchMetrics' reset inside forward notes
        state["_cache"], state["_forward_cache"] = None, value
        state["_should_unsync"], state["_to_sync"] = True, state["sync_on_compute"]
        if torch.is_inference_mode_enabled():
            self._ordinary_states()
        return value

    def _add_batch_states(self, kept: Mapping[str, Any], sum_names: Sequence[str], list_names: Sequence[str]) -> None:
        """Add the batch states of :meth:`_forward_by_sums` to the ``kept`` ones: sums out of place, lists as new lists.

        TorchMetrics' ``cat`` reduction of list states: a new list, the held chunks then the batch's
        (the held list object, which a compute group's members may share, is not written), whose
        small chunks are then joined as after TorchMetrics' round (see :meth:`forward`).
        """
        state = self.__dict__
        if sum_names:
            summed = _sums_added([kept[name] for name in sum_names], [state[name] for name in sum_names])
            state.update(zip(sum_names, summed))
        for name in list_names:
            chunks = state[name]
            # the states keep no graph; a subclass's list may hold other objects (TorchMetrics' round keeps them)
            if any(isinstance(chunk, Tensor) and chunk.requires_grad for chunk in chunks):
                chunks = [chunk.detach() if isinstance(chunk, Tensor) else chunk for chunk in chunks]
            state[name] = kept[name] + chunks
        self._join_small_chunks()

    def _batch_value(self) -> Any:
        """``compute()`` of the batch states as TorchMetrics' compute wrapper returns it inside ``forward``.

        That wrapper, with nothing to sync and nothing cached: the class's ``compute``, one-element
        tensors squeezed to 0-dim (their shapes kept where :attr:`_keeps_value_shape` says) and
        cloned.
        """
        value = type(self).compute(self)
        shapes = _shapes(value) if self._keeps_value_shape else None
        self.__dict__["_value_shapes"] = shapes
        if type(value) is Tensor:
            value = _squeeze_if_scalar(value).clone()
        else:
            value = apply_to_collection(_squeeze_if_scalar(value), Tensor, torch.clone)
        return value if shapes is None else _reshaped(value, shapes)

    def _require_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming an argument ``update`` requires that is given as ``None``."""
        for index, name in _required_parameters(type(self)):
            if (args[index] if index < len(args) else kwargs.get(name, _ABSENT)) is None:
                raise WrongTypeError(f"{type(self).__name__}.update() requires `{name}`, got None.")

    def update_unwrapped(self, *args: Any, **kwargs: Any) -> None:
        """``update`` without TorchMetrics' per-call wrapper, for a caller that drives many metrics per step.

        The same bookkeeping (update counter, cached ``compute`` dropped, both restored when the
        batch is rejected) in a few dictionary writes. Used only where the wrapper adds nothing:
        gradients already off and ``compute_on_cpu`` unset; otherwise this is ``update``.

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR
            >>> metric = CTR()
            >>> with torch.no_grad():
            ...     metric.update_unwrapped(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
            ...     metric.update_unwrapped(torch.tensor([0.5]), torch.tensor([3]))
            Traceback (most recent call last):
            ValueError: Expected `target` to hold labels in [0, 1] (soft labels allowed), got values in [3, 3].
            >>> metric.update_count, metric.compute()  # the rejected batch is not counted
            (1, tensor(0.5000, dtype=torch.float64))
        """
        if self.compute_on_cpu or torch.is_grad_enabled():
            self.update(*args, **kwargs)
            return
        state = self.__dict__
        if state["validate_args"] and not state["_inputs_checked"]:
            self._require_arguments(args, kwargs)
        count, computed = state["_update_count"], state["_computed"]
        state["_update_count"], state["_computed"] = count + 1, None
        try:
            type(self).update(self, *args, **kwargs)
        except Exception:
            state["_update_count"], state["_computed"] = count, computed
            raise
        if "_cast_dtype" in state:
            self._cast_new_chunks()
        self._join_small_chunks()

    def _before_update(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Checks made before the call is counted.

        A required argument given as ``None`` is a ``TypeError`` naming it; a task-first batch resampled by
        TorchMetrics' ``BootStrapper`` along its tasks is a ``ValueError``
        (:func:`~torchmetrics_ext.metrics._bootstrap.refuse_bootstrapped_tasks`).
        """
        if self.validate_args and not self._inputs_checked:
            self._require_arguments(args, kwargs)
            # the bootstrap check's mark read here: no call once this object was updated outside a bootstrap
            mark = self.__dict__.get(_OUTSIDE_BOOTSTRAP)  # a weak reference to the object that set it
            if (mark is None or mark() is not self) and self.sample_axis == -1:
                refuse_bootstrapped_tasks(self, args, kwargs)

    # ------------------------------------------------------------------ samples (the unit of windows)

    def __getstate__(self) -> dict[str, Any]:
        """TorchMetrics' state (pickles, ``deepcopy``, ``clone``) without the bootstrap check's marks.

        The marks are weak references to the object that set them (see
        :func:`~torchmetrics_ext.metrics._bootstrap.refuse_bootstrapped_tasks`): a copy checks its own first update.
        """
        state = super().__getstate__()
        for key in _BOOTSTRAP_MARKS:
            state.pop(key, None)
        return state

    sample_axis: ClassVar[int] = -1
    """Axis of the update's tensors along which samples lie: the last one for ``(N,)``/``(T, N)`` inputs.

    A family whose sample is a row of a 2-D input (padded ``(Q, L)`` ranking lists, ``(N, C)``
    class scores) sets ``0``. :class:`~torchmetrics_ext.Windowed` counts its window in these samples.
    """

    def sample_count(self, *args: Any, **kwargs: Any) -> int:
        """Number of samples in a batch given as ``update``'s arguments (read from shapes: no host sync)."""
        return count_samples(args, kwargs, self.sample_axis)

    def newest_samples(self, n: int, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``update``'s arguments cut to the batch's last ``n`` samples (views, no copy).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import CTR
            >>> preds, target = torch.tensor([0.2, 0.9, 0.4]), torch.tensor([0, 1, 1])
            >>> CTR().newest_samples(2, preds, target, weights=torch.tensor([1.0, 2.0, 3.0]))
            ((tensor([0.9000, 0.4000]), tensor([1, 1])), {'weights': tensor([2., 3.])})
        """
        return newest_samples(n, args, kwargs, self.sample_axis)


def move_only(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` (a function ``nn.Module._apply`` applies to each tensor) without its dtype cast.

    ``fn`` itself when it casts no floating tensor (``.to(device)``, ``.cuda()``, ``.cpu()``);
    for a cast (``.to(dtype)``, ``.to(device, dtype)``, ``.half()``, ``.bfloat16()``, ``.type(...)``)
    a function that moves each tensor to the device ``fn`` would put it on, keeping its dtype.
    A cast is told by its effect, not by its name: ``fn`` changes the dtype of a float64 or of a
    float32 probe (any target dtype differs from one of them).

    Examples:
        >>> import torch
        >>> fn = move_only(lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t)
        >>> fn(torch.tensor([0.1], dtype=torch.float64)).dtype
        torch.float64
    """
    if getattr(fn, "_moves_only", False):
        return fn
    if all(fn(torch.zeros(0, dtype=dtype)).dtype == dtype for dtype in (torch.float64, torch.float32)):
        return fn
    targets: dict[torch.device, torch.device] = {}  # a tensor's device -> the device fn puts it on

    def move(tensor: Tensor) -> Tensor:
        target = targets.get(tensor.device)
        if target is None:
            target = targets[tensor.device] = fn(tensor.new_empty(0)).device
        return tensor.to(target)

    move._moves_only = True  # type: ignore[attr-defined]
    return move


def _holds_integers(value: Tensor | list[Tensor]) -> bool:
    """Whether a state (a tensor or a list of chunks) holds an integer or bool tensor."""
    chunks = value if isinstance(value, list) else [value]
    return any(not (t.is_floating_point() or t.is_complex()) for t in chunks)


def _keep_integers(fn: Callable[[Tensor], Tensor], value: Tensor | list[Tensor]) -> Any:
    """``fn`` of a state (a tensor or a list of chunks), except that it only moves integer and bool tensors.

    An integer tensor gets ``fn`` when ``fn`` keeps its dtype (a move), else ``.to(device)`` of
    the device ``fn`` moves to (the cast left out).
    """
    if isinstance(value, list):
        return [_keep_integers(fn, chunk) for chunk in value]
    if value.is_floating_point() or value.is_complex():
        return fn(value)
    probe = fn(value.new_empty(0))
    return fn(value) if probe.dtype == value.dtype else value.to(device=probe.device)


def _tag(value: float) -> str:
    """A setting as an identifier fragment, exact: ``0.3 -> "0p3"``, ``1e-07 -> "1em07"``, ``3.000004 -> "3p000004"``.

    Six significant digits (``format(v, "g")``, the names of earlier versions) when they give the
    value back; otherwise the shortest text that does, so two settings never share a name
    (:func:`~torchmetrics_ext.utilities.formatting.exact_text`).
    """
    return exact_text(value).replace(".", "p").replace("-", "m").replace("+", "")


def cat_chunks(chunks: Sequence[Tensor], dtype: torch.dtype | None = None) -> Tensor:
    """The chunks of a list state as one 1-D tensor of ``dtype`` (``None``: their common dtype).

    Each chunk is cast on its own before the join: ``torch.cat`` of mixed dtypes promotes, and
    int64 with float16 promotes to float16 (ids and large relevance or weights overflow or round).
    Chunks already in the target dtype are not copied before the join; one chunk is not copied at all.
    Chunks of different dtypes with ``dtype=None`` are joined as float64 (int64 if all are integers).

    Examples:
        >>> import torch
        >>> cat_chunks([torch.tensor([1.0], dtype=torch.float16), torch.tensor([70000])])
        tensor([1.0000e+00, 7.0000e+04], dtype=torch.float64)
    """
    if dtype is None:
        dtypes = {chunk.dtype for chunk in chunks}
        if len(dtypes) == 1:
            dtype = dtypes.pop()
        else:
            dtype = torch.float64 if any(chunk.is_floating_point() for chunk in chunks) else torch.int64
    if len(chunks) == 1:
        return chunks[0].reshape(-1).to(dtype)
    return torch.cat([chunk.reshape(-1).to(dtype) for chunk in chunks])


def count_samples(args: Sequence[Any], kwargs: Mapping[str, Any], axis: int = -1) -> int:
    """Samples in a batch: the length along ``axis`` of its first array argument (positional, then keyword).

    Arrays are tensors, NumPy arrays and (nested) lists or tuples, such as the ``[1.0, 2.0]`` an
    aggregation metric or the list of sentences a TorchMetrics text metric takes. A batch of
    scalars only (0-dim tensors, 0-dim NumPy arrays or numbers, e.g. a step's loss) is one sample.

    Args:
        args: positional arguments of ``update``.
        kwargs: keyword arguments of ``update``.
        axis: the sample axis.

    Raises:
        TypeError: if no argument is an array or a number.

    Examples:
        >>> import torch
        >>> count_samples((torch.zeros(3, 5),), {"weights": torch.ones(5)})
        5
        >>> count_samples(([1.0, 2.0, 3.0],), {}, axis=0)
        3
        >>> import numpy as np
        >>> count_samples((np.array(3.0),), {})
        1
    """
    values = (*args, *kwargs.values())
    for value in values:
        length = _array_length(value, axis)
        if length is not None:
            return length
    if any(_is_scalar(v) for v in values):
        return 1
    raise WrongTypeError("Cannot count the samples of a batch without an array (tensor, list) or number argument.")


def _array_length(value: Any, axis: int) -> int | None:
    """``value``'s length along ``axis`` if it is an array of at least one dimension, else ``None``."""
    if isinstance(value, Tensor) or _is_ndarray(value):
        return int(value.shape[axis]) if value.ndim > 0 else None
    if not _is_sequence(value):
        return None
    for _ in range(_list_axis(value, axis)):
        value = value[0]
    return len(value)


def _is_scalar(value: Any) -> bool:
    """One value: a 0-dim tensor or NumPy array, or a number (a NumPy scalar too; a Python ``bool`` is no sample)."""
    if isinstance(value, Tensor) or _is_ndarray(value):
        return value.ndim == 0
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _is_ndarray(value: Any) -> bool:
    """A NumPy array (or alike: ``shape``, ``ndim`` and ``__array__``), told apart without importing NumPy."""
    return hasattr(value, "__array__") and hasattr(value, "ndim") and hasattr(value, "shape")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _list_axis(value: list | tuple, axis: int) -> int:
    """``axis`` of a nested list as a non-negative depth (the depth read along the first elements)."""
    depth, inner = 1, value
    while inner and _is_sequence(inner[0]):
        depth, inner = depth + 1, inner[0]
    return axis % depth


def newest_samples(
    n: int, args: Sequence[Any], kwargs: Mapping[str, Any], axis: int = -1
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The batch cut to its last ``n`` samples: every array argument as long as the batch along ``axis`` is narrowed.

    Other arguments (``None``, scalars, arrays of another length there) pass unchanged; lists stay
    lists and NumPy arrays NumPy arrays (the wrapped metric converts them as it always does).

    Examples:
        >>> import torch
        >>> args, kwargs = newest_samples(2, (torch.arange(4.0),), {"weights": None})
        >>> args, kwargs
        ((tensor([2., 3.]),), {'weights': None})
        >>> newest_samples(2, (["a b", "c", "d e"],), {}, axis=0)[0]
        (['c', 'd e'],)
    """
    total = count_samples(args, kwargs, axis)
    start = max(total - n, 0)

    def cut(value: Any) -> Any:
        if _array_length(value, axis) != total:
            return value
        if isinstance(value, Tensor):
            return value.narrow(axis % value.ndim, start, total - start)
        if _is_ndarray(value):
            return value[(slice(None),) * (axis % value.ndim) + (slice(start, total),)]
        return _cut_list(value, _list_axis(value, axis), start)

    return tuple(cut(v) for v in args), {k: cut(v) for k, v in kwargs.items()}


def _cut_list(value: list | tuple, depth: int, start: int) -> Any:
    if depth == 0:
        return value[start:]
    return type(value)(_cut_list(inner, depth - 1, start) for inner in value)


def _replay(gathered: Mapping[str, list[Tensor]], names: list[str]) -> Callable[..., list[Tensor]]:
    """A ``dist_sync_fn`` answering each state's gather, in state order, from ``gathered``."""
    pending = iter(names)

    def replay(tensor: Tensor, group: Any = None) -> list[Tensor]:
        name = next(pending)
        per_rank = gathered[name]
        if not any(t.dtype == tensor.dtype and t.shape == tensor.shape for t in per_rank):
            raise RuntimeError(f"fused sync: state `{name}` changed between the gather and compute")
        return per_rank

    return replay


@functools.cache
def _forwards_by_sums(cls: type[TaskMetric]) -> bool:
    """Whether ``cls`` keeps :meth:`TaskMetric.forward` and reduces batches into states (full_state_update False)."""
    return (
        cls.forward is TaskMetric.forward
        and cls.full_state_update is False
        # TorchMetrics' round calls these; a class that changes them (a compensated join) keeps the round
        and cls.reset is GuardedMetric.reset
        and cls._copy_state_dict is GuardedMetric._copy_state_dict
        and cls._reduce_states is Metric._reduce_states
    )


def _sums_added(held: list[Tensor], batch: list[Tensor]) -> Sequence[Tensor]:
    """``held + batch`` per sum state, out of place (TorchMetrics' reduction in ``forward``); no graph kept."""
    if any(s.requires_grad for s in batch):  # the states keep no graph
        with torch.no_grad():
            return torch._foreach_add(held, batch)
    return torch._foreach_add(held, batch)


def _fresh(defaults: Mapping[str, Tensor | list]) -> list[Tensor | list]:
    """Fresh states as TorchMetrics' reset makes them: copies of the defaults, new empty lists.

    The copies are ordinary tensors under inference mode too.
    """
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            return [default.clone() if isinstance(default, Tensor) else [] for default in defaults.values()]
    return [default.clone() if isinstance(default, Tensor) else [] for default in defaults.values()]


def _forward_states(
    defaults: Mapping[str, Tensor | list], reductions: Mapping[str, Callable | None]
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(sum state names, list state names)`` when :meth:`TaskMetric.forward` joins every state itself, else ``None``.

    It does for tensors reduced by ``sum`` and lists (default ``[]``) reduced by ``cat``.
    """
    sums, lists = [], []
    for name, default in defaults.items():
        fx = reductions[name]
        if type(default) is Tensor and fx is dim_zero_sum:
            sums.append(name)
        elif type(default) is list and not default and fx is dim_zero_cat:
            lists.append(name)
        else:
            return None
    return tuple(sums), tuple(lists)


@functools.cache
def _hands_statistics(cls: type[TaskMetric]) -> bool:
    """:meth:`TaskMetric._update_hands_statistics` of ``cls`` (asked on every ``forward``: kept per class)."""
    return cls._update_hands_statistics()


@functools.cache
def _update_validates(cls: type[TaskMetric]) -> bool:
    """:meth:`TaskMetric._update_validates` of ``cls`` (asked on every ``forward``: kept per class)."""
    return cls._update_validates()
