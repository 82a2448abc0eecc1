"""The package's single policy for values that are mathematically undefined.

A metric whose value is undefined for the data it has seen (precision with no positive
prediction, NE when every label is of one class, any mean of zero total weight, AUC of a
single class) returns ``nan`` for that value and emits :class:`UndefinedMetricWarning`
naming the metric, the task(s) and the reason. This is scikit-learn's choice; it never
invents a number (TorchMetrics returns 0, torcheval 0.5, TorchRec clamps by ``eta``), so an
undefined value cannot be mistaken for a real one in a dashboard. Silence the warning with
``warnings.filterwarnings("ignore", category=UndefinedMetricWarning)``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import multiprocessing
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType

import torch
import torchmetrics
from torch import Tensor

__all__ = [
    "NO_SAMPLES",
    "NO_SAMPLES_IN_SEGMENT",
    "PrecisionLossWarning",
    "SamplesFirstWarning",
    "SketchRangeWarning",
    "UndefinedEntries",
    "UndefinedMetricWarning",
    "collecting_undefined",
    "flat_entries_as",
    "naming_metric",
    "naming_part",
    "naming_tasks",
    "or_no_samples",
    "safe_divide",
    "silencing_undefined",
    "user_stacklevel",
    "warn_at_user",
    "warn_precision_loss",
    "warn_undefined",
    "warn_undefined_flags",
]

# the reason given for an entry that saw nothing (its count or total weight is 0), whatever the metric's own
# reason: "a single class" would send a user who called `compute()` before feeding data the wrong way
NO_SAMPLES = "no samples seen (no update, or only empty / zero-weight batches)"
# the same said of one segment of `evaluate(by=...)`: its metric was fed, but none of the segment's rows counted
NO_SAMPLES_IN_SEGMENT = "no samples seen in this segment (every row of weight 0 or skipped)"


def or_no_samples(reason: str) -> str:
    """``reason``, or :data:`NO_SAMPLES`: for a metric whose states cannot tell the two apart.

    A metric that keeps only the sums its value needs (TorchRec's per-batch sessions, a per-label
    true/false positive count) holds the same zeros after no sample as after samples of one kind:
    its warning names both causes, the "nothing seen" one included, and never only the other.

    Examples:
        >>> from torchmetrics_ext.utilities.warnings import or_no_samples
        >>> or_no_samples("no group holds both classes")
        'no group holds both classes, or no samples seen (no update, or only empty / zero-weight batches)'
    """
    return f"{reason}, or {NO_SAMPLES}"


# set by a caller that drops undefined values itself (the aggregator logs no nan)
_SILENT: ContextVar[bool] = ContextVar("silent_undefined", default=False)
# the names of the tasks of the value being computed, set by whoever knows them (RecMetricModule);
# None for a task whose value is not reported
_TASK_NAMES: ContextVar[tuple[str | None, ...] | None] = ContextVar("task_names", default=None)
# set by a wrapper whose inner metric computes a flat value of several axes (Segmented: T·S entries)
_FLAT_AS: ContextVar[tuple[tuple[int, ...], tuple[str, ...]] | None] = ContextVar("flat_as", default=None)
# set by a caller that attributes undefined entries itself (evaluate's segments): warnings become records
_COLLECTED: ContextVar[list[UndefinedEntries] | None] = ContextVar("collected_undefined", default=None)
# whether a tensor is one of a `torch.func` transform's (`vmap`'s batched tensors have no `.item()`)
_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
# the part of a metric being computed when it is not the whole (a window's "window"): named after the metric
_PART: ContextVar[str | None] = ContextVar("metric_part", default=None)
# the name the user gave the metric being computed (a RecMetricModule's key): said instead of its class name
_NAME: ContextVar[str | None] = ContextVar("metric_name", default=None)


# the folders whose frames a warning passes over to reach the user's line: this package's, TorchMetrics'
# (the `Metric.compute` / `forward` wrappers around ours) and torch's (`nn.Module.__call__` of `metric(...)`)
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (os.path.dirname(__file__), torchmetrics.__file__ or "", torch.__file__ or "")
)
# the trainers whose hooks run the package's code (callbacks, checkpoint loads, `compute_metrics`): passed over too,
# so that a warning raised inside a hook names the user's `LightningModule` method where one is on the stack, else
# the line that called `trainer.fit` / `validate` / `evaluate`, never a line of the trainer's loop
_TRAINER_PACKAGES = (
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "lightning_utilities",
    "transformers",
    "accelerate",
)


@functools.cache
def _passed_over() -> tuple[str, ...]:
    """:data:`_LIBRARY_DIRS` and the folders of the installed trainer packages (found, not imported; once)."""
    folders = list(_LIBRARY_DIRS)
    for name in _TRAINER_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a broken install, a module without a spec: not passed over
            continue
        if spec is not None:
            folders += [os.path.abspath(folder) + os.sep for folder in spec.submodule_search_locations or ()]
    return tuple(folders)


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by the caller at the first frame outside the libraries.

    What Python 3.12's ``warnings.warn(..., skip_file_prefixes=...)`` does, for every Python the package
    supports (3.10+) and with one code path: frames of this package, TorchMetrics and torch are passed
    over, so a warning raised while ``compute()`` runs names the user's ``compute()`` (or ``log_dict``,
    ``metric(...)``) line however deep the call sits (a wrapper, a module's fused compute, a compute
    group). So are the frames of Lightning (``lightning``, ``pytorch_lightning``, ``lightning_fabric``,
    ``lightning_utilities``) and of transformers and accelerate: a warning raised inside a Trainer's hook
    (``RecMetricCallback``, ``AggregatorCheckpoint``, a checkpoint load, ``compute_metrics``) names the
    user's ``LightningModule`` method where one is on the stack, else the line that called
    ``trainer.fit`` (``validate``, ``test``, ``evaluate``, ``train``), not a line of the trainer's loop.
    A call the user makes themselves (``self.val_metrics.compute()`` in ``on_validation_epoch_end``) is
    named as before: their frame comes first. Where nothing outside them is on the stack (the command
    line), the outermost frame is named. The stack is walked only when a warning is actually raised.

    Examples:
        >>> import warnings
        >>> from torchmetrics_ext.utilities.warnings import user_stacklevel
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("from here", UserWarning, stacklevel=user_stacklevel())
        >>> caught[0].filename.startswith("<doctest")  # this line, not a file of the package
        True
    """
    return _user_frame(sys._getframe(1))[1]


