"""MetricsAggregator and the metric transforms: torchtune's README, numpy references, bad batches,
checkpoints, DataLoader workers and real 2-process gloo DDP with different datasets per rank."""

from __future__ import annotations

import enum
import io
import json
import math
import pickle
import re
import statistics
import sys
import warnings
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric as TorchMetric
from torchmetrics import MetricCollection
from torchmetrics.aggregation import MeanMetric

from torchmetrics_ext.aggregation import (
    AggregationType,
    DefaultTrainingMetricTransform,
    Distribution,
    Mean,
    Metric,
    MetricsAggregator,
    MetricTransform,
    Sum,
)
from torchmetrics_ext.utilities.warnings import SketchRangeWarning

A = AggregationType
ALPHA = 0.01  # Distribution's default relative accuracy


# ----------------------------------------------------------------------------- torchtune's README


def test_readme_aggregator_example():
    aggregator = MetricsAggregator()
    batch1_metrics = [
        Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
    ]
    batch2_metrics = [
        Metric("alpaca", "tokens_seen", 100, AggregationType.SUM),
        Metric("alpaca", "avg_tokens_seen", 100, AggregationType.MEAN),
    ]
    aggregator.update(batch1_metrics)
    aggregator.update(batch2_metrics)
    results = aggregator.get_metrics_for_logging(prefix="train")
    assert results == {"train_alpaca/tokens_seen": 200.0, "train_alpaca/avg_tokens_seen": 100.0}
    assert all(type(v) is float for v in results.values())


def test_readme_transform_example():
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    sample = transform({"tokens": [1, 2, 3, 4, 5]})
    assert sample["metrics"] == [
        Metric(dataset_name="alpaca", name="samples_seen", value=1, agg_type=AggregationType.SUM),
        Metric(dataset_name="alpaca", name="tokens_seen", value=5, agg_type=AggregationType.SUM),
        Metric(dataset_name="alpaca", name="seq_len", value=5, agg_type=AggregationType.DISTRIBUTION),
    ]


# ----------------------------------------------------------------------------- transforms


def test_transform_uses_input_ids_and_appends():
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("c4")
    existing = Metric("c4", "custom", 1, A.SUM)
    sample = transform({"input_ids": torch.arange(7), "metrics": [existing]})
    assert sample["metrics"][0] is existing
    assert [(m.name, m.value) for m in sample["metrics"][1:]] == [
        ("samples_seen", 1),
        ("tokens_seen", 7),
        ("seq_len", 7),
    ]


@pytest.mark.parametrize(
    ("sample", "exc", "match"),
    [
        ({"text": "no tokens"}, KeyError, "'tokens' or 'input_ids'"),
        ({"tokens": [1], "metrics": "oops"}, TypeError, r"sample\['metrics'\]"),
        ([1, 2, 3], TypeError, "`sample` to be a dict"),
        # a field without a length raised Python's bare "object of type 'NoneType' has no len()"
        ({"tokens": None}, TypeError, r"sample\['tokens'\] to be a sequence of tokens .*got NoneType: None"),
        ({"input_ids": torch.tensor(7)}, TypeError, r"sample\['input_ids'\] to be a sequence .*got Tensor"),
    ],
)
def test_transform_bad_samples(sample, exc, match):
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    with pytest.raises(exc, match=match):
        transform(sample)


@pytest.mark.parametrize(
    ("tokens", "shape"),
    [
        (torch.arange(512).reshape(1, 512), r"shape \(1, 512\)"),  # a tokenizer's return_tensors="pt" row
        (np.arange(6).reshape(2, 3), r"shape \(2, 3\)"),
        ([[1, 2, 3, 4]], r"a list of 1 sequences"),
        (([1, 2], [3]), r"a tuple of 2 sequences"),
    ],
)
@pytest.mark.parametrize("field", ["tokens", "input_ids"])
def test_transform_refuses_a_tokens_field_of_more_than_one_dimension(tokens, shape, field):
    """len() of a (1, 512) tensor is 1: the sample was counted as 1 token (tokens_seen 1, seq_len 1), not 512."""
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    sample = {field: tokens}
    with pytest.raises(ValueError, match=rf"sample\[{field!r}\] to be one sequence of tokens .*got {shape}"):
        transform(sample)
    assert "metrics" not in sample  # the sample is left as it was
    flat = transform({field: [token for row in tokens for token in row]})  # what a user meant: every token once
    n = sum(len(row) for row in tokens)
    assert [record.value for record in flat["metrics"]] == [1, n, n]  # samples_seen, tokens_seen, seq_len


@pytest.mark.parametrize("field", ["tokens", "input_ids"])
def test_transform_refuses_a_mapping_of_token_fields(field):
    """A tokenizer's whole output (a dict, or transformers' ``BatchEncoding``, a ``Mapping``) under ``"tokens"``
    was counted with len(): its number of fields, 2 tokens for a 5-token sample (tokens_seen 2, seq_len 2)."""
    from collections import UserDict

    encoded = {"input_ids": [101, 7, 8, 9, 102], "attention_mask": [1, 1, 1, 1, 1]}
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    for tokens in (encoded, UserDict(encoded)):  # UserDict: the base of BatchEncoding
        sample = {field: tokens}
        with pytest.raises(TypeError, match=rf"sample\[{field!r}\] to be a sequence of tokens .*got a mapping"):
            transform(sample)
        assert "metrics" not in sample  # the sample is left as it was
    flat = transform({field: encoded["input_ids"]})  # what a user meant
    n = len(encoded["input_ids"])
    assert [record.value for record in flat["metrics"]] == [1, n, n]  # samples_seen, tokens_seen, seq_len


@pytest.mark.parametrize("group", [1000, 2.5, True, "gloo"])
def test_a_process_group_that_is_no_group_is_a_type_error_at_construction(group):
    """torchtune's ``MetricsAggregator(1000)`` is its ``dist_window_size``: here it became the process group, taken
    without a word, and every rank's ``get_metrics_for_logging`` under DDP died in the sync with "'int' object has
    no attribute 'size'"."""
    with pytest.raises(
        TypeError,
        match=rf"`process_group` to be a torch.distributed process group or None, got {re.escape(repr(group))}",
    ):
        MetricsAggregator(group)
    if group == 1000:
        with pytest.raises(TypeError, match="dist_window_size"):
            MetricsAggregator(group)


def test_a_process_group_placeholder_or_none_is_taken():
    import torch.distributed as dist

    for group in (None, dist.GroupMember.NON_GROUP_MEMBER):  # the placeholder: this rank logs its own records
        aggregator = MetricsAggregator(group)
        aggregator.update([Metric("alpaca", "tokens_seen", 3, A.SUM)])
        assert aggregator.get_metrics_for_logging() == {"train_alpaca/tokens_seen": 3.0}


def test_register_handler_names_the_enum_of_a_foreign_aggregation_type():
    """A migrating recipe's torchtune ``AggregationType.MEAN`` was refused as "Expected `agg_type` to be an
    AggregationType, got <AggregationType.MEAN: 'mean'>": an AggregationType, by its printed name."""

    class AggregationType(enum.Enum):  # torchtune's, as a recipe half-migrated would import it
        MEAN = "mean"

    aggregator = MetricsAggregator()
    with pytest.raises(
        TypeError,
        match=r"member of torchmetrics_ext\.aggregation\.AggregationType, got <AggregationType\.MEAN: 'mean'> \(a .*AggregationType\)",
    ):
        aggregator.register_handler(AggregationType.MEAN, Mean)
    with pytest.raises(TypeError, match=r"got 'mean'\.$"):
        aggregator.register_handler("mean", Mean)
    aggregator.update([Metric("alpaca", "loss", 2.0, A.MEAN)])  # the default handler is still there
    assert aggregator.get_metrics_for_logging() == {"train_alpaca/loss": 2.0}


def test_transform_requires_dataset_name():
    transform = DefaultTrainingMetricTransform()
    with pytest.raises(RuntimeError, match="set_dataset_name"):
        transform({"tokens": [1]})
    with pytest.raises(RuntimeError, match="set_dataset_name"):
        transform.new_metric("x", 1, A.SUM)
    with pytest.raises(ValueError, match="dataset_name"):
        transform.set_dataset_name("")
    for bad in (None, 3):  # a wrong type: TypeError, as the aggregator's record checks
        with pytest.raises(TypeError, match="dataset_name"):
            transform.set_dataset_name(bad)


class LabelTransform(MetricTransform):
    """A custom transform: the sample's label as a category and its loss weight as a mean."""

    def _generate_metrics(self, sample):
        return [
            self.new_metric("label", sample["label"], A.CATEGORICAL_COUNT),
            self.new_metric("weight", sample["weight"], A.MEAN),
        ]


def test_custom_transform_and_pickling():
    transform = LabelTransform()
    transform.set_dataset_name("reviews")
    restored = pickle.loads(pickle.dumps(transform))
    sample = restored({"label": "pos", "weight": 0.5})
    assert sample["metrics"] == [
        Metric("reviews", "label", "pos", A.CATEGORICAL_COUNT),
        Metric("reviews", "weight", 0.5, A.MEAN),
    ]


class _ReturnsWhatItIsGiven(MetricTransform):
    """A custom transform whose ``_generate_metrics`` returns ``sample["out"]`` as it is."""

    def _generate_metrics(self, sample):
        return sample["out"]


def test_a_transform_that_returns_no_list_of_records_is_a_type_error_naming_it():
    """A ``_generate_metrics`` without ``return`` (None) or returning one record raised Python's bare
    "'NoneType' object is not iterable"; a non-record in the list went into ``sample["metrics"]`` silently."""
    transform = _ReturnsWhatItIsGiven()
    transform.set_dataset_name("d")
    record = Metric("d", "x", 1, A.SUM)
    for out, match in (
        (None, r"_ReturnsWhatItIsGiven\._generate_metrics.* list of Metric records, got NoneType"),
        (record, r"list of Metric records, got Metric .*wrap one record in a list"),
        ([record, "x"], r"list of Metric records, got 'x' \(str\) at position 1"),
    ):
        sample = {"out": out, "metrics": [record]}
        with pytest.raises(TypeError, match=match):
            transform(sample)
        assert sample == {"out": out, "metrics": [record]}  # unchanged
    sample = transform({"out": (record,)})  # a tuple is a sequence of records
    assert sample["metrics"] == [record]


