"""
The command line shows which dates every period covered, and says when they differ.

The CLI runs with ``--emulator --now`` (its in-process emulator, whose clock the client
resolves on), and the expectations come from the library run against the same emulator
configuration on the same clock.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.cli import _render
from closefunnel.cli._connection import emulator_config
from closefunnel.emulator import Emulator

Cli = Callable[..., Any]
DEC_1 = "2026-12-01T08:00:00Z"


def _library(now: str, compared: tuple[cf.Compared, ...], **query: Any) -> cf.FunnelComparison:
    """The comparison the library gets from the CLI's emulator at *now*."""

    async def run() -> cf.FunnelComparison:
        config = emulator_config(datetime.fromisoformat(now))
        async with (
            Emulator(config) as emu,
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now, tz_offset=0) as c,
        ):
            pipeline = (await c.pipelines())[0].id
            q = cf.FunnelQuery(pipeline=pipeline, **query)
            return await c.compare_totals(q, *compared)

    return asyncio.run(run())


def _pipeline() -> str:
    async def run() -> str:
        async with Emulator(emulator_config(datetime.fromisoformat(DEC_1))) as emu:
            return emu.dataset.pipelines[0].id

    return asyncio.run(run())


@pytest.fixture(name="pipeline", scope="module")
def _pipeline_fixture() -> str:
    return _pipeline()


def _run(cli_plain: Cli, *argv: str, now: str = DEC_1) -> str:
    run = cli_plain(*argv, "--emulator", "--now", now, "--tz-offset", "0")
    assert run.code == 0, run.err
    out: str = run.out
    return out


