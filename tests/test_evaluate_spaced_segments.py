"""Segment text with spaces around it: a segment of its own, and a warning that labels show it unquoted.

An analyst's logs often hold ``"fr "`` next to ``"fr"`` (a writer that pads) or ``" "`` next to ``""``.
Each is a segment of its own, as pandas ``groupby`` has it, but labels write text as it is, so the
table printed two lines ``country=fr`` with different values and nothing said why. The references
here are pandas ``groupby`` (the segments and their CTR) and plain Python (which values have spaces).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from torchmetrics_ext import cli
from torchmetrics_ext.evaluate import evaluate

COUNTRIES = ["fr", "fr ", "fr", "", " ", "fr ", "us", " us", "us"]


def _frame() -> pd.DataFrame:
    n = len(COUNTRIES)
    return pd.DataFrame(
        {
            "p": [0.1 + 0.8 * i / n for i in range(n)],
            "y": [0, 1, 1, 0, 1, 0, 1, 1, 0],
            "country": pd.Series(COUNTRIES, dtype=object),
            "platform": ["ios", "web"] * 4 + ["ios"],
        }
    )


def _spaced_lines(result) -> list[str]:
    return [line for line in result.warnings if "spaces around" in line]


def test_text_with_spaces_around_is_its_own_segment_and_is_warned_of():
    frame = _frame()
    result = evaluate(pa.Table.from_pandas(frame, preserve_index=False), {"t": ("p", "y")}, ["ctr"], by="country")
    expected = frame.groupby("country")["y"].mean()  # pandas: "fr" and "fr " apart
    by_value = {r["country"]: r["ctr"] for r in result.records[1:]}
    assert set(by_value) == set(expected.index)
    for value, ctr in by_value.items():
        assert ctr == pytest.approx(expected[value], rel=1e-12)
    spaced = [v for v in dict.fromkeys(sorted(COUNTRIES)) if v != v.strip()]  # ' ', ' us', 'fr '
    lines = _spaced_lines(result)
    assert len(lines) == 1, result.warnings
    assert "'country'" in lines[0] and f"{len(spaced)} text values" in lines[0]
    for value in spaced:
        assert repr(value) in lines[0]


def test_each_column_gets_a_line_and_clean_text_none():
    frame = _frame()
    frame["platform"] = ["ios", "web "] * 4 + ["ios"]
    result = evaluate(frame, {"t": ("p", "y")}, ["ctr"], by=["country", "platform"])
    lines = _spaced_lines(result)
    assert [("'country'" in line, "'platform'" in line) for line in lines] == [(True, False), (False, True)]
    assert "1 text value " in lines[1] and "'web '" in lines[1]
    clean = frame.assign(country=frame["country"].str.strip(), platform=frame["platform"].str.strip())
    assert _spaced_lines(evaluate(clean, {"t": ("p", "y")}, ["ctr"], by=["country", "platform"])) == []
    # numbers and the empty text alone: nothing to warn of
    numbers = clean.assign(country=[""] * 4 + ["x"] * 5, platform=range(len(clean)))
    assert _spaced_lines(evaluate(numbers, {"t": ("p", "y")}, ["ctr"], by=["country", "platform"])) == []


def test_the_command_prints_the_warning(tmp_path, capsys):
    _frame().to_parquet(tmp_path / "logs.parquet")
    code = cli.main(
        ["evaluate", str(tmp_path / "logs.parquet"), "--task", "t=p:y", "--metrics", "ctr", "--by", "country"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: --by column 'country' holds 3 text values with spaces around" in err
