"""
The msgspec path of ``FunnelTotals.from_json`` gives exactly what the classic path gives.

The classic path is orjson, then the cattrs converter, then the detailed cattrs pass that
explains a failure: the behaviour closefunnel had before the fast path existed. Every
body here is decoded both ways, as bytes on the wire (so integers past 64 bits, floats
written with exponents, duplicate keys and extra keys are in play), and the two must
agree on the value, the type of every metric, or the exact error message.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from closefunnel import METRIC_NAMES, FunnelTotals, ResponseDecodeError
from closefunnel._convert import decode, decode_fast
from closefunnel._models import _unique_users, decode_totals_json

_GOOD_ROW = dict.fromkeys(METRIC_NAMES, 1) | {"average_time_to_win": None, "count_win_rate": 0.5}


def _classic(body: bytes | str) -> FunnelTotals:
    """What from_json did before msgspec: orjson, the converter, the explaining pass."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseDecodeError(f"response is not valid JSON: {exc}") from exc
    return _unique_users(decode(data, FunnelTotals))


def _outcome(decoder: Any, body: bytes | str) -> Any:
    try:
        totals = decoder(body)
    except ResponseDecodeError as exc:
        return ("error", str(exc), exc.messages)
    rows = ([] if totals.aggregations is None else [totals.aggregations]) + list(totals.data)
    types = [[type(getattr(row, name)) for name in METRIC_NAMES] for row in rows]
    return ("ok", totals, types, totals.to_json())


def _assert_same(body: bytes | str) -> None:
    assert _outcome(decode_totals_json, body) == _outcome(_classic, body)


# Numbers at every edge that matters: bools, the int64/uint64 borders (orjson turns
# integers past 64 bits into floats, msgspec keeps them exact), integral floats (a count
# sent as 2.0 is converted by the converter, refused by msgspec), -0.0, huge floats.
_edge_ints = st.sampled_from(
    [0, -1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30]
)
_number = (
    st.integers(-(2**40), 2**40)
    | _edge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2.0, -0.0, 1e300, 5e-324])
)
_value = _number | st.none() | st.booleans() | st.text(max_size=3) | st.just([]) | st.just({})


# A report's resolved range: well formed, null, or wrong in the ways the converter refuses.
_instant = st.sampled_from(
    ["2026-11-01T00:00:00Z", "2026-12-01T00:00:00+01:00", "2026-11-01T00:00:00", "soon", 5]
)
_range = st.none() | _value | st.fixed_dictionaries({"start": _instant, "end": _instant})


def _row(*, user: bool) -> st.SearchStrategy[dict[str, Any]]:
    names = [*METRIC_NAMES, "user_id"] if user else list(METRIC_NAMES)
    good = st.fixed_dictionaries(
        {
            name: (st.text(max_size=4) if name == "user_id" else _number | st.none())
            for name in names
        }
    )
    # Now and then a field is a wrong value, missing, or an extra key is there.
    spoil = st.dictionaries(st.sampled_from(["extra", *names]), _value, max_size=2)
    drop = st.sets(st.sampled_from(names), max_size=1)
    return st.builds(
        lambda a, b, gone: {k: v for k, v in (a | b).items() if k not in gone}, good, spoil, drop
    )


_reports = st.fixed_dictionaries(
    {
        "aggregations": st.none() | _row(user=False),
        "data": st.lists(_row(user=True), max_size=4),
    },
    optional={"extra": _value, "range": _range},
)


