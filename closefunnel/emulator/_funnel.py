"""
Funnel reports as pure functions: range resolution, compared ranges, and the metrics.

Close does not publish how it computes the totals report; the rules here are ours and are
listed in the package docstring. They reproduce the example on Close's docs page exactly.

Speed matters because the emulator backs rate-limit benchmarks: a report must cost far
less than an HTTP round trip. Opportunities are indexed per (pipeline, saved search, user)
in arrays sorted by creation and by close time with prefix sums, so an active-stage
report is a few bisections per user, and a created-cohort report scans only the cohort.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from itertools import accumulate
from typing import Final, Literal, TypeAlias

import attrs

from closefunnel.emulator._data import Dataset, Opportunity

__all__ = [
    "RELATIVE_RANGES",
    "REPORT_TYPES",
    "SAME_DAYS_RANGES",
    "ComparedKind",
    "DatetimeRange",
    "FunnelIndex",
    "Interval",
    "RangeValue",
    "ReportRequest",
    "ResolvedReport",
    "base_request_of_compared",
    "resolve",
    "resolve_relative",
    "shift_calendar",
]

_DAY: Final = 86_400.0
_INF: Final = math.inf

#: ``[start, end)`` in epoch seconds; ``-inf``/``inf`` for unbounded sides.
Interval: TypeAlias = tuple[float, float]
ComparedKind: TypeAlias = Literal["relative", "datetime", "custom"]


@attrs.frozen
class DatetimeRange:
    """A validated ``{"start", "end"}`` range (aware datetimes, start < end)."""

    start: datetime
    end: datetime


#: A report/cohort range as requested: a relative name or a datetime range.
RangeValue: TypeAlias = str | DatetimeRange


@attrs.frozen(kw_only=True)
class ReportRequest:
    """A validated totals request body (see ``_validate.parse_report_body``)."""

    pipeline: str
    type: str
    report: RangeValue | None = None
    cohort: RangeValue | None = None
    compared: tuple[ComparedKind, RangeValue] | None = None
    saved_search_id: str | None = None
    users: tuple[str, ...] = ()

    @property
    def paired(self) -> Literal["report", "cohort"]:
        """The base range a compared range replaces: the report range of an
        active-stage-cohort report, the cohort range of a created-cohort report."""
        return "cohort" if self.type == "created-cohort" else "report"


@attrs.frozen(kw_only=True)
class ResolvedReport:
    """A request reduced to what the numbers depend on: the cache key of a report."""

    pipeline: str
    type: str
    report: Interval | None
    cohort: Interval | None
    saved_search_id: str | None
    users: tuple[str, ...]


# --- ranges --------------------------------------------------------------------------------


def _local(now: datetime, tz_hours: float) -> datetime:
    return (now.astimezone(UTC) + timedelta(hours=tz_hours)).replace(tzinfo=None)


def _epoch(local_naive: datetime, tz_hours: float) -> float:
    return (local_naive.replace(tzinfo=UTC) - timedelta(hours=tz_hours)).timestamp()


def _month_start(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1)


#: The report types of Close's docs page.
REPORT_TYPES: Final[tuple[str, ...]] = ("active-stage-cohort", "created-cohort")
#: The relative range names of Close's docs page, in its order; :func:`resolve_relative`
#: gives each its calendar period.
RELATIVE_RANGES: Final[tuple[str, ...]] = (
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
)


def resolve_relative(name: str, now: datetime, tz_hours: float = 0.0) -> Interval:
    """
    The calendar period *name* around *now*, in the zone *tz_hours* east of UTC.

    Periods are whole calendar days, Monday-based weeks, months, quarters and years,
    half-open; ``all-time`` is unbounded.
    """
    if name == "all-time":
        return (-_INF, _INF)
    local = _local(now, tz_hours)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    lo: datetime
    hi: datetime
    if name in ("today", "yesterday"):
        lo = day if name == "today" else day - timedelta(days=1)
        hi = lo + timedelta(days=1)
    elif name in ("this-week", "last-week"):
        lo = day - timedelta(days=day.weekday() + (7 if name == "last-week" else 0))
        hi = lo + timedelta(days=7)
    elif name in ("this-month", "last-month"):
        back = 1 if name == "last-month" else 0
        lo = _month_start(day.year, day.month - back)
        hi = _month_start(day.year, day.month - back + 1)
    elif name in ("this-quarter", "last-quarter"):
        first = 3 * ((day.month - 1) // 3) + 1 - (3 if name == "last-quarter" else 0)
        lo, hi = _month_start(day.year, first), _month_start(day.year, first + 3)
    elif name in ("this-year", "last-year"):
        year = day.year - (1 if name == "last-year" else 0)
        lo, hi = datetime(year, 1, 1), datetime(year + 1, 1, 1)
    else:
        raise ValueError(f"unknown relative range {name!r}")
    return (_epoch(lo, tz_hours), _epoch(hi, tz_hours))


def shift_calendar(value: datetime, *, months: int = 0, days: int = 0) -> datetime:
    """
    *value* moved back *months* calendar months (day clamped to the month's end, so
    Mar 31 -> Feb 28/29) and *days* days, keeping its wall-clock time and zone.
    """
    if months:
        total = value.year * 12 + (value.month - 1) - months
        year, month0 = divmod(total, 12)
        nxt = _month_start(year, month0 + 2)
        last = (nxt - timedelta(days=1)).day
        value = value.replace(year=year, month=month0 + 1, day=min(value.day, last))
    return value - timedelta(days=days)


_SAME_DAYS: Final = {
    "same-days-last-week": (0, 7),
    "same-days-last-month": (1, 0),
    "same-days-last-quarter": (3, 0),
    "same-days-last-year": (12, 0),
}
#: The names ``compared_datetime_range`` accepts (Close's docs page), shortest shift first.
SAME_DAYS_RANGES: Final[tuple[str, ...]] = tuple(_SAME_DAYS)


def shift_same_days(base: DatetimeRange, name: str, tz_hours: float = 0.0) -> DatetimeRange:
    """
    The same days one week/month/quarter/year earlier: both ends of *base* shifted back
    in the request's time zone (calendar arithmetic needs a zone to count days in).
    """
    months, days = _SAME_DAYS[name]
    zone = timezone(timedelta(hours=tz_hours))

    def move(value: datetime) -> datetime:
        return shift_calendar(value.astimezone(zone), months=months, days=days)

    return DatetimeRange(move(base.start), move(base.end))


def base_request_of_compared(request: ReportRequest, tz_hours: float = 0.0) -> ReportRequest:
    """
    The plain request whose base report equals *request*'s compared report: the compared
    range replaces the paired base range, everything else unchanged.
    """
    if request.compared is None:
        return request
    kind, value = request.compared
    if kind == "datetime":
        base = request.report if request.paired == "report" else request.cohort
        assert isinstance(base, DatetimeRange)  # by validation
        assert isinstance(value, str)
        value = shift_same_days(base, value, tz_hours)
    if request.paired == "report":
        return attrs.evolve(request, compared=None, report=value)
    return attrs.evolve(request, compared=None, cohort=value)


def _interval(value: RangeValue | None, now: datetime, tz_hours: float) -> Interval | None:
    if value is None:
        return None
    if isinstance(value, DatetimeRange):
        return (value.start.timestamp(), value.end.timestamp())
    return resolve_relative(value, now, tz_hours)


def resolve(
    request: ReportRequest, *, now: datetime, tz_hours: float, users: Iterable[str]
) -> ResolvedReport:
    """
    Reduce *request* (compared range applied) to intervals and a sorted user scope.

    *users* is the expanded user scope (listed users plus members of listed groups).
    """
    plain = base_request_of_compared(request, tz_hours)
    active = plain.type == "active-stage-cohort"
    return ResolvedReport(
        pipeline=plain.pipeline,
        type=plain.type,
        report=_interval(plain.report, now, tz_hours),
        # A cohort range is ignored by active-stage-cohort reports (Close's docs).
        cohort=None if active else _interval(plain.cohort, now, tz_hours),
        saved_search_id=plain.saved_search_id,
        users=tuple(sorted(users)),
    )


# --- the index and the metrics -------------------------------------------------------------


class _Series:
    """One user's opportunities in one pipeline (optionally one saved search)."""

    __slots__ = (
        "c_closed",
        "c_dur",
        "c_outcome",
        "c_value",
        "closed_all",
        "created",
        "lost_ts",
        "lost_value",
        "won_dur",
        "won_ts",
        "won_value",
    )

    def __init__(self, opps: list[Opportunity]) -> None:
        # Creation order, with what a created-cohort scan needs alongside.
        self.created = [o.created.timestamp() for o in opps]
        self.c_closed = [o.closed.timestamp() if o.closed else _INF for o in opps]
        self.c_outcome = [2 if o.status_type == "lost" else 1 if o.closed else 0 for o in opps]
        self.c_value = [o.annualized_value for o in opps]
        self.c_dur = [
            (o.closed.timestamp() - o.created.timestamp()) if o.closed else 0.0 for o in opps
        ]
        self.closed_all = sorted(c for c in self.c_closed if c != _INF)
        won = sorted(
            (c, v, d)
            for c, out, v, d in zip(
                self.c_closed, self.c_outcome, self.c_value, self.c_dur, strict=True
            )
            if out == 1
        )
        lost = sorted(
            (c, v) for c, out, v in zip(self.c_closed, self.c_outcome, self.c_value, strict=True)
            if out == 2
        )  # fmt: skip
        self.won_ts = [w[0] for w in won]
        self.won_value = [0, *accumulate(w[1] for w in won)]
        self.won_dur = [0.0, *accumulate(w[2] for w in won)]
        self.lost_ts = [x[0] for x in lost]
        self.lost_value = [0, *accumulate(x[1] for x in lost)]

    def active(self, lo: float, hi: float) -> tuple[int, int, int, int, int, float]:
        """Active-stage-cohort sums over ``[lo, hi)``: members, won, lost and their values."""
        # Members: created before hi, minus those closed before lo (those were created
        # before lo <= hi, so they are inside the first count).
        count = bisect_left(self.created, hi) - bisect_left(self.closed_all, lo)
        # An opportunity closed inside [lo, hi) is always a member.
        w0, w1 = bisect_left(self.won_ts, lo), bisect_left(self.won_ts, hi)
        l0, l1 = bisect_left(self.lost_ts, lo), bisect_left(self.lost_ts, hi)
        return (
            count,
            w1 - w0,
            l1 - l0,
            self.won_value[w1] - self.won_value[w0],
            self.lost_value[l1] - self.lost_value[l0],
            self.won_dur[w1] - self.won_dur[w0],
        )

    def created_cohort(
        self, cohort: Interval, report: Interval
    ) -> tuple[int, int, int, int, int, float]:
        """Created-cohort sums: members created in *cohort*, outcomes inside *report*."""
        i0, i1 = bisect_left(self.created, cohort[0]), bisect_left(self.created, cohort[1])
        lo, hi = report
        won = lost = vwon = vlost = 0
        dur = 0.0
        closed, outcome, value, durs = self.c_closed, self.c_outcome, self.c_value, self.c_dur
        for i in range(i0, i1):
            out = outcome[i]
            if out and lo <= closed[i] < hi:
                if out == 1:
                    won += 1
                    vwon += value[i]
                    dur += durs[i]
                else:
                    lost += 1
                    vlost += value[i]
        return (i1 - i0, won, lost, vwon, vlost, dur)


