"""
Fixtures for the shared gate's tests: a real redis-server over a socket, never fakeredis.

``redis_url`` comes from ``tests/conftest.py`` (a database of the session's own on
``REDIS_URL``, else a redis-server of its own; a skip there is a failure under ``CI=true``).
Every test here also gets its own key prefix (``prefix``) and deletes only the keys under
it. ``dedicated_redis`` starts servers a test may stop and restart (outages).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig, LogEntry
from tests.redis_server import RedisServer

redis = pytest.importorskip(
    "redis", reason="the shared gate tests need redis-py (the [redis] extra)"
)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[Any]:
    """A synchronous client for looking at (and cleaning up) keys."""
    conn = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def keys_under(conn: Any, prefix: str) -> list[str]:
    """Every key under *prefix* (SCAN, never KEYS)."""
    return sorted(k.decode() for k in conn.scan_iter(match=f"{prefix}*", count=1000))


@pytest.fixture
def prefix(sync_redis: Any) -> Iterator[str]:
    """A key prefix of this test's own; its keys (and only they) are deleted afterwards."""
    value = f"cftest-{uuid.uuid4().hex}"
    try:
        yield value
    finally:
        for key in keys_under(sync_redis, value):
            sync_redis.delete(key)


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Make redis-servers of this test's own (for outages); all are stopped at the end."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        directory = tmp_path / f"redis{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


#: A fixed clock and seed for the emulator's demo dataset.
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
SEED = 11
TOTALS_PATH = "/api/v1/report/funnel/opportunity/totals/"


def emulator_config(**overrides: Any) -> EmulatorConfig:
    """A small seeded demo organization at NOW, with *overrides*."""
    options: dict[str, Any] = {"now": NOW, "seed": SEED, "opportunities": 2_000}
    options.update(overrides)
    return EmulatorConfig(**options)


def distinct_queries(emu: Emulator, n: int) -> list[cf.FunnelQuery]:
    """*n* report queries no two of which are equal (so no single-flight merges them)."""
    dataset = emu.dataset
    ranges = [r for r in cf.RELATIVE_RANGES if r != "all-time"]
    scopes: list[tuple[str, ...]] = [()] + [(user.id,) for user in dataset.users]
    combos = itertools.product(scopes, ranges, dataset.pipelines)
    queries = [
        cf.FunnelQuery(pipeline=pipeline.id, report_range=rng, users=users)
        for users, rng, pipeline in itertools.islice(combos, n)
    ]
    assert len(queries) == n, "the dataset is too small for that many distinct queries"
    return queries


def totals_log(emu: Emulator) -> list[LogEntry]:
    """The emulator's log of report requests."""
    return [entry for entry in emu.log if entry.path == TOTALS_PATH]


class RedisSwitch:
    """
    A loopback TCP proxy to Redis that can be cut off (Redis unreachable, data kept), or
    made to drop Redis's replies while still passing commands on (``drop_replies``: a
    script call that Redis ran but whose caller timed out).
    """

    def __init__(self, host: str, port: int, db: int = 0) -> None:
        self.host, self.port, self.db = host, port, db
        self.cut = False
        self.drop_replies = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        try:
            while (chunk := await reader.read(65536)) and not self.cut:
                if reply and self.drop_replies:
                    continue
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers |= {writer, up_writer}
        pumps = (
            self._pump(reader, up_writer, reply=False),
            self._pump(up_reader, writer, reply=True),
        )
        for pump in pumps:
            task = asyncio.ensure_future(pump)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in self.writers:
                writer.close()
            self.writers.clear()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/{self.db}"

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


def switch_to(conn: Any) -> RedisSwitch:
    """A :class:`RedisSwitch` to the server and database *conn* (a sync client) uses."""
    kwargs = conn.connection_pool.connection_kwargs
    return RedisSwitch(kwargs["host"], int(kwargs["port"]), int(kwargs.get("db", 0)))
