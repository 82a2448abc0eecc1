"""The demo's report: a summary table, and a directory of pictures with an ``index.html``.

* ``metric_<name>.png``: each metric over training steps per task, lifetime (solid) and
  recent window (dashed), with the validation values (dots); ``sources.png``: the
  per-source records of the :class:`~torchmetrics_ext.aggregation.MetricsAggregator`.
* ``roc_<task>.png``, ``pr_<task>.png``, ``reliability_<task>.png`` from the final model's
  validation predictions, with their data in ``roc_<task>.csv``, ``pr_<task>.csv``,
  ``reliability_<task>.csv``; the predictions themselves are in ``val_predictions.csv``, which
  the demo writes with or without the report (:func:`write_validation_predictions`).
* ``overview.png``: NE and AUC over steps, the ROC curves and the reliability diagrams.

The values logged during training are read back from the CSV logger's ``metrics.csv``.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.demo.data import SOURCES, Impressions, collate_sessions
from torchmetrics_ext.demo.model import DEMO_METRICS, DemoRecommender
from torchmetrics_ext.functional.auc.curves import precision_recall_curve, roc_curve
from torchmetrics_ext.functional.reliability import reliability

__all__ = ["read_logged", "summary_table", "validation_predictions", "write_report", "write_validation_predictions"]

Series = dict[str, list[tuple[int, float]]]
_SOURCE_KEYS = ("impressions", "clicks", "click_rate", "session_length_stat_mean")
_COUNT_KEYS = frozenset({"impressions", "clicks"})  # the rest are ratios and means, shown with decimals


def summary_table(
    train: Mapping[str, float],
    val: Mapping[str, float],
    tasks: Sequence[str],
    warmup_steps: int | None = None,
    steps: int | None = None,
) -> str:
    """Train (lifetime) and validation values of every metric and task, then the per-source records.

    The training throughput line says "not measured" when the run ended before the throughput's clock
    started (no training step after its ``warmup_steps``, given here to name them). Given the run's
    training ``steps``, a note under the table says what its columns are: a ``train`` value is the lifetime
    one, over every step from the untrained start, so it may trail ``val``'s, the trained model's.

    Examples:
        >>> print(summary_table({"train/ne/click": 0.81}, {"val/ne/click": 0.83}, ["click"]))
        metric       click train   click val
        ------------------------------------
        ne                0.8100      0.8300
        >>> print(summary_table({"train/ne/click": 0.81}, {"val/ne/click": 0.83}, ["click"], steps=600))
        metric       click train   click val
        ------------------------------------
        ne                0.8100      0.8300
        (train: lifetime values over all 600 training steps, the untrained first steps included; the recent
        window's values are the `/window` keys of logs/metrics.csv. val: the last validation, of the trained model.)
        >>> print(summary_table({"train/throughput/lifetime_throughput": float("nan")}, {}, ["click"], 5))
        metric       click train   click val
        ------------------------------------
        <BLANKLINE>
        training throughput: not measured: fewer than 6 training steps (the clock starts after 5 warm-up steps)
    """
    header = f"{'metric':12s}" + "".join(f"{f'{task} train':>12s}{f'{task} val':>12s}" for task in tasks)
    lines = [header, "-" * len(header)]
    for name in DEMO_METRICS:
        cells = [(train.get(f"train/{name}/{task}"), val.get(f"val/{name}/{task}")) for task in tasks]
        if all(a is None and b is None for a, b in cells):
            continue
        lines.append(f"{name:12s}" + "".join(f"{_cell(a)}{_cell(b)}" for a, b in cells))
    if steps is not None:
        lines.append(
            f"(train: lifetime values over all {steps:,} training steps, the untrained first steps included; the "
            "recent\nwindow's values are the `/window` keys of logs/metrics.csv. val: the last validation, of the "
            "trained model.)"
        )
    rate = train.get("train/throughput/lifetime_throughput")
    if rate is not None and math.isfinite(rate):
        lines.append(f"\ntraining throughput: {rate:,.0f} impressions/s")
    elif rate is not None:  # NaN: no step after the warm-up, so no time measured
        if warmup_steps is None:
            lines.append("\ntraining throughput: not measured: no training step after the warm-up steps")
        else:
            lines.append(
                f"\ntraining throughput: not measured: fewer than {warmup_steps + 1} training steps "
                f"(the clock starts after {warmup_steps} warm-up steps)"
            )
    rows = [(source, [train.get(f"train_{source}/{key}") for key in _SOURCE_KEYS]) for source in SOURCES]
    if any(value is not None for _, values in rows for value in values):
        lines.append(f"\n{'source':12s}" + "".join(f"{key.replace('_stat_mean', ''):>16s}" for key in _SOURCE_KEYS))
        lines += [
            f"{source:12s}" + "".join(_cell(v, 16, count=key in _COUNT_KEYS) for key, v in zip(_SOURCE_KEYS, values))
            for source, values in rows
        ]
        # clicks / impressions is the impression-level rate (the CTR rows above); the column is another mean
        lines.append("(training data; click_rate and session_length: means over sessions, not clicks / impressions)")
    return "\n".join(lines)


def _cell(value: float | None, width: int = 12, count: bool = False) -> str:
    """A count as a whole number; anything else (a ratio, a mean) with 4 decimals, even when whole (1.0000)."""
    if value is None:
        return f"{'-':>{width}s}"
    if count or (math.isfinite(value) and abs(value) >= 1e4):  # NaN/inf shown as such
        return f"{value:{width},.0f}"
    return f"{value:{width}.4f}"


def read_logged(path: str | Path) -> Series:
    """``{key: [(step, value), ...]}`` from a Lightning ``CSVLogger`` file (empty cells skipped)."""
    series: Series = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            for key, cell in row.items():
                if key not in ("step", "epoch") and cell not in ("", None):
                    series.setdefault(key, []).append((step, float(cell)))
    return series


def validation_predictions(model: DemoRecommender, val_set: Impressions) -> dict[str, Tensor]:
    """The model's click and like probabilities on every validation impression, with the columns."""
    starts = range(0, len(val_set), 256)
    batches = [collate_sessions([val_set[i] for i in range(lo, min(lo + 256, len(val_set)))]) for lo in starts]
    model.eval()
    probs = torch.cat([model.predict(batch) for batch in batches])
    columns = {name: torch.cat([batch[name] for batch in batches]) for name in ("user", "session", "source")}
    labels = {name: torch.cat([batch[name] for batch in batches]) for name in ("click", "like")}
    return {**columns, **labels, "click_pred": probs[:, 0], "like_pred": probs[:, 1]}


def write_validation_predictions(path: str | Path, predictions: Mapping[str, Tensor]) -> Path:
    """Write :func:`validation_predictions` as CSV, each row's ``source`` by its name (``feed``, ``search``).

    The file ``torchmetrics-ext evaluate ... --by source`` reads (README): segments named
    ``source=feed`` and ``source=search``, as the demo's tables name the sources.

    Examples:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> columns = {"source": torch.tensor([1, 0]), "click": torch.tensor([0, 1])}
        >>> columns["click_pred"] = torch.tensor([0.25, 0.5])
        >>> path = write_validation_predictions(Path(tempfile.mkdtemp()) / "val_predictions.csv", columns)
        >>> print(path.read_text().strip())
        source,click,click_pred
        search,0,0.25
        feed,1,0.5
    """
    named: dict[str, Tensor | Sequence[Any]] = dict(predictions)
    named["source"] = [SOURCES[int(s)] for s in predictions["source"].tolist()]
    _write_csv(Path(path), named)
    return Path(path)


def _write_csv(path: Path, columns: Mapping[str, Tensor | Sequence[Any]]) -> None:
    names = list(columns)
    values = [c.tolist() if isinstance(c, Tensor) else list(c) for c in (columns[name] for name in names)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(zip(*values))


def _metric_figure(plt: Any, series: Series, name: str, tasks: Sequence[str]) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for t, task in enumerate(tasks):
        color = f"C{t}"
        for key, style, label in (
            (f"train/{name}/{task}", "-", f"{task} lifetime"),
            (f"train/{name}/{task}/window", "--", f"{task} window"),
        ):
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, style, color=color, label=label, linewidth=1.5)
        if f"val/{name}/{task}" in series:
            steps, values = zip(*series[f"val/{name}/{task}"])
            ax.plot(steps, values, "o", color=color, label=f"{task} validation", markersize=6)
    ax.set_xlabel("training step")
    ax.set_title(name)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _throughput_figure(plt: Any, series: Series) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for key, style in (("lifetime_throughput", "-"), ("window_throughput", "--")):
        if f"train/throughput/{key}" in series:
            steps, values = zip(*series[f"train/throughput/{key}"])
            ax.plot(steps, values, style, label=key.replace("_", " "))
    ax.set(xlabel="training step", ylabel="impressions / s", title="throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _sources_figure(plt: Any, series: Series) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for s, source in enumerate(SOURCES):
        for ax, key in zip(axes, ("impressions", "click_rate")):
            if f"train_{source}/{key}" in series:
                steps, values = zip(*series[f"train_{source}/{key}"])
                ax.plot(steps, values, color=f"C{s}", label=source)
    for ax, title in zip(axes, ("impressions seen (SUM)", "click rate per session (MEAN)")):
        ax.set(xlabel="training step", title=title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_report(
    output_dir: str | Path, model: DemoRecommender, val_set: Impressions, logged: str | Path, summary: str = ""
) -> Path:
    """Write the pictures, their data and ``index.html`` (with ``summary`` on top) into ``output_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchmetrics_ext.utilities.plot import plot_reliability, plot_roc_or_pr

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [task.name for task in model.val_metrics.tasks]
    series = read_logged(logged)
    preds = validation_predictions(model, val_set)
    write_validation_predictions(out / "val_predictions.csv", preds)
    stems: list[str] = []

    def keep(stem: str, fig: Any) -> None:
        """Write the picture and close its figure at once (pyplot keeps open figures alive)."""
        fig.savefig(out / f"{stem}.png", dpi=80 if stem != "overview" else 72)
        plt.close(fig)
        stems.append(stem)

    for name in DEMO_METRICS:
        keep(f"metric_{name}", _metric_figure(plt, series, name, tasks))
    keep("throughput", _throughput_figure(plt, series))
    keep("sources", _sources_figure(plt, series))
    curves: dict[str, dict[str, Any]] = {}
    for task in tasks:
        p, y = preds[f"{task}_pred"], preds[task].long()
        fpr, tpr, roc_thresholds = _one_task(roc_curve(p, y))
        precision, recall, pr_thresholds = _one_task(precision_recall_curve(p, y))
        bins = reliability(p, y, num_bins=20)  # this process's predictions: no sync
        curves[task] = {"roc": (fpr, tpr, roc_thresholds), "pr": (precision, recall, pr_thresholds), "rel": bins}
        _write_csv(out / f"roc_{task}.csv", {"fpr": fpr, "tpr": tpr, "threshold": roc_thresholds})
        _write_csv(
            out / f"pr_{task}.csv",
            {"precision": precision[:-1], "recall": recall[:-1], "threshold": pr_thresholds},
        )
        _write_csv(out / f"reliability_{task}.csv", bins)
        for kind in ("roc", "pr"):
            fig, ax = plot_roc_or_pr(curves[task][kind], kind, score=_area(curves[task][kind], kind), labels=[task])
            ax.set_title(f"{'ROC' if kind == 'roc' else 'Precision-recall'} curve: {task} (validation)")
            fig.set_size_inches(5.0, 4.6)
            keep(f"{kind}_{task}", fig)
        fig, _ = plot_reliability(bins, labels=[task], title=f"Reliability diagram: {task}")
        fig.set_size_inches(5.0, 4.6)
        keep(f"reliability_{task}", fig)
    keep("overview", _overview(plt, series, curves, tasks, plot_roc_or_pr, plot_reliability))
    index = out / "index.html"
    index.write_text(_html(stems, tasks, summary))
    return index


def _one_task(curve: Any) -> tuple[Tensor, Tensor, Tensor]:
    """The curve of 1-D inputs: three tensors (the functions return lists only for ``(T, N)``)."""
    first, second, third = curve
    assert isinstance(first, Tensor) and isinstance(second, Tensor) and isinstance(third, Tensor)
    return first, second, third


def _area(curve: tuple[Tensor, Tensor, Tensor], kind: str) -> Tensor:
    first, second, _ = curve
    if kind == "roc":  # trapezoids under (fpr, tpr)
        return torch.trapezoid(second, first)
    # step sum over the precision-recall points (recall decreasing)
    return -(second[1:] - second[:-1]).mul(first[:-1]).sum()


def _overview(
    plt: Any, series: Series, curves: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], roc: Any, rel: Any
) -> Any:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for ax, name in zip(axes[0], ("ne", "auc")):
        for t, task in enumerate(tasks):
            for suffix, style, label in (("", "-", "lifetime"), ("/window", "--", "window")):
                key = f"train/{name}/{task}{suffix}"
                if key in series:
                    steps, values = zip(*series[key])
                    ax.plot(steps, values, style, color=f"C{t}", label=f"{task} {label}")
            if f"val/{name}/{task}" in series:
                steps, values = zip(*series[f"val/{name}/{task}"])
                ax.plot(steps, values, "o", color=f"C{t}", label=f"{task} validation")
        ax.set(xlabel="training step", title=f"{name.upper()} over training")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fpr = [curves[task]["roc"][0] for task in tasks]
    tpr = [curves[task]["roc"][1] for task in tasks]
    thresholds = [curves[task]["roc"][2] for task in tasks]
    scores = torch.stack([_area(curves[task]["roc"], "roc") for task in tasks])
    roc((fpr, tpr, thresholds), "roc", score=scores, ax=axes[1][0], labels=list(tasks))
    axes[1][0].set_title("Validation ROC curves")
    bins = {key: torch.stack([curves[task]["rel"][key] for task in tasks]) for key in curves[tasks[0]]["rel"]}
    rel(bins, ax=axes[1][1], labels=list(tasks), title="Validation reliability")
    fig.tight_layout()
    return fig


def _html(stems: Sequence[str], tasks: Sequence[str], summary: str) -> str:
    def img(stem: str) -> str:
        return f'<a href="{stem}.png"><img src="{stem}.png" alt="{html.escape(stem)}"></a>'

    over_steps = [stem for stem in stems if stem.startswith("metric_")] + ["throughput", "sources"]
    sections = [
        ("Overview", ["overview"]),
        ("Metrics over training steps (lifetime, window, validation)", over_steps),
        *[(f"Validation curves: {task}", [f"roc_{task}", f"pr_{task}", f"reliability_{task}"]) for task in tasks],
    ]
    body = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n<div>{''.join(img(stem) for stem in items if stem in stems)}</div>"
        for title, items in sections
    )
    data = ", ".join(
        f'<a href="{name}">{name}</a>'
        for name in ["val_predictions.csv", "logs/metrics.csv"]
        + [f"{kind}_{task}.csv" for task in tasks for kind in ("roc", "pr", "reliability")]
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>torchmetrics-ext demo report</title>\n"
        "<style>body{font-family:sans-serif;margin:2em} img{max-width:480px;margin:4px;border:1px solid #ddd}"
        " div img[alt=overview]{max-width:960px}</style></head>\n<body>\n<h1>torchmetrics-ext demo report</h1>\n"
        f"<pre>{html.escape(summary)}</pre>\n{body}\n<h2>Data</h2>\n<p>{data}</p>\n</body></html>\n"
    )
