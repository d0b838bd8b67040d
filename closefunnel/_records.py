"""
Reports as a tidy table: one record per (period, user, metric), for pandas, sheets and SQL.

The typed values are the right shape for code, but a person's next step is a table, and
``pd.DataFrame(period.users)`` gives one column of objects. A *long* ("tidy") table, one row
per observation, is what pandas, polars, plotting libraries and spreadsheets' pivot tables
take: filter by ``metric``, pivot by ``user_id``, group by ``period``.

This module knows the reports' shape, not their classes (it reads the public attributes
of a report and of a comparison), so the report and comparison modules can call it
without an import cycle. It is pure: the same report gives the same rows, in a fixed
order (periods as asked, the aggregate row first, then users in report order, metrics in
:data:`~closefunnel._vocabulary.METRIC_NAMES` order).

The tidy CSV written here is an *export* for spreadsheets, not a storage format (JSON is
the one that round-trips): user ids and names are typed by strangers, so a text cell that
a spreadsheet would run as a formula is neutralized, as the command line's CSV does.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from closefunnel._display import range_text
from closefunnel._errors import InvalidQueryError
from closefunnel._query import DateRange, format_instant
from closefunnel._shapes import ComparisonLike, DeltaLike, TotalsLike
from closefunnel._vocabulary import METRIC_NAMES

__all__ = [
    "COMPARISON_COLUMNS",
    "TOTALS_COLUMNS",
    "Names",
    "comparison_columns",
    "comparison_records",
    "comparison_rows",
    "comparison_table",
    "csv_cell",
    "records_csv",
    "spreadsheet_text",
    "totals_columns",
    "totals_records",
    "totals_rows",
    "totals_table",
    "user_names",
]

#: The keys of :func:`comparison_records`, in order (``user_name`` follows ``user_id``
#: when names are given).
COMPARISON_COLUMNS: Final = (
    "period",
    "base_start",
    "base_end",
    "compared_start",
    "compared_end",
    "user_id",
    "metric",
    "base",
    "compared",
    "delta",
    "change",
)
#: The keys of :func:`totals_records`: the comparison's, less the compared ones, so the
#: frames of a report and of a comparison line up column for column.
TOTALS_COLUMNS: Final = ("base_start", "base_end", "user_id", "metric", "base")


class _Named(Protocol):
    """A :class:`~closefunnel.User`, as far as names go."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


#: What ``names=`` takes: ``{user_id: name}``, or the list ``client.users()`` returns.
Names = Mapping[str, str] | Iterable[_Named]


def user_names(names: Names | None) -> dict[str, str] | None:
    """
    ``names=`` as a ``{user_id: name}`` dict (None when not given).

    Raises:
        InvalidQueryError: *names* is neither a mapping of strings nor users.
    """
    if names is None:
        return None
    if isinstance(names, Mapping):
        found = dict(names)
        for key, value in found.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidQueryError(
                    f"names must map user ids to names (strings), got {key!r}: {value!r}",
                    field="names",
                    rule="type",
                )
        return found
    given: object = names  # typed as Names, but callers pass anything
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise InvalidQueryError(
            "names must be a mapping of user id to name or the list client.users() returns, "
            f"got {type(names).__name__}",
            field="names",
            rule="type",
        )
    found = {}
    for user in given:
        user_id, name = getattr(user, "id", None), getattr(user, "name", None)
        if not isinstance(user_id, str) or not isinstance(name, str):
            raise InvalidQueryError(
                f"names must hold users (with .id and .name), got {user!r}",
                field="names",
                rule="type",
            )
        found[user_id] = name
    return found


def _bounds(rng: DateRange | None) -> tuple[datetime | None, datetime | None]:
    return (None, None) if rng is None else (rng.start, rng.end)


def totals_columns(*, names: bool) -> tuple[str, ...]:
    """The columns of a report's records, with ``user_name`` when *names*."""
    return _with_name(TOTALS_COLUMNS) if names else TOTALS_COLUMNS


def comparison_columns(*, names: bool) -> tuple[str, ...]:
    """The columns of a comparison's records, with ``user_name`` when *names*."""
    return _with_name(COMPARISON_COLUMNS) if names else COMPARISON_COLUMNS


def _with_name(columns: tuple[str, ...]) -> tuple[str, ...]:
    at = columns.index("user_id") + 1
    return (*columns[:at], "user_name", *columns[at:])


def _same(value: Any) -> Any:
    return value


def totals_table(
    totals: TotalsLike, names: Names | None
) -> tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]:
    """The columns and rows of a report's records (*names* as ``names=`` takes them)."""
    lookup = user_names(names)
    return totals_columns(names=lookup is not None), totals_rows(totals, names=lookup)


def comparison_table(
    comparison: ComparisonLike, names: Names | None
) -> tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]:
    """The columns and rows of a comparison's records (*names* as ``names=`` takes them)."""
    lookup = user_names(names)
    return comparison_columns(names=lookup is not None), comparison_rows(comparison, names=lookup)


