"""The Hugging Face adapters inside ``transformers.Trainer.evaluate()`` on 2 real gloo ranks (``torchrun``, CPU).

One ``python -m torch.distributed.run --nproc-per-node 2 tests/helpers/hf_ddp_run.py`` run covers
every case (the ranking adapter with index and relevance labels, the pointwise adapter x the Trainer's whole-array, batches-kept-apart and
``batch_eval_metrics=True`` modes) over eval sets whose size is no multiple of ``2 x 4`` (the last
step's batches are completed with duplicated samples that ``gather_for_metrics`` drops; ranking
batches are cut to their longest list, so ranks and batches differ in width and the Trainer pads
them with -100). On every rank the values must equal (a) a one-process Trainer over the same data
and (b) the independent references of ``tests/test_huggingface.py`` (the seed's numpy Recall/MRR,
scikit-learn) on the Trainer's own gathered ``predict()`` output, whose labels must be the eval
set's, each row once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from sklearn.metrics import log_loss, roc_auc_score

from tests.helpers import hf_ddp_run
from tests.test_huggingface import _ignored_reference, _sigmoid, seed_reference
from tests.test_huggingface_columns import COUNTRIES, column_reference
from tests.test_huggingface_label_names import _gauc, _ne

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "hf_ddp_run.py"
WORLD = 2
CASES = list(hf_ddp_run.cases())


def _killed_by_a_signal(stderr: str) -> bool:
    """Whether torchrun reports a rank ended by a signal other than its own SIGTERM to the others."""
    codes = [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", stderr)]
    return any(code < 0 and code != -signal.SIGTERM for code in codes)


def launch(tmp_path_factory: pytest.TempPathFactory, world: int) -> list[dict[str, Any]]:
    """Each rank's ``evaluate()`` values and ``predict()`` output, from one torchrun of ``world`` gloo ranks."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("SKIPPED LOUDLY: torch.distributed with the gloo backend is not available in this build")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):
        out = tmp_path_factory.mktemp("hf-ddp")  # a fresh folder: nothing of a failed run is read
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
        command += [str(SCRIPT), "--out", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=out, env=env, timeout=300)
        except OSError as error:  # no interpreter to start torchrun with
            pytest.skip(f"SKIPPED LOUDLY: torchrun could not start: {error}")
        if attempt or done.returncode == 0 or not _killed_by_a_signal(done.stderr):
            break
        # A rank that died by a signal (a C++ abort, not a Python error: those exit with 1) is run again
        # once, loudly; values are read only from a run whose ranks all finished.
        warnings.warn(f"torchrun's ranks died by a signal; running them again:\n{done.stderr[-2000:]}", stacklevel=1)
    no_group = sorted(out.glob("no-group*"))
    if done.returncode != 0 and (no_group or "ChildFailedError" not in done.stderr):
        # the launcher failed before running the ranks, or the ranks could not start their process group
        why = no_group[0].read_text() if no_group else done.stderr
        pytest.skip(f"SKIPPED LOUDLY: torchrun could not start {world} gloo ranks:\n{why[-3000:]}")
    assert done.returncode == 0, done.stderr[-6000:]
    reports = []
    for rank in range(world):
        report = json.loads((out / f"rank{rank}.json").read_text())
        assert (report["world_size"], report["backend"]) == (world, "gloo"), report  # never silently one process
        for name in CASES:
            with np.load(out / f"rank{rank}-{name}.npz") as arrays:
                report[name] = {"predictions": arrays["predictions"], "labels": arrays["labels"]}
        reports.append(report)
    return reports


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Each rank's ``evaluate()`` values and ``predict()`` output, from one torchrun of 2 gloo ranks."""
    return launch(tmp_path_factory, WORLD)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same cases in this process: one Trainer, no process group."""
    return evaluate_in_one_process(tmp_path_factory)


def evaluate_in_one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each case's ``evaluate()`` values and gathered ``predict()`` output in this process (no process group)."""
    out = tmp_path_factory.mktemp("hf-one")
    results = {}
    for name, case in hf_ddp_run.cases().items():
        run = hf_ddp_run.trainer(case, str(out), ddp=False)
        prediction = run.predict(case["data"])
        results[name] = {
            "metrics": hf_ddp_run.ours(run.evaluate()),
            "predictions": hf_ddp_run.joined(prediction.predictions),
            "labels": hf_ddp_run.joined(prediction.label_ids),
            "data": case["data"],
        }
    return results