def test_a_transform_whose_generate_metrics_yields_its_records_still_works():
    """``_generate_metrics`` written as a generator (``yield`` each record) was taken as its records (``list(...)``)
    until the return check refused anything but a list or tuple, while ``MetricsAggregator.update`` takes a
    generator of records too. Reference: the records built here and the token count in plain Python."""

    class YieldingTransform(MetricTransform):
        def _generate_metrics(self, sample):
            yield self.new_metric("tokens", len(sample["tokens"]), A.SUM)
            yield self.new_metric("seen", 1, A.SUM)

    transform = YieldingTransform()
    transform.set_dataset_name("d")
    earlier = Metric("d", "x", 1, A.SUM)
    sample = transform({"tokens": [5, 6, 7], "metrics": [earlier]})
    assert sample["metrics"] == [earlier, Metric("d", "tokens", 3, A.SUM), Metric("d", "seen", 1, A.SUM)]
    assert transform({"tokens": []})["metrics"] == [Metric("d", "tokens", 0, A.SUM), Metric("d", "seen", 1, A.SUM)]
    # a generator yielding a non-record is refused like a list holding one, the sample unchanged
    bad = _ReturnsWhatItIsGiven()
    bad.set_dataset_name("d")
    sample = {"out": (r for r in [earlier, 3]), "metrics": [earlier]}
    with pytest.raises(TypeError, match=r"got 3 \(int\) at position 1"):
        bad(sample)
    assert sample["metrics"] == [earlier]
    # a string or a mapping is no sequence of records
    for out in ("abc", {"name": "x"}):
        with pytest.raises(TypeError, match="list of Metric records"):
            bad({"out": out})


class TokensDataset(Dataset):
    """Applies the transform in ``__getitem__``, i.e. inside the DataLoader worker processes."""

    def __init__(self, name, lengths):
        self.lengths = lengths
        self.transform = DefaultTrainingMetricTransform()
        self.transform.set_dataset_name(name)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        info = torch.utils.data.get_worker_info()
        sample = self.transform({"tokens": list(range(int(self.lengths[i])))})
        sample["worker"] = -1 if info is None else info.id
        return sample


def collate_records(samples):
    return {"metrics": [m for s in samples for m in s["metrics"]], "workers": [s["worker"] for s in samples]}


def test_transform_in_dataloader_workers():
    lengths = np.random.default_rng(0).integers(1, 3000, size=203)
    loader = DataLoader(TokensDataset("alpaca", lengths), batch_size=16, num_workers=2, collate_fn=collate_records)
    aggregator = MetricsAggregator()
    workers = set()
    for batch in loader:
        aggregator.update(batch["metrics"])
        workers.update(batch["workers"])
    assert workers == {0, 1}
    out = aggregator.get_metrics_for_logging()
    assert out["train_alpaca/samples_seen"] == len(lengths)
    assert out["train_alpaca/tokens_seen"] == lengths.sum()
    np.testing.assert_allclose(out["train_alpaca/seq_len_stat_mean"], lengths.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["train_alpaca/seq_len_stat_std"], lengths.std(ddof=1), rtol=1e-9)
    assert out["train_alpaca/seq_len_stat_min"] == lengths.min()
    assert out["train_alpaca/seq_len_stat_max"] == lengths.max()
    for q in (5, 50, 95):
        np.testing.assert_allclose(out[f"train_alpaca/seq_len_stat_p{q:02d}"], np.percentile(lengths, q), rtol=ALPHA)


# ----------------------------------------------------------------------------- numpy references

DATASETS = ("alpaca", "c4", "code", "math")


def make_records(rng, n, datasets=DATASETS, categories=("web", "book", 3, "wiki")):
    """Random records over datasets x all six aggregation types."""
    records = []
    for _ in range(n):
        ds = datasets[int(rng.integers(len(datasets)))]
        length = int(rng.integers(1, 4096))
        kind = int(rng.integers(6))
        if kind == 0:
            records.append(Metric(ds, "tokens_seen", length, A.SUM))
        elif kind == 1:
            records.append(Metric(ds, "loss", float(rng.normal(2.0, 0.5)), A.MEAN))
        elif kind == 2:
            records.append(Metric(ds, "max_len", length, A.MAX))
        elif kind == 3:
            records.append(Metric(ds, "min_len", length, A.MIN))
        elif kind == 4:
            records.append(Metric(ds, "seq_len", length, A.DISTRIBUTION))
        else:
            records.append(Metric(ds, "source", categories[int(rng.integers(len(categories)))], A.CATEGORICAL_COUNT))
    return records


def numpy_reference(records, prefix="train"):
    """Expected logging dict, computed with numpy and Counter from the raw records."""
    groups = defaultdict(list)
    types = {}
    for r in records:
        groups[(r.dataset_name, r.name)].append(r.value)
        types[(r.dataset_name, r.name)] = r.agg_type
    out = {}
    for (ds, name), values in groups.items():
        base = f"{prefix}_{ds}/{name}"
        t = types[(ds, name)]
        if t is A.CATEGORICAL_COUNT:
            for cat, count in Counter(values).items():
                out[f"{base}_count_{cat}"] = float(count)
            continue
        v = np.asarray(values, dtype=np.float64)
        if t is A.SUM:
            out[base] = v.sum()
        elif t is A.MEAN:
            out[base] = v.mean()
        elif t is A.MAX:
            out[base] = v.max()
        elif t is A.MIN:
            out[base] = v.min()
        else:
            out.update({f"{base}_stat_mean": v.mean(), f"{base}_stat_min": v.min(), f"{base}_stat_max": v.max()})
            if v.size > 1:
                out[f"{base}_stat_std"] = v.std(ddof=1)
            for q, value in zip((5, 50, 95), np.percentile(v, [5, 50, 95]), strict=True):
                out[f"{base}_stat_p{q:02d}"] = value
    return out


def assert_matches_reference(actual, expected):
    assert set(actual) == set(expected), sorted(set(actual) ^ set(expected))
    for key, value in expected.items():
        rtol = ALPHA if "_stat_p" in key else 1e-9
        np.testing.assert_allclose(actual[key], value, rtol=rtol, err_msg=key)


@pytest.mark.parametrize("batch_size", [1, 37, 1000])
def test_against_numpy(batch_size):
    records = make_records(np.random.default_rng(batch_size), 3000)
    aggregator = MetricsAggregator()
    for lo in range(0, len(records), batch_size):
        aggregator.update(records[lo : lo + batch_size])
    assert_matches_reference(aggregator.get_metrics_for_logging(), numpy_reference(records))
    assert_matches_reference(aggregator.get_metrics_for_logging("val"), numpy_reference(records, "val"))


def test_one_tensor_update_per_key_per_batch():
    records = make_records(np.random.default_rng(0), 1000)
    aggregator = MetricsAggregator()
    aggregator.update(records)
    assert len(aggregator.metrics) == len({(r.dataset_name, r.name) for r in records}) == 24
    assert all(metric._update_count == 1 for metric in aggregator.metrics.values())


def test_values_of_any_numeric_type():
    aggregator = MetricsAggregator()
    aggregator.update(
        [Metric("d", "x", v, A.SUM) for v in (1, 2.5, True, np.float32(0.5), np.int64(3), torch.tensor(4))]
    )
    assert aggregator.get_metrics_for_logging() == {"train_d/x": 12.0}


@pytest.mark.parametrize("agg_type", [A.SUM, A.MEAN, A.MAX, A.MIN, A.DISTRIBUTION])
def test_one_element_numpy_arrays_are_numbers_like_one_element_tensors(agg_type):
    """``np.array([2.0])`` was refused (NumPy's ``float()`` refuses arrays with dimensions) while
    ``torch.tensor([3.0])`` was accepted: every one-element array or tensor is its element."""
    forms = [np.array([2.0]), np.array([[5]]), np.array(1.5), np.float32(0.5), torch.tensor([3.0]), torch.tensor([[4]])]
    plain = [2.0, 5.0, 1.5, 0.5, 3.0, 4.0]
    got, expected = MetricsAggregator(), MetricsAggregator()
    got.update([Metric("d", "x", v, agg_type) for v in forms])
    expected.update([Metric("d", "x", v, agg_type) for v in plain])
    reference = {
        A.SUM: sum(plain),
        A.MEAN: float(np.mean(plain)),
        A.MAX: max(plain),
        A.MIN: min(plain),
        A.DISTRIBUTION: float(np.mean(plain)),
    }[agg_type]
    key = "train_d/x_stat_mean" if agg_type is A.DISTRIBUTION else "train_d/x"
    logged = got.get_metrics_for_logging()
    assert logged == expected.get_metrics_for_logging()
    assert logged[key] == pytest.approx(reference, rel=1e-15)


@pytest.mark.parametrize("agg_type", [A.SUM, A.MAX, A.DISTRIBUTION])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([1.0, 2.0]), r"one-element tensor or array is one\), got an ndarray of shape \(2,\)"),
        (torch.tensor([1.0, 2.0]), r"one-element tensor or array is one\), got a Tensor of shape \(2,\)"),
        (np.array([], dtype=np.float64), r"got an ndarray of shape \(0,\)"),
        (np.array(["a"]), r"got an ndarray of shape \(1,\)"),
    ],
    ids=["two-element-array", "two-element-tensor", "empty-array", "str-array"],
)
def test_arrays_of_other_sizes_are_refused_with_their_shape_and_change_nothing(agg_type, bad, match):
    agg = MetricsAggregator()
    agg.update([Metric("d", "x", 1.0, agg_type)])
    expected = agg.get_metrics_for_logging()
    with pytest.raises(TypeError, match=f"is a {agg_type.name}: expected a finite number .*{match}"):
        agg.update([Metric("d", "x", 2.0, agg_type), Metric("d", "new", 1, A.SUM), Metric("d", "x", bad, agg_type)])
    assert agg.get_metrics_for_logging() == expected


