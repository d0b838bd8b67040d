"""
Turning reports into what people read (rich tables) and what programs read (JSON, CSV).

Kept apart from argument handling so every command formats numbers the same way. Close
sends money as integer cents, durations as seconds and rates as fractions; people read
dollars, days and percentages. Those conversions (and metric labels, change marks, range
labels) live in :mod:`closefunnel._display`, shared with the HTML report, and are
re-exported here; this module adds what is rich's. Machine formats keep Close's units
(cents, seconds, fractions) so nothing is lost or rounded on the way to ``jq`` or a sheet.

This is also the terminal's trust boundary. Pipeline, status and user names are typed by
Close users into their own profiles, and error messages carry what a server (or a proxy
pretending to be Close) sent; none of it may drive the terminal. So every string that
came from a response goes through :func:`plain` (a ``rich.text.Text``, never parsed as
markup, with control characters replaced by U+FFFD), and CSV text cells through
:func:`csv_text` (formula-looking cells neutralized with a leading ``'``, as OWASP says,
because CSV is opened in spreadsheets). A number that is not finite (a delta that
overflowed) prints as an em dash, never as a traceback.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from rich import box
from rich.table import Table
from rich.text import Text

from closefunnel._compare import Delta, FunnelComparison, UserDeltas
from closefunnel._convert import csv_value
from closefunnel._display import (
    LOWER_IS_BETTER,
    METRIC_LABELS,
    Tone,
    change_mark,
    clean,
    format_delta,
    format_value,
    range_label,
    range_text,
    sort_key,
)
from closefunnel._display import NONE as _NONE
from closefunnel._models import FunnelMetrics, FunnelTotals, Pipeline, User
from closefunnel._periods import shift_same_days
from closefunnel._query import DateRange, RangeSpec, format_instant
from closefunnel._records import spreadsheet_text
from closefunnel._vocabulary import METRIC_NAMES, SAME_DAYS_RANGES

__all__ = [
    "CSV_HEADER",
    "LOWER_IS_BETTER",
    "METRIC_LABELS",
    "PIPELINES_CSV_HEADER",
    "USERS_CSV_HEADER",
    "change_text",
    "clean",
    "comparison_csv_rows",
    "comparison_tables",
    "csv_text",
    "failures_table",
    "format_delta",
    "format_value",
    "json_text",
    "length_note",
    "period_label",
    "periods_caption",
    "pipelines_csv_rows",
    "pipelines_table",
    "plain",
    "range_label",
    "range_text",
    "totals_csv_rows",
    "totals_tables",
    "users_csv_rows",
    "users_table",
    "write_csv",
]

#: How each change tone looks in a terminal.
_TONE_STYLES: Final[Mapping[Tone, str]] = {"good": "green", "bad": "red", "none": "dim"}

#: CSV columns: the period, its range as given and as resolved (``start``, ``end``: ISO
#: 8601, half-open), then Close's own per-user CSV columns.
CSV_HEADER: Final = ("period", "range", "start", "end", "user_id", *METRIC_NAMES)

_REPLACEMENT: Final = "\ufffd"
# What orjson leaves raw in JSON strings but a terminal may still act on (it escapes C0).
_JSON_UNSAFE: Final = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# -- text from the server --------------------------------------------------------------------


def plain(text: str, *, style: str = "") -> Text:
    """Server text for a rich table or line: :func:`clean` and never read as markup."""
    return Text(clean(text), style=style)


def csv_text(text: str) -> str:
    """
    A CSV text cell that is safe to open in a spreadsheet.

    Control characters other than tab/CR/LF are replaced; a cell that starts like a
    formula (``=``, ``+``, ``-``, ``@``, tab, CR) gets a leading ``'`` so a spreadsheet
    shows it as text instead of evaluating it. Only text cells go through here: numbers
    are written as numbers, negative ones included.
    """
    # The library's tidy CSV (FunnelComparison.to_csv) applies the same rule: one copy.
    return spreadsheet_text(text)


def json_text(encoded: bytes) -> str:
    """
    JSON text as orjson wrote it, with DEL, C1 controls and bidi overrides written as
    ``\\uXXXX`` escapes: the same JSON to a parser, and inert on a terminal. (orjson
    already escapes C0; outside strings JSON is plain ASCII, so this only touches strings.)
    """
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded.decode())


def change_text(metric: str, change: float | None) -> Text:
    """
    The relative change with a ▲/▼ mark, green when it is good news and red when not.

    For :data:`LOWER_IS_BETTER` metrics (a longer time to win is bad) the colours swap,
    so green always means "better" at a glance.
    """
    mark = change_mark(metric, change)
    return Text(mark.text, style=_TONE_STYLES[mark.tone])


def period_label(spec: RangeSpec | None, resolved: DateRange | None) -> str:
    """
    A period for a table heading: a relative name as itself ("last month"; the table's
    caption gives its dates, see :func:`periods_caption`), a same-days name or a date
    range as the dates it covered ("Oct 1-18, 2026"), a name not resolved as the name.
    """
    if resolved is None or (isinstance(spec, str) and spec not in SAME_DAYS_RANGES):
        return range_label(spec)
    return range_label(resolved)


def periods_caption(periods: Iterable[tuple[RangeSpec | None, DateRange | None]]) -> str | None:
    """
    The dates each relatively named period covered, for under a table: "this month: Dec
    1-31, 2026 · last month: Nov 1-30, 2026". None when no period is named relatively.
    """
    named = [
        f"{range_label(spec)}: {range_label(resolved)}"
        for spec, resolved in periods
        if isinstance(spec, str) and spec not in SAME_DAYS_RANGES and resolved is not None
    ]
    return " \u00b7 ".join(named) or None


def _days(length: timedelta) -> str:
    days = length / timedelta(days=1)
    shown = f"{days:,.0f}" if days.is_integer() else f"{days:,.1f}"
    return f"{shown} day" + ("" if shown == "1" else "s")


def _covered(rng: DateRange, now: datetime) -> DateRange | None:
    """
    The part of *rng* that has begun: up to the end of today in the range's own zone
    (a period in progress counts its current day), or the whole range once it is past.
    None for a range that starts after today.
    """
    zone = rng.start.tzinfo
    local = now.astimezone(zone)
    tomorrow = datetime(local.year, local.month, local.day, tzinfo=zone) + timedelta(days=1)
    end = min(rng.end, tomorrow)
    return DateRange(rng.start, end) if end > rng.start else None


#: Periods whose lengths differ by more than this fraction get a note under the table:
#: whole calendar months (28 to 31 days, up to 9.7 % apart) against each other mostly do
#: not (Feb against Jan does), month-to-date against a whole month does.
LENGTH_TOLERANCE: Final = 0.05


def _instant_option(value: datetime) -> str:
    midnight = value.hour == value.minute == value.second == value.microsecond == 0
    return f"{value:%Y-%m-%d}" if midnight else format_instant(value)


def length_note(
    comparison: FunnelComparison,
    *,
    base_spec: RangeSpec | None,
    now: datetime,
) -> Text | None:
    """
    A note for under the table when the base and a compared period differ in length:
    ``this-month`` on the 1st is one day so far, ``last-month`` thirty, and totals
    (counts, values) grow with the days counted. It says how long each is and points at
    the ``same-days-*`` comparison of the base's days so far. None when they match.

    A period in progress counts up to the end of today (*now* in its own zone): that is
    all Close has to count, whatever the range's end.
    """
    base = comparison.base_range
    covered = None if base is None else _covered(base, now)
    if base is None or covered is None:
        return None
    base_length = covered.end - covered.start
    lines: list[str] = []
    pointers: dict[str, None] = {}  # same-days names that land on a mismatched period
    point = False
    for period in comparison.comparisons:
        compared = period.compared_range
        seen = None if compared is None else _covered(compared, now)
        if compared is None or seen is None:
            continue
        length = seen.end - seen.start
        if abs(length - base_length) <= LENGTH_TOLERANCE * max(length, base_length):
            continue
        named = isinstance(period.compared, str)
        name = f"{range_label(period.compared)} " if named else ""
        lines.append(f"{name}{range_label(compared)} is {_days(length)}")
        if period.compared in SAME_DAYS_RANGES:
            continue  # the same days already; the calendar made them differ
        point = True
        zone = covered.start.tzinfo or UTC
        for same in SAME_DAYS_RANGES:
            if shift_same_days(covered, same, zone=zone).start == compared.start:
                pointers[same] = None
    if not lines:
        return None
    so_far = " so far" if covered.end < base.end else ""
    base_name = f"{range_label(base_spec)} " if isinstance(base_spec, str) else ""
    text = (
        f"The periods differ in length: {base_name}{range_label(covered)} is "
        f"{_days(base_length)}{so_far}; " + "; ".join(lines) + "."
    )
    if point:
        names = " ".join(f"--compare {same}" for same in pointers)
        text += (
            " Totals grow with the days counted: for the same days, use "
            f"--from {_instant_option(covered.start)} --to {_instant_option(covered.end)} "
            + (names or "with --compare same-days-last-week|month|quarter|year")
            + "."
        )
    return Text(text, style="yellow")


# -- tables --------------------------------------------------------------------------------


def _table(title: str) -> Table:
    # Borderless with one space between columns: ten metrics against two periods must
    # fit in 100 columns without truncating a number. Titles carry pipeline names.
    # At least as wide as the title, so a narrow table's title does not wrap mid-phrase.
    return Table(
        title=plain(title),
        min_width=len(title),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        title_style="bold",
        pad_edge=False,
        collapse_padding=True,
    )


def _metric_table(title: str) -> Table:
    table = _table(title)
    table.add_column("Metric", no_wrap=True)
    return table


def _number_column(table: Table, header: str, *, style: str | None = None) -> None:
    table.add_column(header, justify="right", no_wrap=True, style=style)


def _header(label: str) -> str:
    # "Nov 1-18, 2026" as two short lines keeps date columns as narrow as their numbers.
    return label.replace(", ", "\n", 1)


def _caption(table: Table, caption: str | None) -> None:
    if caption is not None:
        table.caption = caption + "\n"  # a blank line before the next table's title
        table.caption_justify = "left"
        table.caption_style = "dim"


def _user_name(user_id: str, names: Mapping[str, str]) -> str:
    return names.get(user_id, user_id)


def _user_cell(user_id: str, names: Mapping[str, str]) -> Text:
    return plain(_user_name(user_id, names))


def totals_tables(
    totals: FunnelTotals,
    *,
    title: str,
    user_names: Mapping[str, str] | None = None,
    caption: str | None = None,
) -> list[Table]:
    """One report: a table of the ten metrics, then a table per user (*caption* under
    the first)."""
    names = user_names or {}
    tables: list[Table] = []
    if totals.aggregations is not None:
        table = _metric_table(title)
        _number_column(table, "Value")
        for metric in METRIC_LABELS:
            value = getattr(totals.aggregations, metric)
            table.add_row(METRIC_LABELS[metric], format_value(metric, value))
        tables.append(table)
    users = _table(f"{title}: by user")
    users.add_column("User", no_wrap=True)
    shown = ("count", "count_total_won", "count_win_rate", "value_total_won", "average_time_to_win")
    for metric in shown:
        _number_column(users, METRIC_LABELS[metric])
    rows = sorted(
        totals.data,
        key=lambda row: sort_key(row.value_total_won, _user_name(row.user_id, names)),
    )
    for row in rows:
        users.add_row(
            _user_cell(row.user_id, names),
            *(format_value(metric, getattr(row, metric)) for metric in shown),
        )
    if not rows:
        users.add_row(Text("no opportunities in scope", style="dim"), *([""] * len(shown)))
    tables.append(users)
    _caption(tables[0], caption)
    return tables


def comparison_tables(
    comparison: FunnelComparison,
    *,
    title: str,
    base_label: str,
    compared_labels: Sequence[str],
    user_names: Mapping[str, str] | None = None,
    caption: str | None = None,
) -> list[Table]:
    """
    A comparison: the ten metrics against each compared period (value, Δ, % change),
    then per user the headline numbers with the change in value won per compared period
    (*caption*, such as the periods' dates, under the first table).
    """
    names = user_names or {}
    periods = comparison.comparisons
    if len(compared_labels) != len(periods):
        raise ValueError("one compared label per compared period is needed")
    tables: list[Table] = []
    if comparison.base.aggregations is not None:
        table = _metric_table(title)
        _number_column(table, _header(base_label), style="bold")
        for label in compared_labels:
            _number_column(table, _header(label))
            _number_column(table, "Δ")
            _number_column(table, "%")
        for metric in METRIC_LABELS:
            cells: list[str | Text] = [
                METRIC_LABELS[metric],
                format_value(metric, getattr(comparison.base.aggregations, metric)),
            ]
            for period in periods:
                d: Delta | None = (
                    None if period.aggregations is None else getattr(period.aggregations, metric)
                )
                if d is None:
                    cells += [_NONE, _NONE, Text(_NONE, style="dim")]
                else:
                    cells += [
                        format_value(metric, d.compared),
                        format_delta(metric, d.delta),
                        change_text(metric, d.change),
                    ]
            table.add_row(*cells)
        tables.append(table)
    tables.append(_users_comparison_table(comparison, title, base_label, compared_labels, names))
    _caption(tables[0], caption)
    return tables


def _users_comparison_table(
    comparison: FunnelComparison,
    title: str,
    base_label: str,
    compared_labels: Sequence[str],
    names: Mapping[str, str],
) -> Table:
    users = _table(f"{title}: by user, {base_label}")
    users.add_column("User", no_wrap=True)
    shown = ("count", "count_total_won", "count_win_rate", "value_total_won")
    for metric in shown:
        _number_column(users, METRIC_LABELS[metric])
    for label in compared_labels:
        _number_column(users, f"Value won vs\n{_header(label)}")
    # Every user seen in any period, in a stable order: the outer join of each period
    # already starts with the base users, so collect ids across periods.
    order: dict[str, None] = {}
    by_period: list[dict[str, UserDeltas]] = []
    for period in comparison.comparisons:
        rows = {row.user_id: row for row in period.users}
        by_period.append(rows)
        order.update(dict.fromkeys(rows))
    base_rows = {row.user_id: row for row in comparison.base.data}
    order = dict.fromkeys([*base_rows, *order])

    def key(user_id: str) -> tuple[int, float, str]:
        row = base_rows.get(user_id)
        return sort_key(None if row is None else row.value_total_won, _user_name(user_id, names))

    for user_id in sorted(order, key=key):
        row = base_rows.get(user_id)
        cells: list[str | Text] = [_user_cell(user_id, names)]
        cells += [format_value(m, None if row is None else getattr(row, m)) for m in shown]
        for rows in by_period:
            deltas = rows.get(user_id)
            cells.append(
                change_text(
                    "value_total_won", None if deltas is None else deltas.value_total_won.change
                )
            )
        users.add_row(*cells)
    if not order:
        users.add_row(
            Text("no opportunities in scope", style="dim"),
            *([""] * (len(shown) + len(compared_labels))),
        )
    return users


def pipelines_table(pipelines: Iterable[Pipeline]) -> Table:
    """The organization's pipelines with their statuses, for picking ``--pipeline`` ids."""
    table = _table("Pipelines")
    table.add_column("ID", no_wrap=True, style="cyan")
    table.add_column("Name", style="bold")
    table.add_column("Statuses")
    for pipeline in pipelines:
        statuses = ", ".join(f"{s.label} ({s.type})" for s in pipeline.statuses)
        table.add_row(plain(pipeline.id), plain(pipeline.name), plain(statuses or _NONE))
    return table


def users_table(users: Iterable[User]) -> Table:
    """The organization's users, for picking ``--users`` ids."""
    table = _table("Users")
    table.add_column("ID", no_wrap=True, style="cyan")
    table.add_column("Name", style="bold")
    table.add_column("Email")
    for user in users:
        table.add_row(plain(user.id), plain(user.name), plain(user.email or _NONE))
    return table


#: ``closefunnel pipelines --format csv``: one row per status (tidy, for a join).
PIPELINES_CSV_HEADER: Final = (
    "pipeline_id",
    "pipeline_name",
    "status_id",
    "status_label",
    "status_type",
)
#: ``closefunnel users --format csv``.
USERS_CSV_HEADER: Final = ("user_id", "name", "first_name", "last_name", "email")


def pipelines_csv_rows(pipelines: Iterable[Pipeline]) -> list[list[str]]:
    """One row per status of each pipeline (one with empty status cells when it has none)."""
    rows: list[list[str]] = []
    for pipeline in pipelines:
        statuses = [(s.id, s.label, s.type) for s in pipeline.statuses] or [("", "", "")]
        rows += [[csv_text(t) for t in (pipeline.id, pipeline.name, *s)] for s in statuses]
    return rows


def users_csv_rows(users: Iterable[User]) -> list[list[str]]:
    """One row per user."""
    return [
        [csv_text(t) for t in (u.id, u.name, u.first_name, u.last_name, u.email or "")]
        for u in users
    ]


def failures_table(failures: Iterable[tuple[str, str]]) -> Table:
    """``(what, why)`` pairs of a bulk run's failures, listed at the end of the run."""
    table = _table("Failed")
    table.add_column("Query", no_wrap=True)
    table.add_column("Error", style="red")
    for what, why in failures:
        table.add_row(plain(what), plain(why))
    return table


# -- machine formats -----------------------------------------------------------------------


def _csv_cell(value: object) -> str:
    return csv_text(value) if isinstance(value, str) else csv_value(value)


def _user_rows(
    period: str,
    rng: str,
    resolved: DateRange | None,
    rows: Iterable[FunnelMetrics],
    prefix: Sequence[str],
) -> list[list[str]]:
    out: list[list[str]] = []
    bounds = (
        ("", "") if resolved is None else tuple(map(format_instant, (resolved.start, resolved.end)))
    )
    for row in rows:
        user_id = str(getattr(row, "user_id", ""))
        cells = [_csv_cell(getattr(row, metric)) for metric in METRIC_NAMES]
        texts = [csv_text(text) for text in (*prefix, period, rng, *bounds, user_id)]
        out.append([*texts, *cells])
    return out


def totals_csv_rows(
    totals: FunnelTotals, *, base_range: RangeSpec | None, prefix: Sequence[str] = ()
) -> list[list[str]]:
    """
    One row per user: ``base``, the range as given and as resolved (``start``, ``end``;
    empty when the report does not know it), ``user_id`` and the ten metrics in Close's
    units.
    """
    return _user_rows("base", range_text(base_range), totals.range, totals.data, prefix)


def comparison_csv_rows(
    comparison: FunnelComparison, *, base_range: RangeSpec | None, prefix: Sequence[str] = ()
) -> list[list[str]]:
    """The base period's user rows, then each compared period's (period ``compared``)."""
    rows = totals_csv_rows(comparison.base, base_range=base_range, prefix=prefix)
    for period in comparison.comparisons:
        rows += _user_rows(
            "compared",
            range_text(period.compared),
            period.compared_range,
            period.totals.data,
            prefix,
        )
    return rows


def write_csv(rows: Iterable[Sequence[str]], *, header: Sequence[str] = CSV_HEADER) -> str:
    """CSV text with *header* first (``\\r\\n`` line ends, as Close and Excel write them)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
