"""
Funnel reports as HTML: a notebook's view of a report, and a standalone report file.

One renderer for both, so a report reads the same in a notebook cell, in a mailed file and
in the terminal: the CLI's tables (labels, formats, Δ, ▲/▼ with "down is good" for time
to win, all from :mod:`closefunnel._display`), the resolved dates of each period, a funnel
chart (opportunities → completed → won, every period side by side) as inline SVG, and the
per-user table.

The file is self-contained on purpose: it is mailed and archived, and must look the same
offline in ten years. So there is no script, no external reference of any kind (styles
inline, charts inline SVG, system fonts), and a Content-Security-Policy that forbids
loading anything should a reader's tool ever add a reference.

This is also a trust boundary. User ids and names, pipeline names and error messages are
typed by strangers; each goes through :func:`_text` (control and bidi characters
replaced, then ``html.escape(..., quote=True)``), so ``<script>``, ``"onload=`` or
``</svg>`` in a name is shown as those characters and never becomes markup.

The renderer knows reports only by their shape (the protocols below), not by class:
:class:`~closefunnel._models.FunnelTotals` and
:class:`~closefunnel._compare.FunnelComparison` render themselves through it in
``_repr_html_``, so it must not import them back.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Final

from closefunnel._display import (
    FUNNEL_STAGES,
    LOWER_IS_BETTER,
    METRIC_LABELS,
    NONE,
    Number,
    bar_length,
    change_mark,
    clean,
    format_delta,
    format_value,
    range_label,
    sort_key,
)
from closefunnel._query import DateRange, format_instant
from closefunnel._shapes import ComparisonLike, DeltaLike, PeriodLike, TotalsLike, UserRow
from closefunnel._version import __version__

__all__ = [
    "NOTEBOOK_USERS",
    "ComparisonLike",
    "DeltaLike",
    "PeriodLike",
    "Report",
    "TotalsLike",
    "UserRow",
    "notebook_html",
    "report_document",
    "report_section",
]

#: How many users a notebook's per-user table shows (the top ones by value won); the
#: rest are counted under the table. A notebook output is read on screen: 10,000 rows
#: would freeze the front end and bury the totals.
NOTEBOOK_USERS: Final = 25

#: Bar colours: the base period, then each compared period (mid tones, legible on light
#: and dark backgrounds alike, distinct for the common colour-vision deficiencies).
_PALETTE: Final = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f", "#76b7b2")

#: The per-user table's columns: a single report's, and a comparison's (which adds the
#: change in value won per compared period), as the CLI shows them.
_TOTALS_USER_METRICS: Final = (
    "count",
    "count_total_won",
    "count_win_rate",
    "value_total_won",
    "average_time_to_win",
)
_COMPARISON_USER_METRICS: Final = ("count", "count_total_won", "count_win_rate", "value_total_won")


# -- what a report looks like to the renderer ------------------------------------------------


Report = TotalsLike | ComparisonLike


# -- text ------------------------------------------------------------------------------------


def _text(value: str) -> str:
    """Text for HTML content or a quoted attribute: cleaned, then every markup character
    (``& < > " '``) escaped."""
    return html.escape(clean(value), quote=True)


def _value(row: object, metric: str) -> Number | None:
    """One metric's value from a report's or a user's metrics."""
    value: Number | None = getattr(row, metric)
    return value


def _delta(row: object, metric: str) -> DeltaLike:
    """One metric's Delta from a compared period's (or a user's) deltas."""
    value: DeltaLike = getattr(row, metric)
    return value


# -- periods ---------------------------------------------------------------------------------


def _dates(rng: DateRange | None) -> str:
    """The resolved dates of a period, with the exact half-open range on hover."""
    if rng is None:
        return '<span class="cf-none">dates not recorded</span>'
    exact = f"[{format_instant(rng.start)}, {format_instant(rng.end)})"
    return (
        f'<time datetime="{_text(rng.start.isoformat())}" title="{_text(exact)}">'
        f"{_text(range_label(rng))}</time>"
    )


def _heading(label: str, rng: DateRange | None) -> str:
    """A period's column heading: its name and, under it, the dates it covered."""
    if rng is not None and label == range_label(rng):
        return _dates(rng)
    return f'{_text(label)}<br><span class="cf-dates">{_dates(rng)}</span>'


def _base_label(base_label: str | None, rng: DateRange | None) -> str:
    if base_label is not None:
        return base_label
    return range_label(rng) if rng is not None else "base"


def _periods_line(labels: Sequence[str], ranges: Sequence[DateRange | None]) -> str:
    """Each period by name and dates ("this month Nov 1-30, 2026 vs ..."); a period
    given as dates is named by its dates alone."""
    parts = [
        f"<b>{_dates(rng)}</b>"
        if rng is not None and label == range_label(rng)
        else f"<b>{_text(label)}</b> {_dates(rng)}"
        for label, rng in zip(labels, ranges, strict=True)
    ]
    return '<p class="cf-periods">' + " vs ".join(parts) + "</p>"


# -- the chart -------------------------------------------------------------------------------

_WIDTH: Final = 640
_HEIGHT: Final = 220
_TOP: Final = 22  # room for the value over the tallest bar
_BOTTOM: Final = 28  # room for the stage names
_SIDE: Final = 12


def _chart(title: str, labels: Sequence[str], funnels: Sequence[object]) -> str:
    """
    Inline SVG: for each stage (opportunities, completed, won) one bar per period, the
    base first, all on one scale, each with its number over it and a tooltip.

    Fills are attributes (they print without "background graphics"); text is
    ``currentColor``, so it follows the page's light or dark scheme.
    """
    stages = [[_value(f, stage) for stage in FUNNEL_STAGES] for f in funnels]
    top = max((bar_length(v) for values in stages for v in values), default=0.0) or 1.0
    plot = _HEIGHT - _TOP - _BOTTOM
    group = (_WIDTH - 2 * _SIDE) / len(FUNNEL_STAGES)
    bar = min(56.0, group * 0.8 / max(1, len(funnels)))
    parts = [
        f'<svg class="cf-chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" '
        f'height="{_HEIGHT}" role="img" aria-label="{_text(title)}">',
        f"<title>{_text(title)}</title>",
        f'<line x1="{_SIDE}" y1="{_TOP + plot}" x2="{_WIDTH - _SIDE}" y2="{_TOP + plot}" '
        'stroke="currentColor" stroke-opacity="0.4"/>',
    ]
    for s, stage in enumerate(FUNNEL_STAGES):
        left = _SIDE + s * group + (group - bar * len(funnels)) / 2
        for p, values in enumerate(stages):
            value = values[s]
            height = plot * bar_length(value) / top
            x, y = left + p * bar, _TOP + plot - height
            shown = format_value(stage, value)
            share = ""
            opportunities = bar_length(values[0])
            if s and opportunities:
                share = f" ({bar_length(value) / opportunities:.1%} of opportunities)"
            tip = f"{labels[p]}: {METRIC_LABELS[stage]} {shown}{share}"
            parts.append(
                f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar - 4:.1f}" height="{height:.1f}" '
                f'fill="{_PALETTE[p % len(_PALETTE)]}" data-stage="{stage}" data-period="{p}">'
                f"<title>{_text(tip)}</title></rect>",
            )
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" '
                f'font-size="12" fill="currentColor">{_text(shown)}</text>'
            )
        parts.append(
            f'<text x="{_SIDE + s * group + group / 2:.1f}" y="{_HEIGHT - 8}" '
            f'text-anchor="middle" font-size="13" fill="currentColor">'
            f"{_text(METRIC_LABELS[stage])}</text>"
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="cf-key"><svg width="12" height="12" aria-hidden="true">'
        f'<rect width="12" height="12" fill="{_PALETTE[p % len(_PALETTE)]}"/></svg> '
        f"{_text(label)}</span>"
        for p, label in enumerate(labels)
    )
    return (
        '<figure class="cf-funnel">'
        + "".join(parts)
        + f"<figcaption>{legend}</figcaption></figure>"
    )


