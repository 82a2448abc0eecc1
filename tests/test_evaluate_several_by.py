"""Several segmentations in one read: ``--by country --by device``, ``by: [[country], [device]]``.

The reference is each segmentation run alone (one ``by`` per run, the path every other evaluate test
checks against sklearn/numpy/pandas): the combined run must give exactly its records (values, keys,
order within the segmentation), its ``.values`` and its warnings, plus the overall records once. One
CTR check against a pandas ``groupby`` keeps the reference independent of the code under test too.
``TMX_SEVERAL_BY_SEEDS=N`` draws N more random datasets.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers.ddp import count_collectives
from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.config import load_config
from torchmetrics_ext.evaluate.segments import SegmentRows

SEGMENTATIONS = [["country"], ["device"], ["country", "device"]]
TASKS = {"click": ("p_click", "y_click"), "like": ("p_like", "y_like")}
SEEDS = [0, *range(100, 100 + int(os.environ.get("TMX_SEVERAL_BY_SEEDS", "0")))]


def _frame(seed: int, n: int = 600, invalid: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "p_click": rng.random(n),
            "y_click": (rng.random(n) < 0.3).astype(float),
            "p_like": rng.random(n),
            "y_like": (rng.random(n) < 0.6).astype(float),
            "w": rng.uniform(0.5, 2.0, n),
            "user": rng.integers(0, 40, n),
            "session": rng.integers(0, 60, n),
            "country": rng.choice(["fr", "us", "de", "jp"], n),
            "device": rng.choice(["ios", "android", "web"], n, p=[0.5, 0.45, 0.05]),
            "hour": rng.integers(0, 5, n),
            "watch": rng.exponential(3.0, n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "device"] = None  # a null segment
    if invalid:  # rows invalid for the like task alone: skipped for it (on_invalid="skip")
        frame.loc[rng.random(n) < 0.05, "y_like"] = np.nan
        frame.loc[(frame.country == "jp") & (frame.device == "web"), "y_like"] = np.nan  # segments empty for like
    return frame


def _write(frame: pd.DataFrame, directory, kind: str) -> str:
    """The frame as 3 files (Parquet with small row groups, or CSV) in ``directory/data``; returns that."""
    directory = directory / "data"
    directory.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        if kind == "parquet":
            pq.write_table(table, directory / f"part{i}.parquet", row_group_size=70)
        else:
            pacsv.write_csv(table, directory / f"part{i}.csv")
    return str(directory)


RUNS = {
    "pointwise": dict(metrics=["ne", "ctr", "calibration", "log_loss", "mse"], weights="w"),
    "auc_exact": dict(metrics=["auc", "auprc"]),
    "auc_binned": dict(metrics={"auc": {"num_bins": 64}, "ne": {}}),
    "gauc": dict(metrics=["gauc", "auc"], user="user"),
    "ranking": dict(metrics=["ndcg@5", "mrr", "recall@3"], session="session"),
    "ranking_user": dict(metrics=["ndcg@10", "ctr"], user="user", session="session"),
}


def _of(result, columns: list[str]) -> list[dict]:
    """The combined run's records of one segmentation: those holding its columns, in its order, and no others."""
    names = set(result.by)
    return [r for r in result.records if r["segment"] != "all" and [k for k in r if k in names] == columns]


def _nan_equal(records: list[dict]) -> list[dict]:
    """Records with every NaN as the text ``"nan"``, so that == compares them value by value (NaN != NaN)."""
    return [{k: "nan" if isinstance(v, float) and v != v else v for k, v in r.items()} for r in records]


def _is_subsequence(part: list, whole: list) -> bool:
    found = iter(whole)
    return all(any(item == other for other in found) for item in part)


