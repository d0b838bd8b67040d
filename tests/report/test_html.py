"""
The HTML report: the CLI's numbers, each period's dates, the funnel chart, and nothing a
stranger typed becoming markup or anything that loads from anywhere.

Documents are read back with ``html.parser`` (tests/report/html_check.py), as a browser's
parser would read them, and compared with the typed values the client returned.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import attrs
import orjson
import pytest

import closefunnel as cf
from closefunnel import _display, _html
from closefunnel._display import LOWER_IS_BETTER, METRIC_LABELS, clean, range_label
from closefunnel._query import format_instant
from closefunnel.cli import _render

from .conftest import HOSTILE, Fetched, hostile_totals, metrics
from .html_check import Element, Parsed, assert_loads_nothing, parse

#: The chart's plot height (the SVG's height less the room above and below the bars).
PLOT = 220 - 22 - 28


def _document(fetched: Fetched) -> str:
    return _html.report_document(
        [(fetched.pipeline, fetched.comparison)],
        title=f"{fetched.pipeline}: this month",
        base_label="this month",
        names=fetched.names,
    )


def _cells(row: Element) -> list[str]:
    return [cell.text for cell in row.children if cell.tag in ("th", "td")]


def _metric_rows(parsed: Parsed) -> dict[str, Element]:
    table = parsed.root.find("table", **{"class": "cf-metrics"})
    return {
        row.attrs["data-metric"]: row for row in table.find_all("tr") if "data-metric" in row.attrs
    }


def test_the_document_is_html5_and_loads_nothing(fetched: Fetched) -> None:
    text = _document(fetched)
    parsed = parse(text)
    assert parsed.doctype == "DOCTYPE html"
    html = parsed.root.find("html")
    assert html.attrs["lang"] == "en"
    head = html.find("head")
    assert head.find_all("meta", charset="utf-8")
    assert head.find("title").text == f"{fetched.pipeline}: this month"
    csp = head.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp
    assert "prefers-color-scheme: dark" in head.find("style").text
    assert "@media print" in head.find("style").text
    assert_loads_nothing(parsed)
    # Nothing that even looks like a reference: no scheme, no protocol-relative URL.
    assert "//" not in text
    assert "http:" not in text.lower()
    assert "https:" not in text.lower()
    assert "<script" not in text.lower()


def test_the_metrics_table_is_the_clis(fetched: Fetched) -> None:
    rows = _metric_rows(parse(_document(fetched)))
    comparison = fetched.comparison
    assert list(rows) == list(METRIC_LABELS)
    for metric, row in rows.items():
        base = getattr(comparison.base.aggregations, metric)
        expected = [METRIC_LABELS[metric], _render.format_value(metric, base)]
        for period in comparison.comparisons:
            d = getattr(period.aggregations, metric)
            expected += [
                _render.format_value(metric, d.compared),
                _render.format_delta(metric, d.delta),
                _render.change_text(metric, d.change).plain,
            ]
        assert _cells(row) == expected
        # The colour says better or worse; for time to win, down is better.
        changes = [c for c in row.children if c.text[:1] in ("▲", "▼")]
        for cell, period in zip(changes, comparison.comparisons, strict=True):
            change = getattr(period.aggregations, metric).change
            good = (change > 0) != (metric in LOWER_IS_BETTER)
            assert cell.attrs["class"] == ("cf-good" if good else "cf-bad")


def test_every_period_shows_the_dates_it_covered(fetched: Fetched) -> None:
    parsed = parse(_document(fetched))
    comparison = fetched.comparison
    ranges = [comparison.base_range, *(p.compared_range for p in comparison.comparisons)]
    assert all(rng is not None for rng in ranges)
    line = parsed.root.find("p", **{"class": "cf-periods"})
    heading = parsed.root.find("table", **{"class": "cf-metrics"}).find("thead")
    for where in (line, heading):
        times = where.find_all("time")
        assert [t.attrs["datetime"] for t in times] == [r.start.isoformat() for r in ranges]
        assert [t.text for t in times] == [range_label(r) for r in ranges]
        for time, rng in zip(times, ranges, strict=True):
            assert (
                time.attrs["title"] == f"[{format_instant(rng.start)}, {format_instant(rng.end)})"
            )
    assert "this month" in line.text
    assert "Nov 1\u201330, 2026" in line.text
    assert "last year" in line.text
    assert "Jan 1 \u2013 Dec 31, 2025" in line.text


def test_the_chart_draws_each_stage_of_each_period_to_one_scale(fetched: Fetched) -> None:
    parsed = parse(_document(fetched))
    svg = parsed.root.find("svg", **{"class": "cf-chart"})
    comparison = fetched.comparison
    funnels = [
        comparison.base.aggregations,
        *(p.totals.aggregations for p in comparison.comparisons),
    ]
    stages = _display.FUNNEL_STAGES
    values = {(s, p): getattr(f, s) for s in stages for p, f in enumerate(funnels)}
    top = max(values.values())
    bars = svg.find_all("rect")
    assert len(bars) == len(values)
    for rect in bars:
        key = (rect.attrs["data-stage"], int(rect.attrs["data-period"]))
        value = values[key]
        assert float(rect.attrs["height"]) == pytest.approx(PLOT * value / top, abs=0.05)
        assert _render.format_value(key[0], value) in rect.find("title").text
    labels = [t.text for t in svg.find_all("text")]
    for value in values.values():
        assert _render.format_value("count", value) in labels
    legend = parsed.root.find("figcaption").text.split()
    assert legend == ["this", "month", "last", "month", "last", "year"]


def test_the_users_table_is_the_clis_with_names(fetched: Fetched) -> None:
    parsed = parse(_document(fetched))
    table = parsed.root.find("table", **{"class": "cf-users"})
    heads = [th.text for th in table.find("thead").find_all("th")]
    assert heads == [
        "User",
        "Opportunities",
        "Won",
        "Win rate",
        "Value won",
        "Value won vs last month",
        "Value won vs last year",
    ]
    rows = table.find("tbody").find_all("tr")
    base = {row.user_id: row for row in fetched.comparison.base.data}
    expected = sorted(base, key=lambda uid: (-base[uid].value_total_won, fetched.names[uid]))
    assert [row.attrs["data-user"] for row in rows] == expected
    for row in rows:
        uid = row.attrs["data-user"]
        cells = _cells(row)
        assert cells[0] == fetched.names[uid]
        assert cells[4] == _render.format_value("value_total_won", base[uid].value_total_won)
        for cell, period in zip(cells[5:], fetched.comparison.comparisons, strict=True):
            change = next(u for u in period.users if u.user_id == uid).value_total_won.change
            assert cell == _render.change_text("value_total_won", change).plain


def test_plain_totals_render_as_the_clis_two_tables(fetched: Fetched) -> None:
    text = _html.report_document([(fetched.pipeline, fetched.totals)], title="t")
    parsed = parse(text)
    assert_loads_nothing(parsed)
    rows = _metric_rows(parsed)
    for metric, row in rows.items():
        value = getattr(fetched.totals.aggregations, metric)
        assert _cells(row) == [METRIC_LABELS[metric], _render.format_value(metric, value)]
    users = parsed.root.find("table", **{"class": "cf-users"})
    heads = [th.text for th in users.find("thead").find_all("th")]
    assert heads == ["User", "Opportunities", "Won", "Win rate", "Value won", "Avg time to win"]
    # No names given: the ids are shown.
    assert {r.attrs["data-user"] for r in users.find("tbody").find_all("tr")} == {
        r.user_id for r in fetched.totals.data
    }
    assert fetched.totals.range is not None
    assert parsed.root.find("time").attrs["datetime"] == fetched.totals.range.start.isoformat()
    assert len(parsed.root.find("svg", **{"class": "cf-chart"}).find_all("rect")) == 3


def _hostile_comparison() -> cf.FunnelComparison:
    return cf.merge_comparison(hostile_totals(1), [("last-month", hostile_totals(2))])


def test_strings_from_a_response_are_shown_as_typed_never_as_markup() -> None:
    names = {uid: HOSTILE[-1 - n] for n, uid in enumerate(HOSTILE)}  # names hostile too
    title = HOSTILE[3] + HOSTILE[1]
    failures = [(HOSTILE[0], HOSTILE[4])]
    text = _html.report_document(
        [(title, _hostile_comparison()), (HOSTILE[2], hostile_totals())],
        title=HOSTILE[0],
        names=names,
        failures=failures,
    )
    parsed = parse(text)  # every element closed in order: nothing broke out of its text
    assert_loads_nothing(parsed)
    assert "<script" not in text.lower()
    assert "\u202e" not in text
    assert "\u2066" not in text
    assert "\x1b" not in text
    assert parsed.root.find("title").text == clean(HOSTILE[0])
    assert [h.text for h in parsed.root.find_all("h2")] == [
        clean(title),
        clean(HOSTILE[2]),
        "Failed",
    ]
    assert [a.text for a in parsed.root.find("nav").find_all("a")] == [
        clean(title),
        clean(HOSTILE[2]),
    ]
    assert parsed.root.find("svg").find("title").text == clean(f"Funnel: {title}")
    for table in parsed.root.find_all("table", **{"class": "cf-users"})[:2]:
        rows = table.find("tbody").find_all("tr")
        assert {r.attrs["data-user"] for r in rows} == {clean(uid) for uid in HOSTILE}
        for row in rows:
            uid = next(u for u in HOSTILE if clean(u) == row.attrs["data-user"])
            assert _cells(row)[0] == clean(names[uid])
    failed = parsed.root.find("section", **{"class": "cf-report cf-failures"})
    assert _cells(failed.find("tbody").find("tr")) == [clean(HOSTILE[0]), clean(HOSTILE[4])]
    # The document still has exactly the elements closefunnel wrote, and no more.
    assert {e.tag for e in parsed.elements} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "p", "nav", "ul",
        "li", "a", "main", "section", "h2", "b", "time", "br", "span", "figure", "svg", "line",
        "rect", "text", "figcaption", "div", "table", "caption", "thead", "tbody", "tr", "th",
        "td", "footer",
    }  # fmt: skip


def test_the_notebook_view_is_a_bounded_fragment_with_scoped_styles(fetched: Fetched) -> None:
    for report in (fetched.comparison, fetched.totals):
        text = report._repr_html_()
        parsed = parse(text)
        assert_loads_nothing(parsed)
        assert parsed.doctype is None
        assert [e.tag for e in parsed.root.children] == ["div"]
        assert parsed.root.children[0].attrs["class"] == "closefunnel"
        assert not {"html", "head", "body"} & {e.tag for e in parsed.elements}
        assert all(
            e.parent is not None and e.parent.tag in ("svg", "rect")
            for e in parsed.root.find_all("title")
        )
        style = parsed.root.find("style").text
        rules = [r.split("{")[0].strip() for r in style.split("}") if r.strip()]
        for selectors in rules:
            for selector in selectors.split(","):
                assert selector.strip().startswith(".closefunnel "), selector
        assert list(_metric_rows(parsed)) == list(METRIC_LABELS)
    comparison = fetched.comparison._repr_html_()
    assert "Funnel comparison: base vs last month, last year" in comparison
    assert "Nov 1\u201330, 2026" in comparison


def _many_users(count: int, scale: int = 1) -> cf.FunnelTotals:
    data = [
        {**metrics(), "value_total_won": (n * 7919 % count) * scale, "user_id": f"user_{n:05}"}
        for n in range(count)
    ]
    return cf.FunnelTotals.from_json(orjson.dumps({"aggregations": metrics(), "data": data}))


@pytest.mark.parametrize("kind", ["totals", "comparison"])
def test_the_notebook_shows_the_top_users_and_says_how_many_more(kind: str) -> None:
    totals = _many_users(10_000)
    report: _html.Report = (
        totals
        if kind == "totals"
        else cf.merge_comparison(totals, [("last-month", _many_users(10_000, 2))])
    )
    parsed = parse(report._repr_html_())
    rows = parsed.root.find("table", **{"class": "cf-users"}).find("tbody").find_all("tr")
    assert len(rows) == _html.NOTEBOOK_USERS == 25
    by_value = sorted(totals.data, key=lambda r: -r.value_total_won)
    assert [r.attrs["data-user"] for r in rows] == [r.user_id for r in by_value[:25]]
    more = parsed.root.find("p", **{"class": "cf-more"}).text
    assert more == "Showing the top 25 of 10,000 users by value won; 9,975 more not shown."


def test_the_standalone_report_lists_every_user() -> None:
    parsed = parse(_html.report_document([("p", _many_users(300))], title="t"))
    rows = parsed.root.find("table", **{"class": "cf-users"}).find("tbody").find_all("tr")
    assert len(rows) == 300
    assert not parsed.root.find_all("p", **{"class": "cf-more"})


def test_absurd_numbers_draw_empty_bars_and_dashes() -> None:
    """A hostile server's count beyond float range, a negative one: no crash, no NaN."""
    totals = hostile_totals()
    assert totals.aggregations is not None
    odd = attrs.evolve(totals.aggregations, count=10**400, count_total_complete=-5)
    parsed = parse(
        _html.report_document([("p", attrs.evolve(totals, aggregations=odd))], title="t")
    )
    svg = parsed.root.find("svg", **{"class": "cf-chart"})
    heights = [float(r.attrs["height"]) for r in svg.find_all("rect")]
    assert heights == [0.0, 0.0, PLOT]  # only the won bar is drawn, at full height
    numbers = [t.text for t in svg.find_all("text") if t.attrs["font-size"] == "12"]
    assert numbers == [_display.NONE, "-5", "2"]


