"""SessionPairwiseAUC / session_pairwise_auc against a plain-Python port of newer TorchRec's formula.

``_tr_batch`` is written here from reading TorchRec's ``torchrec/metrics/session_pairwise_auc.py``
(commit 5d87ca0e): every unordered pair ``i < j`` of one session, both weights non-zero, labels
at least 1e-6 apart; concordant when ``(p_i - p_j)(y_i - y_j) > 0`` (labels negated with
``rank_order_label``), a score tie one half; pair weight ``w_i + w_j`` (or 1); correct and total
pair weight summed over the sessions of each batch; TorchRec's no-pair 0.5 replaced by our ``nan``.
Its coverage counts: the eligible pairs and the rows in at least one, averaged over the batches.
It loops over rows in Python; nothing here calls the package's kernels.
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from tests.helpers import tester as H
from tests.helpers import window as W
from torchmetrics_ext import UndefinedMetricWarning
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.registry import lookup

SEEDS = range(int(os.environ.get("TMX_SPAUC_SEEDS", "4")))


# ----------------------------------------------------------------------------- the reference


def _tr_batch(p, y, w, sessions, rank_order_label=False, weight_pairs=True):
    """One batch of one task (1-D numpy arrays): (correct, total, pair count, rows in a pair)."""
    correct = total = 0.0
    pairs, rows = 0, set()
    n = len(p)
    for i in range(n):
        for j in range(i + 1, n):
            if sessions[i] != sessions[j] or not (w[i] * w[j] > 0):
                continue
            dy = float(y[i]) - float(y[j])
            dy = -dy if rank_order_label else dy
            if abs(dy) < 1e-6:
                continue
            dp = float(p[i]) - float(p[j])
            credit = 1.0 if dp * dy > 0 else 0.5 if dp == 0 else 0.0
            weight = float(w[i]) + float(w[j]) if weight_pairs else 1.0
            correct += credit * weight
            total += weight
            pairs += 1
            rows.update((i, j))
    return correct, total, pairs, len(rows)


def _reference(batches, num_tasks=None, coverage=False, **options):
    """``batches``: list of dicts of numpy arrays (``preds``, ``target``: (N,) or (T, N); ``sessions``; ``weights``)."""
    tasks = 1 if num_tasks is None else num_tasks
    sums = np.zeros((tasks, 5))
    for b in batches:
        p, y = np.atleast_2d(b["preds"]), np.atleast_2d(b["target"])
        s = np.broadcast_to(np.atleast_2d(b["sessions"]), p.shape)
        w = np.ones(p.shape) if b.get("weights") is None else np.broadcast_to(np.atleast_2d(b["weights"]), p.shape)
        for t in range(tasks):
            if p.shape[-1] == 0 or not (w[t] > 0).any():
                continue  # a batch without a row of weight counts no batch (TorchRec counts every update)
            sums[t, :4] += _tr_batch(p[t], y[t], w[t], s[t], **options)
            sums[t, 4] += 1
    with np.errstate(all="ignore"):
        auc = np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)
        per_batch = [np.where(sums[:, 4] > 0, sums[:, k] / np.maximum(sums[:, 4], 1), 0.0) for k in (2, 3)]
    one = (lambda a: a[0]) if num_tasks is None else (lambda a: a)
    if not coverage:
        return one(auc)
    return {
        "session_pairwise_auc": one(auc),
        "valid_pairs_per_batch": one(per_batch[0]),
        "effective_training_examples_per_batch": one(per_batch[1]),
    }


def _random_batch(rng, num_tasks=None, n=None, task_sessions=False, first_id=0):
    """Sessions of 1 to 12 rows (some of one label), graded labels and scores with ties, ~15% zero weights."""
    n = int(rng.integers(20, 70)) if n is None else n
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(1, 13)))
    lengths[-1] -= sum(lengths) - n
    ids = first_id + rng.permutation(len(lengths) * 3)[: len(lengths)]  # not sorted, not contiguous
    sessions = np.repeat(ids, lengths)
    order = rng.permutation(n)  # rows of a session need not be adjacent
    sessions = sessions[order]
    shape = (n,) if num_tasks is None else (num_tasks, n)
    y = rng.choice([0.0, 1.0, 1.0, 2.0, 3.5, 1.0000004], shape)  # 1.0000004: within 1e-6 of 1
    p = rng.choice(np.round(np.linspace(0.05, 0.95, 9), 2), shape)
    w = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], shape, p=[0.15, 0.2, 0.35, 0.2, 0.1])
    if task_sessions and num_tasks is not None:
        sessions = np.stack([rng.permutation(sessions) for _ in range(num_tasks)])
    return {"preds": p, "target": y, "sessions": sessions, "weights": w}


def _torch(batch, dtype=torch.float64):
    out = {k: torch.tensor(v) for k, v in batch.items() if v is not None}
    out["preds"] = out["preds"].to(dtype)
    return out


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kwargs)


def _close(actual, expected, rtol=1e-12):
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            np.testing.assert_allclose(actual[key].numpy(), expected[key], rtol=rtol, atol=1e-12, err_msg=key)
    else:
        np.testing.assert_allclose(actual.numpy(), expected, rtol=rtol, atol=1e-12)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "options", [{}, {"rank_order_label": True}, {"weight_pairs": False}], ids=["default", "lower-first", "unit-pairs"]
)
@pytest.mark.parametrize("tasks", [None, 3, "3-own-sessions"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_batches_match_torchrecs_formula(seed, tasks, options):
    """Several batches (ids reused across batches: other sessions), ties, zero weights, single rows, one-label sessions."""
    rng = np.random.default_rng([7, seed])
    num_tasks = None if tasks is None else 3
    batches = [
        _random_batch(rng, num_tasks, task_sessions=tasks == "3-own-sessions") for _ in range(int(rng.integers(1, 5)))
    ]
    metric = tmx.SessionPairwiseAUC(
        **({"num_tasks": num_tasks} if num_tasks else {}), report_batch_coverage=True, **options
    )
    for b in batches:
        metric.update(**_torch(b))
    _close(_quiet(metric.compute), _reference(batches, num_tasks, coverage=True, **options))
    # the functional twin on one batch; forward's batch value is the same batch's
    one = _torch(batches[-1])
    _close(_quiet(tmf.session_pairwise_auc, **one, **options), _reference(batches[-1:], num_tasks, **options))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_cpu_and_device_paths_count_the_same_pairs(seed):
    """The CPU path's passes per bit of the longest session's ranks, the device path's per bit of N: same sums.

    Sessions of 1 to 40 rows beside one of 90 (ranks of 7 bits against N's 8), two tasks with their own ids.
    """
    from torchmetrics_ext.utilities.device import force_device_path

    rng = np.random.default_rng([8, seed])
    batch = _random_batch(rng, 2, n=200, task_sessions=True)
    batch["sessions"][:, :90] = -5  # one long session per task (ids may be negative)
    expected = _reference([batch], 2, coverage=True)
    for forced in (False, True):
        metric = tmx.SessionPairwiseAUC(2, report_batch_coverage=True)
        with force_device_path(forced):
            metric.update(**_torch(batch))
        _close(_quiet(metric.compute), expected)


def _numpy_large_reference(p, y, w, sessions):
    """The same formula per session with numpy broadcasting (for sessions of thousands of rows)."""
    correct = total = 0.0
    for sid in np.unique(sessions):
        r = sessions == sid
        ps, ys, ws = p[r], y[r], w[r]
        dy, dp = ys[:, None] - ys[None, :], ps[:, None] - ps[None, :]
        valid = np.triu(np.ones(dy.shape, dtype=bool), 1) & (np.abs(dy) >= 1e-6) & (ws[:, None] * ws[None, :] > 0)
        pw = np.where(valid, ws[:, None] + ws[None, :], 0.0)
        correct += (pw * ((dp * dy > 0) + 0.5 * (dp == 0))).sum()
        total += pw.sum()
    return correct / total


def test_a_session_of_thousands_of_rows_next_to_small_ones():
    """1,500 rows in one session (about 1.1 million pairs, none formed) beside sessions of 3 rows."""
    rng = np.random.default_rng(9)
    sessions = np.concatenate([np.zeros(1500, dtype=np.int64), np.repeat(np.arange(1, 101), 3)])
    n = sessions.size
    p, y = rng.random(n).round(3), rng.integers(0, 5, n).astype(np.float64)
    w = rng.choice([0.0, 1.0, 2.0], n, p=[0.1, 0.6, 0.3])
    value = tmf.session_pairwise_auc(torch.tensor(p), torch.tensor(y), torch.tensor(sessions), torch.tensor(w))
    assert value.item() == pytest.approx(_numpy_large_reference(p, y, w, sessions), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_input_dtypes(dtype):
    """Scores, labels and weights of each floating dtype: the reference on the values as cast."""
    rng = np.random.default_rng(10)
    batch = _random_batch(rng, 2, n=60)
    batch["preds"] = batch["preds"] + rng.normal(0, 1e-3, batch["preds"].shape)  # ties only where the cast makes them
    cast = {k: torch.tensor(v) for k, v in batch.items()}
    cast.update({k: cast[k].to(dtype) for k in ("preds", "target", "weights")})
    expected = _reference([{k: v.double().numpy() for k, v in cast.items()}], 2)
    metric = tmx.SessionPairwiseAUC(2)
    metric.update(**cast)
    _close(metric.compute(), expected)
    assert metric.compute().dtype == torch.float64


def test_integer_and_bool_labels_and_integer_weights():
    p = torch.tensor([0.3, 0.1, 0.7, 0.2, 0.9])
    s = torch.tensor([4, 4, 4, 9, 9])
    y = np.array([1, 0, 2, 1, 0])
    expected = _reference(
        [{"preds": p.numpy(), "target": y, "sessions": s.numpy(), "weights": np.array([1, 2, 1, 3, 1])}]
    )
    value = tmf.session_pairwise_auc(p, torch.tensor(y), s, torch.tensor([1, 2, 1, 3, 1]))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    bools = tmf.session_pairwise_auc(p, torch.tensor(y > 0), s)
    assert bools.item() == pytest.approx(_reference([{"preds": p.numpy(), "target": y > 0, "sessions": s.numpy()}]))


def test_hand_example():
    """Session 0: (2 over 0) right, (2 over 1) wrong, (1 over 0) right; session 1: both pairs right; 4 of 5."""
    preds = torch.tensor([0.9, 0.2, 0.4, 0.3, 0.8, 0.5])
    target = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    assert tmf.session_pairwise_auc(preds, target, torch.tensor([0, 0, 0, 1, 1, 1])).item() == pytest.approx(0.8)
    # one session of all six rows: 13 pairs, the cross-session ones too (0.3 vs 0.9/0.4...)
    one = tmf.session_pairwise_auc(preds, target, torch.zeros(6, dtype=torch.long)).item()
    assert one == pytest.approx(
        _reference([{"preds": preds.numpy(), "target": target.numpy(), "sessions": np.zeros(6)}])
    )


def test_labels_closer_than_1e_6_make_no_pair_and_huge_labels_still_pair():
    p = torch.tensor([0.2, 0.9, 0.5, 0.1])
    with pytest.warns(UndefinedMetricWarning, match="SessionPairwiseAUC|session_pairwise_auc"):
        assert math.isnan(tmf.session_pairwise_auc(p[:2], torch.tensor([0.5, 0.5000005]), torch.tensor([1, 1])).item())
    # 1e12 - 1e-6 rounds to 1e12: the next float below 1e12 (1.2e-4 away) is still a lower label
    big = torch.tensor([1e12, np.nextafter(1e12, 0), 1e12, 1e12], dtype=torch.float64)
    value = tmf.session_pairwise_auc(p, big, torch.zeros(4, dtype=torch.long))
    assert value.item() == pytest.approx(
        _reference([{"preds": p.numpy(), "target": big.numpy(), "sessions": np.zeros(4)}])
    )


def test_no_pair_is_nan_with_a_warning_and_coverage_zero_before_any_batch():
    metric = tmx.SessionPairwiseAUC(2, report_batch_coverage=True)
    with pytest.warns(UndefinedMetricWarning, match="no samples seen"):
        value = metric.compute()
    assert torch.isnan(value["session_pairwise_auc"]).all()
    assert value["valid_pairs_per_batch"].tolist() == [0.0, 0.0]
    # single-row sessions and one-label sessions: batches counted, no pair (TorchRec: 0.5)
    metric.update(
        torch.rand(2, 4), torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]), torch.tensor([0, 1, 2, 2])
    )
    with pytest.warns(UndefinedMetricWarning, match="no session holds two rows"):
        value = metric.compute()
    assert torch.isnan(value["session_pairwise_auc"]).all()
    assert value["effective_training_examples_per_batch"].tolist() == [0.0, 0.0]


def test_zero_weight_and_empty_batches_change_nothing():
    rng = np.random.default_rng(11)
    batch = _torch(_random_batch(rng, 2))
    metric = tmx.SessionPairwiseAUC(2, report_batch_coverage=True)
    metric.update(**batch)
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    metric.update(**dict(batch, weights=torch.zeros_like(batch["weights"])))
    metric.update(torch.empty(2, 0), torch.empty(2, 0), torch.empty(0, dtype=torch.long))
    for k, v in metric.metric_state.items():
        assert torch.equal(v, before[k]), k


def test_states_are_sums_merged_by_merge_state():
    rng = np.random.default_rng(12)
    batches = [_random_batch(rng, 2) for _ in range(3)]
    a, b = tmx.SessionPairwiseAUC(2), tmx.SessionPairwiseAUC(2)
    a.update(**_torch(batches[0]))
    for x in batches[1:]:
        b.update(**_torch(x))
    a.merge_state(b)
    _close(a.compute(), _reference(batches, 2))


# ----------------------------------------------------------------------------- bad input

_GOOD = {
    "preds": torch.tensor([0.9, 0.2, 0.4]),
    "target": torch.tensor([1.0, 0.0, 2.0]),
    "sessions": torch.tensor([0, 0, 1]),
}
BAD = [
    ({"sessions": torch.tensor([0.0, 1.0, 1.0])}, TypeError, "integer ids"),
    ({"sessions": torch.tensor([True, False, True])}, TypeError, "integer ids"),
    ({"sessions": torch.tensor([0, 1])}, ValueError, "`sessions` of shape"),
    ({"sessions": torch.tensor([[0, 1, 1], [0, 0, 1]])}, ValueError, "`sessions` of shape"),
    ({"sessions": torch.tensor([0, 0, 1], device="meta")}, ValueError, r"`sessions` on the same device as `preds`"),
    ({"sessions": None}, TypeError, "sessions"),
    ({"preds": torch.tensor([0.1, float("nan"), 0.3])}, ValueError, "`preds`"),
    ({"target": torch.tensor([0.0, float("nan"), 1.0])}, ValueError, "`target`"),
    ({"target": torch.tensor([0.0, float("inf"), 1.0])}, ValueError, "`target`"),
    ({"weights": torch.tensor([1.0, -1.0, 1.0])}, ValueError, "`weights`"),
    ({"preds": torch.rand(2, 3), "target": torch.rand(2, 3)}, ValueError, "num_tasks"),
    ({"target": torch.tensor([1.0, 0.0])}, ValueError, "shape"),
]


@pytest.mark.parametrize(("bad", "exc", "match"), BAD)
def test_bad_input_refused_and_state_untouched(bad, exc, match):
    metric = tmx.SessionPairwiseAUC()
    metric.update(**_GOOD)
    snapshot = H._state_snapshot(metric)
    for method in ("update", "forward"):
        with pytest.raises(exc, match=match):
            getattr(metric, method)(**dict(_GOOD, **bad))
        H.assert_same_state(metric, snapshot)
    if match != "num_tasks":  # the function takes any number of tasks
        with pytest.raises(exc, match=match):
            tmf.session_pairwise_auc(**dict(_GOOD, **bad))


@pytest.mark.parametrize("option", ["rank_order_label", "weight_pairs", "report_batch_coverage"])
def test_options_must_be_flags(option):
    with pytest.raises(TypeError, match=option):
        tmx.SessionPairwiseAUC(**{option: 1})
    if option != "report_batch_coverage":
        with pytest.raises(TypeError, match=option):
            tmf.session_pairwise_auc(**_GOOD, **{option: "yes"})


def test_options_name_the_states_so_compute_groups_keep_them_apart():
    from torchmetrics import MetricCollection

    rng = np.random.default_rng(13)
    batch = _random_batch(rng)
    metrics = {
        "d": tmx.SessionPairwiseAUC(),
        "low": tmx.SessionPairwiseAUC(rank_order_label=True),
        "unit": tmx.SessionPairwiseAUC(weight_pairs=False),
        "cov": tmx.SessionPairwiseAUC(report_batch_coverage=True),
    }
    collection = MetricCollection(metrics, compute_groups=True)
    collection.update(**_torch(batch))
    values = collection.compute()
    _close(values["d"], _reference([batch]))
    _close(values["low"], _reference([batch], rank_order_label=True))
    _close(values["unit"], _reference([batch], weight_pairs=False))
    assert values["session_pairwise_auc"] == values["d"]  # a dict value is flattened under its own keys


# ----------------------------------------------------------------------------- the shared harness

S, L = 40, 6  # sessions per data set, rows per session: a batch is a set of whole sessions


def _session_data(rng, num_tasks=None):
    shape = (S, L) if num_tasks is None else (num_tasks, S, L)
    p = rng.random(shape)
    p[..., :3] = np.round(p[..., :3], 1)  # ties within sessions
    y = rng.integers(0, 4, size=shape).astype(np.float64)
    return {
        "preds": torch.tensor(p, dtype=torch.float32),
        "target": torch.tensor(y),
        "weights": torch.tensor(rng.choice([0.0, 0.5, 1.0, 2.0], size=(S, L))),
    }


def _flat(preds, target, weights=None):
    sessions = torch.arange(preds.shape[-2]).repeat_interleave(preds.shape[-1])
    weights = None if weights is None else weights.reshape(-1)
    return preds.flatten(-2), target.flatten(-2), sessions, weights


class RowSessionPairwiseAUC(tmx.SessionPairwiseAUC):
    """Feeds ``(…, S, L)`` batches as flat rows, session ids = row of the batch."""

    def update(self, preds, target, weights=None):
        super().update(*_flat(preds, target, weights))

    def _validate(self, preds, target, weights=None):
        super()._validate(*_flat(preds, target, weights))


def _harness_reference(data, **options):
    p, y, w = data["preds"], data["target"], data["weights"]
    num_tasks = None if p.ndim == 2 else p.shape[0]
    sessions = np.repeat(np.arange(p.shape[-2]), p.shape[-1])
    flat = {"preds": p.reshape(*p.shape[:-2], -1), "target": y.reshape(*y.shape[:-2], -1), "sessions": sessions}
    flat["weights"] = None if w is None else w.reshape(-1)
    return _reference([flat], num_tasks, **options)


def _case(cid, num_tasks=None, **options):
    def functional(preds, target, weights=None):
        return tmf.session_pairwise_auc(*_flat(preds, target, weights), **options)

    return H.MetricCase(
        id=cid,
        metric=partial(RowSessionPairwiseAUC, **({"num_tasks": num_tasks} if num_tasks else {}), **options),
        data=partial(_session_data, num_tasks=num_tasks),
        reference=partial(_harness_reference, **options),
        functional=functional,
        sample_axis=-2,
        min_batch=6,
        dtype_keys=("preds", "target"),
    )


CASES = {
    c.id: c
    for c in (
        _case("spauc-w"),
        _case("spauc-3task-w", num_tasks=3),
        _case("spauc-lower-first-unit-pairs-w", rank_order_label=True, weight_pairs=False),
    )
}
globals().update(
    H.harness_tests(
        __name__,
        CASES,
        dtypes=["spauc-3task-w"],
        collection=["spauc-3task-w"],
        ddp=["spauc-3task-w"],
        ddp_scenarios=["spauc-w"],
        device_path=["spauc-w"],
        set_dtype=["spauc-w"],
    )
)


def _rows(rng):
    data = _session_data(rng)
    return {
        "preds": data["preds"].reshape(-1),
        "target": data["target"].reshape(-1),
        "sessions": torch.arange(S).repeat_interleave(L),
        "weights": data["weights"].reshape(-1),
    }


def _rows_reference(data):
    return _reference([data])


WINDOW_CASE = H.MetricCase(
    id="spauc-rows-window",
    metric=tmx.SessionPairwiseAUC,
    data=_rows,
    reference=_rows_reference,
    min_batch=2 * L,
    extra={"unit": L},
)


def test_window_values_and_resume():
    """Lifetime and window from one update (``Windowed``), each batch and the window whole sessions."""
    W.check_window(WINDOW_CASE)
    W.check_window_state_dict(WINDOW_CASE)


# ----------------------------------------------------------------------------- registry and module


def test_registry_name_builds_the_metric():
    entry, k = lookup("session_pairwise_auc")
    metric = entry.build(num_tasks=2, k=k, weight_pairs=False)
    assert type(metric) is tmx.SessionPairwiseAUC and metric.num_tasks == 2 and metric.weight_pairs is False


def _module_steps(rng, steps=3):
    """Two tasks, each with its own session column (``sid`` for click, ``sid_buy`` for buy); ids reused across steps."""
    out = []
    for _ in range(steps):
        click, buy = _random_batch(rng, n=40), _random_batch(rng, n=40)
        out.append(
            {
                "prediction": torch.tensor(click["preds"]),
                "label": torch.tensor(click["target"]),
                "weight": torch.tensor(click["weights"]),
                "sid": torch.tensor(click["sessions"]),
                "buy_p": torch.tensor(buy["preds"]),
                "buy_y": torch.tensor(buy["target"]),
                "buy_w": torch.tensor(buy["weights"]),
                "sid_buy": torch.tensor(buy["sessions"]),
            }
        )
    return out


def _task_batches(steps, task):
    keys = ("prediction", "label", "weight", "sid") if task == "click" else ("buy_p", "buy_y", "buy_w", "sid_buy")
    return [dict(zip(("preds", "target", "weights", "sessions"), (s[k].numpy() for k in keys))) for s in steps]


_TASKS = [
    {"name": "click", "weight_name": "weight", "session_id_name": "sid"},
    {
        "name": "buy",
        "label_name": "buy_y",
        "prediction_name": "buy_p",
        "weight_name": "buy_w",
        "session_id_name": "sid_buy",
    },
]


@pytest.mark.parametrize("window", [False, True])
def test_module_reports_torchrecs_keys_per_task_from_each_tasks_session_column(window):
    rng = np.random.default_rng(14)
    steps = _module_steps(rng)
    config = {
        "tasks": _TASKS,
        "metrics": {"spauc": {"metric": "session_pairwise_auc", "report_batch_coverage": True}, "mse": {}},
        "throughput": False,
        "key_style": "torchrec",
        **({"window_size": 80} if window else {}),  # the window: the newest two steps of 40 rows
    }
    module = tmx.RecMetricModule.from_config(config)
    for step in steps:
        module.update(step)
    values = _quiet(module.compute)
    for task in ("click", "buy"):
        batches = _task_batches(steps, task)
        parts = {"lifetime": batches, "window": batches[-2:]} if window else {"lifetime": batches}
        for part, seen in parts.items():
            expected = _reference(seen, coverage=True)
            for entry, want in expected.items():
                key = f"session_pairwise_auc-{task}|{part}_{entry}"
                assert float(values[key]) == pytest.approx(float(want), rel=1e-12), key


def test_module_default_keys_and_a_metric_of_one_task():
    """Default keys ``{name}/{task}``; with ``metric_tasks`` the metric reads that task's session column only."""
    rng = np.random.default_rng(15)
    steps = _module_steps(rng, 2)
    module = tmx.RecMetricModule.from_config(
        {
            "tasks": _TASKS,
            "metrics": ["session_pairwise_auc", "mse"],
            "metric_tasks": {"session_pairwise_auc": ["buy"]},
            "throughput": False,
        }
    )
    for step in steps:
        module.update(step)
    values = _quiet(module.compute)
    assert "session_pairwise_auc/click" not in values
    want = _reference(_task_batches(steps, "buy"))
    assert float(values["session_pairwise_auc/buy"]) == pytest.approx(float(want), rel=1e-12)


def test_module_needs_a_session_column():
    with pytest.raises(
        ValueError, match=r"'session_pairwise_auc' needs ids: task 'click' must set RecTaskInfo.session_id_name"
    ):
        tmx.RecMetricModule.from_config({"tasks": ["click"], "metrics": ["session_pairwise_auc"], "throughput": False})


@pytest.mark.parametrize("by", [None, "g"])
def test_evaluate_refuses_it_since_its_read_batches_would_split_sessions(by):
    import pandas as pd

    from torchmetrics_ext.evaluate import evaluate

    frame = pd.DataFrame({"p": [0.1, 0.9, 0.4, 0.3], "y": [0.0, 1.0, 2.0, 0.0], "s": [0, 0, 1, 1], "g": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"Metric 'session_pairwise_auc' .* would split a session"):
        evaluate(frame, {"click": ("p", "y")}, ["session_pairwise_auc", "ndcg@3"], session="s", by=by)


def test_hugging_face_builder_refuses_it_naming_where_to_compute_it():
    pytest.importorskip("transformers")
    from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics

    with pytest.raises(ValueError, match=r"'session_pairwise_auc' needs ids \(\['sessions'\]\).*whole sessions"):
        pointwise_compute_metrics(["session_pairwise_auc"])
