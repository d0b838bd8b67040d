"""
The web cache and single-flight shared through a real Redis: several apps (workers), each
with its own client, served by uvicorn on loopback or run as OS processes, against one
emulator whose log counts the upstream calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import closefunnel as cf
from closefunnel import _redis_cache as redis_cache
from closefunnel._cache import TTLCache
from closefunnel._redis_cache import SharedCache
from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.fastapi import create_app

redis_asyncio = pytest.importorskip("redis.asyncio", reason="pip install 'closefunnel[redis]'")

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
TOTALS = "/api/v1/report/funnel/opportunity/totals/"
#: One base report and one compared report: two distinct upstream reports.
PARAMS = [("range", "this-month"), ("compare", "last-month")]
WORKER = Path(__file__).with_name("shared_worker.py")


def _totals_posts(emu: Emulator) -> int:
    return sum(1 for entry in emu.log if entry.path == TOTALS)


@pytest.fixture(name="slow_emu")
async def _slow_emu() -> AsyncIterator[Emulator]:
    """An emulator slow enough (0.3 s a response) that concurrent requests overlap."""
    async with Emulator(EmulatorConfig(now=NOW, opportunities=1_000, latency=0.3)) as emu:
        yield emu


#: conftest.py's ``serve_app``: serve an ASGI app under uvicorn on loopback, yield its URL.
ServeApp = Callable[[Any], AbstractAsyncContextManager[str]]


@asynccontextmanager
async def _apps(
    serve_app: ServeApp, emu: Emulator, count: int, *, redis: str | None, prefix: str
) -> AsyncIterator[list[str]]:
    """*count* apps, each with its own client (as N workers have), served on loopback."""

    def factory() -> cf.Client:
        return cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0)

    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(count):
            app = create_app(client_factory=factory, cache_ttl=30, redis=redis, redis_prefix=prefix)
            urls.append(await stack.enter_async_context(serve_app(app)))
        yield urls


async def _ask_all(http: aiohttp.ClientSession, urls: list[str], path: str) -> list[bytes]:
    async def one(url: str) -> bytes:
        async with http.get(f"{url}{path}", params=PARAMS) as response:
            assert response.status == 200, await response.text()
            return await response.read()

    return await asyncio.gather(*(one(url) for url in urls for _ in range(3)))


@pytest.mark.parametrize(("shared", "expected"), [(True, 2), (False, 4)])
async def test_two_workers_asked_at_once_make_one_upstream_call_per_report(
    slow_emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: ServeApp,
    redis_url: str,
    redis_prefix: str,
    shared: bool,
    expected: int,
) -> None:
    """With Redis, two apps asked the same thing at once (three callers each) send each
    of the two reports once; a second round within the TTL sends nothing. Without Redis
    each app fetches its own (the count this test would see if sharing broke)."""
    pipeline = slow_emu.dataset.pipelines[0].id
    async with _apps(
        serve_app, slow_emu, 2, redis=redis_url if shared else None, prefix=redis_prefix
    ) as urls:
        bodies = await _ask_all(http, urls, f"/funnel/{pipeline}")
        assert len(set(bodies)) == 1  # every worker answers with the same bytes
        assert _totals_posts(slow_emu) == expected
        again = await _ask_all(http, urls, f"/funnel/{pipeline}")
        assert set(again) == set(bodies)
        assert _totals_posts(slow_emu) == expected  # the second round came from the cache


async def test_shared_keys_carry_the_key_id_and_never_the_secret(
    slow_emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: ServeApp,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Every key the cache writes is under the prefix, names the key id, holds no secret."""
    async with _apps(serve_app, slow_emu, 1, redis=redis_url, prefix=redis_prefix) as urls:
        await _ask_all(http, urls, f"/funnel/{slow_emu.dataset.pipelines[0].id}")
        async with http.get(f"{urls[0]}/pipelines") as response:
            assert response.status == 200
    connection = redis_asyncio.Redis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in connection.scan_iter(match=f"{redis_prefix}:*")]
    finally:
        await connection.aclose()
    assert len(keys) == 2  # the funnel answer and the pipelines; no lock left behind
    key_id = cf.Client(api_key=slow_emu.api_key)._credentials.key_id
    secret = slow_emu.api_key.split(".", 1)[-1]
    for key in keys:
        assert key.endswith(":value")
        assert key_id in key
        assert slow_emu.api_key not in key
        assert secret not in key


