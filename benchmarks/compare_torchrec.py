"""Parity with TorchRec 1.9.2: the same saved multi-task weighted batches through every TorchRec metric and ours.

The two sides run in separate processes on one saved data set: TorchRec in its own virtual
environment (it needs FBGEMM), ours in the project's. Each side writes ``{TorchRec key: [value per
task]}``; this script joins them into one table (metric, TorchRec key, both values, relative
difference) and checks that every metric defined the same way agrees to 1e-6 relative. Rows
where the definitions differ on purpose name the difference and also show our TorchRec-compatible
option, which must agree too, except where a documented rule of ours applies that no option turns
off: session precision/recall (``average="micro"``) drop zero-weight rows before ranking, TorchRec
ranks them, so their compat difference on this data is shown as intended, and the same metrics run
again with every zero weight set to 1 (keys prefixed ``w>0:``), where the compat option must agree.

Setup of the TorchRec side (once)::

    python3 -m venv /work/venv-torchrec-parity
    /work/venv-torchrec-parity/bin/pip install torch==2.13.0   # the CPU wheel
    /work/venv-torchrec-parity/bin/pip install torchrec==1.9.2 --no-deps
    /work/venv-torchrec-parity/bin/pip install fbgemm-gpu-cpu==1.8.0 torchmetrics==1.0.3 tensordict tqdm \\
        pyre-extensions numpy

Run (from the repository root)::

    python benchmarks/compare_torchrec.py --torchrec-python /work/venv-torchrec-parity/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TASKS = 3
SEGMENTS = 4
LABEL_BITS = 3
SESSION_K = 3
RECAL = 0.3
TIES = 50  # the first TIES rows of every batch hold tied scores (rounded to 0.05)
# key prefix of the session metrics run again with every zero weight set to 1: there our zero-weight rule
# (a zero-weight row takes no top-k place; TorchRec ranks every row) does not apply
POSITIVE = "w>0:"
ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- data


def make_data(num_batches: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Click-like multi-task data with ties, zero weights, sessions, segments, NaN labels and label codes."""
    torch.manual_seed(seed)  # the Beta sampler draws from the global generator
    g = torch.Generator().manual_seed(seed)
    shape = (num_batches, TASKS, batch_size)
    p = torch.distributions.Beta(2.0, 5.0).sample(shape)
    p[..., :TIES] = (p[..., :TIES] * 20).round() / 20  # ties, and scores exactly at 0.5 (the threshold)
    p = p.clamp(1e-4, 1 - 1e-4).float()
    y = (torch.rand(shape, generator=g) < p).float()
    w = torch.rand(shape, generator=g) * 2
    w[torch.rand(shape, generator=g) < 0.1] = 0.0  # rows that were not served
    missing = y.clone()
    missing[torch.rand(shape, generator=g) < 0.15] = float("nan")
    sessions = torch.arange(batch_size).div(8, rounding_mode="floor").expand(num_batches, batch_size).contiguous()
    segments = torch.randint(0, SEGMENTS, (num_batches, batch_size), generator=g)
    codes = torch.randint(0, 2**LABEL_BITS, (2, *shape), generator=g)
    values = torch.randn(shape, generator=g) * 3 + 1
    # 1024 group ids (users) shared by the batches: few rows each, so many groups hold a single class
    groups = torch.randint(0, 1024, (num_batches, batch_size), generator=g)
    return {
        "preds": p,
        "target": y,
        "weights": w,
        "missing": missing,
        "sessions": sessions,
        "groups": groups,
        "segments": segments,
        "pred_codes": codes[0],
        "label_codes": codes[1],
        "values": values,
    }


def positive_weights(w: torch.Tensor) -> torch.Tensor:
    """The weights with every zero set to 1 (the session rows where no row is absent)."""
    return torch.where(w == 0, torch.ones_like(w), w)


def key(namespace: str, task: int, name: str, prefix: str = "lifetime_", suffix: str = "") -> str:
    """TorchRec's metric key: ``{namespace}-{task}|{prefix}{name}{description}``."""
    return f"{namespace}-t{task}|{prefix}{name}{suffix}"


# ----------------------------------------------------------------------------- TorchRec side


