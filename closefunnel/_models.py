"""
What Close returns: funnel reports, pipelines and users, as frozen attrs values.

Field names are Close's wire names, so the converter needs no renames. The report's
codecs (JSON and CSV, as the client decodes them) live here, over the generic converter
of :mod:`closefunnel._convert`, which knows no model: the dependency runs one way. Money is
integer cents (annualized: monthly values x 12), durations are seconds, rates are
fractions in ``[0, 1]``. Numbers are kept as Close sent them (``1`` stays ``1``,
``0.5`` stays ``0.5``), so a decoded report encodes back to the same JSON.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import attrs

from closefunnel._convert import (
    CONVERTER,
    csv_as_json,
    csv_records,
    csv_text_as_json,
    csv_text_rows,
    decode,
    decode_fast,
    decode_json,
    fast_structure,
    read_csv_table,
    structure_fast,
    write_csv_records,
)
from closefunnel._errors import ResponseDecodeError
from closefunnel._frames import pandas_frame, polars_frame
from closefunnel._html import notebook_html
from closefunnel._query import DateRange
from closefunnel._records import Names, totals_records, totals_table
from closefunnel._vocabulary import METRIC_NAMES

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = [
    "CSV_COLUMNS",
    "METRIC_NAMES",
    "FunnelMetrics",
    "FunnelTotals",
    "Pipeline",
    "PipelineStatus",
    "User",
    "UserFunnelMetrics",
    "decode_response_json",
    "decode_totals_csv",
    "decode_totals_json",
    "encode_totals_csv",
]


@attrs.frozen(kw_only=True)
class FunnelMetrics:
    """
    The ten metrics of one funnel report, for all users together or for one user.

    Attributes:
        average_time_to_win: Mean seconds from creation to win; None when nothing was won.
        average_value_annualized_per_won_opportunity: ``value_total_won / count_total_won``,
            in cents (0 when nothing was won).
        count: Opportunities in the report.
        count_total_complete: Opportunities won or lost in the range.
        count_total_won: Opportunities won in the range.
        count_win_rate: ``count_total_won / count_total_complete`` (0 when none completed).
        sales_velocity: Cents per day: count x win rate x average won value / days to win.
        value_total_complete: Annualized cents of won and lost opportunities.
        value_total_won: Annualized cents of won opportunities.
        value_win_rate: ``value_total_won / value_total_complete``.

    The non-count metrics are ``int | float``: what type checkers already read ``float``
    as, written out because the values keep the type Close sent (``0`` stays ``0``), and
    because the fast JSON decoder reads these annotations to know that.
    """

    average_time_to_win: int | float | None
    average_value_annualized_per_won_opportunity: int
    count: int
    count_total_complete: int
    count_total_won: int
    count_win_rate: int | float
    sales_velocity: int | float
    value_total_complete: int
    value_total_won: int
    value_win_rate: int | float


@attrs.frozen(kw_only=True)
class UserFunnelMetrics(FunnelMetrics):
    """The ten metrics for one user (``user_id``), as in a report's ``data`` rows."""

    user_id: str