def _check_combined(combined, singles: list, segmentations: list[list[str]]) -> None:
    overall = [r for r in combined.records if r["segment"] == "all"]
    tasks = len(combined.tasks)
    assert combined.records[:tasks] == overall  # the overall rows once, first
    for single, columns in zip(singles, segmentations):
        # the overall records of a run alone, its columns null there as the others'
        assert _nan_equal([{k: v for k, v in r.items() if k not in combined.by or k in columns} for r in overall]) == (
            _nan_equal([r for r in single.records if r["segment"] == "all"])
        )
        assert _nan_equal(_of(combined, columns)) == _nan_equal(single.records[tasks:]), columns  # values, keys, order
        assert _is_subsequence(single.warnings, combined.warnings), (single.warnings, combined.warnings)
        assert combined.rows_read == single.rows_read and combined.rows_skipped == single.rows_skipped
    assert len(combined.records) == tasks + sum(len(s.records) - tasks for s in singles)
    assert set(combined.warnings) == {line for s in singles for line in s.warnings}
    expected = {k: v for s in singles for k, v in s.values.items()}
    assert combined.values.keys() == expected.keys()
    assert _nan_equal([combined.values]) == _nan_equal([expected])


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_several_segmentations_equal_each_run_alone(tmp_path, seed, kind, name):
    data = _write(_frame(seed), tmp_path, kind)
    options = dict(RUNS[name], batch_size=128)
    combined = evaluate(data, TASKS, by=SEGMENTATIONS, **options)
    singles = [evaluate(data, TASKS, by=columns, **options) for columns in SEGMENTATIONS]
    _check_combined(combined, singles, SEGMENTATIONS)
    assert combined.segmentations == tuple(tuple(c) for c in SEGMENTATIONS)
    assert combined.by == ("country", "device")


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # random data: undefined segments
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_skipped_rows_and_empty_segments_per_segmentation(tmp_path, kind):
    """``on_invalid="skip"`` with rows invalid for one task (a group of tasks of its own), segments it has none of."""
    data = _write(_frame(3, invalid=True), tmp_path, kind)
    options = dict(metrics=["ne", "auc", "gauc", "ndcg@5"], user="user", session="session", on_invalid="skip")
    segmentations = [["device"], ["country", "device"], ["hour"]]
    combined = evaluate(data, TASKS, by=segmentations, batch_size=100, **options)
    singles = [evaluate(data, TASKS, by=columns, batch_size=100, **options) for columns in segmentations]
    _check_combined(combined, singles, segmentations)
    assert combined.rows_skipped > 0
    assert any("has no valid row in" in line for line in combined.warnings)  # jp/web: no like row


def test_xauc_and_a_regression_task(tmp_path):
    frame = _frame(4, n=300)
    tasks = {"click": ("p_click", "y_click"), "watch": ("p_like", "watch")}
    metrics = {"xauc": {}, "mse": {}, "auc": {}}
    metric_tasks = {"xauc": "watch", "mse": "watch", "auc": "click"}
    segmentations = [["device"], ["country"]]
    combined = evaluate(frame, tasks, metrics, by=segmentations, metric_tasks=metric_tasks)
    singles = [evaluate(frame, tasks, metrics, by=c, metric_tasks=metric_tasks) for c in segmentations]
    _check_combined(combined, singles, segmentations)


def test_values_against_pandas_groupby():
    """Independent of the code under test: each segmentation's CTR is the weighted label mean of its groupby."""
    frame = _frame(5)
    result = evaluate(frame, TASKS, ["ctr"], weights="w", by=[["country"], ["hour"], ["country", "hour"]])
    frame["wy"] = frame.w * frame.y_click
    for columns in (["country"], ["hour"], ["country", "hour"]):
        sums = frame.groupby(columns)[["w", "wy"]].sum()
        records = [r for r in _of(result, columns) if r["task"] == "click"]
        assert [tuple(r[c] for c in columns) for r in records] == [
            key if isinstance(key, tuple) else (key,) for key in sums.index
        ]
        for record, (w, wy) in zip(records, sums.itertuples(index=False)):
            assert record["ctr"] == pytest.approx(wy / w, rel=1e-12)
    assert result.values["ctr/click"] == pytest.approx(frame.wy.sum() / frame.w.sum(), rel=1e-12)
    fr2 = (frame.country == "fr") & (frame.hour == 2)
    assert result.values["ctr/click/country=fr/hour=2"] == pytest.approx(
        frame.wy[fr2].sum() / frame.w[fr2].sum(), rel=1e-12
    )


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_cli_repeated_by_equals_each_run_alone(tmp_path, capsys, suffix):
    data = _write(_frame(6), tmp_path, "parquet")
    flags = ["--task", "click=p_click:y_click", "--task", "like=p_like:y_like", "--metrics", "ne,auc,gauc"]
    flags += ["--user", "user", "--no-progress"]
    out = tmp_path / f"several{suffix}"
    assert cli.main(["evaluate", data, *flags, "--by", "country", "--by", "device", "--by", "country, device",
                     "--output", str(out)]) == 0  # fmt: skip
    table = capsys.readouterr().out
    singles = []
    for columns in ("country", "device", "country,device"):
        path = tmp_path / f"single_{columns.replace(',', '_')}{suffix}"
        assert cli.main(["evaluate", data, *flags, "--by", columns, "--output", str(path)]) == 0
        singles.append((path, capsys.readouterr().out))
    if suffix == ".json":
        combined = json.loads(out.read_text())
        assert combined["by"] == [["country"], ["device"], ["country", "device"]]
        names = {"country", "device"}
        rest = combined["records"][2:]
        for (path, _), columns in zip(singles, SEGMENTATIONS):
            single = json.loads(path.read_text())
            assert single["by"] == columns
            assert [r for r in rest if [k for k in r if k in names] == columns] == single["records"][2:]  # NaN: null
            assert _is_subsequence(single["warnings"], combined["warnings"])
    else:
        nulls = pacsv.ConvertOptions(strings_can_be_null=True)  # a CSV null is an empty field

        def read(path: str) -> pa.Table:
            return pq.read_table(path) if suffix == ".parquet" else pacsv.read_csv(path, convert_options=nulls)

        combined = read(str(out)).to_pandas()
        parts = [read(str(path)).to_pandas() for path, _ in singles]
        for part, columns in zip(parts, SEGMENTATIONS):
            mine = combined.iloc[2:]
            mine = mine[mine.segment.isin(part.segment[2:])]
            others = [c for c in ("country", "device") if c not in columns]
            assert bool(mine[others].isna().all().all())  # another segmentation's column: null
            mine = mine[list(part.columns)]
            pd.testing.assert_frame_equal(mine.reset_index(drop=True), part.iloc[2:].reset_index(drop=True))
        assert len(combined) == 2 + sum(len(part) - 2 for part in parts)
    # the printed table: each run alone's segment lines, in its order
    lines = table.splitlines()
    for _, printed in singles:
        body = [line.split()[0] for line in printed.splitlines()[3:] if line and not line.startswith("all ")]
        body = [b for b in body if "=" in b]
        assert _is_subsequence(body, [line.split()[0] for line in lines if line])