def run_torchrec(
    data: dict[str, torch.Tensor], seconds: dict[str, float]
) -> dict[str, list[float]]:  # pragma: no cover
    from torchrec.metrics.metric_module import REC_METRICS_MAPPING
    from torchrec.metrics.metrics_config import RecComputeMode, RecMetricEnum, RecTaskInfo, SessionMetricDef

    num_batches, _, batch_size = data["preds"].shape
    fused, unfused = RecComputeMode.FUSED_TASKS_COMPUTATION, RecComputeMode.UNFUSED_TASKS_COMPUTATION
    names = [f"t{i}" for i in range(TASKS)]
    plain = [RecTaskInfo(name=n) for n in names]
    session_tasks = [
        RecTaskInfo(name=n, session_metric_def=SessionMetricDef(session_var_name="session", top_threshold=SESSION_K))
        for n in names
    ]
    tensor_tasks = [RecTaskInfo(name=n, tensor_name=f"values_{n}") for n in names]
    E = RecMetricEnum
    specs = [
        (E.NE, {"include_logloss": True}, fused, plain, "binary"),
        (E.NE_POSITIVE, {}, fused, plain, "binary"),
        (E.RECALIBRATED_NE, {"recalibration_coefficient": RECAL}, fused, plain, "binary"),
        (E.RECALIBRATED_CALIBRATION, {"recalibration_coefficient": RECAL}, fused, plain, "binary"),
        (E.SEGMENTED_NE, {"num_groups": SEGMENTS}, fused, plain, "segments"),
        (E.CTR, {}, fused, plain, "binary"),
        (E.CALIBRATION, {}, fused, plain, "binary"),
        (E.MSE, {"include_r_squared": True}, fused, plain, "binary"),
        (E.MAE, {}, fused, plain, "binary"),
        (E.WEIGHTED_AVG, {}, fused, plain, "binary"),
        (E.ACCURACY, {}, fused, plain, "binary"),
        (E.PRECISION, {}, fused, plain, "binary"),
        (E.RECALL, {}, fused, plain, "binary"),
        (E.SERVING_NE, {}, fused, plain, "binary"),
        (E.SERVING_CALIBRATION, {}, fused, plain, "binary"),
        (E.TENSOR_WEIGHTED_AVG, {}, unfused, tensor_tasks, "tensor"),
        (E.CALI_FREE_NE, {}, fused, plain, "binary"),
        (E.UNWEIGHTED_NE, {}, fused, plain, "binary"),
        (E.HINDSIGHT_TARGET_PR, {"target_precision": 0.4}, unfused, plain, "binary"),
        (E.NMSE, {}, fused, plain, "binary"),
        (E.AVERAGE, {}, fused, plain, "binary"),
        (E.MULTI_LABEL_PRECISION, {"num_labels": LABEL_BITS}, unfused, plain, "codes"),
        (E.NUM_POSITIVE_SAMPLES, {}, fused, plain, "binary"),
        (E.SUM_WEIGHTS, {}, fused, plain, "binary"),
        (E.NUM_MISSING_LABELS, {}, fused, plain, "missing"),
        (E.WEIGHTED_SUM_PREDICTIONS, {}, fused, plain, "binary"),
        (E.PRECISION_SESSION_LEVEL, {}, unfused, session_tasks, "session"),
        (E.RECALL_SESSION_LEVEL, {}, unfused, session_tasks, "session"),
        (E.PRECISION_SESSION_LEVEL, {}, unfused, session_tasks, "session_positive"),
        (E.RECALL_SESSION_LEVEL, {}, unfused, session_tasks, "session_positive"),
        (E.TOWER_QPS, {}, fused, plain, "binary"),
        (E.AUC, {}, fused, plain, "binary"),
        (E.AUPRC, {}, fused, plain, "binary"),
        (E.AUC, {"grouped_auc": True}, fused, plain, "grouped"),
        (E.AUPRC, {"grouped_auprc": True}, fused, plain, "grouped"),
    ]
    out: dict[str, list[float]] = {}
    for enum, kwargs, mode, tasks, kind in specs:
        start = time.perf_counter()
        metric = REC_METRICS_MAPPING[enum](
            world_size=1,
            my_rank=0,
            batch_size=batch_size,
            tasks=tasks,
            compute_mode=mode,
            window_size=10**9,
            **kwargs,
        )
        for b in range(num_batches):
            p, y, w = data["preds"][b], data["target"][b], data["weights"][b]
            extra: dict[str, torch.Tensor] = {}
            if kind == "missing":
                y = data["missing"][b]
            elif kind == "codes":
                p, y = data["pred_codes"][b], data["label_codes"][b]
            elif kind in ("session", "session_positive"):
                extra = {"session": data["sessions"][b]}
                if kind == "session_positive":
                    w = positive_weights(w)
            elif kind == "segments":
                extra = {"grouping_keys": data["segments"][b]}
            elif kind == "grouped":  # on the rows without ties (ties: the AUC row)
                p, y, w = p[..., TIES:], y[..., TIES:], w[..., TIES:]
                extra = {"grouping_keys": data["groups"][b][TIES:]}
            elif kind == "tensor":
                extra = {f"values_{n}": data["values"][b, i] for i, n in enumerate(names)}
            metric.update(
                predictions={n: p[i] for i, n in enumerate(names)},
                labels={n: y[i] for i, n in enumerate(names)},
                weights={n: w[i] for i, n in enumerate(names)},
                required_inputs=extra,
            )
        values = metric.compute()
        if kind != "session_positive":
            seconds[str(enum.value) + ("_grouped" if kind == "grouped" else "")] = time.perf_counter() - start
        window_only = not any("|lifetime_" in k for k in values)  # TorchRec's AUC has no lifetime value
        for k, v in values.items():
            if kind == "grouped" and "grouped_" not in k:
                continue  # its AUC/AUPRC over the tie-free rows: the plain rows above are the comparison
            if "window_" in k and not window_only and kind != "grouped":
                continue
            if enum == E.TENSOR_WEIGHTED_AVG:
                # TorchRec files it under the `weighted_avg` namespace, where it would overwrite
                # WeightedAvgMetric's keys; kept apart here
                k = "tensor_" + k
            if kind == "session_positive":
                k = POSITIVE + k
            out[k] = torch.as_tensor(v).double().reshape(-1).tolist()
    return out


