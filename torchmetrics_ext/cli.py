"""The ``torchmetrics-ext`` command line.

``torchmetrics-ext demo`` trains a small two-task recommender with Lightning on synthetic
impressions, with the metrics inside the training loop, prints train against validation values
and writes a report of pictures (see :mod:`torchmetrics_ext.demo`; needs the ``demo`` extra).
``torchmetrics-ext demo --quick`` instead scores synthetic click and conversion predictions for
two tasks with 15 pointwise and AUC metrics in one :class:`~torchmetrics.MetricCollection`
(compute groups on; the binary-label ones listed in :func:`demo_metrics`), then synthetic search
sessions with 6 ranking metrics (``RankingMetrics``' defaults) at k = 1, 5, 10, and prints the
lifetime values as tables (no extra needed).

``torchmetrics-ext evaluate PATH... --task click=p_click:y_click --metrics ne,auc`` scores logged
predictions in Parquet/CSV files (see :mod:`torchmetrics_ext.evaluate`); under
``torchrun --nproc-per-node N -m torchmetrics_ext.cli evaluate ...`` the ranks split the row groups.
``torchmetrics-ext --version`` prints the installed package's version.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import MetricCollection

import torchmetrics_ext as tmx
from torchmetrics_ext.utilities.checks import refuse_repeats

TASKS = ("click", "conversion")


def demo_metrics(num_tasks: int) -> MetricCollection:
    """The quick demo's 15 pointwise and AUC metrics, over ``(preds, target, weights)`` (GAUC also ``groups``).

    The metrics of binary labels, NE to GAUC by user; not the package's other metrics (the
    continuous-label ``XAUC``, ``RegressionAUC``, ``WeightedR2``, ``WeightedNMSE``, nor
    ``GroupedAUPRC``, the TorchRec-style counters, ...).
    """
    return MetricCollection(
        {
            "ne": tmx.NormalizedEntropy(num_tasks=num_tasks),
            "log_loss": tmx.LogLoss(num_tasks=num_tasks),
            "calibration": tmx.Calibration(num_tasks=num_tasks),
            "ctr": tmx.CTR(num_tasks=num_tasks),
            "mean_prediction": tmx.WeightedAverage(num_tasks=num_tasks),
            "accuracy@50%": tmx.WeightedAccuracy(num_tasks=num_tasks),
            "precision@5%": tmx.WeightedPrecision(num_tasks=num_tasks, threshold=0.05),
            "recall@5%": tmx.WeightedRecall(num_tasks=num_tasks, threshold=0.05),
            "mse_brier": tmx.WeightedMSE(num_tasks=num_tasks),
            "rmse": tmx.WeightedRMSE(num_tasks=num_tasks),
            "mae": tmx.WeightedMAE(num_tasks=num_tasks),
            "auc": tmx.AUC(num_tasks=num_tasks),
            "auprc": tmx.AUPRC(num_tasks=num_tasks),
            "auc_binned": tmx.AUC(num_tasks=num_tasks, num_bins=10_000),
            "gauc_by_user": tmx.GroupedAUC(num_tasks=num_tasks),
        },
        compute_groups=True,
    )


def synthetic_batches(samples: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """Click-through-like data for two tasks: a latent user-item affinity drives both labels."""
    gen = torch.Generator().manual_seed(seed)
    affinity = torch.randn(samples, generator=gen)
    base_logits = torch.tensor([[-3.4], [-5.0]])  # ~4% clicks, ~1% conversions
    true_logits = base_logits + torch.stack([1.2 * affinity, 1.5 * affinity])
    target = (torch.rand(2, samples, generator=gen) < torch.sigmoid(true_logits)).to(torch.int64)
    # a decent but imperfect model: noisy estimate of the affinity, slightly over-confident on clicks
    noisy = affinity + 0.6 * torch.randn(samples, generator=gen)
    preds = torch.sigmoid(base_logits + torch.stack([1.3 * noisy, 1.2 * noisy]) + torch.tensor([[0.1], [0.0]]))
    weights = torch.where(torch.rand(samples, generator=gen) < 0.1, 2.0, 1.0)  # down-sampled negatives etc.
    users = torch.randint(0, max(samples // 50, 1), (samples,), generator=gen)  # ~50 impressions per user
    return list(
        zip(
            preds.split(batch_size, -1),
            target.split(batch_size, -1),
            weights.split(batch_size, -1),
            users.split(batch_size, -1),
        )
    )


RANKING_KS = (1, 5, 10)
_BROKEN_PIPE = 141  # `evaluate`'s status when stdout's reader left: 128 + SIGPIPE, as a shell reports it
RANKING_METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")


def synthetic_sessions(queries: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """Search sessions in the flat retrieval layout: 5-50 candidates per query, graded relevance 0-3."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(5, 51, (queries,), generator=gen)
    indexes = torch.repeat_interleave(torch.arange(queries), sizes)
    quality = torch.rand(indexes.numel(), generator=gen)
    relevance = (quality * 4).floor().clamp(max=3) * (torch.rand(indexes.numel(), generator=gen) < 0.4)
    scores = relevance + 1.5 * torch.randn(indexes.numel(), generator=gen)  # a noisy ranker
    return list(zip(scores.split(batch_size), relevance.split(batch_size), indexes.split(batch_size)))


