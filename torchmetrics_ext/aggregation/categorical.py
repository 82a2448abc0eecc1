"""Counts of arbitrary ``str``/``int`` categories that merge across batches and ranks."""

from __future__ import annotations

import functools
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.nn import Module
from torchmetrics.utilities.exceptions import TorchMetricsUserError

from torchmetrics_ext.aggregation.base import AggregationMetric
from torchmetrics_ext.aggregation.checks import check_categories
from torchmetrics_ext.metrics._checkpoints import UNCHECKED_SUFFIX
from torchmetrics_ext.metrics.base import _FORWARD_CONTEXT, one_task
from torchmetrics_ext.utilities.data import ordered_union
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.formatting import article

__all__ = ["CategoricalCount", "Category", "CategoryBatch"]

Category = str | int


class CategoryBatch(NamedTuple):
    """A batch's distinct categories and how many times each was seen."""

    categories: list[Category]
    counts: list[int] | Tensor


def _encode(category: Category) -> bytes:
    """A category's key: ``b"s"`` and its UTF-8 text, or ``b"i"`` and its decimal digits (``1`` and ``"1"`` differ).

    Lone surrogates (text decoded with ``errors="surrogateescape"``, such as file names) are kept
    (``"surrogatepass"``): every ``str`` is a category, and :func:`_decode_all` gives it back unchanged.
    """
    if isinstance(category, str):
        return b"s" + category.encode("utf-8", "surrogatepass")
    return b"i" + str(int(category)).encode()


def _encode_all(categories: Sequence[Category], device: torch.device) -> tuple[Tensor, Tensor]:
    """The keys of ``categories`` as the two key states: one flat ``uint8`` tensor and each key's int64 end in it."""
    raws = [_encode(c) for c in categories]
    ends = torch.tensor(list(accumulate(map(len, raws))), dtype=torch.long)
    data = torch.frombuffer(bytearray(b"".join(raws)), dtype=torch.uint8) if raws else torch.zeros(0, dtype=torch.uint8)
    return data.to(device), ends.to(device)


_STR = ord("s")  # the first byte of a str category's key
_KEY_STATES = ("category_bytes", "category_ends", "counts")  # the states that grow by one entry per new category
_MIN_ROOM = 64  # entries of the smallest buffer a growing state gets


def _with_room(state: Tensor, extra: Tensor | int, in_place: bool) -> Tensor:
    """``state`` (1-D) followed by ``extra`` (a tensor, or that many zeros), as a prefix view of a buffer with room.

    ``in_place``: ``state`` is a prefix view that :func:`_with_room` made, so the rest of its storage
    is spare room that nothing else reads: ``extra`` is written there when it fits. Otherwise (or
    when it does not fit) the result is a view of a new buffer of twice the needed size, so that
    appending one batch after another copies each entry about twice in all, not once per later batch.
    """
    used = state.numel()
    added = extra if isinstance(extra, int) else extra.numel()
    size = used + added
    if in_place and size <= state.untyped_storage().nbytes() // state.element_size():
        grown = state.as_strided((size,), (1,), 0)
    else:
        grown = state.new_empty(max(2 * size, _MIN_ROOM))[:size]
        grown[:used] = state
    if isinstance(extra, int):
        grown[used:].zero_()
    else:
        grown[used:] = extra
    return grown


def _compact(value: Any) -> Any:
    """``value`` without the spare room of its storage: a tensor whose storage holds more is copied."""
    if isinstance(value, Tensor) and value.untyped_storage().nbytes() > value.numel() * value.element_size():
        return value.clone()
    return value


def _decode_all(data: Tensor, ends: Tensor) -> list[Category]:
    """The categories held by the key states ``data`` (flat ``uint8``) and ``ends`` (each key's end in it)."""
    raw = data.cpu().numpy().tobytes()
    categories: list[Category] = []
    start = 0
    for end in ends.tolist():
        key = raw[start + 1 : end]
        categories.append(key.decode("utf-8", "surrogatepass") if raw[start] == _STR else int(key))
        start = end
    return categories


def _pack_keys(data: Tensor, ends: Tensor) -> Tensor:
    """The key states as one ``uint8`` tensor to gather: the number of keys, their int64 ends, then the keys."""
    header = torch.cat([ends.new_full((1,), ends.numel()), ends]).contiguous().view(torch.uint8)
    return torch.cat([header, data])


def _unpack_keys(packed: Tensor) -> tuple[Tensor, Tensor]:
    """``(data, ends)`` of :func:`_pack_keys`'s tensor."""
    packed = packed.cpu()
    num = int(packed[:8].clone().view(torch.int64).item())
    ends = packed[8 : 8 * (num + 1)].clone().view(torch.int64)
    return packed[8 * (num + 1) :], ends