# ----------------------------------------------------------------------------- our side


def run_ours(data: dict[str, torch.Tensor], seconds: dict[str, float]) -> dict[str, list[float]]:
    """Our metrics on the same batches, reported under TorchRec's keys (``#compat`` for the compatible option)."""
    import warnings

    import torchmetrics_ext as tmx

    warnings.simplefilter("ignore", tmx.UndefinedMetricWarning)
    T = TASKS
    metrics = {
        # (namespace, name, suffix) -> (metric, input kind)
        ("ne", "ne", ""): (tmx.NormalizedEntropy(T), "binary"),
        ("ne", "logloss", ""): (tmx.LogLoss(T), "binary"),
        ("ne", "logloss", "#compat"): (tmx.LogLoss(T, unit="bits"), "binary"),
        ("ne_positive", "ne_positive", ""): (tmx.NEPositive(T), "binary"),
        ("recalibrated_ne", "ne", ""): (tmx.RecalibratedNE(T, recalibration_coefficient=RECAL), "binary"),
        ("recalibrated_calibration", "calibration", ""): (
            tmx.RecalibratedCalibration(T, recalibration_coefficient=RECAL),
            "binary",
        ),
        ("segmented_ne", "segmented_ne", "_{g}"): (tmx.Segmented(tmx.NormalizedEntropy(T), SEGMENTS), "segments"),
        ("ctr", "ctr", ""): (tmx.CTR(T), "binary"),
        ("calibration", "calibration", ""): (tmx.Calibration(T), "binary"),
        ("mse", "mse", ""): (tmx.WeightedMSE(T), "binary"),
        ("mse", "rmse", ""): (tmx.WeightedRMSE(T), "binary"),
        ("mse", "r_squared", ""): (tmx.WeightedR2(T), "binary"),
        ("mae", "mae", ""): (tmx.WeightedMAE(T), "binary"),
        ("weighted_avg", "weighted_avg", ""): (tmx.WeightedAverage(T), "binary"),
        ("accuracy", "accuracy", ""): (tmx.WeightedAccuracy(T), "binary"),
        ("precision", "precision", ""): (tmx.WeightedPrecision(T), "binary"),
        ("recall", "recall", ""): (tmx.WeightedRecall(T), "binary"),
        ("serving_ne", "ne", ""): (tmx.NormalizedEntropy(T), "binary"),
        ("serving_ne", "total_examples", ""): (tmx.NumServingExamples(T), "binary"),
        ("serving_calibration", "calibration", ""): (tmx.Calibration(T), "binary"),
        ("serving_calibration", "total_examples", ""): (tmx.NumServingExamples(T), "binary"),
        ("tensor_weighted_avg", "weighted_avg", ""): (tmx.TensorWeightedAverage(T), "tensor"),
        ("cali_free_ne", "cali_free_ne", ""): (tmx.CalibrationFreeNE(T), "binary"),
        ("cali_free_ne", "cali_free_ne", "#compat"): (tmx.CalibrationFreeNE(T, torchrec_scaling=True), "binary"),
        ("unweighted_ne", "unweighted_ne", ""): (tmx.NormalizedEntropy(T), "unweighted"),
        ("hindsight_target_pr", "hindsight_target_pr", ""): (
            tmx.HindsightTargetPR(T, target_precision=0.4),
            "binary",
        ),
        ("nmse", "nmse", ""): (tmx.WeightedNMSE(T), "binary"),
        ("nmse", "nrmse", ""): (tmx.WeightedNRMSE(T), "binary"),
        ("average", "label_average", ""): (tmx.LabelAverage(T), "binary"),
        ("average", "prediction_average", ""): (tmx.WeightedAverage(T), "binary"),
        ("multi_label_precision", "multi_label_precision", "label_{g}"): (
            tmx.MultiLabelPrecision(LABEL_BITS, T),
            "codes",
        ),
        ("num_positive_samples", "num_positive_samples", ""): (tmx.NumPositiveSamples(T), "binary"),
        ("sum_weights", "sum_weights", ""): (tmx.SumWeights(T), "binary"),
        ("num_missing_labels", "num_missing_labels", ""): (tmx.NumMissingLabels(T), "missing"),
        ("weighted_sum_predictions", "weighted_sum_predictions", ""): (tmx.WeightedSumPredictions(T), "binary"),
        ("precision_session_level", "precision_session_level", ""): (tmx.SessionPrecisionAtK(SESSION_K, T), "session"),
        ("precision_session_level", "precision_session_level", "#compat"): (
            tmx.SessionPrecisionAtK(SESSION_K, T, average="micro"),
            "session",
        ),
        ("recall_session_level", "recall_session_level", ""): (tmx.SessionRecallAtK(SESSION_K, T), "session"),
        ("recall_session_level", "recall_session_level", "#compat"): (
            tmx.SessionRecallAtK(SESSION_K, T, average="micro"),
            "session",
        ),
        (POSITIVE + "precision_session_level", "precision_session_level", ""): (
            tmx.SessionPrecisionAtK(SESSION_K, T),
            "session_positive",
        ),
        (POSITIVE + "precision_session_level", "precision_session_level", "#compat"): (
            tmx.SessionPrecisionAtK(SESSION_K, T, average="micro"),
            "session_positive",
        ),
        (POSITIVE + "recall_session_level", "recall_session_level", ""): (
            tmx.SessionRecallAtK(SESSION_K, T),
            "session_positive",
        ),
        (POSITIVE + "recall_session_level", "recall_session_level", "#compat"): (
            tmx.SessionRecallAtK(SESSION_K, T, average="micro"),
            "session_positive",
        ),
        ("qps", "total_examples", ""): (tmx.NumServingExamples(T), "unweighted"),
        ("auc", "auc", ""): (tmx.AUC(T), "binary"),
        ("auprc", "auprc", ""): (tmx.AUPRC(T), "binary"),
        ("auprc", "auprc", "#compat"): (tmx.AUPRC(T, num_bins=1000, bin_space="probability"), "binary"),
        ("auc", "grouped_auc", ""): (tmx.GroupedAUC(T), "grouped"),
        ("auc", "grouped_auc", "#compat"): (tmx.GroupedAUC(T, average_groups="all"), "grouped"),
        ("auprc", "grouped_auprc", ""): (tmx.GroupedAUPRC(T), "grouped"),
        ("auprc", "grouped_auprc", "#compat"): (tmx.GroupedAUPRC(T, average_groups="all"), "grouped"),
    }
    num_batches = data["preds"].shape[0]
    values = {}
    for (namespace, name, suffix), (metric, kind) in metrics.items():
        start = time.perf_counter()
        for b in range(num_batches):
            p, y, w = data["preds"][b], data["target"][b], data["weights"][b]
            if kind == "binary":
                metric.update(p, y, w)
            elif kind == "unweighted":
                metric.update(p, y)
            elif kind == "missing":
                metric.update(p, data["missing"][b], w)
            elif kind == "codes":
                metric.update(data["pred_codes"][b], data["label_codes"][b], w)
            elif kind == "session":
                metric.update(p, y, data["sessions"][b], w)
            elif kind == "session_positive":
                metric.update(p, y, data["sessions"][b], positive_weights(w))
            elif kind == "segments":
                metric.update(p, y, w, segments=data["segments"][b])
            elif kind == "grouped":
                metric.update(p[..., TIES:], y[..., TIES:], data["groups"][b][TIES:], w[..., TIES:])
            elif kind == "tensor":
                metric.update(data["values"][b], w)
        values[namespace, name, suffix] = metric.compute()
        timed = namespace + ("_grouped" if kind == "grouped" else "")
        if kind != "session_positive":
            seconds.setdefault(timed, time.perf_counter() - start)  # the namespace's first (main) metric
    out: dict[str, list[float]] = {}
    for (namespace, name, suffix), value in values.items():
        compat = "#compat" if suffix == "#compat" else ""
        suffix = "" if compat else suffix
        if isinstance(value, dict):  # hindsight: threshold, precision, recall
            for sub, v in (("", value["threshold"]), ("_precision", value["precision"]), ("_recall", value["recall"])):
                name_ = {"": "hindsight_target_pr"}.get(sub, "hindsight_target" + sub)
                for t in range(TASKS):
                    out[key(namespace, t, name_) + compat] = [v[t].item()]
            continue
        if value.ndim == 2:  # per segment / per label: (T, G)
            for t in range(TASKS):
                for g in range(value.shape[1]):
                    out[key(namespace, t, name, suffix=suffix.format(g=g)) + compat] = [value[t, g].item()]
            continue
        window_only = ("auc", "grouped_auc", "grouped_auprc")  # TorchRec reports these for the window only
        prefix = "" if name == "total_examples" else "window_" if name in window_only else "lifetime_"
        for t in range(TASKS):
            out[key(namespace, t, name, prefix=prefix) + compat] = [value[t].item()]
    return out


