"""
Merging a base report with compared-range reports into one base-vs-compared view.

Close answers a compared range with the compared report alone; this module puts the
two side by side. It is pure: same inputs, same output, no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs

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
            state = vars(self)
            if compute is None or _BASE not in state:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
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
