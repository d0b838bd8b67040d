"""Decoding: every malformed body raises ResponseDecodeError with a readable message."""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closefunnel import METRIC_NAMES, FunnelTotals, Pipeline, ResponseDecodeError, make_converter
from closefunnel._convert import decode, decode_json
from closefunnel._models import CSV_COLUMNS, decode_totals_csv, decode_totals_json

HEADER = ",".join(CSV_COLUMNS)
ROW = "user_1,3600,1000000,1,1,1,1,1000000,1000000,1000000,1"


def _decode_error(body: bytes | str, *, strict: bool = False) -> ResponseDecodeError:
    """The ResponseDecodeError that decoding *body* as a JSON report raises."""
    with pytest.raises(ResponseDecodeError) as info:
        decode_totals_json(body, strict=strict)
    error = info.value
    assert str(error).startswith("response is")
    assert "Traceback" not in str(error)
    return error


def _csv_error(text: str | bytes) -> ResponseDecodeError:
    """The ResponseDecodeError that decoding *text* as a CSV report raises."""
    with pytest.raises(ResponseDecodeError) as info:
        decode_totals_csv(text)
    assert str(info.value)
    return info.value


def _outcome(
    decode_it: Callable[..., FunnelTotals], body: bytes | str, *, strict: bool = False
) -> FunnelTotals | ResponseDecodeError:
    """The report *decode_it* returns, or the ResponseDecodeError it raises (others escape)."""
    try:
        return decode_it(body, strict=strict)
    except ResponseDecodeError as error:
        return error


# -- JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b"\xff\xfe\x00", "{'single': 'quotes'}", b"NaN", b"[1, 2,]"],
    ids=["empty", "text", "truncated", "binary", "python-repr", "nan", "trailing-comma"],
)
def test_non_json_bodies(body: bytes | str) -> None:
    """Bodies that are not JSON raise ResponseDecodeError saying so."""
    assert "not valid JSON" in str(_decode_error(body))