# ----------------------------------------------------------------------------- the table

# TorchRec metric name -> why its value differs from ours on purpose (ours is the default)
INTENDED = {
    "logloss": "TorchRec's log loss is in bits; ours in nats (`LogLoss(unit='bits')` matches)",
    "cali_free_ne": "TorchRec divides NE by the *summed* bits of the mean prediction (shrinks as 1/weight); "
    "ours is CE / CE(mean prediction) (`torchrec_scaling=True` matches)",
    "precision_session_level": "ours averages per-session precision; TorchRec pools counts (`average='micro'` "
    "matches where every weight is positive)",
    "recall_session_level": "ours averages per-session recall; TorchRec pools counts (`average='micro'` matches "
    "where every weight is positive)",
    "window_auc": "ties: TorchRec integrates row by row in sort order without grouping tied scores, so ties "
    "get arbitrary credit; ours gives them half (sklearn's value). TorchRec's AUC is window-only; this window "
    "holds every row",
    "auprc": "TorchRec's lifetime AUPRC is the AP of scores floored to 1000 bins uniform in probability (its "
    "window AUPRC is exact); ours is exact (`AUPRC(num_bins=1000, bin_space='probability')` matches)",
    "window_grouped_auc": "TorchRec averages every group, a single-class group counting 0.5; ours averages the "
    "groups holding both classes (`average_groups='all'` matches). Rows without ties (ties: the AUC row)",
    "window_grouped_auprc": "TorchRec averages every group, a single-class group counting 1 (positives only) or 0; "
    "ours averages the groups holding both classes (`average_groups='all'` matches)",
    "recall": "TorchRec counts p == threshold as both a true positive and a false negative",
    "hindsight_target_pr": "TorchRec returns `torch.Tensor(index)`, an uninitialised tensor; ours the threshold",
    "hindsight_target_recall": "TorchRec counts p == threshold as a false negative too",
}


