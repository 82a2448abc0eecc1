"""The Trainer's label arrays read by ``label_names`` entry, for the Hugging Face builders.

``transformers.Trainer`` passes one label array per ``TrainingArguments.label_names`` entry, in that
order, told apart by position alone. The builders of :mod:`torchmetrics_ext.integrations.huggingface`
name the entries that are per-row columns rather than labels (``weights``, ``groups``, ``segments``,
``sessions``); :func:`_label_columns` checks those names once, when a builder is called, and
:meth:`_LabelColumns.split` reads every evaluation's arrays, the same way for every builder and
column, naming the entry in each error. The Trainer calls no ``compute_metrics`` when an eval batch
lacks an entry: :func:`_skipped_metrics_callback` is the ``TrainerCallback`` that says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.utilities.checks import as_str, refuse_repeats, sequence_items
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import warn_at_user


def _tensor(value: Any) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(value)
    return tensor.detach()


def _joined(value: Any) -> Any:
    """The Trainer's eval output with its per-batch list (``eval_do_concat_batches=False``) joined.

    The Trainer keeps a **list** of per-batch outputs when it does not concatenate batches, and
    gives a **tuple** for several outputs (the model's outputs, or one label array per
    ``label_names`` entry); a batch may itself be such a tuple. Batches are concatenated along
    the example axis, position by position for tuples.
    """
    if not isinstance(value, list):
        return value
    batches = [_joined(batch) for batch in value]
    if not batches:
        raise ValueError("Expected at least one eval batch, got an empty list.")
    if isinstance(batches[0], tuple):
        return tuple(torch.cat([_tensor(batch[i]) for batch in batches]) for i in range(len(batches[0])))
    return torch.cat([_tensor(batch) for batch in batches])


def _named_arrays(labels: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """The label arrays of an evaluation (one per ``label_names`` entry, in that order) by their entry's name.

    Raises:
        ValueError: the Trainer gave another number of arrays than ``label_names`` has entries.
    """
    arrays = _joined(labels)
    arrays = arrays if isinstance(arrays, tuple) else (arrays,)
    if len(arrays) != len(label_names):
        raise ValueError(
            f"Expected one label array per `label_names` entry {list(label_names)}, got {len(arrays)}: "
            "give the builder the Trainer's `TrainingArguments.label_names`, in their order."
        )
    return dict(zip(label_names, arrays, strict=True))


def _sequence_of_names(argument: str, value: Any, example: str) -> tuple[Any, ...]:
    """``value`` as a tuple of names; a single string (which would be read letter by letter) is an error.

    Any sequence, a 1-D NumPy string array too (:func:`~torchmetrics_ext.utilities.checks.sequence_items`);
    a name given as a NumPy string (a 0-dim array too) is its Python string (:func:`as_str`), and
    one such string alone is the single string.
    """
    one = as_str(value)
    if one is not None:
        raise WrongTypeError(
            f"Expected `{argument}` to be a sequence of names, got the string {value!r} (read letter by letter): "
            f"write {argument}=({one!r},), as in {example}."
        )
    items = sequence_items(argument, value)  # a mapping (its keys, iterated) is refused there
    if items is None:
        raise WrongTypeError(f"Expected `{argument}` to be a sequence of names, as in {example}, got {value!r}.")
    names = [as_str(item) for item in items]  # NumPy strings as Python strings; anything else left to be refused
    return tuple(item if name is None else name for item, name in zip(items, names, strict=True))


def _label_name_entries(label_names: Any, example: str) -> tuple[str, ...]:
    """``label_names`` checked: a sequence of distinct names (``str``)."""
    names = _sequence_of_names("label_names", label_names, example)
    for name in names:
        if not isinstance(name, str):
            raise WrongTypeError(f"Expected `label_names` to hold names (str), got {name!r}.")
    refuse_repeats("label_names", label_names, list(names))
    return names


def _entry_of(argument: str, value: Any, names: tuple[str, ...]) -> str:
    """``value`` (given as ``argument``) as the name of one of the entries ``names`` of ``label_names``."""
    name = as_str(value)
    if name not in names:
        raise refusal(
            f"Expected `{argument}` to be an entry of `label_names` {list(names)}, got {value!r}.",
            wrong_type=name is None,
        )
    return name


# the per-row columns a builder reads from `label_names` entries besides the labels: argument -> what the entry holds
_COLUMNS = {
    "weights": "sample weights",
    "groups": "group ids",
    "segments": "segment ids",
    "sessions": "session ids",
}


class _LabelColumns:
    """The Trainer's ``label_names`` (in order) split into the labels' entries and the builder's per-row columns.

    One reading for every builder and column: :meth:`split` checks the number of label arrays, and
    reads each column named by a builder argument (``weights``, ``groups``, ``segments``,
    ``sessions``) as ``(N,)`` float64 weights or int64 ids, naming its entry in every error.
    """

    def __init__(self, names: tuple[str, ...], columns: dict[str, str]) -> None:
        self.names = names  # every entry, in the Trainer's order
        self.columns = columns  # builder argument -> its entry
        self.labels = tuple(name for name in names if name not in columns.values())  # the labels' entries, in order

    def split(self, labels: Any, n: int) -> tuple[tuple[Any, ...], dict[str, Tensor]]:
        """The label arrays of the labels' entries (in order), and each column checked, by its argument.

        Raises:
            ValueError: another number of label arrays than entries, a column of another length than ``n``,
                NaN, infinite or negative weights, each naming its entry.
            TypeError: bool weights, float (or bool) ids, naming the entry.
        """
        named = _named_arrays(labels, self.names)
        columns = {}
        for argument, entry in self.columns.items():
            value = _tensor(named[entry])
            if argument == "weights":
                columns[argument] = _weight_column(entry, value, n)
            else:
                columns[argument] = _id_column(entry, value, n, _COLUMNS[argument])
        return tuple(named[name] for name in self.labels), columns


def _label_columns(
    label_names: Any, given: Mapping[str, Any], example: str, counts: set[int], labels: str, hint: str = ""
) -> _LabelColumns | None:
    """``label_names`` and the builder arguments ``given`` (argument -> entry or ``None``) naming columns, checked.

    ``counts``: the numbers of labels' entries the builder takes (the entries no argument names),
    ``labels`` says what they are, for the error. ``None``: no ``label_names``, every label array is
    labels, as before these arguments existed. Id columns may share an entry (one user id for GAUC and
    for ranking); the weights' entry is its own. ``hint`` leads the error of a wrong number of labels'
    entries: a column argument misspelt (``segment=``) leaves its entry among the labels.
    """
    if label_names is None:
        for argument, value in given.items():
            if value is not None:
                raise ValueError(
                    f"Expected `label_names` (the Trainer's TrainingArguments.label_names, in order) with "
                    f"`{argument}={value!r}`: the Trainer passes one label array per entry, told apart by position "
                    f"alone, e.g. label_names=('labels', {value!r}), {argument}={value!r}."
                )
        return None
    names = _label_name_entries(label_names, example)
    columns = {argument: _entry_of(argument, value, names) for argument, value in given.items() if value is not None}
    weights = columns.get("weights")
    for argument, entry in columns.items():
        if argument != "weights" and entry == weights:
            raise ValueError(
                f"Expected `weights` and `{argument}` to name two entries of `label_names`, got {entry!r} twice."
            )
    split = _LabelColumns(names, columns)
    if len(split.labels) not in counts:
        besides = ", ".join(f"`{argument}`" for argument in columns) or "no column"
        raise ValueError(f"{hint}Expected `label_names` to hold {labels}, besides {besides}, got {list(split.labels)}.")
    return split


def _flat(entry: str, what: str, value: Tensor, n: int) -> Tensor:
    """One label array read as a ``(N,)`` column (``(N, 1)`` and 0-dim taken), else an error naming ``entry``."""
    value = value.reshape(1) if value.ndim == 0 else value
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.shape != (n,):
        raise ValueError(
            f"Expected label_names entry {entry!r} ({what}) to hold one value per example, shape ({n},), got "
            f"{tuple(value.shape)}."
        )
    return value


def _weight_column(entry: str, value: Tensor, n: int) -> Tensor:
    """The ``weights`` entry as float64 ``(N,)`` weights: finite and non-negative, else an error naming ``entry``.

    One host read per call (per evaluation, or per eval batch): never per training step.
    """
    value = _flat(entry, "sample weights", value, n)
    if value.dtype == torch.bool or value.is_complex():
        raise WrongTypeError(
            f"Expected label_names entry {entry!r} (sample weights) to be real numbers, got {value.dtype}."
        )
    value = value.to(torch.float64)
    if n and not bool(torch.isfinite(value).all() & (value >= 0).all()):
        bad = value[~(torch.isfinite(value) & (value >= 0))][0].item()
        raise ValueError(
            f"Expected label_names entry {entry!r} (sample weights) to be finite and non-negative, got {bad}."
        )
    return value


def _id_column(entry: str, value: Tensor, n: int, what: str) -> Tensor:
    """An id entry (``groups``, ``segments``, ``sessions``) as int64 ``(N,)`` ids: an integer dtype, else an error.

    Float ids are refused whatever their values: ids past 2**24 (float32) or 2**53 (float64) merge, silently.
    """
    value = _flat(entry, what, value, n)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise WrongTypeError(
            f"Expected label_names entry {entry!r} ({what}) to have an integer dtype, got {value.dtype}: "
            "float ids merge past 2**24 (float32); give the dataset integer ids."
        )
    return value.to(torch.int64)


def _absent_entries(label_names: Sequence[str], dataloader: Any) -> list[str] | None:
    """The ``label_names`` entries the first row of ``dataloader``'s map-style dataset lacks (``None``: unknown)."""
    try:
        row = dataloader.dataset[0]
    except Exception:  # no dataloader, an IterableDataset, an empty eval set: unknown, said as such
        return None
    if not isinstance(row, Mapping):
        return None
    return [name for name in label_names if row.get(name) is None]


