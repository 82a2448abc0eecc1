r"""The base of every ranking class: states, ``update`` and ``compute`` over ``(spec, k)`` requests.

All ranking classes share it and the kernels of :mod:`torchmetrics_ext.functional.ranking`; see
that package for the definitions, the input forms and the tie rule. Shared behaviour:

* ``update(preds, target, indexes=None, mask=None, weights=None)`` takes flat ``(N,)`` rows
  grouped by ``indexes`` or padded ``(Q, L)`` candidate lists (``mask`` or ``padding_value``).
* Exact mode (default, ``queries_complete_per_batch=False``): flat rows are kept in ``cat``
  states as compact copies in their own dtypes (scores, relevance, ids and weights: O(N) memory;
  validated int64 relevance below ``2**31`` is kept as int32, by ``update`` and ``forward``) and grouped by query at
  ``compute``, so a query may span batches and DDP ranks (same id = same query). The copies are
  the metric's own and hold no autograd graph: a caller may overwrite its tensors after
  ``update`` (a preallocated step buffer), and a view into a larger output keeps only its rows.
  Weights may come with some batches and not others (rows without weights weigh 1): a batch
  without them keeps unit weights, a stride-0 view of one element (no memory per row); when no
  row anywhere has weights the unweighted kernels run and no ones are made. Small chunks are
  joined as they arrive, the four lists together (64 at a time, see
  :mod:`torchmetrics_ext.utilities.chunks`): the state stays close to its rows' bytes (16 per
  row for float32 scores, int32 relevance and int64 ids) whatever the batch size, and
  ``compute`` joins a short list. Before a DDP gather
  each rank joins its chunks cast one by one to float64/int64; a rank without weights sends
  none, and gets ones after the gather only when another rank sent weights.
* ``queries_complete_per_batch=True`` (TorchRec's session mode): each batch's queries are
  scored at ``update`` and only weighted sums are kept (constant memory); a query split across
  batches counts as separate queries. Padded input always takes this path: a padded row is a
  whole query by construction.
* A rejected batch raises and changes nothing; an empty batch changes nothing.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._hints import _TORCHMETRICS, _cutoff_fix, option_hint
from torchmetrics_ext.functional.ranking._inputs import (
    _WIDE_UNSIGNED,
    RankingRows,
    _flat_rows_checked,
    _ranking_arg_validation,
    _ranking_format,
)
from torchmetrics_ext.functional.ranking._spec import RankingOptions, Request
from torchmetrics_ext.functional.ranking._update import _NO_QUERY, _no_weighted_row, _ranking_compute, _ranking_update
from torchmetrics_ext.metrics._bootstrap import INSIDE as _INSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import OUTSIDE as _OUTSIDE_BOOTSTRAP
from torchmetrics_ext.metrics._bootstrap import marked, warn_bootstrapped_flat_rows
from torchmetrics_ext.metrics.base import (
    InputDomains,
    TaskMetric,
    _tag,
    accepted_options,
    cat_chunks,
    one_task,
    options_error,
)
from torchmetrics_ext.metrics.ranking._rows import row_state_problems
from torchmetrics_ext.utilities.chunks import is_broadcast, join_chunks
from torchmetrics_ext.utilities.device import on_device_path
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import or_no_samples

_ROW_STATES = {
    "preds": torch.float64,
    "target": torch.float64,
    "indexes": torch.int64,
    "weights": torch.float64,
}
_INT32_LIMIT = 2**31
_UNIT_VIEWS = 8  # unit-weight views cached per metric (row count, device): see `_unit_weights`


def _reject_top_k(cls: type[Any], kwargs: dict[str, Any]) -> None:
    """TorchMetrics' retrieval and ``top_k`` metrics name the cutoff ``top_k``; ours take ``k`` (``ks``).

    Called from ``__new__``, before Python's own "missing argument 'k'" (which never mentions
    ``top_k``) or TorchMetrics' "unexpected keyword arguments" for a class whose ``k`` has a default.
    TorchMetrics' other options that have no option of that name here (``cls._torchmetrics_options``:
    ``ignore_index``, ``aggregation``, ``average``) are refused there too, as TorchMetrics' own
    "Unexpected keyword arguments" error (:func:`options_error`) followed by what replaces them. The
    replacements are the functional twins' (:mod:`torchmetrics_ext.functional.ranking._hints`), told with
    the class's name and ``__init__`` parameters (the cutoff) or ``update``'s (the rest).
    """
    given = [option for option in cls._torchmetrics_options if option in kwargs]
    if given and "top_k" not in kwargs:
        update = tuple(inspect.signature(cls.update).parameters)
        hints = [
            f"{option_hint(option, 'update', update, kwargs[option])}{cls._torchmetrics_options[option]}."
            for option in given
        ]
        taken = accepted_options(cls)
        unknown = [name for name in kwargs if name not in taken]
        error = options_error(cls, unknown)
        raise ValueError(f"{error} {' '.join(hints)}")
    if "top_k" not in kwargs:
        return
    value, parameters = kwargs["top_k"], tuple(inspect.signature(cls.__init__).parameters)
    fix = _cutoff_fix(cls.__name__, parameters, value, inputs="")
    # a keyword refused by name: a TypeError as always, and a ValueError as every other unknown keyword on a
    # metric (TorchMetrics'), so `except ValueError` catches it too (docs/policies.md, "Wrong types")
    raise WrongTypeError(f"{cls.__name__} has no `top_k` argument ({_TORCHMETRICS['top_k'][0]}): {fix}.")


# What a ranking class adds to the functions' `ignore_index` fix: a module and `evaluate` take no mask
_NO_MASK_THERE = (
    "; a `RecMetricModule` or `evaluate` takes no mask: leave those rows out "
    "(docs/ranking.md, 'Padding in a module and in evaluate')"
)


class _RejectsTopK:
    """A base whose ``__new__`` rejects TorchMetrics' ``top_k`` by name (see :func:`_reject_top_k`).

    A base of its own, after the metric class in the MRO: ``inspect.signature`` of a class takes
    the first ``__new__`` or ``__init__`` it meets in the MRO, so a ``__new__`` defined next to
    ``__init__`` would show ``(*args, **kwargs)`` instead of the constructor's parameters.
    """

    # TorchMetrics' options with no option of that name here, each with a pointer added to what replaces it
    _torchmetrics_options: ClassVar[Mapping[str, str]] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Reject TorchMetrics' ``top_k`` (and its options of other names) by name."""
        _reject_top_k(cls, kwargs)
        return super().__new__(cls)


