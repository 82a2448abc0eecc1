"""Seeded random checks of the Hugging Face ``compute_metrics`` adapters against independent references.

Each seed draws one configuration: predictions as numpy arrays or torch tensors, logits or
probabilities, float16/bfloat16/float32/float64, shapes ``(N,)``, ``(N, 1)`` or ``(N, T)``,
labels as int/bool/float with ``-100`` padding under ``ignore_index``, a batch of one row of several
tasks squeezed on one side (``(T,)``, or 0-dim heads), whole-array calls or
``batch_eval_metrics`` sequences (``compute_result=False`` ... ``True``) over random batch splits
with empty batches, and a rejected batch in the middle. Pointwise values are checked against
scikit-learn (``roc_auc_score``, ``log_loss``) and numpy formulas written here (NE, calibration,
CTR, MSE); ranking values against ``tests/helpers/ranking_reference.py``.

``HF_RANDOM_SEEDS=500`` (environment) runs more seeds than the suite's few.
"""

from __future__ import annotations

import math
import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from tests.helpers.ranking_reference import reference_values
from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics

SEEDS = range(int(os.environ.get("HF_RANDOM_SEEDS", "40")))
POINTWISE = ("ne", "log_loss", "calibration", "ctr", "mse", "auc", "label_average", "num_positive_samples")
POINTWISE += ("accuracy", "weighted_precision", "weighted_recall", "rmse", "mae", "sum_weights")
POINTWISE += ("weighted_sum_predictions", "weighted_average")
DISPLAY = {"recall": "Recall", "mrr": "MRR", "ndcg": "NDCG", "precision": "Precision", "hit_rate": "HitRate"}
DISPLAY |= {"map": "MAP", "f1": "F1", "r_precision": "RPrecision"}  # the documented default key_names
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _pointwise_reference(p: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> dict[str, float]:
    """The metrics by their formulas on probabilities ``p`` (logits ``z`` if given) and 0/1 labels ``y`` (float64).

    The log loss of logits is ``softplus`` written here (sklearn's on ``sigmoid(z)`` clips a saturated ``p == 1.0``);
    sklearn's ``log_loss`` on probabilities.
    """
    if len(y) == 0:
        return dict.fromkeys(POINTWISE, math.nan) | {
            "num_positive_samples": 0.0,
            "sum_weights": 0.0,
            "weighted_sum_predictions": 0.0,
        }
    ctr = y.mean()
    if z is None:
        loss = log_loss(y, p, labels=[0, 1])
    else:
        loss = float(np.mean(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)))
    base = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr)) if 0 < ctr < 1 else math.nan
    return {
        "ne": loss / base,
        "log_loss": loss,
        "calibration": p.sum() / y.sum() if y.sum() > 0 else math.nan,
        "ctr": ctr,
        "mse": float(np.mean((p - y) ** 2)),
        "auc": roc_auc_score(y, p if z is None else z) if 0 < ctr < 1 else math.nan,  # logits: no saturated ties
        "label_average": ctr,
        "num_positive_samples": float(y.sum()),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "weighted_precision": float(np.sum((p >= 0.5) & (y == 1)) / np.sum(p >= 0.5)) if (p >= 0.5).any() else math.nan,
        "weighted_recall": float(np.sum((p >= 0.5) & (y == 1)) / np.sum(y == 1)) if (y == 1).any() else math.nan,
        "rmse": math.sqrt(np.mean((p - y) ** 2)),
        "mae": float(np.mean(np.abs(p - y))),
        "sum_weights": float(len(y)),
        "weighted_sum_predictions": float(p.sum()),
        "weighted_average": float(p.mean()),
    }


