"""
One budget for every client on the key: two clients in one process sharing the gate
through Redis pace themselves as one (no 429s), where two local gates draw 429s; and
one client's 429 pauses the other too, followed by a single probe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import closefunnel as cf
from closefunnel.emulator import Emulator

from .conftest import distinct_queries, emulator_config, totals_log

N = 40


async def _fetch_split(emu: Emulator, **options: Any) -> tuple[list[int], list[str]]:
    """Two clients on one key fetch N distinct reports at once, half each."""
    queries = distinct_queries(emu, N)
    clients = [cf.Client(api_key=emu.api_key, base_url=emu.base_url, **options) for _ in range(2)]
    errors: list[str] = []

    async def run(client: cf.Client, mine: list[cf.FunnelQuery]) -> int:
        ok = 0
        async for item in client.totals_many(mine):
            if item.error is None:
                ok += 1
            else:
                errors.append(repr(item.error))
        return ok

    try:
        async with asyncio.timeout(60):
            oks = await asyncio.gather(*(run(c, queries[i::2]) for i, c in enumerate(clients)))
    finally:
        for client in clients:
            await client.aclose()
    return list(oks), errors


@pytest.mark.slow
async def test_two_clients_sharing_redis_draw_no_429s(redis_url: str, prefix: str) -> None:
    config = emulator_config(rps=10, window=1.0, burst=1.0, latency=0.01)
    async with Emulator(config) as emu:
        oks, errors = await _fetch_split(emu, redis=redis_url, redis_prefix=prefix)
        log = totals_log(emu)
    assert errors == []
    assert sum(oks) == N, oks
    assert all(ok > 0 for ok in oks), oks
    assert [e.status for e in log if e.status == 429] == []
    assert sum(e.status == 200 for e in log) == N

    # The contrast that proves the test: the same run with a gate per client.
    async with Emulator(config) as emu:
        oks, errors = await _fetch_split(emu)
        limited = sum(e.status == 429 for e in totals_log(emu))
    assert sum(oks) == N
    assert errors == []
    assert limited > 0, "two local gates on one key should have drawn 429s"


class _Hostile:
    """
    A proxy in front of the emulator that answers its first report request with a 429
    (``Retry-After: 1``, no RateLimit header) and logs when each request arrived and
    when its answer left.
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.log: list[tuple[float, float, int]] = []  # (arrived, answered, status)
        self.limited = False
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        body = await request.read()
        if request.path.startswith("/api/v1/report/funnel") and not self.limited:
            self.limited = True
            self.log.append((arrived, loop.time(), 429))
            return web.Response(status=429, headers={"Retry-After": "1"})
        assert self.session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        url = self.emu.base_url.rstrip("/") + request.path_qs.removeprefix("/api/v1")
        async with self.session.request(
            request.method, url, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            keep = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() in ("content-type", "ratelimit")
            }
            status = upstream.status
        if request.path.startswith("/api/v1/report/funnel"):
            self.log.append((arrived, loop.time(), status))
        return web.Response(status=status, body=payload, headers=keep)

    async def __aenter__(self) -> _Hostile:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/api/v1/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()


async def _wait_for_field(conn: Any, prefix: str, field: str) -> None:
    """Until some gate's state under *prefix* has *field* set (non-zero)."""
    while True:
        async for key in conn.scan_iter(match=f"{prefix}:*:state"):
            value = await conn.hget(key, field)
            if value not in (None, b"0", b""):
                return
        await asyncio.sleep(0.005)


async def test_one_clients_429_pauses_the_other_then_one_probe(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    conn = aioredis.Redis.from_url(redis_url)
    async with Emulator(emulator_config(latency=0.01)) as emu, _Hostile(emu) as hostile:
        queries = distinct_queries(emu, 7)
        options: dict[str, Any] = {"api_key": emu.api_key, "base_url": hostile.base_url}
        a = cf.Client(**options, redis=redis_url, redis_prefix=prefix)
        b = cf.Client(**options, redis=redis_url, redis_prefix=prefix)
        try:
            async with asyncio.timeout(30):
                first = asyncio.ensure_future(a.funnel_totals(queries[0]))
                # B starts once the 429 is in the shared state: it must honour that pause.
                await _wait_for_field(conn, prefix, "rate_limited")
                rest = await asyncio.gather(*(b.funnel_totals(q) for q in queries[1:]))
                await first
        finally:
            await a.aclose()
            await b.aclose()
            await conn.aclose()
    assert len(rest) == len(queries) - 1
    statuses = [status for _, _, status in hostile.log]
    assert statuses[0] == 429, statuses
    assert statuses.count(429) == 1, statuses
    limited_at = hostile.log[0][0]
    after = sorted(hostile.log[1:])
    assert len(after) == len(queries)  # A's retry and B's six
    # Nothing arrived during the pause (Retry-After: 1, from the 429's arrival on)...
    early = [arrived - limited_at for arrived, _, _ in after if arrived < limited_at + 1.0]
    assert early == [], f"requests arrived {early} s into a 1 s shared pause"
    # ... and the first one after it was a lone probe: the next arrived after its answer.
    assert after[1][0] >= after[0][1], "a second request went out before the probe's answer"