def format_ranking_table(values: dict[str, torch.Tensor]) -> str:
    """Render ``{"ndcg@10": value, ...}`` as a metric x k table."""
    lines = [f"{'metric':12s}" + "".join(f"{'@' + str(k):>10s}" for k in RANKING_KS)]
    lines.append("-" * len(lines[0]))
    for name in RANKING_METRICS:
        lines.append(f"{name:12s}" + "".join(f"{values[f'{name}@{k}'].item():10.4f}" for k in RANKING_KS))
    return "\n".join(lines)


def run_ranking_demo(queries: int = 20_000, batch_size: int = 8192, seed: int = 0) -> dict[str, torch.Tensor]:
    """Score synthetic search sessions with ``RankingMetrics``' 6 default metrics at several cutoffs (one sort)."""
    batches = synthetic_sessions(queries, batch_size, seed)
    metric = tmx.RankingMetrics(ks=RANKING_KS, metrics=RANKING_METRICS)
    start = time.perf_counter()
    for preds, target, indexes in batches:
        metric.update(preds, target, indexes=indexes)
    values = metric.compute()
    elapsed = time.perf_counter() - start
    rows = sum(batch[0].numel() for batch in batches)
    print(
        f"\nranking: {queries:,} queries ({rows:,} candidates, graded relevance) in {len(batches)} batches; "
        f"{len(values)} values from one RankingMetrics; {elapsed:.2f}s"
    )
    print(format_ranking_table(values))
    return values


def format_table(values: dict[str, torch.Tensor], tasks: Sequence[str]) -> str:
    """Render ``{metric: (T,) tensor}`` as a fixed-width text table."""
    width = max(len(name) for name in values) + 2
    lines = [f"{'metric':{width}s}" + "".join(f"{task:>14s}" for task in tasks)]
    lines.append("-" * len(lines[0]))
    for name, value in values.items():
        cells = value.reshape(-1).tolist()
        lines.append(f"{name:{width}s}" + "".join(f"{cell:14.6f}" for cell in cells))
    return "\n".join(lines)


def run_demo(samples: int = 500_000, batch_size: int = 8192, seed: int = 0) -> dict[str, torch.Tensor]:
    """Score the synthetic data with :func:`demo_metrics`' 15 metrics; return the lifetime values."""
    batches = synthetic_batches(samples, batch_size, seed)
    metrics = demo_metrics(len(TASKS))
    start = time.perf_counter()
    for preds, target, weights, users in batches:
        # MetricCollection hands `groups` only to the metrics whose update takes it
        metrics.update(preds, target, weights=weights, groups=users)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
        values = metrics.compute()
    elapsed = time.perf_counter() - start
    print(
        f"torchmetrics_ext demo: {samples:,} weighted samples x {len(TASKS)} tasks in {len(batches)} batches "
        f"of {batch_size}; {len(metrics.compute_groups)} compute groups for {len(metrics)} metrics; "
        f"{elapsed:.2f}s"
    )
    print(format_table(values, TASKS))
    return values


