"""
Nothing a server sends can drive the terminal or a spreadsheet (issue 10 §3 and §7).

A hostile "Close" on 127.0.0.1 (an aiohttp.web app in its own thread, because ``main``
calls ``asyncio.run``) serves pipeline, status and user names that are rich markup
(``Ann [/]``, ``[link=...]``), terminal escapes (clear screen, set the window title) and
formula-looking ids, reports whose deltas overflow, and error bodies full of escapes.
Every command must finish without a traceback, and emit no control character (and so no
hyperlink escape) on stdout or stderr.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from closefunnel.cli import _render
from tests.report.html_check import assert_loads_nothing, parse

from .conftest import Run, run_main

MARKUP_USER = "Ann [/]"
LINK = "[link=http://x]y[/link]"
CLEAR = "\x1b[2J"
TITLE = "\x1b]0;title\x07"
HOSTILE = f"{MARKUP_USER} {LINK} {CLEAR} {TITLE} \x9b31m \x7f \x00 \u202eevil"
#: User ids a spreadsheet would run as formulas; they come back in every report row.
FORMULA_IDS = ("=1+1", "+2", "-3", "@SUM(A1)", "\tTAB", "\rCR")
GOOD_PIPELINE = "pipe_hostile"
FORMULA_PIPELINE = '=HYPERLINK("http://x")'
MISSING_PIPELINE = "pipe_missing"
#: Every control character but tab and newline.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: In CSV, CR is data too (line ends, and quoted inside a cell, as RFC 4180 allows).
CSV_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _metrics(sign: float, *, value_won: int = 1_000_00) -> dict[str, Any]:
    return {
        "average_time_to_win": -3.5,  # negative numbers stay numbers in CSV
        "average_value_annualized_per_won_opportunity": 1_000_00,
        "count": 2,
        "count_total_complete": 2,
        "count_total_won": 1,
        "count_win_rate": 0.5,
        "sales_velocity": sign * 1e308,  # base - compared overflows to infinity
        "value_total_complete": 2_000_00,
        "value_total_won": value_won,
        "value_win_rate": 0.5,
    }


def _report(sign: float) -> dict[str, Any]:
    users = [("user_ann", 1), ("user_link", 2), *((uid, 3) for uid in FORMULA_IDS)]
    return {
        "aggregations": _metrics(sign),
        "data": [{**_metrics(sign, value_won=-1200 * n), "user_id": uid} for uid, n in users],
    }


async def _pipelines(_: web.Request) -> web.Response:
    statuses = [{"id": "stat_1", "label": HOSTILE, "type": "active"}]
    data = [
        {"id": GOOD_PIPELINE, "name": HOSTILE, "statuses": statuses},
        {"id": FORMULA_PIPELINE, "name": LINK, "statuses": []},
        {"id": MISSING_PIPELINE, "name": CLEAR + "gone", "statuses": []},
    ]
    return web.json_response({"data": data, "has_more": False})


async def _users(_: web.Request) -> web.Response:
    data = [
        {"id": "user_ann", "first_name": MARKUP_USER, "last_name": CLEAR, "email": None},
        {"id": "user_link", "first_name": LINK, "last_name": TITLE, "email": None},
    ]
    return web.json_response({"data": data, "has_more": False})


async def _totals(request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("pipeline") == MISSING_PIPELINE:
        return web.Response(
            status=404,
            body=orjson.dumps({"error": f"no such pipeline {HOSTILE}"}),
            content_type="application/json",
        )
    compared = any(key.startswith("compared_") for key in body)
    return web.json_response(_report(-1.0 if compared else 1.0))


@pytest.fixture(name="hostile", scope="module")
def _hostile() -> Iterator[str]:
    """The hostile server's API root, served from a thread for the test's lifetime."""
    app = web.Application()
    app.router.add_get("/api/v1/pipeline/", _pipelines)
    app.router.add_get("/api/v1/user/", _users)
    app.router.add_post("/api/v1/report/funnel/opportunity/totals/", _totals)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/api/v1/"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(name="run")
def _run(hostile: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    monkeypatch.setenv("CLOSE_API_KEY", "api_hostileKey.s3cretS3cret")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*argv: str, terminal: bool = False) -> Run:
        args = [*argv, "--base-url", hostile, "--tz-offset", "0"]
        return run_main(args, secrets=("s3cret",), terminal=terminal)

    return run


def _no_match(pattern: re.Pattern[str], text: str) -> None:
    found = pattern.search(text)
    assert found is None, repr(text[max(0, found.start() - 60) : found.end() + 20])


def _assert_inert(run: Run, *, csv_out: bool = False) -> None:
    _no_match(CSV_CONTROL if csv_out else CONTROL, run.out)
    _no_match(CONTROL, run.err)
    for text in (run.out, run.err):
        assert "\x1b" not in text  # so no hyperlink (OSC 8) or any other escape either
        assert "\u202e" not in text


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_totals_shows_hostile_names_as_plain_text(run: Callable[..., Run], fmt: str) -> None:
    result = run("totals", "--pipeline", GOOD_PIPELINE, "--compare", "last-month", "--format", fmt)
    assert result.code == 0, result.err
    _assert_inert(result, csv_out=fmt == "csv")
    if fmt == "table":
        # Markup is shown as the characters the user typed, not interpreted or dropped.
        assert MARKUP_USER in result.out
        assert LINK in result.out
        assert "\ufffd[2J" in result.out


def test_pipelines_lists_hostile_names_as_plain_text(run: Callable[..., Run]) -> None:
    result = run("pipelines")
    assert result.code == 0, result.err
    _assert_inert(result)
    assert LINK in result.out
    assert MARKUP_USER in result.out


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_bulk_with_hostile_names_and_error_bodies(run: Callable[..., Run], fmt: str) -> None:
    result = run("bulk", "--all-pipelines", "--compare", "last-month", "--format", fmt)
    assert result.code == 1  # the missing pipeline's 404
    _assert_inert(result, csv_out=fmt == "csv")
    assert "\ufffd[2Jgone" in result.err  # the failed pipeline's name, escape replaced
    assert "no such pipeline" in result.err
    assert "2 of 3 reports fetched, 1 failed" in result.err
    if fmt == "jsonl":  # the same strings, escaped: a JSON parser reads them back exactly
        error = [json.loads(line) for line in result.out.splitlines()][-1]["error"]
        assert error["message"].endswith(HOSTILE)


def test_error_body_escapes_never_reach_stderr(run: Callable[..., Run]) -> None:
    result = run("totals", "--pipeline", MISSING_PIPELINE)
    assert result.code == 1
    _assert_inert(result)
    assert result.err.startswith("closefunnel: not found (404: ")
    assert "no such pipeline" in result.err


def test_overflowing_delta_is_a_dash_in_tables_and_null_in_json(run: Callable[..., Run]) -> None:
    args = ("totals", "--pipeline", GOOD_PIPELINE, "--compare", "last-month")
    table = run(*args)
    assert table.code == 0, table.err
    velocity = next(line for line in table.out.splitlines() if "Velocity / day" in line)
    assert "\u2014" in velocity
    data = json.loads(run(*args, "--format", "json").out)
    delta = data["comparisons"][0]["aggregations"]["sales_velocity"]
    assert delta["delta"] is None
    assert delta["change"] is None


def test_csv_neutralizes_formula_cells_and_keeps_numbers(run: Callable[..., Run]) -> None:
    result = run("bulk", "--all-pipelines", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.out, newline="")))
    assert rows
    user_ids = {row["user_id"] for row in rows}
    assert {"'" + uid for uid in FORMULA_IDS} <= user_ids
    assert {"user_ann", "user_link"} <= user_ids
    assert {row["pipeline"] for row in rows} == {GOOD_PIPELINE, "'" + FORMULA_PIPELINE}
    for row in rows:
        assert row["average_time_to_win"] == "-3.5"
        assert re.fullmatch(r"-[0-9]+", row["value_total_won"])
        assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in row.values())


def test_csv_text_rule() -> None:
    """OWASP's rule, exactly: only the six leading characters, text cells only."""
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert _render.csv_text(start + "x") == "'" + start + "x"
    for safe in ("x=1", "pipe_1", "", " -1", "2026-11-01T00:00:00Z..2026-11-19T00:00:00Z"):
        assert _render.csv_text(safe) == safe
    assert _render.csv_text("a\x1bb") == "a\ufffdb"
    assert _render.clean("a\nb\tc\rd\x1b\x9b\x7f") == "a\nb\tc\ufffdd\ufffd\ufffd\ufffd"


