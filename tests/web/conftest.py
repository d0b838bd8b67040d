"""
Fixtures for the FastAPI tests: an emulator, the app served by uvicorn on loopback, and
Redis for the shared web cache.

Redis: ``REDIS_URL`` when set (a server others may use: every test namespaces its keys
with a prefix of its own and deletes only those), else a ``redis-server`` of this
session's own on a free port in a temporary directory; neither: the Redis tests skip
saying how to enable them, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
import uvicorn

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.fastapi import create_app

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)

ServeApp = Callable[..., AbstractAsyncContextManager[str]]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run *app* under uvicorn on a free loopback port; yield its root URL; shut it down."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before starting")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture(name="serve_app")
def _serve_app() -> Callable[[Any], AbstractAsyncContextManager[str]]:
    """:func:`serve_app`, for tests that build their own app."""
    return serve_app


@pytest.fixture(name="free_port")
def _free_port() -> Callable[[], int]:
    """:func:`free_port`."""
    return free_port


@pytest.fixture(name="emu")
async def _emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(now=NOW, opportunities=3_000)) as emu:
        yield emu


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture(name="serve")
def _serve(emu: Emulator) -> ServeApp:
    """Serve create_app() against *emu*, with client options, a cache TTL and app options."""

    @asynccontextmanager
    async def start(
        *,
        cache_ttl: float | None = None,
        base_url: str | None = None,
        app: dict[str, Any] | None = None,
        **client: Any,
    ) -> AsyncIterator[str]:
        def factory() -> cf.Client:
            return cf.Client(
                api_key=emu.api_key, base_url=base_url or emu.base_url, tz_offset=0, **client
            )

        made = create_app(client_factory=factory, cache_ttl=cache_ttl, **(app or {}))
        async with serve_app(made) as url:
            yield url

    return start


# -- Redis -----------------------------------------------------------------------------------

REDIS_HINT = "set REDIS_URL=redis://host:port/db or put redis-server on PATH"


def redis_unavailable(reason: str) -> NoReturn:
    """Skip a Redis test, or fail it under CI, where a skip would hide an untested cache."""
    message = f"the shared web cache tests need Redis: {reason}; {REDIS_HINT}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (a skip is a failure under CI=true)", pytrace=False)
    pytest.skip(message)


class RedisServer:
    """A private ``redis-server`` on a free loopback port (nothing saved), stoppable."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            redis_unavailable("redis-server is not on PATH")
        self._binary = binary
        self._directory = directory
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._start()

    def _start(self) -> None:
        command = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._directory)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    redis_unavailable(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)

    def restart(self) -> None:
        """Start a new, empty server on the same port, as Redis coming back after an outage."""
        self.stop()
        self._start()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture(name="redis_url", scope="session")
def _redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis to talk to: ``REDIS_URL``, else a server of this session's own."""
    pytest.importorskip("redis", reason="pip install 'closefunnel[redis]'")
    shared = os.environ.get("REDIS_URL")
    if shared:
        yield shared
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(name="private_redis")
def _private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop."""
    pytest.importorskip("redis", reason="pip install 'closefunnel[redis]'")
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="redis_prefix")
async def _redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key namespace of this test's own; its keys, and only those, are deleted after."""
    import redis.asyncio as aioredis

    prefix = f"closefunnel-test-{secrets.token_hex(6)}"
    yield prefix
    connection = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in connection.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await connection.delete(*keys)
    finally:
        await connection.aclose()
