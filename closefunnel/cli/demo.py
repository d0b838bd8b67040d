"""
``closefunnel demo``: this month to date against the same days last month and last year,
for every pipeline of an in-process emulator's demo organization. No key, no network.

On the 1st of a month, month-to-date is a single day, which is a poor first look at a
funnel: the demo then shows last month, whole, against the month before and the same month
last year. The compared periods' dates in the headings are the ones the client resolved
(``ComparedPeriod.compared_range``), so they are the dates the numbers cover.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final

from rich.console import RenderableType
from rich.text import Text

import closefunnel.cli._render as _render
from closefunnel._client import BulkItem, Client
from closefunnel._compare import FunnelComparison
from closefunnel._errors import CloseFunnelError
from closefunnel._query import DateRange, FunnelQuery
from closefunnel.cli._connection import local_zone, names, start_emulator, zone_hours
from closefunnel.cli._console import Console
from closefunnel.cli._failures import FailureContext, failure_message
from closefunnel.cli._status import ExitStatus

__all__ = ["DEMO_COMPARED", "demo", "demo_range"]

#: What ``closefunnel demo`` compares its window with.
DEMO_COMPARED: Final = ("same-days-last-month", "same-days-last-year")


def demo_range(now: datetime, zone: tzinfo) -> DateRange:
    """
    The demo's window in *zone*, whole days: this month to date (the 1st to the end of
    today), or on the 1st, when that would be one day, the whole of last month.
    """
    local = now.astimezone(zone)
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if today.day == 1:
        last_month = (today - timedelta(days=1)).replace(day=1)
        return DateRange(last_month, today)
    return DateRange(today.replace(day=1), today + timedelta(days=1))


def _window(base: DateRange, now: datetime) -> str:
    """What the demo compares, in words, with the base's dates."""
    label = _render.range_label(base)
    if base.end <= now:  # the 1st of a month: last month, whole
        return f"last month ({label}) against the month before and the same month last year"
    return f"this month to date ({label}) against the same days last month and last year"


def _zone_label(zone: timezone) -> str:
    hours = zone_hours(zone)
    if hours == 0:
        return ""
    sign = "+" if hours > 0 else "-"
    whole, minutes = divmod(round(abs(hours) * 60), 60)
    return f"{sign}{whole:02d}:{minutes:02d}"


def demo(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """Start the emulator, fetch every pipeline's comparison concurrently, print them."""
    zone = local_zone(ns.now, ns.tz_offset)
    now = ns.now if ns.now is not None else datetime.now(zone)
    base = demo_range(now, zone)
    started = time.perf_counter()

    async def run() -> tuple[list[BulkItem[FunnelComparison]], dict[str, str], dict[str, str], int]:
        async with start_emulator(now) as emu:
            async with Client(
                api_key=emu.api_key,
                base_url=emu.base_url,
                tz_offset=zone_hours(zone),
                clock=emu.now,
            ) as client:
                user_names, pipeline_names = await names(client)
                if not pipeline_names:
                    pipeline_names = {p.id: p.name for p in await client.pipelines()}
                queries = [FunnelQuery(pipeline=p, report_range=base) for p in pipeline_names]
                items = [item async for item in client.compare_many(queries, *DEMO_COMPARED)]
            order = {query.pipeline: index for index, query in enumerate(queries)}
            items.sort(key=lambda item: order[item.query.pipeline])
            return items, user_names, pipeline_names, len(emu.log)

    items, user_names, pipeline_names, requests = asyncio.run(run())
    elapsed = time.perf_counter() - started
    shown: list[RenderableType] = [
        Text.assemble(
            ("closefunnel demo", "bold"),
            f": {len(items)} pipelines of the emulator's demo organization, "
            f"{_window(base, now)} (UTC{_zone_label(zone)}).\n",
            (f"{requests} requests, concurrently, in {elapsed:.2f} s.", "dim"),
        ),
        Text(),
    ]
    failures = []
    context = FailureContext(base_url="the in-process emulator", emulator=True)
    for item in items:
        name = pipeline_names.get(item.query.pipeline, item.query.pipeline)
        if item.result is None:
            failures.append((name, failure_message(item.error or CloseFunnelError(), context)))
            continue
        shown += _render.comparison_tables(
            item.result,
            title=name,
            base_label=_render.range_label(base),
            compared_labels=[
                _render.period_label(None, period.compared_range)
                for period in item.result.comparisons
            ],
            user_names=user_names,
        )
    done = [item.result for item in items if item.result is not None]
    note = _render.length_note(done[0], base_spec=base, now=now) if done else None
    if note is not None:  # whole months of different lengths (February against January)
        shown.append(note)
    console.show(*shown)
    if failures:
        console.show(_render.failures_table(failures), stderr=True)
        return ExitStatus.FAILED
    console.show(
        Text(
            "Against your own organization: CLOSE_API_KEY=... closefunnel bulk --all-pipelines "
            f"--from {base.start:%Y-%m-%d} --to {base.end:%Y-%m-%d} "
            "--compare same-days-last-month",
            style="dim",
        )
    )
    return ExitStatus.OK
