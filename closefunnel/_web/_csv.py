"""
The per-user CSV of a report or comparison, for ``GET /funnel/{pipeline_id}/users.csv``.

The rows are the command line's (``closefunnel totals --format csv``), built by the same
functions, so a sheet or script made for one reads the other, and the spreadsheet
guard (text cells that start like a formula get a leading ``'``) is the same code.
One row per user and period rather than the tidy one-row-per-metric table: it is the
shape Close's own CSV export has, and what people open in a spreadsheet.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.responses import Response

from closefunnel._compare import FunnelComparison
from closefunnel._models import FunnelTotals
from closefunnel._query import FunnelQuery, paired_range
from closefunnel.cli._render import comparison_csv_rows, totals_csv_rows, write_csv

__all__ = ["funnel_csv_response"]

# The pipeline id is the caller's text: only these characters reach the header.
_UNSAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9_.-]")


def funnel_csv_response(query: FunnelQuery, result: FunnelTotals | FunnelComparison) -> Response:
    """*result* as a ``text/csv`` download named after the pipeline."""
    _, base = paired_range(query)
    if isinstance(result, FunnelComparison):
        rows = comparison_csv_rows(result, base_range=base)
    else:
        rows = totals_csv_rows(result, base_range=base)
    name = _UNSAFE_FILENAME.sub("_", query.pipeline)[:80] or "funnel"
    return Response(
        write_csv(rows).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="funnel-{name}.csv"',
            "X-Content-Type-Options": "nosniff",
        },
    )