# compatible options that differ on purpose on data with zero weights (shown, never a failure): the
# same metric on the POSITIVE-prefixed rows, where every weight is positive, must agree
COMPAT_DIFFERS = {
    name: "compat differs on purpose: a zero-weight row takes no top-k place here (it is an absent row), "
    "TorchRec ranks it like any other (docs/torchrec_parity.md); the `w>0:` row has no zero weight and agrees"
    for name in ("precision_session_level", "recall_session_level")
}


# Undefined values (a single class, zero total weight, an empty segment): ours is nan (with an
# UndefinedMetricWarning) where TorchRec returns one of its fill values: 0, 0.5 (AUC), 1 (R²) or a
# huge NE (its eta clamp). Such a task is listed in the row's note and not compared; any other nan
# on either side is a mismatch.
UNDEFINED = "undefined (ours nan + warning, TorchRec a fill value: 0, 0.5, 1 or a huge NE)"


def _undefined(theirs: float, ours: float) -> bool:
    """Ours ``nan`` where TorchRec reports a fill value for an undefined metric (an intended difference)."""
    if not math.isnan(ours):
        return False
    return math.isnan(theirs) or math.isinf(theirs) or theirs in (0.0, 0.5, 1.0) or abs(theirs) > 1e6


# rows defined the same way that still need a word
NOTES = {
    "total_examples": "rows with non-zero weight (serving) / every row (qps)",
}


