"""Per-sample metric transforms, applied inside the dataset (and its DataLoader workers)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from torchmetrics_ext.aggregation.types import AggregationType, Metric, MetricValue
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.formatting import article

__all__ = ["DefaultTrainingMetricTransform", "MetricTransform"]


_RECORD_FIELDS = ("dataset_name", "name", "value", "agg_type")


def _checked_records(owner: str, records: object) -> list[Metric]:
    """``records`` as a new list; a ``TypeError`` naming ``owner._generate_metrics`` unless an iterable of records.

    A record is a :class:`Metric` or any object with its four fields (as :class:`MetricsAggregator` takes them).
    A list, a tuple or another iterable of records (a generator: ``_generate_metrics`` written with ``yield``, as
    :meth:`MetricsAggregator.update` also takes) is read once; a string, a mapping or one record is none.
    """
    if not isinstance(records, (list, tuple)):
        one_record = hasattr(records, "agg_type")
        if one_record or isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
            hint = " (wrap one record in a list: return [record])" if one_record else ""
            raise WrongTypeError(
                f"Expected {owner}._generate_metrics to return a list of Metric records, "
                f"got {type(records).__name__}{hint}."
            )
        records = list(records)  # a generator's records, read once (the checks below and the caller's list)
    for i, record in enumerate(records):
        if not isinstance(record, Metric) and not all(hasattr(record, field) for field in _RECORD_FIELDS):
            raise WrongTypeError(
                f"Expected {owner}._generate_metrics to return a list of Metric records, "
                f"got {record!r} ({type(record).__name__}) at position {i}."
            )
    return list(records)


def _is_a_sequence(item: object) -> bool:
    """A list, a tuple, or a tensor/array of at least one dimension (a 0-dim tensor or NumPy scalar is a token)."""
    ndim = getattr(item, "ndim", None)
    return isinstance(item, (list, tuple)) or (isinstance(ndim, int) and ndim >= 1)


def _check_one_sequence(field: str, tokens: Any) -> None:
    """A ``ValueError`` if ``tokens`` (which has a length) is a batch of sequences rather than one.

    ``len`` of a ``(1, 512)`` tensor (a tokenizer's ``return_tensors="pt"`` row) or of ``[[1, 2, 3]]`` is 1, so such a
    sample was counted as one token. Reads the array's ``ndim`` or a list's first item only: no pass over the tokens.
    """
    ndim = getattr(tokens, "ndim", None)
    if isinstance(ndim, int) and ndim > 1:
        got = f"shape {tuple(tokens.shape)}"
    elif isinstance(tokens, (list, tuple)) and tokens and _is_a_sequence(tokens[0]):
        got = f"{article(type(tokens).__name__)} of {len(tokens)} sequences"
    else:
        return
    raise ValueError(
        f"Expected sample[{field!r}] to be one sequence of tokens (a list or a 1-D tensor, counted with len()), "
        f"got {got}: its len() would count rows, not tokens. Flatten it (or squeeze a leading dimension of 1)."
    )


class MetricTransform(ABC):
    """Base class of transforms that attach per-sample :class:`Metric` records to a sample.

    Subclasses implement :meth:`_generate_metrics`; calling the transform appends the records
    to ``sample["metrics"]`` (created if absent) and returns the sample. A dataset calls
    :meth:`set_dataset_name` once so every record carries its namespace. The transform holds
    only its dataset name, so it pickles into DataLoader worker processes (fork or spawn).

    Raises:
        RuntimeError: if the transform is called before :meth:`set_dataset_name`.
        TypeError: if the sample is not a mapping, ``sample["metrics"]`` is not a list, or
            :meth:`_generate_metrics` returns anything but a list, tuple or other iterable (a generator)
            of :class:`Metric` records (the sample is left as it was).

    Examples:
        >>> from torchmetrics_ext.aggregation import AggregationType, MetricsAggregator
        >>> class ResponseTransform(MetricTransform):
        ...     def _generate_metrics(self, sample):
        ...         return [
        ...             self.new_metric("response_len", len(sample["response"]), AggregationType.MEAN),
        ...             self.new_metric("source", sample["source"], AggregationType.CATEGORICAL_COUNT),
        ...         ]
        >>> transform = ResponseTransform()
        >>> transform.set_dataset_name("chat")
        >>> samples = [{"response": [1, 2, 3], "source": "web"}, {"response": [4], "source": "book"}]
        >>> samples = [transform(sample) for sample in samples]
        >>> aggregator = MetricsAggregator()
        >>> aggregator.update([record for sample in samples for record in sample["metrics"]])
        >>> aggregator.get_metrics_for_logging(prefix="train")
        {'train_chat/response_len': 2.0, 'train_chat/source_count_web': 1.0, 'train_chat/source_count_book': 1.0}
    """

    def __init__(self) -> None:
        self.dataset_name: str | None = None

    def set_dataset_name(self, dataset_name: str) -> None:
        """Set the dataset namespace of every record this transform creates.

        A wrong type is a ``TypeError`` and a wrong value a ``ValueError``, as everywhere in the
        aggregation family (a record's ``dataset_name`` that is not a ``str`` is a ``TypeError`` in
        :meth:`MetricsAggregator.update`, an empty one a ``ValueError``). A refused name leaves the
        one set before.

        Raises:
            TypeError: if ``dataset_name`` is not a ``str`` (``None`` included).
            ValueError: if ``dataset_name`` is empty (it would be logged as ``train_/x``).

        Examples:
            >>> from torchmetrics_ext.aggregation import DefaultTrainingMetricTransform
            >>> transform = DefaultTrainingMetricTransform()
            >>> transform.set_dataset_name(None)
            Traceback (most recent call last):
            torchmetrics_ext.WrongTypeError: Expected `dataset_name` to be a non-empty string, got None (NoneType).
            >>> transform.set_dataset_name("")
            Traceback (most recent call last):
            ValueError: Expected `dataset_name` to be a non-empty string, got ''.
        """
        if not isinstance(dataset_name, str):
            kind = type(dataset_name).__name__
            raise WrongTypeError(f"Expected `dataset_name` to be a non-empty string, got {dataset_name!r} ({kind}).")
        if not dataset_name:
            raise ValueError(f"Expected `dataset_name` to be a non-empty string, got {dataset_name!r}.")
        self.dataset_name = dataset_name

    def new_metric(self, name: str, value: MetricValue, agg_type: AggregationType) -> Metric:
        """A record of this transform's dataset."""
        if self.dataset_name is None:
            raise RuntimeError(
                f"{type(self).__name__} has no dataset name: call `set_dataset_name(...)` before using it."
            )
        return Metric(self.dataset_name, name, value, agg_type)

    @abstractmethod
    def _generate_metrics(self, sample: Mapping[str, Any]) -> list[Metric]:
        """The records of one sample (use :meth:`new_metric`)."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Append this sample's records to ``sample["metrics"]`` and return the sample."""
        if self.dataset_name is None:
            raise RuntimeError(
                f"{type(self).__name__} has no dataset name: call `set_dataset_name(...)` before using it."
            )
        if not isinstance(sample, Mapping):
            raise WrongTypeError(f"Expected `sample` to be a dict, got {type(sample).__name__}.")
        records = _checked_records(type(self).__name__, self._generate_metrics(sample))
        existing = sample.get("metrics")
        if existing is None:
            sample["metrics"] = records  # a new list (_checked_records)
        elif isinstance(existing, list):
            existing.extend(records)
        else:
            raise WrongTypeError(f"Expected `sample['metrics']` to be a list, got {type(existing).__name__}.")
        return sample


class DefaultTrainingMetricTransform(MetricTransform):
    """Counts samples and tokens and tracks the sequence-length distribution.

    Records per sample, with ``n = len(sample["tokens"])`` (or ``sample["input_ids"]`` when
    there is no ``"tokens"``):

    * ``samples_seen``: SUM of 1,
    * ``tokens_seen``: SUM of ``n``,
    * ``seq_len``: DISTRIBUTION of ``n``.

    Raises:
        KeyError: if the sample has neither ``"tokens"`` nor ``"input_ids"``.
        TypeError: if that field has no length (``None``, a number, a 0-dim tensor), or is a mapping (a tokenizer's
            whole output, such as a ``BatchEncoding``, whose ``len()`` counts its fields).
        ValueError: if that field holds several sequences (a tensor or array of more than one dimension, such as
            a tokenizer's ``(1, L)`` row, or a list of lists), whose ``len()`` counts rows, not tokens.

    Examples:
        >>> transform = DefaultTrainingMetricTransform()
        >>> transform.set_dataset_name("alpaca")
        >>> sample = transform({"tokens": [1, 2, 3, 4, 5]})
        >>> for record in sample["metrics"]:
        ...     print(record)
        Metric(dataset_name='alpaca', name='samples_seen', value=1, agg_type=AggregationType.SUM)
        Metric(dataset_name='alpaca', name='tokens_seen', value=5, agg_type=AggregationType.SUM)
        Metric(dataset_name='alpaca', name='seq_len', value=5, agg_type=AggregationType.DISTRIBUTION)
    """

    def _generate_metrics(self, sample: Mapping[str, Any]) -> list[Metric]:
        field = "tokens" if "tokens" in sample else "input_ids"
        if field not in sample:
            raise KeyError(
                f"{type(self).__name__} expects a sample with 'tokens' or 'input_ids', got keys {sorted(sample)}."
            )
        tokens = sample[field]
        try:
            n = len(tokens)
        except TypeError:  # None, a number, a 0-dim tensor
            raise WrongTypeError(
                f"Expected sample[{field!r}] to be a sequence of tokens (a list or a 1-D tensor), "
                f"got {type(tokens).__name__}: {tokens!r}."
            ) from None
        # a list or tuple of ints, a 1-D tensor or array need no more look (no call: this runs per sample)
        kind = type(tokens)
        if kind is list or kind is tuple:
            if n and type(tokens[0]) is not int:
                _check_one_sequence(field, tokens)
        elif getattr(tokens, "ndim", None) != 1:
            if isinstance(tokens, Mapping):  # a tokenizer's whole output: len() counts its fields
                raise WrongTypeError(
                    f"Expected sample[{field!r}] to be a sequence of tokens (a list or a 1-D tensor), got a mapping "
                    f"({type(tokens).__name__} with keys {sorted(map(str, tokens))}): its len() would count its "
                    "fields, not tokens. Pass its token ids (e.g. its 'input_ids')."
                )
            _check_one_sequence(field, tokens)
        return [
            self.new_metric("samples_seen", 1, AggregationType.SUM),
            self.new_metric("tokens_seen", n, AggregationType.SUM),
            self.new_metric("seq_len", n, AggregationType.DISTRIBUTION),
        ]