def _trainer_label_names(args: Any, model: Any) -> tuple[list[str] | None, str]:
    """The label names ``transformers.Trainer`` reads each eval batch's labels by, and where they come from.

    ``TrainingArguments.label_names`` where given; else, as the Trainer sets its ``label_names`` at
    construction, transformers' ``find_labels`` of the model's class (a PEFT model's base model): the
    forward's arguments whose name holds ``"label"`` (and ``start_positions``/``end_positions`` for a
    ``...QuestionAnswering`` class), ``[]`` for a forward without one. ``None`` where neither is known (no model
    given to the hook): said as the Trainer's default.
    """
    names = getattr(args, "label_names", None)
    if names is not None:
        return list(names), "TrainingArguments.label_names"
    if model is None:
        return None, "TrainingArguments.label_names (None: the label arguments of the model's forward)"
    from transformers.utils import find_labels  # the `huggingface` extra, there when the Trainer calls this hook

    try:
        from transformers.trainer_utils import unwrap_peft_model  # as the Trainer inspects the model (recent)

        model = unwrap_peft_model(model)
    except Exception:  # an older transformers (no helper), or a PEFT model it cannot unwrap: the model's own class
        pass
    return list(find_labels(type(model))), f"label names the Trainer took from `{type(model).__name__}.forward`"