def _joined_keys(keys: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Former ``category_keys`` (one ``uint8`` tensor per category) as the flat key states ``(data, ends)``."""
    if not keys:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    lengths = torch.tensor([key.numel() for key in keys], dtype=torch.long)
    return torch.cat([key.reshape(-1).to(torch.uint8) for key in keys]), lengths.cumsum(0)


class _Counted:
    """``compute``'s value whole: the categories and a copy of their counts (one 1-D tensor).

    TorchMetrics' compute wrapper syncs, copies and caches it as it is (it is no collection, so the
    wrapper's squeeze and clone of every tensor of a dict, a Python step per category, 1 s at 100k
    categories, pass it by); :meth:`as_dict` makes the dict of it once, in one operation.
    """

    __slots__ = ("_dict", "categories", "counts")

    def __init__(self, categories: list[Category], counts: Tensor) -> None:
        self.categories, self.counts = categories, counts
        self._dict: dict[Category, Tensor] | None = None

    def as_dict(self) -> dict[Category, Tensor]:
        """``{category: 0-dim count}``, each count a tensor of its own (as TorchMetrics' clones were), not a view.

        A view would share the counts' storage, and ``pickle`` writes a view's whole storage: the
        dict's pickle would grow with the square of the number of categories.
        """
        if self._dict is None:
            # torch.unbind_copy, through its operator: some PyTorch stubs type its value as None (its out= form's)
            copies: list[Tensor] = torch.ops.aten.unbind_copy.int(self.counts)
            self._dict = dict(zip(self.categories, copies, strict=True))
        return self._dict


def _former_layout(state: dict[str, Any]) -> None:
    """Make the attributes of a pickle of an earlier version (``category_keys``) this version's, in place."""
    former = state.pop("category_keys")
    data, ends = _joined_keys([former] if isinstance(former, Tensor) else list(former))
    counts = state.get("counts")
    if isinstance(counts, Tensor):
        data, ends = data.to(counts.device), ends.to(counts.device)
    state["category_bytes"], state["category_ends"] = data, ends
    for table, bytes_value, ends_value in (
        ("_defaults", torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)),
        ("_reductions", None, None),
    ):
        entries = state.get(table)
        if isinstance(entries, dict) and "category_keys" in entries:
            del entries["category_keys"]
            entries["category_bytes"], entries["category_ends"] = bytes_value, ends_value
    persistent = state.get("_persistent")
    if isinstance(persistent, dict) and "category_keys" in persistent:
        persistent["category_bytes"] = persistent["category_ends"] = persistent.pop("category_keys")
    cache = state.get("_cache")  # the local states of a metric pickled while synced
    if isinstance(cache, dict) and "category_keys" in cache:
        cache["category_bytes"], cache["category_ends"] = _joined_keys(list(cache.pop("category_keys")))
    state["_lookup"], state["_lookup_of"] = {}, (None, None, -1)  # rebuilt from the key states at the first use
    state["_computed"] = None


def _check_integer_dtype(categories: Tensor) -> None:
    """``TypeError`` unless ``categories`` has an integer dtype (read from the dtype: no pass over the values).

    A float, complex or bool tensor has no ``int`` categories: its values would be counted under
    float or bool keys that a checkpoint or a sync turns into truncated ints (``1.7`` and ``1.2``
    both ``1``, with two counts), and a NaN would fail halfway through an update.
    """
    if categories.is_floating_point() or categories.is_complex() or categories.dtype == torch.bool:
        raise WrongTypeError(f"Expected `categories` to be an integer tensor, got dtype {categories.dtype}.")


