"""FunnelQuery and DateRange validation, and the compared-range pairing rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closefunnel import (
    RELATIVE_RANGES,
    SAME_DAYS_RANGES,
    CloseFunnelError,
    DateRange,
    FunnelQuery,
    InvalidQueryError,
    validate_compared,
)
from closefunnel._query import compared_fields, paired_range

PIPE = "pipe_1"
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 2, 1, tzinfo=UTC)
RANGE = DateRange(START, END)
DOCUMENTED_KEYS = {
    "pipeline",
    "type",
    "report_relative_range",
    "report_datetime_range",
    "cohort_relative_range",
    "cohort_datetime_range",
    "query",
    "users",
}


def _check(info: pytest.ExceptionInfo[InvalidQueryError], field: str, rule: str) -> None:
    """Assert the error names *field* and *rule* and is in every documented class."""
    error = info.value
    assert (error.field, error.rule) == (field, rule), str(error)
    assert isinstance(error, ValueError)
    assert isinstance(error, CloseFunnelError)
    assert str(error)


# -- DateRange -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "field", "rule"),
    [
        (datetime(2024, 1, 1), END, "start", "timezone-aware"),
        (START, datetime(2024, 2, 1), "end", "timezone-aware"),
        (START, START, "end", "start-before-end"),
        (END, START, "end", "start-before-end"),
        ("2024-01-01", END, "start", "type"),
        (START, None, "end", "type"),
    ],
    ids=["naive-start", "naive-end", "empty", "reversed", "str-start", "none-end"],
)
def test_date_range_rejects(start: Any, end: Any, field: str, rule: str) -> None:
    """DateRange refuses naive datetimes, non-datetimes and start >= end."""
    with pytest.raises(InvalidQueryError) as info:
        DateRange(start, end)
    _check(info, field, rule)


def test_date_range_compares_instants_across_zones() -> None:
    """start < end is judged on the instant, not the wall clock, across time zones."""
    plus_two = timezone(timedelta(hours=2))
    with pytest.raises(InvalidQueryError):
        DateRange(datetime(2024, 1, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=plus_two))
    assert DateRange(datetime(2024, 1, 1, 3, tzinfo=plus_two), datetime(2024, 1, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2019, 1, 1, tzinfo=UTC), "2019-01-01T00:00:00Z"),
        (datetime(2019, 1, 1, tzinfo=timezone(timedelta(0))), "2019-01-01T00:00:00Z"),
        (datetime(2019, 1, 1, 0, 0, 0, 500, tzinfo=UTC), "2019-01-01T00:00:00.000500Z"),
        (datetime(2019, 1, 1, tzinfo=timezone(timedelta(hours=-5))), "2019-01-01T00:00:00-05:00"),
    ],
    ids=["utc", "zero-offset", "micro", "offset"],
)
def test_date_range_body_iso(value: datetime, expected: str) -> None:
    """DateRange.to_body writes ISO 8601 with UTC as Z and other offsets kept."""
    body = DateRange(value, value + timedelta(days=1)).to_body()
    assert body["start"] == expected
    assert set(body) == {"start", "end"}


# -- FunnelQuery validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"type": "won-cohort"}, "type", "report-type"),
        ({"type": None}, "type", "report-type"),
        ({"report_range": "last-fortnight"}, "report_range", "relative-range"),
        ({"report_range": "This-Month"}, "report_range", "relative-range"),
        ({"report_range": "same-days-last-year"}, "report_range", "relative-range"),
        ({"report_range": 7}, "report_range", "type"),
        ({"report_range": START}, "report_range", "type"),
        ({"report_range": None}, "report_range", "required"),
        ({"pipeline": ""}, "pipeline", "non-empty"),
        ({"pipeline": "   "}, "pipeline", "non-empty"),
        ({"pipeline": None}, "pipeline", "non-empty"),
        ({"cohort_range": "last-month"}, "cohort_range", "ignored"),
        ({"cohort_range": RANGE}, "cohort_range", "ignored"),
        ({"users": "user_1"}, "users", "sequence"),
        ({"users": b"user_1"}, "users", "sequence"),
        ({"users": 5}, "users", "sequence"),
        ({"users": None}, "users", "sequence"),
        ({"users": ["user_1", ""]}, "users", "non-empty"),
        ({"users": ["  "]}, "users", "non-empty"),
        ({"users": ["user_1", 2]}, "users", "non-empty"),
        ({"users": [None]}, "users", "non-empty"),
        ({"saved_search_id": ""}, "saved_search_id", "non-empty"),
        ({"saved_search_id": " "}, "saved_search_id", "non-empty"),
        ({"saved_search_id": 3}, "saved_search_id", "non-empty"),
    ],
)
def test_active_stage_query_rejects(kwargs: dict[str, Any], field: str, rule: str) -> None:
    """Each broken rule of an active-stage-cohort query raises InvalidQueryError naming it."""
    arguments: dict[str, Any] = {"pipeline": PIPE, "report_range": "this-month", **kwargs}
    with pytest.raises(InvalidQueryError) as info:
        FunnelQuery(**arguments)
    _check(info, field, rule)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({}, "cohort_range", "required"),
        ({"cohort_range": "next-month"}, "cohort_range", "relative-range"),
        ({"cohort_range": "same-days-last-week"}, "cohort_range", "relative-range"),
        ({"cohort_range": ["last-month"]}, "cohort_range", "type"),
        (
            {"cohort_range": "last-month", "report_range": "someday"},
            "report_range",
            "relative-range",
        ),
    ],
)
def test_created_cohort_query_rejects(kwargs: dict[str, Any], field: str, rule: str) -> None:
    """A created-cohort query needs a valid cohort range and checks an optional report range."""
    with pytest.raises(InvalidQueryError) as info:
        FunnelQuery(pipeline=PIPE, type="created-cohort", **kwargs)
    _check(info, field, rule)


@pytest.mark.parametrize("name", RELATIVE_RANGES)
def test_every_relative_range_is_accepted(name: str) -> None:
    """All eleven relative names are accepted as report and cohort ranges."""
    report = FunnelQuery(pipeline=PIPE, report_range=name)
    cohort = FunnelQuery(pipeline=PIPE, type="created-cohort", cohort_range=name)
    assert report.to_body()["report_relative_range"] == name
    assert cohort.to_body()["cohort_relative_range"] == name


def test_relative_ranges_are_the_documented_eleven() -> None:
    """RELATIVE_RANGES and SAME_DAYS_RANGES are exactly the names on the reference page."""
    assert set(RELATIVE_RANGES) == {
        "today",
        "this-week",
        "this-month",
        "this-quarter",
        "this-year",
        "yesterday",
        "last-week",
        "last-month",
        "last-quarter",
        "last-year",
        "all-time",
    }
    assert set(SAME_DAYS_RANGES) == {
        "same-days-last-week",
        "same-days-last-month",
        "same-days-last-quarter",
        "same-days-last-year",
    }


@pytest.mark.parametrize("users", [["a", "b"], ("a", "b"), iter(["a", "b"])], ids=repr)
def test_users_become_a_tuple(users: Any) -> None:
    """users given as a list, tuple or iterator is stored as a tuple and sent as a list."""
    query = FunnelQuery(pipeline=PIPE, report_range="today", users=users)
    assert query.users == ("a", "b")
    assert query.to_body()["users"] == ["a", "b"]


def test_minimal_query_body() -> None:
    """A minimal query sends pipeline, type and the range, and leaves unset fields out."""
    body = FunnelQuery(pipeline=PIPE, report_range="this-month").to_body()
    assert body == {
        "pipeline": PIPE,
        "type": "active-stage-cohort",
        "report_relative_range": "this-month",
    }


def test_created_cohort_body_with_both_ranges() -> None:
    """A created-cohort query with a cohort DateRange and a relative report range sends both."""
    body = FunnelQuery(
        pipeline=PIPE, type="created-cohort", cohort_range=RANGE, report_range="last-year"
    ).to_body()
    assert body == {
        "pipeline": PIPE,
        "type": "created-cohort",
        "cohort_datetime_range": {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"},
        "report_relative_range": "last-year",
    }


# -- pairing rules ---------------------------------------------------------------------------

ACTIVE_RELATIVE = FunnelQuery(pipeline=PIPE, report_range="this-month")
ACTIVE_DATETIME = FunnelQuery(pipeline=PIPE, report_range=RANGE)
CREATED_RELATIVE = FunnelQuery(
    pipeline=PIPE, type="created-cohort", cohort_range="this-month", report_range=RANGE
)
CREATED_DATETIME = FunnelQuery(
    pipeline=PIPE, type="created-cohort", cohort_range=RANGE, report_range="this-month"
)
OTHER_RANGE = DateRange(START - timedelta(days=31), START)


def test_paired_range_follows_report_type() -> None:
    """Compared ranges pair with the report range (active-stage) or cohort range (created)."""
    assert paired_range(ACTIVE_RELATIVE) == ("report_range", "this-month")
    assert paired_range(CREATED_RELATIVE) == ("cohort_range", "this-month")
    assert paired_range(CREATED_DATETIME) == ("cohort_range", RANGE)


@pytest.mark.parametrize(
    ("query", "compared", "expected"),
    [
        (ACTIVE_RELATIVE, "last-month", {"compared_relative_range": "last-month"}),
        (CREATED_RELATIVE, "last-year", {"compared_relative_range": "last-year"}),
        (
            ACTIVE_DATETIME,
            "same-days-last-year",
            {"compared_datetime_range": "same-days-last-year"},
        ),
        (
            CREATED_DATETIME,
            "same-days-last-week",
            {"compared_datetime_range": "same-days-last-week"},
        ),
        (ACTIVE_RELATIVE, OTHER_RANGE, {"compared_custom_range": OTHER_RANGE.to_body()}),
        (ACTIVE_DATETIME, OTHER_RANGE, {"compared_custom_range": OTHER_RANGE.to_body()}),
        (CREATED_RELATIVE, OTHER_RANGE, {"compared_custom_range": OTHER_RANGE.to_body()}),
        (CREATED_DATETIME, OTHER_RANGE, {"compared_custom_range": OTHER_RANGE.to_body()}),
    ],
    ids=[
        "relative-active",
        "relative-created",
        "same-days-active",
        "same-days-created",
        "custom-active-relative",
        "custom-active-datetime",
        "custom-created-relative",
        "custom-created-datetime",
    ],
)
def test_allowed_pairings(query: FunnelQuery, compared: Any, expected: dict[str, Any]) -> None:
    """Allowed pairings pass validate_compared and produce the matching compared_* body field."""
    assert validate_compared(query, compared) == compared
    assert compared_fields(query, compared) == expected


@pytest.mark.parametrize(
    ("query", "compared", "rule"),
    [
        (ACTIVE_DATETIME, "last-month", "relative-needs-relative-base"),
        (CREATED_DATETIME, "last-month", "relative-needs-relative-base"),
        (ACTIVE_RELATIVE, "same-days-last-year", "same-days-needs-datetime-base"),
        # created-cohort pairs with the cohort range, not the (datetime) report range
        (CREATED_RELATIVE, "same-days-last-month", "same-days-needs-datetime-base"),
        (ACTIVE_RELATIVE, "next-month", "compared-range"),
        (ACTIVE_RELATIVE, "", "compared-range"),
        (ACTIVE_RELATIVE, None, "type"),
        (ACTIVE_RELATIVE, START, "type"),
        (ACTIVE_RELATIVE, ["last-month"], "type"),
        (ACTIVE_RELATIVE, {"start": "x", "end": "y"}, "type"),
    ],
)
def test_refused_pairings(query: FunnelQuery, compared: Any, rule: str) -> None:
    """Broken pairings and unknown or mistyped compared ranges raise InvalidQueryError."""
    with pytest.raises(InvalidQueryError) as info:
        validate_compared(query, compared)
    _check(info, "compared", rule)
    with pytest.raises(InvalidQueryError):
        compared_fields(query, compared)


@pytest.mark.parametrize("name", RELATIVE_RANGES)
def test_every_relative_compared_name(name: str) -> None:
    """Every relative name is a valid compared range against a relative base."""
    assert compared_fields(ACTIVE_RELATIVE, name) == {"compared_relative_range": name}


@pytest.mark.parametrize("name", SAME_DAYS_RANGES)
def test_every_same_days_compared_name(name: str) -> None:
    """Every same-days name is a valid compared range against a datetime base."""
    assert compared_fields(ACTIVE_DATETIME, name) == {"compared_datetime_range": name}


# -- property: construction either works or raises InvalidQueryError --------------------------

_aware = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]))
_naive = st.datetimes()
_junk = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.sampled_from(RELATIVE_RANGES + SAME_DAYS_RANGES + ("active-stage-cohort", "created-cohort")),
    st.integers(),
    st.booleans(),
    _aware,
    _naive,
    st.just(RANGE),
    st.lists(st.one_of(st.none(), st.text(max_size=10), st.integers()), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@st.composite
def _query_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for FunnelQuery (pipeline always present), mixing valid values and junk."""
    kwargs: dict[str, Any] = {"pipeline": draw(st.one_of(st.just(PIPE), _junk))}
    for name in ("type", "report_range", "cohort_range", "saved_search_id", "users"):
        if draw(st.booleans()):
            kwargs[name] = draw(_junk)
    return kwargs