@pytest.mark.slow
async def test_three_worker_processes_make_one_upstream_call(
    slow_emu: Emulator,
    http: aiohttp.ClientSession,
    free_port: Callable[[], int],
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Three uvicorn worker processes sharing Redis, asked the same request at once: each
    of its two reports is fetched once between them."""
    ports = [free_port() for _ in range(3)]
    env = os.environ | {
        "CLOSE_API_KEY": slow_emu.api_key,
        "CLOSE_BASE_URL": slow_emu.base_url,
        "CLOSEFUNNEL_REDIS_URL": redis_url,
        "CLOSEFUNNEL_REDIS_PREFIX": redis_prefix,
    }
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), str(port), env=env, stdin=subprocess.DEVNULL
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, worker in zip(urls, workers, strict=True):
            await _until_up(http, url, worker)
        pipeline = slow_emu.dataset.pipelines[0].id
        bodies = await _ask_all(http, urls, f"/funnel/{pipeline}")
        assert len(set(bodies)) == 1
        assert _totals_posts(slow_emu) == 2
        await _ask_all(http, urls, f"/funnel/{pipeline}")
        assert _totals_posts(slow_emu) == 2
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.terminate()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.wait(), 10)
            except TimeoutError:
                worker.kill()
                await worker.wait()


async def _until_up(
    http: aiohttp.ClientSession, url: str, worker: asyncio.subprocess.Process
) -> None:
    async with asyncio.timeout(60):
        while True:
            assert worker.returncode is None, "the worker process exited"
            try:
                async with http.get(f"{url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_redis_stopped_still_answers_from_the_local_cache_with_one_warning(
    slow_emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: ServeApp,
    private_redis: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis gone mid-run: every request still answers (through the in-process cache,
    which serves a repeat), and the outage is one WARNING, however many requests see it."""
    # Try Redis again on every request (not every 2 s), so each one meets the outage.
    monkeypatch.setattr(redis_cache, "_RECHECK", 0.0)
    caplog.set_level(logging.WARNING, logger="closefunnel")
    pipelines = [p.id for p in slow_emu.dataset.pipelines]
    async with _apps(serve_app, slow_emu, 1, redis=private_redis.url, prefix="cf-stop") as (url,):
        await _ask_all(http, [url], f"/funnel/{pipelines[0]}")
        assert _totals_posts(slow_emu) == 2
        assert not caplog.records
        private_redis.stop()
        for pipeline in pipelines[1:3]:
            await _ask_all(http, [url], f"/funnel/{pipeline}")
        assert _totals_posts(slow_emu) == 6  # each new request fetched once, nothing lost
        await _ask_all(http, [url], f"/funnel/{pipelines[1]}")
        assert _totals_posts(slow_emu) == 6  # a repeat: from the in-process cache
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis is unreachable" in warnings[0].getMessage()


@pytest.mark.slow
async def test_redis_back_after_an_outage_is_shared_again(
    slow_emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: ServeApp,
    private_redis: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once Redis answers again the workers share it again: what one stores, the other
    serves without asking Close."""
    monkeypatch.setattr(redis_cache, "_RECHECK", 0.0)
    pipelines = [p.id for p in slow_emu.dataset.pipelines]
    async with _apps(serve_app, slow_emu, 2, redis=private_redis.url, prefix="cf-back") as urls:
        private_redis.stop()
        await _ask_all(http, urls[:1], f"/funnel/{pipelines[0]}")  # the outage begins
        private_redis.restart()
        await _ask_all(http, urls[:1], f"/funnel/{pipelines[1]}")
        before = _totals_posts(slow_emu)
        await _ask_all(http, urls[1:], f"/funnel/{pipelines[1]}")
        assert _totals_posts(slow_emu) == before  # served from Redis, stored by the other
    connection = redis_asyncio.Redis.from_url(private_redis.url)
    try:
        assert len([key async for key in connection.scan_iter(match="cf-back:*")]) == 1
    finally:
        await connection.aclose()


# -- the protocol, between two caches as two processes would hold them ----------------------


@asynccontextmanager
async def _caches(
    redis_url: str, prefix: str, count: int = 2, **options: Any
) -> AsyncIterator[list[SharedCache]]:
    """*count* caches, each with its own Redis connection (as separate processes have)."""
    caches = [
        SharedCache(
            redis=redis_asyncio.Redis.from_url(redis_url),
            ttl=30,
            local=TTLCache(ttl=30),
            prefix=prefix,
            owns_redis=True,
            **options,
        )
        for _ in range(count)
    ]
    try:
        yield caches
    finally:
        for cache in caches:
            await cache.aclose()


def _codec() -> dict[str, Callable[..., Any]]:
    return {"encode": lambda text: text.encode(), "decode": lambda data: data.decode()}


async def _raw(redis_url: str) -> Any:
    return redis_asyncio.Redis.from_url(redis_url)


async def _other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks still running besides the test's own (after letting finished ones end)."""
    for _ in range(5):
        await asyncio.sleep(0)
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_in_process_callers_share_one_flight_so_redis_is_asked_once(
    redis_url: str, redis_prefix: str
) -> None:
    async with _caches(redis_url, redis_prefix, count=1) as (cache,):
        calls = 0

        async def fetch() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return "value"

        results = await asyncio.gather(*(cache.get("k", b"q", fetch, **_codec()) for _ in range(5)))
        assert results == ["value"] * 5
        assert calls == 1
        assert cache.round_trips == 2  # one claim, one store, for all five callers


async def test_a_dead_winners_lock_expires_and_a_waiter_fetches_itself(
    redis_url: str, redis_prefix: str
) -> None:
    """A lock left by a process that died (no one renews it): the waiter waits while it
    stands, and once it expires takes over and fetches itself."""
    raw = await _raw(redis_url)
    async with _caches(redis_url, redis_prefix, count=1, lock_ttl=1.0) as (cache,):
        value_key, lock_key = cache.keys("k", b"q")
        await raw.set(lock_key, "dead-process", px=60_000)
        seen: list[Any] = []

        async def fetch() -> str:
            seen.append((await raw.get(lock_key), await raw.pttl(lock_key)))
            return "fresh"

        waiter = asyncio.ensure_future(cache.get("k", b"q", fetch, **_codec()))
        await asyncio.sleep(0.5)  # the waiter polls meanwhile
        assert not waiter.done()
        assert seen == []
        await raw.pexpire(lock_key, 20)  # the dead holder's lease runs out
        assert await asyncio.wait_for(waiter, 10) == "fresh"
        assert len(seen) == 1
        holder, lease_ms = seen[0]
        assert holder not in (None, b"dead-process")  # the waiter's own lock now
        assert 0 < lease_ms <= 1_000  # which expires too, should this process die
        assert await raw.get(value_key) == b"fresh"
        assert await raw.get(lock_key) is None
    await raw.aclose()


@pytest.mark.slow
async def test_a_live_winner_slower_than_the_lock_ttl_keeps_its_lock(
    redis_url: str, redis_prefix: str
) -> None:
    """The winner renews its lock while it fetches, so a waiter never doubles the call."""
    async with _caches(redis_url, redis_prefix, lock_ttl=0.3) as (first, second):
        calls: list[str] = []

        def fetcher(name: str) -> Callable[[], Any]:
            async def fetch() -> str:
                calls.append(name)
                await asyncio.sleep(1.0)  # more than three lock lifetimes
                return name

            return fetch

        winner = asyncio.ensure_future(first.get("k", b"q", fetcher("first"), **_codec()))
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(second.get("k", b"q", fetcher("second"), **_codec()))
        assert list(await asyncio.gather(winner, waiter)) == ["first", "first"]
        assert calls == ["first"]
        assert (second.fetches, second.hits) == (0, 1)


async def test_an_upstream_error_is_not_cached_and_the_next_waiter_fetches(
    redis_url: str, redis_prefix: str
) -> None:
    """The winner fails: it gets its error, stores nothing and frees the lock at once, so
    the waiter fetches itself; the value it stores is then everyone's."""
    raw = await _raw(redis_url)
    async with _caches(redis_url, redis_prefix) as (first, second):
        value_key, lock_key = first.keys("k", b"q")
        release = asyncio.Event()

        async def failing() -> str:
            await release.wait()
            raise cf.ServerError("upstream 502", status=502)

        async def working() -> str:
            return "value"

        winner = asyncio.ensure_future(first.get("k", b"q", failing, **_codec()))
        await asyncio.sleep(0.05)
        assert await raw.get(lock_key) is not None
        waiter = asyncio.ensure_future(second.get("k", b"q", working, **_codec()))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        release.set()
        with pytest.raises(cf.ServerError):
            await winner
        # At once: not after the 10 s the failed winner's lock would otherwise stand.
        assert await asyncio.wait_for(waiter, 5) == "value"
        assert (first.fetches, second.fetches) == (1, 1)
        assert await raw.get(value_key) == b"value"
        assert await first.get("k", b"q", failing, **_codec()) == "value"  # stored, shared
    await raw.aclose()


async def test_a_cancelled_winner_frees_its_lock_and_leaves_no_task(
    redis_url: str, redis_prefix: str
) -> None:
    raw = await _raw(redis_url)
    async with _caches(redis_url, redis_prefix, count=1, lock_ttl=30) as (cache,):
        _, lock_key = cache.keys("k", b"q")
        started = asyncio.Event()

        async def hanging() -> str:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        caller = asyncio.ensure_future(cache.get("k", b"q", hanging, **_codec()))
        await started.wait()
        assert await raw.get(lock_key) is not None
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        async with asyncio.timeout(10):
            while True:  # released at once, not left to its 30 s expiry
                if await raw.get(lock_key) is None:
                    break
                await asyncio.sleep(0.01)
        assert await _other_tasks() == set()
    await raw.aclose()


async def test_a_cancelled_waiter_leaves_the_lock_alone_and_no_task(
    redis_url: str, redis_prefix: str
) -> None:
    raw = await _raw(redis_url)
    async with _caches(redis_url, redis_prefix, count=1) as (cache,):
        _, lock_key = cache.keys("k", b"q")
        await raw.set(lock_key, "another-process", px=60_000)

        async def fetch() -> str:
            raise AssertionError("a waiter must not fetch while the lock stands")

        waiter = asyncio.ensure_future(cache.get("k", b"q", fetch, **_codec()))
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await raw.get(lock_key) == b"another-process"
        assert await _other_tasks() == set()
    await raw.aclose()


async def test_a_waiter_past_max_wait_fetches_itself_and_leaves_the_lock_alone(
    redis_url: str, redis_prefix: str
) -> None:
    """A lock that a live process keeps renewing but never ends: the waiter stops waiting
    after max_wait, fetches for itself, stores the answer, and leaves that lock alone."""
    raw = await _raw(redis_url)
    async with _caches(redis_url, redis_prefix, count=1, max_wait=0.3) as (cache,):
        value_key, lock_key = cache.keys("k", b"q")
        await raw.set(lock_key, "stuck-process", px=60_000)

        async def fetch() -> str:
            return "own"

        assert await asyncio.wait_for(cache.get("k", b"q", fetch, **_codec()), 10) == "own"
        assert cache.fetches == 1
        assert await raw.get(value_key) == b"own"
        assert await raw.get(lock_key) == b"stuck-process"
    await raw.aclose()


def test_bad_redis_options_are_refused_before_anything_runs() -> None:
    with pytest.raises(cf.InvalidQueryError, match="redis must be"):
        create_app(cache_ttl=30, redis=42)  # type: ignore[arg-type]
    with pytest.raises(cf.InvalidQueryError, match="redis_prefix"):
        create_app(cache_ttl=30, redis="redis://127.0.0.1:1/0", redis_prefix="{x}")
