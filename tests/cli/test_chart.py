"""
The funnel bar chart in the terminal: drawn for people, never into a pipe, off with
``--no-chart``; bars to one scale, the base and every compared period side by side.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from rich.console import Console as RichConsole

import closefunnel as cf
from closefunnel._display import FUNNEL_STAGES, METRIC_LABELS, NONE
from closefunnel.cli import _render
from closefunnel.cli._chart import FunnelChart, bar

from .conftest import Run

Cli = Callable[..., Run]
Library = Callable[[Callable[[cf.Client], Any]], Any]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def _eighths(drawn: str) -> int:
    """How long a drawn bar is, in eighths of a cell."""
    return sum(8 if ch == "█" else _EIGHTHS.index(ch) for ch in drawn)


def _chart_lines(out: str, title_part: str = ": funnel") -> list[list[str]]:
    """Each chart in *out*: its title line and the lines under it up to the blank one."""
    lines = _plain(out).splitlines()
    charts = []
    for index, line in enumerate(lines):
        if line.rstrip().endswith(title_part):
            block = []
            for following in lines[index:]:
                if not following.strip():
                    break
                block.append(following)
            charts.append(block)
    return charts


def _pipeline(library: Library) -> cf.Pipeline:
    pipelines: list[cf.Pipeline] = library(lambda c: c.pipelines())
    return pipelines[0]


def test_a_terminal_gets_the_funnel_of_every_period_side_by_side(
    cli: Cli, library: Library
) -> None:
    pipeline = _pipeline(library)
    args = (
        "totals",
        "--pipeline",
        pipeline.id,
        "--compare",
        "last-month",
        "--compare",
        "last-year",
    )
    run = cli(*args, terminal=True)
    assert run.code == 0, run.err
    query = cf.FunnelQuery(pipeline=pipeline.id, report_range="this-month")
    expected: cf.FunnelComparison = library(
        lambda c: c.compare_totals(query, "last-month", "last-year")
    )
    [chart] = _chart_lines(run.out)
    assert chart[0].strip() == f"{pipeline.name} · active stage cohort: funnel"
    assert chart[1].split() == ["this", "month", "last", "month", "last", "year"]
    funnels = [expected.base.aggregations, *(p.totals.aggregations for p in expected.comparisons)]
    values = [[getattr(f, stage) for stage in FUNNEL_STAGES] for f in funnels]
    top = max(v for row in values for v in row)
    drawn: dict[tuple[int, int], int] = {}
    for s, (stage, line) in enumerate(zip(FUNNEL_STAGES, chart[2:], strict=True)):
        assert line.startswith(METRIC_LABELS[stage])
        # Each period's cell: its bar, then its number.
        cells = re.findall(r"([█▏▎▍▌▋▊▉]*) ([0-9,]+)", line[len(METRIC_LABELS[stage]) :])
        assert [number for _, number in cells] == [
            _render.format_value(stage, row[s]) for row in values
        ]
        for p, (bar_text, _) in enumerate(cells):
            drawn[s, p] = _eighths(bar_text)
    # One scale: the longest bar is the biggest number; every bar is to scale (± 1/8 cell).
    longest = max(drawn.values())
    assert longest == drawn[max(drawn, key=lambda k: values[k[1]][k[0]])]
    for (s, p), eighths in drawn.items():
        assert eighths == pytest.approx(longest * values[p][s] / top, abs=1)
    # After the metrics table, before the per-user table.
    text = _plain(run.out)
    assert text.index("Velocity / day") < text.index(": funnel") < text.index(": by user")


def test_no_chart_into_a_pipe_or_with_no_chart(cli: Cli, library: Library) -> None:
    pipeline = _pipeline(library)
    args = ("totals", "--pipeline", pipeline.id, "--compare", "last-month")
    piped = cli(*args)
    off = cli(*args, "--no-chart", terminal=True)
    piped_off = cli(*args, "--no-chart")
    for run in (piped, off, piped_off):
        assert run.code == 0, run.err
        assert ": funnel" not in run.out
        assert "█" not in run.out
    assert piped.out == piped_off.out  # off a terminal the option changes nothing
    assert "Velocity / day" in _plain(off.out)
    assert ": by user" in _plain(off.out)


def test_one_report_gets_a_one_period_chart(cli: Cli, library: Library) -> None:
    pipeline = _pipeline(library)
    run = cli("totals", "--pipeline", pipeline.id, terminal=True)
    assert run.code == 0, run.err
    [chart] = _chart_lines(run.out)
    assert chart[1].split() == ["this", "month"]
    assert [line.split()[0] for line in chart[2:]] == ["Opportunities", "Completed", "Won"]
    assert "█" in chart[2]


def test_bulk_draws_one_chart_per_pipeline_on_a_terminal_only(cli: Cli, library: Library) -> None:
    pipelines: list[cf.Pipeline] = library(lambda c: c.pipelines())
    args = ("bulk", "--all-pipelines", "--compare", "last-month")
    run = cli(*args, terminal=True)
    assert run.code == 0, run.err
    charts = _chart_lines(run.out)
    assert [c[0].strip() for c in charts] == [
        f"{p.name} · active stage cohort: funnel" for p in pipelines
    ]
    for args_off, terminal in ((args, False), ((*args, "--no-chart"), True)):
        quiet = cli(*args_off, terminal=terminal)
        assert quiet.code == 0
        assert not _chart_lines(quiet.out)


def test_other_formats_take_no_chart(cli: Cli, library: Library) -> None:
    pipeline = _pipeline(library)
    for fmt in ("json", "csv", "html"):
        run = cli("totals", "--pipeline", pipeline.id, "--format", fmt, "--no-chart", terminal=True)
        assert run.code == 0, run.err
        assert "█" not in run.out


def test_bars() -> None:
    assert bar(1.0, 4) == "████"
    assert bar(0.5, 3) == "█▌"
    assert bar(1 / 16, 2) == "▏"
    assert bar(0.0, 10) == ""
    assert bar(-1.0, 10) == ""  # clamped, never an error
    assert bar(7.0, 3) == "███"


def _render_chart(chart: FunnelChart, width: int) -> str:
    out = io.StringIO()
    RichConsole(file=out, width=width, color_system=None).print(chart)
    return out.getvalue()


def test_the_chart_fits_the_width_it_is_given() -> None:
    metrics = cf.FunnelTotals.from_json(
        '{"aggregations": {"average_time_to_win": null, '
        '"average_value_annualized_per_won_opportunity": 0, "count": 1760, '
        '"count_total_complete": 590, "count_total_won": 270, "count_win_rate": 0.45, '
        '"sales_velocity": 0, "value_total_complete": 0, "value_total_won": 0, '
        '"value_win_rate": 0}, "data": []}'
    ).aggregations
    assert metrics is not None
    for periods in (1, 3, 6):
        chart = FunnelChart("t", [(f"period {n}", metrics) for n in range(periods)])
        widths = []
        for width in (60, 100, 200):
            lines = _render_chart(chart, width).splitlines()
            assert max(len(line) for line in lines) <= width
            if width >= 14 + periods * 12:  # room for every column at the narrowest bar
                # Every period has the same funnel: one bar length per period on a row.
                opportunities = re.findall(r"[█▏▎▍▌▋▊▉]+", lines[2])
                assert len(opportunities) == periods
                assert len({len(b) for b in opportunities}) == 1
                widths.append(len(opportunities[0]))
        # Bars grow with the terminal, up to a cap: a chart is read at a glance.
        assert widths == sorted(widths)
        assert all(4 <= w <= 40 for w in widths)
    assert widths[-1] > widths[0]
    one = FunnelChart("t", [("base", metrics)])
    assert len(re.findall("█", _render_chart(one, 200).splitlines()[2])) == 40


def test_absurd_numbers_and_a_hostile_title_are_drawn_safely() -> None:
    metrics = cf.FunnelTotals.from_json(
        '{"aggregations": {"average_time_to_win": null, '
        '"average_value_annualized_per_won_opportunity": 0, "count": 5, '
        '"count_total_complete": 0, "count_total_won": 0, "count_win_rate": 0, '
        '"sales_velocity": 0, "value_total_complete": 0, "value_total_won": 0, '
        '"value_win_rate": 0}, "data": []}'
    ).aggregations
    assert metrics is not None
    odd = attrs.evolve(metrics, count=10**400, count_total_complete=-3)
    text = _render_chart(FunnelChart("Ann [/] \x1b[2J \u202e", [("base", odd)]), 80)
    assert "Ann [/] \ufffd[2J \ufffd" in text
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[2].split() == ["Opportunities", NONE]
    assert lines[3].split() == ["Completed", "-3"]
    assert lines[4].split() == ["Won", "0"]
