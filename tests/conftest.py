"""Fixtures every test directory can use: a Redis server for the shared-gate tests.

A Redis test must run wherever the suite runs, and must never harm a Redis it was lent:

- ``REDIS_URL`` set (CI sets it; so can a developer): that server is shared, so the session
  claims one *empty* database on it (a claim key written with ``SET NX``, so two suites on one
  server never share a database) and at the end deletes the keys in that database only while
  its claim still stands. It never runs ``FLUSHDB``/``FLUSHALL``.
- otherwise, with ``redis-server`` on ``PATH``: the session starts its own server on a free
  port in a temporary directory (nothing saved to disk) and stops it at the end.
- otherwise the Redis tests skip with a message saying how to enable them; under ``CI=true``
  a missing Redis fails them instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.redis_server import RedisServer, unavailable

#: Written with ``SET NX`` into the database a session borrows on a shared server.
CLAIM_KEY = "closefunnel-tests:claim"
#: How long an abandoned claim (a killed session) keeps its database from other sessions.
CLAIM_SECONDS = 6 * 3600
#: Databases tried on a shared server; 0 is left to whoever else uses it.
DATABASES = range(1, 16)
#: How long a started ``redis-server`` may take to answer ``PING``.
START_SECONDS = 10.0
ENABLE_HINT = (
    "set REDIS_URL=redis://host:port (a server the tests may borrow an empty database on) "
    "or put redis-server on PATH"
)


def _with_db(url: str, db: int) -> str:
    """The URL with its database number (the path) replaced by ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _borrow(url: str) -> Iterator[str]:
    """Claim an empty database on a shared server; give back only what this session wrote."""
    import redis  # the `redis` extra, part of `test`

    token = secrets.token_hex(8)
    for db in DATABASES:
        conn = redis.Redis.from_url(_with_db(url, db))
        try:
            if conn.dbsize() == 0 and conn.set(CLAIM_KEY, token, nx=True, ex=CLAIM_SECONDS):
                break
        except redis.RedisError as exc:
            conn.close()
            unavailable(f"{urlsplit(url).hostname}:{urlsplit(url).port} did not answer ({exc})")
        conn.close()
    else:
        unavailable(f"no empty database among {DATABASES.start}-{DATABASES.stop - 1}")
    try:
        yield _with_db(url, db)
    finally:
        try:
            if conn.get(CLAIM_KEY) == token.encode():
                keys = [key for key in conn.scan_iter(count=1000) if key != CLAIM_KEY.encode()]
                if keys:
                    conn.delete(*keys)
                conn.delete(CLAIM_KEY)
        finally:
            conn.close()


@pytest.fixture(name="redis_url", scope="session")
def _redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL whose database this test session owns (see the module docstring)."""
    shared = os.environ.get("REDIS_URL")
    if shared:
        yield from _borrow(shared)
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_close_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cf.Client()`` reads CLOSE_API_KEY and CLOSE_BASE_URL: a developer's own (a real key,
    a real API root) must neither change what a test sees nor be used by one. Tests that
    want them set them with ``monkeypatch.setenv``."""
    monkeypatch.delenv("CLOSE_API_KEY", raising=False)
    monkeypatch.delenv("CLOSE_BASE_URL", raising=False)
