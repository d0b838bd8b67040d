"""
A small Close of a test's own on 127.0.0.1, answering with whatever names and numbers
the test gives it: pipelines and users named by strangers (markup, formulas), for the
escaping and CSV-guard tests. It speaks real HTTP (aiohttp.web), so the client under
test goes through its whole stack; it can run in the test's loop or in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
from aiohttp import web

from tests.redis_server import free_port

METRICS = {
    "average_time_to_win": 864_000.0,
    "average_value_annualized_per_won_opportunity": 120_000,
    "count": 40,
    "count_total_complete": 10,
    "count_total_won": 4,
    "count_win_rate": 0.4,
    "sales_velocity": 1_920.0,
    "value_total_complete": 1_200_000,
    "value_total_won": 480_000,
    "value_win_rate": 0.4,
}


@attrs.define
class FakeClose:
    """``pipelines`` as ``(id, name)``, ``users`` as ``(id, first, last)``; every report
    has each user with :data:`METRICS` (halved for a compared range)."""

    pipelines: list[tuple[str, str]]
    users: list[tuple[str, str, str]]
    port: int = attrs.field(factory=free_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/"

    def _app(self) -> web.Application:
        async def pipelines(_: web.Request) -> web.Response:
            data = [{"id": i, "name": n, "statuses": []} for i, n in self.pipelines]
            return web.json_response({"data": data, "has_more": False})

        async def users(_: web.Request) -> web.Response:
            data = [
                {"id": i, "first_name": f, "last_name": last, "email": None}
                for i, f, last in self.users
            ]
            return web.json_response({"data": data, "has_more": False})

        async def totals(request: web.Request) -> web.Response:
            body: dict[str, Any] = await request.json()
            compared = any(key.startswith("compared_") for key in body)
            scale = 2 if compared else 1
            metrics = {
                k: (v // scale if isinstance(v, int) else v / scale) for k, v in METRICS.items()
            }
            rows = [{"user_id": user_id, **metrics} for user_id, _, _ in self.users]
            return web.json_response({"aggregations": metrics, "data": rows})

        app = web.Application()
        app.router.add_get("/api/v1/pipeline/", pipelines)
        app.router.add_get("/api/v1/user/", users)
        app.router.add_post("/api/v1/report/funnel/opportunity/totals/", totals)
        return app

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeClose]:
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeClose]:
        """Serve from a thread of its own (for synchronous tests)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop: asyncio.Future[None] | None = None

        async def main() -> None:
            nonlocal stop
            stop = loop.create_future()
            async with self.serving():
                ready.set()
                await stop

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "the fake Close did not start"
        try:
            yield self
        finally:
            assert stop is not None
            loop.call_soon_threadsafe(stop.set_result, None)
            thread.join(10)
            loop.close()
