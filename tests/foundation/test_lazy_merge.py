"""
A merged ComparedPeriod computes its deltas on first access and is otherwise the value an
eager one is: equality, hash, repr, evolve, asdict, pickling and the converter all agree.
"""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import attrs
import pytest

from closefunnel import (
    METRIC_NAMES,
    ComparedPeriod,
    FunnelMetrics,
    FunnelTotals,
    UserFunnelMetrics,
    merge_comparison,
)
from closefunnel._compare import MetricDeltas, UserDeltas, delta
from closefunnel._convert import CONVERTER


def _metrics(value: int, **extra: Any) -> dict[str, Any]:
    return dict.fromkeys(METRIC_NAMES, value) | {"average_time_to_win": None} | extra


def _totals(values: dict[str, int], aggregate: int) -> FunnelTotals:
    return FunnelTotals(
        aggregations=FunnelMetrics(**_metrics(aggregate)),
        data=tuple(UserFunnelMetrics(user_id=u, **_metrics(v)) for u, v in values.items()),
    )


BASE = _totals({"a": 4, "b": 2}, 6)
OTHER = _totals({"b": 1, "c": 5}, 6 - 1)


def _eager() -> ComparedPeriod:
    """The period written out by hand: what the lazy one must equal."""

    def deltas(b: int | None, c: int | None) -> dict[str, Any]:
        return {
            name: delta(
                None if name == "average_time_to_win" else b,
                c if name != "average_time_to_win" else None,
            )
            for name in METRIC_NAMES
        }

    return ComparedPeriod(
        compared="last-month",
        totals=OTHER,
        aggregations=MetricDeltas(**deltas(6, 5)),
        users=(
            UserDeltas(user_id="a", **deltas(4, None)),
            UserDeltas(user_id="b", **deltas(2, 1)),
            UserDeltas(user_id="c", **deltas(None, 5)),
        ),
    )


def _lazy() -> ComparedPeriod:
    (period,) = merge_comparison(BASE, [("last-month", OTHER)]).comparisons
    return period


def test_nothing_is_computed_until_read() -> None:
    period = _lazy()
    assert "users" not in vars(period)
    assert "aggregations" not in vars(period)
    assert period.users == _eager().users
    assert "users" in vars(period)
    assert "aggregations" not in vars(period)
    assert period.users is period.users  # computed once, then kept
    assert period.aggregations == _eager().aggregations
    assert set(vars(period)) == {"compared", "totals", "aggregations", "users"}


@pytest.mark.parametrize(
    "view",
    [
        lambda p: p,
        repr,
        hash,
        attrs.asdict,
        CONVERTER.unstructure,
        lambda p: pickle.loads(pickle.dumps(p)),
        copy.copy,
        copy.deepcopy,
        lambda p: attrs.evolve(p, compared="last-year").users,
        lambda p: attrs.astuple(p),
    ],
    ids=[
        "eq",
        "repr",
        "hash",
        "asdict",
        "unstructure",
        "pickle",
        "copy",
        "deepcopy",
        "evolve",
        "astuple",
    ],
)
def test_a_fresh_lazy_period_looks_like_the_eager_one(view: Any) -> None:
    assert view(_lazy()) == view(_eager())


def test_pickled_before_reading_still_computes() -> None:
    restored = pickle.loads(pickle.dumps(_lazy()))
    assert "users" not in vars(restored)
    assert restored == _eager()


def test_still_frozen_and_no_invented_attributes() -> None:
    period = _lazy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        period.users = ()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'user'"):
        period.user  # type: ignore[attr-defined]  # noqa: B018
    assert ComparedPeriod(**attrs.asdict(_eager(), recurse=False)) == period


def test_threads_reading_a_period_first_all_get_its_rows() -> None:
    """Four threads reading ``users`` of a fresh period at once: one computes, all get it."""
    base = _totals({f"u{i}": i for i in range(3_000)}, 1)
    failures: list[str] = []
    seen: list[list[object]] = []
    for _ in range(8):
        period = merge_comparison(base, [("last-month", base)]).comparisons[0]
        period.aggregations  # noqa: B018 - computed first, so users completes the pair
        barrier = threading.Barrier(4)
        got: list[object] = []
        seen.append(got)

        def read(
            period: ComparedPeriod = period,
            barrier: threading.Barrier = barrier,
            got: list[object] = got,
        ) -> None:
            barrier.wait()
            try:
                got.append(period.users)
            except Exception as exc:  # the race raised KeyError/AttributeError here
                failures.append(repr(exc))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    for got in seen:  # one tuple per period, shared by its four readers
        assert len(got) == 4
        assert all(users is got[0] for users in got)