def test_a_report_without_aggregations_or_dates_still_renders() -> None:
    """A per-user CSV report decoded from a file: no metrics table, no chart, no dates."""
    csv_report = cf.FunnelTotals.from_csv(hostile_totals().to_csv())
    parsed = parse(_html.report_document([("p", csv_report)], title="t"))
    assert_loads_nothing(parsed)
    assert not parsed.root.find_all("table", **{"class": "cf-metrics"})
    assert not parsed.root.find_all("svg", **{"class": "cf-chart"})
    assert "dates not recorded" in parsed.root.find("p", **{"class": "cf-periods"}).text
    assert len(parsed.root.find("table", **{"class": "cf-users"}).find_all("tr")) == 1 + len(
        HOSTILE
    )


def test_an_empty_report_says_so() -> None:
    empty = cf.FunnelTotals.from_json(orjson.dumps({"aggregations": metrics(0), "data": []}))
    for report in (empty, cf.merge_comparison(empty, [("last-month", empty)])):
        parsed = parse(_html.report_document([("p", report)], title="t"))
        body = parsed.root.find("table", **{"class": "cf-users"}).find("tbody")
        assert body.text == "no opportunities in scope"
        cell = body.find("td")
        assert int(cell.attrs["colspan"]) == len(
            parsed.root.find("table", **{"class": "cf-users"}).find("thead").find_all("th")
        )


