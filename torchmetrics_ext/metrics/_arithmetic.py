"""Metric arithmetic (TorchMetrics' ``CompositionalMetric``) refused up front for metrics whose value is a dict.

TorchMetrics builds ``a - b``, ``m * 100``, ``abs(m)``, ... for any two metrics and applies the
operator to their ``compute()`` values only when the composed metric computes. A metric whose value
is a dict (``RankingMetrics``, ``Windowed``, ``Throughput``, ...) then failed there, after the
updates, inside torch (``sub(): argument 'input' (position 1) must be Tensor, not dict``), with
nothing naming the metric. The operators below refuse it where the expression is written, with a
``TypeError`` that names the metric and the way out: TorchMetrics' indexing, ``metric["ndcg@10"]``,
is a metric of one entry of the dict, and takes part in arithmetic like any other.

An entry that is itself a dict (``Windowed(RankingMetrics(...))["window"]``) is refused the same way:
``metric[...]`` of a class that knows its entries' values (:meth:`TensorArithmetic._entry_value_example`)
returns such a metric of one entry, which refuses arithmetic and can be indexed again
(``windowed["window"]["ndcg@10"] * 100``).

The expressions these operators and ``metric[...]`` build are :class:`_Expression`s: TorchMetrics'
``CompositionalMetric`` that gives each batch to each metric of the expression **once**. TorchMetrics'
own passes it down both sides, so a metric used twice (``ranking["ndcg@5"] - ranking["recall@5"]``,
``windowed["window"] - windowed["lifetime"]``, ``m - m``) was updated twice per batch: every row
twice in the query of a ranking metric, every update twice in a window, every example twice in a
throughput, which changes their values. Its indexing operator (a lambda) could not be pickled either.

Unary minus and plus are Python's: TorchMetrics' ``-metric`` is ``-abs(value)`` and ``+metric``
``abs(value)``, so ``-(ne_a - ne_b)`` gave ``-|ne_a - ne_b|``. ``number % metric`` works (TorchMetrics'
called ``torch.fmod`` with the number first, which torch refuses); ``%`` stays TorchMetrics' ``torch.fmod``
(the sign of the left operand), not Python's floor remainder.

Equality (``==``, ``!=``) keeps TorchMetrics' behaviour: containers compare their items with it.
A TorchMetrics metric on the left (``torchmetrics.MeanSquaredError() - ranking``) builds the
expression with its own operator, which this class does not reach.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.metric import CompositionalMetric
from torchmetrics.utilities.plot import plot_single_or_multi_val

from torchmetrics_ext.utilities.checks import check_state_dtype
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.frames import running_locals

# operator method name -> how the user wrote it
_BINARY = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "matmul": "@",
    "and": "&",
    "or": "|",
    "xor": "^",
}
_REFLECTED = {f"r{name}": symbol for name, symbol in _BINARY.items()}
_ORDERING = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_UNARY = {"abs": "abs()", "neg": "unary -", "pos": "unary +", "invert": "~", "inv": "~"}


class TensorArithmetic:
    """Mixin of the package's metrics: arithmetic with a dict-valued metric is a ``TypeError`` when written.

    A dict-valued class sets :attr:`_dict_value_entry` to an entry of its value, written as the
    index of ``metric[...]`` in the error's hint; a class that knows its entries from its settings
    (``_value_entries``) names its first one instead.
    """

    # an entry of compute()'s dict, as Python source (``'"window"'``); None: the value is a tensor
    _dict_value_entry: ClassVar[str | None] = None

    def _dict_value_example(self) -> str | None:
        """An index of ``metric[...]`` that picks one entry of the dict value; ``None`` for a tensor value."""
        if type(self)._dict_value_entry is None:
            return None
        entries = getattr(self, "_value_entries", None)
        keys = entries() if callable(entries) else None
        return f'"{keys[0]}"' if keys else type(self)._dict_value_entry

    def _arithmetic_name(self) -> str:
        """How the arithmetic error names this metric (its class)."""
        return type(self).__name__

    def _entry_value_example(self, idx: Any) -> str | None:
        """For ``metric[idx]`` whose value is itself a dict, an index of it (as :meth:`_dict_value_example`).

        ``None`` (here): the entry is a tensor, or not known before ``compute``.
        """
        return None

    def __getitem__(self, idx: Any) -> CompositionalMetric:
        """TorchMetrics' metric of one entry of the value; one that refuses arithmetic where the entry is a dict."""
        example = self._entry_value_example(idx)
        entry: CompositionalMetric
        if example is None:
            entry = _Expression(_Entry(idx), self, None)  # type: ignore[arg-type]  # a Metric (the mixin's host)
        else:
            entry = _DictEntry(self, idx, example)
        # one number of the value is better in the same direction and lies within the same bounds (TorchMetrics'
        # entries have no direction: MetricTracker(windowed["window"]) asked for `maximize`)
        keep_direction_and_bounds(entry, self)
        return entry


