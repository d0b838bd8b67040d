"""
One hostile header cannot lock a long-lived client out (issue 10 §5), over a real socket:
a server on 127.0.0.1 answers once with a reset a day or weeks away, then normally.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path

import pytest
from aiohttp import web

import closefunnel as cf

SAMPLE = (Path(__file__).parent.parent / "samples" / "funnel_totals_response.json").read_bytes()
QUERY = cf.FunnelQuery(pipeline="pipe_1", report_range="this-month")
Hostile = Callable[[int], web.Response]


@asynccontextmanager
async def serve(first: Hostile) -> AsyncIterator[tuple[str, list[float]]]:
    """Answer the first request with *first*, every later one with a healthy 200."""
    arrivals: list[float] = []

    async def totals(_: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return first(len(arrivals))
        return web.Response(
            body=SAMPLE,
            content_type="application/json",
            headers={"RateLimit": "limit=20, remaining=19, reset=1.0"},
        )

    app = web.Application()
    app.router.add_post("/api/v1/report/funnel/opportunity/totals/", totals)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api/v1/", arrivals
    finally:
        await runner.cleanup()


def spent_for_a_billion_seconds(_: int) -> web.Response:
    return web.Response(
        body=SAMPLE,
        content_type="application/json",
        headers={"RateLimit": "limit=20, remaining=0, reset=1000000000"},
    )


def limited_for_three_weeks(_: int) -> web.Response:
    weeks_ahead = formatdate(time.time() + 21 * 86_400, usegmt=True)
    return web.Response(status=429, headers={"Retry-After": weeks_ahead})


@pytest.mark.parametrize("first", [spent_for_a_billion_seconds, limited_for_three_weeks])
async def test_after_max_wait_one_probe_goes_out_and_the_gate_learns_again(
    first: Hostile,
) -> None:
    policy = cf.RetryPolicy(max_wait=0.4, backoff_initial=0.0, backoff_max=0.0)
    async with (
        serve(first) as (base_url, arrivals),
        cf.Client(api_key="api_x.y", base_url=base_url, retry=policy) as client,
    ):
        if first is spent_for_a_billion_seconds:
            await client.funnel_totals(QUERY)  # answered, with a budget spent for 31 years
        else:
            with pytest.raises(cf.RateLimitedError):
                await client.funnel_totals(QUERY)  # a pause longer than max_wait
        # While the hold lasts, a call is told at once and nothing is sent.
        with pytest.raises(cf.RateLimitedError) as caught:
            await client.funnel_totals(QUERY)
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 3600
        assert len(arrivals) == 1
        # After max_wait, the next call goes out as the probe; the gate learned again.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                totals = await client.funnel_totals(QUERY)
                break
            except cf.RateLimitedError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the gate stayed locked past max_wait")
        assert totals.aggregations is not None
        for _ in range(5):
            await client.funnel_totals(QUERY)
        assert len(arrivals) == 7