def _splits(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Random contiguous batches over ``n`` rows, some of them empty."""
    cuts = np.sort(rng.integers(0, n + 1, rng.integers(0, 5)))
    edges = [0, *cuts.tolist(), n]
    return list(zip(edges[:-1], edges[1:]))


def _as_given(rng: np.random.Generator, array: torch.Tensor):
    return array.numpy() if array.dtype not in (torch.bfloat16,) and rng.random() < 0.5 else array


def _close(got: float, want: float, tol: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= tol * max(1.0, abs(want))


def _pointwise_config(seed: int):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 4))
    tasks = tuple(f"t{i}" for i in range(t))
    n = int(rng.integers(1, 60))
    from_logits = bool(rng.random() < 0.6)
    dtype = FLOATS[rng.integers(0, 4)]
    ignore = rng.random() < 0.5
    ignore_value = int(rng.choice([-100, -1, 7]))
    z = rng.normal(0, float(rng.choice([2.0, 20.0])), size=(n, t))  # 20: saturated sigmoids (p == 1.0 in float64)
    scores = z if from_logits else _sigmoid(z)
    y = (rng.random((n, t)) < rng.uniform(0.1, 0.9)).astype(np.int64)
    keep = np.ones((n, t), dtype=bool)
    if ignore:
        keep = rng.random((n, t)) < 0.8
    preds = torch.tensor(scores).to(dtype)
    if not from_logits:  # a probability rounded to 0 or 1 in half precision has an infinite log loss
        preds = preds.clamp(1e-2, 1 - 1e-2)
    kinds = (
        torch.int64,
        torch.int32,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.bool,
        torch.uint8,
    )
    label_dtype = kinds[rng.integers(0, len(kinds))]
    labels = torch.tensor(y)
    if ignore:  # a dtype that holds the ignored value
        label_dtype = label_dtype if label_dtype not in (torch.bool, torch.uint8) else torch.int16
        labels = labels.masked_fill(torch.tensor(~keep), ignore_value)
    labels = labels.to(label_dtype)
    shape = "flat" if t == 1 and rng.random() < 0.5 else "column"
    if shape == "flat":
        preds, labels = preds[:, 0], labels[:, 0]
    metrics = tuple(rng.choice(POINTWISE, size=int(rng.integers(1, len(POINTWISE) + 1)), replace=False))
    options = {"validate_args": False} if rng.random() < 0.3 else {}
    build = {"tasks": tasks, "from_logits": from_logits, "ignore_index": ignore_value if ignore else None, **options}
    return rng, build, preds, labels, y, keep, metrics


@pytest.mark.parametrize("seed", SEEDS)
def test_pointwise_equals_sklearn_and_numpy_formulas(seed):
    rng, build, preds, labels, y, keep, metrics = _pointwise_config(seed)
    compute_metrics = pointwise_compute_metrics(list(metrics), **build)
    tasks = build["tasks"]
    z64 = preds.to(torch.float64).numpy().reshape(len(y), len(tasks))
    p64 = _sigmoid(z64) if build["from_logits"] else z64
    tol = 1e-9  # every dtype: the metrics compute in float64 from the values given
    expected = {}
    for i, task in enumerate(tasks):
        rows = keep[:, i]
        logits = z64[rows, i] if build["from_logits"] else None
        ref = _pointwise_reference(p64[rows, i], y[rows, i].astype(np.float64), logits)
        for name in metrics:
            expected[name if len(tasks) == 1 else f"{name}/{task}"] = ref[name]
    mode = ("whole", "batched", "kept_apart")[rng.integers(0, 3)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = _pointwise_values(rng, compute_metrics, mode, preds, labels, reject="validate_args" not in build)
        if values is None:  # a batch was rejected mid-way: that evaluation stopped; the next one starts afresh
            values = _pointwise_values(rng, compute_metrics, mode, preds, labels, reject=False)
    assert set(values) == set(expected)
    for key, want in expected.items():
        assert _close(values[key], want, tol), (key, values[key], want)
    if any(math.isnan(v) for v in values.values()):  # undefined: nan and a warning (the package's policy)
        assert caught


def _heads(rng: np.random.Generator, array: torch.Tensor, num_tasks: int):
    """An ``(N, T)`` array as it is, or as a multi-head model's tuple/list of ``T`` heads ``(N,)``/``(N, 1)``."""
    if num_tasks == 1 or array.ndim != 2 or rng.random() < 0.5:
        return _as_given(rng, array)
    heads = [array[:, i] if rng.random() < 0.5 else array[:, i : i + 1] for i in range(num_tasks)]
    return (tuple if rng.random() < 0.5 else list)(_as_given(rng, head) for head in heads)


def _one_row(rng: np.random.Generator, preds: torch.Tensor, labels: torch.Tensor, num_tasks: int):
    """One batch as ``_heads`` gives it; a batch of one row of several tasks squeezed as models squeeze it.

    ``(T,)`` scores (``logits.squeeze()``) next to ``(1, T)`` labels, ``T`` 0-dim heads in a tuple or a
    list, or ``(1, T)`` scores next to ``(T,)`` labels: one example each.
    """
    p, y = _heads(rng, preds, num_tasks), _heads(rng, labels, num_tasks)
    if num_tasks == 1 or len(preds) != 1 or rng.random() < 0.5:
        return p, y
    form = rng.integers(0, 3)
    if form == 0:
        return _as_given(rng, preds[0]), _as_given(rng, labels)
    if form == 1:
        heads = [_as_given(rng, preds[0, i]) for i in range(num_tasks)]
        return (tuple if rng.random() < 0.5 else list)(heads), _as_given(rng, labels)
    return _as_given(rng, preds), _as_given(rng, labels[0])


def _pointwise_values(rng, compute_metrics, mode, preds, labels, reject):
    """Values of one evaluation (``None`` when a rejected batch stopped it)."""
    t = preds.shape[1] if preds.ndim == 2 else 1
    if rng.random() < 0.3:  # batches of an evaluation stopped part-way: a whole-array call (or reset()) drops them
        assert compute_metrics(SimpleNamespace(predictions=preds[:3], label_ids=labels[:3]), compute_result=False) == {}
        if mode == "batched":
            compute_metrics.reset()
    if mode == "whole":
        return compute_metrics((_heads(rng, preds, t), _heads(rng, labels, t)))
    splits = _splits(rng, len(preds))
    if mode == "kept_apart":  # eval_do_concat_batches=False: one whole-array call with the list of batches
        batches = [_one_row(rng, preds[a:b], labels[a:b], t) for a, b in splits]
        eval_pred = SimpleNamespace(predictions=[p for p, _ in batches], label_ids=[y for _, y in batches])
        return compute_metrics(eval_pred)
    for j, (a, b) in enumerate(splits):
        last = j == len(splits) - 1
        p, y = _one_row(rng, preds[a:b], labels[a:b], t)
        if b - a == 1 and preds.ndim == 1 and rng.random() < 0.5:  # a squeezed logit of a batch of one: 0-dim
            p = preds[a]
        out = compute_metrics(SimpleNamespace(predictions=p, label_ids=y), compute_result=last)
        if not last:
            assert out == {}
            if reject and rng.random() < 0.3:
                _reject(compute_metrics, preds[a:b], labels[a:b])
                return None
    return out


def _reject(compute_metrics, preds, labels):
    """A batch with a NaN label is refused, naming the labels (every metric here refuses NaN labels)."""
    if len(labels) == 0:
        bad = torch.full((1, *labels.shape[1:]), math.nan, dtype=torch.float64)
        bad_preds = torch.zeros((1, *preds.shape[1:]), dtype=preds.dtype)
    else:
        bad = labels.reshape(len(labels), -1).to(torch.float64, copy=True)
        bad[0, 0] = math.nan
        bad = bad.reshape((len(labels), *labels.shape[1:]))
        bad_preds = preds
    with pytest.raises(ValueError, match="label_ids"):
        compute_metrics(SimpleNamespace(predictions=bad_preds, label_ids=bad), compute_result=False)


def _ranking_config(seed: int):
    rng = np.random.default_rng(10_000 + seed)
    q = int(rng.integers(1, 25))
    width = int(rng.integers(1, 12))
    sizes = rng.integers(1, width + 1, q)
    dtype = FLOATS[rng.integers(0, 4)]
    scores = torch.tensor(rng.normal(size=(q, width))).to(dtype)
    if rng.random() < 0.3:  # ties
        scores = scores.to(torch.float64).round(decimals=0).to(dtype)
    pad = float(rng.choice([-10.0, -100.0, -1e4]))
    padded = torch.arange(width)[None] >= torch.tensor(sizes)[:, None]
    scores = scores.masked_fill(padded, pad)
    index_labels = rng.random() < 0.5
    if index_labels:
        index = torch.tensor([int(rng.integers(0, s)) for s in sizes])
        # (q, 1) labels next to one-candidate-wide scores are relevance (documented): index labels as (q,) there
        labels = index if width == 1 or rng.random() < 0.7 else index[:, None]
        relevance = torch.zeros((q, width)).scatter_(1, index[:, None], 1.0)
    else:
        relevance = torch.tensor(rng.integers(0, 3, (q, width))).to(torch.float64)
        relevance = relevance.masked_fill(padded, 0)
        label_pad = rng.random() < 0.5
        labels = relevance.masked_fill(padded, -100) if label_pad else relevance.clone()
        labels = labels.to((torch.int64, torch.float32, torch.float64)[rng.integers(0, 3)])
    ks = tuple(sorted({int(k) for k in rng.integers(1, 15, rng.integers(1, 4))})) + (
        (None,) if rng.random() < 0.4 else ()
    )
    names = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map", "f1")
    metrics = tuple(rng.choice(names, size=int(rng.integers(1, 4)), replace=False))
    exponential = bool(rng.random() < 0.3)
    return rng, scores, labels, relevance, sizes, pad, ks, metrics, exponential


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_equals_the_reference(seed):
    rng, scores, labels, relevance, sizes, pad, ks, metrics, exponential = _ranking_config(seed)
    options = {
        "exponential_gain": exponential,
        "adaptive_k": bool(rng.random() < 0.3),
        "empty_target_action": str(rng.choice(["skip", "zero", "one"])),
        "remove_single_length_sessions": bool(rng.random() < 0.2),
    }
    if rng.random() < 0.3:
        options["validate_args"] = False
    if "r_precision" not in metrics and rng.random() < 0.2:
        metrics = (*metrics, "r_precision")
    default_names = rng.random() < 0.5  # the seed's display names (Recall@k, MRR, ...) or the metrics' own
    pads = (pad, -10.0) if rng.random() < 0.3 else (pad,)  # several padding values
    compute_metrics = ranking_compute_metrics(
        ks=ks, metrics=metrics, padding_value=pads, **({} if default_names else {"key_names": {}}), **options
    )
    s64, r64 = scores.to(torch.float64).numpy(), relevance.numpy()
    queries = [(s64[i, : sizes[i]], r64[i, : sizes[i]], 1.0) for i in range(len(sizes))]
    requests = [(name, k) for name in metrics for k in (ks if name != "r_precision" else (None,))]
    reference_options = {key: value for key, value in options.items() if key != "validate_args"}
    want = reference_values(queries, requests, **reference_options)
    shown = DISPLAY if default_names else {}
    expected = {shown.get(name, name) + ("" if k is None else f"@{k}"): w for (name, k), w in zip(requests, want)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = _ranking_values(rng, compute_metrics, scores, labels, len(sizes), pad, "validate_args" not in options)
        if values is None:  # a rejected batch stopped that evaluation: the next one starts afresh
            values = _ranking_values(rng, compute_metrics, scores, labels, len(sizes), pad, False)
    assert set(values) == set(expected)
    for key, w in expected.items():
        assert _close(values[key], w, 1e-9), (key, values[key], w)
    if any(math.isnan(v) for v in values.values()):  # no query with a relevant candidate: nan and a warning
        assert caught


def _cropped(scores, labels, a, b, pad):
    """Rows ``a:b`` as a collator padding to the batch's longest list gives them (at least one slot)."""
    s, y = scores[a:b], labels[a:b]
    real = (s != pad).sum(1)
    width = max(1, int(real.max()) if len(real) else 1)
    if y.shape == s.shape:
        return s[:, :width], y[:, :width]
    # index labels as (b,): (b, 1) ones next to one-candidate-wide scores would be relevance (documented)
    return s[:, :width], y.reshape(len(y))


def _trainer_concat(batches, dtype):
    """Batches of other widths concatenated as the Trainer does: narrower ones padded with -100."""
    width = max(s.shape[1] for s, _ in batches)
    scores = torch.cat(
        [torch.nn.functional.pad(s.to(torch.float64), (0, width - s.shape[1]), value=-100.0) for s, _ in batches]
    )
    labels = [y for _, y in batches]
    if labels[0].ndim == 2 and labels[0].shape == batches[0][0].shape:
        labels = [
            torch.nn.functional.pad(y.to(torch.float64), (0, width - y.shape[1]), value=-100.0).to(y.dtype)
            for y in labels
        ]
    return scores.to(dtype), torch.cat(labels)


def _ranking_values(rng, compute_metrics, scores, labels, q, pad, reject):
    mode = ("whole", "batched", "kept_apart", "concat")[rng.integers(0, 4)]
    if rng.random() < 0.3:  # batches of an evaluation stopped part-way: a whole-array call (or reset()) drops them
        assert (
            compute_metrics(SimpleNamespace(predictions=scores[:2], label_ids=labels[:2]), compute_result=False) == {}
        )
        if mode == "batched":
            compute_metrics.reset()
    if mode == "whole":
        return compute_metrics(SimpleNamespace(predictions=_as_given(rng, scores), label_ids=_as_given(rng, labels)))
    splits = [(a, b) for a, b in _splits(rng, q) if b > a]  # a ranking batch has a query
    if rng.random() < 0.5:  # each batch padded to its own longest list
        batches = [_cropped(scores, labels, a, b, pad) for a, b in splits]
    else:
        batches = [(scores[a:b], labels[a:b]) for a, b in splits]
    if mode == "kept_apart":
        eval_pred = SimpleNamespace(
            predictions=[_as_given(rng, s) for s, _ in batches], label_ids=[_as_given(rng, y) for _, y in batches]
        )
        return compute_metrics(eval_pred)
    if mode == "concat":
        s, y = _trainer_concat(batches, scores.dtype)
        return compute_metrics(SimpleNamespace(predictions=_as_given(rng, s), label_ids=_as_given(rng, y)))
    for j, (s, y) in enumerate(batches):
        last = j == len(batches) - 1
        values = compute_metrics(
            SimpleNamespace(predictions=_as_given(rng, s), label_ids=_as_given(rng, y)), compute_result=last
        )
        if not last and reject and rng.random() < 0.3:  # an index out of range, or a relevant padded slot
            bad = y.clone()
            if bad.shape == s.shape:
                s = s.clone()
                s[0, 0], bad[0, 0] = pad, 1
                match = "relevant candidate"
            else:
                bad[0] = s.shape[1]
                match = "integer indexes"
            with pytest.raises(ValueError, match=match):
                compute_metrics(SimpleNamespace(predictions=s, label_ids=bad), compute_result=False)
            return None
    return values


class _Heads(torch.nn.Module):
    """A multi-task model whose logits are one ``(N, T)`` array, a tuple of heads, or a list of heads."""

    def __init__(self, num_tasks: int, form: str) -> None:
        super().__init__()
        torch.manual_seed(num_tasks)
        self.linear = torch.nn.Linear(4, num_tasks)
        self.form = form

    def forward(self, x, labels=None):
        logits = self.linear(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float())
        if self.form == "array":
            return {"loss": loss, "logits": logits}
        heads = [logits[:, i] if i % 2 else logits[:, i : i + 1] for i in range(logits.shape[1])]
        return {"loss": loss, "logits": tuple(heads) if self.form == "tuple" else heads}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.mark.parametrize("seed", range(2))
def test_pointwise_in_a_real_trainer_evaluate(seed, tmp_path):
    """A tiny ``Trainer.evaluate`` per mode (whole arrays, batches kept apart, ``batch_eval_metrics=True``):
    scikit-learn and the formulas here on the model's own logits, with ``-100`` labels left out of their task."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    rng = np.random.default_rng(20_000 + seed)
    t, n = int(rng.integers(2, 4)), int(rng.integers(20, 70))
    x, y = rng.normal(size=(n, 4)), (rng.random((n, t)) < 0.4).astype(np.int64)
    keep = rng.random((n, t)) < 0.85
    model = _Heads(t, ("list", "tuple", "array")[seed % 3])
    dataset = _Rows(x, np.where(keep, y, -100))
    with torch.no_grad():
        z = model.linear(torch.tensor(x, dtype=torch.float32)).double().numpy()
    tasks = tuple(f"task{i}" for i in range(t))
    expected = {}
    for i, task in enumerate(tasks):
        rows = keep[:, i]
        ref = _pointwise_reference(_sigmoid(z[rows, i]), y[rows, i].astype(np.float64), z[rows, i])
        expected |= {f"eval_{name}/{task}": ref[name] for name in ("ne", "auc", "ctr", "calibration")}
    batch = int(rng.integers(3, 17))
    for options in ({}, {"eval_do_concat_batches": False}, {"batch_eval_metrics": True}):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True,
            per_device_eval_batch_size=batch, **options,
        )  # fmt: skip
        compute_metrics = pointwise_compute_metrics(["ne", "auc", "ctr", "calibration"], tasks=tasks, ignore_index=-100)
        metrics = transformers.Trainer(
            model=model, args=args, eval_dataset=dataset, compute_metrics=compute_metrics
        ).evaluate()
        for key, want in expected.items():
            assert metrics[key] == pytest.approx(want, rel=1e-6), (options, key)
