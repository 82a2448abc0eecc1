"""SessionPairwiseAUC's pair-free kernel against the plain-Python port of TorchRec's pair loop, and its follow-ups.

The kernel counts each row's partners by score (a wavelet matrix over within-session score ranks) instead
of forming pairs; here it meets ``_tr_batch`` (tests/test_session_pairwise_auc.py, a loop over every pair
written from TorchRec's formula) on drawn batches: score ties, equal labels and labels within 1e-6, one-row
sessions, zero weights, negative and huge ids, low-precision scores, both kernel paths. Also: ``sessions``
missing with ``validate_args=False`` (a named error), and ``from_torchrec_config`` building the metric
under TorchRec's keys. ``TMX_SPAUC_EXAMPLES`` raises the number of drawn batches (default 60).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.test_session_pairwise_auc import _reference, _tr_batch
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.functional import _session_pairwise_cpu as CPU
from torchmetrics_ext.functional import session_pairwise as SP
from torchmetrics_ext.utilities.device import force_device_path

EXAMPLES = int(os.environ.get("TMX_SPAUC_EXAMPLES", "60"))
# labels with exact ties, a pair within 1e-6 (1 and 1 + 4e-7: no pair), one just beyond it, negatives
LABELS = [0.0, 1.0, 1.0 + 4e-7, 1.0 + 2e-6, 2.5, -3.0]
SCORES = [-1.0, 0.0, 0.1, 0.1 + 1e-9, 0.5, 2.0]


# the kernel's three routes: the device path (forced on the CPU), and the CPU path's two ways to the sums,
# every pair compared (in blocks of the default size or of 5 pairs) or the pairs counted by score
PATHS = ["device", "cpu-pairs", "cpu-pairs-blocks-of-5", "cpu-counts"]


@contextlib.contextmanager
def on_path(path):
    """Run the kernel on one route, whatever the batch's size would choose."""
    per_row_bit = {"cpu-pairs": 10**9, "cpu-pairs-blocks-of-5": 10**9, "cpu-counts": -1}.get(
        path, CPU.PAIRS_PER_ROW_BIT
    )
    block = 5 if path == "cpu-pairs-blocks-of-5" else CPU.PAIR_BLOCK
    with (
        force_device_path(path == "device"),
        mock.patch.object(CPU, "PAIRS_PER_ROW_BIT", per_row_bit),
        mock.patch.object(CPU, "PAIR_BLOCK", block),
    ):
        yield


@st.composite
def batches(draw):
    n = draw(st.integers(1, 40))
    tasks = draw(st.sampled_from([None, 2]))
    shape = (n,) if tasks is None else (tasks, n)
    size = n if tasks is None else tasks * n
    ids = draw(st.sampled_from([[0, 1, 2], [-7, 5, 2**62], [3]]))  # few sessions: some of one row, some long
    # sessions shared by the tasks, or each task's own ids ((T, N))
    rows = n if tasks is None or draw(st.booleans()) else tasks * n
    sessions = np.array(draw(st.lists(st.sampled_from(ids), min_size=rows, max_size=rows)), dtype=np.int64)
    sessions = sessions.reshape(-1, n) if rows > n else sessions
    labels = np.array(draw(st.lists(st.sampled_from(LABELS), min_size=size, max_size=size))).reshape(shape)
    scores = np.array(draw(st.lists(st.sampled_from(SCORES), min_size=size, max_size=size))).reshape(shape)
    weights = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=n, max_size=n)))
    return {"preds": scores, "target": labels, "sessions": sessions, "weights": weights}, tasks