class _GivenOnce(argparse.Action):
    """Store an option's value, refusing the option a second time (argparse's own rule: the last one wins).

    For the options whose value lists several names (``--metrics``, ``--by``) or names a single
    task (``--predictions``, ``--labels``): repeating them, as ``--task`` is repeated, reads as
    "and these too", but the last value would silently replace the first (``--metrics ndcg@10
    --metrics mrr`` computed ``mrr`` alone, ``--by country --by device`` segmented by ``device``).
    ``once_hint`` ends the error: how to say it once.
    """

    def __init__(self, *args: Any, once_hint: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.once_hint = once_hint

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        previous = getattr(namespace, self.dest)
        if previous is not None:
            parser.error(f"argument {option}: given twice ({previous!r}, then {values!r}); {self.once_hint}")
        setattr(namespace, self.dest, values)


def _package_version() -> str:
    """The package's version, as :func:`~torchmetrics_ext.evaluate.report.package_version` finds it."""
    from torchmetrics_ext.evaluate.report import package_version

    return package_version()


class _Version(argparse.Action):
    """``--version``: print ``torchmetrics-ext VERSION`` and exit 0, the version looked up only then."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        sys.stdout.write(f"{parser.prog} {_package_version()}\n")  # on stdout, as argparse's own version action
        parser.exit()


def _label_value(text: str) -> int | float:
    """``--ignore-index``'s value: an integer (``-100``) or another finite number, as written."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number (the label of padded rows, e.g. -100), got {text!r}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(
            f"expected a finite number (the label of padded rows, e.g. -100), got {text!r}"
        )
    return value


def add_evaluate_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand's arguments (its parser returned: its errors print its own usage)."""
    ev = sub.add_parser(
        "evaluate",
        help="score logged predictions in Parquet/CSV files (streamed; torchrun splits them between ranks)",
        description="Score logged predictions in Parquet/CSV files with the package's metrics.",
    )
    ev.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="Parquet/CSV (or .csv.gz/.bz2/.zst/.lz4) files, directories or globs (or `paths` in --config)",
    )
    ev.add_argument(
        "--config",
        metavar="FILE",
        help="JSON (or YAML, with PyYAML) file of tasks, metrics with their options and the options below; "
        "options given on the command line override it (--metrics selects the metrics to run, which keep the "
        "file's options)",
    )
    ev.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME=PRED:LABEL",
        help="a task's prediction and label columns (repeat for several tasks)",
    )
    ev.add_argument(
        "--predictions",
        action=_GivenOnce,
        once_hint="use --task NAME=PRED:LABEL (repeatable) for several tasks",
        help="prediction column of a single task (with --labels)",
    )
    ev.add_argument(
        "--labels",
        action=_GivenOnce,
        once_hint="use --task NAME=PRED:LABEL (repeatable) for several tasks",
        help="label column of a single task (with --predictions), which names the task",
    )
    ev.add_argument(
        "--metrics",
        action=_GivenOnce,
        once_hint="give the metrics once, comma-separated (--metrics ne,auc)",
        help="comma-separated registry names (default: ne,log_loss,calibration,ctr,auc); with --config, the "
        "metrics to run, each one the file configures keeping the file's options (a task of the file that its "
        "`metric_tasks` gives to other metrics alone is left out, with a warning)",
    )
    ev.add_argument(
        "--metric-tasks",
        action="append",
        default=None,
        metavar="METRIC=TASK[,TASK...]",
        help="the tasks a metric reads (repeatable: --metric-tasks mse=watch_time --metric-tasks auc=click,like); "
        "a metric not named reads every task; replaces the --config file's `metric_tasks` as a whole",
    )
    ev.add_argument("--weights", help="sample weight column (shared by every task)")
    ev.add_argument(
        "--user",
        help="integer user id column (gauc, gauprc); ids match by 64-bit pattern across files (uint64 2**64-1 "
        "is int64 -1)",
    )
    ev.add_argument(
        "--session",
        help="integer query/session id column (ranking metrics); ids match by 64-bit pattern across files "
        "(uint64 2**64-1 is int64 -1)",
    )
    ev.add_argument(
        "--from-logits",
        action="store_true",
        default=None,
        help="the prediction columns hold logits (metrics without the option read sigmoid(logits))",
    )
    ev.add_argument(
        "--by",
        action="append",
        help="comma-separated segment columns (values per segment + overall), spaces around each dropped; "
        "repeat for several segmentations in one read (--by country --by device --by country,device); a "
        "column whose whole name is the value (commas and spaces included) is taken whole when a file has it "
        "(as evaluate(by='a,b') and a config's `by: a,b`); segments compare by value (each value is "
        "reported), so a column needs one type holding all its values in every file (ids compare by bit pattern)",
    )
    ev.add_argument(
        "--ignore-index",
        type=_label_value,
        metavar="VALUE",
        help="a label value marking rows without a label (TorchMetrics' ignore_index, e.g. -100 or -1): rows whose "
        "label equals it are left out of the tasks reading that label column, counted in a warning line",
    )
    ev.add_argument("--output", help="write the results to a .json, .csv or .parquet file")
    ev.add_argument("--on-invalid", choices=("error", "skip"), help="invalid rows: fail or drop them (default: error)")
    ev.add_argument("--batch-size", type=int, help="rows per record batch (default: 65536)")
    shown = ev.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="print the compute phase's progress too when stderr is no terminal (a log file, a pipe)",
    )
    shown.add_argument("--no-progress", action="store_true", default=None, help="do not print progress lines")
    return ev