def test_html_reports_show_hostile_names_as_text(run: Callable[..., Run]) -> None:
    """Markup, escapes and bidi overrides in names end as text in a document that loads
    nothing; the failed pipeline is listed in the file too, its error escaped."""
    totals = run(
        "totals", "--pipeline", GOOD_PIPELINE, "--compare", "last-month", "--format", "html"
    )
    bulk = run("bulk", "--all-pipelines", "--compare", "last-month", "--format", "html")
    assert totals.code == 0, totals.err
    assert bulk.code == 1  # the missing pipeline's 404
    for result in (totals, bulk):
        _assert_inert(result)
        parsed = parse(result.out)
        assert_loads_nothing(parsed)
        names = {
            row.find("th").text for row in parsed.root.find_all("tr") if "data-user" in row.attrs
        }
        assert _render.clean(f"{MARKUP_USER} {CLEAR}") in names
        assert _render.clean(f"{LINK} {TITLE}") in names
        assert {_render.clean(uid) for uid in FORMULA_IDS} <= names  # text in HTML, as sent
        assert _render.clean(HOSTILE) + " · active stage cohort" in {
            h.text for h in parsed.root.find_all("h2")
        }
    failed = parse(bulk.out).root.find("section", **{"class": "cf-report cf-failures"})
    [row] = failed.find("tbody").find_all("tr")
    assert row.find("th").text == "\ufffd[2Jgone"
    assert "no such pipeline" in row.find("td").text


def test_the_terminal_chart_keeps_hostile_titles_inert(run: Callable[..., Run]) -> None:
    """On a terminal rich colours the output itself; a name's escapes still never pass."""
    args = ("totals", "--pipeline", GOOD_PIPELINE, "--compare", "last-month")
    result = run(*args, terminal=True)
    assert result.code == 0, result.err
    assert ": funnel" in result.out
    assert "\ufffd[2J" in result.out  # the pipeline name's escape, replaced
    for sequence in (CLEAR, TITLE, "\x9b", "\u202e", "\x1b]"):
        assert sequence not in result.out