def test_an_int_too_long_for_its_text_is_a_value_error_before_anything_changes():
    """An int category beyond Python's int-to-str digit limit (4,300 digits) made its key fail while the
    batch was applied: the other keys were changed (a new SUM key logged 0) and the error named no record."""
    huge = 10**5000
    limit = sys.get_int_max_str_digits()
    assert limit and len(str(10**limit // 10)) == limit  # the reference: Python writes at most `limit` digits
    agg = MetricsAggregator()
    agg.update([Metric("d", "src", "web", A.CATEGORICAL_COUNT), Metric("d", "n", 1, A.SUM)])
    expected = agg.get_metrics_for_logging()
    batch = [
        Metric("d", "src", "books", A.CATEGORICAL_COUNT),
        Metric("d", "n", 1, A.SUM),
        Metric("d", "fresh", 1, A.SUM),
        Metric("d", "src", huge, A.CATEGORICAL_COUNT),
    ]
    with pytest.raises(ValueError, match=r"CATEGORICAL_COUNT: expected int categories .* integer of 16610 bits"):
        agg.update(batch)
    assert agg.get_metrics_for_logging() == expected
    with pytest.raises(ValueError, match=r"SUM: expected a finite number, got an integer of 16610 bits"):
        agg.update([Metric("d", "n", huge, A.SUM)])
    assert agg.get_metrics_for_logging() == expected
    # an int just within the limit is a category like any other
    agg.update([Metric("d", "src", 10 ** (limit - 1), A.CATEGORICAL_COUNT)])
    assert agg.get_metrics_for_logging()[f"train_d/src_count_{10 ** (limit - 1)}"] == 1.0


def test_empty_update_and_logging():
    aggregator = MetricsAggregator()
    aggregator.update([])
    assert aggregator.get_metrics_for_logging() == {}
    assert len(aggregator.metrics) == 0


def test_update_with_records_that_are_not_iterable_names_the_argument():
    """``update(record)`` (one Metric, not a list) raised Python's bare "'Metric' object is not iterable"."""
    agg = MetricsAggregator()
    agg.update([Metric("d", "x", 1, A.SUM)])
    with pytest.raises(TypeError, match=r"`records` to be a list .*wrap one record in a list.*got Metric\."):
        agg.update(Metric("d", "x", 1, A.SUM))
    with pytest.raises(TypeError, match=r"`records` to be a list \(or iterable\) of Metric records, got NoneType\."):
        agg.update(None)
    agg.update(Metric("d", "x", v, A.SUM) for v in (2, 3))  # any iterable still works
    assert agg.get_metrics_for_logging() == {"train_d/x": 6.0}


@pytest.mark.parametrize("prefix", [None, 1, A.SUM])
def test_a_prefix_that_is_not_a_string_is_refused(prefix):
    """``prefix=None`` used to log under ``"None_d/x"``."""
    agg = MetricsAggregator()
    agg.update([Metric("d", "x", 1, A.SUM)])
    with pytest.raises(TypeError, match=r"`prefix` to be a string such as 'train' or 'val', got"):
        agg.get_metrics_for_logging(prefix)
    assert agg.get_metrics_for_logging("") == {"_d/x": 1.0}  # torchtune's f"{prefix}_{dataset}/{name}"


def test_single_value_distribution_leaves_out_std():
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "len", 12, A.DISTRIBUTION)])
    out = aggregator.get_metrics_for_logging()
    assert out == {f"train_d/len_stat_{k}": 12.0 for k in ("mean", "min", "max", "p05", "p50", "p95")}


def test_datasets_never_share_state():
    """Two datasets' metrics look identical after the first batch; they must stay independent.

    A MetricCollection with automatic compute groups would merge them (TorchMetrics #2596, #1890);
    the aggregator holds plain modules and updates each key itself.
    """
    aggregator = MetricsAggregator()
    assert isinstance(aggregator.metrics, nn.ModuleDict) and not isinstance(aggregator.metrics, MetricCollection)
    for t in (A.SUM, A.MAX, A.DISTRIBUTION, A.CATEGORICAL_COUNT):
        first = 5 if t is not A.CATEGORICAL_COUNT else "x"
        aggregator.update([Metric("a", t.value, first, t), Metric("b", t.value, first, t)])
    later = [
        Metric("a", "sum", 7, A.SUM),
        Metric("a", "max", 9, A.MAX),
        Metric("a", "distribution", 100, A.DISTRIBUTION),
        Metric("a", "categorical_count", "y", A.CATEGORICAL_COUNT),
    ]
    aggregator.update(later)
    out = aggregator.get_metrics_for_logging()
    assert out["train_a/sum"] == 12.0 and out["train_b/sum"] == 5.0
    assert out["train_a/max"] == 9.0 and out["train_b/max"] == 5.0
    assert out["train_a/distribution_stat_max"] == 100.0 and out["train_b/distribution_stat_max"] == 5.0
    assert "train_a/categorical_count_count_y" in out and "train_b/categorical_count_count_y" not in out


# ----------------------------------------------------------------------------- bad batches


def snapshot(aggregator):
    state = aggregator.state_dict()
    return json.dumps(state["metadata"]), {k: v.clone() for k, v in state["tensors"].items()}


def assert_unchanged(aggregator, before):
    meta, tensors = snapshot(aggregator)
    assert meta == before[0]
    assert tensors.keys() == before[1].keys() and all(torch.equal(tensors[k], before[1][k]) for k in tensors)


GOOD = [
    Metric("alpaca", "tokens", 10, A.SUM),
    Metric("alpaca", "src", "web", A.CATEGORICAL_COUNT),
    Metric("alpaca", "len", 10, A.DISTRIBUTION),
]
BAD_BATCHES = [
    (
        [Metric("alpaca", "tokens", "ten", A.SUM)],
        TypeError,
        "'tokens' of dataset 'alpaca' is a SUM: expected a number",
    ),
    ([Metric("alpaca", "len", None, A.DISTRIBUTION)], TypeError, "DISTRIBUTION: expected a finite number"),
    ([Metric("alpaca", "len", [1, 2], A.DISTRIBUTION)], TypeError, "expected a finite number"),
    ([Metric("new", "loss", math.nan, A.MEAN)], ValueError, "MEAN: expected a finite number, got nan"),
    ([Metric("new", "loss", math.inf, A.MAX)], ValueError, "MAX: expected a finite number, got inf"),
    (
        [Metric("alpaca", "src", 1.5, A.CATEGORICAL_COUNT)],
        TypeError,
        "CATEGORICAL_COUNT: expected str or int",
    ),
    ([Metric("alpaca", "src", True, A.CATEGORICAL_COUNT)], TypeError, "expected str or int"),
    (
        [Metric("alpaca", "tokens", 5, A.MEAN)],
        ValueError,
        "aggregated as SUM; it cannot also be aggregated as MEAN",
    ),
    (
        [Metric("x", "y", 1, A.MIN), Metric("x", "y", 1, A.MAX)],
        ValueError,
        "aggregated as MIN.*aggregated as MAX",
    ),
    ([Metric("x", "y", 1, "sum")], ValueError, "unknown agg_type"),
    ([Metric("x", "y", 1, A.SUM), Metric("x", "y", 1, "sum")], ValueError, "aggregated as SUM.*'sum'"),
    ([Metric("x", "y", 1, [A.SUM])], TypeError, "hashable"),
    ([("alpaca", "tokens", 1, A.SUM)], TypeError, "to be a Metric"),
    # a non-str name was logged as its text ("train_1/2") and broke a JSON round trip of the metadata (a tuple)
    ([Metric(1, "n", 1, A.SUM)], TypeError, "`dataset_name` and `name` to be strings, got 1 and 'n'"),
    ([Metric("x", ("a", "b"), 1, A.MAX)], TypeError, r"strings, got 'x' and \('a', 'b'\)"),
    ([Metric(None, "n", "web", A.CATEGORICAL_COUNT)], TypeError, "strings, got None and 'n'"),
    (
        [Metric("alpaca", "tokens", 1e308, A.SUM), Metric("alpaca", "tokens", 1e308, A.SUM)],
        ValueError,
        "'tokens' of dataset 'alpaca' is a SUM: the batch's sum overflows float64",
    ),
]


@pytest.mark.parametrize(("bad", "exc", "match"), BAD_BATCHES, ids=[str(i) for i in range(len(BAD_BATCHES))])
def test_rejected_batch_changes_nothing(bad, exc, match):
    aggregator = MetricsAggregator()
    aggregator.update(GOOD)
    before = snapshot(aggregator)
    expected = aggregator.get_metrics_for_logging()
    # the bad record comes last, after good records of existing and new keys
    batch = [*GOOD, Metric("fresh", "n", 1, A.SUM), *bad]
    with pytest.raises(exc, match=match):
        aggregator.update(batch)
    assert_unchanged(aggregator, before)
    assert aggregator.get_metrics_for_logging() == expected


def test_an_agg_type_of_another_enum_is_named_as_such():
    """torchtune's own ``AggregationType.SUM`` (another enum of the same name and values) was reported as "an
    unknown agg_type <AggregationType.SUM: 'sum'>", without saying that the enum is not ours."""

    class AggregationType(enum.Enum):  # stands for torchtune.data.metrics.AggregationType
        SUM = "sum"

    foreign = AggregationType.SUM
    agg = MetricsAggregator()
    agg.update([Metric("d", "x", 1, A.SUM)])
    origin = rf"\(a {__name__}\..*AggregationType\)"
    with pytest.raises(
        ValueError, match=rf"unknown agg_type <AggregationType\.SUM: 'sum'> {origin}; expected a member of"
    ):
        agg.update([Metric("d", "y", 1, foreign)])
    with pytest.raises(
        ValueError, match=rf"aggregated as SUM; it cannot also be aggregated as <AggregationType\.SUM: 'sum'> {origin}"
    ):
        agg.update([Metric("d", "z", 1, A.SUM), Metric("d", "z", 1, foreign)])
    with pytest.raises(ValueError, match=r"unknown agg_type 'sum'; expected"):  # a builtin: no class named
        agg.update([Metric("d", "y", 1, "sum")])
    assert agg.get_metrics_for_logging() == {"train_d/x": 1.0}