def run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Run ``evaluate``: print the table on rank 0 and write ``--output``; 2 on bad input.

    ``argv``: the command line's arguments (``sys.argv[1:]`` when ``None``), kept in the result's
    ``provenance`` (``command``) with the ``--config`` file's path (``config``).
    """
    try:
        from torchmetrics_ext.evaluate import (
            DEFAULT_METRICS,
            InvalidDataError,
            ResultCaveatWarning,
            TaskSpec,
            evaluate,
            parse_task,
        )
        from torchmetrics_ext.evaluate.runner import SeveralBy
    except ImportError as err:
        parser.error(str(err))
    for option in ("predictions", "labels", "weights", "user", "session"):
        if getattr(args, option) == "":  # `--weights "$UNSET_VARIABLE"`: not "no weights"
            parser.error(f"argument --{option}: expected a column name, got ''")
    config: dict[str, Any] = {}
    if args.config is not None:
        from torchmetrics_ext.evaluate.config import load_config

        try:
            config = load_config(args.config)
        except ValueError as err:
            parser.error(f"--config {args.config}: {err}")
    tasks: list[str | TaskSpec] = []
    for text in args.task:
        try:
            tasks.append(parse_task(text))
        except ValueError as err:
            parser.error(f"argument --task: {err}")
    if (args.predictions is None) != (args.labels is None):
        parser.error("--predictions and --labels go together")
    if args.predictions is not None:  # the names as given: any column name, ':' and '=' too
        tasks.append(TaskSpec(args.labels, args.predictions, args.labels))
    tasks = tasks or config.get("tasks", [])  # options given on the command line override the file
    if not tasks:
        parser.error(
            "name the columns: --task NAME=PRED:LABEL (repeatable), --predictions COL --labels COL, "
            "or `tasks` in --config"
        )
    paths = args.paths or config.get("paths")
    if not paths:
        parser.error("name the data: PATH... (files, directories or globs), or `paths` in --config")
    batch_size = _given(args.batch_size, config, "batch_size", 65_536)
    if batch_size < 1:
        parser.error("--batch-size must be positive")
    output = _given(args.output, config, "output", None)
    if output is not None:
        from torchmetrics_ext.evaluate.report import check_output_path

        try:
            check_output_path(output)  # before hours of reading, not after
        except ValueError as err:
            parser.error(f"--output: {err}")
    metrics: Any = config.get("metrics", DEFAULT_METRICS)
    if args.metrics is not None:
        names = _names(parser, "--metrics", args.metrics, "metric names")
        try:  # as evaluate refuses it, here too where a config file's options would keep the name once
            refuse_repeats("--metrics", args.metrics, names, what="metric names")
        except ValueError as err:
            parser.error(f"argument --metrics: {err}")
        metrics = _selected_metrics(names, metrics)
    metric_tasks: Any = config.get("metric_tasks")
    if args.metric_tasks is not None:
        metric_tasks = _metric_tasks(parser, args.metric_tasks)
    elif metric_tasks is not None and args.metrics is not None:  # the file's, for the metrics --metrics runs
        metric_tasks = {name: tasks for name, tasks in metric_tasks.items() if name in metrics} or None
    left_out = None  # the file's tasks that only metrics --metrics leaves out read: left out of the run, said so
    if args.metrics is not None and args.metric_tasks is None and tasks is config.get("tasks"):
        from torchmetrics_ext.evaluate.config import tasks_read_by

        read = tasks_read_by(tasks, metrics, metric_tasks)
        if read is not None:
            kept, left_out = read
            tasks = [*kept]
    by: Any = config.get("by", [])
    if args.by is not None:  # checked here, then given as written: evaluate reads it against the data's columns
        for text in args.by:
            _names(parser, "--by", text, "column names")
        # repeated: several segmentations, each value read as one --by reads it; one is the run with that `by`,
        # and a refusal names the --by options as typed
        by = SeveralBy(args.by)
    from torchmetrics_ext.evaluate.memory import map_large_buffers

    map_large_buffers()  # this process only evaluates: keep its resident memory close to what is in use
    rank = _init_distributed()
    try:
        with warnings.catch_warnings():  # the notes are printed below as `warning:` lines, once, by rank 0
            warnings.simplefilter("ignore", ResultCaveatWarning)  # UnreadWeightsWarning is one
            warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)  # the undefined values' lines
            result = evaluate(
                paths,
                tasks,
                metrics,
                weights=_given(args.weights, config, "weights", None),
                user=_given(args.user, config, "user", None),
                session=_given(args.session, config, "session", None),
                by=by,
                batch_size=batch_size,
                on_invalid=_given(args.on_invalid, config, "on_invalid", "error"),
                progress=_progress(args, config),
                from_logits=bool(_given(args.from_logits, config, "from_logits", False)),
                metric_tasks=metric_tasks,
                ignore_index=_given(args.ignore_index, config, "ignore_index", None),
            )
    except (InvalidDataError, ValueError, TypeError) as err:
        print(f"torchmetrics-ext evaluate: error: {err}", file=sys.stderr)
        return 2
    finally:
        if rank is not None:
            torch.distributed.destroy_process_group()
    if left_out is not None:
        result.warnings.insert(0, left_out)
    # how the numbers were made, beside what evaluate records: the arguments as typed, the config file
    result.provenance["command"] = ["torchmetrics-ext", *(sys.argv[1:] if argv is None else argv)]
    result.provenance["config"] = args.config
    if not rank:  # one process, or rank 0 of a torchrun job
        # the file first: a reader of stdout that leaves early (`| head`) must not cost the results
        write_error = None
        if output:
            try:
                result.write(output)
            except (OSError, ValueError) as err:  # e.g. the directory went away or the disk is full
                write_error = err
        try:
            print(result.summary())
            for message in result.warnings:
                print(f"warning: {message}", file=sys.stderr)
            print(result.format_table())
            if output and write_error is None:
                print(f"wrote {output}")
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
            if write_error is None:
                return _BROKEN_PIPE
        if write_error is not None:
            print(f"torchmetrics-ext evaluate: error: cannot write --output: {write_error}", file=sys.stderr)
            return 2
    return 0


def _drop_stdout() -> None:
    """Send the rest of stdout nowhere: its reader left (``| head``); pending text is dropped, no traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _progress(args: argparse.Namespace, config: dict[str, Any]) -> bool | str:
    """``evaluate``'s ``progress``: ``--progress`` every line, ``--no-progress`` (or ``progress: false``) none.

    Else ``"auto"``: the reading's line, and the compute phase's where stderr is a terminal.
    """
    if args.progress:
        return True
    if args.no_progress or config.get("progress", True) is False:
        return False
    return "auto"


