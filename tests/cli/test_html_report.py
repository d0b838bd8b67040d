"""
``closefunnel totals|bulk --format html``: one self-contained file with the numbers the
library returns for the same query, names for ids, and each period's resolved dates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import closefunnel as cf
from closefunnel._display import METRIC_LABELS, range_label
from closefunnel.cli import _render
from tests.report.html_check import Element, assert_loads_nothing, parse

from .conftest import Run

Cli = Callable[..., Run]
Library = Callable[[Callable[[cf.Client], Any]], Any]


def _cells(row: Element) -> list[str]:
    return [cell.text for cell in row.children if cell.tag in ("th", "td")]


def test_totals_writes_one_self_contained_report(cli: Cli, library: Library) -> None:
    pipelines: list[cf.Pipeline] = library(lambda c: c.pipelines())
    users: list[cf.User] = library(lambda c: c.users())
    pipeline = pipelines[0]
    run = cli("totals", "--pipeline", pipeline.id, "--compare", "last-month", "--format", "html")
    assert run.code == 0, run.err
    assert run.err == ""
    query = cf.FunnelQuery(pipeline=pipeline.id, report_range="this-month")
    expected: cf.FunnelComparison = library(lambda c: c.compare_totals(query, "last-month"))
    assert run.out.startswith("<!DOCTYPE html>\n")
    assert "//" not in run.out
    parsed = parse(run.out)
    assert_loads_nothing(parsed)
    title = f"{pipeline.name} · active stage cohort"
    assert parsed.root.find("title").text == f"{title}: this month vs last month"
    assert [h.text for h in parsed.root.find_all("h2")] == [title]
    rows = {
        r.attrs["data-metric"]: r
        for r in parsed.root.find("table", **{"class": "cf-metrics"}).find_all("tr")
        if "data-metric" in r.attrs
    }
    assert list(rows) == list(METRIC_LABELS)
    period = expected.comparisons[0]
    for metric, row in rows.items():
        d = getattr(period.aggregations, metric)
        assert _cells(row) == [
            METRIC_LABELS[metric],
            _render.format_value(metric, d.base),
            _render.format_value(metric, d.compared),
            _render.format_delta(metric, d.delta),
            _render.change_text(metric, d.change).plain,
        ]
    assert expected.base_range is not None
    assert period.compared_range is not None
    times = parsed.root.find("p", **{"class": "cf-periods"}).find_all("time")
    assert [t.text for t in times] == [
        range_label(expected.base_range),
        range_label(period.compared_range),
    ]
    names = {u.id: u.name for u in users}
    shown = parsed.root.find("table", **{"class": "cf-users"}).find("tbody").find_all("tr")
    assert {r.attrs["data-user"] for r in shown} == {r.user_id for r in expected.base.data}
    for row in shown:
        assert _cells(row)[0] == names[row.attrs["data-user"]]


def test_bulk_writes_every_pipeline_into_one_file(cli: Cli, library: Library) -> None:
    pipelines: list[cf.Pipeline] = library(lambda c: c.pipelines())
    run = cli(
        "bulk",
        "--all-pipelines",
        "--range",
        "this-quarter",
        "--compare",
        "last-quarter",
        "--format",
        "html",
    )
    assert run.code == 0, run.err
    assert f"{len(pipelines)} of {len(pipelines)} reports fetched" in run.err
    parsed = parse(run.out)
    assert_loads_nothing(parsed)
    assert parsed.root.find("title").text == "Funnel reports: this quarter vs last quarter"
    titles = [f"{p.name} · active stage cohort" for p in pipelines]
    assert [h.text for h in parsed.root.find_all("h2")] == titles
    links = parsed.root.find("nav").find_all("a")
    sections = parsed.root.find_all("section")
    assert [a.attrs["href"] for a in links] == [f"#{s.attrs['id']}" for s in sections]
    assert [a.text for a in links] == titles
    assert len(parsed.root.find_all("svg", **{"class": "cf-chart"})) == len(pipelines)


def test_plain_totals_as_html(cli: Cli, library: Library) -> None:
    pipeline: cf.Pipeline = library(lambda c: c.pipelines())[0]
    run = cli("totals", "--pipeline", pipeline.id, "--range", "last-week", "--format", "html")
    assert run.code == 0, run.err
    parsed = parse(run.out)
    assert_loads_nothing(parsed)
    query = cf.FunnelQuery(pipeline=pipeline.id, report_range="last-week")
    expected: cf.FunnelTotals = library(lambda c: c.funnel_totals(query))
    assert expected.aggregations is not None
    row = next(
        r
        for r in parsed.root.find("table", **{"class": "cf-metrics"}).find_all("tr")
        if r.attrs.get("data-metric") == "value_total_won"
    )
    assert _cells(row) == [
        "Value won",
        _render.format_value("value_total_won", expected.aggregations.value_total_won),
    ]
    assert expected.range is not None
    assert parsed.root.find("time").text == range_label(expected.range)
