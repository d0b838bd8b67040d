"""
Reports to render, fetched from the emulator over a real socket, and hostile ones.

The emulator's reports are what a user renders; the hostile ones are decoded from JSON a
stranger could have sent (names built to break out of HTML), as the client decodes them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
#: Strings typed by strangers, each aimed at a different way out of HTML or SVG text.
HOSTILE = (
    "<script>alert(1)</script>",
    '"onload="alert(2)',
    "' onmouseover='alert(3)",
    "</svg><script>alert(4)</script>",
    "</td></tr></table><img src=x onerror=alert(5)>",
    "\u202eevil\u2066 bidi",
    "&amp; &lt;b&gt; \x1b[2J",
)


@attrs.frozen
class Fetched:
    """Reports from the emulator: a comparison, plain totals, and the users' names."""

    comparison: cf.FunnelComparison
    totals: cf.FunnelTotals
    names: dict[str, str]
    pipeline: str


@pytest.fixture(name="fetched", scope="module")
def _fetched() -> Fetched:
    async def go() -> Fetched:
        async with (
            Emulator(EmulatorConfig(now=NOW)) as emu,
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now) as client,
        ):
            pipeline = (await client.pipelines())[0]
            names = {user.id: user.name for user in await client.users()}
            query = cf.FunnelQuery(pipeline=pipeline.id, report_range="this-month")
            comparison = await client.compare_totals(query, "last-month", "last-year")
            totals = await client.funnel_totals(query)
            return Fetched(comparison, totals, names, pipeline.name)

    return asyncio.run(go())


def metrics(scale: int = 1) -> dict[str, Any]:
    """One report's ten metrics, as Close sends them."""
    return {
        "average_time_to_win": 86_400.0 * scale,
        "average_value_annualized_per_won_opportunity": 10_000 * scale,
        "count": 10 * scale,
        "count_total_complete": 5 * scale,
        "count_total_won": 2 * scale,
        "count_win_rate": 0.4,
        "sales_velocity": 123.0 * scale,
        "value_total_complete": 50_000 * scale,
        "value_total_won": 20_000 * scale,
        "value_win_rate": 0.4,
    }


def hostile_totals(scale: int = 1) -> cf.FunnelTotals:
    """A report whose user ids are :data:`HOSTILE`, decoded as the client decodes one."""
    data = [{**metrics(scale + n), "user_id": uid} for n, uid in enumerate(HOSTILE)]
    return cf.FunnelTotals.from_json(orjson.dumps({"aggregations": metrics(scale), "data": data}))