def _build_query(kwargs: dict[str, Any]) -> FunnelQuery | InvalidQueryError:
    """A FunnelQuery, or the InvalidQueryError that building one raised."""
    try:
        return FunnelQuery(**kwargs)
    except InvalidQueryError as error:
        return error


def _build_date_range(start: datetime, end: datetime) -> DateRange | InvalidQueryError:
    """A DateRange, or the InvalidQueryError that building one raised."""
    try:
        return DateRange(start, end)
    except InvalidQueryError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(kwargs=_query_kwargs())
def test_any_query_arguments_build_or_raise_invalid_query(kwargs: dict[str, Any]) -> None:
    """Arbitrary FunnelQuery arguments build a query with a documented JSON body, or raise
    InvalidQueryError (naming field and rule) and nothing else."""
    result = _build_query(kwargs)
    if isinstance(result, InvalidQueryError):
        assert result.field
        assert result.rule
        return
    body = result.to_body()
    assert set(body) <= DOCUMENTED_KEYS
    assert orjson.loads(orjson.dumps(body)) == body


@settings(max_examples=200, deadline=None)
@given(start=st.one_of(_aware, _naive), end=st.one_of(_aware, _naive))
def test_any_datetimes_build_a_range_or_raise(start: datetime, end: datetime) -> None:
    """DateRange of any two datetimes builds an aware, ordered range or raises InvalidQueryError."""
    result = _build_date_range(start, end)
    if isinstance(result, InvalidQueryError):
        return
    assert result.start < result.end
    assert result.start.utcoffset() is not None
    body = FunnelQuery(pipeline=PIPE, report_range=result).to_body()
    assert orjson.loads(orjson.dumps(body)) == body