def _num(value: float) -> int | float:
    # Close prints whole rates as ints ("count_win_rate": 1) and others as floats (0.5).
    return int(value) if value.is_integer() else value


def metrics(sums: tuple[int, int, int, int, int, float]) -> dict[str, int | float | None]:
    """The ten metrics (alphabetical, as Close orders them) from the six sums."""
    count, won, lost, vwon, vlost, dur = sums
    complete, vcomplete = won + lost, vwon + vlost
    win_rate = won / complete if complete else 0.0
    if won:
        mean_seconds = dur / won
        avg_value = vwon / won
        velocity = count * win_rate * avg_value / max(1.0, mean_seconds / _DAY)
        time_to_win: int | None = round(mean_seconds)
    else:
        avg_value = velocity = 0.0
        time_to_win = None
    return {
        "average_time_to_win": time_to_win,
        "average_value_annualized_per_won_opportunity": round(avg_value),
        "count": count,
        "count_total_complete": complete,
        "count_total_won": won,
        "count_win_rate": _num(win_rate),
        "sales_velocity": round(velocity),
        "value_total_complete": vcomplete,
        "value_total_won": vwon,
        "value_win_rate": _num(vwon / vcomplete if vcomplete else 0.0),
    }


class FunnelIndex:
    """The dataset's opportunities, indexed for fast reports (built once per emulator)."""

    def __init__(self, dataset: Dataset) -> None:
        searches_of: defaultdict[str, list[str]] = defaultdict(list)
        for search in dataset.saved_searches:
            for oid in search.opportunity_ids:
                searches_of[oid].append(search.id)
        groups: defaultdict[tuple[str, str | None, str], list[Opportunity]] = defaultdict(list)
        # The dataset holds opportunities sorted by creation, so every group is too.
        for opp in dataset.opportunities:
            groups[(opp.pipeline_id, None, opp.user_id)].append(opp)
            for sid in searches_of.get(opp.id, ()):
                groups[(opp.pipeline_id, sid, opp.user_id)].append(opp)
        self._series = {key: _Series(opps) for key, opps in groups.items()}

    def report(self, spec: ResolvedReport) -> dict[str, object]:
        """The JSON-ready totals report for *spec* (``aggregations`` and ``data``)."""
        rows = []
        total = [0, 0, 0, 0, 0, 0.0]
        unbounded = (-_INF, _INF)
        for user_id in spec.users:
            series = self._series.get((spec.pipeline, spec.saved_search_id, user_id))
            if series is None:
                continue
            if spec.type == "created-cohort":
                sums = series.created_cohort(spec.cohort or unbounded, spec.report or unbounded)
            else:
                lo, hi = spec.report or unbounded
                sums = series.active(lo, hi)
            if sums[0] <= 0:
                continue  # only users with at least one member opportunity get a row
            for i, value in enumerate(sums):
                total[i] += value
            row: dict[str, object] = dict(metrics(sums))
            row["user_id"] = user_id
            rows.append(dict(sorted(row.items())))
        count, won, lost, vwon, vlost = (int(x) for x in total[:5])
        aggregations = metrics((count, won, lost, vwon, vlost, total[5]))
        return {"aggregations": aggregations, "data": rows}