# ----------------------------------------------------------------------------- handlers, reset, checkpoints


def test_register_handler():
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.DISTRIBUTION, lambda: Distribution(percentiles=(50, 99.9), validate_args=False))
    aggregator.register_handler(A.SUM, lambda: Mean(validate_args=False))  # any torchmetrics.Metric
    aggregator.update(
        [Metric("d", "len", v, A.DISTRIBUTION) for v in (1, 2, 3)]
        + [Metric("d", "n", 4, A.SUM), Metric("d", "n", 6, A.SUM)]
    )
    out = aggregator.get_metrics_for_logging()
    assert set(out) == {f"train_d/len_stat_{k}" for k in ("mean", "min", "max", "std", "p50", "p99.9")} | {"train_d/n"}
    assert out["train_d/n"] == 5.0
    with pytest.raises(ValueError, match=r"DISTRIBUTION handler.*reset"):
        aggregator.register_handler(A.DISTRIBUTION, Distribution)
    with pytest.raises(TypeError, match="AggregationType"):
        aggregator.register_handler("sum", Sum)
    for bad in (Sum(), 3):
        with pytest.raises(TypeError, match="callable returning a new"):
            aggregator.register_handler(A.MAX, bad)
    aggregator.reset()
    aggregator.register_handler(A.DISTRIBUTION, Distribution)
    aggregator.register_handler(A.MIN, lambda: "not a metric")
    with pytest.raises(TypeError, match=r"not a torchmetrics\.Metric"):
        aggregator.update([Metric("d", "x", 1, A.SUM), Metric("d", "m", 1, A.MIN)])
    assert aggregator.get_metrics_for_logging() == {}  # nothing of the rejected batch was kept


def test_a_handler_returning_one_instance_is_refused_instead_of_sharing_state():
    """``lambda: shared`` gave two datasets one state: each logged the other's values too (11.0 and 11.0)."""
    shared = Sum()
    agg = MetricsAggregator()
    agg.register_handler(A.SUM, lambda: shared)
    message = r"SUM handler returned a Sum that is already in use.*new metric at each call"
    with pytest.raises(ValueError, match=message):  # two new keys in one batch
        agg.update([Metric("a", "x", 1, A.SUM), Metric("b", "x", 10, A.SUM)])
    assert agg.get_metrics_for_logging() == {} and float(shared.compute()) == 0.0  # nothing applied
    agg.update([Metric("a", "x", 1, A.SUM)])  # the first key may have it
    with pytest.raises(ValueError, match=message):  # a new key in a later batch
        agg.update([Metric("a", "x", 2, A.SUM), Metric("b", "x", 10, A.SUM)])
    assert agg.get_metrics_for_logging() == {"train_a/x": 1.0}
    source = MetricsAggregator()
    source.update([Metric("a", "x", 1, A.SUM), Metric("b", "x", 10, A.SUM)])
    with pytest.raises(ValueError, match=message):  # a checkpoint of two keys
        agg.load_state_dict(source.state_dict())
    assert agg.get_metrics_for_logging() == {"train_a/x": 1.0}


class Received(TorchMetric):
    """A plain torchmetrics.Metric (no summarize/fold): records what its public ``update`` gets."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.received = []

    def update(self, values):
        self.received.append(values)
        self.n += len(values)

    def compute(self):
        return self.n


def test_registered_plain_torchmetrics_get_their_public_update():
    """A handler that is not an AggregationMetric gets ``update`` with a float64 tensor or the categories."""
    aggregator = MetricsAggregator()
    aggregator.register_handler(A.MAX, Received)
    aggregator.register_handler(A.CATEGORICAL_COUNT, Received)
    aggregator.register_handler(A.MEAN, MeanMetric)  # TorchMetrics' own
    batch = [Metric("d", "x", v, A.MAX) for v in (1, 2.5, np.float32(3.0))]
    batch += [Metric("d", "c", v, A.CATEGORICAL_COUNT) for v in ("web", 3, "web")]
    batch += [Metric("d", "m", v, A.MEAN) for v in (1.0, 2.0)]
    aggregator.update(batch)
    aggregator.update(batch[:1])
    x, c, m = (aggregator.metrics[name] for name in ("m0", "m1", "m2"))
    assert [t.dtype for t in x.received] == [torch.float64, torch.float64]
    assert [t.tolist() for t in x.received] == [[1.0, 2.5, 3.0], [1.0]]
    assert c.received == [["web", 3, "web"]]
    assert (x.update_count, c.update_count, m.update_count) == (2, 1, 1)  # counted by TorchMetrics' wrapper
    assert aggregator.get_metrics_for_logging() == {"train_d/x": 4.0, "train_d/c": 3.0, "train_d/m": 1.5}
    before = snapshot(aggregator)
    for bad, exc, match in (
        ([Metric("d", "x", math.nan, A.MAX)], ValueError, "'x' of dataset 'd' is a MAX: expected a finite number"),
        ([Metric("d", "c", 1.5, A.CATEGORICAL_COUNT)], TypeError, "CATEGORICAL_COUNT: expected str or int"),
        ([Metric("d", "new", [1.0], A.MAX)], TypeError, "MAX: expected a finite number, got \\[1.0\\]"),
    ):
        with pytest.raises(exc, match=match):
            aggregator.update([*batch, *bad])
        assert_unchanged(aggregator, before)
    assert [len(r) for r in (x.received, c.received)] == [2, 1]


class NonNegativeTotal(TorchMetric):
    """A registered metric with a check of its own: ``update`` refuses negative values, after changing its states."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("seen", default=[], dist_reduce_fx="cat")

    def update(self, values):
        self.total += values.sum()  # in place, before the check: a refusal leaves a changed state behind
        self.seen.append(values)
        if bool((values < 0).any()):
            raise ValueError("NonNegativeTotal takes no negative values")

    def compute(self):
        return self.total


def test_a_batch_that_a_registered_metric_refuses_changes_nothing():
    """The aggregator's checks passed, then a registered metric's own ``update`` raised: the keys updated
    before it (and its own half-done update) stayed applied, and the batch's new keys were registered."""
    agg = MetricsAggregator()
    agg.register_handler(A.MAX, NonNegativeTotal)
    agg.update([Metric("d", "a", 1.0, A.MAX), Metric("d", "b", 2.0, A.MAX), Metric("d", "n", 5, A.SUM)])
    before = snapshot(agg)
    expected = {"train_d/a": 1.0, "train_d/b": 2.0, "train_d/n": 5.0}
    bad = [
        Metric("d", "n", 1, A.SUM),  # a default handler's key
        Metric("d", "a", 3.0, A.MAX),  # applied first
        Metric("new", "c", 4.0, A.MAX),  # a new key
        Metric("d", "b", -1.0, A.MAX),  # refused by the metric itself
    ]
    with pytest.raises(ValueError, match="NonNegativeTotal takes no negative values"):
        agg.update(bad)
    assert_unchanged(agg, before)
    assert [m.update_count for m in agg.metrics.values()] == [1, 1, 1]
    assert [len(m.seen) for m in list(agg.metrics.values())[:2]] == [1, 1]
    assert agg.get_metrics_for_logging() == expected
    agg.update(bad[:3])
    assert agg.get_metrics_for_logging() == {"train_d/a": 4.0, "train_d/b": 2.0, "train_d/n": 6.0, "train_new/c": 4.0}


class Returns(TorchMetric):
    """A registered metric whose ``compute`` returns ``self.value`` (whatever a handler author may write)."""

    full_state_update = False

    def __init__(self, value):
        super().__init__()
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.value = value

    def update(self, values):
        self.n += len(values)

    def compute(self):
        return self.value


def test_registered_metric_may_return_plain_numbers_and_a_bad_value_is_named():
    """A dict of plain numbers used to crash (``'float' object has no attribute 'reshape'``), and a tensor of
    several values raised ``only one element tensors can be converted`` without naming the metric."""
    agg = MetricsAggregator()
    agg.register_handler(A.MEAN, lambda: Returns({"p50": 1.5, "n": 2, "t": torch.tensor([4.0])}))
    agg.register_handler(A.MAX, lambda: Returns(np.float32(7.0)))
    agg.update([Metric("d", "m", 1.0, A.MEAN), Metric("d", "x", 1.0, A.MAX)])
    assert agg.get_metrics_for_logging() == {
        "train_d/m_p50": 1.5,
        "train_d/m_n": 2.0,
        "train_d/m_t": 4.0,
        "train_d/x": 7.0,
    }
    for bad, shown in ((torch.tensor([1.0, 2.0]), r"Tensor of shape \(2,\)"), ("oops", "str: 'oops'")):
        for value in (bad, {"a": torch.tensor(1.0), "b": bad}):
            agg = MetricsAggregator()
            agg.register_handler(A.SUM, lambda value=value: Returns(value))
            agg.update([Metric("d", "x", 1, A.SUM)])
            with pytest.raises(TypeError, match=rf"SUM handler's metric for 'train_d/x' to return a number.*{shown}"):
                agg.get_metrics_for_logging()


def test_reset_forgets_everything():
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "x", 1, A.SUM)])
    aggregator.reset()
    assert aggregator.get_metrics_for_logging() == {}
    aggregator.update([Metric("d", "x", 2, A.MEAN)])  # the name is free again
    assert aggregator.get_metrics_for_logging() == {"train_d/x": 2.0}


