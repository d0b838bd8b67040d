"""The pure protocol core: building requests and mapping statuses to exceptions."""

from __future__ import annotations

import base64
import math
from importlib.metadata import version
from typing import Any

import orjson
import pytest

from closefunnel import (
    DEFAULT_BASE_URL,
    APIError,
    AuthenticationError,
    BadRequestError,
    CloseFunnelError,
    Credentials,
    FunnelQuery,
    FunnelTotals,
    InvalidQueryError,
    NotFoundError,
    Pipeline,
    RateLimitedError,
    ResponseDecodeError,
    ServerError,
)
from closefunnel._ratelimit import RateLimitInfo, wait_after_429
from closefunnel._sansio import (
    ERROR_BODY_LIMIT,
    TOTALS_PATH,
    Interpreted,
    build_get_request,
    build_totals_request,
    endpoint_group,
    error_for_status,
    format_tz_offset,
    interpret,
    is_loopback_host,
    list_decoder,
    normalize_base_url,
    parse_list_response,
    parse_totals_response,
)

KEY = "api_abc123.secretpart"
NOW = 1_700_000_000.0


@pytest.fixture(name="credentials")
def fixture_credentials() -> Credentials:
    """API-key credentials with a recognisable secret."""
    return Credentials.api_key(KEY)


# -- error_for_status ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_success_is_no_error(status: int) -> None:
    """A 2xx status is no error."""
    assert error_for_status(status, {}, b"", now=NOW) is None


def test_400_carries_close_errors() -> None:
    """A 400 is a BadRequestError (also InvalidQueryError) with errors and field-errors."""
    body = orjson.dumps(
        {"errors": ["bad pipeline"], "field-errors": {"pipeline": "Object does not exist."}}
    )
    error = error_for_status(400, {}, body, now=NOW)
    assert isinstance(error, BadRequestError)
    assert isinstance(error, InvalidQueryError)
    assert isinstance(error, APIError)
    assert isinstance(error, ValueError)
    assert error.status == 400
    assert error.errors == ("bad pipeline",)
    assert error.field_errors == {"pipeline": "Object does not exist."}
    assert error.field == "pipeline"
    assert "bad pipeline" in str(error)
    assert "pipeline: Object does not exist." in str(error)
    assert error.body == orjson.loads(body)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (599, ServerError),
        (400, BadRequestError),
        (402, APIError),
        (405, APIError),
        (409, APIError),
        (418, APIError),
        (302, APIError),
    ],
)
@pytest.mark.parametrize(
    "body",
    [b"", b"<html>Bad Gateway</html>", b'{"error": "Nope"}', b"\xff\xfe", b"[1, 2]", b"null"],
    ids=["empty", "html", "json", "binary", "list", "null"],
)
def test_status_classes(status: int, cls: type[APIError], body: bytes) -> None:
    """Each status maps to its class with .status, whatever the body holds."""
    error = error_for_status(status, {}, body, now=NOW)
    assert type(error) is cls
    assert isinstance(error, CloseFunnelError)
    assert error.status == status
    assert str(error)


def test_error_message_from_json_body() -> None:
    """A JSON error body's "error" becomes the message; the raw text otherwise."""
    error = error_for_status(404, {}, b'{"error": "Pipeline not found"}', now=NOW)
    assert isinstance(error, NotFoundError)
    assert "Pipeline not found" in str(error)
    assert error.body == {"error": "Pipeline not found"}
    plain = error_for_status(502, {}, b"upstream went away", now=NOW)
    assert "upstream went away" in str(plain)
    assert plain.body is None  # type: ignore[union-attr]