# -- tables ----------------------------------------------------------------------------------


def _change_cell(metric: str, change: float | None) -> str:
    mark = change_mark(metric, change)
    return f'<td class="cf-{mark.tone}">{_text(mark.text)}</td>'


def _row_header(metric: str) -> str:
    hint = ' title="lower is better"' if metric in LOWER_IS_BETTER else ""
    return f'<th scope="row"{hint}>{_text(METRIC_LABELS[metric])}</th>'


def _name(user_id: str, names: Mapping[str, str]) -> str:
    return names.get(user_id, user_id)


def _more(shown: int, total: int) -> str:
    if shown >= total:
        return ""
    return (
        f'<p class="cf-more">Showing the top {shown:,} of {total:,} users by value won; '
        f"{total - shown:,} more not shown.</p>"
    )


def _open_table(kind: str, caption: str, head: Sequence[str]) -> str:
    """A table's start (in a box that scrolls sideways on a phone) up to its body;
    *caption* is escaped here, *head* cells are markup already."""
    return (
        f'<div class="cf-scroll"><table class="cf-{kind}"><caption>{_text(caption)}</caption>'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>"
    )


_CLOSE_TABLE: Final = "</tbody></table></div>"


def _column(label: str, *, css: str = "") -> str:
    """A column heading of our own text (escaped all the same)."""
    cls = f' class="{css}"' if css else ""
    return f'<th scope="col"{cls}>{_text(label)}</th>'


