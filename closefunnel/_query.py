"""
What a funnel report asks for: ranges, the query value, and the pairing rules.

Everything here is pure and validated at construction, so a bad query fails in the
caller's own stack frame, with the field and the rule named, before any request exists.
The rules are the ones on Close's "Get a funnel report (totals)" page
(https://developer.close.com/api/resources/reporting/get-funnel-totals).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Any, Literal, TypeAlias

import attrs

from closefunnel._errors import InvalidQueryError
from closefunnel._vocabulary import RELATIVE_RANGES, REPORT_TYPES, SAME_DAYS_RANGES

__all__ = [
    "RELATIVE_RANGES",
    "REPORT_TYPES",
    "SAME_DAYS_RANGES",
    "Compared",
    "DateRange",
    "FunnelQuery",
    "RangeSpec",
    "ReportType",
    "compared_fields",
    "format_instant",
    "paired_range",
    "parse_compared",
    "parse_instant",
    "parse_range",
    "validate_compared",
]

ReportType: TypeAlias = Literal["active-stage-cohort", "created-cohort"]


def _check_aware(field: str, value: datetime) -> None:
    if not isinstance(value, datetime):
        raise InvalidQueryError(
            f"{field} must be a datetime, got {type(value).__name__}", field=field, rule="type"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidQueryError(
            f"{field} must be timezone-aware (naive datetimes are ambiguous across time zones): "
            f"{value.isoformat()}",
            field=field,
            rule="timezone-aware",
        )


@attrs.frozen
class DateRange:
    """
    A half-open time range ``[start, end)`` of timezone-aware datetimes.

    Naive datetimes are refused: Close would read them in a zone the caller did not pick.
    """

    start: datetime
    end: datetime

    def __attrs_post_init__(self) -> None:
        _check_aware("start", self.start)
        _check_aware("end", self.end)
        if self.start >= self.end:
            raise InvalidQueryError(
                f"a date range must have start < end, got start={self.start.isoformat()} "
                f"end={self.end.isoformat()}",
                field="end",
                rule="start-before-end",
            )

    def to_body(self) -> dict[str, str]:
        """Close's ``{"start", "end"}`` object, in ISO 8601 (UTC written as ``Z``)."""
        return {"start": format_instant(self.start), "end": format_instant(self.end)}