@pytest.mark.slow  # --emulator runs build the demo organization: seconds
def test_table_shows_every_resolved_range_and_the_length_note(
    cli_plain: Cli, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the 1st, this month so far is one day against thirty: the table says so."""
    monkeypatch.setenv("COLUMNS", "200")
    out = _run(cli_plain, "totals", "--pipeline", pipeline, "--range", "this-month",
               "--compare", "last-month", "--compare", "last-year")  # fmt: skip
    expected = _library(DEC_1, ("last-month", "last-year"), report_range="this-month")
    assert expected.base_range is not None
    ranges = [expected.base_range, *(p.compared_range for p in expected.comparisons)]
    names = ["this month", "last month", "last year"]
    caption = " \u00b7 ".join(
        f"{name}: {_render.range_label(rng)}" for name, rng in zip(names, ranges, strict=True)
    )
    assert caption in out
    assert "this month: Dec 1\u201331, 2026" in out  # what Close resolves this-month to
    flat = " ".join(out.split())
    assert "The periods differ in length: this month Dec 1, 2026 is 1 day so far;" in flat
    assert "last month Nov 1\u201330, 2026 is 30 days" in flat
    assert "last year Jan 1 \u2013 Dec 31, 2025 is 365 days" in flat
    assert "--from 2026-12-01 --to 2026-12-02 --compare same-days-last-month" in flat


@pytest.mark.slow  # --emulator runs build the demo organization: seconds
def test_no_note_for_the_same_days(cli_plain: Cli, pipeline: str) -> None:
    out = _run(cli_plain, "totals", "--pipeline", pipeline, "--from", "2026-11-01",
               "--to", "2026-11-19", "--compare", "same-days-last-month")  # fmt: skip
    assert "differ in length" not in out
    assert "Oct 1\u201318" in out  # the same days, as resolved, in the heading
    out = _run(cli_plain, "totals", "--pipeline", pipeline, "--range", "last-month",
               "--compare", "2026-10-02..2026-11-01")  # fmt: skip
    assert "differ in length" not in out  # 30 days against 30
    assert "last month: Nov 1\u201330, 2026" in out


@pytest.mark.slow  # --emulator runs build the demo organization: seconds
def test_machine_formats_carry_the_resolved_ranges(cli_plain: Cli, pipeline: str) -> None:
    argv = ("--pipeline", pipeline, "--range", "this-month", "--compare", "last-month")
    expected = _library(DEC_1, ("last-month",), report_range="this-month")
    assert expected.base_range is not None
    compared_range = expected.comparisons[0].compared_range
    assert compared_range is not None

    stored = cf.FunnelComparison.from_json(_run(cli_plain, "totals", *argv, "--format", "json"))
    assert stored == expected
    assert stored.base_range == cf.DateRange(
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )

    rows = list(csv.DictReader(io.StringIO(_run(cli_plain, "totals", *argv, "--format", "csv"))))
    spans = {(r["period"], r["range"], r["start"], r["end"]) for r in rows}
    assert spans == {
        ("base", "this-month", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("compared", "last-month", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    }
    assert list(rows[0])[:5] == ["period", "range", "start", "end", "user_id"]

    lines = _run(cli_plain, "bulk", "--all-pipelines", *argv[2:], "--format", "jsonl")
    records = [json.loads(line) for line in lines.splitlines()]
    assert len(records) == 3
    for record in records:
        result = cf.FunnelComparison.from_json(json.dumps(record["result"]))
        assert result.base_range == expected.base_range
        assert result.comparisons[0].compared_range == compared_range

    out = _run(cli_plain, "totals", "--pipeline", pipeline, "--range", "last-quarter",
               "--format", "csv")  # fmt: skip
    starts = {(r["start"], r["end"]) for r in csv.DictReader(io.StringIO(out))}
    assert starts == {("2026-07-01T00:00:00Z", "2026-10-01T00:00:00Z")}


@pytest.mark.slow  # the whole demo, three pipelines, twice
def test_demo_on_the_first_of_a_month(cli_plain: Cli) -> None:
    """Not a one-day month-to-date: last month, whole, against the month before and
    November last year; the closing hint gives those dates."""
    run = cli_plain("demo", "--now", DEC_1)
    assert run.code == 0, run.err
    flat = " ".join(run.out.split())
    assert (
        "last month (Nov 1\u201330, 2026) against the month before and the same month last year"
        in flat
    )
    assert "Dec 1, 2026" not in flat
    last_month = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    expected = _library(
        DEC_1, ("same-days-last-month", "same-days-last-year"), report_range=last_month
    )
    for period in expected.comparisons:  # the headings: the dates the client resolved
        assert period.compared_range is not None
        label = _render.range_label(period.compared_range)
        assert label.split(", ")[0] in run.out
    assert "Oct 1\u201331" in run.out
    assert "--from 2026-11-01 --to 2026-12-01 --compare same-days-last-month" in flat
    assert "differ in length" not in flat  # 30 days against 31 is within the tolerance

    run = cli_plain("demo", "--now", "2026-11-18T15:30:00Z")
    flat = " ".join(run.out.split())
    assert "this month to date (Nov 1\u201318, 2026)" in flat
    assert "--from 2026-11-01 --to 2026-11-19 --compare same-days-last-month" in flat


def _comparison(base: cf.DateRange, *compared: tuple[cf.Compared, cf.DateRange]) -> Any:
    empty = cf.FunnelTotals(aggregations=None, data=(), range=base)
    return cf.merge_comparison(
        empty, [(c, cf.FunnelTotals(aggregations=None, data=(), range=r)) for c, r in compared]
    )


def _day(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def test_length_note_rules() -> None:
    """Within 5 %: no note (whole months); past it: a note, with a pointer unless the
    compared period is a same-days one already."""
    now = _day(12, 15, 2026)
    november = cf.DateRange(_day(11, 1), _day(12, 1))
    october = cf.DateRange(_day(10, 1), _day(11, 1))
    whole = _comparison(november, ("last-month", october))
    assert _render.length_note(whole, base_spec="last-month", now=now) is None

    feb = cf.DateRange(_day(2, 1), _day(3, 1))
    jan = cf.DateRange(_day(1, 1), _day(2, 1))
    note = _render.length_note(
        _comparison(feb, ("same-days-last-month", jan)), base_spec=feb, now=now
    )
    assert note is not None
    assert note.plain == (
        "The periods differ in length: Feb 1\u201328, 2026 is 28 days; "
        "same days last month Jan 1\u201331, 2026 is 31 days."
    )

    december = cf.DateRange(_day(12, 1), _day(1, 1, 2027))
    partial = _comparison(december, ("last-month", november), ("last-week", november))
    note = _render.length_note(partial, base_spec="this-month", now=now)
    assert note is not None
    assert note.plain.startswith(
        "The periods differ in length: this month Dec 1\u201315, 2026 is 15 days so far; "
        "last month Nov 1\u201330, 2026 is 30 days;"
    )
    assert note.plain.endswith("--from 2026-12-01 --to 2026-12-16 --compare same-days-last-month.")
    # Not yet begun: nothing to compare, no note.
    future = cf.DateRange(_day(1, 1, 2027), _day(2, 1, 2027))
    assert _render.length_note(_comparison(future, ("last-month", december)), base_spec=None,
                               now=now) is None  # fmt: skip