def _mutated(response: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of *response* with the item at *path* set to *value* (or deleted: ...)."""
    data = copy.deepcopy(response)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is Ellipsis:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("aggregations", "count"), "2", "aggregations.count"),
        (("aggregations", "count"), True, "aggregations.count"),
        (("aggregations", "count"), 2.5, "aggregations.count"),
        (("aggregations", "count_win_rate"), "0.5", "aggregations.count_win_rate"),
        (("aggregations", "count_win_rate"), False, "aggregations.count_win_rate"),
        (("aggregations", "average_time_to_win"), "3600", "aggregations.average_time_to_win"),
        (("aggregations", "count"), None, "aggregations.count"),
        (("aggregations", "count"), ..., "count"),
        (("data", 0, "user_id"), 5, "data[0].user_id"),
        (("data", 0, "user_id"), ..., "user_id"),
        (("data", 1, "value_total_won"), [0], "data[1].value_total_won"),
        (("data",), ..., "data"),
        (("data",), {}, "data"),
        (("data",), "", "data"),
        (("data",), None, "data"),
        (("data", 0), "user_1", "data[0]"),
        (("aggregations",), ..., "aggregations"),
        (("aggregations",), [], "aggregations"),
    ],
    ids=[
        "str-int",
        "bool-int",
        "fraction-int",
        "str-float",
        "bool-float",
        "str-nullable",
        "null-int",
        "missing-metric",
        "int-user-id",
        "missing-user-id",
        "list-int",
        "missing-data",
        "object-data",
        "string-data",
        "null-data",
        "string-row",
        "missing-aggregations",
        "list-aggregations",
    ],
)
def test_wrong_shapes(
    reference_response: dict[str, Any], path: tuple[Any, ...], value: Any, needle: str
) -> None:
    """A field of the wrong type, or missing, raises ResponseDecodeError naming the field."""
    error = _decode_error(orjson.dumps(_mutated(reference_response, path, value)))
    assert needle in str(error)
    assert error.messages
    assert all(isinstance(message, str) for message in error.messages)


@pytest.mark.parametrize("body", [b"[]", b"null", b"3", b'"report"', b"[{}]", b"{}"])
def test_wrong_top_level(body: bytes) -> None:
    """A JSON value that is not a report object raises ResponseDecodeError."""
    assert "FunnelTotals" in str(_decode_error(body))


def test_every_bad_field_is_reported(reference_response: dict[str, Any]) -> None:
    """One error lists every bad field, not only the first."""
    data = _mutated(reference_response, ("aggregations", "count"), "x")
    data = _mutated(data, ("data", 1, "count"), "y")
    error = _decode_error(orjson.dumps(data))
    joined = " ".join(error.messages)
    assert "aggregations.count" in joined
    assert "data[1].count" in joined


@pytest.mark.parametrize(
    "path", [("extra",), ("aggregations", "extra"), ("data", 0, "extra")], ids=str
)
def test_extra_keys(reference_response: dict[str, Any], path: tuple[Any, ...]) -> None:
    """Unknown keys are accepted by default and refused in strict mode."""
    body = orjson.dumps(_mutated(reference_response, path, 1))
    assert FunnelTotals.from_json(body).data[0].count == 1
    assert decode_totals_json(body).aggregations is not None
    assert "extra" in str(_decode_error(body, strict=True))


def test_integral_float_is_a_count(reference_response: dict[str, Any]) -> None:
    """A count sent as 2.0 is the integer 2 (JSON does not distinguish them reliably)."""
    body = orjson.dumps(_mutated(reference_response, ("aggregations", "count"), 2.0))
    count = decode_totals_json(body).aggregations.count  # type: ignore[union-attr]
    assert count == 2
    assert type(count) is int


def test_strict_converter_forbids_extra_keys() -> None:
    """make_converter(strict=True) forbids unknown keys, the default converter ignores them."""
    data = {"id": "pipe_1", "name": "Sales", "statuses": [], "color": "red"}
    assert make_converter().structure(data, Pipeline).name == "Sales"
    with pytest.raises(Exception, match="color"):
        make_converter(strict=True).structure(data, Pipeline)


def test_decode_list_of_models() -> None:
    """decode structures a list of models, and refuses an object where a list belongs."""
    pipelines = decode(
        [{"id": "p", "name": "n", "statuses": [{"id": "s", "label": "L", "type": "won"}]}],
        list[Pipeline],
    )
    assert pipelines[0].statuses[0].label == "L"
    with pytest.raises(ResponseDecodeError):
        decode({"id": "p"}, list[Pipeline])
    with pytest.raises(ResponseDecodeError):
        decode_json(b'{"id": "p", "name": "n", "statuses": {"a": 1}}', Pipeline)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(body: bytes) -> None:
    """Arbitrary bytes decode to a report or raise ResponseDecodeError, nothing else."""
    for strict in (False, True):
        outcome = _outcome(decode_totals_json, body, strict=strict)
        assert isinstance(outcome, FunnelTotals) or str(outcome)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_json_values)
def test_arbitrary_json_raises_only_decode_error(data: Any) -> None:
    """Arbitrary JSON values raise ResponseDecodeError (none of them is a report)."""
    body = orjson.dumps(data)
    for strict in (False, True):
        with pytest.raises(ResponseDecodeError):
            decode_totals_json(body, strict=strict)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["count", "count_win_rate", "average_time_to_win", "user_id"]),
    value=_json_values,
)
def test_arbitrary_field_values(reference_response: dict[str, Any], field: str, value: Any) -> None:
    """Any JSON value in a row field decodes only when its type fits, else ResponseDecodeError."""
    body = orjson.dumps(_mutated(reference_response, ("data", 0, field), value))
    try:
        totals = decode_totals_json(body)
    except ResponseDecodeError:
        return
    decoded = getattr(totals.data[0], field)
    assert decoded == value
    assert not isinstance(decoded, bool)


# -- CSV -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        (HEADER.replace(",count,", ",") + "\r\n", "lacks column(s): count"),
        ("user_id\r\nuser_1\r\n", "lacks column(s)"),
        (HEADER + ",count\r\n", "repeats"),
        (HEADER + "\r\n" + ROW + ",1\r\n", "row 2 has 12 cells"),
        (HEADER + "\r\n" + ROW.rsplit(",", 1)[0] + "\r\n", "row 2 has 10 cells"),
        (HEADER + "\r\n" + ROW.replace(",3600,", ",soon,") + "\r\n", "average_time_to_win"),
        (HEADER + "\r\n" + ROW.replace(",3600,", ",nan,") + "\r\n", "average_time_to_win"),
        (HEADER + "\r\n" + ROW.replace(",3600,", ",inf,") + "\r\n", "average_time_to_win"),
        (HEADER + "\r\n" + ROW.replace(",3600,", ",1e999,") + "\r\n", "average_time_to_win"),
        (HEADER + "\r\n" + ROW.replace(",1000000,1,", ",1000000,1_0,", 1) + "\r\n", "count"),
        (HEADER + "\r\n" + ROW.replace(",1000000,1,", ",1000000,1.5,", 1) + "\r\n", "count"),
        (HEADER + "\r\n" + ROW.replace(",1000000,1,", ",1000000,,", 1) + "\r\n", "count"),
        (HEADER + '\r\n"user_1,3600\r\n', "not valid CSV"),
        (HEADER + '\r\n"user_1"x,1,1,1,1,1,1,1,1,1,1\r\n', "not valid CSV"),
    ],
    ids=[
        "empty",
        "blank-lines",
        "missing-column",
        "only-user-id",
        "repeated-column",
        "long-row",
        "short-row",
        "word",
        "nan",
        "inf",
        "overflow",
        "underscore-digits",
        "fractional-count",
        "null-count",
        "unterminated-quote",
        "stray-quote",
    ],
)
def test_broken_csv(text: str, needle: str) -> None:
    """Broken CSV reports raise ResponseDecodeError with a message naming the problem."""
    assert needle in str(_csv_error(text))


@pytest.mark.parametrize(
    "body", [b"\xff\xfe" + HEADER.encode(), HEADER.encode() + b"\r\nuser_\xe9,1"], ids=str
)
def test_csv_not_utf8(body: bytes) -> None:
    """A CSV body that is not UTF-8 raises ResponseDecodeError saying so."""
    assert "not UTF-8" in str(_csv_error(body))


def test_csv_columns_in_any_order_and_extra_columns() -> None:
    """CSV columns are matched by name in any order; extra columns pass unless strict."""
    columns = [*reversed(CSV_COLUMNS), "team"]
    values = dict(zip(CSV_COLUMNS, ROW.split(","), strict=True))
    row = ",".join(values.get(name, "x") for name in columns)
    text = ",".join(columns) + "\n" + row + "\n"
    totals = decode_totals_csv(text)
    assert totals.data[0].user_id == "user_1"
    assert totals.data[0].average_time_to_win == 3600
    with pytest.raises(ResponseDecodeError, match="team"):
        decode_totals_csv(text, strict=True)


def test_csv_numbers_and_nulls() -> None:
    """CSV cells decode as ints, decimal floats or null (empty), keeping their types."""
    row = "user_1,,1500,1,1,1,0.5,1.5e2,1,1,.25"
    totals = decode_totals_csv(HEADER + "\n" + row + "\n")
    metrics = totals.data[0]
    assert metrics.average_time_to_win is None
    assert type(metrics.average_value_annualized_per_won_opportunity) is int
    assert metrics.count_win_rate == 0.5
    assert metrics.sales_velocity == 150.0
    assert metrics.value_win_rate == 0.25


def test_csv_header_only_is_empty_report() -> None:
    """A CSV with a header and no rows is a report with no rows."""
    assert decode_totals_csv(HEADER + "\r\n").data == ()


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_csv_raises_only_decode_error(body: bytes | str) -> None:
    """Arbitrary CSV input decodes or raises ResponseDecodeError, nothing else."""
    outcome = _outcome(decode_totals_csv, body)
    assert isinstance(outcome, FunnelTotals) or str(outcome)


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(st.text(max_size=8), min_size=len(CSV_COLUMNS), max_size=len(CSV_COLUMNS)))
def test_arbitrary_csv_cells(cells: list[str]) -> None:
    """Arbitrary cells under a valid header decode or raise ResponseDecodeError only."""
    out = io.StringIO()
    csv.writer(out).writerows([CSV_COLUMNS, cells])
    try:
        totals = decode_totals_csv(out.getvalue())
    except ResponseDecodeError:
        return
    assert len(totals.data) <= 1


@pytest.mark.parametrize("cell", ["9" * 5000, "1" + "0" * 30, "1e30", "-99999999999999999999"])
def test_csv_integers_beyond_64_bits_are_refused(cell: str) -> None:
    """Counts too large for 64 bits (or for int() itself) are a ResponseDecodeError."""
    row = ["user_1", *["1"] * 10]
    row[3] = cell
    text = ",".join(CSV_COLUMNS) + "\n" + ",".join(row) + "\n"
    with pytest.raises(ResponseDecodeError):
        FunnelTotals.from_csv(text)


def test_json_integral_floats_beyond_64_bits_are_refused() -> None:
    """An integral float is accepted for a count only while it fits in 64 bits."""
    metrics = dict.fromkeys(METRIC_NAMES, 1)
    metrics["count"] = 1e30
    body = json.dumps({"aggregations": metrics, "data": []})
    with pytest.raises(ResponseDecodeError):
        FunnelTotals.from_json(body)
