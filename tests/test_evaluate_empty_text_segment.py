"""A ``by`` text column holding the empty text gets a warning line: it is not the null segment.

pandas' ``to_csv`` writes a missing country as an empty field; in a CSV text column ``evaluate`` reads
that field as the empty text (``"NA"`` is Namibia there, not a null), so the segment is ``country=``,
apart from the null segment ``country=None`` that the same rows give from Parquet or a frame, and
ahead of every other value, where ``pandas.read_csv`` and ``groupby(dropna=False)`` have a NaN group
last. The values are right either way; the run now says so, as it does for text with spaces around it.
References: pandas ``groupby`` over the frame, numpy CTR.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from torchmetrics_ext.cli import main
from torchmetrics_ext.evaluate import evaluate

N = 240


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    country = rng.choice(np.array(["fr", "us", "de"], dtype=object), N)
    country[rng.random(N) < 0.1] = None  # a missing country
    return pd.DataFrame(
        {"p": rng.uniform(0.05, 0.95, N), "y": (rng.random(N) < 0.3).astype(np.int64), "country": country}
    )


def _empty_lines(result) -> list[str]:
    return [line for line in result.warnings if "empty text" in line]


def test_the_empty_field_of_a_csv_text_column_is_named_in_a_warning(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    expected = frame.groupby("country", dropna=False)["y"].mean()  # NaN: the missing countries
    csv = evaluate(tmp_path / "d.csv", {"click": ("p", "y")}, ["ctr"], by="country")
    got = {r["country"]: r["ctr"] for r in csv.records if r["segment"] != "all"}
    assert list(got) == ["", "de", "fr", "us"]  # the empty text: a value, sorted first
    assert got[""] == pytest.approx(expected[np.nan], rel=1e-12)
    for value in ("de", "fr", "us"):
        assert got[value] == pytest.approx(expected[value], rel=1e-12)
    (line,) = _empty_lines(csv)
    assert line.startswith("--by column 'country' holds the empty text ''")
    assert "country=None" in line and "country=" in line
    # the same rows from Parquet: the null segment, no line
    parquet = evaluate(tmp_path / "d.parquet", {"click": ("p", "y")}, ["ctr"], by="country")
    assert [r["segment"] for r in parquet.records][-1] == "country=None"
    assert parquet.values["ctr/click/country=None"] == pytest.approx(expected[np.nan], rel=1e-12)
    assert _empty_lines(parquet) == []


def test_a_frame_holding_the_empty_text_warns_too_and_numbers_do_not():
    frame = _frame().assign(device=lambda f: np.where(f.index % 4 == 0, "", "ios"), hour=lambda f: f.index % 3)
    result = evaluate(frame, {"click": ("p", "y")}, ["ctr"], by=[["device"], ["hour"], ["device", "hour"]])
    lines = _empty_lines(result)
    # once, though two segmentations read the column
    assert len(lines) == 1 and lines[0].startswith("--by column 'device' holds the empty text")
    want = frame.groupby("device")["y"].mean()
    assert result.values["ctr/click/device="] == pytest.approx(want[""], rel=1e-12)


def test_the_command_line_prints_it(tmp_path, capsys):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    args = ["evaluate", str(tmp_path / "d.csv"), "--task", "click=p:y", "--metrics", "ctr", "--by", "country"]
    assert main([*args, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: --by column 'country' holds the empty text ''" in err