def totals_rows(
    totals: TotalsLike, *, names: Mapping[str, str] | None, cell: Callable[[Any], Any] = _same
) -> Iterator[tuple[Any, ...]]:
    """
    The rows of :func:`totals_records` as tuples in :func:`totals_columns` order; *cell*
    turns each value but the numbers (ranges, ids, names, metric names) into its cell,
    once per user rather than once per row.
    """
    start, end = map(cell, _bounds(totals.range))
    named = names is not None
    lookup = names or {}
    metrics = [(name, cell(name)) for name in METRIC_NAMES]
    if totals.aggregations is not None:
        head: tuple[Any, ...] = (start, end, None, None) if named else (start, end, None)
        for metric, shown in metrics:
            yield (*head, shown, getattr(totals.aggregations, metric))
    for row in totals.data:
        user_id: str = getattr(row, "user_id")  # noqa: B009 - a UserFunnelMetrics
        head = (start, end, cell(user_id))
        if named:
            head += (cell(lookup.get(user_id)),)
        for metric, shown in metrics:
            yield (*head, shown, getattr(row, metric))


def comparison_rows(
    comparison: ComparisonLike,
    *,
    names: Mapping[str, str] | None,
    cell: Callable[[Any], Any] = _same,
    as_given: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """
    The rows of :func:`comparison_records` as tuples in :func:`comparison_columns` order;
    *cell* as for :func:`totals_rows`. ``period`` is the compared range as text (a
    DateRange as ``START..END``, for a frame's or a sheet's column), or with *as_given*
    the value itself (records).
    """
    base_start, base_end = map(cell, _bounds(comparison.base_range))
    named = names is not None
    lookup = names or {}
    metrics = [(name, cell(name)) for name in METRIC_NAMES]
    for period in comparison.comparisons:
        label = period.compared if as_given else cell(range_text(period.compared))
        ranges = (label, base_start, base_end, *map(cell, _bounds(period.compared_range)))
        groups: list[tuple[tuple[Any, ...], object]] = []
        if period.aggregations is not None:
            groups.append(
                ((*ranges, None, None) if named else (*ranges, None), period.aggregations)
            )
        for row in period.users:
            user_id: str = getattr(row, "user_id")  # noqa: B009 - a UserDeltas
            head = (*ranges, cell(user_id))
            if named:
                head += (cell(lookup.get(user_id)),)
            groups.append((head, row))
        for head, deltas in groups:
            for metric, shown in metrics:
                d: DeltaLike = getattr(deltas, metric)
                yield (*head, shown, d.base, d.compared, d.delta, d.change)


def totals_records(totals: TotalsLike, *, names: Names | None = None) -> list[dict[str, Any]]:
    """
    One dict per (user, metric) of a report, the aggregate rows (``user_id`` None) first.

    Keys: ``base_start``, ``base_end`` (the report's range; None for a report decoded
    from a body that did not record it), ``user_id``, ``user_name`` (with *names*; None
    for the aggregate row and for users it does not name), ``metric``, ``base`` (the value,
    as the report holds it).
    """
    lookup = user_names(names)
    columns = totals_columns(names=lookup is not None)
    return [dict(zip(columns, row, strict=True)) for row in totals_rows(totals, names=lookup)]


def comparison_records(
    comparison: ComparisonLike, *, names: Names | None = None
) -> list[dict[str, Any]]:
    """One dict per (compared period, user, metric); see ``FunnelComparison.to_records``."""
    lookup = user_names(names)
    columns = comparison_columns(names=lookup is not None)
    rows = comparison_rows(comparison, names=lookup, as_given=True)
    return [dict(zip(columns, row, strict=True)) for row in rows]


# -- the tidy CSV ------------------------------------------------------------------------

# C0 controls but tab, CR and LF (data, quoted by the writer), DEL and C1 controls.
_CSV_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# What a spreadsheet reads as the start of a formula (OWASP "CSV injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """
    A CSV text cell that is safe to open in a spreadsheet.

    Control characters other than tab/CR/LF are replaced by U+FFFD; a cell that starts
    like a formula (``=``, ``+``, ``-``, ``@``, tab, CR) gets a leading ``'``, so a
    spreadsheet shows it as text instead of evaluating it. Only text cells go through
    here: numbers are written as numbers, negative ones included.
    """
    text = _CSV_CONTROL.sub("\ufffd", text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_cell(value: Any) -> Any:
    """
    A text or datetime value as its tidy-CSV cell (for ``cell=`` of the row functions):
    text through :func:`spreadsheet_text`, datetimes in ISO 8601; anything else (None,
    numbers) as it is, for the CSV writer (empty, ``str``, and ``repr`` for floats).
    """
    if isinstance(value, str):
        return spreadsheet_text(value)
    if isinstance(value, datetime):
        return format_instant(value)
    return value


def records_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """
    *rows* (made with ``cell=csv_cell``) under a *columns* header as CSV, with ``\\r\\n``
    line ends; null is an empty cell and numbers are written exactly.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()
