"""
Merging a base report with compared-range reports into one base-vs-compared view.

Close answers a compared range with the compared report alone; this module puts the
two side by side. It is pure: same inputs, same output, no I/O.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs

from closefunnel._comparison_json import comparison_body, decode_comparison
from closefunnel._convert import CONVERTER
from closefunnel._frames import pandas_frame, polars_frame
from closefunnel._html import notebook_html
from closefunnel._models import FunnelMetrics, FunnelTotals, UserFunnelMetrics
from closefunnel._query import Compared, DateRange
from closefunnel._records import (
    Names,
    comparison_columns,
    comparison_records,
    comparison_rows,
    comparison_table,
    csv_cell,
    records_csv,
    user_names,
)
from closefunnel._vocabulary import METRIC_NAMES

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = [
    "ComparedPeriod",
    "Delta",
    "FunnelComparison",
    "MetricDeltas",
    "UserDeltas",
    "compare_period",
    "delta",
    "merge_comparison",
]

Number = int | float


@attrs.frozen
class Delta:
    """
    One metric, base against compared.

    ``delta = base - compared``; ``change = delta / compared`` as a fraction (0.25 is
    +25 %). Either is None when a side is None, and ``change`` is None when
    ``compared`` is 0, where no finite relative change exists.
    """

    base: Number | None
    compared: Number | None
    delta: Number | None
    change: float | None


def delta(base: Number | None, compared: Number | None) -> Delta:
    """The :class:`Delta` of one metric."""
    if base is None or compared is None:
        return Delta(base, compared, None, None)
    diff = base - compared
    return Delta(base, compared, diff, diff / compared if compared else None)


@attrs.frozen(kw_only=True)
class MetricDeltas:
    """One :class:`Delta` per funnel metric (the names of :class:`FunnelMetrics`)."""

    average_time_to_win: Delta
    average_value_annualized_per_won_opportunity: Delta
    count: Delta
    count_total_complete: Delta
    count_total_won: Delta
    count_win_rate: Delta
    sales_velocity: Delta
    value_total_complete: Delta
    value_total_won: Delta
    value_win_rate: Delta


@attrs.frozen(kw_only=True)
class UserDeltas(MetricDeltas):
    """One user's :class:`Delta` per metric; a side where the user is absent is None."""

    user_id: str


@attrs.frozen(kw_only=True, slots=False)
class ComparedPeriod:
    """
    One compared range next to the base report.

    Attributes:
        compared: The compared range as it was given (a name or a DateRange).
        totals: The compared report itself.
        aggregations: Base vs compared for the whole report (None for CSV reports).
        users: Base vs compared per user, outer-joined by ``user_id``: base users in
            base order, then users only in the compared report, in its order.

    A period made by :func:`compare_period` computes ``aggregations`` and ``users`` on
    first access (ten Delta values per user are most of a merge's cost, and many callers
    only read the totals or a few users), then keeps them. They are ordinary fields all
    the same: equality, hashing, repr, ``attrs.evolve``, ``attrs.asdict``, pickling and
    the converter read them through attribute access, which computes them. That is why
    this class keeps a ``__dict__``: a missing entry is what "not computed yet" means.
    """

    compared: Compared
    totals: FunnelTotals
    aggregations: MetricDeltas | None
    users: tuple[UserDeltas, ...]

    @property
    def compared_range(self) -> DateRange | None:
        """
        The absolute ``[start, end)`` range the compared report covered (``"last-month"``
        resolved as Close resolved it): the compared report's own ``range``, so it is
        stored once. None only for reports that did not record it (decoded from a body
        without it, or built by hand); the client always sets it.
        """
        return self.totals.range

    @classmethod
    def _deferred(cls, base: FunnelTotals, **fields: Any) -> ComparedPeriod:
        """A period of *fields* whose deltas against *base* are computed when first read."""
        period = cls(**fields, aggregations=_PENDING, users=_PENDING)
        state = vars(period)
        del state["aggregations"], state["users"]
        state[_BASE] = base
        return period

    if not TYPE_CHECKING:  # to a type checker, a class with __getattr__ has any attribute

        def __getattr__(self, name: str) -> Any:
            # Only reached for names not in __dict__: a deferred field, read the first time.
            compute = _DEFERRED.get(name)
            if compute is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            # One thread computes; a thread that waited finds the value already there. (A
            # result shared by threads, a SyncClient's say, is read from several at once.)
            with _COMPUTING:
                state = vars(self)
                if name in state:
                    return state[name]
                if _BASE not in state:
                    raise AttributeError(
                        f"{type(self).__name__!r} object has no attribute {name!r}"
                    )
                value = compute(state[_BASE], state["totals"])
                state[name] = value
                if "aggregations" in state and "users" in state:
                    del state[_BASE]
                return value


