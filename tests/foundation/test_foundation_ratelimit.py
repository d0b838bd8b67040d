"""Rate-limit header parsing, Retry-After, and the wait a 429 asks for."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from closefunnel import RateLimitInfo, parse_ratelimit, parse_retry_after
from closefunnel._ratelimit import (
    _CLOSE_FORM,
    DEFAULT_429_WAIT,
    MAX_RESET,
    _parse_members,
    header,
    wait_after_429,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize("name", ["RateLimit", "ratelimit", "RATELIMIT", "rateLimit"])
@pytest.mark.parametrize(
    "value",
    [
        "limit=100, remaining=42, reset=1.5",
        "limit=100; remaining=42; reset=1.5",
        "reset=1.5, limit=100, remaining=42",
        "remaining=42;reset=1.5;limit=100",
        ' limit="100" , remaining = 42 ,reset=1.50 ',
        "Limit=100, Remaining=42, Reset=1.5",
    ],
)
def test_ratelimit_header(name: str, value: str) -> None:
    """RateLimit parses in any name case, with , or ; and keys in any order."""
    assert parse_ratelimit({name: value}) == RateLimitInfo(limit=100, remaining=42, reset=1.5)


def test_ratelimit_without_limit() -> None:
    """A RateLimit header without limit still gives remaining and reset."""
    assert parse_ratelimit({"RateLimit": "remaining=0, reset=0.25"}) == RateLimitInfo(None, 0, 0.25)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "limit=100",
        "limit=100, remaining=5",
        "limit=100, reset=5",
        "limit=100, remaining=five, reset=5",
        "limit=100, remaining=5, reset",
        "limit=100, remaining=-1, reset=5",
        "limit=100, remaining=5, reset=-0.5",
        "limit=100, remaining=5, reset=nan",
        "limit=100, remaining=5, reset=inf",
        "limit=100, remaining=inf, reset=1",
        "limit=100, remaining=5, reset=1e999",
    ],
)
def test_ratelimit_malformed(value: str) -> None:
    """A malformed, partial, negative or non-finite RateLimit header counts as absent."""
    assert parse_ratelimit({"RateLimit": value}) is None


def test_ratelimit_reset_is_capped() -> None:
    """A reset beyond a day is capped rather than trusted."""
    info = parse_ratelimit({"RateLimit": "limit=1, remaining=0, reset=99999999"})
    assert info is not None
    assert info.reset == MAX_RESET


@pytest.mark.parametrize("prefix", ["X-Rate-Limit-", "x-rate-limit-", "RateLimit-", "ratelimit-"])
def test_legacy_headers(prefix: str) -> None:
    """The legacy X-Rate-Limit-* and RateLimit-Limit/-Remaining/-Reset triples are read."""
    headers = {prefix + "Limit": "60", prefix + "Remaining": "3", prefix + "Reset": "0.75"}
    assert parse_ratelimit(headers) == RateLimitInfo(60, 3, 0.75)
    del headers[prefix + "Limit"]
    assert parse_ratelimit(headers) == RateLimitInfo(None, 3, 0.75)
    headers[prefix + "Reset"] = "soon"
    assert parse_ratelimit(headers) is None


def test_malformed_combined_header_falls_back_to_legacy() -> None:
    """A broken RateLimit header does not hide valid legacy headers."""
    headers = {
        "RateLimit": "nonsense",
        "X-Rate-Limit-Remaining": "1",
        "X-Rate-Limit-Reset": "2",
    }
    assert parse_ratelimit(headers) == RateLimitInfo(None, 1, 2)


def test_no_headers() -> None:
    """No rate-limit headers at all gives None."""
    assert parse_ratelimit({"Content-Type": "application/json"}) is None


def test_header_lookup_any_case() -> None:
    """header() finds a name in any case and gives None when absent."""
    assert header({"retry-after": "3"}, "Retry-After") == "3"
    assert header({"Retry-After": "3"}, "Retry-After") == "3"
    assert header({}, "Retry-After") is None
    assert header(CIMultiDictProxy(CIMultiDict({"retry-after": "3"})), "Retry-After") == "3"
    assert header(CIMultiDictProxy(CIMultiDict()), "Retry-After") is None


def test_repeated_names_read_the_first_value() -> None:
    """A name sent twice (in any case) reads as its first value, from either kind of mapping."""
    items = [("ratelimit", "limit=9, remaining=8, reset=7"), ("RateLimit", "remaining=1, reset=2")]
    assert parse_ratelimit(dict(items)) == RateLimitInfo(9, 8, 7)
    assert parse_ratelimit(CIMultiDictProxy(CIMultiDict(items))) == RateLimitInfo(9, 8, 7)
    assert header(dict(items), "RATELIMIT") == "limit=9, remaining=8, reset=7"


# -- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 2 ", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
        (format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0),
        ("Tue, 14 Nov 2023 22:14:00 GMT", 1_700_000_040.0 - NOW),
        ("999999999", MAX_RESET),
    ],
    ids=["int", "spaces", "zero", "decimal", "future-date", "past-date", "fixed-date", "huge"],
)
def test_retry_after(value: str, expected: float) -> None:
    """Retry-After is read as seconds or as an HTTP-date against the injected now."""
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "nan", "inf", "Mon, 99 Foo 2023 99:99:99 GMT", "Tue, 14 Nov 2023"],
)
def test_retry_after_garbage(value: str | None) -> None:
    """A missing, negative, non-finite or unparsable Retry-After gives None."""
    assert parse_retry_after(value, now=NOW) is None


# -- the wait after a 429 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"RateLimit": "limit=10, remaining=0, reset=0.4", "Retry-After": "1"}, b"", 0.4),
        ({"RateLimit": "limit=10, remaining=0, reset=2.3", "Retry-After": "3"}, b"", 2.3),
        ({"RateLimit": "limit=10, remaining=0, reset=0.4", "Retry-After": "30"}, b"", 30.0),
        ({"RateLimit": "limit=10, remaining=0, reset=0.4"}, b"", 0.4),
        ({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1.25"}, b"", 1.25),
        ({"Retry-After": "4"}, b"", 4.0),
        ({}, b"", DEFAULT_429_WAIT),
        ({}, b"not json", DEFAULT_429_WAIT),
        ({}, b"[1]", DEFAULT_429_WAIT),
        ({}, orjson.dumps({"rate_reset": 1.75}), 1.75),
        ({}, orjson.dumps({"rate_reset": "1.75"}), 1.75),
        ({}, orjson.dumps({"error": {"rate_reset": 2.5}}), 2.5),
        ({}, orjson.dumps({"error": {"rate_reset": "2.5"}}), 2.5),
        ({}, orjson.dumps({"error": "rate limited", "rate_reset": 0.5}), 0.5),
        ({}, orjson.dumps({"rate_reset": "later"}), DEFAULT_429_WAIT),
        ({}, orjson.dumps({"rate_reset": -1}), DEFAULT_429_WAIT),
        ({}, orjson.dumps({"rate_reset": True}), DEFAULT_429_WAIT),
        ({"Retry-After": "2"}, orjson.dumps({"rate_reset": 1.2}), 1.2),
        ({"Retry-After": "9"}, orjson.dumps({"error": {"rate_reset": 1.2}}), 9.0),
        ({"Retry-After": "3"}, b"", 3.0),
    ],
    ids=[
        "reset-beats-rounded-retry-after",
        "reset-beats-ceil",
        "longer-retry-after-wins",
        "reset-only",
        "legacy-headers",
        "retry-after-only",
        "nothing",
        "non-json-body",
        "list-body",
        "body-top-number",
        "body-top-string",
        "body-error-number",
        "body-error-string",
        "body-top-with-error-string",
        "body-garbage",
        "body-negative",
        "body-bool",
        "body-beats-retry-after",
        "longer-retry-after-beats-body",
        "retry-after-no-body",
    ],
)
def test_wait_after_429(headers: dict[str, str], body: bytes, expected: float) -> None:
    """The precise reset wins unless Retry-After is clearly longer; else Retry-After or 2 s."""
    assert wait_after_429(headers, body, now=NOW) == pytest.approx(expected)


_header_names = st.sampled_from(
    [
        "RateLimit",
        "ratelimit",
        "Retry-After",
        "X-Rate-Limit-Limit",
        "X-Rate-Limit-Remaining",
        "X-Rate-Limit-Reset",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Limit",
    ]
)
_numberish = st.one_of(
    st.floats().map(repr),
    st.integers().map(str),
    st.sampled_from(["nan", "-inf", "1e999", "", "  ", "-0", "0x10", "1_0"]),
)
_header_values = st.one_of(
    st.text(max_size=40),
    _numberish,
    st.builds(
        lambda sep, a, b, c: f"limit={a}{sep}remaining={b}{sep}reset={c}",
        st.sampled_from([",", ";", ", ", " ; "]),
        _numberish,
        _numberish,
        _numberish,
    ),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
)


def _sane(seconds: float) -> bool:
    """A wait is usable: finite, not negative, at most a day."""
    return math.isfinite(seconds) and 0 <= seconds <= MAX_RESET


@settings(max_examples=500, deadline=None)
@given(
    headers=st.dictionaries(_header_names, _header_values, max_size=6),
    body=st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda value, nested: orjson.dumps(
                {"error": {"rate_reset": value}} if nested else {"rate_reset": value}
            ),
            st.one_of(st.floats(allow_nan=False), st.text(max_size=10), st.none(), _numberish),
            st.booleans(),
        ),
    ),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_arbitrary_headers_give_sane_waits(
    headers: dict[str, str], body: bytes, now: float
) -> None:
    """Arbitrary header values never crash and never give a negative, NaN or infinite wait."""
    info = parse_ratelimit(headers)
    if info is not None:
        assert _sane(info.reset)
        assert math.isfinite(info.remaining)
        assert info.remaining >= 0
        assert info.limit is None or (math.isfinite(info.limit) and info.limit >= 0)
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    assert retry_after is None or _sane(retry_after)
    assert _sane(wait_after_429(headers, body, now=now))


_any_case_names = _header_names.flatmap(
    lambda name: st.sampled_from([name, name.lower(), name.upper()])
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(_any_case_names, _header_values), max_size=6),
    body=st.binary(max_size=20),
)
def test_aiohttp_headers_read_like_a_plain_mapping(
    items: list[tuple[str, str]], body: bytes
) -> None:
    """
    aiohttp's case-insensitive headers are read by name, a plain mapping is lower-cased:
    both give the same facts and waits for the same headers.
    """
    plain: dict[str, str] = {}
    for key, value in items:
        plain.setdefault(key, value)
    multi = CIMultiDictProxy(CIMultiDict(plain.items()))
    assert parse_ratelimit(multi) == parse_ratelimit(plain)
    assert header(multi, "Retry-After") == header(plain, "Retry-After")
    assert wait_after_429(multi, body, now=NOW) == wait_after_429(plain, body, now=NOW)


_decimal = st.one_of(
    st.integers(min_value=0, max_value=10**15 - 1).map(str),
    st.builds(
        lambda whole, part: f"{whole}.{part}",
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=999).map(lambda n: f"{n:03d}"),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    limit=_decimal,
    remaining=_decimal,
    reset=_decimal,
    separator=st.sampled_from([",", ";", ", ", "; "]),
)
def test_closes_own_form_reads_as_the_general_parser_reads_it(
    limit: str, remaining: str, reset: str, separator: str
) -> None:
    """The one-match reading of ``limit=L, remaining=R, reset=T`` agrees with the general one."""
    value = f"limit={limit}{separator}remaining={remaining}{separator}reset={reset}"
    assert _CLOSE_FORM.fullmatch(value) is not None  # read by the one match
    members = _parse_members(value)
    assert members is not None
    expected = RateLimitInfo(
        members["limit"], members["remaining"], min(members["reset"], MAX_RESET)
    )
    assert parse_ratelimit({"RateLimit": value}) == expected