def _warn_of_best_model_direction(compute_metrics: Any, args: Any) -> None:
    """Warn where ``metric_for_best_model`` names a metric of ``compute_metrics`` read the wrong way round.

    ``TrainingArguments`` guesses ``greater_is_better`` from the name alone (higher is better unless it ends in
    ``loss``): wrong for ``"ne"`` and for every lower-is-better key of several tasks (``"log_loss/click"``), where
    ``load_best_model_at_end`` then keeps the worst checkpoint and ``EarlyStoppingCallback`` stops as the model
    improves. Metrics without a direction (calibration, CTR) and keys of no metric here say nothing.
    """
    metric = getattr(args, "metric_for_best_model", None)
    greater = getattr(args, "greater_is_better", None)
    if not isinstance(metric, str) or greater is None:
        return
    higher = compute_metrics._higher_is_better(metric)
    if higher is None or bool(greater) == higher:
        return
    way = "lower" if not higher else "higher"
    warn_at_user(
        f"TrainingArguments(metric_for_best_model={metric!r}) names a metric of compute_metrics where {way} is "
        f"better, but greater_is_better={bool(greater)} (unless given, the Trainer guesses it from the name: higher "
        "is better unless it ends in 'loss'), so load_best_model_at_end would keep the worst checkpoint and "
        "EarlyStoppingCallback would stop while the model improves. Give "
        f"TrainingArguments(..., greater_is_better={higher}).",
    )


def _skipped_metrics_callback(compute_metrics: Any) -> Any:
    """A ``TrainerCallback`` that warns after an evaluation that never reached ``compute_metrics`` (HFComputeMetrics).

    See :meth:`~torchmetrics_ext.integrations.huggingface.HFComputeMetrics.callback`.
    """
    from transformers import TrainerCallback  # the `huggingface` extra, imported only when a callback is asked for

    class _ComputeMetricsReached(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _warn_of_best_model_direction(compute_metrics, args)

        def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            compute_metrics._take_computed()  # predict() computes too: a later skipped evaluation is still seen

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if compute_metrics._take_computed():
                return
            label_names, source = _trainer_label_names(args, kwargs.get("model"))
            runtime = [key for key in kwargs.get("metrics") or {} if key.endswith("_runtime")]
            prefix = runtime[0].removesuffix("_runtime") if runtime else "eval"
            if label_names == []:
                warn_at_user(
                    f"compute_metrics was not called in evaluation {prefix!r}, and the Trainer logged none of its "
                    f"metrics: TrainingArguments.label_names is None and `{type(kwargs.get('model')).__name__}"
                    ".forward` "
                    "has no argument whose name holds 'label' (transformers' find_labels), so the Trainer's label "
                    "names are [] and it never finds labels. Set TrainingArguments(label_names=[...]) to the eval "
                    "set's label keys (the model's forward must take them), or give the forward a `labels` argument.",
                    UserWarning,
                )
                return
            absent = None if label_names is None else _absent_entries(label_names, kwargs.get("eval_dataloader"))
            listed = "" if label_names is None else f" ({label_names})"
            where = (
                f"the eval rows lack the label_names entries {absent}, so the Trainer found no labels"
                if absent
                else "the Trainer found no labels or no predictions"
            )
            warn_at_user(
                f"compute_metrics was not called in evaluation {prefix!r}: {where}, and logged none of its metrics. "
                f"The Trainer calls compute_metrics only when every eval batch holds every "
                f"{source} entry{listed} and the model returns predictions (not with "
                "prediction_loss_only=True): give the eval set those keys and keep them through the data collator "
                "(`remove_unused_columns` keeps every label_names entry; the model's forward must take them).",
                UserWarning,
            )

    return _ComputeMetricsReached()
