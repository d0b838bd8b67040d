"""
What a report, a compared period and a comparison look like to the code that reads them.

The models call their renderers and exporters (``_repr_html_``, ``to_records``,
``to_json``), so those modules cannot import the models back without an import cycle;
they name these structural shapes instead, each spelled once here. A
:class:`~closefunnel.FunnelTotals`, :class:`~closefunnel.ComparedPeriod` and
:class:`~closefunnel.FunnelComparison` fit them; mypy checks that at every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from closefunnel._query import Compared, DateRange

__all__ = ["ComparisonLike", "DeltaLike", "Number", "PeriodLike", "TotalsLike", "UserRow"]

Number = int | float


class UserRow(Protocol):
    """A per-user row: a ``user_id`` and one attribute per metric (values or Deltas)."""

    @property
    def user_id(self) -> str: ...


class DeltaLike(Protocol):
    """The shape of a :class:`~closefunnel.Delta`."""

    @property
    def base(self) -> Number | None: ...

    @property
    def compared(self) -> Number | None: ...

    @property
    def delta(self) -> Number | None: ...

    @property
    def change(self) -> float | None: ...


class TotalsLike(Protocol):
    """The shape of a :class:`~closefunnel.FunnelTotals`."""

    @property
    def aggregations(self) -> object: ...

    @property
    def data(self) -> Sequence[UserRow]: ...

    @property
    def range(self) -> DateRange | None: ...


class PeriodLike(Protocol):
    """The shape of a :class:`~closefunnel.ComparedPeriod`."""

    @property
    def compared(self) -> Compared: ...

    @property
    def totals(self) -> TotalsLike: ...

    @property
    def aggregations(self) -> object: ...

    @property
    def users(self) -> Sequence[UserRow]: ...

    @property
    def compared_range(self) -> DateRange | None: ...


@runtime_checkable
class ComparisonLike(Protocol):
    """The shape of a :class:`~closefunnel.FunnelComparison`."""

    @property
    def base(self) -> TotalsLike: ...

    @property
    def comparisons(self) -> Sequence[PeriodLike]: ...

    @property
    def base_range(self) -> DateRange | None: ...