class StatesInChildren:
    """Mixin of metrics whose states are their wrapped metrics' (``Windowed``, expressions): no explicit compute group.

    TorchMetrics' explicit compute groups (``MetricCollection(..., compute_groups=[["a", "b"]])``) update only
    a group's first member and give the others the states that member declares itself (its ``_defaults``).
    Such a metric declares none (its states live in the metrics it wraps), so the others of its group were
    never fed and reported ``nan`` (``b_lifetime``), or a member next to it got nothing from it. The
    collection's ``update`` refuses such a group before it changes any member, naming it. Automatic groups
    (``compute_groups=True``) never put these metrics in a group (they compare declared states only).
    """

    # a property for this one attribute (its value kept in the instance's __dict__, where the package also
    # writes it directly): other attributes are set without an extra call
    @property
    def _computed(self) -> Any:
        return self.__dict__.get("_computed")

    @_computed.setter
    def _computed(self, value: Any) -> None:
        if value is None:  # MetricCollection.update clears each member's cache before it updates any
            _refuse_explicit_group(self, sys._getframe(1))
        self.__dict__["_computed"] = value


_COLLECTION_UPDATE = MetricCollection.update.__code__


def _refuse_explicit_group(metric: Any, caller: Any) -> None:
    """Raise a ``ValueError`` where ``MetricCollection.update`` set the cache and ``metric`` is in a named group.

    ``caller`` is the setter's caller; the collection's frame is found within the next few above it.
    """
    # the setter is reached through Metric's and nn.Module's __setattr__
    local = running_locals(_COLLECTION_UPDATE, caller, depth=5)
    if local is None:
        return
    collection = local.get("self")
    named = getattr(collection, "_enable_compute_groups", None)
    if not isinstance(named, list):  # automatic groups (or none) never join a metric without states of its own
        return
    for members in named:
        name = next((str(key) for key in members if getattr(collection, str(key), None) is metric), None)
        if len(members) > 1 and name is not None:
            kind = "a metric expression" if isinstance(metric, CompositionalMetric) else type(metric).__name__
            raise ValueError(
                f"Expected `compute_groups` of the MetricCollection to leave {name!r} "
                f"({kind}) in a group of its own, but it is in {list(members)}: TorchMetrics "
                f"updates only the group's first member ({members[0]!r}) and shares with the others the states "
                f"that member declares itself, while {kind} keeps its states in the metrics it "
                f"wraps, so the other members would never see a batch (nan). Leave {name!r} out of "
                "`compute_groups`, or use `compute_groups=True` (which never groups it); no member was updated."
            )


def keep_direction_and_bounds(metric: Any, source: Any) -> None:
    """Give ``metric`` the ``higher_is_better`` and plot bounds of ``source``, whose values (or one of them) it reports.

    Per instance, as TorchMetrics guards the class constants against ``setattr``.
    """
    for name in ("higher_is_better", "plot_lower_bound", "plot_upper_bound"):
        object.__setattr__(metric, name, getattr(source, name, None))


class _Entry:
    """``value[idx]`` as a function of the value (CompositionalMetric's operator); unlike a lambda, it pickles."""

    __name__ = "getitem"  # CompositionalMetric's repr names its operator

    def __init__(self, idx: Any) -> None:
        self.idx = idx

    def __call__(self, value: Any) -> Any:
        return value[self.idx]


def _as_source(idx: Any) -> str:
    """``idx`` as written inside ``metric[...]`` (strings in double quotes, as the hints write them)."""
    return f'"{idx}"' if isinstance(idx, str) else repr(idx)


def _refuse_dict_values(symbol: str, *operands: Any) -> None:
    """Raise a ``TypeError`` naming the first operand whose ``compute()`` is a dict."""
    for operand in operands:
        example = operand._dict_value_example() if isinstance(operand, TensorArithmetic) else None
        if example is not None:
            name = operand._arithmetic_name()
            raise TypeError(
                f"Metric arithmetic (`{symbol}`) needs metrics whose value is a tensor, but {name}.compute() "
                f"returns a dict. Pick one entry first: `metric[{example}]` is a metric of that entry "
                f"(`metric[{example}] * 100`), or combine the computed values."
            )


