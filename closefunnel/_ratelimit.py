"""
Reading Close's rate-limit signals: pure functions, no I/O, no clock of their own.

Close sends ``RateLimit: limit=L, remaining=R, reset=T`` on most responses (T is decimal
seconds left in the window). Both ``,`` and ``;`` separators are seen in the wild, and the
name arrives in any case. Older layers send ``X-Rate-Limit-Limit/-Remaining/-Reset`` or
``RateLimit-Reset``; a 429 carries ``Retry-After`` (T rounded up) and, from older layers, a
JSON body with ``rate_reset`` at the top level or under ``error`` (a number or a string).
See https://developer.close.com/api/overview/rate-limits and reference/close-api-notes.md §1.

Every value is checked: a malformed, negative, NaN or infinite number is ignored rather
than trusted, so no header can make the client wait forever or not at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final

import attrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "DEFAULT_429_WAIT",
    "MAX_RESET",
    "RateLimitInfo",
    "header",
    "parse_ratelimit",
    "parse_retry_after",
    "pause_after_429",
    "wait_after_429",
]

#: Seconds to pause after a 429 that says nothing about when to come back
#: (the figure Close's own client uses).
DEFAULT_429_WAIT: Final = 2.0
#: No signal is believed beyond a day: past that it is a broken header, not a plan.
MAX_RESET: Final = 86_400.0
#: Header mappings that already match names in any case (aiohttp's response headers):
#: read by name, without a scan or a lower-cased copy.
_ANY_CASE: Final = (CIMultiDictProxy, CIMultiDict)


@attrs.frozen
class RateLimitInfo:
    """
    One response's view of the rate limit.

    Attributes:
        limit: Requests allowed per window (None when the header left it out).
        remaining: Requests left in the current window.
        reset: Seconds until the window ends.
    """

    limit: float | None
    remaining: float
    reset: float


def header(headers: Mapping[str, str], name: str) -> str | None:
    """*name*'s first value from *headers*, matching the name in any case."""
    if isinstance(headers, _ANY_CASE):
        return headers.get(name)
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def _any_case(headers: Mapping[str, str]) -> Mapping[str, str]:
    """*headers* as a mapping whose ``get`` of a lower-case name matches any case."""
    if isinstance(headers, _ANY_CASE):
        return headers
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        lowered.setdefault(key.lower(), value)  # the first value, as a CIMultiDict's get
    return lowered


def _number(text: object) -> float | None:
    if isinstance(text, str):  # the usual case first: a header's text
        try:
            value = float(text.strip())
        except ValueError:
            return None
    elif type(text) is int or type(text) is float:  # exactly: a bool is no count
        value = float(text)
    else:
        return None
    if math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def _parse_members(value: str) -> dict[str, float] | None:
    members: dict[str, float] = {}
    for part in value.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, raw = part.partition("=")
        if not eq:
            return None
        number = _number(raw.strip().strip('"'))
        if number is None:
            return None
        members[key.strip().lower()] = number
    return members


#: A number of the ``RateLimit`` header as Close writes it: at most 15 digits a side,
#: so it is always finite and exact enough.
_DECIMAL: Final = r"(\d{1,15}(?:\.\d{1,15})?)"
#: The whole header in the form Close writes (``limit=L, remaining=R, reset=T``, commas
#: or semicolons): read in one match. Any other form goes through the general parser.
_CLOSE_FORM: Final = re.compile(
    rf"limit={_DECIMAL}[,;] ?remaining={_DECIMAL}[,;] ?reset={_DECIMAL}", re.ASCII
)


def _parse_combined(value: str) -> RateLimitInfo | None:
    """A ``RateLimit`` header's facts, or None without ``remaining`` and ``reset``."""
    match = _CLOSE_FORM.fullmatch(value)
    if match is not None:
        limit, remaining, reset = match.groups()
        return RateLimitInfo(float(limit), float(remaining), min(float(reset), MAX_RESET))
    members = _parse_members(value)
    if members is None or "remaining" not in members or "reset" not in members:
        return None
    return RateLimitInfo(
        limit=members.get("limit"),
        remaining=members["remaining"],
        reset=min(members["reset"], MAX_RESET),
    )


#: The legacy triples, (remaining, reset, limit) names, in the order they are tried.
_LEGACY: Final = tuple(
    (prefix + "remaining", prefix + "reset", prefix + "limit")
    for prefix in ("x-rate-limit-", "ratelimit-")
)


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """
    The rate-limit state a response announces, or None when it announces none.

    Reads ``RateLimit`` (commas or semicolons, keys in any order, decimals), then the
    legacy ``X-Rate-Limit-*`` and ``RateLimit-Limit/-Remaining/-Reset`` triples. A header
    without ``remaining`` and ``reset``, or with a bad number, counts as absent.
    """
    # Only the few names below are looked up; a plain mapping is lower-cased once.
    headers = _any_case(headers)
    combined = headers.get("ratelimit")
    if combined is not None:
        info = _parse_combined(combined)
        if info is not None:
            return info
    for remaining_name, reset_name, limit_name in _LEGACY:
        text = headers.get(remaining_name)
        remaining = None if text is None else _number(text)
        if remaining is None:
            continue
        reset = _number(headers.get(reset_name))
        if reset is not None:
            return RateLimitInfo(
                limit=_number(headers.get(limit_name)),
                remaining=remaining,
                reset=min(reset, MAX_RESET),
            )
    return None


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    Args:
        value: The header value, or None.
        now: The current time as a Unix timestamp, for HTTP-dates.
    """
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return min(seconds, MAX_RESET)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RESET)


def _body_rate_reset(body: bytes) -> float | None:
    if not body:
        return None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    for source in (data, error if isinstance(error, dict) else {}):
        seconds = _number(source.get("rate_reset"))
        if seconds is not None:
            return min(seconds, MAX_RESET)
    return None


def wait_after_429(headers: Mapping[str, str], body: bytes, *, now: float) -> float:
    """
    How long a 429 asks every request to that endpoint group to pause, in seconds.

    The precise sources (``RateLimit`` reset, legacy headers, legacy body ``rate_reset``)
    win over ``Retry-After``, which is the same figure rounded up. When ``Retry-After``
    asks for clearly more than the precise figure (another limit, such as the
    organization's, was hit), the longer wait wins: the client never comes back sooner
    than the server asked. With no signal at all, :data:`DEFAULT_429_WAIT`.
    """
    return pause_after_429(parse_ratelimit(headers), headers, body, now=now)


def pause_after_429(
    info: RateLimitInfo | None, headers: Mapping[str, str], body: bytes, *, now: float
) -> float:
    """:func:`wait_after_429` for a response whose ``RateLimit`` facts are already parsed."""
    precise = info.reset if info is not None else _body_rate_reset(body)
    retry_after = parse_retry_after(header(headers, "Retry-After"), now=now)
    if precise is None:
        return DEFAULT_429_WAIT if retry_after is None else retry_after
    if retry_after is not None and retry_after > math.ceil(precise):
        return retry_after
    return precise