def test_400_without_body() -> None:
    """A 400 with an empty body is still a BadRequestError, with no errors."""
    error = error_for_status(400, {}, b"", now=NOW)
    assert isinstance(error, BadRequestError)
    assert error.errors == ()
    assert error.field_errors == {}
    assert error.field is None


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, b"", 7.0),
        ({"RateLimit": "limit=10, remaining=0, reset=1.5", "Retry-After": "2"}, b"", 1.5),
        ({}, b'{"error": {"rate_reset": 3.25}}', 3.25),
        ({}, b"", 2.0),
    ],
)
def test_429_retry_after(headers: dict[str, str], body: bytes, expected: float) -> None:
    """A 429 is a RateLimitedError whose retry_after is the wait Close asked for."""
    error = error_for_status(429, headers, body, now=NOW)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == expected
    assert error.status == 429


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "5"}, 5.0), ({"retry-after": "soon"}, None), ({}, None)],
)
def test_5xx_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """A 5xx keeps a readable Retry-After as retry_after, else None."""
    error = error_for_status(503, headers, b"", now=NOW)
    assert isinstance(error, ServerError)
    assert error.retry_after == expected


# -- requests --------------------------------------------------------------------------------


def test_build_totals_request(credentials: Credentials, reference_query: FunnelQuery) -> None:
    """The totals request has Close's URL, headers and a sorted-key JSON body of to_body()."""
    request = build_totals_request(
        reference_query, credentials=credentials, base_url=DEFAULT_BASE_URL
    )
    assert request.method == "POST"
    assert request.url == "https://api.close.com/api/v1/report/funnel/opportunity/totals/"
    assert request.path == TOTALS_PATH
    assert request.body is not None
    assert orjson.loads(request.body) == reference_query.to_body()
    assert request.body == orjson.dumps(reference_query.to_body(), option=orjson.OPT_SORT_KEYS)
    headers = request.headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith(f"closefunnel/{version('closefunnel')}")
    assert "X-TZ-Offset" not in headers
    assert request.group == "POST report/funnel"


def test_request_repr_hides_secret(credentials: Credentials, reference_query: FunnelQuery) -> None:
    """An HttpRequest's repr shows neither the key nor its Basic encoding."""
    request = build_totals_request(
        reference_query, credentials=credentials, base_url=DEFAULT_BASE_URL
    )
    encoded = request.headers["Authorization"].split(" ", 1)[1]
    assert "secretpart" not in repr(request)
    assert encoded not in repr(request)


def test_build_totals_request_csv_bearer_tz(reference_query: FunnelQuery) -> None:
    """CSV asks for text/csv, a token authenticates as Bearer, and X-TZ-Offset is sent."""
    request = build_totals_request(
        reference_query,
        credentials=Credentials.token("oauth-token-value"),
        base_url="http://127.0.0.1:8080/api/v1/",
        format="csv",
        tz_offset=format_tz_offset(-2.5),
    )
    assert request.url == "http://127.0.0.1:8080/api/v1/report/funnel/opportunity/totals/"
    assert request.headers["Accept"] == "text/csv"
    assert request.headers["Authorization"] == "Bearer oauth-token-value"
    assert request.headers["X-TZ-Offset"] == "-2.5"


def test_build_totals_request_with_compared(
    credentials: Credentials, reference_query: FunnelQuery
) -> None:
    """A compared range adds its compared_* field to to_body(); the pairing rules apply."""
    request = build_totals_request(
        reference_query,
        credentials=credentials,
        base_url=DEFAULT_BASE_URL,
        compared="same-days-last-year",
    )
    assert request.body is not None
    expected = {**reference_query.to_body(), "compared_datetime_range": "same-days-last-year"}
    assert orjson.loads(request.body) == expected
    with pytest.raises(InvalidQueryError) as info:
        build_totals_request(
            reference_query, credentials=credentials, base_url=DEFAULT_BASE_URL, compared="today"
        )
    assert info.value.rule == "relative-needs-relative-base"


def test_build_totals_request_rejects_format(
    credentials: Credentials, reference_query: FunnelQuery
) -> None:
    """An unknown format is an InvalidQueryError naming the format field."""
    with pytest.raises(InvalidQueryError) as info:
        build_totals_request(
            reference_query,
            credentials=credentials,
            base_url=DEFAULT_BASE_URL,
            format="xml",  # type: ignore[arg-type]
        )
    assert info.value.field == "format"


