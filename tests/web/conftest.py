"""Fixtures for the FastAPI tests: an emulator, and the app served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

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
