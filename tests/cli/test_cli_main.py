"""``main([...])`` in-process against the emulator: every format against the library."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel._convert import CONVERTER
from closefunnel.cli import _render
from closefunnel.emulator import Emulator

#: The ``cli`` fixture: ``cli(*argv)`` -> a Run with ``code``, ``out`` and ``err``.
Cli = Callable[..., Any]
NOW_ISO = "2026-11-18T15:30:00+00:00"  # the emulator clock of conftest.py
Library = Callable[..., Any]


def _pipeline(emu: Emulator, index: int = 0) -> str:
    return emu.dataset.pipelines[index].id


def test_version_and_help(cli_plain: Cli) -> None:
    run = cli_plain("--version")
    assert (run.code, run.out.strip()) == (0, f"closefunnel {cf.__version__}")
    run = cli_plain("--help")
    assert run.code == 0
    assert "demo" in run.out
    run = cli_plain()
    assert run.code == 2
    assert "demo" in run.err


def test_totals_json_is_the_converters_form(cli: Cli, emu: Emulator, library: Library) -> None:
    pipeline = _pipeline(emu)
    run = cli("totals", "--pipeline", pipeline, "--compare", "last-month", "--compare",
              "last-year", "--format", "json")  # fmt: skip
    assert run.code == 0, run.err
    query = cf.FunnelQuery(pipeline=pipeline, report_range="this-month")
    expected = library(lambda c: c.compare_totals(query, "last-month", "last-year"))
    assert json.loads(run.out) == CONVERTER.unstructure(expected)

    run = cli("totals", "--pipeline", pipeline, "--range", "last-quarter", "--format", "json")
    assert run.code == 0
    query = cf.FunnelQuery(pipeline=pipeline, report_range="last-quarter")
    assert json.loads(run.out) == CONVERTER.unstructure(library(lambda c: c.funnel_totals(query)))


def test_totals_csv_rows_per_user_per_period(cli: Cli, emu: Emulator, library: Library) -> None:
    pipeline = _pipeline(emu, 1)
    run = cli("totals", "--pipeline", pipeline, "--from", "2026-11-01", "--to", "2026-11-19",
              "--compare", "same-days-last-year", "--format", "csv")  # fmt: skip
    assert run.code == 0, run.err
    rows = list(csv.DictReader(io.StringIO(run.out)))
    rng = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC))
    query = cf.FunnelQuery(pipeline=pipeline, report_range=rng)
    expected: cf.FunnelComparison = library(
        lambda c: c.compare_totals(query, "same-days-last-year")
    )
    periods = [("base", "2026-11-01T00:00:00Z..2026-11-19T00:00:00Z", expected.base)]
    periods.append(("compared", "same-days-last-year", expected.comparisons[0].totals))
    # The range as given, then as resolved (same-days-last-year: Nov 1-18, 2025).
    resolved = {
        "base": ("2026-11-01T00:00:00Z", "2026-11-19T00:00:00Z"),
        "compared": ("2025-11-01T00:00:00Z", "2025-11-19T00:00:00Z"),
    }
    want = []
    for period, text, totals in periods:
        for user in totals.data:
            start, end = resolved[period]
            row = {"period": period, "range": text, "start": start, "end": end}
            row["user_id"] = user.user_id
            for metric in cf.METRIC_NAMES:
                value = getattr(user, metric)
                row[metric] = (
                    "" if value is None else repr(value) if isinstance(value, float) else str(value)
                )
            want.append(row)
    assert rows == want
    assert list(rows[0]) == list(_render.CSV_HEADER)


def test_totals_table_shows_formatted_numbers_and_names(
    cli: Cli, emu: Emulator, library: Library
) -> None:
    pipeline = _pipeline(emu)
    run = cli("totals", "--pipeline", pipeline, "--compare", "last-month")
    assert run.code == 0, run.err
    query = cf.FunnelQuery(pipeline=pipeline, report_range="this-month")
    expected: cf.FunnelComparison = library(lambda c: c.compare_totals(query, "last-month"))
    assert emu.dataset.pipelines[0].name in run.out
    assert expected.base.aggregations is not None
    lines = {line.split("  ")[0].strip(): line for line in run.out.splitlines()}
    for metric, label in _render.METRIC_LABELS.items():
        line = lines[label]
        d = getattr(expected.comparisons[0].aggregations, metric)
        for cell in (
            _render.format_value(metric, d.base),
            _render.format_value(metric, d.compared),
            _render.format_delta(metric, d.delta),
            _render.change_text(metric, d.change).plain,
        ):
            assert cell in line, (label, cell, line)
    names = {u.id: f"{u.first_name} {u.last_name}" for u in emu.dataset.users}
    for user in expected.base.data:
        assert names[user.user_id] in run.out

    run = cli("totals", "--pipeline", pipeline, "--range", "all-time")
    assert run.code == 0
    assert "all time" in run.out
    assert "Velocity / day" in run.out


def test_bulk_formats(cli: Cli, emu: Emulator, library: Library) -> None:
    ids = [p.id for p in emu.dataset.pipelines]
    queries = [cf.FunnelQuery(pipeline=p, report_range="this-year") for p in ids]

    async def expected_all(client: cf.Client) -> list[cf.FunnelComparison]:
        return [await client.compare_totals(q, "last-year") for q in queries]

    expected = [CONVERTER.unstructure(r) for r in library(expected_all)]
    common = ("--range", "this-year", "--compare", "last-year")

    run = cli("bulk", "--all-pipelines", *common, "--format", "json")
    assert run.code == 0, run.err
    records = json.loads(run.out)
    assert [r["pipeline"] for r in records] == ids
    assert [r["result"] for r in records] == expected
    assert all(r["error"] is None for r in records)
    assert f"{len(ids)} of {len(ids)} reports fetched" in run.err

    run = cli("bulk", "--pipeline", *ids, *common, "--format", "jsonl")
    assert run.code == 0
    records = [json.loads(line) for line in run.out.splitlines()]
    assert sorted(r["pipeline"] for r in records) == sorted(ids)
    by_id = {r["pipeline"]: r["result"] for r in records}
    assert [by_id[p] for p in ids] == expected

    run = cli("bulk", "--pipeline", ids[0], ids[1], *common, "--format", "csv")
    assert run.code == 0
    rows = list(csv.DictReader(io.StringIO(run.out)))
    assert {r["pipeline"] for r in rows} == set(ids[:2])
    first = [r for r in rows if r["pipeline"] == ids[0] and r["period"] == "base"]
    assert [r["user_id"] for r in first] == [u["user_id"] for u in expected[0]["base"]["data"]]
    assert {r["range"] for r in rows} == {"this-year", "last-year"}

    run = cli("bulk", "--all-pipelines", *common)
    assert run.code == 0
    for pipeline in emu.dataset.pipelines:
        assert pipeline.name in run.out


def test_bulk_failure_is_summarised_with_exit_1(cli: Cli, emu: Emulator) -> None:
    run = cli("bulk", "--pipeline", _pipeline(emu), "pipe_missing", "--format", "jsonl")
    assert run.code == 1
    records = {r["pipeline"]: r for r in map(json.loads, run.out.splitlines())}
    assert records["pipe_missing"]["error"]["type"] == "NotFoundError"
    assert records[_pipeline(emu)]["error"] is None
    assert "pipe_missing" in run.err
    assert "1 of 2 reports fetched, 1 failed" in run.err


def test_pipelines(cli: Cli, emu: Emulator) -> None:
    run = cli("pipelines", "--format", "json")
    assert run.code == 0
    assert [p["id"] for p in json.loads(run.out)] == [p.id for p in emu.dataset.pipelines]
    run = cli("pipelines")
    assert run.code == 0
    for pipeline in emu.dataset.pipelines:
        assert pipeline.id in run.out
        assert pipeline.name in run.out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["totals", "--pipeline", "p", "--range", "next-month"], "next-month"),
        (["totals", "--pipeline", "p", "--compare", "same-days-last-year"], "same-days-last-year"),
        (["totals", "--pipeline", "p", "--compare", "yesterday-ish"], "yesterday-ish"),
        (["totals", "--pipeline", "p", "--from", "2026-11-01"], "--to"),
        (["totals", "--pipeline", "p", "--from", "2026-13-01", "--to", "2027-01-01"], "2026-13-01"),
        (
            ["totals", "--pipeline", "p", "--from", "2026-11-02", "--to", "2026-11-01"],
            "start < end",
        ),
        (["totals", "--pipeline", "p", "--type", "created-cohort"], "cohort_range"),
        (["totals", "--pipeline", "p", "--cohort-range", "this-month"], "cohort_range"),
        (["totals", "--pipeline", "p", "--format", "xml"], "xml"),
        (["totals", "--pipeline", "p", "--tz-offset", "30"], "30"),
        (["bulk", "--pipeline", "p", "--range", "bogus"], "bogus"),
        (["bulk", "--range", "this-month"], "--all-pipelines"),
        (["totals", "--pipeline", "p", "--now", NOW_ISO], "--now"),
    ],
)
def test_bad_usage_exits_2_naming_the_value(cli: Cli, argv: list[str], named: str) -> None:
    run = cli(*argv)
    assert run.code == 2
    assert named in run.err
    assert run.out == ""


def test_missing_or_bad_key_source_exits_2(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLOSE_API_KEY")
    run = cli("pipelines")
    assert run.code == 2
    assert "CLOSE_API_KEY" in run.err
    assert len(run.err.strip().splitlines()) == 1
    run = cli("pipelines", "--api-key-file", str(tmp_path / "missing"))
    assert run.code == 2
    assert "missing" in run.err
    (tmp_path / "empty").write_text("\n")
    run = cli("pipelines", "--api-key-file", str(tmp_path / "empty"))
    assert run.code == 2


def test_api_key_file(
    cli: Cli, emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLOSE_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(emu.api_key + "\n")
    run = cli("pipelines", "--api-key-file", str(key_file), "--format", "json")
    assert run.code == 0
    assert len(json.loads(run.out)) == len(emu.dataset.pipelines)


def test_api_failures_exit_1_with_one_line(
    cli: Cli, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli("totals", "--pipeline", "pipe_missing")
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "not found" in run.err
    assert "closefunnel pipelines" in run.err

    wrong = "api_" + "x" * 22 + ".notthesecret"
    monkeypatch.setenv("CLOSE_API_KEY", wrong)
    run = cli("pipelines")
    assert run.code == 1
    assert "CLOSE_API_KEY" in run.err
    assert "notthesecret" not in run.err + run.out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.mark.slow
def test_network_failure_exits_1(cli: Cli, emu: Emulator) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api/v1/"
    for argv in (["totals", "--pipeline", "p"], ["pipelines"]):
        run = cli(*argv, "--base-url", url, "--tz-offset", "0", connect=False)
        assert run.code == 1
        assert run.err.count("\n") == 1
        assert "could not reach" in run.err
        assert "--base-url" in run.err
        assert run.out == ""


@pytest.mark.slow
def test_demo_matches_the_library(cli_plain: Cli) -> None:
    """The demo's numbers are the library's, for every pipeline, at a fixed clock."""
    import asyncio

    from closefunnel.emulator import EmulatorConfig

    run = cli_plain("demo", "--now", NOW_ISO)
    assert run.code == 0
    out = run.out
    base = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC))

    async def expected() -> tuple[Any, list[cf.FunnelComparison]]:
        async with (
            Emulator(EmulatorConfig(dataset="demo", now=datetime.fromisoformat(NOW_ISO))) as emu,
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0) as c,
        ):
            pipelines = await c.pipelines()
            return emu.dataset, [
                await c.compare_totals(
                    cf.FunnelQuery(pipeline=p.id, report_range=base),
                    "same-days-last-month",
                    "same-days-last-year",
                )
                for p in pipelines
            ]

    dataset, comparisons = asyncio.run(expected())
    assert "Nov 1\u201318, 2026" in out
    assert "Oct 1\u201318" in out
    lines = out.splitlines()
    for pipeline, comparison in zip(dataset.pipelines, comparisons, strict=True):
        assert pipeline.name in out
        agg = comparison.comparisons[1].aggregations
        assert agg is not None
        start = next(i for i, line in enumerate(lines) if line.strip() == pipeline.name)
        table = lines[start : start + 16]
        for metric, label in _render.METRIC_LABELS.items():
            line = next(row for row in table if row.strip().startswith(label))
            d = getattr(agg, metric)
            assert _render.format_value(metric, d.base) in line
            assert _render.format_value(metric, d.compared) in line
            assert _render.change_text(metric, d.change).plain in line
    for user in dataset.users:
        assert f"{user.first_name} {user.last_name}" in out


def test_render_formats() -> None:
    """Money from cents, rates as percentages, days, None as a dash, inverted colours."""
    assert _render.format_value("value_total_won", 1234567) == "$12,346"
    assert _render.format_delta("value_total_won", -1234567) == "-$12,346"
    assert _render.format_value("count_win_rate", 0.3442) == "34.4%"
    assert _render.format_delta("value_win_rate", 0.021) == "+2.1 pp"
    assert _render.format_value("average_time_to_win", 276_480) == "3.2 d"
    assert _render.format_value("average_time_to_win", None) == "\u2014"
    assert _render.format_value("count", 1760) == "1,760"
    up = _render.change_text("count", 0.25)
    assert (up.plain, str(up.style)) == ("\u25b2 25.0%", "green")
    slower = _render.change_text("average_time_to_win", 0.25)
    assert (slower.plain, str(slower.style)) == ("\u25b2 25.0%", "red")
    faster = _render.change_text("average_time_to_win", -0.1)
    assert (faster.plain, str(faster.style)) == ("\u25bc 10.0%", "green")
    assert _render.change_text("count", None).plain == "\u2014"
    rng = cf.DateRange(datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC))
    assert _render.range_label(rng) == "Dec 1, 2025 \u2013 Jan 3, 2026"
    assert _render.range_label("same-days-last-year") == "same days last year"


def test_in_process_emulator_and_emulator_command(cli_plain: Cli) -> None:
    """--emulator needs no key; `closefunnel emulator` takes the emulator's own options."""
    run = cli_plain("pipelines", "--emulator", "--now", NOW_ISO, "--format", "json")
    assert run.code == 0
    assert len(json.loads(run.out)) == 3
    run = cli_plain("totals", "--emulator", "--base-url", "http://x/", "--pipeline", "p")
    assert run.code == 2
    assert "--emulator" in run.err
    run = cli_plain("emulator", "--rps", "-1")
    assert run.code == 2
    assert "rps" in run.err
