"""
The funnel as a bar chart in the terminal: opportunities → completed → won, per period.

A table of ten metrics says how big each stage is; a bar says how big it is *next to the
others*: where the funnel narrows, and whether last month narrowed in the same place.
One row per stage, one column per period (the base first), every bar on one scale, so
bars can be compared down a column and across a row alike.

The chart is for people at a terminal: the commands draw it only there (never into a pipe
or a file, where it would be noise for ``grep`` and ``diff``), and ``--no-chart`` leaves it
out. Its only text from a response is the title (a pipeline name), which goes through
:func:`~closefunnel.cli._render.plain` like every other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import attrs
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from closefunnel._display import FUNNEL_STAGES, METRIC_LABELS, Number, format_value
from closefunnel._models import FunnelMetrics
from closefunnel.cli._render import plain

__all__ = ["FunnelChart", "bar"]

#: One colour per period: the base, then each compared period in turn.
_STYLES: Final = ("cyan", "yellow", "green", "magenta", "blue", "red")
#: Eighths of a cell, for bar ends finer than one character.
_EIGHTHS: Final = " ▏▎▍▌▋▊▉"
_FULL: Final = "█"
#: Bars never get longer than this, however wide the terminal: a chart is read at a glance.
_MAX_BAR: Final = 40
#: Nor shorter: below this a bar cannot show a difference worth reading.
_MIN_BAR: Final = 4
_GAP: Final = 2


def bar(fraction: float, width: int) -> str:
    """A horizontal bar *fraction* (0..1) of *width* cells long, to an eighth of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    return _FULL * full + (_EIGHTHS[rest] if rest else "")


def _length(value: Number | None) -> float:
    """What a bar is drawn from: 0 for a missing, negative, non-finite or absurd number."""
    if value is None:
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


@attrs.frozen
class FunnelChart:
    """
    A rich renderable: the funnel stages of each ``(label, metrics)`` period as bars.

    It sizes itself to the width it is given: columns share the width, bars take what the
    numbers leave, between :data:`_MIN_BAR` and :data:`_MAX_BAR` cells.
    """

    title: str
    periods: Sequence[tuple[str, FunnelMetrics]]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        values = [[getattr(m, stage) for stage in FUNNEL_STAGES] for _, m in self.periods]
        texts = [
            [format_value(stage, v) for stage, v in zip(FUNNEL_STAGES, row, strict=True)]
            for row in values
        ]
        top = max((_length(v) for row in values for v in row), default=0.0) or 1.0
        label_width = max(len(METRIC_LABELS[stage]) for stage in FUNNEL_STAGES)
        number_width = max((len(t) for row in texts for t in row), default=1)
        columns = max(1, len(self.periods))
        room = (options.max_width - label_width) // columns - _GAP - number_width - 1
        width = max(_MIN_BAR, min(_MAX_BAR, room))
        table = Table(
            title=plain(self.title),
            title_justify="left",
            title_style="bold",
            box=None,
            pad_edge=False,
            padding=(0, _GAP, 0, 0),
            show_edge=False,
        )
        table.add_column("", no_wrap=True)
        for index, (label, _) in enumerate(self.periods):
            table.add_column(
                plain(label, style=_STYLES[index % len(_STYLES)]),
                no_wrap=True,
                overflow="ellipsis",
                min_width=width + 1 + number_width,
            )
        for s, stage in enumerate(FUNNEL_STAGES):
            cells: list[Text | str] = [METRIC_LABELS[stage]]
            for index, row in enumerate(values):
                style = _STYLES[index % len(_STYLES)]
                drawn = bar(_length(row[s]) / top, width)
                cells.append(Text.assemble((drawn, style), " ", texts[index][s]))
            table.add_row(*cells)
        yield table
        yield Text()  # a blank line before what follows, as after the tables