def format_instant(value: datetime) -> str:
    """*value* in ISO 8601 as Close reads it: UTC written as ``Z``, other offsets kept."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


#: A report or cohort range: one of :data:`RELATIVE_RANGES` or a :class:`DateRange`.
RangeSpec: TypeAlias = str | DateRange
#: A compared range: a relative name, a same-days name, or a :class:`DateRange`.
Compared: TypeAlias = str | DateRange


def _check_range(field: str, value: object) -> None:
    if value is None or isinstance(value, DateRange):
        return
    if isinstance(value, str):
        if value in RELATIVE_RANGES:
            return
        hint = (
            " (same-days names are only for compared ranges)" if value in SAME_DAYS_RANGES else ""
        )
        raise InvalidQueryError(
            f"{field}={value!r} is not a relative range Close knows{hint}; "
            f"use one of {', '.join(RELATIVE_RANGES)} or a DateRange",
            field=field,
            rule="relative-range",
        )
    raise InvalidQueryError(
        f"{field} must be a relative range name or a DateRange, got {type(value).__name__}",
        field=field,
        rule="type",
    )


def _non_empty_str(field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidQueryError(
            f"{field} must be a non-empty string, got {value!r}", field=field, rule="non-empty"
        )


def _to_users(value: object) -> tuple[str, ...]:
    # A bare string is a sequence too; taking it apart character by character would
    # silently ask for the wrong users, so it is refused like any other non-sequence.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidQueryError(
            f"users must be a sequence of user or group ids, got {type(value).__name__}",
            field="users",
            rule="sequence",
        )
    users = tuple(value)
    for user in users:
        if not isinstance(user, str) or not user.strip():
            raise InvalidQueryError(
                f"users must hold non-empty id strings, got {user!r}",
                field="users",
                rule="non-empty",
            )
    return users


@attrs.frozen(kw_only=True)
class FunnelQuery:
    """
    One funnel "totals" report: which pipeline, which opportunities, which period.

    ``report_range`` and ``cohort_range`` are each a relative range name (``"this-month"``)
    or a :class:`DateRange`. An ``active-stage-cohort`` report needs a report range;
    a ``created-cohort`` report needs a cohort range and may add a report range
    (outcomes are then counted inside it). Close ignores a cohort range on an
    active-stage report, so closefunnel refuses one instead of dropping it silently.
    """

    pipeline: str
    type: ReportType = "active-stage-cohort"
    report_range: RangeSpec | None = None
    cohort_range: RangeSpec | None = None
    saved_search_id: str | None = None
    users: tuple[str, ...] = attrs.field(default=(), converter=_to_users)

    def __attrs_post_init__(self) -> None:
        _non_empty_str("pipeline", self.pipeline)
        if self.type not in REPORT_TYPES:
            raise InvalidQueryError(
                f"type={self.type!r} is not a report type; use one of {', '.join(REPORT_TYPES)}",
                field="type",
                rule="report-type",
            )
        _check_range("report_range", self.report_range)
        _check_range("cohort_range", self.cohort_range)
        if self.saved_search_id is not None:
            _non_empty_str("saved_search_id", self.saved_search_id)
        if self.type == "active-stage-cohort":
            if self.report_range is None:
                raise InvalidQueryError(
                    "an active-stage-cohort report needs a report_range",
                    field="report_range",
                    rule="required",
                )
            if self.cohort_range is not None:
                raise InvalidQueryError(
                    "cohort_range is ignored by Close for active-stage-cohort reports; "
                    "drop it or use type='created-cohort'",
                    field="cohort_range",
                    rule="ignored",
                )
        elif self.cohort_range is None:
            raise InvalidQueryError(
                "a created-cohort report needs a cohort_range",
                field="cohort_range",
                rule="required",
            )

    def to_body(self) -> dict[str, Any]:
        """
        The exact JSON body Close expects for this report (unset fields left out).
        """
        body: dict[str, Any] = {"pipeline": self.pipeline, "type": self.type}
        _put_range(body, "report", self.report_range)
        _put_range(body, "cohort", self.cohort_range)
        if self.saved_search_id is not None:
            body["query"] = {"type": "saved_search", "saved_search_id": self.saved_search_id}
        if self.users:
            body["users"] = list(self.users)
        return body


def _put_range(body: dict[str, Any], prefix: str, value: RangeSpec | None) -> None:
    if isinstance(value, DateRange):
        body[f"{prefix}_datetime_range"] = value.to_body()
    elif value is not None:
        body[f"{prefix}_relative_range"] = value


def paired_range(query: FunnelQuery) -> tuple[str, RangeSpec]:
    """
    The base range a compared range is paired with, and its field name.

    Close pairs compared ranges with the report range of an active-stage-cohort report
    and with the cohort range of a created-cohort report.
    """
    if query.type == "created-cohort":
        assert query.cohort_range is not None  # guaranteed by FunnelQuery's validation
        return "cohort_range", query.cohort_range
    assert query.report_range is not None  # guaranteed by FunnelQuery's validation
    return "report_range", query.report_range


def validate_compared(query: FunnelQuery, compared: object) -> Compared:
    """
    Check one compared range against *query* with Close's pairing rules.

    A relative name needs a relative base range, a same-days name needs a datetime base
    range, and a :class:`DateRange` (a custom range) goes with either.

    Raises:
        InvalidQueryError: naming the compared range and the rule it breaks.
    """
    field, base = paired_range(query)
    if isinstance(compared, DateRange):
        return compared
    if not isinstance(compared, str):
        raise InvalidQueryError(
            f"a compared range must be a range name or a DateRange, got {type(compared).__name__}",
            field="compared",
            rule="type",
        )
    if compared in RELATIVE_RANGES:
        if isinstance(base, DateRange):
            raise InvalidQueryError(
                f"compared range {compared!r} is relative, so it needs a relative {field}; "
                f"this query's {field} is a DateRange (use a same-days name or a DateRange)",
                field="compared",
                rule="relative-needs-relative-base",
            )
        return compared
    if compared in SAME_DAYS_RANGES:
        if not isinstance(base, DateRange):
            raise InvalidQueryError(
                f"compared range {compared!r} shifts datetime days, so it needs a DateRange "
                f"{field}; this query's {field} is {base!r} (use a relative name instead)",
                field="compared",
                rule="same-days-needs-datetime-base",
            )
        return compared
    raise InvalidQueryError(
        f"compared range {compared!r} is not one Close knows; use one of "
        f"{', '.join(RELATIVE_RANGES + SAME_DAYS_RANGES)} or a DateRange",
        field="compared",
        rule="compared-range",
    )


def compared_fields(query: FunnelQuery, compared: Compared) -> dict[str, Any]:
    """The body fields that ask Close for *compared* (after :func:`validate_compared`)."""
    checked = validate_compared(query, compared)
    if isinstance(checked, DateRange):
        return {"compared_custom_range": checked.to_body()}
    if checked in SAME_DAYS_RANGES:
        return {"compared_datetime_range": checked}
    return {"compared_relative_range": checked}


# -- ranges as people type them (the CLI and the web API) ------------------------------


def parse_instant(text: str, *, field: str, tz: tzinfo | None) -> datetime:
    """
    An ISO 8601 date or datetime; a value without a zone is read in *tz*.

    With ``tz=None`` a zone is required: a web client's "midnight" means nothing on the
    server's clock.

    Raises:
        InvalidQueryError: naming *field* and the value.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidQueryError(
            f"{field}: {text!r} is not an ISO 8601 date or datetime (e.g. 2026-11-01 or "
            "2026-11-01T00:00:00+02:00)",
            field=field,
            rule="iso-8601",
        ) from None
    if value.tzinfo is None:
        if tz is None:
            raise InvalidQueryError(
                f"{field}: {text!r} has no time zone; add one (Z or +02:00)",
                field=field,
                rule="timezone-aware",
            )
        value = value.replace(tzinfo=tz)
    return value


