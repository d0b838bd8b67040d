"""
The protocol core: building Close requests and reading Close responses.

Pure functions over plain values. Nothing here imports aiohttp, asyncio or tenacity (a
test enforces it), so the rules can be tested without a socket and reused by any I/O
layer. Sources: https://developer.close.com/api/resources/reporting/get-funnel-totals,
https://developer.close.com/api/overview/http-response-codes and reference/close-api-notes.md.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar
from urllib.parse import urlencode, urlsplit

import attrs
import orjson

from closefunnel._auth import Credentials
from closefunnel._convert import decode
from closefunnel._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CloseFunnelError,
    InvalidQueryError,
    NotFoundError,
    RateLimitedError,
    ResponseDecodeError,
    ServerError,
)
from closefunnel._models import FunnelTotals, decode_response_json, decode_totals_csv
from closefunnel._query import Compared, DateRange, FunnelQuery, compared_fields
from closefunnel._ratelimit import (
    RateLimitInfo,
    header,
    parse_ratelimit,
    parse_retry_after,
    pause_after_429,
)
from closefunnel._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "ERROR_BODY_LIMIT",
    "TOTALS_PATH",
    "Format",
    "HttpRequest",
    "Interpreted",
    "build_get_request",
    "build_totals_request",
    "endpoint_group",
    "error_for_status",
    "format_tz_offset",
    "interpret",
    "is_loopback_host",
    "list_decoder",
    "normalize_base_url",
    "parse_list_response",
    "parse_totals_response",
    "totals_decoder",
]

#: Close's API root; every path below is relative to it.
DEFAULT_BASE_URL: Final = "https://api.close.com/api/v1/"
#: The funnel totals report, relative to the API root.
TOTALS_PATH: Final = "report/funnel/opportunity/totals/"
USER_AGENT: Final = f"closefunnel/{__version__} (+aiohttp)"

#: The most of a non-2xx body that is read and kept on the error: enough for any error
#: Close writes, far too little for a hostile page to cost memory.
ERROR_BODY_LIMIT: Final = 64 * 1024

Format: TypeAlias = Literal["json", "csv"]
_ACCEPT: Final[Mapping[str, str]] = {"json": "application/json", "csv": "text/csv"}
T = TypeVar("T")


@attrs.frozen
class HttpRequest:
    """
    Everything needed to send one request, and nothing secret in its repr.

    ``group`` names the rate-limit endpoint group (method + path prefix) and ``key``
    identifies identical requests, so in-flight duplicates can share one call.
    """

    method: str
    url: str
    path: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes | None = attrs.field(default=None, repr=False)

    @property
    def group(self) -> str:
        """The endpoint group this request is rate-limited under."""
        return endpoint_group(self.method, self.path)

    @property
    def key(self) -> tuple[str, str, str, bytes | None]:
        """Identity for single-flight: same endpoint, same Accept, same body."""
        return (self.method, self.url, self.headers.get("Accept", ""), self.body)


@functools.lru_cache(maxsize=256)
def endpoint_group(method: str, path: str) -> str:
    """
    The endpoint group Close rate-limits *path* under: the method plus the first two
    path segments below the API root (``POST report/funnel``), as Close's blog
    describes groups ("URL prefix and request method").

    Cached: a client asks it for every request, of a handful of paths.
    """
    segments = [part for part in path.split("/") if part]
    return f"{method.upper()} {'/'.join(segments[:2])}"


def is_loopback_host(host: str) -> bool:
    """Whether *host* names this machine: ``localhost``, 127.0.0.0/8 or ``::1``."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """
    *base_url* with exactly one trailing slash, after checking it is a plain http(s) URL.

    Credentials in the URL are refused (the key goes in the Authorization header, and a
    password there would show in every repr), and so are a query or a fragment, which
    would end up in the middle of every request's URL. Plain ``http://`` is refused for
    any host but this machine unless *allow_insecure_http*: every request carries the
    key, which would cross the network in clear text.
    """

    def refuse(why: str) -> InvalidQueryError:
        return InvalidQueryError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r} ({why})",
            field="base_url",
            rule="url",
        )

    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018  # parses the port, raising ValueError when out of range
    except ValueError as exc:
        raise refuse(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(f"got {base_url!r}")
    if parts.username is not None or parts.password is not None:
        raise refuse("it holds credentials; pass the key as api_key= instead")
    if parts.query or parts.fragment:
        raise refuse("it has a query or fragment")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise InvalidQueryError(
            f"base_url {base_url!r} is plain http:// to a host other than this machine, so "
            "the API key would travel in clear text; use https://, or pass "
            "allow_insecure_http=True if the network is yours",
            field="base_url",
            rule="https",
        )
    return base_url.rstrip("/") + "/"


def format_tz_offset(hours: float | None) -> str | None:
    """
    The ``X-TZ-Offset`` value for *hours* (decimal hours, e.g. -2.5), or None.

    Close takes decimal hours only (https://developer.close.com/api/overview/timezone-offsets).
    """
    if hours is None:
        return None
    # Typed callers cannot pass these, but CLI and web callers pass what users typed.
    valid = isinstance(hours, int | float) and not isinstance(hours, bool)  # type: ignore[redundant-expr]
    if not valid or not math.isfinite(hours):
        raise InvalidQueryError(
            f"tz_offset must be a number of hours, got {hours!r}", field="tz_offset", rule="type"
        )
    if not -12 <= hours <= 14:
        raise InvalidQueryError(
            f"tz_offset must be between -12 and 14 hours, got {hours}",
            field="tz_offset",
            rule="range",
        )
    # Fixed-point, not "g", which writes tiny offsets in exponent form ("1e-07").
    return f"{hours + 0.0:.6f}".rstrip("0").rstrip(".")


def _headers(
    credentials: Credentials, *, accept: str, tz_offset: str | None, json_body: bool
) -> dict[str, str]:
    headers = {
        "Authorization": credentials.authorization(),
        "Accept": accept,
        "User-Agent": USER_AGENT,
    }
    if json_body:
        headers["Content-Type"] = "application/json"
    if tz_offset is not None:
        headers["X-TZ-Offset"] = tz_offset
    return headers


def build_totals_request(
    query: FunnelQuery,
    *,
    credentials: Credentials,
    base_url: str,
    compared: Compared | None = None,
    format: Format = "json",
    tz_offset: str | None = None,
) -> HttpRequest:
    """
    The request for one funnel totals report, or for one compared range of it.

    Raises:
        InvalidQueryError: *compared* breaks the pairing rules, or *format* is unknown.
    """
    if format not in _ACCEPT:
        raise InvalidQueryError(
            f"format must be 'json' or 'csv', got {format!r}", field="format", rule="format"
        )
    body = query.to_body()
    if compared is not None:
        body.update(compared_fields(query, compared))
    return HttpRequest(
        method="POST",
        url=base_url + TOTALS_PATH,
        path=TOTALS_PATH,
        headers=_headers(credentials, accept=_ACCEPT[format], tz_offset=tz_offset, json_body=True),
        body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
    )


def build_get_request(
    path: str,
    *,
    credentials: Credentials,
    base_url: str,
    tz_offset: str | None = None,
    query: Mapping[str, str | int] | None = None,
) -> HttpRequest:
    """A GET of *path* (relative to the API root, e.g. ``pipeline/``) with *query*."""
    url = base_url + path
    if query:
        url += "?" + urlencode(query)
    return HttpRequest(
        method="GET",
        url=url,
        path=path,
        headers=_headers(
            credentials, accept="application/json", tz_offset=tz_offset, json_body=False
        ),
    )


def _error_message(data: Any, fallback: str) -> str:
    if isinstance(data, dict):
        parts: list[str] = []
        error = data.get("error")
        if isinstance(error, str) and error:
            parts.append(error)
        elif isinstance(error, dict) and isinstance(error.get("message"), str):
            parts.append(error["message"])
        errors = data.get("errors")
        if isinstance(errors, list):
            parts.extend(str(item) for item in errors if item)
        field_errors = data.get("field-errors")
        if isinstance(field_errors, dict):
            parts.extend(f"{key}: {value}" for key, value in field_errors.items())
        if isinstance(data.get("message"), str):
            parts.append(data["message"])
        if parts:
            return "; ".join(parts)
    return fallback


def _declared_length(headers: Mapping[str, str]) -> int | None:
    declared = header(headers, "Content-Length")
    if declared is None or not declared.strip().isdigit():
        return None
    return int(declared)


def _cut_note(shown: int, total: int | None) -> str:
    """How a cut is said: how many bytes were left out, when that is known."""
    if total is not None:
        return f" … [truncated, {total - shown} bytes more]"
    if shown < ERROR_BODY_LIMIT:
        return f" … [truncated; the body ran past {ERROR_BODY_LIMIT} bytes]"
    return f" … [truncated after {shown} bytes]"


def _error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, pause: float
) -> CloseFunnelError:
    # The client reads at most one byte past ERROR_BODY_LIMIT of an error body, so the
    # full length, when past the limit, is known only from Content-Length.
    cut = len(body) > ERROR_BODY_LIMIT
    total = _declared_length(headers) if cut else len(body)
    if total is not None and total < len(body):
        total = None  # a Content-Length that contradicts the body is no measure of it
    kept = body[:ERROR_BODY_LIMIT]
    data: Any = None
    if kept and not cut:
        try:
            data = orjson.loads(kept)
        except orjson.JSONDecodeError:
            data = None
    detail = _error_message(data, "")
    if not detail:  # no message of Close's: quote the start of the body
        text = kept[:200].decode("utf-8", "replace").strip()
        detail = text or "no details in the response body"
        if len(body) > 200:
            detail += _cut_note(200, total)
    if cut:  # what was cut is no JSON value: keep the text that was read, and say so
        data = kept.decode("utf-8", "replace") + _cut_note(ERROR_BODY_LIMIT, total)
    message = f"Close answered {status}: {detail}"
    if status == 400:
        errors = data.get("errors") if isinstance(data, dict) else None
        field_errors = data.get("field-errors") if isinstance(data, dict) else None
        return BadRequestError(
            message,
            body=data,
            errors=[str(item) for item in errors] if isinstance(errors, list) else (),
            field_errors=(
                {str(k): str(v) for k, v in field_errors.items()}
                if isinstance(field_errors, dict)
                else None
            ),
        )
    if status in (401, 403):
        hint = "check the API key or token" if status == 401 else "the key may not do this"
        return AuthenticationError(f"{message} ({hint})", status=status, body=data)
    if status == 404:
        return NotFoundError(message, status=status, body=data)
    if status == 429:
        return RateLimitedError(
            f"Close's rate limit was hit; it asks to wait {pause:.2f}s",
            retry_after=pause,
            body=data,
        )
    if status >= 500:
        retry_after = parse_retry_after(header(headers, "Retry-After"), now=now)
        return ServerError(message, status=status, body=data, retry_after=retry_after)
    return APIError(message, status=status, body=data)


@attrs.frozen
class Interpreted(Generic[T]):
    """
    What one response means, worked out once: the value or the typed error, plus what
    the gate learns from it.

    Attributes:
        value: The decoded value of a 2xx response (None when *error* is set).
        error: The typed error the response means, if any.
        ratelimit: The rate-limit facts its headers announce (None: none announced).
        pause: Seconds a 429 asks the whole endpoint group to pause (0 otherwise).
    """

    value: T | None
    error: CloseFunnelError | None
    ratelimit: RateLimitInfo | None
    pause: float = 0.0

    def unwrap(self) -> T:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # set whenever error is None


def interpret(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    decode: Callable[[bytes], T],
) -> Interpreted[T]:
    """
    Turn one response into its value or typed error, plus its rate-limit facts.

    Args:
        status: The HTTP status.
        headers: The response headers (any case).
        body: The raw response body (may be empty).
        now: The current Unix time, for ``Retry-After`` HTTP-dates.
        decode: Turns a 2xx body into the value; raises :class:`ResponseDecodeError`.
    """
    ratelimit = parse_ratelimit(headers)
    if 200 <= status < 300:
        try:
            return Interpreted(decode(body), None, ratelimit)
        except CloseFunnelError as exc:
            return Interpreted(None, exc, ratelimit)
    pause = pause_after_429(ratelimit, headers, body, now=now) if status == 429 else 0.0
    return Interpreted(None, _error(status, headers, body, now=now, pause=pause), ratelimit, pause)


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> CloseFunnelError | None:
    """
    The exception a non-2xx response means, or None for a 2xx (see :func:`interpret`).

    Args:
        status: The HTTP status.
        headers: The response headers (any case).
        body: The raw response body (may be empty); past :data:`ERROR_BODY_LIMIT` it is
            cut, and the message says so.
        now: The current Unix time, for ``Retry-After`` HTTP-dates.
    """
    if 200 <= status < 300:
        return None
    return interpret(status, headers, body, now=now, decode=bytes).error


def totals_decoder(
    format: Format, *, range: DateRange | None = None
) -> Callable[[bytes], FunnelTotals]:
    """
    The body decoder of a funnel totals report in *format*, saying it covers *range*
    (what the client resolved: the body Close sends does not say).
    """
    if format == "csv":
        if range is None:
            return decode_totals_csv
        return lambda body: attrs.evolve(decode_totals_csv(body), range=range)
    return functools.partial(decode_response_json, range=range)


def parse_totals_response(
    status: int, headers: Mapping[str, str], body: bytes, *, format: Format, now: float
) -> FunnelTotals:
    """
    A funnel totals report from one response.

    Raises:
        CloseFunnelError: the status's error (see :func:`error_for_status`), or
            :class:`ResponseDecodeError` for a 2xx body that is not a report.
    """
    return interpret(status, headers, body, now=now, decode=totals_decoder(format)).unwrap()


def list_decoder(cls: type[T]) -> Callable[[bytes], tuple[list[T], bool]]:
    """
    The body decoder of a Close list response (``{"data": [...], "has_more": ...}``):
    its items and whether more pages follow.
    """

    def decode_list(body: bytes) -> tuple[list[T], bool]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ResponseDecodeError(f"response is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ResponseDecodeError("list response has no 'data' list")
        items = decode(data["data"], list[cls])  # type: ignore[valid-type]  # a runtime type
        return items, bool(data.get("has_more", False))

    return decode_list


def parse_list_response(
    status: int, headers: Mapping[str, str], body: bytes, cls: type[T], *, now: float
) -> tuple[list[T], bool]:
    """
    The items of a Close list response (``{"data": [...], "has_more": ...}``) and
    whether more pages follow.
    """
    return interpret(status, headers, body, now=now, decode=list_decoder(cls)).unwrap()
