"""
The per-user CSV report (``Accept: text/csv``), written by the emulator itself.

Close documents that CSV carries only the per-user rows; it does not publish the layout,
so ours is: a header of ``user_id`` then the ten metrics in the JSON report's
(alphabetical) order, CRLF line ends, empty cells for null, floats with every digit
(``repr``) so that a CSV and a JSON report of the same data agree exactly. This is
written independently of the client's CSV reader on purpose: the tests compare the two,
which only means something if a bug in one is not copied into the other.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["CSV_METRICS", "totals_csv"]

#: The metric columns after ``user_id``, in the JSON report's key order.
CSV_METRICS: Final = (
    "average_time_to_win",
    "average_value_annualized_per_won_opportunity",
    "count",
    "count_total_complete",
    "count_total_won",
    "count_win_rate",
    "sales_velocity",
    "value_total_complete",
    "value_total_won",
    "value_win_rate",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def totals_csv(rows: Sequence[Mapping[str, object]]) -> bytes:
    """The CSV body for the per-user *rows* of a JSON report (``report["data"]``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("user_id", *CSV_METRICS))
    for row in rows:
        writer.writerow([_cell(row["user_id"]), *(_cell(row[name]) for name in CSV_METRICS)])
    return out.getvalue().encode()