def parse_range(text: str, *, field: str, tz: tzinfo | None, same_days: bool = False) -> RangeSpec:
    """
    A range as typed: a relative name (``this-month``) or ``START..END`` in ISO 8601.

    With *same_days*, the compared-only same-days names are accepted too.

    Raises:
        InvalidQueryError: naming *field*, the value and what would be accepted.
    """
    value = text.strip()
    if value in RELATIVE_RANGES or (same_days and value in SAME_DAYS_RANGES):
        return value
    if ".." in value:
        start, _, end = value.partition("..")
        try:
            return DateRange(
                parse_instant(start, field=field, tz=tz), parse_instant(end, field=field, tz=tz)
            )
        except InvalidQueryError as exc:
            if exc.field == field:
                raise
            raise InvalidQueryError(f"{field}: {exc}", field=field, rule=exc.rule) from None
    names = RELATIVE_RANGES + (SAME_DAYS_RANGES if same_days else ())
    raise InvalidQueryError(
        f"{field}: {text!r} is not a range; use one of {', '.join(names)}, "
        "or START..END in ISO 8601",
        field=field,
        rule="range",
    )


def parse_compared(text: str, *, field: str, tz: tzinfo | None) -> Compared:
    """A compared range: a relative name, a same-days name, or ``START..END``."""
    return parse_range(text, field=field, tz=tz, same_days=True)