def _given(value: Any, config: dict[str, Any], key: str, default: Any) -> Any:
    """An option's value: the command line's if given, else the --config file's, else ``default``."""
    if value is not None:
        return value
    return config.get(key, default)


def _selected_metrics(names: list[str], configured: Any) -> Any:
    """The metrics ``--metrics`` selects, each keeping the options a ``--config`` file's mapping gives it.

    Args:
        names: the command line's names (registry names, or keys of the file's mapping).
        configured: the file's ``metrics`` (a list of names or a mapping ``name -> options``), or the defaults.

    Returns:
        ``names`` when the file gives no options; else the mapping ``name -> options`` of ``names``
        in their order, a name the file leaves out without options.
    """
    if not isinstance(configured, Mapping):
        return names
    return {name: configured.get(name) for name in names}


def _metric_tasks(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, list[str]]:
    """``--metric-tasks METRIC=TASK[,TASK...]`` (repeated) as ``evaluate``'s ``metric_tasks``.

    A form that does not parse, or a metric given twice, is the parser's error, naming the flag and the
    expected form; the names themselves are checked by ``evaluate`` (unknown metric or task, a task twice).
    """
    form = "METRIC=TASK[,TASK...] (e.g. --metric-tasks mse=watch_time --metric-tasks auc=click,like)"
    out: dict[str, list[str]] = {}
    for text in given:
        metric, sep, tasks = text.partition("=")
        metric = metric.strip()
        if not sep or not metric or not tasks.strip():
            what = "no '='" if not sep else "no metric before '='" if not metric else "no task after '='"
            parser.error(f"argument --metric-tasks: expected {form}, got {text!r}: {what}")
        if metric in out:
            parser.error(
                f"argument --metric-tasks: metric {metric!r} given twice ({','.join(out[metric])!r}, then "
                f"{tasks!r}); list its tasks once, comma-separated: {form}"
            )
        out[metric] = _names(parser, "--metric-tasks", tasks, "task names")
    return out