# TorchMetrics' `-metric` is `-abs(value)` and `+metric` is `abs(value)` (its "absolute negative operator"), so
# `-(ne_a - ne_b)` was `-|ne_a - ne_b|` and `+(a - b)` `|a - b|`; here they are Python's (and torch's) minus and plus
_OWN_UNARY: dict[str, Callable[[Any], Any]] = {"neg": torch.neg, "pos": torch.positive}


def _binary(name: str, symbol: str) -> Callable[..., Any]:
    def operator(self: TensorArithmetic, other: Any) -> Any:
        _refuse_dict_values(symbol, self, other)
        if name == "rmod" and isinstance(other, (int, float)):
            # TorchMetrics' `2.0 % metric` computes torch.fmod(2.0, value), which takes no number first: a tensor
            other = torch.tensor(other)
        return _Expression.of(getattr(super(TensorArithmetic, self), f"__{name}__")(other))

    operator.__name__ = operator.__qualname__ = f"__{name}__"
    operator.__doc__ = f"TorchMetrics' ``{symbol}`` of metrics, refused for a dict-valued operand."
    return operator


def _unary(name: str, symbol: str) -> Callable[..., Any]:
    def operator(self: TensorArithmetic) -> Any:
        _refuse_dict_values(symbol, self)
        if name in _OWN_UNARY:
            return _Expression(_OWN_UNARY[name], self, None)  # type: ignore[arg-type]  # a Metric (the mixin's host)
        return _Expression.of(getattr(super(TensorArithmetic, self), f"__{name}__")())

    operator.__name__ = operator.__qualname__ = f"__{name}__"
    operator.__doc__ = f"TorchMetrics' ``{symbol}`` of a metric, refused for a dict value."
    return operator


for _name, _symbol in {**_BINARY, **_REFLECTED, **_ORDERING}.items():
    setattr(TensorArithmetic, f"__{_name}__", _binary(_name, _symbol))
for _name, _symbol in _UNARY.items():
    setattr(TensorArithmetic, f"__{_name}__", _unary(_name, _symbol))


def _leaves(node: Any, found: dict[int, Metric]) -> dict[int, Metric]:
    """The metrics (not expressions) under ``node``, each once, in the order TorchMetrics would update them."""
    if isinstance(node, CompositionalMetric):
        _leaves(node.metric_a, found)
        _leaves(node.metric_b, found)
    elif isinstance(node, Metric):
        found.setdefault(id(node), node)
    return found


def _evaluate(node: Any, leaf_value: Callable[[Metric], Any], memo: dict[int, Any]) -> Any:
    """``node``'s value with each metric's value taken once (``leaf_value``, remembered in ``memo``).

    An expression combines its operands as TorchMetrics' ``CompositionalMetric.forward`` does: an
    operand metric whose value is ``None`` (a metric whose ``forward`` returns nothing) makes it ``None``.
    """
    if isinstance(node, CompositionalMetric):
        a = _evaluate(node.metric_a, leaf_value, memo)
        b = _evaluate(node.metric_b, leaf_value, memo)
        if a is None or (b is None and isinstance(node.metric_b, Metric)):
            return None
        return node.op(a) if b is None else node.op(a, b)
    if isinstance(node, Metric):
        if id(node) not in memo:
            memo[id(node)] = leaf_value(node)
        return memo[id(node)]
    return node


class _Held:
    """What one metric (and every metric inside it: a window's children) holds, to be put back after its update.

    Its attributes (a shallow copy of ``__dict__`` and of ``_modules``: the update counter, the cached
    value, the state objects, a window's ring position), the values of its tensor states (which an
    update may add to in place: copied, in one ``torch.cat`` where they share a dtype and device) and
    the items of its list states (which an update appends to: the chunks themselves are never written
    in place, so the list is copied, not the chunks).
    """

    __slots__ = ("_parts",)

    def __init__(self, metric: Metric) -> None:
        if metric._modules:  # a wrapper: the metrics inside it too
            self._parts = [_held_module(module) for module in metric.modules() if isinstance(module, Metric)]
        else:
            self._parts = [_held_module(metric)]

    def restore(self) -> None:
        """Put the metric back as it was: the same state objects (a compute group may share them), the same values.

        Last held first: where a later part holds a state object an earlier one holds too (a compute group's
        metrics share them), the earlier part's copy, from before both updates, is the one left.
        """
        for module, attributes, children, tensors, copies, lists in reversed(self._parts):
            if isinstance(copies, torch.Tensor):  # one copy of them all, joined along their first dimension
                copies = copies.split([len(t) for t in tensors])
            for tensor, copy in zip(tensors, copies):
                if not torch.equal(tensor, copy):  # added to in place
                    with torch.no_grad():
                        tensor.copy_(copy)
            for held, items in lists:
                held[:] = items
            current = module.__dict__
            for name in [name for name in current if name not in attributes]:
                del current[name]
            current.update(attributes)
            if children is not None:
                module._modules.clear()
                module._modules.update(children)


