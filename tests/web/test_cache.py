"""The TTL cache: expiry on an injected clock, single-flight, failures not cached."""

from __future__ import annotations

import asyncio

import pytest

from closefunnel._cache import TTLCache


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_values_are_served_until_the_ttl_passes() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(ttl=30, clock=clock)
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get("k", fetch) == 1
    clock.now += 29.9
    assert await cache.get("k", fetch) == 1
    clock.now += 0.1
    assert await cache.get("k", fetch) == 2
    assert await cache.get("other", fetch) == 3
    assert (cache.hits, cache.misses) == (1, 3)


async def test_concurrent_identical_requests_share_one_fetch() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl=30)
    started = 0
    release = asyncio.Event()

    async def fetch() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "value"

    waiters = [asyncio.create_task(cache.get("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 5
    assert started == 1


async def test_failures_are_shared_but_not_cached() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl=30)
    attempts = 0

    async def fetch() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("upstream down")
        return "ok"

    results = await asyncio.gather(
        cache.get("k", fetch), cache.get("k", fetch), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert attempts == 1
    assert await cache.get("k", fetch) == "ok"
    assert len(cache) == 1


async def test_cancelling_every_waiter_cancels_the_fetch() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl=30)
    cancelled = asyncio.Event()

    async def fetch() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    one = asyncio.create_task(cache.get("k", fetch))
    two = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0.01)
    one.cancel()
    await asyncio.sleep(0.01)
    assert not cancelled.is_set()  # *two* still wants it
    two.cancel()
    async with asyncio.timeout(2):
        await cancelled.wait()
    for task in (one, two):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_oldest_entries_are_dropped_beyond_max_entries() -> None:
    cache: TTLCache[int, int] = TTLCache(ttl=30, max_entries=2)

    async def value(n: int) -> int:
        return n

    for n in range(3):
        await cache.get(n, lambda n=n: value(n))  # type: ignore[misc]
    assert len(cache) == 2
    assert cache.misses == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        TTLCache(ttl=0)
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(ttl=1, max_entries=0)


async def test_a_caller_arriving_as_a_fetch_is_cancelled_gets_its_own() -> None:
    """Joining a fetch whose last waiter just left starts a fresh fetch, not a cancelled one."""
    cache: TTLCache[str, int] = TTLCache(ttl=30)

    async def fetch() -> int:
        await asyncio.sleep(0.2)
        return 1

    first = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0.05)
    first.cancel()
    second = asyncio.create_task(cache.get("k", fetch))
    assert await second == 1