def test_state_dict_resumes_exactly():
    records = make_records(np.random.default_rng(7), 4000)
    batches = [records[i : i + 250] for i in range(0, len(records), 250)]
    original = MetricsAggregator()
    for batch in batches[:7]:
        original.update(batch)
    state = original.state_dict()
    json.dumps(state["metadata"])  # the non-tensor part is JSON-serialisable
    assert all(isinstance(v, torch.Tensor) for v in state["tensors"].values())
    buffer = io.BytesIO()
    torch.save({"metadata": json.loads(json.dumps(state["metadata"])), "tensors": state["tensors"]}, buffer)
    buffer.seek(0)
    resumed = MetricsAggregator()
    resumed.update([Metric("stale", "x", 1, A.SUM)])  # replaced by the checkpoint
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.state_dict()["metadata"] == state["metadata"]  # update counts included
    assert resumed.get_metrics_for_logging() == original.get_metrics_for_logging()
    for batch in batches[7:]:
        original.update(batch)
        resumed.update(batch)
    assert resumed.get_metrics_for_logging() == original.get_metrics_for_logging()
    assert_matches_reference(resumed.get_metrics_for_logging(), numpy_reference(records))
    assert resumed.state_dict()["metadata"] == original.state_dict()["metadata"]
    with pytest.raises(ValueError, match="aggregated as"):
        resumed.update([Metric(records[0].dataset_name, records[0].name, "cat", A.CATEGORICAL_COUNT)])


def test_load_state_dict_rejects_foreign_checkpoints():
    aggregator = MetricsAggregator()
    with pytest.raises(ValueError, match=r"MetricsAggregator\.state_dict"):
        aggregator.load_state_dict({"foo": 1})
    source = MetricsAggregator()
    source.update([Metric("d", "x", 1, A.SUM)])
    aggregator.register_handler(A.SUM, Mean)
    with pytest.raises(ValueError, match="do not match"):
        aggregator.load_state_dict(source.state_dict())


def test_checkpoints_keep_torchmetrics_state_names_whatever_the_handlers_nan_strategy():
    """Sum/Mean name their states after their NaN setting in memory (compute groups); the aggregator's checkpoint
    keeps TorchMetrics' names, so a handler of another nan_strategy (or TorchMetrics' own MeanMetric) resumes it."""
    from functools import partial

    source = MetricsAggregator()
    source.update([Metric("d", "s", 2.5, A.SUM), Metric("d", "m", 1.0, A.MEAN), Metric("d", "m", 4.0, A.MEAN)])
    state = source.state_dict()
    assert sorted(state["tensors"]) == ["0/sum_value", "1/mean_value", "1/weight"]
    for handlers in ({A.SUM: partial(Sum, nan_strategy="ignore")}, {A.MEAN: MeanMetric}):
        resumed = MetricsAggregator()
        for agg_type, handler in handlers.items():
            resumed.register_handler(agg_type, handler)
        resumed.load_state_dict(state)
        resumed.update([Metric("d", "s", 0.25, A.SUM), Metric("d", "m", 7.0, A.MEAN)])
        logged = resumed.get_metrics_for_logging(prefix="train")
        assert logged == {"train_d/s": 2.75, "train_d/m": float(Fraction(1 + 4 + 7, 3))}


def test_load_state_dict_of_an_incomplete_checkpoint_is_a_value_error_and_changes_nothing():
    """A truncated or hand-edited checkpoint raised a bare ``KeyError`` ('0/sum_value', 'tensors')."""
    source = MetricsAggregator()
    source.update([Metric("a", "x", 1, A.SUM), Metric("a", "c", "w", A.CATEGORICAL_COUNT)])
    state = source.state_dict()
    entry = state["metadata"]["metrics"][0]
    bad_states = [
        ({"metadata": state["metadata"], "tensors": {}}, r"lacks the tensor '0/sum_value' \(state 'sum_value' of"),
        ({"metadata": state["metadata"]}, "'tensors' dict and a 'metrics' list"),
        ({"metadata": {"format": state["metadata"]["format"]}, "tensors": {}}, "'tensors' dict and a 'metrics' list"),
        ({**state, "metadata": {**state["metadata"], "metrics": [{**entry, "agg_type": "bogus"}]}}, "entry 0 .*bogus"),
        ({**state, "metadata": {**state["metadata"], "metrics": [{"name": "x"}]}}, "entry 0 .*KeyError"),
    ]
    target = MetricsAggregator()
    target.update([Metric("keep", "y", 5, A.SUM)])
    before = snapshot(target)
    for bad, match in bad_states:
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(bad)
        assert_unchanged(target, before)
    assert target.get_metrics_for_logging() == {"train_keep/y": 5.0}


def test_to_device_keeps_working():
    aggregator = MetricsAggregator().to("cpu")
    aggregator.update([Metric("d", "x", 1, A.SUM)])
    assert aggregator.get_metrics_for_logging() == {"train_d/x": 1.0}


# ----------------------------------------------------------------------------- DDP (2 gloo ranks)


def rank_records(rank, empty_rank):
    """Rank 0: alpaca + shared; rank 1: shared + code, other categories (or nothing at all)."""
    rng = np.random.default_rng(100 + rank)
    if rank == 1 and empty_rank:
        return []
    if rank == 0:
        return make_records(rng, 2500, datasets=("alpaca", "shared"), categories=("web", "book"))
    return make_records(rng, 1800, datasets=("shared", "code"), categories=(3, "wiki", "book"))


def _ddp_aggregate(rank, world_size, empty_rank):
    records = rank_records(rank, empty_rank)
    aggregator = MetricsAggregator()
    for lo in range(0, len(records), 300):
        aggregator.update(records[lo : lo + 300])
    first = aggregator.get_metrics_for_logging()
    # logging again (cached locally, collective again) and after more data stays consistent
    second = aggregator.get_metrics_for_logging()
    if rank == 0:
        aggregator.update([Metric("late", "x", 2, A.SUM), Metric("shared", "source", "late", A.CATEGORICAL_COUNT)])
    third = aggregator.get_metrics_for_logging("val")
    return first, second, third


@pytest.mark.ddp
@pytest.mark.parametrize("empty_rank", [False, True], ids=["different-datasets", "empty-rank"])
def test_ddp_ranks_with_different_datasets_and_categories(ddp_pool, empty_rank):
    results = ddp_pool.run(_ddp_aggregate, empty_rank)
    assert results[0] == results[1]  # every rank gets the same dict
    first, second, third = results[0]
    all_records = rank_records(0, empty_rank) + rank_records(1, empty_rank)
    assert_matches_reference(first, numpy_reference(all_records))
    assert first == second
    late = [
        *all_records,
        Metric("late", "x", 2, A.SUM),
        Metric("shared", "source", "late", A.CATEGORICAL_COUNT),
    ]
    assert_matches_reference(third, numpy_reference(late, "val"))
    # the median across ranks is the median of all values (not a mean of per-rank medians)
    seq = np.array([r.value for r in all_records if r.dataset_name == "shared" and r.name == "seq_len"], dtype=float)
    np.testing.assert_allclose(first["train_shared/seq_len_stat_p50"], np.median(seq), rtol=ALPHA)


OFFSET_VALUES = {
    "1e7": 1e7 + np.arange(10.0),
    "1e9": 1e9 + np.arange(100.0) / 100,
    "1e15": 1e15 + 7.0 * np.arange(60.0),
}


def _ddp_offset_distribution(rank, world_size, name):
    values = OFFSET_VALUES[name][rank::world_size]  # each rank its share, in uneven batches
    aggregator = MetricsAggregator()
    for lo in range(0, values.size, 3 + rank):
        aggregator.update([Metric("d", "x", float(v), A.DISTRIBUTION) for v in values[lo : lo + 3 + rank]])
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
@pytest.mark.parametrize("name", list(OFFSET_VALUES))
def test_ddp_distribution_std_of_values_with_a_large_offset(ddp_pool, name):
    """Each rank's sums are taken about its own first value; the sync re-shifts them to one shift before adding
    them: the std of values with a large offset across ranks is that of all of them (statistics.stdev)."""
    results = ddp_pool.run(_ddp_offset_distribution, name)
    assert results[0] == results[1]
    values = OFFSET_VALUES[name].tolist()
    assert results[0]["train_d/x_stat_mean"] == statistics.fmean(values)
    assert results[0]["train_d/x_stat_std"] == pytest.approx(statistics.stdev(values), rel=1e-9)


def test_distribution_std_of_the_torchtune_example_with_a_large_offset():
    """Ten values 1e7, 1e7 + 1, ..., 1e7 + 9 in two batches: ``_stat_std`` was left out (the float64 sums
    of x and x^2 cancelled); torchtune logs the sample std, statistics.stdev's 3.0277. A checkpoint resumes it."""
    values = [1e7 + i for i in range(10)]
    agg = MetricsAggregator()
    agg.update([Metric("d", "x", v, A.DISTRIBUTION) for v in values[:6]])
    agg.update([Metric("d", "x", v, A.DISTRIBUTION) for v in values[6:]])
    out = agg.get_metrics_for_logging()
    assert out["train_d/x_stat_std"] == pytest.approx(statistics.stdev(values), rel=1e-14)
    assert out["train_d/x_stat_mean"] == statistics.fmean(values)
    resumed = MetricsAggregator()
    resumed.load_state_dict(agg.state_dict())
    assert resumed.get_metrics_for_logging() == out


def _ddp_conflict(rank, world_size):
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "x", 1, A.SUM if rank == 0 else A.MAX)])
    try:
        aggregator.get_metrics_for_logging()
    except ValueError as err:
        return str(err)
    return None


@pytest.mark.ddp
def test_ddp_type_conflict_between_ranks_raises_on_every_rank(ddp_pool):
    messages = ddp_pool.run(_ddp_conflict)
    assert all(m is not None and "SUM" in m and "MAX" in m and "ranks disagree" in m for m in messages)