def _user_row(user_id: str, names: Mapping[str, str], cells: Sequence[str]) -> str:
    return (
        f'<tr data-user="{_text(user_id)}"><th scope="row">{_text(_name(user_id, names))}</th>'
        f"{''.join(cells)}</tr>"
    )


def _users_table_end(columns: int, *, shown: int, total: int) -> str:
    """A per-user table's end: a row saying it is empty, or how many users were cut."""
    return (_empty_row(columns) if not total else "") + _CLOSE_TABLE + _more(shown, total)


def _empty_row(columns: int) -> str:
    return (
        f'<tr><td class="cf-none cf-empty" colspan="{columns}">no opportunities in scope</td></tr>'
    )


def _cell(text: str, *, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{_text(text)}</td>"


def _totals_tables(
    totals: TotalsLike,
    *,
    label: str,
    names: Mapping[str, str],
    max_users: int | None,
) -> str:
    out: list[str] = []
    if totals.aggregations is not None:
        head = [_column("Metric"), f'<th scope="col">{_heading(label, totals.range)}</th>']
        out.append(_open_table("metrics", "All users", head))
        for metric in METRIC_LABELS:
            value = format_value(metric, _value(totals.aggregations, metric))
            out.append(f'<tr data-metric="{metric}">{_row_header(metric)}{_cell(value)}</tr>')
        out.append(_CLOSE_TABLE)
    rows = sorted(
        totals.data,
        key=lambda row: sort_key(_value(row, "value_total_won"), _name(row.user_id, names)),
    )
    shown = rows if max_users is None else rows[:max_users]
    head = [_column("User"), *(_column(METRIC_LABELS[m]) for m in _TOTALS_USER_METRICS)]
    out.append(_open_table("users", "By user", head))
    for row in shown:
        cells = [_cell(format_value(m, _value(row, m))) for m in _TOTALS_USER_METRICS]
        out.append(_user_row(row.user_id, names, cells))
    out.append(_users_table_end(len(head), shown=len(shown), total=len(rows)))
    return "".join(out)


def _comparison_tables(
    comparison: ComparisonLike,
    *,
    labels: Sequence[str],
    names: Mapping[str, str],
    max_users: int | None,
) -> str:
    periods = comparison.comparisons
    ranges = [comparison.base.range, *(p.compared_range for p in periods)]
    out: list[str] = []
    if comparison.base.aggregations is not None:
        head = [
            _column("Metric"),
            f'<th scope="col" class="cf-base">{_heading(labels[0], ranges[0])}</th>',
        ]
        for label, rng in zip(labels[1:], ranges[1:], strict=True):
            head += [f'<th scope="col">{_heading(label, rng)}</th>', _column("Δ"), _column("%")]
        out.append(_open_table("metrics", "All users", head))
        for metric in METRIC_LABELS:
            base = format_value(metric, _value(comparison.base.aggregations, metric))
            cells = [_cell(base, css="cf-base")]
            for period in periods:
                if period.aggregations is None:
                    cells += [_cell(NONE), _cell(NONE), _cell(NONE, css="cf-none")]
                    continue
                d = _delta(period.aggregations, metric)
                cells += [
                    _cell(format_value(metric, d.compared)),
                    _cell(format_delta(metric, d.delta)),
                    _change_cell(metric, d.change),
                ]
            out.append(f'<tr data-metric="{metric}">{_row_header(metric)}{"".join(cells)}</tr>')
        out.append(_CLOSE_TABLE)
    out.append(_users_comparison(comparison, labels, names, max_users))
    return "".join(out)


def _users_comparison(
    comparison: ComparisonLike,
    labels: Sequence[str],
    names: Mapping[str, str],
    max_users: int | None,
) -> str:
    # Every user seen in any period, base users first (the CLI's order and sort).
    base_rows = {row.user_id: row for row in comparison.base.data}
    by_period = [{row.user_id: row for row in p.users} for p in comparison.comparisons]
    order: dict[str, None] = dict.fromkeys(base_rows)
    for rows in by_period:
        order.update(dict.fromkeys(rows))

    def key(user_id: str) -> tuple[int, float, str]:
        row = base_rows.get(user_id)
        value = None if row is None else _value(row, "value_total_won")
        return sort_key(value, _name(user_id, names))

    ids = sorted(order, key=key)
    shown = ids if max_users is None else ids[:max_users]
    head = [_column("User"), *(_column(METRIC_LABELS[m]) for m in _COMPARISON_USER_METRICS)]
    head += [_column(f"Value won vs {label}") for label in labels[1:]]
    out = [_open_table("users", f"By user, {labels[0]}", head)]
    for user_id in shown:
        row = base_rows.get(user_id)
        cells = [
            _cell(format_value(m, None if row is None else _value(row, m)))
            for m in _COMPARISON_USER_METRICS
        ]
        for rows in by_period:
            deltas = rows.get(user_id)
            change = None if deltas is None else _delta(deltas, "value_total_won").change
            cells.append(_change_cell("value_total_won", change))
        out.append(_user_row(user_id, names, cells))
    out.append(_users_table_end(len(head), shown=len(shown), total=len(ids)))
    return "".join(out)


# -- sections and documents ------------------------------------------------------------------


def report_section(
    report: Report,
    *,
    title: str,
    base_label: str | None = None,
    names: Mapping[str, str] | None = None,
    max_users: int | None = None,
    heading: str = "h2",
    anchor: str | None = None,
) -> str:
    """
    One report (a FunnelTotals or a FunnelComparison) as an HTML ``<section>``.

    *title* heads it (a pipeline name: escaped here, as everything from a response is);
    *base_label* names the base period (default: its resolved dates); *names* maps user
    ids to names for the per-user table, which lists every user unless *max_users* bounds
    it (the count of the others is said under it).
    """
    names = names or {}
    if isinstance(report, ComparisonLike):
        base = report.base
        labels = [
            _base_label(base_label, base.range),
            *(range_label(p.compared) for p in report.comparisons),
        ]
        ranges = [base.range, *(p.compared_range for p in report.comparisons)]
        funnels = [base.aggregations, *(p.totals.aggregations for p in report.comparisons)]
        tables = _comparison_tables(report, labels=labels, names=names, max_users=max_users)
    else:
        labels = [_base_label(base_label, report.range)]
        ranges = [report.range]
        funnels = [report.aggregations]
        tables = _totals_tables(report, label=labels[0], names=names, max_users=max_users)
    ident = f' id="{_text(anchor)}"' if anchor is not None else ""
    parts = [f'<section class="cf-report"{ident}><{heading}>{_text(title)}</{heading}>']
    parts.append(_periods_line(labels, ranges))
    if all(funnel is not None for funnel in funnels):
        parts.append(_chart(f"Funnel: {title}", labels, funnels))
    parts.append(tables)
    if len(labels) > 1:
        parts.append(
            '<p class="cf-note">Δ is this period less the compared one; ▲/▼ in '
            '<span class="cf-good">green</span> is better, in <span class="cf-bad">red</span> '
            "worse (for Avg time to win, down is better).</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _failures_section(failures: Sequence[tuple[str, str]]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{_text(what)}</th><td class="cf-bad cf-error">{_text(why)}</td></tr>'
        for what, why in failures
    )
    return (
        '<section class="cf-report cf-failures"><h2>Failed</h2><table class="cf-users">'
        '<thead><tr><th scope="col">Query</th><th scope="col">Error</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


#: Styles for the report's own elements, all under ``.closefunnel`` so that in a notebook
#: (where the fragment shares a page with everything else) they style nothing else.
#: Colours come from variables the document sets per scheme, with fallbacks that read on
#: a light or a dark notebook alike.
_REPORT_CSS: Final = """
.closefunnel table { border-collapse: collapse; font-variant-numeric: tabular-nums;
  margin: 0.5rem 0 1rem; }
.closefunnel caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
.closefunnel th, .closefunnel td { padding: 0.2rem 0.6rem;
  border-bottom: 1px solid var(--cf-line, rgba(127, 127, 127, 0.3)); vertical-align: bottom; }
.closefunnel thead th { text-align: right; font-weight: 600; }
.closefunnel thead th:first-child, .closefunnel tbody th { text-align: left; }
.closefunnel tbody th { font-weight: normal; }
.closefunnel td { text-align: right; white-space: nowrap; }
.closefunnel td.cf-error, .closefunnel td.cf-empty { text-align: left; white-space: normal; }
.closefunnel .cf-scroll { overflow-x: auto; }
.closefunnel .cf-base { font-weight: 600; }
.closefunnel .cf-good { color: var(--cf-good, #2da44e); }
.closefunnel .cf-bad { color: var(--cf-bad, #e5534b); }
.closefunnel .cf-none, .closefunnel .cf-dates, .closefunnel .cf-more,
.closefunnel .cf-note { color: var(--cf-muted, #8b949e); }
.closefunnel .cf-dates { font-weight: normal; font-size: 0.85em; }
.closefunnel .cf-funnel { margin: 0.5rem 0; max-width: 640px; }
.closefunnel .cf-chart { width: 100%; height: auto; display: block; }
.closefunnel .cf-key { margin-right: 1rem; white-space: nowrap; }
.closefunnel figcaption { font-size: 0.9em; }
.closefunnel svg { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
"""

_PAGE_CSS: Final = """
:root { color-scheme: light dark; --cf-fg: #1f2328; --cf-bg: #ffffff; --cf-muted: #59636e;
  --cf-line: #d1d9e0; --cf-good: #1a7f37; --cf-bad: #cf222e; }
@media (prefers-color-scheme: dark) {
  :root { --cf-fg: #e6edf3; --cf-bg: #0d1117; --cf-muted: #9198a1; --cf-line: #3d444d;
    --cf-good: #3fb950; --cf-bad: #f85149; }
}
body { margin: 0 auto; padding: 1.5rem 1rem 3rem; max-width: 1100px; color: var(--cf-fg);
  background: var(--cf-bg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.5rem; margin: 0 0 0.25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.25rem; }
header p, footer { color: var(--cf-muted); }
nav ul { padding-left: 1.2rem; }
a { color: inherit; }
@media print {
  :root { color-scheme: light; --cf-fg: #000000; --cf-bg: #ffffff; --cf-muted: #444444;
    --cf-line: #bbbbbb; --cf-good: #1a7f37; --cf-bad: #cf222e; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav { display: none; }
  .cf-report + .cf-report { break-before: page; }
  .cf-funnel, tr, caption { break-inside: avoid; }
  thead { display: table-header-group; }
}
"""

#: Nothing may load: no script, no frame, no image, no font, no connection; only the
#: inline styles. (Inline SVG is part of the page, not a load.)
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def report_document(
    reports: Sequence[tuple[str, Report]],
    *,
    title: str,
    base_label: str | None = None,
    names: Mapping[str, str] | None = None,
    failures: Sequence[tuple[str, str]] = (),
) -> str:
    """
    A whole HTML5 document: one section per ``(title, report)`` of *reports* (a bulk run
    gives one per pipeline), then the *failures* (``(what, why)`` pairs) if any.

    Self-contained: inline CSS (light and dark via ``prefers-color-scheme``, a print
    style), inline SVG, no script and no external reference.
    """
    sections = [
        report_section(
            report,
            title=heading,
            base_label=base_label,
            names=names,
            anchor=f"report-{index}" if len(reports) > 1 else None,
        )
        for index, (heading, report) in enumerate(reports, 1)
    ]
    if failures:
        sections.append(_failures_section(failures))
    nav = ""
    if len(reports) > 1:
        items = "".join(
            f'<li><a href="#report-{index}">{_text(heading)}</a></li>'
            for index, (heading, _) in enumerate(reports, 1)
        )
        nav = f"<nav><ul>{items}</ul></nav>"
    count = ""  # said when there is more than the one report the title names
    if len(reports) != 1 or failures:
        count = f"{len(reports)} report{'' if len(reports) == 1 else 's'}"
        count += f", {len(failures)} failed" if failures else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="closefunnel {__version__}">\n'
        f"<title>{_text(title)}</title>\n"
        f"<style>{_PAGE_CSS}{_REPORT_CSS}</style>\n"
        '</head>\n<body class="closefunnel">\n'
        f"<header><h1>{_text(title)}</h1>{f'<p>{count}</p>' if count else ''}</header>\n"
        f"{nav}<main>\n" + "\n".join(sections) + "\n</main>\n"
        f"<footer><p>Made by closefunnel {__version__}. Money is annualized; dates are "
        "half-open (the end is not included).</p></footer>\n"
        "</body>\n</html>\n"
    )


def notebook_html(report: Report, *, max_users: int = NOTEBOOK_USERS) -> str:
    """
    The notebook view of *report* (``_repr_html_``): a fragment, not a document, with
    its styles scoped to itself, and the per-user table bounded to *max_users* rows.
    """
    if isinstance(report, ComparisonLike):
        compared = ", ".join(range_label(p.compared) for p in report.comparisons)
        title = f"Funnel comparison: base vs {compared}" if compared else "Funnel comparison"
    else:
        title = "Funnel totals"
    section = report_section(report, title=title, max_users=max_users, heading="h3")
    return f'<div class="closefunnel"><style>{_REPORT_CSS}</style>{section}</div>'