@attrs.frozen(kw_only=True)
class FunnelComparison:
    """The base report and each compared period, in the order they were asked for."""

    base: FunnelTotals
    comparisons: tuple[ComparedPeriod, ...]

    @property
    def base_range(self) -> DateRange | None:
        """
        The absolute ``[start, end)`` range of the base report (``base.range``); None
        only for a base report that did not record it. The client always sets it.
        """
        return self.base.range

    def _repr_html_(self) -> str:
        """
        The notebook view: the CLI's comparison tables (ten metrics, Δ, ▲/▼) with the
        resolved dates and a funnel chart, as an HTML fragment; user ids escaped, the
        per-user table cut to the top rows by value won (the rest counted).
        """
        return notebook_html(self)

    def to_records(self, *, names: Names | None = None) -> list[dict[str, Any]]:
        """
        The comparison as a tidy table: one dict per (compared period, user, metric).

        Keys, in order:

        - ``period``: the compared range as given (``ComparedPeriod.compared``): its
          name (``"last-month"``) or the :class:`DateRange` itself (DataFrames and
          :meth:`to_csv` write a DateRange as ``START..END`` in ISO 8601, the form the
          command line takes);
        - ``base_start``, ``base_end``, ``compared_start``, ``compared_end``: the resolved
          ranges (:attr:`base_range`, ``ComparedPeriod.compared_range``) as aware
          datetimes; None for a report decoded from a body that did not record its range;
        - ``user_id``: None for the aggregate rows; ``user_name`` (only with *names*);
        - ``metric``; ``base``, ``compared``, ``delta``, ``change``: the :class:`Delta`
          (counts and cents, and their deltas, are ints; ``change`` is a float).

        Rows are in a fixed order: periods as asked; in each, the aggregate row first
        (none for CSV reports, which have no aggregate), then users in the order of
        ``ComparedPeriod.users``; each with the metrics in :data:`METRIC_NAMES` order.

        Args:
            names: ``{user_id: name}`` or the list ``client.users()`` returns: adds
                ``user_name`` (None for the aggregate rows and users it does not name).

        Raises:
            InvalidQueryError: *names* is neither.
        """
        return comparison_records(self, names=names)

    def to_pandas(self, *, names: Names | None = None) -> pandas.DataFrame:
        """
        :meth:`to_records` as a pandas DataFrame (extra ``closefunnel[pandas]``): aware
        UTC datetimes, ``Float64`` values, a categorical ``metric``, ``string`` text.

        Raises:
            ImportError: pandas is not installed (the message names the extra).
            InvalidQueryError: *names* is not a mapping or a list of users.
        """
        return pandas_frame(*comparison_table(self, names), method="FunnelComparison.to_pandas")

    def to_polars(self, *, names: Names | None = None) -> polars.DataFrame:
        """
        :meth:`to_records` as a polars DataFrame (extra ``closefunnel[polars]``), with the
        dtypes of :meth:`to_pandas`.

        Raises:
            ImportError: polars is not installed (the message names the extra).
            InvalidQueryError: *names* is not a mapping or a list of users.
        """
        return polars_frame(*comparison_table(self, names), method="FunnelComparison.to_polars")

    def to_csv(self, *, names: Names | None = None) -> str:
        """
        :meth:`to_records` as CSV, for spreadsheets: a header of its keys, then a row per
        record; datetimes in ISO 8601, floats exactly, null as an empty cell.

        User ids and names are typed by strangers, so a text cell that starts like a
        formula (``=``, ``+``, ``-``, ``@``, tab, CR) gets a leading ``'`` and control
        characters become U+FFFD, as in the command line's CSV: a spreadsheet shows the
        text instead of running it. This is an export, not a store: :meth:`to_json`
        keeps every value exactly and :meth:`from_json` reads it back.
        """
        lookup = user_names(names)
        columns = comparison_columns(names=lookup is not None)
        return records_csv(columns, comparison_rows(self, names=lookup, cell=csv_cell))

    def to_json(self) -> str:
        """
        The comparison as JSON: ``base`` (a report as ``FunnelTotals.to_json`` writes it,
        with its resolved ``range``), and per compared period ``compared`` (the range as
        given: a name or ``{start, end}``), ``totals`` (the compared report, with its
        range) and the deltas (``aggregations``, ``users``). It is what the command
        line's ``--format json`` prints, and :meth:`from_json` reads it back.
        """
        return CONVERTER.dumps(self).decode()

    @classmethod
    def from_json(cls, body: bytes | str) -> FunnelComparison:
        """
        Read what :meth:`to_json` wrote: an equal comparison, ranges included.

        The reports and the compared ranges are read; the deltas are merged again from
        them rather than trusted, so an edited delta cannot disagree with its reports.

        Raises:
            ResponseDecodeError: *body* is not JSON, not a stored comparison (naming the
                field), names a compared range Close does not know, or lists a user twice.
        """
        stored = decode_comparison(body)
        return merge_comparison(
            stored.base, [(period.compared, period.totals) for period in stored.comparisons]
        )