def _held_module(module: Metric) -> tuple[Any, ...]:
    """One metric's part of :class:`_Held` (its own states and attributes, not its children's)."""
    attributes = module.__dict__.copy()
    tensors, lists = [], []
    dtype: Any = None
    for name in attributes["_defaults"]:
        value = attributes[name]
        if type(value) is list:
            lists.append((value, value.copy()))
        elif isinstance(value, torch.Tensor):
            tensors.append(value)
            dtype = value.dtype if dtype is None or dtype is value.dtype else False
    copies: Any = None
    if dtype:  # the (T,) sums of most metrics: one copy of them all instead of one per state
        try:
            copies = torch.cat(tensors)
        except RuntimeError:  # 0-dim states, other shapes or devices
            pass
    if copies is None:
        copies = [t.clone() for t in tensors]
    children = module._modules
    return module, attributes, children.copy() if children else None, tensors, copies, lists


def _held_size(metric: Metric) -> int:
    """How many elements :class:`_Held` would copy for ``metric``: its tensor states' (a wrapper's children's too)."""
    size = 0
    for module in metric.modules() if metric._modules else (metric,):
        state = module.__dict__
        for name in state.get("_defaults", ()):
            value = state[name]
            if isinstance(value, torch.Tensor):
                size += value.numel()
    return size


_HANDS_SUMS: dict[type, bool] = {}  # class -> _hands_sums(class)


def _hands_sums(cls: type) -> bool:
    """Whether ``cls.update`` can hand its batch's sums over instead of adding them (``_PointwiseMetric``'s update).

    Asked of the class once. That update, while ``_forward_batch`` is in the metric's ``__dict__``, validates the
    batch, computes what it would add to each sum state and appends ``(state names, sums)`` there, changing no
    state (the hand-over ``TaskMetric.forward`` uses; other classes that hand over keep more for their batch value).
    """
    known = _HANDS_SUMS.get(cls)
    if known is None:
        from torchmetrics_ext.metrics.pointwise import _PointwiseMetric  # pointwise -> base -> this module

        known = _HANDS_SUMS[cls] = issubclass(cls, _PointwiseMetric) and cls._update_hands_statistics()
    return known


