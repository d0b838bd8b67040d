"""
A hostile HTTP/1.1 server on 127.0.0.1, for the trust-boundary tests.

It speaks just enough HTTP to be a client's upstream (request head, Content-Length
body, keep-alive) and answers each request with whatever the test's handler writes,
byte for byte: a lying Content-Length, an endless chunked stream, an error page that
echoes the request headers. It counts connections and requests, and notes when a
connection was closed by the client, so tests can see what the client really did.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import attrs


@attrs.frozen
class Request:
    """One request as the server read it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    raw_headers: str
    body: bytes


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A complete response with a correct Content-Length."""
    lines = [
        f"HTTP/1.1 {status} X",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Hostile:
    """The server; use ``async with Hostile(handler) as server`` and ``server.base_url``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[Request] = []
        self.closed_by_client = 0
        self._closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v1/"

    async def wait_closed_by_client(self, count: int = 1) -> None:
        """Wait (at most 10 s) until the client has hung up *count* connections."""
        async with asyncio.timeout(10):
            while self.closed_by_client < count:
                self._closed.clear()
                await self._closed.wait()

    async def wait_requests(self, count: int) -> None:
        """Wait (at most 10 s) until *count* requests have arrived."""
        async with asyncio.timeout(10):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def __aenter__(self) -> Hostile:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, target, headers, "\r\n".join(lines[1:]), body)
                self.requests.append(request)
                self._arrived.set()
                await self.handler(request, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
            self._closed.set()
        except asyncio.CancelledError:
            pass  # the server is shutting down; ending quietly keeps asyncio from logging it
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.contextmanager
def hostile_thread(handler: Handler) -> Iterator[Hostile]:
    """A :class:`Hostile` server served from a thread, for synchronous callers (the CLI)."""
    loop = asyncio.new_event_loop()
    server = Hostile(handler)
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with server:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@contextlib.asynccontextmanager
async def hostile(handler: Handler) -> AsyncIterator[Hostile]:
    """``async with hostile(handler) as server``: the server on this loop."""
    async with Hostile(handler) as server:
        yield server