def _ddp_state_dict(rank, world_size):
    records = rank_records(rank, False)
    aggregator = MetricsAggregator()
    aggregator.update(records[:1000])
    resumed = MetricsAggregator()
    resumed.load_state_dict(aggregator.state_dict())  # local states: each rank checkpoints its own part
    for agg in (aggregator, resumed):
        agg.update(records[1000:])
    return aggregator.get_metrics_for_logging(), resumed.get_metrics_for_logging()


@pytest.mark.ddp
def test_ddp_resume(ddp_pool):
    (a0, r0), (a1, r1) = ddp_pool.run(_ddp_state_dict)
    assert a0 == r0 == a1 == r1
    assert_matches_reference(a0, numpy_reference(rank_records(0, False) + rank_records(1, False)))


def test_no_warning_leaks_from_logging():
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "len", 1, A.DISTRIBUTION)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aggregator.get_metrics_for_logging()


def test_int_and_str_categories_with_the_same_text_keep_separate_log_keys():
    """`1` and `"1"` are different categories: neither count may overwrite the other in the logging dict."""
    values = [1, "1", "1", 2, "x", 1, 1, "1"]
    aggregator = MetricsAggregator()
    aggregator.update([Metric("ds", "src", v, AggregationType.CATEGORICAL_COUNT) for v in values])
    counts = Counter((type(v), v) for v in values)  # independent reference: Python's own tally
    assert aggregator.get_metrics_for_logging() == {
        "train_ds/src_count_1(int)": float(counts[int, 1]),
        "train_ds/src_count_1": float(counts[str, "1"]),
        "train_ds/src_count_2": float(counts[int, 2]),
        "train_ds/src_count_x": float(counts[str, "x"]),
    }
    clash = MetricsAggregator()
    clash.update([Metric("ds", "src", v, AggregationType.CATEGORICAL_COUNT) for v in (1, "1", "1(int)")])
    with pytest.raises(ValueError, match=r"would share the logging key '1\(int\)'"):
        clash.get_metrics_for_logging()


def test_enum_categories_keep_their_logged_key_through_a_checkpoint():
    """A (str, Enum) / IntEnum category is its plain value: one key, the same before and after load_state_dict."""

    class Source(str, enum.Enum):
        WEB = "web"
        APP = "app"

    class Shard(enum.IntEnum):
        THREE = 3

    values = [Source.WEB, "web", Source.APP, Shard.THREE, 3, Source.WEB]
    plain = Counter(v.value if isinstance(v, enum.Enum) else v for v in values)  # the values they equal
    restored = _counted_and_restored(values, plain)
    restored.update([Metric("d", "src", Source.WEB, AggregationType.CATEGORICAL_COUNT)])
    assert restored.get_metrics_for_logging()["train_d/src_count_web"] == plain["web"] + 1


def _counted_and_restored(values: list, plain: Counter) -> MetricsAggregator:
    """CATEGORICAL_COUNT of ``values`` logs the counts ``plain`` (a ``Counter`` of the plain values they equal),
    and so does an aggregator restored from its state_dict, which is returned."""
    expected = {f"train_d/src_count_{k}": float(c) for k, c in plain.items()}
    agg = MetricsAggregator()
    agg.update([Metric("d", "src", v, AggregationType.CATEGORICAL_COUNT) for v in values])
    assert agg.get_metrics_for_logging() == expected
    restored = MetricsAggregator()
    restored.load_state_dict(agg.state_dict())
    assert restored.get_metrics_for_logging() == expected
    return restored


def test_numpy_and_tensor_integer_categories_are_their_int():
    """np.int64 (a pandas/pyarrow column), one-element integer tensors and (like them) one-element integer
    arrays are the int category they equal."""
    values = [np.int64(3), 3, torch.tensor(3), np.uint8(7), torch.tensor([7], dtype=torch.int32), np.str_("web"), "web"]
    values += [np.array(3), np.array([7], dtype=np.int16)]
    plain = Counter(
        int(np.asarray(v).item()) if not isinstance(v, str) else str(v) for v in values
    )  # 3: 4, 7: 3, "web": 2
    _counted_and_restored(values, plain)


def test_categories_with_lone_surrogates_are_counted_and_restored():
    """Text decoded with ``errors="surrogateescape"`` (file names, raw bytes) holds lone surrogates; such a
    category is a ``str`` like any other. Its key used to fail to encode after the batch was accepted, leaving
    the other keys of the batch updated (a half-applied batch)."""
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")  # 'caf\udce9'
    values = [odd, "web", odd, "\ud800"]
    agg = MetricsAggregator()
    agg.update([Metric("d", "n", 1, A.SUM)])
    agg.update([Metric("d", "n", 1, A.SUM)] + [Metric("d", "src", v, A.CATEGORICAL_COUNT) for v in values])
    expected = {"train_d/n": 2.0} | {f"train_d/src_count_{k}": float(c) for k, c in Counter(values).items()}
    assert agg.get_metrics_for_logging() == expected
    restored = MetricsAggregator()
    restored.load_state_dict(agg.state_dict())
    assert restored.get_metrics_for_logging() == expected


@pytest.mark.parametrize(
    "bad",
    [
        np.True_,
        torch.tensor(True),
        torch.tensor(2.0),
        np.float64(2.0),
        torch.tensor([1, 2]),
        np.array([1, 2]),
        np.array([2.0]),
        np.array([True]),
        np.timedelta64(3),
        np.timedelta64(3, "s"),
        np.array([np.timedelta64(3)]),
    ],
    ids=[
        "np-bool",
        "bool-tensor",
        "float-tensor",
        "np-float",
        "two-element-tensor",
        "two-element-array",
        "float-array",
        "bool-array",
        "np-duration",
        "np-duration-seconds",
        "duration-array",
    ],
)
def test_non_integer_numpy_or_tensor_categories_are_rejected(bad):
    agg = MetricsAggregator()
    agg.update([Metric("d", "src", 1, AggregationType.CATEGORICAL_COUNT)])
    with pytest.raises(TypeError, match="CATEGORICAL_COUNT: expected str or int categories"):
        agg.update(
            [Metric("d", "src", 2, AggregationType.CATEGORICAL_COUNT), Metric("d", "src", bad, A.CATEGORICAL_COUNT)]
        )
    assert agg.get_metrics_for_logging() == {"train_d/src_count_1": 1.0}


@pytest.mark.parametrize(
    "records",
    [
        [Metric("a/b", "c", 1, AggregationType.SUM), Metric("a", "b/c", 2, AggregationType.SUM)],
        [Metric("d", "x", 5, AggregationType.DISTRIBUTION), Metric("d", "x_stat_mean", 100, AggregationType.SUM)],
        [Metric("d", "x", "a", AggregationType.CATEGORICAL_COUNT), Metric("d", "x_count_a", 100, AggregationType.MAX)],
    ],
)
def test_two_metrics_logged_under_one_key_raise_instead_of_overwriting(records):
    agg = MetricsAggregator()
    agg.update(records)
    with pytest.raises(ValueError, match="one key"):
        agg.get_metrics_for_logging()


def test_max_and_min_records_whose_sum_overflows_are_accepted():
    """A MAX/MIN batch is refused only for a non-number, NaN or inf: its sum is never needed (np.max/np.min)."""
    values = [1e308, 1e308, -1.2e308, -1.2e308]
    agg = MetricsAggregator()
    agg.update([Metric("d", name, v, t) for name, t in (("hi", A.MAX), ("lo", A.MIN)) for v in values])
    assert agg.get_metrics_for_logging() == {"train_d/hi": float(np.max(values)), "train_d/lo": float(np.min(values))}


@pytest.mark.parametrize(
    "low", [np.float32(1.0), torch.tensor(1.0), torch.tensor([1.0], dtype=torch.float16), np.float16(1.0)]
)
def test_max_and_min_of_float32_values_and_python_floats_compare_exactly(low):
    """A batch with a float32 tensor or NumPy scalar and a Python float: MAX kept the float32 1.0 as the larger of
    1.0 and 1 + 2**-30 (Python's max compared them in float32, where the float rounds to 1.0), MIN likewise."""
    above, below = 1 + 2**-30, 1 - 2**-30
    agg = MetricsAggregator()
    agg.update([Metric("d", "hi", low, A.MAX), Metric("d", "hi", above, A.MAX)])
    agg.update([Metric("d", "lo", low, A.MIN), Metric("d", "lo", below, A.MIN)])
    assert agg.get_metrics_for_logging() == {"train_d/hi": above, "train_d/lo": below}


@pytest.mark.parametrize("value", [2.0**485 * (1 + 2**-52), 1e150, 1e153, -1.3e154, 1e200, 1e306, 1e-165, 1e-300])
@pytest.mark.parametrize("batch", [1, 2, 200])
def test_distribution_records_of_any_magnitude_give_the_exact_moments_whatever_the_batching(value, batch):
    """Magnitudes whose squares (or their sum) overflow or underflow float64 were refused above 2**485 and
    wrong below ~1e-154; their sums are kept scaled now. Reference: exact fractions (``value`` times small integers).
    """
    multiples = np.arange(1.0, 201.0) % 7 + 1  # 1..7
    values = [value * k for k in multiples]
    agg = MetricsAggregator()
    for start in range(0, len(values), batch):
        agg.update([Metric("d", "x", v, AggregationType.DISTRIBUTION) for v in values[start : start + batch]])
    out = agg.get_metrics_for_logging()
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    var = sum(((v - mean) ** 2 for v in exact), Fraction(0)) / (len(exact) - 1)
    # scaled by value (exact), so that the float conversions neither underflow nor overflow
    ratio_mean, ratio_var = mean / Fraction(value), var / Fraction(value) ** 2
    assert out["train_d/x_stat_max"] == max(values) and out["train_d/x_stat_min"] == min(values)
    np.testing.assert_allclose(out["train_d/x_stat_mean"] / value, float(ratio_mean), rtol=1e-15)
    np.testing.assert_allclose(out["train_d/x_stat_std"] / abs(value), math.sqrt(float(ratio_var)), rtol=1e-14)