def test_build_get_request(credentials: Credentials) -> None:
    """A GET carries auth, Accept json and no body or Content-Type."""
    request = build_get_request("pipeline/", credentials=credentials, base_url=DEFAULT_BASE_URL)
    assert (request.method, request.url) == ("GET", "https://api.close.com/api/v1/pipeline/")
    assert request.body is None
    assert "Content-Type" not in request.headers
    assert request.headers["Accept"] == "application/json"
    assert request.group == "GET pipeline"


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("POST", "report/funnel/opportunity/totals/", "POST report/funnel"),
        ("post", "/report/funnel/opportunity/stages/", "POST report/funnel"),
        ("GET", "pipeline/", "GET pipeline"),
        ("GET", "user/", "GET user"),
        ("GET", "", "GET "),
    ],
)
def test_endpoint_group(method: str, path: str, group: str) -> None:
    """The endpoint group is the upper-case method and the first two path segments."""
    assert endpoint_group(method, path) == group


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (None, None),
        (-2.5, "-2.5"),
        (5, "5"),
        (5.0, "5"),
        (0, "0"),
        (-0.0, "0"),
        (5.75, "5.75"),
        (-12, "-12"),
        (14, "14"),
        (1e-7, "0"),
    ],
)
def test_format_tz_offset(hours: float | None, expected: str | None) -> None:
    """X-TZ-Offset is decimal hours, without a trailing .0 or an exponent."""
    assert format_tz_offset(hours) == expected


@pytest.mark.parametrize(
    ("hours", "rule"),
    [
        (-12.5, "range"),
        (14.25, "range"),
        (100, "range"),
        (math.nan, "type"),
        (math.inf, "type"),
        (True, "type"),
        ("5", "type"),
    ],
)
def test_format_tz_offset_rejects(hours: Any, rule: str) -> None:
    """Offsets outside -12..14, non-finite numbers, bools and strings are refused."""
    with pytest.raises(InvalidQueryError) as info:
        format_tz_offset(hours)
    assert (info.value.field, info.value.rule) == ("tz_offset", rule)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.close.com/api/v1", "https://api.close.com/api/v1/"),
        ("http://127.0.0.1:1234/api/v1//", "http://127.0.0.1:1234/api/v1/"),
    ],
)
def test_normalize_base_url(url: str, expected: str) -> None:
    """Base URLs end in exactly one slash."""
    assert normalize_base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/",
        "api.close.com/api/v1/",
        "",
        "https://",
        "http://[::1/api/v1/",
        "http://user:pw@api.close.com/api/v1/",
        "https://api.close.com/api/v1/?x=1",
        "https://api.close.com/api/v1/#top",
        "http://127.0.0.1:99999/api/v1/",
    ],
)
def test_normalize_base_url_rejects(url: str) -> None:
    """A base URL that is not http(s) with a host is an InvalidQueryError."""
    with pytest.raises(InvalidQueryError):
        normalize_base_url(url)


# -- parsing responses -----------------------------------------------------------------------


def test_parse_totals_response(reference_response_bytes: bytes, reference_csv: str) -> None:
    """A 200 decodes as JSON or CSV; a non-2xx raises its error; junk raises decode errors."""
    totals = parse_totals_response(200, {}, reference_response_bytes, format="json", now=NOW)
    assert totals == FunnelTotals.from_json(reference_response_bytes)
    csv = parse_totals_response(200, {}, reference_csv.encode(), format="csv", now=NOW)
    assert csv.data == totals.data
    with pytest.raises(NotFoundError):
        parse_totals_response(404, {}, b'{"error": "x"}', format="json", now=NOW)
    with pytest.raises(ResponseDecodeError):
        parse_totals_response(200, {}, reference_response_bytes[:50], format="json", now=NOW)


