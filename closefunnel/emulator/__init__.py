"""
A faithful Close API emulator, for tests, demos, benchmarks and users' own test suites.

``async with Emulator(EmulatorConfig(...)) as emu:`` serves a real aiohttp.web app on
127.0.0.1 (free port) with:

- ``POST /api/v1/report/funnel/opportunity/totals/`` (JSON, or per-user CSV for
  ``Accept: text/csv``), every documented parameter, ``X-TZ-Offset``;
- ``GET /api/v1/pipeline/``, ``GET /api/v1/user/``, ``GET /api/v1/me/``;
- Close's auth (Basic with an API key as username and an empty password, or
  ``Bearer <token>``) and error bodies (400 ``{"errors": [...], "field-errors": {...}}``,
  401/404/405/413 ``{"error": "..."}``);
- Close's throttle (per key and endpoint group, plus an organization cap), its headers in
  the configured style, 429 with ``Retry-After`` (and optional legacy JSON bodies);
- fault injection (5xx, resets, truncated or malformed bodies, slow and stalled
  responses), random with a seed or scripted with :meth:`Emulator.fail_next`; latency;
- the ``docs-example`` dataset (answers the request on Close's docs page with exactly
  its response) and a seeded ``demo`` organization of any size.

Semantics where Close is silent (ours, chosen to reproduce the docs example):

- Ranges are half-open ``[start, end)``. Datetime ranges are ``{"start", "end"}`` ISO 8601
  strings with a zone, ``start < end``, years 1900-9000.
- Relative ranges are calendar periods in the request's zone (``X-TZ-Offset`` decimal
  hours east of UTC, default UTC; ``|offset| < 24``) around the emulator's clock
  (``EmulatorConfig.now`` or the real time): ``today``/``yesterday`` are days,
  ``this-``/``last-week`` Monday-based weeks, then months, quarters, years; each covers
  the whole period (also its future part). ``all-time`` is unbounded.
- ``active-stage-cohort`` (needs a report range; a cohort range is ignored): the members
  are the opportunities created before the range's end and not closed (won or lost)
  before its start. ``created-cohort`` (needs a cohort range): the members are those
  created inside the cohort range; outcomes count inside the report range when one is
  given, else at any time (the data holds no future events).
- Then, within the pipeline, the saved search's opportunities (if ``query`` is given)
  and the user scope (listed users plus members of listed groups; empty = everyone;
  unknown ids match no one): ``count`` = members; wins and losses inside the outcome
  range give ``count_total_won``, ``count_total_complete`` (won + lost),
  ``count_win_rate`` (won/complete, 0 when nothing completed); values are annualized
  cents (monthly x 12, annual and one-time as is): ``value_total_won``,
  ``value_total_complete``, ``value_win_rate`` (won/complete value, 0 when none);
  ``average_time_to_win`` = mean seconds from creation to win, rounded to whole seconds
  (null when nothing won); ``average_value_annualized_per_won_opportunity`` = value won /
  count won rounded to cents (0 when nothing won); ``sales_velocity`` = count x win rate
  x (value won / count won) / max(1, mean days to win), rounded to cents (0 when nothing
  won). Whole rates are written as JSON integers (``1``, ``0``), as Close prints them.
- ``data`` has one row per user in scope with at least one member (sorted by user id);
  ``aggregations`` sums over them. Keys are in alphabetical order, as on Close's page.
- A compared range returns only the compared report, which is the base report of the
  request with the compared range in place of the paired base range (the report range of
  an active-stage report, the cohort range of a created-cohort one).
  ``compared_relative_range`` needs a relative paired range, ``compared_datetime_range``
  (``same-days-last-week|month|quarter|year``) a datetime one, which it shifts back by one
  calendar week/month/quarter/year at both ends in the request's zone (day of month
  clamped: Mar 31 -> Feb 28/29); ``compared_custom_range`` goes with either. One compared
  field at most.
- Bodies are checked strictly: unknown fields, wrong types, bad enums, both relative and
  datetime forms of one range, a missing required range, a compared range without its
  paired base range, a malformed or empty datetime range, a non-``saved_search`` query and
  ``users`` that is not a list of strings are all 400 with ``field-errors``; ``null`` for
  an optional field means absent. An unknown pipeline or saved search is 404. Bodies over
  ``max_body`` get 413. Nothing but an injected fault answers 5xx.
- Throttle: per (key, endpoint group) a bucket of ``ceil(rps x burst x window)`` tokens,
  full at first use and refilled by ``rps x window`` (capped) at each whole window since;
  per endpoint group an organization bucket at ``org_factor`` times that across all keys.
  A request takes one token from both or is refused (429, nothing taken). The header
  describes the bucket with the fewest remaining requests (``limit`` = its capacity,
  ``reset`` = seconds left in its window, 3 decimals); a 429 describes the refusing bucket
  and adds ``Retry-After: ceil(reset)``. Groups are method + the first two path segments
  below ``/api/v1/`` (``POST report/funnel``), as the client computes them. 401s are not
  throttled.
- Order per request: log the arrival, authenticate (401), throttle (429), draw a fault,
  then serve; every response (401 and 429 included) is delayed by ``latency +-
  jitter``.
"""

from closefunnel.emulator._app import STATE_KEY, EmulatorState, LogEntry, make_app
from closefunnel.emulator._cli import main
from closefunnel.emulator._config import ALL_FAULTS, FAULT_KINDS, EmulatorConfig
from closefunnel.emulator._data import Dataset, build_dataset
from closefunnel.emulator._log import RequestLog
from closefunnel.emulator._server import BackgroundEmulator, Emulator

__all__ = [
    "ALL_FAULTS",
    "FAULT_KINDS",
    "STATE_KEY",
    "BackgroundEmulator",
    "Dataset",
    "Emulator",
    "EmulatorConfig",
    "EmulatorState",
    "LogEntry",
    "RequestLog",
    "build_dataset",
    "main",
    "make_app",
]
