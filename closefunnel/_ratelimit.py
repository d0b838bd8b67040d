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
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final

import attrs
import orjson

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
    """*name*'s value from *headers*, matching the name in any case."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def _number(text: object) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        value = float(text)
    elif isinstance(text, str):
        try:
            value = float(text.strip())
        except ValueError:
            return None
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


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """
    The rate-limit state a response announces, or None when it announces none.

    Reads ``RateLimit`` (commas or semicolons, keys in any order, decimals), then the
    legacy ``X-Rate-Limit-*`` and ``RateLimit-Limit/-Remaining/-Reset`` triples. A header
    without ``remaining`` and ``reset``, or with a bad number, counts as absent.
    """
    # One pass to lower-case the names, instead of a scan per name that is absent.
    headers = {key.lower(): value for key, value in headers.items()}
    combined = headers.get("ratelimit")
    if combined is not None:
        members = _parse_members(combined)
        if members is not None and "remaining" in members and "reset" in members:
            return RateLimitInfo(
                limit=members.get("limit"),
                remaining=members["remaining"],
                reset=min(members["reset"], MAX_RESET),
            )
    for prefix in ("x-rate-limit-", "ratelimit-"):
        remaining = _number(headers.get(prefix + "remaining"))
        reset = _number(headers.get(prefix + "reset"))
        if remaining is not None and reset is not None:
            return RateLimitInfo(
                limit=_number(headers.get(prefix + "limit")),
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