def _user_frame(frame: FrameType, passed_over: tuple[str, ...] | None = None) -> tuple[FrameType, int]:
    """The first frame from ``frame`` outward outside ``passed_over`` (:func:`_passed_over`), and its stack level."""
    passed_over = _passed_over() if passed_over is None else passed_over
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(passed_over):
        frame = frame.f_back
        level += 1
    return frame, level


# the standard library's `multiprocessing`: a spawned process starts in its bootstrap (`process.py`, reached from the
# `-c` command `<string>`), and the parent pickles what it hands the child from inside it (`reduction.py`)
_MULTIPROCESSING_DIR = os.path.dirname(os.path.abspath(multiprocessing.__file__)) + os.sep
# in a process spawned by a trainer (Lightning's `ddp_spawn`), the user's line in the parent that started it
_spawned_from: tuple[str, int] | None = None
# the "once per location" registry of the warnings given that line (`warnings.warn_explicit` keeps none of its own)
_SPAWN_REGISTRY: dict[str | tuple[str, type[Warning], int], int] = {}


def spawn_origin() -> tuple[str, int] | None:
    """In a ``__getstate__`` that pickles an object for a process being spawned, the user's line that spawns it.

    Lightning's ``strategy="ddp_spawn"`` pickles the ``Trainer`` (its callbacks) into each rank from inside
    ``trainer.fit``: the first frame outside the libraries and the standard library's ``multiprocessing`` is the
    user's ``trainer.fit`` (``validate``, ``test``) line, which the ranks' stacks no longer hold. ``None`` for any
    other pickling or copy (no ``multiprocessing`` frame on the way out), and where nothing outside them is found.

    Examples:
        >>> from torchmetrics_ext.utilities.warnings import spawn_origin
        >>> print(spawn_origin())  # not pickled for a spawned process
        None
    """
    # and `threading`: a `multiprocessing.Queue` pickles in its feeder thread, whose stack holds no user line
    passed_over = (*_passed_over(), _MULTIPROCESSING_DIR, threading.__file__)
    frame, spawning = sys._getframe(1), False
    while frame.f_back is not None and frame.f_code.co_filename.startswith(passed_over):
        spawning = spawning or frame.f_code.co_filename.startswith(_MULTIPROCESSING_DIR)
        frame = frame.f_back
    if not spawning or frame.f_code.co_filename.startswith(passed_over):
        return None
    return frame.f_code.co_filename, frame.f_lineno


def note_spawned_from(origin: tuple[str, int] | None) -> None:
    """Remember ``origin`` (:func:`spawn_origin`) for :func:`warn_at_user`; ``None`` changes nothing.

    Called where an object pickled for a spawned process is unpickled: in that process, while ``multiprocessing``
    loads what its parent handed it (before ``multiprocessing.parent_process()`` is set), so nothing else is asked.
    """
    global _spawned_from
    if origin is not None:
        _spawned_from = origin