def _reference(name: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The independent references on the Trainer's gathered predictions (``eval_`` keys)."""
    if name.startswith("columns"):  # columns: label, weight, country, session id
        return column_reference(predictions, labels)
    if name.startswith("weighted"):  # columns: label, weight, user id
        y, w, users = labels[:, 0].astype(np.int64), labels[:, 1], labels[:, 2].astype(np.int64)
        p = _sigmoid(predictions.reshape(-1).astype(np.float64))
        return {
            "eval_ne": _ne(y, p, w),
            "eval_log_loss": log_loss(y, p, sample_weight=w),
            "eval_auc": roc_auc_score(y, p, sample_weight=w),
            "eval_gauc": _gauc(y, p, users, w),
            "eval_sum_weights": float(w.sum()),
        }
    if not name.startswith("pointwise"):
        if name.startswith("relevance"):  # the relevance row's 1 is the relevant candidate
            labels = np.argmax(labels == 1, axis=1)
        # the model marks padded candidates -10 (the seed's value); the Trainer pads batches and ranks
        # of other widths with -100: padding too, as the seed's -10
        scores = np.where(predictions == -100, -10.0, predictions)
        return {f"eval_{key}": value for key, value in seed_reference(scores, labels).items()}
    expected = {}
    for i, task in enumerate(("click", "conversion")):
        values = _ignored_reference(_sigmoid(predictions[:, i].astype(np.float64)), labels[:, i], -100)
        for metric in hf_ddp_run.POINTWISE:
            expected[f"eval_{metric}/{task}"] = values[metric]
    return expected


def _rows(name: str, labels: np.ndarray) -> np.ndarray:
    """The eval set's own labels in the gathered ones: a relevance row as the index of its relevant candidate."""
    if name.startswith(("weighted", "columns")):
        return labels[:, 0]
    return np.argmax(labels == 1, axis=1) if name.startswith("relevance") else labels


@pytest.mark.ddp
@pytest.mark.parametrize("name", CASES)
def test_trainer_evaluate_on_two_ranks_equals_one_process_and_the_references(ranks, one_process, name):
    check_case(ranks, one_process, name)


def check_case(ranks: list[dict[str, Any]], one_process: dict[str, dict[str, Any]], name: str) -> None:
    """Every rank's values of case ``name`` equal the one-process Trainer's and the references."""
    single = one_process[name]
    dataset = single["data"]
    truth = (dataset.labels if name.split("-")[0] in ("ranking", "relevance") else dataset.y).numpy()
    assert len(truth) % (len(ranks) * hf_ddp_run.BATCH) != 0  # the last step is uneven: duplicates to drop
    reference = _reference(name, single["predictions"], single["labels"])
    np.testing.assert_array_equal(_rows(name, single["labels"]), truth)
    for rank, report in enumerate(ranks):
        got = report["metrics"][name]
        # (b) the independent references, on this rank's own gathered predictions
        labels = _rows(name, report[name]["labels"])
        np.testing.assert_array_equal(labels, truth, err_msg=f"rank {rank}: rows dropped or doubled")
        ranked = _reference(name, report[name]["predictions"], report[name]["labels"])
        assert set(got) == set(ranked), (rank, sorted(got))
        for key, value in ranked.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (rank, key)
            assert got[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-12), (rank, key)
        # (a) the one-process Trainer, and a second evaluation (nothing carried over)
        assert got == pytest.approx(single["metrics"], rel=1e-9, abs=1e-12), rank
        assert report["metrics"][name + "/again"] == got, rank
    if name.startswith("columns"):
        assert len([key for key in reference if key.startswith("eval_segmented_ne.")]) == COUNTRIES
    elif name.startswith("weighted"):
        assert reference["eval_sum_weights"] == pytest.approx(dataset.w.double().sum().item(), rel=1e-6)  # rows once
    elif not name.startswith("pointwise"):
        assert 0 < reference["eval_Recall@5"] < reference["eval_Recall@100"]  # the cutoffs matter on this data
        if "streamed" not in name:  # (streamed lists keep one width: accelerate dispatches them from rank 0)
            assert (ranks[0][name]["predictions"] == -100).any()  # the Trainer padded batches of other widths
        if name.startswith("relevance"):
            assert (ranks[0][name]["labels"] == -100).any()  # ... and their relevance rows
    else:
        assert reference["eval_sum_weights/click"] == len(truth)  # every row once, none of the duplicates
        assert 0 < reference["eval_sum_weights/conversion"] < len(truth)  # -100 labels left out of their task


def test_only_a_rank_ended_by_a_signal_of_its_own_reruns_the_launch():
    aborted = "rank : 1\n  exitcode  : -15 (pid: 4649)  (SIGTERM)\n rank : 0\n  exitcode  : -6 (pid: 4648)  (SIGABRT)"
    assert _killed_by_a_signal(aborted)
    assert not _killed_by_a_signal("exitcode  : 1 (pid: 4648)\n exitcode  : -15 (pid: 4649)  (SIGTERM)")
    assert not _killed_by_a_signal("Traceback (most recent call last): ValueError")
