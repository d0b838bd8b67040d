"""
Request checks: a totals body (already parsed JSON) to a :class:`ReportRequest` or to
Close's 400 error body ``{"errors": [...], "field-errors": {field: message}}``.

Every rule on Close's docs page is enforced, plus strictness Close may not have (unknown
fields are refused): an emulator that quietly accepted a typo would hide client bugs.
Optional fields may be ``null``, which means absent.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

from closefunnel.emulator._funnel import (
    RELATIVE_RANGES,
    REPORT_TYPES,
    SAME_DAYS_RANGES,
    ComparedKind,
    DatetimeRange,
    RangeValue,
    ReportRequest,
)

__all__ = ["BODY_FIELDS", "ValidationFailure", "parse_report_body", "parse_tz_offset"]

#: The fields a totals body may hold (Close's docs page).
BODY_FIELDS: Final = (
    "pipeline",
    "type",
    "report_relative_range",
    "report_datetime_range",
    "cohort_relative_range",
    "cohort_datetime_range",
    "compared_relative_range",
    "compared_datetime_range",
    "compared_custom_range",
    "query",
    "users",
)
_COMPARED: Final = ("compared_relative_range", "compared_datetime_range", "compared_custom_range")
_REQUIRED: Final = "This field is required."


class ValidationFailure(Exception):
    """The body is invalid; :attr:`body` is Close's 400 JSON body for it."""

    def __init__(self, errors: list[str], field_errors: dict[str, str]) -> None:
        super().__init__("; ".join([*errors, *(f"{k}: {v}" for k, v in field_errors.items())]))
        self.errors = errors
        self.field_errors = field_errors

    @property
    def body(self) -> dict[str, Any]:
        """``{"errors": [...], "field-errors": {...}}`` (note Close's hyphen)."""
        return {"errors": self.errors, "field-errors": self.field_errors}


def _datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone (add Z or an offset)")
    if not 1900 <= parsed.year <= 9000:
        # Keeps calendar shifts and epoch arithmetic far from datetime's limits.
        raise ValueError(f"{value!r} is outside the supported years 1900-9000")
    return parsed


def _datetime_range(value: object) -> DatetimeRange:
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise ValueError('Must be an object with exactly "start" and "end".')
    try:
        start = _datetime(value["start"])
    except ValueError as exc:
        raise ValueError(f"start {exc}.") from None
    try:
        end = _datetime(value["end"])
    except ValueError as exc:
        raise ValueError(f"end {exc}.") from None
    if not start < end:
        raise ValueError("start must be before end (ranges are [start, end)).")
    return DatetimeRange(start, end)