class CategoricalCount(AggregationMetric[CategoryBatch]):
    r"""How many times each category was seen: :math:`c_k = |\{i : x_i = k\}|`.

    Categories are arbitrary ``str`` or ``int`` values (``1`` and ``"1"`` are different
    categories), kept in first-seen order. A ``str``/``int`` subclass is its plain value (a
    ``(str, Enum)`` member ``Source.WEB = "web"`` is the category ``"web"``, an ``IntEnum`` its
    ``int``), and so is a NumPy integer scalar or a one-element integer tensor (``np.int64(3)`` and
    ``torch.tensor(3)`` are the category ``3``), so keys are the same before and after a checkpoint
    or a sync. Ranks may see different categories: when the metric syncs, ranks first exchange
    their category lists (``all_gather_object`` of the keys only, never the counts) and align
    their counts to the union, in rank order, then sum the counts. So the order is always one
    process's over the records taken in turn: after ``merge_state`` this metric's categories, then
    the incoming ones it lacked (in their order); after a sync, rank 0's, then rank 1's new ones,
    and so on, the same on every rank.

    Args:
        validate_args: reject anything but ``str``/``int`` categories before any state changes.
            A float, complex or bool tensor and a ``float``/``bool`` element of a sequence are
            refused with ``validate_args=False`` too (a ``TypeError``, nothing counted): the
            checks read the dtype, or the elements the update converts anyway, never a tensor's
            values, so skipping them would save nothing (and a ``1.7`` would be counted as a
            float key that a checkpoint or sync truncates to ``1``).
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Returns:
        ``compute()`` returns ``{category: float64 count}``; ``{}`` before any update.

    Raises:
        TypeError: if ``categories`` is not a sequence of ``str``/``int`` (``bool`` and ``float``
            are rejected) or an integer tensor (a float tensor is refused even where its values are
            whole numbers: cast it with ``.long()`` first), whatever ``validate_args``.

    Note:
        States: ``counts``, a float64 vector with one entry per category (exact up to 2**53), and
        the categories' keys in two integer tensors: ``category_bytes``, every key's bytes one
        after the other (``uint8``: ``b"s"`` and the UTF-8 text of a ``str``, ``b"i"`` and the
        digits of an ``int``), and ``category_ends``, where each key ends in it (int64, one per
        category). So ``state_dict``, pickling, ``deepcopy``, ``.to(device)`` and
        ``MetricCollection`` compute groups carry the categories with their counts, at the cost of
        three tensors whatever the number of categories (earlier versions kept one small tensor per
        category in a list state ``category_keys``, which took seconds to save, copy or pickle at
        100k categories; their checkpoints and pickles still load). A value cached by ``compute``
        is not carried by copies and pickles: a copy computes it again from its states. Memory
        grows with the number of distinct categories: the three states are views of buffers with
        room for as many categories again (doubling when full; checkpoints, copies and pickles
        carry no room). An update and ``forward`` cost the batch's categories, not those seen so
        far, in Python steps and ATen operations, also when the batch brings new ones (amortised);
        ``forward`` also copies the counts vector once (one device copy: the held one may be shared by a
        ``MetricCollection`` compute group's members). :class:`~torchmetrics_ext.Windowed` refuses it (its
        counts do not add up per update).

    Examples:
        >>> from torchmetrics_ext.aggregation import CategoricalCount
        >>> metric = CategoricalCount()
        >>> metric.update(["code", "math", "code"])
        >>> metric.fold(metric.summarize([7]))  # the same, in the aggregator's two steps
        >>> {k: v.item() for k, v in metric.compute().items()}
        {'code': 2.0, 'math': 1.0, 7: 1.0}
        >>> other = CategoricalCount()
        >>> other.update(["poem", "code"])
        >>> metric.merge_state(other)  # this metric's categories first, then the new ones
        >>> {k: v.item() for k, v in metric.compute().items()}
        {'code': 3.0, 'math': 1.0, 7: 1.0, 'poem': 1.0}
    """

    is_differentiable = False
    higher_is_better = None
    _dict_value_entry = "category"  # a dict value: no metric arithmetic (TensorArithmetic)
    _refused_options: ClassVar[tuple[str, ...]] = ("num_tasks",)  # no task dimension (one_task)
    full_state_update: bool = False
    plot_lower_bound = 0.0
    # one count and one key end per category seen, and their keys' bytes
    _data_sized_states = frozenset(
        {*_KEY_STATES, *(f"{name}{UNCHECKED_SUFFIX}" for name in _KEY_STATES)}  # either validate_args' names
    )
    # states of earlier versions that a load reads, and the states it makes of them (read by MetricsAggregator)
    _former_states: ClassVar[dict[str, tuple[str, ...]]] = {"category_keys": ("category_bytes", "category_ends")}
    # read by Windowed, which refuses this metric with the reason
    window_unsupported: ClassVar[str] = (
        "its counts vector grows with the categories seen and is aligned to their first-seen order, so "
        "per-update counts do not add up slot by slot; for a recent view, keep a second CategoricalCount "
        "and reset it every N steps."
    )
    _key_names: tuple[str, str, str]  # the names of _KEY_STATES in memory: `<name>_unchecked` when unvalidated
    _synced_value: Callable[[], _Counted]  # compute's whole value through the wrappers (see _wrap_compute)

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(one_task(self, kwargs), validate_args=validate_args, **kwargs)
        # validate_args names the states in memory only (see TaskMetric._unchecked_state_name): a validated
        # metric grouped behind an unvalidated one (MetricCollection's compute groups) took a float tensor
        data, ends, counts = (self._unchecked_state_name(name) for name in _KEY_STATES)
        self.__dict__["_key_names"] = (data, ends, counts)
        self.add_state(counts, default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(data, default=torch.zeros(0, dtype=torch.uint8), dist_reduce_fx=None)
        self.add_state(ends, default=torch.zeros(0, dtype=torch.long), dist_reduce_fx=None)
        self._lookup: dict[Category, int] = {}
        # the key states the lookup was made of, and their number of categories
        self._lookup_of: tuple[Tensor | None, Tensor | None, int] = (None, None, -1)

    # ------------------------------------------------------------------ states
    # The three states under their checkpoint names, for either validate_args: an unvalidated metric holds
    # them as `<name>_unchecked` in memory (TaskMetric._unchecked_state_name, so a compute group never joins
    # it to a validated one). Read here in one dict lookup: `torch.nn.Module`'s `__getattr__` fallback
    # (CheckpointedStates.__getattr__) would cost an unvalidated metric's every read a failed lookup first.

    @property
    def category_bytes(self) -> Tensor:
        """Every category's key, one after the other (``uint8``; see the class's Note)."""
        return self.__dict__[self._key_names[0]]

    @category_bytes.setter
    def category_bytes(self, value: Tensor) -> None:
        self.__dict__[self._key_names[0]] = value

    @property
    def category_ends(self) -> Tensor:
        """Where each category's key ends in ``category_bytes`` (int64, one per category)."""
        return self.__dict__[self._key_names[1]]

    @category_ends.setter
    def category_ends(self, value: Tensor) -> None:
        self.__dict__[self._key_names[1]] = value

    @property
    def counts(self) -> Tensor:
        """How many times each category was seen (float64, in the order of :attr:`categories`)."""
        return self.__dict__[self._key_names[2]]

    @counts.setter
    def counts(self, value: Tensor) -> None:
        self.__dict__[self._key_names[2]] = value

    # ------------------------------------------------------------------ categories

    @property
    def categories(self) -> list[Category]:
        """The categories, in the order of ``counts``.

        Examples:
            >>> from torchmetrics_ext.aggregation import CategoricalCount
            >>> metric = CategoricalCount()
            >>> metric.update(["code", "math", "code"])
            >>> metric.update([7])
            >>> metric.categories, metric.counts  # counts[i] counts categories[i]
            (['code', 'math', 7], tensor([2., 1., 1.], dtype=torch.float64))
        """
        return list(self._index())

    @property
    def category_keys(self) -> list[Tensor]:
        """Each key as its own ``uint8`` tensor (views of ``category_bytes``), as earlier versions held them.

        Examples:
            >>> from torchmetrics_ext.aggregation import CategoricalCount
            >>> metric = CategoricalCount()
            >>> metric.update(["math", 7])
            >>> [bytes(key.tolist()) for key in metric.category_keys]  # a type tag, then the text
            [b'smath', b'i7']
        """
        lengths = self.category_ends.diff(prepend=self.category_ends.new_zeros(1))
        return list(self.category_bytes.split(lengths.tolist()))

    def _index(self) -> dict[Category, int]:
        """``{category: position}``, rebuilt only when the key states were replaced (a load, a move, a sync)."""
        data, ends = self.category_bytes, self.category_ends
        cached_data, cached_ends, length = self._lookup_of
        if cached_data is not data or cached_ends is not ends or length != len(ends):
            self._set_index(_decode_all(data, ends))
        return self._lookup

    def _set_index(self, categories: Sequence[Category]) -> None:
        """Remember ``categories`` (those the key states hold now, in order) as the lookup."""
        self._lookup = {c: i for i, c in enumerate(categories)}
        self._lookup_of = (self.category_bytes, self.category_ends, len(self.category_ends))

    def _set_categories(self, categories: Sequence[Category], counts: Tensor) -> None:
        """Make the states exactly ``categories`` (distinct, in order) with ``counts``."""
        self.counts = counts
        self.category_bytes, self.category_ends = _encode_all(categories, self.device)
        self._set_index(categories)

    def _add_categories(self, new: Sequence[Category]) -> dict[Category, int]:
        lookup = self._index()
        fresh = [c for c in dict.fromkeys(new) if c not in lookup]
        if fresh:
            # states grown under inference mode (a validation step) stay ordinary tensors: the next
            # update outside it adds into the counts in place
            with torch.inference_mode(False):
                data, ends = _encode_all(fresh, self.device)
                if len(self.category_ends):
                    ends += self.category_ends[-1]
                self._append(data, ends, len(fresh))
            for c in fresh:
                lookup[c] = len(lookup)
            self._lookup_of = (self.category_bytes, self.category_ends, len(self.category_ends))
        return lookup

    def _append(self, data: Tensor, ends: Tensor, num: int) -> None:
        """Append new keys ``(data, ends)`` and ``num`` zero counts to the states, in the batch's cost (amortised).

        The three states are prefix views of buffers with spare room (:func:`_with_room`): while
        they are the very views this method made last (checked by identity: a state that a load, a
        move, a sync, a merge or ``reset`` replaced is never written past), the new entries go into
        the room; otherwise, or when the room is used up, into new buffers of twice the size. A
        ``torch.cat`` of the states per new batch copied every category seen so far at every update
        that brought a new one (O(C^2) for a stream of new ids).
        """
        states = tuple(getattr(self, name) for name in _KEY_STATES)
        made = self.__dict__.get("_grown")
        ours = made is not None and all(ref() is state for ref, state in zip(made, states, strict=True))
        extras: tuple[Tensor | int, ...] = (data, ends, num)
        grown = [_with_room(state, extra, ours) for state, extra in zip(states, extras, strict=True)]
        for name, value in zip(_KEY_STATES, grown, strict=True):
            setattr(self, name, value)
        self.__dict__["_grown"] = tuple(weakref.ref(value) for value in grown)

    def _align(self, union: Sequence[Category]) -> None:
        """Reorder (and extend with zero counts) to exactly the categories ``union``."""
        lookup = self._index()
        if list(lookup) == list(union[: len(lookup)]):  # this rank's categories first (rank 0): append the rest
            self._add_categories(union[len(lookup) :])
            return
        self._set_categories(union, self._counts_in(union))

    def _counts_in(self, union: Sequence[Category]) -> Tensor:
        """The counts laid out by ``union`` (a superset of the categories; zero elsewhere), a new tensor."""
        lookup = self._index()
        counts = self.counts.new_zeros(len(union))
        if not lookup:
            return counts
        if list(lookup) == list(union[: len(lookup)]):
            counts[: len(lookup)] = self.counts
            return counts
        where = {c: i for i, c in enumerate(union)}
        src = torch.tensor(list(lookup.values()), dtype=torch.long, device=self.device)
        dst = torch.tensor([where[c] for c in lookup], dtype=torch.long, device=self.device)
        counts[dst] = self.counts[src]
        return counts

    # ------------------------------------------------------------------ update / compute

    def _validate(self, categories: Sequence[Category] | Tensor) -> None:
        if isinstance(categories, Tensor):  # its dtype is checked by `_batch`, whatever `validate_args`
            return
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
            raise WrongTypeError(
                "Expected `categories` to be a sequence of str/int categories, an integer tensor or a NumPy array, "
                f"got {type(categories).__name__}."
            )
        check_categories(categories)

    def _batch(self, categories: Sequence[Category] | Tensor) -> CategoryBatch:
        """``update``'s argument checked (when ``validate_args``) and summarized; changes no state.

        A NumPy array (of ``int`` or ``str`` categories, any shape) is read as the list of its
        elements, as a tensor is, so it is checked element by element like a list.
        """
        if not isinstance(categories, (Tensor, Sequence)) and type(categories).__module__ == "numpy":
            categories = categories.reshape(-1).tolist()
        if self._check_inputs:
            self._validate(categories)
        if isinstance(categories, Tensor):
            # refused with `validate_args=False` too, as a list's float is (`summarize`): the dtype alone is read
            _check_integer_dtype(categories)
            keys, counts = torch.unique(categories.reshape(-1), return_counts=True)
            return CategoryBatch(keys.tolist(), counts)
        return self.summarize(categories)

    def update(self, categories: Sequence[Category] | Tensor) -> None:
        """Count each element of ``categories`` (a sequence of ``str``/``int``, an integer tensor or a NumPy array)."""
        self._fold(self._batch(categories))

    def forward(self, *args: Any, **kwargs: Any) -> dict[Category, Tensor]:
        """Count the batch and return its own ``{category: count}``, in the batch's cost.

        What TorchMetrics' ``forward`` returns and leaves (the batch's value, computed and, with
        ``dist_sync_on_step``, synced across ranks from the batch alone; the batch added to the
        states; one more update counted; no cached value), without its copy, reset and merge of
        every state: those cost a Python step per category seen (0.7 s per call at 100k
        categories). A rejected batch changes nothing.

        Raises:
            TorchMetricsUserError: if the metric is synced (as TorchMetrics' ``forward``).
            TypeError: see the class.
        """
        if self._is_synced:
            raise TorchMetricsUserError(
                "The Metric shouldn't be synced when performing ``forward``. HINT: Did you forget to call ``unsync`` ?."
            )
        if self.validate_args:
            self._require_arguments(args, kwargs)
        summary = self._batch(*args, **kwargs)
        state = self.__dict__
        context = {name: state[name] for name in _FORWARD_CONTEXT if name in state}
        accumulated = {name: getattr(self, name) for name in self._defaults}
        lookup = self._index(), self._lookup_of
        try:
            # the batch's value: compute (and with dist_sync_on_step a sync) of the batch's states alone
            counts = summary.counts
            counts = (
                counts.to(device=self.device, dtype=self.counts.dtype)
                if isinstance(counts, Tensor)
                else torch.tensor(counts, dtype=self.counts.dtype, device=self.device)
            )
            self._set_categories(summary.categories, counts)
            state["_update_count"], state["_computed"] = context["_update_count"] + 1, None
            state["_to_sync"], state["_should_unsync"] = self.dist_sync_on_step, False
            state["compute_on_cpu"], state["_enable_grad"] = False, True
            value = self.compute()
            for name, kept in accumulated.items():
                setattr(self, name, kept)
            self._lookup, self._lookup_of = lookup
            # into a new counts vector: the held one may be shared (a MetricCollection compute group links its
            # members' states to the first member's, and each member's forward adds the batch)
            self._fold(summary, in_place=False)
        except BaseException:
            for name, kept in accumulated.items():
                setattr(self, name, kept)
            self._lookup_of = (None, None, -1)  # rebuilt from the states at the next use
            state.update(context)
            raise
        state["_is_synced"], state["_should_unsync"], state["_to_sync"] = False, True, self.sync_on_compute
        state["_computed"], state["_enable_grad"] = None, False
        state["compute_on_cpu"] = context["compute_on_cpu"]
        state["_forward_cache"] = value
        if torch.is_inference_mode_enabled():
            self._ordinary_states()
        return value

    def summarize(self, values: Sequence[Any]) -> CategoryBatch:
        """The distinct categories of a batch of ``str``/``int`` values and their counts.

        A ``str``/``int`` subclass (a ``(str, Enum)`` member, an ``IntEnum``), a NumPy integer
        scalar or a one-element integer tensor counts as its plain value, the category it equals
        (``Source.WEB`` is ``"web"``, ``np.int64(3)`` is ``3``), whose key a checkpoint or a sync
        gives back.

        Raises:
            TypeError: on a value that is not a ``str`` or an ``int`` (``bool`` and ``float`` are not).
        """
        tally = Counter(check_categories(values))
        return CategoryBatch(list(tally), list(tally.values()))

    def _fold(self, summary: CategoryBatch, in_place: bool = True) -> None:
        """Add the batch's counts: into the held ``counts`` (``update``), or else into a copy of it (``forward``).

        ``forward`` never writes the held states, as TorchMetrics' ``forward`` (whose reduction rebinds them):
        a ``MetricCollection`` compute group's members share them, and each member's ``forward`` adds the
        batch. The copy is one device copy of the counts, with room for new categories (see :meth:`_append`).
        """
        if not summary.categories:
            return
        lookup = self._add_categories(summary.categories)
        # only the batch's categories are touched: the cost is the batch's, not the number of
        # categories seen so far (a dense increment vector cost 0.5 ms per update at 10k categories)
        index = torch.tensor([lookup[c] for c in summary.categories], dtype=torch.long, device=self.device)
        counts = summary.counts
        if isinstance(counts, Tensor):
            counts = counts.to(device=self.device, dtype=self.counts.dtype)
        else:
            counts = torch.tensor(counts, dtype=self.counts.dtype, device=self.device)
        if not in_place:
            with torch.inference_mode(False):
                own = _with_room(self.counts, 0, in_place=False)  # a new buffer: nothing else holds it
            made = self.__dict__.get("_grown")
            if made is not None and made[2]() is self.counts:  # the keys keep their room; the counts have new room
                self.__dict__["_grown"] = (made[0], made[1], weakref.ref(own))
            self.counts = own
        self.counts.index_add_(0, index, counts)

    def compute(self) -> dict[Category, Tensor]:
        """``{category: count}`` of everything seen (and synced across ranks)."""
        return self._whole_value().as_dict()

    def _own_compute(self) -> bool:
        """Whether ``compute`` is this class's: a subclass overriding it computes its own value from the counts."""
        return type(self).compute is CategoricalCount.compute

    def _whole_value(self) -> _Counted:
        """The value of the states as they are (no sync): the categories and a copy of the counts."""
        return _Counted(self.categories, self.counts.clone())

    def _wrap_compute(self, compute: Callable) -> Callable:
        """TorchMetrics' compute wrapper (and the base class's) around the whole value, not around its dict.

        The wrapper squeezes and clones each tensor of a returned dict, a Python step per category
        (1 s at 100k categories); it syncs, copies and caches the categories and the counts vector
        as one value (:class:`_Counted`) instead, and ``compute`` returns its dict, made once per
        value: the same ``{category: 0-dim float64 count}``, each count a tensor of its own. The
        wrapped whole value is ``_synced_value`` (read by :class:`MetricsAggregator`).
        """
        if not self._own_compute():  # a subclass's own compute: TorchMetrics' wrapper around it, as for any metric
            return super()._wrap_compute(compute)
        synced = super()._wrap_compute(self._whole_value)
        self.__dict__["_synced_value"] = synced

        @functools.wraps(compute)
        def as_dict(*args: Any, **kwargs: Any) -> dict[Category, Tensor]:
            return synced(*args, **kwargs).as_dict()

        return as_dict

    def __getstate__(self) -> dict[str, Any]:
        """The attributes, without the cached value (``deepcopy``, ``clone``, ``pickle``).

        It is a cache, and as a dict of one tensor per category it took seconds to copy or pickle
        at 100k categories: a copy computes its value again from the states it carries.

        The growing states lose their spare room first (a pickle writes a view's whole storage), in
        the metric itself: the pickle holds the metric's own tensors, not copies made for it alone.
        ``torch.multiprocessing`` (``ddp_spawn``, ``mp.spawn``) passes each CPU storage to the new
        process as a file descriptor that stays open only while its tensor lives, so a copy freed
        right after the pickle closed it before the process started ("bad value(s) in fds_to_keep").
        The next new category then grows the states afresh.
        """
        self._drop_room()
        state = super().__getstate__()
        state.pop("_synced_value", None)  # rebuilt by __setstate__, around the copy itself
        state.pop("_grown", None)  # weak references to the states: a copy's states are its own, without room
        data, ends, _ = state.get("_lookup_of", (None, None, -1))
        data_name, ends_name, _ = self._key_names
        if data is not state.get(data_name) or ends is not state.get(ends_name):
            state["_lookup"], state["_lookup_of"] = {}, (None, None, -1)  # rebuilt from the key states at the first use
        state["_computed"] = None
        return state

    def _drop_room(self) -> None:
        """Make the growing states tensors of their own size (no spare room), keeping the lookup of them."""
        names = [name for name in self._key_names if name in self.__dict__]
        with torch.inference_mode(False):  # a copy made under inference mode could not be added into later
            compact = {name: _compact(self.__dict__[name]) for name in names}
        changed = {name: value for name, value in compact.items() if value is not self.__dict__[name]}
        if not changed:
            return
        data, ends, length = self._lookup_of
        data_name, ends_name, _ = self._key_names
        lookup_of_states = data is self.__dict__.get(data_name) and ends is self.__dict__.get(ends_name)
        self.__dict__.update(changed)
        self.__dict__.pop("_grown", None)  # the next new category grows new buffers, never these
        if lookup_of_states:
            self._lookup_of = (self.__dict__[data_name], self.__dict__[ends_name], length)

    def state_dict(  # type: ignore[override]  # TorchMetrics' signature
        self, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """TorchMetrics' ``state_dict``, with the growing states saved without their spare room.

        ``torch.save`` writes a view's whole storage; the states are views of buffers with room
        for more categories (see :meth:`_append`).
        """
        destination = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for name in _KEY_STATES:
            if prefix + name in destination:
                destination[prefix + name] = _compact(destination[prefix + name])
        return destination

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle, one of an earlier version too (``category_keys``, one tensor per category).

        A pickle of a version that named the states alike under either ``validate_args`` keeps those names.
        """
        if "category_keys" in state and "category_bytes" not in state:
            state = dict(state)
            _former_layout(state)
        if "_key_names" not in state:
            state = {**state, "_key_names": _KEY_STATES}
        super().__setstate__(state)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> Module:
        """Move or cast the states, and drop a cached value: the next ``compute`` makes it of the moved states.

        TorchMetrics moves the tensors of a cached value, but the cached :class:`_Counted` is no
        collection it looks into: kept, it would give counts on the former device or dtype.
        """
        this = super()._apply(fn, exclude_state)
        self.__dict__["_computed"] = None
        return this

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot the counts of one value, or of a list of values over steps: one series per category.

        Over steps, every category of any value is a series, 0 in a value without it (counts
        only gain categories; a batch value from ``forward`` lacks those the batch did not see).
        Needs matplotlib.

        Args:
            val: a dict returned by ``compute``/``forward``, or a list of them; ``None`` plots ``compute()``.
            ax: an existing matplotlib axis to draw into.

        Returns:
            ``(figure, axis)`` as in TorchMetrics.
        """
        if isinstance(val, Sequence) and not isinstance(val, (str, bytes)) and all(isinstance(v, Mapping) for v in val):
            union, zero = ordered_union(val), torch.zeros((), dtype=torch.float64, device=self.device)
            val = [{c: v.get(c, zero) for c in union} for v in val]
        return super().plot(val, ax)

    # ------------------------------------------------------------------ merging

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge another metric's states (``merge_state``) category by category: this metric's, then the new ones.

        The order is one process's over this metric's records, then the incoming ones (as a sync lays
        out the ranks' categories in rank order), so merging rank 1's states into rank 0's gives the
        synced order. The states are new tensors: a compute group's members sharing the former ones
        keep them.
        """
        data, ends, counts = (incoming_state[name] for name in self._key_names)  # under this metric's names
        incoming = _decode_all(data, ends)
        union = ordered_union([self.categories, incoming])
        merged = self._counts_in(union)
        if incoming:
            where = {c: i for i, c in enumerate(union)}
            index = torch.tensor([where[c] for c in incoming], dtype=torch.long, device=self.device)
            merged.index_add_(0, index, counts.to(dtype=merged.dtype, device=self.device))
        self._set_categories(union, merged)

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        """Agree on the union of categories (keys only), then sum the aligned count vectors.

        Both go through ``dist_sync_fn`` (TorchMetrics' ``gather_all_tensors`` unless the metric was
        given one), so a custom gather (``dist_sync_fn=...``, with ``distributed_available_fn=...`` for
        a backend other than ``torch.distributed``) syncs this metric as it syncs any other: the keys as
        one ``uint8`` tensor per rank (:func:`_pack_keys`), then the counts.
        """
        group = process_group or self.process_group
        if dist_sync_fn is None:
            from torchmetrics.utilities.distributed import gather_all_tensors

            dist_sync_fn = gather_all_tensors
        packed = dist_sync_fn(_pack_keys(self.category_bytes, self.category_ends), group=group)
        self._align(ordered_union(_decode_all(*_unpack_keys(keys)) for keys in packed))
        self.counts = torch.stack(dist_sync_fn(self.counts, group=group)).sum(0)

    # ------------------------------------------------------------------ checkpoints

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load the states; a checkpoint of an earlier version (``category_keys``, one tensor per category) too."""
        former = state_dict.pop(prefix + "category_keys", None)
        if (
            former is not None
            and prefix + "category_bytes" not in state_dict
            and prefix + "category_ends" not in state_dict
        ):
            if isinstance(former, Tensor):  # one category's key, as a synced list state is stored
                former = [former]
            if isinstance(former, list) and all(isinstance(key, Tensor) for key in former):
                state_dict[prefix + "category_bytes"], state_dict[prefix + "category_ends"] = _joined_keys(former)
            else:
                error_msgs.append(
                    f"state mismatch for {prefix}category_keys: the checkpoint holds {article(type(former).__name__)}, "
                    f"{article(type(self).__name__)} of an earlier version a list of tensors."
                )
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _state_problems(self, state_dict: Mapping[str, Any], prefix: str, origin: str = "checkpoint") -> list[str]:
        """The base class's checks, and that the counts and keys describe the same categories."""
        problems = super()._state_problems(state_dict, prefix, origin)
        data, ends, counts = (state_dict.get(prefix + name) for name in self._key_names)  # loaded under these names
        if problems or not (isinstance(counts, Tensor) and isinstance(data, Tensor) and isinstance(ends, Tensor)):
            return problems
        if data.dtype != torch.uint8 or ends.dtype != torch.long:
            return [
                f"state mismatch: the {origin}'s category keys are {data.dtype} and {ends.dtype}, "
                f"this {type(self).__name__} expects torch.uint8 bytes and torch.int64 ends."
            ]
        end = int(ends[-1]) if len(ends) else 0
        if len(ends) != len(counts) or end != len(data) or bool((ends.diff(prepend=ends.new_zeros(1)) < 1).any()):
            return [
                f"state mismatch: the {origin}'s {len(counts)} counts and {len(ends)} category keys "
                f"(ending at byte {end} of {len(data)}) do not describe the same categories."
            ]
        return []