def _dumps(data: Any, style: int) -> str:
    """*data* as JSON text in one of several legal spellings (json handles big ints)."""
    if style == 0:
        return json.dumps(data)
    if style == 1:
        return json.dumps(data, indent=2, ensure_ascii=False)
    return json.dumps(data, separators=(",", ":"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_reports, style=st.integers(0, 2), as_text=st.booleans())
@example(
    data={"aggregations": None, "data": [_GOOD_ROW | {"user_id": "a"}]}, style=0, as_text=False
)
def test_fast_path_matches_the_classic_path(
    data: dict[str, Any], style: int, as_text: bool
) -> None:
    """Same value (every metric's type included), or the same error message."""
    text = _dumps(data, style)
    _assert_same(text if as_text else text.encode())


def _raw(field: str, raw: str, *, where: str = "data") -> bytes:
    """A report whose one row has *field* written as the JSON text *raw* (last key)."""
    row = orjson.dumps({k: v for k, v in _GOOD_ROW.items() if k != field})[:-1].decode()
    row += f',"user_id":"u","{field}":{raw}}}'
    if where == "data":
        return f'{{"aggregations":null,"data":[{row}]}}'.encode()
    return f'{{"aggregations":{row},"data":[]}}'.encode()


_TWICE = orjson.dumps(_GOOD_ROW | {"user_id": "a"}).decode()


@pytest.mark.parametrize(
    "body",
    [
        # integers at and past 64 bits: a float for a rate, refused for a count, as before
        _raw("count_win_rate", "18446744073709551616"),
        _raw("count_win_rate", "-9223372036854775809"),
        _raw("count", "18446744073709551616"),
        _raw("count", "18446744073709551615"),
        _raw("count", "-9223372036854775808"),
        _raw("count", "-9223372036854775809", where="aggregations"),
        _raw("count", "123456789012345678901234567890"),
        # numbers written in long or unusual forms
        _raw("count_win_rate", "5E-1"),
        _raw("count_win_rate", "0.50000000000000000000001"),
        _raw("count_win_rate", "1e400"),
        _raw("count", "2.0"),
        _raw("count", "-0"),
        # duplicate keys: the last one wins, also when the first is a wrong type
        _raw("count", '"x","count":3'),
        _raw("count", '3,"count":"x"'),
        # not JSON, or JSON that orjson refuses
        b"{",
        b"",
        b"\xef\xbb\xbf{}",
        b'{"aggregations":null,"data":[],"x":"\\ud800"}',
        b'{"aggregations":null,"data":[],"x":"\xff"}',
        b'{"aggregations":null,"data":[],"x":"\xed\xa0\x80"}',
        b'{"aggregations":null,"data":[],"x":{"y":["\xc0\x80"]}}',
        b'{"aggregations":null,"data":[{"user_id":"\xe2\x82\xac\xc0\x80"}]}',
        b'{"aggregations":null,"data":[],"x":[1,]}',
        b'{"aggregations":null,"data":[],"x":"\\q"}',
        '{"aggregations":null,"data":[],"x":"\ud800"}',
        b'{"aggregations":null,"data":[]} x',
        b'{"aggregations":null,"data":[' + b"[" * 2000 + b"]" * 2000 + b"]}",
        # a user listed twice
        f'{{"aggregations":null,"data":[{_TWICE},{_TWICE}]}}',
    ],
)
def test_edge_bodies_decode_as_before(body: bytes | str) -> None:
    _assert_same(body)


def test_the_fast_path_is_taken_for_a_normal_report() -> None:
    """Equal results prove nothing if msgspec never runs: it does, and keeps 0 an int."""
    body = orjson.dumps(
        {
            "aggregations": _GOOD_ROW | {"count_win_rate": 0, "average_time_to_win": 7.5},
            "data": [_GOOD_ROW | {"user_id": "a"}, _GOOD_ROW | {"user_id": "b", "count": 0}],
        }
    )
    fast = decode_fast(body, FunnelTotals)
    assert fast is not None
    assert fast == _classic(body)
    assert fast.aggregations is not None
    assert type(fast.aggregations.count_win_rate) is int
    assert type(fast.aggregations.average_time_to_win) is float
    assert type(fast.data[0].count_win_rate) is float
    assert orjson.loads(fast.to_json()) == orjson.loads(body)
    ranged = orjson.dumps(
        orjson.loads(body)
        | {"range": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}}
    )
    fast = decode_fast(ranged, FunnelTotals)
    assert fast is not None
    assert fast == _classic(ranged)
    assert fast.range is not None
    assert orjson.loads(fast.to_json()) == orjson.loads(ranged)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"count": True}, "expected int @ FunnelTotals.data[0].count"),
        ({"count": "12"}, "expected int @ FunnelTotals.data[0].count"),
        ({"count_win_rate": False}, "expected int | float @ FunnelTotals.data[0].count_win_rate"),
        ({"count_win_rate": None}, "expected int | float @ FunnelTotals.data[0].count_win_rate"),
        (
            {"average_time_to_win": "1"},
            "expected int | float | None @ FunnelTotals.data[0].average_time_to_win",
        ),
        ({"user_id": 7}, "expected str @ FunnelTotals.data[0].user_id"),
    ],
)
def test_errors_name_the_field(row: dict[str, Any], message: str) -> None:
    """A bad value still gets the explaining pass: the field's path and expected type."""
    body = orjson.dumps({"aggregations": None, "data": [_GOOD_ROW | {"user_id": "u"} | row]})
    with pytest.raises(ResponseDecodeError) as info:
        FunnelTotals.from_json(body)
    assert (
        str(info.value)
        == f"response is not a valid FunnelTotals: invalid value for type, {message}"
    )
    assert info.value.messages == (f"invalid value for type, {message}",)


def test_a_missing_field_is_named() -> None:
    row = {k: v for k, v in _GOOD_ROW.items() if k != "count"} | {"user_id": "u"}
    with pytest.raises(
        ResponseDecodeError, match=r"required field missing @ FunnelTotals\.data\[0\]\.count"
    ):
        FunnelTotals.from_json(orjson.dumps({"aggregations": None, "data": [row]}))


def test_an_overflowing_number_in_an_ignored_key_is_skipped() -> None:
    """The one deliberate difference: ``1e400`` where no field is read fails nothing."""
    body = b'{"aggregations":null,"data":[],"later":{"x":1e400}}'
    with pytest.raises(ResponseDecodeError, match="not valid JSON"):
        _classic(body)
    assert FunnelTotals.from_json(body) == FunnelTotals(aggregations=None, data=())
    with pytest.raises(ResponseDecodeError, match="not valid JSON"):
        FunnelTotals.from_json(_raw("count_win_rate", "1e400"))
