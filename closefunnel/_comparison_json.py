"""
A comparison as JSON, and back: what ``FunnelComparison.to_json()`` writes and reads.

The JSON is the one the command line's ``--format json`` prints: the base report, then per
compared period the range as given (a name, or ``{start, end}``), the compared report, and
the deltas (``aggregations``, ``users``) for readers such as ``jq`` or a dashboard. Each
report carries its resolved ``range`` (see ``FunnelTotals.to_json``).

Reading it back takes the reports and the ranges as given, and merges them again: the
deltas are derived data, so they are recomputed rather than trusted (a hand-edited delta
cannot disagree with its reports). The compared ranges are checked against Close's names,
and each report's users must be unique, exactly as for a report the client decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from closefunnel._convert import CONVERTER, decode_json
from closefunnel._errors import ResponseDecodeError
from closefunnel._models import FunnelTotals, _unique_users
from closefunnel._query import Compared, DateRange
from closefunnel._vocabulary import RELATIVE_RANGES, SAME_DAYS_RANGES

__all__ = ["StoredComparison", "StoredPeriod", "comparison_body", "decode_comparison"]


@attrs.frozen(kw_only=True)
class StoredPeriod:
    """One compared period as stored: the range as given and its report."""

    compared: Compared
    totals: FunnelTotals


@attrs.frozen(kw_only=True)
class StoredComparison:
    """A comparison as stored: the base report and each compared period, in order."""

    base: FunnelTotals
    comparisons: tuple[StoredPeriod, ...]


class _Period(Protocol):
    @property
    def compared(self) -> Compared: ...

    @property
    def totals(self) -> FunnelTotals: ...

    @property
    def aggregations(self) -> object | None: ...

    @property
    def users(self) -> Sequence[object]: ...


class _Comparison(Protocol):
    @property
    def base(self) -> FunnelTotals: ...

    @property
    def comparisons(self) -> Sequence[_Period]: ...


def comparison_body(comparison: _Comparison) -> dict[str, Any]:
    """The JSON value of *comparison* (what ``to_json`` and the command line write)."""
    unstructure = CONVERTER.unstructure
    return {
        "base": unstructure(comparison.base),
        "comparisons": [
            {
                "compared": unstructure(period.compared),
                "totals": unstructure(period.totals),
                "aggregations": unstructure(period.aggregations),
                "users": [unstructure(row) for row in period.users],
            }
            for period in comparison.comparisons
        ],
    }


def decode_comparison(body: bytes | str) -> StoredComparison:
    """
    The reports and ranges of a stored comparison (the caller merges them).

    Raises:
        ResponseDecodeError: *body* is not JSON, not a stored comparison, names a
            compared range Close does not know, or lists a user twice in one report.
    """
    stored = decode_json(body, StoredComparison)
    _unique_users(stored.base)
    for index, period in enumerate(stored.comparisons):
        compared = period.compared
        if not isinstance(compared, DateRange) and compared not in (
            RELATIVE_RANGES + SAME_DAYS_RANGES
        ):
            raise ResponseDecodeError(
                f"comparisons[{index}].compared: {compared!r} is not a range Close knows; "
                f"expected one of {', '.join(RELATIVE_RANGES + SAME_DAYS_RANGES)} "
                "or a {start, end} object",
                messages=[f"StoredComparison.comparisons[{index}].compared: {compared!r}"],
            )
        _unique_users(period.totals)
    return stored
