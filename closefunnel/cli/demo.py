"""
``closefunnel demo``: this month to date against the same days last month and last year,
for every pipeline of an in-process emulator's demo organization. No key, no network.

The calendar maths (the month-to-date range and the same days shifted back by calendar
months) is here because only the demo's headings need it: the emulator works out the
compared ranges on its own, as Close does.
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

__all__ = ["DEMO_COMPARED", "demo", "demo_range", "months_back"]

#: What ``closefunnel demo`` compares this month-to-date with, and by how many months.
DEMO_COMPARED: Final = ("same-days-last-month", "same-days-last-year")
_MONTHS_BACK: Final = {"same-days-last-month": 1, "same-days-last-year": 12}


def months_back(value: datetime, months: int) -> datetime:
    """*value* moved back by calendar *months*, the day clamped (Mar 31 -> Feb 28/29)."""
    index = value.year * 12 + value.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=value.tzinfo)
    last_day = (following - timedelta(days=1)).day
    return value.replace(year=year, month=month, day=min(value.day, last_day))


def demo_range(now: datetime, zone: tzinfo) -> DateRange:
    """This month to date in *zone*, whole days: the 1st to the end of today."""
    local = now.astimezone(zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return DateRange(start, end)


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
    labels = [
        _render.range_label(
            DateRange(
                months_back(base.start, _MONTHS_BACK[c]), months_back(base.end, _MONTHS_BACK[c])
            )
        )
        for c in DEMO_COMPARED
    ]
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
            f"this month to date ({_render.range_label(base)}, UTC{_zone_label(zone)}) "
            "against the same days last month and last year.\n",
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
            compared_labels=labels,
            user_names=user_names,
        )
    console.show(*shown)
    if failures:
        console.show(_render.failures_table(failures), stderr=True)
        return ExitStatus.FAILED
    console.show(
        Text(
            "Against your own organization: CLOSE_API_KEY=... closefunnel bulk --all-pipelines "
            "--from 2026-11-01 --to 2026-11-19 --compare same-days-last-month",
            style="dim",
        )
    )
    return ExitStatus.OK