def test_a_date_range_base_is_labelled_by_its_dates() -> None:
    rng = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC))
    base = attrs.evolve(hostile_totals(), range=rng)
    compared = attrs.evolve(
        hostile_totals(2),
        range=cf.DateRange(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 19, tzinfo=UTC)),
    )
    parsed = parse(
        _html.report_document(
            [("p", cf.merge_comparison(base, [("same-days-last-month", compared)]))], title="t"
        )
    )
    heads = [
        th.text
        for th in parsed.root.find("table", **{"class": "cf-metrics"}).find("thead").find_all("th")
    ]
    assert heads[:3] == ["Metric", "Nov 1\u201318, 2026", "same days last monthOct 1\u201318, 2026"]
    line = parsed.root.find("p", **{"class": "cf-periods"}).text
    assert line == "Nov 1\u201318, 2026 vs same days last month Oct 1\u201318, 2026"


def test_the_cli_and_the_html_share_one_set_of_formats() -> None:
    for name in (
        "METRIC_LABELS",
        "LOWER_IS_BETTER",
        "format_value",
        "format_delta",
        "range_label",
        "range_text",
        "clean",
    ):
        assert getattr(_render, name) is getattr(_display, name)
    assert (
        _render.change_text("average_time_to_win", -0.1).plain
        == _display.change_mark("average_time_to_win", -0.1).text
    )


@pytest.mark.slow  # a fresh interpreter: over a second on a loaded machine
def test_the_core_renderer_imports_neither_rich_nor_the_cli() -> None:
    code = (
        "import sys, closefunnel, closefunnel._html\n"
        "found = ('rich', 'closefunnel.cli')\n"
        "bad = sorted(m for m in sys.modules if m in found or m.startswith(found))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
