"""
``FunnelTotals.from_csv`` (column at a time, then msgspec) gives exactly what the
cell-at-a-time reader and the converter gave: the same value and types, or the same error.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closefunnel import METRIC_NAMES, FunnelTotals, ResponseDecodeError
from closefunnel._convert import (
    _csv_cell,
    csv_as_json,
    csv_text_as_json,
    csv_text_rows,
    decode,
    decode_fast,
    read_csv_records,
    read_csv_table,
)
from closefunnel._models import CSV_COLUMNS, UserFunnelMetrics, _unique_users, decode_totals_csv


def _classic(text: str) -> FunnelTotals:
    """The reader as it was: a regex and a branch per cell, then the converter."""
    rows = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    header = [name.strip() for name in rows[0]]
    records = []
    for row in rows[1:]:
        if len(row) != len(header):
            raise ResponseDecodeError("ragged")
        item: dict[str, Any] = dict(zip(header, map(_csv_cell, row), strict=True))
        item["user_id"] = row[header.index("user_id")].strip()
        records.append(item)
    return _unique_users(decode({"aggregations": None, "data": records}, FunnelTotals))


def _outcome(decoder: Any, text: str) -> Any:
    try:
        totals = decoder(text)
    except ResponseDecodeError as exc:
        return ("error", str(exc), exc.messages)
    types = [[type(getattr(row, name)) for name in METRIC_NAMES] for row in totals.data]
    return ("ok", totals, types)


_NUMBERS = ("average_time_to_win", "count_win_rate", "sales_velocity", "value_win_rate")
_cell = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["", " 5", "5 ", "007", "1.", ".5", "-0", "1e400", "2.0", "1_000", "x"]),
    st.sampled_from(["\u0661", "inf", "nan", "1\n2", "-", "+5", "1E5", "0.1234567890123456789"]),
    st.sampled_from(["null", "true", "[]", "1}", "1e5", "-0.0", "5e-324", "1.5E+3", "0"]),
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(_cell, min_size=10, max_size=10), max_size=5),
    ids=st.lists(st.sampled_from(["a", " b ", "c", "=d", "1"]), min_size=5, max_size=5),
)
def test_csv_fast_matches_cell_at_a_time(rows: list[list[str]], ids: list[str]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for user_id, cells in zip(ids, rows, strict=False):
        writer.writerow([user_id, *cells])
    text = out.getvalue()
    assert _outcome(decode_totals_csv, text) == _outcome(_classic, text)


@pytest.mark.parametrize(
    "column",
    [
        ["1", "2"],
        ["1", "0.5", ""],
        ["1\n2", "3"],
        ["5 ", "6"],
        ["1234567890123456789", "0.5"],
        ["-123456789012345678", "", "1e400"],
        ["123456789012345678", "-0", "2.0"],
        ["null", "1"],
        ["1", "1}{"],
        ["007", "1"],
        ["1.", ".5"],
    ],
)
def test_columns_clean_and_not(column: list[str]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for i, cell in enumerate(column):
        # the cell in the number columns, where a value of any type is kept as it is
        writer.writerow([f"u{i}", *(cell if n in _NUMBERS else "1" for n in METRIC_NAMES)])
    assert _outcome(decode_totals_csv, out.getvalue()) == _outcome(_classic, out.getvalue())


def test_a_clean_report_takes_the_json_path() -> None:
    """Equal results prove nothing if every report went cell by cell: clean ones do not."""
    text = "\r\n".join(
        [",".join(CSV_COLUMNS), "u1,,1,2,3,4,0.5,1.5e3,6,7,0", "u2,12.5,1,2,3,4,0,-0.0,6,7,1"]
    )
    header, body = read_csv_table(text, CSV_COLUMNS)
    rows = csv_as_json(header, body, CSV_COLUMNS, text_columns=("user_id",))
    assert rows is not None
    fast = decode_fast(b'{"aggregations":null,"data":%s}' % rows, FunnelTotals)
    assert fast is not None
    assert fast == decode_totals_csv(text) == _classic(text)
    assert [type(row.count_win_rate) for row in fast.data] == [float, int]


def test_a_clean_report_takes_the_row_path_in_any_metric_order() -> None:
    """Close's own CSV (user_id first, the ten metrics) is read a line per JSON array;
    the metric columns may come in any order."""
    metrics = list(METRIC_NAMES)
    odd = {"average_time_to_win": "", "count_win_rate": "0.5", "sales_velocity": "1e5"}
    odd |= {"value_win_rate": "-0.0", "count": "-0"}
    for order in (metrics, metrics[::-1]):
        lines = [",".join(["user_id", *order])]
        lines.append("u0," + ",".join(str(n) for n, _ in enumerate(order)))
        lines.append("u1," + ",".join(odd.get(name, "12") for name in order))
        text = "\r\n".join(lines) + "\r\n"
        rows = csv_text_rows(text, UserFunnelMetrics, text_column="user_id")
        assert rows is not None
        assert rows == decode_totals_csv(text).data == _classic(text).data


_bare_cell = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["", "007", "1.", ".5", "-0", "1e400", "2.0", "1_000", "x", "inf", "-"]),
    st.sampled_from(["+5", "1E5", "null", "true", "[]", "1}", "{}", "[1]", "-0.0", "5e-324"]),
    st.sampled_from([" 5", "5\t", "\x0b5", "\u00a05", "0.1234567890123456789", "1e", "0x10"]),
)


_clean_cell = st.one_of(st.integers(-(10**6), 10**6).map(str), st.just("0"))


@st.composite
def _bare_row(draw: st.DrawFn) -> list[str]:
    """Ten cells, clean (ints fit every metric) but for at most one hostile one."""
    cells = draw(st.lists(_clean_cell, min_size=10, max_size=10))
    if draw(st.booleans()):
        cells[draw(st.integers(0, 9))] = draw(_bare_cell)
    return cells


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(_bare_row(), max_size=4),
    ids=st.lists(
        st.sampled_from(["a", " b", "c ", "=d", "1", "", "null", "u\\1", "\x01", "é"]),
        min_size=4,
        max_size=4,
    ),
    reverse=st.booleans(),
)
def test_the_row_path_reads_unquoted_cells_as_the_cell_reader(
    rows: list[list[str]], ids: list[str], reverse: bool
) -> None:
    """Texts as a server may send them, unquoted: the row path either steps aside or
    reads exactly what the cell-at-a-time reader and the converter read."""
    metrics = list(METRIC_NAMES)[::-1] if reverse else list(METRIC_NAMES)
    lines = [",".join(["user_id", *metrics])]
    lines += [",".join([user_id, *cells]) for user_id, cells in zip(ids, rows, strict=False)]
    text = "\r\n".join(lines) + "\r\n"
    expected = _outcome(_classic, text)
    assert _outcome(decode_totals_csv, text) == expected
    fast = csv_text_rows(text, UserFunnelMetrics, text_column="user_id")
    if fast is not None:  # then only the check for a repeated user_id is left to make
        made = FunnelTotals(aggregations=None, data=fast)
        assert _outcome(lambda _: _unique_users(made), text) == expected


def _records_path(text: str | bytes) -> FunnelTotals:
    """The csv.reader path, which also words every refusal of a malformed text."""
    records = read_csv_records(text, CSV_COLUMNS, text_columns=("user_id",))
    return _unique_users(decode({"aggregations": None, "data": records}, FunnelTotals))


_HEAD = ",".join(CSV_COLUMNS)
_ROW = "u1,,1,2,3,4,0.5,1.5e3,6,7,0"


@pytest.mark.parametrize(
    "text",
    [
        f"{_HEAD}\r\n{_ROW}\r\n",
        f"{_HEAD}\n{_ROW}\n\n\nu2{_ROW[2:]}",
        f"\ufeff{_HEAD}\r\n{_ROW}",
        f" {_HEAD.replace(',', ' , ')} \r\n{_ROW}",
        f"{_HEAD}\r{_ROW}",
        f"{_HEAD}\r\n{_ROW}\x00",
        f"{_HEAD}\r\n{_ROW},",
        f"{_HEAD}\r\n{_ROW}\r\nu2,1",
        f"{_HEAD},count\r\n{_ROW},1",
        f"{_HEAD},extra\r\n{_ROW},x",
        _HEAD.replace("count,", ""),
        _HEAD,
        "",
        "\r\n\r\n",
        f"{_HEAD}\r\n{_ROW}\r\n{_ROW}",
        f"{_HEAD}\r\n {_ROW} ",
        f"{_HEAD}\r\nu\\1{_ROW[2:]}",
        f"{_HEAD}\r\nu\t1{_ROW[2:]}",
        f"{_HEAD}\r\n\ud800{_ROW[2:]}",
        f"{_HEAD}\r\nu1,null,1,2,3,4,0.5,1.5e3,6,7,0",
    ],
)
def test_unquoted_texts_decode_as_csv_reader_reads_them(text: str) -> None:
    assert _outcome(decode_totals_csv, text) == _outcome(_records_path, text)
    if "\ud800" not in text:
        encoded = text.encode()
        assert _outcome(decode_totals_csv, encoded) == _outcome(_records_path, encoded)


def test_an_unquoted_report_skips_csv_reader() -> None:
    text = f"{_HEAD}\r\n{_ROW}\r\nu2{_ROW[2:]}\r\n"
    rows = csv_text_as_json(text, CSV_COLUMNS, text_columns=("user_id",))
    assert rows is not None
    assert decode_fast(b'{"aggregations":null,"data":%s}' % rows, FunnelTotals) == _classic(text)
