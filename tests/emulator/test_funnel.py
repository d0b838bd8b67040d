"""Funnel semantics: ranges, time zones, compared = base of the compared range, determinism."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from emulator_helpers import NOW, basic, post_totals

from closefunnel._query import RELATIVE_RANGES, SAME_DAYS_RANGES
from closefunnel.emulator import Emulator, EmulatorConfig, build_dataset
from closefunnel.emulator._funnel import resolve_relative, shift_calendar


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("today", "2025-06-18T00:00Z", "2025-06-19T00:00Z"),
        ("yesterday", "2025-06-17T00:00Z", "2025-06-18T00:00Z"),
        ("this-week", "2025-06-16T00:00Z", "2025-06-23T00:00Z"),
        ("last-week", "2025-06-09T00:00Z", "2025-06-16T00:00Z"),
        ("this-month", "2025-06-01T00:00Z", "2025-07-01T00:00Z"),
        ("last-month", "2025-05-01T00:00Z", "2025-06-01T00:00Z"),
        ("this-quarter", "2025-04-01T00:00Z", "2025-07-01T00:00Z"),
        ("last-quarter", "2025-01-01T00:00Z", "2025-04-01T00:00Z"),
        ("this-year", "2025-01-01T00:00Z", "2026-01-01T00:00Z"),
        ("last-year", "2024-01-01T00:00Z", "2025-01-01T00:00Z"),
    ],
)
def test_relative_ranges_are_calendar_periods(name: str, start: str, end: str) -> None:
    """Relative ranges are whole calendar periods around now (weeks start Monday)."""
    assert resolve_relative(name, NOW) == (_ts(start), _ts(end))


def test_relative_ranges_follow_the_tz_offset() -> None:
    """X-TZ-Offset moves the period boundaries to local midnight; it can change the day."""
    assert resolve_relative("today", NOW, -2.5) == (
        _ts("2025-06-18T00:00-02:30"),
        _ts("2025-06-19T00:00-02:30"),
    )
    late = datetime(2025, 6, 30, 23, 0, tzinfo=UTC)
    assert resolve_relative("this-month", late, 2) == (
        _ts("2025-07-01T00:00+02:00"),
        _ts("2025-08-01T00:00+02:00"),
    )
    assert resolve_relative("all-time", NOW) == (float("-inf"), float("inf"))


def test_calendar_shift_clamps_day_of_month() -> None:
    """Shifting back a month clamps to the month's last day."""
    assert shift_calendar(datetime(2024, 3, 31, 5, tzinfo=UTC), months=1) == datetime(
        2024, 2, 29, 5, tzinfo=UTC
    )
    assert shift_calendar(datetime(2025, 3, 31, tzinfo=UTC), months=1).day == 28
    assert shift_calendar(datetime(2025, 1, 15, tzinfo=UTC), months=3) == datetime(
        2024, 10, 15, tzinfo=UTC
    )
    assert shift_calendar(datetime(2025, 1, 3, tzinfo=UTC), days=7) == datetime(
        2024, 12, 27, tzinfo=UTC
    )


def test_demo_dataset_is_seeded_and_realistic() -> None:
    """Same seed, same data; other seed, other data; win rates and periods are plausible."""
    config = EmulatorConfig(now=NOW, seed=3, opportunities=3000)
    a, b = build_dataset(config), build_dataset(config)
    assert a == b
    assert a.opportunities == b.opportunities
    other = build_dataset(EmulatorConfig(now=NOW, seed=4, opportunities=3000))
    assert other.opportunities != a.opportunities
    assert len(a.opportunities) == 3000
    assert len(a.users) == 12
    assert len(a.pipelines) == 3
    assert [p.name for p in a.pipelines] == ["Sales", "Renewals", "Partnerships"]
    assert all(g.id.startswith("group_") for g in a.groups)
    assert all(s.id.startswith("save_") and s.opportunity_ids for s in a.saved_searches)
    closed = [o for o in a.opportunities if o.closed]
    won = sum(o.status_type == "won" for o in closed)
    assert 0.2 <= won / len(closed) <= 0.4
    assert any(o.status_type == "active" for o in a.opportunities)
    assert {o.value_period for o in a.opportunities} == {"one_time", "monthly", "annual"}
    assert all(NOW - timedelta(days=3 * 366) <= o.created < NOW for o in a.opportunities)
    assert all(o.closed is None or o.created <= o.closed < NOW for o in a.opportunities)


