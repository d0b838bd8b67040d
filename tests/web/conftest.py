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
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.fastapi import create_app
from tests.redis_server import RedisServer, free_port

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)

ServeApp = Callable[..., AbstractAsyncContextManager[str]]


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


@pytest.fixture(name="private_redis")
def _private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop."""
    pytest.importorskip("redis", reason="pip install 'closefunnel[redis]'")
    server = RedisServer(tmp_path).start()
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