def _choice(value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Not a valid choice: {value!r}. Use one of: {', '.join(choices)}.")
    return value


def parse_report_body(data: object) -> ReportRequest:
    """
    Check a parsed totals body against Close's parameter rules.

    Raises:
        ValidationFailure: with every problem found, by field where there is one.
    """
    if not isinstance(data, dict):
        raise ValidationFailure(["The request body must be a JSON object."], {})
    errors: dict[str, str] = {}
    for key in data:
        if key not in BODY_FIELDS:
            errors[str(key)[:100]] = "Unknown field."
    present = {k: v for k, v in data.items() if k in BODY_FIELDS and v is not None}

    pipeline = present.get("pipeline")
    if pipeline is None:
        errors["pipeline"] = _REQUIRED
    elif not isinstance(pipeline, str) or not pipeline:
        errors["pipeline"] = "Must be a pipeline id (a non-empty string)."

    report_type = present.get("type")
    if report_type is None:
        errors["type"] = _REQUIRED
    else:
        try:
            _choice(report_type, REPORT_TYPES)
        except ValueError as exc:
            errors["type"] = str(exc)

    parsed: dict[str, RangeValue] = {}
    for prefix in ("report", "cohort"):
        for suffix in ("relative_range", "datetime_range"):
            field = f"{prefix}_{suffix}"
            if field not in present:
                continue
            try:
                if suffix == "relative_range":
                    parsed[field] = _choice(present[field], RELATIVE_RANGES)
                else:
                    parsed[field] = _datetime_range(present[field])
            except ValueError as exc:
                errors[field] = str(exc)
        if f"{prefix}_relative_range" in present and f"{prefix}_datetime_range" in present:
            errors[f"{prefix}_datetime_range"] = (
                f"Only one of {prefix}_relative_range and {prefix}_datetime_range may be given."
            )

    compared: tuple[ComparedKind, RangeValue] | None = None
    compared_given = [f for f in _COMPARED if f in present]
    if len(compared_given) > 1:
        for field in compared_given:
            errors[field] = (
                f"Only one compared range may be given, got {', '.join(compared_given)}."
            )
    elif compared_given:
        field = compared_given[0]
        try:
            if field == "compared_relative_range":
                compared = ("relative", _choice(present[field], RELATIVE_RANGES))
            elif field == "compared_datetime_range":
                compared = ("datetime", _choice(present[field], SAME_DAYS_RANGES))
            else:
                compared = ("custom", _datetime_range(present[field]))
        except ValueError as exc:
            errors[field] = str(exc)

    saved_search_id: str | None = None
    if "query" in present:
        query = present["query"]
        if not isinstance(query, dict):
            errors["query"] = 'Must be an object: {"type": "saved_search", "saved_search_id": ...}.'
        elif query.get("type") != "saved_search":
            errors["query"] = 'Only {"type": "saved_search"} queries are supported.'
        elif set(query) != {"type", "saved_search_id"}:
            errors["query"] = 'A saved_search query takes exactly "type" and "saved_search_id".'
        elif not isinstance(query["saved_search_id"], str) or not query["saved_search_id"]:
            errors["query"] = "saved_search_id must be a saved search id (a non-empty string)."
        else:
            saved_search_id = query["saved_search_id"]

    users: tuple[str, ...] = ()
    if "users" in present:
        value = present["users"]
        if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
            errors["users"] = "Must be a list of user or group ids (non-empty strings)."
        else:
            users = tuple(value)

    # Cross-field rules, checked only when the fields themselves are fine.
    if "type" not in errors and not any(f in errors for f in parsed):
        paired = "cohort" if report_type == "created-cohort" else "report"
        relative = parsed.get(f"{paired}_relative_range")
        absolute = parsed.get(f"{paired}_datetime_range")
        if relative is None and absolute is None and f"{paired}_datetime_range" not in errors:
            errors[f"{paired}_relative_range"] = (
                f"Either {paired}_relative_range or {paired}_datetime_range is required "
                f"for {report_type} reports."
            )
        elif compared is not None:
            kind = compared[0]
            field = f"compared_{'custom' if kind == 'custom' else kind}_range"
            if kind == "relative" and relative is None:
                errors[field] = f"Only allowed in combination with {paired}_relative_range."
            elif kind == "datetime" and absolute is None:
                errors[field] = f"Only allowed in combination with {paired}_datetime_range."

    if errors:
        raise ValidationFailure([], errors)
    assert isinstance(pipeline, str)
    assert isinstance(report_type, str)
    return ReportRequest(
        pipeline=pipeline,
        type=report_type,
        report=parsed.get("report_relative_range") or parsed.get("report_datetime_range"),
        cohort=parsed.get("cohort_relative_range") or parsed.get("cohort_datetime_range"),
        compared=compared,
        saved_search_id=saved_search_id,
        users=users,
    )


def parse_tz_offset(value: str | None) -> float:
    """
    ``X-TZ-Offset`` as hours east of UTC (decimal, e.g. ``-2.5``); absent means UTC.

    Raises:
        ValidationFailure: not a finite number of hours within +-24.
    """
    if value is None or not value.strip():
        return 0.0
    try:
        hours = float(value)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or abs(hours) >= 24:
        raise ValidationFailure(
            [f"Invalid X-TZ-Offset header {value[:50]!r}: expected decimal hours, e.g. -2.5."],
            {},
        )
    return hours
