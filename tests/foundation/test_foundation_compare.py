"""Merging base and compared reports: Delta arithmetic and the outer join by user_id."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closefunnel import (
    METRIC_NAMES,
    ComparedPeriod,
    Delta,
    FunnelComparison,
    FunnelMetrics,
    FunnelTotals,
    MetricDeltas,
    UserDeltas,
    UserFunnelMetrics,
    merge_comparison,
)
from closefunnel._compare import delta

_numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(base=_numbers, compared=_numbers)
def test_delta_arithmetic(base: float | None, compared: float | None) -> None:
    """delta = base - compared and change = delta / compared; None when undefined."""
    result = delta(base, compared)
    assert (result.base, result.compared) == (base, compared)
    if base is None or compared is None:
        assert result.delta is None
        assert result.change is None
        return
    assert result.delta == base - compared
    if compared == 0:
        assert result.change is None
    else:
        assert result.change is not None
        assert math.isclose(result.change, (base - compared) / compared)


@pytest.mark.parametrize(
    ("base", "compared", "expected"),
    [
        (10, 8, Delta(10, 8, 2, 0.25)),
        (8, 10, Delta(8, 10, -2, -0.2)),
        (5, 0, Delta(5, 0, 5, None)),
        (0, 0, Delta(0, 0, 0, None)),
        (None, 3, Delta(None, 3, None, None)),
        (3, None, Delta(3, None, None, None)),
        (0.5, 0.25, Delta(0.5, 0.25, 0.25, 1.0)),
    ],
)
def test_delta_examples(base: Any, compared: Any, expected: Delta) -> None:
    """Worked examples of Delta, including a zero and a missing compared side."""
    assert delta(base, compared) == expected


def test_delta_keeps_int_delta() -> None:
    """The delta of two integer metrics stays an integer (cents stay cents)."""
    assert type(delta(10, 3).delta) is int


def _metrics(value: float | None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for FunnelMetrics with every metric derived from *value*."""
    count = 0 if value is None else int(value)
    fields: dict[str, Any] = dict.fromkeys(METRIC_NAMES, count)
    fields["average_time_to_win"] = value
    fields.update(overrides)
    return fields


def _user(user_id: str, value: int | None) -> UserFunnelMetrics:
    """One user's row, every metric derived from *value*."""
    return UserFunnelMetrics(user_id=user_id, **_metrics(value))


def _totals(rows: list[tuple[str, int | None]], aggregate: int | None = 1) -> FunnelTotals:
    """A report with *rows*; aggregations None when *aggregate* is None (a CSV report)."""
    return FunnelTotals(
        aggregations=None if aggregate is None else FunnelMetrics(**_metrics(aggregate)),
        data=tuple(_user(user_id, value) for user_id, value in rows),
    )


_user_ids = st.lists(st.sampled_from([f"user_{n}" for n in range(8)]), max_size=8, unique=True)
_values = st.integers(min_value=0, max_value=10**9)


@st.composite
def _reports(draw: st.DrawFn) -> FunnelTotals:
    """A report over a random subset of eight users, JSON (aggregated) or CSV (not)."""
    rows = [(user_id, draw(_values)) for user_id in draw(_user_ids)]
    return _totals(rows, aggregate=draw(st.none() | _values))


@settings(max_examples=200, deadline=None)
@given(base=_reports(), compared=st.lists(_reports(), max_size=3))
def test_merge_outer_join(base: FunnelTotals, compared: list[FunnelTotals]) -> None:
    """Every user of either side appears once: base order first, then compared-only users."""
    names = [f"last-{n}" for n in range(len(compared))]
    result = merge_comparison(base, zip(names, compared, strict=True))
    assert result.base is base
    assert [period.compared for period in result.comparisons] == names
    for period, other in zip(result.comparisons, compared, strict=True):
        assert period.totals is other
        base_ids = [row.user_id for row in base.data]
        other_ids = [row.user_id for row in other.data]
        expected = base_ids + [uid for uid in other_ids if uid not in base_ids]
        assert [row.user_id for row in period.users] == expected
        base_rows = {row.user_id: row for row in base.data}
        other_rows = {row.user_id: row for row in other.data}
        for row in period.users:
            for name in METRIC_NAMES:
                left = getattr(base_rows.get(row.user_id), name, None)
                right = getattr(other_rows.get(row.user_id), name, None)
                assert getattr(row, name) == delta(left, right)
        if base.aggregations is None or other.aggregations is None:
            assert period.aggregations is None
        else:
            for name in METRIC_NAMES:
                assert getattr(period.aggregations, name) == delta(
                    getattr(base.aggregations, name), getattr(other.aggregations, name)
                )


def test_merge_example() -> None:
    """A worked example: shared, base-only and compared-only users, with a null metric."""
    base = _totals([("u1", 10), ("u2", 4)], aggregate=14)
    other = _totals([("u3", 2), ("u1", 8)], aggregate=None)
    result = merge_comparison(base, [("last-month", other)])
    assert isinstance(result, FunnelComparison)
    (period,) = result.comparisons
    assert isinstance(period, ComparedPeriod)
    assert period.aggregations is None
    assert [row.user_id for row in period.users] == ["u1", "u2", "u3"]
    u1, u2, u3 = period.users
    assert isinstance(u1, UserDeltas)
    assert u1.count == Delta(10, 8, 2, 0.25)
    assert u2.count == Delta(4, None, None, None)
    assert u3.count == Delta(None, 2, None, None)


def test_merge_null_metric_and_aggregations() -> None:
    """A null average_time_to_win gives a None delta; both aggregations give MetricDeltas."""
    base = _totals([("u1", None)], aggregate=20)
    other = _totals([("u1", 5)], aggregate=10)
    (period,) = merge_comparison(base, [("last-year", other)]).comparisons
    assert period.users[0].average_time_to_win == Delta(None, 5, None, None)
    assert isinstance(period.aggregations, MetricDeltas)
    assert period.aggregations.count == Delta(20, 10, 10, 1.0)


def test_metric_deltas_cover_every_metric() -> None:
    """MetricDeltas has exactly the ten metrics; UserDeltas adds user_id."""
    assert tuple(field.name for field in attrs.fields(MetricDeltas)) == METRIC_NAMES
    assert tuple(field.name for field in attrs.fields(FunnelMetrics)) == METRIC_NAMES
    assert {field.name for field in attrs.fields(UserDeltas)} == {*METRIC_NAMES, "user_id"}


def test_merge_with_no_compared_ranges() -> None:
    """Merging with no compared reports keeps the base and has no comparisons."""
    base = _totals([("u1", 1)])
    assert merge_comparison(base, []) == FunnelComparison(base=base, comparisons=())
