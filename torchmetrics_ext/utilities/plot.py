"""Pictures of the curve metrics: ROC and precision-recall curves, reliability diagrams.

matplotlib is imported when a picture is drawn (the ``plot`` extra), never at import time.
Curves are drawn with TorchMetrics' own :func:`torchmetrics.utilities.plot.plot_curve`; this
module adds the chance line of the ROC curve and the reliability diagram TorchMetrics lacks,
and :func:`named_series` / :func:`indexed_series`, which name each number of a value for TorchMetrics' plot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["indexed_series", "named_series", "plot_reliability", "plot_roc_or_pr"]

Curve = tuple[Tensor, Tensor, Tensor] | tuple[list[Tensor], list[Tensor], list[Tensor]]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as err:  # pragma: no cover - the test extra installs matplotlib
        raise ModuleNotFoundError(
            "Plotting needs matplotlib: `pip install matplotlib` (or the `plot` extra of torchmetrics-ext)."
        ) from err
    return plt


def _names(count: int, labels: Sequence[str] | None) -> list[str] | None:
    if labels is None:
        return None if count == 1 else [f"task {t}" for t in range(count)]
    if len(labels) != count:
        raise ValueError(f"Expected {count} label(s) in `labels`, one per task, got {list(labels)!r}.")
    return list(labels)


def indexed_series(value: Tensor, axes: Sequence[str], prefix: str = "") -> dict[str, Tensor]:
    """Each number of ``value`` as one series named by its index along each named axis: ``task0/segment1``.

    ``axes`` names the dimensions of ``value``, one each (``("task", "segment")`` for a
    ``(T, S)`` value); ``prefix`` comes first (``"lifetime/"``).

    Raises:
        ValueError: ``axes`` does not name each dimension of ``value``.

    Examples:
        >>> import torch
        >>> series = indexed_series(torch.tensor([[0.5, 0.25], [1.0, 0.0]]), ("task", "segment"))
        >>> list(series), series["task0/segment1"]
        (['task0/segment0', 'task0/segment1', 'task1/segment0', 'task1/segment1'], tensor(0.2500))
    """
    if len(axes) != value.ndim:
        raise ValueError(f"Expected a value with one dimension per axis {tuple(axes)}, got shape {tuple(value.shape)}.")
    return {
        prefix + "/".join(f"{axis}{i}" for axis, i in zip(axes, index)): value[index]
        for index in itertools.product(*(range(n) for n in value.shape))
    }


def named_series(value: Mapping[Any, Any], prefix: str = "", axes: Sequence[str] = ()) -> dict[Any, Tensor]:
    """A dict value as named numbers, one series each: ``{"lifetime/0": ..., "precision/1": ...}``.

    A nested dict's entries are named by their path (``window/ndcg@10``), a tensor's entries by
    their flat index (a per-task ``(T,)`` tensor gives ``name/0`` ... ``name/T-1``), or by
    :func:`indexed_series` where ``axes`` names each of its dimensions (``lifetime/task0/segment1``
    for a ``Segmented`` metric's ``(T, S)`` values), and a scalar keeps its key (so ``1`` and
    ``"1"`` stay two series). TorchMetrics' plot draws a dict of scalars as one point per key,
    and a list of them as one line per key over steps.

    Examples:
        >>> import torch
        >>> named_series({"precision": torch.tensor([0.5, 0.25]), "n": torch.tensor(3.0)})
        {'precision/0': tensor(0.5000), 'precision/1': tensor(0.2500), 'n': tensor(3.)}
    """
    out: dict[Any, Tensor] = {}
    for key, item in value.items():
        name = f"{prefix}{key}" if prefix else key
        if isinstance(item, Mapping):
            out |= named_series(item, f"{name}/", axes)
        elif isinstance(item, Tensor) and item.ndim > 0 and len(axes) == item.ndim:
            out |= indexed_series(item, axes, f"{name}/")
        elif isinstance(item, Tensor) and item.ndim > 0:
            out |= {f"{name}/{i}": entry for i, entry in enumerate(item.flatten())}
        else:
            out[name] = item
    return out


def plot_roc_or_pr(
    curve: Curve,
    kind: str,
    score: Tensor | None = None,
    ax: Any = None,
    labels: Sequence[str] | None = None,
) -> tuple[Any, Any]:
    """Draw ROC (``kind="roc"``, with the chance diagonal) or precision-recall (``kind="pr"``) curves.

    Args:
        curve: ``(fpr, tpr, thresholds)`` or ``(precision, recall, thresholds)`` as returned by
            ``AUC.curve()`` / ``AUPRC.curve()``: tensors for one task, lists of tensors for several.
        kind: ``"roc"`` or ``"pr"``.
        score: the area (a scalar, or one per task) shown in the legend as ``AUC=`` (ROC) or
            ``AUPRC=`` (precision-recall).
        ax: an existing matplotlib axis.
        labels: one legend label per task.

    Returns:
        ``(figure, axis)``; ``figure`` is ``None`` when ``ax`` is given.
    """
    from torchmetrics.utilities.plot import plot_curve

    if kind not in ("roc", "pr"):
        raise ValueError(f"Expected `kind` to be 'roc' or 'pr', got {kind!r}.")
    first, second, thresholds = curve
    multi = isinstance(first, list)
    # TorchMetrics draws (x, y): ROC is (fpr, tpr); the precision-recall curve is (recall, precision)
    points = (first, second, thresholds) if kind == "roc" else (second, first, thresholds)
    names = _names(len(first) if multi else 1, labels)
    if score is not None and not multi:
        score = torch.as_tensor(score).reshape(())
    axis_names = ("False positive rate", "True positive rate") if kind == "roc" else ("Recall", "Precision")
    title = "ROC curve" if kind == "roc" else "Precision-recall curve"
    drawn_before = 0 if ax is None else len(ax.get_lines())  # a caller's axis may hold other curves
    fig, ax = plot_curve(points, score=score, ax=ax, label_names=axis_names, name=title, labels=names)  # type: ignore[arg-type]
    if kind == "roc":
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance")
    elif score is not None:  # TorchMetrics ends every curve's label with "AUC=..."; here it is the average precision
        for line in ax.get_lines()[drawn_before:]:
            head, found, tail = str(line.get_label()).rpartition("AUC=")
            if found:
                line.set_label(f"{head}AUPRC={tail}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if not multi and names is None and score is None:
        return fig, ax
    ax.legend(loc="lower right" if kind == "roc" else "upper right")
    return fig, ax


def plot_reliability(
    values: Mapping[str, Tensor],
    ax: Any = None,
    labels: Sequence[str] | None = None,
    title: str | None = "Reliability diagram",
) -> tuple[Any, Any]:
    """Draw a reliability diagram: each bin's label rate against its mean prediction, one line per task.

    Marker areas are proportional to each bin's share of the task's weight; the dotted
    diagonal is perfect calibration. Bins without weight are left out. The axes span the
    predictions and rates seen (click-through data lives near 0).

    Args:
        values: ``Reliability.compute()``: ``{"mean_prediction", "label_rate", "weight"}``,
            each ``(B,)`` or ``(T, B)``.
        ax: an existing matplotlib axis.
        labels: one legend label per task.
        title: the axis title.

    Returns:
        ``(figure, axis)``; ``figure`` is ``None`` when ``ax`` is given.

    Raises:
        TypeError: ``values`` is not a dict.
        ValueError: ``values`` lacks one of the three keys, or ``labels`` does not name each task.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import reliability
        >>> from torchmetrics_ext.utilities.plot import plot_reliability
        >>> fig, ax = plot_reliability(reliability(torch.rand(200), torch.randint(0, 2, (200,)), num_bins=5))
    """
    if not isinstance(values, Mapping):
        raise WrongTypeError(
            f"Expected `values` to be one dict returned by Reliability.compute(), got {type(values).__name__}."
        )
    missing = [key for key in ("mean_prediction", "label_rate", "weight") if key not in values]
    if missing:
        raise ValueError(f"Expected the output of Reliability.compute(), missing key(s) {missing}.")
    plt = _pyplot()
    fig, ax = plt.subplots() if ax is None else (None, ax)
    mean_pred, rate, weight = (
        torch.atleast_2d(values[k].detach().cpu().double()) for k in ("mean_prediction", "label_rate", "weight")
    )
    names = _names(mean_pred.shape[0], labels)
    top = 0.0
    for t in range(mean_pred.shape[0]):
        keep = weight[t] > 0
        if not bool(keep.any()):
            continue
        x, y, w = mean_pred[t][keep], rate[t][keep], weight[t][keep]
        share = w / w.sum()
        (line,) = ax.plot(x, y, marker=None, linewidth=1.5, label=None if names is None else names[t])
        ax.scatter(x, y, s=(15 + 400 * share).tolist(), color=line.get_color(), alpha=0.7, zorder=3)
        top = max(top, float(x.max()), float(y.max()))
    top = 1.0 if top == 0.0 else min(1.0, top * 1.1)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", linewidth=1, label="perfectly calibrated")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top if math.isfinite(top) else 1.0)
    ax.set_xlabel("Mean prediction in bin")
    ax.set_ylabel("Label rate in bin")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left")
    return fig, ax
