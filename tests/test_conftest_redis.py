"""The ``redis_url`` fixture: a database of the session's own, and nothing else touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from tests.conftest import CLAIM_KEY, _borrow, _with_db
from tests.redis_server import RedisServer, unavailable

needs_binary = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)


def test_redis_url_answers(redis_url: str) -> None:
    """The session's URL reaches a server, and its database takes writes."""
    conn = redis.Redis.from_url(redis_url)
    try:
        assert conn.ping()
        conn.set("closefunnel-tests:fixture-check", "1")
        assert conn.get("closefunnel-tests:fixture-check") == b"1"
    finally:
        conn.delete("closefunnel-tests:fixture-check")
        conn.close()


@needs_binary
def test_borrowing_takes_an_empty_database_and_gives_back_only_its_own(tmp_path: Path) -> None:
    """On a shared server: other databases keep their keys; the borrowed one ends empty."""
    server = RedisServer(tmp_path).start()
    base = server.url
    try:
        others = {db: redis.Redis.from_url(_with_db(base, db)) for db in (0, 1)}
        others[0].set("someone-else", "0")  # db 0 is never tried
        others[1].set("someone-else", "1")  # db 1 is in use: not empty, so skipped
        first, second = _borrow(base), _borrow(base)
        first_url, second_url = next(first), next(second)
        assert (first_url, second_url) == (_with_db(base, 2), _with_db(base, 3))
        mine = redis.Redis.from_url(first_url)
        mine.set("gate:budget", "5")
        with pytest.raises(StopIteration):
            next(first)
        assert mine.dbsize() == 0  # its own key and its claim are gone
        assert mine.set(CLAIM_KEY, "x", nx=True)  # and the database is free again
        mine.delete(CLAIM_KEY)
        assert redis.Redis.from_url(second_url).get(CLAIM_KEY) is not None  # not its claim
        assert others[0].get("someone-else") == b"0"
        assert others[1].get("someone-else") == b"1"
        for conn in (mine, *others.values()):
            conn.close()
        second.close()
    finally:
        server.stop()


@needs_binary
def test_a_claim_taken_over_is_left_alone(tmp_path: Path) -> None:
    """If another session holds the claim at the end, nothing is deleted."""
    server = RedisServer(tmp_path).start()
    base = server.url
    try:
        borrowed = _borrow(base)
        url = next(borrowed)
        conn = redis.Redis.from_url(url)
        conn.set(CLAIM_KEY, "another-session")
        conn.set("their-key", "1")
        borrowed.close()
        assert conn.get("their-key") == b"1"
        conn.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_no_redis_skips_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    """A missing server skips with a hint, except under CI=true, where it fails."""
    monkeypatch.setenv("CI", ci)
    either = (pytest.fail.Exception, pytest.skip.Exception)
    with pytest.raises(either, match="REDIS_URL") as info:
        unavailable("nothing here")
    assert info.type is outcome  # checked after the fact, so a wrong skip cannot end the test