def test_config_list_of_lists_equals_the_command_line(tmp_path, capsys):
    data = _write(_frame(7, n=200), tmp_path, "csv")
    config = tmp_path / "run.yaml"
    config.write_text("by: [[country], [device], [country, device]]\nmetrics: [ctr, auc]\n")
    assert load_config(str(config))["by"] == SEGMENTATIONS
    flags = ["--task", "click=p_click:y_click", "--no-progress"]
    assert cli.main(["evaluate", data, *flags, "--config", str(config), "--output", str(tmp_path / "a.json")]) == 0
    by = ["--by", "country", "--by", "device", "--by", "country,device", "--metrics", "ctr,auc"]
    assert cli.main(["evaluate", data, *flags, *by, "--output", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["records"] == b["records"] and a["by"] == b["by"] == SEGMENTATIONS  # JSON: NaN written null
    # today's forms keep their meaning: a string and a list of strings are one segmentation
    for text, expected in (("by: country\n", "country"), ("by: [country, device]\n", ["country", "device"])):
        config.write_text(text)
        assert load_config(str(config))["by"] == expected


def test_python_forms():
    frame = _frame(8, n=120)
    listed = evaluate(frame, TASKS, ["ctr"], by=[["country"], ["device"]])
    assert _nan_equal(evaluate(frame, TASKS, ["ctr"], by=(("country",), ("device",))).records) == (
        _nan_equal(listed.records)
    )
    # one segmentation in the nested form is today's one-`by` run
    one = evaluate(frame, TASKS, ["ctr"], by=[["country", "device"]])
    alone = evaluate(frame, TASKS, ["ctr"], by=["country", "device"])
    assert _nan_equal(one.records) == _nan_equal(alone.records)
    assert one.segmentations == () and one.by == ("country", "device")


@pytest.mark.parametrize(
    ("by", "match"),
    [
        ([["country"], ["country"]], r"distinct segmentations in `by`, got \['country'\] twice"),
        ([["country"], []], "Expected every segmentation of `by` to name a column"),
        ([["country", "country"], ["device"]], r"'country' is repeated"),
        (["country", ["device"]], "Expected `by` to be a column name or a list of column names"),
        ([["country"], ["rows"]], "has the name of a field of the result records"),
        ([["country"], [3]], "Expected `by` to be a column name or a list of column names"),
    ],
)
def test_bad_segmentations_fail_before_reading(by, match):
    class Unread:  # a data source that fails if read: the refusal comes first
        def __getattr__(self, name):
            raise AssertionError("read")

    with pytest.raises(ValueError, match=match):
        evaluate(Unread(), TASKS, ["ctr"], by=by)


def test_cli_refuses_an_empty_repeated_by(tmp_path, capsys):
    data = _write(_frame(9, n=60), tmp_path, "parquet")
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", data, "--task", "click=p_click:y_click", "--by", "country", "--by", "", "--no-progress"])
    assert exited.value.code == 2
    assert "argument --by: expected comma-separated column names, got ''" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--by", "country", "--by", "country"], "--by country is given twice: each --by is one segmentation"),
        (
            ["--by", "country, device", "--by", "device", "--by", "country,device"],
            "--by 'country, device' and --by country,device are the same segmentation (country, device)",
        ),
        (["--by", "country", "--by", " country "], "--by country and --by ' country ' are the same segmentation"),
        (["--by", "country", "--by", "device,device"], "--by device,device names column 'device' twice"),
        (["--by", "device, device"], "--by 'device, device' names column 'device' twice"),
    ],
)
def test_cli_segmentation_errors_name_the_by_options(tmp_path, capsys, flags, message):
    """A refused segmentation is named as the --by option typed, not as the Python list it became."""
    data = _write(_frame(9, n=60), tmp_path, "parquet")
    assert cli.main(["evaluate", data, "--task", "click=p_click:y_click", *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "[" not in err  # no list repr


@pytest.mark.parametrize(
    ("by", "message"),
    [
        ("[[country], [country]]", "key 'by': Expected distinct segmentations in `by`, got ['country'] twice"),
        ("[[country], [device, device]]", "key 'by': Expected distinct segment columns (by), got ['device', 'device']"),
        ("[country, country]", "key 'by': Expected distinct segment columns (by), got ['country', 'country']"),
        ("[[country], []]", "key 'by': Expected every segmentation of `by` to name a column, got []"),
    ],
)
def test_config_segmentation_errors_name_the_by_key(tmp_path, by, message):
    """A config file's segmentations are refused when it is loaded, in terms of its `by` key."""
    config = tmp_path / "run.yaml"
    config.write_text(f"by: {by}\n")
    with pytest.raises(ValueError) as refused:
        load_config(str(config))
    assert message in str(refused.value)


def test_one_more_segmentation_keeps_one_segment_id_per_row():
    """The rows kept for the segments are stored once; each segmentation adds its int32 ids, no other copy."""
    rows = SegmentRows({"p": torch.float64, "y": torch.float64}, segmentations=3)
    columns = {"p": torch.rand(5, dtype=torch.float64), "y": torch.ones(5, dtype=torch.float64)}
    rows.append(columns, [torch.arange(5), torch.zeros(5, dtype=torch.int64), torch.arange(5) % 2])
    for s, ids in enumerate((np.arange(10, 15), np.array([7]), np.array([3, 4]))):
        rows.number_segments(ids, s)
    kept, segments = rows.gathered()
    assert sorted(kept) == ["p", "y"]
    assert [s.tolist() for s in segments] == [[10, 11, 12, 13, 14], [7] * 5, [3, 4, 3, 4, 3]]
    assert all(s.dtype == torch.int32 for s in segments)  # below 2**31 segments: 4 bytes a row
    assert all(v.dtype == torch.float64 for v in kept.values())  # the columns as given


def _ddp_several(rank: int, world_size: int, path: str) -> tuple[list[dict], list[str]]:
    import torch.distributed as dist

    result = evaluate(path, TASKS, ["ne", "auc", "gauc"], user="user", by=SEGMENTATIONS, batch_size=64)
    assert dist.is_initialized()
    # the segmentations' value combinations travel in one collective, however many segmentations
    one = count_collectives(lambda: evaluate(path, TASKS, ["ne", "auc", "gauc"], user="user", by=SEGMENTATIONS[0]))
    three = count_collectives(lambda: evaluate(path, TASKS, ["ne", "auc", "gauc"], user="user", by=SEGMENTATIONS))
    assert three == one, (one, three)
    return result.records, result.warnings


@pytest.mark.filterwarnings("ignore::torchmetrics_ext.UndefinedMetricWarning")  # undefined on purpose
@pytest.mark.ddp
def test_two_ranks_equal_each_run_alone(ddp_pool, tmp_path):
    data = _write(_frame(10, n=300), tmp_path, "parquet")
    singles = [evaluate(data, TASKS, ["ne", "auc", "gauc"], user="user", by=c, batch_size=64) for c in SEGMENTATIONS]
    for records, warnings in ddp_pool.run(_ddp_several, data):
        names = {"country", "device"}
        for single, columns in zip(singles, SEGMENTATIONS):
            mine = [r for r in records if r["segment"] != "all" and [k for k in r if k in names] == columns]
            assert len(mine) == len(single.records) - 2
            for got, expected in zip(mine, single.records[2:]):
                assert got.keys() == expected.keys()
                for key, value in expected.items():
                    if isinstance(value, float):  # float64 sums added in another order: the last digits
                        assert got[key] == pytest.approx(value, rel=1e-10, nan_ok=True), key
                    else:
                        assert got[key] == value, key
            assert _is_subsequence(single.warnings, warnings)