@pytest.mark.parametrize("batch", [1, 7, 5000])
def test_distribution_magnitudes_up_to_the_limit_give_the_numpy_std_whatever_the_batching(batch):
    """5000 values up to 2**485 (sum of squares ~2**982): finite states and np.std(ddof=1), in any batches."""
    rng = np.random.default_rng(5)
    values = np.concatenate([[2.0**485, -(2.0**485)], 2.0**485 * rng.uniform(-1, 1, 4998)])
    agg = MetricsAggregator()
    for start in range(0, values.size, batch):
        agg.update([Metric("d", "x", float(v), AggregationType.DISTRIBUTION) for v in values[start : start + batch]])
    out = agg.get_metrics_for_logging()
    assert out["train_d/x_stat_max"] == values.max() and out["train_d/x_stat_min"] == values.min()
    np.testing.assert_allclose(out["train_d/x_stat_mean"], values.mean(), rtol=1e-9)
    np.testing.assert_allclose(out["train_d/x_stat_std"], values.std(ddof=1), rtol=1e-12)


def test_distribution_tensor_whose_squares_overflow_float64_gives_the_std():
    """Bug: squares of 1e200 overflowed, so the std was ``nan`` with a warning; it is exact now (np.std of [1, -1, 0])."""
    from torchmetrics_ext.aggregation import Distribution

    metric = Distribution()
    metric.update(torch.tensor([1e200, -1e200, 0.0], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the percentiles of values beyond the sketch's range say so (the std is what this is about)
        warnings.filterwarnings("ignore", category=SketchRangeWarning)
        std = metric.compute()["std"].item()
    np.testing.assert_allclose(std, np.std([1.0, -1.0, 0.0], ddof=1) * 1e200, rtol=1e-15)


def test_loading_a_checkpoint_of_another_handler_setting_is_a_value_error():
    from torchmetrics_ext.aggregation import Distribution

    source = MetricsAggregator()
    source.register_handler(AggregationType.DISTRIBUTION, lambda: Distribution(relative_accuracy=0.05))
    source.update([Metric("d", "x", 1.0, AggregationType.DISTRIBUTION)])
    target = MetricsAggregator()
    with pytest.raises(ValueError, match=r"do not (fit|match)"):
        target.load_state_dict(source.state_dict())


def test_logging_leaves_the_process_warning_filters_alone() -> None:
    """A warning shown once (Python's default filter) is not shown again after each logging call."""
    aggregator = MetricsAggregator()
    aggregator.update([Metric("d", "x", 1.0, AggregationType.SUM), Metric("d", "m", 2.0, AggregationType.MAX)])

    def step() -> None:
        warnings.warn("the user's own warning", stacklevel=1)
        assert aggregator.get_metrics_for_logging() == {"train_d/x": 1.0, "train_d/m": 2.0}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(5):
            step()
    assert [str(w.message) for w in caught] == ["the user's own warning"]


def test_a_checkpoint_written_before_distribution_kept_its_compensations_loads():
    """DISTRIBUTION states saved before the compensations and ``scaled_sums`` existed load as zeros."""
    values = [1.0, 2.0, 4.0, 8.5]
    source = MetricsAggregator()
    source.update([Metric("d", "x", v, AggregationType.DISTRIBUTION) for v in values])
    state = source.state_dict()
    (entry,) = state["metadata"]["metrics"]
    for name in ("total_compensation", "total_sq_compensation", "scaled_sums", "scaled_sums_compensation"):
        del entry["states"][name]
        del state["tensors"][f"0/{name}"]
    resumed = MetricsAggregator()
    resumed.load_state_dict(state)
    resumed.update([Metric("d", "x", 3.0, AggregationType.DISTRIBUTION)])
    resumed.update([Metric("d", "x", 1e-200, AggregationType.DISTRIBUTION)])  # into the band of tiny values
    out = resumed.get_metrics_for_logging()
    data = np.array([*values, 3.0, 1e-200])
    assert out["train_d/x_stat_mean"] == pytest.approx(data.mean(), rel=1e-15)
    assert out["train_d/x_stat_std"] == pytest.approx(data.std(ddof=1), rel=1e-14)
    del entry["states"]["total"]  # a state that cannot be derived is still refused
    with pytest.raises(ValueError, match="do not match"):
        MetricsAggregator().load_state_dict(state)


def test_a_checkpoint_with_one_tensor_per_category_loads():
    """CATEGORICAL_COUNT states saved as ``category_keys`` (one ``uint8`` tensor per category, ``b"s"`` + UTF-8 or
    ``b"i"`` + digits; written here by hand as earlier versions did) load and resume their counts."""
    old_keys = [b"sweb", b"i7", b"s7"]
    state = {
        "metadata": {
            "format": "torchmetrics_ext.MetricsAggregator/1",
            "metrics": [
                {
                    "dataset_name": "d",
                    "name": "source",
                    "agg_type": "categorical_count",
                    "update_count": 2,
                    "states": {"counts": None, "category_keys": len(old_keys)},
                }
            ],
        },
        "tensors": {
            "0/counts": torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64),
            **{f"0/category_keys/{j}": torch.tensor(list(key), dtype=torch.uint8) for j, key in enumerate(old_keys)},
        },
    }
    resumed = MetricsAggregator()
    resumed.load_state_dict(state)
    resumed.update([Metric("d", "source", c, A.CATEGORICAL_COUNT) for c in ["web", 7, "new"]])
    counts = Counter({"web": 2, 7: 1, "7": 3}) + Counter(["web", 7, "new"])
    expected = {f"train_d/source_count_{c}" + ("(int)" if c == 7 else ""): float(n) for c, n in counts.items()}
    assert resumed.get_metrics_for_logging() == expected
    entry = resumed.state_dict()["metadata"]["metrics"][0]
    assert entry["states"] == {"counts": None, "category_bytes": None, "category_ends": None}
    assert entry["update_count"] == 3
    del state["tensors"]["0/counts"], state["metadata"]["metrics"][0]["states"]["counts"]
    with pytest.raises(ValueError, match="do not match"):  # keys without counts are still refused
        MetricsAggregator().load_state_dict(state)


# one record per rank per name: a DISTRIBUTION whose standard deviation only exists over both ranks, a
# dataset only rank 1 sees, and a CATEGORICAL_COUNT category only rank 0 sees
_SMALL_RECORDS = {
    0: [Metric("ds", "seq_len", 3, A.DISTRIBUTION), Metric("ds", "source", "web", A.CATEGORICAL_COUNT)],
    1: [
        Metric("ds", "seq_len", 8, A.DISTRIBUTION),
        Metric("ds", "source", "book", A.CATEGORICAL_COUNT),
        Metric("other", "loss", 1.5, A.MEAN),
        Metric("ds", "source", "book", A.CATEGORICAL_COUNT),
    ],
}


def _ddp_small(rank, world_size, rank1_records):
    aggregator = MetricsAggregator()
    records = _SMALL_RECORDS[rank] if rank == 0 or rank1_records else []
    if records:
        aggregator.update(records)
    return aggregator.get_metrics_for_logging()


@pytest.mark.ddp
@pytest.mark.parametrize("rank1_records", [True, False], ids=["one-record-each", "rank1-no-records"])
def test_ddp_one_value_per_rank_distribution_and_categories(ddp_pool, rank1_records):
    """A distribution of one value per rank reports the standard deviation of both values (torchtune's
    ``_stat_std`` needs two values: absent when only one rank has one); categories and datasets seen by one
    rank reach every rank."""
    results = ddp_pool.run(_ddp_small, rank1_records)
    records = _SMALL_RECORDS[0] + (_SMALL_RECORDS[1] if rank1_records else [])
    assert results[0] == results[1]
    assert_matches_reference(results[0], numpy_reference(records))


COMPLEX_VALUES = [
    np.complex128(1 + 2j),  # a subclass of complex
    np.complex64(1 + 2j),  # not one
    np.complex128(3 + 0j),  # refused as Python's complex(3) is, imaginary part 0 or not
    1 + 2j,
    torch.tensor(1 + 2j),
    np.array(1 + 2j),
    np.array([1 + 2j]),
]
NUMBER_TYPES = [A.SUM, A.MEAN, A.MAX, A.MIN, A.DISTRIBUTION]


@pytest.mark.parametrize("registered", [False, True], ids=["default", "registered"])
@pytest.mark.parametrize("agg_type", NUMBER_TYPES, ids=lambda a: a.name)
@pytest.mark.parametrize("value", COMPLEX_VALUES, ids=lambda v: f"{type(v).__name__}({v})")
def test_complex_values_are_refused_and_change_nothing(value, agg_type, registered):
    """NumPy complex scalars convert to float (their real part, with a ComplexWarning), so math.fsum took
    ``np.complex128(1+2j)`` as 1.0 on the default handlers' path, and torch.tensor did on a registered
    metric's: they are refused as Python's ``complex`` is, with no warning before the error."""
    aggregator = MetricsAggregator()
    if registered:  # a plain torchmetrics metric: the values reach it as a float64 tensor
        aggregator.register_handler(agg_type, MeanMetric)
    aggregator.update([Metric("ds", "m", 1.0, agg_type)])
    before = snapshot(aggregator)
    expected = aggregator.get_metrics_for_logging()
    name = type(value).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=rf"Metric 'm' of dataset 'ds' is a {agg_type.name}: .*\({name}|{name} of"):
            aggregator.update([Metric("ds", "m", 2.0, agg_type), Metric("ds", "m", value, agg_type)])
    assert_unchanged(aggregator, before)
    assert aggregator.get_metrics_for_logging() == expected