def _each_once(metrics: list[Metric], step: Callable[[Metric], None], update: bool = False) -> None:
    """``step`` (an ``update`` or ``forward`` of the batch) of each metric; if one raises, every metric as before.

    DESIGN's "a rejected batch is never half-applied", for the expression as a whole: each metric of
    the package refuses a bad batch before it changes (its own guarantee), but in ``ctr - auc`` with
    soft labels ``ctr`` had taken the batch when ``auc`` refused it. Each metric but the last is held
    (:class:`_Held`) before its step and put back if a later one raises.

    Why hold rather than validate every metric first and then update: holding works for every metric
    an expression may hold (ours with ``validate_args=False``, ``Windowed``, TorchMetrics' own, whose
    ``update`` is the only check there is), and it is the cheaper of the two: a copy of a few small
    sum states (a histogram for binned AUC) and of the list states' item lists (a few us a metric)
    against a second validation pass over the batch (10 to 35 us a metric: our updates check their
    inputs as they format them). One metric (``auc * 100``, ``r["ndcg@5"] - r["mrr@5"]``) and the
    last metric need no holding: nothing after them can refuse the batch.

    ``update`` of the pointwise metrics (NE, CTR, calibration, ...: :func:`_hands_sums`) needs no hold
    at all: each hands its validated sums over, and they are added once every metric has taken the
    batch (the same ``_foreach_add_`` its update makes, so the same values); a refused batch then only
    puts back their update counters. They go first, so that the last, unheld metric is one that would
    need a hold.
    """
    if len(metrics) == 1:
        step(metrics[0])
        return
    if update:  # the metrics that hand their sums over first (the order of distinct metrics changes nothing)
        metrics = sorted(metrics, key=lambda metric: not _hands_sums(type(metric)))
    # of those that would be held, the one with the most tensor state goes last, unheld: a binned AUC of 1M bins
    # before an NDCG copied its 16 MB histogram at every update (as long as the update itself)
    holdable = [metric for metric in metrics if not (update and _hands_sums(type(metric)))]
    if len(holdable) > 1:
        largest = max(holdable, key=_held_size)
        if largest is not metrics[-1]:
            metrics = [metric for metric in metrics if metric is not largest] + [largest]
    held: list[_Held] = []
    handed: list[tuple[Metric, int, Any, list[Any]]] = []
    try:
        for metric in metrics[:-1]:
            state = metric.__dict__
            if update and _hands_sums(type(metric)):
                sums: list[Any] = []
                handed.append((metric, state["_update_count"], state["_computed"], sums))
                state["_forward_batch"] = sums
                try:
                    step(metric)
                finally:
                    del state["_forward_batch"]
            else:
                held.append(_Held(metric))
                step(metric)
        step(metrics[-1])
    except BaseException:
        # the one that raised too, if held: with validate_args=False it may have half-changed. Last held first:
        # metrics of one compute group share their state objects, and each hold has the values its update found,
        # so the first hold's (from before the batch) must be the last put back
        for hold in reversed(held):
            hold.restore()
        for metric, count, computed, _ in handed:
            metric.__dict__["_update_count"], metric.__dict__["_computed"] = count, computed
        raise
    for metric, _, _, sums in handed:
        if sums:  # nothing for an empty batch
            (names, values), state = sums[0], metric.__dict__
            torch._foreach_add_([state[name] for name in names], list(values))