def test_parse_list_response() -> None:
    """A list response gives its items and has_more; a wrong shape is a decode error."""
    body = orjson.dumps({"data": [{"id": "p", "name": "Sales", "statuses": []}], "has_more": True})
    items, more = parse_list_response(200, {}, body, Pipeline, now=NOW)
    assert items == [Pipeline(id="p", name="Sales")]
    assert more is True
    for bad in (b"nope", b"[]", b'{"data": {}}', b'{"data": [{"id": 1}]}'):
        with pytest.raises(ResponseDecodeError):
            parse_list_response(200, {}, bad, Pipeline, now=NOW)
    with pytest.raises(AuthenticationError):
        parse_list_response(401, {}, b"", Pipeline, now=NOW)


# -- interpret: one reading of a response ------------------------------------------------------


def test_interpret_works_out_the_value_and_the_gate_facts_once() -> None:
    """A 2xx: the decoded value plus the RateLimit facts; no pause."""
    body = b'{"data": [], "has_more": false}'
    headers = {"ratelimit": "limit=10, remaining=3, reset=1.5"}
    outcome = interpret(200, headers, body, now=NOW, decode=list_decoder(Pipeline))
    assert outcome == Interpreted(([], False), None, RateLimitInfo(10, 3, 1.5), 0.0)
    assert outcome.unwrap() == ([], False)


def test_interpret_gives_a_429_its_pause_and_the_error_the_same_figure() -> None:
    headers = {"RateLimit": "limit=10, remaining=0, reset=2.5", "Retry-After": "3"}
    outcome = interpret(429, headers, b"", now=NOW, decode=bytes)
    assert outcome.pause == wait_after_429(headers, b"", now=NOW) == 2.5
    assert outcome.ratelimit == RateLimitInfo(10, 0, 2.5)
    assert isinstance(outcome.error, RateLimitedError)
    assert outcome.error.retry_after == outcome.pause
    with pytest.raises(RateLimitedError):
        outcome.unwrap()


def test_interpret_returns_a_decode_failure_as_the_error() -> None:
    outcome = interpret(200, {}, b"not json", now=NOW, decode=list_decoder(Pipeline))
    assert isinstance(outcome.error, ResponseDecodeError)
    assert outcome.value is None


def test_an_error_body_past_64_kib_is_cut_and_the_cut_said() -> None:
    """The kept body and the message say how much more there was (from Content-Length)."""
    body = b"x" * (ERROR_BODY_LIMIT + 1)
    error = error_for_status(502, {"Content-Length": "1000000"}, body, now=NOW)
    assert isinstance(error, ServerError)
    assert isinstance(error.body, str)
    assert error.body == "x" * ERROR_BODY_LIMIT + f" … [truncated, {1_000_000 - 65536} bytes more]"
    assert (
        str(error) == f"Close answered 502: {'x' * 200} … [truncated, {1_000_000 - 200} bytes more]"
    )
    unknown = error_for_status(502, {}, body, now=NOW)
    assert isinstance(unknown, ServerError)
    assert str(unknown).endswith(" … [truncated; the body ran past 65536 bytes]")
    assert unknown.body.endswith(" … [truncated after 65536 bytes]")
    short = error_for_status(502, {}, b"y" * 300, now=NOW)
    assert str(short).endswith("y … [truncated, 100 bytes more]")
    assert short is not None
    assert short.body is None  # not JSON, and nothing was cut


def test_plain_http_is_only_for_this_machine_unless_allowed() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("127.255.0.9")
    assert is_loopback_host("::1")
    assert is_loopback_host("localhost")
    assert is_loopback_host("LOCALHOST.")
    assert not is_loopback_host("10.0.0.1")
    assert not is_loopback_host("localhost.example.com")
    with pytest.raises(InvalidQueryError, match="clear text"):
        normalize_base_url("http://api.close.com/api/v1")
    assert normalize_base_url("http://api.close.com/api/v1", allow_insecure_http=True) == (
        "http://api.close.com/api/v1/"
    )