async def test_reports_are_deterministic_by_seed(session: aiohttp.ClientSession) -> None:
    """Two emulators with the same seed give identical reports; another seed differs."""

    async def run(seed: int) -> bytes:
        config = EmulatorConfig(now=NOW, seed=seed, opportunities=2000)
        async with Emulator(config) as emu:
            body: dict[str, object] = {
                "pipeline": emu.dataset.pipelines[0].id,
                "type": "active-stage-cohort",
                "report_relative_range": "last-year",
            }
            status, _, raw = await post_totals(session, emu, body)
            assert status == 200
            return bytes(raw)

    first = await run(5)
    assert first == await run(5)
    assert first != await run(6)


def _bodies(emu: Emulator) -> list[tuple[dict[str, Any], str, Any]]:
    """(base body, compared field, compared value) cases over both report types."""
    pipe = emu.dataset.pipelines[0].id
    search = emu.dataset.saved_searches[2].id
    group = emu.dataset.groups[0].id
    dt_ranges = [
        {"start": "2025-03-31T00:00:00Z", "end": "2025-05-15T12:00:00Z"},
        {"start": "2024-12-01T00:00:00+05:30", "end": "2025-01-01T00:00:00+05:30"},
        {"start": "2024-02-29T00:00:00Z", "end": "2024-03-31T00:00:00Z"},
    ]
    custom = {"start": "2023-07-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"}
    cases: list[tuple[dict[str, Any], str, Any]] = []
    for kind, paired in (("active-stage-cohort", "report"), ("created-cohort", "cohort")):
        extra: dict[str, Any] = {"query": {"type": "saved_search", "saved_search_id": search}}
        if kind == "created-cohort":
            extra["report_relative_range"] = "all-time"
        for name in ("this-month", "last-quarter", "this-year"):
            base = {"pipeline": pipe, "type": kind, f"{paired}_relative_range": name}
            for compared in ("last-month", "last-year", "yesterday", "last-week"):
                cases.append(({**base, "users": [group]}, "compared_relative_range", compared))
            cases.append(({**base, **extra}, "compared_custom_range", custom))
        for rng in dt_ranges:
            base = {"pipeline": pipe, "type": kind, f"{paired}_datetime_range": rng}
            for same in SAME_DAYS_RANGES:
                cases.append(({**base, **extra}, "compared_datetime_range", same))
            cases.append((base, "compared_custom_range", custom))
    return cases


def _expected_base(body: dict[str, Any], field: str, value: Any, tz: float) -> dict[str, Any]:
    paired = "cohort" if body["type"] == "created-cohort" else "report"
    out = {k: v for k, v in body.items() if not k.startswith(f"{paired}_")}
    if field == "compared_relative_range":
        out[f"{paired}_relative_range"] = value
    elif field == "compared_custom_range":
        out[f"{paired}_datetime_range"] = value
    else:
        months, days = {"week": (0, 7), "month": (1, 0), "quarter": (3, 0), "year": (12, 0)}[
            value.rsplit("-", 1)[1]
        ]
        zone = timezone(timedelta(hours=tz))
        rng = body[f"{paired}_datetime_range"]
        out[f"{paired}_datetime_range"] = {
            end: shift_calendar(
                datetime.fromisoformat(rng[end]).astimezone(zone), months=months, days=days
            ).isoformat()
            for end in ("start", "end")
        }
    return out


@pytest.mark.parametrize("tz", [None, "-2.5", "9"])
async def test_compared_report_equals_base_report_of_compared_range(
    session: aiohttp.ClientSession, demo_emu: Emulator, tz: str | None
) -> None:
    """A compared report equals the base report of the compared range, for every kind."""
    headers = {} if tz is None else {"X-TZ-Offset": tz}
    cases = _bodies(demo_emu)
    assert len(cases) > 40
    nonempty = 0
    for body, field, value in cases:
        status, _, compared = await post_totals(
            session, demo_emu, {**body, field: value}, headers=headers
        )
        assert status == 200, (body, field, value, compared)
        expected = _expected_base(body, field, value, float(tz or 0))
        status, _, base = await post_totals(session, demo_emu, expected, headers=headers)
        assert status == 200, (expected, base)
        assert json.loads(compared) == json.loads(base), (body, field, value)
        nonempty += json.loads(base)["aggregations"]["count"] > 0
        for fmt in ({"Accept": "text/csv"},):
            _, _, csv_c = await post_totals(
                session, demo_emu, {**body, field: value}, headers=headers | fmt
            )
            _, _, csv_b = await post_totals(session, demo_emu, expected, headers=headers | fmt)
            assert csv_c == csv_b
    assert nonempty > len(cases) // 2


