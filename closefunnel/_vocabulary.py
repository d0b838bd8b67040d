"""
Close's vocabulary: the names Close's API uses, each spelled once.

Report types, relative and same-days range names, the ten metric names and the endpoint
paths are Close's words, not ours: they come from the reference page and change only
when Close changes them. Every other module (queries, models, the merge, the CLI)
imports them from here, so a typo cannot hide in one copy of eight. The emulator keeps
its own copy on purpose: it is a second implementation that can disagree with this one.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "METRIC_NAMES",
    "ME_PATH",
    "PIPELINE_PATH",
    "RELATIVE_RANGES",
    "REPORT_TYPES",
    "SAME_DAYS_RANGES",
    "TOTALS_PATH",
    "USER_PATH",
]

#: The report types Close accepts in ``type``.
REPORT_TYPES: Final = ("active-stage-cohort", "created-cohort")

#: The eleven relative range names Close accepts for report, cohort and compared ranges.
RELATIVE_RANGES: Final = (
    "today",
    "this-week",
    "this-month",
    "this-quarter",
    "this-year",
    "yesterday",
    "last-week",
    "last-month",
    "last-quarter",
    "last-year",
    "all-time",
)

#: The names Close accepts in ``compared_datetime_range``: the base days shifted back.
SAME_DAYS_RANGES: Final = (
    "same-days-last-week",
    "same-days-last-month",
    "same-days-last-quarter",
    "same-days-last-year",
)

#: The ten metrics of a funnel totals report, in the reference page's (alphabetical) order.
METRIC_NAMES: Final = (
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

#: The funnel totals report, relative to the API root.
TOTALS_PATH: Final = "report/funnel/opportunity/totals/"
#: The organization's pipelines (a paged list).
PIPELINE_PATH: Final = "pipeline/"
#: The organization's users (a paged list).
USER_PATH: Final = "user/"
#: Who the credentials belong to.
ME_PATH: Final = "me/"

#: The environment variable the API key is read from (client, CLI and web app alike).
API_KEY_ENV: Final = "CLOSE_API_KEY"
#: The environment variable the API root is read from.
BASE_URL_ENV: Final = "CLOSE_BASE_URL"
