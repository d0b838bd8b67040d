"""
Merging a base report with compared-range reports into one base-vs-compared view.

Close answers a compared range with the compared report alone; this module puts the
two side by side. It is pure: same inputs, same output, no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Final

import attrs

from closefunnel._html import notebook_html
from closefunnel._models import FunnelMetrics, FunnelTotals, UserFunnelMetrics
from closefunnel._query import Compared, DateRange
from closefunnel._vocabulary import METRIC_NAMES

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


@attrs.frozen(kw_only=True)
class ComparedPeriod:
    """
    One compared range next to the base report.

    Attributes:
        compared: The compared range as it was given (a name or a DateRange).
        totals: The compared report itself.
        aggregations: Base vs compared for the whole report (None for CSV reports).
        users: Base vs compared per user, outer-joined by ``user_id``: base users in
            base order, then users only in the compared report, in its order.
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


def compare_period(base: FunnelTotals, compared: Compared, totals: FunnelTotals) -> ComparedPeriod:
    """Put one compared report next to *base*."""
    aggregations = None
    if base.aggregations is not None and totals.aggregations is not None:
        aggregations = MetricDeltas(**_metric_deltas(base.aggregations, totals.aggregations))
    return ComparedPeriod(
        compared=compared,
        totals=totals,
        aggregations=aggregations,
        users=_user_deltas(base.data, totals.data),
    )


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