async def test_tz_offset_shifts_relative_ranges(
    session: aiohttp.ClientSession, demo_emu: Emulator
) -> None:
    """'today' at +9 h equals the datetime range of that local day; the header matters."""
    pipe = demo_emu.dataset.pipelines[0].id
    body = {"pipeline": pipe, "type": "active-stage-cohort", "report_relative_range": "last-week"}
    _, _, utc = await post_totals(session, demo_emu, body)
    _, _, tokyo = await post_totals(session, demo_emu, body, headers={"X-TZ-Offset": "9"})
    local_now = NOW + timedelta(hours=9)
    monday = (local_now - timedelta(days=local_now.weekday() + 7)).date()
    dt_body: dict[str, object] = {
        "pipeline": pipe,
        "type": "active-stage-cohort",
        "report_datetime_range": {
            "start": f"{monday.isoformat()}T00:00:00+09:00",
            "end": f"{(monday + timedelta(days=7)).isoformat()}T00:00:00+09:00",
        },
    }
    _, _, explicit = await post_totals(session, demo_emu, dt_body)
    assert json.loads(tokyo) == json.loads(explicit)
    assert json.loads(tokyo) != json.loads(utc)


async def test_report_matches_a_brute_force_count(
    session: aiohttp.ClientSession, demo_emu: Emulator
) -> None:
    """Counts and sums match a direct scan of the dataset, for both report types."""
    data = demo_emu.dataset
    pipe = data.pipelines[1].id
    lo, hi = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)
    rng = {"start": lo.isoformat(), "end": hi.isoformat()}
    opps = [o for o in data.opportunities if o.pipeline_id == pipe]

    members = [o for o in opps if o.created < hi and not (o.closed and o.closed < lo)]
    closed_in = [o for o in members if o.closed and lo <= o.closed < hi]
    won = [o for o in closed_in if o.status_type == "won"]
    body = {"pipeline": pipe, "type": "active-stage-cohort", "report_datetime_range": rng}
    agg = json.loads((await post_totals(session, demo_emu, body))[2])["aggregations"]
    assert agg["count"] == len(members)
    assert agg["count_total_complete"] == len(closed_in)
    assert agg["count_total_won"] == len(won)
    assert agg["value_total_won"] == sum(o.annualized_value for o in won)
    mean = sum((o.closed - o.created).total_seconds() for o in won if o.closed) / len(won)
    assert agg["average_time_to_win"] == round(mean)

    cohort = [o for o in opps if lo <= o.created < hi]
    c_won = [o for o in cohort if o.status_type == "won"]
    body = {"pipeline": pipe, "type": "created-cohort", "cohort_datetime_range": rng}
    result = json.loads((await post_totals(session, demo_emu, body))[2])
    assert result["aggregations"]["count"] == len(cohort)
    assert result["aggregations"]["count_total_won"] == len(c_won)
    assert sum(row["count"] for row in result["data"]) == len(cohort)
    assert [row["user_id"] for row in result["data"]] == sorted({o.user_id for o in cohort})


@pytest.mark.parametrize("name", RELATIVE_RANGES)
async def test_every_relative_range_answers(
    session: aiohttp.ClientSession, demo_emu: Emulator, name: str
) -> None:
    """Every relative name works as a report and as a cohort range."""
    pipe = demo_emu.dataset.pipelines[0].id
    for body in (
        {"pipeline": pipe, "type": "active-stage-cohort", "report_relative_range": name},
        {"pipeline": pipe, "type": "created-cohort", "cohort_relative_range": name},
    ):
        status, _, raw = await post_totals(session, demo_emu, body)
        assert status == 200
        assert set(json.loads(raw)) == {"aggregations", "data"}


async def test_list_endpoints(session: aiohttp.ClientSession, demo_emu: Emulator) -> None:
    """pipeline/, user/ and me/ list the dataset in Close's shapes."""
    headers = basic(demo_emu.api_key)
    async with session.get(demo_emu.base_url + "pipeline/", headers=headers) as resp:
        pipelines = await resp.json()
    assert pipelines["has_more"] is False
    assert [p["id"] for p in pipelines["data"]] == [p.id for p in demo_emu.dataset.pipelines]
    statuses = pipelines["data"][0]["statuses"]
    assert {s["type"] for s in statuses} == {"active", "won", "lost"}
    assert set(statuses[0]) == {"id", "label", "type"}
    async with session.get(demo_emu.base_url + "user/", headers=headers) as resp:
        users = await resp.json()
    assert len(users["data"]) == len(demo_emu.dataset.users)
    assert set(users["data"][0]) == {"id", "first_name", "last_name", "email"}
    async with session.get(demo_emu.base_url + "me", headers=headers) as resp:
        me = await resp.json()
    assert me["id"] == users["data"][0]["id"]
    assert me["organizations"][0]["id"].startswith("orga_")
