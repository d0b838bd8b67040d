"""
The protocol core: building Close requests and reading Close responses.

Pure functions over plain values. Nothing here imports aiohttp, asyncio or tenacity (a
test enforces it), so the rules can be tested without a socket and reused by any I/O
layer. Sources: https://developer.close.com/api/resources/reporting/get-funnel-totals,
https://developer.close.com/api/overview/http-response-codes and reference/close-api-notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, TypeVar
from urllib.parse import urlencode, urlsplit

import attrs
import orjson

from closefunnel._auth import Credentials
from closefunnel._convert import decode, decode_totals_csv, decode_totals_json
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
from closefunnel._models import FunnelTotals
from closefunnel._query import Compared, FunnelQuery, compared_fields
from closefunnel._ratelimit import header, parse_retry_after, wait_after_429
from closefunnel._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "TOTALS_PATH",
    "Format",
    "HttpRequest",
    "build_get_request",
    "build_totals_request",
    "endpoint_group",
    "error_for_status",
    "format_tz_offset",
    "normalize_base_url",
    "parse_list_response",
    "parse_totals_response",
]

#: Close's API root; every path below is relative to it.
DEFAULT_BASE_URL: Final = "https://api.close.com/api/v1/"
#: The funnel totals report, relative to the API root.
TOTALS_PATH: Final = "report/funnel/opportunity/totals/"
USER_AGENT: Final = f"closefunnel/{__version__} (+aiohttp)"

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


def endpoint_group(method: str, path: str) -> str:
    """
    The endpoint group Close rate-limits *path* under: the method plus the first two
    path segments below the API root (``POST report/funnel``), as Close's blog
    describes groups ("URL prefix and request method").
    """
    segments = [part for part in path.split("/") if part]
    return f"{method.upper()} {'/'.join(segments[:2])}"


def normalize_base_url(base_url: str) -> str:
    """
    *base_url* with exactly one trailing slash, after checking it is a plain http(s) URL.

    Credentials in the URL are refused (the key goes in the Authorization header, and a
    password there would show in every repr), and so are a query or a fragment, which
    would end up in the middle of every request's URL.
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


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> CloseFunnelError | None:
    """
    The exception a non-2xx response means, or None for a 2xx.

    Args:
        status: The HTTP status.
        headers: The response headers (any case).
        body: The raw response body (may be empty).
        now: The current Unix time, for ``Retry-After`` HTTP-dates.
    """
    if 200 <= status < 300:
        return None
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    text = body[:200].decode("utf-8", "replace").strip()
    detail = _error_message(data, text or "no details in the response body")
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
        wait = wait_after_429(headers, body, now=now)
        return RateLimitedError(
            f"Close's rate limit was hit; it asks to wait {wait:.2f}s",
            retry_after=wait,
            body=data,
        )
    if status >= 500:
        retry_after = parse_retry_after(header(headers, "Retry-After"), now=now)
        return ServerError(message, status=status, body=data, retry_after=retry_after)
    return APIError(message, status=status, body=data)


def _raise_for_status(status: int, headers: Mapping[str, str], body: bytes, now: float) -> None:
    error = error_for_status(status, headers, body, now=now)
    if error is not None:
        raise error


def parse_totals_response(
    status: int, headers: Mapping[str, str], body: bytes, *, format: Format, now: float
) -> FunnelTotals:
    """
    A funnel totals report from one response.

    Raises:
        CloseFunnelError: the status's error (see :func:`error_for_status`), or
            :class:`ResponseDecodeError` for a 2xx body that is not a report.
    """
    _raise_for_status(status, headers, body, now)
    if format == "csv":
        return decode_totals_csv(body)
    return decode_totals_json(body)


def parse_list_response(
    status: int, headers: Mapping[str, str], body: bytes, cls: type[T], *, now: float
) -> tuple[list[T], bool]:
    """
    The items of a Close list response (``{"data": [...], "has_more": ...}``) and
    whether more pages follow.
    """
    _raise_for_status(status, headers, body, now)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseDecodeError(f"response is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ResponseDecodeError("list response has no 'data' list")
    items = decode(data["data"], list[cls])  # type: ignore[valid-type]  # cls is a runtime type
    return items, bool(data.get("has_more", False))
