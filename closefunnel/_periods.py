"""
Which absolute dates a report covered: relative and same-days ranges resolved as Close does.

Close resolves ``this-month`` or ``same-days-last-year`` on its own clock and never says
what it chose, so a result that reads ``compared="last-month"`` hides that on the 1st of a
month it compared one day with thirty. This module gives every report its half-open
``[start, end)`` range, computed the way Close computes it: calendar periods in the
request's zone (``X-TZ-Offset``, UTC without one), weeks from Monday, same-days ranges
shifted back one week, month, quarter or year with the day clamped to the month's end
(Mar 31 less a month is Feb 28/29). It is pure: the clock and the zone are passed in.

``all-time`` has no calendar bounds; it resolves to ``[1970-01-01T00:00Z, now)``: Close
holds nothing older, and nothing later has happened yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

from closefunnel._errors import InvalidQueryError
from closefunnel._query import Compared, DateRange, FunnelQuery, RangeSpec, paired_range
from closefunnel._vocabulary import SAME_DAYS_RANGES

__all__ = [
    "ALL_TIME_START",
    "PeriodResolver",
    "report_period",
    "resolve_range",
    "shift_same_days",
    "zone_of",
]

#: Where ``all-time`` starts.
ALL_TIME_START: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: How far back each same-days name shifts: (months, days).
_SAME_DAYS_SHIFT: Final = dict(
    zip(SAME_DAYS_RANGES, ((0, 7), (1, 0), (3, 0), (12, 0)), strict=True)
)


def zone_of(tz_offset: float | None) -> tzinfo:
    """The fixed zone of an ``X-TZ-Offset`` of *tz_offset* hours (UTC for None)."""
    if not tz_offset:
        return UTC
    # To the second, as a header of decimal hours can say no finer.
    return timezone(timedelta(seconds=round(tz_offset * 3600)))


def _month_start(year: int, month: int, zone: tzinfo) -> datetime:
    # *month* may run outside 1..12 (month 0 is last December).
    year, month0 = divmod(year * 12 + month - 1, 12)
    return datetime(year, month0 + 1, 1, tzinfo=zone)


def resolve_range(spec: RangeSpec, *, now: datetime, zone: tzinfo) -> DateRange:
    """
    The absolute range *spec* means at *now* in *zone* (a :class:`DateRange` is itself).

    The bounds are written in *zone*, so they print as the reader's calendar does.
    """
    if isinstance(spec, DateRange):
        return spec
    if spec == "all-time":
        return DateRange(ALL_TIME_START, max(now, ALL_TIME_START + timedelta(seconds=1)))
    local = now.astimezone(zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    back = spec.startswith(("last-", "yesterday"))
    if spec in ("today", "yesterday"):
        start = day - timedelta(days=1) if back else day
        return DateRange(start, start + timedelta(days=1))
    if spec in ("this-week", "last-week"):
        start = day - timedelta(days=day.weekday() + (7 if back else 0))
        return DateRange(start, start + timedelta(days=7))
    if spec in ("this-month", "last-month"):
        month = day.month - back
        return DateRange(
            _month_start(day.year, month, zone), _month_start(day.year, month + 1, zone)
        )
    if spec in ("this-quarter", "last-quarter"):
        first = 3 * ((day.month - 1) // 3) + 1 - (3 if back else 0)
        return DateRange(
            _month_start(day.year, first, zone), _month_start(day.year, first + 3, zone)
        )
    if spec in ("this-year", "last-year"):
        year = day.year - back
        return DateRange(datetime(year, 1, 1, tzinfo=zone), datetime(year + 1, 1, 1, tzinfo=zone))
    raise ValueError(f"not a relative range: {spec!r}")  # FunnelQuery validated it


def _shift(value: datetime, *, months: int, days: int) -> datetime:
    if months:
        year, month0 = divmod(value.year * 12 + value.month - 1 - months, 12)
        last = (_month_start(year, month0 + 2, UTC) - timedelta(days=1)).day
        value = value.replace(year=year, month=month0 + 1, day=min(value.day, last))
    return value - timedelta(days=days)


def shift_same_days(base: DateRange, name: str, *, zone: tzinfo) -> DateRange:
    """
    *base*'s days one week, month, quarter or year earlier (*name* a same-days name).

    Both ends move back on the calendar of *zone* (the request's), keeping their wall
    clock time; the day is clamped to the shorter month's end.
    """
    months, days = _SAME_DAYS_SHIFT[name]
    start = _shift(base.start.astimezone(zone), months=months, days=days)
    end = _shift(base.end.astimezone(zone), months=months, days=days)
    if start >= end:
        # Both ends clamped onto one day (Mar 29 12:00..Mar 31 less a month is Feb 28
        # 12:00..Feb 28 00:00): Close counts nothing there. A DateRange cannot be empty,
        # so the nearest to it: one microsecond.
        end = start + timedelta(microseconds=1)
    return DateRange(start, end)


def report_period(
    query: FunnelQuery, compared: Compared | None, *, now: datetime, zone: tzinfo
) -> DateRange:
    """
    The range the report of *query* (with *compared*, when given) covers: the paired
    range (the report range of an active-stage-cohort report, the cohort range of a
    created-cohort one), or the compared range that replaces it.
    """
    _, base = paired_range(query)
    if compared is None:
        return resolve_range(base, now=now, zone=zone)
    if isinstance(compared, str) and compared in _SAME_DAYS_SHIFT:
        assert isinstance(base, DateRange)  # validate_compared checked the pairing
        return shift_same_days(base, compared, zone=zone)
    return resolve_range(compared, now=now, zone=zone)


class PeriodResolver:
    """
    :func:`report_period` on a clock, remembering each relative answer until the next
    local midnight (every relative name changes only at a day boundary), so a bulk job
    of many reports pays the calendar arithmetic once a day, not once a request.
    """

    __slots__ = ("_cache", "_clock", "_zone")

    def __init__(
        self, *, clock: Callable[[], datetime] | None = None, tz_offset: float | None
    ) -> None:
        self._clock = clock  # None: the system clock, read as time.time() until a miss
        self._zone = zone_of(tz_offset)
        # At most one entry per relative name: (period, valid from, valid until), the
        # bounds as POSIX timestamps (a float comparison per report, not two of aware
        # datetimes).
        self._cache: dict[str, tuple[DateRange, float, float]] = {}

    def now(self) -> datetime:
        """The clock's time, checked to be timezone-aware."""
        if self._clock is None:
            return datetime.now(UTC)
        now: object = self._clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise InvalidQueryError(
                f"the client's clock must return a timezone-aware datetime, got {now!r}",
                field="clock",
                rule="timezone-aware",
            )
        return now

    def period(self, query: FunnelQuery, compared: Compared | None) -> DateRange:
        """The range the report of *query* (and *compared*) covers, as of now."""
        if compared is None:
            spec = query.cohort_range if query.type == "created-cohort" else query.report_range
        else:
            spec = compared
        if isinstance(spec, DateRange):
            return spec
        assert spec is not None  # guaranteed by FunnelQuery's validation
        if spec in _SAME_DAYS_SHIFT or spec == "all-time":  # no calendar day to remember
            return report_period(query, compared, now=self.now(), zone=self._zone)
        # The system clock as time.time(): a datetime is made only on a miss.
        now = None if self._clock is None else self.now()
        timestamp = time.time() if now is None else now.timestamp()
        hit = self._cache.get(spec)
        if hit is not None and hit[1] <= timestamp < hit[2]:
            return hit[0]
        if now is None:
            now = datetime.fromtimestamp(timestamp, UTC)
        period = resolve_range(spec, now=now, zone=self._zone)
        local = now.astimezone(self._zone)
        midnight = datetime(local.year, local.month, local.day, tzinfo=self._zone)
        self._cache[spec] = (
            period,
            midnight.timestamp(),
            (midnight + timedelta(days=1)).timestamp(),
        )
        return period