def compare(theirs: dict[str, list[float]], ours: dict[str, list[float]]) -> tuple[list[str], list[str]]:
    rows = [
        "| metric | TorchRec key (task t0) | TorchRec | ours | max rel. diff (3 tasks) | note |",
        "|---|---|---|---|---|---|",
    ]
    failures = []
    for k in sorted(theirs):
        if not k.startswith(tuple(f"{ns}-t0|" for ns in {x.split("-t")[0] for x in theirs})):
            continue
        namespace, rest = k.split("-t0|")
        name = rest.removeprefix("lifetime_")
        metric_name = name.split("label_")[0] if name.startswith("multi_label") else name.rstrip("_0123456789")
        per_task = [k.replace("-t0|", f"-t{t}|") for t in range(TASKS)]
        if k not in ours:
            rows.append(
                f"| {namespace} | {_cell(k)} | {theirs[k][0]:.6g} | — | — | not compared: {_why_missing(name)} |"
            )
            continue
        note = INTENDED.get(metric_name, "")
        pairs = [(kt, theirs[kt][0], ours[kt][0]) for kt in per_task if kt in theirs and kt in ours]
        undefined = [kt for kt, a, b in pairs if _undefined(a, b)]
        diffs = [(_rel(a, b), kt) for kt, a, b in pairs if kt not in undefined]
        # _rel is never nan, so max() sees every value; the first task of the largest wins
        worst, worst_key = max(diffs, key=lambda d: d[0], default=(0.0, k))
        status = f"{worst:.1e}" if diffs else "—"
        if note:
            note = "intended: " + note
            compat_pairs = [(kt, theirs[kt][0], ours[kt + "#compat"][0]) for kt in per_task if kt + "#compat" in ours]
            undefined += [kt for kt, a, b in compat_pairs if _undefined(a, b) and kt not in undefined]
            compat = [(_rel(a, b), kt) for kt, a, b in compat_pairs if kt not in undefined]
            if compat:
                worst_compat, compat_key = max(compat, key=lambda d: d[0])
                status += f" (compat {worst_compat:.1e})"
                if worst_compat > 1e-6 and metric_name in COMPAT_DIFFERS and not namespace.startswith(POSITIVE):
                    note += "; intended: " + COMPAT_DIFFERS[metric_name]
                elif worst_compat > 1e-6:
                    failures.append(
                        f"{compat_key}: compatible option differs: TorchRec {theirs[compat_key][0]!r} vs "
                        f"ours {ours[compat_key + '#compat'][0]!r}"
                    )
        else:
            note = NOTES.get(metric_name, "")
            if worst > 1e-6:
                failures.append(f"{worst_key}: TorchRec {theirs[worst_key][0]!r} vs ours {ours[worst_key][0]!r}")
        if undefined:
            tasks = ", ".join(kt.split("|")[0].rsplit("-", 1)[1] for kt in undefined)
            note = "; ".join(n for n in (note, f"{tasks}: intended: {UNDEFINED}") if n)
        rows.append(f"| {namespace} | {_cell(k)} | {theirs[k][0]:.6g} | {ours[k][0]:.6g} | {status} | {note} |")
    return rows, failures


