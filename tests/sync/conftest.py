"""
Fixtures for the blocking client: servers that answer from threads of their own.

A SyncClient blocks the thread that calls it, so what it talks to cannot run on that
thread's loop: the emulator is a :class:`BackgroundEmulator`, and the barrier server
below serves from its own loop in a daemon thread, on a real loopback socket.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Self

import pytest
from aiohttp import web

from closefunnel.emulator import BackgroundEmulator, Emulator, EmulatorConfig

#: A fixed clock for the demo dataset, so relative ranges mean the same every run.
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
#: An empty but valid funnel totals report.
EMPTY_REPORT = b'{"aggregations": null, "data": []}'


@pytest.fixture(name="emu")
def _emu() -> Iterator[Emulator]:
    """A small demo organization served from a thread of its own."""
    with BackgroundEmulator(EmulatorConfig(now=NOW, opportunities=1_500, slow_delay=300)) as emu:
        yield emu
        assert emu.internal_errors == []


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = 20.0) -> None:
    """Poll *condition* until it holds (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


class LoopbackServer:
    """An aiohttp.web app on a free loopback port, served from a daemon thread's own loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.arrived = 0

    @property
    def base_url(self) -> str:
        """The API root to give the client."""
        return f"http://127.0.0.1:{self._port}/api/v1/"

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one request (every method and path)."""
        raise NotImplementedError

    async def _count(self, request: web.Request) -> web.Response:
        self.arrived += 1
        return await self.handle(request)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._count)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _answer(request: web.Request) -> web.Response:
    body = EMPTY_REPORT if request.method == "POST" else b'{"data": [], "has_more": false}'
    return web.Response(body=body, content_type="application/json")


class BarrierServer(LoopbackServer):
    """
    Answers only once *parties* requests are in flight at the same time; until then each
    one waits (at most *patience* seconds, then a 504). Calls that were not really
    concurrent therefore never all succeed.
    """

    def __init__(self, parties: int, *, patience: float = 20.0) -> None:
        super().__init__()
        self.parties = parties
        self.patience = patience
        self.most_at_once = 0
        self._waiting = 0
        self._all_in: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self._all_in is None:
            self._all_in = asyncio.Event()
        self._waiting += 1
        self.most_at_once = max(self.most_at_once, self._waiting)
        if self._waiting >= self.parties:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), self.patience)
        except TimeoutError:
            return web.Response(status=504, text="not all parties arrived")
        finally:
            self._waiting -= 1
        return _answer(request)


class StallServer(LoopbackServer):
    """
    Answers the first *answer* requests at once (an empty report, an empty list) and
    holds every later one until the server stops; raise ``answer`` to let more through.
    """

    def __init__(self, answer: int) -> None:
        super().__init__()
        self.answer = answer
        self._release: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self._release is None:
            self._release = asyncio.Event()
        if self.arrived > self.answer:
            await self._release.wait()
        return _answer(request)

    async def _stop(self) -> None:
        if self._release is not None:
            self._release.set()
        await super()._stop()