_METRICS: Final = operator.attrgetter(*METRIC_NAMES)
_NONE: Final = (None,) * len(METRIC_NAMES)


def _metric_deltas(base: FunnelMetrics | None, compared: FunnelMetrics | None) -> dict[str, Delta]:
    # The hot loop of a merge (ten metrics per user, thousands of users): fetch all ten
    # values at once and build each Delta inline rather than through delta().
    base_values = _NONE if base is None else _METRICS(base)
    compared_values = _NONE if compared is None else _METRICS(compared)
    fields: dict[str, Delta] = {}
    for name, b, c in zip(METRIC_NAMES, base_values, compared_values, strict=True):
        if b is None or c is None:
            fields[name] = Delta(b, c, None, None)
        else:
            diff = b - c
            fields[name] = Delta(b, c, diff, diff / c if c else None)
    return fields


def _user_deltas(
    base: Iterable[UserFunnelMetrics], compared: Iterable[UserFunnelMetrics]
) -> tuple[UserDeltas, ...]:
    base_by_id = {row.user_id: row for row in base}
    compared_by_id = {row.user_id: row for row in compared}
    order: dict[str, None] = dict.fromkeys(base_by_id)
    order.update(dict.fromkeys(compared_by_id))
    return tuple(
        UserDeltas(
            user_id=user_id,
            **_metric_deltas(base_by_id.get(user_id), compared_by_id.get(user_id)),
        )
        for user_id in order
    )


def _aggregations(base: FunnelTotals, totals: FunnelTotals) -> MetricDeltas | None:
    if base.aggregations is None or totals.aggregations is None:
        return None
    return MetricDeltas(**_metric_deltas(base.aggregations, totals.aggregations))


def _users(base: FunnelTotals, totals: FunnelTotals) -> tuple[UserDeltas, ...]:
    return _user_deltas(base.data, totals.data)


#: The fields a deferred ComparedPeriod computes on first access, and how.
_DEFERRED: Final[dict[str, Callable[[FunnelTotals, FunnelTotals], Any]]] = {
    "aggregations": _aggregations,
    "users": _users,
}
#: Where a deferred period keeps the base report until both fields are computed.
_BASE: Final = "_closefunnel_base"
#: Held while a deferred field is computed (one lock for all: the GIL serializes it anyway).
_COMPUTING: Final = threading.Lock()
_PENDING: Final[Any] = object()


def compare_period(base: FunnelTotals, compared: Compared, totals: FunnelTotals) -> ComparedPeriod:
    """Put one compared report next to *base* (the deltas are computed when first read)."""
    return ComparedPeriod._deferred(base, compared=compared, totals=totals)


def merge_comparison(
    base: FunnelTotals, compared: Iterable[tuple[Compared, FunnelTotals]]
) -> FunnelComparison:
    """
    Merge *base* with each ``(compared range, compared report)`` pair, keeping their order.
    """
    return FunnelComparison(
        base=base,
        comparisons=tuple(compare_period(base, rng, totals) for rng, totals in compared),
    )


CONVERTER.register_unstructure_hook(FunnelComparison, comparison_body)
