"""Resolved periods: the client's calendar arithmetic against the emulator's, and on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import closefunnel as cf
from closefunnel._periods import (
    ALL_TIME_START,
    PeriodResolver,
    resolve_range,
    shift_same_days,
    zone_of,
)
from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.emulator import _funnel as oracle

CALENDAR_NAMES = [name for name in cf.RELATIVE_RANGES if name != "all-time"]
instants = st.datetimes(
    min_value=datetime(1999, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)
)
offsets = st.sampled_from([-12.0, -9.5, -5.0, -0.5, 0.0, 1.0, 5.75, 9.0, 13.0, 14.0])


@settings(max_examples=300, deadline=None)
@given(now=instants, tz=offsets, name=st.sampled_from(CALENDAR_NAMES))
def test_relative_ranges_resolve_as_the_emulator_answers_them(
    now: datetime, tz: float, name: str
) -> None:
    """Each calendar name gives the emulator's interval, in the request's zone."""
    resolved = resolve_range(name, now=now, zone=zone_of(tz))
    assert (resolved.start.timestamp(), resolved.end.timestamp()) == oracle.resolve_relative(
        name, now, tz
    )
    assert resolved.start.utcoffset() == timedelta(hours=tz)  # printed on the reader's calendar


@settings(max_examples=300, deadline=None)
@given(
    start=instants,
    length=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400)),
    tz=offsets,
    name=st.sampled_from(cf.SAME_DAYS_RANGES),
)
def test_same_days_shift_as_the_emulator_does(
    start: datetime, length: timedelta, tz: float, name: str
) -> None:
    """Both ends move back on the request's calendar, the day clamped to the month's end."""
    base = cf.DateRange(start, start + length)
    shifted = shift_same_days(base, name, zone=zone_of(tz))
    expected = oracle.shift_same_days(oracle.DatetimeRange(base.start, base.end), name, tz)
    assert shifted.start == expected.start
    if expected.start < expected.end:
        assert shifted.end == expected.end
    else:  # clamped onto one day: Close counts nothing; the range is as short as it can be
        assert shifted.end - shifted.start == timedelta(microseconds=1)


def test_the_first_of_the_month_is_one_day_against_thirty() -> None:
    """The case the periods exist for: this-month on Dec 1 is one day, last-month thirty."""
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    this = resolve_range("this-month", now=now, zone=UTC)
    last = resolve_range("last-month", now=now, zone=UTC)
    assert (this.start, this.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert last.end - last.start == timedelta(days=30)
    week = resolve_range("this-week", now=now, zone=UTC)
    assert week.start.weekday() == 0
    assert week.start == datetime(2026, 11, 30, tzinfo=UTC)


def test_all_time_runs_from_the_epoch_to_now() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert resolve_range("all-time", now=now, zone=UTC) == cf.DateRange(ALL_TIME_START, now)


def test_the_resolver_forgets_a_day_at_midnight_either_way() -> None:
    """The per-day memo is valid only inside its own local day, the clock moving either way."""
    clock = [datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)]
    resolver = PeriodResolver(clock=lambda: clock[0], tz_offset=None)
    query = cf.FunnelQuery(pipeline="pipe_x", report_range="this-month")
    assert resolver.period(query, None).start.month == 11
    clock[0] += timedelta(seconds=1)
    assert resolver.period(query, None).start.month == 12
    clock[0] -= timedelta(days=40)
    assert resolver.period(query, None).start.month == 10
    # In a zone east of UTC the day turns earlier.
    east = PeriodResolver(clock=lambda: datetime(2026, 11, 30, 22, 0, tzinfo=UTC), tz_offset=2)
    assert east.period(query, None).start == datetime(
        2026, 12, 1, tzinfo=timezone(timedelta(hours=2))
    )


@pytest.mark.parametrize("tz", [None, -7.0, 5.5])
def test_the_system_clock_resolver_agrees_with_resolve_range(tz: float | None) -> None:
    """Without a clock of its own, the resolver reads time.time() (no datetime per
    report) and still answers what resolve_range says of now, memo hit or not."""
    resolver = PeriodResolver(tz_offset=tz)
    for name in ("today", "this-week", "last-month", "this-quarter", "last-year"):
        query = cf.FunnelQuery(pipeline="pipe_x", report_range=name)
        before = resolve_range(name, now=datetime.now(UTC), zone=zone_of(tz))
        first, again = resolver.period(query, None), resolver.period(query, None)
        after = resolve_range(name, now=datetime.now(UTC), zone=zone_of(tz))
        assert first == again
        assert first in (before, after)  # the day may turn between the two readings


def test_a_clock_that_is_not_aware_is_refused() -> None:
    with pytest.raises(cf.InvalidQueryError, match="clock"):
        cf.Client(api_key="api_x.y", clock="now")  # type: ignore[arg-type]
    resolver = PeriodResolver(clock=lambda: datetime(2026, 12, 1), tz_offset=None)
    with pytest.raises(cf.InvalidQueryError, match="timezone-aware"):
        resolver.period(cf.FunnelQuery(pipeline="pipe_x", report_range="today"), None)


@pytest.mark.parametrize("tz", [None, -5.0, 9.0])
async def test_a_comparison_says_which_dates_each_report_covered(tz: float | None) -> None:
    """
    base_range and compared_range are what Close counted: asking for them as DateRanges
    gives the very same reports, on the first of a month, in the client's zone.
    """
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    async with (
        Emulator(EmulatorConfig(now=now, opportunities=3_000)) as emu,
        cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, tz_offset=tz, clock=emu.now
        ) as client,
    ):
        pipeline = (await client.pipelines())[0].id
        query = cf.FunnelQuery(pipeline=pipeline, report_range="this-quarter")
        comparison = await client.compare_totals(query, "last-quarter", "last-year")
        base_range = comparison.base_range
        assert base_range is not None
        assert base_range.start.utcoffset() == timedelta(hours=tz or 0)
        explicit = cf.FunnelQuery(pipeline=pipeline, report_range=base_range)
        assert (await client.funnel_totals(explicit)).data == comparison.base.data
        for period in comparison.comparisons:
            assert period.compared_range is not None
            assert period.compared_range.end <= base_range.start
            again = cf.FunnelQuery(pipeline=pipeline, report_range=period.compared_range)
            assert (await client.funnel_totals(again)).data == period.totals.data
        # same-days: the shift of a datetime base
        dated = cf.FunnelQuery(pipeline=pipeline, report_range=base_range)
        shifted = await client.compare_totals(dated, "same-days-last-year")
        (last_year,) = shifted.comparisons
        assert last_year.compared_range is not None
        assert last_year.compared_range.start.year == base_range.start.year - 1
        plain = cf.FunnelQuery(pipeline=pipeline, report_range=last_year.compared_range)
        assert (await client.funnel_totals(plain)).data == last_year.totals.data


async def test_plain_reports_carry_their_range_and_files_keep_it() -> None:
    now = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
    emulator = Emulator(EmulatorConfig(now=now, opportunities=500))
    async with (
        emulator as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now) as client,
    ):
        pipeline = (await client.pipelines())[0].id
        query = cf.FunnelQuery(pipeline=pipeline, report_range="yesterday")
        totals = await client.funnel_totals(query)
        per_user = await client.funnel_totals(query, format="csv")
    day = cf.DateRange(datetime(2026, 11, 17, tzinfo=UTC), datetime(2026, 11, 18, tzinfo=UTC))
    assert totals.range == per_user.range == day
    assert cf.FunnelTotals.from_json(totals.to_json()) == totals
    # A body Close sent has no range, and encodes back to exactly that body.
    close_body = totals.to_json().split(',"range":')[0] + "}"
    assert '"range"' not in close_body
    decoded = cf.FunnelTotals.from_json(close_body)
    assert decoded.range is None
    assert decoded.to_json() == close_body