class _RankingMetric(_RejectsTopK, TaskMetric):
    """Per-query ranking metrics over one or more ``(spec, k)`` requests (see the module docstring)."""

    is_differentiable = False
    sample_axis = 0  # a flat row, or a padded query row of (Q, L): both are axis 0
    higher_is_better: bool | None = True
    full_state_update = False
    has_task_dim = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    _torchmetrics_options: ClassVar[Mapping[str, str]] = {"ignore_index": _NO_MASK_THERE, "aggregation": ""}

    def _before_update(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The base checks, then a warning for flat rows that TorchMetrics' ``BootStrapper`` resampled.

        (:func:`~torchmetrics_ext.metrics._bootstrap.warn_bootstrapped_flat_rows`: its mark is read here, so
        an object updated outside a bootstrap pays one dict lookup per update.)
        """
        super()._before_update(args, kwargs)
        state = self.__dict__
        if (
            not self._inputs_checked
            and not marked(state, _OUTSIDE_BOOTSTRAP, self)
            and not marked(state, _INSIDE_BOOTSTRAP, self)
        ):
            warn_bootstrapped_flat_rows(self, args, kwargs)

    weight_sum: Tensor
    preds: list[Tensor]
    target: list[Tensor]
    indexes: list[Tensor]
    weights: list[Tensor]

    def __init__(
        self,
        requests: Sequence[Request],
        options: RankingOptions,
        label: str,
        *,
        empty_target_action: str = "skip",
        padding_value: float | None = None,
        queries_complete_per_batch: bool = False,
        remove_single_length_sessions: bool = False,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(one_task(self, kwargs), validate_args=validate_args, **kwargs)
        empty_target_action, padding_value = _ranking_arg_validation(
            empty_target_action,
            padding_value,
            **options._asdict(),
            queries_complete_per_batch=queries_complete_per_batch,
            remove_single_length_sessions=remove_single_length_sessions,
        )
        # checked flags (NumPy bools accepted) kept as Python bools
        options = RankingOptions(*map(bool, options))
        queries_complete_per_batch = bool(queries_complete_per_batch)
        remove_single_length_sessions = bool(remove_single_length_sessions)
        self.requests = list(requests)
        self.options = options
        self._label = label
        self.exponential_gain = options.exponential_gain
        self.adaptive_k = options.adaptive_k
        self.empty_target_action = empty_target_action
        self.padding_value = padding_value
        self.queries_complete_per_batch = queries_complete_per_batch
        self.remove_single_length_sessions = remove_single_length_sessions
        # The per-query sums depend on this metric's settings, so their state is named after them:
        # MetricCollection's compute groups then never merge two configurations whose sums happen
        # to coincide on the first batch (the row states of the exact mode stay shareable).
        flags = {
            "exp": options.exponential_gain,
            "adaptive": options.adaptive_k,
            "no_single": remove_single_length_sessions,
        }
        tag = [f"{spec.name}{'' if k is None else k}" for spec, k in self.requests]
        tag += [flag for flag, on in flags.items() if on] + [empty_target_action]
        plain = "value_sum_" + "_".join(tag)
        self._value_state = plain
        if padding_value is not None:  # which padded slots count changes the sums (no dots: a state_dict key)
            self._value_state = f"{plain}_pad{_tag(padding_value)}"
            # version-1 checkpoints hold the plain name for no padding value (or for any, before the
            # padding value named the state): not read as this one's (see _default_settings_name)
            self._default_settings_name(plain, self._value_state)
            # version-1 checkpoints of an earlier spelling of the value (its float repr: `padm1p0` for
            # -1.0, where the shared setting tags write `padm1`): the same setting
            spelled = plain + "_pad" + repr(float(padding_value)).replace(".", "p").replace("-", "m").replace("+", "")
            if spelled != self._value_state:  # no other value is spelled so by either rule: read at any version
                self._load_former_names(self._value_state, re.escape(spelled))
        # and validate_args names it in memory only (see TaskMetric._unchecked_state_name)
        self._value_state = self._unchecked_state_name(self._value_state)
        self.add_state(self._value_state, torch.zeros(len(self.requests), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        if not queries_complete_per_batch:
            for name, dtype in _ROW_STATES.items():
                self._add_list_state(name, dtype)

    def _checkpoint_settings(self) -> dict[str, Any]:
        """``queries_complete_per_batch`` too: both modes keep their sums under the same names.

        The exact mode's checkpoint holds the session mode's states and its rows besides, so loading
        one mode's checkpoint into the other read only zero sums (every sample dropped) or started
        afresh as an "older format". A checkpoint that does not record the mode (a plain dict, or one
        written before) shows it by its states (:meth:`_settings_shown_by`).
        """
        return {**super()._checkpoint_settings(), "queries_complete_per_batch": self.queries_complete_per_batch}

    def _settings_shown_by(self, saved: Collection[str]) -> dict[str, Any]:
        """The mode of a checkpoint holding ``saved``: exact with any row state, else per batch with its sums."""
        if any(name in saved for name in _ROW_STATES):
            return {"queries_complete_per_batch": False}
        if "weight_sum" in saved or self._saved_state_names.get(self._value_state, self._value_state) in saved:
            return {"queries_complete_per_batch": True}
        return {}

    def _state_problems(self, state_dict: Mapping[str, Any], prefix: str, origin: str = "checkpoint") -> list[str]:
        """The base checks, then the exact mode's rows: flat chunks of kept dtypes whose counts line up.

        A checkpoint whose row states disagree (one replaced by another run's tensor) would load
        and fail only at ``compute``; it is refused at ``load_state_dict`` (and ``merge_state``)
        instead, naming the state (see :func:`~torchmetrics_ext.metrics.ranking._rows.row_state_problems`).
        """
        problems = super()._state_problems(state_dict, prefix, origin)
        if problems or self.queries_complete_per_batch:
            return problems
        return row_state_problems(state_dict, prefix, f"{type(self).__name__}{self._settings_text()}", origin)

    def _chunk_dtypes(self) -> Mapping[str, torch.dtype]:
        """None: the row states keep ``int8``/bool labels and ``int32`` ids, checked by :meth:`_state_problems`."""
        return {}

    @property
    def value_sum(self) -> Tensor:
        """Per-request sums of per-query values (the state named after this metric's settings)."""
        return getattr(self, self._value_state)

    @value_sum.setter
    def value_sum(self, value: Tensor) -> None:
        setattr(self, self._value_state, value)

    # ------------------------------------------------------------------ update

    def _rows(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None,
        mask: Tensor | None,
        weights: Tensor | None,
        validate: bool,
        compact: bool = True,
    ) -> RankingRows:
        return _ranking_format(
            preds,
            target,
            indexes,
            mask,
            weights,
            padding_value=self.padding_value,
            validate=validate,
            compact=compact,
        )

    def _validate(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> None:
        rows = self._rows(preds, target, indexes, mask, weights, validate=True)
        # `forward` validates here, then updates trusting its inputs: the largest relevance read
        # now lets that update keep int64 relevance as int32, as a validating update does
        self.__dict__["_validated_target"] = (target, rows.target_max)

    def _after_forward(self) -> None:
        """Drop the relevance bound the validation of ``forward`` read for its update."""
        self.__dict__.pop("_validated_target", None)

    def _target_max(self, rows: RankingRows | None, target: Tensor) -> float | None:
        """The batch's largest relevance: read by this update's validation, or by ``forward``'s for ``target``."""
        if rows is not None and rows.target_max is not None:
            return rows.target_max
        validated, top = self.__dict__.get("_validated_target", (None, None))
        return top if validated is target else None

    @property
    def input_domains(self) -> InputDomains:
        """Any real scores (±inf included) and non-negative relevance (flat rows; ``indexes`` are integer query ids)."""
        return InputDomains("score", "nonnegative")

    def _sums(self, rows: RankingRows, dense: bool = False) -> tuple[Tensor, Tensor]:
        return _ranking_update(
            rows,
            self.requests,
            self.options,
            empty_target_action=self.empty_target_action,
            remove_single_length_sessions=self.remove_single_length_sessions,
            dense=dense,
        )

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> None:
        """Add a batch: flat ``(N,)`` rows with ``indexes``, or padded ``(Q, L)`` lists."""
        if self._keeps_rows(preds):
            kept = self._batch_rows(preds, target, indexes, mask, weights)
            if kept is None:
                return
            state = self.__dict__
            # A state loaded from a checkpoint saved before unweighted rows kept unit weights holds no
            # weight chunk for them: those get unit weights first (see `_batch_rows`)
            kept_preds, kept_weights = state["preds"], state["weights"]
            if len(kept_weights) < len(kept_preds):
                for earlier in kept_preds[len(kept_weights) :]:
                    kept_weights.append(self._unit_weights(earlier))
            kept_preds.append(kept[0])  # the row states in `_ROW_STATES` order, written out (per call)
            state["target"].append(kept[1])
            state["indexes"].append(kept[2])
            kept_weights.append(kept[3])
            return
        # ranking in update (padded lists, complete queries) on the device path: the kernel that
        # reads nothing on the host, with masked rows kept in place
        dense = (
            isinstance(preds, Tensor) and (preds.ndim == 2 or self.queries_complete_per_batch) and on_device_path(preds)
        )
        rows = self._rows(preds, target, indexes, mask, weights, validate=self._check_inputs, compact=not dense)
        if rows.num_rows == 0:
            return
        value_sum, weight_sum = self._sums(rows, dense)
        getattr(self, self._value_state).add_(value_sum)  # in place, as `+=` (no attribute set)
        self.weight_sum.add_(weight_sum)

    def _keeps_rows(self, preds: Tensor) -> bool:
        """Whether a batch with these ``preds`` goes to the row states (flat rows in exact mode), not to the sums."""
        return not self.queries_complete_per_batch and isinstance(preds, Tensor) and preds.ndim == 1

    def _list_update(
        self,
        preds: Tensor,
        target: Tensor,
        indexes: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> dict[str, list[Tensor]] | None:
        """The chunks ``update`` would append to each row state, for a batch that changes no other state.

        For :class:`~torchmetrics_ext.Windowed`, which puts them into the lifetime and the window
        itself (no slot of statistics: the sums are unchanged). Validates as ``update`` does and
        changes nothing; empty lists for a batch without a kept row; ``None`` for a batch that
        updates the sums (padded lists, complete queries) or that ``update`` must handle itself
        (new chunks cast by ``set_dtype``, list states kept on the CPU).
        """
        if target is None or not self._keeps_rows(preds) or self.compute_on_cpu or "_cast_dtype" in self.__dict__:
            return None  # (a missing argument: `update` names it)
        rows = self._batch_rows(preds, target, indexes, mask, weights)
        if rows is None:
            return {name: [] for name in _ROW_STATES}
        return {name: [chunk] for name, chunk in zip(_ROW_STATES, rows)}

    def _batch_rows(
        self, preds: Tensor, target: Tensor, indexes: Tensor | None, mask: Tensor | None, weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Validate flat rows (when this update checks its inputs) and return what the row states keep of them.

        ``(preds, target, indexes, weights)`` in the order of the row states, or ``None`` when no row
        is kept. Flat rows without a mask are the caller's tensors: kept as compact copies in their
        own dtypes (float32 scores and weights, int8 labels, int32 ids stay 4 or 1 bytes per row),
        so an in-place write to a reused buffer after this call changes no kept row, and a view
        into a larger output does not keep that output alive. Rows a mask selects are copies
        already. Everything is converted to float64/int64 at sync and compute. One weight chunk per
        row chunk, always: a batch without weights gets unit weights, a stride-0 view of one
        cached element (no memory per row), so rows of weighted and unweighted batches line up
        wherever their chunks are joined (a window's ring, a DDP gather, merge_state).
        """
        if mask is None and indexes is not None and self.padding_value is None:
            return self._given_rows(preds, target, indexes, weights)
        rows = self._rows(preds, target, indexes, mask, weights, validate=self._check_inputs)
        if rows.num_rows == 0:
            return None
        top = self._target_max(rows, target)
        target = rows.target
        if target.dtype == torch.int64 and top is not None and top < _INT32_LIMIT:
            target = target.to(torch.int32)  # validated relevance: half the memory kept per row (a copy)
        # rows a mask selects are copies already; unit weights for a batch without them
        weights = self._unit_weights(rows.preds) if rows.weights is None else rows.weights.detach()
        return rows.preds.detach(), target.detach(), rows.indexes, weights

    def _given_rows(
        self, preds: Tensor, target: Tensor, indexes: Tensor, weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """:meth:`_batch_rows` of flat rows without a mask: the caller's tensors, checked and copied as they are.

        Checked by :func:`~torchmetrics_ext.functional.ranking._inputs._flat_rows_checked` (the
        checks of ``_ranking_format``, with its messages, but no formatting: no int64 ids or float64
        weights made) unless a caller validated them (RecMetricModule's step, ``forward``). Each
        tensor is copied once: int64 relevance below ``2**31`` by its int32 conversion and
        uint16/32/64 relevance by its float64 one (both copies already), the rest by :func:`_own_copy`.
        """
        state = self.__dict__
        if state["validate_args"] and not state["_inputs_checked"]:  # `_check_inputs`, inline
            top = _flat_rows_checked(preds, target, indexes, weights)
        else:
            top = self._target_max(None, target)
        if not preds.shape[0]:
            return None
        shared = _SHARED_COPIES.get()
        if target.dtype in _WIDE_UNSIGNED:  # read as float64, as `_ranking_format` does
            kept_target = target.to(torch.float64)
        elif target.dtype == torch.int64 and top is not None and top < _INT32_LIMIT:
            # validated relevance: half the memory kept per row (`int()`: `to(torch.int32)`, parsed faster)
            kept_target = target.int()
        else:
            kept_target = _own_copy(target, shared)
        if shared is None and not (preds.requires_grad or indexes.requires_grad):  # `_own_copy`'s copies, inline
            kept_preds, kept_indexes = _compact_clone(preds), _compact_clone(indexes)
        else:
            kept_preds, kept_indexes = _own_copy(preds, shared), _own_copy(indexes, shared)
        # a copy is contiguous: a caller's stride-0 weights never read as unit weights
        kept_weights = self._unit_weights(preds) if weights is None else _own_copy(weights, shared)
        return kept_preds, kept_target, kept_indexes, kept_weights

    def _join_chunks(self, chunks: list[Tensor]) -> Tensor:
        """Small chunks joined into one (after ``update``); inside :class:`sharing_row_copies`, once for every metric.

        Metrics given the same tensor object in one step keep one copy of it (:func:`_own_copy`);
        when their chunks are joined in that step, the join of the same chunk objects is shared too.
        """
        shared = _SHARED_COPIES.get()
        if shared is None:
            return join_chunks(chunks)
        key = ("join", *map(id, chunks))
        hit = shared.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], chunks, strict=True)):
            return hit[1]
        joined = join_chunks(chunks)
        shared[key] = (tuple(chunks), joined)  # holds the chunks: their ids are not reused in the block
        return joined

    def _unit_weights(self, rows: Tensor) -> Tensor:
        """Weight 1 for each of ``rows``: a stride-0 view of one float32 element on their device (cached).

        The views of the last few row counts are cached too (an ``expand`` costs a microsecond, a
        fixed part of every unweighted update): the lists may hold one view object several times,
        which nothing writes to (a join or a move makes new views).
        """
        state = self.__dict__
        views: dict[tuple[int, torch.device], Tensor] | None = state.get("_unit_views")
        key = (rows.shape[0], rows.device)
        if views is not None:
            view = views.get(key)
            if view is not None:
                return view
        else:
            views = state["_unit_views"] = {}
        cache: dict[torch.device, Tensor] = state.setdefault("_ones", {})
        one = cache.get(rows.device)
        if one is None:
            one = cache[rows.device] = torch.ones((), dtype=torch.float32, device=rows.device)
        if len(views) >= _UNIT_VIEWS:
            views.clear()
        view = views[key] = one.expand(rows.shape[0])
        return view

    # ------------------------------------------------------------------ sync

    def _sync_chunks(self, name: str, chunks: list[Tensor], dtype: torch.dtype | None) -> Tensor:
        """A rank whose weights are all unit sends none (no ones gathered when every rank is unweighted)."""
        if name == "weights" and all(_is_unit(chunk) for chunk in chunks):
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        return super()._sync_chunks(name, chunks, dtype)

    def _fix_gathered(self, name: str, per_rank: list[Tensor]) -> list[Tensor]:
        """After a gather: ones for the rows of an unweighted rank when another rank sent weights."""
        if name == "preds":
            self.__dict__["_gathered_rows"] = [t.numel() for t in per_rank]
        elif name == "weights":
            rows = self.__dict__.pop("_gathered_rows", None)
            if rows is not None and any(t.numel() for t in per_rank):
                per_rank = [
                    torch.ones(n, dtype=torch.float64, device=t.device) if t.numel() == 0 and n else t
                    for t, n in zip(per_rank, rows, strict=True)
                ]
        return per_rank

    def _apply(self, fn: Any, exclude_state: Any = "") -> Any:
        """Move states (``.to``, ``.cuda``); unit weights stay stride-0 views (one element moved)."""
        weights = self.__dict__.get("weights")
        units: dict[int, int] = {}
        if isinstance(weights, list):
            units = {i: chunk.shape[0] for i, chunk in enumerate(weights) if _is_unit(chunk)}
            for i in units:
                weights[i] = weights[i][:0]
        this = super()._apply(fn, exclude_state)
        moved = this.__dict__.get("weights")
        if units and isinstance(moved, list):
            for i, n in units.items():
                moved[i] = self._unit_weights(moved[i].new_empty(n))
        return this

    # ------------------------------------------------------------------ compute

    def _compute_values(self) -> Tensor:
        value_sum, weight_sum = self.value_sum, self.weight_sum
        rows = None
        if not self.queries_complete_per_batch:
            rows = self._cat_rows()
            if rows is not None and rows.preds.numel() > 0:
                batch_value, batch_weight = self._sums(rows)
                value_sum, weight_sum = value_sum + batch_value, weight_sum + batch_weight
        # Without a kept row of non-zero weight the metric may have seen nothing, or only queries summed
        # (padded lists, complete queries) of which none counted: the sums read the same, so the warning
        # names both causes (a kept row with weight is a sample seen: the reason alone).
        return _ranking_compute(
            value_sum,
            weight_sum,
            self._label,
            self.requests,
            unseen=lambda: _no_weighted_row(rows),
            unseen_reason=or_no_samples(_NO_QUERY),
        )

    def _cat_rows(self) -> RankingRows | None:
        states = {name: getattr(self, name) for name in _ROW_STATES}
        if isinstance(states["preds"], list) and len(states["preds"]) == 0:
            return None
        # chunks of different dtypes are cast one by one (never promoted together: int64 relevance,
        # ids or weights with float16 scores would become float16); scores and relevance keep a
        # common dtype, else become float64
        preds, target = cat_chunks(_chunks(states["preds"])), cat_chunks(_chunks(states["target"]))
        indexes = cat_chunks(_chunks(states["indexes"]), torch.int64)
        weights = states["weights"]
        if isinstance(weights, list) and all(_is_unit(chunk) for chunk in weights):
            weights = None  # no batch had weights (or none was kept): the unweighted kernels, no ones made
        else:
            weights = cat_chunks(_chunks(weights), torch.float64)  # unit weights become ones here
            if weights.numel() == 0:  # every rank of a DDP sync was unweighted
                weights = None
        if weights is not None and weights.numel() != preds.numel():
            raise ValueError(
                f"{type(self).__name__}: `weights` are kept for {weights.numel()} of {preds.numel()} rows, "
                "which cannot be lined up (a state saved by an earlier version that mixed weighted and "
                "unweighted batches); reset the metric."
            )
        # a list state is concatenated into a new tensor, which the kernels may use as scratch
        writable = isinstance(states["preds"], list) and len(states["preds"]) > 1
        return RankingRows(preds, target, indexes, weights, False, writable)


def _is_unit(chunk: Tensor) -> bool:
    """Whether a weight chunk is unit weights: a stride-0 view (callers' stride-0 weights are copied at update)."""
    return is_broadcast(chunk)


# inside `sharing_row_copies`: id of a caller's tensor -> (it, its copy); ("join", ids of chunks) -> (them, their join)
_SHARED_COPIES: ContextVar[dict[Hashable, tuple[Any, Tensor]] | None] = ContextVar("_SHARED_COPIES", default=None)


def _own_copy(value: Tensor, shared: dict[Hashable, tuple[Any, Tensor]] | None) -> Tensor:
    """A detached, compact copy of a caller's tensor, in its own dtype: what the exact mode keeps of it.

    Inside :class:`sharing_row_copies` (``shared``: its table, read once per batch by the caller)
    one copy per tensor object is made and shared.
    """
    if shared is not None:
        hit = shared.get(id(value))
        if hit is not None and hit[0] is value:  # the tensor is held below: its id is not reused in the block
            return hit[1]
    # a tensor without a graph is cloned as it is (its clone holds none): no detached alias made first
    copy = _compact_clone(value.detach() if value.requires_grad else value)
    if shared is not None:
        shared[id(value)] = (value, copy)
    return copy


def _compact_clone(value: Tensor) -> Tensor:
    """A contiguous copy of ``value``: ``clone()`` where it gives one, which parses faster (no keyword).

    ``clone()`` keeps the strides of a dense tensor and makes others contiguous: of a 1-D tensor of
    two or more elements that is a contiguous copy whatever its stride (unit stride is the only dense
    one). A one-element tensor may keep any stride, so a caller's one-element stride-0 weights would
    stay stride 0 and read as unit weights: copied with ``memory_format=torch.contiguous_format``.
    """
    if value.ndim == 1 and value.shape[0] > 1:
        return value.clone()
    return value.clone(memory_format=torch.contiguous_format)


class sharing_row_copies:  # lower case: used as a function, `with sharing_row_copies():`
    """Within this block, the exact ranking modes given the same tensor object keep one copy of it.

    For a caller that feeds one validated step to several ranking metrics
    (:class:`~torchmetrics_ext.RecMetricModule`: one session id or weight column shared by its
    tasks): the column is copied once and every metric keeps that copy, which none of them
    modifies; metrics that join their small chunks in the block join the shared ones once too
    (so they keep sharing them while they are updated together). The tensors must not be
    modified inside the block.
    """

    def __enter__(self) -> None:
        self.token = _SHARED_COPIES.set({})

    def __exit__(self, *exc: object) -> None:
        _SHARED_COPIES.reset(self.token)


def _chunks(state: list[Tensor] | Tensor) -> list[Tensor]:
    """A list state's chunks (a single tensor after a DDP sync)."""
    return state if isinstance(state, list) else [state]


SHARED_OPTIONS = tuple(
    param.name
    for param in inspect.signature(_RankingMetric.__init__).parameters.values()
    if param.kind == param.KEYWORD_ONLY
)
"""The options every ranking class takes, forwarded to :class:`_RankingMetric` (documented once)."""
