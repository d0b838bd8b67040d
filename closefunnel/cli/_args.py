"""
Argument types: text from the command line turned into checked values.

Each is an argparse ``type=`` built by one factory, so every bad value gets the same kind
of message (naming the value and what was expected) and argparse's exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from closefunnel._errors import InvalidQueryError
from closefunnel._sansio import format_tz_offset

__all__ = ["aware_datetime", "hours", "non_negative_seconds", "port", "positive_int"]

T = TypeVar("T")


def _argument(
    convert: Callable[[str], T], what: str, check: Callable[[str, T], str | None], *, name: str
) -> Callable[[str], T]:
    """An argparse ``type=``: *convert*, then *check* (a message when the value is bad)."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        problem = check(text, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    # argparse names the type in some messages: make it a word a user understands.
    parse.__name__ = name
    return parse


def _tz_problem(_: str, value: float) -> str | None:
    try:
        format_tz_offset(value)
    except InvalidQueryError as exc:
        return str(exc)
    return None


aware_datetime = _argument(
    datetime.fromisoformat,
    "an ISO 8601 datetime",
    lambda text, value: (
        None if value.tzinfo is not None else f"{text!r} needs a time zone (e.g. Z or +02:00)"
    ),
    name="datetime",
)
hours = _argument(float, "a number of hours", _tz_problem, name="hours")
positive_int = _argument(
    int,
    "a whole number",
    lambda _, value: None if value >= 1 else f"must be >= 1, got {value}",
    name="number",
)
non_negative_seconds = _argument(
    float,
    "a number of seconds",
    lambda text, value: (
        None if math.isfinite(value) and value >= 0 else f"must be >= 0 seconds, got {text!r}"
    ),
    name="seconds",
)
port = _argument(
    int,
    "a TCP port",
    lambda _, value: None if 0 <= value <= 65_535 else f"must be 0-65535, got {value}",
    name="port",
)