@fast_structure
@attrs.frozen(kw_only=True)
class FunnelTotals:
    """
    One funnel "totals" report.

    Attributes:
        aggregations: The whole report's metrics; None for a CSV report, which Close
            sends per user only.
        data: One row per user.
        range: The absolute ``[start, end)`` range the report covered (the report range
            of an active-stage-cohort report, the cohort range of a created-cohort one),
            resolved as Close resolves it when the client sent the request. Close does
            not send it: None for a report decoded from a body that did not record it.
    """

    aggregations: FunnelMetrics | None
    data: tuple[UserFunnelMetrics, ...]
    range: DateRange | None = None

    @classmethod
    def from_json(cls, body: bytes | str) -> FunnelTotals:
        """
        Decode a JSON report exactly as the client does.

        Raises:
            ResponseDecodeError: *body* is not JSON or not a funnel report.
        """
        return decode_totals_json(body)

    @classmethod
    def from_csv(cls, text: str | bytes) -> FunnelTotals:
        """
        Decode a per-user CSV report (``user_id`` plus metric columns; empty cell = null).

        Raises:
            ResponseDecodeError: *text* is not such a CSV report.
        """
        return decode_totals_csv(text)

    def to_json(self) -> str:
        """
        Encode the report as Close's JSON (``aggregations`` is null for a CSV report),
        plus ``"range"`` when the report knows it, so :meth:`from_json` gets it back.
        """
        return CONVERTER.dumps(self).decode()

    def to_csv(self) -> str:
        """Encode the per-user rows as the CSV Close sends for ``Accept: text/csv``."""
        return encode_totals_csv(self)

    def _repr_html_(self) -> str:
        """
        The notebook view: the CLI's tables (and a funnel chart) as an HTML fragment, user
        ids escaped, the per-user table cut to the top rows by value won (the rest counted).
        """
        return notebook_html(self)

    def to_records(self, *, names: Names | None = None) -> list[dict[str, Any]]:
        """
        The report as a tidy table: one dict per (user, metric), the aggregate first.

        Keys, in order: ``base_start``, ``base_end`` (the report's :attr:`range`, aware
        datetimes; None for a report decoded from a body that did not record it),
        ``user_id`` (None for the aggregate rows), ``user_name`` (only with *names*),
        ``metric`` (in :data:`METRIC_NAMES` order), ``base`` (the value as the report holds
        it: counts and cents are ints). The names are the ones of
        ``FunnelComparison.to_records`` less the compared keys, so tables of reports and of
        comparisons line up. Aggregate rows come first (none for a CSV report), then each
        user in report order.

        Args:
            names: ``{user_id: name}`` or the list ``client.users()`` returns: adds
                ``user_name`` (None for the aggregate rows and users it does not name).

        Raises:
            InvalidQueryError: *names* is neither.
        """
        return totals_records(self, names=names)

    def to_pandas(self, *, names: Names | None = None) -> pandas.DataFrame:
        """
        :meth:`to_records` as a pandas DataFrame (extra ``closefunnel[pandas]``): aware
        UTC datetimes, ``Float64`` values, a categorical ``metric``, ``string`` text.

        Raises:
            ImportError: pandas is not installed (the message names the extra).
            InvalidQueryError: *names* is not a mapping or a list of users.
        """
        return pandas_frame(*totals_table(self, names), method="FunnelTotals.to_pandas")

    def to_polars(self, *, names: Names | None = None) -> polars.DataFrame:
        """
        :meth:`to_records` as a polars DataFrame (extra ``closefunnel[polars]``), with the
        dtypes of :meth:`to_pandas`.

        Raises:
            ImportError: polars is not installed (the message names the extra).
            InvalidQueryError: *names* is not a mapping or a list of users.
        """
        return polars_frame(*totals_table(self, names), method="FunnelTotals.to_polars")


def _unstructure_totals(totals: FunnelTotals) -> dict[str, object]:
    # Close's own JSON has no "range": leave it out when unknown, so a report Close sent
    # encodes back to exactly what it sent.
    body = _TOTALS_FIELDS(totals)
    if totals.range is None:
        del body["range"]
    return body


_TOTALS_FIELDS: Final = CONVERTER.gen_unstructure_attrs_fromdict(FunnelTotals)
CONVERTER.register_unstructure_hook(FunnelTotals, _unstructure_totals)


#: The columns of a per-user CSV report, in the order closefunnel writes them.
CSV_COLUMNS: Final = ("user_id", *METRIC_NAMES)


_USER_ID: Final = operator.attrgetter("user_id")


def _unique_users(totals: FunnelTotals) -> FunnelTotals:
    """
    *totals*, after checking no ``user_id`` is listed twice: the merge joins rows by
    user, and a second row would silently replace the first.
    """
    rows = totals.data
    if len(set(map(_USER_ID, rows))) != len(rows):
        counts = Counter(row.user_id for row in rows)
        repeated = sorted(user_id for user_id, count in counts.items() if count > 1)
        shown = ", ".join(repr(user_id) for user_id in repeated[:5])
        more = f" (+{len(repeated) - 5} more)" if len(repeated) > 5 else ""
        raise ResponseDecodeError(
            f"the report lists user_id {shown}{more} more than once",
            messages=[f"FunnelTotals.data: user_id {user_id!r} repeated" for user_id in repeated],
        )
    return totals