class _Expression(StatesInChildren, TensorArithmetic, CompositionalMetric):
    """TorchMetrics' ``CompositionalMetric`` whose metrics each take a batch once, however often it uses them.

    ``update``, ``forward`` and ``reset`` reach every metric of the whole expression (nested
    expressions included) once; ``compute`` computes each once. The value is TorchMetrics'.
    """

    @classmethod
    def of(cls, expression: CompositionalMetric) -> _Expression:
        """TorchMetrics' ``expression`` (its operator and operands) as an :class:`_Expression`."""
        return cls(expression.op, expression.metric_a, expression.metric_b)

    def _metrics(self) -> list[Metric]:
        return list(_leaves(self, {}).values())

    def _wrap_update(self, update: Callable) -> Callable:
        """TorchMetrics' update wrapper, with the expression's own update counter put back when the batch is refused."""
        wrapped = super()._wrap_update(update)

        @functools.wraps(update)
        def counted(*args: Any, **kwargs: Any) -> None:
            count = self.__dict__["_update_count"]
            try:
                wrapped(*args, **kwargs)
            except BaseException:  # as its metrics (see `_each_once`): KeyboardInterrupt too
                self.__dict__["_update_count"] = count
                raise

        return counted

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Give the batch to each metric of the expression once; a batch one of them refuses changes none of them."""
        _each_once(self._metrics(), lambda metric: metric.update(*args, **metric._filter_kwargs(**kwargs)), True)

    def compute(self) -> Any:
        """The expression of the metrics' values, each computed once."""
        return _evaluate(self, lambda metric: metric.compute(), {})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Each metric's ``forward`` once on the batch, combined as TorchMetrics' ``CompositionalMetric`` does.

        A batch one of the metrics refuses changes none of them (see :func:`_each_once`).
        """
        values: dict[int, Any] = {}

        def forward(metric: Metric) -> None:
            values[id(metric)] = metric(*args, **metric._filter_kwargs(**kwargs))

        _each_once(self._metrics(), forward)
        self._forward_cache = _evaluate(self, lambda metric: values[id(metric)], {})
        return self._forward_cache

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Merge each metric of another expression of the same metrics into this one's (``Metric.merge_state``).

        TorchMetrics' ``CompositionalMetric`` refuses ``merge_state`` (its ``full_state_update``). An
        expression holds no state of its own: its value is its metrics', so merging each metric with
        the other expression's metric in the same place (each once, in the order :meth:`update` reaches
        them) gives the expression of one set of metrics fed both streams, as far as each metric's own
        ``merge_state`` does (a ``Windowed`` merges its lifetime and keeps its own window, so
        ``w["window"]`` in an expression stays this expression's). Each metric checks what it
        takes (its own ``merge_state``); if one refuses, none of them changes.

        Args:
            incoming_state: an expression over metrics of the same classes, in the same order
                (``auc - ne`` built the same way).

        Raises:
            TypeError: ``incoming_state`` is not such an expression (a dict or one metric: merge the
                metrics themselves instead).
            ValueError: its metrics are not of this expression's classes, or one of them refuses the
                other's states (its own error); nothing changes.

        Examples:
            >>> import torch
            >>> import torchmetrics_ext as tmx
            >>> first, second = 2 * tmx.CTR() - 1, 2 * tmx.CTR() - 1
            >>> first.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 1]))
            >>> second.update(torch.tensor([0.3, 0.6]), torch.tensor([1, 0]))
            >>> first.merge_state(second)
            >>> first.compute()  # 2 * CTR 0.75 - 1 over the four rows
            tensor(0.5000, dtype=torch.float64)
        """
        if not isinstance(incoming_state, CompositionalMetric):
            raise WrongTypeError(
                "Expected `incoming_state` to be an expression of the same metrics (e.g. `auc - ne` built the "
                f"same way), got {type(incoming_state).__name__}: an expression has no states of its own; "
                "merge each of its metrics with `metric.merge_state(...)` instead."
            )
        ours, theirs = self._metrics(), list(_leaves(incoming_state, {}).values())
        if [type(metric) for metric in ours] != [type(metric) for metric in theirs]:
            names = [", ".join(type(metric).__name__ for metric in metrics) for metrics in (ours, theirs)]
            raise ValueError(
                f"Expected an expression of the same metrics to merge: this one has [{names[0]}], "
                f"the other [{names[1]}]."
            )
        pairs = {id(mine): other for mine, other in zip(ours, theirs, strict=True)}
        _each_once(ours, lambda metric: metric.merge_state(pairs[id(metric)]))
        self._computed = None

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot one value or a list of values (``compute()`` when ``val`` is None), as ``Metric.plot`` does.

        Needs matplotlib.

        TorchMetrics' ``CompositionalMetric`` has no ``plot`` (a bare ``NotImplementedError``). The axis
        names the expression's metrics; no direction or bounds are drawn (an expression has neither). A
        value with more than one dimension (``(T, S)`` of a ``Segmented``) is plotted as its flattened entries.

        Args:
            val: a value returned by ``compute``/``forward``, or a list of them (plotted over steps).
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.
        """
        if val is None:
            val = self.compute()

        def flat(value: Any) -> Any:
            return value.flatten() if isinstance(value, torch.Tensor) and value.ndim > 1 else value

        fig, ax = plot_single_or_multi_val(
            [flat(v) for v in val] if isinstance(val, (list, tuple)) else flat(val),
            ax=ax,
            name="expression of " + ", ".join(type(metric).__name__ for metric in self._metrics()),
        )
        return fig, ax

    def reset(self) -> None:
        """Reset each metric of the expression once."""
        for metric in self._metrics():
            metric.reset()

    def set_dtype(self, dst_type: str | torch.dtype) -> _Expression:
        """Each metric's own ``set_dtype`` once (TorchMetrics' casts the expression's buffers, no metric's states).

        Each metric keeps its own rule (a rate metric's float64 counts stay); a ``dst_type`` the states cannot
        sum in is refused before any metric changes.

        Raises:
            TypeError: ``dst_type`` is not a floating dtype the states could sum in
                (:func:`~torchmetrics_ext.utilities.checks.check_state_dtype`).
        """
        check_state_dtype(dst_type)
        for metric in self._metrics():
            metric.set_dtype(dst_type)
        return self


class _DictEntry(StatesInChildren, TensorArithmetic, CompositionalMetric):
    """``metric[idx]`` whose value is a dict: TorchMetrics' ``CompositionalMetric`` refusing arithmetic."""

    _dict_value_entry = '"entry"'  # replaced by the instance's own example

    def __init__(self, metric: TensorArithmetic, idx: Any, example: str) -> None:
        super().__init__(_Entry(idx), metric, None)  # type: ignore[arg-type]  # a Metric (the mixin's host)
        self._example = example
        self._name = f"{metric._arithmetic_name()}[{_as_source(idx)}]"

    def _arithmetic_name(self) -> str:
        return self._name

    def _dict_value_example(self) -> str | None:
        return self._example