def warn_at_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category, stacklevel=user_stacklevel())``, also where no user frame is on the stack.

    A hook that Lightning's ``ddp_spawn`` runs in a rank (a callback's) has no frame of the user's: the walk of
    :func:`user_stacklevel` ends in ``multiprocessing``'s bootstrap, and the warning named
    ``multiprocessing/process.py``. There it names the user's line that spawned the rank (``trainer.fit``, as
    ``strategy="ddp"`` does, recorded by :func:`spawn_origin` when the callback was pickled for the rank), with
    Python's warning filters and "once per location" as ``warnings.warn`` applies them.

    Examples:
        >>> import warnings
        >>> from torchmetrics_ext.utilities.warnings import warn_at_user
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_at_user("from here")
        >>> caught[0].filename.startswith("<doctest")  # this line, not a file of the package
        True
    """
    frame, level = _user_frame(sys._getframe(1))
    origin = _spawned_from
    if origin is not None and (
        frame.f_code.co_filename.startswith(_MULTIPROCESSING_DIR) or frame.f_code.co_filename == "<string>"
    ):
        filename, lineno = origin
        warnings.warn_explicit(message, category, filename, lineno, registry=_SPAWN_REGISTRY)
    else:
        warnings.warn(message, category, stacklevel=level + 1)


class UndefinedMetricWarning(UserWarning):
    """Warning raised when a metric value is undefined and ``nan`` is returned instead.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext import AUC, UndefinedMetricWarning
        >>> metric = AUC()
        >>> metric.update(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))  # positives only
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = metric.compute()
        >>> value, caught[0].category is UndefinedMetricWarning
        (tensor(nan, dtype=torch.float64), True)
        >>> print(caught[0].message)
        AUC is undefined: the labels seen hold a single class (or no weight); returning nan.
        >>> with warnings.catch_warnings():  # silenced where nan is expected
        ...     warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
        ...     AUC()(torch.tensor([0.3]), torch.tensor([0]))
        tensor(nan, dtype=torch.float64)
    """


class SamplesFirstWarning(UserWarning):
    """A functional twin was given an ``(N, 1)`` column, which it reads as ``N`` one-sample tasks.

    Inputs are ``(T, N)``, tasks first; a model head's ``(N, 1)`` output is one task only after
    ``.squeeze(1)``. A caller who does mean one-sample tasks can silence it with
    ``warnings.filterwarnings("ignore", category=SamplesFirstWarning)``.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.functional import ctr
        >>> from torchmetrics_ext.utilities.warnings import SamplesFirstWarning
        >>> preds, target = torch.tensor([[0.2], [0.7], [0.4]]), torch.tensor([[0.0], [1.0], [1.0]])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     per_row = ctr(preds, target)  # three tasks of one sample each
        >>> per_row, caught[0].category is SamplesFirstWarning
        (tensor([0., 1., 1.], dtype=torch.float64), True)
        >>> ctr(preds.squeeze(1), target.squeeze(1))  # one task of three samples
        tensor(0.6667, dtype=torch.float64)
    """


class SketchRangeWarning(UserWarning):
    """A distribution sketch's percentiles lost their relative error bound: values lie outside its range.

    A :class:`~torchmetrics_ext.aggregation.Distribution` (and the functional ``distribution``)
    estimates percentiles within ``relative_accuracy`` for magnitudes in ``[min_value, max_value]``
    (``[1e-9, 1e12]`` by default); smaller magnitudes count as 0 and larger ones share the last
    bucket, so a percentile of losses near ``1e-12`` or of token counts above ``1e12`` can be off
    by most of its value. It is emitted at ``compute`` (once per metric until ``reset``) when the
    exact min or max shows such values and a percentile may read them; the message says which
    ``min_value``/``max_value`` would cover the values seen. The mean, min, max and std are not
    affected.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.aggregation import Distribution
        >>> from torchmetrics_ext.utilities.warnings import SketchRangeWarning
        >>> losses = torch.tensor([2e-12, 5e-12, 8e-12], dtype=torch.float64)
        >>> metric = Distribution(percentiles=(50,))
        >>> metric.update(losses)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     far_off = metric.compute()["p50"]  # 2e-12: every value counted as 0, clipped to the min
        >>> caught[0].category is SketchRangeWarning, far_off.item()
        (True, 2e-12)
        >>> "Pass min_value=1e-12" in str(caught[0].message)
        True
        >>> covered = Distribution(percentiles=(50,), min_value=1e-12)  # what the message suggests
        >>> covered.update(losses)
        >>> abs(covered.compute()["p50"].item() - 5e-12) <= 0.01 * 5e-12  # within 1% of np.percentile's 5e-12
        True
    """


class PrecisionLossWarning(UserWarning):
    r"""A value came out of float64 sums that cancel: only its first few significant digits are right.

    Sum-reducible states (they merge by addition across batches, ranks and windows) hold moments
    about a fixed point, and a spread derived from them, :math:`\sum w y^2 - (\sum w y)^2 / \sum w`,
    loses about ``log10(sum w y^2 / sum w (y - mean)^2)`` of float64's 16 digits: labels of
    ``1e6 + N(0, 1)`` keep 3 to 4 (the message rounds the error bound up: "about 3"). Emitted at
    ``compute`` (never per update) when the estimated relative error passes 1e-6, once per metric
    and value (tasks and segments listed in one message); the message says how many digits are
    left and what option keeps them (a ``label_offset`` near the labels' mean, printed). The value
    is still returned.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext import WeightedR2
        >>> from torchmetrics_ext.utilities.warnings import PrecisionLossWarning
        >>> target = 1e5 + torch.tensor([0.1, 0.7, 0.35, 1.9, 0.2, 1.3, 0.6, 1.05], dtype=torch.float64)
        >>> preds = target + 0.25
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = WeightedR2()(preds, target)  # the sums of y and y^2 near 1e10: 5 digits left
        >>> caught[0].category is PrecisionLossWarning
        True
        >>> print(str(caught[0].message).split("; ")[-1])
        pass label_offset=100001 (about the weighted label mean) to keep them.
        >>> WeightedR2(label_offset=100001)(preds, target)  # no warning; scikit-learn: 0.80916...
        tensor(0.8092, dtype=torch.float64)
    """


@dataclass(frozen=True)
class UndefinedEntries:
    """One undefined-value warning as data (see :func:`collecting_undefined`).

    Attributes:
        metric: the metric's name, as the warning names it (``"AUC"``; inside :func:`naming_metric`
            the name given there).
        reason: why, as the warning says it, without the closing ``"; returning nan."``.
        undefined: the boolean tensor of flagged entries, shaped as named by ``axes`` (a flat
            value inside :func:`flat_entries_as` already reshaped), before any task filtering.
        axes: what each dimension of ``undefined`` counts (``("task",)``, ``("task", "segment")``).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import collecting_undefined, warn_undefined
        >>> with collecting_undefined() as entries:
        ...     warn_undefined(torch.tensor([True, False]), "Ratio", "no weight")
        >>> entry = entries[0]
        >>> entry.metric, entry.reason, entry.undefined.tolist(), entry.axes
        ('Ratio', 'no weight', [True, False], ('task',))
    """

    metric: str
    reason: str
    undefined: Tensor
    axes: tuple[str, ...]


def warn_undefined(
    undefined: Tensor,
    metric: str,
    reason: str,
    axes: tuple[str, ...] = ("task",),
    *,
    unseen: Tensor | Callable[[], Tensor] | None = None,
    unseen_reason: str = NO_SAMPLES,
) -> None:
    """Warn once for the entries flagged in the boolean tensor ``undefined``.

    Args:
        undefined: boolean tensor, one entry per task (or any shape), ``True`` where undefined.
        metric: the metric's name, used in the message.
        reason: why the value is undefined, e.g. ``"no positive label"``.
        axes: what each dimension of ``undefined`` counts, when it has ``len(axes)`` dimensions
            (``("task", "label")`` for a ``(T, L)`` value): the message names the flagged entries
            by the axes longer than one (``label(s) [1]`` for one task, ``(task, label) [(2, 0)]``
            for several). Otherwise entries are named by their flat position as tasks.
        unseen: boolean tensor shaped as ``undefined``, ``True`` where the metric saw no sample at
            all (its count or total weight is 0: no update, or only empty / zero-weight batches).
            Those entries are warned for with :data:`NO_SAMPLES` as the reason, the others with
            ``reason``: two warnings where both kinds are flagged. Read at compute only, from the
            states the metric has; a callable making it is called only where some entry is undefined
            (a defined value, ``forward``'s batch value at every step, pays nothing for it).
        unseen_reason: the reason given for the ``unseen`` entries. A metric whose states can only
            tell the entries that *may* have seen nothing (zero sums, the same after samples of one
            kind) flags those and passes :func:`or_no_samples` of its reason.

    Inside :func:`naming_tasks` (a ``RecMetricModule`` computing), tasks are named by their names
    (``task(s) ['click']``), also where the value has one task, when the names fit the task axis.
    Inside :func:`naming_metric` the metric is named by the name given there instead of ``metric``.
    Inside :func:`collecting_undefined` the entries are recorded instead of warned.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import warn_undefined
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_undefined(torch.tensor([True, False, True]), "Ratio", "no weight")
        >>> print(caught[0].message)
        Ratio is undefined for task(s) [0, 2]: no weight; returning nan.
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_undefined(torch.tensor([True, True]), "AUC", "a single class", unseen=torch.tensor([False, True]))
        >>> for warning in caught:
        ...     print(str(warning.message).split(" (")[0])
        AUC is undefined for task(s) [1]: no samples seen
        AUC is undefined for task(s) [0]: a single class; returning nan.
    """
    if _SILENT.get():
        return
    if unseen is not None:
        if _COLLECTED.get() is None and not bool(undefined.any()):  # the host read the warning makes anyway
            return
        if callable(unseen):
            unseen = unseen()
        _warn_entries(undefined & unseen, metric, unseen_reason, axes)
        undefined = undefined & ~unseen
    _warn_entries(undefined, metric, reason, axes)


def _warn_entries(undefined: Tensor, metric: str, reason: str, axes: tuple[str, ...]) -> None:
    """:func:`warn_undefined` for one reason (the warning points at the user's line, see :func:`user_stacklevel`)."""
    metric = _named(metric)
    flat_as = _FLAT_AS.get()
    if flat_as is not None and undefined.ndim <= 1 and len(axes) == 1 and undefined.numel() == math.prod(flat_as[0]):
        undefined, axes = undefined.reshape(flat_as[0]), flat_as[1]
    collected = _COLLECTED.get()
    if collected is not None:  # the caller names the entries itself: no message, no host read
        collected.append(UndefinedEntries(metric, reason, undefined, axes))
        return
    names = _TASK_NAMES.get()
    undefined = _reported_only(undefined, axes, names)
    if not bool(undefined.any()):
        return
    where = _where(undefined, axes, names)
    part = _PART.get()
    warn_at_user(
        f"{metric}{'' if part is None else f' ({part})'} is undefined{where}: {reason}; returning nan.",
        UndefinedMetricWarning,
    )


def warn_precision_loss(
    lost: Tensor, metric: str, detail: Callable[[Tensor], str], axes: tuple[str, ...] = ("task",)
) -> None:
    """One :class:`PrecisionLossWarning` for the entries flagged in the boolean tensor ``lost``.

    The message names the metric and the entries as :func:`warn_undefined` does (inside
    :func:`naming_metric`, :func:`naming_part`, :func:`naming_tasks` and :func:`flat_entries_as`:
    a window, a segment, a task's name), then ``detail(flagged)``: what is left and what to do,
    called only when something is flagged, with the flagged entries of the value's own shape that
    are reported (tasks whose name is ``None`` left out). Not recorded by
    :func:`collecting_undefined` nor silenced by :func:`silencing_undefined` (the value is not
    ``nan``: it is returned, with fewer right digits than it shows). One host read.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import warn_precision_loss
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_precision_loss(torch.tensor([False, True]), "Spread", lambda lost: "3 digits left")
        >>> print(caught[0].message)
        Spread for task(s) [1] lost precision: 3 digits left
    """
    if not bool(lost.any()):
        return
    shaped = lost
    flat_as = _FLAT_AS.get()
    if flat_as is not None and lost.ndim <= 1 and len(axes) == 1 and lost.numel() == math.prod(flat_as[0]):
        shaped, axes = lost.reshape(flat_as[0]), flat_as[1]
    names = _TASK_NAMES.get()
    shaped = _reported_only(shaped, axes, names)
    if not bool(shaped.any()):
        return
    part = _PART.get()
    where = _where(shaped, axes, names)
    warn_at_user(
        f"{_named(metric)}{'' if part is None else f' ({part})'}{where} lost precision: "
        f"{detail(shaped.reshape(lost.shape))}",
        PrecisionLossWarning,
    )


def warn_undefined_flags(
    flags: Sequence[bool],
    metric: str,
    reason: str,
    device: torch.device | None = None,
    *,
    unseen: Sequence[bool] | None = None,
) -> None:
    """:func:`warn_undefined` of flags read on the host: their tensor is made only when something reads it.

    A caller that computed its value from host numbers (a tiny ``compute``) saves making a tensor
    of flags that are all ``False`` (nothing to warn, unless :func:`collecting_undefined` records
    the entries). ``unseen``: host flags of the entries that saw no sample (see :func:`warn_undefined`).

    Examples:
        >>> import warnings
        >>> from torchmetrics_ext.utilities.warnings import warn_undefined_flags
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_undefined_flags([False, True], "Ratio", "no weight")
        ...     warn_undefined_flags([False, False], "Ratio", "no weight")  # nothing undefined: no warning
        >>> len(caught), str(caught[0].message)
        (1, 'Ratio is undefined for task(s) [1]: no weight; returning nan.')
    """
    if _SILENT.get() or (not any(flags) and _COLLECTED.get() is None):
        return
    unseen_flags = None if unseen is None else torch.tensor(unseen, dtype=torch.bool, device=device)
    warn_undefined(torch.tensor(flags, dtype=torch.bool, device=device), metric, reason, unseen=unseen_flags)


@contextmanager
def naming_tasks(names: Sequence[str | None]) -> Iterator[None]:
    """Undefined-value warnings raised inside name the tasks by ``names`` instead of their positions.

    ``names[t]`` is the name of task ``t`` of the values computed inside (one name for a value
    without a task dimension), ``None`` for a task whose value nobody reads: no warning names it.
    Where a value's task axis has another length, positions stay and every task is warned for.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext import NormalizedEntropy
        >>> from torchmetrics_ext.utilities.warnings import naming_tasks
        >>> ne = NormalizedEntropy(num_tasks=2)
        >>> ne.update(torch.tensor([[0.2, 0.7], [0.4, 0.6]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
        >>> with warnings.catch_warnings(record=True) as caught, naming_tasks(["click", "buy"]):
        ...     warnings.simplefilter("always")
        ...     _ = ne.compute()
        >>> print(str(caught[0].message).split(":")[0])
        NormalizedEntropy is undefined for task(s) ['buy']
    """
    token = _TASK_NAMES.set(tuple(names))
    try:
        yield
    finally:
        _TASK_NAMES.reset(token)


@contextmanager
def naming_metric(name: str | None) -> Iterator[None]:
    """Undefined-value warnings raised inside name the metric ``name`` instead of its class (``"ne is undefined ..."``).

    For a container that knows the name the user gave each metric (``RecMetricModule``'s keys, the
    ``metrics`` of ``evaluate``): two metrics of one class (``auc_exact``, ``auc_binned``) then warn
    apart, and each warning names a key of the values returned. ``name`` replaces the metric's own
    name, the first word of what it says; the rest stays (``"RankingMetrics (ndcg@10, mrr@10)"``
    under ``"rank"`` is ``"rank (ndcg@10, mrr@10)"``). ``None`` keeps the metric's own name. Set at
    compute time only: nothing is done per update.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext import AUC
        >>> from torchmetrics_ext.utilities.warnings import naming_metric
        >>> auc = AUC()
        >>> auc.update(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))
        >>> with warnings.catch_warnings(record=True) as caught, naming_metric("auc_exact"):
        ...     warnings.simplefilter("always")
        ...     _ = auc.compute()
        >>> print(str(caught[0].message).split(":")[0])
        auc_exact is undefined
    """
    token = _NAME.set(name)
    try:
        yield
    finally:
        _NAME.reset(token)


def _named(metric: str) -> str:
    """``metric`` (``"AUC"``, ``"HindsightTargetPR.precision"``), its first word the name of :func:`naming_metric`."""
    name = _NAME.get()
    if name is None:
        return metric
    # the name ends at a space ("RankingMetrics (ndcg@10)") or at the dot before a value's entry
    # ("HindsightTargetPR.precision" under "hind" is "hind.precision", the key the module returns)
    end = next((i for i, c in enumerate(metric) if c in " ."), len(metric))
    return name + metric[end:]


@contextmanager
def naming_part(part: str | None) -> Iterator[None]:
    """Undefined-value warnings raised inside name ``part`` after the metric (``"AUC (window) is undefined ..."``).

    For a wrapper computing one metric over a part of what it saw (``Windowed``'s window), so that
    the window's warning is not the lifetime's word for word: with Python's default filter only
    the first of two identical warnings shows, and neither would say which value is ``nan``.
    ``None`` names no part (a wrapper's lifetime value inside another's window).

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext import AUC
        >>> from torchmetrics_ext.utilities.warnings import naming_part
        >>> auc = AUC()
        >>> auc.update(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))
        >>> with warnings.catch_warnings(record=True) as caught, naming_part("window"):
        ...     warnings.simplefilter("always")
        ...     _ = auc.compute()
        >>> print(str(caught[0].message).split(":")[0])
        AUC (window) is undefined
    """
    token = _PART.set(part)
    try:
        yield
    finally:
        _PART.reset(token)


@contextmanager
def flat_entries_as(shape: Sequence[int], axes: tuple[str, ...]) -> Iterator[None]:
    """Flat values of ``prod(shape)`` entries warned for inside are named as ``shape`` with ``axes``.

    For a wrapper whose inner metric computes one flat value over several axes (``Segmented``:
    ``T·S`` entries, task-major): its warnings then name ``segment(s) [2]`` or
    ``(task, segment) [(1, 0)]``, not flat positions as tasks.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import flat_entries_as, warn_undefined
        >>> flat = torch.tensor([False, False, True, False, False, False])  # 2 tasks x 3 segments
        >>> with warnings.catch_warnings(record=True) as caught, flat_entries_as((2, 3), ("task", "segment")):
        ...     warnings.simplefilter("always")
        ...     warn_undefined(flat, "Ratio", "no weight")
        >>> print(caught[0].message)
        Ratio is undefined for (task, segment) [(0, 2)]: no weight; returning nan.
    """
    token = _FLAT_AS.set((tuple(shape), axes))
    try:
        yield
    finally:
        _FLAT_AS.reset(token)


@contextmanager
def collecting_undefined() -> Iterator[list[UndefinedEntries]]:
    """Undefined-value warnings raised inside are appended to the yielded list instead of warned.

    For a caller that computes many values at once and reports each undefined one in its own
    words (``evaluate``'s segments: counted per metric and task): each entry holds the
    metric's name, the reason and the boolean tensor of the flagged entries, in the order the
    warnings would have been raised. Nothing is read on the host, and nothing is filtered by
    :func:`naming_tasks`. Silencing (:func:`silencing_undefined`) still wins.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import collecting_undefined, safe_divide
        >>> with collecting_undefined() as entries:
        ...     _ = safe_divide(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]), "Ratio", "no weight")
        >>> entries[0].metric, entries[0].reason, entries[0].undefined.tolist()
        ('Ratio', 'no weight', [True, False])
    """
    entries: list[UndefinedEntries] = []
    token = _COLLECTED.set(entries)
    try:
        yield entries
    finally:
        _COLLECTED.reset(token)


@contextmanager
def silencing_undefined() -> Iterator[None]:
    """No :class:`UndefinedMetricWarning` inside (for a caller that drops the ``nan`` values itself).

    Unlike ``warnings.catch_warnings`` with a filter, the process's warning filters are not
    touched (a filter change makes Python show every warning it had shown once again).

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import safe_divide, silencing_undefined
        >>> with warnings.catch_warnings(record=True) as caught, silencing_undefined():
        ...     warnings.simplefilter("always")
        ...     value = safe_divide(torch.tensor([1.0]), torch.tensor([0.0]), "Ratio", "no weight")
        >>> value, len(caught)
        (tensor([nan]), 0)
    """
    token = _SILENT.set(True)
    try:
        yield
    finally:
        _SILENT.reset(token)


def _task_axis_fits(undefined: Tensor, axes: tuple[str, ...], names: tuple[str | None, ...] | None) -> bool:
    """Whether ``names`` name the first axis of a ``(task, ...)`` value (else the flat entries, or nothing)."""
    if names is None or not undefined.ndim == len(axes) > 1:
        return False
    return axes[0] == "task" and undefined.shape[0] == len(names)


def _reported_only(undefined: Tensor, axes: tuple[str, ...], names: tuple[str | None, ...] | None) -> Tensor:
    """``undefined`` without the entries of tasks whose name is ``None`` (not reported)."""
    if names is None or all(name is not None for name in names):
        return undefined
    reported = torch.tensor([name is not None for name in names], device=undefined.device)
    if _task_axis_fits(undefined, axes, names):
        return undefined & reported.reshape(-1, *[1] * (undefined.ndim - 1))
    if not undefined.ndim == len(axes) > 1 and undefined.numel() == len(names):  # flat entries are tasks
        return undefined & reported.reshape(undefined.shape)
    return undefined


# the most entries a warning lists (a value of a million segments must not make a megabyte message,
# which Python's warning registry would also keep for every distinct text)
_LISTED = 10


def _where(undefined: Tensor, axes: tuple[str, ...], names: tuple[str | None, ...] | None) -> str:
    """Which entries of ``undefined`` are flagged, in words (`` for task(s) [0, 2]``; empty for a single value).

    At most ``_LISTED`` entries are listed (the first ones, in order), then how many more there are.
    """
    if undefined.ndim == len(axes) > 1:
        # the task axis is named whenever task names fit it, even with a single task
        named = _task_axis_fits(undefined, axes, names)
        kept = [i for i, size in enumerate(undefined.shape) if size > 1 or (i == 0 and named)]
        if not kept:
            return ""
        flagged = torch.nonzero(undefined)
        places = flagged[:_LISTED, kept].tolist()
        if named:
            places = [[names[p[0]], *p[1:]] for p in places]  # type: ignore[index]
        if len(kept) == 1:
            return f" for {axes[kept[0]]}(s) {_listed([p[0] for p in places], len(flagged))}"
        return f" for ({', '.join(axes[i] for i in kept)}) {_listed([tuple(p) for p in places], len(flagged))}"
    flat = undefined.reshape(-1)
    if names is not None and flat.numel() == len(names):
        flagged = torch.nonzero(flat).reshape(-1)
        return f" for task(s) {_listed([names[t] for t in flagged[:_LISTED].tolist()], len(flagged))}"
    if flat.numel() > 1:
        flagged = torch.nonzero(flat).reshape(-1)
        return f" for task(s) {_listed(flagged[:_LISTED].tolist(), len(flagged))}"
    return ""


def _listed(entries: list, count: int) -> str:
    """``entries`` (the first ones of ``count``) as a list; ``[0, 1, ...] (1,000 in all)`` when some are left out."""
    if count <= len(entries):
        return str(entries)
    return f"{str(entries)[:-1]}, ...] ({count:,} in all)"


def safe_divide(
    num: Tensor,
    denom: Tensor,
    metric: str,
    reason: str,
    axes: tuple[str, ...] = ("task",),
    *,
    finite_terms: bool = True,
    unseen: Tensor | Callable[[], Tensor] | None = None,
    unseen_reason: str = NO_SAMPLES,
) -> Tensor:
    """``num / denom``; ``nan`` where ``denom == 0``, with one :class:`UndefinedMetricWarning`.

    ``axes`` names the dimensions of the value in the warning, ``unseen`` the entries that saw no
    sample, warned for with :data:`NO_SAMPLES` (or ``unseen_reason``, see :func:`warn_undefined`);
    a ``denom`` that is the total weight passes :data:`NO_SAMPLES` as ``reason`` instead.
    A denominator that overflowed to ``inf`` (float64 sums of weights past 1.8e308) is ``nan`` too,
    without a warning (no further host read): ``x / inf`` would report 0 for any finite ``x``. So is
    a numerator that overflowed (``sum w·p`` of weights near 1e308 over a finite ``sum w·y``, or
    ``sum w·e²`` over a finite ``sum w``): ``inf / y`` would report ``inf`` where the ratio of the
    true sums is finite. ``finite_terms=False`` where a numerator's term may itself be infinite (a
    sure wrong prediction's log loss with ``eta=0``): an infinite numerator is then the value.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from torchmetrics_ext.utilities.warnings import safe_divide
        >>> num, denom = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 4.0], dtype=torch.float64)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = safe_divide(num, denom, "Ratio", "no weight")
        >>> value
        tensor([   nan, 0.5000], dtype=torch.float64)
        >>> print(caught[0].message)
        Ratio is undefined for task(s) [0]: no weight; returning nan.
    """
    if (
        num.is_cpu
        and denom.is_cpu
        and num.dtype == torch.float64
        and denom.dtype == torch.float64
        and num.shape == denom.shape
        and num.numel() == 1
        and not (num.requires_grad or denom.requires_grad)
        and _COLLECTED.get() is None
        and not (_functorch_wrapped(num) or _functorch_wrapped(denom))
    ):
        # one CPU float64 value (a one-task metric's compute): the same IEEE division on the host, in
        # 3 small calls instead of 9 tensor kernels (~15 us of a forward's batch value). A zero
        # denominator (a warning to give) goes the tensor way, as do the tensors of `torch.func`
        # transforms (`vmap` has no `.item()`: a functional with `validate_args=False` runs under it).
        d = denom.item()
        if d != 0:
            n = num.item()
            undefined_value = math.isinf(d) or (finite_terms and math.isinf(n))
            return torch.full_like(num, math.nan if undefined_value else n / d)
    undefined = denom == 0
    warn_undefined(undefined, metric, reason, axes, unseen=unseen, unseen_reason=unseen_reason)
    unknown = undefined | denom.isinf() if denom.is_floating_point() else undefined
    if finite_terms and num.is_floating_point():
        unknown = unknown | num.isinf()
    return torch.where(unknown, torch.full_like(num, float("nan")), num / torch.where(undefined, 1, denom))