def decode_totals_json(body: bytes | str, *, strict: bool = False) -> FunnelTotals:
    """Decode a JSON funnel totals report (each ``user_id`` at most once)."""
    return _unique_users(decode_json(body, FunnelTotals, strict=strict))


def decode_response_json(body: bytes, *, range: DateRange | None = None) -> FunnelTotals:
    """
    A JSON report as Close answered it, covering *range* (the range the client
    resolved: Close's body does not say it). ``range`` is closefunnel's own key: a
    top-level ``"range"`` in an answer is Close's business, ignored like any other key
    it may add, never taken for ours nor a reason to refuse the report.
    """
    return _unique_users(decode_json(body, FunnelTotals, given={"range": range}))


def decode_totals_csv(text: str | bytes, *, strict: bool = False) -> FunnelTotals:
    """
    Decode a per-user CSV report: a header row, then one row per user.

    Columns are matched by name, in any order; an empty cell is null. The result has
    ``aggregations=None`` because Close's CSV carries per-user rows only.

    Raises:
        ResponseDecodeError: not decodable text, a missing column, a ragged row, a bad
            value or a ``user_id`` listed twice.
    """
    if isinstance(text, bytes):
        with contextlib.suppress(UnicodeDecodeError):  # if not UTF-8, read_csv_table says so
            text = text.decode("utf-8-sig")
    if not strict and isinstance(text, str):  # an unquoted clean report, without csv.reader
        lines = csv_text_rows(text, UserFunnelMetrics, text_column="user_id")
        if lines is not None:
            return _unique_users(FunnelTotals(aggregations=None, data=lines))
        rows = csv_text_as_json(text, CSV_COLUMNS, text_columns=_CSV_TEXT)
        fast = None if rows is None else decode_fast(_CSV_REPORT % rows, FunnelTotals)
        if fast is not None:
            return _unique_users(fast)
    header, body = read_csv_table(text, CSV_COLUMNS)
    if not strict:  # a clean report: as the JSON of its rows, on the msgspec path
        rows = csv_as_json(header, body, CSV_COLUMNS, text_columns=_CSV_TEXT)
        if rows is not None:
            # The cells are in *rows* now. Dropping the row lists first matters: alive,
            # every GC pass during the decode walks them (x2 at 50,000 users).
            del body
            fast = decode_fast(_CSV_REPORT % rows, FunnelTotals)
            if fast is not None:
                return _unique_users(fast)
            header, body = read_csv_table(text, CSV_COLUMNS)
    data = csv_records(header, body, text_columns=_CSV_TEXT)
    report = {"aggregations": None, "data": data}
    fast = None if strict else structure_fast(report, FunnelTotals)
    totals = decode(report, FunnelTotals, strict=strict) if fast is None else fast
    return _unique_users(totals)


_CSV_TEXT: Final = ("user_id",)
_CSV_REPORT: Final = b'{"aggregations":null,"data":%s}'


def encode_totals_csv(totals: FunnelTotals) -> str:
    """Write *totals*' per-user rows as CSV with :data:`CSV_COLUMNS`."""
    return write_csv_records(CSV_COLUMNS, totals.data)


@attrs.frozen(kw_only=True)
class PipelineStatus:
    """One opportunity status of a pipeline; ``type`` is ``active``, ``won`` or ``lost``."""

    id: str
    label: str
    type: str


@attrs.frozen(kw_only=True)
class Pipeline:
    """A pipeline: the ordered statuses that define a funnel."""

    id: str
    name: str
    statuses: tuple[PipelineStatus, ...] = ()


@attrs.frozen(kw_only=True)
class User:
    """A Close user, for showing names next to ``user_id``s."""

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str | None = None

    @property
    def name(self) -> str:
        """The display name: first and last name, else the email, else the id."""
        full = f"{self.first_name} {self.last_name}".strip()
        return full or self.email or self.id