TIMED = [
    "ne",
    "calibration",
    "mse",
    "segmented_ne",
    "hindsight_target_pr",
    "precision_session_level",
    "multi_label_precision",
    "num_missing_labels",
    "auc",
    "auc_grouped",
]


def timing_table(theirs: dict[str, float], ours: dict[str, float]) -> list[str]:
    rows = ["| metric | TorchRec s | ours s | TorchRec / ours |", "|---|---|---|---|"]
    for name in TIMED:
        if name in theirs and name in ours:
            rows.append(f"| {name} | {theirs[name]:.4f} | {ours[name]:.4f} | {theirs[name] / ours[name]:.1f}x |")
    return rows


def _cell(k: str) -> str:
    """A key as a Markdown table cell: its ``|`` escaped."""
    return "`" + k.replace("|", "\\|") + "`"


def _why_missing(name: str) -> str:
    if name.startswith("hindsight"):
        return "see hindsight rows"
    return "time-based (examples/second); the example count is compared" if name == "qps" else "no equivalent"


def _rel(a: float, b: float) -> float:
    """Relative difference; ``nan`` against ``nan`` is 0, ``nan`` or ``inf`` against anything else is ``inf``.

    Never ``nan`` (``nan > 1e-6`` is False, and ``max`` over a list holding ``nan`` depends on its place).
    """
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


# ----------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchrec-python", default="/work/venv-torchrec-parity/bin/python")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="timing: best of this many passes per side")
    parser.add_argument("--side", choices=["torchrec", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # one side, in its own process: values, and the best of `rounds` timings
        torch.set_num_threads(1)
        data = torch.load(args.data)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            seconds: dict[str, float] = {}
            result = run_torchrec(data, seconds) if args.side == "torchrec" else run_ours(data, seconds)
            best = {k: min(v, best.get(k, math.inf)) for k, v in seconds.items()}
        Path(args.out).write_text(json.dumps({"values": result, "seconds": best}))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.pt")
        torch.save(make_data(args.batches, args.batch_size, args.seed), data_path)
        results = {}
        for side, python in (("torchrec", args.torchrec_python), ("ours", sys.executable)):
            out = os.path.join(tmp, f"{side}.json")
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            cmd = [python, __file__, "--side", side, "--data", data_path, "--out", out, "--rounds", str(args.rounds)]
            subprocess.run(cmd, check=True, env=env, cwd=tmp)
            results[side] = json.loads(Path(out).read_text())
    rows, failures = compare(results["torchrec"]["values"], results["ours"]["values"])
    print(f"TorchRec 1.9.2 vs torchmetrics_ext: {args.batches} batches x {TASKS} tasks x {args.batch_size} rows")
    print("\n".join(rows))
    print(f"\nSeconds for all updates + one compute, best of {args.rounds}, one thread per side:\n")
    print("\n".join(timing_table(results["torchrec"]["seconds"], results["ours"]["seconds"])))
    if failures:
        print("\nMISMATCHES:\n" + "\n".join(failures))
        return 1
    print("\nEvery metric defined the same way agrees to 1e-6 relative (intended differences: their compat option).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