def _names(parser: argparse.ArgumentParser, option: str, text: str, what: str) -> list[str]:
    """The comma-separated names of ``option`` (spaces around each dropped).

    A value holding no name (``--by ""``, as an unset shell variable gives) is the parser's error:
    leaving the option out means no segments (or the default metrics), an empty value a mistake.
    So is an empty item among names (``--metrics ne,`` or ``ne,,auc``): a name left out by mistake
    would otherwise go unnoticed.
    """
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        parser.error(f"argument {option}: expected comma-separated {what}, got {text!r}")
    if not all(names):
        empty = [str(i + 1) for i, name in enumerate(names) if not name]
        where = f"position{'s' if len(empty) > 1 else ''} {', '.join(empty)} of {len(names)}"
        parser.error(
            f"argument {option}: empty item ({where}) in {text!r}; "
            f"expected comma-separated {what} without empty items (a trailing or doubled comma?)"
        )
    return names


def _init_distributed() -> int | None:
    """Join the process group ``torchrun`` describes in the environment (gloo); this rank, or ``None`` alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return None
    torch.distributed.init_process_group("gloo")
    return torch.distributed.get_rank()


# what the training demo imports: Lightning for the run, matplotlib for the report written after it
DEMO_REQUIRES = ("lightning", "matplotlib")


def _missing_modules(names: Sequence[str]) -> list[str]:
    """The top-level modules among ``names`` that cannot be imported (found without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses it, or a module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def run_demo_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``demo``: the training demo and its report, or the tables with ``--quick``."""
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be positive")
    if args.quick:
        if args.samples < 1 or args.queries < 1:
            parser.error("--samples and --queries must be positive")
        batch_size = 8192 if args.batch_size is None else args.batch_size
        run_demo(args.samples, batch_size, args.seed)
        run_ranking_demo(args.queries, batch_size, args.seed)
        return 0
    if args.steps < 1 or args.devices < 1:
        parser.error("--steps and --devices must be positive")
    # checked before training: the report (matplotlib) would only fail after it; without one, Lightning only
    needed = [m for m in DEMO_REQUIRES if not (args.no_report and m == "matplotlib")]
    missing = _missing_modules(needed)
    if missing:
        what = "the training demo needs" if args.no_report else "the training demo and its report need"
        parser.error(
            f"{what} {', '.join(missing)}, from the `demo` extra: "
            "pip install 'torchmetrics-ext[demo]' (from a clone: pip install -e '.[demo]'); "
            "`torchmetrics-ext demo --quick` needs no extra"
        )
    try:
        from torchmetrics_ext.demo import DemoConfig, run_training_demo
    except ModuleNotFoundError as err:
        parser.error(f"the training demo needs the `demo` extra (pip install 'torchmetrics-ext[demo]'): {err}")
    config = DemoConfig(
        steps=args.steps,
        batch_size=64 if args.batch_size is None else args.batch_size,
        output_dir=args.output_dir,
        devices=args.devices,
        seed=args.seed,
        report=not args.no_report,
    )
    run_training_demo(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``torchmetrics-ext``."""
    parser = argparse.ArgumentParser(prog="torchmetrics-ext", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action=_Version, help="print the package version and exit")
    # the metavar names the commands in "required: {demo,evaluate}" (the dest alone said "required: command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,evaluate}")
    demo = sub.add_parser(
        "demo",
        help="train a two-task recommender with the metrics inside and write a report (--quick: tables only)",
        description="Train a small two-task recommender with Lightning on synthetic impressions, log NE, AUC, "
        "AUPRC, calibration, CTR, GAUC, NDCG@10 and Recall@10 per task, print train against validation and "
        "write a report of pictures. --quick scores synthetic data with 15 pointwise and AUC metrics and 6 "
        "ranking metrics and prints tables instead.",
    )
    demo.add_argument("--quick", action="store_true", help="no training: score synthetic data, print tables")
    demo.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    demo.add_argument(
        "--batch-size", type=int, help="sessions (~16 impressions each) per step; with --quick: samples (8192)"
    )
    demo.add_argument("--output-dir", default="torchmetrics_ext_demo", help="report and logs directory")
    demo.add_argument(
        "--no-report",
        action="store_true",
        help="train, log, print the summary and save val_predictions.csv; draw no report (no matplotlib)",
    )
    demo.add_argument("--devices", type=int, default=1, help="CPU processes (2: DDP with gloo)")
    demo.add_argument("--samples", type=int, default=500_000, help="--quick: samples scored")
    demo.add_argument("--queries", type=int, default=20_000, help="--quick: search sessions for the ranking table")
    demo.add_argument("--seed", type=int, default=0)
    evaluate = add_evaluate_parser(sub)
    args = parser.parse_args(argv)
    # a subcommand's own mistakes are reported with its usage line, as argparse does for its arguments
    if args.command == "evaluate":
        return run_evaluate(args, evaluate, argv)
    if args.command == "demo":
        try:
            code = run_demo_command(args, demo)
            sys.stdout.flush()  # a reader that left shows here, not at exit
        except BrokenPipeError:  # `demo --quick | head`: the rest of the tables goes nowhere, as with evaluate
            _drop_stdout()
            return _BROKEN_PIPE
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
