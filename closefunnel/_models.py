"""
What Close returns: funnel reports, pipelines and users, as frozen attrs values.

Field names are Close's wire names, so the converter needs no renames. Money is
integer cents (annualized: monthly values x 12), durations are seconds, rates are
fractions in ``[0, 1]``. Numbers are kept as Close sent them (``1`` stays ``1``,
``0.5`` stays ``0.5``), so a decoded report encodes back to the same JSON.
"""

from __future__ import annotations

import attrs

from closefunnel._vocabulary import METRIC_NAMES

__all__ = [
    "METRIC_NAMES",
    "FunnelMetrics",
    "FunnelTotals",
    "Pipeline",
    "PipelineStatus",
    "User",
    "UserFunnelMetrics",
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
    """

    average_time_to_win: float | None
    average_value_annualized_per_won_opportunity: int
    count: int
    count_total_complete: int
    count_total_won: int
    count_win_rate: float
    sales_velocity: float
    value_total_complete: int
    value_total_won: int
    value_win_rate: float


@attrs.frozen(kw_only=True)
class UserFunnelMetrics(FunnelMetrics):
    """The ten metrics for one user (``user_id``), as in a report's ``data`` rows."""

    user_id: str


@attrs.frozen(kw_only=True)
class FunnelTotals:
    """
    One funnel "totals" report.

    ``aggregations`` is None for a CSV report, which Close sends per user only.
    """

    aggregations: FunnelMetrics | None
    data: tuple[UserFunnelMetrics, ...]

    @classmethod
    def from_json(cls, body: bytes | str) -> FunnelTotals:
        """
        Decode a JSON report exactly as the client does.

        Raises:
            ResponseDecodeError: *body* is not JSON or not a funnel report.
        """
        from closefunnel._convert import decode_totals_json

        return decode_totals_json(body)

    @classmethod
    def from_csv(cls, text: str | bytes) -> FunnelTotals:
        """
        Decode a per-user CSV report (``user_id`` plus metric columns; empty cell = null).

        Raises:
            ResponseDecodeError: *text* is not such a CSV report.
        """
        from closefunnel._convert import decode_totals_csv

        return decode_totals_csv(text)

    def to_json(self) -> str:
        """Encode the report as Close's JSON (``aggregations`` is null for a CSV report)."""
        from closefunnel._convert import CONVERTER

        return CONVERTER.dumps(self).decode()

    def to_csv(self) -> str:
        """Encode the per-user rows as the CSV Close sends for ``Accept: text/csv``."""
        from closefunnel._convert import encode_totals_csv

        return encode_totals_csv(self)


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
