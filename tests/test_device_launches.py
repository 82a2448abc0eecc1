"""Kernel launches per ``update`` on the device path stay within their budget (``benchmarks/count_device_launches.py``).

On a GPU each operator that runs a kernel costs the host about 10 µs of an ``update``; CI has no
GPU, so the number of them is what it can hold to account: counted on CPU tensors through the
device path, a deterministic count (no clock). A change that adds a launch to one of these updates
fails here, to be made on purpose (and the budget raised, with the reason) or avoided.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import torchmetrics_ext as tmx

_PATH = Path(__file__).parents[1] / "benchmarks" / "count_device_launches.py"
_SPEC = importlib.util.spec_from_file_location("count_device_launches", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
launches = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(launches)

# (case, tasks, validated) -> (launches, host reads) at most
BUDGETS = {
    # a float32 copy of the scores, the labels' signs; validated: two aminmax and one read of both
    ("AUC exact", 1, True): (4, 1),
    ("AUC exact", 1, False): (2, 0),
    ("AUC exact", 3, True): (4, 1),
    ("AUC exact", 3, False): (2, 0),
    # searchsorted among the kept edges, the labels' offsets, scatter_add_ (and the tasks' offsets)
    ("AUC(num_bins=10_000)", 1, True): (5, 1),
    ("AUC(num_bins=10_000)", 1, False): (3, 0),
    ("AUC(num_bins=10_000)", 3, True): (6, 1),
    ("AUC(num_bins=10_000)", 3, False): (4, 0),
    ("AUPRC(num_bins=10_000)", 1, False): (3, 0),
    # unweighted: the label-0 count N - sum(y) is one more small kernel (NE keeps it as its own state, exact
    # near base rates of 1, where total - pos kept ~1e-16 of the total)
    ("NormalizedEntropy", 1, True): (13, 1),
    ("NormalizedEntropy", 1, False): (12, 0),
    ("Calibration", 1, True): (7, 1),
    ("Calibration", 1, False): (5, 0),
    ("CTR", 3, True): (7, 1),
    ("CTR", 3, False): (5, 0),
    # two float64 copies, the error, its square, its absolute value, four sums, the states' add
    ("WeightedMSE", 1, True): (13, 1),
    ("WeightedMSE", 1, False): (11, 0),
    # the window shares the lifetime's chunks (exact) or keeps int32 bin indices (index_add_ takes them as they are)
    ("Windowed(AUC(), 100_000)", 1, True): (4, 1),
    ("Windowed(AUC(), 100_000)", 1, False): (2, 0),
    ("Windowed(AUC(num_bins=10_000), 100_000)", 1, True): (5, 1),
    ("Windowed(AUC(num_bins=10_000), 100_000)", 1, False): (3, 0),
    ("Windowed(AUC(num_bins=10_000), 100_000)", 3, False): (4, 0),
    ("GroupedAUC", 1, True): (5, 1),
    ("GroupedAUC", 1, False): (3, 0),
    # the rows' copies (scores, relevance, ids): the ranking work runs at compute
    ("NDCG(k=10)", 1, True): (5, 1),
    ("NDCG(k=10)", 1, False): (3, 0),
    ("RecallAtK(k=10)", 1, False): (3, 0),
    # 2 tasks: the columns stacked once, validated once, NE, calibration, CTR and binned AUC
    # no pair formed and nothing sized by the data: sorts of int64 keys, scans, then per bit of N (13 at
    # N=8192) one wavelet-matrix level of about 20 launches; was 80 / 75 with three waits (two unique, a
    # pair count read by int())
    ("SessionPairwiseAUC", 1, True): (359, 1),
    ("SessionPairwiseAUC", 1, False): (354, 0),
    ("module: NE, calibration, CTR, binned AUC", 2, True): (22, 1),
    ("module: NE, calibration, CTR, binned AUC", 2, False): (19, 0),
    # NE and segmented NE: the segment ids' bounds come back in the step's one read (none unvalidated); the
    # per-sample terms of NE's four sums, one scatter_add_ each
    ("module: NE, segmented NE", 2, True): (32, 1),
    ("module: NE, segmented NE", 2, False): (28, 0),
}


@pytest.mark.parametrize(("case", "tasks", "validated"), list(BUDGETS), ids=lambda v: str(v))
def test_device_path_update_stays_within_its_launch_budget(case, tasks, validated):
    most, reads = BUDGETS[case, tasks, validated]
    counted, read, ops, waits = launches.count(tmx, case, validated, tasks if tasks != 2 else 1, 8192)
    assert counted <= most, f"{case}: {counted} launches per update (budget {most}): {ops}"
    assert read == reads, f"{case}: {read} host reads per update, expected {reads}"
    # beyond the reads: no operator whose output size depends on the data (unique, nonzero, masks) nor a
    # scalar read by int()/float(), each a wait on a device that CPU tensors hide (issue 14)
    assert waits == 0, f"{case}: {waits} operators wait for the device per update: {ops}"


def test_every_case_of_the_script_has_a_budget():
    for name in launches.CASES:
        assert any(case == name for case, _, _ in BUDGETS), name