@pytest.mark.parametrize("value", COMPLEX_VALUES, ids=lambda v: f"{type(v).__name__}({v})")
def test_complex_categories_are_refused(value):
    aggregator = MetricsAggregator()
    aggregator.update([Metric("ds", "src", "web", A.CATEGORICAL_COUNT)])
    before = snapshot(aggregator)
    with pytest.raises(TypeError, match=r"'src' of dataset 'ds' is a CATEGORICAL_COUNT: expected str or int"):
        aggregator.update(
            [Metric("ds", "src", "app", A.CATEGORICAL_COUNT), Metric("ds", "src", value, A.CATEGORICAL_COUNT)]
        )
    assert_unchanged(aggregator, before)


@pytest.mark.parametrize("agg_type", NUMBER_TYPES, ids=lambda a: a.name)
def test_real_numpy_scalars_are_still_taken(agg_type):
    """The complex check's slow path (a batch that is not all plain float/int) keeps real NumPy scalars."""
    aggregator = MetricsAggregator()
    values = [np.float32(0.5), np.int64(2), 1.5, np.float64(4.0), np.bool_(True)]
    aggregator.update([Metric("ds", "m", v, agg_type) for v in values])
    logged = aggregator.get_metrics_for_logging()
    exact = {A.SUM: 9.0, A.MEAN: 9.0 / 5, A.MAX: 4.0, A.MIN: 0.5, A.DISTRIBUTION: 9.0 / 5}[agg_type]
    key = "train_ds/m_stat_mean" if agg_type is A.DISTRIBUTION else "train_ds/m"
    assert logged[key] == exact


def test_a_checkpoint_keeps_the_states_of_a_windowed_handler():
    """A ``Windowed`` handler holds its states in its ``lifetime``/``window`` metrics and its ring (extra state),
    none of them in its own ``metric_state``: the checkpoint saved nothing of them, and a resumed run logged SUM 0
    and left MEAN out (``nan``), silently. References: plain Python over the values (window of the last 3 updates)."""
    from torchmetrics_ext import Windowed

    def aggregator() -> MetricsAggregator:
        out = MetricsAggregator()
        out.register_handler(A.SUM, lambda: Windowed(Sum(), window_size=3))
        out.register_handler(A.MEAN, lambda: Windowed(Mean(), window_size=3))
        return out

    def expected(values: list[float]) -> dict[str, float]:
        recent = values[-3:]  # one value per update: the window holds the last three updates
        return {
            "train_d/s_lifetime": math.fsum(values),
            "train_d/s_window": math.fsum(recent),
            "train_d/m_lifetime": statistics.fmean(values),
            "train_d/m_window": statistics.fmean(recent),
        }

    values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    original = aggregator()
    for value in values[:5]:
        original.update([Metric("d", "s", value, A.SUM), Metric("d", "m", value, A.MEAN)])
    state = original.state_dict()
    json.dumps(state["metadata"])
    assert all(isinstance(v, torch.Tensor) for v in state["tensors"].values())
    buffer = io.BytesIO()
    torch.save({"metadata": json.loads(json.dumps(state["metadata"])), "tensors": state["tensors"]}, buffer)
    buffer.seek(0)
    resumed = aggregator()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.get_metrics_for_logging() == expected(values[:5])
    for value in values[5:]:
        resumed.update([Metric("d", "s", value, A.SUM), Metric("d", "m", value, A.MEAN)])
    assert resumed.get_metrics_for_logging() == expected(values)


def test_a_checkpoint_of_a_wrapper_handler_written_before_its_inner_states_were_kept_loads():
    """TorchMetrics' ``Running`` keeps its window in its own states; a checkpoint written before the states of the
    metrics inside a handler were kept (no ``base_metric.*``) loads and resumes as before. Reference: the sum of the
    last three updates' values, in plain Python."""
    from torchmetrics.aggregation import SumMetric
    from torchmetrics.wrappers import Running

    def aggregator() -> MetricsAggregator:
        out = MetricsAggregator()
        out.register_handler(A.SUM, lambda: Running(SumMetric(), window=3))
        return out

    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    source = aggregator()
    for value in values[:3]:
        source.update([Metric("d", "s", value, A.SUM)])
    state = source.state_dict()
    entry = state["metadata"]["metrics"][0]
    assert "base_metric.sum_value" in entry["states"]
    entry["states"] = {k: v for k, v in entry["states"].items() if "." not in k}  # the earlier format
    state["tensors"] = {k: v for k, v in state["tensors"].items() if "." not in k}
    resumed = aggregator()
    resumed.load_state_dict(state)
    assert resumed.get_metrics_for_logging() == {"train_d/s": math.fsum(values[:3])}
    for value in values[3:]:
        resumed.update([Metric("d", "s", value, A.SUM)])
    assert resumed.get_metrics_for_logging() == {"train_d/s": math.fsum(values[-3:])}


class _ListOfInts(list):
    pass


@pytest.mark.parametrize(
    "tokens",
    [
        [5, 6, 7],
        (5, 6, 7),
        [np.int64(5), 6, 7],
        _ListOfInts([5, 6, 7]),
        range(3),
        "abc",
        torch.tensor([5, 6, 7]),
        np.array([5, 6, 7]),
    ],
    ids=["list", "tuple", "list_numpy_int", "list_subclass", "range", "str", "tensor", "ndarray"],
)
def test_transform_counts_one_sequence_of_any_kind_by_its_length(tokens):
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    assert [record.value for record in transform({"tokens": tokens})["metrics"]] == [1, 3, 3]


def test_transform_refuses_a_list_subclass_of_sequences():
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    with pytest.raises(ValueError, match=r"one sequence of tokens .*got a _ListOfInts of 1 sequences"):
        transform({"tokens": _ListOfInts([[1, 2, 3]])})


@pytest.mark.parametrize(
    "tokens",
    [[5, 6, 7], (5, 6, 7), torch.tensor([5, 6, 7]), np.array([5, 6, 7])],
    ids=["list", "tuple", "tensor", "ndarray"],
)
def test_transform_reads_a_plain_sequence_without_calling_the_several_sequences_check(tokens, monkeypatch):
    """Per-sample cost: a list or tuple of ints and a 1-D tensor or array are told apart inline (a call of the check
    cost a 1-D tensor sample ~7% of the transform's ~2.4 us; fails before for the tuple, tensor and array)."""
    from torchmetrics_ext.aggregation import transform as module

    calls = []
    monkeypatch.setattr(module, "_check_one_sequence", lambda *args: calls.append(args))
    transform = DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    transform({"tokens": tokens})
    assert calls == []


def test_replacing_a_handler_after_a_resume_says_to_register_before_loading():
    """The advice was "call reset() first", which on a resumed run forgets the state just loaded."""
    saved = MetricsAggregator()
    saved.update([Metric("alpaca", "seq_len", 3, A.DISTRIBUTION)])
    resumed = MetricsAggregator()
    resumed.load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match=r"register handlers before .*load_state_dict\(\) \(to resume: register, then"):
        resumed.register_handler(A.DISTRIBUTION, lambda: Distribution(percentiles=(50,)))
    fresh = MetricsAggregator()  # what the message asks for: the same state under the new handler
    fresh.register_handler(A.DISTRIBUTION, lambda: Distribution(percentiles=(50,)))
    fresh.load_state_dict(saved.state_dict())
    assert fresh.get_metrics_for_logging() == {
        "train_alpaca/seq_len_stat_mean": 3.0,
        "train_alpaca/seq_len_stat_min": 3.0,
        "train_alpaca/seq_len_stat_max": 3.0,
        "train_alpaca/seq_len_stat_p50": 3.0,
    }


@pytest.mark.parametrize("target", [torch.bfloat16, torch.float32, 3.5])
def test_to_a_dtype_is_a_type_error_naming_device(target):
    """``module.to(torch.bfloat16)`` is a habit; the aggregator's ``to`` takes a device and raised torch's own
    "device() received an invalid combination of arguments"."""
    aggregator = MetricsAggregator()
    aggregator.update([Metric("alpaca", "tokens_seen", 5, A.SUM)])
    with pytest.raises(TypeError, match=r"`device`.*float64"):
        aggregator.to(target)
    assert aggregator.get_metrics_for_logging() == {"train_alpaca/tokens_seen": 5.0}


def test_a_float32_sum_handler_warns_once_that_counts_past_2_24_round():
    """docs/migration_torchtune.md shows TorchMetrics' own classes as handlers; ``SumMetric`` keeps float32 states,
    so a ``tokens_seen`` total of 16,777,217 (reached in minutes of LLM fine-tuning) logged 16,777,216 silently."""
    from torchmetrics.aggregation import SumMetric

    aggregator = MetricsAggregator()
    aggregator.register_handler(A.SUM, SumMetric)
    records = [Metric("alpaca", "tokens_seen", n, A.SUM) for n in (2**24, 1)]
    with pytest.warns(UserWarning, match=r"SUM handler's SumMetric keeps float32 .*2\*\*24") as caught:
        aggregator.update(records)
        aggregator.update([Metric("code", "tokens_seen", 3, A.SUM)])  # another key of the same handler: no repeat
    assert sum("keeps float32" in str(w.message) for w in caught) == 1
    assert aggregator.get_metrics_for_logging()["train_alpaca/tokens_seen"] != math.fsum([2**24, 1])  # as warned
    exact = MetricsAggregator()  # the default Sum (float64) and a float64 SumMetric say nothing and count exactly
    exact.register_handler(A.MEAN, MeanMetric)  # a float32 MEAN handler (the page's loss example) says nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact.update([*records, Metric("alpaca", "loss", 2.0, A.MEAN)])
        assert exact.get_metrics_for_logging()["train_alpaca/tokens_seen"] == math.fsum([2**24, 1])
    # TorchMetrics' .to(device), done to every new metric, resets an aggregator's input dtype to float32: with
    # float64 states it still rounds each input, so it is told too
    double = MetricsAggregator()
    double.register_handler(A.SUM, lambda: SumMetric().set_dtype(torch.float64))
    with pytest.warns(UserWarning, match=r"SumMetric keeps float32"):
        double.update(records)
    assert double.get_metrics_for_logging()["train_alpaca/tokens_seen"] != math.fsum([2**24, 1])
