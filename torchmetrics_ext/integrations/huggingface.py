"""``compute_metrics`` for ``transformers.Trainer`` built from the package's metrics.

The Trainer calls ``compute_metrics`` in one of two ways, and the objects built here serve both:

* whole eval arrays (default): one call with every prediction and label of the eval set as
  numpy arrays; the metrics are updated once, computed and reset;
* ``TrainingArguments(batch_eval_metrics=True)``: one call per eval batch with tensors and
  ``compute_result=False`` (the metrics are updated, nothing is kept but their states), then
  ``compute_result=True`` on the last batch, which computes and resets. Evaluation memory is the
  metrics' states: constant for the sum metrics (NE, calibration, ...), binned AUC/AUPRC
  (``num_bins=``) and the padded-ranking metrics; exact AUC/AUPRC (the default ``"auc"``) keep
  every score (8 bytes per row).

Under DDP (``torchrun``, several processes) the Trainer gathers predictions from every process
before calling ``compute_metrics`` (accelerate's ``gather_for_metrics``, which also drops the
duplicated samples that complete the last uneven step), and calls it on every process with the
same rows: each process computes the same values, those of one process over the whole eval set,
in both modes. So the metrics here never sync themselves (``sync_on_compute=False``;
``sync_on_compute=True`` is refused): they would count every row ``world_size`` times.

* :func:`pointwise_compute_metrics`: registry names (``"ne"``, ``"auc"``, ...) over binary
  labels, one or several tasks, fed through :class:`~torchmetrics_ext.RecMetricModule`.
* :func:`ranking_compute_metrics`: padded candidate lists (``(queries, candidates)`` scores,
  ``padding_value`` where there is no candidate, labels as the index of the relevant candidate
  or a relevance matrix) scored by one :class:`~torchmetrics_ext.RankingMetrics`, which gives
  ``Recall@k``/``MRR@k`` (and NDCG, precision, hit rate, MAP) for many ``k`` from one sort; or
  flat rows, one score each, grouped into queries by session ids.

Per-row columns come from the Trainer's label arrays. The Trainer passes one label array per
``TrainingArguments(label_names=...)`` entry, in that order (in both modes, gathered across
processes with the predictions). Give the builder the same ``label_names`` and name the entries
that are not labels:

* ``weights=``: sample weights, finite and non-negative (both builders; a ranking query weighs its
  rows' largest weight);
* ``groups=``: integer group (user) ids, for ``gauc``/``gauprc``;
* ``segments=``: integer segment ids in ``[0, num_segments)``, for ``segmented_ne`` (one value per
  segment, ``"segmented_ne.{s}"``); ``groups`` and ``segments`` name one entry when both are given;
* ``sessions=``: integer session (query) ids of flat rows: for the registry's ranking metrics
  (``"ndcg@10"``, ``"mrr"``, ...) in :func:`pointwise_compute_metrics`, and for
  :func:`ranking_compute_metrics`'s flat rows.

Both builders split the label arrays with one reader, so a bad column (another length, float
ids, negative weights) is an error naming its entry wherever it is read. The Trainer skips
``compute_metrics`` without a word when an eval batch lacks a ``label_names`` entry:
``HFComputeMetrics.callback()`` gives a ``TrainerCallback`` that warns when it happens.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext._module_columns import _columns_read
from torchmetrics_ext._module_domains import _MODULE_LOGITS_ADVICE, _PADDING_MARKS, _padding_pointer, _scores_values
from torchmetrics_ext.functional.ranking._spec import request_key
from torchmetrics_ext.integrations._hf_label_names import (
    _COLUMNS,
    _flat,
    _joined,
    _label_columns,
    _sequence_of_names,
    _skipped_metrics_callback,
    _tensor,
)
from torchmetrics_ext.metrics.auc.binary import AUC, AUPRC
from torchmetrics_ext.metrics.auc.pairwise import XAUC, RegressionAUC
from torchmetrics_ext.metrics.counters import LabelAverage, NumPositiveSamples, SumWeights
from torchmetrics_ext.metrics.pointwise import CTR
from torchmetrics_ext.metrics.ranking import RankingMetrics
from torchmetrics_ext.module import RecMetricModule, RecTaskInfo
from torchmetrics_ext.registry import build_metric, lookup, metric_names
from torchmetrics_ext.utilities.checks import (
    as_real,
    check_flag,
    checked_bounds,
    observed_range,
    refuse_repeats,
    sequence_items,
)
from torchmetrics_ext.utilities.errors import WrongTypeError, refusal
from torchmetrics_ext.utilities.warnings import warn_at_user

__all__ = ["HFComputeMetrics", "pointwise_compute_metrics", "ranking_compute_metrics"]

_IDS = {"groups", "indexes", "sessions"}  # update arguments of metrics that need id columns
# said where a model's outputs hold more than its heads (the Trainer passes every output but the loss)
_KEEP_THE_HEADS = (
    " The Trainer passes every output of the model but the loss: keep the heads alone, with "
    "`trainer.evaluate(ignore_keys=[...])` and `trainer.train(ignore_keys_for_eval=[...])` (the other keys of the "
    "model's output dict, or its config's `keys_to_ignore_at_inference`), or "
    "`Trainer(preprocess_logits_for_metrics=lambda logits, labels: logits[:{t}])` when the heads come first."
)
_TRAINER_PADDING = -100.0  # what transformers.Trainer pads predictions and labels of other widths with

SEED_KEYS = {
    "recall": "Recall",
    "mrr": "MRR",
    "ndcg": "NDCG",
    "precision": "Precision",
    "hit_rate": "HitRate",
    "map": "MAP",
    "f1": "F1",
    "r_precision": "RPrecision",
}


def _scores(predictions: Any) -> Any:
    """The scores of the eval output: the first output when the model returns several (a tuple)."""
    predictions = _joined(predictions)
    return predictions[0] if isinstance(predictions, tuple) else predictions


def _labels(labels: Any, columns: bool) -> Any:
    """The labels of the eval output: one array per ``label_names`` entry (a tuple) become columns ``(N, T)``.

    Only where ``columns`` (one column per task); otherwise several label arrays are an error.
    """
    labels = _joined(labels)
    if isinstance(labels, tuple) and not columns:
        raise ValueError(
            f"Expected one label array, got {len(labels)} (the Trainer passes one per `label_names` entry)."
        )
    if isinstance(labels, tuple):
        arrays = [_tensor(column) for column in labels]
        return torch.stack([c.reshape(c.shape[0]) if c.ndim == 2 and c.shape[1] == 1 else c for c in arrays], -1)
    return labels


def _eval_arrays(eval_pred: Any) -> tuple[Any, Any]:
    """The predictions and labels of an ``EvalPrediction`` (or any object with those attributes).

    Also of the tuple an ``EvalPrediction`` unpacks into, ``(predictions, label_ids[, inputs][, losses])``,
    as hand-written ``compute_metrics`` functions take it (``logits, labels = eval_pred``).

    Raises:
        TypeError: ``eval_pred`` is neither.
    """
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        return eval_pred.predictions, eval_pred.label_ids
    if isinstance(eval_pred, tuple) and 2 <= len(eval_pred) <= 4:
        return eval_pred[0], eval_pred[1]
    raise WrongTypeError(
        "Expected `eval_pred` to be an EvalPrediction (with `predictions` and `label_ids`) or its tuple "
        f"(predictions, label_ids[, inputs][, losses]), got {type(eval_pred).__name__}"
        + (f" of {len(eval_pred)} item(s)." if isinstance(eval_pred, tuple) else ".")
    )


def _registry_names(metrics: Any) -> tuple[str, ...]:
    """``pointwise_compute_metrics``' ``metrics`` as registry names; a mapping or an item that is no name is an error.

    A mapping ``{name: options}`` (:class:`~torchmetrics_ext.RecMetricModule`'s form) was read as its
    keys, its options dropped, silently; a metric object (or ``None``) was refused by the registry
    without naming the argument.
    """
    if isinstance(metrics, Mapping):
        raise WrongTypeError(
            f"Expected `metrics` to be a sequence of registry names, got a mapping {metrics!r}: its values (options) "
            "would be dropped. Give the names, and options as keyword arguments, passed to every metric "
            "(pointwise_compute_metrics(['auc', 'auprc'], num_bins=10_000))."
        )
    names = _sequence_of_names("metrics", metrics, "metrics=('ne', 'auc')")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise WrongTypeError(
                f"Expected `metrics` to hold registry names (str), got {name!r} (item {i}): the metrics are built "
                "from their names (see torchmetrics_ext.registry.metric_names())."
            )
    return names


def _own_argument_hint(builder: str, own: Sequence[str], kwargs: Mapping[str, Any]) -> str:
    """The start of the message of a metric option that is a misspelt argument of the builder itself ("" if none).

    The builder passes every keyword it does not take to its metrics, so ``tasks`` written ``task=``
    reached them as an option and was refused there, with the closest option of a metric (``num_tasks``).

    Examples:
        >>> from torchmetrics_ext.integrations.huggingface import _own_argument_hint
        >>> hint = _own_argument_hint("pointwise_compute_metrics", ("metrics", "tasks"), {"task": ("click",)})
        >>> hint.split(", so")[0]
        'pointwise_compute_metrics() has no argument `task` (did you mean `tasks=`?)'
    """
    for key in kwargs:
        close = difflib.get_close_matches(key, list(own), n=1, cutoff=0.75)
        if close:
            return (
                f"{builder}() has no argument `{key}` (did you mean `{close[0]}=`?), so it was passed to the metrics "
                "as an option: "
            )
    return ""


def _unsynced(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics' options with ``sync_on_compute=False``; ``sync_on_compute=True`` is refused.

    The Trainer gathers every process's predictions (``gather_for_metrics``) before it calls
    ``compute_metrics``, on every process: metrics that synced their states again would count every
    row once per process (a ``sum_weights`` of twice the eval set under 2 processes).
    """
    options = dict(kwargs)
    if check_flag("sync_on_compute", options.pop("sync_on_compute", False)):
        raise ValueError(
            "Expected `sync_on_compute` to be False (the default): the Trainer gathers every process's "
            "predictions before it calls compute_metrics, so these metrics never sync their states (a sync "
            "would count every row once per process)."
        )
    return {"sync_on_compute": False, **options}


def _ignore_value(ignore_index: Any) -> int | float | None:
    """``ignore_index`` checked: ``None`` or a real number other than NaN (it equals no label), else an error."""
    if ignore_index is None:
        return None
    value = as_real(ignore_index)  # NumPy scalars and 0-dim tensors too, as every setting
    if value is None or value != value:
        raise refusal(
            "Expected `ignore_index` to be None or a number (the label that leaves an example out of its task, "
            f"e.g. -100), got {ignore_index!r}.",
            wrong_type=value is None,
        )
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    return float(value)  # an integer beyond int64 is compared as a float (torch cannot hold it)


_LABEL_DOMAINS = {"binary": "0 or 1", "unit": "in [0, 1]", "nonnegative": "non-negative"}


def _check_ignore_value(ignore_index: int | float | None, target_domain: str) -> None:
    """Refuse an ``ignore_index`` that is a valid label of the metrics (it would drop labelled examples).

    ``target_domain``: the strictest label domain of the metrics (``"real"`` labels take any value).
    """
    if ignore_index is None or target_domain not in _LABEL_DOMAINS:
        return
    valid = ignore_index >= 0 if target_domain == "nonnegative" else 0 <= ignore_index <= 1
    if valid:
        raise ValueError(
            f"Expected `ignore_index` outside the labels these metrics take ({_LABEL_DOMAINS[target_domain]}), "
            f"got {ignore_index!r}: it would leave out examples that have a real label. The Trainer's label "
            "padding is -100."
        )


def _equal(labels: Tensor, value: float) -> Tensor:
    """``labels == value``, exactly: all ``False`` where the labels' dtype cannot hold ``value``.

    ``uint8_labels == -100`` compares with -100 wrapped to 156 (and ``== 300`` with 44), so a uint8
    label 156, no label of the metrics, read as an ignored one and was scored as a label 0, silently.
    """
    dtype = labels.dtype
    if not dtype.is_floating_point and not dtype.is_complex:
        low, high = (0, 1) if dtype == torch.bool else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
        if not (float(value).is_integer() and low <= value <= high):
            return torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    return labels == value


def _padding_values(padding_value: Any) -> Tensor:
    """``padding_value`` (a number, a sequence or an array of numbers, no NaN) as a float64 1-D tensor, else an error.

    One number as every number setting takes it (:func:`as_real`), several as every sequence
    setting takes them (:func:`~torchmetrics_ext.utilities.checks.sequence_items`): a 1-D tensor or
    array too, not a 2-D one, nor bools.
    """
    one = as_real(padding_value)  # one number: NumPy scalars and 0-dim tensors too, as every setting
    items = [padding_value] if one is not None else sequence_items("padding_value", padding_value)
    values = [as_real(item) for item in items or ()]
    if not values or any(value is None for value in values):
        raise refusal(
            "Expected `padding_value` to be a number or a sequence of numbers (scores that mark padded candidates), "
            f"got {padding_value!r}.",
            wrong_type=items is None or any(value is None for value in values),
        )
    if any(value != value for value in values):  # NaN equals no score: it would mark nothing, silently
        raise ValueError(
            f"Expected `padding_value` to hold numbers other than NaN, got {padding_value!r}: NaN equals no score, "
            "so NaN-padded slots would be scored as candidates. Pad with a number (e.g. -10) and give it here."
        )
    return torch.tensor([float(value) for value in values], dtype=torch.float64)  # type: ignore[arg-type]


class HFComputeMetrics:
    """A ``compute_metrics(eval_pred, compute_result=None)`` callable for ``transformers.Trainer``.

    Subclasses say how a batch updates the metrics (:meth:`update`) and how the results are
    named (:meth:`compute`); this class implements the Trainer's two calling conventions, with
    its batches concatenated or not (``eval_do_concat_batches``).

    Examples:
        The Trainer's ``batch_eval_metrics=True`` mode: one call per batch, the last one with
        ``compute_result=True`` (logits; AUC: 3 of the 4 click/non-click pairs are ordered right).

        >>> import numpy as np
        >>> from transformers import EvalPrediction
        >>> from torchmetrics_ext.integrations.huggingface import HFComputeMetrics, pointwise_compute_metrics
        >>> compute_metrics = pointwise_compute_metrics(["ctr", "auc"])
        >>> isinstance(compute_metrics, HFComputeMetrics)
        True
        >>> first = EvalPrediction(predictions=np.array([2.0, -1.0]), label_ids=np.array([1, 0]))
        >>> last = EvalPrediction(predictions=np.array([0.5, 0.1]), label_ids=np.array([0, 1]))
        >>> compute_metrics(first, compute_result=False)
        {}
        >>> compute_metrics(last, compute_result=True)  # computed, then reset for the next evaluation
        {'ctr': 0.5, 'auc': 0.75}
        >>> compute_metrics(first, compute_result=False)
        {}
        >>> compute_metrics.reset()  # the model stopped that evaluation part-way: drop its batch
        >>> compute_metrics(last, compute_result=True)
        {'ctr': 0.5, 'auc': 0.0}

        The tuple an ``EvalPrediction`` unpacks into, ``(predictions, label_ids)``, is taken too:

        >>> compute_metrics((np.array([2.0, -1.0]), np.array([1, 0])))
        {'ctr': 0.5, 'auc': 1.0}
    """

    # several label arrays (one per `label_names` entry) are the columns of several tasks
    _label_columns: bool = False
    _computed: bool = False  # values computed since `callback()`'s callback last looked

    def update(self, predictions: Tensor, labels: Tensor) -> None:
        """Add one batch (or the whole eval set)."""
        raise NotImplementedError

    def _per_task(self, value: Any) -> bool:
        """Whether a list is one array per task (read as a tuple of heads) rather than the Trainer's batches."""
        return False

    def _outputs(self, predictions: Any) -> Any:
        """The scores of one batch's predictions (the first output of a tuple)."""
        return _scores(predictions)

    def _update_all(self, eval_pred: Any) -> None:
        """Update with every batch of ``eval_pred`` (one, or a list kept apart by the Trainer)."""
        predictions, labels = _eval_arrays(eval_pred)
        if labels is None:
            raise ValueError(
                "compute_metrics needs labels: the eval dataset must provide `labels` (label_ids is None)."
            )
        # a list of per-task arrays (built by hand) is the tasks' heads or label columns, as a tuple is.
        # The labels decide first: next to a list of batches of labels (the Trainer's label arrays are never a list
        # of per-task columns), a list of predictions is as many batches, even one of per-task-looking arrays (the
        # squeezed (T,) scores of T batches of one row were read as T heads: the tasks transposed, silently)
        labels = tuple(labels) if self._per_task(labels) else labels
        if not (isinstance(predictions, list) and isinstance(labels, list) and len(predictions) == len(labels)):
            predictions = tuple(predictions) if self._per_task(predictions) else predictions
        if isinstance(predictions, list) and isinstance(labels, list) and len(predictions) == len(labels):
            # batches kept apart (eval_do_concat_batches=False): one update each, as they may not
            # share a width (padded candidate lists of each batch's longest). A batch may itself be a list
            # of per-task heads (a model whose heads are a ModuleList returns a list, kept per batch by the
            # Trainer): the tasks' columns, as a whole-array list is, never rows to concatenate
            batches = [
                (tuple(p) if self._per_task(p) else p, tuple(y) if self._per_task(y) else y)
                for p, y in zip(predictions, labels)
            ]
        else:
            batches = [(predictions, labels)]
        for batch_predictions, batch_labels in batches:
            self._update_batch(batch_predictions, batch_labels)

    def _update_batch(self, predictions: Any, labels: Any) -> None:
        """Update with one batch's (or the whole eval set's) outputs and label arrays."""
        self.update(_tensor(self._outputs(predictions)), _tensor(_labels(labels, self._label_columns)))

    def compute(self) -> dict[str, float]:
        """The values since the last reset."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything seen (e.g. the batches of an evaluation stopped in the model)."""
        raise NotImplementedError

    def __call__(self, eval_pred: Any, compute_result: bool | None = None) -> dict[str, float]:
        """Update with ``eval_pred``; compute and reset unless more batches follow (``compute_result=False``).

        ``eval_pred`` is the Trainer's ``EvalPrediction`` or the tuple it unpacks into,
        ``(predictions, label_ids[, inputs][, losses])``. Every evaluation starts from empty metrics:

        * a whole-array call (``compute_result`` not given: the Trainer's default mode) is an
          evaluation of its own: batches left pending by earlier ``compute_result=False`` calls (an
          evaluation that stopped part-way) are dropped first, never counted in it;
        * a call that raises (a rejected batch, an interrupt) resets the metrics before the error
          propagates: the Trainer's evaluation stops there, and the next one starts afresh instead of
          counting the batches of the failed one;
        * ``compute_result=True`` computes and resets.

        An evaluation stopped *between* two batch-mode calls (an exception in the model, in
        ``batch_eval_metrics=True`` mode) never reaches this callable: call :meth:`reset` before
        evaluating again.
        """
        if compute_result is None:
            self.reset()  # a whole eval set: nothing pending belongs to it
        try:
            self._update_all(eval_pred)
        except BaseException:
            self.reset()  # the evaluation stops here: leave nothing of it to the next one
            raise
        if compute_result is False:
            return {}
        try:
            values = self.compute()
        finally:
            self.reset()
        self._computed = True  # for `callback()`: this evaluation reached compute_metrics
        return values

    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that warns after an evaluation whose metrics this callable never computed.

        The Trainer calls ``compute_metrics`` only when every eval batch holds every
        ``TrainingArguments.label_names`` entry (and the model returns predictions); otherwise it
        logs ``eval_loss`` at most and no metric of this callable, and says nothing. Given to the
        same Trainer (``Trainer(..., compute_metrics=compute_metrics, callbacks=[compute_metrics.callback()])``),
        the callback warns at ``on_evaluate`` (a ``UserWarning``) when this callable computed nothing
        since the last evaluation or ``predict()``, naming the ``label_names`` entries the eval set's
        first row lacks (a map-style eval set; a dataset column dropped by the Trainer's
        ``remove_unused_columns`` counts as lacking). With ``label_names=None`` the names are those the
        Trainer uses, read from the model's ``forward`` as transformers' ``find_labels`` reads them
        (``labels_click``; ``start_positions``/``end_positions`` for a ``...QuestionAnswering`` class; none at
        all, which it says). It reads nothing on the path where metrics are computed.

        At ``on_train_begin`` it also warns when ``TrainingArguments.metric_for_best_model`` names a metric of this
        callable (with or without ``eval_``, or behind an eval set's name, ``"valid_ne/click"``) whose better
        direction ``greater_is_better`` contradicts: the Trainer guesses higher is better unless the name ends in
        ``loss``, so for ``"ne"``, ``"ne/click"`` or ``"log_loss/click"`` ``load_best_model_at_end`` would keep the
        worst checkpoint. Metrics without a direction (calibration, CTR) say nothing.

        Returns:
            A fresh ``transformers.TrainerCallback`` (the ``huggingface`` extra) watching this callable.

        Examples:
            The callback's ``on_evaluate`` as the Trainer calls it, after an evaluation that skipped
            ``compute_metrics``, then after one that called it:

            >>> import warnings
            >>> import numpy as np
            >>> from transformers import TrainerCallback, TrainingArguments
            >>> from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics
            >>> compute_metrics = pointwise_compute_metrics(["ctr"])
            >>> callback = compute_metrics.callback()
            >>> isinstance(callback, TrainerCallback)
            True
            >>> args = TrainingArguments("out", label_names=["labels"], report_to=[])
            >>> with warnings.catch_warnings(record=True) as caught:
            ...     warnings.simplefilter("always")
            ...     callback.on_evaluate(args, None, None, metrics={"eval_loss": 0.7, "eval_runtime": 0.1})
            >>> print(caught[0].message)
            compute_metrics was not called in evaluation 'eval': the Trainer found no labels or no predictions, ...
            >>> compute_metrics((np.array([2.0, -1.0]), np.array([1, 0])))
            {'ctr': 0.5}
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("error")  # nothing to say: compute_metrics ran
            ...     callback.on_evaluate(args, None, None, metrics={"eval_ctr": 0.5, "eval_runtime": 0.1})
        """
        return _skipped_metrics_callback(self)

    def _take_computed(self) -> bool:
        """Whether this callable computed values since the last call of this method (which resets it)."""
        computed, self._computed = self._computed, False
        return computed

    def _higher_is_better(self, key: str) -> bool | None:
        """Whether a higher value of ``key`` is better (``None``: no key of this callable, or no direction).

        ``key`` as ``TrainingArguments.metric_for_best_model`` may name it: with or without the Trainer's
        ``eval_`` prefix, or behind an eval set's name (``"valid_ne/click"`` for ``eval_valid_ne/click``).
        """
        return None


def _real_labels(metric: Any) -> bool:
    """Whether ``metric`` takes labels of any real value (MSE, MAE, R²: a regression target), not 0/1 or [0, 1]."""
    domains = getattr(metric, "input_domains", None)
    return getattr(domains, "target", None) == "real"


def _order_or_labels_only(metric: Any) -> bool:
    """Whether ``metric`` is the same on probabilities and on their ``sigmoid``.

    It reads the scores' order alone (exact AUC/AUPRC, the pairwise AUCs), or no score at all (CTR, label
    average, sums of weights and positives).
    """
    if isinstance(metric, (AUC, AUPRC)):
        return metric.num_bins is None  # a histogram's bins are not those of sigmoid(p)
    return isinstance(metric, (CTR, LabelAverage, SumWeights, NumPositiveSamples, RegressionAUC, XAUC))


# an update argument of ids -> the builder argument naming their label_names entry
_ID_ARGUMENTS = {"groups": "groups", "indexes": "sessions"}
_ID_EXAMPLES = {"groups": "user_id", "segments": "country", "sessions": "session_id"}


def _ids_read(name: str, entry: Any) -> str | None:
    """The builder argument (``groups``, ``segments``, ``sessions``) whose ids metric ``name`` reads, if any.

    Raises:
        ValueError: the metric reads ids no builder argument gives (a wrapper other than ``Segmented``).
    """
    if entry.wraps is not None:  # segmented_ne: a Segmented, which takes segment ids
        return "segments"
    ids = _IDS & set(inspect.signature(entry.cls.update).parameters)
    if not ids:
        return None
    if len(ids) == 1 and next(iter(ids)) in _ID_ARGUMENTS:
        return _ID_ARGUMENTS[next(iter(ids))]
    # SessionPairwiseAUC scores each batch's sessions apart, which evaluate refuses too (its read batches split them)
    where = (
        "compute it where each batch holds whole sessions (RecMetricModule in the training loop, or "
        "torchmetrics_ext.functional.session_pairwise_auc)"
        if ids == {"sessions"}
        else "score the logged predictions with torchmetrics-ext evaluate"
    )
    raise ValueError(
        f"Metric {name!r} needs ids ({sorted(ids)}) that pointwise_compute_metrics cannot give it: {where}."
    )


def _missing_ids_message(name: str, argument: str) -> str:
    """The build error of metric ``name``, whose ids (``argument``: ``groups``, ...) no ``label_names`` entry gives."""
    example = _ID_EXAMPLES[argument]
    text = (
        f"Metric {name!r} needs {_COLUMNS[argument]}, which a Trainer's EvalPrediction does not carry unless the eval "
        f"dataset provides them: add the ids' key to `label_names` and name it here, pointwise_compute_metrics(..., "
        f"label_names=('labels', {example!r}), {argument}={example!r})"
    )
    if argument == "sessions":
        text += " (flat rows, one score each; ranking_compute_metrics scores padded candidate lists)"
    return text + "."


def _readers(argument: str) -> list[str]:
    """The registry's metrics (``"ndcg@k"`` for every cutoff) that read the ids of builder ``argument``."""
    readers = []
    for name in metric_names():
        probe = name.replace("@k", "@10")  # a cutoff family reads what its members read
        try:
            if _ids_read(probe, lookup(probe)[0]) == argument:
                readers.append(name)
        except ValueError:  # ids no builder argument gives: read by no argument here
            continue
    return readers


def _unread_ids_message(argument: str, entry: str, metrics: Sequence[str]) -> str:
    """The build error of ``argument`` (``groups``, ...) naming ids that no metric of ``metrics`` reads."""
    readers = _readers(argument)
    return (
        f"`{argument}={entry!r}` names the {_COLUMNS[argument]} that {readers} read, and `metrics` {list(metrics)} "
        f"holds none of them, so the column would be checked and never read: drop `{argument}`, or add "
        f"{readers[0]!r}."
    )


class _Pointwise(HFComputeMetrics):
    _label_columns = True

    def __init__(
        self,
        metrics: Sequence[str],
        tasks: Sequence[str],
        from_logits: bool,
        ignore_index: int | float | None,
        kwargs: Mapping[str, Any],
        label_names: Sequence[str] | None = None,
        columns: Mapping[str, Any] | None = None,
    ):
        self.ignore_index = _ignore_value(ignore_index)
        given = metrics
        metrics = _registry_names(metrics)
        self.tasks = _sequence_of_names("tasks", tasks, "tasks=('click', 'like')")
        num_tasks = len(self.tasks)
        labels = f"one label entry (its labels (N, {num_tasks})) or one per task ({num_tasks})"
        own = ("metrics", "tasks", "from_logits", "ignore_index", "label_names", *_COLUMNS)
        hint = _own_argument_hint("pointwise_compute_metrics", own, kwargs)
        self.columns = _label_columns(
            label_names, columns or {}, "label_names=('labels', 'weight')", {1, num_tasks}, labels, hint
        )
        named = {} if self.columns is None else self.columns.columns
        if "groups" in named and "segments" in named and named["groups"] != named["segments"]:
            raise ValueError(
                f"Expected `groups` and `segments` to name one entry of `label_names`, got {named['groups']!r} and "
                f"{named['segments']!r}: the grouped and the segmented metrics read one id column (RecTaskInfo's "
                "group_id_name); score the other ids in a second compute_metrics, or with torchmetrics-ext evaluate."
            )
        entries = [lookup(name)[0] for name in metrics]
        # a name given twice (one registry entry twice, whatever its spelling): one key, so most likely a typo for
        # another metric; refused with the ranking builder's message (its `metrics` and `ks`)
        refuse_repeats("metrics", given, [entry.name for entry in entries])
        if "num_tasks" in kwargs:  # it would reach `build_metric`'s own `num_tasks` as a second value
            raise ValueError(
                f"`num_tasks` comes from `tasks=` (one task per prediction column, {len(self.tasks)} now), not from "
                "the options: pass the task names, pointwise_compute_metrics(..., tasks=('click', 'like'))."
            )
        unsynced = _unsynced(kwargs)
        # `num_segments` is the segmented metrics' alone (the others refuse it): given to them only
        num_segments = unsynced.pop("num_segments", None)
        segmented = [name for name, entry in zip(metrics, entries, strict=True) if entry.wraps is not None]
        if num_segments is not None and not segmented:
            raise ValueError(
                f"`num_segments` is an option of the segmented metrics (segmented_ne) only, and `metrics` "
                f"{list(metrics)} holds none: drop it, or add 'segmented_ne'."
            )
        if segmented and num_segments is None:
            raise ValueError(
                f"Metric {segmented[0]!r} needs `num_segments` (its segment ids lie in [0, num_segments)), e.g. "
                f"pointwise_compute_metrics([..., {segmented[0]!r}], label_names=('labels', 'country'), "
                "segments='country', num_segments=4)."
            )
        built = {}
        reading = {}  # metric name -> the id column it reads: "groups", "segments" or "sessions"
        for name, entry in zip(metrics, entries, strict=True):
            reads = _ids_read(name, entry)
            if reads is not None and reads not in named:
                raise ValueError(_missing_ids_message(name, reads))
            if reads is not None:
                reading[name] = reads
            options = dict(unsynced)
            if entry.wraps is not None:
                options["num_segments"] = num_segments
            if "from_logits" in inspect.signature((entry.wraps or entry.cls).__init__).parameters:
                options["from_logits"] = from_logits
            try:
                built[name] = build_metric(name, num_tasks=len(self.tasks), **options)
            except (TypeError, ValueError) as error:
                if not kwargs:
                    raise
                raise type(error)(
                    hint + f"Metric {name!r} rejected the options {sorted(kwargs)} (passed to every metric): "
                    f"{str(error).rstrip('.')}. Pass options only with metrics that all take them."
                ) from error
        self._reads = set(reading.values())
        # each metric's better direction, for the callback's check of `metric_for_best_model`
        self._directions = {name: getattr(metric, "higher_is_better", None) for name, metric in built.items()}
        unread = [argument for argument in ("groups", "segments", "sessions") if argument in named]
        for argument in unread:  # ids no chosen metric reads: refused as `num_segments` without segmented_ne
            if argument not in self._reads:
                raise ValueError(_unread_ids_message(argument, named[argument], metrics))
        ranked = [name for name, reads in reading.items() if reads == "sessions"]
        if ranked and self.ignore_index is not None:
            raise ValueError(
                f"Expected `ignore_index=None` with ranking metrics {ranked}: they rank every row of a session, so a "
                "row whose label is ignored would still rank, as a non-relevant candidate. Score them in a "
                "compute_metrics of their own, without `ignore_index`."
            )
        # with `ignore_index`, each task its own weight column, fed at every step: 0 where its label is
        # ignored; without it the tasks have no weights (`weight_name=None`: every example weighs 1, no
        # weight column is built or looked up)
        # with `groups` or `segments`, one id column read by every task's grouped and segmented metrics (GAUC: per-user
        # AUC, segmented_ne: NE per country); with `sessions`, one session id column read by the ranking metrics
        weighted = self.ignore_index is not None or "weights" in named
        infos = [
            RecTaskInfo(
                t,
                label_name=f"label/{t}",
                prediction_name=f"prediction/{t}",
                weight_name=f"weight/{t}" if weighted else None,
                group_id_name="group" if self._reads & {"groups", "segments"} else None,
                session_id_name="session" if "sessions" in self._reads else None,
            )
            for t in self.tasks
        ]
        # Metrics without a from_logits option get probabilities: the module, told that the columns
        # hold logits, feeds them sigmoid(logits) whether or not another metric reads logits.
        self.module = RecMetricModule(infos, built, throughput=False, from_logits=from_logits)
        # warned of only where some metric's value changes when probabilities are read as logits: not exact
        # AUC/AUPRC or the pairwise ones (the sigmoid keeps the order), nor the metrics of labels and weights alone
        self._warn_of_probabilities = from_logits and not all(map(_order_or_labels_only, built.values()))
        # per task, the lowest and highest score of this evaluation (device tensors, read once in `compute`):
        # scores all in [0, 1] under `from_logits=True` are most likely a sigmoid model's probabilities
        self._score_range: tuple[Tensor, Tensor] | None = None
        # metrics of values fed sigmoid(predictions) (mse, mae, r_squared...): a task whose labels of an evaluation
        # leave [0, 1] is a regression head, not a binary one read as logits (no Brier score has such labels)
        self._values_of_sigmoid = [
            name for name, metric in built.items() if from_logits and _scores_values(metric) and _real_labels(metric)
        ]
        self._label_range: tuple[Tensor, Tensor] | None = None
        _check_ignore_value(self.ignore_index, self.module._domains.target)
        # every metric unchecked (validate_args=False), labels where -100 is none and it is no ignore_index: the
        # Trainer's -100 would be scored as a label; refused by the adapter (see `_refuse_trainer_padding`)
        self._unchecked_padding = (
            self.module._trusted
            and self.module._domains.target in _LABEL_DOMAINS
            and self.ignore_index != _TRAINER_PADDING
        )

    def _per_task(self, value: Any) -> bool:
        """A list of one ``(N,)``/``(N, 1)`` array per task (never a batch of several tasks, which is 2-D).

        Or of one 0-dim array (or tensor) per task: heads squeezed on a batch of one row (an
        ``nn.ModuleList``'s heads, each ``(B, 1)`` squeezed); Python numbers are no heads.
        """
        if len(self.tasks) < 2 or not isinstance(value, list) or len(value) != len(self.tasks):
            return False
        if any(isinstance(item, (tuple, list)) for item in value):
            return False
        shapes = [tuple(_tensor(item).shape) for item in value]
        if all(len(s) == 0 and hasattr(item, "shape") for s, item in zip(shapes, value)):
            return True
        return all(len(s) == 1 or (len(s) == 2 and s[1] == 1) for s in shapes)

    def _outputs(self, predictions: Any) -> Any:
        """The scores ``(N, T)``: several tasks' per-task heads (a tuple, one per task) are stacked as columns.

        A tuple whose first output already holds every task (``(N, T)``) is read as before: the first
        output (the others, hidden states say, are not scores). One task: the first output.
        """
        predictions = _joined(predictions)
        t = len(self.tasks)
        if isinstance(predictions, tuple) and t == 1 and len(predictions) > 1:
            shapes = [tuple(_tensor(output).shape) for output in predictions]
            scores = [len(shape) == 1 or (len(shape) == 2 and shape[1] == 1) for shape in shapes]
            if not scores[0] and any(scores[1:]):  # the scores behind an embedding or hidden states
                raise ValueError(
                    f"Expected the scores, (N,) or (N, 1), as the first of the model's outputs (one task reads the "
                    f"first); got {len(shapes)} outputs of shapes {shapes}." + _KEEP_THE_HEADS.format(t=1)
                )
        if not isinstance(predictions, tuple) or t == 1:
            return predictions[0] if isinstance(predictions, tuple) else predictions
        heads = [_tensor(head) for head in predictions]
        if heads and heads[0].ndim == 2 and heads[0].shape[1] == t:
            return heads[0]
        heads = [head.reshape(1) if head.ndim == 0 else head for head in heads]  # a batch of one, squeezed
        shapes = [tuple(head.shape) for head in heads]
        expected = f"one (N, {t}) array or {t} per-task heads (one per task of {list(self.tasks)}), each (N,) or (N, 1)"
        if len(heads) != t:
            extra = _KEEP_THE_HEADS.format(t=t) if len(heads) > t else ""  # embeddings, hidden states next to them
            raise ValueError(
                f"Expected predictions as {expected}; got a tuple of {len(heads)} arrays of shapes {shapes}.{extra}"
            )
        for i, shape in enumerate(shapes):
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] != shapes[0][0]:
                raise ValueError(
                    f"Expected predictions as {expected}, with one N; got head {i} (task {self.tasks[i]!r}) of shape "
                    f"{shape} among heads of shapes {shapes}."
                )
        dtype = heads[0].dtype
        for head in heads[1:]:
            dtype = torch.promote_types(dtype, head.dtype)
        return torch.stack([head.reshape(shape[0]).to(dtype) for head, shape in zip(heads, shapes)], -1)

    def _update_batch(self, predictions: Any, labels: Any) -> None:
        """Split the per-row columns (``weights``, ids) off the label arrays (one per ``label_names`` entry)."""
        if self.columns is None:
            super()._update_batch(predictions, labels)
            return
        scores = _tensor(self._outputs(predictions))
        n = 1 if scores.ndim == 0 or (scores.ndim == 1 and len(self.tasks) > 1) else scores.shape[0]  # (T,): one row
        task_labels, columns = self.columns.split(labels, n)
        targets = _tensor(_labels(task_labels if len(task_labels) > 1 else task_labels[0], True))
        self._update(scores, targets, columns)

    def update(self, predictions: Tensor, labels: Tensor) -> None:
        self._update(predictions, labels, {})

    def _update(self, predictions: Tensor, labels: Tensor, given: Mapping[str, Tensor]) -> None:
        """Update with the scores, the labels and the per-row columns read from ``label_names`` (by argument)."""
        t = len(self.tasks)
        # a 0-dim array is one example (a model that squeezes its (B, 1) logits, on a batch of one), as
        # the Trainer itself reads it when it concatenates batches (atleast_1d)
        predictions = predictions.reshape(1) if predictions.ndim == 0 else predictions
        labels = labels.reshape(1) if labels.ndim == 0 else labels
        if predictions.ndim == 2 and predictions.shape[-1] == 1 and t == 1:
            predictions = predictions[:, 0]
        if labels.ndim == 2 and labels.shape[-1] == 1 and t == 1:
            labels = labels[:, 0]
        if t > 1:
            predictions, labels = self._one_example(predictions, labels)
        expected = (predictions.shape[0],) if t == 1 else (predictions.shape[0], t)
        if predictions.shape != expected or labels.shape != expected:
            if t == 1:
                accepted = "one score per example, (N,) or (N, 1), with labels of the same shape"
                hint = "give predictions and labels one shape"
                if predictions.ndim == 2:
                    k = predictions.shape[1]
                    hint = (
                        f"binary metrics take one score per example; if the {k} columns are {k} tasks, name "
                        f"them with `tasks=`"
                    )
                    if k == 2:
                        hint += (
                            "; if they are a two-class head, give the model a one-logit head (or return "
                            "`logits[:, 1] - logits[:, 0]`, the softmax's probability as a logit, from the "
                            "Trainer's `preprocess_logits_for_metrics`)"
                        )
            else:
                accepted = self._accepted()
                hint = "`tasks=` must name one task per prediction column"
                if predictions.ndim == 1 and labels.ndim == 2 and labels.shape[1] == t:
                    hint = (
                        f"one score per example, or {t} per example flattened; a model that squeezes its (B, {t}) "
                        f"scores (`logits.squeeze()`) gives ({t},) for a batch of one row, which the Trainer cuts to "
                        f"(1,) (the first task's score alone) in a last, incomplete eval batch and concatenates into "
                        f"(N * {t},) when every batch has one row: return (B, {t}) scores (`squeeze(-1)` at most) or "
                        "one head per task"
                    )
            width = labels.shape[1] if labels.ndim == 2 and labels.shape[0] == predictions.shape[0] else 0
            if width > t and predictions.shape == expected:  # the tasks' scores, with more label columns than tasks
                hint = (
                    f"{width} label columns for {t} task(s) {list(self.tasks)}: the Trainer passes one label array "
                    "per `label_names` entry, and each is read as a task's labels; list only the tasks' labels in "
                    "`label_names` (in the order of `tasks`). For sample weights or group ids among them, name "
                    "those entries: pointwise_compute_metrics(..., label_names=('labels', 'weight', 'user_id'), "
                    "weights='weight', groups='user_id')"
                )
            raise ValueError(
                f"Expected {accepted}; got predictions of shape {tuple(predictions.shape)} and labels of shape "
                f"{tuple(labels.shape)}: {hint}."
            )
        self.module.to(predictions.device)
        if self._unchecked_padding:
            self._refuse_trainer_padding(labels)
        weights = None
        if self.ignore_index is not None:
            # an ignored label is a zero-weight row of its task only (the same as an absent row for
            # every pointwise metric), with a valid label 0 in its place
            ignored = _equal(labels, self.ignore_index)
            weights = (~ignored).to(torch.float32)
            labels = labels.masked_fill(ignored, 0)
        sample_weights = given.get("weights")
        if sample_weights is not None:  # the sample's weight, for every task (0 where a task's label is ignored)
            sample_weights = sample_weights.to(predictions.device)
            column = sample_weights if t == 1 else sample_weights[:, None]
            weights = column if weights is None else weights.to(column.dtype) * column
            if weights.shape != labels.shape:
                weights = weights.expand(labels.shape)
        elif self.columns is not None and "weights" in self.columns.columns and weights is None:
            # `update` called directly: every example weighs 1
            weights = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
        columns = {}
        for i, task in enumerate(self.tasks):
            columns[f"prediction/{task}"] = predictions if t == 1 else predictions[:, i]
            columns[f"label/{task}"] = labels if t == 1 else labels[:, i]
            if weights is not None:
                columns[f"weight/{task}"] = weights if t == 1 else weights[:, i]
        for argument, key in (("groups", "group"), ("segments", "group"), ("sessions", "session")):
            if argument not in self._reads:
                continue
            if argument not in given:
                entry = self.columns.columns[argument] if self.columns is not None else argument
                raise ValueError(
                    f"Expected the {_COLUMNS[argument]} of label_names entry {entry!r}: call the builder's result with "
                    "the Trainer's EvalPrediction (one label array per `label_names` entry)."
                )
            columns[key] = given[argument].to(predictions.device)  # `groups` and `segments`: one entry, one column
        try:
            self.module.update(columns)
        except (TypeError, ValueError) as error:
            raise self._in_adapter(error, columns) from None
        if self._warn_of_probabilities and predictions.shape[0] > 0:  # after the update: a rejected batch counts not
            low, high = torch.aminmax(predictions.detach().reshape(predictions.shape[0], t), dim=0)
            if self._score_range is not None:
                low, high = torch.minimum(low, self._score_range[0]), torch.maximum(high, self._score_range[1])
            self._score_range = (low, high)
        if self._values_of_sigmoid and labels.shape[0] > 0:  # one min/max per task and batch, read once in compute
            low, high = torch.aminmax(labels.detach().reshape(labels.shape[0], t), dim=0)
            if self._label_range is not None:
                low, high = torch.minimum(low, self._label_range[0]), torch.maximum(high, self._label_range[1])
            self._label_range = (low, high)

    def _accepted(self) -> str:
        """The shapes several tasks take, for the errors."""
        t = len(self.tasks)
        return (
            f"(N, {t}) predictions (or {t} per-task heads, each (N,) or (N, 1)) and (N, {t}) labels (or one label "
            f"array per task, as `label_names` gives them), one column per task of {list(self.tasks)}; one example "
            f"also as ({t},) predictions next to (1, {t}) labels, or (1, {t}) predictions next to ({t},) labels"
        )

    def _one_example(self, predictions: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One example of several tasks squeezed on one side, ``(T,)``, read as ``(1, T)`` where the other side says so.

        A model that squeezes its ``(B, T)`` scores gives ``(T,)`` for an eval batch of one row
        (``batch_eval_metrics=True``, ``eval_do_concat_batches=False``, a one-row eval set); its labels are
        ``(1, T)`` (or one ``(1,)`` array per ``label_names`` entry, stacked). The other side decides, never
        the values: ``(T,)`` next to ``(1, T)`` is one example (``(N,)`` is no shape of ``T > 1`` tasks).
        ``(T,)`` on both sides is refused: one example's tasks, or ``T`` examples of one task (``tasks=``
        naming too many), look alike.
        """
        t = len(self.tasks)
        if predictions.shape == (t,) and labels.shape == (t,):
            raise ValueError(
                f"Expected {self._accepted()}; got predictions of shape {(t,)} and labels of shape {(t,)}: ambiguous "
                f"(one example's {t} tasks, or {t} examples of one task). Give one example's scores or labels as "
                f"{(1, t)}."
            )
        if predictions.shape == (t,) and labels.shape == (1, t):
            return predictions[None], labels
        if labels.shape == (t,) and predictions.shape == (1, t):
            return predictions, labels[None]
        return predictions, labels

    def _refuse_trainer_padding(self, labels: Tensor) -> None:
        """Refuse a label of -100 (no ``ignore_index``) where the metrics check nothing (``validate_args=False``).

        It is the Trainer's label padding and the usual ignore index, never a label these metrics
        take: unchecked it was scored as a label of -100 (CTR -33), silently. Validated, the metrics'
        own check refuses it (with the same advice). One host read per call: per evaluation (or eval
        batch), never per training step.
        """
        padded = _equal(labels, _TRAINER_PADDING)
        if not bool(padded.any()):
            return
        single = len(self.tasks) == 1
        i = 0 if single else int(padded.reshape(-1, len(self.tasks)).any(0).nonzero()[0, 0])
        column = "" if single else f"[:, {i}]"
        raise ValueError(
            ("" if single else f"Task {self.tasks[i]!r}: ")
            + f"Expected `label_ids{column}` to hold labels the metrics take, got -100 (the Trainer's label "
            "padding, the usual ignore index), which `validate_args=False` leaves unchecked: it would be scored "
            "as a label of -100. To leave the examples labelled -100 out of their task, build the callable with "
            "`pointwise_compute_metrics(..., ignore_index=-100)`."
        )

    def _in_adapter(self, error: TypeError | ValueError, columns: Mapping[str, Tensor]) -> TypeError | ValueError:
        """The module's error about one column told in this adapter's terms.

        The column is named as the user passed it (``predictions``, ``label_ids[:, 1]``), not by the
        module's internal keys, and the fix for logits is this function's ``from_logits`` option.
        """
        text = str(error).replace(
            _MODULE_LOGITS_ADVICE,
            "If they are logits, build the callable with `pointwise_compute_metrics(..., from_logits=True)` "
            "(the default).",
        )
        for info in self.module.tasks:  # the module's own columns, which this adapter names for the user
            text = text.replace(f" {_columns_read(info)}", "")
        for argument, entry in ({} if self.columns is None else self.columns.columns).items():  # ids, as given
            key = {"groups": "group", "segments": "group", "sessions": "session"}.get(argument)
            if key is not None:
                text = text.replace(f"`model_out[{key!r}]`", f"label_names entry {entry!r}")
        # the module's advice on its tasks (a regression task in a module of its own) is not this adapter's
        for t in range(len(self.module.tasks)):
            for field in ("preds", "target"):
                text = text.replace(self.module._domain_hint(field, t), "")  # "" for a field it says nothing of
            for mark in _PADDING_MARKS:  # the module's step recipe for padding: this adapter's is `ignore_index`
                text = text.replace(_padding_pointer(mark, self.module.tasks[t].label_name), "")
        single = len(self.tasks) == 1
        for i, task in enumerate(self.tasks):
            column = "" if single else f"[:, {i}]"
            for key, argument, name in (
                (f"prediction/{task}", "`preds`", f"`predictions{column}`"),
                (f"label/{task}", "`target`", f"`label_ids{column}`"),
            ):
                prefix = f"Task {task!r}, `model_out[{key!r}]`: "
                if not text.startswith(prefix):
                    continue
                detail = text[len(prefix) :]
                detail = detail.replace(argument, name) if argument in detail else f"{name}: {detail}"
                if key.startswith("label/") and bool((columns[key] == -100).any()):  # on the error path only
                    detail += (
                        " -100 (the Trainer's label padding, the usual ignore index) marks no example to skip here"
                        + (f" (`ignore_index` is {self.ignore_index!r})" if self.ignore_index is not None else "")
                        + ": binary metrics take a 0/1 label for every example; to leave the examples labelled -100 "
                        "out of their task, build the callable with `pointwise_compute_metrics(..., "
                        "ignore_index=-100)`."
                    )
                return type(error)(detail if single else f"Task {task!r}: {detail}")
        return type(error)(text)

    def _warn_probabilities(self) -> None:
        """Warn of the tasks whose every score of this evaluation lies in [0, 1], read as logits.

        A model that ends in a sigmoid (trained with ``BCELoss``) gives probabilities; read as logits
        they are scored as ``sigmoid(p)``, all in [0.5, 0.73]: AUC is the same, NE, log loss and
        calibration are not. A model's logits rarely all lie in [0, 1], so this is said once per
        evaluation (one host read, in ``compute``); the values stay as documented.
        """
        if self._score_range is None:
            return
        low, high = self._score_range
        inside = ((low >= 0) & (high <= 1)).tolist()
        tasks = [task for task, flag in zip(self.tasks, inside) if flag]
        if not tasks:
            return
        warn_at_user(
            f"pointwise_compute_metrics reads the predictions as logits (`from_logits=True`, the default), and every "
            f"score of task(s) {tasks} lies in [0, 1] this evaluation: if the model gives probabilities (a "
            "sigmoid head), they are scored as sigmoid(probability), which leaves AUC as it is but not NE, log loss "
            "or calibration; build the callable with `pointwise_compute_metrics(..., from_logits=False)`. If they "
            "are logits, the values are right.",
            UserWarning,
        )

    def _warn_regression_heads(self) -> None:
        """Warn of the tasks whose labels of this evaluation leave [0, 1] while metrics of values read ``sigmoid``.

        Such a task is a regression head (watch time, a rating): its predictions are no logits, and its MSE, MAE
        or R² are those of ``sigmoid(predictions)``, in (0, 1), against labels outside it. Said once per
        evaluation (one host read, in ``compute``); the values stay as documented.
        """
        if self._label_range is None:
            return
        low, high = (bound.double().tolist() for bound in self._label_range)
        tasks = {task: (lo, hi) for task, lo, hi in zip(self.tasks, low, high, strict=True) if lo < 0 or hi > 1}
        if not tasks:
            return
        said = ", ".join(f"{task!r} (labels in [{lo:.4g}, {hi:.4g}])" for task, (lo, hi) in tasks.items())
        warn_at_user(
            f"pointwise_compute_metrics reads the predictions as logits (`from_logits=True`, the default) and feeds "
            f"{self._values_of_sigmoid} sigmoid(predictions), in (0, 1), but task(s) {said} have labels outside "
            "[0, 1] this evaluation: a regression head, whose predictions are values, not logits. Build the callable "
            "with `pointwise_compute_metrics(..., from_logits=False)`; for a regression head next to click heads, "
            "score it in a second callable built so and merge the two dicts in your compute_metrics.",
        )

    def compute(self) -> dict[str, float]:
        self._warn_probabilities()
        self._warn_regression_heads()
        values = self.module.local_compute()  # the Trainer gathered the rows already
        if len(self.tasks) == 1:
            return {key.rsplit("/", 1)[0]: float(v) for key, v in values.items()}
        return {key: float(v) for key, v in values.items()}

    def reset(self) -> None:
        self.module.reset()
        self._score_range = None
        self._label_range = None

    def _higher_is_better(self, key: str) -> bool | None:
        key = key.removeprefix("eval_")
        if len(self.tasks) > 1:  # "{metric}/{task}"
            key, slash, task = key.rpartition("/")
            if not slash or task not in self.tasks:
                return None
        key = re.sub(r"\.\d+$", "", key)  # a segment's key, "segmented_ne.2"
        for name in sorted(self._directions, key=len, reverse=True):  # "segmented_ne" before "ne"
            if key == name or key.endswith(f"_{name}"):  # an eval set's name before it
                return self._directions[name]
        return None


def pointwise_compute_metrics(
    metrics: Sequence[str] = ("ne", "log_loss", "auc"),
    *,
    tasks: Sequence[str] = ("task",),
    from_logits: bool = True,
    ignore_index: int | float | None = None,
    label_names: Sequence[str] | None = None,
    weights: str | None = None,
    groups: str | None = None,
    segments: str | None = None,
    sessions: str | None = None,
    **kwargs: Any,
) -> HFComputeMetrics:
    """``compute_metrics`` for binary (click-like) predictions: NE, AUC, calibration, ... by registry name.

    Args:
        metrics: registry names (see :func:`torchmetrics_ext.registry.metric_names`), each once (a
            name given twice is refused, as ``ranking_compute_metrics`` refuses it); grouped metrics (``gauc``,
            ``gauprc``) need ``groups``, ``segmented_ne`` needs ``segments`` (and ``num_segments``), ranking metrics
            over flat rows (``"ndcg@10"``, ``"mrr"``) need ``sessions``. Every example
            weighs 1 unless ``weights`` names its weight array (and but for ``ignore_index``). Options go in
            ``kwargs`` (a mapping
            ``{name: options}``, :class:`~torchmetrics_ext.RecMetricModule`'s form, is refused: its
            options would be dropped).
        tasks: task names; predictions and labels are ``(N,)`` (or ``(N, 1)``) for one task and
            ``(N, T)`` for ``T`` tasks (column ``i`` is task ``tasks[i]``); a 0-dim array is one example
            (a squeezed logit of a batch of one). For several tasks, predictions may also be a
            multi-head model's tuple (or list) of ``T`` per-task heads, each ``(N,)`` or ``(N, 1)``, in
            the order of ``tasks``: they are stacked as the columns of ``(N, T)`` (no need to stack them in
            ``preprocess_logits_for_metrics``), as a tuple (or list) of per-task label arrays is (the
            Trainer gives one per ``label_names`` entry, in that order: list ``label_names`` in the order of
            ``tasks``, as nothing else tells the tasks apart). A tuple
            whose first output is already ``(N, T)`` is read as that output (the others are not scores);
            for one task, a tuple's first output is the scores. More outputs than tasks (an embedding or hidden
            states next to the heads; for one task, ahead of its scores) are refused with the ways to keep the heads
            alone (``evaluate(ignore_keys=...)``, ``preprocess_logits_for_metrics``). One example of several tasks
            may arrive squeezed on one side (a model's ``logits.squeeze()`` on an eval batch of one row): ``(T,)``
            predictions next to ``(1, T)`` labels (or one ``(1,)`` label array per task), or ``(1, T)``
            predictions next to ``(T,)`` labels, are that example, and so are ``T`` 0-dim heads (squeezed
            per-task heads, in a tuple or a list); ``(T,)`` on both sides is refused as ambiguous (one
            example's tasks, or ``T`` examples of one task). Prefer ``squeeze(-1)``: the Trainer cuts a
            last, incomplete eval batch to its number of rows, so the squeezed ``(T,)`` scores of a last
            batch of one row arrive as ``(1,)``, the first task's score alone, and batches of one row
            concatenated arrive as ``(N * T,)``: both are refused (with batches concatenated and a last
            batch of one the Trainer itself fails first).
        from_logits: the model outputs logits (the usual case); ``False`` for probabilities. Metrics
            with a ``from_logits`` option (NE, AUC, calibration, accuracy, ``mse``, ...) read the
            logits; the values of ``mse``, ``rmse``, ``mae``, ``weighted_average``, ``r_squared``...
            and of the metrics without the option are those of the probabilities ``sigmoid(logits)``
            (``mse`` is then the Brier score). Probabilities given with ``from_logits=True`` are read as
            logits (scored as ``sigmoid(p)``, all in [0.5, 0.73]: NE, log loss and calibration change, exact AUC
            does not); a ``UserWarning`` names the tasks whose every score of an evaluation lies in [0, 1]
            (once per evaluation, and only with a metric that the sigmoid changes). A regression head (watch time)
            needs ``from_logits=False`` too: a ``UserWarning`` names the tasks whose labels of an evaluation leave
            [0, 1] while ``mse``, ``mae``, ``r_squared``... read ``sigmoid(predictions)`` (no Brier score has such
            labels); the values stay those of the sigmoid.
        ignore_index: a label value (``-100``: the Trainer's label padding, the usual ignore index) that
            leaves an example out of that task only: the other tasks still count it, so a multi-task
            model whose examples lack some tasks' labels (a conversion label only for clicked examples)
            is scored per task on its labelled examples. Each task's metrics get a weight column, 0
            where its label is ignored and 1 elsewhere (with label 0 there); a zero weight is the same as
            an absent row for every metric accepted here (``sum_weights`` and ``num_positive_samples``
            count only the task's labelled examples). A task whose every label is ignored gets the
            metrics' undefined value (``nan`` and an ``UndefinedMetricWarning``). ``None`` (the
            default): every label is scored, and ``-100`` is an error that suggests this option, also with
            ``validate_args=False`` (which skips the metrics' checks, not this one: unchecked, -100 was scored
            as a label, CTR -33; regression metrics, whose labels are any real number, take it as a label);
            the tasks then have no weights (``RecTaskInfo(weight_name=None)``: no weight column is built).
            NaN labels are not ignored (they are an error). A label dtype that cannot hold the value
            (uint8 or bool labels and ``-100``) has no ignored label.
        label_names: the Trainer's ``TrainingArguments.label_names``, in their order (the Trainer passes one label
            array per entry, told apart by position alone); needed with ``weights``, ``groups``, ``segments`` or
            ``sessions``. The entries those name are per-row columns, the others the tasks' labels: one per task,
            in the order of ``tasks``, or one entry of ``(N, T)`` labels. ``None`` (the default): every label array
            is a task's labels, as before.
        weights: the ``label_names`` entry holding sample weights, ``(N,)`` (or ``(N, 1)``), finite and
            non-negative; every task's metrics read them (with ``ignore_index``, times 0 where a task's label is
            ignored). A zero weight is the same as an absent row.
        groups: the ``label_names`` entry holding integer group ids (user, session...), ``(N,)`` (or
            ``(N, 1)``), read by the grouped metrics (``gauc``: the mean of the per-group AUCs); float ids are
            refused (they merge past 2**24 in float32). The model's ``forward`` receives these keys too, as
            every ``label_names`` entry: let it take them (``weight=None, user_id=None``) or ``**kwargs``.
        segments: the ``label_names`` entry holding integer segment ids (country, surface...) in
            ``[0, num_segments)``, ``(N,)`` (or ``(N, 1)``), read by ``segmented_ne`` (NE per segment, keys
            ``"segmented_ne.{s}"``, ``"segmented_ne.{s}/{task}"`` for several tasks; a constant-memory sum per
            segment, so batches and processes add up). Give ``num_segments=`` with it: it goes to the segmented
            metrics only (the others would refuse it). With ``groups`` too, both name one entry (the module
            reads one id column for both).
        sessions: the ``label_names`` entry holding integer session (query) ids of the rows, ``(N,)`` (or
            ``(N, 1)``), read by the registry's ranking metrics (``"ndcg@10"``, ``"mrr"``, ``"recall@5"``...): the
            rows of one session are one query, ranked by their scores, wherever they fall (across eval batches
            too: the rows are kept, O(N) memory), and its weight is its rows' largest ``weights``. Not with
            ``ignore_index`` (an ignored row would still rank, as a non-relevant candidate). Padded candidate
            lists are :func:`ranking_compute_metrics`' input.
        kwargs: passed to every metric, so only with metrics that all take them (e.g.
            ``pointwise_compute_metrics(["auc", "auprc"], num_bins=10_000)`` for constant-memory curves), but
            ``num_segments``, given to the segmented metrics alone; ``sync_on_compute`` may only be ``False`` (the
            Trainer gathers the rows of every process).

    Returns:
        A callable for ``Trainer(compute_metrics=...)``; keys are the metric names for one task
        (the Trainer logs ``eval_ne``) and ``"{metric}/{task}"`` for several. Naming one in
        ``TrainingArguments(metric_for_best_model=...)``, give ``greater_is_better=False`` for NE and log
        loss: the Trainer's guess (lower is better only for a name ending in ``loss``) misses
        ``"ne"`` and every ``"log_loss/{task}"`` (the callable's ``callback()`` warns of it when training starts).

    Raises:
        TypeError: an entry of ``metrics`` that is no name (a metric object, ``None``), naming it.
        ValueError: unknown metric names (the message lists the known ones), a metric named twice
            (``["ctr", "ctr"]``: ``Expected `metrics` without repeats``), ``metrics`` or ``tasks`` given as one string
            (``"auc"`` instead of ``("auc",)``) or as a mapping, ``num_tasks`` among the options (``tasks``
            gives it), an option the metrics refuse (led by the builder's own argument it is closest to,
            ``task=``: ``tasks=``), an ``ignore_index`` that is no number (or NaN)
            or is itself a label the metrics take (``0`` or ``1`` for binary metrics), ``sync_on_compute=True``
            (or one that is no bool); when called, predictions or labels of another shape (e.g. an ``(N, 2)``
            two-class head for one task; for ``T`` tasks ``(T,)`` next to ``(T,)``, or one score per example:
            the message lists the shapes taken), per-task heads whose number is not the number of tasks, or heads of
            another shape or length, labels outside [0, 1] that are not ``ignore_index`` (``-100`` among them:
            the message suggests ``ignore_index=-100``); ``weights``, ``groups``, ``segments`` or ``sessions``
            without ``label_names``, or naming no entry of it, ``weights`` naming an id entry, ``groups`` and
            ``segments`` naming two entries, ``label_names`` whose remaining entries are neither one nor one per
            task; a metric whose ids no argument names (``gauc`` without ``groups``, ``segmented_ne`` without
            ``segments``, ``"ndcg@10"`` without ``sessions``), ``segmented_ne`` without ``num_segments`` (or
            ``num_segments`` without it), ids no chosen metric reads (``segments`` without ``segmented_ne``,
            ``groups`` without ``gauc``/``gauprc``, ``sessions`` without a ranking metric: the message names the
            metrics that read them), ranking metrics with ``ignore_index``; when called, a number of label
            arrays other than ``len(label_names)``, weights or ids of another length, NaN, infinite or negative
            weights, segment ids outside ``[0, num_segments)``, each naming its ``label_names`` entry.
        TypeError: ``label_names`` holding something other than names; when called, bool weights or float
            (or bool) group, segment or session ids, naming the entry.

    Examples:
        >>> import numpy as np
        >>> from transformers import EvalPrediction
        >>> from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics
        >>> compute_metrics = pointwise_compute_metrics(["ctr", "auc"])
        >>> compute_metrics(EvalPrediction(predictions=np.array([2.0, -1.0, 0.5]), label_ids=np.array([1, 0, 0])))
        {'ctr': 0.333..., 'auc': 1.0}

        A two-head model's outputs (one logit array per task), stacked as the tasks' columns:

        >>> two = pointwise_compute_metrics(["ctr"], tasks=("click", "like"))
        >>> heads = (np.array([2.0, -1.0, 0.5]), np.array([[0.3], [-0.2], [1.0]]))  # (N,) or (N, 1) each
        >>> two(EvalPrediction(predictions=heads, label_ids=np.array([[1, 0], [0, 1], [0, 1]])))
        {'ctr/click': 0.333..., 'ctr/like': 0.666...}

        Labels of ``-100`` left out of their task only (the second example has no ``like`` label):

        >>> sparse = pointwise_compute_metrics(["ctr", "auc"], tasks=("click", "like"), ignore_index=-100)
        >>> logits = np.array([[2.0, 0.3], [-1.0, 5.0], [0.5, 1.0]])
        >>> sparse(EvalPrediction(predictions=logits, label_ids=np.array([[1, 0], [0, -100], [0, 1]])))
        {'ctr/click': 0.333..., 'ctr/like': 0.5, 'auc/click': 1.0, 'auc/like': 1.0}

        Sample weights and user ids from the Trainer's ``label_names`` (``label_names=["labels", "weight",
        "user_id"]`` in ``TrainingArguments``): weighted CTR, and GAUC, the mean of the two users' AUCs:

        >>> weighted = pointwise_compute_metrics(
        ...     ["ctr", "gauc"], label_names=("labels", "weight", "user_id"), weights="weight", groups="user_id"
        ... )
        >>> label_ids = (np.array([1, 0, 0, 1]), np.array([3.0, 1.0, 1.0, 1.0]), np.array([7, 7, 8, 8]))
        >>> weighted(EvalPrediction(predictions=np.array([2.0, -1.0, 0.5, 0.1]), label_ids=label_ids))
        {'ctr': 0.666..., 'gauc': 0.5}

        NE per country (``segments``) and MRR over flat rows grouped by session (``sessions``), with
        ``label_names=["labels", "country", "session_id"]``: the logits of country 0 rank its click above its
        non-click by a wide margin, those of country 1 the wrong way round, by a little; the first session ranks
        its click first, the second second:

        >>> columns = pointwise_compute_metrics(
        ...     ["segmented_ne", "mrr"],
        ...     label_names=("labels", "country", "session_id"),
        ...     segments="country",
        ...     sessions="session_id",
        ...     num_segments=2,
        ... )
        >>> label_ids = (np.array([1, 0, 0, 1]), np.array([0, 0, 1, 1]), np.array([4, 4, 9, 9]))
        >>> values = columns(EvalPrediction(predictions=np.array([2.0, -1.0, 0.5, 0.1]), label_ids=label_ids))
        >>> {key: round(value, 4) for key, value in values.items()}
        {'segmented_ne.0': 0.3175, 'segmented_ne.1': 1.1675, 'mrr': 0.75}
    """
    columns = {"weights": weights, "groups": groups, "segments": segments, "sessions": sessions}
    return _Pointwise(metrics, tasks, from_logits, ignore_index, kwargs, label_names, columns)


class _Ranking(HFComputeMetrics):
    def __init__(
        self,
        ks: Sequence[int | None],
        metrics: Sequence[str],
        padding_value: float | Sequence[float],
        key_names: Mapping[str, str],
        kwargs: Mapping[str, Any],
        label_names: Sequence[str] | None = None,
        sessions: str | None = None,
        weights: str | None = None,
    ) -> None:
        if (label_names is None) != (sessions is None):  # flat rows need both; padded lists neither
            padded = ""
            if sessions is None and weights is not None:  # a weight per query of padded lists: not read here
                padded = (
                    " `weights` are read for flat rows only (a session weighs its rows' largest weight); the "
                    "queries of padded candidate lists take no weights here: weigh them in your own evaluation loop "
                    "over a RankingMetrics, `metric.update(scores, relevance, weights=query_weights)`."
                )
            raise ValueError(
                "Expected `label_names` (the Trainer's TrainingArguments.label_names, in order) and `sessions` (the "
                "entry holding the session/query ids of flat rows) together, e.g. label_names=('labels', "
                f"'session_id'), sessions='session_id'; got label_names={label_names!r}, sessions={sessions!r}."
                + padded
            )
        own = ("ks", "metrics", "padding_value", "key_names", "label_names", "sessions", "weights")
        hint = _own_argument_hint("ranking_compute_metrics", own, kwargs)
        self.columns = _label_columns(
            label_names,
            {"sessions": sessions, "weights": weights},
            "label_names=('labels', 'session_id')",
            {1},
            "one label entry (the relevance labels)",
            hint,
        )
        try:
            self.metric = RankingMetrics(ks=ks, metrics=metrics, **_unsynced(kwargs))
        except (TypeError, ValueError) as error:
            if not hint:
                raise
            raise type(error)(hint + str(error)) from error
        # -100, the Trainer's own padding (it pads batches and processes of other widths with it), marks
        # padding whatever `padding_value` says: kept, its slots were candidates that could outrank real ones
        trainer_padding = torch.tensor([_TRAINER_PADDING], dtype=torch.float64)
        self.padding = torch.cat([_padding_values(padding_value), trainer_padding])
        if not isinstance(key_names, Mapping) or not all(isinstance(v, str) for v in key_names.values()):
            raise WrongTypeError(
                "Expected `key_names` to be a mapping of metric name to display name (e.g. {'recall': 'Recall'}), "
                f"got {key_names!r}."
            )
        self.key_names = dict(key_names)
        # compute()'s key -> the key logged; two requests under one logged key would keep one value silently
        self.display = {}
        for key in (request_key(request) for request in self.metric.requests):
            name, at, k = key.partition("@")
            self.display[key] = f"{self.key_names.get(name, name)}{at}{k}"
        shown: dict[str, str] = {}
        for key, logged in self.display.items():
            if logged in shown:
                raise ValueError(
                    f"Expected `key_names` to give every value its own key, got {shown[logged]!r} and {key!r} both "
                    f"logged as {logged!r} (key_names={self.key_names!r})."
                )
            shown[logged] = key

    def _update_batch(self, predictions: Any, labels: Any) -> None:
        """Flat rows grouped by the ``sessions`` entry's ids, or (without it) padded candidate lists."""
        if self.columns is None:
            super()._update_batch(predictions, labels)
            return
        scores = _tensor(self._outputs(predictions))
        scores = scores.reshape(1) if scores.ndim == 0 else scores
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        sessions = self.columns.columns["sessions"]
        if scores.ndim != 1:
            raise ValueError(
                f"Expected one score per row, shape (N,) or (N, 1), with `sessions={sessions!r}` (flat rows "
                f"grouped by session id), got predictions of shape {tuple(scores.shape)}."
            )
        n = scores.shape[0]
        (relevance,), columns = self.columns.split(labels, n)
        (label_entry,) = self.columns.labels
        relevance = _flat(label_entry, "relevance labels", _tensor(relevance), n).to(scores.device)
        weights = columns.get("weights")
        self.metric.to(scores.device)
        try:
            self.metric.update(
                scores,
                relevance,
                indexes=columns["sessions"].to(scores.device),
                weights=None if weights is None else weights.to(scores.device),
            )
        except (TypeError, ValueError) as error:  # named as the user passed them, not as update's arguments
            text = (
                str(error).replace("`preds`", "`predictions`").replace("`target`", f"label_names entry {label_entry!r}")
            )
            text = text.replace("`indexes`", f"label_names entry {sessions!r}")
            if weights is not None:
                text = text.replace("`weights`", f"label_names entry {self.columns.columns['weights']!r}")
            raise type(error)(text) from None

    def update(self, predictions: Tensor, labels: Tensor) -> None:
        predictions, labels = self._one_query(predictions, labels)
        q, width = predictions.shape
        # in the scores' own dtype, as RankingMetrics(padding_value=...) compares: a padding of -10.1
        # is float32's -10.1 in float32 scores (it never equals float64's -10.1)
        if predictions.is_floating_point():
            padding = self.padding.to(device=predictions.device, dtype=predictions.dtype)
            mask = ~torch.isin(predictions, padding)
        else:
            mask = ~torch.isin(predictions.to(torch.float64), self.padding.to(predictions.device))
        # labels of the scores' shape are a relevance matrix, whatever the width: a (q, 1) label
        # array next to one-candidate-wide (q, 1) scores is relevance (0 or 1), not an index
        if labels.shape == predictions.shape:
            relevance = labels
            # the Trainer pads labels of different widths with -100: negative relevance marks padding.
            # NaN is no padding (`>= 0` is False for it): kept, so that validation rejects it
            padded_label = relevance < 0
            # a relevant candidate with a padding score (a logit clamped to -10), as an index label to it: refused
            # with or without `validate_args`, which skips the metrics' checks, not this reading of the padding
            # (the candidate was dropped with the padding, silently); one host read per call: per evaluation (or
            # eval batch), never per training step
            lost = ~mask & ~padded_label & (relevance > 0)
            if bool(lost.any()):
                first, slot = (int(i) for i in lost.nonzero()[0])
                raise ValueError(
                    f"Expected every relevant candidate to have a score, got query {first} whose relevant "
                    f"candidate {slot} is in a padded slot (score "
                    "equal to `padding_value` or the Trainer's -100): it would be dropped with the padding. "
                    "Give padded slots a label of 0 or -100, and real candidates scores other than the padding."
                )
            mask &= ~padded_label
            relevance = relevance.clamp(min=0)
        elif labels.shape == (q,) or labels.shape == (q, 1):
            index = labels.reshape(q).to(torch.int64)
            outside = (index < 0) | (index >= width)
            # a label indexing a padded slot (its candidate would be dropped with the padding, silently): refused
            # with or without `validate_args` (the metrics' checks), in the one host read of the range check
            padded = outside if width == 0 else ~mask.gather(1, index.clamp(0, width - 1)[:, None])[:, 0] & ~outside
            if labels.is_floating_point() or bool((outside | padded).any()):
                if labels.is_floating_point() or bool(outside.any()):  # on the error path only
                    ((low, high),) = checked_bounds([labels], [False])  # any dtype (uint32 has no min kernel)
                    got = observed_range(low, high)
                    if labels.is_floating_point():  # refused for the dtype, whatever the values' range
                        dtype = str(labels.dtype).removeprefix("torch.")
                        got = f"{dtype} labels ({got}); give them an integer dtype"
                    raise ValueError(
                        f"Expected labels as integer indexes of the relevant candidate in [0, {width}), got {got}."
                    )
                first = int(padded.nonzero()[0, 0])
                raise ValueError(
                    f"Expected each label to index a candidate, got query {first} whose label "
                    f"{int(index[first])} indexes a padded slot (score equal to `padding_value`)."
                )
            relevance = torch.zeros((q, width), dtype=torch.int64, device=predictions.device)
            relevance.scatter_(1, index[:, None], 1)
        else:
            raise ValueError(
                f"Expected labels of shape ({q},) (index of the relevant candidate) or {tuple(predictions.shape)} "
                f"(relevance per candidate), got {tuple(labels.shape)}."
            )
        self.metric.to(predictions.device)
        try:
            self.metric.update(predictions, relevance, mask=mask)
        except (TypeError, ValueError) as error:  # named as the user passed them, not as update's arguments
            text = str(error).replace("`preds`", "`predictions`").replace("`target`", "`label_ids`")
            if "`label_ids`" in text and "NaN" in text:  # NaN relevance: real data, not padding
                text += (
                    " NaN is no padding marker: a padded slot has a negative label (the Trainer's -100) or a "
                    "score equal to `padding_value`."
                )
            raise type(error)(text) from None

    @staticmethod
    def _one_query(predictions: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The scores as ``(queries, candidates)``: ``(W,)`` scores are one query's, if its labels say so.

        A model that squeezes its ``(B, W)`` scores gives ``(W,)`` for an eval batch of one query
        (``batch_eval_metrics=True`` with batches of one, a one-query eval set), as the pointwise
        adapter reads a squeezed ``(N, 1)`` or 0-dim logit. The labels decide, never the values: an
        index label (0-dim, ``(1,)`` or ``(1, 1)``) or a relevance row ``(1, W)`` belong to one query,
        so the scores are its ``W`` candidates (with ``W = 1`` a ``(1, 1)`` label has the scores'
        shape, so it is relevance, as for unsqueezed scores). ``(W,)`` labels are refused: one query's relevance and
        the index labels of ``W`` one-candidate queries (a ``(W, 1)`` batch squeezed) look alike. So do
        ``(1,)`` scores next to ``(1,)`` labels, which is also how the Trainer (accelerate's
        ``gather_for_metrics``) delivers a squeezed query in a last, incomplete eval batch: cut to the
        batch's number of rows, its first candidate's score alone. 0-dim scores are one query of one
        candidate, read as ``(1, 1)`` scores are (``(1,)`` labels index it); so are ``(1,)`` scores next
        to a 0-dim label (one query's index label: the Trainer's labels keep their batch dimension).
        """
        squeezed_label = labels.ndim == 0  # one query's index label, whatever the scores' width
        labels = labels.reshape(1) if squeezed_label else labels
        if predictions.ndim == 0:
            return predictions.reshape(1, 1), labels
        if predictions.ndim == 1:
            width = predictions.shape[0]
            if labels.shape == predictions.shape and not squeezed_label:
                raise ValueError(
                    f"Expected scores of shape (queries, candidates), got {(width,)} scores with labels of the same "
                    f"shape: ambiguous (one query's relevance, or {width} one-candidate queries with their index "
                    f"labels). Give one query's scores as {(1, width)} with labels {(1,)} (index) or {(1, width)} "
                    "(relevance): a model should return (queries, candidates) scores (`squeeze(-1)`, not "
                    "`squeeze()`), also because the Trainer cuts a last, incomplete eval batch to its first rows "
                    "(the squeezed scores of one query arrive as its first candidate's score)."
                )
            if labels.shape in ((1,), (1, 1), (1, width)):  # one query's labels: the scores are its candidates
                return predictions[None], labels
            raise ValueError(
                f"Expected labels of shape (1,) (index of the relevant candidate) or {(1, width)} (relevance per "
                f"candidate) next to {(width,)} scores (one query's candidates, squeezed), got {tuple(labels.shape)}."
            )
        if predictions.ndim != 2:
            raise ValueError(
                f"Expected scores of shape (queries, candidates) (or (candidates,) for one query), got "
                f"{tuple(predictions.shape)}."
            )
        return predictions, labels

    def compute(self) -> dict[str, float]:
        return {self.display[key]: float(value) for key, value in self.metric.compute().items()}

    def reset(self) -> None:
        self.metric.reset()

    def _higher_is_better(self, key: str) -> bool | None:
        key = key.removeprefix("eval_")
        logged = self.display.values()
        ours = any(key == name or key.endswith(f"_{name}") for name in logged)
        return self.metric.higher_is_better if ours else None


def ranking_compute_metrics(
    ks: Sequence[int | None] = (1, 4, 5, 10, 20, 50, 100),
    metrics: Sequence[str] = ("recall", "mrr"),
    *,
    padding_value: float | Sequence[float] = (-10.0, -100.0),
    key_names: Mapping[str, str] = SEED_KEYS,
    label_names: Sequence[str] | None = None,
    sessions: str | None = None,
    weights: str | None = None,
    **kwargs: Any,
) -> HFComputeMetrics:
    """``compute_metrics`` for padded candidate lists: ``Recall@k``, ``MRR@k``, ... for every ``k`` in one pass.

    Predictions are ``(queries, candidates)`` scores; a score equal to a ``padding_value`` marks a
    padded slot. The Trainer itself pads batches of different widths with ``-100`` when it
    concatenates them (and the batches of processes of other widths, under DDP), hence the default
    ``(-10, -100)``; ``-100`` marks padding whatever ``padding_value`` holds (with
    ``padding_value=-10`` alone the Trainer's ``-100`` slots were candidates: counted in
    precision's list length, and ranked above real scores below ``-100``), so a real score of
    exactly ``-100`` is read as padding too. Labels are either the index of the
    relevant candidate, ``(queries,)`` (or ``(queries, 1)``), or a relevance matrix of the scores'
    shape (``-100``, the Trainer's label padding, or any negative label marks padded slots too; a
    NaN label is an error, not padding). Labels of the scores'
    shape are always a relevance matrix: with one-candidate-wide scores ``(queries, 1)`` (a batch
    padded to its own longest list, in ``batch_eval_metrics=True`` mode) ``(queries, 1)`` labels are
    relevance (``0``: not relevant), so give index labels as ``(queries,)``.

    One query's scores squeezed to ``(candidates,)`` (a model's ``scores.squeeze()`` on an eval batch
    of one query) are that query when its labels are one query's: an index label (0-dim, ``(1,)`` or
    ``(1, 1)``) or a relevance row ``(1, candidates)``; 0-dim scores are one query of one candidate.
    ``(candidates,)`` labels next to them are refused as ambiguous (one query's relevance, or the index
    labels of one-candidate queries squeezed alike). Prefer ``squeeze(-1)``: the Trainer cuts a last,
    incomplete eval batch to its number of rows, which leaves a squeezed query its first score alone.

    With ``validate_args=False`` (passed to the metrics) the metrics' own input checks are skipped,
    but not this adapter's reading of the padding: an index label or a positive relevance in a padded
    slot (a real candidate whose score equals a padding value, e.g. a logit clamped to ``-10``) is
    refused either way, as are index labels out of ``[0, candidates)`` or of a float dtype (unchecked,
    such a candidate was dropped with the padding, silently, and its query with it). Index labels are
    checked in the one host read of their range check; a relevance matrix costs one read per call
    (per evaluation, or per eval batch with ``batch_eval_metrics=True``: never per training step).

    Args:
        ks: cutoffs (``None`` = the whole list).
        metrics: :class:`~torchmetrics_ext.RankingMetrics`' names, from ``("ndcg", "recall",
            "precision", "mrr", "hit_rate", "map", "f1", "r_precision")`` (``"f1"``: F1 at ``k``, the
            harmonic mean of precision and recall at ``k``; ``"r_precision"``: precision at the
            query's number of relevant candidates, one key without ``@k`` whatever ``ks`` holds).
        padding_value: score value(s) that mark padding, next to the Trainer's ``-100`` (always padding).
        key_names: display name per metric (default ``Recall``, ``MRR``, ``NDCG``, ``Precision``,
            ``HitRate``, ``MAP``, ``F1``, ``RPrecision``: the keys of the hand-written
            ``compute_metrics`` this replaces); keys are ``f"{name}@{k}"``, and the name alone for
            ``k=None`` (``"Recall"``, not ``"Recall@None"``) and for ``"RPrecision"``.
        label_names: the Trainer's ``TrainingArguments.label_names``, in their order, with ``sessions``: the
            relevance labels' entry, the session ids' and (with ``weights``) the weights'. ``None`` (the default):
            padded lists, as above.
        sessions: the ``label_names`` entry holding integer session (query) ids of **flat rows**: predictions
            are then one score per row, ``(N,)`` or ``(N, 1)``, labels one relevance per row (non-negative),
            and the rows of one session are one query wherever they fall (a session split across eval batches
            stays one query: the rows are kept, O(N) memory, also with ``batch_eval_metrics=True``); padding
            values play no part. Float ids are refused (they merge past 2**24 in float32).
        weights: with ``sessions``, the ``label_names`` entry holding the rows' weights, finite and
            non-negative: a session weighs its rows' largest weight (TorchRec's rule, as
            :class:`~torchmetrics_ext.RankingMetrics` reads row weights), and the values are the weighted means
            over sessions. A zero weight does not drop a row from its session's ranking.
        kwargs: passed to :class:`~torchmetrics_ext.RankingMetrics` (``empty_target_action``,
            ``exponential_gain``, ``validate_args``, ...); ``sync_on_compute`` may only be ``False`` (the
            Trainer gathers the rows of every process).

    Returns:
        A callable for ``Trainer(compute_metrics=...)``; with ``batch_eval_metrics=True`` it keeps
        only per-request sums between batches.

    Raises:
        ValueError: bad arguments (a ``padding_value`` that is no number or sequence of numbers, or holds NaN,
            ``key_names`` that is no mapping of names or logs two values under one key, ``sync_on_compute=True``), or
            (when called) scores that are not 2-D (nor one query's, squeezed), labels of another shape (``(W,)`` labels
            next to ``(W,)`` scores among them), index labels out of range or of a float dtype, NaN relevance (a
            label is padding when negative, never when NaN), or a relevant candidate (index label, or positive
            relevance) in a padded slot (a score equal to a padding value), validated or not; ``sessions`` without
            ``label_names`` (or the reverse), ``sessions`` or ``weights`` naming no entry of it (or one entry for
            both), ``weights`` without ``label_names``, ``label_names`` with other than one entry besides them;
            with ``sessions``, when called: another number of label arrays than ``label_names`` entries, scores
            that are not one per row, labels, ids or weights of another length, negative relevance, NaN, infinite
            or negative weights, each naming its ``label_names`` entry.
        TypeError: with ``sessions``, float (or bool) session ids or bool weights, naming the entry.

    Examples:
        >>> import numpy as np
        >>> from transformers import EvalPrediction
        >>> from torchmetrics_ext.integrations.huggingface import ranking_compute_metrics
        >>> compute_metrics = ranking_compute_metrics(ks=(1, 2))
        >>> scores = np.array([[0.9, 0.3, 0.5], [0.1, 0.8, -10.0]])  # 2nd query: 2 candidates
        >>> compute_metrics(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))
        {'Recall@1': 0.0, 'Recall@2': 1.0, 'MRR@1': 0.0, 'MRR@2': 0.5}

        ``k=None`` scores the whole list, under the metric's name alone:

        >>> whole = ranking_compute_metrics(ks=(1, None), metrics=("mrr",))
        >>> whole(EvalPrediction(predictions=scores, label_ids=np.array([2, 0])))
        {'MRR@1': 0.0, 'MRR': 0.5}

        A query without a relevant candidate (a relevance row of zeros) is left out of the mean by default
        (``empty_target_action="skip"``); ``"zero"`` counts it as 0, as scikit-learn's ``ndcg_score`` and
        TorchMetrics' retrieval metrics (``"neg"``) do:

        >>> relevance = np.array([[1, 0, 0], [0, 0, 0]])  # the 2nd query has no relevant candidate
        >>> skipped = ranking_compute_metrics(ks=(1,), metrics=("hit_rate",))
        >>> skipped(EvalPrediction(predictions=scores, label_ids=relevance))
        {'HitRate@1': 1.0}
        >>> counted = ranking_compute_metrics(ks=(1,), metrics=("hit_rate",), empty_target_action="zero")
        >>> counted(EvalPrediction(predictions=scores, label_ids=relevance))
        {'HitRate@1': 0.5}

        Flat rows grouped by session id (``TrainingArguments(label_names=["labels", "session_id"])``): two
        sessions of two rows, the relevant row ranked first in the first session and second in the other:

        >>> flat = ranking_compute_metrics(
        ...     ks=(1,), metrics=("recall", "mrr"), label_names=("labels", "session_id"), sessions="session_id"
        ... )
        >>> label_ids = (np.array([1, 0, 1, 0]), np.array([4, 4, 9, 9]))
        >>> flat(EvalPrediction(predictions=np.array([0.9, 0.2, 0.1, 0.3]), label_ids=label_ids))
        {'Recall@1': 0.5, 'MRR@1': 0.5}

        With weights (``label_names=["labels", "session_id", "weight"]``), the first session weighs 3 (its rows'
        largest weight), the second 1:

        >>> weighted = ranking_compute_metrics(
        ...     ks=(1,), metrics=("mrr",), label_names=("labels", "session_id", "weight"), sessions="session_id",
        ...     weights="weight",
        ... )
        >>> label_ids = (np.array([1, 0, 1, 0]), np.array([4, 4, 9, 9]), np.array([3.0, 1.0, 1.0, 1.0]))
        >>> weighted(EvalPrediction(predictions=np.array([0.9, 0.2, 0.1, 0.3]), label_ids=label_ids))
        {'MRR@1': 0.75}
    """
    return _Ranking(ks, metrics, padding_value, key_names, kwargs, label_names, sessions, weights)
