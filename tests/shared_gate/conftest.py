"""
Fixtures for the shared gate's tests: a real redis-server over a socket, never fakeredis.

``redis_url`` comes from ``tests/conftest.py`` (a database of the session's own on
``REDIS_URL``, else a redis-server of its own; a skip there is a failure under ``CI=true``).
Every test here also gets its own key prefix (``prefix``) and deletes only the keys under
it. ``dedicated_redis`` starts servers a test may stop and restart (outages).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig, LogEntry

redis = pytest.importorskip(
    "redis", reason="the shared gate tests need redis-py (the [redis] extra)"
)


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5) as conn:
                if conn.ping():
                    return
        except redis.RedisError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not answer within 10 s")


class RedisServer:
    """A redis-server of a test's own on a fixed port: stoppable and restartable."""

    def __init__(self, directory: Path, binary: str) -> None:
        self.port = free_port()
        self.dir = directory
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) the server and wait until it answers."""
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_until_up(self.port, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _binary_or_skip() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "no Redis for the shared gate tests: set REDIS_URL=redis://host:port/0 or put "
            "redis-server on PATH (Debian: apt-get install redis-server)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a skip here is a failure)")
        pytest.skip(message)
    return binary


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
    binary = _binary_or_skip()

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", binary)
        server.dir.mkdir()
        servers.append(server)
        server.start()
        return server

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