def _sums(batch, tasks, options):
    """The port's five sums per task (the batch counted where some weight is positive)."""
    p, y = np.atleast_2d(batch["preds"]), np.atleast_2d(batch["target"])
    s = np.broadcast_to(np.atleast_2d(batch["sessions"]), p.shape)
    out = []
    for t in range(1 if tasks is None else tasks):
        correct, total, pairs, rows = _tr_batch(p[t], y[t], batch["weights"], s[t], **options)
        out.append([correct, total, pairs, rows, float((batch["weights"] > 0).any())])
    return np.array(out)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=batches(),
    options=st.sampled_from([{}, {"rank_order_label": True}, {"weight_pairs": False}]),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
    path=st.sampled_from(PATHS),
)
def test_kernel_sums_equal_the_pair_loop(drawn, options, dtype, path):
    batch, tasks = drawn
    preds = torch.tensor(batch["preds"]).to(dtype)
    batch = dict(batch, preds=preds.double().numpy())  # the port sees the scores as cast (ties the cast makes)
    inputs = {
        "preds": preds.view(-1, preds.shape[-1]),
        "target": torch.tensor(batch["target"]).view(-1, preds.shape[-1]),
        "sessions": torch.tensor(batch["sessions"]).expand(preds.view(-1, preds.shape[-1]).shape),
        "weights": torch.tensor(batch["weights"]).unsqueeze(0),
    }
    with on_path(path):
        ours = SP._pairwise_update(**inputs, **{"rank_order_label": False, "weight_pairs": True, **options})
    expected = _sums(batch, tasks, options)
    np.testing.assert_allclose(torch.stack(ours, -1).numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-ids", "own-ids"])
def test_many_sessions_per_task_match_the_loop_on_every_route(path, shared):
    """Two tasks of 300 rows in ~210 sessions each: more distinct ids in all (own ids) than rows per task."""
    rng = np.random.default_rng(11)
    n, tasks = 300, 2
    pool = rng.integers(-(10**12), 10**12, (1 if shared else tasks, 400))
    pool[1:, :40] = pool[0, :40]  # own ids: 40 of each task's 400 in both tasks
    sessions = np.ascontiguousarray(pool[:, rng.integers(0, 400, n)])
    assert shared or len(np.unique(sessions)) > n + 1
    batch = {
        "preds": rng.random((tasks, n)).round(2),
        "target": rng.integers(0, 4, (tasks, n)).astype(np.float64),
        "sessions": sessions[0] if shared else sessions,
        "weights": rng.choice([0.0, 1.0, 2.5], n),
    }
    with on_path(path):
        ours = SP._pairwise_update(
            torch.tensor(batch["preds"]),
            torch.tensor(batch["target"]),
            torch.tensor(sessions).expand(tasks, n),
            torch.tensor(batch["weights"]).unsqueeze(0),
            False,
            True,
        )
    np.testing.assert_allclose(torch.stack(ours, -1).numpy(), _sums(batch, tasks, {}), rtol=1e-12, atol=1e-12)


def test_the_cpu_route_is_chosen_by_the_pairs_per_row_and_bit():
    """Short sessions compare their pairs; one long session of distinct labels (many pairs per row) counts them."""
    rng = np.random.default_rng(2)

    def route(sessions, labels):
        n = len(labels)
        rows = CPU.cpu_sorted_rows(
            torch.tensor(labels, dtype=torch.float64).view(1, n),
            torch.tensor(sessions).view(1, n),
            torch.ones(1, n, dtype=torch.bool),
            SP.LABEL_GAP,
        )
        takes, num_pairs = CPU.takes_pairs(rows[2], rows[3], rows[4])
        assert num_pairs == sum(  # the pairs of distinct labels, counted per session
            int((labels[sessions == s][:, None] > labels[sessions == s][None, :]).sum()) for s in np.unique(sessions)
        )
        return takes, num_pairs / n / max(1, (int(np.unique(sessions, return_counts=True)[1].max()) - 1).bit_length())

    short = route(np.repeat(np.arange(100), 4), rng.integers(0, 5, 400).astype(float))
    long = route(np.zeros(400, dtype=np.int64), rng.permutation(400).astype(float))
    assert short[0] and short[1] <= CPU.PAIRS_PER_ROW_BIT
    assert not long[0] and long[1] > CPU.PAIRS_PER_ROW_BIT


def test_one_row_sessions_equal_labels_and_zero_weights_form_no_pair():
    p, y = torch.tensor([0.3, 0.7, 0.1, 0.9, 0.4]), torch.tensor([1.0, 0.0, 2.0, 2.0, 1.0])
    sums = SP._pairwise_update(
        p.view(1, -1), y.view(1, -1), torch.tensor([[1, 2, 3, 3, 4]]), torch.tensor([[1.0, 1, 1, 1, 0]]), False, True
    )
    # sessions of one row (1, 2), one of two equal labels (3), one row of weight 0 (4): no pair, one batch
    assert [s.item() for s in sums] == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_sessions_of_hundreds_of_rows_and_float16_scores_match_the_loop():
    """Long sessions (ranks of 8 bits), scores cast to float16 (ties the cast makes count one half)."""
    rng = np.random.default_rng(3)
    n = 600
    sessions = rng.choice([4, -2, 11], n, p=[0.5, 0.45, 0.05])
    y = rng.integers(0, 6, n) / 2
    p = torch.tensor(rng.random(n)).half()
    w = rng.choice([0.0, 1.0, 2.5], n, p=[0.1, 0.6, 0.3])
    expected = _reference([{"preds": p.double().numpy(), "target": y, "sessions": sessions, "weights": w}])
    value = tmf.session_pairwise_auc(p, torch.tensor(y), torch.tensor(sessions), torch.tensor(w))
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_count_below_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, bits = 50, 4
    values = rng.integers(0, 2**bits, n)
    cuts = np.sort(rng.integers(0, n + 1, (3, 20)), axis=0)  # two ranges per query, end to end
    threshold = rng.integers(0, 2**bits, 20)
    below, level = SP._count_below(torch.tensor(values), torch.tensor(cuts), torch.tensor(threshold), bits)
    for r in range(2):
        for q in range(20):
            part = values[cuts[r, q] : cuts[r + 1, q]]
            assert below[r, q] == (part < threshold[q]).sum() and level[r, q] == (part == threshold[q]).sum()


def test_int_keys_keep_the_order_and_the_ties_of_floats():
    x = torch.tensor(
        [0.0, -0.0, 1e-310, -1e-310, 1.0, -1.0, 1e300, -1e300, float("inf"), -float("inf"), 0.5, 0.5, 2.0**-1074],
        dtype=torch.float64,
    )
    keys = SP._int_keys(x)
    xs, ks = x.numpy(), keys.numpy()
    for i in range(len(xs)):
        for j in range(len(xs)):
            assert (xs[i] < xs[j]) == (ks[i] < ks[j]) and (xs[i] == xs[j]) == (ks[i] == ks[j]), (xs[i], xs[j])


def test_count_at_most_is_searchsorted_right():
    rng = np.random.default_rng(5)
    keys = torch.sort(torch.tensor(rng.integers(-5, 5, 40))).values
    queries = torch.tensor(rng.integers(-7, 7, 30))
    assert torch.equal(SP._count_at_most(keys, queries), torch.searchsorted(keys, queries, right=True))


# ----------------------------------------------------------------------------- sessions missing, unvalidated

_SESSION_METRICS = [
    lambda va: tmx.SessionPairwiseAUC(validate_args=va),
    lambda va: tmx.SessionPrecisionAtK(k=2, validate_args=va),
    lambda va: tmx.SessionRecallAtK(k=2, validate_args=va),
]
_FUNCTIONS = [
    lambda s, va: tmf.session_pairwise_auc(torch.rand(4), torch.tensor([0.0, 1, 0, 1]), s, validate_args=va),
    lambda s, va: tmf.session_precision_at_k(torch.rand(4), torch.tensor([0.0, 1, 0, 1]), s, k=2, validate_args=va),
    lambda s, va: tmf.session_recall_at_k(torch.rand(4), torch.tensor([0.0, 1, 0, 1]), s, k=2, validate_args=va),
]


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("make", _SESSION_METRICS, ids=["pairwise_auc", "precision", "recall"])
def test_missing_sessions_is_a_named_type_error_even_unvalidated(make, validate):
    """Was an AttributeError ('NoneType' object has no attribute 'ndim') with validate_args=False."""
    metric = make(validate)
    metric.update(torch.rand(4), torch.tensor([0.0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    snapshot = H._state_snapshot(metric)
    for method in ("update", "forward"):
        with pytest.raises(TypeError, match="`sessions`"):
            getattr(metric, method)(torch.rand(4), torch.tensor([0.0, 1, 0, 1]), None)
        H.assert_same_state(metric, snapshot)


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("call", _FUNCTIONS, ids=["pairwise_auc", "precision", "recall"])
@pytest.mark.parametrize("sessions", [None, [0, 0, 1, 1]], ids=["none", "list"])
def test_functions_name_sessions_that_are_no_tensor(call, validate, sessions):
    with pytest.raises(TypeError, match="`sessions`"):
        call(sessions, validate)


# ----------------------------------------------------------------------------- from_torchrec_config


def _config(arguments=None, tasks=(0, 1)):
    return {
        "rec_tasks": [
            {"name": "click", "label_name": "y", "prediction_name": "p", "weight_name": "w"},
            {"name": "buy", "label_name": "by", "prediction_name": "bp", "weight_name": "w"},
        ],
        "rec_metrics": {
            "session_pairwise_auc": {"rec_task_indices": list(tasks), "window_size": 60, "arguments": arguments or {}}
        },
    }


def _steps(rng, column="session_id"):
    out = []
    for _ in range(3):
        n = 30
        ids = rng.integers(0, 6, n)
        out.append(
            {
                "p": torch.tensor(rng.random(n).round(1)),
                "y": torch.tensor(rng.choice(LABELS, n)),
                "bp": torch.tensor(rng.random(n).round(1)),
                "by": torch.tensor(rng.integers(0, 3, n).astype(np.float64)),
                "w": torch.tensor(rng.choice([0.0, 1.0, 2.0], n)),
                column: torch.tensor(ids),
            }
        )
    return out


def _batches(steps, task, column="session_id"):
    p, y = ("p", "y") if task == "click" else ("bp", "by")
    return [
        {"preds": s[p].numpy(), "target": s[y].numpy(), "sessions": s[column].numpy(), "weights": s["w"].numpy()}
        for s in steps
    ]


@pytest.mark.parametrize(
    "arguments",
    [{}, {"report_batch_coverage": True, "rank_order_label": True}, {"weight_pairs": False, "session_key": "sid"}],
    ids=["defaults", "coverage-lower-first", "unit-pairs-own-column"],
)
def test_from_torchrec_config_reports_torchrecs_keys(arguments):
    """TorchRec's keys ``session_pairwise_auc-{task}|{lifetime,window}_{name}``, values of the pair loop."""
    column = arguments.get("session_key", "session_id")
    module = tmx.RecMetricModule.from_torchrec_config(_config(arguments))
    steps = _steps(np.random.default_rng(21), column)
    for step in steps:
        module.update(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        values = module.compute()
    options = {k: v for k, v in arguments.items() if k in ("rank_order_label", "weight_pairs")}
    coverage = bool(arguments.get("report_batch_coverage"))
    expected_keys = set()
    for task in ("click", "buy"):
        seen = _batches(steps, task, column)
        # the window: 60 rows, the newest two steps of 30
        for part, batches_ in (("lifetime", seen), ("window", seen[-2:])):
            want = _reference(batches_, coverage=coverage, **options)
            want = want if coverage else {"session_pairwise_auc": want}
            for entry, value in want.items():
                key = f"session_pairwise_auc-{task}|{part}_{entry}"
                expected_keys.add(key)
                assert float(values[key]) == pytest.approx(float(value), rel=1e-12, nan_ok=True), key
    assert set(values) == expected_keys


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"score_key": "s"}, "score_key='s'.*prediction_name"),
        ({"pairwise_weight_key": "pw"}, "pairwise_weight_key='pw'.*weight_name"),
        ({"remove_zero_weight_from_pair": False}, "remove_zero_weight_from_pair=True"),
        ({"session_key": ""}, "session_key"),
        ({"session_key": 3}, "session_key"),
        ({"weight_pairs": 1}, "weight_pairs"),
        ({"top_threshold": 3}, "unsupported arguments"),
    ],
)
def test_from_torchrec_config_refuses_what_it_cannot_compute(arguments, match):
    with pytest.raises(ValueError, match=match):
        tmx.RecMetricModule.from_torchrec_config(_config(arguments))


def test_another_metric_named_session_pairwise_auc_is_refused_under_torchrec_keys():
    """It would be logged as ``session_pairwise_auc-t|lifetime_session_pairwise_auc``, TorchRec's key for another value."""
    with pytest.raises(ValueError, match="TorchRec's key for its 'session_pairwise_auc' metric"):
        tmx.RecMetricModule(["t"], {"session_pairwise_auc": "regression_auc"}, key_style="torchrec", throughput=False)
