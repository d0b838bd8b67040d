"""
How reports read to people: metric labels, number formats, change marks, range labels.

Close sends money as integer cents, durations as seconds and rates as fractions; people
read dollars, days and percentages. Every view for people (the CLI's rich tables and
charts, the HTML report, a notebook's ``_repr_html_``) formats through here, so a number
reads the same in a terminal, a browser and a notebook. Everything here is pure text:
no rich, no HTML, no model (so the models can render themselves without an import cycle).

:func:`clean` is the first half of the trust boundary for every view: control characters
and bidirectional overrides in text a stranger typed (a user or pipeline name) are
replaced, so nothing can move a cursor or make a line appear to say something else. Each
view then escapes for its own medium (rich: never parsed as markup; HTML: entities).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final, Literal

import attrs

from closefunnel._query import DateRange, RangeSpec, format_instant

__all__ = [
    "FUNNEL_STAGES",
    "LOWER_IS_BETTER",
    "METRIC_LABELS",
    "NONE",
    "ChangeMark",
    "Number",
    "Tone",
    "change_mark",
    "clean",
    "format_delta",
    "format_value",
    "range_label",
    "range_text",
    "sort_key",
]

#: What each metric is called in tables, in the order tables list them (funnel order).
METRIC_LABELS: Final[Mapping[str, str]] = {
    "count": "Opportunities",
    "count_total_complete": "Completed",
    "count_total_won": "Won",
    "count_win_rate": "Win rate",
    "value_total_complete": "Value completed",
    "value_total_won": "Value won",
    "value_win_rate": "Value win rate",
    "average_value_annualized_per_won_opportunity": "Avg value per win",
    "average_time_to_win": "Avg time to win",
    "sales_velocity": "Velocity / day",
}

#: The funnel's stages, widest first, as every chart draws them: opportunities in the
#: report, then those completed (won or lost), then those won.
FUNNEL_STAGES: Final = ("count", "count_total_complete", "count_total_won")

#: Metrics where a drop is good news, so their marks are coloured the other way round.
LOWER_IS_BETTER: Final = frozenset({"average_time_to_win"})

_MONEY: Final = frozenset(
    {
        "value_total_complete",
        "value_total_won",
        "average_value_annualized_per_won_opportunity",
        "sales_velocity",
    }
)
_RATES: Final = frozenset({"count_win_rate", "value_win_rate"})
_DURATIONS: Final = frozenset({"average_time_to_win"})
#: What a missing value (None, or a number that is not finite) is shown as: an em dash.
NONE: Final = "\u2014"
_DASH: Final = "\u2013"  # en dash, for date spans
_DAY: Final = 86_400
#: Beyond this, in the unit shown (dollars, percent, days, opportunities), a number is
#: written in scientific notation.
_HUGE: Final = 1e12

Number = int | float

# C0 controls but tab and newline, DEL, C1 controls (ESC and CSI/OSC among them), and the
# bidirectional overrides and isolates that reorder what a line appears to say.
_CONTROL: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_REPLACEMENT: Final = "\ufffd"


def clean(text: str) -> str:
    """*text* with every control character that could move the cursor, retitle the
    window or open a hyperlink replaced by U+FFFD (newline and tab are kept)."""
    return _CONTROL.sub(_REPLACEMENT, text)


# -- numbers -------------------------------------------------------------------------------


def _money(cents: Number, *, sign: bool = False) -> str:
    dollars = round(cents / 100)
    prefix = ("+" if dollars > 0 else "-" if dollars < 0 else "±") if sign else ""
    if not sign and dollars < 0:
        prefix = "-"
    return f"{prefix}${abs(dollars):,}"


def _missing(value: Number | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _huge(metric: str, value: Number, *, signed: bool) -> str | None:
    """
    Scientific notation for a number too big to print in full (a dash when scaling it
    overflows), or None for an ordinary number: one absurd value from a server must not
    push every other column of a table off the screen.
    """
    scale = 0.01 if metric in _MONEY else 100 if metric in _RATES else 1 / _DAY
    if metric not in _MONEY | _RATES | _DURATIONS:
        scale = 1
    try:
        shown = float(value) * scale
    except OverflowError:  # an int beyond float range
        return NONE
    if not math.isfinite(shown):
        return NONE
    if abs(shown) < _HUGE:
        return None
    sign = ("+" if shown > 0 else "-") if signed else "-" if shown < 0 else ""
    unit = "$" if metric in _MONEY else ""
    suffix = (
        (" pp" if signed else "%") if metric in _RATES else " d" if metric in _DURATIONS else ""
    )
    return f"{sign}{unit}{abs(shown):.3g}{suffix}"


def format_value(metric: str, value: Number | None) -> str:
    """*value* of *metric* for people: "$12,345" from cents, "34.5%", "3.2 d", "1,760".

    None and non-finite numbers (an overflowed delta) are an em dash."""
    if _missing(value):
        return NONE
    assert value is not None
    huge = _huge(metric, value, signed=False)
    if huge is not None:
        return huge
    if metric in _MONEY:
        return _money(value)
    if metric in _RATES:
        return f"{value * 100:.1f}%"
    if metric in _DURATIONS:
        return f"{value / _DAY:.1f} d"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def format_delta(metric: str, value: Number | None) -> str:
    """A signed difference: "+$1,200", "-2.5 pp" (percentage points), "+0.4 d", "+12"."""
    if _missing(value):
        return NONE
    assert value is not None
    huge = _huge(metric, value, signed=True)
    if huge is not None:
        return huge
    if metric in _MONEY:
        return _money(value, sign=True)
    if metric in _RATES:
        return f"{value * 100:+.1f} pp"
    if metric in _DURATIONS:
        return f"{value / _DAY:+.1f} d"
    return f"{value:+,}" if isinstance(value, int) else f"{value:+,.1f}"


#: Whether a change is good news ("good"), bad news ("bad"), or neither ("none": no
#: change, or no number to compare). Each view picks its colours from this.
Tone = Literal["good", "bad", "none"]


@attrs.frozen
class ChangeMark:
    """A relative change for people: ``text`` ("▲ 25.0%", "—") and its :data:`Tone`."""

    text: str
    tone: Tone


def change_mark(metric: str, change: float | None) -> ChangeMark:
    """
    The relative change with a ▲/▼ mark, and whether it is good news.

    For :data:`LOWER_IS_BETTER` metrics (a longer time to win is bad) the tones swap, so
    "good" (green in every view) always means "better" at a glance.
    """
    if change is None or _missing(change):
        return ChangeMark(NONE, "none")
    if change == 0:
        return ChangeMark("0.0%", "none")
    up = change > 0
    good = up != (metric in LOWER_IS_BETTER)
    mark = "▲" if up else "▼"
    percent = abs(change) * 100
    shown = f"{percent:.3g}" if percent >= _HUGE else f"{percent:,.1f}"
    return ChangeMark(f"{mark} {shown}%", "good" if good else "bad")


def sort_key(value: Number | None, name: str) -> tuple[int, float, str]:
    """How per-user tables are ordered: biggest *value* first, users with nothing on the
    base side last, then by *name* (case-insensitively)."""
    return (value is None, -(value or 0), name.casefold())


# -- ranges --------------------------------------------------------------------------------


def range_text(spec: RangeSpec | None) -> str:
    """A range as typed on the command line: its name, or ``START..END`` in ISO 8601."""
    if spec is None:
        return ""
    if isinstance(spec, DateRange):
        return f"{format_instant(spec.start)}..{format_instant(spec.end)}"
    return spec


def _day(value: datetime) -> str:
    return f"{value:%b} {value.day}"


def range_label(spec: RangeSpec | None) -> str:
    """
    A range for a table heading: "this month", or "Nov 1-18, 2026" for a date range.

    Date ranges are half-open, so an end at midnight is shown as the day before (the
    last day inside the range), which is how people say date ranges.
    """
    if spec is None:
        return "any time"
    if not isinstance(spec, DateRange):
        return spec.replace("-", " ")
    start, end = spec.start, spec.end
    midnight = end.hour == end.minute == end.second == end.microsecond == 0
    if not midnight or start.time() != datetime.min.time():
        return f"{start:%Y-%m-%d %H:%M} {_DASH} {end:%Y-%m-%d %H:%M}"
    last = end - timedelta(days=1)
    if last.date() == start.date():
        return f"{_day(start)}, {start.year}"
    if (start.year, start.month) == (last.year, last.month):
        return f"{_day(start)}{_DASH}{last.day}, {start.year}"
    if start.year == last.year:
        return f"{_day(start)} {_DASH} {_day(last)}, {start.year}"
    return f"{_day(start)}, {start.year} {_DASH} {_day(last)}, {last.year}"
